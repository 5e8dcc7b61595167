# Hostile input: cache keys with invalid UTF-8, control bytes and at the
# length bound; request headers selected by Vary that are huge or not
# UTF-8; Vary lists past the 64-field bound; Accept-Encoding garbage; and
# entries written straight into Redis that would split a response, do not
# inflate, or claim a huge inflated length.  Each request gets a clean
# response (the origin's when the entry is unusable), no worker crashes,
# and memory stays bounded.
use strict;
use warnings;

use Test::More;
use Test::Edge qw(:all);
use Test::Edge::Nginx;
use Test::Edge::Origin;
use Compress::Zlib ();
use Digest::MD5 qw(md5_hex);
use IO::Compress::Gzip qw(gzip $GzipError);
use IO::Socket::INET;
use IO::Uncompress::Gunzip qw(gunzip $GunzipError);
use Time::HiRes qw(time sleep);

my $Valgrind = $Test::Edge::Valgrind::Enabled;

redis_start() unless redis_is_up();
redis_flushall();

my $rport = $ENV{TEST_NGINX_REDIS_PORT};
my $origin = Test::Edge::Origin->start;
my $oport = $origin->port;

my $http = <<"HTTP";
    edge_cache_redis main 127.0.0.1:$rport timeout=1s;
    edge_cache_zone pages redis=main;
    edge_cache_zone hotz redis=main hot=1m hot_max_age=60s;
    large_client_header_buffers 4 16k;
    server {
        listen 127.0.0.1:\$PORT;
        add_header X-Cache \$edge_cache_status always;
        location = /k/ {
            edge_cache pages;
            edge_cache_key \$http_x_key;
            proxy_pass http://127.0.0.1:$oport/hostile;
        }
        location /v/ {
            edge_cache pages;
            edge_cache_key \$uri;
            proxy_pass http://127.0.0.1:$oport;
        }
        location /z/ {
            edge_cache pages;
            edge_cache_key \$uri;
            edge_cache_compress on;
            edge_cache_compress_types text/plain;
            proxy_pass http://127.0.0.1:$oport;
        }
        location /e/ {
            edge_cache pages;
            edge_cache_key \$uri;
            proxy_pass http://127.0.0.1:$oport;
        }
        location /h/ {
            edge_cache hotz;
            edge_cache_key \$uri;
            add_header X-Cache \$edge_cache_status always;
            add_header X-Tier \$edge_cache_tier always;
            proxy_pass http://127.0.0.1:$oport;
        }
    }
HTTP

my $n = Test::Edge::Nginx->start(http => $http, workers => 1);

sub rkey { 'pages:{' . md5_hex($_[0]) . '}' }

# a raw request (header values as bytes); the raw answer, parsed
sub raw_get {
    my ($path, @headers) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $n->port,
                                  Timeout => 10) or die "connect: $!";
    my $req = "GET $path HTTP/1.0\r\nHost: localhost\r\n";
    while (my ($k, $v) = splice @headers, 0, 2) {
        $req .= "$k: $v\r\n";
    }
    print $s "$req\r\n";
    local $/;
    my $raw = <$s> // '';
    close $s;
    my ($head, $body) = split /\r\n\r\n/, $raw, 2;
    my ($st) = ($head // '') =~ m{^HTTP/1\.\d (\d+)};
    my (%h, %count);
    for (split /\r\n/, $head // '') {
        next unless /^([^:]+):\s*(.*)$/;
        $h{lc $1} = $2;
        $count{lc $1}++;
    }
    return { status => $st // 0, headers => \%h, count => \%count,
             body => $body // '', head => $head // '' };
}

sub show {
    my $r = raw_get(@_);
    return "$r->{status} " . ($r->{headers}{'x-cache'} // '-') . " $r->{body}";
}

sub worker_status {
    my ($field) = @_;
    my ($pid) = $n->worker_pids;
    open my $fh, '<', "/proc/$pid/status" or return 0;
    my ($kb) = join('', <$fh>) =~ /^\Q$field\E:\s*(\d+) kB/m;
    return $kb // 0;
}

$origin->set('/hostile', headers => ['Cache-Control: max-age=60'], body => 'origin');

# ready: connected to Redis
ok(wait_until(10, sub { raw_get('/k/', 'X-Key', 'warm');
                        show('/k/', 'X-Key', 'warm') eq '200 HIT origin' }),
   'ready: a hit');

my $rss0 = worker_status('VmRSS');

# --- 4a. hostile cache keys
for my $case (["invalid UTF-8", "caf\xc3\x28\xff\xfe"],
              ["control bytes", "a\x01b\x1fc\x7fd\x1b[0m"],
              ["4096 bytes", 'k' x 4096]) {
    my ($name, $key) = @$case;
    my $before = $origin->hits('/hostile');
    is(show('/k/', 'X-Key', $key), '200 MISS origin', "key with $name: MISS");
    ok(wait_until(10, sub { show('/k/', 'X-Key', $key) eq '200 HIT origin' }),
       "key with $name: then a HIT");
    my $e = redis_command('GET', rkey($key));
    ok(defined $e && index($e, $key) >= 0, "key with $name: stored under md5(key), holding the key");
}
{
    my $key = 'k' x 4097;
    my $before = $origin->hits('/hostile');
    is(show('/k/', 'X-Key', $key), '200 BYPASS origin', 'key of 4097 bytes: BYPASS');
    is(show('/k/', 'X-Key', $key), '200 BYPASS origin', 'and again (never stored)');
    is($origin->hits('/hostile') - $before, 2, 'both went to the origin');
    ok(!defined redis_command('GET', rkey($key)), 'nothing under its md5');
    like($n->log, qr/a key of 4097 bytes is not cached/, 'the log says why');
}
is(show('/k/'), '200 BYPASS origin', 'an empty key: BYPASS');

# --- 4b. a Vary-selected request header: huge, not UTF-8
$origin->set('/v/big', headers => ['Cache-Control: max-age=60', 'Vary: X-Big'],
             body => 'varied');
{
    my $big = 'b' x 12000;          # fits large_client_header_buffers 16k
    my $before = $origin->hits('/v/big');
    is(show('/v/big', 'X-Big', $big), '200 MISS varied', 'a 12000-byte X-Big: answered');
    is(show('/v/big', 'X-Big', $big), '200 MISS varied',
       'and not stored (its Vary values exceed 4096 bytes): a miss again');
    is($origin->hits('/v/big') - $before, 2, 'both from the origin');
    is(show('/v/big', 'X-Big', 'small'), '200 MISS varied', 'a small X-Big: MISS');
    ok(wait_until(10, sub { show('/v/big', 'X-Big', 'small') eq '200 HIT varied' }),
       'then HIT (the variant works)');
    is(show('/v/big', 'X-Big', $big), '200 MISS varied',
       'the huge value still misses, beside a stored variant');
    my $r = raw_get('/v/big', 'X-Big', 'b' x 17000);
    is($r->{status}, 400, 'a header past large_client_header_buffers: nginx\'s 400');
    my $bad = "\xff\xfe\xc3\x28\x01";
    is(show('/v/big', 'X-Big', $bad), '200 MISS varied', 'X-Big not UTF-8: MISS');
    ok(wait_until(10, sub { show('/v/big', 'X-Big', $bad) eq '200 HIT varied' }),
       'then its own variant is hit');
    is(show('/v/big', 'X-Big', "\xff\xfe\xc3\x29\x01"), '200 MISS varied',
       'another invalid value does not hit it');
}

# --- 4c. many Vary fields: the rfc code takes 64 distinct fields at most
for my $nf (64, 65) {
    my @names = map { "X-F$_" } 1 .. $nf;
    my $path = "/v/many$nf";
    $origin->set($path, headers => ['Cache-Control: max-age=60',
                                    'Vary: ' . join(', ', @names)],
                 body => "fields $nf");
    my @req = map { ($_ => 'v') } @names;
    is(show($path, @req), "200 MISS fields $nf", "Vary with $nf fields: MISS");
    if ($nf == 64) {
        ok(wait_until(10, sub { show($path, @req) eq "200 HIT fields $nf" }),
           '64 fields: stored and hit');
    } else {
        my $before = $origin->hits($path);
        is(show($path, @req), "200 MISS fields $nf",
           '65 fields: not stored (as Vary: *), a miss again');
        is($origin->hits($path) - $before, 1, 'to the origin');
        ok(!defined redis_command('GET', rkey($path)), 'nothing under its key');
    }
}
{
    # one field named 400 times: one field (2800 bytes: the response
    # header still fits proxy_buffer_size, or nginx answers 502 itself)
    my $path = '/v/same';
    $origin->set($path, headers => ['Cache-Control: max-age=60',
                                    'Vary: ' . join(',', ('X-Same') x 400)],
                 body => 'same');
    is(show($path, 'X-Same', 'a'), '200 MISS same', 'Vary naming one field 400 times: MISS');
    ok(wait_until(10, sub { show($path, 'X-Same', 'a') eq '200 HIT same' }),
       'then HIT (duplicates count once)');
}

# --- 4d. Accept-Encoding garbage on a compressed entry
{
    my $text = join '', map { "line $_ of the text\n" } 1 .. 200;
    $origin->set('/z/t', headers => ['Cache-Control: max-age=60'], body => $text);
    is(show('/z/t'), "200 MISS $text", 'a compressible answer: MISS');
    ok(wait_until(10, sub { show('/z/t') eq "200 HIT $text" }), 'stored (gzip) and hit');
    my @garbage = ('gzip;q=0', 'gzip;q=abc', 'gzip;q=0.0000000001',
                   "\xff\xfe\x80", ',,,,,,', ';;;;',
                   'GZIP', 'x-gzip', 'gzip' x 2000, join(',', ('br') x 1500),
                   'identity;q=0, *;q=0', '*', "gzip\x01", 'gzip ; q = 1 , ',
                   'q=1;gzip');
    # where the answer is not a matter of taste: the encoding it must get
    my %want = ('gzip;q=0' => 'plain', 'identity;q=0, *;q=0' => 'plain',
                ',,,,,,' => 'plain', ';;;;' => 'plain', 'GZIP' => 'gzip',
                "\xff\xfe\x80" => 'plain', join(',', ('br') x 1500) => 'plain');
    my $bad = 0;
    for my $ae (@garbage) {
        my $r = raw_get('/z/t', 'Accept-Encoding', $ae);
        my $body = $r->{body};
        if (($r->{headers}{'content-encoding'} // '') eq 'gzip') {
            my $out;
            gunzip(\$body => \$out) or $out = "gunzip failed: $GunzipError";
            $body = $out;
        }
        my $got = ($r->{headers}{'content-encoding'} // '') eq 'gzip' ? 'gzip' : 'plain';
        my $ok = $r->{status} == 200 && ($r->{headers}{'x-cache'} // '') eq 'HIT'
                 && (!$want{$ae} || $want{$ae} eq $got)
                 && $body eq $text
                 && ($r->{headers}{'content-length'} // -1) == length $r->{body};
        $bad++, diag("Accept-Encoding '" . substr($ae, 0, 40) . "' ($got): $r->{head}")
            unless $ok;
    }
    is($bad, 0, scalar(@garbage) . ' garbage Accept-Encoding values: each a clean HIT'
       . ' whose body is the text (gzip or not, as its headers say; q=0 and'
       . ' no gzip token: plain)');
}

# --- 5. entries written straight into Redis
sub entry {
    my (%e) = @_;
    my $now = int(time * 1000);
    my $key = $e{key};
    my $headers = $e{headers} // "Content-Type: text/plain\r\n";
    my $body = $e{body} // '';
    my $flags = $e{flags} // 0;
    my $raw = $e{raw_len} // length $body;
    my $fixed = pack('a4 C C n Q> Q> Q> Q> Q> Q> N N N N N N N',
                     'NXEC', 1, $flags, $e{status} // 200, $now, 0, 60000,
                     0, 0, 7, length $key, 0, 0, 0, length $headers,
                     length $body, $raw);
    my $crc = Compress::Zlib::crc32($fixed . "\0\0\0\0" . $key . $headers);
    $crc = ($crc + 1) & 0xffffffff if $e{bad_crc};
    return $fixed . pack('N', $crc) . $key . $headers . $body;
}

my $case = 0;
sub plant {
    my (%e) = @_;
    my $path = '/e/' . ++$case;
    $origin->set($path, headers => ['Cache-Control: max-age=60'], body => 'origin');
    is(redis_command('SET', rkey($path), entry(key => $path, %e)), 'OK',
       "entry $case planted");
    return $path;
}

{
    my $p = plant(headers => "Content-Type: text/plain\r\nX-Mine: yes\r\n",
                  body => 'planted');
    my $r = raw_get($p);
    is("$r->{status} $r->{headers}{'x-cache'} $r->{body} " . ($r->{headers}{'x-mine'} // '-'),
       '200 HIT planted yes', 'a well-formed planted entry is served (the builder is right)');
    $p = plant(headers => "X-Mine: yes\r\n", body => 'planted', bad_crc => 1);
    is(show($p), '200 MISS origin', 'the same with a wrong CRC: a miss');
}

for my $inj (["a LF in a value", "X-A: b\nX-Injected: 1\r\n"],
             ["a CR in a value", "X-A: b\rX-Injected: 1\r\n"],
             ["a CR LF CR LF in a value", "X-A: b\r\n\r\nX-Injected: 1\r\n"],
             ["a NUL in a value", "X-A: b\0X-Injected: 1\r\n"],
             ["a space in a name", "X Injected: 1\r\n"],
             ["a name ending in CR", "X-Injected\r: 1\r\n"],
             ["no space after the colon", "X-Injected:1\r\n"],
             ["a line without CR LF", "X-Injected: 1"],
             ["an empty name", ": 1\r\n"]) {
    my ($name, $headers) = @$inj;
    my $p = plant(headers => $headers, body => 'planted');
    my $r = raw_get($p);
    is("$r->{status} " . ($r->{headers}{'x-cache'} // '-') . " $r->{body}",
       '200 MISS origin', "header with $name (CRC resealed): a miss, the origin's answer");
    unlike($r->{head}, qr/Injected/i, "$name: nothing of it in the response");
}
like($n->log, qr/entry for "\/e\/\d+" ignored: a malformed header line/,
     'the log says why');

# fields the cache computes itself must not come from an entry
for my $f (["Content-Length: 3\r\n", 'content-length'],
           ["Transfer-Encoding: chunked\r\n", 'transfer-encoding'],
           ["Connection: keep-alive\r\n", 'connection']) {
    my ($line, $name) = @$f;
    my $p = plant(headers => "Content-Type: text/plain\r\n$line", body => 'planted body');
    my $r = raw_get($p);
    is($r->{status}, 200, "an entry with $name: answered");
    ok(($r->{count}{$name} // 0) <= 1, "$name: at most once in the response")
        or diag($r->{head});
    is($r->{headers}{'content-length'} // length($r->{body}), length($r->{body}),
       "$name: Content-Length (if any) is the body's length")
        or diag($r->{head});
    ok(($r->{headers}{'transfer-encoding'} // '') !~ /chunked/i,
       "$name: not chunked (HTTP/1.0 client)") or diag($r->{head});
}

# gzip bodies that do not inflate as the entry says
{
    my $text = 'inflated ' x 100;
    my $gz;
    gzip(\$text => \$gz) or die $GzipError;
    my $vmpeak0 = worker_status('VmPeak');
    for my $g (["a body that is not gzip", 'this is not gzip at all', 100],
               ["a gzip body cut short", substr($gz, 0, length($gz) - 10), length $text],
               ["a raw length too small", $gz, length($text) - 1],
               ["a raw length too large", $gz, length($text) + 1],
               ["a raw length of 2 GiB", $gz, 0x80000000],
               ["a raw length of 4 GiB - 1", $gz, 0xffffffff]) {
        my ($name, $body, $raw) = @$g;
        my $p = plant(flags => 1, body => $body, raw_len => $raw);
        is(show($p), '200 MISS origin', "gzip entry with $name, plain client: a miss");
    }
    my $grew = worker_status('VmPeak') - $vmpeak0;
    cmp_ok($grew, '<', 256 * 1024,
           "no huge allocation: the worker's peak size grew by $grew kB");
    like($n->log, qr/a stored body does not inflate/, 'the log says why');
    like($n->log, qr/a stored body claims 4294967295 bytes inflated, more than edge_cache_max_size/,
         'and for the claims: more than edge_cache_max_size');
    my $p = plant(flags => 1, body => $gz, raw_len => length $text);
    is(show($p), "200 HIT $text", 'the same entry with its true length: a hit, inflated');
    my $r = raw_get($p, 'Accept-Encoding', 'gzip');
    is("$r->{status} " . ($r->{headers}{'content-encoding'} // '-') . ' '
       . ($r->{body} eq $gz ? 'the gzip body' : 'another body'),
       '200 gzip the gzip body', 'and a gzip client gets it as stored');
}

# the same entries through a zone with a hot tier (the L1 copy of an L2
# hit): refused alike, and a good one is served from both tiers
{
    my $text = 'inflated ' x 100;
    my $gz;
    gzip(\$text => \$gz) or die $GzipError;
    my $i = 0;
    my $hot = sub {
        my (%e) = @_;
        my $path = '/h/' . ++$i;
        $origin->set($path, headers => ['Cache-Control: max-age=60'], body => 'origin');
        redis_command('SET', 'hotz:{' . md5_hex($path) . '}', entry(key => $path, %e));
        return $path;
    };
    my $vmpeak0 = worker_status('VmPeak');
    for my $c (["Content-Length in the headers",
                headers => "Content-Length: 3\r\n", body => 'planted body'],
               ["a LF in a value", headers => "X-A: b\nX-Injected: 1\r\n",
                body => 'planted'],
               ["a body that is not gzip", flags => 1, body => 'not gzip',
                raw_len => 100],
               ["a raw length of 4 GiB - 1", flags => 1, body => $gz,
                raw_len => 0xffffffff]) {
        my ($name, %e) = @$c;
        my $p = $hot->(%e);
        is(show($p), '200 MISS origin', "hot zone, an entry with $name: a miss");
        is(show($p) =~ /^200 (?:MISS|HIT) origin$/ ? 'origin' : 'other', 'origin',
           "hot zone, $name: then the origin's answer (stored) only");
    }
    my $grew = worker_status('VmPeak') - $vmpeak0;
    cmp_ok($grew, '<', 256 * 1024, "hot zone: the worker's peak size grew by $grew kB");
    my $p = $hot->(flags => 1, body => $gz, raw_len => length $text);
    my @tiers = map { my $r = raw_get($p);
                      "$r->{status} $r->{headers}{'x-cache'} "
                      . ($r->{headers}{'x-tier'} // '-') . ' '
                      . ($r->{body} eq $text ? 'text' : 'other') } 1 .. 2;
    is_deeply(\@tiers, ['200 HIT l2 text', '200 HIT l1 text'],
              'hot zone, a good gzip entry: hit from Redis, then from the hot tier');
}

# --- bounded memory, no crash
if (!$Valgrind) {
    my $rss1 = worker_status('VmRSS');
    cmp_ok($rss1 - $rss0, '<', 32 * 1024,
           "the worker's RSS grew by " . ($rss1 - $rss0) . ' kB over the hostile requests');
}

$n->stop;
my $log = $n->final_log;
unlike($log, qr/exited on signal/, 'no worker crashed');
unlike($log, qr/\[(alert|crit|emerg)\]/, 'no alert, crit or emerg')
    or diag(join "\n", grep { /\[(alert|crit|emerg)\]/ } split /\n/, $log);
unlike($log, qr/open socket .* left/, 'no socket left open at exit');
$origin->stop;

done_testing();
