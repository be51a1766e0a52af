#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a fixed budget and prints one line per target:
# runs, seconds, crashes. Needs the nightly toolchain and cargo-fuzz (installed here when
# missing). Not part of scripts/test.sh: fuzzing is open-ended; CI runs the regression
# tests that findings became (tests/bad_input.rs and the crates' unit tests).
#
# Env: FUZZ_SECS   seconds per target (default 60)
#      FUZZ_JOBS   parallel fuzzing processes per target (default 1: the machine is shared)
#      CARGO_TARGET_DIR  build directory (the fuzz build goes to $CARGO_TARGET_DIR/fuzz)
# Exit status: non-zero when any target found a crash (the input is in
# fuzz/artifacts/<target>/; turn it into a regression test, then delete it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ -f "$HOME/.cargo/env" ]; then
    # shellcheck source=/dev/null
    . "$HOME/.cargo/env"
fi
secs=${FUZZ_SECS:-60}
jobs=${FUZZ_JOBS:-1}
target_dir="${CARGO_TARGET_DIR:-$HOME/.cache/poolkit-target}/fuzz"

if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

cd fuzz
failed=0
for t in $(cargo +nightly fuzz list); do
    mkdir -p "corpus/$t" "seeds/$t" "artifacts/$t"
    before=$(find "artifacts/$t" -type f | wc -l)
    log=$(mktemp)
    # No sanitizer: the crates forbid unsafe code, so libFuzzer's own checks (panics,
    # timeouts, memory limit) are what matters, and the build stays small.
    if ! cargo +nightly fuzz run "$t" --sanitizer none --target-dir "$target_dir" \
        "corpus/$t" "seeds/$t" -- -max_total_time="$secs" -jobs="$jobs" -workers="$jobs" \
        -rss_limit_mb=2048 -timeout=10 >"$log" 2>&1; then
        failed=1
    fi
    after=$(find "artifacts/$t" -type f | wc -l)
    runs=$(grep -ho 'Done [0-9]* runs in [0-9]* second' "$log" fuzz-*.log 2>/dev/null | tail -1 || true)
    echo "fuzz: $t: ${runs:-no summary (see $log)}; crashes: $((after - before)); corpus $(find "corpus/$t" -type f | wc -l) inputs"
    if [ "$after" != "$before" ]; then
        failed=1
        grep -A20 -m1 'panicked\|ERROR: libFuzzer' "$log" || true
    fi
    rm -f fuzz-*.log
done
exit "$failed"
