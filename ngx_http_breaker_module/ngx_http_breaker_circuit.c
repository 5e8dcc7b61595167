/*
 * ngx_http_breaker_module: one circuit's state machine, lock-free, in
 * shared memory (see ngx_http_breaker_circuit.h for the contract), and
 * the breaker_zone where the circuits of both layers live.
 *
 * The state word.  One 64-bit word holds everything a transition changes:
 *
 *     bits  0..2    state (ngx_http_breaker_state_e)
 *     bits  3..23   generation (21 bits, wraps)
 *     bits 24..63   a monotonic time in milliseconds (40 bits, 34 years):
 *                   OPEN: when it may half-open; HALF_OPEN: since when
 *
 * so a transition is one compare-and-swap from the word that was read:
 * exactly one worker wins it (and logs it, and counts it), the losers
 * re-read.  Every transition increments the generation; a ticket carries
 * the generation it was admitted under, and an outcome whose generation
 * is no longer the word's is dropped.
 *
 * The window.  A ring of buckets, each tagged with (generation, epoch),
 * epoch = now / bucket width.  An outcome is added to the bucket of its
 * epoch; a bucket whose tag is older is reused: whoever wins the CAS on
 * the tag zeroes the counters.  The window sums the buckets whose tag is
 * of the current generation and one of the last `buckets` epochs, so a
 * transition empties the window without touching it.  The race that
 * remains: a worker that read the old tag (or the new one) just before
 * the winner's zeroing may add its outcome just after it, or see it wiped;
 * each worker has at most one add in flight, so a reset misplaces at most
 * worker_processes outcomes, in a bucket that is either the current one
 * or one about to expire.
 *
 * Judging the window on each outcome reads two buckets, not all of them:
 * the buckets older than the previous epoch change no more (but for a
 * worker a whole bucket width late), so their sum is kept, tagged with
 * (generation, epoch), in a summary that the first worker to judge in a
 * new epoch rebuilds (a seqlock: a worker that finds it being written, or
 * of another epoch, sums the buckets itself, as every outcome did
 * before).  The current and the previous buckets are read live, so the
 * sum is the same as the whole loop's: minimum calls and rates are judged
 * on the same counts.  A fast success is not judged at all once a
 * judgement in the same epoch (and generation) found min_calls reached
 * and both rates below their thresholds (the caller's `quiet` record, in
 * process memory: judged by this process's thresholds, which a reload may
 * change while the circuit is kept): it can only lower the rates, and no
 * bucket leaves the window before the epoch ends.
 *
 * The probes.  In HALF_OPEN one more word counts the permits: generation
 * (21 bits, must be the state word's), issued, done, failed, slow (11,
 * 11, 11, 10 bits).  A permit is taken by CAS (issued < probes), so
 * exactly `probes` requests pass however many workers try; a word of an
 * older generation reads as zero, so entering HALF_OPEN needs no reset.
 * When `probes` outcomes are in, the circuit closes or reopens.
 */

#include "ngx_edge_common.h"
#include "ngx_edge_time.h"
#include "ngx_http_breaker_circuit.h"


#define NGX_HTTP_BREAKER_EPOCH_MASK   (((uint64_t) 1 << 40) - 1)

#define ngx_http_breaker_w_msec(w)    ((int64_t) ((w) >> 24))
#define ngx_http_breaker_word(state, gen, msec)                              \
    ((uint64_t) (state)                                                      \
     | ((uint64_t) ((gen) & NGX_HTTP_BREAKER_GEN_MASK) << 3)                 \
     | ((uint64_t) (msec) << 24))

/* the probe word: gen | issued << 21 | done << 32 | failed << 43 |
 * slow << 54 */
#define ngx_http_breaker_p_gen(p)                                            \
    ((uint32_t) ((p) & NGX_HTTP_BREAKER_GEN_MASK))
#define ngx_http_breaker_p_issued(p)  ((ngx_uint_t) (((p) >> 21) & 0x7ff))
#define ngx_http_breaker_p_done(p)    ((ngx_uint_t) (((p) >> 32) & 0x7ff))
#define ngx_http_breaker_p_failed(p)  ((ngx_uint_t) (((p) >> 43) & 0x7ff))
#define ngx_http_breaker_p_slow(p)    ((ngx_uint_t) (((p) >> 54) & 0x3ff))
#define NGX_HTTP_BREAKER_P_ISSUED     ((uint64_t) 1 << 21)
#define NGX_HTTP_BREAKER_P_DONE       ((uint64_t) 1 << 32)
#define NGX_HTTP_BREAKER_P_FAILED     ((uint64_t) 1 << 43)
#define NGX_HTTP_BREAKER_P_SLOW       ((uint64_t) 1 << 54)

#define NGX_HTTP_BREAKER_MAX_PROBES   1000
#define NGX_HTTP_BREAKER_MAX_BUCKETS  1000
#define NGX_HTTP_BREAKER_MAX_TIME     ((int64_t) 86400 * 1000000)

#define ngx_http_breaker_load(p)      __atomic_load_n(p, __ATOMIC_ACQUIRE)
#define ngx_http_breaker_cas(p, o, n)                                        \
    __atomic_compare_exchange_n(p, o, n, 0, __ATOMIC_ACQ_REL,                \
                                __ATOMIC_ACQUIRE)


enum {
    NGX_HTTP_BREAKER_REASON_NONE = 0,
    NGX_HTTP_BREAKER_REASON_FAILURE_RATE,
    NGX_HTTP_BREAKER_REASON_SLOW_RATE,
    NGX_HTTP_BREAKER_REASON_HALF_OPEN_WAIT,
    NGX_HTTP_BREAKER_REASON_FORCED,
    NGX_HTTP_BREAKER_REASON_PROBES_PASSED
};


static const char  *ngx_http_breaker_reasons[NGX_HTTP_BREAKER_REASONS] = {
    "",
    "failure_rate",
    "slow_rate",
    "half_open_wait",
    "forced",
    "probes_passed"
};


static ngx_str_t  ngx_http_breaker_state_names[] = {
    ngx_string("closed"),
    ngx_string("open"),
    ngx_string("half_open"),
    ngx_string("forced_open"),
    ngx_string("forced_closed"),
    ngx_string("disabled"),
    ngx_string("metrics_only")
};


typedef struct {
    ngx_uint_t                   calls;
    ngx_uint_t                   failures;
    ngx_uint_t                   slow;
} ngx_http_breaker_counts_t;


static void ngx_http_breaker_window_add(ngx_http_breaker_circuit_t *c,
    uint32_t gen, uint64_t epoch, uint64_t slot, ngx_uint_t failed,
    ngx_uint_t slow);
static void ngx_http_breaker_window_sum(ngx_http_breaker_circuit_t *c,
    uint32_t gen, int64_t now, ngx_http_breaker_counts_t *sum);
static void ngx_http_breaker_window_judge_sum(ngx_http_breaker_circuit_t *c,
    uint32_t gen, int64_t now, uint64_t epoch, uint64_t slot,
    ngx_http_breaker_counts_t *sum);
static void ngx_http_breaker_window_count(ngx_http_breaker_circuit_t *c,
    uint32_t gen, uint64_t epoch, uint64_t skip,
    ngx_http_breaker_counts_t *sum);
static void ngx_http_breaker_bucket_count(ngx_http_breaker_circuit_t *c,
    uint32_t gen, uint64_t epoch, uint64_t slot,
    ngx_http_breaker_counts_t *sum);
static void ngx_http_breaker_window_clamp(ngx_http_breaker_counts_t *sum);
static ngx_uint_t ngx_http_breaker_summary_read(ngx_http_breaker_circuit_t *c,
    uint64_t tag, ngx_http_breaker_counts_t *sum);
static void ngx_http_breaker_summary_write(ngx_http_breaker_circuit_t *c,
    uint64_t tag, ngx_http_breaker_counts_t *sum);
static NGX_EDGE_COLD void ngx_http_breaker_judge_window(
    ngx_http_breaker_circuit_t *c, ngx_http_breaker_circuit_conf_t *conf,
    ngx_str_t *name, uint64_t w, uint64_t tag, int64_t now, uint64_t slot,
    ngx_http_breaker_quiet_t *quiet, ngx_log_t *log);
static ngx_uint_t ngx_http_breaker_judge(ngx_http_breaker_circuit_conf_t *conf,
    ngx_http_breaker_counts_t *sum);
static ngx_uint_t ngx_http_breaker_trip(ngx_http_breaker_circuit_t *c,
    ngx_http_breaker_circuit_conf_t *conf, ngx_str_t *name, uint64_t w,
    ngx_uint_t reason, ngx_http_breaker_counts_t *sum, int64_t now,
    ngx_log_t *log);
static ngx_uint_t ngx_http_breaker_close(ngx_http_breaker_circuit_t *c,
    ngx_http_breaker_circuit_conf_t *conf, ngx_str_t *name, uint64_t w,
    ngx_http_breaker_counts_t *sum, ngx_log_t *log);
static ngx_uint_t ngx_http_breaker_half_open(ngx_http_breaker_circuit_t *c,
    ngx_http_breaker_circuit_conf_t *conf, ngx_str_t *name, uint64_t w,
    int64_t now, ngx_log_t *log);
static void ngx_http_breaker_probe_outcome(ngx_http_breaker_circuit_t *c,
    ngx_http_breaker_circuit_conf_t *conf, ngx_str_t *name,
    ngx_http_breaker_ticket_t *t, ngx_uint_t failed, ngx_uint_t slow,
    int64_t now, ngx_log_t *log);
static int64_t ngx_http_breaker_open_time(ngx_http_breaker_circuit_conf_t *conf,
    ngx_uint_t opens);
static void ngx_http_breaker_transition(ngx_http_breaker_circuit_conf_t *conf,
    ngx_str_t *name, ngx_uint_t from, ngx_uint_t to);


size_t
ngx_http_breaker_circuit_size(ngx_http_breaker_circuit_conf_t *conf)
{
    return sizeof(ngx_http_breaker_circuit_t)
           + conf->buckets * sizeof(ngx_http_breaker_bucket_t);
}


void
ngx_http_breaker_circuit_init(ngx_http_breaker_circuit_t *c,
    ngx_http_breaker_circuit_conf_t *conf)
{
    c->word = ngx_http_breaker_word(NGX_HTTP_BREAKER_CLOSED, 1, 0);
    c->probes = 0;
    c->opens = 0;
    c->reason = NGX_HTTP_BREAKER_REASON_NONE;
    c->width = conf->window / (int64_t) conf->buckets;
    c->nbuckets = conf->buckets;

    ngx_memzero(&c->summary, sizeof(ngx_http_breaker_summary_t));
    ngx_memzero(c->buckets, conf->buckets * sizeof(ngx_http_breaker_bucket_t));
}


ngx_int_t
ngx_http_breaker_circuit_admit(ngx_http_breaker_circuit_t *c,
    ngx_http_breaker_circuit_conf_t *conf, ngx_str_t *name, int64_t now,
    ngx_http_breaker_ticket_t *t, int64_t *retry_after, ngx_log_t *log)
{
    int64_t     until;
    uint64_t    w, p, np;
    uint32_t    gen;
    ngx_uint_t  issued;

    t->probe = 0;
    t->admitted = 0;
    *retry_after = 0;

    switch (conf->mode) {

    case NGX_HTTP_BREAKER_FORCED_OPEN:
        return NGX_DECLINED;

    case NGX_HTTP_BREAKER_DISABLED:
    case NGX_HTTP_BREAKER_METRICS_ONLY:
        w = ngx_http_breaker_load(&c->word);
        t->generation = ngx_http_breaker_w_gen(w);
        t->admitted = 1;
        return NGX_OK;
    }

    for ( ;; ) {
        w = ngx_http_breaker_load(&c->word);
        gen = ngx_http_breaker_w_gen(w);

        switch (ngx_http_breaker_w_state(w)) {

        case NGX_HTTP_BREAKER_OPEN:
            until = ngx_http_breaker_w_msec(w) * 1000;

            if (now < until) {
                *retry_after = until - now;
                return NGX_DECLINED;
            }

            /* the open time is over: the first to see it half-opens */
            (void) ngx_http_breaker_half_open(c, conf, name, w, now, log);
            continue;

        case NGX_HTTP_BREAKER_HALF_OPEN:
            if (conf->half_open_wait > 0
                && now >= ngx_http_breaker_w_msec(w) * 1000
                          + conf->half_open_wait)
            {
                /* the probes did not complete in time: reopen */
                (void) ngx_http_breaker_trip(c, conf, name, w,
                                       NGX_HTTP_BREAKER_REASON_HALF_OPEN_WAIT,
                                       NULL, now, log);
                continue;
            }

            p = ngx_http_breaker_load(&c->probes);

            if (ngx_http_breaker_p_gen(p) != gen) {
                np = gen | NGX_HTTP_BREAKER_P_ISSUED;

            } else {
                issued = ngx_http_breaker_p_issued(p);

                if (issued >= conf->probes) {
                    return NGX_DECLINED;
                }

                np = p + NGX_HTTP_BREAKER_P_ISSUED;
            }

            if (ngx_http_breaker_load(&c->word) != w) {
                continue;
            }

            if (!ngx_http_breaker_cas(&c->probes, &p, np)) {
                continue;
            }

            t->generation = gen;
            t->probe = 1;
            t->admitted = 1;
            return NGX_OK;

        case NGX_HTTP_BREAKER_FORCED_OPEN:
            return NGX_DECLINED;

        default: /* CLOSED, FORCED_CLOSED */
            t->generation = gen;
            t->admitted = 1;
            return NGX_OK;
        }
    }
}


void
ngx_http_breaker_circuit_record(ngx_http_breaker_circuit_t *c,
    ngx_http_breaker_circuit_conf_t *conf, ngx_str_t *name,
    ngx_http_breaker_ticket_t *t, ngx_http_breaker_outcome_e outcome,
    int64_t latency, int64_t now, ngx_http_breaker_quiet_t *quiet,
    ngx_log_t *log)
{
    uint64_t    w, epoch, slot, tag;
    ngx_uint_t  failed, slow, state;

    if (!t->admitted) {
        return;
    }

    if (outcome == NGX_HTTP_BREAKER_IGNORED) {
        ngx_http_breaker_circuit_cancel(c, t);
        return;
    }

    t->admitted = 0;

    if (conf->mode == NGX_HTTP_BREAKER_DISABLED) {
        return;
    }

    failed = (outcome != NGX_HTTP_BREAKER_SUCCESS);
    slow = (latency >= conf->slow_call);

    w = ngx_http_breaker_load(&c->word);

    if (ngx_http_breaker_w_gen(w)
        != (t->generation & NGX_HTTP_BREAKER_GEN_MASK))
    {
        /* admitted before the last transition: not this state's call */
        return;
    }

    if (t->probe) {
        ngx_http_breaker_probe_outcome(c, conf, name, t, failed, slow, now,
                                       log);
        return;
    }

    state = ngx_http_breaker_w_state(w);

    if (state != NGX_HTTP_BREAKER_CLOSED
        && state != NGX_HTTP_BREAKER_FORCED_CLOSED)
    {
        return;
    }

    /* the two divisions of the hot path, once */
    epoch = (uint64_t) (now / c->width) & NGX_HTTP_BREAKER_EPOCH_MASK;
    slot = epoch % c->nbuckets;

    ngx_http_breaker_window_add(c, t->generation, epoch, slot, failed, slow);

    if (state != NGX_HTTP_BREAKER_CLOSED
        || conf->mode != NGX_HTTP_BREAKER_CLOSED)
    {
        /* forced closed, metrics only: counted, never judged */
        return;
    }

    tag = ((uint64_t) (t->generation & NGX_HTTP_BREAKER_GEN_MASK) << 40)
          | epoch;

    if (!failed && !slow
        && quiet != NULL && quiet->tag == tag)
    {
        /*
         * A fast success lowers both rates and the window's buckets
         * expire only when the epoch ends: a window judged in this epoch
         * with min_calls reached and both rates below their thresholds
         * stays below them until a failure or a slow call, each judged.
         */
        return;
    }

    ngx_http_breaker_judge_window(c, conf, name, w, tag, now, slot, quiet,
                                  log);
}


/* an outcome of a CLOSED circuit judged on the window: trips it, or marks
 * the epoch quiet for this process (tag: the outcome's generation and
 * epoch) */
static void
ngx_http_breaker_judge_window(ngx_http_breaker_circuit_t *c,
    ngx_http_breaker_circuit_conf_t *conf, ngx_str_t *name, uint64_t w,
    uint64_t tag, int64_t now, uint64_t slot, ngx_http_breaker_quiet_t *quiet,
    ngx_log_t *log)
{
    ngx_uint_t                 reason;
    ngx_http_breaker_counts_t  sum;

    ngx_http_breaker_window_judge_sum(c, (uint32_t) (tag >> 40), now,
                                      tag & NGX_HTTP_BREAKER_EPOCH_MASK, slot,
                                      &sum);

    reason = ngx_http_breaker_judge(conf, &sum);

    if (reason != NGX_HTTP_BREAKER_REASON_NONE) {
        (void) ngx_http_breaker_trip(c, conf, name, w, reason, &sum, now, log);
        return;
    }

    if (quiet != NULL && sum.calls >= conf->min_calls && sum.calls > 0) {
        quiet->word = &c->word;
        quiet->judged = w;
        quiet->tag = tag;
        quiet->from = now - now % c->width;
        quiet->until = quiet->from + c->width;
        quiet->bucket = &c->buckets[slot];
    }
}


void
ngx_http_breaker_circuit_cancel(ngx_http_breaker_circuit_t *c,
    ngx_http_breaker_ticket_t *t)
{
    uint64_t  p;

    if (!t->admitted) {
        return;
    }

    t->admitted = 0;

    if (!t->probe) {
        return;
    }

    p = ngx_http_breaker_load(&c->probes);

    do {
        if (ngx_http_breaker_p_gen(p)
            != (t->generation & NGX_HTTP_BREAKER_GEN_MASK)
            || ngx_http_breaker_p_issued(p) <= ngx_http_breaker_p_done(p))
        {
            /* another half-open period: its permits are its own */
            return;
        }

    } while (!ngx_http_breaker_cas(&c->probes, &p,
                                   p - NGX_HTTP_BREAKER_P_ISSUED));
}


ngx_http_breaker_state_e
ngx_http_breaker_circuit_state(ngx_http_breaker_circuit_t *c,
    ngx_http_breaker_circuit_conf_t *conf, int64_t now)
{
    uint64_t    w;
    ngx_uint_t  state;

    if (conf->mode != NGX_HTTP_BREAKER_CLOSED) {
        return conf->mode;
    }

    w = ngx_http_breaker_load(&c->word);
    state = ngx_http_breaker_w_state(w);

    if (state == NGX_HTTP_BREAKER_OPEN
        && now >= ngx_http_breaker_w_msec(w) * 1000)
    {
        return NGX_HTTP_BREAKER_HALF_OPEN;
    }

    if (state == NGX_HTTP_BREAKER_HALF_OPEN
        && conf->half_open_wait > 0
        && now >= ngx_http_breaker_w_msec(w) * 1000 + conf->half_open_wait)
    {
        return NGX_HTTP_BREAKER_OPEN;
    }

    return state;
}


ngx_http_breaker_state_e
ngx_http_breaker_circuit_stored_state(ngx_http_breaker_circuit_t *c,
    ngx_http_breaker_circuit_conf_t *conf)
{
    if (conf->mode != NGX_HTTP_BREAKER_CLOSED) {
        return conf->mode;
    }

    return ngx_http_breaker_w_state(ngx_http_breaker_load(&c->word));
}


ngx_http_breaker_state_e
ngx_http_breaker_circuit_force_state(ngx_http_breaker_circuit_t *c,
    ngx_http_breaker_state_e state, ngx_str_t *name, ngx_log_t *log)
{
    uint64_t    w, nw;
    ngx_uint_t  from;

    w = ngx_http_breaker_load(&c->word);

    do {
        nw = ngx_http_breaker_word(state, ngx_http_breaker_w_gen(w) + 1, 0);

    } while (!ngx_http_breaker_cas(&c->word, &w, nw));

    from = ngx_http_breaker_w_state(w);

    if (state == NGX_HTTP_BREAKER_CLOSED) {
        __atomic_store_n(&c->opens, 0, __ATOMIC_RELAXED);

    } else {
        __atomic_store_n(&c->reason, NGX_HTTP_BREAKER_REASON_FORCED,
                         __ATOMIC_RELAXED);
    }

    ngx_log_error(NGX_LOG_WARN, log, 0,
                  "breaker circuit \"%V\": %V -> %V (forced)", name,
                  ngx_http_breaker_state_name(from),
                  ngx_http_breaker_state_name(state));

    return from;
}


void
ngx_http_breaker_circuit_info(ngx_http_breaker_circuit_t *c,
    ngx_http_breaker_circuit_conf_t *conf, int64_t now,
    ngx_http_breaker_circuit_info_t *info)
{
    uint64_t                   w, p;
    uint32_t                   gen;
    ngx_uint_t                 reason;
    ngx_http_breaker_counts_t  sum;

    w = ngx_http_breaker_load(&c->word);
    gen = ngx_http_breaker_w_gen(w);

    ngx_memzero(info, sizeof(ngx_http_breaker_circuit_info_t));

    info->state = ngx_http_breaker_circuit_state(c, conf, now);
    info->generation = gen;
    info->consecutive_opens = (ngx_uint_t) ngx_http_breaker_load(&c->opens);

    reason = (ngx_uint_t) ngx_http_breaker_load(&c->reason);
    info->reason = ngx_http_breaker_reasons[
                       reason < sizeof(ngx_http_breaker_reasons)
                                / sizeof(ngx_http_breaker_reasons[0])
                       ? reason : 0];

    if (ngx_http_breaker_w_state(w) == NGX_HTTP_BREAKER_HALF_OPEN) {
        p = ngx_http_breaker_load(&c->probes);

        if (ngx_http_breaker_p_gen(p) == gen) {
            sum.calls = ngx_http_breaker_p_done(p);
            sum.failures = ngx_http_breaker_p_failed(p);
            sum.slow = ngx_http_breaker_p_slow(p);

        } else {
            ngx_memzero(&sum, sizeof(ngx_http_breaker_counts_t));
        }

    } else {
        ngx_http_breaker_window_sum(c, gen, now, &sum);
    }

    info->calls = sum.calls;
    info->failures = sum.failures;
    info->slow = sum.slow;

    if (sum.calls) {
        info->failure_rate = sum.failures * 100 / sum.calls;
        info->slow_rate = sum.slow * 100 / sum.calls;
    }

    if (ngx_http_breaker_w_state(w) == NGX_HTTP_BREAKER_OPEN
        && ngx_http_breaker_w_msec(w) * 1000 > now)
    {
        info->until_half_open = ngx_http_breaker_w_msec(w) * 1000 - now;
    }
}


ngx_str_t *
ngx_http_breaker_state_name(ngx_http_breaker_state_e state)
{
    if ((ngx_uint_t) state >= sizeof(ngx_http_breaker_state_names)
                              / sizeof(ngx_str_t))
    {
        state = NGX_HTTP_BREAKER_CLOSED;
    }

    return &ngx_http_breaker_state_names[state];
}


const char *
ngx_http_breaker_circuit_reason(ngx_http_breaker_circuit_t *c)
{
    return ngx_http_breaker_reason_name(
               ngx_http_breaker_circuit_reason_code(c));
}


ngx_uint_t
ngx_http_breaker_circuit_reason_code(ngx_http_breaker_circuit_t *c)
{
    ngx_uint_t  reason;

    reason = (ngx_uint_t) ngx_http_breaker_load(&c->reason);

    return reason < NGX_HTTP_BREAKER_REASONS ? reason : 0;
}


const char *
ngx_http_breaker_reason_name(ngx_uint_t code)
{
    return ngx_http_breaker_reasons[code < NGX_HTTP_BREAKER_REASONS
                                    ? code : 0];
}


static void
ngx_http_breaker_window_add(ngx_http_breaker_circuit_t *c, uint32_t gen,
    uint64_t epoch, uint64_t slot, ngx_uint_t failed, ngx_uint_t slow)
{
    uint64_t                    tag, old;
    ngx_http_breaker_bucket_t  *b;

    tag = ((uint64_t) (gen & NGX_HTTP_BREAKER_GEN_MASK) << 40) | epoch;
    b = &c->buckets[slot];

    old = ngx_http_breaker_load(&b->tag);

    while (old != tag) {

        if ((old >> 40) == (tag >> 40)
            && (old & NGX_HTTP_BREAKER_EPOCH_MASK)
               > (tag & NGX_HTTP_BREAKER_EPOCH_MASK))
        {
            /* this worker was late: the bucket serves a newer epoch */
            return;
        }

        if (ngx_http_breaker_cas(&b->tag, &old, tag)) {
            /* the winner resets the bucket for its new epoch */
            __atomic_store_n(&b->calls, 0, __ATOMIC_RELAXED);
            __atomic_store_n(&b->failures, 0, __ATOMIC_RELAXED);
            __atomic_store_n(&b->slow, 0, __ATOMIC_RELAXED);
            break;
        }
    }

    __atomic_fetch_add(&b->calls, 1, __ATOMIC_RELAXED);

    if (failed) {
        __atomic_fetch_add(&b->failures, 1, __ATOMIC_RELAXED);
    }

    if (slow) {
        __atomic_fetch_add(&b->slow, 1, __ATOMIC_RELAXED);
    }
}


static void
ngx_http_breaker_window_sum(ngx_http_breaker_circuit_t *c, uint32_t gen,
    int64_t now, ngx_http_breaker_counts_t *sum)
{
    uint64_t  epoch;

    epoch = (uint64_t) (now / c->width) & NGX_HTTP_BREAKER_EPOCH_MASK;

    sum->calls = 0;
    sum->failures = 0;
    sum->slow = 0;

    ngx_http_breaker_window_count(c, gen, epoch, 0, sum);
    ngx_http_breaker_window_clamp(sum);
}


/*
 * The same sum as ngx_http_breaker_window_sum(), for judging an outcome:
 * the buckets older than the previous epoch from the summary (rebuilt
 * once per epoch), the previous and the current bucket read live.
 */
static void
ngx_http_breaker_window_judge_sum(ngx_http_breaker_circuit_t *c,
    uint32_t gen, int64_t now, uint64_t epoch, uint64_t slot,
    ngx_http_breaker_counts_t *sum)
{
    uint64_t  tag;

    if (c->nbuckets <= 2 || epoch < 2) {
        ngx_http_breaker_window_sum(c, gen, now, sum);
        return;
    }

    tag = ((uint64_t) (gen & NGX_HTTP_BREAKER_GEN_MASK) << 40) | epoch;

    if (!ngx_http_breaker_summary_read(c, tag, sum)) {
        sum->calls = 0;
        sum->failures = 0;
        sum->slow = 0;

        ngx_http_breaker_window_count(c, gen, epoch, 2, sum);
        ngx_http_breaker_summary_write(c, tag, sum);
    }

    ngx_http_breaker_bucket_count(c, gen, epoch - 1,
                                  slot ? slot - 1 : c->nbuckets - 1, sum);
    ngx_http_breaker_bucket_count(c, gen, epoch, slot, sum);
    ngx_http_breaker_window_clamp(sum);
}


/* adds the buckets of generation gen and of the window ending at epoch,
 * but the `skip` newest epochs */
static void
ngx_http_breaker_window_count(ngx_http_breaker_circuit_t *c, uint32_t gen,
    uint64_t epoch, uint64_t skip, ngx_http_breaker_counts_t *sum)
{
    uint64_t                    tag, e;
    ngx_uint_t                  i;
    ngx_http_breaker_bucket_t  *b;

    for (i = 0; i < c->nbuckets; i++) {
        b = &c->buckets[i];
        tag = ngx_http_breaker_load(&b->tag);

        if ((tag >> 40) != (gen & NGX_HTTP_BREAKER_GEN_MASK)) {
            continue;
        }

        e = tag & NGX_HTTP_BREAKER_EPOCH_MASK;

        if (e + skip > epoch || epoch - e >= c->nbuckets) {
            continue;
        }

        sum->calls += __atomic_load_n(&b->calls, __ATOMIC_RELAXED);
        sum->failures += __atomic_load_n(&b->failures, __ATOMIC_RELAXED);
        sum->slow += __atomic_load_n(&b->slow, __ATOMIC_RELAXED);
    }
}


/* adds the bucket of that epoch (slot: epoch % nbuckets) if it holds it
 * (its slot holds no other epoch of the window) */
static void
ngx_http_breaker_bucket_count(ngx_http_breaker_circuit_t *c, uint32_t gen,
    uint64_t epoch, uint64_t slot, ngx_http_breaker_counts_t *sum)
{
    ngx_http_breaker_bucket_t  *b;

    b = &c->buckets[slot];

    if (ngx_http_breaker_load(&b->tag)
        != (((uint64_t) (gen & NGX_HTTP_BREAKER_GEN_MASK) << 40) | epoch))
    {
        return;
    }

    sum->calls += __atomic_load_n(&b->calls, __ATOMIC_RELAXED);
    sum->failures += __atomic_load_n(&b->failures, __ATOMIC_RELAXED);
    sum->slow += __atomic_load_n(&b->slow, __ATOMIC_RELAXED);
}


static void
ngx_http_breaker_window_clamp(ngx_http_breaker_counts_t *sum)
{
    /* a reset racing with adds can leave a part above the whole */

    if (sum->failures > sum->calls) {
        sum->failures = sum->calls;
    }

    if (sum->slow > sum->calls) {
        sum->slow = sum->calls;
    }
}


/* 1 and the summary's counts if it is whole and of that tag */
static ngx_uint_t
ngx_http_breaker_summary_read(ngx_http_breaker_circuit_t *c, uint64_t tag,
    ngx_http_breaker_counts_t *sum)
{
    uint64_t                     seq;
    ngx_http_breaker_summary_t  *sm;

    sm = &c->summary;

    seq = __atomic_load_n(&sm->seq, __ATOMIC_ACQUIRE);

    if ((seq & 1) || __atomic_load_n(&sm->tag, __ATOMIC_RELAXED) != tag) {
        return 0;
    }

    sum->calls = __atomic_load_n(&sm->calls, __ATOMIC_RELAXED);
    sum->failures = __atomic_load_n(&sm->failures, __ATOMIC_RELAXED);
    sum->slow = __atomic_load_n(&sm->slow, __ATOMIC_RELAXED);

    __atomic_thread_fence(__ATOMIC_ACQUIRE);

    /* written meanwhile: the counts may be torn */
    return __atomic_load_n(&sm->seq, __ATOMIC_RELAXED) == seq;
}


/* the writer takes the seqlock by CAS (odd); a worker that loses it, or
 * finds it taken, leaves the summary to the other */
static void
ngx_http_breaker_summary_write(ngx_http_breaker_circuit_t *c, uint64_t tag,
    ngx_http_breaker_counts_t *sum)
{
    uint64_t                     seq;
    ngx_http_breaker_summary_t  *sm;

    sm = &c->summary;

    seq = __atomic_load_n(&sm->seq, __ATOMIC_RELAXED);

    if ((seq & 1) || !ngx_http_breaker_cas(&sm->seq, &seq, seq + 1)) {
        return;
    }

    /* the odd sequence is seen before any of the stores below (a reader
     * that sees one of them then finds the sequence changed) */
    __atomic_thread_fence(__ATOMIC_RELEASE);

    __atomic_store_n(&sm->tag, tag, __ATOMIC_RELAXED);
    __atomic_store_n(&sm->calls, (uint64_t) sum->calls, __ATOMIC_RELAXED);
    __atomic_store_n(&sm->failures, (uint64_t) sum->failures,
                     __ATOMIC_RELAXED);
    __atomic_store_n(&sm->slow, (uint64_t) sum->slow, __ATOMIC_RELAXED);

    __atomic_store_n(&sm->seq, seq + 2, __ATOMIC_RELEASE);
}


/* resilience4j: a rate at or above its threshold trips the circuit, once
 * the window holds at least min_calls calls */
static ngx_uint_t
ngx_http_breaker_judge(ngx_http_breaker_circuit_conf_t *conf,
    ngx_http_breaker_counts_t *sum)
{
    if (sum->calls == 0 || sum->calls < conf->min_calls) {
        return NGX_HTTP_BREAKER_REASON_NONE;
    }

    if (sum->failures * 100 >= conf->failure_rate * sum->calls) {
        return NGX_HTTP_BREAKER_REASON_FAILURE_RATE;
    }

    if (sum->slow * 100 >= conf->slow_rate * sum->calls) {
        return NGX_HTTP_BREAKER_REASON_SLOW_RATE;
    }

    return NGX_HTTP_BREAKER_REASON_NONE;
}


/* open time for the n-th consecutive open: open * n, capped, jittered
 * by up to +-jitter percent, never above open_max */
static int64_t
ngx_http_breaker_open_time(ngx_http_breaker_circuit_conf_t *conf,
    ngx_uint_t opens)
{
    int64_t  d;

    if (opens == 0) {
        opens = 1;
    }

    d = (opens > (ngx_uint_t) (conf->open_max / conf->open) + 1)
        ? conf->open_max : conf->open * (int64_t) opens;

    if (d > conf->open_max) {
        d = conf->open_max;
    }

    if (conf->jitter) {
        d = ngx_edge_jitter(d, conf->jitter);

        if (d > conf->open_max) {
            d = conf->open_max;
        }
    }

    return d;
}


/* CLOSED or HALF_OPEN -> OPEN; 1 if this worker made the transition */
static ngx_uint_t
ngx_http_breaker_trip(ngx_http_breaker_circuit_t *c,
    ngx_http_breaker_circuit_conf_t *conf, ngx_str_t *name, uint64_t w,
    ngx_uint_t reason, ngx_http_breaker_counts_t *sum, int64_t now,
    ngx_log_t *log)
{
    int64_t     d, until, mono;
    uint64_t    nw;
    ngx_uint_t  opens, from;

    from = ngx_http_breaker_w_state(w);

    /* the winner of the previous transition stored it, an open time ago */
    opens = (from == NGX_HTTP_BREAKER_CLOSED)
            ? 1 : (ngx_uint_t) ngx_http_breaker_load(&c->opens) + 1;

    d = ngx_http_breaker_open_time(conf, opens);

    /* an outcome's time may be the event loop's cached one, behind the
     * clock the deadline is compared with: open from now, not earlier */
    mono = ngx_edge_mono_usec();
    now = ngx_max(now, mono);
    until = (now + d) / 1000;        /* never above d: Retry-After <= d */

    nw = ngx_http_breaker_word(NGX_HTTP_BREAKER_OPEN,
                               ngx_http_breaker_w_gen(w) + 1, until);

    if (!ngx_http_breaker_cas(&c->word, &w, nw)) {
        return 0;
    }

    __atomic_store_n(&c->opens, opens, __ATOMIC_RELAXED);
    __atomic_store_n(&c->reason, reason, __ATOMIC_RELAXED);

    if (sum) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "breaker circuit \"%V\": %V -> open (%s: %ui failed, "
                      "%ui slow of %ui calls), open for %L ms (open #%ui)",
                      name, ngx_http_breaker_state_name(from),
                      ngx_http_breaker_reasons[reason], sum->failures,
                      sum->slow, sum->calls, d / 1000, opens);

    } else {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "breaker circuit \"%V\": %V -> open (%s), "
                      "open for %L ms (open #%ui)",
                      name, ngx_http_breaker_state_name(from),
                      ngx_http_breaker_reasons[reason], d / 1000, opens);
    }

    ngx_http_breaker_transition(conf, name, from, NGX_HTTP_BREAKER_OPEN);

    return 1;
}


/* HALF_OPEN -> CLOSED, the probes passed */
static ngx_uint_t
ngx_http_breaker_close(ngx_http_breaker_circuit_t *c,
    ngx_http_breaker_circuit_conf_t *conf, ngx_str_t *name, uint64_t w,
    ngx_http_breaker_counts_t *sum, ngx_log_t *log)
{
    uint64_t  nw;

    nw = ngx_http_breaker_word(NGX_HTTP_BREAKER_CLOSED,
                               ngx_http_breaker_w_gen(w) + 1, 0);

    if (!ngx_http_breaker_cas(&c->word, &w, nw)) {
        return 0;
    }

    __atomic_store_n(&c->opens, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&c->reason, NGX_HTTP_BREAKER_REASON_PROBES_PASSED,
                     __ATOMIC_RELAXED);

    ngx_log_error(NGX_LOG_WARN, log, 0,
                  "breaker circuit \"%V\": half_open -> closed "
                  "(%ui probes: %ui failed, %ui slow)",
                  name, sum->calls, sum->failures, sum->slow);

    ngx_http_breaker_transition(conf, name, NGX_HTTP_BREAKER_HALF_OPEN,
                                NGX_HTTP_BREAKER_CLOSED);

    return 1;
}


/* OPEN -> HALF_OPEN, lazily, on the first admission after the open time */
static ngx_uint_t
ngx_http_breaker_half_open(ngx_http_breaker_circuit_t *c,
    ngx_http_breaker_circuit_conf_t *conf, ngx_str_t *name, uint64_t w,
    int64_t now, ngx_log_t *log)
{
    uint64_t  nw;

    nw = ngx_http_breaker_word(NGX_HTTP_BREAKER_HALF_OPEN,
                               ngx_http_breaker_w_gen(w) + 1, now / 1000);

    if (!ngx_http_breaker_cas(&c->word, &w, nw)) {
        return 0;
    }

    ngx_log_error(NGX_LOG_WARN, log, 0,
                  "breaker circuit \"%V\": open -> half_open (%ui probes)",
                  name, conf->probes);

    ngx_http_breaker_transition(conf, name, NGX_HTTP_BREAKER_OPEN,
                                NGX_HTTP_BREAKER_HALF_OPEN);

    return 1;
}


static void
ngx_http_breaker_probe_outcome(ngx_http_breaker_circuit_t *c,
    ngx_http_breaker_circuit_conf_t *conf, ngx_str_t *name,
    ngx_http_breaker_ticket_t *t, ngx_uint_t failed, ngx_uint_t slow,
    int64_t now, ngx_log_t *log)
{
    uint64_t                   p, np, w;
    uint32_t                   gen;
    ngx_uint_t                 reason;
    ngx_http_breaker_counts_t  sum;

    gen = t->generation & NGX_HTTP_BREAKER_GEN_MASK;
    p = ngx_http_breaker_load(&c->probes);

    do {
        if (ngx_http_breaker_p_gen(p) != gen
            || ngx_http_breaker_p_done(p) >= ngx_http_breaker_p_issued(p))
        {
            return;
        }

        np = p + NGX_HTTP_BREAKER_P_DONE
             + (failed ? NGX_HTTP_BREAKER_P_FAILED : 0)
             + (slow ? NGX_HTTP_BREAKER_P_SLOW : 0);

    } while (!ngx_http_breaker_cas(&c->probes, &p, np));

    if (ngx_http_breaker_p_done(np) < conf->probes) {
        return;
    }

    /* the last probe is in: judge the half-open calls */

    sum.calls = ngx_http_breaker_p_done(np);
    sum.failures = ngx_http_breaker_p_failed(np);
    sum.slow = ngx_http_breaker_p_slow(np);

    w = ngx_http_breaker_load(&c->word);

    if (ngx_http_breaker_w_gen(w) != gen
        || ngx_http_breaker_w_state(w) != NGX_HTTP_BREAKER_HALF_OPEN)
    {
        return;
    }

    if (sum.failures * 100 >= conf->failure_rate * sum.calls) {
        reason = NGX_HTTP_BREAKER_REASON_FAILURE_RATE;

    } else if (sum.slow * 100 >= conf->slow_rate * sum.calls) {
        reason = NGX_HTTP_BREAKER_REASON_SLOW_RATE;

    } else {
        (void) ngx_http_breaker_close(c, conf, name, w, &sum, log);
        return;
    }

    (void) ngx_http_breaker_trip(c, conf, name, w, reason, &sum, now, log);
}


static void
ngx_http_breaker_transition(ngx_http_breaker_circuit_conf_t *conf,
    ngx_str_t *name, ngx_uint_t from, ngx_uint_t to)
{
    if (conf->transition) {
        conf->transition(conf, name, from, to);
    }
}


/* configuration */


void
ngx_http_breaker_circuit_conf_init(ngx_http_breaker_circuit_conf_t *conf)
{
    ngx_memzero(conf, sizeof(ngx_http_breaker_circuit_conf_t));

    conf->window = NGX_CONF_UNSET;
    conf->buckets = NGX_CONF_UNSET_UINT;
    conf->min_calls = NGX_CONF_UNSET_UINT;
    conf->failure_rate = NGX_CONF_UNSET_UINT;
    conf->slow_rate = NGX_CONF_UNSET_UINT;
    conf->slow_call = NGX_CONF_UNSET;
    conf->open = NGX_CONF_UNSET;
    conf->open_max = NGX_CONF_UNSET;
    conf->probes = NGX_CONF_UNSET_UINT;
    conf->half_open_wait = NGX_CONF_UNSET;
    conf->jitter = NGX_CONF_UNSET_UINT;
    conf->mode = NGX_CONF_UNSET_UINT;
    conf->statuses_set = 0;
}


typedef struct {
    ngx_str_t                    name;
    ngx_uint_t                   kind;       /* 0 number, 1 time, 2 rate */
    size_t                       offset;
    ngx_uint_t                   low;
    ngx_uint_t                   high;
} ngx_http_breaker_param_t;


static ngx_http_breaker_param_t  ngx_http_breaker_params[] = {
    { ngx_string("window="), 1,
      offsetof(ngx_http_breaker_circuit_conf_t, window), 1, 0 },
    { ngx_string("buckets="), 0,
      offsetof(ngx_http_breaker_circuit_conf_t, buckets), 1,
      NGX_HTTP_BREAKER_MAX_BUCKETS },
    { ngx_string("min_calls="), 0,
      offsetof(ngx_http_breaker_circuit_conf_t, min_calls), 1, 1000000 },
    { ngx_string("failure_rate="), 2,
      offsetof(ngx_http_breaker_circuit_conf_t, failure_rate), 1, 100 },
    { ngx_string("slow_rate="), 2,
      offsetof(ngx_http_breaker_circuit_conf_t, slow_rate), 1, 100 },
    { ngx_string("slow_call="), 1,
      offsetof(ngx_http_breaker_circuit_conf_t, slow_call), 1, 0 },
    { ngx_string("open="), 1,
      offsetof(ngx_http_breaker_circuit_conf_t, open), 1, 0 },
    { ngx_string("open_max="), 1,
      offsetof(ngx_http_breaker_circuit_conf_t, open_max), 1, 0 },
    { ngx_string("probes="), 0,
      offsetof(ngx_http_breaker_circuit_conf_t, probes), 1,
      NGX_HTTP_BREAKER_MAX_PROBES },
    { ngx_string("half_open_wait="), 1,
      offsetof(ngx_http_breaker_circuit_conf_t, half_open_wait), 1, 0 },
    { ngx_string("jitter="), 2,
      offsetof(ngx_http_breaker_circuit_conf_t, jitter), 0, 99 },
    { ngx_null_string, 0, 0, 0, 0 }
};


static ngx_int_t
ngx_http_breaker_parse_statuses(ngx_conf_t *cf,
    ngx_http_breaker_circuit_conf_t *conf, ngx_str_t *directive,
    ngx_str_t *arg, ngx_str_t *v)
{
    u_char     *p, *last, *comma;
    ngx_int_t   n;

    ngx_memzero(conf->statuses, sizeof(conf->statuses));
    conf->statuses_set = 1;

    p = v->data;
    last = v->data + v->len;

    while (p < last) {
        comma = ngx_strlchr(p, last, ',');
        if (comma == NULL) {
            comma = last;
        }

        n = ngx_atoi(p, comma - p);

        if (n < 100 || n > 599) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid status \"%*s\" in \"%V\" of \"%V\", "
                               "it must be between 100 and 599",
                               (size_t) (comma - p), p, arg, directive);
            return NGX_ERROR;
        }

        conf->statuses[n / 8] |= (u_char) (1 << (n % 8));

        p = comma + 1;
    }

    if (v->len == 0 || v->data[v->len - 1] == ',') {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid \"%V\" in \"%V\"", arg, directive);
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_breaker_parse_mode(ngx_conf_t *cf,
    ngx_http_breaker_circuit_conf_t *conf, ngx_str_t *directive,
    ngx_str_t *arg, ngx_str_t *v)
{
    ngx_uint_t  i;

    static struct {
        ngx_str_t   name;
        ngx_uint_t  mode;
    }  modes[] = {
        { ngx_string("on"), NGX_HTTP_BREAKER_CLOSED },
        { ngx_string("metrics_only"), NGX_HTTP_BREAKER_METRICS_ONLY },
        { ngx_string("forced_open"), NGX_HTTP_BREAKER_FORCED_OPEN },
        { ngx_string("disabled"), NGX_HTTP_BREAKER_DISABLED },
        { ngx_null_string, 0 }
    };

    for (i = 0; modes[i].name.len; i++) {
        if (modes[i].name.len == v->len
            && ngx_strncmp(modes[i].name.data, v->data, v->len) == 0)
        {
            conf->mode = modes[i].mode;
            return NGX_OK;
        }
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid \"%V\" in \"%V\", it must be \"mode=on\", "
                       "\"mode=metrics_only\", \"mode=forced_open\" or "
                       "\"mode=disabled\"", arg, directive);

    return NGX_ERROR;
}


ngx_int_t
ngx_http_breaker_circuit_conf_parse(ngx_conf_t *cf,
    ngx_http_breaker_circuit_conf_t *conf, ngx_str_t *arg)
{
    size_t                     len;
    u_char                    *p;
    ngx_int_t                  n;
    ngx_str_t                  v, *directive;
    ngx_http_breaker_param_t  *prm;

    directive = cf->args->elts;

    if (arg->len > 9 && ngx_strncmp(arg->data, "statuses=", 9) == 0) {
        v.data = arg->data + 9;
        v.len = arg->len - 9;
        return ngx_http_breaker_parse_statuses(cf, conf, directive, arg, &v);
    }

    if (arg->len > 5 && ngx_strncmp(arg->data, "mode=", 5) == 0) {
        v.data = arg->data + 5;
        v.len = arg->len - 5;
        return ngx_http_breaker_parse_mode(cf, conf, directive, arg, &v);
    }

    for (prm = ngx_http_breaker_params; prm->name.len; prm++) {
        if (arg->len < prm->name.len
            || ngx_strncmp(arg->data, prm->name.data, prm->name.len) != 0)
        {
            continue;
        }

        v.data = arg->data + prm->name.len;
        v.len = arg->len - prm->name.len;
        p = (u_char *) conf + prm->offset;

        if (prm->kind == 1) {
            n = ngx_parse_time(&v, 0);

            if (n == NGX_ERROR || v.len == 0
                || (int64_t) n * 1000 > NGX_HTTP_BREAKER_MAX_TIME
                || (ngx_uint_t) n < prm->low)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid time \"%V\" in \"%V\", it must "
                                   "be between %s and 24h", arg, directive,
                                   prm->low ? "1ms" : "0");
                return NGX_ERROR;
            }

            *(int64_t *) p = (int64_t) n * 1000;
            return NGX_OK;
        }

        len = v.len;

        if (prm->kind == 2 && len > 0 && v.data[len - 1] == '%') {
            len--;
        }

        n = ngx_atoi(v.data, len);

        if (n == NGX_ERROR || (ngx_uint_t) n < prm->low
            || (ngx_uint_t) n > prm->high)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid value \"%V\" in \"%V\", it must be "
                               "between %ui and %ui", arg, directive,
                               prm->low, prm->high);
            return NGX_ERROR;
        }

        *(ngx_uint_t *) p = (ngx_uint_t) n;
        return NGX_OK;
    }

    return NGX_DECLINED;
}


char *
ngx_http_breaker_circuit_conf_check(ngx_conf_t *cf,
    ngx_http_breaker_circuit_conf_t *conf)
{
    ngx_str_t  *directive;

    directive = cf->args->elts;

    ngx_conf_init_value(conf->window, 10 * 1000000);
    ngx_conf_init_uint_value(conf->buckets, 10);
    ngx_conf_init_uint_value(conf->min_calls, 20);
    ngx_conf_init_uint_value(conf->failure_rate, 50);
    ngx_conf_init_uint_value(conf->slow_rate, 100);
    ngx_conf_init_value(conf->slow_call, 5 * 1000000);
    ngx_conf_init_value(conf->open, 30 * 1000000);
    ngx_conf_init_uint_value(conf->probes, 3);
    ngx_conf_init_value(conf->half_open_wait, 30 * 1000000);
    ngx_conf_init_uint_value(conf->jitter, 10);
    ngx_conf_init_uint_value(conf->mode, NGX_HTTP_BREAKER_CLOSED);

    if (conf->open_max == NGX_CONF_UNSET) {
        conf->open_max = ngx_max(conf->open, (int64_t) 300 * 1000000);
    }

    if (!conf->statuses_set) {
        conf->statuses[500 / 8] |= 1 << (500 % 8);
        conf->statuses[502 / 8] |= 1 << (502 % 8);
        conf->statuses[503 / 8] |= 1 << (503 % 8);
        conf->statuses[504 / 8] |= 1 << (504 % 8);
        conf->statuses_set = 1;
    }

    if (conf->window / 1000 < (int64_t) conf->buckets) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\": buckets=%ui is more than window=%Lms "
                           "allows (a bucket is at least 1ms)",
                           directive, conf->buckets, conf->window / 1000);
        return NGX_CONF_ERROR;
    }

    if (conf->open_max < conf->open) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\": open_max=%Lms is less than open=%Lms",
                           directive, conf->open_max / 1000,
                           conf->open / 1000);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* the breaker_zone */


/*
 * A retired circuit is freed once no live process of an older
 * configuration than the one that retired it is left: the zone's
 * registry (ngx_http_breaker_registry_t, shared with the
 * breaker_shed_zone) says which configuration each process uses.
 */
typedef struct {
    ngx_queue_t                  circuits;   /* found by name */
    ngx_queue_t                  retired;    /* to free when unused */
    ngx_http_breaker_registry_t  registry;
} ngx_http_breaker_zone_sh_t;


typedef struct {
    ngx_queue_t                  queue;
    ngx_str_t                    name;
    ngx_http_breaker_circuit_t  *circuit;
    ngx_uint_t                   cycle;      /* the configuration that
                                                looked it up last, or
                                                retired it */
} ngx_http_breaker_zone_node_t;


typedef struct {
    ngx_http_breaker_zone_sh_t  *sh;
    ngx_slab_pool_t             *shpool;
    ngx_edge_log_gate_t          gate;
    ngx_uint_t                   cycle;      /* this configuration's */
} ngx_http_breaker_zone_ctx_t;


extern ngx_module_t  ngx_http_breaker_module;


static void ngx_http_breaker_zone_retire(ngx_http_breaker_zone_ctx_t *ctx,
    ngx_http_breaker_zone_node_t *node);


static ngx_int_t
ngx_http_breaker_zone_init(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_breaker_zone_ctx_t  *octx = data;

    size_t                        len;
    ngx_http_breaker_zone_ctx_t  *ctx;

    ctx = shm_zone->data;

    if (octx) {
        /* reload: the circuits are found by name again */
        ctx->sh = octx->sh;
        ctx->shpool = octx->shpool;
        return NGX_OK;
    }

    ctx->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        ctx->sh = ctx->shpool->data;
        return NGX_OK;
    }

    ctx->sh = ngx_slab_calloc(ctx->shpool, sizeof(ngx_http_breaker_zone_sh_t));
    if (ctx->sh == NULL) {
        return NGX_ERROR;
    }

    ctx->shpool->data = ctx->sh;
    ngx_queue_init(&ctx->sh->circuits);
    ngx_queue_init(&ctx->sh->retired);

    len = sizeof(" in breaker_zone \"\"") + shm_zone->shm.name.len;

    ctx->shpool->log_ctx = ngx_slab_alloc(ctx->shpool, len);
    if (ctx->shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(ctx->shpool->log_ctx, " in breaker_zone \"%V\"%Z",
                &shm_zone->shm.name);

    ctx->shpool->log_nomem = 0;

    return NGX_OK;
}


ngx_shm_zone_t *
ngx_http_breaker_zone_add(ngx_conf_t *cf, ngx_str_t *name)
{
    ngx_shm_zone_t               *zone;
    ngx_http_breaker_zone_ctx_t  *ctx;

    zone = ngx_shared_memory_add(cf, name, 0, &ngx_http_breaker_module);
    if (zone == NULL) {
        return NULL;
    }

    if (zone->data == NULL) {
        ctx = ngx_pcalloc(cf->pool, sizeof(ngx_http_breaker_zone_ctx_t));
        if (ctx == NULL) {
            return NULL;
        }

        zone->data = ctx;
        zone->init = ngx_http_breaker_zone_init;
    }

    return zone;
}


static ngx_http_breaker_zone_node_t *
ngx_http_breaker_zone_find(ngx_http_breaker_zone_ctx_t *ctx, ngx_str_t *name)
{
    ngx_queue_t                   *q;
    ngx_http_breaker_zone_node_t  *node;

    for (q = ngx_queue_head(&ctx->sh->circuits);
         q != ngx_queue_sentinel(&ctx->sh->circuits);
         q = ngx_queue_next(q))
    {
        node = ngx_queue_data(q, ngx_http_breaker_zone_node_t, queue);

        if (node->name.len == name->len
            && ngx_strncmp(node->name.data, name->data, name->len) == 0)
        {
            return node;
        }
    }

    return NULL;
}


/*
 * The circuit of that name, under the zone's mutex (rare: once per
 * circuit per cycle).  A circuit of the same name and number of buckets
 * is kept as it is, state and window (a reload); when only the bucket
 * width changed, a new generation starts (an empty window, the state
 * kept).  A different number of buckets needs a new circuit: the old one
 * is retired, not freed at once, since the workers of the previous cycle
 * may still be using it while they shut down (_zones_end() frees it once
 * they are gone).
 */
ngx_http_breaker_circuit_t *
ngx_http_breaker_zone_circuit(ngx_shm_zone_t *zone, ngx_str_t *name,
    ngx_http_breaker_circuit_conf_t *conf, ngx_log_t *log)
{
    size_t                         size;
    uint64_t                       w, nw;
    ngx_uint_t                     suppressed;
    ngx_http_breaker_circuit_t    *c;
    ngx_http_breaker_zone_ctx_t   *ctx;
    ngx_http_breaker_zone_node_t  *node;

    ctx = zone->data;

    if (ctx == NULL || ctx->sh == NULL) {
        return NULL;
    }

    ngx_shmtx_lock(&ctx->shpool->mutex);

    node = ngx_http_breaker_zone_find(ctx, name);

    if (node && node->circuit->nbuckets == conf->buckets) {
        node->cycle = ctx->cycle;
        c = node->circuit;

        if (c->width != conf->window / (int64_t) conf->buckets) {
            c->width = conf->window / (int64_t) conf->buckets;

            w = ngx_http_breaker_load(&c->word);

            do {
                nw = ngx_http_breaker_word(ngx_http_breaker_w_state(w),
                                           ngx_http_breaker_w_gen(w) + 1,
                                           ngx_http_breaker_w_msec(w));

            } while (!ngx_http_breaker_cas(&c->word, &w, nw));
        }

        ngx_shmtx_unlock(&ctx->shpool->mutex);
        return c;
    }

    if (node) {
        ngx_http_breaker_zone_retire(ctx, node);
    }

    size = sizeof(ngx_http_breaker_zone_node_t) + name->len;
    size = ngx_align(size, 16) + ngx_http_breaker_circuit_size(conf);

    node = ngx_slab_alloc_locked(ctx->shpool, size);

    if (node == NULL) {
        ngx_shmtx_unlock(&ctx->shpool->mutex);

        if (ngx_edge_log_gate_open(&ctx->gate, 60000, &suppressed)) {
            ngx_log_error(NGX_LOG_ALERT, log, 0,
                          "breaker_zone \"%V\" is full: circuit \"%V\" "
                          "is not created and its requests are admitted "
                          "(%ui more like this)",
                          &zone->shm.name, name, suppressed);
        }

        return NULL;
    }

    node->name.data = (u_char *) node + sizeof(ngx_http_breaker_zone_node_t);
    node->name.len = name->len;
    ngx_memcpy(node->name.data, name->data, name->len);

    c = (ngx_http_breaker_circuit_t *)
        ((u_char *) node
         + ngx_align(sizeof(ngx_http_breaker_zone_node_t) + name->len, 16));

    ngx_http_breaker_circuit_init(c, conf);
    node->circuit = c;
    node->cycle = ctx->cycle;

    ngx_queue_insert_tail(&ctx->sh->circuits, &node->queue);

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return c;
}


static void
ngx_http_breaker_zone_retire(ngx_http_breaker_zone_ctx_t *ctx,
    ngx_http_breaker_zone_node_t *node)
{
    ngx_queue_remove(&node->queue);

    /*
     * the processes of older configurations may still use it; and so may
     * this configuration's when it claimed the name earlier (a route
     * circuit named as a peer circuit "upstream/address" with other
     * buckets=): then only the processes of the next configuration may
     * free it
     */
    node->cycle = (node->cycle == ctx->cycle) ? ctx->cycle + 1 : ctx->cycle;
    ngx_queue_insert_tail(&ctx->sh->retired, &node->queue);
}


/* under the zone's mutex: what no process can use any more is freed */
static void
ngx_http_breaker_zone_free_unused(ngx_shm_zone_t *zone)
{
    ngx_uint_t                     kept;
    ngx_queue_t                   *q, *next;
    ngx_http_breaker_zone_ctx_t   *ctx;
    ngx_http_breaker_zone_node_t  *node;

    ctx = zone->data;
    kept = 0;

    for (q = ngx_queue_head(&ctx->sh->retired);
         q != ngx_queue_sentinel(&ctx->sh->retired);
         q = next)
    {
        next = ngx_queue_next(q);
        node = ngx_queue_data(q, ngx_http_breaker_zone_node_t, queue);

        if (ngx_http_breaker_registry_in_use(&ctx->sh->registry,
                                             node->cycle))
        {
            kept++;
            continue;
        }

        ngx_queue_remove(q);
        ngx_slab_free_locked(ctx->shpool, node);
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "breaker_zone \"%V\": %ui retired circuits kept",
                   &zone->shm.name, kept);
}


/* under the zone's mutex: what this configuration did not look up is
 * retired */
static void
ngx_http_breaker_zone_retire_unused(ngx_shm_zone_t *zone)
{
    ngx_queue_t                   *q, *next;
    ngx_http_breaker_zone_ctx_t   *ctx;
    ngx_http_breaker_zone_node_t  *node;

    ctx = zone->data;

    for (q = ngx_queue_head(&ctx->sh->circuits);
         q != ngx_queue_sentinel(&ctx->sh->circuits);
         q = next)
    {
        next = ngx_queue_next(q);
        node = ngx_queue_data(q, ngx_http_breaker_zone_node_t, queue);

        if (node->cycle != ctx->cycle) {
            ngx_http_breaker_zone_retire(ctx, node);
        }
    }
}


/* the breaker_zone zones of a cycle, one by one */
static ngx_shm_zone_t *
ngx_http_breaker_zones_next(ngx_cycle_t *cycle, ngx_list_part_t **part,
    ngx_uint_t *i)
{
    ngx_shm_zone_t               *zone;
    ngx_http_breaker_zone_ctx_t  *ctx;

    for ( ;; ) {

        if (*i >= (*part)->nelts) {
            if ((*part)->next == NULL) {
                return NULL;
            }

            *part = (*part)->next;
            *i = 0;
            continue;
        }

        zone = &((ngx_shm_zone_t *) (*part)->elts)[(*i)++];

        /* the module's stats zone has the same tag */
        if (zone->tag != &ngx_http_breaker_module
            || zone->init != ngx_http_breaker_zone_init)
        {
            continue;
        }

        ctx = zone->data;

        if (ctx && ctx->sh) {
            return zone;
        }
    }
}


void
ngx_http_breaker_zones_begin(ngx_cycle_t *cycle)
{
    ngx_uint_t                    i;
    ngx_shm_zone_t               *zone;
    ngx_list_part_t              *part;
    ngx_http_breaker_zone_ctx_t  *ctx;

    part = &cycle->shared_memory.part;
    i = 0;

    while ((zone = ngx_http_breaker_zones_next(cycle, &part, &i)) != NULL) {
        ctx = zone->data;

        /* room for the circuits this configuration may create: what the
         * processes of older configurations left */
        ngx_shmtx_lock(&ctx->shpool->mutex);
        ctx->cycle = ngx_http_breaker_registry_next(&ctx->sh->registry);
        ngx_http_breaker_zone_free_unused(zone);
        ngx_shmtx_unlock(&ctx->shpool->mutex);
    }
}


void
ngx_http_breaker_zones_end(ngx_cycle_t *cycle)
{
    ngx_uint_t                    i;
    ngx_shm_zone_t               *zone;
    ngx_list_part_t              *part;
    ngx_http_breaker_zone_ctx_t  *ctx;

    part = &cycle->shared_memory.part;
    i = 0;

    while ((zone = ngx_http_breaker_zones_next(cycle, &part, &i)) != NULL) {
        ctx = zone->data;

        ngx_shmtx_lock(&ctx->shpool->mutex);
        ngx_http_breaker_zone_retire_unused(zone);
        ngx_http_breaker_zone_free_unused(zone);
        ngx_shmtx_unlock(&ctx->shpool->mutex);
    }
}


void
ngx_http_breaker_zones_register(ngx_cycle_t *cycle)
{
    ngx_uint_t                    i;
    ngx_shm_zone_t               *zone;
    ngx_list_part_t              *part;
    ngx_http_breaker_zone_ctx_t  *ctx;

    part = &cycle->shared_memory.part;
    i = 0;

    while ((zone = ngx_http_breaker_zones_next(cycle, &part, &i)) != NULL) {
        ctx = zone->data;
        ngx_http_breaker_registry_register(&ctx->sh->registry, ctx->cycle);
    }
}


/* the registry: which configuration each process uses */


/* under the zone's mutex, in the master: the number of a new
 * configuration (never 0, never reused, even if that configuration
 * fails and the previous one stays) */
ngx_uint_t
ngx_http_breaker_registry_next(ngx_http_breaker_registry_t *reg)
{
    return ++reg->cycle;
}


/*
 * In every process at init_process: this process uses configuration
 * `cycle`.  By process slot (the first NGX_HTTP_BREAKER_REGISTRY_SLOTS);
 * pid is written last (release): a slot whose pid is not the process's
 * yet is a process that has not said which configuration it uses, and
 * blocks every free.
 */
void
ngx_http_breaker_registry_register(ngx_http_breaker_registry_t *reg,
    ngx_uint_t cycle)
{
    ngx_http_breaker_registry_proc_t  *proc;

    if (ngx_process_slot < 0
        || ngx_process_slot >= NGX_HTTP_BREAKER_REGISTRY_SLOTS)
    {
        return;
    }

    proc = &reg->procs[ngx_process_slot];

    proc->cycle = cycle;
    __atomic_store_n(&proc->pid, ngx_pid, __ATOMIC_RELEASE);
}


/*
 * Whether a live process may still use a node retired by configuration
 * `retired`: one of an older configuration, or one that has not said
 * which it uses (not registered yet, or in a slot past the registry's).
 * Only the master knows its processes (ngx_processes[]); without one
 * (master_process off: the single process may still serve requests of
 * an older configuration) every retired node is kept.
 */
ngx_uint_t
ngx_http_breaker_registry_in_use(ngx_http_breaker_registry_t *reg,
    ngx_uint_t retired)
{
    ngx_int_t   s;
    ngx_pid_t   pid;

    if (ngx_process != NGX_PROCESS_MASTER) {
        return 1;
    }

    for (s = 0; s < ngx_last_process; s++) {

        if (ngx_processes[s].pid == -1
            || ngx_processes[s].exited
            || ngx_processes[s].detached)
        {
            continue;
        }

        if (s >= NGX_HTTP_BREAKER_REGISTRY_SLOTS) {
            return 1;
        }

        pid = __atomic_load_n(&reg->procs[s].pid, __ATOMIC_ACQUIRE);

        if (pid != ngx_processes[s].pid || reg->procs[s].cycle < retired) {
            return 1;
        }
    }

    return 0;
}
