/*
 * ngx_http_ratelimit_module: shared definitions of the module's files.
 */

#ifndef _NGX_HTTP_RATELIMIT_MODULE_H_INCLUDED_
#define _NGX_HTTP_RATELIMIT_MODULE_H_INCLUDED_


#include "ngx_edge_common.h"
#include "ngx_edge_stats.h"
#include "ngx_edge_redis.h"
#include "ngx_edge_time.h"
#include "ngx_edge_wait.h"


#define NGX_HTTP_RATELIMIT_MAX_TIERS     32
#define NGX_HTTP_RATELIMIT_MAX_KEY_LEN   200   /* longer keys are hashed */
#define NGX_HTTP_RATELIMIT_LOG_INTERVAL  5000  /* ms, one failure line */

#define NGX_HTTP_RATELIMIT_LEASE_MAX      1000000  /* lease_max= at most */
#define NGX_HTTP_RATELIMIT_LEASE_TTL_MAX  3600000  /* lease_ttl=, ms */

#define NGX_HTTP_RATELIMIT_CLOCK_REDIS   0
#define NGX_HTTP_RATELIMIT_CLOCK_NGINX   1

#define NGX_HTTP_RATELIMIT_FAIL_OPEN     0
#define NGX_HTTP_RATELIMIT_FAIL_CLOSED   1
#define NGX_HTTP_RATELIMIT_FAIL_LOCAL    2

#define NGX_HTTP_RATELIMIT_HEADERS_OFF     0
#define NGX_HTTP_RATELIMIT_HEADERS_DRAFT   1
#define NGX_HTTP_RATELIMIT_HEADERS_LEGACY  2

#define NGX_HTTP_RATELIMIT_GCRA          0
#define NGX_HTTP_RATELIMIT_SLIDING       1

/*
 * The bound of the sliding window's arithmetic: limit * window (us) within
 * 2^58, and the counts read from Redis clamped to [0, limit], so that
 * every sum of ngx_http_ratelimit_sliding() (at most 3 * limit * window)
 * stays below 2^60.
 */
#define NGX_HTTP_RATELIMIT_SW_MAX  ((int64_t) 1 << 58)


/* the outcome of one request, most severe last */
typedef enum {
    NGX_HTTP_RATELIMIT_NONE = 0,
    NGX_HTTP_RATELIMIT_PASSED,
    NGX_HTTP_RATELIMIT_FAILED_OPEN,
    NGX_HTTP_RATELIMIT_FAILED_LOCAL,
    NGX_HTTP_RATELIMIT_DELAYED,
    NGX_HTTP_RATELIMIT_DRY_RUN,
    NGX_HTTP_RATELIMIT_REJECTED,
    NGX_HTTP_RATELIMIT_FAILED_CLOSED,
    NGX_HTTP_RATELIMIT_BANNED,
    NGX_HTTP_RATELIMIT_NSTATUS
} ngx_http_ratelimit_status_e;


/*
 * GCRA (generic cell rate algorithm), in integer microseconds.  One value
 * per key: the theoretical arrival time (TAT) of the next request.  A
 * request of cost c at `now` conforms when
 *     max(tat, now) + c * interval - interval - tau <= now,
 * with tau = burst * interval: exactly burst + 1 back-to-back requests
 * pass, as with limit_req.  The same arithmetic runs in the Lua script.
 */

typedef struct {
    int64_t                      interval;     /* us per request */
    int64_t                      tau;          /* burst * interval */
    int64_t                      cost;
} ngx_http_ratelimit_gcra_t;


/*
 * The sliding window (two-counter estimate), in integer microseconds.
 * Windows are aligned on multiples of `window` of the clock.  At offset e
 * into the current window, with `prev` admitted in the previous window
 * and `cur` in this one, a request of cost c passes when
 *     prev * (window - e) + (cur + c) * window <= limit * window,
 * i.e. the previous window's count weighted by the part of it that the
 * sliding window [now - window, now) still overlaps.
 */

typedef struct {
    int64_t                      window;       /* us */
    int64_t                      limit;        /* requests per window */
} ngx_http_ratelimit_sw_t;


typedef struct {
    ngx_uint_t                   allowed;
    int64_t                      excess;       /* queue ahead, us */
    int64_t                      retry;        /* until it would pass */
    int64_t                      reset;        /* until the bucket is full */
    int64_t                      remaining;    /* sliding window only */
    int64_t                      retry_one;    /* sliding window: retry of
                                                  a request of cost 1 */
} ngx_http_ratelimit_verdict_t;


typedef struct {
    ngx_array_t                  zones;        /* ngx_http_ratelimit_zone_t * */
    ngx_array_t                  redis;        /* ngx_edge_redis_server_t * */
    ngx_edge_stats_t            *stats;
    ngx_array_t                 *pg_maps;      /* ngx_http_ratelimit_pg_map.c */
} ngx_http_ratelimit_main_conf_t;


typedef struct {
    ngx_uint_t                   count;        /* requests ... */
    ngx_uint_t                   period;       /* ... per this many seconds */
    int64_t                      interval;     /* us per request */
    int64_t                      per_window;   /* sliding window: count *
                                                  window / period */
} ngx_http_ratelimit_rate_t;


typedef struct {
    ngx_str_t                    name;
    ngx_http_ratelimit_rate_t    rate;
    ngx_int_t                    burst;        /* -1: the location's */
} ngx_http_ratelimit_tier_t;


/* a shared-memory entry: one key (and tier) of one zone */
typedef struct {
    u_char                       color;
    u_char                       tier_len;     /* the tier's name, then */
    u_short                      len;          /* the key, in data */
    ngx_queue_t                  queue;
    int64_t                      tat;          /* local buckets, us */
    int64_t                      ban_until;    /* monotonic, us */
    int64_t                      window_end;   /* local ban counting */
    ngx_uint_t                   rejects;
    int64_t                      sw_start;     /* sliding window: the */
    int64_t                      sw_cur;       /* current window's start */
    int64_t                      sw_prev;      /* and both counts */

    /* mode=lease (ngx_http_ratelimit_lease.c), monotonic us */
    int64_t                      lease_tokens; /* unspent, this node's */
    int64_t                      lease_expire; /* when they end */
    int64_t                      lease_valid;  /* reserved ones: from */
    int64_t                      lease_next;   /* Redis has too few
                                                  tokens before this */
    int64_t                      lease_fetch;  /* a lease is on its way
                                                  until; 0: none */
    int64_t                      lease_tat;    /* Redis's TAT, last seen */
    int64_t                      lease_period; /* this lease_ttl's start */
    int64_t                      lease_asked;  /* tokens asked in it */
    int64_t                      lease_asked_prev; /* and in the last */
    u_char                       data[1];
} ngx_http_ratelimit_node_t;


/*
 * Adaptive limits: the zone's rate times a factor, in parts per million
 * of the configured rate, moved by an AIMD controller from what the
 * requests the zone admitted met upstream (ngx_http_ratelimit_adaptive.c).
 */

#define NGX_HTTP_RATELIMIT_PPM  1000000

typedef struct {
    ngx_atomic_t                 factor;       /* ppm; 0: not started */
    ngx_atomic_t                 stamp;        /* ms, the last evaluation */
    ngx_atomic_t                 requests;     /* this interval's samples */
    ngx_atomic_t                 errors;       /* 5xx or signal set */
    ngx_atomic_t                 slow;         /* slower than latency= */
} ngx_http_ratelimit_adaptive_sh_t;


typedef struct {
    int64_t                      min;          /* ppm of the base rate */
    int64_t                      max;
    int64_t                      step;         /* ppm added per interval */
    int64_t                      decrease;     /* ppm kept on a decrease */
    ngx_msec_t                   interval;
    ngx_uint_t                   error_rate;   /* per mille of samples */
    ngx_msec_t                   latency;      /* 0: latency not watched */
    ngx_uint_t                   percentile;   /* per mille, 950: p95 */
    ngx_uint_t                   min_samples;
    ngx_http_complex_value_t    *signal;
    ngx_str_t                    redis_key;    /* the fleet's factor */
    ngx_edge_stats_t            *stats;
    ngx_edge_stats_id_t          st_rate;
} ngx_http_ratelimit_adaptive_t;


typedef struct {
    ngx_rbtree_t                 rbtree;
    ngx_rbtree_node_t            sentinel;
    ngx_queue_t                  queue;
    ngx_http_ratelimit_adaptive_sh_t  adaptive;
} ngx_http_ratelimit_shctx_t;


/*
 * Redis mode's deny and ban cache: refusals and bans Redis gave this
 * worker, so that a refused key is refused again without asking Redis.
 * In the worker's memory: read and written without a lock.
 */
typedef struct {
    ngx_rbtree_t                 rbtree;
    ngx_rbtree_node_t            sentinel;
    ngx_queue_t                  lru;
    ngx_uint_t                   n;
    ngx_uint_t                   max;
} ngx_http_ratelimit_deny_cache_t;


typedef struct {
    ngx_shm_zone_t              *shm_zone;
    ngx_int_t                    burst;        /* -1: unset, i.e. 0 */
    ngx_uint_t                   delay;        /* requests not delayed */
    unsigned                     nodelay:1;
    ngx_uint_t                   cost;
    ngx_http_complex_value_t    *cost_value;
    ngx_str_t                    conf_file;    /* where it was written, */
    ngx_uint_t                   conf_line;    /* for the bound checks */
} ngx_http_ratelimit_limit_t;


/* a map of ngx_http_ratelimit_pg_map.c, opaque elsewhere */
typedef struct ngx_http_ratelimit_pg_map_s  ngx_http_ratelimit_pg_map_t;


/* ratelimit_ddos: the allow list, and the limit every location gets */
typedef struct {
    ngx_radix_tree_t            *allow4;
    ngx_radix_tree_t            *allow6;
    ngx_http_ratelimit_pg_map_t *allow_pg;     /* match=cidr, or NULL */
    ngx_http_ratelimit_limit_t   limit;
    ngx_edge_stats_t            *stats;
    ngx_edge_stats_id_t          st_allowed;
} ngx_http_ratelimit_ddos_t;


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
    ngx_uint_t                   algorithm;
    int64_t                      window;       /* sliding window, us */
    ngx_uint_t                   on_failure;

    ngx_uint_t                   ban_threshold;
    ngx_msec_t                   ban_window;
    ngx_msec_t                   ban_duration;

    ngx_http_ratelimit_adaptive_t  *adaptive;  /* NULL: a fixed rate */
    ngx_http_ratelimit_ddos_t      *ddos;      /* ratelimit_ddos's zone */

    /* mode=lease: tokens taken from Redis in leases, spent here */
    ngx_flag_t                   lease;
    ngx_uint_t                   lease_max;    /* tokens per lease */
    int64_t                      lease_ttl;    /* us */
    ngx_edge_redis_script_t     *lease_script;
    ngx_queue_t                  lease_refills; /* this worker's, in
                                                   flight */
    ngx_edge_stats_t            *stats;
    ngx_edge_stats_id_t          st_leases;    /* leases granted */
    ngx_edge_stats_id_t          st_leased;    /* tokens they brought */
    ngx_edge_stats_id_t          st_expired;   /* tokens never spent */

    ngx_edge_log_gate_t          log_gate;     /* this worker's */
    ngx_http_ratelimit_deny_cache_t  deny;     /* this worker's */

    ngx_edge_stats_id_t          st_decisions[NGX_HTTP_RATELIMIT_NSTATUS];
} ngx_http_ratelimit_zone_t;


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
    ngx_str_t                    tier_name;    /* empty: the zone's rate */
    ngx_str_t                    key;
    ngx_http_ratelimit_gcra_t    gcra;
    ngx_http_ratelimit_rate_t   *rate;         /* the zone's or tier's */
    int64_t                      factor;       /* ppm of rate, adaptive */

    ngx_http_ratelimit_status_e  status;
    ngx_http_ratelimit_verdict_t verdict;

    ngx_http_ratelimit_sw_t      sw;

    ngx_edge_redis_cmd_t        *cmd;
    const char                  *argv[9];   /* 3 keys, 6 args */
    size_t                       argvlen[9];
    u_char                       nums[6][NGX_INT64_LEN];

    /* the sliding window in Redis: plain commands, one reply each */
    ngx_edge_redis_cmd_t        *sw_cmds[4];
    ngx_uint_t                   sw_pending;
    int64_t                      sw_now;       /* wall clock, us */
    int64_t                      sw_count;     /* INCRBY's reply */
    int64_t                      sw_prev;      /* GET's reply */
    int64_t                      sw_ban;       /* PTTL's reply, ms */
    unsigned                     sw_failed:1;
    unsigned                     sw_counted:1; /* INCRBY answered */

    /* mode=lease: the lease this request waits for */
    int64_t                      lease_want;
    int64_t                      lease_size;   /* the key's lease, L */
    ngx_event_t                  lease_poll;   /* parked: another lease
                                                  is on its way */
    unsigned                     lease_leader:1; /* set lease_fetch */
    unsigned                     lease_parked:1;
} ngx_http_ratelimit_check_t;


struct ngx_http_ratelimit_ctx_s {
    ngx_edge_wait_t              wait;         /* for Redis's replies */
    ngx_http_ratelimit_check_t  *checks;
    ngx_uint_t                   nchecks;

    ngx_http_ratelimit_status_e  status;
    int64_t                      remaining;    /* -1: no limit applied */
    int64_t                      reset;        /* us */
    int64_t                      retry;        /* us */

    unsigned                     done:1;
    unsigned                     failed:1;     /* start() failed: never
                                                  decided, never resumed */
};


/*
 * "now" for what this node keeps (shared-memory buckets, the deny and ban
 * caches, expiry): the monotonic clock, which never steps.  The wall clock
 * is read only for Redis with clock=nginx, where nodes must agree.
 */
#define ngx_http_ratelimit_now()  ngx_edge_mono_usec()


extern ngx_module_t  ngx_http_ratelimit_module;


/* ngx_http_ratelimit_handler.c: the request path */
extern ngx_str_t  ngx_http_ratelimit_status_names[];

ngx_int_t ngx_http_ratelimit_handler(ngx_http_request_t *r);
ngx_http_ratelimit_ctx_t *ngx_http_ratelimit_get_ctx(ngx_http_request_t *r);
void ngx_http_ratelimit_fail(ngx_http_ratelimit_check_t *chk, int64_t now);
int64_t ngx_http_ratelimit_remaining(ngx_http_ratelimit_check_t *chk);

/* ngx_http_ratelimit_shm.c: buckets and caches in shared memory */
void ngx_http_ratelimit_gcra(ngx_http_ratelimit_gcra_t *g, int64_t now,
    int64_t *tat, ngx_http_ratelimit_verdict_t *v);
void ngx_http_ratelimit_sliding(ngx_http_ratelimit_sw_t *sw, int64_t cost,
    int64_t now, int64_t prev, int64_t cur, ngx_http_ratelimit_verdict_t *v);
void ngx_http_ratelimit_local(ngx_http_ratelimit_check_t *chk, int64_t now);
ngx_http_ratelimit_node_t *ngx_http_ratelimit_lookup(
    ngx_http_ratelimit_zone_t *zone, ngx_str_t *tier, ngx_str_t *key,
    ngx_flag_t create);
void ngx_http_ratelimit_count_refusal(ngx_http_ratelimit_check_t *chk,
    ngx_http_ratelimit_node_t *node, int64_t now);
ngx_int_t ngx_http_ratelimit_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
uint32_t ngx_http_ratelimit_hash(ngx_str_t *tier, ngx_str_t *key);
ngx_int_t ngx_http_ratelimit_key_cmp(ngx_str_t *tier, ngx_str_t *key,
    u_char *data, size_t tier_len, size_t len);

/* ngx_http_ratelimit_deny.c: Redis mode's deny and ban cache, per worker */
void ngx_http_ratelimit_deny_init(ngx_http_ratelimit_deny_cache_t *cache,
    size_t zone_size);
ngx_flag_t ngx_http_ratelimit_cached(ngx_http_ratelimit_check_t *chk,
    int64_t now);
void ngx_http_ratelimit_remember(ngx_http_ratelimit_check_t *chk,
    ngx_flag_t ban, int64_t now);
void ngx_http_ratelimit_deny_free(ngx_http_ratelimit_deny_cache_t *cache);

/* ngx_http_ratelimit_redis.c: decisions in Redis */
extern ngx_str_t  ngx_http_ratelimit_lua;
extern ngx_str_t  ngx_http_ratelimit_ban_lua;

ngx_int_t ngx_http_ratelimit_send(ngx_http_request_t *r,
    ngx_http_ratelimit_ctx_t *ctx, ngx_http_ratelimit_check_t *chk);
ngx_int_t ngx_http_ratelimit_sw_send(ngx_http_request_t *r,
    ngx_http_ratelimit_ctx_t *ctx, ngx_http_ratelimit_check_t *chk);
void ngx_http_ratelimit_sw_detach(ngx_http_ratelimit_check_t *chk);

/* ngx_http_ratelimit_lease.c: mode=lease */
extern ngx_str_t  ngx_http_ratelimit_lease_lua;

ngx_int_t ngx_http_ratelimit_lease_start(ngx_http_request_t *r,
    ngx_http_ratelimit_ctx_t *ctx, ngx_http_ratelimit_check_t *chk,
    int64_t now);
void ngx_http_ratelimit_lease_detach(ngx_http_ratelimit_check_t *chk);
ngx_int_t ngx_http_ratelimit_lease_stats(ngx_conf_t *cf,
    ngx_http_ratelimit_zone_t *zone, ngx_edge_stats_t *stats);
void ngx_http_ratelimit_lease_exit(ngx_http_ratelimit_zone_t *zone);

/* ngx_http_ratelimit_adaptive.c: adaptive limits */
int64_t ngx_http_ratelimit_adaptive_factor(ngx_http_ratelimit_zone_t *zone);
ngx_int_t ngx_http_ratelimit_adaptive_log(ngx_http_request_t *r);
char *ngx_http_ratelimit_adaptive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
u_char *ngx_http_ratelimit_print_rate(u_char *p,
    ngx_http_ratelimit_rate_t *rate, int64_t factor);

/* ngx_http_ratelimit_ddos.c: DDoS protection in one directive */
ngx_flag_t ngx_http_ratelimit_ddos_allowed(ngx_http_request_t *r,
    ngx_http_ratelimit_ddos_t *ddos);
char *ngx_http_ratelimit_ddos(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

/* ngx_http_ratelimit_headers.c: response headers and variables */
ngx_int_t ngx_http_ratelimit_header_filter_init(ngx_conf_t *cf);
ngx_int_t ngx_http_ratelimit_add_variables(ngx_conf_t *cf);

/* ngx_http_ratelimit_conf.c: directives */
void *ngx_http_ratelimit_create_main_conf(ngx_conf_t *cf);
void *ngx_http_ratelimit_create_loc_conf(ngx_conf_t *cf);
char *ngx_http_ratelimit_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
char *ngx_http_ratelimit_redis(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_ratelimit_zone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_ratelimit_tier(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_ratelimit_ban(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_ratelimit(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
ngx_int_t ngx_http_ratelimit_parse_rate(ngx_str_t *value,
    ngx_http_ratelimit_rate_t *rate);
/* the module's stats zone (edge_stats_ratelimit), made on first use */
ngx_edge_stats_t *ngx_http_ratelimit_stats(ngx_conf_t *cf,
    ngx_http_ratelimit_main_conf_t *rmcf);


/* ngx_http_ratelimit_pg_map.c: tiers (or any map) loaded from PostgreSQL */
char *ngx_http_ratelimit_pg_map(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_ratelimit_pg_init_process(ngx_cycle_t *cycle,
    ngx_http_ratelimit_main_conf_t *rmcf);
ngx_http_ratelimit_pg_map_t *ngx_http_ratelimit_pg_map_find(
    ngx_http_ratelimit_main_conf_t *rmcf, ngx_str_t *name);
ngx_flag_t ngx_http_ratelimit_pg_map_is_cidr(ngx_http_ratelimit_pg_map_t *map);
ngx_flag_t ngx_http_ratelimit_pg_map_match(ngx_http_ratelimit_pg_map_t *map,
    ngx_uint_t family, u_char *addr);
void ngx_http_ratelimit_pg_exit_process(ngx_cycle_t *cycle,
    ngx_http_ratelimit_main_conf_t *rmcf);


#endif /* _NGX_HTTP_RATELIMIT_MODULE_H_INCLUDED_ */
