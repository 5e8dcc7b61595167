# Subrequests are limited once per main request, as limit_req does: the
# first of the main request and its subrequests (here auth_request's) that
# reaches a limited location is limited; the others are not charged.
# (auth_request's subrequest has no arguments: the key is $remote_addr.)
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

=== TEST 1: an auth_request subrequest to a limited location is limited
The main location has no limit; the subrequest's refusal fails the
authorization (auth_request answers 500 for an unexpected 429, as with
limit_req), and the main response carries the decision's headers.
--- skip_eval: 14: !$ENV{TEST_EDGE_NGINX_HAS_AUTH_REQUEST} # needs nginx's auth_request (--with-http_auth_request_module)
--- http_config
    ratelimit_zone $remote_addr zone=z:1m rate=1r/m;
--- config
    location = /ok { return 200 "ok\n"; }
    location = /auth {
        internal;
        ratelimit zone=z burst=1 nodelay;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
    location = /main {
        auth_request /auth;
        add_header X-Status $ratelimit_status always;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
--- request eval
["GET /main?k=a", "GET /main?k=a", "GET /main?k=a"]
--- error_code eval
[200, 200, 500]
--- response_headers eval
["X-Status: PASSED\nRateLimit: \"z\";r=1;t=60",
 "X-Status: PASSED\nRateLimit: \"z\";r=0;t=120",
 "X-Status: REJECTED"]
--- no_error_log
[alert]
[crit]



=== TEST 2: a main request already limited is not limited again by its subrequest
Both locations use zone z with burst=1 (2 requests): charged once per
main request, 2 main requests pass; charged twice, the second would not.
--- skip_eval: 12: !$ENV{TEST_EDGE_NGINX_HAS_AUTH_REQUEST} # needs nginx's auth_request (--with-http_auth_request_module)
--- http_config
    ratelimit_zone $remote_addr zone=z:1m rate=1r/m;
--- config
    location = /ok { return 200 "ok\n"; }
    location = /auth {
        internal;
        ratelimit zone=z burst=1 nodelay;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
    location = /main {
        ratelimit zone=z burst=1 nodelay;
        auth_request /auth;
        add_header X-Status $ratelimit_status always;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
--- request eval
["GET /main?k=b", "GET /main?k=b", "GET /main?k=b"]
--- error_code eval
[200, 200, 429]
--- response_headers eval
["X-Status: PASSED", "X-Status: PASSED", "X-Status: REJECTED"]
--- no_error_log
[alert]
[crit]



=== TEST 3: Redis: a subrequest waits for Redis and resumes
--- skip_eval: 12: !$ENV{TEST_EDGE_NGINX_HAS_AUTH_REQUEST} # needs nginx's auth_request (--with-http_auth_request_module)
--- http_config
    ratelimit_redis r 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    ratelimit_zone $remote_addr zone=z:1m rate=1r/m redis=r on_failure=closed;
--- config
    location = /ok { return 200 "ok\n"; }
    location = /auth {
        internal;
        ratelimit zone=z burst=1 nodelay;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
    location = /main {
        auth_request /auth;
        add_header X-Status $ratelimit_status always;
        proxy_pass http://127.0.0.1:$server_port/ok;
    }
--- request eval
["GET /main?k=c", "GET /main?k=c", "GET /main?k=c"]
--- error_code eval
[200, 200, 500]
--- response_headers eval
["X-Status: PASSED", "X-Status: PASSED", "X-Status: REJECTED"]
--- no_error_log
[alert]
[crit]
