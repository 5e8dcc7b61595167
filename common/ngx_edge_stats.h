/*
 * Shared-memory counters, gauges and histograms, and the registry the
 * metrics module reads.
 *
 * Every module that exports series owns one stats zone, named
 * "edge_stats_<owner>" (e.g. edge_stats_ratelimit).  The zone describes
 * itself: a catalog of families (name, help, type, label names, histogram
 * bounds) and series (label values) followed by the values.  The metrics
 * module renders every zone of that name pattern it finds in the cycle's
 * shared memory list, so modules in different .so files meet only through
 * shared memory, never through each other's symbols.
 *
 * Values are kept per worker, in cache-line-aligned slots, and updated
 * with relaxed atomic adds; a scrape sums the slots.  Nothing on the
 * update path takes a lock.
 *
 * Lifecycle:
 *   configuration time  ngx_edge_stats_create(), _add_family(), _add_series()
 *                       (the zone's size follows from what was registered)
 *   zone init           catalog written, or values adopted on reload when
 *                       the catalog is unchanged
 *   run time            ngx_edge_stats_add(), _set(), _observe()
 */

#ifndef _NGX_EDGE_STATS_H_INCLUDED_
#define _NGX_EDGE_STATS_H_INCLUDED_


#include "ngx_edge_common.h"


typedef enum {
    NGX_EDGE_STATS_COUNTER = 0,
    NGX_EDGE_STATS_GAUGE,              /* summed over workers (in-flight) */
    NGX_EDGE_STATS_GAUGE_SET,          /* one value, last write wins (state) */
    NGX_EDGE_STATS_HISTOGRAM
} ngx_edge_stats_type_e;


typedef struct ngx_edge_stats_s  ngx_edge_stats_t;


typedef struct {
    const char                  *name;      /* "ratelimit_decisions_total" */
    const char                  *help;
    ngx_edge_stats_type_e        type;
    const char                 **labels;    /* NULL-terminated, or NULL */

    /* histograms: upper bounds in integer base units, ascending, and the
     * divisor that turns base units into the exposed unit (1000000 for
     * microseconds exposed as seconds, 1 for bytes) */
    const uint64_t              *bounds;
    ngx_uint_t                   nbounds;
    uint64_t                     scale;
} ngx_edge_stats_family_t;


/* a series handle: valid in every worker, resolved at configuration time */
typedef ngx_int_t  ngx_edge_stats_id_t;

#define NGX_EDGE_STATS_NONE  (-1)


NGX_EDGE_API ngx_edge_stats_t *ngx_edge_stats_create(ngx_conf_t *cf,
    const char *owner, void *tag);

/* returns the family index, or NGX_ERROR (logged to cf) */
NGX_EDGE_API ngx_int_t ngx_edge_stats_add_family(ngx_conf_t *cf,
    ngx_edge_stats_t *st, ngx_edge_stats_family_t *family);

/* label values in the order of the family's label names; the same family
 * and values twice return the same id */
NGX_EDGE_API ngx_edge_stats_id_t ngx_edge_stats_add_series(ngx_conf_t *cf,
    ngx_edge_stats_t *st, ngx_int_t family, ngx_str_t *values);

/* counters and summed gauges */
NGX_EDGE_API void ngx_edge_stats_add(ngx_edge_stats_t *st,
    ngx_edge_stats_id_t id, int64_t delta);

/* NGX_EDGE_STATS_GAUGE_SET */
NGX_EDGE_API void ngx_edge_stats_set(ngx_edge_stats_t *st,
    ngx_edge_stats_id_t id, int64_t value);

/* histograms: value in the family's base units */
NGX_EDGE_API void ngx_edge_stats_observe(ngx_edge_stats_t *st,
    ngx_edge_stats_id_t id, uint64_t value);


#endif /* _NGX_EDGE_STATS_H_INCLUDED_ */
