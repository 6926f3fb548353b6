#!/usr/bin/env bash
# The Redis backend's tests start their own redis-server on a free loopback port and fail (never
# skip) without it. `make test` runs this first: installs Debian's package when we are root,
# otherwise stops at once.
set -euo pipefail

if ! command -v redis-server >/dev/null 2>&1; then
    if [[ "$(id -u)" -ne 0 ]]; then
        echo "redis-server is missing: install Debian's redis-server package (apt-get install redis-server)" >&2
        exit 1
    fi
    echo "redis-server is missing: installing Debian's redis-server package"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server
fi
redis-server --version
