/*
 * JSON writing helpers shared by the edge modules.
 */

#include "ngx_edge_json.h"
#include "ngx_edge_utf8.h"


u_char *
ngx_edge_json_escape(u_char *dst, u_char *src, size_t len)
{
    u_char  *p, *last;
    size_t   n, bad;

    static u_char  hex[] = "0123456789abcdef";

    p = src;
    last = src + len;

    while (p < last) {

        if (*p >= 0x80) {
            n = ngx_edge_utf8_char(p, last - p, &bad);

            if (n == 0) {
                dst = ngx_cpymem(dst, NGX_EDGE_UTF8_REPLACEMENT,
                                 NGX_EDGE_UTF8_REPLACEMENT_LEN);
                p += bad;
                continue;
            }

            dst = ngx_cpymem(dst, p, n);
            p += n;
            continue;
        }

        switch (*p) {

        case '"':
        case '\\':
            *dst++ = '\\';
            *dst++ = *p;
            break;

        case '\n':
            *dst++ = '\\';
            *dst++ = 'n';
            break;

        case '\r':
            *dst++ = '\\';
            *dst++ = 'r';
            break;

        case '\t':
            *dst++ = '\\';
            *dst++ = 't';
            break;

        default:
            if (*p < 0x20) {
                *dst++ = '\\';
                *dst++ = 'u';
                *dst++ = '0';
                *dst++ = '0';
                *dst++ = hex[*p >> 4];
                *dst++ = hex[*p & 0xf];

            } else {
                *dst++ = *p;
            }
        }

        p++;
    }

    return dst;
}
