#!/bin/sh
# deps.sh - install what building and testing postern needs, if missing.
# Idempotent: does nothing when everything is present.
set -u
missing=""
pkg_have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
want="build-essential musl-tools e2fsprogs pkg-config libsodium-dev libssl-dev check s6 openssl telnet swaks libnet-ssleay-perl curl mpop python3 procps strace mandoc"
# "deps.sh fuzz": the libFuzzer toolchain as well
[ "${1:-}" = fuzz ] && want="$want clang libclang-rt-dev"
# "deps.sh valgrind": memcheck for `make valgrind`
[ "${1:-}" = valgrind ] && want="$want valgrind"
for p in $want; do
    pkg_have "$p" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
        echo "deps: missing packages:$missing" >&2
        echo "deps: not root and no sudo: as root, run apt-get install$missing (or make deps), then retry" >&2
        exit 1
    fi
else SUDO=""; fi
echo "deps: installing:$missing${SUDO:+ (with sudo)}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q || { echo "deps: apt-get update failed" >&2; exit 1; }
$SUDO apt-get install -y -q --no-install-recommends $missing || { echo "deps: apt-get install failed" >&2; exit 1; }
