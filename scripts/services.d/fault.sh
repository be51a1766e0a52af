#!/usr/bin/env bash
# Fault suite (tests/fault_*.rs, tests/secrets.rs): the tests start their own private
# PostgreSQL cluster (initdb/pg_ctl as `postgres`), PgBouncer and redis-server on free
# 127.0.0.1 ports, so only the binaries are needed. Installs only what is missing.
set -euo pipefail

missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v pgbouncer >/dev/null 2>&1 || missing+=(pgbouncer)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "fault.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
