/*
 * A cached response as stored in Redis: one string per (key, variant).
 *
 *   fixed header (NGX_HTTP_CACHE_ENTRY_HEADER bytes, integers big-endian)
 *       0  4  magic "NXEC"
 *       4  1  format version (NGX_HTTP_CACHE_ENTRY_VERSION)
 *       5  1  flags (NGX_HTTP_CACHE_ENTRY_*)
 *       6  2  status
 *       8  8  response time: wall clock, ms, when the response arrived
 *      16  8  corrected initial age at that time, ms (RFC 9111 4.2.3)
 *      24  8  freshness lifetime, ms
 *      32  8  stale-while-revalidate window, ms
 *      40  8  stale-if-error window, ms
 *      48  8  variant epoch (see ngx_http_cache_lookup.c)
 *      56  4  key length        60  4  vary spec length
 *      64  4  vary values length 68  4  tags length
 *      72  4  headers length    76  4  body length
 *      80  4  body length once inflated
 *      84  4  CRC-32 of the fixed header (this field as zero) and of the
 *             key, vary spec, vary values, tags and headers
 *   the key text (compared with the request's on every read)
 *   the vary spec ("accept-language,x-tier") and the request's values under
 *   it ("accept-language:en\nx-tier:gold\n"), empty without Vary
 *   the headers: "Name: value\r\n" lines, hop-by-hop ones left out
 *   the body, gzip-compressed when NGX_HTTP_CACHE_ENTRY_GZIP is set
 *
 * Entries come from the network: ngx_http_cache_entry_parse() checks the
 * magic, the version, every length against the string's, the CRC, and
 * the syntax of every header line (token names, no CR, LF or NUL in a
 * value, none of the framing and hop-by-hop fields a hit computes itself:
 * Content-Length, Transfer-Encoding, Connection, ...), so an entry that
 * fails any check is a miss, and nothing in it can split a response.  The body is not covered by the CRC (it would
 * cost a pass over every hit); a gzip body is checked by inflate (its
 * own CRC and length) when it is inflated.
 *
 * Plain C on purpose, with no nginx type in the parser: the fuzz driver
 * (t/fuzz/cache_entry_fuzz.c) builds it on its own.
 */

#ifndef _NGX_HTTP_CACHE_ENTRY_H_INCLUDED_
#define _NGX_HTTP_CACHE_ENTRY_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>


#define NGX_HTTP_CACHE_ENTRY_VERSION     1
#define NGX_HTTP_CACHE_ENTRY_HEADER      88

/* flags */
#define NGX_HTTP_CACHE_ENTRY_GZIP        0x01   /* body stored gzip */
#define NGX_HTTP_CACHE_ENTRY_REVALIDATE  0x02   /* every use revalidates */
#define NGX_HTTP_CACHE_ENTRY_MUST_REVAL  0x04   /* never served stale */
#define NGX_HTTP_CACHE_ENTRY_INFLATED    0x08   /* a hot copy of a gzip
                                                   entry, inflated (never
                                                   in Redis) */
#define NGX_HTTP_CACHE_ENTRY_FLAGS       0x0f

/* bounds a parsed entry must respect */
#define NGX_HTTP_CACHE_ENTRY_KEY_MAX     4096
#define NGX_HTTP_CACHE_ENTRY_VARY_MAX    4096
#define NGX_HTTP_CACHE_ENTRY_TAGS_MAX    4096
#define NGX_HTTP_CACHE_ENTRY_HDRS_MAX    65536
#define NGX_HTTP_CACHE_ENTRY_TIME_MAX    ((int64_t) 1 << 50)   /* ms */


typedef struct {
    const unsigned char  *data;
    size_t                len;
} ngx_http_cache_bytes_t;


typedef struct {
    unsigned               flags;
    unsigned               status;
    int64_t                response_time;
    int64_t                initial_age;
    int64_t                fresh;
    int64_t                swr;
    int64_t                sie;
    uint64_t               epoch;

    ngx_http_cache_bytes_t key;
    ngx_http_cache_bytes_t vary_spec;
    ngx_http_cache_bytes_t vary_values;
    ngx_http_cache_bytes_t tags;
    ngx_http_cache_bytes_t headers;
    ngx_http_cache_bytes_t body;
    size_t                 body_raw_len;
} ngx_http_cache_entry_t;


/* why an entry was refused: for the log */
typedef enum {
    NGX_HTTP_CACHE_ENTRY_OK = 0,
    NGX_HTTP_CACHE_ENTRY_SHORT,        /* truncated */
    NGX_HTTP_CACHE_ENTRY_FOREIGN,      /* not our magic */
    NGX_HTTP_CACHE_ENTRY_OLD,          /* another format version */
    NGX_HTTP_CACHE_ENTRY_BAD_LENGTH,   /* lengths do not add up */
    NGX_HTTP_CACHE_ENTRY_BAD_FIELD,    /* a value out of its range */
    NGX_HTTP_CACHE_ENTRY_BAD_CRC,
    NGX_HTTP_CACHE_ENTRY_BAD_HEADER    /* a header line is malformed */
} ngx_http_cache_entry_rc_e;


/* the bytes before the body */
size_t ngx_http_cache_entry_prefix_size(const ngx_http_cache_entry_t *e);

/* writes the fixed header, key, vary and headers of e (body.len and
 * body_raw_len as given; ngx_http_cache_entry_set_body() can change them
 * later); returns the end */
unsigned char *ngx_http_cache_entry_write_prefix(unsigned char *p,
    const ngx_http_cache_entry_t *e);

/* patches the body lengths of a written prefix and its CRC */
void ngx_http_cache_entry_set_body(unsigned char *prefix, size_t prefix_len,
    size_t body_len, size_t body_raw_len);

ngx_http_cache_entry_rc_e ngx_http_cache_entry_parse(
    ngx_http_cache_entry_t *e, const unsigned char *data, size_t len);

const char *ngx_http_cache_entry_strerror(ngx_http_cache_entry_rc_e rc);

/* the next header line of a parsed headers block: name and value, NULL
 * at the end (the block was validated by the parser) */
const unsigned char *ngx_http_cache_entry_next_header(
    const unsigned char *p, const unsigned char *end,
    ngx_http_cache_bytes_t *name, ngx_http_cache_bytes_t *value);


#endif /* _NGX_HTTP_CACHE_ENTRY_H_INCLUDED_ */
