/*
 * zlib on a request's pool: the one allocator the modules give zlib.
 * zlib's state (up to about 256 KB for deflate) then goes with the pool;
 * nothing is freed early, and nothing outlives the request.
 */

#ifndef _NGX_EDGE_ZLIB_H_INCLUDED_
#define _NGX_EDGE_ZLIB_H_INCLUDED_


#include "ngx_edge_common.h"

#include <zlib.h>


static ngx_inline void *
ngx_edge_zlib_alloc(void *opaque, u_int items, u_int size)
{
    return ngx_palloc((ngx_pool_t *) opaque, (size_t) items * size);
}


static ngx_inline void
ngx_edge_zlib_free(void *opaque, void *address)
{
    /* the pool frees it */
}


/* before deflateInit2() / inflateInit2() */
static ngx_inline void
ngx_edge_zlib_use_pool(z_stream *zs, ngx_pool_t *pool)
{
    zs->zalloc = ngx_edge_zlib_alloc;
    zs->zfree = ngx_edge_zlib_free;
    zs->opaque = pool;
}


#endif /* _NGX_EDGE_ZLIB_H_INCLUDED_ */
