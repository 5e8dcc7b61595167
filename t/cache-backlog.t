# A stalled Redis does not become the worker's memory: once 32 MB of
# stores wait for the cache's connection, further stores are skipped
# (logged), responses are unaffected, and stores resume when Redis does.
use strict;
use warnings;

use Test::More;
use Test::Edge qw(:all);
use Test::Edge::Nginx;
use Test::Edge::Origin;
use Digest::MD5 qw(md5_hex);
use IO::Select;
use IO::Socket::INET;
use Time::HiRes qw(time);

redis_start() unless redis_is_up();
redis_flushall();

my $rport = $ENV{TEST_NGINX_REDIS_PORT};
my $origin = Test::Edge::Origin->start;
my $oport = $origin->port;

my $http = <<"HTTP";
    edge_cache_redis main 127.0.0.1:$rport timeout=60s max_inflight=4096;
    edge_cache_zone pages redis=main;
    server {
        listen 127.0.0.1:\$PORT backlog=512;
        location / {
            edge_cache pages;
            edge_cache_key \$uri;
            edge_cache_max_size 2m;
            edge_cache_compress off;
            # no lookup (it would wait for the frozen Redis): only stores,
            # whose commands wait for their answer within timeout=, so the
            # connection is neither silent nor dropped while frozen
            edge_cache_bypass \$arg_bypass;
            proxy_buffers 64 32k;
            add_header X-Cache \$edge_cache_status always;
            proxy_pass http://127.0.0.1:$oport;
        }
    }
HTTP

my $n = Test::Edge::Nginx->start(http => $http, workers => 1);

sub rkey { 'pages:{' . md5_hex($_[0]) . '}' }

ok(wait_until(10, sub { $origin->set('/w', headers => ['Cache-Control: max-age=60'], body => 'w');
                        $n->get('/w'); $n->get('/w')->{headers}{'x-cache'} eq 'HIT' }), 'connected');

my $body = 'b' x 1_000_000;
$origin->set("/big$_", headers => ['Cache-Control: max-age=60'], body => $body) for 1 .. 60;

# all at once while Redis is frozen: every answer is whole, and the stores
# pile up in the worker until the bound
redis_freeze();
my (@socks, %buf);
for my $i (1 .. 60) {
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $n->port) or die $!;
    print $s "GET /big$i?bypass=1 HTTP/1.0\r\nHost: x\r\n\r\n";
    $s->blocking(0);
    push @socks, $s;
}
my $sel = IO::Select->new(@socks);
my $deadline = time + 60 * $Test::Edge::Valgrind::Slowdown;
while ($sel->count && time < $deadline) {
    for my $s ($sel->can_read(1)) {
        my $got = sysread($s, my $chunk, 1 << 20);
        if ($got) { $buf{$s} .= $chunk; next }
        $sel->remove($s); close $s;
    }
}
my $whole = grep { my ($h, $b) = split /\r\n\r\n/, ($buf{$_} // ''), 2;
                   ($h // '') =~ m{^HTTP/1\.\d 200} && length($b // '') == 1_000_000 } @socks;
is($whole, 60, 'Redis frozen: all 60 responses of 1 MB whole');
like($n->log, qr/not stored: \d+ bytes wait for Redis already/, 'stores past the bound are skipped, and logged');
redis_thaw();

# Redis back: what was queued lands, new stores too
ok(wait_until(20, sub { grep { redis_command('EXISTS', rkey("/big$_")) } 1 .. 60 }),
   'the queued stores reach Redis once it answers');
$origin->set('/after', headers => ['Cache-Control: max-age=60'], body => 'a');
ok(wait_until(20, sub { $n->get('/after'); $n->get('/after')->{headers}{'x-cache'} eq 'HIT' }),
   'stores resume');
my $stored = grep { redis_command('EXISTS', rkey("/big$_")) } 1 .. 60;
cmp_ok($stored, '<', 60, "not every big response was stored ($stored of 60)");

$n->stop;
my $log = $n->final_log;
unlike($log, qr/\[(alert|crit|emerg)\]/, 'no alert, crit or emerg') or diag(substr($log, -3000));
$origin->stop;

done_testing();
