/*
 * ngx_http_breaker_module: one circuit's state machine (resilience4j's
 * semantics), on a struct in shared memory.  Used by both layers: the
 * route circuits (breaker NAME in a location) and the peer circuits
 * (breaker_peers in an upstream{} block, one circuit per peer).
 *
 * CONTRACT between the route layer and the peer layer (two people build
 * them at once): keep these declarations; add, don't rename.  The
 * implementation is ngx_http_breaker_circuit.c.
 *
 * Time is monotonic microseconds (ngx_edge_mono_usec()).  Nothing here
 * takes a lock: the state word is changed by compare-and-swap, window
 * buckets by atomic adds.
 */

#ifndef _NGX_HTTP_BREAKER_CIRCUIT_H_INCLUDED_
#define _NGX_HTTP_BREAKER_CIRCUIT_H_INCLUDED_


#include "ngx_edge_common.h"


typedef enum {
    NGX_HTTP_BREAKER_CLOSED = 0,
    NGX_HTTP_BREAKER_OPEN,
    NGX_HTTP_BREAKER_HALF_OPEN,
    NGX_HTTP_BREAKER_FORCED_OPEN,
    NGX_HTTP_BREAKER_FORCED_CLOSED,
    NGX_HTTP_BREAKER_DISABLED,
    NGX_HTTP_BREAKER_METRICS_ONLY
} ngx_http_breaker_state_e;


typedef enum {
    NGX_HTTP_BREAKER_SUCCESS = 0,
    NGX_HTTP_BREAKER_FAILURE,          /* a status of the statuses= list */
    NGX_HTTP_BREAKER_CONNECT_ERROR,    /* counted as a failure, apart */
    NGX_HTTP_BREAKER_TIMEOUT,          /* counted as a failure, apart */
    NGX_HTTP_BREAKER_IGNORED           /* client abort, not upstream's */
} ngx_http_breaker_outcome_e;


typedef struct ngx_http_breaker_circuit_conf_s  ngx_http_breaker_circuit_conf_t;

/* called by the worker that won a transition (once per transition), for
 * metrics; may be NULL */
typedef void (*ngx_http_breaker_transition_pt)(
    ngx_http_breaker_circuit_conf_t *conf, ngx_str_t *name,
    ngx_http_breaker_state_e from, ngx_http_breaker_state_e to);

/* the parameters of a circuit (configuration, process memory) */
struct ngx_http_breaker_circuit_conf_s {
    int64_t                      window;          /* usec */
    ngx_uint_t                   buckets;
    ngx_uint_t                   min_calls;
    ngx_uint_t                   failure_rate;    /* percent, 1..100 */
    ngx_uint_t                   slow_rate;       /* percent, 1..100 */
    int64_t                      slow_call;       /* usec */
    int64_t                      open;            /* usec, first trip */
    int64_t                      open_max;        /* usec, back-off cap */
    ngx_uint_t                   probes;          /* HALF_OPEN permits */
    int64_t                      half_open_wait;  /* usec */
    ngx_uint_t                   jitter;          /* percent of open time */
    ngx_uint_t                   mode;            /* CLOSED (automatic),
                                                     FORCED_OPEN, DISABLED,
                                                     METRICS_ONLY */
    u_char                       statuses[600 / 8]; /* bitmap, 100..599 */

    /* added by the circuit helper (not in the first contract) */
    ngx_uint_t                   statuses_set;    /* statuses= was given */
    ngx_http_breaker_transition_pt  transition;   /* NULL: none */
    void                        *data;            /* the caller's */
};


/* a circuit's state in shared memory; the layers use the functions below */
typedef struct ngx_http_breaker_circuit_s  ngx_http_breaker_circuit_t;

/* what admit() hands to record(): the generation the request was admitted
 * under (outcomes of an older generation are ignored) and whether it holds
 * a half-open probe permit */
typedef struct {
    uint32_t                     generation;
    unsigned                     probe:1;
    unsigned                     admitted:1;
} ngx_http_breaker_ticket_t;


/* the bytes a circuit takes in the slab pool, for a conf */
size_t ngx_http_breaker_circuit_size(ngx_http_breaker_circuit_conf_t *conf);

/* initialises a circuit in zeroed shared memory (CLOSED, generation 1) */
void ngx_http_breaker_circuit_init(ngx_http_breaker_circuit_t *c,
    ngx_http_breaker_circuit_conf_t *conf);

/*
 * Admission.  NGX_OK: admitted (t filled); NGX_DECLINED: refused, the
 * circuit is open (*retry_after: usec until it may half-open; 0 when
 * refused because the probes are taken).  OPEN -> HALF_OPEN happens here,
 * lazily, by CAS, on the first request after the open time.  The first
 * transition into a state logs one line at NGX_LOG_WARN (name, from, to,
 * reason); losers of the CAS log nothing.
 */
ngx_int_t ngx_http_breaker_circuit_admit(ngx_http_breaker_circuit_t *c,
    ngx_http_breaker_circuit_conf_t *conf, ngx_str_t *name, int64_t now,
    ngx_http_breaker_ticket_t *t, int64_t *retry_after, ngx_log_t *log);


/*
 * Added: a bucket of a circuit's window, in shared memory (here for
 * ngx_http_breaker_circuit_record_quiet() below, which the layers call
 * inline: the only code outside ngx_http_breaker_circuit.c that adds to
 * one).
 */
typedef struct {
    uint64_t                     tag;        /* gen << 40 | epoch */
    uint64_t                     calls;
    uint64_t                     failures;
    uint64_t                     slow;
} ngx_http_breaker_bucket_t;

/*
 * Added: what a process remembers of the last judgement of a circuit that
 * found its window quiet (min_calls reached, both rates below their
 * thresholds): the caller's, one per circuit, in process memory, zeroed
 * at first (a reload may change the thresholds while the circuit is kept:
 * each process judges by its own).  Until the epoch ends or the state
 * word changes, a fast success can only lower both rates and no bucket
 * leaves the window: it is only counted.
 */
typedef struct {
    uint64_t                    *word;       /* the circuit's state word */
    uint64_t                     judged;     /* its value then */
    uint64_t                     tag;        /* gen << 40 | epoch */
    int64_t                      from;       /* the epoch, usec (until 0:
                                                nothing judged yet) */
    int64_t                      until;
    ngx_http_breaker_bucket_t   *bucket;     /* the epoch's */
} ngx_http_breaker_quiet_t;

/*
 * Added: a circuit in shared memory, here for the inline admission and
 * record below (the layers read it through these functions only; the
 * layout is explained in ngx_http_breaker_circuit.c).
 */
#define NGX_HTTP_BREAKER_GEN_BITS     21
#define NGX_HTTP_BREAKER_GEN_MASK     ((1U << NGX_HTTP_BREAKER_GEN_BITS) - 1)

#define ngx_http_breaker_w_state(w)   ((ngx_uint_t) ((w) & 7))
#define ngx_http_breaker_w_gen(w)                                            \
    ((uint32_t) (((w) >> 3) & NGX_HTTP_BREAKER_GEN_MASK))

/* the sum of a window's buckets but the two newest (a seqlock: seq is odd
 * while a worker writes it) */
typedef struct {
    uint64_t                     seq;
    uint64_t                     tag;        /* gen << 40 | epoch */
    uint64_t                     calls;
    uint64_t                     failures;
    uint64_t                     slow;
} ngx_http_breaker_summary_t;

struct ngx_http_breaker_circuit_s {
    uint64_t                     word;
    uint64_t                     probes;
    uint64_t                     opens;      /* consecutive, for back-off */
    uint64_t                     reason;     /* of the last trip */
    int64_t                      width;      /* usec per bucket */
    uint64_t                     nbuckets;
    ngx_http_breaker_summary_t   summary;
    ngx_http_breaker_bucket_t    buckets[];
};


/* added: admission of a circuit CLOSED in automatic mode, the common case,
 * without the clock, inline: 1 and t filled if it is; 0 if not (the
 * caller reads the clock and calls _admit(), which decides) */
static ngx_inline ngx_uint_t
ngx_http_breaker_circuit_admit_closed(ngx_http_breaker_circuit_t *c,
    ngx_http_breaker_circuit_conf_t *conf, ngx_http_breaker_ticket_t *t)
{
    uint64_t  w;

    if (conf->mode != NGX_HTTP_BREAKER_CLOSED) {
        return 0;
    }

    w = __atomic_load_n(&c->word, __ATOMIC_ACQUIRE);

    if (ngx_http_breaker_w_state(w) != NGX_HTTP_BREAKER_CLOSED) {
        return 0;
    }

    t->generation = ngx_http_breaker_w_gen(w);
    t->probe = 0;
    t->admitted = 1;

    return 1;
}


/* an admitted request's outcome; latency in usec (slow when >= slow_call).
 * Changed: quiet is the caller's record for this circuit (NULL: judge
 * every outcome), see ngx_http_breaker_quiet_t */
void ngx_http_breaker_circuit_record(ngx_http_breaker_circuit_t *c,
    ngx_http_breaker_circuit_conf_t *conf, ngx_str_t *name,
    ngx_http_breaker_ticket_t *t, ngx_http_breaker_outcome_e outcome,
    int64_t latency, int64_t now, ngx_http_breaker_quiet_t *quiet,
    ngx_log_t *log);

/*
 * Added: the common outcome on the caller's path, inline: a success
 * faster than slow_call, of a request admitted (not as a probe) under the
 * state word that this process judged quiet, in that epoch, is added to
 * the epoch's bucket and nothing else (what _circuit_record() would do).
 * 1: recorded; 0: call _circuit_record().
 */
static ngx_inline ngx_uint_t
ngx_http_breaker_circuit_record_quiet(ngx_http_breaker_quiet_t *q,
    ngx_http_breaker_circuit_conf_t *conf, ngx_http_breaker_ticket_t *t,
    int64_t latency, int64_t now)
{
    uint64_t  w;

    if (now >= q->until || now < q->from || latency >= conf->slow_call
        || !t->admitted || t->probe
        || t->generation != (uint32_t) (q->tag >> 40))
    {
        return 0;
    }

    w = __atomic_load_n(q->word, __ATOMIC_ACQUIRE);

    if (w != q->judged
        || __atomic_load_n(&q->bucket->tag, __ATOMIC_ACQUIRE) != q->tag)
    {
        return 0;
    }

    __atomic_fetch_add(&q->bucket->calls, 1, __ATOMIC_RELAXED);

    t->admitted = 0;

    return 1;
}

/* the admitted request went away without an outcome (gives back a probe) */
void ngx_http_breaker_circuit_cancel(ngx_http_breaker_circuit_t *c,
    ngx_http_breaker_ticket_t *t);

/* current state, as admit() would see it now (no transition made) */
ngx_http_breaker_state_e ngx_http_breaker_circuit_state(
    ngx_http_breaker_circuit_t *c, ngx_http_breaker_circuit_conf_t *conf,
    int64_t now);

/* forced states from the status endpoint: FORCED_OPEN, FORCED_CLOSED, or
 * CLOSED (back to automatic, empty window).  Named _force_state: the name
 * ngx_http_breaker_circuit_force is the status endpoint's entry point
 * (ngx_http_breaker_status.h), by cycle and circuit name.  Returns the
 * state it replaced; the caller counts the transition (no conf here). */
ngx_http_breaker_state_e ngx_http_breaker_circuit_force_state(
    ngx_http_breaker_circuit_t *c,
    ngx_http_breaker_state_e state, ngx_str_t *name, ngx_log_t *log);

/* a snapshot for the status endpoint and the metrics */
typedef struct {
    ngx_http_breaker_state_e     state;
    ngx_uint_t                   calls;          /* in the window */
    ngx_uint_t                   failures;
    ngx_uint_t                   slow;
    ngx_uint_t                   failure_rate;   /* percent */
    ngx_uint_t                   slow_rate;      /* percent */
    int64_t                      until_half_open; /* usec, OPEN only */
    ngx_uint_t                   consecutive_opens;
    uint32_t                     generation;
    const char                  *reason;         /* of the last trip */
} ngx_http_breaker_circuit_info_t;

void ngx_http_breaker_circuit_info(ngx_http_breaker_circuit_t *c,
    ngx_http_breaker_circuit_conf_t *conf, int64_t now,
    ngx_http_breaker_circuit_info_t *info);

/*
 * The breaker_zone (shared memory) where the circuits of both layers live,
 * found by name.  At configuration: the zone of that name (declared by
 * breaker_zone, before or after the caller in nginx.conf; an undeclared
 * name is an error at the end of the configuration).  At run time: the
 * circuit of that name in the zone, created on first call (slab, under
 * the zone's mutex: rare), the same circuit for every worker and across
 * reloads while its conf is unchanged.  NULL when the zone is full
 * (logged once; the caller admits, as if the circuit were disabled).
 * Callers keep the pointer (per worker) instead of looking it up per
 * request.
 */
ngx_shm_zone_t *ngx_http_breaker_zone_add(ngx_conf_t *cf, ngx_str_t *name);

ngx_http_breaker_circuit_t *ngx_http_breaker_zone_circuit(
    ngx_shm_zone_t *zone, ngx_str_t *name,
    ngx_http_breaker_circuit_conf_t *conf, ngx_log_t *log);

/*
 * Added: the circuits' life across reloads.  A circuit that a new
 * configuration no longer looks up (its name is gone, or its number of
 * buckets changed and a new one replaced it) is retired, and freed once
 * no process that may still use it (a worker of an older configuration,
 * shutting down) is alive.  In the master at init_module:
 * _zones_begin() before the circuits are looked up (a new configuration
 * number per zone), _zones_end() after (retire what was not looked up,
 * free what no process can use).  In every process at init_process:
 * _zones_register() (this process uses this configuration's circuits).
 */
void ngx_http_breaker_zones_begin(ngx_cycle_t *cycle);
void ngx_http_breaker_zones_end(ngx_cycle_t *cycle);
void ngx_http_breaker_zones_register(ngx_cycle_t *cycle);

/*
 * Added: which configuration each process uses, kept in a zone's shared
 * memory (one registry per zone: each breaker_zone's and each
 * breaker_shed_zone's), so that what a reload retires from a zone is
 * freed only once no process that may still use it is alive.  The
 * configurations are numbered per registry: _registry_next() in the
 * master, under the zone's mutex, when a configuration looks its nodes
 * up; _registry_register() in every process at init_process, with the
 * number its configuration got; _registry_in_use() in the master, under
 * the zone's mutex, before freeing a node retired by configuration
 * `retired` (1: keep it).  The registry of the breaker_zone and of the
 * breaker_shed_zone are the same code: keep it one.
 */
#define NGX_HTTP_BREAKER_REGISTRY_SLOTS  64

typedef struct {
    ngx_pid_t                    pid;        /* written last (release) */
    ngx_uint_t                   cycle;
} ngx_http_breaker_registry_proc_t;

typedef struct {
    ngx_uint_t                   cycle;      /* configurations so far */
    ngx_http_breaker_registry_proc_t
                           procs[NGX_HTTP_BREAKER_REGISTRY_SLOTS];
} ngx_http_breaker_registry_t;

ngx_uint_t ngx_http_breaker_registry_next(ngx_http_breaker_registry_t *reg);
void ngx_http_breaker_registry_register(ngx_http_breaker_registry_t *reg,
    ngx_uint_t cycle);
ngx_uint_t ngx_http_breaker_registry_in_use(ngx_http_breaker_registry_t *reg,
    ngx_uint_t retired);

/*
 * Parses the circuit parameters shared by breaker_circuit and
 * breaker_peers (window=, buckets=, min_calls=, failure_rate=, ...) from
 * one argument; NGX_DECLINED if the argument is not one of them (the
 * caller tries its own), NGX_ERROR after logging the bad value.  Then
 * _conf_check() fills the defaults and checks the combination.
 */
void ngx_http_breaker_circuit_conf_init(ngx_http_breaker_circuit_conf_t *conf);
ngx_int_t ngx_http_breaker_circuit_conf_parse(ngx_conf_t *cf,
    ngx_http_breaker_circuit_conf_t *conf, ngx_str_t *arg);
char *ngx_http_breaker_circuit_conf_check(ngx_conf_t *cf,
    ngx_http_breaker_circuit_conf_t *conf);


/* "closed", "open", "half_open", "forced_open", ... */
ngx_str_t *ngx_http_breaker_state_name(ngx_http_breaker_state_e state);

/* added: the reason of the last transition ("failure_rate", "slow_rate",
 * "half_open_wait", "forced", "probes_passed", or "") */
const char *ngx_http_breaker_circuit_reason(ngx_http_breaker_circuit_t *c);

/* added: the same reason as a small number (below
 * NGX_HTTP_BREAKER_REASONS), for a caller that keeps it in a few bits,
 * and the name of such a number ("" when out of range) */
#define NGX_HTTP_BREAKER_REASONS  6

ngx_uint_t ngx_http_breaker_circuit_reason_code(ngx_http_breaker_circuit_t *c);
const char *ngx_http_breaker_reason_name(ngx_uint_t code);

/* added: the state stored in the state word (no lazy OPEN -> HALF_OPEN
 * view), or the conf's mode when it is not automatic: what the state
 * gauge shows */
ngx_http_breaker_state_e ngx_http_breaker_circuit_stored_state(
    ngx_http_breaker_circuit_t *c, ngx_http_breaker_circuit_conf_t *conf);

/* added: 1 if the status is one of the conf's statuses= (a failure);
 * inline: once per outcome */
static ngx_inline ngx_uint_t
ngx_http_breaker_circuit_failure_status(ngx_http_breaker_circuit_conf_t *conf,
    ngx_uint_t status)
{
    if (status < 100 || status > 599) {
        return 0;
    }

    return (conf->statuses[status / 8] >> (status % 8)) & 1;
}


#endif /* _NGX_HTTP_BREAKER_CIRCUIT_H_INCLUDED_ */
