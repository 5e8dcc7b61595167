# ratelimit_ddos: what nginx -t refuses, naming the directive or parameter
# and quoting the bad value.
use Test::Nginx::Socket 'no_plan';

no_shuffle();
run_tests();

__DATA__

=== TEST 1: zone=, rate=, threshold= and ban= are required
--- http_config
    ratelimit_ddos zone=d:1m rate=100r/s threshold=200;
--- config
    location = /t { root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"ratelimit_ddos" needs "zone=", "rate=", "threshold=" and "ban="/



=== TEST 2: a threshold at or below the rate is refused
--- http_config
    ratelimit_ddos zone=d:1m rate=100r/s threshold=100 ban=1h;
--- config
    location = /t { root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"ratelimit_ddos": "threshold=100" must be more than the rate's 100 requests/



=== TEST 3: an invalid CIDR is refused
--- http_config
    ratelimit_ddos zone=d:1m rate=100r/s threshold=200 ban=1h
                   allow=10.0.0.0/33;
--- config
    location = /t { root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid address or CIDR "10.0.0.0\/33"/



=== TEST 4: a missing allow_file is refused
--- http_config
    ratelimit_ddos zone=d:1m rate=100r/s threshold=200 ban=1h
                   allow_file=/nonexistent/allow.txt;
--- config
    location = /t { root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*open\(\) "\/nonexistent\/allow.txt" failed/



=== TEST 5: a bad line in allow_file is refused, naming the file
--- http_config
    ratelimit_ddos zone=d:1m rate=100r/s threshold=200 ban=1h
                   allow_file=../html/allow.txt;
--- config
    location = /t { root html; }
--- user_files
>>> allow.txt
10.0.0.1
not-an-address
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid address or CIDR "not-an-address"/



=== TEST 6: a bad ban time is refused
--- http_config
    ratelimit_ddos zone=d:1m rate=100r/s threshold=200 ban=forever;
--- config
    location = /t { root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid parameter "ban=forever"/



=== TEST 7: an unknown parameter is refused
--- http_config
    ratelimit_ddos zone=d:1m rate=100r/s threshold=200 ban=1h whitelist=x;
--- config
    location = /t { root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid parameter "whitelist=x"/



=== TEST 8: an unknown redis server is refused, as by ratelimit_zone
--- http_config
    ratelimit_ddos zone=d:1m rate=100r/s threshold=200 ban=1h redis=nope;
--- config
    location = /t { root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*unknown redis server "nope"/



=== TEST 9: the ddos limit comes first, even after an http-level ratelimit
--- http_config
    ratelimit_zone $arg_k zone=o:1m rate=10r/s;
    ratelimit zone=o;
    ratelimit_ddos zone=d:1m rate=100r/s threshold=200 ban=1h;
--- config
    location = /ok { return 200 "ok\n"; }
    location = /t {
        add_header X-Rate $ratelimit_rate;
        proxy_pass http://127.0.0.1:$TEST_NGINX_SERVER_PORT/ok;
    }
--- request
GET /t?k=a
--- error_code: 200
--- response_headers
X-Rate: d=100r/s,o=10r/s
--- no_error_log
[error]
[alert]



=== TEST 10: a parameter repeated past the directive's room is refused
--- http_config
    ratelimit_ddos zone=d:1m rate=100r/s threshold=200 ban=1h
                   rate=100r/s rate=100r/s rate=100r/s rate=100r/s
                   rate=100r/s rate=100r/s rate=100r/s rate=100r/s
                   rate=100r/s rate=100r/s;
--- config
    location = /t { root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid parameter "rate=100r\/s"/



=== TEST 11: allow_pg= naming no ratelimit_pg_map is refused
--- http_config
    ratelimit_ddos zone=d:1m rate=100r/s threshold=200 ban=1h
                   allow_pg=$partners;
--- config
    location = /t { root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"allow_pg=\$partners": no "ratelimit_pg_map" declares the variable "\$partners" above this directive/



=== TEST 12: allow_pg= naming a map declared below is refused
--- http_config
    ratelimit_ddos zone=d:1m rate=100r/s threshold=200 ban=1h
                   allow_pg=partners;
    ratelimit_pg_map $remote_addr $partners match=cidr
                     "dsn=$TEST_NGINX_PG_DSN" "query=SELECT 1, 2";
--- config
    location = /t { root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"allow_pg=partners": no "ratelimit_pg_map" declares the variable "partners" above this directive/



=== TEST 13: allow_pg= naming a map of exact keys is refused
--- http_config
    ratelimit_pg_map $http_x_api_key $tier
                     "dsn=$TEST_NGINX_PG_DSN" "query=SELECT 1, 2";
    ratelimit_ddos zone=d:1m rate=100r/s threshold=200 ban=1h
                   allow_pg=$tier;
--- config
    location = /t { root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"allow_pg=\$tier": the "ratelimit_pg_map" of "\$tier" must have "match=cidr"/



=== TEST 14: allow_pg= given twice is refused
--- http_config
    ratelimit_pg_map $remote_addr $partners match=cidr
                     "dsn=$TEST_NGINX_PG_DSN" "query=SELECT 1, 2";
    ratelimit_ddos zone=d:1m rate=100r/s threshold=200 ban=1h
                   allow_pg=$partners allow_pg=$partners;
--- config
    location = /t { root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*duplicate "allow_pg" parameter "allow_pg=\$partners"/



=== TEST 15: an empty allow_pg= is refused
--- http_config
    ratelimit_ddos zone=d:1m rate=100r/s threshold=200 ban=1h allow_pg=;
--- config
    location = /t { root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"allow_pg=": no "ratelimit_pg_map" declares the variable "" above this directive/



=== TEST 16: ratelimit_pg_map match= other than exact or cidr is refused
--- http_config
    ratelimit_pg_map $remote_addr $partners match=prefix
                     "dsn=$TEST_NGINX_PG_DSN" "query=SELECT 1, 2";
--- config
    location = /t { root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid "match" value "match=prefix": "exact" or "cidr"/



=== TEST 17: allow_pg= with a match=cidr map declared above is accepted
--- http_config
    ratelimit_pg_map $remote_addr $partners match=cidr
                     "dsn=$TEST_NGINX_PG_DSN" "query=SELECT 1, 2";
    ratelimit_ddos zone=d:1m rate=100r/s threshold=200 ban=1h
                   allow_pg=$partners;
--- config
    location = /t { return 200 "ok\n"; }
--- request
GET /t
--- response_body
ok
--- no_error_log
[emerg]
[alert]
[crit]
