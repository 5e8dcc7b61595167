# Hostile label values: whatever bytes a variable holds, the series store
# valid UTF-8 (each ill-formed subpart becomes U+FFFD), and the text,
# OpenMetrics and JSON renderings stay valid and escaped for their format.
#
# body_check(CODE): a response_body_like pattern that matches when CODE
# returns true for the whole body (see t/metrics.t).
use strict;
use warnings;

use Test::Nginx::Socket 'no_plan';
use Test::Edge qw(promtool_ok);
use JSON::PP ();
use File::Temp ();
use Encode ();

workers(2);
master_on();
no_shuffle();

our $Body;

sub body_check {
    my ($code) = @_;
    return qr/\A(.*)\z(?(?{ local $Body = $^N; $code->($Body) })|(*FAIL))/s;
}

# strictly valid UTF-8 (Encode's strict UTF-8, not Perl's lax utf8)
sub utf8_ok {
    my ($bytes) = @_;
    my $copy = $bytes;
    my $ok = eval { Encode::decode('UTF-8', $copy, Encode::FB_CROAK); 1 };
    Test::More::diag("not valid UTF-8: $@") unless $ok;
    return $ok;
}

our $R = "\xef\xbf\xbd";    # U+FFFD in UTF-8

# tenant value sent => the value the series must show (bytes)
our @Tenants = (
    ["\xed\xa0\x80", "$R$R$R"],             # a surrogate, U+D800
    ["\xc0\xaf", "$R$R"],                   # an overlong '/'
    ["a\xffb", "a${R}b"],                   # a byte that is never UTF-8
    ["ok\xe2\x82", "ok$R"],                 # cut short at the end
    ["caf\xc3\xa9", "caf\xc3\xa9"],         # valid: unchanged
    ["\xf0\x9f\x98\x80", "\xf0\x9f\x98\x80"],   # an emoji: unchanged
);

# every tenant has its series with its count (1), in text or OpenMetrics
sub tenants_ok {
    my ($body) = @_;
    for my $t (@Tenants) {
        my $want = quotemeta $t->[1];
        next if $body =~ /^nginx_http_requests_total\{[^}]*,tenant="$want"\} 1$/m;
        Test::More::diag("no series for tenant " . unpack('H*', $t->[1]));
        return 0;
    }
    return 1;
}

our @More = map { "X-Tenant: $_->[0]" } @Tenants;

run_tests();

__DATA__

=== TEST 1: text: hostile values stored as valid UTF-8; promtool accepts the scrape
--- http_config
    metrics_zone 1m;
    metrics_label tenant $http_x_tenant max=10;
--- config
    location = /metrics { metrics; }
    location /a { metrics_location a; return 200 "ok\n"; }
--- more_headers eval
[@main::More, ""]
--- request eval
[("GET /a") x 6, "GET /metrics"]
--- response_body_like eval
[(qr/^ok$/) x 6,
 main::body_check(sub {
     main::utf8_ok($_[0]) && main::tenants_ok($_[0])
         && main::promtool_ok($_[0])
 })]
--- no_error_log
[error]
[alert]
[crit]



=== TEST 2: OpenMetrics: the same values, valid UTF-8, ends with # EOF
--- http_config
    metrics_zone 1m;
    metrics_label tenant $http_x_tenant max=10;
--- config
    location = /metrics { metrics; }
    location /a { metrics_location a; return 200 "ok\n"; }
--- more_headers eval
[@main::More, ""]
--- request eval
[("GET /a") x 6, "GET /metrics?format=openmetrics"]
--- response_body_like eval
[(qr/^ok$/) x 6,
 main::body_check(sub {
     main::utf8_ok($_[0]) && main::tenants_ok($_[0])
         && $_[0] =~ /\n# EOF\n\z/
 })]
--- no_error_log
[error]
[alert]
[crit]



=== TEST 3: JSON answers 200 and parses; the values are the stored ones
--- http_config
    metrics_zone 1m;
    metrics_label tenant $http_x_tenant max=10;
--- config
    location = /metrics { metrics; }
    location /a { metrics_location a; return 200 "ok\n"; }
--- more_headers eval
[@main::More, ""]
--- request eval
[("GET /a") x 6, "GET /metrics?format=json&family=nginx_http_requests_total"]
--- error_code eval
[(200) x 7]
--- response_body_like eval
[(qr/^ok$/) x 6,
 main::body_check(sub {
     my $j = eval { JSON::PP::decode_json($_[0]) }
         or do { Test::More::diag("not JSON: $@"); return 0 };
     my %got = map { Encode::encode('UTF-8', $_->{labels}{tenant})
                     => $_->{value} }
               @{ $j->{families}[0]{series} };
     for my $t (@main::Tenants) {
         next if ($got{$t->[1]} // 0) == 1;
         Test::More::diag("no series for " . unpack('H*', $t->[1]));
         return 0;
     }
     return keys %got == 6;
 })]
--- no_error_log
[error]
[alert]
[crit]



=== TEST 4: quotes, backslashes, newlines and control characters, per format
--- http_config
    metrics_zone 1m;
    map $http_x_case $v {
        quote      "a\"b";
        backslash  "c\\d";
        newline    "e\nf";
        tab        "g\th";
        cr         "i\rj";
    }
    metrics_label v $v max=10;
--- config
    location = /metrics { metrics; }
    location /a { metrics_location a; return 200 "ok\n"; }
--- more_headers eval
["X-Case: quote", "X-Case: backslash", "X-Case: newline", "X-Case: tab",
 "X-Case: cr", "", ""]
--- request eval
[("GET /a") x 5, "GET /metrics?family=nginx_http_requests_total",
 "GET /metrics?format=json&family=nginx_http_requests_total"]
--- response_body_like eval
[(qr/^ok$/) x 5,
 main::body_check(sub {
     my $b = $_[0];
     main::promtool_ok($b)
         && $b =~ /,v="a\\"b"\} 1$/m && $b =~ /,v="c\\\\d"\} 1$/m
         && $b =~ /,v="e\\nf"\} 1$/m && $b =~ /,v="g\th"\} 1$/m
         && $b =~ /,v="i\rj"\} 1$/m
 }),
 main::body_check(sub {
     my $j = eval { JSON::PP::decode_json($_[0]) }
         or do { Test::More::diag("not JSON: $@"); return 0 };
     my %got = map { $_->{labels}{v} => $_->{value} }
               @{ $j->{families}[0]{series} };
     return $_[0] =~ /"g\\th"/ && $_[0] =~ /"i\\rj"/
         && CORE::join(',', map { $got{$_} // 0 }
                      "a\"b", "c\\d", "e\nf", "g\th", "i\rj") eq '1,1,1,1,1';
 })]
--- no_error_log
[error]
[alert]
[crit]
