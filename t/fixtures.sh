#!/usr/bin/env bash
# Runs a command with the test fixtures up: one redis-server and one
# PostgreSQL, each on a free loopback port, in a temporary directory that is
# removed afterwards (also on failure or Ctrl-C).
#
#   t/fixtures.sh COMMAND [ARGS...]
#
# The command sees TEST_NGINX_REDIS_PORT, TEST_NGINX_PG_PORT,
# TEST_NGINX_PG_DSN, TEST_NGINX_PORT, TEST_NGINX_SERVROOT,
# TEST_NGINX_LOAD_MODULES, TEST_NGINX_BINARY, EDGE_NGINX and
# TEST_EDGE_FIXTURES (the directory, used by t/lib/Test/Edge.pm to stop and
# restart Redis).
#
# NGINX (default /usr/sbin/nginx) is the nginx under test; it is exported
# as EDGE_NGINX, an absolute path.  TEST_NGINX_BINARY defaults to
# t/bin/nginx, which runs $EDGE_NGINX with "-e logs/error.log" so that
# startup errors reach the error.log the harness reads; a preset
# TEST_NGINX_BINARY is kept.  TEST_NGINX_LOAD_MODULES lists
# build/modules/*.so, which must have been built for that nginx
# (scripts/build.sh notes the target in build/modules/.target); when the
# binary has the modules compiled in (a static build), it is empty (also
# when preset): no .so is loaded.  TEST_EDGE_NGINX_DEBUG is 1 when that
# nginx is built --with-debug (a test reading debug-level log lines needs
# it; nginx.org's nginx is not, its nginx-debug is), else empty;
# TEST_EDGE_NGINX_HAS_STUB_STATUS, _HAS_AUTH_REQUEST and _HAS_GZIP likewise
# say whether it has stub_status, auth_request and gzip support (a minimal
# static build may lack them).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
# free_port, wait_for
# shellcheck source=../scripts/lib.sh
. "$root/scripts/lib.sh"

# nginx reads an environment variable NGINX itself (the listening sockets
# of a binary upgrade): the nginx under test must not see ours.  t/bin/nginx
# runs $EDGE_NGINX.
EDGE_NGINX=$(edge_nginx_bin) || exit 1
export EDGE_NGINX
export -n NGINX
unset NGINX

modules=""
if ! edge_nginx_static "$EDGE_NGINX"; then
    target=$(head -1 "$root/build/modules/.target" 2>/dev/null || true)
    if [ "$target" != "$EDGE_NGINX" ]; then
        echo "fixtures: build/modules/ holds no modules built for $EDGE_NGINX" \
             "(they are for ${target:-an unknown nginx}): run NGINX=$EDGE_NGINX make" >&2
        exit 1
    fi
    for m in ratelimit cache breaker metrics; do
        modules="$modules $root/build/modules/ngx_http_${m}_module.so"
    done
fi

dir=$(mktemp -d /tmp/edge-fixtures.XXXXXX)
chmod 755 "$dir"

pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
as_pg=()
if [ "$(id -u)" = 0 ]; then
    as_pg=(runuser -u postgres --)
fi

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -f "$dir/redis.pid" ]; then
        kill "$(cat "$dir/redis.pid")" 2>/dev/null || true
    fi
    if [ -f "$dir/pg/data/postmaster.pid" ]; then
        "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$dir/pg/data" -m immediate stop \
            > /dev/null 2>&1 || true
    fi
    # a test may have left a server of its own; nothing outlives the run
    pkill -f "$dir/" 2>/dev/null || true
    rm -rf "$dir"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM


redis_port=$(free_port)
cat > "$dir/redis.conf" <<CONF
bind 127.0.0.1
port $redis_port
daemonize yes
pidfile $dir/redis.pid
logfile $dir/redis.log
dir $dir
save ""
appendonly no
CONF
redis-server "$dir/redis.conf"
wait_for 10 redis-cli -p "$redis_port" ping

pg_port=$(free_port)
mkdir -p "$dir/pg"
[ "$(id -u)" = 0 ] && chown postgres: "$dir/pg"
"${as_pg[@]}" "$pg_bin/initdb" -D "$dir/pg/data" -A trust -U postgres \
    --no-sync > "$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
"${as_pg[@]}" "$pg_bin/pg_ctl" -D "$dir/pg/data" -l "$dir/pg/postgres.log" -w \
    -o "-p $pg_port -k $dir/pg -c listen_addresses=127.0.0.1 -c fsync=off" \
    start > /dev/null || { cat "$dir/pg/postgres.log" >&2; exit 1; }
psql -h 127.0.0.1 -p "$pg_port" -U postgres -qc 'CREATE DATABASE edge_test' > /dev/null

export TEST_EDGE_FIXTURES=$dir
export TEST_NGINX_REDIS_PORT=$redis_port
export TEST_NGINX_PG_PORT=$pg_port
export TEST_NGINX_PG_DSN="host=127.0.0.1 port=$pg_port user=postgres dbname=edge_test"
export TEST_NGINX_PORT=${TEST_NGINX_PORT:-$(free_port)}
export TEST_NGINX_SERVROOT=${TEST_NGINX_SERVROOT:-$dir/servroot}
export TEST_NGINX_BINARY=${TEST_NGINX_BINARY:-$root/t/bin/nginx}
if edge_nginx_static "$EDGE_NGINX"; then
    # loading them again would fail: "module ... is already loaded"
    export TEST_NGINX_LOAD_MODULES=
else
    export TEST_NGINX_LOAD_MODULES=${TEST_NGINX_LOAD_MODULES:-${modules# }}
fi

# What the nginx under test is built with, for the tests that need it (they
# skip, saying why, without it): --with-debug (debug-level log lines),
# stub_status and auth_request (off unless asked for), and nginx's gzip
# support (NGX_HTTP_GZIP: set by the gzip module, on unless
# --without-http_gzip_module, by gunzip, gzip_static, and by --with-compat,
# which scripts/build.sh adds to every dynamic build).  They are compiled
# into nginx, never dynamic: its configure arguments tell.
nginx_args=$(edge_nginx_configure_args "$EDGE_NGINX")
# (no "printf | grep -q": grep leaves at the first match, printf may then
# die of SIGPIPE, and pipefail turns a match into a failure)
nginx_has() { [[ $'\n'$nginx_args$'\n' == *$'\n'"$1"$'\n'* ]]; }
TEST_EDGE_NGINX_DEBUG=
TEST_EDGE_NGINX_HAS_STUB_STATUS=
TEST_EDGE_NGINX_HAS_AUTH_REQUEST=
TEST_EDGE_NGINX_HAS_GZIP=
nginx_has --with-debug && TEST_EDGE_NGINX_DEBUG=1
nginx_has --with-http_stub_status_module && TEST_EDGE_NGINX_HAS_STUB_STATUS=1
nginx_has --with-http_auth_request_module && TEST_EDGE_NGINX_HAS_AUTH_REQUEST=1
if ! edge_nginx_static "$EDGE_NGINX" || nginx_has --with-compat \
   || ! nginx_has --without-http_gzip_module \
   || nginx_has --with-http_gunzip_module \
   || nginx_has --with-http_gzip_static_module
then
    TEST_EDGE_NGINX_HAS_GZIP=1
fi
export TEST_EDGE_NGINX_DEBUG TEST_EDGE_NGINX_HAS_STUB_STATUS \
       TEST_EDGE_NGINX_HAS_GZIP TEST_EDGE_NGINX_HAS_AUTH_REQUEST

echo "fixtures: nginx $EDGE_NGINX ($(edge_nginx_version "$EDGE_NGINX")$(edge_nginx_static "$EDGE_NGINX" && echo ', modules compiled in')), redis 127.0.0.1:$redis_port, postgresql 127.0.0.1:$pg_port, nginx port $TEST_NGINX_PORT"
"$@"
