/*
 * The store: a header filter decides (RFC 9111 rules, the operator's
 * predicates, the size cap) and writes the entry's prefix; a body filter
 * copies (or deflates) each buffer as it passes to the client, and after
 * the last one sends SET ... PX to Redis without waiting for the answer.
 * The response itself is never held back or changed by the store.
 *
 * The same filters serve a stale entry when the origin fails (an error or
 * a timeout reaching it, a status in edge_cache_use_stale, or within the
 * entry's stale-if-error window): the origin's or nginx's error response
 * is replaced, headers and body, by the entry.  And they are where the
 * background update subrequest's response ends: stored, sent nowhere.
 *
 * Abandoned, without a word to the client: a body past edge_cache_max_size,
 * a body that nginx keeps in a temporary file (the bytes are not in
 * memory), a body shorter than its Content-Length, a response that ends
 * without its last buffer (upstream error, client gone).
 */

#include "ngx_http_cache_module.h"
#include "ngx_edge_zlib.h"
#include "ngx_http_cache_l1.h"
#include "ngx_http_cache_purge.h"
#include "ngx_http_cache_entry.h"


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;
static ngx_http_output_body_filter_pt    ngx_http_next_body_filter;


static void ngx_http_cache_capture(ngx_http_request_t *r,
    ngx_http_cache_ctx_t *ctx, ngx_chain_t *in);
static void ngx_http_cache_store_reply(void *data, redisReply *reply,
    ngx_int_t rc);
static void ngx_http_cache_store_revalidated(ngx_http_request_t *r,
    ngx_http_cache_ctx_t *ctx, ngx_http_cache_loc_conf_t *clcf);
static ngx_int_t ngx_http_cache_build_headers(ngx_http_request_t *r,
    ngx_http_cache_ctx_t *ctx, ngx_http_cache_loc_conf_t *clcf,
    ngx_str_t *out);
static void ngx_http_cache_finish_store(ngx_http_request_t *r,
    ngx_http_cache_ctx_t *ctx, ngx_http_cache_loc_conf_t *clcf);
static ngx_int_t ngx_http_cache_reset_headers(ngx_http_request_t *r);
static ngx_flag_t ngx_http_cache_store_backlogged(ngx_http_request_t *r,
    ngx_http_cache_ctx_t *ctx, ngx_http_cache_loc_conf_t *clcf);
static ngx_flag_t ngx_http_cache_clean_value(ngx_str_t *v);


/* hop-by-hop fields and those the cache recomputes on every hit */
static ngx_str_t  ngx_http_cache_unstored[] = {
    ngx_string("Connection"),
    ngx_string("Keep-Alive"),
    ngx_string("Proxy-Connection"),
    ngx_string("Proxy-Authenticate"),
    ngx_string("Proxy-Authorization"),
    ngx_string("TE"),
    ngx_string("Trailer"),
    ngx_string("Transfer-Encoding"),
    ngx_string("Upgrade"),
    ngx_string("Content-Length"),
    ngx_string("Content-Type"),
    ngx_string("Age"),
    ngx_string("Cache-Status"),
    ngx_string("Accept-Ranges"),      /* nginx's range filter sends its own */
    ngx_null_string
};


static void
ngx_http_cache_unlock(ngx_http_request_t *r, ngx_http_cache_ctx_t *ctx)
{
    ngx_http_cache_loc_conf_t  *clcf;

    if (!ctx->lock_owned) {
        return;
    }

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_cache_module);

    if (clcf->zone) {
        ngx_http_cache_release_lock(ctx, clcf->zone);
    }
}


static ngx_flag_t
ngx_http_cache_in_list(ngx_str_t *name, ngx_str_t *list, ngx_uint_t n)
{
    ngx_uint_t  i;

    for (i = 0; n ? i < n : list[i].len != 0; i++) {
        if (name->len == list[i].len
            && ngx_strncasecmp(name->data, list[i].data, name->len) == 0)
        {
            return 1;
        }
    }

    return 0;
}


/*
 * RFC 9110 7.6.1, RFC 9111 3.1: the fields the origin named in its
 * Connection header are hop-by-hop, for this connection only; the
 * upstream module hides Connection itself but passes the fields it
 * names on, so they are recognised here and not stored.
 */

static ngx_flag_t
ngx_http_cache_connection_option(ngx_http_request_t *r, ngx_str_t *name)
{
    ngx_table_elt_t  *h;

    if (r->upstream == NULL) {
        return 0;
    }

    h = r->upstream->headers_in.connection;

    while (h) {
        if (ngx_http_cache_has_token(&h->value, (const char *) name->data,
                                     name->len))
        {
            return 1;
        }

#if (nginx_version >= 1023000)
        h = h->next;            /* the field's other lines */
#else
        h = NULL;
#endif
    }

    return 0;
}


static ngx_flag_t
ngx_http_cache_stored_header(ngx_http_cache_ctx_t *ctx, ngx_str_t *name,
    ngx_flag_t set_cookie)
{
    ngx_array_t  *strip;

    if (ngx_http_cache_in_list(name, ngx_http_cache_unstored, 0)
        || ngx_http_cache_connection_option(ctx->request, name))
    {
        return 0;
    }

    if (!set_cookie && name->len == sizeof("Set-Cookie") - 1
        && ngx_strncasecmp(name->data, (u_char *) "Set-Cookie",
                           name->len) == 0)
    {
        return 0;
    }

    strip = ctx->policy.strip;

    if (strip && strip->nelts
        && ngx_http_cache_in_list(name, strip->elts, strip->nelts))
    {
        return 0;
    }

    return 1;
}


/* a value that would break the stored format (CR, LF, NUL) is not stored:
 * nginx would not have sent it either */

static ngx_flag_t
ngx_http_cache_clean_value(ngx_str_t *v)
{
    u_char  *p, *end;

    for (p = v->data, end = p + v->len; p < end; p++) {
        if (*p == CR || *p == LF || *p == '\0') {
            return 0;
        }
    }

    return 1;
}


/* a header block being sized (p == NULL) or written */
typedef struct {
    u_char      *p;
    size_t       len;
} ngx_http_cache_hdrs_t;


static void
ngx_http_cache_emit(ngx_http_cache_hdrs_t *hb, ngx_str_t *name,
    ngx_str_t *value, ngx_str_t *suffix)
{
    size_t  len;

    len = name->len + 2 + value->len + (suffix ? suffix->len : 0) + 2;
    hb->len += len;

    if (hb->p == NULL) {
        return;
    }

    hb->p = ngx_cpymem(hb->p, name->data, name->len);
    *hb->p++ = ':'; *hb->p++ = ' ';
    hb->p = ngx_cpymem(hb->p, value->data, value->len);

    if (suffix) {
        hb->p = ngx_cpymem(hb->p, suffix->data, suffix->len);
    }

    *hb->p++ = CR; *hb->p++ = LF;
}


ngx_flag_t
ngx_http_cache_has_token(ngx_str_t *list, const char *token, size_t len)
{
    u_char  *p, *end;

    p = list->data;
    end = p + list->len;

    for ( ;; ) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ',')) {
            p++;
        }

        if (p == end) {
            return 0;
        }

        if ((size_t) (end - p) >= len && ngx_strncasecmp(p, (u_char *) token,
                                                          len) == 0
            && (p + len == end || p[len] == ',' || p[len] == ' '
                || p[len] == '\t'))
        {
            return 1;
        }

        while (p < end && *p != ',') {
            p++;
        }
    }
}


/*
 * The headers block: the response's own fields minus the unstored ones,
 * Content-Type from r->headers_out, the origin's Date (nginx hides it by
 * default and sends its own), Vary with Accept-Encoding added when the
 * cache compresses (one entry serves both encodings).
 */

static void
ngx_http_cache_headers_pass(ngx_http_request_t *r, ngx_http_cache_ctx_t *ctx,
    ngx_http_cache_loc_conf_t *clcf, ngx_http_cache_hdrs_t *hb,
    ngx_str_t *date)
{
    ngx_str_t         name;
    ngx_str_t         ct = ngx_string("Content-Type");
    ngx_str_t         dt = ngx_string("Date");
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    if (r->headers_out.content_type.len) {
        ngx_http_cache_emit(hb, &ct, &r->headers_out.content_type, NULL);
    }

    if (date->len) {
        ngx_http_cache_emit(hb, &dt, date, NULL);
    }

    /* (Vary: Accept-Encoding of a compressed entry is not stored: a hit
     * adds it from the entry's gzip flag, 23 bytes fewer per entry) */

    part = &r->headers_out.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].hash == 0) {
            continue;
        }

        name = h[i].key;

        if (!ngx_http_cache_stored_header(ctx, &name,
                                          clcf->rfc.store_set_cookie)
            || !ngx_http_cache_clean_value(&h[i].value))
        {
            continue;
        }

        ngx_http_cache_emit(hb, &name, &h[i].value, NULL);
    }
}


static ngx_int_t
ngx_http_cache_build_headers(ngx_http_request_t *r, ngx_http_cache_ctx_t *ctx,
    ngx_http_cache_loc_conf_t *clcf, ngx_str_t *out)
{
    u_char                 *datebuf;
    ngx_str_t               date;
    ngx_http_cache_hdrs_t   hb;

    ngx_str_null(&date);

    if (r->headers_out.date == NULL) {
        if (r->upstream && r->upstream->headers_in.date
            && ngx_http_cache_clean_value(&r->upstream->headers_in.date->value))
        {
            date = r->upstream->headers_in.date->value;

        } else {
            datebuf = ngx_pnalloc(r->pool, sizeof("Mon, 28 Sep 1970 06:00:00 GMT"));
            if (datebuf == NULL) {
                return NGX_ERROR;
            }

            date.data = datebuf;
            date.len = ngx_http_time(datebuf, ngx_time()) - datebuf;
        }
    }

    hb.p = NULL;
    hb.len = 0;
    ngx_http_cache_headers_pass(r, ctx, clcf, &hb, &date);

    if (hb.len > NGX_HTTP_CACHE_ENTRY_HDRS_MAX) {
        return NGX_DECLINED;
    }

    out->data = ngx_pnalloc(r->pool, hb.len);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    hb.p = out->data;
    hb.len = 0;
    ngx_http_cache_headers_pass(r, ctx, clcf, &hb, &date);

    out->len = hb.len;

    return NGX_OK;
}


/*
 * Stored gzip-compressed: a body of a type in edge_cache_compress_types,
 * not encoded already, that the origin lets us transform (no-transform:
 * RFC 9110 7.7), and not known to be small: under
 * NGX_HTTP_CACHE_COMPRESS_MIN bytes gzip saves a few dozen bytes at most
 * (its framing alone is 18) and would cost what compression costs every
 * response: a weak ETag, Vary: Accept-Encoding, an inflate per client
 * without gzip.
 */

#define NGX_HTTP_CACHE_COMPRESS_MIN  256

static ngx_flag_t
ngx_http_cache_compressible(ngx_http_request_t *r, ngx_http_cache_ctx_t *ctx,
    ngx_http_cache_loc_conf_t *clcf)
{
    if (!clcf->compress || ctx->policy.no_transform
        || r->headers_out.content_encoding
        || r->headers_out.content_type.len == 0
        || (r->headers_out.content_length_n >= 0
            && r->headers_out.content_length_n < NGX_HTTP_CACHE_COMPRESS_MIN))
    {
        return 0;
    }

    return ngx_http_test_content_type(r, &clcf->compress_types) != NULL;
}




/* as nginx's gzip filter: a smaller window and less memory for a small
 * body of known length (deflate's state is 256 KB at the defaults) */

static ngx_int_t
ngx_http_cache_deflate_init(ngx_http_request_t *r, ngx_http_cache_ctx_t *ctx,
    ngx_http_cache_loc_conf_t *clcf)
{
    int  wbits, memlevel;

    wbits = MAX_WBITS;
    memlevel = MAX_MEM_LEVEL - 1;

    if (ctx->expect_len > 0) {
        while (ctx->expect_len < ((off_t) 1 << (wbits - 1)) && wbits > 9) {
            wbits--;
            memlevel--;
        }

        if (memlevel < 1) {
            memlevel = 1;
        }
    }

    ngx_edge_zlib_use_pool(&ctx->zstream, r->pool);

    if (deflateInit2(&ctx->zstream, (int) clcf->compress_level, Z_DEFLATED,
                     wbits + 16, memlevel, Z_DEFAULT_STRATEGY)
        != Z_OK)
    {
        return NGX_ERROR;
    }

    ctx->zinit = 1;

    return NGX_OK;
}


static void
ngx_http_cache_abandon(ngx_http_request_t *r, ngx_http_cache_ctx_t *ctx,
    const char *why)
{
    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "edge_cache: not stored: %s", why);

    if (ctx->zinit) {
        deflateEnd(&ctx->zstream);
        ctx->zinit = 0;
    }

    ctx->storing = 0;

    ngx_http_cache_unlock(r, ctx);
}


static uint64_t
ngx_http_cache_new_epoch(void)
{
    return ((uint64_t) (ngx_random() & 0x7fffffff) << 32)
           ^ ((uint64_t) ngx_random() << 1) ^ (uint64_t) ngx_pid;
}


static ngx_int_t
ngx_http_cache_begin_store(ngx_http_request_t *r, ngx_http_cache_ctx_t *ctx,
    ngx_http_cache_loc_conf_t *clcf)
{
    size_t                   size;
    int64_t                  now;
    ngx_int_t                rc;
    ngx_str_t                vary, headers;
    ngx_http_cache_entry_t   e;

    if (r->method != NGX_HTTP_GET || r->header_only) {
        return NGX_DECLINED;
    }

    if (clcf->no_store
        && ngx_http_test_predicates(r, clcf->no_store) == NGX_DECLINED)
    {
        return NGX_DECLINED;
    }

    if (clcf->min_uses > 1 && ctx->status == NGX_HTTP_CACHE_ST_MISS
        && ctx->uses < clcf->min_uses && !ctx->background)
    {
        /* not requested often enough yet (a key the counter has not seen,
         * Redis down, counts 0); not a hit-for-miss either */
        return NGX_BUSY;
    }

    if (r->headers_out.content_length_n > (off_t) clcf->max_size) {
        return NGX_DECLINED;
    }

    if (ngx_http_cache_store_backlogged(r, ctx, clcf)) {
        return NGX_BUSY;
    }

    now = ngx_edge_wall_usec() / 1000;

    if (ngx_http_cache_response_policy(r, &clcf->rfc, ctx->request_time, now,
                                       &ctx->policy)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (!ctx->policy.storable) {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "edge_cache: not storable: %s",
                       ctx->policy.reason ? ctx->policy.reason : "");
        return NGX_DECLINED;
    }

    if (ngx_http_cache_response_vary(r, &vary) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_str_null(&ctx->vary_spec);
    ngx_str_null(&ctx->vary_values);

    if (vary.len) {
        rc = ngx_http_cache_vary_values(r, &vary, &ctx->vary_spec,
                                        &ctx->vary_values);
        if (rc != NGX_OK) {
            /* Vary: * */
            return NGX_DECLINED;
        }

        if (ctx->vary_spec.len > NGX_HTTP_CACHE_ENTRY_VARY_MAX
            || ctx->vary_values.len > NGX_HTTP_CACHE_ENTRY_VARY_MAX)
        {
            return NGX_DECLINED;
        }
    }

    ctx->expect_len = r->headers_out.content_length_n;
    ctx->gzip = ngx_http_cache_compressible(r, ctx, clcf);

    rc = ngx_http_cache_build_headers(r, ctx, clcf, &headers);
    if (rc != NGX_OK) {
        return rc;
    }

    if (ctx->epoch == 0) {
        ctx->epoch = ngx_http_cache_new_epoch();
    }

    if (ngx_http_cache_purge_collect_tags(r, ctx) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_memzero(&e, sizeof(ngx_http_cache_entry_t));

    e.flags = (ctx->gzip ? NGX_HTTP_CACHE_ENTRY_GZIP : 0)
              | (ctx->policy.revalidate ? NGX_HTTP_CACHE_ENTRY_REVALIDATE : 0)
              | (ctx->policy.must_revalidate ? NGX_HTTP_CACHE_ENTRY_MUST_REVAL
                                             : 0);
    e.status = r->headers_out.status;
    e.response_time = now;
    e.initial_age = ngx_max(ctx->policy.initial_age_ms, 0);
    e.fresh = ngx_max(ctx->policy.fresh_ms, 0);
    e.swr = ngx_max(ctx->policy.swr_ms, 0);
    e.sie = ngx_max(ctx->policy.sie_ms, 0);
    e.epoch = ctx->epoch;
    e.key.data = ctx->key.data;
    e.key.len = ctx->key.len;
    e.vary_spec.data = ctx->vary_spec.data;
    e.vary_spec.len = ctx->vary_spec.len;
    e.vary_values.data = ctx->vary_values.data;
    e.vary_values.len = ctx->vary_values.len;
    e.tags.data = ctx->tags.data;
    e.tags.len = ctx->tags.len;
    e.headers.data = headers.data;
    e.headers.len = headers.len;

    ctx->prefix_len = ngx_http_cache_entry_prefix_size(&e);

    /* room for the whole entry when the length is known: one copy */
    size = ctx->prefix_len + (ctx->expect_len > 0 ? (size_t) ctx->expect_len
                                                 : 4096);
    if (ctx->gzip && ctx->expect_len > 0) {
        size += 64 + (size_t) ctx->expect_len / 1000;
    }

    ctx->buf = ngx_pnalloc(r->pool, size);
    if (ctx->buf == NULL) {
        return NGX_ERROR;
    }

    ctx->buf_end = ctx->buf + size;
    ctx->buf_last = ngx_http_cache_entry_write_prefix(ctx->buf, &e);

    if (ctx->gzip && ngx_http_cache_deflate_init(r, ctx, clcf) != NGX_OK) {
        return NGX_ERROR;
    }

    ctx->storing = 1;

    return NGX_OK;
}


/* which edge_cache_use_stale condition the response now in
 * r->headers_out meets, 0 for none */

static ngx_uint_t
ngx_http_cache_failure(ngx_http_request_t *r)
{
    ngx_uint_t  status;

    status = r->headers_out.status;

    if (r->upstream && r->upstream->headers_in.status_n == 0
        && status >= NGX_HTTP_SPECIAL_RESPONSE)
    {
        /* nginx's own answer: the origin gave no response header */
        return status == NGX_HTTP_GATEWAY_TIME_OUT
               ? NGX_HTTP_CACHE_STALE_TIMEOUT : NGX_HTTP_CACHE_STALE_ERROR;
    }

    switch (status) {
    case NGX_HTTP_INTERNAL_SERVER_ERROR:
        return NGX_HTTP_CACHE_STALE_500;
    case NGX_HTTP_BAD_GATEWAY:
        return NGX_HTTP_CACHE_STALE_502;
    case NGX_HTTP_SERVICE_UNAVAILABLE:
        return NGX_HTTP_CACHE_STALE_503;
    case NGX_HTTP_GATEWAY_TIME_OUT:
        return NGX_HTTP_CACHE_STALE_504;
    case NGX_HTTP_FORBIDDEN:
        return NGX_HTTP_CACHE_STALE_403;
    case NGX_HTTP_NOT_FOUND:
        return NGX_HTTP_CACHE_STALE_404;
    case 429:
        return NGX_HTTP_CACHE_STALE_429;
    }

    return 0;
}


/* the response so far, forgotten: the stale entry's takes its place */

static ngx_int_t
ngx_http_cache_reset_headers(ngx_http_request_t *r)
{
    ngx_http_headers_out_t  *ho;

    ho = &r->headers_out;

    if (ngx_list_init(&ho->headers, r->pool, 20, sizeof(ngx_table_elt_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    ho->status_line.len = 0;
    ho->server = NULL;
    ho->date = NULL;
    ho->content_length = NULL;
    ho->content_encoding = NULL;
    ho->location = NULL;
    ho->refresh = NULL;
    ho->last_modified = NULL;
    ho->content_range = NULL;
    ho->accept_ranges = NULL;
    ho->www_authenticate = NULL;
    ho->expires = NULL;
    ho->etag = NULL;
#if (nginx_version >= 1023000)
    ho->proxy_authenticate = NULL;
#endif
    ngx_memzero(&ho->cache_control, sizeof(ho->cache_control));
    ngx_memzero(&ho->link, sizeof(ho->link));

    ho->content_type.len = 0;
    ho->content_type.data = NULL;
    ho->content_type_len = 0;
    ho->content_type_lowcase = NULL;
    ho->charset.len = 0;
    ho->content_length_n = -1;
    ho->last_modified_time = -1;

    return NGX_OK;
}


static ngx_int_t
ngx_http_cache_stale_header(ngx_http_request_t *r, ngx_http_cache_ctx_t *ctx)
{
    ngx_int_t  rc;

    if (ngx_http_cache_reset_headers(r) != NGX_OK) {
        return NGX_ERROR;
    }

    ctx->status = NGX_HTTP_CACHE_ST_STALE;
    ctx->tier = 2;
    ctx->serving_stale = 1;
    ctx->stored_flag = 0;

    rc = ngx_http_cache_prepare_response(r, ctx, &ctx->stale_body);
    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_http_cache_unlock(r, ctx);

    return ngx_http_next_header_filter(r);
}


/* the lock's owner got a response that is not stored: later requests go
 * straight to the origin for a while (a stale entry is kept instead) */

static void
ngx_http_cache_hit_for_miss(ngx_http_request_t *r, ngx_http_cache_ctx_t *ctx,
    ngx_http_cache_loc_conf_t *clcf)
{
    ngx_str_t    rkey;
    u_char       rkeybuf[NGX_HTTP_CACHE_RKEY_MAX], px[NGX_INT_T_LEN];
    const char  *argv[5];
    size_t       argvlen[5];

    if (!ctx->lock_owned || ctx->stale || clcf->hit_for_miss == 0
        || r->headers_out.status >= NGX_HTTP_INTERNAL_SERVER_ERROR)
    {
        return;
    }

    rkey.data = rkeybuf;
    ngx_http_cache_redis_key(ctx, clcf->zone, NULL, &rkey);

    argv[0] = "SET";
    argvlen[0] = 3;
    argv[1] = (const char *) rkey.data;
    argvlen[1] = rkey.len;
    argv[2] = NGX_HTTP_CACHE_HFM;
    argvlen[2] = sizeof(NGX_HTTP_CACHE_HFM) - 1;
    argv[3] = "PX";
    argvlen[3] = 2;
    argv[4] = (const char *) px;
    argvlen[4] = ngx_sprintf(px, "%M", clcf->hit_for_miss) - px;

    (void) ngx_edge_redis_send_command(clcf->zone->redis,
                                       ngx_http_cache_store_reply, NULL,
                                       5, argv, argvlen);
}


/* DEL of a main key: every variant goes with it, and this node's hot copy */

static void
ngx_http_cache_invalidate_hash(ngx_http_cache_ctx_t *ctx,
    ngx_http_cache_loc_conf_t *clcf)
{
    ngx_str_t    rkey;
    u_char       rkeybuf[NGX_HTTP_CACHE_RKEY_MAX];
    const char  *argv[2];
    size_t       argvlen[2];

    rkey.data = rkeybuf;
    ngx_http_cache_redis_key(ctx, clcf->zone, NULL, &rkey);

    argv[0] = "DEL";
    argvlen[0] = 3;
    argv[1] = (const char *) rkey.data;
    argvlen[1] = rkey.len;

    (void) ngx_edge_redis_send_command(clcf->zone->redis,
                                       ngx_http_cache_store_reply, NULL,
                                       2, argv, argvlen);

    ngx_http_cache_l1_purge(clcf->zone, ctx->hash);
}


/*
 * The path (and query) of a Location or Content-Location value when it
 * names this request's origin (RFC 9111 4.4: only the same origin, so a
 * response cannot purge another site's entries): an absolute path, a
 * relative one (resolved against the request's directory), or an absolute
 * URI whose scheme and authority are the request's.  NGX_DECLINED
 * otherwise.
 */

static ngx_int_t
ngx_http_cache_same_origin_path(ngx_http_request_t *r, ngx_str_t *value,
    ngx_str_t *path)
{
    u_char     *p, *last, *slash;
    size_t      scheme_len;
    ngx_str_t   host;

    p = value->data;
    last = p + value->len;

    if (value->len == 0 || value->len > NGX_HTTP_CACHE_ENTRY_KEY_MAX) {
        return NGX_DECLINED;
    }

    if (p[0] == '/') {
        if (value->len > 1 && p[1] == '/') {
            return NGX_DECLINED;            /* network-path reference */
        }

        *path = *value;
        return NGX_OK;
    }

    scheme_len = 0;

#if (NGX_HTTP_SSL)
    if (r->connection->ssl) {
        if (value->len > 8 && ngx_strncasecmp(p, (u_char *) "https://", 8)
                              == 0)
        {
            scheme_len = 8;
        }

    } else
#endif
    if (value->len > 7 && ngx_strncasecmp(p, (u_char *) "http://", 7) == 0) {
        scheme_len = 7;
    }

    if (scheme_len == 0) {
        if (ngx_strlchr(p, last, ':') != NULL
            && (ngx_strlchr(p, last, '/') == NULL
                || ngx_strlchr(p, last, ':') < ngx_strlchr(p, last, '/')))
        {
            return NGX_DECLINED;            /* another scheme */
        }

        /* a relative path: the request's directory, then the value */
        slash = NULL;

        for (p = r->uri.data; p < r->uri.data + r->uri.len; p++) {
            if (*p == '/') {
                slash = p;
            }
        }

        if (slash == NULL
            || (size_t) (slash + 1 - r->uri.data) + value->len
               > NGX_HTTP_CACHE_ENTRY_KEY_MAX)
        {
            return NGX_DECLINED;
        }

        path->len = slash + 1 - r->uri.data + value->len;
        path->data = ngx_pnalloc(r->pool, path->len);
        if (path->data == NULL) {
            return NGX_DECLINED;
        }

        ngx_memcpy(ngx_cpymem(path->data, r->uri.data,
                              slash + 1 - r->uri.data),
                   value->data, value->len);
        return NGX_OK;
    }

    p += scheme_len;
    slash = ngx_strlchr(p, last, '/');

    host.data = p;
    host.len = (slash ? slash : last) - p;

    if (r->headers_in.host == NULL
        || host.len != r->headers_in.host->value.len
        || ngx_strncasecmp(host.data, r->headers_in.host->value.data,
                           host.len) != 0)
    {
        return NGX_DECLINED;
    }

    if (slash == NULL) {
        ngx_str_set(path, "/");
        return NGX_OK;
    }

    path->data = slash;
    path->len = last - slash;
    return NGX_OK;
}


/*
 * The key a GET of that path would compute: the key's value, evaluated
 * with the request's URI, arguments and cached variables swapped for the
 * path's for the time of the evaluation.  The common keys are made of
 * $request_uri, $uri, $args, $host and $scheme, which this covers; a key
 * of other request data gets this request's values for them.
 */

static ngx_int_t
ngx_http_cache_key_of_path(ngx_http_request_t *r,
    ngx_http_cache_loc_conf_t *clcf, ngx_str_t *path, ngx_str_t *key)
{
    u_char                     *q;
    size_t                      size;
    ngx_int_t                   rc;
    ngx_str_t                   uri, args, unparsed;
    ngx_http_variable_value_t  *saved;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_get_module_main_conf(r, ngx_http_core_module);
    size = cmcf->variables.nelts * sizeof(ngx_http_variable_value_t);

    saved = ngx_pnalloc(r->pool, size);
    if (saved == NULL) {
        return NGX_ERROR;
    }

    q = ngx_strlchr(path->data, path->data + path->len, '?');

    uri = r->uri;
    args = r->args;
    unparsed = r->unparsed_uri;

    r->unparsed_uri = *path;
    r->uri.data = path->data;
    r->uri.len = (q ? q : path->data + path->len) - path->data;
    r->args.data = q ? q + 1 : NULL;
    r->args.len = q ? path->data + path->len - (q + 1) : 0;

    ngx_memcpy(saved, r->variables, size);
    ngx_memzero(r->variables, size);

    rc = ngx_http_complex_value(r, clcf->key, key);

    ngx_memcpy(r->variables, saved, size);

    r->uri = uri;
    r->args = args;
    r->unparsed_uri = unparsed;

    return rc;
}


/*
 * RFC 9111 4.4: a successful unsafe method invalidates its URL and the
 * URLs of its Location and Content-Location when they are of the same
 * origin.
 */

static void
ngx_http_cache_invalidate(ngx_http_request_t *r, ngx_http_cache_ctx_t *ctx,
    ngx_http_cache_loc_conf_t *clcf)
{
    u_char            hash[NGX_HTTP_CACHE_HASH_LEN];
    ngx_str_t         path, key;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    if (r->headers_out.status < 200 || r->headers_out.status >= 400) {
        return;
    }

    ngx_http_cache_invalidate_hash(ctx, clcf);

    ngx_memcpy(hash, ctx->hash, NGX_HTTP_CACHE_HASH_LEN);

    part = &r->headers_out.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].hash == 0
            || !((h[i].key.len == 8
                  && ngx_strncasecmp(h[i].key.data, (u_char *) "Location",
                                     8) == 0)
                 || (h[i].key.len == 16
                     && ngx_strncasecmp(h[i].key.data,
                                        (u_char *) "Content-Location", 16)
                        == 0)))
        {
            continue;
        }

        if (ngx_http_cache_same_origin_path(r, &h[i].value, &path) != NGX_OK
            || ngx_http_cache_key_of_path(r, clcf, &path, &key) != NGX_OK
            || key.len > NGX_HTTP_CACHE_ENTRY_KEY_MAX)
        {
            continue;
        }

        if (key.len == ctx->key.len
            && ngx_memcmp(key.data, ctx->key.data, key.len) == 0)
        {
            continue;                       /* the URL itself, done */
        }

        ngx_http_cache_hash_key(&key, ctx->hash);
        ngx_http_cache_invalidate_hash(ctx, clcf);
    }

    ngx_memcpy(ctx->hash, hash, NGX_HTTP_CACHE_HASH_LEN);
}


/*
 * The origin answered the cache's validators with 304 (RFC 9111 4.3.4):
 * the stored headers are updated with the 304's, the entry stored again
 * with its body as it was, and the client gets it (REVALIDATED).
 */

static ngx_int_t
ngx_http_cache_revalidated(ngx_http_request_t *r, ngx_http_cache_ctx_t *ctx,
    ngx_http_cache_loc_conf_t *clcf)
{
    ngx_str_t         date;
    ngx_list_t        fresh;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h, *nh;

    fresh = r->headers_out.headers;

    ngx_str_null(&date);

    if (r->headers_out.date == NULL && r->upstream
        && r->upstream->headers_in.date
        && ngx_http_cache_clean_value(&r->upstream->headers_in.date->value))
    {
        date = r->upstream->headers_in.date->value;
    }

    if (ngx_http_cache_reset_headers(r) != NGX_OK) {
        return NGX_ERROR;
    }

    r->headers_out.status = ctx->entry.status;

    if (ngx_http_cache_set_headers(r, &ctx->entry, &fresh) != NGX_OK) {
        return NGX_ERROR;
    }

    part = &fresh.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].hash == 0
            || ngx_http_cache_in_list(&h[i].key, ngx_http_cache_unstored, 0))
        {
            continue;
        }

        nh = ngx_http_cache_push_header(r, h[i].key.data, h[i].key.len,
                                        h[i].value.data, h[i].value.len);
        if (nh == NULL) {
            return NGX_ERROR;
        }

        if (h[i].key.len == 4
            && ngx_strncasecmp(h[i].key.data, (u_char *) "ETag", 4) == 0)
        {
            r->headers_out.etag = nh;

        } else if (h[i].key.len == 4
                   && ngx_strncasecmp(h[i].key.data, (u_char *) "Date", 4)
                      == 0)
        {
            r->headers_out.date = nh;
        }
    }

    if (date.len) {
        /* the 304's Date replaces the stored one (nginx hid it) */
        for (part = &r->headers_out.headers.part; part; part = part->next) {
            h = part->elts;

            for (i = 0; i < part->nelts; i++) {
                if (h[i].key.len == 4
                    && ngx_strncasecmp(h[i].key.data, (u_char *) "Date", 4)
                       == 0)
                {
                    h[i].value = date;
                    r->headers_out.date = &h[i];
                }
            }
        }
    }

    ctx->status = NGX_HTTP_CACHE_ST_REVALIDATED;
    ctx->serving_stale = 1;

    ngx_http_cache_store_revalidated(r, ctx, clcf);

    if (ngx_http_cache_prepare_response(r, ctx, &ctx->stale_body) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_next_header_filter(r);
}


static void
ngx_http_cache_store_revalidated(ngx_http_request_t *r,
    ngx_http_cache_ctx_t *ctx, ngx_http_cache_loc_conf_t *clcf)
{
    int64_t                  now;
    ngx_str_t                headers;
    ngx_http_cache_entry_t   e, *old;

    old = &ctx->entry;
    now = ngx_edge_wall_usec() / 1000;

    if (ngx_http_cache_response_policy(r, &clcf->rfc, ctx->request_time, now,
                                       &ctx->policy)
        != NGX_OK
        || !ctx->policy.storable)
    {
        ngx_http_cache_unlock(r, ctx);
        return;
    }

    ctx->gzip = (old->flags & NGX_HTTP_CACHE_ENTRY_GZIP) != 0;
    ctx->vary_spec.data = (u_char *) old->vary_spec.data;
    ctx->vary_spec.len = old->vary_spec.len;
    ctx->vary_values.data = (u_char *) old->vary_values.data;
    ctx->vary_values.len = old->vary_values.len;

    if (ngx_http_cache_build_headers(r, ctx, clcf, &headers) != NGX_OK) {
        ngx_http_cache_unlock(r, ctx);
        return;
    }

    e = *old;
    e.flags = (old->flags & NGX_HTTP_CACHE_ENTRY_GZIP)
              | (ctx->policy.revalidate ? NGX_HTTP_CACHE_ENTRY_REVALIDATE : 0)
              | (ctx->policy.must_revalidate ? NGX_HTTP_CACHE_ENTRY_MUST_REVAL
                                             : 0);
    e.response_time = now;
    e.initial_age = ngx_max(ctx->policy.initial_age_ms, 0);
    e.fresh = ngx_max(ctx->policy.fresh_ms, 0);
    e.swr = ngx_max(ctx->policy.swr_ms, 0);
    e.sie = ngx_max(ctx->policy.sie_ms, 0);
    e.headers.data = headers.data;
    e.headers.len = headers.len;

    ctx->prefix_len = ngx_http_cache_entry_prefix_size(&e);

    ctx->buf = ngx_pnalloc(r->pool, ctx->prefix_len + old->body.len);
    if (ctx->buf == NULL) {
        ngx_http_cache_unlock(r, ctx);
        return;
    }

    ctx->buf_end = ctx->buf + ctx->prefix_len + old->body.len;
    ctx->buf_last = ngx_http_cache_entry_write_prefix(ctx->buf, &e);
    ctx->buf_last = ngx_cpymem(ctx->buf_last, old->body.data, old->body.len);

    /* the client's answer: the renewed freshness and age */
    ctx->entry.fresh = e.fresh;
    ctx->age = e.initial_age;

    ctx->gzip = 0;
    ctx->raw_len = e.body_raw_len;
    ctx->expect_len = -1;
    ctx->stored_flag = 1;

    ngx_http_cache_finish_store(r, ctx, clcf);
}


static ngx_int_t
ngx_http_cache_header_filter(ngx_http_request_t *r)
{
    ngx_int_t                   rc;
    ngx_uint_t                  failure;
    ngx_http_cache_ctx_t       *ctx;
    ngx_http_cache_loc_conf_t  *clcf;

    ctx = ngx_http_get_module_ctx(r, ngx_http_cache_module);

    if (ctx == NULL || ctx->tier || ctx->storing || ctx->serving_stale
        || (r != r->main && !ctx->background))
    {
        return ngx_http_next_header_filter(r);
    }

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_cache_module);

    if (ctx->invalidate) {
        if (clcf->zone) {
            ngx_http_cache_invalidate(r, ctx, clcf);
        }

        return ngx_http_next_header_filter(r);
    }

    if (clcf->zone && ctx->revalidating && ctx->reply && !ctx->background
        && r->upstream && r->headers_out.status == NGX_HTTP_NOT_MODIFIED)
    {
        return ngx_http_cache_revalidated(r, ctx, clcf);
    }

    if (clcf->zone == NULL || !ctx->done
        || !(ctx->status == NGX_HTTP_CACHE_ST_MISS
             || ctx->status == NGX_HTTP_CACHE_ST_BYPASS
             || ctx->status == NGX_HTTP_CACHE_ST_EXPIRED
             || ctx->status == NGX_HTTP_CACHE_ST_UPDATING))
    {
        goto done;
    }

    failure = ngx_http_cache_failure(r);

    if (failure && !ctx->background
        && ngx_http_cache_stale_on(r, ctx, failure))
    {
        return ngx_http_cache_stale_header(r, ctx);
    }

    rc = NGX_DECLINED;

    if (!ctx->no_store) {
        rc = ngx_http_cache_begin_store(r, ctx, clcf);

        if (rc == NGX_ERROR) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "edge_cache: cannot prepare the store of \"%V\"",
                          &ctx->key);
        }
    }

    ctx->stored_flag = (rc == NGX_OK);

    if (rc != NGX_OK) {
        if (rc != NGX_BUSY) {
            ngx_http_cache_hit_for_miss(r, ctx, clcf);
        }

        ngx_http_cache_unlock(r, ctx);
    }

    if (!ctx->background
        && ngx_http_cache_set_status_header(r, ctx) != NGX_OK)
    {
        return NGX_ERROR;
    }

done:

    if (ctx->background) {
        /* the update's response goes nowhere but the store */
        r->header_sent = 1;
        return NGX_OK;
    }

    return ngx_http_next_header_filter(r);
}


/* a swallowed chain: its buffers are marked sent, so whoever filled them
 * (the upstream's buffers) may reuse them */

static void
ngx_http_cache_consume(ngx_chain_t *in)
{
    for ( /* void */ ; in; in = in->next) {
        in->buf->pos = in->buf->last;

        if (in->buf->in_file) {
            in->buf->file_pos = in->buf->file_last;
        }
    }
}


static ngx_int_t
ngx_http_cache_stale_body(ngx_http_request_t *r, ngx_http_cache_ctx_t *ctx,
    ngx_chain_t *in)
{
    ngx_chain_t  *out;

    ngx_http_cache_consume(in);

    if (ctx->stale_sent) {
        return ngx_http_next_body_filter(r, NULL);
    }

    ctx->stale_sent = 1;

    out = ngx_http_cache_body_chain(r, &ctx->stale_body);
    if (out == NULL) {
        return NGX_ERROR;
    }

    return ngx_http_next_body_filter(r, out);
}


/* make room for n more bytes */

static ngx_int_t
ngx_http_cache_grow(ngx_http_request_t *r, ngx_http_cache_ctx_t *ctx,
    size_t n)
{
    u_char  *p;
    size_t   used, size;

    if ((size_t) (ctx->buf_end - ctx->buf_last) >= n) {
        return NGX_OK;
    }

    used = ctx->buf_last - ctx->buf;
    size = ngx_max(2 * (size_t) (ctx->buf_end - ctx->buf), used + n);

    p = ngx_pnalloc(r->pool, size);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(p, ctx->buf, used);

    ctx->buf = p;
    ctx->buf_last = p + used;
    ctx->buf_end = p + size;

    return NGX_OK;
}


static ngx_int_t
ngx_http_cache_deflate(ngx_http_request_t *r, ngx_http_cache_ctx_t *ctx,
    u_char *data, size_t len, int flush)
{
    int  rc;

    ctx->zstream.next_in = data;
    ctx->zstream.avail_in = (uInt) len;

    for ( ;; ) {
        if (ctx->buf_end - ctx->buf_last < 256
            && ngx_http_cache_grow(r, ctx, 4096 + len / 2) != NGX_OK)
        {
            return NGX_ERROR;
        }

        ctx->zstream.next_out = ctx->buf_last;
        ctx->zstream.avail_out = (uInt) (ctx->buf_end - ctx->buf_last);

        rc = deflate(&ctx->zstream, flush);

        ctx->buf_last = ctx->zstream.next_out;

        if (rc == Z_STREAM_END) {
            return NGX_OK;
        }

        if (rc != Z_OK && rc != Z_BUF_ERROR) {
            return NGX_ERROR;
        }

        if (ctx->zstream.avail_in == 0 && ctx->zstream.avail_out != 0
            && flush == Z_NO_FLUSH)
        {
            return NGX_OK;
        }
    }
}


static void
ngx_http_cache_store_reply(void *data, redisReply *reply, ngx_int_t rc)
{
    /* fire and forget: the client has its response; the Redis client
     * counts errors and timeouts */
}


/*
 * Redis does not keep up with the stores (stalled, or slower than the
 * origin): past NGX_HTTP_CACHE_STORE_BACKLOG bytes queued for the
 * connection, stores are skipped, so the worker's memory is not where
 * they wait.  Checked when a store begins (no work for nothing) and when
 * its SET would be queued (concurrent stores all began under the bound).
 */

static ngx_flag_t
ngx_http_cache_store_backlogged(ngx_http_request_t *r,
    ngx_http_cache_ctx_t *ctx, ngx_http_cache_loc_conf_t *clcf)
{
    size_t  backlog;

    backlog = ngx_edge_redis_backlog(clcf->zone->redis);

    if (backlog <= NGX_HTTP_CACHE_STORE_BACKLOG) {
        return 0;
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "edge_cache: \"%V\" not stored: %uz bytes wait for "
                  "Redis already", &ctx->key, backlog);

    return 1;
}


static void
ngx_http_cache_send_set(ngx_http_request_t *r, ngx_http_cache_ctx_t *ctx,
    ngx_http_cache_loc_conf_t *clcf, ngx_str_t *values, int64_t ttl)
{
    ngx_str_t    rkey;
    u_char       rkeybuf[NGX_HTTP_CACHE_RKEY_MAX], px[NGX_INT64_LEN];
    const char  *argv[5];
    size_t       argvlen[5];

    if (ngx_http_cache_store_backlogged(r, ctx, clcf)) {
        ctx->stored_flag = 0;
        return;
    }

    rkey.data = rkeybuf;
    ngx_http_cache_redis_key(ctx, clcf->zone, values, &rkey);

    argv[0] = "SET";
    argvlen[0] = 3;
    argv[1] = (const char *) rkey.data;
    argvlen[1] = rkey.len;
    argv[2] = (const char *) ctx->buf;
    argvlen[2] = ctx->buf_last - ctx->buf;
    argv[3] = "PX";
    argvlen[3] = 2;
    argv[4] = (const char *) px;
    argvlen[4] = ngx_sprintf(px, "%L", ttl) - px;

    if (ngx_edge_redis_send_command(clcf->zone->redis,
                                    ngx_http_cache_store_reply, NULL,
                                    5, argv, argvlen)
        != NULL)
    {
        ngx_http_cache_count(clcf->zone, st_stores, 1);
        ngx_http_cache_count(clcf->zone, st_stored_bytes,
                             (int64_t) argvlen[2]);

    } else {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "edge_cache: \"%V\" not stored: redis not ready",
                       &ctx->key);
    }
}


static void
ngx_http_cache_finish_store(ngx_http_request_t *r, ngx_http_cache_ctx_t *ctx,
    ngx_http_cache_loc_conf_t *clcf)
{
    int64_t  ttl;

    if (ctx->expect_len >= 0 && (off_t) ctx->raw_len != ctx->expect_len) {
        ngx_http_cache_abandon(r, ctx, "body shorter than Content-Length");
        return;
    }

    if (ctx->gzip) {
        if (ngx_http_cache_deflate(r, ctx, NULL, 0, Z_FINISH) != NGX_OK) {
            ngx_http_cache_abandon(r, ctx, "deflate failed");
            return;
        }

        deflateEnd(&ctx->zstream);
        ctx->zinit = 0;
    }

    ctx->storing = 0;

    ngx_http_cache_entry_set_body(ctx->buf, ctx->prefix_len,
                                  ctx->buf_last - ctx->buf - ctx->prefix_len,
                                  ctx->raw_len);

    ttl = ctx->policy.fresh_ms
          + ngx_max(ctx->policy.swr_ms, ctx->policy.sie_ms)
          + (int64_t) clcf->keep;

    if (ttl <= 0) {
        ngx_http_cache_unlock(r, ctx);
        return;
    }

    ngx_http_cache_send_set(r, ctx, clcf, NULL, ttl);

    if (ctx->vary_spec.len) {
        ngx_http_cache_send_set(r, ctx, clcf, &ctx->vary_values, ttl);
    }

    ngx_http_cache_l1_store(ctx, clcf->zone);

    /* after the SETs on the same connection: a waiter that finds the lock
     * gone finds the entry */
    ngx_http_cache_unlock(r, ctx);
}


static ngx_int_t
ngx_http_cache_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    ngx_http_cache_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_cache_module);

    if (ctx == NULL) {
        return ngx_http_next_body_filter(r, in);
    }

    if (ctx->serving_stale) {
        return ngx_http_cache_stale_body(r, ctx, in);
    }

    if (ctx->background) {
        if (ctx->storing) {
            ngx_http_cache_capture(r, ctx, in);
        }

        ngx_http_cache_consume(in);
        return NGX_OK;
    }

    if (!ctx->storing || r != r->main) {
        return ngx_http_next_body_filter(r, in);
    }

    ngx_http_cache_capture(r, ctx, in);

    return ngx_http_next_body_filter(r, in);
}


/* the body's bytes into the entry (deflated or copied), as they pass */

static void
ngx_http_cache_capture(ngx_http_request_t *r, ngx_http_cache_ctx_t *ctx,
    ngx_chain_t *in)
{
    size_t                      size;
    ngx_buf_t                  *b;
    ngx_chain_t                *cl;
    ngx_http_cache_loc_conf_t  *clcf;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_cache_module);

    for (cl = in; cl && ctx->storing; cl = cl->next) {
        b = cl->buf;

        if (b->in_file && !ngx_buf_in_memory(b)) {
            ngx_http_cache_abandon(r, ctx, "body in a temporary file");
            break;
        }

        size = ngx_buf_in_memory(b) ? (size_t) (b->last - b->pos) : 0;

        if (size) {
            ctx->raw_len += size;

            if (ctx->raw_len > clcf->max_size) {
                ngx_http_cache_abandon(r, ctx, "larger than max_size");
                break;
            }

            if (ctx->gzip) {
                if (ngx_http_cache_deflate(r, ctx, b->pos, size, Z_NO_FLUSH)
                    != NGX_OK)
                {
                    ngx_http_cache_abandon(r, ctx, "deflate failed");
                    break;
                }

            } else {
                if (ngx_http_cache_grow(r, ctx, size) != NGX_OK) {
                    ngx_http_cache_abandon(r, ctx, "no memory");
                    break;
                }

                ctx->buf_last = ngx_cpymem(ctx->buf_last, b->pos, size);
            }
        }

        if (b->last_buf || (r != r->main && b->last_in_chain)) {
            ngx_http_cache_finish_store(r, ctx, clcf);
            break;
        }
    }
}


ngx_int_t
ngx_http_cache_store_init(ngx_conf_t *cf)
{
    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_cache_header_filter;

    ngx_http_next_body_filter = ngx_http_top_body_filter;
    ngx_http_top_body_filter = ngx_http_cache_body_filter;

    return NGX_OK;
}
