# Each module loads into nginx, accepts a good configuration, and refuses a
# bad one at startup with a message naming the directive and file:line.
use Test::Nginx::Socket 'no_plan';

no_shuffle();
run_tests();

__DATA__

=== TEST 1: all four modules load and serve with their directives
--- http_config
    metrics_zone 1m;
    ratelimit_status 503;
    edge_cache_redis c 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    edge_cache_zone pages redis=c;
    edge_cache_max_size 2m;
    breaker_zone br 1m;
    breaker_circuit up zone=br open=10s;
--- config
    location = /metrics { metrics; }
    location = /t {
        ratelimit_log_level warn;
        edge_cache pages;
        edge_cache_key $request_uri;
        breaker up;
        breaker_status 503;
        return 200 "ok\n";
    }
--- request eval
["GET /t", "GET /metrics"]
--- error_code eval
[200, 200]
--- response_body_like eval
[qr/^ok$/, qr/^nginx_edge_stats_series\{zone="metrics"\} \d+$/m]
--- no_error_log
[error]
[alert]
[crit]



=== TEST 1b: metrics shows nginx's own connection counters
--- skip_eval: 5: !$ENV{TEST_EDGE_NGINX_HAS_STUB_STATUS} # needs nginx's stub_status (--with-http_stub_status_module): nginx_connections_* come from it
--- http_config
    metrics_zone 1m;
--- config
    location = /metrics { metrics; }
--- request
GET /metrics
--- response_body_like eval
qr/^nginx_connections_active \d+$/m
--- no_error_log
[error]
[alert]
[crit]



=== TEST 2: ratelimit: a refusal status outside 400..599 is refused
--- config
    location = /t { ratelimit_status 200; return 200; }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid status code "200" in "ratelimit_status", it must be between 400 and 599 in \S+nginx\.conf:\d+/



=== TEST 3: ratelimit: an unknown zone is named
--- config
    location = /t { ratelimit zone=nosuch; return 200; }
--- must_die
--- error_log eval
qr/\[emerg\] .*unknown ratelimit_zone "nosuch"/



=== TEST 4: ratelimit: a bad rate is refused
--- http_config
    ratelimit_zone $binary_remote_addr zone=one:1m rate=10r/d;
--- config
    location = /t { return 200; }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid rate "rate=10r\/d" in \S+nginx\.conf:\d+/



=== TEST 4b: ratelimit: a zone too small is refused, with the minimum
--- http_config
    ratelimit_zone $binary_remote_addr zone=one:8k rate=1r/s;
--- config
    location = /t { return 200; }
--- must_die
--- error_log eval
qr/\[emerg\] .*zone "zone=one:8k" is too small, the minimum is \d+k in \S+nginx\.conf:\d+/



=== TEST 4c: ratelimit: a bad batch size of a redis server is refused
--- http_config
    ratelimit_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT batch=0;
--- config
    location = /t { return 200; }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid parameter "batch=0" of redis server "main" in \S+nginx\.conf:\d+/



=== TEST 4d: ratelimit: max_inflight past its bound (65536) is refused
A huge value would make every worker preallocate its slots at start.
--- http_config
    ratelimit_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT max_inflight=65537;
--- config
    location = /t { return 200; }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid parameter "max_inflight=65537" of redis server "main" in \S+nginx\.conf:\d+/



=== TEST 4e: ratelimit: max_inflight at its bound is accepted
--- http_config
    ratelimit_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT max_inflight=65536;
--- config
    location = /t { return 200 "ok\n"; }
--- request
GET /t
--- response_body
ok
--- no_error_log
[emerg]
[alert]



=== TEST 5: cache: a bad size is refused
--- config
    location = /t { edge_cache_max_size 10q; return 200; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"edge_cache_max_size" directive invalid value in \S+nginx\.conf:\d+/



=== TEST 6: cache: a key with an unknown variable is refused
--- config
    location = /t { edge_cache_key $no_such_variable_here; return 200; }
--- must_die
--- error_log eval
qr/\[emerg\] .*unknown "no_such_variable_here" variable/



=== TEST 7: breaker: a bad time is refused
--- http_config
    breaker_zone br 1m;
    breaker_circuit up zone=br open=soon;
--- config
    location = /t { return 200; }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid time "open=soon" in "breaker_circuit", it must be between 1ms and 24h in \S+nginx\.conf:\d+/



=== TEST 8: breaker: a threshold out of bounds is refused
--- http_config
    breaker_zone br 1m;
    breaker_circuit up zone=br failure_rate=0;
--- config
    location = /t { return 200; }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid value "failure_rate=0" in "breaker_circuit", it must be between 1 and 100 in \S+nginx\.conf:\d+/



=== TEST 9: metrics: a zone too small is refused
--- http_config
    metrics_zone 4k;
--- config
    location = /t { return 200; }
--- must_die
--- error_log eval
qr/\[emerg\] .*zone size "4k" is too small/



=== TEST 10: metrics: the directive is not allowed at http level
--- http_config
    metrics;
--- config
    location = /t { return 200; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"metrics" directive is not allowed here in \S+nginx\.conf:\d+/



=== TEST 11: metrics: a label's max= past 1000000 is refused
--- http_config
    metrics_label tenant $http_x_tenant max=1000001;
--- config
    location = /t { return 200; }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid maximum "max=1000001" in "metrics_label", it must be between 1 and 1000000 in \S+nginx\.conf:\d+/



=== TEST 11b: metrics: a label's max= at 1000000 is accepted
--- http_config
    metrics_zone 4m;
    metrics_label tenant $http_x_tenant max=1000000;
--- config
    location = /t { return 200 "ok\n"; }
--- request
GET /t
--- response_body
ok
--- no_error_log
[emerg]
[alert]
