/*
 * ngx_http_breaker_module: what the route layer (ngx_http_breaker_module.c)
 * offers the peer layer (ngx_http_breaker_peer.c) besides the state
 * machine: the metrics of a circuit in the "edge_stats_breaker" zone.
 */

#ifndef _NGX_HTTP_BREAKER_MODULE_H_INCLUDED_
#define _NGX_HTTP_BREAKER_MODULE_H_INCLUDED_


#include "ngx_edge_common.h"
#include "ngx_edge_stats.h"
#include "ngx_http_breaker_circuit.h"
#include <jansson.h>


#define NGX_HTTP_BREAKER_NSTATES    7     /* ngx_http_breaker_state_e */
#define NGX_HTTP_BREAKER_NOUTCOMES  5     /* ngx_http_breaker_outcome_e */


/* one circuit's series; every id NGX_EDGE_STATS_NONE when not registered */
typedef struct {
    ngx_edge_stats_t            *stats;
    ngx_edge_stats_id_t          transitions[NGX_HTTP_BREAKER_NSTATES];
    ngx_edge_stats_id_t          calls[NGX_HTTP_BREAKER_NOUTCOMES];
    ngx_edge_stats_id_t          rejected;
    ngx_edge_stats_id_t          state;
    ngx_edge_stats_id_t          duration;

    /* the per-call series' handles in this worker's slot, resolved on
     * its first call (worker: ngx_worker + 1 then, 0 before) */
    ngx_uint_t                   worker;
    uint64_t                    *calls_ref[NGX_HTTP_BREAKER_NOUTCOMES];
    ngx_edge_stats_hist_ref_t    duration_ref;
} ngx_http_breaker_stats_t;


/* hidden: the .so's own references are direct (nginx finds the modules
 * through ngx_modules[], not by name) */
NGX_EDGE_API extern ngx_module_t  ngx_http_breaker_module;


/*
 * Registers the series of one circuit (label circuit="name") in the
 * breaker's stats zone, at configuration time.  The families:
 *   breaker_transitions_total{circuit,to}      counter
 *   breaker_calls_total{circuit,outcome}       counter
 *   breaker_rejected_total{circuit}            counter
 *   breaker_state{circuit}                     gauge, the state's number
 *   breaker_call_duration_seconds{circuit}     histogram
 */
ngx_int_t ngx_http_breaker_stats_add(ngx_conf_t *cf, ngx_str_t *name,
    ngx_http_breaker_stats_t *bst);

/* at run time: a transition won by this worker, an outcome, a refusal */
void ngx_http_breaker_stats_transition(ngx_http_breaker_stats_t *bst,
    ngx_http_breaker_state_e from, ngx_http_breaker_state_e to);
void ngx_http_breaker_stats_rejected(ngx_http_breaker_stats_t *bst);
void ngx_http_breaker_stats_resolve(ngx_http_breaker_stats_t *bst);


/* an outcome (once per request: inline, through the handles) */
static ngx_inline void
ngx_http_breaker_stats_call(ngx_http_breaker_stats_t *bst,
    ngx_http_breaker_outcome_e outcome, int64_t latency)
{
    if (bst->worker != ngx_worker + 1) {
        ngx_http_breaker_stats_resolve(bst);
    }

    ngx_edge_stats_ref_add(bst->calls_ref[outcome], 1);

    if (outcome != NGX_HTTP_BREAKER_IGNORED) {
        ngx_edge_stats_ref_observe(&bst->duration_ref,
                                   (uint64_t) (latency > 0 ? latency : 0));
    }
}

/* added: in the master at init_module, once the circuit is found in its
 * zone: the state gauge becomes the circuit's stored state (a new stats
 * zone starts at 0, closed, while the circuit kept its state) */
void ngx_http_breaker_stats_sync_state(ngx_cycle_t *cycle,
    ngx_http_breaker_stats_t *bst, ngx_http_breaker_circuit_t *c,
    ngx_http_breaker_circuit_conf_t *conf);


/* the fields of every circuit (state, window, thresholds) in the status
 * document, after the layer's own: 0, or -1 when jansson failed */
int ngx_http_breaker_circuit_json_fields(json_t *o,
    ngx_http_breaker_circuit_info_t *info,
    ngx_http_breaker_circuit_conf_t *conf);


/*
 * The route layer's part of a request (ngx_http_breaker_module.c), here
 * for the one PRECONTENT handler of both layers
 * (ngx_http_breaker_shed_route_handler(), ngx_http_breaker_shed.c), which
 * inlines it after the shedder's.
 */

/* a route circuit: breaker_circuit NAME zone=... (process memory) */
typedef struct {
    ngx_str_t                        name;
    ngx_shm_zone_t                  *zone;
    ngx_http_breaker_circuit_conf_t  conf;
    ngx_http_breaker_circuit_t      *circuit;    /* set at init_module */
    ngx_http_breaker_stats_t         stats;
    ngx_http_breaker_quiet_t         quiet;      /* this worker's */
} ngx_http_breaker_route_t;


typedef struct {
    ngx_str_t                        name;       /* breaker NAME */
    ngx_http_breaker_route_t        *route;      /* NULL: off */
    ngx_flag_t                       subrequests;
    ngx_uint_t                       status_code;
    ngx_str_t                        fallback;
    ngx_uint_t                       set;        /* breaker given here */
    u_char                          *file;
    ngx_uint_t                       line;
} ngx_http_breaker_loc_conf_t;


/* one per request that met a breaker, with its pool cleanup in one
 * allocation (the request's pool is near a block's end: every byte and
 * call counts), the shedder's when both layers meet the request (its
 * `extra` bytes); found again after an internal redirect through that
 * cleanup, whose data is the ctx */
typedef struct {
    ngx_pool_cleanup_t               cln;
    ngx_http_request_t              *request;
    ngx_http_breaker_route_t        *route;
    ngx_http_breaker_ticket_t        ticket;
    uint32_t                         retry_after;   /* msec, refused */
    unsigned                         state:8;       /* _state_e */
    unsigned                         reason:4;      /* _REASON_* below */
    unsigned                         refused:1;
    unsigned                         done:1;
    unsigned                         has_state:1;
} ngx_http_breaker_ctx_t;


/* $breaker_reason: the route layer's own, then the circuit's reasons
 * (NGX_HTTP_BREAKER_ROUTE_CIRCUIT + the circuit's reason code) */
#define NGX_HTTP_BREAKER_ROUTE_NONE     0
#define NGX_HTTP_BREAKER_ROUTE_FORCED   1
#define NGX_HTTP_BREAKER_ROUTE_PROBES   2
#define NGX_HTTP_BREAKER_ROUTE_CIRCUIT  3


/* the route's rare paths and its pool cleanup (ngx_http_breaker_module.c) */
NGX_EDGE_API NGX_EDGE_COLD ngx_int_t ngx_http_breaker_check(
    ngx_http_request_t *r, ngx_http_breaker_loc_conf_t *lcf,
    ngx_http_breaker_ctx_t *ctx);
NGX_EDGE_API ngx_http_breaker_ctx_t *ngx_http_breaker_get_ctx(
    ngx_http_request_t *r);
NGX_EDGE_API void ngx_http_breaker_cleanup(void *data);


/* ctx: room for the request's context, or NULL */
static ngx_inline __attribute__((always_inline)) ngx_int_t
ngx_http_breaker_route_phase(ngx_http_request_t *r,
    ngx_http_breaker_loc_conf_t *lcf, ngx_http_breaker_ctx_t *ctx)
{
    ngx_http_breaker_route_t  *route;

    route = lcf->route;

    if (route == NULL || (r != r->main && !lcf->subrequests)) {
        return NGX_DECLINED;
    }

    if (ngx_http_get_module_ctx(r, ngx_http_breaker_module) != NULL
        || (r->internal && ngx_http_breaker_get_ctx(r) != NULL))
    {
        /* decided once per request, internal redirects included */
        return NGX_DECLINED;
    }

    if (ctx == NULL) {
        ctx = ngx_palloc(r->pool, sizeof(ngx_http_breaker_ctx_t));
        if (ctx == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    ngx_memzero(&ctx->ticket, sizeof(ngx_http_breaker_ticket_t));
    ctx->request = r;
    ctx->route = route;
    ctx->reason = NGX_HTTP_BREAKER_ROUTE_NONE;
    ctx->retry_after = 0;
    ctx->state = NGX_HTTP_BREAKER_CLOSED;
    ctx->refused = 0;
    ctx->done = 0;
    ctx->has_state = 0;

    ngx_edge_pool_cleanup_link(r->pool, &ctx->cln, ngx_http_breaker_cleanup,
                               ctx);

    ngx_http_set_ctx(r, ctx, ngx_http_breaker_module);

    if (route->circuit == NULL) {
        /* the zone was full: admitted, as if disabled (logged then) */
        return NGX_DECLINED;
    }

    if (ngx_http_breaker_circuit_admit_closed(route->circuit, &route->conf,
                                              &ctx->ticket))
    {
        ctx->has_state = 1;
        return NGX_DECLINED;
    }

    return ngx_http_breaker_check(r, lcf, ctx);
}


#endif /* _NGX_HTTP_BREAKER_MODULE_H_INCLUDED_ */
