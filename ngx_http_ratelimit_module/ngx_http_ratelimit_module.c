/*
 * ngx_http_ratelimit_module: token-bucket (GCRA) rate limiting whose state
 * lives in Redis, shared by a fleet of nginx nodes, or in a shared-memory
 * zone of this node.
 *
 * The request's path: PREACCESS handler -> per limit: key, tier, the
 * zone's shared-memory ban and deny caches, then one EVALSHA per limit
 * (all of a request's commands leave in one write, pipelined with other
 * requests') or the shared-memory bucket -> reject, delay, or continue.
 * A header filter adds the RateLimit headers.
 */

#include "ngx_http_ratelimit_module.h"

#include <ngx_sha1.h>


#define NGX_HTTP_RATELIMIT_MAX_TIERS     32
#define NGX_HTTP_RATELIMIT_MAX_KEY_LEN   200   /* longer keys are hashed */

#define NGX_HTTP_RATELIMIT_CLOCK_REDIS   0
#define NGX_HTTP_RATELIMIT_CLOCK_NGINX   1

#define NGX_HTTP_RATELIMIT_FAIL_OPEN     0
#define NGX_HTTP_RATELIMIT_FAIL_CLOSED   1
#define NGX_HTTP_RATELIMIT_FAIL_LOCAL    2

#define NGX_HTTP_RATELIMIT_HEADERS_OFF     0
#define NGX_HTTP_RATELIMIT_HEADERS_DRAFT   1
#define NGX_HTTP_RATELIMIT_HEADERS_LEGACY  2


typedef struct {
    ngx_uint_t                   count;        /* requests ... */
    ngx_uint_t                   period;       /* ... per this many seconds */
    int64_t                      interval;     /* us per request */
} ngx_http_ratelimit_rate_t;


typedef struct {
    ngx_str_t                    name;
    ngx_http_ratelimit_rate_t    rate;
    ngx_int_t                    burst;        /* -1: the location's */
} ngx_http_ratelimit_tier_t;


/* a shared-memory entry: one key (and tier) of one zone */
typedef struct {
    u_char                       color;
    u_char                       tier;
    u_short                      len;
    ngx_queue_t                  queue;
    int64_t                      tat;          /* local buckets, us */
    int64_t                      deny_until;   /* nginx clock, us */
    int64_t                      ban_until;
    int64_t                      window_end;   /* local ban counting */
    ngx_uint_t                   rejects;
    u_char                       data[1];
} ngx_http_ratelimit_node_t;


typedef struct {
    ngx_rbtree_t                 rbtree;
    ngx_rbtree_node_t            sentinel;
    ngx_queue_t                  queue;
} ngx_http_ratelimit_shctx_t;


typedef struct {
    ngx_str_t                    name;
    ngx_str_t                    prefix;       /* of its Redis keys */
    ngx_shm_zone_t              *shm_zone;
    ngx_http_ratelimit_shctx_t  *sh;
    ngx_slab_pool_t             *shpool;

    ngx_http_complex_value_t     key;
    ngx_http_ratelimit_rate_t    rate;
    ngx_http_complex_value_t    *tier_value;
    ngx_array_t                  tiers;        /* ngx_http_ratelimit_tier_t */

    ngx_edge_redis_server_t     *redis;
    ngx_edge_redis_script_t     *script;
    ngx_uint_t                   clock;
    ngx_uint_t                   on_failure;

    ngx_uint_t                   ban_threshold;
    ngx_msec_t                   ban_window;
    ngx_msec_t                   ban_duration;

    time_t                       log_next;     /* this worker's */

    ngx_edge_stats_id_t          st_decisions[NGX_HTTP_RATELIMIT_NSTATUS];
} ngx_http_ratelimit_zone_t;


typedef struct {
    ngx_shm_zone_t              *shm_zone;
    ngx_int_t                    burst;        /* -1: unset, i.e. 0 */
    ngx_uint_t                   delay;        /* requests not delayed */
    unsigned                     nodelay:1;
    ngx_uint_t                   cost;
    ngx_http_complex_value_t    *cost_value;
} ngx_http_ratelimit_limit_t;


typedef struct {
    ngx_array_t                 *limits;       /* ngx_http_ratelimit_limit_t */
    ngx_uint_t                   status_code;
    ngx_uint_t                   failure_status;
    ngx_uint_t                   log_level;
    ngx_uint_t                   headers;
    ngx_flag_t                   dry_run;
} ngx_http_ratelimit_loc_conf_t;


/* one limit's decision for one request */
typedef struct ngx_http_ratelimit_ctx_s  ngx_http_ratelimit_ctx_t;

typedef struct {
    ngx_http_ratelimit_ctx_t    *ctx;
    ngx_http_ratelimit_limit_t  *limit;
    ngx_http_ratelimit_zone_t   *zone;
    ngx_http_ratelimit_tier_t   *tier;         /* NULL: the zone's rate */
    ngx_uint_t                   tier_index;   /* 0: the zone's rate */
    ngx_str_t                    key;
    ngx_http_ratelimit_gcra_t    gcra;

    ngx_http_ratelimit_status_e  status;
    ngx_http_ratelimit_verdict_t verdict;

    ngx_edge_redis_cmd_t        *cmd;
    const char                  *argv[9];   /* 3 keys, 6 args */
    size_t                       argvlen[9];
    u_char                       nums[6][NGX_INT64_LEN];
} ngx_http_ratelimit_check_t;


struct ngx_http_ratelimit_ctx_s {
    ngx_http_request_t          *request;
    ngx_http_ratelimit_check_t  *checks;
    ngx_uint_t                   nchecks;
    ngx_uint_t                   pending;

    ngx_http_ratelimit_status_e  status;
    int64_t                      remaining;    /* -1: no limit applied */
    int64_t                      reset;        /* us */
    int64_t                      retry;        /* us */

    unsigned                     waiting:1;
    unsigned                     done:1;
};


static ngx_http_ratelimit_ctx_t *ngx_http_ratelimit_get_ctx(
    ngx_http_request_t *r);
static ngx_int_t ngx_http_ratelimit_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_ratelimit_start(ngx_http_request_t *r,
    ngx_http_ratelimit_loc_conf_t *rlcf, ngx_http_ratelimit_ctx_t *ctx);
static ngx_int_t ngx_http_ratelimit_prepare(ngx_http_request_t *r,
    ngx_http_ratelimit_check_t *chk);
static ngx_flag_t ngx_http_ratelimit_cached(ngx_http_ratelimit_check_t *chk,
    int64_t now);
static void ngx_http_ratelimit_local(ngx_http_ratelimit_check_t *chk,
    int64_t now);
static ngx_int_t ngx_http_ratelimit_send(ngx_http_request_t *r,
    ngx_http_ratelimit_ctx_t *ctx, ngx_http_ratelimit_check_t *chk,
    int64_t now);
static void ngx_http_ratelimit_redis_reply(void *data, redisReply *reply,
    ngx_int_t rc);
static void ngx_http_ratelimit_fail(ngx_http_ratelimit_check_t *chk,
    int64_t now);
static ngx_int_t ngx_http_ratelimit_decide(ngx_http_request_t *r,
    ngx_http_ratelimit_loc_conf_t *rlcf, ngx_http_ratelimit_ctx_t *ctx);
static void ngx_http_ratelimit_delay(ngx_http_request_t *r);
static void ngx_http_ratelimit_cleanup(void *data);
static int64_t ngx_http_ratelimit_now(void);

static ngx_http_ratelimit_node_t *ngx_http_ratelimit_lookup(
    ngx_http_ratelimit_zone_t *zone, ngx_str_t *key, ngx_uint_t tier,
    ngx_flag_t create);
static void ngx_http_ratelimit_expire(ngx_http_ratelimit_zone_t *zone,
    ngx_uint_t n);
static void ngx_http_ratelimit_rbtree_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static ngx_int_t ngx_http_ratelimit_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);

static ngx_int_t ngx_http_ratelimit_header_filter(ngx_http_request_t *r);
static ngx_int_t ngx_http_ratelimit_add_variables(ngx_conf_t *cf);
static ngx_int_t ngx_http_ratelimit_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);

static void *ngx_http_ratelimit_create_main_conf(ngx_conf_t *cf);
static void *ngx_http_ratelimit_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_ratelimit_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_ratelimit_redis(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_ratelimit_zone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_ratelimit_tier(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_ratelimit_ban(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_ratelimit(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_ratelimit_init(ngx_conf_t *cf);
static ngx_int_t ngx_http_ratelimit_init_process(ngx_cycle_t *cycle);
static void ngx_http_ratelimit_exit_process(ngx_cycle_t *cycle);


static ngx_conf_enum_t  ngx_http_ratelimit_headers_modes[] = {
    { ngx_string("off"), NGX_HTTP_RATELIMIT_HEADERS_OFF },
    { ngx_string("draft"), NGX_HTTP_RATELIMIT_HEADERS_DRAFT },
    { ngx_string("legacy"), NGX_HTTP_RATELIMIT_HEADERS_LEGACY },
    { ngx_null_string, 0 }
};


static ngx_command_t  ngx_http_ratelimit_commands[] = {

    { ngx_string("ratelimit_redis"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_ratelimit_redis,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ratelimit_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_ratelimit_zone,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ratelimit_tier"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_ratelimit_tier,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ratelimit_ban"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE4,
      ngx_http_ratelimit_ban,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ratelimit_pg_map"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_ratelimit_pg_map,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ratelimit"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_ratelimit,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ratelimit_status"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_edge_conf_set_status,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ratelimit_loc_conf_t, status_code),
      NULL },

    { ngx_string("ratelimit_failure_status"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_edge_conf_set_status,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ratelimit_loc_conf_t, failure_status),
      NULL },

    { ngx_string("ratelimit_log_level"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ratelimit_loc_conf_t, log_level),
      &ngx_edge_log_levels },

    { ngx_string("ratelimit_headers"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ratelimit_loc_conf_t, headers),
      &ngx_http_ratelimit_headers_modes },

    { ngx_string("ratelimit_dry_run"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ratelimit_loc_conf_t, dry_run),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_ratelimit_module_ctx = {
    ngx_http_ratelimit_add_variables,      /* preconfiguration */
    ngx_http_ratelimit_init,               /* postconfiguration */

    ngx_http_ratelimit_create_main_conf,   /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_ratelimit_create_loc_conf,    /* create location configuration */
    ngx_http_ratelimit_merge_loc_conf      /* merge location configuration */
};


ngx_module_t  ngx_http_ratelimit_module = {
    NGX_MODULE_V1,
    &ngx_http_ratelimit_module_ctx,        /* module context */
    ngx_http_ratelimit_commands,           /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_ratelimit_init_process,       /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_ratelimit_exit_process,       /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;


static ngx_str_t  ngx_http_ratelimit_status_names[] = {
    ngx_null_string,
    ngx_string("PASSED"),
    ngx_string("FAILED_OPEN"),
    ngx_string("FAILED_LOCAL"),
    ngx_string("DELAYED"),
    ngx_string("DRY_RUN"),
    ngx_string("REJECTED"),
    ngx_string("FAILED_CLOSED"),
    ngx_string("BANNED")
};


/* the metric label of each status */
static const char  *ngx_http_ratelimit_results[] = {
    NULL, "passed", "failed_open", "failed_local", "delayed", "dry_run",
    "rejected", "failed_closed", "banned"
};


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

static ngx_str_t  ngx_http_ratelimit_lua = ngx_string(
    "local K, A = 1, 3\n" NGX_HTTP_RATELIMIT_LUA_BODY);

static ngx_str_t  ngx_http_ratelimit_ban_lua = ngx_string(
    "local K, A = 3, 6\n" NGX_HTTP_RATELIMIT_LUA_BODY);


void
ngx_http_ratelimit_gcra(ngx_http_ratelimit_gcra_t *g, int64_t now,
    int64_t *tat, ngx_http_ratelimit_verdict_t *v)
{
    int64_t  t, new_tat, allow_at;

    t = ngx_max(*tat, now);
    new_tat = t + g->cost * g->interval;
    allow_at = new_tat - g->interval - g->tau;

    v->excess = t - now;

    if (allow_at > now) {
        v->allowed = 0;
        v->retry = allow_at - now;
        v->reset = t - now;
        return;
    }

    *tat = new_tat;

    v->allowed = 1;
    v->retry = 0;
    v->reset = new_tat - now;
}


static int64_t
ngx_http_ratelimit_now(void)
{
    ngx_time_t  *tp;

    tp = ngx_timeofday();

    return (int64_t) tp->sec * 1000000 + (int64_t) tp->msec * 1000;
}


/* the request path */

/*
 * An internal redirect (error_page 429, try_files, a named location) wipes
 * the module contexts, but the decision must survive it: for the refusal
 * page's headers, for $ratelimit_status in the access log, and so that
 * the request is not limited twice.  The pool cleanup registered with the
 * ctx survives, so the ctx is found again through it.
 */

static ngx_http_ratelimit_ctx_t *
ngx_http_ratelimit_get_ctx(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t        *cln;
    ngx_http_ratelimit_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_ratelimit_module);

    if (ctx || !r->internal) {
        return ctx;
    }

    for (cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_http_ratelimit_cleanup) {
            ctx = cln->data;
            ngx_http_set_ctx(r, ctx, ngx_http_ratelimit_module);
            return ctx;
        }
    }

    return NULL;
}


static ngx_int_t
ngx_http_ratelimit_handler(ngx_http_request_t *r)
{
    ngx_int_t                       rc;
    ngx_http_ratelimit_ctx_t       *ctx;
    ngx_http_ratelimit_loc_conf_t  *rlcf;

    rlcf = ngx_http_get_module_loc_conf(r, ngx_http_ratelimit_module);

    if (rlcf->limits == NULL || r != r->main) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_ratelimit_get_ctx(r);

    if (ctx) {
        if (ctx->done) {
            /* after a delay, or after an internal redirect (error_page,
             * try_files): a request is limited once, as with limit_req */
            return NGX_DECLINED;
        }

        if (ctx->pending) {
            return NGX_AGAIN;
        }

        return ngx_http_ratelimit_decide(r, rlcf, ctx);
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_ratelimit_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->request = r;
    ctx->remaining = -1;

    ngx_http_set_ctx(r, ctx, ngx_http_ratelimit_module);

    rc = ngx_http_ratelimit_start(r, rlcf, ctx);
    if (rc != NGX_OK) {
        return rc;
    }

    if (ctx->pending) {
        /* the replies resume the phase engine; meanwhile a client that
         * goes away is noticed */
        ctx->waiting = 1;
        r->read_event_handler = ngx_http_test_reading;
        r->write_event_handler = ngx_http_request_empty_handler;
        return NGX_AGAIN;
    }

    return ngx_http_ratelimit_decide(r, rlcf, ctx);
}


static ngx_int_t
ngx_http_ratelimit_start(ngx_http_request_t *r,
    ngx_http_ratelimit_loc_conf_t *rlcf, ngx_http_ratelimit_ctx_t *ctx)
{
    int64_t                      now;
    ngx_int_t                    rc;
    ngx_uint_t                   i, n;
    ngx_pool_cleanup_t          *cln;
    ngx_http_ratelimit_limit_t  *limits;
    ngx_http_ratelimit_check_t  *chk;

    limits = rlcf->limits->elts;

    ctx->checks = ngx_pcalloc(r->pool, rlcf->limits->nelts
                                       * sizeof(ngx_http_ratelimit_check_t));
    if (ctx->checks == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_ratelimit_cleanup;
    cln->data = ctx;

    now = ngx_http_ratelimit_now();

    for (i = 0, n = 0; i < rlcf->limits->nelts; i++) {
        chk = &ctx->checks[n];
        chk->ctx = ctx;
        chk->limit = &limits[i];
        chk->zone = limits[i].shm_zone->data;

        rc = ngx_http_ratelimit_prepare(r, chk);

        if (rc == NGX_DECLINED) {
            continue;     /* an empty key is not limited */
        }

        if (rc != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        n++;
        ctx->nchecks = n;

        if (chk->zone->redis == NULL) {
            ngx_http_ratelimit_local(chk, now);
            continue;
        }

        if (ngx_http_ratelimit_cached(chk, now)) {
            continue;
        }

        if (ngx_http_ratelimit_send(r, ctx, chk, now) != NGX_OK) {
            ngx_http_ratelimit_fail(chk, now);
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_ratelimit_prepare(ngx_http_request_t *r,
    ngx_http_ratelimit_check_t *chk)
{
    u_char                      *p, digest[20];
    ngx_int_t                    n;
    ngx_str_t                    key, tier, cost;
    ngx_uint_t                   i;
    ngx_sha1_t                   sha1;
    ngx_http_ratelimit_zone_t   *zone;
    ngx_http_ratelimit_tier_t   *tiers;
    ngx_http_ratelimit_limit_t  *limit;
    ngx_http_ratelimit_rate_t   *rate;
    ngx_int_t                    burst;

    zone = chk->zone;
    limit = chk->limit;

    if (ngx_http_complex_value(r, &zone->key, &key) != NGX_OK) {
        return NGX_ERROR;
    }

    if (key.len == 0) {
        return NGX_DECLINED;
    }

    if (key.len > NGX_HTTP_RATELIMIT_MAX_KEY_LEN) {
        /* a client-supplied key must not make Redis keys or shared
         * memory entries as large as the client likes */
        ngx_sha1_init(&sha1);
        ngx_sha1_update(&sha1, key.data, key.len);
        ngx_sha1_final(digest, &sha1);

        p = ngx_pnalloc(r->pool, 40);
        if (p == NULL) {
            return NGX_ERROR;
        }

        ngx_hex_dump(p, digest, 20);
        key.data = p;
        key.len = 40;
    }

    chk->key = key;

    rate = &zone->rate;
    burst = -1;

    if (zone->tier_value) {
        if (ngx_http_complex_value(r, zone->tier_value, &tier) != NGX_OK) {
            return NGX_ERROR;
        }

        tiers = zone->tiers.elts;

        for (i = 0; i < zone->tiers.nelts; i++) {
            if (tiers[i].name.len == tier.len
                && ngx_strncmp(tiers[i].name.data, tier.data, tier.len) == 0)
            {
                chk->tier = &tiers[i];
                chk->tier_index = i + 1;
                rate = &tiers[i].rate;
                burst = tiers[i].burst;
                break;
            }
        }
    }

    if (burst < 0) {
        burst = limit->burst < 0 ? 0 : limit->burst;
    }

    chk->gcra.interval = rate->interval;
    chk->gcra.tau = burst * rate->interval;
    chk->gcra.cost = limit->cost;

    if (limit->cost_value) {
        if (ngx_http_complex_value(r, limit->cost_value, &cost) != NGX_OK) {
            return NGX_ERROR;
        }

        n = ngx_atoi(cost.data, cost.len);

        if (n == NGX_ERROR || n > 1000000) {
            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          "ratelimit: invalid cost \"%V\", 1 is used",
                          &cost);
            n = 1;
        }

        chk->gcra.cost = n;
    }

    return NGX_OK;
}


/* Redis mode: the zone's ban and deny caches decide without Redis */

static ngx_flag_t
ngx_http_ratelimit_cached(ngx_http_ratelimit_check_t *chk, int64_t now)
{
    ngx_flag_t                  hit;
    ngx_http_ratelimit_zone_t  *zone;
    ngx_http_ratelimit_node_t  *node;

    zone = chk->zone;
    hit = 0;

    ngx_shmtx_lock(&zone->shpool->mutex);

    node = ngx_http_ratelimit_lookup(zone, &chk->key, chk->tier_index, 0);

    if (node) {
        if (node->ban_until > now) {
            chk->status = NGX_HTTP_RATELIMIT_BANNED;
            chk->verdict.retry = node->ban_until - now;
            hit = 1;

        } else if (node->deny_until > now) {
            chk->status = NGX_HTTP_RATELIMIT_REJECTED;
            chk->verdict.retry = node->deny_until - now;
            hit = 1;
        }

        /* the bucket refills no sooner than the refusal ends */
        chk->verdict.reset = chk->verdict.retry;
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    return hit;
}


static void
ngx_http_ratelimit_local(ngx_http_ratelimit_check_t *chk, int64_t now)
{
    ngx_http_ratelimit_zone_t  *zone;
    ngx_http_ratelimit_node_t  *node;

    zone = chk->zone;

    ngx_shmtx_lock(&zone->shpool->mutex);

    node = ngx_http_ratelimit_lookup(zone, &chk->key, chk->tier_index, 1);

    if (node == NULL) {
        ngx_shmtx_unlock(&zone->shpool->mutex);

        /* as limit_req: a full zone refuses rather than forgets */
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                      "could not allocate node in ratelimit zone \"%V\"",
                      &zone->name);
        chk->status = NGX_HTTP_RATELIMIT_REJECTED;
        chk->verdict.retry = chk->gcra.interval;
        return;
    }

    if (node->ban_until > now) {
        ngx_shmtx_unlock(&zone->shpool->mutex);

        chk->status = NGX_HTTP_RATELIMIT_BANNED;
        chk->verdict.retry = node->ban_until - now;
        chk->verdict.reset = chk->verdict.retry;
        return;
    }

    ngx_http_ratelimit_gcra(&chk->gcra, now, &node->tat, &chk->verdict);

    if (chk->verdict.allowed) {
        chk->status = NGX_HTTP_RATELIMIT_PASSED;

    } else {
        chk->status = NGX_HTTP_RATELIMIT_REJECTED;

        if (zone->ban_threshold) {
            if (node->window_end <= now) {
                node->window_end = now + (int64_t) zone->ban_window * 1000;
                node->rejects = 0;
            }

            if (++node->rejects >= zone->ban_threshold) {
                node->ban_until = now + (int64_t) zone->ban_duration * 1000;
                node->rejects = 0;
                chk->status = NGX_HTTP_RATELIMIT_BANNED;
                chk->verdict.retry = node->ban_until - now;
            }
        }
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);
}


static ngx_int_t
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

    ctx->pending++;

    return NGX_OK;
}


static void
ngx_http_ratelimit_fail(ngx_http_ratelimit_check_t *chk, int64_t now)
{
    switch (chk->zone->on_failure) {

    case NGX_HTTP_RATELIMIT_FAIL_CLOSED:
        chk->status = NGX_HTTP_RATELIMIT_FAILED_CLOSED;
        break;

    case NGX_HTTP_RATELIMIT_FAIL_LOCAL:
        ngx_http_ratelimit_local(chk, now);

        if (chk->status == NGX_HTTP_RATELIMIT_PASSED) {
            chk->status = NGX_HTTP_RATELIMIT_FAILED_LOCAL;
        }

        break;

    default: /* NGX_HTTP_RATELIMIT_FAIL_OPEN */
        chk->status = NGX_HTTP_RATELIMIT_FAILED_OPEN;
    }
}


/*
 * The deny cache: after Redis refused, the key is refused here until a
 * request could pass, without asking Redis again.  The time is the one
 * for a request of cost 1, so a cheaper request than the refused one is
 * not refused longer than Redis would.  Zones with bans cache the ban
 * only: their refusals are counted in Redis, for every node to see.
 */

static void
ngx_http_ratelimit_remember(ngx_http_ratelimit_check_t *chk, ngx_flag_t ban,
    int64_t now)
{
    int64_t                     until;
    ngx_http_ratelimit_zone_t  *zone;
    ngx_http_ratelimit_node_t  *node;

    zone = chk->zone;

    if (!ban && zone->ban_threshold) {
        /* every refusal must reach Redis to count toward a ban there */
        return;
    }

    if (ban) {
        until = now + chk->verdict.retry;

    } else {
        until = now + chk->verdict.retry
                - (chk->gcra.cost - 1) * chk->gcra.interval;

        if (until <= now) {
            return;
        }
    }

    ngx_shmtx_lock(&zone->shpool->mutex);

    node = ngx_http_ratelimit_lookup(zone, &chk->key, chk->tier_index, 1);

    if (node) {
        if (ban) {
            node->ban_until = until;

        } else {
            node->deny_until = until;
        }
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);
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
    ngx_connection_t             *c;
    ngx_http_ratelimit_status_e   status;
    ngx_http_request_t         *r;
    ngx_http_ratelimit_ctx_t   *ctx;
    ngx_http_ratelimit_zone_t  *zone;

    /* the check lives in r->pool: the request is alive, else the command
     * would have been detached by ngx_http_ratelimit_cleanup() */

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

    ctx = chk->ctx;

    if (--ctx->pending || !ctx->waiting) {
        return;
    }

    ctx->waiting = 0;

    r = ctx->request;
    c = r->connection;

    r->read_event_handler = ngx_http_block_reading;
    r->write_event_handler = ngx_http_core_run_phases;

    ngx_http_core_run_phases(r);
    ngx_http_run_posted_requests(c);
}


static void
ngx_http_ratelimit_count(ngx_http_request_t *r, ngx_http_ratelimit_check_t *chk,
    ngx_http_ratelimit_status_e status)
{
    ngx_http_ratelimit_main_conf_t  *rmcf;

    rmcf = ngx_http_get_module_main_conf(r, ngx_http_ratelimit_module);

    if (rmcf->stats) {
        ngx_edge_stats_add(rmcf->stats, chk->zone->st_decisions[status], 1);
    }
}


/* what one limit did to the request, for its zone's counters: a limit
 * that passed a delayed request delayed it; a refusal in dry-run mode is
 * a dry run */

static ngx_http_ratelimit_status_e
ngx_http_ratelimit_outcome(ngx_http_ratelimit_check_t *chk,
    ngx_http_ratelimit_status_e request)
{
    if (request == NGX_HTTP_RATELIMIT_DRY_RUN
        && chk->status >= NGX_HTTP_RATELIMIT_REJECTED)
    {
        return NGX_HTTP_RATELIMIT_DRY_RUN;
    }

    if (request == NGX_HTTP_RATELIMIT_DELAYED
        && chk->verdict.allowed && chk->verdict.excess > 0
        && !chk->limit->nodelay)
    {
        return NGX_HTTP_RATELIMIT_DELAYED;
    }

    return chk->status;
}


static int64_t
ngx_http_ratelimit_remaining(ngx_http_ratelimit_check_t *chk)
{
    int64_t  n;

    if (!chk->verdict.allowed) {
        return 0;
    }

    /* requests that would pass right now, back to back */
    n = (chk->gcra.tau + chk->gcra.interval - chk->verdict.reset)
        / chk->gcra.interval;

    return n < 0 ? 0 : n;
}


static ngx_int_t
ngx_http_ratelimit_decide(ngx_http_request_t *r,
    ngx_http_ratelimit_loc_conf_t *rlcf, ngx_http_ratelimit_ctx_t *ctx)
{
    int64_t                       delay, d, remaining;
    ngx_uint_t                    i, reject, level;
    ngx_msec_t                    ms;
    ngx_http_ratelimit_check_t   *chk;
    ngx_http_ratelimit_status_e   worst;

    worst = NGX_HTTP_RATELIMIT_NONE;
    delay = 0;

    for (i = 0; i < ctx->nchecks; i++) {
        chk = &ctx->checks[i];

        if (chk->status > worst) {
            worst = chk->status;
        }

        switch (chk->status) {

        case NGX_HTTP_RATELIMIT_PASSED:
        case NGX_HTTP_RATELIMIT_FAILED_LOCAL:

            if (!chk->limit->nodelay) {
                d = chk->verdict.excess
                    - (int64_t) chk->limit->delay * chk->gcra.interval;
                delay = ngx_max(delay, d);
            }

            /* fall through */

        case NGX_HTTP_RATELIMIT_REJECTED:
        case NGX_HTTP_RATELIMIT_BANNED:

            remaining = ngx_http_ratelimit_remaining(chk);

            if (ctx->remaining < 0 || remaining < ctx->remaining) {
                ctx->remaining = remaining;
            }

            ctx->reset = ngx_max(ctx->reset, chk->verdict.reset);
            ctx->retry = ngx_max(ctx->retry, chk->verdict.retry);
            break;

        default:
            break;
        }
    }

    ctx->done = 1;

    reject = (worst >= NGX_HTTP_RATELIMIT_REJECTED);

    if (rlcf->dry_run && (reject || delay > 0)) {
        worst = NGX_HTTP_RATELIMIT_DRY_RUN;
        reject = 0;
        delay = 0;

    } else if (!reject && delay > 0) {
        worst = NGX_HTTP_RATELIMIT_DELAYED;
    }

    ctx->status = worst;

    for (i = 0; i < ctx->nchecks; i++) {
        chk = &ctx->checks[i];

        ngx_http_ratelimit_count(r, chk,
                                 ngx_http_ratelimit_outcome(chk, worst));

        if (chk->status >= NGX_HTTP_RATELIMIT_REJECTED) {
            ngx_log_error(rlcf->log_level, r->connection->log, 0,
                          "ratelimit: %V by zone \"%V\", retry in %L.%03Ls%s",
                          &ngx_http_ratelimit_status_names[chk->status],
                          &chk->zone->name, chk->verdict.retry / 1000000,
                          (chk->verdict.retry / 1000) % 1000,
                          rlcf->dry_run ? ", dry run" : "");
        }
    }

    if (reject) {
        return worst == NGX_HTTP_RATELIMIT_FAILED_CLOSED
               ? (ngx_int_t) rlcf->failure_status
               : (ngx_int_t) rlcf->status_code;
    }

    if (delay <= 0) {
        return NGX_DECLINED;
    }

    ms = (ngx_msec_t) ((delay + 999) / 1000);

    /* as limit_req: a delay logs one level below a refusal */
    level = (rlcf->log_level == NGX_LOG_INFO) ? NGX_LOG_INFO
                                              : rlcf->log_level + 1;

    ngx_log_error(level, r->connection->log, 0,
                  "ratelimit: delaying request for %Mms", ms);

    r->read_event_handler = ngx_http_test_reading;
    r->write_event_handler = ngx_http_ratelimit_delay;

    r->connection->write->delayed = 1;
    ngx_add_timer(r->connection->write, ms);

    return NGX_AGAIN;
}


static void
ngx_http_ratelimit_delay(ngx_http_request_t *r)
{
    ngx_event_t  *wev;

    wev = r->connection->write;

    if (wev->delayed) {
        if (ngx_handle_write_event(wev, 0) != NGX_OK) {
            ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        }

        return;
    }

    if (ngx_handle_read_event(r->connection->read, 0) != NGX_OK) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    r->read_event_handler = ngx_http_block_reading;
    r->write_event_handler = ngx_http_core_run_phases;

    ngx_http_core_run_phases(r);
}


static void
ngx_http_ratelimit_cleanup(void *data)
{
    ngx_http_ratelimit_ctx_t  *ctx = data;

    ngx_uint_t  i;

    /* replies that arrive after the request is gone must find nothing */
    for (i = 0; i < ctx->nchecks; i++) {
        if (ctx->checks[i].cmd) {
            ngx_edge_redis_detach(ctx->checks[i].cmd);
            ctx->checks[i].cmd = NULL;
        }
    }
}


/* shared memory: rbtree by key and tier, LRU queue, as limit_req */

static uint32_t
ngx_http_ratelimit_hash(ngx_str_t *key, ngx_uint_t tier)
{
    u_char    t;
    uint32_t  hash;

    t = (u_char) tier;

    ngx_crc32_init(hash);
    ngx_crc32_update(&hash, key->data, key->len);
    ngx_crc32_update(&hash, &t, 1);
    ngx_crc32_final(hash);

    return hash;
}


static ngx_int_t
ngx_http_ratelimit_node_cmp(ngx_http_ratelimit_node_t *lr, u_char *data,
    size_t len, ngx_uint_t tier)
{
    if (lr->tier != tier) {
        return (ngx_int_t) tier - (ngx_int_t) lr->tier;
    }

    return ngx_memn2cmp(data, lr->data, len, (size_t) lr->len);
}


static ngx_http_ratelimit_node_t *
ngx_http_ratelimit_lookup(ngx_http_ratelimit_zone_t *zone, ngx_str_t *key,
    ngx_uint_t tier, ngx_flag_t create)
{
    size_t                      size;
    uint32_t                    hash;
    ngx_int_t                   rc;
    ngx_rbtree_node_t          *node, *sentinel;
    ngx_http_ratelimit_node_t  *lr;

    hash = ngx_http_ratelimit_hash(key, tier);

    node = zone->sh->rbtree.root;
    sentinel = zone->sh->rbtree.sentinel;

    while (node != sentinel) {

        if (hash < node->key) {
            node = node->left;
            continue;
        }

        if (hash > node->key) {
            node = node->right;
            continue;
        }

        lr = (ngx_http_ratelimit_node_t *) &node->color;

        rc = ngx_http_ratelimit_node_cmp(lr, key->data, key->len, tier);

        if (rc == 0) {
            ngx_queue_remove(&lr->queue);
            ngx_queue_insert_head(&zone->sh->queue, &lr->queue);
            return lr;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    if (!create) {
        return NULL;
    }

    size = offsetof(ngx_rbtree_node_t, color)
           + offsetof(ngx_http_ratelimit_node_t, data)
           + key->len;

    ngx_http_ratelimit_expire(zone, 1);

    node = ngx_slab_alloc_locked(zone->shpool, size);

    if (node == NULL) {
        ngx_http_ratelimit_expire(zone, 0);

        node = ngx_slab_alloc_locked(zone->shpool, size);
        if (node == NULL) {
            return NULL;
        }
    }

    node->key = hash;

    lr = (ngx_http_ratelimit_node_t *) &node->color;

    lr->tier = (u_char) tier;
    lr->len = (u_short) key->len;
    lr->tat = 0;
    lr->deny_until = 0;
    lr->ban_until = 0;
    lr->window_end = 0;
    lr->rejects = 0;
    ngx_memcpy(lr->data, key->data, key->len);

    ngx_rbtree_insert(&zone->sh->rbtree, node);
    ngx_queue_insert_head(&zone->sh->queue, &lr->queue);

    return lr;
}


/*
 * n == 1 frees one or two idle entries from the LRU tail; n == 0 frees
 * the oldest entry whatever its state, then one or two idle ones.
 */

static void
ngx_http_ratelimit_expire(ngx_http_ratelimit_zone_t *zone, ngx_uint_t n)
{
    int64_t                     now;
    ngx_queue_t                *q;
    ngx_rbtree_node_t          *node;
    ngx_http_ratelimit_node_t  *lr;

    now = ngx_http_ratelimit_now();

    while (n < 3) {

        if (ngx_queue_empty(&zone->sh->queue)) {
            return;
        }

        q = ngx_queue_last(&zone->sh->queue);
        lr = ngx_queue_data(q, ngx_http_ratelimit_node_t, queue);

        if (n++ != 0) {
            if (lr->tat > now || lr->deny_until > now || lr->ban_until > now
                || lr->window_end > now)
            {
                return;
            }
        }

        ngx_queue_remove(q);

        node = (ngx_rbtree_node_t *)
                   ((u_char *) lr - offsetof(ngx_rbtree_node_t, color));

        ngx_rbtree_delete(&zone->sh->rbtree, node);
        ngx_slab_free_locked(zone->shpool, node);
    }
}


static void
ngx_http_ratelimit_rbtree_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t          **p;
    ngx_http_ratelimit_node_t   *lr, *lrt;

    for ( ;; ) {

        if (node->key < temp->key) {
            p = &temp->left;

        } else if (node->key > temp->key) {
            p = &temp->right;

        } else { /* node->key == temp->key */

            lr = (ngx_http_ratelimit_node_t *) &node->color;
            lrt = (ngx_http_ratelimit_node_t *) &temp->color;

            p = (ngx_http_ratelimit_node_cmp(lrt, lr->data, lr->len, lr->tier)
                 < 0) ? &temp->left : &temp->right;
        }

        if (*p == sentinel) {
            break;
        }

        temp = *p;
    }

    *p = node;
    node->parent = temp;
    node->left = sentinel;
    node->right = sentinel;
    ngx_rbt_red(node);
}


static ngx_int_t
ngx_http_ratelimit_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_ratelimit_zone_t  *ozone = data;

    size_t                      len;
    ngx_http_ratelimit_zone_t  *zone;

    zone = shm_zone->data;

    if (ozone) {
        /* nginx -s reload: buckets, bans and denials carry over */
        zone->sh = ozone->sh;
        zone->shpool = ozone->shpool;
        return NGX_OK;
    }

    zone->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        zone->sh = zone->shpool->data;
        return NGX_OK;
    }

    zone->sh = ngx_slab_alloc(zone->shpool,
                              sizeof(ngx_http_ratelimit_shctx_t));
    if (zone->sh == NULL) {
        return NGX_ERROR;
    }

    zone->shpool->data = zone->sh;

    ngx_rbtree_init(&zone->sh->rbtree, &zone->sh->sentinel,
                    ngx_http_ratelimit_rbtree_insert_value);

    ngx_queue_init(&zone->sh->queue);

    len = sizeof(" in ratelimit zone \"\"") + shm_zone->shm.name.len;

    zone->shpool->log_ctx = ngx_slab_alloc(zone->shpool, len);
    if (zone->shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(zone->shpool->log_ctx, " in ratelimit zone \"%V\"%Z",
                &shm_zone->shm.name);

    /* a full zone is handled (and logged) by the lookup */
    zone->shpool->log_nomem = 0;

    return NGX_OK;
}


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
 * intervals, which is what the bucket really grants */

static void
ngx_http_ratelimit_quota(ngx_http_ratelimit_check_t *chk, int64_t *q,
    int64_t *w)
{
    *q = chk->gcra.tau / chk->gcra.interval + 1;
    *w = (*q * chk->gcra.interval + 999999) / 1000000;
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

        if (chk->tier) {
            p = ngx_sprintf(p, "\"%V/%V\"", &chk->zone->name,
                            &chk->tier->name);
            s = ngx_sprintf(s, "\"%V/%V\"", &chk->zone->name,
                            &chk->tier->name);
        } else {
            p = ngx_sprintf(p, "\"%V\"", &chk->zone->name);
            s = ngx_sprintf(s, "\"%V\"", &chk->zone->name);
        }

        p = ngx_sprintf(p, ";q=%L;w=%L", q, w);
        s = ngx_sprintf(s, ";r=%L;t=%L", ngx_http_ratelimit_remaining(chk),
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


/* variables */

static ngx_http_variable_t  ngx_http_ratelimit_vars[] = {

    { ngx_string("ratelimit_status"), NULL, ngx_http_ratelimit_variable,
      0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("ratelimit_remaining"), NULL, ngx_http_ratelimit_variable,
      1, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("ratelimit_reset"), NULL, ngx_http_ratelimit_variable,
      2, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


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


static ngx_int_t
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


/* configuration */

static void *
ngx_http_ratelimit_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_ratelimit_main_conf_t  *rmcf;

    rmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_ratelimit_main_conf_t));
    if (rmcf == NULL) {
        return NULL;
    }

    if (ngx_array_init(&rmcf->zones, cf->pool, 4,
                       sizeof(ngx_http_ratelimit_zone_t *))
        != NGX_OK
        || ngx_array_init(&rmcf->redis, cf->pool, 2,
                          sizeof(ngx_edge_redis_server_t *))
           != NGX_OK)
    {
        return NULL;
    }

    return rmcf;
}


static void *
ngx_http_ratelimit_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_ratelimit_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_ratelimit_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->limits = NULL;
     */

    conf->status_code = NGX_CONF_UNSET_UINT;
    conf->failure_status = NGX_CONF_UNSET_UINT;
    conf->log_level = NGX_CONF_UNSET_UINT;
    conf->headers = NGX_CONF_UNSET_UINT;
    conf->dry_run = NGX_CONF_UNSET;

    return conf;
}


static char *
ngx_http_ratelimit_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_ratelimit_loc_conf_t *prev = parent;
    ngx_http_ratelimit_loc_conf_t *conf = child;

    ngx_uint_t                   i;
    ngx_http_ratelimit_limit_t  *limits;

    if (conf->limits == NULL) {
        conf->limits = prev->limits;
    }

    if (conf->limits) {
        limits = conf->limits->elts;

        for (i = 0; i < conf->limits->nelts; i++) {
            if (limits[i].shm_zone->data == NULL) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "unknown ratelimit_zone \"%V\"",
                                   &limits[i].shm_zone->shm.name);
                return NGX_CONF_ERROR;
            }
        }
    }

    ngx_conf_merge_uint_value(conf->status_code, prev->status_code,
                              NGX_HTTP_TOO_MANY_REQUESTS);
    ngx_conf_merge_uint_value(conf->failure_status, prev->failure_status,
                              NGX_HTTP_SERVICE_UNAVAILABLE);
    ngx_conf_merge_uint_value(conf->log_level, prev->log_level, NGX_LOG_ERR);
    ngx_conf_merge_uint_value(conf->headers, prev->headers,
                              NGX_HTTP_RATELIMIT_HEADERS_DRAFT);
    ngx_conf_merge_value(conf->dry_run, prev->dry_run, 0);

    return NGX_CONF_OK;
}


/* zone and tier names appear in headers and metric labels: keep them to
 * a token's characters */

static ngx_int_t
ngx_http_ratelimit_valid_name(ngx_str_t *name)
{
    size_t  i;

    if (name->len == 0 || name->len > 64) {
        return NGX_ERROR;
    }

    for (i = 0; i < name->len; i++) {
        if (!(isalnum(name->data[i]) || name->data[i] == '_'
              || name->data[i] == '-' || name->data[i] == '.'))
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* "10r/s", "50r/m" or "20r/h" */

static ngx_int_t
ngx_http_ratelimit_parse_rate(ngx_str_t *value, ngx_http_ratelimit_rate_t *rate)
{
    size_t     len;
    ngx_int_t  n;
    u_char    *p;

    len = value->len;
    p = value->data + len - 3;

    if (len < 4 || ngx_strncmp(p, "r/", 2) != 0) {
        return NGX_ERROR;
    }

    if (p[2] == 's') {
        rate->period = 1;

    } else if (p[2] == 'm') {
        rate->period = 60;

    } else if (p[2] == 'h') {
        /* beyond limit_req: "5 per 15 minutes" is 20r/h with burst=4 */
        rate->period = 3600;

    } else {
        return NGX_ERROR;
    }

    n = ngx_atoi(value->data, len - 3);
    if (n <= 0 || n > 1000000) {
        return NGX_ERROR;
    }

    rate->count = n;
    rate->interval = (int64_t) rate->period * 1000000 / n;

    return NGX_OK;
}


static ngx_edge_stats_t *
ngx_http_ratelimit_stats(ngx_conf_t *cf, ngx_http_ratelimit_main_conf_t *rmcf)
{
    if (rmcf->stats == NULL) {
        rmcf->stats = ngx_edge_stats_create(cf, "ratelimit",
                                            &ngx_http_ratelimit_module);
    }

    return rmcf->stats;
}


static ngx_http_ratelimit_zone_t *
ngx_http_ratelimit_find_zone(ngx_http_ratelimit_main_conf_t *rmcf,
    ngx_str_t *name)
{
    ngx_uint_t                   i;
    ngx_http_ratelimit_zone_t  **zones;

    zones = rmcf->zones.elts;

    for (i = 0; i < rmcf->zones.nelts; i++) {
        if (zones[i]->name.len == name->len
            && ngx_strncmp(zones[i]->name.data, name->data, name->len) == 0)
        {
            return zones[i];
        }
    }

    return NULL;
}


static char *
ngx_http_ratelimit_redis(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ratelimit_main_conf_t *rmcf = conf;

    ngx_str_t                 *value;
    ngx_uint_t                 i;
    ngx_edge_stats_t          *stats;
    ngx_edge_redis_server_t   *server, **servers, **sp;

    value = cf->args->elts;

    if (ngx_http_ratelimit_valid_name(&value[1]) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid redis server name \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    servers = rmcf->redis.elts;

    for (i = 0; i < rmcf->redis.nelts; i++) {
        if (servers[i]->name.len == value[1].len
            && ngx_strncmp(servers[i]->name.data, value[1].data,
                           value[1].len) == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate ratelimit_redis \"%V\"", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    server = ngx_edge_redis_parse_server(cf, &value[1], cf->args->nelts - 1);
    if (server == NULL) {
        return NGX_CONF_ERROR;
    }

    /* [0]: GCRA, one key and three args per decision; [1]: with bans */
    if (ngx_edge_redis_add_batch_script(cf, server, &ngx_http_ratelimit_lua,
                                        1, 3)
        == NULL
        || ngx_edge_redis_add_batch_script(cf, server,
                                           &ngx_http_ratelimit_ban_lua, 3, 6)
           == NULL)
    {
        return NGX_CONF_ERROR;
    }

    stats = ngx_http_ratelimit_stats(cf, rmcf);
    if (stats == NULL) {
        return NGX_CONF_ERROR;
    }

    if (ngx_edge_redis_register_stats(cf, server, stats, "ratelimit")
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    sp = ngx_array_push(&rmcf->redis);
    if (sp == NULL) {
        return NGX_CONF_ERROR;
    }

    *sp = server;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_ratelimit_zone_stats(ngx_conf_t *cf,
    ngx_http_ratelimit_main_conf_t *rmcf, ngx_http_ratelimit_zone_t *zone)
{
    ngx_int_t                 fam;
    ngx_str_t                 values[2];
    ngx_uint_t                i;
    ngx_edge_stats_t         *stats;
    ngx_edge_stats_family_t   family;

    static const char  *labels[] = { "zone", "result", NULL };

    stats = ngx_http_ratelimit_stats(cf, rmcf);
    if (stats == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(&family, sizeof(ngx_edge_stats_family_t));
    family.name = "ratelimit_decisions_total";
    family.help = "Rate-limit decisions by zone and result.";
    family.type = NGX_EDGE_STATS_COUNTER;
    family.labels = labels;

    /* the same family for every zone: the registry returns it again */
    fam = ngx_edge_stats_add_family(cf, stats, &family);
    if (fam == NGX_ERROR) {
        return NGX_ERROR;
    }

    values[0] = zone->name;

    for (i = 1; i < NGX_HTTP_RATELIMIT_NSTATUS; i++) {
        values[1].data = (u_char *) ngx_http_ratelimit_results[i];
        values[1].len = ngx_strlen(ngx_http_ratelimit_results[i]);

        zone->st_decisions[i] = ngx_edge_stats_add_series(cf, stats, fam,
                                                          values);
        if (zone->st_decisions[i] == NGX_EDGE_STATS_NONE) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static char *
ngx_http_ratelimit_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ratelimit_main_conf_t *rmcf = conf;

    ssize_t                            size;
    ngx_str_t                         *value, name, s;
    ngx_uint_t                         i, j;
    ngx_shm_zone_t                    *shm_zone;
    ngx_edge_redis_server_t          **servers;
    ngx_http_ratelimit_zone_t         *zone, **zp;
    ngx_http_compile_complex_value_t   ccv;

    value = cf->args->elts;

    zone = ngx_pcalloc(cf->pool, sizeof(ngx_http_ratelimit_zone_t));
    if (zone == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

    ccv.cf = cf;
    ccv.value = &value[1];
    ccv.complex_value = &zone->key;

    if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    size = 0;
    name.len = 0;
    zone->on_failure = NGX_HTTP_RATELIMIT_FAIL_LOCAL;
    zone->clock = NGX_HTTP_RATELIMIT_CLOCK_REDIS;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "zone=", 5) == 0) {
            if (ngx_edge_conf_parse_zone(cf, &value[i], &name, &size)
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "rate=", 5) == 0) {
            s.data = value[i].data + 5;
            s.len = value[i].len - 5;

            if (ngx_http_ratelimit_parse_rate(&s, &zone->rate) != NGX_OK) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid rate \"%V\"", &value[i]);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "redis=", 6) == 0) {
            s.data = value[i].data + 6;
            s.len = value[i].len - 6;

            servers = rmcf->redis.elts;

            for (j = 0; j < rmcf->redis.nelts; j++) {
                if (servers[j]->name.len == s.len
                    && ngx_strncmp(servers[j]->name.data, s.data, s.len) == 0)
                {
                    zone->redis = servers[j];
                    zone->script = ((ngx_edge_redis_script_t **)
                                    servers[j]->scripts.elts)[0];
                    break;
                }
            }

            if (zone->redis == NULL) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "unknown redis server \"%V\": declare it "
                                   "with \"ratelimit_redis\" first", &s);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "prefix=", 7) == 0) {
            zone->prefix.data = value[i].data + 7;
            zone->prefix.len = value[i].len - 7;

            if (ngx_http_ratelimit_valid_name(&zone->prefix) != NGX_OK) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid parameter \"%V\"", &value[i]);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strcmp(value[i].data, "clock=redis") == 0) {
            zone->clock = NGX_HTTP_RATELIMIT_CLOCK_REDIS;
            continue;
        }

        if (ngx_strcmp(value[i].data, "clock=nginx") == 0) {
            zone->clock = NGX_HTTP_RATELIMIT_CLOCK_NGINX;
            continue;
        }

        if (ngx_strcmp(value[i].data, "on_failure=open") == 0) {
            zone->on_failure = NGX_HTTP_RATELIMIT_FAIL_OPEN;
            continue;
        }

        if (ngx_strcmp(value[i].data, "on_failure=closed") == 0) {
            zone->on_failure = NGX_HTTP_RATELIMIT_FAIL_CLOSED;
            continue;
        }

        if (ngx_strcmp(value[i].data, "on_failure=local") == 0) {
            zone->on_failure = NGX_HTTP_RATELIMIT_FAIL_LOCAL;
            continue;
        }

        if (ngx_strncmp(value[i].data, "tier=", 5) == 0) {
            s.data = value[i].data + 5;
            s.len = value[i].len - 5;

            zone->tier_value = ngx_palloc(cf->pool,
                                          sizeof(ngx_http_complex_value_t));
            if (zone->tier_value == NULL) {
                return NGX_CONF_ERROR;
            }

            ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

            ccv.cf = cf;
            ccv.value = &s;
            ccv.complex_value = zone->tier_value;

            if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\"", &value[i]);
        return NGX_CONF_ERROR;
    }

    if (name.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" must have \"zone\" parameter",
                           &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (ngx_http_ratelimit_valid_name(&name) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid zone name \"%V\": letters, digits, "
                           "\"_\", \"-\" and \".\" only", &name);
        return NGX_CONF_ERROR;
    }

    if (zone->rate.count == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" must have \"rate\" parameter",
                           &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (zone->clock == NGX_HTTP_RATELIMIT_CLOCK_NGINX && zone->redis == NULL)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"clock=\" needs \"redis=\"");
        return NGX_CONF_ERROR;
    }

    zone->name = name;

    if (zone->prefix.len == 0) {
        zone->prefix = name;
    }

    if (ngx_array_init(&zone->tiers, cf->pool, 4,
                       sizeof(ngx_http_ratelimit_tier_t))
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    shm_zone = ngx_shared_memory_add(cf, &name, size,
                                     &ngx_http_ratelimit_module);
    if (shm_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    if (shm_zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "duplicate ratelimit zone \"%V\"", &name);
        return NGX_CONF_ERROR;
    }

    shm_zone->init = ngx_http_ratelimit_init_zone;
    shm_zone->data = zone;
    zone->shm_zone = shm_zone;

    if (ngx_http_ratelimit_zone_stats(cf, rmcf, zone) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    zp = ngx_array_push(&rmcf->zones);
    if (zp == NULL) {
        return NGX_CONF_ERROR;
    }

    *zp = zone;

    return NGX_CONF_OK;
}


static ngx_http_ratelimit_zone_t *
ngx_http_ratelimit_zone_param(ngx_conf_t *cf,
    ngx_http_ratelimit_main_conf_t *rmcf, ngx_str_t *value)
{
    ngx_str_t                   name;
    ngx_http_ratelimit_zone_t  *zone;

    name.data = value->data + 5;
    name.len = value->len - 5;

    zone = ngx_http_ratelimit_find_zone(rmcf, &name);

    if (zone == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown ratelimit zone \"%V\": declare it with "
                           "\"ratelimit_zone\" first", &name);
    }

    return zone;
}


static char *
ngx_http_ratelimit_tier(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ratelimit_main_conf_t *rmcf = conf;

    ngx_str_t                  *value, s;
    ngx_uint_t                  i, j;
    ngx_http_ratelimit_tier_t  *tier, *tiers;
    ngx_http_ratelimit_zone_t  *zone;

    value = cf->args->elts;
    zone = NULL;

    tier = ngx_pcalloc(cf->pool, sizeof(ngx_http_ratelimit_tier_t));
    if (tier == NULL) {
        return NGX_CONF_ERROR;
    }

    tier->burst = -1;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "zone=", 5) == 0) {
            zone = ngx_http_ratelimit_zone_param(cf, rmcf, &value[i]);
            if (zone == NULL) {
                return NGX_CONF_ERROR;
            }
            continue;
        }

        if (ngx_strncmp(value[i].data, "tier=", 5) == 0) {
            tier->name.data = value[i].data + 5;
            tier->name.len = value[i].len - 5;

            if (ngx_http_ratelimit_valid_name(&tier->name) != NGX_OK) {
                goto invalid;
            }
            continue;
        }

        if (ngx_strncmp(value[i].data, "rate=", 5) == 0) {
            s.data = value[i].data + 5;
            s.len = value[i].len - 5;

            if (ngx_http_ratelimit_parse_rate(&s, &tier->rate) != NGX_OK) {
                goto invalid;
            }
            continue;
        }

        if (ngx_strncmp(value[i].data, "burst=", 6) == 0) {
            tier->burst = ngx_atoi(value[i].data + 6, value[i].len - 6);
            if (tier->burst == NGX_ERROR) {
                goto invalid;
            }
            continue;
        }

        goto invalid;
    }

    if (zone == NULL || tier->name.len == 0 || tier->rate.count == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" needs \"zone=\", \"tier=\" and \"rate=\"",
                           &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (zone->tier_value == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "ratelimit zone \"%V\" has no \"tier=\" variable",
                           &zone->name);
        return NGX_CONF_ERROR;
    }

    tiers = zone->tiers.elts;

    for (j = 0; j < zone->tiers.nelts; j++) {
        if (tiers[j].name.len == tier->name.len
            && ngx_strncmp(tiers[j].name.data, tier->name.data,
                           tier->name.len) == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate tier \"%V\" in ratelimit zone "
                               "\"%V\"", &tier->name, &zone->name);
            return NGX_CONF_ERROR;
        }
    }

    if (zone->tiers.nelts == NGX_HTTP_RATELIMIT_MAX_TIERS) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "too many tiers in ratelimit zone \"%V\"",
                           &zone->name);
        return NGX_CONF_ERROR;
    }

    tiers = ngx_array_push(&zone->tiers);
    if (tiers == NULL) {
        return NGX_CONF_ERROR;
    }

    *tiers = *tier;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\"", &value[i]);
    return NGX_CONF_ERROR;
}


static char *
ngx_http_ratelimit_ban(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ratelimit_main_conf_t *rmcf = conf;

    ngx_int_t                   n;
    ngx_str_t                  *value, s;
    ngx_uint_t                  i;
    ngx_msec_t                  ms;
    ngx_http_ratelimit_zone_t  *zone;

    value = cf->args->elts;
    zone = NULL;

    for (i = 1; i < cf->args->nelts; i++) {
        if (ngx_strncmp(value[i].data, "zone=", 5) == 0) {
            zone = ngx_http_ratelimit_zone_param(cf, rmcf, &value[i]);
            if (zone == NULL) {
                return NGX_CONF_ERROR;
            }
            break;
        }
    }

    if (zone == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" must have \"zone\" parameter",
                           &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (zone->ban_threshold) {
        return "is duplicate";
    }

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "zone=", 5) == 0) {
            continue;
        }

        if (ngx_strncmp(value[i].data, "threshold=", 10) == 0) {
            n = ngx_atoi(value[i].data + 10, value[i].len - 10);
            if (n <= 0) {
                goto invalid;
            }
            zone->ban_threshold = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "window=", 7) == 0
            || ngx_strncmp(value[i].data, "duration=", 9) == 0)
        {
            s.data = (u_char *) ngx_strchr(value[i].data, '=') + 1;
            s.len = value[i].data + value[i].len - s.data;

            ms = ngx_parse_time(&s, 0);
            if (ms == (ngx_msec_t) NGX_ERROR || ms == 0) {
                goto invalid;
            }

            if (value[i].data[0] == 'w') {
                zone->ban_window = ms;
            } else {
                zone->ban_duration = ms;
            }
            continue;
        }

        goto invalid;
    }

    if (zone->ban_threshold == 0 || zone->ban_window == 0
        || zone->ban_duration == 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" needs \"threshold=\", \"window=\" and "
                           "\"duration=\"", &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (zone->redis) {
        /* the script that also counts refusals and keeps bans */
        zone->script = ((ngx_edge_redis_script_t **)
                        zone->redis->scripts.elts)[1];
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\"", &value[i]);
    return NGX_CONF_ERROR;
}


static char *
ngx_http_ratelimit(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ratelimit_loc_conf_t *rlcf = conf;

    ngx_int_t                          burst, delay, cost;
    ngx_str_t                         *value, s;
    ngx_uint_t                         i, nodelay;
    ngx_shm_zone_t                    *shm_zone;
    ngx_http_complex_value_t          *cost_value;
    ngx_http_ratelimit_limit_t        *limit, *limits;
    ngx_http_compile_complex_value_t   ccv;

    value = cf->args->elts;

    shm_zone = NULL;
    burst = -1;
    delay = 0;
    nodelay = 0;
    cost = 1;
    cost_value = NULL;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "zone=", 5) == 0) {
            s.len = value[i].len - 5;
            s.data = value[i].data + 5;

            /* the zone may be declared later in the http block; merge
             * checks that it was */
            shm_zone = ngx_shared_memory_add(cf, &s, 0,
                                             &ngx_http_ratelimit_module);
            if (shm_zone == NULL) {
                return NGX_CONF_ERROR;
            }
            continue;
        }

        if (ngx_strncmp(value[i].data, "burst=", 6) == 0) {
            burst = ngx_atoi(value[i].data + 6, value[i].len - 6);
            if (burst == NGX_ERROR) {
                goto invalid;
            }
            continue;
        }

        if (ngx_strncmp(value[i].data, "delay=", 6) == 0) {
            delay = ngx_atoi(value[i].data + 6, value[i].len - 6);
            if (delay == NGX_ERROR) {
                goto invalid;
            }
            continue;
        }

        if (ngx_strcmp(value[i].data, "nodelay") == 0) {
            nodelay = 1;
            continue;
        }

        if (ngx_strncmp(value[i].data, "cost=", 5) == 0) {
            s.len = value[i].len - 5;
            s.data = value[i].data + 5;

            if (ngx_http_script_variables_count(&s)) {
                cost_value = ngx_palloc(cf->pool,
                                        sizeof(ngx_http_complex_value_t));
                if (cost_value == NULL) {
                    return NGX_CONF_ERROR;
                }

                ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));
                ccv.cf = cf;
                ccv.value = &s;
                ccv.complex_value = cost_value;

                if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
                    return NGX_CONF_ERROR;
                }

                continue;
            }

            cost = ngx_atoi(s.data, s.len);
            if (cost == NGX_ERROR || cost > 1000000) {
                goto invalid;
            }
            continue;
        }

        goto invalid;
    }

    if (shm_zone == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" must have \"zone\" parameter",
                           &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (nodelay && delay) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"nodelay\" and \"delay=\" are mutually "
                           "exclusive");
        return NGX_CONF_ERROR;
    }

    if (rlcf->limits == NULL) {
        rlcf->limits = ngx_array_create(cf->pool, 2,
                                        sizeof(ngx_http_ratelimit_limit_t));
        if (rlcf->limits == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    limits = rlcf->limits->elts;

    for (i = 0; i < rlcf->limits->nelts; i++) {
        if (shm_zone == limits[i].shm_zone) {
            return "is duplicate";
        }
    }

    limit = ngx_array_push(rlcf->limits);
    if (limit == NULL) {
        return NGX_CONF_ERROR;
    }

    limit->shm_zone = shm_zone;
    limit->burst = burst;
    limit->delay = delay;
    limit->nodelay = nodelay;
    limit->cost = cost;
    limit->cost_value = cost_value;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\"", &value[i]);
    return NGX_CONF_ERROR;
}


static ngx_int_t
ngx_http_ratelimit_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_PREACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_ratelimit_handler;

    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_ratelimit_header_filter;

    return NGX_OK;
}


static ngx_int_t
ngx_http_ratelimit_init_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                        i;
    ngx_edge_redis_server_t         **servers;
    ngx_http_ratelimit_main_conf_t   *rmcf;

    /* not the cache manager or loader: they serve no requests */
    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    rmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                                ngx_http_ratelimit_module);
    if (rmcf == NULL) {
        return NGX_OK;
    }

    servers = rmcf->redis.elts;

    for (i = 0; i < rmcf->redis.nelts; i++) {
        if (ngx_edge_redis_init_worker(cycle, servers[i]) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return ngx_http_ratelimit_pg_init_process(cycle, rmcf);
}


static void
ngx_http_ratelimit_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                        i;
    ngx_edge_redis_server_t         **servers;
    ngx_http_ratelimit_main_conf_t   *rmcf;

    rmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                                ngx_http_ratelimit_module);
    if (rmcf == NULL) {
        return;
    }

    servers = rmcf->redis.elts;

    for (i = 0; i < rmcf->redis.nelts; i++) {
        ngx_edge_redis_exit_worker(servers[i]);
    }

    ngx_http_ratelimit_pg_exit_process(cycle, rmcf);
}
