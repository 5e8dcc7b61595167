/*
 * The adaptive limit of a shedder: a windowed gradient controller in the
 * style of Envoy's adaptive concurrency filter and Netflix's gradient
 * limits, one per shedder, in shared memory.
 *
 * Two phases alternate:
 *
 *   MEASURE  the limit is min_limit; the first min_rtt_samples requests
 *            admitted in this phase give minRTT = their percentile-th
 *            latency.  Then SAMPLE, with the limit it had before.
 *   SAMPLE   every window (with at least window_samples samples) the
 *            sample RTT is the percentile-th latency of the window and
 *
 *              gradient = clamp(minRTT * (1 + rtt_buffer) / sampleRTT,
 *                               0.5, 1.0)
 *              target   = gradient * limit + headroom
 *                         (headroom: sqrt(limit), or the fixed headroom=)
 *              limit    = limit + smoothing * (target - limit),
 *                         within [min_limit, max_limit]
 *
 *            MEASURE again after min_rtt_interval (+- jitter), or once
 *            the limit has been pinned at its floor for
 *            NGX_HTTP_BREAKER_SHED_PINNED windows in a row.
 *
 * The floor.  With the gradient at its lower clamp the limit cannot fall
 * below the point where halving it and adding the headroom balance (4
 * with sqrt(limit)), nor below min_limit.  A gradient that stays clamped
 * says the sample RTT stayed over twice the tolerated RTT whatever the
 * limit did: the limit is still far too high, or minRTT is stale (the
 * backend is slower now, not busier).  Left alone the controller would
 * settle at that floor, below the backend's capacity, until the next
 * periodic measurement; Envoy measures minRTT again when its limit is
 * pinned at the minimum for 5 windows, and so does this controller, with
 * "pinned" meaning either floor.  The measurement answers which case it
 * was: a backend that is merely slower gives a new minRTT and the limit
 * grows back to its capacity; an overloaded one gives the old minRTT and
 * the limit keeps falling.
 *
 * Samples go to a histogram of atomic counters; the worker whose sample
 * makes the window due closes it, by a compare-and-swap on the window's
 * start stamp, so exactly one worker computes each window.  A sample of a
 * request admitted in another phase (its epoch differs) is dropped: a
 * minRTT is measured only with requests admitted at min_limit.
 */

#include "ngx_http_breaker_shed.h"
#include "ngx_edge_time.h"


static uint64_t ngx_http_breaker_shed_take_percentile(
    ngx_http_breaker_shed_ctl_t *ctl, ngx_uint_t percentile);
static void ngx_http_breaker_shed_ctl_window(
    ngx_http_breaker_shed_shedder_t *sd, int64_t now);
static void ngx_http_breaker_shed_ctl_measured(
    ngx_http_breaker_shed_shedder_t *sd, int64_t now);
static void ngx_http_breaker_shed_ctl_measure(
    ngx_http_breaker_shed_shedder_t *sd);
static uint64_t ngx_http_breaker_shed_isqrt(uint64_t v);


ngx_uint_t
ngx_http_breaker_shed_bucket(uint64_t usec)
{
    ngx_uint_t  msb, b;

    if (usec < 4) {
        return (ngx_uint_t) usec;
    }

    msb = 63 - __builtin_clzll(usec);

    /* [2^msb, 2^(msb+1)) in four buckets of 2^(msb-2) each */
    b = (msb - 1) * 4 + ((usec >> (msb - 2)) & 3);

    return ngx_min(b, NGX_HTTP_BREAKER_SHED_NBUCKETS - 1);
}


uint64_t
ngx_http_breaker_shed_bucket_value(ngx_uint_t b)
{
    uint64_t    low, width;
    ngx_uint_t  msb;

    if (b < 4) {
        return b;
    }

    msb = b / 4 + 1;
    width = (uint64_t) 1 << (msb - 2);
    low = (uint64_t) (4 + b % 4) << (msb - 2);

    return low + width / 2;
}


void
ngx_http_breaker_shed_ctl_reset(ngx_http_breaker_shed_shedder_t *sd)
{
    ngx_uint_t                    i;
    ngx_http_breaker_shed_ctl_t  *ctl;

    ctl = &sd->node->ctl;

    ctl->phase = NGX_HTTP_BREAKER_SHED_MEASURE;
    ctl->samples = 0;

    for (i = 0; i < NGX_HTTP_BREAKER_SHED_NBUCKETS; i++) {
        ctl->hist[i] = 0;
    }

    ctl->saved_x1000 = sd->limit * 1000;
    ctl->limit_x1000 = sd->limit * 1000;
    ctl->min_rtt = 0;
    ctl->sample_rtt = 0;
    ctl->gradient_x1000 = 1000;
    ctl->next_measure = 0;
    ctl->windows = 0;
    ctl->pinned = 0;
    ctl->window_start = (ngx_atomic_uint_t) ngx_edge_mono_usec();

    /* requests admitted before belong to no phase of this controller */
    (void) ngx_atomic_fetch_add(&ctl->epoch, 1);
}


ngx_uint_t
ngx_http_breaker_shed_ctl_limit(ngx_http_breaker_shed_shedder_t *sd)
{
    ngx_uint_t                    limit;
    ngx_http_breaker_shed_ctl_t  *ctl;

    ctl = &sd->node->ctl;

    if (ctl->phase == NGX_HTTP_BREAKER_SHED_MEASURE) {
        return sd->min_limit;
    }

    limit = (ctl->limit_x1000 + 500) / 1000;

    return ngx_max(sd->min_limit, ngx_min(limit, sd->max_limit));
}


ngx_uint_t
ngx_http_breaker_shed_ctl_sample(ngx_http_breaker_shed_shedder_t *sd,
    ngx_atomic_uint_t epoch, uint64_t usec)
{
    int64_t                       now;
    ngx_uint_t                    samples, before;
    ngx_atomic_uint_t             start;
    ngx_http_breaker_shed_ctl_t  *ctl;

    ctl = &sd->node->ctl;

    if (epoch != ctl->epoch) {
        return 0;
    }

    (void) ngx_atomic_fetch_add(&ctl->hist[ngx_http_breaker_shed_bucket(usec)],
                                1);
    samples = ngx_atomic_fetch_add(&ctl->samples, 1) + 1;

    now = ngx_edge_mono_usec();
    start = ctl->window_start;

    if (ctl->phase == NGX_HTTP_BREAKER_SHED_MEASURE) {
        if (samples < sd->min_rtt_samples) {
            return 0;
        }

    } else if (samples < sd->window_samples
               || now - (int64_t) start < (int64_t) sd->window * 1000)
    {
        return 0;
    }

    if (!ngx_atomic_cmp_set(&ctl->window_start, start,
                            (ngx_atomic_uint_t) now))
    {
        /* another worker closes this window */
        return 0;
    }

    before = sd->node->limit;

    if (ctl->phase == NGX_HTTP_BREAKER_SHED_MEASURE) {
        ngx_http_breaker_shed_ctl_measured(sd, now);

    } else {
        ngx_http_breaker_shed_ctl_window(sd, now);
    }

    sd->node->limit = ngx_http_breaker_shed_ctl_limit(sd);
    (void) ngx_atomic_fetch_add(&ctl->windows, 1);

    return sd->node->limit != before;
}


/* the percentile of the histogram's samples, which it empties */
static uint64_t
ngx_http_breaker_shed_take_percentile(ngx_http_breaker_shed_ctl_t *ctl,
    ngx_uint_t percentile)
{
    uint64_t           total, rank, seen;
    ngx_uint_t         i;
    ngx_atomic_uint_t  counts[NGX_HTTP_BREAKER_SHED_NBUCKETS];

    ctl->samples = 0;
    total = 0;

    for (i = 0; i < NGX_HTTP_BREAKER_SHED_NBUCKETS; i++) {
        /* take the count; samples added meanwhile stay for the next */
        counts[i] = ctl->hist[i];

        if (counts[i]) {
            (void) ngx_atomic_fetch_add(&ctl->hist[i], -counts[i]);
        }

        total += counts[i];
    }

    if (total == 0) {
        return 0;
    }

    rank = (total * percentile + 99) / 100;
    rank = ngx_max(rank, 1);
    seen = 0;

    for (i = 0; i < NGX_HTTP_BREAKER_SHED_NBUCKETS; i++) {
        seen += counts[i];

        if (seen >= rank) {
            return ngx_http_breaker_shed_bucket_value(i);
        }
    }

    return ngx_http_breaker_shed_bucket_value(NGX_HTTP_BREAKER_SHED_NBUCKETS
                                              - 1);
}


static void
ngx_http_breaker_shed_ctl_measured(ngx_http_breaker_shed_shedder_t *sd,
    int64_t now)
{
    int64_t                       interval;
    uint64_t                      rtt;
    ngx_http_breaker_shed_ctl_t  *ctl;

    ctl = &sd->node->ctl;

    rtt = ngx_http_breaker_shed_take_percentile(ctl, sd->percentile);

    ctl->min_rtt = ngx_max(rtt, 1);
    ctl->limit_x1000 = ctl->saved_x1000;

    /* the next measurement after the interval, +- jitter, so that the
     * shedders of a fleet do not all measure at once */
    interval = ngx_edge_jitter((int64_t) sd->min_rtt_interval * 1000,
                               sd->jitter);

    ctl->next_measure = (ngx_atomic_uint_t) (now + interval);
    ctl->phase = NGX_HTTP_BREAKER_SHED_SAMPLE;

    (void) ngx_atomic_fetch_add(&ctl->epoch, 1);
}


static void
ngx_http_breaker_shed_ctl_window(ngx_http_breaker_shed_shedder_t *sd,
    int64_t now)
{
    double                        limit, raw, gradient, target, headroom;
    uint64_t                      rtt;
    ngx_http_breaker_shed_ctl_t  *ctl;

    ctl = &sd->node->ctl;

    rtt = ngx_http_breaker_shed_take_percentile(ctl, sd->percentile);

    if (rtt == 0) {
        return;
    }

    rtt = ngx_max(rtt, 1);
    ctl->sample_rtt = rtt;

    limit = (double) ctl->limit_x1000 / 1000;

    raw = (double) ctl->min_rtt * (100 + sd->rtt_buffer) / 100
          / (double) rtt;
    gradient = ngx_max(0.5, ngx_min(raw, 1.0));

    if (sd->headroom) {
        headroom = (double) sd->headroom;

    } else {
        headroom = (double) ngx_http_breaker_shed_isqrt(ctl->limit_x1000
                                                        * 1000)
                   / 1000;
    }

    target = gradient * limit + headroom;
    limit += (target - limit) * (double) sd->smoothing / 100;

    limit = ngx_max((double) sd->min_limit,
                    ngx_min(limit, (double) sd->max_limit));

    ctl->gradient_x1000 = (ngx_atomic_uint_t) (gradient * 1000);
    ctl->limit_x1000 = (ngx_atomic_uint_t) (limit * 1000);

    if (raw < 0.5 || limit <= (double) sd->min_limit) {
        ctl->pinned++;

    } else {
        ctl->pinned = 0;
    }

    if (now >= (int64_t) ctl->next_measure
        || ctl->pinned >= NGX_HTTP_BREAKER_SHED_PINNED)
    {
        ngx_http_breaker_shed_ctl_measure(sd);
    }
}


/* re-measure minRTT: the limit is min_limit meanwhile, and the one it had
 * comes back after (Envoy's deferred limit) */
static void
ngx_http_breaker_shed_ctl_measure(ngx_http_breaker_shed_shedder_t *sd)
{
    ngx_http_breaker_shed_ctl_t  *ctl;

    ctl = &sd->node->ctl;

    ctl->saved_x1000 = ctl->limit_x1000;
    ctl->pinned = 0;
    ctl->phase = NGX_HTTP_BREAKER_SHED_MEASURE;

    (void) ngx_atomic_fetch_add(&ctl->epoch, 1);
}


static uint64_t
ngx_http_breaker_shed_isqrt(uint64_t v)
{
    uint64_t  x, y;

    if (v < 2) {
        return v;
    }

    x = v;
    y = (x + 1) / 2;

    while (y < x) {
        x = y;
        y = (x + v / x) / 2;
    }

    return x;
}
