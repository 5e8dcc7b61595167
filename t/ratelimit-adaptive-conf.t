# ratelimit_adaptive: what nginx -t refuses, naming the directive or
# parameter and quoting the bad value, and what it accepts.
use Test::Nginx::Socket 'no_plan';

no_shuffle();
run_tests();

__DATA__

=== TEST 1: an unknown zone is refused
--- http_config
    ratelimit_adaptive zone=nope min=1r/s max=10r/s;
--- config
    location = /rl { root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*unknown ratelimit zone "nope"/



=== TEST 2: min= and max= are required
--- http_config
    ratelimit_zone $arg_k zone=z:1m rate=10r/s;
    ratelimit_adaptive zone=z min=1r/s;
--- config
    location = /rl { ratelimit zone=z; root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"ratelimit_adaptive" needs "min=" and "max="/



=== TEST 3: the zone's rate must lie between min= and max=
--- http_config
    ratelimit_zone $arg_k zone=z:1m rate=10r/s;
    ratelimit_adaptive zone=z min=20r/s max=30r/s;
--- config
    location = /rl { ratelimit zone=z; root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"ratelimit_adaptive": the rate of zone "z" \(rate=10r\/s\) must lie between "min=" and "max="/



=== TEST 4: a rate that is not one is refused
--- http_config
    ratelimit_zone $arg_k zone=z:1m rate=10r/s;
    ratelimit_adaptive zone=z min=1r/d max=30r/s;
--- config
    location = /rl { ratelimit zone=z; root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid parameter "min=1r\/d"/



=== TEST 5: decrease= must keep a part of the rate, below 1
--- http_config
    ratelimit_zone $arg_k zone=z:1m rate=10r/s;
    ratelimit_adaptive zone=z min=1r/s max=30r/s decrease=1;
--- config
    location = /rl { ratelimit zone=z; root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid parameter "decrease=1"/



=== TEST 6: error_rate= is a percentage
--- http_config
    ratelimit_zone $arg_k zone=z:1m rate=10r/s;
    ratelimit_adaptive zone=z min=1r/s max=30r/s error_rate=0.1;
--- config
    location = /rl { ratelimit zone=z; root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid parameter "error_rate=0.1"/



=== TEST 7: error_rate= above 100% is refused
--- http_config
    ratelimit_zone $arg_k zone=z:1m rate=10r/s;
    ratelimit_adaptive zone=z min=1r/s max=30r/s error_rate=150%;
--- config
    location = /rl { ratelimit zone=z; root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid parameter "error_rate=150%"/



=== TEST 8: a percentile below 50 is refused
--- http_config
    ratelimit_zone $arg_k zone=z:1m rate=10r/s;
    ratelimit_adaptive zone=z min=1r/s max=30r/s latency=1s percentile=10;
--- config
    location = /rl { ratelimit zone=z; root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid parameter "percentile=10"/



=== TEST 9: a latency that is not a time is refused
--- http_config
    ratelimit_zone $arg_k zone=z:1m rate=10r/s;
    ratelimit_adaptive zone=z min=1r/s max=30r/s latency=fast;
--- config
    location = /rl { ratelimit zone=z; root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid parameter "latency=fast"/



=== TEST 10: max= more than 1000 times the rate is refused
--- http_config
    ratelimit_zone $arg_k zone=z:1m rate=1r/m;
    ratelimit_adaptive zone=z min=1r/m max=1001r/m;
--- config
    location = /rl { ratelimit zone=z; root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"ratelimit_adaptive": "max=" is more than 1000 times the rate of zone "z"/



=== TEST 11: twice for one zone is refused
--- http_config
    ratelimit_zone $arg_k zone=z:1m rate=10r/s;
    ratelimit_adaptive zone=z min=1r/s max=30r/s;
    ratelimit_adaptive zone=z min=1r/s max=30r/s;
--- config
    location = /rl { ratelimit zone=z; root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"ratelimit_adaptive" directive is duplicate/



=== TEST 12: an unknown parameter is refused
--- http_config
    ratelimit_zone $arg_k zone=z:1m rate=10r/s;
    ratelimit_adaptive zone=z min=1r/s max=30r/s speed=fast;
--- config
    location = /rl { ratelimit zone=z; root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid parameter "speed=fast"/



=== TEST 13: every parameter, other units, a tier: accepted
--- http_config
    ratelimit_zone $arg_k zone=z:1m rate=600r/m tier=$arg_t
                   algorithm=sliding_window;
    ratelimit_tier zone=z tier=gold rate=1200r/m;
    ratelimit_adaptive zone=z min=1r/s max=20r/s increase=60r/m
                       decrease=0.7 interval=2s error_rate=2.5%
                       latency=250ms percentile=99.9 min_samples=50
                       signal=$http_x_sig;
--- config
    location = /ok { return 200 "ok\n"; }
    location = /rl {
        ratelimit zone=z;
        add_header X-Rate $ratelimit_rate;
        proxy_pass http://127.0.0.1:$TEST_NGINX_SERVER_PORT/ok;
    }
--- request
GET /rl?k=a&t=gold
--- error_code: 200
--- response_headers
X-Rate: z=1200r/m
--- no_error_log
[error]
[alert]
[emerg]
