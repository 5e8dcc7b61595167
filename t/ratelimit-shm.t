# ngx_http_ratelimit_module in shared-memory mode (no Redis): the same
# decisions as nginx's limit_req on the same request sequences.
use Test::Nginx::Socket 'no_plan';

# two workers: every decision must come from the shared zone
workers(2);
master_on();
no_shuffle();
run_tests();

__DATA__

=== TEST 1: burst=2 nodelay lets burst + 1 back-to-back requests pass, as limit_req
--- http_config
    limit_req_zone $arg_k zone=ref:1m rate=1r/m;
    ratelimit_zone $arg_k zone=rl:1m rate=1r/m;
    limit_req_status 429;
--- config
    location = /ok { return 200 "ok\n"; }
    location = /ref {
        limit_req zone=ref burst=2 nodelay;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
    location = /rl {
        ratelimit zone=rl burst=2 nodelay;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
--- request eval
["GET /ref?k=a", "GET /ref?k=a", "GET /ref?k=a", "GET /ref?k=a",
 "GET /rl?k=a", "GET /rl?k=a", "GET /rl?k=a", "GET /rl?k=a"]
--- error_code eval
[200, 200, 200, 429, 200, 200, 200, 429]
--- no_error_log
[alert]
[crit]



=== TEST 2: no burst: only the first request passes, as limit_req
--- http_config
    limit_req_zone $arg_k zone=ref:1m rate=1r/m;
    ratelimit_zone $arg_k zone=rl:1m rate=1r/m;
    limit_req_status 429;
--- config
    location = /ok { return 200 "ok\n"; }
    location = /ref {
        limit_req zone=ref;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
    location = /rl {
        ratelimit zone=rl;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
--- request eval
["GET /ref?k=b", "GET /ref?k=b", "GET /rl?k=b", "GET /rl?k=b"]
--- error_code eval
[200, 429, 200, 429]



=== TEST 3: without nodelay the excess is delayed, not refused, as limit_req
# (only the second request is delayed, and error.log is checked after each
# request against the lines since the previous check: the delay's log line
# is asserted in t/ratelimit-logs.t)
--- http_config
    ratelimit_zone $arg_k zone=rl:1m rate=30r/m;
--- config
    location = /ok { return 200 "ok\n"; }
    location = /rl {
        ratelimit zone=rl burst=3;
        add_header X-Status $ratelimit_status always;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
--- request eval
["GET /rl?k=c", "GET /rl?k=c"]
--- error_code eval
[200, 200]
--- response_headers eval
["X-Status: PASSED", "X-Status: DELAYED"]
--- no_error_log
[error]



=== TEST 4: delay=1: the first excess request goes at once, the next waits
# (30r/m: the next request is in excess for 2 s, and a delay lasts at
# most that long)
--- http_config
    ratelimit_zone $arg_k zone=rl:1m rate=30r/m;
--- config
    location = /ok { return 200 "ok\n"; }
    location = /rl {
        ratelimit zone=rl burst=4 delay=1;
        add_header X-Status $ratelimit_status always;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
--- request eval
["GET /rl?k=d", "GET /rl?k=d", "GET /rl?k=d"]
--- response_headers eval
["X-Status: PASSED", "X-Status: PASSED", "X-Status: DELAYED"]



=== TEST 5: an empty key is not limited (the allow-list idiom)
--- http_config
    geo $limited { default 1; 127.0.0.1 0; }
    map $limited $rl_key { 0 ""; 1 $binary_remote_addr; }
    ratelimit_zone $rl_key zone=rl:1m rate=1r/m;
--- config
    location = /ok { return 200 "ok\n"; }
    location = /rl {
        ratelimit zone=rl;
        add_header X-Status "[$ratelimit_status]" always;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
--- request eval
["GET /rl", "GET /rl", "GET /rl"]
--- error_code eval
[200, 200, 200]
--- response_headers eval
["X-Status: []", "X-Status: []", "X-Status: []"]



=== TEST 6: cost: one request can take several tokens
--- http_config
    ratelimit_zone $arg_k zone=rl:1m rate=1r/m;
--- config
    location = /ok { return 200 "ok\n"; }
    location = /rl {
        ratelimit zone=rl burst=4 cost=$arg_cost nodelay;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
--- request eval
["GET /rl?k=e&cost=3", "GET /rl?k=e&cost=2", "GET /rl?k=e&cost=3",
 "GET /rl?k=e&cost=junk", "GET /rl?k=e&cost=1"]
--- error_code eval
[200, 200, 429, 429, 429]



=== TEST 7: two limits on one location both apply
--- http_config
    ratelimit_zone $arg_ip zone=perip:1m rate=1r/m;
    ratelimit_zone $arg_key zone=perkey:1m rate=1r/m;
--- config
    location = /ok { return 200 "ok\n"; }
    location = /rl {
        ratelimit zone=perip burst=5 nodelay;
        ratelimit zone=perkey burst=1 nodelay;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
--- request eval
["GET /rl?ip=1&key=x", "GET /rl?ip=1&key=x", "GET /rl?ip=1&key=x",
 "GET /rl?ip=1&key=y"]
--- error_code eval
[200, 200, 429, 200]



=== TEST 8: draft headers, Retry-After and variables
# 6r/m: one token per 10 s.  The first request's numbers are exact (they
# come from one instant); the later ones count down with the time between
# the requests, which only has to stay below the 10 s that keeps the third
# request refused, so their bounds are what the refusal implies.
--- http_config
    ratelimit_zone $arg_k zone=api:1m rate=6r/m;
--- config
    location = /ok { return 200 "ok\n"; }
    location = /rl {
        ratelimit zone=api burst=1 nodelay;
        add_header X-Vars "$ratelimit_status $ratelimit_remaining $ratelimit_reset" always;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
--- request eval
["GET /rl?k=f", "GET /rl?k=f", "GET /rl?k=f"]
--- error_code eval
[200, 200, 429]
--- response_headers_like eval
["RateLimit-Policy: \"api\";q=2;w=20\nRateLimit: \"api\";r=1;t=10\nX-Vars: PASSED 1 10\nRetry-After: ",
 "RateLimit: \"api\";r=0;t=(1[1-9]|20)\nX-Vars: PASSED 0 (1[1-9]|20)",
 "RateLimit: \"api\";r=0;t=(1[1-9]|20)\nRetry-After: ([1-9]|10)\nX-Vars: REJECTED 0 (1[1-9]|20)"]



=== TEST 9: legacy headers, or none
--- http_config
    ratelimit_zone $arg_k zone=api:1m rate=60r/m;
--- config
    location = /ok { return 200 "ok\n"; }
    location = /legacy {
        ratelimit zone=api burst=4 nodelay;
        ratelimit_headers legacy;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
    location = /none {
        ratelimit zone=api burst=4 nodelay;
        ratelimit_headers off;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
--- request eval
["GET /legacy?k=g", "GET /none?k=h"]
--- response_headers eval
["X-RateLimit-Limit: 5\nX-RateLimit-Remaining: 4\nX-RateLimit-Reset: 1\n!RateLimit",
 "!RateLimit\n!RateLimit-Policy\n!X-RateLimit-Limit"]



=== TEST 10: tiers: the tier variable picks the limit
--- http_config
    map $arg_plan $tier { default public; gold premium; }
    ratelimit_zone $arg_k zone=api:1m rate=1r/m tier=$tier;
    ratelimit_tier zone=api tier=premium rate=10r/m burst=3;
--- config
    location = /ok { return 200 "ok\n"; }
    location = /rl {
        ratelimit zone=api nodelay;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
--- request eval
["GET /rl?k=i", "GET /rl?k=i",
 "GET /rl?k=j&plan=gold", "GET /rl?k=j&plan=gold", "GET /rl?k=j&plan=gold",
 "GET /rl?k=j&plan=gold", "GET /rl?k=j&plan=gold"]
--- error_code eval
[200, 429, 200, 200, 200, 200, 429]
--- response_headers eval
["", "", "RateLimit-Policy: \"api/premium\";q=4;w=24", "", "", "", ""]



=== TEST 11: dry run decides and logs but never refuses
--- http_config
    ratelimit_zone $arg_k zone=rl:1m rate=1r/m;
--- config
    location = /ok { return 200 "ok\n"; }
    location = /rl {
        ratelimit zone=rl;
        ratelimit_dry_run on;
        add_header X-Status $ratelimit_status always;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
--- request eval
["GET /rl?k=k", "GET /rl?k=k", "GET /rl?k=k"]
--- error_code eval
[200, 200, 200]
--- response_headers eval
["X-Status: PASSED", "X-Status: DRY_RUN", "X-Status: DRY_RUN"]



=== TEST 11b: dry run logs the refusal it does not make
# (cost=5 > burst + 1 is refused on the very first request, so the line is
# in the first request's error.log window)
--- http_config
    ratelimit_zone $arg_k zone=rl:1m rate=1r/m;
--- config
    location = /ok { return 200 "ok\n"; }
    location = /rl {
        ratelimit zone=rl cost=5;
        ratelimit_dry_run on;
        add_header X-Status $ratelimit_status always;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
--- request
GET /rl?k=k
--- error_code: 200
--- response_headers
X-Status: DRY_RUN
--- error_log
ratelimit: REJECTED by zone "rl", retry in
, dry run



=== TEST 12: status and log level are configurable
--- http_config
    ratelimit_zone $arg_k zone=rl:1m rate=1r/m;
--- config
    location = /ok { return 200 "ok\n"; }
    location = /rl {
        ratelimit zone=rl;
        ratelimit_status 503;
        ratelimit_log_level notice;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
--- request eval
["GET /rl?k=l", "GET /rl?k=l"]
--- error_code eval
[200, 503]
--- no_error_log
[error]



=== TEST 12b: the refusal is logged at the configured level
# (cost=5 > burst + 1 is refused on the very first request, so the line is
# in the first request's error.log window)
--- http_config
    ratelimit_zone $arg_k zone=rl:1m rate=1r/m;
--- config
    location = /ok { return 200 "ok\n"; }
    location = /rl {
        ratelimit zone=rl cost=5;
        ratelimit_status 503;
        ratelimit_log_level notice;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
--- request
GET /rl?k=l
--- error_code: 503
--- error_log eval
qr/\[notice\] .*ratelimit: REJECTED by zone "rl"/
--- no_error_log
[error]



=== TEST 13: bans: repeated refusals ban the key for the duration
--- http_config
    ratelimit_zone $arg_k zone=rl:1m rate=1r/m;
    ratelimit_ban zone=rl threshold=2 window=1m duration=1h;
--- config
    location = /ok { return 200 "ok\n"; }
    location = /rl {
        ratelimit zone=rl;
        add_header X-Status $ratelimit_status always;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
--- request eval
["GET /rl?k=m", "GET /rl?k=m", "GET /rl?k=m", "GET /rl?k=m", "GET /rl?k=n"]
--- error_code eval
[200, 429, 429, 429, 200]
--- response_headers eval
["X-Status: PASSED", "X-Status: REJECTED", "X-Status: BANNED",
 "X-Status: BANNED\nRetry-After: 3600", "X-Status: PASSED"]



=== TEST 14: r/h: 5 per 15 minutes is 20r/h with burst=4
--- http_config
    ratelimit_zone $arg_k zone=login:1m rate=20r/h;
    map $arg_c $login_cost { "" 1; default $arg_c; }
--- config
    location = /ok { return 200 "ok\n"; }
    location = /login {
        ratelimit zone=login burst=4 cost=$login_cost nodelay;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
--- request eval
[(map { "GET /login?k=p" } 1 .. 6), "GET /login?k=p2&c=6"]
--- error_code eval
[(200) x 5, 429, 429]
--- response_headers eval
["", "", "", "", "", "", "Retry-After: 180"]



=== TEST 15: the workers share one shared-memory limit
--- http_config
    ratelimit_zone $arg_k zone=rl:1m rate=1r/m;
--- config
    location = /ok { return 200 "ok\n"; }
    location = /rl {
        ratelimit zone=rl burst=9 nodelay;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
--- request eval
[map { "GET /rl?k=o" } 1 .. 12]
--- error_code eval
[(200) x 10, 429, 429]



=== TEST 16: error_page after a refusal keeps the decision, and limits once
--- http_config
    ratelimit_zone $arg_k zone=rl:1m rate=1r/m;
--- config
    location = /ok { return 200 "ok\n"; }
    location = /page { return 200 "slow down\n"; }
    location = /rl {
        ratelimit zone=rl;
        error_page 429 @limited;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
    location @limited {
        ratelimit zone=rl;
        add_header X-Status $ratelimit_status always;
        proxy_pass http://127.0.0.1:$server_port/page;
    }
--- request eval
["GET /rl?k=q", "GET /rl?k=q"]
--- error_code eval
[200, 429]
--- response_body eval
["ok\n", "slow down\n"]
--- response_headers eval
["", "X-Status: REJECTED\nRetry-After: 60\nRateLimit: \"rl\";r=0;t=60"]
