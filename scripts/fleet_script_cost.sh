#!/usr/bin/env bash
# What one fleet lease renewal costs Redis, by fleet size: a private redis-server, N members
# recorded with the real script (crates/poolkit-postgres/src/fleet_store.rs), then
#   steady:    renewals that change nothing (the fleet's usual state),
#   recompute: renewals that join a new member with the recompute interval at 0, so every
#              one recomputes the fair shares (the most a rolling update can cost; with the
#              default interval one recomputation serves every renewal of 100 ms).
# Prints Redis's own time per call (INFO commandstats) for each.
# Usage: scripts/fleet_script_cost.sh [N ...]   (default: 100 1000 10000)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
port=${FLEET_COST_PORT:-56390}
dir=$(mktemp -d)
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" >/dev/null &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$dir"' EXIT
until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.05; done
lua=$(sed -n '/^pub(crate) const LEASE: &str = r"$/,/^";$/p' crates/poolkit-postgres/src/fleet_store.rs | sed '1d;$d')
sha=$(redis-cli -p "$port" script load "$lua")
cli() { redis-cli -p "$port" "$@"; }
per_call() { cli info commandstats | sed -n 's/^cmdstat_evalsha:.*usec_per_call=\([0-9.]*\).*/\1/p'; }
echo "| instances | steady renewal, µs | renewal with a recompute, µs |"
echo "|---:|---:|---:|"
for n in "${@:-100 1000 10000}"; do
    for n1 in $n; do
        k="{cost:$n1}"
        keys=("$k:alive" "$k:held" "$k:wants" "$k:shares" "$k:meta" "$k:floors" "$k:since")
        # ARGV: id want open cap member lease_ms hold_ms budget floor gap_ms seen wait_ms
        for ((i = 0; i < n1; i++)); do
            echo "EVALSHA $sha 7 ${keys[*]} m$i 8 0 0 0 600000 6000000 $((3 * n1)) 1 0 0 0"
        done | cli --pipe >/dev/null
        cli config resetstat >/dev/null
        cli -r 2000 evalsha "$sha" 7 "${keys[@]}" m1 8 3 3 1 600000 6000000 $((3 * n1)) 1 100000 0 0 >/dev/null
        steady=$(per_call)
        cli config resetstat >/dev/null
        for ((i = 0; i < 50; i++)); do
            echo "EVALSHA $sha 7 ${keys[*]} new$i 8 0 0 0 600000 6000000 $((3 * n1)) 1 0 0 0"
        done | cli --pipe >/dev/null
        recompute=$(per_call)
        echo "| $n1 | $steady | $recompute |"
    done
done
