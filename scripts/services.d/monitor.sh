#!/usr/bin/env bash
# poolkit-monitor tests: headless Chromium (dashboard test), promtool (rules and scrape
# checks) and the Prometheus server (tests/monitor_prometheus.rs starts a private one on a
# free loopback port), both from Debian's prometheus package. Installs only what is missing.
set -euo pipefail

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
    missing+=(prometheus)
fi
if [ "${#missing[@]}" -gt 0 ]; then
    echo "monitor.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Debian's postinst cannot start the prometheus service here (no systemd); the tests run
    # their own instance.
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The health-down test runs a private PostgreSQL server with these binaries.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    echo "monitor.sh: initdb not found under /usr/lib/postgresql/*/bin (install postgresql)" >&2
    exit 1
fi
