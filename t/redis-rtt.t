# redis_rtt_seconds is measured in microseconds (monotonic clock), so a
# local Redis's sub-millisecond round trips are seen as they are: with
# millisecond resolution every observation was 0 or a whole number of
# milliseconds.
use strict;
use warnings;

use Test::More;
use Test::Edge qw(:all);
use Test::Edge::Nginx;

redis_start() unless redis_is_up();
redis_flushall();

my $nginx = Test::Edge::Nginx->start(http => <<"HTTP");
    ratelimit_redis r 127.0.0.1:$ENV{TEST_NGINX_REDIS_PORT} timeout=5s;
    ratelimit_zone \$arg_k zone=rl:1m rate=1r/m redis=r on_failure=open;
    server {
        listen 127.0.0.1:\$PORT;
        location = /ok { return 200 "ok\\n"; }
        location = /metrics { metrics; }
        location = /rl {
            ratelimit zone=rl;
            add_header X-Status \$ratelimit_status always;
            proxy_pass http://127.0.0.1:\$PORT/ok;
        }
    }
HTTP

ok(wait_until(20, sub { $nginx->decision('/rl?k=w') eq '200 PASSED' }),
   'connected to Redis');

# the histogram's sum and count, as exposed (seconds)
sub rtt {
    my $body = $nginx->get('/metrics')->{body};
    my ($sum) = $body
        =~ /^(?:nginx_)?ratelimit_redis_rtt_seconds_sum\{server="r"\} (\S+)/m;
    my ($count) = $body
        =~ /^(?:nginx_)?ratelimit_redis_rtt_seconds_count\{server="r"\} (\d+)/m;
    my ($below) = $body
        =~ /^(?:nginx_)?ratelimit_redis_rtt_seconds_bucket\{server="r",le="0\.001"\} (\d+)/m;
    return ($sum // 'none', $count // 0, $below // 0);
}

# Each decision adds one observation.  In microseconds the sum has digits
# below the millisecond; the chance that it is a whole number of
# milliseconds after each of 5 decisions is about 1e-15.
my (@sums, $fractional);
for my $i (1 .. 5) {
    is($nginx->decision("/rl?k=a$i"), '200 PASSED', "decision $i by Redis");
    my ($sum) = rtt();
    push @sums, $sum;
    $fractional++ if $sum =~ /^\d+\.\d{3}\d*[1-9]/;
}
ok($fractional, 'the rtt sum has sub-millisecond digits: microseconds')
    or diag("sums: @sums");

my ($sum, $count, $below) = rtt();
cmp_ok($count, '>=', 6, "$count observations");
cmp_ok($sum, '>', 0, "a round trip takes time ($sum s in all)");
cmp_ok($below, '>=', 1, 'observations below 1 ms (le="0.001")');

$nginx->stop;
unlike($nginx->final_log, qr/\[(alert|crit|emerg)\]/, 'no alert');

done_testing();
