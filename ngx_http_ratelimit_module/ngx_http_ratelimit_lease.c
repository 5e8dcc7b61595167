/*
 * ngx_http_ratelimit_module: mode=lease.
 *
 * The key's GCRA bucket lives in Redis, as in Redis mode, but a node does
 * not ask Redis for each decision: it takes a lease of up to L tokens in
 * one atomic call (the TAT moves by k * T for the k tokens that conform
 * now), keeps the unspent ones in the zone's shared memory (the key's
 * entry), and spends them there under the zone's lock.  Every token a
 * node spends was granted by Redis's bucket, so the fleet admits no more
 * than the bucket would have, whatever the number of nodes; the cost is
 * the tokens that a node holds and does not spend (at most L per key and
 * node), which end after lease_ttl.
 *
 * Per key and node, in the entry:
 *   lease_tokens, lease_expire   the unspent tokens and when they end;
 *   lease_valid                  reserved tokens are valid from then;
 *   lease_next                   Redis has fewer than the tokens asked
 *                                for before then: a request that finds
 *                                none here is refused without asking
 *                                (the deny cache of this mode, shared by
 *                                the node's workers);
 *   lease_fetch                  a lease is on its way (until a deadline,
 *                                should its worker go): one refill at a
 *                                time per key and node;
 *   lease_asked, _prev           tokens asked for (the cost of every
 *                                request decided here, passed or not)
 *                                in this lease_ttl and the one before:
 *                                the lease size L follows the key's
 *                                demand on this node;
 *   lease_tat                    Redis's TAT as of the last reply, for
 *                                the RateLimit headers.
 *
 * A request that spends the tokens below half of L starts one refill in
 * the background (not tied to the request, which goes on at once); only
 * a request that finds too few tokens waits for a lease of its own.
 */

#include "ngx_http_ratelimit_module.h"


/*
 * Lease items of the batched script (see ngx_edge_redis_send_item()).
 * The C side prepends "local K, A = 1, 6" (leases) or "local K, A = 3, 11"
 * (leases in a zone with bans).
 * KEYS: tat (the key of Redis mode's GCRA bucket, so that both modes
 * share a bucket) [, refusal counter, ban: Redis mode's too].  ARGV:
 * interval T, interval + tau, tokens wanted, tokens at least (fewer
 * conform: none is taken now), now ("" for Redis's clock, read once per
 * batch), horizon (0, or how far ahead a reservation may be valid) [, ban
 * threshold, ban window ms, ban duration ms, refusals the node decided
 * since its last item for the key, 1 when the node banned the key
 * itself].  Times in microseconds, within 2^50 (so every sum below stays
 * exact in Lua's doubles); tokens wanted * T too.
 * n tokens conform when max(tat, now) + n * T - (T + tau) <= now, the
 * condition of a request of cost n.
 * When fewer than asked for conform and a horizon is given, the item
 * reserves the tokens wanted: the TAT moves by wanted * T now, and the
 * tokens are valid once the last of them conforms, v from now, if that
 * is within the horizon.  A reservation is a place in the bucket's queue:
 * the nodes that find a key's bucket empty take turns instead of each
 * asking again at the same moment.
 * With bans, the item first looks at the key's ban (PTTL), then adds the
 * node's refusals to the key's count (INCRBY, PEXPIRE window when new)
 * and bans the key at the threshold (SET ban PX duration, DEL count),
 * as Redis mode's script does per refusal; a key the node banned itself
 * is banned in Redis at once.  A banned key is granted nothing.
 * One element per item: {k, x, v}: k tokens granted (0: fewer than asked
 * for conform, and no reservation), x = the TAT after the grant minus
 * now, v = when they are valid, from now (0: now); {ttl}: the key is
 * banned for ttl more microseconds; or an error.
 */

#define NGX_HTTP_RATELIMIT_LEASE_ITEM_KEYS  1
#define NGX_HTTP_RATELIMIT_LEASE_ITEM_ARGS  6
#define NGX_HTTP_RATELIMIT_LEASE_BAN_KEYS   3
#define NGX_HTTP_RATELIMIT_LEASE_BAN_ARGS   11

#define NGX_HTTP_RATELIMIT_LEASE_LUA_BODY                                     \
    "local out, clock = {}, nil\n"                                            \
    "local function ban(k, a)\n"                                              \
    "  local b = redis.call('PTTL', KEYS[k + 3])\n"                           \
    "  if b > 0 then return b end\n"                                          \
    "  if ARGV[a + 11] ~= '1' then\n"                                         \
    "    local n = tonumber(ARGV[a + 10])\n"                                  \
    "    if n <= 0 then return 0 end\n"                                       \
    "    local c = redis.call('INCRBY', KEYS[k + 2], n)\n"                    \
    "    if c == n then\n"                                                    \
    "      redis.call('PEXPIRE', KEYS[k + 2], ARGV[a + 8])\n"                 \
    "    end\n"                                                               \
    "    if c < tonumber(ARGV[a + 7]) then return 0 end\n"                    \
    "  end\n"                                                                 \
    "  redis.call('SET', KEYS[k + 3], '1', 'PX', ARGV[a + 9])\n"              \
    "  redis.call('DEL', KEYS[k + 2])\n"                                      \
    "  return tonumber(ARGV[a + 9])\n"                                        \
    "end\n"                                                                   \
    "local function lease(k, a, now)\n"                                       \
    "  if K == 3 then\n"                                                      \
    "    local b = ban(k, a)\n"                                               \
    "    if b > 0 then return {b * 1000} end\n"                               \
    "  end\n"                                                                 \
    "  local key = KEYS[k + 1]\n"                                             \
    "  local tat = redis.call('GET', key)\n"                                  \
    "  if tat then\n"                                                         \
    "    tat = tonumber(tat)\n"                                               \
    "    if not tat then\n"                                                   \
    "      return redis.error_reply('ERR the bucket ' .. key\n"               \
    "                               .. ' does not hold a number')\n"          \
    "    end\n"                                                               \
    "    if tat < now then tat = now end\n"                                   \
    "  else\n"                                                                \
    "    tat = now\n"                                                         \
    "  end\n"                                                                 \
    "  local t, w = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])\n"           \
    "  local want = tonumber(ARGV[a + 3])\n"                                  \
    "  local n, v = math.floor((now + w - tat) / t), 0\n"                     \
    "  if n > want then n = want end\n"                                       \
    "  if n < tonumber(ARGV[a + 4]) then\n"                                   \
    "    v = tat + want * t - w - now\n"                                      \
    "    if v > tonumber(ARGV[a + 6]) then return {0, tat - now, 0} end\n"    \
    "    n = want\n"                                                          \
    "  end\n"                                                                 \
    "  tat = tat + n * t\n"                                                   \
    "  redis.call('SET', key, string.format('%d', tat),\n"                    \
    "             'PX', math.floor((tat - now) / 1000) + 1)\n"                \
    "  return {n, tat - now, v}\n"                                            \
    "end\n"                                                                   \
    "for i = 1, #KEYS / K do\n"                                               \
    "  local k, a = (i - 1) * K, (i - 1) * A\n"                               \
    "  local now = ARGV[a + 5]\n"                                             \
    "  if now == '' then\n"                                                   \
    "    if not clock then\n"                                                 \
    "      local t = redis.call('TIME')\n"                                    \
    "      clock = t[1] * 1000000 + t[2]\n"                                   \
    "    end\n"                                                               \
    "    now = clock\n"                                                       \
    "  else\n"                                                                \
    "    now = tonumber(now)\n"                                               \
    "  end\n"                                                                 \
    "  local ok, res = pcall(lease, k, a, now)\n"                             \
    "  if ok then\n"                                                          \
    "    out[i] = res\n"                                                      \
    "  elseif type(res) == 'table' and res.err then\n"                        \
    "    out[i] = res\n"                                                      \
    "  else\n"                                                                \
    "    out[i] = {err = 'ERR ' .. tostring(res)}\n"                          \
    "  end\n"                                                                 \
    "end\n"                                                                   \
    "return out\n"

ngx_str_t  ngx_http_ratelimit_lease_lua = ngx_string(
    "local K, A = 1, 6\n" NGX_HTTP_RATELIMIT_LEASE_LUA_BODY);

ngx_str_t  ngx_http_ratelimit_lease_ban_lua = ngx_string(
    "local K, A = 3, 11\n" NGX_HTTP_RATELIMIT_LEASE_LUA_BODY);


/* Lua numbers are doubles: anything past 2^53 did not come from the
 * script */
#define NGX_HTTP_RATELIMIT_LEASE_REPLY_MAX  ((long long) 1 << 53)


/* what a lease call needs to be sent and its reply applied, whether a
 * request waits for it or not */
typedef struct {
    ngx_http_ratelimit_zone_t   *zone;
    ngx_str_t                    tier;
    ngx_str_t                    key;
    int64_t                      interval;
    int64_t                      tau;
    int64_t                      want;
    int64_t                      min;
    int64_t                      horizon;      /* 0: no reservation */
    int64_t                      size;         /* the key's L */
    int64_t                      refused;      /* the node's refusals */
    ngx_flag_t                   ban;          /* the node banned it */
    const char                 **argv;
    size_t                      *argvlen;
    u_char                     (*nums)[NGX_INT64_LEN];
} ngx_http_ratelimit_lease_call_t;


/* a refill in the background: its own memory, not a request's */
typedef struct {
    ngx_queue_t                  queue;        /* zone->lease_refills */
    ngx_http_ratelimit_lease_call_t  call;
    ngx_edge_redis_cmd_t        *cmd;
    ngx_flag_t                   leader;       /* set lease_fetch */
    const char                  *argv[NGX_HTTP_RATELIMIT_LEASE_BAN_KEYS
                                      + NGX_HTTP_RATELIMIT_LEASE_BAN_ARGS];
    size_t                       argvlen[NGX_HTTP_RATELIMIT_LEASE_BAN_KEYS
                                       + NGX_HTTP_RATELIMIT_LEASE_BAN_ARGS];
    u_char                       nums[NGX_HTTP_RATELIMIT_LEASE_BAN_ARGS]
                                     [NGX_INT64_LEN];
    u_char                       data[1];      /* tier name, key,
                                                  Redis key */
} ngx_http_ratelimit_lease_refill_t;


static ngx_int_t ngx_http_ratelimit_lease_take(
    ngx_http_ratelimit_check_t *chk, int64_t now);
static void ngx_http_ratelimit_lease_refill(ngx_http_ratelimit_check_t *chk,
    int64_t want, int64_t refused, ngx_flag_t ban);
static void ngx_http_ratelimit_lease_report(ngx_http_ratelimit_check_t *chk);
static void ngx_http_ratelimit_lease_refill_reply(void *data,
    redisReply *reply, ngx_int_t rc);
static void ngx_http_ratelimit_lease_reply(void *data, redisReply *reply,
    ngx_int_t rc);
static ngx_int_t ngx_http_ratelimit_lease_send(ngx_http_request_t *r,
    ngx_http_ratelimit_ctx_t *ctx, ngx_http_ratelimit_check_t *chk);
static void ngx_http_ratelimit_lease_poll(ngx_event_t *ev);


/* the unspent tokens end; the spending of the last two lease_ttl moves
 * on; with the zone locked */

static void
ngx_http_ratelimit_lease_age(ngx_http_ratelimit_zone_t *zone,
    ngx_http_ratelimit_node_t *node, int64_t now)
{
    int64_t  ttl;

    if (node->lease_tokens && node->lease_expire <= now) {
        if (zone->stats) {
            ngx_edge_stats_add(zone->stats, zone->st_expired,
                               node->lease_tokens);
        }

        node->lease_tokens = 0;
    }

    ttl = zone->lease_ttl;

    if (now - node->lease_period >= ttl) {
        node->lease_asked_prev = (now - node->lease_period < 2 * ttl)
                                 ? node->lease_asked : 0;
        node->lease_asked = 0;
        node->lease_period = now;
    }
}


/*
 * L, the key's lease on this node: the tokens its requests asked for here
 * in the last lease_ttl (this one's not counted yet), plus one, within
 * [1, lease_max] and no more than the bucket holds (burst + 1).  A key
 * seen for the first time takes one token per lease, as Redis mode takes
 * one per decision; a key asked for at the rate r takes about
 * r * lease_ttl, so that half a lease lasts about half a lease_ttl and a
 * refill comes before the tokens end.  Demand, not what passed: a key
 * over its limit takes the largest leases Redis can give, so that it
 * costs Redis few calls per admitted request.
 */

static int64_t
ngx_http_ratelimit_lease_size(ngx_http_ratelimit_check_t *chk,
    ngx_http_ratelimit_node_t *node)
{
    int64_t  n, bucket;

    n = ngx_max(node->lease_asked, node->lease_asked_prev) + 1;
    n = ngx_min(n, (int64_t) chk->zone->lease_max);

    bucket = chk->gcra.tau / chk->gcra.interval + 1;

    return ngx_max(ngx_min(n, bucket), 1);
}


/* the headers' view: what Redis's bucket would grant now, plus what this
 * node holds (other nodes' tokens are not known here) */

static void
ngx_http_ratelimit_lease_verdict(ngx_http_ratelimit_check_t *chk,
    ngx_http_ratelimit_node_t *node, int64_t now)
{
    int64_t                        reset, n;
    ngx_http_ratelimit_gcra_t     *g;
    ngx_http_ratelimit_verdict_t  *v;

    g = &chk->gcra;
    v = &chk->verdict;

    reset = ngx_max(node->lease_tat - now, 0);
    reset = ngx_min(reset, g->tau + g->interval);

    n = (g->tau + g->interval - reset) / g->interval + node->lease_tokens;

    v->excess = 0;
    v->reset = reset;
    v->remaining = ngx_min(n, g->tau / g->interval + 1);
}


static void
ngx_http_ratelimit_lease_refuse(ngx_http_ratelimit_check_t *chk,
    ngx_http_ratelimit_node_t *node, int64_t retry, int64_t now)
{
    ngx_http_ratelimit_lease_verdict(chk, node, now);

    chk->status = NGX_HTTP_RATELIMIT_REJECTED;
    chk->verdict.allowed = 0;
    chk->verdict.remaining = 0;
    chk->verdict.retry = ngx_max(retry, 1000);

    ngx_http_ratelimit_count_refusal(chk, node, now);

    if (chk->zone->ban_threshold == 0) {
        return;
    }

    if (chk->status == NGX_HTTP_RATELIMIT_BANNED) {
        /* the node's own count reached the threshold: the key is banned
         * here now, and in Redis by an item sent at once (see
         * lease_report()), with what the node has not told yet */
        chk->lease_ban = 1;
        chk->lease_refused = node->lease_refused;
        node->lease_refused = 0;
        return;
    }

    /* told to Redis with the key's next lease or refill from this node:
     * no call of its own */
    node->lease_refused++;
}


static void
ngx_http_ratelimit_lease_spend(ngx_http_ratelimit_check_t *chk,
    ngx_http_ratelimit_node_t *node, int64_t now)
{
    ngx_http_ratelimit_lease_verdict(chk, node, now);

    chk->status = NGX_HTTP_RATELIMIT_PASSED;
    chk->verdict.allowed = 1;
    chk->verdict.retry = 0;
}


/* how long a lease call may be on its way: its worker may go (a reload)
 * without answering for it */

static int64_t
ngx_http_ratelimit_lease_deadline(ngx_http_ratelimit_zone_t *zone,
    int64_t now)
{
    return now + ((int64_t) zone->redis->timeout + 1000) * 1000;
}


/*
 * The decision from this node's tokens: NGX_OK, decided (chk->status);
 * NGX_AGAIN, the request needs a lease of its own (chk->lease_want);
 * NGX_BUSY, a lease is on its way (another request's, or a refill), and
 * the request waits for it.  Nothing but arithmetic under the lock; the
 * refill it may start leaves after the unlock.
 */

static ngx_int_t
ngx_http_ratelimit_lease_take(ngx_http_ratelimit_check_t *chk, int64_t now)
{
    int64_t                     cost, size, refill, refused;
    ngx_http_ratelimit_zone_t  *zone;
    ngx_http_ratelimit_node_t  *node;

    zone = chk->zone;
    cost = chk->gcra.cost;
    refill = 0;
    refused = 0;

    if (cost > chk->gcra.tau / chk->gcra.interval + 1) {
        /* more than the bucket holds: Redis mode never passes it, and a
         * reservation of that many tokens must not either */
        chk->status = NGX_HTTP_RATELIMIT_REJECTED;
        chk->verdict.allowed = 0;
        chk->verdict.retry = cost * chk->gcra.interval;
        return NGX_OK;
    }

    ngx_shmtx_lock(&zone->shpool->mutex);

    node = ngx_http_ratelimit_lookup(zone, &chk->tier_name, &chk->key, 1);

    if (node == NULL) {
        ngx_shmtx_unlock(&zone->shpool->mutex);

        ngx_log_error(NGX_LOG_ALERT, chk->ctx->wait.request->connection->log,
                      0, "could not allocate node in ratelimit zone \"%V\"",
                      &zone->name);
        chk->status = NGX_HTTP_RATELIMIT_REJECTED;
        chk->verdict.retry = chk->gcra.interval;
        return NGX_OK;
    }

    if (node->ban_until > now) {
        ngx_shmtx_unlock(&zone->shpool->mutex);

        chk->status = NGX_HTTP_RATELIMIT_BANNED;
        chk->verdict.retry = node->ban_until - now;
        chk->verdict.reset = chk->verdict.retry;
        return NGX_OK;
    }

    ngx_http_ratelimit_lease_age(zone, node, now);

    size = ngx_http_ratelimit_lease_size(chk, node);
    chk->lease_size = size;

    if (!chk->lease_parked) {
        /* once per request: a parked one comes back to poll */
        node->lease_asked += cost;
    }

    if (node->lease_valid > now) {
        /* reserved tokens, not yet conforming */
        ngx_http_ratelimit_lease_refuse(chk, node, node->lease_valid - now,
                                        now);
        ngx_shmtx_unlock(&zone->shpool->mutex);
        ngx_http_ratelimit_lease_report(chk);
        return NGX_OK;
    }

    if (node->lease_tokens >= cost) {
        node->lease_tokens -= cost;
        ngx_http_ratelimit_lease_spend(chk, node, now);

        /* the low-water mark: one refill per key and node, once Redis
         * may have tokens again; a key that takes one token per lease
         * is not refilled ahead (a cold key's token would end unspent) */
        if (size > 1
            && node->lease_tokens < (size + 1) / 2
            && node->lease_next <= now
            && node->lease_fetch <= now)
        {
            node->lease_fetch = ngx_http_ratelimit_lease_deadline(zone, now);
            refill = size - node->lease_tokens;
            refused = node->lease_refused;
            node->lease_refused = 0;
        }

        ngx_shmtx_unlock(&zone->shpool->mutex);

        if (refill) {
            ngx_http_ratelimit_lease_refill(chk, refill, refused, 0);
        }

        return NGX_OK;
    }

    if (node->lease_next > now) {
        /* Redis said it has too few tokens until then */
        ngx_http_ratelimit_lease_refuse(chk, node, node->lease_next - now,
                                        now);
        ngx_shmtx_unlock(&zone->shpool->mutex);
        ngx_http_ratelimit_lease_report(chk);
        return NGX_OK;
    }

    if (node->lease_fetch > now) {
        /* a lease is on its way: the request waits for it rather than
         * ask Redis for its own tokens (see lease_start()) */
        ngx_shmtx_unlock(&zone->shpool->mutex);
        return NGX_BUSY;

    } else {
        node->lease_fetch = ngx_http_ratelimit_lease_deadline(zone, now);
        chk->lease_want = ngx_max(size - node->lease_tokens, cost);
        chk->lease_leader = 1;
        chk->lease_refused = node->lease_refused;
        node->lease_refused = 0;
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    return NGX_AGAIN;
}


/* the item's keys and args, in the caller's memory */

static void
ngx_http_ratelimit_lease_args(ngx_http_ratelimit_lease_call_t *call,
    u_char *redis_key)
{
    size_t                      len;
    ngx_uint_t                  i, a;
    ngx_http_ratelimit_zone_t  *zone;

    static const char  suffix[] = { 't', 'r', 'b' };

    zone = call->zone;

    /* Redis mode's bucket, "rl:{zone:key}:t", and its refusal count and
     * ban, ":r" and ":b", in a zone with bans */
    a = zone->ban_threshold ? NGX_HTTP_RATELIMIT_LEASE_BAN_KEYS
                            : NGX_HTTP_RATELIMIT_LEASE_ITEM_KEYS;
    len = sizeof("rl:{:}:t") - 1 + zone->prefix.len + call->key.len;

    for (i = 0; i < a; i++) {
        call->argv[i] = (const char *) redis_key + i * len;
        call->argvlen[i] = len;
        ngx_sprintf(redis_key + i * len, "rl:{%V:%V}:%c", &zone->prefix,
                    &call->key, suffix[i]);
    }

#define ngx_http_ratelimit_lease_arg(n, v)                                    \
    call->argv[a + n] = (const char *) call->nums[n];                         \
    call->argvlen[a + n] = ngx_sprintf(call->nums[n], "%L", (int64_t) (v))    \
                           - call->nums[n]

    ngx_http_ratelimit_lease_arg(0, call->interval);
    ngx_http_ratelimit_lease_arg(1, call->interval + call->tau);
    ngx_http_ratelimit_lease_arg(2, call->want);
    ngx_http_ratelimit_lease_arg(3, call->min);
    ngx_http_ratelimit_lease_arg(5, call->horizon);

    if (zone->ban_threshold) {
        ngx_http_ratelimit_lease_arg(6, zone->ban_threshold);
        ngx_http_ratelimit_lease_arg(7, zone->ban_window);
        ngx_http_ratelimit_lease_arg(8, zone->ban_duration);
        ngx_http_ratelimit_lease_arg(9, call->refused);
        ngx_http_ratelimit_lease_arg(10, call->ban ? 1 : 0);
    }

    if (zone->clock == NGX_HTTP_RATELIMIT_CLOCK_NGINX) {
        ngx_http_ratelimit_lease_arg(4, ngx_edge_wall_usec());

    } else {
        call->argv[a + 4] = "";
        call->argvlen[a + 4] = 0;
    }

#undef ngx_http_ratelimit_lease_arg
}


static size_t
ngx_http_ratelimit_lease_key_len(ngx_http_ratelimit_zone_t *zone,
    ngx_str_t *key)
{
    size_t  len;

    len = sizeof("rl:{:}:t") - 1 + zone->prefix.len + key->len;

    return zone->ban_threshold ? NGX_HTTP_RATELIMIT_LEASE_BAN_KEYS * len
                               : len;
}


/*
 * The reply, to the key's entry: its tokens (the request's cost taken
 * first when a request waits for it), when Redis will have enough again,
 * and the fetch done; or the key's ban, cached in the entry until it
 * ends.  Returns the tokens granted, 0 when Redis had too few or the key
 * is banned, NGX_ERROR for a reply of no known shape (then nothing
 * changed but the fetch flag).
 */

static ngx_int_t
ngx_http_ratelimit_lease_apply(ngx_http_ratelimit_lease_call_t *call,
    ngx_http_ratelimit_check_t *chk, redisReply *reply, ngx_flag_t leader)
{
    int64_t                     now, k, x, v, m, wait, need, ban;
    ngx_http_ratelimit_zone_t  *zone;
    ngx_http_ratelimit_node_t  *node;

    zone = call->zone;
    k = -1;
    x = 0;
    v = 0;
    ban = 0;

    if (reply
        && zone->ban_threshold
        && reply->type == REDIS_REPLY_ARRAY && reply->elements == 1
        && reply->element[0]->type == REDIS_REPLY_INTEGER
        && reply->element[0]->integer > 0
        && reply->element[0]->integer < NGX_HTTP_RATELIMIT_LEASE_REPLY_MAX)
    {
        ban = reply->element[0]->integer;
        k = 0;

    } else if (reply
        && reply->type == REDIS_REPLY_ARRAY && reply->elements == 3
        && reply->element[0]->type == REDIS_REPLY_INTEGER
        && reply->element[1]->type == REDIS_REPLY_INTEGER
        && reply->element[2]->type == REDIS_REPLY_INTEGER
        && reply->element[0]->integer >= 0
        && reply->element[0]->integer <= call->want
        && reply->element[1]->integer >= 0
        && reply->element[1]->integer < NGX_HTTP_RATELIMIT_LEASE_REPLY_MAX
        && reply->element[2]->integer >= 0
        && reply->element[2]->integer <= call->horizon)
    {
        k = reply->element[0]->integer;
        x = reply->element[1]->integer;
        v = reply->element[2]->integer;

        if (k != 0 && k < call->min && v == 0) {
            k = -1;       /* fewer than asked for at least, valid now */
        }
    }

    now = ngx_http_ratelimit_now();

    ngx_shmtx_lock(&zone->shpool->mutex);

    node = ngx_http_ratelimit_lookup(zone, &call->tier, &call->key, 1);

    if (node == NULL) {
        ngx_shmtx_unlock(&zone->shpool->mutex);

        if (chk) {
            /* no entry to spend from (the zone is full): the waiting
             * request is refused as lease_take() refuses it, whatever
             * Redis granted (the tokens are lost: under-admission only) */
            chk->status = NGX_HTTP_RATELIMIT_REJECTED;
            chk->verdict.allowed = 0;
            chk->verdict.retry = chk->gcra.interval;
        }

        return (k < 0) ? NGX_ERROR : 0;
    }

    if (leader) {
        node->lease_fetch = 0;
    }

    if (k < 0) {
        ngx_shmtx_unlock(&zone->shpool->mutex);
        return NGX_ERROR;
    }

    if (ban) {
        /* the fleet's ban, this node's until it ends: the key's requests
         * are refused here without asking Redis (lease_take()) */
        node->ban_until = ngx_max(node->ban_until, now + ban);
        node->rejects = 0;
        node->lease_refused = 0;

        if (chk) {
            chk->status = NGX_HTTP_RATELIMIT_BANNED;
            chk->verdict.allowed = 0;
            chk->verdict.remaining = 0;
            chk->verdict.retry = node->ban_until - now;
            chk->verdict.reset = chk->verdict.retry;
        }

        ngx_shmtx_unlock(&zone->shpool->mutex);
        return 0;
    }

    ngx_http_ratelimit_lease_age(zone, node, now);

    node->lease_tat = now + x;

    /* Redis will have m tokens, half a lease, at lease_next: ask again
     * no sooner, so that a hot key over its limit costs Redis one call
     * per half a lease, not one per request */
    m = ngx_max((call->size + 1) / 2, 1);
    wait = x + (m - 1) * call->interval - call->tau;
    node->lease_next = now + ngx_max(wait, 0);

    if (k > 0 && zone->stats) {
        ngx_edge_stats_add(zone->stats, zone->st_leases, 1);
        ngx_edge_stats_add(zone->stats, zone->st_leased, k);
    }

    if (k > 0 && v > 0) {
        /* a reservation: the node's tokens, all of them, are valid once
         * the last reserved one conforms; the request that asked is
         * refused until then (Retry-After), as are the others */
        node->lease_tokens += k;

        /* with two leases in flight (an entry evicted and made again),
         * the replies may come in either order: the tokens are valid
         * once the later reservation's are */
        node->lease_valid = ngx_max(node->lease_valid, now + v);
        node->lease_expire = node->lease_valid + zone->lease_ttl;
        node->lease_next = ngx_max(node->lease_next, node->lease_valid);

        if (chk) {
            ngx_http_ratelimit_lease_refuse(chk, node,
                                            node->lease_valid - now, now);
        }

        ngx_shmtx_unlock(&zone->shpool->mutex);
        return 1;
    }

    if (k > 0) {
        if (chk) {
            k -= chk->gcra.cost;   /* the waiting request's, first */
        }

        node->lease_tokens += k;
        node->lease_expire = now + zone->lease_ttl;

        if (chk) {
            ngx_http_ratelimit_lease_spend(chk, node, now);
        }

        ngx_shmtx_unlock(&zone->shpool->mutex);
        return 1;
    }

    if (chk) {
        if (node->lease_tokens >= chk->gcra.cost
            && node->lease_valid <= now)
        {
            /* another lease came meanwhile */
            node->lease_tokens -= chk->gcra.cost;
            ngx_http_ratelimit_lease_spend(chk, node, now);

        } else {
            need = x + (chk->gcra.cost - 1) * call->interval - call->tau;
            ngx_http_ratelimit_lease_refuse(chk, node,
                                            ngx_max(need, wait), now);
        }
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    return 0;
}


/* a reply that decides nothing: one line per interval and worker */

static void
ngx_http_ratelimit_lease_log(ngx_http_ratelimit_zone_t *zone,
    ngx_log_t *log, redisReply *reply)
{
    ngx_uint_t  suppressed;

    if (!ngx_edge_log_gate_open(&zone->log_gate,
                                NGX_HTTP_RATELIMIT_LOG_INTERVAL, &suppressed))
    {
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "ratelimit zone \"%V\": redis \"%V\" failed the "
                      "lease: %*s; the failure policy applies "
                      "(%ui similar lines suppressed)",
                      &zone->name, &zone->redis->name,
                      (size_t) reply->len, reply->str, suppressed);
        return;
    }

    ngx_log_error(NGX_LOG_ERR, log, 0,
                  "ratelimit zone \"%V\": unexpected lease reply from redis "
                  "\"%V\"; the failure policy applies "
                  "(%ui similar lines suppressed)",
                  &zone->name, &zone->redis->name, suppressed);
}


static void
ngx_http_ratelimit_lease_call_init(ngx_http_ratelimit_lease_call_t *call,
    ngx_http_ratelimit_check_t *chk, int64_t want, int64_t min,
    ngx_flag_t leader)
{
    call->zone = chk->zone;
    call->interval = chk->gcra.interval;
    call->tau = chk->gcra.tau;
    call->want = want;
    call->min = min;
    call->size = chk->lease_size;
    call->refused = 0;
    call->ban = 0;

    /* a key with a demand reserves its next tokens when Redis has too
     * few now, within lease_ttl; a key seen once does not (its client
     * may not come back for them) */
    call->horizon = (chk->lease_size > 1 && leader) ? chk->zone->lease_ttl
                                                    : 0;
}


/*
 * A request's decision in a lease zone: from the node's tokens at once;
 * or after a lease of its own (one round trip); or, when a lease is
 * already on its way for the key, after that one: the request is parked
 * and looks at the key's entry again (1, 2, 4, then 8 ms) until the lease
 * has come (or its deadline passed), so that the requests that find the
 * tokens spent while a lease is on its way, on any worker of the node,
 * share it rather than each ask Redis.  The poll timer is not cancelable:
 * a worker shutting down stays for the parked request.  A lease that
 * cannot be sent gets the zone's failure policy.
 */

ngx_int_t
ngx_http_ratelimit_lease_start(ngx_http_request_t *r,
    ngx_http_ratelimit_ctx_t *ctx, ngx_http_ratelimit_check_t *chk,
    int64_t now)
{
    ngx_event_t  *ev;

    switch (ngx_http_ratelimit_lease_take(chk, now)) {

    case NGX_AGAIN:
        if (ngx_http_ratelimit_lease_send(r, ctx, chk) != NGX_OK) {
            ngx_http_ratelimit_lease_detach(chk);
            ngx_http_ratelimit_fail(chk, now);
        }

        return NGX_OK;

    case NGX_BUSY:
        ev = &chk->lease_poll;
        ev->handler = ngx_http_ratelimit_lease_poll;
        ev->data = chk;
        ev->log = r->connection->log;

        /* the lease comes on this worker's connection, or another's:
         * this one stays open while the request may still send */
        ngx_edge_redis_hold(chk->zone->redis);
        chk->lease_parked = 1;
        chk->lease_polls = 0;

        ngx_add_timer(ev, 1);
        ngx_edge_wait_add(&ctx->wait);
        return NGX_OK;

    default:
        return NGX_OK;
    }
}


static void
ngx_http_ratelimit_lease_unpark(ngx_http_ratelimit_check_t *chk)
{
    if (!chk->lease_parked) {
        return;
    }

    chk->lease_parked = 0;

    if (chk->lease_poll.timer_set) {
        ngx_del_timer(&chk->lease_poll);
    }

    ngx_edge_redis_release(chk->zone->redis);
}


static void
ngx_http_ratelimit_lease_poll(ngx_event_t *ev)
{
    ngx_http_ratelimit_check_t *chk = ev->data;

    int64_t                    now;
    ngx_int_t                  rc;
    ngx_http_request_t        *r;
    ngx_http_ratelimit_ctx_t  *ctx;

    ctx = chk->ctx;
    r = ctx->wait.request;
    now = ngx_http_ratelimit_now();

    rc = ngx_http_ratelimit_lease_take(chk, now);

    if (rc == NGX_BUSY) {
        /* 1, 2, 4, 8, 8 ... ms: a lease normally comes within the first;
         * many parked requests on a slow Redis must not take the zone's
         * lock a thousand times a second each */
        ngx_add_timer(ev, (ngx_msec_t) 1 << ngx_min(++chk->lease_polls, 3));
        return;
    }

    ngx_http_ratelimit_lease_unpark(chk);

    if (rc == NGX_AGAIN
        && ngx_http_ratelimit_lease_send(r, ctx, chk) != NGX_OK)
    {
        ngx_http_ratelimit_lease_detach(chk);
        ngx_http_ratelimit_fail(chk, now);
    }

    /* the park's own wait: the lease sent now, if any, still holds the
     * request */
    ngx_edge_wait_done(&ctx->wait);
}


/* a request that waits for a lease of its own */

static ngx_int_t
ngx_http_ratelimit_lease_send(ngx_http_request_t *r,
    ngx_http_ratelimit_ctx_t *ctx, ngx_http_ratelimit_check_t *chk)
{
    u_char                           *p;
    ngx_http_ratelimit_zone_t        *zone;
    ngx_http_ratelimit_lease_call_t   call;

    zone = chk->zone;

    if (!ngx_edge_redis_ready(zone->redis)) {
        return NGX_ERROR;
    }

    p = ngx_pnalloc(r->pool, ngx_http_ratelimit_lease_key_len(zone,
                                                              &chk->key));
    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_http_ratelimit_lease_call_init(&call, chk, chk->lease_want,
                                       chk->gcra.cost, 1);
    call.key = chk->key;
    call.refused = chk->lease_refused;
    call.argv = chk->argv;
    call.argvlen = chk->argvlen;
    call.nums = chk->nums;

    ngx_http_ratelimit_lease_args(&call, p);

    chk->cmd = ngx_edge_redis_send_item(zone->redis, zone->lease_script,
                                        ngx_http_ratelimit_lease_reply, chk,
                                        chk->argv, chk->argvlen);
    if (chk->cmd == NULL) {
        return NGX_ERROR;
    }

    ngx_edge_wait_add(&ctx->wait);

    return NGX_OK;
}


static void
ngx_http_ratelimit_lease_reply(void *data, redisReply *reply, ngx_int_t rc)
{
    ngx_http_ratelimit_check_t *chk = data;

    ngx_int_t                         n;
    ngx_http_request_t               *r;
    ngx_http_ratelimit_lease_call_t   call;

    /* the check lives in r->pool: the request is alive, else the item
     * would have been detached */

    chk->cmd = NULL;
    r = chk->ctx->wait.request;

    ngx_http_ratelimit_lease_call_init(&call, chk, chk->lease_want,
                                       chk->gcra.cost, 1);
    call.tier = chk->tier_name;
    call.key = chk->key;

    n = ngx_http_ratelimit_lease_apply(&call, chk,
                                       rc == NGX_OK ? reply : NULL,
                                       chk->lease_leader);
    chk->lease_leader = 0;

    if (n == NGX_ERROR) {
        if (rc == NGX_OK) {
            ngx_http_ratelimit_lease_log(chk->zone, r->connection->log,
                                         reply);
        }

        ngx_http_ratelimit_fail(chk, ngx_http_ratelimit_now());
    }

    ngx_http_ratelimit_lease_report(chk);

    ngx_edge_wait_done(&chk->ctx->wait);
}


/* a request that goes away while its lease is on its way: the next
 * request may start another at once */

void
ngx_http_ratelimit_lease_detach(ngx_http_ratelimit_check_t *chk)
{
    ngx_http_ratelimit_zone_t  *zone;
    ngx_http_ratelimit_node_t  *node;

    ngx_http_ratelimit_lease_unpark(chk);

    if (!chk->lease_leader) {
        return;
    }

    chk->lease_leader = 0;
    zone = chk->zone;

    ngx_shmtx_lock(&zone->shpool->mutex);

    node = ngx_http_ratelimit_lookup(zone, &chk->tier_name, &chk->key, 0);

    if (node) {
        node->lease_fetch = 0;
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);
}


/*
 * A refill ahead of need: the request that crossed the low-water mark
 * goes on at once; the item is the worker's, in memory of its own, so it
 * outlives the request.  The worker frees what is still on its way when
 * it exits (the Redis client has detached it by then).
 */

static void
ngx_http_ratelimit_lease_refill(ngx_http_ratelimit_check_t *chk,
    int64_t want, int64_t refused, ngx_flag_t ban)
{
    u_char                             *p;
    size_t                              size;
    ngx_http_ratelimit_zone_t          *zone;
    ngx_http_ratelimit_node_t          *node;
    ngx_http_ratelimit_lease_refill_t  *rf;

    zone = chk->zone;

    size = offsetof(ngx_http_ratelimit_lease_refill_t, data)
           + chk->tier_name.len + chk->key.len
           + ngx_http_ratelimit_lease_key_len(zone, &chk->key);

    rf = NULL;

    if (ngx_edge_redis_ready(zone->redis)) {
        rf = ngx_alloc(size, chk->ctx->wait.request->connection->log);
    }

    if (rf) {
        ngx_http_ratelimit_lease_call_init(&rf->call, chk, want, 1, 0);
        rf->call.refused = refused;
        rf->call.ban = ban;
        rf->leader = !ban;

        p = rf->data;
        rf->call.tier.data = p;
        rf->call.tier.len = chk->tier_name.len;
        p = ngx_cpymem(p, chk->tier_name.data, chk->tier_name.len);
        rf->call.key.data = p;
        rf->call.key.len = chk->key.len;
        p = ngx_cpymem(p, chk->key.data, chk->key.len);

        rf->call.argv = rf->argv;
        rf->call.argvlen = rf->argvlen;
        rf->call.nums = rf->nums;

        ngx_http_ratelimit_lease_args(&rf->call, p);

        rf->cmd = ngx_edge_redis_send_item(zone->redis, zone->lease_script,
                                        ngx_http_ratelimit_lease_refill_reply,
                                        rf, rf->argv, rf->argvlen);
        if (rf->cmd) {
            ngx_queue_insert_tail(&zone->lease_refills, &rf->queue);
            return;
        }

        ngx_free(rf);
    }

    /* not sent: the next request that needs tokens asks; a ban stays
     * this node's */

    if (ban) {
        return;
    }

    ngx_shmtx_lock(&zone->shpool->mutex);

    node = ngx_http_ratelimit_lookup(zone, &chk->tier_name, &chk->key, 0);

    if (node) {
        node->lease_fetch = 0;
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);
}


/*
 * The node banned the key itself (its own count reached the threshold):
 * one item tells Redis at once, so that the ban is the fleet's; the
 * request goes on (it is refused as banned already).  The item is a
 * refill's, with the ban flag: it takes no tokens.
 */

static void
ngx_http_ratelimit_lease_report(ngx_http_ratelimit_check_t *chk)
{
    if (!chk->lease_ban) {
        return;
    }

    chk->lease_ban = 0;

    ngx_http_ratelimit_lease_refill(chk, 1, chk->lease_refused, 1);
}


static void
ngx_http_ratelimit_lease_refill_reply(void *data, redisReply *reply,
    ngx_int_t rc)
{
    ngx_http_ratelimit_lease_refill_t *rf = data;

    ngx_queue_remove(&rf->queue);

    if (ngx_http_ratelimit_lease_apply(&rf->call, NULL,
                                       rc == NGX_OK ? reply : NULL,
                                       rf->leader)
        == NGX_ERROR
        && rc == NGX_OK)
    {
        ngx_http_ratelimit_lease_log(rf->call.zone, ngx_cycle->log, reply);
    }

    ngx_free(rf);
}


void
ngx_http_ratelimit_lease_exit(ngx_http_ratelimit_zone_t *zone)
{
    ngx_queue_t                        *q;
    ngx_http_ratelimit_lease_refill_t  *rf;

    if (!zone->lease) {
        return;
    }

    while (!ngx_queue_empty(&zone->lease_refills)) {
        q = ngx_queue_head(&zone->lease_refills);
        rf = ngx_queue_data(q, ngx_http_ratelimit_lease_refill_t, queue);

        ngx_queue_remove(q);
        ngx_free(rf);
    }
}


ngx_int_t
ngx_http_ratelimit_lease_stats(ngx_conf_t *cf,
    ngx_http_ratelimit_zone_t *zone, ngx_edge_stats_t *stats)
{
    ngx_int_t                 fam;
    ngx_uint_t                i;
    ngx_edge_stats_family_t   family;
    ngx_edge_stats_id_t      *ids[3];

    static const char  *labels[] = { "zone", NULL };
    static const char  *names[] = {
        "ratelimit_lease_grants_total",
        "ratelimit_lease_tokens_total",
        "ratelimit_lease_expired_tokens_total"
    };
    static const char  *helps[] = {
        "Leases Redis granted (one or more tokens), by zone.",
        "Tokens the granted leases brought, by zone.",
        "Leased tokens that ended unspent, by zone."
    };

    ids[0] = &zone->st_leases;
    ids[1] = &zone->st_leased;
    ids[2] = &zone->st_expired;

    zone->stats = stats;

    for (i = 0; i < 3; i++) {
        ngx_memzero(&family, sizeof(ngx_edge_stats_family_t));
        family.name = names[i];
        family.help = helps[i];
        family.type = NGX_EDGE_STATS_COUNTER;
        family.labels = labels;

        fam = ngx_edge_stats_add_family(cf, stats, &family);
        if (fam == NGX_ERROR) {
            return NGX_ERROR;
        }

        *ids[i] = ngx_edge_stats_add_series(cf, stats, fam, &zone->name);
        if (*ids[i] == NGX_EDGE_STATS_NONE) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}
