/*
 * ngx_http_metrics_module: the exposition handler.
 *
 * Renders nginx's connection counters, every stats zone in the cycle's
 * shared memory (named edge_stats_*, whichever module owns it) and the
 * zones' health, as Prometheus text 0.0.4, OpenMetrics 1.0 or JSON, gzip
 * compressed when the scraper accepts it.  A scrape takes no lock: it reads
 * the published series and sums the workers' slots with relaxed loads.
 * Every allocation comes from the request pool (jansson's tree aside,
 * which is freed before the handler returns).
 */

#include "ngx_http_metrics_module.h"
#include "ngx_edge_json.h"

#include <zlib.h>


#define NGX_HTTP_METRICS_TEXT         0
#define NGX_HTTP_METRICS_OPENMETRICS  1
#define NGX_HTTP_METRICS_JSON         2

#define NGX_HTTP_METRICS_BUF_SIZE     65536

/* every rendered family name starts with this */
#define NGX_HTTP_METRICS_PREFIX       "nginx_"


typedef struct {
    ngx_str_t                    name;       /* the owner: "ratelimit" */
    ngx_edge_stats_sh_t         *sh;
    ngx_slab_pool_t             *shpool;
    size_t                       size;
    ngx_uint_t                   nseries;    /* the snapshot's */
    uint32_t                    *order;      /* series, by family */
    uint32_t                    *first;      /* per family, into order */
} ngx_http_metrics_zone_t;


typedef struct {
    ngx_http_request_t          *r;
    ngx_uint_t                   format;
    ngx_array_t                  filter;     /* ngx_str_t, name prefixes */

    ngx_chain_t                 *out;
    ngx_chain_t                **last;
    ngx_buf_t                   *b;
    off_t                        size;

    /* the family being rendered */
    ngx_uint_t                   type;
    ngx_str_t                    name;       /* as the samples are named */
    ngx_str_t                    base;       /* for HELP and TYPE */
    u_char                      *labels;     /* scratch for label sets */
    size_t                       labels_size;
    ngx_str_t                   *le;         /* a histogram's le="..." */

    json_t                      *json;       /* the families, for JSON */
    json_t                      *series;     /* the family's */
} ngx_http_metrics_out_t;


static ngx_uint_t ngx_http_metrics_format(ngx_http_request_t *r);
static double ngx_http_metrics_accept_q(ngx_str_t *accept, const char *type,
    size_t len);
static ngx_int_t ngx_http_metrics_parse_filter(ngx_http_metrics_out_t *o);
static ngx_array_t *ngx_http_metrics_zones(ngx_http_request_t *r);
static ngx_int_t ngx_http_metrics_render(ngx_http_metrics_out_t *o);
static ngx_int_t ngx_http_metrics_render_zone(ngx_http_metrics_out_t *o,
    ngx_http_metrics_zone_t *z);
static ngx_int_t ngx_http_metrics_render_health(ngx_http_metrics_out_t *o,
    ngx_array_t *zones);
static ngx_int_t ngx_http_metrics_family(ngx_http_metrics_out_t *o,
    ngx_str_t *name, ngx_str_t *help, ngx_uint_t type);
static ngx_int_t ngx_http_metrics_sample(ngx_http_metrics_out_t *o,
    ngx_str_t *keys, ngx_str_t *values, ngx_uint_t n, int64_t *v,
    ngx_edge_stats_shfamily_t *f);
static ngx_int_t ngx_http_metrics_simple(ngx_http_metrics_out_t *o,
    const char *name, const char *help, ngx_uint_t type, int64_t value);
static ngx_int_t ngx_http_metrics_line(ngx_http_metrics_out_t *o,
    ngx_str_t *name, const char *suffix, u_char *labels, size_t len,
    u_char *extra, size_t elen, u_char *value, size_t vlen);
static u_char *ngx_http_metrics_reserve(ngx_http_metrics_out_t *o,
    size_t size);
static u_char *ngx_http_metrics_escape(u_char *dst, ngx_str_t *src,
    ngx_uint_t quote);
static u_char *ngx_http_metrics_scaled(u_char *p, uint64_t v, uint64_t scale,
    ngx_uint_t point);
static u_char *ngx_http_metrics_int(u_char *p, int64_t v);
static ngx_str_t *ngx_http_metrics_le(ngx_http_metrics_out_t *o,
    ngx_edge_stats_shfamily_t *f);
static ngx_int_t ngx_http_metrics_gzip(ngx_http_metrics_out_t *o);
static void *ngx_http_metrics_zalloc(void *opaque, u_int items, u_int size);
static void ngx_http_metrics_zfree(void *opaque, void *address);


static ngx_str_t  ngx_http_metrics_types[] = {
    ngx_string("text/plain; version=0.0.4; charset=utf-8"),
    ngx_string("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    ngx_string("application/json")
};

static const char  *ngx_http_metrics_type_names[] = {
    "counter", "gauge", "gauge", "histogram"
};


ngx_int_t
ngx_http_metrics_handler(ngx_http_request_t *r)
{
    ngx_int_t                rc;
    ngx_chain_t             *cl;
    ngx_table_elt_t         *h;
    ngx_http_metrics_out_t   o;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    ngx_memzero(&o, sizeof(ngx_http_metrics_out_t));

    o.r = r;
    o.last = &o.out;
    o.format = ngx_http_metrics_format(r);

    if (ngx_http_metrics_parse_filter(&o) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (o.format == NGX_HTTP_METRICS_JSON) {
        o.json = json_array();
        if (o.json == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    rc = ngx_http_metrics_render(&o);

    if (o.format == NGX_HTTP_METRICS_JSON) {
        if (rc == NGX_OK) {
            json_t  *root;

            root = json_pack("{so}", "families", o.json);
            o.out = root ? ngx_edge_json_chain(r->pool, root, JSON_COMPACT,
                                               &o.size)
                         : NULL;
            rc = (o.out == NULL) ? NGX_ERROR : NGX_OK;

            if (root) {
                json_decref(root);
            }

        } else {
            json_decref(o.json);
        }
    }

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (o.out == NULL && ngx_http_metrics_reserve(&o, 0) == NULL) {
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

    if (ngx_http_gzip_ok(r) == NGX_OK) {
        if (ngx_http_metrics_gzip(&o) != NGX_OK) {
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

    for (cl = o.out; cl->next; cl = cl->next) { /* void */ }

    cl->buf->last_buf = (r == r->main) ? 1 : 0;
    cl->buf->last_in_chain = 1;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = o.size;
    r->headers_out.content_type = ngx_http_metrics_types[o.format];
    r->headers_out.content_type_len = ngx_http_metrics_types[o.format].len;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    return ngx_http_output_filter(r, o.out);
}


/*
 * "?format=text|openmetrics|json" wins; otherwise the Accept header's
 * preference between text/plain (or any type), OpenMetrics and JSON, text
 * on a tie.
 */

static ngx_uint_t
ngx_http_metrics_format(ngx_http_request_t *r)
{
    double      text, om, json;
    ngx_str_t   arg, *accept;

    if (ngx_http_arg(r, (u_char *) "format", 6, &arg) == NGX_OK) {
        if (arg.len == 11 && ngx_strncmp(arg.data, "openmetrics", 11) == 0) {
            return NGX_HTTP_METRICS_OPENMETRICS;
        }

        if (arg.len == 4 && ngx_strncmp(arg.data, "json", 4) == 0) {
            return NGX_HTTP_METRICS_JSON;
        }

        return NGX_HTTP_METRICS_TEXT;
    }

    if (r->headers_in.accept == NULL) {
        return NGX_HTTP_METRICS_TEXT;
    }

    accept = &r->headers_in.accept->value;

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
    ngx_uint_t                i, k, f, nfam;
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

        /* one snapshot of the series list, grouped by family */

        z->nseries = ngx_edge_stats_nseries(sh);
        nfam = sh->nfamilies;

        z->first = ngx_pcalloc(r->pool, (nfam + 1) * sizeof(uint32_t));
        z->order = ngx_palloc(r->pool,
                              (z->nseries + 1) * sizeof(uint32_t));
        if (z->first == NULL || z->order == NULL) {
            return NULL;
        }

        for (k = 0; k < z->nseries; k++) {
            z->first[sh->series[k].family + 1]++;
        }

        for (f = 0; f < nfam; f++) {
            z->first[f + 1] += z->first[f];
        }

        for (k = 0; k < z->nseries; k++) {
            f = sh->series[k].family;
            z->order[z->first[f]++] = (uint32_t) k;
        }

        /* the fill moved every start to the next family's: shift back */

        for (f = nfam; f > 0; f--) {
            z->first[f] = z->first[f - 1];
        }

        z->first[0] = 0;
    }

    return zones;
}


static ngx_int_t
ngx_http_metrics_render(ngx_http_metrics_out_t *o)
{
    ngx_uint_t                i;
    ngx_array_t              *zones;
    ngx_http_metrics_zone_t  *z;

#if (NGX_STAT_STUB)

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
        return NGX_ERROR;
    }

#endif

    zones = ngx_http_metrics_zones(o->r);
    if (zones == NULL) {
        return NGX_ERROR;
    }

    z = zones->elts;

    for (i = 0; i < zones->nelts; i++) {
        if (ngx_http_metrics_render_zone(o, &z[i]) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    if (ngx_http_metrics_render_health(o, zones) != NGX_OK) {
        return NGX_ERROR;
    }

    if (o->format == NGX_HTTP_METRICS_OPENMETRICS) {
        u_char  *p;

        p = ngx_http_metrics_reserve(o, sizeof("# EOF\n") - 1);
        if (p == NULL) {
            return NGX_ERROR;
        }

        o->b->last = ngx_cpymem(p, "# EOF\n", sizeof("# EOF\n") - 1);
        o->size += sizeof("# EOF\n") - 1;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_metrics_render_zone(ngx_http_metrics_out_t *o,
    ngx_http_metrics_zone_t *z)
{
    u_char                     *p;
    int64_t                    *v;
    ngx_int_t                   rc;
    ngx_str_t                   name;
    ngx_uint_t                  fi, i, k, begun, zero;
    ngx_edge_stats_sh_t        *sh;
    ngx_edge_stats_series_t    *s;
    ngx_edge_stats_shfamily_t  *f;

    sh = z->sh;

    for (fi = 0; fi < sh->nfamilies; fi++) {
        f = &sh->families[fi];

        if ((f->flags & NGX_EDGE_STATS_HIDDEN)
            || z->first[fi] == z->first[fi + 1])
        {
            continue;
        }

        name.len = sizeof(NGX_HTTP_METRICS_PREFIX) - 1 + f->name.len;
        name.data = ngx_pnalloc(o->r->pool, name.len);
        if (name.data == NULL) {
            return NGX_ERROR;
        }

        p = ngx_cpymem(name.data, NGX_HTTP_METRICS_PREFIX,
                       sizeof(NGX_HTTP_METRICS_PREFIX) - 1);
        ngx_memcpy(p, f->name.data, f->name.len);

        v = ngx_palloc(o->r->pool, f->width * sizeof(int64_t));
        if (v == NULL) {
            return NGX_ERROR;
        }

        begun = 0;

        for (i = z->first[fi]; i < z->first[fi + 1]; i++) {
            s = &sh->series[z->order[i]];

            zero = 1;

            for (k = 0; k < f->width; k++) {
                v[k] = ngx_edge_stats_read(sh, s, k);
                zero = zero && v[k] == 0;
            }

            if (s->overflow && zero) {
                /* nothing overflowed (yet) */
                continue;
            }

            if (!begun) {
                rc = ngx_http_metrics_family(o, &name, &f->help, f->type);

                if (rc == NGX_DECLINED) {
                    break;
                }

                if (rc != NGX_OK) {
                    return NGX_ERROR;
                }

                begun = 1;

                if (f->type == NGX_EDGE_STATS_HISTOGRAM) {
                    o->le = ngx_http_metrics_le(o, f);
                    if (o->le == NULL) {
                        return NGX_ERROR;
                    }
                }
            }

            if (ngx_http_metrics_sample(o, f->labels, s->values, f->nlabels,
                                        v, f)
                != NGX_OK)
            {
                return NGX_ERROR;
            }
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_metrics_render_health(ngx_http_metrics_out_t *o, ngx_array_t *zones)
{
    int64_t                     v;
    ngx_int_t                   rc;
    ngx_str_t                   name, help, keys[2], values[2];
    ngx_uint_t                  h, i, fi, begun;
    ngx_edge_stats_sh_t        *sh;
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
        { "nginx_edge_stats_series_dropped_total",
          "Observations counted into a family's overflow series because "
          "the family or the zone was full.", NGX_EDGE_STATS_COUNTER }
    };

    z = zones->elts;

    if (zones->nelts == 0) {
        return NGX_OK;
    }

    ngx_str_set(&keys[0], "zone");
    ngx_str_set(&keys[1], "family");

    for (h = 0; h < sizeof(health) / sizeof(health[0]); h++) {

        name.data = (u_char *) health[h].name;
        name.len = ngx_strlen(health[h].name);
        help.data = (u_char *) health[h].help;
        help.len = ngx_strlen(health[h].help);

        begun = 0;

        for (i = 0; i < zones->nelts; i++) {
            sh = z[i].sh;
            values[0] = z[i].name;

            if (h == 5) {
                for (fi = 0; fi < sh->nfamilies; fi++) {
                    f = &sh->families[fi];

                    if (f->dropped < 0) {
                        continue;
                    }

                    if (!begun) {
                        rc = ngx_http_metrics_family(o, &name, &help,
                                                     health[h].type);
                        if (rc == NGX_DECLINED) {
                            return NGX_OK;
                        }

                        if (rc != NGX_OK) {
                            return NGX_ERROR;
                        }

                        begun = 1;
                    }

                    {
                        ngx_edge_stats_series_t  s;

                        /* a pseudo series over the dropped counter */
                        ngx_memzero(&s, sizeof(ngx_edge_stats_series_t));
                        s.family = (uint32_t) fi;
                        s.off = (uint32_t) f->dropped;

                        v = ngx_edge_stats_read(sh, &s, 0);
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

                    if (ngx_http_metrics_sample(o, keys, values, 2, &v, NULL)
                        != NGX_OK)
                    {
                        return NGX_ERROR;
                    }
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

            if (v < 0) {
                continue;
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

            if (ngx_http_metrics_sample(o, keys, values, 1, &v, NULL)
                != NGX_OK)
            {
                return NGX_ERROR;
            }
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

    o->type = type;
    o->name = *name;
    o->base = *name;

    if (type == NGX_EDGE_STATS_COUNTER
        && o->format == NGX_HTTP_METRICS_OPENMETRICS
        && name->len > 6
        && ngx_strncmp(name->data + name->len - 6, "_total", 6) == 0)
    {
        o->base.len -= 6;
    }

    if (o->format == NGX_HTTP_METRICS_JSON) {
        json_t  *family;

        o->series = json_array();
        family = json_pack("{s:s%,s:s,s:s%,s:o}",
                           "name", (char *) name->data, name->len,
                           "type", ngx_http_metrics_type_names[type],
                           "help", help->data ? (char *) help->data : "",
                           help->len,
                           "series", o->series);

        if (o->series == NULL || family == NULL
            || json_array_append_new(o->json, family) != 0)
        {
            return NGX_ERROR;
        }

        return NGX_OK;
    }

    len = sizeof("# HELP  \n# TYPE  \n") - 1 + 2 * o->base.len
          + 2 * help->len + sizeof("histogram") - 1;

    p = ngx_http_metrics_reserve(o, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(p, "# HELP ", 7);
    p = ngx_cpymem(p, o->base.data, o->base.len);
    *p++ = ' ';
    p = ngx_http_metrics_escape(p, help,
                                o->format == NGX_HTTP_METRICS_OPENMETRICS);
    p = ngx_sprintf(p, "\n# TYPE %V %s\n", &o->base,
                    ngx_http_metrics_type_names[type]);

    o->size += p - o->b->last;
    o->b->last = p;

    return NGX_OK;
}


static ngx_int_t
ngx_http_metrics_sample(ngx_http_metrics_out_t *o, ngx_str_t *keys,
    ngx_str_t *values, ngx_uint_t n, int64_t *v, ngx_edge_stats_shfamily_t *f)
{
    u_char      *p, *labels, value[NGX_INT64_LEN + 32];
    size_t       len;
    int64_t      count;
    ngx_str_t    total;
    ngx_uint_t   i;

    if (o->format == NGX_HTTP_METRICS_JSON) {
        json_t  *series, *lab, *buckets;
        char     key[128];

        series = json_object();
        lab = json_object();

        if (series == NULL || lab == NULL
            || json_object_set_new(series, "labels", lab) != 0
            || json_array_append_new(o->series, series) != 0)
        {
            return NGX_ERROR;
        }

        for (i = 0; i < n; i++) {
            ngx_cpystrn((u_char *) key, keys[i].data,
                        ngx_min(keys[i].len + 1, sizeof(key)));

            if (json_object_set_new(lab, key, ngx_edge_json_str(&values[i]))
                != 0)
            {
                return NGX_ERROR;
            }
        }

        if (o->type != NGX_EDGE_STATS_HISTOGRAM) {
            return json_object_set_new(series, "value", json_integer(v[0]))
                   ? NGX_ERROR : NGX_OK;
        }

        buckets = json_array();
        if (buckets == NULL
            || json_object_set_new(series, "buckets", buckets) != 0)
        {
            return NGX_ERROR;
        }

        count = 0;

        for (i = 0; i <= f->nbounds; i++) {
            count += v[i];

            if (json_array_append_new(buckets,
                    json_pack("{s:o,s:I}",
                              "le", i < f->nbounds
                                    ? json_real((double) f->bounds[i]
                                                / f->scale)
                                    : json_string("+Inf"),
                              "count", (json_int_t) count))
                != 0)
            {
                return NGX_ERROR;
            }
        }

        if (json_object_set_new(series, "count", json_integer(count)) != 0
            || json_object_set_new(series, "sum",
                                   json_real((double) v[f->nbounds + 1]
                                             / f->scale))
               != 0)
        {
            return NGX_ERROR;
        }

        return NGX_OK;
    }

    /* the label set once, escaped, for every line of the series */

    len = 0;

    for (i = 0; i < n; i++) {
        len += keys[i].len + sizeof("=\"\",") - 1 + 5 * values[i].len;
    }

    if (len > o->labels_size) {
        o->labels_size = ngx_max(len, 1024);
        o->labels = ngx_pnalloc(o->r->pool, o->labels_size);
        if (o->labels == NULL) {
            return NGX_ERROR;
        }
    }

    labels = o->labels;
    p = labels;

    for (i = 0; i < n; i++) {
        if (i) {
            *p++ = ',';
        }

        p = ngx_cpymem(p, keys[i].data, keys[i].len);
        *p++ = '=';
        *p++ = '"';
        p = ngx_http_metrics_escape(p, &values[i], 1);
        *p++ = '"';
    }

    len = p - labels;

    if (o->type != NGX_EDGE_STATS_HISTOGRAM) {
        p = ngx_http_metrics_int(value, v[0]);

        /* o->name: the counter's full name in either format */
        return ngx_http_metrics_line(o, &o->name, "", labels, len, NULL, 0,
                                     value, p - value);
    }

    total = o->name;
    o->name = o->base;

    count = 0;

    for (i = 0; i <= f->nbounds; i++) {
        count += v[i];

        p = ngx_http_metrics_int(value, count);

        if (ngx_http_metrics_line(o, &o->name, "_bucket", labels, len,
                                  o->le[i].data, o->le[i].len,
                                  value, p - value)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    p = ngx_http_metrics_scaled(value, (uint64_t) v[f->nbounds + 1],
                                f->scale, 0);

    if (ngx_http_metrics_line(o, &o->name, "_sum", labels, len, NULL, 0,
                              value, p - value)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    p = ngx_http_metrics_int(value, count);

    if (ngx_http_metrics_line(o, &o->name, "_count", labels, len, NULL, 0,
                              value, p - value)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    o->name = total;

    return NGX_OK;
}


/* a family of one series without labels: nginx's own counters */

static ngx_int_t
ngx_http_metrics_simple(ngx_http_metrics_out_t *o, const char *name,
    const char *help, ngx_uint_t type, int64_t value)
{
    ngx_int_t  rc;
    ngx_str_t  n, h;

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

    return ngx_http_metrics_sample(o, NULL, NULL, 0, &value, NULL);
}


static ngx_int_t
ngx_http_metrics_line(ngx_http_metrics_out_t *o, ngx_str_t *name,
    const char *suffix, u_char *labels, size_t len, u_char *extra,
    size_t elen, u_char *value, size_t vlen)
{
    u_char  *p, *start;
    size_t   slen;

    slen = ngx_strlen(suffix);

    p = ngx_http_metrics_reserve(o, name->len + slen + len + elen + vlen + 5);
    if (p == NULL) {
        return NGX_ERROR;
    }

    start = p;

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

    o->size += p - start;
    o->b->last = p;

    return NGX_OK;
}


static u_char *
ngx_http_metrics_reserve(ngx_http_metrics_out_t *o, size_t size)
{
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    if (o->b && (size_t) (o->b->end - o->b->last) >= size) {
        return o->b->last;
    }

    b = ngx_create_temp_buf(o->r->pool,
                            ngx_max(size, NGX_HTTP_METRICS_BUF_SIZE));
    if (b == NULL) {
        return NULL;
    }

    cl = ngx_alloc_chain_link(o->r->pool);
    if (cl == NULL) {
        return NULL;
    }

    cl->buf = b;
    cl->next = NULL;

    *o->last = cl;
    o->last = &cl->next;
    o->b = b;

    return b->last;
}


/*
 * Escapes a label value (quote) or a HELP text: backslash, newline and,
 * in a label value, the double quote.  A byte that is not part of valid
 * UTF-8 becomes the text "\xHH" (its backslash escaped in turn), so the
 * exposition stays valid whatever a variable held.  Needs 5 * len bytes.
 */

static u_char *
ngx_http_metrics_escape(u_char *dst, ngx_str_t *src, ngx_uint_t quote)
{
    u_char  *p, *q, *last;

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

        q = p;

        if (ngx_utf8_decode(&q, last - p) > 0x10ffff) {
            dst = ngx_sprintf(dst, "\\\\x%02xd", (int) *p);
            p++;
            continue;
        }

        dst = ngx_cpymem(dst, p, q - p);
        p = q;
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


static ngx_int_t
ngx_http_metrics_gzip(ngx_http_metrics_out_t *o)
{
    int             rc, flush;
    ngx_buf_t      *b;
    z_stream        zs;
    ngx_chain_t    *in, *out, *cl, **last;

    ngx_memzero(&zs, sizeof(z_stream));

    zs.zalloc = ngx_http_metrics_zalloc;
    zs.zfree = ngx_http_metrics_zfree;
    zs.opaque = o->r->pool;

    /* windowBits 15 + 16: a gzip wrapper */
    if (deflateInit2(&zs, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY)
        != Z_OK)
    {
        return NGX_ERROR;
    }

    out = NULL;
    last = &out;
    b = NULL;
    in = o->out;

    zs.next_in = in->buf->pos;
    zs.avail_in = in->buf->last - in->buf->pos;

    for ( ;; ) {

        if (zs.avail_in == 0 && in->next) {
            in = in->next;
            zs.next_in = in->buf->pos;
            zs.avail_in = in->buf->last - in->buf->pos;
            continue;
        }

        if (b == NULL || b->last == b->end) {
            b = ngx_create_temp_buf(o->r->pool, NGX_HTTP_METRICS_BUF_SIZE);
            if (b == NULL) {
                goto failed;
            }

            cl = ngx_alloc_chain_link(o->r->pool);
            if (cl == NULL) {
                goto failed;
            }

            cl->buf = b;
            cl->next = NULL;
            *last = cl;
            last = &cl->next;
        }

        zs.next_out = b->last;
        zs.avail_out = b->end - b->last;

        flush = (in->next == NULL) ? Z_FINISH : Z_NO_FLUSH;

        rc = deflate(&zs, flush);

        if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR) {
            goto failed;
        }

        b->last = zs.next_out;

        if (rc == Z_STREAM_END) {
            break;
        }
    }

    o->size = zs.total_out;
    o->out = out;

    deflateEnd(&zs);

    return NGX_OK;

failed:

    deflateEnd(&zs);

    return NGX_ERROR;
}


static void *
ngx_http_metrics_zalloc(void *opaque, u_int items, u_int size)
{
    return ngx_palloc(opaque, items * size);
}


static void
ngx_http_metrics_zfree(void *opaque, void *address)
{
    /* the request pool frees it */
}
