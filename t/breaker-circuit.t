# ngx_http_breaker_module, route circuits: every transition and threshold
# of the state machine through real requests, with a programmable origin
# (t/lib/Test/Edge/Origin.pm) as the upstream: min_calls, failure rate,
# the statuses list, connect errors and timeouts, slow calls, half-open
# probes (exactly N reach the origin), half-open wait, back-off, forced
# modes, fail-fast responses, the fallback, generations, client aborts.
#
# A location "/state" reads the variables without going through the
# breaker's handler (return runs before PRECONTENT): it shows the state as
# the next request would find it, and takes no probe.
use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time sleep);
use Test::Edge qw(wait_until);
use Test::Edge::Nginx;
use Test::Edge::Origin;
use Test::Edge::Valgrind;

my $o = Test::Edge::Origin->start;
# times a request may take are scaled by the harness's slowdown (valgrind)
my $S = $Test::Edge::Valgrind::Slowdown;
my $oport = $o->port;

sub http_conf {
    my ($circuit, %x) = @_;
    my $loc = $x{loc} // '';
    my $http = $x{http} // '';
    return <<"HTTP";
    metrics_zone 1m;
    breaker_zone br 1m;
    breaker_circuit up zone=br $circuit;
$http
    server {
        listen 127.0.0.1:\$PORT;
        location = /metrics { metrics; }
        location = /state {
            breaker up;
            return 200 "\$breaker_state|\$breaker_reason|\$breaker_retry_after\\n";
        }
        location / {
            breaker up;
            add_header X-State "\$breaker_state" always;
            add_header X-Reason "\$breaker_reason" always;
            proxy_read_timeout 60s;
            proxy_pass http://127.0.0.1:$oport;
$loc
        }
        location /fb/ { return 200 "fallback\\n"; }
    }
HTTP
}

sub state {
    my ($n) = @_;
    my $b = $n->get('/state')->{body} // '';
    chomp $b;
    return $b;
}

sub statuses {
    my ($n, $path, $k) = @_;
    return join ' ', map { $n->get($path)->{status} } 1 .. $k;
}

# the value of a series in /metrics
sub metric {
    my ($n, $series) = @_;
    my $body = $n->get('/metrics')->{body};
    return $body =~ /^nginx_\Q$series\E (\S+)$/m ? $1 : undef;
}


sub read_status {
    my ($s) = @_;
    local $/;
    my $raw = <$s> // '';
    close $s;
    return $raw =~ m{^HTTP/1\.\d (\d+)} ? $1 : 0;
}

$o->set('/ok', status => 200, body => "ok\n");
$o->set('/fail', status => 500, body => "fail\n");
$o->set('/404', status => 404, body => "nf\n");


subtest 'min_calls and failure_rate: the rate is judged once min_calls calls are in, at or above the threshold' => sub {
    my $n = Test::Edge::Nginx->start(
        http => http_conf('min_calls=10 failure_rate=50 open=30s jitter=0'));

    # 6 successes, 4 failures: 40 % of 10, closed
    is(statuses($n, '/ok', 6), '200 200 200 200 200 200', 'successes');
    is(statuses($n, '/fail', 4), '500 500 500 500', '4 failures of 10');
    like(state($n), qr/^closed\|/, 'closed at 40 %');

    # 5 of 11 (45 %): closed; 6 of 12 (50 %): open
    is($n->get('/fail')->{status}, 500, '5 of 11 passes');
    like(state($n), qr/^closed\|/, 'closed at 45 %');
    is($n->get('/fail')->{status}, 500, '6 of 12 passes (the one that trips)');
    like(state($n), qr/^open\|failure_rate\|(30|29)$/, 'open at 50 %');

    my $hits = $o->hits('/ok');
    my $r = $n->get('/ok');
    is($r->{status}, 503, 'fail fast: 503');
    like($r->{headers}{'retry-after'} // '', qr/^(30|29)$/,
         'Retry-After: the remaining open time, in seconds, rounded up');
    is($r->{headers}{'x-state'}, 'open', '$breaker_state');
    is($r->{headers}{'x-reason'}, 'failure_rate', '$breaker_reason');
    is($o->hits('/ok'), $hits, 'the refused request did not reach the origin');

    like($n->log, qr/\[warn\] .*breaker circuit "up": closed -> open \(failure_rate: 6 failed, 0 slow of 12 calls\), open for 30000 ms \(open #1\)/,
         'the transition is logged');
    my @lines = $n->log =~ /(closed -> open)/g;
    is(scalar @lines, 1, 'once');

    is(metric($n, 'breaker_transitions_total{circuit="up",to="open"}'), 1,
       'transitions counted');
    is(metric($n, 'breaker_state{circuit="up"}'), 1, 'state gauge: 1 (open)');
    is(metric($n, 'breaker_calls_total{circuit="up",outcome="failure"}'), 6,
       'failures counted');
    is(metric($n, 'breaker_calls_total{circuit="up",outcome="success"}'), 6,
       'successes counted');
    is(metric($n, 'breaker_rejected_total{circuit="up"}'), 1,
       'refusals counted');
    is(metric($n, 'breaker_call_duration_seconds_count{circuit="up"}'), 12,
       'call durations observed');
    unlike($n->log, qr/\[(error|alert|crit)\]/, 'no error');
    $n->stop;
};


subtest 'statuses: only the listed statuses are failures' => sub {
    my $n = Test::Edge::Nginx->start(
        http => http_conf('min_calls=2 failure_rate=100 open=30s'));
    is(statuses($n, '/404', 3), '404 404 404', '404 is not a failure');
    like(state($n), qr/^closed\|/, 'closed');
    $n->stop;

    $n = Test::Edge::Nginx->start(
        http => http_conf('min_calls=2 failure_rate=100 open=30s '
                          . 'statuses=404,503'));
    is(statuses($n, '/fail', 3), '500 500 500', '500 is not listed');
    like(state($n), qr/^closed\|/, 'closed');
    is(statuses($n, '/404', 2), '404 404', '404 listed');
    like(state($n), qr/^closed\|/, 'the 500s were successes: 2 of 5');
    is(statuses($n, '/404', 2), '404 404', 'two more');
    like(state($n), qr/^closed\|/, '4 of 7');
    $n->stop;

    # a non-retried 5xx (proxy_next_upstream does not retry a 500 by
    # default, so nginx's max_fails never sees it) is counted
    $n = Test::Edge::Nginx->start(
        http => http_conf('min_calls=3 failure_rate=100 open=30s'));
    is(statuses($n, '/fail', 3), '500 500 500', 'three 500s');
    like(state($n), qr/^open\|failure_rate\|/, 'open');
    is(metric($n, 'breaker_calls_total{circuit="up",outcome="failure"}'), 3,
       'counted as failures');
    $n->stop;
};


subtest 'connect errors and timeouts are failures, counted apart' => sub {
    my $closed = Test::Edge::Nginx::free_port();
    my $http = <<"HTTP";
    metrics_zone 1m;
    breaker_zone br 1m;
    breaker_circuit up zone=br min_calls=4 failure_rate=100 open=30s;
    server {
        listen 127.0.0.1:\$PORT;
        location = /metrics { metrics; }
        location = /state { breaker up; return 200 "\$breaker_state\\n"; }
        location = /refused {
            breaker up;
            proxy_pass http://127.0.0.1:$closed;
        }
        location = /hang {
            breaker up;
            proxy_read_timeout 300ms;
            proxy_pass http://127.0.0.1:$oport;
        }
    }
HTTP
    $o->set('/hang', mode => 'hang');
    my $n = Test::Edge::Nginx->start(http => $http);
    is(statuses($n, '/refused', 2), '502 502', 'connection refused: 502');
    is(statuses($n, '/hang', 2), '504 504', 'read timeout: 504');
    is(state($n), 'open', 'four failures of four: open');
    is(metric($n, 'breaker_calls_total{circuit="up",outcome="connect_error"}'),
       2, 'connect errors');
    is(metric($n, 'breaker_calls_total{circuit="up",outcome="timeout"}'), 2,
       'timeouts');
    $n->stop;
    $o->reset;
    $o->set('/ok', status => 200, body => "ok\n");
    $o->set('/fail', status => 500, body => "fail\n");
    $o->set('/404', status => 404, body => "nf\n");
};


subtest 'slow calls: slow_call and slow_rate' => sub {
    # a fast call must never be slow, whatever the load (or valgrind):
    # a wide margin, scaled with the harness's slowdown
    my $slow = 1000 * $S;
    $o->set('/slow', status => 200, body => "slow\n", delay => 1.3 * $S);
    my $n = Test::Edge::Nginx->start(
        http => http_conf("window=120s min_calls=4 slow_call=${slow}ms slow_rate=50 "
                          . 'failure_rate=100 open=30s'));
    is(statuses($n, '/ok', 2), '200 200', 'two fast');
    is(statuses($n, '/slow', 1), '200', 'one slow');
    is(statuses($n, '/ok', 1), '200', 'one fast: 1 slow of 4 (25 %)');
    like(state($n), qr/^closed\|/, 'closed');
    is(statuses($n, '/slow', 1), '200', '2 slow of 5 (40 %)');
    like(state($n), qr/^closed\|/, 'closed');
    is(statuses($n, '/slow', 1), '200', '3 slow of 6 (50 %)');
    like(state($n), qr/^open\|slow_rate\|/, 'open, reason slow_rate');
    like($n->log, qr/closed -> open \(slow_rate: 0 failed, 3 slow of 6 calls\)/,
         'logged with the counts');
    $n->stop;
};


subtest 'half-open: exactly `probes` concurrent requests reach the origin; they close the circuit' => sub {
    $o->set('/held', status => 200, body => "held\n", delay => 1.5 * $S);
    my $n = Test::Edge::Nginx->start(
        http => http_conf('min_calls=2 failure_rate=50 open=1s probes=3 '
                          . 'jitter=0 half_open_wait=60s slow_call=60s'));
    is(statuses($n, '/fail', 2), '500 500', 'trip');
    like(state($n), qr/^open\|/, 'open');
    ok(wait_until(5, sub { state($n) =~ /^half_open\|/ }),
       'half_open once the open time is over (seen lazily)');

    my $before = $o->hits('/held');
    my @s = map { $n->send_get('/held') } 1 .. 8;
    my @st = sort map { read_status($_) } @s;
    is($o->hits('/held') - $before, 3, 'exactly 3 reached the origin');
    is(join(' ', @st), '200 200 200 503 503 503 503 503',
       '3 probes answered, 5 refused');
    like(state($n), qr/^closed\|/, 'three successful probes close it');
    like($n->log, qr/open -> half_open \(3 probes\)/, 'half-open logged');
    like($n->log, qr/half_open -> closed \(3 probes: 0 failed, 0 slow\)/,
         'closing logged');
    is(statuses($n, '/ok', 2), '200 200', 'closed: requests pass');
    $n->stop;
};


subtest 'half-open: a probe refused gets Retry-After 1 and reason probes' => sub {
    $o->set('/held', status => 200, body => "held\n", delay => 1 * $S);
    my $n = Test::Edge::Nginx->start(
        http => http_conf('min_calls=1 failure_rate=100 open=500ms probes=1 '
                          . 'jitter=0 slow_call=60s'));
    is(statuses($n, '/fail', 1), '500', 'trip');
    ok(wait_until(5, sub { state($n) =~ /^half_open\|/ }), 'half_open');
    my $s = $n->send_get('/held');
    ok(wait_until(5, sub { $o->hits('/held') >= 1 }), 'the probe is out');
    my $r = $n->get('/ok');
    is($r->{status}, 503, 'the second is refused');
    is($r->{headers}{'retry-after'}, 1, 'Retry-After: 1');
    is($r->{headers}{'x-reason'}, 'probes', 'reason: probes');
    is(read_status($s), 200, 'the probe passes');
    like(state($n), qr/^closed\|/, 'closed');
    $n->stop;
};


subtest 'half-open: a failed probe reopens, with back-off growing to open_max' => sub {
    my $n = Test::Edge::Nginx->start(
        http => http_conf('min_calls=1 failure_rate=100 open=1s '
                          . 'open_max=2500ms probes=1 jitter=0'));
    my @ra;
    is($n->get('/fail')->{status}, 500, 'trip #1');
    for my $k (1 .. 4) {
        my $r = $n->get('/ok');
        is($r->{status}, 503, "open #$k refuses");
        push @ra, $r->{headers}{'retry-after'} // 0;
        ok(wait_until(10, sub { state($n) =~ /^half_open\|/ }),
           "half_open after open #$k");
        is($n->get('/fail')->{status}, 500, "probe #$k fails");
        like(state($n), qr/^open\|failure_rate\|/, 'open again');
    }
    # open x consecutive opens, capped: 1 s, 2 s, 2.5 s, 2.5 s, exactly
    # (jitter=0); Retry-After is the remaining time rounded up, which the
    # time before the refused request shortens: at most the open time
    my @ms = $n->log =~ /open for (\d+) ms \(open #\d\)/g;
    is("@ms", '1000 2000 2500 2500 2500', 'open times: back-off, capped');
    my @max = (1, 2, 3, 3);
    for my $k (0 .. 3) {
        ok($ra[$k] >= 1 && $ra[$k] <= $max[$k],
           "open #" . ($k + 1) . ": Retry-After $ra[$k] <= $max[$k]");
    }
    $n->stop;
};


subtest 'back-off jitter stays within its bounds and under open_max' => sub {
    my $n = Test::Edge::Nginx->start(
        http => http_conf('min_calls=1 failure_rate=100 open=10s '
                          . 'open_max=11s jitter=50 probes=1'));
    is($n->get('/fail')->{status}, 500, 'trip');
    my ($ms) = $n->log =~ /open for (\d+) ms \(open #1\)/;
    ok(defined $ms && $ms >= 5000 && $ms <= 11000,
       "10 s +- 50 %, capped at 11 s: " . ($ms // 'none'));
    my $ra = $n->get('/ok')->{headers}{'retry-after'};
    ok($ra >= 1 && $ra <= 11, "Retry-After within the bounds: $ra");
    $n->stop;
};


subtest 'half_open_wait: probes that do not complete in time reopen the circuit; their late outcome is ignored' => sub {
    $o->set('/hang', mode => 'hang');
    my $n = Test::Edge::Nginx->start(
        http => http_conf('min_calls=1 failure_rate=100 open=' . 300 * $S
                          . 'ms probes=1 jitter=0 half_open_wait='
                          . 500 * $S . 'ms'));
    is($n->get('/fail')->{status}, 500, 'trip');
    ok(wait_until(5, sub { state($n) =~ /^half_open\|/ }), 'half_open');
    my $s = $n->send_get('/hang');
    ok(wait_until(5, sub { $o->hits('/hang') >= 1 }), 'the probe hangs');
    is($n->get('/ok')->{status}, 503, 'probes taken');
    ok(wait_until(5, sub { state($n) =~ /^open\|/ }),
       'after half_open_wait the state is seen open');
    my $r = $n->get('/ok');
    is($r->{status}, 503, 'the next request reopens it');
    is($r->{headers}{'x-reason'}, 'half_open_wait', 'reason half_open_wait');
    my $reopen = 600 * $S;
    like($n->log, qr/half_open -> open \(half_open_wait\), open for $reopen ms \(open #2\)/,
         'reopened, with back-off');
    $o->reset;
    $o->set('/ok', status => 200, body => "ok\n");
    $o->set('/fail', status => 500, body => "fail\n");
    $o->set('/404', status => 404, body => "nf\n");
    is(read_status($s), 502, 'the hung probe ends (reset by the origin)');
    ok(wait_until(5, sub { state($n) =~ /^half_open\|/ }), 'half_open again');
    is($n->get('/ok')->{status}, 200, 'the new probe passes');
    like(state($n), qr/^closed\|/, 'closed: the old probe did not count');
    $n->stop;
};


subtest 'generation: an outcome of a request admitted before a transition is ignored' => sub {
    $o->set('/slowfail', status => 500, body => "late\n", delay => 2.5 * $S);
    my $n = Test::Edge::Nginx->start(
        http => http_conf('min_calls=1 failure_rate=100 open=300ms '
                          . 'probes=1 jitter=0'));
    my $late = $n->send_get('/slowfail');
    ok(wait_until(5, sub { $o->hits('/slowfail') >= 1 }), 'admitted, closed');
    is($n->get('/fail')->{status}, 500, 'trip');
    ok(wait_until(5, sub { state($n) =~ /^half_open\|/ }), 'half_open');
    is($n->get('/ok')->{status}, 200, 'the probe passes');
    like(state($n), qr/^closed\|/, 'closed');
    is(read_status($late), 500, 'the late request fails');
    like(state($n), qr/^closed\|/,
         'its failure (of an older generation) does not trip the new window');
    is($n->get('/ok')->{status}, 200, 'still closed');
    is(metric($n, 'breaker_calls_total{circuit="up",outcome="failure"}'), 2,
       'it is still counted in the metrics');
    $n->stop;
};


subtest 'client abort: ignored, and a probe held by it is given back' => sub {
    $o->set('/hang', mode => 'hang');
    my $n = Test::Edge::Nginx->start(
        http => http_conf('min_calls=1 failure_rate=100 open=300ms '
                          . 'probes=1 jitter=0 half_open_wait=60s'));
    is($n->get('/fail')->{status}, 500, 'trip');
    ok(wait_until(5, sub { state($n) =~ /^half_open\|/ }), 'half_open');
    my $s = $n->send_get('/hang');
    ok(wait_until(5, sub { $o->hits('/hang') >= 1 }), 'the probe is out');
    is($n->get('/ok')->{status}, 503, 'probes taken');
    close $s;
    ok(wait_until(5, sub { $n->get('/ok')->{status} == 200 }),
       'the abort gives the probe back: the next request is a probe');
    like(state($n), qr/^closed\|/, 'that probe closed the circuit');
    ok(metric($n, 'breaker_calls_total{circuit="up",outcome="ignored"}') >= 1,
       'the abort is counted as ignored');

    # closed: aborts never fill the window
    my @s = map { $n->send_get('/hang') } 1 .. 3;
    ok(wait_until(5, sub { $o->hits('/hang') >= 4 }), 'three more out');
    close $_ for @s;
    ok(wait_until(5, sub {
           (metric($n, 'breaker_calls_total{circuit="up",outcome="ignored"}')
            // 0) >= 4 }), 'three more ignored');
    like(state($n), qr/^closed\|/, 'still closed');
    $o->reset;
    $o->set('/ok', status => 200, body => "ok\n");
    $o->set('/fail', status => 500, body => "fail\n");
    $o->set('/404', status => 404, body => "nf\n");
    $n->stop;
};


subtest 'modes: forced_open, disabled, metrics_only' => sub {
    my $n = Test::Edge::Nginx->start(
        http => http_conf('mode=forced_open'));
    my $hits = $o->hits('/ok');
    my $r = $n->get('/ok');
    is($r->{status}, 503, 'forced_open refuses');
    ok(!exists $r->{headers}{'retry-after'}, 'with no Retry-After');
    is($r->{headers}{'x-state'}, 'forced_open', '$breaker_state');
    is($r->{headers}{'x-reason'}, 'forced', '$breaker_reason');
    is($o->hits('/ok'), $hits, 'nothing reached the origin');
    is(metric($n, 'breaker_state{circuit="up"}'), 3, 'gauge 3');
    $n->stop;

    $n = Test::Edge::Nginx->start(
        http => http_conf('mode=disabled min_calls=1 failure_rate=1'));
    is(statuses($n, '/fail', 3), '500 500 500', 'disabled: never trips');
    is(state($n), 'disabled||', 'state disabled');
    $n->stop;

    $n = Test::Edge::Nginx->start(
        http => http_conf('mode=metrics_only min_calls=1 failure_rate=1'));
    is(statuses($n, '/fail', 3), '500 500 500', 'metrics_only: never trips');
    is(state($n), 'metrics_only||', 'state metrics_only');
    is(metric($n, 'breaker_calls_total{circuit="up",outcome="failure"}'), 3,
       'but counts');
    $n->stop;
};


subtest 'breaker_status and breaker_fallback' => sub {
    my $n = Test::Edge::Nginx->start(
        http => http_conf('min_calls=1 failure_rate=100 open=30s jitter=0',
                          loc => 'breaker_status 429;'));
    is($n->get('/fail')->{status}, 500, 'trip');
    my $r = $n->get('/ok');
    is($r->{status}, 429, 'breaker_status 429');
    ok($r->{headers}{'retry-after'} >= 29, 'with Retry-After');
    $n->stop;

    $n = Test::Edge::Nginx->start(
        http => http_conf('min_calls=1 failure_rate=100 open=30s',
                          loc => 'breaker_fallback /fb/x;'));
    is($n->get('/fail')->{status}, 500, 'trip');
    $r = $n->get('/ok');
    is($r->{status}, 200, 'fallback URI');
    is($r->{body}, "fallback\n", 'its response');
    $n->stop;

    my $http = <<"HTTP";
    breaker_zone br 1m;
    breaker_circuit up zone=br min_calls=1 failure_rate=100 open=30s jitter=0;
    server {
        listen 127.0.0.1:\$PORT;
        location / {
            breaker up;
            breaker_fallback \@degraded;
            proxy_pass http://127.0.0.1:$oport;
        }
        location \@degraded {
            return 200 "degraded \$breaker_state \$breaker_reason \$breaker_retry_after\\n";
        }
    }
HTTP
    $n = Test::Edge::Nginx->start(http => $http);
    is($n->get('/fail')->{status}, 500, 'trip');
    $r = $n->get('/ok');
    is($r->{status}, 200, 'named fallback');
    like($r->{body}, qr/^degraded open failure_rate (30|29)$/,
         'the variables survive the redirect');
    unlike($n->log, qr/\[(error|alert|crit)\]/, 'no error');
    $n->stop;
};


subtest 'subrequests: checked only with the subrequests parameter' => sub {
    $o->set('/page', status => 200,
            headers => ['Content-Type: text/html'],
            body => "<p><!--# include virtual=\"/inc/fail\" --></p>\n");
    for my $sub ('', ' subrequests') {
        my $http = <<"HTTP";
    breaker_zone br 1m;
    breaker_circuit up zone=br min_calls=2 failure_rate=100 open=30s;
    server {
        listen 127.0.0.1:\$PORT;
        location = /state { breaker up; return 200 "\$breaker_state\\n"; }
        location = /page {
            ssi on;
            proxy_pass http://127.0.0.1:$oport;
        }
        location /inc/ {
            breaker up$sub;
            proxy_pass http://127.0.0.1:$oport/;
        }
    }
HTTP
        my $n = Test::Edge::Nginx->start(http => $http);
        my $before = $o->hits('/fail');
        is(statuses($n, '/page', 3), '200 200 200', "pages ($sub)");
        if ($sub) {
            is($o->hits('/fail') - $before, 2,
               'two failing includes trip the circuit, the third is refused');
            is(state($n), 'open', 'open');
        } else {
            is($o->hits('/fail') - $before, 3, 'every include went upstream');
            is(state($n), 'closed', 'subrequests not checked: closed');
        }
        $n->stop;
    }
};


subtest 'a probe taken by a request that never goes upstream is given back' => sub {
    my $http = <<"HTTP";
    breaker_zone br 1m;
    breaker_circuit up zone=br min_calls=1 failure_rate=100 open=300ms
                    probes=1 jitter=0 half_open_wait=60s;
    server {
        listen 127.0.0.1:\$PORT;
        breaker up;
        location = /state { return 200 "\$breaker_state\\n"; }
        location /static/ { root html; }
        location / { proxy_pass http://127.0.0.1:$oport; }
    }
HTTP
    my $n = Test::Edge::Nginx->start(http => $http);
    is($n->get('/fail')->{status}, 500, 'trip');
    ok(wait_until(5, sub { state($n) eq 'half_open' }), 'half_open');
    is($n->get('/static/none')->{status}, 404,
       'a request served without the upstream takes the probe');
    is(state($n), 'half_open', 'no outcome: still half_open');
    is($n->get('/ok')->{status}, 200, 'the probe was given back: admitted');
    is(state($n), 'closed', 'and it closed the circuit');
    $n->stop;
};


subtest 'the window slides: calls older than the window no longer count' => sub {
    my $w = 2 * $S;
    my $n = Test::Edge::Nginx->start(
        http => http_conf("window=${w}s buckets=4 min_calls=2 "
                          . 'failure_rate=100 open=30s'));
    my $t0 = time;
    is($n->get('/fail')->{status}, 500, 'one failure');
    sleep($w + 0.6 - (time - $t0)) if time - $t0 < $w + 0.6;
    is($n->get('/fail')->{status}, 500, 'a second one, a window later');
    like(state($n), qr/^closed\|/,
         'closed: the first slid out, one call is below min_calls');
    is($n->get('/fail')->{status}, 500, 'a third one, at once');
    like(state($n), qr/^open\|failure_rate\|/, 'two in the window: open');
    $n->stop;
};


subtest 'a full zone: the circuit that does not fit is not created, its requests pass' => sub {
    my $http = <<"HTTP";
    breaker_zone br 32k;
    breaker_circuit a zone=br buckets=400 min_calls=1 failure_rate=100;
    breaker_circuit b zone=br buckets=400 min_calls=1 failure_rate=100;
    server {
        listen 127.0.0.1:\$PORT;
        location /a/ { breaker a; proxy_pass http://127.0.0.1:$oport/; }
        location /b/ { breaker b; proxy_pass http://127.0.0.1:$oport/; }
        location = /sb { breaker b; return 200 "[\$breaker_state]\\n"; }
    }
HTTP
    my $n = Test::Edge::Nginx->start(http => $http);
    like($n->log, qr/\[alert\] .*breaker_zone "br" is full: circuit "b" is not created and its requests are admitted/,
         'an alert');
    my @alerts = $n->log =~ /(is full)/g;
    is(scalar @alerts, 1, 'once');
    is(statuses($n, '/a/fail', 2), '500 503', 'circuit a works');
    is(statuses($n, '/b/fail', 3), '500 500 500', 'circuit b admits');
    is($n->get('/sb')->{body}, "[]\n", 'b has no state');
    $n->stop;
};


done_testing;
