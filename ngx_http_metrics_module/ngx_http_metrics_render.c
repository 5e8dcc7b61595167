/*
 * ngx_http_metrics_module: the exposition handler.
 *
 * Renders nginx's connection counters, every stats zone in the cycle's
 * shared memory (named edge_stats_*, whichever module owns it) and the
 * zones' health, as Prometheus text 0.0.4, OpenMetrics 1.0 or JSON, gzip
 * compressed when the scraper accepts it.  A scrape takes no lock: it reads
 * the published series and sums the workers' slots with relaxed loads.
 *
 * The response is streamed: an iterator renders one family header or one
 * series at a time into a few fixed-size buffers, which go to the output
 * filters as they fill.  When every buffer is still waiting for the socket,
 * rendering stops and the write event resumes it, so a scrape's memory is
 * bounded (NGX_HTTP_METRICS_BUFS buffers, and zlib's state with gzip)
 * whatever the number of series.
 */

#include "ngx_http_metrics_module.h"
#include "ngx_edge_json.h"
#include "ngx_edge_utf8.h"

#if (NGX_HTTP_GZIP)
#include "ngx_edge_zlib.h"
#endif


#define NGX_HTTP_METRICS_TEXT         0
#define NGX_HTTP_METRICS_OPENMETRICS  1
#define NGX_HTTP_METRICS_JSON         2

/* the output buffers: at most BUFS of BUF_SIZE each in flight (a series
 * larger than BUF_SIZE gets a buffer of its size, counted the same) */
#define NGX_HTTP_METRICS_BUF_SIZE     32768
#define NGX_HTTP_METRICS_BUFS         4

/* a reserve that found no buffer: wait (or fail, if it could not allocate) */
#define ngx_http_metrics_blocked(o)  ((o)->failed ? NGX_ERROR : NGX_AGAIN)

/* every rendered family name starts with this */
#define NGX_HTTP_METRICS_PREFIX       "nginx_"

/* the iterator's stages */
#define NGX_HTTP_METRICS_NGINX        0
#define NGX_HTTP_METRICS_ZONES        1
#define NGX_HTTP_METRICS_HEALTH       2
#define NGX_HTTP_METRICS_END          3
#define NGX_HTTP_METRICS_FINISH       4
#define NGX_HTTP_METRICS_DONE         5


typedef struct {
    ngx_str_t                    name;       /* the owner: "ratelimit" */
    ngx_edge_stats_sh_t         *sh;
    ngx_slab_pool_t             *shpool;
    size_t                       size;
    ngx_uint_t                   nseries;    /* at the scrape's start */
    uint32_t                     serial;     /* likewise */
} ngx_http_metrics_zone_t;


typedef struct {
    ngx_http_request_t          *r;
    ngx_uint_t                   format;
    ngx_array_t                  filter;     /* ngx_str_t, name prefixes */
    ngx_array_t                 *zones;      /* ngx_http_metrics_zone_t */

    /* where the iterator is */
    ngx_uint_t                   stage;
    ngx_uint_t                   zone;
    ngx_uint_t                   family;
    ngx_uint_t                   series;
    ngx_uint_t                   begun;      /* the family's header is out */
    ngx_uint_t                   nfamilies;  /* JSON: families written */
    ngx_uint_t                   nsamples;   /* JSON: series of the family */

    /* the family being rendered */
    ngx_uint_t                   type;
    ngx_str_t                    name;       /* as the samples are named */
    ngx_str_t                    base;       /* for HELP and TYPE */
    ngx_str_t                    help;
    ngx_str_t                   *le;         /* a histogram's le="..." */
    u_char                      *labels;     /* scratch for label sets */
    size_t                       labels_size;
    int64_t                     *v;          /* a series' values */
    size_t                       nv;

    /* output: the buffer being filled, then the filters */
    ngx_buf_t                   *b;
    ngx_chain_t                 *out;        /* filled, not yet passed on */
    ngx_chain_t                **last;
    ngx_chain_t                 *free;
    ngx_chain_t                 *busy;
    ngx_uint_t                   nbufs;
    ngx_uint_t                   failed;     /* an allocation failed */

#if (NGX_HTTP_GZIP)
    z_stream                     zs;
    ngx_buf_t                   *zb;         /* gzip: the text to deflate */
    unsigned                     gzip:1;
    unsigned                     zinit:1;
#endif
} ngx_http_metrics_out_t;


static ngx_int_t ngx_http_metrics_start(ngx_http_request_t *r,
    ngx_http_metrics_out_t *o);
static void ngx_http_metrics_write_handler(ngx_http_request_t *r);
static void ngx_http_metrics_stream(ngx_http_request_t *r);
static ngx_int_t ngx_http_metrics_step(ngx_http_metrics_out_t *o);
static ngx_int_t ngx_http_metrics_send(ngx_http_metrics_out_t *o,
    ngx_uint_t last);
static ngx_uint_t ngx_http_metrics_format(ngx_http_request_t *r);
static ngx_table_elt_t *ngx_http_metrics_accept_header(
    ngx_http_request_t *r);
static double ngx_http_metrics_accept_q(ngx_str_t *accept, const char *type,
    size_t len);
static ngx_int_t ngx_http_metrics_parse_filter(ngx_http_metrics_out_t *o);
static ngx_array_t *ngx_http_metrics_zones(ngx_http_request_t *r);
#if (NGX_STAT_STUB)
static ngx_int_t ngx_http_metrics_render_nginx(ngx_http_metrics_out_t *o);
static ngx_int_t ngx_http_metrics_simple(ngx_http_metrics_out_t *o,
    const char *name, const char *help, ngx_uint_t type, int64_t value);
#endif
static ngx_int_t ngx_http_metrics_zone_step(ngx_http_metrics_out_t *o);
static ngx_int_t ngx_http_metrics_render_health(ngx_http_metrics_out_t *o);
static ngx_int_t ngx_http_metrics_family(ngx_http_metrics_out_t *o,
    ngx_str_t *name, ngx_str_t *help, ngx_uint_t type);
static ngx_int_t ngx_http_metrics_end_family(ngx_http_metrics_out_t *o);
static u_char *ngx_http_metrics_sample(ngx_http_metrics_out_t *o,
    ngx_str_t *keys, ngx_str_t *values, ngx_uint_t n, int64_t *v,
    ngx_edge_stats_shfamily_t *f);
static size_t ngx_http_metrics_sample_size(ngx_http_metrics_out_t *o,
    ngx_str_t *keys, ngx_str_t *values, ngx_uint_t n,
    ngx_edge_stats_shfamily_t *f);
static u_char *ngx_http_metrics_labels(ngx_http_metrics_out_t *o, u_char *p,
    ngx_str_t *keys, ngx_str_t *values, ngx_uint_t n);
static u_char *ngx_http_metrics_line(u_char *p, ngx_str_t *name,
    const char *suffix, size_t slen, u_char *labels, size_t len,
    u_char *extra, size_t elen, u_char *value, size_t vlen);
static u_char *ngx_http_metrics_reserve(ngx_http_metrics_out_t *o,
    size_t size);
static ngx_int_t ngx_http_metrics_flush_buf(ngx_http_metrics_out_t *o);
static ngx_int_t ngx_http_metrics_link(ngx_http_metrics_out_t *o,
    ngx_buf_t *b);
static ngx_buf_t *ngx_http_metrics_get_buf(ngx_http_metrics_out_t *o,
    size_t size);
static u_char *ngx_http_metrics_escape(u_char *dst, ngx_str_t *src,
    ngx_uint_t quote);
static u_char *ngx_http_metrics_scaled(u_char *p, uint64_t v, uint64_t scale,
    ngx_uint_t point);
static u_char *ngx_http_metrics_int(u_char *p, int64_t v);
static ngx_str_t *ngx_http_metrics_le(ngx_http_metrics_out_t *o,
    ngx_edge_stats_shfamily_t *f);
#if (NGX_HTTP_GZIP)
static ngx_int_t ngx_http_metrics_gzip_init(ngx_http_metrics_out_t *o);
static ngx_int_t ngx_http_metrics_deflate(ngx_http_metrics_out_t *o,
    ngx_uint_t finish);
#endif


static ngx_str_t  ngx_http_metrics_types[] = {
    ngx_string("text/plain; version=0.0.4; charset=utf-8"),
    ngx_string("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    ngx_string("application/json")
};

/* by ngx_edge_stats_type_e */
static const char  *ngx_http_metrics_type_names[] = {
    "counter", "gauge", "histogram"
};


ngx_int_t
ngx_http_metrics_handler(ngx_http_request_t *r)
{
    ngx_int_t                rc;
    ngx_http_metrics_out_t  *o;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    o = ngx_pcalloc(r->pool, sizeof(ngx_http_metrics_out_t));
    if (o == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_metrics_start(r, o);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    ngx_http_set_ctx(r, o, ngx_http_metrics_module);

    /* the stream finalizes the request; NGX_DONE drops this reference */

    r->main->count++;

    ngx_http_metrics_stream(r);

    return NGX_DONE;
}


/* the response's header; the body follows in ngx_http_metrics_stream() */

static ngx_int_t
ngx_http_metrics_start(ngx_http_request_t *r, ngx_http_metrics_out_t *o)
{
    ngx_table_elt_t  *h;

    o->r = r;
    o->last = &o->out;
    o->format = ngx_http_metrics_format(r);

    if (ngx_http_metrics_parse_filter(o) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* one snapshot of the zones and of how many series each has */

    o->zones = ngx_http_metrics_zones(r);
    if (o->zones == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the response depends on Accept-Encoding whether compressed or not */

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Vary");
    ngx_str_set(&h->value, "Accept, Accept-Encoding");

#if (NGX_HTTP_GZIP)

    /* without nginx's gzip support (a static build without the gzip
     * module) the response goes uncompressed */

    if (ngx_http_gzip_ok(r) == NGX_OK) {
        if (!r->header_only && ngx_http_metrics_gzip_init(o) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        h->hash = 1;
        ngx_str_set(&h->key, "Content-Encoding");
        ngx_str_set(&h->value, "gzip");
        r->headers_out.content_encoding = h;
    }

#endif

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = -1;
    r->headers_out.content_type = ngx_http_metrics_types[o->format];
    r->headers_out.content_type_len = ngx_http_metrics_types[o->format].len;

    return ngx_http_send_header(r);
}


static void
ngx_http_metrics_write_handler(ngx_http_request_t *r)
{
    ngx_event_t  *wev;

    wev = r->connection->write;

    if (wev->timedout) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, NGX_ETIMEDOUT,
                      "client timed out while reading metrics");
        r->connection->timedout = 1;
        ngx_http_finalize_request(r, NGX_HTTP_REQUEST_TIME_OUT);
        return;
    }

    ngx_http_metrics_stream(r);
}


/*
 * Renders until the body is complete or every buffer waits for the
 * socket; in the latter case the write event (or the send timeout)
 * brings it back here.
 */

static void
ngx_http_metrics_stream(ngx_http_request_t *r)
{
    ngx_int_t                  rc;
    ngx_event_t               *wev;
    ngx_http_metrics_out_t    *o;
    ngx_http_core_loc_conf_t  *clcf;

    o = ngx_http_get_module_ctx(r, ngx_http_metrics_module);
    wev = r->connection->write;

    /* the send timeout; a limit_rate delay is the write filter's */

    if (wev->timer_set && !wev->delayed) {
        ngx_del_timer(wev);
    }

    for ( ;; ) {

        rc = ngx_http_metrics_step(o);

        if (rc == NGX_OK) {

            /* a buffer was filled: to the filters */

            if (o->out && ngx_http_metrics_send(o, 0) == NGX_ERROR) {
                ngx_http_finalize_request(r, NGX_ERROR);
                return;
            }

            continue;
        }

        if (rc == NGX_DONE) {
            break;
        }

        if (rc == NGX_ERROR) {
            ngx_http_finalize_request(r, NGX_ERROR);
            return;
        }

        /* NGX_AGAIN: no buffer free; send, and go on if one came back */

        if (ngx_http_metrics_send(o, 0) == NGX_ERROR) {
            ngx_http_finalize_request(r, NGX_ERROR);
            return;
        }

        if (o->free) {
            continue;
        }

        r->write_event_handler = ngx_http_metrics_write_handler;

        clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

        if (!wev->ready && !wev->delayed) {
            ngx_add_timer(wev, clcf->send_timeout);
        }

        if (ngx_handle_write_event(wev, clcf->send_lowat) != NGX_OK) {
            ngx_http_finalize_request(r, NGX_ERROR);
        }

        return;
    }

    /* the last buffer; whatever is left unsent, nginx's writer sends */

    r->write_event_handler = ngx_http_request_empty_handler;

    ngx_http_finalize_request(r, ngx_http_metrics_send(o, 1));
}


/*
 * One step of the iterator: a family header, a series, or a small stage
 * at once.  NGX_OK: go on; NGX_AGAIN: no buffer free, the same step is
 * tried again later; NGX_DONE: the body is complete.
 */

static ngx_int_t
ngx_http_metrics_step(ngx_http_metrics_out_t *o)
{
    u_char     *p;
    ngx_int_t   rc;

    switch (o->stage) {

    case NGX_HTTP_METRICS_NGINX:

        if (o->format == NGX_HTTP_METRICS_JSON) {
            p = ngx_http_metrics_reserve(o, sizeof("{\"families\":[") - 1);
            if (p == NULL) {
                return ngx_http_metrics_blocked(o);
            }

            o->b->last = ngx_cpymem(p, "{\"families\":[",
                                    sizeof("{\"families\":[") - 1);
        }

#if (NGX_STAT_STUB)
        rc = ngx_http_metrics_render_nginx(o);
        if (rc != NGX_OK) {
            return rc;
        }
#endif

        o->stage = NGX_HTTP_METRICS_ZONES;
        return NGX_OK;

    case NGX_HTTP_METRICS_ZONES:

        if (o->zone == o->zones->nelts) {
            o->stage = NGX_HTTP_METRICS_HEALTH;
            return NGX_OK;
        }

        return ngx_http_metrics_zone_step(o);

    case NGX_HTTP_METRICS_HEALTH:

        rc = ngx_http_metrics_render_health(o);
        if (rc != NGX_OK) {
            return rc;
        }

        o->stage = NGX_HTTP_METRICS_END;
        return NGX_OK;

    case NGX_HTTP_METRICS_END:

        p = ngx_http_metrics_reserve(o, sizeof("# EOF\n"));
        if (p == NULL) {
            return ngx_http_metrics_blocked(o);
        }

        if (o->format == NGX_HTTP_METRICS_OPENMETRICS) {
            p = ngx_cpymem(p, "# EOF\n", sizeof("# EOF\n") - 1);

        } else if (o->format == NGX_HTTP_METRICS_JSON) {
            p = ngx_cpymem(p, "]}", 2);
        }

        o->b->last = p;
        o->stage = NGX_HTTP_METRICS_FINISH;
        return NGX_OK;

    case NGX_HTTP_METRICS_FINISH:

        /* the last text to the filters; with gzip, deflate's end */

        rc = ngx_http_metrics_flush_buf(o);

#if (NGX_HTTP_GZIP)
        if (rc == NGX_OK && o->gzip) {
            rc = ngx_http_metrics_deflate(o, 1);
        }
#endif

        if (rc != NGX_OK) {
            return rc;
        }

        o->stage = NGX_HTTP_METRICS_DONE;
        return NGX_OK;

    default: /* NGX_HTTP_METRICS_DONE */
        return NGX_DONE;
    }
}


/*
 * Passes the filled buffers to the output filters (last: the current one
 * too, with last_buf) and takes back the buffers they have sent.
 */

static ngx_int_t
ngx_http_metrics_send(ngx_http_metrics_out_t *o, ngx_uint_t last)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t  *out;

    if (last) {
        /* the text is all out (with gzip: deflated and finished, see
         * ngx_http_metrics_step()); an empty buffer carries last_buf */

        b = ngx_calloc_buf(o->r->pool);
        if (b == NULL) {
            return NGX_ERROR;
        }

        b->last_buf = (o->r == o->r->main) ? 1 : 0;
        b->last_in_chain = 1;

        if (ngx_http_metrics_link(o, b) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    if (o->out == NULL && o->busy == NULL && !o->r->connection->buffered) {
        return NGX_OK;
    }

    out = o->out;
    o->out = NULL;
    o->last = &o->out;

    rc = ngx_http_output_filter(o->r, out);

    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    ngx_chain_update_chains(o->r->pool, &o->free, &o->busy, &out,
                            (ngx_buf_tag_t) &ngx_http_metrics_module);

    return rc;
}


/*
 * headers_in.accept exists only in a build with NGX_HTTP_HEADERS (set by
 * --with-compat); elsewhere nginx does not index Accept: find it in the list.
 */

static ngx_table_elt_t *
ngx_http_metrics_accept_header(ngx_http_request_t *r)
{
#if (NGX_HTTP_HEADERS)
    return r->headers_in.accept;
#else
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NULL;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == sizeof("Accept") - 1
            && ngx_strncasecmp(h[i].key.data, (u_char *) "Accept",
                               sizeof("Accept") - 1) == 0)
        {
            return &h[i];
        }
    }
#endif
}


/*
 * "?format=text|openmetrics|json" wins; otherwise the Accept header's
 * preference between text/plain (or any type), OpenMetrics and JSON, text
 * on a tie.
 */

static ngx_uint_t
ngx_http_metrics_format(ngx_http_request_t *r)
{
    double            text, om, json;
    ngx_str_t         arg, *accept;
    ngx_table_elt_t  *h;

    if (ngx_http_arg(r, (u_char *) "format", 6, &arg) == NGX_OK) {
        if (arg.len == 11 && ngx_strncmp(arg.data, "openmetrics", 11) == 0) {
            return NGX_HTTP_METRICS_OPENMETRICS;
        }

        if (arg.len == 4 && ngx_strncmp(arg.data, "json", 4) == 0) {
            return NGX_HTTP_METRICS_JSON;
        }

        return NGX_HTTP_METRICS_TEXT;
    }

    h = ngx_http_metrics_accept_header(r);

    if (h == NULL) {
        return NGX_HTTP_METRICS_TEXT;
    }

    accept = &h->value;

    om = ngx_http_metrics_accept_q(accept, "application/openmetrics-text",
                                   sizeof("application/openmetrics-text") - 1);
    json = ngx_http_metrics_accept_q(accept, "application/json",
                                     sizeof("application/json") - 1);
    text = ngx_http_metrics_accept_q(accept, "text/plain",
                                     sizeof("text/plain") - 1);

    if (text < 0) {
        text = ngx_http_metrics_accept_q(accept, "*/*", 3);
    }

    if (om > 0 && om > text && om >= json) {
        return NGX_HTTP_METRICS_OPENMETRICS;
    }

    if (json > 0 && json > text) {
        return NGX_HTTP_METRICS_JSON;
    }

    return NGX_HTTP_METRICS_TEXT;
}


/* the highest q of the media ranges of that type, or -1 if none */

static double
ngx_http_metrics_accept_q(ngx_str_t *accept, const char *type, size_t len)
{
    u_char  *p, *end, *last, *q;
    double   best, v, scale;

    best = -1;
    p = accept->data;
    last = accept->data + accept->len;

    while (p < last) {
        end = ngx_strlchr(p, last, ',');
        if (end == NULL) {
            end = last;
        }

        while (p < end && (*p == ' ' || *p == '\t')) {
            p++;
        }

        if ((size_t) (end - p) >= len
            && ngx_strncasecmp(p, (u_char *) type, len) == 0
            && (p + len == end || p[len] == ';' || p[len] == ' '))
        {
            v = 1;

            for (q = p + len; q + 2 < end; q++) {
                if (q[0] == ';' || q[0] == ' ') {
                    continue;
                }

                if (q[0] == 'q' && q[1] == '=') {
                    q += 2;
                    v = 0;
                    scale = 1;

                    for ( /* void */ ; q < end && *q != ';'; q++) {
                        if (*q >= '0' && *q <= '9') {
                            if (scale == 1 && v == 0 && *q != '0') {
                                v = *q - '0';

                            } else if (scale < 1) {
                                v += (*q - '0') * scale;
                                scale /= 10;
                            }

                        } else if (*q == '.') {
                            scale = 0.1;
                        }
                    }

                    break;
                }

                q = ngx_strlchr(q, end, ';');
                if (q == NULL) {
                    break;
                }
            }

            if (v > best) {
                best = v;
            }
        }

        p = end + 1;
    }

    return best;
}


/* "?family=nginx_http_,nginx_ratelimit_&family=..." */

static ngx_int_t
ngx_http_metrics_parse_filter(ngx_http_metrics_out_t *o)
{
    u_char     *p, *last, *end, *comma, *v;
    ngx_str_t  *prefix;

    if (ngx_array_init(&o->filter, o->r->pool, 4, sizeof(ngx_str_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    p = o->r->args.data;
    last = p + o->r->args.len;

    while (p < last) {
        end = ngx_strlchr(p, last, '&');
        if (end == NULL) {
            end = last;
        }

        if (end - p > 7 && ngx_strncmp(p, "family=", 7) == 0) {

            for (v = p + 7; v < end; v = comma + 1) {
                comma = ngx_strlchr(v, end, ',');
                if (comma == NULL) {
                    comma = end;
                }

                if (comma > v) {
                    prefix = ngx_array_push(&o->filter);
                    if (prefix == NULL) {
                        return NGX_ERROR;
                    }

                    prefix->data = v;
                    prefix->len = comma - v;
                }
            }
        }

        p = end + 1;
    }

    return NGX_OK;
}


static ngx_array_t *
ngx_http_metrics_zones(ngx_http_request_t *r)
{
    ngx_uint_t                i;
    ngx_array_t              *zones;
    ngx_list_part_t          *part;
    ngx_shm_zone_t           *shm_zone;
    ngx_edge_stats_sh_t      *sh;
    ngx_http_metrics_zone_t  *z;

    zones = ngx_array_create(r->pool, 4, sizeof(ngx_http_metrics_zone_t));
    if (zones == NULL) {
        return NULL;
    }

    part = (ngx_list_part_t *) &ngx_cycle->shared_memory.part;
    shm_zone = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            shm_zone = part->elts;
            i = 0;
        }

        sh = ngx_edge_stats_zone(&shm_zone[i]);
        if (sh == NULL) {
            continue;
        }

        z = ngx_array_push(zones);
        if (z == NULL) {
            return NULL;
        }

        z->name.data = shm_zone[i].shm.name.data
                       + sizeof(NGX_EDGE_STATS_PREFIX) - 1;
        z->name.len = shm_zone[i].shm.name.len
                      - (sizeof(NGX_EDGE_STATS_PREFIX) - 1);
        z->sh = sh;
        z->shpool = (ngx_slab_pool_t *) shm_zone[i].shm.addr;
        z->size = shm_zone[i].shm.size;

        /*
         * The series this scrape shows: those published now.  A series
         * created later (even in a slot below nseries, freed and reused)
         * has a later serial and waits for the next scrape, so a label
         * set never appears twice in one response.
         */

        z->serial = ngx_edge_stats_serial(sh);
        z->nseries = ngx_edge_stats_nseries(sh);
    }

    return zones;
}


#if (NGX_STAT_STUB)

/* nginx's own counters, as stub_status shows them: small, at once */

static ngx_int_t
ngx_http_metrics_render_nginx(ngx_http_metrics_out_t *o)
{
    if (ngx_http_metrics_reserve(o, 4096) == NULL) {
        return ngx_http_metrics_blocked(o);
    }

    if (ngx_http_metrics_simple(o, "nginx_connections_active",
                                "Client connections open now.",
                                NGX_EDGE_STATS_GAUGE,
                                (int64_t) *ngx_stat_active) != NGX_OK
        || ngx_http_metrics_simple(o, "nginx_connections_reading",
                                   "Connections reading a request header.",
                                   NGX_EDGE_STATS_GAUGE,
                                   (int64_t) *ngx_stat_reading) != NGX_OK
        || ngx_http_metrics_simple(o, "nginx_connections_writing",
                                   "Connections writing a response.",
                                   NGX_EDGE_STATS_GAUGE,
                                   (int64_t) *ngx_stat_writing) != NGX_OK
        || ngx_http_metrics_simple(o, "nginx_connections_waiting",
                                   "Idle keep-alive connections.",
                                   NGX_EDGE_STATS_GAUGE,
                                   (int64_t) *ngx_stat_waiting) != NGX_OK
        || ngx_http_metrics_simple(o, "nginx_connections_accepted_total",
                                   "Client connections accepted.",
                                   NGX_EDGE_STATS_COUNTER,
                                   (int64_t) *ngx_stat_accepted) != NGX_OK
        || ngx_http_metrics_simple(o, "nginx_connections_handled_total",
                                   "Client connections handled.",
                                   NGX_EDGE_STATS_COUNTER,
                                   (int64_t) *ngx_stat_handled) != NGX_OK
        || ngx_http_metrics_simple(o, "nginx_http_requests_received_total",
                                   "Client requests received, "
                                   "including those in progress.",
                                   NGX_EDGE_STATS_COUNTER,
                                   (int64_t) *ngx_stat_requests) != NGX_OK)
    {
        /* 4096 bytes were reserved: only an allocation can fail */
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* a family of one series without labels; the room is reserved */

static ngx_int_t
ngx_http_metrics_simple(ngx_http_metrics_out_t *o, const char *name,
    const char *help, ngx_uint_t type, int64_t value)
{
    u_char     *p;
    ngx_int_t   rc;
    ngx_str_t   n, h;

    n.data = (u_char *) name;
    n.len = ngx_strlen(name);
    h.data = (u_char *) help;
    h.len = ngx_strlen(help);

    rc = ngx_http_metrics_family(o, &n, &h, type);

    if (rc == NGX_DECLINED) {
        return NGX_OK;
    }

    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    p = ngx_http_metrics_reserve(o, ngx_http_metrics_sample_size(o, NULL,
                                                                 NULL, 0,
                                                                 NULL));
    if (p == NULL || o->failed) {
        return NGX_ERROR;
    }

    o->b->last = ngx_http_metrics_sample(o, NULL, NULL, 0, &value, NULL);

    return ngx_http_metrics_end_family(o);
}

#endif


/*
 * One step in a zone: the next series of the current family (or the
 * family's header first), or on to the next family or zone.  A series is
 * read without the lock: if its generation changes while it is read (it
 * was freed, or freed and reused), what was written for it is dropped.
 */

static ngx_int_t
ngx_http_metrics_zone_step(ngx_http_metrics_out_t *o)
{
    u_char                     *p, *start;
    size_t                      size;
    uint32_t                    gen;
    ngx_int_t                   rc;
    ngx_uint_t                  k, n, zero;
    ngx_str_t                   values[NGX_EDGE_STATS_MAX_LABELS];
    ngx_edge_stats_sh_t        *sh;
    ngx_edge_stats_series_t    *s;
    ngx_edge_stats_shfamily_t  *f;
    ngx_http_metrics_zone_t    *z;

    z = (ngx_http_metrics_zone_t *) o->zones->elts + o->zone;
    sh = z->sh;

    if (o->family == sh->nfamilies) {
        o->zone++;
        o->family = 0;
        o->series = 0;
        return NGX_OK;
    }

    f = &sh->families[o->family];
    n = ngx_min(f->nlabels, NGX_EDGE_STATS_MAX_LABELS);

    if (f->flags & NGX_EDGE_STATS_HIDDEN) {
        goto next_family;
    }

    if (o->series == 0 && !o->begun) {
        o->name.len = sizeof(NGX_HTTP_METRICS_PREFIX) - 1 + f->name.len;
        o->name.data = ngx_pnalloc(o->r->pool, o->name.len);
        if (o->name.data == NULL) {
            return NGX_ERROR;
        }

        p = ngx_cpymem(o->name.data, NGX_HTTP_METRICS_PREFIX,
                       sizeof(NGX_HTTP_METRICS_PREFIX) - 1);
        ngx_memcpy(p, f->name.data, f->name.len);

        if (o->nv < f->width) {
            o->v = ngx_palloc(o->r->pool, f->width * sizeof(int64_t));
            if (o->v == NULL) {
                return NGX_ERROR;
            }

            o->nv = f->width;
        }
    }

    for ( /* void */ ; o->series < z->nseries; o->series++) {
        s = &sh->series[o->series];

        if (s->family != o->family) {
            continue;
        }

        gen = ngx_edge_stats_gen(s);

        if ((gen & 1)
            || (s->dynamic && (int32_t) (s->dynamic - z->serial) > 0))
        {
            /* freed, or created after the scrape began */
            continue;
        }

        zero = 1;

        for (k = 0; k < f->width; k++) {
            o->v[k] = ngx_edge_stats_read(sh, s, k);
            zero = zero && o->v[k] == 0;
        }

        if (s->overflow && zero) {
            /* nothing overflowed (yet) */
            continue;
        }

        /* the labels, copied: their lengths must not change under us */

        if (n) {
            if (s->dynamic
                && ((u_char *) s->values < sh->start
                    || (u_char *) (s->values + n) > sh->end))
            {
                continue;
            }

            ngx_memcpy(values, s->values, n * sizeof(ngx_str_t));

            for (k = 0; k < n; k++) {
                if (values[k].len > NGX_EDGE_STATS_VALUE_MAX
                    || values[k].data < sh->start
                    || values[k].data + values[k].len > sh->end)
                {
                    break;
                }
            }

            if (k < n && s->dynamic) {
                continue;
            }
        }

        if (!o->begun) {
            rc = ngx_http_metrics_family(o, &o->name, &f->help, f->type);

            if (rc == NGX_DECLINED) {
                goto next_family;
            }

            if (rc != NGX_OK) {
                return rc;
            }

            o->begun = 1;

            if (f->type == NGX_EDGE_STATS_HISTOGRAM) {
                o->le = ngx_http_metrics_le(o, f);
                if (o->le == NULL) {
                    return NGX_ERROR;
                }
            }
        }

        size = ngx_http_metrics_sample_size(o, f->labels, values, n, f);
        if (size == 0) {
            return NGX_ERROR;
        }

        start = ngx_http_metrics_reserve(o, size);
        if (start == NULL) {
            return ngx_http_metrics_blocked(o);
        }

        p = ngx_http_metrics_sample(o, f->labels, values, n, o->v, f);

        __atomic_thread_fence(__ATOMIC_ACQUIRE);

        if (ngx_edge_stats_gen(s) == gen) {
            o->b->last = p;
            o->nsamples++;
        }

        o->series++;

        return NGX_OK;
    }

    if (o->begun) {
        rc = ngx_http_metrics_end_family(o);
        if (rc != NGX_OK) {
            return rc;
        }
    }

next_family:

    o->begun = 0;
    o->nsamples = 0;
    o->family++;
    o->series = 0;

    return NGX_OK;
}


/* the zones' health: a few series per zone, rendered at once */

static ngx_int_t
ngx_http_metrics_render_health(ngx_http_metrics_out_t *o)
{
    u_char                     *p;
    size_t                      bound;
    int64_t                     v;
    ngx_int_t                   rc;
    ngx_str_t                   name, help, keys[2], values[2];
    ngx_uint_t                  h, i, fi, begun;
    ngx_edge_stats_sh_t        *sh;
    ngx_edge_stats_series_t     s;
    ngx_edge_stats_shfamily_t  *f;
    ngx_http_metrics_zone_t    *z;

    static struct {
        const char              *name;
        const char              *help;
        ngx_uint_t               type;
    } health[] = {
        { "nginx_edge_stats_series",
          "Series in use in a stats zone.", NGX_EDGE_STATS_GAUGE },
        { "nginx_edge_stats_series_capacity",
          "Series a stats zone can hold.", NGX_EDGE_STATS_GAUGE },
        { "nginx_edge_stats_shm_size_bytes",
          "Size of a stats zone.", NGX_EDGE_STATS_GAUGE },
        { "nginx_edge_stats_shm_free_bytes",
          "Free pages of a stats zone, in bytes.", NGX_EDGE_STATS_GAUGE },
        { "nginx_edge_stats_start_time_seconds",
          "When a stats zone started counting; a change means a reset.",
          NGX_EDGE_STATS_GAUGE },
        { "nginx_edge_stats_family_series",
          "Live series of a family.", NGX_EDGE_STATS_GAUGE },
        { "nginx_edge_stats_family_series_budget",
          "Series a family may have (0: it shares the zone's room).",
          NGX_EDGE_STATS_GAUGE },
        { "nginx_edge_stats_series_dropped_total",
          "Observations counted into a family's overflow series because "
          "the family or the zone was full.", NGX_EDGE_STATS_COUNTER }
    };

    z = o->zones->elts;

    if (o->zones->nelts == 0) {
        return NGX_OK;
    }

    /* all of it fits in the room reserved here, so it is never cut */

    bound = 4096;

    for (i = 0; i < o->zones->nelts; i++) {
        bound += 1024 + z[i].name.len * 40;

        for (fi = 0; fi < z[i].sh->nfamilies; fi++) {
            bound += 3 * (256 + 2 * z[i].sh->families[fi].name.len
                          + z[i].name.len * 3);
        }
    }

    if (ngx_http_metrics_reserve(o, bound) == NULL) {
        return ngx_http_metrics_blocked(o);
    }

    ngx_str_set(&keys[0], "zone");
    ngx_str_set(&keys[1], "family");

    for (h = 0; h < sizeof(health) / sizeof(health[0]); h++) {

        name.data = (u_char *) health[h].name;
        name.len = ngx_strlen(health[h].name);
        help.data = (u_char *) health[h].help;
        help.len = ngx_strlen(health[h].help);

        begun = 0;

        for (i = 0; i < o->zones->nelts; i++) {
            sh = z[i].sh;
            values[0] = z[i].name;

            if (h >= 5) {
                /* per family: live series, budget, dropped */

                for (fi = 0; fi < sh->nfamilies; fi++) {
                    f = &sh->families[fi];

                    if (f->dropped < 0) {
                        continue;
                    }

                    if (h == 5) {
                        v = (int64_t) ngx_edge_stats_family_series(f);

                    } else if (h == 6) {
                        v = (int64_t) f->max_series;

                    } else {
                        /* a pseudo series over the dropped counter */
                        ngx_memzero(&s, sizeof(ngx_edge_stats_series_t));
                        s.family = (uint32_t) fi;
                        s.off = (uint32_t) f->dropped;

                        v = ngx_edge_stats_read(sh, &s, 0);
                    }

                    if (!begun) {
                        rc = ngx_http_metrics_family(o, &name, &help,
                                                     health[h].type);
                        if (rc == NGX_DECLINED) {
                            break;
                        }

                        if (rc != NGX_OK) {
                            return NGX_ERROR;
                        }

                        begun = 1;
                    }

                    values[1].len = sizeof(NGX_HTTP_METRICS_PREFIX) - 1
                                    + f->name.len;
                    values[1].data = ngx_pnalloc(o->r->pool, values[1].len);
                    if (values[1].data == NULL) {
                        return NGX_ERROR;
                    }

                    ngx_memcpy(ngx_cpymem(values[1].data,
                                          NGX_HTTP_METRICS_PREFIX,
                                          sizeof(NGX_HTTP_METRICS_PREFIX) - 1),
                               f->name.data, f->name.len);

                    p = ngx_http_metrics_reserve(o,
                            ngx_http_metrics_sample_size(o, keys, values, 2,
                                                         NULL));
                    if (p == NULL || o->failed) {
                        return NGX_ERROR;
                    }

                    o->b->last = ngx_http_metrics_sample(o, keys, values, 2,
                                                         &v, NULL);
                    o->nsamples++;
                }

                continue;
            }

            switch (h) {
            case 0:
                v = (int64_t) z[i].nseries;
                break;
            case 1:
                v = (int64_t) sh->capacity;
                break;
            case 2:
                v = (int64_t) z[i].size;
                break;
            case 3:
                /* read without the mutex: a gauge may be a page behind */
                v = (int64_t) (z[i].shpool->pfree * ngx_pagesize);
                break;
            default: /* 4 */
                v = (int64_t) sh->start_time;
                break;
            }

            if (!begun) {
                rc = ngx_http_metrics_family(o, &name, &help, health[h].type);

                if (rc == NGX_DECLINED) {
                    break;
                }

                if (rc != NGX_OK) {
                    return NGX_ERROR;
                }

                begun = 1;
            }

            p = ngx_http_metrics_reserve(o,
                    ngx_http_metrics_sample_size(o, keys, values, 1, NULL));
            if (p == NULL || o->failed) {
                return NGX_ERROR;
            }

            o->b->last = ngx_http_metrics_sample(o, keys, values, 1, &v,
                                                 NULL);
            o->nsamples++;
        }

        if (begun && ngx_http_metrics_end_family(o) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/*
 * Starts a family: NGX_DECLINED when the filter leaves it out.  Counters
 * are TYPEd by their name in text 0.0.4, and without "_total" in
 * OpenMetrics, where the sample keeps it.
 */

static ngx_int_t
ngx_http_metrics_family(ngx_http_metrics_out_t *o, ngx_str_t *name,
    ngx_str_t *help, ngx_uint_t type)
{
    u_char      *p;
    size_t       len;
    ngx_str_t   *prefix;
    ngx_uint_t   i;

    if (o->filter.nelts) {
        prefix = o->filter.elts;

        for (i = 0; i < o->filter.nelts; i++) {
            if (name->len >= prefix[i].len
                && ngx_strncmp(name->data, prefix[i].data, prefix[i].len)
                   == 0)
            {
                break;
            }
        }

        if (i == o->filter.nelts) {
            return NGX_DECLINED;
        }
    }

    o->base = *name;

    if (type == NGX_EDGE_STATS_COUNTER
        && o->format == NGX_HTTP_METRICS_OPENMETRICS
        && name->len > 6
        && ngx_strncmp(name->data + name->len - 6, "_total", 6) == 0)
    {
        o->base.len -= 6;
    }

    if (o->format == NGX_HTTP_METRICS_JSON) {
        len = sizeof(",{\"name\":\"\",\"type\":\"histogram\",\"help\":\"\","
                     "\"series\":[") - 1
              + NGX_EDGE_JSON_ESCAPED_MAX(name->len + help->len);

    } else {
        len = sizeof("# HELP  \n# TYPE  histogram\n") - 1 + 2 * o->base.len
              + NGX_EDGE_UTF8_SANITIZED_MAX(help->len);
    }

    p = ngx_http_metrics_reserve(o, len);
    if (p == NULL) {
        return ngx_http_metrics_blocked(o);
    }

    o->type = type;
    o->name = *name;
    o->help = *help;
    o->nsamples = 0;

    if (o->format == NGX_HTTP_METRICS_JSON) {
        if (o->nfamilies) {
            *p++ = ',';
        }

        p = ngx_cpymem(p, "{\"name\":\"", sizeof("{\"name\":\"") - 1);
        p = ngx_edge_json_escape(p, name->data, name->len);
        p = ngx_sprintf(p, "\",\"type\":\"%s\",\"help\":\"",
                        ngx_http_metrics_type_names[type]);
        p = ngx_edge_json_escape(p, help->data, help->len);
        p = ngx_cpymem(p, "\",\"series\":[", sizeof("\",\"series\":[") - 1);

        o->b->last = p;
        o->nfamilies++;

        return NGX_OK;
    }

    p = ngx_cpymem(p, "# HELP ", 7);
    p = ngx_cpymem(p, o->base.data, o->base.len);
    *p++ = ' ';
    p = ngx_http_metrics_escape(p, help,
                                o->format == NGX_HTTP_METRICS_OPENMETRICS);
    p = ngx_sprintf(p, "\n# TYPE %V %s\n", &o->base,
                    ngx_http_metrics_type_names[type]);

    o->b->last = p;

    return NGX_OK;
}


/* JSON: the end of the family's series array and object */

static ngx_int_t
ngx_http_metrics_end_family(ngx_http_metrics_out_t *o)
{
    u_char  *p;

    if (o->format != NGX_HTTP_METRICS_JSON) {
        return NGX_OK;
    }

    p = ngx_http_metrics_reserve(o, 2);
    if (p == NULL) {
        return ngx_http_metrics_blocked(o);
    }

    *p++ = ']';
    *p++ = '}';

    o->b->last = p;

    return NGX_OK;
}


/*
 * The most bytes ngx_http_metrics_sample() writes for this series, or 0
 * if the scratch room for its label set could not be allocated.
 */

static size_t
ngx_http_metrics_sample_size(ngx_http_metrics_out_t *o, ngx_str_t *keys,
    ngx_str_t *values, ngx_uint_t n, ngx_edge_stats_shfamily_t *f)
{
    size_t      labels, line;
    ngx_uint_t  i, lines;

    labels = 0;

    for (i = 0; i < n; i++) {
        labels += sizeof(",\"\":\"\"") - 1
                  + NGX_EDGE_JSON_ESCAPED_MAX(keys[i].len + values[i].len);
    }

    lines = (f && f->type == NGX_EDGE_STATS_HISTOGRAM) ? f->nbounds + 3 : 1;

    if (o->format == NGX_HTTP_METRICS_JSON) {
        return labels + lines * (2 * NGX_INT64_LEN + 64) + 128;
    }

    /* text: the label set is escaped once into a scratch buffer */

    if (labels > o->labels_size) {
        o->labels_size = ngx_max(ngx_max(labels, 2 * o->labels_size), 1024);
        o->labels = ngx_pnalloc(o->r->pool, o->labels_size);
        if (o->labels == NULL) {
            o->failed = 1;
            return 0;
        }
    }

    /* a line: name, suffix, labels, le, value */
    line = o->name.len + sizeof("_bucket{,} \n") + labels
           + NGX_INT64_LEN + 64;

    return lines * line;
}


/* the label set, escaped for the format, at p */

static u_char *
ngx_http_metrics_labels(ngx_http_metrics_out_t *o, u_char *p, ngx_str_t *keys,
    ngx_str_t *values, ngx_uint_t n)
{
    ngx_uint_t  i;

    for (i = 0; i < n; i++) {
        if (i) {
            *p++ = ',';
        }

        if (o->format == NGX_HTTP_METRICS_JSON) {
            *p++ = '"';
            p = ngx_edge_json_escape(p, keys[i].data, keys[i].len);
            *p++ = '"';
            *p++ = ':';
            *p++ = '"';
            p = ngx_edge_json_escape(p, values[i].data, values[i].len);
            *p++ = '"';
            continue;
        }

        p = ngx_cpymem(p, keys[i].data, keys[i].len);
        *p++ = '=';
        *p++ = '"';
        p = ngx_http_metrics_escape(p, &values[i], 1);
        *p++ = '"';
    }

    return p;
}


/*
 * Writes one series at o->b->last, where ngx_http_metrics_sample_size()
 * bytes were reserved, and returns its end (the caller commits it).
 */

static u_char *
ngx_http_metrics_sample(ngx_http_metrics_out_t *o, ngx_str_t *keys,
    ngx_str_t *values, ngx_uint_t n, int64_t *v, ngx_edge_stats_shfamily_t *f)
{
    u_char      *p, *labels, value[NGX_INT64_LEN + 32], *vp;
    size_t       len;
    int64_t      count;
    ngx_str_t    base;
    ngx_uint_t   i;

    p = o->b->last;

    if (o->format == NGX_HTTP_METRICS_JSON) {
        if (o->nsamples) {
            *p++ = ',';
        }

        p = ngx_cpymem(p, "{\"labels\":{", sizeof("{\"labels\":{") - 1);
        p = ngx_http_metrics_labels(o, p, keys, values, n);
        *p++ = '}';

        if (o->type != NGX_EDGE_STATS_HISTOGRAM) {
            p = ngx_cpymem(p, ",\"value\":", sizeof(",\"value\":") - 1);
            p = ngx_http_metrics_int(p, v[0]);
            *p++ = '}';
            return p;
        }

        p = ngx_cpymem(p, ",\"buckets\":[", sizeof(",\"buckets\":[") - 1);

        count = 0;

        for (i = 0; i <= f->nbounds; i++) {
            count += v[i];

            p = ngx_cpymem(p, i ? ",{\"le\":" : "{\"le\":",
                           i ? sizeof(",{\"le\":") - 1
                             : sizeof("{\"le\":") - 1);

            if (i < f->nbounds) {
                p = ngx_http_metrics_scaled(p, f->bounds[i], f->scale, 0);

            } else {
                p = ngx_cpymem(p, "\"+Inf\"", sizeof("\"+Inf\"") - 1);
            }

            p = ngx_cpymem(p, ",\"count\":", sizeof(",\"count\":") - 1);
            p = ngx_http_metrics_int(p, count);
            *p++ = '}';
        }

        p = ngx_cpymem(p, "],\"count\":", sizeof("],\"count\":") - 1);
        p = ngx_http_metrics_int(p, count);
        p = ngx_cpymem(p, ",\"sum\":", sizeof(",\"sum\":") - 1);
        p = ngx_http_metrics_scaled(p, (uint64_t) v[f->nbounds + 1],
                                    f->scale, 0);
        *p++ = '}';

        return p;
    }

    /* the label set once, escaped, for every line of the series */

    labels = o->labels;
    len = ngx_http_metrics_labels(o, labels, keys, values, n) - labels;

    if (o->type != NGX_EDGE_STATS_HISTOGRAM) {
        vp = ngx_http_metrics_int(value, v[0]);

        /* o->name: the counter's full name in either format */
        return ngx_http_metrics_line(p, &o->name, "", 0, labels, len,
                                     NULL, 0, value, vp - value);
    }

    base = o->base;
    count = 0;

    for (i = 0; i <= f->nbounds; i++) {
        count += v[i];

        vp = ngx_http_metrics_int(value, count);

        p = ngx_http_metrics_line(p, &base, "_bucket", 7, labels, len,
                                  o->le[i].data, o->le[i].len,
                                  value, vp - value);
    }

    vp = ngx_http_metrics_scaled(value, (uint64_t) v[f->nbounds + 1],
                                 f->scale, 0);

    p = ngx_http_metrics_line(p, &base, "_sum", 4, labels, len, NULL, 0,
                              value, vp - value);

    vp = ngx_http_metrics_int(value, count);

    return ngx_http_metrics_line(p, &base, "_count", 6, labels, len, NULL, 0,
                                 value, vp - value);
}


static u_char *
ngx_http_metrics_line(u_char *p, ngx_str_t *name, const char *suffix,
    size_t slen, u_char *labels, size_t len, u_char *extra, size_t elen,
    u_char *value, size_t vlen)
{
    p = ngx_cpymem(p, name->data, name->len);
    p = ngx_cpymem(p, suffix, slen);

    if (len || elen) {
        *p++ = '{';
        p = ngx_cpymem(p, labels, len);

        if (len && elen) {
            *p++ = ',';
        }

        p = ngx_cpymem(p, extra, elen);
        *p++ = '}';
    }

    *p++ = ' ';
    p = ngx_cpymem(p, value, vlen);
    *p++ = '\n';

    return p;
}


/*
 * Escapes a label value (quote) or a HELP text: backslash, newline and,
 * in a label value, the double quote.  Each ill-formed UTF-8 subpart
 * becomes U+FFFD (ngx_edge_utf8.h), so the exposition stays valid
 * whatever a variable or another module's zone held.  Needs 3 * len bytes.
 */

static u_char *
ngx_http_metrics_escape(u_char *dst, ngx_str_t *src, ngx_uint_t quote)
{
    u_char  *p, *last;
    size_t   n, bad;

    p = src->data;
    last = src->data + src->len;

    while (p < last) {

        switch (*p) {

        case '\\':
            *dst++ = '\\';
            *dst++ = '\\';
            p++;
            continue;

        case '\n':
            *dst++ = '\\';
            *dst++ = 'n';
            p++;
            continue;

        case '"':
            if (quote) {
                *dst++ = '\\';
            }

            *dst++ = *p++;
            continue;
        }

        if (*p < 0x80) {
            *dst++ = *p++;
            continue;
        }

        n = ngx_edge_utf8_char(p, last - p, &bad);

        if (n == 0) {
            dst = ngx_cpymem(dst, NGX_EDGE_UTF8_REPLACEMENT,
                             NGX_EDGE_UTF8_REPLACEMENT_LEN);
            p += bad;
            continue;
        }

        dst = ngx_cpymem(dst, p, n);
        p += n;
    }

    return dst;
}


/* v / scale in decimal, scale a power of ten; "1.0" rather than "1" when
 * point is set (OpenMetrics' canonical le values) */

static u_char *
ngx_http_metrics_scaled(u_char *p, uint64_t v, uint64_t scale,
    ngx_uint_t point)
{
    u_char    frac[32], *f;
    uint64_t  rem, s;

    p = ngx_sprintf(p, "%uL", v / scale);
    rem = v % scale;

    if (rem == 0) {
        if (point) {
            p = ngx_cpymem(p, ".0", 2);
        }

        return p;
    }

    f = frac;

    for (s = scale / 10; s > 0 && rem; s /= 10) {
        *f++ = (u_char) ('0' + rem / s);
        rem %= s;
    }

    *p++ = '.';

    return ngx_cpymem(p, frac, f - frac);
}


/* le="..." of each bucket of a histogram, formatted once per family */

static ngx_str_t *
ngx_http_metrics_le(ngx_http_metrics_out_t *o, ngx_edge_stats_shfamily_t *f)
{
    u_char      *p;
    ngx_str_t   *le;
    ngx_uint_t   i;

    le = ngx_palloc(o->r->pool, (f->nbounds + 1) * sizeof(ngx_str_t));
    if (le == NULL) {
        return NULL;
    }

    for (i = 0; i <= f->nbounds; i++) {
        le[i].data = ngx_pnalloc(o->r->pool, NGX_INT64_LEN + 32);
        if (le[i].data == NULL) {
            return NULL;
        }

        p = ngx_cpymem(le[i].data, "le=\"", 4);

        if (i < f->nbounds) {
            p = ngx_http_metrics_scaled(p, f->bounds[i], f->scale, 1);

        } else {
            p = ngx_cpymem(p, "+Inf", 4);
        }

        *p++ = '"';
        le[i].len = p - le[i].data;
    }

    return le;
}


/* a decimal integer: ngx_sprintf() parses its format on every call */

static u_char *
ngx_http_metrics_int(u_char *p, int64_t v)
{
    u_char    buf[NGX_INT64_LEN], *b;
    uint64_t  u;

    if (v < 0) {
        *p++ = '-';
        u = (uint64_t) -(v + 1) + 1;

    } else {
        u = (uint64_t) v;
    }

    b = buf + NGX_INT64_LEN;

    do {
        *--b = (u_char) ('0' + u % 10);
        u /= 10;
    } while (u);

    return ngx_cpymem(p, b, buf + NGX_INT64_LEN - b);
}



/*
 * Room for size bytes at o->b->last: in the current buffer, or after
 * handing it on (plain: to the filters; gzip: to deflate) in a fresh
 * one.  NULL when no buffer is free (wait for the socket) or o->failed.
 */

static u_char *
ngx_http_metrics_reserve(ngx_http_metrics_out_t *o, size_t size)
{
    if (o->b && (size_t) (o->b->end - o->b->last) >= size) {
        return o->b->last;
    }

    if (o->b && o->b->last > o->b->pos) {
        if (ngx_http_metrics_flush_buf(o) != NGX_OK) {
            return NULL;
        }
    }

#if (NGX_HTTP_GZIP)

    if (o->gzip) {
        /* the text buffer, empty now; bigger if a series needs it */

        if (o->b == NULL || (size_t) (o->b->end - o->b->start) < size) {
            o->b = ngx_create_temp_buf(o->r->pool,
                                       ngx_max(size,
                                               NGX_HTTP_METRICS_BUF_SIZE));
            if (o->b == NULL) {
                o->failed = 1;
                return NULL;
            }
        }

        o->b->pos = o->b->start;
        o->b->last = o->b->start;

        return o->b->last;
    }

#endif

    if (o->b && (size_t) (o->b->end - o->b->start) >= size) {
        /* an empty buffer kept from before */
        o->b->pos = o->b->start;
        o->b->last = o->b->start;
        return o->b->last;
    }

    o->b = ngx_http_metrics_get_buf(o, size);

    return o->b ? o->b->last : NULL;
}


/*
 * The filled part of the current buffer goes on: plain, the buffer joins
 * the chain for the filters; gzip, deflate takes the text (NGX_AGAIN if
 * it has no output buffer free yet; the rest waits in the text buffer).
 */

static ngx_int_t
ngx_http_metrics_flush_buf(ngx_http_metrics_out_t *o)
{
    ngx_buf_t  *b;

#if (NGX_HTTP_GZIP)
    if (o->gzip) {
        return ngx_http_metrics_deflate(o, 0);
    }
#endif

    b = o->b;

    if (b == NULL || b->last == b->pos) {
        return NGX_OK;
    }

    o->b = NULL;

    return ngx_http_metrics_link(o, b);
}


static ngx_int_t
ngx_http_metrics_link(ngx_http_metrics_out_t *o, ngx_buf_t *b)
{
    ngx_chain_t  *cl;

    cl = ngx_alloc_chain_link(o->r->pool);
    if (cl == NULL) {
        o->failed = 1;
        return NGX_ERROR;
    }

    cl->buf = b;
    cl->next = NULL;

    *o->last = cl;
    o->last = &cl->next;

    return NGX_OK;
}


/*
 * An output buffer of at least size bytes: one the filters have sent, or
 * a new one while fewer than NGX_HTTP_METRICS_BUFS exist.  NULL when all
 * are in flight (or an allocation failed: o->failed).
 */

static ngx_buf_t *
ngx_http_metrics_get_buf(ngx_http_metrics_out_t *o, size_t size)
{
    ngx_buf_t    *b;
    ngx_chain_t  *cl, **ll;

    for (ll = &o->free; *ll; ll = &(*ll)->next) {
        cl = *ll;
        b = cl->buf;

        if ((size_t) (b->end - b->start) >= size) {
            *ll = cl->next;
            ngx_free_chain(o->r->pool, cl);

            b->pos = b->start;
            b->last = b->start;
            b->flush = 0;

            return b;
        }
    }

    if (o->nbufs >= NGX_HTTP_METRICS_BUFS && o->free
        && size > NGX_HTTP_METRICS_BUF_SIZE)
    {
        /* a series larger than a buffer: a free buffer makes room */
        cl = o->free;
        o->free = cl->next;
        ngx_pfree(o->r->pool, cl->buf->start);
        o->nbufs--;
    }

    if (o->nbufs >= NGX_HTTP_METRICS_BUFS) {
        return NULL;
    }

    b = ngx_create_temp_buf(o->r->pool,
                            ngx_max(size, NGX_HTTP_METRICS_BUF_SIZE));
    if (b == NULL) {
        o->failed = 1;
        return NULL;
    }

    b->tag = (ngx_buf_tag_t) &ngx_http_metrics_module;
    o->nbufs++;

    return b;
}


#if (NGX_HTTP_GZIP)

static ngx_int_t
ngx_http_metrics_gzip_init(ngx_http_metrics_out_t *o)
{
    ngx_edge_zlib_use_pool(&o->zs, o->r->pool);

    /* level 1; windowBits 15 + 16: a gzip wrapper; zlib's state, about
     * 256 KB, comes from the request pool */
    if (deflateInit2(&o->zs, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY)
        != Z_OK)
    {
        return NGX_ERROR;
    }

    o->gzip = 1;

    return NGX_OK;
}


/*
 * Deflates what the text buffer holds into output buffers (finish: and
 * ends the stream).  NGX_AGAIN when every output buffer is in flight:
 * the text left waits in the text buffer (zlib keeps its position).
 */

static ngx_int_t
ngx_http_metrics_deflate(ngx_http_metrics_out_t *o, ngx_uint_t finish)
{
    int         rc;
    ngx_buf_t  *b;

    b = o->b;

    if (b) {
        o->zs.next_in = b->pos;
        o->zs.avail_in = b->last - b->pos;

    } else {
        o->zs.next_in = NULL;
        o->zs.avail_in = 0;
    }

    for ( ;; ) {

        if (!finish && o->zs.avail_in == 0) {
            break;
        }

        if (o->zb == NULL) {
            o->zb = ngx_http_metrics_get_buf(o, 0);
            if (o->zb == NULL) {
                if (b) {
                    b->pos = o->zs.next_in;
                }

                return ngx_http_metrics_blocked(o);
            }
        }

        o->zs.next_out = o->zb->last;
        o->zs.avail_out = o->zb->end - o->zb->last;

        rc = deflate(&o->zs, finish ? Z_FINISH : Z_NO_FLUSH);

        if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR) {
            ngx_log_error(NGX_LOG_ALERT, o->r->connection->log, 0,
                          "deflate() failed: %d", rc);
            return NGX_ERROR;
        }

        o->zb->last = o->zs.next_out;

        if (o->zb->last == o->zb->end || rc == Z_STREAM_END) {
            if (ngx_http_metrics_link(o, o->zb) != NGX_OK) {
                return NGX_ERROR;
            }

            o->zb = NULL;
        }

        if (rc == Z_STREAM_END) {
            break;
        }
    }

    if (b) {
        b->pos = b->start;
        b->last = b->start;
    }

    return NGX_OK;
}



#endif
