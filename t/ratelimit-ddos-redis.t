# ratelimit_ddos on Redis: a client banned through one node is banned on
# every node (the ban is kept in Redis), and a ban cached by a worker costs
# no Redis command.  Clients are told apart by X-Real-IP.
use strict;
use warnings;

use Test::More;
use Test::Edge qw(:all);
use Test::Edge::Nginx;

redis_start() unless redis_is_up();
redis_flushall();

my $redis = "127.0.0.1:$ENV{TEST_NGINX_REDIS_PORT}";

my $http = <<"HTTP";
    set_real_ip_from 127.0.0.1;
    real_ip_header X-Real-IP;
    ratelimit_redis r $redis timeout=5s;
    ratelimit_ddos zone=ddos:1m rate=5r/m threshold=8 ban=1h redis=r
                   allow=10.9.0.0/16;
    server {
        listen 127.0.0.1:\$PORT;
        location = /ok { return 200 "ok\\n"; }
        location /a {
            add_header X-Status \$ratelimit_status always;
            add_header X-Banned \$ratelimit_banned always;
            proxy_pass http://127.0.0.1:\$PORT/ok;
        }
    }
HTTP

# one worker each: the deny and ban cache is per worker
my $a = Test::Edge::Nginx->start(http => $http, workers => 1);
my $b = Test::Edge::Nginx->start(http => $http, workers => 1);

sub as {
    my ($n, $ip) = @_;
    my $r = $n->request('GET', '/a', 'X-Real-IP' => $ip);
    return join ' ', $r->{status}, $r->{headers}{'x-status'} // '',
                     $r->{headers}{'x-banned'} // '';
}

{
    my @d = map { as($a, '10.2.2.2') } 1 .. 10;
    is_deeply([@d[0 .. 4]], [('200 PASSED 0') x 5], 'node A: 5 pass');
    is_deeply([@d[5 .. 7]], [('429 REJECTED 0') x 3], 'node A: 3 refused');
    is($d[8], '429 BANNED 1', 'node A: banned beyond threshold=8');

    is(as($b, '10.2.2.2'), '429 BANNED 1',
       'node B: the client is banned on its first request there');
    is(as($b, '10.2.2.3'), '200 PASSED 0', 'node B: another client passes');
}

# the ban is cached: no Redis command for a banned client
{
    redis_command('CONFIG', 'RESETSTAT');
    my @d = (map({ as($a, '10.2.2.2') } 1 .. 10),
             map({ as($b, '10.2.2.2') } 1 .. 10));
    is(scalar(grep { $_ eq '429 BANNED 1' } @d), 20, '20 refused as banned');
    my $calls = 0;
    $calls += redis_calls($_) for qw(incrby get pttl evalsha eval decrby);
    is($calls, 0, 'with the ban cached, no Redis command');
}

# an allow-listed client costs no Redis command either
{
    redis_command('CONFIG', 'RESETSTAT');
    my @d = map { as($a, '10.9.3.4') } 1 .. 10;
    is(scalar(grep { $_ eq '200  ' } @d), 10, 'allow-listed: not limited');
    my $calls = 0;
    $calls += redis_calls($_) for qw(incrby get pttl evalsha eval);
    is($calls, 0, 'allow-listed: no Redis command');
}

unlike($a->log . $b->log, qr/\[(?:alert|crit|emerg)\]/, 'no alert');

$a->stop;
$b->stop;

done_testing();
