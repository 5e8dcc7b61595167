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
 *   run time            ngx_edge_stats_add(), _observe(), _lookup()
 */

#ifndef _NGX_EDGE_STATS_H_INCLUDED_
#define _NGX_EDGE_STATS_H_INCLUDED_


#include "ngx_edge_common.h"


typedef enum {
    NGX_EDGE_STATS_COUNTER = 0,
    NGX_EDGE_STATS_GAUGE,              /* summed over workers (in-flight) */
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

    /* optional, zero by default */
    ngx_uint_t                   flags;     /* NGX_EDGE_STATS_* below */
    ngx_uint_t                   max_series; /* run-time series, see lookup */
} ngx_edge_stats_family_t;


/* the family's series are created at run time by ngx_edge_stats_lookup() */
#define NGX_EDGE_STATS_DYNAMIC   0x01
/* kept and counted, but not rendered (e.g. a label's set of values) */
#define NGX_EDGE_STATS_HIDDEN    0x02


/* a series handle: valid in every worker, resolved at configuration time */
typedef ngx_int_t  ngx_edge_stats_id_t;

#define NGX_EDGE_STATS_NONE  (-1)


NGX_EDGE_API ngx_edge_stats_t *ngx_edge_stats_create(ngx_conf_t *cf,
    const char *owner, void *tag);

/* returns the family index, or NGX_ERROR (logged to cf); the same family
 * registered again (same name and definition) returns the same index, the
 * same name with another definition is an error */
NGX_EDGE_API ngx_int_t ngx_edge_stats_add_family(ngx_conf_t *cf,
    ngx_edge_stats_t *st, ngx_edge_stats_family_t *family);

/* label values in the order of the family's label names; the same family
 * and values twice return the same id */
NGX_EDGE_API ngx_edge_stats_id_t ngx_edge_stats_add_series(ngx_conf_t *cf,
    ngx_edge_stats_t *st, ngx_int_t family, ngx_str_t *values);

/* counters and summed gauges */
NGX_EDGE_API void ngx_edge_stats_add(ngx_edge_stats_t *st,
    ngx_edge_stats_id_t id, int64_t delta);

/* summed gauges whose writers the caller serializes (one writer at a
 * time, under a lock of its own): the sum over the slots becomes value.
 * An add to the same series from elsewhere at the same moment may be
 * lost: use it only where every write goes through it. */
NGX_EDGE_API void ngx_edge_stats_set(ngx_edge_stats_t *st,
    ngx_edge_stats_id_t id, int64_t value);

/* histograms: value in the family's base units */
NGX_EDGE_API void ngx_edge_stats_observe(ngx_edge_stats_t *st,
    ngx_edge_stats_id_t id, uint64_t value);


/*
 * Hot-path handles of a static series (registered at configuration): the
 * series' values in this process's slot, resolved once per process, so
 * that an update is one atomic add with no lookup.  A handle is valid in
 * the process that resolved it (a forked worker has its slot: resolve
 * in the worker, e.g. on its first update, keyed on ngx_worker) for the
 * life of the configuration.  A handle of nothing (no zone yet, an id
 * NGX_EDGE_STATS_NONE, a run-time series) points to a sink of this
 * process's, where updates count for nothing: an update takes no test.
 * A handle must be resolved before it is used (a zeroed one is not).
 */
typedef struct {
    uint64_t                    *values;      /* buckets, +Inf, sum */
    uint64_t                    *bounds;
    u_char                      *start;       /* first bucket by bit */
    ngx_uint_t                   nbounds;
} ngx_edge_stats_hist_ref_t;

NGX_EDGE_API uint64_t *ngx_edge_stats_ref(ngx_edge_stats_t *st,
    ngx_edge_stats_id_t id);
NGX_EDGE_API void ngx_edge_stats_hist_ref(ngx_edge_stats_t *st,
    ngx_edge_stats_id_t id, ngx_edge_stats_hist_ref_t *h);


static ngx_inline void
ngx_edge_stats_ref_add(uint64_t *ref, int64_t delta)
{
    __atomic_fetch_add(ref, (uint64_t) delta, __ATOMIC_RELAXED);
}


static ngx_inline void
ngx_edge_stats_ref_observe(ngx_edge_stats_hist_ref_t *h, uint64_t value)
{
    ngx_uint_t  i;

    i = 0;

    if (value > h->bounds[0]) {
        /* value >= 1: start past the bounds below its highest bit */
        for (i = h->start[63 - __builtin_clzll(value)];
             i < h->nbounds && value > h->bounds[i];
             i++)
        { /* void */ }
    }

    __atomic_fetch_add(&h->values[i], 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&h->values[h->nbounds + 1], value, __ATOMIC_RELAXED);
}


/*
 * Run-time series (families with NGX_EDGE_STATS_DYNAMIC, or max_series > 0).
 *
 * A family with max_series > 0 has a budget of that many series of its
 * own; other dynamic families share the room given by _reserve().  The
 * lookup takes no lock when the series exists; the first insert takes the
 * zone's mutex.  When the family's budget or the zone is full, the lookup
 * returns the family's overflow series (every label "__overflow__"),
 * counts the request in the family's dropped counter and sets *overflow
 * to 1.
 *
 * Label values are stored as valid UTF-8 (each ill-formed subpart replaced
 * by U+FFFD, see ngx_edge_utf8.h) of at most NGX_EDGE_STATS_VALUE_MAX
 * bytes, cut on a character boundary.
 *
 * Idle series age out (ngx_edge_stats_set_idle()): a run-time series that
 * no lookup has found for the idle time is freed when its family needs
 * room, and its slot is reused once NGX_EDGE_STATS_GRACE has passed since
 * (so a worker that looked it up just before it was freed has long
 * written its value).  A gauge is never aged out.
 */

#define NGX_EDGE_STATS_VALUE_MAX  128

/* a freed series' slot is reused no sooner than this, milliseconds */
#define NGX_EDGE_STATS_GRACE      1000

NGX_EDGE_API ngx_int_t ngx_edge_stats_reserve(ngx_conf_t *cf,
    ngx_edge_stats_t *st, ngx_uint_t nseries, ngx_uint_t nvalues);

/* run-time series not looked up for msec are freed when room is needed;
 * 0 (the default): never */
NGX_EDGE_API void ngx_edge_stats_set_idle(ngx_edge_stats_t *st,
    ngx_msec_t msec);

NGX_EDGE_API ngx_edge_stats_id_t ngx_edge_stats_lookup(ngx_edge_stats_t *st,
    ngx_int_t family, ngx_str_t *values, ngx_uint_t *overflow);

/*
 * The same lookup in two steps, for a caller that looks up several
 * families with the same values: each value is normalized and hashed
 * once (_value(): buf has NGX_EDGE_STATS_VALUE_MAX bytes and may receive
 * the stored form; *v is set to it; with buf NULL, for values known to be
 * valid and short, an ill-formed value is cut before its first bad byte)
 * and _lookup_hashed() takes the values and their hashes in the family's
 * label order.
 */
NGX_EDGE_API uint32_t ngx_edge_stats_value(ngx_str_t *v, u_char *buf);

NGX_EDGE_API ngx_edge_stats_id_t ngx_edge_stats_lookup_hashed(
    ngx_edge_stats_t *st, ngx_int_t family, ngx_str_t *values,
    uint32_t *hashes, ngx_uint_t *overflow);

/*
 * For a caller that remembers series between requests (a per-worker cache
 * of ids): a series' generation now, and whether the series is still the
 * one of that generation (then it is also marked used, as a lookup would).
 */
NGX_EDGE_API uint32_t ngx_edge_stats_generation(ngx_edge_stats_t *st,
    ngx_edge_stats_id_t id);
NGX_EDGE_API ngx_uint_t ngx_edge_stats_current(ngx_edge_stats_t *st,
    ngx_edge_stats_id_t id, uint32_t gen);

/* the number of values one series of the family takes (1, or nbounds + 2
 * for a histogram); for sizing a reserve */
NGX_EDGE_API ngx_uint_t ngx_edge_stats_width(ngx_edge_stats_family_t *family);


/*
 * The zone as the metrics module reads it.  Everything below is in shared
 * memory; pointers are absolute (every process maps the zone at the same
 * address).  Series are appended and published by a release store of
 * nseries; values are slot-major: slot s of the value at offset o is
 * values[s * stride + o], each slot starting on its own cache line.
 */

#define NGX_EDGE_STATS_MAGIC    0x45535453      /* "ESTS" */
#define NGX_EDGE_STATS_LAYOUT   2
#define NGX_EDGE_STATS_PREFIX   "edge_stats_"
#define NGX_EDGE_STATS_MAX_SLOTS  64
#define NGX_EDGE_STATS_MAX_LABELS  16


typedef struct {
    ngx_str_t                    name;
    ngx_str_t                    help;
    ngx_uint_t                   type;
    ngx_uint_t                   flags;
    ngx_uint_t                   nlabels;
    ngx_str_t                   *labels;
    ngx_uint_t                   nbounds;
    uint64_t                    *bounds;
    uint64_t                     scale;
    ngx_uint_t                   width;
    ngx_uint_t                   max_series;
    ngx_uint_t                   nseries;      /* run-time, live; locked */
    ngx_uint_t                   slots;        /* run-time, allocated */
    uint32_t                     free;         /* oldest freed series + 1 */
    uint32_t                     free_last;    /* newest freed series + 1 */
    ngx_msec_t                   scanned;      /* last idle scan */
    ngx_int_t                    overflow;     /* series id, or NONE */
    ngx_int_t                    dropped;      /* value offset, or -1 */
} ngx_edge_stats_shfamily_t;


/*
 * A run-time series may be freed and its slot reused: gen is even while
 * the series is live and odd once freed; a reader that read the labels
 * or values checks that gen did not change meanwhile.
 */
typedef struct {
    uint32_t                     family;
    uint32_t                     hash;
    uint32_t                     off;          /* first value */
    uint32_t                     overflow;
    ngx_str_t                   *values;       /* family's nlabels */
    uint32_t                     gen;
    uint32_t                     last;         /* ngx_current_msec, used */
    uint32_t                     next;         /* free list: series + 1 */
    uint32_t                     dynamic;      /* run-time: its serial */
} ngx_edge_stats_series_t;


typedef struct {
    uint32_t                     magic;
    uint32_t                     layout;
    uint32_t                     hash;         /* of the whole catalog */
    uint32_t                     nslots;
    time_t                       start_time;

    ngx_uint_t                   nfamilies;
    ngx_edge_stats_shfamily_t   *families;

    ngx_uint_t                   nstatic;
    ngx_uint_t                   capacity;     /* series, in all */
    ngx_uint_t                   nseries;      /* published */
    ngx_edge_stats_series_t     *series;

    ngx_uint_t                   nbuckets;     /* power of two */
    uint32_t                    *buckets;      /* series index + 1 */
    ngx_uint_t                   tombs;        /* freed buckets */
    uint32_t                     serial;       /* of the last run-time one */
    ngx_msec_t                   idle;         /* 0: series never age */
    u_char                      *start;        /* the zone's bounds */
    u_char                      *end;

    ngx_uint_t                   nvalues;      /* per slot, in all */
    ngx_uint_t                   used;         /* per slot, allocated */
    ngx_uint_t                   stride;       /* per slot, with padding */
    uint64_t                    *values;
} ngx_edge_stats_sh_t;


/* the header of a zone named edge_stats_*, or NULL if it is not one or
 * is not initialized (yet) */
NGX_EDGE_API ngx_edge_stats_sh_t *ngx_edge_stats_zone(ngx_shm_zone_t *zone);

/* a series' published count (acquire) */
NGX_EDGE_API ngx_uint_t ngx_edge_stats_nseries(ngx_edge_stats_sh_t *sh);

/* a series' generation (acquire): odd when freed; read it before and
 * after reading a series, and drop what was read if it changed */
NGX_EDGE_API uint32_t ngx_edge_stats_gen(ngx_edge_stats_series_t *s);

/* the serial of the newest run-time series: a scrape shows those up to
 * the serial it read at its start (wrapping: compare as int32_t) */
NGX_EDGE_API uint32_t ngx_edge_stats_serial(ngx_edge_stats_sh_t *sh);

/* the live run-time series of a family, read without the lock */
NGX_EDGE_API ngx_uint_t ngx_edge_stats_family_series(
    ngx_edge_stats_shfamily_t *f);

/* sums value k of series s over the slots */
NGX_EDGE_API int64_t ngx_edge_stats_read(ngx_edge_stats_sh_t *sh,
    ngx_edge_stats_series_t *s, ngx_uint_t k);


#endif /* _NGX_EDGE_STATS_H_INCLUDED_ */
