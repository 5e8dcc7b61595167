# breaker_shed_zone, breaker_shedder, breaker_shed_class, breaker_shed and
# breaker_shed_status: every bad value is refused by nginx -t with a
# message that names the directive and quotes the value; the good
# configurations work: the status and Retry-After of a shed request,
# "breaker_shed off", a fallback (error_page) for shed requests, and a
# shedder named in a location before it is declared.
use Test::Nginx::Socket 'no_plan';

no_shuffle();
run_tests();

__DATA__

=== TEST 1: limit=0 is refused
--- http_config
    breaker_shed_zone z 1m;
    breaker_shedder s zone=z limit=0;
--- config
    location = /t { root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid value "limit=0" in "breaker_shedder" "s"/



=== TEST 2: a limit that is not a number
--- http_config
    breaker_shed_zone z 1m;
    breaker_shedder s zone=z limit=ten;
--- config
    location = /t { root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid value "limit=ten" in "breaker_shedder" "s"/



=== TEST 3: a limit above 1000000
--- http_config
    breaker_shed_zone z 1m;
    breaker_shedder s zone=z limit=1000001;
--- config
    location = /t { root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid value "limit=1000001" in "breaker_shedder" "s"/



=== TEST 4: no limit and not adaptive
--- http_config
    breaker_shed_zone z 1m;
    breaker_shedder s zone=z queue=5;
--- config
    location = /t { root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"breaker_shedder" "s" needs limit= or adaptive/



=== TEST 5: no zone
--- http_config
    breaker_shedder s limit=5;
--- config
    location = /t { root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"breaker_shedder" "s" needs zone=/



=== TEST 6: an unknown zone
--- http_config
    breaker_shedder s zone=nope limit=5;
--- config
    location = /t { root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"breaker_shedder" "s": unknown zone "nope"/



=== TEST 7: a zone too small
--- http_config
    breaker_shed_zone z 4k;
    breaker_shedder s zone=z limit=5;
--- config
    location = /t { root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid size "4k" in "breaker_shed_zone" "z"/



=== TEST 8: an unknown parameter
--- http_config
    breaker_shed_zone z 1m;
    breaker_shedder s zone=z limit=5 burst=3;
--- config
    location = /t { root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid parameter "burst=3" in "breaker_shedder" "s"/



=== TEST 9: a bad queue_timeout
--- http_config
    breaker_shed_zone z 1m;
    breaker_shedder s zone=z limit=5 queue_timeout=soon;
--- config
    location = /t { root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid value "queue_timeout=soon" in "breaker_shedder" "s"/



=== TEST 10: shed_probability above 1
--- http_config
    breaker_shed_zone z 1m;
    breaker_shedder s zone=z limit=5 shed_probability=1.5;
--- config
    location = /t { root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid value "shed_probability=1\.5" in "breaker_shedder" "s"/



=== TEST 11: shed_probability above 100%
--- http_config
    breaker_shed_zone z 1m;
    breaker_shedder s zone=z limit=5 shed_probability=101%;
--- config
    location = /t { root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid value "shed_probability=101%" in "breaker_shedder" "s"/



=== TEST 12: min_limit above max_limit
--- http_config
    breaker_shed_zone z 1m;
    breaker_shedder s zone=z adaptive min_limit=10 max_limit=5;
--- config
    location = /t { root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"breaker_shedder" "s": min_limit=10 is above max_limit=5/



=== TEST 13: an initial limit outside [min, max]
--- http_config
    breaker_shed_zone z 1m;
    breaker_shedder s zone=z adaptive min_limit=10 max_limit=50 limit=5;
--- config
    location = /t { root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"breaker_shedder" "s": the initial limit=5 is outside min_limit=10 \.\. max_limit=50/



=== TEST 14: min_limit without adaptive
--- http_config
    breaker_shed_zone z 1m;
    breaker_shedder s zone=z limit=5 min_limit=2;
--- config
    location = /t { root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"breaker_shedder" "s": min_limit= and max_limit= need adaptive/



=== TEST 15: percentile above 100
--- http_config
    breaker_shed_zone z 1m;
    breaker_shedder s zone=z adaptive percentile=101;
--- config
    location = /t { root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid value "percentile=101" in "breaker_shedder" "s"/



=== TEST 16: a duplicate shedder
--- http_config
    breaker_shed_zone z 1m;
    breaker_shedder s zone=z limit=5;
    breaker_shedder s zone=z limit=6;
--- config
    location = /t { root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*duplicate breaker_shedder "s"/



=== TEST 17: a class of an unknown shedder
--- http_config
    breaker_shed_class s 10;
--- config
    location = /t { root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"breaker_shed_class" names an unknown shedder "s"/



=== TEST 18: a duplicate class
--- http_config
    breaker_shed_zone z 1m;
    breaker_shedder s zone=z limit=5;
    breaker_shed_class s 10;
    breaker_shed_class s 10;
--- config
    location = /t { root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*duplicate "breaker_shed_class" "s" 10/



=== TEST 19: shares above 100%
--- http_config
    breaker_shed_zone z 1m;
    breaker_shedder s zone=z limit=5;
    breaker_shed_class s 10 share=60%;
    breaker_shed_class s 1 share=50%;
--- config
    location = /t { root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"breaker_shed_class" "s": the shares add up to 110%, more than 100%/



=== TEST 20: a bad share
--- http_config
    breaker_shed_zone z 1m;
    breaker_shedder s zone=z limit=5;
    breaker_shed_class s 10 share=lots;
--- config
    location = /t { root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid value "share=lots" in "breaker_shed_class"/



=== TEST 21: a bad priority
--- http_config
    breaker_shed_zone z 1m;
    breaker_shedder s zone=z limit=5;
    breaker_shed_class s high;
--- config
    location = /t { root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid priority "high" in "breaker_shed_class" "s"/



=== TEST 22: breaker_shed names an unknown shedder
--- config
    location = /t { breaker_shed nope; root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"breaker_shed" names an unknown shedder "nope"/



=== TEST 23: breaker_shed_status outside 400..599
--- http_config
    breaker_shed_zone z 1m;
    breaker_shedder s zone=z limit=5;
--- config
    location = /t { breaker_shed s; breaker_shed_status 200; root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid status "200" in "breaker_shed_status": 400 to 599/



=== TEST 24: a bad parameter of breaker_shed
--- http_config
    breaker_shed_zone z 1m;
    breaker_shedder s zone=z limit=5;
--- config
    location = /t { breaker_shed s prio=$http_x; root html; }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid parameter "prio=\$http_x" in "breaker_shed"/



=== TEST 25: a shedder named before its declaration; admitted requests
--- config
    location = /t.txt {
        breaker_shed later priority=$http_x_prio;
        add_header X-Shed "$shed_status/$shed_limit/$shed_in_flight" always;
        root html;
    }
--- http_config
    breaker_shed_zone z 1m;
    breaker_shedder later zone=z limit=5;
    breaker_shed_class later 10;
    breaker_shed_class later 1;
--- user_files
>>> t.txt
hello
--- request
GET /t.txt
--- more_headers
X-Prio: 10
--- response_headers
X-Shed: ADMITTED/5/1
--- response_body
hello
--- no_error_log
[error]
[alert]



=== TEST 26: breaker_shed_status 429 retry_after=0: no Retry-After
--- http_config
    breaker_shed_zone z 1m;
    breaker_shedder s zone=z limit=1;
--- config
    location = /hold {
        breaker_shed s;
        proxy_pass http://127.0.0.1:$TEST_NGINX_SERVER_PORT/t;
    }
    location = /t {
        breaker_shed s;
        breaker_shed_status 429 retry_after=0;
        add_header X-Shed "$shed_status $shed_reason" always;
        root html;
    }
--- request
GET /hold
--- error_code: 429
--- response_headers
X-Shed: SHED limit
Retry-After:
--- no_error_log
[alert]



=== TEST 27: a fallback (error_page) for shed requests; breaker_shed off
--- http_config
    breaker_shed_zone z 1m;
    breaker_shedder s zone=z limit=1;
--- config
    breaker_shed s;
    location = /hold {
        proxy_pass http://127.0.0.1:$TEST_NGINX_SERVER_PORT/inner;
    }
    location = /inner {
        error_page 503 = @fallback;
        root html;
    }
    location @fallback {
        return 200 "fallback $shed_status $shed_reason\n";
    }
    location = /off {
        breaker_shed off;
        proxy_pass http://127.0.0.1:$TEST_NGINX_SERVER_PORT/free;
    }
    location = /free {
        breaker_shed off;
        return 200 "free [$shed_status]\n";
    }
--- request eval
["GET /hold", "GET /off"]
--- response_body eval
["fallback SHED limit\n", "free []\n"]
--- no_error_log
[alert]
