# ngx_http_cache_module, the core: a response is stored in Redis on a miss
# and served from it on a hit, byte for byte; what must not be stored is
# not; entries that are not ours, or broken, are misses; Redis down is a
# miss, never an error; two nginx instances share the entries.
use strict;
use warnings;

use Test::More;
use Test::Edge qw(:all);
use Test::Edge::Nginx;
use Digest::MD5 qw(md5_hex);
use IO::Socket::INET;
use IO::Uncompress::Gunzip qw(gunzip $GunzipError);

redis_start() unless redis_is_up();
redis_flushall();

my $rport = $ENV{TEST_NGINX_REDIS_PORT};

# the origin is a server of the same nginx: each answer carries
# $request_id, so a test tells a stored copy from a new answer
my $http = <<"HTTP";
    edge_cache_redis main 127.0.0.1:$rport timeout=300ms;
    edge_cache_zone pages redis=main;
    server {
        listen 127.0.0.1:\$PORT;
        large_client_header_buffers 4 256k;
        location /c/ {
            edge_cache pages;
            edge_cache_key \$request_uri;
            edge_cache_max_size 64k;
            edge_cache_valid 200 30s;
            edge_cache_bypass \$arg_bypass;
            edge_cache_no_store \$arg_nostore;
            edge_cache_status_header on;
            add_header X-Cache \$edge_cache_status always;
            add_header X-Tier \$edge_cache_tier always;
            proxy_pass http://127.0.0.1:\$PORT/o/;
        }
        location /o/ {
            default_type application/json;
            add_header Cache-Control "max-age=60";
            add_header ETag '"v1"';
            # over 256 bytes: smaller bodies are not compressed
            return 200 '{"id":"\$request_id","pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}';
        }
        location /o/nostore { add_header Cache-Control "no-store";
                              return 200 "\$request_id"; }
        location /o/private { add_header Cache-Control "private, max-age=60";
                              return 200 "\$request_id"; }
        location /o/cookie { add_header Cache-Control "max-age=60";
                             add_header Set-Cookie "s=1";
                             return 200 "\$request_id"; }
        location /o/plain { default_type text/plain; return 200 "\$request_id"; }
        location /o/lang {
            default_type text/plain;
            add_header Cache-Control "max-age=60";
            add_header Vary "Accept-Language";
            return 200 "\$http_accept_language \$request_id";
        }
        location /o/big {
            default_type text/plain;
            add_header Cache-Control "max-age=60";
            return 200 "\$http_x_fill\$request_id";
        }
        location /o/png {
            default_type image/png;
            add_header Cache-Control "max-age=60";
            return 200 "PNG\$request_id";
        }
        location /o/lm {
            default_type text/plain;
            add_header Cache-Control "max-age=60";
            add_header Last-Modified "Tue, 01 Sep 2026 10:00:00 GMT";
            return 200 "\$request_id";
        }
    }
HTTP

my $nginx = Test::Edge::Nginx->start(http => $http, workers => 2);

sub fetch {
    my ($path, %h) = @_;
    my $r = $nginx->get($path, %h);
    return ($r->{status}, $r->{headers}{'x-cache'} // '-', $r->{body}, $r);
}

sub rkey { 'pages:{' . md5_hex($_[0]) . '}' }

# a worker answers MISS without Redis until it has connected: wait for the
# first store to be readable, then begin
ok(wait_until(10, sub { fetch('/c/warm'); defined redis_command('GET', rkey('/c/warm')) }),
   'the first response is stored in Redis');

# --- a miss, then hits with the same bytes
my ($st, $xc, $body, $r) = fetch('/c/a');
is("$st $xc", '200 MISS', 'first request: a miss');
like($r->{headers}{'cache-status'}, qr/^edge; fwd=uri-miss; stored$/, 'Cache-Status says stored');
my $first = $body;
ok(wait_until(5, sub { defined redis_command('GET', rkey('/c/a')) }), 'stored under its key');
($st, $xc, $body, $r) = fetch('/c/a');
is("$st $xc", '200 HIT', 'second request: a hit');
is($body, $first, 'the hit has the stored body, byte for byte');
is($r->{headers}{'x-tier'}, 'l2', 'from Redis');
like($r->{headers}{age}, qr/^\d+$/, 'Age is sent');
is($r->{headers}{etag}, '"v1"', 'the ETag is the origin\'s, strong for identity');
is($r->{headers}{'content-type'}, 'application/json', 'Content-Type kept');
is($r->{headers}{'content-length'}, length $first, 'Content-Length of the body sent');
like($r->{headers}{'cache-status'}, qr/^edge; hit; ttl=\d+$/, 'Cache-Status: hit');
{
    my $raw = $nginx->get('/c/a');
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $nginx->port) or die;
    print $s "GET /c/a HTTP/1.0\r\nHost: x\r\n\r\n";
    local $/; my $resp = <$s>;
    my ($head) = split /\r\n\r\n/, $resp, 2;
    my @ar = $head =~ /^Accept-Ranges:/mig;
    is(scalar @ar, 1, 'one Accept-Ranges header on a hit');
}

# --- gzip: stored compressed, sent as stored to gzip clients, inflated
# for the others, the same bytes once decoded
my $g = $nginx->get('/c/a', 'Accept-Encoding' => 'gzip, deflate');
is($g->{headers}{'content-encoding'}, 'gzip', 'a gzip client gets gzip');
is($g->{headers}{etag}, 'W/"v1"', 'with a weak ETag');
like($g->{headers}{vary}, qr/Accept-Encoding/i, 'and Vary: Accept-Encoding');
my $plain;
gunzip(\$g->{body} => \$plain) or diag $GunzipError;
is($plain, $first, 'gzip body decodes to the identity body');
$g = $nginx->get('/c/a', 'Accept-Encoding' => 'gzip;q=0, br');
ok(!exists $g->{headers}{'content-encoding'}, 'q=0 for gzip: identity');
is($g->{body}, $first, 'inflated body identical');
my $raw = redis_command('GET', rkey('/c/a'));
like(substr($raw, 0, 5), qr/^NXEC\x01/, 'the entry has our magic and version 1');

# an incompressible type is stored as is
fetch('/c/png');
ok(wait_until(5, sub { defined redis_command('GET', rkey('/c/png')) }), 'png stored');
$g = $nginx->get('/c/png', 'Accept-Encoding' => 'gzip');
ok(!exists $g->{headers}{'content-encoding'}, 'image/png is not compressed');
is($g->{headers}{'x-cache'}, 'HIT', 'and is a hit');

# --- conditional requests answered from the cache
$r = $nginx->get('/c/a', 'If-None-Match' => '"v1"');
is("$r->{status} $r->{headers}{'x-cache'}", '304 HIT', 'If-None-Match: 304 from the cache');
is($r->{body}, '', '304 without a body');
$r = $nginx->get('/c/a', 'If-None-Match' => 'W/"v1"');
is($r->{status}, 304, 'weak comparison: W/"v1" matches');
$r = $nginx->get('/c/a', 'If-None-Match' => '"v2"');
is($r->{status}, 200, 'another ETag: 200');
fetch('/c/lm');
ok(wait_until(5, sub { defined redis_command('GET', rkey('/c/lm')) }), 'lm stored');
$r = $nginx->get('/c/lm', 'If-Modified-Since' => 'Tue, 01 Sep 2026 10:00:00 GMT');
is($r->{status}, 304, 'If-Modified-Since at Last-Modified: 304');
$r = $nginx->get('/c/lm', 'If-Modified-Since' => 'Mon, 31 Aug 2026 10:00:00 GMT');
is($r->{status}, 200, 'If-Modified-Since before Last-Modified: 200');
$r = $nginx->get('/c/lm', 'If-None-Match' => '"nope"',
                 'If-Modified-Since' => 'Tue, 01 Sep 2026 10:00:00 GMT');
is($r->{status}, 200, 'If-None-Match wins over If-Modified-Since');

# --- HEAD on a hit: the headers only
$r = $nginx->request('HEAD', '/c/a');
is("$r->{status} $r->{headers}{'x-cache'}", '200 HIT', 'HEAD: a hit');
is($r->{body}, '', 'HEAD: no body');

# --- not stored
for my $case (['/c/nostore', 'no-store'], ['/c/private', 'private'],
              ['/c/cookie', 'Set-Cookie']) {
    my ($p, $why) = @$case;
    my (undef, $x1, $b1) = fetch($p);
    my (undef, $x2, $b2) = fetch($p);
    is("$x1 $x2", 'MISS MISS', "$why: never a hit");
    isnt($b1, $b2, "$why: each answer from the origin");
    ok(!defined redis_command('GET', rkey($p)), "$why: nothing in Redis");
}

# edge_cache_valid stores a response without freshness of its own
fetch('/c/plain');
ok(wait_until(5, sub { defined redis_command('GET', rkey('/c/plain')) }),
   'no Cache-Control, edge_cache_valid 200 30s: stored');
($st, $xc) = fetch('/c/plain');
is($xc, 'HIT', 'and served');

# bypass: read from the origin, still stored; no_store: not stored
fetch('/c/b?x=1');
ok(wait_until(5, sub { defined redis_command('GET', rkey('/c/b?x=1')) }), 'b stored');
my (undef, $xb) = fetch('/c/b?x=1&bypass=1');
is($xb, 'BYPASS', 'edge_cache_bypass: BYPASS');
fetch('/c/n?nostore=1');
fetch('/c/n?nostore=1');
ok(!defined redis_command('GET', rkey('/c/n?nostore=1')), 'edge_cache_no_store: not stored');

# --- Vary: one entry per variant, each a hit for its own requests
my (undef, $v1, $en) = fetch('/c/lang', 'Accept-Language' => 'en');
ok(wait_until(5, sub { defined redis_command('GET', rkey('/c/lang')) }), 'en stored');
my (undef, $v2, $fr) = fetch('/c/lang', 'Accept-Language' => 'fr');
is("$v1 $v2", 'MISS MISS', 'two languages: two misses');
like($fr, qr/^fr /, 'fr from the origin');
# the fr variant is stored under its own key (and the main key)
ok(wait_until(5, sub { (fetch('/c/lang', 'Accept-Language' => 'fr'))[1] eq 'HIT' }),
   'fr: a hit');
my (undef, $v3, $en2) = fetch('/c/lang', 'Accept-Language' => 'en');
is($v3, 'HIT', 'en: still a hit (its variant key)');
is($en2, $en, 'en: the en body');
(undef, $v3, my $fr2) = fetch('/c/lang', 'Accept-Language' => 'fr');
like($fr2, qr/^fr /, 'fr: the fr body');
(undef, $v3) = fetch('/c/lang', 'Accept-Language' => 'de');
is($v3, 'MISS', 'de: a miss');

# --- the size cap
my $fill = 'x' x 70000;
fetch('/c/big?1', 'X-Fill' => $fill);
my (undef, $xbig, $bbig) = fetch('/c/big?1', 'X-Fill' => $fill);
is($xbig, 'MISS', 'a body over edge_cache_max_size is not stored');
is(length $bbig, 70000 + 32, 'and is sent whole');
ok(!defined redis_command('GET', rkey('/c/big?1')), 'nothing in Redis');
fetch('/c/big?2', 'X-Fill' => 'x' x 1000);
ok(wait_until(5, sub { defined redis_command('GET', rkey('/c/big?2')) }),
   'a small one is stored');
# a key longer than the entry format's bound: never looked up
my (undef, $xlong) = fetch('/c/a?' . ('k' x 5000));
is($xlong, 'BYPASS', 'a key over 4096 bytes: BYPASS');

# --- entries that are not ours or are broken: misses, then overwritten
my $good = redis_command('GET', rkey('/c/a'));
my %bad = (
    'foreign'      => 'hello world',
    'empty'        => '',
    'truncated'    => substr($good, 0, length($good) - 5),
    'header only'  => substr($good, 0, 60),
    'old version'  => 'NXEC' . "\x00" . substr($good, 5),
    'flipped byte' => do { my $x = $good; substr($x, 90, 1) ^= "\x01"; $x },
    'huge lengths' => do { my $x = $good; substr($x, 56, 4) = "\xff\xff\xff\xff"; $x },
);
for my $name (sort keys %bad) {
    redis_command('SET', rkey('/c/a'), $bad{$name});
    my ($s1, $x1, $b1) = fetch('/c/a');
    is("$s1 $x1", '200 MISS', "$name entry: a miss, not an error");
    like($b1, qr/^\{"id":"[0-9a-f]{32}","pad":"x+"\}$/, "$name entry: the origin's body");
    # not the bad bytes: a flipped byte still looks like an entry, and the
    # store's SET must have landed before the next bad entry is written
    ok(wait_until(5, sub { my $v = redis_command('GET', rkey('/c/a'));
                           defined $v && $v ne $bad{$name}
                           && $v =~ /^NXEC\x01/ && length($v) > 90 }),
       "$name entry: overwritten by a good one");
}
# an entry of another key under this key's name (as after an MD5
# collision): a miss
redis_command('SET', rkey('/c/a'), redis_command('GET', rkey('/c/plain')));
($st, $xc) = fetch('/c/a');
is("$st $xc", '200 MISS', 'an entry holding another key: a miss');

# --- two nginx instances share the entries
my $other = Test::Edge::Nginx->start(http => $http, workers => 1);
fetch('/c/shared');
ok(wait_until(5, sub { defined redis_command('GET', rkey('/c/shared')) }), 'stored by the first');
my $r2;
ok(wait_until(10, sub { $r2 = $other->get('/c/shared'); ($r2->{headers}{'x-cache'} // '') eq 'HIT' }),
   'the second instance hits what the first stored');
is($r2->{body}, (fetch('/c/shared'))[2], 'with the same body');
$other->stop;

# --- Redis down: a miss, never an error; back: hits again
redis_stop();
($st, $xc, $body) = fetch('/c/a');
is("$st $xc", '200 MISS', 'Redis down: a miss, the origin answers');
redis_start();
fetch('/c/back');
ok(wait_until(10, sub { fetch('/c/back'); (fetch('/c/back'))[1] eq 'HIT' }),
   'Redis back: hits again without a reload');

# --- Redis frozen past the timeout: a miss after the timeout
fetch('/c/frozen');
ok(wait_until(5, sub { (fetch('/c/frozen'))[1] eq 'HIT' }), 'frozen: stored first');
redis_freeze();
($st, $xc) = fetch('/c/frozen');
redis_thaw();
is("$st $xc", '200 MISS', 'Redis frozen: a miss after the timeout');

$nginx->stop;
my $log = $nginx->final_log;
unlike($log, qr/\[(alert|crit|emerg)\]/, 'no alert, crit or emerg') or diag($log);
unlike($log, qr/open socket .* left/, 'no socket left open at exit');

done_testing();
