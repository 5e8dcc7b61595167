# mode=lease: what nginx -t refuses, naming the parameter and quoting the
# bad value, and the bounds it accepts.
use Test::Nginx::Socket 'no_plan';

no_shuffle();
run_tests();

__DATA__

=== TEST 1: mode=lease without redis= is refused
--- http_config
    ratelimit_zone $arg_k zone=z:1m rate=10r/s mode=lease;
--- config
    location = /rl { ratelimit zone=z; root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"mode=lease" needs "redis="/



=== TEST 2: mode=lease with algorithm=sliding_window is refused
--- http_config
    ratelimit_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    ratelimit_zone $arg_k zone=z:1m rate=10r/s redis=main mode=lease
                   algorithm=sliding_window;
--- config
    location = /rl { ratelimit zone=z; root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"mode=lease" does not apply to "algorithm=sliding_window"/



=== TEST 3: an unknown mode is refused
--- http_config
    ratelimit_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    ratelimit_zone $arg_k zone=z:1m rate=10r/s redis=main mode=borrow;
--- config
    location = /rl { ratelimit zone=z; root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid parameter "mode=borrow"/



=== TEST 4: lease_max=0 is refused
--- http_config
    ratelimit_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    ratelimit_zone $arg_k zone=z:1m rate=10r/s redis=main mode=lease
                   lease_max=0;
--- config
    location = /rl { ratelimit zone=z; root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid lease_max "lease_max=0": a number of tokens from 1 to 1000000/



=== TEST 5: lease_max past its bound is refused
--- http_config
    ratelimit_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    ratelimit_zone $arg_k zone=z:1m rate=10r/s redis=main mode=lease
                   lease_max=1000001;
--- config
    location = /rl { ratelimit zone=z; root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid lease_max "lease_max=1000001"/



=== TEST 6: lease_max that is not a number is refused
--- http_config
    ratelimit_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    ratelimit_zone $arg_k zone=z:1m rate=10r/s redis=main mode=lease
                   lease_max=many;
--- config
    location = /rl { ratelimit zone=z; root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid lease_max "lease_max=many"/



=== TEST 7: lease_ttl=0 is refused
--- http_config
    ratelimit_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    ratelimit_zone $arg_k zone=z:1m rate=10r/s redis=main mode=lease
                   lease_ttl=0;
--- config
    location = /rl { ratelimit zone=z; root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid lease_ttl "lease_ttl=0": a time from 1ms to 3600s/



=== TEST 8: lease_ttl past an hour is refused
--- http_config
    ratelimit_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    ratelimit_zone $arg_k zone=z:1m rate=10r/s redis=main mode=lease
                   lease_ttl=3601s;
--- config
    location = /rl { ratelimit zone=z; root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid lease_ttl "lease_ttl=3601s"/



=== TEST 9: lease_ttl that is not a time is refused
--- http_config
    ratelimit_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    ratelimit_zone $arg_k zone=z:1m rate=10r/s redis=main mode=lease
                   lease_ttl=soon;
--- config
    location = /rl { ratelimit zone=z; root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid lease_ttl "lease_ttl=soon"/



=== TEST 10: lease_max= without mode=lease is refused
--- http_config
    ratelimit_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    ratelimit_zone $arg_k zone=z:1m rate=10r/s redis=main lease_max=8;
--- config
    location = /rl { ratelimit zone=z; root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"lease_max=" and "lease_ttl=" need "mode=lease"/



=== TEST 11: lease_ttl= without mode=lease is refused
--- http_config
    ratelimit_zone $arg_k zone=z:1m rate=10r/s lease_ttl=2s;
--- config
    location = /rl { ratelimit zone=z; root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"lease_max=" and "lease_ttl=" need "mode=lease"/



=== TEST 12: the bounds themselves are accepted
--- http_config
    ratelimit_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    ratelimit_zone $arg_k zone=a:1m rate=10r/s redis=main mode=lease
                   lease_max=1 lease_ttl=1ms;
    ratelimit_zone $arg_k zone=b:1m rate=10r/s redis=main mode=lease
                   lease_max=1000000 lease_ttl=3600s;
    ratelimit_zone $arg_k zone=c:1m rate=10r/s redis=main mode=lease;
--- config
    location = /a { ratelimit zone=a; return 204; }
    location = /b { ratelimit zone=b; return 204; }
    location = /c { ratelimit zone=c; return 204; }
--- request
GET /a
--- error_code: 204
--- no_error_log
[emerg]
[alert]
