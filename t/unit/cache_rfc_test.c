/*
 * Unit cases for ngx_http_cache_module/ngx_http_cache_rfc.c.
 *
 * Debian's nginx-dev tree holds headers only, no core objects to link a
 * standalone program with; so this is a tiny core module that t/cache-rfc-
 * unit.t builds against the configured tree under build/ together with
 * ngx_http_cache_rfc.c, and loads into the real nginx with `nginx -t`: the
 * directive cache_rfc_unit_test runs every case below with nginx's own
 * pools, lists and date parser, and prints TAP lines on stderr ("ok N -
 * ...", "not ok N - ...", then "done N").  The directive fails (and nginx
 * -t with it) when a case fails.
 *
 * Every header value is copied into a malloc'ed buffer of exactly its
 * length (no NUL after it), so that a build with -fsanitize=address catches
 * a parser reading one byte past a value.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <stdio.h>
#include <stdarg.h>

#include "ngx_http_cache_rfc.h"
#include "ngx_edge_time.h"


/* "now" of the cases: Tue, 14 Nov 2023 22:13:20 GMT */
#define T0  1700000000

#define NO_CHECK  (-2)


static ngx_uint_t   tests, failures;
static ngx_log_t   *tlog;


static void
ok(int cond, const char *fmt, ...)
{
    va_list  args;

    tests++;

    if (!cond) {
        failures++;
    }

    fprintf(stderr, "%sok %lu - ", cond ? "" : "not ", (unsigned long) tests);

    va_start(args, fmt);
    vfprintf(stderr, fmt, args);
    va_end(args);

    fprintf(stderr, "\n");
    fflush(stderr);
}


static void
diag(const char *fmt, ...)
{
    va_list  args;

    fprintf(stderr, "# ");
    va_start(args, fmt);
    vfprintf(stderr, fmt, args);
    va_end(args);
    fprintf(stderr, "\n");
}


/* a request to hang headers on */

static void
free_buf(void *data)
{
    ngx_free(data);
}


/* a copy of len bytes in its own malloc'ed block, freed with the pool */
static u_char *
exact_copy(ngx_pool_t *pool, const u_char *s, size_t len)
{
    u_char              *p;
    ngx_pool_cleanup_t  *cln;

    p = ngx_alloc(len ? len : 1, tlog);
    if (p == NULL) {
        return NULL;
    }

    ngx_memcpy(p, s, len);

    cln = ngx_pool_cleanup_add(pool, 0);
    if (cln == NULL) {
        ngx_free(p);
        return NULL;
    }

    cln->handler = free_buf;
    cln->data = p;

    return p;
}


static ngx_int_t
add_header(ngx_pool_t *pool, ngx_list_t *list, const char *name,
    const u_char *value, size_t len, ngx_uint_t hash)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(list);
    if (h == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(h, sizeof(ngx_table_elt_t));

    h->hash = hash;
    h->key.len = ngx_strlen(name);
    h->key.data = exact_copy(pool, (u_char *) name, h->key.len);
    h->value.len = len;
    h->value.data = exact_copy(pool, value, len);
    h->lowcase_key = h->key.data;

    return (h->key.data && h->value.data) ? NGX_OK : NGX_ERROR;
}


/*
 * "Name: value\n..." into list.  A value "@N" / "@+N" / "@-N" is the HTTP
 * date of T0 + N; a line starting with '!' is a deleted field (hash 0).
 */
static ngx_int_t
add_headers(ngx_pool_t *pool, ngx_list_t *list, const char *spec)
{
    u_char      *p, *end, *eol, *colon, *v;
    u_char       name[128], date[64];
    size_t       vlen;
    ngx_int_t    off;
    ngx_uint_t   hash;

    if (spec == NULL) {
        return NGX_OK;
    }

    p = (u_char *) spec;
    end = p + ngx_strlen(spec);

    while (p < end) {
        eol = ngx_strlchr(p, end, '\n');
        if (eol == NULL) {
            eol = end;
        }

        hash = 1;
        if (*p == '!') {
            hash = 0;
            p++;
        }

        colon = ngx_strlchr(p, eol, ':');
        if (colon == NULL || (size_t) (colon - p) >= sizeof(name)) {
            return NGX_ERROR;
        }

        ngx_memcpy(name, p, colon - p);
        name[colon - p] = '\0';

        v = colon + 1;
        while (v < eol && *v == ' ') {
            v++;
        }

        vlen = eol - v;

        if (vlen > 1 && v[0] == '@') {
            off = ngx_atoi(v + 1 + (v[1] == '+' || v[1] == '-'),
                           vlen - 1 - (v[1] == '+' || v[1] == '-'));
            if (v[1] == '-') {
                off = -off;
            }
            vlen = ngx_http_time(date, T0 + off) - date;
            v = date;
        }

        if (add_header(pool, list, (char *) name, v, vlen, hash) != NGX_OK) {
            return NGX_ERROR;
        }

        p = eol + 1;
    }

    return NGX_OK;
}


static ngx_http_request_t *
make_request(ngx_uint_t method, const char *in, ngx_uint_t status,
    const char *out)
{
    ngx_pool_t          *pool;
    ngx_http_request_t  *r;

    pool = ngx_create_pool(4096, tlog);
    if (pool == NULL) {
        return NULL;
    }

    r = ngx_pcalloc(pool, sizeof(ngx_http_request_t));
    if (r == NULL) {
        return NULL;
    }

    r->pool = pool;
    r->method = method;
    r->headers_out.status = status;
    r->headers_out.last_modified_time = -1;
    r->headers_out.content_length_n = -1;

    /* two elements a part: the walks must cross parts */
    if (ngx_list_init(&r->headers_in.headers, pool, 2,
                      sizeof(ngx_table_elt_t)) != NGX_OK
        || ngx_list_init(&r->headers_out.headers, pool, 2,
                         sizeof(ngx_table_elt_t)) != NGX_OK
        || add_headers(pool, &r->headers_in.headers, in) != NGX_OK
        || add_headers(pool, &r->headers_out.headers, out) != NGX_OK)
    {
        ngx_destroy_pool(pool);
        return NULL;
    }

    return r;
}


static void
done_request(ngx_http_request_t *r)
{
    ngx_destroy_pool(r->pool);
}


static void
join_fields(ngx_array_t *a, char *buf, size_t size)
{
    size_t      n;
    ngx_str_t  *s;
    ngx_uint_t  i;

    buf[0] = '\0';

    if (a == NULL) {
        return;
    }

    s = a->elts;
    n = 0;

    for (i = 0; i < a->nelts && n + s[i].len + 2 < size; i++) {
        if (i) {
            buf[n++] = '|';
        }
        ngx_memcpy(buf + n, s[i].data, s[i].len);
        n += s[i].len;
        buf[n] = '\0';
    }
}


/* Cache-Control parsing */

#define F_NO_STORE        0x001
#define F_NO_CACHE        0x002
#define F_PRIVATE         0x004
#define F_PUBLIC          0x008
#define F_MUST_REVAL      0x010
#define F_PROXY_REVAL     0x020
#define F_MUST_UNDERST    0x040
#define F_ONLY_IF_CACHED  0x080
#define F_NO_TRANSFORM    0x100
#define F_IMMUTABLE       0x200

#define BIG  ((int64_t) 1 << 31)
#define ANY  INT64_MAX

typedef struct {
    const char  *title;
    const char  *headers;
    int64_t      max_age, s_maxage, swr, sie, max_stale, min_fresh;
    ngx_uint_t   flags;
    const char  *no_cache_fields;
    const char  *private_fields;
} cc_case_t;


static cc_case_t  cc_cases[] = {
    { "max-age", "Cache-Control: max-age=60",
      60, -1, -1, -1, -1, -1, 0, "", "" },
    { "names are case-insensitive", "cache-control: MAX-AGE=60, Public",
      60, -1, -1, -1, -1, -1, F_PUBLIC, "", "" },
    { "quoted argument accepted", "Cache-Control: max-age=\"60\"",
      60, -1, -1, -1, -1, -1, 0, "", "" },
    { "max-age=abc is stale", "Cache-Control: max-age=abc",
      0, -1, -1, -1, -1, -1, 0, "", "" },
    { "negative max-age is stale", "Cache-Control: max-age=-1",
      0, -1, -1, -1, -1, -1, 0, "", "" },
    { "empty max-age is stale", "Cache-Control: max-age=",
      0, -1, -1, -1, -1, -1, 0, "", "" },
    { "bare max-age is stale", "Cache-Control: max-age",
      0, -1, -1, -1, -1, -1, 0, "", "" },
    { "max-age with junk after it is stale",
      "Cache-Control: max-age=60 30, public",
      0, -1, -1, -1, -1, -1, F_PUBLIC, "", "" },
    { "max-age overflow clamps to 2^31",
      "Cache-Control: max-age=99999999999999999999999999999999",
      BIG, -1, -1, -1, -1, -1, 0, "", "" },
    { "max-age 2^31 + 1 clamps", "Cache-Control: max-age=2147483649",
      BIG, -1, -1, -1, -1, -1, 0, "", "" },
    { "duplicate max-age is stale (4.2.1)",
      "Cache-Control: max-age=60, max-age=120",
      0, -1, -1, -1, -1, -1, 0, "", "" },
    { "duplicate across field lines",
      "Cache-Control: max-age=60\nCache-Control: max-age=60",
      0, -1, -1, -1, -1, -1, 0, "", "" },
    { "directives across field lines",
      "Cache-Control: public\nX-Other: 1\nCache-Control: s-maxage=5",
      -1, 5, -1, -1, -1, -1, F_PUBLIC, "", "" },
    { "s-maxage and max-age", "Cache-Control: s-maxage=10, max-age=20",
      20, 10, -1, -1, -1, -1, 0, "", "" },
    { "qualified no-cache and private",
      "Cache-Control: no-cache=\"Set-Cookie, X-Foo\", private=\"X-Bar\"",
      -1, -1, -1, -1, -1, -1, 0, "Set-Cookie|X-Foo", "X-Bar" },
    { "qualified private, token form",
      "Cache-Control: private=X-A, no-store",
      -1, -1, -1, -1, -1, -1, F_NO_STORE, "", "X-A" },
    { "qualified with escapes",
      "Cache-Control: no-cache=\"X-\\A\"",
      -1, -1, -1, -1, -1, -1, 0, "X-A", "" },
    { "unqualified no-cache", "Cache-Control: no-cache",
      -1, -1, -1, -1, -1, -1, F_NO_CACHE, "", "" },
    { "unterminated qualified no-cache is unqualified",
      "Cache-Control: no-cache=\"X-A, max-age=5",
      -1, -1, -1, -1, -1, -1, F_NO_CACHE, "", "" },
    { "qualified list of non-tokens is unqualified",
      "Cache-Control: private=\"a b\"",
      -1, -1, -1, -1, -1, -1, F_PRIVATE, "", "" },
    { "trailing backslash in a quoted string",
      "Cache-Control: no-cache=\"a\\",
      -1, -1, -1, -1, -1, -1, F_NO_CACHE, "", "" },
    { "unknown directive with a quoted comma is skipped",
      "Cache-Control: foo=\"a,max-age=5\", max-age=7",
      7, -1, -1, -1, -1, -1, 0, "", "" },
    { "escaped quote inside a skipped quoted string",
      "Cache-Control: foo=\"\\\",max-age=5\", max-age=7",
      7, -1, -1, -1, -1, -1, 0, "", "" },
    { "RFC 5861 windows",
      "Cache-Control: stale-while-revalidate=30, stale-if-error=60",
      -1, -1, 30, 60, -1, -1, 0, "", "" },
    { "duplicate windows: the smallest",
      "Cache-Control: stale-while-revalidate=30, stale-while-revalidate=10,"
      " stale-if-error=5, stale-if-error=50",
      -1, -1, 10, 5, -1, -1, 0, "", "" },
    { "invalid window ignored",
      "Cache-Control: stale-if-error=x, stale-while-revalidate=-3",
      -1, -1, -1, -1, -1, -1, 0, "", "" },
    { "bare max-stale", "Cache-Control: max-stale",
      -1, -1, -1, -1, ANY, -1, 0, "", "" },
    { "max-stale=5 and bare max-stale: the smallest",
      "Cache-Control: max-stale, max-stale=5",
      -1, -1, -1, -1, 5, -1, 0, "", "" },
    { "invalid max-stale ignored", "Cache-Control: max-stale=abc",
      -1, -1, -1, -1, -1, -1, 0, "", "" },
    { "min-fresh duplicates: the largest",
      "Cache-Control: min-fresh=5, min-fresh=10",
      -1, -1, -1, -1, -1, 10, 0, "", "" },
    { "every flag",
      "Cache-Control: must-revalidate, PROXY-REVALIDATE, must-understand,"
      " only-if-cached, no-transform, immutable, no-store, private, public",
      -1, -1, -1, -1, -1, -1,
      F_MUST_REVAL|F_PROXY_REVAL|F_MUST_UNDERST|F_ONLY_IF_CACHED
      |F_NO_TRANSFORM|F_IMMUTABLE|F_NO_STORE|F_PRIVATE|F_PUBLIC, "", "" },
    { "empty members", "Cache-Control: ,,, ,max-age=5,,",
      5, -1, -1, -1, -1, -1, 0, "", "" },
    { "space before = makes max-age invalid", "Cache-Control: max-age =5",
      0, -1, -1, -1, -1, -1, 0, "", "" },
    { "space after = makes max-age invalid", "Cache-Control: max-age= 5",
      0, -1, -1, -1, -1, -1, 0, "", "" },
    { "leading zeros", "Cache-Control: max-age=003600",
      3600, -1, -1, -1, -1, -1, 0, "", "" },
    { "single quotes are no quotes", "Cache-Control: max-age='3600'",
      0, -1, -1, -1, -1, -1, 0, "", "" },
    { "decimal max-age is invalid", "Cache-Control: max-age=3600.0",
      0, -1, -1, -1, -1, -1, 0, "", "" },
    { "max-age in an extension's quoted string is not max-age",
      "Cache-Control: extension=\"max-age=3600\", max-age=1",
      1, -1, -1, -1, -1, -1, 0, "", "" },
    { "deleted field line ignored",
      "!Cache-Control: no-store\nCache-Control: max-age=3",
      3, -1, -1, -1, -1, -1, 0, "", "" },
    { "garbage alone",
      "Cache-Control: \"\nCache-Control: =\nCache-Control: =5\n"
      "Cache-Control: \\\nCache-Control: ;\nCache-Control: \"\"\"",
      -1, -1, -1, -1, -1, -1, 0, "", "" },
    { "flag with junk still applies (restrictive)",
      "Cache-Control: no-store;x, private junk",
      -1, -1, -1, -1, -1, -1, F_NO_STORE|F_PRIVATE, "", "" },
    { "no Cache-Control", "X-A: max-age=5",
      -1, -1, -1, -1, -1, -1, 0, "", "" },
    { NULL, NULL, 0, 0, 0, 0, 0, 0, 0, NULL, NULL }
};


static ngx_uint_t
cc_flags(ngx_http_cache_cc_t *cc)
{
    return (cc->no_store ? F_NO_STORE : 0)
           | (cc->no_cache ? F_NO_CACHE : 0)
           | (cc->private_ ? F_PRIVATE : 0)
           | (cc->public_ ? F_PUBLIC : 0)
           | (cc->must_revalidate ? F_MUST_REVAL : 0)
           | (cc->proxy_revalidate ? F_PROXY_REVAL : 0)
           | (cc->must_understand ? F_MUST_UNDERST : 0)
           | (cc->only_if_cached ? F_ONLY_IF_CACHED : 0)
           | (cc->no_transform ? F_NO_TRANSFORM : 0)
           | (cc->immutable ? F_IMMUTABLE : 0);
}


static void
test_cc(void)
{
    char                  nc[256], pv[256];
    cc_case_t            *c;
    ngx_http_request_t   *r;
    ngx_http_cache_cc_t   cc;

    for (c = cc_cases; c->title; c++) {
        r = make_request(NGX_HTTP_GET, NULL, 200, c->headers);
        if (r == NULL) {
            ok(0, "cc: %s: setup", c->title);
            continue;
        }

        if (ngx_http_cache_cc_parse(r->pool, &r->headers_out.headers, &cc)
            != NGX_OK)
        {
            ok(0, "cc: %s: parse failed", c->title);
            done_request(r);
            continue;
        }

        join_fields(cc.no_cache_fields, nc, sizeof(nc));
        join_fields(cc.private_fields, pv, sizeof(pv));

        ok(cc.max_age == c->max_age && cc.s_maxage == c->s_maxage
           && cc.stale_while_revalidate == c->swr
           && cc.stale_if_error == c->sie && cc.max_stale == c->max_stale
           && cc.min_fresh == c->min_fresh && cc_flags(&cc) == c->flags
           && ngx_strcmp(nc, c->no_cache_fields) == 0
           && ngx_strcmp(pv, c->private_fields) == 0,
           "cc: %s", c->title);

        if (!(cc.max_age == c->max_age && cc.s_maxage == c->s_maxage
              && cc.stale_while_revalidate == c->swr
              && cc.stale_if_error == c->sie && cc.max_stale == c->max_stale
              && cc.min_fresh == c->min_fresh && cc_flags(&cc) == c->flags
              && ngx_strcmp(nc, c->no_cache_fields) == 0
              && ngx_strcmp(pv, c->private_fields) == 0))
        {
            diag("max-age %lld s-maxage %lld swr %lld sie %lld"
                 " max-stale %lld min-fresh %lld flags %#lx nc \"%s\""
                 " private \"%s\"",
                 (long long) cc.max_age, (long long) cc.s_maxage,
                 (long long) cc.stale_while_revalidate,
                 (long long) cc.stale_if_error, (long long) cc.max_stale,
                 (long long) cc.min_fresh, (unsigned long) cc_flags(&cc),
                 nc, pv);
        }

        done_request(r);
    }
}


/* the store decision */

typedef struct {
    const char   *title;
    ngx_uint_t    method;
    const char   *in;
    ngx_uint_t    status;
    const char   *out;
    ngx_uint_t    conf;          /* which conf, see make_conf() */
    int64_t       request_ms;    /* offsets from T0 in ms */
    int64_t       response_ms;
    time_t        last_modified; /* offset from T0, or NO_CHECK: none */
    ngx_uint_t    storable;
    const char   *reason;
    int64_t       fresh_ms;
    int64_t       swr_ms, sie_ms;
    int64_t       age_ms;        /* NO_CHECK: not checked */
    ngx_uint_t    revalidate, must_revalidate;
    const char   *strip;
} policy_case_t;


#define C_NONE       0
#define C_VALID      1   /* valid 200 600, 302 30, any 60 */
#define C_VALID0     2   /* valid 200 0 */
#define C_HEUR       3   /* heuristic on, no cap */
#define C_HEUR_CAP   4   /* heuristic on, max 50 s */
#define C_COOKIE     5   /* store_set_cookie */
#define C_PRIVATE    6   /* ignore_private */


static ngx_http_cache_valid_t  valid_list[] = {
    { 200, 600 }, { 302, 30 }, { 0, 60 }
};

static ngx_http_cache_valid_t  valid0_list[] = {
    { 200, 0 }
};


static void
make_conf(ngx_pool_t *pool, ngx_uint_t which, ngx_http_cache_rfc_conf_t *conf,
    ngx_array_t *valid)
{
    ngx_memzero(conf, sizeof(ngx_http_cache_rfc_conf_t));

    switch (which) {
    case C_VALID:
        valid->elts = valid_list;
        valid->nelts = 3;
        valid->size = sizeof(ngx_http_cache_valid_t);
        valid->nalloc = 3;
        valid->pool = pool;
        conf->valid = valid;
        break;
    case C_VALID0:
        valid->elts = valid0_list;
        valid->nelts = 1;
        valid->size = sizeof(ngx_http_cache_valid_t);
        valid->nalloc = 1;
        valid->pool = pool;
        conf->valid = valid;
        break;
    case C_HEUR:
        conf->heuristic = 1;
        break;
    case C_HEUR_CAP:
        conf->heuristic = 1;
        conf->heuristic_max = 50;
        break;
    case C_COOKIE:
        conf->store_set_cookie = 1;
        break;
    case C_PRIVATE:
        conf->ignore_private = 1;
        break;
    }
}


#define GET   NGX_HTTP_GET
#define HEAD  NGX_HTTP_HEAD
#define POST  NGX_HTTP_POST
#define NL    NO_CHECK
#define S     1000LL

static policy_case_t  policy_cases[] = {

    /* freshness precedence (4.2.1) */
    { "max-age", GET, NULL, 200, "Date: @0\nCache-Control: max-age=60",
      C_NONE, 0, 0, NL, 1, NULL, 60 * S, 0, 0, 0, 0, 0, "" },
    { "s-maxage over max-age over Expires", GET, NULL, 200,
      "Date: @0\nExpires: @+30\nCache-Control: s-maxage=10, max-age=20",
      C_NONE, 0, 0, NL, 1, NULL, 10 * S, 0, 0, 0, 0, 1, "" },
    { "max-age over Expires", GET, NULL, 200,
      "Date: @0\nCache-Control: max-age=20\nExpires: @+30",
      C_NONE, 0, 0, NL, 1, NULL, 20 * S, 0, 0, 0, 0, 0, "" },
    { "Expires - Date", GET, NULL, 200, "Expires: @+30\nDate: @0",
      C_NONE, 0, 0, NL, 1, NULL, 30 * S, 0, 0, 0, 0, 0, "" },
    { "Expires - Date, Date 10 s behind", GET, NULL, 200,
      "Expires: @+30\nDate: @-10",
      C_NONE, 0, 0, NL, 1, NULL, 40 * S, 0, 0, 10 * S, 0, 0, "" },
    { "Expires: 0 is already expired", GET, NULL, 200,
      "Date: @0\nExpires: 0",
      C_NONE, 0, 0, NL, 1, NULL, 0, 0, 0, 0, 0, 0, "" },
    { "Expires in the past", GET, NULL, 200, "Date: @0\nExpires: @-30",
      C_NONE, 0, 0, NL, 1, NULL, 0, 0, 0, 0, 0, 0, "" },
    { "Expires without Date: the response time", GET, NULL, 200,
      "Expires: @+30",
      C_NONE, 0, 0, NL, 1, NULL, 30 * S, 0, 0, 0, 0, 0, "" },
    { "two Expires lines: stale", GET, NULL, 200,
      "Date: @0\nExpires: @+30\nExpires: @+60",
      C_NONE, 0, 0, NL, 1, NULL, 0, 0, 0, 0, 0, 0, "" },
    { "Expires in year 9999 clamps to 2^31 s", GET, NULL, 200,
      "Date: @0\nExpires: Fri, 31 Dec 9999 23:59:59 GMT",
      C_NONE, 0, 0, NL, 1, NULL, BIG * S, 0, 0, 0, 0, 0, "" },
    { "invalid max-age: stored stale", GET, NULL, 200,
      "Date: @0\nCache-Control: max-age=abc\nExpires: @+30",
      C_NONE, 0, 0, NL, 1, NULL, 0, 0, 0, 0, 0, 0, "" },
    { "invalid Date: the response time", GET, NULL, 200,
      "Date: yesterday\nExpires: @+30",
      C_NONE, 0, 0, NL, 1, NULL, 30 * S, 0, 0, 0, 0, 0, "" },
    { "deleted Cache-Control line ignored", GET, NULL, 200,
      "Date: @0\n!Cache-Control: no-store\nCache-Control: max-age=5",
      C_NONE, 0, 0, NL, 1, NULL, 5 * S, 0, 0, 0, 0, 0, "" },
    { "500 with max-age is stored", GET, NULL, 500,
      "Date: @0\nCache-Control: max-age=5",
      C_NONE, 0, 0, NL, 1, NULL, 5 * S, 0, 0, 0, 0, 0, "" },

    /* no explicit freshness: valid per status, heuristic */
    { "no freshness, nothing configured", GET, NULL, 200, "Date: @0",
      C_NONE, 0, 0, NL, 0, "no freshness information",
      0, 0, 0, NL, 0, 0, "" },
    { "valid for the status", GET, NULL, 200, "Date: @0",
      C_VALID, 0, 0, NL, 1, NULL, 600 * S, 0, 0, 0, 0, 0, "" },
    { "valid any", GET, NULL, 404, "Date: @0",
      C_VALID, 0, 0, NL, 1, NULL, 60 * S, 0, 0, 0, 0, 0, "" },
    { "valid for 302 (cacheable only so)", GET, NULL, 302, "Date: @0",
      C_VALID, 0, 0, NL, 1, NULL, 30 * S, 0, 0, 0, 0, 0, "" },
    { "302 without valid or explicit freshness", GET, NULL, 302,
      "Date: @0", C_HEUR, 0, 0, -1000, 0, "no freshness information",
      0, 0, 0, NL, 0, 0, "" },
    { "explicit freshness wins over valid", GET, NULL, 200,
      "Date: @0\nCache-Control: max-age=7",
      C_VALID, 0, 0, NL, 1, NULL, 7 * S, 0, 0, 0, 0, 0, "" },
    { "valid 0: not stored", GET, NULL, 200, "Date: @0",
      C_VALID0, 0, 0, NL, 0, "valid 0", 0, 0, 0, NL, 0, 0, "" },
    { "heuristic: 10% of Date - Last-Modified", GET, NULL, 200,
      "Date: @0\nLast-Modified: @-1000",
      C_HEUR, 0, 0, NL, 1, NULL, 100 * S, 0, 0, 0, 0, 0, "" },
    { "heuristic from last_modified_time", GET, NULL, 200, "Date: @0",
      C_HEUR, 0, 0, -2000, 1, NULL, 200 * S, 0, 0, 0, 0, 0, "" },
    { "heuristic capped", GET, NULL, 404,
      "Date: @0\nLast-Modified: @-1000",
      C_HEUR_CAP, 0, 0, NL, 1, NULL, 50 * S, 0, 0, 0, 0, 0, "" },
    { "heuristic off", GET, NULL, 200, "Date: @0\nLast-Modified: @-1000",
      C_NONE, 0, 0, NL, 0, "no freshness information",
      0, 0, 0, NL, 0, 0, "" },
    { "heuristic needs Last-Modified", GET, NULL, 200, "Date: @0",
      C_HEUR, 0, 0, NL, 0, "no freshness information",
      0, 0, 0, NL, 0, 0, "" },
    { "heuristic for 302 with public", GET, NULL, 302,
      "Date: @0\nLast-Modified: @-1000\nCache-Control: public",
      C_HEUR, 0, 0, NL, 1, NULL, 100 * S, 0, 0, 0, 0, 0, "" },
    { "heuristic: 501 is heuristically cacheable", GET, NULL, 501,
      "Date: @0\nLast-Modified: @-1000",
      C_HEUR, 0, 0, NL, 1, NULL, 100 * S, 0, 0, 0, 0, 0, "" },
    { "heuristic: 414 is heuristically cacheable", GET, NULL, 414,
      "Date: @0\nLast-Modified: @-1000",
      C_HEUR, 0, 0, NL, 1, NULL, 100 * S, 0, 0, 0, 0, 0, "" },
    { "heuristic: not for 201", GET, NULL, 201,
      "Date: @0\nLast-Modified: @-1000", C_HEUR, 0, 0, NL, 0,
      "no freshness information", 0, 0, 0, NL, 0, 0, "" },
    { "heuristic: not for 403", GET, NULL, 403,
      "Date: @0\nLast-Modified: @-1000", C_HEUR, 0, 0, NL, 0,
      "no freshness information", 0, 0, 0, NL, 0, 0, "" },
    { "heuristic: not for 503", GET, NULL, 503,
      "Date: @0\nLast-Modified: @-1000", C_HEUR, 0, 0, NL, 0,
      "no freshness information", 0, 0, 0, NL, 0, 0, "" },
    { "heuristic: not for 599", GET, NULL, 599,
      "Date: @0\nLast-Modified: @-1000", C_HEUR, 0, 0, NL, 0,
      "no freshness information", 0, 0, 0, NL, 0, 0, "" },
    { "heuristic: 599 with public", GET, NULL, 599,
      "Date: @0\nLast-Modified: @-1000\nCache-Control: public",
      C_HEUR, 0, 0, NL, 1, NULL, 100 * S, 0, 0, 0, 0, 0, "" },
    { "heuristic: Last-Modified after Date", GET, NULL, 200,
      "Date: @0\nLast-Modified: @+1000",
      C_HEUR, 0, 0, NL, 1, NULL, 0, 0, 0, 0, 0, 0, "" },

    /* storing (3) */
    { "no-store", GET, NULL, 200,
      "Date: @0\nCache-Control: max-age=60, no-store",
      C_NONE, 0, 0, NL, 0, "no-store", 0, 0, 0, NL, 0, 0, "" },
    { "must-understand + understood status overrides no-store", GET, NULL,
      200, "Date: @0\nCache-Control: max-age=60, no-store, must-understand",
      C_NONE, 0, 0, NL, 1, NULL, 60 * S, 0, 0, 0, 0, 0, "" },
    { "must-understand, status not understood", GET, NULL, 299,
      "Date: @0\nCache-Control: max-age=60, must-understand",
      C_NONE, 0, 0, NL, 0, "must-understand, status not understood",
      0, 0, 0, NL, 0, 0, "" },
    { "private", GET, NULL, 200,
      "Date: @0\nCache-Control: max-age=60, private",
      C_NONE, 0, 0, NL, 0, "private", 0, 0, 0, NL, 0, 0, "" },
    { "private ignored by the operator", GET, NULL, 200,
      "Date: @0\nCache-Control: max-age=60, private",
      C_PRIVATE, 0, 0, NL, 1, NULL, 60 * S, 0, 0, 0, 0, 0, "" },
    { "qualified private and no-cache: stored, fields stripped", GET, NULL,
      200, "Date: @0\nCache-Control: max-age=60, private=\"X-Secret\","
      " no-cache=\"X-A, X-B\"",
      C_NONE, 0, 0, NL, 1, NULL, 60 * S, 0, 0, 0, 0, 0,
      "X-A|X-B|X-Secret" },
    { "ignore_private keeps private fields, strips no-cache ones", GET,
      NULL, 200, "Date: @0\nCache-Control: max-age=60,"
      " private=\"X-Secret\", no-cache=\"X-A\"",
      C_PRIVATE, 0, 0, NL, 1, NULL, 60 * S, 0, 0, 0, 0, 0, "X-A" },
    { "Authorization without permission", GET, "Authorization: Basic x",
      200, "Date: @0\nCache-Control: max-age=60",
      C_NONE, 0, 0, NL, 0, "authorization", 0, 0, 0, NL, 0, 0, "" },
    { "Authorization with public", GET, "authorization: Basic x", 200,
      "Date: @0\nCache-Control: max-age=60, public",
      C_NONE, 0, 0, NL, 1, NULL, 60 * S, 0, 0, 0, 0, 0, "" },
    { "Authorization with s-maxage", GET, "Authorization: Basic x", 200,
      "Date: @0\nCache-Control: s-maxage=60",
      C_NONE, 0, 0, NL, 1, NULL, 60 * S, 0, 0, 0, 0, 1, "" },
    { "Authorization with must-revalidate", GET, "Authorization: Basic x",
      200, "Date: @0\nCache-Control: max-age=60, must-revalidate",
      C_NONE, 0, 0, NL, 1, NULL, 60 * S, 0, 0, 0, 0, 1, "" },
    { "Vary: *", GET, NULL, 200,
      "Date: @0\nCache-Control: max-age=60\nVary: *",
      C_NONE, 0, 0, NL, 0, "vary", 0, 0, 0, NL, 0, 0, "" },
    { "Vary: * on a second line", GET, NULL, 200,
      "Date: @0\nVary: Accept\nCache-Control: max-age=60\nVary: *",
      C_NONE, 0, 0, NL, 0, "vary", 0, 0, 0, NL, 0, 0, "" },
    { "Vary with a non-token member", GET, NULL, 200,
      "Date: @0\nCache-Control: max-age=60\nVary: a:b",
      C_NONE, 0, 0, NL, 0, "vary", 0, 0, 0, NL, 0, 0, "" },
    { "Vary: Accept-Encoding is fine", GET, NULL, 200,
      "Date: @0\nCache-Control: max-age=60\nVary: Accept-Encoding",
      C_NONE, 0, 0, NL, 1, NULL, 60 * S, 0, 0, 0, 0, 0, "" },
    { "Vary: Accept-Encoding with a gzip body", GET, NULL, 200,
      "Date: @0\nCache-Control: max-age=60\nVary: Accept-Encoding\n"
      "Content-Encoding: gzip",
      C_NONE, 0, 0, NL, 1, NULL, 60 * S, 0, 0, 0, 0, 0, "" },
    { "Vary: Accept-Encoding with a br body", GET, NULL, 200,
      "Date: @0\nCache-Control: max-age=60\nVary: accept-encoding\n"
      "Content-Encoding: br",
      C_NONE, 0, 0, NL, 0, "content-encoding other than gzip",
      0, 0, 0, NL, 0, 0, "" },
    { "br body without Vary: Accept-Encoding", GET, NULL, 200,
      "Date: @0\nCache-Control: max-age=60\nVary: Accept\n"
      "Content-Encoding: br",
      C_NONE, 0, 0, NL, 1, NULL, 60 * S, 0, 0, 0, 0, 0, "" },
    { "Set-Cookie", GET, NULL, 200,
      "Date: @0\nCache-Control: max-age=60\nSet-Cookie: a=b",
      C_NONE, 0, 0, NL, 0, "set-cookie", 0, 0, 0, NL, 0, 0, "" },
    { "Set-Cookie with store_set_cookie: kept", GET, NULL, 200,
      "Date: @0\nCache-Control: max-age=60\nset-cookie: a=b",
      C_COOKIE, 0, 0, NL, 1, NULL, 60 * S, 0, 0, 0, 0, 0, "" },
    { "request no-store", GET, "Cache-Control: no-store", 200,
      "Date: @0\nCache-Control: max-age=60",
      C_NONE, 0, 0, NL, 0, "request no-store", 0, 0, 0, NL, 0, 0, "" },
    { "POST", POST, NULL, 200, "Date: @0\nCache-Control: max-age=60",
      C_NONE, 0, 0, NL, 0, "method", 0, 0, 0, NL, 0, 0, "" },
    { "HEAD", HEAD, NULL, 200, "Date: @0\nCache-Control: max-age=60",
      C_NONE, 0, 0, NL, 1, NULL, 60 * S, 0, 0, 0, 0, 0, "" },
    { "206", GET, NULL, 206, "Date: @0\nCache-Control: max-age=60",
      C_NONE, 0, 0, NL, 0, "partial content", 0, 0, 0, NL, 0, 0, "" },
    { "304", GET, NULL, 304, "Date: @0\nCache-Control: max-age=60",
      C_NONE, 0, 0, NL, 0, "not modified", 0, 0, 0, NL, 0, 0, "" },
    { "1xx", GET, NULL, 103, "Cache-Control: max-age=60",
      C_NONE, 0, 0, NL, 0, "informational status", 0, 0, 0, NL, 0, 0, "" },

    /* age (4.2.3) */
    { "Age plus response delay", GET, NULL, 200,
      "Date: @0\nAge: 10\nCache-Control: max-age=60",
      C_NONE, -2000, 0, NL, 1, NULL, 60 * S, 0, 0, 12 * S, 0, 0, "" },
    { "apparent age wins when larger", GET, NULL, 200,
      "Date: @-30\nAge: 10\nCache-Control: max-age=60",
      C_NONE, -500, 0, NL, 1, NULL, 60 * S, 0, 0, 30 * S, 0, 0, "" },
    { "Date in the future: apparent age 0", GET, NULL, 200,
      "Date: @+100\nCache-Control: max-age=60",
      C_NONE, 0, 250, NL, 1, NULL, 60 * S, 0, 0, 250, 0, 0, "" },
    { "response_time before request_time: no negative delay", GET, NULL,
      200, "Date: @0\nCache-Control: max-age=60",
      C_NONE, 5000, 0, NL, 1, NULL, 60 * S, 0, 0, 0, 0, 0, "" },
    { "invalid Age ignored", GET, NULL, 200,
      "Date: @0\nAge: abc\nCache-Control: max-age=60",
      C_NONE, 0, 0, NL, 1, NULL, 60 * S, 0, 0, 0, 0, 0, "" },
    { "huge Age clamps to 2^31 s", GET, NULL, 200,
      "Date: @0\nAge: 999999999999999999999999\nCache-Control: max-age=60",
      C_NONE, 0, 0, NL, 1, NULL, 60 * S, 0, 0, BIG * S, 0, 0, "" },

    { "Age: first member of the line", GET, NULL, 200,
      "Date: @0\nAge: 7200, 0\nCache-Control: max-age=3600",
      C_NONE, 0, 0, NL, 1, NULL, 3600 * S, 0, 0, 7200 * S, 0, 0, "" },
    { "Age: 0, 7200", GET, NULL, 200,
      "Date: @0\nAge: 0, 7200\nCache-Control: max-age=3600",
      C_NONE, 0, 0, NL, 1, NULL, 3600 * S, 0, 0, 0, 0, 0, "" },
    { "Age: first line", GET, NULL, 200,
      "Date: @0\nAge: 7200\nAge: 0\nCache-Control: max-age=3600",
      C_NONE, 0, 0, NL, 1, NULL, 3600 * S, 0, 0, 7200 * S, 0, 0, "" },
    { "negative Age ignored", GET, NULL, 200,
      "Date: @0\nAge: -7200\nCache-Control: max-age=3600",
      C_NONE, 0, 0, NL, 1, NULL, 3600 * S, 0, 0, 0, 0, 0, "" },
    { "decimal Age ignored", GET, NULL, 200,
      "Date: @0\nAge: 7200.0\nCache-Control: max-age=3600",
      C_NONE, 0, 0, NL, 1, NULL, 3600 * S, 0, 0, 0, 0, 0, "" },

    /* stale (4.2.4, RFC 5861) */
    { "stale-while-revalidate, stale-if-error", GET, NULL, 200,
      "Date: @0\nCache-Control: max-age=60, stale-while-revalidate=30,"
      " stale-if-error=600",
      C_NONE, 0, 0, NL, 1, NULL, 60 * S, 30 * S, 600 * S, 0, 0, 0, "" },
    { "must-revalidate forbids stale windows", GET, NULL, 200,
      "Date: @0\nCache-Control: max-age=60, stale-while-revalidate=30,"
      " stale-if-error=600, must-revalidate",
      C_NONE, 0, 0, NL, 1, NULL, 60 * S, 0, 0, 0, 0, 1, "" },
    { "proxy-revalidate too", GET, NULL, 200,
      "Date: @0\nCache-Control: max-age=60, stale-if-error=600,"
      " proxy-revalidate",
      C_NONE, 0, 0, NL, 1, NULL, 60 * S, 0, 0, 0, 0, 1, "" },
    { "no-cache: revalidate every use, never stale", GET, NULL, 200,
      "Date: @0\nCache-Control: max-age=60, no-cache, stale-if-error=60",
      C_NONE, 0, 0, NL, 1, NULL, 60 * S, 0, 0, 0, 1, 1, "" },

    { NULL, 0, NULL, 0, NULL, 0, 0, 0, 0, 0, NULL, 0, 0, 0, 0, 0, 0, NULL }
};


static void
test_policy(void)
{
    char                        strip[256];
    ngx_int_t                   rc;
    ngx_uint_t                  good;
    ngx_array_t                 valid;
    policy_case_t              *c;
    ngx_http_request_t         *r;
    ngx_http_cache_policy_t     p;
    ngx_http_cache_rfc_conf_t   conf;

    for (c = policy_cases; c->title; c++) {
        r = make_request(c->method, c->in, c->status, c->out);
        if (r == NULL) {
            ok(0, "policy: %s: setup", c->title);
            continue;
        }

        if (c->last_modified != NO_CHECK) {
            r->headers_out.last_modified_time = T0 + c->last_modified;
        }

        make_conf(r->pool, c->conf, &conf, &valid);

        rc = ngx_http_cache_response_policy(r, &conf,
                                            T0 * S + c->request_ms,
                                            T0 * S + c->response_ms, &p);

        join_fields(p.strip, strip, sizeof(strip));

        if (c->storable) {
            good = rc == NGX_OK && p.storable && p.reason == NULL
                   && p.fresh_ms == c->fresh_ms && p.swr_ms == c->swr_ms
                   && p.sie_ms == c->sie_ms
                   && (c->age_ms == NO_CHECK || p.initial_age_ms == c->age_ms)
                   && p.revalidate == c->revalidate
                   && p.must_revalidate == c->must_revalidate
                   && ngx_strcmp(strip, c->strip) == 0;

        } else {
            good = rc == NGX_OK && !p.storable && p.reason
                   && ngx_strcmp(p.reason, c->reason) == 0;
        }

        ok(good, "policy: %s", c->title);

        if (!good) {
            diag("rc %ld storable %d reason \"%s\" fresh %lld swr %lld"
                 " sie %lld age %lld revalidate %d must_revalidate %d"
                 " strip \"%s\"", (long) rc, (int) p.storable,
                 p.reason ? p.reason : "(null)", (long long) p.fresh_ms,
                 (long long) p.swr_ms, (long long) p.sie_ms,
                 (long long) p.initial_age_ms, (int) p.revalidate,
                 (int) p.must_revalidate, strip);
        }

        done_request(r);
    }
}


/* HTTP-date (RFC 9110 5.6.7), through Expires - Date */

typedef struct {
    const char  *date;
    int64_t      fresh;    /* seconds after T0, or 0: invalid (expired) */
} date_case_t;


static date_case_t  date_cases[] = {
    { "Thu, 18 Aug 2050 02:01:18 GMT", 844400878 },
    { "THU, 18 AUG 2050 02:01:18 gmt", 844400878 },
    { "Thursday, 18-Aug-50 02:01:18 GMT", 844400878 },
    { "Thu Aug 18 02:01:18 2050", 844400878 },
    { "Thu Aug  8 02:01:18 2050", 843536878 },
    { "Tue, 19 Jan 2038 14:14:08 GMT", 447523248 },
    { "Sun, 21 Nov 2286 04:46:39 GMT", BIG },
    { "Thu, 29 Feb 2024 00:00:00 GMT", 9164800 },
    { "Thu, 18 Aug 2050 02:01:18 UTC", 0 },
    { "Thu, 18 Aug 2050 02:01:18 AEST", 0 },
    { "Thu, 18 Aug 2050 02:01:18 +0000", 0 },
    { "Thu, 18 Aug 2050 02:01:18 GMT x", 0 },
    { "Thu, 18 Aug 50 02:01:18 GMT", 0 },
    { "Thu 18 Aug 2050 02:01:18 GMT", 0 },
    { "Thu, 18  Aug  2050 02:01:18 GMT", 0 },
    { "Thu, 18-Aug-2050 02:01:18 GMT", 0 },
    { "Thu, 18 Aug 2050 02.01.18 GMT", 0 },
    { "Thu, 18 Aug 2050 2:01:18 GMT", 0 },
    { "Thu, 18 Aug 2050 24:00:00 GMT", 0 },
    { "Wed, 29 Feb 2023 00:00:00 GMT", 0 },
    { "Thu, 31 Apr 2050 00:00:00 GMT", 0 },
    { "Thu, 18 Foo 2050 02:01:18 GMT", 0 },
    { "Xyz, 18 Aug 2050 02:01:18 GMT", 0 },
    { "Thursday, 18-Aug-50 02:01:18 UTC", 0 },
    { "Thu Aug 18 02:01:18 50", 0 },
    { "0", 0 },
    { "", 0 },
    { NULL, 0 }
};


static void
test_dates(void)
{
    char                        out[128];
    ngx_int_t                   rc;
    ngx_array_t                 valid;
    date_case_t                *c;
    ngx_http_request_t         *r;
    ngx_http_cache_policy_t     p;
    ngx_http_cache_rfc_conf_t   conf;

    for (c = date_cases; c->date; c++) {
        ngx_snprintf((u_char *) out, sizeof(out), "Date: @0\nExpires: %s%Z",
                     c->date);

        r = make_request(GET, NULL, 200, out);
        if (r == NULL) {
            ok(0, "date: \"%s\": setup", c->date);
            continue;
        }

        make_conf(r->pool, C_NONE, &conf, &valid);

        rc = ngx_http_cache_response_policy(r, &conf, T0 * S, T0 * S, &p);

        ok(rc == NGX_OK && p.storable && p.fresh_ms == c->fresh * S,
           "date: \"%s\" %s", c->date, c->fresh ? "valid" : "invalid");

        if (!(rc == NGX_OK && p.storable && p.fresh_ms == c->fresh * S)) {
            diag("fresh %lld", (long long) p.fresh_ms);
        }

        done_request(r);
    }
}


/* using a stored response */

typedef struct {
    const char  *title;
    const char  *in;
    int64_t      age_ms, fresh_ms;
    ngx_flag_t   must_revalidate;
    ngx_int_t    expect;
} allows_case_t;


#define FRESH  NGX_HTTP_CACHE_USE_FRESH
#define STALE  NGX_HTTP_CACHE_USE_STALE_OK
#define REVAL  NGX_HTTP_CACHE_REVALIDATE
#define BYPASS NGX_HTTP_CACHE_REQ_BYPASS

static allows_case_t  allows_cases[] = {
    { "fresh", NULL, 10 * S, 60 * S, 0, FRESH },
    { "stale", NULL, 70 * S, 60 * S, 0, REVAL },
    { "exactly at the lifetime is stale", NULL, 60 * S, 60 * S, 0, REVAL },
    { "no-cache", "Cache-Control: no-cache", 0, 60 * S, 0, REVAL },
    { "Pragma: no-cache without Cache-Control", "Pragma: no-cache",
      0, 60 * S, 0, REVAL },
    { "Pragma ignored with Cache-Control",
      "Pragma: no-cache\nCache-Control: max-stale", 10 * S, 60 * S, 0, FRESH },
    { "no-store reported", "Cache-Control: no-store", 0, 60 * S, 0, BYPASS },
    { "max-age=0", "Cache-Control: max-age=0", 0, 60 * S, 0, REVAL },
    { "max-age=5, age 5.999 s", "Cache-Control: max-age=5",
      5999, 60 * S, 0, FRESH },
    { "max-age=5, age 6 s", "Cache-Control: max-age=5",
      6 * S, 60 * S, 0, REVAL },
    { "invalid request max-age revalidates", "Cache-Control: max-age=x",
      1, 60 * S, 0, REVAL },
    { "min-fresh not left", "Cache-Control: min-fresh=20",
      50 * S, 60 * S, 0, REVAL },
    { "min-fresh left", "Cache-Control: min-fresh=20",
      30 * S, 60 * S, 0, FRESH },
    { "bare max-stale", "Cache-Control: max-stale",
      1000 * S, 60 * S, 0, STALE },
    { "max-stale vs must-revalidate", "Cache-Control: max-stale",
      1000 * S, 60 * S, 1, REVAL },
    { "max-stale=10, 10 s stale", "Cache-Control: max-stale=10",
      70 * S, 60 * S, 0, STALE },
    { "max-stale=10, 10.001 s stale", "Cache-Control: max-stale=10",
      70001, 60 * S, 0, REVAL },
    { "invalid max-stale ignored", "Cache-Control: max-stale=abc",
      70 * S, 60 * S, 0, REVAL },
    { "hostile stored numbers", "Cache-Control: max-stale=5",
      INT64_MAX, INT64_MIN, 0, REVAL },
    { "hostile stored numbers, bare max-stale", "Cache-Control: max-stale",
      INT64_MIN, INT64_MAX, 0, FRESH },
    { "fresh_ms 0 is stale at once", NULL, 0, 0, 0, REVAL },
    { NULL, NULL, 0, 0, 0, 0 }
};


static void
test_allows(void)
{
    ngx_int_t            rc;
    allows_case_t       *c;
    ngx_http_request_t  *r;

    for (c = allows_cases; c->title; c++) {
        r = make_request(GET, c->in, 200, NULL);
        if (r == NULL) {
            ok(0, "allows: %s: setup", c->title);
            continue;
        }

        rc = ngx_http_cache_request_allows(r, c->age_ms, c->fresh_ms,
                                           c->must_revalidate);

        ok(rc == c->expect, "allows: %s", c->title);

        if (rc != c->expect) {
            diag("got %ld, want %ld", (long) rc, (long) c->expect);
        }

        done_request(r);
    }
}


/* conditional requests */

typedef struct {
    const char  *title;
    ngx_uint_t   method;
    const char  *in;
    const char  *etag;
    time_t       last_modified;   /* offset from T0, or NO_CHECK: -1 */
    time_t       date;            /* offset from T0, or NO_CHECK: -1 */
    ngx_int_t    expect;
} nm_case_t;


static nm_case_t  nm_cases[] = {
    { "strong match", GET, "If-None-Match: \"abc\"", "\"abc\"",
      NL, 0, 1 },
    { "weak request tag matches", GET, "If-None-Match: W/\"abc\"",
      "\"abc\"", NL, 0, 1 },
    { "weak stored tag matches", GET, "If-None-Match: \"abc\"",
      "W/\"abc\"", NL, 0, 1 },
    { "second member matches", GET, "If-None-Match: \"x\", \"abc\"",
      "\"abc\"", NL, 0, 1 },
    { "second field line matches", GET,
      "If-None-Match: \"x\"\nIf-None-Match: \"abc\"", "\"abc\"", NL, 0, 1 },
    { "no member matches", GET, "If-None-Match: \"x\", W/\"y\"",
      "\"abc\"", NL, 0, 0 },
    { "star", GET, "If-None-Match: *", "\"abc\"", NL, 0, 1 },
    { "star without a stored tag", GET, "If-None-Match: *", "",
      NL, 0, 1 },
    { "no stored tag", GET, "If-None-Match: \"abc\"", "", NL, 0, 0 },
    { "tags compare case-sensitively", GET, "If-None-Match: \"ABC\"",
      "\"abc\"", NL, 0, 0 },
    { "lower-case w/ is no weak tag", GET, "If-None-Match: w/\"abc\"",
      "\"abc\"", NL, 0, 0 },
    { "unquoted tag", GET, "If-None-Match: abc", "\"abc\"", NL, 0, 0 },
    { "unterminated tag", GET, "If-None-Match: \"abc", "\"abc\"",
      NL, 0, 0 },
    { "If-None-Match decides over If-Modified-Since", GET,
      "If-None-Match: \"x\"\nIf-Modified-Since: @+100", "\"abc\"",
      -100, 0, 0 },
    { "If-Modified-Since after Last-Modified", GET,
      "If-Modified-Since: @0", "\"abc\"", -10, 0, 1 },
    { "If-Modified-Since equal to Last-Modified", GET,
      "If-Modified-Since: @-10", "", -10, 0, 1 },
    { "If-Modified-Since before Last-Modified", GET,
      "If-Modified-Since: @0", "", 10, 0, 0 },
    { "If-Modified-Since against Date without Last-Modified", GET,
      "If-Modified-Since: @0", "", NL, -5, 1 },
    { "If-Modified-Since, no Last-Modified nor Date", GET,
      "If-Modified-Since: @0", "", NL, NL, 0 },
    { "invalid If-Modified-Since ignored", GET,
      "If-Modified-Since: yesterday", "", -10, 0, 0 },
    { "two If-Modified-Since lines ignored", GET,
      "If-Modified-Since: @0\nIf-Modified-Since: @0", "", -10, 0, 0 },
    { "HEAD", HEAD, "If-None-Match: \"abc\"", "\"abc\"", NL, 0, 1 },
    { "POST never", POST, "If-None-Match: \"abc\"", "\"abc\"", NL, 0, 0 },
    { "no conditional", GET, NULL, "\"abc\"", -10, 0, 0 },
    { NULL, 0, NULL, NULL, 0, 0, 0 }
};


static void
test_not_modified(void)
{
    time_t               lm, date;
    ngx_int_t            rc;
    ngx_str_t            etag;
    nm_case_t           *c;
    ngx_http_request_t  *r;

    for (c = nm_cases; c->title; c++) {
        r = make_request(c->method, c->in, 200, NULL);
        if (r == NULL) {
            ok(0, "not_modified: %s: setup", c->title);
            continue;
        }

        etag.len = ngx_strlen(c->etag);
        etag.data = exact_copy(r->pool, (u_char *) c->etag, etag.len);
        lm = (c->last_modified == NO_CHECK) ? -1 : T0 + c->last_modified;
        date = (c->date == NO_CHECK) ? -1 : T0 + c->date;

        rc = ngx_http_cache_not_modified(r, &etag, lm, date);

        ok(rc == c->expect, "not_modified: %s", c->title);

        done_request(r);
    }
}


/* Vary */

typedef struct {
    const char  *title;
    const char  *vary;
    const char  *in;
    ngx_int_t    rc;
    const char  *spec;
    const char  *values;
} vary_case_t;


static vary_case_t  vary_cases[] = {
    { "empty", "", "Accept: x", NGX_OK, "", "" },
    { "only commas and spaces", " , ,, ", NULL, NGX_OK, "", "" },
    { "one field, whitespace around commas removed", "Accept-Language",
      "Accept-Language:  en-US , fr ;q=0.5 ", NGX_OK, "accept-language",
      "accept-language:en-us,fr ;q=0.5\n" },
    { "Accept-Language lower-cased", "accept-language",
      "Accept-Language: eN, De", NGX_OK, "accept-language",
      "accept-language:en,de\n" },
    { "other values keep their case", "X-A", "X-A: eN", NGX_OK, "x-a",
      "x-a:eN\n" },
    { "absent field has no ':'", "Accept-Language", NULL, NGX_OK,
      "accept-language", "accept-language\n" },
    { "empty field has ':'", "X-A", "X-A: ", NGX_OK, "x-a", "x-a:\n" },
    { "field lines joined", "X-A", "x-a: 1\nX-B: 9\nX-A: 2 , 3",
      NGX_OK, "x-a", "x-a:1,2,3\n" },
    { "order kept, names lower-cased", "X-B, x-a",
      "X-A: a\nX-B: b", NGX_OK, "x-b,x-a", "x-b:b\nx-a:a\n" },
    { "duplicates dropped", "Accept, accept ,ACCEPT", "Accept: */*",
      NGX_OK, "accept", "accept:*/*\n" },
    { "deleted request field is absent", "X-A", "!X-A: 1", NGX_OK,
      "x-a", "x-a\n" },
    { "Accept-Encoding: gzip", "Accept-Encoding",
      "Accept-Encoding: gzip, deflate, br", NGX_OK, "accept-encoding",
      "accept-encoding:gzip\n" },
    { "Accept-Encoding: gzip;q=0", "Accept-Encoding",
      "Accept-Encoding: gzip;q=0, br", NGX_OK, "accept-encoding",
      "accept-encoding:\n" },
    { "Accept-Encoding: gzip;q=0.000", "accept-encoding",
      "Accept-Encoding: gzip;q=0.000", NGX_OK, "accept-encoding",
      "accept-encoding:\n" },
    { "Accept-Encoding: GZIP ; Q=0.5", "Accept-Encoding",
      "Accept-Encoding: br, GZIP ; Q=0.5", NGX_OK, "accept-encoding",
      "accept-encoding:gzip\n" },
    { "Accept-Encoding: gzip;q=0.001", "Accept-Encoding",
      "Accept-Encoding: deflate, gzip;q=0.001", NGX_OK, "accept-encoding",
      "accept-encoding:gzip\n" },
    { "Accept-Encoding: invalid q is refusal", "Accept-Encoding",
      "Accept-Encoding: gzip;q=1.5", NGX_OK, "accept-encoding",
      "accept-encoding:\n" },
    { "Accept-Encoding: *", "Accept-Encoding", "Accept-Encoding: *",
      NGX_OK, "accept-encoding", "accept-encoding:gzip\n" },
    { "Accept-Encoding: *, gzip;q=0", "Accept-Encoding",
      "Accept-Encoding: *, gzip;q=0", NGX_OK, "accept-encoding",
      "accept-encoding:\n" },
    { "Accept-Encoding: x-gzip", "Accept-Encoding",
      "Accept-Encoding: x-gzip", NGX_OK, "accept-encoding",
      "accept-encoding:gzip\n" },
    { "Accept-Encoding: identity", "Accept-Encoding",
      "Accept-Encoding: identity", NGX_OK, "accept-encoding",
      "accept-encoding:\n" },
    { "Accept-Encoding absent", "Accept-Encoding", NULL, NGX_OK,
      "accept-encoding", "accept-encoding:\n" },
    { "Accept-Encoding on two lines", "Accept-Encoding",
      "Accept-Encoding: br\nAccept-Encoding: gzip", NGX_OK,
      "accept-encoding", "accept-encoding:gzip\n" },
    { "gzip refused on a later line wins", "Accept-Encoding",
      "Accept-Encoding: gzip\nAccept-Encoding: gzip;q=0", NGX_OK,
      "accept-encoding", "accept-encoding:\n" },
    { "Accept-Encoding with others", "Accept-Encoding, X-A",
      "X-A: 1\nAccept-Encoding: gzip", NGX_OK, "accept-encoding,x-a",
      "accept-encoding:gzip\nx-a:1\n" },
    { "*", "*", NULL, NGX_DECLINED, "", "" },
    { "* among others", "Accept, *", NULL, NGX_DECLINED, "", "" },
    { "space inside a name", "Acc ept", NULL, NGX_DECLINED, "", "" },
    { "colon inside a name", "a:b", NULL, NGX_DECLINED, "", "" },
    { NULL, NULL, NULL, 0, NULL, NULL }
};


static int
str_eq(ngx_str_t *s, const char *want)
{
    return s->len == ngx_strlen(want)
           && (s->len == 0 || ngx_memcmp(s->data, want, s->len) == 0);
}


static void
test_vary(void)
{
    u_char               buf[2048], *p;
    ngx_int_t            rc;
    ngx_str_t            vary, spec, values;
    ngx_uint_t           i, k, good;
    vary_case_t         *c;
    ngx_http_request_t  *r;

    for (c = vary_cases; c->title; c++) {
        r = make_request(GET, c->in, 200, NULL);
        if (r == NULL) {
            ok(0, "vary: %s: setup", c->title);
            continue;
        }

        vary.len = ngx_strlen(c->vary);
        vary.data = exact_copy(r->pool, (u_char *) c->vary, vary.len);

        rc = ngx_http_cache_vary_values(r, &vary, &spec, &values);

        good = rc == c->rc && str_eq(&spec, c->spec)
               && str_eq(&values, c->values);

        ok(good, "vary: %s", c->title);

        if (!good) {
            diag("rc %ld spec \"%.*s\" values \"%.*s\"", (long) rc,
                 (int) spec.len, spec.data, (int) values.len, values.data);
        }

        done_request(r);
    }

    /* the field-name bound */
    for (i = NGX_HTTP_CACHE_VARY_MAX_FIELDS;
         i <= NGX_HTTP_CACHE_VARY_MAX_FIELDS + 1;
         i++)
    {
        p = buf;
        for (k = 0; k < i; k++) {
            p = ngx_sprintf(p, "%sX-%ui", k ? "," : "", k);
        }

        r = make_request(GET, "X-1: a", 200, NULL);
        if (r == NULL) {
            ok(0, "vary: bound: setup");
            continue;
        }

        vary.len = p - buf;
        vary.data = exact_copy(r->pool, buf, vary.len);

        rc = ngx_http_cache_vary_values(r, &vary, &spec, &values);

        ok(rc == (i > NGX_HTTP_CACHE_VARY_MAX_FIELDS
                  ? NGX_DECLINED : NGX_OK),
           "vary: %lu names: %s", (unsigned long) i,
           i > NGX_HTTP_CACHE_VARY_MAX_FIELDS ? "declined" : "accepted");

        done_request(r);
    }

    /* the response's Vary lines, joined */
    r = make_request(GET, NULL, 200,
                     "Vary: Accept\nX-A: 1\n!Vary: X-Gone\n"
                     "vary: Accept-Encoding");
    if (r) {
        rc = ngx_http_cache_response_vary(r, &vary);
        ok(rc == NGX_OK && str_eq(&vary, "Accept,Accept-Encoding"),
           "response_vary: two lines joined, deleted skipped");
        done_request(r);
    }

    r = make_request(GET, NULL, 200, "X-A: 1");
    if (r) {
        rc = ngx_http_cache_response_vary(r, &vary);
        ok(rc == NGX_OK && vary.len == 0, "response_vary: none");
        done_request(r);
    }
}


static void
test_find_header(void)
{
    ngx_table_elt_t     *h;
    ngx_http_request_t  *r;

    r = make_request(GET, "A: 1\nB: 2\n!X-Key: gone\nC: 3\nx-KEY: 4\n"
                     "X-Key: 5", 200, NULL);
    if (r == NULL) {
        ok(0, "find_header: setup");
        return;
    }

    h = ngx_http_cache_find_header(&r->headers_in.headers, "X-Key", 5);
    ok(h && h->value.len == 1 && h->value.data[0] == '4',
       "find_header: first live match across list parts, any case");

    h = ngx_http_cache_find_header(&r->headers_in.headers, "X-Ke", 4);
    ok(h == NULL, "find_header: a prefix is no match");

    h = ngx_http_cache_find_header(NULL, "X-Key", 5);
    ok(h == NULL, "find_header: NULL list");

    done_request(r);
}


/*
 * Hostile bytes: random field values from an alphabet rich in the
 * grammar's delimiters, through every function.  The outcome is checked
 * for bounds only; the point is that nothing reads past a value (the
 * sanitizer build) and nothing misbehaves.
 */

static uint64_t  rnd_state = 0x9e3779b97f4a7c15ULL;

static uint32_t
rnd(void)
{
    rnd_state = rnd_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t) (rnd_state >> 33);
}


static size_t
rnd_value(u_char *buf, size_t max)
{
    static const char  alphabet[] = " \t,\"\\=;*/Wmax-ge0123456789qgzipx:"
                                    "\"\"\\,,==-";
    size_t             len, i;

    len = rnd() % max;

    for (i = 0; i < len; i++) {
        switch (rnd() % 8) {
        case 0:
            buf[i] = (u_char) rnd();   /* any byte, NUL and 0xff included */
            break;
        default:
            buf[i] = alphabet[rnd() % (sizeof(alphabet) - 1)];
        }
    }

    return len;
}


static const char  *fuzz_names[] = {
    "Cache-Control", "Pragma", "If-None-Match", "If-Modified-Since",
    "Accept-Encoding", "Authorization", "Vary", "Date", "Expires", "Age",
    "Last-Modified", "X-A", "Set-Cookie"
};


static ngx_uint_t  fuzz_statuses[] = {
    100, 200, 203, 204, 206, 299, 302, 304, 404, 500, 599
};

static ngx_uint_t  fuzz_methods[] = { GET, HEAD, POST };


static void
test_fuzz(void)
{
    u_char                      buf[512];
    size_t                      len;
    ngx_int_t                   rc;
    ngx_str_t                   vary, spec, values, etag;
    ngx_uint_t                  i, k, n, bad;
    ngx_array_t                 valid;
    ngx_http_request_t         *r;
    ngx_http_cache_cc_t         cc;
    ngx_http_cache_policy_t     p;
    ngx_http_cache_rfc_conf_t   conf;

    bad = 0;

    for (i = 0; i < 20000; i++) {
        r = make_request(fuzz_methods[rnd() % 3], NULL,
                         fuzz_statuses[rnd() % 11], NULL);
        if (r == NULL) {
            bad++;
            continue;
        }

        if (rnd() % 4 == 0) {
            r->headers_out.last_modified_time = T0 - (time_t) (rnd() % 5000);
        }

        n = 1 + rnd() % 6;
        for (k = 0; k < n; k++) {
            len = rnd_value(buf, (rnd() % 16) ? 64 : sizeof(buf));
            (void) add_header(r->pool, &r->headers_in.headers,
                              fuzz_names[rnd() % 13], buf, len, 1);

            len = rnd_value(buf, (rnd() % 16) ? 64 : sizeof(buf));
            (void) add_header(r->pool, &r->headers_out.headers,
                              fuzz_names[rnd() % 13], buf, len, 1);
        }

        make_conf(r->pool, rnd() % 7, &conf, &valid);

        if (ngx_http_cache_cc_parse(r->pool, &r->headers_out.headers, &cc)
            != NGX_OK
            || cc.max_age < -1 || cc.max_age > BIG
            || cc.s_maxage < -1 || cc.s_maxage > BIG
            || cc.stale_while_revalidate < -1
            || cc.stale_while_revalidate > BIG
            || cc.stale_if_error < -1 || cc.stale_if_error > BIG
            || cc.min_fresh < -1 || cc.min_fresh > BIG
            || (cc.max_stale > BIG && cc.max_stale != INT64_MAX)
            || cc.max_stale < -1)
        {
            bad++;
        }

        rc = ngx_http_cache_response_policy(r, &conf, T0 * S - 100,
                                            T0 * S, &p);
        if (rc != NGX_OK || (p.storable && p.reason)
            || (!p.storable && p.reason == NULL)
            || p.fresh_ms < 0 || p.fresh_ms > BIG * S
            || p.initial_age_ms < 0)
        {
            bad++;
        }

        (void) ngx_http_cache_request_allows(r, (int64_t) rnd() * 1000,
                                             (int64_t) rnd() * 1000,
                                             rnd() % 2);

        len = rnd_value(buf, 64);
        etag.data = exact_copy(r->pool, buf, len);
        etag.len = len;
        rc = ngx_http_cache_not_modified(r, &etag, T0, T0);
        if (rc != 0 && rc != 1) {
            bad++;
        }

        if (ngx_http_cache_response_vary(r, &vary) != NGX_OK) {
            bad++;
        }

        rc = ngx_http_cache_vary_values(r, &vary, &spec, &values);
        if (rc == NGX_ERROR) {
            bad++;
        }

        len = rnd_value(buf, sizeof(buf));
        vary.data = exact_copy(r->pool, buf, len);
        vary.len = len;
        (void) ngx_http_cache_vary_values(r, &vary, &spec, &values);

        done_request(r);
    }

    ok(bad == 0, "fuzz: 20000 random header sets, results within bounds");
}


/* one field value of 1 MB: digits, then commas, then random bytes */
static void
test_huge(void)
{
    size_t                len, i;
    u_char               *buf;
    ngx_str_t             vary, spec, values;
    ngx_http_request_t   *r;
    ngx_http_cache_cc_t   cc;

    len = 1024 * 1024;
    buf = ngx_alloc(len, tlog);
    if (buf == NULL) {
        ok(0, "huge: setup");
        return;
    }

    r = make_request(GET, NULL, 200, NULL);
    if (r == NULL) {
        ngx_free(buf);
        ok(0, "huge: setup");
        return;
    }

    ngx_memcpy(buf, "max-age=", 8);
    ngx_memset(buf + 8, '9', len - 8);
    (void) add_header(r->pool, &r->headers_out.headers, "Cache-Control",
                      buf, len, 1);

    ok(ngx_http_cache_cc_parse(r->pool, &r->headers_out.headers, &cc)
       == NGX_OK && cc.max_age == BIG,
       "huge: 1 MB of digits in max-age clamps to 2^31");

    done_request(r);

    r = make_request(GET, NULL, 200, NULL);
    if (r == NULL) {
        ngx_free(buf);
        return;
    }

    ngx_memset(buf, ',', len);
    vary.data = buf;
    vary.len = len;

    ok(ngx_http_cache_vary_values(r, &vary, &spec, &values) == NGX_OK
       && spec.len == 0 && values.len == 0,
       "huge: 1 MB of commas in Vary is an empty Vary");

    for (i = 0; i < len; i++) {
        buf[i] = (u_char) rnd();
    }

    (void) add_header(r->pool, &r->headers_out.headers, "Cache-Control",
                      buf, len, 1);
    (void) add_header(r->pool, &r->headers_in.headers, "If-None-Match",
                      buf, len, 1);

    ok(ngx_http_cache_cc_parse(r->pool, &r->headers_out.headers, &cc)
       == NGX_OK, "huge: 1 MB of random bytes in Cache-Control");

    vary.data = buf;
    (void) ngx_http_cache_not_modified(r, &vary, -1, -1);
    ok(1, "huge: 1 MB of random bytes in If-None-Match");

    done_request(r);
    ngx_free(buf);
}


/*
 * The cost of the calls the module makes per request, for the report (a
 * diagnostic line, not an assertion: it depends on the machine).
 */
static void
test_cost(void)
{
    int64_t                     t0, t1, t2, t3;
    ngx_uint_t                  i, n;
    ngx_str_t                   vary, spec, values;
    ngx_array_t                 valid;
    ngx_http_request_t         *r;
    ngx_http_cache_policy_t     p;
    ngx_http_cache_rfc_conf_t   conf;

    n = 100000;

    r = make_request(GET, "Host: example.com\nUser-Agent: Mozilla/5.0\n"
                     "Accept: */*\nAccept-Encoding: gzip, deflate, br\n"
                     "Accept-Language: en-US,en;q=0.9\n"
                     "Cookie: a=b; c=d\nCache-Control: max-age=0",
                     200, "Date: @0\nContent-Type: text/html\n"
                     "Cache-Control: public, max-age=60, "
                     "stale-while-revalidate=30\nETag: \"abc\"\n"
                     "Last-Modified: @-1000\nVary: Accept-Encoding");
    if (r == NULL) {
        ok(0, "cost: setup");
        return;
    }

    make_conf(r->pool, C_VALID, &conf, &valid);
    vary.data = (u_char *) "Accept-Encoding, Accept-Language";
    vary.len = sizeof("Accept-Encoding, Accept-Language") - 1;

    t0 = ngx_edge_mono_usec();

    for (i = 0; i < n; i++) {
        (void) ngx_http_cache_response_policy(r, &conf, T0 * S, T0 * S, &p);
    }

    t1 = ngx_edge_mono_usec();

    for (i = 0; i < n; i++) {
        (void) ngx_http_cache_request_allows(r, 1000, 60000, 0);
    }

    t2 = ngx_edge_mono_usec();

    for (i = 0; i < n; i++) {
        (void) ngx_http_cache_vary_values(r, &vary, &spec, &values);
    }

    t3 = ngx_edge_mono_usec();

    diag("cost: response_policy %lld ns, request_allows %lld ns,"
         " vary_values (2 names) %lld ns per call, %lu calls each",
         (long long) ((t1 - t0) * 1000 / (int64_t) n),
         (long long) ((t2 - t1) * 1000 / (int64_t) n),
         (long long) ((t3 - t2) * 1000 / (int64_t) n), (unsigned long) n);

    ok(p.storable && p.fresh_ms == 60 * S,
       "cost: the measured store decision is the expected one");

    done_request(r);
}


static char *
ngx_cache_rfc_unit_test(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    tlog = cf->log;
    tests = 0;
    failures = 0;

    test_cc();
    test_policy();
    test_dates();
    test_allows();
    test_not_modified();
    test_vary();
    test_find_header();
    test_huge();
    test_fuzz();
    test_cost();

    fprintf(stderr, "done %lu\n", (unsigned long) tests);
    fflush(stderr);

    if (failures) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "cache_rfc_unit_test: %ui of %ui failed",
                           failures, tests);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static ngx_command_t  ngx_cache_rfc_unit_test_commands[] = {

    { ngx_string("cache_rfc_unit_test"),
      NGX_MAIN_CONF|NGX_DIRECT_CONF|NGX_CONF_NOARGS,
      ngx_cache_rfc_unit_test,
      0,
      0,
      NULL },

      ngx_null_command
};


static ngx_core_module_t  ngx_cache_rfc_unit_test_module_ctx = {
    ngx_string("cache_rfc_unit_test"),
    NULL,
    NULL
};


ngx_module_t  ngx_cache_rfc_unit_test_module = {
    NGX_MODULE_V1,
    &ngx_cache_rfc_unit_test_module_ctx,
    ngx_cache_rfc_unit_test_commands,
    NGX_CORE_MODULE,
    NULL, NULL, NULL, NULL, NULL, NULL, NULL,
    NGX_MODULE_V1_PADDING
};


/* what auto/module would generate for a dynamic module */

ngx_module_t  *ngx_modules[] = {
    &ngx_cache_rfc_unit_test_module,
    NULL
};

char  *ngx_module_names[] = {
    "ngx_cache_rfc_unit_test_module",
    NULL
};

char  *ngx_module_order[] = {
    NULL
};
