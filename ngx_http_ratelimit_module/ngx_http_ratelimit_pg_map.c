/*
 * ngx_http_ratelimit_module: a map loaded from PostgreSQL ("ratelimit_pg_map").
 *
 * Placeholder until the implementation lands: the directive is refused
 * with a clear message.
 */

#include "ngx_http_ratelimit_module.h"


char *
ngx_http_ratelimit_pg_map(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "\"%V\" is not implemented yet", &cmd->name);
    return NGX_CONF_ERROR;
}


ngx_int_t
ngx_http_ratelimit_pg_init_process(ngx_cycle_t *cycle,
    ngx_http_ratelimit_main_conf_t *rmcf)
{
    return NGX_OK;
}


void
ngx_http_ratelimit_pg_exit_process(ngx_cycle_t *cycle,
    ngx_http_ratelimit_main_conf_t *rmcf)
{
}
