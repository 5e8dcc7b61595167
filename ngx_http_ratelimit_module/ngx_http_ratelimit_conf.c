/*
 * ngx_http_ratelimit_module: configuration: the directives' parsers,
 * and the location configuration's create and merge.
 */

#include "ngx_http_ratelimit_module.h"



/* the metric label of each status */
static const char  *ngx_http_ratelimit_results[] = {
    NULL, "passed", "failed_open", "failed_local", "delayed", "dry_run",
    "rejected", "failed_closed", "banned"
};


/* configuration */

void *
ngx_http_ratelimit_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_ratelimit_main_conf_t  *rmcf;

    rmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_ratelimit_main_conf_t));
    if (rmcf == NULL) {
        return NULL;
    }

    if (ngx_array_init(&rmcf->zones, cf->pool, 4,
                       sizeof(ngx_http_ratelimit_zone_t *))
        != NGX_OK
        || ngx_array_init(&rmcf->redis, cf->pool, 2,
                          sizeof(ngx_edge_redis_server_t *))
           != NGX_OK)
    {
        return NULL;
    }

    return rmcf;
}


void *
ngx_http_ratelimit_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_ratelimit_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_ratelimit_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->limits = NULL;
     */

    conf->status_code = NGX_CONF_UNSET_UINT;
    conf->failure_status = NGX_CONF_UNSET_UINT;
    conf->log_level = NGX_CONF_UNSET_UINT;
    conf->headers = NGX_CONF_UNSET_UINT;
    conf->dry_run = NGX_CONF_UNSET;

    return conf;
}


/*
 * The bounds of the GCRA arithmetic: every product of a count and an
 * interval stays within NGX_EDGE_EXACT_MAX (2^50 us), so that sums of two
 * such terms and a timestamp are exact in C and in the Lua script, and
 * nothing overflows.  The largest n with n * interval within the bound:
 */

static int64_t
ngx_http_ratelimit_max_units(ngx_http_ratelimit_rate_t *rate)
{
    return NGX_EDGE_EXACT_MAX / rate->interval;
}


static u_char
ngx_http_ratelimit_period_unit(ngx_http_ratelimit_rate_t *rate)
{
    return rate->period == 1 ? 's' : (rate->period == 60 ? 'm' : 'h');
}


/*
 * A sliding window's requests per window: the rate over the window, which
 * must be a whole number ("rate=100r/m window=15m" is 1500 per 15
 * minutes; "rate=100r/m window=10s" is refused), and within the bounds of
 * the arithmetic.
 */

static ngx_int_t
ngx_http_ratelimit_sw_rate(ngx_conf_t *cf, ngx_http_ratelimit_zone_t *zone,
    ngx_http_ratelimit_rate_t *rate)
{
    int64_t  ms, n;

    ms = zone->window / 1000;

    if (((int64_t) rate->count * ms) % ((int64_t) rate->period * 1000) != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "rate=%uir/%c over window=%Lms of ratelimit zone "
                           "\"%V\" is not a whole number of requests",
                           rate->count, ngx_http_ratelimit_period_unit(rate),
                           ms, &zone->name);
        return NGX_ERROR;
    }

    n = (int64_t) rate->count * ms / ((int64_t) rate->period * 1000);

    if (n > NGX_HTTP_RATELIMIT_SW_MAX / zone->window) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "rate=%uir/%c over window=%Lms of ratelimit zone "
                           "\"%V\" is too large: requests per window * "
                           "window must not exceed 2^58 us",
                           rate->count, ngx_http_ratelimit_period_unit(rate),
                           ms, &zone->name);
        return NGX_ERROR;
    }

    rate->per_window = n;

    return NGX_OK;
}


/* a sliding window's limit: no burst, no delay (it never delays), and a
 * cost no larger than a window's requests, for every tier */

static ngx_int_t
ngx_http_ratelimit_check_sliding(ngx_conf_t *cf,
    ngx_http_ratelimit_limit_t *limit, ngx_http_ratelimit_zone_t *zone)
{
    ngx_uint_t                  i;
    ngx_http_ratelimit_tier_t  *tiers;

    if (limit->burst >= 0 || limit->delay) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"ratelimit\" zone=%V: \"%s=\" does not apply to "
                      "a zone with algorithm=sliding_window in %V:%ui",
                      &zone->name, limit->burst >= 0 ? "burst" : "delay",
                      &limit->conf_file, limit->conf_line);
        return NGX_ERROR;
    }

    if (limit->cost_value) {
        return NGX_OK;
    }

    if ((int64_t) limit->cost > zone->rate.per_window) {
        goto failed;
    }

    tiers = zone->tiers.elts;

    for (i = 0; i < zone->tiers.nelts; i++) {
        if ((int64_t) limit->cost > tiers[i].rate.per_window) {
            goto failed;
        }
    }

    return NGX_OK;

failed:

    ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                  "\"ratelimit\" zone=%V cost=%ui is more than a window of "
                  "the zone or of one of its tiers holds in %V:%ui",
                  &zone->name, limit->cost, &limit->conf_file,
                  limit->conf_line);
    return NGX_ERROR;
}


/* burst, delay and cost of one limit at one rate (the zone's or a tier's,
 * whose own burst, if any, replaces the limit's) */

static ngx_int_t
ngx_http_ratelimit_check_bounds(ngx_conf_t *cf,
    ngx_http_ratelimit_limit_t *limit, ngx_http_ratelimit_zone_t *zone,
    ngx_http_ratelimit_tier_t *tier)
{
    u_char                      where[128], *p;
    int64_t                     max;
    const char                 *what;
    ngx_int_t                   value, burst;
    ngx_http_ratelimit_rate_t  *rate;

    rate = tier ? &tier->rate : &zone->rate;
    max = ngx_http_ratelimit_max_units(rate);

    if (tier) {
        p = ngx_snprintf(where, sizeof(where) - 1, "tier \"%V\" (rate=%uir/%c)",
                         &tier->name, rate->count,
                         ngx_http_ratelimit_period_unit(rate));
    } else {
        p = ngx_snprintf(where, sizeof(where) - 1, "rate=%uir/%c",
                         rate->count, ngx_http_ratelimit_period_unit(rate));
    }

    *p = '\0';

    if (tier && tier->burst >= 0) {
        burst = -1;       /* the tier's own, checked by ratelimit_tier */

    } else {
        burst = limit->burst < 0 ? 0 : limit->burst;
    }

    if (burst >= max) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"ratelimit\" zone=%V burst=%i is too large for %s: "
                      "(burst + 1) * interval must not exceed 2^50 us, "
                      "burst=%L at most in %V:%ui",
                      &zone->name, burst, where, max - 1,
                      &limit->conf_file, limit->conf_line);
        return NGX_ERROR;
    }

    if (limit->cost_value == NULL && (int64_t) limit->cost > max) {
        what = "cost";
        value = limit->cost;
        goto failed;
    }

    if ((int64_t) limit->delay > max) {
        what = "delay";
        value = limit->delay;
        goto failed;
    }

    return NGX_OK;

failed:

    ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                  "\"ratelimit\" zone=%V %s=%i is too large for %s: "
                  "%s * interval must not exceed 2^50 us, %s=%L at most "
                  "in %V:%ui",
                  &zone->name, what, value, where, what, what, max,
                  &limit->conf_file, limit->conf_line);
    return NGX_ERROR;
}


/* limits of a level's own: ratelimit_ddos's limits come first (they are
 * the http level's, which the level does not inherit) */

static ngx_int_t
ngx_http_ratelimit_merge_ddos(ngx_conf_t *cf,
    ngx_http_ratelimit_loc_conf_t *conf)
{
    ngx_uint_t                       i, j;
    ngx_array_t                     *merged;
    ngx_http_ratelimit_zone_t      **zones;
    ngx_http_ratelimit_limit_t      *limits, *l;
    ngx_http_ratelimit_main_conf_t  *rmcf;

    rmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_ratelimit_module);

    zones = rmcf->zones.elts;
    merged = NULL;

    for (i = 0; i < rmcf->zones.nelts; i++) {
        if (zones[i]->ddos == NULL) {
            continue;
        }

        limits = conf->limits->elts;

        for (j = 0; j < conf->limits->nelts; j++) {
            if (limits[j].shm_zone == zones[i]->shm_zone) {
                break;
            }
        }

        if (j < conf->limits->nelts) {
            continue;     /* listed here already */
        }

        if (merged == NULL) {
            merged = ngx_array_create(cf->pool, conf->limits->nelts + 1,
                                      sizeof(ngx_http_ratelimit_limit_t));
            if (merged == NULL) {
                return NGX_ERROR;
            }
        }

        l = ngx_array_push(merged);
        if (l == NULL) {
            return NGX_ERROR;
        }

        *l = zones[i]->ddos->limit;
    }

    if (merged == NULL) {
        return NGX_OK;
    }

    limits = conf->limits->elts;

    for (j = 0; j < conf->limits->nelts; j++) {
        l = ngx_array_push(merged);
        if (l == NULL) {
            return NGX_ERROR;
        }

        *l = limits[j];
    }

    conf->limits = merged;

    return NGX_OK;
}


char *
ngx_http_ratelimit_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_ratelimit_loc_conf_t *prev = parent;
    ngx_http_ratelimit_loc_conf_t *conf = child;

    ngx_uint_t                   i, j;
    ngx_http_ratelimit_zone_t   *zone;
    ngx_http_ratelimit_tier_t   *tiers;
    ngx_http_ratelimit_limit_t  *limits;

    if (conf->limits == NULL) {
        conf->limits = prev->limits;

    } else if (ngx_http_ratelimit_merge_ddos(cf, conf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (conf->limits) {
        /* the zone and its tiers are all known by now (an inherited limit
         * is checked again: cheap, and the http level has no merge) */
        limits = conf->limits->elts;

        for (i = 0; i < conf->limits->nelts; i++) {
            zone = limits[i].shm_zone->data;

            if (zone == NULL) {
                continue;     /* reported below */
            }

            if (zone->algorithm == NGX_HTTP_RATELIMIT_SLIDING) {
                if (ngx_http_ratelimit_check_sliding(cf, &limits[i], zone)
                    != NGX_OK)
                {
                    return NGX_CONF_ERROR;
                }

                continue;
            }

            if (ngx_http_ratelimit_check_bounds(cf, &limits[i], zone, NULL)
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

            tiers = zone->tiers.elts;

            for (j = 0; j < zone->tiers.nelts; j++) {
                if (ngx_http_ratelimit_check_bounds(cf, &limits[i], zone,
                                                    &tiers[j])
                    != NGX_OK)
                {
                    return NGX_CONF_ERROR;
                }
            }
        }
    }

    if (conf->limits) {
        limits = conf->limits->elts;

        for (i = 0; i < conf->limits->nelts; i++) {
            if (limits[i].shm_zone->data == NULL) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "unknown ratelimit_zone \"%V\"",
                                   &limits[i].shm_zone->shm.name);
                return NGX_CONF_ERROR;
            }
        }
    }

    ngx_conf_merge_uint_value(conf->status_code, prev->status_code,
                              NGX_HTTP_TOO_MANY_REQUESTS);
    ngx_conf_merge_uint_value(conf->failure_status, prev->failure_status,
                              NGX_HTTP_SERVICE_UNAVAILABLE);
    ngx_conf_merge_uint_value(conf->log_level, prev->log_level, NGX_LOG_ERR);
    ngx_conf_merge_uint_value(conf->headers, prev->headers,
                              NGX_HTTP_RATELIMIT_HEADERS_DRAFT);
    ngx_conf_merge_value(conf->dry_run, prev->dry_run, 0);

    return NGX_CONF_OK;
}


/* zone and tier names appear in headers and metric labels: keep them to
 * a token's characters, ASCII whatever the locale (isalnum() is not) */

static ngx_int_t
ngx_http_ratelimit_valid_name(ngx_str_t *name)
{
    u_char  c;
    size_t  i;

    if (name->len == 0 || name->len > 64) {
        return NGX_ERROR;
    }

    for (i = 0; i < name->len; i++) {
        c = name->data[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
              || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.'))
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* "10r/s", "50r/m" or "20r/h" */

ngx_int_t
ngx_http_ratelimit_parse_rate(ngx_str_t *value, ngx_http_ratelimit_rate_t *rate)
{
    size_t     len;
    ngx_int_t  n;
    u_char    *p;

    len = value->len;
    p = value->data + len - 3;

    if (len < 4 || ngx_strncmp(p, "r/", 2) != 0) {
        return NGX_ERROR;
    }

    if (p[2] == 's') {
        rate->period = 1;

    } else if (p[2] == 'm') {
        rate->period = 60;

    } else if (p[2] == 'h') {
        /* beyond limit_req: "5 per 15 minutes" is 20r/h with burst=4 */
        rate->period = 3600;

    } else {
        return NGX_ERROR;
    }

    n = ngx_atoi(value->data, len - 3);
    if (n <= 0 || n > 1000000) {
        return NGX_ERROR;
    }

    rate->count = n;
    rate->interval = (int64_t) rate->period * 1000000 / n;

    return NGX_OK;
}


ngx_edge_stats_t *
ngx_http_ratelimit_stats(ngx_conf_t *cf, ngx_http_ratelimit_main_conf_t *rmcf)
{
    if (rmcf->stats == NULL) {
        rmcf->stats = ngx_edge_stats_create(cf, "ratelimit",
                                            &ngx_http_ratelimit_module);
    }

    return rmcf->stats;
}


static ngx_http_ratelimit_zone_t *
ngx_http_ratelimit_find_zone(ngx_http_ratelimit_main_conf_t *rmcf,
    ngx_str_t *name)
{
    ngx_uint_t                   i;
    ngx_http_ratelimit_zone_t  **zones;

    zones = rmcf->zones.elts;

    for (i = 0; i < rmcf->zones.nelts; i++) {
        if (zones[i]->name.len == name->len
            && ngx_strncmp(zones[i]->name.data, name->data, name->len) == 0)
        {
            return zones[i];
        }
    }

    return NULL;
}


char *
ngx_http_ratelimit_redis(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ratelimit_main_conf_t *rmcf = conf;

    ngx_str_t                 *value;
    ngx_uint_t                 i;
    ngx_edge_stats_t          *stats;
    ngx_edge_redis_server_t   *server, **servers, **sp;

    value = cf->args->elts;

    if (ngx_http_ratelimit_valid_name(&value[1]) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid redis server name \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    servers = rmcf->redis.elts;

    for (i = 0; i < rmcf->redis.nelts; i++) {
        if (servers[i]->name.len == value[1].len
            && ngx_strncmp(servers[i]->name.data, value[1].data,
                           value[1].len) == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate ratelimit_redis \"%V\"", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    server = ngx_edge_redis_parse_server(cf, &value[1], cf->args->nelts - 1);
    if (server == NULL) {
        return NGX_CONF_ERROR;
    }

    /* [0]: GCRA, one key and three args per decision; [1]: with bans;
     * [2]: leases (mode=lease), one key and six args per lease; [3]:
     * leases with bans, three keys and eleven args */
    if (ngx_edge_redis_add_batch_script(cf, server, &ngx_http_ratelimit_lua,
                                        1, 3)
        == NULL
        || ngx_edge_redis_add_batch_script(cf, server,
                                           &ngx_http_ratelimit_ban_lua, 3, 6)
           == NULL
        || ngx_edge_redis_add_batch_script(cf, server,
                                           &ngx_http_ratelimit_lease_lua,
                                           1, 6)
           == NULL
        || ngx_edge_redis_add_batch_script(cf, server,
                                           &ngx_http_ratelimit_lease_ban_lua,
                                           3, 11)
           == NULL)
    {
        return NGX_CONF_ERROR;
    }

    stats = ngx_http_ratelimit_stats(cf, rmcf);
    if (stats == NULL) {
        return NGX_CONF_ERROR;
    }

    if (ngx_edge_redis_register_stats(cf, server, stats, "ratelimit")
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    sp = ngx_array_push(&rmcf->redis);
    if (sp == NULL) {
        return NGX_CONF_ERROR;
    }

    *sp = server;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_ratelimit_zone_stats(ngx_conf_t *cf,
    ngx_http_ratelimit_main_conf_t *rmcf, ngx_http_ratelimit_zone_t *zone)
{
    ngx_int_t                 fam;
    ngx_str_t                 values[2];
    ngx_uint_t                i;
    ngx_edge_stats_t         *stats;
    ngx_edge_stats_family_t   family;

    static const char  *labels[] = { "zone", "result", NULL };

    stats = ngx_http_ratelimit_stats(cf, rmcf);
    if (stats == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(&family, sizeof(ngx_edge_stats_family_t));
    family.name = "ratelimit_decisions_total";
    family.help = "Rate-limit decisions by zone and result.";
    family.type = NGX_EDGE_STATS_COUNTER;
    family.labels = labels;

    /* the same family for every zone: the registry returns it again */
    fam = ngx_edge_stats_add_family(cf, stats, &family);
    if (fam == NGX_ERROR) {
        return NGX_ERROR;
    }

    values[0] = zone->name;

    for (i = 1; i < NGX_HTTP_RATELIMIT_NSTATUS; i++) {
        values[1].data = (u_char *) ngx_http_ratelimit_results[i];
        values[1].len = ngx_strlen(ngx_http_ratelimit_results[i]);

        zone->st_decisions[i] = ngx_edge_stats_add_series(cf, stats, fam,
                                                          values);
        if (zone->st_decisions[i] == NGX_EDGE_STATS_NONE) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


char *
ngx_http_ratelimit_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ratelimit_main_conf_t *rmcf = conf;

    ssize_t                            size;
    ngx_int_t                          n;
    ngx_str_t                         *value, name, s;
    ngx_uint_t                         i, j, clock_set, lease_set;
    ngx_msec_t                         window, ms;
    ngx_shm_zone_t                    *shm_zone;
    ngx_edge_redis_server_t          **servers;
    ngx_http_ratelimit_zone_t         *zone, **zp;
    ngx_http_compile_complex_value_t   ccv;

    value = cf->args->elts;

    zone = ngx_pcalloc(cf->pool, sizeof(ngx_http_ratelimit_zone_t));
    if (zone == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

    ccv.cf = cf;
    ccv.value = &value[1];
    ccv.complex_value = &zone->key;

    if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    size = 0;
    name.len = 0;
    zone->on_failure = NGX_HTTP_RATELIMIT_FAIL_LOCAL;
    zone->clock = NGX_HTTP_RATELIMIT_CLOCK_REDIS;
    zone->algorithm = NGX_HTTP_RATELIMIT_GCRA;
    clock_set = 0;
    lease_set = 0;
    window = 0;
    zone->lease_max = 64;
    zone->lease_ttl = 1000000;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strcmp(value[i].data, "algorithm=gcra") == 0) {
            zone->algorithm = NGX_HTTP_RATELIMIT_GCRA;
            continue;
        }

        if (ngx_strcmp(value[i].data, "algorithm=sliding_window") == 0) {
            zone->algorithm = NGX_HTTP_RATELIMIT_SLIDING;
            continue;
        }

        if (ngx_strcmp(value[i].data, "mode=lease") == 0) {
            zone->lease = 1;
            continue;
        }

        if (ngx_strncmp(value[i].data, "lease_max=", 10) == 0) {
            n = ngx_atoi(value[i].data + 10, value[i].len - 10);

            if (n == NGX_ERROR || n < 1
                || n > NGX_HTTP_RATELIMIT_LEASE_MAX)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid lease_max \"%V\": a number of "
                                   "tokens from 1 to %d",
                                   &value[i], NGX_HTTP_RATELIMIT_LEASE_MAX);
                return NGX_CONF_ERROR;
            }

            zone->lease_max = n;
            lease_set = 1;
            continue;
        }

        if (ngx_strncmp(value[i].data, "lease_ttl=", 10) == 0) {
            s.data = value[i].data + 10;
            s.len = value[i].len - 10;

            ms = ngx_parse_time(&s, 0);

            if (ms == (ngx_msec_t) NGX_ERROR || ms == 0
                || ms > NGX_HTTP_RATELIMIT_LEASE_TTL_MAX)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid lease_ttl \"%V\": a time from "
                                   "1ms to %ds", &value[i],
                                   NGX_HTTP_RATELIMIT_LEASE_TTL_MAX / 1000);
                return NGX_CONF_ERROR;
            }

            zone->lease_ttl = (int64_t) ms * 1000;
            lease_set = 1;
            continue;
        }

        if (ngx_strncmp(value[i].data, "window=", 7) == 0) {
            s.data = value[i].data + 7;
            s.len = value[i].len - 7;

            window = ngx_parse_time(&s, 0);
            if (window == (ngx_msec_t) NGX_ERROR || window == 0) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid window \"%V\"", &value[i]);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "zone=", 5) == 0) {
            if (ngx_edge_conf_parse_zone(cf, &value[i], &name, &size)
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "rate=", 5) == 0) {
            s.data = value[i].data + 5;
            s.len = value[i].len - 5;

            if (ngx_http_ratelimit_parse_rate(&s, &zone->rate) != NGX_OK) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid rate \"%V\"", &value[i]);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "redis=", 6) == 0) {
            s.data = value[i].data + 6;
            s.len = value[i].len - 6;

            servers = rmcf->redis.elts;

            for (j = 0; j < rmcf->redis.nelts; j++) {
                if (servers[j]->name.len == s.len
                    && ngx_strncmp(servers[j]->name.data, s.data, s.len) == 0)
                {
                    zone->redis = servers[j];
                    zone->script = ((ngx_edge_redis_script_t **)
                                    servers[j]->scripts.elts)[0];
                    break;
                }
            }

            if (zone->redis == NULL) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "unknown redis server \"%V\": declare it "
                                   "with \"ratelimit_redis\" first", &s);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "prefix=", 7) == 0) {
            zone->prefix.data = value[i].data + 7;
            zone->prefix.len = value[i].len - 7;

            if (ngx_http_ratelimit_valid_name(&zone->prefix) != NGX_OK) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid parameter \"%V\"", &value[i]);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strcmp(value[i].data, "clock=redis") == 0) {
            zone->clock = NGX_HTTP_RATELIMIT_CLOCK_REDIS;
            clock_set = 1;
            continue;
        }

        if (ngx_strcmp(value[i].data, "clock=nginx") == 0) {
            zone->clock = NGX_HTTP_RATELIMIT_CLOCK_NGINX;
            clock_set = 1;
            continue;
        }

        if (ngx_strcmp(value[i].data, "on_failure=open") == 0) {
            zone->on_failure = NGX_HTTP_RATELIMIT_FAIL_OPEN;
            continue;
        }

        if (ngx_strcmp(value[i].data, "on_failure=closed") == 0) {
            zone->on_failure = NGX_HTTP_RATELIMIT_FAIL_CLOSED;
            continue;
        }

        if (ngx_strcmp(value[i].data, "on_failure=local") == 0) {
            zone->on_failure = NGX_HTTP_RATELIMIT_FAIL_LOCAL;
            continue;
        }

        if (ngx_strncmp(value[i].data, "tier=", 5) == 0) {
            s.data = value[i].data + 5;
            s.len = value[i].len - 5;

            zone->tier_value = ngx_palloc(cf->pool,
                                          sizeof(ngx_http_complex_value_t));
            if (zone->tier_value == NULL) {
                return NGX_CONF_ERROR;
            }

            ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

            ccv.cf = cf;
            ccv.value = &s;
            ccv.complex_value = zone->tier_value;

            if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\"", &value[i]);
        return NGX_CONF_ERROR;
    }

    if (name.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" must have \"zone\" parameter",
                           &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (ngx_http_ratelimit_valid_name(&name) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid zone name \"%V\": letters, digits, "
                           "\"_\", \"-\" and \".\" only", &name);
        return NGX_CONF_ERROR;
    }

    if (zone->rate.count == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" must have \"rate\" parameter",
                           &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (zone->clock == NGX_HTTP_RATELIMIT_CLOCK_NGINX && zone->redis == NULL)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"clock=\" needs \"redis=\"");
        return NGX_CONF_ERROR;
    }

    if (zone->lease) {
        if (zone->redis == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"mode=lease\" needs \"redis=\": leases "
                               "are taken from a bucket in Redis");
            return NGX_CONF_ERROR;
        }

        if (zone->algorithm == NGX_HTTP_RATELIMIT_SLIDING) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"mode=lease\" does not apply to "
                               "\"algorithm=sliding_window\": leases are "
                               "tokens of a GCRA bucket");
            return NGX_CONF_ERROR;
        }

        zone->lease_script = ((ngx_edge_redis_script_t **)
                              zone->redis->scripts.elts)[2];
        ngx_queue_init(&zone->lease_refills);

    } else if (lease_set) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"lease_max=\" and \"lease_ttl=\" need "
                           "\"mode=lease\"");
        return NGX_CONF_ERROR;
    }

    zone->name = name;

    if (zone->algorithm == NGX_HTTP_RATELIMIT_SLIDING) {
        zone->window = (int64_t) (window ? window : zone->rate.period * 1000)
                       * 1000;

        if (ngx_http_ratelimit_sw_rate(cf, zone, &zone->rate) != NGX_OK) {
            return NGX_CONF_ERROR;
        }

        if (zone->redis) {
            if (clock_set && zone->clock == NGX_HTTP_RATELIMIT_CLOCK_REDIS) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "\"clock=redis\" does not apply to "
                                   "algorithm=sliding_window, whose window "
                                   "is named by the node's clock");
                return NGX_CONF_ERROR;
            }

            zone->clock = NGX_HTTP_RATELIMIT_CLOCK_NGINX;
        }

    } else if (window) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"window=\" needs \"algorithm=sliding_window\"");
        return NGX_CONF_ERROR;
    }

    if (zone->prefix.len == 0) {
        zone->prefix = name;
    }

    if (ngx_array_init(&zone->tiers, cf->pool, 4,
                       sizeof(ngx_http_ratelimit_tier_t))
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    shm_zone = ngx_shared_memory_add(cf, &name, size,
                                     &ngx_http_ratelimit_module);
    if (shm_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    if (shm_zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "duplicate ratelimit zone \"%V\"", &name);
        return NGX_CONF_ERROR;
    }

    ngx_http_ratelimit_deny_init(&zone->deny, size);

    shm_zone->init = ngx_http_ratelimit_init_zone;
    shm_zone->data = zone;
    zone->shm_zone = shm_zone;

    if (ngx_http_ratelimit_zone_stats(cf, rmcf, zone) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (zone->lease
        && ngx_http_ratelimit_lease_stats(cf, zone,
                                          ngx_http_ratelimit_stats(cf, rmcf))
           != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    zp = ngx_array_push(&rmcf->zones);
    if (zp == NULL) {
        return NGX_CONF_ERROR;
    }

    *zp = zone;

    return NGX_CONF_OK;
}


static ngx_http_ratelimit_zone_t *
ngx_http_ratelimit_zone_param(ngx_conf_t *cf,
    ngx_http_ratelimit_main_conf_t *rmcf, ngx_str_t *value)
{
    ngx_str_t                   name;
    ngx_http_ratelimit_zone_t  *zone;

    name.data = value->data + 5;
    name.len = value->len - 5;

    zone = ngx_http_ratelimit_find_zone(rmcf, &name);

    if (zone == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown ratelimit zone \"%V\": declare it with "
                           "\"ratelimit_zone\" first", &name);
    }

    return zone;
}


char *
ngx_http_ratelimit_tier(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ratelimit_main_conf_t *rmcf = conf;

    ngx_str_t                  *value, s;
    ngx_uint_t                  i, j;
    ngx_http_ratelimit_tier_t  *tier, *tiers;
    ngx_http_ratelimit_zone_t  *zone;

    value = cf->args->elts;
    zone = NULL;

    tier = ngx_pcalloc(cf->pool, sizeof(ngx_http_ratelimit_tier_t));
    if (tier == NULL) {
        return NGX_CONF_ERROR;
    }

    tier->burst = -1;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "zone=", 5) == 0) {
            zone = ngx_http_ratelimit_zone_param(cf, rmcf, &value[i]);
            if (zone == NULL) {
                return NGX_CONF_ERROR;
            }
            continue;
        }

        if (ngx_strncmp(value[i].data, "tier=", 5) == 0) {
            tier->name.data = value[i].data + 5;
            tier->name.len = value[i].len - 5;

            if (ngx_http_ratelimit_valid_name(&tier->name) != NGX_OK) {
                goto invalid;
            }
            continue;
        }

        if (ngx_strncmp(value[i].data, "rate=", 5) == 0) {
            s.data = value[i].data + 5;
            s.len = value[i].len - 5;

            if (ngx_http_ratelimit_parse_rate(&s, &tier->rate) != NGX_OK) {
                goto invalid;
            }
            continue;
        }

        if (ngx_strncmp(value[i].data, "burst=", 6) == 0) {
            tier->burst = ngx_atoi(value[i].data + 6, value[i].len - 6);
            if (tier->burst == NGX_ERROR) {
                goto invalid;
            }
            continue;
        }

        goto invalid;
    }

    if (zone == NULL || tier->name.len == 0 || tier->rate.count == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" needs \"zone=\", \"tier=\" and \"rate=\"",
                           &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (tier->burst >= ngx_http_ratelimit_max_units(&tier->rate)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" burst=%i is too large for rate=%uir/%c: "
                           "(burst + 1) * interval must not exceed 2^50 us, "
                           "burst=%L at most", &cmd->name, tier->burst,
                           tier->rate.count,
                           ngx_http_ratelimit_period_unit(&tier->rate),
                           ngx_http_ratelimit_max_units(&tier->rate) - 1);
        return NGX_CONF_ERROR;
    }

    if (zone->tier_value == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "ratelimit zone \"%V\" has no \"tier=\" variable",
                           &zone->name);
        return NGX_CONF_ERROR;
    }

    if (zone->algorithm == NGX_HTTP_RATELIMIT_SLIDING) {
        if (tier->burst >= 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"burst=\" does not apply to ratelimit zone "
                               "\"%V\" with algorithm=sliding_window",
                               &zone->name);
            return NGX_CONF_ERROR;
        }

        if (ngx_http_ratelimit_sw_rate(cf, zone, &tier->rate) != NGX_OK) {
            return NGX_CONF_ERROR;
        }
    }

    tiers = zone->tiers.elts;

    for (j = 0; j < zone->tiers.nelts; j++) {
        if (tiers[j].name.len == tier->name.len
            && ngx_strncmp(tiers[j].name.data, tier->name.data,
                           tier->name.len) == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate tier \"%V\" in ratelimit zone "
                               "\"%V\"", &tier->name, &zone->name);
            return NGX_CONF_ERROR;
        }
    }

    if (zone->tiers.nelts == NGX_HTTP_RATELIMIT_MAX_TIERS) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "too many tiers in ratelimit zone \"%V\"",
                           &zone->name);
        return NGX_CONF_ERROR;
    }

    tiers = ngx_array_push(&zone->tiers);
    if (tiers == NULL) {
        return NGX_CONF_ERROR;
    }

    *tiers = *tier;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\"", &value[i]);
    return NGX_CONF_ERROR;
}


char *
ngx_http_ratelimit_ban(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ratelimit_main_conf_t *rmcf = conf;

    ngx_int_t                   n;
    ngx_str_t                  *value, s;
    ngx_uint_t                  i;
    ngx_msec_t                  ms;
    ngx_http_ratelimit_zone_t  *zone;

    value = cf->args->elts;
    zone = NULL;

    for (i = 1; i < cf->args->nelts; i++) {
        if (ngx_strncmp(value[i].data, "zone=", 5) == 0) {
            zone = ngx_http_ratelimit_zone_param(cf, rmcf, &value[i]);
            if (zone == NULL) {
                return NGX_CONF_ERROR;
            }
            break;
        }
    }

    if (zone == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" must have \"zone\" parameter",
                           &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (zone->ban_threshold) {
        return "is duplicate";
    }

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "zone=", 5) == 0) {
            continue;
        }

        if (ngx_strncmp(value[i].data, "threshold=", 10) == 0) {
            n = ngx_atoi(value[i].data + 10, value[i].len - 10);
            if (n <= 0) {
                goto invalid;
            }
            zone->ban_threshold = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "window=", 7) == 0
            || ngx_strncmp(value[i].data, "duration=", 9) == 0)
        {
            s.data = (u_char *) ngx_strchr(value[i].data, '=') + 1;
            s.len = value[i].data + value[i].len - s.data;

            ms = ngx_parse_time(&s, 0);
            if (ms == (ngx_msec_t) NGX_ERROR || ms == 0) {
                goto invalid;
            }

            if (value[i].data[0] == 'w') {
                zone->ban_window = ms;
            } else {
                zone->ban_duration = ms;
            }
            continue;
        }

        goto invalid;
    }

    if (zone->ban_threshold == 0 || zone->ban_window == 0
        || zone->ban_duration == 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" needs \"threshold=\", \"window=\" and "
                           "\"duration=\"", &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (zone->redis) {
        /* the script that also counts refusals and keeps bans */
        zone->script = ((ngx_edge_redis_script_t **)
                        zone->redis->scripts.elts)[1];

        if (zone->lease) {
            /* leases that also count refusals and keep bans in Redis */
            zone->lease_script = ((ngx_edge_redis_script_t **)
                                  zone->redis->scripts.elts)[3];
        }
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\"", &value[i]);
    return NGX_CONF_ERROR;
}


char *
ngx_http_ratelimit(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ratelimit_loc_conf_t *rlcf = conf;

    ngx_int_t                          burst, delay, cost;
    ngx_str_t                         *value, s;
    ngx_uint_t                         i, nodelay;
    ngx_shm_zone_t                    *shm_zone;
    ngx_http_complex_value_t          *cost_value;
    ngx_http_ratelimit_limit_t        *limit, *limits;
    ngx_http_compile_complex_value_t   ccv;

    value = cf->args->elts;

    shm_zone = NULL;
    burst = -1;
    delay = 0;
    nodelay = 0;
    cost = 1;
    cost_value = NULL;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "zone=", 5) == 0) {
            s.len = value[i].len - 5;
            s.data = value[i].data + 5;

            /* the zone may be declared later in the http block; merge
             * checks that it was */
            shm_zone = ngx_shared_memory_add(cf, &s, 0,
                                             &ngx_http_ratelimit_module);
            if (shm_zone == NULL) {
                return NGX_CONF_ERROR;
            }
            continue;
        }

        if (ngx_strncmp(value[i].data, "burst=", 6) == 0) {
            burst = ngx_atoi(value[i].data + 6, value[i].len - 6);
            if (burst == NGX_ERROR) {
                goto invalid;
            }
            continue;
        }

        if (ngx_strncmp(value[i].data, "delay=", 6) == 0) {
            delay = ngx_atoi(value[i].data + 6, value[i].len - 6);
            if (delay == NGX_ERROR) {
                goto invalid;
            }
            continue;
        }

        if (ngx_strcmp(value[i].data, "nodelay") == 0) {
            nodelay = 1;
            continue;
        }

        if (ngx_strncmp(value[i].data, "cost=", 5) == 0) {
            s.len = value[i].len - 5;
            s.data = value[i].data + 5;

            if (ngx_http_script_variables_count(&s)) {
                cost_value = ngx_palloc(cf->pool,
                                        sizeof(ngx_http_complex_value_t));
                if (cost_value == NULL) {
                    return NGX_CONF_ERROR;
                }

                ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));
                ccv.cf = cf;
                ccv.value = &s;
                ccv.complex_value = cost_value;

                if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
                    return NGX_CONF_ERROR;
                }

                continue;
            }

            /* bounded by the zone's rates once they are all known: see
             * ngx_http_ratelimit_check_bounds() */
            cost = ngx_atoi(s.data, s.len);
            if (cost == NGX_ERROR) {
                goto invalid;
            }
            continue;
        }

        goto invalid;
    }

    if (shm_zone == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" must have \"zone\" parameter",
                           &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (nodelay && delay) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"nodelay\" and \"delay=\" are mutually "
                           "exclusive");
        return NGX_CONF_ERROR;
    }

    if (rlcf->limits == NULL) {
        rlcf->limits = ngx_array_create(cf->pool, 2,
                                        sizeof(ngx_http_ratelimit_limit_t));
        if (rlcf->limits == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    limits = rlcf->limits->elts;

    for (i = 0; i < rlcf->limits->nelts; i++) {
        if (shm_zone == limits[i].shm_zone) {
            return "is duplicate";
        }
    }

    limit = ngx_array_push(rlcf->limits);
    if (limit == NULL) {
        return NGX_CONF_ERROR;
    }

    limit->shm_zone = shm_zone;
    limit->burst = burst;
    limit->delay = delay;
    limit->nodelay = nodelay;
    limit->cost = cost;
    limit->cost_value = cost_value;
    limit->conf_file = cf->conf_file->file.name;
    limit->conf_line = cf->conf_file->line;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\"", &value[i]);
    return NGX_CONF_ERROR;
}
