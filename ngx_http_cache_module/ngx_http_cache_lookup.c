/*
 * The lookup, in the PRECONTENT phase: the cache key, one Redis GET of
 * the entry (a second one only for a variant the first entry does not
 * match), then the decision: send the stored response, or let the
 * content handler (proxy_pass, ...) run with the store filters armed.
 *
 * Variants.  Every response is stored under the key's main Redis key; a
 * response with Vary is stored there AND under a variant key derived
 * from the main entry's epoch and the request's normalised values of the
 * varying headers.  A lookup reads the main key: a match of the values
 * is a hit in one round trip; a mismatch reads the variant key.  Purging
 * the main key purges every variant: without a main entry there is no
 * epoch, the next store draws a new one, and the old variant keys are
 * unreachable until their TTL ends.
 *
 * Redis down, slow, or answering garbage: a MISS, never an error.
 */

#include "ngx_http_cache_module.h"
#include "ngx_http_cache_purge.h"


static ngx_int_t ngx_http_cache_start(ngx_http_request_t *r,
    ngx_http_cache_loc_conf_t *clcf, ngx_http_cache_ctx_t *ctx);
static void ngx_http_cache_detach(void *data);
static void ngx_http_cache_free_reply(void *data);
static void ngx_http_cache_get_reply(void *data, redisReply *reply,
    ngx_int_t rc);
static ngx_int_t ngx_http_cache_decide(ngx_http_request_t *r,
    ngx_http_cache_loc_conf_t *clcf, ngx_http_cache_ctx_t *ctx);


ngx_http_cache_ctx_t *
ngx_http_cache_get_ctx(ngx_http_request_t *r)
{
    ngx_edge_wait_t       *wait;
    ngx_http_cache_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_cache_module);
    if (ctx) {
        return ctx;
    }

    /* an internal redirect wiped the context, not its pool cleanup */
    wait = ngx_edge_wait_find(r, ngx_http_cache_detach);
    if (wait == NULL) {
        return NULL;
    }

    ctx = wait->data;
    ngx_http_set_ctx(r, ctx, ngx_http_cache_module);

    return ctx;
}


ngx_int_t
ngx_http_cache_handler(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t         *cln;
    ngx_http_cache_ctx_t       *ctx;
    ngx_http_cache_loc_conf_t  *clcf;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_cache_module);

    if (clcf->zone == NULL || r != r->main) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_cache_get_ctx(r);

    if (ctx) {
        if (ctx->done || ngx_edge_wait_pending(&ctx->wait)) {
            return ctx->done ? NGX_DECLINED : NGX_AGAIN;
        }

        return ngx_http_cache_decide(r, clcf, ctx);
    }

    if (!(r->method & clcf->methods)) {
        return NGX_DECLINED;
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_cache_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->request = r;
    ctx->expect_len = -1;

    if (ngx_edge_wait_init(&ctx->wait, r, ngx_http_cache_detach, ctx)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the kept reply goes with the request, after the wait's detach */
    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_cache_free_reply;
    cln->data = ctx;

    ngx_http_set_ctx(r, ctx, ngx_http_cache_module);

    if (ngx_http_complex_value(r, clcf->key, &ctx->key) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ctx->key.len == 0 || ctx->key.len > NGX_HTTP_CACHE_ENTRY_KEY_MAX) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "edge_cache: a key of %uz bytes is not cached",
                      ctx->key.len);
        ctx->status = NGX_HTTP_CACHE_ST_BYPASS;
        ctx->done = 1;
        return NGX_DECLINED;
    }

    ngx_http_cache_hash_key(&ctx->key, ctx->hash);

    ctx->request_time = ngx_edge_wall_usec() / 1000;

    if (clcf->bypass
        && ngx_http_test_predicates(r, clcf->bypass) == NGX_DECLINED)
    {
        /* as proxy_cache_bypass: not read from the cache, still stored */
        ctx->status = NGX_HTTP_CACHE_ST_BYPASS;
        ctx->done = 1;
        return NGX_DECLINED;
    }

    return ngx_http_cache_start(r, clcf, ctx);
}


void
ngx_http_cache_hash_key(ngx_str_t *key, u_char *hash)
{
    ngx_md5_t  md5;
    u_char     digest[16];

    ngx_md5_init(&md5);
    ngx_md5_update(&md5, key->data, key->len);
    ngx_md5_final(digest, &md5);

    ngx_hex_dump(hash, digest, 16);
}


/*
 * "<zone>:{<hash>}" or, for a variant, "<zone>:{<hash>}:v<md5 of the
 * epoch and the values>": dst->data has NGX_HTTP_CACHE_RKEY_MAX bytes
 */

void
ngx_http_cache_redis_key(ngx_http_cache_ctx_t *ctx,
    ngx_http_cache_zone_t *zone, ngx_str_t *values, ngx_str_t *dst)
{
    u_char     *p;
    ngx_md5_t   md5;
    u_char      digest[16], epoch[8];
    ngx_uint_t  i;

    p = ngx_cpymem(dst->data, zone->name.data, zone->name.len);
    *p++ = ':';
    *p++ = '{';
    p = ngx_cpymem(p, ctx->hash, NGX_HTTP_CACHE_HASH_LEN);
    *p++ = '}';

    if (values) {
        for (i = 0; i < 8; i++) {
            epoch[i] = (u_char) (ctx->epoch >> (56 - 8 * i));
        }

        ngx_md5_init(&md5);
        ngx_md5_update(&md5, epoch, 8);
        ngx_md5_update(&md5, values->data, values->len);
        ngx_md5_final(digest, &md5);

        *p++ = ':';
        *p++ = 'v';
        p = ngx_hex_dump(p, digest, 16);
    }

    dst->len = p - dst->data;
}


static ngx_int_t
ngx_http_cache_send_get(ngx_http_cache_ctx_t *ctx,
    ngx_http_cache_loc_conf_t *clcf, ngx_str_t *values)
{
    ngx_str_t    rkey;
    const char  *argv[2];
    size_t       argvlen[2];

    rkey.data = ngx_pnalloc(ctx->request->pool, NGX_HTTP_CACHE_RKEY_MAX);
    if (rkey.data == NULL) {
        return NGX_ERROR;
    }

    ngx_http_cache_redis_key(ctx, clcf->zone, values, &rkey);

    argv[0] = "GET";
    argvlen[0] = 3;
    argv[1] = (const char *) rkey.data;
    argvlen[1] = rkey.len;

    ctx->cmd = ngx_edge_redis_send_command(clcf->zone->redis,
                                           ngx_http_cache_get_reply, ctx,
                                           2, argv, argvlen);
    if (ctx->cmd == NULL) {
        return NGX_DECLINED;
    }

    ngx_edge_wait_add(&ctx->wait);

    return NGX_OK;
}


static ngx_int_t
ngx_http_cache_start(ngx_http_request_t *r, ngx_http_cache_loc_conf_t *clcf,
    ngx_http_cache_ctx_t *ctx)
{
    ngx_int_t  rc;

    ctx->looked_up = 1;

    rc = ngx_http_cache_send_get(ctx, clcf, NULL);

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc == NGX_DECLINED) {
        /* Redis not connected, or too many commands in flight */
        ctx->status = NGX_HTTP_CACHE_ST_MISS;
        ctx->done = 1;
        return NGX_DECLINED;
    }

    rc = ngx_edge_wait_phase(&ctx->wait);

    if (rc == NGX_OK) {
        return ngx_http_cache_decide(r, clcf, ctx);
    }

    return rc;
}


static void
ngx_http_cache_detach(void *data)
{
    ngx_http_cache_ctx_t  *ctx = data;

    if (ctx->cmd) {
        ngx_edge_redis_detach(ctx->cmd);
        ctx->cmd = NULL;
    }
}


static void
ngx_http_cache_free_reply(void *data)
{
    ngx_http_cache_ctx_t  *ctx = data;

    if (ctx->reply) {
        freeReplyObject(ctx->reply);
        ctx->reply = NULL;
    }
}


static ngx_int_t
ngx_http_cache_same(ngx_http_cache_bytes_t *b, ngx_str_t *s)
{
    return b->len == s->len && ngx_memcmp(b->data, s->data, s->len) == 0;
}


/*
 * An entry read from Redis: NGX_OK when it answers this request, NGX_AGAIN
 * when it is the main entry of another variant (ctx->vary_* then hold
 * this request's values under its Vary spec), NGX_DECLINED when it is
 * not usable.
 */

static ngx_int_t
ngx_http_cache_check_entry(ngx_http_cache_ctx_t *ctx, redisReply *reply)
{
    ngx_str_t                   spec;
    ngx_http_request_t         *r;
    ngx_http_cache_entry_t     *e;
    ngx_http_cache_entry_rc_e   rc;

    r = ctx->request;
    e = &ctx->entry;

    rc = ngx_http_cache_entry_parse(e, (u_char *) reply->str,
                                    (size_t) reply->len);

    if (rc != NGX_HTTP_CACHE_ENTRY_OK) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "edge_cache: entry for \"%V\" ignored: %s",
                      &ctx->key, ngx_http_cache_entry_strerror(rc));
        return NGX_DECLINED;
    }

    if (e->key.len != ctx->key.len
        || ngx_memcmp(e->key.data, ctx->key.data, ctx->key.len) != 0)
    {
        /* an MD5 collision, or an entry written by someone else */
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "edge_cache: entry for \"%V\" ignored: "
                      "it holds another key", &ctx->key);
        return NGX_DECLINED;
    }

    /* purged since it was stored (a purge on any node, polled) */
    switch (ngx_http_cache_purge_check(ctx, ngx_http_cache_purge_zone(r), e)) {

    case NGX_DECLINED:
        return NGX_DECLINED;

    case NGX_HTTP_CACHE_PURGE_SOFT:
        ctx->entry.fresh = 0;
        break;
    }

    if (!ctx->variant) {
        ctx->epoch = e->epoch;
    }

    if (e->vary_spec.len == 0) {
        return NGX_OK;
    }

    spec.data = (u_char *) e->vary_spec.data;
    spec.len = e->vary_spec.len;

    if (ngx_http_cache_vary_values(r, &spec, &ctx->vary_spec,
                                   &ctx->vary_values)
        != NGX_OK)
    {
        return NGX_DECLINED;
    }

    if (ngx_http_cache_same(&e->vary_values, &ctx->vary_values)) {
        return NGX_OK;
    }

    return ctx->variant ? NGX_DECLINED : NGX_AGAIN;
}


static void
ngx_http_cache_get_reply(void *data, redisReply *reply, ngx_int_t rc)
{
    ngx_http_cache_ctx_t  *ctx = data;

    ngx_int_t                   crc;
    ngx_http_cache_loc_conf_t  *clcf;

    ctx->cmd = NULL;

    if (rc == NGX_OK && reply->type == REDIS_REPLY_STRING) {

        crc = ngx_http_cache_check_entry(ctx, reply);

        if (crc == NGX_OK) {
            ngx_edge_redis_keep_reply(reply);
            ctx->reply = reply;

        } else if (crc == NGX_AGAIN) {
            clcf = ngx_http_get_module_loc_conf(ctx->request,
                                                ngx_http_cache_module);
            ctx->variant = 1;

            if (ngx_http_cache_send_get(ctx, clcf, &ctx->vary_values)
                == NGX_ERROR)
            {
                /* a miss: the request goes on */
                ngx_log_error(NGX_LOG_ERR, ctx->request->connection->log,
                              0, "edge_cache: cannot read a variant");
            }
        }

    } else if (rc == NGX_OK && reply->type != REDIS_REPLY_NIL) {
        ngx_log_error(NGX_LOG_INFO, ctx->request->connection->log, 0,
                      "edge_cache: unexpected reply of type %d to a GET",
                      reply->type);
    }

    ngx_edge_wait_done(&ctx->wait);
}


static ngx_int_t
ngx_http_cache_decide(ngx_http_request_t *r, ngx_http_cache_loc_conf_t *clcf,
    ngx_http_cache_ctx_t *ctx)
{
    int64_t                  now, age;
    ngx_int_t                allows;
    ngx_http_cache_entry_t  *e;

    ctx->done = 1;

    if (ctx->reply == NULL) {
        ctx->status = NGX_HTTP_CACHE_ST_MISS;
        return NGX_DECLINED;
    }

    e = &ctx->entry;

    now = ngx_edge_wall_usec() / 1000;
    age = e->initial_age + ngx_max(now - e->response_time, 0);
    ctx->age = age;

    allows = ngx_http_cache_request_allows(r, age, e->fresh,
                                 (e->flags & NGX_HTTP_CACHE_ENTRY_MUST_REVAL)
                                 != 0);

    if ((allows == NGX_HTTP_CACHE_USE_FRESH
         || allows == NGX_HTTP_CACHE_USE_STALE_OK)
        && !(e->flags & NGX_HTTP_CACHE_ENTRY_REVALIDATE))
    {
        ctx->status = allows == NGX_HTTP_CACHE_USE_FRESH
                      ? NGX_HTTP_CACHE_ST_HIT : NGX_HTTP_CACHE_ST_STALE;
        ctx->tier = 2;

        return ngx_http_cache_send_hit(r, ctx);
    }

    /* stale, or the request or the entry wants the origin: fetch anew */
    ctx->status = NGX_HTTP_CACHE_ST_EXPIRED;

    freeReplyObject(ctx->reply);
    ctx->reply = NULL;

    return NGX_DECLINED;
}
