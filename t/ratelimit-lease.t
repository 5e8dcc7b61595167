# mode=lease with real nginx nodes and the fixtures' redis-server: the
# fleet never admits more than the bucket grants (burst + 1 + rate * time)
# whatever the number of nodes and workers; what a node holds unspent is
# bounded (lease_max per node) and ends after lease_ttl; a hot key costs
# Redis far less than one call per admitted request; held tokens survive a
# reload, and a reload while a refill and a request wait on a frozen Redis
# loses neither.
use strict;
use warnings;

use Test::More;
use IO::Socket::INET;
use POSIX ();
use Time::HiRes qw(sleep time);
use Test::Edge qw(:all);
use Test::Edge::Nginx;

my $slow = $ENV{TEST_NGINX_USE_VALGRIND} ? 10 : 1;

redis_thaw() if redis_is_frozen();
redis_start() unless redis_is_up();
redis_flushall();

my $redis = "127.0.0.1:$ENV{TEST_NGINX_REDIS_PORT}";

# one node: a zone in lease mode on the fixtures' Redis, /rl limited by it
# (X-Status says the decision), /metrics
sub node {
    my (%o) = @_;
    my $zone = $o{zone};
    my $timeout = $o{timeout} // '2s';
    my $failure = $o{on_failure} // 'closed';
    return Test::Edge::Nginx->start(workers => $o{workers} // 2,
                                    http => <<"HTTP");
    ratelimit_redis r $redis timeout=$timeout;
    ratelimit_zone \$arg_k zone=$zone:1m rate=$o{rate} redis=r mode=lease
                   $o{lease} on_failure=$failure prefix=lease;
    server {
        listen 127.0.0.1:\$PORT;
        location = /ok { return 200 "ok\\n"; }
        location = /metrics { metrics; }
        location = /rl {
            ratelimit zone=$zone burst=$o{burst} nodelay;
            ratelimit_failure_status 503;
            add_header X-Status \$ratelimit_status always;
            proxy_pass http://127.0.0.1:\$PORT/ok;
        }
    }
HTTP
}

# the sum of a family's samples for a zone in a node's /metrics
sub metric {
    my ($nginx, $name, $zone) = @_;
    my $body = $nginx->get('/metrics')->{body} // '';
    my $sum = 0;
    $sum += $1
        while $body =~ /^(?:nginx_)?\Q$name\E\{[^}]*zone="\Q$zone\E"[^}]*\} (\S+)$/mg;
    return $sum;
}

sub passed {
    my ($nginx, $zone) = @_;
    my $body = $nginx->get('/metrics')->{body} // '';
    my ($n) = $body =~ /^(?:nginx_)?ratelimit_decisions_total\{zone="\Q$zone\E",result="passed"\} (\d+)$/m;
    return $n // 0;
}

# $clients processes, each sending GET $path in turn to the nodes as fast
# as they answer, for $seconds: the statuses counted, and the time from
# before the first request to after the last response
sub hammer {
    my ($nodes, $path, $clients, $seconds) = @_;
    my @pipes;
    my $t0 = time;
    for my $c (1 .. $clients) {
        pipe(my $r, my $w) or die "pipe: $!";
        my $pid = fork // die "fork: $!";
        if (!$pid) {
            close $r;
            my %n = (200 => 0, 429 => 0, other => 0);
            my $i = $c;
            my $deadline = time + $seconds;
            while (time < $deadline) {
                my $node = $nodes->[$i++ % @$nodes];
                my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                              PeerPort => $node->port,
                                              Timeout => 10);
                if (!$s) { $n{other}++; next }
                print $s "GET $path HTTP/1.0\r\nHost: x\r\n\r\n";
                my $line = <$s> // '';
                close $s;
                my ($st) = $line =~ m{^HTTP/1\.\d (\d+)};
                $n{ defined $st && exists $n{$st} ? $st : 'other' }++;
            }
            print $w "$n{200} $n{429} $n{other}\n";
            close $w;
            POSIX::_exit(0);
        }
        close $w;
        push @pipes, [$pid, $r];
    }
    my %t = (admitted => 0, refused => 0, other => 0);
    for my $p (@pipes) {
        my $fh = $p->[1];
        my ($a, $rf, $o) = split ' ', (<$fh> // '0 0 0');
        waitpid $p->[0], 0;
        $t{admitted} += $a;
        $t{refused} += $rf;
        $t{other} += $o;
    }
    $t{elapsed} = time - $t0;
    return \%t;
}

sub master_pid {
    my ($nginx) = @_;
    open my $fh, '<', "$nginx->{prefix}/logs/nginx.pid" or die $!;
    chomp(my $pid = <$fh>);
    return $pid;
}

sub send_get {
    my ($nginx, $path) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $nginx->port) or die $!;
    print $s "GET $path HTTP/1.0\r\nHost: x\r\n\r\n";
    return $s;
}

sub read_decision {
    my ($s) = @_;
    local $/;
    my $raw = <$s> // '';
    close $s;
    return 'empty' if $raw eq '';
    my ($status) = $raw =~ m{^HTTP/1\.\d (\d+)};
    my ($x) = $raw =~ /^X-Status: (\S+)/mi;
    return ($status // '?') . ' ' . ($x // '-');
}


# --- two nodes of two workers each, one key at several times its rate:
# the fleet admits no more than the bucket grants, and what the nodes
# took but did not spend is at most lease_max each
{
    my %z = (rate => '20r/s', burst => 19,
             lease => 'lease_max=8 lease_ttl=30s');
    my $a = node(%z, zone => 'fleet');
    my $b = node(%z, zone => 'fleet');

    for my $node ($a, $b) {
        ok(wait_until(10 * $slow, sub {
               $node->decision('/rl?k=warm') eq '200 PASSED' }),
           'fleet: a node connected to Redis');
    }

    my $granted0 = metric($a, 'ratelimit_lease_tokens_total', 'fleet')
                 + metric($b, 'ratelimit_lease_tokens_total', 'fleet');
    my $passed0 = passed($a, 'fleet') + passed($b, 'fleet');

    my $t = hammer([$a, $b], '/rl?k=hot', 6, 3);
    my $bound = 19 + 1 + int($t->{elapsed} * 20);

    diag(sprintf "fleet: %d admitted, %d refused in %.2f s (bound %d)",
         $t->{admitted}, $t->{refused}, $t->{elapsed}, $bound);

    is($t->{other}, 0, 'fleet: every request was decided (200 or 429)');
    cmp_ok($t->{refused}, '>', 0, 'fleet: the key was over its limit');
    cmp_ok($t->{admitted}, '<=', $bound,
           'fleet: admitted <= burst + 1 + rate * elapsed');

    # every admitted request spent a token Redis granted; the rest is what
    # the nodes hold (nothing expired within lease_ttl=30s)
    my $granted = metric($a, 'ratelimit_lease_tokens_total', 'fleet')
                + metric($b, 'ratelimit_lease_tokens_total', 'fleet');
    my $hot = $granted - $granted0;
    is(passed($a, 'fleet') + passed($b, 'fleet') - $passed0, $t->{admitted},
       'fleet: the nodes counted what the clients saw admitted');
    cmp_ok($hot, '>=', $t->{admitted}, 'fleet: no admission without a token');
    cmp_ok($hot - $t->{admitted}, '<=', 2 * 8,
           'fleet: unspent tokens <= nodes x lease_max');
    is(metric($a, 'ratelimit_lease_expired_tokens_total', 'fleet')
       + metric($b, 'ratelimit_lease_expired_tokens_total', 'fleet'), 0,
       'fleet: none expired within lease_ttl');

    $a->stop;
    $b->stop;
    unlike($a->final_log . $b->final_log, qr/\[(alert|crit|emerg)\]/,
           'fleet: no alert');
}


# --- a hot key on one node: Redis calls per admitted request
{
    redis_flushall();
    my $n = node(zone => 'hot', rate => '100r/s', burst => 199,
                 lease => 'lease_max=128 lease_ttl=1s');
    ok(wait_until(10 * $slow, sub { $n->decision('/rl?k=warm') eq '200 PASSED' }),
       'hot: connected to Redis');

    redis_command('CONFIG', 'RESETSTAT');
    my $t = hammer([$n], '/rl?k=hot', 4, 3);
    my $calls = redis_calls('evalsha');
    my $ratio = $calls / ($t->{admitted} || 1);

    diag(sprintf "hot: %d admitted, %d refused in %.2f s: %d EVALSHA, "
         . "%.4f per admitted request", $t->{admitted}, $t->{refused},
         $t->{elapsed}, $calls, $ratio);

    is($t->{other}, 0, 'hot: every request was decided');
    cmp_ok($t->{admitted}, '<=', 200 + int($t->{elapsed} * 100),
           'hot: admitted <= burst + 1 + rate * elapsed');
    cmp_ok($t->{admitted}, '>=', 100, 'hot: enough admitted to measure');
    cmp_ok($ratio, '<', 0.2, 'hot: Redis calls per admitted request < 0.2');

    my $body = $n->get('/metrics')->{body};
    like($body, qr/^(?:nginx_)?ratelimit_lease_grants_total\{zone="hot"\} [1-9]/m,
         'hot: the lease counters are exported');
    ok(promtool_ok($body), 'hot: promtool accepts the exposition');

    $n->stop;
    unlike($n->final_log, qr/\[(alert|crit|emerg)\]/, 'hot: no alert');
}


# --- two nodes, a hot key far over its limit: the nodes that find the
# bucket empty reserve their next lease (a place in the bucket's queue)
# rather than each ask again at the same moment
{
    redis_flushall();
    my %z = (rate => '200r/s', burst => 199,
             lease => 'lease_max=64 lease_ttl=1s');
    my $a = node(%z, zone => 'two');
    my $b = node(%z, zone => 'two');
    for my $node ($a, $b) {
        ok(wait_until(10 * $slow, sub {
               $node->decision('/rl?k=warm') eq '200 PASSED' }),
           'two: a node connected to Redis');
    }

    redis_command('CONFIG', 'RESETSTAT');
    my $t = hammer([$a, $b], '/rl?k=hot', 6, 3);
    my $calls = redis_calls('evalsha');
    my $ratio = $calls / ($t->{admitted} || 1);

    diag(sprintf "two: %d admitted, %d refused in %.2f s: %d EVALSHA, "
         . "%.4f per admitted request", $t->{admitted}, $t->{refused},
         $t->{elapsed}, $calls, $ratio);

    is($t->{other}, 0, 'two: every request was decided');
    cmp_ok($t->{admitted}, '<=', 200 + int($t->{elapsed} * 200),
           'two: admitted <= burst + 1 + rate * elapsed');
    cmp_ok($t->{admitted}, '>=', 200, 'two: enough admitted to measure');
    cmp_ok($ratio, '<', 0.2, 'two: Redis calls per admitted request < 0.2');

    $a->stop;
    $b->stop;
    unlike($a->final_log . $b->final_log, qr/\[(alert|crit|emerg)\]/,
           'two: no alert');
}


# --- a reservation, step by step: T = 2 s, burst=2 (3 tokens).  a takes
# 1, b takes the other 2; a's next lease finds the bucket empty and
# reserves 2 tokens, valid once the last conforms (4 s): a refuses until
# then, and spends them after, with no Redis call
{
    redis_flushall();
    my %z = (rate => '30r/m', burst => 2, workers => 1,
             lease => 'lease_max=3 lease_ttl=1h');
    my $a = node(%z, zone => 'res');
    my $b = node(%z, zone => 'res');
    for my $node ($a, $b) {
        ok(wait_until(10 * $slow, sub {
               $node->decision('/rl?k=warm') eq '200 PASSED' }),
           'reserve: a node connected to Redis');
    }

    my $t0 = time;
    my @d = ($a->decision('/rl?k=r'), $b->decision('/rl?k=r'),
             $b->decision('/rl?k=r'));
    my $r2 = $a->get('/rl?k=r');
    my $at = time;

    if ($at - $t0 > 1.5) {
        diag('reserve: the setup took longer than the interval allows, '
             . 'the checks are skipped');
    } else {
        is_deeply(\@d, [('200 PASSED') x 3],
                  'reserve: a takes 1 token, b the other 2');
        is("$r2->{status} $r2->{headers}{'x-status'}", '429 REJECTED',
           'reserve: a\'s next lease is a reservation: refused meanwhile');
        like($r2->{headers}{'retry-after'} // '', qr/^[34]$/,
             'reserve: Retry-After: when the 2 reserved tokens conform');
        is(metric($a, 'ratelimit_lease_tokens_total', 'res'), 1 + 1 + 2,
           'reserve: a holds the 2 reserved tokens');

        redis_command('CONFIG', 'RESETSTAT');
        is($a->decision('/rl?k=r'), '429 REJECTED',
           'reserve: refused until they are valid');
        sleep(4.05 - (time - $at)) if time - $at < 4.05;
        is($a->decision('/rl?k=r'), '200 PASSED', 'reserve: then valid: 1st');
        is($a->decision('/rl?k=r'), '200 PASSED', 'reserve: then valid: 2nd');
        is(redis_calls('evalsha'), 0, 'reserve: without asking Redis');
    }

    $a->stop;
    $b->stop;
}


# --- what a node holds ends after lease_ttl; meanwhile it spends it while
# the other node is refused
{
    redis_flushall();
    my %z = (rate => '1r/m', burst => 9, workers => 1,
             lease => 'lease_max=10 lease_ttl=2s');
    my $a = node(%z, zone => 'exp');
    my $b = node(%z, zone => 'exp');

    for my $node ($a, $b) {
        ok(wait_until(10 * $slow, sub {
               $node->decision('/rl?k=warm') eq '200 PASSED' }),
           'expiry: a node connected to Redis');
    }
    redis_flushall();
    my $grants0 = metric($a, 'ratelimit_lease_grants_total', 'exp');
    my $tokens0 = metric($a, 'ratelimit_lease_tokens_total', 'exp');

    # a: 1 token, then 2 (one held), then the held one: the low-water mark
    # starts a refill of 3 (L: the 2 spent, plus one) in the background
    # (the bucket: 10 - 3 - 3 = 4)
    is($a->decision("/rl?k=x"), '200 PASSED', 'expiry: a 1st');
    is($a->decision("/rl?k=x"), '200 PASSED', 'expiry: a 2nd');
    is($a->decision("/rl?k=x"), '200 PASSED', 'expiry: a 3rd (refill)');
    ok(wait_until(10 * $slow, sub {
           metric($a, 'ratelimit_lease_grants_total', 'exp') == $grants0 + 3
       }),
       'expiry: the refill was granted');
    my $granted_at = time;
    is(metric($a, 'ratelimit_lease_tokens_total', 'exp') - $tokens0,
       1 + 2 + 3, 'expiry: a took 3 in the refill');

    # b: the 4 left, then refused: a holds 3
    is($b->decision("/rl?k=x"), '200 PASSED', "expiry: b $_") for 1 .. 4;
    is($b->decision("/rl?k=x"), '429 REJECTED', 'expiry: b is refused');

    my $spent = 0;
    if (time - $granted_at < 1.5) {
        # within lease_ttl: a spends what it holds (Redis has none)
        is($a->decision("/rl?k=x"), '200 PASSED',
           'expiry: a spends its lease while b is refused');
        $spent = 1;
    } else {
        diag('expiry: slower than lease_ttl, the spend-within-ttl check '
             . 'is skipped');
    }

    # lease_ttl after the grant (the grant came before $granted_at)
    sleep(2.05 - (time - $granted_at)) if time - $granted_at < 2.05;
    is($a->decision("/rl?k=x"), '429 REJECTED',
       'expiry: after lease_ttl the unspent tokens are gone');
    is(metric($a, 'ratelimit_lease_expired_tokens_total', 'exp'), 3 - $spent,
       'expiry: counted as expired unspent');

    $a->stop;
    $b->stop;
}


# --- Redis down: what a node holds is spent, then the failure policy
{
    redis_flushall();
    my $n = node(zone => 'down', rate => '1r/m', burst => 9, workers => 1,
                 on_failure => 'local', lease => 'lease_ttl=1h');
    ok(wait_until(10 * $slow, sub { $n->decision('/rl?k=warm') eq '200 PASSED' }),
       'down: connected to Redis');
    is($n->decision('/rl?k=d'), '200 PASSED', 'down: 1st (1 token)');
    is($n->decision('/rl?k=d'), '200 PASSED', 'down: 2nd (2 tokens, 1 held)');

    redis_stop();
    is($n->decision('/rl?k=d'), '200 PASSED',
       'down: the held token passes without Redis');
    # then the zone's own bucket decides (burst=9: 10 pass, per node)
    my @d = map { $n->decision('/rl?k=d') } 1 .. 11;
    is_deeply(\@d, [('200 FAILED_LOCAL') x 10, '429 REJECTED'],
              'down: then on_failure=local: the node\'s own bucket');
    redis_start();

    $n->stop;
}


# --- one key holding another type fails its lease alone, logged
{
    redis_flushall();
    my $n = node(zone => 'bad', rate => '1r/m', burst => 9, workers => 1,
                 on_failure => 'open', lease => '');
    ok(wait_until(10 * $slow, sub { $n->decision('/rl?k=warm') eq '200 PASSED' }),
       'wrongtype: connected to Redis');
    redis_command('HSET', 'rl:{lease:bad}:t', 'f', 'v');
    is($n->decision('/rl?k=bad'), '200 FAILED_OPEN',
       'wrongtype: the failure policy');
    is($n->decision('/rl?k=good'), '200 PASSED', 'wrongtype: others pass');
    is(redis_command('TYPE', 'rl:{lease:bad}:t'), 'hash',
       'wrongtype: the key is left as it was');
    like($n->log, qr/\[error\] .*ratelimit zone "bad": redis "r" failed the lease: (ERR )?WRONGTYPE.*client: /,
         'wrongtype: logged with the reason, in request context');
    $n->stop;
}


# --- a reload while a refill and a waiting request wait on a frozen Redis
{
    redis_flushall();
    my $n = node(zone => 'rl', rate => '1r/m', burst => 99, workers => 1,
                 timeout => '5s', on_failure => 'open',
                 lease => 'lease_ttl=1h');
    ok(wait_until(10 * $slow, sub { $n->decision('/rl?k=warm') eq '200 PASSED' }),
       'reload: connected to Redis');
    is($n->decision('/rl?k=w'), '200 PASSED', 'reload: 1st (1 token)');
    is($n->decision('/rl?k=w'), '200 PASSED', 'reload: 2nd (2, 1 held)');

    redis_freeze();
    my $t0 = time;
    is($n->decision('/rl?k=w'), '200 PASSED',
       'reload: the 3rd spends the held token; its refill waits on Redis');
    cmp_ok(time - $t0, '<', 2, 'reload: ... without waiting for it');
    my $waiting = send_get($n, '/rl?k=cold');

    my $before = () = $n->log =~ /start worker processes/g;
    kill 'HUP', master_pid($n);
    ok(wait_until(20 * $slow, sub {
           my $c = () = $n->log =~ /start worker processes/g;
           $c > $before }), 'reload: new workers');

    redis_thaw();
    is(read_decision($waiting), '200 PASSED',
       'reload: the waiting request got its lease from the old worker');
    ok(wait_until(20 * $slow, sub { $n->log =~ /gracefully shutting down/
                                    && $n->log =~ /exit$/m }),
       'reload: the old worker exited');

    # the refill's 3 tokens reached the zone, which the reload kept: with
    # Redis frozen again, the new worker spends them
    redis_freeze();
    my @d = map { $n->decision('/rl?k=w') } 1 .. 3;
    is_deeply(\@d, [('200 PASSED') x 3],
              'reload: the refill\'s tokens, in the kept zone, pass');
    redis_thaw();

    $n->stop;
    my $log = $n->final_log;
    unlike($log, qr/\[(alert|crit|emerg)\]|exited on signal|open socket/,
           'reload: no alert, no crash, no socket left');
}

done_testing();
