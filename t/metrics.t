# ngx_http_metrics_module: request metrics counted in the LOG phase and
# their exposition (text 0.0.4, OpenMetrics, JSON, gzip, family filter).
#
# Counts are exact: every block sends a known sequence of requests, each on
# its own connection, to nginx with two workers, and then scrapes.  Each
# worker adds into its own slot, the scrape sums them.
#
# body_check(CODE) (below) is a response_body_like pattern that matches
# when CODE returns true for the whole body: Test::Nginx compares bodies
# only with patterns, and this is how a block hands the body to promtool,
# a JSON parser or gunzip.  CODE's complaints go to the TAP output.
use strict;
use warnings;

use Test::Nginx::Socket 'no_plan';
use Test::Edge qw(promtool_ok);
use JSON::PP ();
use IO::Uncompress::Gunzip ();
use File::Temp ();

workers(2);
master_on();
no_shuffle();

our $Body;

sub body_check {
    my ($code) = @_;
    return qr/\A(.*)\z(?(?{ local $Body = $^N; $code->($Body) })|(*FAIL))/s;
}

sub request_length {    # as the harness sends it, with Connection: close
    my ($line, @headers) = @_;
    return length("$line HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                  . join('', map { "$_\r\n" } @headers) . "\r\n");
}

our $GetA = request_length('GET /a');
our $PostB = request_length('POST /b');

run_tests();

__DATA__

=== TEST 1: exact request counts and histogram sums across two workers
--- http_config
    metrics_zone 1m;
--- config
    metrics_location root;
    location = /metrics { metrics_location off; metrics; }
    location /a { return 200 "hello\n"; }
    location /b { return 200 "0123456789abcdef"; }
    location /missing { metrics_location missing; return 404; }
--- request eval
[("GET /a") x 10, ("POST /b") x 3, ("GET /missing") x 2,
 "GET /metrics?family=nginx_http_"]
--- error_code eval
[(200) x 13, (404) x 2, 200]
--- response_body_like eval
[(qr/^hello$/) x 10, (qr/^0123456789abcdef$/) x 3, (qr/404/) x 2,
 qr/^nginx_http_requests_total\{server="localhost",location="root",method="GET",status="200"\} 10
nginx_http_requests_total\{server="localhost",location="root",method="POST",status="200"\} 3
nginx_http_requests_total\{server="localhost",location="missing",method="GET",status="404"\} 2
(?s:.*)^nginx_http_request_duration_seconds_count\{server="localhost",location="root"\} 13
(?s:.*)^nginx_http_request_size_bytes_bucket\{server="localhost",location="root",le="64.0"\} 13
(?s:.*)^nginx_http_request_size_bytes_sum\{server="localhost",location="root"\} ${\ (10 * $main::GetA + 3 * $main::PostB) }
nginx_http_request_size_bytes_count\{server="localhost",location="root"\} 13
(?s:.*)^nginx_http_response_size_bytes_sum\{server="localhost",location="root"\} ${\ (10 * 6 + 3 * 16) }
nginx_http_response_size_bytes_count\{server="localhost",location="root"\} 13
/m]
--- no_error_log
[error]
[alert]
[crit]



=== TEST 2: metrics_buckets: exact cumulative buckets, the scrape is not counted
--- http_config
    metrics_zone 1m;
    metrics_buckets response_size 5 10 1k;
    metrics_status class;
--- config
    location = /metrics { metrics; }
    location /a { metrics_location a; return 200 "hello\n"; }
    location /b { metrics_location b; return 200 "0123456789abcdef"; }
--- request eval
[("GET /a") x 4, ("GET /b") x 2, ("GET /a") x 1,
 "GET /metrics?family=nginx_http_response_size,nginx_http_requests_total"]
--- response_body_like eval
[(qr/./) x 7,
 qr/\A# HELP nginx_http_requests_total .*
# TYPE nginx_http_requests_total counter
nginx_http_requests_total\{server="localhost",location="a",method="GET",status="2xx"\} 5
nginx_http_requests_total\{server="localhost",location="b",method="GET",status="2xx"\} 2
# HELP nginx_http_response_size_bytes .*
# TYPE nginx_http_response_size_bytes histogram
nginx_http_response_size_bytes_bucket\{server="localhost",location="a",le="5.0"\} 0
nginx_http_response_size_bytes_bucket\{server="localhost",location="a",le="10.0"\} 5
nginx_http_response_size_bytes_bucket\{server="localhost",location="a",le="1024.0"\} 5
nginx_http_response_size_bytes_bucket\{server="localhost",location="a",le="\+Inf"\} 5
nginx_http_response_size_bytes_sum\{server="localhost",location="a"\} 30
nginx_http_response_size_bytes_count\{server="localhost",location="a"\} 5
nginx_http_response_size_bytes_bucket\{server="localhost",location="b",le="5.0"\} 0
nginx_http_response_size_bytes_bucket\{server="localhost",location="b",le="10.0"\} 0
nginx_http_response_size_bytes_bucket\{server="localhost",location="b",le="1024.0"\} 2
nginx_http_response_size_bytes_bucket\{server="localhost",location="b",le="\+Inf"\} 2
nginx_http_response_size_bytes_sum\{server="localhost",location="b"\} 32
nginx_http_response_size_bytes_count\{server="localhost",location="b"\} 2
\z/]
--- no_error_log
[error]
[alert]
[crit]



=== TEST 3: variable labels: values beyond max= go to __overflow__ and are counted
--- http_config
    metrics_zone 1m;
    metrics_label tier $http_x_tier max=2;
--- config
    location = /metrics { metrics; }
    location /a { metrics_location a; return 200 "hello\n"; }
--- more_headers eval
["X-Tier: gold", "X-Tier: silver", "X-Tier: bronze", "X-Tier: gold",
 "X-Tier: copper", "X-Tier: bronze", ""]
--- request eval
[("GET /a") x 6,
 "GET /metrics?family=nginx_http_requests_total,nginx_edge_stats_series_dropped"]
--- response_body_like eval
[(qr/./) x 6,
 qr/^nginx_http_requests_total\{server="localhost",location="a",method="GET",status="200",tier="gold"\} 2
nginx_http_requests_total\{server="localhost",location="a",method="GET",status="200",tier="silver"\} 1
nginx_http_requests_total\{server="localhost",location="a",method="GET",status="200",tier="__overflow__"\} 3
(?s:.*)^nginx_edge_stats_series_dropped_total\{zone="metrics",family="nginx_http_label_tier"\} 3
nginx_edge_stats_series_dropped_total\{zone="metrics",family="nginx_http_requests_total"\} 0
/m]
--- no_error_log
[error]
[alert]
[crit]



=== TEST 4: hostile label values are escaped, bad UTF-8 becomes U+FFFD
--- http_config
    metrics_zone 1m;
    map $http_x_case $hostile {
        quote      "a\"b";
        backslash  "c\\d";
        newline    "e\nf";
        default    $http_x_raw;
    }
    metrics_label v $hostile max=10;
--- config
    location = /metrics { metrics; }
    location /a { metrics_location a; return 200 "hello\n"; }
--- more_headers eval
["X-Case: quote", "X-Case: backslash", "X-Case: newline",
 "X-Raw: g\xffh\xc3(", "X-Raw: caf\xc3\xa9", ""]
--- request eval
[("GET /a") x 5, "GET /metrics"]
--- response_body_like eval
[(qr/./) x 5,
 qr/^nginx_http_requests_total\{[^}]*,v="a\\"b"\} 1
nginx_http_requests_total\{[^}]*,v="c\\\\d"\} 1
nginx_http_requests_total\{[^}]*,v="e\\nf"\} 1
nginx_http_requests_total\{[^}]*,v="g\xef\xbf\xbdh\xef\xbf\xbd\("\} 1
nginx_http_requests_total\{[^}]*,v="caf\xc3\xa9"\} 1
/m]
--- no_error_log
[error]
[alert]
[crit]



=== TEST 5: the whole exposition passes promtool check metrics
--- http_config
    metrics_zone 1m;
    metrics_label v $http_x_raw max=3;
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        location / { return 204; }
    }
--- config
    location = /metrics { metrics; }
    location /a { metrics_location a; return 200 "hello\n"; }
    location /up {
        metrics_location up;
        proxy_pass http://127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
--- more_headers eval
["X-Raw: x\"y\\z\xff", "X-Raw: plain", "", ""]
--- request eval
["GET /a", "GET /a", "GET /up", "GET /metrics"]
--- error_code eval
[200, 200, 204, 200]
--- response_body_like eval
[qr/./, qr/./, qr/^$/, main::body_check(\&main::promtool_ok)]
--- response_headers eval
["", "", "",
 "Content-Type: text/plain; version=0.0.4; charset=utf-8\nVary: Accept, Accept-Encoding"]
--- no_error_log
[error]
[alert]
[crit]



=== TEST 6: upstream responses per upstream and peer, and their time
--- http_config
    metrics_zone 1m;
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        location / { return 204; }
    }
    upstream backend {
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
--- config
    location = /metrics { metrics; }
    location /up { metrics_location up; proxy_pass http://backend; }
--- request eval
[("GET /up") x 3, "GET /metrics?family=nginx_http_upstream_"]
--- error_code eval
[204, 204, 204, 200]
--- response_body_like eval
[qr/^$/, qr/^$/, qr/^$/,
 qr/^nginx_http_upstream_response_time_seconds_count\{server="localhost",location="up",upstream="backend"\} 3
(?s:.*)^nginx_http_upstream_responses_total\{server="localhost",location="up",upstream="backend",peer="127\.0\.0\.1:\d+",status="204"\} 3
/m]
--- no_error_log
[error]
[alert]
[crit]



=== TEST 7: OpenMetrics when the scraper asks for it (Prometheus' Accept)
--- http_config
    metrics_zone 1m;
--- config
    location = /metrics { metrics; }
    location /a { metrics_location a; return 200 "hello\n"; }
--- more_headers eval
["", "Accept: application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"]
--- request eval
["GET /a", "GET /metrics?family=nginx_http_requests_total"]
--- response_headers eval
["", "Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8"]
--- response_body_like eval
[qr/./, qr/\A# HELP nginx_http_requests Requests completed, by method and status\.
# TYPE nginx_http_requests counter
nginx_http_requests_total\{server="localhost",location="a",method="GET",status="200"\} 1
# EOF
\z/]
--- no_error_log
[error]
[alert]
[crit]



=== TEST 8: text 0.0.4 for curl's */* and when text is preferred
--- http_config
    metrics_zone 1m;
--- config
    location = /metrics { metrics; }
--- more_headers eval
["Accept: */*",
 "Accept: text/plain;version=0.0.4;q=1,application/openmetrics-text;q=0.5",
 "Accept: application/openmetrics-text;q=0"]
--- request eval
["GET /metrics", "GET /metrics", "GET /metrics"]
--- response_headers eval
[("Content-Type: text/plain; version=0.0.4; charset=utf-8") x 3]
--- response_body_unlike eval
[(qr/# EOF/) x 3]
--- no_error_log
[error]
[alert]
[crit]



=== TEST 9: gzip when Accept-Encoding allows it, plain when it does not
--- skip_eval: 26: !$ENV{TEST_EDGE_NGINX_HAS_GZIP} # needs nginx's gzip support (the gzip module or --with-compat; TEST 9b covers a build without it)
--- http_config
    metrics_zone 1m;
--- config
    location = /metrics { metrics; }
    location /a { metrics_location a; return 200 "hello\n"; }
--- more_headers eval
["", "Accept-Encoding: gzip, deflate", "Accept-Encoding: gzip;q=0", ""]
--- request eval
["GET /a", "GET /metrics", "GET /metrics", "GET /metrics"]
--- response_headers eval
["", "Content-Encoding: gzip\nVary: Accept, Accept-Encoding",
 "!Content-Encoding", "!Content-Encoding"]
--- response_body_like eval
[qr/./,
 main::body_check(sub {
     my $text;
     IO::Uncompress::Gunzip::gunzip(\$_[0] => \$text) or return 0;
     return $text =~ /^nginx_http_requests_total\{server="localhost",location="a",method="GET",status="200"\} 1$/m
            && main::promtool_ok($text);
 }),
 qr/^nginx_http_requests_total/m, qr/^nginx_http_requests_total/m]
--- no_error_log
[error]
[alert]
[crit]



=== TEST 9b: without nginx's gzip support the answer is plain, whatever Accept-Encoding says
--- skip_eval: 11: $ENV{TEST_EDGE_NGINX_HAS_GZIP} # for a static build without gzip support only (TEST 9 covers gzip)
--- http_config
    metrics_zone 1m;
--- config
    location = /metrics { metrics; }
    location /a { metrics_location a; return 200 "hello\n"; }
--- more_headers eval
["", "Accept-Encoding: gzip, deflate"]
--- request eval
["GET /a", "GET /metrics"]
--- response_headers eval
["", "!Content-Encoding"]
--- response_body_like eval
[qr/./,
 qr/^nginx_http_requests_total\{server="localhost",location="a",method="GET",status="200"\} 1$/m]
--- no_error_log
[error]
[alert]
[crit]



=== TEST 10: JSON rendering, and a filter by family
--- http_config
    metrics_zone 1m;
    metrics_label tier $http_x_tier max=4;
--- config
    location = /metrics { metrics; }
    location /a { metrics_location a; return 200 "hello\n"; }
--- more_headers eval
["X-Tier: gold", "X-Tier: gold", "X-Tier: \xff", ""]
--- request eval
["GET /a", "GET /a", "GET /a",
 "GET /metrics?format=json&family=nginx_http_requests_total,nginx_http_response_size"]
--- response_headers eval
["", "", "", "Content-Type: application/json"]
--- response_body_like eval
[qr/./, qr/./, qr/./,
 main::body_check(sub {
     my $j = eval { JSON::PP::decode_json($_[0]) }
         or do { Test::More::diag("not JSON: $@"); return 0 };
     my %f = map { $_->{name} => $_ } @{ $j->{families} };
     return 0 unless keys %f == 2;
     my %req = map { $_->{labels}{tier} => $_->{value} }
               @{ $f{nginx_http_requests_total}{series} };
     my ($gold) = grep { $_->{labels}{tier} eq 'gold' }
                  @{ $f{nginx_http_response_size_bytes}{series} };
     return $req{gold} == 2 && $req{"\x{fffd}"} == 1
         && $f{nginx_http_requests_total}{type} eq 'counter'
         && $gold->{count} == 2 && $gold->{sum} == 12
         && $gold->{buckets}[0]{le} == 64 && $gold->{buckets}[0]{count} == 2
         && $gold->{buckets}[-1]{le} eq '+Inf';
 })]
--- no_error_log
[error]
[alert]
[crit]



=== TEST 10b: a filter by family in the text format
--- skip_eval: 6: !$ENV{TEST_EDGE_NGINX_HAS_STUB_STATUS} # needs nginx's stub_status (--with-http_stub_status_module): nginx_connections_* come from it
--- http_config
    metrics_zone 1m;
--- config
    location = /metrics { metrics; }
--- request
GET /metrics?family=nginx_connections_accepted
--- response_headers
Content-Type: text/plain; version=0.0.4; charset=utf-8
--- response_body_like eval
qr/\A# HELP nginx_connections_accepted_total [^\n]*
# TYPE nginx_connections_accepted_total counter
nginx_connections_accepted_total \d+
\z/
--- no_error_log
[error]
[alert]
[crit]



=== TEST 11: HEAD and other methods on the metrics location
--- http_config
    metrics_zone 1m;
--- config
    location = /metrics { metrics; }
--- request eval
["HEAD /metrics", "DELETE /metrics"]
--- error_code eval
[200, 405]
--- response_body_like eval
[qr/^$/, qr/405/]
--- no_error_log
[error]
[alert]
[crit]



=== TEST 12: without metrics_zone the handler still shows nginx's own counters
--- skip_eval: 5: !$ENV{TEST_EDGE_NGINX_HAS_STUB_STATUS} # needs nginx's stub_status (--with-http_stub_status_module): nginx's own counters come from it
--- config
    location = /metrics { metrics; }
--- request
GET /metrics
--- response_body_like eval
qr/\A# HELP nginx_connections_active .*^nginx_http_requests_received_total \d+\n\z/ms
--- no_error_log
[error]
[alert]
[crit]



=== TEST 12b: without stub_status nginx's own counters are not shown, the rest is
--- skip_eval: 5: $ENV{TEST_EDGE_NGINX_HAS_STUB_STATUS} # for an nginx without stub_status only (TEST 12 covers it)
--- http_config
    metrics_zone 1m;
--- config
    location = /metrics { metrics; }
--- request
GET /metrics
--- response_body_like eval
qr/\A(?!.*^nginx_(?:connections_|http_requests_received))(?=.*^nginx_edge_stats_series\{zone="metrics"\} \d+$)/ms
--- no_error_log
[error]
[alert]
[crit]



=== TEST 13: metrics_location needs metrics_zone
--- config
    location /a { metrics_location a; return 200; }
--- must_die
--- error_log
"metrics_location" needs "metrics_zone"



=== TEST 14: metrics_buckets must ascend
--- http_config
    metrics_zone 1m;
    metrics_buckets request_duration 0.1 0.05;
--- config
--- must_die
--- error_log
bucket "0.05" is not above the one before



=== TEST 15: metrics_label refuses a built-in or invalid name
--- http_config
    metrics_zone 1m;
    metrics_label status $status;
--- config
--- must_die
--- error_log
label "status" is built in



=== TEST 16: another module's stats zone is rendered from shared memory
--- http_config
    metrics_zone 1m;
    ratelimit_zone $remote_addr zone=rl:1m rate=100r/s;
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        location / { return 200 "ok\n"; }
    }
--- config
    location = /metrics { metrics; }
    location /rl {
        ratelimit zone=rl burst=100 nodelay;
        proxy_pass http://127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
--- request eval
[("GET /rl") x 4, "GET /metrics?family=nginx_ratelimit_decisions_total,nginx_edge_stats_series"]
--- response_body_like eval
[(qr/^ok$/) x 4,
 qr/^# TYPE nginx_ratelimit_decisions_total counter
(?s:.*)^nginx_ratelimit_decisions_total\{zone="rl",result="passed"\} 4
(?s:.*)^nginx_edge_stats_series\{zone="ratelimit"\} 8$/m]
--- no_error_log
[error]
[alert]
[crit]
