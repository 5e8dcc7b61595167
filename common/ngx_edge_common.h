/*
 * Shared definitions for the edge modules.
 *
 * Code under common/ is linked into several .so files.  nginx dlopen()s
 * modules with RTLD_GLOBAL, so an exported helper in one module would
 * interpose on the same helper in another.  Every shared function is
 * therefore declared NGX_EDGE_API: hidden visibility keeps each module's
 * copy private, and state that modules really share lives in shared memory.
 */

#ifndef _NGX_EDGE_COMMON_H_INCLUDED_
#define _NGX_EDGE_COMMON_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


#if (defined __GNUC__ || defined __clang__)
#define NGX_EDGE_API  __attribute__((visibility("hidden")))
/* a hot function's rare path kept out of it: its registers, stack frame
 * and stack protector are paid only when it runs */
#define NGX_EDGE_COLD  __attribute__((noinline, cold))
#else
#define NGX_EDGE_API
#define NGX_EDGE_COLD
#endif


/* links a pool cleanup that lives inside the caller's own allocation:
 * what ngx_pool_cleanup_add() does, without its two allocations */
static ngx_inline void
ngx_edge_pool_cleanup_link(ngx_pool_t *pool, ngx_pool_cleanup_t *cln,
    ngx_pool_cleanup_pt handler, void *data)
{
    cln->handler = handler;
    cln->data = data;
    cln->next = pool->cleanup;
    pool->cleanup = cln;
}


/* the log levels an operator may pick for a module's decision messages */
NGX_EDGE_API extern ngx_conf_enum_t  ngx_edge_log_levels[];


NGX_EDGE_API char *ngx_edge_conf_set_status(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);

/* ngx_edge_conn.c: an nginx connection around a socket a client library
 * owns (the library closes it; release never does) */
NGX_EDGE_API ngx_connection_t *ngx_edge_conn_wrap(ngx_socket_t fd,
    ngx_log_t *log, void *data, ngx_event_handler_pt read_handler,
    ngx_event_handler_pt write_handler);
NGX_EDGE_API void ngx_edge_conn_release(ngx_connection_t *c);

/* "zone=name:size" (arg starts with "zone="), at least 8 pages */
NGX_EDGE_API ngx_int_t ngx_edge_conf_parse_zone(ngx_conf_t *cf,
    ngx_str_t *arg, ngx_str_t *name, ssize_t *size);

/* password_file=: the file's content without trailing CR/LF, at most max
 * bytes, in cf->temp_pool (the caller copies it, then wipes it) */
NGX_EDGE_API ngx_int_t ngx_edge_conf_read_secret(ngx_conf_t *cf,
    ngx_str_t *path, size_t max, ngx_str_t *secret);

/* post handler: { ngx_edge_conf_check_bounds, low, high or -1 } */
NGX_EDGE_API char *ngx_edge_conf_check_bounds(ngx_conf_t *cf, void *post,
    void *data);

/* the request argument name (?name=...), %-decoded into r->pool, for the
 * modules' endpoints: NGX_DECLINED when absent */
NGX_EDGE_API ngx_int_t ngx_edge_http_arg(ngx_http_request_t *r,
    const char *name, ngx_str_t *value);


#endif /* _NGX_EDGE_COMMON_H_INCLUDED_ */
