#!/usr/bin/env bash
# Benchmarks behind `make bench`: wrk against nginx on loopback, one
# scenario (bench/scenarios/NN-name.conf) at a time, each compared with
# the bare proxy_pass baseline measured in the same run.
#
#   - a backend: an nginx answering `return 200`, and JSON bodies of 1 KB
#     and 100 KB under /1k and /100k (bench/backend.conf);
#   - per scenario, a front nginx (bench/front.conf filled with the
#     scenario's sections; 1 worker) proxying to it through an upstream
#     with keepalive; a check that / (or the scenario's @path) answers
#     200, a warm-up, then wrk -t1 -c50 -d${BENCH_SECONDS}s --latency on
#     127.0.0.1 (with the scenario's @script, if any);
#   - a table scenario | req/s | p50 | p90 | p99 | ratio | vs | errors |
#     CPU per request on stdout and, as markdown, in
#     bench/results/latest.md.
#
# A scenario's description may hold options, one a line (bench/README.md):
#   # @path /1k           the path wrk requests (default /)
#   # @script F ARGS      wrk -s bench/wrk/F, ARGS passed to the script
#   # @header NAME: VALUE a request header wrk sends (wrk -H)
#   # @baseline ID        its ratio is against scenario ID (default
#                         00-proxy); ID runs whenever this one does
#   # @expect PATH RE     after the run, a GET of PATH must have a header
#                         line matching RE (a cache hit, say)
#
# Environment:
#   BENCH_SECONDS=10      length of each measured run
#   BENCH_WARMUP=2        length of the unmeasured run before it (0: none)
#   BENCH_ONLY=REGEX      only the scenarios whose file name (without
#                         .conf) matches; the baseline 00-proxy always runs
#   BENCH_ROUNDS=1        run all the scenarios this many times, in turn,
#                         and report medians (less noise, longer run)
#   BENCH_CONNECTIONS=50  wrk -c
#   BENCH_THREADS=1       wrk -t
#   BENCH_SCENARIOS=DIR   take the scenarios from DIR, not bench/scenarios
#                         (it needs its own 00-proxy.conf); bench/cache is
#                         the cache module's set
#   BENCH_REDIS_MAXMEMORY=256mb  the benchmark redis's maxmemory (LRU)
#   NGINX=/usr/sbin/nginx  the nginx to measure: build/modules/ must hold
#                         modules built for it (`NGINX=... make bench` does
#                         that), or it has them compiled in (a static build:
#                         the scenarios' load_module lines are left out)
#
# Everything runs on 127.0.0.1, stops by itself, and is cleaned up on exit
# or Ctrl-C: every nginx by its pid file, redis by its own, the temporary
# directory removed.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bench=$root/bench
# shellcheck source=bench/lib.sh
. "$bench/lib.sh"

nginx=$(edge_nginx_bin) || bench_die "no nginx binary at ${NGINX:-/usr/sbin/nginx}"
# nginx reads an environment variable NGINX itself (the listening sockets
# of a binary upgrade): the nginx we start must not see ours
export -n NGINX
unset NGINX
static=
edge_nginx_static "$nginx" && static=1
modules_dir=$root/build/modules
seconds=${BENCH_SECONDS:-10}
warmup=${BENCH_WARMUP:-2}
only=${BENCH_ONLY:-}
rounds=${BENCH_ROUNDS:-1}
scenario_dir=${BENCH_SCENARIOS:-$bench/scenarios}
connections=${BENCH_CONNECTIONS:-50}
threads=${BENCH_THREADS:-1}
baseline=00-proxy
redis_maxmemory=${BENCH_REDIS_MAXMEMORY:-256mb}
results=$bench/results/latest.md

# --- checks -------------------------------------------------------------------

[[ $seconds =~ ^[1-9][0-9]*$ ]]     || bench_die "BENCH_SECONDS must be a whole number >= 1, not '$seconds'"
[[ $warmup =~ ^[0-9]+$ ]]           || bench_die "BENCH_WARMUP must be a whole number >= 0, not '$warmup'"
[[ $rounds =~ ^[1-9][0-9]*$ ]]      || bench_die "BENCH_ROUNDS must be a whole number >= 1, not '$rounds'"
[[ $connections =~ ^[1-9][0-9]*$ ]] || bench_die "BENCH_CONNECTIONS must be a whole number >= 1"
[[ $threads =~ ^[1-9][0-9]*$ ]]     || bench_die "BENCH_THREADS must be a whole number >= 1"
[ "$threads" -le "$connections" ]   || bench_die "BENCH_THREADS must not exceed BENCH_CONNECTIONS"
[ -x "$nginx" ] || bench_die "no nginx binary at $nginx"
for cmd in wrk curl perl awk; do
    command -v "$cmd" > /dev/null || bench_die "$cmd is not installed (make bench installs it)"
done
if [ -z "$static" ]; then
    [ -d "$modules_dir" ] || bench_die "$modules_dir is missing: run make first"
    [ "$(head -1 "$modules_dir/.target" 2> /dev/null)" = "$nginx" ] \
        || bench_die "$modules_dir holds no modules built for $nginx: run NGINX=$nginx make"
fi

if [ -n "$only" ]; then
    # an invalid regex is status 2 from [[ =~ ]]
    rc=0; [[ x =~ $only ]] || rc=$?
    [ "$rc" -lt 2 ] || bench_die "BENCH_ONLY is not a valid regular expression: '$only'"
fi

[ -f "$scenario_dir/$baseline.conf" ] || bench_die "the baseline $scenario_dir/$baseline.conf is missing"

# the selected scenarios, and the baselines they name (@baseline), in file
# name order
declare -A chosen=() base_of=()
for f in "$scenario_dir"/*.conf; do
    [ -e "$f" ] || continue
    id=$(basename "$f" .conf)
    b=$(scenario_opt "$f" baseline)
    base_of[$id]=${b:-$baseline}
    [ -f "$scenario_dir/${base_of[$id]}.conf" ] \
        || bench_die "$f: its @baseline ${base_of[$id]} is not in $scenario_dir"
    s=$(scenario_opt "$f" script)
    [ -z "$s" ] || [ -f "$bench/wrk/${s%% *}" ] \
        || bench_die "$f: its @script bench/wrk/${s%% *} does not exist"
    if [ "$id" = "$baseline" ] || [ -z "$only" ] || [[ $id =~ $only ]]; then
        chosen[$id]=1
    fi
done
for id in "${!chosen[@]}"; do chosen[${base_of[$id]}]=1; done
scenarios=()
for f in "$scenario_dir"/*.conf; do
    [ -e "$f" ] || continue
    [ -z "${chosen[$(basename "$f" .conf)]:-}" ] || scenarios+=("$f")
done
[ ${#scenarios[@]} -gt 1 ] || [ -z "$only" ] \
    || bench_say "BENCH_ONLY='$only' matches no scenario besides the baseline"

# --- the temporary directory and the cleanup ----------------------------------

dir=$(mktemp -d /tmp/edge-bench.XXXXXX)
# as root, nginx workers run as "nobody": let them reach their temp dirs
chmod 755 "$dir"
bg_pid=""           # the wrk (under timeout) being waited for

cleanup() {
    local rc=$? p
    trap - EXIT INT TERM HUP
    trap '' INT TERM HUP        # a second Ctrl-C must not cut this short
    if [ -n "$bg_pid" ]; then
        kill -TERM "$bg_pid" 2> /dev/null || true
        wait "$bg_pid" 2> /dev/null || true
    fi
    for p in "$dir"/*/; do
        [ -d "$p/conf" ] && nginx_stop "${p%/}"
    done
    redis_stop "$dir/redis"
    rm -rf "$dir"
    [ "$rc" = 0 ] || bench_say "stopped (status $rc), cleaned up"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# run_bounded SECONDS OUTPUT COMMAND...: run COMMAND in the background with
# a hard time limit, its output to OUTPUT, and wait for it; a trapped
# signal interrupts the wait at once (a foreground command would delay it)
run_bounded() {
    local limit=$1 out=$2 rc=0; shift 2
    timeout --foreground -k 5 "$limit" "$@" > "$out" 2>&1 &
    bg_pid=$!
    wait "$bg_pid" || rc=$?
    bg_pid=""
    return "$rc"
}

# --- the backend, and redis if a scenario wants it ------------------------------

# nginx loads a copy of the modules: `make` (say, in another terminal)
# rewrites build/modules/*.so in place, and a running nginx whose .so is
# rewritten under it dies with SIGBUS
mkdir -p "$dir/modules"
cp "$modules_dir"/*.so "$dir/modules/" 2> /dev/null || true
export EDGE_MODULES_DIR=$dir/modules
# a static build: render_conf leaves the edge modules' load_module lines out
export EDGE_STATIC_MODULES=$static
export EDGE_BACKEND_PORT
EDGE_BACKEND_PORT=$(free_port)

mkdir -p "$dir/backend/conf" "$dir/backend/html"
make_bodies "$dir/backend/html"
EDGE_PREFIX=$dir/backend render_conf "$bench/backend.conf" "" "$dir/backend/conf/nginx.conf"
nginx_start "$dir/backend" || bench_die "the backend did not start"
wait_for 10 http_ok "http://127.0.0.1:$EDGE_BACKEND_PORT/" \
    || bench_die "the backend does not answer 200 on 127.0.0.1:$EDGE_BACKEND_PORT"

if grep -lE '@REDIS_(PORT|SOCKET)@' "${scenarios[@]}" > /dev/null 2>&1; then
    command -v redis-server > /dev/null || bench_die "a scenario needs redis-server"
    export EDGE_REDIS_PORT EDGE_REDIS_SOCKET
    EDGE_REDIS_PORT=$(free_port)
    EDGE_REDIS_SOCKET=$dir/redis/redis.sock
    mkdir -p "$dir/redis"
    # the workers run as "nobody" when this runs as root; maxmemory with
    # LRU eviction bounds what the cache's miss scenario stores (an entry
    # per request)
    redis-server --bind 127.0.0.1 --port "$EDGE_REDIS_PORT" \
        --unixsocket "$EDGE_REDIS_SOCKET" --unixsocketperm 777 \
        --daemonize yes --pidfile "$dir/redis/redis.pid" \
        --logfile "$dir/redis/redis.log" --dir "$dir/redis" \
        --save '' --appendonly no \
        --maxmemory "$redis_maxmemory" --maxmemory-policy allkeys-lru > /dev/null \
        || bench_die "redis-server did not start"
    wait_for 10 redis-cli -h 127.0.0.1 -p "$EDGE_REDIS_PORT" ping \
        || bench_die "redis on 127.0.0.1:$EDGE_REDIS_PORT does not answer"
fi

# --- the scenarios -------------------------------------------------------------

load_start=$(cut -d' ' -f1 /proc/loadavg)
if awk -v l="$load_start" 'BEGIN { exit !(l > 0.5) }'; then
    bench_say "warning: load average $load_start before starting: something else is busy, expect noise"
fi
per=$((warmup + seconds + 1))
total=$((per * ${#scenarios[@]} * rounds))
bench_say "${#scenarios[@]} scenario(s) x $rounds round(s), ${warmup}s warm-up + ${seconds}s each (about ${total}s);" \
          "wrk -t$threads -c$connections; nginx 1 worker; backend 127.0.0.1:$EDGE_BACKEND_PORT"

# one line per measurement: "id round rps p50 p90 p99 requests non2xx sockerr"
# (latencies in ms), or "id round FAILED why"
raw=$dir/raw.txt
: > "$raw"

run_scenario() {
    local file=$1 round=$2 id prefix port url code parsed path script
    local expect expected header wrk_script=()
    id=$(basename "$file" .conf)
    prefix=$dir/$id-$round
    port=$(free_port)
    path=$(scenario_opt "$file" path)
    url=http://127.0.0.1:$port${path:-/}
    script=$(scenario_opt "$file" script)
    expect=$(scenario_opt "$file" expect)
    header=$(scenario_opt "$file" header)
    [ -z "$header" ] || wrk_script=(-H "$header")
    if [ -n "$script" ]; then
        # wrk passes the words after the URL to the script's init()
        # shellcheck disable=SC2206
        wrk_script+=(-s "$bench/wrk/${script%% *}" "$url" ${script#"${script%% *}"})
    else
        wrk_script+=("$url")
    fi

    echo
    bench_say "== $id${rounds_label:+ (round $round)}: $(sed -n '1s/^#[[:space:]]*//p' "$file")"
    mkdir -p "$prefix/conf"
    if ! EDGE_FRONT_PORT=$port EDGE_PREFIX=$prefix \
            render_conf "$bench/front.conf" "$file" "$prefix/conf/nginx.conf"; then
        echo "$id $round FAILED bad-scenario-file" >> "$raw"; return 1
    fi
    # every scenario, and every round, starts from an empty Redis: a key
    # refused in one round must not fail the next one's 200 check
    if [ -n "${EDGE_REDIS_PORT:-}" ]; then
        redis-cli -h 127.0.0.1 -p "$EDGE_REDIS_PORT" flushall > /dev/null \
            || bench_say "warning: FLUSHALL on the benchmark redis failed"
        # evicted_keys, shown after the run, counts this run's only
        redis-cli -h 127.0.0.1 -p "$EDGE_REDIS_PORT" config resetstat > /dev/null || true
    fi
    if ! nginx_start "$prefix"; then
        echo "$id $round FAILED nginx-did-not-start" >> "$raw"; return 1
    fi
    if ! wait_for 10 http_ok "$url"; then
        code=$(curl -s -o /dev/null -m 5 -w '%{http_code}' "$url" || true)
        bench_say "$id: $url answers ${code:-nothing}, not 200; the end of its error log:"
        tail -5 "$prefix/logs/error.log" 2> /dev/null | sed 's/^/    /' >&2 || true
        nginx_stop "$prefix"
        echo "$id $round FAILED not-200" >> "$raw"; return 1
    fi

    if [ "$warmup" -gt 0 ]; then
        run_bounded $((warmup + 30)) "$prefix/warmup.txt" \
            wrk -t"$threads" -c"$connections" -d"${warmup}s" "${wrk_script[@]}" || true
    fi
    # CPU per request, of this nginx (master and worker) and of redis: a
    # figure that, unlike req/s, does not depend on what else shares the
    # cores, and tells where the time of a slower scenario goes
    front_pid=$(cat "$prefix/logs/nginx.pid")
    redis_pid=$(cat "$dir/redis/redis.pid" 2> /dev/null || true)
    front_t0=$(cpu_ticks "$front_pid")
    redis_t0=0; [ -z "$redis_pid" ] || redis_t0=$(cpu_ticks "$redis_pid")
    if ! run_bounded $((seconds + 30)) "$prefix/wrk.txt" \
            wrk -t"$threads" -c"$connections" -d"${seconds}s" --latency "${wrk_script[@]}"; then
        sed 's/^/    /' "$prefix/wrk.txt" >&2
        nginx_stop "$prefix"
        echo "$id $round FAILED wrk-failed" >> "$raw"; return 1
    fi
    front_t1=$(cpu_ticks "$front_pid")
    redis_t1=0; [ -z "$redis_pid" ] || redis_t1=$(cpu_ticks "$redis_pid")
    # the scenario measured what it says (a cache hit is a hit): checked
    # after the run, with the state the run left
    expected=yes
    if [ -n "$expect" ] && ! expect_header "http://127.0.0.1:$port${expect%% *}" \
            "${expect#* }" "$prefix/expect.txt"; then
        expected=
        bench_say "$id: GET ${expect%% *} has no header line matching '${expect#* }'; it answered:"
        sed 's/^/    /' "$prefix/expect.txt" >&2
    fi
    nginx_stop "$prefix"
    if [ -n "$redis_pid" ] && grep -qE '@REDIS_(PORT|SOCKET)@' "$file"; then
        bench_say "$id: redis holds $(redis-cli -h 127.0.0.1 -p "$EDGE_REDIS_PORT" dbsize) keys," \
                  "$(redis-cli -h 127.0.0.1 -p "$EDGE_REDIS_PORT" info memory | sed -n 's/^used_memory_human:\([^[:space:]]*\).*/\1/p') used," \
                  "$(redis-cli -h 127.0.0.1 -p "$EDGE_REDIS_PORT" info stats | sed -n 's/^evicted_keys:\([0-9]*\).*/\1/p') evicted"
    fi
    # an error logged during the run (a module complaining, say) is worth
    # a look even when the numbers seem fine
    if grep -q '\[\(alert\|crit\|emerg\|error\)\]' "$prefix/logs/error.log" 2> /dev/null; then
        bench_say "$id: errors in its error log:"
        grep '\[\(alert\|crit\|emerg\|error\)\]' "$prefix/logs/error.log" | head -5 | sed 's/^/    /' >&2
    fi
    if [ -z "$expected" ]; then
        echo "$id $round FAILED expect-failed" >> "$raw"; return 1
    fi

    parsed=$(parse_wrk "$prefix/wrk.txt")
    if [ "${parsed%% *}" = - ]; then
        bench_say "$id: could not read wrk's output:"
        sed 's/^/    /' "$prefix/wrk.txt" >&2
        echo "$id $round FAILED unreadable-wrk-output" >> "$raw"; return 1
    fi
    # a crashed worker or no answer at all is not a measurement
    if grep -q 'exited on signal' "$prefix/logs/error.log" 2> /dev/null; then
        bench_say "$id: an nginx worker crashed during the run (see above)"
        echo "$id $round FAILED worker-crashed" >> "$raw"; return 1
    fi
    if [ "$(echo "$parsed" | cut -d' ' -f5)" = 0 ]; then
        echo "$id $round FAILED no-requests-completed" >> "$raw"; return 1
    fi
    # shellcheck disable=SC2086
    set -- $parsed
    cpu=$(awk -v f=$((front_t1 - front_t0)) -v r=$((redis_t1 - redis_t0)) \
              -v hz="$(getconf CLK_TCK)" -v n="$5" \
              'BEGIN { printf "%.1f %.1f", f / hz * 1e6 / n, r / hz * 1e6 / n }')
    echo "$id $round $parsed $cpu" >> "$raw"
    bench_say "$id: $1 req/s, p50 $2 ms, p90 $3 ms, p99 $4 ms ($5 requests, $6 non-2xx, $7 socket errors);" \
              "CPU per request: nginx ${cpu% *} us, redis ${cpu#* } us"
}

rounds_label=""
[ "$rounds" -gt 1 ] && rounds_label=yes
failed=0
# each round starts one scenario further down the list, so that no
# scenario always runs first (or right after the baseline) on a box whose
# load drifts
n=${#scenarios[@]}
for ((round = 1; round <= rounds; round++)); do
    for ((k = 0; k < n; k++)); do
        f=${scenarios[(k + round - 1) % n]}
        run_scenario "$f" "$round" || failed=$((failed + 1))
    done
done

# --- the table -------------------------------------------------------------------

# summary: one line per scenario, in run order:
#   "name rps p50 p90 p99 ratio vs errors nginx_us redis_us" or
#   "name FAILED - - - - - - - -"
# Over several rounds each figure is the median of the rounds, and the
# ratio the median of the per-round ratios (each against the scenario's
# baseline in its own round), with their range; vs names that baseline
# ("-" for a baseline itself).
summary() {
    local ids=() bases=() f id
    for f in "${scenarios[@]}"; do
        id=$(basename "$f" .conf)
        ids+=("$id")
        bases+=("${base_of[$id]}")
    done
    awk -v order="${ids[*]}" -v baseof="${bases[*]}" '
        function median(list,   a, n, i, j, t) {
            n = split(list, a, " ")
            for (i = 2; i <= n; i++)                # insertion sort
                for (j = i; j > 1 && a[j - 1] + 0 > a[j] + 0; j--) {
                    t = a[j]; a[j] = a[j - 1]; a[j - 1] = t
                }
            return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        }
        function add(arr, k, v) { arr[k] = (k in arr) ? arr[k] " " v : v }
        $3 == "FAILED" { fail[$1] = $4; next }
        {
            add(rps, $1, $3); add(p50, $1, $4); add(p90, $1, $5); add(p99, $1, $6)
            add(fcpu, $1, $10); add(rcpu, $1, $11)
            err[$1] += $8 + $9
            got[$1, $2] = $3
        }
        END {
            n = split(order, ids, " ")
            split(baseof, bases, " ")
            for (r = 1; ; r++) {                    # per-round ratios
                found = 0
                for (i = 1; i <= n; i++) {
                    if (!((ids[i], r) in got)) continue
                    found = 1
                    b = bases[i]
                    if ((b, r) in got && got[b, r] > 0)
                        add(ratio, ids[i], got[ids[i], r] / got[b, r])
                }
                if (!found) break
            }
            for (i = 1; i <= n; i++) {
                id = ids[i]; name = id; sub(/^[0-9]+-/, "", name)
                if (id in fail || !(id in rps)) {
                    printf "%s FAILED - - - - - - - -\n", name
                    continue
                }
                vs = bases[i]; sub(/^[0-9]+-/, "", vs)
                if (bases[i] == id) vs = "-"
                rt = "-"
                if (id in ratio) {
                    k = split(ratio[id], v, " ")
                    rt = sprintf("%.3f", median(ratio[id]))
                    if (k > 1 && bases[i] != id) {
                        lo = v[1]; hi = v[1]
                        for (j = 2; j <= k; j++) { if (v[j] < lo) lo = v[j]; if (v[j] > hi) hi = v[j] }
                        rt = rt sprintf("(%.2f-%.2f)", lo, hi)
                    }
                }
                rc = median(rcpu[id])
                rc = (rc > 0) ? sprintf("%.1f", rc) : "-"
                printf "%s %.0f %.2f %.2f %.2f %s %s %d %.1f %s\n", name, median(rps[id]),
                       median(p50[id]), median(p90[id]), median(p99[id]), rt, vs, err[id],
                       median(fcpu[id]), rc
            }
        }' "$raw"
}

# table FORMAT: the summary as text or as markdown
table() {
    local line
    if [ "$1" = markdown ]; then
        line='| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n'
        echo "| scenario | req/s | p50 (ms) | p90 (ms) | p99 (ms) | ratio | vs | errors | nginx µs/req | redis µs/req |"
        echo "|----------|------:|---------:|---------:|---------:|------:|----|-------:|-------------:|-------------:|"
    else
        line="%-22s %11s %9s %9s %9s %$([ "$rounds" -gt 1 ] && echo 17 || echo 7)s %-20s %6s %9s %9s\n"
        # shellcheck disable=SC2059
        printf "$line" scenario req/s "p50 ms" "p90 ms" "p99 ms" ratio vs errors "nginx us" "redis us"
    fi
    # shellcheck disable=SC2059,SC2086
    summary | while read -r r; do printf "$line" $r; done
    awk '$3 == "FAILED" {
            name = $1; sub(/^[0-9]+-/, "", name)
            printf "\n%s failed (round %d): %s", name, $2, $4; n++
         }
         END { if (n) print "" }' "$raw"
}

echo
table text

mkdir -p "$(dirname "$results")"
{
    echo "# Benchmark results"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "- commit: $(git -C "$root" rev-parse --short HEAD 2> /dev/null || echo unknown)$(git -C "$root" diff --quiet HEAD 2> /dev/null || echo ' (with local changes)')"
    echo "- nginx: $("$nginx" -v 2>&1 | sed 's/^nginx version: //'), 1 worker; backend: nginx \`return 200\`, 1 worker"
    echo "- wrk: -t$threads -c$connections -d${seconds}s --latency after a ${warmup}s warm-up, 127.0.0.1; $rounds round(s)"
    echo "- machine: $(nproc) CPU(s), $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), Linux $(uname -r)"
    echo "- load average (1 min): $load_start before, $(cut -d' ' -f1 /proc/loadavg) after"
    echo
    echo "ratio = req/s / req/s of the scenario's baseline (vs; \`proxy\` unless named) in the same run$([ "$rounds" -gt 1 ] && echo ' (median of the rounds, range in brackets; figures are medians)');"
    echo "errors = non-2xx/3xx responses + socket errors; nginx and redis µs/req = CPU time"
    echo "(user + system) of the nginx under test and of redis per request completed."
    echo "Compare ratios within one run, not absolute numbers across runs (see bench/README.md)."
    echo
    table markdown
} > "$results.tmp"
mv "$results.tmp" "$results"
echo
bench_say "written to ${results#"$root"/}"

for f in "${scenarios[@]}"; do
    id=$(basename "$f" .conf)
    [ "${base_of[$id]}" = "$id" ] || [ "$id" = "$baseline" ] || continue
    grep -q "^$id [0-9]* [0-9]" "$raw" || bench_say "the baseline $id failed: no ratios against it"
done
awk '$3 != "FAILED" && $8 + $9 > 0 {
        name = $1; sub(/^[0-9]+-/, "", name)
        printf "bench: warning: %s (round %d) had %d non-2xx responses and %d socket errors: not a clean run\n", name, $2, $8, $9
     }' "$raw"
[ "$failed" = 0 ] || bench_die "$failed measurement(s) failed"
