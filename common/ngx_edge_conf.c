/*
 * Configuration helpers shared by the edge modules.
 */

#include "ngx_edge_common.h"


ngx_conf_enum_t  ngx_edge_log_levels[] = {
    { ngx_string("info"), NGX_LOG_INFO },
    { ngx_string("notice"), NGX_LOG_NOTICE },
    { ngx_string("warn"), NGX_LOG_WARN },
    { ngx_string("error"), NGX_LOG_ERR },
    { ngx_null_string, 0 }
};


/*
 * "xxx_status code": an HTTP status an operator wants for a refusal.
 * Like limit_req_status, only 400..599 make sense: a refusal that looks
 * like a success would be cached or retried by clients as one.
 */

char *
ngx_edge_conf_set_status(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    char  *p = conf;

    ngx_int_t    n;
    ngx_uint_t  *np;
    ngx_str_t   *value;

    np = (ngx_uint_t *) (p + cmd->offset);

    if (*np != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    n = ngx_atoi(value[1].data, value[1].len);

    if (n < 400 || n > 599) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid status code \"%V\" in \"%V\", "
                           "it must be between 400 and 599",
                           &value[1], &cmd->name);
        return NGX_CONF_ERROR;
    }

    *np = (ngx_uint_t) n;

    return NGX_CONF_OK;
}


/*
 * A post handler for ngx_conf_set_num_slot, as ngx_conf_check_num_bounds
 * but naming the directive and the value: "value must be between" alone
 * does not tell an operator which line of a long include is wrong.
 */

char *
ngx_edge_conf_check_bounds(ngx_conf_t *cf, void *post, void *data)
{
    ngx_conf_num_bounds_t  *bounds = post;
    ngx_int_t              *np = data;

    ngx_str_t  *value;

    if (*np >= bounds->low
        && (bounds->high == -1 || *np <= bounds->high))
    {
        return NGX_CONF_OK;
    }

    value = cf->args->elts;

    if (bounds->high == -1) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\" in \"%V\", it must be "
                           "at least %i", &value[1], &value[0], bounds->low);

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\" in \"%V\", it must be "
                           "between %i and %i", &value[1], &value[0],
                           bounds->low, bounds->high);
    }

    return NGX_CONF_ERROR;
}


/*
 * The "zone=name:size" parameter of the zone directives, as limit_req
 * writes it; the size must hold the slab pool's own pages.
 */

ngx_int_t
ngx_edge_conf_parse_zone(ngx_conf_t *cf, ngx_str_t *arg, ngx_str_t *name,
    ssize_t *size)
{
    u_char     *p;
    ngx_str_t   s;

    name->data = arg->data + 5;
    p = ngx_strlchr(name->data, arg->data + arg->len, ':');

    if (p == NULL || p == name->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid zone size \"%V\"", arg);
        return NGX_ERROR;
    }

    name->len = p - name->data;

    s.data = p + 1;
    s.len = arg->data + arg->len - s.data;

    *size = ngx_parse_size(&s);

    if (*size == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid zone size \"%V\"", arg);
        return NGX_ERROR;
    }

    if (*size < (ssize_t) (8 * ngx_pagesize)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "zone \"%V\" is too small, the minimum is %uik",
                           arg, 8 * ngx_pagesize / 1024);
        return NGX_ERROR;
    }

    return NGX_OK;
}
