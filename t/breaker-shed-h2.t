# Shedding over HTTP/2: streams of one connection wait in the queue and are
# admitted one after the other (each stream is a request, parked on its
# own stream's events), and a stream whose client gives up while waiting
# leaves the queue.  The client is curl (HTTP/2 over TLS, parallel
# transfers multiplexed on one connection; curl 7.88 fails parallel
# streams with prior knowledge over cleartext, even on a bare `return`);
# skipped without an HTTP/2 curl or the openssl command.
use strict;
use warnings;

use Test::More;
use Test::Edge qw(wait_until);
use Test::Edge::Nginx;
use Test::Edge::Origin;
use File::Temp qw(tempdir);

my $Slow = $Test::Edge::Valgrind::Slowdown;

plan skip_all => 'curl without HTTP/2'
    unless (`curl --version 2>/dev/null` // '') =~ /\bHTTP2\b/;

my $tls = tempdir(CLEANUP => 1);
system("openssl req -x509 -newkey rsa:2048 -nodes -keyout $tls/k.pem"
       . " -out $tls/c.pem -days 1 -subj /CN=localhost >/dev/null 2>&1") == 0
    or plan skip_all => 'no openssl command to make a certificate';

my $origin = Test::Edge::Origin->start;
my $oport = $origin->port;

my $n = Test::Edge::Nginx->start(workers => 1, http => <<"HTTP");
    upstream origin { server 127.0.0.1:$oport; }
    breaker_shed_zone sz 1m;
    breaker_shedder h2 zone=sz limit=1 queue=10 queue_timeout=30s codel_target=0;
    server {
        listen 127.0.0.1:\$PORT ssl http2;
        ssl_certificate $tls/c.pem;
        ssl_certificate_key $tls/k.pem;
        location /h2/ {
            breaker_shed h2;
            add_header X-Shed \$shed_status always;
            proxy_pass http://origin;
        }
        location = /state {
            breaker_shed h2;
            return 200 "\$shed_in_flight \$shed_queue";
        }
    }
HTTP

sub state { return `curl -sk --http2 https://127.0.0.1:${\ $n->port}/state` }

$origin->set('/h2/x', body => 'x', delay => 0.2);
my @urls = map { "https://127.0.0.1:${\ $n->port}/h2/x?$_" } 1 .. 4;
my $out = `curl -sk --no-progress-meter --http2 -Z --parallel-max 4 @{[ ('-o /dev/null') x 4 ]} -w '%{http_version} %{http_code} %header{x-shed} %{num_connects}\\n' @urls`;
my @lines = map { (my $l = $_) =~ s{ \d+$}{}; $l } split /\n/, $out;
my $connects = 0;
$connects += $_ for $out =~ / (\d+)$/mg;
is(scalar(split /\n/, $out), 4, 'four streams answered');
is($connects, 1, 'on one connection');
is(scalar(grep { /^2 200 (ADMITTED|QUEUED)$/ } @lines), 4, 'all 200 over HTTP/2');
is(scalar(grep { /QUEUED$/ } @lines), 3, 'limit=1: three waited and were admitted in turn');
is($origin->hits('/h2/x'), 4, 'the origin saw them all');

# a stream that gives up while waiting leaves the queue
$origin->set('/h2/hang', mode => 'hang');
my $pid = fork // die;
if (!$pid) {
    open STDERR, '>', '/dev/null';
    exec 'curl', '-sk', '--no-progress-meter', '--http2', '-Z',
         '-o', '/dev/null', '-o', '/dev/null', '-o', '/dev/null',
         '--max-time', 2 * $Slow,
         map { "https://127.0.0.1:" . $n->port . "/h2/hang?$_" } 1 .. 3;
    exit 127;
}
ok(wait_until(10, sub { state() eq '1 2' }), 'one stream holds the permit, two wait');
waitpid $pid, 0;
ok(wait_until(10, sub { state() eq '0 0' }),
   'curl gave up: the waiting streams left the queue, the permit is back');
unlike($n->log, qr/\[(alert|crit|emerg)\]/, 'no alert in the log');
$n->stop;
$origin->stop;

done_testing();
