#!/usr/bin/env bash
# Builds the Debian packages (`make deb`): one binary package per module,
# libnginx-mod-http-{ratelimit,metrics,cache,breaker}, the Debian way
# (debian/: debhelper with nginx-dev's dh-sequence-nginx and dh_nginx), for
# Debian's nginx (/usr/sbin/nginx, nginx-dev's source tree).
#
# dpkg-buildpackage writes its results next to the source directory, so the
# tree is staged as build/deb/nginx-edge-modules-VERSION/ and the .deb files
# land in build/deb/.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
# the packages are for Debian's nginx, whatever NGINX says; and the build's
# `nginx -t` (dh_auto_test) must not see a variable nginx reads itself
unset NGINX
out=$root/build/deb
version=$(dpkg-parsechangelog -l "$root/debian/changelog" -S Version)
stage=$out/nginx-edge-modules-$version

rm -rf "$out"
mkdir -p "$stage"
# the source as committed or edited, without build products
(cd "$root" && tar --exclude=./build --exclude=./.git --exclude=./t/servroot \
     --exclude='./bench/results' -cf - .) | tar -xf - -C "$stage"

echo "deb: building in $stage"
(cd "$stage" && dpkg-buildpackage -b -us -uc) > "$out/build.log" 2>&1 || {
    tail -40 "$out/build.log" >&2
    echo "deb: dpkg-buildpackage failed (the whole log: $out/build.log)" >&2
    exit 1
}
rm -rf "$stage"
echo "deb: packages in $out:"
ls "$out"/*.deb
