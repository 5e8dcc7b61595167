# What a node keeps for itself (shared-memory buckets, bans, the Redis
# mode's deny cache) runs on the monotonic clock: a step of the wall clock
# (NTP, a VM resume) changes no decision.  Only clock=nginx in Redis mode
# sends the wall clock, since there the nodes must agree on the time.
#
# The wall clock of nginx alone is stepped with libfaketime (LD_PRELOAD,
# FAKETIME_TIMESTAMP_FILE re-read on every call, the monotonic clock left
# real); the machine's clock is never touched.  Each step is checked to
# have reached nginx ($msec in a response header), so a passing test
# cannot come from a shim that did nothing.
use strict;
use warnings;

use Test::More;
use File::Temp qw(tempdir);
use Test::Edge qw(:all);
use Test::Edge::Nginx;

my ($lib) = grep { -e } map { "$_/faketime/libfaketime.so.1" }
    '/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/usr/lib';
plan skip_all => 'libfaketime is not installed' unless $lib;

redis_start() unless redis_is_up();
redis_flushall();

my $dir = tempdir(CLEANUP => 1);
my $rc = "$dir/faketime.rc";
my $offset = 0;

sub step_wall_clock {
    my ($by) = @_;
    $offset += $by;
    open my $fh, '>', "$rc.new" or die $!;
    printf $fh "%+ds\n", $offset;
    close $fh;
    rename "$rc.new", $rc or die $!;
}

step_wall_clock(0);

my $redis = "127.0.0.1:$ENV{TEST_NGINX_REDIS_PORT}";
my $http = <<"HTTP";
    ratelimit_redis r $redis timeout=2s;
    ratelimit_zone \$arg_k zone=shm:1m rate=1r/m;
    ratelimit_zone \$arg_k zone=fast:1m rate=1r/s;
    ratelimit_zone \$arg_k zone=ban:1m rate=1r/m;
    ratelimit_ban zone=ban threshold=2 window=1m duration=2s;
    ratelimit_zone \$arg_k zone=red:1m rate=1r/m redis=r on_failure=closed;
    ratelimit_zone \$arg_k zone=redfast:1m rate=1r/s redis=r
                   on_failure=closed;
    ratelimit_zone \$arg_k zone=wall:1m rate=1r/m redis=r clock=nginx
                   on_failure=closed;
    server {
        listen 127.0.0.1:\$PORT;
        location = /ok { return 200 "ok\\n"; }
HTTP
for my $z (qw(shm fast ban red redfast wall)) {
    $http .= <<"LOC";
        location = /$z {
            ratelimit zone=$z nodelay;
            add_header X-Status \$ratelimit_status always;
            add_header X-Msec \$msec always;
            proxy_pass http://127.0.0.1:\$PORT/ok;
        }
LOC
}
$http .= "    }\n";

my $nginx;
{
    local $ENV{LD_PRELOAD} = $lib;
    local $ENV{FAKETIME_TIMESTAMP_FILE} = $rc;
    local $ENV{FAKETIME_NO_CACHE} = 1;
    local $ENV{FAKETIME_DONT_FAKE_MONOTONIC} = 1;
    # nginx clears its workers' environment: keep the shim's settings
    $nginx = Test::Edge::Nginx->start(http => $http, workers => 1,
        main => join '', map { "env $_;\n" } qw(LD_PRELOAD
            FAKETIME_TIMESTAMP_FILE FAKETIME_NO_CACHE
            FAKETIME_DONT_FAKE_MONOTONIC));
}

# nginx's wall clock, from its response
sub nginx_msec {
    my ($path) = @_;
    my $res = $nginx->get($path);
    return ($res->{headers}{'x-msec'} // 0, "$res->{status} "
            . ($res->{headers}{'x-status'} // '-'));
}

ok(wait_until(10, sub { $nginx->decision('/red?k=warm') eq '200 PASSED' }),
   'connected to Redis');

my ($t0, $d);

# --- a shared-memory bucket: a wall clock 1 h ahead refills nothing
is($nginx->decision('/shm?k=a'), '200 PASSED', 'shm: the first request passes');
($t0, $d) = nginx_msec('/shm?k=a');
is($d, '429 REJECTED', 'shm: the second is refused (1r/m)');
step_wall_clock(3600);
my ($t1);
($t1, $d) = nginx_msec('/shm?k=a');
cmp_ok($t1 - $t0, '>=', 3590, "nginx's wall clock moved 1 h ahead");
is($d, '429 REJECTED', 'shm: still refused after the wall clock jumped 1 h');

# --- a wall clock 60 s back holds nothing back: 1r/s passes again after
# a second of real time, not after 61
is($nginx->decision('/fast?k=b'), '200 PASSED', 'shm 1r/s: passes');
is($nginx->decision('/fast?k=b'), '429 REJECTED', 'shm 1r/s: then refused');
step_wall_clock(-60);
($t1, $d) = nginx_msec('/fast?k=c');
cmp_ok($t1, '<', $t0 + 3600 - 30, "nginx's wall clock stepped back");
ok(wait_until(5, sub { $nginx->decision('/fast?k=b') eq '200 PASSED' }),
   'shm 1r/s: passes again within 5 s of real time after a 60 s step back');

# --- a ban of 2 s ends after 2 s of real time, whatever the wall clock
is($nginx->decision('/ban?k=d'), '200 PASSED', 'ban: passes');
is($nginx->decision('/ban?k=d'), '429 REJECTED', 'ban: refused');
is($nginx->decision('/ban?k=d'), '429 BANNED', 'ban: the second refusal bans');
step_wall_clock(-60);
ok(wait_until(6, sub { $nginx->decision('/ban?k=d') eq '429 REJECTED' }),
   'ban: over within 6 s of real time after a 60 s step back');

# --- Redis mode, deny cache: after a refusal, the key is refused without
# asking Redis until it could pass; a wall clock 1 h ahead does not end
# that early
is($nginx->decision('/red?k=e'), '200 PASSED', 'redis: passes');
is($nginx->decision('/red?k=e'), '429 REJECTED', 'redis: refused by Redis');
step_wall_clock(3600);
redis_command('CONFIG', 'RESETSTAT');
is($nginx->decision('/red?k=e'), '429 REJECTED', 'redis: still refused');
is(redis_calls('evalsha'), 0,
   'redis: by the deny cache, after the wall clock jumped 1 h');

# ... and a wall clock 60 s back does not keep it longer than Redis would
is($nginx->decision('/redfast?k=f'), '200 PASSED', 'redis 1r/s: passes');
is($nginx->decision('/redfast?k=f'), '429 REJECTED', 'redis 1r/s: refused');
step_wall_clock(-60);
ok(wait_until(5, sub { $nginx->decision('/redfast?k=f') eq '200 PASSED' }),
   'redis 1r/s: passes again within 5 s after a 60 s step back');

# --- clock=nginx: the wall clock is what the nodes share, and is sent
is($nginx->decision('/wall?k=g'), '200 PASSED', 'clock=nginx: passes');
is($nginx->decision('/wall?k=g'), '429 REJECTED', 'clock=nginx: refused');
# what Redis stored is on the wall time sent (the stepped one)
my $tat = redis_command('GET', 'rl:{wall:g}:t');
($t1) = nginx_msec('/wall?k=g');
cmp_ok(abs($tat / 1e6 - 60 - $t1), '<', 30,
       'clock=nginx: the bucket in Redis is on the (stepped) wall clock');

step_wall_clock(-$offset);
$nginx->stop;
unlike($nginx->final_log, qr/\[(alert|crit|emerg)\]/, 'no alert');

done_testing();
