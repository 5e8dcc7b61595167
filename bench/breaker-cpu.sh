#!/usr/bin/env bash
# CPU time per request of the nginx worker, user and system apart, for
# each scenario of a bench/run.sh set: the hot path's cost on a machine too
# busy for req/s ratios.
#
#   bench/breaker-cpu.sh                      # bench/breaker, 3 rounds, ~3 min
#   CPU_ROUNDS=5 BENCH_ONLY=12 bench/breaker-cpu.sh
#
# Per scenario and round: the front nginx of bench/run.sh (front.conf + the
# scenario, 1 worker, the same backend), wrk -t1 -c50 for 2 s (warm-up),
# then for CPU_SECONDS (default 8) while the worker's utime and stime
# (/proc/PID/stat) are read before and after.  Rounds start at a different
# scenario each.  It prints the medians of req/s, user µs, system µs per
# request, the user time over the baseline's, and "ratio": the baseline's
# user + system time divided by the scenario's user time + the BASELINE's
# system time.
#
# Why: the system time per request (the sockets, about 60 % of the
# worker's) depends on how many requests each wake-up of the worker finds,
# which depends on what else runs on the cores, and it swings by more than
# the module costs; the user time is the worker's own work and holds
# within a few percent from run to run.  The module makes no system call
# on the hot path (its clock reads are vDSO), so its cost is in the user
# time, and "ratio" is what req/s would show if the worker were the
# bottleneck and the kernel's share the same.  Check that assumption with
# the system column.
#
# Environment: BENCH_SCENARIOS (default bench/breaker), BENCH_ONLY (as
# bench/run.sh; the baseline 00-proxy always runs), CPU_ROUNDS=3,
# CPU_SECONDS=8, NGINX.  All on 127.0.0.1, stopped on exit or Ctrl-C.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bench=$root/bench
# shellcheck source=bench/lib.sh
. "$bench/lib.sh"

nginx=$(edge_nginx_bin) || bench_die "no nginx binary at ${NGINX:-/usr/sbin/nginx}"
export -n NGINX
unset NGINX
static=
edge_nginx_static "$nginx" && static=1
modules_dir=$root/build/modules
scenario_dir=${BENCH_SCENARIOS:-$bench/breaker}
only=${BENCH_ONLY:-}
rounds=${CPU_ROUNDS:-3}
seconds=${CPU_SECONDS:-8}
baseline=00-proxy

[[ $rounds =~ ^[1-9][0-9]*$ ]] || bench_die "CPU_ROUNDS must be a whole number >= 1"
[[ $seconds =~ ^[1-9][0-9]*$ ]] || bench_die "CPU_SECONDS must be a whole number >= 1"
for cmd in wrk curl perl awk; do
    command -v "$cmd" > /dev/null || bench_die "$cmd is not installed"
done
[ -f "$scenario_dir/$baseline.conf" ] || bench_die "no $scenario_dir/$baseline.conf"
if [ -z "$static" ]; then
    [ "$(head -1 "$modules_dir/.target" 2> /dev/null)" = "$nginx" ] \
        || bench_die "$modules_dir holds no modules built for $nginx: run make"
fi

dir=$(mktemp -d /tmp/edge-cpu.XXXXXX)
chmod 755 "$dir"
bg_pid=""

cleanup() {
    local rc=$? p
    trap - EXIT INT TERM HUP
    trap '' INT TERM HUP
    if [ -n "$bg_pid" ]; then
        kill -TERM "$bg_pid" 2> /dev/null || true
        wait "$bg_pid" 2> /dev/null || true
    fi
    for p in "$dir"/*/; do
        [ -d "$p/conf" ] && nginx_stop "${p%/}"
    done
    rm -rf "$dir"
    [ "$rc" = 0 ] || bench_say "stopped (status $rc), cleaned up"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# run_bounded SECONDS OUTPUT COMMAND...: as in bench/run.sh
run_bounded() {
    local limit=$1 out=$2 rc=0; shift 2
    timeout --foreground -k 5 "$limit" "$@" > "$out" 2>&1 &
    bg_pid=$!
    wait "$bg_pid" || rc=$?
    bg_pid=""
    return "$rc"
}

mkdir -p "$dir/modules"
cp "$modules_dir"/*.so "$dir/modules/" 2> /dev/null || true
export EDGE_MODULES_DIR=$dir/modules EDGE_STATIC_MODULES=$static EDGE_BACKEND_PORT
EDGE_BACKEND_PORT=$(free_port)

mkdir -p "$dir/backend/conf" "$dir/backend/html"
make_bodies "$dir/backend/html"
EDGE_PREFIX=$dir/backend render_conf "$bench/backend.conf" "" "$dir/backend/conf/nginx.conf"
nginx_start "$dir/backend" || bench_die "the backend did not start"
wait_for 10 http_ok "http://127.0.0.1:$EDGE_BACKEND_PORT/" || bench_die "the backend does not answer"

scenarios=()
for f in "$scenario_dir"/*.conf; do
    id=$(basename "$f" .conf)
    if [ "$id" = "$baseline" ] || [ -z "$only" ] || [[ $id =~ $only ]]; then
        scenarios+=("$f")
    fi
done

# user and system ticks of one process, "utime stime"
ticks() {
    sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12, $13 }'
}

# one line per measurement: "id round rps user_us sys_us"
raw=$dir/raw.txt
: > "$raw"
hz=$(getconf CLK_TCK)

measure() {
    local file=$1 round=$2 id prefix port path url worker u0 s0 u1 s1 parsed n rps
    id=$(basename "$file" .conf)
    prefix=$dir/$id-$round
    port=$(free_port)
    path=$(scenario_opt "$file" path)
    url=http://127.0.0.1:$port${path:-/}
    mkdir -p "$prefix/conf"
    EDGE_FRONT_PORT=$port EDGE_PREFIX=$prefix \
        render_conf "$bench/front.conf" "$file" "$prefix/conf/nginx.conf"
    if ! nginx_start "$prefix" || ! wait_for 10 http_ok "$url"; then
        bench_say "$id: did not start or does not answer 200 on $url"
        nginx_stop "$prefix"
        return
    fi
    worker=$(pgrep -P "$(cat "$prefix/logs/nginx.pid")" | head -1)
    run_bounded 40 "$prefix/warmup.txt" wrk -t1 -c50 -d2s "$url" || true
    read -r u0 s0 < <(ticks "$worker")
    if ! run_bounded $((seconds + 30)) "$prefix/wrk.txt" wrk -t1 -c50 -d"${seconds}s" "$url"; then
        bench_say "$id: wrk failed"
        nginx_stop "$prefix"
        return
    fi
    read -r u1 s1 < <(ticks "$worker")
    nginx_stop "$prefix"
    parsed=$(parse_wrk "$prefix/wrk.txt")
    rps=${parsed%% *}
    n=$(echo "$parsed" | cut -d' ' -f5)
    if ! [[ $n =~ ^[0-9]+$ ]] || [ "$n" = 0 ]; then
        bench_say "$id: no requests"
        return
    fi
    awk -v id="$id" -v r="$round" -v rps="$rps" -v n="$n" -v hz="$hz" \
        -v u="$((u1 - u0))" -v s="$((s1 - s0))" \
        'BEGIN { printf "%s %d %s %.3f %.3f\n", id, r, rps, u * 1e6 / hz / n, s * 1e6 / hz / n }' >> "$raw"
    bench_say "$id (round $round): $rps req/s, user $(tail -1 "$raw" | cut -d' ' -f4) us, system $(tail -1 "$raw" | cut -d' ' -f5) us per request"
}

count=${#scenarios[@]}
for round in $(seq 1 "$rounds"); do
    for i in $(seq 0 $((count - 1))); do
        measure "${scenarios[$(((i + round - 1) % count))]}" "$round"
    done
done

echo
awk -v base="$baseline" '
    function median(list,   v, n, i, j, t) {
        n = split(list, v, " ")
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
        return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    }
    !($1 in seen) { seen[$1] = 1; order[++k] = $1 }
    { rps[$1] = rps[$1] " " $3; us[$1] = us[$1] " " $4; sy[$1] = sy[$1] " " $5 }
    END {
        printf "%-24s %9s %9s %9s %10s %7s\n", "scenario", "req/s", "user us", "sys us", "extra user", "ratio"
        bu = median(us[base]); bs = median(sy[base])
        for (i = 1; i <= k; i++) {
            id = order[i]; name = id; sub(/^[0-9]+-/, "", name)
            u = median(us[id])
            printf "%-24s %9.0f %9.2f %9.2f %+10.2f %7.3f\n", name, median(rps[id]), u, median(sy[id]),
                   u - bu, (bu + bs) / (u + bs)
        }
    }' "$raw"
