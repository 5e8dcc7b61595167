/*
 * The hot tier (L1) of ngx_http_cache_module: a shared-memory zone per
 * cache zone ("edge_cache_zone ... hot=SIZE") that keeps whole entries,
 * the exact bytes stored in Redis, under their Redis key, and for the
 * clients that do not take gzip the entry with its body inflated.  Every worker
 * of the node reads and fills it; it survives "nginx -s reload" when its
 * size does not change.
 *
 * An L1 copy is used for at most hot_max_age after it was last read from
 * or written to Redis; after that the lookup reads Redis again (and the
 * L2 hit refreshes the copy).  A copy is checked like any entry read from
 * Redis (parsed, key compared, Vary, freshness): shared memory is not
 * trusted more than the network.
 */

#ifndef _NGX_HTTP_CACHE_L1_H_INCLUDED_
#define _NGX_HTTP_CACHE_L1_H_INCLUDED_


#include "ngx_http_cache_module.h"


/* the zone's hot tier; NULL in ngx_http_cache_zone_t without hot= */
typedef struct ngx_http_cache_l1_s  ngx_http_cache_l1_t;


/* edge_cache_zone parameters: hot=, hot_max_age=, hot_max_entry=;
 * NGX_DECLINED when the parameter is not one of them */
ngx_int_t ngx_http_cache_l1_parse_param(ngx_conf_t *cf,
    ngx_http_cache_zone_t *zone, ngx_str_t *value);

/* after the zone's parameters: checks them and adds the shared memory */
char *ngx_http_cache_l1_init_conf(ngx_conf_t *cf,
    ngx_http_cache_zone_t *zone);

/* before the Redis GET: a fresh L1 copy answers the request (NGX_DONE or
 * an error status), else NGX_DECLINED and ctx is as it was */
ngx_int_t ngx_http_cache_l1_lookup(ngx_http_request_t *r,
    ngx_http_cache_ctx_t *ctx, ngx_http_cache_zone_t *zone);

/* an entry Redis returned for ctx->request's zone (ctx->variant says
 * under which key it was read) is kept, or refreshed, in L1 */
void ngx_http_cache_l1_promote(ngx_http_cache_ctx_t *ctx, u_char *data,
    size_t len);

/* the body of a gzip entry (from Redis or a hot copy), inflated for a
 * client that does not take gzip, kept as an inflated copy for the next
 * ones */
void ngx_http_cache_l1_keep_inflated(ngx_http_cache_ctx_t *ctx,
    ngx_str_t *body);

/* an entry just sent to Redis by the store (ctx->buf .. ctx->buf_last),
 * under the main key and, with Vary, the variant key */
void ngx_http_cache_l1_store(ngx_http_cache_ctx_t *ctx,
    ngx_http_cache_zone_t *zone);

/* the key's copies (main entry and every variant) leave L1: hash is the
 * key's md5 in hex, NGX_HTTP_CACHE_HASH_LEN bytes */
void ngx_http_cache_l1_purge(ngx_http_cache_zone_t *zone, u_char *hash);


#endif /* _NGX_HTTP_CACHE_L1_H_INCLUDED_ */
