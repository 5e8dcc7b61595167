/*
 * ngx_http_ratelimit_module: shared definitions of the module's files.
 */

#ifndef _NGX_HTTP_RATELIMIT_MODULE_H_INCLUDED_
#define _NGX_HTTP_RATELIMIT_MODULE_H_INCLUDED_


#include "ngx_edge_common.h"
#include "ngx_edge_stats.h"
#include "ngx_edge_redis.h"


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


typedef struct {
    ngx_uint_t                   allowed;
    int64_t                      excess;       /* queue ahead, us */
    int64_t                      retry;        /* until it would pass */
    int64_t                      reset;        /* until the bucket is full */
} ngx_http_ratelimit_verdict_t;


typedef struct {
    ngx_array_t                  zones;        /* ngx_http_ratelimit_zone_t * */
    ngx_array_t                  redis;        /* ngx_edge_redis_server_t * */
    ngx_edge_stats_t            *stats;
    ngx_array_t                 *pg_maps;      /* ngx_http_ratelimit_pg_map.c */
} ngx_http_ratelimit_main_conf_t;


extern ngx_module_t  ngx_http_ratelimit_module;


void ngx_http_ratelimit_gcra(ngx_http_ratelimit_gcra_t *g, int64_t now,
    int64_t *tat, ngx_http_ratelimit_verdict_t *v);


/* ngx_http_ratelimit_pg_map.c: tiers (or any map) loaded from PostgreSQL */
char *ngx_http_ratelimit_pg_map(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_ratelimit_pg_init_process(ngx_cycle_t *cycle,
    ngx_http_ratelimit_main_conf_t *rmcf);
void ngx_http_ratelimit_pg_exit_process(ngx_cycle_t *cycle,
    ngx_http_ratelimit_main_conf_t *rmcf);


#endif /* _NGX_HTTP_RATELIMIT_MODULE_H_INCLUDED_ */
