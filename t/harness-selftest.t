# Self-test of the test harness (t/lib/Test/Nginx/*) against plain nginx:
# no custom modules are needed.  Written so that it also runs under the
# real Test::Nginx::Socket.
use Test::Nginx::Socket 'no_plan';

# Port for the scripted upstream (--- tcp_listen eval: $ENV{...}: that
# section is not $TEST_NGINX_* expanded); override if it is taken.
$ENV{TEST_NGINX_FAKE_PORT} ||= 19850;

repeat_each(2);
no_shuffle();

# Blocks that say "--- master_workers: N" run with a master process and N
# workers, all others in single-process mode (exercises the preprocessor).
add_block_preprocessor(sub {
    my $block = shift;
    if (defined(my $n = $block->master_workers)) {
        master_on();
        workers($n);
    } else {
        master_process_enabled(0);
        workers(1);
    }
});

run_tests();

__DATA__

=== TEST 1: plain return with a body
--- config
    location = /t {
        return 200 "hello world\n";
    }
--- request
GET /t
--- error_code: 200
--- response_body
hello world
--- no_error_log
[error]



=== TEST 2: response headers, present and absent
--- config
    location = /t {
        add_header X-Foo "bar baz";
        return 200 "ok\n";
    }
--- request
GET /t
--- response_headers
X-Foo: bar baz
Content-Type: text/plain
!X-Missing
--- response_body
ok



=== TEST 2b: response headers matching patterns
# (a block with response_headers ignores response_headers_like)
--- config
    location = /t {
        add_header X-Foo "bar baz";
        return 200 "ok\n";
    }
--- request
GET /t
--- response_headers_like
Server: nginx(/[\d.]+)?
X-Foo: bar \w+
--- response_body
ok



=== TEST 3: response_body_like
--- config
    location = /t {
        return 200 "uri=$uri args=$args\n";
    }
--- request
GET /t?a=1&b=2
--- response_body_like: ^uri=/t args=a=1&b=2$



=== TEST 4: more_headers reach nginx
--- config
    location = /t {
        return 200 "foo=$http_x_foo ua=$http_user_agent\n";
    }
--- request
GET /t
--- more_headers
X-Foo: some value
User-Agent: harness
--- response_body
foo=some value ua=harness



=== TEST 5: 404 for a missing file is logged
--- config
--- request
GET /no-such-file.txt
--- error_code: 404
--- response_body_like: 404 Not Found
--- error_log
open() "
no-such-file.txt" failed (2: No such file or directory)
--- no_error_log
[alert]
[emerg]



=== TEST 6: request body (seen through $request_body in a proxied header)
--- config
    location = /t {
        proxy_set_header X-Body $request_body;
        proxy_pass http://127.0.0.1:$TEST_NGINX_SERVER_PORT/sink;
    }
    location = /sink {
        return 200 "method=$request_method body=$http_x_body len=$content_length\n";
    }
--- request
POST /t
hello=world&x=1
--- response_body
method=POST body=hello=world&x=1 len=15



=== TEST 7: pipelined requests on one connection, each response checked
--- config
    location /p {
        add_header X-Uri $uri;
        return 200 "$uri;";
    }
--- pipelined_requests eval
["GET /p/1", "GET /p/2", "GET /p/3"]
--- error_code eval
[200, 200, 200]
--- response_headers eval
["X-Uri: /p/1", "X-Uri: /p/2", "X-Uri: /p/3"]
--- response_body eval
["/p/1;", "/p/2;", "/p/3;"]



=== TEST 8: several requests, one expectation each
--- config
    location = /a { return 200 "A\n"; }
    location = /b { return 403; }
--- request eval
["GET /a", "GET /b", "GET /a?x=1"]
--- error_code eval
[200, 403, 200]
--- response_body_like eval
["^A\n\$", "403 Forbidden", "^A"]



=== TEST 9: user files, HEAD, chunked responses
--- user_files
>>> dir/hello.txt
Hello from a user file
--- config
    # ssi (built by default, unlike sub_filter) drops the length: chunked
    location = /chunked {
        ssi on;
        ssi_types *;
        return 200 "hello <!--# echo var=\"uri\" -->\n";
    }
--- request eval
["GET /dir/hello.txt", "HEAD /dir/hello.txt", "GET /chunked"]
--- response_headers eval
["Content-Length: 23", "Content-Length: 23", "Transfer-Encoding: chunked\n!Content-Length"]
--- response_body eval
["Hello from a user file\n", "", "hello /chunked\n"]



=== TEST 10: raw request bytes
--- config
    location = /t {
        return 200 "proto=$server_protocol\n";
    }
--- raw_request eval
"GET /t HTTP/1.0\r\nHost: x\r\n\r\n"
--- response_body
proto=HTTP/1.0



=== TEST 11: scripted TCP upstream sees the expected query and its reply is relayed
--- config
    location = /t {
        # the exact upstream request (tcp_query) depends on these: nginx
        # 1.29.7 proxies with HTTP/1.1 and no Connection header by default
        proxy_http_version 1.0;
        proxy_set_header Host backend;
        proxy_set_header Connection close;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_PORT/backend;
    }
--- request
GET /t
--- tcp_listen eval: $ENV{TEST_NGINX_FAKE_PORT}
--- tcp_query eval
"GET /backend HTTP/1.0\r\nHost: backend\r\nConnection: close\r\n\r\n"
--- tcp_reply eval
"HTTP/1.0 200 OK\r\nX-Upstream: fake\r\nContent-Length: 14\r\n\r\nfrom upstream\n"
--- response_headers
X-Upstream: fake
--- response_body
from upstream
--- no_error_log
[error]



=== TEST 12: request body forwarded to a TCP upstream
--- config
    location = /t {
        # the exact upstream request (tcp_query) depends on these: nginx
        # 1.29.7 proxies with HTTP/1.1 and no Connection header by default
        proxy_http_version 1.0;
        proxy_set_header Host backend;
        proxy_set_header Connection close;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_PORT;
    }
--- request
POST /t
ping
--- tcp_listen eval: $ENV{TEST_NGINX_FAKE_PORT}
--- tcp_query eval
"POST /t HTTP/1.0\r\nHost: backend\r\nConnection: close\r\nContent-Length: 4\r\n\r\nping"
--- tcp_query_len: 77
--- tcp_reply eval
"HTTP/1.0 201 Created\r\nContent-Length: 5\r\n\r\npong\n"
--- error_code: 201
--- response_body
pong



=== TEST 13: client timeout tolerated with --- abort
--- config
    location = /t {
        proxy_read_timeout 30s;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_PORT;
    }
--- request
GET /t
--- tcp_listen eval: $ENV{TEST_NGINX_FAKE_PORT}
--- tcp_reply eval: ""
--- tcp_no_close
--- timeout: 0.3
--- abort
--- ignore_response



=== TEST 12b: one random port per block, the same in every section
--- http_config
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        return 200 "backend $server_port\n";
    }
--- config
    location = /t {
        proxy_pass http://127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
--- request
GET /t
--- response_body_like: ^backend \d+$



=== TEST 12c: error_log is checked after every request, on the lines logged since the previous one
# (each request logs its own line: with accumulated windows the second
# grep_error_log_out would see two)
--- config
--- request eval
["GET /missing-1.txt", "GET /missing-1.txt"]
--- error_code eval
[404, 404]
--- error_log
missing-1.txt" failed (2: No such file or directory)
--- grep_error_log eval
qr/missing-\d\.txt" failed/
--- grep_error_log_out eval
["missing-1.txt\" failed\n", "missing-1.txt\" failed\n"]



=== TEST 14: master process with two workers
--- master_workers: 2
--- config
    location = /t {
        return 200 "ok\n";
    }
--- request
GET /t
--- response_body
ok
--- grep_error_log eval
qr/start worker process(?= \d)/
--- grep_error_log_out eval
["start worker process\nstart worker process\n", ""]
--- wait: 0.1
--- shutdown_error_log
gracefully shutting down



=== TEST 15: nginx refuses a bad config
--- config
    location = /t {
        no_such_directive_here on;
    }
--- must_die
--- error_log
unknown directive "no_such_directive_here"



=== TEST 16: skipped block
--- SKIP
--- config
    location = /t { return 500; }
--- request
GET /t
--- response_body
never checked
