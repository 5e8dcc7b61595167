#!/usr/bin/env bash
# Installs the Debian packages the build, the tests, the demo or the
# benchmarks or the Debian packages need, and only those missing.
# Usage: install-deps.sh [build|test|bench|deb]
set -euo pipefail

build_pkgs="gcc make nginx-core nginx-dev libhiredis-dev libpq-dev libjansson-dev zlib1g-dev"
test_pkgs="$build_pkgs perl procps redis-server redis-sentinel redis-tools postgresql postgresql-client
           libtest-base-perl libtext-diff-perl libtest-longstring-perl
           libwww-perl liburi-perl valgrind prometheus libfaketime"
bench_pkgs="$test_pkgs wrk python3 valgrind"
deb_pkgs="$build_pkgs build-essential debhelper dpkg-dev curl"

case "${1:-test}" in
    build) want=$build_pkgs ;;
    test)  want=$test_pkgs ;;
    bench) want=$bench_pkgs ;;
    deb)   want=$deb_pkgs ;;
    *) echo "usage: $0 [build|test|bench|deb]" >&2; exit 2 ;;
esac

missing=()
for p in $want; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
        || missing+=("$p")
done

[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages: ${missing[*]}; run as root, or install them" >&2
    exit 1
fi

echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# the packages' own services are not wanted: the tests start their own
# servers on free loopback ports
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" > /tmp/edge-apt.log 2>&1 || {
    tail -40 /tmp/edge-apt.log >&2
    exit 1
}
