# Revalidation (edge_cache_revalidate): a stale entry's validators go to
# the origin; its 304 renews the entry, headers merged, body kept; a 200
# replaces it.  Invalidation: a successful unsafe method on a URL removes
# its entry (RFC 9111 4.4).
use strict;
use warnings;

use Test::More;
use Test::Edge qw(:all);
use Test::Edge::Nginx;
use Test::Edge::Origin;
use Digest::MD5 qw(md5_hex);
use IO::Uncompress::Gunzip qw(gunzip);
use Time::HiRes qw(sleep);

redis_start() unless redis_is_up();
redis_flushall();

my $rport = $ENV{TEST_NGINX_REDIS_PORT};
my $origin = Test::Edge::Origin->start;
my $oport = $origin->port;

my $http = <<"HTTP";
    edge_cache_redis main 127.0.0.1:$rport timeout=1s;
    edge_cache_zone pages redis=main;
    server {
        listen 127.0.0.1:\$PORT;
        edge_cache pages;
        edge_cache_key \$uri;
        edge_cache_revalidate on;
        edge_cache_background_update off;
        add_header X-Cache \$edge_cache_status always;
        location / {
            proxy_pass http://127.0.0.1:$oport;
        }
    }
HTTP

my $n = Test::Edge::Nginx->start(http => $http, workers => 1);

sub rkey { 'pages:{' . md5_hex($_[0]) . '}' }
sub show { my $r = $n->get(@_); return "$r->{status} " . ($r->{headers}{'x-cache'} // '-') . " $r->{body}" }

ok(wait_until(10, sub { $origin->set('/w', headers => ['Cache-Control: max-age=60'], body => 'w');
                        $n->get('/w'); defined redis_command('GET', rkey('/w')) }), 'connected');

# --- ETag: 304 renews the entry
$origin->set('/e', headers => ['Cache-Control: max-age=1', 'ETag: "v1"', 'X-Gen: 1'],
             body => 'body-e', conditional => 1);
is(show('/e'), '200 MISS body-e', 'stored');
ok(wait_until(5, sub { defined redis_command('GET', rkey('/e')) }), 'in Redis');
sleep 1.2;
$origin->set('/e', headers => ['Cache-Control: max-age=60', 'ETag: "v1"', 'X-Gen: 2'],
             body => 'body-e-new', conditional => 1);
my $r = $n->get('/e');
is("$r->{status} $r->{headers}{'x-cache'} $r->{body}", '200 REVALIDATED body-e',
   'stale: revalidated, the stored body');
my @req = $origin->requests('/e');
is($req[-1]{headers}{'if-none-match'}, '"v1"', 'the origin got the stored ETag');
is($r->{headers}{'x-gen'}, '2', 'headers updated from the 304');
is(show('/e'), '200 HIT body-e', 'renewed: a hit (the 304 said max-age=60)');
is($n->get('/e')->{headers}{'x-gen'}, '2', 'with the merged headers stored');
is($origin->hits('/e'), 2, 'two origin requests in all');


# --- Last-Modified
$origin->set('/lm', headers => ['Cache-Control: max-age=1',
                                'Last-Modified: Tue, 01 Sep 2026 10:00:00 GMT'],
             body => 'body-lm', conditional => 1);
is(show('/lm'), '200 MISS body-lm', 'stored');
ok(wait_until(5, sub { defined redis_command('GET', rkey('/lm')) }), 'in Redis');
sleep 1.2;
$origin->set('/lm', headers => ['Cache-Control: max-age=60',
                                'Last-Modified: Tue, 01 Sep 2026 10:00:00 GMT'],
             body => 'changed', conditional => 1);
is(show('/lm'), '200 REVALIDATED body-lm', 'If-Modified-Since: revalidated');
@req = $origin->requests('/lm');
is($req[-1]{headers}{'if-modified-since'}, 'Tue, 01 Sep 2026 10:00:00 GMT',
   'the origin got the stored Last-Modified');

# --- the origin answers 200: a new entry
$origin->set('/c', headers => ['Cache-Control: max-age=1', 'ETag: "a"'],
             body => 'old', conditional => 1);
show('/c');
ok(wait_until(5, sub { defined redis_command('GET', rkey('/c')) }), 'in Redis');
sleep 1.2;
$origin->set('/c', headers => ['Cache-Control: max-age=60', 'ETag: "b"'],
             body => 'new', conditional => 1);
is(show('/c'), '200 EXPIRED new', 'changed at the origin: its 200');
ok(wait_until(5, sub { show('/c') eq '200 HIT new' }), 'stored');

# --- a client with its own conditional: the origin gets the client's
$origin->set('/own', headers => ['Cache-Control: max-age=1', 'ETag: "o1"'],
             body => 'own', conditional => 1);
show('/own');
ok(wait_until(5, sub { defined redis_command('GET', rkey('/own')) }), 'in Redis');
sleep 1.2;
$r = $n->get('/own', 'If-None-Match' => '"other"');
is($r->{status}, 200, 'a client conditional that does not match: 200');
@req = $origin->requests('/own');
is($req[-1]{headers}{'if-none-match'}, '"other"', 'the origin got the client\'s validator, not the cache\'s');

# --- only-if-cached: 504 on a miss, the entry on a hit
$origin->set('/oic', headers => ['Cache-Control: max-age=60'], body => 'oic');
my $before = $origin->hits('/oic');
$r = $n->get('/oic', 'Cache-Control' => 'only-if-cached');
is($r->{status}, 504, 'only-if-cached, nothing stored: 504');
is($origin->hits('/oic'), $before, 'and the origin was not asked');
show('/oic');
ok(wait_until(5, sub { $n->get('/oic', 'Cache-Control' => 'only-if-cached')->{status} == 200 }),
   'only-if-cached, stored: 200 from the cache');

# --- If-Modified-Since without Last-Modified: the stored Date
# (a Date months old: max-age of a year, and the age counts from that Date)
$origin->set('/nolm', headers => ['Cache-Control: max-age=31536000',
                                  'Date: Tue, 01 Sep 2026 10:00:00 GMT'], body => 'd');
show('/nolm');
ok(wait_until(5, sub { show('/nolm') eq '200 HIT d' }), 'stored');
cmp_ok($n->get('/nolm')->{headers}{age}, '>=', 86400 * 80,
       'Age counts from the origin\'s Date (apparent age, RFC 9111 4.2.3)');
$origin->set('/old', headers => ['Cache-Control: max-age=60',
                                 'Date: Tue, 01 Sep 2026 10:00:00 GMT'], body => 'o');
show('/old');
is(show('/old'), '200 EXPIRED o', 'a Date older than max-age: stale at once');
is($n->get('/nolm', 'If-Modified-Since' => 'Tue, 01 Sep 2026 10:00:00 GMT')->{status}, 304,
   'If-Modified-Since at the stored Date: 304');
is($n->get('/nolm', 'If-Modified-Since' => 'Tue, 01 Sep 2026 09:00:00 GMT')->{status}, 200,
   'If-Modified-Since before the stored Date: 200');

# --- invalidation by unsafe methods
$origin->set('/inv', headers => ['Cache-Control: max-age=60'], body => 'x');
show('/inv');
ok(wait_until(5, sub { show('/inv') eq '200 HIT x' }), 'cached');
$origin->set('/inv', status => 500, body => 'fail');
$r = $n->request('POST', '/inv', body => 'data');
is($r->{status}, 500, 'a failed POST');
is(show('/inv'), '200 HIT x', 'leaves the entry');
$origin->set('/inv', status => 200, body => 'posted');
$r = $n->request('POST', '/inv', body => 'data');
is($r->{status}, 200, 'a successful POST');
ok(wait_until(5, sub { !defined redis_command('GET', rkey('/inv')) }), 'removes the entry');
for my $m (qw(PUT DELETE PATCH)) {
    $origin->set('/inv', headers => ['Cache-Control: max-age=60'], body => 'x');
    ok(wait_until(5, sub { show('/inv') eq '200 HIT x' }), "cached again before $m");
    $n->request($m, '/inv', body => 'd');
    ok(wait_until(5, sub { !defined redis_command('GET', rkey('/inv')) }), "$m removes it");
}

# --- and the same origin's Location and Content-Location (RFC 9111 4.4)
sub cache_all {
    for my $p (@_) {
        $origin->set($p, headers => ['Cache-Control: max-age=60'], body => "b$p");
        return 0 unless wait_until(5, sub { show($p) eq "200 HIT b$p" });
    }
    return 1;
}
sub gone { my $p = $_[0]; wait_until(5, sub { !defined redis_command('GET', rkey($p)) }) }

ok(cache_all('/loc/a', '/loc/dir/c', '/loc/b', '/loc/far', '/loc/scheme'), 'five entries cached');
$origin->set('/loc/dir/post', status => 201,
             headers => ['Location: /loc/a', 'Content-Location: c'], body => 'made');
is($n->request('POST', '/loc/dir/post', body => 'd')->{status}, 201, 'a POST answered 201');
ok(gone('/loc/a'), 'its Location (an absolute path) is invalidated');
ok(gone('/loc/dir/c'), 'its Content-Location (relative, resolved) is invalidated');
$origin->set('/loc/dir/post', status => 303,
             headers => ['Location: http://localhost/loc/b'], body => '');
$n->request('POST', '/loc/dir/post', body => 'd');
ok(gone('/loc/b'), 'an absolute URI of the same host is invalidated');
$origin->set('/loc/dir/post', status => 201,
             headers => ['Location: http://other.example/loc/far',
                         'Content-Location: //other.example/loc/far',
                         'Content-Location: mailto:x@example.org/loc/scheme'], body => '');
is($n->request('POST', '/loc/dir/post', body => 'd')->{status}, 201, 'a POST naming other origins');
ok(cache_all('/inv-probe'), 'a later entry is stored (the POST\'s commands are done)');
is(show('/loc/far'), '200 HIT b/loc/far', 'another host\'s URL is left alone');
is(show('/loc/scheme'), '200 HIT b/loc/scheme', 'another scheme\'s URL is left alone');
$origin->set('/loc/dir/post', status => 500, headers => ['Location: /loc/far'], body => '');
$n->request('POST', '/loc/dir/post', body => 'd');
ok(cache_all('/inv-probe2'), 'a later entry is stored');
is(show('/loc/far'), '200 HIT b/loc/far', 'a failed POST invalidates no Location');

$n->stop;
my $log = $n->final_log;
unlike($log, qr/\[(alert|crit|emerg)\]/, 'no alert, crit or emerg') or diag($log);
$origin->stop;

done_testing();
