/*
 * ngx_http_cache_module: an HTTP response cache stored in Redis, bodies
 * zlib-compressed.
 *
 * This file holds the module tables and the configuration; lookup and
 * store are added on top of it.
 */

#include "ngx_edge_common.h"


typedef struct {
    ngx_http_complex_value_t    *key;
    size_t                       max_body_size;
    ngx_msec_t                   lock_timeout;
} ngx_http_cache_loc_conf_t;


static void *ngx_http_cache_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_cache_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);


static ngx_command_t  ngx_http_cache_commands[] = {

    { ngx_string("cache_key"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_set_complex_value_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_cache_loc_conf_t, key),
      NULL },

    { ngx_string("cache_max_body_size"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_cache_loc_conf_t, max_body_size),
      NULL },

    { ngx_string("cache_lock_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_cache_loc_conf_t, lock_timeout),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_cache_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_cache_create_loc_conf,        /* create location configuration */
    ngx_http_cache_merge_loc_conf          /* merge location configuration */
};


ngx_module_t  ngx_http_cache_module = {
    NGX_MODULE_V1,
    &ngx_http_cache_module_ctx,            /* module context */
    ngx_http_cache_commands,               /* module directives */
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
ngx_http_cache_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_cache_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_cache_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->key = NULL;
     */

    conf->max_body_size = NGX_CONF_UNSET_SIZE;
    conf->lock_timeout = NGX_CONF_UNSET_MSEC;

    return conf;
}


static char *
ngx_http_cache_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_cache_loc_conf_t *prev = parent;
    ngx_http_cache_loc_conf_t *conf = child;

    if (conf->key == NULL) {
        conf->key = prev->key;
    }

    ngx_conf_merge_size_value(conf->max_body_size, prev->max_body_size,
                              1024 * 1024);
    ngx_conf_merge_msec_value(conf->lock_timeout, prev->lock_timeout, 5000);

    return NGX_CONF_OK;
}
