# Aging and gauges: a summed gauge is freed only at zero.  With idle=1s,
# an upgraded connection held open for longer than the idle time keeps its
# nginx_http_upgraded_connections series (value 1) while another upgraded
# connection makes the family create a series (which frees the family's
# idle series); once closed, the series goes back to 0.
use strict;
use warnings;

use Test::More;
use IO::Socket::INET;
use POSIX ();
use Time::HiRes qw(sleep);
use Test::Edge qw(wait_until);
use Test::Edge::Nginx;

my $listen = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                   Listen => 4, ReuseAddr => 1) or die $!;
my $backend_port = $listen->sockport;

# the backend: each connection answers 101, then echoes until closed
my $pid = fork // die "fork: $!";
if ($pid == 0) {
    for (1 .. 2) {
        my $c = $listen->accept or POSIX::_exit(1);
        next if fork;
        my $req = '';
        while ($req !~ /\r\n\r\n/) {
            sysread($c, $req, 4096, length $req) or POSIX::_exit(1);
        }
        syswrite($c, "HTTP/1.1 101 Switching Protocols\r\n"
                   . "Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
        while (sysread($c, my $buf, 4096)) { syswrite($c, $buf) }
        POSIX::_exit(0);
    }
    POSIX::_exit(0);
}
close $listen;

my $nginx = Test::Edge::Nginx->start(http => <<"HTTP");
    metrics_zone 1m idle=1s;
    server {
        listen 127.0.0.1:\$PORT;
        metrics_server ws;
        location = /metrics { metrics_location off; metrics; }
        location /chat {
            metrics_location chat;
            proxy_pass http://127.0.0.1:$backend_port;
            proxy_http_version 1.1;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 30s;
        }
        location /news {
            metrics_location news;
            proxy_pass http://127.0.0.1:$backend_port;
            proxy_http_version 1.1;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 30s;
        }
    }
HTTP

sub upgraded {
    my ($location) = @_;
    my $body = $nginx->get('/metrics?family=nginx_http_upgraded')->{body};
    return $body =~ /^nginx_http_upgraded_connections\{server="ws",location="$location"\} (\d+)$/m
        ? $1 : 'absent';
}

sub upgrade {
    my ($path) = @_;
    my $ws = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                   PeerPort => $nginx->port) or die $!;
    print $ws "GET $path HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            . "Connection: Upgrade\r\n\r\n";
    my $status = <$ws> // '';
    while (my $line = <$ws>) { last if $line eq "\r\n" }
    return ($ws, $status);
}

my ($chat, $status) = upgrade('/chat');
like($status, qr{^HTTP/1\.1 101 }, 'chat is upgraded');
is(upgraded('chat'), 1, 'one upgraded connection in chat');

sleep 2.5;    # chat's series is idle (nobody looked it up) for 2.5 s

my ($news, $status2) = upgrade('/news');
like($status2, qr{^HTTP/1\.1 101 }, 'news is upgraded: a new series');
is(upgraded('news'), 1, 'one upgraded connection in news');
is(upgraded('chat'), 1, 'chat, idle but not at zero, keeps its series');

syswrite($chat, "ping");
sysread($chat, my $echo, 4);
is($echo, 'ping', 'chat still flows');

close $chat;
close $news;
ok(wait_until(10, sub { upgraded('chat') eq '0' && upgraded('news') eq '0' }),
   'both back to zero once closed');

$nginx->stop;
waitpid($pid, 0);
unlike($nginx->final_log, qr/\[(alert|crit|emerg)\]/, 'no alert in error.log');

done_testing();
