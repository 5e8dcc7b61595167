# mode=lease against the fixtures' real redis-server: the decisions, cost,
# headers, dry run, bans, tiers and each failure policy, as in Redis mode,
# with the differences leases make (a refusal waits for half a lease).
use Test::Nginx::Socket 'no_plan';
use Test::Edge qw(:all);

workers(2);
master_on();
no_shuffle();

# Every block starts from an empty, running Redis ("--- redis: down"
# stops it, "--- redis: paused" freezes it, as in t/ratelimit-redis.t).
add_block_preprocessor(sub {
    my $block = shift;
    redis_thaw() if redis_is_frozen();
    redis_start() unless redis_is_up();
    redis_flushall();
    my $state = $block->redis // '';
    if ($state =~ /down/) {
        redis_stop();
    } elsif ($state =~ /paused/) {
        redis_freeze();
    }
});

run_tests();
redis_thaw() if redis_is_frozen();

__DATA__

=== TEST 1: burst=2: burst + 1 pass across the workers, then a refusal with its Retry-After
A cold key leases one token, then two (the key spent one): the third
request spends the last one held, the fourth is refused here until Redis
has a token again (Retry-After: 60 s at most, as time passes between the
requests), without asking Redis.
--- http_config
    ratelimit_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    ratelimit_zone $arg_k zone=rl:1m rate=1r/m redis=main mode=lease;
--- config
    location = /ok { return 200 "ok\n"; }
    location = /rl {
        ratelimit zone=rl burst=2 nodelay;
        add_header X-Status $ratelimit_status always;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
--- request eval
["GET /rl?k=a", "GET /rl?k=a", "GET /rl?k=a", "GET /rl?k=a"]
--- error_code eval
[200, 200, 200, 429]
--- response_headers_like eval
["X-Status: PASSED", "X-Status: PASSED", "X-Status: PASSED",
 "X-Status: REJECTED\nRetry-After: ([1-9]|[1-5][0-9]|60)\$"]
--- no_error_log
[alert]
[crit]



=== TEST 2: cost spends tokens; remaining is Redis's bucket plus what the node holds
The second request (cost 2) leases exactly 2; the third (cost 2) finds one
token in Redis, fewer than its cost: refused, and a cost-1 request after
it is refused too, until Redis has half a lease (2 tokens).
--- http_config
    ratelimit_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    ratelimit_zone $arg_k zone=rl:1m rate=2r/m redis=main mode=lease;
--- config
    location = /ok { return 200 "ok\n"; }
    location = /rl {
        ratelimit zone=rl burst=3 cost=$arg_c nodelay;
        add_header X-RL "$ratelimit_status $ratelimit_remaining" always;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
--- request eval
["GET /rl?k=b&c=1", "GET /rl?k=b&c=2", "GET /rl?k=b&c=2", "GET /rl?k=b&c=1"]
--- error_code eval
[200, 200, 429, 429]
--- response_headers eval
["X-RL: PASSED 3", "X-RL: PASSED 1", "X-RL: REJECTED 0", "X-RL: REJECTED 0"]
--- no_error_log
[alert]
[crit]



=== TEST 3: the RateLimit headers, as in Redis mode
--- http_config
    ratelimit_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    ratelimit_zone $arg_k zone=rl:1m rate=1r/m redis=main mode=lease;
--- config
    location = /ok { return 200 "ok\n"; }
    location = /rl {
        ratelimit zone=rl burst=2 nodelay;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
--- request eval
["GET /rl?k=h", "GET /rl?k=h"]
--- response_headers eval
["RateLimit-Policy: \"rl\";q=3;w=180\nRateLimit: \"rl\";r=2;t=60",
 "RateLimit-Policy: \"rl\";q=3;w=180\nRateLimit: \"rl\";r=1;t=180"]



=== TEST 4: dry run: a refusal passes, and says so
--- http_config
    ratelimit_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    ratelimit_zone $arg_k zone=rl:1m rate=1r/m redis=main mode=lease;
--- config
    location = /ok { return 200 "ok\n"; }
    location = /rl {
        ratelimit zone=rl;
        ratelimit_dry_run on;
        add_header X-Status $ratelimit_status always;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
--- request eval
["GET /rl?k=c", "GET /rl?k=c"]
--- error_code eval
[200, 200]
--- response_headers eval
["X-Status: PASSED", "X-Status: DRY_RUN"]



=== TEST 5: bans: refusals are counted on the node, which bans the key
--- http_config
    ratelimit_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    ratelimit_zone $arg_k zone=rl:1m rate=1r/m redis=main mode=lease;
    ratelimit_ban zone=rl threshold=2 window=1m duration=1h;
--- config
    location = /ok { return 200 "ok\n"; }
    location = /rl {
        ratelimit zone=rl;
        add_header X-Status $ratelimit_status always;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
--- request eval
["GET /rl?k=e", "GET /rl?k=e", "GET /rl?k=e", "GET /rl?k=e",
 "GET /rl?k=f"]
--- error_code eval
[200, 429, 429, 429, 200]
--- response_headers_like eval
["X-Status: PASSED", "X-Status: REJECTED", "X-Status: BANNED",
 "X-Status: BANNED\nRetry-After: (3[0-5][0-9][0-9]|3600)\$",
 "X-Status: PASSED"]



=== TEST 6: tiers: each tier's burst, one bucket per key in Redis
--- http_config
    ratelimit_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    ratelimit_zone $arg_k zone=rl:1m rate=1r/m redis=main mode=lease
                   tier=$arg_t;
    ratelimit_tier zone=rl tier=gold rate=1r/m burst=2;
--- config
    location = /ok { return 200 "ok\n"; }
    location = /rl {
        ratelimit zone=rl;
        add_header X-Status $ratelimit_status always;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
--- request eval
["GET /rl?k=g1&t=gold", "GET /rl?k=g1&t=gold", "GET /rl?k=g1&t=gold",
 "GET /rl?k=g1&t=gold", "GET /rl?k=g2", "GET /rl?k=g2"]
--- error_code eval
[200, 200, 200, 429, 200, 429]



=== TEST 7: Redis down: on_failure=open passes and says so
--- redis: down
--- http_config
    ratelimit_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    ratelimit_zone $arg_k zone=rl:1m rate=1r/m redis=main mode=lease
                   on_failure=open;
--- config
    location = /ok { return 200 "ok\n"; }
    location = /rl {
        ratelimit zone=rl;
        add_header X-Status $ratelimit_status always;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
--- request eval
["GET /rl?k=h", "GET /rl?k=h"]
--- error_code eval
[200, 200]
--- response_headers eval
["X-Status: FAILED_OPEN", "X-Status: FAILED_OPEN"]



=== TEST 8: Redis down: on_failure=closed refuses with ratelimit_failure_status
--- redis: down
--- http_config
    ratelimit_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    ratelimit_zone $arg_k zone=rl:1m rate=1r/m redis=main mode=lease
                   on_failure=closed;
--- config
    location = /ok { return 200 "ok\n"; }
    location = /rl {
        ratelimit zone=rl;
        ratelimit_failure_status 503;
        add_header X-Status $ratelimit_status always;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
--- request eval
["GET /rl?k=i", "GET /rl?k=j"]
--- error_code eval
[503, 503]
--- response_headers eval
["X-Status: FAILED_CLOSED", "X-Status: FAILED_CLOSED"]



=== TEST 9: Redis down: on_failure=local limits per node in shared memory
--- redis: down
--- http_config
    ratelimit_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    ratelimit_zone $arg_k zone=rl:1m rate=1r/m redis=main mode=lease
                   on_failure=local;
--- config
    location = /ok { return 200 "ok\n"; }
    location = /rl {
        ratelimit zone=rl burst=1 nodelay;
        add_header X-Status $ratelimit_status always;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
--- request eval
["GET /rl?k=k", "GET /rl?k=k", "GET /rl?k=k"]
--- error_code eval
[200, 200, 429]
--- response_headers eval
["X-Status: FAILED_LOCAL", "X-Status: FAILED_LOCAL", "X-Status: REJECTED"]



=== TEST 10: Redis slower than the timeout: the waiting request gets the policy
--- redis: paused
--- timeout: 1.5
--- http_config
    ratelimit_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=100ms;
    ratelimit_zone $arg_k zone=rl:1m rate=1r/m redis=main mode=lease
                   on_failure=open;
--- config
    location = /ok { return 200 "ok\n"; }
    location = /rl {
        ratelimit zone=rl;
        add_header X-Status $ratelimit_status always;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
--- request
GET /rl?k=l
--- error_code: 200
--- response_headers
X-Status: FAILED_OPEN
--- error_log eval
qr/redis "main" at 127\.0\.0\.1:\d+: command timed out after 100 ms/



=== TEST 11: clock=nginx: the node's clock in the lease script
--- http_config
    ratelimit_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    ratelimit_zone $arg_k zone=rl:1m rate=1r/m redis=main mode=lease
                   clock=nginx;
--- config
    location = /ok { return 200 "ok\n"; }
    location = /rl {
        ratelimit zone=rl burst=1 nodelay;
        add_header X-Status $ratelimit_status always;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
--- request eval
["GET /rl?k=g", "GET /rl?k=g", "GET /rl?k=g"]
--- error_code eval
[200, 200, 429]
--- no_error_log
[alert]
[crit]



=== TEST 12: without nodelay nothing is delayed: a lease's tokens conform now
--- http_config
    ratelimit_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    ratelimit_zone $arg_k zone=rl:1m rate=30r/m redis=main mode=lease;
--- config
    location = /ok { return 200 "ok\n"; }
    location = /rl {
        ratelimit zone=rl burst=3;
        add_header X-Status $ratelimit_status always;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
--- request eval
["GET /rl?k=c", "GET /rl?k=c"]
--- response_headers eval
["X-Status: PASSED", "X-Status: PASSED"]



=== TEST 13: a cost above the bucket never passes, as in Redis mode
burst=2 holds 3 tokens; once the key's lease has grown, a cost of 10 must
not reserve 10 tokens and pass when the last conforms (10 ms at this rate).
--- http_config
    ratelimit_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    ratelimit_zone $arg_k zone=rl:1m rate=1000r/s redis=main mode=lease;
--- config
    location = /ok { return 200 "ok\n"; }
    location = /rl {
        ratelimit zone=rl burst=2 cost=$arg_c nodelay;
        add_header X-Status $ratelimit_status always;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
--- request eval
[(map { "GET /rl?k=big&c=1" } 1 .. 3), (map { "GET /rl?k=big&c=10" } 1 .. 30)]
--- error_code eval
[200, 200, 200, (429) x 30]
--- no_error_log
[alert]
[crit]
