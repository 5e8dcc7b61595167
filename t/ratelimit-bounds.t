# Bounds on burst=, delay= and cost: every product and sum of the GCRA
# arithmetic, in C (int64_t) and in the Redis script (Lua doubles), stays
# below NGX_EDGE_EXACT_MAX = 2^50 microseconds, so it is exact and never
# overflows.  At rate=1r/h (interval 3.6 * 10^9 us) the largest values
# are: burst=312748 ((burst + 1) * interval <= 2^50), cost=312749 and
# delay=312749 (n * interval <= 2^50).
use Test::Nginx::Socket 'no_plan';
use Test::Edge qw(:all);

no_shuffle();

add_block_preprocessor(sub {
    my $block = shift;
    if (($block->http_config // '') =~ /ratelimit_redis/) {
        redis_start() unless redis_is_up();
        redis_flushall();
    }
});

run_tests();

__DATA__

=== TEST 1: the issue's burst=10000000000 at 1r/h is refused by nginx -t
--- http_config
    ratelimit_zone $arg_k zone=z:1m rate=1r/h;
--- config
    location = /rl {
        ratelimit zone=z burst=10000000000 nodelay;
        root html;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*"ratelimit" zone=z burst=10000000000 is too large for rate=1r\/h: \(burst \+ 1\) \* interval must not exceed 2\^50 us, burst=312748 at most/



=== TEST 2: one past the largest burst is refused
--- http_config
    ratelimit_zone $arg_k zone=z:1m rate=1r/h;
--- config
    location = /rl {
        ratelimit zone=z burst=312749 nodelay;
        root html;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*"ratelimit" zone=z burst=312749 is too large for rate=1r\/h: .*burst=312748 at most in .*nginx\.conf:\d+/



=== TEST 3: one past the largest cost is refused
--- http_config
    ratelimit_zone $arg_k zone=z:1m rate=1r/h;
--- config
    location = /rl {
        ratelimit zone=z cost=312750 nodelay;
        root html;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*"ratelimit" zone=z cost=312750 is too large for rate=1r\/h: cost \* interval must not exceed 2\^50 us, cost=312749 at most/



=== TEST 4: one past the largest delay is refused
--- http_config
    ratelimit_zone $arg_k zone=z:1m rate=1r/h;
--- config
    location = /rl {
        ratelimit zone=z burst=10 delay=312750;
        root html;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*"ratelimit" zone=z delay=312750 is too large for rate=1r\/h: delay \* interval must not exceed 2\^50 us, delay=312749 at most/



=== TEST 5: a tier's own burst is bounded by its rate
--- http_config
    ratelimit_zone $arg_k zone=z:1m rate=10r/s tier=$arg_t;
    ratelimit_tier zone=z tier=slow rate=1r/h burst=312749;
--- config
    location = /rl { ratelimit zone=z; root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"ratelimit_tier" burst=312749 is too large for rate=1r\/h: \(burst \+ 1\) \* interval must not exceed 2\^50 us, burst=312748 at most/



=== TEST 6: a location's burst is bounded by every tier's rate it applies to
--- http_config
    ratelimit_zone $arg_k zone=z:1m rate=10r/s tier=$arg_t;
    ratelimit_tier zone=z tier=slow rate=1r/h;
--- config
    location = /rl { ratelimit zone=z burst=400000 nodelay; root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"ratelimit" zone=z burst=400000 is too large for tier "slow" \(rate=1r\/h\): .*burst=312748 at most/



=== TEST 7: shared memory: the largest burst and cost work, exact headers
A request of the largest cost on a fresh bucket of the largest burst
passes and empties it; with one less burst it is refused, and could pass
in exactly one interval.  Each number comes from one request.
--- http_config
    ratelimit_zone $arg_k zone=z:1m rate=1r/h;
    ratelimit_zone $arg_k zone=y:1m rate=1r/h;
--- config
    location = /ok { return 200 "ok\n"; }
    location = /max {
        ratelimit zone=z burst=312748 cost=312749 nodelay;
        add_header X-Status $ratelimit_status always;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
    location = /over {
        ratelimit zone=y burst=312747 cost=312749 nodelay;
        add_header X-Status $ratelimit_status always;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
--- request eval
["GET /max?k=a", "GET /over?k=a"]
--- error_code eval
[200, 429]
--- response_headers eval
["X-Status: PASSED\nRateLimit-Policy: \"z\";q=312749;w=1125896400\nRateLimit: \"z\";r=0;t=1125896400",
 "X-Status: REJECTED\nRetry-After: 3600\nRateLimit-Policy: \"y\";q=312748;w=1125892800\nRateLimit: \"y\";r=0;t=0"]
--- no_error_log
[alert]
[crit]



=== TEST 8: Redis: the largest burst and cost work, exact headers
--- http_config
    ratelimit_redis r 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    ratelimit_zone $arg_k zone=z:1m rate=1r/h redis=r on_failure=closed;
    ratelimit_zone $arg_k zone=y:1m rate=1r/h redis=r on_failure=closed;
--- config
    location = /ok { return 200 "ok\n"; }
    location = /max {
        ratelimit zone=z burst=312748 cost=312749 nodelay;
        add_header X-Status $ratelimit_status always;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
    location = /over {
        ratelimit zone=y burst=312747 cost=312749 nodelay;
        add_header X-Status $ratelimit_status always;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
--- request eval
["GET /max?k=a", "GET /over?k=a"]
--- error_code eval
[200, 429]
--- response_headers eval
["X-Status: PASSED\nRateLimit-Policy: \"z\";q=312749;w=1125896400\nRateLimit: \"z\";r=0;t=1125896400",
 "X-Status: REJECTED\nRetry-After: 3600\nRateLimit-Policy: \"y\";q=312748;w=1125892800\nRateLimit: \"y\";r=0;t=0"]
--- no_error_log
[alert]
[crit]



=== TEST 9: a cost from a variable past the bound is refused, with a log line
--- http_config
    ratelimit_zone $arg_k zone=z:1m rate=1r/h;
--- config
    location = /ok { return 200 "ok\n"; }
    location = /rl {
        ratelimit zone=z burst=312748 cost=$arg_c nodelay;
        add_header X-Status $ratelimit_status always;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
--- request
GET /rl?k=v&c=2000000
--- error_code: 429
--- response_headers
X-Status: REJECTED
!Retry-After
--- error_log eval
qr/\[warn\] .*ratelimit: cost "2000000" exceeds the largest cost of zone "z" \(312749 at rate=1r\/h\), the request is refused, client/
--- no_error_log
[alert]
[crit]



=== TEST 10: the largest cost from a variable is decided
--- http_config
    ratelimit_zone $arg_k zone=z:1m rate=1r/h;
--- config
    location = /ok { return 200 "ok\n"; }
    location = /rl {
        ratelimit zone=z burst=312748 cost=$arg_c nodelay;
        add_header X-Status $ratelimit_status always;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
--- request
GET /rl?k=v&c=312749
--- error_code: 200
--- response_headers
X-Status: PASSED
RateLimit: "z";r=0;t=1125896400
--- no_error_log
[warn]
[alert]
[crit]
