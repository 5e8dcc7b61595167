# Stale serving: when the origin fails (refused, timed out, a 5xx listed in
# edge_cache_use_stale), within stale-if-error, or when the operator's
# edge_cache_stale_if predicate says so, the stored entry answers;
# must-revalidate forbids it; stale-while-revalidate answers at once and
# updates in the background (one update, stored).
use strict;
use warnings;

use Test::More;
use Test::Edge qw(:all);
use Test::Edge::Nginx;
use Test::Edge::Origin;
use Digest::MD5 qw(md5_hex);
use Time::HiRes qw(sleep);

redis_start() unless redis_is_up();
redis_flushall();

my $rport = $ENV{TEST_NGINX_REDIS_PORT};
my $origin = Test::Edge::Origin->start;
my $oport = $origin->port;
my $dead = Test::Edge::Nginx::free_port();   # nothing listens there

my $http = <<"HTTP";
    edge_cache_redis main 127.0.0.1:$rport timeout=1s;
    edge_cache_zone pages redis=main;
    server {
        listen 127.0.0.1:\$PORT;
        edge_cache pages;
        edge_cache_key \$uri;
        edge_cache_keep 60s;
        edge_cache_status_header on;
        add_header X-Cache \$edge_cache_status always;
        proxy_read_timeout 500ms;
        proxy_connect_timeout 500ms;
        location /s/ {
            edge_cache_use_stale error timeout http_500 http_503;
            proxy_pass http://127.0.0.1:$oport;
        }
        location /plain/ {
            proxy_pass http://127.0.0.1:$oport;
        }
        location /if/ {
            edge_cache_stale_if \$http_x_origin_down;
            proxy_pass http://127.0.0.1:$oport;
        }
        location /swr/ {
            proxy_pass http://127.0.0.1:$oport;
        }
        # one key, two origins: a live one fills it, a dead one fails
        location = /live/x {
            edge_cache_key /deadkey;
            proxy_pass http://127.0.0.1:$oport;
        }
        location = /dead/x {
            edge_cache_key /deadkey;
            edge_cache_use_stale error;
            proxy_pass http://127.0.0.1:$dead;
        }
    }
HTTP

my $n = Test::Edge::Nginx->start(http => $http, workers => 2);

sub rkey { 'pages:{' . md5_hex($_[0]) . '}' }

sub store_stale {
    my ($path, @headers) = @_;
    $origin->set($path, headers => ['Cache-Control: max-age=1', @headers],
                 body => "body of $path");
    my $ok = wait_until(10, sub { $n->get($path); defined redis_command('GET', rkey($path)) });
    sleep 1.2;    # stale now
    return $ok;
}

sub show { my $r = $n->get(@_); return "$r->{status} " . ($r->{headers}{'x-cache'} // '-') . " $r->{body}" }

# --- the origin fails in each way use_stale lists
ok(store_stale('/s/a'), 'an entry, stale now');
$origin->set('/s/a', mode => 'close');
is(show('/s/a'), '200 STALE body of /s/a', 'origin closes without answering (error): stale');
$origin->set('/s/a', mode => 'hang');
is(show('/s/a'), '200 STALE body of /s/a', 'origin silent past proxy_read_timeout: stale');
$origin->reset;
$origin->set('/s/a', status => 500, body => 'oops');
is(show('/s/a'), '200 STALE body of /s/a', 'origin 500: stale');
$origin->set('/s/a', status => 503, body => 'busy');
is(show('/s/a'), '200 STALE body of /s/a', 'origin 503: stale');
$origin->set('/s/a', status => 502, body => 'not listed');
is(show('/s/a'), '502 EXPIRED not listed', 'origin 502 (not listed): the origin\'s answer');
my $r = $n->get('/s/a');
$origin->set('/s/a', status => 500, body => 'oops');
$r = $n->get('/s/a');
like($r->{headers}{age}, qr/^\d+$/, 'the stale answer has its Age');
like($r->{headers}{'cache-status'}, qr/^edge; hit; ttl=-\d+$/, 'and a negative ttl in Cache-Status');
$r = $n->get('/s/a', 'Accept-Encoding' => 'gzip');
is($r->{status}, 200, 'a stale answer for a gzip client');
$origin->set('/s/a', headers => ['Cache-Control: max-age=60'], body => 'new');
is(show('/s/a'), '200 EXPIRED new', 'the origin back: its answer');
ok(wait_until(5, sub { show('/s/a') eq '200 HIT new' }), 'and stored');

# nothing listens: connect refused
$origin->set('/live/x', headers => ['Cache-Control: max-age=1'], body => 'dead body');
ok(wait_until(10, sub { $n->get('/live/x'); defined redis_command('GET', rkey('/deadkey')) }),
   'stored through the live origin');
sleep 1.2;
is(show('/dead/x'), '200 STALE dead body', 'connection refused (error): stale');

# --- without use_stale: only the response's stale-if-error window
ok(store_stale('/plain/a', 'Cache-Control: stale-if-error=60'), 'stale-if-error=60 stored');
$origin->set('/plain/a', status => 500, body => 'oops');
is(show('/plain/a'), '200 STALE body of /plain/a', 'stale-if-error: stale on 500');
ok(store_stale('/plain/b'), 'no stale-if-error stored');
$origin->set('/plain/b', status => 500, body => 'oops');
is(show('/plain/b'), '500 EXPIRED oops', 'no window, no use_stale: the error');

# --- must-revalidate forbids stale even with use_stale
ok(store_stale('/s/mr', 'Cache-Control: must-revalidate'), 'must-revalidate stored');
$origin->set('/s/mr', status => 500, body => 'oops');
is(show('/s/mr'), '500 EXPIRED oops', 'must-revalidate: never stale');

# --- the operator's predicate (e.g. the breaker's state): stale without
# trying the origin
ok(store_stale('/if/a', 'Cache-Control: stale-if-error=60'), 'stored');
my $before = $origin->hits('/if/a');
is(show('/if/a', 'X-Origin-Down' => '1'), '200 STALE body of /if/a', 'stale_if true: stale');
is($origin->hits('/if/a'), $before, 'and the origin was not asked');
$origin->set('/if/a', headers => ['Cache-Control: max-age=60'], body => 'fresh');
is(show('/if/a'), '200 EXPIRED fresh', 'stale_if false: the origin');

# --- stale-while-revalidate: stale at once, one update in the background
$origin->set('/swr/a', headers => ['Cache-Control: max-age=1, stale-while-revalidate=60'],
             body => 'v', count_body => 1);
ok(wait_until(10, sub { $n->get('/swr/a'); defined redis_command('GET', rkey('/swr/a')) }), 'stored');
sleep 1.2;
$before = $origin->hits('/swr/a');
# (the update's origin answers within proxy_read_timeout)
$origin->set('/swr/a', headers => ['Cache-Control: max-age=60'], body => 'v',
             count_body => 1, delay => 0.1);
is(show('/swr/a'), "200 STALE v#$before", 'within stale-while-revalidate: the stale entry');
ok(wait_until(10, sub { show('/swr/a') =~ /^200 HIT v#\d+$/ && $1 // 1 }),
   'then the background update is stored and hit');
is($origin->hits('/swr/a') - $before, 1, 'one update went to the origin')
    or diag(join "\n", map { "$_->{time} $_->{method} $_->{uri} " . join(',', map { "$_" } sort keys %{$_->{headers}}) } $origin->requests('/swr/a'));
like(show('/swr/a'), qr/^200 HIT v#\Q@{[$before + 1]}\E$/, 'the updated body');

# --- Redis down: no stale to serve, a miss, no error
redis_stop();
$origin->set('/s/down', headers => ['Cache-Control: max-age=60'], body => 'live');
is(show('/s/down'), '200 MISS live', 'Redis down: the origin answers');
redis_start();

$n->stop;
my $log = $n->final_log;
unlike($log, qr/\[(alert|crit|emerg)\]/, 'no alert, crit or emerg') or diag($log);
unlike($log, qr/open socket .* left/, 'no socket left open at exit');
$origin->stop;

done_testing();
