/*
 * ngx_http_ratelimit_module: decisions in Redis: the batched GCRA
 * script, the command of one decision, and its reply.
 */

#include "ngx_http_ratelimit_module.h"



static void ngx_http_ratelimit_redis_reply(void *data, redisReply *reply,
    ngx_int_t rc);


/*
 * The Redis side of ngx_http_ratelimit_gcra(), plus bans, for a batch of
 * decisions (see ngx_edge_redis_send_item()).  Each item has K keys and A
 * args; the C side prepends "local K, A = 1, 3" (GCRA only) or
 * "local K, A = 3, 6" (with bans).
 * KEYS: tat [, reject counter, ban].  ARGV: cost * interval, interval +
 * tau (computed in C: each tonumber() costs Redis a third of a
 * microsecond), now ("" for Redis's clock, read once per batch) [, ban
 * threshold, ban window ms, ban duration ms].  Times in microseconds;
 * cost <= 10^6 and interval <= 3.6 * 10^9 keep every sum below 2^53,
 * exact in Lua's doubles.
 * One element per item: an integer x >= 0, passed, the bucket's excess
 * x; an integer x < 0, refused, excess -1 - x; {ttl}, banned.  A refusal
 * writes nothing unless bans are on.  ngx_http_ratelimit_parse_reply()
 * derives the rest from the item's own interval, tau and cost.
 */

#define NGX_HTTP_RATELIMIT_LUA_BODY                                           \
    "local out, clock = {}, nil\n"                                            \
    "for i = 1, #KEYS / K do\n"                                               \
    "  local k, a = (i - 1) * K, (i - 1) * A\n"                               \
    "  local now = ARGV[a + 3]\n"                                             \
    "  if now == '' then\n"                                                   \
    "    if not clock then\n"                                                 \
    "      local t = redis.call('TIME')\n"                                    \
    "      clock = t[1] * 1000000 + t[2]\n"                                   \
    "    end\n"                                                               \
    "    now = clock\n"                                                       \
    "  else\n"                                                                \
    "    now = tonumber(now)\n"                                               \
    "  end\n"                                                                 \
    "  local ban = 0\n"                                                       \
    "  if K == 3 then ban = redis.call('PTTL', KEYS[k + 3]) end\n"            \
    "  if ban > 0 then\n"                                                     \
    "    out[i] = {ban * 1000}\n"                                             \
    "  else\n"                                                                \
    "    local tat = tonumber(redis.call('GET', KEYS[k + 1])) or now\n"       \
    "    if tat < now then tat = now end\n"                                   \
    "    local new_tat = tat + tonumber(ARGV[a + 1])\n"                       \
    "    if new_tat - tonumber(ARGV[a + 2]) <= now then\n"                    \
    "      redis.call('SET', KEYS[k + 1], string.format('%d', new_tat),\n"    \
    "                 'PX', math.floor((new_tat - now) / 1000) + 1)\n"        \
    "      out[i] = tat - now\n"                                              \
    "    else\n"                                                              \
    "      out[i] = -1 - (tat - now)\n"                                       \
    "      if K == 3 then\n"                                                  \
    "        local n = redis.call('INCR', KEYS[k + 2])\n"                     \
    "        if n == 1 then redis.call('PEXPIRE', KEYS[k + 2], ARGV[a + 5])"  \
    " end\n"                                                                  \
    "        if n >= tonumber(ARGV[a + 4]) then\n"                            \
    "          redis.call('SET', KEYS[k + 3], '1', 'PX', ARGV[a + 6])\n"      \
    "          redis.call('DEL', KEYS[k + 2])\n"                              \
    "          out[i] = {tonumber(ARGV[a + 6]) * 1000}\n"                     \
    "        end\n"                                                           \
    "      end\n"                                                             \
    "    end\n"                                                               \
    "  end\n"                                                                 \
    "end\n"                                                                   \
    "return out\n"

ngx_str_t  ngx_http_ratelimit_lua = ngx_string(
    "local K, A = 1, 3\n" NGX_HTTP_RATELIMIT_LUA_BODY);

ngx_str_t  ngx_http_ratelimit_ban_lua = ngx_string(
    "local K, A = 3, 6\n" NGX_HTTP_RATELIMIT_LUA_BODY);


ngx_int_t
ngx_http_ratelimit_send(ngx_http_request_t *r, ngx_http_ratelimit_ctx_t *ctx,
    ngx_http_ratelimit_check_t *chk, int64_t now)
{
    u_char                     *p, *keys;
    size_t                      len;
    ngx_uint_t                  i, nkeys, a;
    ngx_http_ratelimit_zone_t  *zone;

    static const char  suffix[] = { 't', 'r', 'b' };

    zone = chk->zone;

    if (!ngx_edge_redis_ready(zone->redis)) {
        return NGX_ERROR;
    }

    /* "rl:{zone:key}:t", and :r and :b with bans: the hash tag keeps a
     * key's entries in one slot of a Redis Cluster */
    nkeys = zone->script->item_keys;
    len = sizeof("rl:{:}:t") - 1 + zone->prefix.len + chk->key.len;

    keys = ngx_pnalloc(r->pool, nkeys * len);
    if (keys == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < nkeys; i++) {
        p = keys + i * len;
        chk->argv[i] = (const char *) p;
        chk->argvlen[i] = len;
        ngx_sprintf(p, "rl:{%V:%V}:%c", &zone->prefix, &chk->key,
                    suffix[i]);
    }

    a = nkeys;

#define ngx_http_ratelimit_arg(n, fmt, v)                                     \
    chk->argv[a + n] = (const char *) chk->nums[n];                           \
    chk->argvlen[a + n] = ngx_sprintf(chk->nums[n], fmt, v) - chk->nums[n]

    ngx_http_ratelimit_arg(0, "%L", chk->gcra.cost * chk->gcra.interval);
    ngx_http_ratelimit_arg(1, "%L", chk->gcra.interval + chk->gcra.tau);

    if (zone->clock == NGX_HTTP_RATELIMIT_CLOCK_NGINX) {
        ngx_http_ratelimit_arg(2, "%L", now);

    } else {
        chk->argv[a + 2] = "";
        chk->argvlen[a + 2] = 0;
    }

    if (zone->ban_threshold) {
        ngx_http_ratelimit_arg(3, "%ui", zone->ban_threshold);
        ngx_http_ratelimit_arg(4, "%M", zone->ban_window);
        ngx_http_ratelimit_arg(5, "%M", zone->ban_duration);
    }

#undef ngx_http_ratelimit_arg

    chk->cmd = ngx_edge_redis_send_item(zone->redis, zone->script,
                                        ngx_http_ratelimit_redis_reply, chk,
                                        chk->argv, chk->argvlen);
    if (chk->cmd == NULL) {
        return NGX_ERROR;
    }

    ngx_edge_wait_add(&ctx->wait);

    return NGX_OK;
}


/* Lua numbers are doubles: anything past 2^53 did not come from the
 * script */
#define NGX_HTTP_RATELIMIT_REPLY_MAX  ((long long) 1 << 53)

static ngx_http_ratelimit_status_e
ngx_http_ratelimit_parse_reply(redisReply *reply,
    ngx_http_ratelimit_check_t *chk)
{
    long long                      x;
    ngx_http_ratelimit_gcra_t     *g;
    ngx_http_ratelimit_verdict_t  *v;

    g = &chk->gcra;
    v = &chk->verdict;

    if (reply->type == REDIS_REPLY_INTEGER
        && reply->integer < NGX_HTTP_RATELIMIT_REPLY_MAX
        && reply->integer > -NGX_HTTP_RATELIMIT_REPLY_MAX)
    {
        x = reply->integer;

        if (x >= 0) {
            v->allowed = 1;
            v->excess = x;
            v->retry = 0;
            v->reset = x + g->cost * g->interval;
            return NGX_HTTP_RATELIMIT_PASSED;
        }

        /* the same arithmetic as ngx_http_ratelimit_gcra() */
        v->allowed = 0;
        v->excess = -1 - x;
        v->retry = v->excess + (g->cost - 1) * g->interval - g->tau;
        v->reset = v->excess;

        return (v->retry > 0) ? NGX_HTTP_RATELIMIT_REJECTED
                              : NGX_HTTP_RATELIMIT_NONE;
    }

    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 1
        && reply->element[0]->type == REDIS_REPLY_INTEGER
        && reply->element[0]->integer > 0
        && reply->element[0]->integer < NGX_HTTP_RATELIMIT_REPLY_MAX)
    {
        v->allowed = 0;
        v->excess = 0;
        v->retry = reply->element[0]->integer;
        v->reset = 0;
        return NGX_HTTP_RATELIMIT_BANNED;
    }

    return NGX_HTTP_RATELIMIT_NONE;
}


static void
ngx_http_ratelimit_redis_reply(void *data, redisReply *reply, ngx_int_t rc)
{
    ngx_http_ratelimit_check_t *chk = data;

    int64_t                       now;
    ngx_http_ratelimit_zone_t    *zone;
    ngx_http_ratelimit_status_e   status;

    /* the check lives in r->pool: the request is alive, else the command
     * would have been detached by ngx_http_ratelimit_detach() */

    zone = chk->zone;
    chk->cmd = NULL;
    now = ngx_http_ratelimit_now();

    status = (rc == NGX_OK) ? ngx_http_ratelimit_parse_reply(reply, chk)
                            : NGX_HTTP_RATELIMIT_NONE;

    if (status != NGX_HTTP_RATELIMIT_NONE) {
        chk->status = status;

        if (status != NGX_HTTP_RATELIMIT_PASSED) {
            ngx_http_ratelimit_remember(chk,
                                        status == NGX_HTTP_RATELIMIT_BANNED,
                                        now);
        }

    } else {
        if (rc == NGX_OK && reply->type != REDIS_REPLY_ERROR
            && ngx_time() >= zone->log_next)
        {
            /* once per interval: a Redis that answers nonsense would
             * otherwise log on every request (error replies are logged by
             * the client already) */
            zone->log_next = ngx_time() + 5;
            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                          "ratelimit zone \"%V\": unexpected reply from "
                          "redis \"%V\"", &zone->name, &zone->redis->name);
        }

        ngx_http_ratelimit_fail(chk, now);
    }

    ngx_edge_wait_done(&chk->ctx->wait);
}
