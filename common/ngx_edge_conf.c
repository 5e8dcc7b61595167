/*
 * Configuration helpers shared by the edge modules (and the out-of-line
 * clock read of ngx_edge_time.h: every module links this file).
 */

#include "ngx_edge_common.h"
#include "ngx_edge_time.h"


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


/*
 * password_file=: the secret is the file's content, read when the
 * configuration is read (the workers may not be able to read it), without
 * its trailing CR and LF; at most max bytes, not empty, no NUL byte.  It
 * is left in cf->temp_pool: the caller copies it and wipes this copy.
 */

ngx_int_t
ngx_edge_conf_read_secret(ngx_conf_t *cf, ngx_str_t *path, size_t max,
    ngx_str_t *secret)
{
    u_char     *buf;
    ssize_t     n;
    ngx_fd_t    fd;
    ngx_err_t   err;
    ngx_str_t   name;

    name = *path;

    if (name.len == 0 || ngx_conf_full_name(cf->cycle, &name, 1) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid \"password_file=\"");
        return NGX_ERROR;
    }

    fd = ngx_open_file(name.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "cannot open password_file \"%V\": "
                           ngx_open_file_n " failed", &name);
        return NGX_ERROR;
    }

    buf = ngx_pnalloc(cf->temp_pool, max + 1);
    n = (buf == NULL) ? 0 : ngx_read_fd(fd, buf, max + 1);
    err = ngx_errno;

    if (ngx_close_file(fd) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_ALERT, cf, ngx_errno,
                           ngx_close_file_n " \"%V\" failed", &name);
    }

    if (buf == NULL) {
        return NGX_ERROR;
    }

    if (n == -1) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, err,
                           "cannot read password_file \"%V\": "
                           ngx_read_fd_n " failed", &name);
        return NGX_ERROR;
    }

    if ((size_t) n > max) {
        ngx_explicit_memzero(buf, max + 1);
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "password_file \"%V\" is larger than %uz bytes",
                           &name, max);
        return NGX_ERROR;
    }

    while (n && (buf[n - 1] == LF || buf[n - 1] == CR)) {
        n--;
    }

    if (n == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "password_file \"%V\" is empty", &name);
        return NGX_ERROR;
    }

    if (ngx_strlchr(buf, buf + n, '\0') != NULL) {
        ngx_explicit_memzero(buf, n);
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "password_file \"%V\" has a NUL byte", &name);
        return NGX_ERROR;
    }

    secret->data = buf;
    secret->len = n;

    return NGX_OK;
}


ngx_int_t
ngx_edge_http_arg(ngx_http_request_t *r, const char *name, ngx_str_t *value)
{
    u_char     *dst, *src;
    ngx_str_t   raw;

    if (ngx_http_arg(r, (u_char *) name, ngx_strlen(name), &raw) != NGX_OK) {
        return NGX_DECLINED;
    }

    value->data = ngx_pnalloc(r->pool, raw.len + 1);
    if (value->data == NULL) {
        return NGX_ERROR;
    }

    dst = value->data;
    src = raw.data;
    ngx_unescape_uri(&dst, &src, raw.len, 0);
    value->len = dst - value->data;

    return NGX_OK;
}


int64_t
ngx_edge_mono_usec_read(void)
{
    return ngx_edge_mono_usec();
}


ngx_uint_t  ngx_edge_time_cached_ok;


void
ngx_edge_time_init(ngx_cycle_t *cycle)
{
#if (NGX_HAVE_CLOCK_MONOTONIC && NGX_PTR_SIZE == 8)
    ngx_core_conf_t  *ccf;

    ccf = (ngx_core_conf_t *) ngx_get_conf(cycle->conf_ctx, ngx_core_module);

    ngx_edge_time_cached_ok = (ccf->timer_resolution == 0);
#else
    (void) cycle;
    ngx_edge_time_cached_ok = 0;
#endif
}
