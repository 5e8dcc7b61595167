# The cache's counters reach /metrics through the shared registry:
# requests by status, hits by tier, bytes stored and served, stores, lock
# waits, and the cache's Redis connection; the exposition passes promtool.
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
    metrics_zone 1m;
    edge_cache_redis main 127.0.0.1:$rport timeout=1s;
    edge_cache_zone pages redis=main;
    server {
        listen 127.0.0.1:\$PORT;
        location = /metrics { metrics; }
        location / {
            edge_cache pages;
            edge_cache_key \$uri;
            edge_cache_compress off;
            add_header X-Cache \$edge_cache_status always;
            proxy_pass http://127.0.0.1:$oport;
        }
    }
HTTP

my $n = Test::Edge::Nginx->start(http => $http, workers => 1);

sub metric {
    my ($body, $re) = @_;
    my ($v) = $body =~ /^$re (\S+)$/m;
    return $v;
}

$origin->set('/m', headers => ['Cache-Control: max-age=60'], body => 'z' x 1000);
ok(wait_until(10, sub { $n->get('/m'); defined redis_command('GET', 'pages:{' . md5_hex('/m') . '}') }),
   'stored');
ok(wait_until(5, sub { $n->get('/m')->{headers}{'x-cache'} eq 'HIT' }), 'a hit');
my $m0 = $n->get('/metrics')->{body};
my $hits0 = metric($m0, qr/nginx_cache_requests_total\{zone="pages",status="HIT"\}/);
my $l2_0 = metric($m0, qr/nginx_cache_hits_total\{zone="pages",tier="l2"\}/);
my $bytes0 = metric($m0, qr/nginx_cache_served_bytes_total\{zone="pages"\}/);
$n->get('/m') for 1 .. 2;

my $m = $n->get('/metrics')->{body};
my $miss = metric($m, qr/nginx_cache_requests_total\{zone="pages",status="MISS"\}/);
cmp_ok($miss, '>=', 1, 'misses counted');
cmp_ok($hits0, '>=', 1, 'hits counted');
is(metric($m, qr/nginx_cache_requests_total\{zone="pages",status="HIT"\}/) - $hits0, 2, 'two more hits');
is(metric($m, qr/nginx_cache_hits_total\{zone="pages",tier="l2"\}/) - $l2_0, 2, 'both from Redis');
is(metric($m, qr/nginx_cache_served_bytes_total\{zone="pages"\}/) - $bytes0, 2000,
   'their body bytes served from the cache');
cmp_ok(metric($m, qr/nginx_cache_stores_total\{zone="pages"\}/), '>=', 1, 'stores counted');
cmp_ok(metric($m, qr/nginx_cache_stored_bytes_total\{zone="pages"\}/), '>', 1000,
       'stored bytes: the entry, header and body');
cmp_ok(metric($m, qr/nginx_cache_redis_commands_total\{server="main"\}/), '>=', 3,
       'the cache\'s Redis commands');
like($m, qr/^# TYPE nginx_cache_lock_waits_total counter$/m, 'lock waits family');
ok(promtool_ok($m), 'promtool accepts the exposition');

$n->stop;
unlike($n->final_log, qr/\[(alert|crit|emerg)\]/, 'no alert, crit or emerg');
$origin->stop;

done_testing();
