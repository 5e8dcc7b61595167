/*
 * ngx_http_metrics_module: definitions shared by the module's files.
 */

#ifndef _NGX_HTTP_METRICS_MODULE_H_INCLUDED_
#define _NGX_HTTP_METRICS_MODULE_H_INCLUDED_


#include "ngx_edge_common.h"
#include "ngx_edge_stats.h"


/* the request metrics' own families, in registration order */
enum {
    NGX_HTTP_METRICS_REQUESTS = 0,
    NGX_HTTP_METRICS_DURATION,
    NGX_HTTP_METRICS_REQUEST_SIZE,
    NGX_HTTP_METRICS_RESPONSE_SIZE,
    NGX_HTTP_METRICS_UPSTREAM_TIME,
    NGX_HTTP_METRICS_UPSTREAM_RESPONSES,
    NGX_HTTP_METRICS_UPGRADED,
    NGX_HTTP_METRICS_NFAMILIES
};

/* the histograms whose buckets metrics_buckets sets */
#define NGX_HTTP_METRICS_NHISTOGRAMS  4


/* metrics_zone idle= by default: 10 minutes */
#define NGX_HTTP_METRICS_IDLE          600000


#define NGX_HTTP_METRICS_STATUS_CODE   0
#define NGX_HTTP_METRICS_STATUS_CLASS  1


typedef struct {
    ngx_str_t                    name;
    ngx_http_complex_value_t     value;
    ngx_uint_t                   max;
    ngx_int_t                    family;     /* the label's set of values */
} ngx_http_metrics_label_t;


typedef struct {
    ngx_edge_stats_t            *stats;      /* NULL without metrics_zone */
    size_t                       size;
    ngx_msec_t                   idle;       /* 0: series never age */
    uint32_t                     overflow_hash;  /* of "__overflow__" */
    ngx_uint_t                   status;
    ngx_array_t                  labels;     /* ngx_http_metrics_label_t */
    ngx_array_t                 *buckets[NGX_HTTP_METRICS_NHISTOGRAMS];
    ngx_int_t                    family[NGX_HTTP_METRICS_NFAMILIES];
} ngx_http_metrics_main_conf_t;


typedef struct {
    ngx_str_t                    server;
    uint32_t                     server_hash;
} ngx_http_metrics_srv_conf_t;


typedef struct {
    ngx_str_t                    location;   /* "off": not counted */
    uint32_t                     location_hash;
    ngx_flag_t                   enabled;
} ngx_http_metrics_loc_conf_t;


ngx_int_t ngx_http_metrics_handler(ngx_http_request_t *r);


extern ngx_module_t  ngx_http_metrics_module;


#endif /* _NGX_HTTP_METRICS_MODULE_H_INCLUDED_ */
