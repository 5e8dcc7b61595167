# Failure paths of the cache: its Redis silent, frozen, killed, refusing
# our password, then back; nginx reloaded while requests wait on Redis or
# on the stampede lock; the origin failing in the middle of a body; the
# size bound.  Every request still gets the origin's complete answer (or
# the cut nginx makes of a cut origin answer), nothing broken is stored,
# and the cache works again without a reload once Redis is back.
use strict;
use warnings;

use Test::More;
use Test::Edge qw(:all);
use Test::Edge::Nginx;
use Test::Edge::Origin;
use Test::Edge::Silent;
use Digest::MD5 qw(md5_hex);
use IO::Select;
use IO::Socket::INET;
use POSIX ();
use Time::HiRes qw(time sleep);

my $Slow = $Test::Edge::Valgrind::Slowdown;

redis_start() unless redis_is_up();
redis_flushall();

my $rport = $ENV{TEST_NGINX_REDIS_PORT};
my $origin = Test::Edge::Origin->start;
my $oport = $origin->port;
my $silent = Test::Edge::Silent->start;
my $sport = $silent->port;

# the password test changes the fixture's requirepass: put it back
my $requirepass;
END { redis_auth_command($requirepass, 'CONFIG', 'SET', 'requirepass', '')
          if defined $requirepass }

my $http = <<"HTTP";
    edge_cache_redis main 127.0.0.1:$rport timeout=1s;
    edge_cache_redis long 127.0.0.1:$rport timeout=30s;
    edge_cache_redis dark 127.0.0.1:$sport timeout=300ms;
    edge_cache_zone pages redis=main;
    edge_cache_zone held redis=long;
    edge_cache_zone blind redis=dark;
    server {
        listen 127.0.0.1:\$PORT backlog=512;
        edge_cache_key \$uri;
        add_header X-Cache \$edge_cache_status always;
        proxy_read_timeout 30s;
        location /p/ {
            edge_cache pages;
            proxy_pass http://127.0.0.1:$oport;
        }
        location /held/ {
            edge_cache held;
            proxy_pass http://127.0.0.1:$oport;
        }
        location /blind/ {
            edge_cache blind;
            proxy_pass http://127.0.0.1:$oport;
        }
        location /lock/ {
            edge_cache pages;
            edge_cache_lock on;
            edge_cache_lock_timeout 30s;
            edge_cache_lock_age 60s;
            proxy_pass http://127.0.0.1:$oport;
        }
        location /max/ {
            edge_cache pages;
            edge_cache_max_size 1000;
            proxy_pass http://127.0.0.1:$oport;
        }
        location /maxz/ {
            edge_cache pages;
            edge_cache_max_size 1000;
            edge_cache_compress on;
            edge_cache_compress_types text/plain;
            proxy_pass http://127.0.0.1:$oport;
        }
    }
HTTP

# one worker: the SETs of one worker go out on one Redis connection in
# order, which makes "nothing was stored" checkable (see barrier())
my $n = Test::Edge::Nginx->start(http => $http, workers => 1);

sub rkey { 'pages:{' . md5_hex($_[0]) . '}' }

# a command on its own connection, after AUTH when a password is given
sub redis_auth_command {
    my ($pass, @args) = @_;
    my $sock = Test::Edge::redis_connect() or die "redis: cannot connect\n";
    my @cmds = ((defined $pass && length $pass ? ['AUTH', $pass] : ()),
                \@args);
    my $reply;
    for my $c (@cmds) {
        my $cmd = '*' . @$c . "\r\n";
        $cmd .= '$' . length($_) . "\r\n$_\r\n" for @$c;
        print $sock $cmd;
        $reply = Test::Edge::read_reply($sock);
    }
    close $sock;
    return $reply;
}

# sends GET path on a new connection (Connection: close); the socket
sub send_get {
    my ($path, %h) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $n->port, Timeout => 10)
        or die "connect: $!";
    my $req = "GET $path HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n";
    $req .= "$_: $h{$_}\r\n" for sort keys %h;
    print $s "$req\r\n";
    $s->blocking(0);
    return $s;
}

# reads every socket to its end (or the deadline): the raw answers, and
# whether each ended by a reset
sub collect {
    my ($secs, @socks) = @_;
    my (%buf, %rst);
    my $sel = IO::Select->new(@socks);
    my $deadline = time + $secs * $Slow;
    while ($sel->count && time < $deadline) {
        for my $s ($sel->can_read(0.5)) {
            my $got = sysread($s, my $chunk, 65536);
            if ($got) { $buf{$s} .= $chunk; next }
            next if !defined $got && $!{EAGAIN};
            $rst{$s} = 1 if !defined $got && $!{ECONNRESET};
            $sel->remove($s);
        }
    }
    close $_ for @socks;
    return map { parse($buf{$_} // '', $rst{$_}) } @socks;
}

# {status, headers, body (de-chunked), complete, raw}
sub parse {
    my ($raw, $rst) = @_;
    my ($head, $body) = split /\r\n\r\n/, $raw, 2;
    my ($st) = ($head // '') =~ m{^HTTP/1\.\d (\d+)};
    my %h;
    for (split /\r\n/, $head // '') {
        $h{lc $1} = $2 if /^([^:]+):\s*(.*)$/;
    }
    $body //= '';
    my $complete;
    if (($h{'transfer-encoding'} // '') =~ /chunked/i) {
        my ($out, $rest) = ('', $body);
        $complete = 0;
        while ($rest =~ s/^([0-9a-fA-F]+)\r\n//) {
            my $len = hex $1;
            if ($len == 0) { $complete = 1; last }
            last if length($rest) < $len + 2;
            $out .= substr($rest, 0, $len);
            substr($rest, 0, $len + 2) = '';
        }
        $body = $out;
    } elsif (defined $h{'content-length'}) {
        $complete = length($body) == $h{'content-length'};
    } else {
        $complete = defined $head && !$rst;
    }
    return { status => $st // 0, headers => \%h, body => $body,
             complete => $complete ? 1 : 0, raw => $raw, rst => $rst };
}

sub show {
    my $r = $n->get(@_);
    return "$r->{status} " . ($r->{headers}{'x-cache'} // '-') . " $r->{body}";
}

# Every SET this (one-worker) nginx sent before now has reached Redis once
# a key stored after it is there: one connection, commands in order.
my $barriers = 0;
sub barrier {
    my $path = '/p/barrier-' . ++$barriers;
    $origin->set($path, headers => ['Cache-Control: max-age=60'], body => 'b');
    $n->get($path);
    return wait_until(10, sub { defined redis_command('GET', rkey($path)) });
}

# bytes received by the (frozen) Redis and not read yet: commands waiting
sub redis_unread {
    my $total = 0;
    for (`ss -Htn state established '( sport = :$rport )'`) {
        $total += $1 if /^\s*(\d+)/;
    }
    return $total;
}

sub log_since {
    my ($mark) = @_;
    return substr($n->log, $mark);
}

# the worker is connected to the fixture: a stored entry is hit
$origin->set('/p/warm', headers => ['Cache-Control: max-age=60'], body => 'w');
ok(wait_until(10, sub { show('/p/warm') eq '200 HIT w' }), 'ready: a hit');

# --- 1a. the cache's Redis accepts and never answers
{
    my $mark = length $n->log;
    $origin->set('/blind/a', headers => ['Cache-Control: max-age=60'],
                 body => 'from the origin');
    # requests for 3 s at least, and until the silent connection was given
    # up and made again: several timeouts within one 5 s log interval
    my $t0 = time;
    my @got;
    push @got, show('/blind/a')
        while (time < $t0 + 3 || @got < 6 || $silent->accepts < 2)
              && time < $t0 + 15 * $Slow;
    my $took = time - $t0;
    is_deeply(\@got, [('200 MISS from the origin') x @got],
              'silent Redis: every request a MISS answered by the origin ('
              . @got . ' requests)');
    is($origin->hits('/blind/a'), scalar @got, 'each one went to the origin');
    cmp_ok($silent->accepts, '>=', 2,
           'nginx connected, gave the silent connection up, connected again');
    my $log = log_since($mark);
    like($log, qr/redis "dark" at 127\.0\.0\.1:$sport: (command timed out after 300 ms|nothing received)/,
         'the log says why');
    my $lines = () = $log =~ /redis "dark" at [^:]+:\d+: command timed out/g;
    cmp_ok($lines, '<=', 1 + int($took / 5),
           "timeouts logged at most once per 5 s ($lines lines in ${\ sprintf '%.1f', $took} s)");
    unlike($log, qr/\[(alert|crit|emerg)\]/, 'no alert');
}

# --- 1b. Redis frozen while lookups wait, then thawed: hits again
$origin->set('/p/frz', headers => ['Cache-Control: max-age=60'], body => 'frozen?');
ok(wait_until(10, sub { show('/p/frz') eq '200 HIT frozen?' }), 'stored and hit');
{
    redis_freeze();
    my $before = $origin->hits('/p/frz');
    my $t0 = time;
    my @res = collect(30, map { send_get('/p/frz') } 1 .. 5);
    my $took = time - $t0;
    redis_thaw();
    cmp_ok($took, '>=', 0.95, 'they waited for the timeout (1s) first: '
           . sprintf('%.2f s', $took));
    is(scalar(grep { $_->{status} == 200 && $_->{complete}
                     && $_->{body} eq 'frozen?'
                     && $_->{headers}{'x-cache'} eq 'MISS' } @res), 5,
       'Redis frozen mid-lookup: 5 requests, 5 complete MISSes from the origin');
    is($origin->hits('/p/frz') - $before, 5, 'all answered by the origin');
    ok(wait_until(15, sub { show('/p/frz') eq '200 HIT frozen?' }),
       'Redis thawed: hits again, without a reload');
}

# --- 1c. Redis killed while requests wait (timeout=30s: only the loss of
# the connection can end their wait early)
$origin->set('/held/k', headers => ['Cache-Control: max-age=60'], body => 'killed');
ok(wait_until(10, sub { show('/held/k') eq '200 HIT killed' }), 'stored and hit');
{
    my $pid = Test::Edge::redis_pid();
    redis_freeze();
    my $before = $origin->hits('/held/k');
    my $queued = redis_unread();
    my @socks = map { send_get('/held/k') } 1 .. 5;
    ok(wait_until(10, sub { redis_unread() >= $queued + 5 * 20 }),
       'their GETs wait, unread, in the frozen Redis');
    kill 'KILL', $pid;
    my $t0 = time;
    my @res = collect(25, @socks);
    my $took = time - $t0;
    is(scalar(grep { $_->{status} == 200 && $_->{complete}
                     && $_->{body} eq 'killed' } @res), 5,
       'Redis killed with 5 requests waiting: 5 complete answers of the origin');
    cmp_ok($took, '<', 25 * $Slow, 'before their 30 s timeout');
    is($origin->hits('/held/k') - $before, 5, 'from the origin');
    wait_until(10, sub { !kill 0, $pid });
    redis_start();
    ok(wait_until(15, sub { show('/held/k') eq '200 HIT killed' }),
       'Redis restarted: stored and hit again, without a reload');
}

# --- 1d. a wrong password
{
    my $ours = 'nginx-side-secret-7731';
    my $http2 = <<"HTTP";
    edge_cache_redis locked 127.0.0.1:$rport password=$ours timeout=1s;
    edge_cache_zone pages redis=locked;
    server {
        listen 127.0.0.1:\$PORT;
        edge_cache_key \$uri;
        add_header X-Cache \$edge_cache_status always;
        location / {
            edge_cache pages;
            proxy_pass http://127.0.0.1:$oport;
        }
    }
HTTP
    $requirepass = 'fixture-other-secret';
    is(redis_command('CONFIG', 'SET', 'requirepass', $requirepass), 'OK',
       'requirepass set on the fixture');
    my $m = Test::Edge::Nginx->start(http => $http2, workers => 1);
    $origin->set('/pw', headers => ['Cache-Control: max-age=60'], body => 'pw');
    my @got = map { my $r = $m->get('/pw');
                    "$r->{status} $r->{headers}{'x-cache'} $r->{body}" } 1 .. 3;
    is_deeply(\@got, [('200 MISS pw') x 3], 'wrong password: MISSes, answered');
    ok(wait_until(10, sub { $m->log =~ /redis "locked" at [^:]+:\d+: handshake failed: (WRONGPASS|ERR)/ }),
       'a clear log line: the handshake failed')
        or diag($m->log);
    unlike($m->log, qr/\Q$ours\E/, 'never the password in the log');
    # the operator fixes Redis: nginx's reconnects succeed
    is(redis_auth_command($requirepass, 'CONFIG', 'SET', 'requirepass', $ours),
       'OK', 'Redis now wants our password');
    $requirepass = $ours;
    ok(wait_until(15, sub { my $r = $m->get('/pw');
                            ($r->{headers}{'x-cache'} // '') eq 'HIT' }),
       'hits again without a reload');
    is(redis_auth_command($requirepass, 'CONFIG', 'SET', 'requirepass', ''),
       'OK', 'requirepass restored');
    undef $requirepass;
    $m->stop;
    unlike($m->final_log, qr/\Q$ours\E/, 'still no password in the log');
    unlike($m->final_log, qr/\[(alert|crit|emerg)\]|open socket .* left/,
           'no alert, no socket left');
}

# --- 2. reload while requests wait
sub master_pid {
    open my $fh, '<', "$n->{prefix}/logs/nginx.pid" or return;
    chomp(my $pid = <$fh> // '');
    return $pid;
}

sub reload_and_wait {
    my @old = $n->worker_pids;
    kill 'HUP', master_pid();
    # the old workers were told to go (they may still run with their
    # requests: that is the point)
    my $re = join '|', @old;
    wait_until(20, sub { $n->log =~ /\[notice\] (?:$re)#\d+: gracefully shutting down/ })
        or die "the old workers @old were not told to shut down\n";
    return @old;
}

# waiting on a frozen Redis (timeout=30s): the old worker keeps them
$origin->set('/held/r', headers => ['Cache-Control: max-age=60'], body => 'reload');
ok(wait_until(10, sub { show('/held/r') eq '200 HIT reload' }), 'stored and hit');
{
    my $mark = length $n->log;
    redis_freeze();
    my $queued = redis_unread();
    my @socks = map { send_get('/held/r') } 1 .. 5;
    ok(wait_until(10, sub { redis_unread() >= $queued + 5 * 20 }),
       'their GETs wait, unread, in the frozen Redis');
    my @old = reload_and_wait();
    redis_thaw();
    my @res = collect(40, @socks);
    is(scalar(grep { $_->{status} == 200 && $_->{complete}
                     && $_->{body} eq 'reload' } @res), 5,
       'reload while 5 requests wait on a frozen Redis: 5 complete answers');
    ok(wait_until(30, sub { !grep { kill 0, $_ } @old }), 'the old worker exited');
    unlike(log_since($mark), qr/open socket .* left/, 'no "open socket left"');
}

# waiting on the stampede lock: the owner's origin answer takes 2 s
$origin->set('/lock/r', headers => ['Cache-Control: max-age=60'],
             body => 'locked' x 100, count_body => 1, delay => 2);
{
    my $mark = length $n->log;
    my @socks = map { send_get('/lock/r') } 1 .. 10;
    ok(wait_until(10, sub { defined redis_command('GET', rkey('/lock/r') . ':lock') }),
       'the lock is taken');
    my @old = reload_and_wait();
    my @res = collect(40, @socks);
    is(scalar(grep { $_->{status} == 200 && $_->{complete}
                     && $_->{body} =~ /^(locked){100}#\d+$/ } @res), 10,
       'reload while 9 requests wait on the lock: 10 complete answers')
        or diag(join "\n", map { "$_->{status} $_->{complete} "
                                 . substr($_->{raw}, 0, 200) } @res);
    # the waiters hold the old worker's Redis connection between their
    # polls (ngx_edge_redis_hold), so a reload keeps the protection
    is($origin->hits('/lock/r'), 1, 'one origin request');
    is(scalar(grep { $_->{body} eq ('locked' x 100) . '#1' } @res), 10,
       'all with its body');
    ok(wait_until(30, sub { !grep { kill 0, $_ } @old }), 'the old worker exited');
    unlike(log_since($mark), qr/open socket .* left/, 'no "open socket left"');
}

# waiting on a lock held by someone else (another node): no request of
# this worker holds a timer but the waiters' own lock timers
{
    my $path = '/lock/other';
    my $mark = length $n->log;
    $origin->set($path, headers => ['Cache-Control: max-age=60'],
                 body => 'other', count_body => 1);
    redis_command('SET', rkey($path) . ':lock', 'someone-else', 'PX', 60000);
    redis_command('CONFIG', 'RESETSTAT');
    my @socks = map { send_get($path) } 1 .. 5;
    ok(wait_until(10, sub { redis_calls('eval') >= 10 }),
       'the requests wait on the lock (polling it)');
    my @old = reload_and_wait();
    # the other node gives its lock up
    redis_command('DEL', rkey($path) . ':lock');
    my @res = collect(40, @socks);
    is(scalar(grep { $_->{status} == 200 && $_->{complete}
                     && $_->{body} =~ /^other#\d+$/ } @res), 5,
       'reload while 5 requests wait on another\'s lock: 5 complete answers')
        or diag(join "\n", map { "$_->{status} $_->{complete} "
                                 . substr($_->{raw}, 0, 200) } @res);
    ok(wait_until(30, sub { !grep { kill 0, $_ } @old }), 'the old worker exited');
    unlike(log_since($mark), qr/open socket .* left/, 'no "open socket left"');
}

# --- 3. the origin fails in the middle of the body
sub cut_case {
    my ($path, $name, %set) = @_;
    my $body = join '', map { sprintf "%07d\n", $_ } 1 .. 1000;   # 8000 bytes
    $origin->set($path, headers => ['Cache-Control: max-age=60'],
                 body => $body, %set);
    my ($r) = collect(20, send_get($path));
    is($r->{status}, 200, "$name: the header reached the client");
    ok(!$r->{complete}, "$name: the client's response is cut (not complete)")
        or diag(substr($r->{raw}, 0, 300));
    ok(length($r->{body}) < length($body)
       && $r->{body} eq substr($body, 0, length $r->{body}),
       "$name: a prefix of the body, shorter than it");
    ok(barrier(), "$name: later SETs reached Redis");
    ok(!defined redis_command('GET', rkey($path)), "$name: nothing stored");
    $origin->set($path, headers => ['Cache-Control: max-age=60'], body => $body);
    my $before = $origin->hits($path);
    my $next = $n->get($path);
    is(($next->{headers}{'x-cache'} // '-') . ' ' . ($origin->hits($path) - $before),
       'MISS 1', "$name: the next request is a miss, to the origin");
    ok(wait_until(10, sub { show($path) eq "200 HIT $body" }),
       "$name: the complete answer is then stored");
}

cut_case('/p/cut-cl', 'truncate, Content-Length', mode => 'truncate',
         body_delay => 0.1);
cut_case('/p/cut-ch', 'truncate, chunked', mode => 'truncate', chunked => 1,
         body_delay => 0.1);
cut_case('/p/rst-cl', 'reset mid-body, Content-Length',
         mode => 'truncate_reset', body_delay => 0.1);
cut_case('/p/rst-ch', 'reset mid-body, chunked', mode => 'truncate_reset',
         chunked => 1, body_delay => 0.1);

# neither Content-Length nor chunked: the end of the body is the close,
# so a cut cannot be seen by anyone; what is stored is what the client got
{
    my $body = 'c' x 8000;
    $origin->set('/p/cut-eof', headers => ['Cache-Control: max-age=60',
                                           'Content-Length:'],
                 body => $body, mode => 'truncate', body_delay => 0.1);
    my ($r) = collect(20, send_get('/p/cut-eof'));
    is("$r->{status} " . length($r->{body}), '200 4000',
       'close-delimited, cut: the client gets what came (4000 bytes)');
    ok(wait_until(10, sub { show('/p/cut-eof') eq '200 HIT ' . ('c' x 4000) }),
       'and the cache stores exactly that (nobody can tell it was cut)');
}

# --- 3b. edge_cache_max_size bounds the uncompressed body
for my $loc ('/max/', '/maxz/') {
    for my $chunked (0, 1) {
        my $how = ($loc eq '/maxz/' ? 'compressed, ' : '')
                  . ($chunked ? 'chunked' : 'Content-Length');
        my $over = "${loc}over$chunked";
        my $at = "${loc}at$chunked";
        $origin->set($over, headers => ['Cache-Control: max-age=60'],
                     body => 'z' x 1001, chunked => $chunked);
        $origin->set($at, headers => ['Cache-Control: max-age=60'],
                     body => 'z' x 1000, chunked => $chunked);
        is(show($over), '200 MISS ' . ('z' x 1001), "$how: 1001 bytes answered");
        ok(barrier(), "$how: later SETs reached Redis");
        ok(!defined redis_command('GET', rkey($over)),
           "$how: max_size + 1 byte: not stored");
        is(show($over), '200 MISS ' . ('z' x 1001), "$how: and a miss again");
        is(show($at), '200 MISS ' . ('z' x 1000), "$how: 1000 bytes answered");
        ok(wait_until(10, sub { show($at) eq '200 HIT ' . ('z' x 1000) }),
           "$how: exactly max_size: stored and hit");
    }
}

$n->stop;
my $log = $n->final_log;
unlike($log, qr/\[(alert|crit|emerg)\]/, 'no alert, crit or emerg')
    or diag(join "\n", grep { /\[(alert|crit|emerg)\]/ } split /\n/, $log);
unlike($log, qr/exited on signal/, 'no worker crashed');
unlike($log, qr/open socket .* left/, 'no socket left open at exit');
$silent->stop;
$origin->stop;

done_testing();
