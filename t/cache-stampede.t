# The stampede lock: many concurrent requests for one cold (or expired)
# URL cause exactly one origin request, on one node and across two nodes
# sharing Redis; the others get the stored response (or the stale one,
# with "updating"); an uncacheable answer leaves a hit-for-miss marker so
# later requests skip the lock; a lock that is never released ends with
# its age, and waiters give up after edge_cache_lock_timeout.
use strict;
use warnings;

use Test::More;
use Test::Edge qw(:all);
use Test::Edge::Nginx;
use Test::Edge::Origin;
use Digest::MD5 qw(md5_hex);
use IO::Select;
use IO::Socket::INET;
use Time::HiRes qw(time sleep);

redis_start() unless redis_is_up();
redis_flushall();

my $rport = $ENV{TEST_NGINX_REDIS_PORT};
my $origin = Test::Edge::Origin->start;
my $oport = $origin->port;

my $http = <<"HTTP";
    edge_cache_redis main 127.0.0.1:$rport timeout=1s max_inflight=4096;
    edge_cache_zone pages redis=main;
    upstream origin { server 127.0.0.1:$oport; keepalive 16; }
    server {
        listen 127.0.0.1:\$PORT backlog=1024;
        location / {
            edge_cache pages;
            edge_cache_key \$uri;
            edge_cache_lock on;
            edge_cache_lock_timeout 20s;
            edge_cache_lock_age 30s;
            edge_cache_hit_for_miss 30s;
            add_header X-Cache \$edge_cache_status always;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://origin;
        }
        location /short/ {
            edge_cache pages;
            edge_cache_key \$uri;
            edge_cache_lock on;
            edge_cache_lock_timeout 300ms;
            add_header X-Cache \$edge_cache_status always;
            proxy_pass http://origin;
        }
        location /stale/ {
            edge_cache pages;
            edge_cache_key \$uri;
            edge_cache_lock on;
            edge_cache_lock_timeout 20s;
            edge_cache_use_stale updating;
            edge_cache_background_update off;
            add_header X-Cache \$edge_cache_status always;
            proxy_pass http://origin;
        }
    }
HTTP

my $a = Test::Edge::Nginx->start(http => $http, workers => 2);
my $b = Test::Edge::Nginx->start(http => $http, workers => 2);

sub rkey { 'pages:{' . md5_hex($_[0]) . '}' }

# N requests at once (all connected and sent before any answer can come:
# the origin holds its answer), then every answer: [status, x-cache, body]
sub storm {
    my ($ports, $path, $n) = @_;
    my (@socks, %buf);
    for my $i (0 .. $n - 1) {
        my $port = $ports->[$i % @$ports];
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                      Timeout => 10) or die "connect: $!";
        $s->blocking(0);
        push @socks, $s;
    }
    print {$_} "GET $path HTTP/1.0\r\nHost: localhost\r\n\r\n" for @socks;
    my $sel = IO::Select->new(@socks);
    my $deadline = time + 60 * $Test::Edge::Valgrind::Slowdown;
    while ($sel->count && time < $deadline) {
        for my $s ($sel->can_read(1)) {
            my $got = sysread($s, my $chunk, 65536);
            if ($got) { $buf{$s} .= $chunk; next }
            $sel->remove($s);
            close $s;
        }
    }
    return map {
        my ($head, $body) = split /\r\n\r\n/, ($buf{$_} // ''), 2;
        my ($st) = ($head // '') =~ m{^HTTP/1\.\d (\d+)};
        my ($xc) = ($head // '') =~ /^X-Cache: (\S+)/mi;
        [$st // 0, $xc // '-', $body // '']
    } @socks;
}

# both nodes connected to Redis (a worker answers MISS without it)
for my $n ($a, $b) {
    $origin->set('/warm', headers => ['Cache-Control: max-age=60'], body => 'w');
    ok(wait_until(10, sub { my $r = $n->get('/warm'); $r->{headers}{'x-cache'} eq 'HIT' }),
       'node ready: a hit from Redis');
}

# --- one node, 200 concurrent requests, one cold URL
$origin->set('/cold1', headers => ['Cache-Control: max-age=60'],
             body => 'x' x 1000, count_body => 1, delay => 1);
my @res = storm([$a->port], '/cold1', 200);
is($origin->hits('/cold1'), 1, '200 concurrent requests on one node: one origin request');
is(scalar(grep { $_->[0] == 200 } @res), 200, 'every request answered 200');
is(scalar(grep { $_->[2] eq ('x' x 1000) . '#1' } @res), 200, 'all with the one origin body');
is(scalar(grep { $_->[1] eq 'MISS' } @res), 1, 'one MISS (the lock owner), the others HIT');

# --- two nodes sharing Redis
$origin->set('/cold2', headers => ['Cache-Control: max-age=60'],
             body => 'y' x 1000, count_body => 1, delay => 1);
@res = storm([$a->port, $b->port], '/cold2', 200);
is($origin->hits('/cold2'), 1, '200 requests over two nodes: one origin request');
is(scalar(grep { $_->[0] == 200 && $_->[2] eq ('y' x 1000) . '#1' } @res), 200,
   'all answered with that body');

# --- an expired entry: the lock covers it too (and an answer that is
# stale on arrival, max-age=1 with a 1 s origin, still serves the waiters)
$origin->set('/exp', headers => ['Cache-Control: max-age=1'], body => 'e', count_body => 1);
$a->get('/exp');
ok(wait_until(5, sub { defined redis_command('GET', rkey('/exp')) }), 'stored');
ok(wait_until(5, sub { ($a->get('/exp')->{headers}{'x-cache'} // '') eq 'EXPIRED' }),
   'expired after its max-age');
ok(wait_until(5, sub { ($a->get('/exp')->{headers}{'x-cache'} // '') eq 'EXPIRED' }),
   'and again (each refetch stores an entry of max-age=1)');
$origin->set('/exp', headers => ['Cache-Control: max-age=1'], body => 'e',
             count_body => 1, delay => 1);
sleep 1.1;   # the last stored entry is stale now (max-age=1)
my $before = $origin->hits('/exp');
@res = storm([$a->port, $b->port], '/exp', 100);
is($origin->hits('/exp') - $before, 1, '100 requests for an expired entry: one origin request');
is(scalar(grep { $_->[0] == 200 && $_->[2] eq 'e#' . $origin->hits('/exp') } @res), 100,
   'all answered with the new body');

# --- "updating": the others get the stale entry at once
$origin->set('/stale/u', headers => ['Cache-Control: max-age=1'], body => 's', count_body => 1);
$a->get('/stale/u');
ok(wait_until(5, sub { defined redis_command('GET', rkey('/stale/u')) }), 'stored');
sleep 1.2;
$origin->set('/stale/u', headers => ['Cache-Control: max-age=60'], body => 's',
             count_body => 1, delay => 2);
$before = $origin->hits('/stale/u');
@res = storm([$a->port], '/stale/u', 50);
is($origin->hits('/stale/u') - $before, 1, 'updating: one origin request');
is(scalar(grep { $_->[1] eq 'UPDATING' && $_->[2] eq 's#1' } @res), 49,
   'the 49 others got the stale entry, marked UPDATING');

# --- hit-for-miss: an uncacheable answer, then requests skip the lock
$origin->set('/nc', headers => ['Cache-Control: no-store'], body => 'n', delay => 0.5);
$a->get('/nc');
ok(wait_until(5, sub { (redis_command('GET', rkey('/nc')) // '') eq 'NXHM' }),
   'an uncacheable answer leaves the marker');
$before = $origin->hits('/nc');
my $t0 = time;
@res = storm([$a->port], '/nc', 20);
is($origin->hits('/nc') - $before, 20, 'with the marker, 20 requests go to the origin');
cmp_ok(time - $t0, '<', 0.5 * 20, 'in parallel, not one after the other (not serialised by the lock)');
is(scalar(grep { $_->[1] eq 'MISS' } @res), 20, 'all MISS');

# --- a lock nobody releases: waiters give up after the lock timeout and
# go to the origin without storing
redis_command('SET', rkey('/short/x') . ':lock', 'someone-else', 'PX', 60000);
$origin->set('/short/x', headers => ['Cache-Control: max-age=60'], body => 'l');
my $r = $a->get('/short/x');
is("$r->{status} $r->{headers}{'x-cache'}", '200 MISS', 'lock held elsewhere: MISS after the timeout');
is($origin->hits('/short/x'), 1, 'the origin answered it');
ok(!defined redis_command('GET', rkey('/short/x')), 'and it was not stored');
is(redis_command('GET', rkey('/short/x') . ':lock'), 'someone-else', 'the other\'s lock untouched');

# --- the owner's lock is released after the store
$origin->set('/rel', headers => ['Cache-Control: max-age=60'], body => 'r');
$a->get('/rel');
ok(wait_until(5, sub { defined redis_command('GET', rkey('/rel')) }), 'stored');
ok(wait_until(5, sub { !defined redis_command('GET', rkey('/rel') . ':lock') }),
   'and its lock released');

# --- the lock owner's client goes away: the lock is released, the others
# are not stuck until lock_age
$origin->set('/gone', headers => ['Cache-Control: max-age=60'], body => 'g', mode => 'hang');
{
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $a->port) or die;
    print $s "GET /gone HTTP/1.0\r\nHost: x\r\n\r\n";
    ok(wait_until(5, sub { defined redis_command('GET', rkey('/gone') . ':lock') }),
       'the lock is taken');
    close $s;
}
ok(wait_until(10, sub { !defined redis_command('GET', rkey('/gone') . ':lock') }),
   'client gone: its lock is released (proxy_ignore_client_abort off)');
$origin->reset;

for my $n ($a, $b) {
    $n->stop;
    my $log = $n->final_log;
    unlike($log, qr/\[(alert|crit|emerg)\]/, 'no alert, crit or emerg') or diag($log);
    unlike($log, qr/open socket .* left/, 'no socket left open at exit');
}
$origin->stop;

done_testing();
