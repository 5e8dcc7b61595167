/*
 * A request that waits in a phase handler for an outside service (Redis,
 * PostgreSQL): the one contract every edge module follows.
 *
 *     wait = the module's ctx member, ngx_edge_wait_init()'d once;
 *     for each operation sent:      ngx_edge_wait_add(wait);
 *     return ngx_edge_wait_phase(wait);   NGX_AGAIN while any is pending
 *     from each operation's callback: ngx_edge_wait_done(wait);
 *
 * What it guarantees:
 *   - counting: the request resumes once, when the last pending operation
 *     has finished, not at the first reply (so several commands of one
 *     request, or a command that answers while the handler is still
 *     sending others, never resume it early);
 *   - resume: through ngx_http_core_run_phases() of the waiting request
 *     (a main request or a subrequest), so that the phase handler is
 *     called again and returns its decision (a status code is then
 *     finalized by the phase engine, as for any phase handler), then the
 *     posted requests run;
 *   - client abort: while a main request waits, its read handler is
 *     ngx_http_test_reading, so a client that goes away finalizes the
 *     request at once (a subrequest leaves the connection's read events
 *     to its main request, which finalizes both);
 *   - detach: when the request goes away (abort, shutdown, any
 *     finalization) with operations pending, its pool cleanup calls the
 *     module's detach handler once, which must detach every pending
 *     operation from its client, so that no callback runs later on freed
 *     memory; ngx_edge_wait_done() is then never called for them;
 *   - internal redirects wipe module contexts but not pool cleanups:
 *     ngx_edge_wait_find() finds a module's wait again.
 *
 * What it leaves to the operation's client (ngx_edge_redis, ...): its own
 * timer.  A timer a waiting request depends on must not be cancelable
 * while the request is attached, or a graceful shutdown or reload drops
 * the request.
 */

#ifndef _NGX_EDGE_WAIT_H_INCLUDED_
#define _NGX_EDGE_WAIT_H_INCLUDED_


#include "ngx_edge_common.h"


/* called from the request's pool cleanup: detach whatever is pending */
typedef void (*ngx_edge_wait_detach_pt)(void *data);


typedef struct {
    ngx_http_request_t          *request;
    ngx_edge_wait_detach_pt      detach;
    void                        *data;         /* the module's ctx */
    ngx_uint_t                   pending;      /* operations in flight */
    unsigned                     waiting:1;    /* the handler said AGAIN */
} ngx_edge_wait_t;


/* registers the pool cleanup; NGX_ERROR on allocation failure */
NGX_EDGE_API ngx_int_t ngx_edge_wait_init(ngx_edge_wait_t *wait,
    ngx_http_request_t *r, ngx_edge_wait_detach_pt detach, void *data);

/* the wait of this module (known by its detach handler) registered on r's
 * pool, or NULL */
NGX_EDGE_API ngx_edge_wait_t *ngx_edge_wait_find(ngx_http_request_t *r,
    ngx_edge_wait_detach_pt detach);

/* a phase handler's return: NGX_AGAIN (waiting) or NGX_OK (nothing
 * pending: decide now) */
NGX_EDGE_API ngx_int_t ngx_edge_wait_phase(ngx_edge_wait_t *wait);

/* one operation finished; resumes the request when it was the last */
NGX_EDGE_API void ngx_edge_wait_done(ngx_edge_wait_t *wait);


/* a handler that fails after sending operations: detach them all, so no
 * reply resumes the request (the pool cleanup then has nothing to do) */
NGX_EDGE_API void ngx_edge_wait_cancel(ngx_edge_wait_t *wait);


#define ngx_edge_wait_add(wait)      (wait)->pending++
#define ngx_edge_wait_pending(wait)  ((wait)->pending != 0)


#endif /* _NGX_EDGE_WAIT_H_INCLUDED_ */
