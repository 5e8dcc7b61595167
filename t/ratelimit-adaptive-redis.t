# ratelimit_adaptive on a Redis zone: the factor is the fleet's.  Two nginx
# nodes share one zone; only node A's upstream fails.  Node B, whose own
# upstream is healthy, must limit at the fleet's lowered rate; with Redis
# stopped each node adapts alone.  Directions and bounds, not timings.
use strict;
use warnings;

use Test::More;
use Test::Edge qw(:all);
use Test::Edge::Nginx;
use Test::Edge::Origin;

redis_start() unless redis_is_up();
redis_flushall();

my $redis = "127.0.0.1:$ENV{TEST_NGINX_REDIS_PORT}";
my $I = 1 * $Test::Edge::Valgrind::Slowdown;

my $origin = Test::Edge::Origin->start;
my $oport = $origin->port;

sub node_http {
    my ($path) = @_;
    return <<"HTTP";
    ratelimit_redis r $redis timeout=5s connect_timeout=200ms;
    ratelimit_zone \$arg_k zone=fleet:1m rate=100r/s redis=r;
    ratelimit_adaptive zone=fleet min=10r/s max=100r/s increase=10r/s
                       interval=${I}s min_samples=2;
    server {
        listen 127.0.0.1:\$PORT;
        location /x {
            ratelimit zone=fleet;
            add_header X-Rate \$ratelimit_rate always;
            proxy_pass http://127.0.0.1:$oport/$path;
        }
    }
HTTP
}

my $a = Test::Edge::Nginx->start(http => node_http('a'), workers => 2);
my $b = Test::Edge::Nginx->start(http => node_http('b'), workers => 2);

$origin->set('/a', status => 200, body => "ok\n");
$origin->set('/b', status => 200, body => "ok\n");

my $uniq = 0;

sub probe {
    my ($n) = @_;
    my $r = $n->get('/x?k=' . $$ . '-' . $uniq++);
    my ($rate) = ($r->{headers}{'x-rate'} // '') =~ /^fleet=([\d.]+)r\//;
    return $rate;
}

sub within { my ($lo, $hi, @v) = @_; !grep { $_ < $lo || $_ > $hi } @v }

is(probe($a), 100, 'node A: the base rate');
is(probe($b), 100, 'node B: the base rate');

# A's upstream fails; both nodes carry traffic, B's all healthy
$origin->set('/a', status => 500, body => "down\n");
{
    my (@sa, @sb);
    my $ok = wait_until(40, sub {
        push @sa, probe($a);
        my $rb = probe($b);
        push @sb, $rb;
        return $rb <= 25;
    });
    ok($ok, 'node B, healthy itself, limits at the fleet\'s lowered rate ('
       . ($sb[-1] // 'none') . 'r/s)');
    ok(within(10, 100, @sa, @sb), 'both nodes within [min, max]');
}

# Redis stopped: each node adapts alone; A keeps going down to min=
redis_stop();
{
    my @sa;
    ok(wait_until(40, sub { push @sa, probe($a); $sa[-1] == 10 }),
       'Redis down: node A adapts alone, down to min=');
    ok(within(10, 100, @sa), 'node A within [min, max]');

    my @sb;
    ok(wait_until(40, sub { push @sb, probe($b); $sb[-1] == 100 }),
       'Redis down: node B, healthy, recovers alone to max=');
    ok(within(10, 100, @sb), 'node B within [min, max]');
}
redis_start();

# healed: the fleet's factor climbs back
$origin->set('/a', status => 200, body => "ok\n");
{
    my @sa;
    ok(wait_until(60, sub { push @sa, probe($a); $sa[-1] == 100 }),
       'healed: node A back at max=');
}

my $key = redis_command('EXISTS', 'rl:adaptive:{fleet}');
is($key, 1, 'the fleet factor is kept in rl:adaptive:{fleet}');

unlike($a->log . $b->log, qr/\[(?:alert|crit|emerg)\]/, 'no alert');

$a->stop;
$b->stop;
$origin->stop;

done_testing();
