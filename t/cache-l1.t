# ngx_http_cache_module's hot tier (L1, "edge_cache_zone ... hot="): a hit
# from shared memory sends no Redis command, both workers read one zone,
# an L2 hit and a store fill it, a copy is used for hot_max_age at most,
# entries over hot_max_entry are never kept, a small zone evicts its
# least recently used entries without an error, a copy whose body does
# not inflate is dropped, not served, and the zone survives a reload.
use strict;
use warnings;

use Test::More;
use Test::Edge qw(:all);
use Test::Edge::Nginx;
use Test::Edge::Valgrind;
use Digest::MD5 qw(md5_hex);
use File::Temp qw(tempdir);
use Time::HiRes qw(time sleep);
use IO::Uncompress::Gunzip qw(gunzip);

redis_start() unless redis_is_up();
redis_flushall();

my $rport = $ENV{TEST_NGINX_REDIS_PORT};

# "short" keeps a copy 2 s; the others 60 s, so that nothing in a test
# but what it exercises makes a copy too old.  Each answer of the origin
# carries $request_id: a stored copy is told from a new answer.
my $http = <<"HTTP";
    metrics_zone 1m;
    edge_cache_redis main 127.0.0.1:$rport timeout=300ms;
    edge_cache_zone hot redis=main hot=1m hot_max_age=60s hot_max_entry=8k;
    edge_cache_zone short redis=main hot=1m hot_max_age=2s;
    edge_cache_zone lru redis=main hot=1m hot_max_age=60s;
    edge_cache_key \$request_uri;
    edge_cache_valid 200 60s;
    server {
        listen 127.0.0.1:\$PORT reuseport;
        large_client_header_buffers 4 64k;
        add_header X-Cache \$edge_cache_status always;
        add_header X-Tier \$edge_cache_tier always;
        add_header X-Pid \$pid always;
        location = /metrics { metrics; }
        location /h/ { edge_cache hot;   proxy_pass http://127.0.0.1:\$PORT/o/; }
        location /s/ { edge_cache short; proxy_pass http://127.0.0.1:\$PORT/o/; }
        location /l/ { edge_cache lru;   proxy_pass http://127.0.0.1:\$PORT/o/; }
        location /o/ {
            default_type text/plain;
            add_header Cache-Control "max-age=60";
            return 200 "\$request_id";
        }
        # over 256 bytes: smaller bodies are not stored compressed
        location /o/gz {
            default_type text/plain;
            add_header Cache-Control "max-age=60";
            return 200 "\$request_id zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz";
        }
        location /o/big {
            default_type image/png;
            add_header Cache-Control "max-age=60";
            return 200 "\$http_x_fill\$request_id";
        }
        location /o/lang {
            default_type text/plain;
            add_header Cache-Control "max-age=60";
            add_header Vary "Accept-Language";
            return 200 "\$http_accept_language \$request_id";
        }
    }
HTTP

my $nginx = Test::Edge::Nginx->start(http => $http, workers => 2);

sub fetch {
    my ($path, %h) = @_;
    my $r = $nginx->get($path, %h);
    return ($r->{headers}{'x-cache'} // '-') . ' '
         . ($r->{headers}{'x-tier'} // '-'), $r;
}

sub rkey { my ($zone, $key) = @_; "$zone:{" . md5_hex($key) . '}' }
sub in_redis { redis_command('EXISTS', rkey(@_)) }
sub gets { redis_calls('get') }

# a worker stores nothing in Redis until it has connected: wait until
# each of the two has stored an entry
my %stored_by;
my $n = 0;
ok(wait_until(20, sub {
       my $key = '/l/warm' . $n++;
       my (undef, $w) = fetch($key);
       $stored_by{$w->{headers}{'x-pid'}} = 1
           if wait_until(2, sub { in_redis('lru', $key) });
       keys %stored_by >= 2;
   }), 'both workers store in Redis');

# --- a store fills L1; the hits that follow send Redis nothing
my ($x, $r) = fetch('/h/a');
is($x, 'MISS -', 'first request: a miss');
my $body = $r->{body};
ok(wait_until(5, sub { in_redis('hot', '/h/a') }), 'stored in Redis');
redis_command('CONFIG', 'RESETSTAT');
my %tiers;
for (1 .. 10) {
    ($x, $r) = fetch('/h/a');
    $tiers{$x}++;
    $tiers{'another body'}++ if $r->{body} ne $body;
}
is_deeply(\%tiers, { 'HIT l1' => 10 }, 'ten hits from L1, the stored body');
is(gets(), 0, 'an L1 hit sends no GET to Redis');
like($r->{headers}{age}, qr/^\d+$/, 'an L1 hit has an Age');
my $m = $nginx->get('/metrics')->{body};
like($m, qr/^nginx_cache_hits_total\{zone="hot",tier="l1"\} 10$/m,
     'the metrics count ten hits from L1');
unlike($m, qr/^nginx_cache_hits_total\{zone="hot",tier="l2"\} [1-9]/m,
       'and none from Redis');

# --- both workers read the same zone: the hit comes from either
my %pids;
my $all_l1 = 1;
wait_until(20, sub {
    ($x, $r) = fetch('/h/a');
    $all_l1 = 0 unless $x eq 'HIT l1' && $r->{body} eq $body;
    $pids{$r->{headers}{'x-pid'}}++;
    keys %pids >= 2;
});
is(scalar(keys %pids), 2, 'L1 hits from both workers');
ok($all_l1, 'every one of them an L1 hit with the stored body');
is(gets(), 0, 'still no GET');

# a request that wants the origin is not an L1 hit
($x) = fetch('/h/a', 'Cache-Control' => 'no-cache');
isnt($x, 'HIT l1', 'Cache-Control: no-cache in the request: not from L1');

# --- an L2 hit is kept in L1: an entry stored by another nginx
my $other = Test::Edge::Nginx->start(http => $http, workers => 1);
ok(wait_until(10, sub { $other->get('/h/fromother'); in_redis('hot', '/h/fromother') }),
   'another instance stored an entry');
my $theirs = $other->get('/h/fromother')->{body};
redis_command('CONFIG', 'RESETSTAT');
($x, $r) = fetch('/h/fromother');
is("$x $r->{body}", "HIT l2 $theirs", 'read from Redis first');
($x, $r) = fetch('/h/fromother');
is("$x $r->{body}", "HIT l1 $theirs", 'then from L1');
is(gets(), 1, 'one GET for both');

# --- Vary: a variant is found in L1 through the main entry's epoch
my (undef, $en) = fetch('/h/lang', 'Accept-Language' => 'en');
my (undef, $fr) = fetch('/h/lang', 'Accept-Language' => 'fr');
like($fr->{body}, qr/^fr /, 'fr from the origin');
redis_command('CONFIG', 'RESETSTAT');
($x, $r) = fetch('/h/lang', 'Accept-Language' => 'en');
is("$x $r->{body}", "HIT l1 $en->{body}", 'en: from L1, the en body');
($x, $r) = fetch('/h/lang', 'Accept-Language' => 'fr');
is("$x $r->{body}", "HIT l1 $fr->{body}", 'fr: from L1, the fr body');
is(gets(), 0, 'no GET for either variant');
($x) = fetch('/h/lang', 'Accept-Language' => 'de');
is($x, 'MISS -', 'de: a miss');

# --- a successful unsafe method invalidates the URL (RFC 9111 4.4): its
# L1 copies go with the Redis entry
fetch('/h/inv');
ok(wait_until(5, sub { in_redis('hot', '/h/inv') }), 'stored');
my (undef, $inv) = fetch('/h/inv');
is($inv->{headers}{'x-tier'}, 'l1', 'an L1 hit');
is($nginx->request('POST', '/h/inv', body => 'x')->{status}, 200, 'a POST');
ok(wait_until(5, sub { !in_redis('hot', '/h/inv') }), 'removes the Redis entry');
($x, $r) = fetch('/h/inv');
is($x, 'MISS -', 'and the L1 copy: the next GET is a miss');
isnt($r->{body}, $inv->{body}, 'answered by the origin');

# --- hot_max_entry: a larger entry is served from Redis, never from L1
my $fill = 'x' x 9000;
fetch('/h/big1', 'X-Fill' => $fill);
ok(wait_until(5, sub { in_redis('hot', '/h/big1') }), 'a 9000-byte body is stored in Redis');
my @big = map { (fetch('/h/big1', 'X-Fill' => $fill))[0] } 1 .. 3;
is("@big", 'HIT l2 HIT l2 HIT l2', 'an entry over hot_max_entry=8k: L2 hits only');
fetch('/h/big2', 'X-Fill' => 'x' x 6000);
ok(wait_until(5, sub { in_redis('hot', '/h/big2') }), 'a 6000-byte body is stored');
($x) = fetch('/h/big2', 'X-Fill' => 'x' x 6000);
is($x, 'HIT l1', 'an entry under hot_max_entry: an L1 hit');

# --- hot_max_age: a copy is used for 2 s after Redis last gave it
my $t0 = time;
fetch('/s/a');
my $t1 = time;
ok(wait_until(5, sub { in_redis('short', '/s/a') }), 'stored in the 2 s zone');
($x) = fetch('/s/a');
SKIP: {
    skip 'the machine took 2 s to store and ask again', 1 if time - $t0 >= 2;
    is($x, 'HIT l1', 'within hot_max_age: an L1 hit');
}
# the copy was stored before $t1: 2 s later it is too old
sleep(0.05) while time < $t1 + 2.2;
redis_command('CONFIG', 'RESETSTAT');
my $t2 = time;
($x) = fetch('/s/a');
is($x, 'HIT l2', 'past hot_max_age: read from Redis again');
is(gets(), 1, 'with one GET');
($x) = fetch('/s/a');
SKIP: {
    skip 'the machine took 2 s between two requests', 1 if time - $t2 >= 2;
    is($x, 'HIT l1', 'and the copy Redis gave is used again');
}

# --- a copy whose gzip body does not inflate is dropped, not served.
# The body is not covered by the entry's CRC: another instance stores an
# entry (text/plain is stored gzip), its body is broken in Redis, this
# nginx reads it (a gzip client takes the body as stored) and keeps it in
# L1; a client that needs it inflated must get the origin's answer.
ok(wait_until(10, sub { $other->get('/h/gz'); in_redis('hot', '/h/gz') }),
   'another instance stored a gzip entry');
my $entry = redis_command('GET', rkey('hot', '/h/gz'));
substr($entry, length($entry) - 12, 1) ^= "\xff";
redis_command('SET', rkey('hot', '/h/gz'), $entry);
($x) = fetch('/h/gz', 'Accept-Encoding' => 'gzip');
is($x, 'HIT l2', 'the broken entry read from Redis by a gzip client');
my $before = () = $nginx->log =~ /does not inflate/g;
($x, $r) = fetch('/h/gz');
is("$r->{status} $x", '200 MISS -', 'a client without gzip: a miss');
like($r->{body}, qr/^[0-9a-f]{32} z+$/, 'with the origin\'s body');
my $after = () = $nginx->log =~ /does not inflate/g;
is($after - $before, 2, 'refused from L1, then from Redis');
my $fresh = $r->{body};
($x, $r) = fetch('/h/gz');
is("$x $r->{body}", "HIT l1 $fresh", 'the good entry stored replaces the copy');
$other->stop;

# --- a client without gzip is sent the body of a gzip entry inflated
# once per node: the inflated copy kept beside the gzip copy serves the
# next ones (cache_inflated_total counts the inflations, both workers)
sub inflated {
    my $m = $nginx->get('/metrics')->{body};
    return $m =~ /^nginx_cache_inflated_total\{zone="hot"\} (\d+)/m ? $1 : -1;
}
my ($xg, $rg) = fetch('/h/gz/plain', 'Accept-Encoding' => 'gzip');
is($xg, 'MISS -', 'a gzip client\'s miss stores a gzip entry');
my $plain_body = $rg->{body};
ok(wait_until(5, sub { in_redis('hot', '/h/gz/plain') }), 'in Redis');
my $inf0 = inflated();
cmp_ok($inf0, '>=', 0, 'cache_inflated_total is exported');
($x, $r) = fetch('/h/gz/plain');
is("$x $r->{body}", "HIT l1 $plain_body", 'a client without gzip: the copy, inflated');
is(inflated() - $inf0, 1, 'one inflation');
my $same = 1;
for (1 .. 6) {
    my ($x2, $r2) = fetch('/h/gz/plain');
    $same = 0 unless $x2 eq 'HIT l1' && $r2->{body} eq $plain_body
        && !defined $r2->{headers}{'content-encoding'}
        && $r2->{headers}{'content-length'} == length($plain_body)
        && ($r2->{headers}{vary} // '') =~ /Accept-Encoding/
        && ($r2->{headers}{etag} // "") eq ($r->{headers}{etag} // "");
}
ok($same, 'six more: L1 hits, the same body and headers, Vary: Accept-Encoding');
is(inflated() - $inf0, 1, 'and no more inflation');
($x, $r) = fetch('/h/gz/plain', 'Accept-Encoding' => 'gzip');
is("$x " . ($r->{headers}{'content-encoding'} // '-'), 'HIT l1 gzip',
   'a gzip client still gets the gzip copy');
my $gunzipped;
gunzip(\$r->{body} => \$gunzipped);
is($gunzipped, $plain_body, 'whose body inflates to the same bytes');
is($nginx->request('POST', '/h/gz/plain', body => 'x')->{status}, 200, 'a POST');
($x) = fetch('/h/gz/plain');
is($x, 'MISS -', 'invalidates both copies');

# --- a 1m zone and many entries: the least recently used ones go, the
# ones in use stay, no error.  Each entry is about 4 KB (not compressed).
my $lfill = 'y' x 4000;
my @hot = map { "/l/big/hot$_" } 1 .. 3;
fetch($_, 'X-Fill' => $lfill) for @hot;
ok(wait_until(5, sub { !grep { !in_redis('lru', $_) } @hot }), 'three hot entries stored');
my $hot_ok = 1;
for my $i (1 .. 400) {
    fetch("/l/big/cold$i", 'X-Fill' => $lfill);
    next if $i % 20;
    for (@hot) {
        $hot_ok = 0 unless (fetch($_, 'X-Fill' => $lfill))[0] eq 'HIT l1';
    }
}
ok($hot_ok, '400 entries of 4 KB through a 1m zone: the hot ones stay in L1');
ok(wait_until(5, sub { in_redis('lru', '/l/big/cold400') }), 'the last stored');
my @early = map { (fetch("/l/big/cold$_", 'X-Fill' => $lfill))[0] } 1 .. 5;
is("@early", join(' ', ('HIT l2') x 5), 'the first ones were evicted: L2 hits');
($x) = fetch('/l/big/cold400', 'X-Fill' => $lfill);
is($x, 'HIT l1', 'the last one is in L1');
# entries of mixed sizes (500 bytes to 60 KB) fragment the slab pages:
# every answer is still whole, the bodies right, nothing logged as error
srand(7);
my ($mixed_ok, $mixed_l1) = (1, 0);
for my $i (1 .. 150) {
    my $len = 500 + int(rand(60000));
    my $f = 'z' x $len;
    my ($x1, $r1) = fetch("/l/big/mixed$i", 'X-Fill' => $f);
    # the second request may reach the other worker: once in Redis
    wait_until(5, sub { in_redis('lru', "/l/big/mixed$i") });
    my ($x2, $r2) = fetch("/l/big/mixed$i", 'X-Fill' => $f);
    $mixed_ok = 0 unless $r1->{status} == 200 && $r2->{status} == 200
        && length($r2->{body}) == $len + 32 && $r2->{body} eq $r1->{body};
    $mixed_l1++ if $x2 eq 'HIT l1';
}
ok($mixed_ok, '150 entries of mixed sizes: every body whole and the same twice');
cmp_ok($mixed_l1, '>', 0, "and some served from L1 ($mixed_l1 of 150)");
unlike($nginx->log, qr/\[(error|crit|alert)\]/, 'eviction logs no error');

# --- reload: the zone and its entries carry over; with Redis stopped, an
# entry stored before the reload is an L1 hit after it
fetch('/h/reload');
ok(wait_until(5, sub { in_redis('hot', '/h/reload') }), 'stored before the reload');
($x, $r) = fetch('/h/reload');
my $kept = $r->{body};
is($x, 'HIT l1', 'an L1 hit before the reload');
my @old = $nginx->worker_pids;
open my $pf, '<', "$nginx->{prefix}/logs/nginx.pid" or die $!;
chomp(my $master = <$pf>);
close $pf;
kill 'HUP', $master;
ok(wait_until(20, sub { my %o = map { $_ => 1 } @old;
                        my @w = $nginx->worker_pids;
                        @w == 2 && !grep { $o{$_} } @w }),
   'new workers after nginx -s reload');
redis_stop();
($x, $r) = fetch('/h/reload');
is("$x $r->{body}", "HIT l1 $kept", 'Redis stopped, after the reload: an L1 hit');
($x) = fetch('/h/neverseen');
is($x, 'MISS -', 'and a key L1 does not have is a miss, not an error');
redis_start();

$nginx->stop;
my $log = $nginx->final_log;
unlike($log, qr/\[(alert|crit|emerg)\]/, 'no alert, crit or emerg') or diag($log);
unlike($log, qr/open socket .* left/, 'no socket left open at exit');

# --- purges reach L1.  A key purge on a node removes the key's copies
# from that node's L1 for every worker at once; a purge on another node
# is seen through the purge log within purge_poll plus a round trip.
# Node A polls every 60 s, so only the removal can explain what its
# second worker sees; node B polls every 200 ms.  After the purge the
# origin answers with no-store (X-CC), so no new entry hides an old copy.
my $phttp = <<"HTTP";
    edge_cache_redis main 127.0.0.1:$rport timeout=500ms;
    edge_cache_zone pz redis=main hot=1m hot_max_age=60s purge_poll=POLL;
    edge_cache_key \$request_uri;
    edge_cache_valid 200 60s;
    server {
        listen 127.0.0.1:\$PORT reuseport;
        add_header X-Cache \$edge_cache_status always;
        add_header X-Tier \$edge_cache_tier always;
        add_header X-Pid \$pid always;
        location /p/ { edge_cache pz; proxy_pass http://127.0.0.1:\$PORT/o/; }
        location /o/ {
            default_type text/plain;
            add_header Cache-Control \$http_x_cc;
            return 200 "\$request_id";
        }
        location ~ ^/purge(/.*)\$ {
            edge_cache_purge pz;
            edge_cache_key \$1;
            allow 127.0.0.1;
            deny all;
        }
    }
HTTP
(my $ahttp = $phttp) =~ s/POLL/60s/;
(my $bhttp = $phttp) =~ s/POLL/200ms/;
my $na = Test::Edge::Nginx->start(http => $ahttp, workers => 2);
my $nb = Test::Edge::Nginx->start(http => $bhttp, workers => 1);
my $pkey = '/p/k' . int(rand(1e9));
# B must read Redis (an unconnected worker would store its own answer)
my $bw = 0;
ok(wait_until(10, sub { my $k = '/p/warmb' . $bw++; $nb->get($k); in_redis('pz', $k) }),
   'B stores in Redis');
ok(wait_until(10, sub { $na->get($pkey); in_redis('pz', $pkey) }), 'A stored an entry');
my $old = $na->get($pkey)->{body};
# both of A's workers and B serve it from L1 (B read it from Redis once)
my %apids;
ok(wait_until(20, sub {
       my $g = $na->get($pkey);
       $apids{$g->{headers}{'x-pid'}} = 1
           if ($g->{headers}{'x-tier'} // '') eq 'l1' && $g->{body} eq $old;
       keys %apids >= 2;
   }), 'both workers of A: L1 hits');
ok(wait_until(10, sub { my $g = $nb->get($pkey);
                        ($g->{headers}{'x-tier'} // '') eq 'l1' && $g->{body} eq $old }),
   'B: an L1 hit');
my $pr = $na->request('PURGE', "/purge$pkey");
is($pr->{status}, 200, 'key purge on A') or diag($pr->{body});
my $t_purge = time;
my (%after, $old_seen);
wait_until(20, sub {
    my $g = $na->get($pkey, 'X-CC' => 'no-store');
    $old_seen++ if $g->{body} eq $old;
    $after{$g->{headers}{'x-pid'}} = 1;
    keys %after >= 2;
});
is(scalar(keys %after), 2, 'A: requests to both workers after the purge');
ok(!$old_seen, 'A: no worker serves the purged copy from L1');
my $t_seen;
wait_until(20, sub {
    my $g = $nb->get($pkey, 'X-CC' => 'no-store');
    $t_seen = time if $g->{body} ne $old;
    defined $t_seen;
});
ok(defined $t_seen && $t_seen - $t_purge <= 0.2 + 1.0 * $Test::Edge::Valgrind::Slowdown,
   'B: the purged copy is gone from its L1 within purge_poll + margin')
    or diag(defined $t_seen ? sprintf('after %.2f s', $t_seen - $t_purge) : 'never');
$na->stop;
$nb->stop;
unlike($na->final_log . $nb->final_log, qr/\[(error|crit|alert|emerg)\]/,
       'no error on either node');

# --- configuration errors, with nginx -t
sub nginx_t {
    my ($zone) = @_;
    my $dir = tempdir(CLEANUP => 1);
    mkdir "$dir/logs";
    my $modules = join '', map { "load_module $_;\n" }
        split ' ', ($ENV{TEST_NGINX_LOAD_MODULES} // '');
    open my $fh, '>', "$dir/nginx.conf" or die $!;
    print $fh "${modules}error_log $dir/logs/error.log;\npid $dir/nginx.pid;\n"
            . "events {}\nhttp {\n edge_cache_redis main 127.0.0.1:$rport;\n"
            . " $zone\n}\n";
    close $fh;
    my $bin = $ENV{TEST_NGINX_BINARY} || '/usr/sbin/nginx';
    return scalar `$bin -t -p $dir/ -c $dir/nginx.conf 2>&1`;
}
like(nginx_t('edge_cache_zone z redis=main hot=1m;'), qr/test is successful/,
     'hot=1m: accepted');
like(nginx_t('edge_cache_zone z redis=main hot=8k;'), qr/hot zone "hot=8k" is too small/,
     'hot=8k: too small');
like(nginx_t('edge_cache_zone z redis=main hot=1m hot_max_entry=300k;'),
     qr/hot_max_entry=307200 is more than a quarter of hot=1048576/,
     'hot_max_entry over a quarter of the zone: refused');
like(nginx_t('edge_cache_zone z redis=main hot_max_age=5s;'),
     qr/hot_max_age= and hot_max_entry= need hot=/,
     'hot_max_age without hot=: refused');
like(nginx_t('edge_cache_zone z redis=main hot=1m hot_max_age=0;'),
     qr/invalid "hot_max_age=0"/, 'hot_max_age=0: refused');
like(nginx_t('edge_cache_zone z redis=main hot=lots;'),
     qr/invalid hot zone size "hot=lots"/, 'hot=lots: refused');

done_testing();
