package Test::Nginx::Socket;

# A small, self-contained stand-in for Test::Nginx::Socket (openresty's
# test-nginx) with the same semantics (those of 0.29: what a block checks,
# when, and against which part of error.log), so that a block that passes
# here passes there.  The .t files must run unchanged under either;
# t/perl-append-inc puts t/lib at the END of @INC so an installed
# Test::Nginx always wins.
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
use Scalar::Util ();
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

# "1.5", "1.5s" or "1500ms" -> seconds
sub parse_time {
    my ($t) = @_;
    return undef unless defined $t;
    $t =~ s/^\s+|\s+$//g;
    return $1 / 1000 if $t =~ /^(.*\d)ms$/;
    return $1 if $t =~ /^(.*\d)s$/;
    return $t;
}

# The sections upstream expands $TEST_NGINX_* in (user_files too).
my @Expanded = qw(config http_config main_config post_main_config);

sub run_block {
    my ($block) = @_;
    my $name = $block->name;

    my ($nskip, $why) = eval { skip_reason($block) };
    if ($@) { chomp(my $err = $@); fail("$name - $err"); return }
    if ($nskip) {
        SKIP: { skip("$name - $why", $nskip) }
        return;
    }

    my $rand_ports = {};
    my %conf = map {
        $_ => Test::Nginx::Util::expand_env_in_text(scalar $block->$_, $name,
                                                    $rand_ports)
    } @Expanded;

    # upstream never runs a must_die block under valgrind
    my $must_die = defined $block->must_die;
    local $Test::Nginx::Util::UseValgrind =
        $must_die ? 0 : $Test::Nginx::Util::UseValgrind;

    Test::Nginx::Util::stop_nginx();
    Test::Nginx::Util::prepare_servroot();
    Test::Nginx::Util::write_user_files(scalar $block->user_files, $name,
                                        $rand_ports);
    Test::Nginx::Util::write_config($block, \%conf);
    Test::Nginx::Util::reset_error_log_window();

    if ($must_die) {
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
        run_repeat($block, $r, $rand_ports);
    }

    # TEST_NGINX_NO_CLEAN leaves nginx running for inspection (the next
    # block stops it); shutdown and valgrind checks are skipped then.
    return if $ENV{TEST_NGINX_NO_CLEAN};
    if (!Test::Nginx::Util::stop_nginx()) {
        fail("$name - nginx exited before the end of the block");
        diag(log_tail(30));
    }
    check_shutdown_error_log($block);
    check_crashes($block,
                  Test::Nginx::Util::read_file($Test::Nginx::Util::ErrLogFile));
    check_valgrind($block) if $Test::Nginx::Util::UseValgrind;
}

# As upstream: nginx is started once per repetition and must fail; the
# error_log patterns are matched against error.log only (t/bin/nginx makes
# nginx log its startup errors there), "--- must_die: N" also checks the
# exit code.
sub run_must_die {
    my ($block) = @_;
    my $name = $block->name;
    my $want = $block->must_die;
    $want =~ s/^\s+|\s+$//g;
    for my $r (0 .. $Test::Nginx::Util::RepeatEach - 1) {
        my ($ok, $why, $code) = Test::Nginx::Util::start_nginx();
        if (Scalar::Util::looks_like_number($want)) {
            is($ok ? 0 : $code // 'none', $want,
               "$name - die with the expected exit code");
        } else {
            ok(!$ok, "$name - die as expected")
                or diag("nginx started although the block has --- must_die");
        }
        check_error_log($block, $r);
        Test::Nginx::Util::stop_nginx() if $ok;
        # the usual reason for a pattern not found here
        diag("$name - nginx wrote its startup errors to stderr, not to"
             . " error.log: start it with -e logs/error.log (t/fixtures.sh"
             . " sets TEST_NGINX_BINARY to t/bin/nginx, which does)")
            if !$ok && defined $block->error_log
            && Test::Nginx::Util::read_file(
                   $Test::Nginx::Util::ErrLogFile) !~ /\[emerg\]/
            && Test::Nginx::Util::read_file(
                   $Test::Nginx::Util::StderrFile) =~ /\[emerg\]/;
    }
}

# One repetition: the requests, each followed by the log checks (upstream
# checks error.log after every request and every pipelined response).
sub run_repeat {
    my ($block, $r, $rand_ports) = @_;
    my $name = $block->name;
    my $slow = $Test::Nginx::Util::Slowdown;
    my $idle = parse_time(scalar $block->timeout)
               // $ENV{TEST_NGINX_TIMEOUT} // 3;
    my $timeout = $idle * $slow;

    # as upstream: the files are written again for every repetition
    Test::Nginx::Util::write_user_files(scalar $block->user_files, $name,
                                        $rand_ports) if $r > 0;

    my ($reqs, $pipelined) = request_list($block);
    Test::Nginx::Util::bail_out("$name - request empty") unless @$reqs;

    my $srv = defined $block->tcp_listen
            ? start_block_tcp_server($block, $r, $idle) : undef;

    if ($pipelined) {
        my $res = http_exchange($block, [map { $_->{bytes} } @$reqs],
                                [map { $_->{method} } @$reqs],
                                $timeout, $r, 0);
        for my $i (0 .. $#$reqs) {
            check_response($block, $res->{responses}[$i], $r, $i, 1);
            next if $i == $#$reqs;
            sleep_wait($block);
            check_error_log($block, $r);
        }
    } else {
        my $need_array = @$reqs > 1;
        for my $i (0 .. $#$reqs) {
            my $res = http_exchange($block, [$reqs->[$i]{bytes}],
                                    [$reqs->[$i]{method}], $timeout, $r, $i);
            check_response($block, $res->{responses}[0], $r, $i,
                           $need_array);
            next if $i == $#$reqs;
            sleep_wait($block);
            check_error_log($block, $r);
        }
    }
    sleep_wait($block);
    check_error_log($block, $r);

    if ($srv) {
        check_tcp_query($block, $srv, $timeout);
        Test::Nginx::Util::stop_tcp_server($srv);
        @Test::Nginx::Util::TcpServers =
            grep { $_ != $srv } @Test::Nginx::Util::TcpServers;
    }
}

# "--- wait: T".  A block that expects error_log lines waits until they
# are all there (polled, for at least T and at most max(T, 10 s), both
# scaled by the slowdown), so an asynchronous line is not missed on a busy
# machine; a block that only forbids lines still watches a fixed T.
# Upstream sleeps T in both cases; waiting longer only when the expected
# lines are late keeps every block's meaning.
sub sleep_wait {
    my ($block) = @_;
    my $wait = parse_time(scalar $block->wait);
    return unless $wait;
    my $slow = $Test::Nginx::Util::Slowdown;
    my @pos = patterns(scalar $block->error_log);
    if (!@pos) {
        Time::HiRes::sleep($wait * $slow);
        return;
    }
    my $start = Time::HiRes::time();
    my $deadline = $start + ($wait > 10 ? $wait : 10) * $slow;
    while (Time::HiRes::time() < $deadline) {
        my @lines = map { s/\n\z//r }
                    @{ Test::Nginx::Util::error_log_peek() };
        my $all = !grep { my $p = $_; !grep { line_matches($_, $p) } @lines }
                  @pos;
        last if $all && Time::HiRes::time() >= $start + $wait * $slow;
        Time::HiRes::sleep(0.05);
    }
}

# --- tcp_listen: a port number or a path ending in .sock (use
# "--- tcp_listen eval: $ENV{...}" for a port chosen at run time), and
# --- tcp_reply or --- tcp_shutdown, or the run bails out as upstream's.
sub start_block_tcp_server {
    my ($block, $r, $idle) = @_;
    my $name = $block->name;
    my $target = $block->tcp_listen;
    chomp $target;
    Test::Nginx::Util::bail_out("$name - bad tcp_listen target: $target")
        unless $target =~ /^\d+$/ || $target =~ /\S+\.sock$/;
    my $reply = $block->tcp_reply;
    Test::Nginx::Util::bail_out("$name - no --- tcp_reply specified but"
                                . " --- tcp_listen is specified")
        if !defined $reply && !defined $block->tcp_shutdown;
    my $q = $block->tcp_query;
    my $len = $block->tcp_query_len;
    chomp $len if defined $len;
    $len //= length $q if defined $q && !ref $q;
    my ($srv, $err) = Test::Nginx::Util::start_tcp_server(
        target => $target, query_len => $len, reply => $reply,
        reply_delay => parse_time(scalar $block->tcp_reply_delay),
        no_close => defined $block->tcp_no_close,
        shutdown => scalar $block->tcp_shutdown,
        shutdown_delay => parse_time(scalar $block->tcp_shutdown_delay),
        tag => $block->seq_num . "-$r", timeout => $idle);
    Test::Nginx::Util::bail_out("$name - failed to create the tcp listening"
                                . " socket: $err") unless $srv;
    push @Test::Nginx::Util::TcpServers, $srv;
    return $srv;
}

# ---------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------

# Returns ([{bytes, method}...], $pipelined).
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
        return ([{ bytes => $raw, method => $m // '' }], 0);
    }
    if (defined(my $p = $block->pipelined_requests)) {
        Test::Nginx::Util::bail_out($block->name . " - invalid entries in"
                                    . " --- pipelined_requests")
            unless ref $p eq 'ARRAY';
        my @p = @$p;
        my @reqs = map {
            build_request($join->($p[$_]), more_headers($block, $_),
                          $_ == $#p ? 'close' : 'keep-alive')
        } 0 .. $#p;
        return (\@reqs, 1);
    }
    my $req = $block->request;
    return ([], 0) unless defined $req;
    my @r = ref $req eq 'ARRAY' ? @$req : ($req);
    my @reqs = map {
        build_request($join->($r[$_]), more_headers($block, $_), 'close')
    } 0 .. $#r;
    return (\@reqs, 0);
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

# Expected values for request $i.  With several requests (and always for
# pipelined ones) every expectation must be an array, one entry per
# request, or the run bails out as upstream's does.
sub indexed {
    my ($block, $sec, $i, $need_array) = @_;
    my $v = $block->$sec;
    return undef unless defined $v;
    return ref $v eq 'ARRAY' ? $v->[$i] : $v unless $need_array;
    return $v->[$i] if ref $v eq 'ARRAY';
    Test::Nginx::Util::bail_out($block->name . " - You asked for many"
        . " requests, the expected results should be arrays as well"
        . " (--- $sec)");
}

# Upstream silently ignores a section when another one wins (if/elsif):
# say so once per block, so such a block is fixed here already.
my %Warned;
sub ignored {
    my ($block, $sec, $winner) = @_;
    return 0 unless defined $block->$sec && defined $block->$winner;
    diag($block->name . " - WARNING: --- $sec is ignored because of"
         . " --- $winner (as in Test::Nginx::Socket)")
        unless $Warned{$block->seq_num, $sec}++;
    return 1;
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
    return like($got, $exp, $name) if ref $exp eq 'Regexp';
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
    my $code = ($res && $res->{code}) // '';

    if (defined(my $like = indexed($block, 'error_code_like', $i,
                                   $need_array))) {
        like($code, qr/$like/sm, "$name - status code ok$sfx");
    } else {
        my $exp = indexed($block, 'error_code', $i, $need_array) // 200;
        $exp =~ s/^\s+|\s+$//g;
        is($code, $exp, "$name - status code ok$sfx");
    }

    check_headers($block, $res, $i, $need_array, $sfx);

    my $body = $res ? $res->{body} : undef;
    if (defined $block->response_body) {
        ignored($block, $_, 'response_body')
            for qw(response_body_like response_body_unlike);
        my $exp = indexed($block, 'response_body', $i, $need_array);
        is_str($body, $exp, "$name - response_body - response is expected $tag")
            if defined $exp;
    } else {
        ignored($block, 'response_body_unlike', 'response_body_like');
        for my $sec (qw(response_body_like response_body_unlike)) {
            next unless defined $block->$sec;
            my $pat = indexed($block, $sec, $i, $need_array);
            next unless defined $pat;
            my $fn = $sec =~ /unlike/ ? \&unlike : \&like;
            $fn->($body // '', qr/$pat/s,
                  "$name - $sec - response is expected $tag");
            last;
        }
    }
}

sub check_headers {
    my ($block, $res, $i, $need_array, $sfx) = @_;
    my $name = $block->name;
    if (defined $block->response_headers) {
        ignored($block, 'response_headers_like', 'response_headers');
        my $spec = indexed($block, 'response_headers', $i, $need_array);
        for my $line (split /\n/, $spec // '') {
            next unless $line =~ /\S/;
            if ($line =~ /^\s*!\s*([^\s:]+)/) {
                my $v = header($res, $1);
                ok(!defined $v, "$name - header $1 absent$sfx")
                    or diag("but it is there: $1: $v");
            } elsif ($line =~ /^\s*([^:]+?)\s*:\s*(.*?)\s*$/) {
                is(header($res, $1) // '', $2, "$name - header $1 ok$sfx");
            }
        }
    } elsif (defined $block->response_headers_like) {
        my $spec = indexed($block, 'response_headers_like', $i, $need_array);
        for my $line (split /\n/, $spec // '') {
            next unless $line =~ /^\s*([^:]+?)\s*:\s*(.*?)\s*$/;
            like(header($res, $1) // '', qr/^$2$/,
                 "$name - header $1 like ok$sfx");
        }
    }
}

# The fake server takes one connection: one query, a string or a qr//.
sub check_tcp_query {
    my ($block, $srv, $timeout) = @_;
    my $name = $block->name;
    my $exp = $block->tcp_query;
    my $len = $block->tcp_query_len;
    return unless defined $exp || defined $len;
    my $q = Test::Nginx::Util::tcp_server_query($srv, $timeout);
    diag("$name - the fake server on " . $srv->{target}
         . " received no connection") unless defined $q;
    $q //= '';
    if (ref $exp eq 'ARRAY') {
        fail("$name - tcp_query ok");
        diag("--- tcp_query must be a string or a qr//: the fake server"
             . " accepts one connection");
    } elsif (defined $exp) {
        is_str($q, $exp, "$name - tcp_query ok");
    }
    if (defined $len) {
        chomp $len;
        is(length $q, $len, "$name - TCP query length ok");
    }
}

# Section value(s) -> list of patterns: one per text line, or the eval'ed
# strings / qr// objects.
sub patterns {
    return map {
        ref $_ eq 'ARRAY' ? grep { defined } @$_
            : ref $_ ? $_ : grep { length } split /\n/
    } grep { defined } @_;
}

sub line_matches {
    my ($line, $pat) = @_;
    return ref $pat eq 'Regexp' ? $line =~ $pat : index($line, $pat) >= 0;
}

# error_log / no_error_log / grep_error_log, as upstream checks them after
# every request: against the error.log lines written since the previous
# check (the first one of a block includes nginx's startup; all lines
# since the start with check_accum_error_log()).  No polling: a line logged
# later than ~45 ms after the response needs "--- wait".
sub check_error_log {
    my ($block, $r) = @_;
    my $window = Test::Nginx::Util::error_log_window(
        scalar grep { defined $block->$_ }
                    qw(error_log no_error_log grep_error_log));
    check_grep_error_log($block, $r, $window);
    check_log_patterns($block, $window, "(req $r)", 'error_log',
                       'no_error_log');
}

sub check_log_patterns {
    my ($block, $window, $tag, $pos_sec, $neg_sec) = @_;
    my $name = $block->name;
    my @pos = patterns(scalar $block->$pos_sec);
    my @neg = patterns(scalar $block->$neg_sec);
    return unless @pos || @neg;
    my @lines = map { s/\n\z//r } @$window;
    for my $pat (@pos) {
        my $found = grep { line_matches($_, $pat) } @lines;
        my @last = @lines > 10 ? @lines[-10 .. -1] : @lines;
        ok($found, "$name - pattern \"$pat\" matches a line in error.log $tag")
            or diag("not found in the " . scalar(@lines) . " error.log"
                    . " line(s) of this check's window; last ones:\n"
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

# grep_error_log + grep_error_log_out: the first match of every line that
# matches (an array of either is indexed by the repetition).
sub check_grep_error_log {
    my ($block, $r, $window) = @_;
    my $name = $block->name;
    my $pat = $block->grep_error_log;
    my $exp = $block->grep_error_log_out;
    if (!defined $pat) {
        Test::Nginx::Util::bail_out("$name - No --- grep_error_log defined"
                                    . " but --- grep_error_log_out is defined")
            if defined $exp;
        return;
    }
    Test::Nginx::Util::bail_out("$name - No --- grep_error_log_out defined"
                                . " but --- grep_error_log is defined")
        unless defined $exp;
    $pat = $pat->[$r] if ref $pat eq 'ARRAY';
    return unless defined $pat;
    chomp $pat unless ref $pat;
    $exp = $exp->[$r] if ref $exp eq 'ARRAY';
    my $out = '';
    for my $line (@$window) {
        my $m = ref $pat ? ($line =~ $pat ? $& : undef)
              : index($line, $pat) >= 0 ? $pat : undef;
        $out .= "$m\n" if defined $m && $m !~ /\n/;
    }
    if (ref $exp eq 'Regexp') {
        like($out, $exp, "$name - grep_error_log_out (req $r)");
    } else {
        is_str($out, $exp // '', "$name - grep_error_log_out (req $r)");
    }
}

# After nginx stopped, against the lines since the last check.  As
# upstream, no_shutdown_error_log is only checked with shutdown_error_log.
sub check_shutdown_error_log {
    my ($block) = @_;
    if (!defined $block->shutdown_error_log) {
        diag($block->name . " - WARNING: --- no_shutdown_error_log is ignored"
             . " without --- shutdown_error_log (as in Test::Nginx::Socket)")
            if defined $block->no_shutdown_error_log;
        return;
    }
    check_log_patterns($block, Test::Nginx::Util::error_log_window(1),
                       '(shutdown)', 'shutdown_error_log',
                       'no_shutdown_error_log');
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

main_config, http_config, config, post_main_config, server_name,
log_level, user_files; request (a string or, with eval, an array of
requests sent one after the other), raw_request, pipelined_requests (an
array), more_headers, timeout, abort, ignore_response; error_code,
error_code_like, response_body (a string or qr//), response_body_like,
response_body_unlike, response_headers (C<!Name> = must be absent),
response_headers_like (anchored regex); error_log, no_error_log,
grep_error_log, grep_error_log_out, shutdown_error_log,
no_shutdown_error_log, wait; tcp_listen, tcp_query (a string or qr//),
tcp_query_len, tcp_reply (string, array of chunks, or code ref),
tcp_reply_delay, tcp_shutdown, tcp_shutdown_delay, tcp_no_close; must_die;
skip_eval, skip_nginx; ONLY, SKIP, LAST (from Test::Base).

=head1 ENVIRONMENT

TEST_NGINX_BINARY, TEST_NGINX_SERVER_PORT / TEST_NGINX_PORT,
TEST_NGINX_CLIENT_PORT, TEST_NGINX_SERVROOT, TEST_NGINX_LOAD_MODULES,
TEST_NGINX_LOG_LEVEL, TEST_NGINX_TIMEOUT, TEST_NGINX_SLEEP (error.log
checks sleep 3 times this first), TEST_NGINX_CHECK_ACCUM_ERR_LOG,
TEST_NGINX_USE_VALGRIND (1, or valgrind options), TEST_NGINX_VALGRIND_OURS
(regex for "our" stack frames), TEST_NGINX_NO_CLEAN, TEST_NGINX_NO_SHUFFLE.

C<$TEST_NGINX_FOO> is replaced by the environment variable in config,
http_config, main_config, post_main_config and the contents of user_files
only (an undefined one bails out); C<$TEST_NGINX_RAND_PORT_N> is one free
port per block, the same in all of those sections.  Other sections take
run-time values through C<eval>, e.g. C<--- tcp_listen eval:
$ENV{TEST_NGINX_FAKE_PORT}>.

=head1 BEHAVIOUR NOTES

The semantics follow the real Test::Nginx::Socket (0.29), so that a block
that passes here passes there:

=over

=item *

nginx is started afresh for every block (after wiping conf/, html/, logs/
and the temp dirs under the server root) and stopped with QUIT at its end;
repetitions of a block share one nginx.

=item *

error_log, no_error_log and grep_error_log are checked after every request
(and every pipelined response), each time against the error.log lines
written since the previous check; the first window starts with nginx's
startup.  Every positive pattern must match in every window.  Before each
check: C<--- wait> seconds, then 45 ms (under valgrind 0.5 s more if the
block has log patterns); there is no polling.  check_accum_error_log() makes every window start at the
beginning of the block's log.  shutdown_error_log and no_shutdown_error_log
are checked after nginx stopped against the lines since the last check,
and no_shutdown_error_log only when shutdown_error_log is there too.

=item *

With several requests or pipelined_requests every expectation must be an
array (one entry per request), otherwise the run bails out.  Where
upstream ignores a section because another one wins (response_headers_like
with response_headers, response_body_like with response_body), a warning
is printed.

=item *

The fake server of tcp_listen (a port number or a *.sock path; tcp_reply
or tcp_shutdown required) accepts a single connection.

=item *

must_die: nginx must fail to start (once per repetition, never under
valgrind); the error_log patterns are matched against error.log only.  For
startup errors to get there, nginx must be started with C<-e
logs/error.log>: t/fixtures.sh points TEST_NGINX_BINARY to t/bin/nginx,
which does that.

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

=back

=cut
