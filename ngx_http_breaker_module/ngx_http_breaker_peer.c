/*
 * ngx_http_breaker_module: per-peer circuits.
 *
 * breaker_peers in an upstream{} block wraps the upstream's balancer the
 * way ngx_http_upstream_keepalive_module does, without patching nginx:
 *
 *   directive       saves uscf->peer.init_upstream (the balancer's, or
 *                   round robin) and installs ours;
 *   init_upstream   calls the saved one, then wraps the per-request
 *                   us->peer.init it left, and lists the upstream's peers
 *                   (one circuit each, "<upstream>/<peer name>");
 *   init (request)  calls the saved init, then puts our get and free in
 *                   front of the balancer's;
 *   get             asks the balancer; if that peer's circuit refuses and
 *                   the ejection cap allows, hands the peer back (the
 *                   balancer marks it tried) and asks again;
 *   free            records the outcome of this attempt in the peer's
 *                   circuit, then chains to the balancer's free.
 *
 * The circuits live in the breaker_zone (shared memory); each worker keeps
 * the pointers in its copy of the configuration, resolved on first use.
 */

#include "ngx_edge_common.h"
#include "ngx_edge_time.h"
#include "ngx_http_breaker_circuit.h"
#include "ngx_http_breaker_module.h"
#include "ngx_http_breaker_peer.h"


#define NGX_HTTP_BREAKER_PEERS_MAGIC  0x50454552      /* "PEER" */


typedef struct {
    ngx_str_t                        name;       /* "<upstream>/<peer>" */
    ngx_str_t                        peer;       /* "<peer>", within name */
    struct sockaddr                 *sockaddr;
    socklen_t                        socklen;
    ngx_uint_t                       down;       /* "down" in nginx.conf */

    /* per worker, resolved on first use */
    ngx_http_breaker_circuit_t      *circuit;

    /* the circuit's series, label circuit="<upstream>/<peer>" */
    ngx_http_breaker_stats_t         stats;

    ngx_http_breaker_quiet_t         quiet;      /* this worker's */
} ngx_http_breaker_peer_t;


typedef struct {
    ngx_uint_t                       magic;
    ngx_shm_zone_t                  *zone;
    ngx_http_breaker_circuit_conf_t  circuit;
    ngx_uint_t                       max_ejected;   /* percent */

    ngx_http_upstream_srv_conf_t    *upstream;
    ngx_http_upstream_init_pt        original_init_upstream;
    ngx_http_upstream_init_peer_pt   original_init_peer;

    ngx_array_t                      peers;       /* ngx_http_breaker_peer_t */
    ngx_uint_t                       cap;         /* peers ejected at once */

    u_char                          *file;
    ngx_uint_t                       line;

    unsigned                         initialized:1;
    unsigned                         resolved:1;  /* per worker */
} ngx_http_breaker_peers_conf_t;


typedef struct {
    ngx_http_breaker_peers_conf_t   *conf;
    ngx_http_upstream_t             *upstream;
    void                            *data;

    ngx_event_get_peer_pt            original_get_peer;
    ngx_event_free_peer_pt           original_free_peer;

#if (NGX_HTTP_SSL)
    ngx_event_set_peer_session_pt    original_set_session;
    ngx_event_save_peer_session_pt   original_save_session;
#endif

    /* the current attempt */
    ngx_http_breaker_peer_t         *current;
    ngx_http_breaker_ticket_t        ticket;
    int64_t                          start;
} ngx_http_breaker_peer_data_t;


static ngx_int_t ngx_http_breaker_peers_init_upstream(ngx_conf_t *cf,
    ngx_http_upstream_srv_conf_t *us);
static ngx_int_t ngx_http_breaker_peers_list(ngx_conf_t *cf,
    ngx_http_breaker_peers_conf_t *pcf, ngx_http_upstream_srv_conf_t *us);
static ngx_int_t ngx_http_breaker_peers_init_peer(ngx_http_request_t *r,
    ngx_http_upstream_srv_conf_t *us);
static ngx_int_t ngx_http_breaker_peers_get(ngx_peer_connection_t *pc,
    void *data);
static void ngx_http_breaker_peers_free(ngx_peer_connection_t *pc,
    void *data, ngx_uint_t state);
static ngx_http_breaker_outcome_e ngx_http_breaker_peers_outcome(
    ngx_http_breaker_peer_data_t *bp, ngx_peer_connection_t *pc,
    ngx_uint_t state);
static void ngx_http_breaker_peers_resolve(ngx_http_breaker_peers_conf_t *pcf,
    ngx_log_t *log);
static void ngx_http_breaker_peers_sync_gauges(ngx_cycle_t *cycle,
    ngx_http_breaker_peers_conf_t *pcf);
static ngx_http_breaker_peer_t *ngx_http_breaker_peers_find(
    ngx_http_breaker_peers_conf_t *pcf, ngx_peer_connection_t *pc);
static ngx_uint_t ngx_http_breaker_peers_ejectable(
    ngx_http_breaker_peers_conf_t *pcf, ngx_http_breaker_peer_t *peer,
    int64_t now);
static void ngx_http_breaker_peers_hand_back(ngx_http_breaker_peer_data_t *bp,
    ngx_peer_connection_t *pc, ngx_int_t rc);
static ngx_http_breaker_peers_conf_t *ngx_http_breaker_peers_conf(
    ngx_http_upstream_srv_conf_t *us);
static void ngx_http_breaker_peers_transition(
    ngx_http_breaker_circuit_conf_t *conf, ngx_str_t *name,
    ngx_http_breaker_state_e from, ngx_http_breaker_state_e to);

#if (NGX_HTTP_SSL)
static ngx_int_t ngx_http_breaker_peers_set_session(ngx_peer_connection_t *pc,
    void *data);
static void ngx_http_breaker_peers_save_session(ngx_peer_connection_t *pc,
    void *data);
#endif


/*
 * The per-upstream configuration hangs in the upstream block's server
 * configuration slot of ngx_http_breaker_module, which the module does not
 * otherwise use (it has no create_srv_conf): the directive fills it, and
 * ngx_http_conf_upstream_srv_conf() finds it from the upstream, as the
 * balancer modules find theirs.
 */

static ngx_http_breaker_peers_conf_t *
ngx_http_breaker_peers_conf(ngx_http_upstream_srv_conf_t *us)
{
    ngx_http_breaker_peers_conf_t  *pcf;

    if (us->srv_conf == NULL) {
        return NULL;
    }

    pcf = ngx_http_conf_upstream_srv_conf(us, ngx_http_breaker_module);

    if (pcf == NULL || pcf->magic != NGX_HTTP_BREAKER_PEERS_MAGIC) {
        return NULL;
    }

    return pcf;
}


char *
ngx_http_breaker_peers(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_int_t                       rc, n;
    ngx_str_t                      *value, name, s;
    ngx_uint_t                      i;
    ngx_http_conf_ctx_t            *ctx;
    ngx_http_upstream_srv_conf_t   *uscf;
    ngx_http_breaker_peers_conf_t  *pcf;

    ctx = cf->ctx;

    if (ctx->srv_conf[ngx_http_breaker_module.ctx_index] != NULL) {
        return "is duplicate";
    }

    pcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_breaker_peers_conf_t));
    if (pcf == NULL) {
        return NGX_CONF_ERROR;
    }

    pcf->magic = NGX_HTTP_BREAKER_PEERS_MAGIC;
    pcf->max_ejected = NGX_CONF_UNSET_UINT;

    ngx_http_breaker_circuit_conf_init(&pcf->circuit);

    value = cf->args->elts;
    ngx_str_null(&name);

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "zone=", 5) == 0) {
            name.data = value[i].data + 5;
            name.len = value[i].len - 5;

            if (name.len == 0) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid zone name \"%V\" in \"%V\"",
                                   &value[i], &cmd->name);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "max_ejected=", 12) == 0) {
            s.data = value[i].data + 12;
            s.len = value[i].len - 12;

            if (s.len && s.data[s.len - 1] == '%') {
                s.len--;
            }

            n = ngx_atoi(s.data, s.len);

            if (n == NGX_ERROR || n > 100) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid value \"%V\" in \"%V\": "
                                   "max_ejected is a share of the peers "
                                   "from 0%% to 100%%",
                                   &value[i], &cmd->name);
                return NGX_CONF_ERROR;
            }

            pcf->max_ejected = n;
            continue;
        }

        rc = ngx_http_breaker_circuit_conf_parse(cf, &pcf->circuit,
                                                 &value[i]);

        if (rc == NGX_ERROR) {
            return NGX_CONF_ERROR;
        }

        if (rc == NGX_DECLINED) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\" in \"%V\"",
                               &value[i], &cmd->name);
            return NGX_CONF_ERROR;
        }
    }

    if (name.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" must have the \"zone\" parameter",
                           &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (ngx_http_breaker_circuit_conf_check(cf, &pcf->circuit)
        != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    pcf->circuit.transition = ngx_http_breaker_peers_transition;
    pcf->circuit.data = pcf;

    pcf->zone = ngx_http_breaker_zone_add(cf, &name);
    if (pcf->zone == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_conf_init_uint_value(pcf->max_ejected, 50);

    pcf->file = cf->conf_file->file.name.data;
    pcf->line = cf->conf_file->line;

    /* wrap the balancer chosen so far, as keepalive does */

    uscf = ngx_http_conf_get_module_srv_conf(cf, ngx_http_upstream_module);

    pcf->upstream = uscf;
    pcf->original_init_upstream = uscf->peer.init_upstream
                                  ? uscf->peer.init_upstream
                                  : ngx_http_upstream_init_round_robin;

    uscf->peer.init_upstream = ngx_http_breaker_peers_init_upstream;

    ctx->srv_conf[ngx_http_breaker_module.ctx_index] = pcf;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_breaker_peers_init_upstream(ngx_conf_t *cf,
    ngx_http_upstream_srv_conf_t *us)
{
    ngx_http_breaker_peers_conf_t  *pcf;

    pcf = ngx_http_breaker_peers_conf(us);
    if (pcf == NULL) {
        return NGX_ERROR;
    }

    if (pcf->original_init_upstream(cf, us) != NGX_OK) {
        return NGX_ERROR;
    }

    pcf->original_init_peer = us->peer.init;
    us->peer.init = ngx_http_breaker_peers_init_peer;

    if (ngx_http_breaker_peers_list(cf, pcf, us) != NGX_OK) {
        return NGX_ERROR;
    }

    pcf->initialized = 1;

    return NGX_OK;
}


/*
 * The upstream's peers as nginx.conf lists them (every address of every
 * server, backups too): the same list, in the same order, in every worker,
 * which the ejection cap relies on.  The balancers built on round robin
 * (round robin, hash, ip_hash, least_conn, random) hand out these very
 * sockaddrs.
 */

static ngx_int_t
ngx_http_breaker_peers_list(ngx_conf_t *cf,
    ngx_http_breaker_peers_conf_t *pcf, ngx_http_upstream_srv_conf_t *us)
{
    u_char                      *p;
    ngx_uint_t                   i, j, n, live;
    ngx_http_breaker_peer_t     *peer;
    ngx_http_upstream_server_t  *server;

    n = 0;

    if (us->servers) {
        server = us->servers->elts;

        for (i = 0; i < us->servers->nelts; i++) {
            n += server[i].naddrs;
        }
    }

    if (ngx_array_init(&pcf->peers, cf->pool, n ? n : 1,
                       sizeof(ngx_http_breaker_peer_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (n == 0) {
        return NGX_OK;
    }

    live = 0;
    server = us->servers->elts;

    for (i = 0; i < us->servers->nelts; i++) {
        for (j = 0; j < server[i].naddrs; j++) {

            peer = ngx_array_push(&pcf->peers);
            if (peer == NULL) {
                return NGX_ERROR;
            }

            ngx_memzero(peer, sizeof(ngx_http_breaker_peer_t));

            peer->sockaddr = server[i].addrs[j].sockaddr;
            peer->socklen = server[i].addrs[j].socklen;
            peer->down = server[i].down;

            peer->name.len = us->host.len + 1 + server[i].addrs[j].name.len;
            peer->name.data = ngx_pnalloc(cf->pool, peer->name.len);
            if (peer->name.data == NULL) {
                return NGX_ERROR;
            }

            p = ngx_cpymem(peer->name.data, us->host.data, us->host.len);
            *p++ = '/';
            ngx_memcpy(p, server[i].addrs[j].name.data,
                       server[i].addrs[j].name.len);

            peer->peer.data = p;
            peer->peer.len = server[i].addrs[j].name.len;

            if (ngx_http_breaker_stats_add(cf, &peer->name, &peer->stats)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

            if (!peer->down) {
                live++;
            }
        }
    }

    /*
     * At least one peer always stays in the pool: the cap is rounded down
     * and never reaches the number of live peers.
     */

    pcf->cap = live * pcf->max_ejected / 100;

    if (pcf->cap >= live) {
        pcf->cap = live ? live - 1 : 0;
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_breaker_peers_postconfiguration(ngx_conf_t *cf)
{
    ngx_uint_t                      i;
    ngx_http_upstream_main_conf_t  *umcf;
    ngx_http_upstream_srv_conf_t  **uscfp;
    ngx_http_breaker_peers_conf_t  *pcf;

    umcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_upstream_module);
    if (umcf == NULL) {
        return NGX_OK;
    }

    uscfp = umcf->upstreams.elts;

    for (i = 0; i < umcf->upstreams.nelts; i++) {

        pcf = ngx_http_breaker_peers_conf(uscfp[i]);

        if (pcf == NULL || pcf->initialized) {
            continue;
        }

        /* a balancer directive after ours replaced init_upstream */

        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"breaker_peers\" in %s:%ui must come after the "
                      "load balancing directive (hash, ip_hash, least_conn, "
                      "random) of upstream \"%V\"",
                      pcf->file, pcf->line, &uscfp[i]->host);

        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_breaker_peers_init_peer(ngx_http_request_t *r,
    ngx_http_upstream_srv_conf_t *us)
{
    ngx_http_upstream_t            *u;
    ngx_http_breaker_peer_data_t   *bp;
    ngx_http_breaker_peers_conf_t  *pcf;

    pcf = ngx_http_breaker_peers_conf(us);
    if (pcf == NULL) {
        return NGX_ERROR;
    }

    /* every field is set below (no memset on the hot path) */
    bp = ngx_palloc(r->pool, sizeof(ngx_http_breaker_peer_data_t));
    if (bp == NULL) {
        return NGX_ERROR;
    }

    bp->current = NULL;
    ngx_memzero(&bp->ticket, sizeof(ngx_http_breaker_ticket_t));
    bp->start = 0;

    if (pcf->original_init_peer(r, us) != NGX_OK) {
        return NGX_ERROR;
    }

    u = r->upstream;

    bp->conf = pcf;
    bp->upstream = u;
    bp->data = u->peer.data;
    bp->original_get_peer = u->peer.get;
    bp->original_free_peer = u->peer.free;

    u->peer.data = bp;
    u->peer.get = ngx_http_breaker_peers_get;
    u->peer.free = ngx_http_breaker_peers_free;

#if (NGX_HTTP_SSL)
    bp->original_set_session = u->peer.set_session;
    bp->original_save_session = u->peer.save_session;
    u->peer.set_session = ngx_http_breaker_peers_set_session;
    u->peer.save_session = ngx_http_breaker_peers_save_session;
#endif

    return NGX_OK;
}


/*
 * Ask the balancer; while the chosen peer's circuit refuses and ejecting
 * it stays within the cap, hand the peer back (not as failed: the circuit
 * has judged it, nginx's max_fails should not count it again) and ask
 * again.  The balancer marks every peer it hands out as tried, so each
 * new answer is another peer.  The last peer the balancer can offer is
 * kept whatever its circuit says: a request is never refused for want of
 * a closed circuit.
 */

static ngx_int_t
ngx_http_breaker_peers_get(ngx_peer_connection_t *pc, void *data)
{
    ngx_http_breaker_peer_data_t *bp = data;

    int64_t                         now, retry_after;
    ngx_int_t                       rc;
    ngx_uint_t                      refused;
    ngx_http_breaker_peer_t        *peer;
    ngx_http_breaker_ticket_t       ticket;
    ngx_http_breaker_peers_conf_t  *pcf;

    pcf = bp->conf;

    if (!pcf->resolved) {
        ngx_http_breaker_peers_resolve(pcf, pc->log);
    }

    bp->current = NULL;
    bp->ticket.admitted = 0;

    now = ngx_edge_mono_usec();

    for (refused = 0; /* void */ ; refused++) {

        rc = bp->original_get_peer(pc, bp->data);

        if (rc != NGX_OK && rc != NGX_DONE) {
            return rc;
        }

        bp->start = now;

        peer = ngx_http_breaker_peers_find(pcf, pc);

        if (peer == NULL || peer->circuit == NULL) {
            return rc;
        }

        ngx_memzero(&ticket, sizeof(ngx_http_breaker_ticket_t));

        if (ngx_http_breaker_circuit_admit(peer->circuit, &pcf->circuit,
                                           &peer->name, now, &ticket,
                                           &retry_after, pc->log)
            == NGX_OK)
        {
            bp->current = peer;
            bp->ticket = ticket;
            bp->ticket.admitted = 1;
            return rc;
        }

        if (refused + 1 >= pcf->peers.nelts
            || !ngx_http_breaker_peers_ejectable(pcf, peer, now))
        {
            ngx_log_debug1(NGX_LOG_DEBUG_HTTP, pc->log, 0,
                           "breaker peer \"%V\" open, kept (cap)",
                           &peer->name);
            return rc;
        }

        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, pc->log, 0,
                       "breaker peer \"%V\" open, next peer", &peer->name);

        ngx_http_breaker_stats_rejected(&peer->stats);

        ngx_http_breaker_peers_hand_back(bp, pc, rc);
    }
}


/*
 * A refused peer goes back to the balancer.  With keepalive configured
 * before breaker_peers, keepalive sits between us and the balancer and may
 * have handed out one of its cached connections to that peer: the
 * connection is closed, as keepalive closes a connection it drops.
 */

static void
ngx_http_breaker_peers_hand_back(ngx_http_breaker_peer_data_t *bp,
    ngx_peer_connection_t *pc, ngx_int_t rc)
{
    ngx_connection_t  *c;

    c = (rc == NGX_DONE) ? pc->connection : NULL;

    if (c) {
        /* detached first: keepalive's free would put a healthy connection
         * back in its cache (u->keepalive may still be set by the previous
         * attempt), and it is closed below */
        pc->connection = NULL;
        pc->cached = 0;
    }

    bp->original_free_peer(pc, bp->data, 0);

    if (c == NULL) {
        return;
    }

#if (NGX_HTTP_SSL)
    if (c->ssl) {
        c->ssl->no_wait_shutdown = 1;
        c->ssl->no_send_shutdown = 1;
        (void) ngx_ssl_shutdown(c);
    }
#endif

    if (c->pool) {
        ngx_destroy_pool(c->pool);
        c->pool = NULL;
    }

    ngx_close_connection(c);
}


/*
 * The ejection cap: at most pcf->cap of the upstream's peers are ejected
 * at once.  When more circuits than that refuse, the first ones in the
 * order of nginx.conf are the ejected ones (the same answer in every
 * worker, and stable while the set of open circuits is); the others are
 * used as if closed.  Their circuits stay open and are not fed while so
 * used; they half-open after their open time as usual.
 */

static ngx_uint_t
ngx_http_breaker_peers_ejectable(ngx_http_breaker_peers_conf_t *pcf,
    ngx_http_breaker_peer_t *peer, int64_t now)
{
    ngx_uint_t                 i, ejected;
    ngx_http_breaker_peer_t   *p;
    ngx_http_breaker_state_e   state;

    if (pcf->cap == 0) {
        return 0;
    }

    p = pcf->peers.elts;
    ejected = 0;

    for (i = 0; i < pcf->peers.nelts; i++) {

        if (&p[i] == peer) {
            return 1;
        }

        if (p[i].circuit == NULL || p[i].down) {
            continue;
        }

        state = ngx_http_breaker_circuit_state(p[i].circuit, &pcf->circuit,
                                               now);

        if (state == NGX_HTTP_BREAKER_OPEN
            || state == NGX_HTTP_BREAKER_HALF_OPEN
            || state == NGX_HTTP_BREAKER_FORCED_OPEN)
        {
            if (++ejected >= pcf->cap) {
                return 0;
            }
        }
    }

    return 0;
}


static void
ngx_http_breaker_peers_free(ngx_peer_connection_t *pc, void *data,
    ngx_uint_t state)
{
    ngx_http_breaker_peer_data_t *bp = data;

    int64_t                      now;
    ngx_http_breaker_peer_t     *peer;
    ngx_http_breaker_outcome_e   outcome;

    peer = bp->current;

    if (peer != NULL && bp->ticket.admitted) {

        outcome = ngx_http_breaker_peers_outcome(bp, pc, state);
        now = ngx_edge_mono_usec();

        /* an ignored outcome is counted, and gives back a probe permit */

        ngx_http_breaker_stats_call(&peer->stats, outcome, now - bp->start);

        if (outcome != NGX_HTTP_BREAKER_SUCCESS
            || !ngx_http_breaker_circuit_record_quiet(&peer->quiet,
                                                      &bp->conf->circuit,
                                                      &bp->ticket,
                                                      now - bp->start, now))
        {
            ngx_http_breaker_circuit_record(peer->circuit,
                                            &bp->conf->circuit, &peer->name,
                                            &bp->ticket, outcome,
                                            now - bp->start, now,
                                            &peer->quiet, pc->log);
        }

        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, pc->log, 0,
                       "breaker peer \"%V\" outcome %d",
                       &peer->name, (int) outcome);
    }

    bp->current = NULL;
    bp->ticket.admitted = 0;

    bp->original_free_peer(pc, bp->data, state);
}


/*
 * The outcome of this attempt, from what nginx left when it let go of the
 * peer.  u->state is this attempt's entry of $upstream_status: its status
 * is the one the peer answered (0 if no response header was read).  A
 * response the balancer is not told about (a 500 with proxy_next_upstream
 * off: freed with state 0) is judged by its status all the same.
 */

static ngx_http_breaker_outcome_e
ngx_http_breaker_peers_outcome(ngx_http_breaker_peer_data_t *bp,
    ngx_peer_connection_t *pc, ngx_uint_t state)
{
    ngx_uint_t             status;
    ngx_connection_t      *c;
    ngx_http_upstream_t   *u;

    u = bp->upstream;
    c = pc->connection;

    if (c && (c->read->timedout || c->write->timedout)) {
        return NGX_HTTP_BREAKER_TIMEOUT;
    }

    status = u->state ? u->state->status : 0;

    if (status) {
        return ngx_http_breaker_circuit_failure_status(&bp->conf->circuit,
                                                       status)
               ? NGX_HTTP_BREAKER_FAILURE : NGX_HTTP_BREAKER_SUCCESS;
    }

    if (state & NGX_PEER_FAILED) {
        /* refused, reset, or an invalid response */
        return NGX_HTTP_BREAKER_CONNECT_ERROR;
    }

    /* let go before an answer, and not for the peer's fault: the client
     * went away or the request failed on our side */

    return NGX_HTTP_BREAKER_IGNORED;
}


static void
ngx_http_breaker_peers_resolve(ngx_http_breaker_peers_conf_t *pcf,
    ngx_log_t *log)
{
    ngx_uint_t                i;
    ngx_http_breaker_peer_t  *peer;

    peer = pcf->peers.elts;

    for (i = 0; i < pcf->peers.nelts; i++) {
        if (peer[i].circuit == NULL) {
            peer[i].circuit = ngx_http_breaker_zone_circuit(pcf->zone,
                                                            &peer[i].name,
                                                            &pcf->circuit,
                                                            log);
        }
    }

    pcf->resolved = 1;
}


/* the peers' state gauges start from their circuits' stored states: a
 * reload may bring a new stats zone (its gauges at 0, closed) while a
 * circuit stays open in the breaker zone */
static void
ngx_http_breaker_peers_sync_gauges(ngx_cycle_t *cycle,
    ngx_http_breaker_peers_conf_t *pcf)
{
    ngx_uint_t                i;
    ngx_http_breaker_peer_t  *peer;

    peer = pcf->peers.elts;

    for (i = 0; i < pcf->peers.nelts; i++) {
        if (peer[i].circuit) {
            ngx_http_breaker_stats_sync_state(cycle, &peer[i].stats,
                                              peer[i].circuit,
                                              &pcf->circuit);
        }
    }
}


/* the balancers built on round robin hand out the sockaddr pointers of
 * nginx.conf's addresses: a pointer compare finds the peer, the bytes
 * are compared only for a balancer that copies them */

static ngx_http_breaker_peer_t *
ngx_http_breaker_peers_find(ngx_http_breaker_peers_conf_t *pcf,
    ngx_peer_connection_t *pc)
{
    ngx_uint_t                i;
    ngx_http_breaker_peer_t  *peer;

    peer = pcf->peers.elts;

    for (i = 0; i < pcf->peers.nelts; i++) {
        if (peer[i].sockaddr == pc->sockaddr) {
            return &peer[i];
        }
    }

    for (i = 0; i < pcf->peers.nelts; i++) {
        if (ngx_memn2cmp((u_char *) peer[i].sockaddr, (u_char *) pc->sockaddr,
                         peer[i].socklen, pc->socklen)
            == 0)
        {
            return &peer[i];
        }
    }

    return NULL;
}


/* the transitions a worker won, into the metrics (as the route layer's:
 * with a mode other than automatic the state gauge keeps the mode) */

static void
ngx_http_breaker_peers_transition(ngx_http_breaker_circuit_conf_t *conf,
    ngx_str_t *name, ngx_http_breaker_state_e from,
    ngx_http_breaker_state_e to)
{
    ngx_http_breaker_peers_conf_t *pcf = conf->data;

    ngx_uint_t                i;
    ngx_http_breaker_peer_t  *peer;

    peer = pcf->peers.elts;

    for (i = 0; i < pcf->peers.nelts; i++) {

        if (peer[i].name.len != name->len
            || ngx_strncmp(peer[i].name.data, name->data, name->len) != 0)
        {
            continue;
        }

        if (conf->mode != NGX_HTTP_BREAKER_CLOSED) {
            if (peer[i].stats.stats) {
                ngx_edge_stats_add(peer[i].stats.stats,
                                   peer[i].stats.transitions[to], 1);
            }

            return;
        }

        ngx_http_breaker_stats_transition(&peer[i].stats, from, to);
        return;
    }
}


#if (NGX_HTTP_SSL)

static ngx_int_t
ngx_http_breaker_peers_set_session(ngx_peer_connection_t *pc, void *data)
{
    ngx_http_breaker_peer_data_t *bp = data;

    return bp->original_set_session(pc, bp->data);
}


static void
ngx_http_breaker_peers_save_session(ngx_peer_connection_t *pc, void *data)
{
    ngx_http_breaker_peer_data_t *bp = data;

    bp->original_save_session(pc, bp->data);
}

#endif


/*
 * Whether the peer is ejected now: its circuit refuses (open, half-open
 * with its probes taken, forced open) and it is within the cap.
 */

static ngx_uint_t
ngx_http_breaker_peers_ejected(ngx_http_breaker_peers_conf_t *pcf,
    ngx_http_breaker_peer_t *peer, ngx_http_breaker_state_e state,
    int64_t now)
{
    if (state != NGX_HTTP_BREAKER_OPEN
        && state != NGX_HTTP_BREAKER_HALF_OPEN
        && state != NGX_HTTP_BREAKER_FORCED_OPEN)
    {
        return 0;
    }

    return ngx_http_breaker_peers_ejectable(pcf, peer, now);
}


static json_t *
ngx_http_breaker_peer_json(ngx_http_breaker_peers_conf_t *pcf,
    ngx_http_breaker_peer_t *peer, int64_t now)
{
    json_t                           *o;
    ngx_str_t                        *upstream;
    ngx_http_breaker_circuit_info_t   info;

    ngx_http_breaker_circuit_info(peer->circuit, &pcf->circuit, now, &info);

    upstream = &pcf->upstream->host;

    o = json_object();
    if (o == NULL) {
        return NULL;
    }

    if (json_object_set_new(o, "name",
            json_stringn((char *) peer->name.data, peer->name.len))
        || json_object_set_new(o, "layer", json_string("peer"))
        || json_object_set_new(o, "zone",
               json_stringn((char *) pcf->zone->shm.name.data,
                            pcf->zone->shm.name.len))
        || json_object_set_new(o, "upstream",
               json_stringn((char *) upstream->data, upstream->len))
        || json_object_set_new(o, "peer",
               json_stringn((char *) peer->peer.data, peer->peer.len))
        || json_object_set_new(o, "ejected",
               json_boolean(ngx_http_breaker_peers_ejected(pcf, peer,
                                                           info.state, now)))
        || ngx_http_breaker_circuit_json_fields(o, &info, &pcf->circuit)
           != 0
        || json_object_set_new(o, "max_ejected",
                               json_integer(pcf->max_ejected)))
    {
        json_decref(o);
        return NULL;
    }

    return o;
}


/* the configurations of the upstreams with breaker_peers, in turn */

static ngx_http_breaker_peers_conf_t *
ngx_http_breaker_peers_next(ngx_cycle_t *cycle, ngx_uint_t *i)
{
    ngx_http_upstream_main_conf_t   *umcf;
    ngx_http_upstream_srv_conf_t   **uscfp;
    ngx_http_breaker_peers_conf_t   *pcf;

    if (cycle->conf_ctx == NULL) {
        return NULL;
    }

    umcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_upstream_module);
    if (umcf == NULL) {
        return NULL;
    }

    uscfp = umcf->upstreams.elts;

    while (*i < umcf->upstreams.nelts) {
        pcf = ngx_http_breaker_peers_conf(uscfp[(*i)++]);

        if (pcf) {
            if (!pcf->resolved) {
                ngx_http_breaker_peers_resolve(pcf, cycle->log);
                ngx_http_breaker_peers_sync_gauges(cycle, pcf);
            }

            return pcf;
        }
    }

    return NULL;
}


ngx_int_t
ngx_http_breaker_peers_init_module(ngx_cycle_t *cycle)
{
    ngx_uint_t  i;

    i = 0;

    while (ngx_http_breaker_peers_next(cycle, &i)) {
        /* resolved by _next() */
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_breaker_peers_json(ngx_cycle_t *cycle, json_t *array)
{
    int64_t                         now;
    json_t                         *o;
    ngx_uint_t                      i, j;
    ngx_http_breaker_peer_t        *peer;
    ngx_http_breaker_peers_conf_t  *pcf;

    now = ngx_edge_mono_usec();
    i = 0;

    while ((pcf = ngx_http_breaker_peers_next(cycle, &i)) != NULL) {

        peer = pcf->peers.elts;

        for (j = 0; j < pcf->peers.nelts; j++) {

            if (peer[j].circuit == NULL) {
                continue;
            }

            o = ngx_http_breaker_peer_json(pcf, &peer[j], now);

            if (o == NULL || json_array_append_new(array, o) != 0) {
                return NGX_ERROR;
            }
        }
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_breaker_peers_force(ngx_cycle_t *cycle, ngx_str_t *name,
    ngx_http_breaker_state_e state, ngx_log_t *log)
{
    ngx_uint_t                      i, j;
    ngx_http_breaker_peer_t        *peer;
    ngx_http_breaker_state_e        from;
    ngx_http_breaker_peers_conf_t  *pcf;

    i = 0;

    while ((pcf = ngx_http_breaker_peers_next(cycle, &i)) != NULL) {

        peer = pcf->peers.elts;

        for (j = 0; j < pcf->peers.nelts; j++) {

            if (peer[j].name.len != name->len
                || ngx_strncmp(peer[j].name.data, name->data, name->len)
                   != 0)
            {
                continue;
            }

            if (peer[j].circuit == NULL) {
                return NGX_ERROR;
            }

            from = ngx_http_breaker_circuit_force_state(peer[j].circuit,
                                                        state,
                                                        &peer[j].name, log);

            /* counted like the other transitions */
            ngx_http_breaker_peers_transition(&pcf->circuit, &peer[j].name,
                                              from, state);
            return NGX_OK;
        }
    }

    return NGX_DECLINED;
}
