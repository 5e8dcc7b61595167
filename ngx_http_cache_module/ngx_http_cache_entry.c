/*
 * The stored entry's format: see ngx_http_cache_entry.h.
 */

#include <string.h>
#include <strings.h>
#include <zlib.h>

#include "ngx_http_cache_entry.h"


#define NGX_HTTP_CACHE_ENTRY_CRC_AT  84
#define NGX_HTTP_CACHE_ENTRY_NLENS   7

static const unsigned char  ngx_http_cache_entry_magic[4] = "NXEC";


static void
ngx_http_cache_put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char) (v >> 24);
    p[1] = (unsigned char) (v >> 16);
    p[2] = (unsigned char) (v >> 8);
    p[3] = (unsigned char) v;
}


static void
ngx_http_cache_put64(unsigned char *p, uint64_t v)
{
    ngx_http_cache_put32(p, (uint32_t) (v >> 32));
    ngx_http_cache_put32(p + 4, (uint32_t) v);
}


static uint32_t
ngx_http_cache_get32(const unsigned char *p)
{
    return ((uint32_t) p[0] << 24) | ((uint32_t) p[1] << 16)
           | ((uint32_t) p[2] << 8) | (uint32_t) p[3];
}


static uint64_t
ngx_http_cache_get64(const unsigned char *p)
{
    return ((uint64_t) ngx_http_cache_get32(p) << 32)
           | ngx_http_cache_get32(p + 4);
}


size_t
ngx_http_cache_entry_prefix_size(const ngx_http_cache_entry_t *e)
{
    return NGX_HTTP_CACHE_ENTRY_HEADER + e->key.len + e->vary_spec.len
           + e->vary_values.len + e->tags.len + e->headers.len;
}


static unsigned char *
ngx_http_cache_put_bytes(unsigned char *p, const ngx_http_cache_bytes_t *b)
{
    if (b->len) {
        memcpy(p, b->data, b->len);
    }

    return p + b->len;
}


/* the CRC covers the fixed header with the CRC field as zero, then the
 * variable part up to the body */

static uint32_t
ngx_http_cache_entry_crc(const unsigned char *prefix, size_t prefix_len)
{
    uLong                 crc;
    static unsigned char  zero[4];

    crc = crc32(0L, Z_NULL, 0);
    crc = crc32(crc, prefix, NGX_HTTP_CACHE_ENTRY_CRC_AT);
    crc = crc32(crc, zero, 4);
    crc = crc32(crc, prefix + NGX_HTTP_CACHE_ENTRY_HEADER,
                (uInt) (prefix_len - NGX_HTTP_CACHE_ENTRY_HEADER));

    return (uint32_t) crc;
}


unsigned char *
ngx_http_cache_entry_write_prefix(unsigned char *p,
    const ngx_http_cache_entry_t *e)
{
    unsigned char  *start;

    start = p;

    memcpy(p, ngx_http_cache_entry_magic, 4);
    p[4] = NGX_HTTP_CACHE_ENTRY_VERSION;
    p[5] = (unsigned char) e->flags;
    p[6] = (unsigned char) (e->status >> 8);
    p[7] = (unsigned char) e->status;

    ngx_http_cache_put64(p + 8, (uint64_t) e->response_time);
    ngx_http_cache_put64(p + 16, (uint64_t) e->initial_age);
    ngx_http_cache_put64(p + 24, (uint64_t) e->fresh);
    ngx_http_cache_put64(p + 32, (uint64_t) e->swr);
    ngx_http_cache_put64(p + 40, (uint64_t) e->sie);
    ngx_http_cache_put64(p + 48, e->epoch);

    ngx_http_cache_put32(p + 56, (uint32_t) e->key.len);
    ngx_http_cache_put32(p + 60, (uint32_t) e->vary_spec.len);
    ngx_http_cache_put32(p + 64, (uint32_t) e->vary_values.len);
    ngx_http_cache_put32(p + 68, (uint32_t) e->tags.len);
    ngx_http_cache_put32(p + 72, (uint32_t) e->headers.len);
    ngx_http_cache_put32(p + 76, (uint32_t) e->body.len);
    ngx_http_cache_put32(p + 80, (uint32_t) e->body_raw_len);

    p += NGX_HTTP_CACHE_ENTRY_HEADER;
    p = ngx_http_cache_put_bytes(p, &e->key);
    p = ngx_http_cache_put_bytes(p, &e->vary_spec);
    p = ngx_http_cache_put_bytes(p, &e->vary_values);
    p = ngx_http_cache_put_bytes(p, &e->tags);
    p = ngx_http_cache_put_bytes(p, &e->headers);

    ngx_http_cache_put32(start + NGX_HTTP_CACHE_ENTRY_CRC_AT,
                         ngx_http_cache_entry_crc(start, p - start));

    return p;
}


void
ngx_http_cache_entry_set_body(unsigned char *prefix, size_t prefix_len,
    size_t body_len, size_t body_raw_len)
{
    ngx_http_cache_put32(prefix + 76, (uint32_t) body_len);
    ngx_http_cache_put32(prefix + 80, (uint32_t) body_raw_len);
    ngx_http_cache_put32(prefix + NGX_HTTP_CACHE_ENTRY_CRC_AT,
                         ngx_http_cache_entry_crc(prefix, prefix_len));
}


/* RFC 9110 tchar */

static int
ngx_http_cache_is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z')
        || (c >= 'A' && c <= 'Z'))
    {
        return 1;
    }

    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}


/*
 * Fields the store never writes and a hit computes itself: the framing
 * and hop-by-hop ones would be sent beside nginx's own (a second
 * Content-Length, "Transfer-Encoding: chunked" over a plain body: a
 * response a client or a proxy downstream reads differently), Age and
 * Cache-Status would be sent twice.  An entry holding one was not written
 * by us: it is refused.
 */

#define ngx_http_cache_field(name)  { name, sizeof(name) - 1 }

static const struct {
    const char  *name;
    size_t       len;
} ngx_http_cache_entry_computed[] = {
    ngx_http_cache_field("Content-Length"),
    ngx_http_cache_field("Transfer-Encoding"),
    ngx_http_cache_field("Connection"),
    ngx_http_cache_field("Keep-Alive"),
    ngx_http_cache_field("Proxy-Connection"),
    ngx_http_cache_field("TE"),
    ngx_http_cache_field("Trailer"),
    ngx_http_cache_field("Upgrade"),
    ngx_http_cache_field("Age"),
    ngx_http_cache_field("Cache-Status"),
    { NULL, 0 }
};


/* (checked on every read of an entry: lengths known, no strlen) */

static int
ngx_http_cache_is_computed(const unsigned char *name, size_t len)
{
    size_t  i;

    for (i = 0; ngx_http_cache_entry_computed[i].name; i++) {
        if (ngx_http_cache_entry_computed[i].len == len
            && strncasecmp((const char *) name,
                           ngx_http_cache_entry_computed[i].name, len) == 0)
        {
            return 1;
        }
    }

    return 0;
}


/* every line "token: value\r\n", the value without CR, LF or NUL, the
 * token none of the computed fields */

static int
ngx_http_cache_headers_valid(const unsigned char *p, size_t len)
{
    const unsigned char  *end, *name;

    end = p + len;

    while (p < end) {
        name = p;

        while (p < end && ngx_http_cache_is_tchar(*p)) {
            p++;
        }

        if (p == name || end - p < 2 || p[0] != ':' || p[1] != ' ') {
            return 0;
        }

        if (ngx_http_cache_is_computed(name, p - name)) {
            return 0;
        }

        for (p += 2; p < end && *p != '\r'; p++) {
            if (*p == '\n' || *p == '\0') {
                return 0;
            }
        }

        if (end - p < 2 || p[1] != '\n') {
            return 0;
        }

        p += 2;
    }

    return 1;
}


/* "tag\n" lines of visible ASCII */

static int
ngx_http_cache_tags_valid(const unsigned char *p, size_t len)
{
    size_t  i, n;

    n = 0;

    for (i = 0; i < len; i++) {
        if (p[i] == '\n') {
            if (n == 0) {
                return 0;
            }

            n = 0;
            continue;
        }

        if (p[i] <= 0x20 || p[i] >= 0x7f) {
            return 0;
        }

        n++;
    }

    return n == 0;
}


static int
ngx_http_cache_time_valid(int64_t t)
{
    return t >= 0 && t <= NGX_HTTP_CACHE_ENTRY_TIME_MAX;
}


ngx_http_cache_entry_rc_e
ngx_http_cache_entry_parse(ngx_http_cache_entry_t *e,
    const unsigned char *data, size_t len)
{
    size_t                 rest;
    uint32_t               lens[NGX_HTTP_CACHE_ENTRY_NLENS];
    unsigned               i;
    const unsigned char   *p;

    memset(e, 0, sizeof(ngx_http_cache_entry_t));

    if (len < 5) {
        return len >= 4 && memcmp(data, ngx_http_cache_entry_magic, 4) == 0
               ? NGX_HTTP_CACHE_ENTRY_SHORT
               : NGX_HTTP_CACHE_ENTRY_FOREIGN;
    }

    if (memcmp(data, ngx_http_cache_entry_magic, 4) != 0) {
        return NGX_HTTP_CACHE_ENTRY_FOREIGN;
    }

    if (data[4] != NGX_HTTP_CACHE_ENTRY_VERSION) {
        return NGX_HTTP_CACHE_ENTRY_OLD;
    }

    if (len < NGX_HTTP_CACHE_ENTRY_HEADER) {
        return NGX_HTTP_CACHE_ENTRY_SHORT;
    }

    for (i = 0; i < NGX_HTTP_CACHE_ENTRY_NLENS; i++) {
        lens[i] = ngx_http_cache_get32(data + 56 + 4 * i);
    }

    /* each length against what is left, so no sum can overflow */
    rest = len - NGX_HTTP_CACHE_ENTRY_HEADER;

    /* every length but the inflated body's */
    for (i = 0; i < NGX_HTTP_CACHE_ENTRY_NLENS - 1; i++) {
        if (lens[i] > rest) {
            return NGX_HTTP_CACHE_ENTRY_SHORT;
        }

        rest -= lens[i];
    }

    if (rest != 0) {
        return NGX_HTTP_CACHE_ENTRY_BAD_LENGTH;
    }

    if (lens[0] == 0 || lens[0] > NGX_HTTP_CACHE_ENTRY_KEY_MAX
        || lens[1] > NGX_HTTP_CACHE_ENTRY_VARY_MAX
        || lens[2] > NGX_HTTP_CACHE_ENTRY_VARY_MAX
        || lens[3] > NGX_HTTP_CACHE_ENTRY_TAGS_MAX
        || lens[4] > NGX_HTTP_CACHE_ENTRY_HDRS_MAX)
    {
        return NGX_HTTP_CACHE_ENTRY_BAD_LENGTH;
    }

    if (ngx_http_cache_get32(data + NGX_HTTP_CACHE_ENTRY_CRC_AT)
        != ngx_http_cache_entry_crc(data, len - lens[5]))
    {
        return NGX_HTTP_CACHE_ENTRY_BAD_CRC;
    }

    e->flags = data[5];
    e->status = ((unsigned) data[6] << 8) | data[7];
    e->response_time = (int64_t) ngx_http_cache_get64(data + 8);
    e->initial_age = (int64_t) ngx_http_cache_get64(data + 16);
    e->fresh = (int64_t) ngx_http_cache_get64(data + 24);
    e->swr = (int64_t) ngx_http_cache_get64(data + 32);
    e->sie = (int64_t) ngx_http_cache_get64(data + 40);
    e->epoch = ngx_http_cache_get64(data + 48);

    if ((e->flags & ~NGX_HTTP_CACHE_ENTRY_FLAGS)
        || (e->flags & NGX_HTTP_CACHE_ENTRY_GZIP
            && e->flags & NGX_HTTP_CACHE_ENTRY_INFLATED)
        || e->status < 100 || e->status > 599
        || !ngx_http_cache_time_valid(e->response_time)
        || !ngx_http_cache_time_valid(e->initial_age)
        || !ngx_http_cache_time_valid(e->fresh)
        || !ngx_http_cache_time_valid(e->swr)
        || !ngx_http_cache_time_valid(e->sie))
    {
        return NGX_HTTP_CACHE_ENTRY_BAD_FIELD;
    }

    p = data + NGX_HTTP_CACHE_ENTRY_HEADER;

    e->key.data = p;
    e->key.len = lens[0];
    p += lens[0];

    e->vary_spec.data = p;
    e->vary_spec.len = lens[1];
    p += lens[1];

    e->vary_values.data = p;
    e->vary_values.len = lens[2];
    p += lens[2];

    e->tags.data = p;
    e->tags.len = lens[3];
    p += lens[3];

    e->headers.data = p;
    e->headers.len = lens[4];
    p += lens[4];

    e->body.data = p;
    e->body.len = lens[5];
    e->body_raw_len = lens[6];

    if (!(e->flags & NGX_HTTP_CACHE_ENTRY_GZIP)
        && e->body_raw_len != e->body.len)
    {
        return NGX_HTTP_CACHE_ENTRY_BAD_LENGTH;
    }

    if (!ngx_http_cache_tags_valid(e->tags.data, e->tags.len)) {
        return NGX_HTTP_CACHE_ENTRY_BAD_FIELD;
    }

    if (!ngx_http_cache_headers_valid(e->headers.data, e->headers.len)) {
        return NGX_HTTP_CACHE_ENTRY_BAD_HEADER;
    }

    return NGX_HTTP_CACHE_ENTRY_OK;
}


const char *
ngx_http_cache_entry_strerror(ngx_http_cache_entry_rc_e rc)
{
    static const char  *errors[] = {
        "ok",
        "truncated",
        "not a cache entry",
        "another format version",
        "lengths do not add up",
        "a field out of range",
        "checksum mismatch",
        "a malformed header line"
    };

    if ((unsigned) rc < sizeof(errors) / sizeof(errors[0])) {
        return errors[rc];
    }

    return "unknown";
}


const unsigned char *
ngx_http_cache_entry_next_header(const unsigned char *p,
    const unsigned char *end, ngx_http_cache_bytes_t *name,
    ngx_http_cache_bytes_t *value)
{
    const unsigned char  *q;

    if (p >= end) {
        return NULL;
    }

    q = memchr(p, ':', end - p);
    if (q == NULL || end - q < 2) {
        return NULL;
    }

    name->data = p;
    name->len = q - p;

    value->data = q + 2;

    q = memchr(value->data, '\r', end - value->data);
    if (q == NULL) {
        return NULL;
    }

    value->len = q - value->data;

    return q + 2;
}
