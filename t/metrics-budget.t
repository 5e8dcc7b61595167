# Series budgets of the request metrics: each family has its own (junk in
# one family never takes another's room), and idle run-time series age
# out (metrics_zone idle=), so a label value that arrives after the budget
# was spent gets its own series once older ones have gone idle.
#
# Plain Test::More: the aging block polls the exposition with a deadline,
# which the block format cannot express.
use strict;
use warnings;

use Test::More;
use File::Temp ();
use Time::HiRes qw(time sleep);
use Test::Edge::Nginx;
use Test::Edge qw(promtool_ok);

# { "family" => value } of one health family, e.g. _family_series_budget
sub per_family {
    my ($body, $name) = @_;
    my %v;
    while ($body =~ /^\Q$name\E\{zone="metrics",family="([^"]+)"\} (\d+)$/mg) {
        $v{$1} = $2;
    }
    return \%v;
}

subtest 'junk in the labelled families leaves the upstream family its room' => sub {
    my $backend = Test::Edge::Nginx::free_port();
    my $n = Test::Edge::Nginx->start(workers => 2, http => <<"HTTP");
    metrics_zone 64k;
    metrics_label id \$arg_id max=1000;
    upstream backend { server 127.0.0.1:$backend; }
    server {
        listen 127.0.0.1:$backend;
        location / { return 204; }
    }
    server {
        listen 127.0.0.1:\$PORT;
        location = /metrics { metrics; }
        location /a { metrics_location a; return 200 "ok\\n"; }
        location /up { metrics_location up; proxy_pass http://backend; }
    }
HTTP

    my $junk = 200;
    is($n->get("/a?id=junk$_")->{status}, 200, "junk $_") for 1 .. $junk;
    is($n->get('/up')->{status}, 204, 'a request through the upstream');

    my $body = $n->get('/metrics')->{body};
    my $budget = per_family($body, 'nginx_edge_stats_family_series_budget');
    my $series = per_family($body, 'nginx_edge_stats_family_series');
    my $dropped = per_family($body, 'nginx_edge_stats_series_dropped_total');

    # the labelled families are full, each within its own budget: every
    # request beyond it was counted in the overflow series
    for my $f (qw(nginx_http_requests_total
                  nginx_http_request_duration_seconds))
    {
        ok($budget->{$f} > 0 && $budget->{$f} < $junk, "$f has a budget")
            or diag("budget $f: " . ($budget->{$f} // 'none'));
        is($series->{$f}, $budget->{$f}, "$f is full");
        # the junk and the upstream request (id="") beyond the budget
        is($dropped->{$f}, $junk + 1 - $budget->{$f},
           "$f: the requests beyond its budget went to the overflow series");
    }

    # the upstream families still got their series
    like($body, qr/^nginx_http_upstream_responses_total\{server="",location="up",upstream="backend",peer="127\.0\.0\.1:$backend",status="204"\} 1$/m,
         'the upstream responses series exists, counted once');
    is($dropped->{nginx_http_upstream_responses_total}, 0,
       'nothing of the upstream family overflowed');
    like($body, qr/^nginx_http_requests_total\{[^}]*,id="__overflow__"\} \d+$/m,
         'the overflow series of the requests is there');
    ok(promtool_ok($body), 'promtool accepts the scrape');

    unlike($n->final_log, qr/\[(alert|crit|emerg)\]/, 'no alert in the log');
    $n->stop;
};

subtest 'an idle series ages out; a new value then gets its own series' => sub {
    my $n = Test::Edge::Nginx->start(workers => 2, http => <<'HTTP');
    metrics_zone 64k idle=1s;
    metrics_label tenant $http_x_tenant max=2;
    server {
        listen 127.0.0.1:$PORT;
        location = /metrics { metrics; }
        location /a { metrics_location a; return 200 "ok\n"; }
    }
HTTP

    my $t0 = time;
    $n->get('/a', 'X-Tenant' => 'junk1');
    $n->get('/a', 'X-Tenant' => 'junk2');
    $n->get('/a', 'X-Tenant' => 'real');

    my $body = $n->get('/metrics?family=nginx_http_requests_total')->{body};
    my $took = time - $t0;

    SKIP: {
        # what the budget did before any series could age (1 s)
        skip 'the first requests took longer than the idle time', 2
            if $took >= 0.9;
        like($body, qr/tenant="junk1"\} 1$/m, 'junk1 has its series');
        like($body, qr/tenant="__overflow__"\} 1$/m,
             'real went to the overflow: the budget (2) was spent');
    }

    # the junk is never seen again: after the idle time (1 s), the next
    # new value finds room (a freed slot is reused after a 1 s grace)
    my $got = Test::Edge::wait_until(20, sub {
        $n->get('/a', 'X-Tenant' => 'real');
        my $b = $n->get('/metrics?family=nginx_http_requests_total')->{body};
        return $b =~ /tenant="real"\} (\d+)$/m ? [$1, $b] : undef;
    });

    ok($got, 'real got its own series') or return;
    unlike($got->[1], qr/tenant="junk[12]"/,
           'the idle junk series left the exposition');

    $n->get('/a', 'X-Tenant' => 'real');
    $body = $n->get('/metrics?family=nginx_http_requests_total')->{body};
    like($body, qr/tenant="real"\} ${\ ($got->[0] + 1)}$/m,
         'and counts every request from then on');
    ok(promtool_ok($body), 'promtool accepts the scrape');

    unlike($n->final_log, qr/\[(alert|crit|emerg)\]/, 'no alert in the log');
    $n->stop;
};

subtest 'rounds of new values: each round gets its own series as the last one ages out' => sub {
    # Each round's values are new; the previous round's have been idle
    # for the idle time.  A first request of the round frees them (the
    # families free their idle series when they create one), and after
    # the grace (1 s) their slots serve the round: each value has its own
    # series, counted exactly.  Freed series leave tombstones in the
    # lookup table, which is rebuilt along the way.
    my $n = Test::Edge::Nginx->start(workers => 2, http => <<'HTTP');
    metrics_zone 64k idle=2s;
    metrics_label tenant $http_x_tenant max=60;
    server {
        listen 127.0.0.1:$PORT;
        location = /metrics { metrics; }
        location /a { metrics_location a; return 200 "ok\n"; }
    }
HTTP

    for my $round (1 .. 4) {
        sleep 2.5;                                  # idle (2 s) and more
        $n->get('/a', 'X-Tenant' => "trigger$round");   # frees the idle
        sleep 1.2;                                  # the grace (1 s)

        my $t0 = time;
        $n->get('/a', 'X-Tenant' => "r$round-$_") for 1 .. 50;
        my $body = $n->get('/metrics')->{body};

        SKIP: {
            # a value of this round idle for 2 s could itself be freed by
            # a later one: the guarantee is for a round within the idle time
            skip "round $round took longer than the idle time", 2
                if time - $t0 >= 1.9;

            my @own = grep { $body =~ /^nginx_http_requests_total\{[^}]*,tenant="r$round-$_"\} 1$/m }
                      1 .. 50;
            is(scalar @own, 50, "round $round: 50 values, each its own series");
            ok(promtool_ok($body), "round $round: promtool accepts the scrape");
        }

        unlike($body, qr/tenant="r${\ ($round - 1)}-/,
               "round $round: the last round's series are gone")
            if $round > 1;
    }

    unlike($n->final_log, qr/\[(alert|crit|emerg)\]/, 'no alert in the log');
    $n->stop;
};

subtest 'metrics_zone idle= is checked' => sub {
    my $n = eval {
        Test::Edge::Nginx->start(http => "    metrics_zone 64k idle=10ms;\n");
    };
    ok(!$n, 'idle=10ms is refused');
    like($@, qr/invalid idle time "idle=10ms"/, 'the error names the value');
};

done_testing();
