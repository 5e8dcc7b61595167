# The log line of a delayed request, "ratelimit: delaying request for Nms",
# in shared-memory and in Redis mode.  Only a second request is delayed,
# and Test::Nginx::Socket checks error.log after every request against the
# lines written since the previous check, so a block cannot assert a line
# that only its second request writes: t/ratelimit-shm.t and
# t/ratelimit-redis.t (TEST 3) check the DELAYED decisions, this file the
# lines they log.
use strict;
use warnings;

use Test::More;
use Test::Edge qw(:all);
use Test::Edge::Nginx;

redis_start() unless redis_is_up();
redis_flushall();

my $http = <<"HTTP";
    ratelimit_redis main 127.0.0.1:$ENV{TEST_NGINX_REDIS_PORT};
    ratelimit_zone \$arg_k zone=shm:1m rate=30r/m;
    ratelimit_zone \$arg_k zone=red:1m rate=30r/m redis=main;
    server {
        listen 127.0.0.1:\$PORT;
        location = /ok { return 200 "ok\\n"; }
        location = /shm {
            ratelimit zone=shm burst=3;
            add_header X-Status \$ratelimit_status always;
            proxy_pass http://127.0.0.1:\$PORT/ok;
        }
        location = /redis {
            ratelimit zone=red burst=3;
            add_header X-Status \$ratelimit_status always;
            proxy_pass http://127.0.0.1:\$PORT/ok;
        }
    }
HTTP

my $nginx = Test::Edge::Nginx->start(http => $http, workers => 2);


# the line of one request: nginx appends the request line to it
sub delay_line {
    my ($level, $uri) = @_;
    return qr/\[$level\] .*ratelimit: delaying request for \d+ms, .*request: "GET \Q$uri\E /;
}

# --- shared memory: as limit_req, a delay logs one level below a refusal
is($nginx->decision('/shm?k=a'), '200 PASSED', 'shm: the first request passes');
is($nginx->decision('/shm?k=a'), '200 DELAYED', 'shm: the second one is delayed');
ok(wait_until(5, sub { $nginx->log =~ delay_line('warn', '/shm?k=a') }),
   'shm: the delay is logged, at warn');

# --- Redis: decisions come from Redis once a worker has connected
ok(wait_until(10, sub { $nginx->decision('/redis?k=warm') eq '200 PASSED' }),
   'redis: decisions come from Redis once connected');
is($nginx->decision('/redis?k=c'), '200 PASSED', 'redis: the first request passes');
is($nginx->decision('/redis?k=c'), '200 DELAYED', 'redis: the second one is delayed');
ok(wait_until(5, sub { $nginx->log =~ delay_line('warn', '/redis?k=c') }),
   'redis: the delay is logged, at warn');

my $log = $nginx->log;
is(scalar(() = $log =~ /ratelimit: delaying request/g), 2,
   'only the two delayed requests logged a delay');

$nginx->stop;
unlike($nginx->final_log, qr/\[(?:error|alert|crit|emerg)\]/,
       'no error, alert, crit or emerg in error.log')
    or diag($nginx->final_log);

done_testing();
