# ngx_http_metrics_module: counters survive `nginx -s reload` when the
# metrics catalog is unchanged, and start afresh (with a new start time)
# when it changed.
#
# Test::Nginx has no step between two requests of a block, but it checks
# each response before sending the next request.  reload_after(PATTERN) is
# a response_body_like pattern that matches PATTERN and then reloads nginx:
# optionally edits conf/nginx.conf, sends HUP to the master (pid file in
# the server root) and waits until every worker is a new one, so the next
# request is served by the reloaded configuration.  It fails the match if
# the reload does not happen within 10 seconds.
use strict;
use warnings;

use Test::Nginx::Socket 'no_plan';
use Test::Edge qw(wait_until);

workers(2);
master_on();
no_shuffle();

our ($StartTime, $Body);

sub servroot { $ENV{TEST_NGINX_SERVROOT} || server_root() }

sub workers_of {
    my ($master) = @_;
    my @pids;
    for my $stat (glob '/proc/[0-9]*/stat') {
        open my $fh, '<', $stat or next;
        my $line = <$fh> // '';
        close $fh;
        # pid (comm) state ppid ...: comm may hold spaces, take the last ")"
        push @pids, $1 if $line =~ /^(\d+) \(.*\) \S+ (\d+) / && $2 == $master;
    }
    return @pids;
}

sub reload {
    my ($edit) = @_;
    my $root = servroot();
    open my $fh, '<', "$root/logs/nginx.pid" or return 0;
    my $master = <$fh>;
    close $fh;
    chomp $master;
    my %old = map { $_ => 1 } workers_of($master);
    if ($edit) {
        my $conf = "$root/conf/nginx.conf";
        local $/;
        open my $in, '<', $conf or return 0;
        my $text = <$in>;
        close $in;
        $edit->($text);
        open my $out, '>', $conf or return 0;
        print $out $text;
        close $out;
    }
    kill 'HUP', $master or return 0;
    my $ok = wait_until(10, sub {
        my @now = workers_of($master);
        return @now == 2 && !grep { $old{$_} } @now;
    });
    Test::More::diag("nginx did not reload within 10 s") unless $ok;
    return $ok;
}

sub reload_after {
    my ($re, $edit) = @_;
    return qr/$re(?(?{ main::reload($edit) })|(*FAIL))/;
}

# remembers the start time a scrape shows, or checks it against the one
# remembered: same => 1 (kept), or later or equal => 0 (a fresh zone)
sub start_time {
    my ($same) = @_;
    return qr/^nginx_edge_stats_start_time_seconds\{zone="metrics"\}[ ](\d+)$
              (?(?{ if (!defined $main::StartTime) {
                        $main::StartTime = $^N; 1
                    } elsif ($same) {
                        $^N == $main::StartTime
                    } else {
                        $^N >= $main::StartTime
                    } })|(*FAIL))/mx;
}

add_block_preprocessor(sub { $StartTime = undef });

run_tests();

__DATA__

=== TEST 1: the same configuration: counters and start time are kept
--- http_config
    metrics_zone 1m;
    metrics_label tier $http_x_tier max=2;
--- config
    location = /metrics { metrics; }
    location /a { metrics_location a; return 200 "hello\n"; }
--- more_headers eval
["X-Tier: gold", "X-Tier: gold", "X-Tier: silver", "", "X-Tier: gold", ""]
--- request eval
["GET /a", "GET /a", "GET /a",
 "GET /metrics?family=nginx_http_requests_total,nginx_edge_stats_start",
 "GET /a",
 "GET /metrics?family=nginx_http_requests_total,nginx_edge_stats_start"]
--- response_body_like eval
[qr/./, qr/./, qr/./,
 main::reload_after(qr/^nginx_http_requests_total\{[^}]*tier="gold"\} 2\n(?s:.*)${\ main::start_time(1)}/m),
 qr/./,
 qr/^nginx_http_requests_total\{[^}]*tier="gold"\} 3
nginx_http_requests_total\{[^}]*tier="silver"\} 1
(?s:.*)${\ main::start_time(1)}/m]
--- no_error_log
[error]
[alert]
[crit]
[emerg]



=== TEST 2: another catalog (a label's maximum changed): a fresh zone
--- http_config
    metrics_zone 1m;
    metrics_label tier $http_x_tier max=2;
--- config
    location = /metrics { metrics; }
    location /a { metrics_location a; return 200 "hello\n"; }
--- more_headers eval
["X-Tier: gold", "X-Tier: gold", "", "X-Tier: gold", ""]
--- request eval
["GET /a", "GET /a",
 "GET /metrics?family=nginx_http_requests_total,nginx_edge_stats_start",
 "GET /a",
 "GET /metrics?family=nginx_http_requests_total,nginx_edge_stats_start"]
--- response_body_like eval
[qr/./, qr/./,
 main::reload_after(qr/^nginx_http_requests_total\{[^}]*tier="gold"\} 2\n(?s:.*)${\ main::start_time(1)}/m,
                    sub { $_[0] =~ s/max=2/max=3/ or die "no max=2" }),
 qr/./,
 qr/^nginx_http_requests_total\{[^}]*tier="gold"\} 1
(?s:.*)${\ main::start_time(0)}/m]
--- no_error_log
[error]
[alert]
[crit]
[emerg]



=== TEST 3: a reload that adds a location keeps the counters of the others
--- http_config
    metrics_zone 1m;
--- config
    location = /metrics { metrics; }
    location /a { metrics_location a; return 200 "hello\n"; }
--- request eval
["GET /a", "GET /a",
 "GET /metrics?family=nginx_http_requests_total",
 "GET /b", "GET /a",
 "GET /metrics?family=nginx_http_requests_total"]
--- error_code eval
[200, 200, 200, 200, 200, 200]
--- response_body_like eval
[qr/./, qr/./,
 main::reload_after(qr/^nginx_http_requests_total\{[^}]*location="a"[^}]*\} 2$/m,
                    sub { $_[0] =~ s{(location /a )}{location /b { metrics_location b; return 200 "b\\n"; }\n    $1} or die "no location /a" }),
 qr/^b$/, qr/./,
 qr/^nginx_http_requests_total\{[^}]*location="a"[^}]*\} 3
nginx_http_requests_total\{[^}]*location="b"[^}]*\} 1$/m]
--- no_error_log
[error]
[alert]
[crit]
[emerg]
