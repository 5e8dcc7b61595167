/*
 * ngx_http_ratelimit_module: buckets and caches in shared memory.
 *
 * The local GCRA bucket and sliding window of shared-memory zones (the
 * sliding window's arithmetic is Redis mode's too), the ban and deny caches
 * of Redis-mode zones, and the zone itself: an rbtree by key and tier
 * with an LRU queue, as limit_req.
 */

#include "ngx_http_ratelimit_module.h"



static void ngx_http_ratelimit_expire(ngx_http_ratelimit_zone_t *zone,
    ngx_uint_t n);
static void ngx_http_ratelimit_rbtree_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);


void
ngx_http_ratelimit_gcra(ngx_http_ratelimit_gcra_t *g, int64_t now,
    int64_t *tat, ngx_http_ratelimit_verdict_t *v)
{
    int64_t  t, new_tat, allow_at;

    t = ngx_max(*tat, now);
    new_tat = t + g->cost * g->interval;
    allow_at = new_tat - g->interval - g->tau;

    v->excess = t - now;

    if (allow_at > now) {
        v->allowed = 0;
        v->retry = allow_at - now;
        v->reset = t - now;
        return;
    }

    *tat = new_tat;

    v->allowed = 1;
    v->retry = 0;
    v->reset = new_tat - now;
}


/*
 * How long a refused request of cost c waits before it passes.  Within this
 * window when it can fit here at all: once enough of the previous window
 * has slid out of [now - window, now); else in the next window, where this
 * window's count is the one weighted.  The caller bounds c by the limit.
 */

static int64_t
ngx_http_ratelimit_sliding_wait(int64_t w, int64_t n, int64_t e, int64_t prev,
    int64_t cur, int64_t c)
{
    if (cur + c <= n) {
        if (prev == 0) {
            return 0;
        }

        /* the first e' with prev * (w - e') <= (n - cur - c) * w */
        return w - (n - cur - c) * w / prev - e;
    }

    if (cur == 0) {
        return w - e;     /* c > n: refused anyway, see prepare() */
    }

    return (w - e) + w - (n - c) * w / cur;
}


void
ngx_http_ratelimit_sliding(ngx_http_ratelimit_sw_t *sw, int64_t cost,
    int64_t now, int64_t prev, int64_t cur, ngx_http_ratelimit_verdict_t *v)
{
    int64_t  w, n, e, budget;

    w = sw->window;
    n = sw->limit;
    e = now % w;

    /* counts from Redis are anybody's: keep the products within bounds */
    prev = ngx_min(ngx_max(prev, 0), n);
    cur = ngx_min(ngx_max(cur, 0), n);

    /* what the previous window leaves to this one, in requests * us */
    budget = n * w - prev * (w - e);

    v->excess = 0;

    if ((cur + cost) * w <= budget) {
        cur += cost;

        v->allowed = 1;
        v->retry = 0;
        v->retry_one = 0;
        v->remaining = ngx_max(budget / w - cur, 0);
        v->reset = cur ? 2 * w - e : (prev ? w - e : 0);
        return;
    }

    v->allowed = 0;
    v->remaining = 0;
    v->retry = ngx_http_ratelimit_sliding_wait(w, n, e, prev, cur, cost);
    v->retry_one = ngx_http_ratelimit_sliding_wait(w, n, e, prev, cur, 1);
    v->reset = cur ? 2 * w - e : w - e;
}


/* the node's counts moved to the window of now */

static void
ngx_http_ratelimit_sliding_node(ngx_http_ratelimit_node_t *node, int64_t w,
    int64_t now)
{
    int64_t  start;

    start = now - now % w;

    if (node->sw_start == start) {
        return;
    }

    node->sw_prev = (node->sw_start == start - w) ? node->sw_cur : 0;
    node->sw_cur = 0;
    node->sw_start = start;
}


void
ngx_http_ratelimit_local(ngx_http_ratelimit_check_t *chk, int64_t now)
{
    ngx_http_ratelimit_zone_t  *zone;
    ngx_http_ratelimit_node_t  *node;

    zone = chk->zone;

    ngx_shmtx_lock(&zone->shpool->mutex);

    node = ngx_http_ratelimit_lookup(zone, &chk->tier_name, &chk->key, 1);

    if (node == NULL) {
        ngx_shmtx_unlock(&zone->shpool->mutex);

        /* as limit_req: a full zone refuses rather than forgets */
        ngx_log_error(NGX_LOG_ALERT, chk->ctx->wait.request->connection->log,
                      0, "could not allocate node in ratelimit zone \"%V\"",
                      &zone->name);
        chk->status = NGX_HTTP_RATELIMIT_REJECTED;
        chk->verdict.retry = chk->gcra.interval;
        return;
    }

    if (node->ban_until > now) {
        ngx_shmtx_unlock(&zone->shpool->mutex);

        chk->status = NGX_HTTP_RATELIMIT_BANNED;
        chk->verdict.retry = node->ban_until - now;
        chk->verdict.reset = chk->verdict.retry;
        return;
    }

    if (zone->algorithm == NGX_HTTP_RATELIMIT_SLIDING) {
        ngx_http_ratelimit_sliding_node(node, zone->window, now);
        ngx_http_ratelimit_sliding(&chk->sw, chk->gcra.cost, now,
                                   node->sw_prev, node->sw_cur,
                                   &chk->verdict);
        if (chk->verdict.allowed) {
            node->sw_cur += chk->gcra.cost;
        }

    } else {
        ngx_http_ratelimit_gcra(&chk->gcra, now, &node->tat, &chk->verdict);
    }

    if (chk->verdict.allowed) {
        chk->status = NGX_HTTP_RATELIMIT_PASSED;

    } else {
        chk->status = NGX_HTTP_RATELIMIT_REJECTED;
        ngx_http_ratelimit_count_refusal(chk, node, now);
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);
}


/* a refusal counts toward a ban of the key kept in this zone (shared
 * memory and lease modes); called with the zone locked */

void
ngx_http_ratelimit_count_refusal(ngx_http_ratelimit_check_t *chk,
    ngx_http_ratelimit_node_t *node, int64_t now)
{
    ngx_http_ratelimit_zone_t  *zone;

    zone = chk->zone;

    if (zone->ban_threshold == 0) {
        return;
    }

    if (node->window_end <= now) {
        node->window_end = now + (int64_t) zone->ban_window * 1000;
        node->rejects = 0;
    }

    if (++node->rejects >= zone->ban_threshold) {
        node->ban_until = now + (int64_t) zone->ban_duration * 1000;
        node->rejects = 0;
        chk->status = NGX_HTTP_RATELIMIT_BANNED;
        chk->verdict.allowed = 0;
        chk->verdict.retry = node->ban_until - now;
    }
}


/*
 * shared memory: rbtree by tier and key, LRU queue, as limit_req.  A node
 * is known by its tier's name (empty for the zone's own rate), not by the
 * tier's position in the configuration: reordering tiers across a reload
 * leaves every bucket with its tier.  Its data holds the name, then the
 * key.
 */

uint32_t
ngx_http_ratelimit_hash(ngx_str_t *tier, ngx_str_t *key)
{
    u_char    sep;
    uint32_t  hash;

    sep = 0;      /* tier names are tokens: never a zero byte */

    ngx_crc32_init(hash);
    ngx_crc32_update(&hash, tier->data, tier->len);
    ngx_crc32_update(&hash, &sep, 1);
    ngx_crc32_update(&hash, key->data, key->len);
    ngx_crc32_final(hash);

    return hash;
}


/* (tier, key) against an entry's data: its tier name, then its key */

ngx_int_t
ngx_http_ratelimit_key_cmp(ngx_str_t *tier, ngx_str_t *key, u_char *data,
    size_t tier_len, size_t len)
{
    ngx_int_t  rc;

    if (tier_len != tier->len) {
        return (ngx_int_t) tier->len - (ngx_int_t) tier_len;
    }

    rc = ngx_memcmp(tier->data, data, tier->len);

    if (rc != 0) {
        return rc;
    }

    return ngx_memn2cmp(key->data, data + tier_len, key->len, len);
}


static ngx_int_t
ngx_http_ratelimit_node_cmp(ngx_http_ratelimit_node_t *lr, ngx_str_t *tier,
    ngx_str_t *key)
{
    return ngx_http_ratelimit_key_cmp(tier, key, lr->data, lr->tier_len,
                                      lr->len);
}


ngx_http_ratelimit_node_t *
ngx_http_ratelimit_lookup(ngx_http_ratelimit_zone_t *zone, ngx_str_t *tier,
    ngx_str_t *key, ngx_flag_t create)
{
    size_t                      size;
    uint32_t                    hash;
    ngx_int_t                   rc;
    ngx_rbtree_node_t          *node, *sentinel;
    ngx_http_ratelimit_node_t  *lr;

    hash = ngx_http_ratelimit_hash(tier, key);

    node = zone->sh->rbtree.root;
    sentinel = zone->sh->rbtree.sentinel;

    while (node != sentinel) {

        if (hash < node->key) {
            node = node->left;
            continue;
        }

        if (hash > node->key) {
            node = node->right;
            continue;
        }

        lr = (ngx_http_ratelimit_node_t *) &node->color;

        rc = ngx_http_ratelimit_node_cmp(lr, tier, key);

        if (rc == 0) {
            ngx_queue_remove(&lr->queue);
            ngx_queue_insert_head(&zone->sh->queue, &lr->queue);
            return lr;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    if (!create) {
        return NULL;
    }

    size = offsetof(ngx_rbtree_node_t, color)
           + offsetof(ngx_http_ratelimit_node_t, data)
           + tier->len + key->len;

    ngx_http_ratelimit_expire(zone, 1);

    node = ngx_slab_alloc_locked(zone->shpool, size);

    if (node == NULL) {
        ngx_http_ratelimit_expire(zone, 0);

        node = ngx_slab_alloc_locked(zone->shpool, size);
        if (node == NULL) {
            return NULL;
        }
    }

    node->key = hash;

    lr = (ngx_http_ratelimit_node_t *) &node->color;

    lr->tier_len = (u_char) tier->len;
    lr->len = (u_short) key->len;
    lr->tat = 0;
    lr->ban_until = 0;
    lr->window_end = 0;
    lr->rejects = 0;
    lr->sw_start = 0;
    lr->sw_cur = 0;
    lr->sw_prev = 0;
    lr->lease_tokens = 0;
    lr->lease_expire = 0;
    lr->lease_valid = 0;
    lr->lease_next = 0;
    lr->lease_fetch = 0;
    lr->lease_tat = 0;
    lr->lease_period = 0;
    lr->lease_asked = 0;
    lr->lease_asked_prev = 0;
    lr->lease_refused = 0;
    ngx_memcpy(ngx_cpymem(lr->data, tier->data, tier->len), key->data,
               key->len);

    ngx_rbtree_insert(&zone->sh->rbtree, node);
    ngx_queue_insert_head(&zone->sh->queue, &lr->queue);

    return lr;
}


/*
 * n == 1 frees one or two idle entries from the LRU tail; n == 0 frees
 * the oldest entry whatever its state, then one or two idle ones.
 */

static void
ngx_http_ratelimit_expire(ngx_http_ratelimit_zone_t *zone, ngx_uint_t n)
{
    int64_t                     now;
    ngx_queue_t                *q;
    ngx_rbtree_node_t          *node;
    ngx_http_ratelimit_node_t  *lr;

    now = ngx_http_ratelimit_now();

    while (n < 3) {

        if (ngx_queue_empty(&zone->sh->queue)) {
            return;
        }

        q = ngx_queue_last(&zone->sh->queue);
        lr = ngx_queue_data(q, ngx_http_ratelimit_node_t, queue);

        if (n++ != 0) {
            if (lr->tat > now || lr->ban_until > now
                || lr->window_end > now
                || lr->lease_expire > now || lr->lease_next > now
                || lr->lease_valid > now
                || lr->lease_fetch > now
                || (zone->window && lr->sw_start + 2 * zone->window > now))
            {
                return;
            }
        }

        ngx_queue_remove(q);

        node = (ngx_rbtree_node_t *)
                   ((u_char *) lr - offsetof(ngx_rbtree_node_t, color));

        ngx_rbtree_delete(&zone->sh->rbtree, node);
        ngx_slab_free_locked(zone->shpool, node);
    }
}


static void
ngx_http_ratelimit_rbtree_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_str_t                     tier, key;
    ngx_rbtree_node_t           **p;
    ngx_http_ratelimit_node_t    *lr, *lrt;

    for ( ;; ) {

        if (node->key < temp->key) {
            p = &temp->left;

        } else if (node->key > temp->key) {
            p = &temp->right;

        } else { /* node->key == temp->key */

            lr = (ngx_http_ratelimit_node_t *) &node->color;
            lrt = (ngx_http_ratelimit_node_t *) &temp->color;

            tier.data = lr->data;
            tier.len = lr->tier_len;
            key.data = lr->data + lr->tier_len;
            key.len = lr->len;

            p = (ngx_http_ratelimit_node_cmp(lrt, &tier, &key) < 0)
                ? &temp->left : &temp->right;
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


ngx_int_t
ngx_http_ratelimit_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_ratelimit_zone_t  *ozone = data;

    size_t                      len;
    ngx_http_ratelimit_zone_t  *zone;

    zone = shm_zone->data;

    if (ozone) {
        /*
         * nginx -s reload: buckets, bans and denials carry over.  As
         * limit_req, a zone whose key changed is refused (the old entries
         * would be read as the new key's); a rate, burst or tier change is
         * adopted: a bucket is a time, meaningful at any rate, and tiers
         * are known by name.
         */
        if (zone->key.value.len != ozone->key.value.len
            || ngx_strncmp(zone->key.value.data, ozone->key.value.data,
                           zone->key.value.len) != 0)
        {
            ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                          "ratelimit zone \"%V\" uses the \"%V\" key while "
                          "previously it used the \"%V\" key: rename the "
                          "zone, or restart nginx", &shm_zone->shm.name,
                          &zone->key.value, &ozone->key.value);
            return NGX_ERROR;
        }

        zone->sh = ozone->sh;
        zone->shpool = ozone->shpool;
        return NGX_OK;
    }

    zone->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        zone->sh = zone->shpool->data;
        return NGX_OK;
    }

    zone->sh = ngx_slab_alloc(zone->shpool,
                              sizeof(ngx_http_ratelimit_shctx_t));
    if (zone->sh == NULL) {
        return NGX_ERROR;
    }

    zone->shpool->data = zone->sh;

    ngx_rbtree_init(&zone->sh->rbtree, &zone->sh->sentinel,
                    ngx_http_ratelimit_rbtree_insert_value);

    ngx_queue_init(&zone->sh->queue);

    len = sizeof(" in ratelimit zone \"\"") + shm_zone->shm.name.len;

    zone->shpool->log_ctx = ngx_slab_alloc(zone->shpool, len);
    if (zone->shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(zone->shpool->log_ctx, " in ratelimit zone \"%V\"%Z",
                &shm_zone->shm.name);

    /* a full zone is handled (and logged) by the lookup */
    zone->shpool->log_nomem = 0;

    return NGX_OK;
}
