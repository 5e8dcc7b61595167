# The adaptive limit of a shedder (ngx_http_breaker_shed_adaptive.c): it
# goes up under light load, down when the backend slows, always within
# [min_limit, max_limit]; minRTT is measured again periodically, with the
# limit at min_limit meanwhile.  And the shedder's metrics in the
# edge_stats_shed zone, as the metrics module renders them.
#
# Directions and bounds are asserted, not numbers: the machine is shared
# and its latencies are noisy.
use strict;
use warnings;

use Test::More;
use Test::Edge qw(wait_until);
use Test::Edge::Nginx;
use Test::Edge::Origin;
use IO::Select;
use IO::Socket::INET;
use Time::HiRes qw(time sleep);

my $Slow = $Test::Edge::Valgrind::Slowdown;

my $origin = Test::Edge::Origin->start;
my $oport = $origin->port;

my $http = <<"HTTP";
    metrics_zone 1m;
    upstream origin { server 127.0.0.1:$oport; keepalive 16; }
    breaker_shed_zone shed 1m;
    breaker_shedder ad zone=shed adaptive min_limit=2 max_limit=30
                    window=50ms window_samples=5 min_rtt_samples=20
                    rtt_buffer=50% smoothing=100% min_rtt_interval=1h
                    queue=100 queue_timeout=30s codel_target=0;
    breaker_shedder mr zone=shed adaptive min_limit=2 max_limit=30
                    window=50ms window_samples=5 min_rtt_samples=10
                    rtt_buffer=50% smoothing=100% min_rtt_interval=1s
                    jitter=0 queue=100 queue_timeout=30s codel_target=0;
    breaker_shedder sl zone=shed adaptive min_limit=2 max_limit=30
                    window=50ms window_samples=5 min_rtt_samples=10
                    rtt_buffer=50% smoothing=100% min_rtt_interval=1h
                    queue=100 queue_timeout=30s codel_target=0;
    breaker_shedder cap zone=shed adaptive min_limit=2 max_limit=8
                    headroom=4 window=50ms window_samples=5
                    min_rtt_samples=20 smoothing=100% min_rtt_interval=1h
                    queue=100 queue_timeout=30s codel_target=0;
    server {
        listen 127.0.0.1:\$PORT backlog=1024;
        location = /metrics { metrics; }
        location /warm/ {
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://origin;
        }
        location /ad/ {
            breaker_shed ad;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://origin;
        }
        location /mr/ {
            breaker_shed mr;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://origin;
        }
        location = /state/ad { breaker_shed ad; return 200 "\$shed_limit"; }
        location = /state/mr { breaker_shed mr; return 200 "\$shed_limit"; }
        location /cap/ {
            breaker_shed cap;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://origin;
        }
        location = /state/cap { breaker_shed cap; return 200 "\$shed_limit"; }
        location /sl/ {
            breaker_shed sl;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://origin;
        }
        location = /state/sl { breaker_shed sl; return 200 "\$shed_limit"; }
        location = /status { breaker_status_endpoint; }
    }
HTTP

my $n = Test::Edge::Nginx->start(http => $http, workers => 2);

sub limit_of { my $r = $n->get("/state/$_[0]"); return $r->{body} + 0 }

# keeps $k requests for $path in flight until $until->() is true or the
# deadline; the limit is read every 50 ms into @$seen; returns the count
# of answers by status
sub load {
    my ($path, $k, $secs, $until, $seen) = @_;
    my (%open, %status);
    my $sel = IO::Select->new;
    my $deadline = time + $secs * $Slow;
    my $next_read = 0;
    while (time < $deadline) {
        while ($sel->count < $k) {
            my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                          PeerPort => $n->port) or die $!;
            print $s "GET $path HTTP/1.0\r\nHost: x\r\n\r\n";
            $s->blocking(0);
            $open{$s} = '';
            $sel->add($s);
        }
        for my $s ($sel->can_read(0.02)) {
            my $got = sysread($s, my $chunk, 65536);
            if ($got) { $open{$s} .= $chunk; next }
            next if !defined $got && $!{EAGAIN};
            my ($st) = $open{$s} =~ m{^HTTP/1\.\d (\d+)};
            $status{$st // 0}++;
            delete $open{$s};
            $sel->remove($s);
            close $s;
        }
        if (time >= $next_read) {
            push @$seen, limit_of($path =~ m{^/(ad|mr|cap|sl)/} ? $1 : 'ad');
            $next_read = time + 0.05;
            last if $until->();
        }
    }
    for my $s ($sel->handles) {
        # let them finish: a closed client would be an abort
        my $d = time + 10 * $Slow;
        while (time < $d) {
            my $got = sysread($s, my $chunk, 65536);
            last if defined $got && $got == 0;
            if (!defined $got) { sleep 0.01; next }
            $open{$s} .= $chunk;
        }
        my ($st) = $open{$s} =~ m{^HTTP/1\.\d (\d+)};
        $status{$st // 0}++;
        close $s;
    }
    return \%status;
}

# --- up under light load

# the first requests through a fresh nginx are slow (under valgrind, very):
# warm it up, so that minRTT is measured on a warm path
$origin->set('/warm/x', body => 'x', delay => 0.02);
load('/warm/x', 4, 3, sub { 0 }, []);

is(limit_of('ad'), 2, 'adaptive: starts at min_limit (measuring minRTT)');
$origin->set('/ad/x', body => 'x', delay => 0.02);
my @seen;
my $st = load('/ad/x', 4, 30, sub { $seen[-1] >= 8 }, \@seen);
my $peak = (sort { $b <=> $a } @seen)[0];
cmp_ok($peak, '>=', 8, "light load: the limit goes up (2 -> $peak)");
is(join(',', sort keys %$st), '200', 'every request answered 200 (queued at most)');
load('/ad/x', 4, 2, sub { 0 }, \@seen);
is(scalar(grep { $_ < 2 || $_ > 30 } @seen), 0, 'always within [2, 30]');
$peak = $seen[-1];

# the ceiling: with headroom=4 the limit reaches 8 whatever the latencies
# (limit = gradient x limit + 4 with gradient >= 0.5), and stays there
$origin->set('/cap/x', body => 'x', delay => 0.02);
my @cap;
load('/cap/x', 4, 30, sub { $cap[-1] >= 8 }, \@cap);
is($cap[-1], 8, 'headroom=4, max_limit=8: the limit reaches max_limit');
load('/cap/x', 4, 1, sub { 0 }, \@cap);
is(scalar(grep { $_ < 2 || $_ > 8 } @cap), 0, 'and never goes beyond it');

# --- down when the backend slows (x15)

$origin->set('/ad/x', body => 'x', delay => 0.3);
@seen = ();
$st = load('/ad/x', 4, 40, sub { $seen[-1] <= $peak / 2 }, \@seen);
cmp_ok($seen[-1], '<=', $peak / 2,
       "the backend slows: the limit goes down ($peak -> $seen[-1])");
load('/ad/x', 4, 3, sub { 0 }, \@seen);
is(scalar(grep { $_ < 2 || $_ > 30 } @seen), 0, 'always within [2, 30]');
cmp_ok((sort { $a <=> $b } @seen)[0], '>=', 2, 'never below min_limit');
$origin->set('/ad/x', body => 'x');

# --- the backend turns slow and stays slow (x15, its concurrency
# unlimited: merely slower, not overloaded).  The gradient stays at its
# lower clamp (sampleRTT 300 ms > 2 x minRTT x 1.5), so the limit falls to
# the floor where halving and sqrt(limit) balance (4) and, with the old
# minRTT, would stay there (min_rtt_interval=1h: no periodic measurement).
# Pinned at the floor for 5 windows, the controller measures minRTT again
# (the limit reads min_limit meanwhile): minRTT is then the slow backend's
# and the limit grows back beyond twice that floor.

$origin->set('/sl/x', body => 'x', delay => 0.02);
my @sl;
load('/sl/x', 8, 30, sub { $sl[-1] >= 8 }, \@sl);
cmp_ok($sl[-1], '>=', 8, "fast backend: the limit goes up (to $sl[-1])");
$origin->set('/sl/x', body => 'x', delay => 0.3);
@sl = ();
my $down = 0;      # 1: seen at the floor or below (4), 2: then >= 8
load('/sl/x', 8, 40, sub {
    $down = 1 if $down == 0 && $sl[-1] <= 4;
    $down = 2 if $down == 1 && $sl[-1] >= 8;
    return $down == 2;
}, \@sl);
is($down, 2, 'slow backend: the limit fell to the floor, then came back '
             . 'to 8 or more (' . join(',', @sl[-5 .. -1]) . ')')
    or diag("the last limits seen: @sl[-20 .. -1]");
is(scalar(grep { $_ < 2 || $_ > 30 } @sl), 0, 'always within [2, 30]');
my $doc = $n->get('/status')->{body};
my ($min_rtt) = $doc =~ /"name":\s*"sl".*?"min_rtt_us":\s*(\d+)/s;
cmp_ok($min_rtt // 0, '>=', 150000,
       'minRTT measured again: the slow backend\'s (' . ($min_rtt // '?')
       . ' us)');
$origin->set('/sl/x', body => 'x');

# --- minRTT measured again every min_rtt_interval: the limit drops to
# min_limit meanwhile, then comes back

$origin->set('/mr/x', body => 'x', delay => 0.02);
@seen = ();
my $phase = 0;     # 1: seen above min; 2: then back at min; 3: above again
load('/mr/x', 4, 40, sub {
    my $v = $seen[-1];
    $phase = 1 if $phase == 0 && $v > 4;
    $phase = 2 if $phase == 1 && $v == 2;
    $phase = 3 if $phase == 2 && $v > 2;
    return $phase == 3;
}, \@seen);
is($phase, 3, 'min_rtt_interval=1s: the limit rose, dropped to min_limit '
              . 'to measure minRTT, and rose again');

# --- metrics

my $lim = limit_of('ad');
my $m = $n->get('/metrics?family=nginx_breaker_shed_')->{body};
like($m, qr/^# TYPE nginx_breaker_shed_requests_total counter$/m,
     'breaker_shed_requests_total');
like($m, qr/^nginx_breaker_shed_requests_total\{shedder="ad",class="0",result="admitted"\} [1-9]\d*$/m,
     'admitted requests counted by shedder and class');
like($m, qr/^nginx_breaker_shed_requests_total\{shedder="ad",class="0",result="queued"\} \d+$/m,
     'queued (admitted after waiting)');
like($m, qr/^nginx_breaker_shed_requests_total\{shedder="ad",class="0",result="shed"\} 0$/m,
     'shed: none');
like($m, qr/^nginx_breaker_shed_in_flight\{shedder="ad"\} 0$/m, 'in flight now: 0');
like($m, qr/^nginx_breaker_shed_queue_length\{shedder="ad"\} 0$/m, 'waiting now: 0');
like($m, qr/^nginx_breaker_shed_limit\{shedder="ad"\} $lim$/m,
     "the limit gauge is the limit ($lim)");
like($m, qr/^# TYPE nginx_breaker_shed_queue_wait_seconds histogram$/m,
     'the queue wait histogram');
like($m, qr/^nginx_breaker_shed_queue_wait_seconds_count\{shedder="ad"\} \d+$/m,
     'with a count');
unlike($n->log, qr/\[(alert|crit|emerg)\]/, 'no alert in the log');

$n->stop;
$origin->stop;

done_testing();
