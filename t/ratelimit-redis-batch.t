# Batched decisions: the decisions queued during one event-loop iteration
# leave as one EVALSHA per script, and each request still gets its own
# answer.  Counted with Redis's own INFO commandstats.
use strict;
use warnings;

use Test::More;
use IO::Socket::INET;
use Time::HiRes qw(sleep time);
use Test::Edge qw(:all);
use Test::Edge::Nginx;

redis_start() unless redis_is_up();
redis_flushall();



# "GET path" on many connections, all read by nginx in one pass of its
# event loop: the connections are accepted first (nginx accepts one per
# pass), then the worker is stopped while every request is written and
# continued, so that one epoll_wait returns them all.  The status of each.
sub concurrent {
    my ($nginx, @paths) = @_;
    my @socks = map {
        IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                              PeerPort => $nginx->port) or die $!
    } @paths;
    wait_until(10, sub {
        my ($active) = $nginx->get('/metrics')->{body}
            =~ /^nginx_connections_active (\d+)/m;
        ($active // 0) > @socks;            # they, and this scrape
    }) or die "nginx did not accept the connections\n";
    my @workers = $nginx->worker_pids or die "no worker pids\n";
    kill 'STOP', @workers;
    for my $i (0 .. $#paths) {
        print { $socks[$i] } "GET $paths[$i] HTTP/1.0\r\nHost: x\r\n\r\n";
    }
    kill 'CONT', @workers;
    my @status;
    for my $s (@socks) {
        my $line = <$s> // '';
        push @status, $line =~ m{^HTTP/1\.\d (\d+)} ? $1 : 'none';
        close $s;
    }
    return @status;
}

sub limiter_http {
    my ($server_args) = @_;
    my $redis = "127.0.0.1:$ENV{TEST_NGINX_REDIS_PORT}";
    return <<"HTTP";
    ratelimit_redis r $redis timeout=2s $server_args;
    ratelimit_zone \$arg_k zone=a:1m rate=1r/m redis=r prefix=a
                   on_failure=closed;
    ratelimit_zone \$arg_k zone=b:1m rate=1r/m redis=r prefix=b
                   on_failure=closed;
    ratelimit_zone \$arg_k zone=c:1m rate=1r/m redis=r prefix=c
                   on_failure=closed;
    ratelimit_ban zone=c threshold=100 window=1m duration=1m;
    server {
        listen 127.0.0.1:\$PORT;
        location = /ok { return 200 "ok\\n"; }
        location = /metrics { metrics; }
        location = /two {
            ratelimit zone=a burst=1 nodelay;
            ratelimit zone=b;
            add_header X-Status \$ratelimit_status always;
            proxy_pass http://127.0.0.1:\$PORT/ok;
        }
        location = /burst {
            ratelimit zone=a burst=9 nodelay;
            add_header X-Status \$ratelimit_status always;
            proxy_pass http://127.0.0.1:\$PORT/ok;
        }
        location = /mixed {
            ratelimit zone=b;
            ratelimit zone=c;
            add_header X-Status \$ratelimit_status always;
            proxy_pass http://127.0.0.1:\$PORT/ok;
        }
    }
HTTP
}

my $nginx = Test::Edge::Nginx->start(http => limiter_http(''));
ok(wait_until(10, sub { $nginx->decision('/two?k=warm') eq '200 PASSED' }),
   'connected to Redis');

# --- two limits on one location: one EVALSHA carries both decisions
redis_command('CONFIG', 'RESETSTAT');
is($nginx->decision('/two?k=x'), '200 PASSED', 'both limits pass');
is(redis_calls('evalsha'), 1, 'two decisions, one EVALSHA');
is($nginx->decision('/two?k=x'), '429 REJECTED',
   'second request: zone a (burst=1) passes, zone b refuses');
is(redis_calls('evalsha'), 2, 'again one EVALSHA for the two');
is(redis_command('EXISTS', 'rl:{a:x}:t') + 0, 1, "zone a's bucket is written");

# --- a plain zone and a zone with bans use two scripts: two EVALSHA
redis_command('CONFIG', 'RESETSTAT');
is($nginx->decision('/mixed?k=y'), '200 PASSED', 'plain and ban zones pass');
is(redis_calls('evalsha'), 2, 'one EVALSHA per script');

# --- concurrent requests with distinct keys share EVALSHA calls
redis_command('CONFIG', 'RESETSTAT');
my @st = concurrent($nginx, map { "/burst?k=d$_" } 1 .. 40);
is(scalar(grep { $_ eq '200' } @st), 40, '40 distinct keys: all pass');
is(redis_calls('evalsha'), 2,
   '40 decisions read in one pass: 2 EVALSHA (batch=32)');

# --- concurrent requests on one key: the batch is still exact
my @same = concurrent($nginx, map { '/burst?k=same' } 1 .. 30);
is(scalar(grep { $_ eq '200' } @same), 10,
   'burst=9: exactly 10 of 30 concurrent requests pass');
is(scalar(grep { $_ eq '429' } @same), 20, 'and the 20 others are refused');

# --- NOSCRIPT: the batch is resent once, after loading the scripts
redis_command('SCRIPT', 'FLUSH');
is($nginx->decision('/two?k=v'), '200 PASSED',
   'after SCRIPT FLUSH both decisions come from Redis');
is($nginx->decision('/two?k=v'), '429 REJECTED', 'and were written there');

# --- a request that goes away while its batch waits: the NOSCRIPT retry
# resends only the items still wanted
redis_command('SCRIPT', 'FLUSH');
redis_command('CLIENT', 'PAUSE', '1000');
my $gone = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                 PeerPort => $nginx->port) or die $!;
my $kept = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                 PeerPort => $nginx->port) or die $!;
print $gone "GET /two?k=gone HTTP/1.0\r\nHost: x\r\n\r\n";
print $kept "GET /two?k=kept HTTP/1.0\r\nHost: x\r\n\r\n";
sleep 0.3;
close $gone;
my $line = <$kept> // '';
like($line, qr{^HTTP/1\.\d 200}, 'the request that stayed is answered');
close $kept;
is(redis_command('EXISTS', 'rl:{a:kept}:t') + 0, 1,
   'its decision was made by the retried batch');
is(redis_command('EXISTS', 'rl:{a:gone}:t') + 0, 0,
   'the one that went away was not resent');

$nginx->stop;
my $log = $nginx->final_log;
unlike($log, qr/\[(alert|crit|emerg)\]|signal 11|open socket/,
       'no crash, alert or socket left') or diag($log);

# --- batch=1: one EVALSHA per decision
$nginx = Test::Edge::Nginx->start(http => limiter_http('batch=1'));
ok(wait_until(10, sub { $nginx->decision('/two?k=warm1') eq '200 PASSED' }),
   'batch=1: connected');
redis_command('CONFIG', 'RESETSTAT');
is($nginx->decision('/two?k=z'), '200 PASSED', 'batch=1: both limits pass');
is(redis_calls('evalsha'), 2, 'batch=1: one EVALSHA per decision');
$nginx->stop;
unlike($nginx->final_log, qr/\[(alert|crit|emerg)\]/, 'batch=1: no alert');

done_testing();
