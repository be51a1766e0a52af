#!/usr/bin/env bash
# Failover suite (tests/failover_pg.rs, tests/failover_redis.rs, tests/rotation_pg.rs,
# tests/half_open.rs): the tests start their own servers on free 127.0.0.1 / 127.0.0.2
# ports: a PostgreSQL primary and a streaming replica (initdb, pg_basebackup, pg_ctl
# promote), Redis masters and replicas, and a Redis Sentinel (the `redis-sentinel`
# program, Debian package redis-sentinel). Installs only what is missing.
set -euo pipefail

missing=()
ls /usr/lib/postgresql/*/bin/pg_basebackup >/dev/null 2>&1 || missing+=(postgresql)
ls /usr/lib/postgresql/*/bin/psql >/dev/null 2>&1 || missing+=(postgresql-client)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v redis-sentinel >/dev/null 2>&1 || missing+=(redis-sentinel)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "failover.sh: installing ${missing[*]}"
    # Package scripts must not start services (Debian's are refused here anyway; the
    # tests start their own sentinel).
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
