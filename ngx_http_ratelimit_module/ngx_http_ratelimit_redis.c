/*
 * ngx_http_ratelimit_module: decisions in Redis: the batched GCRA
 * script, the command of one decision, and its reply.
 */

#include "ngx_http_ratelimit_module.h"



static void ngx_http_ratelimit_log_reply(ngx_http_ratelimit_check_t *chk,
    redisReply *reply);
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
 * cost * interval and interval + tau are within NGX_EDGE_EXACT_MAX (2^50,
 * checked when the configuration is read and, for a cost from a variable,
 * per request), so every sum with a timestamp stays below 2^53, exact in
 * Lua's doubles.
 * One element per item: an integer x >= 0, passed, the bucket's excess
 * x; an integer x < 0, refused, excess -1 - x; {ttl}, banned; an error
 * (a key of another type, a bucket that is not a number).  Each item is
 * decided under pcall, so that one bad item fails alone (Redis does not
 * roll back a script: a failing call must not abort the items after it
 * while those before stay written), and an item fails before it writes.
 * A refusal writes nothing unless bans are on.
 * ngx_http_ratelimit_parse_reply() derives the rest from the item's own
 * interval, tau and cost.
 */

#define NGX_HTTP_RATELIMIT_LUA_BODY                                           \
    "local out, clock = {}, nil\n"                                            \
    "local function decide(k, a, now)\n"                                      \
    "  local ban = 0\n"                                                       \
    "  if K == 3 then ban = redis.call('PTTL', KEYS[k + 3]) end\n"            \
    "  if ban > 0 then return {ban * 1000} end\n"                             \
    "  local tat = redis.call('GET', KEYS[k + 1])\n"                          \
    "  if tat then\n"                                                         \
    "    tat = tonumber(tat)\n"                                               \
    "    if not tat then\n"                                                   \
    "      return redis.error_reply('ERR the bucket ' .. KEYS[k + 1]\n"       \
    "                               .. ' does not hold a number')\n"          \
    "    end\n"                                                               \
    "    if tat < now then tat = now end\n"                                   \
    "  else\n"                                                                \
    "    tat = now\n"                                                         \
    "  end\n"                                                                 \
    "  local new_tat = tat + tonumber(ARGV[a + 1])\n"                         \
    "  if new_tat - tonumber(ARGV[a + 2]) <= now then\n"                      \
    "    redis.call('SET', KEYS[k + 1], string.format('%d', new_tat),\n"      \
    "               'PX', math.floor((new_tat - now) / 1000) + 1)\n"          \
    "    return tat - now\n"                                                  \
    "  end\n"                                                                 \
    "  if K == 3 then\n"                                                      \
    "    local n = redis.call('INCR', KEYS[k + 2])\n"                         \
    "    if n == 1 then\n"                                                    \
    "      redis.call('PEXPIRE', KEYS[k + 2], ARGV[a + 5])\n"                 \
    "    end\n"                                                               \
    "    if n >= tonumber(ARGV[a + 4]) then\n"                                \
    "      redis.call('SET', KEYS[k + 3], '1', 'PX', ARGV[a + 6])\n"          \
    "      redis.call('DEL', KEYS[k + 2])\n"                                  \
    "      return {tonumber(ARGV[a + 6]) * 1000}\n"                           \
    "    end\n"                                                               \
    "  end\n"                                                                 \
    "  return -1 - (tat - now)\n"                                             \
    "end\n"                                                                   \
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
    "  local ok, res = pcall(decide, k, a, now)\n"                            \
    "  if ok then\n"                                                          \
    "    out[i] = res\n"                                                      \
    "  elseif type(res) == 'table' and res.err then\n"                        \
    "    out[i] = res\n"                                                      \
    "  else\n"                                                                \
    "    out[i] = {err = 'ERR ' .. tostring(res)}\n"                          \
    "  end\n"                                                                 \
    "end\n"                                                                   \
    "return out\n"

ngx_str_t  ngx_http_ratelimit_lua = ngx_string(
    "local K, A = 1, 3\n" NGX_HTTP_RATELIMIT_LUA_BODY);

ngx_str_t  ngx_http_ratelimit_ban_lua = ngx_string(
    "local K, A = 3, 6\n" NGX_HTTP_RATELIMIT_LUA_BODY);


ngx_int_t
ngx_http_ratelimit_send(ngx_http_request_t *r, ngx_http_ratelimit_ctx_t *ctx,
    ngx_http_ratelimit_check_t *chk)
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
        /* the nodes' shared time: the wall clock (the local "now" is
         * monotonic, this node's own) */
        ngx_http_ratelimit_arg(2, "%L", ngx_edge_wall_usec());

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


/*
 * A reply that decides nothing: an item's own error (a key of another
 * type...) or a reply of no known shape.  The item gets the failure
 * policy; one line per interval and worker, since a poisoned key or a
 * Redis that answers nonsense would otherwise log on every request.
 */

static void
ngx_http_ratelimit_log_reply(ngx_http_ratelimit_check_t *chk,
    redisReply *reply)
{
    ngx_uint_t                  suppressed;
    ngx_http_request_t         *r;
    ngx_http_ratelimit_zone_t  *zone;

    zone = chk->zone;
    r = chk->ctx->wait.request;

    if (!ngx_edge_log_gate_open(&zone->log_gate,
                                NGX_HTTP_RATELIMIT_LOG_INTERVAL, &suppressed))
    {
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "ratelimit zone \"%V\": redis \"%V\" failed the "
                      "decision: %*s; the failure policy applies "
                      "(%ui similar lines suppressed)",
                      &zone->name, &zone->redis->name,
                      (size_t) reply->len, reply->str, suppressed);
        return;
    }

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "ratelimit zone \"%V\": unexpected reply from redis "
                  "\"%V\"; the failure policy applies "
                  "(%ui similar lines suppressed)",
                  &zone->name, &zone->redis->name, suppressed);
}


static void
ngx_http_ratelimit_redis_reply(void *data, redisReply *reply, ngx_int_t rc)
{
    ngx_http_ratelimit_check_t *chk = data;

    int64_t                       now;
    ngx_http_ratelimit_status_e   status;

    /* the check lives in r->pool: the request is alive, else the command
     * would have been detached by ngx_http_ratelimit_detach() */

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
        if (rc == NGX_OK) {
            ngx_http_ratelimit_log_reply(chk, reply);
        }

        ngx_http_ratelimit_fail(chk, now);
    }

    ngx_edge_wait_done(&chk->ctx->wait);
}
