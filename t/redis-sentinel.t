# A Redis server found through Sentinel ("sentinel=... master=..."), with
# real redis-server and redis-sentinel processes on free loopback ports:
# all Sentinels down at start (the failure policy, then recovery when they
# start), a failover under traffic (SIGKILL of the primary: the switch,
# the failure policy meanwhile, the recovery time), a demoted primary
# answering READONLY (asked again), a wrong sentinel_password, an ACL user
# of the Sentinels (sentinel_user=, right and wrong password), a reload
# while a command waits, and nginx -t on bad parameters.
use strict;
use warnings;

use Test::More;
use IO::Socket::INET;
use File::Path qw(make_path);
use File::Temp qw(tempdir);
use Time::HiRes qw(sleep time);
use POSIX ();
use Test::Edge qw(:all);
use Test::Edge::Nginx;
use Test::Edge::Origin;
use Test::Edge::Silent;

my $dir = tempdir(CLEANUP => 1);
chmod 0755, $dir;
my $master_name = 'mymaster';
my $sentpw = 'SentinelPw42';
my ($acl_user, $acl_pw) = ('edge', 'EdgePw42');    # an ACL user of theirs

# every process started here is stopped however the file ends
my %pids;
END { kill 'KILL', values %pids if %pids }

my $sentinel_bin = -x '/usr/bin/redis-sentinel' ? 'redis-sentinel' : undef;
plan skip_all => 'redis-sentinel is not installed (Debian: redis-sentinel)'
    unless $sentinel_bin;

sub read_pid {
    my ($file) = @_;
    wait_until(10, sub { -s $file }) or die "no pid file $file\n";
    open my $p, '<', $file or die $!;
    chomp(my $pid = <$p>);
    return $pid;
}

# a redis-server on PORT, its pid; @extra: more configuration lines
sub start_redis {
    my ($port, @extra) = @_;
    my $conf = "$dir/redis-$port.conf";
    unlink "$dir/redis-$port.pid";
    open my $fh, '>', $conf or die $!;
    print $fh join("\n", "bind 127.0.0.1", "port $port", "daemonize yes",
                   "pidfile $dir/redis-$port.pid",
                   "logfile $dir/redis-$port.log", "dir $dir",
                   "dbfilename dump-$port.rdb", 'save ""',
                   "appendonly no", @extra), "\n";
    close $fh;
    system('redis-server', $conf) == 0 or die "redis-server failed\n";
    return $pids{"redis-$port"} = read_pid("$dir/redis-$port.pid");
}

# a redis-sentinel on PORT watching the primary on MPORT (quorum Q),
# with requirepass (and the password it gives the other Sentinels), and
# an ACL user
sub start_sentinel {
    my ($port, $mport, $quorum) = @_;
    my $conf = "$dir/sentinel-$port.conf";
    unlink "$dir/sentinel-$port.pid";
    open my $fh, '>', $conf or die $!;
    print $fh <<"CONF";
bind 127.0.0.1
port $port
daemonize yes
pidfile $dir/sentinel-$port.pid
logfile $dir/sentinel-$port.log
dir $dir
requirepass $sentpw
user $acl_user on >$acl_pw +\@all ~* &*
sentinel sentinel-pass $sentpw
sentinel monitor $master_name 127.0.0.1 $mport $quorum
sentinel down-after-milliseconds $master_name 1000
sentinel failover-timeout $master_name 3000
sentinel parallel-syncs $master_name 1
CONF
    close $fh;
    system($sentinel_bin, $conf) == 0 or die "redis-sentinel failed\n";
    return $pids{"sentinel-$port"} = read_pid("$dir/sentinel-$port.pid");
}

# a process that exited, or a zombie its parent (init, in a container
# maybe slow to reap) has not reaped yet
sub gone {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/stat" or return 1;
    return (<$fh> // '') =~ /^\d+ \(.*\) Z/ ? 1 : 0;
}

sub stop_process {
    my ($name, $sig) = @_;
    my $pid = delete $pids{$name} or return;
    kill $sig // 'TERM', $pid;
    wait_until(10, sub { gone($pid) }) or die "$name did not exit\n";
}

# one command to 127.0.0.1:PORT (after AUTH PASS if given): its reply
sub cmd {
    my ($port, $pass, @args) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                  Timeout => 2) or return undef;
    my $reply;
    for my $c (defined $pass ? (['AUTH', $pass], \@args) : (\@args)) {
        print $s '*' . @$c . "\r\n"
            . join('', map { '$' . length($_) . "\r\n$_\r\n" } @$c);
        $reply = eval { Test::Edge::read_reply($s) };
    }
    close $s;
    return $reply;
}

sub rcmd { my ($port, @a) = @_; return cmd($port, undef, @a) }

sub evalsha_calls {
    my ($port) = @_;
    my ($n) = (rcmd($port, 'INFO', 'commandstats') // '')
        =~ /cmdstat_evalsha:calls=(\d+)/;
    return $n // 0;
}

# what a Sentinel says the primary is ("ip:port")
sub sentinel_master {
    my ($port) = @_;
    my $r = cmd($port, $sentpw, 'SENTINEL', 'get-master-addr-by-name',
                $master_name);
    return ref $r eq 'ARRAY' ? "$r->[0]:$r->[1]" : '';
}

# SENTINEL master's field NAME on PORT
sub sentinel_field {
    my ($port, $name) = @_;
    my $r = cmd($port, $sentpw, 'SENTINEL', 'master', $master_name);
    return undef unless ref $r eq 'ARRAY';
    my %h = @$r;
    return $h{$name};
}

my $free = \&Test::Edge::Nginx::free_port;

my ($p1, $p2, $p3) = ($free->(), $free->(), $free->());   # redis
my @sport = ($free->(), $free->(), $free->());            # Sentinels
my $sentinels = join ',', map { "127.0.0.1:$_" } @sport;

my $origin = Test::Edge::Origin->start;
my $oport = $origin->port;
$origin->set('/c/page', headers => ['Cache-Control: max-age=60'],
             body => 'cached body');

sub http_conf {
    my (%o) = @_;
    my $server = "sentinel=$o{sentinels} master=$master_name"
        . ($o{user} ? " sentinel_user=$o{user}" : '')
        . " sentinel_password=$o{password} timeout=$o{timeout}";
    return <<"HTTP";
    ratelimit_redis r $server;
    ratelimit_zone \$arg_k zone=open:1m rate=1r/m redis=r on_failure=open;
    ratelimit_zone \$arg_k zone=closed:1m rate=1r/m redis=r on_failure=closed;
    edge_cache_redis c $server;
    edge_cache_zone pages redis=c;
    server {
        listen 127.0.0.1:\$PORT;
        location = /ok { return 200 "ok\\n"; }
        location = /open {
            ratelimit zone=open burst=1 nodelay;
            add_header X-Status \$ratelimit_status always;
            proxy_pass http://127.0.0.1:\$PORT/ok;
        }
        location = /closed {
            ratelimit zone=closed burst=1 nodelay;
            add_header X-Status \$ratelimit_status always;
            proxy_pass http://127.0.0.1:\$PORT/ok;
        }
        location /c/ {
            edge_cache pages;
            edge_cache_key \$uri;
            add_header X-Cache \$edge_cache_status always;
            proxy_pass http://127.0.0.1:$oport;
        }
    }
HTTP
}

# a decision from Redis: not one of the failure policy
sub from_redis { $_[0] =~ /^(?:200 PASSED|429 REJECTED)$/ }

my $k = 0;
sub fresh_key { return 'k' . $k++ }


# --- nginx -t: bad parameters
{
    my $t = 0;
    my $nginx_t = sub {
        my ($decl) = @_;
        my $prefix = "$dir/t" . $t++;
        make_path("$prefix/conf", "$prefix/logs");
        my $modules = join '', map { "load_module $_;\n" }
            split ' ', ($ENV{TEST_NGINX_LOAD_MODULES} // '');
        open my $fh, '>', "$prefix/conf/nginx.conf" or die $!;
        print $fh "${modules}pid logs/nginx.pid;\nevents {}\n"
                  . "http {\n$decl\n}\n";
        close $fh;
        my $bin = $ENV{EDGE_NGINX} || '/usr/sbin/nginx';
        my $out = `$bin -e stderr -t -p $prefix/ -c conf/nginx.conf 2>&1`;
        return ($? >> 8, $out);
    };

    my @bad = (
        ['ratelimit_redis r sentinel=127.0.0.1:26379;',
         qr/redis server "r": "sentinel=" needs "master="/,
         'sentinel= without master='],
        ['ratelimit_redis r sentinel= master=m;',
         qr/invalid parameter "sentinel=" of redis server "r"/,
         'an empty Sentinel list'],
        ['ratelimit_redis r sentinel=127.0.0.1:1,,127.0.0.1:2 master=m;',
         qr/invalid parameter "sentinel=127\.0\.0\.1:1,,127\.0\.0\.1:2"/,
         'an empty element in the list'],
        ['ratelimit_redis r sentinel=127.0.0.1:99999 master=m;',
         qr/invalid port in Sentinel "127\.0\.0\.1:99999" of redis server "r"/,
         'a bad Sentinel address'],
        ['ratelimit_redis r 127.0.0.1:6379 master=m;',
         qr/"master=", "sentinel_user=" and "sentinel_password=" need "sentinel="/,
         'master= without sentinel='],
        ['ratelimit_redis r 127.0.0.1:6379 sentinel_user=u;',
         qr/"master=", "sentinel_user=" and "sentinel_password=" need "sentinel="/,
         'sentinel_user= without sentinel='],
        ['ratelimit_redis r sentinel=127.0.0.1 master=m sentinel_user= '
         . 'sentinel_password=p;',
         qr/invalid parameter "sentinel_user=" of redis server "r"/,
         'an empty sentinel_user='],
        ['ratelimit_redis r sentinel=127.0.0.1 master=m sentinel_user=u;',
         qr/redis server "r": "sentinel_user=" needs "sentinel_password="/,
         'sentinel_user= without sentinel_password='],
        ['ratelimit_redis r 127.0.0.1:6379 sentinel=127.0.0.1 master=m;',
         qr/an address "127\.0\.0\.1:6379" and "sentinel=" are given together/,
         'an address and sentinel= together'],
        ['ratelimit_redis r sentinel=127.0.0.1 master=;',
         qr/invalid parameter "master="/, 'an empty master name'],
        ['edge_cache_redis c sentinel=127.0.0.1;',
         qr/redis server "c": "sentinel=" needs "master="/,
         'the cache module parses the same parameters'],
        ['ratelimit_redis r timeout=1s;',
         qr/redis server "r" has no address/, 'neither address nor sentinel='],
    );
    for my $b (@bad) {
        my ($rc, $out) = $nginx_t->($b->[0]);
        isnt($rc, 0, "nginx -t fails: $b->[2]");
        like($out, $b->[1], "with a clear error: $b->[2]") or diag($out);
    }
    my ($rc, $out) = $nginx_t->(
        'ratelimit_redis r sentinel=127.0.0.1:26379,localhost master=m '
        . 'sentinel_password=x timeout=50ms;'
        . 'edge_cache_redis c sentinel=127.0.0.1 master=m;');
    is($rc, 0, 'nginx -t accepts a Sentinel server') or diag($out);
}


# --- all Sentinels down at start: the failure policy, then recovery when
# they start
start_redis($p1);
start_redis($p2, "replicaof 127.0.0.1 $p1");

# two workers: each asks and subscribes on its own
my $nginx = Test::Edge::Nginx->start(
    workers => 2,
    http => http_conf(sentinels => $sentinels, password => $sentpw,
                      timeout => '300ms'));
my @workers = $nginx->worker_pids;
is(scalar @workers, 2, 'two workers');

# the lines of LOG (a regex) per worker pid
sub per_worker {
    my ($re) = @_;
    my (%n, $log);
    $log = $nginx->log;
    $n{$1}++ while $log =~ /\[\w+\] (\d+)#\d+: [^\n]*$re/g;
    return \%n;
}

is($nginx->decision('/open?k=' . fresh_key()), '200 FAILED_OPEN',
   'Sentinels down: on_failure=open passes');
like($nginx->decision('/closed?k=' . fresh_key()), qr/^\d+ FAILED_CLOSED$/,
     'Sentinels down: on_failure=closed refuses');
ok(wait_until(10, sub {
       $nginx->log =~ /redis "r" at master "mymaster": Sentinel 127\.0\.0\.1:\d+: connect failed/ }),
   'the failed Sentinel is logged');
ok(wait_until(10, sub {
       $nginx->log =~ /redis "r" at master "mymaster": no Sentinel named the primary/ }),
   'and that no Sentinel answered');

my $t0 = time;
start_sentinel($_, $p1, 2) for @sport;
my $key = fresh_key();
ok(wait_until(20, sub { from_redis($nginx->decision("/open?k=$key")) }),
   'a Sentinel started: decisions come from Redis');
my $startup_recovery = time - $t0;
diag(sprintf 'recovery after the Sentinels started: %.2f s',
     $startup_recovery);
like($nginx->log, qr/redis "r" at master "mymaster": the primary is 127\.0\.0\.1:$p1 \(asked\)/,
     'the primary found is logged');
cmp_ok(rcmd($p1, 'DBSIZE'), '>', 0, 'the buckets are on the primary');
my $res = $nginx->get('/c/page');
is($res->{body}, 'cached body', 'the cache module works through Sentinel');
ok(wait_until(10, sub { ($nginx->get('/c/page')->{headers}{'x-cache'} // '')
                            =~ /HIT/ }),
   'and serves a hit from the primary');


# --- failover: the primary SIGKILLed under traffic
ok(wait_until(30, sub {
       (grep { (sentinel_field($_, 'num-slaves') // 0) >= 1
               && (sentinel_field($_, 'num-other-sentinels') // 0) >= 2 }
             @sport) == 3 }),
   'the Sentinels know the replica and each other');
ok(wait_until(10, sub {
       (rcmd($p2, 'INFO', 'replication') // '') =~ /master_link_status:up/ }),
   'the replica is in sync');

# background traffic on the open zone from two clients, each answer
# written down, until the failover is over
my @clients;
for my $c (1 .. 2) {
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open my $out, '>', "$dir/traffic-$c" or POSIX::_exit(1);
        $out->autoflush(1);
        my $n = 0;
        until (-e "$dir/traffic-stop") {
            my $d = eval { $nginx->decision("/open?k=bg$c-" . $n++) }
                // 'none';
            print $out "$d\n";
        }
        POSIX::_exit(0);
    }
    push @clients, $pid;
}
ok(wait_until(10, sub { -s "$dir/traffic-1" && -s "$dir/traffic-2" }),
   'background traffic flows');

my $before_new = evalsha_calls($p2);
$t0 = time;
stop_process("redis-$p1", 'KILL');

my (%seen, $switched_at, $recovered_at, $bad);
my $deadline = time + 30 * $Test::Edge::Valgrind::Slowdown;
while (time < $deadline) {
    my $d = $nginx->decision('/open?k=' . fresh_key());
    my $c = $nginx->decision('/closed?k=' . fresh_key());
    $seen{$d}++;
    $seen{"closed $c"}++;
    $bad = "$d / $c" unless ($d =~ /^200 (?:PASSED|FAILED_OPEN)$/
                             && $c =~ /^(?:200 PASSED|\d+ FAILED_CLOSED)$/);
    $switched_at //= time if sentinel_master($sport[0]) eq "127.0.0.1:$p2";
    if (from_redis($d) && $c eq '200 PASSED') {
        $recovered_at = time;
        last;
    }
    sleep 0.02;
}
open my $stop, '>', "$dir/traffic-stop" or die $!;
close $stop;
waitpid $_, 0 for @clients;
my %bg;
for my $c (1 .. 2) {
    open my $in, '<', "$dir/traffic-$c" or die $!;
    chomp, $bg{$_}++ for <$in>;
}
is_deeply([sort grep { !/^200 (?:PASSED|FAILED_OPEN)$/ } keys %bg], [],
          'the background traffic got only decisions and the open policy')
    or diag(explain \%bg);
diag(join ', ', map { "$bg{$_} x $_" } sort keys %bg);
ok($bg{'200 FAILED_OPEN'} && $bg{'200 PASSED'},
   'both, around the failover') or diag(explain \%bg);
ok(!defined $bad, 'meanwhile each request follows its failure policy')
    or diag("unexpected: $bad");
ok($seen{'200 FAILED_OPEN'}, 'on_failure=open passed requests meanwhile')
    or diag(explain \%seen);
ok(defined $recovered_at, 'decisions come from Redis again')
    or diag(explain \%seen);
$switched_at //= time;
diag(sprintf 'failover: the Sentinels switched %.2f s after the kill; '
     . 'nginx decided from Redis again %.2f s after the kill (%.2f s after '
     . 'the switch was seen)', $switched_at - $t0,
     ($recovered_at // time) - $t0, ($recovered_at // time) - $switched_at);
is(sentinel_master($sport[0]), "127.0.0.1:$p2", 'the replica was promoted');
cmp_ok(evalsha_calls($p2), '>', $before_new,
       'the new primary gets the commands');
ok(wait_until(10, sub {
       $nginx->log =~ /redis "r" at master "mymaster": the primary moved from 127\.0\.0\.1:$p1 to 127\.0\.0\.1:$p2/ }),
   'the switch is logged, old and new address');
is_deeply(per_worker(qr/"r" at master "mymaster": the primary moved from/),
          { map { $_ => 1 } @workers }, 'once by each worker');
$origin->set('/c/after', headers => ['Cache-Control: max-age=60'],
             body => 'after the failover');
my $dbsize = rcmd($p2, 'DBSIZE');
ok(wait_until(10, sub { ($nginx->get('/c/after')->{headers}{'x-cache'} // '')
                            =~ /HIT/ }),
   'the cache stores on the new primary and hits');
cmp_ok(rcmd($p2, 'DBSIZE'), '>', $dbsize, 'its entry is there');
$key = fresh_key();
is($nginx->decision("/closed?k=$key"), '200 PASSED', 'a fresh key passes');
is($nginx->decision("/closed?k=$key"), '200 PASSED', 'its burst passes');
like($nginx->decision("/closed?k=$key"), qr/^\d+ REJECTED$/,
     'and it is limited again');


# --- a failover with no request in flight and the old primary alive
# (SENTINEL FAILOVER): only +switch-master can tell, and it does
start_redis($p1, "replicaof 127.0.0.1 $p2");
ok(wait_until(20, sub {
       (rcmd($p1, 'INFO', 'replication') // '') =~ /master_link_status:up/ }),
   'the old primary is back, a replica in sync');
my $reply = '';
ok(wait_until(20, sub {
       $reply = cmd($sport[0], $sentpw, 'SENTINEL', 'FAILOVER', $master_name)
                // '';
       return $reply eq 'OK' || $reply =~ /INPROG/;
   }), 'a Sentinel starts a failover') or diag($reply);
my $before_p1 = evalsha_calls($p1);
my $t_failover = time;
ok(wait_until(20, sub {
       keys %{ per_worker(qr/redis "r" at master "mymaster": the primary moved from 127\.0\.0\.1:$p2 to 127\.0\.0\.1:$p1 \(\+switch-master\)/) } == 2 }),
   'without a request, both workers follow +switch-master');
diag(sprintf 'SENTINEL FAILOVER: both workers had switched %.2f s after '
     . 'it was accepted', time - $t_failover);
ok(wait_until(10, sub {
       (rcmd($p1, 'INFO', 'replication') // '') =~ /role:master/ }),
   'the old primary is the primary again');
ok(wait_until(10, sub { from_redis($nginx->decision('/open?k=' . fresh_key())) }),
   'decisions come from Redis');
cmp_ok(evalsha_calls($p1), '>', $before_p1, 'from the new primary');
unlike($nginx->log, qr/\(127\.0\.0\.1:$p2\): no longer the primary/,
       'no request met the demoted primary');
my $cur = $p1;


# --- a demoted primary answers READONLY: the Sentinels are asked again.
# The Sentinels are replaced by one watching a new primary, then the
# primary in use is made a replica of it by hand.
stop_process("sentinel-$_") for @sport;
start_redis($p3);
start_sentinel($sport[1], $p3, 1);
ok(wait_until(10, sub { sentinel_master($sport[1]) eq "127.0.0.1:$p3" }),
   'a Sentinel watches the new primary');
is(rcmd($cur, 'REPLICAOF', '127.0.0.1', $p3), 'OK', 'the primary is demoted');
ok(wait_until(10, sub {
       (rcmd($cur, 'INFO', 'replication') // '') =~ /role:slave/ }),
   'it is a replica');

my $before_p3 = evalsha_calls($p3);
is($nginx->decision('/open?k=' . fresh_key()), '200 FAILED_OPEN',
   'the demoted primary answers an error: on_failure=open passes');
ok(wait_until(10, sub {
       $nginx->log =~ /redis "r" at master "mymaster" \(127\.0\.0\.1:$cur\): no longer the primary \(READONLY/ }),
   'READONLY is logged, and the Sentinels are asked again');
ok(wait_until(20, sub { from_redis($nginx->decision('/open?k=' . fresh_key())) }),
   'decisions come from Redis again');
cmp_ok(evalsha_calls($p3), '>', $before_p3, 'from the new primary');
like($nginx->log, qr/the primary moved from 127\.0\.0\.1:$cur to 127\.0\.0\.1:$p3 \(asked\)/,
     'the move is logged');


# --- a reload while a command waits: the request gets its answer, the
# new workers find the primary
{
    kill 'STOP', $pids{"redis-$p3"};
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $nginx->port, Timeout => 10)
        or die "connect: $!";
    print $s "GET /open?k=" . fresh_key() . " HTTP/1.0\r\nHost: x\r\n\r\n";
    sleep 0.1;
    open my $fh, '<', "$nginx->{prefix}/logs/nginx.pid" or die $!;
    chomp(my $master = <$fh>);
    kill 'HUP', $master;
    local $/;
    my $raw = <$s> // '';
    kill 'CONT', $pids{"redis-$p3"};
    like($raw, qr{^HTTP/1\.1 200 .*X-Status: FAILED_OPEN}s,
         'the request waiting during the reload gets its answer');
    ok(wait_until(20, sub { from_redis($nginx->decision('/open?k=' . fresh_key())) }),
       'the new workers decide from Redis');
}


# --- a Sentinel that accepts and never answers, first in the list: the
# question times out after connect_timeout= and the next one is asked
{
    my $silent = Test::Edge::Silent->start;
    my $sp = $silent->port;
    my $t = time;
    my $n3 = Test::Edge::Nginx->start(
        http => http_conf(sentinels => "127.0.0.1:$sp,127.0.0.1:$sport[1]",
                          password => $sentpw,
                          timeout => '300ms connect_timeout=500ms'));
    ok(wait_until(20, sub {
           from_redis($n3->decision('/open?k=' . fresh_key())) }),
       'a silent Sentinel first: decisions come from Redis');
    my $took = time - $t;
    diag(sprintf 'with a silent first Sentinel, the first decision from '
         . 'Redis came %.2f s after the start', $took);
    like($n3->log, qr/redis "r" at master "mymaster": Sentinel 127\.0\.0\.1:$sp: no answer within 500 ms/,
         'the silent Sentinel is logged');
    like($n3->log, qr/the primary is 127\.0\.0\.1:$p3 \(asked\)/,
         'the next one named the primary');
    $n3->stop;
    unlike($n3->final_log, qr/\[(alert|crit|emerg)\]|open socket/,
           'no alert or socket left');
    $silent->stop;
}


# --- a wrong sentinel_password: a clear line, the failure policy
{
    my $n2 = Test::Edge::Nginx->start(
        http => http_conf(sentinels => "127.0.0.1:$sport[1]",
                          password => 'wrong', timeout => '300ms'));
    ok(wait_until(10, sub {
           $n2->log =~ /redis "r" at master "mymaster": Sentinel 127\.0\.0\.1:$sport[1]: AUTH failed \(see sentinel_user= and sentinel_password=\): WRONGPASS/ }),
       'a wrong sentinel_password is logged clearly')
        or diag($n2->log);
    is($n2->decision('/open?k=' . fresh_key()), '200 FAILED_OPEN',
       'and the failure policy applies');
    $n2->stop;
    unlike($n2->final_log, qr/\[(alert|crit|emerg)\]|open socket/,
           'no alert or socket left');
}

# --- an ACL user of the Sentinels: AUTH user password (its password is
# not the default user's, so a plain AUTH password would fail); a wrong
# password: a clear line, the failure policy
{
    my $n4 = Test::Edge::Nginx->start(
        http => http_conf(sentinels => "127.0.0.1:$sport[1]",
                          user => $acl_user, password => $acl_pw,
                          timeout => '300ms'));
    ok(wait_until(20, sub {
           from_redis($n4->decision('/open?k=' . fresh_key())) }),
       'sentinel_user=: the ACL user asks the Sentinel, decisions come '
       . 'from Redis')
        or diag($n4->log);
    unlike($n4->log, qr/AUTH failed/, 'and its AUTH was accepted');
    $n4->stop;
    unlike($n4->final_log, qr/\[(alert|crit|emerg)\]|open socket/,
           'no alert or socket left');

    my $n5 = Test::Edge::Nginx->start(
        http => http_conf(sentinels => "127.0.0.1:$sport[1]",
                          user => $acl_user, password => 'wrong',
                          timeout => '300ms'));
    ok(wait_until(10, sub {
           $n5->log =~ /redis "r" at master "mymaster": Sentinel 127\.0\.0\.1:$sport[1]: AUTH failed \(see sentinel_user= and sentinel_password=\): WRONGPASS/ }),
       'sentinel_user= with a wrong password is logged clearly')
        or diag($n5->log);
    is($n5->decision('/open?k=' . fresh_key()), '200 FAILED_OPEN',
       'and the failure policy applies');
    $n5->stop;
    unlike($n5->final_log, qr/\[(alert|crit|emerg)\]|open socket/,
           'no alert or socket left');
}

$nginx->stop;
unlike($nginx->final_log, qr/\[(alert|crit|emerg)\]|open socket/,
       'no alert or socket left');
$origin->stop;

done_testing();
