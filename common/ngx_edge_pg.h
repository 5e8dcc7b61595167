/*
 * An asynchronous PostgreSQL query on nginx's event loop, built on libpq's
 * non-blocking API.
 *
 * One ngx_edge_pg_t runs one query at a time over a connection of its own:
 * PQconnectStartParams() and PQconnectPoll() driven by socket events, then
 * PQsendQuery(), PQflush() until everything is written, and
 * PQconsumeInput() / PQisBusy() / PQgetResult() until libpq has no more
 * results; the connection is closed with PQfinish() before the handler
 * runs.  A single timer bounds the whole exchange (libpq's own
 * connect_timeout works only for blocking connects).
 *
 * libpq owns the socket, and may replace it while connecting (another host
 * of a list, a retry without SSL): the socket is wrapped in an nginx
 * connection only while we wait for it, and released without being closed
 * (PQfinish() closes it).  Events are level-triggered.
 *
 * Host names are resolved when the configuration is read: libpq would
 * resolve them with a blocking getaddrinfo() inside the worker.
 *
 * The handler runs exactly once per ngx_edge_pg_query() that returned
 * NGX_OK, never from within that call, and not at all after
 * ngx_edge_pg_close():
 *   rc == NGX_OK      res is the result of the last statement
 *                     (PGRES_TUPLES_OK or PGRES_COMMAND_OK); the handler
 *                     owns it and must PQclear() it
 *   rc == NGX_ERROR   res == NULL, err says why (connect, server error, ...)
 *   rc == NGX_AGAIN   res == NULL, the exchange took longer than the timeout
 * err is valid during the call only, and never contains the password.
 */

#ifndef _NGX_EDGE_PG_H_INCLUDED_
#define _NGX_EDGE_PG_H_INCLUDED_


#include "ngx_edge_common.h"
#include "ngx_edge_stats.h"

#if defined(__has_include)
#if __has_include(<libpq-fe.h>)
#include <libpq-fe.h>
#else
#include <postgresql/libpq-fe.h>
#endif
#else
#include <libpq-fe.h>
#endif


#define NGX_EDGE_PG_ERRSTR_LEN  512


typedef struct ngx_edge_pg_s  ngx_edge_pg_t;

typedef void (*ngx_edge_pg_handler_pt)(ngx_edge_pg_t *pg, void *data,
    ngx_int_t rc, PGresult *res, ngx_str_t *err);


typedef struct {
    /* NULL-terminated, for PQconnectStartParams() */
    const char                 **keywords;
    const char                 **values;

    ngx_str_t                    peer;       /* "host:port", for logs */
} ngx_edge_pg_dsn_t;


struct ngx_edge_pg_s {
    ngx_edge_pg_dsn_t           *dsn;
    ngx_log_t                   *log;

    PGconn                      *conn;
    ngx_connection_t            *c;          /* wraps PQsocket(conn) */
    ngx_uint_t                   state;
    ngx_event_t                  timer;
    ngx_msec_t                   timeout;

    ngx_edge_pg_handler_pt       handler;
    void                        *data;
    const char                  *query;

    PGresult                    *result;     /* of the last statement */
    unsigned                     failed:1;   /* a statement failed */

    ngx_str_t                    err;
    u_char                       errstr[NGX_EDGE_PG_ERRSTR_LEN];
};


/* configuration time: a libpq connection string ("host=... dbname=...")
 * or URI; password, if not NULL, is given to libpq as the "password"
 * keyword (then conninfo must have none).  NGX_OK, NGX_DECLINED when it is
 * invalid, NGX_ERROR when out of memory; err says why, for the caller's
 * message, with every password redacted. */
NGX_EDGE_API ngx_int_t ngx_edge_pg_parse_dsn(ngx_conf_t *cf,
    ngx_str_t *conninfo, ngx_str_t *password, ngx_edge_pg_dsn_t *dsn,
    ngx_str_t *err);

/* a copy of text fit for a log line: "***" instead of every password in
 * it (the value of a "password" keyword or URI parameter, and the one in
 * a URI's "user:password@"), and instead of every occurrence of one of
 * the passwords in conninfo (libpq's messages quote pieces of it);
 * conninfo may be NULL.  NGX_ERROR when out of memory. */
NGX_EDGE_API ngx_int_t ngx_edge_pg_redact(ngx_pool_t *pool,
    ngx_str_t *conninfo, ngx_str_t *text, ngx_str_t *out);

/* configuration time: the gauge <prefix>_pg_failing{<label>="<value>"}
 * in the caller's stats zone: 1 while the last exchange of that source
 * failed, 0 once one succeeds.  The caller writes it with
 * ngx_edge_stats_set(), one writer at a time (under its own lock).  The
 * breaker's "breaker_health ready" reads every *_pg_failing gauge.
 * NGX_EDGE_STATS_NONE on error (logged to cf). */
NGX_EDGE_API ngx_edge_stats_id_t ngx_edge_pg_register_stats(ngx_conf_t *cf,
    ngx_edge_stats_t *stats, const char *prefix, const char *label,
    ngx_str_t *value);

/* worker time */

NGX_EDGE_API void ngx_edge_pg_init(ngx_edge_pg_t *pg, ngx_edge_pg_dsn_t *dsn,
    ngx_log_t *log);

/* NGX_OK: the handler will run; NGX_BUSY: a query is already running;
 * NGX_ERROR: it could not start, ngx_edge_pg_error() says why.  The query
 * must stay valid until the handler runs. */
NGX_EDGE_API ngx_int_t ngx_edge_pg_query(ngx_edge_pg_t *pg, const char *query,
    ngx_msec_t timeout, ngx_edge_pg_handler_pt handler, void *data);

NGX_EDGE_API ngx_str_t *ngx_edge_pg_error(ngx_edge_pg_t *pg);

/* aborts a running query (its handler is not called); safe to call on an
 * idle or never initialized ngx_edge_pg_t */
NGX_EDGE_API void ngx_edge_pg_close(ngx_edge_pg_t *pg);


#endif /* _NGX_EDGE_PG_H_INCLUDED_ */
