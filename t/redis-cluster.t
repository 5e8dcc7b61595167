# A Redis Cluster ("cluster=seed,..."), with three real redis-server
# primaries on free loopback ports, joined by redis-cli --cluster create:
# exact decisions for keys on every node, the cache module through the
# cluster, a slot migrated by hand under traffic (ASK while it moves, MOVED
# after: exact counts, nothing counted twice, the map follows), concurrent
# requests (batches per slot), redirects bounded (two fake nodes), a
# primary killed (its slots follow the failure policy, the others keep
# working, then its replica takes over), and nginx -t on bad parameters.
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

my $dir = tempdir(CLEANUP => 1);
chmod 0755, $dir;

# every process started here is stopped however the file ends
my %pids;
END { kill 'KILL', values %pids if %pids }

sub read_pid {
    my ($file) = @_;
    wait_until(10, sub { -s $file }) or die "no pid file $file\n";
    open my $p, '<', $file or die $!;
    chomp(my $pid = <$p>);
    return $pid;
}

# a cluster-enabled redis-server on PORT, its pid
sub start_node {
    my ($port) = @_;
    my $conf = "$dir/redis-$port.conf";
    open my $fh, '>', $conf or die $!;
    print $fh join("\n", "bind 127.0.0.1", "port $port", "daemonize yes",
                   "pidfile $dir/redis-$port.pid",
                   "logfile $dir/redis-$port.log", "dir $dir",
                   "dbfilename dump-$port.rdb", 'save ""',
                   "appendonly no", "cluster-enabled yes",
                   "cluster-config-file $dir/nodes-$port.conf",
                   "cluster-node-timeout 2000"), "\n";
    close $fh;
    system('redis-server', $conf) == 0 or die "redis-server failed\n";
    return $pids{"redis-$port"} = read_pid("$dir/redis-$port.pid");
}

sub gone {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/stat" or return 1;
    return (<$fh> // '') =~ /^\d+ \(.*\) Z/ ? 1 : 0;
}

# one command to 127.0.0.1:PORT: its reply
sub rcmd {
    my ($port, @args) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                  Timeout => 5) or return undef;
    print $s '*' . @args . "\r\n"
        . join('', map { '$' . length($_) . "\r\n$_\r\n" } @args);
    my $reply = eval { Test::Edge::read_reply($s) };
    close $s;
    return $reply;
}

sub calls {
    my ($port, $cmd) = @_;
    my ($n) = (rcmd($port, 'INFO', 'commandstats') // '')
        =~ /cmdstat_$cmd:calls=(\d+)/;
    return $n // 0;
}

my $free = \&Test::Edge::Nginx::free_port;


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
        ['ratelimit_redis r cluster=127.0.0.1:7000 sentinel=127.0.0.1 '
         . 'master=m;',
         qr/redis server "r": "cluster=" is given with an address or "sentinel="/,
         'cluster= with sentinel='],
        ['ratelimit_redis r 127.0.0.1:6379 cluster=127.0.0.1:7000;',
         qr/redis server "r": "cluster=" is given with an address/,
         'cluster= with an address'],
        ['ratelimit_redis r cluster=;',
         qr/invalid parameter "cluster=" of redis server "r": a list of host\[:port\]/,
         'an empty seed list'],
        ['ratelimit_redis r cluster=127.0.0.1:1,,127.0.0.1:2;',
         qr/invalid parameter "cluster=127\.0\.0\.1:1,,127\.0\.0\.1:2"/,
         'an empty element in the list'],
        ['ratelimit_redis r cluster=127.0.0.1:99999;',
         qr/invalid port in seed node "127\.0\.0\.1:99999" of redis server "r"/,
         'a bad seed address'],
        ['ratelimit_redis r cluster=127.0.0.1 cluster=127.0.0.2;',
         qr/redis server "r": "cluster=" is given more than once/,
         'cluster= twice'],
        ['ratelimit_redis r cluster=127.0.0.1 db=2;',
         qr/redis server "r": a Redis Cluster has no "db=" but 0/,
         'db= with cluster='],
        ['edge_cache_redis c cluster=;',
         qr/invalid parameter "cluster=" of redis server "c"/,
         'the cache module parses the same parameters'],
    );
    for my $b (@bad) {
        my ($rc, $out) = $nginx_t->($b->[0]);
        isnt($rc, 0, "nginx -t fails: $b->[2]");
        like($out, $b->[1], "with a clear error: $b->[2]") or diag($out);
    }
    my ($rc, $out) = $nginx_t->(
        'ratelimit_redis r cluster=127.0.0.1:7000,localhost:7001 '
        . 'password=x timeout=50ms;'
        . 'edge_cache_redis c cluster=127.0.0.1;');
    is($rc, 0, 'nginx -t accepts a Cluster server') or diag($out);
}


# --- a seed that is a plain Redis (the fixture's): no map, the failure
# policy, and the reason in the log
{
    my $plain = Test::Edge::Nginx->start(workers => 1, http => <<"HTTP");
    ratelimit_redis r cluster=127.0.0.1:$ENV{TEST_NGINX_REDIS_PORT} timeout=1s;
    ratelimit_zone \$arg_k zone=closed:1m rate=1r/m redis=r on_failure=closed;
    server {
        listen 127.0.0.1:\$PORT;
        location = /ok { return 200 "ok\\n"; }
        location = /closed {
            ratelimit zone=closed;
            add_header X-Status \$ratelimit_status always;
            proxy_pass http://127.0.0.1:\$PORT/ok;
        }
    }
HTTP
    ok(wait_until(10, sub {
           $plain->log =~ /redis "r" at cluster: CLUSTER SLOTS failed: ERR This instance has cluster support disabled/ }),
       'a seed without cluster support: the reason is logged');
    like($plain->decision('/closed?k=p'), qr/^\d+ FAILED_CLOSED$/,
         'and the failure policy applies');
    $plain->stop;
}

# --- redirects are bounded: two fake nodes (a small RESP server here) that
# send every EVALSHA to each other with MOVED
{
    my @fp = ($free->(), $free->());
    my $count = "$dir/fake-evalsha";
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        require IO::Select;
        my $sel = IO::Select->new;
        my (%listen, %other, %buf);
        for my $i (0, 1) {
            my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
                                          LocalPort => $fp[$i], Listen => 16,
                                          ReuseAddr => 1) or POSIX::_exit(1);
            $listen{$l} = $i;
            $sel->add($l);
        }
        my $n = 0;
        my %port_of;
        while (1) {
            for my $fh ($sel->can_read(1)) {
                if (exists $listen{$fh}) {
                    my $c = $fh->accept or next;
                    $port_of{$c} = $fp[$listen{$fh}];
                    $other{$c} = $fp[1 - $listen{$fh}];
                    $buf{$c} = '';
                    $sel->add($c);
                    next;
                }
                my $got = sysread($fh, my $chunk, 65536);
                if (!$got) { $sel->remove($fh); close $fh; next; }
                $buf{$fh} .= $chunk;
                # whole RESP arrays of bulk strings
                while ($buf{$fh} =~ /^\*(\d+)\r\n/) {
                    my ($argc, $pos, @argv) = ($1, length("*$1\r\n"));
                    my $ok = 1;
                    for (1 .. $argc) {
                        my $rest = substr($buf{$fh}, $pos);
                        unless ($rest =~ /^\$(\d+)\r\n/
                                && length($rest) >= length("\$$1\r\n") + $1 + 2)
                        { $ok = 0; last }
                        my $len = $1;
                        push @argv, substr($rest, length("\$$len\r\n"), $len);
                        $pos += length("\$$len\r\n") + $len + 2;
                    }
                    last unless $ok;
                    substr($buf{$fh}, 0, $pos) = '';
                    my $cmd = uc $argv[0];
                    my $out;
                    if ($cmd eq 'SCRIPT') {
                        $out = "\$40\r\n" . ('0' x 40) . "\r\n";
                    } elsif ($cmd eq 'CLUSTER') {
                        $out = "*2\r\n"
                            . "*3\r\n:0\r\n:8191\r\n*2\r\n\$9\r\n127.0.0.1\r\n:$fp[0]\r\n"
                            . "*3\r\n:8192\r\n:16383\r\n*2\r\n\$9\r\n127.0.0.1\r\n:$fp[1]\r\n";
                    } elsif ($cmd eq 'EVALSHA') {
                        open my $o, '>>', $count; print $o "$port_of{$fh}\n";
                        close $o;
                        $out = "-MOVED 1 127.0.0.1:$other{$fh}\r\n";
                    } else {
                        $out = "+OK\r\n";
                    }
                    syswrite($fh, $out);
                }
            }
        }
    }
    $pids{fake} = $pid;

    my $fake = Test::Edge::Nginx->start(workers => 1, http => <<"HTTP");
    ratelimit_redis r cluster=127.0.0.1:$fp[0] timeout=1s;
    ratelimit_zone \$arg_k zone=open:1m rate=1r/m redis=r on_failure=open;
    server {
        listen 127.0.0.1:\$PORT;
        location = /ok { return 200 "ok\\n"; }
        location = /open {
            ratelimit zone=open;
            add_header X-Status \$ratelimit_status always;
            proxy_pass http://127.0.0.1:\$PORT/ok;
        }
    }
HTTP
    # both fake nodes connected: a redirect to either can be sent
    ok(wait_until(20, sub {
           unlink $count;
           $fake->decision('/open?k=a');
           my %seen;
           open my $in, '<', $count or return 0;
           $seen{$_}++ for <$in>;
           return keys %seen == 2;
       }), 'the fake cluster is known, both nodes connected');
    unlink $count;
    is($fake->decision('/open?k=b'), '200 FAILED_OPEN',
       'a batch sent back and forth by MOVED gets the failure policy');
    open my $in, '<', $count or die $!;
    my @sent = <$in>;
    is(scalar @sent, 6, 'after the first send and 5 redirects, no more');
    $fake->stop;
    kill 'KILL', delete $pids{fake};
    waitpid $pid, 0;
}


# --- a 3-primary cluster
# the ports picked just before they are used: the blocks above start
# servers of their own and other runs share the box, so a port picked at
# the start may be taken by then (once a node did not start, no pid file)
my @ports = ($free->(), $free->(), $free->());
start_node($_) for @ports;
my $out = `redis-cli --cluster create @{[map { "127.0.0.1:$_" } @ports]} --cluster-yes 2>&1`;
is($? >> 8, 0, 'redis-cli --cluster create') or diag($out);
ok(wait_until(30, sub {
       !grep { (rcmd($_, 'CLUSTER', 'INFO') // '') !~ /cluster_state:ok/ }
           @ports }),
   'cluster_state:ok on the three nodes');

my %id;      # port => node id
for my $p (@ports) {
    $id{$p} = rcmd($p, 'CLUSTER', 'MYID');
}

# a replica of the third primary, for the failover at the end
my $rport = $free->();
start_node($rport);
$out = `redis-cli --cluster add-node 127.0.0.1:$rport 127.0.0.1:$ports[0] --cluster-slave --cluster-master-id $id{$ports[2]} 2>&1`;
is($? >> 8, 0, 'a replica is added to the third primary') or diag($out);
ok(wait_until(30, sub {
       (rcmd($rport, 'INFO', 'replication') // '') =~ /master_link_status:up/
       && (rcmd($rport, 'CLUSTER', 'INFO') // '') =~ /cluster_state:ok/ }),
   'the replica is in sync');

# the node that serves SLOT, by port
sub owner {
    my ($slot) = @_;
    my $r = rcmd($ports[0], 'CLUSTER', 'SLOTS');
    for my $range (@$r) {
        return $range->[2][1] if $slot >= $range->[0] && $slot <= $range->[1];
    }
    return undef;
}

my $origin = Test::Edge::Origin->start;
my $oport = $origin->port;
$origin->set('/c/page', headers => ['Cache-Control: max-age=60'],
             body => 'cached body');

my $seeds = "127.0.0.1:$ports[0]";
my $nginx = Test::Edge::Nginx->start(workers => 1, http => <<"HTTP");
    ratelimit_redis r cluster=$seeds timeout=1s;
    ratelimit_zone \$arg_k zone=open:1m rate=1r/m redis=r on_failure=open;
    ratelimit_zone \$arg_k zone=closed:1m rate=1r/m redis=r on_failure=closed;
    edge_cache_redis c cluster=$seeds timeout=1s;
    edge_cache_zone pages redis=c;
    server {
        listen 127.0.0.1:\$PORT;
        location = /ok { return 200 "ok\\n"; }
        location = /ready { breaker_health ready; }
        location = /open {
            ratelimit zone=open burst=4 nodelay;
            add_header X-Status \$ratelimit_status always;
            proxy_pass http://127.0.0.1:\$PORT/ok;
        }
        location = /closed {
            ratelimit zone=closed burst=2 nodelay;
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

sub from_redis { $_[0] =~ /^(?:200 PASSED|429 REJECTED)$/ }

ok(wait_until(20, sub { from_redis($nginx->decision('/closed?k=warmup')) }),
   'the slot map is known: decisions come from Redis');

# the readiness check counts each worker once per cluster server (not once
# per node)
{
    require JSON::PP;
    my $doc;
    ok(wait_until(10, sub {
           $doc = eval { JSON::PP::decode_json($nginx->get('/ready')->{body}) };
           my @e = @{ $doc->{checks}{redis} // [] };
           @e == 2 && !grep { $_->{state} ne 'up' } @e;
       }), 'ready: both Cluster servers up')
        or diag(explain $doc);
    is_deeply([map { "$_->{module}/$_->{server} $_->{connected}/$_->{workers}" }
               sort { $a->{module} cmp $b->{module} }
               @{ $doc->{checks}{redis} // [] }],
              ['cache/c 1/1', 'ratelimit/r 1/1'],
              'ready: one worker connected to each cluster, of one');
}

# the slot of a zone's key K, as Redis computes it
sub slot_of {
    my ($zone, $k) = @_;
    return rcmd($ports[0], 'CLUSTER', 'KEYSLOT', "rl:{$zone:$k}:t");
}

# Redis Cluster's hash slot of a key (CRC16-CCITT/XMODEM of its hash
# tag), written here to find keys of a given slot without asking Redis
sub crc16 {
    my ($crc) = (0);
    for my $c (unpack 'C*', $_[0]) {
        $crc ^= $c << 8;
        for (1 .. 8) {
            $crc = ($crc & 0x8000) ? (($crc << 1) ^ 0x1021) : ($crc << 1);
            $crc &= 0xffff;
        }
    }
    return $crc;
}

sub same_slot_key {
    my ($zone, $slot) = @_;
    for my $i (0 .. 1_000_000) {
        return "s$i" if crc16("$zone:s$i") % 16384 == $slot;
    }
    die "no key for slot $slot\n";
}

is(crc16('123456789'), 0x31c3, 'the test\'s CRC16 is XMODEM\'s');
is(crc16('open:x1') % 16384, slot_of('open', 'x1'),
   'and it agrees with CLUSTER KEYSLOT');

# --- exact decisions, keys on all three nodes
{
    my (%per_node, $exact);
    $exact = 1;
    for my $i (1 .. 30) {
        my $k = "x$i";
        my @d = map { $nginx->decision("/closed?k=$k") } 1 .. 4;
        my $want = ['200 PASSED', '200 PASSED', '200 PASSED'];
        unless (is_deeply([@d[0 .. 2]], $want, "key $k: 3 pass")
                && like($d[3], qr/^429 REJECTED$/, "key $k: the 4th is refused"))
        {
            $exact = 0;
        }
        $per_node{ owner(slot_of('closed', $k)) }++;
    }
    is(scalar keys %per_node, 3, 'the keys are spread on the three nodes')
        or diag(explain \%per_node);
    for my $p (@ports) {
        cmp_ok(rcmd($p, 'DBSIZE'), '>', 0, "node $p holds buckets");
    }
}

# --- concurrent requests: the batches of one event-loop pass carry keys of
# many slots of each node, and an EVALSHA must hold one slot's keys only
{
    # every request written before any answer is read
    my @paths = map { my $k = "c$_"; map { "/closed?k=$k" } 1 .. 4 } 1 .. 30;
    my @socks;
    for my $path (@paths) {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => $nginx->port, Timeout => 10)
            or die "connect: $!";
        push @socks, [$s, $path];
    }
    print { $_->[0] } "GET $_->[1] HTTP/1.0\r\nHost: localhost\r\n\r\n"
        for @socks;
    my %per_key;
    for my $x (@socks) {
        local $/;
        my $raw = readline($x->[0]) // '';
        my ($status) = $raw =~ m{^HTTP/1\.\d (\d+)};
        my ($st) = $raw =~ /^X-Status: (\S+)/mi;
        my ($k) = $x->[1] =~ /k=(\w+)/;
        $per_key{$k}{($status // 0) . ' ' . ($st // '-')}++;
    }
    my @wrong = grep {
        my $h = $per_key{$_};
        !(($h->{'200 PASSED'} // 0) == 3 && ($h->{'429 REJECTED'} // 0) == 1)
    } sort keys %per_key;
    is_deeply(\@wrong, [],
              '120 concurrent requests, 30 keys: exactly 3 pass per key, '
              . 'the 4th is refused')
        or diag(explain { map { $_ => $per_key{$_} } @wrong });
}

# --- the cache module through the cluster
{
    my $res = $nginx->get('/c/page');
    is($res->{body}, 'cached body', 'the cache module works through the cluster');
    ok(wait_until(10, sub { ($nginx->get('/c/page')->{headers}{'x-cache'} // '')
                                =~ /HIT/ }),
       'and serves a hit from the cluster');
}

# --- the cache follows a migrated slot: its lookups get ASK while the slot
# moves, then MOVED, and each is resent: every one a HIT
{
    my ($ckey, $src);
    for my $p (@ports) {
        my $ks = rcmd($p, 'KEYS', 'pages:*') // [];
        ($ckey, $src) = ($ks->[0], $p) if @$ks;
    }
    ok(defined $ckey, 'the cache entry is in the cluster') or diag($ckey);
    my $slot = rcmd($ports[0], 'CLUSTER', 'KEYSLOT', $ckey);
    my ($dst) = grep { $_ != $src } @ports;
    rcmd($dst, 'CLUSTER', 'SETSLOT', $slot, 'IMPORTING', $id{$src});
    rcmd($src, 'CLUSTER', 'SETSLOT', $slot, 'MIGRATING', $id{$dst});
    my $keys = rcmd($src, 'CLUSTER', 'GETKEYSINSLOT', $slot, 100);
    is(rcmd($src, 'MIGRATE', '127.0.0.1', $dst, '', 0, 5000, 'KEYS', @$keys),
       'OK', 'the entry\'s slot is migrating, its keys moved');
    my $asking = calls($dst, 'asking');
    my $get = calls($dst, 'get');
    like($nginx->get('/c/page')->{headers}{'x-cache'} // '', qr/HIT/,
         'a lookup answered ASK is a HIT from the target');
    cmp_ok(calls($dst, 'asking'), '>', $asking, 'behind ASKING');
    cmp_ok(calls($dst, 'get'), '>', $get, 'the target answered the GET');
    rcmd($_, 'CLUSTER', 'SETSLOT', $slot, 'NODE', $id{$dst}) for @ports;
    ok(wait_until(10, sub { owner($slot) == $dst }), 'the slot moved');
    $get = calls($dst, 'get');
    like($nginx->get('/c/page')->{headers}{'x-cache'} // '', qr/HIT/,
         'a lookup answered MOVED is a HIT from the target');
    cmp_ok(calls($dst, 'get'), '>', $get, 'the target answered it');
}

# --- a cache entry larger than 4 KiB stored while its slot migrates: the
# SET is answered ASK (or MOVED, once the slot moved: the store follows
# the response) and must be sent again, whole (a plain command is resent
# from a copy; up to 4 KiB one the slot keeps, larger ones one of their
# own: before, a larger one was not resent)
{
    require Digest::MD5;
    srand(13);
    my $body = join '', map { chr(int rand 256) } 1 .. 16384;  # incompressible
    $origin->set('/c/big', headers => ['Cache-Control: max-age=60'],
                 body => $body);
    my $ckey = 'pages:{' . Digest::MD5::md5_hex('/c/big') . '}';
    my $slot = rcmd($ports[0], 'CLUSTER', 'KEYSLOT', $ckey);
    my $src = owner($slot);
    my ($dst) = grep { $_ != $src } @ports;
    rcmd($dst, 'CLUSTER', 'SETSLOT', $slot, 'IMPORTING', $id{$src});
    rcmd($src, 'CLUSTER', 'SETSLOT', $slot, 'MIGRATING', $id{$dst});
    my $asking = calls($dst, 'asking');
    my $res = $nginx->get('/c/big');
    is($res->{body}, $body,
       'a 16 KiB page while its slot migrates: a miss, served whole');
    cmp_ok(calls($dst, 'asking'), '>', $asking, 'its commands were asked '
           . 'of the target');

    # the slot is the target's from now on (the keys some other zone put
    # there on the source move with it)
    my $keys = rcmd($src, 'CLUSTER', 'GETKEYSINSLOT', $slot, 1000) // [];
    rcmd($src, 'MIGRATE', '127.0.0.1', $dst, '', 0, 5000, 'KEYS', @$keys)
        if @$keys;
    rcmd($_, 'CLUSTER', 'SETSLOT', $slot, 'NODE', $id{$dst}) for @ports;
    ok(wait_until(10, sub { owner($slot) == $dst }), 'the slot moved');
    ok(wait_until(10, sub { rcmd($dst, 'STRLEN', $ckey) > 16384 }),
       'the entry, more than 16 KiB, was stored on the target')
        or diag('STRLEN ' . rcmd($dst, 'STRLEN', $ckey) . "\n"
                . join("\n", grep { /redis/ } split /\n/, $nginx->log));
    $res = $nginx->get('/c/big');
    like($res->{headers}{'x-cache'} // '', qr/HIT/,
         'the 16 KiB entry is a HIT from the target');
    is($res->{body}, $body, 'with its whole body');
}

# --- a slot migrated by hand under traffic
{
    my $k = 'mig';
    my $slot = slot_of('open', $k);
    my $src = owner($slot);
    my ($dst) = grep { $_ != $src } @ports;

    # background traffic on other keys: every answer from Redis
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open my $o, '>', "$dir/traffic" or POSIX::_exit(1);
        $o->autoflush(1);
        my $n = 0;
        until (-e "$dir/traffic-stop") {
            my $d = eval { $nginx->decision('/open?k=bg' . $n++) } // 'none';
            print $o "$d\n";
        }
        POSIX::_exit(0);
    }
    ok(wait_until(10, sub { -s "$dir/traffic" }), 'background traffic flows');

    is($nginx->decision("/open?k=$k"), '200 PASSED', 'migration: 1 before');
    is($nginx->decision("/open?k=$k"), '200 PASSED', 'migration: 2 before');

    is(rcmd($dst, 'CLUSTER', 'SETSLOT', $slot, 'IMPORTING', $id{$src}), 'OK',
       'the target imports the slot');
    is(rcmd($src, 'CLUSTER', 'SETSLOT', $slot, 'MIGRATING', $id{$dst}), 'OK',
       'the source migrates it');
    is($nginx->decision("/open?k=$k"), '200 PASSED',
       'migration: 3, on the source while its key is there');

    my $keys = rcmd($src, 'CLUSTER', 'GETKEYSINSLOT', $slot, 100);
    ok(@$keys >= 1, 'the key is in the slot') or diag(explain $keys);
    is(rcmd($src, 'MIGRATE', '127.0.0.1', $dst, '', 0, 5000, 'KEYS', @$keys),
       'OK', 'MIGRATE moves its keys');

    my $asking = calls($dst, 'asking');
    is($nginx->decision("/open?k=$k"), '200 PASSED',
       'migration: 4, ASK to the target');
    cmp_ok(calls($dst, 'asking'), '>', $asking, 'ASKING reached the target');

    for my $p (@ports) {
        rcmd($p, 'CLUSTER', 'SETSLOT', $slot, 'NODE', $id{$dst});
    }
    ok(wait_until(10, sub { owner($slot) == $dst }), 'the slot is the target\'s');

    my $dst_calls = calls($dst, 'evalsha');
    is($nginx->decision("/open?k=$k"), '200 PASSED',
       'migration: 5, after MOVED on the target');
    cmp_ok(calls($dst, 'evalsha'), '>', $dst_calls,
           'the target ran it');
    like($nginx->decision("/open?k=$k"), qr/^429 REJECTED$/,
         'migration: the 6th is refused (nothing counted twice or lost)');

    open my $stop, '>', "$dir/traffic-stop" or die $!;
    close $stop;
    waitpid $pid, 0;
    open my $in, '<', "$dir/traffic" or die $!;
    my %bg;
    chomp, $bg{$_}++ for <$in>;
    is_deeply([grep { !from_redis($_) } keys %bg], [],
              'the background traffic got decisions from Redis only')
        or diag(explain \%bg);
    diag(join ', ', map { "$bg{$_} x $_" } sort keys %bg);

    # the map was updated: a key of the same slot never seen before goes
    # straight to the target, the source sees nothing of it
    my $k2 = same_slot_key('open', $slot);
    my $src_calls = calls($src, 'evalsha');
    $dst_calls = calls($dst, 'evalsha');
    is($nginx->decision("/open?k=$k2"), '200 PASSED',
       'another key of the slot passes');
    is(calls($src, 'evalsha'), $src_calls,
       'after MOVED the source gets none of the slot');
    cmp_ok(calls($dst, 'evalsha'), '>', $dst_calls,
           'the slot goes straight to the target');
}

# --- cache purges through the cluster: entries spread over the three
# primaries; a prefix or pattern job scans every primary (a SCAN sees one
# node's keys), a key purge and a tag purge reach the entry wherever it is
{
    require JSON::PP;
    my $pn = Test::Edge::Nginx->start(workers => 1, http => <<"HTTP");
    edge_cache_redis c cluster=$seeds timeout=2s;
    edge_cache_zone cz redis=c purge_poll=100ms;
    server {
        listen 127.0.0.1:\$PORT;
        location /p/ {
            edge_cache cz;
            edge_cache_key \$uri;
            add_header X-Cache \$edge_cache_status always;
            proxy_pass http://127.0.0.1:\$PORT/o/;
        }
        location /o/ {
            default_type text/plain;
            add_header Cache-Control "max-age=600";
            add_header Cache-Tag "red";
            return 200 "\$request_id";
        }
        location ~ ^/purge(/.*)\$ {
            edge_cache_purge cz;
            edge_cache_key \$1;
        }
        location = /purge { edge_cache_purge cz; }
    }
HTTP
    my $entries = sub {
        my %on;
        for my $p (@ports) {
            $on{$p} = [grep { /^cz:\{[0-9a-f]{32}\}$/ }
                       @{ rcmd($p, 'KEYS', 'cz:{*}') // [] }];
        }
        return \%on;
    };
    my $count = sub { my $on = $entries->(); my $n = 0; $n += @$_ for values %$on; $n };
    my @paths = ((map { "/p/gone/$_" } 1 .. 30), (map { "/p/keep/$_" } 1 .. 30));
    ok(wait_until(20, sub {
           $pn->get($_) for @paths;
           $count->() == 60 }),
       'purges: 60 entries stored in the cluster')
        or diag(explain $entries->());
    my $on = $entries->();
    is(scalar(grep { @{ $on->{$_} } } @ports), 3,
       'purges: the entries are on the three primaries')
        or diag(explain { map { $_ => scalar @{ $on->{$_} } } @ports });

    my $job = sub {
        my ($query) = @_;
        my $r = $pn->request('PURGE', "/purge?$query");
        my $j = eval { JSON::PP::decode_json($r->{body}) } // {};
        is($r->{status}, 202, "purge $query: started") or diag($r->{body});
        my $prog = {};
        ok(wait_until(30, sub {
               my $g = $pn->get("/purge?job=$j->{job}");
               $prog = eval { JSON::PP::decode_json($g->{body}) } // {};
               ($prog->{state} // '') eq 'done' }),
           "purge $query: the job is done") or diag(explain $prog);
        return $prog;
    };
    my $prog = $job->('prefix=/p/gone/');
    is($prog->{deleted}, 30, 'prefix job: the 30 entries deleted, from the '
       . 'three primaries');
    cmp_ok($prog->{scanned}, '>=', 60, 'prefix job: every entry scanned');
    is($count->(), 30, 'prefix job: the 30 others are left');
    like($pn->get('/p/gone/7')->{headers}{'x-cache'} // '', qr/MISS/,
         'prefix job: a purged entry is a miss');

    my $want = grep { /^1/ } 1 .. 30;
    $prog = $job->('pattern=/p/keep/1*');
    is($prog->{deleted}, $want, "pattern job: its $want entries deleted");
    like($pn->get('/p/keep/15')->{headers}{'x-cache'} // '', qr/MISS/,
         'pattern job: a purged entry is a miss');

    like($pn->get('/p/keep/22')->{headers}{'x-cache'} // '', qr/HIT/,
         'key purge: the entry is a hit before');
    my $r = $pn->request('PURGE', '/purge/p/keep/22');
    is($r->{status}, 200, 'key purge: 200') or diag($r->{body});
    like($pn->get('/p/keep/22')->{headers}{'x-cache'} // '', qr/MISS/,
         'key purge: then a miss');

    $r = $pn->request('PURGE', '/purge/p/none');
    is($r->{status}, 404, 'key purge of a key with no entry: 404')
        or diag($r->{body});
    $r = $pn->request('PURGE', '/purge/p/keep/24', 'Edge-Purge-Soft' => '1');
    is($r->{status}, 200, 'soft purge: 200') or diag($r->{body});
    like($r->{body}, qr/"soft":true/, 'soft purge: said soft');
    ok(rcmd(owner(rcmd($ports[0], 'CLUSTER', 'KEYSLOT',
                       'cz:{' . Digest::MD5::md5_hex('/p/keep/24') . '}')),
            'EXISTS', 'cz:{' . Digest::MD5::md5_hex('/p/keep/24') . '}'),
       'soft purge: the entry stays in Redis');
    unlike($pn->get('/p/keep/24')->{headers}{'x-cache'} // '', qr/^HIT$/,
           'soft purge: the entry is no longer a fresh hit');

    like($pn->get('/p/keep/23')->{headers}{'x-cache'} // '', qr/HIT/,
         'tag purge: the entry is a hit before');
    $r = $pn->request('PURGE', '/purge?tag=red');
    is($r->{status}, 200, 'tag purge: 200') or diag($r->{body});
    ok(wait_until(5, sub {
           ($pn->get('/p/keep/23')->{headers}{'x-cache'} // '') =~ /MISS|EXPIRED/ }),
       'tag purge: then a miss');
    unlike($pn->log, qr/\[(?:error|alert|crit)\]/, 'purges: no error logged')
        or diag($pn->log);
    $pn->stop;
}

# --- a pattern purge while the primary it scans fails over: 3000 entries
# on the three primaries; the victim (the primary with a replica) refuses
# SCAN to the default user (an ACL, the victim's alone), so the job is
# held on it, failing and retrying, until its replica takes over with
# CLUSTER FAILOVER and the ACL is lifted (the demoted node then answers
# READONLY).  Once the worker's map no longer names the node, the job
# scans every primary again: it finishes (not "stalled"), and no matching
# entry is left on the primaries
{
    require JSON::PP;
    my $victim = $ports[2];
    my $t0 = time;
    my $fn = Test::Edge::Nginx->start(workers => 1, http => <<"HTTP");
    edge_cache_redis c cluster=$seeds timeout=2s;
    edge_cache_zone fz redis=c;
    server {
        listen 127.0.0.1:\$PORT;
        location /f/ {
            edge_cache fz;
            edge_cache_key \$uri;
            proxy_pass http://127.0.0.1:\$PORT/o/;
        }
        location /o/ {
            default_type text/plain;
            add_header Cache-Control "max-age=600";
            return 200 "\$request_id";
        }
        location = /purge { edge_cache_purge fz; }
    }
HTTP
    # one entry stored by nginx, the model of the others: the same bytes
    # but the key text (at offset 88, its length at 56), of the same length
    my $text0 = '/f/gone/00000';
    my $key_of = sub { 'fz:{' . Digest::MD5::md5_hex($_[0]) . '}' };
    my $tmpl;
    ok(wait_until(20, sub {
           $fn->get($text0);
           $tmpl = rcmd(owner(rcmd($ports[0], 'CLUSTER', 'KEYSLOT',
                                   $key_of->($text0))),
                        'GET', $key_of->($text0));
           defined $tmpl && !ref $tmpl }),
       'purge during a failover: the model entry is stored');
    is(unpack('N', substr($tmpl, 56, 4)) . ' ' . substr($tmpl, 88, 13),
       "13 $text0", 'purge during a failover: its key text at 88');

    # entries like it, written to their primaries (pipelined, per node)
    my (%n, %text_of);
    $text_of{ $key_of->($text0) } = $text0;
    my $write = sub {
        my @ranges = map { [$_->[0], $_->[1], $_->[2][1]] }
            @{ rcmd($ports[0], 'CLUSTER', 'SLOTS') };
        my (%cmds, %count);
        for my $text (@_) {
            my $k = $key_of->($text);
            $text_of{$k} = $text;
            my ($tag) = $k =~ /\{(.*)\}/;
            my $slot = crc16($tag) % 16384;
            my ($r) = grep { $slot >= $_->[0] && $slot <= $_->[1] } @ranges;
            my $v = $tmpl;
            substr($v, 88, 13) = $text;
            $cmds{$r->[2]} .= "*3\r\n\$3\r\nSET\r\n\$" . length($k)
                              . "\r\n$k\r\n" . '$' . length($v) . "\r\n$v\r\n";
            $count{$r->[2]}++;
            $n{$r->[2]}++;
        }
        for my $p (keys %cmds) {
            my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                          PeerPort => $p, Timeout => 10)
                or die "connect: $!";
            print $s $cmds{$p};
            Test::Edge::read_reply($s) for 1 .. $count{$p};
            close $s;
        }
    };
    $write->((map { sprintf '/f/gone/%05d', $_ } 1 .. 2400),
             (map { sprintf '/f/keep/%05d', $_ } 1 .. 600));
    my $entries = sub {
        my %on;
        for my $p (@_) {
            for my $k (@{ rcmd($p, 'KEYS', 'fz:{*}') // [] }) {
                my ($what) = ($text_of{$k} // '') =~ m{^/f/(\w+)/};
                $on{ $what // 'other' }++;
            }
        }
        return \%on;
    };
    is_deeply($entries->(@ports), { gone => 2401, keep => 600 },
              'purge during a failover: 2401 matching entries, 600 others');
    is(scalar(grep { $n{$_} } @ports), 3,
       'purge during a failover: on the three primaries')
        or diag(explain \%n);

    # the job is held on the victim: SCAN refused there
    rcmd($victim, 'ACL', 'LOG', 'RESET');
    is(rcmd($victim, 'ACL', 'SETUSER', 'default', '-scan'), 'OK',
       'purge during a failover: the victim refuses SCAN');
    my $r = $fn->request('PURGE', '/purge?pattern=/f/*ne/0*');
    my $j = eval { JSON::PP::decode_json($r->{body}) } // {};
    is($r->{status}, 202, 'purge during a failover: the job started')
        or diag($r->{body});
    ok(wait_until(10, sub { @{ rcmd($victim, 'ACL', 'LOG') // [] } }),
       'purge during a failover: the job reached the victim');

    # its replica takes over; the demoted node answers READONLY
    is(rcmd($rport, 'CLUSTER', 'FAILOVER'), 'OK',
       'purge during a failover: CLUSTER FAILOVER on the replica');
    ok(wait_until(10, sub {
           (rcmd($rport, 'INFO', 'replication') // '') =~ /role:master/
           && (rcmd($victim, 'INFO', 'replication') // '') =~ /role:slave/ }),
       'purge during a failover: the replica is the primary now');
    my $t1 = time;
    rcmd($victim, 'ACL', 'SETUSER', 'default', '+scan');

    my $prog = {};
    ok(wait_until(25, sub {
           my $g = $fn->get("/purge?job=$j->{job}");
           $prog = eval { JSON::PP::decode_json($g->{body}) } // {};
           ($prog->{state} // '') eq 'done' }),
       'purge during a failover: the job is done') or diag(explain $prog);
    diag(sprintf 'purge during a failover: done %.1f s after the failover',
         time - $t1);
    is_deeply($entries->($ports[0], $ports[1], $rport), { keep => 600 },
              'purge during a failover: no matching entry is left, the '
              . 'others are');
    cmp_ok($prog->{deleted} // -1, '<=', 2401,
           'purge during a failover: nothing counted twice');
    like($fn->log, qr/purge job "fz:job:$j->{job}": the node it scans left the cluster map/,
         'purge during a failover: the job said why it scans again');

    # the victim takes its place back, for the blocks below
    is(rcmd($victim, 'CLUSTER', 'FAILOVER'), 'OK',
       'purge during a failover: the victim fails back');
    ok(wait_until(15, sub {
           (rcmd($victim, 'INFO', 'replication') // '') =~ /role:master/
           && (rcmd($rport, 'INFO', 'replication') // '')
              =~ /master_link_status:up/
           && !grep { (rcmd($_, 'CLUSTER', 'INFO') // '')
                          !~ /cluster_state:ok/ } @ports, $rport }),
       'purge during a failover: the victim is the primary again');
    $fn->stop;
    unlike($fn->final_log, qr/\[alert\]|\[crit\]|open socket/,
           'purge during a failover: no alert');

    # a progress call that ran but whose answer never came is sent again:
    # its batch is counted once.  Every primary refuses SCAN but the one
    # that holds the job's hash, so the job is held on another one, V;
    # right after one of its tries there, the hash's node is stopped
    # (SIGSTOP) and V lets SCAN go: V's batch, then the progress call,
    # which waits on the stopped node until the worker gives it up and
    # closes the connection.  Continued, the node runs the call it had
    # received (its answer goes nowhere), and the worker sends it again.
    # A longer cluster-node-timeout meanwhile: the stop is no failure.
    $write->(map { sprintf '/f/dupe/%05d', $_ } 1 .. 600);
    rcmd($_, 'CONFIG', 'SET', 'cluster-node-timeout', 15000)
        for @ports, $rport;
    for my $p (@ports) {
        rcmd($p, 'ACL', 'LOG', 'RESET');
        rcmd($p, 'ACL', 'SETUSER', 'default', '-scan');
    }
    my $denied = sub {
        my $n = 0;
        for my $e (@{ rcmd($_[0], 'ACL', 'LOG') // [] }) {
            my %h = @$e;
            $n += $h{count} // 0;
        }
        return $n;
    };
    my $dn = Test::Edge::Nginx->start(workers => 1, http => <<"HTTP");
    edge_cache_redis c cluster=$seeds timeout=1s;
    edge_cache_zone fz redis=c;
    server {
        listen 127.0.0.1:\$PORT;
        location = /purge { edge_cache_purge fz; }
    }
HTTP
    ok(wait_until(10, sub {
           $r = $dn->request('PURGE', '/purge?prefix=/f/dupe/');
           ($r->{status} // 0) == 202 }),
       'progress resent: the job started') or diag($r->{body});
    $j = eval { JSON::PP::decode_json($r->{body}) } // {};
    my $home = owner(rcmd($ports[0], 'CLUSTER', 'KEYSLOT',
                          "fz:job:$j->{job}"));
    rcmd($home, 'ACL', 'SETUSER', 'default', '+scan');
    my $v;
    ok(wait_until(10, sub {
           ($v) = grep { $_ != $home && $denied->($_) } @ports }),
       'progress resent: the job is held on a node without its hash');
    my $tries = $denied->($v);
    ok(wait_until(5, sub { $denied->($v) > $tries }),
       'progress resent: a try on it, refused');
    # the suite's nginx waits meanwhile: its map refresh would time out
    # on the stopped node (and log it)
    my @main = $nginx->worker_pids;
    kill 'STOP', @main;
    my $hpid = $pids{"redis-$home"};
    kill 'STOP', $hpid;
    my $stopped = time;
    rcmd($v, 'ACL', 'SETUSER', 'default', '+scan');
    my $dropped = wait_until(10, sub {
        $dn->log =~ /redis "c" at 127\.0\.0\.1:$home: nothing received for \d+ ms while commands waited/ });
    kill 'CONT', $hpid;
    kill 'CONT', @main;
    ok($dropped, 'progress resent: the progress call was given up, its '
       . 'connection closed');
    diag(sprintf 'progress resent: the node was stopped %.1f s',
         time - $stopped);
    rcmd($_, 'ACL', 'SETUSER', 'default', '+scan') for @ports;
    ok(wait_until(20, sub {
           my $g = $dn->get("/purge?job=$j->{job}");
           $prog = eval { JSON::PP::decode_json($g->{body}) } // {};
           ($prog->{state} // '') eq 'done' }),
       'progress resent: the job is done') or diag(explain $prog);
    is_deeply($entries->(@ports), { keep => 600 },
              'progress resent: no entry of the prefix is left');
    cmp_ok($prog->{deleted} // -1, '<=', 600,
           'progress resent: its batch counted once (600 entries)');
    diag("progress resent: deleted $prog->{deleted}, "
         . "scanned $prog->{scanned}");
    rcmd($_, 'CONFIG', 'SET', 'cluster-node-timeout', 2000)
        for @ports, $rport;
    $dn->stop;
    unlike($dn->final_log, qr/\[alert\]|\[crit\]|open socket/,
           'progress resent: no alert');
    diag(sprintf 'purge during a failover: the block took %.1f s',
         time - $t0);
}

# --- the stampede lock through the cluster, across a reload: 10 requests
# for one entry, the owner's origin answer takes 2 s, the 9 others poll
# the lock on its node.  The old worker is told to go while they wait: the
# waiters hold the cluster's connections between their polls
# (ngx_edge_redis_hold), so they are not closed as idle, the polls go on,
# and the origin sees one request.
{
    require IO::Select;
    my $ln = Test::Edge::Nginx->start(workers => 1, http => <<"HTTP");
    edge_cache_redis c cluster=$seeds timeout=2s;
    edge_cache_zone lz redis=c;
    server {
        listen 127.0.0.1:\$PORT;
        location /lock/ {
            edge_cache lz;
            edge_cache_key \$uri;
            edge_cache_lock on;
            edge_cache_lock_timeout 30s;
            edge_cache_lock_age 60s;
            add_header X-Cache \$edge_cache_status always;
            proxy_pass http://127.0.0.1:$oport;
        }
    }
HTTP
    ok(wait_until(20, sub { ($ln->get('/lock/warm')->{status} // 0) == 404
                            && grep { @{ rcmd($_, 'KEYS', 'lz:*') // [] } } @ports }),
       'lock: the cluster is known') ;
    $origin->set('/lock/r', headers => ['Cache-Control: max-age=60'],
                 body => 'locked', count_body => 1, delay => 2);
    my $lkey = 'lz:{' . Digest::MD5::md5_hex('/lock/r') . '}:lock';
    my $lnode = owner(rcmd($ports[0], 'CLUSTER', 'KEYSLOT', $lkey));
    my @socks = map {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => $ln->port, Timeout => 10)
            or die "connect: $!";
        print $s "GET /lock/r HTTP/1.0\r\nHost: localhost\r\n\r\n";
        $s;
    } 1 .. 10;
    ok(wait_until(10, sub { defined rcmd($lnode, 'GET', $lkey) }),
       'lock: taken, on its node');
    my @old = $ln->worker_pids;
    open my $pf, '<', "$ln->{prefix}/logs/nginx.pid" or die $!;
    chomp(my $master = <$pf>);
    kill 'HUP', $master;
    my $re = join '|', @old;
    ok(wait_until(20, sub {
           $ln->log =~ /\[notice\] (?:$re)#\d+: gracefully shutting down/ }),
       'lock: the old worker is told to go while 9 requests poll');
    my @bodies;
    for my $s (@socks) {
        local $/;
        my $raw = readline($s) // '';
        my ($head, $body) = split /\r\n\r\n/, $raw, 2;
        push @bodies, ($head // '') =~ m{^HTTP/1\.\d 200} ? $body : "none";
    }
    is(scalar(grep { $_ eq 'locked#1' } @bodies), 10,
       'lock across a reload: 10 answers, all the one origin answer')
        or diag(explain \@bodies);
    is($origin->hits('/lock/r'), 1, 'lock across a reload: one origin '
       . 'request');
    ok(wait_until(30, sub { !grep { kill 0, $_ } @old }),
       'lock: the old worker exited');
    $ln->stop;
    unlike($ln->final_log, qr/\[alert\]|\[crit\]|open socket/,
           'lock: no alert, no socket left');
}

# --- TRYAGAIN: a zone with bans sends three keys per decision (bucket,
# refusals, ban: one hash tag); while their slot migrates, the target
# refuses them (behind ASKING) as long as it does not hold them all.  The
# batch is sent again after a backoff: 10 times at most, then the failure
# policy; and once the slot's migration ends, the retry is answered.
sub errorstat {
    my ($port, $err) = @_;
    my ($n) = (rcmd($port, 'INFO', 'errorstats') // '')
        =~ /errorstat_\Q$err\E:count=(\d+)/;
    return $n // 0;
}

{
    my $bn = Test::Edge::Nginx->start(workers => 1, http => <<"HTTP");
    ratelimit_redis r cluster=$seeds timeout=10s;
    ratelimit_zone \$arg_k zone=banz:1m rate=1r/m redis=r on_failure=open;
    ratelimit_ban zone=banz threshold=100 window=1m duration=1m;
    server {
        listen 127.0.0.1:\$PORT;
        location = /ok { return 200 "ok\\n"; }
        location = /banz {
            ratelimit zone=banz burst=4 nodelay;
            add_header X-Status \$ratelimit_status always;
            proxy_pass http://127.0.0.1:\$PORT/ok;
        }
    }
HTTP
    ok(wait_until(20, sub { from_redis($bn->decision('/banz?k=warm')) }),
       'TRYAGAIN: a zone with bans decides from the cluster');

    my $k = 'ta1';
    my $slot = slot_of('banz', $k);
    my $src = owner($slot);
    my ($dst) = grep { $_ != $src } @ports;
    rcmd($dst, 'CLUSTER', 'SETSLOT', $slot, 'IMPORTING', $id{$src});
    rcmd($src, 'CLUSTER', 'SETSLOT', $slot, 'MIGRATING', $id{$dst});

    # the slot stays in migration: every try refused, the failure policy
    my $try0 = errorstat($dst, 'TRYAGAIN');
    my $t0 = time;
    is($bn->decision("/banz?k=$k"), '200 FAILED_OPEN',
       'TRYAGAIN until the bound: the failure policy');
    my $took = time - $t0;
    is(errorstat($dst, 'TRYAGAIN') - $try0, 11,
       'after the first send and 10 retries, no more');
    cmp_ok($took, '>=', 1.4, 'the retries were spread by the backoff');
    diag(sprintf 'TRYAGAIN: 11 tries took %.2f s', $took);
    like($bn->log, qr/redis "r" at 127\.0\.0\.1:$dst: error reply: TRYAGAIN/,
         'the last TRYAGAIN is logged');

    # the migration ends while the retries go on: the retry is answered
    my $k2 = same_slot_key('banz', $slot);
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $bn->port, Timeout => 10)
        or die "connect: $!";
    $try0 = errorstat($dst, 'TRYAGAIN');
    print $s "GET /banz?k=$k2 HTTP/1.0\r\nHost: localhost\r\n\r\n";
    ok(wait_until(10, sub { errorstat($dst, 'TRYAGAIN') > $try0 }),
       'a decision is refused with TRYAGAIN');
    my $keys = rcmd($src, 'CLUSTER', 'GETKEYSINSLOT', $slot, 1000) // [];
    rcmd($src, 'MIGRATE', '127.0.0.1', $dst, '', 0, 5000, 'KEYS', @$keys)
        if @$keys;
    rcmd($_, 'CLUSTER', 'SETSLOT', $slot, 'NODE', $id{$dst}) for @ports;
    my $raw = do { local $/; readline($s) } // '';
    my ($status) = $raw =~ m{^HTTP/1\.\d (\d+)};
    my ($st) = $raw =~ /^X-Status: (\S+)/mi;
    is(($status // 0) . ' ' . ($st // '-'), '200 PASSED',
       'the migration ended during the backoff: the retry is decided by '
       . 'Redis');
    cmp_ok(errorstat($dst, 'TRYAGAIN') - $try0, '<', 11,
           'before the bound');
    $bn->stop;
    unlike($bn->final_log, qr/\[alert\]|\[crit\]|open socket/, 'no alert');
}

unlike($nginx->log, qr/\[(?:error|alert|crit)\] [^\n]*redis "/,
       'no error logged while the cluster is whole (redirects are not errors)');

# --- a primary killed: its slots follow the failure policy
{
    my $victim = $ports[2];
    my (%key_on);
    for my $i (1 .. 200) {
        my $o = owner(slot_of('open', "d$i"));
        $key_on{$o} //= "d$i";
        last if keys %key_on == 3;
    }

    # fresh keys of the victim's slots (of ZONE), never seen before
    my @ranges = map { [$_->[0], $_->[1]] }
        grep { $_->[2][1] == $victim } @{ rcmd($ports[0], 'CLUSTER', 'SLOTS') };
    my $n = 0;
    my $victim_key = sub {
        my ($zone) = @_;
        while (1) {
            my $k = 'v' . $n++;
            my $slot = crc16("$zone:$k") % 16384;
            return $k if grep { $slot >= $_->[0] && $slot <= $_->[1] } @ranges;
        }
    };
    my $pid = delete $pids{"redis-$victim"};
    kill 'KILL', $pid;
    ok(wait_until(10, sub { gone($pid) }), 'a primary is killed');

    is($nginx->decision('/open?k=' . $victim_key->('open')), '200 FAILED_OPEN',
       'its slots: on_failure=open passes');
    like($nginx->decision('/closed?k=' . $victim_key->('closed')),
         qr/^\d+ FAILED_CLOSED$/, 'its slots: on_failure=closed refuses');
    for my $p (grep { $_ != $victim } @ports) {
        my $k = $key_on{$p};
        is($nginx->decision("/closed?k=$k-live"), '200 PASSED',
           "node $p keeps deciding");
    }

    # the replica takes over (cluster-node-timeout 2000): the map follows
    my $t0 = time;
    my $before = calls($rport, 'evalsha');
    ok(wait_until(30, sub {
           from_redis($nginx->decision('/open?k=' . $victim_key->('open'))) }),
       'after the failover its slots are decided by Redis again');
    diag(sprintf 'failover: decisions from Redis again %.2f s after the kill',
         time - $t0);
    cmp_ok(calls($rport, 'evalsha'), '>', $before,
           'by the promoted replica');
    like(rcmd($rport, 'INFO', 'replication') // '', qr/role:master/,
         'which is a primary now');
}

# --- a node leaves the cluster (its slots resharded away, then forgotten
# by the others; it keeps running, as a replica): once two maps at least
# 5 s apart said it serves no slot, each worker closes its connection to
# it, and does not reconnect
{
    my $gone = $ports[1];
    # the nginx clients of a node: every normal client but the one asking
    # (once its slots are gone, the node becomes a replica of the node
    # that took them: its link to that primary is no client of ours)
    my $clients = sub {
        my $list = rcmd($gone, 'CLIENT', 'LIST') // '';
        return scalar grep { / flags=N / && !/cmd=client\|list/ }
            split /\n/, $list;
    };
    cmp_ok($clients->(), '>=', 2, 'leave: nginx is connected to the node '
           . '(one connection per cluster server)');

    # the killed primary is forgotten first: redis-cli --cluster wants
    # every node it is told of to answer
    rcmd($_, 'CLUSTER', 'FORGET', $id{$ports[2]}) for $ports[0], $gone, $rport;
    my $nslots = 0;
    for my $range (@{ rcmd($ports[0], 'CLUSTER', 'SLOTS') // [] }) {
        $nslots += $range->[1] - $range->[0] + 1 if $range->[2][1] == $gone;
    }
    # the earlier blocks moved slots and failed a primary over and back:
    # redis-cli refuses to reshard until gossip has brought every node to
    # the same view, which on a busy machine takes a while
    my $check;
    ok(wait_until(30, sub {
           $check = `redis-cli --cluster check 127.0.0.1:$ports[0] 2>&1`;
           $? == 0 && $check !~ /don't agree|\[ERR\]/ }),
       'leave: the nodes agree on the configuration')
        or diag(substr($check // '', -2000));
    my $t0 = time;
    my $out = `redis-cli --cluster reshard 127.0.0.1:$ports[0] --cluster-from $id{$gone} --cluster-to $id{$ports[0]} --cluster-slots $nslots --cluster-yes 2>&1`;
    is($? >> 8, 0, "leave: its $nslots slots resharded away")
        or diag(substr($out, -2000));
    diag(sprintf 'reshard of %d slots: %.1f s', $nslots, time - $t0);
    ok(wait_until(20, sub {
           !grep { $_->[2][1] == $gone } @{ rcmd($ports[0], 'CLUSTER', 'SLOTS') // [] } }),
       'leave: the node serves no slot');
    is(rcmd($_, 'CLUSTER', 'FORGET', $id{$gone}), 'OK',
       "leave: node $_ forgets it") for $ports[0], $rport;

    # decisions for keys of its former slots come from the others (MOVED,
    # then the map)
    my $k;
    for my $i (1 .. 1000) {
        if (owner(slot_of('open', "lv$i")) == $ports[0]) { $k = "lv$i"; last }
    }
    ok(wait_until(20, sub { from_redis($nginx->decision("/open?k=$k")) }),
       'leave: decisions come from Redis');
    $t0 = time;
    ok(wait_until(40, sub { $clients->() == 0 }),
       'leave: the workers closed their connections to it')
        or diag('clients: ' . rcmd($gone, 'CLIENT', 'LIST'));
    diag(sprintf 'leave: connections closed %.1f s after the map changed',
         time - $t0);
    like($nginx->log, qr/redis "r" at cluster: 127\.0\.0\.1:$gone serves no slot since \d+ ms: its connection is closed/,
         'leave: a notice says so (rate limit)');
    like($nginx->log, qr/redis "c" at cluster: 127\.0\.0\.1:$gone serves no slot since \d+ ms: its connection is closed/,
         'leave: and for the cache');
    unlike($nginx->log, qr/\[(?:error|alert|crit)\] [^\n]*redis "[rc]" at 127\.0\.0\.1:$gone/,
           'leave: no error about it');
    like($nginx->decision("/closed?k=lv-after"), qr/^(?:200 PASSED|429 REJECTED)$/,
         'leave: decisions go on');
}

$nginx->stop;
like($nginx->final_log, qr/gracefully shutting down|exiting/, 'nginx stopped');
unlike($nginx->final_log, qr/\[alert\]|\[crit\]|open socket/, 'no alert');
$origin->stop if $origin->can('stop');

done_testing;
