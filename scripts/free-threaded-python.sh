#!/usr/bin/env bash
# A free-threaded CPython 3.13 (python3.13t, the GIL off) built from Debian's source package,
# cached outside the source tree; a no-op when it is there already. Prints its path.
#
# No registry these machines reach ships a free-threaded binary; Debian's `python3.13` source
# package (trixie) ships CPython's source. About 10 minutes on 2 cores.
#
# Environment:
#   NOVA_FT_PREFIX   where it is installed (default ~/.cache/nova-python3.13t)
set -euo pipefail

PREFIX=${NOVA_FT_PREFIX:-$HOME/.cache/nova-python3.13t}
PY="$PREFIX/bin/python3.13t"
if [ -x "$PY" ] && "$PY" -c 'import sys; sys.exit(sys._is_gil_enabled())' 2>/dev/null; then
    echo "$PY"
    exit 0
fi

log() { echo "==> $*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Debian's own mirror URI, for a deb-src entry of trixie in a file of its own.
SOURCES=/etc/apt/sources.list.d/nova-trixie-src.sources
if [ ! -f "$SOURCES" ]; then
    uri=$(grep -h -m1 -E '^URIs: .*debian/?$' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}')
    uri=${uri:-http://deb.debian.org/debian}
    log "adding deb-src trixie ($uri) in $SOURCES"
    printf 'Types: deb-src\nURIs: %s\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$uri" | as_root tee "$SOURCES" >/dev/null
fi
as_root apt-get update -qq >&2
# What CPython's build needs (headers for the modules the test suite uses).
as_root apt-get install -y -qq build-essential libssl-dev zlib1g-dev libbz2-dev libffi-dev \
    libsqlite3-dev liblzma-dev libreadline-dev xz-utils >&2

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
log "downloading Debian's python3.13 source package"
apt-get source --download-only -qq python3.13 >&2
tarball=$(ls python3.13_*.orig.tar.xz | head -1)
tar -xJf "$tarball"
src=$(find . -maxdepth 1 -type d -name 'Python-3.13*' | head -1)
[ -n "$src" ] || { echo "no Python-3.13 source in $tarball" >&2; exit 1; }
cd "$src"
log "building $(basename "$src") with --disable-gil into $PREFIX"
./configure --disable-gil --prefix="$PREFIX" --without-ensurepip >&2
make -j"$(nproc)" >&2
make install >&2
"$PY" -m ensurepip >&2 || true
"$PY" -c 'import sys; assert not sys._is_gil_enabled(), "the GIL is on"'
echo "$PY"
