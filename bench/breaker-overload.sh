#!/usr/bin/env bash
# The breaker module's overload benchmarks: what a client sees when the
# app behind nginx goes wrong, with plain nginx, with nginx's max_fails,
# and with the module.  Open-loop load (bench/breaker/load.py: requests at
# a fixed rate, a client timeout), all on 127.0.0.1.
#
#   bench/breaker-overload.sh                 # the three scenarios, ~4 min
#   bench/breaker-overload.sh peers           # one of them
#   OVERLOAD_ONLY=plain bench/breaker-overload.sh   # only matching variants
#
# Scenarios (bench/breaker/overload/<scenario>-<n>-<variant>.conf, one
# nginx configuration per variant, run in file name order):
#
#   slow      an app with 8 workers answering in 5 ms turns slow (100 ms,
#             x20) after 5 s, under 300 req/s (3.75 times what it can
#             serve once slow): goodput and p99 of the admitted requests
#             while it is slow.
#   peers     three peers, the third answers 500 to everything, 500 req/s:
#             the share of client requests that fail, in the first 2 s
#             and after.
#   priority  an app with 4 workers x 20 ms (200 req/s) under 1000 req/s
#             of anonymous requests (5 times its capacity) and 40 req/s of
#             premium ones (X-Tier: premium): each class's success rate.
#
# Environment:
#   OVERLOAD_SECONDS=15   length of the overloaded part of each run (the
#                         slow app's slow phase, the peers' and the
#                         priority runs after their first seconds)
#   OVERLOAD_TIMEOUT=1    the client's timeout, seconds: an answer later
#                         than that is a failure
#   OVERLOAD_WORKERS=2    worker_processes of the nginx under test
#   OVERLOAD_ONLY=REGEX   only the variants whose file name matches
#   NGINX=/usr/sbin/nginx the nginx binary (build/modules built for it)
#
# A variant whose configuration the module does not accept yet (an
# unknown directive: the module is not built, or not that far) is shown as
# "n/a" with nginx's complaint.  Every process started (nginx by its pid
# file, the python apps, the load) has a time limit and is stopped on
# exit, failure or Ctrl-C; the temporary directory is removed.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bench=$root/bench
here=$bench/breaker/overload
# shellcheck source=bench/lib.sh
. "$bench/lib.sh"

nginx=$(edge_nginx_bin) || bench_die "no nginx binary at ${NGINX:-/usr/sbin/nginx}"
export -n NGINX
unset NGINX
static=
edge_nginx_static "$nginx" && static=1
modules_dir=$root/build/modules
seconds=${OVERLOAD_SECONDS:-15}
client_timeout=${OVERLOAD_TIMEOUT:-1}
workers=${OVERLOAD_WORKERS:-2}
only=${OVERLOAD_ONLY:-}
results=$bench/results/breaker-overload.md

if ! [[ $seconds =~ ^[0-9]+$ ]] || [ "$seconds" -lt 6 ]; then
    bench_die "OVERLOAD_SECONDS must be a whole number >= 6"
fi
[[ $client_timeout =~ ^[0-9]+(\.[0-9]+)?$ ]] || bench_die "OVERLOAD_TIMEOUT must be a number of seconds"
[[ $workers =~ ^[1-9][0-9]*$ ]] || bench_die "OVERLOAD_WORKERS must be a whole number >= 1"
for cmd in python3 curl perl awk timeout; do
    command -v "$cmd" > /dev/null || bench_die "$cmd is not installed"
done

all_scenarios=(slow peers priority)
if [ $# -gt 0 ]; then
    for s in "$@"; do
        [[ " ${all_scenarios[*]} " == *" $s "* ]] || bench_die "unknown scenario '$s' (${all_scenarios[*]})"
    done
    chosen_scenarios=("$@")
else
    chosen_scenarios=("${all_scenarios[@]}")
fi

# --- the temporary directory and the cleanup ----------------------------------

dir=$(mktemp -d /tmp/edge-overload.XXXXXX)
chmod 755 "$dir"
bg_pid=""           # the load (under timeout) being waited for
app_pids=()         # python apps

stop_apps() {
    local p
    for p in "${app_pids[@]}"; do
        kill -TERM "$p" 2> /dev/null || true
    done
    for p in "${app_pids[@]}"; do
        for _ in $(seq 1 30); do running "$p" || break; sleep 0.1; done
        if running "$p"; then kill -KILL "$p" 2> /dev/null || true; fi
        wait "$p" 2> /dev/null || true
    done
    app_pids=()
}

cleanup() {
    local rc=$? p
    trap - EXIT INT TERM HUP
    trap '' INT TERM HUP
    if [ -n "$bg_pid" ]; then
        kill -TERM "$bg_pid" 2> /dev/null || true
        wait "$bg_pid" 2> /dev/null || true
    fi
    stop_apps
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

mkdir -p "$dir/modules"
if [ -z "$static" ] && [ -d "$modules_dir" ]; then
    # a copy: a `make` meanwhile must not rewrite a loaded .so
    cp "$modules_dir"/*.so "$dir/modules/" 2> /dev/null || true
    [ "$(head -1 "$modules_dir/.target" 2> /dev/null)" = "$nginx" ] \
        || bench_say "warning: $modules_dir holds no modules built for $nginx: the module rows will fail"
fi
export EDGE_MODULES_DIR=$dir/modules EDGE_STATIC_MODULES=$static EDGE_WORKERS=$workers

# --- the apps -------------------------------------------------------------------

# start_app PORT WORKERS DELAY_MS: the python model of an app server
start_app() {
    python3 "$bench/breaker/app.py" --port "$1" --workers "$2" --delay-ms "$3" \
        --parent $$ --lifetime $((seconds + 120)) 2> "$dir/app-$1.log" &
    app_pids+=($!)
    wait_for 10 curl -sf -m 2 "http://127.0.0.1:$1/__app/stats" \
        || bench_die "the app on 127.0.0.1:$1 did not start: $(cat "$dir/app-$1.log")"
}

# start_peers: the peers scenario's three peers, one nginx
start_peers() {
    local prefix=$dir/peers-backend
    mkdir -p "$prefix/conf"
    EDGE_PREFIX=$prefix render_conf "$here/peers-backend.conf" "" "$prefix/conf/nginx.conf"
    nginx_start "$prefix" || bench_die "the peers did not start"
    wait_for 10 http_ok "http://127.0.0.1:$EDGE_APP_PORT/" \
        || bench_die "the peers do not answer on 127.0.0.1:$EDGE_APP_PORT"
}

# --- one variant ------------------------------------------------------------------

# the raw results: "variant-id label-with-underscores <load.py line>" per
# line, or "variant-id label n/a|FAILED why"
raw=$dir/raw.txt
: > "$raw"
failed=0

# run_load OUTPUT ARGS...: load.py with a hard time limit; a trapped signal
# interrupts the wait at once
run_load() {
    local out=$1 rc=0; shift
    timeout --foreground -k 5 $((seconds + 60)) \
        python3 "$bench/breaker/load.py" "$@" > "$out" 2> "$out.err" &
    bg_pid=$!
    wait "$bg_pid" || rc=$?
    bg_pid=""
    return "$rc"
}

# run_variant SCENARIO FILE LOAD_ARGS...: start the apps, the nginx of
# FILE, send the load (@APP_PORT@ in LOAD_ARGS is the app's port), record
# the results, stop everything
run_variant() {
    local scenario=$1 file=$2 id label prefix url why a args=(); shift 2
    id=$(basename "$file" .conf)
    # spaces as \037 (ASCII US) in the one-line-per-result raw file
    label=$(sed -n '1s/^#[[:space:]]*//p' "$file" | tr ' ' '\037')
    prefix=$dir/$id
    export EDGE_FRONT_PORT EDGE_APP_PORT EDGE_APP2_PORT EDGE_APP3_PORT
    EDGE_FRONT_PORT=$(free_port)
    EDGE_APP_PORT=$(free_port); EDGE_APP2_PORT=$(free_port); EDGE_APP3_PORT=$(free_port)
    url=http://127.0.0.1:$EDGE_FRONT_PORT/
    for a in "$@"; do args+=("${a//@APP_PORT@/$EDGE_APP_PORT}"); done

    echo
    bench_say "== $id: $(sed -n '1s/^#[[:space:]]*//p' "$file")"
    mkdir -p "$prefix/conf" "$prefix/logs" "$prefix/temp"
    EDGE_PREFIX=$prefix render_conf "$here/front.conf" "$file" "$prefix/conf/nginx.conf" \
        || { echo "$id $label FAILED bad-variant-file" >> "$raw"; failed=$((failed + 1)); return; }
    if ! "$nginx" -t -q -p "$prefix/" -c conf/nginx.conf > "$prefix/test.log" 2>&1; then
        why=$(grep -m1 -o 'emerg\] .*' "$prefix/test.log" \
              | sed 's/^emerg\] //; s/^[0-9]*#[0-9]*: //; s/ in \/.*//' || true)
        if grep -qE 'unknown directive|unknown "[^"]*" variable|invalid parameter|dlopen|cannot open shared object' "$prefix/test.log"; then
            bench_say "$id: not run, the module does not accept it yet: ${why:-see below}"
            echo "$id $label n/a $(printf '%s' "$why" | tr ' ' '\037')" >> "$raw"
        else
            bench_say "$id: nginx -t failed:"
            sed 's/^/    /' "$prefix/test.log" >&2
            echo "$id $label FAILED nginx-t" >> "$raw"; failed=$((failed + 1))
        fi
        return
    fi

    case $scenario in
        slow)     start_app "$EDGE_APP_PORT" 8 5 ;;
        priority) start_app "$EDGE_APP_PORT" 4 20 ;;
        peers)    start_peers ;;
    esac
    if ! nginx_start "$prefix"; then
        echo "$id $label FAILED nginx-did-not-start" >> "$raw"; failed=$((failed + 1))
        stop_apps; nginx_stop "$dir/peers-backend"; return
    fi
    # peers: round robin, one of three answers 200
    if ! wait_for 10 http_ok "$url"; then
        bench_say "$id: $url does not answer 200"
        tail -5 "$prefix/logs/error.log" >&2 || true
        echo "$id $label FAILED not-200" >> "$raw"; failed=$((failed + 1))
    elif ! run_load "$prefix/load.txt" --url "$url" --timeout "$client_timeout" "${args[@]}"; then
        bench_say "$id: the load failed:"
        sed 's/^/    /' "$prefix/load.txt.err" >&2
        echo "$id $label FAILED load-failed" >> "$raw"; failed=$((failed + 1))
    else
        sed 's/^/    /' "$prefix/load.txt.err"
        if [ "$scenario" != peers ]; then
            curl -s -m 2 "http://127.0.0.1:$EDGE_APP_PORT/__app/stats" > "$prefix/app.json" || true
            bench_say "$id: app: $(cat "$prefix/app.json")"
        else
            # the broken peer's requests, the warm-up check's included
            echo "$id $label broken-peer-requests $(wc -l < "$dir/peers-backend/logs/broken.log" 2> /dev/null || echo 0)" >> "$raw"
        fi
        while read -r line; do
            echo "$id $label $line" >> "$raw"
        done < "$prefix/load.txt"
        if grep -q 'exited on signal' "$prefix/logs/error.log" 2> /dev/null; then
            bench_say "$id: an nginx worker crashed during the run"
            echo "$id $label FAILED worker-crashed" >> "$raw"; failed=$((failed + 1))
        fi
    fi
    if grep -q '\[\(alert\|crit\|emerg\)\]' "$prefix/logs/error.log" 2> /dev/null; then
        bench_say "$id: alerts in its error log:"
        grep '\[\(alert\|crit\|emerg\)\]' "$prefix/logs/error.log" | head -5 | sed 's/^/    /' >&2
    fi
    nginx_stop "$prefix"
    stop_apps
    nginx_stop "$dir/peers-backend"
    rm -rf "$dir/peers-backend"
}

# --- the scenarios ------------------------------------------------------------------

variants() {
    local f
    for f in "$here/$1"-[0-9]*.conf; do
        [ -e "$f" ] || continue
        [ -z "$only" ] || [[ $(basename "$f" .conf) =~ $only ]] || continue
        echo "$f"
    done
}

scenario_slow() {
    local f
    for f in $(variants slow); do
        run_variant slow "$f" --duration $((5 + seconds)) --rate 300 --phase 5 --phase 10 \
            --at "5:http://127.0.0.1:@APP_PORT@/__app/set?delay_ms=100"
    done
}

scenario_peers() {
    local f
    for f in $(variants peers); do
        run_variant peers "$f" --duration $((2 + seconds)) --rate 500 --phase 2
    done
}

scenario_priority() {
    local f
    for f in $(variants priority); do
        run_variant priority "$f" --duration $((3 + seconds)) --phase 3 \
            --stream anonymous:1000:X-Tier=anonymous --stream premium:40:X-Tier=premium
    done
}

bench_say "scenarios: ${chosen_scenarios[*]}; ${seconds}s overloaded per run, client timeout ${client_timeout}s," \
          "nginx $workers worker(s); load average $(cut -d' ' -f1 /proc/loadavg)"
load_start=$(cut -d' ' -f1 /proc/loadavg)
for s in "${chosen_scenarios[@]}"; do
    "scenario_$s"
done

# --- the tables ---------------------------------------------------------------------

# table SCENARIO FORMAT (text|markdown)
table() {
    awk -v scenario="$1" -v fmt="$2" '
        function pct(a, b) { return b > 0 ? sprintf("%.1f", 100 * a / b) : "-" }
        function row(n, cells,   i, s) {
            if (fmt == "markdown") {
                s = "|"
                for (i = 1; i <= n; i++) s = s " " cells[i] " |"
                print s
            } else {
                s = sprintf("%-44s", cells[1])
                for (i = 2; i <= n; i++) s = s sprintf(" %12s", cells[i])
                print s
            }
        }
        function header(n, line,   c, i, s) {
            split(line, c, "|")
            row(n, c)
            if (fmt == "markdown") {
                s = "|---"
                for (i = 2; i <= n; i++) s = s "|---:"
                print s "|"
            }
        }
        BEGIN {
            if (scenario == "slow")
                header(9, "variant|normal ok %|normal p99 ms|5-10s goodput/s|5-10s p99 adm ms|10s- goodput/s|10s- p99 adm ms|10s- shed %|10s- failed %")
            else if (scenario == "peers")
                header(7, "variant|requests|failed % 0-2s|failed % after 2s|failed % all|p99 ok ms|to broken peer")
            else
                header(7, "variant|premium ok %|premium p99 ms|anonymous ok %|anonymous shed %|anonymous failed %|goodput/s")
        }
        index($1, scenario "-") != 1 { next }
        {
            label = $2; gsub(/\037/, " ", label)
            if (!($1 in seen)) { seen[$1] = 1; order[++n] = $1; lab[$1] = label }
            if ($3 == "broken-peer-requests") { broken[$1] = $4; next }
            if ($3 == "n/a" || $3 == "FAILED") {
                why = $4; gsub(/\037/, " ", why)
                if (length(why) > 70) why = substr(why, 1, 67) "..."
                notrun[$1] = $3 " " why; next
            }
            # id label stream phase seconds sent ok shed other timeout error unsent p50 p99 p99adm codes
            key = $1 SUBSEP $3 SUBSEP $4
            secs[key] = $5; sent[key] = $6; ok[key] = $7; shed[key] = $8
            bad[key] = $9 + $10 + $11 + $12; p99[key] = $14; p99a[key] = $15
        }
        END {
            for (i = 1; i <= n; i++) {
                id = order[i]; delete c; c[1] = lab[id]
                if (id in notrun) { c[2] = notrun[id]; row(2, c); continue }
                if (scenario == "slow") {
                    # normal 0-5 s; slow: the first 5 s (the switch), the rest
                    a = id SUBSEP "all" SUBSEP "0-5"; b = id SUBSEP "all" SUBSEP "5-10"
                    for (k in sent) { split(k, q, SUBSEP); if (q[1] == id && q[3] ~ /^10-/) e = k }
                    c[2] = pct(ok[a], sent[a]); c[3] = p99[a]
                    c[4] = sprintf("%.0f", ok[b] / secs[b]); c[5] = p99a[b]
                    c[6] = sprintf("%.0f", ok[e] / secs[e]); c[7] = p99a[e]
                    c[8] = pct(shed[e], sent[e]); c[9] = pct(bad[e], sent[e])
                    row(9, c)
                } else if (scenario == "peers") {
                    a = id SUBSEP "all" SUBSEP "0-2"; t = id SUBSEP "all" SUBSEP "all"
                    for (k in sent) { split(k, q, SUBSEP); if (q[1] == id && q[3] ~ /^2-/) b = k }
                    c[2] = sent[t]
                    c[3] = pct(shed[a] + bad[a], sent[a]); c[4] = pct(shed[b] + bad[b], sent[b])
                    c[5] = pct(shed[t] + bad[t], sent[t]); c[6] = p99[t]
                    c[7] = (id in broken) ? broken[id] : "-"
                    row(7, c)
                } else {
                    p = id SUBSEP "premium" SUBSEP "all"; a = id SUBSEP "anonymous" SUBSEP "all"
                    c[2] = pct(ok[p], sent[p]); c[3] = p99[p]
                    c[4] = pct(ok[a], sent[a]); c[5] = pct(shed[a], sent[a]); c[6] = pct(bad[a], sent[a])
                    c[7] = sprintf("%.0f", (ok[p] + ok[a]) / secs[p])
                    row(7, c)
                }
            }
        }' "$raw"
}

titles() {
    case $1 in
        slow)     echo "slow: 8 workers, 5 ms -> 100 ms at 5 s (80 req/s); 300 req/s open loop for $((5 + seconds)) s; adm = admitted (not shed; a timeout counts as infinite)" ;;
        peers)    echo "peers: 3 peers, the third answers 500; 500 req/s open loop for $((2 + seconds)) s; to broken peer = upstream requests it got, retries included" ;;
        priority) echo "priority: 4 workers x 20 ms (200 req/s); anonymous 1000 req/s + premium 40 req/s, $((3 + seconds)) s" ;;
    esac
}

echo
for s in "${chosen_scenarios[@]}"; do
    titles "$s"
    table "$s" text
    echo
done

mkdir -p "$(dirname "$results")"
{
    echo "# Breaker overload benchmarks"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "- commit: $(git -C "$root" rev-parse --short HEAD 2> /dev/null || echo unknown)$(git -C "$root" diff --quiet HEAD 2> /dev/null || echo ' (with local changes)')"
    echo "- nginx: $("$nginx" -v 2>&1 | sed 's/^nginx version: //'), $workers worker(s); client timeout ${client_timeout}s; open-loop load (bench/breaker/load.py)"
    echo "- machine: $(nproc) CPU(s), Linux $(uname -r); load average (1 min) $load_start before, $(cut -d' ' -f1 /proc/loadavg) after"
    echo "- command: OVERLOAD_SECONDS=$seconds OVERLOAD_TIMEOUT=$client_timeout OVERLOAD_WORKERS=$workers${only:+ OVERLOAD_ONLY=$only} bench/breaker-overload.sh ${chosen_scenarios[*]}"
    for s in "${chosen_scenarios[@]}"; do
        echo
        titles "$s"
        echo
        table "$s" markdown
    done
} > "$results.tmp"
mv "$results.tmp" "$results"
# every stream and phase of every run, for a closer look (load.py's
# columns, after the variant and its label)
cp "$raw" "${results%.md}.raw"
bench_say "written to ${results#"$root"/} (every stream and phase: bench/results/breaker-overload.raw)"
[ "$failed" = 0 ] || bench_die "$failed run(s) failed"
