/*
 * Clocks and numeric bounds shared by the edge modules.
 *
 * Two clocks, chosen by who must agree on the time:
 *   - monotonic, for what a node keeps for itself (local buckets, deny and
 *     ban caches, expiry, round-trip times, backoff): it never steps back
 *     when NTP or a VM resume moves the wall clock;
 *   - the wall clock, only where several nodes must agree (the GCRA
 *     timestamps sent to Redis with clock=nginx, or a timestamp shown to
 *     a human).
 * Both are in microseconds as int64_t.
 *
 * Every value that enters GCRA arithmetic (in C and in the Redis Lua
 * script, where numbers are doubles) is bounded so that each product and
 * sum stays below 2^53: exact in a double, no signed overflow in C.
 */

#ifndef _NGX_EDGE_TIME_H_INCLUDED_
#define _NGX_EDGE_TIME_H_INCLUDED_


#include "ngx_edge_common.h"

#include <time.h>


/* the largest integer a double holds exactly, kept with a margin of 2^3
 * so that a sum of two bounded terms is still exact */
#define NGX_EDGE_EXACT_MAX   ((int64_t) 1 << 50)


/* monotonic microseconds, read now (not the cached event-loop time) */
static ngx_inline int64_t
ngx_edge_mono_usec(void)
{
    struct timespec  ts;

    (void) clock_gettime(CLOCK_MONOTONIC, &ts);

    return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}


/*
 * Monotonic microseconds as of the event loop's last time update, at
 * millisecond resolution: free to read, for a hot path that needs no
 * more.  Where nginx has clock_gettime(CLOCK_MONOTONIC) (Linux),
 * ngx_current_msec is that clock: the same as ngx_edge_mono_usec(), behind
 * it by the current turn of the event loop.  The clock is read instead
 * with timer_resolution (the cached time is then updated only by the
 * timer, up to that much behind), and where ngx_msec_t has 32 bits (it
 * wraps every 49.7 days of uptime, apart from the clock).  A deadline
 * compared with ngx_edge_mono_usec() is better computed from that.
 */
NGX_EDGE_API int64_t ngx_edge_mono_usec_read(void);

/* 1 when the cached time may stand for the clock (above): set for the
 * cycle by ngx_edge_time_init(), which a module that reads
 * ngx_edge_mono_usec_cached() calls at init_module (in the master before
 * the workers are forked, and again on each reload); 0 until then */
NGX_EDGE_API extern ngx_uint_t  ngx_edge_time_cached_ok;

NGX_EDGE_API void ngx_edge_time_init(ngx_cycle_t *cycle);

static ngx_inline int64_t
ngx_edge_mono_usec_cached(void)
{
    if (ngx_edge_time_cached_ok) {
        return (int64_t) ngx_current_msec * 1000;
    }

    /* out of line: the caller's frame needs no room for a timespec */
    return ngx_edge_mono_usec_read();
}


/* wall-clock microseconds as of the event loop's last time update */
static ngx_inline int64_t
ngx_edge_wall_usec(void)
{
    ngx_time_t  *tp;

    tp = ngx_timeofday();

    return (int64_t) tp->sec * 1000000 + (int64_t) tp->msec * 1000;
}


/*
 * A gate for failure lines that would otherwise be written once per
 * request: one line per interval, which then says how many it stood for.
 * The gate may live in a worker's memory or, under the zone's lock, in
 * shared memory (one line per interval for the whole node).
 */
typedef struct {
    ngx_msec_t                   next;
    ngx_uint_t                   suppressed;
} ngx_edge_log_gate_t;


/* 1: write the line now (*suppressed: how many were held back since the
 * last one); 0: hold it back */
static ngx_inline ngx_uint_t
ngx_edge_log_gate_open(ngx_edge_log_gate_t *gate, ngx_msec_t interval,
    ngx_uint_t *suppressed)
{
    if (gate->next != 0
        && (ngx_msec_int_t) (ngx_current_msec - gate->next) < 0)
    {
        gate->suppressed++;
        return 0;
    }

    *suppressed = gate->suppressed;
    gate->suppressed = 0;
    gate->next = ngx_current_msec + interval;

    if (gate->next == 0) {
        gate->next = 1;
    }

    return 1;
}


/*
 * A duration d (any unit) moved by a uniform random amount within
 * +-percent of it, for spreading a fleet's timers.  62 bits of randomness:
 * ngx_random() alone gives 31, too few for a spread of more than about
 * 2^31 units (36 minutes in microseconds).
 */
static ngx_inline int64_t
ngx_edge_jitter(int64_t d, ngx_uint_t percent)
{
    int64_t   spread;
    uint64_t  r;

    spread = d / 100 * (int64_t) percent + d % 100 * (int64_t) percent / 100;

    if (spread <= 0) {
        return d;
    }

    r = ((uint64_t) ngx_random() << 31) ^ (uint64_t) ngx_random();

    return d + (int64_t) (r % (uint64_t) (2 * spread + 1)) - spread;
}


#endif /* _NGX_EDGE_TIME_H_INCLUDED_ */
