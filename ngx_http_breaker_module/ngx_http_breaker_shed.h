/*
 * ngx_http_breaker_shed_module: load shedding with concurrency permits,
 * priority classes, a bounded queue and an adaptive limit.
 *
 * The permits of a shedder live in shared memory (a node in its
 * breaker_shed_zone), so every worker agrees on the number of requests in
 * flight.  The queue of waiting requests is per worker: a request waits in
 * the worker that accepted it, parked on its connection's write event.
 *
 *   ngx_http_breaker_shed.c           directives, zone, admission, queue,
 *                                     variables, metrics, status JSON
 *   ngx_http_breaker_shed_adaptive.c  latency histogram and the gradient
 *                                     controller of the adaptive limit
 */

#ifndef _NGX_HTTP_BREAKER_SHED_H_INCLUDED_
#define _NGX_HTTP_BREAKER_SHED_H_INCLUDED_


#include "ngx_edge_common.h"
#include "ngx_edge_stats.h"


#define NGX_HTTP_BREAKER_SHED_MAX_CLASSES  8
#define NGX_HTTP_BREAKER_SHED_NAME_MAX     64

/* latency histogram: 4 sub-buckets per power of two, microseconds */
#define NGX_HTTP_BREAKER_SHED_NBUCKETS     128

/* the adaptive controller's phases */
#define NGX_HTTP_BREAKER_SHED_MEASURE      0  /* minRTT, limit = min */
#define NGX_HTTP_BREAKER_SHED_SAMPLE       1  /* gradient windows */

/* windows in a row at the floor (gradient at its lower clamp, or the
 * limit at min_limit) after which minRTT is measured again: Envoy's 5 */
#define NGX_HTTP_BREAKER_SHED_PINNED       5


/* one adaptive controller, in shared memory */
typedef struct {
    ngx_atomic_t                 window_start;  /* usec; CAS: the closer */
    ngx_atomic_t                 samples;       /* in this window */
    ngx_atomic_t                 epoch;         /* bumped on phase change */
    ngx_atomic_t                 phase;
    ngx_atomic_t                 limit_x1000;   /* smoothed limit */
    ngx_atomic_t                 saved_x1000;   /* limit before measuring */
    ngx_atomic_t                 min_rtt;       /* usec */
    ngx_atomic_t                 sample_rtt;    /* usec, last window */
    ngx_atomic_t                 gradient_x1000;
    ngx_atomic_t                 next_measure;  /* usec */
    ngx_atomic_t                 windows;       /* closed, in all */
    ngx_atomic_t                 pinned;        /* windows at the floor */
    ngx_atomic_t                 hist[NGX_HTTP_BREAKER_SHED_NBUCKETS];
} ngx_http_breaker_shed_ctl_t;


/*
 * What the process in one slot of nginx's process table holds, so that a
 * worker started in the slot of one that died (a slot is reused only
 * once its process is reaped) gives back the permits and waiting counts
 * it left; and the requests it admitted at once, a count that the slot
 * keeps for ever (the next process in the slot adds to it: the sum over
 * the slots never goes back and counts each request once).  Only the
 * process of a slot writes it: plain loads and stores, no locked
 * instruction.  Slots from NGX_HTTP_BREAKER_SHED_SLOTS on are not
 * tracked (their admissions go to the node's own counts).
 *
 * The permits of a shedder with one class are counted in "single", not
 * in in_flight[0]: such a shedder keeps no class_in_flight (it equals
 * in_flight), and a worker that takes a dead one's slot must not take
 * back from class_in_flight what was never added to it, whatever the
 * configuration of the dead one.
 */
#define NGX_HTTP_BREAKER_SHED_SLOTS        64

typedef struct {
    uint32_t       in_flight[NGX_HTTP_BREAKER_SHED_MAX_CLASSES];
    uint32_t       queued[NGX_HTTP_BREAKER_SHED_MAX_CLASSES];
    uint32_t       single;                     /* one class: permits */
    uint32_t       unused;
    uint64_t       admitted[NGX_HTTP_BREAKER_SHED_MAX_CLASSES];
} ngx_http_breaker_shed_slot_t;


/*
 * The node's layout: a zone kept across a reload by another build of the
 * module gets new nodes rather than misread ones.  The node's size (under
 * 64 KiB), and a version for the changes that keep the size.
 */
#define NGX_HTTP_BREAKER_SHED_VERSION      2

#define NGX_HTTP_BREAKER_SHED_LAYOUT                                         \
    (0x53000000 + (NGX_HTTP_BREAKER_SHED_VERSION << 16)                      \
     + sizeof(ngx_http_breaker_shed_node_t) % 0x10000)


/* one shedder, in shared memory (next, len, name, layout stay first) */
typedef struct ngx_http_breaker_shed_node_s  ngx_http_breaker_shed_node_t;

struct ngx_http_breaker_shed_node_s {
    ngx_http_breaker_shed_node_t  *next;
    size_t                       len;
    u_char                       name[NGX_HTTP_BREAKER_SHED_NAME_MAX];
    ngx_uint_t                   layout;
    ngx_uint_t                   cycle;         /* the configuration that
                                                   looked it up last, or
                                                   retired it (the zone's
                                                   registry numbers) */

    ngx_atomic_t                 limit;         /* permits now */
    ngx_atomic_t                 in_flight;
    ngx_atomic_t                 queued;        /* waiting, all workers */
    ngx_atomic_t                 published;     /* limit in the gauge */
    ngx_atomic_t                 mode;          /* configuration stamp */
    ngx_atomic_t                 last_shed;     /* usec, monotonic */

    /* with one class, class_in_flight is not kept (see the slots);
     * admitted: of the processes in untracked slots, the rest is in the
     * slots */
    ngx_atomic_t   class_in_flight[NGX_HTTP_BREAKER_SHED_MAX_CLASSES];
    ngx_atomic_t   class_queued[NGX_HTTP_BREAKER_SHED_MAX_CLASSES];
    ngx_atomic_t   admitted[NGX_HTTP_BREAKER_SHED_MAX_CLASSES];
    ngx_atomic_t   dequeued[NGX_HTTP_BREAKER_SHED_MAX_CLASSES];
    ngx_atomic_t   shed[NGX_HTTP_BREAKER_SHED_MAX_CLASSES];

    ngx_http_breaker_shed_ctl_t  ctl;

    ngx_http_breaker_shed_slot_t  slots[NGX_HTTP_BREAKER_SHED_SLOTS];
};


typedef struct {
    ngx_int_t                    priority;
    ngx_uint_t                   share;         /* percent of the limit */
    ngx_str_t                    label;         /* the priority, printed */
} ngx_http_breaker_shed_class_t;


typedef struct ngx_http_breaker_shed_zone_s  ngx_http_breaker_shed_zone_t;


/* one shedder: configuration, and this worker's queue */
typedef struct {
    ngx_str_t                    name;
    void                        *main_conf;     /* the module's */
    ngx_http_breaker_shed_zone_t *zone;
    ngx_http_breaker_shed_node_t *node;         /* set by the zone's init */
    u_char                      *file;
    ngx_uint_t                   line;

    ngx_uint_t                   limit;         /* static, or initial */
    ngx_uint_t                   min_limit;
    ngx_uint_t                   max_limit;
    ngx_uint_t                   queue;         /* waiting, per worker */
    ngx_msec_t                   queue_timeout;
    ngx_msec_t                   codel_target;  /* 0: no CoDel */
    ngx_msec_t                   codel_interval;
    ngx_msec_t                   poll;
    ngx_uint_t                   probability;   /* per 10000 */

    /* adaptive */
    unsigned                     adaptive:1;
    ngx_msec_t                   window;
    ngx_uint_t                   window_samples;
    ngx_uint_t                   percentile;
    ngx_uint_t                   rtt_buffer;    /* percent */
    ngx_msec_t                   min_rtt_interval;
    ngx_uint_t                   min_rtt_samples;
    ngx_uint_t                   jitter;        /* percent */
    ngx_uint_t                   smoothing;     /* percent */
    ngx_uint_t                   headroom;      /* 0: sqrt(limit) */

    ngx_uint_t                   nclasses;      /* highest first */
    ngx_http_breaker_shed_class_t  classes[NGX_HTTP_BREAKER_SHED_MAX_CLASSES];

    /* this worker */
    ngx_queue_t          waiting[NGX_HTTP_BREAKER_SHED_MAX_CLASSES];
    ngx_uint_t                   nwaiting;
    ngx_msec_t                   good;          /* CoDel: queue last good */
    ngx_event_t                  poll_event;
    ngx_http_breaker_shed_slot_t *slot;         /* this process's in the
                                                   node, or NULL */

    /* metrics */
    ngx_edge_stats_id_t  st_requests[NGX_HTTP_BREAKER_SHED_MAX_CLASSES][3];
    ngx_edge_stats_id_t          st_in_flight;
    ngx_edge_stats_id_t          st_queue;
    ngx_edge_stats_id_t          st_limit;
    ngx_edge_stats_id_t          st_wait;

    /* the hot series' values in this process's slot (resolved on the
     * first grant of the process: ngx_worker + 1 in refs_worker) */
    uint64_t            *ref_admitted[NGX_HTTP_BREAKER_SHED_MAX_CLASSES];
    uint64_t                    *ref_in_flight;
    ngx_uint_t                   refs_worker;

    ngx_uint_t                   index;         /* in smcf->shedders */
} ngx_http_breaker_shed_shedder_t;


NGX_EDGE_API extern ngx_module_t  ngx_http_breaker_shed_module;

/* 1 if the configuration has a breaker_shedder */
NGX_EDGE_API ngx_uint_t ngx_http_breaker_shed_configured(ngx_conf_t *cf);

/*
 * The PRECONTENT handler of a configuration with shedders and no route
 * circuit (ngx_http_breaker_init() registers it): NGX_DECLINED when the
 * request holds a permit (or its location has no shedder, or it is a
 * subrequest that its main request's permit covers); NGX_AGAIN while it
 * waits in the queue; NGX_DONE or a status when it is shed.
 */
NGX_EDGE_API ngx_int_t ngx_http_breaker_shed_handler(ngx_http_request_t *r);

/* the one handler of both layers, when the configuration has route
 * circuits and shedders: the shedder's part, then the route's */
NGX_EDGE_API ngx_int_t ngx_http_breaker_shed_route_handler(
    ngx_http_request_t *r);


/* ngx_http_breaker_shed_adaptive.c */

/* the controller of a new or reconfigured shedder: measuring minRTT */
void ngx_http_breaker_shed_ctl_reset(ngx_http_breaker_shed_shedder_t *sd);

/* a request admitted under epoch ended after usec: one sample; closes the
 * window when it is due (one worker wins the CAS on the window stamp);
 * returns 1 when the limit changed */
ngx_uint_t ngx_http_breaker_shed_ctl_sample(
    ngx_http_breaker_shed_shedder_t *sd, ngx_atomic_uint_t epoch,
    uint64_t usec);

/* the permits the controller allows now */
ngx_uint_t ngx_http_breaker_shed_ctl_limit(
    ngx_http_breaker_shed_shedder_t *sd);

/* the histogram's bucket of a value, and a bucket's middle value */
ngx_uint_t ngx_http_breaker_shed_bucket(uint64_t usec);
uint64_t ngx_http_breaker_shed_bucket_value(ngx_uint_t b);


#endif /* _NGX_HTTP_BREAKER_SHED_H_INCLUDED_ */
