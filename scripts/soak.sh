#!/usr/bin/env bash
# Soak benchmark (not part of scripts/test.sh): 10 minutes of mixed load on PostgreSQL,
# Redis and HTTP with the Prometheus recorder installed; a private PostgreSQL cluster,
# redis-server and HTTP server, each restarted every 2 minutes; RSS and open file
# descriptors sampled every 10 s. Writes docs/soak/samples.csv and docs/soak/rss_fds.svg
# (charted in docs/reliability.md) and prints one "SOAK ..." summary line; fails when a
# connection is left open after the pools close (pg_stat_activity, CLIENT LIST, the HTTP
# server's open count).
#
# Env: SOAK_SECS (default 600), SOAK_RESTART_EVERY (default 120), SOAK_OUT (default
#      docs/soak), CARGO_TARGET_DIR. Needs the servers' binaries (scripts/services.sh).
# The load is light on purpose (16 tasks, a 4 ms pause between operations): the point is
# whether memory and descriptors stay flat, not throughput. It uses the dev profile, the
# same build as the tests.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ -f "$HOME/.cargo/env" ]; then
    # shellcheck source=/dev/null
    . "$HOME/.cargo/env"
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/poolkit-target}"
export SOAK_SECS="${SOAK_SECS:-600}"
export SOAK_OUT="${SOAK_OUT:-$PWD/docs/soak}"
cargo test --features full --test soak -- --ignored --nocapture 2>&1 |
    grep -E '^(SOAK|soak:)|panicked|test result'
