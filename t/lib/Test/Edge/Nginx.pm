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

use strict;
use warnings;

use File::Path qw(make_path remove_tree);
use IO::Socket::INET;
use Time::HiRes qw(sleep time);

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
    make_path("$self->{prefix}/logs", "$self->{prefix}/conf");

    my $modules = join '', map { "load_module $_;\n" }
        split ' ', ($ENV{TEST_NGINX_LOAD_MODULES} // '');
    my $workers = $o{workers} // 1;
    my $user = $> == 0 ? "user root;\n" : '';
    my $http = $o{http} // '';
    my $main = $o{main} // '';           # main-context directives
    $http =~ s/\$PORT\b/$self->{port}/g;

    open my $fh, '>', "$self->{prefix}/conf/nginx.conf" or die $!;
    print $fh <<"CONF";
$modules${user}worker_processes $workers;
$main
daemon on;
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
    system($bin, '-p', "$self->{prefix}/", '-c', 'conf/nginx.conf') == 0
        or die "nginx failed to start:\n" . $self->log;

    # the pid file appears once the listening sockets are open
    my $deadline = time + 10;
    sleep 0.05 until -s "$self->{prefix}/logs/nginx.pid" || time > $deadline;
    die "nginx wrote no pid file\n" . $self->log
        unless -s "$self->{prefix}/logs/nginx.pid";
    return $self;
}

sub port { $_[0]{port} }

sub log {
    my ($self) = @_;
    open my $fh, '<', "$self->{prefix}/logs/error.log" or return '';
    local $/;
    return <$fh>;
}

# the worker processes' pids, children of the master in the pid file
sub worker_pids {
    my ($self) = @_;
    open my $fh, '<', "$self->{prefix}/logs/nginx.pid" or return ();
    chomp(my $master = <$fh> // '');
    return () unless $master =~ /^\d+$/;
    return grep { /^\d+$/ } split /\s+/, `pgrep -P $master`;
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
    my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                     PeerPort => $self->{port},
                                     Timeout => 5) or die "connect: $!";
    my $req = "GET $path HTTP/1.0\r\nHost: localhost\r\n";
    $req .= "$_: $headers{$_}\r\n" for sort keys %headers;
    print $sock "$req\r\n";
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
    return unless $self->{prefix};
    my $pidfile = "$self->{prefix}/logs/nginx.pid";
    if (open my $fh, '<', $pidfile) {
        chomp(my $pid = <$fh> // '');
        if ($pid) {
            kill 'QUIT', $pid;
            my $deadline = time + 10;
            sleep 0.05 while kill(0, $pid) && time < $deadline;
            kill 'KILL', $pid if kill 0, $pid;
        }
    }
    $self->{stopped_log} = $self->log;
    remove_tree($self->{prefix}) unless $ENV{TEST_NGINX_NO_CLEAN};
    delete $self->{prefix};
}

sub final_log { $_[0]{stopped_log} // $_[0]->log }

sub DESTROY { $_[0]->stop }

1;
