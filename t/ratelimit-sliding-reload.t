# A real reload (master process, SIGHUP) keeps a sliding window's counts,
# as it keeps GCRA's buckets; a zone that changes algorithm starts afresh
# with the other algorithm's state, never reading one as the other.
use strict;
use warnings;

use Test::More;
use POSIX qw(floor);
use Time::HiRes qw(sleep clock_gettime CLOCK_MONOTONIC);
use Test::Edge qw(:all);
use Test::Edge::Nginx;

sub mono { clock_gettime(CLOCK_MONOTONIC) }

# generation $gen: zone z with this algorithm (3 per hour either way)
sub http {
    my ($gen, $algorithm) = @_;
    return <<"HTTP";
    ratelimit_zone \$arg_k zone=z:1m rate=3r/h $algorithm;
    server {
        listen 127.0.0.1:\$PORT;
        location = /ok { return 200 "ok\\n"; }
        location = /rl {
            ratelimit zone=z;
            add_header X-Status \$ratelimit_status always;
            add_header X-Gen $gen always;
            proxy_pass http://127.0.0.1:\$PORT/ok;
        }
    }
HTTP
}

my $nginx = Test::Edge::Nginx->start(
    http => http(1, 'algorithm=sliding_window'), workers => 2);

sub gen_of { $nginx->get('/rl')->{headers}{'x-gen'} // '' }

sub reload_to {
    my ($http) = @_;
    my $conf = "$nginx->{prefix}/conf/nginx.conf";
    open my $fh, '<', $conf or die $!;
    my $text = do { local $/; <$fh> };
    close $fh;
    $http =~ s/\$PORT\b/$nginx->{port}/g;
    $text =~ s/(proxy_temp_path [^\n]*\n).*(\n\}\s*)\z/$1$http$2/s
        or die "unexpected nginx.conf layout\n";
    open $fh, '>', $conf or die $!;
    print $fh $text;
    close $fh;
    open $fh, '<', "$nginx->{prefix}/logs/nginx.pid" or die $!;
    chomp(my $master = <$fh>);
    kill 'HUP', $master or die "kill: $!";
}

# the whole test runs within one window of an hour (of the monotonic
# clock): if less than two minutes are left of this one, wait for the next
my $w = 3600;
my $left = $w - (mono() - floor(mono() / $w) * $w);
sleep($left + 0.01) if $left < 120;
my $k = floor(mono() / $w);

is_deeply([map { $nginx->decision('/rl?k=u') } 1 .. 4],
          [('200 PASSED') x 3, '429 REJECTED'],
          'sliding window: 3 per hour, the 4th refused');

reload_to(http(2, 'algorithm=sliding_window'));
ok(wait_until(20, sub { gen_of() eq '2' }), 'reloaded');
is($nginx->decision('/rl?k=u'), '429 REJECTED',
   'the count carried over the reload: still refused');

reload_to(http(3, 'algorithm=gcra'));
ok(wait_until(20, sub { gen_of() eq '3' }), 'reloaded to GCRA');
is_deeply([map { $nginx->decision('/rl?k=u') } 1 .. 2],
          ['200 PASSED', '429 REJECTED'],
          "GCRA starts from an empty bucket, not the window's counts");

is(floor(mono() / $w), $k, 'all within one window');
unlike($nginx->log, qr/\[(alert|crit)\]/, 'no alert in error.log');
$nginx->stop;

done_testing();
