#!/usr/bin/env bash
# poolkit-monitor tests: headless Chromium (dashboard test) and promtool (rules and scrape
# checks, from Debian's prometheus package). Installs only what is missing.
set -euo pipefail

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "monitor.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Debian's postinst cannot start the prometheus service here (no systemd); only promtool is used.
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The health-down test runs a private PostgreSQL server with these binaries.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    echo "monitor.sh: initdb not found under /usr/lib/postgresql/*/bin (install postgresql)" >&2
    exit 1
fi
