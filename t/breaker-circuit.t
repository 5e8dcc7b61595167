# ngx_http_breaker_module, route circuits: the state machine through real
# requests (nginx locations as the upstream), every transition and
# threshold.
use Test::Nginx::Socket 'no_plan';

no_shuffle();
run_tests();

__DATA__

=== TEST 1: min_calls: failures below min_calls do not trip, the min_calls-th does; then 503 with Retry-After
--- http_config
    breaker_zone br 1m;
    breaker_circuit up zone=br min_calls=4 failure_rate=50 open=30s jitter=0;
--- config
    location = /fail { return 500; }
    location = /t {
        breaker up;
        proxy_pass http://127.0.0.1:$server_port/fail;
    }
--- request eval
["GET /t", "GET /t", "GET /t", "GET /t", "GET /t"]
--- error_code eval
[500, 500, 500, 500, 503]
--- response_headers_like eval
["", "", "", "", "Retry-After: (30|29)"]
--- no_error_log
[error]
[alert]
[crit]
