/*
 * ngx_http_cache_module: HTTP caching semantics (RFC 9111, RFC 5861,
 * the conditional requests of RFC 9110 section 13).
 *
 * Pure functions of a request's and a response's header fields: no I/O,
 * no globals, memory only from the pool given (r->pool).  Every parser is
 * bounded by the length of the value it reads and accepts any bytes.
 *
 * Header fields are always found by walking the headers lists (names
 * compared case-insensitively, entries with hash 0, which nginx uses for
 * deleted fields, skipped), never through the per-field pointers of
 * headers_in / headers_out, whose form changed in nginx 1.23 (multi-valued
 * fields became linked lists).  Only headers_out.status and
 * last_modified_time are read directly.
 *
 * Times: seconds on the wire, milliseconds in the results (int64_t).  A
 * delta-seconds value larger than 2^31 is taken as 2^31 (RFC 9111 1.2.2).
 */

#ifndef _NGX_HTTP_CACHE_RFC_H_INCLUDED_
#define _NGX_HTTP_CACHE_RFC_H_INCLUDED_


#include "ngx_edge_common.h"


/* the largest delta-seconds value, RFC 9111 1.2.2 */
#define NGX_HTTP_CACHE_DELTA_MAX        ((int64_t) 1 << 31)

/* a Vary with more distinct field names than this is not cacheable */
#define NGX_HTTP_CACHE_VARY_MAX_FIELDS  64


/*
 * ngx_http_cache_request_allows() results.  Nonzero, so that none reads
 * as NGX_OK.  (nginx's ngx_http_cache.h already defines
 * NGX_HTTP_CACHE_BYPASS, hence the _REQ_ in the last name.)
 */
#define NGX_HTTP_CACHE_USE_FRESH        1
#define NGX_HTTP_CACHE_USE_STALE_OK     2
#define NGX_HTTP_CACHE_REVALIDATE       3
#define NGX_HTTP_CACHE_REQ_BYPASS       4


/*
 * Cache-Control, parsed (a request's or a response's).  Times in seconds,
 * -1 when the directive is absent.
 *
 *   max_age, s_maxage    an invalid value (not digits, negative, empty,
 *                        an unterminated quoted string, junk after it) or
 *                        a duplicate gives 0: stale (RFC 9111 4.2.1)
 *   stale_while_revalidate, stale_if_error
 *                        invalid: ignored (-1); duplicates: the smallest
 *   max_stale            request: bare max-stale gives INT64_MAX;
 *                        invalid: ignored; duplicates: the smallest
 *   min_fresh            request: invalid: ignored; duplicates: the largest
 *   no_cache_fields, private_fields
 *                        the field names of the qualified forms
 *                        (no-cache="a, b"), ngx_str_t, NULL when there are
 *                        none; a qualified form whose argument cannot be
 *                        read (unterminated, not a list of tokens) counts
 *                        as the unqualified form, the restrictive reading
 *   no_cache, private_   the unqualified forms only
 * Both the token and the quoted-string argument forms are accepted.
 */
typedef struct {
    int64_t                      max_age;
    int64_t                      s_maxage;
    int64_t                      stale_while_revalidate;
    int64_t                      stale_if_error;
    int64_t                      max_stale;
    int64_t                      min_fresh;
    ngx_array_t                 *no_cache_fields;
    ngx_array_t                 *private_fields;
    unsigned                     no_store:1;
    unsigned                     no_cache:1;
    unsigned                     private_:1;
    unsigned                     public_:1;
    unsigned                     must_revalidate:1;
    unsigned                     proxy_revalidate:1;
    unsigned                     must_understand:1;
    unsigned                     only_if_cached:1;
    unsigned                     no_transform:1;
    unsigned                     immutable:1;
    /* at least one Cache-Control field line was seen */
    unsigned                     present:1;
} ngx_http_cache_cc_t;


/*
 * Every Cache-Control field line of headers (a field may repeat), comma
 * lists, quoted strings with \-escapes, case-insensitive directive names;
 * unknown directives are skipped with their arguments.  headers may be
 * NULL.  NGX_ERROR only when the pool is exhausted.
 */
NGX_EDGE_API ngx_int_t ngx_http_cache_cc_parse(ngx_pool_t *pool,
    ngx_list_t *headers, ngx_http_cache_cc_t *cc);

/*
 * The request's Cache-Control (r->headers_in); when the request has no
 * Cache-Control field at all, "Pragma: no-cache" sets no_cache (RFC 9111
 * 5.4).  For only-if-cached (answer 504 on a miss) and the like.
 */
NGX_EDGE_API ngx_int_t ngx_http_cache_request_cc(ngx_http_request_t *r,
    ngx_http_cache_cc_t *cc);


#if !(NGX_HTTP_CACHE)
/* the same type as nginx's own, which exists only with NGX_HTTP_CACHE */
typedef struct {
    ngx_uint_t                   status;
    time_t                       valid;
} ngx_http_cache_valid_t;
#endif


/* the flags count only when 1: a conf left NGX_CONF_UNSET reads as off */
typedef struct {
    /* ngx_http_cache_valid_t: the freshness of a response without explicit
     * freshness, per status, as proxy_cache_valid ("any" = status 0; an
     * exact status wins over "any"; valid <= 0 means "do not store") */
    ngx_array_t                 *valid;
    /* heuristic freshness allowed: 10% of Date - Last-Modified ... */
    ngx_flag_t                   heuristic;
    /* ... at most this many seconds (<= 0: no cap) */
    time_t                       heuristic_max;
    /* store responses with Set-Cookie; the field is kept (not in strip) */
    ngx_flag_t                   store_set_cookie;
    /* operator override: ignore private, both forms (default off) */
    ngx_flag_t                   ignore_private;
} ngx_http_cache_rfc_conf_t;


typedef struct {
    unsigned                     storable:1;
    /* stored, but every use must be validated first: unqualified no-cache
     * in the response (RFC 9111 5.2.2.4) */
    unsigned                     revalidate:1;
    /* never served stale, not even within stale windows or on error:
     * must-revalidate, proxy-revalidate, s-maxage or no-cache (RFC 9111
     * 5.2.2.2, 5.2.2.8, 5.2.2.10, 4.2.4) */
    unsigned                     must_revalidate:1;
    /* explicit freshness (s-maxage, max-age, Expires) was used, not a
     * configured valid time or a heuristic */
    unsigned                     explicit_:1;
    /* why not storable (a static string), NULL when storable */
    const char                  *reason;
    /* freshness lifetime; 0 = stale at once */
    int64_t                      fresh_ms;
    /* RFC 5861 windows after freshness ends, 0 when absent or forbidden
     * (no-cache, must_revalidate) */
    int64_t                      swr_ms;
    int64_t                      sie_ms;
    /* corrected_initial_age (RFC 9111 4.2.3) */
    int64_t                      initial_age_ms;
    /* the response's Date in seconds (response time when absent or
     * invalid): store it with the entry for If-Modified-Since */
    time_t                       date;
    /* ngx_str_t: field names not to store (the qualified no-cache and
     * private fields, as sent), NULL when none */
    ngx_array_t                 *strip;
} ngx_http_cache_policy_t;


/*
 * The store decision for the response now in r->headers_out, for the
 * request r.  A HEAD response may be storable: it has no body, so the
 * caller must not answer a GET with it.  request_time_ms and
 * response_time_ms: wall clock, when the request went upstream and when
 * the response header arrived.
 * NGX_ERROR only when the pool is exhausted; otherwise NGX_OK and the
 * decision in policy (policy->storable, policy->reason).
 */
NGX_EDGE_API ngx_int_t ngx_http_cache_response_policy(
    ngx_http_request_t *r, ngx_http_cache_rfc_conf_t *conf,
    int64_t request_time_ms, int64_t response_time_ms,
    ngx_http_cache_policy_t *policy);

/*
 * May a stored response be used for request r without validation?
 * current_age_ms: the entry's current age (RFC 9111 4.2.3); fresh_ms and
 * must_revalidate: stored with the entry.  In this order:
 *   request no-store                -> NGX_HTTP_CACHE_REQ_BYPASS (RFC 9111
 *                                      lets a cache answer it from storage;
 *                                      the caller decides)
 *   request no-cache (or Pragma)    -> NGX_HTTP_CACHE_REVALIDATE
 *   request max-age=0, or an age in
 *   whole seconds above max-age     -> NGX_HTTP_CACHE_REVALIDATE
 *   fresh, with min-fresh left      -> NGX_HTTP_CACHE_USE_FRESH
 *   fresh, less than min-fresh left -> NGX_HTTP_CACHE_REVALIDATE
 *   stale, must_revalidate          -> NGX_HTTP_CACHE_REVALIDATE
 *   stale within max-stale          -> NGX_HTTP_CACHE_USE_STALE_OK
 *   stale                           -> NGX_HTTP_CACHE_REVALIDATE
 * A stored response marked revalidate (response no-cache) is the caller's
 * to check: it must be validated whatever this returns.
 * stale-while-revalidate / stale-if-error windows are the caller's too.
 */
NGX_EDGE_API ngx_int_t ngx_http_cache_request_allows(
    ngx_http_request_t *r, int64_t current_age_ms, int64_t fresh_ms,
    ngx_flag_t must_revalidate);

/*
 * Must a 304 be sent for request r, given the stored response's
 * validators?  RFC 9110 13.2.2: If-None-Match (weak comparison, "*"
 * matches, every field line of it) decides when present; otherwise
 * If-Modified-Since, for GET and HEAD only, ignored when invalid or sent
 * more than once, against last_modified (or date when last_modified is
 * -1).  etag: as stored (with quotes and W/), may be empty or NULL.
 * Returns 1 for a 304, else 0 (also for methods other than GET/HEAD).
 */
NGX_EDGE_API ngx_int_t ngx_http_cache_not_modified(ngx_http_request_t *r,
    ngx_str_t *etag, time_t last_modified, time_t date);

/*
 * Vary.  vary: the response's Vary field values joined (comma list,
 * case-insensitive names).  Writes, from r->pool:
 *   spec_out:   the normalised field-name list to store with the entry
 *               (lower case, duplicates dropped, "a,b");
 *   values_out: the request's selecting values, for each name in order:
 *               the lower-cased name, ':', the values of every line of
 *               that field joined with "," and optional whitespace around
 *               commas and at the ends removed, then '\n'; a field absent
 *               from the request gives the name and '\n' alone (no ':'),
 *               so that absent and empty never match (RFC 9111 4.1).
 *               Accept-Language is lower-cased (tags are case-insensitive).
 *               Accept-Encoding gives "gzip" when the request accepts gzip
 *               (q > 0, also through "*" or x-gzip) and "" otherwise, with
 *               the ':' (absent and "identity" are the same variant).
 * Returns NGX_DECLINED for "*", a member that is not a field name, or more
 * than NGX_HTTP_CACHE_VARY_MAX_FIELDS names (never store, never match);
 * NGX_OK otherwise (an empty vary gives empty outputs); NGX_ERROR when
 * the pool is exhausted.  On a lookup, pass the STORED spec as vary.
 */
NGX_EDGE_API ngx_int_t ngx_http_cache_vary_values(ngx_http_request_t *r,
    ngx_str_t *vary, ngx_str_t *spec_out, ngx_str_t *values_out);

/* every Vary line of r->headers_out joined with ',' (empty if none) */
NGX_EDGE_API ngx_int_t ngx_http_cache_response_vary(ngx_http_request_t *r,
    ngx_str_t *vary);

/* the first field line named name (case-insensitive) of headers, or NULL */
/* the request headers accept gzip (q > 0, by name, x-gzip or "*"): the
 * Accept-Encoding normalisation of ngx_http_cache_vary_values() */
NGX_EDGE_API ngx_uint_t ngx_http_cache_rfc_accepts_gzip(ngx_list_t *headers);

NGX_EDGE_API ngx_table_elt_t *ngx_http_cache_find_header(
    ngx_list_t *headers, const char *name, size_t len);


#endif /* _NGX_HTTP_CACHE_RFC_H_INCLUDED_ */
