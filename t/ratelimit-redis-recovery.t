# Redis failures while the same nginx keeps running: the limiter recovers
# by itself, without a reload, when Redis comes back, when its scripts are
# flushed (NOSCRIPT), and after a freeze longer than the timeout.
use strict;
use warnings;

use Test::More;
use Test::Edge qw(:all);
use Test::Edge::Nginx;

redis_start() unless redis_is_up();
redis_flushall();

my $http = <<"HTTP";
    ratelimit_redis main 127.0.0.1:$ENV{TEST_NGINX_REDIS_PORT} timeout=100ms;
    ratelimit_zone \$arg_k zone=rl:1m rate=1r/m redis=main on_failure=open;
    server {
        listen 127.0.0.1:\$PORT;
        location = /ok { return 200 "ok\\n"; }
        location = /rl {
            ratelimit zone=rl burst=1 nodelay;
            add_header X-Status \$ratelimit_status always;
            proxy_pass http://127.0.0.1:\$PORT/ok;
        }
    }
HTTP

my $nginx = Test::Edge::Nginx->start(http => $http, workers => 2);


# Redis answers once a worker has connected: poll until a decision is made
ok(wait_until(10, sub { $nginx->decision('/rl?k=warm') eq '200 PASSED' }),
   'decisions come from Redis once connected');

is($nginx->decision('/rl?k=a'), '200 PASSED', 'first request passes');
is($nginx->decision('/rl?k=a'), '200 PASSED', 'burst request passes');
is($nginx->decision('/rl?k=a'), '429 REJECTED', 'third request is refused');

# --- Redis stopped: fail open, and say so once per interval
redis_stop();
is($nginx->decision('/rl?k=b'), '200 FAILED_OPEN', 'Redis down: fails open');
is($nginx->decision('/rl?k=b'), '200 FAILED_OPEN', 'still open while down');

# --- Redis back: the same workers reconnect by themselves (backoff)
redis_start();
ok(wait_until(10, sub { $nginx->decision('/rl?k=c') eq '200 PASSED' }),
   'Redis back: decisions come from Redis again without a reload');
$nginx->decision('/rl?k=c') for 1 .. 2;
is($nginx->decision('/rl?k=c'), '429 REJECTED', 'and it limits again');
like($nginx->log, qr/redis "main" at 127\.0\.0\.1:\d+: connected again/,
     'the recovery is logged');

# --- scripts flushed: NOSCRIPT is answered by loading them again
redis_command('SCRIPT', 'FLUSH');
is($nginx->decision('/rl?k=d'), '200 PASSED', 'after SCRIPT FLUSH the limiter still decides');
is($nginx->decision('/rl?k=d'), '200 PASSED', 'burst request passes');
is($nginx->decision('/rl?k=d'), '429 REJECTED', 'and refuses, from Redis');
unlike($nginx->log, qr/NOSCRIPT/, 'NOSCRIPT never reaches the requests');

# --- Redis frozen past the timeout: the request does not wait for it (it
# is answered while Redis still answers nothing)
redis_freeze();
is($nginx->decision('/rl?k=e'), '200 FAILED_OPEN',
   'frozen Redis: the request fails open after its timeout');
redis_thaw();
# (a command that timed out is still run by Redis when the pause ends, so
# every poll uses a key of its own)
my $n = 0;
ok(wait_until(10, sub { $n++; $nginx->decision("/rl?k=f$n") eq '200 PASSED' }),
   'after the pause Redis decides again');

$nginx->stop;
my $log = $nginx->final_log;
unlike($log, qr/\[(alert|crit|emerg)\]/, 'no alert, crit or emerg in error.log')
    or diag($log);
unlike($log, qr/open socket .* left/, 'no socket left open at exit');

done_testing();
