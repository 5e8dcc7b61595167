# ratelimit_ddos: one directive for the guide's DDoS setup, in shared
# memory.  Clients are told apart by X-Real-IP (the realip module sets the
# address the zone keys on and the allow list checks), so one test client
# plays IPv4 and IPv6 clients.
use strict;
use warnings;

use Test::More;
use Test::Edge qw(wait_until);
use Test::Edge::Nginx;
use Time::HiRes qw(sleep time);
use File::Temp qw(tempdir);

my $dir = tempdir(CLEANUP => 1);
open my $fh, '>', "$dir/allow.txt" or die $!;
print $fh "# partners\n203.0.113.7\n  2001:db8:feed::/48   # lab\n\n";
close $fh;

# 5 per minute, banned beyond 8 in a minute (after 3 refusals) for 3 s
my $BAN = 3 * $Test::Edge::Valgrind::Slowdown;

my $http = <<"HTTP";
    metrics_zone 1m;
    set_real_ip_from 127.0.0.1;
    real_ip_header X-Real-IP;
    ratelimit_ddos zone=ddos:1m rate=5r/m threshold=8 ban=${BAN}s
                   allow=192.168.1.0/24 allow=2001:db8::/32
                   allow_file=$dir/allow.txt;
    ratelimit_zone \$arg_k zone=other:1m rate=100r/s;
    server {
        listen 127.0.0.1:\$PORT;
        location = /ok { return 200 "ok\\n"; }
        location = /metrics { metrics; }
        location /a {
            add_header X-Status \$ratelimit_status always;
            add_header X-Banned \$ratelimit_banned always;
            proxy_pass http://127.0.0.1:\$PORT/ok;
        }
        location /own {
            ratelimit zone=other;
            add_header X-Status \$ratelimit_status always;
            add_header X-Rate \$ratelimit_rate always;
            proxy_pass http://127.0.0.1:\$PORT/ok;
        }
    }
HTTP

my $n = Test::Edge::Nginx->start(http => $http, workers => 2);

sub as {
    my ($ip, $path) = @_;
    my $r = $n->request('GET', $path // '/a', 'X-Real-IP' => $ip);
    return join ' ', $r->{status}, $r->{headers}{'x-status'} // '',
                     $r->{headers}{'x-banned'} // '';
}

sub count { my $want = shift; scalar grep { $_ eq $want } @_ }

# --- the threshold: 5 pass, 3 refused, then banned
{
    my @d = map { as('10.1.1.1') } 1 .. 12;
    is_deeply([@d[0 .. 4]], [('200 PASSED 0') x 5], 'rate=5r/m: 5 pass');
    is_deeply([@d[5 .. 7]], [('429 REJECTED 0') x 3],
              'the next 3 are refused');
    is_deeply([@d[8 .. 11]], [('429 BANNED 1') x 4],
              'beyond threshold=8: banned, $ratelimit_banned is 1');
    is(as('10.1.1.2'), '200 PASSED 0', 'another client is not affected');

    # a location with a limit of its own: the ban comes first
    my $r = $n->request('GET', '/own?k=x', 'X-Real-IP' => '10.1.1.1');
    is($r->{status}, 429, 'a location with its own ratelimit: refused');
    is($r->{headers}{'x-status'}, 'BANNED', '... as BANNED');
    unlike($r->{headers}{'x-rate'} // '', qr/other=/,
           '... before its own limit was looked at');

    $r = $n->request('GET', '/own?k=y', 'X-Real-IP' => '10.1.1.3');
    like($r->{headers}{'x-rate'} // '', qr/^ddos=5r\/m,other=100r\/s$/,
         'its own limit applies after the ddos limit');
}

# --- the ban expires
{
    my $t0 = time;
    my $last = '';
    ok(wait_until(10 + $BAN, sub {
           $last = as('10.1.1.1');
           return $last !~ /BANNED/;
       }), "the ban expires ($last)");
    ok(time - $t0 >= $BAN - 1, 'not before ban= has passed');
}

# --- the allow lists
{
    my @d = map { as('192.168.1.77') } 1 .. 10;
    is(count('200  ', @d), 10,
       'IPv4 CIDR on the allow list: 10 of 10 pass, not limited');
    @d = map { as('2001:db8::5') } 1 .. 10;
    is(count('200  ', @d), 10, 'IPv6 CIDR on the allow list: not limited');
    @d = map { as('2001:db9::1') } 1 .. 8;
    is(count('200 PASSED 0', @d), 5, 'an IPv6 client off the list: limited');
    @d = map { as('203.0.113.7') } 1 .. 10;
    is(count('200  ', @d), 10, 'an address from allow_file: not limited');
    @d = map { as('2001:db8:feed::9') } 1 .. 10;
    is(count('200  ', @d), 10, 'an IPv6 CIDR from allow_file: not limited');
    @d = map { as('203.0.113.8') } 1 .. 8;
    is(count('200 PASSED 0', @d), 5, 'its neighbour: limited');
}

# --- the counters
{
    my $m = $n->get('/metrics')->{body};
    my ($allowed) = $m =~
        /^(?:nginx_)?ratelimit_ddos_allowlisted_total\{zone="ddos"\} (\d+)/m;
    is($allowed, 40, 'ratelimit_ddos_allowlisted_total counts 40');
    my ($banned) = $m =~
        /^(?:nginx_)?ratelimit_decisions_total\{zone="ddos",result="banned"\} (\d+)/m;
    ok(($banned // 0) >= 5, 'the zone\'s own decisions count the bans');
}

unlike($n->log, qr/\[(?:alert|crit|emerg)\]/, 'no alert in the log');

$n->stop;

done_testing();
