/*
 * ngx_http_ratelimit_module: the RateLimit response headers (IETF
 * draft and legacy X-RateLimit-*), Retry-After, and the variables.
 */

#include "ngx_http_ratelimit_module.h"



static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;


/* response headers */

static ngx_int_t
ngx_http_ratelimit_add_header(ngx_http_request_t *r, ngx_str_t *name,
    u_char *value, size_t len)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key = *name;
    h->value.data = value;
    h->value.len = len;
#if (nginx_version >= 1023000)
    h->next = NULL;
#endif

    return NGX_OK;
}


/* the draft's quota: burst + 1 requests, refilled over (burst + 1)
 * intervals, which is what the bucket really grants; for a sliding window,
 * its requests per window and the window */

static void
ngx_http_ratelimit_quota(ngx_http_ratelimit_check_t *chk, int64_t *q,
    int64_t *w)
{
    if (chk->zone->algorithm == NGX_HTTP_RATELIMIT_SLIDING) {
        *q = chk->sw.limit;
        *w = (chk->sw.window + 999999) / 1000000;
        return;
    }

    *q = chk->gcra.tau / chk->gcra.interval + 1;
    *w = (*q * chk->gcra.interval + 999999) / 1000000;
}


/*
 * The headers of every response that passes: written by hand rather
 * than with ngx_sprintf(), whose format parsing costs about a hundred
 * instructions a call, six calls a response.
 */

static u_char *
ngx_http_ratelimit_put_int(u_char *p, int64_t v)
{
    u_char    buf[NGX_INT64_LEN], *b;
    uint64_t  u;

    if (v < 0) {
        *p++ = '-';
        u = (uint64_t) 0 - (uint64_t) v;

    } else {
        u = (uint64_t) v;
    }

    b = buf + sizeof(buf);

    do {
        *--b = (u_char) ('0' + u % 10);
        u /= 10;
    } while (u);

    return ngx_cpymem(p, b, buf + sizeof(buf) - b);
}


/* "zone" or "zone/tier", quoted */

static u_char *
ngx_http_ratelimit_put_name(u_char *p, ngx_http_ratelimit_check_t *chk)
{
    *p++ = '"';
    p = ngx_cpymem(p, chk->zone->name.data, chk->zone->name.len);

    if (chk->tier) {
        *p++ = '/';
        p = ngx_cpymem(p, chk->tier->name.data, chk->tier->name.len);
    }

    *p++ = '"';

    return p;
}


static ngx_int_t
ngx_http_ratelimit_draft_headers(ngx_http_request_t *r,
    ngx_http_ratelimit_ctx_t *ctx)
{
    u_char                      *policy, *state, *p, *s;
    size_t                       len;
    int64_t                      q, w;
    ngx_uint_t                   i, n;
    ngx_http_ratelimit_check_t  *chk;

    static ngx_str_t  policy_name = ngx_string("RateLimit-Policy");
    static ngx_str_t  state_name = ngx_string("RateLimit");

    len = 0;

    for (i = 0; i < ctx->nchecks; i++) {
        chk = &ctx->checks[i];
        len += chk->zone->name.len + 1
               + (chk->tier ? chk->tier->name.len : 0)
               + sizeof("\"\";q=;w=, ") + 2 * NGX_INT64_LEN;
    }

    policy = ngx_pnalloc(r->pool, 2 * len);
    if (policy == NULL) {
        return NGX_ERROR;
    }

    state = policy + len;
    p = policy;
    s = state;
    n = 0;

    for (i = 0; i < ctx->nchecks; i++) {
        chk = &ctx->checks[i];

        if (chk->status == NGX_HTTP_RATELIMIT_FAILED_OPEN
            || chk->status == NGX_HTTP_RATELIMIT_FAILED_CLOSED)
        {
            continue;     /* nothing known about this limit */
        }

        if (n++) {
            *p++ = ','; *p++ = ' ';
            *s++ = ','; *s++ = ' ';
        }

        ngx_http_ratelimit_quota(chk, &q, &w);

        p = ngx_http_ratelimit_put_name(p, chk);
        s = ngx_http_ratelimit_put_name(s, chk);

        p = ngx_cpymem(p, ";q=", 3);
        p = ngx_http_ratelimit_put_int(p, q);
        p = ngx_cpymem(p, ";w=", 3);
        p = ngx_http_ratelimit_put_int(p, w);

        s = ngx_cpymem(s, ";r=", 3);
        s = ngx_http_ratelimit_put_int(s, ngx_http_ratelimit_remaining(chk));
        s = ngx_cpymem(s, ";t=", 3);
        s = ngx_http_ratelimit_put_int(s,
                                   (chk->verdict.reset + 999999) / 1000000);
    }

    if (n == 0) {
        return NGX_OK;
    }

    if (ngx_http_ratelimit_add_header(r, &policy_name, policy, p - policy)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_ratelimit_add_header(r, &state_name, state, s - state);
}


static ngx_int_t
ngx_http_ratelimit_legacy_headers(ngx_http_request_t *r,
    ngx_http_ratelimit_ctx_t *ctx)
{
    u_char                      *p;
    int64_t                      q, w, remaining;
    ngx_uint_t                   i;
    ngx_http_ratelimit_check_t  *chk, *tightest;

    static ngx_str_t  limit = ngx_string("X-RateLimit-Limit");
    static ngx_str_t  left = ngx_string("X-RateLimit-Remaining");
    static ngx_str_t  reset = ngx_string("X-RateLimit-Reset");

    tightest = NULL;
    remaining = 0;

    for (i = 0; i < ctx->nchecks; i++) {
        chk = &ctx->checks[i];

        if (chk->status == NGX_HTTP_RATELIMIT_FAILED_OPEN
            || chk->status == NGX_HTTP_RATELIMIT_FAILED_CLOSED)
        {
            continue;
        }

        if (tightest == NULL
            || ngx_http_ratelimit_remaining(chk) < remaining)
        {
            tightest = chk;
            remaining = ngx_http_ratelimit_remaining(chk);
        }
    }

    if (tightest == NULL) {
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, 3 * NGX_INT64_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_http_ratelimit_quota(tightest, &q, &w);

    if (ngx_http_ratelimit_add_header(r, &limit, p,
                                      ngx_sprintf(p, "%L", q) - p)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    p += NGX_INT64_LEN;

    if (ngx_http_ratelimit_add_header(r, &left, p,
                                      ngx_sprintf(p, "%L", remaining) - p)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    p += NGX_INT64_LEN;

    return ngx_http_ratelimit_add_header(r, &reset, p,
               ngx_sprintf(p, "%L",
                           (tightest->verdict.reset + 999999) / 1000000)
               - p);
}


static ngx_int_t
ngx_http_ratelimit_header_filter(ngx_http_request_t *r)
{
    u_char                         *p;
    ngx_http_ratelimit_ctx_t       *ctx;
    ngx_http_ratelimit_loc_conf_t  *rlcf;

    static ngx_str_t  retry_after = ngx_string("Retry-After");

    if (r != r->main) {
        return ngx_http_next_header_filter(r);
    }

    ctx = ngx_http_ratelimit_get_ctx(r);

    if (ctx == NULL || !ctx->done || ctx->nchecks == 0) {
        return ngx_http_next_header_filter(r);
    }

    rlcf = ngx_http_get_module_loc_conf(r, ngx_http_ratelimit_module);

    if (ctx->status >= NGX_HTTP_RATELIMIT_REJECTED && ctx->retry > 0) {
        p = ngx_pnalloc(r->pool, NGX_INT64_LEN);
        if (p == NULL) {
            return NGX_ERROR;
        }

        if (ngx_http_ratelimit_add_header(r, &retry_after, p,
                ngx_sprintf(p, "%L", (ctx->retry + 999999) / 1000000) - p)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    switch (rlcf->headers) {

    case NGX_HTTP_RATELIMIT_HEADERS_DRAFT:
        if (ngx_http_ratelimit_draft_headers(r, ctx) != NGX_OK) {
            return NGX_ERROR;
        }
        break;

    case NGX_HTTP_RATELIMIT_HEADERS_LEGACY:
        if (ngx_http_ratelimit_legacy_headers(r, ctx) != NGX_OK) {
            return NGX_ERROR;
        }
        break;

    default:
        break;
    }

    return ngx_http_next_header_filter(r);
}


ngx_int_t
ngx_http_ratelimit_header_filter_init(ngx_conf_t *cf)
{
    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_ratelimit_header_filter;

    return NGX_OK;
}


static ngx_int_t ngx_http_ratelimit_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);


/* variables */

static ngx_http_variable_t  ngx_http_ratelimit_vars[] = {

    { ngx_string("ratelimit_status"), NULL, ngx_http_ratelimit_variable,
      0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("ratelimit_remaining"), NULL, ngx_http_ratelimit_variable,
      1, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("ratelimit_reset"), NULL, ngx_http_ratelimit_variable,
      2, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("ratelimit_rate"), NULL, ngx_http_ratelimit_variable,
      3, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("ratelimit_banned"), NULL, ngx_http_ratelimit_variable,
      4, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


/* $ratelimit_rate: the rate each limit applied, "zone=12.5r/s" (adaptive
 * zones move it), comma-separated */

static ngx_int_t
ngx_http_ratelimit_rate_variable(ngx_http_request_t *r,
    ngx_http_ratelimit_ctx_t *ctx, ngx_http_variable_value_t *v)
{
    u_char                      *p;
    size_t                       len;
    ngx_uint_t                   i;
    ngx_http_ratelimit_check_t  *chk;

    len = 0;

    for (i = 0; i < ctx->nchecks; i++) {
        len += ctx->checks[i].zone->name.len + 2 + NGX_INT64_LEN + 8;
    }

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    v->data = p;

    for (i = 0; i < ctx->nchecks; i++) {
        chk = &ctx->checks[i];

        if (chk->rate == NULL) {
            continue;     /* decided before its rate was known */
        }

        if (p != v->data) {
            *p++ = ',';
        }

        p = ngx_sprintf(p, "%V=", &chk->zone->name);
        p = ngx_http_ratelimit_print_rate(p, chk->rate, chk->factor);
    }

    v->len = p - v->data;

    return NGX_OK;
}


static ngx_int_t
ngx_http_ratelimit_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                    *p;
    ngx_http_ratelimit_ctx_t  *ctx;

    ctx = ngx_http_ratelimit_get_ctx(r->main);

    if (ctx == NULL || !ctx->done || ctx->status == NGX_HTTP_RATELIMIT_NONE)
    {
        v->not_found = 1;
        return NGX_OK;
    }

    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    if (data == 0) {
        v->data = ngx_http_ratelimit_status_names[ctx->status].data;
        v->len = ngx_http_ratelimit_status_names[ctx->status].len;
        return NGX_OK;
    }

    if (data == 3) {
        return ngx_http_ratelimit_rate_variable(r, ctx, v);
    }

    if (data == 4) {
        v->len = 1;
        v->data = (u_char *) (ctx->status == NGX_HTTP_RATELIMIT_BANNED
                              ? "1" : "0");
        return NGX_OK;
    }

    if (data == 1 && ctx->remaining < 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, NGX_INT64_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    v->data = p;
    v->len = ngx_sprintf(p, "%L", data == 1 ? ctx->remaining
                                            : (ctx->reset + 999999) / 1000000)
             - p;

    return NGX_OK;
}


ngx_int_t
ngx_http_ratelimit_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_ratelimit_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}
