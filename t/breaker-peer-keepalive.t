# A peer whose circuit refuses it while keepalive (configured before
# breaker_peers) hands out one of its cached connections: the connection
# is closed, and must not go back to keepalive's cache on the way.  The
# dangerous case is a retry after a body-less answer (a HEAD answered
# 503): the previous attempt left u->keepalive set, so keepalive's free
# would keep a connection the breaker then closes (a freed connection in
# the cache: a crash on its next use).
use strict;
use warnings;

use Test::More;
use Test::Edge::Nginx;

my $pa = Test::Edge::Nginx::free_port();
my $pb = Test::Edge::Nginx::free_port();

my $n = Test::Edge::Nginx->start(workers => 1, http => <<"HTTP");
    breaker_zone peers 1m;
    upstream ka {
        server 127.0.0.1:$pa max_fails=0;
        server 127.0.0.1:$pb max_fails=0;
        keepalive 8;
        breaker_peers zone=peers min_calls=100 open=60s;
    }
    server { listen 127.0.0.1:$pa; location / { return 200 "A\\n"; }
                                  location /flaky { return 503; } }
    server { listen 127.0.0.1:$pb; location / { return 200 "B\\n"; } }
    server {
        listen 127.0.0.1:\$PORT;
        location = /status { breaker_status_endpoint allow_force=on; }
        location / {
            proxy_pass http://ka;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_next_upstream error http_503;
            add_header X-Upstream \$upstream_addr always;
        }
    }
HTTP

# both peers answer: keepalive caches a connection to each
my %seen;
for (1 .. 6) {
    my $r = $n->get('/');
    $seen{$r->{body}}++ if $r->{status} == 200;
}
is(join(' ', map { "$_=" . ($seen{"$_\n"} // 0) } qw(A B)), 'A=3 B=3',
   'round robin over both peers, their connections kept alive');

my $r = $n->request('POST', "/status?circuit=ka/127.0.0.1:$pb&state=open");
is($r->{status}, 200, 'B forced open') or diag $r->{body};

# HEAD /flaky: A answers 503 without a body (u->keepalive set), nginx
# retries, round robin offers B with its cached connection, B is refused
my $ok = 1;
for (1 .. 6) {
    my $h = $n->request('HEAD', '/flaky');
    $ok = 0 unless $h->{status} == 503 || $h->{status} == 502;
    my $g = $n->get('/');
    $ok = 0 unless $g->{status} == 200 && $g->{body} eq "A\n";
}
ok($ok, 'HEAD retries past the refused peer, then A serves every GET');

$n->stop;
my @bad = grep { /\[(?:alert|crit|emerg)\]|exited on signal/ } split /\n/, $n->final_log;
is(scalar @bad, 0, 'no crash, no alert') or diag join "\n", @bad;

done_testing;
