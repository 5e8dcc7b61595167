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


extern ngx_module_t  ngx_http_breaker_module;


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


#endif /* _NGX_HTTP_BREAKER_MODULE_H_INCLUDED_ */
