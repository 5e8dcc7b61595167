/*
 * jansson helpers shared by the edge modules.
 */

#include "ngx_edge_json.h"


#define NGX_EDGE_JSON_BUF_SIZE  16384


typedef struct {
    ngx_pool_t                  *pool;
    ngx_chain_t                 *out;
    ngx_chain_t                **last;
    ngx_buf_t                   *b;
    off_t                        size;
} ngx_edge_json_dump_t;


static int ngx_edge_json_write(const char *buf, size_t len, void *data);


json_t *
ngx_edge_json_str(ngx_str_t *s)
{
    u_char  *p, *q, *last, *dst, *start;
    json_t  *json;

    /* valid UTF-8 needs no copy */

    p = s->data;
    last = s->data + s->len;

    while (p < last) {
        if (*p < 0x80) {
            p++;
            continue;
        }

        if (ngx_utf8_decode(&p, last - p) > 0x10ffff) {
            break;
        }
    }

    if (p == last) {
        return json_stringn((const char *) s->data, s->len);
    }

    start = malloc(s->len * 4 + 1);
    if (start == NULL) {
        return NULL;
    }

    dst = start;
    p = s->data;

    while (p < last) {
        if (*p < 0x80) {
            *dst++ = *p++;
            continue;
        }

        q = p;

        if (ngx_utf8_decode(&q, last - p) > 0x10ffff) {
            dst = ngx_sprintf(dst, "\\x%02xd", (int) *p);
            p++;
            continue;
        }

        dst = ngx_cpymem(dst, p, q - p);
        p = q;
    }

    json = json_stringn((const char *) start, dst - start);
    free(start);

    return json;
}


ngx_chain_t *
ngx_edge_json_chain(ngx_pool_t *pool, json_t *json, size_t flags,
    off_t *size)
{
    ngx_edge_json_dump_t  d;

    ngx_memzero(&d, sizeof(ngx_edge_json_dump_t));

    d.pool = pool;
    d.last = &d.out;

    if (json_dump_callback(json, ngx_edge_json_write, &d, flags) != 0) {
        return NULL;
    }

    if (d.out == NULL) {
        /* an empty document still needs a buffer to carry last_buf */
        if (ngx_edge_json_write("", 0, &d) != 0 || d.out == NULL) {
            return NULL;
        }
    }

    *size = d.size;

    return d.out;
}


static int
ngx_edge_json_write(const char *buf, size_t len, void *data)
{
    ngx_edge_json_dump_t *d = data;

    size_t        n;
    ngx_chain_t  *cl;

    do {
        if (d->b == NULL || d->b->last == d->b->end) {
            d->b = ngx_create_temp_buf(d->pool,
                                       ngx_max(len, NGX_EDGE_JSON_BUF_SIZE));
            if (d->b == NULL) {
                return -1;
            }

            cl = ngx_alloc_chain_link(d->pool);
            if (cl == NULL) {
                return -1;
            }

            cl->buf = d->b;
            cl->next = NULL;
            *d->last = cl;
            d->last = &cl->next;
        }

        n = ngx_min(len, (size_t) (d->b->end - d->b->last));
        d->b->last = ngx_cpymem(d->b->last, buf, n);
        d->size += n;
        buf += n;
        len -= n;

    } while (len);

    return 0;
}
