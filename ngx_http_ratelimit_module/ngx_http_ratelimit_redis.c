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


/*
 * The sliding window in Redis: no script, plain commands.  Per decision,
 * pipelined with everything else the worker sends in this pass of its
 * event loop:
 *     INCRBY rl:{prefix:key}:s<k> cost     the current window's count
 *     GET rl:{prefix:key}:s<k-1>           the previous window's count
 *     [PTTL rl:{prefix:key}:b]             with bans: is the key banned
 * and, once INCRBY's reply says the key is new (the count is the cost),
 *     PEXPIRE rl:{prefix:key}:s<k> ms      kept while it can be weighted
 * not waited for: a returning key costs Redis two commands, not three
 * (PEXPIRE on every call was a third of Redis's time for them).  Should
 * that PEXPIRE be lost (the connection lost between the two), the key
 * gets it again when its count crosses a power of two (1, 2, 4, 8 ...:
 * a few commands per window for a busy key), and at every refusal's
 * DECRBY; only a key with no later request in its window stays without
 * an expiry.  k is the window of this node's wall clock (the nodes'
 * clocks must agree: Redis's TIME cannot name a key in the same round
 * trip).  The decision is made here from the replies.  INCRBY counts the
 * request before anyone knows whether it passes, so a refused (or banned)
 * request takes its cost back with DECRBY (and PEXPIRE again) before it
 * is answered: refused requests change nothing, as with GCRA.  Between the
 * two, concurrent decisions on the key see the refused cost too: they can
 * be refused when they would have passed, never passed when they should
 * have been refused.  With bans, a refusal also counts toward a ban, in
 * the same round trip as the DECRBY: INCR of the refusals' key (and
 * PEXPIRE when it was the first), and at the threshold SET of the ban key
 * and DEL of the count, as the GCRA script does.
 */

/* chk->sw_cmds[]: the commands whose replies are waited for */
#define NGX_HTTP_RATELIMIT_SW_INCR    0
#define NGX_HTTP_RATELIMIT_SW_GET     1
#define NGX_HTTP_RATELIMIT_SW_BAN     2

/* chk->argv holds the keys */
#define NGX_HTTP_RATELIMIT_SW_CUR       0   /* the current window */
#define NGX_HTTP_RATELIMIT_SW_PREV      1   /* the previous window */
#define NGX_HTTP_RATELIMIT_SW_BANNED    2   /* the ban */
#define NGX_HTTP_RATELIMIT_SW_REFUSALS  3   /* refusals toward a ban */
#define NGX_HTTP_RATELIMIT_SW_KEYS      4


static void ngx_http_ratelimit_sw_conclude(ngx_http_ratelimit_check_t *chk);
static void ngx_http_ratelimit_sw_expire(ngx_http_ratelimit_check_t *chk);


static void
ngx_http_ratelimit_sw_ignore(void *data, redisReply *reply, ngx_int_t rc)
{
    /* a command whose reply decides nothing (DECRBY, DEL, ...) */
}


static ngx_edge_redis_cmd_t *
ngx_http_ratelimit_sw_command(ngx_http_ratelimit_check_t *chk,
    ngx_edge_redis_handler_pt handler, ngx_uint_t key, const char *name,
    const char *arg, size_t arglen)
{
    ngx_uint_t   argc;
    const char  *argv[5];
    size_t       argvlen[5];

    argv[0] = name;
    argvlen[0] = ngx_strlen(name);
    argv[1] = chk->argv[key];
    argvlen[1] = chk->argvlen[key];
    argc = 2;

    if (key == NGX_HTTP_RATELIMIT_SW_BANNED && arg) {
        /* the ban: SET key 1 PX ms, one command, so that a ban never
         * lives without its expiry */
        argv[argc] = "1";
        argvlen[argc++] = 1;
        argv[argc] = "PX";
        argvlen[argc++] = 2;
    }

    if (arg) {
        argv[argc] = arg;
        argvlen[argc++] = arglen;
    }

    return ngx_edge_redis_send_command(chk->zone->redis, handler,
                                       handler == ngx_http_ratelimit_sw_ignore
                                       ? NULL : chk,
                                       argc, argv, argvlen);
}


/* a command sent for its effect only: a failure to send it is logged by
 * the Redis client and changes no decision */

static void
ngx_http_ratelimit_sw_effect(ngx_http_ratelimit_check_t *chk, ngx_uint_t key,
    const char *name, int64_t arg, ngx_flag_t has_arg)
{
    u_char  num[NGX_INT64_LEN];
    size_t  len;

    len = has_arg ? (size_t) (ngx_sprintf(num, "%L", arg) - num) : 0;

    (void) ngx_http_ratelimit_sw_command(chk, ngx_http_ratelimit_sw_ignore,
                                         key, name,
                                         has_arg ? (const char *) num : NULL,
                                         len);
}


static ngx_int_t
ngx_http_ratelimit_sw_integer(redisReply *reply, int64_t *n)
{
    size_t   i;
    int64_t  x;

    if (reply->type == REDIS_REPLY_INTEGER) {
        *n = reply->integer;
        return NGX_OK;
    }

    if (reply->type == REDIS_REPLY_NIL) {
        *n = 0;
        return NGX_OK;
    }

    if (reply->type != REDIS_REPLY_STRING || reply->len == 0
        || reply->len > 18)
    {
        return NGX_ERROR;
    }

    /* a count: an integer, maybe negative (a DECRBY that found its key
     * expired), counted as 0 then */
    i = (reply->str[0] == '-') ? 1 : 0;

    if (i == (size_t) reply->len) {
        return NGX_ERROR;
    }

    for (x = 0; i < (size_t) reply->len; i++) {
        if (reply->str[i] < '0' || reply->str[i] > '9') {
            return NGX_ERROR;
        }

        x = x * 10 + (reply->str[i] - '0');
    }

    *n = (reply->str[0] == '-') ? 0 : x;

    return NGX_OK;
}


/*
 * Does INCRBY's count (cost included) call for a PEXPIRE: the key is new
 * (nothing before), or the count crossed a power of two, which gives a
 * key whose first PEXPIRE was lost its expiry back at little cost
 */

static ngx_flag_t
ngx_http_ratelimit_sw_expire_due(int64_t count, int64_t cost)
{
    int64_t  before;

    before = count - cost;

    if (before <= 0) {
        return 1;
    }

    /* the highest bit of count is above those of before */
    return (count ^ before) > before;
}


/* the current window's count is weighted until the next one ends */

static void
ngx_http_ratelimit_sw_expire(ngx_http_ratelimit_check_t *chk)
{
    int64_t  w, k;

    w = chk->zone->window;
    k = chk->sw_now / w;

    ngx_http_ratelimit_sw_effect(chk, NGX_HTTP_RATELIMIT_SW_CUR, "PEXPIRE",
                                 ((k + 2) * w - chk->sw_now) / 1000 + 1, 1);
}


static void
ngx_http_ratelimit_sw_reply(ngx_http_ratelimit_check_t *chk, ngx_uint_t which,
    redisReply *reply, ngx_int_t rc)
{
    int64_t  n;

    chk->sw_cmds[which] = NULL;

    if (rc != NGX_OK) {
        chk->sw_failed = 1;

    } else if (reply->type == REDIS_REPLY_ERROR
               || ngx_http_ratelimit_sw_integer(reply, &n) != NGX_OK
               || (which != NGX_HTTP_RATELIMIT_SW_GET
                   && reply->type != REDIS_REPLY_INTEGER))
    {
        if (!chk->sw_failed) {
            ngx_http_ratelimit_log_reply(chk, reply);
        }

        chk->sw_failed = 1;

    } else {
        switch (which) {

        case NGX_HTTP_RATELIMIT_SW_INCR:
            chk->sw_count = n;
            chk->sw_counted = 1;

            if (ngx_http_ratelimit_sw_expire_due(n, chk->gcra.cost)) {
                ngx_http_ratelimit_sw_expire(chk);
            }

            break;

        case NGX_HTTP_RATELIMIT_SW_GET:
            chk->sw_prev = n;
            break;

        case NGX_HTTP_RATELIMIT_SW_BAN:
            chk->sw_ban = n;
            break;

        default:
            break;
        }
    }

    if (--chk->sw_pending == 0) {
        ngx_http_ratelimit_sw_conclude(chk);
    }
}


static void
ngx_http_ratelimit_sw_incr_reply(void *data, redisReply *reply, ngx_int_t rc)
{
    ngx_http_ratelimit_sw_reply(data, NGX_HTTP_RATELIMIT_SW_INCR, reply, rc);
}


static void
ngx_http_ratelimit_sw_get_reply(void *data, redisReply *reply, ngx_int_t rc)
{
    ngx_http_ratelimit_sw_reply(data, NGX_HTTP_RATELIMIT_SW_GET, reply, rc);
}


static void
ngx_http_ratelimit_sw_ban_reply(void *data, redisReply *reply, ngx_int_t rc)
{
    ngx_http_ratelimit_sw_reply(data, NGX_HTTP_RATELIMIT_SW_BAN, reply, rc);
}


ngx_int_t
ngx_http_ratelimit_sw_send(ngx_http_request_t *r,
    ngx_http_ratelimit_ctx_t *ctx, ngx_http_ratelimit_check_t *chk)
{
    u_char                     *p, cost[NGX_INT64_LEN];
    size_t                      len, cost_len;
    int64_t                     w, k, now;
    ngx_uint_t                  i;
    ngx_http_ratelimit_zone_t  *zone;

    static const char  suffix[] = { 's', 's', 'b', 'r' };

    zone = chk->zone;

    if (!ngx_edge_redis_ready(zone->redis)) {
        return NGX_ERROR;
    }

    now = ngx_edge_wall_usec();
    w = zone->window;
    k = now / w;

    chk->sw_now = now;
    chk->sw_count = 0;
    chk->sw_prev = 0;
    chk->sw_ban = 0;
    chk->sw_failed = 0;
    chk->sw_counted = 0;

    /* "rl:{zone:key}:s<window>": the hash tag keeps a key's entries in
     * one slot of a Redis Cluster */
    len = sizeof("rl:{:}:s") - 1 + zone->prefix.len + chk->key.len
          + NGX_INT64_LEN;

    p = ngx_pnalloc(r->pool, NGX_HTTP_RATELIMIT_SW_KEYS * len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < NGX_HTTP_RATELIMIT_SW_KEYS; i++) {
        chk->argv[i] = (const char *) p;
        p = ngx_sprintf(p, "rl:{%V:%V}:%c", &zone->prefix, &chk->key,
                        suffix[i]);

        if (i == NGX_HTTP_RATELIMIT_SW_CUR
            || i == NGX_HTTP_RATELIMIT_SW_PREV)
        {
            /* the window's number */
            p = ngx_sprintf(p, "%L", k - (int64_t) i);
        }

        chk->argvlen[i] = p - (u_char *) chk->argv[i];
    }

    cost_len = ngx_sprintf(cost, "%L", chk->gcra.cost) - cost;

    chk->sw_cmds[NGX_HTTP_RATELIMIT_SW_INCR] =
        ngx_http_ratelimit_sw_command(chk, ngx_http_ratelimit_sw_incr_reply,
                                      NGX_HTTP_RATELIMIT_SW_CUR, "INCRBY",
                                      (const char *) cost, cost_len);

    chk->sw_cmds[NGX_HTTP_RATELIMIT_SW_GET] =
        ngx_http_ratelimit_sw_command(chk, ngx_http_ratelimit_sw_get_reply,
                                      NGX_HTTP_RATELIMIT_SW_PREV, "GET",
                                      NULL, 0);

    chk->sw_pending = 2;

    if (zone->ban_threshold) {
        chk->sw_cmds[NGX_HTTP_RATELIMIT_SW_BAN] =
            ngx_http_ratelimit_sw_command(chk,
                                          ngx_http_ratelimit_sw_ban_reply,
                                          NGX_HTTP_RATELIMIT_SW_BANNED,
                                          "PTTL", NULL, 0);
        chk->sw_pending = 3;
    }

    for (i = 0; i < chk->sw_pending; i++) {
        if (chk->sw_cmds[i] == NULL) {
            /* the in-flight bound, or the connection went: the failure
             * policy decides; what was sent is detached (an INCRBY that
             * still runs counts, as a timed-out decision may) */
            ngx_http_ratelimit_sw_detach(chk);
            return NGX_ERROR;
        }
    }

    ngx_edge_wait_add(&ctx->wait);

    return NGX_OK;
}


void
ngx_http_ratelimit_sw_detach(ngx_http_ratelimit_check_t *chk)
{
    ngx_uint_t  i;

    for (i = 0; i < 4; i++) {
        if (chk->sw_cmds[i]) {
            ngx_edge_redis_detach(chk->sw_cmds[i]);
            chk->sw_cmds[i] = NULL;
        }
    }
}


/*
 * A refused or banned request takes its count back before it is answered:
 * a client that waits for its refusal and asks again (on any worker, any
 * node) finds the window as if the refused request never came.  So the
 * request waits for the DECRBY's reply (one more round trip, for refusals
 * that reach Redis only: the deny cache answers the repeated ones).  The
 * key's expiry is set again, should the key have gone in between
 * (evicted, flushed) and the DECRBY created it.  With bans, a refusal is
 * counted in the same round trip.
 */

static void ngx_http_ratelimit_sw_finish(ngx_http_ratelimit_check_t *chk);


static void
ngx_http_ratelimit_sw_uncount_reply(void *data, redisReply *reply,
    ngx_int_t rc)
{
    ngx_http_ratelimit_check_t *chk = data;

    /* the request is refused whatever the reply */
    chk->sw_cmds[NGX_HTTP_RATELIMIT_SW_INCR] = NULL;

    if (--chk->sw_pending == 0) {
        ngx_http_ratelimit_sw_finish(chk);
    }
}


/* the ban's SET is answered: the request told BANNED next finds the ban
 * wherever it goes (the SET fails: the worker's cache still bans it) */

static void
ngx_http_ratelimit_sw_ban_set_reply(void *data, redisReply *reply,
    ngx_int_t rc)
{
    ngx_http_ratelimit_check_t *chk = data;

    chk->sw_cmds[NGX_HTTP_RATELIMIT_SW_BAN] = NULL;

    if (rc == NGX_OK && reply->type == REDIS_REPLY_ERROR) {
        ngx_http_ratelimit_log_reply(chk, reply);
    }

    if (--chk->sw_pending == 0) {
        ngx_http_ratelimit_sw_finish(chk);
    }
}


/* in a zone with bans, the refusals' count decides between a refusal and
 * a ban */

static void
ngx_http_ratelimit_sw_refusals_reply(void *data, redisReply *reply,
    ngx_int_t rc)
{
    ngx_http_ratelimit_check_t *chk = data;

    size_t                      len;
    ngx_edge_redis_cmd_t       *cmd;
    ngx_http_ratelimit_zone_t  *zone;
    u_char                      num[NGX_INT64_LEN];

    zone = chk->zone;
    chk->sw_cmds[NGX_HTTP_RATELIMIT_SW_GET] = NULL;

    /* a failure to count the refusal only delays a ban */

    if (rc == NGX_OK && reply->type == REDIS_REPLY_INTEGER) {

        if (reply->integer == 1) {
            ngx_http_ratelimit_sw_effect(chk, NGX_HTTP_RATELIMIT_SW_REFUSALS,
                                         "PEXPIRE",
                                         (int64_t) zone->ban_window, 1);
        }

        if (reply->integer >= (long long) zone->ban_threshold) {
            /*
             * The ban is in Redis before the request is answered: the
             * client's next request, on another worker or node, must not
             * race with it.  The count goes first, on the same
             * connection, so it is gone by the SET's reply too.
             */
            ngx_http_ratelimit_sw_effect(chk, NGX_HTTP_RATELIMIT_SW_REFUSALS,
                                         "DEL", 0, 0);

            len = ngx_sprintf(num, "%M", zone->ban_duration) - num;

            cmd = ngx_http_ratelimit_sw_command(chk,
                                          ngx_http_ratelimit_sw_ban_set_reply,
                                          NGX_HTTP_RATELIMIT_SW_BANNED, "SET",
                                          (const char *) num, len);
            if (cmd) {
                chk->sw_cmds[NGX_HTTP_RATELIMIT_SW_BAN] = cmd;
                chk->sw_pending++;
            }

            chk->status = NGX_HTTP_RATELIMIT_BANNED;
            chk->verdict.retry = (int64_t) zone->ban_duration * 1000;
            chk->verdict.reset = 0;
        }

    } else if (rc == NGX_OK) {
        ngx_http_ratelimit_log_reply(chk, reply);
    }

    if (--chk->sw_pending == 0) {
        ngx_http_ratelimit_sw_finish(chk);
    }
}


static void
ngx_http_ratelimit_sw_uncount(ngx_http_ratelimit_check_t *chk)
{
    ngx_edge_redis_cmd_t       *cmd;
    ngx_http_ratelimit_zone_t  *zone;
    u_char                      num[NGX_INT64_LEN];

    zone = chk->zone;

    chk->sw_pending = 0;

    cmd = ngx_http_ratelimit_sw_command(chk,
                                        ngx_http_ratelimit_sw_uncount_reply,
                                        NGX_HTTP_RATELIMIT_SW_CUR, "DECRBY",
                                        (const char *) num,
                                        ngx_sprintf(num, "%L", chk->gcra.cost)
                                        - num);
    if (cmd) {
        chk->sw_cmds[NGX_HTTP_RATELIMIT_SW_INCR] = cmd;
        chk->sw_pending++;
    }

    ngx_http_ratelimit_sw_expire(chk);

    if (zone->ban_threshold && chk->status == NGX_HTTP_RATELIMIT_REJECTED) {
        cmd = ngx_http_ratelimit_sw_command(chk,
                                          ngx_http_ratelimit_sw_refusals_reply,
                                          NGX_HTTP_RATELIMIT_SW_REFUSALS,
                                          "INCR", NULL, 0);
        if (cmd) {
            chk->sw_cmds[NGX_HTTP_RATELIMIT_SW_GET] = cmd;
            chk->sw_pending++;
        }
    }

    if (chk->sw_pending == 0) {
        /* nothing could be sent: the count stays, as for a timeout */
        ngx_http_ratelimit_sw_finish(chk);
    }
}


static void
ngx_http_ratelimit_sw_finish(ngx_http_ratelimit_check_t *chk)
{
    ngx_http_ratelimit_remember(chk, chk->status == NGX_HTTP_RATELIMIT_BANNED,
                                ngx_http_ratelimit_now());

    ngx_edge_wait_done(&chk->ctx->wait);
}


static void
ngx_http_ratelimit_sw_conclude(ngx_http_ratelimit_check_t *chk)
{
    if (chk->sw_failed) {
        ngx_http_ratelimit_fail(chk, ngx_http_ratelimit_now());
        ngx_edge_wait_done(&chk->ctx->wait);
        return;
    }

    if (chk->sw_ban > 0) {
        chk->status = NGX_HTTP_RATELIMIT_BANNED;
        chk->verdict.allowed = 0;
        chk->verdict.retry = chk->sw_ban * 1000;
        chk->verdict.reset = 0;

        ngx_http_ratelimit_sw_uncount(chk);
        return;
    }

    ngx_http_ratelimit_sliding(&chk->sw, chk->gcra.cost, chk->sw_now,
                               chk->sw_prev, chk->sw_count - chk->gcra.cost,
                               &chk->verdict);

    if (chk->verdict.allowed) {
        chk->status = NGX_HTTP_RATELIMIT_PASSED;
        ngx_edge_wait_done(&chk->ctx->wait);
        return;
    }

    /* refused: the count it took goes back */
    chk->status = NGX_HTTP_RATELIMIT_REJECTED;

    ngx_http_ratelimit_sw_uncount(chk);
}
