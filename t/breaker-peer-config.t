# breaker_peers configurations nginx -t must refuse, with an error that
# names the directive and the bad value; and the orders it must accept
# (after the balancer directive, keepalive before or after it).

use strict;
use warnings;

use Test::More;
use File::Path qw(make_path);
use File::Temp qw(tempdir);

my $dir = tempdir(CLEANUP => 1);
chmod 0755, $dir;

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
    my $bin = $ENV{EDGE_NGINX} || '/usr/sbin/nginx';
    my $out = `$bin -e stderr -t -p $prefix/ -c conf/nginx.conf 2>&1`;
    return ($? >> 8, $out);
}

# an upstream block with BODY, the zone "z" declared
sub upstream {
    my ($body, %o) = @_;
    my $zone = $o{nozone} ? '' : "breaker_zone z 1m;\n";
    return "${zone}upstream u {\n server 127.0.0.1:1;\n"
        . " server 127.0.0.2:1;\n$body\n}\n";
}

sub refused {
    my ($http, $re, $what) = @_;
    my ($rc, $out) = nginx_t($http);
    isnt($rc, 0, "$what: nginx -t fails");
    like($out, $re, "$what: the error says why") or diag $out;
}

sub accepted {
    my ($http, $what) = @_;
    my ($rc, $out) = nginx_t($http);
    is($rc, 0, "$what: nginx -t passes") or diag $out;
}


refused("breaker_zone z 1m;\nbreaker_peers zone=z;\n",
        qr/"breaker_peers" directive is not allowed here/,
        'breaker_peers in http{}');
refused("breaker_zone z 1m;\nserver { location / { breaker_peers zone=z; } }",
        qr/"breaker_peers" directive is not allowed here/,
        'breaker_peers in a location');
refused(upstream('breaker_peers zone=nope;'),
        qr/breaker zone "nope" is used but not declared/,
        'an undeclared zone');
refused(upstream('breaker_peers min_calls=5;'),
        qr/"breaker_peers" must have the "zone" parameter/,
        'no zone=');
refused(upstream('breaker_peers zone=;'),
        qr/invalid zone name "zone=" in "breaker_peers"/, 'an empty zone=');
refused(upstream('breaker_peers zone=z max_ejected=150%;'),
        qr/invalid value "max_ejected=150%" in "breaker_peers"/,
        'max_ejected over 100%');
refused(upstream('breaker_peers zone=z max_ejected=half;'),
        qr/invalid value "max_ejected=half" in "breaker_peers"/,
        'max_ejected not a number');
refused(upstream('breaker_peers zone=z max_ejected=;'),
        qr/invalid value "max_ejected=" in "breaker_peers"/,
        'max_ejected empty');
refused(upstream('breaker_peers zone=z colour=red;'),
        qr/invalid parameter "colour=red" in "breaker_peers"/,
        'an unknown parameter');
refused(upstream('breaker_peers zone=z min_calls=lots;'),
        qr/min_calls=lots/, 'a bad circuit parameter');
refused(upstream("breaker_peers zone=z;\n breaker_peers zone=z;"),
        qr/"breaker_peers" directive is duplicate/, 'breaker_peers twice');
refused(upstream("breaker_peers zone=z;\n hash \$uri;"),
        qr/must come after the load balancing directive .* of upstream "u"/,
        'breaker_peers before hash');
refused(upstream("breaker_peers zone=z;\n least_conn;"),
        qr/must come after the load balancing directive/,
        'breaker_peers before least_conn');

accepted(upstream('breaker_peers zone=z;'), 'round robin');
accepted(upstream("hash \$uri consistent;\n breaker_peers zone=z "
                  . "min_calls=5 failure_rate=40 open=10s max_ejected=34%;"),
         'after hash, with parameters');
accepted(upstream("least_conn;\n keepalive 4;\n breaker_peers zone=z;"),
         'least_conn, keepalive before');
accepted(upstream("ip_hash;\n breaker_peers zone=z;\n keepalive 4;"),
         'ip_hash, keepalive after');
accepted(upstream("breaker_peers zone=z max_ejected=0;")
         . "breaker_zone z2 1m;\nupstream v { server 127.0.0.1:2;\n"
         . " breaker_peers zone=z2 max_ejected=100%; }\n",
         'max_ejected 0 and 100%, two upstreams');

done_testing;
