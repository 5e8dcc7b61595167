# A Redis that stops answering is given up and reconnected, without a
# reload: a server that accepts and never answers, a listener that moves
# (the old connections blackholed, a real Redis on the address), a
# redis-server stopped with SIGSTOP; TCP keepalive on the socket.
use strict;
use warnings;

use Test::More;
use IO::Socket::INET;
use File::Temp qw(tempdir);
use Time::HiRes qw(sleep time);
use Test::Edge qw(:all);
use Test::Edge::Nginx;
use Test::Edge::Silent;

my $slow = $ENV{TEST_NGINX_USE_VALGRIND} ? 10 : 1;

sub limiter_http {
    my ($server) = @_;
    return <<"HTTP";
    ratelimit_redis r $server;
    ratelimit_zone \$arg_k zone=rl:1m rate=1r/m redis=r on_failure=open;
    server {
        listen 127.0.0.1:\$PORT;
        location = /ok { return 200 "ok\\n"; }
        location = /rl {
            ratelimit zone=rl burst=1 nodelay;
            add_header X-Status \$ratelimit_status always;
            proxy_pass http://127.0.0.1:\$PORT/ok;
        }
    }
HTTP
}

# a private redis-server on PORT, its pid
sub start_redis {
    my ($dir, $port) = @_;
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
CONF
    close $fh;
    system('redis-server', "$dir/redis-$port.conf") == 0
        or die "redis-server failed";
    wait_until(10, sub { -s "$dir/redis-$port.pid" }) or die "no redis pid";
    open my $p, '<', "$dir/redis-$port.pid" or die $!;
    chomp(my $pid = <$p>);
    return $pid;
}

sub redis_at {
    my ($port, @cmd) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                  Timeout => 2) or return undef;
    print $s '*' . @cmd . "\r\n"
        . join('', map { '$' . length($_) . "\r\n$_\r\n" } @cmd);
    my $line = <$s> // '';
    if ($line =~ /^\$(\d+)/) { read($s, my $v, $1 + 2); $line = $v }
    close $s;
    return $line;
}

sub connections_received {
    my ($port) = @_;
    my ($n) = (redis_at($port, 'INFO', 'stats') // '')
        =~ /total_connections_received:(\d+)/;
    return $n;
}

my $dir = tempdir(CLEANUP => 1);
my @redis_pids;
END { kill 'TERM', @redis_pids if @redis_pids }


# --- a server that accepts and never answers: dropped, reconnected
my $silent = Test::Edge::Silent->start;
my $port = $silent->port;
my $nginx = Test::Edge::Nginx->start(
    http => limiter_http("127.0.0.1:$port timeout=200ms"));

ok(wait_until(20 * $slow, sub { $silent->accepts >= 1 }), 'nginx connected');
ok(wait_until(20 * $slow, sub { $silent->bytes > 0 }),
   'and sent its handshake, never answered');
is($nginx->decision('/rl?k=a'), '200 FAILED_OPEN',
   'a request waits for the timeout, then fails open');
ok(wait_until(20 * $slow, sub { $silent->accepts >= 2 && $silent->eofs >= 1 }),
   'the silent connection was closed and a new one made')
    or diag('accepts ' . $silent->accepts . ', closed ' . $silent->eofs);
like($nginx->log,
     qr/redis "r" at 127\.0\.0\.1:\d+: nothing received for 1000 ms while commands waited: closing the connection/,
     'the reason is logged');

# --- the address moves: the silent server keeps its connections open
# but stops listening, and a real Redis takes the port
ok($silent->close_listener, 'the silent server stops listening');
push @redis_pids, start_redis($dir, $port);
ok(wait_until(30 * $slow, sub { $nginx->decision('/rl?k=b') eq '200 PASSED' }),
   'without a reload, decisions come from the new Redis');
is($nginx->decision('/rl?k=b'), '200 PASSED', 'burst request passes');
is($nginx->decision('/rl?k=b'), '429 REJECTED', 'and it limits again');
$nginx->stop;
unlike($nginx->final_log, qr/\[(alert|crit|emerg)\]|open socket/,
       'no alert or socket left');
$silent->stop;


# --- a real Redis stopped with SIGSTOP: the established connection goes
# silent; dropped, and after SIGCONT the worker is connected again
my $port2 = Test::Edge::Nginx::free_port();
my $pid2 = start_redis($dir, $port2);
push @redis_pids, $pid2;
$nginx = Test::Edge::Nginx->start(
    http => limiter_http("127.0.0.1:$port2 timeout=200ms"));
ok(wait_until(20 * $slow, sub { $nginx->decision('/rl?k=w') eq '200 PASSED' }),
   'connected to a real Redis');
my $before = connections_received($port2);

kill 'STOP', $pid2;
is($nginx->decision('/rl?k=c'), '200 FAILED_OPEN',
   'Redis stopped: the request fails open after the timeout');
ok(wait_until(20 * $slow, sub {
       $nginx->log =~ /nothing received for 1000 ms while commands waited: closing the connection/ }),
   'the silent connection is closed');
kill 'CONT', $pid2;

ok(wait_until(30 * $slow, sub { $nginx->decision('/rl?k=d') eq '200 PASSED' }),
   'after SIGCONT decisions come from Redis again');
# (each INFO is a connection of its own: the second one counts 1)
cmp_ok(connections_received($port2) - $before, '>=', 2,
       'on a new connection');

# --- TCP keepalive on the connection to Redis
my $ss = `ss -tnoH state established '( dport = :$port2 )' 2>&1`;
like($ss, qr/timer:\(keepalive,/, 'the Redis socket has TCP keepalive')
    or diag($ss);

$nginx->stop;
unlike($nginx->final_log, qr/\[(alert|crit|emerg)\]|open socket/,
       'no alert or socket left');

done_testing();
