# algorithm=sliding_window: what nginx -t refuses, naming the directive or
# parameter and quoting the bad value, and what it accepts.
use Test::Nginx::Socket 'no_plan';

no_shuffle();
run_tests();

__DATA__

=== TEST 1: an unknown algorithm is refused
--- http_config
    ratelimit_zone $arg_k zone=z:1m rate=10r/m algorithm=fixed_window;
--- config
    location = /rl { ratelimit zone=z; root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid parameter "algorithm=fixed_window"/



=== TEST 2: window= without algorithm=sliding_window is refused
--- http_config
    ratelimit_zone $arg_k zone=z:1m rate=10r/m window=1m;
--- config
    location = /rl { ratelimit zone=z; root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"window=" needs "algorithm=sliding_window"/



=== TEST 3: a window that is not a time is refused
--- http_config
    ratelimit_zone $arg_k zone=z:1m rate=10r/m algorithm=sliding_window
                   window=soon;
--- config
    location = /rl { ratelimit zone=z; root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid window "window=soon"/



=== TEST 4: a rate that is no whole number of requests per window is refused
--- http_config
    ratelimit_zone $arg_k zone=z:1m rate=100r/m algorithm=sliding_window
                   window=10s;
--- config
    location = /rl { ratelimit zone=z; root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*rate=100r\/m over window=10000ms of ratelimit zone "z" is not a whole number of requests/



=== TEST 5: a tier's rate is checked against the zone's window too
--- http_config
    ratelimit_zone $arg_k zone=z:1m rate=60r/m tier=$arg_t
                   algorithm=sliding_window window=1s;
    ratelimit_tier zone=z tier=gold rate=90r/m;
--- config
    location = /rl { ratelimit zone=z; root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*rate=90r\/m over window=1000ms of ratelimit zone "z" is not a whole number/



=== TEST 6: burst= does not apply to a sliding window
--- http_config
    ratelimit_zone $arg_k zone=z:1m rate=10r/m algorithm=sliding_window;
--- config
    location = /rl { ratelimit zone=z burst=5 nodelay; root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"ratelimit" zone=z: "burst=" does not apply to a zone with algorithm=sliding_window in .*nginx\.conf:\d+/



=== TEST 7: nor delay=
--- http_config
    ratelimit_zone $arg_k zone=z:1m rate=10r/m algorithm=sliding_window;
--- config
    location = /rl { ratelimit zone=z delay=2; root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"ratelimit" zone=z: "delay=" does not apply/



=== TEST 8: nor a tier's burst=
--- http_config
    ratelimit_zone $arg_k zone=z:1m rate=10r/m tier=$arg_t
                   algorithm=sliding_window;
    ratelimit_tier zone=z tier=gold rate=20r/m burst=3;
--- config
    location = /rl { ratelimit zone=z; root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"burst=" does not apply to ratelimit zone "z" with algorithm=sliding_window/



=== TEST 9: a cost larger than a window holds is refused
--- http_config
    ratelimit_zone $arg_k zone=z:1m rate=10r/m algorithm=sliding_window;
--- config
    location = /rl { ratelimit zone=z cost=11; root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"ratelimit" zone=z cost=11 is more than a window of the zone or of one of its tiers holds/



=== TEST 10: past the bound of the arithmetic
--- http_config
    ratelimit_zone $arg_k zone=z:1m rate=1000000r/s algorithm=sliding_window
                   window=1000h;
--- config
    location = /rl { ratelimit zone=z; root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*rate=1000000r\/s over window=3600000000ms of ratelimit zone "z" is too large: requests per window \* window must not exceed 2\^58 us/



=== TEST 11: clock=redis cannot name a sliding window
--- http_config
    ratelimit_redis r 127.0.0.1:6379;
    ratelimit_zone $arg_k zone=z:1m rate=10r/m algorithm=sliding_window
                   redis=r clock=redis;
--- config
    location = /rl { ratelimit zone=z; root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"clock=redis" does not apply to algorithm=sliding_window/



=== TEST 12: the guide's /api/data: 100 per minute, a sliding window
--- http_config
    ratelimit_zone $binary_remote_addr zone=api_data:10m rate=100r/m
                   algorithm=sliding_window window=60s;
    ratelimit_zone $binary_remote_addr zone=login:1m rate=20r/h
                   algorithm=sliding_window window=15m;
--- config
    location = /ok { return 200 "ok\n"; }
    location = /api/data {
        ratelimit zone=api_data;
        ratelimit zone=login cost=5;
        add_header X-Status $ratelimit_status always;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
--- request
GET /api/data
--- response_headers
X-Status: PASSED
RateLimit-Policy: "api_data";q=100;w=60, "login";q=5;w=900
--- no_error_log
[error]
[alert]
[crit]
