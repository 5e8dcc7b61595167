# ratelimit_adaptive: a zone's rate follows the health of the upstream it
# protects.  A real origin (Test::Edge::Origin) turns slow, then fails, then
# heals; the zone's rate ($ratelimit_rate, RateLimit-Policy, the gauge)
# must go down while it is unhealthy, never below min=, and back up once it
# heals, never above max=.  Directions and bounds are asserted, not timings:
# the machine is shared and its latencies are noisy.
use strict;
use warnings;

use Test::More;
use Test::Edge qw(wait_until);
use Test::Edge::Nginx;
use Test::Edge::Origin;
use Time::HiRes qw(sleep);

my $origin = Test::Edge::Origin->start;
my $oport = $origin->port;

# base 100r/s, min 10r/s, max 150r/s: a decrease halves, an increase adds
# 25r/s; an interval of 1 s (longer under valgrind, whose nginx is slow)
my $I = 1 * $Test::Edge::Valgrind::Slowdown;

my $http = <<"HTTP";
    metrics_zone 1m;
    upstream origin { server 127.0.0.1:$oport; }
    ratelimit_zone \$arg_k zone=ad:1m rate=100r/s;
    ratelimit_adaptive zone=ad min=10r/s max=150r/s increase=25r/s
                       interval=${I}s min_samples=2 latency=150ms
                       percentile=90 error_rate=20%;
    ratelimit_zone \$arg_k zone=sig:1m rate=60r/m;
    ratelimit_adaptive zone=sig min=6r/m max=60r/m interval=${I}s
                       min_samples=2 signal=\$upstream_http_x_overload;
    server {
        listen 127.0.0.1:\$PORT;
        location = /metrics { metrics; }
        location /ad/ {
            ratelimit zone=ad burst=99 nodelay;
            add_header X-Rate \$ratelimit_rate always;
            add_header X-Status \$ratelimit_status always;
            proxy_pass http://origin;
        }
        location /sig/ {
            ratelimit zone=sig;
            add_header X-Rate \$ratelimit_rate always;
            proxy_pass http://origin;
        }
    }
HTTP

my $n = Test::Edge::Nginx->start(http => $http, workers => 2);

my $uniq = 0;

# one request on a fresh key (never refused by its own bucket): the zone's
# rate it was limited with, r/s (or r/m), and the response
sub probe {
    my ($zone) = @_;
    my $r = $n->get("/$zone/x?k=" . $$ . '-' . $uniq++);
    my ($rate) = ($r->{headers}{'x-rate'} // '') =~ /^\Q$zone\E=([\d.]+)r\//;
    return ($rate, $r);
}

# sends requests until CODE->(rate) is true or the deadline passes; every
# rate seen is pushed on @$seen
sub drive {
    my ($zone, $seen, $timeout, $code) = @_;
    return wait_until($timeout, sub {
        my ($rate) = probe($zone);
        return 0 unless defined $rate;
        push @$seen, $rate;
        return $code->($rate);
    });
}

sub gauge {
    my ($zone) = @_;
    my $m = $n->get('/metrics')->{body};
    my ($v) = $m =~
        /^(?:nginx_)?ratelimit_adaptive_rate\{zone="\Q$zone\E"\} (\S+)$/m;
    return $v;
}

sub within { my ($lo, $hi, @v) = @_; !grep { $_ < $lo || $_ > $hi } @v }

sub never_up {
    my @v = @_;
    for my $i (1 .. $#v) { return 0 if $v[$i] > $v[$i - 1] }
    return 1;
}

sub never_down {
    my @v = @_;
    for my $i (1 .. $#v) { return 0 if $v[$i] < $v[$i - 1] }
    return 1;
}


# --- healthy: from the base up to max=, never beyond
$origin->set('/ad/x', status => 200, body => "ok\n");
{
    my ($rate, $r) = probe('ad');
    is($rate, 100, 'the first request is limited at the base rate');
    is($r->{headers}{'ratelimit-policy'}, '"ad";q=100;w=1',
       'RateLimit-Policy: the quota at the base rate');

    my @seen;
    ok(drive('ad', \@seen, 20, sub { $_[0] == 150 }),
       'healthy: the rate rises to max=');
    ok(never_down(@seen), 'healthy: it never goes down (@seen)');
    ok(within(100, 150, @seen), 'healthy: within [base, max]');

    # a few more intervals at max
    my @more;
    drive('ad', \@more, 2.5, sub { 0 });
    ok(within(150, 150, @more), 'healthy at max=: it stays there');

    ok(wait_until(5, sub { (gauge('ad') // -1) == 150 }),
       'the gauge ratelimit_adaptive_rate shows 150');
}


# --- slow: p90 above latency= halves the rate, down to min=, never below
$origin->set('/ad/x', status => 200, body => "ok\n", delay => 0.3);
{
    my @seen;
    ok(drive('ad', \@seen, 40, sub { $_[0] == 10 }),
       'slow: the rate falls to min=');
    ok(never_up(@seen), 'slow: it never goes up (@seen)');
    ok(within(10, 150, @seen), 'slow: within [min, max]');

    my ($rate, $r) = probe('ad');
    is($r->{headers}{'ratelimit-policy'}, '"ad";q=100;w=10',
       'RateLimit-Policy at 10r/s: 100 requests take 10 s');
    ok(wait_until(5, sub { (gauge('ad') // -1) == 10 }),
       'the gauge shows 10');

    my @more;
    drive('ad', \@more, 2.5, sub { 0 });
    ok(within(10, 10, @more), 'still slow: it stays at min=');
    like($n->log, qr/ratelimit: zone "ad" adaptive rate 150r\/s -> 75r\/s/,
         'the decrease is logged');
}


# --- heals: back up toward max=, additively, never beyond
$origin->set('/ad/x', status => 200, body => "ok\n");
{
    my @seen;
    ok(drive('ad', \@seen, 40, sub { $_[0] == 150 }),
       'healed: the rate climbs back to max=');
    ok(never_down(@seen), 'healed: it never goes down (@seen)');
    ok(within(10, 150, @seen), 'healed: within [min, max]');
    my %steps = map { $_ => 1 } @seen;
    ok(keys %steps >= 4, 'healed: additive steps, not one jump ('
       . join(' ', sort { $a <=> $b } keys %steps) . ')');
}


# --- fails: 5xx from the origin, then a refused connection (nginx's 502)
$origin->set('/ad/x', status => 503, body => "down\n");
{
    my @seen;
    ok(drive('ad', \@seen, 40, sub { $_[0] < 150 }),
       '5xx: the rate goes down');
    ok(never_up(@seen), '5xx: it never goes up');
}

$origin->set('/ad/x', status => 200, body => "ok\n", mode => 'close');
{
    my @seen;
    ok(drive('ad', \@seen, 40, sub { $_[0] == 10 }),
       'connections closed by the upstream (502): down to min=');
    ok(never_up(@seen), 'it never goes up');
    ok(within(10, 150, @seen), 'within [min, max]');
}

$origin->set('/ad/x', status => 200, body => "ok\n");
{
    my @seen;
    ok(drive('ad', \@seen, 40, sub { $_[0] > 10 }),
       'healed again: the rate recovers');
}


# --- the operator's signal: a backend header counts as a failure
$origin->set('/sig/x', status => 200, body => "ok\n",
             headers => ['X-Overload: 1']);
{
    my @seen;
    ok(drive('sig', \@seen, 40, sub { $_[0] == 6 }),
       'signal set: the rate falls to min=');
    ok(never_up(@seen), 'signal set: never up');
    ok(within(6, 60, @seen), 'signal: within [min, max]');
}
$origin->set('/sig/x', status => 200, body => "ok\n",
             headers => ['X-Overload: 0']);
{
    my @seen;
    ok(drive('sig', \@seen, 40, sub { $_[0] == 60 }),
       'signal "0": back to the base (= max=)');
    ok(within(6, 60, @seen), 'never above max=');
}

unlike($n->log, qr/\[(?:alert|crit|emerg)\]/, 'no alert in the log');

$n->stop;
$origin->stop;

done_testing();
