/*
 * ngx_http_ratelimit_module: Redis mode's deny and ban cache.
 *
 * After Redis refused a key, the key is refused here until a request
 * could pass, and after Redis banned it, until the ban ends, without
 * asking Redis again.  The cache is the worker's own (an rbtree by tier
 * and key with an LRU queue, in the worker's memory): a decision reads it
 * without any lock, where a cache in the zone's shared memory took the
 * zone's mutex on every Redis-mode decision of every worker.  The price:
 * each worker learns a refusal from Redis once, so a refused key costs
 * Redis at most one call per worker per refusal instead of one per node.
 * Times are monotonic.
 */

#include "ngx_http_ratelimit_module.h"


/* one entry per this many bytes of the zone: a 1m zone caches 4096 keys per
 * worker (at most about 1.4 MB with the longest keys) */
#define NGX_HTTP_RATELIMIT_DENY_BYTES  256


typedef struct {
    ngx_rbtree_node_t            node;
    ngx_queue_t                  queue;
    int64_t                      deny_until;
    int64_t                      ban_until;
    u_short                      len;          /* the key's */
    u_char                       tier_len;     /* the tier name's */
    u_char                       data[1];      /* tier name, then key */
} ngx_http_ratelimit_deny_t;


static ngx_http_ratelimit_deny_t *ngx_http_ratelimit_deny_lookup(
    ngx_http_ratelimit_deny_cache_t *cache, uint32_t hash, ngx_str_t *tier,
    ngx_str_t *key);
static void ngx_http_ratelimit_deny_remove(
    ngx_http_ratelimit_deny_cache_t *cache, ngx_http_ratelimit_deny_t *d);
static void ngx_http_ratelimit_deny_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);


void
ngx_http_ratelimit_deny_init(ngx_http_ratelimit_deny_cache_t *cache,
    size_t zone_size)
{
    ngx_rbtree_init(&cache->rbtree, &cache->sentinel,
                    ngx_http_ratelimit_deny_insert_value);
    ngx_queue_init(&cache->lru);

    cache->n = 0;
    cache->max = ngx_max(zone_size / NGX_HTTP_RATELIMIT_DENY_BYTES, 64);
}


ngx_flag_t
ngx_http_ratelimit_cached(ngx_http_ratelimit_check_t *chk, int64_t now)
{
    ngx_http_ratelimit_deny_t        *d;
    ngx_http_ratelimit_deny_cache_t  *cache;

    cache = &chk->zone->deny;

    if (cache->n == 0) {
        return 0;
    }

    d = ngx_http_ratelimit_deny_lookup(cache,
                                       ngx_http_ratelimit_hash(&chk->tier_name,
                                                               &chk->key),
                                       &chk->tier_name, &chk->key);
    if (d == NULL) {
        return 0;
    }

    if (d->ban_until > now) {
        chk->status = NGX_HTTP_RATELIMIT_BANNED;
        chk->verdict.retry = d->ban_until - now;

    } else if (d->deny_until > now) {
        chk->status = NGX_HTTP_RATELIMIT_REJECTED;
        chk->verdict.retry = d->deny_until - now;

    } else {
        ngx_http_ratelimit_deny_remove(cache, d);
        return 0;
    }

    /* the bucket refills no sooner than the refusal ends */
    chk->verdict.reset = chk->verdict.retry;

    return 1;
}


/*
 * The time of a refusal is the one for a request of cost 1, so a cheaper
 * request than the refused one is not refused longer than Redis would.
 * Zones with bans cache the ban only: their refusals are counted in
 * Redis, for every node to see.
 */

void
ngx_http_ratelimit_remember(ngx_http_ratelimit_check_t *chk, ngx_flag_t ban,
    int64_t now)
{
    size_t                            size;
    int64_t                           until;
    uint32_t                          hash;
    ngx_uint_t                        ended;
    ngx_queue_t                      *q;
    ngx_http_ratelimit_zone_t        *zone;
    ngx_http_ratelimit_deny_t        *d;
    ngx_http_ratelimit_deny_cache_t  *cache;

    zone = chk->zone;
    cache = &zone->deny;

    if (!ban && zone->ban_threshold) {
        /* every refusal must reach Redis to count toward a ban there */
        return;
    }

    if (ban) {
        until = now + chk->verdict.retry;

    } else {
        until = now + ((zone->algorithm == NGX_HTTP_RATELIMIT_SLIDING)
                       ? chk->verdict.retry_one
                       : chk->verdict.retry
                         - (chk->gcra.cost - 1) * chk->gcra.interval);

        if (until <= now) {
            return;
        }
    }

    hash = ngx_http_ratelimit_hash(&chk->tier_name, &chk->key);

    d = ngx_http_ratelimit_deny_lookup(cache, hash, &chk->tier_name,
                                       &chk->key);

    if (d == NULL) {
        /* make room, from the least recently used end: an entry when the
         * cache is full, and up to two that have ended */
        ended = 0;

        while (!ngx_queue_empty(&cache->lru)) {
            q = ngx_queue_last(&cache->lru);
            d = ngx_queue_data(q, ngx_http_ratelimit_deny_t, queue);

            if (cache->n < cache->max
                && (ended++ == 2
                    || d->deny_until > now || d->ban_until > now))
            {
                break;
            }

            ngx_http_ratelimit_deny_remove(cache, d);
        }

        size = offsetof(ngx_http_ratelimit_deny_t, data)
               + chk->tier_name.len + chk->key.len;

        d = ngx_alloc(size, chk->ctx->wait.request->connection->log);
        if (d == NULL) {
            return;       /* Redis decides, as without a cache */
        }

        d->node.key = hash;
        d->deny_until = 0;
        d->ban_until = 0;
        d->tier_len = (u_char) chk->tier_name.len;
        d->len = (u_short) chk->key.len;
        ngx_memcpy(ngx_cpymem(d->data, chk->tier_name.data,
                              chk->tier_name.len),
                   chk->key.data, chk->key.len);

        ngx_rbtree_insert(&cache->rbtree, &d->node);
        ngx_queue_insert_head(&cache->lru, &d->queue);
        cache->n++;
    }

    if (ban) {
        d->ban_until = until;

    } else {
        d->deny_until = until;
    }
}


void
ngx_http_ratelimit_deny_free(ngx_http_ratelimit_deny_cache_t *cache)
{
    ngx_queue_t                *q;
    ngx_http_ratelimit_deny_t  *d;

    while (!ngx_queue_empty(&cache->lru)) {
        q = ngx_queue_head(&cache->lru);
        d = ngx_queue_data(q, ngx_http_ratelimit_deny_t, queue);
        ngx_http_ratelimit_deny_remove(cache, d);
    }
}


static ngx_http_ratelimit_deny_t *
ngx_http_ratelimit_deny_lookup(ngx_http_ratelimit_deny_cache_t *cache,
    uint32_t hash, ngx_str_t *tier, ngx_str_t *key)
{
    ngx_int_t                   rc;
    ngx_rbtree_node_t          *node, *sentinel;
    ngx_http_ratelimit_deny_t  *d;

    node = cache->rbtree.root;
    sentinel = cache->rbtree.sentinel;

    while (node != sentinel) {

        if (hash != node->key) {
            node = (hash < node->key) ? node->left : node->right;
            continue;
        }

        d = (ngx_http_ratelimit_deny_t *) node;

        rc = ngx_http_ratelimit_key_cmp(tier, key, d->data, d->tier_len,
                                        d->len);
        if (rc == 0) {
            ngx_queue_remove(&d->queue);
            ngx_queue_insert_head(&cache->lru, &d->queue);
            return d;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


static void
ngx_http_ratelimit_deny_remove(ngx_http_ratelimit_deny_cache_t *cache,
    ngx_http_ratelimit_deny_t *d)
{
    ngx_queue_remove(&d->queue);
    ngx_rbtree_delete(&cache->rbtree, &d->node);
    ngx_free(d);
    cache->n--;
}


static void
ngx_http_ratelimit_deny_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_str_t                    tier, key;
    ngx_rbtree_node_t          **p;
    ngx_http_ratelimit_deny_t   *d, *dt;

    d = (ngx_http_ratelimit_deny_t *) node;

    tier.data = d->data;
    tier.len = d->tier_len;
    key.data = d->data + d->tier_len;
    key.len = d->len;

    for ( ;; ) {

        if (node->key != temp->key) {
            p = (node->key < temp->key) ? &temp->left : &temp->right;

        } else {
            dt = (ngx_http_ratelimit_deny_t *) temp;

            p = (ngx_http_ratelimit_key_cmp(&tier, &key, dt->data,
                                            dt->tier_len, dt->len) < 0)
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
