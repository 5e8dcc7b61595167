# Redis mode's deny and ban cache is each worker's own: read without any
# lock, it answers a refused key without asking Redis until the key could
# pass.  Each worker learns a refusal once; the cache is bounded (a zone's
# size / 256 entries per worker, least recently used out first).
use strict;
use warnings;

use Test::More;
use IO::Socket::INET;
use Test::Edge qw(:all);
use Test::Edge::Nginx;

redis_start() unless redis_is_up();
redis_flushall();

my $redis = "127.0.0.1:$ENV{TEST_NGINX_REDIS_PORT}";
sub http {
    return <<"HTTP";
    ratelimit_redis r $redis timeout=2s;
    ratelimit_zone \$arg_k zone=z:32k rate=1r/h redis=r on_failure=closed;
    server {
        listen 127.0.0.1:\$PORT;
        location = /ok { return 200 "ok\\n"; }
        location = /rl {
            ratelimit zone=z nodelay;
            add_header X-Status \$ratelimit_status always;
            proxy_pass http://127.0.0.1:\$PORT/ok;
        }
    }
HTTP
}

# --- two workers: 30 requests on one refused key, each on its own
# connection (either worker): all refused, Redis asked at most once per
# worker after the first refusal
my $nginx = Test::Edge::Nginx->start(http => http(), workers => 2);
ok(wait_until(10, sub { $nginx->decision('/rl?k=warm') eq '200 PASSED' }),
   'connected to Redis');
redis_command('CONFIG', 'RESETSTAT');
is($nginx->decision('/rl?k=x'), '200 PASSED', 'the first request passes');
my @st = map { $nginx->decision('/rl?k=x') } 1 .. 30;
is(scalar(grep { $_ eq '429 REJECTED' } @st), 30, '30 more: all refused');
my $calls = redis_calls('evalsha');
cmp_ok($calls, '<=', 3,
       "Redis asked $calls times: the pass, then once per worker at most");
$nginx->stop;
unlike($nginx->final_log, qr/\[(alert|crit|emerg)\]/, 'no alert');

# --- the bound: a 32k zone caches 128 keys per worker
redis_flushall();
$nginx = Test::Edge::Nginx->start(http => http(), workers => 1);
ok(wait_until(10, sub { $nginx->decision('/rl?k=warm') eq '200 PASSED' }),
   'connected to Redis');
for my $i (1 .. 130) {
    $nginx->decision("/rl?k=k$i") eq '200 PASSED' or die "k$i did not pass\n";
    $nginx->decision("/rl?k=k$i") eq '429 REJECTED' or die "k$i passed\n";
}
redis_command('CONFIG', 'RESETSTAT');
is($nginx->decision('/rl?k=k130'), '429 REJECTED', 'the newest: refused');
is($nginx->decision('/rl?k=k3'), '429 REJECTED', 'the oldest kept: refused');
is(redis_calls('evalsha'), 0, 'both from the cache');
is($nginx->decision('/rl?k=k1'), '429 REJECTED',
   'the least recently used, evicted: refused');
is(redis_calls('evalsha'), 1, 'by Redis');
$nginx->stop;
unlike($nginx->final_log, qr/\[(alert|crit|emerg)\]/, 'no alert');

done_testing();
