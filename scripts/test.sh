#!/usr/bin/env bash
# Every check CI runs: servers up (scripts/services.sh), then fmt, clippy, all tests
# against the real servers, docs, and each crate alone with no default features.
# Ends with one line: "test.sh: N passed, M failed".
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
# One target directory reused across runs (CI clones afresh each time; two cores compile slowly).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/poolkit-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
export PGBOUNCER_URL="${PGBOUNCER_URL:-postgres://poolkit:poolkit_test@127.0.0.1:6432/test}"

log_dir="${CARGO_TARGET_DIR}/test-logs"
mkdir -p "$log_dir"
step_start=0
step() { step_start=$SECONDS; printf '\n=== %s\n' "$*"; }
done_step() { printf '=== done in %ss\n' "$((SECONDS - step_start))"; }

# Cargo output is kept so it can be checked for manifest mistakes (an unknown key is only a
# warning to cargo, and would silently build a dependency with the wrong features).
run_cargo() { # log-name, cargo args...
    local name=$1; shift
    set +e
    cargo "$@" 2>&1 | tee "$log_dir/$name.log"
    local rc=${PIPESTATUS[0]}
    set -e
    if grep -q 'unused manifest key' "$log_dir/$name.log"; then
        echo "test.sh: cargo reported an unused manifest key (a typo in a Cargo.toml):" >&2
        grep 'unused manifest key' "$log_dir/$name.log" >&2
        return 1
    fi
    return "$rc"
}

for tool in "cargo fmt" "cargo clippy"; do
    $tool --version >/dev/null 2>&1 || { echo "test.sh: '$tool' is missing (rustup component add ${tool#cargo })" >&2; exit 1; }
done

step "services"
scripts/services.sh
done_step

step "cargo fmt --check"
cargo fmt --all --check
done_step

step "cargo clippy (all targets, all features, -D warnings)"
run_cargo clippy clippy --workspace --all-targets --all-features --locked -- -D warnings
done_step

step "cargo test (all features, real servers)"
test_rc=0
run_cargo test test --workspace --all-features --locked -- --color never || test_rc=$?
done_step

step "cargo doc (warnings are errors)"
RUSTDOCFLAGS=-Dwarnings run_cargo doc doc --workspace --no-deps --all-features --locked
done_step

step "each crate with no default features"
members=$(cargo metadata --no-deps --format-version 1 --locked |
    python3 -c 'import json,sys; print("\n".join(p["name"] for p in json.load(sys.stdin)["packages"]))')
for crate in $members; do
    echo "--- $crate"
    run_cargo "check-$crate" check -p "$crate" --no-default-features --locked --quiet
done
done_step

count() { grep -h '^test result:' "$log_dir/test.log" | sed -E "s/.* ([0-9]+) $1.*/\\1/" | awk '{ s += $1 } END { print s + 0 }'; }
passed=$(count passed)
failed=$(count failed)
echo
echo "test.sh: ${passed:-0} passed, ${failed:-0} failed"
if [ "$test_rc" != 0 ] || [ "${failed:-0}" != 0 ] || [ "${passed:-0}" = 0 ]; then
    exit 1
fi
