# ngx_http_breaker_module with the cache module: the modules meet only
# through a variable.  While a route circuit is open, the cache's
# edge_cache_stale_if predicate (a map of $breaker_state) serves the
# stored entry without asking the origin; what is not stored is refused by
# the breaker.  The breaker's check runs after the cache's lookup whatever
# the load_module order: both orders are tried.
use strict;
use warnings;

use Test::More;
use Test::Edge qw(:all);
use Test::Edge::Nginx;
use Test::Edge::Origin;
use Digest::MD5 qw(md5_hex);
use Time::HiRes qw(sleep);

redis_start() unless redis_is_up();

my $rport = $ENV{TEST_NGINX_REDIS_PORT};
my $origin = Test::Edge::Origin->start;
my $oport = $origin->port;

my $http = <<"HTTP";
    edge_cache_redis main 127.0.0.1:$rport timeout=1s;
    edge_cache_zone pages redis=main;
    breaker_zone br 1m;
    breaker_circuit api zone=br min_calls=2 failure_rate=100 open=60s;
    map \$breaker_state \$origin_down {
        open         1;
        forced_open  1;
        default      0;
    }
    server {
        listen 127.0.0.1:\$PORT;
        # fills the cache without going through the circuit
        location ~ ^/fill(/api/.*)\$ {
            edge_cache pages;
            edge_cache_key \$1;
            proxy_pass http://127.0.0.1:$oport\$1;
        }
        location /api/ {
            edge_cache pages;
            edge_cache_key \$uri;
            edge_cache_keep 60s;
            edge_cache_stale_if \$origin_down;
            add_header X-Cache \$edge_cache_status always;
            breaker api;
            proxy_pass http://127.0.0.1:$oport;
        }
    }
HTTP

sub rkey { 'pages:{' . md5_hex($_[0]) . '}' }

my @modules = split ' ', ($ENV{TEST_NGINX_LOAD_MODULES} // '');
my @cache_first = ((grep { /cache/ } @modules), (grep { !/cache/ } @modules));
my @breaker_first = ((grep { /breaker/ } @modules),
                     (grep { !/breaker/ } @modules));

for my $order ([breaker_first => \@breaker_first],
               [cache_first => \@cache_first])
{
    my ($name, $mods) = @$order;
    subtest "open circuit: stale from the cache, refusal otherwise ($name)" => sub {
        redis_flushall();
        local $ENV{TEST_NGINX_LOAD_MODULES} = join ' ', @$mods;
        my $n = Test::Edge::Nginx->start(http => $http);

        $origin->set('/api/a', headers => ['Cache-Control: max-age=1, '
                                           . 'stale-if-error=60'],
                     body => "stored a\n");
        ok(wait_until(10, sub {
               $n->get('/fill/api/a');
               defined redis_command('GET', rkey('/api/a')) }), 'a stored');
        sleep 1.2;    # stale now

        $origin->set('/api/b', status => 500, body => "down\n");
        is(join(' ', map { $n->get('/api/b')->{status} } 1 .. 2), '500 500',
           'two failures');
        my $hits = $origin->hits('/api/a');
        my $r = $n->get('/api/a');
        is($r->{status}, 200, 'the stored entry answers');
        is($r->{body}, "stored a\n", 'its body');
        like($r->{headers}{'x-cache'} // '', qr/STALE/, 'stale');
        is($origin->hits('/api/a'), $hits, 'the origin was not asked');

        $r = $n->get('/api/c');
        is($r->{status}, 503, 'not stored: refused by the open circuit');
        ok(($r->{headers}{'retry-after'} // 0) > 0, 'with Retry-After');
        $n->stop;
    };
}

$origin->stop;
done_testing();
