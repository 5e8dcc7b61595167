# algorithm=sliding_window in shared memory: the two-counter estimate.
# Windows are aligned on the monotonic clock, which this test reads too
# (CLOCK_MONOTONIC), so it knows where each window starts.  A request is
# decided at some instant between our sending it and reading its answer:
# every timing assertion is a bound computed from those two instants, never
# one interleaving.  With N per window W, a request at offset e into a
# window whose predecessor admitted p passes when
#     p * (W - e) + (q + 1) * W <= N * W      (q: admitted so far here)
# so after a full previous window (p = N), at most floor(N * e / W) pass by
# offset e, and at least floor(N * e0 / W) when all arrive after e0.
use strict;
use warnings;

use Test::More;
use POSIX qw(floor);
use Time::HiRes qw(sleep clock_gettime CLOCK_MONOTONIC);
use Test::Edge qw(:all);
use Test::Edge::Nginx;

sub mono { clock_gettime(CLOCK_MONOTONIC) }

# the fast zone: 10 per window of 4 s (20 s under valgrind, whose nginx is
# slow enough that a burst of 10 could outlast 4 s)
my $W = 4 * $Test::Edge::Valgrind::Slowdown;
my $fast_rate = 600 / $W;

(my $http = <<'HTTP') =~ s/\@FAST\@/rate=${fast_rate}r\/m window=${W}s/;
    ratelimit_zone $arg_k zone=sw:1m rate=10r/m algorithm=sliding_window;
    ratelimit_zone $arg_k zone=fast:1m @FAST@
                   algorithm=sliding_window;
    ratelimit_zone $arg_k zone=tiered:1m rate=10r/m tier=$arg_t
                   algorithm=sliding_window;
    ratelimit_tier zone=tiered tier=gold rate=20r/m;
    ratelimit_zone $arg_k zone=banned:1m rate=2r/m algorithm=sliding_window;
    ratelimit_ban zone=banned threshold=2 window=1m duration=1m;
    ratelimit_zone $http_x_key zone=hostile:1m rate=3r/m
                   algorithm=sliding_window;
    server {
        listen 127.0.0.1:$PORT;
        location = /ok { return 200 "ok\n"; }
        location = /metrics { metrics; }
        location = /sw {
            ratelimit zone=sw;
            add_header X-Status $ratelimit_status always;
            proxy_pass http://127.0.0.1:$PORT/ok;
        }
        location = /fast {
            ratelimit zone=fast;
            add_header X-Status $ratelimit_status always;
            proxy_pass http://127.0.0.1:$PORT/ok;
        }
        location = /cost4 {
            ratelimit zone=sw cost=4;
            add_header X-Status $ratelimit_status always;
            proxy_pass http://127.0.0.1:$PORT/ok;
        }
        location = /cost2 {
            ratelimit zone=sw cost=2;
            add_header X-Status $ratelimit_status always;
            proxy_pass http://127.0.0.1:$PORT/ok;
        }
        location = /costvar {
            ratelimit zone=sw cost=$arg_c;
            add_header X-Status $ratelimit_status always;
            proxy_pass http://127.0.0.1:$PORT/ok;
        }
        location = /tiered {
            ratelimit zone=tiered;
            add_header X-Status $ratelimit_status always;
            proxy_pass http://127.0.0.1:$PORT/ok;
        }
        location = /dry {
            ratelimit zone=sw;
            ratelimit_dry_run on;
            add_header X-Status $ratelimit_status always;
            proxy_pass http://127.0.0.1:$PORT/ok;
        }
        location = /legacy {
            ratelimit zone=sw;
            ratelimit_headers legacy;
            add_header X-Status $ratelimit_status always;
            proxy_pass http://127.0.0.1:$PORT/ok;
        }
        location = /banned {
            ratelimit zone=banned;
            add_header X-Status $ratelimit_status always;
            proxy_pass http://127.0.0.1:$PORT/ok;
        }
        location = /hostile {
            ratelimit zone=hostile;
            add_header X-Status $ratelimit_status always;
            proxy_pass http://127.0.0.1:$PORT/ok;
        }
    }
HTTP

my $nginx = Test::Edge::Nginx->start(workers => 2, http => $http);

my $uniq = 0;
sub fresh_key { 'k' . $$ . '-' . $uniq++ }

# the decisions of GET path, n times, each "status X-Status"
sub decisions {
    my ($path, $n) = @_;
    return map { $nginx->decision($path) } 1 .. $n;
}

sub count { my $want = shift; scalar grep { $_ eq $want } @_ }

# runs CODE (which sends requests) so that it starts and ends within one
# window of W seconds; retried with a later window if it straddled one;
# returns (the window's index, CODE's result)
sub within_one_window {
    my ($w, $code) = @_;
    for (1 .. 5) {
        my $t0 = mono();
        my @r = $code->();
        my $t1 = mono();
        return (floor($t0 / $w), @r) if floor($t0 / $w) == floor($t1 / $w);
    }
    die "five attempts straddled a window boundary\n";
}

sub wait_for_offset {
    my ($w, $k, $off) = @_;
    my $at = $k * $w + $off;
    sleep(0.005) while mono() < $at;
}


# --- exactly N of a window, whatever the workers
{
    my ($k, @d) = within_one_window(60, sub {
        my $key = fresh_key();
        decisions("/sw?k=$key", 14);
    });
    is(count('200 PASSED', @d), 10, 'N=10: exactly 10 of 14 pass');
    is(count('429 REJECTED', @d), 4, 'the other 4 are refused');
    is_deeply([@d[0 .. 9]], [('200 PASSED') x 10], 'the first 10 pass');
}


# --- headers: the quota is the window's; Retry-After is when enough of
# the counted weight has left the window
{
    my $key = fresh_key();
    my ($t0, $r1, $t1);
    my ($k) = within_one_window(60, sub {
        $key = fresh_key();
        $t0 = mono();
        $r1 = $nginx->get("/sw?k=$key");
        $nginx->get("/sw?k=$key") for 2 .. 10;
        my $r = $nginx->get("/sw?k=$key");
        $t1 = mono();
        $r;
    });
    is($r1->{headers}{'ratelimit-policy'}, '"sw";q=10;w=60',
       'RateLimit-Policy: the requests of a window, w= the window');
    like($r1->{headers}{'ratelimit'}, qr/^"sw";r=9;t=\d+$/,
         'RateLimit: 9 left after the first');
    my ($t) = $r1->{headers}{'ratelimit'} =~ /t=(\d+)/;
    # full again when this window and the next have passed: 2W - e
    my ($e0, $e1) = ($t0 - $k * 60, $t1 - $k * 60);
    ok($t >= 120 - $e1 && $t <= 120 - $e0 + 1,
       "t= is the end of the next window ($t)");

    my $r = $nginx->get("/sw?k=$key");
    is($r->{status}, 429, 'the 11th is refused');
    my $ra = $r->{headers}{'retry-after'};
    # in the next window this one's 10 weigh 10 * (W - e'') / W: one
    # request fits once e'' >= W / 10, i.e. after W - e + 6 s
    ok(defined $ra && $ra >= 66 - $e1 - 1 && $ra <= 66 - $e0 + 1,
       "Retry-After: when one request's weight has left ("
       . ($ra // 'none') . ')');
    like($r->{headers}{'ratelimit'}, qr/^"sw";r=0;t=\d+$/,
         'RateLimit on a refusal: none left');

    my $l = $nginx->get('/legacy?k=' . fresh_key());
    is($l->{headers}{'x-ratelimit-limit'}, 10, 'legacy headers: the quota');
    is($l->{headers}{'x-ratelimit-remaining'}, 9, 'legacy: remaining');
}


# --- the boundary burst: N at the end of window k, N at the start of k+1.
# A fixed window would pass 2N within moments; here the second burst gets
# at most floor(N * e / W) by its offset e into k+1: never N, and the two
# together at most 2N - 1 in any interval of length W.
{
    my $w = $W;
    my ($x, $y, @a, @b, @c);
    my ($k) = within_one_window($w, sub {
        $x = fresh_key();
        $y = fresh_key();
        # start late in the window: the worst case is N at its very end
        my $k = floor(mono() / $w);
        wait_for_offset($w, $k, 0.55 * $w);
        @a = (decisions("/fast?k=$x", 12), decisions("/fast?k=$y", 10));
    });
    is(count('200 PASSED', @a), 20,
       'window k: N=10 pass for each of two keys (nothing before)');

    wait_for_offset($w, $k + 1, 0);
    @b = decisions("/fast?k=$x", 10);
    my $e1 = mono() - ($k + 1) * $w;
    ok($e1 < $w, 'the second burst ended within window k+1')
        or diag("it ended at offset $e1");
    my $passed = count('200 PASSED', @b);
    my $bound = floor(10 * $e1 / $w);
    ok($passed <= $bound,
       "boundary burst: $passed of 10 pass, at most floor(N * e / W) = "
       . "$bound by offset $e1");
    ok(10 + $passed <= 19, 'the two bursts together: never 2N');

    # refused within window k+1 after a full window k: the wait is within
    # this window, until the previous window weighs one request less:
    # at most W / N (0.4 s, 2 s under valgrind), so Retry-After says that
    my $r = $nginx->get("/fast?k=$x");
    ok($r->{status} == 200
       || ($r->{headers}{'retry-after'} // 99) <= $w / 10 + 0.999,
       "Retry-After within the window: at most W / N ("
       . ($r->{headers}{'retry-after'} // 'none') . ')');

    # half a window later the previous window weighs half
    wait_for_offset($w, $k + 1, $w / 2);
    my $e0 = mono() - ($k + 1) * $w;
    @c = decisions("/fast?k=$y", 10);
    $e1 = mono() - ($k + 1) * $w;
    $passed = count('200 PASSED', @c);
    my ($lo, $hi) = (floor(10 * $e0 / $w), floor(10 * $e1 / $w));
    ok($e1 < $w && $passed >= $lo && $passed <= $hi,
       "after half a window: $passed pass, between $lo and $hi "
       . "(offsets $e0 .. $e1)");
    is(count('429 REJECTED', @c), 10 - $passed, 'the rest are refused');
}


# --- cost: a request takes `cost` of the window's N
{
    my ($k, @d) = within_one_window(60, sub {
        my $key = fresh_key();
        map { $nginx->decision("$_?k=$key") }
            qw(/cost4 /cost4 /cost4 /cost2 /cost2);
    });
    is_deeply(\@d, ['200 PASSED', '200 PASSED', '429 REJECTED',
                    '200 PASSED', '429 REJECTED'],
              'cost=4 twice (8), a third does not fit, cost=2 fills 10');

    my $key = fresh_key();
    is($nginx->decision("/costvar?k=$key&c=11"), '429 REJECTED',
       'a cost from a variable above N is refused');
    like($nginx->log, qr/\[warn\] .*cost "11" exceeds the 10 requests per window of zone "sw"/,
         'and logged');
    is($nginx->decision("/costvar?k=$key&c=10"), '200 PASSED',
       'it took nothing: a cost of N still passes');
}


# --- tiers: N per window is the tier's rate over the zone's window
{
    my ($k, @d) = within_one_window(60, sub {
        my $key = fresh_key();
        decisions("/tiered?k=$key&t=gold", 22);
    });
    is(count('200 PASSED', @d), 20, 'tier gold: 20 of 22 pass');
    my $r = $nginx->get('/tiered?t=gold&k=' . fresh_key());
    is($r->{headers}{'ratelimit-policy'}, '"tiered/gold";q=20;w=60',
       "the tier's quota");
    ($k, @d) = within_one_window(60, sub {
        decisions('/tiered?t=none&k=' . fresh_key(), 12);
    });
    is(count('200 PASSED', @d), 10, "no tier: the zone's 10");
}


# --- dry run: decides and counts, refuses nothing; what would have been
# refused is not counted
{
    my ($k, @d) = within_one_window(60, sub {
        my $key = fresh_key();
        (decisions("/dry?k=$key", 12), decisions("/sw?k=$key", 1));
    });
    is(count('200 PASSED', @d), 10, 'dry run: 10 pass');
    is(count('200 DRY_RUN', @d), 2, 'two would have been refused');
    is($d[-1], '429 REJECTED',
       'the window holds the 10 that passed: without dry run, refused');
}


# --- bans: a key refused threshold times is banned
{
    my ($k, @d) = within_one_window(60, sub {
        decisions('/banned?k=' . fresh_key(), 5);
    });
    is_deeply(\@d, ['200 PASSED', '200 PASSED', '429 REJECTED',
                    '429 BANNED', '429 BANNED'],
              'two pass, one refused, the second refusal bans');
}


# --- hostile keys: long keys are hashed, bytes of any kind are a key
{
    my $long = 'x' x 5000 . fresh_key();
    my ($k, @d) = within_one_window(60, sub {
        map { $nginx->get('/hostile', 'X-Key' => $long) } 1 .. 4;
    });
    is_deeply([map { $_->{status} } @d], [200, 200, 200, 429],
              'a 5000-byte key: limited as any other (N=3)');
    ($k, @d) = within_one_window(60, sub {
        map { $nginx->get('/hostile', 'X-Key' => "{}:\x01\xff%00 " . $uniq) }
            1 .. 4;
    });
    is_deeply([map { $_->{status} } @d], [200, 200, 200, 429],
              'a key of braces, colons and control bytes: the same');
}


# --- metrics: the decisions by result, as for GCRA
{
    my $m = $nginx->get('/metrics')->{body};
    like($m, qr/^nginx_ratelimit_decisions_total\{zone="fast",result="passed"\} \d+$/m,
         'ratelimit_decisions_total for the sliding zone');
    my ($rej) = $m =~ /^nginx_ratelimit_decisions_total\{zone="banned",result="banned"\} (\d+)$/m;
    is($rej, 2, 'two banned decisions counted');
}

unlike($nginx->log, qr/\[(alert|crit|emerg)\]/, 'no alert in error.log');
$nginx->stop;

done_testing();
