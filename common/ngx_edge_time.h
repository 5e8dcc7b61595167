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


/* wall-clock microseconds as of the event loop's last time update */
static ngx_inline int64_t
ngx_edge_wall_usec(void)
{
    ngx_time_t  *tp;

    tp = ngx_timeofday();

    return (int64_t) tp->sec * 1000000 + (int64_t) tp->msec * 1000;
}


#endif /* _NGX_EDGE_TIME_H_INCLUDED_ */
