/*
 * JSON writing helpers for the edge modules' endpoints.
 *
 * Documents are written by hand into nginx buffers, as they stream: a
 * tree of every value (jansson's) would have to be built whole in memory
 * before the first byte is sent.
 */

#ifndef _NGX_EDGE_JSON_H_INCLUDED_
#define _NGX_EDGE_JSON_H_INCLUDED_


#include "ngx_edge_common.h"


/* the most bytes ngx_edge_json_escape() writes for len bytes */
#define NGX_EDGE_JSON_ESCAPED_MAX(len)  (6 * (len))


/*
 * The inside of a JSON string (no quotes) for len bytes at src: '"' and
 * '\' escaped, control characters as \n, \r, \t or \u00XX, and each
 * ill-formed UTF-8 subpart as U+FFFD (ngx_edge_utf8.h), so a hostile
 * value never makes the document invalid.  Returns the end.
 */
NGX_EDGE_API u_char *ngx_edge_json_escape(u_char *dst, u_char *src,
    size_t len);


#endif /* _NGX_EDGE_JSON_H_INCLUDED_ */
