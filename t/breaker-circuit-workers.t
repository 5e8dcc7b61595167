# ngx_http_breaker_module, route circuits across workers and reloads: two
# workers (reuseport, so the kernel spreads the connections over both)
# agree on the state, exactly `probes` requests pass in HALF_OPEN whoever
# takes them, and a reload keeps the circuits (found by name in the zone).
use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time sleep);
use Test::Edge qw(wait_until);
use Test::Edge::Nginx;
use Test::Edge::Origin;
use Test::Edge::Valgrind;

my $o = Test::Edge::Origin->start;
my $oport = $o->port;

$o->set('/ok', status => 200, body => "ok\n");
$o->set('/fail', status => 500, body => "fail\n");

sub http_conf {
    my ($circuit) = @_;
    return <<"HTTP";
    metrics_zone 1m;
    breaker_zone br 1m;
    breaker_circuit up zone=br $circuit;
    server {
        listen 127.0.0.1:\$PORT reuseport;
        location = /metrics { metrics; }
        location = /state {
            breaker up;
            return 200 "\$breaker_state|\$breaker_reason|\$breaker_retry_after\\n";
        }
        location / {
            breaker up;
            add_header X-Pid \$pid always;
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

# requests until both workers answered (at most $max): [statuses], {pids}
sub until_both_workers {
    my ($n, $path, $max) = @_;
    my (@st, %pids);
    for (1 .. $max) {
        my $r = $n->get($path);
        push @st, $r->{status};
        $pids{$r->{headers}{'x-pid'} // '-'}++;
        last if keys %pids >= 2;
    }
    return (\@st, \%pids);
}


subtest 'two workers: a circuit tripped by both refuses on both' => sub {
    my $n = Test::Edge::Nginx->start(
        http => http_conf('min_calls=20 failure_rate=50 open=60s jitter=0'),
        workers => 2);
    ok(wait_until(10, sub { $n->worker_pids == 2 }), 'two workers');

    my (%pids, @st);
    for (1 .. 20) {
        my $r = $n->get('/fail');
        push @st, $r->{status};
        $pids{$r->{headers}{'x-pid'}}++;
    }
    is(join(' ', @st), join(' ', ('500') x 20),
       '19 failures pass, the 20th trips');
    is(scalar keys %pids, 2, 'the failures were spread over both workers');
    like(state($n), qr/^open\|failure_rate\|/, 'open');

    my ($st, $seen) = until_both_workers($n, '/ok', 200);
    is(scalar keys %$seen, 2, 'both workers answered');
    is_deeply([grep { $_ != 503 } @$st], [], 'every request refused, on any'
              . ' worker (' . scalar(@$st) . ' requests)');
    my @lines = $n->log =~ /(closed -> open)/g;
    is(scalar @lines, 1, 'one transition, logged once');
    is(metric($n, 'breaker_transitions_total{circuit="up",to="open"}'), 1,
       'counted once');
    $n->stop;
};


subtest 'two workers: exactly `probes` of many concurrent requests pass in half-open' => sub {
    $o->set('/held', status => 200, body => "held\n",
            delay => 1.5 * $Test::Edge::Valgrind::Slowdown);
    my $n = Test::Edge::Nginx->start(
        http => http_conf('min_calls=1 failure_rate=100 open=500ms probes=2 '
                          . 'jitter=0 slow_call=60s half_open_wait=60s'),
        workers => 2);
    is($n->get('/fail')->{status}, 500, 'trip');
    ok(wait_until(5, sub { state($n) =~ /^half_open\|/ }), 'half_open');
    my $before = $o->hits('/held');
    my @s = map { $n->send_get('/held') } 1 .. 20;
    my @st = map { read_status($_) } @s;
    is($o->hits('/held') - $before, 2, 'exactly 2 reached the origin');
    is(scalar(grep { $_ == 200 } @st), 2, '2 answered');
    is(scalar(grep { $_ == 503 } @st), 18, '18 refused');
    like(state($n), qr/^closed\|/, 'closed');
    my @lines = $n->log =~ /(open -> half_open)/g;
    is(scalar @lines, 1, 'half-opened once');
    $n->stop;
};


subtest 'reload: the circuit keeps its state, found by name in the reused zone' => sub {
    my $n = Test::Edge::Nginx->start(
        http => http_conf('min_calls=1 failure_rate=100 open=60s jitter=0'),
        workers => 2);
    is($n->get('/fail')->{status}, 500, 'trip');
    like(state($n), qr/^open\|failure_rate\|/, 'open');
    is(metric($n, 'breaker_state{circuit="up"}'), 1, 'gauge 1');

    # the same configuration, then one with other thresholds, then one
    # more circuit (a new stats catalog: the gauge starts from the state)
    for my $conf ('min_calls=1 failure_rate=100 open=60s jitter=0',
                  'min_calls=5 failure_rate=80 open=60s jitter=0',
                  "min_calls=5 open=60s;\n    breaker_circuit other zone=br")
    {
        my %old = map { $_ => 1 } $n->worker_pids;
        open my $fh, '>', "$n->{prefix}/conf/nginx.conf.new" or die $!;
        open my $in, '<', "$n->{prefix}/conf/nginx.conf" or die $!;
        local $/;
        my $c = <$in>;
        $c =~ s/breaker_circuit up zone=br [^;]*;/breaker_circuit up zone=br $conf;/;
        print $fh $c;
        close $fh;
        rename "$n->{prefix}/conf/nginx.conf.new",
               "$n->{prefix}/conf/nginx.conf" or die $!;
        open my $p, '<', "$n->{prefix}/logs/nginx.pid" or die $!;
        chomp(my $master = <$p>);
        kill 'HUP', $master;
        ok(wait_until(10, sub {
               my @w = $n->worker_pids;
               @w == 2 && !grep { $old{$_} } @w }), "reloaded ($conf)");

        my $r = $n->get('/ok');
        is($r->{status}, 503, 'still open after the reload');
        ok($r->{headers}{'retry-after'} > 0
           && $r->{headers}{'retry-after'} <= 60,
           "Retry-After counts down from the first trip: "
           . $r->{headers}{'retry-after'});
        like(state($n), qr/^open\|failure_rate\|/, 'open, same reason');
        is(metric($n, 'breaker_state{circuit="up"}'), 1, 'gauge still 1');
    }
    my @lines = $n->log =~ /(closed -> open)/g;
    is(scalar @lines, 1, 'no new transition');

    # another number of buckets is another circuit: it starts closed
    my %old = map { $_ => 1 } $n->worker_pids;
    open my $in, '<', "$n->{prefix}/conf/nginx.conf" or die $!;
    my $c = do { local $/; <$in> };
    close $in;
    $c =~ s/breaker_circuit up zone=br /breaker_circuit up zone=br buckets=5 /;
    open my $fh, '>', "$n->{prefix}/conf/nginx.conf" or die $!;
    print $fh $c;
    close $fh;
    open my $p, '<', "$n->{prefix}/logs/nginx.pid" or die $!;
    chomp(my $master = <$p>);
    kill 'HUP', $master;
    ok(wait_until(10, sub {
           my @w = $n->worker_pids;
           @w == 2 && !grep { $old{$_} } @w }), 'reloaded (buckets=5)');
    is($n->get('/ok')->{status}, 200, 'a new circuit: closed');
    is(metric($n, 'breaker_state{circuit="up"}'), 0, 'gauge 0');
    unlike($n->log, qr/\[(alert|crit|emerg)\]/, 'no alert');
    $n->stop;
};


done_testing;
