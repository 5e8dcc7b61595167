# edge_cache_min_uses: a response is stored only once its key was asked
# for that many times within the window (counted in Redis, so across the
# fleet, in the lookup's own round trip); with the lock on too.
use strict;
use warnings;

use Test::More;
use Test::Edge qw(:all);
use Test::Edge::Nginx;
use Test::Edge::Origin;
use Digest::MD5 qw(md5_hex);

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
        add_header X-Cache \$edge_cache_status always;
        location /three/ {
            edge_cache_min_uses 3 window=1m;
            proxy_pass http://127.0.0.1:$oport;
        }
        location /locked/ {
            edge_cache_min_uses 2;
            edge_cache_lock on;
            proxy_pass http://127.0.0.1:$oport;
        }
        location /w/ {
            proxy_pass http://127.0.0.1:$oport;
        }
    }
HTTP

my $a = Test::Edge::Nginx->start(http => $http, workers => 1);
my $b = Test::Edge::Nginx->start(http => $http, workers => 1);

sub rkey { 'pages:{' . md5_hex($_[0]) . '}' }
sub x { my ($n, $p) = @_; my $r = $n->get($p); return $r->{headers}{'x-cache'} // '-' }

for my $n ($a, $b) {
    ok(wait_until(10, sub { $origin->set('/w/x', headers => ['Cache-Control: max-age=60'], body => 'w');
                            $n->get('/w/x'); x($n, '/w/x') eq 'HIT' }), 'connected');
}

$origin->set('/three/a', headers => ['Cache-Control: max-age=60'], body => 'a');
is(x($a, '/three/a'), 'MISS', 'first use: a miss');
ok(!defined redis_command('GET', rkey('/three/a')), 'not stored');
is(x($b, '/three/a'), 'MISS', 'second use, on another node: a miss');
is(redis_command('GET', rkey('/three/a') . ':uses'), 2, 'two uses counted in Redis');
is(x($a, '/three/a'), 'MISS', 'third use: a miss, stored');
ok(wait_until(5, sub { defined redis_command('GET', rkey('/three/a')) }), 'stored at the third use');
is(x($b, '/three/a'), 'HIT', 'then a hit on every node');
is($origin->hits('/three/a'), 3, 'three origin requests in all');
my $ttl = redis_command('PTTL', rkey('/three/a') . ':uses');
ok($ttl > 0 && $ttl <= 60000, "the counter lives within its window ($ttl ms)");

# with the lock: no hit-for-miss marker for "not yet", so uses go on counting
$origin->set('/locked/b', headers => ['Cache-Control: max-age=60'], body => 'b');
is(x($a, '/locked/b'), 'MISS', 'locked, first use: a miss');
isnt(redis_command('GET', rkey('/locked/b')) // '', 'NXHM', 'no hit-for-miss marker');
is(x($a, '/locked/b'), 'MISS', 'second use: stored');
ok(wait_until(5, sub { x($a, '/locked/b') eq 'HIT' }), 'then hits');

for my $n ($a, $b) {
    $n->stop;
    unlike($n->final_log, qr/\[(alert|crit|emerg)\]/, 'no alert, crit or emerg');
}
$origin->stop;

done_testing();
