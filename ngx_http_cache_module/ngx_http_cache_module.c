/*
 * ngx_http_cache_module: an HTTP response cache a fleet of nginx nodes
 * shares through Redis.  This file holds the module tables, the
 * directives, the variables and the workers' Redis connections; see
 * ngx_http_cache_module.h for the other files.
 *
 * Directives are prefixed "edge_cache_": "cache_" alone is taken by
 * nginx's own proxy_cache family in spirit and by several third-party
 * modules in fact; "edge_" is this suite's prefix.
 */

#include "ngx_http_cache_module.h"
#include "ngx_http_cache_l1.h"


static ngx_int_t ngx_http_cache_add_variables(ngx_conf_t *cf);
static ngx_int_t ngx_http_cache_init(ngx_conf_t *cf);
static void *ngx_http_cache_create_main_conf(ngx_conf_t *cf);
static void *ngx_http_cache_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_cache_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_cache_redis(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_cache_zone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_cache(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
static char *ngx_http_cache_valid(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_cache_init_process(ngx_cycle_t *cycle);
static char *ngx_http_cache_warm(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_cache_min_uses(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_edge_stats_t *ngx_http_cache_stats(ngx_conf_t *cf,
    ngx_http_cache_main_conf_t *cmcf);
static ngx_int_t ngx_http_cache_zone_stats(ngx_conf_t *cf,
    ngx_http_cache_main_conf_t *cmcf, ngx_http_cache_zone_t *zone);
static void ngx_http_cache_exit_process(ngx_cycle_t *cycle);


static ngx_conf_bitmask_t  ngx_http_cache_methods_mask[] = {
    { ngx_string("GET"), NGX_HTTP_GET },
    { ngx_string("HEAD"), NGX_HTTP_HEAD },
    { ngx_null_string, 0 }
};

static ngx_conf_bitmask_t  ngx_http_cache_use_stale_mask[] = {
    { ngx_string("error"), NGX_HTTP_CACHE_STALE_ERROR },
    { ngx_string("timeout"), NGX_HTTP_CACHE_STALE_TIMEOUT },
    { ngx_string("updating"), NGX_HTTP_CACHE_STALE_UPDATING },
    { ngx_string("http_500"), NGX_HTTP_CACHE_STALE_500 },
    { ngx_string("http_502"), NGX_HTTP_CACHE_STALE_502 },
    { ngx_string("http_503"), NGX_HTTP_CACHE_STALE_503 },
    { ngx_string("http_504"), NGX_HTTP_CACHE_STALE_504 },
    { ngx_string("http_403"), NGX_HTTP_CACHE_STALE_403 },
    { ngx_string("http_404"), NGX_HTTP_CACHE_STALE_404 },
    { ngx_string("http_429"), NGX_HTTP_CACHE_STALE_429 },
    { ngx_string("off"), NGX_HTTP_CACHE_STALE_OFF },
    { ngx_null_string, 0 }
};

static ngx_conf_num_bounds_t  ngx_http_cache_level_bounds = {
    ngx_conf_check_num_bounds, 1, 9
};


static ngx_str_t  ngx_http_cache_default_types[] = {
    ngx_string("text/html"),
    ngx_string("text/plain"),
    ngx_string("text/css"),
    ngx_string("text/xml"),
    ngx_string("application/json"),
    ngx_string("application/javascript"),
    ngx_string("application/xml"),
    ngx_string("image/svg+xml"),
    ngx_null_string
};


static ngx_command_t  ngx_http_cache_commands[] = {

    { ngx_string("edge_cache_redis"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_cache_redis,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("edge_cache_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_cache_zone,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("edge_cache"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_cache,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("edge_cache_key"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_set_complex_value_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_cache_loc_conf_t, key),
      NULL },

    { ngx_string("edge_cache_valid"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_cache_valid,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("edge_cache_methods"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_conf_set_bitmask_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_cache_loc_conf_t, methods),
      &ngx_http_cache_methods_mask },

    { ngx_string("edge_cache_bypass"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_set_predicate_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_cache_loc_conf_t, bypass),
      NULL },

    { ngx_string("edge_cache_no_store"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_set_predicate_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_cache_loc_conf_t, no_store),
      NULL },

    { ngx_string("edge_cache_max_size"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_cache_loc_conf_t, max_size),
      NULL },

    { ngx_string("edge_cache_keep"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_cache_loc_conf_t, keep),
      NULL },

    { ngx_string("edge_cache_compress"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_cache_loc_conf_t, compress),
      NULL },

    { ngx_string("edge_cache_compress_level"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_cache_loc_conf_t, compress_level),
      &ngx_http_cache_level_bounds },

    { ngx_string("edge_cache_compress_types"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_types_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_cache_loc_conf_t, compress_types_keys),
      &ngx_http_cache_default_types[0] },

    { ngx_string("edge_cache_status_header"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_cache_loc_conf_t, status_header),
      NULL },

    { ngx_string("edge_cache_lock"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_cache_loc_conf_t, lock),
      NULL },

    { ngx_string("edge_cache_lock_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_cache_loc_conf_t, lock_timeout),
      NULL },

    { ngx_string("edge_cache_lock_age"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_cache_loc_conf_t, lock_age),
      NULL },

    { ngx_string("edge_cache_hit_for_miss"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_cache_loc_conf_t, hit_for_miss),
      NULL },

    { ngx_string("edge_cache_use_stale"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_conf_set_bitmask_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_cache_loc_conf_t, use_stale),
      &ngx_http_cache_use_stale_mask },

    { ngx_string("edge_cache_stale_if"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_set_predicate_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_cache_loc_conf_t, stale_if),
      NULL },

    { ngx_string("edge_cache_background_update"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_cache_loc_conf_t, background_update),
      NULL },

    { ngx_string("edge_cache_revalidate"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_cache_loc_conf_t, revalidate),
      NULL },

    { ngx_string("edge_cache_min_uses"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE12,
      ngx_http_cache_min_uses,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("edge_cache_warm"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS|NGX_CONF_TAKE1,
      ngx_http_cache_warm,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("edge_cache_heuristic"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_cache_loc_conf_t, rfc.heuristic),
      NULL },

    { ngx_string("edge_cache_heuristic_max"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_cache_loc_conf_t, rfc.heuristic_max),
      NULL },

    { ngx_string("edge_cache_cdn_cache_control"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_cache_loc_conf_t, rfc.cdn_cache_control),
      NULL },

    { ngx_string("edge_cache_store_set_cookie"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_cache_loc_conf_t, rfc.store_set_cookie),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_cache_module_ctx = {
    ngx_http_cache_add_variables,          /* preconfiguration */
    ngx_http_cache_init,                   /* postconfiguration */

    ngx_http_cache_create_main_conf,       /* create main configuration */
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
    ngx_http_cache_init_process,           /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_cache_exit_process,           /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


/* variables */

static ngx_str_t  ngx_http_cache_status_names[] = {
    ngx_null_string,
    ngx_string("MISS"),
    ngx_string("BYPASS"),
    ngx_string("EXPIRED"),
    ngx_string("STALE"),
    ngx_string("UPDATING"),
    ngx_string("REVALIDATED"),
    ngx_string("HIT")
};


static ngx_int_t
ngx_http_cache_status_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t              *s;
    ngx_http_cache_ctx_t   *ctx;

    ctx = ngx_http_get_module_ctx(r->main, ngx_http_cache_module);

    if (ctx == NULL || ctx->status == NGX_HTTP_CACHE_ST_NONE) {
        v->not_found = 1;
        return NGX_OK;
    }

    if (data) {
        /* $edge_cache_tier */
        if (ctx->tier == 0) {
            v->not_found = 1;
            return NGX_OK;
        }

        v->data = (u_char *) (ctx->tier == 1 ? "l1" : "l2");
        v->len = 2;

    } else {
        s = &ngx_http_cache_status_names[ctx->status];
        v->data = s->data;
        v->len = s->len;
    }

    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}


static ngx_http_variable_t  ngx_http_cache_vars[] = {

    { ngx_string("edge_cache_status"), NULL,
      ngx_http_cache_status_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("edge_cache_tier"), NULL,
      ngx_http_cache_status_variable, 1,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


static ngx_int_t
ngx_http_cache_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_cache_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


/*
 * Cache-Status (RFC 9211), when edge_cache_status_header is on:
 *   edge; hit; ttl=N                     served from the cache
 *   edge; fwd=stale; fwd-status=...      (not yet: the origin's status)
 *   edge; fwd=uri-miss[; stored]         went to the origin
 *   edge; fwd=bypass[; stored]
 */

ngx_int_t
ngx_http_cache_set_status_header(ngx_http_request_t *r,
    ngx_http_cache_ctx_t *ctx)
{
    u_char                     *p;
    int64_t                     ttl;
    ngx_table_elt_t            *h;
    ngx_http_cache_loc_conf_t  *clcf;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_cache_module);

    if (!clcf->status_header || ctx->status == NGX_HTTP_CACHE_ST_NONE) {
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, sizeof("edge; fwd=uri-miss; stored; ttl=") - 1
                             + NGX_INT64_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
#if (nginx_version >= 1023000)
    h->next = NULL;
#endif
    ngx_str_set(&h->key, "Cache-Status");
    h->value.data = p;
    h->lowcase_key = NULL;

    switch (ctx->status) {

    case NGX_HTTP_CACHE_ST_HIT:
    case NGX_HTTP_CACHE_ST_STALE:
    case NGX_HTTP_CACHE_ST_UPDATING:
        /* whole seconds, rounded down: a stale entry's is negative */
        ttl = ctx->entry.fresh - ctx->age;
        ttl = (ttl >= 0) ? ttl / 1000 : -((-ttl + 999) / 1000);
        p = ngx_sprintf(p, "edge; hit; ttl=%L", ttl);
        break;

    case NGX_HTTP_CACHE_ST_BYPASS:
        p = ngx_cpymem(p, "edge; fwd=bypass", sizeof("edge; fwd=bypass") - 1);
        break;

    case NGX_HTTP_CACHE_ST_EXPIRED:
        p = ngx_cpymem(p, "edge; fwd=stale", sizeof("edge; fwd=stale") - 1);
        break;

    default:
        p = ngx_cpymem(p, "edge; fwd=uri-miss",
                       sizeof("edge; fwd=uri-miss") - 1);
        break;
    }

    if (ctx->stored_flag) {
        p = ngx_cpymem(p, "; stored", sizeof("; stored") - 1);
    }

    h->value.len = p - h->value.data;

    return NGX_OK;
}


/* configuration */

static void *
ngx_http_cache_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_cache_main_conf_t  *cmcf;

    cmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_cache_main_conf_t));
    if (cmcf == NULL) {
        return NULL;
    }

    if (ngx_array_init(&cmcf->zones, cf->pool, 2,
                       sizeof(ngx_http_cache_zone_t *))
        != NGX_OK
        || ngx_array_init(&cmcf->redis, cf->pool, 2,
                          sizeof(ngx_edge_redis_server_t *))
           != NGX_OK)
    {
        return NULL;
    }

    return cmcf;
}


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
     *     conf->methods = 0;
     *     conf->compress_types_keys = NULL;
     *     conf->rfc.valid = NULL;
     */

    conf->zone = NGX_CONF_UNSET_PTR;
    conf->bypass = NGX_CONF_UNSET_PTR;
    conf->stale_if = NGX_CONF_UNSET_PTR;
    conf->lock = NGX_CONF_UNSET;
    conf->lock_timeout = NGX_CONF_UNSET_MSEC;
    conf->lock_age = NGX_CONF_UNSET_MSEC;
    conf->hit_for_miss = NGX_CONF_UNSET_MSEC;
    conf->background_update = NGX_CONF_UNSET;
    conf->revalidate = NGX_CONF_UNSET;
    conf->warm_concurrency = NGX_CONF_UNSET_UINT;
    conf->min_uses = NGX_CONF_UNSET_UINT;
    conf->min_uses_window = NGX_CONF_UNSET_MSEC;
    conf->no_store = NGX_CONF_UNSET_PTR;
    conf->max_size = NGX_CONF_UNSET_SIZE;
    conf->keep = NGX_CONF_UNSET_MSEC;
    conf->compress = NGX_CONF_UNSET;
    conf->compress_level = NGX_CONF_UNSET;
    conf->status_header = NGX_CONF_UNSET;
    conf->rfc.valid = NGX_CONF_UNSET_PTR;
    conf->rfc.heuristic = NGX_CONF_UNSET;
    conf->rfc.heuristic_max = NGX_CONF_UNSET;
    conf->rfc.store_set_cookie = NGX_CONF_UNSET;
    conf->rfc.ignore_private = NGX_CONF_UNSET;
    conf->rfc.cdn_cache_control = NGX_CONF_UNSET;

    return conf;
}


static char *
ngx_http_cache_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_cache_loc_conf_t *prev = parent;
    ngx_http_cache_loc_conf_t *conf = child;

    ngx_str_t                          v;
    ngx_http_compile_complex_value_t   ccv;

    ngx_conf_merge_ptr_value(conf->zone, prev->zone, NULL);

    if (conf->key == NULL) {
        conf->key = prev->key;
    }

    if (conf->key == NULL) {
        conf->key = ngx_palloc(cf->pool, sizeof(ngx_http_complex_value_t));
        if (conf->key == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_str_set(&v, "$scheme://$host$request_uri");

        ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));
        ccv.cf = cf;
        ccv.value = &v;
        ccv.complex_value = conf->key;

        if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
            return NGX_CONF_ERROR;
        }
    }

    ngx_conf_merge_bitmask_value(conf->methods, prev->methods,
                                 (NGX_CONF_BITMASK_SET
                                  |NGX_HTTP_GET|NGX_HTTP_HEAD));
    conf->methods |= NGX_HTTP_GET|NGX_HTTP_HEAD;

    ngx_conf_merge_ptr_value(conf->bypass, prev->bypass, NULL);
    ngx_conf_merge_ptr_value(conf->no_store, prev->no_store, NULL);
    ngx_conf_merge_ptr_value(conf->stale_if, prev->stale_if, NULL);
    ngx_conf_merge_value(conf->lock, prev->lock, 0);
    ngx_conf_merge_msec_value(conf->lock_timeout, prev->lock_timeout, 5000);
    ngx_conf_merge_msec_value(conf->lock_age, prev->lock_age, 5000);
    ngx_conf_merge_msec_value(conf->hit_for_miss, prev->hit_for_miss, 10000);
    ngx_conf_merge_bitmask_value(conf->use_stale, prev->use_stale,
                                 (NGX_CONF_BITMASK_SET
                                  |NGX_HTTP_CACHE_STALE_OFF));

    if (conf->use_stale & NGX_HTTP_CACHE_STALE_OFF) {
        conf->use_stale = NGX_CONF_BITMASK_SET|NGX_HTTP_CACHE_STALE_OFF;
    }

    ngx_conf_merge_value(conf->background_update, prev->background_update,
                         1);
    ngx_conf_merge_value(conf->revalidate, prev->revalidate, 0);
    ngx_conf_merge_uint_value(conf->warm_concurrency, prev->warm_concurrency,
                              8);

    if (conf->min_uses == NGX_CONF_UNSET_UINT) {
        conf->min_uses = prev->min_uses;
        conf->min_uses_window = prev->min_uses_window;
    }

    ngx_conf_merge_uint_value(conf->min_uses, prev->min_uses, 1);
    ngx_conf_merge_msec_value(conf->min_uses_window, prev->min_uses_window,
                              60000);

    ngx_conf_merge_size_value(conf->max_size, prev->max_size, 1024 * 1024);
    ngx_conf_merge_msec_value(conf->keep, prev->keep, 60000);
    ngx_conf_merge_value(conf->compress, prev->compress, 1);
    ngx_conf_merge_value(conf->compress_level, prev->compress_level, 1);
    ngx_conf_merge_value(conf->status_header, prev->status_header, 0);

    if (ngx_http_merge_types(cf, &conf->compress_types_keys,
                             &conf->compress_types,
                             &prev->compress_types_keys,
                             &prev->compress_types,
                             ngx_http_cache_default_types)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    ngx_conf_merge_ptr_value(conf->rfc.valid, prev->rfc.valid, NULL);
    ngx_conf_merge_value(conf->rfc.heuristic, prev->rfc.heuristic, 0);
    ngx_conf_merge_value(conf->rfc.heuristic_max, prev->rfc.heuristic_max,
                         86400);
    ngx_conf_merge_value(conf->rfc.store_set_cookie,
                         prev->rfc.store_set_cookie, 0);
    ngx_conf_merge_value(conf->rfc.cdn_cache_control,
                         prev->rfc.cdn_cache_control, 1);
    ngx_conf_merge_value(conf->rfc.ignore_private, prev->rfc.ignore_private,
                         0);

    if (conf->max_size > 512 * 1024 * 1024) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "edge_cache_max_size %uz is more than Redis "
                           "stores in one string (512m)", conf->max_size);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_cache_valid_name(ngx_str_t *name)
{
    u_char  *p;

    if (name->len == 0 || name->len > NGX_HTTP_CACHE_ZONE_NAME_MAX) {
        return NGX_ERROR;
    }

    for (p = name->data; p < name->data + name->len; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
              || (*p >= '0' && *p <= '9') || *p == '_' || *p == '-'
              || *p == '.'))
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static ngx_edge_redis_server_t *
ngx_http_cache_find_redis(ngx_http_cache_main_conf_t *cmcf, ngx_str_t *name)
{
    ngx_uint_t                 i;
    ngx_edge_redis_server_t  **servers;

    servers = cmcf->redis.elts;

    for (i = 0; i < cmcf->redis.nelts; i++) {
        if (servers[i]->name.len == name->len
            && ngx_strncmp(servers[i]->name.data, name->data, name->len) == 0)
        {
            return servers[i];
        }
    }

    return NULL;
}


/* metrics */

static ngx_edge_stats_t *
ngx_http_cache_stats(ngx_conf_t *cf, ngx_http_cache_main_conf_t *cmcf)
{
    if (cmcf->stats == NULL) {
        cmcf->stats = ngx_edge_stats_create(cf, "cache",
                                            &ngx_http_cache_module);
    }

    return cmcf->stats;
}


static ngx_int_t
ngx_http_cache_add_counter(ngx_conf_t *cf, ngx_edge_stats_t *stats,
    const char *name, const char *help, const char **labels,
    ngx_str_t *values, ngx_edge_stats_id_t *id)
{
    ngx_int_t                 fam;
    ngx_edge_stats_family_t   family;

    ngx_memzero(&family, sizeof(ngx_edge_stats_family_t));
    family.name = name;
    family.help = help;
    family.type = NGX_EDGE_STATS_COUNTER;
    family.labels = labels;

    /* the same family for every zone: the registry returns it again */
    fam = ngx_edge_stats_add_family(cf, stats, &family);
    if (fam == NGX_ERROR) {
        return NGX_ERROR;
    }

    *id = ngx_edge_stats_add_series(cf, stats, fam, values);

    return *id == NGX_EDGE_STATS_NONE ? NGX_ERROR : NGX_OK;
}


static ngx_int_t
ngx_http_cache_zone_stats(ngx_conf_t *cf, ngx_http_cache_main_conf_t *cmcf,
    ngx_http_cache_zone_t *zone)
{
    ngx_uint_t         i;
    ngx_str_t          values[2];
    ngx_edge_stats_t  *stats;

    static const char  *zone_label[] = { "zone", NULL };
    static const char  *status_labels[] = { "zone", "status", NULL };
    static const char  *tier_labels[] = { "zone", "tier", NULL };
    static ngx_str_t    tiers[] = { ngx_string("l1"), ngx_string("l2") };

    stats = ngx_http_cache_stats(cf, cmcf);
    if (stats == NULL) {
        return NGX_ERROR;
    }

    zone->stats = stats;
    values[0] = zone->name;

    for (i = 1; i < NGX_HTTP_CACHE_NSTATUS; i++) {
        values[1] = ngx_http_cache_status_names[i];

        if (ngx_http_cache_add_counter(cf, stats, "cache_requests_total",
                "Requests through a cache zone, by $edge_cache_status.",
                status_labels, values, &zone->st_requests[i])
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    zone->st_requests[0] = NGX_EDGE_STATS_NONE;
    zone->st_hits[0] = NGX_EDGE_STATS_NONE;

    for (i = 0; i < 2; i++) {
        values[1] = tiers[i];

        if (ngx_http_cache_add_counter(cf, stats, "cache_hits_total",
                "Responses sent from the cache (HIT, STALE, UPDATING), by "
                "the tier they came from.",
                tier_labels, values, &zone->st_hits[i + 1])
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (ngx_http_cache_add_counter(cf, stats, "cache_served_bytes_total",
            "Body bytes sent from the cache.", zone_label, values,
            &zone->st_served_bytes) != NGX_OK
        || ngx_http_cache_add_counter(cf, stats, "cache_inflated_total",
            "Hits whose gzip body was inflated for a client that does not "
            "take gzip (with hot=, the inflated copy kept spares the next "
            "ones).", zone_label, values, &zone->st_inflated) != NGX_OK
        || ngx_http_cache_add_counter(cf, stats, "cache_stores_total",
            "Entries written to Redis.", zone_label, values,
            &zone->st_stores) != NGX_OK
        || ngx_http_cache_add_counter(cf, stats, "cache_stored_bytes_total",
            "Bytes of the entries written to Redis (compressed bodies "
            "included as stored).", zone_label, values,
            &zone->st_stored_bytes) != NGX_OK
        || ngx_http_cache_add_counter(cf, stats, "cache_lock_waits_total",
            "Requests that waited for another request's fetch of the same "
            "key.", zone_label, values, &zone->st_lock_waits) != NGX_OK
        || ngx_http_cache_add_counter(cf, stats, "cache_lock_timeouts_total",
            "Requests that waited edge_cache_lock_timeout in vain and went "
            "to the origin without storing.", zone_label, values,
            &zone->st_lock_timeouts) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* LOG phase: the request's outcome, counted once */

static ngx_int_t
ngx_http_cache_log_handler(ngx_http_request_t *r)
{
    ngx_http_cache_ctx_t       *ctx;
    ngx_http_cache_loc_conf_t  *clcf;

    ctx = ngx_http_get_module_ctx(r, ngx_http_cache_module);

    if (ctx == NULL || ctx->status == NGX_HTTP_CACHE_ST_NONE
        || ctx->background)
    {
        return NGX_OK;
    }

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_cache_module);

    if (clcf->zone == NULL || clcf->zone->stats == NULL) {
        return NGX_OK;
    }

    ngx_http_cache_count(clcf->zone, st_requests[ctx->status], 1);

    if (ctx->tier) {
        ngx_http_cache_count(clcf->zone, st_hits[ctx->tier], 1);
        ngx_http_cache_count(clcf->zone, st_served_bytes,
                             (int64_t) ctx->served);
    }

    return NGX_OK;
}


/* edge_cache_redis name address [password=..] [timeout=..] ... */

static char *
ngx_http_cache_redis(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_cache_main_conf_t *cmcf = conf;

    ngx_str_t                 *value;
    ngx_edge_redis_server_t   *server, **sp;

    value = cf->args->elts;

    if (ngx_http_cache_valid_name(&value[1]) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid redis server name \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    if (ngx_http_cache_find_redis(cmcf, &value[1])) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "duplicate edge_cache_redis \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    server = ngx_edge_redis_parse_server(cf, &value[1], cf->args->nelts - 1);
    if (server == NULL) {
        return NGX_CONF_ERROR;
    }

    if (ngx_http_cache_stats(cf, cmcf) == NULL
        || ngx_edge_redis_register_stats(cf, server, cmcf->stats, "cache")
           != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    sp = ngx_array_push(&cmcf->redis);
    if (sp == NULL) {
        return NGX_CONF_ERROR;
    }

    *sp = server;

    return NGX_CONF_OK;
}


/* edge_cache_zone name redis=name [hot=size [hot_max_age=time]
 *     [hot_max_entry=size]] [purge_poll=time] */

static char *
ngx_http_cache_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_cache_main_conf_t *cmcf = conf;

    ngx_int_t                rc;
    ngx_str_t               *value, name;
    ngx_uint_t               i;
    ngx_http_cache_zone_t   *zone, **zp;

    value = cf->args->elts;

    if (ngx_http_cache_valid_name(&value[1]) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid edge_cache_zone name \"%V\": letters, "
                           "digits, \"_\", \"-\" and \".\", at most %d",
                           &value[1], NGX_HTTP_CACHE_ZONE_NAME_MAX);
        return NGX_CONF_ERROR;
    }

    zp = cmcf->zones.elts;

    for (i = 0; i < cmcf->zones.nelts; i++) {
        if (zp[i]->name.len == value[1].len
            && ngx_strncmp(zp[i]->name.data, value[1].data, value[1].len)
               == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate edge_cache_zone \"%V\"", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    zone = ngx_pcalloc(cf->pool, sizeof(ngx_http_cache_zone_t));
    if (zone == NULL) {
        return NGX_CONF_ERROR;
    }

    zone->name = value[1];
    zone->purge_poll = 500;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "redis=", 6) == 0) {
            name.data = value[i].data + 6;
            name.len = value[i].len - 6;

            zone->redis = ngx_http_cache_find_redis(cmcf, &name);

            if (zone->redis == NULL) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "unknown redis \"%V\": declare it with "
                                   "edge_cache_redis before the zone",
                                   &name);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "purge_poll=", 11) == 0) {
            name.data = value[i].data + 11;
            name.len = value[i].len - 11;

            zone->purge_poll = ngx_parse_time(&name, 0);

            if (zone->purge_poll == (ngx_msec_t) NGX_ERROR
                || zone->purge_poll == 0)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid purge_poll \"%V\"", &name);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        rc = ngx_http_cache_l1_parse_param(cf, zone, &value[i]);

        if (rc == NGX_ERROR) {
            return NGX_CONF_ERROR;
        }

        if (rc == NGX_OK) {
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\"", &value[i]);
        return NGX_CONF_ERROR;
    }

    if (zone->redis == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "edge_cache_zone \"%V\" needs redis=",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    if (ngx_http_cache_l1_init_conf(cf, zone) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    if (ngx_http_cache_zone_stats(cf, cmcf, zone) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    zp = ngx_array_push(&cmcf->zones);
    if (zp == NULL) {
        return NGX_CONF_ERROR;
    }

    *zp = zone;

    return NGX_CONF_OK;
}


/* edge_cache zone | off */

static char *
ngx_http_cache(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_cache_loc_conf_t *clcf = conf;

    ngx_str_t                    *value;
    ngx_uint_t                    i;
    ngx_http_cache_zone_t       **zp;
    ngx_http_cache_main_conf_t   *cmcf;

    if (clcf->zone != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len == 3 && ngx_strncmp(value[1].data, "off", 3) == 0) {
        clcf->zone = NULL;
        return NGX_CONF_OK;
    }

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_cache_module);
    zp = cmcf->zones.elts;

    for (i = 0; i < cmcf->zones.nelts; i++) {
        if (zp[i]->name.len == value[1].len
            && ngx_strncmp(zp[i]->name.data, value[1].data, value[1].len)
               == 0)
        {
            clcf->zone = zp[i];
            return NGX_CONF_OK;
        }
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "unknown edge_cache_zone \"%V\"", &value[1]);
    return NGX_CONF_ERROR;
}


/* edge_cache_valid [code ...|any] time: as proxy_cache_valid */

static char *
ngx_http_cache_valid(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_cache_loc_conf_t *clcf = conf;

    time_t                    valid;
    ngx_str_t                *value;
    ngx_int_t                 status;
    ngx_uint_t                i, n;
    ngx_array_t              *a;
    ngx_http_cache_valid_t   *v;
    static ngx_uint_t         statuses[] = { 200, 301, 302 };

    a = clcf->rfc.valid;

    if (a == NGX_CONF_UNSET_PTR) {
        a = ngx_array_create(cf->pool, 1, sizeof(ngx_http_cache_valid_t));
        if (a == NULL) {
            return NGX_CONF_ERROR;
        }

        clcf->rfc.valid = a;
    }

    value = cf->args->elts;
    n = cf->args->nelts - 1;

    valid = ngx_parse_time(&value[n], 1);
    if (valid == (time_t) NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid time value \"%V\"", &value[n]);
        return NGX_CONF_ERROR;
    }

    if (n == 1) {
        for (i = 0; i < 3; i++) {
            v = ngx_array_push(a);
            if (v == NULL) {
                return NGX_CONF_ERROR;
            }

            v->status = statuses[i];
            v->valid = valid;
        }

        return NGX_CONF_OK;
    }

    for (i = 1; i < n; i++) {

        if (ngx_strcmp(value[i].data, "any") == 0) {
            status = 0;

        } else {
            status = ngx_atoi(value[i].data, value[i].len);
            if (status < 100 || status > 599) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid status \"%V\"", &value[i]);
                return NGX_CONF_ERROR;
            }
        }

        v = ngx_array_push(a);
        if (v == NULL) {
            return NGX_CONF_ERROR;
        }

        v->status = status;
        v->valid = valid;
    }

    return NGX_CONF_OK;
}


/* edge_cache_min_uses number [window=time] */

static char *
ngx_http_cache_min_uses(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_cache_loc_conf_t *clcf = conf;

    ngx_int_t   n;
    ngx_str_t  *value, w;

    if (clcf->min_uses != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    n = ngx_atoi(value[1].data, value[1].len);
    if (n < 1 || n > 1000000) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid number \"%V\": 1 to 1000000", &value[1]);
        return NGX_CONF_ERROR;
    }

    clcf->min_uses = (ngx_uint_t) n;

    if (cf->args->nelts == 3) {
        if (ngx_strncmp(value[2].data, "window=", 7) != 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\"", &value[2]);
            return NGX_CONF_ERROR;
        }

        w.data = value[2].data + 7;
        w.len = value[2].len - 7;

        clcf->min_uses_window = ngx_parse_time(&w, 0);

        if (clcf->min_uses_window == (ngx_msec_t) NGX_ERROR
            || clcf->min_uses_window == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid window \"%V\"", &w);
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


/* edge_cache_warm [concurrency=n] */

static char *
ngx_http_cache_warm(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_cache_loc_conf_t *clcf = conf;

    ngx_int_t                  n;
    ngx_str_t                 *value;
    ngx_http_core_loc_conf_t  *core;

    if (clcf->warm_concurrency != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;
    n = 8;

    if (cf->args->nelts == 2) {
        if (ngx_strncmp(value[1].data, "concurrency=", 12) != 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\"", &value[1]);
            return NGX_CONF_ERROR;
        }

        n = ngx_atoi(value[1].data + 12, value[1].len - 12);

        if (n < 1 || n > 256) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid concurrency \"%V\": 1 to 256",
                               &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    clcf->warm_concurrency = (ngx_uint_t) n;

    core = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    core->handler = ngx_http_cache_warm_handler;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_cache_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_PRECONTENT_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_cache_handler;

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_cache_log_handler;

    return ngx_http_cache_store_init(cf);
}


static ngx_int_t
ngx_http_cache_init_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                    i;
    ngx_edge_redis_server_t     **servers;
    ngx_http_cache_main_conf_t   *cmcf;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    cmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_cache_module);
    if (cmcf == NULL) {
        return NGX_OK;
    }

    servers = cmcf->redis.elts;

    for (i = 0; i < cmcf->redis.nelts; i++) {
        if (ngx_edge_redis_init_worker(cycle, servers[i]) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static void
ngx_http_cache_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                    i;
    ngx_edge_redis_server_t     **servers;
    ngx_http_cache_main_conf_t   *cmcf;

    cmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_cache_module);
    if (cmcf == NULL) {
        return;
    }

    servers = cmcf->redis.elts;

    for (i = 0; i < cmcf->redis.nelts; i++) {
        ngx_edge_redis_exit_worker(servers[i]);
    }
}
