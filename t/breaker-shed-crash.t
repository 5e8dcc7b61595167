# A worker that dies without its cleanups (SIGKILL, a crash) leaves its
# permits and waiting counts in the zone; the worker the master starts in
# its slot of the process table gives them back (and takes them out of
# the gauges), so the full limit is usable again.
use strict;
use warnings;

use Test::More;
use Test::Edge qw(wait_until);
use Test::Edge::Nginx;
use Test::Edge::Origin;
use IO::Socket::INET;

my $origin = Test::Edge::Origin->start;
my $oport = $origin->port;

my $n = Test::Edge::Nginx->start(workers => 1, http => <<"HTTP");
    metrics_zone 1m;
    upstream origin { server 127.0.0.1:$oport; }
    breaker_shed_zone sz 1m;
    breaker_shedder c zone=sz limit=2 queue=5 queue_timeout=60s codel_target=0;
    server {
        listen 127.0.0.1:\$PORT;
        location = /metrics { metrics; }
        location /c/ {
            breaker_shed c;
            proxy_pass http://origin;
        }
        location = /state {
            breaker_shed c;
            return 200 "\$shed_in_flight \$shed_queue";
        }
    }
HTTP

sub state { return $n->get('/state')->{body} }

sub send_req {
    my ($path) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $n->port)
        or die $!;
    print $s "GET $path HTTP/1.0\r\nHost: x\r\n\r\n";
    return $s;
}

sub gauges {
    my $m = $n->get('/metrics?family=nginx_breaker_shed_')->{body};
    my ($f) = $m =~ /^nginx_breaker_shed_in_flight\{shedder="c"\} (-?\d+)$/m;
    my ($q) = $m =~ /^nginx_breaker_shed_queue_length\{shedder="c"\} (-?\d+)$/m;
    return ($f // 'none') . ' ' . ($q // 'none');
}

$origin->set('/c/hang', mode => 'hang');
my @c = map { send_req('/c/hang') } 1 .. 3;
ok(wait_until(10, sub { state() eq '2 1' }), 'two permits held, one request waiting');
is(gauges(), '2 1', 'the gauges say so');

my ($worker) = $n->worker_pids;
kill 'KILL', $worker;
ok(wait_until(10, sub { my @w = $n->worker_pids; @w == 1 && $w[0] != $worker }),
   'the worker is killed; the master starts another');
ok(wait_until(10, sub { state() eq '0 0' }),
   'the new worker gave back the dead one\'s permits and waiting count');
like($n->log, qr/\[warn\] .*breaker shedder "c": 2 permits and 1 waiting requests of a process that died in slot \d+ taken back/,
     'and logged it');
is(gauges(), '0 0', 'the gauges too');
close $_ for @c;

my $before = $origin->hits('/c/hang');
@c = map { send_req('/c/hang') } 1 .. 3;
ok(wait_until(10, sub { $origin->hits('/c/hang') - $before == 2 && state() eq '2 1' }),
   'the full limit is usable again: two admitted, one waits');
$origin->reset;
ok(wait_until(10, sub { state() eq '0 0' }), 'all released');
close $_ for @c;

$n->stop;
$origin->stop;

done_testing();
