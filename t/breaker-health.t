# ngx_http_breaker_status_module: the health endpoint (breaker_health).
#
# live answers 200 whatever the dependencies; ready reads every module's
# Redis connections from the metrics registry's zones (the ratelimit and
# the cache module, two other .so files), answers 200 while they are up,
# 503 once the Redis they use is stopped, and 200 again after it is
# restarted; the policies (redis=warn|off), the shared memory fill and its
# threshold (shm=N%), and configurations nginx -t refuses.
#
# The Redis here is a private redis-server: stopping the fixtures' one
# would disturb the files that run at the same time.
use strict;
use warnings;

use Test::More;
use JSON::PP ();
use File::Temp qw(tempdir);
use Time::HiRes qw(sleep time);
use Test::Edge qw(:all);
use Test::Edge::Nginx;

my $dir = tempdir(CLEANUP => 1);
my $redis_pid;
END { kill 'TERM', $redis_pid if $redis_pid }

# a private redis-server on PORT, its pid
sub start_redis {
    my ($port, $extra) = @_;
    open my $fh, '>', "$dir/redis-$port.conf" or die $!;
    print $fh <<"CONF";
bind 127.0.0.1
port $port
daemonize yes
pidfile $dir/redis-$port.pid
logfile $dir/redis-$port.log
dir $dir
save ""
appendonly no
@{[ $extra // '' ]}
CONF
    close $fh;
    unlink "$dir/redis-$port.pid";
    system('redis-server', "$dir/redis-$port.conf") == 0
        or die "redis-server failed";
    wait_until(10, sub { -s "$dir/redis-$port.pid" }) or die "no redis pid";
    open my $p, '<', "$dir/redis-$port.pid" or die $!;
    chomp(my $pid = <$p>);
    return $pid;
}

sub stop_redis {
    my ($pid) = @_;
    kill 'TERM', $pid;
    wait_until(10, sub { !kill 0, $pid }) or die "redis $pid did not stop";
}

# GET path: [status, decoded body or undef, response]
sub get_json {
    my ($nginx, $path, $method) = @_;
    my $res = $nginx->request($method // 'GET', $path);
    my $doc = eval { JSON::PP::decode_json($res->{body}) };
    return ($res->{status}, $doc, $res);
}

sub redis_entries {
    my ($doc) = @_;
    return {} unless ref $doc eq 'HASH' && ref $doc->{checks}{redis};
    return { map { ("$_->{module}/$_->{server}" => $_) }
             @{ $doc->{checks}{redis} } };
}

sub shm_entry {
    my ($doc, $zone) = @_;
    my ($e) = grep { $_->{zone} eq $zone } @{ $doc->{checks}{shm} // [] };
    return $e;
}

my $rport = Test::Edge::Nginx::free_port();
$redis_pid = start_redis($rport);

my $nginx = Test::Edge::Nginx->start(workers => 2, http => <<"HTTP");
    ratelimit_redis r 127.0.0.1:$rport timeout=200ms;
    ratelimit_zone \$arg_k zone=rl:1m rate=1r/m redis=r on_failure=open;
    edge_cache_redis c 127.0.0.1:$rport timeout=200ms;
    limit_req_zone \$binary_remote_addr zone=small:32k rate=1r/s;
    limit_req_zone \$binary_remote_addr zone=caf\xe9:32k rate=1r/s;
    server {
        listen 127.0.0.1:\$PORT;
        location = /live { breaker_health live; }
        location = /ready { breaker_health ready; }
        location = /ready-warn { breaker_health ready redis=warn; }
        location = /ready-off { breaker_health ready redis=off; }
        location = /ready-shm { breaker_health ready redis=off shm=10%; }
        location = /ready-shm-high { breaker_health ready redis=off shm=99%; }
    }
HTTP

# --- live: the worker answers
{
    my ($status, $doc, $res) = get_json($nginx, '/live');
    is($status, 200, 'live: 200');
    is($res->{headers}{'content-type'}, 'application/json', 'live: JSON');
    is($doc->{status}, 'ok', 'live: status ok');
    my %workers = map { $_ => 1 } $nginx->worker_pids;
    ok($workers{ $doc->{pid} // 0 }, 'live: the pid is a worker\'s')
        or diag("pid $doc->{pid}, workers " . join ' ', keys %workers);
    like($doc->{uptime}, qr/^\d+$/, 'live: uptime in seconds');

    ($status, undef, $res) = get_json($nginx, '/live', 'HEAD');
    is($status, 200, 'live: HEAD 200');
    is($res->{body}, '', 'live: HEAD has no body');

    ($status, $doc, $res) = get_json($nginx, '/live', 'POST');
    is($status, 405, 'live: POST is 405');
    is($res->{headers}{allow}, 'GET, HEAD', 'live: with Allow');
    is($doc->{error}, 'method_not_allowed', 'live: JSON error body');
}

# --- ready while Redis is up: every module's server, both workers
my ($status, $doc);
ok(wait_until(20, sub {
       ($status, $doc) = get_json($nginx, '/ready');
       my $e = redis_entries($doc);
       $status == 200 && keys %$e == 2
           && !grep { $_->{state} ne 'up' } values %$e;
   }), 'ready: 200 once every worker is connected')
    or diag(JSON::PP->new->canonical->encode($doc // {}));
is($doc->{status}, 'ok', 'ready: status ok');
{
    my $e = redis_entries($doc);
    is_deeply([sort keys %$e], ['cache/c', 'ratelimit/r'],
              'ready: the Redis servers of the ratelimit and cache modules');
    is($e->{'ratelimit/r'}{connected}, 2, 'ready: two workers connected');
    is($e->{'ratelimit/r'}{workers}, 2, 'ready: of two');
    is($e->{'cache/c'}{status}, 'ok', 'ready: check status ok');
}
ok(ref $doc->{checks}{shm} eq 'ARRAY', 'ready: shared memory listed');
{
    my $e = shm_entry($doc, 'small');
    ok($e, 'ready: the limit_req zone is listed') or diag(explain($doc));
    if ($e) {
        is($e->{size}, 32768, 'shm: its size');
        cmp_ok($e->{pages}, '>', 0, 'shm: pages');
        cmp_ok($e->{pages_free}, '<', $e->{pages},
               'shm: limit_req took a page for its tree');
        is($e->{fill_percent},
           int(($e->{pages} - $e->{pages_free}) * 100 / $e->{pages}),
           'shm: fill_percent is pages used over pages');
        is($e->{status}, 'ok', 'shm: no threshold, ok');
    }
    ok(shm_entry($doc, 'edge_stats_ratelimit'),
       'shm: the stats zones are listed too');
    # JSON::PP decodes to characters: U+FFFD for the Latin-1 byte
    ok(shm_entry($doc, "caf\x{FFFD}"),
       'shm: a zone name that is not UTF-8 is listed, the byte replaced');
}

# --- thresholds on the fill
{
    my ($st, $d) = get_json($nginx, '/ready-shm');
    my $e = shm_entry($d, 'small');
    cmp_ok($e->{fill_percent}, '>=', 10, 'shm=10%: the 32k zone is over it')
        or diag(explain($e));
    is($st, 503, 'shm=10%: 503');
    is($d->{status}, 'fail', 'shm=10%: status fail');
    is($e->{status}, 'fail', 'shm=10%: the zone failed');
    is(shm_entry($d, 'edge_stats_ratelimit')->{status}, 'ok',
       'shm=10%: the stats zones are never judged');
    ok(!exists $d->{checks}{redis}, 'redis=off: not listed');

    ($st, $d) = get_json($nginx, '/ready-shm-high');
    is($st, 200, 'shm=99%: 200');
    is(shm_entry($d, 'small')->{status}, 'ok', 'shm=99%: the zone is ok');
}

# --- Redis stops: every worker loses it, ready fails, live does not
stop_redis($redis_pid);
undef $redis_pid;
ok(wait_until(20, sub {
       ($status, $doc) = get_json($nginx, '/ready');
       my $e = redis_entries($doc);
       $status == 503 && keys %$e == 2
           && !grep { $_->{state} ne 'down' } values %$e;
   }), 'Redis stopped: ready is 503')
    or diag(JSON::PP->new->canonical->encode($doc // {}));
is($doc->{status}, 'fail', 'ready: status fail');
{
    my $e = redis_entries($doc);
    is($e->{'ratelimit/r'}{connected}, 0, 'ready: no worker connected');
    is($e->{'ratelimit/r'}{status}, 'fail', 'ready: the check failed');
}
{
    my ($st, $d) = get_json($nginx, '/ready-warn');
    is($st, 200, 'redis=warn: 200 with Redis down');
    is($d->{status}, 'warn', 'redis=warn: status warn');
    is(redis_entries($d)->{'cache/c'}{status}, 'warn',
       'redis=warn: the check warns');

    ($st, $d) = get_json($nginx, '/ready-off');
    is($st, 200, 'redis=off: 200 with Redis down');
    is($d->{status}, 'ok', 'redis=off: status ok');

    ($st, $d) = get_json($nginx, '/live');
    is($st, 200, 'live: still 200');
}

# --- Redis back: the workers reconnect (backoff up to 3 s), ready is 200
$redis_pid = start_redis($rport);
# (200 already while only some workers are back: "partial" is a warning)
ok(wait_until(30, sub {
       ($status, $doc) = get_json($nginx, '/ready');
       my $e = redis_entries($doc);
       $status == 200 && keys %$e == 2
           && !grep { $_->{state} ne 'up' } values %$e;
   }), 'Redis restarted: ready is 200 again, every worker connected')
    or diag(JSON::PP->new->canonical->encode($doc // {}));
{
    my $e = redis_entries($doc);
    is($e->{'ratelimit/r'}{state}, 'up', 'ratelimit: up');
    is($e->{'cache/c'}{state}, 'up', 'cache: up');
    is($e->{'ratelimit/r'}{connected}, 2, 'both workers, counted once each');
}

# --- a reload: the old workers' connections leave the count as they
# exit, the new workers' join it; the count settles at the worker count
{
    open my $fh, '<', "$nginx->{prefix}/logs/nginx.pid" or die $!;
    chomp(my $master = <$fh>);
    my %old = map { $_ => 1 } $nginx->worker_pids;
    kill 'HUP', $master;
    ok(wait_until(30, sub {
           my @w = $nginx->worker_pids;
           @w == 2 && !grep { $old{$_} } @w;
       }), 'reload: two new workers, the old ones gone');
    ok(wait_until(30, sub {
           ($status, $doc) = get_json($nginx, '/ready');
           my $e = redis_entries($doc);
           $status == 200 && keys %$e == 2
               && !grep { $_->{state} ne 'up' } values %$e;
       }), 'reload: every new worker connected')
        or diag(JSON::PP->new->canonical->encode($doc // {}));
    my $e = redis_entries($doc);
    is($e->{'ratelimit/r'}{connected}, 2, 'reload: counted once each');
    is($e->{'cache/c'}{connected}, 2, 'reload: cache too');
}

$nginx->stop;
unlike($nginx->final_log, qr/\[(alert|crit|emerg)\]|open socket/,
       'no alert or socket left');
stop_redis($redis_pid);
undef $redis_pid;

# --- one worker of two connected: a Redis that takes one client refuses
# the second worker ("max number of clients reached"): partial, a warning
{
    my $port = Test::Edge::Nginx::free_port();
    my $pid = start_redis($port, 'maxclients 1');
    my $n = Test::Edge::Nginx->start(workers => 2, http => <<"HTTP");
    ratelimit_redis one 127.0.0.1:$port timeout=200ms;
    ratelimit_zone \$arg_k zone=rl1:1m rate=1r/m redis=one on_failure=open;
    server {
        listen 127.0.0.1:\$PORT;
        location = /ready { breaker_health ready; }
    }
HTTP
    my ($st, $d, $e);
    ok(wait_until(20, sub {
           ($st, $d) = get_json($n, '/ready');
           $e = redis_entries($d)->{'ratelimit/one'};
           $e && $e->{connected} == 1;
       }), 'maxclients 1: one worker connected')
        or diag(JSON::PP->new->canonical->encode($d // {}));
    is($e->{state}, 'partial', 'partial');
    is($e->{workers}, 2, 'of two workers');
    is($e->{status}, 'warn', 'a warning, whatever redis= says');
    is($st, 200, 'ready: 200');
    is($d->{status}, 'warn', 'ready: status warn');
    $n->stop;
    stop_redis($pid);
}

# --- PostgreSQL: a ratelimit_pg_map whose table does not exist yet fails
# its refreshes (pg_failing 1), and works once the table is created.  The
# fixtures' PostgreSQL keeps running: only this file's table changes.
my $table = "breaker_health_$$";
pg_exec("SET client_min_messages = warning; DROP TABLE IF EXISTS $table");
$nginx = Test::Edge::Nginx->start(workers => 2, http => <<"HTTP");
    ratelimit_pg_map \$arg_k \$health_tier
        "dsn=$ENV{TEST_NGINX_PG_DSN}"
        "query=SELECT k, v FROM $table" refresh=1s timeout=2s;
    server {
        listen 127.0.0.1:\$PORT;
        location = /ready { breaker_health ready; }
        location = /ready-pg { breaker_health ready pg=fail; }
        location = /ready-pg-off { breaker_health ready pg=off; }
    }
HTTP

sub pg_entry {
    my ($doc) = @_;
    my ($e) = grep { ($_->{map} // '') eq 'health_tier' }
              @{ $doc->{checks}{pg} // [] };
    return $e;
}

ok(wait_until(20, sub {
       ($status, $doc) = get_json($nginx, '/ready');
       my $e = pg_entry($doc);
       $e && $e->{state} eq 'failing';
   }), 'pg: the failing refresh is seen')
    or diag(JSON::PP->new->canonical->encode($doc // {}));
is($status, 200, 'pg=warn (the default): 200, the map serves its default');
is($doc->{status}, 'warn', 'pg=warn: status warn');
is(pg_entry($doc)->{module}, 'ratelimit', 'pg: the module is named');
is(pg_entry($doc)->{status}, 'warn', 'pg: the check warns');
{
    my ($st, $d) = get_json($nginx, '/ready-pg');
    is($st, 503, 'pg=fail: 503');
    is(pg_entry($d)->{status}, 'fail', 'pg=fail: the check failed');
    ($st, $d) = get_json($nginx, '/ready-pg-off');
    is($st, 200, 'pg=off: 200');
    ok(!exists $d->{checks}{pg}, 'pg=off: not listed');
}

pg_exec("CREATE TABLE $table (k text, v text);"
        . " INSERT INTO $table VALUES ('a', 'premium')");
ok(wait_until(30, sub {
       ($status, $doc) = get_json($nginx, '/ready-pg');
       $status == 200;
   }), 'pg: the table exists, the next refresh works: 200')
    or diag(JSON::PP->new->canonical->encode($doc // {}));
is(pg_entry($doc)->{state}, 'ok', 'pg: state ok');
is(pg_entry($doc)->{status}, 'ok', 'pg: status ok');
is($doc->{status}, 'ok', 'pg: ready ok');

$nginx->stop;
unlike($nginx->final_log, qr/\[(alert|crit|emerg)\]|open socket/,
       'no alert or socket left');
pg_exec("SET client_min_messages = warning; DROP TABLE IF EXISTS $table");

# --- configuration errors, with nginx -t
sub nginx_t {
    my ($location) = @_;
    my $d = tempdir(CLEANUP => 1);
    mkdir "$d/logs";
    my $modules = join '', map { "load_module $_;\n" }
        split ' ', ($ENV{TEST_NGINX_LOAD_MODULES} // '');
    open my $fh, '>', "$d/nginx.conf" or die $!;
    print $fh "${modules}error_log $d/logs/error.log;\npid $d/nginx.pid;\n"
            . "events {}\nhttp {\n server {\n  listen 127.0.0.1:1;\n"
            . "  location = /h { $location }\n }\n}\n";
    close $fh;
    my $bin = $ENV{TEST_NGINX_BINARY} || '/usr/sbin/nginx';
    return scalar `$bin -t -p $d/ -c $d/nginx.conf 2>&1`;
}

like(nginx_t('breaker_health ready redis=warn pg=fail circuits=off '
             . 'shedding=fail shm=85%;'),
     qr/test is successful/, 'every parameter of ready is accepted');
like(nginx_t('breaker_health live;'), qr/test is successful/,
     'live is accepted');
like(nginx_t('breaker_health sick;'),
     qr/\[emerg\] invalid value "sick" in "breaker_health", expected "live" or "ready"/,
     'an unknown kind is refused');
like(nginx_t('breaker_health;'),
     qr/\[emerg\] invalid number of arguments in "breaker_health"/,
     'no kind is refused');
like(nginx_t('breaker_health live redis=fail;'),
     qr/\[emerg\] invalid parameter "redis=fail" in "breaker_health": "live" takes none/,
     'live takes no parameter');
like(nginx_t('breaker_health ready redis=maybe;'),
     qr/\[emerg\] invalid value "redis=maybe" in "breaker_health", expected "redis=fail", "redis=warn" or "redis=off"/,
     'a bad policy is refused, quoted');
like(nginx_t('breaker_health ready circuits=;'),
     qr/\[emerg\] invalid value "circuits=" in "breaker_health"/,
     'an empty policy is refused');
for my $bad (qw(shm=0% shm=101% shm=50 shm=% shm=x%)) {
    like(nginx_t("breaker_health ready $bad;"),
         qr/\[emerg\] invalid value "\Q$bad\E" in "breaker_health", expected "shm=1%" to "shm=100%" or "shm=off"/,
         "$bad is refused");
}
like(nginx_t('breaker_health ready disk=fail;'),
     qr/\[emerg\] invalid parameter "disk=fail" in "breaker_health"/,
     'an unknown parameter is refused');
like(nginx_t('breaker_health ready; breaker_health live;'),
     qr/\[emerg\] "breaker_health" directive is duplicate/,
     'twice in a location is refused');
like(nginx_t('breaker_status_endpoint; breaker_health ready;'),
     qr/\[emerg\] "breaker_health" directive conflicts with "breaker_status_endpoint" in the same location/,
     'with the status endpoint in a location is refused');

done_testing();
