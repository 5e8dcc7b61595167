/*
 * ngx_http_breaker_module: circuit breaking per upstream and load shedding,
 * with state in shared memory so every worker agrees.
 *
 * This file holds the module tables and the configuration; the circuit
 * and the shedder are added on top of it.
 */

#include "ngx_edge_common.h"
#include "ngx_http_breaker_status.h"
#include "ngx_http_breaker_peer.h"


typedef struct {
    ngx_int_t                    failure_threshold;
    ngx_msec_t                   open_timeout;
    ngx_uint_t                   status_code;
} ngx_http_breaker_loc_conf_t;


static void *ngx_http_breaker_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_breaker_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);


static ngx_conf_num_bounds_t  ngx_http_breaker_threshold_bounds = {
    ngx_edge_conf_check_bounds, 1, 1000000
};


static ngx_command_t  ngx_http_breaker_commands[] = {

    { ngx_string("breaker_failure_threshold"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_breaker_loc_conf_t, failure_threshold),
      &ngx_http_breaker_threshold_bounds },

    { ngx_string("breaker_open_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_breaker_loc_conf_t, open_timeout),
      NULL },

    { ngx_string("breaker_status"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_edge_conf_set_status,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_breaker_loc_conf_t, status_code),
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
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

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
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static void *
ngx_http_breaker_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_breaker_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_breaker_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    conf->failure_threshold = NGX_CONF_UNSET;
    conf->open_timeout = NGX_CONF_UNSET_MSEC;
    conf->status_code = NGX_CONF_UNSET_UINT;

    return conf;
}


static char *
ngx_http_breaker_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_breaker_loc_conf_t *prev = parent;
    ngx_http_breaker_loc_conf_t *conf = child;

    ngx_conf_merge_value(conf->failure_threshold, prev->failure_threshold,
                         5);
    ngx_conf_merge_msec_value(conf->open_timeout, prev->open_timeout, 30000);
    ngx_conf_merge_uint_value(conf->status_code, prev->status_code,
                              NGX_HTTP_SERVICE_UNAVAILABLE);

    return NGX_CONF_OK;
}


ngx_int_t
ngx_http_breaker_circuits_json(ngx_cycle_t *cycle, json_t *array)
{
    /* no circuits yet */
    return NGX_OK;
}


ngx_int_t
ngx_http_breaker_circuit_force(ngx_cycle_t *cycle, ngx_str_t *name,
    ngx_str_t *state, ngx_log_t *log)
{
    return NGX_DECLINED;
}
