# ratelimit_ddos's allow list from PostgreSQL (allow_pg= and a match=cidr
# ratelimit_pg_map), against the fixtures' real PostgreSQL: an allowed
# CIDR is never limited nor banned, rows added or removed take effect at
# a refresh, PostgreSQL down keeps the last list, malformed rows are
# skipped with one warning.  Clients are told apart by X-Real-IP (the
# realip module sets the address the zone keys on and the allow list
# checks).  The map's variable is keyed on an X-Probe header and read by a
# location with "return" (the rewrite phase, never rate limited): it shows
# which copy of the map is current without spending any client's quota.
use strict;
use warnings;

use Test::More;
use Test::Edge qw(wait_until pg_exec pg_stop pg_start);
use Test::Edge::Nginx;
use IO::Socket::INET;

my $DB = 'edge_ddos';
my $DSN = "host=127.0.0.1 port=$ENV{TEST_NGINX_PG_PORT} user=postgres"
        . " dbname=$DB";

sub pg_is_up {
    return defined IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                         PeerPort => $ENV{TEST_NGINX_PG_PORT},
                                         Timeout => 2);
}

# psql on our own database: SQL_ASCII, so that a key can hold bytes that
# are not UTF-8, as they would reach nginx from such a database
sub sql {
    my ($q) = @_;
    open my $fh, '-|', 'psql', $DSN, '-qAtX', '-v', 'ON_ERROR_STOP=1',
        '-c', $q or die "psql: $!\n";
    local $/;
    my $out = <$fh> // '';
    close $fh or die "psql failed ($?) on: $q\n";
    return $out;
}

pg_start() unless pg_is_up();
$ENV{PGOPTIONS} = '-c client_min_messages=warning';
pg_exec("DROP DATABASE IF EXISTS $DB");
pg_exec("CREATE DATABASE $DB ENCODING 'SQL_ASCII' LC_COLLATE 'C'"
        . " LC_CTYPE 'C' TEMPLATE template0");

# the malformed rows: each is skipped, none makes its address allowed
my @bad = (
    "('10.0.0.0/33', 'past /32')",
    "('2001:db8::/129', 'past /128')",
    "('not-an-address', 'text')",
    "(repeat('1', 300), 'huge')",
    "(repeat('a:', 100), 'long, under 255')",
    q{(E'\xff\xfe10.2.0.0/16', 'not UTF-8')},
    q{(E'10.3.0.0/16\xc3', 'a truncated UTF-8 sequence')},
    "('１０.４.０.０/16', 'fullwidth digits')",
    "('10.5.0.0/', 'no prefix')",
    "('10.6.0.0/-1', 'negative prefix')",
    "('10.7.0.0/99999999999999999999', 'a prefix past 2^64')",
    "(' 10.8.0.0/16', 'a leading space')",
    "('', 'empty: skipped as in any map')",
);

sql(<<SQL);
SET client_min_messages = warning;
DROP TABLE IF EXISTS partners;
CREATE TABLE partners (ord serial, net text, name text);
INSERT INTO partners (net, name) VALUES
    ('192.0.2.0/24', 'lab'),
    ('192.0.2.128/25', 'inner'),
    ('2001:db8:1::/48', 'lab6'),
    ('198.51.100.7', 'one'),
    ('203.0.113.77/24', 'host bits'),
    ('::ffff:100.64.0.0/106', 'mapped'),
    @{[ join ",\n    ", @bad ]};
SQL

my $http = <<"HTTP";
    metrics_zone 1m;
    set_real_ip_from 127.0.0.1;
    real_ip_header X-Real-IP;
    ratelimit_pg_map \$http_x_probe \$partner match=cidr
                     "dsn=$DSN" "query=SELECT net, name FROM partners ORDER BY ord"
                     refresh=1s timeout=2s default=none;
    ratelimit_ddos zone=ddos:1m rate=5r/m threshold=8 ban=60s
                   allow_pg=\$partner;
    server {
        listen 127.0.0.1:\$PORT;
        location = /ok { return 200 "ok\\n"; }
        location = /metrics { metrics; }
        location = /probe { return 200 "\$partner"; }
        location /a {
            add_header X-Status \$ratelimit_status always;
            add_header X-Banned \$ratelimit_banned always;
            proxy_pass http://127.0.0.1:\$PORT/ok;
        }
    }
HTTP

# whatever happens, the next files find PostgreSQL running
END { local $?; pg_start() unless pg_is_up() }

my $n = Test::Edge::Nginx->start(http => $http, workers => 2);

sub as {
    my ($ip) = @_;
    my $r = $n->request('GET', '/a', 'X-Real-IP' => $ip);
    return join ' ', $r->{status}, $r->{headers}{'x-status'} // '',
                     $r->{headers}{'x-banned'} // '';
}

sub probe { $n->get('/probe', 'X-Probe' => $_[0])->{body} }

sub count { my $want = shift; scalar grep { $_ eq $want } @_ }

# "loaded" lines in the log: a load that finishes after the second new
# one began after what the test changed before counting
sub loads { scalar(() = $n->log =~ /ratelimit_pg_map "\$partner": loaded /g) }

sub wait_loads {
    my ($more) = @_;
    my $want = loads() + $more;
    return wait_until(20, sub { loads() >= $want });
}

# --- the first load
ok(wait_until(20, sub { probe('192.0.2.5') eq 'lab' }),
   'the map is loaded from PostgreSQL');
is(probe('192.0.2.200'), 'inner', 'the longest prefix wins');
is(probe('10.0.0.5'), 'none', 'an address on no row: the default');

# --- allowed clients are never limited nor banned
for my $ip ('192.0.2.9', '2001:db8:1::5', '198.51.100.7', '203.0.113.5',
            '100.64.1.1')
{
    my @d = map { as($ip) } 1 .. 12;
    is(count('200  ', @d), 12,
       "$ip is on the allow list: 12 of 12 pass, not limited, not banned");
}

# --- malformed rows: skipped, their addresses limited
{
    for my $ip ('10.0.0.5', '2001:db8::1', '10.2.0.1', '10.8.0.1') {
        my @d = map { as($ip) } 1 .. 8;
        is(count('200 PASSED 0', @d), 5, "$ip (a malformed row's): limited");
    }
    my @d = map { as('10.0.0.5') } 1 .. 2;
    is($d[1], '429 BANNED 1', '... and banned beyond threshold=');

    my $nbad = @bad - 1;    # the empty key is counted as empty, not bad
    my @warn = $n->log =~
        /\[warn\] .*ratelimit_pg_map "\$partner": (\d+) rows skipped, their key is not an address or CIDR, the first in row (\d+): "([^"]*)"/g;
    is($warn[0], $nbad, "one warning counts the $nbad malformed rows");
    is($warn[2], '10.0.0.0/33', '... and shows the first');

    ok(wait_loads(2), 'two more loads');
    my $log = $n->log;
    my $nwarn = () = $log =~ /\[warn\] .*not an address or CIDR/g;
    is($nwarn, 1, 'the same malformed rows are warned of once');
    like($log, qr/\[info\] .*$nbad rows skipped, their key is not an address or CIDR.*\(as at the previous load\)/,
         '... and noted at info at the other loads');
    unlike($log, qr/rows skipped, their key or value is longer/,
           'a huge key is a malformed address, not a second warning');
    unlike($log, qr/\[(?:alert|crit|emerg)\]/, 'no alert');
}

# a key that cannot be printed is shown escaped
{
    sql("UPDATE partners SET ord = 0, net = E'\\xff\\x01' || repeat('x', 100)"
        . " WHERE name = 'past /32'");
    ok(wait_until(20, sub {
           $n->log =~ /\[warn\] .*rows skipped, their key is not an address or CIDR, the first in row \d+: "\\xff\\x01(x+)\.\.\."/
               && length($1) == 62
       }), 'a changed set of malformed rows is warned of again, the key'
           . ' escaped and cut at 64 bytes');
}

# --- a row added takes effect at the next refresh
{
    my @d = map { as('198.18.3.3') } 1 .. 7;
    is(count('200 PASSED 0', @d), 5, '198.18.3.3: limited before its row');
    sql("INSERT INTO partners (net, name) VALUES ('198.18.0.0/15', 'new')");
    ok(wait_until(20, sub { probe('198.18.3.3') eq 'new' }),
       'the row added is loaded');
    @d = map { as('198.18.3.3') } 1 .. 12;
    is(count('200  ', @d), 12, '... and its client is no longer limited');
}

# --- a row removed takes effect at the next refresh
{
    sql("DELETE FROM partners WHERE name = 'lab'");
    ok(wait_until(20, sub { probe('192.0.2.5') eq 'none' }),
       'the row removed is gone');
    is(probe('192.0.2.200'), 'inner', '... the others stay');
    my @d = map { as('192.0.2.9') } 1 .. 8;
    is(count('200 PASSED 0', @d), 5,
       '192.0.2.9 is limited again (its earlier requests were not counted)');
    @d = map { as('192.0.2.130') } 1 .. 12;
    is(count('200  ', @d), 12, '192.0.2.130 (the inner row) is not');
}

# --- PostgreSQL down: the last list keeps serving
{
    pg_stop();
    ok(wait_until(20, sub {
           $n->log =~ /\[error\] .*ratelimit_pg_map "\$partner": loading from .* failed: .*serving the last good copy/
       }), 'PostgreSQL down: the refresh fails');
    my @d = map { as('2001:db8:1::77') } 1 .. 12;
    is(count('200  ', @d), 12, '... and the allow list still holds');
    is(probe('198.18.3.3'), 'new', '... the row added last included');
    my $m = $n->get('/metrics')->{body};
    like($m, qr/^(?:nginx_)?ratelimit_pg_failing\{map="partner"\} 1$/m,
         '... ratelimit_pg_failing is 1');
    pg_start();
    ok(wait_until(30, sub {
           $n->log =~ /\[notice\] .*ratelimit_pg_map "\$partner": loading from .* works again/
       }), 'PostgreSQL back: loading works again');
}

# --- the counters
{
    my $m = $n->get('/metrics')->{body};
    my ($allowed) = $m =~
        /^(?:nginx_)?ratelimit_ddos_allowlisted_total\{zone="ddos"\} (\d+)/m;
    is($allowed, 12 * 5 + 12 + 12 + 12, 'ratelimit_ddos_allowlisted_total');
}

unlike($n->log, qr/\[(?:alert|crit|emerg)\]/, 'no alert in the log');

$n->stop;

pg_exec("DROP DATABASE IF EXISTS $DB");

done_testing();
