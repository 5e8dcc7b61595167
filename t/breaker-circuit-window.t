# ngx_http_breaker_module, route circuits: the sliding window across
# buckets.  A recorded outcome is judged on the whole window: the buckets
# of earlier epochs (kept summed once per epoch, see
# ngx_http_breaker_circuit.c) as well as the current one, and nothing older
# than the window.  The waits are for the clock to pass a bucket boundary
# (a bound, not an interleaving).
use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time sleep);
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


done_testing;
