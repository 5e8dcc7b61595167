# The cache entry parser, fuzzed: valid entries mutated in every way an
# entry coming from Redis could be (bit flips, truncation, lengths at
# their edges, CR/LF/NUL in header lines), each parsed from a buffer of
# exactly its size under AddressSanitizer and UBSan; an accepted entry
# must describe its bytes.  Deterministic: fixed seeds.
use strict;
use warnings;

use Test::More;
use File::Temp qw(tempdir);

my $dir = tempdir(CLEANUP => 1);
my $bin = "$dir/cache_entry_fuzz";
my @cc = ('gcc', '-g', '-O1', '-fsanitize=address,undefined',
          '-fno-sanitize-recover=all', '-Wall', '-Werror',
          '-Ingx_http_cache_module', 't/fuzz/cache_entry_fuzz.c',
          'ngx_http_cache_module/ngx_http_cache_entry.c', '-lz', '-o', $bin);
my $out = `@cc 2>&1`;
is($?, 0, 'the fuzz driver builds with ASan and UBSan') or diag($out);

for my $seed (1, 7, 2026) {
    my $res = `ASAN_OPTIONS=detect_leaks=1 $bin 100000 $seed 2>&1`;
    is($?, 0, "seed $seed: 100000 mutated entries, no memory error, no bad accept")
        or diag($res);
    my ($acc) = $res =~ /(\d+) accepted/;
    ok(defined $acc && $acc > 1000 && $acc < 90000,
       "seed $seed: mutations both accepted and refused (" . ($acc // '?') . " accepted)");
}

done_testing();
