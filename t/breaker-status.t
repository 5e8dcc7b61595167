# ngx_http_breaker_status_module: the status endpoint (breaker_status_endpoint).
#
# The document's structure (parsed with JSON::PP), HEAD, forcing refused
# unless the location allows it, the error statuses with their JSON
# bodies (400, 404, 405 with Allow), and configurations nginx refuses.
# What needs circuits and shedders configured is in t/breaker-status-live.t.
#
# body_check(CODE) is a response_body_like pattern that matches when CODE
# returns true for the whole body (as in t/metrics.t).
use strict;
use warnings;

use Test::Nginx::Socket 'no_plan';
use JSON::PP ();

workers(2);
master_on();
no_shuffle();

our $Body;

sub body_check {
    my ($code) = @_;
    return qr/\A(.*)\z(?(?{ local $Body = $^N; $code->($Body) })|(*FAIL))/s;
}

sub json_ok {
    my ($code) = @_;
    return body_check(sub {
        my $doc = eval { JSON::PP::decode_json($_[0]) };
        unless ($doc) {
            Test::More::diag("not JSON: $@");
            return 0;
        }
        return $code->($doc);
    });
}

# an error document: { "error": NAME, "message": TEXT }
sub json_error {
    my ($name) = @_;
    return json_ok(sub {
        my ($d) = @_;
        my $ok = ref $d eq 'HASH' && ($d->{error} // '') eq $name
                 && length($d->{message} // '') > 0
                 && keys %$d == 2;
        Test::More::diag("error document: " . JSON::PP::encode_json($d))
            unless $ok;
        return $ok;
    });
}

our $Structure = json_ok(sub {
    my ($d) = @_;
    my @why;
    push @why, 'not an object' unless ref $d eq 'HASH';
    my $node = $d->{node} // {};
    push @why, 'node.pid' unless ($node->{pid} // '') =~ /^\d+$/;
    push @why, 'node.hostname' unless length($node->{hostname} // '');
    push @why, 'node.nginx_version'
        unless ($node->{nginx_version} // '') =~ /^\d+\.\d+\.\d+$/;
    push @why, 'node.time' unless ($node->{time} // 0) > 1.6e9;
    push @why, 'circuits' unless ref $d->{circuits} eq 'ARRAY';
    push @why, 'shedders' unless ref $d->{shedders} eq 'ARRAY';
    my $s = $d->{summary} // {};
    for my $k (qw(circuits circuits_open circuits_half_open shedders
                  shedders_shedding)) {
        push @why, "summary.$k" unless ($s->{$k} // '') =~ /^\d+$/;
    }
    push @why, 'summary.circuits != number of circuits'
        unless ref $d->{circuits} eq 'ARRAY'
               && ($s->{circuits} // -1) == @{ $d->{circuits} };
    push @why, 'summary.shedders != number of shedders'
        unless ref $d->{shedders} eq 'ARRAY'
               && ($s->{shedders} // -1) == @{ $d->{shedders} };
    push @why, 'open > circuits'
        unless ($s->{circuits_open} // 0) + ($s->{circuits_half_open} // 0)
               <= ($s->{circuits} // 0);
    Test::More::diag("status document: @why") if @why;
    return !@why;
});

run_tests();

__DATA__

=== TEST 1: GET: the document's structure, JSON, not cached
--- config
    location = /breaker { breaker_status_endpoint; }
--- request
GET /breaker
--- error_code: 200
--- response_headers
Content-Type: application/json
Cache-Control: no-store
--- response_body_like eval
$::Structure
--- no_error_log
[error]
[alert]
[crit]



=== TEST 2: GET with no circuit and no shedder configured: empty lists, zero counts
--- config
    location = /breaker { breaker_status_endpoint; }
--- request
GET /breaker
--- error_code: 200
--- response_body_like eval
::json_ok(sub {
    my ($d) = @_;
    return @{ $d->{circuits} } == 0 && @{ $d->{shedders} } == 0
        && $d->{summary}{circuits} == 0 && $d->{summary}{circuits_open} == 0
        && $d->{summary}{shedders} == 0
        && $d->{summary}{shedders_shedding} == 0;
})
--- no_error_log
[error]



=== TEST 3: HEAD: the headers of GET, no body
--- config
    location = /breaker { breaker_status_endpoint; }
--- request
HEAD /breaker
--- error_code: 200
--- response_headers
Content-Type: application/json
--- response_body eval
""
--- no_error_log
[error]



=== TEST 4: forcing is refused by default (403, JSON), the log says nothing was forced
--- config
    location = /breaker { breaker_status_endpoint; }
--- request eval
["POST /breaker?circuit=a&state=open", "PUT /breaker?circuit=a&state=closed"]
--- error_code eval
[403, 403]
--- response_headers eval
["Content-Type: application/json", "Content-Type: application/json"]
--- response_body_like eval
[::json_error('forbidden'), ::json_error('forbidden')]
--- no_error_log
forced
[error]



=== TEST 5: allow_force=off is the default, written out
--- config
    location = /breaker { breaker_status_endpoint allow_force=off; }
--- request
POST /breaker?circuit=a&state=open
--- error_code: 403
--- response_body_like eval
::json_error('forbidden')
--- no_error_log
[error]



=== TEST 6: allow_force=on: a bad or missing state is 400, before the circuit is looked up
--- config
    location = /breaker { breaker_status_endpoint allow_force=on; }
--- request eval
["POST /breaker?circuit=a&state=half_open",
 "POST /breaker?circuit=a",
 "POST /breaker?circuit=a&state=OPEN",
 "PUT /breaker?circuit=a&state=opened"]
--- error_code eval
[400, 400, 400, 400]
--- response_body_like eval
[(::json_error('bad_request')) x 4]
--- no_error_log
[error]



=== TEST 7: allow_force=on: a missing circuit is 400, an unknown one 404
--- config
    location = /breaker { breaker_status_endpoint allow_force=on; }
--- request eval
["POST /breaker?state=open",
 "POST /breaker?circuit=&state=open",
 "POST /breaker?circuit=nosuch&state=open",
 "PUT /breaker?circuit=no%20such&state=auto"]
--- error_code eval
[400, 400, 404, 404]
--- response_body_like eval
[::json_error('bad_request'), ::json_error('bad_request'),
 ::json_error('not_found'), ::json_error('not_found')]
--- no_error_log
forced
[error]



=== TEST 8: a POST body is read and discarded (the connection stays usable)
--- config
    location = /breaker { breaker_status_endpoint allow_force=on; }
--- request eval
["POST /breaker?circuit=nosuch&state=open\r\n" . ("x" x 10000), "GET /breaker"]
--- error_code eval
[404, 200]
--- response_body_like eval
[::json_error('not_found'), $::Structure]
--- no_error_log
[error]



=== TEST 9: other methods are 405 with Allow, JSON body
--- config
    location = /breaker { breaker_status_endpoint allow_force=on; }
--- request eval
["DELETE /breaker?circuit=a", "OPTIONS /breaker", "PATCH /breaker"]
--- error_code eval
[405, 405, 405]
--- response_headers eval
["Allow: GET, HEAD, POST, PUT", "Allow: GET, HEAD, POST, PUT",
 "Allow: GET, HEAD, POST, PUT"]
--- response_body_like eval
[(::json_error('method_not_allowed')) x 3]
--- no_error_log
[error]



=== TEST 10: a bad allow_force value is refused, quoted
--- config
    location = /breaker { breaker_status_endpoint allow_force=yes; }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid parameter "allow_force=yes" in "breaker_status_endpoint", expected "allow_force=on" or "allow_force=off" in \S+nginx\.conf:\d+/



=== TEST 11: the endpoint is a location's content: not in server{}
--- config
    breaker_status_endpoint;
--- must_die
--- error_log eval
qr/\[emerg\] .*"breaker_status_endpoint" directive is not allowed here/



=== TEST 12: twice in one location is refused
--- config
    location = /breaker { breaker_status_endpoint; breaker_status_endpoint; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"breaker_status_endpoint" directive is duplicate/



=== TEST 13: the status and the health endpoint in one location are refused
--- config
    location = /breaker { breaker_health live; breaker_status_endpoint; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"breaker_status_endpoint" directive conflicts with "breaker_health" in the same location/



=== TEST 14: too many parameters are refused
--- config
    location = /breaker { breaker_status_endpoint allow_force=on allow_force=off; }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid number of arguments in "breaker_status_endpoint" directive/
