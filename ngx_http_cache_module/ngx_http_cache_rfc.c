/*
 * ngx_http_cache_module: HTTP caching semantics (RFC 9111, RFC 5861,
 * RFC 9110 section 13).  See ngx_http_cache_rfc.h for the contract.
 *
 * The rules, with the section each comes from (the unit program
 * t/unit/cache_rfc_test.c has a case for each row):
 *
 *   storing (RFC 9111 3)
 *     1xx, 206, 304                              not stored
 *     method other than GET / HEAD               not stored
 *     request no-store                           not stored
 *     must-understand, status not understood     not stored
 *     must-understand, status understood         no-store ignored (5.2.2.3)
 *     no-store                                   not stored
 *     private (unqualified)                      not stored (shared cache)
 *     private="f" / no-cache="f"                 stored without f
 *     Authorization in the request               stored only with public,
 *                                                s-maxage, must-revalidate
 *                                                (3.5)
 *     Vary: * (or unreadable Vary)               not stored (4.1)
 *     Vary: Accept-Encoding, Content-Encoding    not stored: the variant
 *     other than gzip / identity                 key keeps only "gzip"
 *     Set-Cookie                                 only with store_set_cookie
 *     no freshness source                        not stored
 *   freshness (4.2.1, 4.2.2), first that applies
 *     s-maxage, then max-age                     invalid or repeated: 0
 *     Expires - Date                             invalid ("0") or repeated:
 *                                                0; Date absent: response
 *                                                time
 *     a configured valid time (status, or any)   valid <= 0: not stored
 *     heuristic: 10% of Date - Last-Modified,    statuses 200 203 204 300
 *     capped, when enabled                       301 308 404 405 410 414
 *                                                501, or any with public
 *   age (4.2.3)
 *     apparent_age = max(0, response_time - date_value)
 *     corrected_age_value = age_value + (response_time - request_time)
 *     corrected_initial_age = max(apparent_age, corrected_age_value)
 *   stale (4.2.4, RFC 5861)
 *     must-revalidate, proxy-revalidate,
 *     s-maxage                                   never stale
 *     no-cache                                   validate every use,
 *                                                never stale
 *     stale-while-revalidate, stale-if-error     windows, 0 when forbidden
 *   parsing
 *     HTTP-date (Date, Expires, Last-Modified,   IMF-fixdate, rfc850-date,
 *     If-Modified-Since; RFC 9110 5.6.7)         asctime; "GMT" only
 *     Age                                        first member of the first
 *                                                line
 *     Cache-Control arguments                    token or quoted-string,
 *                                                no space around '='
 */

#include "ngx_http_cache_rfc.h"


#define NGX_HTTP_CACHE_RFC_CC_MAX_AGE        0
#define NGX_HTTP_CACHE_RFC_CC_S_MAXAGE       1
#define NGX_HTTP_CACHE_RFC_CC_SWR            2
#define NGX_HTTP_CACHE_RFC_CC_SIE            3
#define NGX_HTTP_CACHE_RFC_CC_MAX_STALE      4
#define NGX_HTTP_CACHE_RFC_CC_MIN_FRESH      5
#define NGX_HTTP_CACHE_RFC_CC_NO_STORE       6
#define NGX_HTTP_CACHE_RFC_CC_NO_CACHE       7
#define NGX_HTTP_CACHE_RFC_CC_PRIVATE        8
#define NGX_HTTP_CACHE_RFC_CC_PUBLIC         9
#define NGX_HTTP_CACHE_RFC_CC_MUST_REVAL     10
#define NGX_HTTP_CACHE_RFC_CC_PROXY_REVAL    11
#define NGX_HTTP_CACHE_RFC_CC_MUST_UNDERST   12
#define NGX_HTTP_CACHE_RFC_CC_ONLY_IF_CACHED 13
#define NGX_HTTP_CACHE_RFC_CC_NO_TRANSFORM   14
#define NGX_HTTP_CACHE_RFC_CC_IMMUTABLE      15


typedef struct {
    ngx_str_t                    name;
    ngx_uint_t                   id;
} ngx_http_cache_rfc_cc_name_t;


/* one directive as read from a field line */
typedef struct {
    ngx_str_t                    name;
    ngx_str_t                    arg;        /* raw, without quotes */
    unsigned                     has_arg:1;
    unsigned                     quoted:1;
    unsigned                     escaped:1;  /* arg holds \-escapes */
    unsigned                     invalid:1;  /* unterminated, or junk */
} ngx_http_cache_rfc_cc_item_t;


/* per-parse state: which numeric directives were seen already */
typedef struct {
    ngx_uint_t                   seen;
} ngx_http_cache_rfc_cc_state_t;


/* walks a headers list for one field name */
typedef struct {
    ngx_list_part_t             *part;
    ngx_uint_t                   i;
} ngx_http_cache_rfc_hdr_iter_t;


static void ngx_http_cache_rfc_hdr_iter_init(ngx_http_cache_rfc_hdr_iter_t *it,
    ngx_list_t *headers);
static ngx_table_elt_t *ngx_http_cache_rfc_hdr_next(
    ngx_http_cache_rfc_hdr_iter_t *it, const char *name, size_t len);
static ngx_uint_t ngx_http_cache_rfc_is_tchar(u_char c);
static u_char *ngx_http_cache_rfc_skip_ows(u_char *p, u_char *end);
static u_char *ngx_http_cache_rfc_skip_member(u_char *p, u_char *end);
static u_char *ngx_http_cache_rfc_cc_read_item(u_char *p, u_char *end,
    ngx_http_cache_rfc_cc_item_t *item);
static ngx_int_t ngx_http_cache_rfc_cc_parse_value(ngx_pool_t *pool,
    ngx_str_t *value, ngx_http_cache_cc_t *cc,
    ngx_http_cache_rfc_cc_state_t *st);
static ngx_int_t ngx_http_cache_rfc_cc_apply(ngx_pool_t *pool,
    ngx_http_cache_rfc_cc_item_t *item, ngx_http_cache_cc_t *cc,
    ngx_http_cache_rfc_cc_state_t *st);
static int64_t ngx_http_cache_rfc_parse_delta(
    ngx_http_cache_rfc_cc_item_t *item);
static int64_t ngx_http_cache_rfc_parse_delta_str(u_char *p, u_char *end);
static ngx_int_t ngx_http_cache_rfc_cc_fields(ngx_pool_t *pool,
    ngx_http_cache_rfc_cc_item_t *item, ngx_array_t **fields);
static ngx_uint_t ngx_http_cache_rfc_list_has_token(ngx_list_t *headers,
    const char *name, size_t len, const char *token, size_t tlen);
static ngx_uint_t ngx_http_cache_rfc_status_understood(ngx_uint_t status);
static ngx_uint_t ngx_http_cache_rfc_status_heuristic(ngx_uint_t status);
static ngx_uint_t ngx_http_cache_rfc_encoding_gzip_or_identity(
    ngx_list_t *headers);
static time_t ngx_http_cache_rfc_parse_date(u_char *p, size_t len);
static ngx_int_t ngx_http_cache_rfc_digits(u_char *p, ngx_uint_t n);
static ngx_int_t ngx_http_cache_rfc_match_name(u_char *p, size_t len,
    const char **names, ngx_uint_t n);
static ngx_int_t ngx_http_cache_rfc_month(u_char *p);
static ngx_int_t ngx_http_cache_rfc_month_days(ngx_int_t month,
    ngx_int_t year);
static int64_t ngx_http_cache_rfc_days_from_civil(int64_t y, int64_t m,
    int64_t d);
static time_t ngx_http_cache_rfc_header_time(ngx_list_t *headers,
    const char *name, size_t len, ngx_uint_t *count);
static int64_t ngx_http_cache_rfc_freshness(ngx_http_request_t *r,
    ngx_http_cache_rfc_conf_t *conf, ngx_http_cache_cc_t *cc,
    time_t date, ngx_http_cache_policy_t *policy);
static int64_t ngx_http_cache_rfc_initial_age(ngx_http_request_t *r,
    time_t date, int64_t request_time_ms, int64_t response_time_ms);
static ngx_int_t ngx_http_cache_rfc_add_strip(ngx_pool_t *pool,
    ngx_array_t **strip, ngx_array_t *fields);
static ngx_int_t ngx_http_cache_rfc_read_etag(u_char **pp, u_char *end,
    ngx_str_t *opaque);
static ngx_uint_t ngx_http_cache_rfc_etag_match(ngx_str_t *value,
    ngx_str_t *stored);
static ngx_int_t ngx_http_cache_rfc_vary_names(ngx_str_t *vary,
    ngx_str_t *names, ngx_uint_t *n);
static ngx_uint_t ngx_http_cache_rfc_qvalue_positive(u_char *p, u_char *end);
static size_t ngx_http_cache_rfc_vary_value_size(ngx_list_t *headers,
    ngx_str_t *name);
static u_char *ngx_http_cache_rfc_vary_write_value(u_char *p,
    ngx_list_t *headers, ngx_str_t *name);


static ngx_http_cache_rfc_cc_name_t  ngx_http_cache_rfc_cc_names[] = {
    { ngx_string("max-age"), NGX_HTTP_CACHE_RFC_CC_MAX_AGE },
    { ngx_string("s-maxage"), NGX_HTTP_CACHE_RFC_CC_S_MAXAGE },
    { ngx_string("stale-while-revalidate"), NGX_HTTP_CACHE_RFC_CC_SWR },
    { ngx_string("stale-if-error"), NGX_HTTP_CACHE_RFC_CC_SIE },
    { ngx_string("max-stale"), NGX_HTTP_CACHE_RFC_CC_MAX_STALE },
    { ngx_string("min-fresh"), NGX_HTTP_CACHE_RFC_CC_MIN_FRESH },
    { ngx_string("no-store"), NGX_HTTP_CACHE_RFC_CC_NO_STORE },
    { ngx_string("no-cache"), NGX_HTTP_CACHE_RFC_CC_NO_CACHE },
    { ngx_string("private"), NGX_HTTP_CACHE_RFC_CC_PRIVATE },
    { ngx_string("public"), NGX_HTTP_CACHE_RFC_CC_PUBLIC },
    { ngx_string("must-revalidate"), NGX_HTTP_CACHE_RFC_CC_MUST_REVAL },
    { ngx_string("proxy-revalidate"), NGX_HTTP_CACHE_RFC_CC_PROXY_REVAL },
    { ngx_string("must-understand"), NGX_HTTP_CACHE_RFC_CC_MUST_UNDERST },
    { ngx_string("only-if-cached"), NGX_HTTP_CACHE_RFC_CC_ONLY_IF_CACHED },
    { ngx_string("no-transform"), NGX_HTTP_CACHE_RFC_CC_NO_TRANSFORM },
    { ngx_string("immutable"), NGX_HTTP_CACHE_RFC_CC_IMMUTABLE },
    { ngx_null_string, 0 }
};


/* header lists */

static void
ngx_http_cache_rfc_hdr_iter_init(ngx_http_cache_rfc_hdr_iter_t *it,
    ngx_list_t *headers)
{
    it->part = headers ? &headers->part : NULL;
    it->i = 0;
}


static ngx_table_elt_t *
ngx_http_cache_rfc_hdr_next(ngx_http_cache_rfc_hdr_iter_t *it,
    const char *name, size_t len)
{
    ngx_table_elt_t  *h;

    while (it->part) {

        if (it->i >= it->part->nelts) {
            it->part = it->part->next;
            it->i = 0;
            continue;
        }

        h = it->part->elts;
        h += it->i++;

        /* hash 0: a field another module deleted */
        if (h->hash == 0 || h->key.len != len) {
            continue;
        }

        if (ngx_strncasecmp(h->key.data, (u_char *) name, len) == 0) {
            return h;
        }
    }

    return NULL;
}


ngx_table_elt_t *
ngx_http_cache_find_header(ngx_list_t *headers, const char *name, size_t len)
{
    ngx_http_cache_rfc_hdr_iter_t  it;

    ngx_http_cache_rfc_hdr_iter_init(&it, headers);

    return ngx_http_cache_rfc_hdr_next(&it, name, len);
}


/* lexical helpers (RFC 9110 5.6) */

static ngx_uint_t
ngx_http_cache_rfc_is_tchar(u_char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
        || (c >= '0' && c <= '9'))
    {
        return 1;
    }

    switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*':
    case '+': case '-': case '.': case '^': case '_': case '`': case '|':
    case '~':
        return 1;
    }

    return 0;
}


static u_char *
ngx_http_cache_rfc_skip_ows(u_char *p, u_char *end)
{
    while (p < end && (*p == ' ' || *p == '\t')) {
        p++;
    }

    return p;
}


/* to the comma that ends the current list member, quoted strings skipped */
static u_char *
ngx_http_cache_rfc_skip_member(u_char *p, u_char *end)
{
    ngx_uint_t  quoted;

    quoted = 0;

    while (p < end) {

        if (quoted) {
            if (*p == '\\') {
                p++;
                if (p == end) {
                    break;
                }

            } else if (*p == '"') {
                quoted = 0;
            }

        } else if (*p == '"') {
            quoted = 1;

        } else if (*p == ',') {
            break;
        }

        p++;
    }

    return p;
}


/* Cache-Control */

/*
 * One directive: token [ OWS "=" OWS ( token / quoted-string ) ], up to
 * the comma that ends it.  Returns where the next one may start.
 */
static u_char *
ngx_http_cache_rfc_cc_read_item(u_char *p, u_char *end,
    ngx_http_cache_rfc_cc_item_t *item)
{
    u_char  *s;

    ngx_memzero(item, sizeof(ngx_http_cache_rfc_cc_item_t));

    s = p;
    while (p < end && ngx_http_cache_rfc_is_tchar(*p)) {
        p++;
    }

    item->name.data = s;
    item->name.len = p - s;

    if (item->name.len == 0) {
        item->invalid = 1;
        return ngx_http_cache_rfc_skip_member(p, end);
    }

    /* no whitespace around '=' (RFC 9111 5.2): "max-age =5" and
     * "max-age= 5" are invalid */
    if (p < end && *p == '=') {
        item->has_arg = 1;
        p++;

        if (p < end && *p == '"') {
            item->quoted = 1;
            s = ++p;

            for ( ;; ) {
                if (p == end) {
                    /* unterminated quoted string */
                    item->invalid = 1;
                    break;
                }

                if (*p == '"') {
                    break;
                }

                if (*p == '\\') {
                    item->escaped = 1;
                    if (p + 1 == end) {
                        p++;
                        continue;
                    }
                    p++;
                }

                p++;
            }

            item->arg.data = s;
            item->arg.len = p - s;

            if (p < end) {
                p++;   /* the closing quote */
            }

        } else {
            s = p;
            while (p < end && ngx_http_cache_rfc_is_tchar(*p)) {
                p++;
            }

            item->arg.data = s;
            item->arg.len = p - s;
        }
    }

    p = ngx_http_cache_rfc_skip_ows(p, end);

    if (p < end && *p != ',') {
        /* "max-age=10 20", "max-age=1;x", a byte no token may hold */
        item->invalid = 1;
        p = ngx_http_cache_rfc_skip_member(p, end);
    }

    return p;
}


ngx_int_t
ngx_http_cache_cc_parse(ngx_pool_t *pool, ngx_list_t *headers,
    ngx_http_cache_cc_t *cc)
{
    ngx_table_elt_t                *h;
    ngx_http_cache_rfc_cc_state_t   st;
    ngx_http_cache_rfc_hdr_iter_t   it;

    ngx_memzero(cc, sizeof(ngx_http_cache_cc_t));
    cc->max_age = -1;
    cc->s_maxage = -1;
    cc->stale_while_revalidate = -1;
    cc->stale_if_error = -1;
    cc->max_stale = -1;
    cc->min_fresh = -1;

    st.seen = 0;

    ngx_http_cache_rfc_hdr_iter_init(&it, headers);

    while ((h = ngx_http_cache_rfc_hdr_next(&it, "Cache-Control",
                                            sizeof("Cache-Control") - 1)))
    {
        cc->present = 1;

        if (ngx_http_cache_rfc_cc_parse_value(pool, &h->value, cc, &st)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_cache_rfc_cc_parse_value(ngx_pool_t *pool, ngx_str_t *value,
    ngx_http_cache_cc_t *cc, ngx_http_cache_rfc_cc_state_t *st)
{
    u_char                        *p, *end;
    ngx_http_cache_rfc_cc_item_t   item;

    p = value->data;
    end = p + value->len;

    for ( ;; ) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ',')) {
            p++;
        }

        if (p == end) {
            return NGX_OK;
        }

        p = ngx_http_cache_rfc_cc_read_item(p, end, &item);

        if (item.name.len == 0) {
            continue;
        }

        if (ngx_http_cache_rfc_cc_apply(pool, &item, cc, st) != NGX_OK) {
            return NGX_ERROR;
        }
    }
}


static ngx_int_t
ngx_http_cache_rfc_cc_apply(ngx_pool_t *pool,
    ngx_http_cache_rfc_cc_item_t *item, ngx_http_cache_cc_t *cc,
    ngx_http_cache_rfc_cc_state_t *st)
{
    int64_t                        v;
    ngx_int_t                      rc;
    ngx_uint_t                     id, seen;
    ngx_http_cache_rfc_cc_name_t  *n;

    for (n = ngx_http_cache_rfc_cc_names; n->name.len; n++) {
        if (n->name.len == item->name.len
            && ngx_strncasecmp(n->name.data, item->name.data, item->name.len)
               == 0)
        {
            break;
        }
    }

    if (n->name.len == 0) {
        return NGX_OK;   /* an extension: ignored (RFC 9111 5.2.3) */
    }

    id = n->id;
    seen = st->seen & ((ngx_uint_t) 1 << id);
    st->seen |= (ngx_uint_t) 1 << id;

    switch (id) {

    case NGX_HTTP_CACHE_RFC_CC_MAX_AGE:
    case NGX_HTTP_CACHE_RFC_CC_S_MAXAGE:
        /* invalid or repeated: stale (RFC 9111 4.2.1) */
        v = ngx_http_cache_rfc_parse_delta(item);
        if (v < 0 || seen) {
            v = 0;
        }

        if (id == NGX_HTTP_CACHE_RFC_CC_MAX_AGE) {
            cc->max_age = v;
        } else {
            cc->s_maxage = v;
        }

        return NGX_OK;

    case NGX_HTTP_CACHE_RFC_CC_SWR:
        v = ngx_http_cache_rfc_parse_delta(item);
        if (v >= 0
            && (cc->stale_while_revalidate < 0
                || v < cc->stale_while_revalidate))
        {
            cc->stale_while_revalidate = v;
        }
        return NGX_OK;

    case NGX_HTTP_CACHE_RFC_CC_SIE:
        v = ngx_http_cache_rfc_parse_delta(item);
        if (v >= 0 && (cc->stale_if_error < 0 || v < cc->stale_if_error)) {
            cc->stale_if_error = v;
        }
        return NGX_OK;

    case NGX_HTTP_CACHE_RFC_CC_MAX_STALE:
        v = item->has_arg ? ngx_http_cache_rfc_parse_delta(item) : INT64_MAX;
        if (v >= 0 && (cc->max_stale < 0 || v < cc->max_stale)) {
            cc->max_stale = v;
        }
        return NGX_OK;

    case NGX_HTTP_CACHE_RFC_CC_MIN_FRESH:
        v = ngx_http_cache_rfc_parse_delta(item);
        if (v > cc->min_fresh) {
            cc->min_fresh = v;
        }
        return NGX_OK;

    case NGX_HTTP_CACHE_RFC_CC_NO_STORE:
        cc->no_store = 1;
        return NGX_OK;

    case NGX_HTTP_CACHE_RFC_CC_NO_CACHE:
        rc = item->has_arg
             ? ngx_http_cache_rfc_cc_fields(pool, item, &cc->no_cache_fields)
             : NGX_DECLINED;
        if (rc == NGX_DECLINED) {
            cc->no_cache = 1;
            return NGX_OK;
        }
        return rc;

    case NGX_HTTP_CACHE_RFC_CC_PRIVATE:
        rc = item->has_arg
             ? ngx_http_cache_rfc_cc_fields(pool, item, &cc->private_fields)
             : NGX_DECLINED;
        if (rc == NGX_DECLINED) {
            cc->private_ = 1;
            return NGX_OK;
        }
        return rc;

    case NGX_HTTP_CACHE_RFC_CC_PUBLIC:
        cc->public_ = 1;
        return NGX_OK;

    case NGX_HTTP_CACHE_RFC_CC_MUST_REVAL:
        cc->must_revalidate = 1;
        return NGX_OK;

    case NGX_HTTP_CACHE_RFC_CC_PROXY_REVAL:
        cc->proxy_revalidate = 1;
        return NGX_OK;

    case NGX_HTTP_CACHE_RFC_CC_MUST_UNDERST:
        cc->must_understand = 1;
        return NGX_OK;

    case NGX_HTTP_CACHE_RFC_CC_ONLY_IF_CACHED:
        cc->only_if_cached = 1;
        return NGX_OK;

    case NGX_HTTP_CACHE_RFC_CC_NO_TRANSFORM:
        cc->no_transform = 1;
        return NGX_OK;

    default: /* NGX_HTTP_CACHE_RFC_CC_IMMUTABLE */
        cc->immutable = 1;
        return NGX_OK;
    }
}


/* a directive's delta-seconds argument, or -1 when it has none valid */
static int64_t
ngx_http_cache_rfc_parse_delta(ngx_http_cache_rfc_cc_item_t *item)
{
    if (!item->has_arg || item->invalid || item->escaped) {
        return -1;
    }

    return ngx_http_cache_rfc_parse_delta_str(item->arg.data,
                                              item->arg.data + item->arg.len);
}


/* 1*DIGIT, clamped to 2^31 however many digits follow; -1 if not that */
static int64_t
ngx_http_cache_rfc_parse_delta_str(u_char *p, u_char *end)
{
    int64_t  v;

    if (p == end) {
        return -1;
    }

    v = 0;

    for ( /* void */ ; p < end; p++) {
        if (*p < '0' || *p > '9') {
            return -1;
        }

        if (v < NGX_HTTP_CACHE_DELTA_MAX) {
            v = v * 10 + (*p - '0');
        }
    }

    return ngx_min(v, NGX_HTTP_CACHE_DELTA_MAX);
}


/*
 * The field names of a qualified no-cache or private, appended to *fields.
 * NGX_DECLINED when the argument is not a list of tokens (or is an empty
 * token): the caller then takes the directive as unqualified, the most
 * restrictive reading.  Names point into the field value (or into an
 * unescaped copy in the pool).
 */
static ngx_int_t
ngx_http_cache_rfc_cc_fields(ngx_pool_t *pool,
    ngx_http_cache_rfc_cc_item_t *item, ngx_array_t **fields)
{
    u_char      *p, *end, *s, *d;
    ngx_str_t   *f, arg;
    ngx_uint_t   nelts;

    arg = item->arg;
    nelts = *fields ? (*fields)->nelts : 0;

    if (item->invalid || (!item->quoted && arg.len == 0)) {
        return NGX_DECLINED;
    }

    if (item->escaped) {
        /* unescape into a copy: "\x" is x */
        d = ngx_pnalloc(pool, arg.len);
        if (d == NULL) {
            return NGX_ERROR;
        }

        s = d;
        p = arg.data;
        end = p + arg.len;

        while (p < end) {
            if (*p == '\\' && p + 1 < end) {
                p++;
            }
            *d++ = *p++;
        }

        arg.data = s;
        arg.len = d - s;
    }

    p = arg.data;
    end = p + arg.len;

    for ( ;; ) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ',')) {
            p++;
        }

        if (p == end) {
            return NGX_OK;
        }

        s = p;
        while (p < end && ngx_http_cache_rfc_is_tchar(*p)) {
            p++;
        }

        if (p == s) {
            goto unqualified;
        }

        if (*fields == NULL) {
            *fields = ngx_array_create(pool, 4, sizeof(ngx_str_t));
            if (*fields == NULL) {
                return NGX_ERROR;
            }
        }

        f = ngx_array_push(*fields);
        if (f == NULL) {
            return NGX_ERROR;
        }

        f->data = s;
        f->len = p - s;

        p = ngx_http_cache_rfc_skip_ows(p, end);

        if (p < end && *p != ',') {
            goto unqualified;
        }
    }

unqualified:

    /* the names taken before the bad one go too */
    if (*fields) {
        (*fields)->nelts = nelts;
    }

    return NGX_DECLINED;
}


ngx_int_t
ngx_http_cache_request_cc(ngx_http_request_t *r, ngx_http_cache_cc_t *cc)
{
    if (ngx_http_cache_cc_parse(r->pool, &r->headers_in.headers, cc)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* Pragma: no-cache counts only without Cache-Control (RFC 9111 5.4) */
    if (!cc->present
        && ngx_http_cache_rfc_list_has_token(&r->headers_in.headers,
                                             "Pragma", sizeof("Pragma") - 1,
                                             "no-cache",
                                             sizeof("no-cache") - 1))
    {
        cc->no_cache = 1;
    }

    return NGX_OK;
}


/* does a comma list in any line of the field hold this token? */
static ngx_uint_t
ngx_http_cache_rfc_list_has_token(ngx_list_t *headers, const char *name,
    size_t len, const char *token, size_t tlen)
{
    u_char                         *p, *end, *s;
    ngx_table_elt_t                *h;
    ngx_http_cache_rfc_hdr_iter_t   it;

    ngx_http_cache_rfc_hdr_iter_init(&it, headers);

    while ((h = ngx_http_cache_rfc_hdr_next(&it, name, len))) {
        p = h->value.data;
        end = p + h->value.len;

        while (p < end) {
            while (p < end && (*p == ' ' || *p == '\t' || *p == ',')) {
                p++;
            }

            s = p;
            while (p < end && ngx_http_cache_rfc_is_tchar(*p)) {
                p++;
            }

            if ((size_t) (p - s) == tlen
                && ngx_strncasecmp(s, (u_char *) token, tlen) == 0)
            {
                p = ngx_http_cache_rfc_skip_ows(p, end);
                if (p == end || *p == ',' || *p == '=') {
                    return 1;
                }
            }

            p = ngx_http_cache_rfc_skip_member(p, end);
        }
    }

    return 0;
}


/* storing */

/* the statuses whose semantics this cache implements (for must-understand) */
static ngx_uint_t
ngx_http_cache_rfc_status_understood(ngx_uint_t status)
{
    switch (status) {
    case 200: case 203: case 204:
    case 300: case 301: case 302: case 303: case 307: case 308:
    case 400: case 403: case 404: case 405: case 410: case 414: case 451:
    case 500: case 501: case 502: case 503: case 504:
        return 1;
    }

    return 0;
}


/* "heuristically cacheable" statuses (RFC 9110 15.1), 206 aside: ranges
 * are not stored */
static ngx_uint_t
ngx_http_cache_rfc_status_heuristic(ngx_uint_t status)
{
    switch (status) {
    case 200: case 203: case 204:
    case 300: case 301: case 308:
    case 404: case 405: case 410: case 414:
    case 501:
        return 1;
    }

    return 0;
}


/* is every coding of Content-Encoding (if any) gzip, x-gzip or identity? */
static ngx_uint_t
ngx_http_cache_rfc_encoding_gzip_or_identity(ngx_list_t *headers)
{
    u_char                         *p, *end, *s;
    size_t                          len;
    ngx_table_elt_t                *h;
    ngx_http_cache_rfc_hdr_iter_t   it;

    ngx_http_cache_rfc_hdr_iter_init(&it, headers);

    while ((h = ngx_http_cache_rfc_hdr_next(&it, "Content-Encoding",
                                            sizeof("Content-Encoding") - 1)))
    {
        p = h->value.data;
        end = p + h->value.len;

        for ( ;; ) {
            while (p < end && (*p == ' ' || *p == '\t' || *p == ',')) {
                p++;
            }

            if (p == end) {
                break;
            }

            s = p;
            while (p < end && ngx_http_cache_rfc_is_tchar(*p)) {
                p++;
            }

            len = p - s;
            p = ngx_http_cache_rfc_skip_ows(p, end);

            if (p < end && *p != ',') {
                return 0;
            }

            if (!((len == 4 && ngx_strncasecmp(s, (u_char *) "gzip", 4) == 0)
                  || (len == 6
                      && ngx_strncasecmp(s, (u_char *) "x-gzip", 6) == 0)
                  || (len == 8
                      && ngx_strncasecmp(s, (u_char *) "identity", 8) == 0)))
            {
                return 0;
            }
        }
    }

    return 1;
}


/* a date field in seconds: NGX_ERROR when absent or invalid; *count: how
 * many lines of it there are */
static time_t
ngx_http_cache_rfc_header_time(ngx_list_t *headers, const char *name,
    size_t len, ngx_uint_t *count)
{
    time_t                          t;
    ngx_table_elt_t                *h, *first;
    ngx_http_cache_rfc_hdr_iter_t   it;

    *count = 0;
    first = NULL;

    ngx_http_cache_rfc_hdr_iter_init(&it, headers);

    while ((h = ngx_http_cache_rfc_hdr_next(&it, name, len))) {
        if (first == NULL) {
            first = h;
        }
        (*count)++;
    }

    if (first == NULL || first->value.len == 0) {
        return NGX_ERROR;
    }

    t = ngx_http_cache_rfc_parse_date(first->value.data, first->value.len);

    return t;
}


/*
 * HTTP-date (RFC 9110 5.6.7), all three forms, strictly: nginx's
 * ngx_parse_http_time() accepts any zone name and trailing bytes, and an
 * Expires in "UTC" or "+0100" must count as invalid (already expired).
 * Names are compared case-insensitively.
 *
 *   IMF-fixdate  Sun, 06 Nov 1994 08:49:37 GMT
 *   rfc850-date  Sunday, 06-Nov-94 08:49:37 GMT   (years 70-99: 19xx)
 *   asctime      Sun Nov  6 08:49:37 1994
 *
 * Dates before 1970 give 0; NGX_ERROR when invalid.
 */
static time_t
ngx_http_cache_rfc_parse_date(u_char *p, size_t len)
{
    u_char      *end;
    int64_t      t;
    ngx_int_t    day, month, year, hour, min, sec;
    ngx_uint_t   i;

    static const char  *wdays[] = { "Mon", "Tue", "Wed", "Thu", "Fri",
                                    "Sat", "Sun" };
    static const char  *long_wdays[] = { "Monday", "Tuesday", "Wednesday",
                                         "Thursday", "Friday", "Saturday",
                                         "Sunday" };

    end = p + len;

    if (len == 29 && p[3] == ',') {
        /* IMF-fixdate */
        if (ngx_http_cache_rfc_match_name(p, 3, wdays, 7) < 0
            || p[4] != ' ' || p[7] != ' ' || p[11] != ' ' || p[16] != ' '
            || p[25] != ' ' || ngx_strncasecmp(p + 26, (u_char *) "GMT", 3))
        {
            return NGX_ERROR;
        }

        day = ngx_http_cache_rfc_digits(p + 5, 2);
        month = ngx_http_cache_rfc_month(p + 8);
        year = ngx_http_cache_rfc_digits(p + 12, 4);
        p += 17;

    } else if (len == 24 && p[3] == ' ') {
        /* asctime: the day may be " 6" */
        if (ngx_http_cache_rfc_match_name(p, 3, wdays, 7) < 0
            || p[7] != ' ' || p[10] != ' ' || p[19] != ' ')
        {
            return NGX_ERROR;
        }

        month = ngx_http_cache_rfc_month(p + 4);
        day = (p[8] == ' ') ? ngx_http_cache_rfc_digits(p + 9, 1)
                            : ngx_http_cache_rfc_digits(p + 8, 2);
        year = ngx_http_cache_rfc_digits(p + 20, 4);
        p += 11;

    } else {
        /* rfc850-date */
        for (i = 0; i < len && p[i] != ','; i++) { /* void */ }

        if (i == len || ngx_http_cache_rfc_match_name(p, i, long_wdays, 7) < 0
            || len - i != 24)
        {
            return NGX_ERROR;
        }

        p += i + 1;

        if (p[0] != ' ' || p[3] != '-' || p[7] != '-' || p[10] != ' '
            || p[19] != ' ' || ngx_strncasecmp(p + 20, (u_char *) "GMT", 3))
        {
            return NGX_ERROR;
        }

        day = ngx_http_cache_rfc_digits(p + 1, 2);
        month = ngx_http_cache_rfc_month(p + 4);
        year = ngx_http_cache_rfc_digits(p + 8, 2);
        if (year >= 0) {
            year += (year < 70) ? 2000 : 1900;
        }
        p += 11;
    }

    /* p: "hh:mm:ss" */
    if (end - p < 8 || p[2] != ':' || p[5] != ':') {
        return NGX_ERROR;
    }

    hour = ngx_http_cache_rfc_digits(p, 2);
    min = ngx_http_cache_rfc_digits(p + 3, 2);
    sec = ngx_http_cache_rfc_digits(p + 6, 2);

    if (day < 1 || month < 0 || year < 0 || hour < 0 || hour > 23
        || min < 0 || min > 59 || sec < 0 || sec > 60
        || day > ngx_http_cache_rfc_month_days(month, year))
    {
        return NGX_ERROR;
    }

    t = ngx_http_cache_rfc_days_from_civil(year, month + 1, day) * 86400
        + hour * 3600 + min * 60 + sec;

    if (t < 0) {
        return 0;
    }

    if (sizeof(time_t) <= 4 && t > NGX_MAX_INT32_VALUE) {
        return NGX_ERROR;
    }

    return (time_t) t;
}


/* n decimal digits, or -1 */
static ngx_int_t
ngx_http_cache_rfc_digits(u_char *p, ngx_uint_t n)
{
    ngx_int_t  v;

    for (v = 0; n; n--, p++) {
        if (*p < '0' || *p > '9') {
            return -1;
        }

        v = v * 10 + (*p - '0');
    }

    return v;
}


/* the index of the name p[0..len) in names (case-insensitive), or -1 */
static ngx_int_t
ngx_http_cache_rfc_match_name(u_char *p, size_t len, const char **names,
    ngx_uint_t n)
{
    ngx_uint_t  i;

    for (i = 0; i < n; i++) {
        if (ngx_strlen(names[i]) == len
            && ngx_strncasecmp(p, (u_char *) names[i], len) == 0)
        {
            return i;
        }
    }

    return -1;
}


/* "Jan".."Dec" at p (3 bytes) as 0..11, or -1 */
static ngx_int_t
ngx_http_cache_rfc_month(u_char *p)
{
    static const char  *months[] = { "Jan", "Feb", "Mar", "Apr", "May",
                                     "Jun", "Jul", "Aug", "Sep", "Oct",
                                     "Nov", "Dec" };

    return ngx_http_cache_rfc_match_name(p, 3, months, 12);
}


static ngx_int_t
ngx_http_cache_rfc_month_days(ngx_int_t month, ngx_int_t year)
{
    static const ngx_int_t  days[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30,
                                       31, 30, 31 };

    if (month == 1
        && (year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)))
    {
        return 29;
    }

    return days[month];
}


/*
 * Days since 1970-01-01 of a proleptic Gregorian date (month 1..12), by
 * counting in 400-year eras that begin on March 1st.
 */
static int64_t
ngx_http_cache_rfc_days_from_civil(int64_t y, int64_t m, int64_t d)
{
    int64_t  era, yoe, doy, doe;

    y -= (m <= 2);
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

    return era * 146097 + doe - 719468;
}


ngx_int_t
ngx_http_cache_response_policy(ngx_http_request_t *r,
    ngx_http_cache_rfc_conf_t *conf, int64_t request_time_ms,
    int64_t response_time_ms, ngx_http_cache_policy_t *policy)
{
    time_t                date;
    int64_t               fresh;
    ngx_str_t             vary, names[NGX_HTTP_CACHE_VARY_MAX_FIELDS];
    ngx_uint_t            status, understood, i, n;
    ngx_list_t           *out;
    ngx_http_cache_cc_t   req, cc;

    ngx_memzero(policy, sizeof(ngx_http_cache_policy_t));

    status = r->headers_out.status;
    out = &r->headers_out.headers;

    if (status < 200) {
        policy->reason = "informational status";
        return NGX_OK;
    }

    if (status == 206) {
        policy->reason = "partial content";
        return NGX_OK;
    }

    if (status == 304) {
        policy->reason = "not modified";
        return NGX_OK;
    }

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        policy->reason = "method";
        return NGX_OK;
    }

    if (ngx_http_cache_cc_parse(r->pool, &r->headers_in.headers, &req)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (req.no_store) {
        policy->reason = "request no-store";
        return NGX_OK;
    }

    if (ngx_http_cache_cc_parse(r->pool, out, &cc) != NGX_OK) {
        return NGX_ERROR;
    }

    understood = ngx_http_cache_rfc_status_understood(status);

    if (cc.must_understand && !understood) {
        policy->reason = "must-understand, status not understood";
        return NGX_OK;
    }

    /* must-understand with an understood status overrides no-store */
    if (cc.no_store && !(cc.must_understand && understood)) {
        policy->reason = "no-store";
        return NGX_OK;
    }

    if (cc.private_ && conf->ignore_private != 1) {
        policy->reason = "private";
        return NGX_OK;
    }

    if (ngx_http_cache_find_header(&r->headers_in.headers, "Authorization",
                                   sizeof("Authorization") - 1)
        && !cc.public_ && cc.s_maxage < 0 && !cc.must_revalidate)
    {
        policy->reason = "authorization";
        return NGX_OK;
    }

    if (ngx_http_cache_response_vary(r, &vary) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_http_cache_rfc_vary_names(&vary, names, &n) != NGX_OK) {
        policy->reason = "vary";
        return NGX_OK;
    }

    /*
     * Accept-Encoding is normalised to "gzip" or "" (the module stores
     * gzip and serves both): a body the origin encoded otherwise (br,
     * zstd, ...) under such a key would reach clients that cannot decode
     * it
     */
    for (i = 0; i < n; i++) {
        if (names[i].len == sizeof("Accept-Encoding") - 1
            && ngx_strncasecmp(names[i].data, (u_char *) "Accept-Encoding",
                               names[i].len) == 0
            && !ngx_http_cache_rfc_encoding_gzip_or_identity(out))
        {
            policy->reason = "content-encoding other than gzip";
            return NGX_OK;
        }
    }

    if (conf->store_set_cookie != 1
        && ngx_http_cache_find_header(out, "Set-Cookie",
                                      sizeof("Set-Cookie") - 1))
    {
        policy->reason = "set-cookie";
        return NGX_OK;
    }

    /* Date absent or invalid: the time the response arrived (RFC 9110
     * 6.6.1) */
    date = ngx_http_cache_rfc_header_time(out, "Date", sizeof("Date") - 1, &n);

    if (date == NGX_ERROR && n == 0 && r->upstream
        && r->upstream->headers_in.date)
    {
        /* the origin's Date, which nginx's proxy hides from
         * r->headers_out by default (and sends its own) */
        date = ngx_http_cache_rfc_parse_date(
                   r->upstream->headers_in.date->value.data,
                   r->upstream->headers_in.date->value.len);
    }

    if (date == NGX_ERROR) {
        date = (time_t) (response_time_ms / 1000);
    }

    policy->date = date;

    fresh = ngx_http_cache_rfc_freshness(r, conf, &cc, date, policy);
    if (fresh < 0) {
        return NGX_OK;
    }

    policy->fresh_ms = fresh * 1000;
    policy->initial_age_ms = ngx_http_cache_rfc_initial_age(r, date,
                                                            request_time_ms,
                                                            response_time_ms);

    /* no-cache forbids stale use as the *-revalidate family does (RFC
     * 9111 4.2.4): a caller checking must_revalidate alone before serving
     * stale on an error must not serve it either */
    policy->revalidate = cc.no_cache;
    policy->must_revalidate = cc.must_revalidate || cc.proxy_revalidate
                              || cc.s_maxage >= 0 || cc.no_cache;

    /* serving stale is forbidden by no-cache and the *-revalidate family
     * (RFC 9111 4.2.4) */
    if (!policy->revalidate && !policy->must_revalidate) {
        if (cc.stale_while_revalidate > 0) {
            policy->swr_ms = cc.stale_while_revalidate * 1000;
        }

        if (cc.stale_if_error > 0) {
            policy->sie_ms = cc.stale_if_error * 1000;
        }
    }

    if (ngx_http_cache_rfc_add_strip(r->pool, &policy->strip,
                                     cc.no_cache_fields)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (conf->ignore_private != 1
        && ngx_http_cache_rfc_add_strip(r->pool, &policy->strip,
                                        cc.private_fields)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    policy->storable = 1;

    return NGX_OK;
}


/*
 * The freshness lifetime in seconds (RFC 9111 4.2.1, 4.2.2), or -1 with
 * policy->reason set when the response has none the module may use.
 */
static int64_t
ngx_http_cache_rfc_freshness(ngx_http_request_t *r,
    ngx_http_cache_rfc_conf_t *conf, ngx_http_cache_cc_t *cc, time_t date,
    ngx_http_cache_policy_t *policy)
{
    time_t                   expires, lm;
    int64_t                  fresh;
    ngx_uint_t               i, n, status;
    ngx_http_cache_valid_t  *valid, *any;

    if (cc->s_maxage >= 0) {
        policy->explicit_ = 1;
        return cc->s_maxage;
    }

    if (cc->max_age >= 0) {
        policy->explicit_ = 1;
        return cc->max_age;
    }

    expires = ngx_http_cache_rfc_header_time(&r->headers_out.headers,
                                             "Expires", sizeof("Expires") - 1,
                                             &n);
    if (n > 0) {
        policy->explicit_ = 1;

        /* invalid ("0") means expired (RFC 9111 5.3); two lines: stale */
        if (expires == NGX_ERROR || n > 1 || expires <= date) {
            return 0;
        }

        return ngx_min((int64_t) expires - date, NGX_HTTP_CACHE_DELTA_MAX);
    }

    status = r->headers_out.status;

    if (conf->valid != NULL && conf->valid != NGX_CONF_UNSET_PTR) {
        valid = conf->valid->elts;
        any = NULL;

        for (i = 0; i < conf->valid->nelts; i++) {
            if (valid[i].status == status) {
                break;
            }

            if (valid[i].status == 0 && any == NULL) {
                any = &valid[i];
            }
        }

        if (i < conf->valid->nelts) {
            any = &valid[i];
        }

        if (any) {
            if (any->valid <= 0) {
                policy->reason = "valid 0";
                return -1;
            }

            return ngx_min((int64_t) any->valid, NGX_HTTP_CACHE_DELTA_MAX);
        }
    }

    if (conf->heuristic == 1
        && (ngx_http_cache_rfc_status_heuristic(status) || cc->public_))
    {
        lm = r->headers_out.last_modified_time;

        if (lm == -1) {
            lm = ngx_http_cache_rfc_header_time(&r->headers_out.headers,
                                                "Last-Modified",
                                                sizeof("Last-Modified") - 1,
                                                &n);
        }

        if (lm != NGX_ERROR) {
            fresh = (date > lm) ? ((int64_t) date - lm) / 10 : 0;

            if (conf->heuristic_max > 0) {
                fresh = ngx_min(fresh, (int64_t) conf->heuristic_max);
            }

            return ngx_min(fresh, NGX_HTTP_CACHE_DELTA_MAX);
        }
    }

    policy->reason = "no freshness information";

    return -1;
}


/* corrected_initial_age, RFC 9111 4.2.3, in ms */
static int64_t
ngx_http_cache_rfc_initial_age(ngx_http_request_t *r, time_t date,
    int64_t request_time_ms, int64_t response_time_ms)
{
    u_char           *p, *e, *end;
    int64_t           apparent, delay, age;
    ngx_table_elt_t  *h;

    age = 0;

    h = ngx_http_cache_find_header(&r->headers_out.headers, "Age",
                                   sizeof("Age") - 1);
    if (h) {
        /* the first member of the first line ("Age: 7200, 0" is 7200); an
         * invalid one is ignored; a huge one is 2^31 */
        p = h->value.data;
        end = p + h->value.len;

        for (e = p; e < end && *e != ','; e++) { /* void */ }

        p = ngx_http_cache_rfc_skip_ows(p, e);
        while (e > p && (e[-1] == ' ' || e[-1] == '\t')) {
            e--;
        }

        age = ngx_http_cache_rfc_parse_delta_str(p, e);
        if (age < 0) {
            age = 0;
        }
    }

    apparent = response_time_ms - (int64_t) date * 1000;
    if (apparent < 0) {
        apparent = 0;
    }

    delay = response_time_ms - request_time_ms;
    if (delay < 0) {
        delay = 0;
    }

    age = age * 1000 + delay;

    return ngx_max(apparent, age);
}


static ngx_int_t
ngx_http_cache_rfc_add_strip(ngx_pool_t *pool, ngx_array_t **strip,
    ngx_array_t *fields)
{
    ngx_str_t   *f, *s;
    ngx_uint_t   i;

    if (fields == NULL || fields->nelts == 0) {
        return NGX_OK;
    }

    if (*strip == NULL) {
        *strip = ngx_array_create(pool, fields->nelts, sizeof(ngx_str_t));
        if (*strip == NULL) {
            return NGX_ERROR;
        }
    }

    f = fields->elts;

    for (i = 0; i < fields->nelts; i++) {
        s = ngx_array_push(*strip);
        if (s == NULL) {
            return NGX_ERROR;
        }

        *s = f[i];
    }

    return NGX_OK;
}


/* using a stored response */

ngx_int_t
ngx_http_cache_request_allows(ngx_http_request_t *r, int64_t current_age_ms,
    int64_t fresh_ms, ngx_flag_t must_revalidate)
{
    int64_t              stale_ms;
    ngx_http_cache_cc_t  cc;

    if (ngx_http_cache_request_cc(r, &cc) != NGX_OK) {
        /* out of memory: the safe answer */
        return NGX_HTTP_CACHE_REVALIDATE;
    }

    if (cc.no_store) {
        return NGX_HTTP_CACHE_REQ_BYPASS;
    }

    if (cc.no_cache) {
        return NGX_HTTP_CACHE_REVALIDATE;
    }

    /* both come from a stored entry: bounded before any arithmetic */
    current_age_ms = ngx_max(current_age_ms, 0);
    fresh_ms = ngx_max(fresh_ms, 0);
    fresh_ms = ngx_min(fresh_ms, NGX_HTTP_CACHE_DELTA_MAX * 1000);

    /* max-age compares with the age in whole seconds, as the Age field
     * shows it; max-age=0 always revalidates (a reload) */
    if (cc.max_age == 0
        || (cc.max_age > 0 && current_age_ms / 1000 > cc.max_age))
    {
        return NGX_HTTP_CACHE_REVALIDATE;
    }

    if (current_age_ms < fresh_ms) {

        if (cc.min_fresh > 0
            && fresh_ms - current_age_ms < cc.min_fresh * 1000)
        {
            return NGX_HTTP_CACHE_REVALIDATE;
        }

        return NGX_HTTP_CACHE_USE_FRESH;
    }

    if (must_revalidate || cc.max_stale < 0) {
        return NGX_HTTP_CACHE_REVALIDATE;
    }

    stale_ms = current_age_ms - fresh_ms;

    if (cc.max_stale == INT64_MAX || stale_ms <= cc.max_stale * 1000) {
        return NGX_HTTP_CACHE_USE_STALE_OK;
    }

    return NGX_HTTP_CACHE_REVALIDATE;
}


/* conditional requests */

/*
 * entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE (RFC 9110 8.8.3); *opaque:
 * the bytes between the quotes.  NGX_ERROR when *pp does not start one.
 */
static ngx_int_t
ngx_http_cache_rfc_read_etag(u_char **pp, u_char *end, ngx_str_t *opaque)
{
    u_char  *p, *s;

    p = *pp;

    if (end - p >= 2 && p[0] == 'W' && p[1] == '/') {
        p += 2;
    }

    if (p == end || *p != '"') {
        return NGX_ERROR;
    }

    s = ++p;

    while (p < end && *p != '"') {
        p++;
    }

    if (p == end) {
        return NGX_ERROR;
    }

    opaque->data = s;
    opaque->len = p - s;

    *pp = p + 1;

    return NGX_OK;
}


/* weak comparison of an If-None-Match value with the stored ETag */
static ngx_uint_t
ngx_http_cache_rfc_etag_match(ngx_str_t *value, ngx_str_t *stored)
{
    u_char     *p, *end;
    ngx_str_t   want, tag;

    want.len = 0;
    want.data = NULL;

    if (stored && stored->len) {
        p = stored->data;
        end = p + stored->len;

        p = ngx_http_cache_rfc_skip_ows(p, end);

        if (ngx_http_cache_rfc_read_etag(&p, end, &want) != NGX_OK) {
            want.data = NULL;
        }
    }

    p = value->data;
    end = p + value->len;

    for ( ;; ) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ',')) {
            p++;
        }

        if (p == end) {
            return 0;
        }

        if (*p == '*') {
            return 1;
        }

        if (ngx_http_cache_rfc_read_etag(&p, end, &tag) != NGX_OK) {
            /* not a list of entity-tags: nothing in it matches */
            return 0;
        }

        if (want.data && tag.len == want.len
            && ngx_memcmp(tag.data, want.data, tag.len) == 0)
        {
            return 1;
        }

        p = ngx_http_cache_rfc_skip_ows(p, end);

        if (p < end && *p != ',') {
            return 0;
        }
    }
}


ngx_int_t
ngx_http_cache_not_modified(ngx_http_request_t *r, ngx_str_t *etag,
    time_t last_modified, time_t date)
{
    time_t                          ims, t;
    ngx_uint_t                      n, inm;
    ngx_table_elt_t                *h;
    ngx_http_cache_rfc_hdr_iter_t   it;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return 0;
    }

    inm = 0;
    ngx_http_cache_rfc_hdr_iter_init(&it, &r->headers_in.headers);

    while ((h = ngx_http_cache_rfc_hdr_next(&it, "If-None-Match",
                                            sizeof("If-None-Match") - 1)))
    {
        inm = 1;

        if (ngx_http_cache_rfc_etag_match(&h->value, etag)) {
            return 1;
        }
    }

    if (inm) {
        /* If-None-Match decides; If-Modified-Since is ignored */
        return 0;
    }

    ims = ngx_http_cache_rfc_header_time(&r->headers_in.headers,
                                         "If-Modified-Since",
                                         sizeof("If-Modified-Since") - 1, &n);

    /* invalid, or more than one: ignored (RFC 9110 13.1.3) */
    if (ims == NGX_ERROR || n != 1) {
        return 0;
    }

    t = (last_modified != -1) ? last_modified : date;

    if (t == -1 || t == NGX_ERROR) {
        return 0;
    }

    return t <= ims;
}


/* Vary */

/*
 * The field names of a Vary value, in order, duplicates dropped; names
 * point into vary.  NGX_DECLINED for "*", a member that is not a token, or
 * too many names.
 */
static ngx_int_t
ngx_http_cache_rfc_vary_names(ngx_str_t *vary, ngx_str_t *names, ngx_uint_t *n)
{
    u_char      *p, *end, *s;
    size_t       len;
    ngx_uint_t   i;

    *n = 0;

    p = vary->data;
    end = p + vary->len;

    for ( ;; ) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ',')) {
            p++;
        }

        if (p == end) {
            return NGX_OK;
        }

        s = p;
        while (p < end && ngx_http_cache_rfc_is_tchar(*p)) {
            p++;
        }

        len = p - s;

        p = ngx_http_cache_rfc_skip_ows(p, end);

        if (len == 0 || (p < end && *p != ',')
            || (len == 1 && s[0] == '*'))
        {
            return NGX_DECLINED;
        }

        for (i = 0; i < *n; i++) {
            if (names[i].len == len
                && ngx_strncasecmp(names[i].data, s, len) == 0)
            {
                break;
            }
        }

        if (i < *n) {
            continue;
        }

        if (*n == NGX_HTTP_CACHE_VARY_MAX_FIELDS) {
            return NGX_DECLINED;
        }

        names[*n].data = s;
        names[*n].len = len;
        (*n)++;
    }
}


ngx_int_t
ngx_http_cache_response_vary(ngx_http_request_t *r, ngx_str_t *vary)
{
    u_char                         *p;
    size_t                          len;
    ngx_uint_t                      n;
    ngx_table_elt_t                *h, *first;
    ngx_http_cache_rfc_hdr_iter_t   it;

    n = 0;
    len = 0;
    first = NULL;

    ngx_http_cache_rfc_hdr_iter_init(&it, &r->headers_out.headers);

    while ((h = ngx_http_cache_rfc_hdr_next(&it, "Vary",
                                            sizeof("Vary") - 1)))
    {
        if (first == NULL) {
            first = h;
        }

        len += h->value.len + 1;
        n++;
    }

    if (n == 0) {
        ngx_str_null(vary);
        return NGX_OK;
    }

    if (n == 1) {
        *vary = first->value;
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    vary->data = p;

    ngx_http_cache_rfc_hdr_iter_init(&it, &r->headers_out.headers);

    while ((h = ngx_http_cache_rfc_hdr_next(&it, "Vary",
                                            sizeof("Vary") - 1)))
    {
        if (p != vary->data) {
            *p++ = ',';
        }

        p = ngx_cpymem(p, h->value.data, h->value.len);
    }

    vary->len = p - vary->data;

    return NGX_OK;
}


ngx_int_t
ngx_http_cache_vary_values(ngx_http_request_t *r, ngx_str_t *vary,
    ngx_str_t *spec_out, ngx_str_t *values_out)
{
    u_char      *p, *v;
    size_t       spec_len, values_len;
    ngx_str_t    names[NGX_HTTP_CACHE_VARY_MAX_FIELDS];
    ngx_uint_t   i, n, gzip;
    ngx_list_t  *in;

    ngx_str_null(spec_out);
    ngx_str_null(values_out);

    if (ngx_http_cache_rfc_vary_names(vary, names, &n) != NGX_OK) {
        return NGX_DECLINED;
    }

    if (n == 0) {
        return NGX_OK;
    }

    in = &r->headers_in.headers;
    gzip = 0;
    spec_len = 0;
    values_len = 0;

    for (i = 0; i < n; i++) {
        spec_len += names[i].len + 1;

        if (names[i].len == sizeof("Accept-Encoding") - 1
            && ngx_strncasecmp(names[i].data, (u_char *) "Accept-Encoding",
                               names[i].len) == 0)
        {
            gzip = ngx_http_cache_rfc_accepts_gzip(in);
            values_len += names[i].len + sizeof(":gzip\n") - 1;
            continue;
        }

        values_len += names[i].len + 2
                      + ngx_http_cache_rfc_vary_value_size(in, &names[i]);
    }

    p = ngx_pnalloc(r->pool, spec_len + values_len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    spec_out->data = p;

    for (i = 0; i < n; i++) {
        if (i) {
            *p++ = ',';
        }

        p = ngx_cpymem(p, names[i].data, names[i].len);
    }

    spec_out->len = p - spec_out->data;
    ngx_strlow(spec_out->data, spec_out->data, spec_out->len);

    values_out->data = p;

    for (i = 0; i < n; i++) {
        ngx_strlow(p, names[i].data, names[i].len);
        p += names[i].len;

        if (names[i].len == sizeof("Accept-Encoding") - 1
            && ngx_strncasecmp(names[i].data, (u_char *) "Accept-Encoding",
                               names[i].len) == 0)
        {
            *p++ = ':';
            if (gzip) {
                p = ngx_cpymem(p, "gzip", sizeof("gzip") - 1);
            }

        } else {
            v = p;
            p = ngx_http_cache_rfc_vary_write_value(p, in, &names[i]);

            /* language tags are case-insensitive (RFC 4647 2) */
            if (names[i].len == sizeof("Accept-Language") - 1
                && ngx_strncasecmp(names[i].data,
                                   (u_char *) "Accept-Language",
                                   names[i].len) == 0)
            {
                ngx_strlow(v, v, p - v);
            }
        }

        *p++ = '\n';
    }

    values_out->len = p - values_out->data;

    return NGX_OK;
}


/* an upper bound of what ngx_http_cache_rfc_vary_write_value() writes after
 * the name, but for the '\n' */
static size_t
ngx_http_cache_rfc_vary_value_size(ngx_list_t *headers, ngx_str_t *name)
{
    size_t                          len;
    ngx_table_elt_t                *h;
    ngx_http_cache_rfc_hdr_iter_t   it;

    len = 0;
    ngx_http_cache_rfc_hdr_iter_init(&it, headers);

    while ((h = ngx_http_cache_rfc_hdr_next(&it, (char *) name->data,
                                            name->len)))
    {
        len += h->value.len + 1;
    }

    return len;
}


/*
 * ':' and the values of every line of the field, joined with ',', the
 * optional whitespace at the ends of each member removed; nothing at all
 * when the request has no such field.
 */
static u_char *
ngx_http_cache_rfc_vary_write_value(u_char *p, ngx_list_t *headers,
    ngx_str_t *name)
{
    u_char                         *v, *end, *s, *e, *start;
    ngx_table_elt_t                *h;
    ngx_http_cache_rfc_hdr_iter_t   it;

    start = p;
    ngx_http_cache_rfc_hdr_iter_init(&it, headers);

    while ((h = ngx_http_cache_rfc_hdr_next(&it, (char *) name->data,
                                            name->len)))
    {
        if (p == start) {
            *p++ = ':';

        } else {
            *p++ = ',';
        }

        v = h->value.data;
        end = v + h->value.len;

        for ( ;; ) {
            /* one member: [v, e) up to a comma or the end */
            e = v;
            while (e < end && *e != ',') {
                e++;
            }

            s = ngx_http_cache_rfc_skip_ows(v, e);
            while (e > s && (e[-1] == ' ' || e[-1] == '\t')) {
                e--;
            }

            p = ngx_cpymem(p, s, e - s);

            while (v < end && *v != ',') {
                v++;
            }

            if (v == end) {
                break;
            }

            *p++ = ',';
            v++;
        }
    }

    return p;
}


/* does the request accept gzip (q > 0), by name, x-gzip or "*"? */
ngx_uint_t
ngx_http_cache_rfc_accepts_gzip(ngx_list_t *headers)
{
    u_char                         *p, *end, *s, *q;
    size_t                          len;
    ngx_int_t                       gzip, star, positive;
    ngx_table_elt_t                *h;
    ngx_http_cache_rfc_hdr_iter_t   it;

    gzip = -1;
    star = -1;

    ngx_http_cache_rfc_hdr_iter_init(&it, headers);

    while ((h = ngx_http_cache_rfc_hdr_next(&it, "Accept-Encoding",
                                            sizeof("Accept-Encoding") - 1)))
    {
        p = h->value.data;
        end = p + h->value.len;

        while (p < end) {
            while (p < end && (*p == ' ' || *p == '\t' || *p == ',')) {
                p++;
            }

            s = p;
            while (p < end && ngx_http_cache_rfc_is_tchar(*p)) {
                p++;
            }

            len = p - s;
            positive = 1;

            /* parameters: ;q=... (others ignored) */
            for ( ;; ) {
                p = ngx_http_cache_rfc_skip_ows(p, end);

                if (p == end || *p != ';') {
                    break;
                }

                p = ngx_http_cache_rfc_skip_ows(p + 1, end);

                if (end - p >= 2 && (p[0] == 'q' || p[0] == 'Q')
                    && p[1] == '=')
                {
                    q = p + 2;
                    while (p < end && *p != ',' && *p != ';'
                           && *p != ' ' && *p != '\t')
                    {
                        p++;
                    }

                    positive = ngx_http_cache_rfc_qvalue_positive(q, p);

                } else {
                    while (p < end && *p != ',' && *p != ';') {
                        p++;
                    }
                }
            }

            if (p < end && *p != ',') {
                /* junk after the member: it counts as refused */
                positive = 0;
                p = ngx_http_cache_rfc_skip_member(p, end);
            }

            if ((len == 4 && ngx_strncasecmp(s, (u_char *) "gzip", 4) == 0)
                || (len == 6
                    && ngx_strncasecmp(s, (u_char *) "x-gzip", 6) == 0))
            {
                /* the most restrictive of repeated mentions */
                if (gzip != 0) {
                    gzip = positive;
                }

            } else if (len == 1 && s[0] == '*') {
                if (star != 0) {
                    star = positive;
                }
            }
        }
    }

    if (gzip != -1) {
        return gzip;
    }

    return star == 1;
}


/* qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] ); anything
 * else is invalid and taken as 0 */
static ngx_uint_t
ngx_http_cache_rfc_qvalue_positive(u_char *p, u_char *end)
{
    ngx_uint_t  nonzero, digits;

    if (p == end || (*p != '0' && *p != '1')) {
        return 0;
    }

    nonzero = (*p == '1');
    p++;

    if (p == end) {
        return nonzero;
    }

    if (*p != '.') {
        return 0;
    }

    for (p++, digits = 0; p < end; p++, digits++) {
        if (*p < '0' || *p > '9' || digits == 3) {
            return 0;
        }

        if (*p != '0') {
            if (nonzero) {
                return 0;   /* "1.5" */
            }
            nonzero = 1;
        }
    }

    return nonzero;
}
