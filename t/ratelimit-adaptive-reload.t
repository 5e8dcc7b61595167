# ratelimit_adaptive across reloads (master process, SIGHUP): the factor
# carries over with the zone, and the gauge ratelimit_adaptive_rate keeps
# showing the current rate, whether the reload keeps the module's metric
# series (the stats zone's values adopted) or changes them (a fresh stats
# zone, values at 0, set again at the next evaluation).  Failures are
# signalled with ?sig=1.
use strict;
use warnings;

use Test::More;
use Test::Edge qw(wait_until);
use Test::Edge::Nginx;

my $I = 1 * $Test::Edge::Valgrind::Slowdown;

sub http {
    my ($gen, $extra) = @_;
    return <<"HTTP";
    metrics_zone 1m;
    ratelimit_zone \$arg_k zone=ad:1m rate=100r/s;
    ratelimit_adaptive zone=ad min=10r/s max=100r/s interval=${I}s
                       min_samples=2 signal=\$arg_sig;
$extra
    server {
        listen 127.0.0.1:\$PORT;
        location = /ok { return 200 "ok\\n"; }
        location = /metrics { metrics; }
        location = /rl {
            ratelimit zone=ad;
            add_header X-Rate \$ratelimit_rate always;
            add_header X-Gen $gen always;
            proxy_pass http://127.0.0.1:\$PORT/ok;
        }
    }
HTTP
}

my $n = Test::Edge::Nginx->start(http => http(1, ''), workers => 2);

sub reload_to {
    my ($http) = @_;
    my $conf = "$n->{prefix}/conf/nginx.conf";
    open my $fh, '<', $conf or die $!;
    my $text = do { local $/; <$fh> };
    close $fh;
    $http =~ s/\$PORT\b/$n->{port}/g;
    $text =~ s/(proxy_temp_path [^\n]*\n).*(\n\}\s*)\z/$1$http$2/s
        or die "unexpected nginx.conf layout\n";
    open $fh, '>', $conf or die $!;
    print $fh $text;
    close $fh;
    open $fh, '<', "$n->{prefix}/logs/nginx.pid" or die $!;
    chomp(my $master = <$fh>);
    kill 'HUP', $master or die "kill: $!";
}

my $uniq = 0;

sub failing {
    my $r = $n->get('/rl?sig=1&k=' . $uniq++);
    my ($rate) = ($r->{headers}{'x-rate'} // '') =~ /^ad=([\d.]+)r\//;
    return ($rate // -1, $r->{headers}{'x-gen'} // '');
}

sub gauge {
    my $m = $n->get('/metrics')->{body};
    my ($v) = $m =~
        /^(?:nginx_)?ratelimit_adaptive_rate\{zone="ad"\} (\S+)$/m;
    return $v // -1;
}

ok(wait_until(30, sub { (failing())[0] == 10 }),
   'failing: the rate falls to min=');
ok(wait_until(10, sub { failing(); gauge() == 10 }), 'the gauge shows 10');

# the same series: the stats zone's values are adopted
reload_to(http(2, ''));
ok(wait_until(20, sub { (failing())[1] eq '2' }), 'reloaded (same series)');
is((failing())[0], 10, 'the factor carried over');
my $g = 0;
ok(wait_until(10, sub { failing(); $g = gauge(); $g == 10 }),
   "the gauge still shows 10 ($g), not twice");
failing() for 1 .. 5;
sleep $I + 0.5;
failing() for 1 .. 3;
is(gauge(), 10, 'and still 10 after the next evaluations');

# another zone: other series, a fresh stats zone
reload_to(http(3, '    ratelimit_zone $arg_k zone=other:1m rate=1r/s;'));
ok(wait_until(20, sub { (failing())[1] eq '3' }), 'reloaded (new series)');
ok(wait_until(10, sub { failing(); $g = gauge(); $g == 10 }),
   "the fresh stats zone's gauge shows 10 ($g)");

unlike($n->log, qr/\[(?:alert|crit|emerg)\]/, 'no alert in the log');

$n->stop;

done_testing();
