/*
 * ngx_http_ratelimit_module: a map loaded from PostgreSQL ("ratelimit_pg_map").
 *
 *     ratelimit_pg_map <source> $<variable> dsn=<conninfo> query=<SQL>
 *         [password_file=<path>] [refresh=30s] [timeout=5s]
 *         [default=<value>] [zone=<name>:<size>] [match=exact|cidr];
 *
 * The rows (key, value) of the operator's query live in a shared-memory
 * zone, so that every worker serves the same copy, and the request's path
 * only reads it: the variable hashes the source's value, walks one chain
 * and copies the value into r->pool.  No lock, no database round trip.
 * No request ever waits for PostgreSQL: only the refresh talks to it.
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
 * Installing a result is bounded work per pass of the event loop: the rows
 * are measured NGX_HTTP_RATELIMIT_PG_ROWS_PER_PASS at a time without the
 * lock, the copy is allocated, then filled as many rows at a time, each
 * piece under the slab pool's mutex (so that the lease is checked before
 * every write: a worker that lost the lease never writes again), and the
 * next piece is posted to the next pass.  Readers never take the lock.
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
 * interval, whichever worker fails.  Dates are ngx_current_msec: nginx
 * reads it from the monotonic clock, the same in every process of the node.
 *
 * match=cidr.  The keys are addresses and CIDRs (IPv4 and IPv6), and a
 * lookup is a longest-prefix match.  A row's key is stored in binary, as
 * the family, the prefix length and the address with its host bits
 * cleared, in the same table; the table also notes which prefix lengths
 * it holds.  A lookup masks the address to each length present, longest
 * first, and looks the result up as an exact key: as many hash lookups
 * as there are distinct lengths (at most 33 or 129), under one pin, with
 * no lock and no allocation.  IPv4-mapped IPv6 addresses (rows with a
 * prefix of at least 96, and looked-up addresses) are IPv4.  A row whose
 * key is not an address or CIDR is skipped; one warning says so, again
 * only when the set of such rows changes (a CRC of their keys, kept in
 * the zone), so a refresh every 30s does not repeat it.  ratelimit_ddos's
 * allow_pg= looks the client's address up with
 * ngx_http_ratelimit_pg_map_match().
 *
 * Reloads.  Each configuration that gets the zone draws a generation number
 * (sh->gen_last) when the zone is initialized, but the refresh belongs to
 * the generation in sh->gen, and a configuration takes it only when one of
 * its workers starts (init_process): a reload that nginx rejects after the
 * zones were initialized (a busy "listen" port, ...) starts no worker and
 * leaves the refresh with the workers that run.  The workers of an older
 * generation stop refreshing and never install.
 */

#include "ngx_http_ratelimit_module.h"
#include "ngx_edge_pg.h"
#include "ngx_edge_time.h"

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
#define NGX_HTTP_RATELIMIT_PG_ROWS_PER_PASS  1024   /* rows measured or
                                                       installed per pass */
#define NGX_HTTP_RATELIMIT_PG_PASSWORD_MAX   1024

#define NGX_HTTP_RATELIMIT_PG_MATCH_EXACT    0
#define NGX_HTTP_RATELIMIT_PG_MATCH_CIDR     1

/* a match=cidr key: family (0 IPv4, 1 IPv6), prefix length, address */
#define NGX_HTTP_RATELIMIT_PG_CIDR_KEY_LEN   18
#define NGX_HTTP_RATELIMIT_PG_SHOWN_MAX      64     /* bytes of a bad key
                                                       in the log */


typedef struct {
    uint32_t                         hash;
    uint32_t                         next;       /* offset + 1, 0: none */
    u_char                           klen;
    u_char                           vlen;
    u_char                           data[1];    /* the key, the value */
} ngx_http_ratelimit_pg_entry_t;

#define ngx_http_ratelimit_pg_entry_size(klen, vlen)                          \
    ngx_align(offsetof(ngx_http_ratelimit_pg_entry_t, data) + (klen) + (vlen),\
              sizeof(uint32_t))


typedef struct {
    uint32_t                         mask;       /* buckets - 1 */
    uint32_t                         nentries;
    uint32_t                        *buckets;    /* offset + 1, 0: none */
    u_char                          *arena;
    u_char                           lens[2][129];   /* match=cidr: the
                                                        prefix lengths
                                                        present */
} ngx_http_ratelimit_pg_table_t;


typedef struct {
    ngx_http_ratelimit_pg_table_t   *volatile tables[2];
    ngx_atomic_t                     current;
    ngx_atomic_t                     readers[2];

    /* under the slab pool's mutex */
    ngx_uint_t                       gen;        /* refreshes the zone */
    ngx_uint_t                       gen_last;   /* the newest drawn */
    ngx_pid_t                        owner;      /* of the lease, or 0 */
    ngx_msec_t                       lease_until;
    ngx_msec_t                       next;       /* refresh due */

    ngx_edge_log_gate_t              log_gate;   /* failure lines */
    ngx_uint_t                       failures;   /* in a row */
    ngx_uint_t                       rows;       /* in the current copy */
    ngx_uint_t                       loaded;     /* a copy was ever loaded */
    uint32_t                         bad_crc;    /* match=cidr: the bad
                                                    keys last warned of */
} ngx_http_ratelimit_pg_shctx_t;


/* what happened to the rows of one result */
typedef struct {
    ngx_uint_t                       returned;
    ngx_uint_t                       nulls;
    ngx_uint_t                       empty;
    ngx_uint_t                       too_long;
    ngx_uint_t                       duplicates;
    ngx_uint_t                       dropped;    /* no room in the zone */
    ngx_uint_t                       bad;        /* not an address/CIDR */
} ngx_http_ratelimit_pg_load_t;


typedef enum {
    NGX_HTTP_RATELIMIT_PG_MEASURE = 0,
    NGX_HTTP_RATELIMIT_PG_ALLOCATE,
    NGX_HTTP_RATELIMIT_PG_FILL
} ngx_http_ratelimit_pg_phase_e;


/* a result being installed, across passes of the event loop */
typedef struct {
    PGresult                        *res;
    ngx_http_ratelimit_pg_phase_e    phase;
    int                              row;        /* the next to look at */
    int                              rows;
    ngx_flag_t                       full;       /* 32-bit offsets */
    ngx_uint_t                       usable;
    uint32_t                        *arena;      /* arena[i]: the size of
                                                    the first i + 1 usable
                                                    rows' entries */
    ngx_uint_t                       n;          /* rows to install */
    ngx_uint_t                       taken;
    uint32_t                         used;       /* of the copy's arena */
    ngx_uint_t                       slot;
    ngx_http_ratelimit_pg_table_t   *table;
    ngx_http_ratelimit_pg_load_t     ld;
    ngx_msec_t                       since;      /* the result came */
    ngx_uint_t                       passes;     /* under the lock */
    int64_t                          lock_max;   /* usec, the longest */
    int                              bad_first;  /* row + 1, 0: none */
    uint32_t                         bad_crc;    /* of the bad keys */
    unsigned                         bad_new:1;  /* not warned of yet */
} ngx_http_ratelimit_pg_install_t;


struct ngx_http_ratelimit_pg_map_s {
    ngx_str_t                        name;       /* "$variable", for logs */
    ngx_http_complex_value_t         source;
    ngx_edge_pg_dsn_t                dsn;
    char                            *query;
    ngx_msec_t                       refresh;
    ngx_msec_t                       timeout;
    ngx_str_t                        default_value;
    ngx_uint_t                       match;      /* exact or cidr */

    ngx_shm_zone_t                  *shm_zone;
    ngx_slab_pool_t                 *shpool;
    ngx_http_ratelimit_pg_shctx_t   *sh;
    ngx_uint_t                       gen;        /* of this configuration */

    /* ratelimit_pg_failing{map}: set under the slab pool's mutex */
    ngx_edge_stats_t                *stats;
    ngx_edge_stats_id_t              st_failing;

    /* this worker's refresh */
    ngx_log_t                       *log;
    ngx_edge_pg_t                    pg;
    ngx_event_t                      tick;
    ngx_event_t                      step;       /* the install's next */
    ngx_http_ratelimit_pg_install_t  in;
    ngx_msec_t                       started;
    unsigned                         refreshing:1;   /* holds the lease */
    unsigned                         superseded:1;   /* said once */
};


typedef enum {
    NGX_HTTP_RATELIMIT_PG_ROW_OK = 0,
    NGX_HTTP_RATELIMIT_PG_ROW_NULL,
    NGX_HTTP_RATELIMIT_PG_ROW_EMPTY,
    NGX_HTTP_RATELIMIT_PG_ROW_TOO_LONG,
    NGX_HTTP_RATELIMIT_PG_ROW_BAD_CIDR
} ngx_http_ratelimit_pg_row_e;


static ngx_int_t ngx_http_ratelimit_pg_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_flag_t ngx_http_ratelimit_pg_lookup(
    ngx_http_ratelimit_pg_shctx_t *sh, ngx_str_t *key, u_char *value,
    size_t *len);
static ngx_int_t ngx_http_ratelimit_pg_copy_value(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, u_char *value, size_t len);
static ngx_int_t ngx_http_ratelimit_pg_cidr_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_flag_t ngx_http_ratelimit_pg_cidr_lookup(
    ngx_http_ratelimit_pg_shctx_t *sh, ngx_uint_t family, u_char *addr,
    u_char *value, size_t *len);
static ngx_flag_t ngx_http_ratelimit_pg_v4mapped(u_char *addr);
static ngx_uint_t ngx_http_ratelimit_pg_pin(ngx_http_ratelimit_pg_shctx_t *sh);
static ngx_http_ratelimit_pg_entry_t *ngx_http_ratelimit_pg_find(
    ngx_http_ratelimit_pg_table_t *t, uint32_t hash, u_char *key, size_t len);

static void ngx_http_ratelimit_pg_tick(ngx_event_t *ev);
static ngx_flag_t ngx_http_ratelimit_pg_claim(
    ngx_http_ratelimit_pg_map_t *map);
static void ngx_http_ratelimit_pg_start(ngx_http_ratelimit_pg_map_t *map);
static void ngx_http_ratelimit_pg_result(ngx_edge_pg_t *pg, void *data,
    ngx_int_t rc, PGresult *res, ngx_str_t *err);

static void ngx_http_ratelimit_pg_step(ngx_event_t *ev);
static void ngx_http_ratelimit_pg_next_pass(ngx_http_ratelimit_pg_map_t *map);
static void ngx_http_ratelimit_pg_measure(ngx_http_ratelimit_pg_map_t *map);
static void ngx_http_ratelimit_pg_allocate(ngx_http_ratelimit_pg_map_t *map);
static void ngx_http_ratelimit_pg_fill(ngx_http_ratelimit_pg_map_t *map);
static ngx_uint_t ngx_http_ratelimit_pg_fill_rows(
    ngx_http_ratelimit_pg_map_t *map, ngx_uint_t max);
static void ngx_http_ratelimit_pg_installed(ngx_http_ratelimit_pg_map_t *map,
    ngx_uint_t failures);
static void ngx_http_ratelimit_pg_dropped(ngx_http_ratelimit_pg_map_t *map);
static void ngx_http_ratelimit_pg_install_free(
    ngx_http_ratelimit_pg_map_t *map);

static void ngx_http_ratelimit_pg_fail(ngx_http_ratelimit_pg_map_t *map,
    ngx_str_t *err);
static void ngx_http_ratelimit_pg_schedule(ngx_http_ratelimit_pg_map_t *map,
    ngx_msec_t delay);

static ngx_http_ratelimit_pg_row_e ngx_http_ratelimit_pg_row(PGresult *res,
    int row, size_t *klen, size_t *vlen);
static ngx_http_ratelimit_pg_row_e ngx_http_ratelimit_pg_parse_row(
    ngx_http_ratelimit_pg_map_t *map, int row, u_char *buf, u_char **key,
    size_t *klen, size_t *vlen);
static ngx_int_t ngx_http_ratelimit_pg_cidr_key(ngx_str_t *text,
    u_char *key, size_t *klen);
static void ngx_http_ratelimit_pg_bad_rows(ngx_http_ratelimit_pg_map_t *map);
static size_t ngx_http_ratelimit_pg_table_size(
    ngx_http_ratelimit_pg_install_t *in, ngx_uint_t n, uint32_t *nbuckets);
static ngx_http_ratelimit_pg_table_t *ngx_http_ratelimit_pg_table_alloc(
    ngx_slab_pool_t *shpool, ngx_http_ratelimit_pg_install_t *in);

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

    if (ngx_http_ratelimit_pg_copy_value(r, v, value, len) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "ratelimit_pg_map %V: \"%V\" -> \"%v\"",
                   &map->name, &key, v);

    return NGX_OK;
}


static ngx_flag_t
ngx_http_ratelimit_pg_lookup(ngx_http_ratelimit_pg_shctx_t *sh,
    ngx_str_t *key, u_char *value, size_t *len)
{
    uint32_t                        hash;
    ngx_uint_t                      slot;
    ngx_http_ratelimit_pg_entry_t  *e;
    ngx_http_ratelimit_pg_table_t  *t;

    hash = ngx_crc32_short(key->data, key->len);

    slot = ngx_http_ratelimit_pg_pin(sh);

    t = sh->tables[slot];
    e = t ? ngx_http_ratelimit_pg_find(t, hash, key->data, key->len) : NULL;

    if (e) {
        ngx_memcpy(value, e->data + e->klen, e->vlen);
        *len = e->vlen;
    }

    (void) ngx_atomic_fetch_add(&sh->readers[slot], -1);

    return e != NULL;
}


/* a match=cidr map's variable: the source is an address, as text */

static ngx_int_t
ngx_http_ratelimit_pg_cidr_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_ratelimit_pg_map_t  *map = (ngx_http_ratelimit_pg_map_t *) data;

    size_t      len;
    in_addr_t   in;
    ngx_str_t   src;
    ngx_uint_t  family;
    u_char      addr[16], value[NGX_HTTP_RATELIMIT_PG_MAX_LEN];

    if (ngx_http_complex_value(r, &map->source, &src) != NGX_OK) {
        return NGX_ERROR;
    }

    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    len = 0;
    family = 2;    /* not an address */

    in = ngx_inet_addr(src.data, src.len);

    if (in != INADDR_NONE) {
        family = 0;
        ngx_memcpy(addr, &in, 4);

#if (NGX_HAVE_INET6)
    } else if (src.len
               && ngx_inet6_addr(src.data, src.len, addr) == NGX_OK)
    {
        family = 1;

        if (ngx_http_ratelimit_pg_v4mapped(addr)) {
            family = 0;
            ngx_memmove(addr, addr + 12, 4);
        }
#endif
    }

    if (family == 2
        || !ngx_http_ratelimit_pg_cidr_lookup(map->sh, family, addr, value,
                                              &len))
    {
        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "ratelimit_pg_map %V: \"%V\" matches no row",
                       &map->name, &src);

        v->len = map->default_value.len;
        v->data = map->default_value.data;

        return NGX_OK;
    }

    return ngx_http_ratelimit_pg_copy_value(r, v, value, len);
}


/* a row's value into the request's pool: the table may be replaced while
 * the request still runs */
static ngx_int_t
ngx_http_ratelimit_pg_copy_value(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, u_char *value, size_t len)
{
    u_char  *p;

    p = ngx_pnalloc(r->pool, len + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(p, value, len);

    v->len = len;
    v->data = p;

    return NGX_OK;
}


/* ::ffff:a.b.c.d, without the alignment IN6_IS_ADDR_V4MAPPED needs */

static ngx_flag_t
ngx_http_ratelimit_pg_v4mapped(u_char *addr)
{
    ngx_uint_t  i;

    for (i = 0; i < 10; i++) {
        if (addr[i] != 0) {
            return 0;
        }
    }

    return addr[10] == 0xff && addr[11] == 0xff;
}


/* the key of addr (4 or 16 bytes, network order) masked to bits */

static size_t
ngx_http_ratelimit_pg_cidr_mask(u_char *key, ngx_uint_t family,
    u_char *addr, ngx_uint_t bits)
{
    size_t      alen, full;
    ngx_uint_t  rem;

    alen = family ? 16 : 4;
    full = bits / 8;
    rem = bits % 8;

    key[0] = (u_char) family;
    key[1] = (u_char) bits;

    ngx_memcpy(key + 2, addr, full);

    if (full < alen) {
        key[2 + full] = rem ? (u_char) (addr[full] & (0xffu << (8 - rem)))
                            : 0;
        ngx_memzero(key + 3 + full, alen - full - 1);
    }

    return 2 + alen;
}


/* the longest prefix of the copy that holds addr, its value copied out */

static ngx_flag_t
ngx_http_ratelimit_pg_cidr_lookup(ngx_http_ratelimit_pg_shctx_t *sh,
    ngx_uint_t family, u_char *addr, u_char *value, size_t *len)
{
    size_t                          klen;
    ngx_int_t                       bits;
    ngx_uint_t                      slot;
    ngx_http_ratelimit_pg_entry_t  *e;
    ngx_http_ratelimit_pg_table_t  *t;
    u_char                          key[NGX_HTTP_RATELIMIT_PG_CIDR_KEY_LEN];

    slot = ngx_http_ratelimit_pg_pin(sh);

    t = sh->tables[slot];
    e = NULL;

    for (bits = family ? 128 : 32; t && bits >= 0; bits--) {

        if (!t->lens[family][bits]) {
            continue;
        }

        klen = ngx_http_ratelimit_pg_cidr_mask(key, family, addr, bits);

        e = ngx_http_ratelimit_pg_find(t, ngx_crc32_short(key, klen), key,
                                       klen);
        if (e) {
            if (value) {
                ngx_memcpy(value, e->data + e->klen, e->vlen);
                *len = e->vlen;
            }

            break;
        }
    }

    (void) ngx_atomic_fetch_add(&sh->readers[slot], -1);

    return e != NULL;
}


/*
 * Pins the current slot: the caller reads its copy and then leaves with
 * ngx_atomic_fetch_add(&sh->readers[slot], -1).  If the slot stopped being
 * current meanwhile, its copy may be freed at any moment: leave it and pin
 * the new one.
 */

static ngx_uint_t
ngx_http_ratelimit_pg_pin(ngx_http_ratelimit_pg_shctx_t *sh)
{
    ngx_atomic_uint_t  slot;

    for ( ;; ) {
        slot = sh->current;

        (void) ngx_atomic_fetch_add(&sh->readers[slot], 1);

        if (sh->current == slot) {
            break;
        }

        (void) ngx_atomic_fetch_add(&sh->readers[slot], -1);
    }

    ngx_memory_barrier();

    return slot;
}


static ngx_http_ratelimit_pg_entry_t *
ngx_http_ratelimit_pg_find(ngx_http_ratelimit_pg_table_t *t, uint32_t hash,
    u_char *key, size_t len)
{
    uint32_t                        off;
    ngx_http_ratelimit_pg_entry_t  *e;

    for (off = t->buckets[hash & t->mask]; off; off = e->next) {
        e = (ngx_http_ratelimit_pg_entry_t *) (t->arena + off - 1);

        if (e->hash == hash
            && e->klen == len
            && ngx_memcmp(e->data, key, len) == 0)
        {
            return e;
        }
    }

    return NULL;
}


/* ratelimit_ddos's allow_pg=: is addr (AF_INET: 4 bytes, AF_INET6: 16,
 * network order) in the map */

ngx_flag_t
ngx_http_ratelimit_pg_map_match(ngx_http_ratelimit_pg_map_t *map,
    ngx_uint_t family, u_char *addr)
{
    return ngx_http_ratelimit_pg_cidr_lookup(map->sh,
                                             family == AF_INET ? 0 : 1,
                                             addr, NULL, NULL);
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
    ngx_pid_t                       owner;
    ngx_flag_t                      won, superseded;
    ngx_msec_t                      now;
    ngx_http_ratelimit_pg_shctx_t  *sh;

    sh = map->sh;

    /* another worker is looking: it is its turn */
    if (!ngx_shmtx_trylock(&map->shpool->mutex)) {
        return 0;
    }

    now = ngx_current_msec;
    owner = 0;
    won = 0;
    superseded = (sh->gen != map->gen);

    if (!superseded
        && (ngx_msec_int_t) (now - sh->next) >= 0
        && (sh->owner == 0
            || (ngx_msec_int_t) (now - sh->lease_until) >= 0))
    {
        owner = sh->owner;
        sh->owner = ngx_pid;
        sh->lease_until = now + map->timeout
                          + NGX_HTTP_RATELIMIT_PG_LEASE_SLACK;
        won = 1;
    }

    ngx_shmtx_unlock(&map->shpool->mutex);

    if (won && owner && owner != ngx_pid) {
        ngx_log_error(NGX_LOG_WARN, map->log, 0,
                      "ratelimit_pg_map \"%V\": the refresh by process %P "
                      "did not finish in time, taking over",
                      &map->name, owner);
    }

    if (superseded && !map->superseded) {
        /* normally seen only by a worker that is about to exit */
        map->superseded = 1;

        ngx_log_error(NGX_LOG_INFO, map->log, 0,
                      "ratelimit_pg_map \"%V\": the workers of a newer "
                      "configuration refresh the map, this one stops",
                      &map->name);
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

    int                               n;
    ngx_str_t                         msg;
    ngx_http_ratelimit_pg_install_t  *in;
    u_char                            buf[80];

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

    in = &map->in;
    ngx_memzero(in, sizeof(ngx_http_ratelimit_pg_install_t));

    in->res = res;
    in->rows = PQntuples(res);
    in->ld.returned = in->rows;
    in->since = ngx_current_msec;
    in->phase = NGX_HTTP_RATELIMIT_PG_MEASURE;

    in->arena = ngx_alloc((in->rows + 1) * sizeof(uint32_t), map->log);
    if (in->arena == NULL) {
        ngx_http_ratelimit_pg_install_free(map);
        ngx_str_set(&msg, "out of memory");
        ngx_http_ratelimit_pg_fail(map, &msg);
        return;
    }

    ngx_http_ratelimit_pg_measure(map);
}


/* installing a result: one bounded step per pass of the event loop */

static void
ngx_http_ratelimit_pg_step(ngx_event_t *ev)
{
    ngx_http_ratelimit_pg_map_t  *map = ev->data;

    if (map->in.res == NULL) {
        return;
    }

    if (ngx_exiting || ngx_quit || ngx_terminate) {
        /* the half-built copy is never current: the next install frees
         * it; exit_process releases the lease */
        ngx_http_ratelimit_pg_install_free(map);
        return;
    }

    switch (map->in.phase) {

    case NGX_HTTP_RATELIMIT_PG_MEASURE:
        ngx_http_ratelimit_pg_measure(map);
        break;

    case NGX_HTTP_RATELIMIT_PG_ALLOCATE:
        ngx_http_ratelimit_pg_allocate(map);
        break;

    default: /* NGX_HTTP_RATELIMIT_PG_FILL */
        ngx_http_ratelimit_pg_fill(map);
        break;
    }
}


static void
ngx_http_ratelimit_pg_next_pass(ngx_http_ratelimit_pg_map_t *map)
{
#if (nginx_version >= 1017005)
    /* run once the events pending now have been handled */
    ngx_post_event(&map->step, &ngx_posted_next_events);
#else
    ngx_add_timer(&map->step, 1);
#endif
}


/* the usable rows and the arena they need, without the lock */

static void
ngx_http_ratelimit_pg_measure(ngx_http_ratelimit_pg_map_t *map)
{
    int                               end;
    u_char                           *key;
    size_t                            klen, vlen, size;
    uint32_t                          before;
    ngx_http_ratelimit_pg_install_t  *in;
    u_char                            buf[NGX_HTTP_RATELIMIT_PG_CIDR_KEY_LEN];

    in = &map->in;
    end = ngx_min(in->rows, in->row + NGX_HTTP_RATELIMIT_PG_ROWS_PER_PASS);

    for ( /* void */ ; in->row < end; in->row++) {

        switch (ngx_http_ratelimit_pg_parse_row(map, in->row, buf, &key,
                                                &klen, &vlen))
        {
        case NGX_HTTP_RATELIMIT_PG_ROW_BAD_CIDR:
            if (in->ld.bad++ == 0) {
                in->bad_first = in->row + 1;
                ngx_crc32_init(in->bad_crc);
            }

            /* the set of bad keys, to warn of it once */
            ngx_crc32_update(&in->bad_crc,
                             (u_char *) PQgetvalue(in->res, in->row, 0),
                             PQgetlength(in->res, in->row, 0));
            ngx_crc32_update(&in->bad_crc, (u_char *) "\n", 1);
            continue;

        case NGX_HTTP_RATELIMIT_PG_ROW_NULL:
            in->ld.nulls++;
            continue;

        case NGX_HTTP_RATELIMIT_PG_ROW_EMPTY:
            in->ld.empty++;
            continue;

        case NGX_HTTP_RATELIMIT_PG_ROW_TOO_LONG:
            in->ld.too_long++;
            continue;

        default:
            break;
        }

        size = ngx_http_ratelimit_pg_entry_size(klen, vlen);
        before = in->usable ? in->arena[in->usable - 1] : 0;

        /* offsets are 32-bit: 4 GB of entries at most */
        if (in->full || size >= 0xffffffff - (size_t) before) {
            in->full = 1;
            in->ld.dropped++;
            continue;
        }

        in->arena[in->usable++] = before + (uint32_t) size;
    }

    if (in->row == in->rows) {
        in->phase = NGX_HTTP_RATELIMIT_PG_ALLOCATE;
        in->row = 0;
    }

    ngx_http_ratelimit_pg_next_pass(map);
}


/* the other slot's copy freed, the new one allocated and empty */

static void
ngx_http_ratelimit_pg_allocate(ngx_http_ratelimit_pg_map_t *map)
{
    ngx_str_t                         msg;
    ngx_uint_t                        slot, reclaimed;
    ngx_msec_t                        now;
    ngx_slab_pool_t                  *shpool;
    ngx_http_ratelimit_pg_table_t    *t;
    ngx_http_ratelimit_pg_shctx_t    *sh;
    ngx_http_ratelimit_pg_install_t  *in;

    sh = map->sh;
    shpool = map->shpool;
    in = &map->in;
    reclaimed = 0;

    ngx_shmtx_lock(&shpool->mutex);

    if (sh->gen != map->gen || sh->owner != ngx_pid) {
        ngx_shmtx_unlock(&shpool->mutex);
        ngx_http_ratelimit_pg_dropped(map);
        return;
    }

    now = ngx_current_msec;
    slot = sh->current ^ 1;

    if (sh->tables[slot]) {

        if (sh->readers[slot] != 0) {

            if (now - in->since < NGX_HTTP_RATELIMIT_PG_READER_MAX) {
                /* a reader is leaving the copy it pinned: wait for it */
                sh->lease_until = now + map->timeout
                                  + NGX_HTTP_RATELIMIT_PG_LEASE_SLACK;

                ngx_shmtx_unlock(&shpool->mutex);

                ngx_add_timer(&map->step, NGX_HTTP_RATELIMIT_PG_INSTALL_WAIT);
                return;
            }

            /* nobody reads for that long: a worker died inside */
            sh->readers[slot] = 0;
            reclaimed = 1;
        }

        ngx_slab_free_locked(shpool, sh->tables[slot]);
        sh->tables[slot] = NULL;
    }

    t = ngx_http_ratelimit_pg_table_alloc(shpool, in);

    if (t) {
        /* not current: no reader reaches it; if this worker dies while
         * filling it, the next install frees it from here */
        sh->tables[slot] = t;
        sh->lease_until = now + map->timeout
                          + NGX_HTTP_RATELIMIT_PG_LEASE_SLACK;
    }

    ngx_shmtx_unlock(&shpool->mutex);

    if (reclaimed) {
        ngx_log_error(NGX_LOG_WARN, map->log, 0,
                      "ratelimit_pg_map \"%V\": a reader of the previous "
                      "copy never left (a worker died?), copy freed",
                      &map->name);
    }

    if (t == NULL) {
        ngx_http_ratelimit_pg_install_free(map);
        ngx_str_set(&msg, "the zone has no room even for an empty map");
        ngx_http_ratelimit_pg_fail(map, &msg);
        return;
    }

    in->table = t;
    in->slot = slot;
    in->phase = NGX_HTTP_RATELIMIT_PG_FILL;

    ngx_http_ratelimit_pg_next_pass(map);
}


/*
 * One piece of the copy, under the lock: the lease is checked before
 * anything is written, so a worker that lost it (a reload, or a lease
 * that expired) never writes into a copy that another one may free.  The
 * last piece makes the copy current.
 */

static void
ngx_http_ratelimit_pg_fill(ngx_http_ratelimit_pg_map_t *map)
{
    int64_t                           t0, held;
    ngx_uint_t                        installed, finished, failures;
    ngx_msec_t                        now;
    ngx_slab_pool_t                  *shpool;
    ngx_http_ratelimit_pg_shctx_t    *sh;
    ngx_http_ratelimit_pg_install_t  *in;

    sh = map->sh;
    shpool = map->shpool;
    in = &map->in;
    failures = 0;

    t0 = ngx_edge_mono_usec();

    ngx_shmtx_lock(&shpool->mutex);

    if (sh->gen != map->gen || sh->owner != ngx_pid) {
        ngx_shmtx_unlock(&shpool->mutex);
        ngx_http_ratelimit_pg_dropped(map);
        return;
    }

    now = ngx_current_msec;
    sh->lease_until = now + map->timeout + NGX_HTTP_RATELIMIT_PG_LEASE_SLACK;

    installed = ngx_http_ratelimit_pg_fill_rows(map,
                                          NGX_HTTP_RATELIMIT_PG_ROWS_PER_PASS);

    finished = (in->row == in->rows || in->taken == in->n);

    if (finished) {
        /* the copy is complete before any reader can reach it */
        ngx_memory_barrier();

        sh->current = in->slot;

        failures = sh->failures;
        sh->failures = 0;
        ngx_edge_stats_set(map->stats, map->st_failing, 0);
        ngx_memzero(&sh->log_gate, sizeof(ngx_edge_log_gate_t));
        sh->rows = in->table->nentries;
        sh->loaded = 1;

        in->bad_new = (in->ld.bad && in->bad_crc != sh->bad_crc);
        sh->bad_crc = in->ld.bad ? in->bad_crc : 0;

        sh->next = now + map->refresh;
        sh->owner = 0;
    }

    ngx_shmtx_unlock(&shpool->mutex);

    held = ngx_edge_mono_usec() - t0;
    in->passes++;
    in->lock_max = ngx_max(in->lock_max, held);

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, map->log, 0,
                   "ratelimit_pg_map \"%V\": install pass %ui: %ui rows, "
                   "lock held %L us",
                   &map->name, in->passes, installed, held);

    (void) installed;    /* only the debug line reads it */

    if (!finished) {
        ngx_http_ratelimit_pg_next_pass(map);
        return;
    }

    ngx_http_ratelimit_pg_installed(map, failures);
}


/* at most max rows of the result looked at; returns how many went in */

static ngx_uint_t
ngx_http_ratelimit_pg_fill_rows(ngx_http_ratelimit_pg_map_t *map,
    ngx_uint_t max)
{
    u_char                           *key, *value;
    size_t                            klen, vlen;
    uint32_t                          hash, *head;
    ngx_uint_t                        i, installed;
    ngx_http_ratelimit_pg_entry_t    *e;
    ngx_http_ratelimit_pg_table_t    *t;
    ngx_http_ratelimit_pg_install_t  *in;
    u_char                            buf[NGX_HTTP_RATELIMIT_PG_CIDR_KEY_LEN];

    in = &map->in;
    t = in->table;
    installed = 0;

    for (i = 0; i < max && in->row < in->rows && in->taken < in->n; i++) {

        if (ngx_http_ratelimit_pg_parse_row(map, in->row++, buf, &key, &klen,
                                            &vlen)
            != NGX_HTTP_RATELIMIT_PG_ROW_OK)
        {
            continue;
        }

        in->taken++;

        value = (u_char *) PQgetvalue(in->res, in->row - 1, 1);

        hash = ngx_crc32_short(key, klen);
        head = &t->buckets[hash & t->mask];

        /* the first row wins */

        if (ngx_http_ratelimit_pg_find(t, hash, key, klen)) {
            in->ld.duplicates++;
            continue;
        }

        if (map->match == NGX_HTTP_RATELIMIT_PG_MATCH_CIDR) {
            /* the copy is not current yet: no reader sees this */
            t->lens[key[0]][key[1]] = 1;
        }

        e = (ngx_http_ratelimit_pg_entry_t *) (t->arena + in->used);

        e->hash = hash;
        e->klen = (u_char) klen;
        e->vlen = (u_char) vlen;
        ngx_memcpy(e->data, key, klen);
        ngx_memcpy(e->data + klen, value, vlen);

        e->next = *head;
        *head = in->used + 1;

        in->used += ngx_http_ratelimit_pg_entry_size(klen, vlen);
        t->nentries++;
        installed++;
    }

    return installed;
}


static void
ngx_http_ratelimit_pg_installed(ngx_http_ratelimit_pg_map_t *map,
    ngx_uint_t failures)
{
    ngx_http_ratelimit_pg_install_t  *in;

    in = &map->in;

    if (failures) {
        ngx_log_error(NGX_LOG_NOTICE, map->log, 0,
                      "ratelimit_pg_map \"%V\": loading from %V works again "
                      "after %ui failed attempts",
                      &map->name, &map->dsn.peer, failures);
    }

    /* the passes and the longest hold say what a large map costs the
     * workers: an operator needs them without a debug build */
    ngx_log_error(NGX_LOG_INFO, map->log, 0,
                  "ratelimit_pg_map \"%V\": loaded %ui rows from %V in %Mms "
                  "(%ui returned, %ui with NULL, %ui with an empty key, "
                  "%ui duplicate keys), installed in %ui passes, the lock "
                  "held %L us at most",
                  &map->name, (ngx_uint_t) in->table->nentries,
                  &map->dsn.peer, ngx_current_msec - map->started,
                  in->ld.returned, in->ld.nulls, in->ld.empty,
                  in->ld.duplicates, in->passes, in->lock_max);

    if (in->ld.too_long) {
        ngx_log_error(NGX_LOG_WARN, map->log, 0,
                      "ratelimit_pg_map \"%V\": %ui rows skipped, their key "
                      "or value is longer than %d bytes",
                      &map->name, in->ld.too_long,
                      NGX_HTTP_RATELIMIT_PG_MAX_LEN);
    }

    if (in->ld.dropped) {
        ngx_log_error(NGX_LOG_WARN, map->log, 0,
                      "ratelimit_pg_map \"%V\": %ui rows dropped, zone "
                      "\"%V\" is full (it must hold two copies of the map)",
                      &map->name, in->ld.dropped, &map->shm_zone->shm.name);
    }

    if (in->ld.bad) {
        ngx_http_ratelimit_pg_bad_rows(map);
    }

    ngx_http_ratelimit_pg_install_free(map);
    map->refreshing = 0;

    ngx_http_ratelimit_pg_schedule(map, map->refresh);
}


/* a reload gave the zone to new workers, or our lease expired and another
 * worker took over: theirs is the copy to install */

static void
ngx_http_ratelimit_pg_dropped(ngx_http_ratelimit_pg_map_t *map)
{
    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, map->log, 0,
                   "ratelimit_pg_map \"%V\": the zone changed hands, "
                   "result dropped", &map->name);

    ngx_http_ratelimit_pg_install_free(map);
    map->refreshing = 0;
}


static void
ngx_http_ratelimit_pg_install_free(ngx_http_ratelimit_pg_map_t *map)
{
    if (map->step.timer_set) {
        ngx_del_timer(&map->step);
    }

    if (map->step.posted) {
        ngx_delete_posted_event(&map->step);
    }

    if (map->in.res) {
        PQclear(map->in.res);
    }

    if (map->in.arena) {
        ngx_free(map->in.arena);
    }

    ngx_memzero(&map->in, sizeof(ngx_http_ratelimit_pg_install_t));
}


static void
ngx_http_ratelimit_pg_fail(ngx_http_ratelimit_pg_map_t *map, ngx_str_t *err)
{
    ngx_msec_t                      retry, interval;
    ngx_uint_t                      failures, rows, loaded, log, held;
    ngx_http_ratelimit_pg_shctx_t  *sh;

    sh = map->sh;
    retry = ngx_min(map->refresh, NGX_HTTP_RATELIMIT_PG_RETRY);
    interval = ngx_max(map->refresh, NGX_HTTP_RATELIMIT_PG_LOG_INTERVAL);

    failures = 0;
    rows = 0;
    loaded = 0;
    log = 0;

    ngx_shmtx_lock(&map->shpool->mutex);

    if (sh->gen == map->gen && sh->owner == ngx_pid) {
        sh->owner = 0;
        sh->next = ngx_current_msec + retry;

        failures = ++sh->failures;
        ngx_edge_stats_set(map->stats, map->st_failing, 1);
        rows = sh->rows;
        loaded = sh->loaded;

        /* one line per interval, whichever worker fails: the line says
         * how many failed in a row, which covers those held back */
        log = ngx_edge_log_gate_open(&sh->log_gate, interval, &held);
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


/* building a copy */

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


/* a row of this map's result: the key as stored (match=cidr: binary,
 * in buf) */

static ngx_http_ratelimit_pg_row_e
ngx_http_ratelimit_pg_parse_row(ngx_http_ratelimit_pg_map_t *map, int row,
    u_char *buf, u_char **key, size_t *klen, size_t *vlen)
{
    PGresult                     *res;
    ngx_str_t                     text;
    ngx_http_ratelimit_pg_row_e   rc;

    res = map->in.res;

    rc = ngx_http_ratelimit_pg_row(res, row, klen, vlen);

    if (map->match != NGX_HTTP_RATELIMIT_PG_MATCH_CIDR) {
        *key = (u_char *) PQgetvalue(res, row, 0);
        return rc;
    }

    if (rc == NGX_HTTP_RATELIMIT_PG_ROW_TOO_LONG
        && (size_t) PQgetlength(res, row, 0) > NGX_HTTP_RATELIMIT_PG_MAX_LEN)
    {
        /* no address is that long: a bad key, whatever the value */
        return NGX_HTTP_RATELIMIT_PG_ROW_BAD_CIDR;
    }

    if (rc != NGX_HTTP_RATELIMIT_PG_ROW_OK) {
        return rc;
    }

    text.data = (u_char *) PQgetvalue(res, row, 0);
    text.len = *klen;

    if (ngx_http_ratelimit_pg_cidr_key(&text, buf, klen) != NGX_OK) {
        return NGX_HTTP_RATELIMIT_PG_ROW_BAD_CIDR;
    }

    *key = buf;

    return NGX_HTTP_RATELIMIT_PG_ROW_OK;
}


/* "192.0.2.0/24", "2001:db8::/32", "192.0.2.7": the binary key, its host
 * bits cleared (as PostgreSQL's inet type allows them) */

static ngx_int_t
ngx_http_ratelimit_pg_cidr_key(ngx_str_t *text, u_char *key, size_t *klen)
{
    u_char      *addr, *mask, b;
    ngx_uint_t   family, bits, i, alen;
    ngx_cidr_t   cidr;

    if (ngx_ptocidr(text, &cidr) == NGX_ERROR) {
        return NGX_ERROR;
    }

    switch (cidr.family) {

#if (NGX_HAVE_INET6)
    case AF_INET6:
        family = 1;
        addr = cidr.u.in6.addr.s6_addr;
        mask = cidr.u.in6.mask.s6_addr;
        alen = 16;
        break;
#endif

    case AF_INET:
        family = 0;
        addr = (u_char *) &cidr.u.in.addr;
        mask = (u_char *) &cidr.u.in.mask;
        alen = 4;
        break;

    default:
        return NGX_ERROR;
    }

    /* ngx_ptocidr() makes contiguous masks */
    bits = 0;

    for (i = 0; i < alen; i++) {
        for (b = mask[i]; b & 0x80; b <<= 1) {
            bits++;
        }
    }

    if (family == 1 && bits >= 96 && ngx_http_ratelimit_pg_v4mapped(addr)) {
        family = 0;
        addr += 12;
        bits -= 96;
    }

    *klen = ngx_http_ratelimit_pg_cidr_mask(key, family, addr, bits);

    return NGX_OK;
}


/* one warning when the rows that are no address or CIDR change, an info
 * line at the other loads */

static void
ngx_http_ratelimit_pg_bad_rows(ngx_http_ratelimit_pg_map_t *map)
{
    u_char                           *p, *key, *end;
    size_t                            len;
    ngx_uint_t                        level;
    ngx_http_ratelimit_pg_install_t  *in;
    u_char                            shown[NGX_HTTP_RATELIMIT_PG_SHOWN_MAX * 4
                                            + 3];

    static u_char  hex[] = "0123456789abcdef";

    in = &map->in;

    key = (u_char *) PQgetvalue(in->res, in->bad_first - 1, 0);
    len = PQgetlength(in->res, in->bad_first - 1, 0);

    /* anything from the table: printable ASCII only in the log */

    end = key + ngx_min(len, NGX_HTTP_RATELIMIT_PG_SHOWN_MAX);

    for (p = shown; key < end; key++) {

        if (*key >= 0x20 && *key < 0x7f && *key != '"' && *key != '\\') {
            *p++ = *key;
            continue;
        }

        *p++ = '\\';
        *p++ = 'x';
        *p++ = hex[*key >> 4];
        *p++ = hex[*key & 0xf];
    }

    if (len > NGX_HTTP_RATELIMIT_PG_SHOWN_MAX) {
        p = ngx_cpymem(p, "...", 3);
    }

    level = in->bad_new ? NGX_LOG_WARN : NGX_LOG_INFO;

    ngx_log_error(level, map->log, 0,
                  "ratelimit_pg_map \"%V\": %ui rows skipped, their key is "
                  "not an address or CIDR, the first in row %d: \"%*s\"%s",
                  &map->name, in->ld.bad, in->bad_first,
                  (size_t) (p - shown), shown,
                  in->bad_new ? "" : " (as at the previous load)");
}


/* the size of a copy of the first n usable rows */

static size_t
ngx_http_ratelimit_pg_table_size(ngx_http_ratelimit_pg_install_t *in,
    ngx_uint_t n, uint32_t *nbuckets)
{
    uint32_t  nb;

    /* a load factor of at most 1 */
    for (nb = 8; nb < n; nb <<= 1) { /* void */ }

    *nbuckets = nb;

    return sizeof(ngx_http_ratelimit_pg_table_t) + nb * sizeof(uint32_t)
           + (n ? in->arena[n - 1] : 0);
}


/* an empty copy for as many of the usable rows as fit, under the lock:
 * in->n says how many */

static ngx_http_ratelimit_pg_table_t *
ngx_http_ratelimit_pg_table_alloc(ngx_slab_pool_t *shpool,
    ngx_http_ratelimit_pg_install_t *in)
{
    size_t                          size;
    uint32_t                        nb;
    ngx_uint_t                      n, lo, hi, mid;
    ngx_http_ratelimit_pg_table_t  *t;

    n = in->usable;

    size = ngx_http_ratelimit_pg_table_size(in, n, &nb);
    t = ngx_slab_alloc_locked(shpool, size);

    if (t == NULL) {
        /* the most rows that fit: lo fits (unless 0 does not), hi not */

        lo = 0;
        hi = n;

        while (hi - lo > 1) {
            mid = lo + (hi - lo) / 2;

            size = ngx_http_ratelimit_pg_table_size(in, mid, &nb);
            t = ngx_slab_alloc_locked(shpool, size);

            if (t) {
                ngx_slab_free_locked(shpool, t);
                lo = mid;

            } else {
                hi = mid;
            }
        }

        in->ld.dropped += n - lo;
        n = lo;

        size = ngx_http_ratelimit_pg_table_size(in, n, &nb);
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
    ngx_memzero(t->lens, sizeof(t->lens));

    in->n = n;

    return t;
}


/* worker life */

ngx_int_t
ngx_http_ratelimit_pg_init_process(ngx_cycle_t *cycle,
    ngx_http_ratelimit_main_conf_t *rmcf)
{
    ngx_uint_t                       i;
    ngx_http_ratelimit_pg_map_t    **maps, *map;
    ngx_http_ratelimit_pg_shctx_t   *sh;

    if (rmcf->pg_maps == NULL) {
        return NGX_OK;
    }

    maps = rmcf->pg_maps->elts;

    for (i = 0; i < rmcf->pg_maps->nelts; i++) {
        map = maps[i];
        sh = map->sh;

        map->log = cycle->log;

        ngx_edge_pg_init(&map->pg, &map->dsn, cycle->log);

        map->tick.handler = ngx_http_ratelimit_pg_tick;
        map->tick.data = map;
        map->tick.log = cycle->log;
        map->tick.cancelable = 1;

        map->step.handler = ngx_http_ratelimit_pg_step;
        map->step.data = map;
        map->step.log = cycle->log;
        map->step.cancelable = 1;

        /*
         * A worker of this configuration runs: the configuration was
         * accepted, and the refresh is its own from now on.  The workers
         * of the previous one stop refreshing; a newer one never gives it
         * back.  The refresh is due at once.
         */

        ngx_shmtx_lock(&map->shpool->mutex);

        if (map->gen > sh->gen) {
            sh->gen = map->gen;
            sh->next = 0;
            sh->owner = 0;
        }

        ngx_shmtx_unlock(&map->shpool->mutex);

        /* the first look as soon as the event loop runs */
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

        ngx_http_ratelimit_pg_install_free(map);

        /* PQfinish() and the nginx connection released: no socket left */
        ngx_edge_pg_close(&map->pg);

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

    if (omap || shm_zone->shm.exists) {
        /*
         * nginx -s reload with the zone unchanged: the copy keeps serving.
         * This configuration draws its generation, and takes the refresh
         * when its first worker starts: nginx may still reject it (a
         * "listen" that fails comes after the zones), and then the old
         * workers must go on refreshing.
         */
        map->shpool = omap ? omap->shpool
                           : (ngx_slab_pool_t *) shm_zone->shm.addr;
        map->sh = map->shpool->data;

        ngx_shmtx_lock(&map->shpool->mutex);
        map->gen = ++map->sh->gen_last;
        ngx_shmtx_unlock(&map->shpool->mutex);

        return NGX_OK;
    }

    map->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    map->sh = ngx_slab_calloc(map->shpool,
                              sizeof(ngx_http_ratelimit_pg_shctx_t));
    if (map->sh == NULL) {
        return NGX_ERROR;
    }

    map->shpool->data = map->sh;
    map->sh->gen = 1;
    map->sh->gen_last = 1;
    map->gen = 1;

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
    ngx_str_t                           pwfile, password, shown;
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
    ngx_str_null(&pwfile);
    ngx_str_null(&password);
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

        if (ngx_strncmp(value[i].data, "password_file=", 14) == 0) {
            pwfile.data = value[i].data + 14;
            pwfile.len = value[i].len - 14;

            if (pwfile.len == 0) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "empty \"password_file\" parameter");
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

        if (ngx_strncmp(value[i].data, "match=", 6) == 0) {

            if (ngx_strcmp(value[i].data + 6, "exact") == 0) {
                map->match = NGX_HTTP_RATELIMIT_PG_MATCH_EXACT;

            } else if (ngx_strcmp(value[i].data + 6, "cidr") == 0) {
                map->match = NGX_HTTP_RATELIMIT_PG_MATCH_CIDR;

            } else {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid \"match\" value \"%V\": "
                                   "\"exact\" or \"cidr\"", &value[i]);
                return NGX_CONF_ERROR;
            }

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

        /* a misspelt "dsn=" would show its password */
        if (ngx_edge_pg_redact(cf->temp_pool, NULL, &value[i], &shown)
            != NGX_OK)
        {
            return NGX_CONF_ERROR;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\"", &shown);
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

    if (pwfile.len
        && ngx_edge_conf_read_secret(cf, &pwfile,
                                     NGX_HTTP_RATELIMIT_PG_PASSWORD_MAX,
                                     &password)
           != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    if (ngx_edge_pg_parse_dsn(cf, &dsn, pwfile.len ? &password : NULL,
                              &map->dsn, &err)
        != NGX_OK)
    {
        if (password.len) {
            ngx_memzero(password.data, password.len);
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid \"dsn\" parameter: %V", &err);
        return NGX_CONF_ERROR;
    }

    /* the dsn has its copy: none left in the configuration's pool */
    if (password.len) {
        ngx_memzero(password.data, password.len);
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

    /* what the breaker's readiness check reads */
    map->stats = ngx_http_ratelimit_stats(cf, rmcf);
    if (map->stats == NULL) {
        return NGX_CONF_ERROR;
    }

    map->st_failing = ngx_edge_pg_register_stats(cf, map->stats,
                                                 "ratelimit", "map", &var);
    if (map->st_failing == NGX_EDGE_STATS_NONE) {
        return NGX_CONF_ERROR;
    }

    v = ngx_http_add_variable(cf, &var, 0);
    if (v == NULL) {
        return NGX_CONF_ERROR;
    }

    v->get_handler = (map->match == NGX_HTTP_RATELIMIT_PG_MATCH_CIDR)
                     ? ngx_http_ratelimit_pg_cidr_variable
                     : ngx_http_ratelimit_pg_variable;
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


/* ratelimit_ddos's allow_pg=: a map declared above, by its variable's
 * name, with or without its "$" */

ngx_http_ratelimit_pg_map_t *
ngx_http_ratelimit_pg_map_find(ngx_http_ratelimit_main_conf_t *rmcf,
    ngx_str_t *name)
{
    ngx_str_t                      n;
    ngx_uint_t                     i;
    ngx_http_ratelimit_pg_map_t  **maps;

    if (rmcf->pg_maps == NULL || name->len == 0) {
        return NULL;
    }

    n = *name;

    if (n.data[0] == '$') {
        n.data++;
        n.len--;
    }

    maps = rmcf->pg_maps->elts;

    for (i = 0; i < rmcf->pg_maps->nelts; i++) {
        if (maps[i]->name.len == n.len + 1
            && ngx_strncmp(maps[i]->name.data + 1, n.data, n.len) == 0)
        {
            return maps[i];
        }
    }

    return NULL;
}


ngx_flag_t
ngx_http_ratelimit_pg_map_is_cidr(ngx_http_ratelimit_pg_map_t *map)
{
    return map->match == NGX_HTTP_RATELIMIT_PG_MATCH_CIDR;
}
