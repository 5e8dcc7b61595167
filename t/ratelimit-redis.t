# ngx_http_ratelimit_module with its state in Redis (the fixtures' real
# redis-server): limit_req's semantics, shared across workers and nodes,
# bans, the deny cache, and each failure policy.
use Test::Nginx::Socket 'no_plan';
use Test::Edge qw(:all);

workers(2);
master_on();
no_shuffle();

# Every block starts from an empty, running Redis; a block may then ask
# for it to be stopped ("--- redis: down") or frozen ("--- redis: paused":
# the process is stopped, so it answers nothing until the next block's
# preprocessor, or the end of the file, continues it).
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

=== TEST 1: burst=2 nodelay: burst + 1 pass, as limit_req
--- http_config
    ratelimit_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    ratelimit_zone $arg_k zone=rl:1m rate=1r/m redis=main;
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
--- response_headers eval
["X-Status: PASSED", "X-Status: PASSED", "X-Status: PASSED",
 "X-Status: REJECTED"]
--- no_error_log
[alert]
[crit]



=== TEST 1b: Retry-After says when the request could pass
A request of cost 5 with burst=2 is refused at once: it could pass after
2 intervals (within one request, so no time passes between the numbers).
--- http_config
    ratelimit_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    ratelimit_zone $arg_k zone=rl:1m rate=1r/m redis=main;
--- config
    location = /ok { return 200 "ok\n"; }
    location = /rl {
        ratelimit zone=rl burst=2 cost=5 nodelay;
        add_header X-Status $ratelimit_status always;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
--- request
GET /rl?k=a1
--- error_code: 429
--- response_headers
X-Status: REJECTED
Retry-After: 120



=== TEST 2: Redis and shared memory decide alike on the same sequence
--- http_config
    ratelimit_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    ratelimit_zone $arg_k zone=r:1m rate=2r/m redis=main;
    ratelimit_zone $arg_k zone=l:1m rate=2r/m;
--- config
    location = /ok { return 200 "ok\n"; }
    location = /r {
        ratelimit zone=r burst=3 cost=$arg_c nodelay;
        add_header X-RL "$ratelimit_status $ratelimit_remaining" always;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
    location = /l {
        ratelimit zone=l burst=3 cost=$arg_c nodelay;
        add_header X-RL "$ratelimit_status $ratelimit_remaining" always;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
--- request eval
["GET /r?k=b&c=1", "GET /r?k=b&c=2", "GET /r?k=b&c=2", "GET /r?k=b&c=1",
 "GET /l?k=b&c=1", "GET /l?k=b&c=2", "GET /l?k=b&c=2", "GET /l?k=b&c=1"]
--- error_code eval
[200, 200, 429, 200, 200, 200, 429, 200]
--- response_headers eval
["X-RL: PASSED 3", "X-RL: PASSED 1", "X-RL: REJECTED 0", "X-RL: PASSED 0",
 "X-RL: PASSED 3", "X-RL: PASSED 1", "X-RL: REJECTED 0", "X-RL: PASSED 0"]



=== TEST 3: without nodelay the excess is delayed, as limit_req
# (only the second request is delayed, and error.log is checked after each
# request against the lines since the previous check: the delay's log line
# is asserted in t/ratelimit-logs.t)
--- http_config
    ratelimit_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    ratelimit_zone $arg_k zone=rl:1m rate=30r/m redis=main;
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
["X-Status: PASSED", "X-Status: DELAYED"]



=== TEST 4: two nodes (two servers, two zones, one key prefix) share one limit
--- http_config
    ratelimit_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    ratelimit_zone $arg_k zone=node_a:1m rate=1r/m redis=main prefix=api;
    ratelimit_zone $arg_k zone=node_b:1m rate=1r/m redis=main prefix=api;
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        location = /rl {
            ratelimit zone=node_b burst=2 nodelay;
            proxy_pass http://127.0.0.1:$server_port/ok;
        }
        location = /ok { return 200 "ok\n"; }
    }
--- config
    location = /ok { return 200 "ok\n"; }
    location = /a {
        ratelimit zone=node_a burst=2 nodelay;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
    location = /b {
        proxy_pass http://127.0.0.1:$TEST_NGINX_RAND_PORT_1/rl;
    }
--- request eval
["GET /a?k=d", "GET /b?k=d", "GET /a?k=d", "GET /b?k=d", "GET /a?k=d"]
--- error_code eval
[200, 200, 200, 429, 429]



=== TEST 5: bans are stored in Redis and enforced by every node
--- http_config
    ratelimit_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    ratelimit_zone $arg_k zone=node_a:1m rate=1r/m redis=main prefix=api;
    ratelimit_zone $arg_k zone=node_b:1m rate=1000r/s redis=main prefix=api;
    ratelimit_ban zone=node_a threshold=2 window=1m duration=1h;
    ratelimit_ban zone=node_b threshold=1000 window=1m duration=1h;
--- config
    location = /ok { return 200 "ok\n"; }
    location = /a {
        ratelimit zone=node_a;
        add_header X-Status $ratelimit_status always;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
    location = /b {
        ratelimit zone=node_b;
        add_header X-Status $ratelimit_status always;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
--- request eval
["GET /a?k=e", "GET /a?k=e", "GET /a?k=e", "GET /b?k=e", "GET /b?k=f"]
--- error_code eval
[200, 429, 429, 429, 200]
--- response_headers eval
["X-Status: PASSED", "X-Status: REJECTED", "X-Status: BANNED",
 "X-Status: BANNED", "X-Status: PASSED"]



=== TEST 6: clock=nginx works where scripts may not call TIME
--- http_config
    ratelimit_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    ratelimit_zone $arg_k zone=rl:1m rate=1r/m redis=main clock=nginx;
--- config
    location = /ok { return 200 "ok\n"; }
    location = /rl {
        ratelimit zone=rl burst=1 nodelay;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
--- request eval
["GET /rl?k=g", "GET /rl?k=g", "GET /rl?k=g"]
--- error_code eval
[200, 200, 429]



=== TEST 7: Redis down: on_failure=open passes and says so
--- redis: down
--- http_config
    ratelimit_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    ratelimit_zone $arg_k zone=rl:1m rate=1r/m redis=main on_failure=open;
--- config
    location = /ok { return 200 "ok\n"; }
    location = /rl {
        ratelimit zone=rl;
        add_header X-Status $ratelimit_status always;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
--- request eval
["GET /rl?k=h", "GET /rl?k=h", "GET /rl?k=h"]
--- error_code eval
[200, 200, 200]
--- response_headers eval
["X-Status: FAILED_OPEN", "X-Status: FAILED_OPEN", "X-Status: FAILED_OPEN"]



=== TEST 7b: Redis down: the failed connection is logged
# (when the workers start, then rate-limited: a single request, so that the
# line is in its error.log window)
--- redis: down
--- http_config
    ratelimit_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    ratelimit_zone $arg_k zone=rl:1m rate=1r/m redis=main on_failure=open;
--- config
    location = /ok { return 200 "ok\n"; }
    location = /rl {
        ratelimit zone=rl;
        add_header X-Status $ratelimit_status always;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
--- request
GET /rl?k=h
--- error_code: 200
--- response_headers
X-Status: FAILED_OPEN
--- wait: 0.2
--- error_log eval
qr/\[error\] .*redis "main" at 127\.0\.0\.1:\d+: connect failed: Connection refused/



=== TEST 8: Redis down: on_failure=closed refuses with ratelimit_failure_status
--- redis: down
--- http_config
    ratelimit_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    ratelimit_zone $arg_k zone=rl:1m rate=1r/m redis=main on_failure=closed;
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



=== TEST 9: Redis down: on_failure=local falls back to the shared-memory limiter
--- redis: down
--- http_config
    ratelimit_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    ratelimit_zone $arg_k zone=rl:1m rate=1r/m redis=main on_failure=local;
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



=== TEST 10: Redis slower than the timeout: the request does not wait for it
--- redis: paused
--- timeout: 1.5
--- http_config
    ratelimit_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=100ms;
    ratelimit_zone $arg_k zone=rl:1m rate=1r/m redis=main on_failure=open;
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



=== TEST 11: a bad redis address is refused at startup
--- http_config
    ratelimit_redis main 127.0.0.1:99999;
--- config
    location = /t { return 200; }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid port in redis server "127\.0\.0\.1:99999" in \S+nginx\.conf:\d+/



=== TEST 12: an unknown redis server is refused at startup
--- http_config
    ratelimit_zone $arg_k zone=rl:1m rate=1r/m redis=nosuch;
--- config
    location = /t { return 200; }
--- must_die
--- error_log eval
qr/\[emerg\] .*unknown redis server "nosuch": declare it with "ratelimit_redis" first in \S+nginx\.conf:\d+/
