# nginx_http_upgraded_connections counts WebSocket (101) connections while
# they are open: one up when the backend switches protocols, one down when
# the connection ends.  A scripted backend holds the upgraded connection
# open while the test scrapes.
use strict;
use warnings;

use Test::More;
use IO::Socket::INET;
use Test::Edge qw(wait_until);
use Test::Edge::Nginx;

my $listen = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                   Listen => 4, ReuseAddr => 1) or die $!;
my $backend_port = $listen->sockport;

# the backend: accept one connection, answer 101, then echo until closed
my $pid = fork // die "fork: $!";
if ($pid == 0) {
    my $c = $listen->accept or exit 1;
    my $req = '';
    while ($req !~ /\r\n\r\n/) {
        my $n = sysread($c, $req, 4096, length $req) or exit 1;
    }
    syswrite($c, "HTTP/1.1 101 Switching Protocols\r\n"
               . "Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
    while (sysread($c, my $buf, 4096)) { syswrite($c, $buf) }
    exit 0;
}
close $listen;

my $nginx = Test::Edge::Nginx->start(http => <<"HTTP");
    metrics_zone 1m;
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
            proxy_read_timeout 10s;
        }
    }
HTTP

sub upgraded {
    my $body = $nginx->get('/metrics?family=nginx_http_upgraded')->{body};
    return $body =~ /^nginx_http_upgraded_connections\{server="ws",location="chat"\} (\d+)$/m
        ? $1 : 'absent';
}

my $ws = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                               PeerPort => $nginx->port) or die $!;
print $ws "GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        . "Connection: Upgrade\r\n\r\n";
my $status = <$ws>;
like($status, qr{^HTTP/1\.1 101 }, 'the connection is upgraded');
while (my $line = <$ws>) { last if $line eq "\r\n" }

syswrite($ws, "ping");
sysread($ws, my $echo, 4);
is($echo, 'ping', 'data flows through the upgraded connection');

is(upgraded(), 1, 'one upgraded connection in flight');

close $ws;
ok(wait_until(10, sub { upgraded() eq '0' }),
   'back to zero once the connection is closed');

waitpid($pid, 0);
$nginx->stop;
unlike($nginx->final_log, qr/\[(alert|crit|emerg)\]/, 'no alert in error.log');

done_testing();
