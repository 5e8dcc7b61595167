#!/usr/bin/env bash
# Builds the four dynamic modules into build/modules/.
#
# Against Debian's nginx (nginx-dev's /usr/share/nginx/src) the tree is
# configured with the distro's own flags (conf_flags) plus --with-compat, so
# /usr/sbin/nginx accepts the .so files.  NGINX_SRC=/path builds against any
# other nginx source tree.  The source tree is copied under build/ because
# configure writes into the tree it runs from, and /usr/share is not ours.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
src=${NGINX_SRC:-/usr/share/nginx/src}
build=$root/build

if [ ! -x "$src/configure" ] && [ ! -x "$src/auto/configure" ]; then
    echo "build: no nginx source tree at $src (install nginx-dev, or set NGINX_SRC)" >&2
    exit 1
fi

flags=()
if [ -f "$src/conf_flags" ]; then
    # shellcheck disable=SC1091
    . "$src/conf_flags"
    flags=("${NGX_CONF_FLAGS[@]}")
fi
flags+=(--with-compat "--add-dynamic-module=$root")

tree=$build/nginx-$(printf '%s' "$src" | md5sum | cut -c1-8)
stamp=$(printf '%s\n' "$src" "${flags[@]}" | cat - "$root/config" | md5sum | cut -c1-32)

if [ ! -f "$tree/objs/Makefile" ] || [ "$(cat "$tree/.edge-stamp" 2>/dev/null)" != "$stamp" ]; then
    rm -rf "$tree"
    mkdir -p "$build"
    cp -a "$src/." "$tree"
    configure=./configure
    [ -x "$tree/configure" ] || configure=./auto/configure
    echo "build: configuring $src into $tree"
    (cd "$tree" && $configure "${flags[@]}" > "$tree/configure.log" 2>&1) || {
        tail -30 "$tree/configure.log" >&2
        exit 1
    }
    echo "$stamp" > "$tree/.edge-stamp"
fi

make -s -C "$tree" -f objs/Makefile -j"$(nproc)" modules
mkdir -p "$build/modules"
for so in "$tree"/objs/ngx_http_*_module.so; do
    # copy then rename: an nginx running the old file keeps its mapping
    cp "$so" "$build/modules/.$(basename "$so").new"
    mv -f "$build/modules/.$(basename "$so").new" "$build/modules/$(basename "$so")"
done
echo "build: modules in $build/modules:"
ls "$build/modules"
