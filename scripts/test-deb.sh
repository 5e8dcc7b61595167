#!/usr/bin/env bash
# Tests the Debian packages of build/deb/ (`make test-deb`, after
# `make deb`), as root, and leaves the machine as it found it:
#
#   1. installs the four packages with dpkg (their postinst enables each
#      module the Debian way: /etc/nginx/modules-enabled/50-mod-http-NAME.conf
#      -> /usr/share/nginx/modules-available/mod-http-NAME.conf);
#   2. runs /usr/sbin/nginx -t, then nginx itself, on a private prefix and
#      configuration that include those modules-enabled files, on a free
#      loopback port (never the system nginx service), and sends requests
#      through the rate limiter and the metrics endpoint;
#   3. purges the packages (dpkg --purge) and checks that nothing of them is
#      left: files, modules-enabled links, dpkg status.
#
# Prints "ok N - ..." lines; exits non-zero on the first failure.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=lib.sh
. "$root/scripts/lib.sh"

modules="ratelimit metrics cache breaker"
nginx=/usr/sbin/nginx
n=0
ok()   { n=$((n + 1)); echo "ok $n - $*"; }
fail() { echo "not ok $((n + 1)) - $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "run as root (it installs and removes packages)"
[ -x "$nginx" ] || fail "no $nginx (apt-get install nginx-core)"
unset NGINX   # nginx reads a variable of that name itself

debs=()
pkgs=()
for m in $modules; do
    pkg=libnginx-mod-http-$m
    f=$(ls "$root"/build/deb/${pkg}_*.deb 2> /dev/null | head -1)
    [ -n "$f" ] || fail "no build/deb/${pkg}_*.deb: run make deb"
    if dpkg-query -W -f='${Status}' "$pkg" 2> /dev/null | grep -qv 'not-installed'; then
        fail "$pkg is already on this machine ($(dpkg-query -W -f='${Status}' "$pkg")): not touching it"
    fi
    debs+=("$f")
    pkgs+=("$pkg")
done

dir=$(mktemp -d /tmp/edge-test-deb.XXXXXX)
chmod 755 "$dir"
created_policy=
installed=

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    edge_nginx_stop "$dir" "test-deb: nginx"
    if [ -n "$installed" ]; then
        dpkg --purge "${pkgs[@]}" > "$dir/purge.log" 2>&1 || cat "$dir/purge.log" >&2
    fi
    [ -n "$created_policy" ] && rm -f /usr/sbin/policy-rc.d
    rm -rf "$dir"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# the packages' triggers ask for an nginx reload: the system's nginx
# service is not ours to reload
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    created_policy=1
fi


# --- 1. install --------------------------------------------------------------

installed=1
dpkg -i "${debs[@]}" > "$dir/install.log" 2>&1 || {
    cat "$dir/install.log" >&2
    fail "dpkg -i ${debs[*]##*/}"
}
ok "dpkg -i ${pkgs[*]}"

for m in $modules; do
    link=/etc/nginx/modules-enabled/50-mod-http-$m.conf
    conf=/usr/share/nginx/modules-available/mod-http-$m.conf
    [ "$(readlink "$link")" = "$conf" ] || fail "$link does not point to $conf"
    grep -qx "load_module modules/ngx_http_${m}_module.so;" "$conf" \
        || fail "$conf does not load ngx_http_${m}_module.so"
    [ -f "/usr/lib/nginx/modules/ngx_http_${m}_module.so" ] \
        || fail "no /usr/lib/nginx/modules/ngx_http_${m}_module.so"
done
ok "each module enabled the Debian way (modules-enabled -> modules-available)"


# --- 2. nginx -t, and requests through the modules ------------------------------

port=$(free_port)
mkdir -p "$dir/conf" "$dir/logs" "$dir/html"
echo ok > "$dir/html/t"
{
    for m in $modules; do
        echo "include /etc/nginx/modules-enabled/50-mod-http-$m.conf;"
    done
    cat <<CONF
worker_processes 1;
pid $dir/logs/nginx.pid;
error_log $dir/logs/error.log info;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path $dir/client_body_temp;
    proxy_temp_path $dir/proxy_temp;
    fastcgi_temp_path $dir/fastcgi_temp;
    uwsgi_temp_path $dir/uwsgi_temp;
    scgi_temp_path $dir/scgi_temp;

    ratelimit_zone \$binary_remote_addr zone=deb:1m rate=1r/m;
    metrics_zone 1m;

    server {
        listen 127.0.0.1:$port;
        location = /t {
            ratelimit zone=deb;
            root $dir/html;
        }
        location = /metrics { metrics; }
    }
}
CONF
} > "$dir/conf/nginx.conf"

"$nginx" -e "$dir/logs/error.log" -c "$dir/conf/nginx.conf" -t > "$dir/t.log" 2>&1 || {
    cat "$dir/t.log" "$dir/logs/error.log" >&2
    fail "nginx -t with the packaged modules"
}
ok "nginx -t: the configuration with ratelimit_zone, ratelimit and metrics is valid"

"$nginx" -e "$dir/logs/error.log" -c "$dir/conf/nginx.conf" || {
    cat "$dir/logs/error.log" >&2
    fail "nginx did not start"
}
wait_for 10 test -s "$dir/logs/nginx.pid" || fail "nginx wrote no pid file"
wait_for 10 curl -sf -o /dev/null "http://127.0.0.1:$port/metrics" \
    || fail "nginx does not answer on 127.0.0.1:$port"

headers=$(curl -s -D - -o /dev/null "http://127.0.0.1:$port/t")
[[ $headers == "HTTP/1.1 200"* ]] || fail "first request: not 200: $headers"
grep -qi '^RateLimit-Policy: "deb";q=1;w=60' <<< "$headers" \
    || fail "first request: no RateLimit-Policy header: $headers"
ok "a request through the rate limiter passes, with its RateLimit headers"

status=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/t")
[ "$status" = 429 ] || fail "second request within the minute: $status, not 429"
ok "the second request within the minute is refused (429)"

body=$(curl -s "http://127.0.0.1:$port/metrics")
grep -q '^nginx_ratelimit_decisions_total{zone="deb",result="passed"} 1$' <<< "$body" \
    || fail "metrics: no passed decision counted: $body"
ok "the metrics endpoint counts the rate limiter's decision"

edge_nginx_stop "$dir" "test-deb: nginx"
! grep -E '\[(alert|crit|emerg)\]' "$dir/logs/error.log" \
    || fail "alerts in the error log"
ok "nginx stopped, no alert in its log"


# --- 3. purge, no leftovers -------------------------------------------------------

dpkg --purge "${pkgs[@]}" > "$dir/purge.log" 2>&1 || {
    cat "$dir/purge.log" >&2
    fail "dpkg --purge"
}
installed=
for m in $modules; do
    pkg=libnginx-mod-http-$m
    if dpkg-query -W -f='${Status}' "$pkg" 2> /dev/null | grep -qv 'not-installed'; then
        fail "$pkg is still known to dpkg: $(dpkg-query -W -f='${Status}' "$pkg")"
    fi
    for f in "/usr/lib/nginx/modules/ngx_http_${m}_module.so" \
             "/usr/share/nginx/modules-available/mod-http-$m.conf" \
             /etc/nginx/modules-enabled/*mod-http-"$m".conf*; do
        [ ! -e "$f" ] && [ ! -L "$f" ] || fail "left behind: $f"
    done
done
ok "dpkg --purge removes the packages, their files and their modules-enabled links"
echo "1..$n"
