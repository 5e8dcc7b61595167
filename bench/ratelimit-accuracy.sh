#!/usr/bin/env bash
# Fleet accuracy of ngx_http_ratelimit_module: does a fleet of nginx nodes
# sharing one Redis admit what the limit says, no more and not much less?
#
#   bash bench/ratelimit-accuracy.sh                  # redis and lease, N = 1..4
#   ACC_MODES=redis ACC_NODES="1 4" bash bench/ratelimit-accuracy.sh
#
# One redis-server on a free loopback port; for each mode and each N, N
# nginx nodes (separate nginx processes, ACC_WORKERS workers each, the
# modules of build/modules), each with the same zone (key: the X-Api-Key
# header, rate=ACC_RATE r/s, burst=ACC_BURST nodelay) pointing at that
# Redis and proxying to a `return 200` server of its own.  One client key,
# new for every run, is offered at ACC_FACTOR times its rate for
# ACC_SECONDS, open loop (bench/ratelimit-accuracy/load.py: requests at a
# fixed schedule whatever the answers, round robin over the N nodes).
#
# Counted: admitted (200), refused (429, and 503: a Redis failure with
# on_failure=closed), errors (connection failed or closed, unreadable
# answer, no answer within ACC_TIMEOUT after the last send), anything else.
#
# The limit.  With emission interval T = 1/rate and tolerance burst·T,
# GCRA admits at most burst + 1 + rate·t requests whose decisions fall in
# any window of length t (the first admission moves the TAT to at least
# its time + T, every later one by T more, and an admission at time d
# needs TAT <= d + burst·T).  The window used is from the first request
# sent to the last one sent, on the client's monotonic clock (load.py
# takes a request's time when its bytes are handed to the kernel):
#
#     limit = rate · (last send − first send) + burst + 1
#
# Every request is decided after it is sent and, on loopback, within
# about a millisecond, so the decisions span the send window give or take
# the difference of two such delays (load.py reports the latencies, and
# when the last 200 was read).  The bucket is full at the start (a new
# key) and the key is offered ACC_FACTOR times its rate throughout, so an
# exact limiter admits the limit; what a fleet admits above it is
# over-admission, below it under-admission.
#
# Redis commands per admitted request: the calls counted by Redis's
# INFO commandstats over the run (after minus before; every command,
# including the ones a Lua script runs inside it, the INFO calls of this
# script excepted), divided by the admitted requests.  "scripts/adm" is the
# share of them that are EVALSHA/EVAL/FCALL calls: the round trips.
#
# Verdict per run: PASS when limit − 3 % <= admitted <= limit + 0.5 %
# (issue 13's targets), FAIL otherwise; FLAG when the run itself is
# not trustworthy: errors, timeouts and other answers above 0.5 % of the
# requests sent, or the client sent slower than 97 % of the offered rate.
# The exit status is 1 when any run is FAIL or FLAG, or could not be
# measured, or when no run was measured at all (every mode n/a).
#
# Environment:
#   ACC_SECONDS=10      length of each run (the schedule's duration)
#   ACC_RATE=200        the zone's rate, requests per second
#   ACC_BURST=20        the location's burst (nodelay)
#   ACC_FACTOR=3        the offered rate is ACC_FACTOR x ACC_RATE
#   ACC_NODES="1 2 3 4" the numbers of nginx nodes to run
#   ACC_MODES="redis lease"  redis: a Redis decision per request (redis=);
#                       lease: mode=lease (skipped, shown n/a, when the
#                       module does not know it); shm: shared memory, a
#                       reference at N=1; at N > 1 each node has its own
#                       bucket and the fleet admits about N times the
#                       limit: FAIL (over), which shows the check works
#   ACC_LEASE_OPTS=""   more zone parameters for lease mode (lease_max=,
#                       lease_ttl=)
#   ACC_ARRIVALS=uniform  uniform: evenly spaced requests; poisson: the
#                       same number at random times (seeded by N, so
#                       repeatable; see load.py)
#   ACC_WORKERS=2       worker_processes of each node
#   ACC_TIMEOUT=2       seconds the client waits for the last answers
#   NGINX=/usr/sbin/nginx  the nginx binary (build/modules built for it)
#
# Bounded: at most 300 s per run and 200,000 requests per run, each load
# under `timeout`; everything listens on 127.0.0.1 only; every process
# started (nginx by its pid file, redis-server, the load) is stopped on
# exit, failure or Ctrl-C, and the temporary directory removed.  The table
# goes to stdout and, as markdown, to bench/results/ratelimit-accuracy.md.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bench=$root/bench
here=$bench/ratelimit-accuracy
# shellcheck source=bench/lib.sh
. "$bench/lib.sh"

nginx=$(edge_nginx_bin) || bench_die "no nginx binary at ${NGINX:-/usr/sbin/nginx}"
# nginx reads a variable NGINX itself (binary upgrade): ours must not reach it
export -n NGINX
unset NGINX
static=
edge_nginx_static "$nginx" && static=1
modules_dir=$root/build/modules
seconds=${ACC_SECONDS:-10}
rate=${ACC_RATE:-200}
burst=${ACC_BURST:-20}
factor=${ACC_FACTOR:-3}
read -r -a node_counts <<< "${ACC_NODES:-1 2 3 4}"
read -r -a modes <<< "${ACC_MODES:-redis lease}"
lease_opts=${ACC_LEASE_OPTS:-}
workers=${ACC_WORKERS:-2}
arrivals=${ACC_ARRIVALS:-uniform}
client_timeout=${ACC_TIMEOUT:-2}
results=$bench/results/ratelimit-accuracy.md

# --- checks -------------------------------------------------------------------

# is_count VALUE [MAX]: a whole number from 1 (to MAX)
is_count() { [[ $1 =~ ^[1-9][0-9]*$ ]] && [ "${#1}" -le 9 ] && [ "$1" -le "${2:-999999999}" ]; }
is_positive() { [[ $1 =~ ^[0-9]+(\.[0-9]+)?$ ]] && awk -v f="$1" 'BEGIN { exit !(f > 0) }'; }
is_count "$seconds" 300 \
    || bench_die "ACC_SECONDS must be a whole number from 1 to 300, not '$seconds'"
is_count "$rate" || bench_die "ACC_RATE must be a whole number >= 1, not '$rate'"
[[ $burst =~ ^[0-9]+$ ]] || bench_die "ACC_BURST must be a whole number >= 0, not '$burst'"
is_positive "$factor" \
    || bench_die "ACC_FACTOR must be a number > 0, not '$factor'"
is_count "$workers" 8 \
    || bench_die "ACC_WORKERS must be a whole number from 1 to 8, not '$workers'"
is_positive "$client_timeout" \
    || bench_die "ACC_TIMEOUT must be a number of seconds > 0, not '$client_timeout'"
[ ${#node_counts[@]} -gt 0 ] || bench_die "ACC_NODES is empty"
for n in "${node_counts[@]}"; do
    is_count "$n" 8 || bench_die "ACC_NODES: '$n' is not a number of nodes from 1 to 8"
done
[ ${#modes[@]} -gt 0 ] || bench_die "ACC_MODES is empty"
for m in "${modes[@]}"; do
    case $m in redis|lease|shm) ;; *) bench_die "ACC_MODES: unknown mode '$m' (redis, lease, shm)" ;; esac
done
case $arrivals in uniform|poisson) ;; *) bench_die "ACC_ARRIVALS must be uniform or poisson, not '$arrivals'" ;; esac
[[ $lease_opts =~ ^[A-Za-z0-9_=.\ ]*$ ]] \
    || bench_die "ACC_LEASE_OPTS may hold only name=value words, not '$lease_opts'"
offered_rate=$(awk -v r="$rate" -v f="$factor" 'BEGIN { printf "%.6g", r * f }')
awk -v o="$offered_rate" -v s="$seconds" 'BEGIN { exit !(o * s <= 200000) }' \
    || bench_die "ACC_RATE x ACC_FACTOR x ACC_SECONDS is $offered_rate x $seconds requests: more than 200,000 per run"
for cmd in python3 redis-server redis-cli curl perl awk timeout; do
    command -v "$cmd" > /dev/null || bench_die "$cmd is not installed"
done
[ -x "$nginx" ] || bench_die "no nginx binary at $nginx"
if [ -z "$static" ]; then
    [ -f "$modules_dir/ngx_http_ratelimit_module.so" ] \
        || bench_die "$modules_dir/ngx_http_ratelimit_module.so is missing: run make first"
    [ "$(head -1 "$modules_dir/.target" 2> /dev/null)" = "$nginx" ] \
        || bench_die "$modules_dir holds no modules built for $nginx: run NGINX=$nginx make"
fi

# --- the temporary directory and the cleanup ----------------------------------

dir=$(mktemp -d /tmp/edge-accuracy.XXXXXX)
# as root, nginx workers run as "nobody": let them reach their temp dirs
chmod 755 "$dir"
bg_pid=""           # the load (under timeout) being waited for

stop_nodes() {
    local p
    for p in "$dir"/run/*/; do
        [ -d "$p/conf" ] && nginx_stop "${p%/}"
    done
    rm -rf "$dir/run"
}

cleanup() {
    local rc=$? p
    trap - EXIT INT TERM HUP
    trap '' INT TERM HUP        # a second Ctrl-C must not cut this short
    if [ -n "$bg_pid" ]; then
        kill -TERM "$bg_pid" 2> /dev/null || true
        wait "$bg_pid" 2> /dev/null || true
    fi
    stop_nodes
    redis_stop "$dir/redis"
    rm -rf "$dir"
    [ "$rc" = 0 ] || bench_say "stopped (status $rc), cleaned up"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# a copy of the modules: a `make` meanwhile must not rewrite a loaded .so
mkdir -p "$dir/modules"
[ -n "$static" ] || cp "$modules_dir"/*.so "$dir/modules/"
export EDGE_MODULES_DIR=$dir/modules EDGE_STATIC_MODULES=$static
export EDGE_WORKERS=$workers EDGE_RATE=$rate EDGE_BURST=$burst
export EDGE_REDIS_PORT EDGE_FRONT_PORT EDGE_UP_PORT EDGE_ZONE_OPTS EDGE_PREFIX

# --- redis --------------------------------------------------------------------

EDGE_REDIS_PORT=$(free_port)
mkdir -p "$dir/redis"
redis-server --bind 127.0.0.1 --port "$EDGE_REDIS_PORT" \
    --daemonize yes --pidfile "$dir/redis/redis.pid" \
    --logfile "$dir/redis/redis.log" --dir "$dir/redis" \
    --save '' --appendonly no > /dev/null \
    || bench_die "redis-server did not start"
wait_for 10 redis-cli -h 127.0.0.1 -p "$EDGE_REDIS_PORT" ping \
    || bench_die "redis on 127.0.0.1:$EDGE_REDIS_PORT does not answer"

rcli() { redis-cli -h 127.0.0.1 -p "$EDGE_REDIS_PORT" "$@"; }

# commandstats: "calls scripts" so far: every command's calls (this
# script's INFO excepted) and those of the script commands
commandstats() {
    rcli info commandstats | tr -d '\r' | awk -F'[:,=]' '
        /^cmdstat_/ {
            name = substr($1, 9)
            if (name == "info") next
            all += $3
            if (name ~ /^(evalsha|eval|evalsha_ro|eval_ro|fcall|fcall_ro)$/) scripts += $3
        }
        END { printf "%d %d\n", all, scripts }'
}

# redis_clients: connected clients other than the one asking
redis_clients() {
    echo $(( $(rcli client list | grep -c '^id=') - 1 ))
}

# redis_clients_at_least N: true when N clients (or more) are connected
redis_clients_at_least() {
    [ "$(redis_clients)" -ge "$1" ]
}

# --- one run ------------------------------------------------------------------

# zone_opts MODE: the zone parameters that make MODE
zone_opts() {
    case $1 in
        redis) echo "redis=acc on_failure=closed" ;;
        lease) echo "redis=acc on_failure=closed mode=lease${lease_opts:+ $lease_opts}" ;;
        shm)   echo "" ;;
    esac
}

# render_node PREFIX MODE: a node's configuration in PREFIX, with fresh ports
render_node() {
    mkdir -p "$1/conf" "$1/logs" "$1/temp"
    EDGE_PREFIX=$1
    EDGE_FRONT_PORT=$(free_port)
    EDGE_UP_PORT=$(free_port)
    EDGE_ZONE_OPTS=$(zone_opts "$2")
    render_conf "$here/node.conf" "" "$1/conf/nginx.conf"
    echo "$EDGE_FRONT_PORT" > "$1/port"
}

# mode_supported MODE: nginx -t accepts MODE's configuration; if not, says
# why on stdout
mode_supported() {
    local prefix=$dir/check-$1
    render_node "$prefix" "$1"
    if ! "$nginx" -t -q -p "$prefix/" -c conf/nginx.conf > "$prefix/test.log" 2>&1; then
        grep -m1 -o 'emerg\] .*' "$prefix/test.log" \
            | sed 's/^emerg\] //; s/^[0-9]*#[0-9]*: //; s/ in \/.*//' || true
        rm -rf "$prefix"
        return 1
    fi
    rm -rf "$prefix"
}

# one line per run in $raw: "mode N key=value..." (load.py's fields plus
# calls= scripts= load=), or "mode N n/a|FAILED why"
raw=$dir/raw.txt
: > "$raw"

# run_load OUTPUT ARGS...: load.py with a hard time limit; a trapped signal
# interrupts the wait at once
run_load() {
    local out=$1 rc=0; shift
    timeout --foreground -k 5 $((seconds + 30)) \
        python3 "$here/load.py" "$@" > "$out" 2> "$out.err" &
    bg_pid=$!
    wait "$bg_pid" || rc=$?
    bg_pid=""
    return "$rc"
}

# run_one MODE N
run_one() {
    local mode=$1 n=$2 k prefix targets=() key before after line why
    echo
    bench_say "== $mode, $n node(s) x $workers worker(s): ${offered_rate} r/s offered ($arrivals) for ${seconds}s, rate=${rate}r/s burst=$burst"
    rcli flushall > /dev/null
    for ((k = 1; k <= n; k++)); do
        prefix=$dir/run/node$k
        render_node "$prefix" "$mode"
        if ! nginx_start "$prefix" > "$dir/start.err" 2>&1; then
            sed 's/^/    /' "$dir/start.err" | head -20 >&2
            echo "$mode $n FAILED node-$k-did-not-start" >> "$raw"; stop_nodes; return
        fi
        targets+=(--target "127.0.0.1:$(cat "$prefix/port")")
    done
    # every node answers (a request without the key is not limited), and
    # every worker of every node holds its Redis connection
    for ((k = 1; k <= n; k++)); do
        if ! wait_for 10 http_ok "http://127.0.0.1:$(cat "$dir/run/node$k/port")/"; then
            bench_say "node $k does not answer 200; the end of its error log:"
            tail -5 "$dir/run/node$k/logs/error.log" 2> /dev/null | sed 's/^/    /' >&2 || true
            echo "$mode $n FAILED node-$k-not-200" >> "$raw"; stop_nodes; return
        fi
    done
    if [ "$mode" != shm ] && ! wait_for 10 redis_clients_at_least $((n * workers)); then
        bench_say "only $(redis_clients) Redis connection(s), not $((n * workers)): going on"
    fi

    # a key no earlier run touched: a full bucket, nothing cached anywhere
    key=acc-$mode-$n-$$-$RANDOM
    read -r before before_scripts <<< "$(commandstats)"
    local load0
    load0=$(cut -d' ' -f1 /proc/loadavg)
    if ! run_load "$dir/load-$mode-$n.txt" "${targets[@]}" --rate "$offered_rate" \
            --duration "$seconds" --timeout "$client_timeout" --header "X-Api-Key: $key" \
            --arrivals "$arrivals" --seed "$n"; then
        bench_say "the load failed:"
        sed 's/^/    /' "$dir/load-$mode-$n.txt.err" >&2
        echo "$mode $n FAILED load-failed" >> "$raw"; stop_nodes; return
    fi
    read -r after after_scripts <<< "$(commandstats)"
    line=$(cat "$dir/load-$mode-$n.txt")
    echo "$mode $n $line calls=$((after - before)) scripts=$((after_scripts - before_scripts)) load=$load0" >> "$raw"
    bench_say "$line"
    bench_say "redis: $((after - before)) calls ($((after_scripts - before_scripts)) scripts); load average $load0"

    why=
    for ((k = 1; k <= n; k++)); do
        prefix=$dir/run/node$k
        if grep -q 'exited on signal' "$prefix/logs/error.log" 2> /dev/null; then
            why="worker-crashed-on-node-$k"
        fi
        if grep -q '\[\(alert\|crit\|emerg\|error\)\]' "$prefix/logs/error.log" 2> /dev/null; then
            bench_say "node $k: errors in its error log:"
            grep '\[\(alert\|crit\|emerg\|error\)\]' "$prefix/logs/error.log" | head -5 | sed 's/^/    /' >&2
        fi
    done
    stop_nodes
    [ -z "$why" ] || echo "$mode $n FAILED $why" >> "$raw"
}

# --- the runs -----------------------------------------------------------------

load_start=$(cut -d' ' -f1 /proc/loadavg)
bench_say "redis 127.0.0.1:$EDGE_REDIS_PORT; modes: ${modes[*]}; nodes: ${node_counts[*]};" \
          "load average $load_start"
for mode in "${modes[@]}"; do
    if ! why=$(mode_supported "$mode"); then
        # a module without the mode is n/a; any other complaint (a bad
        # ACC_LEASE_OPTS, a module that does not load) is a failure
        if [[ $why == *'invalid parameter "mode=lease"'* ]]; then
            bench_say "$mode: not run, the module does not know it: $why"
            echo "$mode - n/a $(printf '%s' "$why" | tr ' ' '\037')" >> "$raw"
        else
            bench_say "$mode: not run, nginx -t refuses its configuration: $why"
            echo "$mode - FAILED $(printf '%s' "$why" | tr ' ' '\037')" >> "$raw"
        fi
        continue
    fi
    for n in "${node_counts[@]}"; do
        run_one "$mode" "$n"
    done
done

# --- the table ----------------------------------------------------------------

# table FORMAT (text|markdown); the verdicts of the runs as the last lines
# of "verdicts" when FORMAT is text
table() {
    awk -v fmt="$1" -v rate="$rate" -v burst="$burst" -v orate="$offered_rate" '
        function row(c, n,   i, s) {
            if (fmt == "markdown") {
                s = "|"
                for (i = 1; i <= n; i++) s = s " " c[i] " |"
                print s
            } else {
                s = sprintf("%-6s %2s", c[1], c[2])
                for (i = 3; i <= n; i++) s = s sprintf(" %10s", c[i])
                print s
            }
        }
        BEGIN {
            split("mode|N|offered|sent/s|admitted|refused|errors|limit|adm/limit-1|calls/adm|scripts/adm|verdict", h, "|")
            row(h, 12)
            if (fmt == "markdown") print "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
        }
        $3 == "n/a" || $3 == "FAILED" {
            why = $4; gsub(/\037/, " ", why)
            delete c; c[1] = $1; c[2] = $2; c[3] = $3 " " why
            if (fmt == "markdown") { row(c, 3) } else { printf "%-6s %2s %s\n", $1, $2, $3 " " why }
            if ($3 == "FAILED") bad++
            next
        }
        {
            delete f
            for (i = 3; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
            limit = rate * f["elapsed"] + burst + 1
            dev = f["ok"] / limit - 1
            wrong = f["errors"] + f["timeouts"] + f["other"] + f["unsent"]
            verdict = "PASS"
            if (f["ok"] > limit * 1.005) verdict = "FAIL (over)"
            else if (f["ok"] < limit * 0.97) verdict = "FAIL (under)"
            if (wrong > 0.005 * f["sent"]) verdict = verdict ", FLAG (errors)"
            if (f["rate_sent"] == "-" || f["rate_sent"] < 0.97 * orate) verdict = verdict ", FLAG (client slow)"
            if (verdict != "PASS") bad++
            c[1] = $1; c[2] = $2; c[3] = f["sent"]; c[4] = f["rate_sent"]
            c[5] = f["ok"]; c[6] = f["r429"] + f["r503"]
            c[7] = wrong; c[8] = sprintf("%.1f", limit)
            c[9] = sprintf("%+.2f %%", 100 * dev)
            c[10] = f["ok"] > 0 ? sprintf("%.3f", f["calls"] / f["ok"]) : "-"
            c[11] = f["ok"] > 0 ? sprintf("%.3f", f["scripts"] / f["ok"]) : "-"
            c[12] = verdict
            row(c, 12)
        }
        END { if (fmt == "text") printf "\n%d run(s) not PASS\n", bad + 0 }' "$raw"
}

# details: the run-level figures behind the table
details() {
    awk '
        $3 == "n/a" || $3 == "FAILED" { next }
        {
            delete f
            for (i = 3; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
            printf "%s N=%s: elapsed %ss, 429 %s, 503 %s, errors %s, timeouts %s, other %s;" \
                   " send lag p99 %s ms max %s ms; latency p50 %s p99 %s max %s ms;" \
                   " last 200 read at %ss; 200s per node %s; %s connection(s); load %s\n",
                   $1, $2, f["elapsed"], f["r429"], f["r503"], f["errors"], f["timeouts"],
                   f["other"], f["lag_p99"], f["lag_max"], f["lat_p50"], f["lat_p99"],
                   f["lat_max"], f["last_ok_recv"], f["node_ok"], f["conns"], f["load"]
        }' "$raw"
}

echo
table text | tee "$dir/table.txt"
echo
details

mkdir -p "$(dirname "$results")"
{
    echo "# Fleet accuracy (bench/ratelimit-accuracy.sh)"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "- commit: $(git -C "$root" rev-parse --short HEAD 2> /dev/null || echo unknown)$(git -C "$root" diff --quiet HEAD 2> /dev/null || echo ' (with local changes)')"
    echo "- nginx: $("$nginx" -v 2>&1 | sed 's/^nginx version: //'), $workers worker(s) per node; redis $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')"
    echo "- limit: rate=${rate}r/s burst=$burst nodelay; offered ${offered_rate} r/s (x$factor) for ${seconds}s, open loop, $arrivals arrivals, round robin"
    echo "- command: ACC_SECONDS=$seconds ACC_RATE=$rate ACC_BURST=$burst ACC_FACTOR=$factor ACC_NODES=\"${node_counts[*]}\" ACC_MODES=\"${modes[*]}\" ACC_WORKERS=$workers ACC_ARRIVALS=$arrivals${lease_opts:+ ACC_LEASE_OPTS=\"$lease_opts\"} bash bench/ratelimit-accuracy.sh"
    echo "- machine: $(nproc) CPU(s), Linux $(uname -r); load average (1 min) $load_start before, $(cut -d' ' -f1 /proc/loadavg) after"
    echo
    echo "limit = rate x (last send - first send) + burst + 1; calls/adm = Redis commands (INFO commandstats, every call) per admitted request; scripts/adm = the EVALSHA/EVAL/FCALL among them."
    echo
    table markdown
    echo
    details | sed 's/^/    /'
} > "$results.tmp"
mv "$results.tmp" "$results"
echo
bench_say "written to ${results#"$root"/}"
if ! awk '$3 != "n/a" && $3 != "FAILED" { found = 1 } END { exit !found }' "$raw"; then
    bench_die "no run was measured"
fi
if ! tail -1 "$dir/table.txt" | grep -q '^0 run'; then
    bench_die "$(tail -1 "$dir/table.txt")"
fi
