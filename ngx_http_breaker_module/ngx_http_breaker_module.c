/*
 * ngx_http_breaker_module: circuit breaking per route, with the state in
 * shared memory so every worker agrees.
 *
 * This file holds the module's tables, the directives, the route layer
 * (the PRECONTENT handler of both layers, registered here, whose route
 * part admits a request or fails it fast: ngx_http_breaker_module.h; the
 * pool cleanup that records its upstream outcome), the variables, the
 * metrics and what the status endpoints read (ngx_http_breaker_status.h).
 * The shedder is ngx_http_breaker_shed.c.  The
 * state machine is ngx_http_breaker_circuit.c; the per-peer circuits are
 * ngx_http_breaker_peer.c.
 *
 * Why PRECONTENT: it runs after the access checks (a request the rate
 * limiter or auth refuses never takes a half-open probe) and before the
 * content handler that goes upstream (proxy_pass), whatever the location.
 */

#include "ngx_edge_common.h"
#include "ngx_edge_time.h"
#include "ngx_edge_stats.h"
#include "ngx_http_breaker_circuit.h"
#include "ngx_http_breaker_module.h"
#include "ngx_http_breaker_status.h"
#include "ngx_http_breaker_peer.h"
#include "ngx_http_breaker_shed.h"


typedef struct {
    ngx_array_t                      routes;     /* of route * */
    ngx_edge_stats_t                *stats;
    ngx_int_t                        families[5];
} ngx_http_breaker_main_conf_t;


static ngx_int_t ngx_http_breaker_route_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_breaker_refuse(ngx_http_request_t *r,
    ngx_http_breaker_loc_conf_t *lcf, ngx_http_breaker_ctx_t *ctx);
static NGX_EDGE_COLD void ngx_http_breaker_record(ngx_http_request_t *r,
    ngx_http_breaker_ctx_t *ctx, ngx_int_t outcome, int64_t latency,
    int64_t now);
static void ngx_http_breaker_finish(ngx_http_request_t *r,
    ngx_http_breaker_ctx_t *ctx);
static ngx_http_breaker_ctx_t *ngx_http_breaker_find_ctx(
    ngx_http_request_t *r);
static int64_t ngx_http_breaker_upstream_usec(ngx_http_request_t *r);
static ngx_int_t ngx_http_breaker_classify(ngx_http_request_t *r,
    ngx_http_breaker_circuit_conf_t *conf);

static ngx_int_t ngx_http_breaker_state_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static NGX_EDGE_COLD ngx_int_t ngx_http_breaker_state_variable_lookup(
    ngx_http_request_t *r, ngx_http_variable_value_t *v);
static ngx_int_t ngx_http_breaker_reason_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_breaker_retry_after_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);

static char *ngx_http_breaker_zone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_breaker_circuit(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_breaker(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_breaker_fallback(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static void ngx_http_breaker_route_transition(
    ngx_http_breaker_circuit_conf_t *conf, ngx_str_t *name,
    ngx_http_breaker_state_e from, ngx_http_breaker_state_e to);

static ngx_int_t ngx_http_breaker_add_variables(ngx_conf_t *cf);
static ngx_int_t ngx_http_breaker_init(ngx_conf_t *cf);
static void *ngx_http_breaker_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_breaker_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_breaker_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_breaker_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static ngx_int_t ngx_http_breaker_init_module(ngx_cycle_t *cycle);
static ngx_int_t ngx_http_breaker_init_process(ngx_cycle_t *cycle);


static ngx_command_t  ngx_http_breaker_commands[] = {

    { ngx_string("breaker_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE2,
      ngx_http_breaker_zone,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("breaker_circuit"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_breaker_circuit,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("breaker"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE12,
      ngx_http_breaker,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("breaker_status"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_edge_conf_set_status,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_breaker_loc_conf_t, status_code),
      NULL },

    { ngx_string("breaker_fallback"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_breaker_fallback,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("breaker_peers"),
      NGX_HTTP_UPS_CONF|NGX_CONF_1MORE,
      ngx_http_breaker_peers,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_breaker_module_ctx = {
    ngx_http_breaker_add_variables,        /* preconfiguration */
    ngx_http_breaker_init,                 /* postconfiguration */

    ngx_http_breaker_create_main_conf,     /* create main configuration */
    ngx_http_breaker_init_main_conf,       /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_breaker_create_loc_conf,      /* create location configuration */
    ngx_http_breaker_merge_loc_conf        /* merge location configuration */
};


ngx_module_t  ngx_http_breaker_module = {
    NGX_MODULE_V1,
    &ngx_http_breaker_module_ctx,          /* module context */
    ngx_http_breaker_commands,             /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    ngx_http_breaker_init_module,          /* init module */
    ngx_http_breaker_init_process,         /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_http_variable_t  ngx_http_breaker_vars[] = {

    { ngx_string("breaker_state"), NULL,
      ngx_http_breaker_state_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("breaker_reason"), NULL,
      ngx_http_breaker_reason_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("breaker_retry_after"), NULL,
      ngx_http_breaker_retry_after_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


static const char  *ngx_http_breaker_outcome_names[] = {
    "success", "failure", "connect_error", "timeout", "ignored"
};


/* call durations, microseconds, exposed as seconds */
static const uint64_t  ngx_http_breaker_duration_bounds[] = {
    5000, 10000, 25000, 50000, 100000, 250000, 500000,
    1000000, 2500000, 5000000, 10000000, 30000000
};


#define NGX_HTTP_BREAKER_NO_OUTCOME  (-1)


/* $breaker_reason's code of a circuit's reason (the route's own codes:
 * ngx_http_breaker_module.h) */
#define ngx_http_breaker_circuit_reason_of(c)                                \
    (NGX_HTTP_BREAKER_ROUTE_CIRCUIT + ngx_http_breaker_circuit_reason_code(c))


/* $breaker_state's values by state, from the state names (at
 * preconfiguration) */
static ngx_http_variable_value_t
    ngx_http_breaker_state_values[NGX_HTTP_BREAKER_NSTATES];


/* usec to msec, rounded up (a Retry-After rounded up to seconds from it
 * is the same as from the usec); 0 for none */
static ngx_inline uint32_t
ngx_http_breaker_msec_up(int64_t usec)
{
    return usec > 0 ? (uint32_t) ((usec + 999) / 1000) : 0;
}


/* the route layer */


static ngx_int_t
ngx_http_breaker_route_handler(ngx_http_request_t *r)
{
    return ngx_http_breaker_route_phase(r,
               ngx_http_get_module_loc_conf(r, ngx_http_breaker_module), NULL);
}


/* a circuit not simply CLOSED: admitted (a probe, forced closed, ...) or
 * refused; apart from the handler, whose common path stays small */
ngx_int_t
ngx_http_breaker_check(ngx_http_request_t *r,
    ngx_http_breaker_loc_conf_t *lcf, ngx_http_breaker_ctx_t *ctx)
{
    int64_t                    now, retry;
    ngx_int_t                  rc;
    ngx_http_breaker_route_t  *route;

    route = ctx->route;
    now = ngx_edge_mono_usec();

    rc = ngx_http_breaker_circuit_admit(route->circuit, &route->conf,
                                        &route->name, now, &ctx->ticket,
                                        &retry, r->connection->log);

    ctx->state = ngx_http_breaker_circuit_state(route->circuit, &route->conf,
                                                now);
    ctx->has_state = 1;

    if (rc == NGX_OK) {
        if (ctx->state != NGX_HTTP_BREAKER_CLOSED) {
            ctx->reason = ngx_http_breaker_circuit_reason_of(route->circuit);
        }

        return NGX_DECLINED;
    }

    ctx->refused = 1;
    ctx->retry_after = ngx_http_breaker_msec_up(retry);

    switch (ctx->state) {

    case NGX_HTTP_BREAKER_FORCED_OPEN:
        ctx->reason = NGX_HTTP_BREAKER_ROUTE_FORCED;
        break;

    case NGX_HTTP_BREAKER_HALF_OPEN:
        /* the probes are taken: try again in a moment */
        ctx->reason = NGX_HTTP_BREAKER_ROUTE_PROBES;
        ctx->retry_after = 1000;
        break;

    default:
        ctx->state = NGX_HTTP_BREAKER_OPEN;
        ctx->reason = ngx_http_breaker_circuit_reason_of(route->circuit);
        break;
    }

    ngx_http_breaker_stats_rejected(&route->stats);

    return ngx_http_breaker_refuse(r, lcf, ctx);
}


static ngx_int_t
ngx_http_breaker_refuse(ngx_http_request_t *r,
    ngx_http_breaker_loc_conf_t *lcf, ngx_http_breaker_ctx_t *ctx)
{
    u_char           *p;
    ngx_str_t         uri, args;
    ngx_table_elt_t  *h;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "breaker \"%V\" refused, %V, retry %uD msec",
                   &ctx->route->name, ngx_http_breaker_state_name(ctx->state),
                   ctx->retry_after);

    if (lcf->fallback.len) {
        uri = lcf->fallback;

        if (uri.data[0] == '@') {
            (void) ngx_http_named_location(r, &uri);

        } else {
            ngx_str_null(&args);
            ngx_http_split_args(r, &uri, &args);
            (void) ngx_http_internal_redirect(r, &uri, &args);
        }

        ngx_http_finalize_request(r, NGX_DONE);
        return NGX_DONE;
    }

    if (ctx->retry_after > 0) {
        p = ngx_pnalloc(r->pool, NGX_INT64_LEN);
        if (p == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        h->hash = 1;
#if (nginx_version >= 1023000)
        h->next = NULL;
#endif
        ngx_str_set(&h->key, "Retry-After");
        h->value.data = p;
        h->value.len = ngx_sprintf(p, "%uD",
                                   (ctx->retry_after + 999) / 1000)
                       - p;
    }

    return lcf->status_code;
}


/*
 * The request's pool goes away (data: the ctx): the outcome is recorded
 * here, for the main request (just logged: ngx_http_free_request logs it
 * and then destroys its pool, whose memory is whole while the cleanups
 * run) and for a subrequest (its pool is the main request's).  A request
 * that never went upstream gives its probe back.
 */
void
ngx_http_breaker_cleanup(void *data)
{
    ngx_http_breaker_ctx_t  *ctx = data;

    if (!ctx->done) {
        ngx_http_breaker_finish(ctx->request, ctx);
    }
}


static void
ngx_http_breaker_finish(ngx_http_request_t *r, ngx_http_breaker_ctx_t *ctx)
{
    int64_t                    latency, now;
    ngx_int_t                  outcome;
    ngx_http_breaker_route_t  *route;

    ctx->done = 1;

    route = ctx->route;

    if (route->circuit == NULL || !ctx->ticket.admitted) {
        return;
    }

    outcome = ngx_http_breaker_classify(r, &route->conf);

    if (outcome == NGX_HTTP_BREAKER_NO_OUTCOME) {
        /* never went upstream (a redirect, an error page): no call */
        ngx_http_breaker_circuit_cancel(route->circuit, &ctx->ticket);
        return;
    }

    latency = ngx_http_breaker_upstream_usec(r);

    ngx_http_breaker_stats_call(&route->stats, outcome, latency);

    now = ngx_edge_mono_usec_cached();

    if (outcome == NGX_HTTP_BREAKER_SUCCESS
        && ngx_http_breaker_circuit_record_quiet(&route->quiet, &route->conf,
                                                 &ctx->ticket, latency, now))
    {
        return;
    }

    ngx_http_breaker_record(r, ctx, outcome, latency, now);
}


/* an outcome judged on the window (not a fast success of a quiet epoch):
 * out of line, the cleanup's common path stays small */
static NGX_EDGE_COLD void
ngx_http_breaker_record(ngx_http_request_t *r, ngx_http_breaker_ctx_t *ctx,
    ngx_int_t outcome, int64_t latency, int64_t now)
{
    ngx_http_breaker_route_t  *route;

    route = ctx->route;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "breaker \"%V\" outcome %s, %L usec", &route->name,
                   ngx_http_breaker_outcome_names[outcome], latency);

    ngx_http_breaker_circuit_record(route->circuit, &route->conf,
                                    &route->name, &ctx->ticket, outcome,
                                    latency, now, &route->quiet,
                                    r->connection->log);
}


/* the time spent upstream over every attempt, usec (the states hold
 * msec; an attempt cut short has none: the time since it started) */
static int64_t
ngx_http_breaker_upstream_usec(ngx_http_request_t *r)
{
    ngx_uint_t                   i, n;
    ngx_msec_t                   ms;
    ngx_http_upstream_state_t   *state;

    state = r->upstream_states->elts;
    n = r->upstream_states->nelts;

    if (n == 1 && state[0].response_time != (ngx_msec_t) -1) {
        /* one attempt, the common case */
        return (int64_t) state[0].response_time * 1000;
    }

    ms = 0;

    for (i = 0; i < n; i++) {
        if (state[i].response_time != (ngx_msec_t) -1) {
            ms += state[i].response_time;

        } else if (i == n - 1 && r->upstream) {
            ms += ngx_current_msec - r->upstream->start_time;
        }
    }

    return (int64_t) ms * 1000;
}


/*
 * The request's outcome from its upstream states.  The route circuit
 * judges the request as the client saw it: the last attempt counts
 * (a retry that succeeded is a success).  No response and 504: a
 * timeout; no response and 502: a connect (or read) error.  The client
 * gone before the upstream answered: ignored.
 */
static ngx_int_t
ngx_http_breaker_classify(ngx_http_request_t *r,
    ngx_http_breaker_circuit_conf_t *conf)
{
    ngx_http_upstream_state_t   *last;

    if (r->upstream_states == NULL || r->upstream_states->nelts == 0) {
        return NGX_HTTP_BREAKER_NO_OUTCOME;
    }

    last = (ngx_http_upstream_state_t *) r->upstream_states->elts
           + r->upstream_states->nelts - 1;

    if (last->status == 0
        || (last->header_time == (ngx_msec_t) -1
            && (r->connection->error
                || r->headers_out.status == NGX_HTTP_CLIENT_CLOSED_REQUEST)))
    {
        /* the client went away before the upstream answered */
        return NGX_HTTP_BREAKER_IGNORED;
    }

    if (last->header_time == (ngx_msec_t) -1) {
        if (last->status == NGX_HTTP_GATEWAY_TIME_OUT) {
            return NGX_HTTP_BREAKER_TIMEOUT;
        }

        if (last->status == NGX_HTTP_BAD_GATEWAY) {
            return NGX_HTTP_BREAKER_CONNECT_ERROR;
        }
    }

    if (ngx_http_breaker_circuit_failure_status(conf, last->status)) {
        return NGX_HTTP_BREAKER_FAILURE;
    }

    return NGX_HTTP_BREAKER_SUCCESS;
}


ngx_http_breaker_ctx_t *
ngx_http_breaker_get_ctx(ngx_http_request_t *r)
{
    ngx_http_breaker_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_breaker_module);

    if (ctx != NULL) {
        return ctx;
    }

    if (!r->internal) {
        /* neither redirected nor a subrequest: its ctx is where it was set */
        return NULL;
    }

    /* an internal redirect clears the module contexts, not the pool */

    ctx = ngx_http_breaker_find_ctx(r);

    if (ctx != NULL) {
        ngx_http_set_ctx(r, ctx, ngx_http_breaker_module);
    }

    return ctx;
}


/* the request's ctx from the pool's cleanups (a subrequest shares its
 * main request's pool: the cleanup's data tells whose it is) */
static ngx_http_breaker_ctx_t *
ngx_http_breaker_find_ctx(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t  *cln;

    for (cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_http_breaker_cleanup
            && ((ngx_http_breaker_ctx_t *) cln->data)->request == r)
        {
            return (ngx_http_breaker_ctx_t *) cln;
        }
    }

    return NULL;
}


/* variables */


static ngx_http_breaker_ctx_t *
ngx_http_breaker_variable_ctx(ngx_http_request_t *r,
    ngx_http_breaker_ctx_t *tmp)
{
    ngx_http_breaker_ctx_t           *ctx;
    ngx_http_breaker_route_t         *route;
    ngx_http_breaker_loc_conf_t      *lcf;
    ngx_http_breaker_circuit_info_t   info;

    ctx = ngx_http_breaker_get_ctx(r);

    if (ctx != NULL) {
        return ctx->has_state ? ctx : NULL;
    }

    /* not checked (yet): the state of this location's circuit now */

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_breaker_module);
    route = lcf->route;

    if (route == NULL || route->circuit == NULL) {
        return NULL;
    }

    ngx_memzero(tmp, sizeof(ngx_http_breaker_ctx_t));

    ngx_http_breaker_circuit_info(route->circuit, &route->conf,
                                  ngx_edge_mono_usec(), &info);

    tmp->route = route;
    tmp->state = info.state;
    tmp->reason = (info.state == NGX_HTTP_BREAKER_CLOSED)
                  ? NGX_HTTP_BREAKER_ROUTE_NONE
                  : ngx_http_breaker_circuit_reason_of(route->circuit);
    tmp->retry_after = ngx_http_breaker_msec_up(info.until_half_open);
    tmp->has_state = 1;

    return tmp;
}


static ngx_int_t
ngx_http_breaker_state_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_breaker_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_breaker_module);

    if (ctx == NULL || !ctx->has_state) {
        /* redirected, not checked (yet), or no circuit */
        return ngx_http_breaker_state_variable_lookup(r, v);
    }

    /* read with every response in a header or the log: a prepared value */
    *v = ngx_http_breaker_state_values[ctx->state];

    return NGX_OK;
}


/* the state variable of a request whose ctx is not at hand (the checked
 * request's ctx after an internal redirect, or the circuit's state now);
 * out of line: its addressed local would give the variable's common path
 * a stack canary */
static ngx_int_t
ngx_http_breaker_state_variable_lookup(ngx_http_request_t *r,
    ngx_http_variable_value_t *v)
{
    ngx_str_t               *name;
    ngx_http_breaker_ctx_t  *ctx, tmp;

    ctx = ngx_http_breaker_variable_ctx(r, &tmp);

    if (ctx == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    name = ngx_http_breaker_state_name(ctx->state);

    v->data = name->data;
    v->len = name->len;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


static ngx_int_t
ngx_http_breaker_reason_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    const char              *reason;
    ngx_http_breaker_ctx_t  *ctx, tmp;

    ctx = ngx_http_breaker_variable_ctx(r, &tmp);

    if (ctx == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    switch (ctx->reason) {

    case NGX_HTTP_BREAKER_ROUTE_NONE:
        reason = "";
        break;

    case NGX_HTTP_BREAKER_ROUTE_FORCED:
        reason = "forced";
        break;

    case NGX_HTTP_BREAKER_ROUTE_PROBES:
        reason = "probes";
        break;

    default:
        reason = ngx_http_breaker_reason_name(ctx->reason
                                              - NGX_HTTP_BREAKER_ROUTE_CIRCUIT);
        break;
    }

    v->data = (u_char *) reason;
    v->len = ngx_strlen(reason);
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


static ngx_int_t
ngx_http_breaker_retry_after_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                  *p;
    ngx_http_breaker_ctx_t  *ctx, tmp;

    ctx = ngx_http_breaker_variable_ctx(r, &tmp);

    if (ctx == NULL || ctx->retry_after == 0
        || (ctx != &tmp && !ctx->refused))
    {
        v->not_found = 1;
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, NGX_INT64_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    v->data = p;
    v->len = ngx_sprintf(p, "%uD", (ctx->retry_after + 999) / 1000) - p;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


/* metrics */


ngx_int_t
ngx_http_breaker_stats_add(ngx_conf_t *cf, ngx_str_t *name,
    ngx_http_breaker_stats_t *bst)
{
    ngx_str_t                      values[2];
    ngx_uint_t                     i;
    ngx_edge_stats_family_t        family;
    ngx_http_breaker_main_conf_t  *bmcf;

    static const char  *circuit_to[] = { "circuit", "to", NULL };
    static const char  *circuit_outcome[] = { "circuit", "outcome", NULL };
    static const char  *circuit[] = { "circuit", NULL };

    bmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_breaker_module);

    if (bmcf->stats == NULL) {
        bmcf->stats = ngx_edge_stats_create(cf, "breaker",
                                            &ngx_http_breaker_module);
        if (bmcf->stats == NULL) {
            return NGX_ERROR;
        }

        ngx_memzero(&family, sizeof(ngx_edge_stats_family_t));
        family.name = "breaker_transitions_total";
        family.help = "Circuit state transitions, by the state entered.";
        family.type = NGX_EDGE_STATS_COUNTER;
        family.labels = circuit_to;

        bmcf->families[0] = ngx_edge_stats_add_family(cf, bmcf->stats,
                                                      &family);

        family.name = "breaker_calls_total";
        family.help = "Upstream calls through a circuit, by outcome.";
        family.labels = circuit_outcome;

        bmcf->families[1] = ngx_edge_stats_add_family(cf, bmcf->stats,
                                                      &family);

        family.name = "breaker_rejected_total";
        family.help = "Requests refused by an open circuit.";
        family.labels = circuit;

        bmcf->families[2] = ngx_edge_stats_add_family(cf, bmcf->stats,
                                                      &family);

        family.name = "breaker_state";
        family.help = "Circuit state: 0 closed, 1 open, 2 half_open, "
                      "3 forced_open, 4 forced_closed, 5 disabled, "
                      "6 metrics_only.";
        family.type = NGX_EDGE_STATS_GAUGE;

        bmcf->families[3] = ngx_edge_stats_add_family(cf, bmcf->stats,
                                                      &family);

        family.name = "breaker_call_duration_seconds";
        family.help = "Time spent upstream by the calls through a circuit.";
        family.type = NGX_EDGE_STATS_HISTOGRAM;
        family.bounds = ngx_http_breaker_duration_bounds;
        family.nbounds = sizeof(ngx_http_breaker_duration_bounds)
                         / sizeof(uint64_t);
        family.scale = 1000000;

        bmcf->families[4] = ngx_edge_stats_add_family(cf, bmcf->stats,
                                                      &family);

        for (i = 0; i < 5; i++) {
            if (bmcf->families[i] == NGX_ERROR) {
                return NGX_ERROR;
            }
        }
    }

    bst->stats = bmcf->stats;
    bst->worker = 0;
    values[0] = *name;

    for (i = 0; i < NGX_HTTP_BREAKER_NSTATES; i++) {
        values[1] = *ngx_http_breaker_state_name(i);

        bst->transitions[i] = ngx_edge_stats_add_series(cf, bmcf->stats,
                                                        bmcf->families[0],
                                                        values);
        if (bst->transitions[i] == NGX_EDGE_STATS_NONE) {
            return NGX_ERROR;
        }
    }

    for (i = 0; i < NGX_HTTP_BREAKER_NOUTCOMES; i++) {
        values[1].data = (u_char *) ngx_http_breaker_outcome_names[i];
        values[1].len = ngx_strlen(ngx_http_breaker_outcome_names[i]);

        bst->calls[i] = ngx_edge_stats_add_series(cf, bmcf->stats,
                                                  bmcf->families[1], values);
        if (bst->calls[i] == NGX_EDGE_STATS_NONE) {
            return NGX_ERROR;
        }
    }

    bst->rejected = ngx_edge_stats_add_series(cf, bmcf->stats,
                                              bmcf->families[2], values);
    bst->state = ngx_edge_stats_add_series(cf, bmcf->stats,
                                           bmcf->families[3], values);
    bst->duration = ngx_edge_stats_add_series(cf, bmcf->stats,
                                              bmcf->families[4], values);

    if (bst->rejected == NGX_EDGE_STATS_NONE
        || bst->state == NGX_EDGE_STATS_NONE
        || bst->duration == NGX_EDGE_STATS_NONE)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


void
ngx_http_breaker_stats_transition(ngx_http_breaker_stats_t *bst,
    ngx_http_breaker_state_e from, ngx_http_breaker_state_e to)
{
    if (bst->stats == NULL) {
        return;
    }

    ngx_edge_stats_add(bst->stats, bst->transitions[to], 1);

    /* the gauge is a sum over workers: each winner adds its step */
    ngx_edge_stats_add(bst->stats, bst->state,
                       (int64_t) to - (int64_t) from);
}


void
ngx_http_breaker_stats_resolve(ngx_http_breaker_stats_t *bst)
{
    ngx_uint_t  i;

    for (i = 0; i < NGX_HTTP_BREAKER_NOUTCOMES; i++) {
        bst->calls_ref[i] = ngx_edge_stats_ref(bst->stats, bst->calls[i]);
    }

    ngx_edge_stats_hist_ref(bst->stats, bst->duration, &bst->duration_ref);

    bst->worker = ngx_worker + 1;
}


void
ngx_http_breaker_stats_rejected(ngx_http_breaker_stats_t *bst)
{
    if (bst->stats == NULL) {
        return;
    }

    ngx_edge_stats_add(bst->stats, bst->rejected, 1);
}


static void
ngx_http_breaker_route_transition(ngx_http_breaker_circuit_conf_t *conf,
    ngx_str_t *name, ngx_http_breaker_state_e from,
    ngx_http_breaker_state_e to)
{
    ngx_http_breaker_route_t  *route = conf->data;

    if (conf->mode != NGX_HTTP_BREAKER_CLOSED) {
        /* the gauge shows the configured mode, whatever is forced */
        ngx_edge_stats_add(route->stats.stats, route->stats.transitions[to],
                           1);
        return;
    }

    ngx_http_breaker_stats_transition(&route->stats, from, to);
}


/*
 * The state gauge starts from the stored state of each circuit: at the
 * first start it is 0 (closed), after a reload the circuit may be open
 * and the stats zone new (its catalog changed).  Run in the master after
 * the zones are mapped, before the workers exist; for the route and the
 * peer circuits.
 */
void
ngx_http_breaker_stats_sync_state(ngx_cycle_t *cycle,
    ngx_http_breaker_stats_t *bst, ngx_http_breaker_circuit_t *c,
    ngx_http_breaker_circuit_conf_t *conf)
{
    int64_t                   cur;
    ngx_str_t                 name = ngx_string("edge_stats_breaker");
    ngx_uint_t                i;
    ngx_list_part_t          *part;
    ngx_shm_zone_t           *zone;
    ngx_edge_stats_sh_t      *sh;

    if (bst->stats == NULL || bst->state < 0) {
        return;
    }

    part = &cycle->shared_memory.part;
    zone = part->elts;
    sh = NULL;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            zone = part->elts;
            i = 0;
        }

        if (zone[i].shm.name.len == name.len
            && ngx_strncmp(zone[i].shm.name.data, name.data, name.len) == 0)
        {
            sh = ngx_edge_stats_zone(&zone[i]);
            break;
        }
    }

    if (sh == NULL || (ngx_uint_t) bst->state >= sh->nseries) {
        return;
    }

    cur = ngx_edge_stats_read(sh, &sh->series[bst->state], 0);

    ngx_edge_stats_add(bst->stats, bst->state,
                       (int64_t) ngx_http_breaker_circuit_stored_state(c, conf)
                       - cur);
}


/* status endpoint (ngx_http_breaker_status.h) */


static ngx_http_breaker_main_conf_t *
ngx_http_breaker_cycle_main_conf(ngx_cycle_t *cycle)
{
    if (cycle->conf_ctx == NULL) {
        return NULL;
    }

    return ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_breaker_module);
}


static json_t *
ngx_http_breaker_route_json(ngx_http_breaker_route_t *route, int64_t now)
{
    json_t                           *o;
    ngx_http_breaker_circuit_info_t   info;

    ngx_http_breaker_circuit_info(route->circuit, &route->conf, now, &info);

    o = json_object();
    if (o == NULL) {
        return NULL;
    }

    if (json_object_set_new(o, "name",
            json_stringn((char *) route->name.data, route->name.len))
        || json_object_set_new(o, "layer", json_string("route"))
        || json_object_set_new(o, "zone",
               json_stringn((char *) route->zone->shm.name.data,
                            route->zone->shm.name.len))
        || ngx_http_breaker_circuit_json_fields(o, &info, &route->conf)
           != 0)
    {
        json_decref(o);
        return NULL;
    }

    return o;
}


/* the fields of every circuit, route or peer, in the status document:
 * 0, or -1 when jansson failed */

int
ngx_http_breaker_circuit_json_fields(json_t *o,
    ngx_http_breaker_circuit_info_t *info,
    ngx_http_breaker_circuit_conf_t *conf)
{
    ngx_str_t  *state;

    state = ngx_http_breaker_state_name(info->state);

    if (json_object_set_new(o, "state",
               json_stringn((char *) state->data, state->len))
        || json_object_set_new(o, "reason",
               json_string(info->reason ? info->reason : ""))
        || json_object_set_new(o, "calls", json_integer(info->calls))
        || json_object_set_new(o, "failures", json_integer(info->failures))
        || json_object_set_new(o, "slow", json_integer(info->slow))
        || json_object_set_new(o, "failure_rate",
                               json_integer(info->failure_rate))
        || json_object_set_new(o, "slow_rate",
                               json_integer(info->slow_rate))
        || json_object_set_new(o, "until_half_open_ms",
                               json_integer(info->until_half_open / 1000))
        || json_object_set_new(o, "consecutive_opens",
                               json_integer(info->consecutive_opens))
        || json_object_set_new(o, "generation",
                               json_integer(info->generation))
        || json_object_set_new(o, "min_calls",
                               json_integer(conf->min_calls))
        || json_object_set_new(o, "failure_rate_threshold",
                               json_integer(conf->failure_rate))
        || json_object_set_new(o, "slow_rate_threshold",
                               json_integer(conf->slow_rate))
        || json_object_set_new(o, "probes", json_integer(conf->probes)))
    {
        return -1;
    }

    return 0;
}


ngx_int_t
ngx_http_breaker_circuits_json(ngx_cycle_t *cycle, json_t *array)
{
    int64_t                        now;
    json_t                        *o;
    ngx_uint_t                     i;
    ngx_http_breaker_route_t     **routes;
    ngx_http_breaker_main_conf_t  *bmcf;

    bmcf = ngx_http_breaker_cycle_main_conf(cycle);

    if (bmcf == NULL) {
        return NGX_OK;
    }

    now = ngx_edge_mono_usec();
    routes = bmcf->routes.elts;

    for (i = 0; i < bmcf->routes.nelts; i++) {
        if (routes[i]->circuit == NULL) {
            continue;
        }

        o = ngx_http_breaker_route_json(routes[i], now);

        if (o == NULL || json_array_append_new(array, o) != 0) {
            return NGX_ERROR;
        }
    }

    return ngx_http_breaker_peers_json(cycle, array);
}


ngx_int_t
ngx_http_breaker_circuit_force(ngx_cycle_t *cycle, ngx_str_t *name,
    ngx_str_t *state, ngx_log_t *log)
{
    ngx_uint_t                     i;
    ngx_http_breaker_route_t     **routes;
    ngx_http_breaker_state_e       from, to;
    ngx_http_breaker_main_conf_t  *bmcf;

    if (state->len == 4 && ngx_strncmp(state->data, "open", 4) == 0) {
        to = NGX_HTTP_BREAKER_FORCED_OPEN;

    } else if (state->len == 6 && ngx_strncmp(state->data, "closed", 6) == 0)
    {
        to = NGX_HTTP_BREAKER_FORCED_CLOSED;

    } else if (state->len == 4 && ngx_strncmp(state->data, "auto", 4) == 0) {
        to = NGX_HTTP_BREAKER_CLOSED;

    } else {
        return NGX_DECLINED;
    }

    bmcf = ngx_http_breaker_cycle_main_conf(cycle);

    if (bmcf == NULL) {
        return NGX_DECLINED;
    }

    routes = bmcf->routes.elts;

    for (i = 0; i < bmcf->routes.nelts; i++) {
        if (routes[i]->name.len != name->len
            || ngx_strncmp(routes[i]->name.data, name->data, name->len) != 0)
        {
            continue;
        }

        if (routes[i]->circuit == NULL) {
            return NGX_ERROR;
        }

        from = ngx_http_breaker_circuit_force_state(routes[i]->circuit, to,
                                                    &routes[i]->name, log);

        ngx_http_breaker_route_transition(&routes[i]->conf, &routes[i]->name,
                                          from, to);
        return NGX_OK;
    }

    /* the peer layer's circuits (ngx_http_breaker_peer.c) */

    return ngx_http_breaker_peers_force(cycle, name, to, log);
}


/* configuration */


static char *
ngx_http_breaker_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ssize_t          size;
    ngx_str_t       *value;
    ngx_shm_zone_t  *zone;

    value = cf->args->elts;

    size = ngx_parse_size(&value[2]);

    if (size == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid breaker_zone size \"%V\"", &value[2]);
        return NGX_CONF_ERROR;
    }

    if (size < (ssize_t) (8 * ngx_pagesize)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "breaker_zone \"%V\" is too small \"%V\", "
                           "it must be at least %uzk",
                           &value[1], &value[2], 8 * ngx_pagesize / 1024);
        return NGX_CONF_ERROR;
    }

    zone = ngx_http_breaker_zone_add(cf, &value[1]);
    if (zone == NULL) {
        return NGX_CONF_ERROR;
    }

    if (zone->shm.size != 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "duplicate breaker_zone \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    zone->shm.size = size;

    return NGX_CONF_OK;
}


static char *
ngx_http_breaker_circuit(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_breaker_main_conf_t *bmcf = conf;

    char                      *rv;
    ngx_int_t                  rc;
    ngx_str_t                 *value, zone;
    ngx_uint_t                 i;
    ngx_http_breaker_route_t  *route, **routes, **rp;

    value = cf->args->elts;

    routes = bmcf->routes.elts;

    for (i = 0; i < bmcf->routes.nelts; i++) {
        if (routes[i]->name.len == value[1].len
            && ngx_strncmp(routes[i]->name.data, value[1].data,
                           value[1].len) == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate breaker_circuit \"%V\"", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    route = ngx_pcalloc(cf->pool, sizeof(ngx_http_breaker_route_t));
    if (route == NULL) {
        return NGX_CONF_ERROR;
    }

    route->name = value[1];
    ngx_http_breaker_circuit_conf_init(&route->conf);
    ngx_str_null(&zone);

    for (i = 2; i < cf->args->nelts; i++) {

        if (value[i].len > 5 && ngx_strncmp(value[i].data, "zone=", 5) == 0) {
            zone.data = value[i].data + 5;
            zone.len = value[i].len - 5;
            continue;
        }

        rc = ngx_http_breaker_circuit_conf_parse(cf, &route->conf, &value[i]);

        if (rc == NGX_ERROR) {
            return NGX_CONF_ERROR;
        }

        if (rc == NGX_DECLINED) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\" in "
                               "\"breaker_circuit\"", &value[i]);
            return NGX_CONF_ERROR;
        }
    }

    if (zone.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "breaker_circuit \"%V\" has no \"zone=\"",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    rv = ngx_http_breaker_circuit_conf_check(cf, &route->conf);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    route->zone = ngx_http_breaker_zone_add(cf, &zone);
    if (route->zone == NULL) {
        return NGX_CONF_ERROR;
    }

    route->conf.transition = ngx_http_breaker_route_transition;
    route->conf.data = route;

    if (ngx_http_breaker_stats_add(cf, &route->name, &route->stats)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    rp = ngx_array_push(&bmcf->routes);
    if (rp == NULL) {
        return NGX_CONF_ERROR;
    }

    *rp = route;

    return NGX_CONF_OK;
}


static char *
ngx_http_breaker(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_breaker_loc_conf_t *lcf = conf;

    ngx_str_t  *value;

    if (lcf->set) {
        return "is duplicate";
    }

    value = cf->args->elts;

    lcf->set = 1;
    lcf->file = cf->conf_file->file.name.data;
    lcf->line = cf->conf_file->line;
    lcf->subrequests = 0;

    if (value[1].len == 3 && ngx_strncmp(value[1].data, "off", 3) == 0) {
        if (cf->args->nelts > 2) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\" after \"off\"",
                               &value[2]);
            return NGX_CONF_ERROR;
        }

        ngx_str_null(&lcf->name);
        return NGX_CONF_OK;
    }

    lcf->name = value[1];

    if (cf->args->nelts > 2) {
        if (value[2].len == 11
            && ngx_strncmp(value[2].data, "subrequests", 11) == 0)
        {
            lcf->subrequests = 1;

        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\" in \"breaker\"",
                               &value[2]);
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_breaker_fallback(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_breaker_loc_conf_t *lcf = conf;

    ngx_str_t  *value;

    if (lcf->fallback.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len == 3 && ngx_strncmp(value[1].data, "off", 3) == 0) {
        lcf->fallback.data = (u_char *) "";
        lcf->fallback.len = 0;
        return NGX_CONF_OK;
    }

    if (value[1].data[0] != '/' && value[1].data[0] != '@') {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid breaker_fallback \"%V\", it must be "
                           "a URI starting with \"/\" or a named location "
                           "starting with \"@\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    if (value[1].len == 1 && value[1].data[0] == '@') {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid breaker_fallback \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    lcf->fallback = value[1];

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_breaker_add_variables(ngx_conf_t *cf)
{
    ngx_str_t            *name;
    ngx_uint_t            i;
    ngx_http_variable_t  *var, *v;

    for (i = 0; i < NGX_HTTP_BREAKER_NSTATES; i++) {
        name = ngx_http_breaker_state_name(i);
        ngx_http_breaker_state_values[i].len = name->len;
        ngx_http_breaker_state_values[i].data = name->data;
        ngx_http_breaker_state_values[i].valid = 1;
        ngx_http_breaker_state_values[i].no_cacheable = 1;
        ngx_http_breaker_state_values[i].not_found = 0;
    }

    for (v = ngx_http_breaker_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_breaker_init(ngx_conf_t *cf)
{
    ngx_uint_t                     routes, shedders;
    ngx_http_handler_pt           *h;
    ngx_http_core_main_conf_t     *cmcf;
    ngx_http_breaker_main_conf_t  *bmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);
    bmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_breaker_module);

    routes = (bmcf->routes.nelts != 0);
    shedders = ngx_http_breaker_shed_configured(cf);

    if (!routes && !shedders) {
        /* no breaker_circuit, no breaker_shedder: no handler on any
         * request (the per-peer circuits wrap the balancer) */
        return ngx_http_breaker_peers_postconfiguration(cf);
    }

    /*
     * The handlers of a phase run from the last registered to the first:
     * ours goes first in the array, so it runs after every other
     * PRECONTENT handler whatever the load_module order (the cache's
     * lookup, try_files, mirror): a request answered from the cache
     * never takes a permit or a probe, nor is refused.
     */

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_PRECONTENT_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h = cmcf->phases[NGX_HTTP_PRECONTENT_PHASE].handlers.elts;
    ngx_memmove(&h[1], &h[0],
                (cmcf->phases[NGX_HTTP_PRECONTENT_PHASE].handlers.nelts - 1)
                * sizeof(ngx_http_handler_pt));

    *h = !shedders ? ngx_http_breaker_route_handler
         : !routes ? ngx_http_breaker_shed_handler
         : ngx_http_breaker_shed_route_handler;

    return ngx_http_breaker_peers_postconfiguration(cf);
}


static void *
ngx_http_breaker_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_breaker_main_conf_t  *bmcf;

    bmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_breaker_main_conf_t));
    if (bmcf == NULL) {
        return NULL;
    }

    if (ngx_array_init(&bmcf->routes, cf->pool, 4,
                       sizeof(ngx_http_breaker_route_t *))
        != NGX_OK)
    {
        return NULL;
    }

    return bmcf;
}


/* every breaker zone named (by breaker_circuit or breaker_peers) must be
 * declared by breaker_zone; the http block is parsed whole by now */
static char *
ngx_http_breaker_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_shm_zone_t   *zone;

    part = &cf->cycle->shared_memory.part;
    zone = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            zone = part->elts;
            i = 0;
        }

        if (zone[i].tag == &ngx_http_breaker_module
            && zone[i].shm.size == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "breaker zone \"%V\" is used but not "
                               "declared by \"breaker_zone\"",
                               &zone[i].shm.name);
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_breaker_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_breaker_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_breaker_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->name = { 0, NULL };
     *     conf->route = NULL;
     *     conf->fallback = { 0, NULL };
     *     conf->set = 0;
     */

    conf->subrequests = NGX_CONF_UNSET;
    conf->status_code = NGX_CONF_UNSET_UINT;

    return conf;
}


static ngx_int_t
ngx_http_breaker_resolve(ngx_conf_t *cf, ngx_http_breaker_loc_conf_t *lcf)
{
    ngx_uint_t                     i;
    ngx_http_breaker_route_t     **routes;
    ngx_http_breaker_main_conf_t  *bmcf;

    if (lcf->name.len == 0 || lcf->route != NULL) {
        return NGX_OK;
    }

    bmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_breaker_module);
    routes = bmcf->routes.elts;

    for (i = 0; i < bmcf->routes.nelts; i++) {
        if (routes[i]->name.len == lcf->name.len
            && ngx_strncmp(routes[i]->name.data, lcf->name.data,
                           lcf->name.len) == 0)
        {
            lcf->route = routes[i];
            return NGX_OK;
        }
    }

    ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                  "unknown breaker circuit \"%V\" in \"breaker\" "
                  "(no \"breaker_circuit %V\") in %s:%ui",
                  &lcf->name, &lcf->name, lcf->file, lcf->line);

    return NGX_ERROR;
}


static char *
ngx_http_breaker_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_breaker_loc_conf_t *prev = parent;
    ngx_http_breaker_loc_conf_t *conf = child;

    if (ngx_http_breaker_resolve(cf, prev) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (!conf->set) {
        conf->set = prev->set;
        conf->name = prev->name;
        conf->route = prev->route;
        conf->file = prev->file;
        conf->line = prev->line;
        conf->subrequests = prev->subrequests;
    }

    if (ngx_http_breaker_resolve(cf, conf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    ngx_conf_merge_value(conf->subrequests, prev->subrequests, 0);
    ngx_conf_merge_uint_value(conf->status_code, prev->status_code,
                              NGX_HTTP_SERVICE_UNAVAILABLE);
    ngx_conf_merge_str_value(conf->fallback, prev->fallback, "");

    return NGX_CONF_OK;
}


/* the circuits in their zones, once per cycle, in the master: every
 * worker inherits the pointers; then the circuits this configuration
 * does not use are retired, and those no process uses any more freed */
static ngx_int_t
ngx_http_breaker_init_module(ngx_cycle_t *cycle)
{
    ngx_int_t                      rc;
    ngx_uint_t                     i;
    ngx_http_breaker_route_t     **routes;
    ngx_http_breaker_main_conf_t  *bmcf;

    /* the outcomes' time: ngx_edge_mono_usec_cached() */
    ngx_edge_time_init(cycle);

    bmcf = ngx_http_breaker_cycle_main_conf(cycle);

    if (bmcf == NULL) {
        return NGX_OK;
    }

    ngx_http_breaker_zones_begin(cycle);

    routes = bmcf->routes.elts;

    for (i = 0; i < bmcf->routes.nelts; i++) {
        routes[i]->circuit = ngx_http_breaker_zone_circuit(routes[i]->zone,
                                                           &routes[i]->name,
                                                           &routes[i]->conf,
                                                           cycle->log);
        if (routes[i]->circuit) {
            ngx_http_breaker_stats_sync_state(cycle, &routes[i]->stats,
                                              routes[i]->circuit,
                                              &routes[i]->conf);
        }
    }

    rc = ngx_http_breaker_peers_init_module(cycle);

    ngx_http_breaker_zones_end(cycle);

    return rc;
}


/* this process uses this cycle's circuits (a retired one is freed once
 * no process of an older cycle is left) */
static ngx_int_t
ngx_http_breaker_init_process(ngx_cycle_t *cycle)
{
    if (ngx_http_breaker_cycle_main_conf(cycle) != NULL) {
        ngx_http_breaker_zones_register(cycle);
    }

    return NGX_OK;
}
