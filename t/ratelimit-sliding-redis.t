# algorithm=sliding_window in Redis: plain pipelined commands (INCRBY of
# the current window's key, GET of the previous one's, PTTL of the ban
# with bans; PEXPIRE of the current window's key once INCRBY says it is
# new), no script.  Windows are aligned on the node's wall
# clock, which this test reads too; nginx's cached time for a decision lies
# between our sending the request (less a millisecond: nginx keeps
# milliseconds) and reading its answer, and every timing assertion is a
# bound from those two instants.  See t/ratelimit-sliding.t for the
# arithmetic.
use strict;
use warnings;

use Test::More;
use POSIX qw(floor);
use Time::HiRes qw(sleep time);
use Test::Edge qw(:all);
use Test::Edge::Nginx;

redis_start() unless redis_is_up();
redis_flushall();

my $redis = "127.0.0.1:$ENV{TEST_NGINX_REDIS_PORT}";

# the fast zone: 10 per window of 4 s (20 s under valgrind, whose nginx is
# slow enough that a burst of 10 could outlast 4 s)
my $W = 4 * $Test::Edge::Valgrind::Slowdown;
my $fast_rate = 600 / $W;

# a location per zone, /name limited by zone "name"
my @zones = qw(sw fast tiered banned hostile fopen flocal g);
my $locations = join '', map { <<"LOC" } @zones;
        location = /$_ {
            ratelimit zone=$_;
            add_header X-Status \$ratelimit_status always;
            proxy_pass http://127.0.0.1:\$PORT/ok;
        }
LOC

(my $http = <<"HTTP") =~ s/\$LOCATIONS\n/$locations/;
    ratelimit_redis r $redis timeout=10s;
    ratelimit_zone \$arg_k zone=sw:1m rate=10r/m algorithm=sliding_window
                   redis=r on_failure=closed;
    ratelimit_zone \$arg_k zone=fast:1m rate=${fast_rate}r/m window=${W}s
                   algorithm=sliding_window redis=r on_failure=closed;
    ratelimit_zone \$arg_k zone=tiered:1m rate=10r/m tier=\$arg_t
                   algorithm=sliding_window redis=r on_failure=closed;
    ratelimit_tier zone=tiered tier=gold rate=20r/m;
    ratelimit_zone \$arg_k zone=banned:1m rate=2r/m algorithm=sliding_window
                   redis=r on_failure=closed;
    ratelimit_ban zone=banned threshold=2 window=1m duration=1m;
    ratelimit_zone \$http_x_key zone=hostile:1m rate=3r/m
                   algorithm=sliding_window redis=r on_failure=closed;
    ratelimit_zone \$arg_k zone=fopen:1m rate=3r/m algorithm=sliding_window
                   redis=r on_failure=open;
    ratelimit_zone \$arg_k zone=flocal:1m rate=3r/m algorithm=sliding_window
                   redis=r on_failure=local;
    ratelimit_zone \$arg_k zone=g:1m rate=10r/m redis=r;
    server {
        listen 127.0.0.1:\$PORT;
        location = /ok { return 200 "ok\\n"; }
\$LOCATIONS
        location = /cost4 {
            ratelimit zone=sw cost=4;
            add_header X-Status \$ratelimit_status always;
            proxy_pass http://127.0.0.1:\$PORT/ok;
        }
        location = /cost2 {
            ratelimit zone=sw cost=2;
            add_header X-Status \$ratelimit_status always;
            proxy_pass http://127.0.0.1:\$PORT/ok;
        }
        location = /dry {
            ratelimit zone=sw;
            ratelimit_dry_run on;
            add_header X-Status \$ratelimit_status always;
            proxy_pass http://127.0.0.1:\$PORT/ok;
        }
    }
HTTP

my $nginx = Test::Edge::Nginx->start(workers => 2, http => $http);

my $uniq = 0;
sub fresh_key { 'k' . $$ . '-' . $uniq++ }

sub decisions {
    my ($path, $n) = @_;
    return map { $nginx->decision($path) } 1 .. $n;
}

sub count { my $want = shift; scalar grep { $_ eq $want } @_ }

# CODE run within one window of W seconds of the wall clock (retried in a
# later window if it straddled one): (the window's index, CODE's result)
sub within_one_window {
    my ($w, $code) = @_;
    for (1 .. 5) {
        my $t0 = time - 0.001;
        my @r = $code->();
        my $t1 = time;
        return (floor($t0 / $w), @r) if floor($t0 / $w) == floor($t1 / $w);
    }
    die "five attempts straddled a window boundary\n";
}

sub wait_for_offset {
    my ($w, $k, $off) = @_;
    my $at = $k * $w + $off;
    sleep(0.005) while time < $at;
}

ok(wait_until(10, sub { $nginx->decision('/sw?k=warm') eq '200 PASSED' }),
   'connected to Redis');


# --- exactly N of a window; refused requests take their count back
{
    my $key;
    my ($k, @d) = within_one_window(60, sub {
        $key = fresh_key();
        decisions("/sw?k=$key", 14);
    });
    is(count('200 PASSED', @d), 10, 'N=10: exactly 10 of 14 pass');
    is(count('429 REJECTED', @d), 4, 'the other 4 are refused');
    ok(wait_until(10, sub {
           (redis_command('GET', "rl:{sw:$key}:s$k") // '') eq '10' }),
       "the window's key holds the 10 that passed (DECRBY of refusals)");
    my $ttl = redis_command('PTTL', "rl:{sw:$key}:s$k");
    ok($ttl > 0 && $ttl <= 120001,
       "it expires when the next window ends ($ttl ms)");
}


# --- the commands: INCRBY, GET, PEXPIRE once the key is new, no script
sub reset_stats {
    wait_until(10, sub { (redis_command('CONFIG', 'RESETSTAT') // '') eq 'OK'
                         && redis_calls('decrby') == 0 });
}

{
    reset_stats();
    is($nginx->decision('/sw?k=' . fresh_key()), '200 PASSED', 'a decision');
    # the PEXPIRE leaves once INCRBY's reply is in, not waited for
    wait_until(10, sub { redis_calls('pexpire') >= 1 });
    is(redis_calls('incrby') . redis_calls('pexpire') . redis_calls('get')
       . redis_calls('evalsha'), '1110',
       'a new key: INCRBY, GET and its PEXPIRE, no EVALSHA');
}


# --- a returning key: INCRBY and GET only; PEXPIRE again when its count
# crosses a power of two
{
    my ($k, @d) = within_one_window(60, sub {
        my $key = fresh_key();
        reset_stats();
        my @a = decisions("/sw?k=$key", 4);
        # counts 1, 2 and 4 cross a power of two
        wait_until(10, sub { redis_calls('pexpire') >= 3 });
        reset_stats();
        push @a, decisions("/sw?k=$key", 3);    # counts 5, 6, 7
        push @a, decisions("/sw?k=$key", 1);    # 8
        wait_until(10, sub { redis_calls('pexpire') >= 1 });
        @a;
    });
    is(count('200 PASSED', @d), 8, '8 decisions on one key pass');
    is(redis_calls('incrby') . redis_calls('get') . redis_calls('pexpire'),
       '441', 'counts 5 to 8: INCRBY and GET each, one PEXPIRE (at 8)');
}


# --- a key whose PEXPIRE was lost (the connection lost between INCRBY and
# PEXPIRE) gets it back
{
    my ($lost, $back);
    my ($k, @d) = within_one_window(60, sub {
        my $key = fresh_key();
        my $name = "rl:{sw:$key}:s" . floor(time / 60);
        my @a = decisions("/sw?k=$key", 1);
        wait_until(10, sub { (redis_command('PTTL', $name) // -2) > 0 });
        redis_command('PERSIST', $name);
        $lost = redis_command('PTTL', $name);
        push @a, decisions("/sw?k=$key", 1);    # count 2
        wait_until(10, sub { ($back = redis_command('PTTL', $name)) > 0 });
        @a;
    });
    is(count('200 PASSED', @d), 2, 'two decisions pass');
    is($lost, -1, 'the key without an expiry (PERSIST)');
    ok($back > 0 && $back <= 120001,
       "the next count that crosses a power of two sets it again ($back ms)");
}


# --- two nodes share one window through Redis
{
    my $other = Test::Edge::Nginx->start(workers => 1, http => $http);
    ok(wait_until(10, sub { $other->decision('/sw?k=warm2') eq '200 PASSED' }),
       'a second node, connected');
    my ($k, @d) = within_one_window(60, sub {
        my $key = fresh_key();
        map { ($nginx->decision("/sw?k=$key"), $other->decision("/sw?k=$key")) }
            1 .. 7;
    });
    is(count('200 PASSED', @d), 10,
       'alternating between the nodes: 10 of 14 pass in all');
    $other->stop;
}


# --- a refused key is then refused by each worker's deny cache, without
# Redis, until a request could pass
{
    my ($k, @d) = within_one_window(60, sub {
        my $key = fresh_key();
        my @pass = decisions("/sw?k=$key", 10);
        redis_command('CONFIG', 'RESETSTAT');
        (@pass, decisions("/sw?k=$key", 12));
    });
    is(count('200 PASSED', @d), 10, 'the window: 10 pass');
    is(count('429 REJECTED', @d), 12, 'the next 12 are refused');
    my $asked = redis_calls('incrby');
    ok($asked >= 1 && $asked <= 2,
       "Redis decided the first refusal of each worker only ($asked)");
}


# --- the boundary burst and the weighting after half a window
{
    my $w = $W;
    my ($x, $y, @a);
    my ($k) = within_one_window($w, sub {
        $x = fresh_key();
        $y = fresh_key();
        my $k = floor(time / $w);
        wait_for_offset($w, $k, 0.55 * $w);
        # exactly N: no refusal, so no deny-cache entry; the next
        # bursts are decided by Redis
        @a = (decisions("/fast?k=$x", 10), decisions("/fast?k=$y", 10));
    });
    is(count('200 PASSED', @a), 20,
       'window k: N=10 pass for each of two keys');

    wait_for_offset($w, $k + 1, 0);
    my @b = decisions("/fast?k=$x", 10);
    my $e1 = time - ($k + 1) * $w;
    ok($e1 < $w, 'the second burst ended within window k+1')
        or diag("it ended at offset $e1");
    my $passed = count('200 PASSED', @b);
    my $bound = floor(10 * $e1 / $w);
    ok($passed <= $bound,
       "boundary burst: $passed of 10 pass, at most floor(N * e / W) = "
       . "$bound by offset $e1");
    ok(10 + $passed <= 19, 'the two bursts together: never 2N');

    # refused within window k+1 after a full window k: the wait is within
    # this window, until the previous window weighs one request less:
    # at most W / N = 0.4 s, so Retry-After says 1
    my $r = $nginx->get("/fast?k=$x");
    ok($r->{status} == 200
       || ($r->{headers}{'retry-after'} // 99) <= $w / 10 + 0.999,
       "Retry-After within the window: at most W / N ("
       . ($r->{headers}{'retry-after'} // 'none') . ')');

    wait_for_offset($w, $k + 1, $w / 2);
    my $e0 = time - 0.001 - ($k + 1) * $w;
    my @c = decisions("/fast?k=$y", 10);
    $e1 = time - ($k + 1) * $w;
    $passed = count('200 PASSED', @c);
    my ($lo, $hi) = (floor(10 * $e0 / $w), floor(10 * $e1 / $w));
    ok($e1 < $w && $passed >= $lo && $passed <= $hi,
       "after half a window: $passed pass, between $lo and $hi "
       . "(offsets $e0 .. $e1)");
}


# --- headers
{
    my ($t0, $t1, $r1, $r);
    my ($k) = within_one_window(60, sub {
        my $key = fresh_key();
        $t0 = time - 0.001;
        $r1 = $nginx->get("/sw?k=$key");
        $nginx->get("/sw?k=$key") for 2 .. 10;
        $r = $nginx->get("/sw?k=$key");
        $t1 = time;
    });
    is($r1->{headers}{'ratelimit-policy'}, '"sw";q=10;w=60',
       'RateLimit-Policy: q= the requests of a window, w= the window');
    like($r1->{headers}{'ratelimit'}, qr/^"sw";r=9;t=\d+$/, 'RateLimit');
    is($r->{status}, 429, 'the 11th is refused');
    my ($e0, $e1) = ($t0 - $k * 60, $t1 - $k * 60);
    my $ra = $r->{headers}{'retry-after'} // -1;
    ok($ra >= 66 - $e1 - 1 && $ra <= 66 - $e0 + 1,
       "Retry-After: when one request's weight has left the window ($ra)");
}


# --- cost, tiers, dry run
{
    my ($k, @d) = within_one_window(60, sub {
        my $key = fresh_key();
        map { $nginx->decision("$_?k=$key") }
            qw(/cost4 /cost4 /cost4 /cost2 /cost2);
    });
    is_deeply(\@d, ['200 PASSED', '200 PASSED', '429 REJECTED',
                    '200 PASSED', '429 REJECTED'],
              'cost=4 twice, a third does not fit, cost=2 fills the 10');

    ($k, @d) = within_one_window(60, sub {
        decisions('/tiered?t=gold&k=' . fresh_key(), 22);
    });
    is(count('200 PASSED', @d), 20, 'tier gold: 20 of 22 pass');

    ($k, @d) = within_one_window(60, sub {
        my $key = fresh_key();
        (decisions("/dry?k=$key", 12), decisions("/sw?k=$key", 1));
    });
    is(count('200 PASSED', @d), 10, 'dry run: 10 pass');
    is(count('200 DRY_RUN', @d), 2, 'two would have been refused');
    is($d[-1], '429 REJECTED', 'the window is full of the 10');
}


# --- bans, shared through Redis
{
    my $key;
    my ($k, @d) = within_one_window(60, sub {
        $key = fresh_key();
        decisions("/banned?k=$key", 5);
    });
    is_deeply(\@d, ['200 PASSED', '200 PASSED', '429 REJECTED',
                    '429 BANNED', '429 BANNED'],
              'two pass, one refused, the second refusal bans');
    # the ban's SET and the count's DEL are not waited for: poll
    my $ttl;
    ok(wait_until(10, sub {
           $ttl = redis_command('PTTL', "rl:{banned:$key}:b");
           $ttl > 0 }) && $ttl <= 60000, "the ban is in Redis ($ttl ms)");
    ok(wait_until(10, sub {
           redis_command('EXISTS', "rl:{banned:$key}:r") == 0 }),
       'the refusals count went with the ban');
    ok(wait_until(10, sub {
           (redis_command('GET', "rl:{banned:$key}:s$k") // '') eq '2' }),
       'refused and banned requests took their count back');
}


# --- hostile keys and foreign values
{
    my $key = '{x}:y}' . fresh_key();
    my ($k, @d) = within_one_window(60, sub {
        map { $nginx->get('/hostile', 'X-Key' => $key)->{status} } 1 .. 4;
    });
    is_deeply(\@d, [200, 200, 200, 429], 'a key of braces: N=3 pass');
    is(redis_command('GET', "rl:{hostile:$key}:s$k"), 3,
       'its own key, inside the hash tag');

    my $long = 'z' x 300;
    ($k, @d) = within_one_window(60, sub {
        map { $nginx->get('/hostile', 'X-Key' => $long)->{status} } 1 .. 4;
    });
    is_deeply(\@d, [200, 200, 200, 429], 'a 300-byte key: limited');
    my $keys = redis_command('KEYS', 'rl:{hostile:*');
    ok(!grep({ length($_) > 100 } @$keys),
       'long keys are hashed, never stored at length');

    my $t = floor(time / 60);
    redis_command('HSET', "rl:{sw:poison}:s$t", 'f', 'v');
    redis_command('HSET', "rl:{sw:poison}:s" . ($t + 1), 'f', 'v');
    is($nginx->decision('/sw?k=poison'), '503 FAILED_CLOSED',
       'a hash where the count should be: the failure policy');
    redis_command('SET', "rl:{sw:junk}:s" . ($t - 1), 'abc');
    redis_command('SET', "rl:{sw:junk}:s$t", 'abc');
    is($nginx->decision('/sw?k=junk'), '503 FAILED_CLOSED',
       'a previous window that is not a number: the failure policy');
    like($nginx->log, qr/\[error\] .*ratelimit zone "sw": redis "r" failed the decision: WRONGTYPE/,
         'the error is logged with its zone');
}


# --- Redis down: each zone's failure policy, at once
{
    redis_stop();
    ok(wait_until(10, sub {
           $nginx->decision('/fopen?k=' . fresh_key()) eq '200 FAILED_OPEN' }),
       'on_failure=open passes');
    is($nginx->decision('/sw?k=' . fresh_key()), '503 FAILED_CLOSED',
       'on_failure=closed refuses with 503');
    my ($k, @d) = within_one_window(60, sub {
        decisions('/flocal?k=' . fresh_key(), 4);
    });
    is_deeply(\@d, [('200 FAILED_LOCAL') x 3, '429 REJECTED'],
              "on_failure=local: the zone's own sliding window, N=3");
    redis_start();
    ok(wait_until(15, sub {
           $nginx->decision('/sw?k=' . fresh_key()) eq '200 PASSED' }),
       'back to Redis once it is up');
}

unlike($nginx->log, qr/\[(alert|crit|emerg)\]/, 'no alert in error.log');
$nginx->stop;

done_testing();
