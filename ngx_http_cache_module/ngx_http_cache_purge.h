/*
 * Purges of ngx_http_cache_module (ngx_http_cache_purge.c): the purge
 * endpoint (edge_cache_purge), the tags of stored responses, and the
 * "check on read" that makes a purge on any node seen by every worker.
 *
 * Every soft, tag and key purge is recorded in the zone's sorted set
 * "<zone>:purges" (member "s:<md5hex>", "t:<tag>" or "k:<md5hex>", score:
 * the purge's wall-clock time, ms).  Each worker polls the set every
 * purge_poll= and keeps the records in a bounded table of its own;
 * ngx_http_cache_purge_check() compares them with an entry's response
 * time.
 */

#ifndef _NGX_HTTP_CACHE_PURGE_H_INCLUDED_
#define _NGX_HTTP_CACHE_PURGE_H_INCLUDED_


#include "ngx_http_cache_module.h"


/* ngx_http_cache_purge_check(): usable, but stale from now on */
#define NGX_HTTP_CACHE_PURGE_SOFT  1


extern ngx_module_t  ngx_http_cache_purge_module;


/* NGX_OK: usable; NGX_DECLINED: purged (a miss); NGX_HTTP_CACHE_PURGE_SOFT:
 * soft-purged (the caller treats it as stale) */
ngx_int_t ngx_http_cache_purge_check(ngx_http_cache_ctx_t *ctx,
    ngx_http_cache_zone_t *zone, ngx_http_cache_entry_t *e);

/* fills ctx->tags from the edge_cache_tags_header response header */
ngx_int_t ngx_http_cache_purge_collect_tags(ngx_http_request_t *r,
    ngx_http_cache_ctx_t *ctx);

/* the zone of the request's location (edge_cache), or NULL */
ngx_http_cache_zone_t *ngx_http_cache_purge_zone(ngx_http_request_t *r);


#endif /* _NGX_HTTP_CACHE_PURGE_H_INCLUDED_ */
