package Test::Edge;

# Helpers for the suites: talk to the fixtures' Redis and PostgreSQL, and
# stop or restart them to exercise failure paths.  The fixtures are found
# only through the environment t/fixtures.sh exports.

use strict;
use warnings;

use Exporter 'import';
use IO::Socket::INET;
use Test::Edge::Valgrind;
use Time::HiRes qw(sleep time);

our @EXPORT_OK = qw(
    redis_command redis_stop redis_start redis_restart redis_flushall
    redis_is_up redis_calls promtool_ok redis_freeze redis_thaw redis_is_frozen pg_exec pg_stop pg_start wait_until
);
our %EXPORT_TAGS = (all => \@EXPORT_OK);

sub fixtures_dir {
    my $dir = $ENV{TEST_EDGE_FIXTURES}
        or die "TEST_EDGE_FIXTURES is not set: run the suite with t/fixtures.sh\n";
    return $dir;
}

# wait_until(SECONDS, CODE): poll CODE every 50 ms until it returns true;
# returns its last value, so a caller can assert on it.  Under valgrind
# nginx is many times slower: the time allowed is SECONDS times
# $Test::Edge::Valgrind::Slowdown (what is asserted stays the same).
sub wait_until {
    my ($timeout, $code) = @_;
    my $deadline = time + $timeout * $Test::Edge::Valgrind::Slowdown;
    while (1) {
        my $v = $code->();
        return $v if $v || time >= $deadline;
        sleep 0.05;
    }
}

sub redis_connect {
    return IO::Socket::INET->new(
        PeerAddr => '127.0.0.1',
        PeerPort => $ENV{TEST_NGINX_REDIS_PORT},
        Timeout  => 2,
    );
}

sub read_reply {
    my ($sock) = @_;
    my $line = <$sock>;
    die "redis: connection closed\n" unless defined $line;
    $line =~ s/\r\n\z//;
    my ($type, $rest) = (substr($line, 0, 1), substr($line, 1));
    return $rest if $type eq '+';
    return "ERR:$rest" if $type eq '-';
    return $rest + 0 if $type eq ':';
    if ($type eq '$') {
        return undef if $rest < 0;
        my $buf = '';
        while (length($buf) < $rest + 2) {
            my $n = read($sock, $buf, $rest + 2 - length($buf), length($buf));
            die "redis: short bulk reply\n" unless $n;
        }
        return substr($buf, 0, $rest);
    }
    if ($type eq '*') {
        return undef if $rest < 0;
        return [ map { read_reply($sock) } 1 .. $rest ];
    }
    die "redis: unexpected reply line '$line'\n";
}

# redis_command('SET', 'k', 'v') sends one command, returns its decoded
# reply (errors as "ERR:<message>", arrays as array refs).
sub redis_command {
    my @args = @_;
    my $sock = redis_connect() or die "redis: cannot connect: $!\n";
    my $cmd = '*' . scalar(@args) . "\r\n";
    $cmd .= '$' . length($_) . "\r\n$_\r\n" for @args;
    print $sock $cmd;
    my $reply = read_reply($sock);
    close $sock;
    return $reply;
}

sub redis_is_up {
    my $ok = eval { redis_command('PING') };
    return defined $ok && $ok eq 'PONG';
}

# how many times Redis ran COMMAND since the last CONFIG RESETSTAT
sub redis_calls {
    my ($command) = @_;
    my ($calls) = (redis_command('INFO', 'commandstats') // '')
        =~ /cmdstat_\Q$command\E:calls=(\d+)/;
    return $calls // 0;
}

# promtool_ok(TEXT): `promtool check metrics` accepts the exposition (its
# complaint, cut to 2000 bytes, is printed as diag otherwise)
sub promtool_ok {
    my ($body) = @_;
    require File::Temp;
    my $tmp = File::Temp->new;
    print $tmp $body;
    close $tmp;
    my $out = `promtool check metrics < $tmp 2>&1`;
    return 1 if $? == 0;
    Test::More::diag("promtool check metrics:\n" . substr($out, 0, 2000));
    return 0;
}

sub redis_flushall { return redis_command('FLUSHALL') }

sub redis_stop {
    my $sock = redis_connect() or return;
    print $sock "*2\r\n\$8\r\nSHUTDOWN\r\n\$6\r\nNOSAVE\r\n";
    close $sock;
    wait_until(10, sub { !redis_connect() })
        or die "redis: still accepting connections after SHUTDOWN\n";
}

sub redis_start {
    my $conf = fixtures_dir() . '/redis.conf';
    system('redis-server', $conf) == 0 or die "redis: cannot start: $?\n";
    wait_until(10, \&redis_is_up) or die "redis: did not come back\n";
}

sub redis_restart { redis_stop(); redis_start(); }

# redis_freeze() stops the fixture's redis-server process (SIGSTOP, seen
# stopped in /proc): the kernel still accepts connections and queues
# commands, nothing answers until redis_thaw().  Unlike CLIENT PAUSE it
# ends when the test says, not after a guessed duration.
sub redis_pid {
    open my $fh, '<', fixtures_dir() . '/redis.pid' or die "redis: no pid\n";
    chomp(my $pid = <$fh> // '');
    return $pid;
}

sub redis_freeze {
    my $pid = redis_pid();
    kill 'STOP', $pid or die "redis: cannot stop $pid: $!\n";
    wait_until(10, \&redis_is_frozen) or die "redis: $pid did not stop\n";
}

sub redis_is_frozen {
    my $pid = eval { redis_pid() } or return 0;
    open my $fh, '<', "/proc/$pid/stat" or return 0;
    return ((<$fh> // '') =~ /\)\s+T/) ? 1 : 0;
}

sub redis_thaw { kill 'CONT', redis_pid() }

sub pg_exec {
    my ($sql) = @_;
    open my $fh, '-|', 'psql', $ENV{TEST_NGINX_PG_DSN}, '-qAtX',
        '-v', 'ON_ERROR_STOP=1', '-c', $sql
        or die "psql: $!\n";
    local $/;
    my $out = <$fh>;
    close $fh or die "psql failed ($?) on: $sql\n";
    $out = '' unless defined $out;
    chomp $out;
    return $out;
}

sub pg_ctl {
    my (@args) = @_;
    my ($bin) = sort glob('/usr/lib/postgresql/*/bin/pg_ctl');
    my @as = $> == 0 ? ('runuser', '-u', 'postgres', '--') : ();
    my $data = fixtures_dir() . '/pg/data';
    return system(@as, $bin, '-D', $data, '-w', @args) == 0;
}

sub pg_stop { pg_ctl('-m', 'fast', 'stop') or die "pg_ctl stop failed\n" }

sub pg_start {
    my $dir = fixtures_dir();
    my $opts = "-p $ENV{TEST_NGINX_PG_PORT} -k $dir/pg"
             . " -c listen_addresses=127.0.0.1 -c fsync=off";
    pg_ctl('-l', "$dir/pg/postgres.log", '-o', $opts, 'start')
        or die "pg_ctl start failed\n";
}

1;
