# shellcheck shell=bash
# Helpers for bench/run.sh: ports, waiting, rendering the nginx templates,
# starting and stopping nginx by its pid file, and reading wrk's output.
# Sourced, not run.

bench_say() { printf 'bench: %s\n' "$*"; }
bench_die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }

# http_ok URL: true if URL answers 200
http_ok() {
    [ "$(curl -s -o /dev/null -m 5 -w '%{http_code}' "$1")" = 200 ]
}

# edge_running and edge_nginx_stop, shared with the demo
# shellcheck source=../scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"

running() { edge_running "$@"; }

# redis_stop DIR: stop the redis-server whose pid file is DIR/redis.pid
# (TERM, up to 5 s, then KILL); nothing when there is none
redis_stop() {
    local p
    [ -s "$1/redis.pid" ] || return 0
    p=$(cat "$1/redis.pid")
    kill -TERM "$p" 2> /dev/null || true
    for _ in $(seq 1 50); do running "$p" || break; sleep 0.1; done
    if running "$p"; then kill -KILL "$p" 2> /dev/null || true; fi
}

# render_conf TEMPLATE SCENARIO OUTPUT
#
# Copies TEMPLATE to OUTPUT.  A line holding only @SCENARIO_MAIN@,
# @SCENARIO_HTTP@, @SCENARIO_SERVER@ or @SCENARIO_LOCATION@ is replaced by
# that section of the SCENARIO file (sections start at a line
# "# --- main ---", "# --- http ---", "# --- server ---" or
# "# --- location ---"; what comes before the first one is the scenario's
# description).  Then every @NAME@ outside comments is replaced by
# $EDGE_NAME; a placeholder without a value is an error.  SCENARIO may be
# empty: no sections.  With EDGE_STATIC_MODULES set (nginx has the edge
# modules compiled in), a line loading one of them becomes a comment.
render_conf() {
    perl -e '
        use strict; use warnings;
        my ($template, $scenario) = @ARGV;
        my %section = map { $_ => "" } qw(main http server location);
        if ($scenario ne "") {
            open my $s, "<", $scenario or die "$scenario: $!\n";
            my $cur;
            while (<$s>) {
                if (/^#\s*---\s*(\S+)\s*---\s*$/) {
                    exists $section{$1}
                        or die "$scenario:$.: unknown section \"$1\" "
                             . "(main, http, server, location)\n";
                    $cur = $1;
                    next;
                }
                $section{$cur} .= $_ if defined $cur;
            }
        }
        open my $t, "<", $template or die "$template: $!\n";
        my $text = do { local $/; <$t> };
        $text =~ s{^([ \t]*)\@SCENARIO_(MAIN|HTTP|SERVER|LOCATION)\@[ \t]*\n}{
            my ($indent, $name) = ($1, lc $2);
            my $body = $section{$name};
            $body =~ s/^(?=.)/$indent/mg;     # indent it like the marker
            "$indent# -- scenario $name --\n$body";
        }mge;
        for my $line (split /^/, $text) {
            $line =~ s{^(\s*)(load_module\s+\S*/ngx_http_(?:ratelimit|metrics|cache|breaker)_module\.so\s*;)}{$1# compiled in: $2}
                if $ENV{EDGE_STATIC_MODULES};
            $line =~ s{\@([A-Z][A-Z0-9_]*)\@}{
                defined $ENV{"EDGE_$1"} ? $ENV{"EDGE_$1"}
                    : die "unknown placeholder \@$1\@ (in $template or $scenario)\n"
            }ge unless $line =~ /^\s*#/;
            print $line;
        }
    ' "$1" "$2" > "$3"
}

# nginx_start PREFIX: start $nginx with PREFIX/conf/nginx.conf; on failure
# show why, with the configuration numbered, and return 1
nginx_start() {
    local prefix=$1
    mkdir -p "$prefix/logs" "$prefix/temp"
    # .starting tells nginx_stop (run by a Ctrl-C now) to wait for the pid file
    touch "$prefix/.starting"
    if ! "${nginx:?the caller sets nginx}" -p "$prefix/" -c conf/nginx.conf 2> "$prefix/start.log"; then
        rm -f "$prefix/.starting"
        echo "bench: nginx did not start:" >&2
        sed 's/^/    /' "$prefix/start.log" >&2
        echo "bench: the configuration was ($prefix/conf/nginx.conf):" >&2
        cat -n "$prefix/conf/nginx.conf" >&2
        return 1
    fi
    wait_for 5 test -s "$prefix/logs/nginx.pid" || true
    rm -f "$prefix/.starting"
}

# nginx_stop PREFIX: stop the bench nginx in PREFIX (see edge_nginx_stop)
nginx_stop() {
    edge_nginx_stop "$1" "bench: nginx"
}


# parse_wrk FILE: prints "rps p50_ms p90_ms p99_ms requests non2xx sockerr"
# from the output of `wrk --latency`; a missing value is "-"
# cpu_ticks PID...: the CPU time (user + system, in clock ticks) that the
# processes and their children (an nginx master's workers) have used so
# far; a process gone counts 0
cpu_ticks() {
    local p pids=() total=0 t
    for p in "$@"; do
        pids+=("$p")
        # shellcheck disable=SC2207
        pids+=($(pgrep -P "$p" 2> /dev/null || true))
    done
    for p in "${pids[@]}"; do
        # fields 14 and 15 of /proc/PID/stat, counted after the ")" that
        # ends the command name (which may hold spaces)
        t=$(sed 's/^.*) //' "/proc/$p/stat" 2> /dev/null | awk '{ print $12 + $13 }') || t=0
        total=$((total + ${t:-0}))
    done
    echo "$total"
}

parse_wrk() {
    awk '
        function ms(v,   n, u) {       # "489.00us", "2.08ms", "1.01s", "1.50m"
            n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
            if (u == "us") return n / 1000
            if (u == "ms") return n
            if (u == "s")  return n * 1000
            if (u == "m")  return n * 60000
            if (u == "h")  return n * 3600000
            return -1
        }
        $1 == "50%" { p50 = ms($2) }
        $1 == "90%" { p90 = ms($2) }
        $1 == "99%" { p99 = ms($2) }
        $1 == "Requests/sec:" { rps = $2 }
        $2 == "requests" && $3 == "in" { total = $1 }
        /Non-2xx or 3xx responses:/ { non2xx = $NF }
        /Socket errors:/ {          # connect N, read N, write N, timeout N
            for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) sockerr += $i
        }
        END {
            if (rps == "") { print "- - - - - - -"; exit }
            printf "%s %s %s %s %s %d %d\n", rps,
                   p50 == "" ? "-" : p50, p90 == "" ? "-" : p90,
                   p99 == "" ? "-" : p99, total == "" ? "-" : total,
                   non2xx, sockerr
        }' "$1"
}


# scenario_opt FILE NAME: the value of a line "# @NAME value" in the
# description of a scenario file (before its first section); empty if none
scenario_opt() {
    awk -v name="@$2" '
        /^#[[:space:]]*---[[:space:]]*[a-z]+[[:space:]]*---[[:space:]]*$/ { exit }
        $1 == "#" && $2 == name {
            sub(/^#[[:space:]]*@[^[:space:]]+[[:space:]]*/, "")
            sub(/[[:space:]]+$/, "")
            print
            exit
        }' "$1"
}


# make_bodies DIR: writes the backend's response bodies into DIR:
# body-1k.json (1,024 bytes) and body-100k.json (102,400 bytes), API-like
# JSON (a page of product records with ids, names, prices, dates, tags, a
# notice and an opaque cursor) from a fixed seed, so that every run and every machine
# serves the same bytes.  Realistic text matters for the cache: it is what
# compression works on ('x' x 1024 would compress to almost nothing).
make_bodies() {
    perl -e '
        use strict; use warnings;
        my $dir = shift;
        my @adj  = qw(stainless compact wireless organic vintage ergonomic
                      foldable waterproof modular recycled insulated classic);
        my @noun = qw(bottle backpack lamp keyboard kettle jacket speaker
                      notebook chair blender tent headphones mug charger);
        my @tag  = qw(outdoor kitchen office travel audio home garden sport
                      kids gift sale new eco premium);
        my @cur  = qw(EUR USD GBP);
        my @b64  = ("A".."Z", "a".."z", 0..9, "-", "_");
        sub pick { $_[int rand @_] }
        sub cursor { join "", map { pick(@b64) } 1 .. $_[0] }
        sub item {
            my $id = 100000 + int rand 900000;
            my $name = ucfirst(pick(@adj)) . " " . pick(@noun) . " "
                       . (10 * (1 + int rand 99)) . (pick("ml", "cm", "g", "W"));
            my %t; $t{pick(@tag)} = 1 for 1 .. 1 + int rand 3;
            sprintf q({"id":%d,"sku":"%s-%04d","name":"%s","price":{"amount":%.2f,"currency":"%s"},)
                  . q("in_stock":%s,"stock":%d,"rating":%.1f,"reviews":%d,"tags":[%s],)
                  . q("updated_at":"2026-%02d-%02dT%02d:%02d:%02dZ"}),
                $id, uc(substr(pick(@noun), 0, 3)), int rand 10000, $name,
                1 + rand 500, pick(@cur), (rand() < .8 ? "true" : "false"),
                int rand 2000, 1 + rand 4, int rand 5000,
                join(",", map { qq("$_") } sort keys %t),
                1 + int rand 12, 1 + int rand 28, int rand 24, int rand 60,
                int rand 60;
        }
        my @word = qw(free delivery on orders over 50 within the EU returns
                      accepted for 30 days prices include VAT stock levels
                      update every few minutes see our terms for details);
        sub words {
            my $n = shift; my $t = "";
            $t .= ($t eq "" ? "" : " ") . pick(@word) while length $t < $n;
            return substr $t, 0, $n;
        }
        # items while they fit, then a notice of words pads to the exact
        # size, before a 24-character opaque cursor
        sub page {
            my $size = shift;
            my $head = q({"page":1,"items":[);
            my $tail = q(],"notice":");
            my $end = q(","next_cursor":") . cursor(24) . qq("}\n);
            my @items;
            while (1) {
                my $it = item();
                my $len = length($head) + length($tail) + length($end)
                          + length(join ",", @items, $it) + 40;
                last if $len > $size;
                push @items, $it;
            }
            my $body = $head . join(",", @items) . $tail;
            return $body . words($size - length($body) - length($end)) . $end;
        }
        srand 20261130;
        for ([ "body-1k.json", 1024 ], [ "body-100k.json", 102400 ]) {
            my ($file, $size) = @$_;
            open my $f, ">", "$dir/$file" or die "$dir/$file: $!\n";
            print $f page($size);
            close $f or die "$dir/$file: $!\n";
        }
    ' "$1"
}


# expect_header URL REGEX FILE: true if a GET of URL answers with a header
# line matching the extended REGEX (case-insensitive); the response's
# header (or curl's complaint) is left in FILE
expect_header() {
    # asked twice: a scenario's state may turn over once between the run
    # and the check (a cache's hot copy past hot_max_age is read from
    # Redis by the first GET, which renews it for the second)
    local try
    for try in 1 2; do
        curl -sS -o /dev/null -D - -m 5 "$1" 2>&1 | tr -d '\r' > "$3" || true
        grep -qiE "$2" "$3" && return 0
    done
    return 1
}
