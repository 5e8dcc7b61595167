# common/ngx_edge_utf8.c, the strict UTF-8 validator and sanitizer, tested
# on its own: a small C program (below) is built against the file and
# compares it with a plain reference decoder on every sequence of one to
# three bytes, on four-byte sequences around every boundary, on every code
# point's encoding, and on the replacement of maximal subparts.  No nginx
# is involved: the file needs nothing from nginx.
use strict;
use warnings;

use Test::More;
use File::Temp ();
use File::Basename qw(dirname);
use Cwd qw(abs_path);

my $root = abs_path(dirname(abs_path($0)) . '/..');
my $cc = $ENV{CC} // 'cc';

my $dir = File::Temp->newdir;
my $src = "$dir/utf8-test.c";

open my $fh, '>', $src or die "$src: $!";
print $fh do { local $/; <DATA> };
close $fh;

my $out = `$cc -std=c99 -O1 -Wall -Werror -I$root/common -o $dir/utf8-test $src $root/common/ngx_edge_utf8.c 2>&1`;
is($?, 0, 'the test program builds with -Wall -Werror') or diag($out);

$out = `$dir/utf8-test 2>&1`;
my $rc = $?;

for my $line (split /\n/, $out) {
    if ($line =~ /^ok (.*)/) {
        pass($1);
    } elsif ($line =~ /^not ok (.*)/) {
        fail($1);
    } else {
        diag($line);
    }
}

is($rc, 0, 'the test program found no difference');

done_testing();

__DATA__
#include <stdio.h>
#include <string.h>
#include "ngx_edge_utf8.h"

static int  failures;

/* the reference: decode by bit patterns, then check the value's range */
static int
ref_valid(const unsigned char *s, size_t n)
{
    size_t         i, k, l;
    unsigned long  cp, min;

    for (i = 0; i < n; i += l) {
        if (s[i] < 0x80) { l = 1; continue; }
        if ((s[i] & 0xe0) == 0xc0) { l = 2; cp = s[i] & 0x1f; min = 0x80; }
        else if ((s[i] & 0xf0) == 0xe0) { l = 3; cp = s[i] & 0x0f; min = 0x800; }
        else if ((s[i] & 0xf8) == 0xf0) { l = 4; cp = s[i] & 0x07; min = 0x10000; }
        else return 0;
        if (i + l > n) return 0;
        for (k = 1; k < l; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
            return 0;
        }
    }

    return 1;
}

static size_t
encode(unsigned long cp, unsigned char *b)
{
    if (cp < 0x80) { b[0] = cp; return 1; }
    if (cp < 0x800) { b[0] = 0xc0 | (cp >> 6); b[1] = 0x80 | (cp & 0x3f); return 2; }
    if (cp < 0x10000) {
        b[0] = 0xe0 | (cp >> 12); b[1] = 0x80 | ((cp >> 6) & 0x3f);
        b[2] = 0x80 | (cp & 0x3f); return 3;
    }
    b[0] = 0xf0 | (cp >> 18); b[1] = 0x80 | ((cp >> 12) & 0x3f);
    b[2] = 0x80 | ((cp >> 6) & 0x3f); b[3] = 0x80 | (cp & 0x3f); return 4;
}

static void
check(int cond, const char *what)
{
    printf("%s %s\n", cond ? "ok" : "not ok", what);
    if (!cond) failures++;
}

/* sanitize(in) must be exactly want (given as hex-free C strings) */
static int
sanitized(const char *in, size_t inlen, const char *want, size_t wantlen)
{
    unsigned char  out[64];
    size_t         n;

    n = ngx_edge_utf8_sanitize(out, sizeof(out), (const unsigned char *) in,
                               inlen);
    if (n != wantlen || memcmp(out, want, n) != 0) {
        printf("# sanitize of %zu bytes gave %zu bytes\n", inlen, n);
        return 0;
    }
    return 1;
}

#define S(in, want)  sanitized(in, sizeof(in) - 1, want, sizeof(want) - 1)
#define R  "\xef\xbf\xbd"

int
main(void)
{
    static const unsigned char  probe[] = {
        0x00, 0x41, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1,
        0xc2, 0xdf, 0xe0, 0xed, 0xef, 0xf0, 0xf4, 0xf5, 0xff
    };
    unsigned char   b[8], out[16];
    unsigned long   cp, a, c, d, e, bad_count, diff;
    size_t          n, len, badlen;
    int             v;

    /* every sequence of one, two and three bytes */

    diff = 0;

    for (a = 0; a < 256; a++) {
        b[0] = a;
        diff += ngx_edge_utf8_valid(b, 1) != ref_valid(b, 1);

        for (c = 0; c < 256; c++) {
            b[1] = c;
            diff += ngx_edge_utf8_valid(b, 2) != ref_valid(b, 2);

            for (d = 0; d < 256; d++) {
                b[2] = d;
                diff += ngx_edge_utf8_valid(b, 3) != ref_valid(b, 3);
            }
        }
    }

    check(diff == 0, "every 1-, 2- and 3-byte sequence as the reference says");

    /* four bytes: every lead and second byte, the boundaries after them */

    diff = 0;

    for (a = 0xe0; a < 256; a++) {
        for (c = 0; c < 256; c++) {
            for (d = 0; d < sizeof(probe); d++) {
                for (e = 0; e < sizeof(probe); e++) {
                    b[0] = a; b[1] = c; b[2] = probe[d]; b[3] = probe[e];
                    diff += ngx_edge_utf8_valid(b, 4) != ref_valid(b, 4);
                }
            }
        }
    }

    check(diff == 0, "4-byte sequences (leads E0-FF) as the reference says");

    /* every code point's encoding: valid unless a surrogate */

    diff = 0;

    for (cp = 0; cp <= 0x10ffff; cp++) {
        len = encode(cp, b);
        v = ngx_edge_utf8_valid(b, len);
        diff += v != !(cp >= 0xd800 && cp <= 0xdfff);
        if (v) {
            diff += ngx_edge_utf8_char(b, len, &badlen) != len;
        }
    }

    check(diff == 0, "every scalar value valid, every surrogate not");

    /* the boundaries, by name */

    check(ngx_edge_utf8_valid((unsigned char *) "\x7f", 1), "U+007F");
    check(ngx_edge_utf8_valid((unsigned char *) "\xc2\x80", 2), "U+0080");
    check(!ngx_edge_utf8_valid((unsigned char *) "\xc1\xbf", 2),
          "U+007F overlong in 2 bytes");
    check(ngx_edge_utf8_valid((unsigned char *) "\xdf\xbf", 2), "U+07FF");
    check(ngx_edge_utf8_valid((unsigned char *) "\xe0\xa0\x80", 3), "U+0800");
    check(!ngx_edge_utf8_valid((unsigned char *) "\xe0\x9f\xbf", 3),
          "U+07FF overlong in 3 bytes");
    check(ngx_edge_utf8_valid((unsigned char *) "\xed\x9f\xbf", 3), "U+D7FF");
    check(!ngx_edge_utf8_valid((unsigned char *) "\xed\xa0\x80", 3),
          "U+D800 (surrogate)");
    check(!ngx_edge_utf8_valid((unsigned char *) "\xed\xbf\xbf", 3),
          "U+DFFF (surrogate)");
    check(ngx_edge_utf8_valid((unsigned char *) "\xee\x80\x80", 3), "U+E000");
    check(ngx_edge_utf8_valid((unsigned char *) "\xef\xbf\xbf", 3), "U+FFFF");
    check(!ngx_edge_utf8_valid((unsigned char *) "\xef\xbf", 2),
          "U+FFFF cut short");
    check(ngx_edge_utf8_valid((unsigned char *) "\xf0\x90\x80\x80", 4),
          "U+10000");
    check(!ngx_edge_utf8_valid((unsigned char *) "\xf0\x8f\xbf\xbf", 4),
          "U+FFFF overlong in 4 bytes");
    check(ngx_edge_utf8_valid((unsigned char *) "\xf4\x8f\xbf\xbf", 4),
          "U+10FFFF");
    check(!ngx_edge_utf8_valid((unsigned char *) "\xf4\x90\x80\x80", 4),
          "U+110000");
    check(!ngx_edge_utf8_valid((unsigned char *) "\xc0\xaf", 2),
          "overlong '/' (C0 AF)");
    check(!ngx_edge_utf8_valid((unsigned char *) "\xff", 1), "FF");
    check(!ngx_edge_utf8_valid((unsigned char *) "\xf5\x80\x80\x80", 4),
          "F5 lead");
    check(!ngx_edge_utf8_valid((unsigned char *) "\x80", 1),
          "stray continuation byte");
    check(!ngx_edge_utf8_valid((unsigned char *) "a\xc3", 2),
          "sequence cut short at the end");
    check(ngx_edge_utf8_valid_prefix((unsigned char *) "ab\xc3\xa9\xff", 5)
          == 4, "valid prefix stops before the first bad byte");

    /* replacement of maximal subparts (Unicode 15, table 3-8) */

    check(S("caf\xc3\xa9", "caf\xc3\xa9"), "valid input unchanged");
    check(S("\xf0\x9f\x98\x80!", "\xf0\x9f\x98\x80!"), "emoji unchanged");
    check(S("\xed\xa0\x80", R R R), "surrogate: three replacements");
    check(S("\xc0\xaf", R R), "overlong C0 AF: two replacements");
    check(S("a\xffz", "a" R "z"), "FF: one replacement");
    check(S("\xe1\x80", R), "cut short E1 80: one replacement");
    check(S("\xf0\x9f\x98", R), "cut short emoji: one replacement");
    check(S("\xf4\x90\x80\x80", R R R R), "above U+10FFFF: four");
    check(S("\xe1\x80\x41", R "A"), "E1 80 then ASCII: one, then A");
    check(S("\x61\xf1\x80\x80\xe1\x80\xc2\x62\x80\x63\x80\xbf\x64",
            "a" R R R "b" R "c" R R "d"), "Unicode's table 3-8 example");

    /* a smaller output never splits a character */

    n = ngx_edge_utf8_sanitize(out, 4, (unsigned char *) "ab\xc3\xa9", 4);
    check(n == 4, "fits exactly");
    n = ngx_edge_utf8_sanitize(out, 3, (unsigned char *) "ab\xc3\xa9", 4);
    check(n == 2, "a character that does not fit is left out whole");
    n = ngx_edge_utf8_sanitize(out, 4, (unsigned char *) "ab\xff", 3);
    check(n == 2, "a replacement that does not fit is left out whole");

    /* the bound: 3 bytes out per byte in, reached by all-invalid input */

    bad_count = 0;

    for (a = 0; a < 256; a++) {
        for (c = 0; c < 256; c++) {
            b[0] = a; b[1] = c;
            n = ngx_edge_utf8_sanitize(out, NGX_EDGE_UTF8_SANITIZED_MAX(2),
                                       b, 2);
            bad_count += n > 6 || !ngx_edge_utf8_valid(out, n)
                         || (ref_valid(b, 2) && (n != 2
                                                 || memcmp(out, b, 2)));
        }
    }

    check(bad_count == 0, "every 2-byte input: output valid, within 3x, "
          "valid input copied");

    n = ngx_edge_utf8_sanitize(out, sizeof(out), (unsigned char *) "\xff\xff",
                               2);
    check(n == NGX_EDGE_UTF8_SANITIZED_MAX(2), "the bound is exact");

    return failures ? 1 : 0;
}
