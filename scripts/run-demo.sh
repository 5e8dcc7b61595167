#!/usr/bin/env bash
# The demo behind `make run`: on 127.0.0.1 only, starts
#
#   - a redis-server on a free port (no persistence),
#   - a demo backend on :8081, a plain nginx with examples/backend.conf,
#   - the distro's nginx on :8080 with the four edge modules loaded from
#     build/modules and examples/nginx.conf,
#
# each in a temporary directory, then waits in the foreground.  Ctrl-C,
# TERM, or the script ending for any other reason stops all of them
# (nginx gracefully, by QUIT to the pid in its pid file; KILL only if it
# does not go) and removes the directory.
#
# Environment:
#   EDGE_DEMO_SECONDS=N       stop by itself after N seconds (smoke checks)
#   EDGE_DEMO_PORT=8080       the port of the nginx with the modules
#   EDGE_DEMO_BACKEND_PORT=8081
#   NGINX=/usr/sbin/nginx     the nginx binary (the modules must match it)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
nginx=${NGINX:-/usr/sbin/nginx}
# nginx reads an environment variable NGINX itself (the listening sockets of
# a binary upgrade), and `make run` exports ours: the nginx started here
# must not see it
export -n NGINX
unset NGINX
modules_dir=$root/build/modules
front_port=${EDGE_DEMO_PORT:-8080}
backend_port=${EDGE_DEMO_BACKEND_PORT:-8081}
seconds=${EDGE_DEMO_SECONDS:-}

say() { printf 'run-demo: %s\n' "$*"; }
die() { printf 'run-demo: error: %s\n' "$*" >&2; exit 1; }

# --- checks, before anything is started -----------------------------------

if [ -n "$seconds" ] && ! [[ $seconds =~ ^[1-9][0-9]*$ ]]; then
    die "EDGE_DEMO_SECONDS must be a positive whole number of seconds, not '$seconds'"
fi
for p in "$front_port" "$backend_port"; do
    if ! [[ $p =~ ^[1-9][0-9]*$ ]] || [ "$p" -ge 65536 ]; then
        die "invalid port '$p'"
    fi
done
[ "$front_port" != "$backend_port" ] || die "the two ports must differ"

[ -x "$nginx" ] || die "no nginx binary at $nginx (apt-get install nginx-core)"
for cmd in redis-server redis-cli perl curl; do
    command -v "$cmd" > /dev/null || die "$cmd is not installed (make run installs it)"
done
for m in ratelimit cache breaker metrics; do
    [ -f "$modules_dir/ngx_http_${m}_module.so" ] \
        || die "$modules_dir/ngx_http_${m}_module.so is missing: run make first"
done

# true if something already listens on 127.0.0.1:PORT (or on every address
# at that port); the test binds the way nginx does, with SO_REUSEADDR
port_in_use() {
    ! perl -MIO::Socket::INET -e '
        IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => $ARGV[0],
                              Listen => 1, ReuseAddr => 1) or exit 1;' "$1"
}

port_owner() {      # best effort: which process listens on PORT
    ss -Hltnp "sport = :$1" 2> /dev/null \
        | sed -n 's/.*users:(("\([^"]*\)",pid=\([0-9]*\).*/\1, pid \2/p' | head -1
}

for p in "$front_port" "$backend_port"; do
    if port_in_use "$p"; then
        owner=$(port_owner "$p")
        die "port $p on 127.0.0.1 is already in use${owner:+ (by $owner)}; stop that server first, or pick other ports with EDGE_DEMO_PORT / EDGE_DEMO_BACKEND_PORT"
    fi
done

# --- the temporary directory and the cleanup -------------------------------

dir=$(mktemp -d /tmp/edge-demo.XXXXXX)
# nginx workers run as "nobody" when the master is root: let them reach the
# temp/ directories the master creates for them (and chowns to them)
chmod 755 "$dir"

sleeper=""              # the pid of the `sleep` the main loop waits on
launched=()             # nginx prefixes whose start was attempted

# edge_running and edge_nginx_stop, shared with the benchmarks
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

running() { edge_running "$@"; }

# stop_nginx PREFIX NAME: see edge_nginx_stop
stop_nginx() {
    edge_nginx_stop "$1" "run-demo: $2"
}

stop_redis() {
    local pid i
    [ -s "$dir/redis/redis.pid" ] || return 0
    pid=$(cat "$dir/redis/redis.pid")
    [[ $pid =~ ^[0-9]+$ ]] || return 0
    kill -TERM "$pid" 2> /dev/null || return 0
    for i in $(seq 1 50); do
        running "$pid" || return 0
        sleep 0.1
    done
    echo "run-demo: redis (pid $pid) did not stop on TERM, killing it" >&2
    kill -KILL "$pid" 2> /dev/null || true
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    trap '' INT TERM HUP        # a second Ctrl-C must not cut the cleanup short
    if [ -n "$sleeper" ]; then kill "$sleeper" 2> /dev/null || true; fi
    echo
    say "stopping"
    # the front first, so it sends nothing more to the backend
    local i
    for ((i = ${#launched[@]} - 1; i >= 0; i--)); do
        stop_nginx "$dir/${launched[i]}" "nginx ${launched[i]}"
    done
    stop_redis
    rm -rf "$dir"
    say "stopped, removed $dir"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP



# render TEMPLATE OUTPUT: copy TEMPLATE, replacing each @NAME@ by the value of
# the variable EDGE_NAME (@REDIS_PORT@ by $EDGE_REDIS_PORT); a placeholder
# without a value is an error.  Comment lines are copied as they are: they
# document the template.
render() {
    perl -pe 'next if /^\s*#/;
              s{\@([A-Z][A-Z0-9_]*)\@}{
                  defined $ENV{"EDGE_$1"} ? $ENV{"EDGE_$1"}
                      : die "$ARGV:$.: unknown placeholder \@$1\@\n"
              }ge' "$1" > "$2"
}

# start_nginx NAME TEMPLATE: a prefix $dir/NAME/ with conf/, logs/, temp/
start_nginx() {
    local name=$1 template=$2 prefix=$dir/$1
    mkdir -p "$prefix/conf" "$prefix/logs" "$prefix/temp"
    EDGE_PREFIX=$prefix render "$template" "$prefix/conf/nginx.conf" \
        || die "could not render $template"
    launched+=("$name")
    # .starting tells stop_nginx (run by a Ctrl-C now) to wait for the pid file
    touch "$prefix/.starting"
    if ! "$nginx" -p "$prefix/" -c conf/nginx.conf; then
        rm -f "$prefix/.starting"
        [ -s "$prefix/logs/error.log" ] && tail -5 "$prefix/logs/error.log" >&2
        die "nginx $name did not start (configuration: $template)"
    fi
    wait_for 5 test -s "$prefix/logs/nginx.pid" || true
    rm -f "$prefix/.starting"
}

# --- redis -------------------------------------------------------------------

redis_port=$(free_port)
mkdir -p "$dir/redis"
redis-server --bind 127.0.0.1 --port "$redis_port" \
    --daemonize yes --pidfile "$dir/redis/redis.pid" \
    --logfile "$dir/redis/redis.log" --dir "$dir/redis" \
    --save '' --appendonly no \
    || die "redis-server did not start"
wait_for 10 redis-cli -h 127.0.0.1 -p "$redis_port" ping || {
    tail -5 "$dir/redis/redis.log" >&2
    die "redis on 127.0.0.1:$redis_port does not answer"
}

# --- the backend and the front ----------------------------------------------

# nginx loads a copy of the modules: `make` rewrites build/modules/*.so in
# place, and a running nginx whose .so is rewritten under it dies (SIGBUS)
mkdir -p "$dir/modules"
cp "$modules_dir"/ngx_http_*_module.so "$dir/modules/"
export EDGE_MODULES_DIR=$dir/modules
export EDGE_FRONT_PORT=$front_port
export EDGE_BACKEND_PORT=$backend_port
export EDGE_REDIS_PORT=$redis_port

# answering NAME URL: wait for URL to answer 2xx, or give up showing the
# end of NAME's error log (the directory is gone once the script exits)
answering() {
    wait_for 10 curl -fsS -o /dev/null "$2" && return 0
    tail -5 "$dir/$1/logs/error.log" >&2 || true
    die "nginx $1 does not answer on $2"
}

start_nginx backend "$root/examples/backend.conf"
answering backend "http://127.0.0.1:$backend_port/health"

start_nginx front "$root/examples/nginx.conf"
answering front "http://127.0.0.1:$front_port/health"

front=http://127.0.0.1:$front_port
cat <<EOF

  The edge demo is up.  Everything listens on 127.0.0.1:

    nginx with the edge modules   $front      (pid $(cat "$dir/front/logs/nginx.pid"))
    demo backend                  http://127.0.0.1:$backend_port      (pid $(cat "$dir/backend/logs/nginx.pid"))
    redis for the rate limiter    127.0.0.1:$redis_port         (redis-cli -p $redis_port)

  Try:
    curl -i $front/api/hello     JSON from the backend, with RateLimit headers
    curl -i $front/api/slow      the same, trickled over about 3 s
    curl -i $front/api/fail      the backend answers 500
    curl    $front/metrics       Prometheus text: rate-limit decisions, Redis, ...
    curl -i $front/health        nginx's own liveness
    curl -i $front/ready         readiness: Redis, circuits, shedders, shared memory
    curl    $front/breakers      every circuit and shedder, as JSON

    # 5 requests a second per client plus a burst of 10, then 429:
    for i in \$(seq 20); do curl -s -o /dev/null -w '%{http_code} ' $front/api/hello; done; echo

    # without Redis the limiter lets everything through (on_failure=open):
    redis-cli -p $redis_port shutdown nosave

  Configuration and logs (removed when the demo stops):
    $dir/front/conf/nginx.conf
    tail -f $dir/front/logs/access.log $dir/front/logs/error.log

EOF
if [ -n "$seconds" ]; then
    say "stopping by itself in $seconds s (EDGE_DEMO_SECONDS); Ctrl-C stops it sooner"
else
    say "Ctrl-C stops everything"
fi

# --- wait in the foreground ---------------------------------------------------

# `sleep & wait`, not a plain sleep: a trapped signal interrupts `wait` at
# once, whereas bash would run the trap only after a foreground sleep ends
check_alive() {     # check_alive NAME PIDFILE LOG: give up if NAME is gone
    [ -s "$2" ] && running "$(cat "$2")" && return 0
    echo "run-demo: $1 stopped unexpectedly; the end of $3:" >&2
    tail -5 "$3" >&2 || true
    exit 1
}
deadline=$((SECONDS + ${seconds:-0}))
redis_gone=""
while :; do
    check_alive nginx "$dir/front/logs/nginx.pid" "$dir/front/logs/error.log"
    check_alive "the backend" "$dir/backend/logs/nginx.pid" "$dir/backend/logs/error.log"
    # redis going away is a thing to try (the limiter then fails open),
    # not a reason to stop
    if [ -z "$redis_gone" ] && ! { [ -s "$dir/redis/redis.pid" ] && running "$(cat "$dir/redis/redis.pid")"; }; then
        say "redis has stopped; the rate limiter now lets everything through (on_failure=open)"
        redis_gone=1
    fi
    if [ -n "$seconds" ] && [ $SECONDS -ge "$deadline" ]; then
        say "$seconds s are up"
        exit 0
    fi
    sleep 1 &
    sleeper=$!
    wait "$sleeper" || true
    sleeper=""
done
