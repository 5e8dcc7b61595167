/*
 * An asynchronous Redis client on nginx's event loop: the hiredis async
 * adapter, one pipelined connection per worker and server, item slots with
 * timeouts, batched EVALSHA with NOSCRIPT recovery, and the connection's
 * health (silence detection, reconnect backoff, log gating).  See
 * ngx_edge_redis.h for the contract.
 */

#include "ngx_edge_redis.h"

#include <hiredis/sds.h>
#include "ngx_edge_time.h"

#include <ngx_sha1.h>
#include <netinet/tcp.h>


/* slots are preallocated per worker and connection: 65536 of them take
 * about 11 MB */
#define NGX_EDGE_REDIS_MAX_INFLIGHT       65536
#define NGX_EDGE_REDIS_DEFAULT_PORT       6379
#define NGX_EDGE_REDIS_SENTINEL_PORT      26379
#define NGX_EDGE_REDIS_BACKOFF_MIN        100     /* ms */
#define NGX_EDGE_REDIS_BACKOFF_MAX        3000    /* ms */
#define NGX_EDGE_REDIS_LOG_INTERVAL       5000    /* ms */
#define NGX_EDGE_REDIS_PASSWORD_MAX       4096    /* bytes, password_file= */

/* nothing received for this long (or "timeout=", if longer) while an item
 * waited: the connection is silent */
#define NGX_EDGE_REDIS_SILENCE_MIN        1000    /* ms */

/* reads of 16 KiB (hiredis's) per read event, at most */
#define NGX_EDGE_REDIS_READS_PER_EVENT    64

/* TCP keepalive: an idle connection to a vanished peer is found in about
 * idle + interval * count seconds */
#define NGX_EDGE_REDIS_KEEPIDLE           30
#define NGX_EDGE_REDIS_KEEPINTVL          10
#define NGX_EDGE_REDIS_KEEPCNT            3


typedef enum {
    NGX_EDGE_REDIS_DISCONNECTED = 0,
    NGX_EDGE_REDIS_CONNECTING,               /* TCP connect in progress */
    NGX_EDGE_REDIS_HANDSHAKE,                /* AUTH, SELECT, SCRIPT LOAD
                                                in flight; items may follow
                                                them */
    NGX_EDGE_REDIS_READY
} ngx_edge_redis_state_e;


/* how a question to a Sentinel ended */
typedef enum {
    NGX_EDGE_REDIS_ASK_PENDING = 0,
    NGX_EDGE_REDIS_ASK_FOUND,
    NGX_EDGE_REDIS_ASK_FAILED,
    NGX_EDGE_REDIS_ASK_ABORTED
} ngx_edge_redis_ask_e;


/*
 * A worker's connection to a Sentinel: the short-lived one that asks for
 * the primary's address, or the long-lived one subscribed to
 * +switch-master.  Neither ever holds a request: both are idle for a
 * graceful shutdown, and their timers are cancelable.
 */
typedef struct {
    ngx_edge_redis_conn_t       *conn;
    redisAsyncContext           *ac;
    ngx_connection_t            *c;
    ngx_uint_t                   index;      /* in server->sentinels */
    ngx_uint_t                   tried;      /* asking: Sentinels tried in
                                                this round */
    ngx_event_t                  timer;      /* the exchange's deadline */
    ngx_event_t                  next;       /* asking: posted, the next
                                                step; subscribing: the
                                                retry timer */
    ngx_msec_t                   backoff;    /* subscribing */
    ngx_edge_redis_ask_e         outcome;    /* asking */
    ngx_edge_log_gate_t          gate;
    u_char                       host[NGX_SOCKADDR_STRLEN + 1];
    int                          port;       /* the answer */
    unsigned                     subscribe:1;
} ngx_edge_redis_link_t;


/* a script's SCRIPT LOAD after NOSCRIPT: hiredis's privdata for it */
typedef struct {
    ngx_edge_redis_conn_t       *conn;
    unsigned                     in_flight:1;
} ngx_edge_redis_load_t;


struct ngx_edge_redis_conn_s {
    ngx_edge_redis_server_t     *server;
    redisAsyncContext           *ac;
    ngx_connection_t            *c;
    ngx_log_t                   *log;
    ngx_edge_redis_state_e       state;
    ngx_uint_t                   addr;       /* index in server->hosts */

    ngx_event_t                  connect_timer;
    ngx_event_t                  reconnect_timer;
    ngx_event_t                  silence_timer;
    ngx_event_t                  close_event;    /* posted: worker exiting,
                                                    nothing attached */
    ngx_msec_t                   backoff;
    ngx_uint_t                   handshake;  /* replies still awaited */

    /* replies of any kind received on this worker's connections: an item
     * that times out with the count unchanged since it was queued means
     * the connection may be silent; it is if the count is still
     * silence_replies when the silence timer fires */
    ngx_uint_t                   replies;
    ngx_uint_t                   silence_replies;

    ngx_edge_redis_cmd_t        *cmds;
    ngx_queue_t                  free;
    ngx_uint_t                   attached;   /* slots with a handler, and
                                                callers' holds */

    ngx_queue_t                 *pending;    /* items, per batched script */
    ngx_edge_redis_load_t       *loads;      /* per batched script */
    ngx_queue_t                  batches;    /* free batch records */
    u_char                      *wire;       /* a batch's EVALSHA, encoded */
    size_t                       wire_size;

    ngx_edge_log_gate_t          fail_gate;
    ngx_edge_log_gate_t          drop_gate;
    ngx_edge_log_gate_t          connect_gate;

    /* Sentinel: the primary in use ("host:port" for the logs), and the
     * links to the Sentinels */
    u_char                       master_host[NGX_SOCKADDR_STRLEN + 1];
    int                          master_port;
    ngx_str_t                    master;
    u_char                       master_text[NGX_SOCKADDR_STRLEN + 8];
    ngx_edge_redis_link_t       *ask;
    ngx_edge_redis_link_t       *sub;

    unsigned                     failing:1;
    unsigned                     exiting:1;
    unsigned                     dropping:1;
    unsigned                     writing:1;
    unsigned                     sealing:1;
    unsigned                     parked:1;   /* Cluster: a node that left
                                                the map, not reconnected */
};


/* one EVALSHA carrying items: hiredis's privdata for it */
typedef struct {
    ngx_edge_redis_conn_t       *conn;
    ngx_edge_redis_script_t     *script;
    ngx_uint_t                   n;
    ngx_edge_redis_cmd_t       **items;      /* [server->batch] */
    int64_t                      start;      /* monotonic, microseconds */
    ngx_uint_t                   redirects;  /* Cluster: MOVED, ASK */
    ngx_uint_t                   tryagain;   /* Cluster: TRYAGAIN retries */
    ngx_event_t                  retry;      /* Cluster: after TRYAGAIN; not
                                                cancelable, items wait */
    unsigned                     retried:1;
    ngx_queue_t                  queue;      /* in the free list */
} ngx_edge_redis_batch_t;


#define NGX_EDGE_REDIS_CLUSTER_SLOTS      16384
#define NGX_EDGE_REDIS_CLUSTER_NODES      64
#define NGX_EDGE_REDIS_CLUSTER_REFRESH    10000   /* ms */
#define NGX_EDGE_REDIS_CLUSTER_SOON       100     /* ms */
#define NGX_EDGE_REDIS_CLUSTER_REDIRECTS  5

/* a node that serves no slot in two maps this far apart (and is not a
 * seed) has its connection closed, and not reconnected until a map, a
 * MOVED or an ASK names it again; the second map is asked this long
 * after the first */
#define NGX_EDGE_REDIS_CLUSTER_PRUNE      5000    /* ms */

/* a batch answered TRYAGAIN (its keys split between the two nodes of a
 * migrating slot) is sent again after 10 ms, 20, 40 ... at most 250 ms
 * apart, this many times at most (about 1.5 s in all; each item's own
 * "timeout=" may end it sooner) */
#define NGX_EDGE_REDIS_TRYAGAIN_MAX       10
#define NGX_EDGE_REDIS_TRYAGAIN_DELAY     10      /* ms, the first */
#define NGX_EDGE_REDIS_TRYAGAIN_DELAY_MAX 250     /* ms */

/* a Cluster's plain commands are kept to be resent on MOVED or ASK: up
 * to this size in a buffer per slot (made on first use, kept), larger
 * ones in an allocation of their own, freed when the slot is */
#define NGX_EDGE_REDIS_RESEND_MAX         4096

/* items of other slots a Cluster batch looks past for more of its own */
#define NGX_EDGE_REDIS_SLOT_SCAN          64


/* a worker's view of a Redis Cluster */
struct ngx_edge_redis_cluster_s {
    ngx_edge_redis_server_t     *server;     /* the configured one */
    ngx_edge_redis_server_t     *nodes;      /* [CLUSTER_NODES] */
    ngx_uint_t                   nnodes;
    ngx_uint_t                   next;       /* the next node to ask */
    ngx_uint_t                   holds;      /* ngx_edge_redis_hold()s not
                                                released yet */
    ngx_uint_t                   nseeds;     /* nodes[0 .. nseeds - 1] */
    ngx_event_t                  prune;      /* posted after a new map */
    ngx_msec_t                   unowned[NGX_EDGE_REDIS_CLUSTER_NODES];
                                             /* first seen serving no
                                                slot, or 0 */
    ngx_event_t                  refresh;    /* cancelable: no request
                                                waits on it */
    ngx_edge_log_gate_t          gate;
    uint8_t                      map[NGX_EDGE_REDIS_CLUSTER_SLOTS];
                                             /* node index + 1, 0: none */
    unsigned                     known:1;
    unsigned                     asking:1;   /* CLUSTER SLOTS in flight */
    unsigned                     soon:1;
    unsigned                     exiting:1;
};


static void ngx_edge_redis_connect(ngx_edge_redis_conn_t *conn);
static void ngx_edge_redis_send_handshake(ngx_edge_redis_conn_t *conn);
static void ngx_edge_redis_reload_script(ngx_edge_redis_conn_t *conn,
    ngx_edge_redis_script_t *script);
static void ngx_edge_redis_free_cmd(ngx_edge_redis_cmd_t *cmd);
static void ngx_edge_redis_unattach(ngx_edge_redis_cmd_t *cmd);
static void ngx_edge_redis_unref(ngx_edge_redis_conn_t *conn);
static void ngx_edge_redis_close_handler(ngx_event_t *ev);
static void ngx_edge_redis_batch_reply(redisAsyncContext *ac, void *r,
    void *privdata);
static void ngx_edge_redis_cmd_timeout(ngx_event_t *ev);
static void ngx_edge_redis_command_reply(redisAsyncContext *ac, void *r,
    void *privdata);
static ngx_edge_redis_cmd_t *ngx_edge_redis_send_on(
    ngx_edge_redis_server_t *server, ngx_uint_t slot,
    ngx_edge_redis_handler_pt handler, void *data, ngx_uint_t argc,
    const char **argv, const size_t *argvlen);
static ngx_int_t ngx_edge_redis_reserve_wire(ngx_edge_redis_conn_t *conn,
    size_t size);
static void ngx_edge_redis_hook_free(redisAsyncContext *ac);
static void ngx_edge_redis_seal(ngx_edge_redis_conn_t *conn);
static ngx_flag_t ngx_edge_redis_has_pending(ngx_edge_redis_conn_t *conn);
static void ngx_edge_redis_fail_queue(ngx_queue_t *pending);
static void ngx_edge_redis_fail_pending(ngx_edge_redis_conn_t *conn);
static void ngx_edge_redis_stat(ngx_edge_redis_server_t *server,
    ngx_edge_stats_id_t id, int64_t delta);

static void ngx_edge_redis_handshake_done(ngx_edge_redis_conn_t *conn);
static void ngx_edge_redis_check_silence(ngx_edge_redis_cmd_t *cmd);
static void ngx_edge_redis_silence_handler(ngx_event_t *ev);
static void ngx_edge_redis_drop(ngx_edge_redis_conn_t *conn);
static void ngx_edge_redis_schedule_reconnect(ngx_edge_redis_conn_t *conn);
static void ngx_edge_redis_log_failure(ngx_edge_redis_conn_t *conn,
    const char *fmt, ...);

static ngx_int_t ngx_edge_redis_sentinel_init(ngx_cycle_t *cycle,
    ngx_edge_redis_conn_t *conn);
static void ngx_edge_redis_sentinel_exit(ngx_edge_redis_conn_t *conn);
static void ngx_edge_redis_sentinel_ask(ngx_edge_redis_conn_t *conn);
static void ngx_edge_redis_sentinel_subscribe(ngx_edge_redis_conn_t *conn);
static void ngx_edge_redis_role_reply(redisAsyncContext *ac, void *r,
    void *privdata);
static void ngx_edge_redis_check_demoted(ngx_edge_redis_conn_t *conn,
    redisReply *reply);

static ngx_int_t ngx_edge_redis_cluster_init(ngx_cycle_t *cycle,
    ngx_edge_redis_server_t *server);
static void ngx_edge_redis_cluster_exit(ngx_edge_redis_server_t *server);
static void ngx_edge_redis_cluster_node_up(ngx_edge_redis_conn_t *conn);
static void ngx_edge_redis_cluster_refresh_soon(
    ngx_edge_redis_cluster_t *cl);
static ngx_edge_redis_server_t *ngx_edge_redis_cluster_route(
    ngx_edge_redis_server_t *server, const char *key, size_t len,
    ngx_uint_t *slot);
static ngx_edge_redis_server_t *ngx_edge_redis_cluster_command_node(
    ngx_edge_redis_server_t *server, ngx_uint_t argc, const char **argv,
    const size_t *argvlen, ngx_uint_t *slot);
static ngx_int_t ngx_edge_redis_cluster_redirect(ngx_edge_redis_batch_t *b,
    redisReply *reply);
static ngx_int_t ngx_edge_redis_cluster_resend(ngx_edge_redis_cmd_t *cmd,
    redisReply *reply);
static ngx_int_t ngx_edge_redis_cluster_tryagain(ngx_edge_redis_batch_t *b,
    redisReply *reply);
static void ngx_edge_redis_cluster_retry(ngx_event_t *ev);


/* configuration */

static ngx_int_t
ngx_edge_redis_parse_address(ngx_conf_t *cf, ngx_edge_redis_server_t *server)
{
    u_char      *p;
    ngx_url_t    u;
    ngx_uint_t   i;

    if (server->address.len > 5
        && ngx_strncmp(server->address.data, "unix:", 5) == 0)
    {
        /* hiredis wants a C string */
        p = ngx_pnalloc(cf->pool, server->address.len - 5 + 1);
        if (p == NULL) {
            return NGX_ERROR;
        }

        server->unix_path.len = server->address.len - 5;
        server->unix_path.data = p;
        ngx_cpystrn(p, server->address.data + 5, server->unix_path.len + 1);

        return NGX_OK;
    }

    ngx_memzero(&u, sizeof(ngx_url_t));

    u.url = server->address;
    u.default_port = NGX_EDGE_REDIS_DEFAULT_PORT;

    /* resolved now, in the master (at start and on every reload):
     * redisAsyncConnect() would call a blocking getaddrinfo() in the
     * worker; every address is kept, and reconnects take them in turn */
    if (ngx_parse_url(cf->pool, &u) != NGX_OK) {
        if (u.err) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "%s in redis server \"%V\"", u.err,
                               &server->address);
        }

        return NGX_ERROR;
    }

    if (u.naddrs == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "redis server \"%V\" has no address",
                           &server->address);
        return NGX_ERROR;
    }

    server->hosts = ngx_palloc(cf->pool, u.naddrs * sizeof(ngx_str_t));
    if (server->hosts == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < u.naddrs; i++) {
        p = ngx_pnalloc(cf->pool, NGX_SOCKADDR_STRLEN + 1);
        if (p == NULL) {
            return NGX_ERROR;
        }

        server->hosts[i].data = p;
        server->hosts[i].len = ngx_sock_ntop(u.addrs[i].sockaddr,
                                             u.addrs[i].socklen, p,
                                             NGX_SOCKADDR_STRLEN, 0);
        p[server->hosts[i].len] = '\0';
    }

    server->nhosts = u.naddrs;
    server->port = u.port;

    return NGX_OK;
}


static ngx_int_t
ngx_edge_redis_copy_cstr(ngx_conf_t *cf, ngx_str_t *dst, u_char *src,
    size_t len)
{
    dst->data = ngx_pnalloc(cf->pool, len + 1);
    if (dst->data == NULL) {
        return NGX_ERROR;
    }

    ngx_cpystrn(dst->data, src, len + 1);
    dst->len = len;

    return NGX_OK;
}


/* sentinel= or cluster=host[:port][,host[:port]...]: every address
 * resolved now, as for a server's own address */

static ngx_int_t
ngx_edge_redis_parse_addr_list(ngx_conf_t *cf,
    ngx_edge_redis_server_t *server, ngx_str_t *value, size_t skip,
    in_port_t default_port, ngx_edge_redis_addr_t **list, ngx_uint_t *n)
{
    u_char                 *p, *last, *comma;
    ngx_url_t               u;
    ngx_uint_t              i;
    ngx_array_t            *a;
    ngx_edge_redis_addr_t  *addr;

    if (*n) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "redis server \"%V\": \"%*s\" is given "
                           "more than once", &server->name, skip,
                           value->data);
        return NGX_ERROR;
    }

    a = ngx_array_create(cf->pool, 4, sizeof(ngx_edge_redis_addr_t));
    if (a == NULL) {
        return NGX_ERROR;
    }

    p = value->data + skip;
    last = value->data + value->len;

    for ( ;; ) {
        comma = ngx_strlchr(p, last, ',');
        if (comma == NULL) {
            comma = last;
        }

        ngx_memzero(&u, sizeof(ngx_url_t));

        u.url.data = p;
        u.url.len = comma - p;
        u.default_port = default_port;

        if (u.url.len == 0 || u.url.data[0] == ','
            || (u.url.len > 5 && ngx_strncmp(p, "unix:", 5) == 0))
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\" of redis server "
                               "\"%V\": a list of host[:port]", value,
                               &server->name);
            return NGX_ERROR;
        }

        if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.naddrs == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "%s in %s \"%V\" of redis server \"%V\"",
                               u.err ? u.err : "no address",
                               default_port == NGX_EDGE_REDIS_SENTINEL_PORT
                               ? "Sentinel" : "seed node",
                               &u.url, &server->name);
            return NGX_ERROR;
        }

        for (i = 0; i < u.naddrs; i++) {
            addr = ngx_array_push(a);
            if (addr == NULL) {
                return NGX_ERROR;
            }

            addr->host.data = ngx_pnalloc(cf->pool, NGX_SOCKADDR_STRLEN + 1);
            if (addr->host.data == NULL) {
                return NGX_ERROR;
            }

            addr->host.len = ngx_sock_ntop(u.addrs[i].sockaddr,
                                           u.addrs[i].socklen,
                                           addr->host.data,
                                           NGX_SOCKADDR_STRLEN, 0);
            addr->host.data[addr->host.len] = '\0';
            addr->port = u.port;
        }

        if (comma == last) {
            break;
        }

        p = comma + 1;
    }

    *list = a->elts;
    *n = a->nelts;

    return NGX_OK;
}


/* password_file=: read now, copied NUL-terminated for hiredis */

static ngx_int_t
ngx_edge_redis_read_password(ngx_conf_t *cf, ngx_edge_redis_server_t *server,
    ngx_str_t *path)
{
    ngx_int_t  rc;
    ngx_str_t  secret;

    if (ngx_edge_conf_read_secret(cf, path, NGX_EDGE_REDIS_PASSWORD_MAX,
                                  &secret)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    rc = ngx_edge_redis_copy_cstr(cf, &server->password, secret.data,
                                  secret.len);

    ngx_explicit_memzero(secret.data, secret.len);

    return rc;
}


/* an address, or sentinel= with master=, never both */

static ngx_int_t
ngx_edge_redis_check_sentinel(ngx_conf_t *cf, ngx_edge_redis_server_t *server)
{
    u_char  *p;

    if (server->nseeds) {
        if (server->nsentinels || server->address.len
            || server->master_name.len)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "redis server \"%V\": \"cluster=\" is given "
                               "with an address or \"sentinel=\"",
                               &server->name);
            return NGX_ERROR;
        }

        if (server->db) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "redis server \"%V\": a Redis Cluster has "
                               "no \"db=\" but 0", &server->name);
            return NGX_ERROR;
        }

        server->address.data = (u_char *) "cluster";
        server->address.len = sizeof("cluster") - 1;

        return NGX_OK;
    }

    if (server->nsentinels == 0) {
        if (server->master_name.len || server->sentinel_password.data
            || server->sentinel_user.data)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "redis server \"%V\": \"master=\", "
                               "\"sentinel_user=\" and "
                               "\"sentinel_password=\" need \"sentinel=\"",
                               &server->name);
            return NGX_ERROR;
        }

        if (server->address.len == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "redis server \"%V\" has no address: give "
                               "one, or \"sentinel=\" and \"master=\"",
                               &server->name);
            return NGX_ERROR;
        }

        return NGX_OK;
    }

    if (server->address.len) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "redis server \"%V\": an address \"%V\" and "
                           "\"sentinel=\" are given together",
                           &server->name, &server->address);
        return NGX_ERROR;
    }

    if (server->master_name.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "redis server \"%V\": \"sentinel=\" needs "
                           "\"master=\"", &server->name);
        return NGX_ERROR;
    }

    /* what the log lines say the server is */
    p = ngx_pnalloc(cf->pool, sizeof("master \"\"") - 1
                              + server->master_name.len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    server->address.data = p;
    server->address.len = ngx_sprintf(p, "master \"%V\"",
                                      &server->master_name) - p;

    return NGX_OK;
}


ngx_edge_redis_server_t *
ngx_edge_redis_parse_server(ngx_conf_t *cf, ngx_str_t *args, ngx_uint_t nargs)
{
    u_char                   *eq;
    ngx_str_t                 s;
    ngx_int_t                 n;
    ngx_msec_t                ms;
    ngx_uint_t                i, first;
    ngx_edge_redis_server_t  *server;

    server = ngx_pcalloc(cf->pool, sizeof(ngx_edge_redis_server_t));
    if (server == NULL) {
        return NULL;
    }

    server->name = args[0];
    server->db = 0;
    server->connect_timeout = 1000;
    server->timeout = 100;
    server->max_inflight = 1024;
    server->batch = 32;

    server->st_commands = NGX_EDGE_STATS_NONE;
    server->st_errors = NGX_EDGE_STATS_NONE;
    server->st_timeouts = NGX_EDGE_STATS_NONE;
    server->st_reconnects = NGX_EDGE_STATS_NONE;
    server->st_inflight = NGX_EDGE_STATS_NONE;
    server->st_rtt = NGX_EDGE_STATS_NONE;
    server->st_connected = NGX_EDGE_STATS_NONE;

    if (ngx_array_init(&server->scripts, cf->pool, 2,
                       sizeof(ngx_edge_redis_script_t *))
        != NGX_OK)
    {
        return NULL;
    }

    /* an address never holds "=": without one, the parameters begin
     * there (sentinel= names the servers) */
    first = 1;

    if ((args[1].len > 5 && ngx_strncmp(args[1].data, "unix:", 5) == 0)
        || ngx_strlchr(args[1].data, args[1].data + args[1].len, '=')
           == NULL)
    {
        server->address = args[1];

        if (ngx_edge_redis_parse_address(cf, server) != NGX_OK) {
            return NULL;
        }

        first = 2;
    }

    for (i = first; i < nargs; i++) {

        if (ngx_strncmp(args[i].data, "sentinel=", 9) == 0) {
            if (ngx_edge_redis_parse_addr_list(cf, server, &args[i], 9,
                                              NGX_EDGE_REDIS_SENTINEL_PORT,
                                              &server->sentinels,
                                              &server->nsentinels)
                != NGX_OK)
            {
                return NULL;
            }
            continue;
        }

        if (ngx_strncmp(args[i].data, "cluster=", 8) == 0) {
            if (ngx_edge_redis_parse_addr_list(cf, server, &args[i], 8,
                                              NGX_EDGE_REDIS_DEFAULT_PORT,
                                              &server->seeds,
                                              &server->nseeds)
                != NGX_OK)
            {
                return NULL;
            }
            continue;
        }

        if (ngx_strncmp(args[i].data, "master=", 7) == 0) {
            if (args[i].len == 7
                || ngx_edge_redis_copy_cstr(cf, &server->master_name,
                                            args[i].data + 7,
                                            args[i].len - 7)
                   != NGX_OK)
            {
                goto invalid;
            }
            continue;
        }

        if (ngx_strncmp(args[i].data, "sentinel_user=", 14) == 0) {
            if (args[i].len == 14) {
                goto invalid;
            }

            if (ngx_edge_redis_copy_cstr(cf, &server->sentinel_user,
                                         args[i].data + 14,
                                         args[i].len - 14)
                != NGX_OK)
            {
                return NULL;
            }
            continue;
        }

        if (ngx_strncmp(args[i].data, "sentinel_password=", 18) == 0) {
            if (ngx_edge_redis_copy_cstr(cf, &server->sentinel_password,
                                         args[i].data + 18,
                                         args[i].len - 18)
                != NGX_OK)
            {
                return NULL;
            }
            continue;
        }

        if (ngx_strncmp(args[i].data, "password=", 9) == 0
            || ngx_strncmp(args[i].data, "password_file=", 14) == 0)
        {
            if (server->password.data) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "redis server \"%V\": \"password=\" and "
                                   "\"password_file=\" are given more than "
                                   "once or together", &server->name);
                return NULL;
            }

            if (args[i].data[8] == '=') {
                if (ngx_edge_redis_copy_cstr(cf, &server->password,
                                             args[i].data + 9,
                                             args[i].len - 9)
                    != NGX_OK)
                {
                    return NULL;
                }

                continue;
            }

            s.data = args[i].data + 14;
            s.len = args[i].len - 14;

            if (ngx_edge_redis_read_password(cf, server, &s) != NGX_OK) {
                return NULL;
            }

            continue;
        }

        if (ngx_strncmp(args[i].data, "user=", 5) == 0) {
            if (ngx_edge_redis_copy_cstr(cf, &server->user,
                                         args[i].data + 5, args[i].len - 5)
                != NGX_OK)
            {
                return NULL;
            }
            continue;
        }

        if (ngx_strncmp(args[i].data, "db=", 3) == 0) {
            n = ngx_atoi(args[i].data + 3, args[i].len - 3);
            if (n == NGX_ERROR) {
                goto invalid;
            }
            server->db = n;
            continue;
        }

        if (ngx_strncmp(args[i].data, "connect_timeout=", 16) == 0
            || ngx_strncmp(args[i].data, "timeout=", 8) == 0)
        {
            s.data = (u_char *) ngx_strlchr(args[i].data,
                                            args[i].data + args[i].len, '=')
                     + 1;
            s.len = args[i].data + args[i].len - s.data;

            ms = ngx_parse_time(&s, 0);
            if (ms == (ngx_msec_t) NGX_ERROR || ms == 0) {
                goto invalid;
            }

            if (args[i].data[0] == 'c') {
                server->connect_timeout = ms;
            } else {
                server->timeout = ms;
            }
            continue;
        }

        if (ngx_strncmp(args[i].data, "max_inflight=", 13) == 0) {
            n = ngx_atoi(args[i].data + 13, args[i].len - 13);
            if (n <= 0 || n > NGX_EDGE_REDIS_MAX_INFLIGHT) {
                goto invalid;
            }
            server->max_inflight = n;
            continue;
        }

        if (ngx_strncmp(args[i].data, "batch=", 6) == 0) {
            n = ngx_atoi(args[i].data + 6, args[i].len - 6);
            if (n <= 0 || n > 1000) {
                goto invalid;
            }
            server->batch = n;
            continue;
        }

        goto unknown;
    }

    if (ngx_edge_redis_check_sentinel(cf, server) != NGX_OK) {
        return NULL;
    }

    if (server->sentinel_user.data && server->sentinel_password.data == NULL)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "redis server \"%V\": \"sentinel_user=\" needs "
                           "\"sentinel_password=\"", &server->name);
        return NULL;
    }

    if (server->user.len && server->password.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "redis server \"%V\": \"user=\" needs "
                           "\"password=\" or \"password_file=\"",
                           &server->name);
        return NULL;
    }

    return server;

invalid:

    /* a known parameter whose value is not secret */
    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\" of redis server \"%V\"",
                       &args[i], &server->name);
    return NULL;

unknown:

    /*
     * Only the parameter's name is shown: a misspelled "pasword=" or a
     * stray value may be a secret, and error logs are read by many.
     */

    eq = ngx_strlchr(args[i].data, args[i].data + args[i].len, '=');

    if (eq) {
        s.data = args[i].data;
        s.len = eq - args[i].data;

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V=...\" of redis server "
                           "\"%V\" (its value is not shown)", &s,
                           &server->name);

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter of redis server \"%V\" "
                           "(%uz characters, not shown)", &server->name,
                           args[i].len);
    }

    return NULL;
}


ngx_int_t
ngx_edge_redis_register_stats(ngx_conf_t *cf, ngx_edge_redis_server_t *server,
    ngx_edge_stats_t *stats, const char *prefix)
{
    u_char                   *name;
    ngx_int_t                 fam;
    ngx_uint_t                i;
    ngx_edge_stats_id_t      *ids[7];
    ngx_edge_stats_family_t   family;

    static const char  *labels[] = { "server", NULL };

    /* round-trip bounds in microseconds, exposed in seconds */
    static const uint64_t  rtt_bounds[] = {
        100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000,
        250000, 1000000
    };

    static const struct {
        const char             *suffix;
        const char             *help;
        ngx_edge_stats_type_e   type;
    } series[7] = {
        { "redis_commands_total",
          "Commands sent to Redis (a batch of items is one).",
          NGX_EDGE_STATS_COUNTER },
        { "redis_errors_total",
          "Commands that failed (each item of a batch counts): error reply, "
          "connection lost or refused.",
          NGX_EDGE_STATS_COUNTER },
        { "redis_timeouts_total", "Commands that timed out.",
          NGX_EDGE_STATS_COUNTER },
        { "redis_reconnects_total", "Connection attempts after a failure.",
          NGX_EDGE_STATS_COUNTER },
        { "redis_inflight",
          "Commands and batched items waiting for a reply.",
          NGX_EDGE_STATS_GAUGE },
        { "redis_rtt_seconds", "Round-trip time of commands.",
          NGX_EDGE_STATS_HISTOGRAM },
        { "redis_connected",
          "Worker processes whose connection is established (handshake "
          "done).",
          NGX_EDGE_STATS_GAUGE },
    };

    ids[0] = &server->st_commands;
    ids[1] = &server->st_errors;
    ids[2] = &server->st_timeouts;
    ids[3] = &server->st_reconnects;
    ids[4] = &server->st_inflight;
    ids[5] = &server->st_rtt;
    ids[6] = &server->st_connected;

    server->stats = stats;

    for (i = 0; i < 7; i++) {
        name = ngx_pnalloc(cf->pool, ngx_strlen(prefix) + 1
                                     + ngx_strlen(series[i].suffix) + 1);
        if (name == NULL) {
            return NGX_ERROR;
        }

        ngx_sprintf(name, "%s_%s%Z", prefix, series[i].suffix);

        ngx_memzero(&family, sizeof(ngx_edge_stats_family_t));
        family.name = (const char *) name;
        family.help = series[i].help;
        family.type = series[i].type;
        family.labels = labels;

        if (series[i].type == NGX_EDGE_STATS_HISTOGRAM) {
            family.bounds = rtt_bounds;
            family.nbounds = sizeof(rtt_bounds) / sizeof(rtt_bounds[0]);
            family.scale = 1000000;
        }

        fam = ngx_edge_stats_add_family(cf, stats, &family);
        if (fam == NGX_ERROR) {
            return NGX_ERROR;
        }

        *ids[i] = ngx_edge_stats_add_series(cf, stats, fam, &server->name);
        if (*ids[i] == NGX_EDGE_STATS_NONE) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


ngx_edge_redis_script_t *
ngx_edge_redis_add_script(ngx_conf_t *cf, ngx_edge_redis_server_t *server,
    ngx_str_t *source)
{
    u_char                    digest[20];
    ngx_sha1_t                sha1;
    ngx_edge_redis_script_t  *script, **sp;

    script = ngx_pcalloc(cf->pool, sizeof(ngx_edge_redis_script_t));
    if (script == NULL) {
        return NULL;
    }

    script->source = *source;

    /* EVALSHA needs the digest Redis will compute for SCRIPT LOAD */
    ngx_sha1_init(&sha1);
    ngx_sha1_update(&sha1, source->data, source->len);
    ngx_sha1_final(digest, &sha1);
    ngx_hex_dump(script->sha1, digest, 20);

    sp = ngx_array_push(&server->scripts);
    if (sp == NULL) {
        return NULL;
    }

    *sp = script;

    return script;
}


ngx_edge_redis_script_t *
ngx_edge_redis_add_batch_script(ngx_conf_t *cf,
    ngx_edge_redis_server_t *server, ngx_str_t *source, ngx_uint_t item_keys,
    ngx_uint_t item_args)
{
    ngx_edge_redis_script_t  *script;

    /* the script counts its items by #KEYS */
    if (item_keys == 0) {
        return NULL;
    }

    script = ngx_edge_redis_add_script(cf, server, source);
    if (script == NULL) {
        return NULL;
    }

    script->index = server->nbatched++;
    script->item_keys = item_keys;
    script->item_args = item_args;

    return script;
}


/*
 * Replies a handler keeps.  hiredis frees each reply through its reader's
 * freeObject function right after the callback returns; a handler that
 * sends the reply's bytes (a cached body) without copying them keeps it
 * with ngx_edge_redis_keep_reply(), and freeObject then leaves that one
 * reply alone.  The reader's other functions stay hiredis's own (copied
 * from its default table, which hiredis does not export).
 */

static redisReplyObjectFunctions  ngx_edge_redis_reply_fns;
static void                      *ngx_edge_redis_kept;


static void
ngx_edge_redis_free_reply(void *reply)
{
    if (reply == ngx_edge_redis_kept) {
        ngx_edge_redis_kept = NULL;
        return;
    }

    freeReplyObject(reply);
}


static void
ngx_edge_redis_hook_free(redisAsyncContext *ac)
{
    if (ac->c.reader == NULL || ac->c.reader->fn == NULL) {
        return;
    }

    if (ngx_edge_redis_reply_fns.freeObject == NULL) {
        ngx_edge_redis_reply_fns = *ac->c.reader->fn;
        ngx_edge_redis_reply_fns.freeObject = ngx_edge_redis_free_reply;
    }

    ac->c.reader->fn = &ngx_edge_redis_reply_fns;
}


size_t
ngx_edge_redis_backlog(ngx_edge_redis_server_t *server)
{
    size_t                     n;
    ngx_uint_t                 i;
    ngx_edge_redis_conn_t     *conn;
    ngx_edge_redis_cluster_t  *cl;

    if (server->nseeds) {
        cl = server->cluster;
        n = 0;

        for (i = 0; cl && i < cl->nnodes; i++) {
            n += ngx_edge_redis_backlog(&cl->nodes[i]);
        }

        return n;
    }

    conn = server->conn;

    if (conn == NULL || conn->ac == NULL || conn->ac->c.obuf == NULL) {
        return 0;
    }

    return sdslen(conn->ac->c.obuf);
}


void
ngx_edge_redis_keep_reply(redisReply *reply)
{
    ngx_edge_redis_kept = reply;
}


/* the hiredis event hooks, on an nginx connection wrapping its socket */

static void
ngx_edge_redis_add_read(void *privdata)
{
    ngx_edge_redis_conn_t  *conn = privdata;

    /*
     * Level-triggered: hiredis reads at most 16 KiB per call, and with
     * edge-triggered epoll the rest of a large reply would never be
     * signalled again.
     */

    if (conn->c && !conn->c->read->active) {
        if (ngx_add_event(conn->c->read, NGX_READ_EVENT, NGX_LEVEL_EVENT)
            != NGX_OK)
        {
            ngx_log_error(NGX_LOG_ALERT, conn->log, 0,
                          "redis \"%V\": cannot add read event",
                          &conn->server->name);
        }
    }
}


static void
ngx_edge_redis_del_read(void *privdata)
{
    ngx_edge_redis_conn_t  *conn = privdata;

    if (conn->c && conn->c->read->active) {
        (void) ngx_del_event(conn->c->read, NGX_READ_EVENT, 0);
    }
}


static void
ngx_edge_redis_add_write(void *privdata)
{
    ngx_edge_redis_conn_t  *conn = privdata;

    ngx_event_t  *wev;

    if (conn->c == NULL) {
        return;
    }

    wev = conn->c->write;

    if (wev->active || conn->sealing) {
        /* writable soon, or the write follows the sealing at once */
        return;
    }

    if (conn->state >= NGX_EDGE_REDIS_HANDSHAKE && !conn->writing) {
        /*
         * Flush once at the end of this event-loop iteration: every
         * command appended until then leaves in the same write.
         */
        if (!wev->posted) {
            ngx_post_event(wev, &ngx_posted_events);
        }

        return;
    }

    /*
     * Still connecting, or a write left data behind (posting again from
     * the write handler would spin in the posted queue): wait for the
     * socket to become writable.
     */
    if (ngx_add_event(wev, NGX_WRITE_EVENT, NGX_LEVEL_EVENT) != NGX_OK) {
        ngx_log_error(NGX_LOG_ALERT, conn->log, 0,
                      "redis \"%V\": cannot add write event",
                      &conn->server->name);
    }
}


static void
ngx_edge_redis_del_write(void *privdata)
{
    ngx_edge_redis_conn_t  *conn = privdata;

    ngx_event_t  *wev;

    if (conn->c == NULL) {
        return;
    }

    wev = conn->c->write;

    if (wev->posted) {
        ngx_delete_posted_event(wev);
    }

    if (wev->active) {
        (void) ngx_del_event(wev, NGX_WRITE_EVENT, 0);
    }
}


static void
ngx_edge_redis_cleanup(void *privdata)
{
    ngx_edge_redis_conn_t  *conn = privdata;

    ngx_uint_t         i;
    ngx_connection_t  *c;

    c = conn->c;

    if (conn->state == NGX_EDGE_REDIS_READY) {
        ngx_edge_redis_stat(conn->server, conn->server->st_connected, -1);
    }

    conn->c = NULL;
    conn->ac = NULL;
    conn->state = NGX_EDGE_REDIS_DISCONNECTED;
    conn->handshake = 0;

    if (conn->connect_timer.timer_set) {
        ngx_del_timer(&conn->connect_timer);
    }

    if (conn->silence_timer.timer_set) {
        ngx_del_timer(&conn->silence_timer);
    }

    if (c) {
        /* the socket is still open here: hiredis closes it after this
         * hook */
        ngx_edge_conn_release(c);
    }

    /* hiredis ran the callbacks of the SCRIPT LOADs it held */
    for (i = 0; i < conn->server->nbatched; i++) {
        conn->loads[i].in_flight = 0;
    }

    /* hiredis failed the commands it held; these it never saw */
    if (conn->pending) {
        ngx_edge_redis_fail_pending(conn);
    }
}


static void
ngx_edge_redis_read_handler(ngx_event_t *rev)
{
    ngx_connection_t       *c = rev->data;
    ngx_edge_redis_conn_t  *conn = c->data;

    int                     n;
    ngx_uint_t              i;
    redisAsyncContext      *ac;

    if (c->close) {
        /* a graceful shutdown closing the idle connections, or
         * worker_shutdown_timeout closing what is left: no reconnect
         * follows, the worker is exiting */
        if (conn->ac) {
            ngx_edge_redis_drop(conn);
        }

        return;
    }

    /*
     * hiredis reads at most 16 KiB a call: while more is waiting on the
     * socket, read again now rather than once per event-loop iteration,
     * or large replies (the cache's entries) trickle in 16 KiB per
     * iteration of a busy worker and their commands time out.  Bounded,
     * so one connection cannot hold the worker; the event is level-
     * triggered, so what is left is signalled again.
     */
    for (i = 0; i < NGX_EDGE_REDIS_READS_PER_EVENT; i++) {
        ac = conn->ac;

        if (ac == NULL) {
            return;
        }

        redisAsyncHandleRead(ac);

        /* the handler may have freed the context (disconnect, error) */
        if (conn->ac != ac || conn->c == NULL) {
            return;
        }

        if (ngx_socket_nread(conn->c->fd, &n) == -1 || n <= 0) {
            return;
        }
    }
}


static void
ngx_edge_redis_write_handler(ngx_event_t *wev)
{
    ngx_connection_t       *c = wev->data;
    ngx_edge_redis_conn_t  *conn = c->data;

    if (conn->ac && conn->pending) {
        ngx_edge_redis_seal(conn);
    }

    if (conn->ac) {
        conn->writing = 1;
        redisAsyncHandleWrite(conn->ac);
        conn->writing = 0;
    }

    if (conn->ac && conn->pending && ngx_edge_redis_has_pending(conn)) {
        /* queued by handlers that ran while sealing */
        ngx_edge_redis_add_write(conn);
    }
}


/* connection life */

static void
ngx_edge_redis_on_connect(const redisAsyncContext *ac, int status)
{
    ngx_edge_redis_conn_t  *conn = ac->data;

    if (status != REDIS_OK) {
        /* hiredis frees the context after this callback */
        ngx_edge_redis_log_failure(conn, "connect failed: %s", ac->errstr);
        ngx_edge_redis_schedule_reconnect(conn);
        return;
    }

    if (conn->connect_timer.timer_set) {
        ngx_del_timer(&conn->connect_timer);
    }

    conn->state = NGX_EDGE_REDIS_HANDSHAKE;

    if (conn->handshake == 0) {
        ngx_edge_redis_handshake_done(conn);
    }

    /* the handshake queued before the connect completed goes out now */
    ngx_edge_redis_add_write(conn);
}


static void
ngx_edge_redis_on_disconnect(const redisAsyncContext *ac, int status)
{
    ngx_edge_redis_conn_t  *conn = ac->data;

    if (conn->exiting) {
        return;
    }

    if (conn->dropping) {
        /* we closed it, and said why */
        conn->dropping = 0;

    } else {
        ngx_edge_redis_log_failure(conn, "connection lost: %s",
                                   status == REDIS_OK ? "closed"
                                                      : (char *) ac->errstr);
    }

    ngx_edge_redis_schedule_reconnect(conn);
}


static void
ngx_edge_redis_connect_timeout(ngx_event_t *ev)
{
    ngx_edge_redis_conn_t  *conn = ev->data;

    if (conn->ac == NULL) {
        return;
    }

    ngx_edge_redis_log_failure(conn, "connect timed out after %M ms",
                               conn->server->connect_timeout);
    ngx_edge_redis_drop(conn);
}


static void
ngx_edge_redis_reconnect_handler(ngx_event_t *ev)
{
    ngx_edge_redis_conn_t  *conn = ev->data;

    if (ngx_exiting || conn->exiting || conn->ac) {
        /* a worker on its way out keeps no connection it does not need */
        return;
    }

    ngx_edge_redis_stat(conn->server, conn->server->st_reconnects, 1);

    if (conn->server->nsentinels) {
        /* the primary may have changed: ask first */
        ngx_edge_redis_sentinel_ask(conn);
        return;
    }

    ngx_edge_redis_connect(conn);
}


/* TCP keepalive finds a peer that vanished while the connection was idle
 * (no item in flight, so no timeout to notice it) */

static void
ngx_edge_redis_keepalive(ngx_edge_redis_conn_t *conn, ngx_socket_t fd)
{
    int  on, idle, intvl, cnt;

    on = 1;
    idle = NGX_EDGE_REDIS_KEEPIDLE;
    intvl = NGX_EDGE_REDIS_KEEPINTVL;
    cnt = NGX_EDGE_REDIS_KEEPCNT;

    if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(int)) == -1) {
        ngx_log_error(NGX_LOG_WARN, conn->log, ngx_socket_errno,
                      "redis \"%V\": setsockopt(SO_KEEPALIVE) failed",
                      &conn->server->name);
        return;
    }

#if (NGX_HAVE_KEEPALIVE_TUNABLE)

    if (setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(int)) == -1
        || setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(int))
           == -1
        || setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(int)) == -1)
    {
        ngx_log_error(NGX_LOG_WARN, conn->log, ngx_socket_errno,
                      "redis \"%V\": setsockopt(TCP_KEEP*) failed",
                      &conn->server->name);
    }

#else

    (void) idle;
    (void) intvl;
    (void) cnt;

#endif
}


static void
ngx_edge_redis_connect(ngx_edge_redis_conn_t *conn)
{
    redisAsyncContext        *ac;
    ngx_connection_t         *c;
    ngx_edge_redis_server_t  *server;

    server = conn->server;

    if (server->unix_path.len) {
        ac = redisAsyncConnectUnix((char *) server->unix_path.data);

    } else if (server->nsentinels) {
        ac = redisAsyncConnect((char *) conn->master_host, conn->master_port);

    } else {
        ac = redisAsyncConnect((char *) server->hosts[conn->addr].data,
                               server->port);
    }

    if (ac == NULL) {
        ngx_edge_redis_log_failure(conn, "cannot allocate a context");
        ngx_edge_redis_schedule_reconnect(conn);
        return;
    }

    if (ac->err) {
        ngx_edge_redis_log_failure(conn, "connect failed: %s", ac->errstr);
        redisAsyncFree(ac);
        ngx_edge_redis_schedule_reconnect(conn);
        return;
    }

    c = ngx_edge_conn_wrap(ac->c.fd, conn->log, conn,
                           ngx_edge_redis_read_handler,
                           ngx_edge_redis_write_handler);
    if (c == NULL) {
        redisAsyncFree(ac);
        ngx_edge_redis_schedule_reconnect(conn);
        return;
    }

    if (server->unix_path.len == 0) {
        ngx_edge_redis_keepalive(conn, ac->c.fd);
    }

    /* idle while no request waits on it: a graceful shutdown closes it
     * at once (ngx_close_idle_connections() calls the read handler) */
    c->idle = (conn->attached == 0);

    conn->ac = ac;
    conn->c = c;
    conn->state = NGX_EDGE_REDIS_CONNECTING;
    conn->handshake = 0;
    conn->dropping = 0;

    ac->data = conn;
    ac->ev.data = conn;
    ac->ev.addRead = ngx_edge_redis_add_read;
    ac->ev.delRead = ngx_edge_redis_del_read;
    ac->ev.addWrite = ngx_edge_redis_add_write;
    ac->ev.delWrite = ngx_edge_redis_del_write;
    ac->ev.cleanup = ngx_edge_redis_cleanup;

    ngx_edge_redis_hook_free(ac);

    redisAsyncSetConnectCallback(ac, ngx_edge_redis_on_connect);
    redisAsyncSetDisconnectCallback(ac, ngx_edge_redis_on_disconnect);

    ngx_add_timer(&conn->connect_timer, server->connect_timeout);

    /* queued now, written as soon as the connect completes, and ahead of
     * every request's item */
    ngx_edge_redis_send_handshake(conn);
    ngx_edge_redis_add_write(conn);
}


static void
ngx_edge_redis_handshake_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    redisReply             *reply = r;
    ngx_edge_redis_conn_t  *conn = privdata;

    if (reply == NULL) {
        /* the connection is going away: its hooks say why */
        return;
    }

    conn->replies++;

    if (conn->state != NGX_EDGE_REDIS_HANDSHAKE || conn->handshake == 0) {
        /* a failed handshake's later replies */
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        /* wrong password, unknown db, ...: every command would fail the
         * same way, so say it and start over, with the backoff growing */
        conn->handshake = 0;
        ngx_edge_redis_log_failure(conn, "handshake failed: %*s",
                                   (size_t) reply->len, reply->str);
        conn->dropping = 1;
        redisAsyncDisconnect(ac);
        return;
    }

    if (--conn->handshake == 0) {
        ngx_edge_redis_handshake_done(conn);
    }
}


static void
ngx_edge_redis_send_handshake(ngx_edge_redis_conn_t *conn)
{
    int                        rc;
    u_char                     db[NGX_INT_T_LEN + 1];
    ngx_uint_t                 i;
    ngx_edge_redis_server_t   *server;
    ngx_edge_redis_script_t  **scripts;

    server = conn->server;
    scripts = server->scripts.elts;

    if (server->user.len) {
        rc = redisAsyncCommand(conn->ac, ngx_edge_redis_handshake_reply,
                               conn, "AUTH %b %b", server->user.data,
                               server->user.len, server->password.data,
                               server->password.len);
        conn->handshake += (rc == REDIS_OK);

    } else if (server->password.len) {
        rc = redisAsyncCommand(conn->ac, ngx_edge_redis_handshake_reply,
                               conn, "AUTH %b", server->password.data,
                               server->password.len);
        conn->handshake += (rc == REDIS_OK);
    }

    if (server->db) {
        *ngx_sprintf(db, "%i", server->db) = '\0';
        rc = redisAsyncCommand(conn->ac, ngx_edge_redis_handshake_reply,
                               conn, "SELECT %s", db);
        conn->handshake += (rc == REDIS_OK);
    }

    for (i = 0; i < server->scripts.nelts; i++) {
        rc = redisAsyncCommand(conn->ac, ngx_edge_redis_handshake_reply,
                               conn, "SCRIPT LOAD %b",
                               scripts[i]->source.data,
                               scripts[i]->source.len);
        conn->handshake += (rc == REDIS_OK);
    }

    if (server->nsentinels) {
        /* what a Sentinel said may be stale: only a master is used */
        rc = redisAsyncCommand(conn->ac, ngx_edge_redis_role_reply, conn,
                               "ROLE");
        conn->handshake += (rc == REDIS_OK);
    }
}


/* NOSCRIPT (Redis restarted, or SCRIPT FLUSH ran): one SCRIPT LOAD of that
 * script in flight per connection, however many replies said NOSCRIPT;
 * every retry is queued after it, so pipelining orders the load first */

static void
ngx_edge_redis_script_loaded(redisAsyncContext *ac, void *r, void *privdata)
{
    ngx_edge_redis_load_t  *load = privdata;

    if (r) {
        load->conn->replies++;
    }

    load->in_flight = 0;
}


static void
ngx_edge_redis_reload_script(ngx_edge_redis_conn_t *conn,
    ngx_edge_redis_script_t *script)
{
    ngx_edge_redis_load_t  *load;

    load = &conn->loads[script->index];

    if (load->in_flight) {
        return;
    }

    if (redisAsyncCommand(conn->ac, ngx_edge_redis_script_loaded, load,
                          "SCRIPT LOAD %b", script->source.data,
                          script->source.len)
        == REDIS_OK)
    {
        load->in_flight = 1;
    }
}


/* worker life */

ngx_int_t
ngx_edge_redis_init_worker(ngx_cycle_t *cycle,
    ngx_edge_redis_server_t *server)
{
    ngx_uint_t              i;
    ngx_edge_redis_cmd_t   *cmd;
    ngx_edge_redis_conn_t  *conn;

    if (server->nseeds) {
        return ngx_edge_redis_cluster_init(cycle, server);
    }

    conn = ngx_pcalloc(cycle->pool, sizeof(ngx_edge_redis_conn_t));
    if (conn == NULL) {
        return NGX_ERROR;
    }

    conn->cmds = ngx_pcalloc(cycle->pool,
                             server->max_inflight
                             * sizeof(ngx_edge_redis_cmd_t));
    if (conn->cmds == NULL) {
        return NGX_ERROR;
    }

    conn->server = server;
    conn->log = cycle->log;

    ngx_queue_init(&conn->free);
    ngx_queue_init(&conn->batches);

    if (server->nbatched) {
        conn->pending = ngx_palloc(cycle->pool,
                                   server->nbatched * sizeof(ngx_queue_t));
        if (conn->pending == NULL) {
            return NGX_ERROR;
        }

        conn->loads = ngx_pcalloc(cycle->pool,
                                  server->nbatched
                                  * sizeof(ngx_edge_redis_load_t));
        if (conn->loads == NULL) {
            return NGX_ERROR;
        }

        for (i = 0; i < server->nbatched; i++) {
            ngx_queue_init(&conn->pending[i]);
            conn->loads[i].conn = conn;
        }
    }

    for (i = 0; i < server->max_inflight; i++) {
        cmd = &conn->cmds[i];
        cmd->conn = conn;
        cmd->home = conn;
        cmd->timer.handler = ngx_edge_redis_cmd_timeout;
        cmd->timer.data = cmd;
        cmd->timer.log = cycle->log;

        /*
         * Not cancelable: the timer is set only while a request waits on
         * the slot, and a worker shutting down must stay until that
         * request got its reply or its timeout.
         */
        cmd->timer.cancelable = 0;

        ngx_queue_insert_tail(&conn->free, &cmd->queue);
    }

    /* no request waits on these: a worker on its way out need not */
    conn->connect_timer.handler = ngx_edge_redis_connect_timeout;
    conn->connect_timer.data = conn;
    conn->connect_timer.log = cycle->log;
    conn->connect_timer.cancelable = 1;

    conn->reconnect_timer.handler = ngx_edge_redis_reconnect_handler;
    conn->reconnect_timer.data = conn;
    conn->reconnect_timer.log = cycle->log;
    conn->reconnect_timer.cancelable = 1;

    conn->silence_timer.handler = ngx_edge_redis_silence_handler;
    conn->silence_timer.data = conn;
    conn->silence_timer.log = cycle->log;
    conn->silence_timer.cancelable = 1;

    conn->close_event.handler = ngx_edge_redis_close_handler;
    conn->close_event.data = conn;
    conn->close_event.log = cycle->log;

    server->conn = conn;

    if (server->nsentinels) {
        return ngx_edge_redis_sentinel_init(cycle, conn);
    }

    ngx_edge_redis_connect(conn);

    return NGX_OK;
}


void
ngx_edge_redis_exit_worker(ngx_edge_redis_server_t *server)
{
    ngx_uint_t              i;
    ngx_edge_redis_conn_t  *conn;

    if (server->nseeds) {
        ngx_edge_redis_cluster_exit(server);
        return;
    }

    conn = server->conn;
    if (conn == NULL) {
        return;
    }

    conn->exiting = 1;

    if (conn->reconnect_timer.timer_set) {
        ngx_del_timer(&conn->reconnect_timer);
    }

    if (conn->silence_timer.timer_set) {
        ngx_del_timer(&conn->silence_timer);
    }

    if (conn->close_event.posted) {
        ngx_delete_posted_event(&conn->close_event);
    }

    if (server->nsentinels) {
        ngx_edge_redis_sentinel_exit(conn);
    }

    for (i = 0; i < server->max_inflight; i++) {
        ngx_edge_redis_detach(&conn->cmds[i]);
    }

    if (conn->ac) {
        /* runs the pending callbacks (all detached) and the cleanup hook,
         * which releases the nginx connection: no "open socket left" */
        redisAsyncFree(conn->ac);
    }

    if (conn->wire) {
        ngx_free(conn->wire);
        conn->wire = NULL;
    }

    for (i = 0; i < server->max_inflight; i++) {
        /* a copy of a slot redirected to a node that is still open: its
         * resend needs a handler, and none is left */
        if (conn->cmds[i].big) {
            ngx_free(conn->cmds[i].big);
            conn->cmds[i].big = NULL;
        }
    }

    server->conn = NULL;
}


/* items */

/* items may follow the handshake in the pipeline, except to a primary
 * named by a Sentinel: they wait until ROLE said it is a master */

static ngx_flag_t
ngx_edge_redis_takes_items(ngx_edge_redis_conn_t *conn)
{
    if (conn == NULL) {
        return 0;
    }

    if (conn->server->nsentinels) {
        return conn->state == NGX_EDGE_REDIS_READY;
    }

    return conn->state >= NGX_EDGE_REDIS_HANDSHAKE;
}


ngx_flag_t
ngx_edge_redis_ready(ngx_edge_redis_server_t *server)
{
    if (server->nseeds) {
        /* whether the key's node is connected is known when it is sent */
        return server->cluster && server->cluster->known;
    }

    return ngx_edge_redis_takes_items(server->conn);
}


static void
ngx_edge_redis_cmd_timeout(ngx_event_t *ev)
{
    ngx_edge_redis_cmd_t  *cmd = ev->data;

    void                       *data;
    ngx_edge_redis_conn_t      *conn;
    ngx_edge_redis_handler_pt   handler;

    conn = cmd->conn;
    handler = cmd->handler;
    data = cmd->data;

    /* the slot stays taken until Redis answers or the connection drops:
     * hiredis keeps the callback queued and we cannot remove it */
    ngx_edge_redis_unattach(cmd);

    ngx_edge_redis_stat(conn->server, conn->server->st_timeouts, 1);

    ngx_edge_redis_log_failure(conn, "command timed out after %M ms",
                               conn->server->timeout);

    /* with a timeout of 1 s or more, the connection may be dropped here:
     * every item on it fails, the worker reconnects, and the handler
     * below sees a server that is not ready */
    ngx_edge_redis_check_silence(cmd);

    if (handler) {
        handler(data, NULL, NGX_AGAIN);
    }
}


static ngx_flag_t
ngx_edge_redis_is_noscript(redisReply *reply)
{
    return reply->type == REDIS_REPLY_ERROR
           && reply->len >= 8
           && ngx_strncmp(reply->str, "NOSCRIPT", 8) == 0;
}


/*
 * The free slot a new item will take, left in the free list; NULL when
 * the server is not ready or the in-flight bound is reached.
 */

static ngx_edge_redis_cmd_t *
ngx_edge_redis_free_slot(ngx_edge_redis_server_t *server)
{
    ngx_edge_redis_conn_t  *conn;

    conn = server->conn;

    if (!ngx_edge_redis_takes_items(conn)
        || (conn->ac->c.flags & (REDIS_DISCONNECTING|REDIS_FREEING)))
    {
        /* not sent: the caller's failure policy applies, and it counts as
         * a failed command; a connection on its way out takes nothing
         * (its callbacks are running) */
        ngx_edge_redis_stat(server, server->st_errors, 1);

        if (server->node) {
            /* its slots may have moved to a promoted replica */
            ngx_edge_redis_cluster_refresh_soon(server->cluster);
        }

        return NULL;
    }

    if (ngx_queue_empty(&conn->free)) {
        ngx_edge_redis_stat(server, server->st_errors, 1);
        ngx_edge_redis_log_failure(conn, "%ui commands in flight, "
                                   "the limit of max_inflight",
                                   server->max_inflight);
        return NULL;
    }

    return ngx_queue_data(ngx_queue_head(&conn->free), ngx_edge_redis_cmd_t,
                          queue);
}


ngx_edge_redis_cmd_t *
ngx_edge_redis_send_item(ngx_edge_redis_server_t *server,
    ngx_edge_redis_script_t *script, ngx_edge_redis_handler_pt handler,
    void *data, const char **argv, const size_t *argvlen)
{
    ngx_uint_t              slot;
    ngx_edge_redis_cmd_t   *cmd;
    ngx_edge_redis_conn_t  *conn;

    slot = 0;

    if (server->nseeds) {
        server = ngx_edge_redis_cluster_route(server, argv[0], argvlen[0],
                                              &slot);
        if (server == NULL) {
            return NULL;
        }
    }

    cmd = ngx_edge_redis_free_slot(server);
    if (cmd == NULL) {
        return NULL;
    }

    conn = server->conn;

    ngx_queue_remove(&cmd->queue);

    cmd->handler = handler;
    cmd->data = data;
    cmd->script = script;
    cmd->slot = slot;

    if (conn->attached++ == 0 && conn->c) {
        conn->c->idle = 0;
    }

    cmd->argv = argv;
    cmd->argvlen = argvlen;
    cmd->replies = conn->replies;

    ngx_add_timer(&cmd->timer, server->timeout);

    ngx_edge_redis_stat(server, server->st_inflight, 1);

    /* it leaves with the other items of this iteration, on the flush */
    ngx_queue_insert_tail(&conn->pending[script->index], &cmd->queue);
    ngx_edge_redis_add_write(conn);

    return cmd;
}


/* batches */

static ngx_edge_redis_batch_t *
ngx_edge_redis_get_batch(ngx_edge_redis_conn_t *conn,
    ngx_edge_redis_script_t *script)
{
    ngx_queue_t             *q;
    ngx_edge_redis_batch_t  *b;

    if (!ngx_queue_empty(&conn->batches)) {
        q = ngx_queue_head(&conn->batches);
        ngx_queue_remove(q);
        b = ngx_queue_data(q, ngx_edge_redis_batch_t, queue);

    } else {
        /* reused through the free list: there are never more batches than
         * slots, each holding one at least */
        b = ngx_palloc(ngx_cycle->pool,
                       sizeof(ngx_edge_redis_batch_t)
                       + conn->server->batch * sizeof(ngx_edge_redis_cmd_t *));
        if (b == NULL) {
            return NULL;
        }

        ngx_memzero(&b->retry, sizeof(ngx_event_t));

        b->conn = conn;
        b->items = (ngx_edge_redis_cmd_t **) (b + 1);
        b->retry.handler = ngx_edge_redis_cluster_retry;
        b->retry.data = b;
        b->retry.log = conn->log;
    }

    b->script = script;
    b->n = 0;
    b->redirects = 0;
    b->tryagain = 0;
    b->retried = 0;

    return b;
}


static void
ngx_edge_redis_put_batch(ngx_edge_redis_batch_t *b)
{
    ngx_queue_insert_head(&b->conn->batches, &b->queue);
}


/*
 * The buffer commands are encoded in: it grows to the largest command
 * seen (bounded by the callers: the batch size, the cache's entry size)
 * and is kept for the worker's life.
 */

static ngx_int_t
ngx_edge_redis_reserve_wire(ngx_edge_redis_conn_t *conn, size_t size)
{
    if (size <= conn->wire_size) {
        return NGX_OK;
    }

    if (conn->wire) {
        ngx_free(conn->wire);
    }

    conn->wire_size = 0;
    conn->wire = ngx_alloc(size, conn->log);
    if (conn->wire == NULL) {
        return NGX_ERROR;
    }

    conn->wire_size = size;

    return NGX_OK;
}


/* one RESP bulk string: "$len\r\ndata\r\n" */

static u_char *
ngx_edge_redis_put_bulk(u_char *p, const char *data, size_t len)
{
    p = ngx_sprintf(p, "$%uz\r\n", len);
    p = ngx_cpymem(p, data, len);
    *p++ = CR;
    *p++ = LF;

    return p;
}


#define ngx_edge_redis_bulk_size(len)                                         \
    (1 + NGX_SIZE_T_LEN + 2 + (len) + 2)


/*
 * A Cluster's plain command as encoded, for a resend after MOVED or ASK:
 * hiredis drops its own bytes once they are written.  Without a copy
 * (no memory) the redirect's error reply is the command's answer.
 */

static void
ngx_edge_redis_keep_copy(ngx_edge_redis_cmd_t *cmd, u_char *wire, size_t len)
{
    u_char  *dst;

    cmd->copy_len = 0;

    if (len > NGX_EDGE_REDIS_RESEND_MAX) {
        cmd->big = ngx_alloc(len, cmd->home->log);
        dst = cmd->big;

    } else {
        if (cmd->copy == NULL) {
            /* kept with the slot for the worker's life */
            cmd->copy = ngx_palloc(ngx_cycle->pool,
                                   NGX_EDGE_REDIS_RESEND_MAX);
        }

        dst = cmd->copy;
    }

    if (dst) {
        ngx_memcpy(dst, wire, len);
        cmd->copy_len = len;
    }
}


/*
 * A plain command leaves at once for hiredis's output buffer (the flush
 * still happens once per event-loop iteration, so commands of concurrent
 * requests share writes); its slot is hiredis's privdata.
 */

ngx_edge_redis_cmd_t *
ngx_edge_redis_send_command(ngx_edge_redis_server_t *server,
    ngx_edge_redis_handler_pt handler, void *data, ngx_uint_t argc,
    const char **argv, const size_t *argvlen)
{
    ngx_uint_t  slot;

    slot = 0;

    if (server->nseeds) {
        server = ngx_edge_redis_cluster_command_node(server, argc, argv,
                                                     argvlen, &slot);
        if (server == NULL) {
            return NULL;
        }
    }

    return ngx_edge_redis_send_on(server, slot, handler, data, argc, argv,
                                  argvlen);
}


ngx_edge_redis_cmd_t *
ngx_edge_redis_send_command_to(ngx_edge_redis_server_t *server,
    ngx_uint_t node, ngx_edge_redis_handler_pt handler, void *data,
    ngx_uint_t argc, const char **argv, const size_t *argvlen)
{
    ngx_edge_redis_cluster_t  *cl;

    if (server->nseeds) {
        cl = server->cluster;

        if (cl == NULL || node >= cl->nnodes) {
            ngx_edge_redis_stat(server, server->st_errors, 1);
            return NULL;
        }

        server = &cl->nodes[node];

    } else if (node != 0) {
        return NULL;
    }

    return ngx_edge_redis_send_on(server, 0, handler, data, argc, argv,
                                  argvlen);
}


ngx_int_t
ngx_edge_redis_next_node(ngx_edge_redis_server_t *server, ngx_uint_t from)
{
    ngx_uint_t                 i, slot;
    ngx_edge_redis_cluster_t  *cl;

    if (server->nseeds == 0) {
        return from == 0 ? 0 : NGX_DONE;
    }

    cl = server->cluster;

    if (cl == NULL || !cl->known) {
        return NGX_DECLINED;
    }

    for (i = from; i < cl->nnodes; i++) {
        for (slot = 0; slot < NGX_EDGE_REDIS_CLUSTER_SLOTS; slot++) {
            if (cl->map[slot] == i + 1) {
                return i;
            }
        }
    }

    return NGX_DONE;
}


void
ngx_edge_redis_refresh_map(ngx_edge_redis_server_t *server)
{
    if (server->nseeds) {
        ngx_edge_redis_cluster_refresh_soon(server->cluster);
    }
}


/* a plain command on this server's (or Cluster node's) connection */

static ngx_edge_redis_cmd_t *
ngx_edge_redis_send_on(ngx_edge_redis_server_t *server, ngx_uint_t slot,
    ngx_edge_redis_handler_pt handler, void *data, ngx_uint_t argc,
    const char **argv, const size_t *argvlen)
{
    u_char                 *p;
    size_t                  size;
    ngx_uint_t              i;
    ngx_edge_redis_cmd_t   *cmd;
    ngx_edge_redis_conn_t  *conn;

    cmd = ngx_edge_redis_free_slot(server);
    if (cmd == NULL) {
        return NULL;
    }

    conn = server->conn;

    size = 1 + NGX_INT_T_LEN + 2;

    for (i = 0; i < argc; i++) {
        size += ngx_edge_redis_bulk_size(argvlen[i]);
    }

    if (ngx_edge_redis_reserve_wire(conn, size) != NGX_OK) {
        ngx_edge_redis_stat(server, server->st_errors, 1);
        return NULL;
    }

    p = ngx_sprintf(conn->wire, "*%ui\r\n", argc);

    for (i = 0; i < argc; i++) {
        p = ngx_edge_redis_put_bulk(p, argv[i], argvlen[i]);
    }

    if (redisAsyncFormattedCommand(conn->ac, ngx_edge_redis_command_reply,
                                   cmd, (const char *) conn->wire,
                                   p - conn->wire)
        != REDIS_OK)
    {
        ngx_edge_redis_stat(server, server->st_errors, 1);
        return NULL;
    }

    ngx_queue_remove(&cmd->queue);

    if (server->node) {
        ngx_edge_redis_keep_copy(cmd, conn->wire, p - conn->wire);
    }

    cmd->handler = handler;
    cmd->data = data;
    cmd->slot = slot;
    cmd->script = NULL;
    cmd->argv = NULL;
    cmd->argvlen = NULL;
    cmd->replies = conn->replies;
    cmd->start = ngx_edge_mono_usec();

    if (conn->attached++ == 0 && conn->c) {
        conn->c->idle = 0;
    }

    ngx_add_timer(&cmd->timer, server->timeout);

    ngx_edge_redis_stat(server, server->st_inflight, 1);
    ngx_edge_redis_stat(server, server->st_commands, 1);

    return cmd;
}


static void
ngx_edge_redis_command_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    redisReply            *reply = r;
    ngx_edge_redis_cmd_t  *cmd = privdata;

    void                       *data;
    ngx_edge_redis_conn_t      *conn;
    ngx_edge_redis_server_t    *server;
    ngx_edge_redis_handler_pt   handler;

    conn = cmd->conn;
    server = conn->server;

    if (reply) {
        conn->replies++;

        if (server->stats) {
            ngx_edge_stats_observe(server->stats, server->st_rtt,
                                   ngx_edge_mono_usec() - cmd->start);
        }
    }

    if (reply && server->node && reply->type == REDIS_REPLY_ERROR
        && ngx_edge_redis_cluster_resend(cmd, reply) == NGX_OK)
    {
        return;
    }

    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        ngx_edge_redis_stat(server, server->st_errors, 1);
    }

    if (reply == NULL && server->node) {
        ngx_edge_redis_cluster_refresh_soon(server->cluster);
    }

    if (reply && reply->type == REDIS_REPLY_ERROR) {
        ngx_edge_redis_log_failure(conn, "error reply: %*s",
                                   (size_t) reply->len, reply->str);
        ngx_edge_redis_check_demoted(conn, reply);
    }

    handler = cmd->handler;
    data = cmd->data;

    ngx_edge_redis_free_cmd(cmd);

    if (handler) {
        handler(data, reply, reply ? NGX_OK : NGX_ERROR);
    }
}


/*
 * EVALSHA sha numkeys <keys of every item> <args of every item>, encoded
 * here in one pass into a buffer the connection keeps (hiredis's own
 * formatting costs a few allocations and copies per argument, and a batch
 * has dozens of them) and handed over with redisAsyncFormattedCommand(),
 * which copies it to the output buffer.
 */

static ngx_int_t
ngx_edge_redis_send_batch(ngx_edge_redis_batch_t *b)
{
    u_char                   *p;
    size_t                    size;
    ngx_uint_t                i, j, k, a, nargs;
    ngx_edge_redis_cmd_t     *cmd;
    ngx_edge_redis_conn_t    *conn;
    ngx_edge_redis_script_t  *script;
    u_char                    numkeys[NGX_INT_T_LEN];

    conn = b->conn;
    script = b->script;
    k = script->item_keys;
    a = script->item_args;
    nargs = 3 + b->n * (k + a);

    size = 1 + NGX_INT_T_LEN + 2
           + ngx_edge_redis_bulk_size(sizeof("EVALSHA") - 1)
           + ngx_edge_redis_bulk_size(40)
           + ngx_edge_redis_bulk_size(NGX_INT_T_LEN);

    for (i = 0; i < b->n; i++) {
        for (j = 0; j < k + a; j++) {
            size += ngx_edge_redis_bulk_size(b->items[i]->argvlen[j]);
        }
    }

    if (ngx_edge_redis_reserve_wire(conn, size) != NGX_OK) {
        return NGX_ERROR;
    }

    p = ngx_sprintf(conn->wire, "*%ui\r\n", nargs);
    p = ngx_edge_redis_put_bulk(p, "EVALSHA", sizeof("EVALSHA") - 1);
    p = ngx_edge_redis_put_bulk(p, (const char *) script->sha1, 40);
    p = ngx_edge_redis_put_bulk(p, (const char *) numkeys,
                                ngx_sprintf(numkeys, "%ui", b->n * k)
                                - numkeys);

    for (i = 0; i < b->n; i++) {
        cmd = b->items[i];

        for (j = 0; j < k; j++) {
            p = ngx_edge_redis_put_bulk(p, cmd->argv[j], cmd->argvlen[j]);
        }
    }

    for (i = 0; i < b->n; i++) {
        cmd = b->items[i];

        for (j = k; j < k + a; j++) {
            p = ngx_edge_redis_put_bulk(p, cmd->argv[j], cmd->argvlen[j]);
        }
    }

    if (redisAsyncFormattedCommand(conn->ac, ngx_edge_redis_batch_reply, b,
                                   (const char *) conn->wire,
                                   p - conn->wire)
        != REDIS_OK)
    {
        return NGX_ERROR;
    }

    b->start = ngx_edge_mono_usec();

    ngx_edge_redis_stat(conn->server, conn->server->st_commands, 1);

    return NGX_OK;
}


/* each item gets its element of the reply, or the whole reply when it
 * cannot be split (an error, a broken script): the caller reports it */

static void
ngx_edge_redis_finish_batch(ngx_edge_redis_batch_t *b, redisReply *reply)
{
    void                       *data;
    ngx_int_t                   rc;
    ngx_uint_t                  i, split;
    redisReply                 *item;
    ngx_edge_redis_cmd_t       *cmd;
    ngx_edge_redis_handler_pt   handler;

    split = (reply && reply->type == REDIS_REPLY_ARRAY
             && reply->elements == b->n);

    /* an error reply is every item's answer; a reply of another shape is
     * nobody's, and must not be read as an item's own */
    rc = (split || (reply && reply->type == REDIS_REPLY_ERROR)) ? NGX_OK
                                                               : NGX_ERROR;

    for (i = 0; i < b->n; i++) {
        cmd = b->items[i];
        handler = cmd->handler;
        data = cmd->data;

        /* free first: the handler may resume a request that sends its
         * next command right away */
        ngx_edge_redis_free_cmd(cmd);

        if (handler) {
            item = split ? reply->element[i] : (rc == NGX_OK ? reply : NULL);
            handler(data, item, rc);
        }
    }

    ngx_edge_redis_put_batch(b);
}


static void
ngx_edge_redis_batch_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    redisReply              *reply = r;
    ngx_edge_redis_batch_t  *b = privdata;

    ngx_uint_t                i, n;
    ngx_edge_redis_cmd_t     *cmd;
    ngx_edge_redis_conn_t    *conn;
    ngx_edge_redis_server_t  *server;

    conn = b->conn;
    server = conn->server;

    if (reply) {
        conn->replies++;
    }

    if (reply && !b->retried && ngx_edge_redis_is_noscript(reply)) {
        /*
         * Redis restarted or SCRIPT FLUSH ran: load the script again and
         * resend the items whose requests still wait, once.  Pipelining
         * orders the load before the retry.
         */
        n = 0;

        for (i = 0; i < b->n; i++) {
            cmd = b->items[i];

            if (cmd->handler && cmd->argv) {
                b->items[n++] = cmd;

            } else {
                ngx_edge_redis_free_cmd(cmd);
            }
        }

        b->n = n;
        b->retried = 1;

        if (n == 0) {
            ngx_edge_redis_put_batch(b);
            return;
        }

        ngx_edge_redis_reload_script(conn, b->script);

        if (ngx_edge_redis_send_batch(b) == NGX_OK) {
            return;
        }
    }

    if (reply && server->node && reply->type == REDIS_REPLY_ERROR
        && (ngx_edge_redis_cluster_redirect(b, reply) == NGX_OK
            || ngx_edge_redis_cluster_tryagain(b, reply) == NGX_OK))
    {
        return;
    }

    if (reply == NULL && server->node) {
        ngx_edge_redis_cluster_refresh_soon(server->cluster);
    }

    if (reply && server->stats) {
        ngx_edge_stats_observe(server->stats, server->st_rtt,
                               ngx_edge_mono_usec() - b->start);
    }

    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        ngx_edge_redis_stat(server, server->st_errors, b->n);
    }

    if (reply && reply->type == REDIS_REPLY_ERROR) {
        ngx_edge_redis_log_failure(conn, "error reply: %*s",
                                   (size_t) reply->len, reply->str);
        ngx_edge_redis_check_demoted(conn, reply);

    } else if (reply && (reply->type != REDIS_REPLY_ARRAY
                         || reply->elements != b->n))
    {
        ngx_edge_redis_stat(server, server->st_errors, b->n);
        ngx_edge_redis_log_failure(conn, "a batch of %ui got a reply that "
                                   "is not an array of %ui", b->n, b->n);

    } else if (reply && server->nsentinels) {
        /* the script reports an item's failed write as its element */
        for (i = 0; i < reply->elements; i++) {
            ngx_edge_redis_check_demoted(conn, reply->element[i]);
        }
    }

    ngx_edge_redis_finish_batch(b, reply);
}


/*
 * Called by the write handler: the items queued since the last flush
 * become EVALSHA commands in hiredis's output buffer, which the same
 * handler writes at once.  Items whose requests went away or timed out
 * before leaving are dropped here.
 */

static void
ngx_edge_redis_seal(ngx_edge_redis_conn_t *conn)
{
    ngx_uint_t                 i, skipped;
    ngx_queue_t               *q, pending;
    ngx_edge_redis_cmd_t      *cmd;
    ngx_edge_redis_batch_t    *b;
    ngx_edge_redis_server_t   *server;
    ngx_edge_redis_script_t  **scripts;

    server = conn->server;
    scripts = server->scripts.elts;

    conn->sealing = 1;

    for (i = 0; i < server->scripts.nelts; i++) {

        if (scripts[i]->item_keys == 0
            || ngx_queue_empty(&conn->pending[scripts[i]->index]))
        {
            continue;
        }

        /* items queued by handlers run below wait for the next flush */
        q = &conn->pending[scripts[i]->index];
        ngx_queue_init(&pending);
        ngx_queue_add(&pending, q);
        ngx_queue_init(q);

        while (!ngx_queue_empty(&pending)) {

            b = ngx_edge_redis_get_batch(conn, scripts[i]);
            if (b == NULL) {
                ngx_edge_redis_fail_queue(&pending);
                break;
            }

            /* a Cluster node takes the items of one slot per EVALSHA:
             * the others wait in the queue for the next batch; the scan
             * for more of the slot is bounded (many keys of many slots
             * must not make the flush quadratic) */
            q = ngx_queue_head(&pending);
            skipped = 0;

            while (b->n < server->batch && q != ngx_queue_sentinel(&pending)
                   && skipped < NGX_EDGE_REDIS_SLOT_SCAN)
            {
                cmd = ngx_queue_data(q, ngx_edge_redis_cmd_t, queue);
                q = ngx_queue_next(q);

                if (cmd->handler == NULL) {
                    ngx_queue_remove(&cmd->queue);
                    ngx_edge_redis_free_cmd(cmd);
                    continue;
                }

                if (server->node && b->n && cmd->slot != b->items[0]->slot) {
                    skipped++;
                    continue;
                }

                ngx_queue_remove(&cmd->queue);
                b->items[b->n++] = cmd;
            }

            if (b->n == 0) {
                ngx_edge_redis_put_batch(b);
                break;
            }

            if (conn->ac == NULL || ngx_edge_redis_send_batch(b) != NGX_OK) {
                ngx_edge_redis_stat(server, server->st_errors, b->n);
                ngx_edge_redis_finish_batch(b, NULL);
            }
        }
    }

    conn->sealing = 0;
}


static ngx_flag_t
ngx_edge_redis_has_pending(ngx_edge_redis_conn_t *conn)
{
    ngx_uint_t  i;

    for (i = 0; i < conn->server->nbatched; i++) {
        if (!ngx_queue_empty(&conn->pending[i])) {
            return 1;
        }
    }

    return 0;
}


/* items that never left: their handlers get a connection error */

static void
ngx_edge_redis_fail_queue(ngx_queue_t *pending)
{
    void                       *data;
    ngx_edge_redis_cmd_t       *cmd;
    ngx_edge_redis_handler_pt   handler;

    while (!ngx_queue_empty(pending)) {
        cmd = ngx_queue_data(ngx_queue_head(pending), ngx_edge_redis_cmd_t,
                             queue);
        ngx_queue_remove(&cmd->queue);

        handler = cmd->handler;
        data = cmd->data;

        ngx_edge_redis_free_cmd(cmd);

        if (handler) {
            ngx_edge_redis_stat(cmd->conn->server,
                                cmd->conn->server->st_errors, 1);
            handler(data, NULL, NGX_ERROR);
        }
    }
}


static void
ngx_edge_redis_fail_pending(ngx_edge_redis_conn_t *conn)
{
    ngx_uint_t   i;
    ngx_queue_t  pending;

    for (i = 0; i < conn->server->nbatched; i++) {
        if (ngx_queue_empty(&conn->pending[i])) {
            continue;
        }

        ngx_queue_init(&pending);
        ngx_queue_add(&pending, &conn->pending[i]);
        ngx_queue_init(&conn->pending[i]);

        ngx_edge_redis_fail_queue(&pending);
    }
}


void
ngx_edge_redis_detach(ngx_edge_redis_cmd_t *cmd)
{
    ngx_edge_redis_unattach(cmd);

    if (cmd->timer.timer_set) {
        ngx_del_timer(&cmd->timer);
    }
}


/*
 * The slot's handler goes (answered, timed out, detached).  When no slot
 * has one any more (and no caller holds the connection), the connection
 * is idle; in a worker that is shutting down it is then closed (from a
 * posted event: this may run inside a hiredis callback).
 */

static void
ngx_edge_redis_unattach(ngx_edge_redis_cmd_t *cmd)
{
    if (cmd->handler == NULL) {
        return;
    }

    cmd->handler = NULL;
    cmd->data = NULL;
    cmd->argv = NULL;

    ngx_edge_redis_unref(cmd->conn);
}


/*
 * A Cluster: the caller's next command may go to any node (its key's, as
 * the map will say then), so every node's connection is held, and a node
 * added meanwhile is held as many times (ngx_edge_redis_cluster_node).  A
 * worker shutting down keeps them all until the last release: a few idle
 * connections for as long as a caller polls.
 */

void
ngx_edge_redis_hold(ngx_edge_redis_server_t *server)
{
    ngx_uint_t                 i;
    ngx_edge_redis_conn_t     *conn;
    ngx_edge_redis_cluster_t  *cl;

    if (server->nseeds) {
        cl = server->cluster;

        if (cl == NULL) {
            return;
        }

        cl->holds++;

        for (i = 0; i < cl->nnodes; i++) {
            ngx_edge_redis_hold(&cl->nodes[i]);
        }

        return;
    }

    conn = server->conn;

    if (conn == NULL) {
        return;
    }

    if (conn->attached++ == 0 && conn->c) {
        conn->c->idle = 0;
    }
}


void
ngx_edge_redis_release(ngx_edge_redis_server_t *server)
{
    ngx_uint_t                 i;
    ngx_edge_redis_cluster_t  *cl;

    if (server->nseeds) {
        cl = server->cluster;

        if (cl == NULL || cl->holds == 0) {
            return;
        }

        cl->holds--;

        for (i = 0; i < cl->nnodes; i++) {
            ngx_edge_redis_release(&cl->nodes[i]);
        }

        return;
    }

    if (server->conn && server->conn->attached) {
        ngx_edge_redis_unref(server->conn);
    }
}


static void
ngx_edge_redis_unref(ngx_edge_redis_conn_t *conn)
{
    if (--conn->attached) {
        return;
    }

    if (conn->c) {
        conn->c->idle = 1;
    }

    if (ngx_exiting && conn->ac && !conn->exiting
        && !conn->close_event.posted)
    {
        ngx_post_event(&conn->close_event, &ngx_posted_events);
    }
}


static void
ngx_edge_redis_close_handler(ngx_event_t *ev)
{
    ngx_edge_redis_conn_t  *conn = ev->data;

    if (ngx_exiting && conn->attached == 0 && conn->ac) {
        ngx_edge_redis_drop(conn);
    }
}


static void
ngx_edge_redis_free_cmd(ngx_edge_redis_cmd_t *cmd)
{
    ngx_edge_redis_server_t  *server;

    server = cmd->conn->server;

    ngx_edge_redis_stat(server, server->st_inflight, -1);
    ngx_edge_redis_detach(cmd);

    /* back to its own connection's slots: one redirected to another
     * node's connection does not move the in-flight bound there */
    cmd->conn = cmd->home;
    cmd->redirects = 0;
    cmd->copy_len = 0;

    if (cmd->big) {
        ngx_free(cmd->big);
        cmd->big = NULL;
    }

    ngx_queue_insert_head(&cmd->home->free, &cmd->queue);
}


static void
ngx_edge_redis_stat(ngx_edge_redis_server_t *server, ngx_edge_stats_id_t id,
    int64_t delta)
{
    if (server->stats && id != NGX_EDGE_STATS_NONE) {
        ngx_edge_stats_add(server->stats, id, delta);
    }
}


/*
 * Connection health: when a connection is given up, how soon the next one
 * is tried, and what is logged.
 *
 *   - A connection counts as recovered only once its handshake (AUTH,
 *     SELECT, SCRIPT LOAD) completed: only then is the backoff reset and
 *     the recovery logged.  A wrong password therefore retries at 100 ms,
 *     200 ms, ... up to 3 s, never in a loop.  (Items may be sent as soon
 *     as TCP connects: they follow the handshake in the pipeline.)
 *   - Silence: when an item times out and no reply of any kind arrived
 *     on the connection since it was queued, Redis has answered nothing
 *     for a whole "timeout=" while work was waiting.  If nothing arrives
 *     either until NGX_EDGE_REDIS_SILENCE_MIN (1 s) after the item was
 *     queued (at once when "timeout=" is that long), the connection is
 *     taken as gone (a blackhole, a failover behind a virtual IP, a
 *     stopped process): it is dropped and reconnected.  A Redis that is
 *     merely slow keeps answering older commands and is kept; a stall
 *     shorter than 1 s drops nothing.
 *   - Reconnects take the server's resolved addresses in turn.
 *   - Failure lines, the lines of dropped connections and recovery lines
 *     each pass a gate: one line per 5 s per server, which says how many
 *     it stood for.
 */

static void
ngx_edge_redis_handshake_done(ngx_edge_redis_conn_t *conn)
{
    ngx_uint_t  suppressed;

    if (conn->state != NGX_EDGE_REDIS_READY) {
        ngx_edge_redis_stat(conn->server, conn->server->st_connected, 1);
    }

    conn->state = NGX_EDGE_REDIS_READY;
    conn->backoff = 0;

    if (conn->server->node) {
        ngx_edge_redis_cluster_node_up(conn);
    }

    if (!conn->failing) {
        return;
    }

    conn->failing = 0;

    if (!ngx_edge_log_gate_open(&conn->connect_gate,
                                NGX_EDGE_REDIS_LOG_INTERVAL, &suppressed))
    {
        return;
    }

    if (suppressed) {
        ngx_log_error(NGX_LOG_NOTICE, conn->log, 0,
                      "redis \"%V\" at %V: connected again "
                      "(and %ui more times in the last %Ms)",
                      &conn->server->name, &conn->server->address,
                      suppressed,
                      (ngx_msec_t) NGX_EDGE_REDIS_LOG_INTERVAL / 1000);

    } else {
        ngx_log_error(NGX_LOG_NOTICE, conn->log, 0,
                      "redis \"%V\" at %V: connected again",
                      &conn->server->name, &conn->server->address);
    }
}


/* an item timed out: nothing received since it was queued is the start
 * of a silence, which must last NGX_EDGE_REDIS_SILENCE_MIN at least */

static void
ngx_edge_redis_check_silence(ngx_edge_redis_cmd_t *cmd)
{
    ngx_msec_t              timeout;
    ngx_edge_redis_conn_t  *conn;

    conn = cmd->conn;
    timeout = conn->server->timeout;

    if (conn->ac == NULL || conn->replies != cmd->replies
        || conn->silence_timer.timer_set)
    {
        return;
    }

    conn->silence_replies = cmd->replies;

    if (timeout >= NGX_EDGE_REDIS_SILENCE_MIN) {
        ngx_edge_redis_silence_handler(&conn->silence_timer);
        return;
    }

    ngx_add_timer(&conn->silence_timer, NGX_EDGE_REDIS_SILENCE_MIN - timeout);
}


static void
ngx_edge_redis_silence_handler(ngx_event_t *ev)
{
    ngx_edge_redis_conn_t  *conn = ev->data;

    ngx_uint_t  suppressed;

    if (conn->ac == NULL || conn->replies != conn->silence_replies) {
        return;
    }

    conn->failing = 1;

    /* a gate of its own: this line must not hide behind the timeouts */
    if (ngx_edge_log_gate_open(&conn->drop_gate, NGX_EDGE_REDIS_LOG_INTERVAL,
                               &suppressed))
    {
        ngx_log_error(NGX_LOG_ERR, conn->log, 0,
                      "redis \"%V\" at %V: nothing received for %M ms while "
                      "commands waited: closing the connection%s",
                      &conn->server->name, &conn->server->address,
                      ngx_max(conn->server->timeout,
                              NGX_EDGE_REDIS_SILENCE_MIN),
                      suppressed ? " (and earlier ones in the last 5s)"
                                 : "");
    }

    ngx_edge_redis_drop(conn);
}


/* Gives up a connection now: every item on it gets NGX_ERROR (hiredis runs
 * the callbacks it holds, the cleanup hook fails the unsent ones), and a
 * reconnect is scheduled.  Not called from inside a hiredis callback. */

static void
ngx_edge_redis_drop(ngx_edge_redis_conn_t *conn)
{
    conn->dropping = 1;
    redisAsyncFree(conn->ac);
    conn->dropping = 0;

    ngx_edge_redis_schedule_reconnect(conn);
}


static void
ngx_edge_redis_schedule_reconnect(ngx_edge_redis_conn_t *conn)
{
    ngx_edge_redis_server_t  *server;

    server = conn->server;

    conn->state = NGX_EDGE_REDIS_DISCONNECTED;
    conn->failing = 1;

    if (conn->exiting || conn->parked || ngx_exiting
        || conn->reconnect_timer.timer_set)
    {
        return;
    }

    if (server->nhosts > 1) {
        conn->addr = (conn->addr + 1) % server->nhosts;
    }

    conn->backoff = conn->backoff ? ngx_min(conn->backoff * 2,
                                            NGX_EDGE_REDIS_BACKOFF_MAX)
                                  : NGX_EDGE_REDIS_BACKOFF_MIN;

    ngx_add_timer(&conn->reconnect_timer, conn->backoff);
}


/* One line per interval and server, not one per request: when Redis is
 * down every request would otherwise log the same failure. */

static void
ngx_edge_redis_log_failure(ngx_edge_redis_conn_t *conn, const char *fmt, ...)
{
    u_char                   *p;
    va_list                   args;
    ngx_str_t                 addr;
    ngx_uint_t                suppressed;
    ngx_edge_redis_server_t  *server;
    u_char                    msg[NGX_MAX_ERROR_STR];

    conn->failing = 1;

    if (!ngx_edge_log_gate_open(&conn->fail_gate, NGX_EDGE_REDIS_LOG_INTERVAL,
                                &suppressed))
    {
        return;
    }

    server = conn->server;

    va_start(args, fmt);
    p = ngx_vslprintf(msg, msg + sizeof(msg), fmt, args);
    va_end(args);

    /* with several addresses, or a primary named by a Sentinel, the one
     * in use */
    if (server->nhosts > 1) {
        addr = server->hosts[conn->addr];

    } else if (server->nsentinels) {
        addr = conn->master;

    } else {
        ngx_str_null(&addr);
    }

    if (suppressed) {
        p = ngx_slprintf(p, msg + sizeof(msg),
                         " (and %ui more failures in the last %Ms)",
                         suppressed,
                         (ngx_msec_t) NGX_EDGE_REDIS_LOG_INTERVAL / 1000);
    }

    ngx_log_error(NGX_LOG_ERR, conn->log, 0, "redis \"%V\" at %V%s%V%s: %*s",
                  &server->name, &server->address,
                  addr.len ? " (" : "", &addr, addr.len ? ")" : "",
                  p - msg, msg);
}


/*
 * Sentinel.  Each worker keeps two links to the Sentinels of a server
 * given by "sentinel=" and "master=":
 *
 *   - asking: connect to a Sentinel, AUTH (sentinel_password=), "SENTINEL
 *     get-master-addr-by-name", close.  The whole exchange has
 *     "connect_timeout="; on failure the next Sentinel is asked at once,
 *     and when every one of them failed in a round, the next round waits
 *     for the connection's reconnect backoff.  It runs at start and
 *     before every reconnect to the primary: a primary that is lost, silent
 *     or answers READONLY or MASTERDOWN (demoted) is asked for again.
 *   - subscribing: one connection to a Sentinel subscribed to
 *     +switch-master.  A switch of our master drops the connection to the
 *     old primary and connects to the new one at once.  Lost, it moves to
 *     the next Sentinel with a backoff of its own (100 ms to 3 s).
 *
 * The primary's handshake ends with ROLE: a server that is not a master
 * (a Sentinel's stale answer) is dropped and the Sentinels asked again.
 * Addresses from a Sentinel must be numeric (no blocking resolver in a
 * worker); Sentinels report IP addresses unless resolve-hostnames is on.
 */

static void ngx_edge_redis_ask_next(ngx_event_t *ev);
static void ngx_edge_redis_link_timeout(ngx_event_t *ev);
static void ngx_edge_redis_sub_retry(ngx_event_t *ev);


static void
ngx_edge_redis_link_log(ngx_edge_redis_link_t *link, ngx_uint_t level,
    const char *fmt, ...)
{
    u_char                   *p;
    va_list                   args;
    ngx_uint_t                suppressed;
    ngx_edge_redis_addr_t    *sentinel;
    ngx_edge_redis_server_t  *server;
    u_char                    msg[NGX_MAX_ERROR_STR];

    /* one line per interval and link: with the Sentinels down, every
     * round of questions would log */
    if (!ngx_edge_log_gate_open(&link->gate, NGX_EDGE_REDIS_LOG_INTERVAL,
                                &suppressed))
    {
        return;
    }

    server = link->conn->server;
    sentinel = &server->sentinels[link->index];

    va_start(args, fmt);
    p = ngx_vslprintf(msg, msg + sizeof(msg), fmt, args);
    va_end(args);

    if (suppressed) {
        p = ngx_slprintf(p, msg + sizeof(msg),
                         " (and %ui more failures in the last %Ms)",
                         suppressed,
                         (ngx_msec_t) NGX_EDGE_REDIS_LOG_INTERVAL / 1000);
    }

    ngx_log_error(level, link->conn->log, 0,
                  "redis \"%V\" at %V: Sentinel %V:%d%s: %*s",
                  &server->name, &server->address, &sentinel->host,
                  sentinel->port, link->subscribe ? " (subscription)" : "",
                  p - msg, msg);
}


/* the hiredis event hooks of a link (see the connection's own above) */

static void
ngx_edge_redis_link_add_read(void *privdata)
{
    ngx_edge_redis_link_t  *link = privdata;

    if (link->c && !link->c->read->active) {
        (void) ngx_add_event(link->c->read, NGX_READ_EVENT, NGX_LEVEL_EVENT);
    }
}


static void
ngx_edge_redis_link_del_read(void *privdata)
{
    ngx_edge_redis_link_t  *link = privdata;

    if (link->c && link->c->read->active) {
        (void) ngx_del_event(link->c->read, NGX_READ_EVENT, 0);
    }
}


static void
ngx_edge_redis_link_add_write(void *privdata)
{
    ngx_edge_redis_link_t  *link = privdata;

    if (link->c && !link->c->write->active) {
        (void) ngx_add_event(link->c->write, NGX_WRITE_EVENT,
                             NGX_LEVEL_EVENT);
    }
}


static void
ngx_edge_redis_link_del_write(void *privdata)
{
    ngx_edge_redis_link_t  *link = privdata;

    if (link->c && link->c->write->active) {
        (void) ngx_del_event(link->c->write, NGX_WRITE_EVENT, 0);
    }
}


static void
ngx_edge_redis_link_cleanup(void *privdata)
{
    ngx_edge_redis_link_t  *link = privdata;

    ngx_connection_t  *c;

    c = link->c;

    link->c = NULL;
    link->ac = NULL;

    if (link->timer.timer_set) {
        ngx_del_timer(&link->timer);
    }

    if (c) {
        ngx_edge_conn_release(c);
    }
}


/* closes the link from outside hiredis's callbacks; what follows is the
 * caller's (the callbacks see an outcome that is no longer pending) */

static void
ngx_edge_redis_link_close(ngx_edge_redis_link_t *link)
{
    if (link->outcome == NGX_EDGE_REDIS_ASK_PENDING) {
        link->outcome = NGX_EDGE_REDIS_ASK_ABORTED;
    }

    if (link->ac) {
        redisAsyncFree(link->ac);
    }

    if (link->timer.timer_set) {
        ngx_del_timer(&link->timer);
    }
}


static void
ngx_edge_redis_link_read(ngx_event_t *rev)
{
    ngx_connection_t       *c = rev->data;
    ngx_edge_redis_link_t  *link = c->data;

    if (c->close) {
        /* a graceful shutdown: nothing waits on a Sentinel */
        ngx_edge_redis_link_close(link);
        return;
    }

    if (link->ac) {
        redisAsyncHandleRead(link->ac);
    }
}


static void
ngx_edge_redis_link_write(ngx_event_t *wev)
{
    ngx_connection_t       *c = wev->data;
    ngx_edge_redis_link_t  *link = c->data;

    if (link->ac) {
        redisAsyncHandleWrite(link->ac);
    }
}


static void
ngx_edge_redis_link_auth_reply(redisAsyncContext *ac, void *r,
    void *privdata)
{
    redisReply             *reply = r;
    ngx_edge_redis_link_t  *link = privdata;

    if (reply == NULL || reply->type != REDIS_REPLY_ERROR) {
        return;
    }

    ngx_edge_redis_link_log(link, NGX_LOG_ERR,
                            "AUTH failed (see sentinel_user= and "
                            "sentinel_password=): %*s",
                            (size_t) reply->len, reply->str);

    if (!link->subscribe && link->outcome == NGX_EDGE_REDIS_ASK_PENDING) {
        link->outcome = NGX_EDGE_REDIS_ASK_FAILED;
        ngx_post_event(&link->next, &ngx_posted_events);
    }

    redisAsyncDisconnect(ac);
}


static void ngx_edge_redis_link_on_connect(const redisAsyncContext *ac,
    int status);
static void ngx_edge_redis_link_on_disconnect(const redisAsyncContext *ac,
    int status);


/* a connection to the link's Sentinel, AUTH queued; NGX_ERROR logged */

static ngx_int_t
ngx_edge_redis_link_open(ngx_edge_redis_link_t *link)
{
    redisAsyncContext        *ac;
    ngx_connection_t         *c;
    ngx_edge_redis_addr_t    *sentinel;
    ngx_edge_redis_server_t  *server;

    server = link->conn->server;
    sentinel = &server->sentinels[link->index];

    ac = redisAsyncConnect((char *) sentinel->host.data, sentinel->port);
    if (ac == NULL) {
        ngx_edge_redis_link_log(link, NGX_LOG_ERR,
                                "cannot allocate a context");
        return NGX_ERROR;
    }

    if (ac->err) {
        ngx_edge_redis_link_log(link, NGX_LOG_ERR, "connect failed: %s",
                                ac->errstr);
        redisAsyncFree(ac);
        return NGX_ERROR;
    }

    c = ngx_edge_conn_wrap(ac->c.fd, link->conn->log, link,
                           ngx_edge_redis_link_read,
                           ngx_edge_redis_link_write);
    if (c == NULL) {
        redisAsyncFree(ac);
        return NGX_ERROR;
    }

    c->idle = 1;

    link->ac = ac;
    link->c = c;

    ac->data = link;
    ac->ev.data = link;
    ac->ev.addRead = ngx_edge_redis_link_add_read;
    ac->ev.delRead = ngx_edge_redis_link_del_read;
    ac->ev.addWrite = ngx_edge_redis_link_add_write;
    ac->ev.delWrite = ngx_edge_redis_link_del_write;
    ac->ev.cleanup = ngx_edge_redis_link_cleanup;

    redisAsyncSetConnectCallback(ac, ngx_edge_redis_link_on_connect);
    redisAsyncSetDisconnectCallback(ac, ngx_edge_redis_link_on_disconnect);

    if (server->sentinel_user.data) {
        /* an ACL user of the Sentinel's ("user" lines in sentinel.conf) */
        (void) redisAsyncCommand(ac, ngx_edge_redis_link_auth_reply, link,
                                 "AUTH %b %b", server->sentinel_user.data,
                                 server->sentinel_user.len,
                                 server->sentinel_password.data,
                                 server->sentinel_password.len);

    } else if (server->sentinel_password.data) {
        (void) redisAsyncCommand(ac, ngx_edge_redis_link_auth_reply, link,
                                 "AUTH %b", server->sentinel_password.data,
                                 server->sentinel_password.len);
    }

    ngx_add_timer(&link->timer, server->connect_timeout);

    return NGX_OK;
}


/* the subscription's next attempt, at the next Sentinel, after its
 * backoff */

static void
ngx_edge_redis_sub_schedule(ngx_edge_redis_link_t *link)
{
    ngx_edge_redis_conn_t  *conn;

    conn = link->conn;

    if (conn->exiting || ngx_exiting || link->next.timer_set) {
        return;
    }

    link->index = (link->index + 1) % conn->server->nsentinels;
    link->backoff = link->backoff ? ngx_min(link->backoff * 2,
                                            NGX_EDGE_REDIS_BACKOFF_MAX)
                                  : NGX_EDGE_REDIS_BACKOFF_MIN;

    ngx_add_timer(&link->next, link->backoff);
}


static void
ngx_edge_redis_link_on_connect(const redisAsyncContext *ac, int status)
{
    ngx_edge_redis_link_t  *link = ac->data;

    if (status == REDIS_OK) {
        return;
    }

    /* hiredis frees the context after this callback */

    if (link->outcome != NGX_EDGE_REDIS_ASK_PENDING
        || link->conn->exiting)
    {
        return;
    }

    ngx_edge_redis_link_log(link, NGX_LOG_ERR, "connect failed: %s",
                            ac->errstr);

    if (link->subscribe) {
        ngx_edge_redis_sub_schedule(link);
        return;
    }

    link->outcome = NGX_EDGE_REDIS_ASK_FAILED;
    ngx_post_event(&link->next, &ngx_posted_events);
}


static void
ngx_edge_redis_link_on_disconnect(const redisAsyncContext *ac, int status)
{
    ngx_edge_redis_link_t  *link = ac->data;

    if (link->outcome != NGX_EDGE_REDIS_ASK_PENDING
        || link->conn->exiting)
    {
        return;
    }

    ngx_edge_redis_link_log(link, NGX_LOG_ERR, "connection lost: %s",
                            status == REDIS_OK ? "closed"
                                               : (char *) ac->errstr);

    if (link->subscribe) {
        ngx_edge_redis_sub_schedule(link);
        return;
    }

    link->outcome = NGX_EDGE_REDIS_ASK_FAILED;
    ngx_post_event(&link->next, &ngx_posted_events);
}


static void
ngx_edge_redis_link_timeout(ngx_event_t *ev)
{
    ngx_edge_redis_link_t  *link = ev->data;

    if (link->ac == NULL) {
        return;
    }

    ngx_edge_redis_link_log(link, NGX_LOG_ERR, "no answer within %M ms",
                            link->conn->server->connect_timeout);

    if (link->subscribe) {
        ngx_edge_redis_link_close(link);
        link->outcome = NGX_EDGE_REDIS_ASK_PENDING;
        ngx_edge_redis_sub_schedule(link);
        return;
    }

    ngx_edge_redis_link_close(link);
    link->outcome = NGX_EDGE_REDIS_ASK_FAILED;
    ngx_post_event(&link->next, &ngx_posted_events);
}


/* a numeric address, as a worker can connect to without resolving */

static ngx_int_t
ngx_edge_redis_numeric_host(u_char *host, size_t len)
{
#if (NGX_HAVE_INET6)
    u_char  addr6[16];
#endif

    if (ngx_inet_addr(host, len) != INADDR_NONE) {
        return NGX_OK;
    }

#if (NGX_HAVE_INET6)
    if (ngx_inet6_addr(host, len, addr6) == NGX_OK) {
        return NGX_OK;
    }
#endif

    return NGX_ERROR;
}


/* the primary in use becomes host:port: one line per change */

static ngx_int_t
ngx_edge_redis_set_master(ngx_edge_redis_conn_t *conn, u_char *host,
    size_t len, ngx_int_t port, const char *source)
{
    u_char  *p, text[NGX_SOCKADDR_STRLEN + 8];

    if (len == 0 || len > NGX_SOCKADDR_STRLEN
        || ngx_edge_redis_numeric_host(host, len) != NGX_OK
        || port <= 0 || port > 65535)
    {
        ngx_log_error(NGX_LOG_ERR, conn->log, 0,
                      "redis \"%V\" at %V: %s named the primary \"%*s\" "
                      "port %i, not a numeric address (resolve-hostnames "
                      "is not supported)", &conn->server->name,
                      &conn->server->address, source, len, host, port);
        return NGX_ERROR;
    }

    if (conn->master_port == port
        && ngx_strlen(conn->master_host) == len
        && ngx_strncmp(conn->master_host, host, len) == 0)
    {
        return NGX_OK;
    }

    p = ngx_sprintf(text, "%*s:%i", len, host, port);

    if (conn->master.len) {
        ngx_log_error(NGX_LOG_NOTICE, conn->log, 0,
                      "redis \"%V\" at %V: the primary moved from %V to "
                      "%*s (%s)", &conn->server->name,
                      &conn->server->address, &conn->master,
                      (size_t) (p - text), text, source);

    } else {
        ngx_log_error(NGX_LOG_INFO, conn->log, 0,
                      "redis \"%V\" at %V: the primary is %*s (%s)",
                      &conn->server->name, &conn->server->address,
                      (size_t) (p - text), text, source);
    }

    ngx_memcpy(conn->master_text, text, p - text);
    p = conn->master_text + (p - text);

    ngx_memcpy(conn->master_host, host, len);
    conn->master_host[len] = '\0';
    conn->master_port = port;
    conn->master.data = conn->master_text;
    conn->master.len = p - conn->master_text;

    return NGX_OK;
}


/* asking */

static void
ngx_edge_redis_ask_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    redisReply             *reply = r;
    ngx_edge_redis_link_t  *link = privdata;

    ngx_int_t     port;
    redisReply  **e;

    if (reply == NULL || link->outcome != NGX_EDGE_REDIS_ASK_PENDING) {
        return;
    }

    link->outcome = NGX_EDGE_REDIS_ASK_FAILED;
    e = reply->element;

    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2
        && e[0]->type == REDIS_REPLY_STRING
        && e[1]->type == REDIS_REPLY_STRING
        && e[0]->len <= NGX_SOCKADDR_STRLEN)
    {
        port = ngx_atoi((u_char *) e[1]->str, e[1]->len);

        ngx_memcpy(link->host, e[0]->str, e[0]->len);
        link->host[e[0]->len] = '\0';
        link->port = (port > 0 && port <= 65535) ? port : 0;
        link->outcome = NGX_EDGE_REDIS_ASK_FOUND;

    } else if (reply->type == REDIS_REPLY_NIL) {
        ngx_edge_redis_link_log(link, NGX_LOG_ERR,
                                "no master \"%V\" is known",
                                &link->conn->server->master_name);

    } else if (reply->type == REDIS_REPLY_ERROR) {
        ngx_edge_redis_link_log(link, NGX_LOG_ERR, "error reply: %*s",
                                (size_t) reply->len, reply->str);

    } else {
        ngx_edge_redis_link_log(link, NGX_LOG_ERR,
                                "a reply that is not an address");
    }

    if (link->timer.timer_set) {
        ngx_del_timer(&link->timer);
    }

    ngx_post_event(&link->next, &ngx_posted_events);

    /* closed once this callback returns */
    redisAsyncDisconnect(ac);
}


static void
ngx_edge_redis_sentinel_ask(ngx_edge_redis_conn_t *conn)
{
    ngx_edge_redis_link_t    *link;
    ngx_edge_redis_server_t  *server;

    link = conn->ask;
    server = conn->server;

    if (link->ac || link->next.posted || conn->exiting || ngx_exiting) {
        /* a question is under way */
        return;
    }

    link->outcome = NGX_EDGE_REDIS_ASK_PENDING;

    if (ngx_edge_redis_link_open(link) != NGX_OK
        || redisAsyncCommand(link->ac, ngx_edge_redis_ask_reply, link,
                             "SENTINEL get-master-addr-by-name %b",
                             server->master_name.data,
                             server->master_name.len)
           != REDIS_OK)
    {
        if (link->ac) {
            ngx_edge_redis_link_close(link);
        }

        link->outcome = NGX_EDGE_REDIS_ASK_FAILED;
        ngx_post_event(&link->next, &ngx_posted_events);
    }
}


/* posted once a question ended, outside hiredis's callbacks: connect to
 * the primary found, or ask the next Sentinel, or, the round over, wait
 * for the reconnect backoff */

static void
ngx_edge_redis_ask_next(ngx_event_t *ev)
{
    ngx_edge_redis_link_t  *link = ev->data;

    ngx_edge_redis_conn_t    *conn;
    ngx_edge_redis_server_t  *server;

    conn = link->conn;
    server = conn->server;

    if (link->ac) {
        /* an AUTH failure waits for the reply behind it: not any more */
        ngx_edge_redis_link_close(link);
    }

    if (conn->exiting || ngx_exiting
        || link->outcome == NGX_EDGE_REDIS_ASK_ABORTED)
    {
        return;
    }

    if (link->outcome == NGX_EDGE_REDIS_ASK_FOUND
        && ngx_edge_redis_set_master(conn, link->host,
                                     ngx_strlen(link->host), link->port,
                                     "asked")
           == NGX_OK)
    {
        link->tried = 0;

        if (conn->ac == NULL) {
            if (conn->reconnect_timer.timer_set) {
                ngx_del_timer(&conn->reconnect_timer);
            }

            ngx_edge_redis_connect(conn);
        }

        return;
    }

    link->index = (link->index + 1) % server->nsentinels;

    if (++link->tried < server->nsentinels) {
        ngx_edge_redis_sentinel_ask(conn);
        return;
    }

    /* every Sentinel failed: the next round after the backoff */
    link->tried = 0;
    ngx_edge_redis_log_failure(conn, "no Sentinel named the primary");
    ngx_edge_redis_schedule_reconnect(conn);
}


/* the primary's ROLE, the handshake's last reply */

static void
ngx_edge_redis_role_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    redisReply             *reply = r;
    ngx_edge_redis_conn_t  *conn = privdata;

    redisReply  *role;

    if (reply == NULL) {
        return;
    }

    conn->replies++;

    if (conn->state != NGX_EDGE_REDIS_HANDSHAKE || conn->handshake == 0) {
        return;
    }

    role = (reply->type == REDIS_REPLY_ARRAY && reply->elements > 0)
           ? reply->element[0] : NULL;

    if (role && role->type == REDIS_REPLY_STRING && role->len == 6
        && ngx_strncmp(role->str, "master", 6) == 0)
    {
        if (--conn->handshake == 0) {
            ngx_edge_redis_handshake_done(conn);
        }

        return;
    }

    conn->handshake = 0;
    ngx_edge_redis_log_failure(conn, "not a master (ROLE %*s): asking the "
                               "Sentinels again",
                               role && role->type == REDIS_REPLY_STRING
                               ? (size_t) role->len : (size_t) 1,
                               role && role->type == REDIS_REPLY_STRING
                               ? role->str : "?");
    conn->dropping = 1;
    redisAsyncDisconnect(ac);
}


/* an error reply saying the server is no longer a writable primary (the
 * whole reply, or an item's element of a batch's): the replies still due
 * arrive, then the connection closes and the Sentinels are asked again */

static void
ngx_edge_redis_check_demoted(ngx_edge_redis_conn_t *conn, redisReply *reply)
{
    u_char  *p;
    size_t   len;

    if (reply->type != REDIS_REPLY_ERROR || conn->server->nsentinels == 0
        || conn->ac == NULL
        || (conn->ac->c.flags & (REDIS_DISCONNECTING|REDIS_FREEING)))
    {
        return;
    }

    p = (u_char *) reply->str;
    len = reply->len;

    /* a script's pcall() reports the error as "ERR <error>" */
    if (len > 4 && ngx_strncmp(p, "ERR ", 4) == 0) {
        p += 4;
        len -= 4;
    }

    if (!(len >= 8 && ngx_strncmp(p, "READONLY", 8) == 0)
        && !(len >= 10 && ngx_strncmp(p, "MASTERDOWN", 10) == 0))
    {
        return;
    }

    ngx_log_error(NGX_LOG_WARN, conn->log, 0,
                  "redis \"%V\" at %V (%V): no longer the primary (%*s): "
                  "asking the Sentinels again", &conn->server->name,
                  &conn->server->address, &conn->master,
                  (size_t) (p[0] == 'R' ? 8 : 10), p);

    conn->failing = 1;
    conn->dropping = 1;
    redisAsyncDisconnect(conn->ac);
}


/* subscribing */

static void
ngx_edge_redis_sub_message(redisAsyncContext *ac, void *r, void *privdata)
{
    redisReply             *reply = r;
    ngx_edge_redis_link_t  *link = privdata;

    u_char                   *p, *last, *f[5];
    size_t                    len[5];
    ngx_int_t                 port;
    ngx_uint_t                i;
    redisReply              **e;
    ngx_edge_redis_conn_t    *conn;
    ngx_edge_redis_server_t  *server;

    conn = link->conn;
    server = conn->server;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements != 3)
    {
        return;
    }

    e = reply->element;

    if (e[0]->type != REDIS_REPLY_STRING) {
        return;
    }

    if (e[0]->len == 9 && ngx_strncmp(e[0]->str, "subscribe", 9) == 0) {
        /* subscribed: this Sentinel answers */
        if (link->timer.timer_set) {
            ngx_del_timer(&link->timer);
        }

        link->backoff = 0;
        return;
    }

    if (e[0]->len != 7 || ngx_strncmp(e[0]->str, "message", 7) != 0
        || e[2]->type != REDIS_REPLY_STRING)
    {
        return;
    }

    /* "<master name> <old ip> <old port> <new ip> <new port>" */
    p = (u_char *) e[2]->str;
    last = p + e[2]->len;

    for (i = 0; i < 5; i++) {
        while (p < last && *p == ' ') {
            p++;
        }

        f[i] = p;

        while (p < last && *p != ' ') {
            p++;
        }

        len[i] = p - f[i];

        if (len[i] == 0) {
            return;
        }
    }

    if (len[0] != server->master_name.len
        || ngx_strncmp(f[0], server->master_name.data, len[0]) != 0)
    {
        return;
    }

    port = ngx_atoi(f[4], len[4]);

    if (ngx_edge_redis_set_master(conn, f[3], len[3], port,
                                  "+switch-master")
        != NGX_OK)
    {
        return;
    }

    if (conn->exiting || ngx_exiting) {
        return;
    }

    /* connect to the new primary now: a question under way is moot, and
     * the items on the old one get NGX_ERROR */

    if (conn->ask->next.posted) {
        ngx_delete_posted_event(&conn->ask->next);
    }

    ngx_edge_redis_link_close(conn->ask);
    conn->ask->tried = 0;

    if (conn->ac) {
        if (conn->ac->c.tcp.host
            && ngx_strcmp(conn->ac->c.tcp.host, conn->master_host) == 0
            && conn->ac->c.tcp.port == conn->master_port)
        {
            /* already there: asked after the connection was lost */
            return;
        }

        ngx_edge_redis_drop(conn);
    }

    if (conn->reconnect_timer.timer_set) {
        ngx_del_timer(&conn->reconnect_timer);
    }

    ngx_edge_redis_connect(conn);
}


static void
ngx_edge_redis_sentinel_subscribe(ngx_edge_redis_conn_t *conn)
{
    ngx_edge_redis_link_t  *link;

    link = conn->sub;

    if (link->ac || conn->exiting || ngx_exiting) {
        return;
    }

    link->outcome = NGX_EDGE_REDIS_ASK_PENDING;

    if (ngx_edge_redis_link_open(link) != NGX_OK) {
        ngx_edge_redis_sub_schedule(link);
        return;
    }

    if (redisAsyncCommand(link->ac, ngx_edge_redis_sub_message, link,
                          "SUBSCRIBE +switch-master")
        != REDIS_OK)
    {
        ngx_edge_redis_link_close(link);
        link->outcome = NGX_EDGE_REDIS_ASK_PENDING;
        ngx_edge_redis_sub_schedule(link);
    }
}


static void
ngx_edge_redis_sub_retry(ngx_event_t *ev)
{
    ngx_edge_redis_link_t  *link = ev->data;

    ngx_edge_redis_sentinel_subscribe(link->conn);
}


/* worker life */

static ngx_edge_redis_link_t *
ngx_edge_redis_link_create(ngx_cycle_t *cycle, ngx_edge_redis_conn_t *conn,
    ngx_flag_t subscribe)
{
    ngx_edge_redis_link_t  *link;

    link = ngx_pcalloc(cycle->pool, sizeof(ngx_edge_redis_link_t));
    if (link == NULL) {
        return NULL;
    }

    link->conn = conn;
    link->subscribe = subscribe;

    /* the worker's Sentinels are taken in turn from a different one in
     * each worker: a dead first one costs each worker a timeout once */
    link->index = (ngx_worker + subscribe) % conn->server->nsentinels;

    link->timer.handler = ngx_edge_redis_link_timeout;
    link->timer.data = link;
    link->timer.log = cycle->log;
    link->timer.cancelable = 1;

    link->next.handler = subscribe ? ngx_edge_redis_sub_retry
                                   : ngx_edge_redis_ask_next;
    link->next.data = link;
    link->next.log = cycle->log;
    link->next.cancelable = 1;

    return link;
}


static ngx_int_t
ngx_edge_redis_sentinel_init(ngx_cycle_t *cycle, ngx_edge_redis_conn_t *conn)
{
    conn->ask = ngx_edge_redis_link_create(cycle, conn, 0);
    conn->sub = ngx_edge_redis_link_create(cycle, conn, 1);

    if (conn->ask == NULL || conn->sub == NULL) {
        return NGX_ERROR;
    }

    ngx_edge_redis_sentinel_subscribe(conn);
    ngx_edge_redis_sentinel_ask(conn);

    return NGX_OK;
}


static void
ngx_edge_redis_sentinel_exit(ngx_edge_redis_conn_t *conn)
{
    ngx_edge_redis_link_t  *links[2];
    ngx_uint_t              i;

    links[0] = conn->ask;
    links[1] = conn->sub;

    for (i = 0; i < 2; i++) {
        if (links[i] == NULL) {
            continue;
        }

        if (links[i]->next.posted) {
            ngx_delete_posted_event(&links[i]->next);
        }

        if (links[i]->next.timer_set) {
            ngx_del_timer(&links[i]->next);
        }

        ngx_edge_redis_link_close(links[i]);
    }
}


/*
 * Redis Cluster.  The worker's nodes are servers of their own (a copy of
 * the configured one with one address), each with the connection, slots
 * and batching of any server; the configured server only routes.  A node
 * is added when CLUSTER SLOTS, MOVED or ASK names it, and kept for the
 * worker's life (at most NGX_EDGE_REDIS_CLUSTER_NODES).
 */

static void ngx_edge_redis_cluster_ask(ngx_edge_redis_cluster_t *cl);
static void ngx_edge_redis_cluster_prune(ngx_event_t *ev);
static void ngx_edge_redis_cluster_unpark(ngx_edge_redis_cluster_t *cl,
    ngx_uint_t i);


/* CRC16-CCITT (XMODEM): polynomial 0x1021, initial value 0, no reflection,
 * as Redis Cluster hashes keys */

static ngx_uint_t
ngx_edge_redis_crc16(const u_char *p, size_t len)
{
    ngx_uint_t  i, crc;

    crc = 0;

    while (len--) {
        crc ^= (ngx_uint_t) *p++ << 8;

        for (i = 0; i < 8; i++) {
            crc = (crc & 0x8000) ? ((crc << 1) ^ 0x1021) : (crc << 1);
        }

        crc &= 0xffff;
    }

    return crc;
}


/* the hash slot of a key: only its {hash tag} counts when it has one
 * (the first "{" and the first "}" after it, with something between) */

static ngx_uint_t
ngx_edge_redis_key_slot(const u_char *key, size_t len)
{
    const u_char  *open, *close, *last;

    last = key + len;

    open = ngx_strlchr((u_char *) key, (u_char *) last, '{');

    if (open) {
        close = ngx_strlchr((u_char *) open + 1, (u_char *) last, '}');

        if (close && close > open + 1) {
            key = open + 1;
            len = close - key;
        }
    }

    return ngx_edge_redis_crc16(key, len) & (NGX_EDGE_REDIS_CLUSTER_SLOTS - 1);
}


/* the node at host:port, added (and connected) when new; its index, or
 * NGX_ERROR */

static ngx_int_t
ngx_edge_redis_cluster_node(ngx_edge_redis_cluster_t *cl, u_char *host,
    size_t len, ngx_int_t port)
{
    u_char                   *p;
    ngx_uint_t                i;
    ngx_edge_redis_server_t  *node;

    for (i = 0; i < cl->nnodes; i++) {
        node = &cl->nodes[i];

        if (node->port == port && node->hosts[0].len == len
            && ngx_strncmp(node->hosts[0].data, host, len) == 0)
        {
            if (node->conn && node->conn->parked) {
                ngx_edge_redis_cluster_unpark(cl, i);
            }

            return i;
        }
    }

    if (cl->nnodes == NGX_EDGE_REDIS_CLUSTER_NODES
        || len == 0 || len > NGX_SOCKADDR_STRLEN
        || port <= 0 || port > 65535
        || ngx_edge_redis_numeric_host(host, len) != NGX_OK)
    {
        /* a name would need a blocking resolve in the worker */
        return NGX_ERROR;
    }

    node = &cl->nodes[cl->nnodes];

    *node = *cl->server;

    node->seeds = NULL;
    node->nseeds = 0;
    node->conn = NULL;

    /* a worker counts as connected to the cluster once, when its map is
     * known, not once per node */
    node->st_connected = NGX_EDGE_STATS_NONE;
    node->cluster = cl;
    node->node = 1;
    node->port = port;
    node->nhosts = 1;

    node->hosts = ngx_palloc(ngx_cycle->pool, sizeof(ngx_str_t));
    p = ngx_pnalloc(ngx_cycle->pool, 2 * (NGX_SOCKADDR_STRLEN + 8));
    if (node->hosts == NULL || p == NULL) {
        return NGX_ERROR;
    }

    node->hosts[0].data = p;
    node->hosts[0].len = len;
    p = ngx_cpymem(p, host, len);
    *p++ = '\0';

    /* what the log lines say the server is */
    node->address.data = p;
    node->address.len = ngx_sprintf(p, "%*s:%i", len, host, port) - p;

    if (ngx_edge_redis_init_worker((ngx_cycle_t *) ngx_cycle, node)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* the callers' holds of the cluster hold the new node too */
    for (i = 0; i < cl->holds; i++) {
        ngx_edge_redis_hold(node);
    }

    return cl->nnodes++;
}


static void
ngx_edge_redis_cluster_refresh_handler(ngx_event_t *ev)
{
    ngx_edge_redis_cluster_t  *cl = ev->data;

    cl->soon = 0;

    ngx_edge_redis_cluster_ask(cl);

    ngx_add_timer(&cl->refresh, NGX_EDGE_REDIS_CLUSTER_REFRESH);
}


static ngx_int_t
ngx_edge_redis_cluster_init(ngx_cycle_t *cycle,
    ngx_edge_redis_server_t *server)
{
    ngx_uint_t                 i;
    ngx_edge_redis_addr_t     *seed;
    ngx_edge_redis_cluster_t  *cl;

    cl = ngx_pcalloc(cycle->pool, sizeof(ngx_edge_redis_cluster_t));
    if (cl == NULL) {
        return NGX_ERROR;
    }

    cl->nodes = ngx_pcalloc(cycle->pool, NGX_EDGE_REDIS_CLUSTER_NODES
                                         * sizeof(ngx_edge_redis_server_t));
    if (cl->nodes == NULL) {
        return NGX_ERROR;
    }

    cl->server = server;
    server->cluster = cl;

    cl->refresh.handler = ngx_edge_redis_cluster_refresh_handler;
    cl->refresh.data = cl;
    cl->refresh.log = cycle->log;
    cl->refresh.cancelable = 1;

    seed = server->seeds;

    for (i = 0; i < server->nseeds; i++) {
        if (ngx_edge_redis_cluster_node(cl, seed[i].host.data,
                                        seed[i].host.len, seed[i].port)
            == NGX_ERROR)
        {
            return NGX_ERROR;
        }
    }

    cl->nseeds = cl->nnodes;

    cl->prune.handler = ngx_edge_redis_cluster_prune;
    cl->prune.data = cl;
    cl->prune.log = cycle->log;

    /* the first map is asked as soon as a seed's handshake completes */
    ngx_add_timer(&cl->refresh, NGX_EDGE_REDIS_CLUSTER_REFRESH);

    return NGX_OK;
}


static void
ngx_edge_redis_cluster_exit(ngx_edge_redis_server_t *server)
{
    ngx_uint_t                 i;
    ngx_edge_redis_cluster_t  *cl;

    cl = server->cluster;
    if (cl == NULL) {
        return;
    }

    /* the callbacks run by the nodes' exits must not ask again */
    cl->exiting = 1;

    if (cl->known) {
        ngx_edge_redis_stat(server, server->st_connected, -1);
    }

    if (cl->refresh.timer_set) {
        ngx_del_timer(&cl->refresh);
    }

    if (cl->prune.posted) {
        ngx_delete_posted_event(&cl->prune);
    }

    for (i = 0; i < cl->nnodes; i++) {
        ngx_edge_redis_exit_worker(&cl->nodes[i]);
    }

    server->cluster = NULL;
}


static void
ngx_edge_redis_cluster_node_up(ngx_edge_redis_conn_t *conn)
{
    ngx_edge_redis_cluster_t  *cl;

    cl = conn->server->cluster;

    if (!cl->known) {
        ngx_edge_redis_cluster_ask(cl);

    } else {
        /* a node back from a failure: its slots may have moved */
        ngx_edge_redis_cluster_refresh_soon(cl);
    }
}


static void
ngx_edge_redis_cluster_refresh_soon(ngx_edge_redis_cluster_t *cl)
{
    if (cl == NULL || cl->exiting || cl->soon) {
        return;
    }

    cl->soon = 1;
    ngx_add_timer(&cl->refresh, NGX_EDGE_REDIS_CLUSTER_SOON);
}


/*
 * After a new map: the nodes that serve no slot (they left the cluster,
 * or were demoted to replicas).  One seen so in two maps at least
 * NGX_EDGE_REDIS_CLUSTER_PRUNE apart (the second asked then), with
 * nothing waiting on it, has its connection closed and is not reconnected
 * (a departed node that is down would otherwise be retried, and logged,
 * for the worker's life).  Its index stays, and a map, MOVED or ASK
 * naming it again connects it again.
 * The seeds are kept: they are the way back into the cluster.
 */

static void
ngx_edge_redis_cluster_prune(ngx_event_t *ev)
{
    ngx_edge_redis_cluster_t  *cl = ev->data;

    ngx_uint_t                 i, slot, again;
    ngx_edge_redis_conn_t     *conn;
    ngx_edge_redis_server_t   *node;
    u_char                     owns[NGX_EDGE_REDIS_CLUSTER_NODES];

    if (cl->exiting) {
        return;
    }

    again = 0;

    ngx_memzero(owns, sizeof(owns));

    for (slot = 0; slot < NGX_EDGE_REDIS_CLUSTER_SLOTS; slot++) {
        if (cl->map[slot]) {
            owns[cl->map[slot] - 1] = 1;
        }
    }

    for (i = cl->nseeds; i < cl->nnodes; i++) {
        node = &cl->nodes[i];
        conn = node->conn;

        if (owns[i] || conn == NULL) {
            cl->unowned[i] = 0;
            continue;
        }

        if (conn->parked) {
            continue;
        }

        if (cl->unowned[i] == 0) {
            cl->unowned[i] = ngx_current_msec ? ngx_current_msec : 1;
            again = 1;
            continue;
        }

        if (ngx_current_msec - cl->unowned[i] < NGX_EDGE_REDIS_CLUSTER_PRUNE
            || conn->attached)
        {
            continue;
        }

        ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                      "redis \"%V\" at cluster: %V serves no slot since "
                      "%M ms: its connection is closed",
                      &cl->server->name, &node->address,
                      ngx_current_msec - cl->unowned[i]);

        conn->parked = 1;

        if (conn->reconnect_timer.timer_set) {
            ngx_del_timer(&conn->reconnect_timer);
        }

        if (conn->ac) {
            conn->dropping = 1;
            redisAsyncFree(conn->ac);
            conn->dropping = 0;
        }

        conn->state = NGX_EDGE_REDIS_DISCONNECTED;
        conn->failing = 0;
        conn->backoff = 0;
    }

    if (again
        && (!cl->refresh.timer_set
            || cl->refresh.timer.key
               > ngx_current_msec + NGX_EDGE_REDIS_CLUSTER_PRUNE))
    {
        /* the second map is asked as soon as it can tell */
        ngx_add_timer(&cl->refresh, NGX_EDGE_REDIS_CLUSTER_PRUNE);
    }
}


static void
ngx_edge_redis_cluster_unpark(ngx_edge_redis_cluster_t *cl, ngx_uint_t i)
{
    ngx_edge_redis_conn_t  *conn;

    conn = cl->nodes[i].conn;

    conn->parked = 0;
    cl->unowned[i] = 0;

    ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                  "redis \"%V\" at cluster: %V is named again: connecting",
                  &cl->server->name, &cl->nodes[i].address);

    if (!cl->exiting && !ngx_exiting && conn->ac == NULL) {
        ngx_edge_redis_connect(conn);
    }
}


static void
ngx_edge_redis_cluster_log(ngx_edge_redis_cluster_t *cl, const char *what,
    redisReply *reply)
{
    ngx_uint_t  suppressed;

    if (!ngx_edge_log_gate_open(&cl->gate, NGX_EDGE_REDIS_LOG_INTERVAL,
                                &suppressed))
    {
        return;
    }

    if (reply && reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "redis \"%V\" at cluster: %s: %*s (and %ui more "
                      "times in the last %Ms)", &cl->server->name, what,
                      (size_t) reply->len, reply->str, suppressed,
                      (ngx_msec_t) NGX_EDGE_REDIS_LOG_INTERVAL / 1000);
        return;
    }

    ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                  "redis \"%V\" at cluster: %s (and %ui more times in the "
                  "last %Ms)", &cl->server->name, what, suppressed,
                  (ngx_msec_t) NGX_EDGE_REDIS_LOG_INTERVAL / 1000);
}


/*
 * CLUSTER SLOTS: an array of [start, end, [host, port, ...], replicas...].
 * The whole reply is checked into a new map before it replaces the old
 * one; a slot no valid range covers has no node (its keys fail).
 */

static void
ngx_edge_redis_cluster_slots_reply(redisAsyncContext *ac, void *r,
    void *privdata)
{
    redisReply             *reply = r;
    ngx_edge_redis_conn_t  *conn = privdata;

    u_char                     *host;
    size_t                      len;
    ngx_int_t                   idx;
    ngx_uint_t                  i, start, end, bad;
    redisReply                 *range, *primary;
    ngx_edge_redis_cluster_t   *cl;
    uint8_t                     map[NGX_EDGE_REDIS_CLUSTER_SLOTS];

    cl = conn->server->cluster;
    cl->asking = 0;

    if (reply == NULL || cl->exiting) {
        return;
    }

    conn->replies++;

    if (reply->type != REDIS_REPLY_ARRAY) {
        ngx_edge_redis_cluster_log(cl, "CLUSTER SLOTS failed", reply);
        return;
    }

    ngx_memzero(map, sizeof(map));
    bad = 0;

    for (i = 0; i < reply->elements; i++) {
        range = reply->element[i];

        if (range->type != REDIS_REPLY_ARRAY || range->elements < 3
            || range->element[0]->type != REDIS_REPLY_INTEGER
            || range->element[1]->type != REDIS_REPLY_INTEGER
            || range->element[2]->type != REDIS_REPLY_ARRAY
            || range->element[0]->integer < 0
            || range->element[1]->integer < range->element[0]->integer
            || range->element[1]->integer >= NGX_EDGE_REDIS_CLUSTER_SLOTS)
        {
            bad++;
            continue;
        }

        primary = range->element[2];

        if (primary->elements < 2
            || primary->element[0]->type != REDIS_REPLY_STRING
            || primary->element[1]->type != REDIS_REPLY_INTEGER)
        {
            bad++;
            continue;
        }

        host = (u_char *) primary->element[0]->str;
        len = primary->element[0]->len;

        if (len == 0 || (len == 1 && host[0] == '?')) {
            /* the node asked does not know its own address */
            host = conn->server->hosts[0].data;
            len = conn->server->hosts[0].len;
        }

        idx = ngx_edge_redis_cluster_node(cl, host, len,
                                          primary->element[1]->integer);
        if (idx == NGX_ERROR) {
            bad++;
            continue;
        }

        start = range->element[0]->integer;
        end = range->element[1]->integer;

        ngx_memset(&map[start], (int) idx + 1, end - start + 1);
    }

    if (bad) {
        ngx_edge_redis_cluster_log(cl, "CLUSTER SLOTS named a node that "
                                   "is not a numeric address, or too many",
                                   NULL);
    }

    if (reply->elements == bad && cl->known) {
        /* a node that was reset (or left) knows no slot: its view is not
         * the cluster's, the map stays */
        ngx_edge_redis_cluster_log(cl, "CLUSTER SLOTS named no slot: the "
                                   "map is kept", NULL);
        return;
    }

    ngx_memcpy(cl->map, map, sizeof(map));

    if (!cl->prune.posted) {
        /* not here: a node's connection may be closed, maybe this one */
        ngx_post_event(&cl->prune, &ngx_posted_events);
    }

    if (!cl->known) {
        cl->known = 1;
        ngx_edge_redis_stat(cl->server, cl->server->st_connected, 1);
    }
}


static void
ngx_edge_redis_cluster_ask(ngx_edge_redis_cluster_t *cl)
{
    ngx_uint_t              i, n;
    ngx_edge_redis_conn_t  *conn;

    if (cl->asking || cl->exiting) {
        return;
    }

    /* the nodes in turn, the ready ones only */
    for (i = 0; i < cl->nnodes; i++) {
        n = (cl->next + i) % cl->nnodes;
        conn = cl->nodes[n].conn;

        if (conn == NULL || conn->state != NGX_EDGE_REDIS_READY
            || (conn->ac->c.flags & (REDIS_DISCONNECTING|REDIS_FREEING)))
        {
            continue;
        }

        if (redisAsyncCommand(conn->ac, ngx_edge_redis_cluster_slots_reply,
                              conn, "CLUSTER SLOTS")
            == REDIS_OK)
        {
            cl->asking = 1;
            cl->next = n + 1;
            return;
        }
    }
}


static ngx_edge_redis_server_t *
ngx_edge_redis_cluster_route(ngx_edge_redis_server_t *server,
    const char *key, size_t len, ngx_uint_t *slot)
{
    ngx_uint_t                 idx;
    ngx_edge_redis_cluster_t  *cl;

    cl = server->cluster;

    if (cl == NULL) {
        ngx_edge_redis_stat(server, server->st_errors, 1);
        return NULL;
    }

    *slot = ngx_edge_redis_key_slot((const u_char *) key, len);

    idx = cl->map[*slot];

    if (idx == 0) {
        /* no node serves it (yet): the caller's failure policy */
        ngx_edge_redis_stat(server, server->st_errors, 1);
        ngx_edge_redis_cluster_refresh_soon(cl);
        return NULL;
    }

    return &cl->nodes[idx - 1];
}


/* a command's key: an EVAL's first key, or the first argument */

static ngx_edge_redis_server_t *
ngx_edge_redis_cluster_command_node(ngx_edge_redis_server_t *server,
    ngx_uint_t argc, const char **argv, const size_t *argvlen,
    ngx_uint_t *slot)
{
    ngx_uint_t  k;

    k = 1;

    if ((argvlen[0] == 4 && ngx_strncasecmp((u_char *) argv[0],
                                            (u_char *) "EVAL", 4) == 0)
        || (argvlen[0] == 7 && ngx_strncasecmp((u_char *) argv[0],
                                               (u_char *) "EVALSHA", 7)
                               == 0))
    {
        k = (argc > 3 && !(argvlen[2] == 1 && argv[2][0] == '0')) ? 3 : 0;
    }

    if (k == 0 || k >= argc) {
        /* no key: any node, slot 0's */
        return ngx_edge_redis_cluster_route(server, "", 0, slot);
    }

    return ngx_edge_redis_cluster_route(server, argv[k], argvlen[k], slot);
}


/* "MOVED 3999 127.0.0.1:6381" or "ASK ...": 1 MOVED, 2 ASK, 0 neither;
 * the node's index in *idx, or NGX_ERROR */

static ngx_uint_t
ngx_edge_redis_cluster_parse_redirect(ngx_edge_redis_conn_t *conn,
    redisReply *reply, ngx_uint_t *slot, ngx_int_t *idx)
{
    u_char      *p, *last, *sp, *colon, *host;
    size_t       len;
    ngx_int_t    n, port;
    ngx_uint_t   kind;

    p = (u_char *) reply->str;
    last = p + reply->len;

    if (reply->len > 6 && ngx_strncmp(p, "MOVED ", 6) == 0) {
        kind = 1;
        p += 6;

    } else if (reply->len > 4 && ngx_strncmp(p, "ASK ", 4) == 0) {
        kind = 2;
        p += 4;

    } else {
        return 0;
    }

    sp = ngx_strlchr(p, last, ' ');
    if (sp == NULL) {
        return 0;
    }

    n = ngx_atoi(p, sp - p);
    if (n == NGX_ERROR || n >= NGX_EDGE_REDIS_CLUSTER_SLOTS) {
        return 0;
    }

    host = sp + 1;

    /* the port follows the last colon (an IPv6 address has several) */
    for (colon = last - 1; colon >= host && *colon != ':'; colon--) {
        /* void */
    }

    if (colon < host) {
        return 0;
    }

    port = ngx_atoi(colon + 1, last - colon - 1);
    if (port == NGX_ERROR) {
        return 0;
    }

    len = colon - host;

    if (len == 0) {
        host = conn->server->hosts[0].data;
        len = conn->server->hosts[0].len;
    }

    *slot = n;
    *idx = ngx_edge_redis_cluster_node(conn->server->cluster, host, len,
                                       port);

    return kind;
}


/*
 * A batch answered MOVED or ASK: none of it ran (a batch holds the keys of
 * one slot), so it is sent once more, as it is, to the node named; ASK
 * puts ASKING before it, in the same pipeline.  NGX_DECLINED: not sent,
 * the error reply is the items' answer.
 */

/*
 * MOVED or ASK: the map updated (MOVED), and the connection to send to
 * again, or NULL (not a redirect, too many, or a node not connected yet);
 * *kind: 1 MOVED, 2 ASK.
 */

static ngx_edge_redis_conn_t *
ngx_edge_redis_cluster_target(ngx_edge_redis_conn_t *conn, redisReply *reply,
    ngx_uint_t redirects, ngx_uint_t *kind)
{
    ngx_int_t                  idx;
    ngx_uint_t                 slot;
    ngx_edge_redis_conn_t     *target;
    ngx_edge_redis_cluster_t  *cl;

    cl = conn->server->cluster;

    *kind = ngx_edge_redis_cluster_parse_redirect(conn, reply, &slot, &idx);

    if (*kind == 0 || cl->exiting) {
        return NULL;
    }

    if (*kind == 1) {
        ngx_edge_redis_cluster_refresh_soon(cl);
    }

    if (idx == NGX_ERROR) {
        return NULL;
    }

    if (*kind == 1) {
        cl->map[slot] = (uint8_t) (idx + 1);
    }

    if (redirects >= NGX_EDGE_REDIS_CLUSTER_REDIRECTS) {
        return NULL;
    }

    target = cl->nodes[idx].conn;

    if (target == NULL || target == conn
        || !ngx_edge_redis_takes_items(target)
        || (target->ac->c.flags & (REDIS_DISCONNECTING|REDIS_FREEING)))
    {
        return NULL;
    }

    return target;
}


/* a redirected item waits on the target now (for idleness, silence) */

static void
ngx_edge_redis_cluster_move(ngx_edge_redis_cmd_t *cmd,
    ngx_edge_redis_conn_t *target)
{
    if (target->attached++ == 0 && target->c) {
        target->c->idle = 0;
    }

    ngx_edge_redis_unref(cmd->conn);

    cmd->conn = target;
    cmd->replies = target->replies;
    cmd->redirects++;
}


/*
 * A batch answered MOVED or ASK: none of it ran (a batch holds the keys of
 * one slot), so it is sent once more, as it is, to the node named; ASK
 * puts ASKING before it, in the same pipeline.  NGX_DECLINED: not sent,
 * the error reply is the items' answer.
 */

static ngx_int_t
ngx_edge_redis_cluster_redirect(ngx_edge_redis_batch_t *b,
    redisReply *reply)
{
    ngx_uint_t               i, n, kind;
    ngx_edge_redis_cmd_t    *cmd;
    ngx_edge_redis_conn_t   *target;

    target = ngx_edge_redis_cluster_target(b->conn, reply, b->redirects,
                                           &kind);
    if (target == NULL) {
        return NGX_DECLINED;
    }

    n = 0;

    for (i = 0; i < b->n; i++) {
        cmd = b->items[i];

        if (cmd->handler == NULL || cmd->argv == NULL) {
            ngx_edge_redis_free_cmd(cmd);
            continue;
        }

        b->items[n++] = cmd;
        ngx_edge_redis_cluster_move(cmd, target);
    }

    b->n = n;
    b->conn = target;
    b->redirects++;

    if (n == 0) {
        ngx_edge_redis_put_batch(b);
        return NGX_OK;
    }

    if (kind == 2
        && redisAsyncCommand(target->ac, NULL, NULL, "ASKING") != REDIS_OK)
    {
        return NGX_DECLINED;
    }

    if (ngx_edge_redis_send_batch(b) != NGX_OK) {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/* a plain command answered MOVED or ASK: sent again from its copy, if it
 * has one and its request still waits */

static ngx_int_t
ngx_edge_redis_cluster_resend(ngx_edge_redis_cmd_t *cmd, redisReply *reply)
{
    u_char                 *copy;
    ngx_uint_t              kind;
    ngx_edge_redis_conn_t  *target;

    target = ngx_edge_redis_cluster_target(cmd->conn, reply, cmd->redirects,
                                           &kind);

    if (target == NULL || cmd->copy_len == 0 || cmd->handler == NULL) {
        return NGX_DECLINED;
    }

    copy = cmd->big ? cmd->big : cmd->copy;

    if (kind == 2
        && redisAsyncCommand(target->ac, NULL, NULL, "ASKING") != REDIS_OK)
    {
        return NGX_DECLINED;
    }

    if (redisAsyncFormattedCommand(target->ac, ngx_edge_redis_command_reply,
                                   cmd, (const char *) copy,
                                   cmd->copy_len)
        != REDIS_OK)
    {
        return NGX_DECLINED;
    }

    ngx_edge_redis_cluster_move(cmd, target);

    return NGX_OK;
}


/* a batch's items whose requests went away are dropped; how many are
 * left */

static ngx_uint_t
ngx_edge_redis_batch_compact(ngx_edge_redis_batch_t *b)
{
    ngx_uint_t             i, n;
    ngx_edge_redis_cmd_t  *cmd;

    n = 0;

    for (i = 0; i < b->n; i++) {
        cmd = b->items[i];

        if (cmd->handler == NULL || cmd->argv == NULL) {
            ngx_edge_redis_free_cmd(cmd);
            continue;
        }

        b->items[n++] = cmd;
    }

    b->n = n;

    return n;
}


/*
 * "TRYAGAIN": the batch's keys are of one slot, being migrated, and some
 * are on the source, some on the target already (a node refuses a
 * multi-key command it cannot run whole).  Nothing ran.  The batch waits
 * a little (the migration moves the rest of the keys, or ends) and is
 * sent again, from the start of the slot's route; bounded, then the error
 * reply is its items' answer (their failure policy).
 */

static ngx_int_t
ngx_edge_redis_cluster_tryagain(ngx_edge_redis_batch_t *b, redisReply *reply)
{
    ngx_msec_t                 delay;
    ngx_edge_redis_cluster_t  *cl;

    cl = b->conn->server->cluster;

    if (reply->len < 8 || ngx_strncmp(reply->str, "TRYAGAIN", 8) != 0
        || b->tryagain >= NGX_EDGE_REDIS_TRYAGAIN_MAX || cl->exiting)
    {
        return NGX_DECLINED;
    }

    if (ngx_edge_redis_batch_compact(b) == 0) {
        ngx_edge_redis_put_batch(b);
        return NGX_OK;
    }

    delay = ngx_min((ngx_msec_t) NGX_EDGE_REDIS_TRYAGAIN_DELAY << b->tryagain,
                    NGX_EDGE_REDIS_TRYAGAIN_DELAY_MAX);

    b->tryagain++;

    /* requests wait on it: a worker shutting down stays for it */
    b->retry.cancelable = 0;
    ngx_add_timer(&b->retry, delay);

    return NGX_OK;
}


static void
ngx_edge_redis_cluster_retry(ngx_event_t *ev)
{
    ngx_edge_redis_batch_t  *b = ev->data;

    ngx_uint_t                 i, idx;
    ngx_edge_redis_conn_t     *target;
    ngx_edge_redis_server_t   *server;
    ngx_edge_redis_cluster_t  *cl;

    server = b->conn->server;
    cl = server->cluster;

    if (ngx_edge_redis_batch_compact(b) == 0) {
        ngx_edge_redis_put_batch(b);
        return;
    }

    /* the slot's node as the map says now; MOVED or ASK from there are
     * followed again */
    idx = cl->exiting ? 0 : cl->map[b->items[0]->slot];
    target = idx ? cl->nodes[idx - 1].conn : NULL;

    if (target && ngx_edge_redis_takes_items(target)
        && !(target->ac->c.flags & (REDIS_DISCONNECTING|REDIS_FREEING)))
    {
        if (target != b->conn) {
            for (i = 0; i < b->n; i++) {
                ngx_edge_redis_cluster_move(b->items[i], target);
            }

            b->conn = target;
        }

        b->redirects = 0;

        if (ngx_edge_redis_send_batch(b) == NGX_OK) {
            return;
        }
    }

    ngx_edge_redis_stat(server, server->st_errors, b->n);
    ngx_edge_redis_log_failure(b->conn, "a batch answered TRYAGAIN could "
                               "not be sent again: its slot's node is not "
                               "connected");
    ngx_edge_redis_finish_batch(b, NULL);
}
