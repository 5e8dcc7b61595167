/*
 * ngx_http_breaker_status_module (in the breaker .so): the status and the
 * health endpoints.
 *
 *     breaker_status_endpoint [allow_force=on|off];
 *     breaker_health live | ready [redis=fail|warn|off] [pg=fail|warn|off]
 *         [circuits=fail|warn|off] [shedding=fail|warn|off] [shm=N%|off];
 *
 * Both are content handlers set per location, as stub_status is.  The
 * status document lists every circuit and shedder as the other two modules
 * of the .so describe them (ngx_http_breaker_status.h), with this node's
 * summary; a POST or PUT forces a circuit when the location allows it.
 *
 * Readiness reads what every module of the node shares, never their
 * symbols: the metrics registry's zones (edge_stats_*, the gauges
 * <module>_redis_connected{server} and <module>_pg_failing{...} that the
 * common Redis client and the PostgreSQL users maintain), the circuits and
 * shedders of this .so, and the slab pools of every shared memory zone of
 * the cycle.  None of it is on the request path of other locations; the
 * documents are built with jansson and copied into r->pool.
 */

#include "ngx_edge_common.h"
#include "ngx_edge_stats.h"
#include "ngx_edge_utf8.h"
#include "ngx_http_breaker_status.h"

#include <nginx.h>


#define NGX_HTTP_BREAKER_STATUS_NONE    0
#define NGX_HTTP_BREAKER_STATUS_STATUS  1
#define NGX_HTTP_BREAKER_STATUS_LIVE    2
#define NGX_HTTP_BREAKER_STATUS_READY   3

/* what a failed check does to readiness: the outcome of a problem, so
 * WARN and FAIL have the values of the outcomes below */
#define NGX_HTTP_BREAKER_CHECK_OFF      0   /* not checked, not listed */
#define NGX_HTTP_BREAKER_CHECK_WARN     1   /* listed, "warn", still 200 */
#define NGX_HTTP_BREAKER_CHECK_FAIL     2   /* listed, "fail", 503 */

/* a check's outcome, in order of severity */
#define NGX_HTTP_BREAKER_OK             0
#define NGX_HTTP_BREAKER_WARN           1
#define NGX_HTTP_BREAKER_FAIL           2

#define NGX_HTTP_BREAKER_JSON_FLAGS     (JSON_INDENT(2) | JSON_PRESERVE_ORDER)


typedef struct {
    ngx_uint_t                   endpoint;
    ngx_flag_t                   allow_force;

    /* breaker_health ready */
    ngx_uint_t                   redis;
    ngx_uint_t                   pg;
    ngx_uint_t                   circuits;
    ngx_uint_t                   shedding;
    ngx_uint_t                   shm;          /* percent, 0: off */
} ngx_http_breaker_status_loc_conf_t;


/* what the circuits and shedders say about this node */
typedef struct {
    json_t                      *circuits;
    json_t                      *shedders;
    ngx_uint_t                   open;         /* open or forced open */
    ngx_uint_t                   half_open;
    ngx_uint_t                   shedding;
} ngx_http_breaker_status_summary_t;


static ngx_int_t ngx_http_breaker_status_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_breaker_status_get(ngx_http_request_t *r);
static ngx_int_t ngx_http_breaker_status_force(ngx_http_request_t *r,
    ngx_http_breaker_status_loc_conf_t *bslcf);
static json_t *ngx_http_breaker_status_find(json_t *circuits,
    ngx_str_t *name);
static ngx_int_t ngx_http_breaker_status_summarize(
    ngx_http_breaker_status_summary_t *sum);
static void ngx_http_breaker_status_summary_free(
    ngx_http_breaker_status_summary_t *sum);
static json_t *ngx_http_breaker_status_summary_json(
    ngx_http_breaker_status_summary_t *sum);
static ngx_flag_t ngx_http_breaker_status_shedding(json_t *shedder);

static ngx_int_t ngx_http_breaker_health_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_breaker_health_live(ngx_http_request_t *r);
static ngx_int_t ngx_http_breaker_health_ready(ngx_http_request_t *r,
    ngx_http_breaker_status_loc_conf_t *bslcf);
static ngx_int_t ngx_http_breaker_health_gauges(ngx_pool_t *pool,
    json_t *list, const char *suffix, ngx_flag_t redis, ngx_uint_t policy,
    ngx_uint_t *worst);
static json_t *ngx_http_breaker_health_gauge(ngx_pool_t *pool,
    ngx_str_t *module, ngx_edge_stats_sh_t *sh, ngx_edge_stats_shfamily_t *f,
    ngx_edge_stats_series_t *s, ngx_flag_t redis, ngx_uint_t policy,
    ngx_uint_t *worst);
static json_t *ngx_http_breaker_health_shm(ngx_pool_t *pool,
    ngx_uint_t threshold, ngx_uint_t *worst);
static ngx_uint_t ngx_http_breaker_health_workers(void);

static ngx_int_t ngx_http_breaker_status_send(ngx_http_request_t *r,
    ngx_uint_t status, json_t *doc);
static ngx_int_t ngx_http_breaker_status_error(ngx_http_request_t *r,
    ngx_uint_t status, const char *error, const char *message);
static ngx_int_t ngx_http_breaker_status_not_allowed(ngx_http_request_t *r,
    const char *allow);
static ngx_int_t ngx_http_breaker_status_header(ngx_http_request_t *r,
    const char *key, const char *value);
static json_t *ngx_http_breaker_status_string(ngx_pool_t *pool, u_char *data,
    size_t len);
static const char *ngx_http_breaker_status_outcome(ngx_uint_t outcome);

static void *ngx_http_breaker_status_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_breaker_status_endpoint(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_breaker_health(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_breaker_health_policy(ngx_conf_t *cf,
    ngx_str_t *value, size_t skip, ngx_uint_t *policy);
static ngx_int_t ngx_http_breaker_status_init_process(ngx_cycle_t *cycle);


static ngx_command_t  ngx_http_breaker_status_commands[] = {

    { ngx_string("breaker_status_endpoint"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS|NGX_CONF_TAKE1,
      ngx_http_breaker_status_endpoint,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("breaker_health"),
      NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_breaker_health,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_breaker_status_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */
    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */
    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */
    ngx_http_breaker_status_create_loc_conf, /* create location conf */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_http_breaker_status_module = {
    NGX_MODULE_V1,
    &ngx_http_breaker_status_module_ctx,   /* module context */
    ngx_http_breaker_status_commands,      /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_breaker_status_init_process,  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


/* when this process started serving, ngx_current_msec (monotonic) */
static ngx_msec_t  ngx_http_breaker_status_started;


/* the status endpoint */

static ngx_int_t
ngx_http_breaker_status_handler(ngx_http_request_t *r)
{
    ngx_int_t                            rc;
    ngx_http_breaker_status_loc_conf_t  *bslcf;

    bslcf = ngx_http_get_module_loc_conf(r, ngx_http_breaker_status_module);

    if (!(r->method
          & (NGX_HTTP_GET|NGX_HTTP_HEAD|NGX_HTTP_POST|NGX_HTTP_PUT)))
    {
        return ngx_http_breaker_status_not_allowed(r, "GET, HEAD, POST, PUT");
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    if (r->method & (NGX_HTTP_POST|NGX_HTTP_PUT)) {
        return ngx_http_breaker_status_force(r, bslcf);
    }

    return ngx_http_breaker_status_get(r);
}


static ngx_int_t
ngx_http_breaker_status_get(ngx_http_request_t *r)
{
    json_t                             *doc, *node;
    ngx_http_breaker_status_summary_t   sum;

    if (ngx_http_breaker_status_summarize(&sum) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    doc = json_object();
    node = json_object();

    if (doc == NULL || node == NULL
        || json_object_set_new(doc, "node", node) != 0
        || json_object_set_new(node, "hostname",
               ngx_http_breaker_status_string(r->pool,
                                              ngx_cycle->hostname.data,
                                              ngx_cycle->hostname.len))
           != 0
        || json_object_set_new(node, "pid", json_integer(ngx_pid)) != 0
        || json_object_set_new(node, "nginx_version",
                               json_string(NGINX_VERSION)) != 0
        || json_object_set_new(node, "time", json_integer(ngx_time())) != 0
        || json_object_set_new(doc, "summary",
                               ngx_http_breaker_status_summary_json(&sum))
           != 0
        || json_object_set(doc, "circuits", sum.circuits) != 0
        || json_object_set(doc, "shedders", sum.shedders) != 0)
    {
        if (doc == NULL) {
            json_decref(node);
        }

        json_decref(doc);
        ngx_http_breaker_status_summary_free(&sum);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_breaker_status_summary_free(&sum);

    return ngx_http_breaker_status_send(r, NGX_HTTP_OK, doc);
}


/*
 * POST or PUT ?circuit=NAME&state=open|closed|auto: the state machine of
 * the circuit module does the forcing and logs the transition; this says
 * who asked.
 */

static ngx_int_t
ngx_http_breaker_status_force(ngx_http_request_t *r,
    ngx_http_breaker_status_loc_conf_t *bslcf)
{
    json_t                             *doc, *circuit;
    ngx_int_t                           rc;
    ngx_str_t                           name, state;
    ngx_http_breaker_status_summary_t   sum;

    if (!bslcf->allow_force) {
        return ngx_http_breaker_status_error(r, NGX_HTTP_FORBIDDEN,
                   "forbidden",
                   "forcing circuits is not allowed here "
                   "(breaker_status_endpoint allow_force=on)");
    }

    rc = ngx_edge_http_arg(r, "state", &state);
    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc == NGX_DECLINED
        || !((state.len == 4 && ngx_strncmp(state.data, "open", 4) == 0)
             || (state.len == 6 && ngx_strncmp(state.data, "closed", 6) == 0)
             || (state.len == 4 && ngx_strncmp(state.data, "auto", 4) == 0)))
    {
        return ngx_http_breaker_status_error(r, NGX_HTTP_BAD_REQUEST,
                   "bad_request",
                   "the argument \"state\" must be open, closed or auto");
    }

    rc = ngx_edge_http_arg(r, "circuit", &name);
    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc == NGX_DECLINED || name.len == 0) {
        return ngx_http_breaker_status_error(r, NGX_HTTP_BAD_REQUEST,
                   "bad_request", "the argument \"circuit\" is missing");
    }

    rc = ngx_http_breaker_circuit_force((ngx_cycle_t *) ngx_cycle, &name,
                                        &state, r->connection->log);

    if (rc == NGX_DECLINED) {
        return ngx_http_breaker_status_error(r, NGX_HTTP_NOT_FOUND,
                                             "not_found", "no such circuit");
    }

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_log_error(NGX_LOG_NOTICE, r->connection->log, 0,
                  "breaker_status_endpoint: circuit \"%V\" forced %V by "
                  "client %V", &name, &state, &r->connection->addr_text);

    /* the answer is the circuit as it is now */

    if (ngx_http_breaker_status_summarize(&sum) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    circuit = ngx_http_breaker_status_find(sum.circuits, &name);

    doc = json_object();

    if (doc == NULL
        || json_object_set_new(doc, "circuit",
               ngx_http_breaker_status_string(r->pool, name.data, name.len))
           != 0
        || json_object_set_new(doc, "forced",
               ngx_http_breaker_status_string(r->pool, state.data,
                                              state.len))
           != 0
        || json_object_set_new(doc, "now",
                               circuit ? json_incref(circuit) : json_null())
           != 0)
    {
        json_decref(doc);
        ngx_http_breaker_status_summary_free(&sum);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_breaker_status_summary_free(&sum);

    return ngx_http_breaker_status_send(r, NGX_HTTP_OK, doc);
}


static json_t *
ngx_http_breaker_status_find(json_t *circuits, ngx_str_t *name)
{
    size_t       i;
    json_t      *c, *n;
    const char  *s;

    json_array_foreach(circuits, i, c) {
        n = json_object_get(c, "name");
        s = json_string_value(n);

        if (s && json_string_length(n) == name->len
            && ngx_strncmp(s, name->data, name->len) == 0)
        {
            return c;
        }
    }

    return NULL;
}


/*
 * The circuits and shedders, as their modules describe them, and what they
 * add up to.  A circuit counts as open in the states "open" and
 * "forced_open" (its requests fail fast); a shedder is shedding when it
 * says so ("shedding": a boolean), or else when its permits are all taken
 * ("in_flight" >= "limit") or requests wait in its queue ("queue" > 0).
 */

static ngx_int_t
ngx_http_breaker_status_summarize(ngx_http_breaker_status_summary_t *sum)
{
    size_t       i;
    json_t      *c;
    const char  *state;

    ngx_memzero(sum, sizeof(ngx_http_breaker_status_summary_t));

    sum->circuits = json_array();
    sum->shedders = json_array();

    if (sum->circuits == NULL || sum->shedders == NULL
        || ngx_http_breaker_circuits_json((ngx_cycle_t *) ngx_cycle,
                                          sum->circuits)
           != NGX_OK
        || ngx_http_breaker_shedders_json((ngx_cycle_t *) ngx_cycle,
                                          sum->shedders)
           != NGX_OK)
    {
        ngx_http_breaker_status_summary_free(sum);
        return NGX_ERROR;
    }

    json_array_foreach(sum->circuits, i, c) {
        state = json_string_value(json_object_get(c, "state"));
        if (state == NULL) {
            continue;
        }

        if (ngx_strcmp(state, "open") == 0
            || ngx_strcmp(state, "forced_open") == 0)
        {
            sum->open++;

        } else if (ngx_strcmp(state, "half_open") == 0) {
            sum->half_open++;
        }
    }

    json_array_foreach(sum->shedders, i, c) {
        if (ngx_http_breaker_status_shedding(c)) {
            sum->shedding++;
        }
    }

    return NGX_OK;
}


static ngx_flag_t
ngx_http_breaker_status_shedding(json_t *shedder)
{
    json_t      *v;
    json_int_t   in_flight, limit;

    v = json_object_get(shedder, "shedding");
    if (json_is_boolean(v)) {
        return json_is_true(v);
    }

    if (json_integer_value(json_object_get(shedder, "queue")) > 0) {
        return 1;
    }

    in_flight = json_integer_value(json_object_get(shedder, "in_flight"));
    limit = json_integer_value(json_object_get(shedder, "limit"));

    return limit > 0 && in_flight >= limit;
}


static void
ngx_http_breaker_status_summary_free(ngx_http_breaker_status_summary_t *sum)
{
    json_decref(sum->circuits);
    json_decref(sum->shedders);

    sum->circuits = NULL;
    sum->shedders = NULL;
}


static json_t *
ngx_http_breaker_status_summary_json(ngx_http_breaker_status_summary_t *sum)
{
    return json_pack("{s:I, s:I, s:I, s:I, s:I}",
                     "circuits", (json_int_t) json_array_size(sum->circuits),
                     "circuits_open", (json_int_t) sum->open,
                     "circuits_half_open", (json_int_t) sum->half_open,
                     "shedders", (json_int_t) json_array_size(sum->shedders),
                     "shedders_shedding", (json_int_t) sum->shedding);
}


/* the health endpoint */

static ngx_int_t
ngx_http_breaker_health_handler(ngx_http_request_t *r)
{
    ngx_int_t                            rc;
    ngx_http_breaker_status_loc_conf_t  *bslcf;

    bslcf = ngx_http_get_module_loc_conf(r, ngx_http_breaker_status_module);

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_http_breaker_status_not_allowed(r, "GET, HEAD");
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    if (bslcf->endpoint == NGX_HTTP_BREAKER_STATUS_LIVE) {
        return ngx_http_breaker_health_live(r);
    }

    return ngx_http_breaker_health_ready(r, bslcf);
}


/* the worker answers: nothing else is looked at */

static ngx_int_t
ngx_http_breaker_health_live(ngx_http_request_t *r)
{
    json_t  *doc;

    doc = json_pack("{s:s, s:I, s:I}",
                    "status", "ok",
                    "pid", (json_int_t) ngx_pid,
                    "uptime", (json_int_t) ((ngx_current_msec
                                       - ngx_http_breaker_status_started)
                                      / 1000));
    if (doc == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_breaker_status_send(r, NGX_HTTP_OK, doc);
}


/*
 * Every check gives ok, warn or fail; the worst decides: 503 when one
 * failed, else 200.  A check's problem is a failure only where the
 * location's policy says "fail".
 */

static ngx_int_t
ngx_http_breaker_health_ready(ngx_http_request_t *r,
    ngx_http_breaker_status_loc_conf_t *bslcf)
{
    json_t                             *doc, *checks, *list, *check;
    ngx_uint_t                          worst, outcome;
    ngx_http_breaker_status_summary_t   sum;

    worst = NGX_HTTP_BREAKER_OK;

    /* "status" first, as a person reading the document wants it; its
     * value is set once every check is done */

    doc = json_object();

    if (doc == NULL
        || json_object_set_new(doc, "status", json_string("ok")) != 0
        || json_object_set_new(doc, "pid", json_integer(ngx_pid)) != 0
        || json_object_set_new(doc, "checks", json_object()) != 0)
    {
        json_decref(doc);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    checks = json_object_get(doc, "checks");

    if (bslcf->redis != NGX_HTTP_BREAKER_CHECK_OFF) {
        list = json_array();

        if (json_object_set_new(checks, "redis", list) != 0
            || ngx_http_breaker_health_gauges(r->pool, list,
                                              "_redis_connected", 1,
                                              bslcf->redis, &worst)
               != NGX_OK)
        {
            goto failed;
        }
    }

    if (bslcf->pg != NGX_HTTP_BREAKER_CHECK_OFF) {
        list = json_array();

        if (json_object_set_new(checks, "pg", list) != 0
            || ngx_http_breaker_health_gauges(r->pool, list, "_pg_failing",
                                              0, bslcf->pg, &worst)
               != NGX_OK)
        {
            goto failed;
        }
    }

    if (bslcf->circuits != NGX_HTTP_BREAKER_CHECK_OFF
        || bslcf->shedding != NGX_HTTP_BREAKER_CHECK_OFF)
    {
        if (ngx_http_breaker_status_summarize(&sum) != NGX_OK) {
            goto failed;
        }

        if (bslcf->circuits != NGX_HTTP_BREAKER_CHECK_OFF) {
            outcome = sum.open ? bslcf->circuits : NGX_HTTP_BREAKER_OK;
            worst = ngx_max(worst, outcome);

            check = json_pack("{s:s, s:I, s:I, s:I}",
                        "status", ngx_http_breaker_status_outcome(outcome),
                        "total", (json_int_t) json_array_size(sum.circuits),
                        "open", (json_int_t) sum.open,
                        "half_open", (json_int_t) sum.half_open);

            if (json_object_set_new(checks, "circuits", check) != 0) {
                ngx_http_breaker_status_summary_free(&sum);
                goto failed;
            }
        }

        if (bslcf->shedding != NGX_HTTP_BREAKER_CHECK_OFF) {
            outcome = sum.shedding ? bslcf->shedding : NGX_HTTP_BREAKER_OK;
            worst = ngx_max(worst, outcome);

            check = json_pack("{s:s, s:I, s:I}",
                        "status", ngx_http_breaker_status_outcome(outcome),
                        "total", (json_int_t) json_array_size(sum.shedders),
                        "shedding", (json_int_t) sum.shedding);

            if (json_object_set_new(checks, "shedding", check) != 0) {
                ngx_http_breaker_status_summary_free(&sum);
                goto failed;
            }
        }

        ngx_http_breaker_status_summary_free(&sum);
    }

    if (json_object_set_new(checks, "shm",
                            ngx_http_breaker_health_shm(r->pool, bslcf->shm,
                                                        &worst))
        != 0)
    {
        goto failed;
    }

    if (json_object_set_new(doc, "status",
                            json_string(ngx_http_breaker_status_outcome(worst)))
        != 0)
    {
        goto failed;
    }

    return ngx_http_breaker_status_send(r, worst == NGX_HTTP_BREAKER_FAIL
                                           ? NGX_HTTP_SERVICE_UNAVAILABLE
                                           : NGX_HTTP_OK,
                                        doc);

failed:

    json_decref(doc);
    return NGX_HTTP_INTERNAL_SERVER_ERROR;
}


/*
 * The gauges named *<suffix> in every module's stats zone, one entry per
 * series: <module>_redis_connected{server} (worker processes connected to
 * that Redis server; down at 0, partial below the worker count) and
 * <module>_pg_failing{...} (1 while the last PostgreSQL exchange of that
 * source failed).
 */

static ngx_int_t
ngx_http_breaker_health_gauges(ngx_pool_t *pool, json_t *list,
    const char *suffix, ngx_flag_t redis, ngx_uint_t policy,
    ngx_uint_t *worst)
{
    json_t                     *entry;
    size_t                      len;
    uint32_t                    gen;
    ngx_str_t                   module;
    ngx_uint_t                  i, k, n, f;
    ngx_list_part_t            *part;
    ngx_shm_zone_t             *zone;
    ngx_edge_stats_sh_t        *sh;
    ngx_edge_stats_series_t    *s;
    ngx_edge_stats_shfamily_t  *fam;

    if (list == NULL) {
        return NGX_ERROR;
    }

    len = ngx_strlen(suffix);

    part = (ngx_list_part_t *) &ngx_cycle->shared_memory.part;
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

        sh = ngx_edge_stats_zone(&zone[i]);
        if (sh == NULL) {
            continue;
        }

        module.data = zone[i].shm.name.data + sizeof(NGX_EDGE_STATS_PREFIX)
                      - 1;
        module.len = zone[i].shm.name.len - (sizeof(NGX_EDGE_STATS_PREFIX)
                                             - 1);

        for (f = 0; f < sh->nfamilies; f++) {
            fam = &sh->families[f];

            if (fam->type != NGX_EDGE_STATS_GAUGE
                || fam->name.len <= len
                || ngx_strncmp(fam->name.data + fam->name.len - len, suffix,
                               len)
                   != 0)
            {
                continue;
            }

            n = ngx_edge_stats_nseries(sh);

            for (k = 0; k < n; k++) {
                s = &sh->series[k];

                gen = ngx_edge_stats_gen(s);
                if (s->family != f || (gen & 1)) {
                    continue;
                }

                entry = ngx_http_breaker_health_gauge(pool, &module, sh, fam,
                                                      s, redis, policy,
                                                      worst);

                if (ngx_edge_stats_gen(s) != gen) {
                    /* a run-time series freed meanwhile */
                    json_decref(entry);
                    continue;
                }

                if (json_array_append_new(list, entry) != 0) {
                    return NGX_ERROR;
                }
            }
        }
    }

    return NGX_OK;
}


static json_t *
ngx_http_breaker_health_gauge(ngx_pool_t *pool, ngx_str_t *module,
    ngx_edge_stats_sh_t *sh, ngx_edge_stats_shfamily_t *f,
    ngx_edge_stats_series_t *s, ngx_flag_t redis, ngx_uint_t policy,
    ngx_uint_t *worst)
{
    json_t      *entry;
    int64_t      value;
    ngx_uint_t   l, workers, outcome;
    const char  *state;

    value = ngx_edge_stats_read(sh, s, 0);

    entry = json_object();
    if (entry == NULL) {
        return NULL;
    }

    if (json_object_set_new(entry, "module",
            ngx_http_breaker_status_string(pool, module->data, module->len))
        != 0)
    {
        json_decref(entry);
        return NULL;
    }

    for (l = 0; l < f->nlabels; l++) {
        if (json_object_setn_new(entry, (const char *) f->labels[l].data,
                                 f->labels[l].len,
                                 ngx_http_breaker_status_string(pool,
                                     s->values[l].data, s->values[l].len))
            != 0)
        {
            json_decref(entry);
            return NULL;
        }
    }

    if (redis) {
        workers = ngx_http_breaker_health_workers();

        if (value <= 0) {
            state = "down";
            outcome = policy;

        } else if ((ngx_uint_t) value < workers) {
            state = "partial";
            outcome = NGX_HTTP_BREAKER_WARN;

        } else {
            state = "up";
            outcome = NGX_HTTP_BREAKER_OK;
        }

        if (json_object_set_new(entry, "state", json_string(state)) != 0
            || json_object_set_new(entry, "connected", json_integer(value))
               != 0
            || json_object_set_new(entry, "workers", json_integer(workers))
               != 0)
        {
            json_decref(entry);
            return NULL;
        }

    } else {
        outcome = value > 0 ? policy : NGX_HTTP_BREAKER_OK;

        if (json_object_set_new(entry, "state",
                                json_string(value > 0 ? "failing" : "ok"))
            != 0)
        {
            json_decref(entry);
            return NULL;
        }
    }

    *worst = ngx_max(*worst, outcome);

    if (json_object_set_new(entry, "status",
                            json_string(ngx_http_breaker_status_outcome(
                                                                   outcome)))
        != 0)
    {
        json_decref(entry);
        return NULL;
    }

    return entry;
}


/*
 * Every shared memory zone of the cycle is a slab pool (nginx makes it one
 * before the zone's init runs): pages in use against pages in the pool,
 * read under the pool's mutex, which is held as briefly as every module
 * holds it.  The stats zones are listed, never judged: they are sized to
 * what was registered and never grow, and the metrics module reports how
 * full they are in series (nginx_edge_stats_series / _capacity).
 */

static json_t *
ngx_http_breaker_health_shm(ngx_pool_t *pool, ngx_uint_t threshold,
    ngx_uint_t *worst)
{
    json_t           *list, *entry;
    ngx_uint_t        i, pages, free, fill, outcome;
    ngx_flag_t        stats;
    ngx_slab_pool_t  *sp;
    ngx_list_part_t  *part;
    ngx_shm_zone_t   *zone;

    list = json_array();
    if (list == NULL) {
        return NULL;
    }

    part = (ngx_list_part_t *) &ngx_cycle->shared_memory.part;
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

        sp = (ngx_slab_pool_t *) zone[i].shm.addr;

        if (sp == NULL || sp->addr != zone[i].shm.addr
            || sp->end <= sp->start)
        {
            continue;
        }

        pages = (sp->end - sp->start) / ngx_pagesize;
        if (pages == 0) {
            continue;
        }

        ngx_shmtx_lock(&sp->mutex);
        free = sp->pfree;
        ngx_shmtx_unlock(&sp->mutex);

        free = ngx_min(free, pages);
        fill = (pages - free) * 100 / pages;

        stats = zone[i].shm.name.len > sizeof(NGX_EDGE_STATS_PREFIX) - 1
                && ngx_strncmp(zone[i].shm.name.data, NGX_EDGE_STATS_PREFIX,
                               sizeof(NGX_EDGE_STATS_PREFIX) - 1)
                   == 0;

        outcome = (threshold && !stats && fill >= threshold)
                  ? NGX_HTTP_BREAKER_FAIL : NGX_HTTP_BREAKER_OK;

        *worst = ngx_max(*worst, outcome);

        entry = json_pack("{s:o, s:I, s:I, s:I, s:I, s:s}",
                    "zone", ngx_http_breaker_status_string(pool,
                                zone[i].shm.name.data, zone[i].shm.name.len),
                    "size", (json_int_t) zone[i].shm.size,
                    "pages", (json_int_t) pages,
                    "pages_free", (json_int_t) free,
                    "fill_percent", (json_int_t) fill,
                    "status", ngx_http_breaker_status_outcome(outcome));

        if (json_array_append_new(list, entry) != 0) {
            json_decref(list);
            return NULL;
        }
    }

    return list;
}


/* the worker processes that hold connections: one without a master */

static ngx_uint_t
ngx_http_breaker_health_workers(void)
{
    ngx_core_conf_t  *ccf;

    if (ngx_process != NGX_PROCESS_WORKER) {
        return 1;
    }

    ccf = (ngx_core_conf_t *) ngx_get_conf(ngx_cycle->conf_ctx,
                                           ngx_core_module);

    return ccf->worker_processes > 0 ? (ngx_uint_t) ccf->worker_processes : 1;
}


/* responses */

/* sends the document (and releases it) */

static ngx_int_t
ngx_http_breaker_status_send(ngx_http_request_t *r, ngx_uint_t status,
    json_t *doc)
{
    size_t       len;
    ngx_int_t    rc;
    ngx_buf_t   *b;
    ngx_chain_t  out;

    len = json_dumpb(doc, NULL, 0, NGX_HTTP_BREAKER_JSON_FLAGS);
    if (len == 0) {
        json_decref(doc);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b = ngx_create_temp_buf(r->pool, len + 1);
    if (b == NULL) {
        json_decref(doc);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last += json_dumpb(doc, (char *) b->pos, len,
                          NGX_HTTP_BREAKER_JSON_FLAGS);
    *b->last++ = '\n';

    json_decref(doc);

    if (ngx_http_breaker_status_header(r, "Cache-Control", "no-store")
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    r->headers_out.status = status;
    r->headers_out.content_length_n = b->last - b->pos;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    if (r->method == NGX_HTTP_HEAD) {
        r->header_only = 1;
    }

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


static ngx_int_t
ngx_http_breaker_status_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *error, const char *message)
{
    json_t  *doc;

    doc = json_pack("{s:s, s:s}", "error", error, "message", message);
    if (doc == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_breaker_status_send(r, status, doc);
}


static ngx_int_t
ngx_http_breaker_status_not_allowed(ngx_http_request_t *r, const char *allow)
{
    if (ngx_http_breaker_status_header(r, "Allow", allow) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_breaker_status_error(r, NGX_HTTP_NOT_ALLOWED,
                                         "method_not_allowed", allow);
}


static ngx_int_t
ngx_http_breaker_status_header(ngx_http_request_t *r, const char *key,
    const char *value)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
#if (nginx_version >= 1023000)
    h->next = NULL;
#endif
    h->key.data = (u_char *) key;
    h->key.len = ngx_strlen(key);
    h->value.data = (u_char *) value;
    h->value.len = ngx_strlen(value);

    return NGX_OK;
}


/* a JSON string of bytes that may not be UTF-8 (names from the
 * configuration): ill-formed parts become U+FFFD; NULL when out of memory,
 * which jansson's setters take as a failure */

static json_t *
ngx_http_breaker_status_string(ngx_pool_t *pool, u_char *data, size_t len)
{
    u_char  *p;
    size_t   n;

    if (ngx_edge_utf8_valid(data, len)) {
        return json_stringn((const char *) data, len);
    }

    p = ngx_pnalloc(pool, NGX_EDGE_UTF8_SANITIZED_MAX(len));
    if (p == NULL) {
        return NULL;
    }

    n = ngx_edge_utf8_sanitize(p, NGX_EDGE_UTF8_SANITIZED_MAX(len), data,
                               len);

    return json_stringn((const char *) p, n);
}


static const char *
ngx_http_breaker_status_outcome(ngx_uint_t outcome)
{
    switch (outcome) {

    case NGX_HTTP_BREAKER_OK:
        return "ok";

    case NGX_HTTP_BREAKER_WARN:
        return "warn";

    default:
        return "fail";
    }
}


/* configuration */

static void *
ngx_http_breaker_status_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_breaker_status_loc_conf_t  *conf;

    /* set by ngx_pcalloc(): endpoint NONE, allow_force off, checks off */

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_breaker_status_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    return conf;
}


static char *
ngx_http_breaker_status_endpoint(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_breaker_status_loc_conf_t *bslcf = conf;

    ngx_str_t                 *value;
    ngx_http_core_loc_conf_t  *clcf;

    if (bslcf->endpoint != NGX_HTTP_BREAKER_STATUS_NONE) {
        return bslcf->endpoint == NGX_HTTP_BREAKER_STATUS_STATUS
               ? "is duplicate"
               : "conflicts with \"breaker_health\" in the same location";
    }

    value = cf->args->elts;

    if (cf->args->nelts == 2) {
        if (value[1].len == sizeof("allow_force=on") - 1
            && ngx_strncmp(value[1].data, "allow_force=on",
                           value[1].len) == 0)
        {
            bslcf->allow_force = 1;

        } else if (value[1].len != sizeof("allow_force=off") - 1
                   || ngx_strncmp(value[1].data, "allow_force=off",
                                  value[1].len) != 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\" in "
                               "\"breaker_status_endpoint\", expected "
                               "\"allow_force=on\" or \"allow_force=off\"",
                               &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    bslcf->endpoint = NGX_HTTP_BREAKER_STATUS_STATUS;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_breaker_status_handler;

    return NGX_CONF_OK;
}


static char *
ngx_http_breaker_health(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_breaker_status_loc_conf_t *bslcf = conf;

    ngx_int_t                  n;
    ngx_str_t                 *value;
    ngx_uint_t                 i;
    ngx_http_core_loc_conf_t  *clcf;

    if (bslcf->endpoint != NGX_HTTP_BREAKER_STATUS_NONE) {
        return bslcf->endpoint == NGX_HTTP_BREAKER_STATUS_STATUS
               ? "conflicts with \"breaker_status_endpoint\" in the same "
                 "location"
               : "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len == 4 && ngx_strncmp(value[1].data, "live", 4) == 0) {

        if (cf->args->nelts > 2) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\" in "
                               "\"breaker_health\": \"live\" takes none",
                               &value[2]);
            return NGX_CONF_ERROR;
        }

        bslcf->endpoint = NGX_HTTP_BREAKER_STATUS_LIVE;
        goto done;
    }

    if (value[1].len != 5 || ngx_strncmp(value[1].data, "ready", 5) != 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\" in \"breaker_health\", "
                           "expected \"live\" or \"ready\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    bslcf->endpoint = NGX_HTTP_BREAKER_STATUS_READY;
    bslcf->redis = NGX_HTTP_BREAKER_CHECK_FAIL;
    bslcf->pg = NGX_HTTP_BREAKER_CHECK_WARN;
    bslcf->circuits = NGX_HTTP_BREAKER_CHECK_WARN;
    bslcf->shedding = NGX_HTTP_BREAKER_CHECK_WARN;
    bslcf->shm = 0;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "redis=", 6) == 0) {
            if (ngx_http_breaker_health_policy(cf, &value[i], 6,
                                               &bslcf->redis)
                != NGX_CONF_OK)
            {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "pg=", 3) == 0) {
            if (ngx_http_breaker_health_policy(cf, &value[i], 3, &bslcf->pg)
                != NGX_CONF_OK)
            {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "circuits=", 9) == 0) {
            if (ngx_http_breaker_health_policy(cf, &value[i], 9,
                                               &bslcf->circuits)
                != NGX_CONF_OK)
            {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "shedding=", 9) == 0) {
            if (ngx_http_breaker_health_policy(cf, &value[i], 9,
                                               &bslcf->shedding)
                != NGX_CONF_OK)
            {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "shm=", 4) == 0) {

            if (value[i].len == 7
                && ngx_strncmp(value[i].data + 4, "off", 3) == 0)
            {
                bslcf->shm = 0;
                continue;
            }

            n = NGX_ERROR;

            if (value[i].len > 5 && value[i].data[value[i].len - 1] == '%') {
                n = ngx_atoi(value[i].data + 4, value[i].len - 5);
            }

            if (n < 1 || n > 100) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid value \"%V\" in "
                                   "\"breaker_health\", expected "
                                   "\"shm=1%%\" to \"shm=100%%\" or "
                                   "\"shm=off\"", &value[i]);
                return NGX_CONF_ERROR;
            }

            bslcf->shm = n;
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\" in \"breaker_health\"",
                           &value[i]);
        return NGX_CONF_ERROR;
    }

done:

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_breaker_health_handler;

    return NGX_CONF_OK;
}


/* "fail", "warn" or "off" after the parameter's name */

static char *
ngx_http_breaker_health_policy(ngx_conf_t *cf, ngx_str_t *value, size_t skip,
    ngx_uint_t *policy)
{
    u_char  *p;
    size_t   len;

    p = value->data + skip;
    len = value->len - skip;

    if (len == 4 && ngx_strncmp(p, "fail", 4) == 0) {
        *policy = NGX_HTTP_BREAKER_CHECK_FAIL;

    } else if (len == 4 && ngx_strncmp(p, "warn", 4) == 0) {
        *policy = NGX_HTTP_BREAKER_CHECK_WARN;

    } else if (len == 3 && ngx_strncmp(p, "off", 3) == 0) {
        *policy = NGX_HTTP_BREAKER_CHECK_OFF;

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\" in \"breaker_health\", "
                           "expected \"%*s=fail\", \"%*s=warn\" or "
                           "\"%*s=off\"", value, skip - 1, value->data,
                           skip - 1, value->data, skip - 1, value->data);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_breaker_status_init_process(ngx_cycle_t *cycle)
{
    ngx_http_breaker_status_started = ngx_current_msec;

    return NGX_OK;
}
