#!/usr/bin/env bash
# Makes sure the servers poolkit's tests talk to are installed and running:
#   PostgreSQL  127.0.0.1:5432  database `test`, trust auth for `postgres` and `root`
#   Redis       127.0.0.1:6379
#   PgBouncer   127.0.0.1:6432  pool_mode=transaction in front of `test`
#               (user `poolkit`, throwaway password `poolkit_test`)
#               `poolkit` is also PgBouncer's admin/stats user, so tests can run SHOW POOLS
#               on the `pgbouncer` admin database
# then runs every executable scripts/services.d/*.sh (per-crate setup).
#
# Usage: scripts/services.sh     (prints one line per service; nothing else when all is up)
# The ports and PgBouncer's folder can be moved for a throwaway run (e.g. to try the
# cluster-creation path without touching the shared servers):
#   POOLKIT_PG_PORT=55432 POOLKIT_REDIS_PORT=56379 POOLKIT_PGB_PORT=56432 \
#   POOLKIT_PGB_DIR=/tmp/pgb scripts/services.sh
#
# Idempotent: servers already running are used as they are; missing ones are installed
# with apt-get and started. Facts of this machine kind: Debian's service scripts
# (systemctl/service) are refused, so servers are started directly (pg_ctlcluster,
# redis-server --daemonize, pgbouncer -d); PgBouncer refuses to run as root, so it runs
# as the postgres user.
set -euo pipefail

PG_PORT=${POOLKIT_PG_PORT:-5432}
REDIS_PORT=${POOLKIT_REDIS_PORT:-6379}
PGB_PORT=${POOLKIT_PGB_PORT:-6432}
# PgBouncer runs as the postgres user, so its files live where that user can write.
PGB_DIR=${POOLKIT_PGB_DIR:-/var/lib/poolkit-pgbouncer}
PGB_USER=poolkit
PGB_PASSWORD=poolkit_test
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# Never let psql wait for a password on a terminal, nor hang on a dead port.
export PGCONNECT_TIMEOUT=5

say() { printf 'services: %s\n' "$*"; }
die() { printf 'services: ERROR: %s\n' "$*" >&2; exit 1; }

apt_updated=0
apt_install() {
    # Keep package scripts from trying to start services (refused here anyway).
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    if [ "$apt_updated" = 0 ]; then
        say "apt-get update"
        apt-get update -qq
        apt_updated=1
    fi
    say "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

as_postgres() {
    if command -v runuser >/dev/null; then runuser -u postgres -- "$@"; else su postgres -s /bin/sh -c "$(printf '%q ' "$@")"; fi
}

wait_for() { # description, seconds, command...
    local what=$1 secs=$2; shift 2
    local i
    for ((i = 0; i < secs * 10; i++)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    die "$what did not come up within ${secs}s"
}

psql_q() { psql -X -w -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -tAc "$1"; }

# --- PostgreSQL -------------------------------------------------------------------------
ensure_postgres() {
    if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || ! command -v pg_ctlcluster >/dev/null; then
        apt_install postgresql postgresql-client
    fi
    local ver cluster
    # Newest installed server version (Debian installs each under /usr/lib/postgresql/<ver>).
    ver=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -1)
    cluster=$(pg_lsclusters -h 2>/dev/null | awk -v p="$PG_PORT" '$3 == p { print $1 " " $2; exit }')
    if [ -z "$cluster" ]; then
        local name=main
        # `main` is taken by a cluster on another port: use a name of our own.
        if pg_lsclusters -h 2>/dev/null | awk -v v="$ver" '$1 == v && $2 == "main"' | grep -q .; then
            name="poolkit_$PG_PORT"
        fi
        say "creating PostgreSQL $ver cluster '$name' on port $PG_PORT (trust auth on loopback)"
        pg_createcluster "$ver" "$name" --port "$PG_PORT" -- --auth-local=trust --auth-host=trust >/dev/null
        cluster="$ver $name"
    fi
    # shellcheck disable=SC2086
    set -- $cluster
    local status
    status=$(pg_lsclusters -h | awk -v v="$1" -v n="$2" '$1 == v && $2 == n { print $4 }')
    if [ "$status" != "online" ]; then
        say "starting PostgreSQL $1/$2"
        pg_ctlcluster --skip-systemctl-redirect "$1" "$2" start
    fi
    wait_for "PostgreSQL on 127.0.0.1:$PG_PORT" 30 pg_isready -q -h 127.0.0.1 -p "$PG_PORT"
    if ! psql_q 'SELECT 1' >/dev/null 2>&1; then
        # A cluster made by Debian's package uses peer/scram auth: give loopback trust
        # (the tests connect as `postgres` and `root` with no password).
        local hba="/etc/postgresql/$1/$2/pg_hba.conf"
        say "enabling trust auth for loopback in $hba"
        { printf 'local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n'; cat "$hba"; } > "$hba.new"
        mv "$hba.new" "$hba"
        chown postgres:postgres "$hba"
        pg_ctlcluster --skip-systemctl-redirect "$1" "$2" reload
        wait_for "PostgreSQL trust auth" 10 psql_q 'SELECT 1'
    fi
    [ "$(psql_q "SELECT count(*) FROM pg_roles WHERE rolname = 'root'")" = 1 ] || psql_q 'CREATE ROLE root SUPERUSER LOGIN' >/dev/null
    [ "$(psql_q "SELECT count(*) FROM pg_roles WHERE rolname = '$PGB_USER'")" = 1 ] \
        || psql_q "CREATE ROLE $PGB_USER LOGIN PASSWORD '$PGB_PASSWORD'" >/dev/null
    [ "$(psql_q "SELECT count(*) FROM pg_database WHERE datname = 'test'")" = 1 ] || psql_q 'CREATE DATABASE test' >/dev/null
    [ "$(psql_q "SELECT count(*) FROM pg_database WHERE datname = 'root'")" = 1 ] || psql_q 'CREATE DATABASE root' >/dev/null
    psql -X -w -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d test -c "GRANT ALL ON SCHEMA public TO $PGB_USER" >/dev/null
    say "PostgreSQL $(psql_q 'SHOW server_version' | cut -d' ' -f1) ready on 127.0.0.1:$PG_PORT ($1/$2)"
}

# --- Redis ------------------------------------------------------------------------------
# A server that wants a password answers NOAUTH with exit code 0: insist on PONG.
redis_ok() { [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; }

ensure_redis() {
    if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
        apt_install redis-server
    fi
    if ! redis_ok; then
        say "starting redis-server on 127.0.0.1:$REDIS_PORT"
        # Started directly (no service scripts here); no persistence: test data is throwaway.
        # `-::1` binds IPv6 loopback only where the machine has it.
        mkdir -p /var/lib/redis /var/log/redis
        redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" \
            --appendonly no --dir /var/lib/redis --logfile "/var/log/redis/poolkit-$REDIS_PORT.log" \
            --pidfile "/var/lib/redis/poolkit-$REDIS_PORT.pid"
    fi
    wait_for "Redis on 127.0.0.1:$REDIS_PORT (log: /var/log/redis/poolkit-$REDIS_PORT.log)" 15 redis_ok
    say "Redis $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" info server | awk -F: '/^redis_version/ { print $2 }' | tr -d '\r') ready on 127.0.0.1:$REDIS_PORT"
}

# --- PgBouncer --------------------------------------------------------------------------
pgb_ok() {
    PGPASSWORD=$PGB_PASSWORD psql -X -w -h 127.0.0.1 -p "$PGB_PORT" -U "$PGB_USER" -d test -tAc 'SELECT 1' 2>/dev/null | grep -qx 1
}

ensure_pgbouncer() {
    command -v pgbouncer >/dev/null || apt_install pgbouncer
    mkdir -p "$PGB_DIR"
    local ini="$PGB_DIR/pgbouncer.ini" users="$PGB_DIR/userlist.txt" changed=0
    local want_ini want_users
    want_ini=$(cat <<INI
;; Written by scripts/services.sh for poolkit's tests. Throwaway credentials only.
[databases]
test = host=127.0.0.1 port=$PG_PORT dbname=test

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGB_PORT
unix_socket_dir = $PGB_DIR
auth_type = md5
auth_file = $users
admin_users = $PGB_USER
stats_users = $PGB_USER
pool_mode = transaction
default_pool_size = 20
max_client_conn = 2000
ignore_startup_parameters = extra_float_digits,options
pidfile = $PGB_DIR/pgbouncer.pid
logfile = $PGB_DIR/pgbouncer.log
INI
)
    want_users="\"$PGB_USER\" \"$PGB_PASSWORD\""
    if [ "$(cat "$ini" 2>/dev/null)" != "$want_ini" ]; then printf '%s\n' "$want_ini" > "$ini"; changed=1; fi
    if [ "$(cat "$users" 2>/dev/null)" != "$want_users" ]; then printf '%s\n' "$want_users" > "$users"; changed=1; fi
    chown -R postgres:postgres "$PGB_DIR"
    chmod 600 "$users"
    local pid=""
    [ -f "$PGB_DIR/pgbouncer.pid" ] && pid=$(cat "$PGB_DIR/pgbouncer.pid" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && { [ "$changed" = 1 ] || ! pgb_ok; }; then
        say "restarting PgBouncer (config changed or not answering)"
        kill "$pid" 2>/dev/null || true
        wait_for "PgBouncer to stop" 10 sh -c "! kill -0 $pid 2>/dev/null"
        pid=""
    fi
    if ! pgb_ok; then
        if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
            say "starting PgBouncer on 127.0.0.1:$PGB_PORT (transaction mode)"
            rm -f "$PGB_DIR/pgbouncer.pid"
            as_postgres pgbouncer -d -q "$ini"
        fi
        wait_for "PgBouncer on 127.0.0.1:$PGB_PORT (log: $PGB_DIR/pgbouncer.log)" 15 pgb_ok
    fi
    say "PgBouncer $(pgbouncer --version | head -1 | awk '{print $2}') ready on 127.0.0.1:$PGB_PORT (pool_mode=transaction)"
}

ensure_postgres
ensure_redis
ensure_pgbouncer

for extra in "$here"/services.d/*.sh; do
    [ -x "$extra" ] || continue
    say "running ${extra#"$here"/}"
    "$extra"
done
