# Reconnects and script loads are bounded: a wrong password retries with a
# growing backoff and a bounded number of log lines (the backoff is reset
# only once a handshake completes), and a flood of NOSCRIPT replies loads
# the script once per connection, not once per reply.
use strict;
use warnings;

use Test::More;
use IO::Socket::INET;
use File::Temp qw(tempdir);
use Time::HiRes qw(sleep time);
use Test::Edge qw(:all);
use Test::Edge::Nginx;

my $slow = $ENV{TEST_NGINX_USE_VALGRIND} ? 10 : 1;

# the private redis-server is stopped however the file ends
my $redis_pidfile;
END {
    if ($redis_pidfile && open my $p, '<', $redis_pidfile) {
        chomp(my $pid = <$p> // '');
        kill 'TERM', $pid if $pid;
    }
}


# --- a wrong password
{
    my $dir = tempdir(CLEANUP => 1);
    chmod 0755, $dir;
    my $port = Test::Edge::Nginx::free_port();
    open my $fh, '>', "$dir/redis.conf" or die $!;
    print $fh <<"CONF";
bind 127.0.0.1
port $port
daemonize yes
pidfile $dir/redis.pid
logfile $dir/redis.log
dir $dir
save ""
appendonly no
requirepass s3cret
CONF
    close $fh;
    system('redis-server', "$dir/redis.conf") == 0 or die "redis-server";
    $redis_pidfile = "$dir/redis.pid";

    my $received = sub {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => $port) or return undef;
        print $s "*2\r\n\$4\r\nAUTH\r\n\$6\r\ns3cret\r\n"
               . "*2\r\n\$4\r\nINFO\r\n\$5\r\nstats\r\n";
        <$s>;
        my $len = <$s> // '';
        my $info = '';
        read($s, $info, $1 + 2) if $len =~ /^\$(\d+)/;
        close $s;
        my ($n) = $info =~ /total_connections_received:(\d+)/;
        return $n;
    };
    ok(wait_until(10, sub { defined $received->() }), 'redis is up');

    my $nginx = Test::Edge::Nginx->start(http => <<"HTTP");
    ratelimit_redis r 127.0.0.1:$port password=wrong;
    ratelimit_zone \$arg_k zone=rl:1m rate=1r/m redis=r on_failure=closed;
    server {
        listen 127.0.0.1:\$PORT;
        location = /rl {
            ratelimit zone=rl;
            return 204;
        }
    }
HTTP
    ok(wait_until(20 * $slow, sub { $nginx->log =~ /handshake failed: WRONGPASS/ }),
       'the wrong password is logged');

    # over 3.5 s: 100 ms doubling to 3 s makes at most 6 attempts in any
    # such window, and at least one; a backoff reset at each TCP connect
    # made about 30
    my $c0 = $received->();
    sleep 3.5;
    my $c1 = $received->();
    # (each count is read on a connection of its own: 1 of them is ours)
    my $attempts = $c1 - $c0 - 1;
    cmp_ok($attempts, '<', 10, "backoff grows: $attempts connects in 3.5 s");
    cmp_ok($attempts, '>=', 1, 'and it still retries');

    $nginx->stop;
    my $log = $nginx->final_log;
    my @lines = grep { /redis "r"/ } split /\n/, $log;
    cmp_ok(scalar @lines, '<=', 4,
           'bounded log: ' . scalar(@lines) . ' lines about the server')
        or diag(join "\n", @lines[0 .. ($#lines > 9 ? 9 : $#lines)]);
    unlike($log, qr/connected again/, 'never "connected again"');
    unlike($log, qr/\[(alert|crit|emerg)\]/, 'no alert');

}


# --- a NOSCRIPT flood: 40 EVALSHA in flight when the scripts are gone
{
    redis_start() unless redis_is_up();
    redis_flushall();
    my $nginx = Test::Edge::Nginx->start(workers => 2, http => <<"HTTP");
    ratelimit_redis r 127.0.0.1:$ENV{TEST_NGINX_REDIS_PORT} timeout=60s
                    batch=1;
    ratelimit_zone \$arg_k zone=rl:1m rate=1r/m redis=r on_failure=closed;
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
    # both workers connected (each answers one of these, in some order)
    ok(wait_until(20 * $slow, sub {
           my $c = () = (redis_command('CLIENT', 'LIST') // '')
               =~ /cmd=script\|load|cmd=evalsha/g;
           $c >= 2 }),
       'both workers connected and loaded their scripts');
    ok(wait_until(20 * $slow, sub { $nginx->decision('/rl?k=w') =~ /PASSED|REJECTED/ }),
       'Redis decides');

    redis_command('SCRIPT', 'FLUSH');
    redis_command('CONFIG', 'RESETSTAT');
    # WRITE: EVALSHA waits (a script may write), CLIENT UNPAUSE does not
    redis_command('CLIENT', 'PAUSE', '60000', 'WRITE');
    my @socks = map {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => $nginx->port) or die $!;
        print $s "GET /rl?k=n$_ HTTP/1.0\r\nHost: x\r\n\r\n";
        $s;
    } 1 .. 40;
    ok(wait_until(30 * $slow, sub {
           my ($n) = $nginx->get('/metrics')->{body}
               =~ /^(?:nginx_)?ratelimit_redis_inflight\{server="r"\} (\d+)/m;
           ($n // 0) == 40 }),
       '40 EVALSHA in flight while Redis is paused');
    redis_command('CLIENT', 'UNPAUSE');

    my @st = map {
        my $l = <$_> // '';
        close $_;
        $l =~ m{^HTTP/1\.\d (\d+)} ? $1 : 'none';
    } @socks;
    is(scalar(grep { $_ eq '200' } @st), 40,
       'every request was decided by Redis after the reload of the script')
        or diag("@st\n" . join("\n", grep { /redis|ratelimit/ } split /\n/, $nginx->log));
    my $loads = redis_calls('script|load');
    cmp_ok($loads, '<=', 2, "$loads SCRIPT LOAD for 40 NOSCRIPT replies "
                            . "on 2 connections (one each at most)");
    cmp_ok($loads, '>=', 1, 'the script was loaded again');
    is(redis_calls('evalsha'), 80, '40 EVALSHA, each retried once');

    $nginx->stop;
    unlike($nginx->final_log, qr/\[(alert|crit|emerg)\]|NOSCRIPT/,
           'no alert, and NOSCRIPT never reached a request');
}

done_testing();
