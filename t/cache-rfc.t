# ngx_http_cache_module, the HTTP caching rules end to end (RFC 9111,
# RFC 5861 where the module serves it): freshness precedence (s-maxage,
# max-age, Expires), invalid and repeated freshness, Age from upstream,
# Authorization, qualified no-cache / private, must-understand, Vary: *,
# Content-Encoding other than gzip under Vary: Accept-Encoding, Vary
# normalisation, heuristic
# freshness, edge_cache_valid for a 302, Set-Cookie when allowed, the
# request's Cache-Control / Pragma against a stored entry, and no stale
# answer on an origin error for a response that forbids it.  The unit cases
# of the same rules are in t/cache-rfc-unit.t.
#
# The origin is a server of the same nginx; every body carries
# $request_id, so a stored copy is told from a new answer.  One worker,
# hence one Redis connection: the module's SETs reach Redis in the order
# of the responses, so "not stored" is asserted after a later response of
# a storable URL is seen in Redis (barrier()), not after a sleep.
use strict;
use warnings;

use Test::More;
use Test::Edge qw(:all);
use Test::Edge::Nginx;
use Digest::MD5 qw(md5_hex);

redis_start() unless redis_is_up();
redis_flushall();

my $rport = $ENV{TEST_NGINX_REDIS_PORT};

my $cache = <<'CONF';
            edge_cache rfc;
            edge_cache_key $request_uri;
            add_header X-Cache $edge_cache_status always;
CONF

my $http = <<"HTTP";
    edge_cache_redis main 127.0.0.1:$rport timeout=300ms;
    edge_cache_zone rfc redis=main;
    server {
        listen 127.0.0.1:\$PORT;
        location /c/ {
$cache
            proxy_pass http://127.0.0.1:\$PORT/o/;
        }
        location /v/ {
$cache
            edge_cache_valid 302 60s;
            proxy_pass http://127.0.0.1:\$PORT/o/;
        }
        location /h/ {
$cache
            edge_cache_heuristic on;
            edge_cache_heuristic_max 1h;
            proxy_pass http://127.0.0.1:\$PORT/o/;
        }
        location /k/ {
$cache
            edge_cache_store_set_cookie on;
            proxy_pass http://127.0.0.1:\$PORT/o/;
        }
        # one key for several URIs: /s/<origin>?k=K reads and stores K
        location /s/ {
            edge_cache rfc;
            edge_cache_key \$arg_k;
            edge_cache_use_stale http_502;
            add_header X-Cache \$edge_cache_status always;
            proxy_pass http://127.0.0.1:\$PORT/o/;
        }

        location /o/ {
            add_header Cache-Control "max-age=60";
            return 200 "\$request_id";
        }
        location /o/smaxage0 {
            add_header Cache-Control "s-maxage=0, max-age=60";
            return 200 "\$request_id";
        }
        location /o/maxage-over-expires {
            add_header Cache-Control "max-age=60";
            add_header Expires "Thu, 01 Jan 1970 00:00:01 GMT";
            return 200 "\$request_id";
        }
        location /o/expires-future {
            add_header Expires "Fri, 31 Dec 2100 23:59:59 GMT";
            return 200 "\$request_id";
        }
        location /o/expires0 {
            add_header Expires "0";
            return 200 "\$request_id";
        }
        location /o/dup {
            add_header Cache-Control "max-age=60, max-age=60";
            return 200 "\$request_id";
        }
        location /o/invalid {
            add_header Cache-Control "max-age=abc";
            return 200 "\$request_id";
        }
        location /o/age100 {
            add_header Cache-Control "max-age=60";
            add_header Age "100";
            return 200 "\$request_id";
        }
        location /o/age10 {
            add_header Cache-Control "max-age=60";
            add_header Age "10";
            return 200 "\$request_id";
        }
        location /o/varystar {
            add_header Cache-Control "max-age=60";
            add_header Vary "*";
            return 200 "\$request_id";
        }
        location /o/qualified {
            add_header Cache-Control 'max-age=60, no-cache="X-Secret", private="X-Private"';
            add_header X-Secret "s";
            add_header X-Private "p";
            add_header X-Kept "k";
            return 200 "\$request_id";
        }
        location /o/understand {
            add_header Cache-Control "max-age=60, no-store, must-understand";
            return 200 "\$request_id";
        }
        location /o/notunderstood {
            add_header Cache-Control "max-age=60, must-understand";
            return 299 "\$request_id";
        }
        location /o/br {
            add_header Cache-Control "max-age=60";
            add_header Vary "Accept-Encoding";
            add_header Content-Encoding "br";
            return 200 "\$request_id";
        }
        location /o/lang {
            add_header Cache-Control "max-age=60";
            add_header Vary "Accept-Language";
            return 200 "\$request_id";
        }
        location /o/nofresh { return 200 "\$request_id"; }
        location /o/lm {
            add_header Last-Modified "Mon, 01 Jan 2001 00:00:00 GMT";
            return 200 "\$request_id";
        }
        location /o/302 {
            add_header X-Id "\$request_id";
            return 302 /elsewhere;
        }
        location /o/cookie {
            add_header Cache-Control "max-age=60";
            add_header Set-Cookie "s=1";
            return 200 "\$request_id";
        }
        location /o/public {
            add_header Cache-Control "public, max-age=60";
            return 200 "\$request_id";
        }
        location /o/s-maxage {
            add_header Cache-Control "s-maxage=60";
            return 200 "\$request_id";
        }
        location /o/zero {
            add_header Cache-Control "max-age=0";
            return 200 "\$request_id";
        }
        location /o/fail { return 502; }
        location /o/zero-nc {
            add_header Cache-Control "max-age=0, no-cache";
            return 200 "\$request_id";
        }
        location /o/zero-pr {
            add_header Cache-Control "max-age=0, proxy-revalidate";
            return 200 "\$request_id";
        }
        location /o/zero-sm {
            add_header Cache-Control "s-maxage=0";
            return 200 "\$request_id";
        }
        location /o/zero-mr {
            add_header Cache-Control "max-age=0, must-revalidate";
            return 200 "\$request_id";
        }
    }
HTTP

my $nginx = Test::Edge::Nginx->start(http => $http, workers => 1);

# the Redis key of a request path: its URI, or for /s/ its k argument
sub rkey {
    my ($path) = @_;
    my $key = $path =~ m{^/s/.*[?&]k=([^&]+)} ? $1 : $path;
    return 'rfc:{' . md5_hex($key) . '}';
}

# (X-Cache, what tells this answer from another: the body, and X-Id for
# the 302 whose body is nginx's own page, the full response)
sub fetch {
    my ($path, %h) = @_;
    my $r = $nginx->get($path, %h);
    return ($r->{headers}{'x-cache'} // '-',
            $r->{body} . ($r->{headers}{'x-id'} // ''), $r);
}

sub stored { defined redis_command('GET', rkey($_[0])) }

# fetch PATH until Redis holds it (it is sent before it is stored)
sub store {
    my ($path, %h) = @_;
    my (undef, $body) = fetch($path, %h);
    return wait_until(10, sub { stored($path) }) ? $body : undef;
}

# every SET issued before now has reached Redis (see the top)
my $barriers = 0;
sub barrier {
    $barriers++;
    return defined store("/c/barrier-$barriers");
}

# the worker stores nothing until it has connected to Redis
ok(wait_until(10, sub { fetch('/c/warm'); stored('/c/warm') }),
   'the first response is stored in Redis');

# a storable URL is a hit once stored; one that is not stays a miss
sub hit_after_store {
    my ($path, $title, %h) = @_;
    my $body = store($path, %h);
    ok(defined $body, "$title: stored");
    my ($x, $b) = fetch($path, %h);
    is($x, 'HIT', "$title: a hit");
    is($b, $body, "$title: the stored body");
}

sub not_stored {
    my ($path, $title, %h) = @_;
    my ($x1, $b1) = fetch($path, %h);
    ok(barrier(), "$title: barrier");
    ok(!stored($path), "$title: not stored") or diag(redis_command('GET', rkey($path)));
    my ($x2, $b2) = fetch($path, %h);
    is("$x1 $x2", 'MISS MISS', "$title: never a hit");
    isnt($b1, $b2, "$title: each answer from the origin");
}

# stored, but stale at once: every request goes to the origin again
sub stored_stale {
    my ($path, $title, %h) = @_;
    my $body = store($path, %h);
    ok(defined $body, "$title: stored");
    my ($x, $b) = fetch($path, %h);
    is($x, 'EXPIRED', "$title: stale at once, not a hit");
    isnt($b, $body, "$title: the origin answers");
}


# --- freshness precedence (RFC 9111 4.2.1)
hit_after_store('/c/fresh', 'max-age=60');
stored_stale('/c/smaxage0', 's-maxage=0 wins over max-age=60');
hit_after_store('/c/maxage-over-expires', 'max-age=60 wins over an Expires in the past');
hit_after_store('/c/expires-future', 'Expires in the future, no Cache-Control');
stored_stale('/c/expires0', 'Expires: 0 is already expired');
stored_stale('/c/dup', 'a repeated max-age means stale');
stored_stale('/c/invalid', 'max-age=abc means stale');

# --- Age from upstream (4.2.3)
stored_stale('/c/age100', 'Age: 100 over max-age=60');
hit_after_store('/c/age10', 'Age: 10 under max-age=60');
my (undef, undef, $r) = fetch('/c/age10');
cmp_ok($r->{headers}{age} // 0, '>=', 10, 'Age: 10 from upstream counts in the Age sent');

# --- what is stored (3)
not_stored('/c/varystar', 'Vary: *');
not_stored('/c/br', 'Vary: Accept-Encoding with Content-Encoding: br');
not_stored('/c/nofresh', 'no freshness, no edge_cache_valid, no heuristic');
not_stored('/c/lm', 'Last-Modified, heuristic off');
hit_after_store('/h/lm', 'Last-Modified, edge_cache_heuristic on');
not_stored('/c/302', '302 without freshness');
hit_after_store('/v/302', '302 with edge_cache_valid 302');
hit_after_store('/c/understand', 'must-understand, 200: no-store overridden');
not_stored('/c/notunderstood', 'must-understand, status 299');

hit_after_store('/k/cookie', 'Set-Cookie with edge_cache_store_set_cookie on');
(undef, undef, $r) = fetch('/k/cookie');
is($r->{headers}{'set-cookie'}, 's=1', 'Set-Cookie kept');

# qualified no-cache / private: stored without the named fields
(undef, undef, $r) = fetch('/c/qualified');
is($r->{headers}{'x-secret'}, 's', 'the miss has X-Secret from the origin');
hit_after_store('/c/qualified', 'no-cache="X-Secret", private="X-Private"');
(undef, undef, $r) = fetch('/c/qualified');
ok(!exists $r->{headers}{'x-secret'}, 'the hit has no X-Secret');
ok(!exists $r->{headers}{'x-private'}, 'the hit has no X-Private');
is($r->{headers}{'x-kept'}, 'k', 'the hit has the other fields');

# Vary: the selecting values normalised (RFC 9111 4.1): whitespace around
# commas, several field lines, and for Accept-Language the case
my $lang = store('/c/lang', 'Accept-Language' => 'en-US, de');
ok(defined $lang, 'Vary: Accept-Language: stored');
for my $h (['Accept-Language' => 'en-US,de'],
           ['Accept-Language' => ' EN-us ,  DE '],
           # two field lines (two spellings: the request helper takes a
           # hash, and sends its keys sorted)
           ['Accept-Language' => 'en-US', 'accept-language' => 'de'])
{
    my ($x, $b) = fetch('/c/lang', @$h);
    my $shown = join ' / ', map { $h->[2 * $_ + 1] } 0 .. $#$h / 2;
    is("$x $b", "HIT $lang", "Vary: Accept-Language: '$shown' is the same variant");
}
my ($xl) = fetch('/c/lang', 'Accept-Language' => 'de, en-US');
is($xl, 'MISS', 'Vary: Accept-Language: another order is another variant');
($xl) = fetch('/c/lang');
is($xl, 'MISS', 'Vary: Accept-Language: none at all is another variant');

# Authorization (3.5)
not_stored('/c/auth', 'Authorization, max-age only', Authorization => 'Basic eDp5');
hit_after_store('/c/public', 'Authorization, public', Authorization => 'Basic eDp5');
hit_after_store('/c/s-maxage', 'Authorization, s-maxage', Authorization => 'Basic eDp5');

# --- the request's directives against a stored fresh entry (5.2.1)
my $fresh = (fetch('/c/fresh'))[1];
for my $case (['Cache-Control' => 'no-cache'], ['Pragma' => 'no-cache'],
              ['Cache-Control' => 'max-age=0'],
              ['Cache-Control' => 'min-fresh=120'])
{
    my ($x, $b) = fetch('/c/fresh', @$case);
    isnt($x, 'HIT', "request $case->[0]: $case->[1]: not a hit");
    isnt($b, $fresh, "request $case->[0]: $case->[1]: the origin answers");
    # the new answer is stored in place of the old one
    ok(wait_until(10, sub { my ($x2, $b2) = fetch('/c/fresh');
                            $x2 eq 'HIT' && $b2 eq $b }),
       "request $case->[0]: $case->[1]: its answer is stored");
    $fresh = $b;
}
my ($x) = fetch('/c/fresh', 'Cache-Control' => 'max-age=3600');
is($x, 'HIT', 'request max-age=3600: a hit');
($x) = fetch('/c/fresh', 'Cache-Control' => 'min-fresh=10');
is($x, 'HIT', 'request min-fresh=10: a hit');

# request no-store: not from the cache, and its answer is not stored
my ($xn, $bn) = fetch('/c/fresh', 'Cache-Control' => 'no-store');
isnt($bn, $fresh, 'request no-store: the origin answers');
ok(barrier(), 'request no-store: barrier');
my ($xa, $ba) = fetch('/c/fresh');
is("$xa $ba", "HIT $fresh", 'request no-store: the stored entry is unchanged');

# max-stale: a stale entry served when the request accepts it
my $zero = store('/c/zero');
ok(defined $zero, 'max-age=0: stored');
my ($xs, $bs) = fetch('/c/zero', 'Cache-Control' => 'max-stale');
is("$xs $bs", "STALE $zero", 'request max-stale: the stale entry');
($xs, $bs) = fetch('/c/zero', 'Cache-Control' => 'max-stale=3600');
is("$xs $bs", "STALE $zero", 'request max-stale=3600: the stale entry');
stored_stale('/c/zero-mr', 'max-age=0, must-revalidate');
($xs) = fetch('/c/zero-mr', 'Cache-Control' => 'max-stale');
is($xs, 'EXPIRED', 'must-revalidate: never stale, not even for max-stale');

# stale on an origin error (edge_cache_use_stale http_502): never for a
# response that forbids stale use (RFC 9111 4.2.4)
for my $case (['zero', 'max-age=0', 1], ['zero-mr', 'must-revalidate', 0],
              ['zero-pr', 'proxy-revalidate', 0], ['zero-nc', 'no-cache', 0],
              ['zero-sm', 's-maxage=0', 0])
{
    my ($origin, $title, $stale_ok) = @$case;
    my $k = "use-stale-$origin";
    my $body = store("/s/$origin?k=$k");
    ok(defined $body, "use_stale, $title: stored") or next;
    my $r = $nginx->get("/s/fail?k=$k");
    my $got = "$r->{status} " . ($r->{headers}{'x-cache'} // '-');
    if ($stale_ok) {
        is($got, '200 STALE', "use_stale, $title: the origin fails, stale served");
        is($r->{body}, $body, "use_stale, $title: the stored body");
    } else {
        is($got, '502 EXPIRED', "use_stale, $title: the origin's 502, never stale");
    }
}

$nginx->stop;
my $log = $nginx->final_log;
unlike($log, qr/\[(alert|crit|emerg|error)\]/, 'no error, alert, crit or emerg')
    or diag($log);

done_testing();
