# ngx_http_breaker_module, route circuits: the sliding window across
# buckets.  A recorded outcome is judged on the whole window: the buckets
# of earlier epochs (kept summed once per epoch, see
# ngx_http_breaker_circuit.c) as well as the current one, and nothing older
# than the window.  The waits are for the clock to pass a bucket boundary
# (a bound, not an interleaving).
use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time sleep clock_gettime CLOCK_MONOTONIC);
use Test::Edge qw(wait_until);
use Test::Edge::Nginx;
use Test::Edge::Origin;

my $o = Test::Edge::Origin->start;
my $oport = $o->port;

sub http_conf {
    my ($circuit) = @_;
    return <<"HTTP";
    breaker_zone br 1m;
    breaker_circuit up zone=br $circuit;
    server {
        listen 127.0.0.1:\$PORT;
        location = /state {
            breaker up;
            return 200 "\$breaker_state|\$breaker_reason\\n";
        }
        location / {
            breaker up;
            proxy_pass http://127.0.0.1:$oport;
        }
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

# until the clock is past $t
sub wait_past {
    my ($t) = @_;
    sleep 0.05 while time < $t;
}

# a timed scenario: $run returns 0 when the clock passed a bound it needs
# (a busy machine), and is then started again, at most 3 times
sub runs_within_bounds {
    my ($run) = @_;
    for my $try (1 .. 3) {
        return 1 if $run->();
    }
    return 0;
}

$o->set('/ok', status => 200, body => "ok\n");
$o->set('/fail', status => 500, body => "fail\n");


subtest 'failures of earlier buckets count: a success that brings min_calls trips the circuit' => sub {
    # buckets of 1 s over 30 s
    my $n = Test::Edge::Nginx->start(
        http => http_conf('window=30s buckets=30 min_calls=6 failure_rate=50 '
                          . 'open=30s jitter=0'));

    is(statuses($n, '/fail', 5), '500 500 500 500 500', '5 failures');
    # two bucket widths later the failures are in buckets older than the
    # previous one
    wait_past(time + 2.1);
    like(state($n), qr/^closed\|/, 'closed: 5 calls, fewer than min_calls');

    is($n->get('/ok')->{status}, 200, 'a success, the 6th call');
    like(state($n), qr/^open\|failure_rate$/,
         'open: 5 failed of 6 in the window');
    like($n->log, qr/closed -> open \(failure_rate: 5 failed, 0 slow of 6 calls\)/,
         'judged on the whole window');
    unlike($n->log, qr/\[(error|alert|crit)\]/, 'no error');
    $n->stop;
};


subtest 'outcomes older than the window are not counted' => sub {
    # buckets of 500 ms over 4 s
    my $n = Test::Edge::Nginx->start(
        http => http_conf('window=4s buckets=8 min_calls=4 failure_rate=50 '
                          . 'open=30s jitter=0'));

    is(statuses($n, '/fail', 3), '500 500 500', '3 failures');
    wait_past(time + 4.1);

    is($n->get('/fail')->{status}, 500, 'a failure, a window later');
    like(state($n), qr/^closed\|/, 'closed: the 3 earlier are out, 1 call');

    is(statuses($n, '/fail', 3), '500 500 500', '3 more failures');
    like(state($n), qr/^open\|failure_rate$/, 'open: 4 failed of 4');
    like($n->log, qr/closed -> open \(failure_rate: 4 failed, 0 slow of 4 calls\)/,
         'judged on the window only');
    unlike($n->log, qr/\[(error|alert|crit)\]/, 'no error');
    $n->stop;
};


# A fast success is not judged once a judgement in the same epoch found
# the window at min_calls with both rates below their thresholds (it can
# only lower them); buckets leave the window only when an epoch ends, so
# in the next epoch a success is judged again.  Here the successes that
# kept the rate low leave the window, failures that came a bucket later
# stay, and a success is the call that trips the circuit.  Buckets of
# 3 s: the successes (before $ta) are out of the window from $ta + 6 s,
# the failures (after $tb) in it until $tb + 3 s; a run whose requests
# miss those bounds on a busy machine is started again.
subtest 'a success in a later epoch is judged: the old successes have left the window' => sub {
    my $run = sub {
        my $n = Test::Edge::Nginx->start(
            http => http_conf('window=6s buckets=2 min_calls=4 failure_rate=50 '
                              . 'open=30s jitter=0'));
        is(statuses($n, '/ok', 4), '200 200 200 200', '4 successes');
        my $ta = time;
        wait_past($ta + 4.0);
        my $tb = time;
        is(statuses($n, '/fail', 3), '500 500 500', '3 failures');
        like(state($n), qr/^closed\|/, 'closed: 3 of 7, or 3 calls');
        wait_past($ta + 6.2);
        my $ts = time;
        my $status = $n->get('/ok')->{status};
        my $in_bounds = time < $tb + 2.8;
        if (!$in_bounds) {
            diag(sprintf('late: failures at +%.2fs, success sent at +%.2fs; '
                         . 'again', $tb - $ta, $ts - $ta));
            $n->stop;
            return 0;
        }
        is($status, 200, 'a success');
        like(state($n), qr/^open\|failure_rate$/, 'open: 3 failed of 4');
        like($n->log,
             qr/closed -> open \(failure_rate: 3 failed, 0 slow of 4 calls\)/,
             'judged on the window: the failures and the success');
        unlike($n->log, qr/\[(error|alert|crit)\]/, 'no error');
        $n->stop;
        return 1;
    };
    ok(runs_within_bounds($run), 'a run within the bounds');
};


# The quiet epoch is remembered per worker: a reload may keep the circuit
# (same buckets and width: same generation) and lower a threshold, and the
# new worker judges by its own.  Buckets of 60 s (nginx's epochs are the
# same CLOCK_MONOTONIC / width as here): a run that crosses an epoch is
# started again.
subtest 'a lowered failure_rate judges the next success after a reload' => sub {
    my $width = 60;
    my $epoch = sub { int(clock_gettime(CLOCK_MONOTONIC) / $width) };
    my $run = sub {
        # not too close to the end of an epoch
        sleep 0.2
            while clock_gettime(CLOCK_MONOTONIC) / $width - $epoch->() > 0.7;
        my $e0 = $epoch->();
        my $circuit = 'window=600s buckets=10 min_calls=10 open=30s jitter=0';
        my $n = Test::Edge::Nginx->start(
            http => http_conf("$circuit failure_rate=50"));
        is(statuses($n, '/ok', 6), '200 200 200 200 200 200', '6 successes');
        is(statuses($n, '/fail', 4), '500 500 500 500', '4 failures');
        like(state($n), qr/^closed\|/, 'closed: 4 of 10 < 50%');

        $n->edit_conf(sub { $_[0] =~ s/failure_rate=50/failure_rate=30/ });
        my %old = map { $_ => 1 } $n->worker_pids;
        kill 'HUP', $n->master_pid;
        ok(wait_until(20, sub {
            my @w = $n->worker_pids;
            return @w == 1 && !$old{$w[0]};
        }), 'reloaded: a new worker');
        like(state($n), qr/^closed\|/, 'still closed after the reload');

        is($n->get('/ok')->{status}, 200, 'a success: 4 of 11 = 36% >= 30%');
        my $st = state($n);
        if ($epoch->() != $e0) {
            diag('crossed an epoch; again');
            $n->stop;
            return 0;
        }
        like($st, qr/^open\|failure_rate$/,
             'open: judged by the new threshold');
        unlike($n->log, qr/\[(error|alert|crit)\]/, 'no error');
        $n->stop;
        return 1;
    };
    ok(runs_within_bounds($run), 'a run within one epoch');
};


# An outcome's time is the event loop's cached one, but a trip opens the
# circuit for `open` from the clock: with timer_resolution the cached time
# is updated only by the timer (here 10 s apart: 6 s after the worker
# started it is about 6 s behind), and the deadline is still `open` ahead.
subtest 'timer_resolution: a trip opens the circuit for open=, from the clock' => sub {
    my $n = Test::Edge::Nginx->start(
        main => "timer_resolution 10s;\n",
        http => http_conf('window=60s buckets=1 min_calls=2 failure_rate=50 '
                          . 'open=30s jitter=0'));
    sleep 6;
    is(statuses($n, '/fail', 2), '500 500', 'two failures: trips');
    my $r = $n->get('/fail');
    is($r->{status}, 503, 'refused');
    my $ra = $r->{headers}{'retry-after'} // 0;
    ok($ra >= 29 && $ra <= 30, "Retry-After $ra: open for 30 s");
    like($n->log, qr/closed -> open/, 'tripped');
    $n->stop;
};


# Not the window, but the other path this work reworked: a subrequest's
# outcome is recorded by the pool cleanup, which finds the request's
# context through the pool's cleanups when an internal redirect (here
# error_page) has cleared the module contexts.
subtest 'a subrequest redirected by error_page after the breaker: its outcome is recorded' => sub {
    $o->set('/page', status => 200,
            headers => ['Content-Type: text/html'],
            body => "<p><!--# include virtual=\"/inc/fail\" --></p>\n");
    my $http = <<"HTTP";
    breaker_zone br 1m;
    breaker_circuit up zone=br min_calls=2 failure_rate=100 open=30s jitter=0;
    server {
        listen 127.0.0.1:\$PORT;
        location = /state { breaker up; return 200 "\$breaker_state\\n"; }
        location = /page {
            ssi on;
            proxy_pass http://127.0.0.1:$oport;
        }
        location /inc/ {
            breaker up subrequests;
            proxy_intercept_errors on;
            error_page 500 = /err;
            proxy_pass http://127.0.0.1:$oport/;
        }
        location = /err { return 200 "err"; }
    }
HTTP
    my $n = Test::Edge::Nginx->start(http => $http);
    my $before = $o->hits('/fail');
    is(statuses($n, '/page', 3), '200 200 200', 'pages');
    is($o->hits('/fail') - $before, 2,
       'two failing includes trip the circuit, the third is refused');
    is(state($n), 'open', 'open');
    like($n->log, qr/closed -> open \(failure_rate: 2 failed, 0 slow of 2 calls\)/,
         'both outcomes recorded');
    unlike($n->log, qr/\[(error|alert|crit)\]/, 'no error');
    $n->stop;
};


done_testing;
