#!/usr/bin/env bash
# Model-checks the hand-off (waiter queue, Gate, engine state) with loom: every
# interleaving of a get cancelled while a connection is handed to it, a return racing a
# timeout, a resize racing returns, and the gate's equivalents. Builds poolkit-core alone
# with `--cfg poolkit_loom` in its own target directory (the cfg changes every artifact).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${POOLKIT_LOOM_TARGET_DIR:-$HOME/.cache/poolkit-loom-target}"
export RUSTFLAGS="--cfg poolkit_loom"

exec cargo test -p poolkit-core --lib --release --locked loom
