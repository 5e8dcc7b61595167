/*
 * A mutation fuzzer for the cache entry parser (ngx_http_cache_entry.c):
 * valid entries of several shapes are written with the module's own
 * writer, then mutated (bit flips, byte sets, truncations, extensions,
 * length fields set to edge values, random bytes), half of them given
 * the CRC their mutated header calls for, and parsed, each in a
 * buffer of exactly its length, so AddressSanitizer catches any read
 * past it.  A parse that succeeds must describe the buffer: every part
 * inside it, lengths adding up, header lines well-formed.
 *
 *   cache_entry_fuzz ITERATIONS SEED
 *
 * Built and run by t/cache-entry-fuzz.t (gcc -fsanitize=address,undefined).
 * Exit 0 when every check held; 1 with the failing case on stderr.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "ngx_http_cache_entry.h"


static uint64_t  state;
static unsigned long  accepted;


static uint32_t
rnd(void)
{
    /* xorshift64*: reproducible from the seed */
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return (uint32_t) ((state * 2685821657736338717ULL) >> 32);
}


/* a mutated entry given the CRC its mutated header calls for, so the
 * checks behind the CRC (lengths, ranges, header syntax) are reached */

static void
reseal(unsigned char *p, size_t len)
{
    size_t         body, prefix;
    uLong          crc;
    unsigned char  zero[4] = { 0, 0, 0, 0 };

    if (len < NGX_HTTP_CACHE_ENTRY_HEADER) {
        return;
    }

    body = ((size_t) p[76] << 24) | ((size_t) p[77] << 16)
           | ((size_t) p[78] << 8) | p[79];

    if (body > len - NGX_HTTP_CACHE_ENTRY_HEADER) {
        return;
    }

    prefix = len - body;

    crc = crc32(0L, Z_NULL, 0);
    crc = crc32(crc, p, 84);
    crc = crc32(crc, zero, 4);
    crc = crc32(crc, p + NGX_HTTP_CACHE_ENTRY_HEADER,
                (uInt) (prefix - NGX_HTTP_CACHE_ENTRY_HEADER));

    p[84] = (unsigned char) (crc >> 24);
    p[85] = (unsigned char) (crc >> 16);
    p[86] = (unsigned char) (crc >> 8);
    p[87] = (unsigned char) crc;
}


static size_t
make_entry(unsigned char *buf, unsigned shape)
{
    unsigned char            *p;
    ngx_http_cache_entry_t    e;
    static const char         body[] = "{\"id\":42,\"name\":\"fuzz\"}";
    static const char         hdrs[] = "Content-Type: application/json\r\n"
                                       "ETag: \"v1\"\r\n"
                                       "Cache-Control: max-age=60\r\n";

    memset(&e, 0, sizeof(e));
    e.status = 200;
    e.response_time = 1796000000000LL;
    e.fresh = 60000;
    e.swr = shape & 1 ? 30000 : 0;
    e.key.data = (const unsigned char *) "http://example.com/a?b=c";
    e.key.len = strlen((const char *) e.key.data);

    if (shape & 2) {
        e.vary_spec.data = (const unsigned char *) "accept-language";
        e.vary_spec.len = 15;
        e.vary_values.data = (const unsigned char *) "accept-language:en\n";
        e.vary_values.len = 19;
    }

    if (shape & 4) {
        e.tags.data = (const unsigned char *) "product\nproduct-42\n";
        e.tags.len = 19;
    }

    e.headers.data = (const unsigned char *) hdrs;
    e.headers.len = sizeof(hdrs) - 1;

    p = ngx_http_cache_entry_write_prefix(buf, &e);
    memcpy(p, body, sizeof(body) - 1);
    p += sizeof(body) - 1;

    ngx_http_cache_entry_set_body(buf, p - buf - (sizeof(body) - 1),
                                  sizeof(body) - 1, sizeof(body) - 1);

    return p - buf;
}


static int
inside(const ngx_http_cache_bytes_t *b, const unsigned char *buf, size_t len)
{
    return b->len == 0
           || (b->data >= buf && b->data + b->len <= buf + len);
}


static int
check(const unsigned char *buf, size_t len)
{
    const unsigned char      *p, *end;
    ngx_http_cache_entry_t    e;
    ngx_http_cache_bytes_t    name, value;

    if (ngx_http_cache_entry_parse(&e, buf, len) != NGX_HTTP_CACHE_ENTRY_OK) {
        return 1;
    }

    accepted++;

    if (!inside(&e.key, buf, len) || !inside(&e.vary_spec, buf, len)
        || !inside(&e.vary_values, buf, len) || !inside(&e.tags, buf, len)
        || !inside(&e.headers, buf, len) || !inside(&e.body, buf, len)
        || NGX_HTTP_CACHE_ENTRY_HEADER + e.key.len + e.vary_spec.len
           + e.vary_values.len + e.tags.len + e.headers.len + e.body.len
           != len)
    {
        return 0;
    }

    p = e.headers.data;
    end = p + e.headers.len;

    while ((p = ngx_http_cache_entry_next_header(p, end, &name, &value))) {
        if (name.len == 0 || memchr(value.data, '\n', value.len)
            || memchr(value.data, '\r', value.len)
            || value.data + value.len > end)
        {
            return 0;
        }
    }

    return 1;
}


int
main(int argc, char **argv)
{
    size_t          len, n, i, at;
    unsigned long   iterations, it;
    unsigned char   base[4096], work[4096 + 64], *buf;

    iterations = argc > 1 ? strtoul(argv[1], NULL, 10) : 100000;
    state = argc > 2 ? strtoull(argv[2], NULL, 10) : 1;
    state = state ? state : 1;

    for (it = 0; it < iterations; it++) {
        len = make_entry(base, it % 8);

        /* the unmutated entry must parse */
        if (it < 8 && ngx_http_cache_entry_parse(
                          &(ngx_http_cache_entry_t) { 0 }, base, len)
                      != NGX_HTTP_CACHE_ENTRY_OK)
        {
            fprintf(stderr, "a valid entry (shape %lu) was refused\n", it);
            return 1;
        }

        memcpy(work, base, len);
        n = 1 + rnd() % 4;

        for (i = 0; i < n && len > 0; i++) {
            at = rnd() % len;

            switch (rnd() % 7) {
            case 0:
                work[at] ^= (unsigned char) (1u << (rnd() % 8));
                break;
            case 1:
                work[at] = (unsigned char) rnd();
                break;
            case 2:
                len = rnd() % (len + 1);
                break;
            case 3:
                if (len + 16 <= sizeof(work)) {
                    memset(work + len, (int) rnd(), 16);
                    len += rnd() % 17;
                }
                break;
            case 4:
                /* a length field (offsets 56..83) to an edge value */
                at = 56 + 4 * (rnd() % 7);
                if (at + 4 <= len) {
                    static const uint32_t edges[] = {
                        0, 1, 0x7fffffff, 0x80000000, 0xffffffff, 4096, 65536
                    };
                    uint32_t v = edges[rnd() % 7];
                    work[at] = v >> 24; work[at + 1] = v >> 16;
                    work[at + 2] = v >> 8; work[at + 3] = v;
                }
                break;
            case 5:
                work[at] = "\r\n\0:  \x7f"[rnd() % 7];
                break;
            default:
                for (size_t k = at; k < len && k < at + 8; k++) {
                    work[k] = (unsigned char) rnd();
                }
            }
        }

        if (rnd() % 2) {
            reseal(work, len);
        }

        /* exactly len bytes: ASan sees any read past them */
        buf = malloc(len ? len : 1);
        if (buf == NULL) {
            return 2;
        }

        memcpy(buf, work, len);

        if (!check(buf, len)) {
            fprintf(stderr, "iteration %lu: a parsed entry does not describe "
                    "its %zu bytes\n", it, len);
            free(buf);
            return 1;
        }

        free(buf);
    }

    printf("%lu entries parsed, %lu accepted\n", iterations, accepted);

    return 0;
}
