#!/usr/bin/env bash
# The demo: 1000 concurrent tasks through a 20-connection pool against the local
# PostgreSQL, with live progress, then the same work with a connection per operation.
# Env: DATABASE_URL (default: the local database services.sh starts), MAX_POOL_SIZE,
# DEMO_CONCURRENCY (1000), DEMO_SECONDS (10). Extra arguments go to the example.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ -f "$HOME/.cargo/env" ]; then
    # shellcheck source=/dev/null
    . "$HOME/.cargo/env"
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/poolkit-target}"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test?sslmode=disable}"
scripts/services.sh
exec cargo run --release --quiet --example postgres_demo --features postgres -- "$@"
