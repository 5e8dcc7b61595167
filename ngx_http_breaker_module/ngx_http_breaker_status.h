/*
 * ngx_http_breaker_module: what each layer of the .so (circuits, shedders)
 * gives the status and health endpoints (ngx_http_breaker_status.c).
 *
 * The three modules of the .so (ngx_http_breaker_module: circuits per route
 * and per peer; ngx_http_breaker_shed_module: shedders; and
 * ngx_http_breaker_status_module: the endpoints) meet only through these
 * functions.  Documents are built with jansson; the endpoints are not on
 * the hot path and their documents are bounded by the configuration.
 */

#ifndef _NGX_HTTP_BREAKER_STATUS_H_INCLUDED_
#define _NGX_HTTP_BREAKER_STATUS_H_INCLUDED_


#include "ngx_edge_common.h"
#include <jansson.h>


/*
 * Appends one object per circuit (route circuits, then peer circuits) to
 * the array.  Returns NGX_OK, or NGX_ERROR when jansson fails to allocate.
 */
ngx_int_t ngx_http_breaker_circuits_json(ngx_cycle_t *cycle, json_t *array);

/*
 * Forces the named circuit: state "open" (forced open), "closed" (forced
 * closed), or "auto" (back to the automatic state machine, CLOSED with an
 * empty window).  Returns NGX_OK, NGX_DECLINED when there is no such
 * circuit or state, NGX_ERROR otherwise.
 */
ngx_int_t ngx_http_breaker_circuit_force(ngx_cycle_t *cycle, ngx_str_t *name,
    ngx_str_t *state, ngx_log_t *log);

/* appends one object per shedder to the array, as above */
ngx_int_t ngx_http_breaker_shedders_json(ngx_cycle_t *cycle, json_t *array);


#endif /* _NGX_HTTP_BREAKER_STATUS_H_INCLUDED_ */
