# A scrape of tens of thousands of series is streamed: the response comes
# complete and well formed (promtool, and an exact count of the series of
# each family), with and without gzip, also when the client reads slowly,
# so that nginx waits for the socket and resumes rendering many times.
use strict;
use warnings;

use Test::More;
use File::Temp ();
use IO::Socket::INET;
use POSIX ();
use IO::Uncompress::Gunzip ();
use Time::HiRes qw(sleep time);
use Test::Edge qw(wait_until promtool_ok);
use Test::Edge::Nginx;
use JSON::PP ();

my $IDS = 10000;

my $n = Test::Edge::Nginx->start(workers => 2, http => <<'HTTP');
    metrics_zone 16m;
    metrics_label id $arg_id max=20000;
    keepalive_requests 100000;
    server {
        listen 127.0.0.1:$PORT;
        location = /metrics { metrics; }
        location /a { metrics_location a; return 200 "ok\n"; }
    }
HTTP

# $IDS requests with distinct ids, pipelined on one connection
{
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $n->port) or die $!;
    my $req = join '', map { "GET /a?id=$_ HTTP/1.1\r\nHost: x\r\n\r\n" }
              1 .. $IDS - 1;
    $req .= "GET /a?id=$IDS HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    my $writer = fork // die $!;
    if ($writer == 0) {
        print $s $req;
        POSIX::_exit(0);    # not exit: that would stop nginx (DESTROY)
    }
    local $/;
    my $all = <$s>;
    waitpid $writer, 0;
    my $ok = () = $all =~ m{^HTTP/1\.1 200 }mg;
    is($ok, $IDS, "$IDS requests answered");
    close $s;
}

# GET over a raw socket, reading $chunk bytes per $pause seconds; the
# body, de-chunked
sub slow_get {
    my ($path, $chunk, $pause, @headers) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $n->port) or die $!;
    print $s "GET $path HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
             . join('', map { "$_\r\n" } @headers) . "\r\n";
    my ($raw, $buf) = ('');
    while (sysread($s, $buf, $chunk)) {
        $raw .= $buf;
        sleep $pause if $pause;
    }
    my ($head, $body) = split /\r\n\r\n/, $raw, 2;
    if ($head =~ /^Transfer-Encoding: chunked/mi) {
        my $out = '';
        while ($body =~ s/\A([0-9a-fA-F]+)\r\n//) {
            my $len = hex $1;
            last if $len == 0;
            $out .= substr($body, 0, $len, '');
            $body =~ s/\A\r\n//;
        }
        $body = $out;
    }
    return ($head, $body);
}

# every family's label sets, counted, against the zone's own gauges
sub check_exposition {
    my ($body, $what) = @_;

    like($body, qr/\A# HELP /, "$what: starts with a family");
    like($body, qr/^nginx_edge_stats_series_dropped_total\{[^\n]*\n\z/m,
         "$what: ends with the last family, complete");
    ok(promtool_ok($body), "$what: promtool check metrics");

    my %series;
    while ($body =~ /^(nginx_http_[a-z_]+?)(?:_bucket|_sum|_count)?\{([^}]*?)(?:,le="[^"]*")?\} /mg) {
        $series{$1}{$2} = 1;
    }

    my %live = $body =~ /^nginx_edge_stats_family_series\{zone="metrics",family="([^"]+)"\} (\d+)$/mg;
    my %dropped = $body =~ /^nginx_edge_stats_series_dropped_total\{zone="metrics",family="([^"]+)"\} (\d+)$/mg;

    is(scalar keys %{ $series{nginx_http_requests_total} }, $IDS,
       "$what: $IDS request counters, one per id");

    for my $f (qw(nginx_http_requests_total
                  nginx_http_request_duration_seconds
                  nginx_http_request_size_bytes
                  nginx_http_response_size_bytes))
    {
        # the live series, and the overflow series if anything overflowed
        my $want = $live{$f} + ($dropped{$f} ? 1 : 0);
        is(scalar keys %{ $series{$f} }, $want,
           "$what: $f has its $want label sets");
    }
}

# A request is counted in its log phase, when nginx lets it go.  After a
# pipeline nginx closes with a lingering close: it half-closes the socket
# (the client reads EOF) and lets the last request go only when the client
# has closed too.  Until then that request may be missing: wait for it.
ok(wait_until(10, sub {
       my (undef, $b) = slow_get('/metrics?family=nginx_http_requests_total',
                                 65536, 0);
       return (() = $b =~ /^nginx_http_requests_total\{/mg) >= $IDS;
   }), "the $IDS requests are counted");

my ($head, $body) = slow_get('/metrics', 65536, 0);
like($head, qr{^HTTP/1\.1 200 }, 'a scrape');
check_exposition($body, 'plain');

my $plain = $body;

($head, $body) = slow_get('/metrics', 16384, 0.002);
check_exposition($body, 'read slowly');

SKIP: {
    skip("gzip: needs nginx's gzip support (the gzip module or --with-compat)",
         2 + 8)         # check_exposition makes 8
        unless $ENV{TEST_EDGE_NGINX_HAS_GZIP};
    ($head, $body) = slow_get('/metrics', 4096, 0.002,
                              'Accept-Encoding: gzip');
    like($head, qr/^Content-Encoding: gzip/mi, 'gzip');
    my $text;
    ok(IO::Uncompress::Gunzip::gunzip(\$body => \$text),
       'the gzip stream is whole');
    check_exposition($text // '', 'gzip, read slowly');
}

($head, $body) = slow_get('/metrics?format=json', 65536, 0);
my $json = eval { JSON::PP::decode_json($body) };
ok($json, 'JSON of every series parses') or diag($@);
my ($req) = grep { $_->{name} eq 'nginx_http_requests_total' }
            @{ $json->{families} || [] };
is(scalar(grep { $_->{labels}{id} ne '__overflow__' } @{ $req->{series} }),
   $IDS, "JSON: $IDS request counters");

unlike($n->final_log, qr/\[(alert|crit|emerg|error)\]/, 'no error in the log');
$n->stop;

done_testing();
