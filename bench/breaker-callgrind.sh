#!/usr/bin/env bash
# Instructions per request of each scenario of a bench/run.sh set, counted
# by valgrind's callgrind: the hot path's cost without the scheduling
# noise of a shared machine (req/s ratios on a box with a load average of
# 4 wander by tens of percent; instruction counts do not).
#
#   bench/breaker-callgrind.sh                     # bench/breaker, ~2 min
#   BENCH_ONLY=12 bench/breaker-callgrind.sh       # and the baseline
#   BENCH_SCENARIOS=bench/scenarios bench/breaker-callgrind.sh
#
# Per scenario: the front nginx of bench/run.sh (front.conf + the scenario,
# the same backend), in one process (master_process off) under
# `valgrind --tool=callgrind`; a warm-up (wrk -c4, 2 s), counters zeroed,
# wrk -t1 -c4 for CALLGRIND_SECONDS (default 5), counters dumped.  It
# prints the instructions (Ir) per request completed, the ratio of the
# baseline's count to the scenario's (1.00: no extra work; 0.98: 2 % more
# instructions), and the instructions per request spent in the functions
# of the edge modules (ngx_http_breaker*, ngx_edge_*, self cost), with
# their top five.
#
# Instructions are not time: an atomic read-modify-write costs tens of
# cycles, a cache miss hundreds, and neither shows here beyond one
# instruction.  Read it with the CPU-time column of bench/run.sh.
#
# With CALLGRIND_ROUNDS=N the scenarios run N times, interleaved, and the
# table shows each one's median round, with the range of its Ir per
# request: the count outside the modules moves by tens of instructions
# from run to run (how many requests a turn of the event loop serves
# depends on the machine's load), the modules' own count by one or two.
#
# Environment: BENCH_SCENARIOS (default bench/breaker), BENCH_ONLY (as
# bench/run.sh: the baseline 00-proxy always runs), CALLGRIND_SECONDS=5,
# CALLGRIND_ROUNDS=1,
# CALLGRIND_KEEP=1 (keep the temporary directory: callgrind_annotate its
# */callgrind.out.1 for the whole profile, one directory per scenario
# and round), NGINX.  Everything runs on 127.0.0.1 and is stopped on exit or Ctrl-C.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bench=$root/bench
# shellcheck source=bench/lib.sh
. "$bench/lib.sh"

nginx=$(edge_nginx_bin) || bench_die "no nginx binary at ${NGINX:-/usr/sbin/nginx}"
export -n NGINX
unset NGINX
edge_nginx_static "$nginx" && bench_die "a static nginx build: use the dynamic modules"
modules_dir=$root/build/modules
scenario_dir=${BENCH_SCENARIOS:-$bench/breaker}
only=${BENCH_ONLY:-}
seconds=${CALLGRIND_SECONDS:-5}
rounds=${CALLGRIND_ROUNDS:-1}
baseline=00-proxy

[[ $seconds =~ ^[1-9][0-9]*$ ]] || bench_die "CALLGRIND_SECONDS must be a whole number >= 1"
[[ $rounds =~ ^[1-9][0-9]?$ ]] || bench_die "CALLGRIND_ROUNDS must be a whole number from 1 to 99"
for cmd in valgrind callgrind_control callgrind_annotate wrk curl perl; do
    command -v "$cmd" > /dev/null || bench_die "$cmd is not installed"
done
[ -f "$scenario_dir/$baseline.conf" ] || bench_die "no $scenario_dir/$baseline.conf"
[ "$(head -1 "$modules_dir/.target" 2> /dev/null)" = "$nginx" ] \
    || bench_die "$modules_dir holds no modules built for $nginx: run make"

dir=$(mktemp -d /tmp/edge-callgrind.XXXXXX)
chmod 755 "$dir"
vg_pid=""

cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    trap '' INT TERM HUP
    if [ -n "$vg_pid" ]; then
        kill -TERM "$vg_pid" 2> /dev/null || true
        wait "$vg_pid" 2> /dev/null || true
    fi
    nginx_stop "$dir/backend"
    if [ -n "${CALLGRIND_KEEP:-}" ]; then
        bench_say "kept $dir (callgrind.out.1 and annotate.txt per scenario)"
    else
        rm -rf "$dir"
    fi
    [ "$rc" = 0 ] || bench_say "stopped (status $rc), cleaned up"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

mkdir -p "$dir/modules"
cp "$modules_dir"/*.so "$dir/modules/"
export EDGE_MODULES_DIR=$dir/modules EDGE_STATIC_MODULES='' EDGE_BACKEND_PORT
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

# one line per scenario: "id requests Ir module_Ir top-functions"
raw=$dir/raw.txt
: > "$raw"

measure() {
    local file=$1 round=$2 id prefix port path url out n total edge top
    id=$(basename "$file" .conf)
    prefix=$dir/$id.$round
    port=$(free_port)
    path=$(scenario_opt "$file" path)
    url=http://127.0.0.1:$port${path:-/}
    mkdir -p "$prefix/conf" "$prefix/logs" "$prefix/temp"
    EDGE_FRONT_PORT=$port EDGE_PREFIX=$prefix \
        render_conf "$bench/front.conf" "$file" "$prefix/conf/nginx.conf"
    bench_say "== $id (round $round): $(sed -n '1s/^#[[:space:]]*//p' "$file")"
    out=$prefix/callgrind.out
    valgrind --tool=callgrind --callgrind-out-file="$out" --log-file="$prefix/valgrind.log" \
        "$nginx" -p "$prefix/" -c conf/nginx.conf -g 'daemon off; master_process off;' \
        2> "$prefix/stderr.log" &
    vg_pid=$!
    if ! wait_for 60 http_ok "$url"; then
        bench_say "$id: $url does not answer 200 under valgrind"
        cat "$prefix/stderr.log" "$prefix/logs/error.log" 2> /dev/null | tail -5 >&2
        kill -TERM "$vg_pid" 2> /dev/null || true; wait "$vg_pid" 2> /dev/null || true; vg_pid=""
        echo "$id FAILED" >> "$raw"
        return
    fi
    timeout -k 5 $((seconds + 60)) wrk -t1 -c4 -d2s "$url" > /dev/null 2>&1 || true
    callgrind_control -z "$vg_pid" > /dev/null
    timeout -k 5 $((seconds + 60)) wrk -t1 -c4 -d"${seconds}s" --latency "$url" > "$prefix/wrk.txt" 2>&1 || true
    callgrind_control -d "$vg_pid" > /dev/null
    kill -TERM "$vg_pid" 2> /dev/null || true
    wait "$vg_pid" 2> /dev/null || true
    vg_pid=""
    n=$(parse_wrk "$prefix/wrk.txt" | cut -d' ' -f5)
    # the dump made by callgrind_control: <out>.1 (the final one, at exit,
    # is <out> itself)
    if [ ! -s "$out.1" ] || ! [[ $n =~ ^[0-9]+$ ]] || [ "$n" = 0 ]; then
        bench_say "$id: no dump or no requests (wrk: $(tr '\n' ' ' < "$prefix/wrk.txt" | cut -c1-200))"
        echo "$id FAILED" >> "$raw"
        return
    fi
    total=$(sed -n 's/^summary: *//p; s/^totals: *//p' "$out.1" | head -1 | awk '{ print $1 }')
    callgrind_annotate --inclusive=no --auto=no --threshold=100 "$out.1" 2> /dev/null \
        | tr -d ',' > "$prefix/annotate.txt"
    # self cost of the edge modules' functions, from the lines
    # "<Ir> (<pct>%)  <file>:<function> [<object>]"; inlined helpers of
    # common/*.h show under the function they are inlined in
    awk -v n="$n" '
        match($0, /:(ngx_http_breaker|ngx_edge_)[A-Za-z0-9_]*/) {
            f = substr($0, RSTART + 1, RLENGTH - 1)
            cost[f] += $1; total += $1
            if (!(f in seen)) { seen[f] = 1; order[++k] = f }
        }
        END {
            printf "%d ", total
            for (i = 1; i <= k && i <= 5; i++)
                printf "%s%s=%.0f", (i > 1 ? "," : ""), order[i], cost[order[i]] / n
            if (k == 0) printf "-"
            print ""
        }' "$prefix/annotate.txt" > "$prefix/edge.txt"
    read -r edge top < "$prefix/edge.txt"
    echo "$id $n $total $edge ${top:--}" >> "$raw"
}

# rounds interleave the scenarios: a change of the machine's load (which
# changes how many requests each turn of the event loop serves, and so
# its cost per request) falls on all of them alike; the table shows each
# scenario's median round (of Ir per request)
for round in $(seq 1 "$rounds"); do
    for f in "${scenarios[@]}"; do
        measure "$f" "$round"
    done
done

echo
awk -v base="$baseline" '
    !($1 in seen) { seen[$1] = 1; order[++n] = $1 }
    $2 == "FAILED" { failed[$1] = 1; next }
    { k = ++runs[$1]; run_per[$1, k] = $3 / $2; run_line[$1, k] = $0 }
    END {
        # the median round of each scenario (the lower middle of an even
        # number), by Ir per request
        for (i = 1; i <= n; i++) {
            id = order[i]
            if (id in failed || !(id in runs)) { failed[id] = 1; continue }
            m = runs[id]
            for (a = 1; a <= m; a++) idx[a] = a
            for (a = 1; a <= m; a++)
                for (b = a + 1; b <= m; b++)
                    if (run_per[id, idx[b]] < run_per[id, idx[a]]) {
                        t = idx[a]; idx[a] = idx[b]; idx[b] = t
                    }
            split(run_line[id, idx[int((m + 1) / 2)]], f, " ")
            per[id] = f[3] / f[2]; edge[id] = f[4] / f[2]; top[id] = f[5]; reqs[id] = f[2]
            if (m > 1) {
                spread[id] = sprintf(" (%.0f..%.0f)", run_per[id, idx[1]], run_per[id, idx[m]])
            }
        }

        printf "%-24s %9s %11s %9s %7s %11s  %s\n", "scenario", "requests", "Ir/request", "extra Ir", "ratio", "edge Ir/req", "top edge functions, Ir/request (self)"
        for (i = 1; i <= n; i++) {
            id = order[i]; name = id; sub(/^[0-9]+-/, "", name)
            if (id in failed) { printf "%-24s FAILED\n", name; continue }
            r = (base in per) ? sprintf("%.3f", per[base] / per[id]) : "-"
            x = (base in per) ? sprintf("%+.0f", per[id] - per[base]) : "-"
            printf "%-24s %9d %11.0f %9s %7s %11.0f  %s%s\n", name, reqs[id], per[id], x, r, edge[id], top[id], spread[id]
        }
    }' "$raw"
