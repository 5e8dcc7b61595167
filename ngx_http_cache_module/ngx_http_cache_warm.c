/*
 * Warm-up: "edge_cache_warm" makes a location take a list of URIs (the
 * request body of a POST, one per line) and fill the cache with them
 * through the normal path: each URI is a background subrequest of this
 * request that goes through its own location (edge_cache, proxy_pass,
 * ...), takes the key's lock, and stores what the origin answers.  At
 * most "concurrency=" of them run at once; the answer, once every URI is
 * done, is a JSON summary with one result per URI:
 *
 *   stored    fetched from the origin and stored
 *   cached    an entry was there already (fresh or not): left as it is
 *   busy      another request holds the key's lock: it fills the key
 *   failed    the origin's answer was not stored (an error, uncacheable,
 *             Redis unavailable, or a location without edge_cache)
 *
 * The subrequests' responses go nowhere but the cache (the store filters
 * swallow a background request's output).
 */

#include "ngx_http_cache_module.h"
#include "ngx_edge_json.h"


#define NGX_HTTP_CACHE_WARM_MAX_URIS   10000
#define NGX_HTTP_CACHE_WARM_MAX_URI    4096


typedef enum {
    NGX_HTTP_CACHE_WARM_PENDING = 0,
    NGX_HTTP_CACHE_WARM_STORED,
    NGX_HTTP_CACHE_WARM_CACHED,
    NGX_HTTP_CACHE_WARM_BUSY,
    NGX_HTTP_CACHE_WARM_FAILED
} ngx_http_cache_warm_result_e;


typedef struct {
    ngx_str_t                      uri;      /* path */
    ngx_str_t                      args;
    ngx_uint_t                     status;   /* the origin's, or 0 */
    ngx_http_cache_warm_result_e   result;
} ngx_http_cache_warm_uri_t;


typedef struct {
    ngx_http_request_t            *request;
    ngx_http_cache_warm_uri_t     *uris;
    ngx_uint_t                     n;
    ngx_uint_t                     next;     /* the next to launch */
    ngx_uint_t                     running;
    ngx_uint_t                     done;
    ngx_uint_t                     concurrency;
} ngx_http_cache_warm_t;


/* a subrequest's link back to its URI */
typedef struct {
    ngx_http_cache_warm_t         *warm;
    ngx_http_cache_warm_uri_t     *item;
} ngx_http_cache_warm_link_t;


static void ngx_http_cache_warm_body(ngx_http_request_t *r);
static ngx_int_t ngx_http_cache_warm_launch(ngx_http_cache_warm_t *warm);
static void ngx_http_cache_warm_finish(ngx_http_request_t *r);


static ngx_str_t  ngx_http_cache_warm_results[] = {
    ngx_string("pending"),
    ngx_string("stored"),
    ngx_string("cached"),
    ngx_string("busy"),
    ngx_string("failed")
};


static ngx_int_t
ngx_http_cache_warm_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *text)
{
    ngx_buf_t    *b;
    ngx_chain_t   out;
    ngx_int_t     rc;
    size_t        len;

    len = sizeof("{\"error\":\"\"}\n") - 1 + ngx_strlen(text);

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last = ngx_sprintf(b->last, "{\"error\":\"%s\"}\n", text);
    b->last_buf = 1;
    b->last_in_chain = 1;

    r->headers_out.status = status;
    r->headers_out.content_length_n = b->last - b->pos;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


ngx_int_t
ngx_http_cache_warm_handler(ngx_http_request_t *r)
{
    ngx_int_t  rc;

    if (r->method != NGX_HTTP_POST) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    if (r != r->main) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    /* the list is read in memory: a body over client_body_buffer_size
     * is refused (413) */
    r->request_body_in_single_buf = 1;
    r->request_body_in_persistent_file = 0;

    rc = ngx_http_read_client_request_body(r, ngx_http_cache_warm_body);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


/* one line: "/path[?args]", visible ASCII, bounded */

static ngx_int_t
ngx_http_cache_warm_parse_line(u_char *p, u_char *end,
    ngx_http_cache_warm_uri_t *item)
{
    u_char  *q, *args;

    if (end - p > NGX_HTTP_CACHE_WARM_MAX_URI || p == end || *p != '/') {
        return NGX_ERROR;
    }

    args = NULL;

    for (q = p; q < end; q++) {
        if (*q <= 0x20 || *q >= 0x7f) {
            return NGX_ERROR;
        }

        if (*q == '?' && args == NULL) {
            args = q;
        }
    }

    item->uri.data = p;
    item->uri.len = (args ? args : end) - p;

    if (args) {
        item->args.data = args + 1;
        item->args.len = end - args - 1;
    }

    return NGX_OK;
}


static void
ngx_http_cache_warm_body(ngx_http_request_t *r)
{
    u_char                     *p, *end, *eol;
    ngx_buf_t                  *b;
    ngx_uint_t                  n;
    ngx_http_cache_ctx_t       *ctx;
    ngx_http_cache_warm_t      *warm;
    ngx_http_cache_loc_conf_t  *clcf;

    if (r->request_body == NULL || r->request_body->bufs == NULL
        || r->headers_in.content_length_n == 0)
    {
        ngx_http_finalize_request(r, ngx_http_cache_warm_error(r,
                                  NGX_HTTP_BAD_REQUEST, "no list of URIs"));
        return;
    }

    if (r->request_body->bufs->next || r->request_body->temp_file
        || !ngx_buf_in_memory(r->request_body->bufs->buf))
    {
        ngx_http_finalize_request(r, ngx_http_cache_warm_error(r,
                                  NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                  "the list is larger than "
                                  "client_body_buffer_size"));
        return;
    }

    b = r->request_body->bufs->buf;

    warm = ngx_pcalloc(r->pool, sizeof(ngx_http_cache_warm_t));
    if (warm == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    /* count, then parse */
    n = 0;

    for (p = b->pos; p < b->last; p++) {
        if (*p == LF) {
            n++;
        }
    }

    n++;

    if (n > NGX_HTTP_CACHE_WARM_MAX_URIS + 1) {
        ngx_http_finalize_request(r, ngx_http_cache_warm_error(r,
                                  NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                  "more than 10000 URIs"));
        return;
    }

    warm->uris = ngx_pcalloc(r->pool, n * sizeof(ngx_http_cache_warm_uri_t));
    if (warm->uris == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    for (p = b->pos; p < b->last; p = eol + 1) {
        eol = ngx_strlchr(p, b->last, LF);
        if (eol == NULL) {
            eol = b->last;
        }

        end = eol;

        if (end > p && end[-1] == CR) {
            end--;
        }

        if (end == p) {
            continue;
        }

        if (warm->n == NGX_HTTP_CACHE_WARM_MAX_URIS
            || ngx_http_cache_warm_parse_line(p, end, &warm->uris[warm->n])
               != NGX_OK)
        {
            ngx_http_finalize_request(r, ngx_http_cache_warm_error(r,
                                      NGX_HTTP_BAD_REQUEST,
                                      "each line must be one URI: "
                                      "/path[?args], visible ASCII, at most "
                                      "4096 bytes; at most 10000 lines"));
            return;
        }

        warm->n++;
    }

    if (warm->n == 0) {
        ngx_http_finalize_request(r, ngx_http_cache_warm_error(r,
                                  NGX_HTTP_BAD_REQUEST, "no list of URIs"));
        return;
    }

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_cache_module);

    /* the job hangs off a cache context of this request (which the
     * cache's filters leave alone: it did not look anything up) */
    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_cache_ctx_t));
    if (ctx == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ctx->request = r;
    ctx->warm_job = warm;
    ngx_http_set_ctx(r, ctx, ngx_http_cache_module);

    warm->request = r;
    warm->concurrency = clcf->warm_concurrency;

    /* held until the last subrequest is done */
    r->main->count++;

    while (warm->running < warm->concurrency && warm->next < warm->n) {
        if (ngx_http_cache_warm_launch(warm) != NGX_OK) {
            break;
        }
    }

    if (warm->running == 0) {
        /* nothing could be launched */
        r->main->count--;
        ngx_http_cache_warm_finish(r);
        return;
    }

    r->write_event_handler = ngx_http_request_empty_handler;

    ngx_http_finalize_request(r, NGX_DONE);
}


/* a subrequest ends: its result, the next URI, or the answer */

static ngx_int_t
ngx_http_cache_warm_done(ngx_http_request_t *sr, void *data, ngx_int_t rc)
{
    ngx_http_cache_warm_link_t *link = data;

    ngx_http_request_t     *r;
    ngx_http_cache_ctx_t   *ctx;
    ngx_http_cache_warm_t  *warm;

    warm = link->warm;

    if (link->item->result != NGX_HTTP_CACHE_WARM_PENDING) {
        /* finalized twice (a redirect): counted once */
        return rc;
    }

    ctx = ngx_http_get_module_ctx(sr, ngx_http_cache_module);

    link->item->status = sr->headers_out.status;

    if (ctx && ctx->stored_flag) {
        link->item->result = NGX_HTTP_CACHE_WARM_STORED;

    } else if (ctx && ctx->lock_rc == NGX_HTTP_CACHE_LOCK_ENTRY) {
        link->item->result = NGX_HTTP_CACHE_WARM_CACHED;
        link->item->status = 0;

    } else if (ctx && ctx->lock_rc == NGX_HTTP_CACHE_LOCK_BUSY) {
        link->item->result = NGX_HTTP_CACHE_WARM_BUSY;
        link->item->status = 0;

    } else {
        link->item->result = NGX_HTTP_CACHE_WARM_FAILED;
    }

    warm->running--;
    warm->done++;

    r = warm->request;

    while (warm->running < warm->concurrency && warm->next < warm->n) {
        if (ngx_http_cache_warm_launch(warm) != NGX_OK) {
            break;
        }
    }

    if (warm->running == 0) {
        /* the answer is sent from the main request's own turn */
        r->write_event_handler = ngx_http_cache_warm_finish;
        (void) ngx_http_post_request(r, NULL);
    }

    return rc;
}


static ngx_int_t
ngx_http_cache_warm_launch(ngx_http_cache_warm_t *warm)
{
    ngx_http_request_t             *r, *sr;
    ngx_http_cache_ctx_t           *sctx;
    ngx_http_post_subrequest_t     *ps;
    ngx_http_cache_warm_uri_t      *item;
    ngx_http_cache_warm_link_t     *link;

    r = warm->request;
    item = &warm->uris[warm->next++];

    ps = ngx_palloc(r->pool, sizeof(ngx_http_post_subrequest_t));
    link = ngx_palloc(r->pool, sizeof(ngx_http_cache_warm_link_t));
    sctx = ngx_pcalloc(r->pool, sizeof(ngx_http_cache_ctx_t));

    if (ps == NULL || link == NULL || sctx == NULL) {
        item->result = NGX_HTTP_CACHE_WARM_FAILED;
        warm->done++;
        return NGX_ERROR;
    }

    link->warm = warm;
    link->item = item;
    ps->handler = ngx_http_cache_warm_done;
    ps->data = link;

    if (ngx_http_subrequest(r, &item->uri, item->args.len ? &item->args : NULL,
                            &sr, ps, NGX_HTTP_SUBREQUEST_BACKGROUND)
        != NGX_OK)
    {
        item->result = NGX_HTTP_CACHE_WARM_FAILED;
        warm->done++;
        return NGX_ERROR;
    }

    /* a GET without the list as its body */
    sr->request_body = NULL;
    sr->headers_in.content_length = NULL;
    sr->headers_in.content_length_n = -1;
    sr->headers_in.content_type = NULL;

    sctx->request = sr;
    sctx->background = 1;
    sctx->warm = 1;
    sctx->expect_len = -1;
    sctx->status = NGX_HTTP_CACHE_ST_MISS;

    ngx_http_set_ctx(sr, sctx, ngx_http_cache_module);

    warm->running++;

    return NGX_OK;
}


static void
ngx_http_cache_warm_finish(ngx_http_request_t *r)
{
    size_t                      len;
    ngx_buf_t                  *b;
    ngx_uint_t                  i, counts[5];
    ngx_chain_t                 out;
    ngx_int_t                   rc;
    ngx_http_cache_ctx_t       *ctx;
    ngx_http_cache_warm_t      *warm;
    ngx_http_cache_warm_uri_t  *item;

    ctx = ngx_http_get_module_ctx(r, ngx_http_cache_module);
    warm = ctx ? ctx->warm_job : NULL;

    r->write_event_handler = ngx_http_request_empty_handler;

    if (warm == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ngx_memzero(counts, sizeof(counts));

    len = sizeof("{\"uris\":,\"stored\":,\"cached\":,\"busy\":,\"failed\":,"
                 "\"results\":[]}\n") + 5 * NGX_INT_T_LEN;

    for (i = 0; i < warm->n; i++) {
        item = &warm->uris[i];
        counts[item->result]++;
        len += sizeof("{\"uri\":\"\",\"result\":\"pending\",\"status\":},")
               + NGX_INT_T_LEN
               + NGX_EDGE_JSON_ESCAPED_MAX(item->uri.len) + 1
               + NGX_EDGE_JSON_ESCAPED_MAX(item->args.len);
    }

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    b->last = ngx_sprintf(b->last, "{\"uris\":%ui,\"stored\":%ui,"
                          "\"cached\":%ui,\"busy\":%ui,\"failed\":%ui,"
                          "\"results\":[",
                          warm->n, counts[NGX_HTTP_CACHE_WARM_STORED],
                          counts[NGX_HTTP_CACHE_WARM_CACHED],
                          counts[NGX_HTTP_CACHE_WARM_BUSY],
                          counts[NGX_HTTP_CACHE_WARM_FAILED]
                          + counts[NGX_HTTP_CACHE_WARM_PENDING]);

    for (i = 0; i < warm->n; i++) {
        item = &warm->uris[i];

        b->last = ngx_cpymem(b->last, i ? ",{\"uri\":\"" : "{\"uri\":\"",
                             i ? 9 : 8);
        b->last = ngx_edge_json_escape(b->last, item->uri.data,
                                       item->uri.len);
        if (item->args.len) {
            *b->last++ = '?';
            b->last = ngx_edge_json_escape(b->last, item->args.data,
                                           item->args.len);
        }

        b->last = ngx_sprintf(b->last, "\",\"result\":\"%V\",\"status\":%ui}",
                              &ngx_http_cache_warm_results[item->result],
                              item->status);
    }

    b->last = ngx_cpymem(b->last, "]}\n", 3);
    b->last_buf = 1;
    b->last_in_chain = 1;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = b->last - b->pos;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        ngx_http_finalize_request(r, rc);
        return;
    }

    out.buf = b;
    out.next = NULL;

    ngx_http_finalize_request(r, ngx_http_output_filter(r, &out));
}
