#!/usr/bin/env bash
# poolkit-http tests run a private nginx (started by the test itself, never the system
# service): make sure the binary is installed.
set -euo pipefail

if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends nginx-light >/dev/null 2>&1 \
        || apt-get install -y -qq --no-install-recommends nginx >/dev/null
fi
