/*
 * ngx_http_metrics_module: Prometheus metrics of nginx itself and of the
 * other edge modules.
 *
 * This file holds the module tables, the zone and the exposition handler.
 */

#include "ngx_edge_common.h"


/* bumped whenever the layout of the zone changes; a reload with another
 * layout starts the zone afresh instead of misreading it */
#define NGX_HTTP_METRICS_LAYOUT  1


typedef struct {
    ngx_uint_t                   layout;
    time_t                       start_time;
} ngx_http_metrics_shctx_t;


typedef struct {
    ngx_shm_zone_t              *shm_zone;
    ngx_http_metrics_shctx_t    *sh;
} ngx_http_metrics_main_conf_t;


static ngx_int_t ngx_http_metrics_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_metrics_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static void *ngx_http_metrics_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_metrics_zone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_metrics(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);


static ngx_command_t  ngx_http_metrics_commands[] = {

    { ngx_string("metrics_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_metrics_zone,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("metrics"),
      NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_metrics,
      0,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_metrics_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    ngx_http_metrics_create_main_conf,     /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_http_metrics_module = {
    NGX_MODULE_V1,
    &ngx_http_metrics_module_ctx,          /* module context */
    ngx_http_metrics_commands,             /* module directives */
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


static ngx_str_t  ngx_http_metrics_content_type =
    ngx_string("text/plain; version=0.0.4; charset=utf-8");


/* room for every sample the handler prints, with their HELP/TYPE lines */
#define NGX_HTTP_METRICS_BUF_SIZE  2048


static ngx_int_t
ngx_http_metrics_handler(ngx_http_request_t *r)
{
    u_char                        *p;
    ngx_int_t                      rc;
    ngx_buf_t                     *b;
    ngx_chain_t                    out;
    ngx_http_metrics_main_conf_t  *mmcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    b = ngx_create_temp_buf(r->pool, NGX_HTTP_METRICS_BUF_SIZE);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = b->last;

#if (NGX_STAT_STUB)
    p = ngx_sprintf(p,
        "# HELP nginx_connections_active Client connections open now.\n"
        "# TYPE nginx_connections_active gauge\n"
        "nginx_connections_active %uA\n"
        "# HELP nginx_connections_reading Connections reading a request "
        "header.\n"
        "# TYPE nginx_connections_reading gauge\n"
        "nginx_connections_reading %uA\n"
        "# HELP nginx_connections_writing Connections writing a response.\n"
        "# TYPE nginx_connections_writing gauge\n"
        "nginx_connections_writing %uA\n"
        "# HELP nginx_connections_waiting Idle keep-alive connections.\n"
        "# TYPE nginx_connections_waiting gauge\n"
        "nginx_connections_waiting %uA\n"
        "# HELP nginx_connections_accepted_total Client connections "
        "accepted.\n"
        "# TYPE nginx_connections_accepted_total counter\n"
        "nginx_connections_accepted_total %uA\n"
        "# HELP nginx_connections_handled_total Client connections "
        "handled.\n"
        "# TYPE nginx_connections_handled_total counter\n"
        "nginx_connections_handled_total %uA\n"
        "# HELP nginx_http_requests_total Client requests received.\n"
        "# TYPE nginx_http_requests_total counter\n"
        "nginx_http_requests_total %uA\n",
        *ngx_stat_active, *ngx_stat_reading, *ngx_stat_writing,
        *ngx_stat_waiting, *ngx_stat_accepted, *ngx_stat_handled,
        *ngx_stat_requests);
#endif

    mmcf = ngx_http_get_module_main_conf(r, ngx_http_metrics_module);

    if (mmcf->sh) {
        p = ngx_sprintf(p,
            "# HELP nginx_edge_metrics_start_time_seconds When the metrics "
            "zone was created; a change means the counters restarted.\n"
            "# TYPE nginx_edge_metrics_start_time_seconds gauge\n"
            "nginx_edge_metrics_start_time_seconds %T\n",
            mmcf->sh->start_time);
    }

    b->last = p;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = b->last - b->pos;
    r->headers_out.content_type = ngx_http_metrics_content_type;
    r->headers_out.content_type_len = ngx_http_metrics_content_type.len;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


static ngx_int_t
ngx_http_metrics_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_metrics_main_conf_t  *omcf = data;

    ngx_slab_pool_t               *shpool;
    ngx_http_metrics_main_conf_t  *mmcf;

    mmcf = shm_zone->data;
    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (omcf && omcf->sh && omcf->sh->layout == NGX_HTTP_METRICS_LAYOUT) {
        /* nginx -s reload: keep the counters and their start time */
        mmcf->sh = omcf->sh;
        return NGX_OK;
    }

    if (shm_zone->shm.exists) {
        mmcf->sh = shpool->data;
        return NGX_OK;
    }

    mmcf->sh = ngx_slab_calloc(shpool, sizeof(ngx_http_metrics_shctx_t));
    if (mmcf->sh == NULL) {
        return NGX_ERROR;
    }

    mmcf->sh->layout = NGX_HTTP_METRICS_LAYOUT;
    mmcf->sh->start_time = ngx_time();

    shpool->data = mmcf->sh;

    return NGX_OK;
}


static void *
ngx_http_metrics_create_main_conf(ngx_conf_t *cf)
{
    /* ngx_pcalloc() leaves shm_zone and sh NULL: no zone configured */
    return ngx_pcalloc(cf->pool, sizeof(ngx_http_metrics_main_conf_t));
}


static char *
ngx_http_metrics_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_metrics_main_conf_t *mmcf = conf;

    ssize_t     size;
    ngx_str_t  *value, name;

    if (mmcf->shm_zone) {
        return "is duplicate";
    }

    value = cf->args->elts;

    size = ngx_parse_size(&value[1]);

    if (size == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid zone size \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    if (size < (ssize_t) (8 * ngx_pagesize)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "zone size \"%V\" is too small, "
                           "it must be at least %uz", &value[1],
                           8 * ngx_pagesize);
        return NGX_CONF_ERROR;
    }

    ngx_str_set(&name, "edge_metrics");

    mmcf->shm_zone = ngx_shared_memory_add(cf, &name, size,
                                           &ngx_http_metrics_module);
    if (mmcf->shm_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    mmcf->shm_zone->init = ngx_http_metrics_init_zone;
    mmcf->shm_zone->data = mmcf;

    return NGX_CONF_OK;
}


static char *
ngx_http_metrics(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_metrics_handler;

    return NGX_CONF_OK;
}
