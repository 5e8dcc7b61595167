# The cache module's RFC 9111 / RFC 5861 rules (ngx_http_cache_rfc.c),
# case by case: Cache-Control parsing with hostile inputs, freshness
# precedence, age, the store decision, request directives, conditional
# requests, Vary normalisation, random bytes.
#
# t/unit/cache_rfc_test.c is built with ngx_http_cache_rfc.c into a small
# core module, against the nginx tree scripts/build.sh configured under
# build/ (same flags, headers and signature as the modules), and run
# inside the nginx under test by `nginx -t` (Debian's nginx-dev has no
# core objects to link a standalone program with).  It prints TAP lines;
# each becomes a test here.  A second build with AddressSanitizer and
# UBSan (when gcc has them) runs the same cases: every header value sits
# in a malloc'ed block of its exact length, so one byte read past a value
# fails the run.  Under TEST_NGINX_USE_VALGRIND=1 the plain build runs
# under valgrind as well.
use strict;
use warnings;

use Test::More;
use File::Temp qw(tempdir);
use Digest::MD5 qw(md5_hex);

my $root = do { my $d = __FILE__; $d =~ s{/?t/cache-rfc-unit\.t$}{}; $d = '.' if $d eq ''; $d };
$root = `cd '$root' && pwd`; chomp $root;

my $nginx = $ENV{EDGE_NGINX} || $ENV{NGINX} || '/usr/sbin/nginx';

my ($version) = `'$nginx' -v 2>&1` =~ m{nginx/(\S+)};
plan skip_all => "cannot run $nginx -v" unless $version;

# a binary with the edge modules compiled in has no tree under build/
plan skip_all => "$nginx has the edge modules compiled in: no module tree"
    if system('grep', '-q', '-a', '-F', 'ngx_http_ratelimit_module',
              $nginx) == 0;

# the tree scripts/build.sh configured for this nginx: named after the
# source tree, the binary and the compiler, as build.sh names it; failing
# that, the newest tree of the same version
sub tree_version {
    my ($dir) = @_;
    open my $fh, '<', "$dir/src/core/nginx.h" or return '';
    my $h = do { local $/; <$fh> };
    return $h =~ /NGINX_VERSION\s+"([^"]+)"/ ? $1 : '';
}

my $src = $ENV{NGINX_SRC} || '/usr/share/nginx/src';
my $tag = substr(md5_hex("$src\n$nginx\n" . ($ENV{CC} // '') . "\n"), 0, 8);
my ($tree) = grep { -f "$_/objs/Makefile" && tree_version($_) eq $version }
    "$root/build/nginx-$version-$tag",
    map { s{/objs/Makefile$}{}r }
    sort { -M $a <=> -M $b } glob("$root/build/nginx-*/objs/Makefile");
plan skip_all => "no nginx $version tree configured under build/ (run make)"
    unless $tree;

note("the nginx tree: $tree");
my $tmp = tempdir('edge-cache-rfc-unit.XXXXXX', TMPDIR => 1, CLEANUP => 1);

# the compiler, flags and include paths of the configured tree
open my $mk, '>', "$tmp/print.mk" or die $!;
print $mk "include objs/Makefile\n",
          "edge-print-%:\n\t\@echo '\$(\$*)'\n";
close $mk;

sub make_var {
    my ($var) = @_;
    my $v = `make -s --no-print-directory -C '$tree' -f '$tmp/print.mk' edge-print-$var 2>/dev/null`;
    chomp $v;
    return $v;
}

my $cc = make_var('CC');
my $cflags = make_var('CFLAGS');
my $incs = make_var('ALL_INCS');
plan skip_all => "cannot read CC/CFLAGS/ALL_INCS from $tree/objs/Makefile"
    unless $cc && $incs;

# build NAME, EXTRA_FLAGS: the test module as $tmp/NAME.so, or undef
sub build {
    my ($name, $extra) = @_;
    my $inc = "$incs -I '$root/ngx_http_cache_module'";
    my $out = '';
    for my $src ("$root/t/unit/cache_rfc_test.c",
                 "$root/ngx_http_cache_module/ngx_http_cache_rfc.c")
    {
        my ($base) = $src =~ m{([^/]+)\.c$};
        $out .= `cd '$tree' && $cc -c -fPIC $cflags $extra $inc -o '$tmp/$name-$base.o' '$src' 2>&1`;
        return (undef, $out) if $?;
    }
    $out .= `$cc -shared -fPIC $extra -o '$tmp/$name.so' '$tmp/$name-cache_rfc_test.o' '$tmp/$name-ngx_http_cache_rfc.o' 2>&1`;
    return (undef, $out) if $?;
    return ("$tmp/$name.so", $out);
}

# run NAME, SO, PREFIX_CMD: nginx -t with the module; TAP lines to tests
sub run {
    my ($name, $so, $prefix) = @_;
    open my $fh, '>', "$tmp/$name.conf" or die $!;
    # nginx 1.27+ -t checks that the pid file can be written
    print $fh "load_module $so;\npid $tmp/$name.pid;\nevents {}\n",
              "cache_rfc_unit_test;\n";
    close $fh;

    my $out = `$prefix '$nginx' -t -q -p '$tmp' -e stderr -c '$tmp/$name.conf' 2>&1`;
    my $rc = $? >> 8;
    my ($n, $done) = (0, undef);

    for (split /\n/, $out) {
        if (/^(not )?ok (\d+) - (.*)$/) {
            $n++;
            ok(!defined $1, "$name: $3");
        } elsif (/^# /) {
            diag($_);
        } elsif (/^done (\d+)$/) {
            $done = $1;
        }
    }

    ok($n > 150 && defined $done && $done == $n,
       "$name: all cases ran ($n)") or diag($out);
    is($rc, 0, "$name: nginx -t with the module succeeds") or diag($out);
    unlike($out, qr/AddressSanitizer|runtime error|ERROR SUMMARY: [1-9]/,
           "$name: no sanitizer or valgrind report") or diag($out);
}


my ($so, $log) = build('plain', '');
ok($so, 'the unit module builds with the modules\' flags') or diag($log);
run('plain', $so, '') if $so;

SKIP: {
    my $asan = `$cc -print-file-name=libasan.so 2>/dev/null`;
    chomp $asan;
    skip 'no libasan for this compiler', 1
        unless $asan && $asan =~ m{/} && -e $asan;

    my ($san, $slog) = build('asan',
        '-fsanitize=address,undefined -fno-sanitize-recover=all '
        . '-fno-omit-frame-pointer');
    ok($san, 'the unit module builds with ASan and UBSan') or diag($slog);
    run('asan', $san,
        "env LD_PRELOAD='$asan' ASAN_OPTIONS=detect_leaks=0 "
        . "UBSAN_OPTIONS=print_stacktrace=1") if $san;
}

if ($ENV{TEST_NGINX_USE_VALGRIND} && $so) {
    run('valgrind', $so,
        "valgrind -q --error-exitcode=99 --leak-check=no "
        . "--suppressions='$root/t/valgrind.suppress'");
}

done_testing();
