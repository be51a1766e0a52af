#!/usr/bin/env bash
# Every check CI runs, in this order: servers up (scripts/services.sh), fmt, clippy, all
# tests against the real servers, docs, and each workspace member alone with no default
# features. Every step prints a header and its duration; a failing step does not stop the
# later ones (so one run shows everything that is wrong), but the script exits non-zero.
# Ends with one line: "test.sh: N passed, M failed, I ignored; B of E test binaries and D
# doctest runs finished" (summed over cargo test's "test result:" lines; E is what
# `cargo test --no-run` built, so a binary that crashed or never started shows).
#
# Env: CARGO_TARGET_DIR (default ~/.cache/poolkit-target, kept across CI runs),
#      DATABASE_URL, REDIS_URL, PGBOUNCER_URL (default: the servers services.sh starts),
#      POOLKIT_TEST_TIMEOUT (seconds for the cargo test step, default 3600).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ -f "$HOME/.cargo/env" ]; then
    # shellcheck source=/dev/null
    . "$HOME/.cargo/env"
fi
# rustup cannot download components here: say so plainly instead of failing mid-run.
for tool in fmt clippy; do
    if ! cargo "$tool" --version >/dev/null 2>&1; then
        echo "test.sh: 'cargo $tool' does not work; install the $([ "$tool" = fmt ] && echo rustfmt || echo clippy) component of the toolchain" >&2
        exit 1
    fi
done

failed_steps=()
step_name=""
step_start=0
step() { step_name=$1; step_start=$SECONDS; printf '\n=== %s\n' "$step_name"; }
end_step() { # exit code of the step
    local rc=$1 took=$((SECONDS - step_start))
    if [ "$rc" = 0 ]; then
        printf '=== ok: %s (%ss)\n' "$step_name" "$took"
    else
        printf '=== FAILED: %s (exit %s, %ss)\n' "$step_name" "$rc" "$took"
        failed_steps+=("$step_name")
    fi
}

step "services (PostgreSQL, Redis, PgBouncer, services.d)"
rc=0; scripts/services.sh || rc=$?
end_step "$rc"
if [ "$rc" != 0 ]; then
    echo "test.sh: the servers the tests need are not up; stopping here" >&2
    echo "test.sh: 0 passed, 0 failed"
    exit 1
fi

# One target directory reused across runs (CI clones afresh each time; two cores compile slowly).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/poolkit-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
export PGBOUNCER_URL="${PGBOUNCER_URL:-postgres://poolkit:poolkit_test@127.0.0.1:6432/test}"
log_dir="$CARGO_TARGET_DIR/test-logs"
mkdir -p "$log_dir"
rm -f "$log_dir"/*.log

# Runs cargo with its output shown and kept in $log_dir/<name>.log. An unknown key in a
# Cargo.toml is only a warning to cargo (and can silently build a dependency with the
# wrong features), so it fails the step here.
run_logged() { # log-name, command...
    local name=$1 rc=0
    shift
    "$@" 2>&1 | tee "$log_dir/$name.log" || rc=${PIPESTATUS[0]}
    if grep -q 'unused manifest key' "$log_dir/$name.log"; then
        echo "test.sh: cargo reported an unused manifest key (a typo in a Cargo.toml):" >&2
        grep 'unused manifest key' "$log_dir/$name.log" >&2
        [ "$rc" != 0 ] || rc=1
    fi
    return "$rc"
}
run_cargo() { local name=$1; shift; run_logged "$name" cargo "$@"; }

step "cargo fmt --all --check"
rc=0; cargo fmt --all --check || rc=$?
end_step "$rc"

step "cargo clippy --workspace --all-targets --all-features --locked -- -D warnings"
rc=0; run_cargo clippy clippy --workspace --all-targets --all-features --locked -- -D warnings || rc=$?
end_step "$rc"

# Tests end by themselves; the timeout only turns a hang into a clear failure well inside
# CI's 90 minutes (it covers compiling the tests too). --no-fail-fast: one failing test
# binary must not hide the ones after it; the summary counts the binaries that ran.
step "cargo test --workspace --all-features --locked --no-fail-fast (real servers)"
rc=0
expected_binaries=$(cargo test --workspace --all-features --locked --no-run 2>&1 | tee "$log_dir/test-build.log" |
    grep -c '^ *Executable ') || rc=$?
if [ "$rc" = 0 ]; then
    run_logged test timeout --kill-after=30 "${POOLKIT_TEST_TIMEOUT:-3600}" \
        cargo test --workspace --all-features --locked --no-fail-fast || rc=$?
    [ "$rc" != 124 ] || echo "test.sh: cargo test did not finish within ${POOLKIT_TEST_TIMEOUT:-3600}s" >&2
else
    cat "$log_dir/test-build.log" >&2
    echo "test.sh: the tests did not build" >&2
fi
end_step "$rc"

# The axum example against the real servers: it serves on a free port, sends its own
# requests (PostgreSQL, Redis, the Supabase pool, the monitor under a token) and exits 0
# only when every answer is as expected.
step "examples/axum_service.rs --check (real servers)"
rc=0; run_cargo example-axum run --example axum_service --features full --locked -- --check || rc=$?
end_step "$rc"

step "loom model checks of the engine and the gate (scripts/loom.sh)"
rc=0; run_logged loom scripts/loom.sh || rc=$?
end_step "$rc"

step "cargo doc --workspace --no-deps --all-features (RUSTDOCFLAGS=-Dwarnings)"
rc=0; RUSTDOCFLAGS=-Dwarnings run_cargo doc doc --workspace --no-deps --all-features --locked || rc=$?
end_step "$rc"

step "cargo check -p <member> --no-default-features, for each workspace member"
rc=0
list_names() { # package names from `cargo metadata` JSON on stdin
    if command -v python3 >/dev/null; then
        python3 -c 'import json, sys; print("\n".join(p["name"] for p in json.load(sys.stdin)["packages"]))'
    else
        jq -r '.packages[].name'
    fi
}
members=$(cargo metadata --no-deps --format-version 1 --locked | list_names) || rc=$?
[ -n "$members" ] || { echo "test.sh: cargo metadata listed no workspace members" >&2; rc=1; }
for crate in $members; do
    echo "--- $crate"
    run_cargo "check-$crate" check -p "$crate" --no-default-features --locked --quiet || rc=$?
done
end_step "$rc"

# "test result: ok. 12 passed; 0 failed; 0 ignored; ..." — one line per test binary and doctest run.
sum() { # passed|failed|ignored
    { grep -h '^test result:' "$log_dir/test.log" "$log_dir/loom.log" 2>/dev/null || true; } |
        sed -E "s/.* ([0-9]+) $1.*/\\1/" | awk '{ s += $1 } END { print s + 0 }'
}
count() { # pattern, file: matching lines
    { grep -c "$1" "$2" 2>/dev/null || true; } | head -1
}
passed=$(sum passed)
failed=$(sum failed)
ignored=$(sum ignored)
# Each test binary prints "Running <path>" when it starts and "test result:" when it ends; one
# that crashed or was killed has no result line. Doctests print "Doc-tests <crate>".
started=$(count '^ *Running ' "$log_dir/test.log")
doctests=$(count '^ *Doc-tests ' "$log_dir/test.log")
results=$(count '^test result:' "$log_dir/test.log")
ended=$((results - doctests))
expected=${expected_binaries:-0}
if [ "$passed" = 0 ]; then
    echo "test.sh: cargo test ran no test" >&2
    failed_steps+=("no tests ran")
fi
if [ "$ended" -lt "$expected" ]; then
    echo "test.sh: only $ended of $expected test binaries ran to the end ($started started)" >&2
    failed_steps+=("$((expected - ended)) test binaries did not finish")
fi
echo
if [ "${#failed_steps[@]}" -gt 0 ]; then
    printf 'test.sh: failed steps: %s\n' "$(IFS=';'; echo "${failed_steps[*]}")" >&2
fi
echo "test.sh: $passed passed, $failed failed, $ignored ignored; $ended of $expected test binaries and $doctests doctest runs finished (loom models included)"
[ "${#failed_steps[@]}" = 0 ] && [ "$failed" = 0 ]
