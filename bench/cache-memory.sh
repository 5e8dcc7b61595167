#!/usr/bin/env bash
# Redis memory per cached entry of ngx_http_cache_module: the backend's
# 1 KB and 100 KB JSON bodies (bench/lib.sh make_bodies) stored once with
# edge_cache_compress on (the default) and once off, then, for each key,
# Redis's MEMORY USAGE (key, value and Redis's own overhead, as Redis
# counts it) and STRLEN (the entry: headers, key text, body).
#
#   bench/cache-memory.sh
#
# Runs on 127.0.0.1 in a few seconds, stops everything it started.
# NGINX=/path/to/nginx as for bench/run.sh.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bench=$root/bench
# shellcheck source=bench/lib.sh
. "$bench/lib.sh"

nginx=$(edge_nginx_bin) || bench_die "no nginx binary at ${NGINX:-/usr/sbin/nginx}"
export -n NGINX
unset NGINX
modules_dir=$root/build/modules
for cmd in curl perl redis-server redis-cli; do
    command -v "$cmd" > /dev/null || bench_die "$cmd is not installed"
done
[ "$(head -1 "$modules_dir/.target" 2> /dev/null)" = "$nginx" ] \
    || bench_die "$modules_dir holds no modules built for $nginx: run NGINX=$nginx make"

dir=$(mktemp -d /tmp/edge-bench-mem.XXXXXX)
chmod 755 "$dir"

cleanup() {
    local rc=$? p
    trap - EXIT INT TERM HUP
    trap '' INT TERM HUP
    for p in "$dir"/*/; do
        [ -d "$p/conf" ] && nginx_stop "${p%/}"
    done
    redis_stop "$dir/redis"
    rm -rf "$dir"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

mkdir -p "$dir/modules" "$dir/backend/conf" "$dir/backend/html" "$dir/front/conf" "$dir/redis"
cp "$modules_dir"/*.so "$dir/modules/"
export EDGE_MODULES_DIR=$dir/modules EDGE_BACKEND_PORT EDGE_REDIS_PORT EDGE_REDIS_SOCKET
EDGE_BACKEND_PORT=$(free_port)
EDGE_REDIS_PORT=$(free_port)
EDGE_REDIS_SOCKET=$dir/redis/redis.sock
make_bodies "$dir/backend/html"

redis-server --bind 127.0.0.1 --port "$EDGE_REDIS_PORT" \
    --daemonize yes --pidfile "$dir/redis/redis.pid" \
    --logfile "$dir/redis/redis.log" --dir "$dir/redis" \
    --save '' --appendonly no > /dev/null \
    || bench_die "redis-server did not start"
rcli() { redis-cli -h 127.0.0.1 -p "$EDGE_REDIS_PORT" "$@"; }
wait_for 10 rcli ping > /dev/null || bench_die "redis does not answer"

EDGE_PREFIX=$dir/backend render_conf "$bench/backend.conf" "" "$dir/backend/conf/nginx.conf"
nginx_start "$dir/backend" || bench_die "the backend did not start"
front_port=$(free_port)
EDGE_FRONT_PORT=$front_port EDGE_PREFIX=$dir/front \
    render_conf "$bench/front.conf" "$bench/cache-memory.conf" "$dir/front/conf/nginx.conf"
nginx_start "$dir/front" || bench_die "the front nginx did not start"
wait_for 10 http_ok "http://127.0.0.1:$EDGE_BACKEND_PORT/1k" || bench_die "the backend does not answer"

# the only key of ZONE in Redis
zone_key() { rcli --scan --pattern "$1:*" | head -1; }
has_key() { [ -n "$(zone_key "$1")" ]; }

# show KEY: the key text and the headers stored in the entry
show() {
    rcli --raw get "$1" | perl -e '
        local $/; my $e = <STDIN>;
        my ($k, $vs, $vv, $t, $h) = unpack "N5", substr($e, 56, 20);
        print "    key text: ", substr($e, 88, $k), "\n";
        print map { "    $_\n" } split /\r\n/, substr($e, 88 + $k + $vs + $vv + $t, $h);'
}

# parts KEY: "fixed key vary+tags headers body" byte counts of an entry
# (the lengths at offsets 56-79 of its fixed header, ngx_http_cache_entry.h)
parts() {
    rcli --raw get "$1" | perl -e '
        local $/; my $e = <STDIN>;
        my ($k, $vs, $vv, $t, $h, $b) = unpack "N6", substr($e, 56, 24);
        print join(" ", 88, $k, $vs + $vv + $t, $h, $b), "\n";'
}

line='%-10s %-9s %7s %8s %13s   %6s %4s %10s %7s %7s\n'
# shellcheck disable=SC2059
printf "$line" body compress "body B" "entry B" "MEMORY USAGE" fixed key vary+tags headers "body"
shown=
for body in 1k 100k; do
    for zone in gz raw; do
        rcli flushall > /dev/null
        # a URL and Host as a site's API would have; the backend answers
        # any path under /1k and /100k with the same body
        code=$(curl -s -o /dev/null -w '%{http_code}' -m 5 -H 'Host: api.example.com' \
                 "http://127.0.0.1:$front_port/$zone/$body/v1/products?page=1&per_page=4")
        [ "$code" = 200 ] || bench_die "/$zone/$body answered $code"
        # the store is sent after the response: poll for it
        wait_for 10 has_key "$zone" || bench_die "nothing stored for /$zone/$body"
        key=$(zone_key "$zone")
        # shellcheck disable=SC2059,SC2046
        printf "$line" "$body JSON" \
            "$([ $zone = gz ] && echo on || echo off)" \
            "$(stat -c %s "$dir/backend/html/body-$body.json")" \
            "$(rcli strlen "$key")" "$(rcli memory usage "$key" samples 0)" \
            $(parts "$key")
        [ "$body" != 1k ] || shown+="$zone ($key):"$'\n'"$(show "$key")"$'\n'
    done
done
echo
echo "$(rcli --version); the 1 KB entries, compressed (gz) and not (raw):"
printf '%s' "$shown"
