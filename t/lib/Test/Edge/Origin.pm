package Test::Edge::Origin;

# A programmable HTTP/1.1 origin server for the cache tests: each test says
# what a path answers and how it fails, and asks how many requests the
# origin received, e.g. "200 concurrent requests for one cold URL caused
# exactly one origin request".
#
#   use Test::Edge::Origin;
#
#   my $o = Test::Edge::Origin->start;            # 127.0.0.1, a free port
#   my $o = Test::Edge::Origin->start(env => 'TEST_NGINX_ORIGIN_PORT');
#                                                 # also exports the port
#   $o->port; $o->pid; $o->url('/path');
#
#   $o->set('/path',
#       status      => 200,                       # default 200
#       headers     => ['Cache-Control: max-age=60', 'ETag: "v1"'],
#       body        => 'x' x 1024,                # default ''
#       delay       => 0.5,       # seconds before the response header
#       body_delay  => 0.2,       # seconds between header and body
#       mode        => 'ok',      # see MODES
#       chunked     => 1,         # Transfer-Encoding: chunked body
#       count_body  => 1,         # body gets "#<n>" appended, n = hits of
#                                 # the key the setting was made for,
#                                 # this request included
#       conditional => 1,         # 304 (set headers, no body) to a GET or
#                                 # HEAD whose If-None-Match matches the
#                                 # ETag set (weak comparison, "*" too), or,
#                                 # without If-None-Match, whose
#                                 # If-Modified-Since >= the Last-Modified set
#       keepalive   => 0,         # answer with Connection: close and close
#   );
#   $o->unset('/path');
#   $o->hits('/path');            # requests received (all methods)
#   $o->hits;                     # requests received, all paths
#   $o->requests('/path');        # list of {method, uri, path, version,
#                                 #   headers => {lc name => value},
#                                 #   body_length, time}
#   $o->reset;                    # forget settings, counters and requests,
#                                 # close the connections held by 'hang'
#   $o->stop;                     # also on DESTROY and at END
#
#   Test::Edge::Origin::http_date(EPOCH)   # "Sun, 06 Nov 1994 08:49:37 GMT"
#
# PATHS.  A setting is made for a key.  A request uses the setting whose
# key is its request target with the query string ("/p?a=1") if there is
# one, else the setting for its path alone ("/p"), else it gets 404 with
# "Cache-Control: no-store".  hits(KEY) and requests(KEY) count the same
# way: a KEY with a "?" counts the requests for exactly that target, a KEY
# without counts every request for that path whatever its query string.
# Paths under /__origin/ are the control channel (below) and never counted.
#
# MODES.
#   ok        answer (after delay, body after body_delay)
#   close     read the request, wait delay, close without answering
#   hang      read the request, never answer, until reset or stop
#   truncate  send the header with the full Content-Length (or a chunked
#             header), after body_delay half the body (as one chunk if
#             chunked, with no last chunk), then close
#   reset     read the request, wait delay, close with RST (SO_LINGER 0)
#   truncate_reset
#             as truncate, but the half body is followed by a RST, not FIN
#
# HEADERS.  "Name: value" strings, sent in order after the status line.
# Added unless the test gives its own: Date (now), Content-Type
# (text/plain; not on 204 and 304), Content-Length (or Transfer-Encoding:
# chunked with chunked => 1; neither on 204 and 304, nor when the test
# gives Content-Length or Transfer-Encoding itself), and Connection: close
# when the server closes after the response.  A header with an empty
# value is not sent and suppresses the automatic one: headers => ['Date:']
# (or ['Date: ' => undef]; undef elements are skipped) sends no Date.
#
# REQUESTS.  Keep-alive by default for HTTP/1.1, Connection: close honoured,
# HTTP/1.0 closes unless it asks for keep-alive; pipelined requests are
# answered in order.  Request bodies with Content-Length or chunked
# (extensions, trailers) are read and discarded; "Expect: 100-continue"
# gets its 100.  HEAD gets the GET header and no body.  A malformed request
# gets 400 and the connection is closed.
#
# BEHIND NGINX.  With upstream keepalive, nginx retries a request ONCE on
# a new connection when a reused (cached) connection fails before the
# response header (ngx_http_upstream_next(), peer.cached): a 'close' or
# 'reset' answer on a kept-alive connection is then counted twice.  Count
# with that in mind, or make the response before it close the connection
# (keepalive => 0), or proxy without keepalive.  ('truncate' fails after
# the header: never retried.)
#
# HOW.  start() binds the listening socket, then forks ONE child that
# serves every connection from a non-blocking select loop with timers for
# the delays, so a connection held by delay or hang never holds up another.
# The test process talks to it through the same port: set, hits, ... are
# POSTs to /__origin/<op> with a Storable body, answered after the server
# applied them (a set() is in force for the next request the test sends).
# The child exits on stop (SIGTERM, reaped), when its parent dies, and
# after an hour at most; only the process that started it stops it.

use strict;
use warnings;

use Carp qw(croak);
use IO::Socket::INET;
use POSIX ();
use Scalar::Util qw(weaken);
use Storable qw(nfreeze thaw);
use Time::HiRes qw(time);
use Time::Local qw(timegm);

our $MAX_LIFETIME = 3600;       # seconds a server lives at most

my %started;                    # pid => object (weak), for END

my %SETTING = map { $_ => 1 } qw(status headers body delay body_delay mode
    chunked count_body conditional keepalive);
my %MODE = map { $_ => 1 } qw(ok close hang truncate reset
    truncate_reset);


sub start {
    my ($class, %opt) = @_;
    my $listen = IO::Socket::INET->new(
        LocalAddr => '127.0.0.1',
        LocalPort => 0,
        Proto     => 'tcp',
        Listen    => 1024,
        ReuseAddr => 1,
    ) or croak "origin: listen: $!";
    my $self = bless { port => $listen->sockport, owner => $$ }, $class;

    my $parent = $$;
    my $pid = fork // croak "origin: fork: $!";
    if ($pid == 0) {
        my $ok = eval {
            Test::Edge::Origin::Server->new($listen, $parent)->run;
            1;
        };
        print STDERR "origin: $@" unless $ok;
        POSIX::_exit($ok ? 0 : 1);
    }
    close $listen;
    $self->{pid} = $pid;
    weaken($started{$pid} = $self);
    $ENV{$opt{env}} = $self->{port} if defined $opt{env};
    return $self;
}


sub port { $_[0]{port} }
sub pid  { $_[0]{pid} }
sub url  { "http://127.0.0.1:$_[0]{port}" . ($_[1] // '/') }


sub set {
    my ($self, $key, %s) = @_;
    croak "origin: set: the key must start with /" unless
        defined $key && $key =~ m{^/};
    croak "origin: set: /__origin/ is the control channel" if
        $key =~ m{^/__origin/};
    for (keys %s) {
        croak "origin: set: unknown setting '$_'" unless $SETTING{$_};
    }
    croak "origin: set: unknown mode '$s{mode}'" if
        defined $s{mode} && !$MODE{$s{mode}};
    croak "origin: set: status must be 100..999" if
        defined $s{status} && $s{status} !~ /^[1-9]\d\d$/;
    for (qw(delay body_delay)) {
        croak "origin: set: $_ must be a number of seconds" if
            defined $s{$_} && $s{$_} !~ /^\d+(?:\.\d*)?$/;
    }
    # a body is bytes: a character string must be encoded by the test
    croak "origin: set: body has wide characters (encode it)" if
        defined $s{body} && !utf8::downgrade(my $copy = $s{body}, 1);
    if (defined $s{headers}) {
        croak "origin: set: headers must be an array ref" if
            ref $s{headers} ne 'ARRAY';
        for (grep { defined } @{$s{headers}}) {
            croak "origin: set: header '$_' is not 'Name: value'" unless
                /^[!#\$%&'*+.^_`|~0-9A-Za-z-]+:/ && !/[\r\n]/;
        }
    }
    return $self->control('set', [$key, \%s]);
}


sub unset    { $_[0]->control('unset', $_[1]) }
sub hits     { $_[0]->control('hits', $_[1]) }
sub requests { @{ $_[0]->control('requests', $_[1]) } }
sub reset    { $_[0]->control('reset') }


# One control exchange: POST /__origin/OP with [ARG] frozen, [RESULT] back.
sub control {
    my ($self, $op, $arg) = @_;
    croak "origin: not running" unless $self->{pid};
    my $body = nfreeze([$arg]);
    my $sock = IO::Socket::INET->new(
        PeerAddr => '127.0.0.1',
        PeerPort => $self->{port},
        Proto    => 'tcp',
        Timeout  => 30,
    ) or croak "origin: $op: connect: $!";
    my $req = "POST /__origin/$op HTTP/1.1\r\nHost: origin\r\n"
        . "Content-Length: " . length($body) . "\r\n"
        . "Connection: close\r\n\r\n" . $body;
    while (length $req) {
        my $n = syswrite($sock, $req);
        croak "origin: $op: write: $!" unless defined $n;
        substr($req, 0, $n) = '';
    }
    my $resp = '';
    my $rin = '';
    vec($rin, fileno $sock, 1) = 1;
    my $deadline = time + 60;
    while (1) {
        my $left = $deadline - time;
        croak "origin: $op: no answer within 60 s" if $left <= 0;
        my $ready = select(my $rout = $rin, undef, undef, $left);
        next if $ready < 0 && $!{EINTR};
        next unless $ready > 0;
        my $n = sysread($sock, $resp, 65536, length $resp);
        croak "origin: $op: read: $!" unless defined $n;
        last if $n == 0;
    }
    close $sock;
    my ($status, $payload) = $resp =~ m{^HTTP/1\.1 (\d+)[^\n]*\n.*?\r\n\r\n(.*)\z}s
        or croak "origin: $op: bad answer";
    croak "origin: $op: server says $status: $payload" if $status ne '200';
    return thaw($payload)->[0];
}


sub stop {
    my ($self) = @_;
    my $pid = $self->{pid};
    return unless $pid && $self->{owner} == $$;
    kill 'TERM', $pid;
    waitpid $pid, 0;
    delete $self->{pid};
    delete $started{$pid};
}


sub DESTROY { $_[0]->stop }


END {
    local $?;                   # keep the test's exit status
    $_->stop for grep { defined } values %started;
}


my @DAY = qw(Sun Mon Tue Wed Thu Fri Sat);
my @MON = qw(Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec);
my %MON = map { $MON[$_] => $_ } 0 .. 11;


# http_date(EPOCH): IMF-fixdate, the form HTTP senders must use
sub http_date {
    my @t = gmtime(int($_[0] // time));
    return sprintf '%s, %02d %s %04d %02d:%02d:%02d GMT', $DAY[$t[6]],
        $t[3], $MON[$t[4]], $t[5] + 1900, $t[2], $t[1], $t[0];
}


# parse_http_date(TEXT): epoch, or undef if TEXT is no HTTP-date (the
# three forms RFC 9110 section 5.6.7 makes recipients accept)
sub parse_http_date {
    my ($s) = @_;
    return undef unless defined $s;
    my ($d, $m, $y, $H, $M, $S);
    if ($s =~ /^\s*[A-Za-z]{3}, (\d\d) ([A-Za-z]{3}) (\d{4}) (\d\d):(\d\d):(\d\d) GMT\s*$/) {
        ($d, $m, $y, $H, $M, $S) = ($1, $2, $3, $4, $5, $6);
    } elsif ($s =~ /^\s*[A-Za-z]+, (\d\d)-([A-Za-z]{3})-(\d\d) (\d\d):(\d\d):(\d\d) GMT\s*$/) {
        ($d, $m, $y, $H, $M, $S) = ($1, $2, $3, $4, $5, $6);
        $y += $y < 70 ? 2000 : 1900;
    } elsif ($s =~ /^\s*[A-Za-z]{3} ([A-Za-z]{3}) ([ \d]\d) (\d\d):(\d\d):(\d\d) (\d{4})\s*$/) {
        ($m, $d, $H, $M, $S, $y) = ($1, $2, $3, $4, $5, $6);
    } else {
        return undef;
    }
    return undef unless exists $MON{$m};
    my $t = eval { timegm($S, $M, $H, $d, $MON{$m}, $y) };
    return $t;
}


package Test::Edge::Origin::Server;

# The child's side: one process, one select loop.  A connection is a hash:
# sock, fd, rbuf (bytes read, not parsed), wbuf (bytes to write), state
# (head: waiting for a request header; body: reading its body; respond:
# working through its actions), actions (what the response does, in order,
# each at a time: send bytes, hang, close, reset, end), eof (the client
# half-closed), close_after (close when the response is done).

use strict;
use warnings;

use Errno ();
use POSIX ();
use Socket qw(IPPROTO_TCP SOL_SOCKET SO_LINGER TCP_NODELAY);
use Storable qw(nfreeze thaw);
use Time::HiRes qw(time);

use constant {
    MAX_HEAD     => 65536,      # a request header larger is a 400
    MAX_RECORDS  => 100000,     # requests() keeps at most this many
    CHUNK        => 8192,       # chunked responses: bytes per chunk
    TICK         => 0.2,        # longest select wait: parent check
    LINGER       => 2,          # seconds a closed connection is drained
};

my %REASON = (
    100 => 'Continue', 200 => 'OK', 201 => 'Created', 203 =>
    'Non-Authoritative Information', 204 => 'No Content', 206 =>
    'Partial Content', 301 => 'Moved Permanently', 302 => 'Found', 303 =>
    'See Other', 304 => 'Not Modified', 307 => 'Temporary Redirect', 308 =>
    'Permanent Redirect', 400 => 'Bad Request', 401 => 'Unauthorized',
    403 => 'Forbidden', 404 => 'Not Found', 405 => 'Method Not Allowed',
    410 => 'Gone', 429 => 'Too Many Requests', 500 =>
    'Internal Server Error', 501 => 'Not Implemented', 502 =>
    'Bad Gateway', 503 => 'Service Unavailable', 504 => 'Gateway Timeout',
);


sub new {
    my ($class, $listen, $parent) = @_;
    return bless {
        listen   => $listen,
        parent   => $parent,
        conns    => {},         # fd => connection
        settings => {},         # key => settings hash
        by_uri   => {},         # request target => hits
        by_path  => {},         # path => hits
        total    => 0,
        records  => [],
    }, $class;
}


sub run {
    my ($self) = @_;
    $SIG{PIPE} = 'IGNORE';
    $SIG{TERM} = $SIG{INT} = sub { POSIX::_exit(0) };
    open STDIN, '<', '/dev/null';
    open STDOUT, '>', '/dev/null';      # never into the test's TAP
    $self->{listen}->blocking(0);
    my $lfd = fileno $self->{listen};
    my $end = time + $MAX_LIFETIME;

    while (time < $end) {
        POSIX::_exit(0) if getppid() != $self->{parent};
        my ($rin, $win) = ('', '');
        vec($rin, $lfd, 1) = 1;
        my $now = time;
        my $wait = TICK;
        for my $c (values %{$self->{conns}}) {
            vec($rin, $c->{fd}, 1) = 1 unless $c->{eof};
            vec($win, $c->{fd}, 1) = 1 if length $c->{wbuf};
            my $a = $c->{actions}[0];
            my $at = $c->{state} eq 'linger' ? $c->{linger_until}
                   : $a ? $a->{at} : undef;
            $wait = $at - $now if defined $at && $at - $now < $wait;
        }
        $wait = 0 if $wait < 0;
        my $n = select(my $rout = $rin, my $wout = $win, undef, $wait);
        if ($n < 0) {
            next if $!{EINTR};
            die "select: $!\n";
        }
        if ($n > 0) {
            $self->accept_all if vec($rout, $lfd, 1);
            for my $fd (keys %{$self->{conns}}) {
                my $c = $self->{conns}{$fd} or next;
                $self->read_from($c) if vec($rout, $fd, 1);
                $self->write_to($c) if $self->{conns}{$fd}
                    && vec($wout, $fd, 1);
            }
        }
        for my $fd (keys %{$self->{conns}}) {
            my $c = $self->{conns}{$fd} or next;
            $self->progress($c);
        }
    }
}


sub accept_all {
    my ($self) = @_;
    while (my $sock = $self->{listen}->accept) {
        $sock->blocking(0);
        # the header and a delayed or truncated body go out when written
        setsockopt($sock, IPPROTO_TCP, TCP_NODELAY, 1);
        my $fd = fileno $sock;
        $self->{conns}{$fd} = {
            sock => $sock, fd => $fd, rbuf => '', wbuf => '',
            state => 'head', actions => [], eof => 0, close_after => 0,
        };
    }
}


sub read_from {
    my ($self, $c) = @_;
    my $n = sysread($c->{sock}, $c->{rbuf}, 65536, length $c->{rbuf});
    if (!defined $n) {
        return if $!{EAGAIN} || $!{EWOULDBLOCK} || $!{EINTR};
        return $self->drop($c, 'now');
    }
    $c->{eof} = 1 if $n == 0;
}


sub write_to {
    my ($self, $c) = @_;
    my $n = syswrite($c->{sock}, $c->{wbuf});
    if (!defined $n) {
        return if $!{EAGAIN} || $!{EWOULDBLOCK} || $!{EINTR};
        return $self->drop($c, 'now');
    }
    substr($c->{wbuf}, 0, $n) = '';
}


sub drop {
    my ($self, $c, $how) = @_;
    $how //= '';
    if ($how eq '' && !$c->{eof}) {
        # Lingering close, as nginx does: FIN now, then read and discard
        # for a while, so that request bytes still arriving do not make
        # the kernel answer with a RST that destroys the response in the
        # client's receive buffer.
        shutdown($c->{sock}, 1);
        $c->{state} = 'linger';
        $c->{linger_until} = time + LINGER;
        $c->{actions} = [];
        $c->{rbuf} = $c->{wbuf} = '';
        return;
    }
    # SO_LINGER 0: close() sends RST instead of FIN
    setsockopt($c->{sock}, SOL_SOCKET, SO_LINGER, pack('ii', 1, 0))
        if $how eq 'reset';
    delete $self->{conns}{$c->{fd}};
    close $c->{sock};
}


# Move a connection on as far as it can go now: parse requests, run the
# response's due actions, write, until nothing changes.
sub progress {
    my ($self, $c) = @_;
    if ($c->{state} eq 'linger') {
        $c->{rbuf} = '';
        $self->drop($c, 'now') if $c->{eof} || time >= $c->{linger_until};
        return;
    }
    while ($self->{conns}{$c->{fd}} && $c->{state} ne 'linger') {
        my $before = join ',', $c->{state}, length $c->{rbuf},
            length $c->{wbuf}, scalar @{$c->{actions}};
        if ($c->{state} eq 'head') {
            $self->parse_head($c);
        } elsif ($c->{state} eq 'body') {
            $self->parse_body($c);
        } else {
            $self->run_actions($c);
        }
        last unless $self->{conns}{$c->{fd}};
        $self->write_to($c) if length $c->{wbuf};
        last unless $self->{conns}{$c->{fd}};
        # a client that went away while nothing of its is pending, or
        # from a connection held by 'hang'
        if ($c->{eof} && ($c->{state} eq 'head' && !length $c->{wbuf}
                          && index($c->{rbuf}, "\n") < 0
                          || $c->{actions}[0] && $c->{actions}[0]{hang}))
        {
            return $self->drop($c);
        }
        my $after = join ',', $c->{state}, length $c->{rbuf},
            length $c->{wbuf}, scalar @{$c->{actions}};
        last if $after eq $before;
    }
}


sub parse_head {
    my ($self, $c) = @_;
    $c->{rbuf} =~ s/\A(?:\r?\n)+//;     # stray CRLFs between requests
    my $end = index($c->{rbuf}, "\n\r\n");
    my $eol = 3;
    my $alt = index($c->{rbuf}, "\n\n");
    ($end, $eol) = ($alt, 2) if $alt >= 0 && ($end < 0 || $alt < $end);
    return $self->bad($c) if $end > MAX_HEAD
        || $end < 0 && length $c->{rbuf} > MAX_HEAD;
    return if $end < 0;
    my $head = substr($c->{rbuf}, 0, $end + 1);
    substr($c->{rbuf}, 0, $end + $eol) = '';

    my ($line, @lines) = split /\r?\n/, $head;
    my ($method, $uri, $version) = ($line // '') =~
        m{^([!#\$%&'*+.^_`|~0-9A-Za-z-]+) (\S+) HTTP/(1\.[01])$}
        or return $self->bad($c);
    $uri =~ s{^https?://[^/]*}{}i;      # absolute-form
    $uri = "/$uri" unless $uri =~ m{^/};
    my %h;
    for (@lines) {
        my ($name, $value) = /^([^:\s]+):[ \t]*(.*?)[ \t]*$/
            or return $self->bad($c);
        $name = lc $name;
        $h{$name} = exists $h{$name} ? "$h{$name}, $value" : $value;
    }

    my $req = {
        method => $method, uri => $uri, version => $version,
        headers => \%h, time => time, body_length => 0,
    };
    ($req->{path} = $uri) =~ s/\?.*//s;
    $req->{control} = $uri =~ m{^/__origin/([a-z]+)$} ? $1 : undef;

    my $conn = lc($h{connection} // '');
    $c->{close_after} = $version eq '1.0'
        ? $conn !~ /\bkeep-alive\b/ : $conn =~ /\bclose\b/;
    $c->{keepalive_10} = $version eq '1.0' && !$c->{close_after};

    if (($h{'transfer-encoding'} // '') =~ /\S/) {
        return $self->bad($c) unless $h{'transfer-encoding'} =~ /chunked\s*$/i;
        $c->{body} = { chunked => 1, state => 'size' };
    } elsif (defined $h{'content-length'}) {
        return $self->bad($c) unless $h{'content-length'} =~ /^\d{1,15}$/;
        $c->{body} = { left => $h{'content-length'} + 0 };
    } else {
        $c->{body} = { left => 0 };
    }
    $c->{body}{data} = '';
    $c->{req} = $req;
    $self->record($req) unless defined $req->{control};
    $c->{wbuf} .= "HTTP/1.1 100 Continue\r\n\r\n" if
        lc($h{expect} // '') eq '100-continue'
        && ($c->{body}{chunked} || $c->{body}{left});
    $c->{state} = 'body';
}


# Read and discard the request body (kept only for the control channel).
sub parse_body {
    my ($self, $c) = @_;
    my $b = $c->{body};
    my $req = $c->{req};
    my $keep = defined $req->{control};
    if (!$b->{chunked}) {
        my $take = $b->{left} < length $c->{rbuf}
            ? $b->{left} : length $c->{rbuf};
        $b->{data} .= substr($c->{rbuf}, 0, $take) if $keep;
        substr($c->{rbuf}, 0, $take) = '';
        $b->{left} -= $take;
        $req->{body_length} += $take;
        return $self->request_done($c) if $b->{left} == 0;
        return $self->bad($c) if $c->{eof};
        return;
    }
    while (1) {
        if ($b->{state} eq 'data') {
            my $take = $b->{left} < length $c->{rbuf}
                ? $b->{left} : length $c->{rbuf};
            $b->{data} .= substr($c->{rbuf}, 0, $take) if $keep;
            substr($c->{rbuf}, 0, $take) = '';
            $b->{left} -= $take;
            $req->{body_length} += $take;
            last if $b->{left};
            $b->{state} = 'crlf';
            next;
        }
        my $nl = index($c->{rbuf}, "\n");
        if ($nl < 0) {
            return $self->bad($c) if length $c->{rbuf} > MAX_HEAD;
            last;
        }
        my $line = substr($c->{rbuf}, 0, $nl + 1, '');
        $line =~ s/\r?\n\z//;
        if ($b->{state} eq 'size') {
            my ($hex) = $line =~ /^([0-9A-Fa-f]{1,15})[ \t]*(?:;.*)?$/
                or return $self->bad($c);
            $b->{left} = hex $hex;
            $b->{state} = $b->{left} ? 'data' : 'trailer';
        } elsif ($b->{state} eq 'crlf') {
            return $self->bad($c) if length $line;
            $b->{state} = 'size';
        } else {                        # trailer fields, then an empty line
            return $self->request_done($c) unless length $line;
        }
    }
    return $self->bad($c) if $c->{eof};
}


sub record {
    my ($self, $req) = @_;
    $self->{total}++;
    $self->{by_uri}{$req->{uri}}++;
    $self->{by_path}{$req->{path}}++;
    my $r = $self->{records};
    push @$r, $req if @$r < MAX_RECORDS;
}


sub request_done {
    my ($self, $c) = @_;
    my $req = delete $c->{req};
    my $body = delete $c->{body};
    $c->{state} = 'respond';
    $c->{actions} = defined $req->{control}
        ? $self->control($c, $req->{control}, $body->{data})
        : $self->respond($c, $req);
}


sub bad {
    my ($self, $c) = @_;
    $c->{state} = 'respond';
    $c->{close_after} = 1;
    $c->{rbuf} = '';
    $c->{actions} = [ { at => 0, data => $self->head(400, [], {
        'content-type' => 'text/plain', 'content-length' => 12,
        connection => 'close' }) . "bad request\n" }, { end => 1 } ];
}


# The status line and header: the test's headers in order, then the
# automatic ones it did not give or suppress.
sub head {
    my ($self, $status, $lines, $auto) = @_;
    my $out = "HTTP/1.1 $status " . ($REASON{$status} // 'Status') . "\r\n";
    $out .= "Date: " . Test::Edge::Origin::http_date(time) . "\r\n" unless
        exists $auto->{date};
    $out .= "$_\r\n" for @$lines;
    for my $name (qw(content-type content-length transfer-encoding
                     connection))
    {
        my $v = $auto->{$name};
        next unless defined $v;
        (my $n = $name) =~ s/(^|-)(\w)/$1\u$2/g;
        $out .= "$n: $v\r\n";
    }
    return "$out\r\n";
}


sub lookup {
    my ($self, $req) = @_;
    for my $key ($req->{uri}, $req->{path}) {
        my $s = $self->{settings}{$key};
        return ($key, $s) if $s;
    }
    return;
}


sub hits_for {
    my ($self, $key) = @_;
    return $self->{total} unless defined $key;
    return $key =~ /\?/ ? $self->{by_uri}{$key} // 0
                        : $self->{by_path}{$key} // 0;
}


sub respond {
    my ($self, $c, $req) = @_;
    my ($key, $s) = $self->lookup($req);
    my $now = time;
    if (!$s) {
        return [ { at => 0, data => $self->head(404,
            ['Cache-Control: no-store'], {
                'content-type' => 'text/plain', 'content-length' => 10,
                $self->connection_header($c) })
            . ($req->{method} eq 'HEAD' ? '' : "not found\n") },
            { end => 1 } ];
    }

    my $mode = $s->{mode} // 'ok';
    my $cut = $mode eq 'truncate' || $mode eq 'truncate_reset';
    my $t_head = $now + ($s->{delay} // 0);
    return [ { at => $t_head, close => 1 } ] if $mode eq 'close';
    return [ { at => $t_head, reset => 1 } ] if $mode eq 'reset';
    return [ { hang => 1 } ] if $mode eq 'hang';

    my $status = $s->{status} // 200;
    my $body = $s->{body} // '';
    $body .= '#' . $self->hits_for($key) if $s->{count_body};

    my (@lines, %given);
    for my $h (grep { defined } @{$s->{headers} // []}) {
        my ($name, $value) = $h =~ /^([^:]+):[ \t]*(.*?)[ \t]*$/s;
        $given{lc $name} = 1;
        push @lines, "$name: $value" if length $value;
    }
    $status = 304 if $s->{conditional} && $status == 200
        && ($req->{method} eq 'GET' || $req->{method} eq 'HEAD')
        && not_modified($req->{headers}, $s->{headers} // []);

    my $bodiless = $status == 304 || $status == 204 || $status < 200;
    $body = '' if $bodiless;
    my $send_body = $req->{method} ne 'HEAD' && !$bodiless;
    $c->{close_after} = 1 if $cut
        || (defined $s->{keepalive} && !$s->{keepalive});

    my %auto = map { $_ => undef } keys %given;
    $auto{'content-type'} //= 'text/plain' unless
        $given{'content-type'} || $bodiless;
    unless ($bodiless || $given{'content-length'}
            || $given{'transfer-encoding'})
    {
        if ($s->{chunked}) {
            $auto{'transfer-encoding'} = 'chunked';
        } else {
            $auto{'content-length'} = length $body;
        }
    }
    $c->{close_after} = 1 if grep { /^Connection:.*\bclose\b/i } @lines;
    %auto = (%auto, $self->connection_header($c)) unless $given{connection};

    my $payload = '';
    if ($send_body) {
        my $part = $cut
            ? substr($body, 0, int(length($body) / 2)) : $body;
        if ($s->{chunked} && !$given{'content-length'}) {
            for (my $i = 0; $i < length $part; $i += CHUNK) {
                my $chunk = substr($part, $i, CHUNK);
                $payload .= sprintf("%x\r\n", length $chunk) . "$chunk\r\n";
            }
            $payload .= "0\r\n\r\n" unless $cut;
        } else {
            $payload = $part;
        }
    }

    my @a = ({ at => $t_head, data => $self->head($status, \@lines, \%auto) });
    push @a, { at => $t_head + ($s->{body_delay} // 0), data => $payload }
        if length $payload;
    push @a, $cut ? { close => 1, rst => $mode eq 'truncate_reset' }
                  : { end => 1 };
    return \@a;
}


sub connection_header {
    my ($self, $c) = @_;
    return (connection => 'close') if $c->{close_after};
    return (connection => 'keep-alive') if $c->{keepalive_10};
    return ();
}


# RFC 9110 13.1.2 and 13.1.3: If-None-Match (weak comparison) decides when
# present; else If-Modified-Since against Last-Modified.
sub not_modified {
    my ($h, $lines) = @_;
    my ($etag, $lm);
    for (grep { defined } @$lines) {
        $etag = $1 if /^ETag:[ \t]*(.*?)[ \t]*$/i;
        $lm = $1 if /^Last-Modified:[ \t]*(.*?)[ \t]*$/i;
    }
    if (defined $h->{'if-none-match'}) {
        return 0 unless defined $etag && length $etag;
        my $inm = $h->{'if-none-match'};
        return 1 if $inm =~ /^\s*\*\s*$/;
        (my $want = $etag) =~ s{^W/}{};
        for my $tag ($inm =~ /((?:W\/)?"[^"]*")/g) {
            $tag =~ s{^W/}{};
            return 1 if $tag eq $want;
        }
        return 0;
    }
    return 0 unless defined $h->{'if-modified-since'} && defined $lm;
    my $ims = Test::Edge::Origin::parse_http_date($h->{'if-modified-since'});
    my $mod = Test::Edge::Origin::parse_http_date($lm);
    return defined $ims && defined $mod && $mod <= $ims;
}


sub run_actions {
    my ($self, $c) = @_;
    my $now = time;
    while (my $a = $c->{actions}[0]) {
        return if defined $a->{at} && $a->{at} > $now;
        return if $a->{hang};
        if (defined $a->{data}) {
            $c->{wbuf} .= $a->{data};
            shift @{$c->{actions}};
            next;
        }
        return $self->drop($c, 'reset') if $a->{reset};
        return if length $c->{wbuf};    # close and end wait for the bytes
        return $self->drop($c, $a->{rst} ? 'reset' : '') if $a->{close};
        shift @{$c->{actions}};         # end of this response
        return $self->drop($c) if $c->{close_after} || $c->{eof}
            && index($c->{rbuf}, "\n") < 0;
        $c->{state} = 'head';
        $c->{close_after} = $c->{keepalive_10} = 0;
        return;
    }
}


sub control {
    my ($self, $c, $op, $frozen) = @_;
    my $arg = eval { thaw($frozen)->[0] };
    my $result = 1;
    if ($op eq 'set') {
        $self->{settings}{$arg->[0]} = $arg->[1];
    } elsif ($op eq 'unset') {
        delete $self->{settings}{$arg};
    } elsif ($op eq 'hits') {
        $result = $self->hits_for($arg);
    } elsif ($op eq 'requests') {
        $result = [ map { my %r = %$_; delete $r{control}; \%r }
            grep { $self->matches($_, $arg) } @{$self->{records}} ];
    } elsif ($op eq 'reset') {
        $self->{settings} = {};
        $self->{by_uri} = {};
        $self->{by_path} = {};
        $self->{total} = 0;
        $self->{records} = [];
        for my $h (values %{$self->{conns}}) {
            $self->drop($h) if $h->{actions}[0] && $h->{actions}[0]{hang};
        }
    } elsif ($op ne 'ping') {
        $result = undef;
    }
    $c->{close_after} = 1;
    my $payload = nfreeze([$result]);
    my $status = defined $result ? 200 : 404;
    $payload = "unknown control operation\n" if $status == 404;
    return [ { at => 0, data => $self->head($status, [], {
        'content-type' => 'application/octet-stream',
        'content-length' => length $payload, connection => 'close' })
        . $payload }, { end => 1 } ];
}


sub matches {
    my ($self, $req, $key) = @_;
    return 1 unless defined $key;
    return $key =~ /\?/ ? $req->{uri} eq $key : $req->{path} eq $key;
}


1;
