/*
 * ngx_http_cache_module: an HTTP response cache that a fleet of nginx
 * nodes shares through Redis.  Declarations shared by its files:
 *
 *   ngx_http_cache_module.c   tables, directives, variables, worker life
 *   ngx_http_cache_lookup.c   PRECONTENT: key, Redis GET, the decision
 *   ngx_http_cache_send.c     a response from a stored entry
 *   ngx_http_cache_store.c    header and body filters: capture, compress,
 *                             SET after the last buffer
 *   ngx_http_cache_entry.c    the stored format
 *   ngx_http_cache_rfc.c      RFC 9111 / 5861 rules
 */

#ifndef _NGX_HTTP_CACHE_MODULE_H_INCLUDED_
#define _NGX_HTTP_CACHE_MODULE_H_INCLUDED_


#include "ngx_edge_common.h"
#include "ngx_edge_time.h"
#include "ngx_edge_redis.h"
#include "ngx_edge_wait.h"
#include "ngx_http_cache_entry.h"
#include "ngx_http_cache_rfc.h"

#include <ngx_md5.h>
#include <zlib.h>


/* $edge_cache_status, with nginx's names */
typedef enum {
    NGX_HTTP_CACHE_ST_NONE = 0,
    NGX_HTTP_CACHE_ST_MISS,
    NGX_HTTP_CACHE_ST_BYPASS,
    NGX_HTTP_CACHE_ST_EXPIRED,
    NGX_HTTP_CACHE_ST_STALE,
    NGX_HTTP_CACHE_ST_UPDATING,
    NGX_HTTP_CACHE_ST_REVALIDATED,
    NGX_HTTP_CACHE_ST_HIT
} ngx_http_cache_status_e;


/* edge_cache_use_stale */
#define NGX_HTTP_CACHE_STALE_ERROR      0x0002
#define NGX_HTTP_CACHE_STALE_TIMEOUT    0x0004
#define NGX_HTTP_CACHE_STALE_UPDATING   0x0008
#define NGX_HTTP_CACHE_STALE_500        0x0010
#define NGX_HTTP_CACHE_STALE_502        0x0020
#define NGX_HTTP_CACHE_STALE_503        0x0040
#define NGX_HTTP_CACHE_STALE_504        0x0080
#define NGX_HTTP_CACHE_STALE_403        0x0100
#define NGX_HTTP_CACHE_STALE_404        0x0200
#define NGX_HTTP_CACHE_STALE_429        0x0400
#define NGX_HTTP_CACHE_STALE_OFF        0x8000
/* every error condition (not updating) */
#define NGX_HTTP_CACHE_STALE_ERRORS     0x07f6


/* what a lock request (ngx_http_cache_lock_lua) answered */
typedef enum {
    NGX_HTTP_CACHE_LOCK_NONE = 0,
    NGX_HTTP_CACHE_LOCK_OWNED,       /* ours: fetch and store */
    NGX_HTTP_CACHE_LOCK_BUSY,        /* another request fetches */
    NGX_HTTP_CACHE_LOCK_HFM,         /* hit-for-miss: go, no lock */
    NGX_HTTP_CACHE_LOCK_ENTRY,       /* a newer entry arrived */
    NGX_HTTP_CACHE_LOCK_ERROR        /* Redis failed: go, no lock */
} ngx_http_cache_lock_e;


/* stores wait while this many bytes are queued for the cache's Redis
 * connection in a worker (a stalled Redis) */
#define NGX_HTTP_CACHE_STORE_BACKLOG  (32 * 1024 * 1024)


/* the hit-for-miss marker stored under an entry's key */
#define NGX_HTTP_CACHE_HFM  "NXHM"


/* a Redis key: "<zone>:{<md5 of the cache key, hex>}" and suffixes; the
 * hash tag keeps an entry, its variants and its lock in one Cluster slot */
#define NGX_HTTP_CACHE_HASH_LEN   32
#define NGX_HTTP_CACHE_RKEY_MAX   (NGX_HTTP_CACHE_ZONE_NAME_MAX + 3     \
                                   + NGX_HTTP_CACHE_HASH_LEN + 1 + 3   \
                                   + NGX_HTTP_CACHE_HASH_LEN)
#define NGX_HTTP_CACHE_ZONE_NAME_MAX  64


#define NGX_HTTP_CACHE_NSTATUS   8      /* ngx_http_cache_status_e values */


typedef struct {
    ngx_str_t                    name;
    ngx_edge_redis_server_t     *redis;
    struct ngx_http_cache_l1_s  *l1;         /* hot=: ngx_http_cache_l1.h */

    /* series in the "cache" stats zone (nginx_cache_* in /metrics) */
    ngx_edge_stats_t            *stats;
    ngx_edge_stats_id_t          st_requests[NGX_HTTP_CACHE_NSTATUS];
    ngx_edge_stats_id_t          st_hits[3];         /* by tier: -, l1, l2 */
    ngx_edge_stats_id_t          st_served_bytes;
    ngx_edge_stats_id_t          st_inflated;
    ngx_edge_stats_id_t          st_stores;
    ngx_edge_stats_id_t          st_stored_bytes;
    ngx_edge_stats_id_t          st_lock_waits;
    ngx_edge_stats_id_t          st_lock_timeouts;
    ngx_msec_t                   purge_poll;  /* ngx_http_cache_purge.c */
    void                        *purge;       /* this worker's purge state */
} ngx_http_cache_zone_t;


typedef struct {
    ngx_array_t                  zones;      /* ngx_http_cache_zone_t * */
    ngx_array_t                  redis;      /* ngx_edge_redis_server_t * */
    ngx_edge_stats_t            *stats;
} ngx_http_cache_main_conf_t;


#define ngx_http_cache_count(zone, id, n)                                        if ((zone)->stats) { ngx_edge_stats_add((zone)->stats, (zone)->id, n); }


typedef struct {
    ngx_http_cache_zone_t       *zone;       /* NULL: off */
    ngx_http_complex_value_t    *key;
    ngx_uint_t                   methods;    /* NGX_HTTP_GET|HEAD always */
    ngx_array_t                 *bypass;     /* predicates */
    ngx_array_t                 *no_store;
    size_t                       max_size;   /* the stored entry's bound */
    ngx_msec_t                   keep;       /* TTL past the stale windows */
    ngx_flag_t                   compress;
    ngx_int_t                    compress_level;
    ngx_hash_t                   compress_types;
    ngx_array_t                 *compress_types_keys;
    ngx_flag_t                   status_header;
    ngx_flag_t                   lock;
    ngx_msec_t                   lock_timeout;
    ngx_msec_t                   lock_age;
    ngx_msec_t                   hit_for_miss;
    ngx_uint_t                   use_stale;
    ngx_array_t                 *stale_if;   /* predicates */
    ngx_flag_t                   background_update;
    ngx_flag_t                   revalidate;
    ngx_uint_t                   warm_concurrency;
    ngx_uint_t                   min_uses;
    ngx_msec_t                   min_uses_window;
    ngx_http_cache_rfc_conf_t    rfc;
} ngx_http_cache_loc_conf_t;


typedef struct {
    ngx_http_request_t          *request;
    ngx_edge_wait_t              wait;
    ngx_edge_redis_cmd_t        *cmd;        /* in flight */

    ngx_str_t                    key;        /* the cache key's text */
    u_char                       hash[NGX_HTTP_CACHE_HASH_LEN];
    uint64_t                     epoch;      /* of the variants */

    ngx_http_cache_status_e      status;
    ngx_uint_t                   uses;       /* edge_cache_min_uses count */

    /* the stampede lock */
    ngx_http_cache_lock_e        lock_rc;
    u_char                       lock_token[16];
    ngx_msec_t                   lock_start;
    ngx_msec_t                   lock_delay; /* the next poll's */
    ngx_event_t                  lock_timer;
    ngx_uint_t                   tier;       /* 0, 1: shm, or 2: Redis */
    ngx_msec_t                   l1_checked; /* the hot copy's, tier 1 */

    redisReply                  *reply;      /* kept: the entry's bytes */
    ngx_http_cache_entry_t       entry;      /* parsed, into reply */
    int64_t                      age;        /* current age, ms */
    size_t                       served;     /* body bytes from the cache */
    ngx_str_t                    stale_body; /* served from the filters */

    /* the store */
    int64_t                      request_time;   /* wall ms */
    ngx_http_cache_policy_t      policy;
    u_char                      *buf;        /* the entry being built */
    u_char                      *buf_last;
    u_char                      *buf_end;
    size_t                       prefix_len; /* up to the body */
    size_t                       raw_len;    /* body bytes seen */
    off_t                        expect_len; /* Content-Length, or -1 */
    z_stream                     zstream;
    ngx_str_t                    vary_spec;
    ngx_str_t                    vary_values;
    ngx_str_t                    tags;       /* "tag\n" each, to store */

    unsigned                     looked_up:1;
    unsigned                     locking:1;  /* a lock request is out */
    unsigned                     lock_owned:1;
    unsigned                     hfm:1;      /* a hit-for-miss marker */
    unsigned                     stale:1;    /* entry kept: stale */
    unsigned                     serving_stale:1;  /* in the filters */
    unsigned                     stale_sent:1;
    unsigned                     background:1;     /* the update subrequest */
    unsigned                     no_store:1;
    unsigned                     revalidating:1;   /* validators sent */
    unsigned                     invalidate:1;     /* an unsafe method */
    unsigned                     lock_waited:1;
    unsigned                     lock_held:1;      /* the connection held
                                                      between polls */
    unsigned                     warm:1;     /* a warm-up subrequest */
    void                        *warm_job;   /* ngx_http_cache_warm.c */
    unsigned                     done:1;     /* lookup decided */
    unsigned                     variant:1;  /* second GET sent */
    unsigned                     storing:1;
    unsigned                     gzip:1;     /* storing compressed */
    unsigned                     zinit:1;
    unsigned                     client_gzip:1;
    unsigned                     stored_flag:1;  /* a store began */
} ngx_http_cache_ctx_t;


extern ngx_module_t  ngx_http_cache_module;


/* ngx_http_cache_lookup.c */
ngx_int_t ngx_http_cache_handler(ngx_http_request_t *r);
ngx_http_cache_ctx_t *ngx_http_cache_get_ctx(ngx_http_request_t *r);
ngx_int_t ngx_http_cache_vary_match(ngx_http_request_t *r,
    ngx_http_cache_ctx_t *ctx, ngx_http_cache_entry_t *e, ngx_flag_t variant);
void ngx_http_cache_hash_key(ngx_str_t *key, u_char *hash);
void ngx_http_cache_redis_key(ngx_http_cache_ctx_t *ctx,
    ngx_http_cache_zone_t *zone, ngx_str_t *values, ngx_str_t *dst);

void ngx_http_cache_release_lock(ngx_http_cache_ctx_t *ctx,
    ngx_http_cache_zone_t *zone);
ngx_flag_t ngx_http_cache_stale_on(ngx_http_request_t *r,
    ngx_http_cache_ctx_t *ctx, ngx_uint_t condition);

/* ngx_http_cache_send.c */
ngx_int_t ngx_http_cache_send_hit(ngx_http_request_t *r,
    ngx_http_cache_ctx_t *ctx);
ngx_int_t ngx_http_cache_prepare_response(ngx_http_request_t *r,
    ngx_http_cache_ctx_t *ctx, ngx_str_t *body);
ngx_chain_t *ngx_http_cache_body_chain(ngx_http_request_t *r,
    ngx_str_t *body);
ngx_int_t ngx_http_cache_set_headers(ngx_http_request_t *r,
    ngx_http_cache_entry_t *e, ngx_list_t *except);
ngx_table_elt_t *ngx_http_cache_push_header(ngx_http_request_t *r,
    u_char *name, size_t nlen, u_char *value, size_t vlen);
ngx_flag_t ngx_http_cache_accepts_gzip(ngx_http_request_t *r);

/* ngx_http_cache_store.c */
ngx_int_t ngx_http_cache_store_init(ngx_conf_t *cf);
ngx_flag_t ngx_http_cache_has_token(ngx_str_t *list, const char *token,
    size_t len);

/* ngx_http_cache_warm.c */
ngx_int_t ngx_http_cache_warm_handler(ngx_http_request_t *r);

/* ngx_http_cache_module.c */
ngx_int_t ngx_http_cache_set_status_header(ngx_http_request_t *r,
    ngx_http_cache_ctx_t *ctx);


#endif /* _NGX_HTTP_CACHE_MODULE_H_INCLUDED_ */
