# Load shedding (ngx_http_breaker_shed_module): the limit is exact, permits
# come back on every path (a response, an upstream error, a timeout, a
# client abort, the end of an upgraded connection), higher priorities are
# admitted first and lower ones shed first, a guaranteed share holds
# permits for its class, the queue is bounded in length and in time, CoDel
# sheds a standing queue early, shed_probability sheds the lowest class at
# about that rate, two workers share one limit, and a reload leaves no
# queued request hanging.
#
# The origin (Test::Edge::Origin) holds requests in 'hang' mode until the
# test resets it or the client goes away, so "in flight" is exactly what
# the test made it; every wait polls for a condition with a deadline.
use strict;
use warnings;

use Test::More;
use Test::Edge qw(wait_until);
use Test::Edge::Nginx;
use Test::Edge::Origin;
use IO::Select;
use IO::Socket::INET;
use Time::HiRes qw(time sleep);

my $Slow = $Test::Edge::Valgrind::Slowdown;

my $origin = Test::Edge::Origin->start;
my $oport = $origin->port;

# one location per shedder: /NAME/... goes to the origin as is
sub loc {
    my ($name, $extra) = @_;
    $extra //= '';
    return <<"LOC";
        location /$name/ {
            breaker_shed $name priority=\$http_x_prio;
            add_header X-Shed \$shed_status always;
            add_header X-Shed-Reason \$shed_reason always;
            add_header X-Pid \$pid always;
            proxy_pass http://origin;
            $extra
        }
        location = /state/$name {
            breaker_shed $name;
            return 200 "\$shed_in_flight \$shed_queue \$shed_limit";
        }
LOC
}

my $http = <<"HTTP";
    upstream origin { server 127.0.0.1:$oport; }
    breaker_shed_zone shed 1m;
    breaker_shedder lim zone=shed limit=3;
    breaker_shedder q zone=shed limit=2 queue=3 queue_timeout=1500ms codel_target=0;
    breaker_shedder p zone=shed limit=2 queue=10 queue_timeout=30s codel_target=0;
    breaker_shed_class p 10;
    breaker_shed_class p 5;
    breaker_shed_class p 1;
    breaker_shedder ev zone=shed limit=1 queue=2 queue_timeout=30s codel_target=0;
    breaker_shed_class ev 10;
    breaker_shed_class ev 1;
    breaker_shedder sh zone=shed limit=4 queue=10 queue_timeout=30s codel_target=0;
    breaker_shed_class sh 10;
    breaker_shed_class sh 1 share=50%;
    breaker_shedder ns zone=shed limit=4 queue=10 queue_timeout=30s codel_target=0;
    breaker_shed_class ns 10;
    breaker_shed_class ns 1;
    breaker_shedder cd zone=shed limit=1 queue=100 queue_timeout=20s
                    codel_target=50ms codel_interval=300ms;
    breaker_shedder cdp zone=shed limit=1 queue=100 queue_timeout=20s
                    codel_target=50ms codel_interval=300ms;
    breaker_shed_class cdp 10;
    breaker_shed_class cdp 1;
    breaker_shedder pr zone=shed limit=1 queue=1000 queue_timeout=300ms
                    codel_target=0 shed_probability=0.5;
    breaker_shed_class pr 10;
    breaker_shed_class pr 1;
    breaker_shedder ws zone=shed limit=1;
    breaker_shedder rl zone=shed limit=1 queue=5 queue_timeout=20s codel_target=0;
    server {
        listen 127.0.0.1:\$PORT backlog=1024;
${\ loc('lim') }
${\ loc('lto', 'proxy_read_timeout 1s;') }
${\ loc('q') }
${\ loc('p') }
${\ loc('ev') }
${\ loc('sh') }
${\ loc('ns') }
${\ loc('cd') }
${\ loc('cdp') }
${\ loc('pr') }
${\ loc('rl') }
        location /ws/ {
            breaker_shed ws;
            add_header X-Shed \$shed_status always;
            proxy_http_version 1.1;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 60s;
            proxy_pass http://origin;
        }
        location = /state/ws {
            breaker_shed ws;
            return 200 "\$shed_in_flight \$shed_queue \$shed_limit";
        }
    }
HTTP
# lto shares lim's permits
$http =~ s/breaker_shed lto /breaker_shed lim /;
$http =~ s{location = /state/lto \{.*?\}\n}{}s;

my $n = Test::Edge::Nginx->start(http => $http, workers => 1);

# --- a client: requests sent at once, answers read as they come

sub send_req {
    my ($port, $path, %h) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                  Timeout => 10) or die "connect: $!";
    my $req = "GET $path HTTP/1.0\r\nHost: localhost\r\n";
    $req .= "$_: $h{$_}\r\n" for sort keys %h;
    print $s "$req\r\n";
    $s->blocking(0);
    return { sock => $s, buf => '', sent => time, path => $path };
}

sub parse {
    my ($c) = @_;
    my ($head, $body) = split /\r\n\r\n/, $c->{buf}, 2;
    my ($st) = ($head // '') =~ m{^HTTP/1\.\d (\d+)};
    my %h;
    for (split /\r\n/, $head // '') { $h{lc $1} = $2 if /^([^:]+):\s*(.*)$/ }
    $c->{status} = $st // 0;
    $c->{h} = \%h;
    $c->{body} = $body // '';
    return $c;
}

# reads every client until it is answered (EOF) or the deadline; returns
# the answered ones (the others stay open)
sub collect {
    my ($clients, $timeout, $want) = @_;
    my %by = map { ($_->{sock} => $_) } grep { !$_->{done} } @$clients;
    my $sel = IO::Select->new(map { $_->{sock} } values %by);
    my $deadline = time + $timeout * $Slow;
    my @done;
    while ($sel->count && time < $deadline) {
        last if defined $want && @done >= $want;
        for my $s ($sel->can_read(0.05)) {
            my $c = $by{$s};
            my $got = sysread($s, my $chunk, 65536);
            if ($got) { $c->{buf} .= $chunk; next }
            next if !defined $got && $!{EAGAIN};
            $sel->remove($s);
            close $s;
            $c->{done} = time;
            push @done, parse($c);
        }
    }
    return @done;
}

sub state_of {
    my ($name, $node) = @_;
    my $r = ($node // $n)->get("/state/$name");
    return $r->{body};
}

sub in_flight { (split ' ', state_of(@_))[0] // -1 }
sub queued    { (split ' ', state_of(@_))[1] // -1 }

sub count_where { my ($code, @l) = @_; return scalar grep { $code->($_) } @l }

sub abort { my ($c) = @_; close $c->{sock}; $c->{done} = time }

# --- the limit is exact; shed at once without a queue, 503 + Retry-After

$origin->set('/lim/hang', mode => 'hang');
my @c = map { send_req($n->port, '/lim/hang') } 1 .. 8;
my @done = collect(\@c, 10, 5);
ok(wait_until(10, sub { $origin->hits('/lim/hang') == 3 }),
   'limit=3: three requests reach the origin');
is(scalar(@done), 5, 'the five others are answered at once');
is(count_where(sub { $_[0]{status} == 503 }, @done), 5, 'with 503');
is(count_where(sub { ($_[0]{h}{'retry-after'} // '') eq '1' }, @done), 5,
   'and Retry-After: 1');
is(count_where(sub { ($_[0]{h}{'x-shed'} // '') eq 'SHED'
                     && $_[0]{h}{'x-shed-reason'} eq 'limit' }, @done), 5,
   '$shed_status SHED, $shed_reason limit');
is(in_flight('lim'), 3, 'three permits in flight');
sleep 0.3;
is($origin->hits('/lim/hang'), 3, 'still exactly three at the origin');

# --- permits come back on an upstream error

$origin->reset;
@done = collect(\@c, 10);
is(count_where(sub { $_[0]{status} == 502 }, @done), 3,
   'the origin closes the three held connections: 502');
ok(wait_until(5, sub { in_flight('lim') == 0 }),
   'upstream error: every permit released');

# the full limit again, exactly
sub fill_lim {
    my ($path, $want) = @_;
    $origin->set($path, mode => 'hang');
    my $before = $origin->hits($path);
    my @cl = map { send_req($n->port, $path) } 1 .. 6;
    my @sh = collect(\@cl, 10, 3);
    ok(wait_until(10, sub { $origin->hits($path) - $before == 3 }),
       "$want: three admitted");
    is(count_where(sub { $_[0]{status} == 503 }, @sh), 3,
       "$want: three shed");
    return grep { !$_->{done} } @cl;
}

my @held = fill_lim('/lim/abort', 'after the upstream error');

# --- permits come back on a client abort

abort($_) for @held;
ok(wait_until(5, sub { in_flight('lim') == 0 }),
   'client abort: every permit released');

# --- and on an upstream timeout (proxy_read_timeout 1s, same shedder)

@held = fill_lim('/lto/slow', 'after the client abort');
my @to = collect(\@held, 10);
is(count_where(sub { $_[0]{status} == 504 }, @to), 3, 'upstream timeout: 504');
ok(wait_until(5, sub { in_flight('lim') == 0 }),
   'upstream timeout: every permit released');
@held = fill_lim('/lim/again', 'after the timeout');
abort($_) for @held;
ok(wait_until(5, sub { in_flight('lim') == 0 }), 'released again');
$origin->reset;

# --- the queue: bounded in length, then in time

$origin->set('/q/hang', mode => 'hang');
my @hold = map { send_req($n->port, '/q/hang') } 1 .. 2;
ok(wait_until(10, sub { $origin->hits('/q/hang') == 2 }), 'queue: two hold the limit');
my @w = map { send_req($n->port, '/q/wait') } 1 .. 5;
@done = collect(\@w, 10, 2);
is(count_where(sub { $_[0]{status} == 503
                     && $_[0]{h}{'x-shed-reason'} eq 'queue_full' }, @done), 2,
   'queue=3: the two requests beyond it are shed at once (queue_full)');
ok(wait_until(5, sub { queued('q') == 3 }), 'three wait');
@done = collect(\@w, 10);
is(scalar(@done), 3, 'the three waiting are answered');
is(count_where(sub { $_[0]{status} == 503
                     && $_[0]{h}{'x-shed-reason'} eq 'timeout' }, @done), 3,
   'after queue_timeout: shed (timeout)');
my @waits = map { $_->{done} - $_->{sent} } @done;
is(count_where(sub { $_[0] >= 1.5 - 0.01 }, @waits), 3,
   'none before queue_timeout=1500ms');
is(count_where(sub { $_[0] < 1.5 + 3 * $Slow }, @waits), 3,
   'all within a bound after it');
is(queued('q'), 0, 'the queue is empty');
is(in_flight('q'), 2, 'the two holders still hold their permits');

# a waiting request is admitted when a permit comes back: QUEUED
$origin->set('/q/after', mode => 'hang');
@w = map { send_req($n->port, "/q/after?$_") } 1 .. 2;
ok(wait_until(5, sub { queued('q') == 2 }), 'two wait again');
abort($hold[0]);
ok(wait_until(5, sub { $origin->hits('/q/after') == 1 }),
   'one permit back: one waiting request admitted');
is(queued('q') . ' ' . in_flight('q'), '1 2', 'the other still waits');
abort($hold[1]);
ok(wait_until(5, sub { $origin->hits('/q/after') == 2 }),
   'the next permit: the second');
$origin->reset;
@done = collect(\@w, 10);
is(count_where(sub { $_[0]{status} == 502
                     && ($_[0]{h}{'x-shed'} // '') eq 'QUEUED' }, @done), 2,
   '$shed_status QUEUED (answered by the origin: 502 once it is reset)');
ok(wait_until(5, sub { in_flight('q') == 0 }), 'released');

# a client that goes away while waiting leaves the queue
$origin->set('/q/hang', mode => 'hang');
$origin->set('/q/after', mode => 'hang');
@hold = map { send_req($n->port, '/q/hang') } 1 .. 2;
ok(wait_until(10, sub { in_flight('q') == 2 }), 'the limit is held again');
@w = map { send_req($n->port, '/q/after') } 1 .. 3;
ok(wait_until(5, sub { queued('q') == 3 }), 'three wait');
abort($_) for @w;
ok(wait_until(5, sub { queued('q') == 0 }), 'clients gone: the queue is empty');
is(in_flight('q'), 2, 'no permit taken or lost');
abort($_) for @hold;
ok(wait_until(5, sub { in_flight('q') == 0 }), 'all permits back');
$origin->reset;

# --- priority: the higher class is admitted first

$origin->set('/p/hold', mode => 'hang');
$origin->set('/p/after', mode => 'hang');
@hold = map { send_req($n->port, '/p/hold', 'X-Prio' => 1) } 1 .. 2;
ok(wait_until(10, sub { in_flight('p') == 2 }), 'priority: two low requests hold the limit');
my $low = send_req($n->port, '/p/after?c=low', 'X-Prio' => 1);
ok(wait_until(5, sub { queued('p') == 1 }), 'a low one waits');
my $mid = send_req($n->port, '/p/after?c=mid', 'X-Prio' => 7);
my $high = send_req($n->port, '/p/after?c=high', 'X-Prio' => 10);
ok(wait_until(5, sub { queued('p') == 3 }), 'then a middle and a high one');
abort($hold[0]);
ok(wait_until(5, sub { $origin->hits('/p/after?c=high') == 1 }),
   'one permit back: the high request is admitted');
abort($hold[1]);
ok(wait_until(5, sub { $origin->hits('/p/after?c=mid') == 1 }),
   'the next: the middle one (priority 7 is in class 5)');
is($origin->hits('/p/after?c=low'), 0, 'the low one, first to come, still waits');
is(queued('p'), 1, 'one waiting');
abort($_) for $low, $mid, $high;
ok(wait_until(5, sub { in_flight('p') == 0 && queued('p') == 0 }), 'all released');
$origin->reset;

# --- a full queue: the lower class is shed first (evicted)

$origin->set('/ev/hold', mode => 'hang');
@hold = (send_req($n->port, '/ev/hold', 'X-Prio' => 1));
ok(wait_until(10, sub { in_flight('ev') == 1 }), 'eviction: the limit is held');
my @lows = map { send_req($n->port, "/ev/w?l$_", 'X-Prio' => 1) } 1 .. 2;
ok(wait_until(5, sub { queued('ev') == 2 }), 'two low requests fill the queue');
$high = send_req($n->port, '/ev/w?h', 'X-Prio' => 10);
@done = collect(\@lows, 10, 1);
is(scalar(@done), 1, 'a high request arrives: one low request is shed');
is($done[0]{status} . ' ' . $done[0]{h}{'x-shed-reason'}, '503 evicted',
   'the newest low one, evicted');
is($done[0]{path}, '/ev/w?l2', 'the newest');
is(queued('ev'), 2, 'the high one waits in its place');
my $low3 = send_req($n->port, '/ev/w?l3', 'X-Prio' => 1);
@done = collect([$low3], 10);
is($done[0]{status} . ' ' . $done[0]{h}{'x-shed-reason'}, '503 queue_full',
   'a low request finds the queue full of its own class and higher: shed');
$origin->set('/ev/w', body => 'w');
abort($hold[0]);
@done = collect([$high], 10);
is($done[0]{status} . ' ' . $done[0]{h}{'x-shed'}, '200 QUEUED',
   'the high one is admitted first');
@done = collect([$lows[0]], 10);
is($done[0]{status} . ' ' . $done[0]{h}{'x-shed'}, '200 QUEUED', 'then the low one');
$origin->reset;

# --- a guaranteed share: the low class gets its reserved permits first

sub share_run {
    my ($name) = @_;
    $origin->set("/$name/hold", mode => 'hang');
    $origin->set("/$name/after", mode => 'hang');
    my @h = map { send_req($n->port, "/$name/hold", 'X-Prio' => 10) } 1 .. 4;
    ok(wait_until(10, sub { in_flight($name) == 4 }), "$name: four high requests hold the limit");
    my @wh = map { send_req($n->port, "/$name/after?c=h", 'X-Prio' => 10) } 1 .. 4;
    ok(wait_until(5, sub { queued($name) == 4 }), "$name: four high ones wait");
    my @wl = map { send_req($n->port, "/$name/after?c=l", 'X-Prio' => 1) } 1 .. 2;
    ok(wait_until(5, sub { queued($name) == 6 }), "$name: then two low ones");
    abort($_) for @h;
    ok(wait_until(10, sub { $origin->hits("/$name/after") == 4 }),
       "$name: the four permits go to waiting requests");
    my @r = ($origin->hits("/$name/after?c=h"), $origin->hits("/$name/after?c=l"));
    abort($_) for @wh, @wl;
    ok(wait_until(5, sub { in_flight($name) == 0 && queued($name) == 0 }),
       "$name: all released");
    $origin->reset;
    return "high $r[0], low $r[1]";
}

is(share_run('sh'), 'high 2, low 2',
   'share=50% of limit=4: two permits for the low class, before the high class');
is(share_run('ns'), 'high 4, low 0',
   'without a share the high class takes them all');

# --- CoDel: a standing queue sheds early

$origin->set('/cd/hold', mode => 'hang');
@hold = (send_req($n->port, '/cd/hold'));
ok(wait_until(10, sub { in_flight('cd') == 1 }), 'codel: the limit is held');
my @cw;
for my $i (1 .. 20) {
    push @cw, send_req($n->port, "/cd/w?$i");
    sleep 0.1;
}
@done = collect(\@cw, 10 + 20 * $Slow);
is(scalar(@done), 20, 'codel: every waiting request is answered');
is(count_where(sub { $_[0]{status} == 503
                     && $_[0]{h}{'x-shed-reason'} eq 'codel' }, @done), 20,
   'shed by CoDel, long before queue_timeout=20s');
@waits = map { $_->{done} - $_->{sent} } @done;
is(count_where(sub { $_[0] >= 0.05 - 0.01 }, @waits), 20,
   'none before codel_target=50ms');
is(count_where(sub { $_[0] < 0.3 + 0.05 + 2 * $Slow }, @waits), 20,
   'all within codel_interval + codel_target (+ scheduling)');
abort($hold[0]);
ok(wait_until(5, sub { in_flight('cd') == 0 }), 'released');
$origin->set('/cd/ok', body => 'ok');
@c = map { send_req($n->port, '/cd/ok') } 1 .. 5;
@done = collect(\@c, 10);
is(count_where(sub { $_[0]{status} == 200 }, @done), 5,
   'no standing queue: nothing shed');
$origin->reset;

# --- CoDel with classes: the lower class is shed, the highest waits for
# its permit (up to queue_timeout)

$origin->set('/cdp/hold', mode => 'hang');
@hold = (send_req($n->port, '/cdp/hold', 'X-Prio' => 1));
ok(wait_until(10, sub { in_flight('cdp') == 1 }), 'codel with classes: the limit is held');
my @ch = map { send_req($n->port, "/cdp/h?$_", 'X-Prio' => 10) } 1 .. 2;
ok(wait_until(5, sub { queued('cdp') == 2 }), 'two high requests wait');
my @cl = map { send_req($n->port, "/cdp/l?$_", 'X-Prio' => 1) } 1 .. 5;
@done = collect(\@cl, 10 + 20 * $Slow);
is(count_where(sub { $_[0]{status} == 503
                     && $_[0]{h}{'x-shed-reason'} eq 'codel' }, @done), 5,
   'the five low ones: shed by CoDel');
sleep 0.7;
is(queued('cdp'), 2, 'the high ones still wait, two intervals later');
$origin->set('/cdp/h', body => 'h');
abort($hold[0]);
@done = collect(\@ch, 10);
is(join(' ', sort map { "$_->{status} $_->{h}{'x-shed'}" } @done), '200 QUEUED 200 QUEUED',
   'and are admitted when permits come back');
$origin->reset;

# --- shed_probability=0.5: the lowest class over the limit, about half

$origin->set('/pr/hold', mode => 'hang');
@hold = (send_req($n->port, '/pr/hold', 'X-Prio' => 10));
ok(wait_until(10, sub { in_flight('pr') == 1 }), 'probability: the limit is held');
@c = map { send_req($n->port, "/pr/w?$_", 'X-Prio' => 1) } 1 .. 100;
@done = collect(\@c, 20);
is(scalar(@done), 100, '100 low requests over the limit are answered');
my $prob = count_where(sub { $_[0]{h}{'x-shed-reason'} eq 'probability' }, @done);
my $tmo = count_where(sub { $_[0]{h}{'x-shed-reason'} eq 'timeout' }, @done);
is($prob + $tmo, 100, 'each shed at once by probability, or queued and timed out');
cmp_ok($prob, '>=', 25, "about half by probability ($prob): at least 25");
cmp_ok($prob, '<=', 75, 'and at most 75 (Binomial(100, 0.5): outside, p < 1e-6)');
@c = map { send_req($n->port, "/pr/h?$_", 'X-Prio' => 10) } 1 .. 20;
@done = collect(\@c, 20);
is(count_where(sub { $_[0]{h}{'x-shed-reason'} eq 'timeout' }, @done), 20,
   'a higher class is never shed by probability');
abort($hold[0]);
$origin->reset;

# --- an upgraded connection keeps its permit while it is open

$origin->set('/ws/sock', status => 101,
             headers => ['Upgrade: websocket', 'Connection: Upgrade',
                         'Content-Length:', 'Content-Type:']);
my $ws = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $n->port,
                               Timeout => 10) or die;
print $ws "GET /ws/sock HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        . "Connection: Upgrade\r\n\r\n";
my $line = <$ws>;
like($line // '', qr{^HTTP/1\.1 101}, 'websocket: 101 Switching Protocols');
is(in_flight('ws'), 1, 'the upgraded connection holds the permit');
my $r = $n->get('/ws/sock');
is($r->{status} . ' ' . ($r->{headers}{'x-shed'} // ''), '503 SHED',
   'limit=1: another request is shed while it is open');
sleep 0.2;
is(in_flight('ws'), 1, 'still held');
close $ws;
ok(wait_until(5, sub { in_flight('ws') == 0 }), 'closed: the permit is released');
$origin->reset;

# --- a reload with requests waiting: none hangs

$origin->set('/rl/hold', mode => 'hang');
@hold = (send_req($n->port, '/rl/hold'));
ok(wait_until(10, sub { in_flight('rl') == 1 }), 'reload: the limit is held');
@w = map { send_req($n->port, "/rl/w?$_") } 1 .. 3;
ok(wait_until(5, sub { queued('rl') == 3 }), 'three wait');
my @old = $n->worker_pids;
open my $pf, '<', "$n->{prefix}/logs/nginx.pid" or die;
chomp(my $master = <$pf>);
kill 'HUP', $master;
ok(wait_until(10, sub { grep { my $p = $_; !grep { $_ == $p } @old } $n->worker_pids }),
   'reloaded: a new worker');
is(queued('rl'), 3, 'the new worker sees the old one\'s queue in the zone');
$origin->reset;            # the holder gets 502: its permit comes back
@done = collect([@w, @hold], 10);
is(scalar(@done), 4, 'every request is answered');
is(count_where(sub { ($_[0]{h}{'x-shed'} // '') eq 'QUEUED' }, @done), 3,
   'the three waiting ones admitted by the old worker');
ok(wait_until(10, sub { !grep { my $p = $_; grep { $_ == $p } @old } $n->worker_pids }),
   'the old worker exits');
is(in_flight('rl') . ' ' . queued('rl'), '0 0', 'nothing left in flight or waiting');

like($n->log, qr/breaker shedder "lim" shed the request: limit/,
     'a shed request is logged at info');
unlike($n->log, qr/\[(alert|crit|emerg)\]/, 'no alert in the log');
$n->stop;

# --- two workers share one limit, and waiting requests find permits
# freed in the other worker (the poll)

my $http2 = <<"HTTP";
    upstream origin { server 127.0.0.1:$oport; }
    breaker_shed_zone shed 1m;
    breaker_shedder w2 zone=shed limit=4;
    breaker_shedder wq zone=shed limit=1 queue=20 queue_timeout=30s codel_target=0;
    server {
        listen 127.0.0.1:\$PORT backlog=1024 reuseport;
${\ loc('w2') }
${\ loc('wq') }
    }
HTTP
my $m = Test::Edge::Nginx->start(http => $http2, workers => 2);
ok(wait_until(10, sub { $m->worker_pids == 2 }), 'two workers');
$origin->set('/w2/hang', mode => 'hang');
@c = map { send_req($m->port, '/w2/hang') } 1 .. 20;
@done = collect(\@c, 10, 16);
ok(wait_until(10, sub { $origin->hits('/w2/hang') == 4 }), 'limit=4 over two workers: four admitted');
is(count_where(sub { $_[0]{status} == 503 }, @done), 16, 'sixteen shed');
sleep 0.3;
is($origin->hits('/w2/hang'), 4, 'still four');
my %pids = map { ($_->{h}{'x-pid'} // '') => 1 } @done;
cmp_ok(scalar(keys %pids), '>=', 2, 'shed by both workers (reuseport spreads the connections)');
$origin->reset;
collect(\@c, 10);
ok(wait_until(5, sub { in_flight('w2', $m) == 0 }), 'all released');

$origin->set('/wq/hold', mode => 'hang');
@hold = (send_req($m->port, '/wq/hold'));
ok(wait_until(10, sub { in_flight('wq', $m) == 1 }), 'one permit, held');
$origin->set('/wq/w', body => 'w');
@w = map { send_req($m->port, "/wq/w?$_") } 1 .. 16;
ok(wait_until(5, sub { queued('wq', $m) == 16 }), 'sixteen wait, in both workers');
abort($hold[0]);
@done = collect(\@w, 20);
is(count_where(sub { $_[0]{status} == 200 && $_[0]{h}{'x-shed'} eq 'QUEUED' }, @done), 16,
   'all sixteen admitted one after the other, across the workers');
%pids = map { ($_->{h}{'x-pid'} // '') => 1 } @done;
cmp_ok(scalar(keys %pids), '>=', 2, 'in both workers');
unlike($m->log, qr/\[(alert|crit|emerg)\]/, 'no alert in the log');
$m->stop;
$origin->stop;

done_testing();
