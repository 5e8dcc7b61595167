/*
 * nginx connections around sockets that a client library owns (hiredis,
 * libpq): nginx watches them, the library reads, writes and closes them.
 */

#include "ngx_edge_common.h"


ngx_connection_t *
ngx_edge_conn_wrap(ngx_socket_t fd, ngx_log_t *log, void *data,
    ngx_event_handler_pt read_handler, ngx_event_handler_pt write_handler)
{
    ngx_connection_t  *c;

    c = ngx_get_connection(fd, log);
    if (c == NULL) {
        return NULL;
    }

    c->data = data;
    c->log = log;
    c->read->log = log;
    c->write->log = log;
    c->read->handler = read_handler;
    c->write->handler = write_handler;

    return c;
}


void
ngx_edge_conn_release(ngx_connection_t *c)
{
    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    /* the descriptor is still open: remove it from the kernel's set */

    if (c->read->active) {
        (void) ngx_del_event(c->read, NGX_READ_EVENT, 0);
    }

    if (c->write->active) {
        (void) ngx_del_event(c->write, NGX_WRITE_EVENT, 0);
    }

    /*
     * The library closes the descriptor itself: only the nginx connection
     * is released, and fd = -1 makes a stale event in the current epoll
     * batch skip it.  Closing it here too would race with fd reuse.
     */
    ngx_free_connection(c);
    c->fd = (ngx_socket_t) -1;
}
