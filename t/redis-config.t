# ratelimit_redis options and secrets: an error about an option never
# shows a password, and password_file= keeps the password out of
# nginx.conf (read when the configuration is read, checked by nginx -t).
use strict;
use warnings;

use Test::More;
use IO::Socket::INET;
use File::Path qw(make_path);
use File::Temp qw(tempdir);
use Test::Edge qw(:all);
use Test::Edge::Nginx;

my $dir = tempdir(CLEANUP => 1);
chmod 0755, $dir;
my $secret = 'TopSecret42xyz';

# the private redis-server is stopped however the file ends
my $redis_pidfile;
END {
    if ($redis_pidfile && open my $p, '<', $redis_pidfile) {
        chomp(my $pid = <$p> // '');
        kill 'TERM', $pid if $pid;
    }
}

# nginx -t on an http block: (exit status, everything it printed)
my $n = 0;
sub nginx_t {
    my ($http) = @_;
    my $prefix = "$dir/t" . $n++;
    make_path("$prefix/conf", "$prefix/logs");
    my $modules = join '', map { "load_module $_;\n" }
        split ' ', ($ENV{TEST_NGINX_LOAD_MODULES} // '');
    open my $fh, '>', "$prefix/conf/nginx.conf" or die $!;
    print $fh "${modules}pid logs/nginx.pid;\nevents {}\nhttp {\n$http\n}\n";
    close $fh;
    # the nginx under test (t/fixtures.sh), not always Debian's
    my $bin = $ENV{EDGE_NGINX} || '/usr/sbin/nginx';
    my $out = `$bin -e stderr -t -p $prefix/ -c conf/nginx.conf 2>&1`;
    return ($? >> 8, $out);
}

sub redis_decl {
    my ($args) = @_;
    return "ratelimit_redis r 127.0.0.1:$ENV{TEST_NGINX_REDIS_PORT} $args;";
}

sub write_file {
    my ($name, $content) = @_;
    open my $fh, '>', "$dir/$name" or die $!;
    print $fh $content;
    close $fh;
    return "$dir/$name";
}


# --- misspelled options: the name is shown, never the value
{
    my ($rc, $out) = nginx_t(redis_decl("pasword=$secret"));
    isnt($rc, 0, 'a misspelled password= fails nginx -t');
    like($out, qr/invalid parameter "pasword=\.\.\." of redis server "r"/,
         'the error names the option');
    unlike($out, qr/\Q$secret\E/, 'and does not show its value');
}
{
    my ($rc, $out) = nginx_t(redis_decl("$secret"));
    isnt($rc, 0, 'a stray word fails nginx -t');
    like($out, qr/invalid parameter of redis server "r"/, 'with an error');
    unlike($out, qr/\Q$secret\E/, 'that does not show the word');
}
{
    my ($rc, $out) = nginx_t(redis_decl("password=$secret db=x"));
    isnt($rc, 0, 'a bad db= after a password fails nginx -t');
    like($out, qr/invalid parameter "db=x"/, 'the bad value is shown');
    unlike($out, qr/\Q$secret\E/, 'the password is not');
}

# --- password_file=
{
    my ($rc, $out) = nginx_t(redis_decl("password_file=$dir/nosuch"));
    isnt($rc, 0, 'a missing password_file fails nginx -t');
    like($out, qr/cannot open password_file "\Q$dir\E\/nosuch"/,
         'and names the path');
}
{
    my $f = write_file('empty', "\n");
    my ($rc, $out) = nginx_t(redis_decl("password_file=$f"));
    isnt($rc, 0, 'an empty password_file fails nginx -t');
    like($out, qr/password_file "\Q$f\E" is empty/, 'and says so');
}
{
    my $f = write_file('pw', "$secret\n");
    my ($rc, $out) = nginx_t(redis_decl("password=x password_file=$f"));
    isnt($rc, 0, 'password= and password_file= together fail nginx -t');
    like($out, qr/"password=" and "password_file=" are given more than once or together/,
         'with an error that says why');
    unlike($out, qr/\Q$secret\E/, 'no secret shown');
    ($rc, $out) = nginx_t(redis_decl("password_file=$f"));
    is($rc, 0, 'a readable password_file passes nginx -t') or diag($out);
}

# --- password_file= against a Redis with requirepass
{
    my $port = Test::Edge::Nginx::free_port();
    open my $fh, '>', "$dir/redis.conf" or die $!;
    print $fh <<"CONF";
bind 127.0.0.1
port $port
daemonize yes
pidfile $dir/redis.pid
logfile $dir/redis.log
dir $dir
save ""
appendonly no
requirepass $secret
CONF
    close $fh;
    system('redis-server', "$dir/redis.conf") == 0 or die "redis-server";
    $redis_pidfile = "$dir/redis.pid";

    my $f = write_file('pw2', "$secret\r\n");
    my $nginx = Test::Edge::Nginx->start(http => <<"HTTP");
    ratelimit_redis r 127.0.0.1:$port password_file=$f;
    ratelimit_zone \$arg_k zone=rl:1m rate=1r/m redis=r on_failure=closed;
    server {
        listen 127.0.0.1:\$PORT;
        location = /ok { return 200 "ok\\n"; }
        location = /rl {
            ratelimit zone=rl;
            add_header X-Status \$ratelimit_status always;
            proxy_pass http://127.0.0.1:\$PORT/ok;
        }
    }
HTTP
    ok(wait_until(20, sub { $nginx->decision('/rl?k=w') eq '200 PASSED' }),
       'password_file= (CRLF stripped): AUTH succeeds, Redis decides');
    is($nginx->decision('/rl?k=w'), '429 REJECTED', 'and limits');
    $nginx->stop;
    my $log = $nginx->final_log;
    unlike($log, qr/WRONGPASS|NOAUTH|\[(alert|crit|emerg)\]/,
           'no auth error, no alert');
    unlike($log, qr/\Q$secret\E/, 'the password is in no log line');

}

done_testing();
