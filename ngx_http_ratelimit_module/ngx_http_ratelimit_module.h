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


void ngx_http_ratelimit_gcra(ngx_http_ratelimit_gcra_t *g, int64_t now,
    int64_t *tat, ngx_http_ratelimit_verdict_t *v);


#endif /* _NGX_HTTP_RATELIMIT_MODULE_H_INCLUDED_ */
