# scripts/build.sh and t/fixtures.sh follow the target nginx (NGINX=):
# the configure flags come from its `nginx -V`, the source tree must be of
# its version, a binary with the modules compiled in loads no .so, and .so
# files built for another binary are refused.  The "nginx" binaries here are
# small scripts that print what a real `nginx -V` prints.
use strict;
use warnings;

use Test::More;
use File::Temp qw(tempdir);
use File::Path qw(make_path);

my $root = do { my $d = __FILE__; $d =~ s{/?t/build\.t$}{}; $d = '.' if $d eq ''; $d };
$root = `cd '$root' && pwd`; chomp $root;
my $tmp = tempdir('edge-build-t.XXXXXX', TMPDIR => 1, CLEANUP => 1);

# fake_nginx NAME, VERSION, ARGS[, EXTRA]: an executable printing `nginx -V`
sub fake_nginx {
    my ($name, $version, $args, $extra) = @_;
    my $path = "$tmp/$name/sbin/nginx";
    make_path("$tmp/$name/sbin");
    open my $fh, '>', $path or die $!;
    print $fh "#!/bin/sh\n", ($extra // ''), "cat >&2 <<'EOF'\n",
              "nginx version: nginx/$version\n",
              "built by gcc 12.2.0 (Debian 12.2.0-14)\n",
              "configure arguments: $args\nEOF\n";
    close $fh;
    chmod 0755, $path;
    return $path;
}

# fake_tree VERSION: a directory that looks like an nginx source tree
sub fake_tree {
    my ($version) = @_;
    my $dir = "$tmp/src-$version";
    make_path("$dir/auto", "$dir/src/core");
    open my $fh, '>', "$dir/auto/configure" or die $!;
    print $fh "#!/bin/sh\necho configure ran >&2\nexit 1\n";
    close $fh;
    chmod 0755, "$dir/auto/configure";
    open $fh, '>', "$dir/src/core/nginx.h" or die $!;
    print $fh "#define NGINX_VERSION      \"$version\"\n";
    close $fh;
    return $dir;
}

sub run {
    my (%env) = @_;
    my $cmd = delete $env{cmd};
    my $set = join ' ', map { "$_='$env{$_}'" } sort keys %env;
    my $out = `env $set $cmd 2>&1`;
    return ($? >> 8, $out);
}


# --- the flags come from nginx -V ----------------------------------------

{
    my $nginx = fake_nginx('org', '1.29.8',
        q{--prefix=/etc/nginx --with-cc-opt='-g -O2 -DX="a b"' }
      . q{--with-ld-opt='-Wl,-z,relro -pie' --with-http_stub_status_module }
      . q{--with-threads --with-http_geoip_module=dynamic --with-stream=dynamic }
      . q{--add-dynamic-module=/build/njs/nginx --add-module=/build/lua }
      . q{--with-openssl=/build/openssl-3.0 --with-pcre-jit --without-http_gzip_module});
    my ($rc, $out) = run(NGINX => $nginx,
                         cmd => "$root/scripts/build.sh --print-flags");
    is $rc, 0, 'build.sh --print-flags succeeds';
    is $out, join('', map { "$_\n" }
        '--prefix=/etc/nginx', '--with-cc-opt=-g -O2 -DX="a b"',
        '--with-ld-opt=-Wl,-z,relro', '--with-http_stub_status_module',
        '--with-threads', '--with-pcre-jit', '--without-http_gzip_module',
        '--with-compat'),
      'the target\'s own flags, unquoted, other addons, dynamic built-ins, '
      . 'library source trees and -pie dropped, --with-compat added';

    my $debian = fake_nginx('deb', '1.22.1',
        q{--with-compat --with-debug --with-http_ssl_module --with-ld-opt=-pie});
    ($rc, $out) = run(NGINX => $debian,
                      cmd => "$root/scripts/build.sh --print-flags");
    is $out, "--with-compat\n--with-debug\n--with-http_ssl_module\n",
       '--with-compat is not repeated';
}


# --- the source tree must be of the target's version ---------------------

{
    my $nginx = fake_nginx('v', '1.29.8', '--with-compat');
    my ($rc, $out) = run(NGINX => $nginx, NGINX_SRC => fake_tree('1.28.3'),
                         cmd => "$root/scripts/build.sh");
    isnt $rc, 0, 'a source tree of another version fails the build';
    like $out, qr/is nginx 1\.29\.8 but NGINX_SRC=\S+ is nginx 1\.28\.3/,
         'the message names both versions';
    unlike $out, qr/configure ran/, 'before configure runs';

    ($rc, $out) = run(NGINX => "$tmp/none/nginx",
                      cmd => "$root/scripts/build.sh");
    isnt $rc, 0, 'a missing binary fails the build';
    like $out, qr{NGINX=\S+/none/nginx: not an executable}, 'and says so';
}


# --- a binary with the modules compiled in -------------------------------

{
    my $static = fake_nginx('static', '1.29.8',
        '--with-compat --add-module=/src/edge',
        ": ngx_http_ratelimit_module\n");
    my ($rc, $out) = run(NGINX => $static, NGINX_SRC => "$tmp/nowhere",
                         cmd => "$root/scripts/build.sh");
    is $rc, 0, 'nothing to build for a static binary';
    like $out, qr/has the edge modules compiled in/, 'and it says so';

    ($rc, $out) = run(NGINX => $static, TEST_NGINX_LOAD_MODULES => '/preset/x.so',
        cmd => qq{$root/t/fixtures.sh sh -c 'echo "load=[\$TEST_NGINX_LOAD_MODULES] nginx=\$EDGE_NGINX env=\${NGINX-unset} debug=[\$TEST_EDGE_NGINX_DEBUG]"'});
    is $rc, 0, 'fixtures start for a static binary';
    like $out, qr/^load=\[\] nginx=\Q$static\E env=unset debug=\[\]$/m,
         'the harness loads no .so into a static binary, and runs it '
         . '(NGINX, which nginx reads itself, is not passed on; no --with-debug)';

    # what the tests that need --with-debug, stub_status or gzip look at
    my $features = qq{$root/t/fixtures.sh sh -c 'echo "debug=[\$TEST_EDGE_NGINX_DEBUG] }
        . qq{stub_status=[\$TEST_EDGE_NGINX_HAS_STUB_STATUS] }
        . qq{gzip=[\$TEST_EDGE_NGINX_HAS_GZIP] }
        . qq{auth_request=[\$TEST_EDGE_NGINX_HAS_AUTH_REQUEST]"'};
    ($rc, $out) = run(NGINX => $static, cmd => $features);
    like $out, qr/^debug=\[\] stub_status=\[\] gzip=\[1\] auth_request=\[\]$/m,
         'a default build: no debug, no stub_status, gzip support';
    my $min = fake_nginx('static-min', '1.29.8',
        '--with-debug --with-http_stub_status_module '
        . '--with-http_auth_request_module '
        . '--without-http_gzip_module --add-module=/src/edge',
        ": ngx_http_ratelimit_module\n");
    ($rc, $out) = run(NGINX => $min, cmd => $features);
    like $out, qr/^debug=\[1\] stub_status=\[1\] gzip=\[\] auth_request=\[1\]$/m,
         '--with-debug, stub_status, auth_request and '
         . '--without-http_gzip_module are seen';
    my $nogzip_compat = fake_nginx('static-compat', '1.29.8',
        '--with-compat --without-http_gzip_module --add-module=/src/edge',
        ": ngx_http_ratelimit_module\n");
    ($rc, $out) = run(NGINX => $nogzip_compat, cmd => $features);
    like $out, qr/ gzip=\[1\] /m,
         'without the gzip module, --with-compat still gives gzip support';

    # a flag found early in a long list: found every time (a reader that
    # stops at the first match must not make the search fail)
    my $long = fake_nginx('static-long', '1.29.8',
        '--with-debug --with-http_stub_status_module '
        . join(' ', map { "--with-cc-opt=-DEDGE_$_" } 1 .. 3000)
        . ' --add-module=/src/edge',
        ": ngx_http_ratelimit_module\n");
    my @seen = map {
        (run(NGINX => $long, cmd => $features))[1]
            =~ /^debug=\[1\] stub_status=\[1\] /m ? 1 : 0
    } 1 .. 3;
    is "@seen", '1 1 1',
       'flags early in a long configure line are seen, every time';
}


# --- .so files built for another binary are refused ----------------------

{
    my $other = fake_nginx('other', '1.28.3', '--with-compat');
    my ($rc, $out) = run(NGINX => $other,
                         cmd => "$root/t/fixtures.sh true");
    isnt $rc, 0, 'fixtures refuse modules built for another nginx';
    like $out, qr/holds no modules built for \Q$other\E/, 'and name it';
}

done_testing();
