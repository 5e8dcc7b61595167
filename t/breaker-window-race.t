# The lock-free window ring of a circuit (ngx_http_breaker_circuit.c)
# under many workers recording outcomes across bucket rollovers: its
# counts never exceed the calls made (no outcome counted twice), never go
# negative (no counter wrapped below zero), and lose at most what the
# design allows: when a bucket is taken for a new epoch, the worker that
# wins the tag's compare-and-swap zeroes the counters after it, so an add
# from another worker in between is wiped: at most workers - 1 outcomes
# per rollover (a worker has one add in flight at a time).
#
# 4 workers, 20 ms buckets (window=20s buckets=1000, longer under
# valgrind: no bucket is reused and nothing leaves the window during the
# run), 8 clients sending 500 requests each, half of them to an upstream
# answering 500 (failures).
# The circuit never judges (min_calls=1000000), so it stays CLOSED and its
# window is never emptied by a transition.  The bounds hold under any
# scheduling; the numbers are read from the status endpoint.
use strict;
use warnings;

use Test::More;
use Test::Edge qw(wait_until);
use Test::Edge::Nginx;
use IO::Socket::INET;
use POSIX ();
use Time::HiRes qw(time);

my $Slow = $Test::Edge::Valgrind::Slowdown;

my $workers = 4;
my $clients = 8;
my $each = 500;
my $window = int(20 * $Slow);   # seconds
my $width = $window / 1000;     # seconds per bucket

my $n = Test::Edge::Nginx->start(workers => $workers, http => <<"HTTP");
    breaker_zone br 1m;
    breaker_circuit ring zone=br window=${window}s buckets=1000
                    min_calls=1000000 statuses=500;
    server {
        listen 127.0.0.1:\$PORT;
        location = /up/ok { return 200 "ok\\n"; }
        location = /up/fail { return 500; }
        location /c/ {
            breaker ring;
            proxy_pass http://127.0.0.1:\$PORT/up/;
        }
        location = /status { breaker_status_endpoint; }
    }
HTTP

sub counts {
    my $doc = $n->get('/status')->{body};
    return $doc =~ /"name":\s*"ring"[^{}]*?"calls":\s*(-?\d+),\s*
                    "failures":\s*(-?\d+)/x ? ($1, $2) : ();
}

my ($sent_ok, $sent_fail) = (0, 0);
my @pids;
my $start = time;
for my $c (1 .. $clients) {
    my $path = $c % 2 ? '/c/fail' : '/c/ok';
    $c % 2 ? ($sent_fail += $each) : ($sent_ok += $each);
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        # a new connection per request: the kernel spreads them over the
        # workers
        for (1 .. $each) {
            my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                          PeerPort => $n->port) or next;
            print $s "GET $path HTTP/1.0\r\nHost: x\r\n\r\n";
            local $/;
            my $answer = <$s>;
            close $s;
        }
        POSIX::_exit(0);
    }
    push @pids, $pid;
}

my $sent = $sent_ok + $sent_fail;
my ($over, $negative, $polls) = (0, 0, 0);
# while the load runs: never more than the calls made, never negative
while (grep { waitpid($_, POSIX::WNOHANG()) == 0 } @pids) {
    my ($calls, $failures) = counts();
    next unless defined $calls;
    $polls++;
    $over++ if $calls > $sent || $failures > $sent_fail
               || $failures > $calls;
    $negative++ if $calls < 0 || $failures < 0;
}
waitpid($_, 0) for @pids;
my $elapsed = time - $start;

# every outcome is recorded in the log phase, after the answer: wait until
# the counts reach the lower bound (or the deadline)
my $rollovers = int($elapsed / $width) + 2;
my $lost_max = ($workers - 1) * $rollovers;
my ($calls, $failures);
wait_until(10, sub {
    ($calls, $failures) = counts();
    return defined $calls && $calls >= $sent - $lost_max
           && $failures >= $sent_fail - $lost_max;
});

ok($polls > 0, "status read $polls times during the load");
is($over, 0, 'during the load: calls <= calls made, failures <= failures '
             . 'made and <= calls');
is($negative, 0, 'during the load: no count below zero');
ok($elapsed < $window * 0.9,
   sprintf('the run (%.1f s, %d rollovers) stayed within the %d s window',
           $elapsed, $rollovers - 2, $window));
cmp_ok($calls, '<=', $sent, "calls in the window ($calls) <= calls made "
                            . "($sent)");
cmp_ok($calls, '>=', $sent - $lost_max,
       "and >= calls made - (workers - 1) x rollovers ($sent - $lost_max)");
cmp_ok($failures, '<=', $sent_fail,
       "failures ($failures) <= failures made ($sent_fail)");
cmp_ok($failures, '>=', $sent_fail - $lost_max,
       "and >= failures made - (workers - 1) x rollovers");
like($n->get('/status')->{body}, qr/"name":\s*"ring"[^{}]*"state":\s*"closed"/,
     'the circuit stayed closed');
is(scalar(() = $n->log =~ /\[(?:alert|crit|emerg)\]/g), 0, 'no alert');
$n->stop;

done_testing();
