/*
 * ngx_http_ratelimit_module: a map loaded from PostgreSQL ("ratelimit_pg_map").
 *
 *     ratelimit_pg_map <source> $<variable> dsn=<conninfo> query=<SQL>
 *         [refresh=30s] [timeout=5s] [default=<value>] [zone=<name>:<size>];
 *
 * The rows (key, value) of the operator's query live in a shared-memory
 * zone, so that every worker serves the same copy, and the request's path
 * only reads it: the variable hashes the source's value, walks one chain
 * and copies the value into r->pool.  No lock, no database round trip.
 *
 * The table.  A copy is one slab allocation: a header, a power-of-two
 * array of chain heads, and an arena of entries chained by offset.  The
 * zone has two slots and `current` says which one readers use.  A reader
 * announces itself in readers[slot] (an atomic add), checks that the slot
 * is still current (else it leaves and retries), looks up, and leaves.  A
 * refresh frees the other slot's copy once nobody is in it, builds the new
 * copy there completely, and only then flips `current`: a reader sees the
 * old copy or the new one, whole, never a table being built or freed.  The
 * copy that was replaced stays until the next refresh needs its slot.  A
 * reader that died inside (a crashed worker) would pin its slot forever:
 * as a lookup takes a microsecond, a slot still pinned after a few seconds
 * is written off.
 *
 * The refresh.  Every worker has a timer.  The first one to find the zone
 * due (sh->next) and the lease free (no owner, or the owner's lease_until
 * has passed: a worker that died mid-refresh) takes the lease, with a
 * trylock on the slab pool's mutex: nobody ever waits for it on the
 * request's path, and nginx unlocks it if its holder dies.  The holder
 * runs the query with libpq's async API on its event loop
 * (ngx_edge_pg.c), installs the result, schedules the next refresh and
 * releases the lease.  On failure the last good copy keeps serving, the
 * next attempt comes sooner (at most 5s later), and one line is logged per
 * interval, whichever worker fails.  A reload that keeps the zone bumps
 * sh->gen: the workers of the old configuration stop refreshing and never
 * install, and the new workers refresh at once.
 */

#include "ngx_http_ratelimit_module.h"
#include "ngx_edge_pg.h"

#include <ngx_crc32.h>


#define NGX_HTTP_RATELIMIT_PG_MAX_LEN        255
#define NGX_HTTP_RATELIMIT_PG_REFRESH        30000
#define NGX_HTTP_RATELIMIT_PG_TIMEOUT        5000
#define NGX_HTTP_RATELIMIT_PG_ZONE_SIZE      (1024 * 1024)

#define NGX_HTTP_RATELIMIT_PG_TICK           1000   /* lease checks, ms */
#define NGX_HTTP_RATELIMIT_PG_RETRY          5000   /* after a failure */
#define NGX_HTTP_RATELIMIT_PG_LEASE_SLACK    5000   /* beyond timeout= */
#define NGX_HTTP_RATELIMIT_PG_LOG_INTERVAL   10000  /* one failure line */
#define NGX_HTTP_RATELIMIT_PG_READER_MAX     5000   /* a reader that long
                                                       is dead */
#define NGX_HTTP_RATELIMIT_PG_INSTALL_WAIT   10


typedef struct {
    uint32_t                         hash;
    uint32_t                         next;       /* offset + 1, 0: none */
    u_char                           klen;
    u_char                           vlen;
    u_char                           data[1];    /* the key, the value */
} ngx_http_ratelimit_pg_entry_t;


typedef struct {
    uint32_t                         mask;       /* buckets - 1 */
    uint32_t                         nentries;
    uint32_t                        *buckets;    /* offset + 1, 0: none */
    u_char                          *arena;
} ngx_http_ratelimit_pg_table_t;


typedef struct {
    ngx_http_ratelimit_pg_table_t   *volatile tables[2];
    ngx_atomic_t                     current;
    ngx_atomic_t                     readers[2];

    /* under the slab pool's mutex */
    ngx_uint_t                       gen;        /* of the configuration */
    ngx_pid_t                        owner;      /* of the lease, or 0 */
    uint64_t                         lease_until;
    uint64_t                         next;       /* refresh due, ms */

    uint64_t                         log_next;
    ngx_uint_t                       failures;   /* in a row */
    ngx_uint_t                       rows;       /* in the current copy */
    ngx_uint_t                       loaded;     /* a copy was ever loaded */
} ngx_http_ratelimit_pg_shctx_t;


typedef struct {
    ngx_str_t                        name;       /* "$variable", for logs */
    ngx_http_complex_value_t         source;
    ngx_edge_pg_dsn_t                dsn;
    char                            *query;
    ngx_msec_t                       refresh;
    ngx_msec_t                       timeout;
    ngx_str_t                        default_value;

    ngx_shm_zone_t                  *shm_zone;
    ngx_slab_pool_t                 *shpool;
    ngx_http_ratelimit_pg_shctx_t   *sh;

    /* this worker's refresh */
    ngx_log_t                       *log;
    ngx_uint_t                       gen;
    ngx_edge_pg_t                    pg;
    ngx_event_t                      tick;
    ngx_event_t                      wait;       /* for the old copy */
    PGresult                        *pending;
    ngx_msec_t                       started;
    ngx_msec_t                       pending_since;
    unsigned                         refreshing:1;   /* holds the lease */
} ngx_http_ratelimit_pg_map_t;


/* what happened to the rows of one result */
typedef struct {
    ngx_uint_t                       returned;
    ngx_uint_t                       nulls;
    ngx_uint_t                       empty;
    ngx_uint_t                       too_long;
    ngx_uint_t                       duplicates;
    ngx_uint_t                       dropped;    /* no room in the zone */
} ngx_http_ratelimit_pg_load_t;


typedef enum {
    NGX_HTTP_RATELIMIT_PG_ROW_OK = 0,
    NGX_HTTP_RATELIMIT_PG_ROW_NULL,
    NGX_HTTP_RATELIMIT_PG_ROW_EMPTY,
    NGX_HTTP_RATELIMIT_PG_ROW_TOO_LONG
} ngx_http_ratelimit_pg_row_e;


static ngx_int_t ngx_http_ratelimit_pg_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_flag_t ngx_http_ratelimit_pg_lookup(
    ngx_http_ratelimit_pg_shctx_t *sh, ngx_str_t *key, u_char *value,
    size_t *len);

static void ngx_http_ratelimit_pg_tick(ngx_event_t *ev);
static ngx_flag_t ngx_http_ratelimit_pg_claim(
    ngx_http_ratelimit_pg_map_t *map);
static void ngx_http_ratelimit_pg_start(ngx_http_ratelimit_pg_map_t *map);
static void ngx_http_ratelimit_pg_result(ngx_edge_pg_t *pg, void *data,
    ngx_int_t rc, PGresult *res, ngx_str_t *err);
static void ngx_http_ratelimit_pg_wait(ngx_event_t *ev);
static void ngx_http_ratelimit_pg_install(ngx_http_ratelimit_pg_map_t *map);
static void ngx_http_ratelimit_pg_fail(ngx_http_ratelimit_pg_map_t *map,
    ngx_str_t *err);
static void ngx_http_ratelimit_pg_schedule(ngx_http_ratelimit_pg_map_t *map,
    ngx_msec_t delay);

static ngx_http_ratelimit_pg_table_t *ngx_http_ratelimit_pg_build(
    ngx_slab_pool_t *shpool, PGresult *res, ngx_http_ratelimit_pg_load_t *ld);
static ngx_http_ratelimit_pg_row_e ngx_http_ratelimit_pg_row(PGresult *res,
    int row, size_t *klen, size_t *vlen);
static size_t ngx_http_ratelimit_pg_table_size(PGresult *res, ngx_uint_t n,
    uint32_t *nbuckets);

static uint64_t ngx_http_ratelimit_pg_now(void);
static ngx_int_t ngx_http_ratelimit_pg_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);


/* the tag of our shared memory zones: neither "ratelimit" nor anything
 * else can take one by name */
static ngx_uint_t  ngx_http_ratelimit_pg_zone_tag;


/* the request's path */

static ngx_int_t
ngx_http_ratelimit_pg_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_ratelimit_pg_map_t  *map = (ngx_http_ratelimit_pg_map_t *) data;

    u_char     *p;
    size_t      len;
    ngx_str_t   key;
    u_char      value[NGX_HTTP_RATELIMIT_PG_MAX_LEN];

    len = 0;

    if (ngx_http_complex_value(r, &map->source, &key) != NGX_OK) {
        return NGX_ERROR;
    }

    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    if (key.len == 0
        || key.len > NGX_HTTP_RATELIMIT_PG_MAX_LEN
        || !ngx_http_ratelimit_pg_lookup(map->sh, &key, value, &len))
    {
        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "ratelimit_pg_map %V: \"%V\" is not in the map",
                       &map->name, &key);

        v->len = map->default_value.len;
        v->data = map->default_value.data;

        return NGX_OK;
    }

    /* a copy: the table may be replaced while the request still runs */

    p = ngx_pnalloc(r->pool, len + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(p, value, len);

    v->len = len;
    v->data = p;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "ratelimit_pg_map %V: \"%V\" -> \"%v\"",
                   &map->name, &key, v);

    return NGX_OK;
}


static ngx_flag_t
ngx_http_ratelimit_pg_lookup(ngx_http_ratelimit_pg_shctx_t *sh,
    ngx_str_t *key, u_char *value, size_t *len)
{
    uint32_t                        hash, off;
    ngx_flag_t                      found;
    ngx_atomic_uint_t               slot;
    ngx_http_ratelimit_pg_entry_t  *e;
    ngx_http_ratelimit_pg_table_t  *t;

    hash = ngx_crc32_short(key->data, key->len);

    /* pin the current slot; if it stopped being current meanwhile, its
     * copy may be freed at any moment: leave it and pin the new one */

    for ( ;; ) {
        slot = sh->current;

        (void) ngx_atomic_fetch_add(&sh->readers[slot], 1);

        if (sh->current == slot) {
            break;
        }

        (void) ngx_atomic_fetch_add(&sh->readers[slot], -1);
    }

    ngx_memory_barrier();

    t = sh->tables[slot];
    found = 0;

    if (t) {
        off = t->buckets[hash & t->mask];

        while (off) {
            e = (ngx_http_ratelimit_pg_entry_t *) (t->arena + off - 1);

            if (e->hash == hash
                && e->klen == key->len
                && ngx_memcmp(e->data, key->data, key->len) == 0)
            {
                ngx_memcpy(value, e->data + e->klen, e->vlen);
                *len = e->vlen;
                found = 1;
                break;
            }

            off = e->next;
        }
    }

    (void) ngx_atomic_fetch_add(&sh->readers[slot], -1);

    return found;
}


/* the refresh */

static void
ngx_http_ratelimit_pg_tick(ngx_event_t *ev)
{
    ngx_http_ratelimit_pg_map_t  *map = ev->data;

    if (ngx_exiting || ngx_quit || ngx_terminate) {
        /* the new workers, if any, take over */
        return;
    }

    if (!map->refreshing && ngx_http_ratelimit_pg_claim(map)) {
        ngx_http_ratelimit_pg_start(map);
    }

    if (!map->tick.timer_set) {
        ngx_add_timer(&map->tick,
                      ngx_min(map->refresh, NGX_HTTP_RATELIMIT_PG_TICK));
    }
}


static ngx_flag_t
ngx_http_ratelimit_pg_claim(ngx_http_ratelimit_pg_map_t *map)
{
    uint64_t                        now, lease;
    ngx_pid_t                       owner;
    ngx_flag_t                      won;
    ngx_http_ratelimit_pg_shctx_t  *sh;

    sh = map->sh;

    /* another worker is looking: it is its turn */
    if (!ngx_shmtx_trylock(&map->shpool->mutex)) {
        return 0;
    }

    now = ngx_http_ratelimit_pg_now();
    lease = map->timeout + NGX_HTTP_RATELIMIT_PG_LEASE_SLACK;
    owner = 0;
    won = 0;

    /* "> now + ...": the clock went back, the dates are meaningless */

    if (sh->gen == map->gen
        && (sh->next <= now || sh->next > now + map->refresh)
        && (sh->owner == 0
            || sh->lease_until <= now
            || sh->lease_until > now + lease))
    {
        owner = sh->owner;
        sh->owner = ngx_pid;
        sh->lease_until = now + lease;
        won = 1;
    }

    ngx_shmtx_unlock(&map->shpool->mutex);

    if (won && owner && owner != ngx_pid) {
        ngx_log_error(NGX_LOG_WARN, map->log, 0,
                      "ratelimit_pg_map \"%V\": the refresh by process %P "
                      "did not finish in time, taking over",
                      &map->name, owner);
    }

    return won;
}


static void
ngx_http_ratelimit_pg_start(ngx_http_ratelimit_pg_map_t *map)
{
    map->refreshing = 1;
    map->started = ngx_current_msec;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, map->log, 0,
                   "ratelimit_pg_map \"%V\": refreshing from %V",
                   &map->name, &map->dsn.peer);

    if (ngx_edge_pg_query(&map->pg, map->query, map->timeout,
                          ngx_http_ratelimit_pg_result, map)
        != NGX_OK)
    {
        ngx_http_ratelimit_pg_fail(map, ngx_edge_pg_error(&map->pg));
    }
}


static void
ngx_http_ratelimit_pg_result(ngx_edge_pg_t *pg, void *data, ngx_int_t rc,
    PGresult *res, ngx_str_t *err)
{
    ngx_http_ratelimit_pg_map_t  *map = data;

    int        n;
    ngx_str_t  msg;
    u_char     buf[80];

    if (rc != NGX_OK) {
        ngx_http_ratelimit_pg_fail(map, err);
        return;
    }

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        PQclear(res);
        ngx_str_set(&msg, "the query returned no result set (not a SELECT?)");
        ngx_http_ratelimit_pg_fail(map, &msg);
        return;
    }

    n = PQnfields(res);

    if (n != 2) {
        PQclear(res);
        msg.data = buf;
        msg.len = ngx_sprintf(buf, "the query returned %d columns, "
                              "not 2 (key, value)", n)
                  - buf;
        ngx_http_ratelimit_pg_fail(map, &msg);
        return;
    }

    map->pending = res;
    map->pending_since = ngx_current_msec;

    ngx_http_ratelimit_pg_install(map);
}


static void
ngx_http_ratelimit_pg_wait(ngx_event_t *ev)
{
    ngx_http_ratelimit_pg_map_t  *map = ev->data;

    if (map->pending) {
        ngx_http_ratelimit_pg_install(map);
    }
}


static void
ngx_http_ratelimit_pg_install(ngx_http_ratelimit_pg_map_t *map)
{
    uint64_t                        now;
    ngx_str_t                       msg;
    ngx_uint_t                      slot, failures, reclaimed, rows;
    ngx_slab_pool_t                *shpool;
    ngx_http_ratelimit_pg_load_t    ld;
    ngx_http_ratelimit_pg_table_t  *t;
    ngx_http_ratelimit_pg_shctx_t  *sh;

    sh = map->sh;
    shpool = map->shpool;

    ngx_memzero(&ld, sizeof(ngx_http_ratelimit_pg_load_t));

    t = NULL;
    failures = 0;
    reclaimed = 0;

    ngx_shmtx_lock(&shpool->mutex);

    now = ngx_http_ratelimit_pg_now();

    if (sh->gen != map->gen || sh->owner != ngx_pid) {
        /* a reload gave the zone to new workers, or our lease expired
         * and another worker took over: theirs is the copy to install */
        ngx_shmtx_unlock(&shpool->mutex);

        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, map->log, 0,
                       "ratelimit_pg_map \"%V\": the zone changed hands, "
                       "result dropped", &map->name);

        PQclear(map->pending);
        map->pending = NULL;
        map->refreshing = 0;
        return;
    }

    slot = sh->current ^ 1;

    if (sh->tables[slot]) {

        if (sh->readers[slot] != 0) {

            if (ngx_current_msec - map->pending_since
                < NGX_HTTP_RATELIMIT_PG_READER_MAX)
            {
                /* a reader is leaving the copy it pinned: wait for it */
                sh->lease_until = now + map->timeout
                                  + NGX_HTTP_RATELIMIT_PG_LEASE_SLACK;

                ngx_shmtx_unlock(&shpool->mutex);

                ngx_add_timer(&map->wait, NGX_HTTP_RATELIMIT_PG_INSTALL_WAIT);
                return;
            }

            /* nobody reads for that long: a worker died inside */
            sh->readers[slot] = 0;
            reclaimed = 1;
        }

        ngx_slab_free_locked(shpool, sh->tables[slot]);
        sh->tables[slot] = NULL;
    }

    t = ngx_http_ratelimit_pg_build(shpool, map->pending, &ld);

    if (t) {
        sh->tables[slot] = t;

        /* the copy is complete before any reader can reach it */
        ngx_memory_barrier();

        sh->current = slot;

        failures = sh->failures;
        sh->failures = 0;
        sh->log_next = 0;
        sh->rows = t->nentries;
        sh->loaded = 1;

        sh->next = now + map->refresh;
        sh->owner = 0;
    }

    ngx_shmtx_unlock(&shpool->mutex);

    PQclear(map->pending);
    map->pending = NULL;

    if (reclaimed) {
        ngx_log_error(NGX_LOG_WARN, map->log, 0,
                      "ratelimit_pg_map \"%V\": a reader of the previous "
                      "copy never left (a worker died?), copy freed",
                      &map->name);
    }

    if (t == NULL) {
        ngx_str_set(&msg, "the zone has no room even for an empty map");
        ngx_http_ratelimit_pg_fail(map, &msg);
        return;
    }

    map->refreshing = 0;
    rows = t->nentries;

    if (failures) {
        ngx_log_error(NGX_LOG_NOTICE, map->log, 0,
                      "ratelimit_pg_map \"%V\": loading from %V works again "
                      "after %ui failed attempts",
                      &map->name, &map->dsn.peer, failures);
    }

    ngx_log_error(NGX_LOG_INFO, map->log, 0,
                  "ratelimit_pg_map \"%V\": loaded %ui rows from %V in %Mms "
                  "(%ui returned, %ui with NULL, %ui with an empty key, "
                  "%ui duplicate keys)",
                  &map->name, rows, &map->dsn.peer,
                  ngx_current_msec - map->started, ld.returned, ld.nulls,
                  ld.empty, ld.duplicates);

    if (ld.too_long) {
        ngx_log_error(NGX_LOG_WARN, map->log, 0,
                      "ratelimit_pg_map \"%V\": %ui rows skipped, their key "
                      "or value is longer than %d bytes",
                      &map->name, ld.too_long, NGX_HTTP_RATELIMIT_PG_MAX_LEN);
    }

    if (ld.dropped) {
        ngx_log_error(NGX_LOG_WARN, map->log, 0,
                      "ratelimit_pg_map \"%V\": %ui rows dropped, zone "
                      "\"%V\" is full (it must hold two copies of the map)",
                      &map->name, ld.dropped, &map->shm_zone->shm.name);
    }

    ngx_http_ratelimit_pg_schedule(map, map->refresh);
}


static void
ngx_http_ratelimit_pg_fail(ngx_http_ratelimit_pg_map_t *map, ngx_str_t *err)
{
    uint64_t                        now;
    ngx_msec_t                      retry;
    ngx_uint_t                      failures, rows, loaded, log;
    ngx_http_ratelimit_pg_shctx_t  *sh;

    sh = map->sh;
    retry = ngx_min(map->refresh, NGX_HTTP_RATELIMIT_PG_RETRY);

    failures = 0;
    rows = 0;
    loaded = 0;
    log = 0;

    ngx_shmtx_lock(&map->shpool->mutex);

    now = ngx_http_ratelimit_pg_now();

    if (sh->gen == map->gen && sh->owner == ngx_pid) {
        sh->owner = 0;
        sh->next = now + retry;

        failures = ++sh->failures;
        rows = sh->rows;
        loaded = sh->loaded;

        /* one line per interval, whichever worker fails */
        if (now >= sh->log_next
            || sh->log_next > now + NGX_HTTP_RATELIMIT_PG_LOG_INTERVAL
                              + map->refresh)
        {
            sh->log_next = now + ngx_max(map->refresh,
                                         NGX_HTTP_RATELIMIT_PG_LOG_INTERVAL);
            log = 1;
        }
    }

    ngx_shmtx_unlock(&map->shpool->mutex);

    map->refreshing = 0;

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, map->log, 0,
                   "ratelimit_pg_map \"%V\": failure %ui in a row: \"%V\", "
                   "next attempt in %M ms",
                   &map->name, failures, err, retry);

    if (log) {
        if (loaded) {
            ngx_log_error(NGX_LOG_ERR, map->log, 0,
                          "ratelimit_pg_map \"%V\": loading from %V failed: "
                          "%V; serving the last good copy (%ui rows), "
                          "failures in a row: %ui",
                          &map->name, &map->dsn.peer, err, rows, failures);

        } else {
            ngx_log_error(NGX_LOG_ERR, map->log, 0,
                          "ratelimit_pg_map \"%V\": loading from %V failed: "
                          "%V; nothing loaded yet, the variable is the "
                          "default, failures in a row: %ui",
                          &map->name, &map->dsn.peer, err, failures);
        }
    }

    ngx_http_ratelimit_pg_schedule(map, retry);
}


/* this worker will most likely hold the lease again: look when it is due */

static void
ngx_http_ratelimit_pg_schedule(ngx_http_ratelimit_pg_map_t *map,
    ngx_msec_t delay)
{
    if (ngx_exiting || ngx_quit || ngx_terminate) {
        return;
    }

    if (map->tick.timer_set) {
        ngx_del_timer(&map->tick);
    }

    ngx_add_timer(&map->tick, delay);
}


/* building a copy, under the slab pool's mutex */

static ngx_http_ratelimit_pg_row_e
ngx_http_ratelimit_pg_row(PGresult *res, int row, size_t *klen, size_t *vlen)
{
    if (PQgetisnull(res, row, 0) || PQgetisnull(res, row, 1)) {
        return NGX_HTTP_RATELIMIT_PG_ROW_NULL;
    }

    *klen = PQgetlength(res, row, 0);
    *vlen = PQgetlength(res, row, 1);

    if (*klen == 0) {
        /* an empty key gets the default anyway */
        return NGX_HTTP_RATELIMIT_PG_ROW_EMPTY;
    }

    if (*klen > NGX_HTTP_RATELIMIT_PG_MAX_LEN
        || *vlen > NGX_HTTP_RATELIMIT_PG_MAX_LEN)
    {
        return NGX_HTTP_RATELIMIT_PG_ROW_TOO_LONG;
    }

    return NGX_HTTP_RATELIMIT_PG_ROW_OK;
}


#define ngx_http_ratelimit_pg_entry_size(klen, vlen)                          \
    ngx_align(offsetof(ngx_http_ratelimit_pg_entry_t, data) + (klen) + (vlen),\
              sizeof(uint32_t))


/* the size of a copy of the first n usable rows */

static size_t
ngx_http_ratelimit_pg_table_size(PGresult *res, ngx_uint_t n,
    uint32_t *nbuckets)
{
    int         row, rows;
    size_t      klen, vlen, arena;
    uint32_t    nb;
    ngx_uint_t  taken;

    rows = PQntuples(res);
    arena = 0;
    taken = 0;

    for (row = 0; row < rows && taken < n; row++) {
        if (ngx_http_ratelimit_pg_row(res, row, &klen, &vlen)
            == NGX_HTTP_RATELIMIT_PG_ROW_OK)
        {
            arena += ngx_http_ratelimit_pg_entry_size(klen, vlen);
            taken++;
        }
    }

    /* a load factor of at most 1 */
    for (nb = 8; nb < n; nb <<= 1) { /* void */ }

    *nbuckets = nb;

    return sizeof(ngx_http_ratelimit_pg_table_t) + nb * sizeof(uint32_t)
           + arena;
}


static ngx_http_ratelimit_pg_table_t *
ngx_http_ratelimit_pg_build(ngx_slab_pool_t *shpool, PGresult *res,
    ngx_http_ratelimit_pg_load_t *ld)
{
    int                             row, rows;
    u_char                         *key, *value;
    size_t                          klen, vlen, arena, size;
    uint32_t                        hash, off, used, *head, nb;
    ngx_uint_t                      n, lo, hi, mid, taken;
    ngx_http_ratelimit_pg_entry_t  *e;
    ngx_http_ratelimit_pg_table_t  *t;

    rows = PQntuples(res);
    ld->returned = rows;

    /* the usable rows; offsets are 32-bit: 4 GB of entries at most */

    n = 0;
    arena = 0;

    for (row = 0; row < rows; row++) {

        switch (ngx_http_ratelimit_pg_row(res, row, &klen, &vlen)) {

        case NGX_HTTP_RATELIMIT_PG_ROW_NULL:
            ld->nulls++;
            continue;

        case NGX_HTTP_RATELIMIT_PG_ROW_EMPTY:
            ld->empty++;
            continue;

        case NGX_HTTP_RATELIMIT_PG_ROW_TOO_LONG:
            ld->too_long++;
            continue;

        default:
            break;
        }

        arena += ngx_http_ratelimit_pg_entry_size(klen, vlen);

        if (arena >= 0xffffffff) {
            ld->dropped++;
            continue;
        }

        n++;
    }

    size = ngx_http_ratelimit_pg_table_size(res, n, &nb);
    t = ngx_slab_alloc_locked(shpool, size);

    if (t == NULL) {
        /* the most rows that fit: lo fits (unless 0 does not), hi not */

        lo = 0;
        hi = n;

        while (hi - lo > 1) {
            mid = lo + (hi - lo) / 2;

            size = ngx_http_ratelimit_pg_table_size(res, mid, &nb);
            t = ngx_slab_alloc_locked(shpool, size);

            if (t) {
                ngx_slab_free_locked(shpool, t);
                lo = mid;

            } else {
                hi = mid;
            }
        }

        ld->dropped += n - lo;
        n = lo;

        size = ngx_http_ratelimit_pg_table_size(res, n, &nb);
        t = ngx_slab_alloc_locked(shpool, size);

        if (t == NULL) {
            return NULL;
        }
    }

    t->mask = nb - 1;
    t->nentries = 0;
    t->buckets = (uint32_t *) ((u_char *) t
                               + sizeof(ngx_http_ratelimit_pg_table_t));
    t->arena = (u_char *) (t->buckets + nb);

    ngx_memzero(t->buckets, nb * sizeof(uint32_t));

    used = 0;
    taken = 0;

    for (row = 0; row < rows && taken < n; row++) {

        if (ngx_http_ratelimit_pg_row(res, row, &klen, &vlen)
            != NGX_HTTP_RATELIMIT_PG_ROW_OK)
        {
            continue;
        }

        taken++;

        key = (u_char *) PQgetvalue(res, row, 0);
        value = (u_char *) PQgetvalue(res, row, 1);

        hash = ngx_crc32_short(key, klen);
        head = &t->buckets[hash & t->mask];

        /* the first row wins */

        for (off = *head; off; off = e->next) {
            e = (ngx_http_ratelimit_pg_entry_t *) (t->arena + off - 1);

            if (e->hash == hash
                && e->klen == klen
                && ngx_memcmp(e->data, key, klen) == 0)
            {
                break;
            }
        }

        if (off) {
            ld->duplicates++;
            continue;
        }

        e = (ngx_http_ratelimit_pg_entry_t *) (t->arena + used);

        e->hash = hash;
        e->klen = (u_char) klen;
        e->vlen = (u_char) vlen;
        ngx_memcpy(e->data, key, klen);
        ngx_memcpy(e->data + klen, value, vlen);

        e->next = *head;
        *head = used + 1;

        used += ngx_http_ratelimit_pg_entry_size(klen, vlen);
        t->nentries++;
    }

    return t;
}


static uint64_t
ngx_http_ratelimit_pg_now(void)
{
    ngx_time_t  *tp;

    /* wall clock: the dates in the zone are compared across processes */
    tp = ngx_timeofday();

    return (uint64_t) tp->sec * 1000 + tp->msec;
}


/* worker life */

ngx_int_t
ngx_http_ratelimit_pg_init_process(ngx_cycle_t *cycle,
    ngx_http_ratelimit_main_conf_t *rmcf)
{
    ngx_uint_t                     i;
    ngx_http_ratelimit_pg_map_t  **maps, *map;

    if (rmcf->pg_maps == NULL) {
        return NGX_OK;
    }

    maps = rmcf->pg_maps->elts;

    for (i = 0; i < rmcf->pg_maps->nelts; i++) {
        map = maps[i];

        map->log = cycle->log;
        map->gen = map->sh->gen;

        ngx_edge_pg_init(&map->pg, &map->dsn, cycle->log);

        map->tick.handler = ngx_http_ratelimit_pg_tick;
        map->tick.data = map;
        map->tick.log = cycle->log;
        map->tick.cancelable = 1;

        map->wait.handler = ngx_http_ratelimit_pg_wait;
        map->wait.data = map;
        map->wait.log = cycle->log;
        map->wait.cancelable = 1;

        /* the first load as soon as the event loop runs */
        ngx_add_timer(&map->tick, 0);
    }

    return NGX_OK;
}


void
ngx_http_ratelimit_pg_exit_process(ngx_cycle_t *cycle,
    ngx_http_ratelimit_main_conf_t *rmcf)
{
    ngx_uint_t                     i;
    ngx_http_ratelimit_pg_map_t  **maps, *map;

    if (rmcf->pg_maps == NULL) {
        return;
    }

    maps = rmcf->pg_maps->elts;

    for (i = 0; i < rmcf->pg_maps->nelts; i++) {
        map = maps[i];

        if (map->tick.timer_set) {
            ngx_del_timer(&map->tick);
        }

        if (map->wait.timer_set) {
            ngx_del_timer(&map->wait);
        }

        /* PQfinish() and the nginx connection released: no socket left */
        ngx_edge_pg_close(&map->pg);

        if (map->pending) {
            PQclear(map->pending);
            map->pending = NULL;
        }

        if (map->refreshing && map->sh) {
            /* the next worker need not wait for the lease to expire */
            ngx_shmtx_lock(&map->shpool->mutex);

            if (map->sh->owner == ngx_pid) {
                map->sh->owner = 0;
            }

            ngx_shmtx_unlock(&map->shpool->mutex);

            map->refreshing = 0;
        }
    }
}


/* the zone */

static ngx_int_t
ngx_http_ratelimit_pg_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_ratelimit_pg_map_t  *omap = data;

    size_t                        len;
    ngx_http_ratelimit_pg_map_t  *map;

    map = shm_zone->data;

    if (omap) {
        /* nginx -s reload with the zone unchanged: the copy keeps serving,
         * and the new configuration's workers refresh it at once */
        map->shpool = omap->shpool;
        map->sh = omap->sh;

        ngx_shmtx_lock(&map->shpool->mutex);

        map->sh->gen++;
        map->sh->next = 0;
        map->sh->owner = 0;

        ngx_shmtx_unlock(&map->shpool->mutex);

        return NGX_OK;
    }

    map->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        map->sh = map->shpool->data;
        return NGX_OK;
    }

    map->sh = ngx_slab_calloc(map->shpool,
                              sizeof(ngx_http_ratelimit_pg_shctx_t));
    if (map->sh == NULL) {
        return NGX_ERROR;
    }

    map->shpool->data = map->sh;
    map->sh->gen = 1;

    len = sizeof(" in ratelimit_pg_map zone \"\"") + shm_zone->shm.name.len;

    map->shpool->log_ctx = ngx_slab_alloc(map->shpool, len);
    if (map->shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(map->shpool->log_ctx, " in ratelimit_pg_map zone \"%V\"%Z",
                &shm_zone->shm.name);

    /* a full zone is handled (and logged) by the refresh */
    map->shpool->log_nomem = 0;

    return NGX_OK;
}


/* configuration */

static ngx_int_t
ngx_http_ratelimit_pg_parse_msec(ngx_str_t *value, size_t skip,
    ngx_msec_t *ms)
{
    ngx_str_t   s;
    ngx_msec_t  t;

    s.data = value->data + skip;
    s.len = value->len - skip;

    t = ngx_parse_time(&s, 0);

    if (t == (ngx_msec_t) NGX_ERROR || t == 0) {
        return NGX_ERROR;
    }

    *ms = t;

    return NGX_OK;
}


char *
ngx_http_ratelimit_pg_map(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ratelimit_main_conf_t  *rmcf = conf;

    u_char                             *p;
    ssize_t                             size;
    ngx_str_t                          *value, dsn, zname, s, var, err;
    ngx_uint_t                          i;
    ngx_shm_zone_t                     *shm_zone;
    ngx_http_variable_t                *v;
    ngx_http_ratelimit_pg_map_t        *map, **mp;
    ngx_http_compile_complex_value_t    ccv;

    value = cf->args->elts;

    map = ngx_pcalloc(cf->pool, sizeof(ngx_http_ratelimit_pg_map_t));
    if (map == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

    ccv.cf = cf;
    ccv.value = &value[1];
    ccv.complex_value = &map->source;

    if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    map->name = value[2];

    if (value[2].len < 2 || value[2].data[0] != '$') {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid variable name \"%V\": it must start "
                           "with \"$\"", &value[2]);
        return NGX_CONF_ERROR;
    }

    var.data = value[2].data + 1;
    var.len = value[2].len - 1;

    for (p = var.data; p < var.data + var.len; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
              || (*p >= '0' && *p <= '9') || *p == '_'))
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid variable name \"%V\": letters, "
                               "digits and \"_\" only", &value[2]);
            return NGX_CONF_ERROR;
        }
    }

    ngx_str_null(&dsn);
    ngx_str_null(&zname);
    size = 0;
    map->refresh = NGX_CONF_UNSET_MSEC;
    map->timeout = NGX_CONF_UNSET_MSEC;

    for (i = 3; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "dsn=", 4) == 0) {
            dsn.data = value[i].data + 4;
            dsn.len = value[i].len - 4;

            if (dsn.len == 0) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "empty \"dsn\" parameter");
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "query=", 6) == 0) {
            s.data = value[i].data + 6;
            s.len = value[i].len - 6;

            if (s.len == 0) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "empty \"query\" parameter");
                return NGX_CONF_ERROR;
            }

            /* libpq wants a C string; arguments are NUL-terminated */
            map->query = (char *) s.data;
            continue;
        }

        if (ngx_strncmp(value[i].data, "refresh=", 8) == 0) {
            if (ngx_http_ratelimit_pg_parse_msec(&value[i], 8, &map->refresh)
                != NGX_OK)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid \"refresh\" time \"%V\"",
                                   &value[i]);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "timeout=", 8) == 0) {
            if (ngx_http_ratelimit_pg_parse_msec(&value[i], 8, &map->timeout)
                != NGX_OK)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid \"timeout\" time \"%V\"",
                                   &value[i]);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "default=", 8) == 0) {
            map->default_value.data = value[i].data + 8;
            map->default_value.len = value[i].len - 8;
            continue;
        }

        if (ngx_strncmp(value[i].data, "zone=", 5) == 0) {
            if (ngx_edge_conf_parse_zone(cf, &value[i], &zname, &size)
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\"", &value[i]);
        return NGX_CONF_ERROR;
    }

    if (dsn.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" must have \"dsn\" parameter", &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (map->query == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" must have \"query\" parameter",
                           &cmd->name);
        return NGX_CONF_ERROR;
    }

    ngx_conf_init_msec_value(map->refresh, NGX_HTTP_RATELIMIT_PG_REFRESH);
    ngx_conf_init_msec_value(map->timeout, NGX_HTTP_RATELIMIT_PG_TIMEOUT);

    if (ngx_edge_pg_parse_dsn(cf, &dsn, &map->dsn, &err) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid \"dsn\" parameter: %V", &err);
        return NGX_CONF_ERROR;
    }

    if (zname.len == 0) {
        /* one zone per map, named after its variable */
        zname = var;
        size = NGX_HTTP_RATELIMIT_PG_ZONE_SIZE;
    }

    shm_zone = ngx_shared_memory_add(cf, &zname, size,
                                     &ngx_http_ratelimit_pg_zone_tag);
    if (shm_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    if (shm_zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "zone \"%V\" is already used by another "
                           "\"%V\"", &zname, &cmd->name);
        return NGX_CONF_ERROR;
    }

    shm_zone->init = ngx_http_ratelimit_pg_init_zone;
    shm_zone->data = map;
    map->shm_zone = shm_zone;

    v = ngx_http_add_variable(cf, &var, 0);
    if (v == NULL) {
        return NGX_CONF_ERROR;
    }

    v->get_handler = ngx_http_ratelimit_pg_variable;
    v->data = (uintptr_t) map;

    if (rmcf->pg_maps == NULL) {
        rmcf->pg_maps = ngx_array_create(cf->pool, 2,
                                        sizeof(ngx_http_ratelimit_pg_map_t *));
        if (rmcf->pg_maps == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    mp = ngx_array_push(rmcf->pg_maps);
    if (mp == NULL) {
        return NGX_CONF_ERROR;
    }

    *mp = map;

    return NGX_CONF_OK;
}
