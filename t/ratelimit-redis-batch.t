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



# "GET path" on many connections, written while the worker is stopped so
# that it reads them in few passes of its event loop.  The connections are
# accepted first (nginx accepts one per pass), the worker is stopped (and
# seen stopped: SIGSTOP only asks), every request is written and seen
# queued by the kernel, then the worker continues.  The status of each.
sub concurrent {
    my ($nginx, @paths) = @_;
    my @socks = map {
        IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                              PeerPort => $nginx->port) or die $!
    } @paths;
    # each connect() returned: every connection is accepted or queued
    wait_until(10, sub { accept_queue($nginx->port) == 0 })
        or die "nginx did not accept the connections\n";
    my @workers = $nginx->worker_pids or die "no worker pids\n";
    kill 'STOP', @workers;
    wait_until(10, sub { !grep { process_state($_) ne 'T' } @workers })
        or die "the worker did not stop\n";
    for my $i (0 .. $#paths) {
        print { $socks[$i] } "GET $paths[$i] HTTP/1.0\r\nHost: x\r\n\r\n";
    }
    wait_until(10, sub { queued_at($nginx->port) >= @paths })
        or die "the requests did not reach nginx's sockets\n";
    kill 'CONT', @workers;
    my @status;
    for my $s (@socks) {
        my $line = <$s> // '';
        push @status, $line =~ m{^HTTP/1\.\d (\d+)} ? $1 : 'none';
        close $s;
    }
    return @status;
}

# the sum of a series' samples in nginx's /metrics (0 when absent)
sub metric {
    my ($nginx, $name) = @_;
    my $body = $nginx->get('/metrics')->{body} // '';
    my $sum = 0;
    $sum += $1 while $body =~ /^\Q$name\E(?:\{[^}]*\})? (\S+)$/mg;
    return $sum;
}

# the state letter of a process (R, S, T, ...) from /proc
sub process_state {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/stat" or return '';
    my $stat = <$fh> // '';
    return $stat =~ /\)\s+(\S)/ ? $1 : '';
}

# the connections in the accept queue of nginx's listening socket on $port
# (/proc/net/tcp: for a socket in LISTEN, rx_queue is that queue), -1 when
# there is no such socket
sub accept_queue {
    my ($port) = @_;
    open my $fh, '<', '/proc/net/tcp' or return -1;
    while (<$fh>) {
        my @f = split;
        next unless @f > 4 && $f[1] =~ /:([0-9A-F]{4})$/;
        next unless hex($1) == $port && $f[3] eq '0A';
        my (undef, $rx) = split /:/, $f[4];
        return hex $rx;
    }
    return -1;
}

# the state (hex, /proc/net/tcp) of our socket from local port $from to
# port $to, '' when there is none: 06 is TIME_WAIT, both ends closed
sub tcp_state {
    my ($from, $to) = @_;
    open my $fh, '<', '/proc/net/tcp' or return '';
    while (<$fh>) {
        my @f = split;
        next unless @f > 4 && $f[1] =~ /:([0-9A-F]{4})$/ && hex($1) == $from;
        next unless $f[2] =~ /:([0-9A-F]{4})$/ && hex($1) == $to;
        return $f[3];
    }
    return '';
}

# how many established connections to the local port have unread bytes
sub queued_at {
    my ($port) = @_;
    my $n = 0;
    open my $fh, '<', '/proc/net/tcp' or return 0;
    while (<$fh>) {
        my @f = split;
        next unless @f > 4 && $f[1] =~ /:([0-9A-F]{4})$/;
        next unless hex($1) == $port && $f[3] eq '01';
        my ($tx, $rx) = split /:/, $f[4];
        $n++ if hex($rx) > 0;
    }
    return $n;
}

# the items of each EVALSHA Redis ran since slowlog_start(): a batch of
# the plain GCRA script has one key per decision, so numkeys is the count
sub slowlog_start {
    redis_command('CONFIG', 'SET', 'slowlog-max-len', '4096');
    redis_command('CONFIG', 'SET', 'slowlog-log-slower-than', '0');
    redis_command('SLOWLOG', 'RESET');
}

sub evalsha_items {
    my $log = redis_command('SLOWLOG', 'GET', '-1');
    redis_command('CONFIG', 'SET', 'slowlog-log-slower-than', '10000');
    return map { $_->[3][2] + 0 }
           grep { ref $_->[3] && lc($_->[3][0]) eq 'evalsha' } @$log;
}

sub limiter_http {
    my ($server_args) = @_;
    my $redis = "127.0.0.1:$ENV{TEST_NGINX_REDIS_PORT}";
    return <<"HTTP";
    ratelimit_redis r $redis timeout=10s $server_args;
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
slowlog_start();
my @st = concurrent($nginx, map { "/burst?k=d$_" } 1 .. 40);
is(scalar(grep { $_ eq '200' } @st), 40, '40 distinct keys: all pass');
my @items = evalsha_items();
my $sent = 0;
$sent += $_ for @items;
is($sent, 40, 'every decision went to Redis exactly once')
    or diag("items per EVALSHA: @items");
ok(@items < 40, '40 decisions took fewer EVALSHA than decisions')
    or diag("items per EVALSHA: @items");
ok(!grep({ $_ > 32 } @items), 'no EVALSHA carries more than batch=32')
    or diag("items per EVALSHA: @items");

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
redis_command('CLIENT', 'PAUSE', '5000');
my $gone = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                 PeerPort => $nginx->port) or die $!;
my $kept = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                 PeerPort => $nginx->port) or die $!;
print $gone "GET /two?k=gone HTTP/1.0\r\nHost: x\r\n\r\n";
print $kept "GET /two?k=kept HTTP/1.0\r\nHost: x\r\n\r\n";
# both requests' decisions wait in Redis's pause, then one client leaves
# and nginx closes its connection, all before the pause ends (5 s)
ok(wait_until(4, sub {
       metric($nginx, 'nginx_ratelimit_redis_inflight') >= 4
   }), 'both requests wait for Redis (4 items)');
my $gone_port = $gone->sockport;
close $gone;
ok(wait_until(4, sub { tcp_state($gone_port, $nginx->port) eq '06' }),
   'nginx saw the client go (it closed its end: ours is in TIME_WAIT)');
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
