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
 * The stampede lock (edge_cache_lock): a request that must go to the
 * origin first takes "<zone>:{<md5>}:lock" with SET NX PX and a token of
 * its own (ngx_http_cache_lock_lua, which also returns a newer entry if
 * one arrived, or the hit-for-miss marker); the others serve the stale
 * entry if "updating" allows it, else poll the same script on a timer
 * (10 ms doubling to 160 ms) until a new entry arrives, the lock is free
 * (then they take it), or edge_cache_lock_timeout passes (then they go to
 * the origin without storing).  The owner stores, then releases the lock
 * with a compare-and-delete; a request that ends without storing releases
 * it from its pool cleanup; a crashed node's lock ends with its PX
 * (edge_cache_lock_age).  The lock is in Redis: one origin request per
 * key across the whole fleet.
 *
 * Redis down, slow, or answering garbage: a MISS, never an error.
 */

#include "ngx_http_cache_module.h"
#include "ngx_http_cache_l1.h"
#include "ngx_http_cache_purge.h"


static ngx_int_t ngx_http_cache_start(ngx_http_request_t *r,
    ngx_http_cache_loc_conf_t *clcf, ngx_http_cache_ctx_t *ctx);
static void ngx_http_cache_detach(void *data);
static void ngx_http_cache_get_reply(void *data, redisReply *reply,
    ngx_int_t rc);
static ngx_int_t ngx_http_cache_decide(ngx_http_request_t *r,
    ngx_http_cache_loc_conf_t *clcf, ngx_http_cache_ctx_t *ctx);
static ngx_int_t ngx_http_cache_send_lock(ngx_http_cache_ctx_t *ctx,
    ngx_http_cache_loc_conf_t *clcf);
static void ngx_http_cache_lock_timer(ngx_event_t *ev);
static void ngx_http_cache_request_done(void *data);
static void ngx_http_cache_release_hold(ngx_http_cache_ctx_t *ctx);
static ngx_int_t ngx_http_cache_unsafe_method(ngx_http_request_t *r,
    ngx_http_cache_loc_conf_t *clcf);
static void ngx_http_cache_lock_reply(void *data, redisReply *reply,
    ngx_int_t rc);
static ngx_int_t ngx_http_cache_lock_decide(ngx_http_request_t *r,
    ngx_http_cache_loc_conf_t *clcf, ngx_http_cache_ctx_t *ctx);
static void ngx_http_cache_new_token(ngx_http_cache_ctx_t *ctx);
static ngx_int_t ngx_http_cache_background_update(ngx_http_request_t *r,
    ngx_http_cache_ctx_t *ctx);
static ngx_int_t ngx_http_cache_start_background(ngx_http_request_t *r,
    ngx_http_cache_loc_conf_t *clcf, ngx_http_cache_ctx_t *ctx);
static ngx_int_t ngx_http_cache_end_background(ngx_http_request_t *r,
    ngx_http_cache_ctx_t *ctx);


/*
 * KEYS[1] the entry, KEYS[2] its lock; ARGV: token, lock PX, the response
 * time (ms) of the entry the caller already has, or 0.  Returns a newer
 * entry, 2 for a hit-for-miss marker, 1 when the lock was taken, 0 when
 * another holds it.  The response time is read from the entry's fixed
 * header (bytes 9-16, big-endian), the only part the script looks at.
 */
static ngx_str_t  ngx_http_cache_lock_lua = ngx_string(
    "local v = redis.call('GET', KEYS[1])\n"
    "if v then\n"
    "  if v == '" NGX_HTTP_CACHE_HFM "' then return 2 end\n"
    "  if string.len(v) >= 16 and string.sub(v, 1, 5) == 'NXEC\\1' then\n"
    "    local t = 0\n"
    "    for i = 9, 16 do t = t * 256 + string.byte(v, i) end\n"
    "    if t > tonumber(ARGV[3]) then return v end\n"
    "  end\n"
    "end\n"
    "if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then\n"
    "  return 1\n"
    "end\n"
    "return 0\n");

/*
 * edge_cache_min_uses: KEYS[1] the entry, KEYS[2] its use counter, ARGV[1]
 * the counter's window (PX).  The entry if there is one, else the uses
 * counted so far, this one included.
 */
static ngx_str_t  ngx_http_cache_uses_lua = ngx_string(
    "local v = redis.call('GET', KEYS[1])\n"
    "if v then return v end\n"
    "local n = redis.call('INCR', KEYS[2])\n"
    "if n == 1 then redis.call('PEXPIRE', KEYS[2], ARGV[1]) end\n"
    "return n\n");

/* KEYS[1] the lock, ARGV[1] the owner's token */
static ngx_str_t  ngx_http_cache_unlock_lua = ngx_string(
    "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
    "  return redis.call('DEL', KEYS[1])\n"
    "end\n"
    "return 0\n");


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

    if (ctx->background || ctx->request != r) {
        /* the update subrequest's, which shares the pool */
        return NULL;
    }

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

    if (clcf->zone == NULL) {
        return NGX_DECLINED;
    }

    if (r != r->main) {
        /* the only subrequest the cache acts in is its own update */
        ctx = ngx_http_get_module_ctx(r, ngx_http_cache_module);

        if (ctx == NULL || !ctx->background) {
            return NGX_DECLINED;
        }

        if (!ctx->looked_up) {
            if (ctx->warm) {
                /* a warm-up's: the key of the location it landed in */
                if (ngx_http_complex_value(r, clcf->key, &ctx->key)
                    != NGX_OK)
                {
                    return NGX_ERROR;
                }

                if (ctx->key.len == 0
                    || ctx->key.len > NGX_HTTP_CACHE_ENTRY_KEY_MAX)
                {
                    return NGX_HTTP_NO_CONTENT;
                }

                ngx_http_cache_hash_key(&ctx->key, ctx->hash);
            }

            return ngx_http_cache_start_background(r, clcf, ctx);
        }
    }

    ctx = ngx_http_cache_get_ctx(r);

    if (ctx) {
        if (ctx->done || ngx_edge_wait_pending(&ctx->wait)) {
            return ctx->done ? NGX_DECLINED : NGX_AGAIN;
        }

        return ngx_http_cache_decide(r, clcf, ctx);
    }

    /* the methods mask keeps NGX_CONF_BITMASK_SET, the same bit as
     * NGX_HTTP_UNKNOWN: without masking it out, a method nginx does not
     * know (M-SEARCH) would be answered with a stored GET response */
    if (!(r->method & clcf->methods & ~NGX_HTTP_UNKNOWN)) {
        return ngx_http_cache_unsafe_method(r, clcf);
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

    cln->handler = ngx_http_cache_request_done;
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
        ctx->no_store = 1;
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


/*
 * RFC 9111 4.4: a successful request of an unsafe method invalidates the
 * stored responses of its URL (the key this request computes): the store
 * filter deletes the main key (every variant with it) once the status is
 * known to be 2xx or 3xx.  Unsafe is every method not defined as safe
 * (RFC 9110 9.2.1; PROPFIND by RFC 4918 9.1): POST, PUT, DELETE, PATCH,
 * and extension methods nginx does not know (M-SEARCH, ...), whose
 * semantics the cache cannot tell.
 */

#define NGX_HTTP_CACHE_SAFE_METHODS                                          \
    (NGX_HTTP_GET|NGX_HTTP_HEAD|NGX_HTTP_OPTIONS|NGX_HTTP_TRACE              \
     |NGX_HTTP_PROPFIND)

static ngx_int_t
ngx_http_cache_unsafe_method(ngx_http_request_t *r,
    ngx_http_cache_loc_conf_t *clcf)
{
    ngx_http_cache_ctx_t  *ctx;

    if ((r->method & NGX_HTTP_CACHE_SAFE_METHODS)
        || r != r->main || ngx_http_get_module_ctx(r, ngx_http_cache_module))
    {
        return NGX_DECLINED;
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_cache_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->request = r;
    ctx->invalidate = 1;
    ctx->done = 1;

    if (ngx_http_complex_value(r, clcf->key, &ctx->key) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_cache_hash_key(&ctx->key, ctx->hash);
    ngx_http_set_ctx(r, ctx, ngx_http_cache_module);

    return NGX_DECLINED;
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
    u_char       ukey[NGX_HTTP_CACHE_RKEY_MAX + 5], px[NGX_INT_T_LEN];
    const char  *argv[6];
    size_t       argvlen[6];
    ngx_uint_t   argc;

    rkey.data = ngx_pnalloc(ctx->request->pool, NGX_HTTP_CACHE_RKEY_MAX);
    if (rkey.data == NULL) {
        return NGX_ERROR;
    }

    ngx_http_cache_redis_key(ctx, clcf->zone, values, &rkey);

    if (clcf->min_uses > 1 && values == NULL) {
        /* the same round trip counts the key's uses */
        ngx_memcpy(ukey, rkey.data, rkey.len);
        ngx_memcpy(ukey + rkey.len, ":uses", 5);

        argv[0] = "EVAL";
        argvlen[0] = 4;
        argv[1] = (const char *) ngx_http_cache_uses_lua.data;
        argvlen[1] = ngx_http_cache_uses_lua.len;
        argv[2] = "2";
        argvlen[2] = 1;
        argv[3] = (const char *) rkey.data;
        argvlen[3] = rkey.len;
        argv[4] = (const char *) ukey;
        argvlen[4] = rkey.len + 5;
        argv[5] = (const char *) px;
        argvlen[5] = ngx_sprintf(px, "%M", clcf->min_uses_window) - px;
        argc = 6;

    } else {
        argv[0] = "GET";
        argvlen[0] = 3;
        argv[1] = (const char *) rkey.data;
        argvlen[1] = rkey.len;
        argc = 2;
    }

    ctx->cmd = ngx_edge_redis_send_command(clcf->zone->redis,
                                           ngx_http_cache_get_reply, ctx,
                                           argc, argv, argvlen);
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

    rc = ngx_http_cache_l1_lookup(r, ctx, clcf->zone);
    if (rc != NGX_DECLINED) {
        return rc;
    }

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

    if (ctx->lock_timer.timer_set) {
        ngx_del_timer(&ctx->lock_timer);
    }

    if (ctx->lock_held) {
        ctx->lock_held = 0;
        ngx_http_cache_release_hold(ctx);
    }
}


static void
ngx_http_cache_release_hold(ngx_http_cache_ctx_t *ctx)
{
    ngx_http_cache_loc_conf_t  *clcf;

    clcf = ngx_http_get_module_loc_conf(ctx->request, ngx_http_cache_module);

    if (clcf->zone) {
        ngx_edge_redis_release(clcf->zone->redis);
    }
}


/* the request's end: the kept reply goes, a lock not released by a store
 * is released */

static void
ngx_http_cache_request_done(void *data)
{
    ngx_http_cache_ctx_t  *ctx = data;

    ngx_http_cache_loc_conf_t  *clcf;

    if (ctx->lock_owned) {
        clcf = ngx_http_get_module_loc_conf(ctx->request,
                                            ngx_http_cache_module);
        if (clcf->zone) {
            ngx_http_cache_release_lock(ctx, clcf->zone);
        }
    }

    if (ctx->reply) {
        freeReplyObject(ctx->reply);
        ctx->reply = NULL;
    }
}


static void
ngx_http_cache_lock_key(ngx_http_cache_ctx_t *ctx,
    ngx_http_cache_zone_t *zone, ngx_str_t *dst)
{
    ngx_http_cache_redis_key(ctx, zone, NULL, dst);
    dst->len = ngx_cpymem(dst->data + dst->len, ":lock", 5) - dst->data;
}


static void
ngx_http_cache_ignore_reply(void *data, redisReply *reply, ngx_int_t rc)
{
    /* fire and forget: the Redis client counts errors and timeouts */
}


void
ngx_http_cache_release_lock(ngx_http_cache_ctx_t *ctx,
    ngx_http_cache_zone_t *zone)
{
    ngx_str_t    lkey;
    u_char       buf[NGX_HTTP_CACHE_RKEY_MAX + 5];
    const char  *argv[5];
    size_t       argvlen[5];

    ctx->lock_owned = 0;

    lkey.data = buf;
    ngx_http_cache_lock_key(ctx, zone, &lkey);

    argv[0] = "EVAL";
    argvlen[0] = 4;
    argv[1] = (const char *) ngx_http_cache_unlock_lua.data;
    argvlen[1] = ngx_http_cache_unlock_lua.len;
    argv[2] = "1";
    argvlen[2] = 1;
    argv[3] = (const char *) lkey.data;
    argvlen[3] = lkey.len;
    argv[4] = (const char *) ctx->lock_token;
    argvlen[4] = sizeof(ctx->lock_token);

    (void) ngx_edge_redis_send_command(zone->redis,
                                       ngx_http_cache_ignore_reply, NULL,
                                       5, argv, argvlen);
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

    return ngx_http_cache_vary_match(r, ctx, e, ctx->variant);
}


/*
 * Does entry e (of this request's key) answer this request's variant?
 * NGX_OK yes (or no Vary); NGX_AGAIN: it is the main entry of another
 * variant, and ctx->vary_spec / vary_values hold this request's values
 * under its spec, for the variant key; NGX_DECLINED: unusable (a variant
 * entry that does not match, "Vary: *").  The Redis and the L1 lookups
 * share it.
 */

ngx_int_t
ngx_http_cache_vary_match(ngx_http_request_t *r, ngx_http_cache_ctx_t *ctx,
    ngx_http_cache_entry_t *e, ngx_flag_t variant)
{
    ngx_str_t  spec;

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

    return variant ? NGX_DECLINED : NGX_AGAIN;
}


static void
ngx_http_cache_get_reply(void *data, redisReply *reply, ngx_int_t rc)
{
    ngx_http_cache_ctx_t  *ctx = data;

    ngx_int_t                   crc;
    ngx_http_cache_loc_conf_t  *clcf;

    ctx->cmd = NULL;

    if (rc == NGX_OK && reply->type == REDIS_REPLY_STRING
        && reply->len == sizeof(NGX_HTTP_CACHE_HFM) - 1
        && ngx_strncmp(reply->str, NGX_HTTP_CACHE_HFM, reply->len) == 0)
    {
        ctx->hfm = 1;

    } else if (rc == NGX_OK && reply->type == REDIS_REPLY_STRING) {

        crc = ngx_http_cache_check_entry(ctx, reply);

        if (crc != NGX_DECLINED) {
            /* a variant's main entry too: L1 finds variants through it */
            ngx_http_cache_l1_promote(ctx, (u_char *) reply->str,
                                      (size_t) reply->len);
        }

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

    } else if (rc == NGX_OK && reply->type == REDIS_REPLY_INTEGER) {
        /* no entry; the key's uses so far (edge_cache_min_uses) */
        ctx->uses = (ngx_uint_t) ngx_max(reply->integer, 0);

    } else if (rc == NGX_OK && reply->type != REDIS_REPLY_NIL) {
        ngx_log_error(NGX_LOG_INFO, ctx->request->connection->log, 0,
                      "edge_cache: unexpected reply of type %d to a GET",
                      reply->type);
    }

    ngx_edge_wait_done(&ctx->wait);
}


/* the entry's state now */

static void
ngx_http_cache_age(ngx_http_cache_ctx_t *ctx)
{
    int64_t                  now;
    ngx_http_cache_entry_t  *e;

    e = &ctx->entry;
    now = ngx_edge_wall_usec() / 1000;
    ctx->age = e->initial_age + ngx_max(now - e->response_time, 0);
}


/*
 * May the stale entry answer now?  condition: one of the
 * NGX_HTTP_CACHE_STALE_* flags; besides edge_cache_use_stale, an error
 * is covered by the response's own stale-if-error window (RFC 5861).
 * must-revalidate and its kin forbid every stale use.
 */

ngx_flag_t
ngx_http_cache_stale_on(ngx_http_request_t *r, ngx_http_cache_ctx_t *ctx,
    ngx_uint_t condition)
{
    ngx_http_cache_entry_t     *e;
    ngx_http_cache_loc_conf_t  *clcf;

    if (ctx->reply == NULL || !ctx->stale) {
        return 0;
    }

    e = &ctx->entry;

    if (e->flags & NGX_HTTP_CACHE_ENTRY_MUST_REVAL) {
        return 0;
    }

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_cache_module);

    if (clcf->use_stale & condition) {
        return 1;
    }

    if (condition & NGX_HTTP_CACHE_STALE_ERRORS) {
        /* an error of some kind: stale-if-error */
        return ctx->age < e->fresh + e->sie;
    }

    /* updating: stale-while-revalidate */
    return ctx->age < e->fresh + e->swr;
}


/* a request with freshness demands of its own (no-cache, Pragma:
 * no-cache, max-age, min-fresh) gets no stale answer while an update
 * runs: it waits for the origin */

static ngx_flag_t
ngx_http_cache_request_wants_origin(ngx_http_request_t *r)
{
    ngx_http_cache_cc_t  cc;

    if (ngx_http_cache_request_cc(r, &cc) != NGX_OK) {
        return 1;
    }

    return cc.no_cache || cc.max_age >= 0 || cc.min_fresh >= 0;
}


static ngx_int_t
ngx_http_cache_serve_stale(ngx_http_request_t *r, ngx_http_cache_ctx_t *ctx,
    ngx_http_cache_status_e status)
{
    ctx->done = 1;
    ctx->status = status;
    ctx->tier = 2;

    return ngx_http_cache_send_hit(r, ctx);
}


/* to the origin: the content handler runs, the store filters are armed
 * (unless the lock waited in vain); a stale entry stays for the filters,
 * which serve it if the origin fails */

/*
 * edge_cache_revalidate: the stale entry's validators go to the origin
 * (If-None-Match, If-Modified-Since), and a 304 renews the entry (the
 * store filter).  Only for a request without conditionals of its own:
 * the origin's 304 must answer the cache's question, not the client's.
 */

static ngx_int_t
ngx_http_cache_add_validators(ngx_http_request_t *r,
    ngx_http_cache_ctx_t *ctx)
{
    const u_char            *p, *end;
    ngx_table_elt_t         *h;
    ngx_http_cache_entry_t  *e;
    ngx_http_cache_bytes_t   name, value;

    if (r->headers_in.if_none_match || r->headers_in.if_modified_since
        || r->headers_in.if_match || r->headers_in.if_unmodified_since
        || r->method != NGX_HTTP_GET)
    {
        return NGX_DECLINED;
    }

    e = &ctx->entry;
    p = e->headers.data;
    end = p + e->headers.len;

    while ((p = ngx_http_cache_entry_next_header(p, end, &name, &value))) {

        if (name.len == 4
            && ngx_strncasecmp((u_char *) name.data, (u_char *) "ETag", 4)
               == 0)
        {
            h = ngx_list_push(&r->headers_in.headers);
            if (h == NULL) {
                return NGX_ERROR;
            }

            ngx_str_set(&h->key, "If-None-Match");
            h->lowcase_key = (u_char *) "if-none-match";
            r->headers_in.if_none_match = h;

        } else if (name.len == sizeof("Last-Modified") - 1
                   && ngx_strncasecmp((u_char *) name.data,
                                      (u_char *) "Last-Modified",
                                      name.len) == 0)
        {
            h = ngx_list_push(&r->headers_in.headers);
            if (h == NULL) {
                return NGX_ERROR;
            }

            ngx_str_set(&h->key, "If-Modified-Since");
            h->lowcase_key = (u_char *) "if-modified-since";
            r->headers_in.if_modified_since = h;

        } else {
            continue;
        }

        h->hash = 1;
#if (nginx_version >= 1023000)
        h->next = NULL;
#endif
        h->value.data = (u_char *) value.data;
        h->value.len = value.len;
        ctx->revalidating = 1;
    }

    if (ctx->revalidating) {
        /* the conditionals are the cache's: nginx must not answer them
         * on the client's behalf */
        r->disable_not_modified = 1;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_cache_go_origin(ngx_http_request_t *r, ngx_http_cache_ctx_t *ctx)
{
    ngx_http_cache_cc_t         cc;
    ngx_http_cache_loc_conf_t  *clcf;

    ctx->done = 1;

    if (!ctx->background && ngx_http_cache_request_cc(r, &cc) == NGX_OK
        && cc.only_if_cached)
    {
        /* RFC 9111 5.2.1.7: nothing stored that may answer */
        ctx->status = NGX_HTTP_CACHE_ST_MISS;
        ctx->no_store = 1;
        return NGX_HTTP_GATEWAY_TIME_OUT;
    }

    if (ctx->status == NGX_HTTP_CACHE_ST_NONE) {
        ctx->status = ctx->stale ? NGX_HTTP_CACHE_ST_EXPIRED
                                 : NGX_HTTP_CACHE_ST_MISS;
    }

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_cache_module);

    if (ctx->reply && ctx->stale && clcf->revalidate && !ctx->no_store
        && ngx_http_cache_add_validators(r, ctx) == NGX_ERROR)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ctx->reply && !ctx->revalidating
        && !ngx_http_cache_stale_on(r, ctx, NGX_HTTP_CACHE_STALE_ERRORS))
    {
        /* no use for it any more */
        freeReplyObject(ctx->reply);
        ctx->reply = NULL;
        ctx->stale = 0;
    }

    return NGX_DECLINED;
}


static ngx_int_t
ngx_http_cache_decide(ngx_http_request_t *r, ngx_http_cache_loc_conf_t *clcf,
    ngx_http_cache_ctx_t *ctx)
{
    ngx_int_t                allows;
    ngx_http_cache_entry_t  *e;

    if (ctx->locking) {
        return ngx_http_cache_lock_decide(r, clcf, ctx);
    }

    e = &ctx->entry;

    if (ctx->reply && !ctx->background) {
        ngx_http_cache_age(ctx);

        allows = ngx_http_cache_request_allows(r, ctx->age, e->fresh,
                                 (e->flags & NGX_HTTP_CACHE_ENTRY_MUST_REVAL)
                                 != 0);

        if ((allows == NGX_HTTP_CACHE_USE_FRESH
             || allows == NGX_HTTP_CACHE_USE_STALE_OK)
            && !(e->flags & NGX_HTTP_CACHE_ENTRY_REVALIDATE))
        {
            ctx->done = 1;
            ctx->status = allows == NGX_HTTP_CACHE_USE_FRESH
                          ? NGX_HTTP_CACHE_ST_HIT : NGX_HTTP_CACHE_ST_STALE;
            ctx->tier = 2;

            return ngx_http_cache_send_hit(r, ctx);
        }

        if (allows == NGX_HTTP_CACHE_REQ_BYPASS) {
            /* request no-store: from the origin, and not stored */
            ctx->status = NGX_HTTP_CACHE_ST_BYPASS;
            ctx->no_store = 1;
            return ngx_http_cache_go_origin(r, ctx);
        }

        ctx->stale = 1;

        if (clcf->stale_if
            && ngx_http_test_predicates(r, clcf->stale_if) == NGX_DECLINED
            && ngx_http_cache_stale_on(r, ctx, NGX_HTTP_CACHE_STALE_ERROR))
        {
            /* the operator says the origin is down (say, the breaker's
             * $breaker_state): not even tried */
            return ngx_http_cache_serve_stale(r, ctx, NGX_HTTP_CACHE_ST_STALE);
        }

        if (clcf->background_update
            && !ngx_http_cache_request_wants_origin(r)
            && ngx_http_cache_stale_on(r, ctx, NGX_HTTP_CACHE_STALE_UPDATING)
            && ngx_http_cache_background_update(r, ctx) == NGX_OK)
        {
            return ngx_http_cache_serve_stale(r, ctx, NGX_HTTP_CACHE_ST_STALE);
        }
    }

    /* an update in the background always takes the lock: one per key */
    if ((clcf->lock || ctx->background) && !ctx->hfm) {
        ctx->lock_start = ngx_current_msec;
        ctx->lock_delay = 10;
        ngx_http_cache_new_token(ctx);

        if (ngx_http_cache_send_lock(ctx, clcf) == NGX_OK) {
            ctx->locking = 1;
            return ngx_edge_wait_phase(&ctx->wait);
        }
    }

    return ngx_http_cache_go_origin(r, ctx);
}


static void
ngx_http_cache_new_token(ngx_http_cache_ctx_t *ctx)
{
    uint64_t  v;
    u_char    raw[8];
    ngx_uint_t i;

    v = ((uint64_t) ngx_random() << 33) ^ ((uint64_t) ngx_random() << 2)
        ^ ((uint64_t) ngx_pid << 40) ^ (uint64_t) (uintptr_t) ctx;

    for (i = 0; i < 8; i++) {
        raw[i] = (u_char) (v >> (8 * i));
    }

    ngx_hex_dump(ctx->lock_token, raw, 8);
}


static ngx_int_t
ngx_http_cache_send_lock(ngx_http_cache_ctx_t *ctx,
    ngx_http_cache_loc_conf_t *clcf)
{
    ngx_str_t    rkey, lkey;
    u_char       kbuf[NGX_HTTP_CACHE_RKEY_MAX], lbuf[NGX_HTTP_CACHE_RKEY_MAX + 5];
    u_char       px[NGX_INT_T_LEN], rt[NGX_INT64_LEN];
    const char  *argv[8];
    size_t       argvlen[8];

    rkey.data = kbuf;
    ngx_http_cache_redis_key(ctx, clcf->zone, NULL, &rkey);
    lkey.data = lbuf;
    ngx_http_cache_lock_key(ctx, clcf->zone, &lkey);

    argv[0] = "EVAL";
    argvlen[0] = 4;
    argv[1] = (const char *) ngx_http_cache_lock_lua.data;
    argvlen[1] = ngx_http_cache_lock_lua.len;
    argv[2] = "2";
    argvlen[2] = 1;
    argv[3] = (const char *) rkey.data;
    argvlen[3] = rkey.len;
    argv[4] = (const char *) lkey.data;
    argvlen[4] = lkey.len;
    argv[5] = (const char *) ctx->lock_token;
    argvlen[5] = sizeof(ctx->lock_token);
    argv[6] = (const char *) px;
    argvlen[6] = ngx_sprintf(px, "%M", clcf->lock_age) - px;
    argv[7] = (const char *) rt;
    argvlen[7] = ngx_sprintf(rt, "%L", ctx->stale ? ctx->entry.response_time
                                                  : (int64_t) 0) - rt;

    ctx->cmd = ngx_edge_redis_send_command(clcf->zone->redis,
                                           ngx_http_cache_lock_reply, ctx,
                                           8, argv, argvlen);
    if (ctx->cmd == NULL) {
        return NGX_DECLINED;
    }

    ngx_edge_wait_add(&ctx->wait);

    return NGX_OK;
}


static void
ngx_http_cache_lock_reply(void *data, redisReply *reply, ngx_int_t rc)
{
    ngx_http_cache_ctx_t  *ctx = data;

    redisReply  *old;

    ctx->cmd = NULL;
    ctx->lock_rc = NGX_HTTP_CACHE_LOCK_ERROR;

    if (rc == NGX_OK && reply->type == REDIS_REPLY_INTEGER) {
        switch (reply->integer) {
        case 1:
            ctx->lock_rc = NGX_HTTP_CACHE_LOCK_OWNED;
            ctx->lock_owned = 1;
            break;
        case 2:
            ctx->lock_rc = NGX_HTTP_CACHE_LOCK_HFM;
            break;
        case 0:
            ctx->lock_rc = NGX_HTTP_CACHE_LOCK_BUSY;
            break;
        }

    } else if (rc == NGX_OK && reply->type == REDIS_REPLY_STRING) {
        /* a newer entry: the one the lock's owner stored */
        old = ctx->reply;
        ctx->variant = 0;

        if (ngx_http_cache_check_entry(ctx, reply) == NGX_OK) {
            if (old) {
                freeReplyObject(old);
            }

            ngx_edge_redis_keep_reply(reply);
            ctx->reply = reply;
            ctx->lock_rc = NGX_HTTP_CACHE_LOCK_ENTRY;

        } else {
            /* another variant, or unusable: keep waiting for the lock */
            if (old) {
                (void) ngx_http_cache_entry_parse(&ctx->entry,
                                                  (u_char *) old->str,
                                                  (size_t) old->len);
            }

            ctx->lock_rc = NGX_HTTP_CACHE_LOCK_BUSY;
        }
    }

    ngx_edge_wait_done(&ctx->wait);
}


static ngx_int_t
ngx_http_cache_lock_decide(ngx_http_request_t *r,
    ngx_http_cache_loc_conf_t *clcf, ngx_http_cache_ctx_t *ctx)
{
    if (ctx->lock_held) {
        ctx->lock_held = 0;
        ngx_edge_redis_release(clcf->zone->redis);
    }

    switch (ctx->lock_rc) {

    case NGX_HTTP_CACHE_LOCK_ENTRY:
        /*
         * Collapsed onto the owner's fetch: the entry was stored while
         * this request waited, the answer it waited for, used even when
         * it is stale on arrival (max-age shorter than the origin's
         * delay) or marked no-cache, or the waiters would queue behind
         * each other until the lock timeout.  An update in the background
         * has nothing left to do.
         */
        if (ctx->background) {
            ctx->locking = 0;
            return ngx_http_cache_end_background(r, ctx);
        }

        ngx_http_cache_age(ctx);

        ctx->locking = 0;
        ctx->stale = 0;
        ctx->done = 1;
        ctx->status = NGX_HTTP_CACHE_ST_HIT;
        ctx->tier = 2;

        return ngx_http_cache_send_hit(r, ctx);

    case NGX_HTTP_CACHE_LOCK_BUSY:
        break;

    default:
        /* owned, hit-for-miss, or Redis failed */
        ctx->locking = 0;

        if (ctx->background && ctx->lock_rc != NGX_HTTP_CACHE_LOCK_OWNED) {
            return ngx_http_cache_end_background(r, ctx);
        }

        return ngx_http_cache_go_origin(r, ctx);
    }

    if (ctx->background) {
        /* another request updates it */
        ctx->locking = 0;
        return ngx_http_cache_end_background(r, ctx);
    }

    if (ngx_http_cache_stale_on(r, ctx, NGX_HTTP_CACHE_STALE_UPDATING)
        && !ngx_http_cache_request_wants_origin(r))
    {
        ctx->locking = 0;
        return ngx_http_cache_serve_stale(r, ctx,
                                          NGX_HTTP_CACHE_ST_UPDATING);
    }

    if (ngx_current_msec - ctx->lock_start >= clcf->lock_timeout) {
        /* as proxy_cache_lock_timeout: go, and do not store */
        ctx->locking = 0;
        ctx->no_store = 1;

        ngx_http_cache_count(clcf->zone, st_lock_timeouts, 1);

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "edge_cache: \"%V\" still locked after %M ms: "
                      "to the origin, not stored", &ctx->key,
                      clcf->lock_timeout);

        return ngx_http_cache_go_origin(r, ctx);
    }

    if (!ctx->lock_waited) {
        ctx->lock_waited = 1;
        ngx_http_cache_count(clcf->zone, st_lock_waits, 1);
    }

    /* wait, then ask again; the timer is one of the request's pending
     * operations, and not cancelable while the request waits on it */
    ctx->lock_timer.handler = ngx_http_cache_lock_timer;
    ctx->lock_timer.data = ctx;
    ctx->lock_timer.log = r->connection->log;
    ctx->lock_timer.cancelable = 0;

    ngx_add_timer(&ctx->lock_timer,
                  ngx_min(ctx->lock_delay,
                          clcf->lock_timeout
                          - (ngx_current_msec - ctx->lock_start)));

    ctx->lock_delay = ngx_min(ctx->lock_delay * 2, 160);

    /* no command of ours is in flight while the timer runs: hold the
     * connection, or a worker told to exit (a reload) closes it, and the
     * next poll would find none and go to the origin */
    ngx_edge_redis_hold(clcf->zone->redis);
    ctx->lock_held = 1;

    ngx_edge_wait_add(&ctx->wait);

    return ngx_edge_wait_phase(&ctx->wait);
}


static void
ngx_http_cache_lock_timer(ngx_event_t *ev)
{
    ngx_http_cache_ctx_t  *ctx = ev->data;

    ngx_http_cache_loc_conf_t  *clcf;

    clcf = ngx_http_get_module_loc_conf(ctx->request, ngx_http_cache_module);

    /* the timer's pending count passes to the command */
    ctx->wait.pending--;

    if (ngx_http_cache_send_lock(ctx, clcf) != NGX_OK) {
        ctx->lock_rc = NGX_HTTP_CACHE_LOCK_ERROR;
        ctx->wait.pending++;
        ngx_edge_wait_done(&ctx->wait);
    }
}


/*
 * stale-while-revalidate: the client gets the stale entry now, and a
 * background subrequest (a clone of this request, in this location)
 * fetches and stores a fresh one, taking the lock first so that one
 * update runs per key in the fleet.  Its output goes nowhere but the
 * store (the filters swallow it).
 */

static ngx_int_t
ngx_http_cache_background_update(ngx_http_request_t *r,
    ngx_http_cache_ctx_t *ctx)
{
    ngx_http_request_t    *sr;
    ngx_http_cache_ctx_t  *sctx;

    if (r != r->main) {
        return NGX_DECLINED;
    }

    sctx = ngx_pcalloc(r->pool, sizeof(ngx_http_cache_ctx_t));
    if (sctx == NULL) {
        return NGX_ERROR;
    }

    r->preserve_body = 1;

    if (ngx_http_subrequest(r, &r->uri, &r->args, &sr, NULL,
                            NGX_HTTP_SUBREQUEST_CLONE
                            |NGX_HTTP_SUBREQUEST_BACKGROUND)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    sctx->request = sr;
    sctx->background = 1;
    sctx->expect_len = -1;
    sctx->key = ctx->key;
    ngx_memcpy(sctx->hash, ctx->hash, NGX_HTTP_CACHE_HASH_LEN);
    sctx->epoch = ctx->epoch;
    sctx->entry = ctx->entry;     /* its response time, for the lock */
    sctx->stale = 1;
    sctx->status = NGX_HTTP_CACHE_ST_UPDATING;

    ngx_http_set_ctx(sr, sctx, ngx_http_cache_module);

    return NGX_OK;
}


static ngx_int_t
ngx_http_cache_start_background(ngx_http_request_t *r,
    ngx_http_cache_loc_conf_t *clcf, ngx_http_cache_ctx_t *ctx)
{
    ngx_pool_cleanup_t  *cln;

    ctx->looked_up = 1;
    ctx->request_time = ngx_edge_wall_usec() / 1000;

    if (ngx_edge_wait_init(&ctx->wait, r, ngx_http_cache_detach, ctx)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    cln->handler = ngx_http_cache_request_done;
    cln->data = ctx;

    return ngx_http_cache_decide(r, clcf, ctx);
}


/* the update is not needed (another request does it, or Redis failed):
 * the subrequest ends with nothing sent anywhere */

static ngx_int_t
ngx_http_cache_end_background(ngx_http_request_t *r,
    ngx_http_cache_ctx_t *ctx)
{
    ctx->done = 1;
    ctx->no_store = 1;

    return NGX_HTTP_NO_CONTENT;
}
