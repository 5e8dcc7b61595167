/*
 * ngx_http_ratelimit_module: DDoS protection in one directive.
 *
 * ratelimit_ddos expands to what the module has: a sliding-window zone of
 * `rate=` per the rate's period keyed by the client's address, a ban of
 * the clients that send more than `threshold=` in a period (their
 * (threshold - rate + 1)-th refusal in it), and an allow list of
 * addresses and CIDRs (IPv4 and IPv6, written out or read from a file),
 * kept in radix trees as the geo module does, and maybe a match=cidr
 * ratelimit_pg_map (allow_pg=): its copy in shared memory, refreshed from
 * PostgreSQL, looked up without a lock (ngx_http_ratelimit_pg_map.c).
 * The zone is limited in every location: its limit is the http level's,
 * and comes first in every location with limits of its own, so a banned
 * client is refused before any other limit is looked at.
 */

#include "ngx_http_ratelimit_module.h"


static ngx_int_t ngx_http_ratelimit_ddos_allow(ngx_conf_t *cf,
    ngx_http_ratelimit_ddos_t *ddos, ngx_str_t *value);
static ngx_int_t ngx_http_ratelimit_ddos_file(ngx_conf_t *cf,
    ngx_http_ratelimit_ddos_t *ddos, ngx_str_t *name);
static ngx_int_t ngx_http_ratelimit_ddos_allow_pg(ngx_conf_t *cf,
    ngx_http_ratelimit_main_conf_t *rmcf, ngx_http_ratelimit_ddos_t *ddos,
    ngx_str_t *value);
static char *ngx_http_ratelimit_ddos_expand(ngx_conf_t *cf,
    ngx_command_t *cmd, ngx_str_t *args, ngx_uint_t nargs,
    char *(*set)(ngx_conf_t *cf, ngx_command_t *cmd, void *conf),
    void *conf);


/* the request path: is the client on the allow list */

ngx_flag_t
ngx_http_ratelimit_ddos_allowed(ngx_http_request_t *r,
    ngx_http_ratelimit_ddos_t *ddos)
{
    u_char               *addr;
    uintptr_t             v;
    ngx_uint_t            family;
    struct sockaddr_in   *sin;
#if (NGX_HAVE_INET6)
    u_char               *p;
    in_addr_t             a;
    struct sockaddr_in6  *sin6;
#endif

    v = NGX_RADIX_NO_VALUE;

    switch (r->connection->sockaddr->sa_family) {

    case AF_INET:
        sin = (struct sockaddr_in *) r->connection->sockaddr;
        family = AF_INET;
        addr = (u_char *) &sin->sin_addr.s_addr;
        v = ngx_radix32tree_find(ddos->allow4, ntohl(sin->sin_addr.s_addr));
        break;

#if (NGX_HAVE_INET6)
    case AF_INET6:
        sin6 = (struct sockaddr_in6 *) r->connection->sockaddr;
        p = sin6->sin6_addr.s6_addr;

        if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
            family = AF_INET;
            addr = p + 12;
            a = (in_addr_t) p[12] << 24 | p[13] << 16 | p[14] << 8 | p[15];
            v = ngx_radix32tree_find(ddos->allow4, a);
            break;
        }

        family = AF_INET6;
        addr = p;
        v = ngx_radix128tree_find(ddos->allow6, p);
        break;
#endif

    default:
        /* a unix socket: no address to allow */
        return 0;
    }

    if (v == NGX_RADIX_NO_VALUE
        && (ddos->allow_pg == NULL
            || !ngx_http_ratelimit_pg_map_match(ddos->allow_pg, family, addr)))
    {
        return 0;
    }

    if (ddos->stats) {
        ngx_edge_stats_add(ddos->stats, ddos->st_allowed, 1);
    }

    return 1;
}


/* configuration */

static ngx_int_t
ngx_http_ratelimit_ddos_allow(ngx_conf_t *cf, ngx_http_ratelimit_ddos_t *ddos,
    ngx_str_t *value)
{
    ngx_int_t   rc;
    ngx_cidr_t  cidr;

    rc = ngx_ptocidr(value, &cidr);

    if (rc == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid address or CIDR \"%V\"", value);
        return NGX_ERROR;
    }

    if (rc == NGX_DONE) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "low address bits of %V are meaningless", value);
    }

    switch (cidr.family) {

#if (NGX_HAVE_INET6)
    case AF_INET6:
        rc = ngx_radix128tree_insert(ddos->allow6, cidr.u.in6.addr.s6_addr,
                                     cidr.u.in6.mask.s6_addr, 1);
        break;
#endif

    default: /* AF_INET */
        rc = ngx_radix32tree_insert(ddos->allow4, ntohl(cidr.u.in.addr),
                                    ntohl(cidr.u.in.mask), 1);
        break;
    }

    /* NGX_BUSY: listed twice, which is harmless */
    return rc == NGX_ERROR ? NGX_ERROR : NGX_OK;
}


/* one address or CIDR per line; "#" starts a comment; read at
 * configuration time, so a reload reads the file again */

static ngx_int_t
ngx_http_ratelimit_ddos_file(ngx_conf_t *cf, ngx_http_ratelimit_ddos_t *ddos,
    ngx_str_t *name)
{
    u_char           *buf, *p, *last, *eol, *end;
    ssize_t           n;
    ngx_fd_t          fd;
    ngx_str_t         line;
    ngx_int_t         rc;
    ngx_file_info_t   fi;

    if (ngx_conf_full_name(cf->cycle, name, 1) != NGX_OK) {
        return NGX_ERROR;
    }

    fd = ngx_open_file(name->data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_open_file_n " \"%V\" failed", name);
        return NGX_ERROR;
    }

    rc = NGX_ERROR;
    buf = NULL;

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_fd_info_n " \"%V\" failed", name);
        goto done;
    }

    if (ngx_file_size(&fi) > 64 * 1024 * 1024) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "allow_file \"%V\" is larger than 64m", name);
        goto done;
    }

    buf = ngx_alloc((size_t) ngx_file_size(&fi) + 1, cf->log);
    if (buf == NULL) {
        goto done;
    }

    n = ngx_read_fd(fd, buf, (size_t) ngx_file_size(&fi));
    if (n == -1) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_read_fd_n " \"%V\" failed", name);
        goto done;
    }

    last = buf + n;

    for (p = buf; p < last; p = eol + 1) {
        eol = ngx_strlchr(p, last, '\n');
        if (eol == NULL) {
            eol = last;
        }

        end = ngx_strlchr(p, eol, '#');
        if (end == NULL) {
            end = eol;
        }

        while (p < end && (*p == ' ' || *p == '\t')) {
            p++;
        }

        while (end > p && (end[-1] == ' ' || end[-1] == '\t'
                           || end[-1] == '\r'))
        {
            end--;
        }

        if (p == end) {
            continue;
        }

        line.data = p;
        line.len = end - p;

        if (ngx_http_ratelimit_ddos_allow(cf, ddos, &line) != NGX_OK) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "in allow_file \"%V\"", name);
            goto done;
        }
    }

    rc = NGX_OK;

done:

    if (buf) {
        ngx_free(buf);
    }

    if (ngx_close_file(fd) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_ALERT, cf->log, ngx_errno,
                      ngx_close_file_n " \"%V\" failed", name);
    }

    return rc;
}


/* allow_pg=$variable: a ratelimit_pg_map declared above, match=cidr */

static ngx_int_t
ngx_http_ratelimit_ddos_allow_pg(ngx_conf_t *cf,
    ngx_http_ratelimit_main_conf_t *rmcf, ngx_http_ratelimit_ddos_t *ddos,
    ngx_str_t *value)
{
    ngx_str_t                     name;
    ngx_http_ratelimit_pg_map_t  *map;

    name.data = value->data + 9;
    name.len = value->len - 9;

    if (ddos->allow_pg) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "duplicate \"allow_pg\" parameter \"%V\": one "
                           "map per zone (a query can UNION several "
                           "tables)", value);
        return NGX_ERROR;
    }

    map = ngx_http_ratelimit_pg_map_find(rmcf, &name);

    if (map == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\": no \"ratelimit_pg_map\" declares the "
                           "variable \"%V\" above this directive",
                           value, &name);
        return NGX_ERROR;
    }

    if (!ngx_http_ratelimit_pg_map_is_cidr(map)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\": the \"ratelimit_pg_map\" of \"%V\" "
                           "must have \"match=cidr\" (its keys are "
                           "addresses and CIDRs)", value, &name);
        return NGX_ERROR;
    }

    ddos->allow_pg = map;

    return NGX_OK;
}


/* runs another directive's handler on arguments of our making */

static char *
ngx_http_ratelimit_ddos_expand(ngx_conf_t *cf, ngx_command_t *cmd,
    ngx_str_t *args, ngx_uint_t nargs,
    char *(*set)(ngx_conf_t *cf, ngx_command_t *cmd, void *conf), void *conf)
{
    char         *rv;
    ngx_str_t    *v;
    ngx_uint_t    i;
    ngx_array_t  *saved, a;

    if (ngx_array_init(&a, cf->temp_pool, nargs, sizeof(ngx_str_t))
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    for (i = 0; i < nargs; i++) {
        v = ngx_array_push(&a);
        if (v == NULL) {
            return NGX_CONF_ERROR;
        }

        /* the parsers compare with ngx_strcmp(): NUL-terminated */
        v->len = args[i].len;
        v->data = ngx_pnalloc(cf->pool, args[i].len + 1);
        if (v->data == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memcpy(v->data, args[i].data, args[i].len);
        v->data[v->len] = '\0';
    }

    saved = cf->args;
    cf->args = &a;
    rv = set(cf, cmd, conf);
    cf->args = saved;

    return rv;
}


static ngx_int_t
ngx_http_ratelimit_ddos_stats(ngx_conf_t *cf,
    ngx_http_ratelimit_main_conf_t *rmcf, ngx_http_ratelimit_zone_t *zone)
{
    ngx_int_t                 fam;
    ngx_edge_stats_family_t   family;

    static const char  *labels[] = { "zone", NULL };

    if (rmcf->stats == NULL) {
        return NGX_OK;
    }

    ngx_memzero(&family, sizeof(ngx_edge_stats_family_t));
    family.name = "ratelimit_ddos_allowlisted_total";
    family.help = "Requests of allow-listed clients, not limited by a "
                  "ratelimit_ddos zone.";
    family.type = NGX_EDGE_STATS_COUNTER;
    family.labels = labels;

    fam = ngx_edge_stats_add_family(cf, rmcf->stats, &family);
    if (fam == NGX_ERROR) {
        return NGX_ERROR;
    }

    zone->ddos->stats = rmcf->stats;
    zone->ddos->st_allowed = ngx_edge_stats_add_series(cf, rmcf->stats, fam,
                                                       &zone->name);

    return zone->ddos->st_allowed == NGX_EDGE_STATS_NONE ? NGX_ERROR : NGX_OK;
}


char *
ngx_http_ratelimit_ddos(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ratelimit_main_conf_t *rmcf = conf;

    u_char                         *p;
    char                           *rv;
    ngx_int_t                       threshold;
    ngx_str_t                      *value, s, zargs[12], bargs[5], name;
    ngx_str_t                       largs[2];
    ngx_uint_t                      i, nz, period;
    ngx_msec_t                      ban;
    ngx_command_t                   sub;
    ngx_http_ratelimit_rate_t       rate;
    ngx_http_ratelimit_zone_t     **zones, *zone;
    ngx_http_ratelimit_ddos_t      *ddos;
    ngx_http_ratelimit_limit_t     *limits;
    ngx_http_ratelimit_loc_conf_t  *rlcf;

    value = cf->args->elts;

    ddos = ngx_pcalloc(cf->pool, sizeof(ngx_http_ratelimit_ddos_t));
    if (ddos == NULL) {
        return NGX_CONF_ERROR;
    }

    ddos->allow4 = ngx_radix_tree_create(cf->pool, -1);
    if (ddos->allow4 == NULL) {
        return NGX_CONF_ERROR;
    }

#if (NGX_HAVE_INET6)
    ddos->allow6 = ngx_radix_tree_create(cf->pool, -1);
    if (ddos->allow6 == NULL) {
        return NGX_CONF_ERROR;
    }
#endif

    ngx_str_set(&zargs[0], "ratelimit_zone");
    ngx_str_set(&zargs[1], "$binary_remote_addr");
    nz = 2;
    name.len = 0;
    rate.count = 0;
    threshold = 0;
    ban = 0;

    for (i = 1; i < cf->args->nelts; i++) {

        if (nz == 10) {
            /* room for the two arguments added below: a parameter given
             * more than once (zone=, rate=, redis= ...) ends here */
            goto invalid;
        }

        if (ngx_strncmp(value[i].data, "zone=", 5) == 0) {
            zargs[nz++] = value[i];

            name.data = value[i].data + 5;
            p = ngx_strlchr(name.data, value[i].data + value[i].len, ':');
            name.len = (p ? p : value[i].data + value[i].len) - name.data;
            continue;
        }

        if (ngx_strncmp(value[i].data, "rate=", 5) == 0) {
            s.data = value[i].data + 5;
            s.len = value[i].len - 5;

            if (ngx_http_ratelimit_parse_rate(&s, &rate) != NGX_OK) {
                goto invalid;
            }

            zargs[nz++] = value[i];
            continue;
        }

        if (ngx_strncmp(value[i].data, "key=", 4) == 0) {
            zargs[1].data = value[i].data + 4;
            zargs[1].len = value[i].len - 4;
            continue;
        }

        if (ngx_strncmp(value[i].data, "redis=", 6) == 0
            || ngx_strncmp(value[i].data, "prefix=", 7) == 0
            || ngx_strncmp(value[i].data, "on_failure=", 11) == 0)
        {
            zargs[nz++] = value[i];
            continue;
        }

        if (ngx_strncmp(value[i].data, "threshold=", 10) == 0) {
            threshold = ngx_atoi(value[i].data + 10, value[i].len - 10);
            if (threshold <= 0) {
                goto invalid;
            }
            continue;
        }

        if (ngx_strncmp(value[i].data, "ban=", 4) == 0) {
            s.data = value[i].data + 4;
            s.len = value[i].len - 4;

            ban = ngx_parse_time(&s, 0);
            if (ban == (ngx_msec_t) NGX_ERROR || ban == 0) {
                goto invalid;
            }
            continue;
        }

        if (ngx_strncmp(value[i].data, "allow=", 6) == 0) {
            s.data = value[i].data + 6;
            s.len = value[i].len - 6;

            if (ngx_http_ratelimit_ddos_allow(cf, ddos, &s) != NGX_OK) {
                return NGX_CONF_ERROR;
            }
            continue;
        }

        if (ngx_strncmp(value[i].data, "allow_pg=", 9) == 0) {
            if (ngx_http_ratelimit_ddos_allow_pg(cf, rmcf, ddos, &value[i])
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }
            continue;
        }

        if (ngx_strncmp(value[i].data, "allow_file=", 11) == 0) {
            s.data = value[i].data + 11;
            s.len = value[i].len - 11;

            if (ngx_http_ratelimit_ddos_file(cf, ddos, &s) != NGX_OK) {
                return NGX_CONF_ERROR;
            }
            continue;
        }

        goto invalid;
    }

    if (name.len == 0 || rate.count == 0 || threshold == 0 || ban == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" needs \"zone=\", \"rate=\", "
                           "\"threshold=\" and \"ban=\"", &cmd->name);
        return NGX_CONF_ERROR;
    }

    if ((ngx_uint_t) threshold <= rate.count) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\": \"threshold=%i\" must be more than the "
                           "rate's %ui requests", &cmd->name, threshold,
                           rate.count);
        return NGX_CONF_ERROR;
    }

    /* the zone: rate= per its period, exactly, as a sliding window */
    period = rate.period;

    ngx_str_set(&zargs[nz], "algorithm=sliding_window");
    nz++;

    zargs[nz].data = ngx_pnalloc(cf->pool, sizeof("window=3600s"));
    if (zargs[nz].data == NULL) {
        return NGX_CONF_ERROR;
    }

    zargs[nz].len = ngx_sprintf(zargs[nz].data, "window=%uis", period)
                    - zargs[nz].data;
    nz++;

    sub = *cmd;
    ngx_str_set(&sub.name, "ratelimit_zone");

    rv = ngx_http_ratelimit_ddos_expand(cf, &sub, zargs, nz,
                                        ngx_http_ratelimit_zone, conf);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    zones = rmcf->zones.elts;
    zone = zones[rmcf->zones.nelts - 1];
    zone->ddos = ddos;

    /* the ban: the request after threshold= in a period is its
     * (threshold - rate + 1)-th refusal, which ratelimit_ban turns into
     * the ban */
    ngx_str_set(&bargs[0], "ratelimit_ban");

    bargs[1].data = ngx_pnalloc(cf->pool, sizeof("zone=") + name.len);
    bargs[2].data = ngx_pnalloc(cf->pool, sizeof("threshold=") + NGX_INT_T_LEN);
    bargs[3].data = ngx_pnalloc(cf->pool, sizeof("window=3600s"));
    bargs[4].data = ngx_pnalloc(cf->pool, sizeof("duration=ms")
                                          + NGX_INT_T_LEN);
    if (bargs[1].data == NULL || bargs[2].data == NULL
        || bargs[3].data == NULL || bargs[4].data == NULL)
    {
        return NGX_CONF_ERROR;
    }

    bargs[1].len = ngx_sprintf(bargs[1].data, "zone=%V", &name)
                   - bargs[1].data;
    bargs[2].len = ngx_sprintf(bargs[2].data, "threshold=%ui",
                               (ngx_uint_t) threshold - rate.count + 1)
                   - bargs[2].data;
    bargs[3].len = ngx_sprintf(bargs[3].data, "window=%uis", period)
                   - bargs[3].data;
    bargs[4].len = ngx_sprintf(bargs[4].data, "duration=%Mms", ban)
                   - bargs[4].data;

    ngx_str_set(&sub.name, "ratelimit_ban");

    rv = ngx_http_ratelimit_ddos_expand(cf, &sub, bargs, 5,
                                        ngx_http_ratelimit_ban, conf);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    /* the limit, at the http level: every location inherits it, and
     * merge puts it first in those with limits of their own */
    ngx_str_set(&largs[0], "ratelimit");
    largs[1] = bargs[1];

    rlcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_ratelimit_module);

    ngx_str_set(&sub.name, "ratelimit");

    rv = ngx_http_ratelimit_ddos_expand(cf, &sub, largs, 2,
                                        ngx_http_ratelimit, rlcf);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    /* first, before an http-level "ratelimit" written above this */
    limits = rlcf->limits->elts;
    ddos->limit = limits[rlcf->limits->nelts - 1];

    ngx_memmove(&limits[1], &limits[0],
                (rlcf->limits->nelts - 1) * sizeof(ngx_http_ratelimit_limit_t));
    limits[0] = ddos->limit;

    if (ngx_http_ratelimit_ddos_stats(cf, rmcf, zone) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\"", &value[i]);
    return NGX_CONF_ERROR;
}
