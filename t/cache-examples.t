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

open my $out, '>', "$dir/nginx.conf" or die $!;
print $out $conf;
close $out;

my $res = `$nginx -t -p $dir/ -c $dir/nginx.conf 2>&1`;
is($?, 0, 'nginx -t accepts examples/cache-strategies.conf') or diag($res);
like($res, qr/syntax is ok/, 'syntax is ok');

done_testing();
