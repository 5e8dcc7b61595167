/*
 * A request waiting in a phase handler for an outside service: see
 * ngx_edge_wait.h for the contract.
 */

#include "ngx_edge_wait.h"


static void ngx_edge_wait_cleanup(void *data);


ngx_int_t
ngx_edge_wait_init(ngx_edge_wait_t *wait, ngx_http_request_t *r,
    ngx_edge_wait_detach_pt detach, void *data)
{
    ngx_pool_cleanup_t  *cln;

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    wait->request = r;
    wait->detach = detach;
    wait->data = data;
    wait->pending = 0;
    wait->waiting = 0;

    cln->handler = ngx_edge_wait_cleanup;
    cln->data = wait;

    return NGX_OK;
}


ngx_edge_wait_t *
ngx_edge_wait_find(ngx_http_request_t *r, ngx_edge_wait_detach_pt detach)
{
    ngx_edge_wait_t     *wait;
    ngx_pool_cleanup_t  *cln;

    for (cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler != ngx_edge_wait_cleanup) {
            continue;
        }

        wait = cln->data;

        if (wait->detach == detach) {
            return wait;
        }
    }

    return NULL;
}


ngx_int_t
ngx_edge_wait_phase(ngx_edge_wait_t *wait)
{
    ngx_http_request_t  *r;

    if (wait->pending == 0) {
        return NGX_OK;
    }

    r = wait->request;

    /* the replies resume the phase engine; meanwhile nothing is written,
     * and a client that goes away is noticed (the connection's read
     * events go to the main request: a subrequest leaves them to it) */
    wait->waiting = 1;
    r->write_event_handler = ngx_http_request_empty_handler;

    if (r == r->main) {
        r->read_event_handler = ngx_http_test_reading;
    }

    return NGX_AGAIN;
}


void
ngx_edge_wait_done(ngx_edge_wait_t *wait)
{
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    if (wait->pending == 0) {
        /* a caller's bug: resuming twice would run the phases twice */
        ngx_log_error(NGX_LOG_ALERT, wait->request->connection->log, 0,
                      "edge wait: an operation finished twice");
        return;
    }

    if (--wait->pending || !wait->waiting) {
        /* more to come, or the handler is still running and will see
         * that nothing is pending */
        return;
    }

    wait->waiting = 0;

    r = wait->request;
    c = r->connection;

    if (r == r->main) {
        r->read_event_handler = ngx_http_block_reading;
    }

    r->write_event_handler = ngx_http_core_run_phases;

    ngx_http_core_run_phases(r);
    ngx_http_run_posted_requests(c);
}


void
ngx_edge_wait_cancel(ngx_edge_wait_t *wait)
{
    if (wait->pending) {
        wait->pending = 0;
        wait->waiting = 0;
        wait->detach(wait->data);
    }
}


static void
ngx_edge_wait_cleanup(void *data)
{
    /* the request is going away: replies that arrive later must find
     * nothing of it */
    ngx_edge_wait_cancel(data);
}
