/*
 * A response from a stored entry: status and headers from the entry, the
 * Age computed now, the body sent from the Redis reply itself (kept until
 * the request ends: no copy), or inflated once for a client that does
 * not accept gzip.  Conditional requests are answered here (304).
 */

#include "ngx_http_cache_module.h"
#include "ngx_edge_zlib.h"
#include "ngx_http_cache_l1.h"




ngx_flag_t
ngx_http_cache_accepts_gzip(ngx_http_request_t *r)
{
    /* the same rule as the Vary normalisation of Accept-Encoding */
    return ngx_http_cache_rfc_accepts_gzip(&r->headers_in.headers) != 0;
}


/* the body for a client that does not take gzip: the entry's, inflated;
 * NGX_DECLINED when it does not inflate to exactly its stated length, or
 * states more than edge_cache_max_size (the store never writes such an
 * entry: the buffer is allocated at the stated length, and an entry from
 * the network must not choose how much memory a request takes) */

static ngx_int_t
ngx_http_cache_inflate(ngx_http_request_t *r, ngx_http_cache_entry_t *e,
    ngx_str_t *out)
{
    int                         rc;
    z_stream                    zs;
    ngx_http_cache_loc_conf_t  *clcf;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_cache_module);

    if (e->body_raw_len > clcf->max_size) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "edge_cache: a stored body claims %uz bytes inflated, "
                      "more than edge_cache_max_size %uz: a miss",
                      e->body_raw_len, clcf->max_size);
        return NGX_DECLINED;
    }

    out->len = e->body_raw_len;
    out->data = ngx_pnalloc(r->pool, out->len + 1);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(&zs, sizeof(z_stream));
    ngx_edge_zlib_use_pool(&zs, r->pool);

    if (inflateInit2(&zs, MAX_WBITS + 16) != Z_OK) {
        return NGX_ERROR;
    }

    zs.next_in = (u_char *) e->body.data;
    zs.avail_in = (uInt) e->body.len;
    zs.next_out = out->data;
    zs.avail_out = (uInt) out->len + 1;

    rc = inflate(&zs, Z_FINISH);

    inflateEnd(&zs);

    if (rc != Z_STREAM_END || zs.avail_in != 0 || zs.total_out != out->len) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "edge_cache: a stored body does not inflate "
                      "(zlib %d, %uz of %uz bytes): a miss",
                      rc, (size_t) zs.total_out, out->len);
        return NGX_DECLINED;
    }

    return NGX_OK;
}


ngx_table_elt_t *
ngx_http_cache_push_header(ngx_http_request_t *r, u_char *name, size_t nlen,
    u_char *value, size_t vlen)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NULL;
    }

    h->hash = 1;
#if (nginx_version >= 1023000)
    h->next = NULL;
#endif
    h->key.data = name;
    h->key.len = nlen;
    h->value.data = value;
    h->value.len = vlen;
    h->lowcase_key = NULL;

    return h;
}


#define ngx_http_cache_is(name, lit)                                         \
    ((name)->len == sizeof(lit) - 1                                          \
     && ngx_strncasecmp((u_char *) (name)->data, (u_char *) lit,             \
                        sizeof(lit) - 1) == 0)


/* the stored headers into r->headers_out, with the fields nginx's own
 * filters read set as the upstream module sets them */

ngx_int_t
ngx_http_cache_set_headers(ngx_http_request_t *r, ngx_http_cache_entry_t *e,
    ngx_list_t *except)
{
    const u_char            *p, *end;
    ngx_table_elt_t         *h;
    ngx_http_cache_bytes_t   name, value;

    p = e->headers.data;
    end = p + e->headers.len;

    while ((p = ngx_http_cache_entry_next_header(p, end, &name, &value))) {

        if (except
            && ngx_http_cache_find_header(except, (const char *) name.data,
                                          name.len))
        {
            /* replaced by the revalidation's 304 */
            continue;
        }

        if (ngx_http_cache_is(&name, "Accept-Ranges")) {
            /* the range filter adds its own (an entry stored before
             * Accept-Ranges was left out) */
            continue;
        }

        if (ngx_http_cache_is(&name, "Content-Type")) {
            r->headers_out.content_type.data = (u_char *) value.data;
            r->headers_out.content_type.len = value.len;
            r->headers_out.content_type_len = value.len;
            r->headers_out.content_type_lowcase = NULL;
            continue;
        }

        h = ngx_http_cache_push_header(r, (u_char *) name.data, name.len,
                                       (u_char *) value.data, value.len);
        if (h == NULL) {
            return NGX_ERROR;
        }

        if (ngx_http_cache_is(&name, "ETag")) {
            r->headers_out.etag = h;

        } else if (ngx_http_cache_is(&name, "Last-Modified")) {
            r->headers_out.last_modified = h;
            r->headers_out.last_modified_time =
                ngx_parse_http_time(h->value.data, h->value.len);

        } else if (ngx_http_cache_is(&name, "Date")) {
            r->headers_out.date = h;

        } else if (ngx_http_cache_is(&name, "Location")) {
            r->headers_out.location = h;

        } else if (ngx_http_cache_is(&name, "Content-Encoding")) {
            r->headers_out.content_encoding = h;

        } else if (ngx_http_cache_is(&name, "Expires")) {
            r->headers_out.expires = h;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_cache_add_age(ngx_http_request_t *r, int64_t age_ms)
{
    u_char  *p;

    p = ngx_pnalloc(r->pool, NGX_INT64_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    if (ngx_http_cache_push_header(r, (u_char *) "Age", 3, p,
                                   ngx_sprintf(p, "%L", age_ms / 1000) - p)
        == NULL)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * One stored entry answers gzip and identity clients: the response varies
 * by Accept-Encoding.  Added here, from the entry's gzip flag, rather than
 * stored with every entry: to the origin's Vary, or as a field of its own.
 */

static ngx_int_t
ngx_http_cache_vary_encoding(ngx_http_request_t *r)
{
    u_char           *p;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    for (part = &r->headers_out.headers.part; part; part = part->next) {
        h = part->elts;

        for (i = 0; i < part->nelts; i++) {

            if (h[i].hash == 0 || h[i].key.len != 4
                || ngx_strncasecmp(h[i].key.data, (u_char *) "Vary", 4) != 0)
            {
                continue;
            }

            if (ngx_http_cache_has_token(&h[i].value, "accept-encoding",
                                         sizeof("accept-encoding") - 1)
                || ngx_http_cache_has_token(&h[i].value, "*", 1))
            {
                return NGX_OK;
            }

            p = ngx_pnalloc(r->pool, h[i].value.len
                                     + sizeof(", Accept-Encoding") - 1);
            if (p == NULL) {
                return NGX_ERROR;
            }

            h[i].value.len = ngx_cpymem(ngx_cpymem(p, h[i].value.data,
                                                   h[i].value.len),
                                        ", Accept-Encoding",
                                        sizeof(", Accept-Encoding") - 1)
                             - p;
            h[i].value.data = p;

            return NGX_OK;
        }
    }

    if (ngx_http_cache_push_header(r, (u_char *) "Vary", 4,
                                   (u_char *) "Accept-Encoding",
                                   sizeof("Accept-Encoding") - 1)
        == NULL)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* gzip sent as stored: a strong ETag names the identity representation,
 * so the gzip one gets the weak form, as nginx's gzip filter does */

static ngx_int_t
ngx_http_cache_gzip_headers(ngx_http_request_t *r)
{
    u_char           *p;
    ngx_table_elt_t  *h, *etag;

    h = ngx_http_cache_push_header(r, (u_char *) "Content-Encoding",
                                   sizeof("Content-Encoding") - 1,
                                   (u_char *) "gzip", 4);
    if (h == NULL) {
        return NGX_ERROR;
    }

    r->headers_out.content_encoding = h;

    etag = r->headers_out.etag;

    if (etag && etag->value.len > 2 && etag->value.data[0] == '"') {
        p = ngx_pnalloc(r->pool, etag->value.len + 2);
        if (p == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(ngx_cpymem(p, "W/", 2), etag->value.data,
                   etag->value.len);

        etag->value.data = p;
        etag->value.len += 2;
    }

    return NGX_OK;
}


/*
 * r->headers_out from the entry, and the body to send (empty for a 304 or
 * a HEAD); NGX_DECLINED when the body does not inflate (then nothing was
 * changed that matters: the caller treats the entry as a miss).
 */

ngx_int_t
ngx_http_cache_prepare_response(ngx_http_request_t *r,
    ngx_http_cache_ctx_t *ctx, ngx_str_t *body)
{
    time_t                      t, date;
    ngx_int_t                   rc;
    ngx_str_t                   etag;
    ngx_http_cache_entry_t     *e;
    ngx_http_cache_loc_conf_t  *clcf;

    e = &ctx->entry;

    body->data = (u_char *) e->body.data;
    body->len = e->body.len;

    ctx->client_gzip = 0;

    if (e->flags & NGX_HTTP_CACHE_ENTRY_GZIP) {
        ctx->client_gzip = ngx_http_cache_accepts_gzip(r);

        if (!ctx->client_gzip && r->method != NGX_HTTP_HEAD) {
            rc = ngx_http_cache_inflate(r, e, body);
            if (rc != NGX_OK) {
                return rc;
            }

            clcf = ngx_http_get_module_loc_conf(r, ngx_http_cache_module);

            if (clcf->zone) {
                ngx_http_cache_count(clcf->zone, st_inflated, 1);
            }

            if (ctx->tier && ctx->status == NGX_HTTP_CACHE_ST_HIT) {
                /* the hot tier's copy for the next client like this one */
                ngx_http_cache_l1_keep_inflated(ctx, body);
            }
        }
    }

    if (!ctx->revalidating) {
        /* a revalidated entry's headers are set already, merged */
        r->headers_out.status = e->status;
        r->headers_out.last_modified_time = -1;

        if (ngx_http_cache_set_headers(r, e, NULL) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    if (ngx_http_cache_add_age(r, ctx->age) != NGX_OK) {
        return NGX_ERROR;
    }

    if ((e->flags & (NGX_HTTP_CACHE_ENTRY_GZIP|NGX_HTTP_CACHE_ENTRY_INFLATED))
        && ngx_http_cache_vary_encoding(r) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ctx->client_gzip && ngx_http_cache_gzip_headers(r) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_http_cache_set_status_header(r, ctx) != NGX_OK) {
        return NGX_ERROR;
    }

    /* our conditional evaluation below, not nginx's */
    r->disable_not_modified = 1;

    ngx_str_null(&etag);

    if (r->headers_out.etag) {
        etag = r->headers_out.etag->value;
    }

    /* (after a revalidation the request's conditionals are the cache's) */
    /* without Last-Modified, If-Modified-Since is compared with the
     * stored Date (RFC 9110 13.1.3), else the time it was stored */
    date = e->response_time / 1000;

    if (r->headers_out.date) {
        t = ngx_parse_http_time(r->headers_out.date->value.data,
                                r->headers_out.date->value.len);
        if (t != NGX_ERROR) {
            date = t;
        }
    }

    if (e->status == NGX_HTTP_OK && !ctx->revalidating
        && ngx_http_cache_not_modified(r, &etag,
                                       r->headers_out.last_modified_time,
                                       date))
    {
        r->headers_out.status = NGX_HTTP_NOT_MODIFIED;
        r->headers_out.content_type.len = 0;
        r->headers_out.content_type.data = NULL;
        r->headers_out.content_length_n = -1;
        r->header_only = 1;

    } else {
        r->headers_out.content_length_n = ctx->client_gzip
                                          ? (off_t) e->body.len
                                          : (off_t) e->body_raw_len;
        r->allow_ranges = 1;
    }

    if (body->len == 0 || r->method == NGX_HTTP_HEAD) {
        r->header_only = 1;
    }

    if (r->header_only) {
        body->len = 0;
    }

    ctx->served = body->len;

    return NGX_OK;
}


/* a buffer with the body, the response's last */

ngx_chain_t *
ngx_http_cache_body_chain(ngx_http_request_t *r, ngx_str_t *body)
{
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NULL;
    }

    cl = ngx_alloc_chain_link(r->pool);
    if (cl == NULL) {
        return NULL;
    }

    b->pos = body->data;
    b->last = body->data + body->len;
    b->start = b->pos;
    b->end = b->last;
    b->memory = body->len ? 1 : 0;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    cl->buf = b;
    cl->next = NULL;

    return cl;
}


ngx_int_t
ngx_http_cache_send_hit(ngx_http_request_t *r, ngx_http_cache_ctx_t *ctx)
{
    ngx_int_t     rc;
    ngx_str_t     body;
    ngx_chain_t  *out;

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_cache_prepare_response(r, ctx, &body);

    if (rc == NGX_DECLINED) {
        /* not sent yet: the origin answers instead */
        ctx->status = NGX_HTTP_CACHE_ST_MISS;
        ctx->tier = 0;
        ctx->stale = 0;
        return NGX_DECLINED;
    }

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        ngx_http_finalize_request(r, rc);
        return NGX_DONE;
    }

    out = ngx_http_cache_body_chain(r, &body);
    if (out == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return NGX_DONE;
    }

    ngx_http_finalize_request(r, ngx_http_output_filter(r, out));

    return NGX_DONE;
}
