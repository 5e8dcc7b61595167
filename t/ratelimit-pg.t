# ngx_http_ratelimit_module's ratelimit_pg_map: a map (API key -> tier)
# loaded from the fixtures' real PostgreSQL into shared memory.
#
# The blocks cover what is decided without waiting for a load: PostgreSQL
# down at start, queries that fail, limits on rows, shutdown during a
# refresh, and bad configurations.  A load is asynchronous: error.log is
# checked after every request against what was logged since the previous
# check, without polling, so the lines of a load are asserted in
# single-request blocks with a "--- wait" long enough for it.  A block
# cannot wait for a load before its first request, nor act between
# requests, so the scenarios that need a loaded map or a change under a
# running nginx
# (known keys, tiers applied, two workers, one refresher at a time, changed
# rows, PostgreSQL down mid-run, reload, recovery) run after the blocks
# against an nginx this file starts itself, and poll (bounded) instead of
# sleeping.
use Test::Nginx::Socket 'no_plan';
use Test::Edge qw(:all);
use Test::Edge::Valgrind ();

use File::Spec ();
use File::Temp ();
use IO::Select ();
use IO::Socket::INET ();
use POSIX ();
use Time::HiRes ();

workers(2);
master_on();
no_shuffle();

# everything is slower under valgrind
my $Slow = $ENV{TEST_NGINX_USE_VALGRIND} ? 5 : 1;

# Checks that read debug-level lines run against an nginx built
# --with-debug only (t/fixtures.sh exports TEST_EDGE_NGINX_DEBUG).
my $No_debug = 'needs an nginx built --with-debug: reads a debug-level line';

# The port of TEST 7's fake server: --- tcp_listen is not $TEST_NGINX_*
# expanded (nor can it use $TEST_NGINX_RAND_PORT_N), so it gets this one
# through eval, and http_config through $TEST_NGINX_PG_FAKE_PORT.
$ENV{TEST_NGINX_PG_FAKE_PORT} ||= unused_port();

sub pg_is_up {
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $ENV{TEST_NGINX_PG_PORT},
                                  Timeout => 2);
    return defined $s;
}

# the table every scenario starts from: two usable rows, one NULL tier,
# one row the query filters out
sub pg_reset {
    pg_exec(<<'SQL');
SET client_min_messages = warning;
DROP TABLE IF EXISTS api_keys;
CREATE TABLE api_keys (api_key text, tier text,
                       active boolean NOT NULL DEFAULT true);
INSERT INTO api_keys VALUES ('key-premium', 'premium', true),
                            ('key-auth', 'authenticated', true),
                            ('key-null', NULL, true),
                            ('key-off', 'premium', false);
GRANT SELECT ON api_keys TO edge_pw;
SQL
}

# The fixtures trust every local connection: the role edge_pw gets a
# pg_hba.conf line of its own that wants its password (SCRAM), so that a
# wrong password is refused.  The password files of the password_file=
# blocks are in $TEST_NGINX_PG_SECRETS.
my $Password = 'f1le-s3cret';

sub pg_require_password {
    my $hba = "$ENV{TEST_EDGE_FIXTURES}/pg/data/pg_hba.conf";
    my $text = slurp($hba);
    if ($text !~ /edge_pw/) {
        open my $fh, '>', $hba or die "$hba: $!\n";
        print $fh "host all edge_pw 127.0.0.1/32 scram-sha-256\n$text";
        close $fh;
    }
    pg_exec("SET client_min_messages = warning;"
            . " DROP ROLE IF EXISTS edge_pw;"
            . " SET password_encryption = 'scram-sha-256';"
            . " CREATE ROLE edge_pw LOGIN PASSWORD '$Password';"
            . " SELECT pg_reload_conf()");
    # the reload is asynchronous: wait until a wrong password is refused
    my $dsn = "host=127.0.0.1 port=$ENV{TEST_NGINX_PG_PORT} user=edge_pw"
            . " dbname=edge_test";
    my $login = sub {
        local $ENV{PGPASSWORD} = $_[0];
        system("psql '$dsn' -qAtX -c 'SELECT 1' >/dev/null 2>&1") == 0;
    };
    wait_until(10, sub { !$login->('wr0ng-s3cret') })
        or die "pg_hba.conf: a wrong password is still accepted\n";
    $login->($Password) or die "edge_pw cannot log in with its password\n";
}

$ENV{TEST_NGINX_PG_SECRETS} = File::Temp::tempdir(
    'pg-secrets.XXXXXX', DIR => $ENV{TEST_EDGE_FIXTURES} // File::Spec->tmpdir,
    CLEANUP => 1);
for (['good', "$Password\n"], ['wrong', "wr0ng-s3cret\n"],
     ['empty', "\n"], ['crlf', "$Password\r\n"])
{
    open my $fh, '>', "$ENV{TEST_NGINX_PG_SECRETS}/$_->[0]" or die "$!\n";
    print $fh $_->[1];
    close $fh;
}

pg_start() unless pg_is_up();
pg_require_password();

# Every block starts from a running PostgreSQL and a fresh table; "--- sql"
# adds to it, "--- pg: down" stops PostgreSQL for the block (the next
# block starts it again).  Blocks run with a master and two workers, or
# as a single process with "--- single_process".
add_block_preprocessor(sub {
    my $block = shift;
    if (defined $block->single_process) {
        master_off();
        workers(1);
    } else {
        master_on();
        workers(2);
    }
    pg_start() unless pg_is_up();
    pg_reset();
    pg_exec($block->sql) if defined $block->sql;
    pg_stop() if ($block->pg // '') =~ /down/;
});

my $Live;   # the nginx live_scenarios() starts, stopped at exit in any case

END { live_stop($Live) if $Live && $Live->{pid} }

run_tests();

live_scenarios();
live_failed_reload();
live_large_map();
live_reload_in_flight();
live_password();


# ---------------------------------------------------------------------------
# A loaded map under a running nginx: a small self-contained launcher
# ---------------------------------------------------------------------------

sub free_port {
    my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                  Listen => 1)
        or die "cannot find a free port: $!\n";
    return $s->sockport;
}

# A free port below the kernel's ephemeral range: it stays unused until a
# later block listens on it, as no outgoing connection can pick it.
sub unused_port {
    my ($low) = slurp('/proc/sys/net/ipv4/ip_local_port_range')
                =~ /^\s*(\d+)/;
    $low = 32768 unless $low && $low > 12000;
    for (1 .. 1000) {
        my $port = 10000 + int rand($low - 10000);
        my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
                                      LocalPort => $port, Listen => 1,
                                      ReuseAddr => 1)
            or next;
        return $port;
    }
    return free_port();
}

sub slurp {
    my ($path) = @_;
    open my $fh, '<', $path or return '';
    local $/;
    my $data = <$fh>;
    return $data // '';
}

# live_start(workers => N, http => TEXT, server => TEXT): nginx in the
# foreground (our child), master and N workers, error log at debug level.
sub live_start {
    my (%a) = @_;
    my $base = $ENV{TEST_EDGE_FIXTURES} // File::Spec->tmpdir;
    my $dir = File::Temp::tempdir('pg-live.XXXXXX', DIR => $base,
                                  CLEANUP => 1);
    my @temps = qw(client_body proxy fastcgi uwsgi scgi);
    mkdir "$dir/$_" for qw(conf logs), map { "${_}_temp" } @temps;
    my $port = free_port();

    my $conf = join '', map { "load_module $_;\n" }
                        split ' ', $ENV{TEST_NGINX_LOAD_MODULES} // '';
    $conf .= "user root;\n" if $> == 0;
    my $temps = join '', map { "    ${_}_temp_path $dir/${_}_temp;\n" } @temps;
    $conf .= <<"_EOC_";
worker_processes $a{workers};
master_process on;
daemon off;
error_log $dir/logs/error.log debug;
pid $dir/logs/nginx.pid;

events {
    worker_connections 64;
    accept_mutex off;
}

http {
    access_log off;
    default_type text/plain;
$temps
$a{http}

    server {
        # one socket per worker: the kernel spreads connections over both
        listen 127.0.0.1:$port reuseport;

$a{server}
    }
}
_EOC_
    open my $fh, '>', "$dir/conf/nginx.conf" or die "$dir: $!\n";
    print $fh $conf;
    close $fh;

    my @cmd = ($ENV{TEST_NGINX_BINARY} || '/usr/sbin/nginx',
               '-p', "$dir/", '-c', 'conf/nginx.conf');
    unshift @cmd, Test::Edge::Valgrind::command("$dir/logs", $cmd[0])
        if $Test::Edge::Valgrind::Enabled;

    my $pid = fork;
    die "fork: $!\n" unless defined $pid;
    if (!$pid) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', "$dir/logs/stderr.log";
        open STDERR, '>&', \*STDOUT;
        { exec { $cmd[0] } @cmd }
        POSIX::_exit(127);
    }

    my $n = { dir => $dir, port => $port, pid => $pid,
              log => "$dir/logs/error.log", conf => $conf,
              conf_file => "$dir/conf/nginx.conf" };
    # the master writes its pid file once the sockets are bound
    my $up = wait_until(10 * $Slow, sub {
        waitpid($pid, POSIX::WNOHANG()) == 0
            && slurp("$dir/logs/nginx.pid") =~ /^$pid\b/
    });
    if (!$up) {
        diag(slurp("$dir/logs/stderr.log") . slurp($n->{log}));
        live_stop($n);
        return undef;
    }
    return $n;
}

# QUIT, and wait (bounded) for a graceful exit; true if it was graceful
sub live_stop {
    my ($n) = @_;
    my $pid = delete $n->{pid} or return 0;
    kill 'QUIT', $pid;
    my $gone = wait_until(10 * $Slow,
                          sub { waitpid($pid, POSIX::WNOHANG()) == $pid });
    return 1 if $gone && $? == 0;
    kill 'KILL', $pid;
    waitpid $pid, 0;
    return 0;
}

sub live_log { slurp($_[0]{log}) }

# one GET on a new connection: { status, headers (lower case), body }
sub live_get {
    my ($n, $uri) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $n->{port},
                                  Timeout => 5 * $Slow)
        or return undef;
    print $s "GET $uri HTTP/1.0\r\nHost: localhost\r\n\r\n";
    my ($raw, $sel) = ('', IO::Select->new($s));
    my $deadline = Time::HiRes::time() + 5 * $Slow;
    while (Time::HiRes::time() < $deadline
           && $sel->can_read($deadline - Time::HiRes::time()))
    {
        last unless sysread $s, $raw, 65536, length $raw;
    }
    close $s;
    my ($head, $body) = split /\r\n\r\n/, $raw, 2;
    my ($status, @lines) = split /\r\n/, $head // '';
    my ($code) = ($status // '') =~ m{^HTTP/\S+ (\d+)} or return undef;
    my %h = map { /^([^:]+):\s*(.*)$/ ? (lc $1 => $2) : () } @lines;
    return { status => $code, headers => \%h, body => $body // '' };
}

sub count_lines {
    my ($text, $re) = @_;
    return scalar grep { $_ =~ $re } split /\n/, $text;
}

# How many backends run QUERY now (those started after SINCE, a timestamp
# of PostgreSQL's, when given): a refresh in flight seen from the server,
# on any nginx (the client's "connected" line is debug-level).
sub pg_running {
    my ($query, $since) = @_;
    (my $q = $query) =~ s/'/''/g;
    my $sql = "SELECT count(*) FROM pg_stat_activity"
            . " WHERE state = 'active' AND query = '$q'";
    $sql .= " AND query_start > '$since'" if defined $since;
    return pg_exec($sql);
}

# valgrind's memory errors with one of our frames on the stack
sub live_valgrind_errors {
    my ($n) = @_;
    my ($fatal) = Test::Edge::Valgrind::records("$n->{dir}/logs");
    return @$fatal;
}

sub live_scenarios {
    pg_start() unless pg_is_up();
    pg_reset();

    my $refresh = 200;   # ms
    $Live = live_start(workers => 2, http => <<"_HTTP_", server => <<'_SRV_');
    ratelimit_pg_map \$arg_k \$api_tier
        "dsn=$ENV{TEST_NGINX_PG_DSN} password=s3cr3t"
        "query=SELECT api_key, tier FROM api_keys WHERE active"
        refresh=${refresh}ms timeout=2s default=public zone=api_tiers:1m;

    ratelimit_zone \$arg_k zone=api:1m rate=1r/m tier=\$api_tier;
    # slow rates: no token comes back while a test sends its requests,
    # even under valgrind; the tiers differ by their burst
    ratelimit_tier zone=api tier=authenticated rate=2r/m burst=1;
    ratelimit_tier zone=api tier=premium rate=6r/m burst=3;
_HTTP_
        location = /ok { return 200 "ok\n"; }

        location = /tier {
            add_header X-Pid $pid always;
            return 200 "$api_tier\n";
        }

        # "return" runs before the limit (preaccess): proxy to /ok
        location = /rl {
            ratelimit zone=api nodelay;
            add_header X-Tier $api_tier always;
            proxy_pass http://127.0.0.1:$server_port/ok;
        }
_SRV_

    ok($Live, 'live: nginx with two workers started') or return;
    my $n = $Live;

    my $get = sub { live_get($n, $_[0]) };
    my $tier = sub {
        my $r = live_get($n, "/tier?k=$_[0]");
        return $r ? $r->{body} =~ s/\n\z//r : '(no response)';
    };
    my $codes = sub {
        my ($key, $times) = @_;
        join ' ', map { my $r = $get->("/rl?k=$key"); $r ? $r->{status} : '-' }
                  1 .. $times;
    };

    # loaded as soon as the workers run
    ok(wait_until(10 * $Slow, sub { $tier->('key-premium') eq 'premium' }),
       'live: the map is loaded at startup');
    is($tier->('key-auth'), 'authenticated', 'live: a known key maps');
    is($tier->('no-such-key'), 'public', 'live: an unknown key is the default');
    is($tier->(''), 'public', 'live: an empty key is the default');
    is($tier->('key-null'), 'public', 'live: a row with NULL is skipped');
    is($tier->('key-off'), 'public',
       'live: a row the query filters out is not in the map');
    like(live_log($n),
         qr/\[info\] .*ratelimit_pg_map "\$api_tier": loaded 2 rows from 127\.0\.0\.1:\d+ in \d+ms \(3 returned, 1 with NULL/,
         'live: an info line with the row count per load');

    # both workers read the one copy in shared memory
    my (%pids, @wrong);
    for (1 .. 40) {
        my $r = $get->('/tier?k=key-premium');
        if (!$r || $r->{body} ne "premium\n") {
            push @wrong, $r ? $r->{body} : 'no response';
            next;
        }
        $pids{$r->{headers}{'x-pid'} // '?'}++;
    }
    is("@wrong", '', 'live: every answer maps the key');
    is(scalar(keys %pids), 2, 'live: ... and both workers answered')
        or diag(join ', ', map { "$_: $pids{$_}" } sort keys %pids);

    # one refresher: loads are at least one interval apart, even with two
    # workers polling the lease
    my $loaded = qr/ratelimit_pg_map "\$api_tier": loaded /;
    my $first = count_lines(live_log($n), $loaded);
    my $t0 = Time::HiRes::time();
    ok(wait_until(10 * $Slow,
                  sub { count_lines(live_log($n), $loaded) >= $first + 5 }),
       'live: the map is refreshed periodically');
    my $elapsed = (Time::HiRes::time() - $t0) * 1000;
    cmp_ok($elapsed, '>=', 4 * $refresh * 0.9,
           'live: one load per interval, not one per worker');

    # the tier from the database picks the limit
    is($codes->('public-1', 2), '200 429',
       'live: an unknown key is limited as public (1r/m, no burst)');
    is($codes->('key-auth', 3), '200 200 429',
       'live: authenticated (burst=1) gets 2 back-to-back requests');
    is($codes->('key-premium', 5), '200 200 200 200 429',
       'live: premium (burst=3) gets 4 back-to-back requests');
    my $r = $get->('/rl?k=key-premium');
    is($r && $r->{headers}{'x-tier'}, 'premium',
       'live: the limited location sees the tier too');

    # changed and new rows show up after a refresh
    pg_exec("UPDATE api_keys SET tier = 'authenticated'"
            . " WHERE api_key = 'key-premium';"
            . " INSERT INTO api_keys VALUES ('key-new', 'premium', true)");
    ok(wait_until(10 * $Slow, sub {
           $tier->('key-premium') eq 'authenticated'
               && $tier->('key-new') eq 'premium'
       }), 'live: a refresh picks up changed and new rows');

    # PostgreSQL down: the last good copy keeps serving, one line logged
    pg_stop();
    my $failed = qr/\[error\] .*ratelimit_pg_map "\$api_tier": loading from 127\.0\.0\.1:\d+ failed: .*; serving the last good copy \(3 rows\)/;
    ok(wait_until(10 * $Slow, sub { live_log($n) =~ $failed }),
       'live: PostgreSQL down: the failure is logged, with the address');
    SKIP: {
        skip("live: ... and retried: $No_debug", 1)
            unless $ENV{TEST_EDGE_NGINX_DEBUG};
        ok(wait_until(10 * $Slow, sub {
               live_log($n) =~ /"\$api_tier": failure 3 in a row/
           }), 'live: ... and retried');
    }
    is(count_lines(live_log($n), qr/\[error\] .*"\$api_tier": loading from/),
       1, 'live: ... with one error line for all the failed attempts');
    my @answers = map { $tier->('key-new') . '/' . $tier->('key-premium') }
                  1 .. 20;
    is_deeply([grep { $_ ne 'premium/authenticated' } @answers], [],
              'live: ... while the last good copy serves in every worker');

    # a reload keeps the zone: the new workers serve the copy at once
    my %old = %pids;
    kill 'HUP', $n->{pid};
    my $new;
    ok(wait_until(10 * $Slow, sub {
           my $x = $get->('/tier?k=key-new');
           $new = $x if $x && !$old{$x->{headers}{'x-pid'} // ''};
           return $new;
       }), 'live: reload with PostgreSQL still down');
    is($new && $new->{body}, "premium\n",
       'live: ... the new workers serve the copy kept in the zone');

    # PostgreSQL back: loading recovers without a reload
    pg_start();
    pg_exec("UPDATE api_keys SET tier = 'premium' WHERE api_key = 'key-auth'");
    ok(wait_until(10 * $Slow, sub { $tier->('key-auth') eq 'premium' }),
       'live: PostgreSQL back: loading recovers by itself');
    like(live_log($n),
         qr/\[notice\] .*ratelimit_pg_map "\$api_tier": loading from 127\.0\.0\.1:\d+ works again after \d+ failed attempts/,
         'live: ... with a notice');

    ok(live_stop($n), 'live: nginx stops gracefully');
    my $log = live_log($n);
    is(count_lines($log, qr/\[(?:alert|crit|emerg)\]/), 0,
       'live: no alert (no socket left open), crit or emerg');
    is(count_lines($log, qr/exited on signal/), 0, 'live: no worker crashed');
    is(count_lines($log, qr/s3cr3t/), 0, 'live: the password is never logged');
    is(join("\n", live_valgrind_errors($n)), '',
       'live: valgrind found no memory error in our code')
        if $ENV{TEST_NGINX_USE_VALGRIND};

    # A query slower than the interval: the other worker polls the lease
    # every 100ms meanwhile, and must not start a second refresh.
    $Live = live_start(workers => 2, http => <<"_HTTP_", server => <<'_SRV_');
    ratelimit_pg_map \$arg_k \$api_tier
        "dsn=$ENV{TEST_NGINX_PG_DSN}"
        "query=SELECT 'k', 'v' FROM pg_sleep(0.3)"
        refresh=100ms timeout=${\ (5 * $Slow)}s;
_HTTP_
        location = /tier { return 200 "$api_tier\n"; }
_SRV_
    ok($Live, 'lease: nginx with two workers started') or return;
    $n = $Live;

    # (under valgrind a first attempt can time out, logged as a failure)
    my $steps = qr/"\$api_tier": (refreshing) from|"\$api_tier": (loaded) 1 rows|"\$api_tier": loading from \S+ (failed)/;
    ok(wait_until(10 * $Slow, sub {
           count_lines(live_log($n), qr/"\$api_tier": loaded 1 rows/) >= 3
       }), 'lease: a query slower than refresh= still loads');
    ok(live_stop($n), 'lease: nginx stops gracefully');
    SKIP: {
        # "refreshing from" is a debug line
        skip("lease: one refresh at a time across the workers: $No_debug", 1)
            unless $ENV{TEST_EDGE_NGINX_DEBUG};
        my @steps = map { /$steps/ ? ($1 // $2) : () }
                    split /\n/, live_log($n);
        my $seq = join ' ', @steps;
        like($seq, qr/\Arefreshing (?:loaded|failed)(?: refreshing (?:loaded|failed))*(?: refreshing)?\z/,
             'lease: one refresh at a time across the workers');
    }
    is(join("\n", live_valgrind_errors($n)), '',
       'lease: valgrind found no memory error in our code')
        if $ENV{TEST_NGINX_USE_VALGRIND};
}

# the answer of /tier?k=KEY, or '(no response)'
sub live_tier {
    my ($n, $key) = @_;
    my $r = live_get($n, "/tier?k=$key");
    return $r ? $r->{body} =~ s/\n\z//r : '(no response)';
}

# what was logged since a given length of the log
sub live_log_since { substr(live_log($_[0]), $_[1]) }

sub live_common_checks {
    my ($n, $what) = @_;
    my $log = live_log($n);
    is(count_lines($log, qr/\[(?:alert|crit)\]|open socket/), 0,
       "$what: no alert, no crit, no socket left open");
    is(count_lines($log, qr/exited on signal/), 0, "$what: no worker crashed");
    is(join("\n", live_valgrind_errors($n)), '',
       "$what: valgrind found no memory error in our code")
        if $ENV{TEST_NGINX_USE_VALGRIND};
}


# Issue 8, item 4: a reload that nginx rejects after the zones were
# initialized (a "listen" on a port the test holds: nginx opens the
# listening sockets after the shared zones) must leave the refresh with the
# workers that still run.
sub live_failed_reload {
    pg_start() unless pg_is_up();
    pg_reset();

    my $n = $Live = live_start(workers => 2,
                               http => <<"_HTTP_", server => <<'_SRV_');
    ratelimit_pg_map \$arg_k \$api_tier
        "dsn=$ENV{TEST_NGINX_PG_DSN}"
        "query=SELECT api_key, tier FROM api_keys WHERE active"
        refresh=200ms timeout=${\ (2 * $Slow)}s default=public;
_HTTP_
        location = /tier {
            add_header X-Pid $pid always;
            return 200 "$api_tier\n";
        }
_SRV_
    ok($n, 'failed reload: nginx with two workers started') or return;

    pg_exec("UPDATE api_keys SET tier = 'gold' WHERE api_key = 'key-premium'");
    ok(wait_until(10 * $Slow, sub { live_tier($n, 'key-premium') eq 'gold' }),
       'failed reload: the map refreshes before the reload');

    my %pids;
    for (1 .. 20) {
        my $r = live_get($n, '/tier?k=key-premium');
        $pids{$r->{headers}{'x-pid'}} = 1 if $r && $r->{headers}{'x-pid'};
    }

    # the port is held by the test for as long as the reload takes
    my $busy = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                     Listen => 1)
        or die "cannot listen: $!\n";
    my $port = $busy->sockport;
    my $conf = $n->{conf};
    $conf =~ s/\n}\n\z/\n    server { listen 127.0.0.1:$port; }\n}\n/
        or die "cannot add a server to the configuration\n";
    open my $fh, '>', $n->{conf_file} or die "$!\n";
    print $fh $conf;
    close $fh;

    kill 'HUP', $n->{pid};
    ok(wait_until(15 * $Slow, sub {
           live_log($n) =~ /\[emerg\] .*still could not bind\(\)/
       }), 'failed reload: the reload fails (the port is busy)');
    close $busy;

    # the old workers are still the ones that answer, and still refresh
    pg_exec("UPDATE api_keys SET tier = 'platinum'"
            . " WHERE api_key = 'key-premium'");
    ok(wait_until(10 * $Slow,
                  sub { live_tier($n, 'key-premium') eq 'platinum' }),
       'failed reload: the workers that run still refresh the map')
        or diag(join "\n", grep { /ratelimit_pg_map|emerg/ }
                           split /\n/, live_log($n));
    my @other;
    for (1 .. 20) {
        my $r = live_get($n, '/tier?k=key-premium');
        push @other, $r ? $r->{headers}{'x-pid'} // '?' : 'none'
            unless $r && $pids{$r->{headers}{'x-pid'} // ''};
    }
    is("@other", '', 'failed reload: ... and they are the workers of before');

    # a reload that works after all: the new workers take the refresh over
    open $fh, '>', $n->{conf_file} or die "$!\n";
    print $fh $n->{conf};
    close $fh;
    kill 'HUP', $n->{pid};
    my $new;
    ok(wait_until(10 * $Slow, sub {
           my $r = live_get($n, '/tier?k=key-premium');
           $new = $r if $r && !$pids{$r->{headers}{'x-pid'} // ''};
           return $new;
       }), 'failed reload: a good reload next starts new workers');
    pg_exec("UPDATE api_keys SET tier = 'iridium'"
            . " WHERE api_key = 'key-premium'");
    ok(wait_until(10 * $Slow,
                  sub { live_tier($n, 'key-premium') eq 'iridium' }),
       'failed reload: ... which refresh the map');

    ok(live_stop($n), 'failed reload: nginx stops gracefully');
    live_common_checks($n, 'failed reload');
}


# Issue 8, item 12: a map of 200,000 rows is installed in bounded pieces
# (at most 1024 rows per pass of the event loop, each under the zone's
# lock); every lookup meanwhile answers from the old copy or the new one.
sub live_large_map {
    pg_start() unless pg_is_up();
    my $rows = 200000;
    my $per_pass = 1024;
    pg_exec("SET client_min_messages = warning; DROP TABLE IF EXISTS big;"
            . " CREATE TABLE big (k text, v text);"
            . " INSERT INTO big SELECT 'k' || g, 'old'"
            . " FROM generate_series(1, $rows) g");

    my $n = $Live = live_start(workers => 2,
                               http => <<"_HTTP_", server => <<'_SRV_');
    ratelimit_pg_map \$arg_k \$api_tier
        "dsn=$ENV{TEST_NGINX_PG_DSN}" "query=SELECT k, v FROM big"
        refresh=1s timeout=${\ (10 * $Slow)}s default=none zone=big:32m;
_HTTP_
        location = /tier { return 200 "$api_tier\n"; }
_SRV_
    ok($n, 'large map: nginx started') or return;

    ok(wait_until(30 * $Slow, sub {
           live_tier($n, 'k1') eq 'old' && live_tier($n, "k$rows") eq 'old'
       }), "large map: $rows rows loaded");
    like(live_log($n), qr/"\$api_tier": loaded $rows rows/,
         'large map: ... all of them');

    my $mark = length live_log($n);
    pg_exec("UPDATE big SET v = 'new'");

    # the log read as it grows: is an install under way?
    open my $lf, '<', $n->{log} or die "$n->{log}: $!\n";
    seek $lf, $mark, 0;
    my ($installing, $overlapped) = (0, 0);
    my $follow = sub {
        seek $lf, 0, 1;
        while (my $line = <$lf>) {
            $installing = 1 if $line =~ /"\$api_tier": install pass 1:/;
            $installing = 0 if $line =~ /"\$api_tier": installed in/;
        }
    };

    # look up keys all the time until the new copy serves them all
    my (%seen, @wrong, $done);
    my $deadline = Time::HiRes::time() + 30 * $Slow;
    my $i = 0;
    while (Time::HiRes::time() < $deadline) {
        my $k = 1 + ($i++ * 7919) % $rows;
        $follow->();
        my $before = $installing;
        my $v = live_tier($n, "k$k");
        $follow->();
        $overlapped++ if $before && $installing;
        $seen{$v}++;
        push @wrong, "k$k=$v" unless $v eq 'old' || $v eq 'new';
        if ($v eq 'new'
            && !grep { live_tier($n, "k$_") ne 'new' } 1, 77777, $rows)
        {
            $done = 1;
            last;
        }
    }
    close $lf;
    ok($done, 'large map: the changed rows are served after a refresh');
    is(join(' ', @wrong[0 .. ($#wrong < 9 ? $#wrong : 9)]), '',
       'large map: every lookup during the installs found the key');
    diag('large map: answers seen: '
         . join(', ', map { "$_: $seen{$_}" } sort keys %seen)
         . ($ENV{TEST_EDGE_NGINX_DEBUG}
            ? "; $overlapped lookups answered while an install was under way"
            : ''));

    # the pieces of the installs since the change
    my $log = live_log_since($n, $mark);
    my @pieces = $log =~ /"\$api_tier": install pass \d+: (\d+) rows, lock held (\d+) us/g;
    my (@rows, @usec);
    while (@pieces) { push @rows, shift @pieces; push @usec, shift @pieces }
    my ($max_rows) = sort { $b <=> $a } @rows;
    my @sorted = sort { $a <=> $b } @usec;
    # the info line of a load: every nginx logs it
    my ($passes, $lock_max) = $log =~ /\[info\] .*"\$api_tier": loaded $rows rows .*, installed in (\d+) passes, the lock held (\d+) us at most/;
    cmp_ok($passes // 0, '>=', int($rows / $per_pass) + 1,
           'large map: the info line of the load says how many passes it took');
    diag("large map: the lock held $lock_max us at most, says the info line")
        if defined $lock_max;
    SKIP: {
        # one debug line per pass
        skip("large map: the rows per pass: $No_debug", 2)
            unless $ENV{TEST_EDGE_NGINX_DEBUG};
        cmp_ok(scalar @rows, '>=', int($rows / $per_pass) + 1,
               'large map: the install took many passes of the event loop');
        cmp_ok($max_rows // 1e9, '<=', $per_pass,
               "large map: at most $per_pass rows installed per pass");
    }
    diag("large map: $rows rows, " . scalar(@rows) . " passes under the"
         . " lock since the change; lock held per pass: median"
         . " $sorted[@sorted / 2] us, longest $sorted[-1] us")
        if @sorted;

    ok(live_stop($n), 'large map: nginx stops gracefully');
    live_common_checks($n, 'large map');
    pg_exec('DROP TABLE big');
}


# A reload while a refresh query is in flight (pg_sleep): the old worker
# drops its query and exits, closing the connection; nothing waits, no
# socket is left, nothing crashes.  (No request ever waits for PostgreSQL:
# the variable only reads the zone.)
sub live_reload_in_flight {
    pg_start() unless pg_is_up();
    pg_reset();

    my $query = 'SELECT api_key, tier FROM api_keys, pg_sleep(3)';
    my $n = $Live = live_start(workers => 1,
                               http => <<"_HTTP_", server => <<'_SRV_');
    ratelimit_pg_map \$arg_k \$api_tier
        "dsn=$ENV{TEST_NGINX_PG_DSN}"
        "query=$query"
        refresh=100ms timeout=30s default=public;
_HTTP_
        location = /tier {
            add_header X-Pid $pid always;
            return 200 "$api_tier\n";
        }
_SRV_
    ok($n, 'reload in flight: nginx started') or return;
    ok(wait_until(10 * $Slow, sub { pg_running($query) >= 1 }),
       'reload in flight: a refresh query runs');
    my $old = live_get($n, '/tier?k=key-premium');
    my $old_pid = $old && $old->{headers}{'x-pid'};
    ok($old_pid, 'reload in flight: the worker answers meanwhile');

    my $t0 = Time::HiRes::time();
    kill 'HUP', $n->{pid};
    ok(wait_until(10 * $Slow, sub {
           live_log($n) =~ /worker process $old_pid exited with code 0/
       }), 'reload in flight: the old worker exits');
    my $took = Time::HiRes::time() - $t0;
    cmp_ok($took, '<', 2.5 * $Slow,
           'reload in flight: ... without waiting for the query (3s)');
    ok(wait_until(15 * $Slow,
                  sub { live_tier($n, 'key-premium') eq 'premium' }),
       'reload in flight: the new worker loads the map');

    # and a shutdown with a query in flight: one started after that load
    # (the old worker's backend may still be sleeping)
    my $since = pg_exec('SELECT now()');
    ok(wait_until(10 * $Slow, sub { pg_running($query, $since) >= 1 }),
       'reload in flight: the next query runs');
    ok(live_stop($n), 'reload in flight: nginx stops gracefully meanwhile');
    live_common_checks($n, 'reload in flight');
}


# password_file= against a role that needs its password, and no password
# in the output of nginx -t for a malformed connection string
sub live_password {
    my $dir = File::Temp::tempdir('pg-t.XXXXXX',
                                  DIR => $ENV{TEST_NGINX_PG_SECRETS},
                                  CLEANUP => 1);
    mkdir "$dir/$_" for qw(conf logs);
    my $nginx_t = sub {
        my ($args) = @_;
        my $conf = join '', map { "load_module $_;\n" }
                            split ' ', $ENV{TEST_NGINX_LOAD_MODULES} // '';
        $conf .= "error_log $dir/logs/error.log;\npid $dir/logs/nginx.pid;\n"
               . "events {}\nhttp {\n    ratelimit_pg_map \$arg_k \$t"
               . " $args \"query=SELECT 1, 2\";\n}\n";
        open my $fh, '>', "$dir/conf/nginx.conf" or die "$!\n";
        print $fh $conf;
        close $fh;
        my $bin = $ENV{EDGE_NGINX} || '/usr/sbin/nginx';
        my $out = `$bin -t -p $dir/ -c conf/nginx.conf 2>&1`;
        return ($? == 0, $out);
    };

    for my $case (
        ['"dsn=postgresql://edge:s3cr3t@[::1"',
         qr/invalid "dsn" parameter: .*"postgresql:\/\/edge:\*\*\*\@\[::1"/,
         'a URI with a password'],
        ['"dsn=host=127.0.0.1 passwords3cr3t"',
         qr/invalid "dsn" parameter: missing "=" after "password\*\*\*"/,
         'a keyword without its "="'],
        ['"dsn=postgresql://edge:s3cr3t@h/db?password=s3cr3t&x=%zz"',
         qr/invalid "dsn" parameter: invalid percent-encoded token/,
         'a URI with a password parameter'],
        ['"dns=host=127.0.0.1 password=\'s3 cr3t\'"',
         qr/invalid parameter "dns=host=127\.0\.0\.1 password=\*\*\*"/,
         'a misspelt dsn='])
    {
        my ($args, $want, $what) = @$case;
        my ($ok, $out) = $nginx_t->($args);
        ok(!$ok, "nginx -t: $what: fails");
        like($out, $want, "nginx -t: $what: says why");
        unlike($out, qr/s3cr3t|s3 cr3t/, "nginx -t: $what: no password")
            or diag($out);
    }

    my ($ok, $out) = $nginx_t->(
        "\"dsn=$ENV{TEST_NGINX_PG_DSN}\""
        . " password_file=$ENV{TEST_NGINX_PG_SECRETS}/crlf");
    ok($ok, 'nginx -t: password_file= with a CRLF line end is accepted')
        or diag($out);
    unlike($out, qr/\Q$Password\E/, 'nginx -t: ... and not shown');
}

__DATA__

=== TEST 1: PostgreSQL down at start: every key gets the default
--- pg: down
--- http_config
    ratelimit_pg_map $arg_k $api_tier
        "dsn=$TEST_NGINX_PG_DSN password=s3cr3t"
        "query=SELECT api_key, tier FROM api_keys WHERE active"
        refresh=100ms default=public zone=api_tiers:1m;
--- config
    location = /t { return 200 "[$api_tier]\n"; }
--- request eval
["GET /t?k=key-premium", "GET /t?k=no-such-key", "GET /t"]
--- response_body eval
["[public]\n", "[public]\n", "[public]\n"]
--- no_error_log
s3cr3t
[alert]
[crit]



=== TEST 1b: PostgreSQL down at start: one error line for the failed attempts
--- pg: down
--- http_config
    ratelimit_pg_map $arg_k $api_tier
        "dsn=$TEST_NGINX_PG_DSN password=s3cr3t"
        "query=SELECT api_key, tier FROM api_keys WHERE active"
        refresh=100ms default=public zone=api_tiers:1m;
--- config
    location = /t { return 200 "[$api_tier]\n"; }
--- request
GET /t?k=key-premium
--- response_body
[public]
--- wait: 0.5
--- error_log eval
qr/\[error\] .*ratelimit_pg_map "\$api_tier": loading from 127\.0\.0\.1:\d+ failed: .*Connection refused.*; nothing loaded yet, the variable is the default/
--- grep_error_log eval
qr/ratelimit_pg_map "\$api_tier": loading from/
--- grep_error_log_out
ratelimit_pg_map "$api_tier": loading from
--- no_error_log
s3cr3t
[alert]
[crit]
--- shutdown_error_log
gracefully shutting down
--- no_shutdown_error_log
[alert]



=== TEST 1c: PostgreSQL down at start: every failed attempt is retried
# (the line of each attempt is debug-level: the error line above is one per
# interval, whatever the number of attempts)
--- skip_eval: 5: !$ENV{TEST_EDGE_NGINX_DEBUG} # needs an nginx built --with-debug: reads the debug line "failure N in a row"
--- pg: down
--- http_config
    ratelimit_pg_map $arg_k $api_tier
        "dsn=$TEST_NGINX_PG_DSN"
        "query=SELECT api_key, tier FROM api_keys WHERE active"
        refresh=100ms default=public zone=api_tiers:1m;
--- config
    location = /t { return 200 "[$api_tier]\n"; }
--- request
GET /t?k=key-premium
--- response_body
[public]
--- wait: 0.5
--- error_log eval
qr/ratelimit_pg_map "\$api_tier": failure 3 in a row: "[^"]*Connection refused/
--- no_error_log
[alert]
[crit]



=== TEST 2: single process; without default=, unknown and empty keys map to an empty value
--- single_process
--- http_config
    ratelimit_pg_map $arg_k $api_tier
        "dsn=$TEST_NGINX_PG_DSN"
        "query=SELECT api_key, tier FROM api_keys WHERE active";
--- config
    location = /t { return 200 "[$api_tier]\n"; }
--- request eval
["GET /t?k=no-such-key", "GET /t"]
--- response_body eval
["[]\n", "[]\n"]
--- no_error_log
[error]
[alert]
[crit]



=== TEST 2b: single process: the map is loaded
--- single_process
--- http_config
    ratelimit_pg_map $arg_k $api_tier
        "dsn=$TEST_NGINX_PG_DSN"
        "query=SELECT api_key, tier FROM api_keys WHERE active";
--- config
    location = /t { return 200 "[$api_tier]\n"; }
--- request
GET /t?k=no-such-key
--- response_body
[]
--- wait: 0.5
--- error_log eval
qr/\[info\] .*ratelimit_pg_map "\$api_tier": loaded 2 rows/
--- no_error_log
[error]
[alert]
[crit]



=== TEST 3: a query that does not return 2 columns is a failed load, not a crash
--- http_config
    ratelimit_pg_map $arg_k $api_tier
        "dsn=$TEST_NGINX_PG_DSN"
        "query=SELECT api_key, tier, active FROM api_keys"
        refresh=100ms default=public;
--- config
    location = /t { return 200 "[$api_tier]\n"; }
--- request
GET /t?k=key-premium
--- response_body
[public]
--- wait: 0.5
--- error_log eval
qr/\[error\] .*ratelimit_pg_map "\$api_tier": loading from 127\.0\.0\.1:\d+ failed: the query returned 3 columns, not 2 \(key, value\); nothing loaded yet/
--- no_error_log
[alert]
[crit]



=== TEST 4: an SQL error is logged with PostgreSQL's message
--- http_config
    ratelimit_pg_map $arg_k $api_tier
        "dsn=$TEST_NGINX_PG_DSN"
        "query=SELECT api_key, tier FROM no_such_table"
        refresh=100ms default=public;
--- config
    location = /t { return 200 "[$api_tier]\n"; }
--- request
GET /t?k=key-premium
--- response_body
[public]
--- wait: 0.5
--- error_log eval
qr/\[error\] .*ratelimit_pg_map "\$api_tier": loading from 127\.0\.0\.1:\d+ failed: ERROR: relation "no_such_table" does not exist/
--- no_error_log
[alert]
[crit]



=== TEST 5: over-long keys and values are skipped, rows beyond the zone are dropped, with warnings
--- sql
INSERT INTO api_keys SELECT 'bulk-' || g, 'premium', true
    FROM generate_series(1, 20000) g;
INSERT INTO api_keys VALUES (repeat('k', 256), 'premium', true),
                            ('key-long-value', repeat('v', 256), true);
--- http_config
    ratelimit_pg_map $arg_k $api_tier
        "dsn=$TEST_NGINX_PG_DSN"
        "query=SELECT api_key, tier FROM api_keys WHERE active"
        default=public zone=small:32k;
--- config
    location = /t { return 200 "[$api_tier]\n"; }
--- request
GET /t?k=no-such-key
--- response_body
[public]
--- wait: 1
--- error_log eval
[qr/\[warn\] .*ratelimit_pg_map "\$api_tier": 2 rows skipped, their key or value is longer than 255 bytes/,
 qr/\[warn\] .*ratelimit_pg_map "\$api_tier": \d+ rows dropped, zone "small" is full/,
 qr/\[info\] .*ratelimit_pg_map "\$api_tier": loaded \d+ rows from/]
--- no_error_log
[error]
[alert]
[crit]



=== TEST 6: empty keys and duplicate keys: counted, the first row wins
--- sql
INSERT INTO api_keys VALUES ('', 'premium', true),
                            ('key-auth', 'premium', true);
--- http_config
    ratelimit_pg_map $arg_k $api_tier
        "dsn=$TEST_NGINX_PG_DSN"
        "query=SELECT api_key, tier FROM api_keys WHERE active ORDER BY tier"
        default=public;
--- config
    location = /t { return 200 "[$api_tier]\n"; }
--- request
GET /t
--- response_body
[public]
--- wait: 0.5
--- error_log eval
qr/\[info\] .*ratelimit_pg_map "\$api_tier": loaded 2 rows from 127\.0\.0\.1:\d+ in \d+ms \(5 returned, 1 with NULL, 1 with an empty key, 1 duplicate keys\)/
--- no_error_log
[error]
[alert]
[crit]



=== TEST 7: a server that never answers: the variable answers, the shutdown is clean
--- http_config
    ratelimit_pg_map $arg_k $api_tier
        "dsn=host=127.0.0.1 port=$TEST_NGINX_PG_FAKE_PORT user=nginx dbname=app password=s3cr3t"
        "query=SELECT 1, 2"
        refresh=100ms timeout=200ms default=public;
--- config
    location = /t { return 200 "[$api_tier]\n"; }
--- tcp_listen eval: $ENV{TEST_NGINX_PG_FAKE_PORT}
--- tcp_reply eval: ""
--- tcp_no_close
--- request
GET /t?k=key-premium
--- response_body
[public]
--- wait: 1
--- no_error_log
s3cr3t
[alert]
[crit]
--- shutdown_error_log
gracefully shutting down
--- no_shutdown_error_log
[alert]



=== TEST 7b: a server that never answers: the refresh times out
# (the fake server starts after nginx: the first attempts are refused and
# logged, the timeouts come next, within the same logging interval)
--- skip_eval: 8: !$ENV{TEST_EDGE_NGINX_DEBUG} # needs an nginx built --with-debug: reads the debug line "failure N in a row" (the error line is one per interval, and the first attempts are refused)
--- http_config
    ratelimit_pg_map $arg_k $api_tier
        "dsn=host=127.0.0.1 port=$TEST_NGINX_PG_FAKE_PORT user=nginx dbname=app password=s3cr3t"
        "query=SELECT 1, 2"
        refresh=100ms timeout=200ms default=public;
--- config
    location = /t { return 200 "[$api_tier]\n"; }
--- tcp_listen eval: $ENV{TEST_NGINX_PG_FAKE_PORT}
--- tcp_reply eval: ""
--- tcp_no_close
--- request
GET /t?k=key-premium
--- response_body
[public]
--- wait: 1
--- error_log eval
qr/ratelimit_pg_map "\$api_tier": failure \d+ in a row: "timed out after 200 ms while connecting"/
--- no_error_log
s3cr3t
[alert]
[crit]
--- shutdown_error_log
gracefully shutting down
--- no_shutdown_error_log
[alert]



=== TEST 8: a refresh in flight at shutdown is closed: no socket left open
# (live_reload_in_flight proves the same on any nginx, seeing the query
# in flight from PostgreSQL)
--- skip_eval: 8: !$ENV{TEST_EDGE_NGINX_DEBUG} # needs an nginx built --with-debug: reads the debug line "connected" (the query in flight)
--- http_config
    ratelimit_pg_map $arg_k $api_tier
        "dsn=$TEST_NGINX_PG_DSN"
        "query=SELECT 'k', 'v' FROM pg_sleep(10)"
        timeout=30s default=public;
--- config
    location = /t { return 200 "[$api_tier]\n"; }
--- request
GET /t?k=k
--- response_body
[public]
--- wait: 0.5
--- error_log eval
qr/postgresql 127\.0\.0\.1:\d+: connected/
--- no_error_log
[error]
[alert]
--- shutdown_error_log
gracefully shutting down
--- no_shutdown_error_log
[alert]
open socket



=== TEST 9: bad config: no dsn
--- http_config
    ratelimit_pg_map $arg_k $api_tier "query=SELECT 1, 2";
--- config
--- must_die
--- error_log eval
qr/\[emerg\] .*"ratelimit_pg_map" must have "dsn" parameter/



=== TEST 10: bad config: no query
--- http_config
    ratelimit_pg_map $arg_k $api_tier "dsn=$TEST_NGINX_PG_DSN";
--- config
--- must_die
--- error_log eval
qr/\[emerg\] .*"ratelimit_pg_map" must have "query" parameter/



=== TEST 11: bad config: invalid refresh time
--- http_config
    ratelimit_pg_map $arg_k $api_tier "dsn=$TEST_NGINX_PG_DSN"
        "query=SELECT 1, 2" refresh=often;
--- config
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid "refresh" time "refresh=often"/



=== TEST 12: bad config: the variable needs its "$"
--- http_config
    ratelimit_pg_map $arg_k api_tier "dsn=$TEST_NGINX_PG_DSN"
        "query=SELECT 1, 2";
--- config
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid variable name "api_tier": it must start with "\$"/



=== TEST 13: bad config: zone too small
--- http_config
    ratelimit_pg_map $arg_k $api_tier "dsn=$TEST_NGINX_PG_DSN"
        "query=SELECT 1, 2" zone=tiny:8k;
--- config
--- must_die
--- error_log eval
qr/\[emerg\] .*zone "zone=tiny:8k" is too small/



=== TEST 14: bad config: libpq rejects the connection string
--- http_config
    ratelimit_pg_map $arg_k $api_tier "dsn=host=127.0.0.1 no_such_option=1"
        "query=SELECT 1, 2";
--- config
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid "dsn" parameter: invalid connection option "no_such_option"/



=== TEST 15: bad config: unknown parameter
--- http_config
    ratelimit_pg_map $arg_k $api_tier "dsn=$TEST_NGINX_PG_DSN"
        "query=SELECT 1, 2" refresh_every=1s;
--- config
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid parameter "refresh_every=1s"/



=== TEST 16: bad config: a map's zone is not a ratelimit zone
--- http_config
    ratelimit_pg_map $arg_k $api_tier "dsn=$TEST_NGINX_PG_DSN"
        "query=SELECT 1, 2" zone=tiers:1m;
--- config
    location = /t { ratelimit zone=tiers; }
--- must_die
--- error_log eval
qr/\[emerg\] .*the shared memory zone "tiers" is already declared for a different use/



=== TEST 17: bad config: one variable, two maps
--- http_config
    ratelimit_pg_map $arg_k $api_tier "dsn=$TEST_NGINX_PG_DSN"
        "query=SELECT 1, 2" zone=a:1m;
    ratelimit_pg_map $arg_k $api_tier "dsn=$TEST_NGINX_PG_DSN"
        "query=SELECT 1, 2" zone=b:1m;
--- config
--- must_die
--- error_log eval
qr/\[emerg\] .*the duplicate "api_tier" variable/



=== TEST 18: bad config: a malformed URI is shown without its password
--- http_config
    ratelimit_pg_map $arg_k $api_tier "dsn=postgresql://edge:s3cr3t@[::1"
        "query=SELECT 1, 2";
--- config
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid "dsn" parameter: end of string reached .* in URI: "postgresql:\/\/edge:\*\*\*\@\[::1"/
--- no_error_log
s3cr3t



=== TEST 19: bad config: "password" without its "=" is not shown
--- http_config
    ratelimit_pg_map $arg_k $api_tier "dsn=host=127.0.0.1 passwords3cr3t"
        "query=SELECT 1, 2";
--- config
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid "dsn" parameter: missing "=" after "password\*\*\*" in connection info string/
--- no_error_log
s3cr3t



=== TEST 20: bad config: a misspelt "dsn=" is shown without its password
--- http_config
    ratelimit_pg_map $arg_k $api_tier
        "dns=host=127.0.0.1 user=u password=s3cr3t dbname=d"
        "query=SELECT 1, 2";
--- config
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid parameter "dns=host=127\.0\.0\.1 user=u password=\*\*\* dbname=d"/
--- no_error_log
s3cr3t



=== TEST 21: bad config: a password file that cannot be read
--- http_config
    ratelimit_pg_map $arg_k $api_tier "dsn=$TEST_NGINX_PG_DSN"
        password_file=$TEST_NGINX_PG_SECRETS/no-such-file "query=SELECT 1, 2";
--- config
--- must_die
--- error_log eval
qr/\[emerg\] .*cannot open password_file ".*\/no-such-file": open\(\) failed \(2: No such file or directory\)/



=== TEST 22: bad config: an empty password file (a newline only)
--- http_config
    ratelimit_pg_map $arg_k $api_tier "dsn=$TEST_NGINX_PG_DSN"
        password_file=$TEST_NGINX_PG_SECRETS/empty "query=SELECT 1, 2";
--- config
--- must_die
--- error_log eval
qr/\[emerg\] .*password_file ".*\/empty" is empty/



=== TEST 23: bad config: a password both in dsn= and in password_file=
--- http_config
    ratelimit_pg_map $arg_k $api_tier "dsn=$TEST_NGINX_PG_DSN password=s3cr3t"
        password_file=$TEST_NGINX_PG_SECRETS/good "query=SELECT 1, 2";
--- config
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid "dsn" parameter: it has a password, and a password file is given too/
--- no_error_log
s3cr3t
f1le-s3cret



=== TEST 24: password_file=: the map loads as a role that needs its password
--- http_config
    ratelimit_pg_map $arg_k $api_tier
        "dsn=host=127.0.0.1 port=$TEST_NGINX_PG_PORT user=edge_pw dbname=edge_test"
        password_file=$TEST_NGINX_PG_SECRETS/good
        "query=SELECT api_key, tier FROM api_keys WHERE active"
        default=public;
--- config
    location = /t { return 200 "[$api_tier]\n"; }
--- request
GET /t?k=no-such-key
--- response_body
[public]
--- wait: 1
--- error_log eval
qr/\[info\] .*ratelimit_pg_map "\$api_tier": loaded 2 rows/
--- no_error_log
[error]
[alert]
f1le-s3cret



=== TEST 25: password_file= with a wrong password: refused by PostgreSQL (the role needs its password)
--- http_config
    ratelimit_pg_map $arg_k $api_tier
        "dsn=host=127.0.0.1 port=$TEST_NGINX_PG_PORT user=edge_pw dbname=edge_test"
        password_file=$TEST_NGINX_PG_SECRETS/wrong
        "query=SELECT api_key, tier FROM api_keys WHERE active"
        refresh=100ms default=public;
--- config
    location = /t { return 200 "[$api_tier]\n"; }
--- request
GET /t?k=key-premium
--- response_body
[public]
--- wait: 1
--- error_log eval
qr/\[error\] .*ratelimit_pg_map "\$api_tier": loading from 127\.0\.0\.1:\d+ failed: .*password authentication failed for user "edge_pw"/
--- no_error_log
[alert]
wr0ng-s3cret



=== TEST 26: bad config: a list of host names is refused (libpq would resolve them in the worker, blocking)
--- http_config
    ratelimit_pg_map $arg_k $api_tier
        "dsn=host=db1.invalid,127.0.0.1 port=$TEST_NGINX_PG_PORT dbname=edge_test"
        "query=SELECT api_key, tier FROM api_keys WHERE active";
--- config
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid "dsn" parameter: a list of host names needs "hostaddr=" with their addresses/



=== TEST 27: a list of addresses is accepted and loads
--- http_config
    ratelimit_pg_map $arg_k $api_tier
        "dsn=host=127.0.0.1,127.0.0.1 port=$TEST_NGINX_PG_PORT user=postgres dbname=edge_test"
        "query=SELECT api_key, tier FROM api_keys WHERE active"
        default=public;
--- config
    location = /t { return 200 "[$api_tier]\n"; }
--- request
GET /t?k=no-such-key
--- response_body
[public]
--- no_error_log
[emerg]
[alert]



=== TEST 28: bad config: service= is refused (libpq would read pg_service.conf in the worker)
--- http_config
    ratelimit_pg_map $arg_k $api_tier "dsn=service=edge"
        "query=SELECT api_key, tier FROM api_keys WHERE active";
--- config
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid "dsn" parameter: "service" is not supported: write the host, port and database in the DSN/
