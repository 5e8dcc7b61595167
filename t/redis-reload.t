# A reload (or a graceful shutdown) must not drop the requests that wait
# for Redis: the worker on its way out stays until each of them got its
# reply or its failure policy, then closes its Redis connection and leaves
# with no socket left open.
use strict;
use warnings;

use Test::More;
use IO::Socket::INET;
use IO::Select;
use Time::HiRes qw(sleep time);
use Test::Edge qw(:all);
use Test::Edge::Nginx;
use Test::Edge::Silent;

my $slow = $ENV{TEST_NGINX_USE_VALGRIND} ? 10 : 1;

sub master_pid {
    my ($nginx) = @_;
    open my $fh, '<', "$nginx->{prefix}/logs/nginx.pid" or die $!;
    chomp(my $pid = <$fh>);
    return $pid;
}

# HUP to the master, and wait until it has started the new workers
sub reload {
    my ($nginx) = @_;
    my $before = () = $nginx->log =~ /start worker processes/g;
    kill 'HUP', master_pid($nginx);
    return wait_until(20 * $slow, sub {
        my $n = () = $nginx->log =~ /start worker processes/g;
        $n > $before;
    });
}

sub send_get {
    my ($nginx, $path) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $nginx->port) or die $!;
    print $s "GET $path HTTP/1.0\r\nHost: x\r\n\r\n";
    return $s;
}

# the whole response on a socket: "status X-Status body", or "empty"
sub read_response {
    my ($s) = @_;
    local $/;
    my $raw = <$s> // '';
    close $s;
    return 'empty' if $raw eq '';
    my ($head, $body) = split /\r\n\r\n/, $raw, 2;
    my ($status) = $head =~ m{^HTTP/1\.\d (\d+)};
    my ($x) = $head =~ /^X-Status: (\S+)/mi;
    return join ' ', $status // '?', $x // '-', $body // '';
}

sub inflight {
    my ($nginx) = @_;
    my ($n) = $nginx->get('/metrics')->{body}
        =~ /^(?:nginx_)?ratelimit_redis_inflight\{server="r"\} (\d+)/m;
    return $n // 0;
}


# --- a Redis that accepts and never answers; requests wait up to 3 s
{
    my $silent = Test::Edge::Silent->start;
    my $port = $silent->port;
    my $nginx = Test::Edge::Nginx->start(workers => 1, http => <<"HTTP");
    ratelimit_redis r 127.0.0.1:$port timeout=3s connect_timeout=60s;
    ratelimit_zone \$arg_k zone=open:1m rate=1r/m redis=r on_failure=open;
    ratelimit_zone \$arg_k zone=closed:1m rate=1r/m redis=r
                   on_failure=closed;
    server {
        listen 127.0.0.1:\$PORT;
        location = /ok { return 200 "backend\\n"; }
        location = /metrics { metrics; }
        location = /open {
            ratelimit zone=open;
            add_header X-Status \$ratelimit_status always;
            proxy_pass http://127.0.0.1:\$PORT/ok;
        }
        location = /closed {
            ratelimit zone=closed;
            ratelimit_failure_status 503;
            add_header X-Status \$ratelimit_status always;
            proxy_pass http://127.0.0.1:\$PORT/ok;
        }
    }
HTTP

    ok(wait_until(20 * $slow, sub { $silent->accepts >= 1 }),
       'silent server: nginx connected');
    my $open = send_get($nginx, '/open?k=a');
    my $closed = send_get($nginx, '/closed?k=b');
    ok(wait_until(20 * $slow, sub { inflight($nginx) == 2 }),
       'both requests wait for Redis (inflight 2)')
        or diag($nginx->get('/metrics')->{body});

    my $t0 = time;
    ok(reload($nginx), 'reload: the new workers started');
    is(read_response($open), "200 FAILED_OPEN backend\n",
       'the waiting request got on_failure=open: 200 from the backend');
    like(read_response($closed), qr/^503 FAILED_CLOSED /,
       'the waiting request got on_failure=closed: 503')
        or diag($nginx->log);
    cmp_ok(time - $t0, '<', 20 * $slow, 'within the timeout (bounded)');

    $nginx->stop;
    my $log = $nginx->final_log;
    unlike($log, qr/open socket|aborting/,
           'no "open socket ... left" and no "aborting"') or diag($log);
    unlike($log, qr/\[(alert|crit|emerg)\]/, 'no alert, crit or emerg');
    $silent->stop;
}


# --- a healthy Redis, 50 requests in flight, five reloads
{
    redis_start() unless redis_is_up();
    redis_flushall();
    my $nginx = Test::Edge::Nginx->start(workers => 2, http => <<"HTTP");
    ratelimit_redis r 127.0.0.1:$ENV{TEST_NGINX_REDIS_PORT} timeout=10s;
    ratelimit_zone \$arg_k zone=rl:1m rate=100000r/s redis=r
                   on_failure=open;
    server {
        listen 127.0.0.1:\$PORT;
        location = /ok { return 200 "ok\\n"; }
        location = /rl {
            ratelimit zone=rl burst=100000 nodelay;
            add_header X-Status \$ratelimit_status always;
            proxy_pass http://127.0.0.1:\$PORT/ok;
        }
    }
HTTP
    ok(wait_until(20 * $slow, sub { $nginx->decision('/rl?k=w') eq '200 PASSED' }),
       'connected to Redis');

    # 50 connections kept busy by one non-blocking client: each socket
    # sends a request, reads the whole response, and is replaced, until
    # every reload is done and at least 300 responses were read
    my $clients = 50;
    my (%buf, @bad, $done, $reloads);
    my $sel = IO::Select->new;
    my $next = 0;
    my $open_one = sub {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => $nginx->port,
                                      Blocking => 0) or return;
        $buf{$s} = { out => "GET /rl?k=" . ($next++ % 7)
                             . " HTTP/1.0\r\nHost: x\r\n\r\n", in => '' };
        $sel->add($s);
    };
    $open_one->() for 1 .. $clients;

    my $deadline = time + 120 * $slow;
    my $reload_at = time + 0.3;
    $done = 0;
    $reloads = 0;
    while (time < $deadline && ($reloads < 5 || $done < 300)) {
        if ($reloads < 5 && time >= $reload_at) {
            kill 'HUP', master_pid($nginx);
            $reloads++;
            $reload_at = time + 0.5 * $slow;
        }
        for my $s (IO::Select->new($sel->handles)->can_write(0)) {
            next unless length $buf{$s}{out};
            my $n = syswrite($s, $buf{$s}{out});
            substr($buf{$s}{out}, 0, $n) = '' if $n;
        }
        for my $s ($sel->can_read(0.05)) {
            my $n = sysread($s, my $chunk, 65536);
            next if !defined $n && $!{EAGAIN};
            if ($n) {
                $buf{$s}{in} .= $chunk;
                next;
            }
            my $in = $buf{$s}{in};
            push @bad, $in eq '' ? 'empty reply' : substr($in, 0, 40)
                unless $in =~ m{^HTTP/1\.1 200 .*\r\n\r\nok\n\z}s;
            $done++;
            $sel->remove($s);
            delete $buf{$s};
            close $s;
            $open_one->() if $reloads < 5 || $done < 300;
        }
    }
    # the last ones
    my $end = time + 30 * $slow;
    while ($sel->count && time < $end) {
        for my $s ($sel->can_read(0.05)) {
            my $n = sysread($s, my $chunk, 65536);
            next if !defined $n && $!{EAGAIN};
            if ($n) { $buf{$s}{in} .= $chunk; next }
            my $in = $buf{$s}{in};
            push @bad, $in eq '' ? 'empty reply' : substr($in, 0, 40)
                unless $in =~ m{^HTTP/1\.1 200 .*\r\n\r\nok\n\z}s;
            $done++;
            $sel->remove($s);
            close $s;
        }
    }

    is($reloads, 5, 'five reloads while requests were in flight');
    cmp_ok($done, '>=', 300, "at least 300 requests completed ($done)");
    is($sel->count, 0, 'none left unanswered');
    is(scalar @bad, 0, 'every request got a full 200 response')
        or diag(join "\n", @bad[0 .. ($#bad > 9 ? 9 : $#bad)]);

    $nginx->stop;
    my $log = $nginx->final_log;
    my $left = () = $log =~ /open socket .* left/g;
    is($left, 0, 'no "open socket ... left" line');
    unlike($log, qr/\[(alert|crit|emerg)\]/, 'no alert, crit or emerg')
        or diag(join "\n", grep { /\[(alert|crit|emerg)\]/ } split /\n/, $log);
}


# --- a worker that stays for another request (a slow backend) closes its
# Redis connection as soon as no request waits on Redis
{
    redis_start() unless redis_is_up();
    my $backend = Test::Edge::Silent->start;
    my $bport = $backend->port;
    my $nginx = Test::Edge::Nginx->start(workers => 1, http => <<"HTTP");
    ratelimit_redis r 127.0.0.1:$ENV{TEST_NGINX_REDIS_PORT} timeout=10s;
    ratelimit_zone \$arg_k zone=rl:1m rate=1000r/s redis=r on_failure=open;
    server {
        listen 127.0.0.1:\$PORT;
        location = /ok { return 200 "ok\\n"; }
        location = /rl {
            ratelimit zone=rl burst=1000 nodelay;
            add_header X-Status \$ratelimit_status always;
            proxy_pass http://127.0.0.1:\$PORT/ok;
        }
        location = /slow {
            proxy_read_timeout 60s;
            proxy_pass http://127.0.0.1:$bport/;
        }
    }
HTTP
    # nginx's connections to Redis (CLIENT LIST, less our own)
    my $nginx_conns = sub {
        my $list = redis_command('CLIENT', 'LIST') // '';
        return scalar grep { !/cmd=client\|list/ } split /\n/, $list;
    };
    ok(wait_until(20 * $slow, sub { $nginx->decision('/rl?k=w') eq '200 PASSED' }),
       'connected to Redis');
    my $before = $nginx_conns->();
    my ($old) = $nginx->worker_pids;
    my $slow_req = send_get($nginx, '/slow');
    ok(wait_until(20 * $slow, sub { $backend->bytes > 0 }),
       'a request waits on a slow backend');
    ok(reload($nginx), 'reload');
    ok(wait_until(20 * $slow, sub { $nginx->decision('/rl?k=x') eq '200 PASSED' }),
       'the new worker decides with Redis');
    ok(wait_until(20 * $slow, sub { $nginx_conns->() == $before }),
       'the old worker closed its Redis connection (nothing attached)')
        or diag("before $before, now " . $nginx_conns->());
    ok(kill(0, $old), 'while it still serves the slow request');
    $backend->stop;
    like(read_response($slow_req), qr/^502 /, 'the slow request ends');
    ok(wait_until(20 * $slow, sub { !kill(0, $old) }), 'the old worker exits');
    $nginx->stop;
    my $log = $nginx->final_log;
    unlike($log, qr/open socket|aborting|\[(alert|crit|emerg)\]/,
           'no socket left, no alert') or diag($log);
}

done_testing();
