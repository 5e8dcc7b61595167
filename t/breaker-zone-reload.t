# The breaker_zone across reloads (ngx_http_breaker_circuit.c, zone part;
# ngx_http_breaker_module.c and _peer.c, init_module):
#
# - a circuit whose number of buckets changed is replaced by a new one, a
#   circuit whose name is gone is no longer used: both are retired and
#   freed once the workers of the older configuration have exited, so a
#   small zone does not fill up however many reloads change them;
# - a new metrics catalog (a new stats zone, its gauges at 0) after a
#   reload: the state gauges of the peer circuits (and the route ones)
#   start from the circuits' stored states, still open.
#
# - the same for the breaker_shed_zone (ngx_http_breaker_shed.c, zone
#   part): a shedder whose name is gone is retired and freed once the
#   workers of the older configuration have exited, never while one of
#   them still holds a permit on it (its request completes, the permit
#   is given back on the same node).
#
# Real nginx, master and two workers, reloaded with SIGHUP; each reload
# waits until every worker is a new one (the old ones have exited).
use strict;
use warnings;

use Test::More;
use Test::Edge qw(wait_until);
use Test::Edge::Nginx;
use IO::Socket::INET;

my $Slow = $Test::Edge::Valgrind::Slowdown;

# rewrites nginx.conf with $edit, sends HUP, waits for two new workers
sub reload {
    my ($n, $edit, $what) = @_;
    $n->edit_conf($edit);
    my %old = map { $_ => 1 } $n->worker_pids;
    kill 'HUP', $n->master_pid;
    return wait_until(20, sub {
        my @w = $n->worker_pids;
        return @w == 2 && !grep { $old{$_} } @w;
    }) || do { diag("no reload ($what)"); 0 };
}

sub metric {
    my ($n, $series) = @_;
    my $body = $n->get('/metrics?family=nginx_breaker_state')->{body};
    return $body =~ /^nginx_\Q$series\E (\S+)$/m ? $1 + 0 : undef;
}

sub zone_fill {
    my ($n, $zone) = @_;
    my $body = $n->get('/health')->{body};
    return $body =~ /\{[^{}]*"zone":\s*"\Q$zone\E"[^{}]*\}/
        && $& =~ /"pages_free":\s*(\d+)/ ? $1 : undef;
}

# --- 1. many reloads changing buckets= and the circuits' names: the zone
# does not fill up

{
    # four circuits of 10 or 20 buckets (in slab slots of 512 or 1,024
    # bytes), and one more whose name changes every reload, in a 32k zone
    # (6 pages, one and a half taken by the zone's own state): those of
    # two configurations fit, those of five do not
    my $circuits = join '', map {
        "    breaker_circuit c$_ zone=br buckets=10 window=10s;\n"
    } 1 .. 4;
    my $locations = join '', map {
        "        location = /c$_ { breaker c$_; "
        . "proxy_pass http://127.0.0.1:\$PORT/ok; }\n"
    } 1 .. 4;
    my $n = Test::Edge::Nginx->start(workers => 2, http => <<"HTTP");
    breaker_zone br 32k;
$circuits    breaker_circuit named0 zone=br;
    server {
        listen 127.0.0.1:\$PORT;
        location = /ok { return 200 "ok\\n"; }
$locations        location = /named { breaker named0;
            proxy_pass http://127.0.0.1:\$PORT/ok; }
        location = /health { breaker_health ready shm=off circuits=off; }
        location = /status { breaker_status_endpoint; }
    }
HTTP

    my @free;
    my $reloads = 30;
    my $ok = 1;
    for my $k (1 .. $reloads) {
        my $buckets = $k % 2 ? 20 : 10;
        $ok &&= reload($n, sub {
            $_[0] =~ s/buckets=\d+/buckets=$buckets/g;
            $_[0] =~ s/named\d+/named$k/g;
        }, "reload $k");
        last unless $ok;
        push @free, zone_fill($n, 'br');
    }
    ok($ok, "$reloads reloads, each changing buckets= and a circuit's name");
    my @full = $n->log =~ /(breaker_zone "br" is full.*)/g;
    is(scalar @full, 0, 'the zone never ran out: every circuit was created')
        or diag("$full[0] (and " . (@full - 1) . ' more)');
    for my $c (1 .. 4) {
        is($n->get("/c$c")->{status}, 200, "circuit c$c serves");
    }
    is($n->get('/named')->{status}, 200, "circuit named$reloads serves");
    my $doc = $n->get('/status')->{body};
    my @names = sort $doc =~ /"name":\s*"((?:c\d|named\d+))"/g;
    is("@names", "c1 c2 c3 c4 named$reloads",
       'the status document lists the circuits of the configuration');
    ok(defined $free[2] && defined $free[-1], 'pages_free read from the '
       . 'health document') or diag($n->get('/health')->{body});
    # from the second reload on: the circuits of this configuration and of
    # the previous one (retired, freed at the next reload), the same pages
    # freed and taken again (compared after reloads of the same parity)
    cmp_ok($free[-1] // -1, '>=', ($free[3] // 0) - 1,
           "the zone's free pages stay put (after reload 4: $free[3], "
           . "after $reloads: $free[-1])");
    is(scalar(() = $n->log =~ /\[(?:alert|crit|emerg)\]/g), 0, 'no alert');
    $n->stop;
}

# --- 2. a new metrics catalog after a reload: the gauge of an open peer
# circuit says open

{
    my %port = map { $_ => Test::Edge::Nginx::free_port() } qw(A B);
    my $n = Test::Edge::Nginx->start(workers => 2, http => <<"HTTP");
    metrics_zone 1m;
    breaker_zone peers 1m;
    breaker_circuit route zone=peers min_calls=5 failure_rate=50
                    open=60s jitter=0;
    upstream backend {
        server 127.0.0.1:$port{A} max_fails=0;
        server 127.0.0.1:$port{B} max_fails=0;
        breaker_peers zone=peers min_calls=5 open=60s jitter=0;
    }
    server { listen 127.0.0.1:$port{A}; location / { return 200 "A\\n"; } }
    server { listen 127.0.0.1:$port{B}; location / { return 500; } }
    server {
        listen 127.0.0.1:\$PORT;
        location = /metrics { metrics; }
        location / { proxy_pass http://backend; }
        location = /route { breaker route;
            proxy_pass http://127.0.0.1:$port{B}/; }
    }
HTTP
    my $peer = "breaker_state{circuit=\"backend/127.0.0.1:$port{B}\"}";
    my $route = 'breaker_state{circuit="route"}';
    ok(wait_until(30, sub {
        $n->get('/x') for 1 .. 10;
        return (metric($n, $peer) // 0) == 1;
    }), 'the peer circuit of B opens: gauge 1');
    ok(wait_until(30, sub {
        $n->get('/route') for 1 .. 6;
        return (metric($n, $route) // 0) == 1;
    }), 'the route circuit opens: gauge 1');

    # one more circuit: a new catalog in edge_stats_breaker
    ok(reload($n, sub {
        $_[0] =~ s/(breaker_zone peers 1m;)/$1\n    breaker_circuit extra zone=peers;/;
    }, 'new catalog'), 'reloaded with one more circuit (a new stats zone)');
    is(metric($n, 'breaker_state{circuit="extra"}'), 0,
       'the new circuit is in the catalog: closed');
    is(metric($n, $peer), 1, 'the peer circuit is still open: gauge 1');
    is(metric($n, $route), 1, 'the route circuit is still open: gauge 1');
    my @served = map { $n->get('/x')->{body} } 1 .. 10;
    is(scalar(grep { $_ eq "A\n" } @served), 10,
       'and B is still ejected (A served all 10)');
    is(scalar(() = $n->log =~ /\[(?:alert|crit|emerg)\]/g), 0, 'no alert');
    $n->stop;
}

# --- 3. many reloads renaming a shedder: the breaker_shed_zone does not
# fill up

{
    # a shedder's node takes 3 pages (its per-slot counts); a 64k zone
    # has 15, 2 for the zone's own state: the two shedders of one
    # configuration and the one the previous configuration retired fit,
    # five do not
    my $n = Test::Edge::Nginx->start(workers => 2, http => <<"HTTP");
    breaker_shed_zone sz 64k;
    breaker_shedder keep zone=sz limit=10;
    breaker_shedder named0 zone=sz limit=10;
    server {
        listen 127.0.0.1:\$PORT;
        location = /ok { return 200 "ok\\n"; }
        location = /keep { breaker_shed keep;
            proxy_pass http://127.0.0.1:\$PORT/ok; }
        location = /named { breaker_shed named0;
            proxy_pass http://127.0.0.1:\$PORT/ok; }
        location = /health { breaker_health ready shm=off circuits=off; }
        location = /status { breaker_status_endpoint; }
    }
HTTP

    my @free;
    my $reloads = 30;
    my $ok = 1;
    for my $k (1 .. $reloads) {
        $ok &&= reload($n, sub { $_[0] =~ s/named\d+/named$k/g; },
                       "reload $k");
        last unless $ok;
        push @free, zone_fill($n, 'sz');
    }
    ok($ok, "$reloads reloads, each renaming a shedder");
    my $log = $n->log;
    my @full = $log =~ /(.*(?:is too small|no memory|is full).*)/g;
    is(scalar @full, 0, 'the zone never ran out: every shedder was created')
        or diag("$full[0] (and " . (@full - 1) . ' more)');
    is($n->get('/keep')->{status}, 200, 'shedder keep serves');
    is($n->get('/named')->{status}, 200, "shedder named$reloads serves");
    my $doc = $n->get('/status')->{body};
    my ($shedders) = $doc =~ /"shedders":\s*(\[.*)/s;
    my @names = sort(($shedders // '') =~ /"name":\s*"([^"]+)"/g);
    is("@names", "keep named$reloads",
       'the status document lists the shedders of the configuration');
    ok(defined $free[2] && defined $free[-1], 'pages_free read from the '
       . 'health document') or diag($n->get('/health')->{body});
    # from the second reload on: this configuration's shedders and the one
    # the previous one retired (freed at the next reload)
    cmp_ok($free[-1] // -1, '>=', $free[2] // 0,
           "the zone's free pages stay put (after reload 3: "
           . ($free[2] // 'none') . ", after $reloads: "
           . ($free[-1] // 'none') . ')');
    is(scalar(() = $log =~ /\[(?:alert|crit|emerg)\]/g), 0, 'no alert');
    $n->stop;
}

# --- 4. a reload removes a shedder while a request holds its permit: the
# node is kept while the old worker lives, the request completes and
# gives the permit back on it

{
    my $n = Test::Edge::Nginx->start(workers => 1, http => <<"HTTP");
    breaker_shed_zone sz2 64k;
    breaker_shedder victim zone=sz2 limit=1;
    server {
        listen 127.0.0.1:\$PORT;
        location = /ok { return 200 "ok\\n"; }
        location = /hold { breaker_shed victim;
            proxy_pass http://127.0.0.1:\$PORT/ok; }
        location = /status { breaker_status_endpoint; }
    }
HTTP

    # the shedder's in_flight in the status document, undef if not listed
    my $in_flight = sub {
        my ($name) = @_;
        my $doc = $n->get('/status')->{body};
        my ($shedders) = $doc =~ /"shedders":\s*(\[.*)/s;
        return undef unless defined $shedders;
        for my $o ($shedders =~ /(\{[^{}]*"name":\s*"\Q$name\E"[^{}]*)/g) {
            return $1 + 0 if $o =~ /"in_flight":\s*(\d+)/;
        }
        return undef;
    };
    # rewrites nginx.conf, HUP; the reload has taken effect when the
    # workers before it have exited (but the one holding the request, $old)
    # and $ready
    my $old = 0;
    my $hup = sub {
        my ($edit, $ready) = @_;
        my %before = map { $_ => 1 } grep { $_ != $old } $n->worker_pids;
        $n->edit_conf($edit);
        kill 'HUP', $n->master_pid;
        return wait_until(20, sub {
            my @w = grep { $_ != $old } $n->worker_pids;
            return @w == 1 && !$before{$w[0]} && $ready->();
        });
    };

    # the request takes the permit (PRECONTENT), then nginx waits for its
    # body before proxying: it holds the permit until the test sends it
    my $held = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                     PeerPort => $n->port) or die $!;
    print $held "POST /hold HTTP/1.0\r\nHost: x\r\nContent-Length: 4\r\n\r\n";
    ok(wait_until(10, sub { ($in_flight->('victim') // -1) == 1 }),
       'a request holds the permit of shedder victim');
    ($old) = $n->worker_pids;

    ok($hup->(sub { s/victim/gone/g for $_[0] },
              sub { defined $in_flight->('gone') }),
       'reload: victim removed (renamed gone)');
    ok(kill(0, $old), 'the old worker still runs (the request is in flight)');
    my $fresh = "    breaker_shedder fresh zone=sz2 limit=3;\n";
    ok($hup->(sub { $_[0] =~ s/(breaker_shedder gone[^\n]*\n)/$1$fresh/ },
              sub { defined $in_flight->('fresh') }),
       'reload: a new shedder, allocated while victim is retired');
    is($in_flight->('fresh'), 0, 'the new shedder has no permit taken')
        or diag($n->get('/status')->{body});
    ok(kill(0, $old), 'the old worker still runs');
    ok($hup->(sub { s/gone/victim/g for $_[0] },
              sub { defined $in_flight->('victim') }),
       'reload: victim is back');
    is($in_flight->('victim'), 1, 'it is the same node: the old worker\'s '
       . 'permit is still counted (it was not freed)');
    is($n->get('/hold')->{status}, 503, 'and the limit of 1 is taken');

    print $held "data";
    my $resp = eval {
        local $SIG{ALRM} = sub { die "no response\n" };
        alarm(30 * $Slow);
        my $r = do { local $/; <$held> };
        alarm(0);
        $r;
    } // '';
    close $held;
    like($resp, qr{^HTTP/1\.1 200 .*\r\n\r\nok\n\z}s,
         'the held request completes: 200 ok');
    ok(wait_until(10, sub { ($in_flight->('victim') // -1) == 0 }),
       'its permit is given back on that node');
    ok(wait_until(20, sub { !kill(0, $old) }), 'the old worker exits');
    is($in_flight->('fresh'), 0, 'the new shedder was not touched');

    # one more reload frees what is retired (nothing now: gone is victim);
    # remove fresh, then remove it for good with another
    ok($hup->(sub { s/[^\n]*fresh[^\n]*\n//g for $_[0] },
              sub { !defined $in_flight->('fresh') }),
       'reload: fresh removed');
    ok($hup->(sub { $_[0] =~ s/limit=1;/limit=2;/ },
              sub { $n->get('/hold')->{status} == 200 }),
       'reload: fresh freed');
    my $log = $n->log;
    my @exits = $log =~ /(worker process \d+ exited .*)/g;
    ok(@exits >= 3, scalar(@exits) . ' old workers exited');
    is(scalar(grep { !/exited with code 0\b/ } @exits), 0,
       'every one with code 0') or diag(join "\n", @exits);
    is(scalar(() = $log =~ /\[(?:alert|crit|emerg)\]/g), 0, 'no alert');
    $n->stop;
}

done_testing();
