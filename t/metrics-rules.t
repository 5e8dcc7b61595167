# contrib/: the Prometheus alerting rules load (promtool check rules), fire
# and stay quiet as their unit tests say (promtool test rules), and the
# Grafana dashboard is valid JSON whose queries use series the modules
# export.  No nginx is involved.
use strict;
use warnings;

use Test::More;
use JSON::PP ();
use File::Basename qw(dirname);
use Cwd qw(abs_path);

my $root = abs_path(dirname(abs_path($0)) . '/..');
my $prom = "$root/contrib/prometheus";

sub run {
    my $out = `@_ 2>&1`;
    return ($? == 0, $out);
}

SKIP: {
    skip 'promtool is not installed (Debian package prometheus)', 3
        unless grep { -x "$_/promtool" } split /:/, $ENV{PATH} // '';

    my ($ok, $out) = run("promtool check rules $prom/nginx-edge-alerts.yml");
    ok($ok, 'promtool check rules') or diag($out);
    like($out, qr/SUCCESS: 6 rules found/, 'six rules');

    ($ok, $out) = run("cd $prom && promtool test rules nginx-edge-alerts.test.yml");
    ok($ok, 'promtool test rules') or diag($out);
}

my $file = "$root/contrib/grafana/nginx-edge.json";
open my $fh, '<', $file or die "$file: $!";
my $json = do { local $/; <$fh> };
close $fh;

my $dash = eval { JSON::PP::decode_json($json) };
ok($dash, 'the dashboard is JSON') or diag($@);

my @exprs = map { $_->{expr} } map { @{ $_->{targets} || [] } }
            @{ $dash->{panels} || [] };
ok(@exprs >= 10, 'the dashboard has its queries');

my %known = map { $_ => 1 } qw(
    nginx_http_requests_total nginx_http_request_duration_seconds_bucket
    nginx_http_request_size_bytes_sum nginx_http_response_size_bytes_sum
    nginx_http_upstream_responses_total
    nginx_http_upstream_response_time_seconds_bucket
    nginx_http_upgraded_connections nginx_connections_active
    nginx_connections_reading nginx_connections_writing
    nginx_connections_waiting nginx_ratelimit_decisions_total
    nginx_cache_requests_total nginx_cache_hits_total
    nginx_cache_served_bytes_total nginx_cache_stored_bytes_total
    nginx_cache_redis_errors_total nginx_cache_redis_timeouts_total
    nginx_cache_lock_waits_total nginx_cache_lock_timeouts_total
    nginx_breaker_state nginx_breaker_calls_total
    nginx_breaker_rejected_total nginx_breaker_transitions_total
    nginx_breaker_call_duration_seconds_bucket
    nginx_breaker_shed_requests_total nginx_breaker_shed_in_flight
    nginx_breaker_shed_limit nginx_breaker_shed_queue_length
    nginx_breaker_shed_queue_wait_seconds_bucket
    nginx_ratelimit_redis_connected nginx_cache_redis_connected
    nginx_ratelimit_pg_failing
    nginx_edge_stats_series nginx_edge_stats_series_capacity
    nginx_edge_stats_series_dropped_total nginx_edge_stats_shm_free_bytes
    nginx_edge_stats_shm_size_bytes
);
my @unknown = grep { !$known{$_} } map { /\b(nginx_[a-z_]+)/g } @exprs;
is_deeply(\@unknown, [], 'the queries use known series');

done_testing();
