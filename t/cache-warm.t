# Warm-up (edge_cache_warm): a POSTed list of URIs fills the cache through
# the normal path, at most concurrency= at a time, and the answer says
# what happened to each; entries already there are left alone.
use strict;
use warnings;

use Test::More;
use Test::Edge qw(:all);
use Test::Edge::Nginx;
use Test::Edge::Origin;
use Digest::MD5 qw(md5_hex);
use JSON::PP ();
use Time::HiRes qw(time);

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
        location /p/ {
            edge_cache pages;
            edge_cache_key \$uri\$is_args\$args;
            add_header X-Cache \$edge_cache_status always;
            proxy_pass http://127.0.0.1:$oport;
        }
        location /nocache/ {
            proxy_pass http://127.0.0.1:$oport;
        }
        location = /warm {
            edge_cache_warm concurrency=4;
            client_body_buffer_size 64k;
            allow 127.0.0.1;
            deny all;
        }
    }
HTTP

my $n = Test::Edge::Nginx->start(http => $http, workers => 1);

sub rkey { 'pages:{' . md5_hex($_[0]) . '}' }
sub warm {
    my ($body) = @_;
    my $r = $n->request('POST', '/warm', body => $body);
    my $j = eval { JSON::PP::decode_json($r->{body}) };
    return ($r->{status}, $j, $r);
}

ok(wait_until(10, sub { $origin->set('/p/w', headers => ['Cache-Control: max-age=60'], body => 'w');
                        $n->get('/p/w'); defined redis_command('GET', rkey('/p/w')) }), 'connected');

my @uris = map { "/p/u$_" } 1 .. 20;
$origin->set($_, headers => ['Cache-Control: max-age=60'], body => "body of $_", delay => 0.3)
    for @uris;
$origin->set('/p/q', headers => ['Cache-Control: max-age=60'], body => 'q');
$origin->set('/p/err', status => 500, body => 'no');

my $t0 = time;
my ($st, $j) = warm(join("\n", @uris) . "\n");
my $elapsed = time - $t0;
is($st, 200, 'warm-up answered 200');
is($j->{uris}, 20, '20 URIs');
is($j->{stored}, 20, 'all stored') or diag(explain($j));
cmp_ok($elapsed, '>=', 20 / 4 * 0.3 * 0.95,
       'at most 4 at a time: 20 URIs of 0.3 s took at least 1.5 s');
is($origin->hits("/p/u$_"), 1, "u$_: one origin request") for 1, 20;
ok((grep { defined redis_command('GET', rkey($_)) } @uris) == 20, 'all 20 in Redis');
is($n->get('/p/u7')->{headers}{'x-cache'}, 'HIT', 'a warmed URI is a hit');

# again: already there
($st, $j) = warm("/p/u1\n/p/u2\r\n\n/p/q?x=1\n/p/err\n/nocache/a\n");
is($st, 200, 'second warm-up');
is_deeply([map { "$_->{uri} $_->{result}" } @{ $j->{results} }],
          ['/p/u1 cached', '/p/u2 cached', '/p/q?x=1 stored', '/p/err failed',
           '/nocache/a failed'],
          'cached, stored, failed (origin error), failed (no cache there)');
is($j->{results}[3]{status}, 500, 'the origin\'s status is reported');
is($origin->hits('/p/u1'), 1, 'a cached URI is not fetched again');
ok(defined redis_command('GET', rkey('/p/q?x=1')), 'the query string is part of the URI');

# bad input
($st, $j) = warm("");
is($st, 400, 'an empty list: 400');
($st, $j) = warm("not-a-path\n");
is($st, 400, 'a line that is not a path: 400');
like($j->{error}, qr/one URI/, 'with a JSON error');
($st) = warm("/p/a b\n");
is($st, 400, 'a space in a URI: 400');
($st) = warm("/p/\x01\n");
is($st, 400, 'a control byte: 400');
($st) = warm(join("\n", map { "/p/x$_" } 1 .. 10001));
ok($st == 413 || $st == 400, "10001 lines: refused ($st)");
($st) = warm('/p/' . ('a' x 70000));
is($st, 413, 'a list larger than client_body_buffer_size: 413');
my $r = $n->get('/warm');
is($r->{status}, 405, 'GET: 405');

$n->stop;
my $log = $n->final_log;
unlike($log, qr/\[(alert|crit|emerg)\]/, 'no alert, crit or emerg') or diag($log);
unlike($log, qr/open socket .* left/, 'no socket left open at exit');
$origin->stop;

done_testing();
