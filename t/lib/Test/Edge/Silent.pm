package Test::Edge::Silent;

# A TCP server that accepts connections and never answers: a Redis behind
# a blackhole, a stopped host, a failover that left a virtual IP pointing
# nowhere.  It runs in a child process and counts what it sees.
#
#   my $s = Test::Edge::Silent->start;   # on a free loopback port
#   $s->port; $s->accepts; $s->bytes;    # connections accepted, bytes read
#   $s->close_listener;                  # refuse new connections, keep the
#                                        # accepted ones open and silent
#   $s->stop;                            # also on destruction

use strict;
use warnings;

use IO::Socket::INET;
use IO::Select;
use POSIX ();
use File::Temp qw(tempfile);
use Time::HiRes qw(sleep time);

sub start {
    my ($class) = @_;
    my $listen = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
                                       LocalPort => 0, Listen => 64,
                                       ReuseAddr => 1) or die "listen: $!";
    my (undef, $log) = tempfile('edge-silent-XXXXXX', TMPDIR => 1,
                                UNLINK => 0);
    my $self = bless { port => $listen->sockport, log => $log }, $class;

    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        $self->serve($listen);
        POSIX::_exit(0);
    }
    close $listen;
    $self->{pid} = $pid;
    return $self;
}

sub serve {
    my ($self, $listen) = @_;
    my $closing = 0;
    local $SIG{USR1} = sub { $closing = 1 };
    local $SIG{TERM} = sub { POSIX::_exit(0) };
    open my $log, '>>', $self->{log} or POSIX::_exit(1);
    $log->autoflush(1);
    my $sel = IO::Select->new($listen);
    my $deadline = time + 600;          # never outlives a test run
    while (time < $deadline) {
        if ($closing && $listen) {
            $sel->remove($listen);
            close $listen;
            undef $listen;
            print $log "closed\n";
        }
        for my $fh ($sel->can_read(0.05)) {
            if ($listen && $fh == $listen) {
                my $c = $listen->accept or next;
                $sel->add($c);
                print $log "accept\n";
                next;
            }
            my $n = sysread($fh, my $buf, 65536);
            if (!$n) {
                $sel->remove($fh);
                close $fh;
                print $log "eof\n";
                next;
            }
            print $log "bytes $n\n";    # read, never answered
        }
    }
}

sub port { $_[0]{port} }

sub lines {
    my ($self, $re) = @_;
    open my $fh, '<', $self->{log} or return 0;
    return scalar grep { /$re/ } <$fh>;
}

sub accepts { $_[0]->lines(qr/^accept$/) }
sub eofs    { $_[0]->lines(qr/^eof$/) }

sub bytes {
    my ($self) = @_;
    open my $fh, '<', $self->{log} or return 0;
    my $sum = 0;
    /^bytes (\d+)/ and $sum += $1 for <$fh>;
    return $sum;
}

sub close_listener {
    my ($self) = @_;
    kill 'USR1', $self->{pid};
    my $deadline = time + 10;
    sleep 0.05 until $self->lines(qr/^closed$/) || time > $deadline;
    return $self->lines(qr/^closed$/);
}

sub stop {
    my ($self) = @_;
    return unless $self->{pid};
    kill 'TERM', $self->{pid};
    waitpid $self->{pid}, 0;
    delete $self->{pid};
    unlink $self->{log};
}

sub DESTROY { $_[0]->stop }

1;
