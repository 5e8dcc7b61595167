# The cache-tests.fyi failures fixed in the module, without the external
# suite (bench/cache-conformance.sh runs the suite itself):
#
# - a method nginx does not know (M-SEARCH) is never answered from the
#   cache, and invalidates the URL like POST does; safe ones (OPTIONS,
#   PROPFIND) do not (RFC 9111 4.4, RFC 9110 9.2.1);
# - fields the origin names in Connection are not stored (RFC 9111 3.1);
# - no-transform: the body is stored and sent as the origin sent it, the
#   ETag strong (RFC 9110 7.7);
# - a small body (under 256 bytes, length known) is not compressed: its
#   Content-Length and strong ETag are the origin's on a hit;
# - CDN-Cache-Control (RFC 9213): a valid one replaces Cache-Control and
#   Expires; an invalid one (RFC 8941 syntax, a wrong type) is ignored;
#   edge_cache_cdn_cache_control off ignores it.
use strict;
use warnings;

use Test::More;
use Test::Edge qw(:all);
use Test::Edge::Nginx;
use Test::Edge::Origin;
use Digest::MD5 qw(md5_hex);
use IO::Uncompress::Gunzip qw(gunzip);

redis_start() unless redis_is_up();
redis_flushall();

my $rport = $ENV{TEST_NGINX_REDIS_PORT};
my $origin = Test::Edge::Origin->start;
my $oport = $origin->port;

my $http = <<"HTTP";
    edge_cache_redis main 127.0.0.1:$rport timeout=1s;
    edge_cache_zone conf redis=main;
    server {
        listen 127.0.0.1:\$PORT;
        edge_cache conf;
        edge_cache_key \$uri;
        add_header X-Cache \$edge_cache_status always;
        location /off/ {
            edge_cache_cdn_cache_control off;
            proxy_pass http://127.0.0.1:$oport;
        }
        location / {
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://127.0.0.1:$oport;
        }
    }
HTTP

my $n = Test::Edge::Nginx->start(http => $http, workers => 1);

sub rkey { 'conf:{' . md5_hex($_[0]) . '}' }
sub stored { defined redis_command('GET', rkey($_[0])) }
sub xcache { my $r = $n->get(@_); return ($r->{headers}{'x-cache'} // '-', $r) }

# GET PATH until Redis holds it, then the hit
sub cache_it {
    my ($path, %h) = @_;
    return undef unless wait_until(10, sub { $n->get($path, %h); stored($path) });
    my ($x, $r) = xcache($path, %h);
    return $x eq 'HIT' ? $r : undef;
}

ok(wait_until(10, sub { $origin->set('/w', headers => ['Cache-Control: max-age=60'], body => 'w');
                        $n->get('/w'); stored('/w') }), 'connected');

# --- unsafe methods nginx does not know invalidate; safe ones do not
$origin->set('/inv', headers => ['Cache-Control: max-age=60'], body => 'x');
ok(cache_it('/inv'), 'cached');
for my $m (qw(OPTIONS PROPFIND)) {
    my $r = $n->request($m, '/inv');
    is($r->{status}, 200, "a successful $m");
    # one worker, one Redis connection: a DEL sent for the method's
    # response would reach Redis before this GET
    my ($x) = xcache('/inv');
    is($x, 'HIT', "$m (safe) leaves the entry");
}
ok(stored('/inv'), 'still stored after the safe methods');
my $r = $n->request('M-SEARCH', '/inv');
is($r->{status}, 200, 'a successful M-SEARCH');
isnt($r->{headers}{'x-cache'}, 'HIT', 'M-SEARCH is not answered with the stored GET response');
is(($origin->requests('/inv'))[-1]{method}, 'M-SEARCH', 'the origin got M-SEARCH');
ok(wait_until(5, sub { !stored('/inv') }), 'M-SEARCH (unknown, unsafe) removes the entry');
my ($x) = xcache('/inv');
is($x, 'MISS', 'the next GET is a miss');

$origin->set('/inv', headers => ['Cache-Control: max-age=60'], body => 'y');
ok(cache_it('/inv'), 'cached again');
$origin->set('/inv', status => 500, body => 'fail');
$r = $n->request('M-SEARCH', '/inv');
is($r->{status}, 500, 'a failed M-SEARCH');
($x) = xcache('/inv');
is($x, 'HIT', 'a failed unsafe method leaves the entry');

# --- fields named in Connection are hop-by-hop: not stored
$origin->set('/conn', headers => ['Cache-Control: max-age=60', 'Connection: a, B',
                                  'A: 1', 'b: 2', 'C: 3', 'Ab: 4'], body => 'c');
$r = cache_it('/conn');
ok($r, 'a response with Connection: a, B is stored');
ok(!exists $r->{headers}{a}, 'the hit has no A (named in Connection)');
ok(!exists $r->{headers}{b}, 'the hit has no b (named as B: case-insensitive)');
is($r->{headers}{c}, '3', 'the hit has C (not named)');
is($r->{headers}{ab}, '4', 'the hit has Ab (a name that starts like one named)');

# --- no-transform: stored as sent; the compressible control is compressed
my $big = join('', map { "line $_ of a compressible text body\n" } 1 .. 40);
$origin->set('/gz', headers => ['Cache-Control: max-age=60', 'ETag: "g1"'], body => $big);
$r = cache_it('/gz', 'Accept-Encoding' => 'gzip');
is($r->{headers}{'content-encoding'}, 'gzip', 'control: a large text body is stored compressed');
$origin->set('/nt', headers => ['Cache-Control: max-age=60, no-transform', 'ETag: "n1"'],
             body => $big);
$r = cache_it('/nt', 'Accept-Encoding' => 'gzip');
ok($r, 'no-transform: stored');
ok(!exists $r->{headers}{'content-encoding'}, 'no-transform: a gzip client gets it unencoded');
is($r->{headers}{etag}, '"n1"', 'no-transform: the strong ETag');
is($r->{body}, $big, 'no-transform: the body as sent');
ok(!defined $r->{headers}{vary}, 'no-transform: no Vary: Accept-Encoding added');

# --- a small body: not compressed, the hit is the origin's response
$origin->set('/small', headers => ['Cache-Control: max-age=60', 'ETag: "s1"'],
             body => 'small body');
$r = cache_it('/small', 'Accept-Encoding' => 'gzip');
ok($r, 'a 10-byte body: stored');
ok(!exists $r->{headers}{'content-encoding'}, 'a 10-byte body: not compressed');
is($r->{headers}{'content-length'}, '10', 'a 10-byte body: Content-Length 10');
is($r->{headers}{etag}, '"s1"', 'a 10-byte body: the strong ETag');
$r = $n->get('/small', 'If-None-Match' => '"s1"', 'Accept-Encoding' => 'gzip');
is("$r->{status} $r->{headers}{'x-cache'}", '304 HIT', 'a 10-byte body: 304 for its strong ETag');
is($r->{headers}{etag}, '"s1"', 'a 10-byte body: the 304 carries the strong ETag');

# --- CDN-Cache-Control
my @past = ('Expires: Thu, 01 Jan 1970 00:00:01 GMT');
for my $case (
    ['/cdn/a', ['Cache-Control: no-store', 'CDN-Cache-Control: max-age=60'], 1,
     'a valid CDN-Cache-Control replaces Cache-Control: stored'],
    ['/cdn/b', ['Cache-Control: max-age=60', 'CDN-Cache-Control: no-store'], 0,
     'CDN-Cache-Control: no-store wins over Cache-Control'],
    ['/cdn/c', ['CDN-Cache-Control: max-age=60', @past], 1,
     'with it, Expires is ignored'],
    ['/cdn/d', ['Cache-Control: no-store', 'CDN-Cache-Control: max-age="60"'], 0,
     'max-age as a string: the field is ignored, Cache-Control applies'],
    ['/cdn/e', ['Cache-Control: no-store', 'CDN-Cache-Control: max-age=60,'], 0,
     'a trailing comma: invalid, ignored'],
    ['/cdn/f', ['Cache-Control: no-store', 'CDN-Cache-Control: Max-Age=60'], 0,
     'an upper-case key: invalid, ignored'],
    ['/cdn/g', ['Cache-Control: no-store', 'CDN-Cache-Control: max-age=60, foo=(1 2);a=?0, bar=:YWJj:'], 1,
     'unknown members of any type are skipped'],
    ['/cdn/h', ['Cache-Control: no-store', 'CDN-Cache-Control: max-age=60', 'CDN-Cache-Control: private'], 0,
     'two lines are one dictionary (private)'],
    ['/off/i', ['Cache-Control: no-store', 'CDN-Cache-Control: max-age=60'], 0,
     'edge_cache_cdn_cache_control off: Cache-Control applies'],
) {
    my ($path, $h, $store, $what) = @$case;
    $origin->set($path, headers => $h, body => "body of $path");
    if ($store) {
        ok(cache_it($path), $what);
    } else {
        $n->get($path);
        # an ordered barrier: a later store on the same connection landed
        $origin->set("$path-b", headers => ['Cache-Control: max-age=60'], body => 'b');
        ok(wait_until(10, sub { $n->get("$path-b"); stored("$path-b") }), "$what (barrier)");
        ok(!stored($path), $what);
    }
}

$n->stop;
my $log = $n->final_log;
unlike($log, qr/\[(alert|crit|emerg)\]/, 'no alert, crit or emerg') or diag($log);
$origin->stop;

done_testing();
