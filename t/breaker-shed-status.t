# The shedders in the status document (ngx_http_breaker_shedders_json(),
# read by the status endpoint of ngx_http_breaker_status_module): limit,
# permits in flight, requests waiting, "shedding", per-class counts, and
# the adaptive controller's state.
#
# It needs the status endpoint (breaker_status_endpoint): until that module
# is built, nginx -t refuses the configuration and the file is skipped.
use strict;
use warnings;

use Test::More;
use JSON::PP ();
use File::Temp qw(tempdir);
use Test::Edge qw(wait_until);
use Test::Edge::Nginx;
use Test::Edge::Origin;
use IO::Socket::INET;

my $origin = Test::Edge::Origin->start;
my $oport = $origin->port;

my $http = <<"HTTP";
    upstream origin { server 127.0.0.1:$oport; }
    breaker_shed_zone sz 1m;
    breaker_shedder st zone=sz limit=1 queue=1 queue_timeout=30s codel_target=0;
    breaker_shed_class st 10;
    breaker_shed_class st 1 share=20%;
    breaker_shedder ad zone=sz adaptive min_limit=3 max_limit=50;
    server {
        listen 127.0.0.1:\$PORT;
        location = /breaker { breaker_status_endpoint; }
        location /st/ {
            breaker_shed st priority=\$http_x_prio;
            proxy_pass http://origin;
        }
    }
HTTP

{
    my $d = tempdir(CLEANUP => 1);
    mkdir "$d/logs";
    my $modules = join '', map { "load_module $_;\n" }
        split ' ', ($ENV{TEST_NGINX_LOAD_MODULES} // '');
    (my $h = $http) =~ s/\$PORT/1/;
    open my $fh, '>', "$d/nginx.conf" or die $!;
    print $fh "${modules}error_log $d/logs/error.log;\npid $d/nginx.pid;\n"
            . "events {}\nhttp {\n$h\n}\n";
    close $fh;
    my $bin = $ENV{TEST_NGINX_BINARY} || '/usr/sbin/nginx';
    my $out = `$bin -t -p $d/ -c $d/nginx.conf 2>&1`;
    plan skip_all => 'the status endpoint is not built yet'
        if $out =~ /unknown directive "breaker_status_endpoint"/;
    BAIL_OUT("the configuration is refused:\n$out")
        unless $out =~ /test is successful/;
}

my $n = Test::Edge::Nginx->start(http => $http, workers => 2);

sub shedder {
    my ($name) = @_;
    my $r = $n->get('/breaker');
    my $doc = eval { JSON::PP::decode_json($r->{body}) } or return undef;
    my ($s) = grep { $_->{name} eq $name } @{ $doc->{shedders} // [] };
    return $s;
}

sub send_req {
    my ($path, %h) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $n->port)
        or die $!;
    print $s "GET $path HTTP/1.0\r\nHost: x\r\n"
           . join('', map { "$_: $h{$_}\r\n" } keys %h) . "\r\n";
    return $s;
}

my $s = shedder('st');
ok($s, 'the shedder st is listed');
is_deeply([@$s{qw(zone limit in_flight queue queue_max queue_timeout_ms)}],
          ['sz', 1, 0, 0, 1, 30000], 'zone, limit, in flight, queue, queue bounds');
ok(!$s->{shedding}, 'not shedding');
is($s->{adaptive}, undef, 'static: no adaptive state');
is_deeply([map { "$_->{priority}/$_->{share}" } @{ $s->{classes} }],
          ['10/0', '1/20'], 'its classes, highest first, with their shares');

my $a = shedder('ad');
is($a->{adaptive}{phase}, 'measuring_min_rtt', 'adaptive: measuring minRTT at start');
is("$a->{adaptive}{min_limit} $a->{adaptive}{max_limit} $a->{limit}", '3 50 3',
   'its bounds; the limit is min_limit while measuring');

$origin->set('/st/hold', mode => 'hang');
$origin->set('/st/w', mode => 'hang');
my $hold = send_req('/st/hold', 'X-Prio' => 1);
ok(wait_until(10, sub { (shedder('st') // {})->{in_flight} == 1 }),
   'a request holds the permit');
$s = shedder('st');
ok($s->{shedding}, 'the limit is reached: shedding');
is($s->{classes}[1]{in_flight}, 1, 'in flight in its class (priority 1)');
my $wait = send_req('/st/w', 'X-Prio' => 10);
ok(wait_until(10, sub { (shedder('st') // {})->{queue} == 1 }), 'one waits');
is(shedder('st')->{classes}[0]{queue}, 1, 'in its class (priority 10)');
close $hold;
ok(wait_until(10, sub { my $x = shedder('st'); $x->{queue} == 0 && $x->{in_flight} == 1 }),
   'the waiting one is admitted');
$s = shedder('st');
is("$s->{classes}[0]{admitted} $s->{classes}[0]{queued} $s->{classes}[1]{admitted}",
   '0 1 1', 'counted: one admitted at once (priority 1), one after waiting (priority 10)');
$origin->reset;
close $wait;
ok(wait_until(10, sub { my $x = shedder('st'); $x->{in_flight} == 0 && !$x->{shedding} }),
   'all released: not shedding');

unlike($n->log, qr/\[(alert|crit|emerg)\]/, 'no alert in the log');
$n->stop;
$origin->stop;

done_testing();
