# The counts of a shedder in the status document, as the hot path keeps
# them (ngx_http_breaker_shed.c, ngx_http_breaker_shed.h):
#
# - a shedder with one class keeps no count of its class apart: the
#   class's in_flight is the shedder's;
# - the requests admitted at once are counted in each process's own slot
#   of the node and summed for the document: the sum equals the metrics'
#   counter, and a worker that dies (SIGKILL) and the one started in its
#   slot neither lose nor double any (the dead one's permits, by class,
#   are given back all the same);
# - a reload that changes a shedder from one class to two and back while
#   requests hold permits: each permit is given back the way it was taken,
#   so no class count is left behind or goes below zero.
use strict;
use warnings;

use Test::More;
use JSON::PP ();
use Test::Edge qw(wait_until);
use Test::Edge::Nginx;
use Test::Edge::Origin;
use IO::Socket::INET;

my $origin = Test::Edge::Origin->start;
my $oport = $origin->port;

# what the origin answers; reset() also closes the connections held
sub origin_reset {
    $origin->reset;
    $origin->set('/one/ok', body => "ok\n");
    $origin->set('/two/ok', body => "ok\n");
    $origin->set('/one/hang', mode => 'hang');
    $origin->set('/two/hang', mode => 'hang');
}

origin_reset();

my $http = <<"HTTP";
    metrics_zone 1m;
    upstream origin { server 127.0.0.1:$oport; }
    breaker_shed_zone sz 1m;
    breaker_shedder one zone=sz limit=10 queue=0;
    breaker_shedder two zone=sz limit=10 queue=0;
    breaker_shed_class two 10;
    breaker_shed_class two 1 share=20%;
    server {
        listen 127.0.0.1:\$PORT;
        location = /breaker { breaker_status_endpoint; }
        location = /metrics { metrics; }
        location /one/ {
            breaker_shed one;
            proxy_pass http://origin;
        }
        location /two/ {
            breaker_shed two priority=\$http_x_prio;
            proxy_pass http://origin;
        }
    }
HTTP

sub shedder {
    my ($n, $name) = @_;
    my $r = $n->get('/breaker');
    my $doc = eval { JSON::PP::decode_json($r->{body}) } or return undef;
    my ($s) = grep { $_->{name} eq $name } @{ $doc->{shedders} // [] };
    return $s;
}

# "in_flight class-in-flight..." of a shedder, or 'none'
sub in_flight {
    my ($n, $name) = @_;
    my $s = shedder($n, $name) or return 'none';
    return join ' ', $s->{in_flight}, map { $_->{in_flight} } @{ $s->{classes} };
}

# the admitted-at-once counts of its classes
sub admitted {
    my ($n, $name) = @_;
    my $s = shedder($n, $name) or return 'none';
    return join ' ', map { $_->{admitted} } @{ $s->{classes} };
}

sub metric_admitted {
    my ($n, $name, $class) = @_;
    my $m = $n->get('/metrics?family=nginx_breaker_shed_')->{body};
    return $m =~ /^nginx_breaker_shed_requests_total\{shedder="\Q$name\E",class="\Q$class\E",result="admitted"\} (\d+)$/m
        ? $1 : 'none';
}

sub send_req {
    my ($n, $path, %h) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $n->port)
        or die $!;
    print $s "GET $path HTTP/1.0\r\nHost: x\r\n"
           . join('', map { "$_: $h{$_}\r\n" } keys %h) . "\r\n";
    return $s;
}

sub ok_times {
    my ($n, $path, $times, %h) = @_;
    my $ok = 0;
    for (1 .. $times) {
        $ok++ if $n->get($path, %h)->{status} == 200;
    }
    return $ok;
}

# the processes listening on the nginx's port
sub listeners {
    my ($n) = @_;
    my $port = $n->port;
    my $out = `ss -ltnpH 'sport = :$port' 2>/dev/null`;
    return map { $_ => 1 } $out =~ /pid=(\d+)/g;
}

# rewrites nginx.conf with $edit and sends HUP; true once a worker that
# was not there before runs, no older one listens any more (one may still
# be finishing a request: it no longer accepts any) and $ready says the
# new configuration answers
sub reload {
    my ($n, $edit, $ready) = @_;
    my %old = map { $_ => 1 } $n->worker_pids;
    $n->edit_conf($edit);
    kill 'HUP', $n->master_pid;
    return wait_until(20, sub {
        my %l = listeners($n);
        (grep { !$old{$_} } $n->worker_pids)
            && !(grep { $l{$_} } keys %old) && $ready->();
    });
}

# --- 1. one class: its in_flight is the shedder's; the admitted count
# summed over the workers' slots equals the metrics' counter

{
    my $n = Test::Edge::Nginx->start(http => $http, workers => 2);

    is(ok_times($n, '/one/ok', 6), 6, 'six requests through shedder one');
    is(admitted($n, 'one'), '6', 'six admitted at once, in its one class');
    is(metric_admitted($n, 'one', '0'), '6', 'the metrics say six too');
    is(in_flight($n, 'one'), '0 0', 'none in flight');

    my @held = map { send_req($n, '/one/hang') } 1 .. 2;
    ok(wait_until(10, sub { in_flight($n, 'one') eq '2 2' }),
       'two held: in flight 2, and 2 in the class')
        or diag(in_flight($n, 'one'));
    is(admitted($n, 'one'), '8', 'eight admitted');
    close $_ for @held;
    origin_reset();
    ok(wait_until(10, sub { in_flight($n, 'one') eq '0 0' }),
       'released: 0 and 0') or diag(in_flight($n, 'one'));

    is(ok_times($n, '/two/ok', 3, 'X-Prio' => 10)
       + ok_times($n, '/two/ok', 2, 'X-Prio' => 1), 5,
       'five requests through shedder two (two classes)');
    is(admitted($n, 'two'), '3 2', 'counted by class');
    is(metric_admitted($n, 'two', '10') . ' ' . metric_admitted($n, 'two', '1'),
       '3 2', 'as the metrics count them');

    unlike($n->log, qr/\[(alert|crit|emerg)\]/, 'no alert in the log');
    $n->stop;
}

# --- 2. a worker killed while it holds permits: the one started in its
# slot gives them back, by class, and keeps counting where it left off

{
    my $n = Test::Edge::Nginx->start(http => $http, workers => 1);

    is(ok_times($n, '/one/ok', 5), 5, 'five requests through shedder one');
    my @held = ((map { send_req($n, '/one/hang') } 1 .. 2),
                send_req($n, '/two/hang', 'X-Prio' => 10),
                send_req($n, '/two/hang', 'X-Prio' => 1));
    ok(wait_until(10, sub { in_flight($n, 'one') eq '2 2'
                            && in_flight($n, 'two') eq '2 1 1' }),
       'held: two on shedder one, one in each class of shedder two')
        or diag(in_flight($n, 'one') . ' / ' . in_flight($n, 'two'));
    is(admitted($n, 'one') . ' / ' . admitted($n, 'two'), '7 / 1 1',
       'admitted at once: 7, and 1 in each class');

    my ($worker) = $n->worker_pids;
    kill 'KILL', $worker;
    ok(wait_until(10, sub { my @w = $n->worker_pids;
                            @w == 1 && $w[0] != $worker }),
       'the worker is killed; the master starts another');
    ok(wait_until(10, sub { in_flight($n, 'one') eq '0 0'
                            && in_flight($n, 'two') eq '0 0 0' }),
       'the new worker gave back the dead one\'s permits, in their classes')
        or diag(in_flight($n, 'one') . ' / ' . in_flight($n, 'two'));
    like($n->log, qr/breaker shedder "one": 2 permits and 0 waiting requests of a process that died/,
         'shedder one: two permits taken back');
    like($n->log, qr/breaker shedder "two": 2 permits and 0 waiting requests of a process that died/,
         'shedder two: two permits taken back');
    is(admitted($n, 'one') . ' / ' . admitted($n, 'two'), '7 / 1 1',
       'the counts of the dead worker are kept, not doubled');
    close $_ for @held;
    origin_reset();

    is(ok_times($n, '/one/ok', 3), 3, 'three more through shedder one');
    is(admitted($n, 'one'), '10', 'counted on from 7: 10');
    is(metric_admitted($n, 'one', '0'), '10', 'as the metrics count them');
    is(in_flight($n, 'one') . ' / ' . in_flight($n, 'two'), '0 0 / 0 0 0',
       'nothing in flight');

    (my $log = $n->log) =~ s/.*\[alert\] .*exited on signal 9\n//g;
    unlike($log, qr/\[(alert|crit|emerg)\]/,
           'no alert in the log but the killed worker\'s');
    $n->stop;
}

# --- 3. one class to two and back while permits are held: each is given
# back the way it was taken

{
    my $n = Test::Edge::Nginx->start(http => $http, workers => 1);
    my $two = "    breaker_shed_class one 10;\n"
            . "    breaker_shed_class one 1 share=20%;\n";
    my $one_conf = sub { $_[0] =~ s/\Q$two\E//; };
    my $two_conf = sub {
        $_[0] =~ s/(breaker_shedder one [^\n]*\n)/$1$two/;
        $_[0] =~ s/(breaker_shed one);/$1 priority=\$http_x_prio;/;
    };
    my $classes = sub {
        my $s = shedder($n, 'one') or return -1;
        return scalar @{ $s->{classes} };
    };

    my $h1 = send_req($n, '/one/hang');
    ok(wait_until(10, sub { in_flight($n, 'one') eq '1 1' }),
       'one class: a request holds a permit');

    ok(reload($n, $two_conf, sub { $classes->() == 2 }),
       'reload: shedder one has two classes');
    ok(wait_until(10, sub { in_flight($n, 'one') eq '1 0 0' }),
       'the older configuration\'s permit is in flight, in no class of the '
       . 'new one') or diag(in_flight($n, 'one'));
    my $h2 = send_req($n, '/one/hang', 'X-Prio' => 1);
    ok(wait_until(10, sub { in_flight($n, 'one') eq '2 0 1' }),
       'a request of priority 1 takes a permit: in its class');
    close $h1;
    ok(wait_until(10, sub { in_flight($n, 'one') eq '1 0 1' }),
       'the first request ends: its permit is given back, no class count '
       . 'touched') or diag(in_flight($n, 'one'));

    ok(reload($n, $one_conf, sub { $classes->() == 1 }),
       'reload: shedder one has one class again');
    ok(wait_until(10, sub { in_flight($n, 'one') eq '1 1' }),
       'the held permit is the class\'s') or diag(in_flight($n, 'one'));
    close $h2;
    ok(wait_until(10, sub { in_flight($n, 'one') eq '0 0' }),
       'the second request ends') or diag(in_flight($n, 'one'));

    # the older workers are gone once the permits are back: the class
    # counts they gave back show with two classes
    ok(reload($n, $two_conf, sub { $classes->() == 2 }),
       'reload: two classes again');
    ok(wait_until(10, sub { in_flight($n, 'one') eq '0 0 0' }),
       'no class count left behind or below zero')
        or diag(in_flight($n, 'one'));
    origin_reset();
    is(ok_times($n, '/one/ok', 2, 'X-Prio' => 10), 2,
       'requests are admitted');
    is(in_flight($n, 'one'), '0 0 0', 'and give their permits back');

    unlike($n->log, qr/\[(alert|crit|emerg)\]/, 'no alert in the log');
    $n->stop;
}

$origin->stop;

done_testing();
