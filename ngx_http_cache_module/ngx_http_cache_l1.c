/*
 * The hot tier (L1): whole entries in a shared-memory zone, keyed by
 * their Redis key, with an LRU queue and slab allocation.
 *
 * The rbtree key is the first 32 bits of the cache key's md5 (the hex in
 * the Redis key), so a key's main entry and all its variants share one
 * tree key and a purge finds them together; the full Redis key is
 * compared to tell them (and colliding keys) apart.
 *
 * The zone's mutex is held for a tree walk and a memcpy of one entry,
 * never across I/O or a pool allocation: a lookup takes the lock once to
 * learn the copy's length, allocates the copy in r->pool, and takes it
 * again to copy, if the node is still the one it saw (its version).
 *
 * A node records when its bytes were last read from or written to Redis
 * (ngx_current_msec: the system's monotonic clock, the same in every
 * worker and across reloads); a lookup uses it for hot_max_age at most.
 */

#include "ngx_http_cache_l1.h"
#include "ngx_http_cache_purge.h"
#include "ngx_http_cache_rfc.h"


/* evicted from the LRU tail, at most, to make room for one entry: in a
 * fragmented zone a large entry may not fit even then, and is not kept */
#define NGX_HTTP_CACHE_L1_EVICT_MAX   64

/* a node's key: the Redis key, and for an inflated copy (the body of a
 * gzip entry inflated for the clients that do not take gzip) ":i" */
#define NGX_HTTP_CACHE_L1_KEY_MAX     (NGX_HTTP_CACHE_RKEY_MAX + 2)

/* nodes with one tree key removed by a purge per walk */
#define NGX_HTTP_CACHE_L1_PURGE_BATCH 16


typedef struct {
    ngx_rbtree_node_t            node;       /* key: 32 bits of the md5 */
    ngx_queue_t                  queue;      /* LRU, most recent first */
    ngx_msec_t                   checked;    /* read or written in Redis */
    uint64_t                     version;
    uint32_t                     len;        /* the entry's bytes */
    u_short                      rkey_len;
    u_char                       data[1];    /* Redis key, then entry */
} ngx_http_cache_l1_node_t;


typedef struct {
    ngx_rbtree_t                 rbtree;
    ngx_rbtree_node_t            sentinel;
    ngx_queue_t                  queue;
    uint64_t                     version;    /* the last node's */
} ngx_http_cache_l1_sh_t;


struct ngx_http_cache_l1_s {
    ngx_http_cache_l1_sh_t      *sh;
    ngx_slab_pool_t             *shpool;
    ngx_shm_zone_t              *shm_zone;
    size_t                       size;
    ngx_msec_t                   max_age;
    size_t                       max_entry;
    ngx_edge_log_gate_t          full_gate;  /* this worker's */
};


/* a copy taken out of the zone, and where it was */
typedef struct {
    u_char                      *data;
    size_t                       len;
    uint64_t                     version;
    ngx_msec_t                   checked;
    uint32_t                     hash;
    ngx_str_t                    rkey;
    u_char                       rkey_buf[NGX_HTTP_CACHE_L1_KEY_MAX];
} ngx_http_cache_l1_copy_t;


static ngx_int_t ngx_http_cache_l1_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static void ngx_http_cache_l1_insert(ngx_http_cache_l1_t *l1,
    uint32_t hash, ngx_str_t *rkey, ngx_str_t *data, ngx_str_t *tail,
    ngx_msec_t checked, ngx_log_t *log);


/* configuration */

ngx_int_t
ngx_http_cache_l1_parse_param(ngx_conf_t *cf, ngx_http_cache_zone_t *zone,
    ngx_str_t *value)
{
    ssize_t               size;
    ngx_str_t             s;
    ngx_msec_t            ms;
    ngx_http_cache_l1_t  *l1;

    if (ngx_strncmp(value->data, "hot", 3) != 0) {
        return NGX_DECLINED;
    }

    l1 = zone->l1;

    if (l1 == NULL) {
        l1 = ngx_pcalloc(cf->pool, sizeof(ngx_http_cache_l1_t));
        if (l1 == NULL) {
            return NGX_ERROR;
        }

        l1->max_age = NGX_CONF_UNSET_MSEC;
        l1->max_entry = NGX_CONF_UNSET_SIZE;
        zone->l1 = l1;
    }

    if (ngx_strncmp(value->data, "hot=", 4) == 0) {
        s.data = value->data + 4;
        s.len = value->len - 4;

        size = ngx_parse_size(&s);

        if (size == NGX_ERROR) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid hot zone size \"%V\"", value);
            return NGX_ERROR;
        }

        if (size < (ssize_t) (8 * ngx_pagesize)) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "hot zone \"%V\" is too small: at least %uzk",
                               value, 8 * ngx_pagesize / 1024);
            return NGX_ERROR;
        }

        l1->size = size;
        return NGX_OK;
    }

    if (ngx_strncmp(value->data, "hot_max_age=", 12) == 0) {
        s.data = value->data + 12;
        s.len = value->len - 12;

        ms = ngx_parse_time(&s, 0);

        if (ms == (ngx_msec_t) NGX_ERROR || ms == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid \"%V\": a time of 1ms or more", value);
            return NGX_ERROR;
        }

        l1->max_age = ms;
        return NGX_OK;
    }

    if (ngx_strncmp(value->data, "hot_max_entry=", 14) == 0) {
        s.data = value->data + 14;
        s.len = value->len - 14;

        size = ngx_parse_size(&s);

        if (size == NGX_ERROR || size == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid \"%V\"", value);
            return NGX_ERROR;
        }

        l1->max_entry = size;
        return NGX_OK;
    }

    return NGX_DECLINED;
}


char *
ngx_http_cache_l1_init_conf(ngx_conf_t *cf, ngx_http_cache_zone_t *zone)
{
    u_char               *p;
    ngx_str_t             name;
    ngx_shm_zone_t       *shm_zone;
    ngx_http_cache_l1_t  *l1;

    l1 = zone->l1;

    if (l1 == NULL) {
        return NGX_CONF_OK;
    }

    if (l1->size == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "edge_cache_zone \"%V\": hot_max_age= and "
                           "hot_max_entry= need hot=", &zone->name);
        return NGX_CONF_ERROR;
    }

    ngx_conf_init_msec_value(l1->max_age, 1000);

    if (l1->max_entry == NGX_CONF_UNSET_SIZE) {
        l1->max_entry = ngx_min(64 * 1024, l1->size / 4);

    } else if (l1->max_entry > l1->size / 4) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "edge_cache_zone \"%V\": hot_max_entry=%uz is "
                           "more than a quarter of hot=%uz", &zone->name,
                           l1->max_entry, l1->size);
        return NGX_CONF_ERROR;
    }

    /* a name of its own: shared memory names are global to nginx */
    name.len = sizeof("edge_cache:") - 1 + zone->name.len;
    name.data = ngx_pnalloc(cf->pool, name.len);
    if (name.data == NULL) {
        return NGX_CONF_ERROR;
    }

    p = ngx_cpymem(name.data, "edge_cache:", sizeof("edge_cache:") - 1);
    ngx_memcpy(p, zone->name.data, zone->name.len);

    shm_zone = ngx_shared_memory_add(cf, &name, l1->size,
                                     &ngx_http_cache_module);
    if (shm_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    if (shm_zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "duplicate hot zone \"%V\"", &name);
        return NGX_CONF_ERROR;
    }

    shm_zone->init = ngx_http_cache_l1_init_zone;
    shm_zone->data = l1;
    l1->shm_zone = shm_zone;

    return NGX_CONF_OK;
}


static void
ngx_http_cache_l1_rbtree_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t         **p;
    ngx_http_cache_l1_node_t   *n, *t;

    for ( ;; ) {

        if (node->key < temp->key) {
            p = &temp->left;

        } else if (node->key > temp->key) {
            p = &temp->right;

        } else {
            n = (ngx_http_cache_l1_node_t *) node;
            t = (ngx_http_cache_l1_node_t *) temp;

            p = (ngx_memn2cmp(n->data, t->data, n->rkey_len, t->rkey_len)
                 < 0) ? &temp->left : &temp->right;
        }

        if (*p == sentinel) {
            break;
        }

        temp = *p;
    }

    *p = node;
    node->parent = temp;
    node->left = sentinel;
    node->right = sentinel;
    ngx_rbt_red(node);
}


/* nginx -s reload with the same size: the entries carry over, as
 * limit_req's states do */

static ngx_int_t
ngx_http_cache_l1_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_cache_l1_t  *ol1 = data;

    size_t                   len;
    ngx_http_cache_l1_t     *l1;
    ngx_http_cache_l1_sh_t  *sh;

    l1 = shm_zone->data;

    if (ol1) {
        l1->sh = ol1->sh;
        l1->shpool = ol1->shpool;
        return NGX_OK;
    }

    l1->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        l1->sh = l1->shpool->data;
        return NGX_OK;
    }

    sh = ngx_slab_alloc(l1->shpool, sizeof(ngx_http_cache_l1_sh_t));
    if (sh == NULL) {
        return NGX_ERROR;
    }

    l1->sh = sh;
    l1->shpool->data = sh;

    ngx_rbtree_init(&sh->rbtree, &sh->sentinel,
                    ngx_http_cache_l1_rbtree_insert_value);
    ngx_queue_init(&sh->queue);
    sh->version = 0;

    len = sizeof(" in edge_cache hot zone \"\"") + shm_zone->shm.name.len;

    l1->shpool->log_ctx = ngx_slab_alloc(l1->shpool, len);
    if (l1->shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(l1->shpool->log_ctx, " in edge_cache hot zone \"%V\"%Z",
                &shm_zone->shm.name);

    /* a full zone evicts: not an error to log */
    l1->shpool->log_nomem = 0;

    return NGX_OK;
}


/* the zone, locked by the caller */

/* the first 32 bits of the md5 (lowercase hex, from ngx_hex_dump()): not
 * ngx_hextoi(), which refuses values over NGX_MAX_INT_T_VALUE on 32 bits */

static uint32_t
ngx_http_cache_l1_hash(u_char *hex)
{
    u_char      c;
    uint32_t    h;
    ngx_uint_t  i;

    h = 0;

    for (i = 0; i < 8; i++) {
        c = hex[i];
        h = (h << 4) | (uint32_t) (c >= 'a' ? c - 'a' + 10 : c - '0');
    }

    return h;
}


static ngx_http_cache_l1_node_t *
ngx_http_cache_l1_find(ngx_http_cache_l1_t *l1, uint32_t hash,
    ngx_str_t *rkey)
{
    ngx_int_t                  rc;
    ngx_rbtree_node_t         *node, *sentinel;
    ngx_http_cache_l1_node_t  *n;

    node = l1->sh->rbtree.root;
    sentinel = l1->sh->rbtree.sentinel;

    while (node != sentinel) {

        if (hash < node->key) {
            node = node->left;
            continue;
        }

        if (hash > node->key) {
            node = node->right;
            continue;
        }

        n = (ngx_http_cache_l1_node_t *) node;

        rc = ngx_memn2cmp(rkey->data, n->data, rkey->len, n->rkey_len);

        if (rc == 0) {
            return n;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


static void
ngx_http_cache_l1_free_node(ngx_http_cache_l1_t *l1,
    ngx_http_cache_l1_node_t *n)
{
    ngx_queue_remove(&n->queue);
    ngx_rbtree_delete(&l1->sh->rbtree, &n->node);
    ngx_slab_free_locked(l1->shpool, n);
}


static ngx_flag_t
ngx_http_cache_l1_too_old(ngx_http_cache_l1_t *l1,
    ngx_http_cache_l1_node_t *n)
{
    return (ngx_msec_int_t) (ngx_current_msec - n->checked)
           >= (ngx_msec_int_t) l1->max_age;
}


/* up to two copies past hot_max_age leave the LRU tail (they can serve
 * nothing more until Redis is read again, which writes a new node) */

static void
ngx_http_cache_l1_expire(ngx_http_cache_l1_t *l1)
{
    ngx_uint_t                 i;
    ngx_queue_t               *q;
    ngx_http_cache_l1_node_t  *n;

    for (i = 0; i < 2; i++) {

        if (ngx_queue_empty(&l1->sh->queue)) {
            return;
        }

        q = ngx_queue_last(&l1->sh->queue);
        n = ngx_queue_data(q, ngx_http_cache_l1_node_t, queue);

        if (!ngx_http_cache_l1_too_old(l1, n)) {
            return;
        }

        ngx_http_cache_l1_free_node(l1, n);
    }
}


/* a slab allocation, evicting from the LRU tail while it fails */

static ngx_http_cache_l1_node_t *
ngx_http_cache_l1_alloc(ngx_http_cache_l1_t *l1, size_t size)
{
    ngx_uint_t                 i;
    ngx_queue_t               *q;
    ngx_http_cache_l1_node_t  *n;

    ngx_http_cache_l1_expire(l1);

    for (i = 0; /* void */; i++) {

        n = ngx_slab_alloc_locked(l1->shpool, size);

        if (n || i == NGX_HTTP_CACHE_L1_EVICT_MAX
            || ngx_queue_empty(&l1->sh->queue))
        {
            return n;
        }

        q = ngx_queue_last(&l1->sh->queue);
        ngx_http_cache_l1_free_node(l1,
                          ngx_queue_data(q, ngx_http_cache_l1_node_t, queue));
    }
}


static void
ngx_http_cache_l1_insert(ngx_http_cache_l1_t *l1, uint32_t hash,
    ngx_str_t *rkey, ngx_str_t *data, ngx_str_t *tail, ngx_msec_t checked,
    ngx_log_t *log)
{
    size_t                     len;
    ngx_uint_t                 held;
    ngx_http_cache_l1_node_t  *n;

    len = data->len + (tail ? tail->len : 0);

    if (len == 0 || len > l1->max_entry || rkey->len > 0xffff) {
        return;
    }

    ngx_shmtx_lock(&l1->shpool->mutex);

    n = ngx_http_cache_l1_find(l1, hash, rkey);

    if (n) {
        if (n->len == len
            && ngx_memcmp(n->data + n->rkey_len, data->data, data->len) == 0
            && (tail == NULL
                || ngx_memcmp(n->data + n->rkey_len + data->len, tail->data,
                              tail->len) == 0))
        {
            /* the same bytes: Redis confirmed them (at "checked") */
            n->checked = checked;
            ngx_queue_remove(&n->queue);
            ngx_queue_insert_head(&l1->sh->queue, &n->queue);

            ngx_shmtx_unlock(&l1->shpool->mutex);
            return;
        }

        ngx_http_cache_l1_free_node(l1, n);
    }

    n = ngx_http_cache_l1_alloc(l1, offsetof(ngx_http_cache_l1_node_t, data)
                                    + rkey->len + len);

    if (n == NULL) {
        ngx_shmtx_unlock(&l1->shpool->mutex);

        if (ngx_edge_log_gate_open(&l1->full_gate, 10000, &held)) {
            ngx_log_error(NGX_LOG_INFO, log, 0,
                          "edge_cache: an entry of %uz bytes not kept%s "
                          "(%ui more since the last line)",
                          len, l1->shpool->log_ctx, held);
        }

        return;
    }

    n->node.key = hash;
    n->checked = checked;
    n->version = ++l1->sh->version;
    n->len = (uint32_t) len;
    n->rkey_len = (u_short) rkey->len;

    ngx_memcpy(n->data, rkey->data, rkey->len);
    ngx_memcpy(n->data + rkey->len, data->data, data->len);

    if (tail) {
        ngx_memcpy(n->data + rkey->len + data->len, tail->data, tail->len);
    }

    ngx_rbtree_insert(&l1->sh->rbtree, &n->node);
    ngx_queue_insert_head(&l1->sh->queue, &n->queue);

    ngx_shmtx_unlock(&l1->shpool->mutex);
}


/* a copy that failed its checks: removed if it was not replaced since */

static void
ngx_http_cache_l1_drop(ngx_http_cache_l1_t *l1, uint32_t hash,
    ngx_str_t *rkey, uint64_t version)
{
    ngx_http_cache_l1_node_t  *n;

    ngx_shmtx_lock(&l1->shpool->mutex);

    n = ngx_http_cache_l1_find(l1, hash, rkey);

    if (n && n->version == version) {
        ngx_http_cache_l1_free_node(l1, n);
    }

    ngx_shmtx_unlock(&l1->shpool->mutex);
}


/*
 * The entry under rkey, copied into r->pool, if it was confirmed by Redis
 * less than hot_max_age ago: NGX_OK, NGX_DECLINED (none), NGX_ERROR.
 */

static ngx_int_t
ngx_http_cache_l1_copy(ngx_http_request_t *r, ngx_http_cache_l1_t *l1,
    uint32_t hash, ngx_str_t *rkey, ngx_http_cache_l1_copy_t *copy)
{
    ngx_http_cache_l1_node_t  *n;

    ngx_shmtx_lock(&l1->shpool->mutex);

    n = ngx_http_cache_l1_find(l1, hash, rkey);

    if (n == NULL || ngx_http_cache_l1_too_old(l1, n)) {
        ngx_shmtx_unlock(&l1->shpool->mutex);
        return NGX_DECLINED;
    }

    copy->len = n->len;
    copy->version = n->version;
    copy->checked = n->checked;

    ngx_shmtx_unlock(&l1->shpool->mutex);

    /* allocated without the lock */
    copy->data = ngx_pnalloc(r->pool, copy->len);
    if (copy->data == NULL) {
        return NGX_ERROR;
    }

    ngx_shmtx_lock(&l1->shpool->mutex);

    n = ngx_http_cache_l1_find(l1, hash, rkey);

    if (n == NULL || n->version != copy->version) {
        /* replaced or evicted meanwhile: Redis has the answer */
        ngx_shmtx_unlock(&l1->shpool->mutex);
        return NGX_DECLINED;
    }

    ngx_memcpy(copy->data, n->data + n->rkey_len, copy->len);

    ngx_queue_remove(&n->queue);
    ngx_queue_insert_head(&l1->sh->queue, &n->queue);

    ngx_shmtx_unlock(&l1->shpool->mutex);

    return NGX_OK;
}


/*
 * A copy checked as ngx_http_cache_check_entry() checks a Redis reply:
 * NGX_OK when it answers this request, NGX_AGAIN when it is the main
 * entry of another variant (ctx->vary_values then hold this request's
 * values under its Vary spec), NGX_DECLINED when it is not usable.
 */

static ngx_int_t
ngx_http_cache_l1_check(ngx_http_request_t *r, ngx_http_cache_ctx_t *ctx,
    ngx_http_cache_zone_t *zone, ngx_http_cache_l1_copy_t *copy,
    ngx_flag_t variant)
{
    ngx_http_cache_entry_t     *e;
    ngx_http_cache_entry_rc_e   rc;

    e = &ctx->entry;

    rc = ngx_http_cache_entry_parse(e, copy->data, copy->len);

    if (rc != NGX_HTTP_CACHE_ENTRY_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "edge_cache: hot copy for \"%V\" ignored: %s",
                      &ctx->key, ngx_http_cache_entry_strerror(rc));
        return NGX_ERROR;
    }

    if (e->key.len != ctx->key.len
        || ngx_memcmp(e->key.data, ctx->key.data, ctx->key.len) != 0)
    {
        return NGX_DECLINED;
    }

    /* purged on any node since Redis gave it (the purge log, polled) */
    switch (ngx_http_cache_purge_check(ctx, zone, e)) {

    case NGX_DECLINED:
        return NGX_DECLINED;

    case NGX_HTTP_CACHE_PURGE_SOFT:
        /* stale from now on: Redis decides what to do with it */
        return NGX_DECLINED;
    }

    return ngx_http_cache_vary_match(r, ctx, e, variant);
}


/* the copy for this request: the main key's, or its variant's */

static ngx_int_t
ngx_http_cache_l1_find_entry(ngx_http_request_t *r,
    ngx_http_cache_ctx_t *ctx, ngx_http_cache_zone_t *zone,
    ngx_http_cache_l1_copy_t *copy)
{
    ngx_int_t             rc;
    ngx_uint_t            variant, inflated;
    ngx_http_cache_l1_t  *l1;

    l1 = zone->l1;
    copy->hash = ngx_http_cache_l1_hash(ctx->hash);
    copy->rkey.data = copy->rkey_buf;

    inflated = !ngx_http_cache_rfc_accepts_gzip(&r->headers_in.headers);

    for (variant = 0; variant < 2; variant++) {

        ngx_http_cache_redis_key(ctx, zone,
                                 variant ? &ctx->vary_values : NULL,
                                 &copy->rkey);

        rc = NGX_DECLINED;

        if (inflated) {
            copy->rkey.data[copy->rkey.len++] = ':';
            copy->rkey.data[copy->rkey.len++] = 'i';

            rc = ngx_http_cache_l1_copy(r, l1, copy->hash, &copy->rkey,
                                        copy);
            if (rc == NGX_ERROR) {
                return rc;
            }

            if (rc == NGX_DECLINED) {
                copy->rkey.len -= 2;
            }
        }

        if (rc == NGX_DECLINED) {
            rc = ngx_http_cache_l1_copy(r, l1, copy->hash, &copy->rkey,
                                        copy);
            if (rc != NGX_OK) {
                return rc;
            }
        }

        rc = ngx_http_cache_l1_check(r, ctx, zone, copy, variant);

        if (rc == NGX_ERROR) {
            /* the zone's memory is not trusted more than Redis */
            ngx_http_cache_l1_drop(l1, copy->hash, &copy->rkey,
                                   copy->version);
            return NGX_DECLINED;
        }

        if (rc != NGX_AGAIN) {
            return rc;
        }

        /* variant keys derive from the main entry's epoch */
        ctx->epoch = ctx->entry.epoch;
    }

    return NGX_DECLINED;
}


static void
ngx_http_cache_l1_forget(ngx_http_cache_ctx_t *ctx, uint64_t epoch)
{
    /* as before the lookup: the Redis path draws its own conclusions */
    ngx_memzero(&ctx->entry, sizeof(ngx_http_cache_entry_t));
    ngx_str_null(&ctx->vary_spec);
    ngx_str_null(&ctx->vary_values);
    ctx->epoch = epoch;
    ctx->status = NGX_HTTP_CACHE_ST_NONE;
    ctx->tier = 0;
    ctx->age = 0;
    ctx->done = 0;
}


ngx_int_t
ngx_http_cache_l1_lookup(ngx_http_request_t *r, ngx_http_cache_ctx_t *ctx,
    ngx_http_cache_zone_t *zone)
{
    int64_t                    now, age;
    uint64_t                   epoch;
    ngx_int_t                  rc;
    ngx_http_cache_entry_t    *e;
    ngx_http_cache_l1_copy_t   copy;

    if (zone->l1 == NULL) {
        return NGX_DECLINED;
    }

    epoch = ctx->epoch;

    rc = ngx_http_cache_l1_find_entry(r, ctx, zone, &copy);

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc != NGX_OK) {
        ngx_http_cache_l1_forget(ctx, epoch);
        return NGX_DECLINED;
    }

    e = &ctx->entry;

    now = ngx_edge_wall_usec() / 1000;
    age = e->initial_age + ngx_max(now - e->response_time, 0);

    /* only a fresh hit is L1's: stale serving, revalidation and the
     * request's own directives are decided with what Redis holds */
    if ((e->flags & NGX_HTTP_CACHE_ENTRY_REVALIDATE)
        || ngx_http_cache_request_allows(r, age, e->fresh,
                                 (e->flags & NGX_HTTP_CACHE_ENTRY_MUST_REVAL)
                                 != 0)
           != NGX_HTTP_CACHE_USE_FRESH)
    {
        ngx_http_cache_l1_forget(ctx, epoch);
        return NGX_DECLINED;
    }

    ctx->age = age;
    ctx->status = NGX_HTTP_CACHE_ST_HIT;
    ctx->tier = 1;
    ctx->done = 1;
    ctx->l1_checked = copy.checked;

    rc = ngx_http_cache_send_hit(r, ctx);

    if (rc == NGX_DECLINED) {
        /* a body that does not inflate: nothing was sent; Redis decides,
         * and a good store replaces the copy */
        ngx_http_cache_l1_drop(zone->l1, copy.hash, &copy.rkey,
                               copy.version);
        ngx_http_cache_l1_forget(ctx, epoch);
        return NGX_DECLINED;
    }

    return rc;
}


void
ngx_http_cache_l1_promote(ngx_http_cache_ctx_t *ctx, u_char *data,
    size_t len)
{
    ngx_str_t                   rkey, entry;
    ngx_http_cache_zone_t      *zone;
    ngx_http_cache_loc_conf_t  *clcf;
    u_char                      buf[NGX_HTTP_CACHE_RKEY_MAX];

    clcf = ngx_http_get_module_loc_conf(ctx->request, ngx_http_cache_module);
    zone = clcf->zone;

    if (zone == NULL || zone->l1 == NULL || len > zone->l1->max_entry) {
        return;
    }

    rkey.data = buf;
    ngx_http_cache_redis_key(ctx, zone,
                             ctx->variant ? &ctx->vary_values : NULL, &rkey);

    entry.data = data;
    entry.len = len;

    ngx_http_cache_l1_insert(zone->l1, ngx_http_cache_l1_hash(ctx->hash),
                             &rkey, &entry, NULL, ngx_current_msec,
                             ctx->request->connection->log);
}


/*
 * A client that does not take gzip was just sent the inflated body of a
 * gzip entry (read from Redis, or a hot copy): the inflated form is kept
 * beside the gzip copy (under the key and ":i"), so the next such client of this node
 * is sent it as is instead of inflating again.  It is the entry with its
 * body inflated and NGX_HTTP_CACHE_ENTRY_INFLATED in place of
 * NGX_HTTP_CACHE_ENTRY_GZIP (the hit still says Vary: Accept-Encoding).
 */

void
ngx_http_cache_l1_keep_inflated(ngx_http_cache_ctx_t *ctx, ngx_str_t *body)
{
    u_char                     *prefix;
    ngx_str_t                   rkey, head;
    ngx_http_cache_zone_t      *zone;
    ngx_http_cache_entry_t      e;
    ngx_http_cache_loc_conf_t  *clcf;
    u_char                      buf[NGX_HTTP_CACHE_L1_KEY_MAX];

    clcf = ngx_http_get_module_loc_conf(ctx->request, ngx_http_cache_module);
    zone = clcf->zone;

    if (zone == NULL || zone->l1 == NULL) {
        return;
    }

    e = ctx->entry;
    e.flags = (e.flags & ~NGX_HTTP_CACHE_ENTRY_GZIP)
              | NGX_HTTP_CACHE_ENTRY_INFLATED;
    e.body.data = body->data;
    e.body.len = body->len;
    e.body_raw_len = body->len;

    head.len = ngx_http_cache_entry_prefix_size(&e);

    if (head.len + body->len > zone->l1->max_entry) {
        return;
    }

    prefix = ngx_pnalloc(ctx->request->pool, head.len);
    if (prefix == NULL) {
        return;
    }

    head.data = prefix;
    (void) ngx_http_cache_entry_write_prefix(prefix, &e);

    rkey.data = buf;
    ngx_http_cache_redis_key(ctx, zone,
                             ctx->variant ? &ctx->vary_values : NULL, &rkey);
    rkey.data[rkey.len++] = ':';
    rkey.data[rkey.len++] = 'i';

    /* an inflated copy of a hot copy is as old as its source: it is not
     * used longer after Redis was read */
    ngx_http_cache_l1_insert(zone->l1, ngx_http_cache_l1_hash(ctx->hash),
                             &rkey, &head, body,
                             ctx->tier == 1 ? ctx->l1_checked
                                            : ngx_current_msec,
                             ctx->request->connection->log);
}


void
ngx_http_cache_l1_store(ngx_http_cache_ctx_t *ctx,
    ngx_http_cache_zone_t *zone)
{
    uint32_t   hash;
    ngx_str_t  rkey, entry;
    u_char     buf[NGX_HTTP_CACHE_RKEY_MAX];

    entry.data = ctx->buf;
    entry.len = ctx->buf_last - ctx->buf;

    if (zone->l1 == NULL || entry.len > zone->l1->max_entry) {
        return;
    }

    hash = ngx_http_cache_l1_hash(ctx->hash);
    rkey.data = buf;

    ngx_http_cache_redis_key(ctx, zone, NULL, &rkey);
    ngx_http_cache_l1_insert(zone->l1, hash, &rkey, &entry, NULL,
                             ngx_current_msec, ctx->request->connection->log);

    if (ctx->vary_spec.len) {
        ngx_http_cache_redis_key(ctx, zone, &ctx->vary_values, &rkey);
        ngx_http_cache_l1_insert(zone->l1, hash, &rkey, &entry, NULL,
                                 ngx_current_msec,
                                 ctx->request->connection->log);
    }
}


/* the nodes under one tree key whose Redis key is the prefix's, or a
 * variant of it ("<prefix>:v..."), at most max of them */

static ngx_uint_t
ngx_http_cache_l1_collect(ngx_rbtree_node_t *node,
    ngx_rbtree_node_t *sentinel, uint32_t hash, ngx_str_t *prefix,
    ngx_http_cache_l1_node_t **found, ngx_uint_t n, ngx_uint_t max)
{
    ngx_http_cache_l1_node_t  *l1n;

    /* equal tree keys may sit on either side of an equal node */
    while (node != sentinel && n < max) {

        if (hash < node->key) {
            node = node->left;
            continue;
        }

        if (hash > node->key) {
            node = node->right;
            continue;
        }

        l1n = (ngx_http_cache_l1_node_t *) node;

        if (l1n->rkey_len >= prefix->len
            && ngx_memcmp(l1n->data, prefix->data, prefix->len) == 0
            && (l1n->rkey_len == prefix->len
                || l1n->data[prefix->len] == ':'))
        {
            found[n++] = l1n;
        }

        n = ngx_http_cache_l1_collect(node->left, sentinel, hash, prefix,
                                      found, n, max);
        node = node->right;
    }

    return n;
}


void
ngx_http_cache_l1_purge(ngx_http_cache_zone_t *zone, u_char *hash)
{
    uint32_t                   key;
    ngx_str_t                  prefix;
    ngx_uint_t                 i, n;
    ngx_http_cache_l1_t       *l1;
    ngx_http_cache_l1_node_t  *found[NGX_HTTP_CACHE_L1_PURGE_BATCH];
    u_char                     buf[NGX_HTTP_CACHE_RKEY_MAX];
    u_char                    *p;

    l1 = zone->l1;

    if (l1 == NULL) {
        return;
    }

    p = ngx_cpymem(buf, zone->name.data, zone->name.len);
    *p++ = ':';
    *p++ = '{';
    p = ngx_cpymem(p, hash, NGX_HTTP_CACHE_HASH_LEN);
    *p++ = '}';

    prefix.data = buf;
    prefix.len = p - buf;

    key = ngx_http_cache_l1_hash(hash);

    ngx_shmtx_lock(&l1->shpool->mutex);

    do {
        n = ngx_http_cache_l1_collect(l1->sh->rbtree.root,
                                      l1->sh->rbtree.sentinel, key, &prefix,
                                      found, 0,
                                      NGX_HTTP_CACHE_L1_PURGE_BATCH);

        for (i = 0; i < n; i++) {
            ngx_http_cache_l1_free_node(l1, found[i]);
        }

    } while (n == NGX_HTTP_CACHE_L1_PURGE_BATCH);

    ngx_shmtx_unlock(&l1->shpool->mutex);
}
