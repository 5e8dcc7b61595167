/*
 * Shared-memory counters, gauges and histograms: the registry every module
 * fills at configuration time and the metrics module reads.
 *
 * A stats zone is sized from what was registered, while the configuration
 * is still being parsed: every registration updates the zone's size and a
 * CRC of the catalog.  When the previous cycle has a zone of that name with
 * the same catalog, the zone takes the old size and nginx hands the old
 * zone over on reload, values and all; otherwise the size differs and the
 * zone starts afresh, so old workers still writing with the old layout
 * never touch the new zone.
 */

#include "ngx_edge_stats.h"
#include "ngx_edge_utf8.h"


/* label room budgeted per run-time series (label strings in the slab) */
#define NGX_EDGE_STATS_LABEL_BUDGET  256

/* a freed bucket of the lookup table: probes go on past it */
#define NGX_EDGE_STATS_TOMB          0xffffffff

/* a series' last use is written at most this often (ms): a lookup then
 * rarely writes to a line that other workers read */
#define NGX_EDGE_STATS_TOUCH         256


/* the first bucket that can hold a value of each bit length (see below) */
#define NGX_EDGE_STATS_START_MAX     255


typedef struct {
    ngx_edge_stats_shfamily_t    sh;          /* cf->pool pointers */

    /*
     * Histograms: start[k] is the first bound >= 2^k (capped at 255), so
     * a value of highest bit k is above every bound before it and its
     * bucket search starts there: with bounds a few to a decade apart,
     * one or two comparisons instead of up to nbounds.
     */
    u_char                       start[64];
} ngx_edge_stats_cfamily_t;


struct ngx_edge_stats_s {
    ngx_str_t                    name;
    void                        *tag;
    ngx_shm_zone_t              *shm_zone;
    ngx_edge_stats_sh_t         *sh;          /* set by the zone init */

    /* this process's value slot in sh, computed on its first update:
     * valid while worker == ngx_worker (a forked worker recomputes it) */
    uint64_t                    *slot;
    ngx_uint_t                   worker;

    ngx_array_t                  families;    /* ngx_edge_stats_cfamily_t */
    ngx_array_t                  series;      /* ngx_edge_stats_series_t */

    ngx_uint_t                   nvalues;     /* static values */
    ngx_uint_t                   dyn_series;  /* run-time reserve */
    ngx_uint_t                   dyn_values;
    size_t                       catalog;     /* arrays and strings */
    ngx_uint_t                   nslots;
    uint32_t                     crc;         /* running, not finalized */
    uint32_t                     hash;
    ngx_msec_t                   idle;

    ngx_edge_stats_sh_t         *old_sh;      /* previous cycle's zone */
    size_t                       old_size;
};


static ngx_int_t ngx_edge_stats_update(ngx_conf_t *cf, ngx_edge_stats_t *st);
static size_t ngx_edge_stats_block_size(ngx_edge_stats_t *st,
    ngx_uint_t *capacity, ngx_uint_t *nbuckets, ngx_uint_t *stride);
static ngx_int_t ngx_edge_stats_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_int_t ngx_edge_stats_copy_str(u_char **p, ngx_str_t *dst,
    ngx_str_t *src);
static uint32_t ngx_edge_stats_value_hash(ngx_str_t *v);
static uint32_t ngx_edge_stats_tuple_hash(ngx_uint_t family,
    uint32_t *hashes, ngx_uint_t n);
static ngx_int_t ngx_edge_stats_insert(ngx_edge_stats_sh_t *sh,
    ngx_uint_t id);
static void ngx_edge_stats_free(ngx_edge_stats_sh_t *sh,
    ngx_edge_stats_shfamily_t *f, ngx_uint_t id);
static ngx_int_t ngx_edge_stats_reclaim(ngx_edge_stats_sh_t *sh,
    ngx_uint_t family);
static void ngx_edge_stats_rebuild(ngx_edge_stats_sh_t *sh);
static ngx_edge_stats_id_t ngx_edge_stats_add_series_internal(ngx_conf_t *cf,
    ngx_edge_stats_t *st, ngx_int_t family, ngx_str_t *values,
    ngx_uint_t overflow);


static ngx_str_t  ngx_edge_stats_overflow = ngx_string("__overflow__");


ngx_edge_stats_t *
ngx_edge_stats_create(ngx_conf_t *cf, const char *owner, void *tag)
{
    size_t                len;
    ngx_uint_t            i;
    ngx_list_part_t      *part;
    ngx_shm_zone_t       *zone;
    ngx_edge_stats_t     *st;
    ngx_edge_stats_sh_t  *osh;

    st = ngx_pcalloc(cf->pool, sizeof(ngx_edge_stats_t));
    if (st == NULL) {
        return NULL;
    }

    len = ngx_strlen(owner);

    st->name.len = sizeof(NGX_EDGE_STATS_PREFIX) - 1 + len;
    st->name.data = ngx_pnalloc(cf->pool, st->name.len);
    if (st->name.data == NULL) {
        return NULL;
    }

    ngx_sprintf(st->name.data, NGX_EDGE_STATS_PREFIX "%s", owner);

    if (ngx_array_init(&st->families, cf->pool, 4,
                       sizeof(ngx_edge_stats_cfamily_t))
        != NGX_OK
        || ngx_array_init(&st->series, cf->pool, 16,
                          sizeof(ngx_edge_stats_series_t))
           != NGX_OK)
    {
        return NULL;
    }

    st->tag = tag;
    st->worker = (ngx_uint_t) -1;

    /*
     * One slot per CPU (at most 64): workers beyond that share slots,
     * which atomic adds keep correct.  The count does not follow
     * worker_processes, so changing it keeps the counters on reload.
     */

    st->nslots = ngx_min(ngx_max(ngx_ncpu, 1), NGX_EDGE_STATS_MAX_SLOTS);

    ngx_crc32_init(st->crc);
    ngx_crc32_update(&st->crc, st->name.data, st->name.len);

    /* the previous cycle's zone of that name, mapped in this process */

    part = &cf->cycle->old_cycle->shared_memory.part;
    zone = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            zone = part->elts;
            i = 0;
        }

        if (zone[i].shm.name.len != st->name.len
            || ngx_strncmp(zone[i].shm.name.data, st->name.data,
                           st->name.len)
               != 0)
        {
            continue;
        }

        osh = ngx_edge_stats_zone(&zone[i]);

        if (osh) {
            st->old_sh = osh;
            st->old_size = zone[i].shm.size;
        }

        break;
    }

    return st;
}


ngx_uint_t
ngx_edge_stats_width(ngx_edge_stats_family_t *family)
{
    if (family->type == NGX_EDGE_STATS_HISTOGRAM) {
        /* one count per bound, +Inf, and the sum */
        return family->nbounds + 2;
    }

    return 1;
}


static ngx_int_t
ngx_edge_stats_dup(ngx_conf_t *cf, ngx_str_t *dst, const char *src)
{
    ngx_str_t  s;

    if (src == NULL) {
        ngx_str_null(dst);
        return NGX_OK;
    }

    s.data = (u_char *) src;
    s.len = ngx_strlen(src);

    dst->len = s.len;
    dst->data = ngx_pstrdup(cf->pool, &s);

    return (dst->data || s.len == 0) ? NGX_OK : NGX_ERROR;
}


static ngx_int_t
ngx_edge_stats_valid_name(ngx_str_t *name, ngx_uint_t metric)
{
    u_char      c;
    ngx_uint_t  i;

    if (name->len == 0) {
        return 0;
    }

    for (i = 0; i < name->len; i++) {
        c = name->data[i];

        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'
            || (metric && c == ':')
            || (i > 0 && c >= '0' && c <= '9'))
        {
            continue;
        }

        return 0;
    }

    return 1;
}


/*
 * A family registered again returns its index if the definition is the
 * same, NGX_ERROR (logged) if it differs, NGX_DECLINED if it is new.
 */

static ngx_int_t
ngx_edge_stats_find_family(ngx_conf_t *cf, ngx_edge_stats_t *st,
    ngx_edge_stats_family_t *family)
{
    size_t                      len;
    ngx_uint_t                  i, k;
    ngx_edge_stats_cfamily_t   *cfam;
    ngx_edge_stats_shfamily_t  *f;

    len = ngx_strlen(family->name);
    cfam = st->families.elts;

    for (i = 0; i < st->families.nelts; i++) {
        f = &cfam[i].sh;

        if (f->name.len != len
            || ngx_strncmp(f->name.data, family->name, len) != 0)
        {
            continue;
        }

        if (f->type != (ngx_uint_t) family->type
            || (f->flags & ~NGX_EDGE_STATS_DYNAMIC)
               != (family->flags & ~NGX_EDGE_STATS_DYNAMIC)
            || f->max_series != family->max_series
            || (f->type == NGX_EDGE_STATS_HISTOGRAM
                && (f->nbounds != family->nbounds
                    || ngx_memcmp(f->bounds, family->bounds,
                                  f->nbounds * sizeof(uint64_t))
                       != 0)))
        {
            goto conflict;
        }

        for (k = 0; k < f->nlabels; k++) {
            if (family->labels == NULL || family->labels[k] == NULL
                || ngx_strlen(family->labels[k]) != f->labels[k].len
                || ngx_strncmp(f->labels[k].data, family->labels[k],
                               f->labels[k].len)
                   != 0)
            {
                goto conflict;
            }
        }

        if (family->labels && family->labels[k]) {
            goto conflict;
        }

        return i;
    }

    return NGX_DECLINED;

conflict:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "metric family \"%s\" is registered twice with "
                       "different definitions", family->name);
    return NGX_ERROR;
}


ngx_int_t
ngx_edge_stats_add_family(ngx_conf_t *cf, ngx_edge_stats_t *st,
    ngx_edge_stats_family_t *family)
{
    size_t                      len;
    uint32_t                    num[6];
    ngx_int_t                   rc;
    ngx_uint_t                  i, k, n;
    ngx_str_t                   values[NGX_EDGE_STATS_MAX_LABELS];
    ngx_edge_stats_cfamily_t   *cfam;
    ngx_edge_stats_shfamily_t  *f;

    rc = ngx_edge_stats_find_family(cf, st, family);

    if (rc != NGX_DECLINED) {
        /* the same family again (e.g. once per zone of a module) */
        return rc;
    }

    cfam = ngx_array_push(&st->families);
    if (cfam == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(cfam, sizeof(ngx_edge_stats_cfamily_t));
    f = &cfam->sh;

    if (ngx_edge_stats_dup(cf, &f->name, family->name) != NGX_OK
        || ngx_edge_stats_dup(cf, &f->help, family->help) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (!ngx_edge_stats_valid_name(&f->name, 1)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid metric family name \"%V\"", &f->name);
        return NGX_ERROR;
    }

    if (family->type > NGX_EDGE_STATS_HISTOGRAM) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid type of metric family \"%V\"", &f->name);
        return NGX_ERROR;
    }

    f->type = family->type;
    f->flags = family->flags;
    f->max_series = family->max_series;
    f->overflow = NGX_EDGE_STATS_NONE;
    f->dropped = -1;

    if (f->max_series) {
        f->flags |= NGX_EDGE_STATS_DYNAMIC;
    }

    for (n = 0; family->labels && family->labels[n]; n++) { /* void */ }

    if (n > NGX_EDGE_STATS_MAX_LABELS) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "too many labels in metric family \"%V\"",
                           &f->name);
        return NGX_ERROR;
    }

    f->nlabels = n;
    len = f->name.len + f->help.len;

    if (n) {
        f->labels = ngx_palloc(cf->pool, n * sizeof(ngx_str_t));
        if (f->labels == NULL) {
            return NGX_ERROR;
        }

        for (i = 0; i < n; i++) {
            if (ngx_edge_stats_dup(cf, &f->labels[i], family->labels[i])
                != NGX_OK)
            {
                return NGX_ERROR;
            }

            if (!ngx_edge_stats_valid_name(&f->labels[i], 0)
                || (f->labels[i].len > 1
                    && f->labels[i].data[0] == '_'
                    && f->labels[i].data[1] == '_')
                || (f->type == NGX_EDGE_STATS_HISTOGRAM
                    && f->labels[i].len == 2
                    && ngx_strncmp(f->labels[i].data, "le", 2) == 0))
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid label name \"%V\" in metric "
                                   "family \"%V\"", &f->labels[i], &f->name);
                return NGX_ERROR;
            }

            len += f->labels[i].len;
        }
    }

    if (f->type == NGX_EDGE_STATS_HISTOGRAM) {
        if (family->nbounds == 0 || family->bounds == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "histogram \"%V\" has no buckets", &f->name);
            return NGX_ERROR;
        }

        for (i = 1; i < family->nbounds; i++) {
            if (family->bounds[i] <= family->bounds[i - 1]) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "buckets of histogram \"%V\" are not "
                                   "ascending", &f->name);
                return NGX_ERROR;
            }
        }

        f->nbounds = family->nbounds;
        f->bounds = ngx_palloc(cf->pool, f->nbounds * sizeof(uint64_t));
        if (f->bounds == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(f->bounds, family->bounds, f->nbounds * sizeof(uint64_t));

        for (i = 0, k = 0; k < 64; k++) {
            while (i < f->nbounds && f->bounds[i] < ((uint64_t) 1 << k)) {
                i++;
            }

            cfam->start[k] = (u_char) ngx_min(i, NGX_EDGE_STATS_START_MAX);
        }
    }

    f->scale = family->scale ? family->scale : 1;
    f->width = ngx_edge_stats_width(family);

    st->catalog += len + n * sizeof(ngx_str_t) + f->nbounds * sizeof(uint64_t)
                   + 16;

    /* everything the zone's layout depends on goes into its CRC */

    ngx_crc32_update(&st->crc, f->name.data, f->name.len);
    ngx_crc32_update(&st->crc, (u_char *) "", 1);
    ngx_crc32_update(&st->crc, f->help.data, f->help.len);

    num[0] = (uint32_t) f->type;
    num[1] = (uint32_t) f->flags;
    num[2] = (uint32_t) f->nlabels;
    num[3] = (uint32_t) f->nbounds;
    num[4] = (uint32_t) f->scale;
    num[5] = (uint32_t) f->max_series;
    ngx_crc32_update(&st->crc, (u_char *) num, sizeof(num));

    for (i = 0; i < n; i++) {
        ngx_crc32_update(&st->crc, f->labels[i].data, f->labels[i].len);
        ngx_crc32_update(&st->crc, (u_char *) "", 1);
    }

    if (f->nbounds) {
        ngx_crc32_update(&st->crc, (u_char *) f->bounds,
                         f->nbounds * sizeof(uint64_t));
    }

    if (f->flags & NGX_EDGE_STATS_DYNAMIC) {

        /* the dropped counter, and the series that takes what does not fit */

        f->dropped = st->nvalues++;

        for (i = 0; i < n; i++) {
            values[i] = ngx_edge_stats_overflow;
        }

        f->overflow = ngx_edge_stats_add_series_internal(cf, st,
                                                         st->families.nelts
                                                         - 1, values, 1);
        if (f->overflow == NGX_EDGE_STATS_NONE) {
            return NGX_ERROR;
        }

        if (f->max_series) {
            st->dyn_series += f->max_series;
            st->dyn_values += f->max_series * f->width;
        }
    }

    if (ngx_edge_stats_update(cf, st) != NGX_OK) {
        return NGX_ERROR;
    }

    return st->families.nelts - 1;
}


ngx_edge_stats_id_t
ngx_edge_stats_add_series(ngx_conf_t *cf, ngx_edge_stats_t *st,
    ngx_int_t family, ngx_str_t *values)
{
    ngx_edge_stats_id_t  id;

    id = ngx_edge_stats_add_series_internal(cf, st, family, values, 0);

    if (id == NGX_EDGE_STATS_NONE) {
        return NGX_EDGE_STATS_NONE;
    }

    if (ngx_edge_stats_update(cf, st) != NGX_OK) {
        return NGX_EDGE_STATS_NONE;
    }

    return id;
}


static ngx_edge_stats_id_t
ngx_edge_stats_add_series_internal(ngx_conf_t *cf, ngx_edge_stats_t *st,
    ngx_int_t family, ngx_str_t *values, ngx_uint_t overflow)
{
    u_char                     *buf;
    size_t                      len;
    uint32_t                    num[2], hashes[NGX_EDGE_STATS_MAX_LABELS];
    ngx_uint_t                  i, k, n;
    ngx_str_t                   vals[NGX_EDGE_STATS_MAX_LABELS];
    ngx_edge_stats_series_t    *s;
    ngx_edge_stats_cfamily_t   *cfam;
    ngx_edge_stats_shfamily_t  *f;

    if (family < 0 || (ngx_uint_t) family >= st->families.nelts) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "no metric family %i in \"%V\"", family, &st->name);
        return NGX_EDGE_STATS_NONE;
    }

    cfam = st->families.elts;
    f = &cfam[family].sh;
    n = f->nlabels;

    /* the values as they are stored: valid UTF-8, bounded */

    for (k = 0; k < n; k++) {
        buf = ngx_pnalloc(cf->pool, NGX_EDGE_STATS_VALUE_MAX);
        if (buf == NULL) {
            return NGX_EDGE_STATS_NONE;
        }

        vals[k] = values[k];
        hashes[k] = ngx_edge_stats_value(&vals[k], buf);
    }

    /* the same family and values: the same series */

    s = st->series.elts;

    for (i = 0; !overflow && i < st->series.nelts; i++) {
        if (s[i].family != (uint32_t) family || s[i].overflow) {
            continue;
        }

        for (k = 0; k < n; k++) {
            if (vals[k].len != s[i].values[k].len
                || ngx_strncmp(vals[k].data, s[i].values[k].data,
                               vals[k].len)
                   != 0)
            {
                break;
            }
        }

        if (k == n) {
            return i;
        }
    }

    s = ngx_array_push(&st->series);
    if (s == NULL) {
        return NGX_EDGE_STATS_NONE;
    }

    ngx_memzero(s, sizeof(ngx_edge_stats_series_t));

    s->family = (uint32_t) family;
    s->off = (uint32_t) st->nvalues;
    s->overflow = (uint32_t) overflow;
    s->values = NULL;

    len = 0;

    if (n) {
        s->values = ngx_palloc(cf->pool, n * sizeof(ngx_str_t));
        if (s->values == NULL) {
            return NGX_EDGE_STATS_NONE;
        }

        for (k = 0; k < n; k++) {
            s->values[k] = vals[k];
            len += vals[k].len;
        }
    }

    s->hash = ngx_edge_stats_tuple_hash(family, hashes, n);

    st->nvalues += f->width;
    st->catalog += len + n * sizeof(ngx_str_t) + 16;

    num[0] = (uint32_t) family;
    num[1] = (uint32_t) overflow;
    ngx_crc32_update(&st->crc, (u_char *) num, sizeof(num));

    for (k = 0; k < n; k++) {
        ngx_crc32_update(&st->crc, s->values[k].data, s->values[k].len);
        ngx_crc32_update(&st->crc, (u_char *) "", 1);
    }

    return st->series.nelts - 1;
}


void
ngx_edge_stats_set_idle(ngx_edge_stats_t *st, ngx_msec_t msec)
{
    st->idle = msec;
}


ngx_int_t
ngx_edge_stats_reserve(ngx_conf_t *cf, ngx_edge_stats_t *st,
    ngx_uint_t nseries, ngx_uint_t nvalues)
{
    st->dyn_series += nseries;
    st->dyn_values += nvalues;

    return ngx_edge_stats_update(cf, st);
}


static size_t
ngx_edge_stats_block_size(ngx_edge_stats_t *st, ngx_uint_t *capacity,
    ngx_uint_t *nbuckets, ngx_uint_t *stride)
{
    size_t      size;
    ngx_uint_t  n;

    *capacity = st->series.nelts + st->dyn_series;

    for (n = 16; n < 2 * *capacity; n <<= 1) { /* void */ }

    *nbuckets = n;

    /* a slot is a whole number of 64-byte cache lines */
    *stride = ngx_align(st->nvalues + st->dyn_values, 8);

    if (*stride == 0) {
        *stride = 8;
    }

    size = ngx_align(sizeof(ngx_edge_stats_sh_t), 8)
           + st->families.nelts * sizeof(ngx_edge_stats_shfamily_t)
           + *capacity * sizeof(ngx_edge_stats_series_t)
           + *nbuckets * sizeof(uint32_t)
           + st->catalog
           + 64
           + st->nslots * *stride * sizeof(uint64_t);

    return size;
}


static ngx_int_t
ngx_edge_stats_update(ngx_conf_t *cf, ngx_edge_stats_t *st)
{
    size_t       size, pages;
    uint32_t     crc, tail[4];
    ngx_uint_t   capacity, nbuckets, stride;

    size = ngx_edge_stats_block_size(st, &capacity, &nbuckets, &stride);

    /* the block, label strings of run-time series, slab bookkeeping */

    pages = (size + ngx_pagesize - 1) / ngx_pagesize;

    if (st->dyn_series) {
        pages += (st->dyn_series * NGX_EDGE_STATS_LABEL_BUDGET
                  + ngx_pagesize - 1) / ngx_pagesize
                 + 8;
    }

    pages += 4;

    size = pages * (ngx_pagesize + sizeof(ngx_slab_page_t))
           + sizeof(ngx_slab_pool_t)
           + 16 * (sizeof(ngx_slab_page_t) + sizeof(ngx_slab_stat_t));

    size = ngx_align(size, ngx_pagesize);
    size = ngx_max(size, 8 * ngx_pagesize);

    tail[0] = NGX_EDGE_STATS_LAYOUT;
    tail[1] = (uint32_t) st->nslots;
    tail[2] = (uint32_t) st->dyn_series;
    tail[3] = (uint32_t) st->dyn_values;

    crc = st->crc;
    ngx_crc32_update(&crc, (u_char *) tail, sizeof(tail));
    ngx_crc32_final(crc);

    st->hash = crc;

    /*
     * nginx reuses a zone on reload when name, tag and size match.  The
     * same catalog takes the old size, so the values are kept; another
     * catalog that happens to need the same size gets one page more, so
     * nginx creates a fresh zone and frees the old one once its workers
     * are gone.  (noreuse cannot be used for this: nginx also reads it on
     * the old zone when freeing, and would unmap a zone it just reused.)
     */

    if (st->old_sh) {
        if (st->old_sh->hash == st->hash) {
            size = ngx_max(size, st->old_size);

        } else if (st->old_size == size) {
            size += ngx_pagesize;
        }
    }

    if (st->shm_zone == NULL) {
        st->shm_zone = ngx_shared_memory_add(cf, &st->name, size, st->tag);
        if (st->shm_zone == NULL) {
            return NGX_ERROR;
        }

        if (st->shm_zone->data) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "stats zone \"%V\" is already registered",
                               &st->name);
            return NGX_ERROR;
        }

        st->shm_zone->init = ngx_edge_stats_init_zone;
        st->shm_zone->data = st;
    }

    st->shm_zone->shm.size = size;

    return NGX_OK;
}


static ngx_int_t
ngx_edge_stats_copy_str(u_char **p, ngx_str_t *dst, ngx_str_t *src)
{
    dst->len = src->len;
    dst->data = *p;
    *p = ngx_cpymem(*p, src->data, src->len);

    return NGX_OK;
}


static ngx_int_t
ngx_edge_stats_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    u_char                     *p, *block;
    size_t                      size, len;
    ngx_uint_t                  i, k, capacity, nbuckets, stride;
    ngx_slab_pool_t            *shpool;
    ngx_edge_stats_t           *st;
    ngx_edge_stats_sh_t        *sh;
    ngx_edge_stats_series_t    *s, *cs;
    ngx_edge_stats_cfamily_t   *cfam;
    ngx_edge_stats_shfamily_t  *f;

    st = shm_zone->data;
    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (data) {
        sh = ngx_edge_stats_zone(shm_zone);

        if (sh && sh->hash == st->hash) {
            /* nginx -s reload with the same catalog: keep the values */
            __atomic_store_n(&sh->idle, st->idle, __ATOMIC_RELAXED);
            st->sh = sh;
            return NGX_OK;
        }

        ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                      "stats zone \"%V\" cannot be reused", &st->name);
        return NGX_ERROR;
    }

    if (shm_zone->shm.exists) {
        st->sh = shpool->data;
        return NGX_OK;
    }

    size = ngx_edge_stats_block_size(st, &capacity, &nbuckets, &stride);

    block = ngx_slab_calloc(shpool, size);
    if (block == NULL) {
        return NGX_ERROR;
    }

    p = block;

    sh = (ngx_edge_stats_sh_t *) p;
    p += ngx_align(sizeof(ngx_edge_stats_sh_t), 8);

    sh->families = (ngx_edge_stats_shfamily_t *) p;
    p += st->families.nelts * sizeof(ngx_edge_stats_shfamily_t);

    sh->series = (ngx_edge_stats_series_t *) p;
    p += capacity * sizeof(ngx_edge_stats_series_t);

    sh->buckets = (uint32_t *) p;
    p += nbuckets * sizeof(uint32_t);

    /* arrays first (aligned), then strings */

    cfam = st->families.elts;

    for (i = 0; i < st->families.nelts; i++) {
        f = &sh->families[i];
        *f = cfam[i].sh;

        p = ngx_align_ptr(p, 8);
        f->labels = (ngx_str_t *) p;
        p += f->nlabels * sizeof(ngx_str_t);

        f->bounds = (uint64_t *) p;
        p += f->nbounds * sizeof(uint64_t);

        if (f->nbounds) {
            ngx_memcpy(f->bounds, cfam[i].sh.bounds,
                       f->nbounds * sizeof(uint64_t));
        }
    }

    cs = st->series.elts;

    for (i = 0; i < st->series.nelts; i++) {
        s = &sh->series[i];
        *s = cs[i];

        p = ngx_align_ptr(p, 8);
        s->values = (ngx_str_t *) p;
        p += sh->families[s->family].nlabels * sizeof(ngx_str_t);
    }

    for (i = 0; i < st->families.nelts; i++) {
        f = &sh->families[i];

        ngx_edge_stats_copy_str(&p, &f->name, &cfam[i].sh.name);
        ngx_edge_stats_copy_str(&p, &f->help, &cfam[i].sh.help);

        for (k = 0; k < f->nlabels; k++) {
            ngx_edge_stats_copy_str(&p, &f->labels[k], &cfam[i].sh.labels[k]);
        }
    }

    for (i = 0; i < st->series.nelts; i++) {
        s = &sh->series[i];

        for (k = 0; k < sh->families[s->family].nlabels; k++) {
            ngx_edge_stats_copy_str(&p, &s->values[k], &cs[i].values[k]);
        }
    }

    sh->values = (uint64_t *) ngx_align_ptr(p, 64);

    if ((u_char *) (sh->values + st->nslots * stride) > block + size) {
        ngx_log_error(NGX_LOG_ALERT, shm_zone->shm.log, 0,
                      "stats zone \"%V\": layout overflows its block",
                      &st->name);
        return NGX_ERROR;
    }

    sh->magic = NGX_EDGE_STATS_MAGIC;
    sh->layout = NGX_EDGE_STATS_LAYOUT;
    sh->hash = st->hash;
    sh->nslots = (uint32_t) st->nslots;
    sh->start_time = ngx_time();
    sh->nfamilies = st->families.nelts;
    sh->nstatic = st->series.nelts;
    sh->capacity = capacity;
    sh->nseries = st->series.nelts;
    sh->nbuckets = nbuckets;
    sh->nvalues = st->nvalues + st->dyn_values;
    sh->used = st->nvalues;
    sh->stride = stride;
    sh->idle = st->idle;
    sh->start = (u_char *) shpool;
    sh->end = (u_char *) shpool + shm_zone->shm.size;

    for (i = 0; i < sh->nstatic; i++) {
        if (!sh->series[i].overflow) {
            (void) ngx_edge_stats_insert(sh, i);
        }
    }

    len = sizeof(" in stats zone \"\"") + shm_zone->shm.name.len;

    shpool->log_ctx = ngx_slab_alloc(shpool, len);
    if (shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(shpool->log_ctx, " in stats zone \"%V\"%Z",
                &shm_zone->shm.name);

    shpool->log_nomem = 0;
    shpool->data = sh;

    st->sh = sh;

    return NGX_OK;
}


uint32_t
ngx_edge_stats_value(ngx_str_t *v, u_char *buf)
{
    u_char    *p, *last;
    size_t     len, valid, bad;
    uint32_t   h;

    /*
     * The stored form: valid UTF-8 of at most VALUE_MAX bytes, cut on a
     * character boundary.  Valid values (nearly all) are not copied.
     * ASCII, the usual case, is checked and hashed in one pass.
     */

    len = ngx_min(v->len, NGX_EDGE_STATS_VALUE_MAX);
    h = 2166136261u ^ (uint32_t) len;

    for (p = v->data, last = p + len; p < last; p++) {
        if (*p & 0x80) {
            break;
        }

        h ^= *p;
        h *= 16777619u;
    }

    if (p == last) {
        v->len = len;
        return h;
    }

    valid = ngx_edge_utf8_valid_prefix(v->data, len);

    if (valid < len
        && buf != NULL
        && !(v->len > NGX_EDGE_STATS_VALUE_MAX
             && ngx_edge_utf8_char(v->data + valid, v->len - valid, &bad)))
    {
        /* ill-formed: the copy has U+FFFD for each bad subpart */
        v->len = ngx_edge_utf8_sanitize(buf, NGX_EDGE_STATS_VALUE_MAX,
                                        v->data, v->len);
        v->data = buf;

    } else {
        /* valid, or a valid character crossing the limit, or no buf:
         * cut before what does not fit */
        v->len = valid;
    }

    return ngx_edge_stats_value_hash(v);
}


static uint32_t
ngx_edge_stats_value_hash(ngx_str_t *v)
{
    uint32_t  h;
    u_char   *p, *last;

    /* FNV-1a, seeded with the length */

    h = 2166136261u ^ (uint32_t) v->len;

    for (p = v->data, last = p + v->len; p < last; p++) {
        h ^= *p;
        h *= 16777619u;
    }

    return h;
}


/* the series' hash from its family and its values' hashes, in order */

static uint32_t
ngx_edge_stats_tuple_hash(ngx_uint_t family, uint32_t *hashes, ngx_uint_t n)
{
    uint32_t    h;
    ngx_uint_t  i;

    h = 0x9e3779b9u ^ (uint32_t) family;

    for (i = 0; i < n; i++) {
        h = (h ^ hashes[i]) * 16777619u;
    }

    /* murmur3's finalizer: every input bit reaches the low bits */

    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;

    return h;
}


/* under the zone's mutex, or before any worker runs */

static ngx_int_t
ngx_edge_stats_insert(ngx_edge_stats_sh_t *sh, ngx_uint_t id)
{
    ngx_uint_t  i, mask;

    mask = sh->nbuckets - 1;

    for (i = sh->series[id].hash & mask;
         sh->buckets[i] != 0 && sh->buckets[i] != NGX_EDGE_STATS_TOMB;
         i = (i + 1) & mask)
    {
        /* void */
    }

    if (sh->buckets[i] == NGX_EDGE_STATS_TOMB) {
        sh->tombs--;
    }

    __atomic_store_n(&sh->buckets[i], (uint32_t) id + 1, __ATOMIC_RELEASE);

    return NGX_OK;
}


/*
 * This process's value slot, from the worker number (at most 64 slots:
 * workers beyond nslots share one).  The division is done once per
 * process: st->sh is set once, before the fork, and a forked worker has
 * another ngx_worker than the one the slot was computed for.
 *
 * The adds stay atomic read-modify-writes even when this worker is the
 * only one of its number: on reload with an unchanged catalog the zone is
 * kept, and the old workers, shutting down gracefully, go on adding to
 * the slots of their own numbers, which are those of the new workers.
 */

static ngx_int_t
ngx_edge_stats_own_slot(ngx_edge_stats_t *st)
{
    ngx_edge_stats_sh_t  *sh;

    sh = st->sh;

    if (sh == NULL) {
        return NGX_DECLINED;
    }

    st->slot = sh->values + (ngx_worker % sh->nslots) * sh->stride;
    st->worker = ngx_worker;

    return NGX_OK;
}


/* st->sh and st->slot are valid after it */
#define ngx_edge_stats_ready(st)                                              \
    ((st)->worker == ngx_worker || ngx_edge_stats_own_slot(st) == NGX_OK)


void
ngx_edge_stats_add(ngx_edge_stats_t *st, ngx_edge_stats_id_t id,
    int64_t delta)
{
    ngx_edge_stats_sh_t  *sh;

    if (st == NULL || id < 0 || !ngx_edge_stats_ready(st)) {
        return;
    }

    sh = st->sh;

    if ((ngx_uint_t) id >= __atomic_load_n(&sh->nseries, __ATOMIC_RELAXED)) {
        return;
    }

    __atomic_fetch_add(st->slot + sh->series[id].off, (uint64_t) delta,
                       __ATOMIC_RELAXED);
}


void
ngx_edge_stats_set(ngx_edge_stats_t *st, ngx_edge_stats_id_t id,
    int64_t value)
{
    int64_t               sum;
    ngx_edge_stats_sh_t  *sh;

    if (st == NULL || id < 0 || !ngx_edge_stats_ready(st)) {
        return;
    }

    sh = st->sh;

    if ((ngx_uint_t) id >= __atomic_load_n(&sh->nseries, __ATOMIC_RELAXED)) {
        return;
    }

    /* the other slots hold what other workers set earlier: this worker's
     * slot takes the difference */
    sum = ngx_edge_stats_read(sh, &sh->series[id], 0);

    __atomic_fetch_add(st->slot + sh->series[id].off,
                       (uint64_t) (value - sum), __ATOMIC_RELAXED);
}


void
ngx_edge_stats_observe(ngx_edge_stats_t *st, ngx_edge_stats_id_t id,
    uint64_t value)
{
    uint64_t                  *p, *bounds;
    ngx_uint_t                 i, n;
    ngx_edge_stats_sh_t       *sh;
    ngx_edge_stats_series_t   *s;
    ngx_edge_stats_cfamily_t  *cf;

    if (st == NULL || id < 0 || !ngx_edge_stats_ready(st)) {
        return;
    }

    sh = st->sh;

    if ((ngx_uint_t) id >= __atomic_load_n(&sh->nseries, __ATOMIC_RELAXED)) {
        return;
    }

    /* the family's definition from this process's copy of the catalog
     * (the zone's is the same: a zone is adopted only with its catalog) */

    s = &sh->series[id];
    cf = (ngx_edge_stats_cfamily_t *) st->families.elts
         + __atomic_load_n(&s->family, __ATOMIC_RELAXED);

    if (cf->sh.type != NGX_EDGE_STATS_HISTOGRAM) {
        return;
    }

    bounds = cf->sh.bounds;
    n = cf->sh.nbounds;
    i = 0;

    if (value > bounds[0]) {
        /* value >= 1: start past the bounds below its highest bit */
        for (i = cf->start[63 - __builtin_clzll(value)];
             i < n && value > bounds[i];
             i++)
        { /* void */ }
    }

    p = st->slot + s->off;

    __atomic_fetch_add(p + i, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(p + n + 1, value, __ATOMIC_RELAXED);
}


/* where the handles of nothing point (process memory): a counter, or a
 * histogram of no bounds (its +Inf bucket and its sum) */
static uint64_t  ngx_edge_stats_sink[2];
static uint64_t  ngx_edge_stats_sink_bound = (uint64_t) -1;
static u_char    ngx_edge_stats_sink_start[64];


static uint64_t *
ngx_edge_stats_static_values(ngx_edge_stats_t *st, ngx_edge_stats_id_t id)
{
    ngx_edge_stats_sh_t  *sh;

    if (st == NULL || id < 0 || !ngx_edge_stats_ready(st)) {
        return NULL;
    }

    sh = st->sh;

    if ((ngx_uint_t) id >= sh->nstatic
        || (ngx_uint_t) id >= __atomic_load_n(&sh->nseries, __ATOMIC_RELAXED))
    {
        /* a run-time series may be freed and its values reused */
        return NULL;
    }

    return st->slot + sh->series[id].off;
}


uint64_t *
ngx_edge_stats_ref(ngx_edge_stats_t *st, ngx_edge_stats_id_t id)
{
    uint64_t  *values;

    values = ngx_edge_stats_static_values(st, id);

    return values ? values : ngx_edge_stats_sink;
}


void
ngx_edge_stats_hist_ref(ngx_edge_stats_t *st, ngx_edge_stats_id_t id,
    ngx_edge_stats_hist_ref_t *h)
{
    ngx_edge_stats_series_t   *s;
    ngx_edge_stats_cfamily_t  *cf;

    h->values = ngx_edge_stats_sink;
    h->bounds = &ngx_edge_stats_sink_bound;
    h->start = ngx_edge_stats_sink_start;
    h->nbounds = 0;

    if (ngx_edge_stats_static_values(st, id) == NULL) {
        return;
    }

    s = &st->sh->series[id];
    cf = (ngx_edge_stats_cfamily_t *) st->families.elts + s->family;

    if (cf->sh.type != NGX_EDGE_STATS_HISTOGRAM) {
        return;
    }

    h->values = st->slot + s->off;

    h->bounds = cf->sh.bounds;
    h->nbounds = cf->sh.nbounds;
    h->start = cf->start;
}


/*
 * Whether series s is the one of (family, hash, values).  Lock-free: a
 * run-time series may be freed and reused while it is read, so its
 * generation is read before and after, and its label pointers are
 * checked to lie in the zone before they are followed.
 */

static ngx_inline ngx_int_t
ngx_edge_stats_match(ngx_edge_stats_sh_t *sh, ngx_edge_stats_series_t *s,
    ngx_int_t family, uint32_t hash, ngx_str_t *values, ngx_uint_t n)
{
    u_char      *p;
    uint32_t     gen;
    ngx_str_t   *sv;
    ngx_uint_t   k;

    gen = __atomic_load_n(&s->gen, __ATOMIC_ACQUIRE);

    if ((gen & 1)
        || __atomic_load_n(&s->hash, __ATOMIC_RELAXED) != hash
        || __atomic_load_n(&s->family, __ATOMIC_RELAXED) != (uint32_t) family
        || s->overflow)
    {
        return 0;
    }

    sv = __atomic_load_n(&s->values, __ATOMIC_RELAXED);

    /* a freed and reused series may be read half-written: pointers are
     * followed only inside the zone (one unsigned comparison each) */

    if (s->dynamic
        && n
        && (size_t) ((u_char *) sv - sh->start)
           > (size_t) (sh->end - sh->start) - n * sizeof(ngx_str_t))
    {
        return 0;
    }

    for (k = 0; k < n; k++) {
        p = sv[k].data;

        if (sv[k].len != values[k].len) {
            return 0;
        }

        if (s->dynamic
            && (size_t) (p - sh->start)
               > (size_t) (sh->end - sh->start) - values[k].len)
        {
            return 0;
        }

        if (ngx_memcmp(p, values[k].data, values[k].len) != 0) {
            return 0;
        }
    }

    __atomic_thread_fence(__ATOMIC_ACQUIRE);

    return __atomic_load_n(&s->gen, __ATOMIC_RELAXED) == gen;
}


/* the series was used now: written at most every TOUCH ms */

static ngx_inline void
ngx_edge_stats_touch(ngx_edge_stats_series_t *s)
{
    uint32_t  now;

    now = (uint32_t) ngx_current_msec;

    if (s->dynamic
        && now - __atomic_load_n(&s->last, __ATOMIC_RELAXED)
           >= NGX_EDGE_STATS_TOUCH)
    {
        __atomic_store_n(&s->last, now, __ATOMIC_RELAXED);
    }
}


ngx_edge_stats_id_t
ngx_edge_stats_lookup(ngx_edge_stats_t *st, ngx_int_t family,
    ngx_str_t *values, ngx_uint_t *overflow)
{
    u_char      buf[NGX_EDGE_STATS_MAX_LABELS][NGX_EDGE_STATS_VALUE_MAX];
    uint32_t    hashes[NGX_EDGE_STATS_MAX_LABELS];
    ngx_str_t   vals[NGX_EDGE_STATS_MAX_LABELS];
    ngx_uint_t  k;

    if (overflow) {
        *overflow = 0;
    }

    if (st == NULL || st->sh == NULL || family < 0
        || (ngx_uint_t) family >= st->sh->nfamilies)
    {
        return NGX_EDGE_STATS_NONE;
    }

    for (k = 0; k < st->sh->families[family].nlabels; k++) {
        vals[k] = values[k];
        hashes[k] = ngx_edge_stats_value(&vals[k], buf[k]);
    }

    return ngx_edge_stats_lookup_hashed(st, family, vals, hashes, overflow);
}


ngx_edge_stats_id_t
ngx_edge_stats_lookup_hashed(ngx_edge_stats_t *st, ngx_int_t family,
    ngx_str_t *values, uint32_t *hashes, ngx_uint_t *overflow)
{
    u_char                     *p, *old;
    size_t                      size;
    uint32_t                    hash, b, now;
    ngx_uint_t                  i, k, n, mask, id, probes, slot, fresh;
    ngx_str_t                  *sv;
    ngx_slab_pool_t            *shpool;
    ngx_edge_stats_sh_t        *sh;
    ngx_edge_stats_series_t    *s;
    ngx_edge_stats_shfamily_t  *f;

    if (overflow) {
        *overflow = 0;
    }

    if (st == NULL || st->sh == NULL || family < 0
        || (ngx_uint_t) family >= st->sh->nfamilies)
    {
        return NGX_EDGE_STATS_NONE;
    }

    sh = st->sh;
    f = &sh->families[family];
    n = f->nlabels;

    hash = ngx_edge_stats_tuple_hash(family, hashes, n);
    mask = sh->nbuckets - 1;

    /*
     * Lock-free: a bucket holds a series + 1, 0 (never used: the end of
     * the probe) or a tombstone (a freed series: probe on).
     */

    for (i = hash & mask, probes = 0;
         probes < sh->nbuckets;
         i = (i + 1) & mask, probes++)
    {
        b = __atomic_load_n(&sh->buckets[i], __ATOMIC_ACQUIRE);

        if (b == 0) {
            break;
        }

        if (b == NGX_EDGE_STATS_TOMB) {
            continue;
        }

        s = &sh->series[b - 1];

        if (ngx_edge_stats_match(sh, s, family, hash, values, n)) {
            ngx_edge_stats_touch(s);
            return b - 1;
        }
    }

    /* not found: under the zone's mutex, probing again */

    shpool = (ngx_slab_pool_t *) st->shm_zone->shm.addr;

    ngx_shmtx_lock(&shpool->mutex);

    slot = NGX_CONF_UNSET_UINT;

    for (i = hash & mask, probes = 0;
         probes < sh->nbuckets && sh->buckets[i] != 0;
         i = (i + 1) & mask, probes++)
    {
        b = sh->buckets[i];

        if (b == NGX_EDGE_STATS_TOMB) {
            if (slot == NGX_CONF_UNSET_UINT) {
                slot = i;
            }

            continue;
        }

        if (ngx_edge_stats_match(sh, &sh->series[b - 1], family, hash,
                                 values, n))
        {
            ngx_shmtx_unlock(&shpool->mutex);
            ngx_edge_stats_touch(&sh->series[b - 1]);
            return b - 1;
        }
    }

    if (!(f->flags & NGX_EDGE_STATS_DYNAMIC)) {
        ngx_shmtx_unlock(&shpool->mutex);
        return NGX_EDGE_STATS_NONE;
    }

    if (slot == NGX_CONF_UNSET_UINT) {
        if (probes == sh->nbuckets) {
            goto full;
        }

        slot = i;
    }

    now = (uint32_t) ngx_current_msec;

    /*
     * A new series: first free the family's idle ones (at most once a
     * second), so they leave the exposition and make room.
     */

    if (ngx_edge_stats_reclaim(sh, family) == NGX_OK) {

        /* the reclaim may have rebuilt the table: probe for a bucket */

        for (slot = hash & mask;
             sh->buckets[slot] != 0
             && sh->buckets[slot] != NGX_EDGE_STATS_TOMB;
             slot = (slot + 1) & mask)
        { /* void */ }
    }

    if (f->max_series && f->nseries >= f->max_series) {
        goto full;
    }

    /* a slot: the family's oldest freed series past its grace, or new */

    id = 0;
    fresh = 0;

    if (f->free
        && now - sh->series[f->free - 1].last >= NGX_EDGE_STATS_GRACE)
    {
        id = f->free - 1;

    } else if ((f->max_series == 0 || f->slots < f->max_series)
               && sh->nseries < sh->capacity
               && sh->used + f->width <= sh->nvalues)
    {
        id = sh->nseries;
        fresh = 1;

    } else {
        goto full;
    }

    size = n * sizeof(ngx_str_t);

    for (k = 0; k < n; k++) {
        size += values[k].len;
    }

    p = NULL;

    if (size) {
        p = ngx_slab_alloc_locked(shpool, size);
        if (p == NULL) {
            goto full;
        }
    }

    s = &sh->series[id];

    if (fresh) {
        s->off = (uint32_t) sh->used;
        s->gen = 1;
        old = NULL;

    } else {
        /* the freed series' values are zeroed in every slot */

        f->free = s->next;

        if (f->free == 0) {
            f->free_last = 0;
        }

        old = (u_char *) s->values;

        for (i = 0; i < sh->nslots; i++) {
            for (k = 0; k < f->width; k++) {
                __atomic_store_n(sh->values + i * sh->stride + s->off + k,
                                 0, __ATOMIC_RELAXED);
            }
        }
    }

    __atomic_store_n(&s->family, (uint32_t) family, __ATOMIC_RELAXED);
    __atomic_store_n(&s->hash, hash, __ATOMIC_RELAXED);
    s->overflow = 0;
    s->last = now;

    /* serial 0 is for static series: skip it when wrapping */
    if (++sh->serial == 0) {
        sh->serial = 1;
    }

    __atomic_store_n(&s->dynamic, sh->serial, __ATOMIC_RELAXED);
    s->next = 0;

    sv = (ngx_str_t *) p;

    if (n) {
        p += n * sizeof(ngx_str_t);

        for (k = 0; k < n; k++) {
            sv[k].len = values[k].len;
            sv[k].data = p;
            p = ngx_cpymem(p, values[k].data, values[k].len);
        }
    }

    __atomic_store_n(&s->values, sv, __ATOMIC_RELAXED);

    /* live again: an even generation, published before the bucket */
    __atomic_store_n(&s->gen, s->gen + 1, __ATOMIC_RELEASE);

    if (old) {
        ngx_slab_free_locked(shpool, old);
    }

    f->nseries++;

    if (fresh) {
        sh->used += f->width;
        f->slots++;

        /* publish the series to the scrape, then to lookups */
        __atomic_store_n(&sh->nseries, id + 1, __ATOMIC_RELEASE);
    }

    if (sh->buckets[slot] == NGX_EDGE_STATS_TOMB) {
        sh->tombs--;
    }

    __atomic_store_n(&sh->buckets[slot], (uint32_t) id + 1, __ATOMIC_RELEASE);

    ngx_shmtx_unlock(&shpool->mutex);

    return id;

full:

    ngx_shmtx_unlock(&shpool->mutex);

    if (ngx_edge_stats_ready(st)) {
        __atomic_fetch_add(st->slot + f->dropped, 1, __ATOMIC_RELAXED);
    }

    if (overflow) {
        *overflow = 1;
    }

    return f->overflow;
}


/*
 * Under the mutex: frees the family's series idle for the zone's idle
 * time (never a gauge), at most once a second per family,
 * since it walks every run-time series.  NGX_OK if it freed any (the
 * lookup table may have been rebuilt), NGX_DECLINED if not.
 */

static ngx_int_t
ngx_edge_stats_reclaim(ngx_edge_stats_sh_t *sh, ngx_uint_t family)
{
    ngx_uint_t                  freed;
    uint32_t                    now;
    ngx_uint_t                  id;
    ngx_msec_t                  idle;
    ngx_edge_stats_series_t    *s;
    ngx_edge_stats_shfamily_t  *f;

    idle = __atomic_load_n(&sh->idle, __ATOMIC_RELAXED);
    f = &sh->families[family];
    now = (uint32_t) ngx_current_msec;

    /*
     * A gauge is never aged out: its +1 and -1 come in pairs that may be
     * hours apart (an upgraded connection), so a worker holding a +1 on
     * a series could not know that the slot was freed and reused, and its
     * -1 would land on another label set.  Gauge label sets come from the
     * configuration (server, location): they need no aging.
     */
    if (idle == 0 || f->type == NGX_EDGE_STATS_GAUGE
        || (uint32_t) (now - (uint32_t) f->scanned) < 1000)
    {
        return NGX_DECLINED;
    }

    f->scanned = now;
    freed = 0;

    for (id = sh->nstatic; id < sh->nseries; id++) {
        s = &sh->series[id];

        if (s->family != family || (s->gen & 1) || !s->dynamic
            || now - __atomic_load_n(&s->last, __ATOMIC_RELAXED) < idle)
        {
            continue;
        }

        ngx_edge_stats_free(sh, f, id);
        freed++;
    }

    if (sh->tombs > sh->nbuckets / 4) {
        ngx_edge_stats_rebuild(sh);
    }

    return freed ? NGX_OK : NGX_DECLINED;
}


/* under the mutex: the series leaves the lookups and the scrape */

static void
ngx_edge_stats_free(ngx_edge_stats_sh_t *sh, ngx_edge_stats_shfamily_t *f,
    ngx_uint_t id)
{
    ngx_uint_t                i, mask;
    ngx_edge_stats_series_t  *s;

    s = &sh->series[id];

    /* odd: readers that match it from now on drop it */
    __atomic_store_n(&s->gen, s->gen + 1, __ATOMIC_RELEASE);

    mask = sh->nbuckets - 1;

    for (i = s->hash & mask; sh->buckets[i] != 0; i = (i + 1) & mask) {
        if (sh->buckets[i] == id + 1) {
            __atomic_store_n(&sh->buckets[i], NGX_EDGE_STATS_TOMB,
                             __ATOMIC_RELEASE);
            sh->tombs++;
            break;
        }
    }

    /*
     * The slot waits NGX_EDGE_STATS_GRACE from now before its reuse.  The
     * free list is in the order of freeing, so its head is the one that
     * has waited longest.
     */

    s->last = (uint32_t) ngx_current_msec;
    s->next = 0;

    if (f->free_last) {
        sh->series[f->free_last - 1].next = (uint32_t) id + 1;

    } else {
        f->free = (uint32_t) id + 1;
    }

    f->free_last = (uint32_t) id + 1;
    f->nseries--;
}


/*
 * Under the mutex: the lookup table again without tombstones.  A
 * lock-free lookup that runs meanwhile may miss its series; it then
 * takes the mutex and probes the rebuilt table.
 */

static void
ngx_edge_stats_rebuild(ngx_edge_stats_sh_t *sh)
{
    ngx_uint_t                i;
    ngx_edge_stats_series_t  *s;

    for (i = 0; i < sh->nbuckets; i++) {
        __atomic_store_n(&sh->buckets[i], 0, __ATOMIC_RELEASE);
    }

    sh->tombs = 0;

    for (i = 0; i < sh->nseries; i++) {
        s = &sh->series[i];

        if (s->overflow || (s->gen & 1)) {
            continue;
        }

        (void) ngx_edge_stats_insert(sh, i);
    }
}


ngx_edge_stats_sh_t *
ngx_edge_stats_zone(ngx_shm_zone_t *zone)
{
    ngx_slab_pool_t      *shpool;
    ngx_edge_stats_sh_t  *sh;

    if (zone->shm.name.len <= sizeof(NGX_EDGE_STATS_PREFIX) - 1
        || ngx_strncmp(zone->shm.name.data, NGX_EDGE_STATS_PREFIX,
                       sizeof(NGX_EDGE_STATS_PREFIX) - 1)
           != 0
        || zone->shm.addr == NULL)
    {
        return NULL;
    }

    shpool = (ngx_slab_pool_t *) zone->shm.addr;
    sh = shpool->data;

    if (sh == NULL
        || sh->magic != NGX_EDGE_STATS_MAGIC
        || sh->layout != NGX_EDGE_STATS_LAYOUT)
    {
        return NULL;
    }

    return sh;
}


ngx_uint_t
ngx_edge_stats_nseries(ngx_edge_stats_sh_t *sh)
{
    return __atomic_load_n(&sh->nseries, __ATOMIC_ACQUIRE);
}


int64_t
ngx_edge_stats_read(ngx_edge_stats_sh_t *sh, ngx_edge_stats_series_t *s,
    ngx_uint_t k)
{
    uint64_t    sum, *p;
    ngx_uint_t  i;

    p = sh->values + s->off + k;

    sum = 0;

    for (i = 0; i < sh->nslots; i++) {
        sum += __atomic_load_n(p + i * sh->stride, __ATOMIC_RELAXED);
    }

    return (int64_t) sum;
}


uint32_t
ngx_edge_stats_gen(ngx_edge_stats_series_t *s)
{
    return __atomic_load_n(&s->gen, __ATOMIC_ACQUIRE);
}


ngx_uint_t
ngx_edge_stats_family_series(ngx_edge_stats_shfamily_t *f)
{
    return __atomic_load_n(&f->nseries, __ATOMIC_RELAXED);
}


uint32_t
ngx_edge_stats_serial(ngx_edge_stats_sh_t *sh)
{
    return __atomic_load_n(&sh->serial, __ATOMIC_ACQUIRE);
}


uint32_t
ngx_edge_stats_generation(ngx_edge_stats_t *st, ngx_edge_stats_id_t id)
{
    if (st == NULL || st->sh == NULL || id < 0
        || (ngx_uint_t) id >= ngx_edge_stats_nseries(st->sh))
    {
        return 1;
    }

    return __atomic_load_n(&st->sh->series[id].gen, __ATOMIC_ACQUIRE);
}


ngx_uint_t
ngx_edge_stats_current(ngx_edge_stats_t *st, ngx_edge_stats_id_t id,
    uint32_t gen)
{
    ngx_edge_stats_series_t  *s;

    if ((gen & 1) || st == NULL || st->sh == NULL || id < 0
        || (ngx_uint_t) id >= ngx_edge_stats_nseries(st->sh))
    {
        return 0;
    }

    s = &st->sh->series[id];

    if (__atomic_load_n(&s->gen, __ATOMIC_ACQUIRE) != gen) {
        return 0;
    }

    ngx_edge_stats_touch(s);

    return 1;
}
