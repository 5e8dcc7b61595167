# Per-peer circuits (breaker_peers in an upstream{} block): a bad peer is
# ejected and gets no traffic while the others serve every request; a 5xx
# that nginx does not retry is counted; retries count per peer; the
# ejection cap; the half-open probe and the recovery; composition with
# keepalive (before and after), hash and least_conn; two workers agree.
#
# The peers are server blocks of the same nginx on their own ports: "good"
# ones answer 200, a "bad" one 500 (until a file exists: then it is
# healed), a "down" one is a port nothing listens on.  Every response of
# the proxy carries $upstream_addr (every peer this request tried) and the
# worker's pid, so traffic is counted per peer and per worker.
# nginx's own max_fails is off (max_fails=0): what ejects a peer here is
# its circuit.

use strict;
use warnings;

use Test::More;
use Test::Edge qw(wait_until);
use Test::Edge::Nginx;
use Test::Edge::Origin;
use IO::Socket::INET;
use File::Temp qw(tempdir);

my $tmp = tempdir(CLEANUP => 1);

# three peers A, B, C; %o: bad => [names] (answering status, 500 by
# default), down => [names], balancer =>
# text before breaker_peers, after => text after it, peers => the
# breaker_peers parameters, location => extra proxy location directives
sub start_proxy {
    my (%o) = @_;
    $o{$_} //= "" for qw(balancer after location peers);
    $o{next} //= "off";
    $o{status} //= 500;
    my %port = map { $_ => Test::Edge::Nginx::free_port() } qw(A B C);
    # origin => Test::Edge::Origin: peer B is that origin
    $port{B} = $o{origin}->port if $o{origin};
    my %bad = map { $_ => 1 } @{ $o{bad} // [] };
    my %down = map { $_ => 1 } @{ $o{down} // [] };
    my $heal = "$tmp/healed-" . int(rand(1e9));
    my $peers = '';
    for my $p (qw(A B C)) {
        next if $down{$p} || ($p eq 'B' && $o{origin});
        my $answer = $bad{$p}
            ? "if (-f $heal) { return 200 \"$p\\n\"; } return $o{status};"
            : "return 200 \"$p\\n\";";
        $peers .= "    server { listen 127.0.0.1:$port{$p}; "
            . "location / { $answer } }\n";
    }
    my $fails = $o{max_fails} // 'max_fails=0';
    my $servers = join '',
        map { "        server 127.0.0.1:$port{$_} $fails;\n" } qw(A B C);
    my $breaker = $o{nobreaker} ? '' : "breaker_peers zone=peers $o{peers};";
    my $n = Test::Edge::Nginx->start(workers => 2, http => <<"HTTP");
    metrics_zone 1m;
    breaker_zone peers 1m;
    upstream backend {
$servers
        $o{balancer}
        $breaker
        $o{after}
    }
$peers
    server {
        listen 127.0.0.1:\$PORT reuseport;
        location = /metrics { metrics; }
        location / {
            proxy_pass http://backend;
            proxy_next_upstream $o{next};
            $o{location}
            add_header X-Upstream \$upstream_addr always;
            add_header X-Pid \$pid always;
        }
    }
HTTP
    my %name = map { ("127.0.0.1:$port{$_}" => $_) } qw(A B C);
    return { n => $n, port => \%port, name => \%name, heal => $heal };
}

# COUNT requests: statuses, attempts per peer (from $upstream_addr),
# requests with more than one attempt, workers seen
sub sample {
    my ($p, $count, %o) = @_;
    my %s = (ok => 0, failed => 0, retried => 0,
             peer => { A => 0, B => 0, C => 0 }, pids => {});
    for my $i (1 .. $count) {
        my $path = $o{path} ? $o{path}->($i) : "/$i";
        my $res = $o{method}
            ? $p->{n}->request($o{method}, $path, body => 'x')
            : $p->{n}->get($path);
        $res->{status} == 200 ? $s{ok}++ : $s{failed}++;
        my @tried = split /,\s*/, $res->{headers}{'x-upstream'} // '';
        $s{retried}++ if @tried > 1;
        $s{peer}{ $p->{name}{$_} // '?' }++ for @tried;
        $s{pids}{ $res->{headers}{'x-pid'} // '?' }++;
    }
    return \%s;
}

# sends batches until a batch of 20 sends nothing to PEER: its circuit
# is open (with sequential requests and two of three peers left, 20
# requests that all avoid a closed peer are not round robin)
sub until_ejected {
    my ($p, $peer, %o) = @_;
    my %total = (failed => 0, ok => 0, requests => 0);
    my $ejected = wait_until(30, sub {
        my $s = sample($p, 20, %o);
        $total{$_} += $s->{$_} for qw(failed ok);
        $total{requests} += 20;
        return $s->{peer}{$peer} == 0 && $s->{failed} == 0;
    });
    return ($ejected, \%total);
}

# a series of the metrics endpoint, 0 when absent
sub metric {
    my ($p, $series) = @_;
    my $body = $p->{n}->get('/metrics')->{body};
    return $body =~ /^nginx_\Q$series\E (\S+)$/m ? $1 : 0;
}

# breaker_calls_total of PEER's circuit, for OUTCOME
sub calls {
    my ($p, $peer, $outcome) = @_;
    my $up = $p->{upstream} // 'backend';
    return metric($p, "breaker_calls_total{circuit=\"$up/127.0.0.1:"
                  . "$p->{port}{$peer}\",outcome=\"$outcome\"}");
}

sub no_errors {
    my ($p, $what) = @_;
    my @bad = grep { /\[(?:alert|crit|emerg)\]/ } split /\n/, $p->{n}->log;
    is(scalar @bad, 0, "$what: no alert in error.log") or diag join "\n", @bad;
}


# --- ejection: the bad peer gets no traffic, clients see no failure

{
    my $p = start_proxy(bad => ['B'], peers => 'min_calls=5 open=60s');
    my ($ejected, $before) = until_ejected($p, 'B');
    ok($ejected, 'round robin: the peer answering 500 is ejected');
    # min_calls=5 at 100 % failures: the fifth failure trips it; a request
    # admitted while another worker records the fifth adds at most one
    # per worker
    cmp_ok($before->{failed}, '>=', 5, 'it was judged on min_calls calls');
    cmp_ok($before->{failed}, '<=', 7, 'and tripped on them');

    my $s = sample($p, 300);
    is($s->{failed}, 0, '300 requests after ejection: no failure');
    is($s->{peer}{B}, 0, 'the ejected peer got none of them');
    cmp_ok($s->{peer}{A}, '>', 100, 'peer A took its share');
    cmp_ok($s->{peer}{C}, '>', 100, 'peer C took its share');
    is($s->{retried}, 0, 'no request needed a retry');
    is(scalar keys %{ $s->{pids} }, 2, 'both workers served (and agree)');
    no_errors($p, 'round robin');
    $p->{n}->stop;
}

# --- the same without breaker_peers, with nginx's own max_fails: the
# 500s are never noticed, a third of the requests keep failing

{
    my $p = start_proxy(bad => ['B'], nobreaker => 1, max_fails => '');
    sample($p, 30);
    my $s = sample($p, 60);
    # each worker's round robin cycles A, B, C: a third of its requests,
    # give or take one per worker
    cmp_ok($s->{peer}{B}, '>=', 17, 'without breaker_peers the bad peer '
           . 'keeps its third');
    is($s->{failed}, $s->{peer}{B}, 'and every request it gets fails');
    $p->{n}->stop;
}

# --- a 5xx nginx does not retry (POST, proxy_next_upstream off) counts

{
    my $p = start_proxy(bad => ['B'], peers => 'min_calls=5 open=60s');
    my ($ejected) = until_ejected($p, 'B', method => 'POST');
    ok($ejected, 'non-idempotent requests answered 500 eject the peer');
    my $s = sample($p, 100, method => 'POST');
    is($s->{failed}, 0, 'then no POST fails');
    is($s->{peer}{B}, 0, 'and none reaches the ejected peer');
    $p->{n}->stop;
}

# --- a peer that refuses connections

{
    my $p = start_proxy(down => ['B'], peers => 'min_calls=5 open=60s');
    my ($ejected, $before) = until_ejected($p, 'B');
    ok($ejected, 'a peer refusing connections is ejected');
    cmp_ok($before->{failed}, '<=', 7, 'after at most min_calls + workers '
        . 'failures');
    my $s = sample($p, 100);
    is($s->{failed}, 0, 'then no request fails');
    is($s->{peer}{B}, 0, 'and none is sent to it');
    cmp_ok(calls($p, 'B', 'connect_error'), '>=', 5,
           'its circuit counted connection errors');
    is(calls($p, 'B', 'failure') + calls($p, 'B', 'timeout'), 0,
       'and nothing else');
    $p->{n}->stop;
}

# --- the outcomes of a peer served by the programmable origin: a slow peer
# (latency per attempt, slow_call=), a peer that never answers
# (timeouts, counted apart), a client gone before the answer (ignored)

my $origin = Test::Edge::Origin->start;

{
    $origin->set('/slow', status => 200, body => "B\n", delay => 0.4);
    my $p = start_proxy(origin => $origin,
        peers => 'min_calls=5 slow_call=200ms slow_rate=50 open=60s');
    my ($ejected, $before) = until_ejected($p, 'B', path => sub { '/slow' });
    ok($ejected, 'a peer answering 200 slowly is ejected on slow_rate');
    is($before->{failed}, 0, 'its answers were not failures');
    is(calls($p, 'B', 'success'), $origin->hits('/slow'),
       'each of its attempts counted once, as a success');
    my $s = sample($p, 50, path => sub { '/slow' });
    is($s->{peer}{B}, 0, 'then it gets no traffic');
    $p->{n}->stop;
    $origin->reset;
}

{
    $origin->set('/hang', mode => 'hang');
    my $p = start_proxy(origin => $origin, peers => 'min_calls=5 open=60s',
                        location => 'proxy_read_timeout 300ms;');
    my ($ejected, $before) = until_ejected($p, 'B', path => sub { '/hang' });
    ok($ejected, 'a peer that never answers is ejected on timeouts');
    cmp_ok(calls($p, 'B', 'timeout'), '>=', 5, 'they are counted as '
           . 'timeouts');
    is(calls($p, 'B', 'connect_error') + calls($p, 'B', 'failure'), 0,
       'not as anything else');
    $p->{n}->stop;
    $origin->reset;
}

{
    $origin->set('/hang', mode => 'hang');
    my $oport = $origin->port;
    my $n = Test::Edge::Nginx->start(http => <<"HTTP");
    metrics_zone 1m;
    breaker_zone peers 1m;
    upstream solo {
        server 127.0.0.1:$oport max_fails=0;
        breaker_peers zone=peers min_calls=1 probes=1 open=60s;
    }
    server {
        listen 127.0.0.1:\$PORT;
        location = /metrics { metrics; }
        location / { proxy_pass http://solo; }
    }
HTTP
    my $p = { n => $n, port => { B => $oport }, upstream => 'solo' };
    my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $n->port) or die $!;
    print $c "GET /hang HTTP/1.0\r\nHost: localhost\r\n\r\n";
    ok(wait_until(10, sub { $origin->hits('/hang') == 1 }),
       'a request waits on the peer');
    close $c;
    ok(wait_until(10, sub { calls($p, 'B', 'ignored') == 1 }),
       'the client goes away: the attempt is ignored');
    is(calls($p, 'B', 'timeout') + calls($p, 'B', 'connect_error')
       + calls($p, 'B', 'failure'), 0, 'not counted against the peer');
    $origin->set('/ok', status => 200, body => "ok\n");
    is($n->get('/ok')->{status}, 200, 'with min_calls=1 the circuit is '
       . 'still closed');
    $n->stop;
    $origin->reset;
}

$origin->stop;

# --- retries count per peer: the failing peer's circuit sees the failure,
# the next peer's the success

{
    my $p = start_proxy(bad => ['B'], peers => 'min_calls=5 open=60s',
        next => "error http_500");
    my $first = sample($p, 6);
    is($first->{failed}, 0, 'with retries clients see no failure');
    cmp_ok($first->{retried}, '>=', 1, 'some requests were retried');
    my ($ejected, $before) = until_ejected($p, 'B');
    ok($ejected, 'the retried-away failures ejected the failing peer');
    is($before->{failed}, 0, 'no client saw them');
    my $s = sample($p, 100);
    is($s->{retried}, 0, 'after ejection nothing needs a retry');
    # every attempt counted for its own peer: B's are failures, the
    # retries that followed them successes of A and C
    my %tried = (A => 0, B => 0, C => 0);
    $tried{$_} += $first->{peer}{$_} + $s->{peer}{$_} for qw(A B C);
    my $b_fail = calls($p, 'B', 'failure');
    cmp_ok($b_fail, '>=', 5, 'the failing peer\'s circuit counted its '
        . 'failures (at least min_calls)');
    is(calls($p, 'B', 'success'), 0, 'and no success');
    is(calls($p, 'A', 'failure') + calls($p, 'C', 'failure'), 0,
       'the peers that answered the retries counted no failure');
    cmp_ok(calls($p, 'A', 'success'), '>=', $tried{A},
           'peer A counted its successes');
    cmp_ok(calls($p, 'C', 'success'), '>=', $tried{C},
           'peer C counted its successes');
    is(metric($p, "breaker_state{circuit=\"backend/127.0.0.1:$p->{port}{B}\"}"),
       1, 'the state gauge shows the peer open');
    cmp_ok(metric($p, "breaker_rejected_total{circuit=\"backend/127.0.0.1:"
                  . "$p->{port}{B}\"}"), '>=', 1,
           'requests steered away from it are counted');
    # had a retry's success been recorded for the failing peer, or its
    # failure for the next one, A or C would have tripped too
    cmp_ok($s->{peer}{A}, '>', 30, 'peer A, which answered the retries, '
        . 'is in the pool');
    cmp_ok($s->{peer}{C}, '>', 30, 'peer C too');
    $p->{n}->stop;
}

# --- the ejection cap: two of three peers bad

{
    my $p = start_proxy(bad => ['B', 'C'],
                        peers => 'min_calls=5 open=60s max_ejected=34%');
    # both trip; B (first in nginx.conf) stays ejected, C is used as if
    # closed: it keeps getting its share
    my $ok = wait_until(30, sub {
        my $s = sample($p, 20);
        return $s->{peer}{B} == 0 && $s->{peer}{C} > 0;
    });
    ok($ok, 'max_ejected=34% of three peers: one is ejected');
    my $s = sample($p, 100);
    is($s->{peer}{B}, 0, 'the first open peer in nginx.conf is the one');
    cmp_ok($s->{peer}{C}, '>', 30, 'the other open peer stays in the pool');
    cmp_ok($s->{peer}{A}, '>', 30, 'with the good one');
    $p->{n}->stop;

    $p = start_proxy(bad => ['B', 'C'],
                     peers => 'min_calls=5 open=60s max_ejected=67%');
    $ok = wait_until(30, sub {
        my $s = sample($p, 20);
        return $s->{peer}{B} == 0 && $s->{peer}{C} == 0;
    });
    ok($ok, 'max_ejected=67%: both bad peers are ejected');
    $s = sample($p, 50);
    is($s->{failed}, 0, 'and the good one serves everything');
    $p->{n}->stop;

    # max_ejected=0%: the circuits measure, nothing is ejected
    $p = start_proxy(bad => ['B'], peers => 'min_calls=5 open=60s '
                     . 'max_ejected=0%');
    sample($p, 30);
    is(metric($p, "breaker_state{circuit=\"backend/127.0.0.1:"
                  . "$p->{port}{B}\"}"), 1, 'max_ejected=0%: the circuit '
       . 'of the bad peer opens');
    $s = sample($p, 30);
    cmp_ok($s->{peer}{B}, '>=', 8, 'but the peer keeps its share');
    $p->{n}->stop;

    $p = start_proxy(bad => ['A', 'B', 'C'],
                     peers => 'min_calls=5 open=60s max_ejected=100%');
    sample($p, 60);
    $s = sample($p, 60);
    cmp_ok($s->{peer}{A} + $s->{peer}{B} + $s->{peer}{C}, '==', 60,
           'all three open, max_ejected=100%: the pool is never empty');
    is($s->{peer}{A} + $s->{peer}{B}, 0,
       'the last one in nginx.conf stays in');
    no_errors($p, 'cap');
    $p->{n}->stop;
}

# --- the state survives a reload: the new workers find the circuits of
# the same names in the zone, still open

{
    my $p = start_proxy(bad => ['B'], peers => 'min_calls=5 open=60s');
    my ($ejected) = until_ejected($p, 'B');
    ok($ejected, 'ejected before the reload');
    my @old = $p->{n}->worker_pids;
    open my $fh, '<', "$p->{n}{prefix}/logs/nginx.pid" or die $!;
    chomp(my $master = <$fh>);
    kill 'HUP', $master;
    my %old = map { $_ => 1 } @old;
    ok(wait_until(20, sub {
        my @now = $p->{n}->worker_pids;
        return @now == 2 && !grep { $old{$_} } @now;
    }), 'new workers after the reload');
    my $s = sample($p, 60);
    ok(!grep({ $old{$_} } keys %{ $s->{pids} }), 'served by the new workers');
    is($s->{peer}{B}, 0, 'the peer is still ejected');
    is($s->{failed}, 0, 'no request failed');
    no_errors($p, 'reload');
    $p->{n}->stop;
}

# --- half-open: after the open time a probe reaches the peer; it stays
# ejected while bad, and comes back once healed

{
    my $p = start_proxy(bad => ['B'],
                        peers => 'min_calls=5 open=1s probes=2 jitter=0');
    my ($ejected) = until_ejected($p, 'B');
    ok($ejected, 'ejected');
    # still bad: the probes fail, the circuit opens again (for 2 s: the
    # second open); five sequential requests take less than that
    my $probes = 0;
    my $probed = wait_until(20, sub {
        $probes = sample($p, 5)->{peer}{B};
        return $probes > 0;
    });
    ok($probed, 'after the open time the ejected peer gets a probe');
    cmp_ok($probes, '<=', 2, 'no more than probes=2 of them');
    open my $fh, '>', $p->{heal} or die $!;
    close $fh;
    my $back = wait_until(30, sub {
        my $s = sample($p, 30);
        return $s->{peer}{B} >= 8 && $s->{failed} == 0;
    });
    ok($back, 'healed, it is back in the pool with its share');
    no_errors($p, 'half-open');
    $p->{n}->stop;
}

# --- composition with other balancers and keepalive

my @compose = (
    [ 'hash', 'hash $arg_k;', '' ],
    [ 'consistent hash', 'hash $arg_k consistent;', '' ],
    [ 'least_conn', 'least_conn;', '' ],
    [ 'keepalive after breaker_peers', '', 'keepalive 8;' ],
    [ 'keepalive before breaker_peers', 'keepalive 8;', '' ],
    [ 'least_conn and keepalive before', "least_conn;\n keepalive 8;", '' ],
);

for my $c (@compose) {
    my ($what, $balancer, $after) = @$c;
    # nginx closes the connection after its own 500, not after a 503: the
    # bad peer's connections are kept alive, and a cached one is offered
    # for it after its ejection
    my $ka = 'proxy_http_version 1.1; proxy_set_header Connection "";';
    my $p = start_proxy(bad => ['B'], peers => 'min_calls=5 open=60s',
                        balancer => $balancer, after => $after,
                        location => $ka, status => 503);
    my $path = sub { "/?k=$_[0]" . int(rand(1e6)) };
    my ($ejected) = until_ejected($p, 'B', path => $path);
    ok($ejected, "$what: the bad peer is ejected");
    my $s = sample($p, 200, path => $path);
    is($s->{failed}, 0, "$what: no failure after ejection");
    is($s->{peer}{B}, 0, "$what: no traffic to the ejected peer");
    cmp_ok($s->{peer}{A}, '>', 20, "$what: A serves");
    cmp_ok($s->{peer}{C}, '>', 20, "$what: C serves");
    no_errors($p, $what);
    $p->{n}->stop;
}

done_testing;
