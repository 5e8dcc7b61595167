package Test::Nginx::Socket;

# A small, self-contained stand-in for Test::Nginx::Socket (openresty's
# test-nginx), written from its documented behaviour.  The .t files must run
# unchanged under either; t/perl-append-inc puts t/lib at the END of @INC so
# an installed Test::Nginx always wins.
#
#   use Test::Nginx::Socket 'no_plan';
#   repeat_each(1); workers(2); master_on(); no_shuffle();
#   run_tests();
#   __DATA__
#   === TEST 1: ...
#
# The block format and environment variables are described in the POD at the
# end of this file.

use strict;
use warnings;

# "-base" (lower case) makes us a Test::Base subclass without Spiffy's source
# filter; Test::Base's import then handles 'no_plan' / tests => N for us and
# exports its own (Test::More based) functions next to ours.
use Test::Base -base;

use IO::Socket::INET;
use List::Util ();
use Text::Diff ();
use Time::HiRes ();
use Test::Nginx::Util;

our $VERSION = '0.01';

our @EXPORT = (@Test::Nginx::Util::EXPORT, qw(run_tests is_str));

# ---------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------

sub run_tests () {
    # Without a plan from the .t file, count as we go.  (Test::Base's END
    # block would plan again after a done_testing(), so plan up front.)
    plan('no_plan') unless Test::More->builder->has_plan;
    my @blocks = blocks();
    @blocks = List::Util::shuffle(@blocks)
        unless $Test::Nginx::Util::NoShuffle || $ENV{TEST_NGINX_NO_SHUFFLE};
    Test::Nginx::Util::kill_stale_nginx();
    for my $block (@blocks) {
        $_->($block) for @Test::Nginx::Util::BlockPreprocessors;
        run_block($block);
    }
}

my %Internal = map { $_ => 1 }
    qw(name description seq_num is_filtered blocks_object original_values);

# Applies $fn to every plain string in $v, descending into array refs.
sub map_strings {
    my ($v, $fn) = @_;
    return $fn->($v) unless ref $v;
    return [map { map_strings($_, $fn) } @$v] if ref $v eq 'ARRAY';
    return $v;
}

# Expands $TEST_NGINX_* in every section value.
sub expand_block {
    my ($block) = @_;
    my @secs = grep { !/^_/ && !$Internal{$_} && ref $block->{$_} eq 'ARRAY' }
               keys %$block;
    my @texts;
    map_strings($block->{$_}, sub { push @texts, $_[0] if defined $_[0] })
        for @secs;
    Test::Nginx::Util::assign_rand_ports(\@texts);
    $block->{$_} = map_strings($block->{$_}, \&Test::Nginx::Util::expand_env)
        for @secs;
}

sub version_cmp {
    my @a = split /\./, shift;
    my @b = split /\./, shift;
    while (@a || @b) {
        my $c = (shift(@a) // 0) <=> (shift(@b) // 0);
        return $c if $c;
    }
    return 0;
}

# "--- skip_eval: N: perl-expr" and "--- skip_nginx: N: < 1.21.0"
sub skip_reason {
    my ($block) = @_;
    if (defined(my $s = $block->skip_eval)) {
        my ($n, $code) = $s =~ /^\s*(\d+)\s*:\s*(.*?)\s*$/s
            or die "bad skip_eval: $s\n";
        my $r = eval $code;
        die "skip_eval failed: $@" if $@;
        return ($n, "skip_eval: $code") if $r;
    }
    if (defined(my $s = $block->skip_nginx)) {
        my ($n, $op, $ver) = $s =~ /^\s*(\d+)\s*:\s*([<>]=?|==|!=)\s*(\S+)\s*$/
            or die "bad skip_nginx: $s\n";
        my $c = version_cmp(Test::Nginx::Util::nginx_version(), $ver);
        my %ops = ('<' => $c < 0, '<=' => $c <= 0, '>' => $c > 0,
                   '>=' => $c >= 0, '==' => $c == 0, '!=' => $c != 0);
        return ($n, "nginx version $op $ver") if $ops{$op};
    }
    return;
}

sub run_block {
    my ($block) = @_;
    my $name = $block->name;

    my ($nskip, $why) = eval { skip_reason($block) };
    if ($@) { chomp(my $err = $@); fail("$name - $err"); return }
    if ($nskip) {
        SKIP: { skip("$name - $why", $nskip) }
        return;
    }
    if (!eval { expand_block($block); 1 }) {
        chomp(my $err = $@);
        fail("$name - $err");
        return;
    }

    Test::Nginx::Util::stop_nginx();
    Test::Nginx::Util::prepare_servroot();
    Test::Nginx::Util::write_user_files(scalar $block->user_files);
    Test::Nginx::Util::write_config($block);

    if (defined $block->must_die) {
        run_must_die($block);
        return;
    }

    my ($ok, $err) = Test::Nginx::Util::start_nginx();
    if (!$ok) {
        fail("$name - nginx started");
        diag("$err\n" . log_tail(30));
        Test::Nginx::Util::stop_nginx();
        return;
    }

    for my $r (0 .. $Test::Nginx::Util::RepeatEach - 1) {
        run_repeat($block, $r);
    }

    # TEST_NGINX_NO_CLEAN leaves nginx running for inspection (the next
    # block stops it); shutdown and valgrind checks are skipped then.
    return if $ENV{TEST_NGINX_NO_CLEAN};
    if (!Test::Nginx::Util::stop_nginx()) {
        fail("$name - nginx exited before the end of the block");
        diag(log_tail(30));
    }
    my $log = Test::Nginx::Util::read_file($Test::Nginx::Util::ErrLogFile);
    check_log_patterns($block, $log, '(shutdown)', 'shutdown_error_log',
                       'no_shutdown_error_log', 0);
    check_crashes($block, $log);
    check_valgrind($block) if $Test::Nginx::Util::UseValgrind;
}

sub run_must_die {
    my ($block) = @_;
    my $name = $block->name;
    my ($ok) = Test::Nginx::Util::start_nginx();
    if ($ok) {
        fail("$name - nginx must die");
        diag("nginx started although the block has --- must_die");
        Test::Nginx::Util::stop_nginx();
    } else {
        pass("$name - nginx died as expected");
    }
    # The reason nginx gave usually only made it to stderr.
    my $log = Test::Nginx::Util::read_file($Test::Nginx::Util::StderrFile)
            . Test::Nginx::Util::read_file($Test::Nginx::Util::ErrLogFile);
    check_log_patterns($block, $log, '(req 0)', 'error_log', 'no_error_log',
                       0);
    check_valgrind($block) if $Test::Nginx::Util::UseValgrind;
}

# One repetition: all requests of the block plus the log checks.
sub run_repeat {
    my ($block, $r) = @_;
    my $name = $block->name;
    my $log_file = $Test::Nginx::Util::ErrLogFile;
    # The first repetition also sees what nginx logged while starting.
    my $log_off = $r == 0 ? 0 : Test::Nginx::Util::file_size($log_file);
    my $slow = $Test::Nginx::Util::Slowdown;
    my $timeout = ($block->timeout // 3) * $slow;

    my $srv;
    if (defined(my $port = $block->tcp_listen)) {
        chomp $port;
        my $q = $block->tcp_query;
        my $len = $block->tcp_query_len;
        $len //= ref $q eq 'ARRAY' ? [map { ref $_ ? undef : length $_ } @$q]
               : defined $q && !ref $q ? length $q : undef;
        my ($s, $err) = Test::Nginx::Util::start_tcp_server(
            port => $port, query_len => $len,
            reply => scalar $block->tcp_reply,
            no_close => defined $block->tcp_no_close,
            tag => $block->seq_num . "-$r", timeout => $block->timeout // 3);
        if (!$s) {
            fail("$name - fake tcp server started");
            diag($err);
        } else {
            push @Test::Nginx::Util::TcpServers, $srv = $s;
        }
    }

    my ($reqs, $need_array, $pipelined) = request_list($block);
    if ($pipelined) {
        my $res = http_exchange($block, [map { $_->{bytes} } @$reqs],
                                [map { $_->{method} } @$reqs],
                                $timeout, $r, 0);
        check_pipelined($block, $res, $r);
    } else {
        for my $i (0 .. $#$reqs) {
            my $res = http_exchange($block, [$reqs->[$i]{bytes}],
                                    [$reqs->[$i]{method}], $timeout, $r, $i);
            check_response($block, $res->{responses}[0], $r, $i, $need_array);
        }
    }

    check_tcp_query($block, $srv, $timeout) if $srv;

    my $wait = $block->wait;
    Time::HiRes::sleep($wait * $slow) if $wait;

    check_log_patterns($block, undef, "(req $r)", 'error_log', 'no_error_log',
                       $log_off);
    check_grep_error_log($block, $r, $log_off);

    if ($srv) {
        Test::Nginx::Util::stop_tcp_server($srv);
        @Test::Nginx::Util::TcpServers =
            grep { $_ != $srv } @Test::Nginx::Util::TcpServers;
    }
}

# ---------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------

# Returns ([{bytes, method}...], $need_array, $pipelined).
sub request_list {
    my ($block) = @_;
    my $join = sub {   # a request may be given as pieces
        my $v = shift;
        return $v unless ref $v eq 'ARRAY';
        return join '', map { ref $_ eq 'HASH' ? $_->{value} : $_ } @$v;
    };
    if (defined(my $raw = $block->raw_request)) {
        $raw = $join->($raw);
        my ($m) = $raw =~ /^\s*(\S+)/;
        return ([{ bytes => $raw, method => $m // '' }], 0, 0);
    }
    if (defined(my $p = $block->pipelined_requests)) {
        my @p = ref $p eq 'ARRAY' ? @$p : ($p);
        my @reqs = map {
            build_request($join->($p[$_]), more_headers($block, $_),
                          $_ == $#p ? 'close' : 'keep-alive')
        } 0 .. $#p;
        return (\@reqs, 0, 1);
    }
    my $req = $block->request;
    return ([], 0, 0) unless defined $req;
    my $need_array = ref $req eq 'ARRAY';
    my @r = $need_array ? @$req : ($req);
    my @reqs = map {
        build_request($join->($r[$_]), more_headers($block, $_), 'close')
    } 0 .. $#r;
    return (\@reqs, $need_array, 0);
}

sub more_headers {
    my ($block, $i) = @_;
    my $h = $block->more_headers;
    $h = $h->[$i] if ref $h eq 'ARRAY';
    return $h // '';
}

# "METHOD URI [HTTP/x.y]" on the first line, the body after it.
sub build_request {
    my ($text, $more, $conn) = @_;
    $text //= '';
    $text =~ s/\A(?:[ \t]*(?:#[^\n]*)?\n)+//;   # blank and comment lines
    $text =~ s/\A\s+//;
    my ($line, $body) = split /\n/, $text, 2;
    $line //= '';
    $body //= '';
    $line =~ s/\s+\z//;
    my ($method, $uri, $proto) =
        $line =~ m{^(\S+)\s+(.*?)(?:\s+(HTTP/\d+\.\d+))?$};
    ($method, $uri) = ($line, '/') unless defined $method;
    $proto //= 'HTTP/1.1';

    my @hdrs = grep { /\S/ } split /\r?\n/, $more;
    my $has = sub { my $n = shift; grep { /^\Q$n\E\s*:/i } @hdrs };
    my $chunked = grep { /^Transfer-Encoding\s*:\s*chunked/i } @hdrs;
    if (!$chunked) {
        $body =~ s/\A\s+//;
        $body =~ s/\s+\z//;
    }
    utf8::encode($body) if utf8::is_utf8($body);
    unshift @hdrs, "Connection: $conn" unless $has->('Connection');
    unshift @hdrs, 'Host: localhost' unless $has->('Host');
    push @hdrs, 'Content-Length: ' . length $body
        if length $body && !$chunked && !$has->('Content-Length');
    my $bytes = "$method $uri $proto\r\n"
              . join('', map { "$_\r\n" } @hdrs) . "\r\n" . $body;
    return { bytes => $bytes, method => $method };
}

# Writes the requests on one connection and reads the responses.
# Returns { responses => [...], timed_out => bool, error => str }.
sub http_exchange {
    my ($block, $reqs, $methods, $timeout, $r, $i) = @_;
    my $name = $block->name;
    local $SIG{PIPE} = 'IGNORE';
    my %out = (responses => []);
    my $port = $ENV{TEST_NGINX_CLIENT_PORT} || $Test::Nginx::Util::ServerPort;
    my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                     PeerPort => $port, Proto => 'tcp',
                                     Timeout => $timeout);
    if (!$sock) {
        fail("$name - connect to nginx at 127.0.0.1:$port"
             . " (repeated req $r, req $i)");
        diag("connect failed: $!\n" . log_tail(20));
        return \%out;
    }
    $sock->blocking(0);
    my $deadline = Time::HiRes::time() + $timeout;
    my $data = join '', @$reqs;
    my ($buf, $eof, $res, $complete) = ('', 0);
    # When nginx is asked to close the connection after the last response,
    # parse only at EOF (re-parsing after every read is quadratic).
    my $wait_eof = $reqs->[-1] =~ /\A.*?\r\n\r\n/s
                && $& =~ /^Connection:\s*close\r$/mi;

    while (1) {
        ($res, $complete) = parse_responses($buf, $methods, $eof)
            if $eof || !$wait_eof;
        last if $complete || $eof;
        my $left = $deadline - Time::HiRes::time();
        my ($rin, $win) = ('', '');
        vec($rin, fileno $sock, 1) = 1;
        vec($win, fileno $sock, 1) = 1 if length $data;
        my ($rout, $wout);
        if ($left <= 0
            || !select($rout = $rin, $wout = $win, undef, $left))
        {
            $out{timed_out} = 1;
            ($res) = parse_responses($buf, $methods, 1);
            last;
        }
        if (length $data && vec($wout, fileno $sock, 1)) {
            my $n = syswrite $sock, $data;
            if (defined $n) {
                substr($data, 0, $n, '');
            } elsif (!$!{EAGAIN}) {
                $data = '';   # nginx may answer early, e.g. with a 413
            }
        }
        if (vec($rout, fileno $sock, 1)) {
            my $n = sysread $sock, $buf, 65536, length $buf;
            if (!defined $n && !$!{EAGAIN}) {
                $out{error} = "$!";
                $eof = 1;
            }
            $eof = 1 if defined $n && $n == 0;
        }
    }
    close $sock;
    $out{responses} = $res;
    $out{raw} = $buf;
    return \%out if defined $block->ignore_response;
    diag("$name - the connection closed without any response"
         . ($out{error} ? " ($out{error})" : ''))
        if !@$res && !$out{timed_out};
    if ($out{timed_out} && !defined $block->abort) {
        fail("$name - ERROR: client socket timed out after ${timeout}s"
             . " (repeated req $r, req $i)");
        diag("received so far: " . escape(substr $buf, 0, 2000));
    }
    return \%out;
}

# Parses as many responses as were requested; complete is true once all of
# them are fully there.  At EOF whatever arrived is returned as-is.
sub parse_responses {
    my ($buf, $methods, $eof) = @_;
    my @res;
    my $pos = 0;
    while (@res < @$methods) {
        my $one = parse_one($buf, \$pos, $methods->[@res] // '', $eof)
            or last;
        push @res, $one;
        last if $one->{incomplete};
    }
    my $complete = @res == @$methods && !grep { $_->{incomplete} } @res;
    return (\@res, $complete);
}

sub parse_one {
    my ($buf, $pos, $method, $eof) = @_;
    my $start = $$pos;
    return undef if $start >= length $buf;
    my $rest = substr $buf, $start;
    my ($head, $p, $code, $status, @lines);
    if ($rest =~ /\A(.*?)\r?\n\r?\n/s) {
        ($head, $p) = ($1, $start + $+[0]);
        ($status, @lines) = split /\r?\n/, $head;
        ($code) = $status =~ m{^HTTP/\d+\.\d+\s+(\d{3})\b};
    }
    if (!defined $code) {
        # no status line (yet): either an HTTP/0.9 style raw reply, which
        # runs until the connection closes, or headers still arriving
        return undef unless $eof;
        $$pos = length $buf;
        return { code => undef, headers => {}, body => $rest,
                 raw_headers => '' } if $rest !~ m{^HTTP/};
        return { code => scalar(($rest =~ m{^HTTP/\S+\s+(\d+)})[0]),
                 incomplete => 1, headers => {}, body => '',
                 raw_headers => $rest };
    }
    my %h;
    for (@lines) {
        push @{$h{lc $1}}, $2 if /^([^:]+?)\s*:\s*(.*?)\s*$/;
    }
    if ($code =~ /^1/ && $code != 101) {   # interim response, e.g. 100
        $$pos = $p;
        return parse_one($buf, $pos, $method, $eof);
    }
    my %res = (code => $code, status_line => $status, headers => \%h,
               raw_headers => $head, body => '');
    my $te = lc join ',', @{$h{'transfer-encoding'} || []};
    my $cl = $h{'content-length'} ? $h{'content-length'}[0] : undef;
    if (uc $method eq 'HEAD' || $code == 204 || $code == 304) {
        $$pos = $p;
    } elsif ($te =~ /chunked/) {
        my $q = $p;
        while (1) {
            my $le = index $buf, "\r\n", $q;
            last if $le < 0;
            my ($size) = substr($buf, $q, $le - $q) =~ /^\s*([0-9a-fA-F]+)/;
            last unless defined $size;
            $size = hex $size;
            if ($size == 0) {   # last chunk, optional trailers, CRLF
                my $end = substr($buf, $le + 2, 2) eq "\r\n" ? $le + 4
                        : do { my $t = index $buf, "\r\n\r\n", $le;
                               $t < 0 ? -1 : $t + 4 };
                last if $end < 0;
                $$pos = $end;
                return \%res;
            }
            last if length($buf) < $le + 2 + $size + 2;
            $res{body} .= substr $buf, $le + 2, $size;
            $q = $le + 2 + $size + 2;
        }
        return undef unless $eof;
        $res{incomplete} = 1;
        $$pos = length $buf;
    } elsif (defined $cl) {
        if (length($buf) - $p < $cl) {
            return undef unless $eof;
            $res{incomplete} = 1;
        }
        $res{body} = substr $buf, $p, $cl;
        $$pos = $p + length $res{body};
    } else {   # delimited by the connection close
        return undef unless $eof;
        $res{body} = substr $buf, $p;
        $$pos = length $buf;
    }
    return \%res;
}

sub header {
    my ($res, $name) = @_;
    my $v = $res && $res->{headers}{lc $name};
    return $v ? join(', ', @$v) : undef;
}

# ---------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------

# Expected values for request $i: an array when several requests were
# given (as upstream insists), otherwise a plain value.
sub indexed {
    my ($block, $sec, $i, $need_array) = @_;
    my $v = $block->$sec;
    return undef unless defined $v;
    if (ref $v eq 'ARRAY') {
        return $v->[$i] if $need_array || $i == 0;
    } elsif (!$need_array) {
        return $v;
    }
    fail($block->name . " - --- $sec must be "
         . ($need_array ? 'an array, one entry per request'
                        : 'a single value for a single request'));
    return undef;
}

sub escape {
    my ($s) = @_;
    return 'undef' unless defined $s;
    my %named = ("\n" => '\n', "\r" => '\r', "\t" => '\t', '"' => '\"',
                 '\\' => '\\\\');
    $s =~ s{([^\x20-\x21\x23-\x5b\x5d-\x7e])}
           { $named{$1} // sprintf '\\x%02x', ord $1 }ge;
    return qq{"$s"};
}

# String comparison with a unified diff on failure.
sub is_str ($$;$) {
    my ($got, $exp, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    if (defined $got && defined $exp && $got eq $exp) {
        return pass($name);
    }
    ok(0, $name);
    if (!defined $got || !defined $exp) {
        diag("     got: " . escape($got) . "\nexpected: " . escape($exp));
    } elsif ($Test::Nginx::Util::NoLongString
             || (length($got) < 200 && length($exp) < 200
                 && $got !~ /\n./ && $exp !~ /\n./)) {
        diag("     got: " . escape($got) . "\nexpected: " . escape($exp));
    } else {
        diag(Text::Diff::diff(\$exp, \$got, { STYLE => 'Unified',
             FILENAME_A => 'expected', FILENAME_B => 'got' }));
        my $n = 0;
        $n++ while $n < length $got && $n < length $exp
                && substr($got, $n, 1) eq substr($exp, $n, 1);
        diag("first difference at byte $n (got " . length($got)
             . " bytes, expected " . length($exp) . ")");
    }
    return 0;
}

sub check_response {
    my ($block, $res, $r, $i, $need_array) = @_;
    return if defined $block->ignore_response;
    my $name = $block->name;
    my $tag = "(repeated req $r, req $i)";
    my $sfx = $need_array || $Test::Nginx::Util::RepeatEach > 1 ? " $tag" : '';

    my $code = indexed($block, 'error_code', $i, $need_array) // 200;
    $code =~ s/^\s+|\s+$//g;
    is(($res && $res->{code}) // '', $code, "$name - status code ok$sfx");

    check_headers($block, $res, $i, $need_array, $sfx);

    my $body = $res ? $res->{body} : undef;
    my $exp = indexed($block, 'response_body', $i, $need_array);
    is_str($body, $exp, "$name - response_body - response is expected $tag")
        if defined $exp;
    for my $sec (qw(response_body_like response_body_unlike)) {
        my $pat = indexed($block, $sec, $i, $need_array);
        next unless defined $pat;
        $pat = qr/$pat/s unless ref $pat eq 'Regexp';
        my $fn = $sec =~ /unlike/ ? \&unlike : \&like;
        $fn->($body // '', $pat, "$name - $sec - response is expected $tag");
    }
}

sub check_headers {
    my ($block, $res, $i, $need_array, $sfx) = @_;
    my $name = $block->name;
    if (defined(my $spec = indexed($block, 'response_headers', $i,
                                   $need_array))) {
        for my $line (split /\n/, $spec) {
            next unless $line =~ /\S/;
            if ($line =~ /^\s*!\s*([^\s:]+)/) {
                my $v = header($res, $1);
                ok(!defined $v, "$name - header $1 absent$sfx")
                    or diag("but it is there: $1: $v");
            } elsif ($line =~ /^\s*([^:]+?)\s*:\s*(.*?)\s*$/) {
                is(header($res, $1) // '', $2, "$name - header $1 ok$sfx");
            }
        }
    }
    if (defined(my $spec = indexed($block, 'response_headers_like', $i,
                                   $need_array))) {
        for my $line (split /\n/, $spec) {
            next unless $line =~ /^\s*([^:]+?)\s*:\s*(.*?)\s*$/;
            like(header($res, $1) // '', qr/^$2$/,
                 "$name - header $1 like ok$sfx");
        }
    }
}

# Pipelined responses: one status check (all must match), headers of the
# first response, and the concatenated bodies.
sub check_pipelined {
    my ($block, $res, $r) = @_;
    return if defined $block->ignore_response;
    my $name = $block->name;
    my @res = @{$res->{responses}};
    my $reqs = $block->pipelined_requests;
    my $n = ref $reqs eq 'ARRAY' ? @$reqs : 1;
    my $exp = $block->error_code // 200;
    my @exp = ref $exp eq 'ARRAY' ? @$exp : ($exp) x $n;
    s/^\s+|\s+$//g for @exp;
    is(join(',', map { $_->{code} // '' } @res), join(',', @exp),
       "$name - status code ok (repeated req $r)");
    check_headers($block, $res[0], 0, 0, " (repeated req $r)");
    my $body = join '', map { $_->{body} } @res;
    if (defined(my $e = $block->response_body)) {
        is_str($body, $e, "$name - response_body - response is expected"
                          . " (repeated req $r)");
    }
    if (defined(my $pat = $block->response_body_like)) {
        $pat = qr/$pat/s unless ref $pat eq 'Regexp';
        like($body, $pat, "$name - response_body_like - response is expected"
                          . " (repeated req $r)");
    }
}

sub check_tcp_query {
    my ($block, $srv, $timeout) = @_;
    my $name = $block->name;
    my $exp = $block->tcp_query;
    my $len = $block->tcp_query_len;
    return unless defined $exp || defined $len;
    my @exp = ref $exp eq 'ARRAY' ? @$exp : ($exp);
    my @q = Test::Nginx::Util::tcp_server_queries($srv, scalar @exp,
                                                  $timeout);
    if (defined $len) {
        chomp $len;
        is(defined $q[0] ? length $q[0] : 'no connection', $len,
           "$name - TCP query length ok");
    }
    return unless defined $exp;
    for my $k (0 .. $#exp) {
        my $tn = "$name - tcp_query ok" . (@exp > 1 ? " (connection $k)" : '');
        if (!defined $q[$k]) {
            fail($tn);
            diag("the fake server on port " . $block->tcp_listen
                 . " received no connection #$k");
        } elsif (ref $exp[$k] eq 'Regexp') {
            like($q[$k], $exp[$k], $tn);
        } else {
            is_str($q[$k], $exp[$k], $tn);
        }
    }
}

# Section value(s) -> list of patterns: one per text line, or the eval'ed
# strings / qr// objects.
sub patterns {
    return map {
        ref $_ eq 'ARRAY' ? @$_ : ref $_ ? $_ : grep { length } split /\n/
    } grep { defined } @_;
}

sub line_matches {
    my ($line, $pat) = @_;
    return ref $pat eq 'Regexp' ? $line =~ $pat : index($line, $pat) >= 0;
}

# error_log / no_error_log style checks.  With $text undef the error log is
# re-read from $off, and positive patterns are polled for a while so tests
# do not need sleeps for messages logged just after the response.
sub check_log_patterns {
    my ($block, $text, $tag, $pos_sec, $neg_sec, $off) = @_;
    my $name = $block->name;
    my @pos = patterns($block->$pos_sec);
    my @neg = patterns($block->$neg_sec);
    return unless @pos || @neg;
    my $file = $Test::Nginx::Util::ErrLogFile;
    my $read = sub {
        defined $text ? $text : Test::Nginx::Util::read_file($file, $off);
    };
    my @lines = split /\n/, $read->();
    my $deadline = Time::HiRes::time() + 1 * $Test::Nginx::Util::Slowdown;
    for my $pat (@pos) {
        my $found;
        while (1) {
            $found = grep { line_matches($_, $pat) } @lines;
            last if $found || defined $text
                 || Time::HiRes::time() > $deadline;
            Time::HiRes::sleep(0.02);
            @lines = split /\n/, $read->();
        }
        my @last = @lines > 10 ? @lines[-10 .. -1] : @lines;
        ok($found, "$name - pattern \"$pat\" matches a line in error.log $tag")
            or diag("not found in " . scalar(@lines) . " lines; last ones:\n"
                    . join "\n", map { substr $_, 0, 300 } @last);
    }
    for my $pat (@neg) {
        my @hits = grep { line_matches($_, $pat) } @lines;
        splice @hits, 5;
        ok(!@hits, "$name - pattern \"$pat\" should not match any line in"
                   . " error.log $tag")
            or diag("matching line(s):\n" . join "\n", @hits);
    }
}

# grep_error_log + grep_error_log_out: every match, one per line.
sub check_grep_error_log {
    my ($block, $r, $off) = @_;
    my $pat = $block->grep_error_log;
    return unless defined $pat;
    chomp $pat unless ref $pat;
    my $exp = $block->grep_error_log_out;
    $exp = $exp->[$r] if ref $exp eq 'ARRAY';
    my $out = '';
    for my $line (split /\n/, Test::Nginx::Util::read_file(
                      $Test::Nginx::Util::ErrLogFile, $off)) {
        if (ref $pat eq 'Regexp') {
            $out .= "$&\n" while $line =~ /$pat/g;
        } else {
            my $at = 0;
            while (($at = index $line, $pat, $at) >= 0) {
                $out .= "$pat\n";
                $at += length $pat;
            }
        }
    }
    if (ref $exp eq 'Regexp') {
        like($out, $exp, $block->name . " - grep_error_log_out (req $r)");
    } else {
        is_str($out, $exp // '',
               $block->name . " - grep_error_log_out (req $r)");
    }
}

# A crashed worker is never what a test wants unless it says so.
sub check_crashes {
    my ($block, $log) = @_;
    my @hits = grep { /exited on signal \d+/ } split /\n/, $log;
    return unless @hits;
    return if grep { line_matches($hits[0], $_) }
        patterns($block->error_log), patterns($block->shutdown_error_log);
    fail($block->name . " - an nginx process crashed");
    diag(join "\n", @hits);
}

sub check_valgrind {
    my ($block) = @_;
    my ($fatal, $other) = Test::Nginx::Util::valgrind_records();
    for my $rec (@$fatal) {
        fail($block->name . " - valgrind found a memory error in our code");
        diag($rec);
    }
    return unless @$other;
    diag($block->name . ": valgrind reported " . scalar(@$other)
         . " issue(s) outside our code:");
    for my $rec (@$other[0 .. ($#$other > 4 ? 4 : $#$other)]) {
        my @l = split /\n/, $rec;
        diag("  " . join "\n  ", @l[0 .. ($#l > 3 ? 3 : $#l)]);
    }
}

sub log_tail {
    my ($n) = @_;
    my @l = split /\n/, Test::Nginx::Util::read_file(
        $Test::Nginx::Util::ErrLogFile);
    @l = @l[-$n .. -1] if @l > $n;
    return "--- tail of $Test::Nginx::Util::ErrLogFile:\n" . join "\n", @l;
}

1;
__END__

=head1 NAME

Test::Nginx::Socket - local stand-in for test-nginx's Test::Nginx::Socket

=head1 SECTIONS

main_config, http_config, config, server_name, log_level, user_files;
request (a string or, with eval, an array of requests sent one after the
other), raw_request, pipelined_requests, more_headers, timeout, abort,
ignore_response; error_code, response_body, response_body_like,
response_body_unlike, response_headers (C<!Name> = must be absent),
response_headers_like (anchored regex); error_log, no_error_log,
grep_error_log, grep_error_log_out, shutdown_error_log,
no_shutdown_error_log, wait; tcp_listen, tcp_query, tcp_query_len,
tcp_reply (string, array of chunks, or code ref), tcp_no_close; must_die;
skip_eval, skip_nginx; ONLY, SKIP, LAST (from Test::Base).

=head1 ENVIRONMENT

TEST_NGINX_BINARY, TEST_NGINX_PORT, TEST_NGINX_CLIENT_PORT,
TEST_NGINX_SERVROOT, TEST_NGINX_LOAD_MODULES, TEST_NGINX_LOG_LEVEL,
TEST_NGINX_USE_VALGRIND (1, or valgrind options), TEST_NGINX_VALGRIND_OURS
(regex for "our" stack frames), TEST_NGINX_NO_CLEAN, TEST_NGINX_NO_SHUFFLE,
TEST_NGINX_SLEEP (poll interval).  Any C<$TEST_NGINX_FOO> in a section is
replaced by the environment variable; C<$TEST_NGINX_RAND_PORT_N> gets a free
port per block.

=head1 BEHAVIOUR NOTES

=over

=item *

nginx is started afresh for every block (after wiping conf/, html/, logs/
and the temp dirs under the server root) and stopped with QUIT at its end;
repetitions of a block share one nginx.  Each repetition checks only the
error.log lines written since it began (the first one includes startup).

=item *

When run as root, C<user root;> is added to nginx.conf (unless main_config
has a C<user> directive) so that workers of a distro nginx do not switch to
"nobody".

=item *

nginx counts as up once its pid file names a live process: nginx writes it
only after binding its listening sockets, and no probe connection pollutes
error.log.

=item *

Failures outside the upstream model are reported as extra failing tests:
nginx failing to start, a client timeout (unless C<--- abort>), a worker
"exited on signal" in error.log, nginx dying before the end of a block,
and, under valgrind, memory errors with one of our frames on the stack.
A C<--- must_die> block emits one test for the failed start, and its
error_log patterns are matched against nginx's stderr plus error.log.

=item *

Extensions: C<--- tcp_query eval> may be an array (one entry per
connection, in order), C<--- tcp_query> may be a qr//.

=back

=cut
