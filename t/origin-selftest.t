# Self-test of Test::Edge::Origin (t/lib/Test/Edge/Origin.pm), the origin
# server the cache tests put behind nginx: every mode, the counting, the
# HTTP/1.1 framing it must get right, and that it never outlives its test.
# A plain socket client talks to it: no nginx here.

use strict;
use warnings;

use Test::More;
use Errno ();
use IO::Socket::INET;
use Config ();
use POSIX ();
use Time::HiRes qw(time sleep);
use Test::Edge qw(wait_until);
use Test::Edge::Origin;

my $o = Test::Edge::Origin->start;
my $port = $o->port;

# --- a small client: one connection, a buffer, responses parsed out of it

{
    package Client;

    sub new {
        my ($class) = @_;
        my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                         PeerPort => $port, Proto => 'tcp',
                                         Timeout => 10)
            or die "connect: $!";
        return bless { sock => $sock, buf => '', eof => 0, err => 0 },
            $class;
    }

    sub send {
        my ($self, $data) = @_;
        while (length $data) {
            my $n = syswrite($self->{sock}, $data);
            die "write: $!" unless defined $n;
            substr($data, 0, $n) = '';
        }
        return $self;
    }

    # one read within TIMEOUT seconds: 1 if bytes came, 0 on EOF, error
    # (its errno kept) or timeout
    sub fill {
        my ($self, $timeout) = @_;
        return 0 if $self->{eof};
        my $rin = '';
        vec($rin, fileno $self->{sock}, 1) = 1;
        my $ready = select(my $rout = $rin, undef, undef,
                           $timeout > 0 ? $timeout : 0);
        return 0 unless $ready > 0;
        my $n = sysread($self->{sock}, $self->{buf}, 65536,
                        length $self->{buf});
        if (!defined $n) {
            $self->{err} = $! + 0;
            $self->{eof} = 1;
            return 0;
        }
        $self->{eof} = 1 if $n == 0;
        return $n > 0;
    }

    # the next response (HEAD => 1: no body expected), waiting up to 20 s;
    # complete => 0 if the connection ended first
    sub response {
        my ($self, %opt) = @_;
        my $deadline = Time::HiRes::time() + ($opt{timeout} // 20);
        while (1) {
            my ($r, $used) = main::parse_response($self->{buf}, $opt{head},
                                                  $self->{eof});
            if ($r && $r->{complete}) {
                substr($self->{buf}, 0, $used) = '';
                return $r;
            }
            if ($self->{eof} || Time::HiRes::time() >= $deadline) {
                $r //= { complete => 0 };
                $r->{raw} = $self->{buf};
                return $r;
            }
            $self->fill($deadline - Time::HiRes::time());
        }
    }

    # true if the server sends nothing and keeps the connection open for
    # SECONDS
    sub silent_for {
        my ($self, $seconds) = @_;
        my $deadline = Time::HiRes::time() + $seconds;
        while ((my $left = $deadline - Time::HiRes::time()) > 0) {
            $self->fill($left);
            return 0 if length $self->{buf} || $self->{eof};
        }
        return 1;
    }

    # true once the server closed the connection (within 20 s)
    sub closed {
        my ($self) = @_;
        my $deadline = Time::HiRes::time() + 20;
        $self->fill($deadline - Time::HiRes::time())
            while !$self->{eof} && Time::HiRes::time() < $deadline;
        return $self->{eof};
    }
}

# parse_response(BUF, HEAD, EOF): (response, bytes used) or () if BUF
# holds no complete header yet.  A response is {status, headers => {lc
# name => value}, order => [names], body, chunked, complete}.
sub parse_response {
    my ($buf, $head, $eof) = @_;
    my $end = index($buf, "\r\n\r\n");
    return if $end < 0;
    my ($line, @lines) = split /\r\n/, substr($buf, 0, $end);
    my ($status) = $line =~ m{^HTTP/1\.1 (\d{3}) } or die "status line: $line";
    my (%h, @order);
    for (@lines) {
        my ($n, $v) = /^([^:]+): (.*)$/ or die "header line: $_";
        push @order, $n;
        $h{lc $n} = exists $h{lc $n} ? "$h{lc $n}, $v" : $v;
    }
    my $r = { status => $status, headers => \%h, order => \@order,
              body => '', complete => 0 };
    my $pos = $end + 4;
    if ($head || $status == 304 || $status == 204 || $status < 200) {
        $r->{complete} = 1;
        return ($r, $pos);
    }
    if (lc($h{'transfer-encoding'} // '') eq 'chunked') {
        $r->{chunked} = 1;
        while (1) {
            my $nl = index($buf, "\r\n", $pos);
            return ($r, $pos) if $nl < 0;
            my $size = hex substr($buf, $pos, $nl - $pos);
            if ($size == 0) {
                return ($r, $pos) if length($buf) < $nl + 4;
                die "chunked: no final CRLF"
                    if substr($buf, $nl + 2, 2) ne "\r\n";
                $r->{complete} = 1;
                return ($r, $nl + 4);
            }
            $r->{chunks}++;
            my $avail = substr($buf, $nl + 2, $size);
            $r->{body} .= $avail;
            return ($r, $pos) if length($buf) < $nl + 2 + $size + 2;
            $pos = $nl + 2 + $size + 2;
        }
    }
    if (defined $h{'content-length'}) {
        $r->{body} = substr($buf, $pos, $h{'content-length'});
        $r->{complete} = length($r->{body}) == $h{'content-length'};
        return ($r, $pos + length $r->{body});
    }
    $r->{body} = substr($buf, $pos);
    $r->{complete} = $eof;
    return ($r, length $buf);
}

sub get {
    my ($uri, @hdrs) = @_;
    return "GET $uri HTTP/1.1\r\nHost: origin\r\n"
        . join('', map { "$_\r\n" } @hdrs) . "\r\n";
}

# one request on a new connection, the response
sub fetch {
    my ($req, %opt) = @_;
    return Client->new->send($req)->response(%opt);
}

sub alive {
    my ($pid) = @_;
    return 0 unless kill 0, $pid;
    open my $fh, '<', "/proc/$pid/stat" or return 0;
    my ($state) = <$fh> =~ /\) (\S)/;
    return $state ne 'Z';
}

sub port_open {
    my ($p) = @_;
    return IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $p,
                                 Proto => 'tcp', Timeout => 5) ? 1 : 0;
}


subtest 'an unknown path is a 404 that no cache may store, with a Date' => sub {
    my $r = fetch(get('/nowhere'));
    is $r->{status}, 404, 'status';
    is $r->{headers}{'cache-control'}, 'no-store', 'Cache-Control';
    like $r->{headers}{date},
        qr/^\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT$/, 'Date';
    is $o->hits('/nowhere'), 1, 'counted';
};

subtest 'status, headers in order, body, Content-Length, Date, Content-Type' => sub {
    $o->set('/ok', status => 203, body => 'x' x 1024,
            headers => ['Cache-Control: max-age=60', 'ETag: "v1"',
                        'X-Dup: a', 'X-Dup: b']);
    my $before = time;
    my $r = fetch(get('/ok'));
    is $r->{status}, 203, 'status';
    is $r->{body}, 'x' x 1024, 'body';
    is $r->{headers}{'content-length'}, 1024, 'Content-Length';
    is $r->{headers}{'content-type'}, 'text/plain', 'default Content-Type';
    is $r->{headers}{'cache-control'}, 'max-age=60', 'Cache-Control';
    is $r->{headers}{etag}, '"v1"', 'ETag';
    is $r->{headers}{'x-dup'}, 'a, b', 'a header given twice is sent twice';
    is_deeply [ grep { /^(?:Cache-Control|ETag|X-Dup)$/ } @{$r->{order}} ],
        [qw(Cache-Control ETag X-Dup X-Dup)], 'in the order given';
    my $date = Test::Edge::Origin::parse_http_date($r->{headers}{date});
    ok defined $date && $date >= int($before) && $date <= time + 1,
        'Date is now';
};

subtest 'a body is bytes, any bytes' => sub {
    my $bytes = join '', map { chr } 0 .. 255;
    $o->set('/bytes', body => $bytes x 4,
            headers => ['Content-Type: application/octet-stream']);
    my $r = fetch(get('/bytes'));
    is $r->{body}, $bytes x 4, 'every byte value, unchanged';
    is $r->{headers}{'content-length'}, 1024, 'Content-Length in bytes';
};

subtest 'a Date and a Content-Type the test gives, or none at all' => sub {
    my $date = 'Sun, 06 Nov 1994 08:49:37 GMT';
    $o->set('/date', body => 'd',
            headers => ["Date: $date", 'Content-Type: application/json']);
    my $r = fetch(get('/date'));
    is $r->{headers}{date}, $date, 'the Date given, once';
    is $r->{headers}{'content-type'}, 'application/json', 'Content-Type';
    is Test::Edge::Origin::http_date(784111777), $date, 'http_date()';
    is Test::Edge::Origin::parse_http_date($date), 784111777,
        'parse_http_date(), IMF-fixdate';
    is Test::Edge::Origin::parse_http_date('Sunday, 06-Nov-94 08:49:37 GMT'),
        784111777, 'parse_http_date(), RFC 850';
    is Test::Edge::Origin::parse_http_date('Sun Nov  6 08:49:37 1994'),
        784111777, 'parse_http_date(), asctime';
    is Test::Edge::Origin::parse_http_date('yesterday'), undef,
        'parse_http_date(), not a date';

    $o->set('/nodate', body => 'd', headers => ['Date: ' => undef]);
    $r = fetch(get('/nodate'));
    ok !exists $r->{headers}{date}, "'Date: ' => undef: no Date";
    $o->set('/nodate', body => 'd', headers => ['Date:', 'Content-Type:']);
    $r = fetch(get('/nodate'));
    ok !exists $r->{headers}{date}, "'Date:': no Date";
    ok !exists $r->{headers}{'content-type'}, "'Content-Type:': none";
    is $r->{body}, 'd', 'body';
};

subtest 'a path with its query string first, then the path alone; hits count the same way' => sub {
    $o->set('/q?a=1', body => 'exact');
    $o->set('/q', body => 'path');
    is fetch(get('/q?a=1'))->{body}, 'exact', '/q?a=1: its own setting';
    is fetch(get('/q?b=2'))->{body}, 'path', '/q?b=2: the setting for /q';
    is fetch(get('/q'))->{body}, 'path', '/q';
    is fetch(get('/q?a=1'))->{body}, 'exact', '/q?a=1 again';
    is $o->hits('/q?a=1'), 2, 'hits(/q?a=1): that target only';
    is $o->hits('/q?b=2'), 1, 'hits(/q?b=2)';
    is $o->hits('/q'), 4, 'hits(/q): every query string';
    is $o->hits('/q?c=3'), 0, 'hits() of a target never asked';
    $o->unset('/q');
    is fetch(get('/q?b=2'))->{status}, 404, 'unset(/q): 404 again';
    is fetch(get('/q?a=1'))->{body}, 'exact', '... /q?a=1 kept';
};

subtest 'keep-alive, Connection: close, HTTP/1.0, keepalive => 0' => sub {
    $o->set('/ka', body => 'ka', count_body => 1);
    my $c = Client->new;
    my $r1 = $c->send(get('/ka'))->response;
    my $r2 = $c->send(get('/ka'))->response;
    is "$r1->{body} $r2->{body}", 'ka#1 ka#2',
        'two requests on one connection';
    ok !exists $r1->{headers}{connection}, 'no Connection header';
    my $r3 = $c->send(get('/ka', 'Connection: close'))->response;
    is $r3->{body}, 'ka#3', 'a third, with Connection: close';
    is $r3->{headers}{connection}, 'close', '... answered with close';
    ok $c->closed, '... and the server closed';

    $c = Client->new;
    my $r = $c->send("GET /ka HTTP/1.0\r\n\r\n")->response;
    is $r->{body}, 'ka#4', 'HTTP/1.0';
    ok $c->closed, '... closed after the response';
    $c = Client->new;
    $r = $c->send("GET /ka HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        ->response;
    is $r->{headers}{connection}, 'keep-alive',
        'HTTP/1.0 with keep-alive: kept';
    is $c->send(get('/ka'))->response->{body}, 'ka#6', '... and reused';

    $o->set('/ka', body => 'ka', keepalive => 0);
    $c = Client->new;
    $r = $c->send(get('/ka'))->response;
    is $r->{headers}{connection}, 'close', 'keepalive => 0: close';
    ok $c->closed, '... and closed';
};

subtest 'pipelined requests are answered in order' => sub {
    $o->set('/p1', body => 'one', delay => 0.3);
    $o->set('/p2', body => 'two');
    my $c = Client->new->send(get('/p1') . get('/p2') . get('/p1'));
    is join(' ', map { $c->response->{body} } 1 .. 3), 'one two one',
        'three in one write';
};

subtest 'request bodies, Content-Length and chunked, are read and discarded' => sub {
    $o->set('/b', body => 'b', count_body => 1);
    my $c = Client->new;
    $c->send("POST /b HTTP/1.1\r\nHost: o\r\nContent-Length: 11\r\n\r\n"
             . "hello world");
    is $c->response->{body}, 'b#1', 'POST with Content-Length';
    $c->send("PUT /b HTTP/1.1\r\nHost: o\r\nTransfer-Encoding: chunked\r\n"
             . "\r\n5;ext=1\r\nhello\r\n1A\r\n" . ('z' x 26) . "\r\n"
             . "0\r\nX-Trailer: t\r\n\r\n");
    is $c->response->{body}, 'b#2', 'PUT chunked, extension and trailer';
    # the body arrives in pieces: the server waits for all of it
    $c->send("DELETE /b HTTP/1.1\r\nHost: o\r\nContent-Length: 6\r\n\r\nab");
    ok $c->silent_for(0.3), 'DELETE: no answer before its body is complete';
    $c->send("cdef");
    is $c->response->{body}, 'b#3', 'DELETE with a body';
    is $c->send(get('/b'))->response->{body}, 'b#4',
        'a GET after them on the same connection';
    is_deeply [ map { "$_->{method} $_->{body_length}" } $o->requests('/b') ],
        ['POST 11', 'PUT 31', 'DELETE 6', 'GET 0'],
        'requests(): methods and body lengths';

    $c = Client->new;
    $c->send("POST /b HTTP/1.1\r\nHost: o\r\nContent-Length: 3\r\n"
             . "Expect: 100-continue\r\n\r\n");
    my $r = $c->response;
    is $r->{status}, 100, 'Expect: 100-continue gets its 100';
    $c->send('abc');
    is $c->response->{body}, 'b#5', '... then the answer';
};

subtest 'HEAD: the GET header, no body' => sub {
    $o->set('/h', body => 'y' x 100, headers => ['ETag: "h"']);
    my $c = Client->new;
    my $r = $c->send("HEAD /h HTTP/1.1\r\nHost: o\r\n\r\n")
        ->response(head => 1);
    is $r->{status}, 200, 'status';
    is $r->{headers}{'content-length'}, 100, 'Content-Length of the body';
    is $r->{headers}{etag}, '"h"', 'headers';
    $r = $c->send(get('/h'))->response;
    is $r->{body}, 'y' x 100,
        'no body was sent: the next response on the connection is whole';
    is $o->hits('/h'), 2, 'both counted';
    $o->set('/h', body => 'y' x 100, chunked => 1);
    $r = Client->new->send("HEAD /h HTTP/1.1\r\nHost: o\r\n\r\n")
        ->response(head => 1);
    is $r->{headers}{'transfer-encoding'}, 'chunked', 'HEAD of chunked';
};

subtest 'a setting changed between two requests on one connection' => sub {
    $o->set('/chg', body => 'first');
    my $c = Client->new;
    is $c->send(get('/chg'))->response->{body}, 'first', 'first';
    $o->set('/chg', body => 'second', status => 500);
    my $r = $c->send(get('/chg'))->response;
    is "$r->{status} $r->{body}", '500 second', 'the new setting';
};

subtest 'count_body tells each response apart' => sub {
    $o->set('/n', body => 'v', count_body => 1);
    is fetch(get('/n'))->{body}, 'v#1', 'first';
    is fetch(get('/n?x'))->{body}, 'v#2', 'second, through a query string';
    is fetch(get('/n'))->{headers}{'content-length'}, 3, 'Content-Length';
    is $o->hits('/n'), 3, 'hits';
};

subtest 'chunked => 1: a chunked body in several chunks' => sub {
    my $body = join '', map { chr(65 + $_ % 26) } 1 .. 20000;
    $o->set('/chunked', body => $body, chunked => 1);
    my $r = fetch(get('/chunked'));
    is $r->{headers}{'transfer-encoding'}, 'chunked', 'Transfer-Encoding';
    ok !exists $r->{headers}{'content-length'}, 'no Content-Length';
    ok $r->{complete}, 'last chunk';
    cmp_ok $r->{chunks}, '>', 1, 'more than one chunk';
    is $r->{body}, $body, 'body';
    $o->set('/chunked', chunked => 1);
    $r = fetch(get('/chunked'));
    ok $r->{complete} && $r->{body} eq '', 'empty chunked body';
};

subtest 'delay and body_delay hold the response at least that long' => sub {
    $o->set('/slow', body => 's', delay => 0.5);
    my $t = time;
    my $r = fetch(get('/slow'));
    my $took = time - $t;
    is $r->{body}, 's', 'answered';
    cmp_ok $took, '>=', 0.5, 'after the delay';
    $o->set('/slow', body => 's' x 10, delay => 0.2, body_delay => 0.4);
    $t = time;
    my $c = Client->new->send(get('/slow'));
    $r = $c->response;
    $took = time - $t;
    is $r->{body}, 's' x 10, 'answered';
    cmp_ok $took, '>=', 0.6, 'the body after delay + body_delay';
};

subtest "mode 'close': the request read, the connection closed, no answer" => sub {
    $o->set('/close', mode => 'close', delay => 0.3, body => 'never');
    my $t = time;
    my $c = Client->new->send(get('/close'));
    ok $c->closed, 'closed';
    cmp_ok time - $t, '>=', 0.3, 'after the delay';
    is $c->{buf}, '', 'no byte sent';
    is $c->{err}, 0, 'a close, not a reset';
    is $o->hits('/close'), 1, 'counted';
};

subtest "mode 'hang': never answers while others are answered; reset closes it" => sub {
    $o->set('/hang', mode => 'hang', body => 'never');
    $o->set('/fast', body => 'fast');
    my @held = map { Client->new->send(get('/hang')) } 1 .. 3;
    ok wait_until(10, sub { $o->hits('/hang') == 3 }), 'all three received';
    is fetch(get('/fast'))->{body}, 'fast',
        'another path is answered while they hang';
    ok $held[0]->silent_for(1), 'nothing sent in 1 s';
    $o->reset;
    ok $_->closed, 'closed by reset' for @held;
    is join('', map { $_->{buf} } @held), '', 'no byte sent';
};

subtest "mode 'truncate': the full Content-Length, half the body, then close" => sub {
    $o->set('/trunc', mode => 'truncate', body => 'a' x 1000,
            headers => ['ETag: "t"']);
    my $c = Client->new->send(get('/trunc'));
    my $r = $c->response;
    is $r->{status}, 200, 'the header';
    is $r->{headers}{'content-length'}, 1000, 'Content-Length: 1000';
    is $r->{headers}{connection}, 'close', 'Connection: close';
    ok !$r->{complete}, 'incomplete';
    is length $r->{body}, 500, 'half the body';
    ok $c->{eof}, 'then the connection closed';

    $o->set('/trunc', mode => 'truncate', body => 'a' x 1000, chunked => 1,
            body_delay => 0.2);
    $c = Client->new->send(get('/trunc'));
    $r = $c->response;
    ok $r->{chunked} && !$r->{complete}, 'chunked: no last chunk';
    is $r->{body}, 'a' x 500, '... half the body';
    ok $c->{eof}, '... then the connection closed';
};

subtest "mode 'truncate_reset': half the body, then a TCP reset" => sub {
    $o->set('/trunc', mode => 'truncate_reset', body => 'b' x 1000,
            chunked => 1);
    my $c = Client->new->send(get('/trunc'));
    my $r = $c->response;
    ok $c->closed, 'the connection ends';
    is $c->{err}, Errno::ECONNRESET, 'with ECONNRESET';
    ok $r->{chunked} && !$r->{complete}, 'chunked, no last chunk';
    is $r->{body}, 'b' x 500, 'half the body before the reset';
};

subtest "mode 'reset': the request read, then a TCP reset" => sub {
    $o->set('/rst', mode => 'reset', body => 'never');
    my $c = Client->new->send(get('/rst'));
    ok $c->closed, 'the connection ends';
    is $c->{err}, Errno::ECONNRESET, 'with ECONNRESET';
    is $c->{buf}, '', 'no byte sent';
    is $o->hits('/rst'), 1, 'counted';
};

subtest 'conditional => 1: 304 to If-None-Match, then If-Modified-Since' => sub {
    my $lm = 'Sun, 06 Nov 1994 08:49:37 GMT';
    my $older = 'Sat, 05 Nov 1994 08:49:37 GMT';
    my $newer = 'Mon, 07 Nov 1994 08:49:37 GMT';
    $o->set('/cond', body => 'full', conditional => 1,
            headers => ['ETag: "v2"', "Last-Modified: $lm",
                        'Cache-Control: max-age=5']);
    my $c = Client->new;
    my $r = $c->send(get('/cond', 'If-None-Match: "v2"'))->response;
    is $r->{status}, 304, 'If-None-Match matches: 304';
    is $r->{headers}{etag}, '"v2"', '... with the ETag';
    is $r->{headers}{'cache-control'}, 'max-age=5', '... and the set headers';
    ok $r->{headers}{date}, '... and a Date';
    ok !exists $r->{headers}{'content-length'}
        && !exists $r->{headers}{'content-type'}, '... no body headers';
    is $c->send(get('/cond'))->response->{body}, 'full',
        '... no body: the next response on the connection is whole';

    my %cases = (
        'W/"v2"'              => 304,
        '"v1", W/"v2"'        => 304,
        '*'                   => 304,
        '"v1"'                => 200,
    );
    for my $inm (sort keys %cases) {
        is fetch(get('/cond', "If-None-Match: $inm"))->{status},
            $cases{$inm}, "If-None-Match: $inm";
    }
    is fetch(get('/cond', "If-Modified-Since: $lm"))->{status}, 304,
        'If-Modified-Since = Last-Modified: 304';
    is fetch(get('/cond', "If-Modified-Since: $newer"))->{status}, 304,
        'If-Modified-Since later: 304';
    is fetch(get('/cond', "If-Modified-Since: $older"))->{status}, 200,
        'If-Modified-Since earlier: 200';
    is fetch(get('/cond', "If-Modified-Since: garbage"))->{status}, 200,
        'If-Modified-Since not a date: 200';
    is fetch(get('/cond', 'If-None-Match: "v1"',
                 "If-Modified-Since: $newer"))->{status}, 200,
        'If-None-Match decides when present';
    is fetch("POST /cond HTTP/1.1\r\nHost: o\r\nIf-None-Match: \"v2\"\r\n"
             . "Content-Length: 0\r\n\r\n")->{status}, 200,
        'only GET and HEAD';
    $o->set('/cond', body => 'full', headers => ['ETag: "v2"']);
    is fetch(get('/cond', 'If-None-Match: "v2"'))->{status}, 200,
        'without conditional => 1: 200';
};

subtest 'requests(): method, target, path, headers by lower-case name' => sub {
    $o->reset;
    $o->set('/r', body => 'r');
    fetch(get('/r?x=1', 'X-Test: one', 'Accept-Encoding: gzip'));
    fetch("HEAD /r HTTP/1.1\r\nHost: o\r\nX-Multi: a\r\nX-Multi: b\r\n\r\n",
          head => 1);
    my @r = $o->requests('/r');
    is scalar @r, 2, 'two';
    is_deeply [ map { [ @$_{qw(method uri path version)} ] } @r ],
        [ [qw(GET /r?x=1 /r 1.1)], [qw(HEAD /r /r 1.1)] ], 'in order';
    is $r[0]{headers}{'x-test'}, 'one', 'a header';
    is $r[0]{headers}{'accept-encoding'}, 'gzip', 'another';
    is $r[1]{headers}{'x-multi'}, 'a, b', 'a repeated header, joined';
    is scalar(() = $o->requests('/r?x=1')), 1, 'requests(/r?x=1)';
    is $o->hits, 2, 'hits(): every path; the control channel not counted';
};

subtest 'reset() forgets settings, counters and requests' => sub {
    $o->set('/gone', body => 'g');
    fetch(get('/gone'));
    is $o->hits('/gone'), 1, 'counted';
    $o->reset;
    is $o->hits('/gone'), 0, 'hits 0';
    is $o->hits, 0, 'total 0';
    is scalar(() = $o->requests), 0, 'no requests';
    is fetch(get('/gone'))->{status}, 404, 'settings gone';
};

subtest 'a malformed request gets 400 and a close' => sub {
    my %bad = (
        'no request line' => "GARBAGE\r\n\r\n",
        'a header line without a colon' =>
            "GET / HTTP/1.1\r\nno colon here\r\n\r\n",
        'Content-Length: -1' =>
            "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        'a chunk size that is no hex number' =>
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        'a header larger than 64 KiB' =>
            "GET / HTTP/1.1\r\nX-Big: " . ('b' x 70000) . "\r\n\r\n",
    );
    for my $name (sort keys %bad) {
        my $c = Client->new->send($bad{$name});
        is $c->response->{status}, 400, "400: $name";
        ok $c->closed, '... closed';
    }
};

subtest 'set() refuses what it does not know' => sub {
    for ([mode => 'sometimes'], [colour => 'red'], [status => 'ok'],
         [delay => '-1'], [headers => 'X: y'], [headers => ['no colon']])
    {
        my $what = ref $_->[1] ? "[@{$_->[1]}]" : $_->[1];
        ok !eval { $o->set('/x', @$_); 1 }, "$_->[0] => $what";
    }
    ok !eval { $o->set('/x', body => "caf\x{e9} \x{263a}"); 1 },
        'a body with wide characters';
    ok !eval { $o->set('/__origin/set', body => 'x'); 1 },
        'the control channel';
    ok !eval { $o->set('relative', body => 'x'); 1 }, 'a key without /';
};

subtest '200 concurrent connections held by delay => 1: all answered and counted' => sub {
    $o->reset;
    $o->set('/stampede', body => 'z' x 1024, delay => 1);
    my $n = 200;
    my $t0 = time;
    my @c;
    for (1 .. $n) {
        my $c = Client->new;
        $c->{sent} = time;
        $c->send(get('/stampede', 'Connection: close'));
        push @c, $c;
    }
    # read them all together
    my %open = map { fileno($_->{sock}) => $_ } @c;
    my $deadline = time + 120;
    while (%open && time < $deadline) {
        my $rin = '';
        vec($rin, $_, 1) = 1 for keys %open;
        next unless select(my $rout = $rin, undef, undef, 1) > 0;
        for my $fd (keys %open) {
            next unless vec($rout, $fd, 1);
            my $c = $open{$fd};
            $c->fill(0);
            if ($c->{eof}) {
                $c->{done} = time;
                delete $open{$fd};
            }
        }
    }
    my $took = time - $t0;
    my @r = map { (parse_response($_->{buf}, 0, 1))[0] } @c;
    is scalar(grep { $_ && $_->{complete} && $_->{status} == 200
                     && $_->{body} eq 'z' x 1024 } @r), $n,
        "$n complete 200 responses";
    is $o->hits('/stampede'), $n, "$n counted";
    my ($early) = grep { !$_->{done} || $_->{done} - $_->{sent} < 0.999 } @c;
    ok !$early, 'none answered before its delay';
    cmp_ok $took, '<', 60, "in bounded time (one at a time: ${n} s)";
    diag sprintf "%d connections held 1 s each, answered in %.2f s", $n,
        $took;
};

subtest 'stop(), scope exit, END and a killed parent all end the server' => sub {
    my $x = Test::Edge::Origin->start;
    my ($pid, $p) = ($x->pid, $x->port);
    ok alive($pid) && port_open($p), 'running';
    $x->stop;
    ok !alive($pid), 'stop(): the process is gone';
    ok !port_open($p), '... and the port refuses';
    ok !eval { $x->hits; 1 }, '... and the methods say so';

    {
        my $y = Test::Edge::Origin->start;
        ($pid, $p) = ($y->pid, $y->port);
    }
    ok !alive($pid) && !port_open($p), 'scope exit';

    (my $lib = $INC{'Test/Edge/Origin.pm'}) =~ s{/Test/Edge/Origin\.pm$}{};
    my $script = 'our $o = Test::Edge::Origin->start; $| = 1; '
        . 'print $o->pid, " ", $o->port, "\n";';
    ($pid, $p) = split ' ', `$^X -I$lib -MTest::Edge::Origin -e '$script'`;
    ok $pid && !alive($pid) && !port_open($p),
        'a process that exits without stop() stops it (END)';

    # Become the orphan's new parent (PR_SET_CHILD_SUBREAPER) so the test
    # reaps it: PID 1 here may not, and a zombie would outlive the test.
    my $subreaper = $Config::Config{archname} =~ /^x86_64-linux/
        && syscall(157, 36, 1, 0, 0, 0) == 0;
    my $kid = open my $fh, '-|', $^X, "-I$lib", '-MTest::Edge::Origin',
        '-e', "$script sleep 120" or die "fork: $!";
    {
        local $SIG{ALRM} = sub { die "no pid line\n" };
        alarm 60;
        ($pid, $p) = split ' ', scalar <$fh>;
        alarm 0;
    }
    ok alive($pid), 'a server whose parent ...';
    kill 'KILL', $kid;
    close $fh;
    ok wait_until(20, sub { !alive($pid) && !port_open($p) }),
        '... was killed exits by itself';
    waitpid $pid, 0 if $subreaper;
};

$o->stop;
done_testing;
