package Test::Nginx::Util;

# Support code for the local Test::Nginx::Socket look-alike: global
# settings, nginx.conf generation, starting/stopping nginx (optionally under
# valgrind), error.log access, and the scripted fake TCP server.
#
# This is an independent implementation of the documented behaviour of the
# public Test::Nginx (openresty/test-nginx); it is only loaded when the real
# distribution is not installed (t/perl-append-inc appends t/lib to @INC).

use strict;
use warnings;

use Cwd ();
use Exporter 'import';
use File::Path ();
use File::Spec;
use IO::Socket::INET;
use IO::Socket::UNIX;
use POSIX ();
use Test::More ();
use Time::HiRes ();

our @EXPORT = qw(
    repeat_each workers master_on master_off master_process_enabled
    no_shuffle log_level no_long_string no_root_location
    worker_connections env_to_nginx add_block_preprocessor
    html_dir server_port server_root check_accum_error_log bail_out
    $ServerPort $ServRoot $NoShuffle $RepeatEach $NoLongString
);

# ---------------------------------------------------------------------------
# Settings (the .t file changes them through the exported functions)
# ---------------------------------------------------------------------------

our $RepeatEach        = 1;
our $Workers           = 1;
our $MasterProcess     = 'off';
our $NoShuffle         = 0;
our $LogLevel          = $ENV{TEST_NGINX_LOG_LEVEL} || 'debug';
our $NoLongString      = 0;
our $NoRootLocation    = 0;
our $WorkerConnections = 64;
our @EnvToNginx;
our @BlockPreprocessors;
# error_log checks see the whole log of the block, not only the lines
# written since the previous check
our $CheckAccumErrLog  = $ENV{TEST_NGINX_CHECK_ACCUM_ERR_LOG} ? 1 : 0;

our $ServerPort = $ENV{TEST_NGINX_SERVER_PORT} || $ENV{TEST_NGINX_PORT}
                 || 1984;
# Like upstream: one fixed server root per checkout, so .t files must not be
# run in parallel (prove -j) unless each gets its own TEST_NGINX_SERVROOT.
our $ServRoot = File::Spec->rel2abs($ENV{TEST_NGINX_SERVROOT}
                                    || File::Spec->catdir('t', 'servroot'));
$ServRoot =~ s{/+$}{};
our $HtmlDir    = "$ServRoot/html";
our $ConfDir    = "$ServRoot/conf";
our $LogDir     = "$ServRoot/logs";
our $ConfFile   = "$ConfDir/nginx.conf";
our $ErrLogFile = "$LogDir/error.log";
our $PidFile    = "$LogDir/nginx.pid";
our $StderrFile = "$LogDir/nginx-stderr.log";   # nginx's own stdout/stderr

# The variables upstream defines for $TEST_NGINX_* expansion (no others, so
# a block using one it lacks fails here too).
$ENV{TEST_NGINX_SERVER_PORT} //= $ServerPort;
$ENV{TEST_NGINX_SERVER_ROOT} = $ServRoot;

our $UseValgrind = $ENV{TEST_NGINX_USE_VALGRIND} ? 1 : 0;
# Everything is much slower under valgrind: scale all our waits.
our $Slowdown    = $UseValgrind ? 5 : 1;
our $PollSleep   = 0.01;   # polling nginx and helper processes
# Like upstream, every error.log check first sleeps 3 * TEST_NGINX_SLEEP
# (45 ms by default) for what is logged after the response, e.g. in the log
# phase; there is no polling.  Under valgrind, a fixed extra half second
# when the block has log patterns to check (only then: blocks whose
# requests race a rate must see the same gaps as upstream's).
our $TestNginxSleep   = $ENV{TEST_NGINX_SLEEP} || 0.015;
our $LogSleep         = 3 * $TestNginxSleep;
our $ValgrindLogSleep = 0.5;

my $MainPid = $$;
my $RepoRoot = Cwd::getcwd();   # prove is run from the repository root

sub repeat_each (;$) { $RepeatEach = shift if @_; $RepeatEach }
sub workers (;$) { $Workers = shift if @_; $Workers }
sub master_on () { $MasterProcess = 'on' }
sub master_off () { $MasterProcess = 'off' }
sub master_process_enabled (;$) {
    if (@_) { $MasterProcess = $_[0] && $_[0] ne 'off' ? 'on' : 'off' }
    return $MasterProcess eq 'on';
}
sub no_shuffle () { $NoShuffle = 1 }
sub log_level (;$) { $LogLevel = shift if @_; $LogLevel }
sub no_long_string () { $NoLongString = 1 }
sub no_root_location () { $NoRootLocation = 1 }
sub worker_connections (;$) {
    $WorkerConnections = shift if @_;
    $WorkerConnections;
}
sub env_to_nginx (@) { push @EnvToNginx, @_ }
# Upstream runs the most recently added preprocessor first.
sub add_block_preprocessor (&) { unshift @BlockPreprocessors, shift }
sub check_accum_error_log () { $CheckAccumErrLog = 1 }
sub html_dir () { $HtmlDir }
sub server_port () { $ServerPort }
sub server_root () { $ServRoot }

# ---------------------------------------------------------------------------
# $TEST_NGINX_* expansion
# ---------------------------------------------------------------------------

# Upstream expands $TEST_NGINX_* only in config, http_config, main_config,
# post_main_config and the contents of user_files; every other section is
# used as written.  $TEST_NGINX_RAND_PORT_<N> is a free port chosen once per
# block (kept in %$rand_ports, shared by all those sections, never put in
# %ENV); any other variable must be in the environment, or the run bails
# out.
sub expand_env_in_text {
    my ($text, $name, $rand_ports) = @_;
    return $text unless defined $text && !ref $text;
    $text =~ s{\$(TEST_NGINX_[_A-Z0-9]+)}{
        my $var = $1;
        if ($var =~ /^TEST_NGINX_RAND_PORT_\d+$/) {
            $rand_ports->{$var} //= free_port($rand_ports);
        } elsif (defined $ENV{$var}) {
            $ENV{$var};
        } else {
            bail_out("$name - No environment $var defined.\n");
        }
    }ge;
    return $text;
}

# A port nothing listens on, below the kernel's ephemeral range (as
# upstream, a random one), so that no outgoing connection can be using it
# by the time nginx or a fake server listens on it.
sub free_port {
    my ($taken) = @_;
    my %taken = map { $_ => 1 } grep { defined } $ServerPort,
                                                 values %{ $taken || {} };
    my ($low) = read_file('/proc/sys/net/ipv4/ip_local_port_range')
                =~ /^\s*(\d+)/;
    $low = 32768 unless $low && $low > 12000;
    for (1 .. 1000) {
        my $port = 10000 + int rand($low - 10000);
        next if $taken{$port};
        my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
                                      LocalPort => $port, Listen => 1,
                                      ReuseAddr => 1)
            or next;
        close $s;
        return $port;
    }
    bail_out("cannot find a free port: $!\n");
}

# Stops what we started, then stops the whole run, as upstream does for
# errors in the test file itself.
sub bail_out (@) {
    cleanup();
    Test::More::BAIL_OUT(join '', @_);
}

# ---------------------------------------------------------------------------
# nginx binary, servroot and nginx.conf
# ---------------------------------------------------------------------------

sub nginx_binary {
    return $ENV{TEST_NGINX_BINARY} if $ENV{TEST_NGINX_BINARY};
    for my $dir (split /:/, $ENV{PATH} || '') {
        return "$dir/nginx" if length $dir && -x "$dir/nginx";
    }
    return '/usr/sbin/nginx';
}

my $NginxVersion;
sub nginx_version {   # e.g. "1.22.1"
    return $NginxVersion if defined $NginxVersion;
    my $bin = nginx_binary();
    my $out = `'$bin' -v 2>&1`;
    ($NginxVersion) = ($out || '') =~ m{nginx/(\d+(?:\.\d+)*)};
    return $NginxVersion //= '0';
}

my @TempDirs = qw(client_body_temp proxy_temp fastcgi_temp uwsgi_temp
                  scgi_temp);

# Only our own sub-directories are removed, never the server root itself, so
# a mistaken TEST_NGINX_SERVROOT cannot wipe anything else.
sub prepare_servroot {
    File::Path::remove_tree(map { "$ServRoot/$_" }
                            qw(conf html logs), @TempDirs);
    File::Path::make_path($ServRoot, $ConfDir, $HtmlDir, $LogDir,
                          map { "$ServRoot/$_" } @TempDirs);
}

sub write_user_files {
    my ($spec, $name, $rand_ports) = @_;
    return unless defined $spec;
    my @files;   # [name, content, mtime]
    if (ref $spec eq 'ARRAY') {
        @files = map { [@$_] } @$spec;
    } else {
        my $cur;
        for my $line (split /^/, $spec) {
            if ($line =~ /^>>> (\S+)(?:\s+(\d+(?:\.\d+)?))?\s*$/) {
                push @files, $cur = [$1, '', $2];
            } elsif ($cur) {
                $cur->[1] .= $line;
            }
        }
    }
    for my $f (@files) {
        my ($fname, $content, $mtime) = @$f;
        $content = expand_env_in_text($content // '', $name, $rand_ports);
        my $path = $fname =~ m{^/} ? $fname : "$HtmlDir/$fname";
        (my $dir = $path) =~ s{/[^/]*$}{};
        File::Path::make_path($dir);
        open my $fh, '>', $path or die "cannot write $path: $!\n";
        binmode $fh;
        print $fh $content // '';
        close $fh;
        if (defined $mtime) {
            # "YYYYMMDDhhmm.ss" like touch -t, or plain epoch seconds
            if ($mtime =~ /^(\d{4})(\d\d)(\d\d)(\d\d)(\d\d)(?:\.(\d\d))?$/) {
                $mtime = POSIX::mktime($6 || 0, $5, $4, $3, $2 - 1,
                                       $1 - 1900);
            }
            utime $mtime, $mtime, $path;
        }
    }
}

sub trim_tail {
    my ($text) = @_;
    $text //= '';
    $text =~ s/\s+\z//;
    return $text;
}

# $conf: the expanded config, http_config, main_config and post_main_config.
sub write_config {
    my ($block, $c) = @_;
    my $main_config = trim_tail($c->{main_config});
    my $http_config = trim_tail($c->{http_config});
    my $config      = trim_tail($c->{config});
    my $post_main   = trim_tail($c->{post_main_config});
    my $level       = $block->log_level // $LogLevel;
    my $server_name = $block->server_name // 'localhost';
    chomp $level;
    chomp $server_name;

    my $conf = "# generated by t/lib/Test/Nginx/Util.pm\n";
    for my $mod (split ' ', $ENV{TEST_NGINX_LOAD_MODULES} || '') {
        $conf .= "load_module " . File::Spec->rel2abs($mod) . ";\n";
    }
    my $daemon = $UseValgrind ? 'off' : 'on';
    $conf .= <<"_EOC_";
worker_processes  $Workers;
daemon $daemon;
master_process $MasterProcess;
error_log $ErrLogFile $level;
pid       $PidFile;
_EOC_
    # Distro builds switch worker processes to "nobody" when started as
    # root; keep them as root so they can use everything under the server
    # root (a test may still set its own "user" in main_config).
    $conf .= "user root;\n"
        if $> == 0 && $main_config !~ /^\s*user\s/m;
    for my $env (@EnvToNginx) {
        $conf .= "env $env;\n";
    }
    my $root_location = $NoRootLocation ? '' : <<"_EOC_";
        location / {
            root $HtmlDir;
            index index.html index.htm;
        }
_EOC_
    # The temp paths compiled into distro packages live under /var/lib, so
    # point them into the server root to keep the test prefix self-contained.
    my $temps = join '', map {
        (my $d = $_) =~ s/_temp$//;
        "    ${d}_temp_path $ServRoot/$_;\n";
    } @TempDirs;
    $conf .= <<"_EOC_";
$main_config

http {
    access_log $LogDir/access.log;
    default_type text/plain;
    keepalive_timeout  68;
$temps
$http_config

    server {
        listen          $ServerPort;
        server_name     '$server_name';
        client_max_body_size 30M;

$config

$root_location    }
}

$post_main

events {
    accept_mutex off;
    worker_connections  $WorkerConnections;
}
_EOC_
    open my $fh, '>', $ConfFile or die "cannot write $ConfFile: $!\n";
    print $fh $conf;
    close $fh;
}

# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------

# A daemonised nginx is not our child; if it exits under a PID 1 that does
# not reap, it stays a zombie, which kill(0) would still report as alive.
sub proc_alive {
    my ($pid) = @_;
    return 0 unless $pid && kill 0, $pid;
    if (open my $fh, '<', "/proc/$pid/stat") {
        my $stat = <$fh> // '';
        return 0 if $stat =~ /\)\s+[ZX]\s/;
    }
    return 1;
}

sub proc_children {
    my ($ppid) = @_;
    my @kids;
    for my $stat (glob '/proc/[0-9]*/stat') {
        open my $fh, '<', $stat or next;
        my $line = <$fh> // next;
        push @kids, $1 if $line =~ /^(\d+) \(.*\) \S+ (\d+) / && $2 == $ppid;
    }
    return @kids;
}

# Wait until $pid is gone (reaping it if it is our child); true on success.
sub wait_gone {
    my ($pid, $timeout, $is_child, $status_ref) = @_;
    my $deadline = Time::HiRes::time() + $timeout;
    while (1) {
        if ($is_child) {
            my $r = waitpid $pid, POSIX::WNOHANG();
            if ($r == $pid || $r == -1) {
                $$status_ref = $? if $status_ref && $r == $pid;
                return 1;
            }
        } elsif (!proc_alive($pid)) {
            return 1;
        }
        return 0 if Time::HiRes::time() > $deadline;
        Time::HiRes::sleep($PollSleep);
    }
}

our $NginxPid;        # master (or single) process of the running nginx
our $NginxIsChild;    # started in the foreground (valgrind mode)

sub read_file {
    my ($path, $offset) = @_;
    open my $fh, '<', $path or return '';
    binmode $fh;
    seek $fh, $offset, 0 if $offset;
    local $/;
    my $data = <$fh>;
    return $data // '';
}

sub file_size { -s $_[0] || 0 }

sub read_pid_file {
    my $pid = read_file($PidFile);
    return $pid =~ /^\s*(\d+)/ ? $1 : undef;
}

sub valgrind_cmd {
    my $opts = $ENV{TEST_NGINX_USE_VALGRIND};
    my @cmd = ('valgrind');
    if ($opts =~ /^\d+$/) {
        push @cmd, qw(--tool=memcheck --leak-check=full
                      --show-leak-kinds=definite --num-callers=30);
    } else {
        push @cmd, split ' ', $opts;
    }
    push @cmd, "--log-file=$LogDir/valgrind.%p.log";
    push @cmd, "--suppressions=$RepoRoot/t/valgrind.suppress"
        if -f "$RepoRoot/t/valgrind.suppress";
    # TEST_NGINX_BINARY may be a script that execs nginx (t/bin/nginx):
    # valgrind must follow the exec, or nginx would run without it.
    push @cmd, '--trace-children=yes' if is_script(nginx_binary());
    return @cmd;
}

sub is_script {
    my ($path) = @_;
    open my $fh, '<', $path or return 0;
    read $fh, my $magic, 2;
    return ($magic // '') eq '#!';
}

# Starts nginx with the current nginx.conf.  Returns (1) when it is up, or
# (0, $why, $exit_code) when it failed to start; $why includes nginx's
# stderr, $exit_code is undef unless the launcher exited.
sub start_nginx {
    my @cmd = (nginx_binary(), '-p', "$ServRoot/", '-c', 'conf/nginx.conf');
    unshift @cmd, valgrind_cmd() if $UseValgrind;
    my $timeout = 5 * ($UseValgrind ? 6 : 1);

    my $pid = fork;
    die "fork failed: $!\n" unless defined $pid;
    if (!$pid) {
        # nginx must never hold prove's pipes open, so point all of its
        # standard streams at a file.
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', $StderrFile;
        open STDERR, '>&', \*STDOUT;
        { exec { $cmd[0] } @cmd }
        print STDERR "cannot exec $cmd[0]: $!\n";
        POSIX::_exit(127);
    }

    my $deadline = Time::HiRes::time() + $timeout;
    my $status;
    my $why;
    if (!$UseValgrind) {
        # The launcher exits once the daemon is forked (or on error).
        if (!wait_gone($pid, $timeout, 1, \$status)) {
            kill 'KILL', $pid;
            waitpid $pid, 0;
            return (0, "nginx did not finish starting within ${timeout}s");
        }
        if ($status != 0) {
            return (0, sprintf("nginx exited with status %d\n%s",
                               $status >> 8, read_file($StderrFile)),
                    $status >> 8);
        }
    } else {
        $NginxPid = $pid;
        $NginxIsChild = 1;
    }

    # nginx writes its pid file only after the listening sockets are bound,
    # so once it is there (and the process lives) requests will be accepted.
    # Connect probes are avoided on purpose: they leave "client closed
    # connection" lines in error.log that could confuse error_log checks.
    while (1) {
        if ($UseValgrind && wait_gone($pid, 0, 1, \$status)) {
            undef $NginxPid;
            return (0, sprintf("nginx exited with status %d\n%s",
                               ($status // 0) >> 8, read_file($StderrFile)),
                    ($status // 0) >> 8);
        }
        my $master = read_pid_file();
        if ($master && proc_alive($master)) {
            $NginxPid = $master;
            $NginxIsChild = $master == $pid ? 1 : 0;
            last;
        }
        if (Time::HiRes::time() > $deadline) {
            $why = "nginx pid file did not appear within ${timeout}s";
            last;
        }
        Time::HiRes::sleep($PollSleep);
    }
    return (0, $why . "\n" . read_file($StderrFile)) if $why;
    return (1);
}

# Stops the running nginx: QUIT (graceful, lets valgrind finish its leak
# checks), then TERM, then KILL for it and any orphaned workers.  Returns
# false if the process had already died before we asked it to stop.
sub stop_nginx {
    my $pid = $NginxPid;
    return 1 unless $pid;
    undef $NginxPid;
    my $was_alive = proc_alive($pid);
    my @workers = proc_children($pid);
    my $t = 5 * ($UseValgrind ? 6 : 1);
    for my $sig (qw(QUIT TERM KILL)) {
        kill $sig, $pid;
        last if wait_gone($pid, $sig eq 'QUIT' ? $t : 2, $NginxIsChild);
    }
    for my $w (@workers) {
        next if wait_gone($w, 2, 0);
        kill 'KILL', $w;
    }
    return $was_alive;
}

# An nginx left behind by an interrupted earlier run (or TEST_NGINX_NO_CLEAN)
# would keep the port busy.
sub kill_stale_nginx {
    my $pid = read_pid_file();
    return unless $pid && proc_alive($pid);
    return unless read_file("/proc/$pid/cmdline") =~ /nginx/;
    ($NginxPid, $NginxIsChild) = ($pid, 0);
    stop_nginx();
}

# ---------------------------------------------------------------------------
# error.log windows
# ---------------------------------------------------------------------------

# Where the next check starts reading: 0 when nginx is started for a block,
# so the first window includes what nginx logged while starting.
our $ErrLogPos = 0;

sub reset_error_log_window { $ErrLogPos = 0 }

# The error.log lines (with their newlines) written since the previous
# call, or all of them after check_accum_error_log().  Sleeps $LogSleep
# first, like upstream's error_log_data(), and under valgrind
# $ValgrindLogSleep more if $checked (the window is checked for patterns).
sub error_log_window {
    my ($checked) = @_;
    Time::HiRes::sleep($LogSleep
                       + ($UseValgrind && $checked ? $ValgrindLogSleep : 0));
    open my $fh, '<', $ErrLogFile or return [];
    binmode $fh;
    seek $fh, $ErrLogPos, 0 if !$CheckAccumErrLog && $ErrLogPos;
    my @lines = <$fh>;
    $ErrLogPos = tell $fh unless $CheckAccumErrLog;
    close $fh;
    return \@lines;
}

# the lines written since the last error_log_window(), without consuming
# them: for polling until expected lines appear
sub error_log_peek {
    open my $fh, '<', $ErrLogFile or return [];
    binmode $fh;
    seek $fh, $ErrLogPos, 0 if !$CheckAccumErrLog && $ErrLogPos;
    my @lines = <$fh>;
    close $fh;
    return \@lines;
}

# ---------------------------------------------------------------------------
# valgrind reports
# ---------------------------------------------------------------------------

# Record kinds that fail a block when our code is on the stack ...
my @Hard = ('Invalid read', 'Invalid write', 'Invalid free',
            'Conditional jump or move depends on uninitialised',
            'definitely lost');
# ... and further ones that are only reported.
my @Soft = ('Use of uninitialised', 'Syscall param', 'Mismatched free',
            'Source and destination overlap');
my $HardKinds  = join '|', map { quotemeta } @Hard;
my $ErrorKinds = join '|', map { quotemeta } @Hard, @Soft;

# Frames that belong to this project: override with TEST_NGINX_VALGRIND_OURS.
sub ours_regex {
    my $re = $ENV{TEST_NGINX_VALGRIND_OURS}
        || 'ngx_http_(?:ratelimit|cache|breaker|metrics)_|ngx_edge_';
    return qr/$re|\(in \Q$RepoRoot\E\//;
}

# Returns ([fatal records], [other records]); each record is its text.
sub valgrind_records {
    my (@fatal, @other);
    my $ours = ours_regex();
    for my $file (sort glob "$LogDir/valgrind.*.log") {
        my (@recs, @cur);
        for my $line (split /\n/, read_file($file)) {
            next unless $line =~ /^==\d+==(?: (.*))?$/;
            my $text = $1 // '';
            if ($text =~ /^\s*$/) {
                push @recs, [@cur] if @cur;
                @cur = ();
            } else {
                push @cur, $text;
            }
        }
        push @recs, [@cur] if @cur;
        for my $rec (@recs) {
            next unless $rec->[0] =~ /$ErrorKinds/;
            my $text = join "\n", @$rec;
            my $mine = grep { /^\s+(?:at|by) 0x/ && $_ =~ $ours } @$rec;
            if ($mine && $rec->[0] =~ /$HardKinds/) {
                push @fatal, $text;
            } else {
                push @other, $text;
            }
        }
    }
    return (\@fatal, \@other);
}

# ---------------------------------------------------------------------------
# Fake TCP server (--- tcp_listen)
# ---------------------------------------------------------------------------

# As upstream's: it listens (in the parent, before forking, so the port is
# bound by the time nginx could connect), accepts ONE connection, reads the
# query (tcp_query_len bytes, or as many as tcp_query has, else a single
# read), records it, waits tcp_reply_delay, sends tcp_reply and closes the
# connection -- or, with tcp_no_close, keeps it until the server is
# stopped.  The listening socket stays open until then, so later
# connections are queued by the kernel but never served.
sub start_tcp_server {
    my (%a) = @_;   # target, query_len, reply, reply_delay, no_close,
                    # shutdown, shutdown_delay, tag, timeout
    my $target = $a{target};
    my $sock;
    for my $try (1 .. 30) {   # as upstream, when the port is still in use
        if ($target =~ /^\d+$/) {
            $sock = IO::Socket::INET->new(
                LocalAddr => '127.0.0.1', LocalPort => $target, Listen => 5,
                ReuseAddr => 1, Proto => 'tcp');
        } else {
            unlink $target if -e $target;
            $sock = IO::Socket::UNIX->new(Local => $target,
                                          Type => IO::Socket::SOCK_STREAM(),
                                          Listen => 5);
        }
        last if $sock || !$!{EADDRINUSE} || $try == 30;
        Test::More::diag("WARNING: cannot listen on $target: $!; retrying");
        sleep 1;
    }
    $sock or return (undef, "cannot listen on $target: $!");
    my $file = "$LogDir/tcp-query-$a{tag}";
    unlink $file;
    my $pid = fork;
    return (undef, "fork failed: $!") unless defined $pid;
    if ($pid) {
        return ({ pid => $pid, file => $file, sock => $sock,
                  target => $target });
    }

    # child: serve until done or killed (never returns into the test code)
    $SIG{$_} = 'DEFAULT' for qw(INT TERM HUP);
    $SIG{PIPE} = 'IGNORE';
    alarm(60 * $Slowdown);   # never outlive a crashed parent for long
    eval { serve_tcp($sock, $file, %a) };
    POSIX::_exit(0);
}

sub serve_tcp {
    my ($sock, $file, %a) = @_;
    my $timeout = $a{timeout} || 3;
    my $c;
    Time::HiRes::sleep(0.01) until $c = $sock->accept;
    my ($no_read, $no_write);
    if (defined $a{shutdown}) {
        Time::HiRes::sleep($a{shutdown_delay}) if $a{shutdown_delay};
        shutdown $c, $a{shutdown};
        if ($a{shutdown} == 0 || $a{shutdown} == 2) {
            $no_read = 1;
        } else {
            $no_write = 1;
        }
    }
    my $query = $no_read ? '' : read_query($c, $a{query_len}, $timeout);
    open my $fh, '>', "$file.tmp" or POSIX::_exit(1);
    binmode $fh;
    print $fh $query;
    close $fh;
    rename "$file.tmp", $file;   # the parent never sees half a query

    Time::HiRes::sleep($a{reply_delay}) if $a{reply_delay};
    my $reply = $a{reply};
    $reply = $reply->($query) if ref $reply eq 'CODE';
    if (!$no_write) {
        for my $chunk (ref $reply eq 'ARRAY' ? @$reply : ($reply)) {
            send_all($c, $chunk) if defined $chunk;
        }
    }
    if ($a{no_close}) {
        sleep 1 while 1;   # until stop_tcp_server kills us
    }
    # Closing with unread input would make the kernel send a RST, which can
    # destroy the reply before the peer has read it; so send FIN first and
    # drain what the peer still sends.
    shutdown $c, 1;
    read_query($c, undef, 0.2, 1);
    close $c;
}

sub send_all {
    my ($c, $data) = @_;
    utf8::encode($data) if utf8::is_utf8($data);
    while (length $data) {
        my $w = syswrite $c, $data;
        return unless defined $w && $w > 0;
        substr($data, 0, $w, '');
    }
}

# Reads exactly $len bytes when a length is known, otherwise what a single
# read returns (as upstream); $drain reads until EOF or a pause instead.
sub read_query {
    my ($c, $len, $timeout, $drain) = @_;
    my $buf = '';
    my $deadline = Time::HiRes::time() + $timeout * $Slowdown;
    while (1) {
        last if defined $len && length($buf) >= $len;
        my $wait = $deadline - Time::HiRes::time();
        last if $wait <= 0;
        my $rin = '';
        vec($rin, fileno($c), 1) = 1;
        last unless select($rin, undef, undef, $wait);
        my $n = sysread $c, $buf, defined $len ? $len - length $buf : 65536,
                        length $buf;
        last unless $n;
        last unless defined $len || $drain;
    }
    return $buf;
}

# The query the fake server received, waiting (bounded) for it to be
# recorded; undef if it got no connection.
sub tcp_server_query {
    my ($srv, $timeout) = @_;
    my $deadline = Time::HiRes::time() + $timeout;
    until (-e $srv->{file}) {
        return undef if Time::HiRes::time() > $deadline;
        Time::HiRes::sleep($PollSleep);
    }
    return read_file($srv->{file});
}

sub stop_tcp_server {
    my ($srv) = @_;
    return unless $srv;
    if ($srv->{pid}) {
        kill 'TERM', $srv->{pid};
        wait_gone($srv->{pid}, 2, 1) or do {
            kill 'KILL', $srv->{pid};
            waitpid $srv->{pid}, 0;
        };
        delete $srv->{pid};
    }
    if ($srv->{sock}) {
        close delete $srv->{sock};
        unlink $srv->{target} if $srv->{target} !~ /^\d+$/;
    }
}

# ---------------------------------------------------------------------------
# Cleanup on exit / signals (only in the test process, not in children)
# ---------------------------------------------------------------------------

our @TcpServers;   # live fake servers, stopped on abnormal exit too

sub cleanup {
    return unless $$ == $MainPid;
    stop_tcp_server($_) for @TcpServers;
    @TcpServers = ();
    stop_nginx() unless $ENV{TEST_NGINX_NO_CLEAN};
}

for my $sig (qw(INT TERM HUP)) {
    $SIG{$sig} = sub {
        cleanup();
        $SIG{$sig} = 'DEFAULT';
        kill $sig, $$;
    };
}

END {
    local $?;   # keep the exit status Test::Builder computed
    cleanup();
}

1;
