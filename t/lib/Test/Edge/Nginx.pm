package Test::Edge::Nginx;

# A small nginx runner for scenarios the block format cannot express:
# something must happen to a fixture between two requests while the same
# nginx keeps running (Redis restarted, scripts flushed, a database
# stopped).  Plain Test::More files use it; the block-format suites use
# Test::Nginx::Socket.
#
#   my $n = Test::Edge::Nginx->start(http => $http_block, workers => 2,
#                                    main => $main_context_directives);
#   my $res = $n->get('/path');        # { status, headers => {lc}, body }
#   $n->stop;                          # also on destruction
#   $n->log                            # error.log so far
#
# With TEST_NGINX_USE_VALGRIND, nginx (master and workers) runs under
# valgrind memcheck in the foreground (daemon off, a child of the test),
# and stop() adds one test: no hard memory error with one of our frames on
# the stack in that nginx's valgrind reports (Test::Edge::Valgrind); the
# other reports are printed as diag.

use strict;
use warnings;

use File::Path qw(make_path remove_tree);
use IO::Socket::INET;
use POSIX ();
use Scalar::Util ();
use Test::Builder;
use Test::Edge::Valgrind;
use Time::HiRes qw(sleep time);

my $Valgrind = $Test::Edge::Valgrind::Enabled;
my $Slow     = $Test::Edge::Valgrind::Slowdown;

# the running nginxes (weak references), stopped in END when a test file
# ends without stopping one (it died): before Test::Builder's own END, so
# that a memory error found then still fails the file
my %Running;

sub free_port {
    my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                  Listen => 1, ReuseAddr => 1) or die $!;
    my $port = $s->sockport;
    close $s;
    return $port;
}

sub start {
    my ($class, %o) = @_;
    my $self = bless {}, $class;
    my $base = $ENV{TEST_NGINX_SERVROOT} || '/tmp/edge-nginx';
    $self->{prefix} = "$base-edge-$$-" . int(rand(1e6));
    $self->{port} = free_port();
    my (undef, $file, $line) = caller;
    $self->{started_at} = "$file line $line";
    $self->{owner} = $$;   # a forked child of the test never stops it
    Scalar::Util::weaken($Running{$self->{prefix}} = $self);
    make_path("$self->{prefix}/logs", "$self->{prefix}/conf");

    my $modules = join '', map { "load_module $_;\n" }
        split ' ', ($ENV{TEST_NGINX_LOAD_MODULES} // '');
    my $workers = $o{workers} // 1;
    my $user = $> == 0 ? "user root;\n" : '';
    my $http = $o{http} // '';
    my $main = $o{main} // '';           # main-context directives
    # under valgrind nginx stays our child: its exit is reaped and the
    # daemon's launcher leaves no report of its own
    my $daemon = $Valgrind ? 'off' : 'on';
    $http =~ s/\$PORT\b/$self->{port}/g;

    open my $fh, '>', "$self->{prefix}/conf/nginx.conf" or die $!;
    print $fh <<"CONF";
$modules${user}worker_processes $workers;
$main
daemon $daemon;
master_process on;
error_log logs/error.log info;
pid logs/nginx.pid;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path $self->{prefix}/client_body_temp;
    proxy_temp_path $self->{prefix}/proxy_temp;
$http
}
CONF
    close $fh;

    my $bin = $ENV{TEST_NGINX_BINARY} || '/usr/sbin/nginx';
    my @cmd = ($bin, '-p', "$self->{prefix}/", '-c', 'conf/nginx.conf');
    if ($Valgrind) {
        $self->spawn(Test::Edge::Valgrind::command("$self->{prefix}/logs",
                                                   $bin), @cmd);
    } else {
        system(@cmd) == 0 or die "nginx failed to start:\n" . $self->log;
    }

    # the pid file appears once the listening sockets are open
    my $pidfile = "$self->{prefix}/logs/nginx.pid";
    my $deadline = time + 10 * $Slow;
    until (-s $pidfile || time > $deadline) {
        die "nginx failed to start:\n" . $self->log . $self->stderr
            if $self->{child} && !$self->child_alive;
        sleep 0.05;
    }
    die "nginx wrote no pid file\n" . $self->log . $self->stderr
        unless -s $pidfile;
    return $self;
}

# runs @cmd (valgrind and nginx) in the foreground as our child, its
# output into logs/stderr.log
sub spawn {
    my ($self, @cmd) = @_;
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', "$self->{prefix}/logs/stderr.log";
        open STDERR, '>&', \*STDOUT;
        { exec { $cmd[0] } @cmd }
        print STDERR "cannot exec $cmd[0]: $!\n";
        POSIX::_exit(127);
    }
    $self->{child} = $pid;
}

sub child_alive {
    my ($self) = @_;
    my $pid = $self->{child} or return 0;
    return 1 if waitpid($pid, POSIX::WNOHANG()) == 0;
    delete $self->{child};
    return 0;
}

sub stderr {
    my ($self) = @_;
    open my $fh, '<', "$self->{prefix}/logs/stderr.log" or return '';
    local $/;
    return <$fh> // '';
}

sub port { $_[0]{port} }

sub log {
    my ($self) = @_;
    open my $fh, '<', "$self->{prefix}/logs/error.log" or return '';
    local $/;
    return <$fh>;
}

# the master's pid, from the pid file ('' when there is none)
sub master_pid {
    my ($self) = @_;
    open my $fh, '<', "$self->{prefix}/logs/nginx.pid" or return '';
    chomp(my $master = <$fh> // '');
    return $master =~ /^\d+$/ ? $master : '';
}

# the worker processes' pids, children of the master in the pid file
sub worker_pids {
    my ($self) = @_;
    my $master = $self->master_pid;
    return () unless $master;
    return grep { /^\d+$/ } split /\s+/, `pgrep -P $master`;
}

# rewrites conf/nginx.conf through $edit (called with the text in $_[0],
# to change in place), replaced at once (rename): a reload reads it whole
sub edit_conf {
    my ($self, $edit) = @_;
    my $conf = "$self->{prefix}/conf/nginx.conf";
    open my $in, '<', $conf or die $!;
    my $text = do { local $/; <$in> };
    close $in;
    $edit->($text);
    open my $out, '>', "$conf.new" or die $!;
    print $out $text;
    close $out;
    rename "$conf.new", $conf or die $!;
}

# "status X-Status" of GET path: the rate-limit suites' locations add the
# $ratelimit_status variable as an X-Status header
sub decision {
    my ($self, $path) = @_;
    my $res = $self->get($path);
    return "$res->{status} " . ($res->{headers}{'x-status'} // '-');
}

sub get {
    my ($self, $path, %headers) = @_;
    return $self->request('GET', $path, %headers);
}

# send_get(path): a GET sent now and answered later (a request the test
# holds open, e.g. at an origin that hangs): returns the socket, whose
# answer the caller reads (or which it closes: a client abort)
sub send_get {
    my ($self, $path) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $self->{port},
                                  Timeout => 30 * $Slow)
        or die "connect: $!";
    print $s "GET $path HTTP/1.0\r\nHost: localhost\r\n\r\n";
    return $s;
}

# request(METHOD, path, header => value ...): as get; a body is sent for
# any method when a 'body' pseudo-header is given
sub request {
    my ($self, $method, $path, %headers) = @_;
    my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                     PeerPort => $self->{port},
                                     Timeout => 5 * $Slow)
        or die "connect: $!";
    my $content = delete $headers{body};
    $headers{'Content-Length'} = length $content if defined $content;
    my $req = "$method $path HTTP/1.0\r\nHost: localhost\r\n";
    $req .= "$_: $headers{$_}\r\n" for sort keys %headers;
    print $sock "$req\r\n" . ($content // '');
    local $/;
    my $raw = <$sock> // '';
    close $sock;
    my ($head, $body) = split /\r\n\r\n/, $raw, 2;
    my ($status) = ($head // '') =~ m{^HTTP/1\.\d (\d+)};
    my %h;
    for (split /\r\n/, $head // '') {
        $h{lc $1} = $2 if /^([^:]+):\s*(.*)$/;
    }
    return { status => $status // 0, headers => \%h, body => $body // '' };
}

sub stop {
    my ($self) = @_;
    return unless $self->{prefix} && $self->{owner} == $$;
    delete $Running{$self->{prefix}};
    my $pidfile = "$self->{prefix}/logs/nginx.pid";
    my $pid;
    if (open my $fh, '<', $pidfile) {
        chomp($pid = <$fh> // '');
    }
    $pid ||= $self->{child};
    if ($pid) {
        # a graceful stop: valgrind checks for leaks as each process exits
        my @workers = $self->worker_pids;
        kill 'QUIT', $pid;
        my $deadline = time + 10 * $Slow;
        sleep 0.05 while $self->running($pid) && time < $deadline;
        if ($self->running($pid)) {
            kill 'KILL', $pid;
            Test::Builder->new->diag("$self->{started_at}: nginx did not"
                . " exit within " . 10 * $Slow . " s of QUIT: killed");
            # the workers of a killed master would run on
            kill 'KILL', grep { is_nginx($_) } @workers;
        }
    }
    if ($self->{child}) {
        waitpid $self->{child}, 0;
        delete $self->{child};
    }
    $self->{stopped_log} = $self->log;
    $self->check_valgrind if $Valgrind;
    remove_tree($self->{prefix}) unless $ENV{TEST_NGINX_NO_CLEAN};
    delete $self->{prefix};
}

# $pid is (still) an nginx process, maybe under valgrind
sub is_nginx {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/cmdline" or return 0;
    local $/;
    return ((<$fh> // '') =~ /nginx/) ? 1 : 0;
}

# $pid still runs (our child, unreaped, counts as gone once it exited)
sub running {
    my ($self, $pid) = @_;
    if ($self->{child} && $pid == $self->{child}) {
        return $self->child_alive;
    }
    return kill 0, $pid;
}

# one test per nginx: no hard memory error in our code
sub check_valgrind {
    my ($self) = @_;
    my ($fatal, $other) =
        Test::Edge::Valgrind::records("$self->{prefix}/logs");
    my $name = "valgrind: no memory error in our code in the nginx"
             . " started at $self->{started_at}";
    my $tb = Test::Builder->new;
    # after the tests (an nginx stopped in END): only a failure is worth
    # a test beyond the plan
    $tb->ok(!@$fatal, $name) if ${^GLOBAL_PHASE} eq 'RUN' || @$fatal;
    $tb->diag($_) for @$fatal;
    return unless @$other;
    $tb->diag("$self->{started_at}: valgrind reported " . scalar(@$other)
              . " issue(s) outside our code:\n"
              . Test::Edge::Valgrind::summary($other));
}

sub final_log { $_[0]{stopped_log} // $_[0]->log }

sub DESTROY { $_[0]->stop }

END {
    local $?;
    $_->stop for grep { defined } values %Running;
}

1;
