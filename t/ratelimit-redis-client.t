# The Redis client's connection options and safety: AUTH with a password
# and with an ACL user, SELECT, unix sockets, the in-flight bound, a request
# that goes away while its command is in flight, and the deny cache that
# spares Redis the refused requests.
use strict;
use warnings;

use Test::More;
use IO::Socket::INET;
use IO::Socket::UNIX;
use File::Temp qw(tempdir);
use Time::HiRes qw(sleep time);
use Test::Edge qw(:all);
use Test::Edge::Nginx;

# A private redis-server with a password, an ACL user and a unix socket,
# so the shared fixture keeps its open configuration.
my $dir = tempdir(CLEANUP => 1);
chmod 0755, $dir;
my $port = Test::Edge::Nginx::free_port();
open my $fh, '>', "$dir/redis.conf" or die $!;
print $fh <<"CONF";
bind 127.0.0.1
port $port
unixsocket $dir/redis.sock
unixsocketperm 777
daemonize yes
pidfile $dir/redis.pid
logfile $dir/redis.log
dir $dir
save ""
appendonly no
requirepass s3cret
user edge on >edgepass ~* &* +\@all
CONF
close $fh;
system('redis-server', "$dir/redis.conf") == 0 or die "redis-server failed";

sub private_redis {
    my (@cmd) = @_;
    my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                     PeerPort => $port) or return undef;
    my $out = "*3\r\n\$4\r\nAUTH\r\n\$7\r\ndefault\r\n\$6\r\ns3cret\r\n";
    $out .= '*' . @cmd . "\r\n" . join('', map { '$' . length($_) . "\r\n$_\r\n" } @cmd);
    print $sock $out;
    my $auth = <$sock>;
    my $line = <$sock> // '';
    if ($line =~ /^\$(\d+)/) { read($sock, my $v, $1 + 2); $line = $v }
    close $sock;
    $line =~ s/\r\n\z//;
    return $line;
}

END {
    if (open my $p, '<', "$dir/redis.pid") {
        chomp(my $pid = <$p>);
        kill 'TERM', $pid if $pid;
    }
}

ok(wait_until(10, sub { (private_redis('PING') // '') eq '+PONG' }),
   'private redis with a password is up');


sub limiter_http {
    my ($server_args, $zone_args) = @_;
    return <<"HTTP";
    ratelimit_redis r $server_args;
    ratelimit_zone \$arg_k zone=rl:1m rate=1r/m redis=r $zone_args;
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
}

# --- password + SELECT over TCP
{
    my $nginx = Test::Edge::Nginx->start(
        http => limiter_http("127.0.0.1:$port password=s3cret db=3",
                             'on_failure=open'));
    ok(wait_until(10, sub { $nginx->decision('/rl?k=w1') eq '200 PASSED' }),
       'AUTH password: decisions come from Redis');
    is($nginx->decision('/rl?k=a'), '200 PASSED', 'first request passes');
    is($nginx->decision('/rl?k=a'), '429 REJECTED', 'second is refused');
    is(private_redis('SELECT', '3') , '+OK', 'db 3 exists');
    $nginx->stop;
}

{
    my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port);
    print $sock "*3\r\n\$4\r\nAUTH\r\n\$7\r\ndefault\r\n\$6\r\ns3cret\r\n"
              . "*2\r\n\$6\r\nSELECT\r\n\$1\r\n3\r\n"
              . "*2\r\n\$6\r\nEXISTS\r\n\$11\r\nrl:{rl:a}:t\r\n";
    my @l = map { scalar <$sock> } 1 .. 3;
    is($l[2], ":1\r\n", 'the bucket was written in db 3 (SELECT)');
}

# --- wrong password: fails as configured, and says why, once
{
    my $nginx = Test::Edge::Nginx->start(
        http => limiter_http("127.0.0.1:$port password=wrong",
                             'on_failure=closed'));
    my $r;
    ok(wait_until(10, sub { $nginx->log =~ /handshake failed: WRONGPASS/ }),
       'a wrong password is logged');
    is($nginx->decision('/rl?k=b'), '503 FAILED_CLOSED',
       'and the failure policy applies');
    $nginx->stop;
}

# --- ACL user over the unix socket
{
    my $nginx = Test::Edge::Nginx->start(
        http => limiter_http("unix:$dir/redis.sock user=edge password=edgepass",
                             'on_failure=open'));
    ok(wait_until(10, sub { $nginx->decision('/rl?k=w2') eq '200 PASSED' }),
       'ACL user over a unix socket: decisions come from Redis');
    is($nginx->decision('/rl?k=c'), '200 PASSED', 'first request passes');
    is($nginx->decision('/rl?k=c'), '429 REJECTED', 'second is refused');
    $nginx->stop;
    unlike($nginx->final_log, qr/\[(alert|crit)\]/, 'no alert or crit');
}

# --- the shared fixture from here on
redis_start() unless redis_is_up();
redis_flushall();

my $http = limiter_http(
    "127.0.0.1:$ENV{TEST_NGINX_REDIS_PORT} timeout=10s max_inflight=2",
    'on_failure=open');
my $nginx = Test::Edge::Nginx->start(http => $http);
ok(wait_until(10, sub { $nginx->decision('/rl?k=w3') eq '200 PASSED' }),
   'connected to the fixture');

# --- deny cache: refused keys do not reach Redis until they could pass
redis_command('CONFIG', 'RESETSTAT');
is($nginx->decision('/rl?k=d'), '200 PASSED', 'deny cache: first passes');
is($nginx->decision('/rl?k=d'), '429 REJECTED', 'second refused by Redis');
is($nginx->decision('/rl?k=d'), '429 REJECTED', 'third refused') for 1 .. 3;
is(redis_calls('evalsha'), 2, 'only the first two requests asked Redis');

# --- in-flight bound, and requests that go away while waiting
# With Redis frozen, two clients fill max_inflight=2 and then disconnect;
# a third request gets the failure policy while Redis still answers
# nothing; when Redis answers the two detached commands, nothing touches
# the freed requests.
redis_freeze();
my @gone;
for my $k (qw(e f)) {
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $nginx->port) or die $!;
    print $s "GET /rl?k=$k HTTP/1.0\r\nHost: x\r\n\r\n";
    push @gone, $s;
}
ok(wait_until(5, sub {
       $nginx->get('/metrics')->{body}
           =~ /ratelimit_redis_inflight\{server="r"\} 2\b/ }),
   'both commands are in flight (the metrics module says so)');
is($nginx->decision('/rl?k=g'), '200 FAILED_OPEN',
   'past max_inflight the failure policy applies, without waiting for Redis');
close $_ for @gone;
redis_thaw();
ok(wait_until(10, sub { $nginx->decision('/rl?k=h') eq '200 PASSED' }),
   'after the pause the detached replies were consumed and Redis decides');
like($nginx->log, qr/2 commands in flight, the limit of max_inflight/,
     'the bound is logged');

$nginx->stop;
my $log = $nginx->final_log;
unlike($log, qr/\[(alert|crit|emerg)\]|signal 11|open socket/,
       'no crash, alert or socket left') or diag($log);

done_testing();
