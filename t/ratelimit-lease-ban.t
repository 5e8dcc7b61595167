# mode=lease with ratelimit_ban, two real nginx nodes on the fixtures'
# redis-server: a ban is the fleet's (kept in Redis, as in Redis mode), a
# node caches it so that a banned key costs Redis nothing, refusals decided
# on the nodes add up in Redis's count, the ban ends after its duration,
# and with Redis down each node still bans on its own (on_failure=local).
use strict;
use warnings;

use Test::More;
use Time::HiRes qw(sleep time);
use Test::Edge qw(:all);
use Test::Edge::Nginx;

my $slow = $ENV{TEST_NGINX_USE_VALGRIND} ? 10 : 1;

redis_thaw() if redis_is_frozen();
redis_start() unless redis_is_up();
redis_flushall();

my $redis = "127.0.0.1:$ENV{TEST_NGINX_REDIS_PORT}";

# one node: a lease zone with bans (threshold 3) on the fixtures' Redis;
# /rl limited by it, X-Status says the decision
sub node {
    my (%o) = @_;
    my $failure = $o{on_failure} // 'closed';
    return Test::Edge::Nginx->start(workers => 2, http => <<"HTTP");
    ratelimit_redis r $redis timeout=2s;
    ratelimit_zone \$arg_k zone=rl:1m rate=$o{rate} redis=r mode=lease
                   on_failure=$failure prefix=lease;
    ratelimit_ban zone=rl threshold=3 window=1m duration=$o{duration};
    server {
        listen 127.0.0.1:\$PORT;
        location = /ok { return 200 "ok\\n"; }
        location = /rl {
            ratelimit zone=rl nodelay;
            add_header X-Status \$ratelimit_status always;
            proxy_pass http://127.0.0.1:\$PORT/ok;
        }
    }
HTTP
}

sub connected {
    my ($n, $what) = @_;
    ok(wait_until(10 * $slow, sub {
           $n->decision("/rl?k=warm-$n->{port}") eq '200 PASSED' }),
       "$what: connected to Redis");
}

# the key's ban in Redis: its PTTL in ms (-2: none)
sub ban_pttl { redis_command('PTTL', "rl:{lease:$_[0]}:b") }

sub calls {
    my $n = 0;
    $n += redis_calls($_) for qw(evalsha eval);
    return $n;
}

# every command Redis ran since CONFIG RESETSTAT but the test's own
sub all_calls {
    my $stats = redis_command('INFO', 'commandstats') // '';
    my $n = 0;
    while ($stats =~ /cmdstat_(\w+):calls=(\d+)/g) {
        $n += $2 unless $1 eq 'info' || $1 eq 'config';
    }
    return $n;
}

sub clean_logs {
    my ($what, @nodes) = @_;
    for my $n (@nodes) {
        $n->stop;
        # refusals are logged at "error", nginx's default for limit_req
        (my $log = $n->final_log) =~ s/^.*\[error\] .* ratelimit: (REJECTED|BANNED) by zone .*\n//mg;
        unlike($log, qr/\[(error|alert|crit|emerg)\]|exited on signal|open socket/,
               "$what: no error in the log of node $n->{port}");
    }
}


# --- a key banned on node A is banned on node B; the ban costs Redis no
# call while cached; it ends after its duration
{
    my $a = node(rate => '1r/m', duration => '8s');
    my $b = node(rate => '1r/m', duration => '8s');
    connected($a, 'fleet ban (A)');
    connected($b, 'fleet ban (B)');

    # 1r/m, burst 0: one token, then refusals decided on A alone (Redis
    # has no token for a minute); the third refusal reaches A's own
    # count: A bans the key at once and tells Redis
    my @d = map { $a->decision('/rl?k=x') } 1 .. 4;
    is_deeply(\@d, ['200 PASSED', '429 REJECTED', '429 REJECTED',
                    '429 BANNED'],
              'fleet ban: A passes one, refuses two, bans at the third');

    ok(wait_until(5 * $slow, sub { ban_pttl('x') > 0 }),
       'fleet ban: the ban key is in Redis');
    my $pttl = ban_pttl('x');
    ok($pttl > 0 && $pttl <= 8000,
       "fleet ban: with a TTL within the duration ($pttl ms)");
    is(redis_command('EXISTS', 'rl:{lease:x}:r'), 0,
       'fleet ban: the refusal count is gone with the ban');

    is($b->decision('/rl?k=x'), '429 BANNED',
       'fleet ban: B, which never refused the key, refuses it as banned');
    like($b->get('/rl?k=x')->{headers}{'retry-after'} // '', qr/^[1-8]$/,
         'fleet ban: Retry-After is what is left of the ban');

    # cached on both nodes, in shared memory (both workers): no Redis call
    redis_command('CONFIG', 'RESETSTAT');
    my @banned = grep { $_ eq '429 BANNED' }
                 map { ($a->decision('/rl?k=x'), $b->decision('/rl?k=x')) }
                 1 .. 10;
    is(scalar @banned, 20, 'fleet ban: 20 requests, all banned');
    is(all_calls(), 0,
       'fleet ban: ... and Redis ran no command for them (commandstats)');

    # the ban ends in Redis and on the nodes: the key is then refused
    # for its bucket (a token per minute), no longer banned
    ok(wait_until(15 * $slow, sub { ban_pttl('x') == -2 }),
       'fleet ban: the ban key expires');
    ok(wait_until(10 * $slow, sub {
           $b->decision('/rl?k=x') eq '429 REJECTED' }),
       'fleet ban: B refuses the key for its bucket once the ban ended');
    ok(wait_until(10 * $slow, sub {
           $a->decision('/rl?k=x') eq '429 REJECTED' }),
       'fleet ban: so does A');
    is($a->decision('/rl?k=other'), '200 PASSED',
       'fleet ban: another key was never banned');

    clean_logs('fleet ban', $a, $b);
}


# --- refusals on two nodes add up in Redis: neither reaches the threshold
# alone, their sum does, and the key is banned by Redis
{
    redis_flushall();

    # 20r/m: a token every 3 s; what a node refused is told to Redis with
    # its next lease, which it asks for once Redis has a token again
    my $a = node(rate => '20r/m', duration => '1h');
    my $b = node(rate => '20r/m', duration => '1h');
    connected($a, 'sum');
    connected($b, 'sum');

    # two refusals on A (a slow machine may let a request pass between
    # them: its lease tells Redis the refusals before it)
    redis_command('CONFIG', 'RESETSTAT');
    my ($refused, $passed) = (0, 0);
    for (1 .. 20) {
        my $d = $a->decision('/rl?k=y');
        $refused++ if $d eq '429 REJECTED';
        $passed++ if $d eq '200 PASSED';
        last if $refused == 2;
    }
    is($refused, 2, 'sum: A refused the key twice');
    is(calls(), $passed,
       'sum: ... at no Redis call of their own (one lease per pass)');

    # a token is back in Redis after 3 s: A's next request takes it, and
    # its lease carries A's two refusals
    sleep 3.2;
    is($a->decision('/rl?k=y'), '200 PASSED', 'sum: A passes a request');
    is(redis_command('GET', 'rl:{lease:y}:r'), '2',
       'sum: its lease added A\'s two refusals to Redis\'s count');
    my $pttl = redis_command('PTTL', 'rl:{lease:y}:r');
    ok($pttl > 0 && $pttl <= 60000,
       "sum: the count lasts the window ($pttl ms)");

    # B: one refusal (Redis's token went to A)
    $refused = 0;
    for (1 .. 20) {
        $refused++ if $b->decision('/rl?k=y') eq '429 REJECTED';
        last if $refused == 1;
    }
    is($refused, 1, 'sum: B refused the key once');

    # B's next lease carries it: 2 + 1 reaches the threshold in Redis
    sleep 3.2;
    is($b->decision('/rl?k=y'), '429 BANNED',
       'sum: B\'s next lease finds the key banned by the sum');
    $pttl = ban_pttl('y');
    ok($pttl > 3_590_000 && $pttl <= 3_600_000,
       "sum: the ban key lasts the duration ($pttl ms)");

    # A asks for its next lease when Redis has a token again, and finds
    # the ban there (A's own count, 2 + 0 since, did not reach 3)
    sleep 3.2;
    is($a->decision('/rl?k=y'), '429 BANNED',
       'sum: A\'s next lease finds the ban too');

    clean_logs('sum', $a, $b);
}


# --- Redis down, on_failure=local: each node counts and bans on its own
{
    redis_flushall();
    my $a = node(rate => '1r/m', duration => '1h', on_failure => 'local');
    connected($a, 'local');
    redis_stop();

    my @d = map { $a->decision('/rl?k=z') } 1 .. 4;
    is_deeply(\@d, ['200 FAILED_LOCAL', '429 REJECTED', '429 REJECTED',
                    '429 BANNED'],
              'local: the node\'s own bucket, then its own ban');

    redis_start();
    ok(wait_until(15 * $slow, sub { redis_is_up() }), 'local: Redis back');
    is($a->decision('/rl?k=z'), '429 BANNED',
       'local: the node keeps its ban once Redis is back');

    $a->stop;
    unlike($a->final_log, qr/\[(alert|crit|emerg)\]|exited on signal|open socket/,
           'local: no alert, no crash, no socket left');
}

done_testing();
