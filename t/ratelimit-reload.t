# A real reload (master process, SIGHUP) keeps what the zones hold:
# buckets stay with their tier when tiers are reordered (they are known by
# name, not position), and a zone whose key changed is refused, as
# limit_req refuses it: the reload fails and the old configuration serves.
use strict;
use warnings;

use Test::More;
use Test::Edge qw(:all);
use Test::Edge::Nginx;

# generation $gen of the configuration: tiers in the given order, the key
sub http {
    my ($gen, $key, @tiers) = @_;
    my %def = (gold => 'rate=1r/m', silver => 'rate=1r/m burst=1');
    my $tiers = join '', map {
        "    ratelimit_tier zone=z tier=$_ $def{$_};\n"
    } @tiers;
    return <<"HTTP";
    ratelimit_zone $key zone=z:1m rate=1r/m tier=\$arg_t;
$tiers
    server {
        listen 127.0.0.1:\$PORT;
        location = /ok { return 200 "ok\\n"; }
        location = /rl {
            ratelimit zone=z nodelay;
            add_header X-Status \$ratelimit_status always;
            add_header X-Gen $gen always;
            proxy_pass http://127.0.0.1:\$PORT/ok;
        }
    }
HTTP
}

my $nginx = Test::Edge::Nginx->start(http => http(1, '$arg_k', qw(gold silver)),
                                     workers => 2);

sub gen_of { $nginx->get('/rl?k=probe')->{headers}{'x-gen'} // '' }

# rewrite the configuration's http block and send SIGHUP
sub reload_to {
    my ($http) = @_;
    my $conf = "$nginx->{prefix}/conf/nginx.conf";
    open my $fh, '<', $conf or die $!;
    my $text = do { local $/; <$fh> };
    close $fh;
    $http =~ s/\$PORT\b/$nginx->{port}/g;
    $text =~ s/(proxy_temp_path [^\n]*\n).*(\n\}\s*)\z/$1$http$2/s
        or die "unexpected nginx.conf layout\n";
    open $fh, '>', $conf or die $!;
    print $fh $text;
    close $fh;
    open $fh, '<', "$nginx->{prefix}/logs/nginx.pid" or die $!;
    chomp(my $master = <$fh>);
    kill 'HUP', $master or die "kill: $!";
}

is($nginx->decision('/rl?k=u1&t=gold'), '200 PASSED', 'gold: 1r/m, passes');
is($nginx->decision('/rl?k=u1&t=gold'), '429 REJECTED', 'gold: then refused');
is($nginx->decision('/rl?k=u2&t=silver'), '200 PASSED',
   'silver: burst=1, the first of two passes');

# --- reorder the tiers
reload_to(http(2, '$arg_k', qw(silver gold)));
ok(wait_until(20, sub { gen_of() eq '2' }), 'reloaded (tiers reordered)');
is($nginx->decision('/rl?k=u1&t=gold'), '429 REJECTED',
   "gold: the user's bucket stayed with the tier: still refused");
is($nginx->decision('/rl?k=u2&t=silver'), '200 PASSED',
   'silver: the second of two passes');
is($nginx->decision('/rl?k=u2&t=silver'), '429 REJECTED',
   'silver: then refused, as before the reload');

# --- change the zone's key: refused, the old configuration keeps serving
reload_to(http(3, '$arg_j', qw(silver gold)));
ok(wait_until(20, sub {
       $nginx->log =~ /\[emerg\] .*ratelimit zone "z" uses the "\$arg_j" key while previously it used the "\$arg_k" key/
   }), 'a changed key: the reload is refused with the reason');
is(gen_of(), '2', 'the previous configuration still serves');
is($nginx->decision('/rl?k=u1&t=gold'), '429 REJECTED',
   'and its buckets are intact');

$nginx->stop;
unlike($nginx->final_log, qr/\[(alert|crit)\]|exited on signal/,
       'no alert, no crash');

done_testing();
