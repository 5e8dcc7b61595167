#!/usr/bin/env bash
# Scrape time and size of the metrics endpoint with many series.
#
#   bench/metrics-scrape.sh              # 244, 2500 and 10000 label values
#   IDS="1000" SCRAPES=50 bench/metrics-scrape.sh
#   IDS=50000 ZONE=256m SCRAPES=5 bench/metrics-scrape.sh
#   METRICS_MODULE=/path/to/ngx_http_metrics_module.so bench/metrics-scrape.sh
#
# For each count N it starts an nginx (the distro's /usr/sbin/nginx, 2
# workers, build/modules/ngx_http_metrics_module.so) whose location counts
# every request with one variable label, id=$arg_id (max=N), sends N
# requests with distinct ids (pipelined on one connection), checks the
# expected series are there, then times SCRAPES scrapes with curl, plain
# and gzip, and prints the median and 90th percentile of the time to the
# last byte and the body size.  One id makes 4 label sets: a counter
# series and 3 histograms of 13 to 14 samples each, 41 samples in all
# (244 ids: about 10,000 samples; 2500 ids: 10,000 label sets; 10000 ids:
# 10,000 request counters).
#
# Memory: the workers' private memory (RssAnon in /proc/PID/status, which
# leaves out the shared stats zone) before the scrapes, and its peak while
# one plain and one gzip scrape run (sampled every 10 ms), in MB: a scrape
# is streamed in bounded buffers, so the peak should not grow with the
# number of series.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
nginx=${NGINX:-/usr/sbin/nginx}
ids_list=${IDS:-"244 2500 10000"}
scrapes=${SCRAPES:-30}
zone=${ZONE:-64m}
module=${METRICS_MODULE:-$root/build/modules/ngx_http_metrics_module.so}

[ -f "$module" ] || { echo "metrics-scrape: build first (make)" >&2; exit 1; }
command -v curl > /dev/null || { echo "metrics-scrape: needs curl" >&2; exit 1; }

dir=$(mktemp -d /tmp/edge-scrape.XXXXXX)
cleanup() {
    if [ -s "$dir/logs/nginx.pid" ]; then
        kill -QUIT "$(cat "$dir/logs/nginx.pid")" 2> /dev/null || true
        for _ in $(seq 50); do
            [ -e "$dir/logs/nginx.pid" ] || break
            sleep 0.1
        done
    fi
    rm -rf "$dir"
}
trap cleanup EXIT

port=$(perl -MIO::Socket::INET -e 'print IO::Socket::INET->new(
    LocalAddr => "127.0.0.1", LocalPort => 0, Listen => 1)->sockport')

stats() {   # stats FILE: median and p90 of the first column
    sort -n "$1" | awk '{ v[NR] = $1 } END {
        m = v[int((NR + 1) / 2)]; p = v[int(NR * 0.9 + 0.5)];
        printf "%.2f %.2f", m * 1000, p * 1000 }'
}

# the largest RssAnon of the workers, in kB
rss_anon() {
    local max=0 pid v
    for pid in $(pgrep -P "$(cat "$dir/logs/nginx.pid")"); do
        v=$(awk '/^RssAnon:/ { print $2 }' "/proc/$pid/status" 2> /dev/null)
        [ -n "$v" ] && [ "$v" -gt "$max" ] && max=$v
    done
    echo "$max"
}

# the peak of rss_anon while "$@" runs
rss_peak() {
    local peak=0 v
    "$@" &
    local job=$!
    while kill -0 "$job" 2> /dev/null; do
        v=$(rss_anon)
        [ "$v" -gt "$peak" ] && peak=$v
        sleep 0.01
    done
    wait "$job"
    echo "$peak"
}

printf '%-7s %-9s %-9s %10s %10s %10s %12s %16s\n' ids series samples \
    "p50 ms" "p90 ms" bytes "gzip p50 ms/bytes" "RssAnon MB"

for ids in $ids_list; do
    mkdir -p "$dir/logs" "$dir/conf"
    cat > "$dir/conf/nginx.conf" <<CONF
load_module $module;
worker_processes 2;
error_log logs/error.log warn;
pid logs/nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    keepalive_requests 1000000;
    metrics_zone $zone;
    metrics_label id \$arg_id max=$ids;
    server {
        listen 127.0.0.1:$port;
        location = /metrics { metrics; }
        location / { metrics_location root; return 200 "ok\n"; }
    }
}
CONF
    "$nginx" -p "$dir/" -c conf/nginx.conf
    for _ in $(seq 50); do
        [ -s "$dir/logs/nginx.pid" ] && break
        sleep 0.1
    done

    # N requests with distinct ids, pipelined on one keep-alive connection
    perl -MIO::Socket::INET -e '
        my ($port, $n) = @ARGV;
        my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1",
                                      PeerPort => $port) or die $!;
        my $req = join "", map { "GET /?id=$_ HTTP/1.1\r\nHost: x\r\n\r\n" } 1 .. $n;
        $req .= "GET /?id=last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        print $s $req;
        1 while <$s>;' "$port" "$ids"

    curl -s "http://127.0.0.1:$port/metrics" > "$dir/body"
    series=$(grep -c '^nginx_http_requests_total{' "$dir/body" || true)
    samples=$(grep -vc '^#' "$dir/body" || true)
    if [ "$series" -lt "$ids" ]; then
        echo "metrics-scrape: expected $ids request series, got $series" >&2
        exit 1
    fi

    rss0=$(rss_anon)
    peak=$(rss_peak curl -s -o /dev/null "http://127.0.0.1:$port/metrics")
    zpeak=$(rss_peak curl -s -o /dev/null -H 'Accept-Encoding: gzip' \
        "http://127.0.0.1:$port/metrics")
    [ "$zpeak" -gt "$peak" ] && peak=$zpeak

    : > "$dir/t"; : > "$dir/tz"
    for _ in $(seq "$scrapes"); do
        curl -s -o /dev/null -w '%{time_total} %{size_download}\n' \
            "http://127.0.0.1:$port/metrics" >> "$dir/t"
        curl -s -o /dev/null -H 'Accept-Encoding: gzip' \
            -w '%{time_total} %{size_download}\n' \
            "http://127.0.0.1:$port/metrics" >> "$dir/tz"
    done

    read -r p50 p90 <<< "$(stats "$dir/t")"
    read -r z50 _ <<< "$(stats "$dir/tz")"
    bytes=$(tail -1 "$dir/t" | cut -d' ' -f2)
    zbytes=$(tail -1 "$dir/tz" | cut -d' ' -f2)
    printf '%-7s %-9s %-9s %10s %10s %10s %12s %16s\n' "$ids" \
        "$((series * 4))" "$samples" "$p50" "$p90" "$bytes" "$z50/$zbytes" \
        "$((rss0 / 1024)) -> $((peak / 1024))"

    kill -QUIT "$(cat "$dir/logs/nginx.pid")"
    for _ in $(seq 50); do
        [ -e "$dir/logs/nginx.pid" ] || break
        sleep 0.1
    done
    rm -rf "$dir/logs" "$dir/conf"
done
