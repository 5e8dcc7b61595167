# Where the shedder decides: in the breaker's one PRECONTENT handler,
# after every other handler of that phase (the cache's lookup, try_files),
# before the route circuit.
#
#   - a page the cache answers never meets the shedder: it is served while
#     every permit is taken (a miss is shed);
#   - the cache's background update of a stale page, which its main request
#     (a stale hit) does not cover, takes a permit of its own, at once or
#     not at all: shed while every permit is taken, admitted once one is
#     free;
#   - try_files that ends in a named location: the named location's
#     shedder decides (the one of the location try_files is in is never
#     reached);
#   - with both layers on a location, the shedder decides first: an open
#     circuit refuses a request the shedder admitted, and the permit comes
#     back.
#
# The origin (Test::Edge::Origin) holds /hang requests until the test
# resets it, so "every permit taken" is exactly what the test made it.
use strict;
use warnings;

use Test::More;
use Test::Edge qw(:all);
use Test::Edge::Nginx;
use Test::Edge::Origin;
use Digest::MD5 qw(md5_hex);
use IO::Select;
use Time::HiRes qw(time sleep);

redis_start() unless redis_is_up();

my $rport = $ENV{TEST_NGINX_REDIS_PORT};
my $origin = Test::Edge::Origin->start;
my $oport = $origin->port;

my $http = <<"HTTP";
    edge_cache_redis main 127.0.0.1:$rport timeout=1s;
    edge_cache_zone pages redis=main;
    breaker_shed_zone shed 1m;
    breaker_shedder one zone=shed limit=1;
    breaker_shedder two zone=shed limit=1;
    breaker_zone br 1m;
    breaker_circuit api zone=br min_calls=1 failure_rate=100 open=60s
                    probes=1 half_open_wait=60s;
    server {
        listen 127.0.0.1:\$PORT;
        # fills the cache without the shedder
        location ~ ^/fill(/c/.*)\$ {
            edge_cache pages;
            edge_cache_key \$1;
            proxy_pass http://127.0.0.1:$oport\$1;
        }
        location /c/ {
            edge_cache pages;
            edge_cache_key \$uri;
            add_header X-Cache \$edge_cache_status always;
            add_header X-Shed \$shed_status always;
            breaker_shed one;
            proxy_pass http://127.0.0.1:$oport;
        }
        location /t/ {
            breaker_shed one;
            add_header X-Shed \$shed_status always;
            try_files \$uri \@named;
        }
        location \@named {
            add_header X-Shed \$shed_status always;
            proxy_pass http://127.0.0.1:$oport;
        }
        location /b/ {
            breaker_shed two;
            breaker api;
            add_header X-Shed \$shed_status always;
            add_header X-Breaker \$breaker_state always;
            proxy_pass http://127.0.0.1:$oport;
        }
        location = /state/one {
            breaker_shed one;
            return 200 "\$shed_in_flight";
        }
        location = /state/two {
            breaker_shed two;
            return 200 "\$shed_in_flight";
        }
    }
HTTP

sub rkey { 'pages:{' . md5_hex($_[0]) . '}' }


sub in_flight { $_[0]->get("/state/$_[1]")->{body} }

# what a held request's client reads until the server closes, or '' after
# the deadline
sub answer {
    my ($s, $timeout) = @_;
    my $sel = IO::Select->new($s);
    my $deadline = time + $timeout;
    my $buf = '';
    while (time < $deadline) {
        next unless $sel->can_read(0.1);
        my $got = sysread($s, my $chunk, 65536);
        last unless $got;
        $buf .= $chunk;
    }
    close $s;
    return $buf;
}

# the shedder's "shed the request: limit" lines in the error log
sub shed_lines { scalar(() = $_[0]->log =~ /shed the request: limit/g) }

subtest 'a cached page is served while every permit is taken' => sub {
    redis_flushall();
    $origin->reset;
    my $n = Test::Edge::Nginx->start(http => $http);

    $origin->set('/c/a', headers => ['Cache-Control: max-age=60'],
                 body => "stored a\n");
    ok(wait_until(10, sub {
           $n->get('/fill/c/a');
           defined redis_command('GET', rkey('/c/a')) }), 'a stored');

    $origin->set('/c/hang', mode => 'hang');
    my $held = $n->send_get('/c/hang');
    ok(wait_until(10, sub { $origin->hits('/c/hang') == 1 }),
       'a request holds the only permit');
    is(in_flight($n, 'one'), 1, 'one permit in flight');

    my $hits = $origin->hits('/c/a');
    my $r = $n->get('/c/a');
    is("$r->{status} " . ($r->{headers}{'x-cache'} // ''), '200 HIT',
       'the stored page is served from the cache');
    is($r->{headers}{'x-shed'} // '', '',
       'without meeting the shedder ($shed_status empty)');
    is($origin->hits('/c/a'), $hits, 'the origin was not asked');

    $origin->set('/c/b', body => "b\n");
    $r = $n->get('/c/b');
    is("$r->{status} " . ($r->{headers}{'x-shed'} // ''), '503 SHED',
       'a page not stored is shed');
    is($origin->hits('/c/b'), 0, 'and never reaches the origin');

    $origin->reset;
    answer($held, 10);
    ok(wait_until(10, sub { in_flight($n, 'one') == 0 }),
       'the permit comes back');
    $n->stop;
};

subtest 'a stale hit\'s background update takes a permit of its own' => sub {
    redis_flushall();
    $origin->reset;
    my $n = Test::Edge::Nginx->start(http => $http);

    $origin->set('/c/s', headers => ['Cache-Control: max-age=1, '
                                     . 'stale-while-revalidate=60'],
                 body => "s1\n");
    ok(wait_until(10, sub {
           $n->get('/fill/c/s');
           defined redis_command('GET', rkey('/c/s')) }), 's stored');
    is($origin->hits('/c/s'), 1, 'the origin was asked once');
    sleep 1.2;    # stale now (max-age=1), within stale-while-revalidate

    $origin->set('/c/hang', mode => 'hang');
    my $held = $n->send_get('/c/hang');
    ok(wait_until(10, sub { $origin->hits('/c/hang') == 1 }),
       'a request holds the only permit');

    my $shed = shed_lines($n);
    my $r = $n->get('/c/s');
    is("$r->{status} $r->{body}", "200 s1\n", 'the stale page is served');
    ok(wait_until(10, sub { shed_lines($n) == $shed + 1 }),
       'its background update is shed');
    is($origin->hits('/c/s'), 1, 'the origin was not asked again');
    is(in_flight($n, 'one'), 1, 'still one permit in flight');

    $origin->reset;
    answer($held, 10);
    ok(wait_until(10, sub { in_flight($n, 'one') == 0 }),
       'the permit comes back');

    $origin->set('/c/s', headers => ['Cache-Control: max-age=60'],
                 body => "s2\n");
    ok(wait_until(10, sub {
           my $x = $n->get('/c/s');
           $x->{status} == 200 && $x->{body} eq "s2\n" }),
       'with a permit free, the background update reaches the origin and '
       . 'stores the new page');
    ok(wait_until(10, sub { in_flight($n, 'one') == 0 }),
       'and gives its permit back');
    $n->stop;
};

subtest 'try_files to a named location: that location decides' => sub {
    $origin->reset;
    my $n = Test::Edge::Nginx->start(http => $http);

    $origin->set('/c/hang', mode => 'hang');
    my $held = $n->send_get('/c/hang');
    ok(wait_until(10, sub { $origin->hits('/c/hang') == 1 }),
       'a request holds the only permit of "one"');

    $origin->set('/t/x', body => "named\n");
    my $r = $n->get('/t/x');
    is("$r->{status} $r->{body}", "200 named\n",
       'no file: served by the named location, which has no shedder');
    is($r->{headers}{'x-shed'} // '', '', '$shed_status empty');
    is(in_flight($n, 'one'), 1, 'no permit taken for it');

    $origin->reset;
    answer($held, 10);
    ok(wait_until(10, sub { in_flight($n, 'one') == 0 }),
       'the permit comes back');
    $n->stop;
};

subtest 'both layers: the permit first, then the circuit' => sub {
    $origin->reset;
    my $n = Test::Edge::Nginx->start(http => $http);

    # hold the permit while the circuit is closed, then open the circuit
    # with the held request's failure
    $origin->set('/b/hang', mode => 'hang');
    my $held = $n->send_get('/b/hang');
    ok(wait_until(10, sub { $origin->hits('/b/hang') == 1 }),
       'a request holds the only permit of "two"');
    my $r = $n->get('/b/x');
    is("$r->{status} " . ($r->{headers}{'x-shed'} // ''), '503 SHED',
       'the next one is shed');

    # the held request fails (the origin closes it: 502), which opens the
    # circuit (min_calls=1)
    $origin->reset;
    like(answer($held, 10), qr{^HTTP/1\.\d 502},
         'the held request fails: 502');
    ok(wait_until(10, sub { in_flight($n, 'two') == 0 }),
       'the permit comes back');
    $r = $n->get('/b/x');
    is("$r->{status} " . ($r->{headers}{'x-breaker'} // '') . ' '
       . ($r->{headers}{'x-shed'} // ''), '503 open ADMITTED',
       'open: refused by the circuit, after the shedder admitted it');
    ok(($r->{headers}{'retry-after'} // 0) > 0, 'with Retry-After');
    is(in_flight($n, 'two'), 0, 'and its permit came back');
    $n->stop;
};

$origin->stop;
done_testing();
