/*
 * ngx_http_breaker_shed_module (in the breaker .so): load shedding with
 * concurrency permits in shared memory, priority classes with guaranteed
 * shares, a bounded per-worker queue with CoDel-style expiry, optional
 * probabilistic shedding of the lowest class, and an adaptive limit
 * (ngx_http_breaker_shed_adaptive.c).  See ngx_http_breaker_shed.h.
 *
 * A request takes a permit in the PRECONTENT phase (after the rewrite,
 * rate-limit and access phases, so that a request refused there never
 * holds a permit; after the other PRECONTENT handlers, the cache's lookup
 * among them, in the breaker's one handler, before the route circuit's
 * part; and before the content handler) and gives it back in a
 * cleanup of its pool, as limit_conn does: on every path (a response, an
 * upstream error or timeout, a client abort), and only when the request
 * is freed, so an upgraded (WebSocket) connection keeps its permit while
 * it is open.
 *
 * A request over the limit waits parked: its handler returns NGX_AGAIN
 * with the connection's read events testing for a client abort (as
 * limit_req's delay does) and the connection's write event as the one
 * event that resumes it, either from its timer (queue_timeout) or posted
 * by the worker that gives it a permit.  It is resumed with
 * ngx_http_core_run_phases(), from the event loop, never from inside
 * another request's cleanup.  (The shared ngx_edge_wait contract counts
 * operations of an outside service and resumes synchronously from their
 * callbacks; a queue needs neither, so it is not used here.)
 */

#include "ngx_http_breaker_shed.h"
#include "ngx_http_breaker_circuit.h"
#include "ngx_http_breaker_module.h"
#include "ngx_http_breaker_status.h"
#include "ngx_edge_time.h"
#include "ngx_edge_utf8.h"


/* a request's state */
#define NGX_HTTP_BREAKER_SHED_WAITING    1
#define NGX_HTTP_BREAKER_SHED_ADMITTED   2
#define NGX_HTTP_BREAKER_SHED_QUEUED     3      /* admitted after waiting */
#define NGX_HTTP_BREAKER_SHED_SHED       4

/* why a request was shed */
#define NGX_HTTP_BREAKER_SHED_LIMIT        1
#define NGX_HTTP_BREAKER_SHED_QUEUE_FULL   2
#define NGX_HTTP_BREAKER_SHED_TIMEOUT      3
#define NGX_HTTP_BREAKER_SHED_CODEL        4
#define NGX_HTTP_BREAKER_SHED_PROBABILITY  5
#define NGX_HTTP_BREAKER_SHED_EVICTED      6

/* results, the label of breaker_shed_requests_total */
#define NGX_HTTP_BREAKER_SHED_R_ADMITTED   0
#define NGX_HTTP_BREAKER_SHED_R_QUEUED     1
#define NGX_HTTP_BREAKER_SHED_R_SHED       2

#define NGX_HTTP_BREAKER_SHED_LIMIT_MAX    1000000


/*
 * A zone's shared state.  A shedder that a reload removes (or renames) is
 * retired: unlinked from the shedders found by name, and freed at a later
 * reload once no process of an older configuration, which may still hold
 * permits on it or have requests waiting for one, is alive (the registry
 * of ngx_http_breaker_circuit.h, as the breaker_zone's circuits).  A
 * retired shedder whose name comes back before it is freed is taken back,
 * permits and all, as if it had been kept.
 */
typedef struct {
    ngx_http_breaker_shed_node_t  *nodes;       /* by name */
    ngx_http_breaker_shed_node_t  *retired;     /* to free when unused */
    ngx_http_breaker_registry_t    registry;
} ngx_http_breaker_shed_sh_t;


struct ngx_http_breaker_shed_zone_s {
    ngx_str_t                    name;
    ngx_shm_zone_t              *shm_zone;
    ngx_slab_pool_t             *shpool;
    ngx_http_breaker_shed_sh_t  *sh;            /* in shared memory */
    ngx_uint_t                   cycle;         /* this configuration's
                                                   number in the registry */
    ngx_array_t                  shedders;      /* _shedder_t * */
};


typedef struct {
    ngx_array_t                  zones;         /* _zone_t * */
    ngx_array_t                  shedders;      /* _shedder_t * */
    ngx_edge_stats_t            *stats;
    ngx_edge_stats_sh_t         *stats_sh;      /* this worker: the zone */
} ngx_http_breaker_shed_main_conf_t;


typedef struct {
    ngx_http_breaker_shed_shedder_t *shedder;   /* NULL: off */
    ngx_str_t                    name;          /* until resolved */
    ngx_http_complex_value_t    *priority;
    ngx_uint_t                   status;
    ngx_int_t                    retry_after;   /* seconds, 0: none */
} ngx_http_breaker_shed_loc_conf_t;


/* a request's permit or place in the queue, in its pool with its pool
 * cleanup, one allocation (the request's pool is near a block's end:
 * every byte and call counts) */
typedef struct {
    ngx_pool_cleanup_t           cln;
    ngx_http_request_t          *request;
    ngx_queue_t                  queue;
    union {
        ngx_msec_t               enqueued;      /* while it waits */
        int64_t                  admitted;      /* usec, monotonic, from
                                                   the permit on */
    };
    uint32_t                     epoch;         /* ctl.epoch's low bits */
    unsigned                     shedder:16;    /* in smcf->shedders, see
                                                   _rq_shedder() */
    unsigned                     cls:3;         /* < _MAX_CLASSES (8) */
    unsigned                     state:3;
    unsigned                     reason:3;
    unsigned                     permit:1;
    unsigned                     posted:1;      /* resume posted */
    unsigned                     refused:1;     /* status returned */
} ngx_http_breaker_shed_req_t;


static ngx_int_t ngx_http_breaker_shed_add_variables(ngx_conf_t *cf);
static void *ngx_http_breaker_shed_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_breaker_shed_init_main_conf(ngx_conf_t *cf,
    void *conf);
static void *ngx_http_breaker_shed_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_breaker_shed_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);
static ngx_int_t ngx_http_breaker_shed_init_module(ngx_cycle_t *cycle);
static void ngx_http_breaker_shed_poll_init(
    ngx_http_breaker_shed_shedder_t *sd, ngx_log_t *log);
static ngx_int_t ngx_http_breaker_shed_init_process(ngx_cycle_t *cycle);

static char *ngx_http_breaker_shed_zone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_breaker_shedder(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_breaker_shedder_param(ngx_conf_t *cf,
    ngx_http_breaker_shed_main_conf_t *smcf,
    ngx_http_breaker_shed_shedder_t *sd, ngx_str_t *arg);
static char *ngx_http_breaker_shedder_check(ngx_conf_t *cf,
    ngx_http_breaker_shed_shedder_t *sd, ngx_uint_t limit_set);
static char *ngx_http_breaker_shed_class(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_breaker_shed(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_breaker_shed_status(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_http_breaker_shed_shedder_t *ngx_http_breaker_shed_find(
    ngx_http_breaker_shed_main_conf_t *smcf, ngx_str_t *name);
static ngx_int_t ngx_http_breaker_shed_resolve(ngx_conf_t *cf,
    ngx_http_breaker_shed_loc_conf_t *lcf);
static ngx_int_t ngx_http_breaker_shed_register_stats(ngx_conf_t *cf,
    ngx_http_breaker_shed_main_conf_t *smcf,
    ngx_http_breaker_shed_shedder_t *sd);

static ngx_int_t ngx_http_breaker_shed_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_http_breaker_shed_node_t *ngx_http_breaker_shed_zone_node(
    ngx_http_breaker_shed_zone_t *zone, ngx_str_t *name,
    ngx_uint_t *fresh);
static ngx_http_breaker_shed_node_t *ngx_http_breaker_shed_unlink(
    ngx_http_breaker_shed_node_t **list, ngx_str_t *name);
static void ngx_http_breaker_shed_free_unused(
    ngx_http_breaker_shed_zone_t *zone);
static void ngx_http_breaker_shed_retire_unused(
    ngx_http_breaker_shed_zone_t *zone);
static void ngx_http_breaker_shed_configure_node(
    ngx_http_breaker_shed_shedder_t *sd, ngx_uint_t fresh);

static ngx_int_t ngx_http_breaker_shed_decided(ngx_http_request_t *r,
    ngx_http_breaker_shed_req_t *rq, ngx_http_breaker_shed_loc_conf_t *lcf);
static ngx_int_t ngx_http_breaker_shed_behind(ngx_http_request_t *r,
    ngx_http_breaker_shed_req_t *rq, ngx_http_breaker_shed_loc_conf_t *lcf);
static ngx_http_breaker_shed_req_t *ngx_http_breaker_shed_get(
    ngx_http_request_t *r);
static NGX_EDGE_COLD ngx_int_t ngx_http_breaker_shed_background(
    ngx_http_request_t *r);
static ngx_inline ngx_int_t ngx_http_breaker_shed_phase(
    ngx_http_request_t *r, size_t extra, void **spare)
    __attribute__((always_inline));
static ngx_inline ngx_http_breaker_shed_req_t *ngx_http_breaker_shed_create(
    ngx_http_request_t *r, ngx_http_breaker_shed_shedder_t *sd, size_t extra,
    void **spare) __attribute__((always_inline));
static ngx_uint_t ngx_http_breaker_shed_class_of(ngx_http_request_t *r,
    ngx_http_breaker_shed_loc_conf_t *lcf);
static ngx_inline ngx_uint_t ngx_http_breaker_shed_admit(
    ngx_http_breaker_shed_shedder_t *sd, ngx_uint_t cls);
static ngx_uint_t ngx_http_breaker_shed_admit_class(
    ngx_http_breaker_shed_shedder_t *sd, ngx_uint_t cls);
static ngx_uint_t ngx_http_breaker_shed_reserve(
    ngx_http_breaker_shed_shedder_t *sd, ngx_uint_t limit, ngx_uint_t cls);
static ngx_inline void ngx_http_breaker_shed_granted(
    ngx_http_breaker_shed_shedder_t *sd, ngx_http_breaker_shed_req_t *rq,
    ngx_uint_t state);
static void ngx_http_breaker_shed_stamp(ngx_http_breaker_shed_shedder_t *sd,
    ngx_http_breaker_shed_req_t *rq);
static void ngx_http_breaker_shed_stats_refs(
    ngx_http_breaker_shed_shedder_t *sd);
static ngx_int_t ngx_http_breaker_shed_over_limit(ngx_http_request_t *r,
    ngx_http_breaker_shed_req_t *rq, ngx_http_breaker_shed_loc_conf_t *lcf);
static ngx_int_t ngx_http_breaker_shed_refuse(ngx_http_request_t *r,
    ngx_http_breaker_shed_req_t *rq, ngx_http_breaker_shed_loc_conf_t *lcf);
static void ngx_http_breaker_shed_drop(ngx_http_breaker_shed_req_t *rq,
    ngx_uint_t reason);
static ngx_uint_t ngx_http_breaker_shed_waiting_above(
    ngx_http_breaker_shed_shedder_t *sd, ngx_uint_t cls);
static ngx_http_breaker_shed_req_t *ngx_http_breaker_shed_victim(
    ngx_http_breaker_shed_shedder_t *sd, ngx_uint_t cls);
static void ngx_http_breaker_shed_enqueue(ngx_http_request_t *r,
    ngx_http_breaker_shed_req_t *rq);
static void ngx_http_breaker_shed_unqueue(ngx_http_breaker_shed_req_t *rq);
static void ngx_http_breaker_shed_resume(ngx_http_breaker_shed_req_t *rq);
static void ngx_http_breaker_shed_dispatch(
    ngx_http_breaker_shed_shedder_t *sd);
static void ngx_http_breaker_shed_codel(ngx_http_breaker_shed_shedder_t *sd);
static void ngx_http_breaker_shed_poll(ngx_event_t *ev);
static void ngx_http_breaker_shed_wake(ngx_http_request_t *r);
static void ngx_http_breaker_shed_cleanup(void *data);
static ngx_http_breaker_shed_shedder_t *ngx_http_breaker_shed_rq_shedder(
    ngx_http_breaker_shed_req_t *rq);
static void ngx_http_breaker_shed_release(ngx_http_breaker_shed_req_t *rq);
static void ngx_http_breaker_shed_sample(ngx_http_breaker_shed_shedder_t *sd,
    ngx_http_breaker_shed_req_t *rq);
static ngx_atomic_uint_t ngx_http_breaker_shed_epoch(
    ngx_http_breaker_shed_shedder_t *sd, ngx_http_breaker_shed_req_t *rq);
static uint64_t ngx_http_breaker_shed_latency(
    ngx_http_breaker_shed_req_t *rq);
static void ngx_http_breaker_shed_publish_limit(
    ngx_http_breaker_shed_shedder_t *sd);
static ngx_inline void ngx_http_breaker_shed_slot_add(uint32_t *p,
    int32_t delta);
static void ngx_http_breaker_shed_reclaim(ngx_http_breaker_shed_shedder_t *sd,
    ngx_log_t *log);

static ngx_int_t ngx_http_breaker_shed_status_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_breaker_shed_reason_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_breaker_shed_number_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);


/* $shed_status by state, copied whole: len, valid, no_cacheable,
 * not_found, escape, data */
#define ngx_http_breaker_shed_state(s)                                       \
    { sizeof(s) - 1, 1, 1, 0, 0, (u_char *) s }

static ngx_http_variable_value_t  ngx_http_breaker_shed_not_found = {
    0, 0, 1, 1, 0, NULL
};

static ngx_http_variable_value_t  ngx_http_breaker_shed_states[] = {
    { 0, 0, 1, 1, 0, NULL },
    { 0, 0, 1, 1, 0, NULL },               /* waiting: not decided yet */
    ngx_http_breaker_shed_state("ADMITTED"),
    ngx_http_breaker_shed_state("QUEUED"),
    ngx_http_breaker_shed_state("SHED")
};


static ngx_str_t  ngx_http_breaker_shed_reasons[] = {
    ngx_null_string,
    ngx_string("limit"),
    ngx_string("queue_full"),
    ngx_string("timeout"),
    ngx_string("codel"),
    ngx_string("probability"),
    ngx_string("evicted")
};


static const char  *ngx_http_breaker_shed_results[] = {
    "admitted", "queued", "shed"
};


/* queue wait, microseconds */
static const uint64_t  ngx_http_breaker_shed_wait_bounds[] = {
    1000, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000,
    2500000, 5000000, 10000000
};


static ngx_command_t  ngx_http_breaker_shed_commands[] = {

    { ngx_string("breaker_shed_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE2,
      ngx_http_breaker_shed_zone,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("breaker_shedder"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_breaker_shedder,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("breaker_shed_class"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE23,
      ngx_http_breaker_shed_class,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("breaker_shed"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE12,
      ngx_http_breaker_shed,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("breaker_shed_status"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE12,
      ngx_http_breaker_shed_status,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_breaker_shed_module_ctx = {
    ngx_http_breaker_shed_add_variables,   /* preconfiguration */
    NULL,                                  /* postconfiguration: the
                                              breaker's handler */

    ngx_http_breaker_shed_create_main_conf, /* create main configuration */
    ngx_http_breaker_shed_init_main_conf,  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_breaker_shed_create_loc_conf, /* create location configuration */
    ngx_http_breaker_shed_merge_loc_conf   /* merge location configuration */
};


ngx_module_t  ngx_http_breaker_shed_module = {
    NGX_MODULE_V1,
    &ngx_http_breaker_shed_module_ctx,     /* module context */
    ngx_http_breaker_shed_commands,        /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    ngx_http_breaker_shed_init_module,     /* init module */
    ngx_http_breaker_shed_init_process,    /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


/* the numeric variables: which value of the location's shedder */
#define NGX_HTTP_BREAKER_SHED_V_LIMIT      0
#define NGX_HTTP_BREAKER_SHED_V_IN_FLIGHT  1
#define NGX_HTTP_BREAKER_SHED_V_QUEUE      2


static ngx_http_variable_t  ngx_http_breaker_shed_vars[] = {

    { ngx_string("shed_status"), NULL,
      ngx_http_breaker_shed_status_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("shed_reason"), NULL,
      ngx_http_breaker_shed_reason_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("shed_limit"), NULL,
      ngx_http_breaker_shed_number_variable, NGX_HTTP_BREAKER_SHED_V_LIMIT,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("shed_in_flight"), NULL,
      ngx_http_breaker_shed_number_variable,
      NGX_HTTP_BREAKER_SHED_V_IN_FLIGHT,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("shed_queue"), NULL,
      ngx_http_breaker_shed_number_variable, NGX_HTTP_BREAKER_SHED_V_QUEUE,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


/* configuration */


static ngx_int_t
ngx_http_breaker_shed_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_breaker_shed_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


ngx_uint_t
ngx_http_breaker_shed_configured(ngx_conf_t *cf)
{
    ngx_http_breaker_shed_main_conf_t  *smcf;

    smcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_breaker_shed_module);

    return smcf->shedders.nelts != 0;
}


static void *
ngx_http_breaker_shed_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_breaker_shed_main_conf_t  *smcf;

    smcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_breaker_shed_main_conf_t));
    if (smcf == NULL) {
        return NULL;
    }

    if (ngx_array_init(&smcf->zones, cf->pool, 2, sizeof(void *)) != NGX_OK
        || ngx_array_init(&smcf->shedders, cf->pool, 4, sizeof(void *))
           != NGX_OK)
    {
        return NULL;
    }

    return smcf;
}


static char *
ngx_http_breaker_shed_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_breaker_shed_main_conf_t *smcf = conf;

    ngx_uint_t                        i, share;
    ngx_http_breaker_shed_shedder_t  *sd, **sds;

    sds = smcf->shedders.elts;

    for (i = 0; i < smcf->shedders.nelts; i++) {
        sd = sds[i];

        if (sd->nclasses == 0) {
            /* one class for every request */
            sd->nclasses = 1;
            ngx_str_set(&sd->classes[0].label, "0");
        }

        for (share = 0; share < sd->nclasses; share++) {
            ngx_queue_init(&sd->waiting[share]);
        }

        if (ngx_http_breaker_shed_register_stats(cf, smcf, sd) != NGX_OK) {
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_breaker_shed_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_breaker_shed_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_breaker_shed_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->name = { 0, NULL };
     */

    conf->shedder = NGX_CONF_UNSET_PTR;
    conf->priority = NGX_CONF_UNSET_PTR;
    conf->status = NGX_CONF_UNSET_UINT;
    conf->retry_after = NGX_CONF_UNSET;

    return conf;
}


static char *
ngx_http_breaker_shed_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child)
{
    ngx_http_breaker_shed_loc_conf_t *prev = parent;
    ngx_http_breaker_shed_loc_conf_t *conf = child;

    /* a shedder named before it was declared is found now, when the
     * whole http block has been read */

    if (ngx_http_breaker_shed_resolve(cf, prev) != NGX_OK
        || ngx_http_breaker_shed_resolve(cf, conf) != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    if (conf->shedder == NGX_CONF_UNSET_PTR) {
        conf->shedder = prev->shedder;
        conf->priority = prev->priority;
    }

    ngx_conf_merge_ptr_value(conf->shedder, prev->shedder, NULL);
    ngx_conf_merge_ptr_value(conf->priority, prev->priority, NULL);
    ngx_conf_merge_uint_value(conf->status, prev->status,
                              NGX_HTTP_SERVICE_UNAVAILABLE);
    ngx_conf_merge_value(conf->retry_after, prev->retry_after, 1);

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_breaker_shed_resolve(ngx_conf_t *cf,
    ngx_http_breaker_shed_loc_conf_t *lcf)
{
    ngx_http_breaker_shed_main_conf_t  *smcf;

    if (lcf->name.len == 0 || lcf->shedder != NULL) {
        return NGX_OK;
    }

    smcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_breaker_shed_module);

    lcf->shedder = ngx_http_breaker_shed_find(smcf, &lcf->name);

    if (lcf->shedder == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"breaker_shed\" names an unknown shedder "
                           "\"%V\"", &lcf->name);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* the worker's poll of a shedder for permits freed elsewhere */
static void
ngx_http_breaker_shed_poll_init(ngx_http_breaker_shed_shedder_t *sd,
    ngx_log_t *log)
{
    sd->poll_event.handler = ngx_http_breaker_shed_poll;
    sd->poll_event.data = sd;
    sd->poll_event.log = log;

    /* the poll does not hold a worker that shuts down; a waiting
     * request's own timer does, until it is admitted or shed */
    sd->poll_event.cancelable = 1;
}


static ngx_int_t
ngx_http_breaker_shed_init_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                          i;
    ngx_list_part_t                    *part;
    ngx_shm_zone_t                     *shm;
    ngx_http_breaker_shed_zone_t      **zones;
    ngx_http_breaker_shed_shedder_t    *sd, **sds;
    ngx_http_breaker_shed_main_conf_t  *smcf;

    smcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_breaker_shed_module);
    if (smcf == NULL) {
        return NGX_OK;
    }

    /* this process uses this configuration's shedders (in every zone,
     * with shedders or not: an unregistered process blocks every free) */

    zones = smcf->zones.elts;

    for (i = 0; i < smcf->zones.nelts; i++) {
        if (zones[i]->sh) {
            ngx_http_breaker_registry_register(&zones[i]->sh->registry,
                                               zones[i]->cycle);
        }
    }

    if (smcf->shedders.nelts == 0) {
        return NGX_OK;
    }

    /* the stats zone, to read the limit gauge back (see publish_limit) */

    part = &cycle->shared_memory.part;
    shm = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            shm = part->elts;
            i = 0;
        }

        if (shm[i].shm.name.len == sizeof("edge_stats_shed") - 1
            && ngx_strncmp(shm[i].shm.name.data, "edge_stats_shed",
                           sizeof("edge_stats_shed") - 1) == 0)
        {
            smcf->stats_sh = ngx_edge_stats_zone(&shm[i]);
            break;
        }
    }

    sds = smcf->shedders.elts;

    for (i = 0; i < smcf->shedders.nelts; i++) {
        sd = sds[i];

        ngx_http_breaker_shed_poll_init(sd, cycle->log);

        sd->good = ngx_current_msec;

        if (sd->node && ngx_process_slot >= 0
            && ngx_process_slot < NGX_HTTP_BREAKER_SHED_SLOTS)
        {
            sd->slot = &sd->node->slots[ngx_process_slot];
        }

        ngx_http_breaker_shed_reclaim(sd, cycle->log);

        if (ngx_worker == 0
            && (ngx_process == NGX_PROCESS_WORKER
                || ngx_process == NGX_PROCESS_SINGLE))
        {
            /* one process publishes (the cache manager and loader run
             * init_process too, with ngx_worker 0) */
            ngx_http_breaker_shed_publish_limit(sd);
        }
    }

    return NGX_OK;
}


static char *
ngx_http_breaker_shed_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_breaker_shed_main_conf_t *smcf = conf;

    ssize_t                         size;
    ngx_str_t                      *value;
    ngx_uint_t                      i;
    ngx_http_breaker_shed_zone_t   *zone, **zp;

    value = cf->args->elts;

    zp = smcf->zones.elts;

    for (i = 0; i < smcf->zones.nelts; i++) {
        if (zp[i]->name.len == value[1].len
            && ngx_strncmp(zp[i]->name.data, value[1].data, value[1].len)
               == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate breaker_shed_zone \"%V\"",
                               &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    size = ngx_parse_size(&value[2]);

    if (size == NGX_ERROR || size < (ssize_t) (8 * ngx_pagesize)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid size \"%V\" in \"breaker_shed_zone\" "
                           "\"%V\": at least %uzk", &value[2], &value[1],
                           8 * ngx_pagesize / 1024);
        return NGX_CONF_ERROR;
    }

    zone = ngx_pcalloc(cf->pool, sizeof(ngx_http_breaker_shed_zone_t));
    if (zone == NULL) {
        return NGX_CONF_ERROR;
    }

    if (ngx_array_init(&zone->shedders, cf->pool, 4, sizeof(void *))
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    zone->name = value[1];

    zone->shm_zone = ngx_shared_memory_add(cf, &value[1], size,
                                           &ngx_http_breaker_shed_module);
    if (zone->shm_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    if (zone->shm_zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "shared memory zone \"%V\" is already used",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    zone->shm_zone->init = ngx_http_breaker_shed_init_zone;
    zone->shm_zone->data = zone;

    zp = ngx_array_push(&smcf->zones);
    if (zp == NULL) {
        return NGX_CONF_ERROR;
    }

    *zp = zone;

    return NGX_CONF_OK;
}


static char *
ngx_http_breaker_shedder(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_breaker_shed_main_conf_t *smcf = conf;

    char                             *rv;
    ngx_str_t                        *value;
    ngx_uint_t                        i, limit_set;
    ngx_http_breaker_shed_shedder_t  *sd, **sp;

    value = cf->args->elts;

    if (value[1].len == 0 || value[1].len >= NGX_HTTP_BREAKER_SHED_NAME_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid shedder name \"%V\" in "
                           "\"breaker_shedder\": 1 to %d characters",
                           &value[1], NGX_HTTP_BREAKER_SHED_NAME_MAX - 1);
        return NGX_CONF_ERROR;
    }

    if (ngx_http_breaker_shed_find(smcf, &value[1]) != NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "duplicate breaker_shedder \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    sd = ngx_pcalloc(cf->pool, sizeof(ngx_http_breaker_shed_shedder_t));
    if (sd == NULL) {
        return NGX_CONF_ERROR;
    }

    sd->name = value[1];
    sd->main_conf = smcf;
    sd->file = cf->conf_file->file.name.data;
    sd->line = cf->conf_file->line;

    sd->limit = NGX_CONF_UNSET_UINT;
    sd->min_limit = NGX_CONF_UNSET_UINT;
    sd->max_limit = NGX_CONF_UNSET_UINT;
    sd->queue = 0;
    sd->queue_timeout = 1000;
    sd->codel_target = 5;
    sd->codel_interval = 100;
    sd->poll = 10;
    sd->window = 100;
    sd->window_samples = 10;
    sd->percentile = 90;
    sd->rtt_buffer = 25;
    sd->min_rtt_interval = 30000;
    sd->min_rtt_samples = 25;
    sd->jitter = 15;
    sd->smoothing = 20;

    for (i = 2; i < cf->args->nelts; i++) {
        rv = ngx_http_breaker_shedder_param(cf, smcf, sd, &value[i]);
        if (rv != NGX_CONF_OK) {
            return rv;
        }
    }

    if (sd->zone == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"breaker_shedder\" \"%V\" needs zone=",
                           &sd->name);
        return NGX_CONF_ERROR;
    }

    limit_set = (sd->limit != NGX_CONF_UNSET_UINT);

    rv = ngx_http_breaker_shedder_check(cf, sd, limit_set);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    if (smcf->shedders.nelts >= 65536) {
        /* a request keeps its shedder's index in 16 bits */
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "too many \"breaker_shedder\", at most 65536");
        return NGX_CONF_ERROR;
    }

    sd->index = smcf->shedders.nelts;

    sp = ngx_array_push(&smcf->shedders);
    if (sp == NULL) {
        return NGX_CONF_ERROR;
    }

    *sp = sd;

    sp = ngx_array_push(&sd->zone->shedders);
    if (sp == NULL) {
        return NGX_CONF_ERROR;
    }

    *sp = sd;

    return NGX_CONF_OK;
}


/* "name=value": the value as a number within [low, high], or NGX_ERROR */
static ngx_int_t
ngx_http_breaker_shed_number(ngx_str_t *v, ngx_int_t low, ngx_int_t high)
{
    ngx_int_t  n;

    n = ngx_atoi(v->data, v->len);

    if (n == NGX_ERROR || n < low || n > high) {
        return NGX_ERROR;
    }

    return n;
}


/* "50%" or "50": a percentage within [low, high] */
static ngx_int_t
ngx_http_breaker_shed_percent(ngx_str_t *v, ngx_int_t low, ngx_int_t high)
{
    ngx_str_t  s;

    s = *v;

    if (s.len && s.data[s.len - 1] == '%') {
        s.len--;
    }

    return ngx_http_breaker_shed_number(&s, low, high);
}


/* a time within [low, 1d] */
static ngx_msec_t
ngx_http_breaker_shed_msec(ngx_str_t *v, ngx_msec_t low)
{
    ngx_msec_t  ms;

    ms = ngx_parse_time(v, 0);

    if (ms == (ngx_msec_t) NGX_ERROR || ms < low || ms > 24 * 3600 * 1000) {
        return (ngx_msec_t) NGX_ERROR;
    }

    return ms;
}


/* a probability, "0.05" or "5%", in units of 1/10000 */
static ngx_int_t
ngx_http_breaker_shed_probability(ngx_str_t *v)
{
    ngx_int_t  n;

    if (v->len && v->data[v->len - 1] == '%') {
        n = ngx_atofp(v->data, v->len - 1, 2);
        return (n == NGX_ERROR || n > 10000) ? NGX_ERROR : n;
    }

    n = ngx_atofp(v->data, v->len, 4);

    return (n == NGX_ERROR || n > 10000) ? NGX_ERROR : n;
}


static char *
ngx_http_breaker_shedder_param(ngx_conf_t *cf,
    ngx_http_breaker_shed_main_conf_t *smcf,
    ngx_http_breaker_shed_shedder_t *sd, ngx_str_t *arg)
{
    u_char                         *eq;
    ngx_int_t                       n;
    ngx_str_t                       key, val;
    ngx_uint_t                      i;
    ngx_msec_t                      ms;
    ngx_http_breaker_shed_zone_t  **zp;

    if (arg->len == 8 && ngx_strncmp(arg->data, "adaptive", 8) == 0) {
        sd->adaptive = 1;
        return NGX_CONF_OK;
    }

    eq = ngx_strlchr(arg->data, arg->data + arg->len, '=');
    if (eq == NULL) {
        goto invalid;
    }

    key.data = arg->data;
    key.len = eq - arg->data;
    val.data = eq + 1;
    val.len = arg->data + arg->len - val.data;

#define ngx_key_is(s)                                                        \
    (key.len == sizeof(s) - 1 && ngx_strncmp(key.data, s, key.len) == 0)

#define ngx_set_number(field, low, high)                                     \
    n = ngx_http_breaker_shed_number(&val, low, high);                       \
    if (n == NGX_ERROR) {                                                    \
        goto bad_value;                                                      \
    }                                                                        \
    sd->field = n;                                                           \
    return NGX_CONF_OK;

#define ngx_set_percent(field, low, high)                                    \
    n = ngx_http_breaker_shed_percent(&val, low, high);                      \
    if (n == NGX_ERROR) {                                                    \
        goto bad_value;                                                      \
    }                                                                        \
    sd->field = n;                                                           \
    return NGX_CONF_OK;

#define ngx_set_msec(field, low)                                             \
    ms = ngx_http_breaker_shed_msec(&val, low);                              \
    if (ms == (ngx_msec_t) NGX_ERROR) {                                      \
        goto bad_value;                                                      \
    }                                                                        \
    sd->field = ms;                                                          \
    return NGX_CONF_OK;

    if (ngx_key_is("zone")) {
        zp = smcf->zones.elts;

        for (i = 0; i < smcf->zones.nelts; i++) {
            if (zp[i]->name.len == val.len
                && ngx_strncmp(zp[i]->name.data, val.data, val.len) == 0)
            {
                sd->zone = zp[i];
                return NGX_CONF_OK;
            }
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"breaker_shedder\" \"%V\": unknown zone "
                           "\"%V\" (declare it with breaker_shed_zone "
                           "first)", &sd->name, &val);
        return NGX_CONF_ERROR;
    }

    if (ngx_key_is("limit")) {
        ngx_set_number(limit, 1, NGX_HTTP_BREAKER_SHED_LIMIT_MAX);
    }

    if (ngx_key_is("min_limit")) {
        ngx_set_number(min_limit, 1, NGX_HTTP_BREAKER_SHED_LIMIT_MAX);
    }

    if (ngx_key_is("max_limit")) {
        ngx_set_number(max_limit, 1, NGX_HTTP_BREAKER_SHED_LIMIT_MAX);
    }

    if (ngx_key_is("queue")) {
        ngx_set_number(queue, 0, NGX_HTTP_BREAKER_SHED_LIMIT_MAX);
    }

    if (ngx_key_is("queue_timeout")) {
        ngx_set_msec(queue_timeout, 1);
    }

    if (ngx_key_is("codel_target")) {
        ngx_set_msec(codel_target, 0);
    }

    if (ngx_key_is("codel_interval")) {
        ngx_set_msec(codel_interval, 1);
    }

    if (ngx_key_is("poll")) {
        ngx_set_msec(poll, 1);
    }

    if (ngx_key_is("shed_probability")) {
        n = ngx_http_breaker_shed_probability(&val);
        if (n == NGX_ERROR) {
            goto bad_value;
        }

        sd->probability = n;
        return NGX_CONF_OK;
    }

    if (ngx_key_is("window")) {
        ngx_set_msec(window, 1);
    }

    if (ngx_key_is("window_samples")) {
        ngx_set_number(window_samples, 1, 1000000);
    }

    if (ngx_key_is("percentile")) {
        ngx_set_number(percentile, 1, 100);
    }

    if (ngx_key_is("rtt_buffer")) {
        ngx_set_percent(rtt_buffer, 0, 1000);
    }

    if (ngx_key_is("min_rtt_interval")) {
        ngx_set_msec(min_rtt_interval, 1);
    }

    if (ngx_key_is("min_rtt_samples")) {
        ngx_set_number(min_rtt_samples, 1, 1000000);
    }

    if (ngx_key_is("jitter")) {
        ngx_set_percent(jitter, 0, 100);
    }

    if (ngx_key_is("smoothing")) {
        ngx_set_percent(smoothing, 1, 100);
    }

    if (ngx_key_is("headroom")) {
        if (val.len == 4 && ngx_strncmp(val.data, "sqrt", 4) == 0) {
            sd->headroom = 0;
            return NGX_CONF_OK;
        }

        ngx_set_number(headroom, 1, NGX_HTTP_BREAKER_SHED_LIMIT_MAX);
    }

#undef ngx_key_is
#undef ngx_set_number
#undef ngx_set_percent
#undef ngx_set_msec

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\" in \"breaker_shedder\" "
                       "\"%V\"", arg, &sd->name);
    return NGX_CONF_ERROR;

bad_value:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid value \"%V\" in \"breaker_shedder\" \"%V\"",
                       arg, &sd->name);
    return NGX_CONF_ERROR;
}


static char *
ngx_http_breaker_shedder_check(ngx_conf_t *cf,
    ngx_http_breaker_shed_shedder_t *sd, ngx_uint_t limit_set)
{
    if (!sd->adaptive) {
        if (!limit_set) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"breaker_shedder\" \"%V\" needs limit= "
                               "or adaptive", &sd->name);
            return NGX_CONF_ERROR;
        }

        if (sd->min_limit != NGX_CONF_UNSET_UINT
            || sd->max_limit != NGX_CONF_UNSET_UINT)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"breaker_shedder\" \"%V\": min_limit= and "
                               "max_limit= need adaptive", &sd->name);
            return NGX_CONF_ERROR;
        }

        sd->min_limit = sd->limit;
        sd->max_limit = sd->limit;

        return NGX_CONF_OK;
    }

    if (sd->min_limit == NGX_CONF_UNSET_UINT) {
        sd->min_limit = 1;
    }

    if (sd->max_limit == NGX_CONF_UNSET_UINT) {
        sd->max_limit = 1000;
    }

    if (sd->min_limit > sd->max_limit) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"breaker_shedder\" \"%V\": min_limit=%ui is "
                           "above max_limit=%ui", &sd->name, sd->min_limit,
                           sd->max_limit);
        return NGX_CONF_ERROR;
    }

    if (!limit_set) {
        sd->limit = sd->min_limit;

    } else if (sd->limit < sd->min_limit || sd->limit > sd->max_limit) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"breaker_shedder\" \"%V\": the initial "
                           "limit=%ui is outside min_limit=%ui .. "
                           "max_limit=%ui", &sd->name, sd->limit,
                           sd->min_limit, sd->max_limit);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_breaker_shed_class(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_breaker_shed_main_conf_t *smcf = conf;

    ngx_int_t                         priority, share;
    ngx_str_t                        *value, s;
    ngx_uint_t                        i, total;
    ngx_http_breaker_shed_class_t    *cl;
    ngx_http_breaker_shed_shedder_t  *sd;

    value = cf->args->elts;

    sd = ngx_http_breaker_shed_find(smcf, &value[1]);
    if (sd == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"breaker_shed_class\" names an unknown shedder "
                           "\"%V\" (declare it with breaker_shedder first)",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    priority = ngx_http_breaker_shed_number(&value[2], 0, 1000000);
    if (priority == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid priority \"%V\" in \"breaker_shed_class\""
                           " \"%V\": 0 to 1000000", &value[2], &value[1]);
        return NGX_CONF_ERROR;
    }

    share = 0;

    if (cf->args->nelts == 4) {
        s = value[3];

        if (s.len < 6 || ngx_strncmp(s.data, "share=", 6) != 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\" in "
                               "\"breaker_shed_class\"", &value[3]);
            return NGX_CONF_ERROR;
        }

        s.data += 6;
        s.len -= 6;

        share = ngx_http_breaker_shed_percent(&s, 0, 100);
        if (share == NGX_ERROR) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid value \"%V\" in "
                               "\"breaker_shed_class\": 0%% to 100%%",
                               &value[3]);
            return NGX_CONF_ERROR;
        }
    }

    if (sd->nclasses == NGX_HTTP_BREAKER_SHED_MAX_CLASSES) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "too many \"breaker_shed_class\" for \"%V\": "
                           "%d at most", &value[1],
                           NGX_HTTP_BREAKER_SHED_MAX_CLASSES);
        return NGX_CONF_ERROR;
    }

    total = share;

    for (i = 0; i < sd->nclasses; i++) {
        if (sd->classes[i].priority == priority) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate \"breaker_shed_class\" \"%V\" %i",
                               &value[1], priority);
            return NGX_CONF_ERROR;
        }

        total += sd->classes[i].share;
    }

    if (total > 100) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"breaker_shed_class\" \"%V\": the shares add "
                           "up to %ui%%, more than 100%%", &value[1], total);
        return NGX_CONF_ERROR;
    }

    /* kept sorted, highest priority first */

    for (i = sd->nclasses; i > 0 && sd->classes[i - 1].priority < priority;
         i--)
    {
        sd->classes[i] = sd->classes[i - 1];
    }

    cl = &sd->classes[i];
    cl->priority = priority;
    cl->share = share;
    cl->label = value[2];

    sd->nclasses++;

    return NGX_CONF_OK;
}


static char *
ngx_http_breaker_shed(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_breaker_shed_loc_conf_t *lcf = conf;

    ngx_str_t                          *value, s;
    ngx_http_compile_complex_value_t    ccv;
    ngx_http_breaker_shed_main_conf_t  *smcf;

    if (lcf->shedder != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len == 3 && ngx_strncmp(value[1].data, "off", 3) == 0) {
        if (cf->args->nelts != 2) {
            return "takes no parameters with \"off\"";
        }

        lcf->shedder = NULL;
        lcf->priority = NULL;
        return NGX_CONF_OK;
    }

    smcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_breaker_shed_module);

    lcf->name = value[1];
    lcf->shedder = ngx_http_breaker_shed_find(smcf, &value[1]);
    lcf->priority = NULL;

    if (cf->args->nelts == 3) {
        s = value[2];

        if (s.len <= 9 || ngx_strncmp(s.data, "priority=", 9) != 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\" in "
                               "\"breaker_shed\"", &value[2]);
            return NGX_CONF_ERROR;
        }

        s.data += 9;
        s.len -= 9;

        lcf->priority = ngx_palloc(cf->pool,
                                   sizeof(ngx_http_complex_value_t));
        if (lcf->priority == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

        ccv.cf = cf;
        ccv.value = &s;
        ccv.complex_value = lcf->priority;

        if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_breaker_shed_status(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_breaker_shed_loc_conf_t *lcf = conf;

    time_t      sec;
    ngx_int_t   code;
    ngx_str_t  *value, s;

    if (lcf->status != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    code = ngx_atoi(value[1].data, value[1].len);

    if (code < 400 || code > 599) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid status \"%V\" in \"breaker_shed_status\":"
                           " 400 to 599", &value[1]);
        return NGX_CONF_ERROR;
    }

    lcf->status = code;

    if (cf->args->nelts == 3) {
        s = value[2];

        if (s.len <= 12 || ngx_strncmp(s.data, "retry_after=", 12) != 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\" in "
                               "\"breaker_shed_status\"", &value[2]);
            return NGX_CONF_ERROR;
        }

        s.data += 12;
        s.len -= 12;

        sec = ngx_parse_time(&s, 1);

        if (sec == (time_t) NGX_ERROR || sec > 86400) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid value \"%V\" in "
                               "\"breaker_shed_status\": 0 to 1d",
                               &value[2]);
            return NGX_CONF_ERROR;
        }

        lcf->retry_after = sec;
    }

    return NGX_CONF_OK;
}


static ngx_http_breaker_shed_shedder_t *
ngx_http_breaker_shed_find(ngx_http_breaker_shed_main_conf_t *smcf,
    ngx_str_t *name)
{
    ngx_uint_t                         i;
    ngx_http_breaker_shed_shedder_t  **sds;

    sds = smcf->shedders.elts;

    for (i = 0; i < smcf->shedders.nelts; i++) {
        if (sds[i]->name.len == name->len
            && ngx_strncmp(sds[i]->name.data, name->data, name->len) == 0)
        {
            return sds[i];
        }
    }

    return NULL;
}


static ngx_int_t
ngx_http_breaker_shed_register_stats(ngx_conf_t *cf,
    ngx_http_breaker_shed_main_conf_t *smcf,
    ngx_http_breaker_shed_shedder_t *sd)
{
    ngx_int_t                 fam;
    ngx_str_t                 values[3];
    ngx_uint_t                c, k;
    ngx_edge_stats_family_t   family;

    static const char  *labels3[] = { "shedder", "class", "result", NULL };
    static const char  *labels1[] = { "shedder", NULL };

    if (smcf->stats == NULL) {
        smcf->stats = ngx_edge_stats_create(cf, "shed",
                                            &ngx_http_breaker_shed_module);
        if (smcf->stats == NULL) {
            return NGX_ERROR;
        }
    }

    values[0] = sd->name;

    ngx_memzero(&family, sizeof(ngx_edge_stats_family_t));
    family.name = "breaker_shed_requests_total";
    family.help = "Requests through a shedder by priority class and result"
                  " (admitted at once, queued then admitted, shed).";
    family.type = NGX_EDGE_STATS_COUNTER;
    family.labels = labels3;

    fam = ngx_edge_stats_add_family(cf, smcf->stats, &family);
    if (fam == NGX_ERROR) {
        return NGX_ERROR;
    }

    for (c = 0; c < sd->nclasses; c++) {
        values[1] = sd->classes[c].label;

        for (k = 0; k < 3; k++) {
            values[2].data = (u_char *) ngx_http_breaker_shed_results[k];
            values[2].len = ngx_strlen(ngx_http_breaker_shed_results[k]);

            sd->st_requests[c][k] = ngx_edge_stats_add_series(cf,
                                                              smcf->stats,
                                                              fam, values);
            if (sd->st_requests[c][k] == NGX_EDGE_STATS_NONE) {
                return NGX_ERROR;
            }
        }
    }

#define ngx_shed_series(field, fname, fhelp, ftype)                          \
    ngx_memzero(&family, sizeof(ngx_edge_stats_family_t));                   \
    family.name = fname;                                                     \
    family.help = fhelp;                                                     \
    family.type = ftype;                                                     \
    family.labels = labels1;                                                 \
    if (ftype == NGX_EDGE_STATS_HISTOGRAM) {                                 \
        family.bounds = ngx_http_breaker_shed_wait_bounds;                   \
        family.nbounds = sizeof(ngx_http_breaker_shed_wait_bounds)           \
                         / sizeof(uint64_t);                                 \
        family.scale = 1000000;                                              \
    }                                                                        \
    fam = ngx_edge_stats_add_family(cf, smcf->stats, &family);               \
    if (fam == NGX_ERROR) {                                                  \
        return NGX_ERROR;                                                    \
    }                                                                        \
    sd->field = ngx_edge_stats_add_series(cf, smcf->stats, fam, values);     \
    if (sd->field == NGX_EDGE_STATS_NONE) {                                  \
        return NGX_ERROR;                                                    \
    }

    ngx_shed_series(st_in_flight, "breaker_shed_in_flight",
                    "Requests holding a permit of the shedder.",
                    NGX_EDGE_STATS_GAUGE);

    ngx_shed_series(st_queue, "breaker_shed_queue_length",
                    "Requests waiting in the shedder's queues (all "
                    "workers).", NGX_EDGE_STATS_GAUGE);

    ngx_shed_series(st_limit, "breaker_shed_limit",
                    "The shedder's concurrency limit now.",
                    NGX_EDGE_STATS_GAUGE);

    ngx_shed_series(st_wait, "breaker_shed_queue_wait_seconds",
                    "Time requests waited in the queue (admitted or shed).",
                    NGX_EDGE_STATS_HISTOGRAM);

#undef ngx_shed_series

    return NGX_OK;
}


/* the zone */


/*
 * In the master, for each configuration read (at start and at every
 * reload, before init_module): the shedders of this configuration are
 * found by name (kept across the reload, state and permits), taken back
 * from the retired ones, or created.  This configuration may still fail
 * (another zone, another module) and the previous one stay: nothing is
 * retired here, only at init_module, when this configuration is the one
 * that runs.  Retired shedders that no process can use any more are
 * freed first, to make room.
 */
static ngx_int_t
ngx_http_breaker_shed_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_breaker_shed_zone_t *ozone = data;

    size_t                             len;
    ngx_uint_t                         i, fresh;
    ngx_slab_pool_t                   *shpool;
    ngx_http_breaker_shed_node_t      *node;
    ngx_http_breaker_shed_zone_t      *zone;
    ngx_http_breaker_shed_shedder_t   *sd, **sds;

    zone = shm_zone->data;
    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;
    zone->shpool = shpool;

    if (ozone) {
        /* reload: the same memory, the shedders keep their state */
        zone->sh = ozone->sh;

    } else if (shm_zone->shm.exists) {
        zone->sh = shpool->data;

    } else {
        zone->sh = ngx_slab_calloc(shpool, sizeof(ngx_http_breaker_shed_sh_t));
        if (zone->sh == NULL) {
            return NGX_ERROR;
        }

        shpool->data = zone->sh;

        len = sizeof(" in breaker_shed_zone \"\"") + shm_zone->shm.name.len;

        shpool->log_ctx = ngx_slab_alloc(shpool, len);
        if (shpool->log_ctx == NULL) {
            return NGX_ERROR;
        }

        ngx_sprintf(shpool->log_ctx, " in breaker_shed_zone \"%V\"%Z",
                    &shm_zone->shm.name);

        /* a full zone is reported below, naming the shedder */
        shpool->log_nomem = 0;
    }

    ngx_shmtx_lock(&shpool->mutex);

    zone->cycle = ngx_http_breaker_registry_next(&zone->sh->registry);

    ngx_http_breaker_shed_free_unused(zone);

    sds = zone->shedders.elts;

    for (i = 0; i < zone->shedders.nelts; i++) {
        sd = sds[i];

        node = ngx_http_breaker_shed_zone_node(zone, &sd->name, &fresh);

        if (node == NULL) {
            ngx_shmtx_unlock(&shpool->mutex);

            ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                          "breaker_shed_zone \"%V\" is too small for "
                          "shedder \"%V\"", &zone->name, &sd->name);
            return NGX_ERROR;
        }

        sd->node = node;
        ngx_http_breaker_shed_configure_node(sd, fresh);
    }

    ngx_shmtx_unlock(&shpool->mutex);

    return NGX_OK;
}


/* under the zone's mutex: the node of a shedder of this configuration */
static ngx_http_breaker_shed_node_t *
ngx_http_breaker_shed_zone_node(ngx_http_breaker_shed_zone_t *zone,
    ngx_str_t *name, ngx_uint_t *fresh)
{
    ngx_http_breaker_shed_sh_t    *sh;
    ngx_http_breaker_shed_node_t  *node;

    sh = zone->sh;
    *fresh = 0;

    node = ngx_http_breaker_shed_unlink(&sh->nodes, name);

    if (node == NULL) {
        /* removed by a reload, back before it was freed: the processes
         * of older configurations release their permits on it, as on a
         * shedder that was kept */
        node = ngx_http_breaker_shed_unlink(&sh->retired, name);
    }

    if (node == NULL) {
        node = ngx_slab_calloc_locked(zone->shpool,
                                      sizeof(ngx_http_breaker_shed_node_t));
        if (node == NULL) {
            return NULL;
        }

        node->len = name->len;
        ngx_memcpy(node->name, name->data, name->len);
        node->layout = NGX_HTTP_BREAKER_SHED_LAYOUT;
        *fresh = 1;
    }

    node->cycle = zone->cycle;
    node->next = sh->nodes;
    sh->nodes = node;

    return node;
}


/* the node of that name (and of this layout) taken out of a list */
static ngx_http_breaker_shed_node_t *
ngx_http_breaker_shed_unlink(ngx_http_breaker_shed_node_t **list,
    ngx_str_t *name)
{
    ngx_http_breaker_shed_node_t  **np, *node;

    for (np = list; *np; np = &(*np)->next) {
        node = *np;

        if (node->len == name->len
            && ngx_strncmp(node->name, name->data, node->len) == 0
            && node->layout == NGX_HTTP_BREAKER_SHED_LAYOUT)
        {
            *np = node->next;
            node->next = NULL;
            return node;
        }
    }

    return NULL;
}


/* under the zone's mutex: what no process can use any more is freed */
static void
ngx_http_breaker_shed_free_unused(ngx_http_breaker_shed_zone_t *zone)
{
    ngx_uint_t                      kept;
    ngx_http_breaker_shed_node_t  **np, *node;

    kept = 0;
    np = &zone->sh->retired;

    while (*np) {
        node = *np;

        if (ngx_http_breaker_registry_in_use(&zone->sh->registry,
                                             node->cycle))
        {
            kept++;
            np = &node->next;
            continue;
        }

        *np = node->next;
        ngx_slab_free_locked(zone->shpool, node);
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "breaker_shed_zone \"%V\": %ui retired shedders kept",
                   &zone->name, kept);
}


/*
 * Under the zone's mutex: the shedders that this configuration did not
 * look up (their names are gone, or of another layout) are retired,
 * stamped with this configuration's number: the processes of older
 * ones may still hold permits on them.
 */
static void
ngx_http_breaker_shed_retire_unused(ngx_http_breaker_shed_zone_t *zone)
{
    ngx_http_breaker_shed_node_t  **np, *node;

    np = &zone->sh->nodes;

    while (*np) {
        node = *np;

        if (node->cycle == zone->cycle) {
            np = &node->next;
            continue;
        }

        *np = node->next;
        node->cycle = zone->cycle;
        node->next = zone->sh->retired;
        zone->sh->retired = node;
    }
}


/* in the master, once per configuration that runs (after init_zone) */
static ngx_int_t
ngx_http_breaker_shed_init_module(ngx_cycle_t *cycle)
{
    ngx_uint_t                          i;
    ngx_http_breaker_shed_zone_t      **zones;
    ngx_http_breaker_shed_main_conf_t  *smcf;

    smcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_breaker_shed_module);
    if (smcf == NULL) {
        return NGX_OK;
    }

    zones = smcf->zones.elts;

    for (i = 0; i < smcf->zones.nelts; i++) {
        if (zones[i]->sh == NULL) {
            continue;
        }

        ngx_shmtx_lock(&zones[i]->shpool->mutex);
        ngx_http_breaker_shed_retire_unused(zones[i]);
        ngx_shmtx_unlock(&zones[i]->shpool->mutex);
    }

    return NGX_OK;
}


/*
 * A static limit is always the configured one; an adaptive controller
 * keeps what it learnt across a reload unless its parameters changed.
 */
static void
ngx_http_breaker_shed_configure_node(ngx_http_breaker_shed_shedder_t *sd,
    ngx_uint_t fresh)
{
    uint32_t                       stamp;
    ngx_http_breaker_shed_node_t  *node;

    node = sd->node;

    if (!sd->adaptive) {
        node->mode = 0;
        node->limit = sd->limit;
        return;
    }

    ngx_crc32_init(stamp);
    ngx_crc32_update(&stamp, (u_char *) &sd->limit, sizeof(ngx_uint_t));
    ngx_crc32_update(&stamp, (u_char *) &sd->min_limit, sizeof(ngx_uint_t));
    ngx_crc32_update(&stamp, (u_char *) &sd->max_limit, sizeof(ngx_uint_t));
    ngx_crc32_update(&stamp, (u_char *) &sd->window, sizeof(ngx_msec_t));
    ngx_crc32_update(&stamp, (u_char *) &sd->percentile, sizeof(ngx_uint_t));
    ngx_crc32_update(&stamp, (u_char *) &sd->min_rtt_interval,
                     sizeof(ngx_msec_t));
    ngx_crc32_final(stamp);

    stamp |= 1;       /* never 0, the static mode */

    if (fresh || node->mode != stamp) {
        node->mode = stamp;
        ngx_http_breaker_shed_ctl_reset(sd);
    }

    node->limit = ngx_http_breaker_shed_ctl_limit(sd);
}


/* the request path */


ngx_int_t
ngx_http_breaker_shed_handler(ngx_http_request_t *r)
{
    return ngx_http_breaker_shed_phase(r, 0, NULL);
}


/*
 * The one PRECONTENT handler of both layers, when the configuration has
 * both (ngx_http_breaker_module.c registers it): the shedder's permit
 * first (a request waits for it in the queue before the circuit admits
 * it: a half-open probe is taken only by a request about to go upstream),
 * then the route circuit, whose context shares the shedder's allocation.
 * One handler, not two, each inlined: every handler costs a turn of the
 * phase engine on every request.
 */
ngx_int_t
ngx_http_breaker_shed_route_handler(ngx_http_request_t *r)
{
    void                         *spare;
    ngx_int_t                     rc;
    ngx_http_breaker_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_breaker_module);

    spare = NULL;

    rc = ngx_http_breaker_shed_phase(r,
                                     lcf->route
                                     ? sizeof(ngx_http_breaker_ctx_t) : 0,
                                     &spare);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    return ngx_http_breaker_route_phase(r, lcf, spare);
}

/*
 * The path of a request admitted at once is kept short: the priority is
 * evaluated only with several classes; when no request waits in this
 * worker there is nothing to dispatch and no one ahead, only the CAS on
 * the permits.  With extra, a new context is allocated with that many
 * bytes after it, handed to the caller in *spare (one allocation for the
 * breaker's two layers).
 */
static ngx_inline ngx_int_t
ngx_http_breaker_shed_phase(ngx_http_request_t *r, size_t extra,
    void **spare)
{
    ngx_http_breaker_shed_req_t       *rq;
    ngx_http_breaker_shed_shedder_t   *sd;
    ngx_http_breaker_shed_loc_conf_t  *lcf;

    if (r != r->main) {
        /* a subrequest runs under its main request's permit, but for a
         * background one that its main request does not cover */
        return r->background ? ngx_http_breaker_shed_background(r)
                             : NGX_DECLINED;
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_breaker_shed_module);

    sd = lcf->shedder;

    if (sd == NULL || sd->node == NULL) {
        return NGX_DECLINED;
    }

    rq = ngx_http_get_module_ctx(r, ngx_http_breaker_shed_module);

    if (rq == NULL && r->internal) {
        rq = ngx_http_breaker_shed_get(r);
    }

    if (rq) {
        return ngx_http_breaker_shed_decided(r, rq, lcf);
    }

    rq = ngx_http_breaker_shed_create(r, sd, extra, spare);
    if (rq == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (sd->nclasses > 1) {
        rq->cls = ngx_http_breaker_shed_class_of(r, lcf);
    }

    if (sd->nwaiting) {
        return ngx_http_breaker_shed_behind(r, rq, lcf);
    }

    /* CoDel's "good" is set when the queue fills again */

    if (ngx_http_breaker_shed_admit(sd, rq->cls)) {
        ngx_http_breaker_shed_granted(sd, rq, NGX_HTTP_BREAKER_SHED_ADMITTED);
        return NGX_DECLINED;
    }

    return ngx_http_breaker_shed_over_limit(r, rq, lcf);
}


/* resumed, or again after an internal redirect: decided once */
static ngx_int_t
ngx_http_breaker_shed_decided(ngx_http_request_t *r,
    ngx_http_breaker_shed_req_t *rq, ngx_http_breaker_shed_loc_conf_t *lcf)
{
    switch (rq->state) {

    case NGX_HTTP_BREAKER_SHED_WAITING:
        return NGX_AGAIN;

    case NGX_HTTP_BREAKER_SHED_SHED:
        if (!rq->refused) {
            return ngx_http_breaker_shed_refuse(r, rq, lcf);
        }

        /* the fallback (error_page) of a shed request is served */
        return NGX_DECLINED;

    default:
        return NGX_DECLINED;
    }
}


/* a new request while others wait in this worker */
static ngx_int_t
ngx_http_breaker_shed_behind(ngx_http_request_t *r,
    ngx_http_breaker_shed_req_t *rq, ngx_http_breaker_shed_loc_conf_t *lcf)
{
    ngx_http_breaker_shed_shedder_t  *sd;

    sd = lcf->shedder;

    /* permits freed in other workers go to those waiting here first */
    ngx_http_breaker_shed_dispatch(sd);

    if (!ngx_http_breaker_shed_waiting_above(sd, rq->cls)
        && ngx_http_breaker_shed_admit(sd, rq->cls))
    {
        ngx_http_breaker_shed_granted(sd, rq, NGX_HTTP_BREAKER_SHED_ADMITTED);

        /* no wait: a sojourn of 0 for CoDel */
        sd->good = ngx_current_msec;

        return NGX_DECLINED;
    }

    return ngx_http_breaker_shed_over_limit(r, rq, lcf);
}


/* the request's permit or place: its context, or after an internal
 * redirect its cleanup */
static ngx_http_breaker_shed_req_t *
ngx_http_breaker_shed_get(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t           *cln;
    ngx_http_breaker_shed_req_t  *rq;

    rq = ngx_http_get_module_ctx(r, ngx_http_breaker_shed_module);

    if (rq || !r->internal) {
        /* found, or neither redirected nor a subrequest: none */
        return rq;
    }

    /* an internal redirect wiped the module contexts, not the cleanups */

    for (cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler != ngx_http_breaker_shed_cleanup) {
            continue;
        }

        rq = cln->data;

        if (rq->request == r) {
            /* a background subrequest's permit is in its main request's
             * pool too */
            ngx_http_set_ctx(r, rq, ngx_http_breaker_shed_module);
            return rq;
        }
    }

    return NULL;
}


/*
 * A background subrequest (the cache module's update of a stale entry, a
 * mirror) goes upstream on its own, while its main request may hold no
 * permit: it was answered before the shedder (a stale hit from the
 * cache), or it was shed.  Such a subrequest takes a permit of its own,
 * at once or not at all: it cannot wait in the queue (its connection is
 * its main request's, whose response may be on its way), nor ahead of
 * requests that wait.  It is of the lowest class, and holds the permit
 * until its main request is freed (the pool is its main request's), as a
 * main request's permit covers its subrequests.
 */
static NGX_EDGE_COLD ngx_int_t
ngx_http_breaker_shed_background(ngx_http_request_t *r)
{
    ngx_http_breaker_shed_req_t       *rq;
    ngx_http_breaker_shed_shedder_t   *sd;
    ngx_http_breaker_shed_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_breaker_shed_module);

    sd = lcf->shedder;

    if (sd == NULL || sd->node == NULL) {
        return NGX_DECLINED;
    }

    rq = ngx_http_breaker_shed_get(r);

    if (rq) {
        /* again, after an internal redirect of the subrequest */
        return ngx_http_breaker_shed_decided(r, rq, lcf);
    }

    rq = ngx_http_breaker_shed_get(r->main);

    if (rq && rq->permit) {
        return NGX_DECLINED;
    }

    rq = ngx_http_breaker_shed_create(r, sd, 0, NULL);
    if (rq == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rq->cls = sd->nclasses - 1;

    if (sd->nwaiting == 0 && ngx_http_breaker_shed_admit(sd, rq->cls)) {
        ngx_http_breaker_shed_granted(sd, rq, NGX_HTTP_BREAKER_SHED_ADMITTED);
        return NGX_DECLINED;
    }

    ngx_http_breaker_shed_drop(rq, NGX_HTTP_BREAKER_SHED_LIMIT);

    return ngx_http_breaker_shed_refuse(r, rq, lcf);
}


/* the shedder a request's permit or place is of (a request keeps its
 * index: 8 bytes fewer in every request's pool) */
static ngx_http_breaker_shed_shedder_t *
ngx_http_breaker_shed_rq_shedder(ngx_http_breaker_shed_req_t *rq)
{
    ngx_http_breaker_shed_shedder_t    **sds;
    ngx_http_breaker_shed_main_conf_t   *smcf;

    smcf = ngx_http_get_module_main_conf(rq->request,
                                         ngx_http_breaker_shed_module);
    sds = smcf->shedders.elts;

    return sds[rq->shedder];
}


static ngx_inline ngx_http_breaker_shed_req_t *
ngx_http_breaker_shed_create(ngx_http_request_t *r,
    ngx_http_breaker_shed_shedder_t *sd, size_t extra, void **spare)
{
    ngx_http_breaker_shed_req_t  *rq;

    /* the fields read before they are written are set here: no memset */
    rq = ngx_palloc(r->pool, sizeof(ngx_http_breaker_shed_req_t) + extra);
    if (rq == NULL) {
        return NULL;
    }

    if (extra) {
        *spare = rq + 1;
    }

    /* queue: set when it is queued; admitted, epoch: set with the permit
     * of an adaptive shedder, read only then */

    rq->request = r;
    rq->shedder = sd->index;
    rq->cls = 0;
    rq->state = 0;
    rq->reason = 0;
    rq->permit = 0;
    rq->posted = 0;
    rq->refused = 0;

    ngx_edge_pool_cleanup_link(r->pool, &rq->cln,
                               ngx_http_breaker_shed_cleanup, rq);

    ngx_http_set_ctx(r, rq, ngx_http_breaker_shed_module);

    return rq;
}


/*
 * The class (of a shedder with several) of the highest priority not above
 * the request's; a request below every class, or without a numeric
 * priority, is in the lowest.  Never inlined: its addressed local would
 * give the handler a stack canary on every request's path.
 */
static __attribute__((noinline)) ngx_uint_t
ngx_http_breaker_shed_class_of(ngx_http_request_t *r,
    ngx_http_breaker_shed_loc_conf_t *lcf)
{
    ngx_int_t                         n;
    ngx_str_t                         v;
    ngx_uint_t                        i;
    ngx_http_breaker_shed_shedder_t  *sd;

    sd = lcf->shedder;

    if (lcf->priority == NULL) {
        return sd->nclasses - 1;
    }

    if (ngx_http_complex_value(r, lcf->priority, &v) != NGX_OK) {
        return sd->nclasses - 1;
    }

    n = ngx_atoi(v.data, v.len);

    if (n == NGX_ERROR) {
        return sd->nclasses - 1;
    }

    for (i = 0; i < sd->nclasses; i++) {
        if (n >= sd->classes[i].priority) {
            return i;
        }
    }

    return sd->nclasses - 1;
}


static ngx_uint_t
ngx_http_breaker_shed_reserve(ngx_http_breaker_shed_shedder_t *sd,
    ngx_uint_t limit, ngx_uint_t cls)
{
    return limit * sd->classes[cls].share / 100;
}


/*
 * One permit, or none.  The limit is a hard cap, taken by a CAS on the
 * in-flight count: with one class, that is all (inlined where it is
 * called).
 */
static ngx_inline ngx_uint_t
ngx_http_breaker_shed_admit(ngx_http_breaker_shed_shedder_t *sd,
    ngx_uint_t cls)
{
    ngx_uint_t                     limit;
    ngx_atomic_uint_t              n;
    ngx_http_breaker_shed_node_t  *node;

    if (sd->nclasses > 1) {
        return ngx_http_breaker_shed_admit_class(sd, cls);
    }

    node = sd->node;
    limit = node->limit;

    do {
        n = node->in_flight;

        if (n >= limit) {
            return 0;
        }

    } while (!ngx_atomic_cmp_set(&node->in_flight, n, n + 1));

    if (sd->slot) {
        ngx_http_breaker_shed_slot_add(&sd->slot->single, 1);
    }

    return 1;
}


/*
 * With several classes, a class's guaranteed share reserves that many
 * permits for it while it has requests waiting (in any worker): another
 * class is admitted only if the permits left still cover the unused
 * reservations of the classes that wait; a class below its share is
 * admitted whenever a permit is free.  The reservations are read without
 * a lock: two workers admitting at the same instant may both count the
 * same free permit as unreserved, never more than the limit.
 */
static ngx_uint_t
ngx_http_breaker_shed_admit_class(ngx_http_breaker_shed_shedder_t *sd,
    ngx_uint_t cls)
{
    ngx_uint_t                     k, limit, held, reserve, in;
    ngx_atomic_uint_t              n;
    ngx_http_breaker_shed_node_t  *node;

    node = sd->node;
    limit = node->limit;

    for ( ;; ) {
        n = node->in_flight;

        if (n >= limit) {
            return 0;
        }

        if (node->class_in_flight[cls]
            >= ngx_http_breaker_shed_reserve(sd, limit, cls))
        {
            held = 0;

            for (k = 0; k < sd->nclasses; k++) {
                if (k == cls || sd->classes[k].share == 0
                    || node->class_queued[k] == 0)
                {
                    continue;
                }

                reserve = ngx_http_breaker_shed_reserve(sd, limit, k);
                in = node->class_in_flight[k];

                if (in < reserve) {
                    held += reserve - in;
                }
            }

            if (n + 1 + held > limit) {
                return 0;
            }
        }

        if (ngx_atomic_cmp_set(&node->in_flight, n, n + 1)) {
            break;
        }
    }

    (void) ngx_atomic_fetch_add(&node->class_in_flight[cls], 1);

    if (sd->slot) {
        ngx_http_breaker_shed_slot_add(&sd->slot->in_flight[cls], 1);
    }

    return 1;
}


/* the permit is the request's: counted (inlined, the state a constant) */
static ngx_inline void
ngx_http_breaker_shed_granted(ngx_http_breaker_shed_shedder_t *sd,
    ngx_http_breaker_shed_req_t *rq, ngx_uint_t state)
{
    uint64_t                           *p;
    ngx_http_breaker_shed_main_conf_t  *smcf;

    rq->state = state;
    rq->permit = 1;

    if (sd->adaptive) {
        ngx_http_breaker_shed_stamp(sd, rq);
    }

    if (sd->refs_worker != (ngx_uint_t) ngx_worker + 1) {
        ngx_http_breaker_shed_stats_refs(sd);
    }

    ngx_edge_stats_ref_add(sd->ref_in_flight, 1);

    if (state == NGX_HTTP_BREAKER_SHED_ADMITTED) {

        if (sd->slot) {
            /* this process's own count: no locked instruction */
            p = &sd->slot->admitted[rq->cls];
            __atomic_store_n(p, __atomic_load_n(p, __ATOMIC_RELAXED) + 1,
                             __ATOMIC_RELAXED);

        } else {
            (void) ngx_atomic_fetch_add(&sd->node->admitted[rq->cls], 1);
        }

        ngx_edge_stats_ref_add(sd->ref_admitted[rq->cls], 1);

        return;
    }

    (void) ngx_atomic_fetch_add(&sd->node->dequeued[rq->cls], 1);

    smcf = sd->main_conf;
    ngx_edge_stats_add(smcf->stats,
                       sd->st_requests[rq->cls][NGX_HTTP_BREAKER_SHED_R_QUEUED],
                       1);
}


/*
 * A process resolves the handles of the series it updates with every
 * permit (this configuration's, in its slot of the stats zone) at its
 * first grant: in the worker, whatever the process model.
 */
static void
ngx_http_breaker_shed_stats_refs(ngx_http_breaker_shed_shedder_t *sd)
{
    ngx_uint_t                          c;
    ngx_edge_stats_id_t                 id;
    ngx_http_breaker_shed_main_conf_t  *smcf;

    smcf = sd->main_conf;

    for (c = 0; c < sd->nclasses; c++) {
        id = sd->st_requests[c][NGX_HTTP_BREAKER_SHED_R_ADMITTED];
        sd->ref_admitted[c] = ngx_edge_stats_ref(smcf->stats, id);
    }

    sd->ref_in_flight = ngx_edge_stats_ref(smcf->stats, sd->st_in_flight);
    sd->refs_worker = ngx_worker + 1;
}


/*
 * What the adaptive controller's sample reads: the time of admission (the
 * latency when no upstream timed the request) and the phase.  Never
 * inlined: the clock's addressed timespec would give its caller a stack
 * canary on every admission.
 */
static __attribute__((noinline)) void
ngx_http_breaker_shed_stamp(ngx_http_breaker_shed_shedder_t *sd,
    ngx_http_breaker_shed_req_t *rq)
{
    rq->admitted = ngx_edge_mono_usec();
    rq->epoch = (uint32_t) sd->node->ctl.epoch;
}


static ngx_int_t
ngx_http_breaker_shed_over_limit(ngx_http_request_t *r,
    ngx_http_breaker_shed_req_t *rq, ngx_http_breaker_shed_loc_conf_t *lcf)
{
    ngx_http_breaker_shed_req_t      *victim;
    ngx_http_breaker_shed_shedder_t  *sd;

    sd = ngx_http_breaker_shed_rq_shedder(rq);

    if (sd->probability && rq->cls == sd->nclasses - 1
        && (ngx_uint_t) (ngx_random() % 10000) < sd->probability)
    {
        ngx_http_breaker_shed_drop(rq, NGX_HTTP_BREAKER_SHED_PROBABILITY);
        return ngx_http_breaker_shed_refuse(r, rq, lcf);
    }

    if (sd->queue == 0) {
        ngx_http_breaker_shed_drop(rq, NGX_HTTP_BREAKER_SHED_LIMIT);
        return ngx_http_breaker_shed_refuse(r, rq, lcf);
    }

    if (sd->nwaiting >= sd->queue) {
        /* a full queue: the newest of a lower class makes room */
        victim = ngx_http_breaker_shed_victim(sd, rq->cls);

        if (victim == NULL) {
            ngx_http_breaker_shed_drop(rq, NGX_HTTP_BREAKER_SHED_QUEUE_FULL);
            return ngx_http_breaker_shed_refuse(r, rq, lcf);
        }

        ngx_http_breaker_shed_unqueue(victim);
        ngx_http_breaker_shed_drop(victim, NGX_HTTP_BREAKER_SHED_EVICTED);
        ngx_http_breaker_shed_resume(victim);
    }

    ngx_http_breaker_shed_enqueue(r, rq);

    return NGX_AGAIN;
}


static ngx_int_t
ngx_http_breaker_shed_refuse(ngx_http_request_t *r,
    ngx_http_breaker_shed_req_t *rq, ngx_http_breaker_shed_loc_conf_t *lcf)
{
    ngx_table_elt_t  *h;

    rq->refused = 1;

    if (lcf->retry_after) {
        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        h->value.data = ngx_pnalloc(r->pool, NGX_TIME_T_LEN);
        if (h->value.data == NULL) {
            h->hash = 0;
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        h->hash = 1;
#if (nginx_version >= 1023000)
        h->next = NULL;
#endif
        ngx_str_set(&h->key, "Retry-After");
        h->value.len = ngx_sprintf(h->value.data, "%T",
                                   (time_t) lcf->retry_after)
                       - h->value.data;
    }

    return lcf->status;
}


/* the request is shed: counted; the caller refuses or resumes it */
static void
ngx_http_breaker_shed_drop(ngx_http_breaker_shed_req_t *rq,
    ngx_uint_t reason)
{
    ngx_http_breaker_shed_shedder_t    *sd;
    ngx_http_breaker_shed_main_conf_t  *smcf;

    sd = ngx_http_breaker_shed_rq_shedder(rq);
    smcf = sd->main_conf;

    rq->state = NGX_HTTP_BREAKER_SHED_SHED;
    rq->reason = reason;

    (void) ngx_atomic_fetch_add(&sd->node->shed[rq->cls], 1);
    sd->node->last_shed = (ngx_atomic_uint_t) ngx_edge_mono_usec();
    ngx_edge_stats_add(smcf->stats,
                       sd->st_requests[rq->cls][NGX_HTTP_BREAKER_SHED_R_SHED],
                       1);

    ngx_log_error(NGX_LOG_INFO, rq->request->connection->log, 0,
                  "breaker shedder \"%V\" shed the request: %V",
                  &sd->name, &ngx_http_breaker_shed_reasons[reason]);
}


/* 1: a request of this class or a higher one waits in this worker */
static ngx_uint_t
ngx_http_breaker_shed_waiting_above(ngx_http_breaker_shed_shedder_t *sd,
    ngx_uint_t cls)
{
    ngx_uint_t  i;

    if (sd->nwaiting == 0) {
        return 0;
    }

    for (i = 0; i <= cls; i++) {
        if (!ngx_queue_empty(&sd->waiting[i])) {
            return 1;
        }
    }

    return 0;
}


/* the newest waiting request of the lowest class below cls, or NULL */
static ngx_http_breaker_shed_req_t *
ngx_http_breaker_shed_victim(ngx_http_breaker_shed_shedder_t *sd,
    ngx_uint_t cls)
{
    ngx_uint_t  i;

    for (i = sd->nclasses - 1; i > cls; i--) {
        if (!ngx_queue_empty(&sd->waiting[i])) {
            return ngx_queue_data(ngx_queue_last(&sd->waiting[i]),
                                  ngx_http_breaker_shed_req_t, queue);
        }
    }

    return NULL;
}


static void
ngx_http_breaker_shed_enqueue(ngx_http_request_t *r,
    ngx_http_breaker_shed_req_t *rq)
{
    ngx_http_breaker_shed_shedder_t    *sd;
    ngx_http_breaker_shed_main_conf_t  *smcf;

    sd = ngx_http_breaker_shed_rq_shedder(rq);
    smcf = sd->main_conf;

    if (sd->nwaiting == 0) {
        /* the queue was empty until now */
        sd->good = ngx_current_msec;
    }

    rq->state = NGX_HTTP_BREAKER_SHED_WAITING;
    rq->enqueued = ngx_current_msec;

    ngx_queue_insert_tail(&sd->waiting[rq->cls], &rq->queue);
    sd->nwaiting++;

    (void) ngx_atomic_fetch_add(&sd->node->queued, 1);
    (void) ngx_atomic_fetch_add(&sd->node->class_queued[rq->cls], 1);

    if (sd->slot) {
        ngx_http_breaker_shed_slot_add(&sd->slot->queued[rq->cls], 1);
    }

    ngx_edge_stats_add(smcf->stats, sd->st_queue, 1);

    /*
     * Parked: a client that goes away is noticed (and the cleanup leaves
     * the queue); the write event resumes the request, from its timer
     * (not cancelable: a worker that shuts down keeps it until the
     * request is admitted or shed) or posted by the dispatcher.
     */

    r->read_event_handler = ngx_http_test_reading;
    r->write_event_handler = ngx_http_breaker_shed_wake;

    ngx_add_timer(r->connection->write, sd->queue_timeout);

    if (sd->poll_event.handler == NULL) {
        /* master_process off: a reload's cycle runs no init_process */
        ngx_http_breaker_shed_poll_init(sd, ngx_cycle->log);
    }

    if (!sd->poll_event.timer_set) {
        ngx_add_timer(&sd->poll_event, sd->poll);
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "breaker shedder \"%V\": queued, %ui waiting",
                   &sd->name, sd->nwaiting);
}


static void
ngx_http_breaker_shed_unqueue(ngx_http_breaker_shed_req_t *rq)
{
    ngx_msec_t                          wait;
    ngx_http_breaker_shed_shedder_t    *sd;
    ngx_http_breaker_shed_main_conf_t  *smcf;

    sd = ngx_http_breaker_shed_rq_shedder(rq);
    smcf = sd->main_conf;

    ngx_queue_remove(&rq->queue);
    sd->nwaiting--;

    if (sd->slot) {
        ngx_http_breaker_shed_slot_add(&sd->slot->queued[rq->cls], -1);
    }

    (void) ngx_atomic_fetch_add(&sd->node->queued, -1);
    (void) ngx_atomic_fetch_add(&sd->node->class_queued[rq->cls], -1);
    ngx_edge_stats_add(smcf->stats, sd->st_queue, -1);

    wait = ngx_current_msec - rq->enqueued;
    ngx_edge_stats_observe(smcf->stats, sd->st_wait, (uint64_t) wait * 1000);

    if (sd->nwaiting == 0) {
        sd->good = ngx_current_msec;
    }
}


/* from the event loop: the request's write handler runs the phases */
static void
ngx_http_breaker_shed_resume(ngx_http_breaker_shed_req_t *rq)
{
    ngx_event_t  *wev;

    wev = rq->request->connection->write;

    if (wev->timer_set) {
        ngx_del_timer(wev);
    }

    rq->posted = 1;
    ngx_post_event(wev, &ngx_posted_events);
}


/*
 * Permits to the requests waiting in this worker: highest class first,
 * first come first served within a class; a class that cannot be admitted
 * (its share is held for another) lets the next try.
 */
static void
ngx_http_breaker_shed_dispatch(ngx_http_breaker_shed_shedder_t *sd)
{
    ngx_uint_t                    i;
    ngx_msec_t                    wait;
    ngx_queue_t                  *q;
    ngx_http_breaker_shed_req_t  *rq;

    if (sd->nwaiting == 0) {
        return;
    }

    ngx_http_breaker_shed_codel(sd);

    for (i = 0; i < sd->nclasses && sd->nwaiting; i++) {

        while (!ngx_queue_empty(&sd->waiting[i])) {

            if (!ngx_http_breaker_shed_admit(sd, i)) {
                break;
            }

            q = ngx_queue_head(&sd->waiting[i]);
            rq = ngx_queue_data(q, ngx_http_breaker_shed_req_t, queue);

            wait = ngx_current_msec - rq->enqueued;

            ngx_http_breaker_shed_unqueue(rq);
            ngx_http_breaker_shed_granted(sd, rq,
                                          NGX_HTTP_BREAKER_SHED_QUEUED);

            if (wait <= sd->codel_target) {
                sd->good = ngx_current_msec;
            }

            ngx_http_breaker_shed_resume(rq);
        }
    }
}


/*
 * CoDel-style expiry, per worker: the queue is "good" when it is empty or
 * a request leaves it, admitted, after waiting at most codel_target (a
 * request admitted without waiting counts, with a wait of 0).  When the
 * queue has not been good for codel_interval (that is, the minimum wait
 * over the last interval exceeds the target: a standing queue), every
 * request that has waited more than codel_target is shed, oldest first,
 * instead of waiting for its queue_timeout.
 */
static void
ngx_http_breaker_shed_codel(ngx_http_breaker_shed_shedder_t *sd)
{
    ngx_uint_t                    i;
    ngx_msec_t                    now;
    ngx_queue_t                  *q;
    ngx_http_breaker_shed_req_t  *rq;

    if (sd->codel_target == 0 || sd->nwaiting == 0) {
        return;
    }

    now = ngx_current_msec;

    if (now - sd->good <= sd->codel_interval) {
        return;
    }

    /* with classes, the highest one is never shed by CoDel: it is
     * dispatched first and waits up to queue_timeout, so a standing queue
     * of lower classes (the overload CoDel is for) cannot make it fail */
    for (i = (sd->nclasses > 1) ? 1 : 0; i < sd->nclasses; i++) {

        while (!ngx_queue_empty(&sd->waiting[i])) {
            q = ngx_queue_head(&sd->waiting[i]);
            rq = ngx_queue_data(q, ngx_http_breaker_shed_req_t, queue);

            if (now - rq->enqueued <= sd->codel_target) {
                break;
            }

            ngx_http_breaker_shed_unqueue(rq);
            ngx_http_breaker_shed_drop(rq, NGX_HTTP_BREAKER_SHED_CODEL);
            ngx_http_breaker_shed_resume(rq);
        }
    }
}


/* permits freed in other workers are found here: every poll interval
 * while requests wait in this worker */
static void
ngx_http_breaker_shed_poll(ngx_event_t *ev)
{
    ngx_http_breaker_shed_shedder_t  *sd;

    sd = ev->data;

    ngx_http_breaker_shed_dispatch(sd);

    if (sd->nwaiting) {
        ngx_add_timer(ev, sd->poll);
    }
}


static void
ngx_http_breaker_shed_wake(ngx_http_request_t *r)
{
    ngx_event_t                  *wev;
    ngx_http_breaker_shed_req_t  *rq;

    wev = r->connection->write;
    rq = ngx_http_breaker_shed_get(r);

    if (rq && rq->state == NGX_HTTP_BREAKER_SHED_WAITING) {
        if (!wev->timedout) {
            /* a write event of the connection, not ours: wait on */
            return;
        }

        wev->timedout = 0;

        ngx_http_breaker_shed_unqueue(rq);
        ngx_http_breaker_shed_drop(rq, NGX_HTTP_BREAKER_SHED_TIMEOUT);
    }

    if (rq) {
        rq->posted = 0;
    }

    if (wev->timer_set) {
        ngx_del_timer(wev);
    }

    r->read_event_handler = ngx_http_block_reading;
    r->write_event_handler = ngx_http_core_run_phases;

    ngx_http_core_run_phases(r);
}


static void
ngx_http_breaker_shed_cleanup(void *data)
{
    ngx_http_breaker_shed_req_t *rq = data;

    ngx_event_t  *wev;

    if (rq->state == NGX_HTTP_BREAKER_SHED_WAITING) {
        /* the client went away while waiting */
        ngx_http_breaker_shed_unqueue(rq);
        rq->state = 0;

        wev = rq->request->connection->write;

        if (wev->timer_set) {
            ngx_del_timer(wev);
        }
    }

    if (rq->posted) {
        rq->posted = 0;

        wev = rq->request->connection->write;

        if (wev->posted) {
            ngx_delete_posted_event(wev);
        }
    }

    if (rq->permit) {
        ngx_http_breaker_shed_release(rq);
    }
}


static void
ngx_http_breaker_shed_release(ngx_http_breaker_shed_req_t *rq)
{
    ngx_http_breaker_shed_shedder_t  *sd;

    sd = ngx_http_breaker_shed_rq_shedder(rq);

    rq->permit = 0;

    if (sd->nclasses == 1) {
        if (sd->slot) {
            ngx_http_breaker_shed_slot_add(&sd->slot->single, -1);
        }

    } else {
        if (sd->slot) {
            ngx_http_breaker_shed_slot_add(&sd->slot->in_flight[rq->cls], -1);
        }

        (void) ngx_atomic_fetch_add(&sd->node->class_in_flight[rq->cls], -1);
    }

    (void) ngx_atomic_fetch_add(&sd->node->in_flight, -1);

    /* resolved by the grant of the permit, in this process */
    ngx_edge_stats_ref_add(sd->ref_in_flight, -1);

    if (sd->adaptive) {
        ngx_http_breaker_shed_sample(sd, rq);
    }

    ngx_http_breaker_shed_dispatch(sd);
}


/*
 * The adaptive controller's sample of a request that gave its permit
 * back.  Never inlined: the clock's addressed timespec would give the
 * release of every permit a stack canary.
 */
static __attribute__((noinline)) void
ngx_http_breaker_shed_sample(ngx_http_breaker_shed_shedder_t *sd,
    ngx_http_breaker_shed_req_t *rq)
{
    uint64_t                  usec;
    ngx_atomic_uint_t         epoch;
    ngx_http_upstream_t      *u;

    u = rq->request->upstream;

    if (u && u->upgrade) {
        /* an upgraded connection's lifetime is no response time */
        return;
    }

    usec = ngx_http_breaker_shed_latency(rq);
    epoch = ngx_http_breaker_shed_epoch(sd, rq);

    if (ngx_http_breaker_shed_ctl_sample(sd, epoch, usec)) {
        ngx_http_breaker_shed_publish_limit(sd);
    }
}


/*
 * The epoch a request was admitted under, from the 32 bits it keeps: the
 * current epoch's if they match (the sample counts), another one if not
 * (it is dropped), but after 2^32 phase changes in one request.
 */
static ngx_atomic_uint_t
ngx_http_breaker_shed_epoch(ngx_http_breaker_shed_shedder_t *sd,
    ngx_http_breaker_shed_req_t *rq)
{
    ngx_atomic_uint_t  epoch;

    epoch = sd->node->ctl.epoch;

    return (epoch & ~(ngx_atomic_uint_t) 0xffffffff) | rq->epoch;
}


/*
 * The latency of an admitted request: the upstream's response time when
 * an upstream answered and took at least a millisecond (nginx keeps it in
 * milliseconds), else the time from admission to now (the end of the
 * request, after the log phase).
 */
static uint64_t
ngx_http_breaker_shed_latency(ngx_http_breaker_shed_req_t *rq)
{
    int64_t                      now;
    uint64_t                     ms;
    ngx_uint_t                   i;
    ngx_http_request_t          *r;
    ngx_http_upstream_state_t   *state;

    r = rq->request;
    ms = 0;

    if (r->upstream_states) {
        state = r->upstream_states->elts;

        for (i = 0; i < r->upstream_states->nelts; i++) {
            if (state[i].peer && state[i].response_time != (ngx_msec_t) -1) {
                ms += state[i].response_time;
            }
        }
    }

    if (ms) {
        return ms * 1000;
    }

    now = ngx_edge_mono_usec();

    return (now > rq->admitted) ? (uint64_t) (now - rq->admitted) : 1;
}


/*
 * The limit gauge follows the shedder's limit: the registry's gauges are
 * sums of deltas, so the difference to the value read back is added.
 * Called by the worker that changed the limit (one per window), and at
 * start by worker 0.
 */
static void
ngx_http_breaker_shed_publish_limit(ngx_http_breaker_shed_shedder_t *sd)
{
    int64_t                             v;
    ngx_http_breaker_shed_main_conf_t  *smcf;

    smcf = sd->main_conf;

    if (smcf->stats_sh == NULL || sd->st_limit < 0
        || (ngx_uint_t) sd->st_limit >= ngx_edge_stats_nseries(smcf->stats_sh))
    {
        return;
    }

    v = ngx_edge_stats_read(smcf->stats_sh,
                            &smcf->stats_sh->series[sd->st_limit], 0);

    if (v != (int64_t) sd->node->limit) {
        ngx_edge_stats_add(smcf->stats, sd->st_limit,
                           (int64_t) sd->node->limit - v);
    }
}


/* a count of this process's slot: only this process writes it (the one
 * that follows a dead one, in init_process, before any request), so a
 * plain add, no locked instruction; atomic stores for the readers */
static ngx_inline void
ngx_http_breaker_shed_slot_add(uint32_t *p, int32_t delta)
{
    __atomic_store_n(p, __atomic_load_n(p, __ATOMIC_RELAXED) + delta,
                     __ATOMIC_RELAXED);
}


/*
 * A process starts in a slot of nginx's process table only once the
 * slot's previous process has exited and been reaped: what the slot still
 * holds was left by a process that died without its cleanups (a crash,
 * SIGKILL).  Its permits and waiting counts are given back.
 */
static void
ngx_http_breaker_shed_reclaim(ngx_http_breaker_shed_shedder_t *sd,
    ngx_log_t *log)
{
    ngx_uint_t                          c, permits, waiting;
    ngx_atomic_uint_t                   v;
    ngx_http_breaker_shed_node_t       *node;
    ngx_http_breaker_shed_slot_t       *slot;
    ngx_http_breaker_shed_main_conf_t  *smcf;

    slot = sd->slot;

    if (slot == NULL) {
        return;
    }

    /* the requests it admitted stay counted: the slot's for ever */

    node = sd->node;

    permits = slot->single;

    if (permits) {
        slot->single = 0;
        (void) ngx_atomic_fetch_add(&node->in_flight, -permits);
    }

    waiting = 0;

    for (c = 0; c < NGX_HTTP_BREAKER_SHED_MAX_CLASSES; c++) {
        v = slot->in_flight[c];

        if (v) {
            slot->in_flight[c] = 0;
            (void) ngx_atomic_fetch_add(&node->class_in_flight[c], -v);
            (void) ngx_atomic_fetch_add(&node->in_flight, -v);
            permits += v;
        }

        v = slot->queued[c];

        if (v) {
            slot->queued[c] = 0;
            (void) ngx_atomic_fetch_add(&node->class_queued[c], -v);
            (void) ngx_atomic_fetch_add(&node->queued, -v);
            waiting += v;
        }
    }

    if (permits || waiting) {
        smcf = sd->main_conf;

        /* the gauges are sums of deltas: the dead process's go too */
        ngx_edge_stats_add(smcf->stats, sd->st_in_flight,
                           -(int64_t) permits);
        ngx_edge_stats_add(smcf->stats, sd->st_queue, -(int64_t) waiting);

        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "breaker shedder \"%V\": %ui permits and %ui waiting "
                      "requests of a process that died in slot %i taken "
                      "back", &sd->name, permits, waiting, ngx_process_slot);
    }
}


/* variables */


static ngx_int_t
ngx_http_breaker_shed_status_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_breaker_shed_req_t  *rq;

    /* read with every response in a header or the log: the context first */
    rq = ngx_http_get_module_ctx(r->main, ngx_http_breaker_shed_module);

    if (rq == NULL) {
        rq = ngx_http_breaker_shed_get(r->main);
    }

    *v = rq ? ngx_http_breaker_shed_states[rq->state]
            : ngx_http_breaker_shed_not_found;

    return NGX_OK;
}


static ngx_int_t
ngx_http_breaker_shed_reason_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_breaker_shed_req_t  *rq;

    rq = ngx_http_breaker_shed_get(r->main);

    if (rq == NULL || rq->state != NGX_HTTP_BREAKER_SHED_SHED) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->data = ngx_http_breaker_shed_reasons[rq->reason].data;
    v->len = ngx_http_breaker_shed_reasons[rq->reason].len;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


/* the location's shedder: its limit, permits in flight, or requests
 * waiting (all workers) */
static ngx_int_t
ngx_http_breaker_shed_number_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                            *p;
    ngx_atomic_uint_t                  n;
    ngx_http_breaker_shed_shedder_t   *sd;
    ngx_http_breaker_shed_loc_conf_t  *lcf;
    ngx_http_breaker_shed_req_t       *rq;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_breaker_shed_module);
    sd = lcf->shedder;

    if (sd == NULL) {
        rq = ngx_http_breaker_shed_get(r->main);
        sd = rq ? ngx_http_breaker_shed_rq_shedder(rq) : NULL;
    }

    if (sd == NULL || sd->node == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    switch (data) {

    case NGX_HTTP_BREAKER_SHED_V_LIMIT:
        n = sd->node->limit;
        break;

    case NGX_HTTP_BREAKER_SHED_V_IN_FLIGHT:
        n = sd->node->in_flight;
        break;

    default: /* NGX_HTTP_BREAKER_SHED_V_QUEUE */
        n = sd->node->queued;
        break;
    }

    p = ngx_pnalloc(r->pool, NGX_ATOMIC_T_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    v->len = ngx_sprintf(p, "%uA", n) - p;
    v->data = p;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


/* the status endpoint (ngx_http_breaker_status.h) */


static json_t *
ngx_http_breaker_shed_adaptive_json(ngx_http_breaker_shed_shedder_t *sd)
{
    int64_t                       next;
    ngx_http_breaker_shed_ctl_t  *ctl;

    ctl = &sd->node->ctl;

    next = (int64_t) ctl->next_measure - ngx_edge_mono_usec();

    return json_pack("{s:s, s:I, s:I, s:I, s:I, s:f, s:f, s:I, s:I}",
                     "phase", ctl->phase == NGX_HTTP_BREAKER_SHED_MEASURE
                              ? "measuring_min_rtt" : "sampling",
                     "min_limit", (json_int_t) sd->min_limit,
                     "max_limit", (json_int_t) sd->max_limit,
                     "min_rtt_us", (json_int_t) ctl->min_rtt,
                     "sample_rtt_us", (json_int_t) ctl->sample_rtt,
                     "gradient", (double) ctl->gradient_x1000 / 1000,
                     "smoothed_limit", (double) ctl->limit_x1000 / 1000,
                     "windows", (json_int_t) ctl->windows,
                     "next_min_rtt_ms",
                     (json_int_t) (next > 0 ? next / 1000 : 0));
}


/* the requests of a class admitted at once: the node's count (processes
 * in untracked slots) and every slot's */
static uint64_t
ngx_http_breaker_shed_admitted(ngx_http_breaker_shed_node_t *node,
    ngx_uint_t cls)
{
    uint64_t    n;
    ngx_uint_t  i;

    n = node->admitted[cls];

    for (i = 0; i < NGX_HTTP_BREAKER_SHED_SLOTS; i++) {
        n += __atomic_load_n(&node->slots[i].admitted[cls], __ATOMIC_RELAXED);
    }

    return n;
}


static json_t *
ngx_http_breaker_shed_classes_json(ngx_http_breaker_shed_shedder_t *sd)
{
    json_t                        *classes, *c;
    ngx_uint_t                     i;
    ngx_atomic_uint_t              in;
    ngx_http_breaker_shed_node_t  *node;

    node = sd->node;

    classes = json_array();
    if (classes == NULL) {
        return NULL;
    }

    for (i = 0; i < sd->nclasses; i++) {

        /* one class: not kept apart, it is the shedder's count */
        in = (sd->nclasses == 1) ? node->in_flight : node->class_in_flight[i];

        c = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
                      "priority", (json_int_t) sd->classes[i].priority,
                      "share", (json_int_t) sd->classes[i].share,
                      "in_flight", (json_int_t) in,
                      "queue", (json_int_t) node->class_queued[i],
                      "admitted",
                      (json_int_t) ngx_http_breaker_shed_admitted(node, i),
                      "queued", (json_int_t) node->dequeued[i],
                      "shed", (json_int_t) node->shed[i]);

        if (c == NULL || json_array_append_new(classes, c) != 0) {
            json_decref(classes);
            return NULL;
        }
    }

    return classes;
}


/* a name as a JSON string: jansson refuses strings that are not UTF-8 */
static json_t *
ngx_http_breaker_shed_json_name(ngx_str_t *name)
{
    size_t  len;
    u_char  buf[256];

    len = ngx_edge_utf8_sanitize(buf, sizeof(buf), name->data, name->len);

    return json_stringn((char *) buf, len);
}


/*
 * "shedding": the limit is reached, requests wait, or a request was shed
 * in the last second (what a readiness check wants to know)
 */
static ngx_uint_t
ngx_http_breaker_shed_shedding(ngx_http_breaker_shed_node_t *node)
{
    int64_t  last;

    if (node->queued || node->in_flight >= node->limit) {
        return 1;
    }

    last = (int64_t) node->last_shed;

    return last != 0 && ngx_edge_mono_usec() - last < 1000000;
}


ngx_int_t
ngx_http_breaker_shedders_json(ngx_cycle_t *cycle, json_t *array)
{
    json_t                             *o, *classes, *adaptive, *name, *zone;
    ngx_uint_t                          i;
    ngx_http_breaker_shed_node_t       *node;
    ngx_http_breaker_shed_shedder_t    *sd, **sds;
    ngx_http_breaker_shed_main_conf_t  *smcf;

    if (cycle->conf_ctx == NULL) {
        return NGX_OK;
    }

    smcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_breaker_shed_module);
    if (smcf == NULL) {
        return NGX_OK;
    }

    sds = smcf->shedders.elts;

    for (i = 0; i < smcf->shedders.nelts; i++) {
        sd = sds[i];
        node = sd->node;

        if (node == NULL) {
            continue;
        }

        classes = ngx_http_breaker_shed_classes_json(sd);
        adaptive = sd->adaptive ? ngx_http_breaker_shed_adaptive_json(sd)
                                : json_null();
        name = ngx_http_breaker_shed_json_name(&sd->name);
        zone = ngx_http_breaker_shed_json_name(&sd->zone->name);

        if (classes == NULL || adaptive == NULL || name == NULL
            || zone == NULL)
        {
            json_decref(classes);
            json_decref(adaptive);
            json_decref(name);
            json_decref(zone);
            return NGX_ERROR;
        }

        o = json_pack("{s:o, s:o, s:I, s:I, s:I, s:b, s:I, s:I, s:o, s:o}",
                      "name", name,
                      "zone", zone,
                      "limit", (json_int_t) node->limit,
                      "in_flight", (json_int_t) node->in_flight,
                      "queue", (json_int_t) node->queued,
                      "shedding", (int) ngx_http_breaker_shed_shedding(node),
                      "queue_max", (json_int_t) sd->queue,
                      "queue_timeout_ms", (json_int_t) sd->queue_timeout,
                      "adaptive", adaptive,
                      "classes", classes);

        if (o == NULL || json_array_append_new(array, o) != 0) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}
