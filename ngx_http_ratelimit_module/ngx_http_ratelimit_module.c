/*
 * ngx_http_ratelimit_module: token-bucket (GCRA) rate limiting whose state
 * lives in Redis, shared by a fleet of nginx nodes, or in a shared-memory
 * zone of this node.
 *
 * The request's path: PREACCESS handler -> per limit: key, tier, the
 * zone's shared-memory ban and deny caches, then one EVALSHA per limit
 * (all of a request's commands leave in one write, pipelined with other
 * requests') or the shared-memory bucket -> reject, delay, or continue.
 * A header filter adds the RateLimit headers.
 *
 * This file holds the module's tables; the code is in one file per
 * concern: _handler.c (the request path), _shm.c (shared-memory buckets
 * and caches), _redis.c (the Lua script and its replies), _lease.c
 * (mode=lease: tokens leased from Redis, spent in the zone), _headers.c
 * (response headers and variables), _conf.c (the directives), and
 * _pg_map.c (maps loaded from PostgreSQL).
 */

#include "ngx_http_ratelimit_module.h"


static ngx_int_t ngx_http_ratelimit_init(ngx_conf_t *cf);
static ngx_int_t ngx_http_ratelimit_init_process(ngx_cycle_t *cycle);
static void ngx_http_ratelimit_exit_process(ngx_cycle_t *cycle);


static ngx_conf_enum_t  ngx_http_ratelimit_headers_modes[] = {
    { ngx_string("off"), NGX_HTTP_RATELIMIT_HEADERS_OFF },
    { ngx_string("draft"), NGX_HTTP_RATELIMIT_HEADERS_DRAFT },
    { ngx_string("legacy"), NGX_HTTP_RATELIMIT_HEADERS_LEGACY },
    { ngx_null_string, 0 }
};


static ngx_command_t  ngx_http_ratelimit_commands[] = {

    { ngx_string("ratelimit_redis"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_ratelimit_redis,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ratelimit_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_ratelimit_zone,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ratelimit_tier"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_ratelimit_tier,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ratelimit_ban"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE4,
      ngx_http_ratelimit_ban,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ratelimit_adaptive"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_ratelimit_adaptive,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ratelimit_ddos"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_ratelimit_ddos,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ratelimit_pg_map"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_ratelimit_pg_map,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ratelimit"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_ratelimit,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ratelimit_status"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_edge_conf_set_status,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ratelimit_loc_conf_t, status_code),
      NULL },

    { ngx_string("ratelimit_failure_status"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_edge_conf_set_status,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ratelimit_loc_conf_t, failure_status),
      NULL },

    { ngx_string("ratelimit_log_level"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ratelimit_loc_conf_t, log_level),
      &ngx_edge_log_levels },

    { ngx_string("ratelimit_headers"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ratelimit_loc_conf_t, headers),
      &ngx_http_ratelimit_headers_modes },

    { ngx_string("ratelimit_dry_run"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ratelimit_loc_conf_t, dry_run),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_ratelimit_module_ctx = {
    ngx_http_ratelimit_add_variables,      /* preconfiguration */
    ngx_http_ratelimit_init,               /* postconfiguration */

    ngx_http_ratelimit_create_main_conf,   /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_ratelimit_create_loc_conf,    /* create location configuration */
    ngx_http_ratelimit_merge_loc_conf      /* merge location configuration */
};


ngx_module_t  ngx_http_ratelimit_module = {
    NGX_MODULE_V1,
    &ngx_http_ratelimit_module_ctx,        /* module context */
    ngx_http_ratelimit_commands,           /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_ratelimit_init_process,       /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_ratelimit_exit_process,       /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_int_t
ngx_http_ratelimit_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_PREACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_ratelimit_handler;

    /* adaptive zones count what they admitted */
    h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_ratelimit_adaptive_log;

    return ngx_http_ratelimit_header_filter_init(cf);
}


static ngx_int_t
ngx_http_ratelimit_init_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                        i;
    ngx_edge_redis_server_t         **servers;
    ngx_http_ratelimit_main_conf_t   *rmcf;

    /* not the cache manager or loader: they serve no requests */
    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    rmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                                ngx_http_ratelimit_module);
    if (rmcf == NULL) {
        return NGX_OK;
    }

    servers = rmcf->redis.elts;

    for (i = 0; i < rmcf->redis.nelts; i++) {
        if (ngx_edge_redis_init_worker(cycle, servers[i]) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return ngx_http_ratelimit_pg_init_process(cycle, rmcf);
}


static void
ngx_http_ratelimit_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                        i;
    ngx_edge_redis_server_t         **servers;
    ngx_http_ratelimit_zone_t       **zones;
    ngx_http_ratelimit_main_conf_t   *rmcf;

    rmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                                ngx_http_ratelimit_module);
    if (rmcf == NULL) {
        return;
    }

    servers = rmcf->redis.elts;

    for (i = 0; i < rmcf->redis.nelts; i++) {
        ngx_edge_redis_exit_worker(servers[i]);
    }

    zones = rmcf->zones.elts;

    for (i = 0; i < rmcf->zones.nelts; i++) {
        ngx_http_ratelimit_deny_free(&zones[i]->deny);
        ngx_http_ratelimit_lease_exit(zones[i]);
    }

    ngx_http_ratelimit_pg_exit_process(cycle, rmcf);
}

