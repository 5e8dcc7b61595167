/*
 * ngx_http_ratelimit_module: the request path.
 *
 * PREACCESS handler -> per limit: key, tier, the zone's shared-memory ban
 * and deny caches, then one EVALSHA per limit (GCRA) or three or four
 * plain commands (sliding window) per limit (all of a request's commands
 * leave in one write, pipelined with other requests'), or the
 * shared-memory bucket -> reject, delay, or continue.
 */

#include "ngx_http_ratelimit_module.h"

#include <ngx_sha1.h>


static ngx_int_t ngx_http_ratelimit_start(ngx_http_request_t *r,
    ngx_http_ratelimit_loc_conf_t *rlcf, ngx_http_ratelimit_ctx_t *ctx);
static ngx_int_t ngx_http_ratelimit_prepare(ngx_http_request_t *r,
    ngx_http_ratelimit_check_t *chk);
static ngx_int_t ngx_http_ratelimit_decide(ngx_http_request_t *r,
    ngx_http_ratelimit_loc_conf_t *rlcf, ngx_http_ratelimit_ctx_t *ctx);
static void ngx_http_ratelimit_adapt(ngx_http_ratelimit_check_t *chk,
    ngx_int_t *burst);
static void ngx_http_ratelimit_delay(ngx_http_request_t *r);
static void ngx_http_ratelimit_detach(void *data);


ngx_str_t  ngx_http_ratelimit_status_names[] = {
    ngx_null_string,
    ngx_string("PASSED"),
    ngx_string("FAILED_OPEN"),
    ngx_string("FAILED_LOCAL"),
    ngx_string("DELAYED"),
    ngx_string("DRY_RUN"),
    ngx_string("REJECTED"),
    ngx_string("FAILED_CLOSED"),
    ngx_string("BANNED")
};


/* the request path */

/*
 * An internal redirect (error_page 429, try_files, a named location) wipes
 * the module contexts, but the decision must survive it: for the refusal
 * page's headers, for $ratelimit_status in the access log, and so that
 * the request is not limited twice.  The pool cleanup registered with the
 * ctx survives, so the ctx is found again through it.
 */

ngx_http_ratelimit_ctx_t *
ngx_http_ratelimit_get_ctx(ngx_http_request_t *r)
{
    ngx_edge_wait_t           *wait;
    ngx_http_ratelimit_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_ratelimit_module);

    if (ctx || !r->internal) {
        return ctx;
    }

    wait = ngx_edge_wait_find(r, ngx_http_ratelimit_detach);

    if (wait == NULL) {
        return NULL;
    }

    ctx = wait->data;
    ngx_http_set_ctx(r, ctx, ngx_http_ratelimit_module);

    return ctx;
}


ngx_int_t
ngx_http_ratelimit_handler(ngx_http_request_t *r)
{
    ngx_int_t                       rc;
    ngx_http_ratelimit_ctx_t       *ctx;
    ngx_http_ratelimit_loc_conf_t  *rlcf;

    rlcf = ngx_http_get_module_loc_conf(r, ngx_http_ratelimit_module);

    if (rlcf->limits == NULL) {
        return NGX_DECLINED;
    }

    /*
     * Once per main request, as limit_req: the first of the main request
     * and its subrequests (auth_request, SSI, mirror) that reaches a
     * limited location is limited, the others are not.  Subrequests share
     * the main request's pool, so the decision's ctx is found through its
     * pool cleanup from any of them.
     */
    ctx = ngx_http_ratelimit_get_ctx(r);

    if (ctx) {
        if (ctx->done || ctx->failed || ctx->wait.request != r) {
            /* after a delay, or after an internal redirect (error_page,
             * try_files), or limited by another request of the same main
             * request: a request is limited once, as with limit_req */
            return NGX_DECLINED;
        }

        if (ngx_edge_wait_pending(&ctx->wait)) {
            return NGX_AGAIN;
        }

        return ngx_http_ratelimit_decide(r, rlcf, ctx);
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_ratelimit_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->remaining = -1;

    if (ngx_edge_wait_init(&ctx->wait, r, ngx_http_ratelimit_detach, ctx)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_set_ctx(r, ctx, ngx_http_ratelimit_module);

    if (r != r->main) {
        /* the decision is the main request's: its headers, its
         * $ratelimit_status */
        ngx_http_set_ctx(r->main, ctx, ngx_http_ratelimit_module);
    }

    rc = ngx_http_ratelimit_start(r, rlcf, ctx);
    if (rc != NGX_OK) {
        /* the request is answered with rc: the items an earlier limit
         * sent must not resume it, and an error_page redirect back here
         * must not wait for them */
        ctx->failed = 1;
        ngx_edge_wait_cancel(&ctx->wait);
        return rc;
    }

    if (ngx_edge_wait_phase(&ctx->wait) == NGX_AGAIN) {
        return NGX_AGAIN;
    }

    return ngx_http_ratelimit_decide(r, rlcf, ctx);
}


static ngx_int_t
ngx_http_ratelimit_start(ngx_http_request_t *r,
    ngx_http_ratelimit_loc_conf_t *rlcf, ngx_http_ratelimit_ctx_t *ctx)
{
    int64_t                      now;
    ngx_int_t                    rc;
    ngx_uint_t                   i, n;
    ngx_http_ratelimit_limit_t  *limits;
    ngx_http_ratelimit_check_t  *chk;

    limits = rlcf->limits->elts;

    ctx->checks = ngx_pcalloc(r->pool, rlcf->limits->nelts
                                       * sizeof(ngx_http_ratelimit_check_t));
    if (ctx->checks == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    now = ngx_http_ratelimit_now();

    for (i = 0, n = 0; i < rlcf->limits->nelts; i++) {
        chk = &ctx->checks[n];
        chk->ctx = ctx;
        chk->limit = &limits[i];
        chk->zone = limits[i].shm_zone->data;

        rc = ngx_http_ratelimit_prepare(r, chk);

        if (rc == NGX_DECLINED) {
            continue;     /* an empty key is not limited */
        }

        if (rc != NGX_OK && rc != NGX_BUSY) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        n++;
        ctx->nchecks = n;

        if (rc == NGX_BUSY) {
            continue;     /* decided already */
        }

        if (chk->zone->redis == NULL) {
            ngx_http_ratelimit_local(chk, now);

        } else if (chk->zone->lease) {
            if (ngx_http_ratelimit_lease_start(r, ctx, chk, now) != NGX_OK) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

        } else if (!ngx_http_ratelimit_cached(chk, now)) {
            goto send;
        }

        if (chk->zone->ddos && chk->status == NGX_HTTP_RATELIMIT_BANNED) {
            /* ratelimit_ddos's limit comes first: a banned client costs
             * no other limit's work, and no Redis command */
            break;
        }

        continue;

    send:

        rc = (chk->zone->algorithm == NGX_HTTP_RATELIMIT_SLIDING)
             ? ngx_http_ratelimit_sw_send(r, ctx, chk)
             : ngx_http_ratelimit_send(r, ctx, chk);

        if (rc != NGX_OK) {
            ngx_http_ratelimit_fail(chk, now);
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_ratelimit_prepare(ngx_http_request_t *r,
    ngx_http_ratelimit_check_t *chk)
{
    u_char                      *p, digest[20];
    ngx_int_t                    n;
    ngx_str_t                    key, tier, cost;
    ngx_uint_t                   i;
    ngx_sha1_t                   sha1;
    ngx_http_ratelimit_zone_t   *zone;
    ngx_http_ratelimit_tier_t   *tiers;
    ngx_http_ratelimit_limit_t  *limit;
    ngx_http_ratelimit_rate_t   *rate;
    ngx_int_t                    burst;

    zone = chk->zone;
    limit = chk->limit;

    if (ngx_http_complex_value(r, &zone->key, &key) != NGX_OK) {
        return NGX_ERROR;
    }

    if (key.len == 0) {
        return NGX_DECLINED;
    }

    if (zone->ddos && ngx_http_ratelimit_ddos_allowed(r, zone->ddos)) {
        return NGX_DECLINED;     /* on ratelimit_ddos's allow list */
    }

    if (key.len > NGX_HTTP_RATELIMIT_MAX_KEY_LEN) {
        /* a client-supplied key must not make Redis keys or shared
         * memory entries as large as the client likes */
        ngx_sha1_init(&sha1);
        ngx_sha1_update(&sha1, key.data, key.len);
        ngx_sha1_final(digest, &sha1);

        p = ngx_pnalloc(r->pool, 40);
        if (p == NULL) {
            return NGX_ERROR;
        }

        ngx_hex_dump(p, digest, 20);
        key.data = p;
        key.len = 40;
    }

    chk->key = key;

    rate = &zone->rate;
    burst = -1;

    if (zone->tier_value) {
        if (ngx_http_complex_value(r, zone->tier_value, &tier) != NGX_OK) {
            return NGX_ERROR;
        }

        tiers = zone->tiers.elts;

        for (i = 0; i < zone->tiers.nelts; i++) {
            if (tiers[i].name.len == tier.len
                && ngx_strncmp(tiers[i].name.data, tier.data, tier.len) == 0)
            {
                chk->tier = &tiers[i];
                chk->tier_name = tiers[i].name;
                rate = &tiers[i].rate;
                burst = tiers[i].burst;
                break;
            }
        }
    }

    if (burst < 0) {
        burst = limit->burst < 0 ? 0 : limit->burst;
    }

    chk->rate = rate;
    chk->factor = NGX_HTTP_RATELIMIT_PPM;

    chk->gcra.interval = rate->interval;
    chk->sw.window = zone->window;
    chk->sw.limit = rate->per_window;

    if (zone->adaptive) {
        ngx_http_ratelimit_adapt(chk, &burst);
    }

    chk->gcra.tau = burst * chk->gcra.interval;
    chk->gcra.cost = limit->cost;

    if (limit->cost_value) {
        if (ngx_http_complex_value(r, limit->cost_value, &cost) != NGX_OK) {
            return NGX_ERROR;
        }

        n = ngx_atoi(cost.data, cost.len);

        if (n == NGX_ERROR) {
            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          "ratelimit: invalid cost \"%V\", 1 is used",
                          &cost);
            n = 1;
        }

        if (zone->algorithm == NGX_HTTP_RATELIMIT_SLIDING
            && n > chk->sw.limit)
        {
            /* more than a whole window holds: it could never pass */
            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          "ratelimit: cost \"%V\" exceeds the %L requests "
                          "per window of zone \"%V\", the request is "
                          "refused", &cost, chk->sw.limit, &zone->name);

            chk->status = NGX_HTTP_RATELIMIT_REJECTED;
            chk->verdict.retry = zone->window;
            return NGX_BUSY;
        }

        if (n > NGX_EDGE_EXACT_MAX / chk->gcra.interval) {
            /* past the bound of exact arithmetic; also more than the
             * bucket holds (burst + 1 is within the bound): it could never
             * pass, so it is refused without touching the bucket */
            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          "ratelimit: cost \"%V\" exceeds the largest cost "
                          "of zone \"%V\" (%L at rate=%uir/%c), the request "
                          "is refused", &cost, &zone->name,
                          NGX_EDGE_EXACT_MAX / chk->gcra.interval,
                          rate->count,
                          rate->period == 1 ? 's'
                          : (rate->period == 60 ? 'm' : 'h'));

            chk->status = NGX_HTTP_RATELIMIT_REJECTED;
            return NGX_BUSY;
        }

        chk->gcra.cost = n;
    }

    return NGX_OK;
}


/*
 * An adaptive zone's rate now: the interval divided and the window's
 * requests multiplied by the factor.  At a rate below the configured one the
 * interval grows: a burst the bounds allowed at the configured rate is cut
 * to what stays within them (2^50 us).
 */

static void
ngx_http_ratelimit_adapt(ngx_http_ratelimit_check_t *chk, ngx_int_t *burst)
{
    int64_t  f, max;

    f = ngx_http_ratelimit_adaptive_factor(chk->zone);

    chk->factor = f;

    /* the configuration bounds f to [1, 10^9] ppm and an interval to
     * 3.6 * 10^9 us: no product below reaches 2^63 */
    chk->gcra.interval = chk->rate->interval * NGX_HTTP_RATELIMIT_PPM / f;
    chk->gcra.interval = ngx_max(chk->gcra.interval, 1);
    chk->gcra.interval = ngx_min(chk->gcra.interval, NGX_EDGE_EXACT_MAX);

    max = NGX_EDGE_EXACT_MAX / chk->gcra.interval;

    if (*burst >= max) {
        *burst = max - 1;
    }

    if (chk->zone->algorithm == NGX_HTTP_RATELIMIT_SLIDING) {
        /* per_window < 2^58 / 1000: split so that nothing overflows */
        chk->sw.limit = chk->rate->per_window / NGX_HTTP_RATELIMIT_PPM * f
                        + chk->rate->per_window % NGX_HTTP_RATELIMIT_PPM * f
                          / NGX_HTTP_RATELIMIT_PPM;
        chk->sw.limit = ngx_max(chk->sw.limit, 1);
        chk->sw.limit = ngx_min(chk->sw.limit,
                                NGX_HTTP_RATELIMIT_SW_MAX / chk->sw.window);
    }
}


void
ngx_http_ratelimit_fail(ngx_http_ratelimit_check_t *chk, int64_t now)
{
    switch (chk->zone->on_failure) {

    case NGX_HTTP_RATELIMIT_FAIL_CLOSED:
        chk->status = NGX_HTTP_RATELIMIT_FAILED_CLOSED;
        break;

    case NGX_HTTP_RATELIMIT_FAIL_LOCAL:
        ngx_http_ratelimit_local(chk, now);

        if (chk->status == NGX_HTTP_RATELIMIT_PASSED) {
            chk->status = NGX_HTTP_RATELIMIT_FAILED_LOCAL;
        }

        break;

    default: /* NGX_HTTP_RATELIMIT_FAIL_OPEN */
        chk->status = NGX_HTTP_RATELIMIT_FAILED_OPEN;
    }
}


static void
ngx_http_ratelimit_count(ngx_http_request_t *r, ngx_http_ratelimit_check_t *chk,
    ngx_http_ratelimit_status_e status)
{
    ngx_http_ratelimit_main_conf_t  *rmcf;

    rmcf = ngx_http_get_module_main_conf(r, ngx_http_ratelimit_module);

    if (rmcf->stats) {
        ngx_edge_stats_add(rmcf->stats, chk->zone->st_decisions[status], 1);
    }
}


/* what one limit did to the request, for its zone's counters: a limit
 * that passed a delayed request delayed it; a refusal in dry-run mode is
 * a dry run */

static ngx_http_ratelimit_status_e
ngx_http_ratelimit_outcome(ngx_http_ratelimit_check_t *chk,
    ngx_http_ratelimit_status_e request)
{
    if (request == NGX_HTTP_RATELIMIT_DRY_RUN
        && chk->status >= NGX_HTTP_RATELIMIT_REJECTED)
    {
        return NGX_HTTP_RATELIMIT_DRY_RUN;
    }

    if (request == NGX_HTTP_RATELIMIT_DELAYED
        && chk->verdict.allowed && chk->verdict.excess > 0
        && !chk->limit->nodelay)
    {
        return NGX_HTTP_RATELIMIT_DELAYED;
    }

    return chk->status;
}


int64_t
ngx_http_ratelimit_remaining(ngx_http_ratelimit_check_t *chk)
{
    int64_t  n;

    if (!chk->verdict.allowed) {
        return 0;
    }

    if (chk->zone->algorithm == NGX_HTTP_RATELIMIT_SLIDING
        || (chk->zone->lease
            && chk->status != NGX_HTTP_RATELIMIT_FAILED_LOCAL))
    {
        return chk->verdict.remaining;
    }

    /* requests that would pass right now, back to back */
    n = (chk->gcra.tau + chk->gcra.interval - chk->verdict.reset)
        / chk->gcra.interval;

    return n < 0 ? 0 : n;
}


static ngx_int_t
ngx_http_ratelimit_decide(ngx_http_request_t *r,
    ngx_http_ratelimit_loc_conf_t *rlcf, ngx_http_ratelimit_ctx_t *ctx)
{
    int64_t                       delay, d, remaining;
    ngx_uint_t                    i, reject, level;
    ngx_msec_t                    ms;
    ngx_http_ratelimit_check_t   *chk;
    ngx_http_ratelimit_status_e   worst;

    worst = NGX_HTTP_RATELIMIT_NONE;
    delay = 0;

    for (i = 0; i < ctx->nchecks; i++) {
        chk = &ctx->checks[i];

        if (chk->status > worst) {
            worst = chk->status;
        }

        switch (chk->status) {

        case NGX_HTTP_RATELIMIT_PASSED:
        case NGX_HTTP_RATELIMIT_FAILED_LOCAL:

            if (!chk->limit->nodelay) {
                d = chk->verdict.excess
                    - (int64_t) chk->limit->delay * chk->gcra.interval;
                delay = ngx_max(delay, d);
            }

            /* fall through */

        case NGX_HTTP_RATELIMIT_REJECTED:
        case NGX_HTTP_RATELIMIT_BANNED:

            remaining = ngx_http_ratelimit_remaining(chk);

            if (ctx->remaining < 0 || remaining < ctx->remaining) {
                ctx->remaining = remaining;
            }

            ctx->reset = ngx_max(ctx->reset, chk->verdict.reset);
            ctx->retry = ngx_max(ctx->retry, chk->verdict.retry);
            break;

        default:
            break;
        }
    }

    ctx->done = 1;

    reject = (worst >= NGX_HTTP_RATELIMIT_REJECTED);

    if (rlcf->dry_run && (reject || delay > 0)) {
        worst = NGX_HTTP_RATELIMIT_DRY_RUN;
        reject = 0;
        delay = 0;

    } else if (!reject && delay > 0) {
        worst = NGX_HTTP_RATELIMIT_DELAYED;
    }

    ctx->status = worst;

    for (i = 0; i < ctx->nchecks; i++) {
        chk = &ctx->checks[i];

        ngx_http_ratelimit_count(r, chk,
                                 ngx_http_ratelimit_outcome(chk, worst));

        if (chk->status >= NGX_HTTP_RATELIMIT_REJECTED) {
            ngx_log_error(rlcf->log_level, r->connection->log, 0,
                          "ratelimit: %V by zone \"%V\", retry in %L.%03Ls%s",
                          &ngx_http_ratelimit_status_names[chk->status],
                          &chk->zone->name, chk->verdict.retry / 1000000,
                          (chk->verdict.retry / 1000) % 1000,
                          rlcf->dry_run ? ", dry run" : "");
        }
    }

    if (reject) {
        return worst == NGX_HTTP_RATELIMIT_FAILED_CLOSED
               ? (ngx_int_t) rlcf->failure_status
               : (ngx_int_t) rlcf->status_code;
    }

    if (delay <= 0) {
        return NGX_DECLINED;
    }

    ms = (ngx_msec_t) ((delay + 999) / 1000);

    /* as limit_req: a delay logs one level below a refusal */
    level = (rlcf->log_level == NGX_LOG_INFO) ? NGX_LOG_INFO
                                              : rlcf->log_level + 1;

    ngx_log_error(level, r->connection->log, 0,
                  "ratelimit: delaying request for %Mms", ms);

    r->read_event_handler = ngx_http_test_reading;
    r->write_event_handler = ngx_http_ratelimit_delay;

    r->connection->write->delayed = 1;
    ngx_add_timer(r->connection->write, ms);

    return NGX_AGAIN;
}


static void
ngx_http_ratelimit_delay(ngx_http_request_t *r)
{
    ngx_event_t  *wev;

    wev = r->connection->write;

    if (wev->delayed) {
        if (ngx_handle_write_event(wev, 0) != NGX_OK) {
            ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        }

        return;
    }

    if (ngx_handle_read_event(r->connection->read, 0) != NGX_OK) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    r->read_event_handler = ngx_http_block_reading;
    r->write_event_handler = ngx_http_core_run_phases;

    ngx_http_core_run_phases(r);
}


static void
ngx_http_ratelimit_detach(void *data)
{
    ngx_http_ratelimit_ctx_t  *ctx = data;

    ngx_uint_t  i;

    /* replies that arrive after the request is gone must find nothing */
    for (i = 0; i < ctx->nchecks; i++) {
        if (ctx->checks[i].cmd) {
            ngx_edge_redis_detach(ctx->checks[i].cmd);
            ctx->checks[i].cmd = NULL;
        }

        ngx_http_ratelimit_lease_detach(&ctx->checks[i]);

        ngx_http_ratelimit_sw_detach(&ctx->checks[i]);
    }
}
