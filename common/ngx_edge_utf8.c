/*
 * Strict UTF-8 validation and sanitizing (RFC 3629), see ngx_edge_utf8.h.
 */

#include "ngx_edge_utf8.h"


size_t
ngx_edge_utf8_char(const unsigned char *p, size_t len, size_t *bad)
{
    size_t         n, i;
    unsigned char  c, lo, hi;

    c = p[0];

    if (c < 0x80) {
        return 1;
    }

    /*
     * The lead byte gives the length and the range of the second byte;
     * the narrower ranges after E0, ED, F0 and F4 exclude overlongs,
     * surrogates and values above U+10FFFF (RFC 3629, section 4).
     */

    lo = 0x80;
    hi = 0xbf;

    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;

    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;

        if (c == 0xe0) {
            lo = 0xa0;

        } else if (c == 0xed) {
            hi = 0x9f;
        }

    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;

        if (c == 0xf0) {
            lo = 0x90;

        } else if (c == 0xf4) {
            hi = 0x8f;
        }

    } else {
        /* 80-BF (stray continuation), C0, C1, F5-FF */
        *bad = 1;
        return 0;
    }

    for (i = 1; i < n; i++) {

        if (i == len) {
            /* cut short: the whole valid beginning is one subpart */
            *bad = i;
            return 0;
        }

        if (p[i] < lo || p[i] > hi) {
            *bad = i;
            return 0;
        }

        lo = 0x80;
        hi = 0xbf;
    }

    return n;
}


size_t
ngx_edge_utf8_valid_prefix(const unsigned char *p, size_t len)
{
    size_t  i, n, bad;

    i = 0;

    while (i < len) {

        if (p[i] < 0x80) {
            i++;
            continue;
        }

        n = ngx_edge_utf8_char(p + i, len - i, &bad);

        if (n == 0) {
            break;
        }

        i += n;
    }

    return i;
}


int
ngx_edge_utf8_valid(const unsigned char *p, size_t len)
{
    return ngx_edge_utf8_valid_prefix(p, len) == len;
}


size_t
ngx_edge_utf8_sanitize(unsigned char *dst, size_t size,
    const unsigned char *src, size_t len)
{
    size_t  i, k, n, bad, out;

    i = 0;
    out = 0;

    while (i < len) {

        if (src[i] < 0x80) {
            if (out == size) {
                break;
            }

            dst[out++] = src[i++];
            continue;
        }

        n = ngx_edge_utf8_char(src + i, len - i, &bad);

        if (n) {
            if (size - out < n) {
                break;
            }

            for (k = 0; k < n; k++) {
                dst[out++] = src[i++];
            }

            continue;
        }

        if (size - out < NGX_EDGE_UTF8_REPLACEMENT_LEN) {
            break;
        }

        dst[out++] = 0xef;
        dst[out++] = 0xbf;
        dst[out++] = 0xbd;
        i += bad;
    }

    return out;
}
