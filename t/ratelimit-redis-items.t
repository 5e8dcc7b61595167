# One bad item of a batched Redis decision fails alone: each item is
# decided under pcall in the script, so a key holding another type, or a
# bucket that is not a number, gets its zone's failure policy (with a log
# line) while the other items of the same EVALSHA are decided, and
# charged, exactly.
use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time);
use Test::Edge qw(:all);
use Test::Edge::Nginx;

redis_start() unless redis_is_up();
redis_flushall();

my $redis = "127.0.0.1:$ENV{TEST_NGINX_REDIS_PORT}";

# zones a, b and c share one script: one request's three decisions leave
# in one EVALSHA (asserted below)
my $http = <<"HTTP";
    ratelimit_redis r $redis timeout=2s;
    ratelimit_zone \$arg_k zone=a:1m rate=1r/m redis=r on_failure=closed;
    ratelimit_zone \$arg_k zone=b:1m rate=1r/m redis=r on_failure=open;
    ratelimit_zone \$arg_k zone=c:1m rate=1r/m redis=r on_failure=closed;
    ratelimit_zone \$arg_k zone=d:1m rate=1r/m redis=r on_failure=open;
    ratelimit_ban zone=d threshold=100 window=1m duration=1m;
    ratelimit_zone \$arg_k zone=e:1m rate=1r/m redis=r on_failure=closed;
    ratelimit_ban zone=e threshold=100 window=1m duration=1m;
    server {
        listen 127.0.0.1:\$PORT;
        location = /ok { return 200 "ok\\n"; }
        location = /abc {
            ratelimit zone=a burst=1 nodelay;
            ratelimit zone=b nodelay;
            ratelimit zone=c burst=3 nodelay;
            add_header X-Status \$ratelimit_status always;
            proxy_pass http://127.0.0.1:\$PORT/ok;
        }
        location = /c {
            ratelimit zone=c burst=3 nodelay;
            add_header X-Status \$ratelimit_status always;
            proxy_pass http://127.0.0.1:\$PORT/ok;
        }
        location = /de {
            ratelimit zone=d nodelay;
            ratelimit zone=e burst=1 nodelay;
            add_header X-Status \$ratelimit_status always;
            proxy_pass http://127.0.0.1:\$PORT/ok;
        }
    }
HTTP

my $nginx = Test::Edge::Nginx->start(http => $http);
ok(wait_until(10, sub { $nginx->decision('/c?k=warm') eq '200 PASSED' }),
   'connected to Redis');

my $t0 = time;
for my $poison (['string', 'SET', 'rl:{b:x}:t', 'notanumber'],
                ['hash', 'HSET', 'rl:{b:y}:t', 'f', 'v'])
{
    my ($what, $cmd, $key, @args) = @$poison;
    my ($k) = $key =~ /b:(\w)/;
    redis_command($cmd, $key, @args);

    redis_command('CONFIG', 'RESETSTAT');
    # a: burst=1 (2 pass); b: poisoned, on_failure=open; c: burst=3
    is($nginx->decision("/abc?k=$k"), '200 FAILED_OPEN',
       "$what: 1st: a and c pass, b gets its failure policy (open)");
    is(redis_calls('evalsha'), 1, "$what: the three decisions in one EVALSHA");
    is($nginx->decision("/abc?k=$k"), '200 FAILED_OPEN', "$what: 2nd: same");
    is($nginx->decision("/abc?k=$k"), '429 REJECTED',
       "$what: 3rd: a refuses (burst=1), exactly");

    # c was charged exactly 3 times (burst=3: 4 pass in all)
    is($nginx->decision("/c?k=$k"), '200 PASSED', "$what: c: a 4th passes");
    is($nginx->decision("/c?k=$k"), '429 REJECTED', "$what: c: a 5th does not");

    is(redis_command('TYPE', $key), $what,
       "$what: the poisoned key is left as it was");
}
is(redis_command('GET', 'rl:{b:x}:t'), 'notanumber', 'its value too');

my $log = $nginx->log;
like($log, qr/\[error\] .*ratelimit zone "b": redis "r" failed the decision: (ERR )?the bucket rl:\{b:x\}:t does not hold a number; the failure policy applies.*client: /,
     'the string: one log line with the reason, in request context');

# --- with bans (the other script): a poisoned refusal counter fails that
# item alone, after nothing was written for it
redis_command('SET', 'rl:{d:z}:r', 'notanumber');
redis_command('SET', 'rl:{d:z}:t', '99999999999999999');    # refuses
redis_command('CONFIG', 'RESETSTAT');
is($nginx->decision('/de?k=z'), '200 FAILED_OPEN',
   'bans: d fails (INCR on a non-number), e passes');
is(redis_calls('evalsha'), 1, 'bans: one EVALSHA');
is($nginx->decision('/de?k=z'), '200 FAILED_OPEN', 'bans: e passes again');
is($nginx->decision('/de?k=z'), '429 REJECTED', 'bans: e refuses (burst=1)');
is(redis_command('GET', 'rl:{d:z}:r'), 'notanumber', 'bans: d left as it was');
is(redis_command('EXISTS', 'rl:{d:z}:b') + 0, 0, 'bans: no ban written');

$nginx->stop;
$log = $nginx->final_log;
unlike($log, qr/\[(alert|crit|emerg)\]/, 'no alert');
my $lines = () = $log =~ /ratelimit zone "b": redis "r" failed the decision/g;
my $intervals = 1 + int((time - $t0) / 5) + 1;
cmp_ok($lines, '<=', $intervals,
       "zone b's 6 failures: at most one line per 5 s interval ($lines)");

done_testing();
