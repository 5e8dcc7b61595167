#!/usr/bin/env bash
# Runs the public HTTP caching test suite (cache-tests.fyi, a checkout given
# by CACHE_TESTS) against nginx with the cache module in front of the
# suite's origin, and against nginx's own proxy_cache as a baseline, then
# prints how many tests of each kind pass.  See bench/README.md.
#
#   CACHE_TESTS=/path/to/cache-tests bench/cache-conformance.sh
#
# Not part of `make test`: the suite is not in this repository.  Everything
# it starts (the suite's origin, redis-server, nginx) listens on 127.0.0.1
# and is stopped on exit, failure or Ctrl-C.

set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

die() { printf 'cache-conformance: error: %s\n' "$*" >&2; exit 1; }
say() { printf 'cache-conformance: %s\n' "$*" >&2; }

suite=${CACHE_TESTS:-}
[ -n "$suite" ] || die "set CACHE_TESTS to a checkout of the cache-tests suite"
suite=$(cd "$suite" && pwd) || die "CACHE_TESTS=$CACHE_TESTS: no such directory"
[ -f "$suite/tests/index.mjs" ] && [ -f "$suite/test-engine/cli.mjs" ] \
    || die "$suite does not look like the cache-tests suite"
[ -d "$suite/node_modules/undici" ] \
    || die "the suite's dependencies are missing: (cd $suite && npm install)"
command -v node > /dev/null || die "node is not installed"
command -v redis-server > /dev/null || die "redis-server is not installed"

targets=${CONFORMANCE_TARGETS:-"edge proxy_cache"}
test_id=${CONFORMANCE_ID:-}
modules=${EDGE_MODULES:-$root/build/modules}
nginx=$(edge_nginx_bin) || exit 1
out=${CONFORMANCE_OUT:-}

tmp=$(mktemp -d /tmp/cache-conformance.XXXXXX)
# nginx's workers (nobody when run as root) use proxy_cache's directory
chmod 755 "$tmp"
origin_pid=
redis_pid=

cleanup() {
    local p
    for p in "$tmp"/nginx-*; do
        [ -d "$p" ] && nginx_stop "$p"
    done
    if [ -n "$origin_pid" ] && edge_running "$origin_pid"; then
        kill "$origin_pid" 2> /dev/null || true
        wait "$origin_pid" 2> /dev/null || true
    fi
    if [ -n "$redis_pid" ] && edge_running "$redis_pid"; then
        kill "$redis_pid" 2> /dev/null || true
        wait_for 5 sh -c "! kill -0 $redis_pid" || kill -KILL "$redis_pid" 2> /dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the suite's origin -------------------------------------------------------
origin_port=$(free_port)
(cd "$suite" && exec env npm_config_protocol=http npm_config_port="$origin_port" \
    npm_config_pidfile="$tmp/origin.pid" \
    node test-engine/server/server.mjs) > "$tmp/origin.log" 2>&1 &
origin_pid=$!
wait_for 15 curl -s -o /dev/null "http://127.0.0.1:$origin_port/" \
    || { cat "$tmp/origin.log" >&2; die "the suite's origin did not start"; }

# --- nginx configurations -----------------------------------------------------
# The same server for both: one worker, HTTP/1.1 to the origin, nothing tuned
# for any test.  The cache as an operator of a shared cache would set it up:
# no default freshness (edge_cache_valid), stale only when the origin cannot
# be reached (RFC 9111 4.2.4) or the response's own stale-while-revalidate
# allows it ("updating" would serve every expired entry while it is
# updated, as proxy_cache_use_stale updating does), revalidation and the
# stampede lock on.

conf_edge() {
    cat <<EOF
load_module $modules/ngx_http_cache_module.so;
EOF
    conf_common "
        edge_cache_redis conformance 127.0.0.1:$redis_port timeout=500ms;
        edge_cache_zone  suite redis=conformance;" "
            edge_cache               suite;
            edge_cache_lock          on;
            edge_cache_revalidate    on;
            edge_cache_use_stale     error timeout;
            edge_cache_status_header on;"
}

# as the suite's own docker image configures nginx
conf_proxy_cache() {
    conf_common "
        proxy_cache_path $1/cache levels=1:2 keys_zone=suite:8m
                         max_size=1000m inactive=600m;" "
            proxy_cache           suite;
            proxy_cache_revalidate on;"
}

conf_common() {
    cat <<EOF
worker_processes 1;
error_log logs/error.log warn;
pid       logs/nginx.pid;
events { worker_connections 2048; }
http {
    access_log off;
    $1
    server {
        listen 127.0.0.1:$nginx_port;
        location / {
            $2
            proxy_http_version 1.1;
            proxy_pass http://127.0.0.1:$origin_port;
        }
    }
}
EOF
}

redis_start() {
    redis_port=$(free_port)
    redis-server --port "$redis_port" --bind 127.0.0.1 --save '' \
        --appendonly no --daemonize yes --pidfile "$tmp/redis.pid" \
        --logfile "$tmp/redis.log" > /dev/null
    wait_for 10 test -s "$tmp/redis.pid" || die "redis-server did not start"
    redis_pid=$(cat "$tmp/redis.pid")
    wait_for 10 redis-cli -p "$redis_port" ping || die "redis-server does not answer"
}

# run_suite TARGET: start nginx for TARGET, run the client, stop nginx;
# the results JSON goes to $tmp/TARGET.json
run_suite() {
    local target=$1 prefix=$tmp/nginx-$1
    mkdir -p "$prefix/conf" "$prefix/logs" "$prefix/cache"
    nginx_port=$(free_port)
    case $target in
        edge)
            [ -f "$modules/ngx_http_cache_module.so" ] \
                || die "no $modules/ngx_http_cache_module.so (run make)"
            [ -n "$redis_pid" ] || redis_start
            conf_edge > "$prefix/conf/nginx.conf" ;;
        proxy_cache)
            conf_proxy_cache "$prefix" > "$prefix/conf/nginx.conf" ;;
        *) die "unknown target '$target' (edge, proxy_cache)" ;;
    esac
    nginx_start "$prefix" || die "nginx ($target) did not start"
    say "$target: running the suite through 127.0.0.1:$nginx_port"
    (cd "$suite" && timeout 900 npm run --silent cli \
        --base="http://127.0.0.1:$nginx_port" --id="$test_id") \
        > "$tmp/$target.json" 2> "$tmp/$target.err" \
        || { cat "$tmp/$target.err" >&2; die "the suite's client failed ($target)"; }
    nginx_stop "$prefix"
    if grep -E '\[(alert|crit|emerg)\]' "$prefix/logs/error.log" >&2; then
        say "$target: the lines above are from nginx's error log"
    fi
    if [ -n "$test_id" ]; then
        cat "$tmp/$target.json"
        return
    fi
    if [ -n "$out" ]; then
        mkdir -p "$out"
        cp "$tmp/$target.json" "$out/$target.json"
    fi
    node "$here/cache-conformance-summary.mjs" "$suite" "$target" "$tmp/$target.json"
}

say "nginx $(edge_nginx_version "$nginx") ($nginx), suite at $suite" \
    "($(git -C "$suite" rev-parse --short HEAD 2> /dev/null || echo unknown))"
for t in $targets; do
    run_suite "$t"
done
