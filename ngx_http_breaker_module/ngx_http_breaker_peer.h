/*
 * ngx_http_breaker_module: per-peer circuits (breaker_peers in an
 * upstream{} block).  The layer wraps the upstream's balancer the way
 * ngx_http_upstream_keepalive_module does: the directive saves the
 * upstream's init_upstream and installs its own, which wraps the
 * per-request peer init, get and free.  One circuit per peer, named
 * "<upstream>/<peer name>", in the breaker_zone named by zone=.
 *
 * What the rest of the module calls (ngx_http_breaker_module.c): the
 * directive handler (command table), the check at the end of the http{}
 * block, and the status document's peer circuits.
 */

#ifndef _NGX_HTTP_BREAKER_PEER_H_INCLUDED_
#define _NGX_HTTP_BREAKER_PEER_H_INCLUDED_


#include "ngx_edge_common.h"
#include "ngx_http_breaker_circuit.h"
#include <jansson.h>


/* breaker_peers zone=NAME [circuit parameters] [max_ejected=50%]; */
char *ngx_http_breaker_peers(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);

/*
 * After every upstream{} block is initialised (postconfiguration): an
 * upstream whose breaker_peers was overridden by a later balancer
 * directive (hash, least_conn, ...) is an error.  NGX_OK or NGX_ERROR
 * (logged).
 */
/* init_module (the master, once per cycle): every peer circuit found in
 * its zone, so workers inherit the pointers and never look one up (an old
 * cycle's worker looking up with its old layout would replace the new
 * cycle's circuit) */
ngx_int_t ngx_http_breaker_peers_init_module(ngx_cycle_t *cycle);

ngx_int_t ngx_http_breaker_peers_postconfiguration(ngx_conf_t *cf);

/* appends one object per peer circuit to the array (status document);
 * NGX_ERROR when jansson fails to allocate */
ngx_int_t ngx_http_breaker_peers_json(ngx_cycle_t *cycle, json_t *array);

/* forces the peer circuit of that name ("<upstream>/<peer>") into state
 * (FORCED_OPEN, FORCED_CLOSED, or CLOSED: automatic again); NGX_DECLINED
 * when there is no such peer circuit */
ngx_int_t ngx_http_breaker_peers_force(ngx_cycle_t *cycle, ngx_str_t *name,
    ngx_http_breaker_state_e state, ngx_log_t *log);


#endif /* _NGX_HTTP_BREAKER_PEER_H_INCLUDED_ */
