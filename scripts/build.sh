#!/usr/bin/env bash
# Builds the four dynamic modules into build/modules/ for one nginx binary.
#
#   NGINX=/usr/sbin/nginx          the binary that will load them (default:
#                                  Debian's nginx-core)
#   NGINX_SRC=/usr/share/nginx/src an nginx source tree of the same version
#                                  (default: Debian's nginx-dev tree)
#   CC=clang                       another compiler (nginx's configure reads CC)
#
# A dynamic module must be compiled with the configure flags of the binary
# that loads it: they decide struct layouts and #if's (NGX_STAT_STUB, the
# headers_in fields, ...), and nginx refuses a module built otherwise.  So
# the flags come from `$NGINX -V`, with --with-compat added and what makes
# no sense for a modules-only build dropped (see modules_only_flags).  The
# source tree is copied under build/ because configure writes into the tree
# it runs from, and /usr/share is not ours.
#
#   scripts/build.sh --print-flags   the configure arguments, one a line
#
# When $NGINX has the modules compiled in (a static build with
# --add-module=<this repo>), there is nothing to build.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=lib.sh
. "$root/scripts/lib.sh"

src=${NGINX_SRC:-/usr/share/nginx/src}
build=$root/build

die() { echo "build: $*" >&2; exit 1; }

# modules_only_flags: read the target's configure arguments on stdin, print
# those a modules-only build needs.  Kept: every flag that changes a struct
# layout or an #if (the --with-*_module and --without-* set, --with-debug,
# --with-threads, --with-cc-opt, ...) and the paths (harmless).  Dropped:
#   --add-module, --add-dynamic-module   other addons, absent here;
#   --with-X=dynamic                     nginx's own dynamic modules: not
#                                        part of the binary, and their
#                                        libraries (GeoIP, gd, ...) may be
#                                        missing here;
#   --with-{openssl,pcre,zlib,libatomic}=DIR  library sources on the
#                                        machine that built the binary;
#                                        the system's headers are used;
#   -pie in --with-ld-opt                (nginx.org's packages) a shared
#                                        object is no executable: gcc
#                                        ignores it with -shared, clang
#                                        warns.
modules_only_flags() {
    local a compat=
    while IFS= read -r a; do
        case $a in
            --add-module=*|--add-dynamic-module=*) continue ;;
            --with-*=dynamic) continue ;;
            --with-openssl=*|--with-pcre=*|--with-zlib=*|--with-libatomic=*)
                continue ;;
            --with-compat) compat=yes ;;
            --with-ld-opt=*)
                a=$(printf '%s\n' "$a" | sed -e 's/ -pie\( \|$\)/\1/g' -e 's/=-pie\( \|$\)/=/')
                [ "$a" = --with-ld-opt= ] && continue ;;
        esac
        printf '%s\n' "$a"
    done
    [ -n "$compat" ] || printf '%s\n' --with-compat
}

nginx=$(edge_nginx_bin) || exit 1

if edge_nginx_static "$nginx"; then
    if [ "${1:-}" = --print-flags ]; then
        die "$nginx has the edge modules compiled in: no flags for a dynamic build"
    fi
    echo "build: $nginx has the edge modules compiled in; nothing to build"
    exit 0
fi

version=$(edge_nginx_version "$nginx")
[ -n "$version" ] || die "cannot read the version of $nginx from '$nginx -V'"
mapfile -t flags < <(edge_nginx_configure_args "$nginx" | modules_only_flags)

if [ "${1:-}" = --print-flags ]; then
    printf '%s\n' "${flags[@]}"
    exit 0
fi

if [ ! -x "$src/configure" ] && [ ! -x "$src/auto/configure" ]; then
    die "no nginx source tree at $src (install nginx-dev, or set NGINX_SRC to the source of nginx $version)"
fi
src_version=$(sed -n 's/^#define NGINX_VERSION *"\(.*\)"/\1/p' "$src/src/core/nginx.h" 2>/dev/null || true)
if [ "$src_version" != "$version" ]; then
    die "NGINX=$nginx is nginx $version but NGINX_SRC=$src is nginx ${src_version:-(unknown: no src/core/nginx.h)}: a module must be built from the source of the nginx that loads it (set NGINX_SRC to an nginx-$version tree)"
fi

flags+=("--add-dynamic-module=$root")

# one configured tree per (source tree, target binary, compiler)
tree=$build/nginx-$version-$(printf '%s\n' "$src" "$nginx" "${CC:-}" | md5sum | cut -c1-8)
stamp=$(printf '%s\n' "$src" "${CC:-}" "${flags[@]}" | cat - "$root/config" | md5sum | cut -c1-32)

if [ ! -f "$tree/objs/Makefile" ] || [ "$(cat "$tree/.edge-stamp" 2>/dev/null)" != "$stamp" ]; then
    rm -rf "$tree"
    mkdir -p "$build"
    cp -a "$src/." "$tree"
    rm -rf "$tree/objs" "$tree/Makefile"
    configure=./configure
    [ -x "$tree/configure" ] || configure=./auto/configure
    echo "build: configuring $src (nginx $version) for $nginx into $tree"
    (cd "$tree" && $configure "${flags[@]}" > "$tree/configure.log" 2>&1) || {
        tail -30 "$tree/configure.log" >&2
        die "configure failed (the whole log: $tree/configure.log)"
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
# which binary these .so files are for: t/fixtures.sh and bench/ check it
printf '%s\n' "$nginx" "$version" > "$build/modules/.target"
echo "build: modules for $nginx (nginx $version) in $build/modules:"
ls "$build/modules"
