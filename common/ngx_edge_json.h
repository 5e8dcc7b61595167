/*
 * jansson helpers for the status, admin and metrics endpoints.
 *
 * jansson allocates its trees with malloc(); a handler builds a tree, turns
 * it into buffers from the request pool with ngx_edge_json_chain() and
 * drops it with json_decref() before returning.
 */

#ifndef _NGX_EDGE_JSON_H_INCLUDED_
#define _NGX_EDGE_JSON_H_INCLUDED_


#include "ngx_edge_common.h"

#include <jansson.h>


/* a JSON string of an ngx_str_t; bytes that are not UTF-8 become the text
 * "\xHH", so a hostile value never makes the document invalid */
NGX_EDGE_API json_t *ngx_edge_json_str(ngx_str_t *s);

/* the document as a chain of pool buffers; *size gets its length */
NGX_EDGE_API ngx_chain_t *ngx_edge_json_chain(ngx_pool_t *pool,
    json_t *json, size_t flags, off_t *size);


#endif /* _NGX_EDGE_JSON_H_INCLUDED_ */
