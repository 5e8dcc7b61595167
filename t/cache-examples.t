# examples/cache-strategies.conf, the configurations the cache module's
# README explains, is accepted by nginx -t.
use strict;
use warnings;

use Test::More;
use File::Temp qw(tempdir);
use File::Basename qw(dirname);
use Cwd qw(abs_path);

my $root = abs_path(dirname(abs_path($0)) . '/..');
my $nginx = $ENV{TEST_NGINX_BINARY} || '/usr/sbin/nginx';
my $dir = tempdir(CLEANUP => 1);
mkdir "$dir/logs";
symlink("$root/build/modules", "$dir/modules") or die $!;

open my $in, '<', "$root/examples/cache-strategies.conf" or die $!;
my $conf = do { local $/; <$in> };
close $in;
$conf =~ s/\@REDIS_PORT\@/$ENV{TEST_NGINX_REDIS_PORT} || 6379/ge;
$conf =~ s/\@BACKEND_PORT\@/8081/g;
$conf = "error_log $dir/logs/error.log;\npid $dir/logs/nginx.pid;\n$conf";
# an nginx with the modules compiled in loads none
my $static = !($ENV{TEST_NGINX_LOAD_MODULES} // '');
$conf =~ s/^\s*load_module\b.*$//mg if $static;

open my $out, '>', "$dir/nginx.conf" or die $!;
print $out $conf;
close $out;

my $res = `$nginx -t -p $dir/ -c $dir/nginx.conf 2>&1`;
is($?, 0, 'nginx -t accepts examples/cache-strategies.conf') or diag($res);
like($res, qr/syntax is ok/, 'syntax is ok');

mkdir "$dir/temp";
# the demo's configuration (make run), which uses the cache too
open $in, '<', "$root/examples/nginx.conf" or die $!;
$conf = do { local $/; <$in> };
close $in;
my %ph = (BACKEND_PORT => 8081, FRONT_PORT => 8082, MODULES_DIR => "$root/build/modules",
          PREFIX => $dir, REDIS_PORT => $ENV{TEST_NGINX_REDIS_PORT} || 6379);
$conf =~ s/\@([A-Z_]+)\@/$ph{$1} \/\/ die "unknown placeholder $1"/ge;
$conf =~ s/^\s*load_module\b.*$//mg if $static;
open $out, '>', "$dir/demo.conf" or die $!;
print $out $conf;
close $out;
$res = `$nginx -t -p $dir/ -c $dir/demo.conf 2>&1`;
is($?, 0, 'nginx -t accepts the demo configuration, examples/nginx.conf') or diag($res);

done_testing();
