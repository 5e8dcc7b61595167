/*
 * ngx_http_ratelimit_module: adaptive limits.
 *
 * A zone with ratelimit_adaptive limits at its rate (and its tiers' rates)
 * times a factor kept in the zone's shared memory, in parts per million.
 * The log phase counts, for every request the zone admitted, whether it
 * failed (a 5xx response, which includes nginx's 502 and 504 for an
 * upstream it could not reach, or the operator's signal set) and whether
 * it was slower than latency=.  Once per interval one worker (the one whose
 * compare-and-swap moves the interval's stamp) reads and clears the
 * counts and moves the factor:
 *
 *   unhealthy (at least min_samples, and errors > error_rate, or slow ones
 *   more than the percentile allows):      f = max(min, f * decrease)
 *   healthy (errors <= error_rate / 2 and slow ones <= half of what the
 *   percentile allows):                    f = min(max, f + step)
 *   in between (the dead band):            f unchanged
 *
 * "p95 of the admitted requests above latency=" is exactly "more than 5%
 * of them slower than latency=", so one counter decides it: no histogram
 * and no estimate.
 *
 * A zone on Redis shares its factor with the fleet: the evaluating worker
 * of each node sends its verdict (down, hold, up) to one hash per zone,
 * where a script applies at most one decrease and, when there was none,
 * one increase per interval for the whole fleet, and answers the fleet's
 * factor, which the node adopts.  The node applies its own verdict first:
 * with Redis unreachable, each node adapts alone.
 */

#include "ngx_http_ratelimit_module.h"


static void ngx_http_ratelimit_adaptive_count(ngx_http_request_t *r,
    ngx_http_ratelimit_zone_t *zone, ngx_msec_t latency);
static void ngx_http_ratelimit_adaptive_tick(ngx_http_request_t *r,
    ngx_http_ratelimit_zone_t *zone);
static void ngx_http_ratelimit_adaptive_publish(
    ngx_http_ratelimit_zone_t *zone, int64_t f);
static void ngx_http_ratelimit_adaptive_share(ngx_http_ratelimit_zone_t *zone,
    ngx_int_t verdict, int64_t now);
static void ngx_http_ratelimit_adaptive_shared(void *data, redisReply *reply,
    ngx_int_t rc);
static ngx_msec_t ngx_http_ratelimit_latency(ngx_http_request_t *r);
static ngx_atomic_uint_t ngx_http_ratelimit_take(ngx_atomic_t *counter);
static int64_t ngx_http_ratelimit_rate_ppm(ngx_http_ratelimit_rate_t *rate,
    ngx_http_ratelimit_rate_t *base);
static int64_t ngx_http_ratelimit_clamp(ngx_http_ratelimit_adaptive_t *ad,
    int64_t f);


/* the factor requests are limited with now */

int64_t
ngx_http_ratelimit_adaptive_factor(ngx_http_ratelimit_zone_t *zone)
{
    int64_t  f;

    f = (int64_t) zone->sh->adaptive.factor;

    if (f == 0) {
        f = NGX_HTTP_RATELIMIT_PPM;     /* before the first evaluation */
    }

    /* min= or max= may have changed on a reload */
    return ngx_http_ratelimit_clamp(zone->adaptive, f);
}


static int64_t
ngx_http_ratelimit_clamp(ngx_http_ratelimit_adaptive_t *ad, int64_t f)
{
    return ngx_max(ad->min, ngx_min(ad->max, f));
}


/* the log phase: the samples of what the adaptive zones admitted */

ngx_int_t
ngx_http_ratelimit_adaptive_log(ngx_http_request_t *r)
{
    ngx_uint_t                   i;
    ngx_msec_t                   latency;
    ngx_http_ratelimit_ctx_t    *ctx;
    ngx_http_ratelimit_check_t  *chk;

    ctx = ngx_http_ratelimit_get_ctx(r);

    if (ctx == NULL || !ctx->done) {
        return NGX_OK;
    }

    latency = (ngx_msec_t) -1;

    for (i = 0; i < ctx->nchecks; i++) {
        chk = &ctx->checks[i];

        if (chk->zone->adaptive == NULL
            || ctx->status >= NGX_HTTP_RATELIMIT_REJECTED)
        {
            continue;     /* refused: the upstream never saw it (a dry
                             run's refusals did, and count) */
        }

        if (latency == (ngx_msec_t) -1) {
            latency = ngx_http_ratelimit_latency(r);
        }

        ngx_http_ratelimit_adaptive_count(r, chk->zone, latency);
        ngx_http_ratelimit_adaptive_tick(r, chk->zone);
    }

    return NGX_OK;
}


/* the upstream's time when the request went upstream (the time of all its
 * tries), else the request's; milliseconds */

static ngx_msec_t
ngx_http_ratelimit_latency(ngx_http_request_t *r)
{
    ngx_uint_t                  i;
    ngx_msec_t                  ms;
    ngx_time_t                 *tp;
    ngx_http_upstream_state_t  *state;

    if (r->upstream_states && r->upstream_states->nelts) {
        state = r->upstream_states->elts;
        ms = 0;

        for (i = 0; i < r->upstream_states->nelts; i++) {
            if (state[i].peer && state[i].response_time != (ngx_msec_t) -1)
            {
                ms += state[i].response_time;
            }
        }

        return ms;
    }

    tp = ngx_timeofday();

    ms = (ngx_msec_t) ((tp->sec - r->start_sec) * 1000
                       + (tp->msec - r->start_msec));

    return (ngx_msec_int_t) ms < 0 ? 0 : ms;
}


static void
ngx_http_ratelimit_adaptive_count(ngx_http_request_t *r,
    ngx_http_ratelimit_zone_t *zone, ngx_msec_t latency)
{
    ngx_str_t                          signal;
    ngx_uint_t                         failed, status;
    ngx_http_ratelimit_adaptive_t     *ad;
    ngx_http_ratelimit_adaptive_sh_t  *sh;

    ad = zone->adaptive;
    sh = &zone->sh->adaptive;

    /* the status the access log shows: 499 (the client went away) is no
     * upstream failure */
    status = r->err_status ? r->err_status : r->headers_out.status;

    failed = (status >= NGX_HTTP_INTERNAL_SERVER_ERROR);

    if (!failed && ad->signal) {
        if (ngx_http_complex_value(r, ad->signal, &signal) == NGX_OK
            && signal.len
            && !(signal.len == 1 && signal.data[0] == '0'))
        {
            failed = 1;
        }
    }

    (void) ngx_atomic_fetch_add(&sh->requests, 1);

    if (failed) {
        (void) ngx_atomic_fetch_add(&sh->errors, 1);
    }

    if (ad->latency && latency > ad->latency) {
        (void) ngx_atomic_fetch_add(&sh->slow, 1);
    }
}


static ngx_atomic_uint_t
ngx_http_ratelimit_take(ngx_atomic_t *counter)
{
    ngx_atomic_uint_t  v;

    do {
        v = *counter;
    } while (!ngx_atomic_cmp_set(counter, v, 0));

    return v;
}


/* once per interval, by the worker that moves the stamp */

static void
ngx_http_ratelimit_adaptive_tick(ngx_http_request_t *r,
    ngx_http_ratelimit_zone_t *zone)
{
    u_char                             from[64], to[64], *p, *q;
    int64_t                            f, nf;
    ngx_int_t                          verdict;
    ngx_uint_t                         level;
    ngx_msec_t                         now;
    ngx_atomic_uint_t                  stamp, n, errors, slow, allowed;
    ngx_http_ratelimit_adaptive_t     *ad;
    ngx_http_ratelimit_adaptive_sh_t  *sh;

    ad = zone->adaptive;
    sh = &zone->sh->adaptive;

    now = (ngx_msec_t) (ngx_edge_mono_usec() / 1000);
    stamp = sh->stamp;

    if (stamp && now - (ngx_msec_t) stamp < ad->interval) {
        return;
    }

    if (!ngx_atomic_cmp_set(&sh->stamp, stamp, now)) {
        return;     /* another worker evaluates this interval */
    }

    n = ngx_http_ratelimit_take(&sh->requests);
    errors = ngx_http_ratelimit_take(&sh->errors);
    slow = ngx_http_ratelimit_take(&sh->slow);

    f = ngx_http_ratelimit_adaptive_factor(zone);
    nf = f;
    verdict = 0;

    /* slow ones allowed per mille: 50 for p95 */
    allowed = 1000 - ad->percentile;

    if (stamp == 0) {
        /* the first interval starts now: nothing measured yet */

    } else if (n >= ad->min_samples
               && (errors * 1000 > ad->error_rate * n
                   || (ad->latency && slow * 1000 > allowed * n)))
    {
        verdict = -1;
        nf = ngx_http_ratelimit_clamp(ad, f * ad->decrease
                                          / NGX_HTTP_RATELIMIT_PPM);

    } else if (errors * 2000 <= ad->error_rate * n
               && (ad->latency == 0 || slow * 2000 <= allowed * n))
    {
        verdict = 1;
        nf = ngx_http_ratelimit_clamp(ad, f + ad->step);
    }

    sh->factor = nf;
    ngx_http_ratelimit_adaptive_publish(zone, nf);

    if (zone->redis) {
        ngx_http_ratelimit_adaptive_share(zone, verdict,
                                          ngx_edge_wall_usec() / 1000);
    }

    if (nf == f) {
        return;
    }

    p = ngx_http_ratelimit_print_rate(from, &zone->rate, f);
    q = ngx_http_ratelimit_print_rate(to, &zone->rate, nf);

    level = nf < f ? NGX_LOG_WARN : NGX_LOG_INFO;

    ngx_log_error(level, r->connection->log, 0,
                  "ratelimit: zone \"%V\" adaptive rate %*s -> %*s "
                  "(%uA requests, %uA errors, %uA slow)",
                  &zone->name, p - from, from, q - to, to, n, errors, slow);
}


/*
 * The gauge, set (not added) at each evaluation: a value lost to a race
 * with the previous writer, or a stats zone started afresh by a reload, is
 * right again at the next one.  The writers are the evaluating worker and
 * its Redis reply, an interval apart from the next evaluation's.  A worker
 * of an older generation, still finishing requests after a reload, leaves
 * the gauge to the new workers.
 */

static void
ngx_http_ratelimit_adaptive_publish(ngx_http_ratelimit_zone_t *zone,
    int64_t f)
{
    int64_t  value;

    if (ngx_exiting || ngx_quit || zone->adaptive->stats == NULL) {
        return;
    }

    value = ((int64_t) zone->rate.count * f + NGX_HTTP_RATELIMIT_PPM / 2)
            / NGX_HTTP_RATELIMIT_PPM;

    ngx_edge_stats_set(zone->adaptive->stats, zone->adaptive->st_rate, value);
}


/*
 * The fleet's factor.  KEYS[1]: the zone's hash {f, d: the last decrease,
 * c: the last change}, ms of the nodes' wall clocks.  ARGV: now, the base
 * (10^6), interval, verdict (-1, 0, 1), min, max, step, decrease (ppm),
 * the hash's lifetime.  Doubles are exact here: f <= 10^9, f * decrease
 * <= 10^15 < 2^53.
 */

static ngx_str_t  ngx_http_ratelimit_adaptive_lua = ngx_string(
    "local lo, hi = tonumber(ARGV[5]), tonumber(ARGV[6])\n"
    "local f = tonumber(redis.call('HGET', KEYS[1], 'f')) "
    "or tonumber(ARGV[2])\n"
    "f = math.max(lo, math.min(hi, f))\n"
    "local d = tonumber(redis.call('HGET', KEYS[1], 'd')) or 0\n"
    "local c = tonumber(redis.call('HGET', KEYS[1], 'c')) or 0\n"
    "local now, iv = tonumber(ARGV[1]), tonumber(ARGV[3])\n"
    "local v = tonumber(ARGV[4])\n"
    "if v < 0 and now - d >= iv then\n"
    "  f = math.max(lo, math.floor(f * tonumber(ARGV[8]) / 1000000))\n"
    "  redis.call('HSET', KEYS[1], 'f', f, 'd', now, 'c', now)\n"
    "elseif v > 0 and now - c >= iv then\n"
    "  f = math.min(hi, f + tonumber(ARGV[7]))\n"
    "  redis.call('HSET', KEYS[1], 'f', f, 'c', now)\n"
    "elseif redis.call('EXISTS', KEYS[1]) == 0 then\n"
    "  redis.call('HSET', KEYS[1], 'f', f)\n"
    "end\n"
    "redis.call('PEXPIRE', KEYS[1], ARGV[9])\n"
    "return f\n");


static void
ngx_http_ratelimit_adaptive_share(ngx_http_ratelimit_zone_t *zone,
    ngx_int_t verdict, int64_t now)
{
    size_t                          len[13];
    ngx_uint_t                      i;
    const char                     *argv[13];
    u_char                          nums[9][NGX_INT64_LEN + 1];
    int64_t                         args[9];
    ngx_http_ratelimit_adaptive_t  *ad;

    ad = zone->adaptive;

    args[0] = now;
    args[1] = NGX_HTTP_RATELIMIT_PPM;
    args[2] = ad->interval;
    args[3] = verdict;
    args[4] = ad->min;
    args[5] = ad->max;
    args[6] = ad->step;
    args[7] = ad->decrease;
    args[8] = ngx_max((int64_t) ad->interval * 20, 60000);

    argv[0] = "EVAL";
    len[0] = 4;
    argv[1] = (const char *) ngx_http_ratelimit_adaptive_lua.data;
    len[1] = ngx_http_ratelimit_adaptive_lua.len;
    argv[2] = "1";
    len[2] = 1;
    argv[3] = (const char *) ad->redis_key.data;
    len[3] = ad->redis_key.len;

    for (i = 0; i < 9; i++) {
        argv[4 + i] = (const char *) nums[i];
        len[4 + i] = ngx_sprintf(nums[i], "%L", args[i]) - nums[i];
    }

    /* no reply (Redis down, or the in-flight bound): this node's own
     * verdict stands until the next interval */
    (void) ngx_edge_redis_send_command(zone->redis,
                                       ngx_http_ratelimit_adaptive_shared,
                                       zone, 13, argv, len);
}


static void
ngx_http_ratelimit_adaptive_shared(void *data, redisReply *reply,
    ngx_int_t rc)
{
    ngx_http_ratelimit_zone_t *zone = data;

    int64_t  f;

    if (rc != NGX_OK || reply == NULL
        || reply->type != REDIS_REPLY_INTEGER)
    {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "ratelimit: zone \"%V\" adaptive: no fleet factor",
                       &zone->name);
        return;
    }

    f = ngx_http_ratelimit_clamp(zone->adaptive, reply->integer);

    zone->sh->adaptive.factor = f;
    ngx_http_ratelimit_adaptive_publish(zone, f);
}


/* "12.5r/s": the rate times the factor, to three decimals at most */

u_char *
ngx_http_ratelimit_print_rate(u_char *p, ngx_http_ratelimit_rate_t *rate,
    int64_t factor)
{
    int64_t  milli, frac;

    milli = (int64_t) rate->count * factor / 1000;
    frac = milli % 1000;

    p = ngx_sprintf(p, "%L", milli / 1000);

    if (frac) {
        p = ngx_sprintf(p, ".%03L", frac);

        while (p[-1] == '0') {
            p--;
        }
    }

    return ngx_sprintf(p, "r/%c", rate->period == 1 ? 's'
                                  : (rate->period == 60 ? 'm' : 'h'));
}


/* configuration */

/* a rate as parts per million of the zone's rate */

static int64_t
ngx_http_ratelimit_rate_ppm(ngx_http_ratelimit_rate_t *rate,
    ngx_http_ratelimit_rate_t *base)
{
    /* (count / period) / (base count / base period), counts <= 10^6 and
     * periods <= 3600: within 2^63 */
    return (int64_t) rate->count * base->period * NGX_HTTP_RATELIMIT_PPM
           / ((int64_t) base->count * rate->period);
}


static ngx_int_t
ngx_http_ratelimit_parse_fraction(ngx_str_t *s, ngx_uint_t point,
    ngx_int_t max)
{
    ngx_int_t  n;

    n = ngx_atofp(s->data, s->len, point);

    if (n == NGX_ERROR || n > max) {
        return NGX_ERROR;
    }

    return n;
}


static ngx_int_t
ngx_http_ratelimit_adaptive_stats(ngx_conf_t *cf,
    ngx_http_ratelimit_main_conf_t *rmcf, ngx_http_ratelimit_zone_t *zone)
{
    ngx_int_t                 fam;
    ngx_edge_stats_family_t   family;

    static const char  *labels[] = { "zone", NULL };

    if (rmcf->stats == NULL) {
        return NGX_OK;    /* the zone's counters created it */
    }

    zone->adaptive->stats = rmcf->stats;

    ngx_memzero(&family, sizeof(ngx_edge_stats_family_t));
    family.name = "ratelimit_adaptive_rate";
    family.help = "Current rate of an adaptive zone, requests per the "
                  "period of its rate=.";
    family.type = NGX_EDGE_STATS_GAUGE;
    family.labels = labels;

    fam = ngx_edge_stats_add_family(cf, rmcf->stats, &family);
    if (fam == NGX_ERROR) {
        return NGX_ERROR;
    }

    zone->adaptive->st_rate = ngx_edge_stats_add_series(cf, rmcf->stats, fam,
                                                        &zone->name);
    if (zone->adaptive->st_rate == NGX_EDGE_STATS_NONE) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


char *
ngx_http_ratelimit_adaptive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ratelimit_main_conf_t *rmcf = conf;

    u_char                            *eq;
    ngx_int_t                          n;
    ngx_str_t                         *value, name, s;
    ngx_uint_t                         i, j;
    ngx_msec_t                         ms;
    ngx_http_ratelimit_rate_t          rate;
    ngx_http_ratelimit_zone_t         *zone, **zones;
    ngx_http_ratelimit_adaptive_t     *ad;
    ngx_http_compile_complex_value_t   ccv;

    value = cf->args->elts;
    zone = NULL;

    for (i = 1; i < cf->args->nelts; i++) {
        if (ngx_strncmp(value[i].data, "zone=", 5) != 0) {
            continue;
        }

        name.data = value[i].data + 5;
        name.len = value[i].len - 5;

        zones = rmcf->zones.elts;

        for (j = 0; j < rmcf->zones.nelts; j++) {
            if (zones[j]->name.len == name.len
                && ngx_strncmp(zones[j]->name.data, name.data, name.len)
                   == 0)
            {
                zone = zones[j];
                break;
            }
        }

        if (zone == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "unknown ratelimit zone \"%V\": declare it "
                               "with \"ratelimit_zone\" first", &name);
            return NGX_CONF_ERROR;
        }

        break;
    }

    if (zone == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" must have \"zone\" parameter",
                           &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (zone->adaptive) {
        return "is duplicate";
    }

    ad = ngx_pcalloc(cf->pool, sizeof(ngx_http_ratelimit_adaptive_t));
    if (ad == NULL) {
        return NGX_CONF_ERROR;
    }

    /* the defaults: see the README */
    ad->min = 0;
    ad->max = 0;
    ad->step = 0;
    ad->decrease = 500000;
    ad->interval = 5000;
    ad->error_rate = 100;
    ad->percentile = 950;
    ad->min_samples = 10;

    for (i = 1; i < cf->args->nelts; i++) {

        eq = (u_char *) ngx_strchr(value[i].data, '=');
        if (eq == NULL) {
            goto invalid;
        }

        s.data = eq + 1;
        s.len = value[i].data + value[i].len - s.data;

        if (ngx_strncmp(value[i].data, "zone=", 5) == 0) {
            continue;
        }

        if (ngx_strncmp(value[i].data, "min=", 4) == 0
            || ngx_strncmp(value[i].data, "max=", 4) == 0
            || ngx_strncmp(value[i].data, "increase=", 9) == 0)
        {
            if (ngx_http_ratelimit_parse_rate(&s, &rate) != NGX_OK) {
                goto invalid;
            }

            n = ngx_http_ratelimit_rate_ppm(&rate, &zone->rate);

            if (n <= 0) {
                goto invalid;     /* too small a part of the base */
            }

            if (value[i].data[1] == 'i') {
                ad->min = n;

            } else if (value[i].data[1] == 'a') {
                ad->max = n;

            } else {
                ad->step = n;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "decrease=", 9) == 0) {
            /* the part of the rate kept: 0.001 .. 0.999 */
            n = ngx_http_ratelimit_parse_fraction(&s, 3, 999);
            if (n <= 0) {
                goto invalid;
            }

            ad->decrease = n * 1000;
            continue;
        }

        if (ngx_strncmp(value[i].data, "interval=", 9) == 0
            || ngx_strncmp(value[i].data, "latency=", 8) == 0)
        {
            ms = ngx_parse_time(&s, 0);
            if (ms == (ngx_msec_t) NGX_ERROR || ms == 0) {
                goto invalid;
            }

            if (value[i].data[0] == 'i') {
                ad->interval = ms;
            } else {
                ad->latency = ms;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "error_rate=", 11) == 0) {
            /* "10%": per mille of the samples, 0.1% .. 100% */
            if (s.len < 2 || s.data[s.len - 1] != '%') {
                goto invalid;
            }

            s.len--;

            n = ngx_http_ratelimit_parse_fraction(&s, 1, 1000);
            if (n <= 0) {
                goto invalid;
            }

            ad->error_rate = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "percentile=", 11) == 0) {
            /* 50 .. 99.9, per mille */
            n = ngx_http_ratelimit_parse_fraction(&s, 1, 999);
            if (n < 500) {
                goto invalid;
            }

            ad->percentile = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "min_samples=", 12) == 0) {
            n = ngx_atoi(s.data, s.len);
            if (n <= 0 || n > 1000000) {
                goto invalid;
            }

            ad->min_samples = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "signal=", 7) == 0) {
            ad->signal = ngx_palloc(cf->pool,
                                    sizeof(ngx_http_complex_value_t));
            if (ad->signal == NULL) {
                return NGX_CONF_ERROR;
            }

            ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

            ccv.cf = cf;
            ccv.value = &s;
            ccv.complex_value = ad->signal;

            if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        goto invalid;
    }

    if (ad->min == 0 || ad->max == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" needs \"min=\" and \"max=\"", &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (ad->min > NGX_HTTP_RATELIMIT_PPM || ad->max < NGX_HTTP_RATELIMIT_PPM)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\": the rate of zone \"%V\" (rate=%uir/%c) "
                           "must lie between \"min=\" and \"max=\"",
                           &cmd->name, &zone->name, zone->rate.count,
                           zone->rate.period == 1 ? 's'
                           : (zone->rate.period == 60 ? 'm' : 'h'));
        return NGX_CONF_ERROR;
    }

    if (ad->max > 1000 * NGX_HTTP_RATELIMIT_PPM) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\": \"max=\" is more than 1000 times the "
                           "rate of zone \"%V\"", &cmd->name, &zone->name);
        return NGX_CONF_ERROR;
    }

    if (ad->step == 0) {
        /* a tenth of the base rate per interval */
        ad->step = NGX_HTTP_RATELIMIT_PPM / 10;
    }

    if (zone->redis) {
        ad->redis_key.len = sizeof("rl:adaptive:{}") - 1 + zone->prefix.len;
        ad->redis_key.data = ngx_pnalloc(cf->pool, ad->redis_key.len);
        if (ad->redis_key.data == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_sprintf(ad->redis_key.data, "rl:adaptive:{%V}", &zone->prefix);
    }

    zone->adaptive = ad;

    if (ngx_http_ratelimit_adaptive_stats(cf, rmcf, zone) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\"", &value[i]);
    return NGX_CONF_ERROR;
}
