/*
 * ngx_http_metrics_module: Prometheus metrics of nginx itself and of the
 * other edge modules.
 *
 * This file holds the module tables, the configuration and the LOG phase
 * handler that counts requests; ngx_http_metrics_render.c holds the
 * exposition handler.
 *
 * Request metrics live in a stats zone of their own ("edge_stats_metrics",
 * see common/ngx_edge_stats.h).  Their series are created at run time: a
 * series' labels are the operator's names for the server and location, the
 * method, the status and the values of variables, each variable label
 * bounded by its declared maximum of distinct values.
 */

#include "ngx_http_metrics_module.h"


typedef struct {
    ngx_edge_stats_id_t          upgraded;
} ngx_http_metrics_ctx_t;


/*
 * A worker's memory of which size histogram series go with a duration
 * series (the three histograms have the same labels): a request whose
 * duration series is in it, with every generation unchanged, skips two
 * lookups.
 */
typedef struct {
    ngx_edge_stats_t            *stats;
    ngx_edge_stats_id_t          id[3];
    uint32_t                     gen[3];
} ngx_http_metrics_hist_cache_t;

#define NGX_HTTP_METRICS_HIST_CACHE  1024

static ngx_http_metrics_hist_cache_t
    ngx_http_metrics_hist_cache[NGX_HTTP_METRICS_HIST_CACHE];


static ngx_int_t ngx_http_metrics_log_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_metrics_header_filter(ngx_http_request_t *r);
static ngx_uint_t ngx_http_metrics_labels(ngx_http_request_t *r,
    ngx_http_metrics_main_conf_t *mmcf, ngx_str_t *values, uint32_t *hashes,
    u_char (*buf)[NGX_EDGE_STATS_VALUE_MAX]);
static void ngx_http_metrics_request_histograms(
    ngx_http_metrics_main_conf_t *mmcf,
    ngx_str_t *values, uint32_t *hashes, ngx_edge_stats_id_t *ids);
static uint32_t ngx_http_metrics_status(ngx_http_metrics_main_conf_t *mmcf,
    ngx_uint_t status, ngx_str_t *value, u_char *buf);
static void ngx_http_metrics_upstream(ngx_http_request_t *r,
    ngx_http_metrics_main_conf_t *mmcf, ngx_str_t *values, uint32_t *hashes);
static ngx_int_t ngx_http_metrics_register(ngx_conf_t *cf,
    ngx_http_metrics_main_conf_t *mmcf);
static ngx_int_t ngx_http_metrics_init(ngx_conf_t *cf);
static void *ngx_http_metrics_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_metrics_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_metrics_create_srv_conf(ngx_conf_t *cf);
static char *ngx_http_metrics_merge_srv_conf(ngx_conf_t *cf, void *parent,
    void *child);
static void *ngx_http_metrics_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_metrics_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_metrics_zone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_metrics_location(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_metrics_label(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_metrics_buckets(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_metrics(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);


static ngx_conf_enum_t  ngx_http_metrics_status_modes[] = {
    { ngx_string("code"), NGX_HTTP_METRICS_STATUS_CODE },
    { ngx_string("class"), NGX_HTTP_METRICS_STATUS_CLASS },
    { ngx_null_string, 0 }
};


static ngx_command_t  ngx_http_metrics_commands[] = {

    { ngx_string("metrics_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE12,
      ngx_http_metrics_zone,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("metrics_status"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_metrics_main_conf_t, status),
      &ngx_http_metrics_status_modes },

    { ngx_string("metrics_label"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE23,
      ngx_http_metrics_label,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("metrics_buckets"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_metrics_buckets,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("metrics_server"),
      NGX_HTTP_SRV_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_SRV_CONF_OFFSET,
      offsetof(ngx_http_metrics_srv_conf_t, server),
      NULL },

    { ngx_string("metrics_location"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_metrics_location,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("metrics"),
      NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_metrics,
      0,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_metrics_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_metrics_init,                 /* postconfiguration */

    ngx_http_metrics_create_main_conf,     /* create main configuration */
    ngx_http_metrics_init_main_conf,       /* init main configuration */

    ngx_http_metrics_create_srv_conf,      /* create server configuration */
    ngx_http_metrics_merge_srv_conf,       /* merge server configuration */

    ngx_http_metrics_create_loc_conf,      /* create location configuration */
    ngx_http_metrics_merge_loc_conf        /* merge location configuration */
};


ngx_module_t  ngx_http_metrics_module = {
    NGX_MODULE_V1,
    &ngx_http_metrics_module_ctx,          /* module context */
    ngx_http_metrics_commands,             /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;


/* label names before the variable labels, per family */

static const char  *ngx_http_metrics_requests_labels[] = {
    "server", "location", "method", "status", NULL
};

static const char  *ngx_http_metrics_request_labels[] = {
    "server", "location", NULL
};

static const char  *ngx_http_metrics_upstream_labels[] = {
    "server", "location", "upstream", NULL
};

static const char  *ngx_http_metrics_peer_labels[] = {
    "server", "location", "upstream", "peer", "status", NULL
};

static const char  *ngx_http_metrics_value_label[] = { "value", NULL };


typedef struct {
    const char                  *name;
    const char                  *help;
    ngx_edge_stats_type_e        type;
    const char                 **labels;
    ngx_uint_t                   variables;  /* + the variable labels */
    ngx_int_t                    histogram;  /* metrics_buckets index */
} ngx_http_metrics_family_t;


static ngx_http_metrics_family_t  ngx_http_metrics_families[] = {

    { "http_requests_total",
      "Requests completed, by method and status.",
      NGX_EDGE_STATS_COUNTER, ngx_http_metrics_requests_labels, 1, -1 },

    { "http_request_duration_seconds",
      "Time from the first byte of the request to the log phase.",
      NGX_EDGE_STATS_HISTOGRAM, ngx_http_metrics_request_labels, 1, 0 },

    { "http_request_size_bytes",
      "Request length: request line, header and body.",
      NGX_EDGE_STATS_HISTOGRAM, ngx_http_metrics_request_labels, 1, 1 },

    { "http_response_size_bytes",
      "Response body bytes sent to the client.",
      NGX_EDGE_STATS_HISTOGRAM, ngx_http_metrics_request_labels, 1, 2 },

    { "http_upstream_response_time_seconds",
      "Time to receive the response from an upstream server, per try.",
      NGX_EDGE_STATS_HISTOGRAM, ngx_http_metrics_upstream_labels, 0, 3 },

    { "http_upstream_responses_total",
      "Responses of upstream servers, per peer and status.",
      NGX_EDGE_STATS_COUNTER, ngx_http_metrics_peer_labels, 0, -1 },

    { "http_upgraded_connections",
      "Upgraded (WebSocket) connections in flight.",
      NGX_EDGE_STATS_GAUGE, ngx_http_metrics_request_labels, 0, -1 }
};


static const char  *ngx_http_metrics_histograms[] = {
    "request_duration", "request_size", "response_size",
    "upstream_response_time"
};

/* the unit of each histogram's base values: microseconds or bytes */
static uint64_t  ngx_http_metrics_scales[] = { 1000000, 1, 1, 1000000 };

static uint64_t  ngx_http_metrics_time_buckets[] = {
    5000, 10000, 25000, 50000, 100000, 250000, 500000,
    1000000, 2500000, 5000000, 10000000
};

static uint64_t  ngx_http_metrics_size_buckets[] = {
    64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216
};


static ngx_str_t  ngx_http_metrics_other_method = ngx_string("OTHER");
static ngx_str_t  ngx_http_metrics_none = ngx_string("");
static ngx_str_t  ngx_http_metrics_overflow = ngx_string("__overflow__");


/*
 * Each family's share of metrics_zone, in tenths: the request counter
 * has a series per method and status, the histograms one per label set.
 */
static ngx_uint_t  ngx_http_metrics_shares[NGX_HTTP_METRICS_NFAMILIES] = {
    3, 1, 1, 1, 1, 2, 1
};


#define NGX_HTTP_METRICS_FIXED_LABELS  4


/*
 * Counts the request.  Each label value is normalized and hashed once
 * (ngx_edge_stats_value()), and the same values and hashes serve every
 * family's lookup: the counter with method and status, the three
 * histograms without them.
 */

static ngx_int_t
ngx_http_metrics_log_handler(ngx_http_request_t *r)
{
    int64_t                        ms;
    off_t                          sent;
    u_char                         status[4];
    ngx_time_t                    *tp;
    ngx_edge_stats_t              *st;
    ngx_edge_stats_id_t            id, ids[3];
    ngx_http_metrics_ctx_t        *ctx;
    ngx_http_metrics_loc_conf_t   *mlcf;
    ngx_http_metrics_main_conf_t  *mmcf;
    uint32_t                       hashes[NGX_HTTP_METRICS_FIXED_LABELS
                                          + NGX_EDGE_STATS_MAX_LABELS];
    ngx_str_t                      values[NGX_HTTP_METRICS_FIXED_LABELS
                                          + NGX_EDGE_STATS_MAX_LABELS];
    u_char                         buf[NGX_EDGE_STATS_MAX_LABELS]
                                      [NGX_EDGE_STATS_VALUE_MAX];

    mlcf = ngx_http_get_module_loc_conf(r, ngx_http_metrics_module);

    if (!mlcf->enabled) {
        return NGX_OK;
    }

    mmcf = ngx_http_get_module_main_conf(r, ngx_http_metrics_module);
    st = mmcf->stats;

    ctx = ngx_http_get_module_ctx(r, ngx_http_metrics_module);

    if (ctx && ctx->upgraded != NGX_EDGE_STATS_NONE) {
        ngx_edge_stats_add(st, ctx->upgraded, -1);
    }

    /* values: server, location, method, status, variables... */

    (void) ngx_http_metrics_labels(r, mmcf, values, hashes, buf);

    values[2] = (r->method & NGX_HTTP_UNKNOWN) ? ngx_http_metrics_other_method
                                               : r->method_name;
    hashes[2] = ngx_edge_stats_value(&values[2], buf[0]);

    hashes[3] = ngx_http_metrics_status(mmcf,
                                        r->err_status ? r->err_status
                                                      : r->headers_out.status,
                                        &values[3], status);

    id = ngx_edge_stats_lookup_hashed(st,
                                      mmcf->family[NGX_HTTP_METRICS_REQUESTS],
                                      values, hashes, NULL);
    ngx_edge_stats_add(st, id, 1);

    /* the histograms go without method and status */

    values[2] = values[0];
    values[3] = values[1];
    hashes[2] = hashes[0];
    hashes[3] = hashes[1];

    tp = ngx_timeofday();
    ms = (int64_t) (tp->sec - r->start_sec) * 1000
         + (int64_t) tp->msec - (int64_t) r->start_msec;

    ngx_http_metrics_request_histograms(mmcf, &values[2], &hashes[2], ids);

    ngx_edge_stats_observe(st, ids[0], (uint64_t) ngx_max(ms, 0) * 1000);
    ngx_edge_stats_observe(st, ids[1], (uint64_t) r->request_length);

    sent = r->connection->sent - (off_t) r->header_size;

    ngx_edge_stats_observe(st, ids[2], (uint64_t) ngx_max(sent, 0));

    if (r->upstream_states && r->upstream_states->nelts) {
        ngx_http_metrics_upstream(r, mmcf, values, hashes);
    }

    return NGX_OK;
}


/* the series of the three request histograms, which share their labels */

static void
ngx_http_metrics_request_histograms(ngx_http_metrics_main_conf_t *mmcf,
    ngx_str_t *values, uint32_t *hashes, ngx_edge_stats_id_t *ids)
{
    ngx_uint_t                      i, overflow, any;
    ngx_edge_stats_t               *st;
    ngx_http_metrics_hist_cache_t  *c;

    st = mmcf->stats;

    ids[0] = ngx_edge_stats_lookup_hashed(st,
                                      mmcf->family[NGX_HTTP_METRICS_DURATION],
                                      values, hashes, &any);

    c = &ngx_http_metrics_hist_cache[(ngx_uint_t) ids[0]
                                     % NGX_HTTP_METRICS_HIST_CACHE];

    if (!any
        && c->stats == st
        && c->id[0] == ids[0]
        && ngx_edge_stats_current(st, c->id[0], c->gen[0])
        && ngx_edge_stats_current(st, c->id[1], c->gen[1])
        && ngx_edge_stats_current(st, c->id[2], c->gen[2]))
    {
        ids[1] = c->id[1];
        ids[2] = c->id[2];
        return;
    }

    for (i = 1; i < 3; i++) {
        ids[i] = ngx_edge_stats_lookup_hashed(st,
                     mmcf->family[NGX_HTTP_METRICS_DURATION + i],
                     values, hashes, &overflow);
        any |= overflow;
    }

    /* overflow series are not remembered: each request counts as dropped */

    if (!any) {
        for (i = 0; i < 3; i++) {
            c->id[i] = ids[i];
            c->gen[i] = ngx_edge_stats_generation(st, ids[i]);
        }

        c->stats = st;
    }
}


/*
 * Server, location and the variable labels from values[4] on, normalized
 * (valid UTF-8, bounded; a copy in buf[i] when the value had to change)
 * and hashed.  A value beyond its label's budget becomes "__overflow__".
 */

static ngx_uint_t
ngx_http_metrics_labels(ngx_http_request_t *r,
    ngx_http_metrics_main_conf_t *mmcf, ngx_str_t *values, uint32_t *hashes,
    u_char (*buf)[NGX_EDGE_STATS_VALUE_MAX])
{
    ngx_str_t                    *v;
    ngx_uint_t                    i, k, overflow;
    ngx_http_metrics_label_t     *label;
    ngx_http_metrics_srv_conf_t  *mscf;
    ngx_http_metrics_loc_conf_t  *mlcf;

    mscf = ngx_http_get_module_srv_conf(r, ngx_http_metrics_module);
    mlcf = ngx_http_get_module_loc_conf(r, ngx_http_metrics_module);

    values[0] = mscf->server;
    values[1] = mlcf->location;
    hashes[0] = mscf->server_hash;
    hashes[1] = mlcf->location_hash;

    label = mmcf->labels.elts;

    for (i = 0; i < mmcf->labels.nelts; i++) {
        k = NGX_HTTP_METRICS_FIXED_LABELS + i;
        v = &values[k];

        if (ngx_http_complex_value(r, &label[i].value, v) != NGX_OK) {
            *v = ngx_http_metrics_none;
        }

        hashes[k] = ngx_edge_stats_value(v, buf[i]);

        (void) ngx_edge_stats_lookup_hashed(mmcf->stats, label[i].family, v,
                                            &hashes[k], &overflow);
        if (overflow) {
            *v = ngx_http_metrics_overflow;
            hashes[k] = mmcf->overflow_hash;
        }
    }

    return mmcf->labels.nelts;
}


static uint32_t
ngx_http_metrics_status(ngx_http_metrics_main_conf_t *mmcf,
    ngx_uint_t status, ngx_str_t *value, u_char *buf)
{
    if (status > 999) {
        status = 0;
    }

    buf[0] = (u_char) ('0' + status / 100);

    if (mmcf->status == NGX_HTTP_METRICS_STATUS_CLASS) {
        buf[1] = 'x';
        buf[2] = 'x';

    } else {
        buf[1] = (u_char) ('0' + status / 10 % 10);
        buf[2] = (u_char) ('0' + status % 10);
    }

    value->data = buf;
    value->len = 3;

    /* ASCII: stored as it is, no copy */
    return ngx_edge_stats_value(value, NULL);
}


static void
ngx_http_metrics_upstream(ngx_http_request_t *r,
    ngx_http_metrics_main_conf_t *mmcf, ngx_str_t *values, uint32_t *hashes)
{
    u_char                      status[4], buf[2][NGX_EDGE_STATS_VALUE_MAX];
    uint32_t                    h[5];
    ngx_uint_t                  i;
    ngx_str_t                   v[5];
    ngx_edge_stats_t           *st;
    ngx_edge_stats_id_t         id;
    ngx_http_upstream_t        *u;
    ngx_http_upstream_state_t  *state;

    st = mmcf->stats;
    u = r->upstream;

    v[0] = values[0];
    v[1] = values[1];
    v[2] = ngx_http_metrics_none;
    h[0] = hashes[0];
    h[1] = hashes[1];

    if (u && u->upstream) {
        v[2] = u->upstream->host;

    } else if (u && u->resolved) {
        v[2] = u->resolved->host;
    }

    h[2] = ngx_edge_stats_value(&v[2], buf[0]);

    state = r->upstream_states->elts;

    for (i = 0; i < r->upstream_states->nelts; i++) {

        if (state[i].peer == NULL) {
            /* a separator between upstream groups of a redirected request */
            continue;
        }

        if (state[i].response_time != (ngx_msec_t) -1) {
            id = ngx_edge_stats_lookup_hashed(st,
                                mmcf->family[NGX_HTTP_METRICS_UPSTREAM_TIME],
                                v, h, NULL);
            ngx_edge_stats_observe(st, id,
                                   (uint64_t) state[i].response_time * 1000);
        }

        v[3] = *state[i].peer;
        h[3] = ngx_edge_stats_value(&v[3], buf[1]);
        h[4] = ngx_http_metrics_status(mmcf, state[i].status, &v[4], status);

        id = ngx_edge_stats_lookup_hashed(st,
                            mmcf->family[NGX_HTTP_METRICS_UPSTREAM_RESPONSES],
                            v, h, NULL);
        ngx_edge_stats_add(st, id, 1);
    }
}


static ngx_int_t
ngx_http_metrics_header_filter(ngx_http_request_t *r)
{
    uint32_t                       hashes[2];
    ngx_str_t                      values[2];
    ngx_http_metrics_ctx_t        *ctx;
    ngx_http_metrics_srv_conf_t   *mscf;
    ngx_http_metrics_loc_conf_t   *mlcf;
    ngx_http_metrics_main_conf_t  *mmcf;

    if (r->headers_out.status != NGX_HTTP_SWITCHING_PROTOCOLS
        || r != r->main)
    {
        return ngx_http_next_header_filter(r);
    }

    mlcf = ngx_http_get_module_loc_conf(r, ngx_http_metrics_module);

    if (!mlcf->enabled) {
        return ngx_http_next_header_filter(r);
    }

    mmcf = ngx_http_get_module_main_conf(r, ngx_http_metrics_module);

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_metrics_ctx_t));
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    mscf = ngx_http_get_module_srv_conf(r, ngx_http_metrics_module);

    values[0] = mscf->server;
    values[1] = mlcf->location;
    hashes[0] = mscf->server_hash;
    hashes[1] = mlcf->location_hash;

    ctx->upgraded = ngx_edge_stats_lookup_hashed(mmcf->stats,
                                   mmcf->family[NGX_HTTP_METRICS_UPGRADED],
                                   values, hashes, NULL);
    ngx_edge_stats_add(mmcf->stats, ctx->upgraded, 1);

    ngx_http_set_ctx(r, ctx, ngx_http_metrics_module);

    return ngx_http_next_header_filter(r);
}


static ngx_int_t
ngx_http_metrics_register(ngx_conf_t *cf, ngx_http_metrics_main_conf_t *mmcf)
{
    u_char                     *p;
    size_t                      cost;
    ngx_uint_t                  i, j, k, n, nslots;
    ngx_str_t                   ov;
    ngx_array_t                *b;
    ngx_http_metrics_label_t   *label;
    ngx_edge_stats_family_t     family;
    ngx_http_metrics_family_t  *mf;
    const char                **names;

    mmcf->stats = ngx_edge_stats_create(cf, "metrics",
                                        &ngx_http_metrics_module);
    if (mmcf->stats == NULL) {
        return NGX_ERROR;
    }

    label = mmcf->labels.elts;
    n = mmcf->labels.nelts;

    /* a hidden family per variable label: its set of values, bounded */

    for (i = 0; i < n; i++) {
        ngx_memzero(&family, sizeof(ngx_edge_stats_family_t));

        p = ngx_pnalloc(cf->pool, sizeof("http_label_") + label[i].name.len);
        if (p == NULL) {
            return NGX_ERROR;
        }

        ngx_sprintf(p, "http_label_%V%Z", &label[i].name);

        family.name = (const char *) p;
        family.help = "Values of a variable label.";
        family.type = NGX_EDGE_STATS_COUNTER;
        family.labels = ngx_http_metrics_value_label;
        family.flags = NGX_EDGE_STATS_HIDDEN;
        family.max_series = label[i].max;

        label[i].family = ngx_edge_stats_add_family(cf, mmcf->stats, &family);
        if (label[i].family == NGX_ERROR) {
            return NGX_ERROR;
        }
    }

    nslots = ngx_min(ngx_max(ngx_ncpu, 1), NGX_EDGE_STATS_MAX_SLOTS);

    for (i = 0; i < NGX_HTTP_METRICS_NFAMILIES; i++) {
        mf = &ngx_http_metrics_families[i];

        ngx_memzero(&family, sizeof(ngx_edge_stats_family_t));

        family.name = mf->name;
        family.help = mf->help;
        family.type = mf->type;
        family.flags = NGX_EDGE_STATS_DYNAMIC;

        for (k = 0; mf->labels[k]; k++) { /* void */ }

        names = ngx_palloc(cf->pool, (k + n + 1) * sizeof(char *));
        if (names == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(names, mf->labels, k * sizeof(char *));

        if (mf->variables) {
            for (j = 0; j < n; j++) {
                names[k++] = (const char *) label[j].name.data;
            }
        }

        names[k] = NULL;
        family.labels = names;

        if (mf->histogram >= 0) {
            b = mmcf->buckets[mf->histogram];
            family.scale = ngx_http_metrics_scales[mf->histogram];

            if (b) {
                family.bounds = b->elts;
                family.nbounds = b->nelts;

            } else if (family.scale == 1) {
                family.bounds = ngx_http_metrics_size_buckets;
                family.nbounds = sizeof(ngx_http_metrics_size_buckets)
                                 / sizeof(uint64_t);

            } else {
                family.bounds = ngx_http_metrics_time_buckets;
                family.nbounds = sizeof(ngx_http_metrics_time_buckets)
                                 / sizeof(uint64_t);
            }
        }

        /*
         * Each family has a budget of its own, its share of metrics_zone:
         * a series costs its entry, two lookup buckets, its label strings
         * and its values in every slot.
         */

        cost = sizeof(ngx_edge_stats_series_t) + 2 * sizeof(uint32_t) + 256
               + ngx_edge_stats_width(&family) * nslots * sizeof(uint64_t);

        family.max_series = ngx_max(mmcf->size / 10
                                    * ngx_http_metrics_shares[i] / cost, 1);

        mmcf->family[i] = ngx_edge_stats_add_family(cf, mmcf->stats, &family);
        if (mmcf->family[i] == NGX_ERROR) {
            return NGX_ERROR;
        }
    }

    ngx_edge_stats_set_idle(mmcf->stats, mmcf->idle);

    ov = ngx_http_metrics_overflow;
    mmcf->overflow_hash = ngx_edge_stats_value(&ov, NULL);

    return NGX_OK;
}


static ngx_int_t
ngx_http_metrics_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt           *h;
    ngx_http_core_main_conf_t     *cmcf;
    ngx_http_metrics_main_conf_t  *mmcf;

    mmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_metrics_module);

    if (mmcf->stats == NULL) {
        return NGX_OK;
    }

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_metrics_log_handler;

    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_metrics_header_filter;

    return NGX_OK;
}


static void *
ngx_http_metrics_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_metrics_main_conf_t  *mmcf;

    mmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_metrics_main_conf_t));
    if (mmcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     mmcf->stats = NULL;
     *     mmcf->buckets[] = NULL;
     */

    mmcf->size = NGX_CONF_UNSET_SIZE;
    mmcf->idle = NGX_CONF_UNSET_MSEC;
    mmcf->status = NGX_CONF_UNSET_UINT;

    if (ngx_array_init(&mmcf->labels, cf->pool, 2,
                       sizeof(ngx_http_metrics_label_t))
        != NGX_OK)
    {
        return NULL;
    }

    return mmcf;
}


static char *
ngx_http_metrics_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_metrics_main_conf_t *mmcf = conf;

    ngx_conf_init_uint_value(mmcf->status, NGX_HTTP_METRICS_STATUS_CODE);
    ngx_conf_init_msec_value(mmcf->idle, NGX_HTTP_METRICS_IDLE);

    if (mmcf->size == NGX_CONF_UNSET_SIZE) {
        if (mmcf->labels.nelts) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"metrics_label\" needs \"metrics_zone\"");
            return NGX_CONF_ERROR;
        }

        return NGX_CONF_OK;
    }

    if (ngx_http_metrics_register(cf, mmcf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_metrics_create_srv_conf(ngx_conf_t *cf)
{
    /* ngx_pcalloc(): server is { 0, NULL }, unset */
    return ngx_pcalloc(cf->pool, sizeof(ngx_http_metrics_srv_conf_t));
}


static char *
ngx_http_metrics_merge_srv_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_metrics_srv_conf_t *prev = parent;
    ngx_http_metrics_srv_conf_t *conf = child;

    u_char                    *buf;
    ngx_http_core_srv_conf_t  *cscf;

    if (conf->server.data == NULL) {
        conf->server = prev->server;
    }

    if (conf->server.data == NULL) {
        /* the server's first name: configuration, never the Host header */
        cscf = ngx_http_conf_get_module_srv_conf(cf, ngx_http_core_module);
        conf->server = cscf->server_name;
    }

    /* as the series store it, hashed once */

    buf = ngx_pnalloc(cf->pool, NGX_EDGE_STATS_VALUE_MAX);
    if (buf == NULL) {
        return NGX_CONF_ERROR;
    }

    conf->server_hash = ngx_edge_stats_value(&conf->server, buf);

    return NGX_CONF_OK;
}


static void *
ngx_http_metrics_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_metrics_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_metrics_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    conf->enabled = NGX_CONF_UNSET;

    return conf;
}


static char *
ngx_http_metrics_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_metrics_loc_conf_t *prev = parent;
    ngx_http_metrics_loc_conf_t *conf = child;

    u_char                        *buf;
    ngx_http_metrics_main_conf_t  *mmcf;

    if (conf->enabled == NGX_CONF_UNSET) {
        conf->enabled = prev->enabled;
        conf->location = prev->location;
        conf->location_hash = prev->location_hash;
    }

    if (conf->enabled == NGX_CONF_UNSET) {
        conf->enabled = 0;
    }

    if (conf->enabled) {
        mmcf = ngx_http_conf_get_module_main_conf(cf,
                                                  ngx_http_metrics_module);
        if (mmcf->stats == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"metrics_location\" needs \"metrics_zone\"");
            return NGX_CONF_ERROR;
        }

        buf = ngx_pnalloc(cf->pool, NGX_EDGE_STATS_VALUE_MAX);
        if (buf == NULL) {
            return NGX_CONF_ERROR;
        }

        conf->location_hash = ngx_edge_stats_value(&conf->location, buf);
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_metrics_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_metrics_main_conf_t *mmcf = conf;

    ssize_t      size;
    ngx_str_t   *value, s;
    ngx_msec_t   idle;
    ngx_uint_t   i;

    if (mmcf->size != NGX_CONF_UNSET_SIZE) {
        return "is duplicate";
    }

    value = cf->args->elts;

    for (i = 2; i < cf->args->nelts; i++) {

        if (value[i].len > 5 && ngx_strncmp(value[i].data, "idle=", 5) == 0) {
            s.data = value[i].data + 5;
            s.len = value[i].len - 5;

            if (s.len == 3 && ngx_strncmp(s.data, "off", 3) == 0) {
                mmcf->idle = 0;
                continue;
            }

            idle = ngx_parse_time(&s, 0);

            if (idle == (ngx_msec_t) NGX_ERROR || idle < 1000
                || idle > 24 * 24 * 3600 * 1000)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid idle time \"%V\", it must be "
                                   "\"off\" or between 1s and 24d",
                                   &value[i]);
                return NGX_CONF_ERROR;
            }

            mmcf->idle = idle;
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\"", &value[i]);
        return NGX_CONF_ERROR;
    }

    size = ngx_parse_size(&value[1]);

    if (size == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid zone size \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    if (size < (ssize_t) (8 * ngx_pagesize)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "zone size \"%V\" is too small, "
                           "it must be at least %uz", &value[1],
                           8 * ngx_pagesize);
        return NGX_CONF_ERROR;
    }

    /* the zone itself is added once the http block is parsed */
    mmcf->size = (size_t) size;

    return NGX_CONF_OK;
}


static char *
ngx_http_metrics_location(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_metrics_loc_conf_t *mlcf = conf;

    ngx_str_t  *value;

    if (mlcf->enabled != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len == 3 && ngx_strncmp(value[1].data, "off", 3) == 0) {
        mlcf->enabled = 0;
        return NGX_CONF_OK;
    }

    mlcf->enabled = 1;
    mlcf->location = value[1];

    return NGX_CONF_OK;
}


static char *
ngx_http_metrics_label(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_metrics_main_conf_t *mmcf = conf;

    u_char                            *p;
    ngx_int_t                          max;
    ngx_str_t                         *value;
    ngx_uint_t                         i;
    ngx_http_metrics_label_t          *label;
    ngx_http_compile_complex_value_t   ccv;

    value = cf->args->elts;

    if (mmcf->labels.nelts
        >= NGX_EDGE_STATS_MAX_LABELS - NGX_HTTP_METRICS_FIXED_LABELS - 1)
    {
        return "has too many labels";
    }

    for (i = 0; i < value[1].len; i++) {
        p = &value[1].data[i];

        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_'
            || (i > 0 && *p >= '0' && *p <= '9'))
        {
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid label name \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    if (value[1].len == 0
        || (value[1].len > 1 && value[1].data[0] == '_'
            && value[1].data[1] == '_')
        || (value[1].len == 2 && ngx_strncmp(value[1].data, "le", 2) == 0))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid label name \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    label = mmcf->labels.elts;

    for (i = 0; i < mmcf->labels.nelts; i++) {
        if (label[i].name.len == value[1].len
            && ngx_strncmp(label[i].name.data, value[1].data, value[1].len)
               == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate label \"%V\"", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    for (i = 0; ngx_http_metrics_requests_labels[i]; i++) {
        if (ngx_strlen(ngx_http_metrics_requests_labels[i]) == value[1].len
            && ngx_strncmp(ngx_http_metrics_requests_labels[i], value[1].data,
                           value[1].len)
               == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "label \"%V\" is built in", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    max = 10;

    if (cf->args->nelts == 4) {
        if (value[3].len <= 4 || ngx_strncmp(value[3].data, "max=", 4) != 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\"", &value[3]);
            return NGX_CONF_ERROR;
        }

        max = ngx_atoi(value[3].data + 4, value[3].len - 4);

        if (max <= 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid maximum \"%V\"", &value[3]);
            return NGX_CONF_ERROR;
        }
    }

    label = ngx_array_push(&mmcf->labels);
    if (label == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(label, sizeof(ngx_http_metrics_label_t));

    /* NUL-terminated: the stats registry takes C strings */
    label->name.len = value[1].len;
    label->name.data = ngx_pnalloc(cf->pool, value[1].len + 1);
    if (label->name.data == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_cpystrn(label->name.data, value[1].data, value[1].len + 1);

    label->max = (ngx_uint_t) max;

    ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

    ccv.cf = cf;
    ccv.value = &value[2];
    ccv.complex_value = &label->value;

    if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* "0.005", "1", "2.5" seconds as microseconds */

static ngx_int_t
ngx_http_metrics_parse_seconds(ngx_str_t *s, uint64_t *us)
{
    u_char      *p, *last;
    uint64_t     v, scale;
    ngx_uint_t   frac, digits;

    v = 0;
    frac = 0;
    digits = 0;
    scale = 1000000;
    last = s->data + s->len;

    for (p = s->data; p < last; p++) {
        if (*p == '.' && !frac) {
            frac = 1;
            continue;
        }

        if (*p < '0' || *p > '9' || v > 1000000000000ULL) {
            return NGX_ERROR;
        }

        if (frac) {
            if (scale == 1) {
                return NGX_ERROR;    /* finer than a microsecond */
            }

            scale /= 10;
            v += (*p - '0') * scale;

        } else {
            v = v * 10 + (*p - '0') * 1000000;
        }

        digits++;
    }

    if (digits == 0) {
        return NGX_ERROR;
    }

    *us = v;

    return NGX_OK;
}


static char *
ngx_http_metrics_buckets(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_metrics_main_conf_t *mmcf = conf;

    off_t         size;
    uint64_t     *bound;
    ngx_int_t     h;
    ngx_str_t    *value;
    ngx_uint_t    i;
    ngx_array_t  *a;

    value = cf->args->elts;

    for (h = 0; h < NGX_HTTP_METRICS_NHISTOGRAMS; h++) {
        if (ngx_strlen(ngx_http_metrics_histograms[h]) == value[1].len
            && ngx_strncmp(ngx_http_metrics_histograms[h], value[1].data,
                           value[1].len)
               == 0)
        {
            break;
        }
    }

    if (h == NGX_HTTP_METRICS_NHISTOGRAMS) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown histogram \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    if (mmcf->buckets[h]) {
        return "is duplicate";
    }

    a = ngx_array_create(cf->pool, cf->args->nelts - 2, sizeof(uint64_t));
    if (a == NULL) {
        return NGX_CONF_ERROR;
    }

    for (i = 2; i < cf->args->nelts; i++) {
        bound = ngx_array_push(a);
        if (bound == NULL) {
            return NGX_CONF_ERROR;
        }

        if (ngx_http_metrics_scales[h] == 1) {
            size = ngx_parse_offset(&value[i]);
            if (size == NGX_ERROR) {
                goto invalid;
            }

            *bound = (uint64_t) size;

        } else if (ngx_http_metrics_parse_seconds(&value[i], bound)
                   != NGX_OK)
        {
            goto invalid;
        }

        if (i > 2 && *bound <= bound[-1]) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "bucket \"%V\" is not above the one before",
                               &value[i]);
            return NGX_CONF_ERROR;
        }
    }

    mmcf->buckets[h] = a;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid bucket \"%V\"", &value[i]);
    return NGX_CONF_ERROR;
}


static char *
ngx_http_metrics(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_metrics_handler;

    return NGX_CONF_OK;
}
