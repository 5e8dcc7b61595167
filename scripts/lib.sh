# shellcheck shell=bash
# Shell helpers shared by scripts/run-demo.sh and bench/ (sourced, not run).

# edge_running PID: the process exists and is not a zombie.  Daemons (nginx,
# redis) are reparented to pid 1 or a subreaper, which may take its time to
# reap them; `kill -0` alone would call a dead one alive until then.
edge_running() {
    local st
    st=$(ps -o stat= -p "$1" 2> /dev/null) || return 1
    [[ $st != Z* ]]
}

# edge_nginx_stop PREFIX LABEL: QUIT the master in PREFIX/logs/nginx.pid,
# wait up to 6 s for it, then KILL it and its workers.  A master that is
# just starting writes its pid file a moment after `nginx` returns: when
# PREFIX/.starting exists, wait up to 1 s for the file.
edge_nginx_stop() {
    local prefix=$1 label=$2 pidfile=$1/logs/nginx.pid pid workers w
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        [ -s "$pidfile" ] && break
        [ -e "$prefix/.starting" ] || return 0
        sleep 0.1
    done
    [ -s "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    [[ $pid =~ ^[0-9]+$ ]] && edge_running "$pid" || return 0
    workers=$(pgrep -P "$pid" || true)
    kill -QUIT "$pid" 2> /dev/null || true
    for _ in $(seq 1 60); do
        edge_running "$pid" || break
        sleep 0.1
    done
    if edge_running "$pid"; then
        echo "$label (pid $pid) did not stop on QUIT, killing it" >&2
        workers="$workers $(pgrep -P "$pid" || true)"
        # shellcheck disable=SC2086
        kill -KILL "$pid" $workers 2> /dev/null || true
    else
        # the master is gone; a worker it left behind would hold the port
        # (checked by name: the pid could have been reused meanwhile)
        for w in $workers; do
            if tr '\0' ' ' 2> /dev/null < "/proc/$w/cmdline" | grep -q '^nginx: worker'; then
                kill -KILL "$w" 2> /dev/null || true
            fi
        done
    fi
    return 0
}

# free_port: a free TCP port on 127.0.0.1
free_port() {
    perl -MIO::Socket::INET -e '
        my $s = IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => 0,
                                      Listen => 1, ReuseAddr => 1) or die $!;
        print $s->sockport, "\n";'
}

# wait_for SECONDS COMMAND...: poll until COMMAND succeeds, at most SECONDS
wait_for() {
    local deadline=$((SECONDS + $1)); shift
    until "$@" > /dev/null 2>&1; do
        [ $SECONDS -lt "$deadline" ] || return 1
        sleep 0.1
    done
}

# --- the target nginx ---------------------------------------------------------
# NGINX names the nginx binary the modules are built for, tested with and
# benchmarked against (default /usr/sbin/nginx, Debian's nginx-core).

# edge_nginx_bin: $NGINX as an absolute path (a bare name is looked up on
# PATH); fails with a message when it is not an executable
edge_nginx_bin() {
    local bin=${NGINX:-/usr/sbin/nginx}
    if [[ $bin != */* ]]; then
        bin=$(command -v "$bin") || {
            echo "NGINX=$NGINX: no such command on PATH" >&2; return 1; }
    fi
    if [ ! -f "$bin" ] || [ ! -x "$bin" ]; then
        echo "NGINX=$bin: not an executable nginx binary" >&2
        return 1
    fi
    (cd "$(dirname "$bin")" && printf '%s/%s\n' "$(pwd -P)" "$(basename "$bin")")
}

# edge_nginx_version BIN: its version, e.g. 1.22.1 (from `nginx -V`)
edge_nginx_version() {
    "$1" -V 2>&1 | sed -n 's,^nginx version: [^/]*/\([0-9][0-9.]*\).*,\1,p' | head -1
}

# edge_nginx_configure_args BIN: the arguments BIN was configured with, one
# per line, unquoted the way the shell that ran configure did
edge_nginx_configure_args() {
    "$1" -V 2>&1 | sed -n 's/^configure arguments: //p' | perl -MText::ParseWords -ne '
        chomp;
        my @w = shellwords($_);
        die "cannot split the configure arguments: $_\n" if length && !@w;
        print "$_\n" for @w;'
}

# edge_nginx_static BIN: BIN has the edge modules compiled in (a static
# build with --add-module=<this repo>): its module table names them
edge_nginx_static() {
    grep -q -a -F ngx_http_ratelimit_module "$1"
}
