/*
 * An asynchronous PostgreSQL query on nginx's event loop: libpq's
 * non-blocking connect and query API driven by nginx events and one timer.
 * See ngx_edge_pg.h for the contract.
 */

#include "ngx_edge_pg.h"


#define NGX_EDGE_PG_DEFAULT_PORT  "5432"
#define NGX_EDGE_PG_SECRETS_MAX   8


typedef enum {
    NGX_EDGE_PG_IDLE = 0,
    NGX_EDGE_PG_CONNECTING,
    NGX_EDGE_PG_SENDING,
    NGX_EDGE_PG_READING
} ngx_edge_pg_state_e;


typedef struct {
    u_char                      *start;
    u_char                      *end;
} ngx_edge_pg_span_t;


static ngx_uint_t ngx_edge_pg_find_secrets(u_char *p, u_char *last,
    ngx_edge_pg_span_t *spans, ngx_uint_t max);
static u_char *ngx_edge_pg_value_end(u_char *p, u_char *last);
static void ngx_edge_pg_event_handler(ngx_event_t *ev);
static void ngx_edge_pg_timeout_handler(ngx_event_t *ev);
static void ngx_edge_pg_connect_poll(ngx_edge_pg_t *pg);
static void ngx_edge_pg_send(ngx_edge_pg_t *pg);
static void ngx_edge_pg_io(ngx_edge_pg_t *pg);
static ngx_int_t ngx_edge_pg_collect(ngx_edge_pg_t *pg, PGresult *res);
static void ngx_edge_pg_done(ngx_edge_pg_t *pg);
static void ngx_edge_pg_fail(ngx_edge_pg_t *pg, ngx_int_t rc,
    const char *fmt, ...);
static ngx_int_t ngx_edge_pg_watch(ngx_edge_pg_t *pg, ngx_uint_t read,
    ngx_uint_t write);
static void ngx_edge_pg_unwatch(ngx_edge_pg_t *pg);
static void ngx_edge_pg_set_error(ngx_edge_pg_t *pg, const char *fmt, ...);
static void ngx_edge_pg_notice(void *arg, const char *message);


/* configuration */

static char *
ngx_edge_pg_strdup(ngx_pool_t *pool, const char *s, size_t len)
{
    u_char  *p;

    p = ngx_pnalloc(pool, len + 1);
    if (p == NULL) {
        return NULL;
    }

    ngx_memcpy(p, s, len);
    p[len] = '\0';

    return (char *) p;
}


static ngx_flag_t
ngx_edge_pg_numeric_host(ngx_str_t *host)
{
#if (NGX_HAVE_INET6)
    u_char  addr6[16];
#endif

    if (ngx_inet_addr(host->data, host->len) != INADDR_NONE) {
        return 1;
    }

#if (NGX_HAVE_INET6)
    if (ngx_inet6_addr(host->data, host->len, addr6) == NGX_OK) {
        return 1;
    }
#endif

    return 0;
}


/* a single host, or a list of addresses and socket directories only */

static ngx_flag_t
ngx_edge_pg_host_list_ok(ngx_str_t *host)
{
    u_char     *p, *last, *comma;
    ngx_str_t   one;

    last = host->data + host->len;

    if (ngx_strlchr(host->data, last, ',') == NULL) {
        return 1;
    }

    for (p = host->data; p < last; p = comma + 1) {
        comma = ngx_strlchr(p, last, ',');
        if (comma == NULL) {
            comma = last;
        }

        one.data = p;
        one.len = comma - p;

        if (one.len && one.data[0] != '/' && one.data[0] != '@'
            && !ngx_edge_pg_numeric_host(&one))
        {
            return 0;
        }
    }

    return 1;
}


ngx_int_t
ngx_edge_pg_parse_dsn(ngx_conf_t *cf, ngx_str_t *conninfo,
    ngx_str_t *password, ngx_edge_pg_dsn_t *dsn, ngx_str_t *err)
{
    char               *cstr, *errmsg;
    u_char             *p;
    size_t              len;
    ngx_str_t           host, hostaddr, port, shown, msg;
    ngx_url_t           u;
    ngx_uint_t          n, i;
    PQconninfoOption   *opts, *o;

    cstr = ngx_edge_pg_strdup(cf->temp_pool, (const char *) conninfo->data,
                              conninfo->len);
    if (cstr == NULL) {
        return NGX_ERROR;
    }

    errmsg = NULL;
    opts = PQconninfoParse(cstr, &errmsg);

    if (opts == NULL) {
        if (errmsg == NULL) {
            ngx_str_set(err, "out of memory");
            return NGX_ERROR;
        }

        len = ngx_strlen(errmsg);
        while (len && (errmsg[len - 1] == '\n' || errmsg[len - 1] == ' ')) {
            len--;
        }

        /* libpq quotes the string, or the piece it stumbled on */
        msg.data = (u_char *) errmsg;
        msg.len = len;

        if (ngx_edge_pg_redact(cf->temp_pool, conninfo, &msg, err)
            != NGX_OK)
        {
            PQfreemem(errmsg);
            ngx_str_set(err, "out of memory");
            return NGX_ERROR;
        }

        PQfreemem(errmsg);

        return NGX_DECLINED;
    }

    ngx_str_null(&host);
    ngx_str_null(&hostaddr);
    ngx_str_null(&port);

    n = 0;

    for (o = opts; o->keyword; o++) {
        if (o->val == NULL) {
            continue;
        }

        n++;

        if (ngx_strcmp(o->keyword, "host") == 0) {
            host.data = (u_char *) o->val;
            host.len = ngx_strlen(o->val);

        } else if (ngx_strcmp(o->keyword, "hostaddr") == 0) {
            hostaddr.data = (u_char *) o->val;
            hostaddr.len = ngx_strlen(o->val);

        } else if (ngx_strcmp(o->keyword, "port") == 0) {
            port.data = (u_char *) o->val;
            port.len = ngx_strlen(o->val);

        } else if (ngx_strcmp(o->keyword, "service") == 0) {
            /* libpq would read pg_service.conf, and resolve the names in
             * it, in the worker, at every connect */
            ngx_str_set(err, "\"service\" is not supported: write the "
                        "host, port and database in the DSN");
            PQconninfoFree(opts);
            return NGX_DECLINED;

        } else if (ngx_strcmp(o->keyword, "password") == 0 && password) {
            ngx_str_set(err, "it has a password, and a password file is "
                        "given too");
            PQconninfoFree(opts);
            return NGX_DECLINED;
        }
    }

    if (host.len && hostaddr.len == 0 && !ngx_edge_pg_host_list_ok(&host)) {
        /* libpq resolves a list's names itself, with a blocking
         * getaddrinfo() in the worker */
        ngx_str_set(err, "a list of host names needs \"hostaddr=\" with "
                    "their addresses (names are resolved only for a "
                    "single host)");
        PQconninfoFree(opts);
        return NGX_DECLINED;
    }

    /* the options, hostaddr, password and the terminating NULL */
    dsn->keywords = ngx_pcalloc(cf->pool, (n + 3) * sizeof(char *));
    dsn->values = ngx_pcalloc(cf->pool, (n + 3) * sizeof(char *));
    if (dsn->keywords == NULL || dsn->values == NULL) {
        goto nomem;
    }

    i = 0;

    for (o = opts; o->keyword; o++) {
        if (o->val == NULL) {
            continue;
        }

        dsn->keywords[i] = ngx_edge_pg_strdup(cf->pool, o->keyword,
                                              ngx_strlen(o->keyword));
        dsn->values[i] = ngx_edge_pg_strdup(cf->pool, o->val,
                                            ngx_strlen(o->val));
        if (dsn->keywords[i] == NULL || dsn->values[i] == NULL) {
            goto nomem;
        }

        i++;
    }

    /*
     * One host name, no hostaddr: resolve it now and hand libpq the
     * address (it keeps "host" for authentication and TLS).  Socket
     * directories and lists of hosts are left to libpq.
     */

    if (host.len
        && hostaddr.len == 0
        && host.data[0] != '/'
        && host.data[0] != '@'
        && ngx_strlchr(host.data, host.data + host.len, ',') == NULL
        && !ngx_edge_pg_numeric_host(&host))
    {
        ngx_memzero(&u, sizeof(ngx_url_t));

        u.host = host;
        u.port = 5432;

        if (ngx_inet_resolve_host(cf->pool, &u) != NGX_OK || u.naddrs == 0) {
            err->len = sizeof("host \"\" not found") - 1 + host.len;
            err->data = ngx_pnalloc(cf->temp_pool, err->len);
            if (err->data == NULL) {
                goto nomem;
            }

            ngx_sprintf(err->data, "host \"%V\" not found", &host);
            PQconninfoFree(opts);
            return NGX_DECLINED;
        }

        p = ngx_pnalloc(cf->pool, NGX_SOCKADDR_STRLEN + 1);
        if (p == NULL) {
            goto nomem;
        }

        len = ngx_sock_ntop(u.addrs[0].sockaddr, u.addrs[0].socklen, p,
                            NGX_SOCKADDR_STRLEN, 0);
        p[len] = '\0';

        dsn->keywords[i] = "hostaddr";
        dsn->values[i] = (char *) p;
        i++;
    }

    if (password) {
        dsn->keywords[i] = "password";
        dsn->values[i] = ngx_edge_pg_strdup(cf->pool,
                                            (const char *) password->data,
                                            password->len);
        if (dsn->values[i] == NULL) {
            goto nomem;
        }

        i++;
    }

    /* for logs: where, never who or with which password */

    if (host.len) {
        shown = host;

    } else if (hostaddr.len) {
        shown = hostaddr;

    } else {
        ngx_str_set(&shown, "local socket");
    }

    if (port.len == 0) {
        ngx_str_set(&port, NGX_EDGE_PG_DEFAULT_PORT);
    }

    dsn->peer.len = shown.len + 1 + port.len;
    dsn->peer.data = ngx_pnalloc(cf->pool, dsn->peer.len);
    if (dsn->peer.data == NULL) {
        goto nomem;
    }

    ngx_sprintf(dsn->peer.data, "%V:%V", &shown, &port);

    PQconninfoFree(opts);

    return NGX_OK;

nomem:

    PQconninfoFree(opts);
    ngx_str_set(err, "out of memory");

    return NGX_ERROR;
}


ngx_int_t
ngx_edge_pg_redact(ngx_pool_t *pool, ngx_str_t *conninfo, ngx_str_t *text,
    ngx_str_t *out)
{
    u_char              *p, *last, *d;
    size_t               len;
    ngx_uint_t           i, k, nspans, nsecrets, hit;
    ngx_edge_pg_span_t   spans[NGX_EDGE_PG_SECRETS_MAX];
    ngx_edge_pg_span_t   secrets[NGX_EDGE_PG_SECRETS_MAX];

    p = text->data;
    last = p + text->len;

    nspans = ngx_edge_pg_find_secrets(p, last, spans,
                                      NGX_EDGE_PG_SECRETS_MAX);
    nsecrets = 0;

    if (conninfo) {
        nsecrets = ngx_edge_pg_find_secrets(conninfo->data,
                                            conninfo->data + conninfo->len,
                                            secrets,
                                            NGX_EDGE_PG_SECRETS_MAX);
    }

    /* a quoted password is quoted without its quotes */
    for (i = 0; i < nsecrets; i++) {
        if (secrets[i].end - secrets[i].start >= 2
            && secrets[i].start[0] == '\''
            && secrets[i].end[-1] == '\'')
        {
            secrets[i].start++;
            secrets[i].end--;
        }
    }

    /* "***" for at least one byte, or for an empty value */
    out->data = ngx_pnalloc(pool, 4 * text->len + 4);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    d = out->data;
    k = 0;

    for ( ;; ) {
        while (k < nspans && spans[k].start < p) {
            k++;
        }

        if (k < nspans && spans[k].start == p) {
            d = ngx_cpymem(d, "***", 3);
            p = spans[k++].end;
            continue;
        }

        if (p >= last) {
            break;
        }

        hit = 0;

        for (i = 0; i < nsecrets; i++) {
            len = secrets[i].end - secrets[i].start;

            if (len && (size_t) (last - p) >= len
                && ngx_memcmp(p, secrets[i].start, len) == 0)
            {
                d = ngx_cpymem(d, "***", 3);
                p += len;
                hit = 1;
                break;
            }
        }

        if (!hit) {
            *d++ = *p++;
        }
    }

    out->len = d - out->data;

    return NGX_OK;
}


/* not locale-dependent, unlike isalnum() */

static ngx_inline ngx_flag_t
ngx_edge_pg_word_char(u_char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
           || (c >= '0' && c <= '9') || c == '_';
}


/* the passwords in a connection string, a URI or a message quoting them */

static ngx_uint_t
ngx_edge_pg_find_secrets(u_char *p, u_char *last, ngx_edge_pg_span_t *spans,
    ngx_uint_t max)
{
    u_char      *s, *v, *at, *end;
    ngx_uint_t   n;

    n = 0;

    for (s = p; s < last && n < max; s++) {

        /* password = value, password=value in a URI's query */

        if (last - s >= 8
            && ngx_strncasecmp(s, (u_char *) "password", 8) == 0
            && (s == p || !ngx_edge_pg_word_char(s[-1])))
        {
            v = s + 8;

            if (v < last && *v != '=' && *v != '"' && *v != ' '
                && *v != '\t' && *v != '\n' && *v != '\r')
            {
                /* "passwordXYZ": a missing "=", libpq quotes it whole */
                end = ngx_edge_pg_value_end(v, last);

                spans[n].start = v;
                spans[n].end = end;
                n++;

                s = end - 1;
                continue;
            }

            while (v < last && (*v == ' ' || *v == '\t')) {
                v++;
            }

            if (v == last || *v != '=') {
                continue;
            }

            v++;

            while (v < last && (*v == ' ' || *v == '\t')) {
                v++;
            }

            end = ngx_edge_pg_value_end(v, last);

            spans[n].start = v;
            spans[n].end = end;
            n++;

            s = end - 1;
            continue;
        }

        /* scheme://user:password@host */

        if (last - s >= 3 && s[0] == ':' && s[1] == '/' && s[2] == '/') {

            for (end = s + 3; end < last; end++) {
                if (*end == '/' || *end == '?' || *end == '#' || *end == '"'
                    || *end == ' ' || *end == '\t' || *end == '\n')
                {
                    break;
                }
            }

            at = NULL;

            for (v = s + 3; v < end; v++) {
                if (*v == '@') {
                    at = v;
                }
            }

            if (at) {
                v = ngx_strlchr(s + 3, at, ':');

                if (v) {
                    spans[n].start = v + 1;
                    spans[n].end = at;
                    n++;
                }
            }

            s = end - 1;
        }
    }

    return n;
}


/* the end of a value: a quoted one (with backslash escapes) or a word */

static u_char *
ngx_edge_pg_value_end(u_char *p, u_char *last)
{
    if (p < last && *p == '\'') {

        for (p++; p < last; p++) {

            if (*p == '\\' && p + 1 < last) {
                p++;
                continue;
            }

            if (*p == '\'') {
                return p + 1;
            }
        }

        return last;
    }

    while (p < last
           && *p != ' ' && *p != '\t' && *p != '\n' && *p != '\r'
           && *p != '&' && *p != '"')
    {
        p++;
    }

    return p;
}


/* configuration time: the health gauge */

ngx_edge_stats_id_t
ngx_edge_pg_register_stats(ngx_conf_t *cf, ngx_edge_stats_t *stats,
    const char *prefix, const char *label, ngx_str_t *value)
{
    u_char                   *name;
    ngx_int_t                 fam;
    const char              **labels;
    ngx_edge_stats_family_t   family;

    name = ngx_pnalloc(cf->pool, ngx_strlen(prefix)
                                 + sizeof("_pg_failing"));
    labels = ngx_palloc(cf->pool, 2 * sizeof(const char *));
    if (name == NULL || labels == NULL) {
        return NGX_EDGE_STATS_NONE;
    }

    ngx_sprintf(name, "%s_pg_failing%Z", prefix);

    labels[0] = label;
    labels[1] = NULL;

    ngx_memzero(&family, sizeof(ngx_edge_stats_family_t));
    family.name = (const char *) name;
    family.help = "1 while the last exchange with PostgreSQL failed.";
    family.type = NGX_EDGE_STATS_GAUGE;
    family.labels = labels;

    fam = ngx_edge_stats_add_family(cf, stats, &family);
    if (fam == NGX_ERROR) {
        return NGX_EDGE_STATS_NONE;
    }

    return ngx_edge_stats_add_series(cf, stats, fam, value);
}


/* worker time */

void
ngx_edge_pg_init(ngx_edge_pg_t *pg, ngx_edge_pg_dsn_t *dsn, ngx_log_t *log)
{
    ngx_memzero(pg, sizeof(ngx_edge_pg_t));

    pg->dsn = dsn;
    pg->log = log;

    pg->timer.handler = ngx_edge_pg_timeout_handler;
    pg->timer.data = pg;
    pg->timer.log = log;
    pg->timer.cancelable = 1;
}


ngx_int_t
ngx_edge_pg_query(ngx_edge_pg_t *pg, const char *query, ngx_msec_t timeout,
    ngx_edge_pg_handler_pt handler, void *data)
{
    if (pg->state != NGX_EDGE_PG_IDLE) {
        return NGX_BUSY;
    }

    pg->query = query;
    pg->timeout = timeout;
    pg->failed = 0;
    pg->err.len = 0;

    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, pg->log, 0,
                   "postgresql %V: connecting", &pg->dsn->peer);

    pg->conn = PQconnectStartParams(pg->dsn->keywords, pg->dsn->values, 0);

    if (pg->conn == NULL) {
        ngx_edge_pg_set_error(pg, "cannot allocate a connection");
        return NGX_ERROR;
    }

    if (PQstatus(pg->conn) == CONNECTION_BAD
        || PQsetnonblocking(pg->conn, 1) != 0)
    {
        ngx_edge_pg_set_error(pg, "%s", PQerrorMessage(pg->conn));
        ngx_edge_pg_close(pg);
        return NGX_ERROR;
    }

    /* the server's NOTICEs would go to stderr */
    (void) PQsetNoticeProcessor(pg->conn, ngx_edge_pg_notice, pg);

    pg->state = NGX_EDGE_PG_CONNECTING;

    /* libpq: right after PQconnectStart(), act as if PQconnectPoll() had
     * returned PGRES_POLLING_WRITING */
    if (ngx_edge_pg_watch(pg, 0, 1) != NGX_OK) {
        ngx_edge_pg_set_error(pg, "cannot watch the connection's socket");
        ngx_edge_pg_close(pg);
        return NGX_ERROR;
    }

    pg->handler = handler;
    pg->data = data;

    ngx_add_timer(&pg->timer, timeout);

    return NGX_OK;
}


ngx_str_t *
ngx_edge_pg_error(ngx_edge_pg_t *pg)
{
    return &pg->err;
}


void
ngx_edge_pg_close(ngx_edge_pg_t *pg)
{
    if (pg->timer.timer_set) {
        ngx_del_timer(&pg->timer);
    }

    /* before PQfinish(), which closes the socket */
    ngx_edge_pg_unwatch(pg);

    if (pg->conn) {
        PQfinish(pg->conn);
        pg->conn = NULL;
    }

    if (pg->result) {
        PQclear(pg->result);
        pg->result = NULL;
    }

    pg->state = NGX_EDGE_PG_IDLE;
    pg->handler = NULL;
    pg->data = NULL;
}


/* the exchange */

static void
ngx_edge_pg_event_handler(ngx_event_t *ev)
{
    ngx_connection_t  *c = ev->data;
    ngx_edge_pg_t     *pg = c->data;

    switch (pg->state) {

    case NGX_EDGE_PG_CONNECTING:
        ngx_edge_pg_connect_poll(pg);
        break;

    case NGX_EDGE_PG_SENDING:
    case NGX_EDGE_PG_READING:
        ngx_edge_pg_io(pg);
        break;

    default:
        /* not watched while idle */
        break;
    }
}


static void
ngx_edge_pg_timeout_handler(ngx_event_t *ev)
{
    ngx_edge_pg_t  *pg = ev->data;

    ngx_edge_pg_fail(pg, NGX_AGAIN, "timed out after %M ms while %s",
                     pg->timeout,
                     pg->state == NGX_EDGE_PG_CONNECTING
                     ? "connecting" : "waiting for the result");
}


static void
ngx_edge_pg_connect_poll(ngx_edge_pg_t *pg)
{
    PostgresPollingStatusType  rc;

    /*
     * PQconnectPoll() may close the socket and open another one (the next
     * address or host, a retry without SSL): stop watching this one while
     * it is still open, and watch whatever PQsocket() is afterwards.  A
     * new socket may well get the old descriptor number.
     */
    ngx_edge_pg_unwatch(pg);

    rc = PQconnectPoll(pg->conn);

    switch (rc) {

    case PGRES_POLLING_READING:
    case PGRES_POLLING_WRITING:
        if (ngx_edge_pg_watch(pg, rc == PGRES_POLLING_READING,
                              rc == PGRES_POLLING_WRITING)
            != NGX_OK)
        {
            ngx_edge_pg_fail(pg, NGX_ERROR,
                             "cannot watch the connection's socket");
        }

        return;

    case PGRES_POLLING_OK:
        ngx_log_debug1(NGX_LOG_DEBUG_EVENT, pg->log, 0,
                       "postgresql %V: connected", &pg->dsn->peer);
        ngx_edge_pg_send(pg);
        return;

    default: /* PGRES_POLLING_FAILED */
        ngx_edge_pg_fail(pg, NGX_ERROR, "%s", PQerrorMessage(pg->conn));
        return;
    }
}


static void
ngx_edge_pg_send(ngx_edge_pg_t *pg)
{
    if (!PQsendQuery(pg->conn, pg->query)) {
        ngx_edge_pg_fail(pg, NGX_ERROR, "%s", PQerrorMessage(pg->conn));
        return;
    }

    pg->state = NGX_EDGE_PG_SENDING;

    ngx_edge_pg_io(pg);
}


static void
ngx_edge_pg_io(ngx_edge_pg_t *pg)
{
    int        rc;
    PGresult  *res;

    /* also while sending: the server may be waiting for us to read */
    if (!PQconsumeInput(pg->conn)) {
        ngx_edge_pg_fail(pg, NGX_ERROR, "%s", PQerrorMessage(pg->conn));
        return;
    }

    if (pg->state == NGX_EDGE_PG_SENDING) {

        rc = PQflush(pg->conn);

        if (rc == -1) {
            ngx_edge_pg_fail(pg, NGX_ERROR, "%s", PQerrorMessage(pg->conn));
            return;
        }

        if (rc == 1) {
            /* the rest when the socket is writable */
            if (ngx_edge_pg_watch(pg, 1, 1) != NGX_OK) {
                ngx_edge_pg_fail(pg, NGX_ERROR,
                                 "cannot watch the connection's socket");
            }

            return;
        }

        pg->state = NGX_EDGE_PG_READING;

        if (ngx_edge_pg_watch(pg, 1, 0) != NGX_OK) {
            ngx_edge_pg_fail(pg, NGX_ERROR,
                             "cannot watch the connection's socket");
            return;
        }
    }

    while (!PQisBusy(pg->conn)) {

        res = PQgetResult(pg->conn);

        if (res == NULL) {
            ngx_edge_pg_done(pg);
            return;
        }

        if (ngx_edge_pg_collect(pg, res) != NGX_OK) {
            return;
        }
    }

    /* the rest of the results when the socket is readable again */
}


static ngx_int_t
ngx_edge_pg_collect(ngx_edge_pg_t *pg, PGresult *res)
{
    switch (PQresultStatus(res)) {

    case PGRES_TUPLES_OK:
    case PGRES_COMMAND_OK:
        if (pg->result) {
            PQclear(pg->result);
        }

        pg->result = res;
        return NGX_OK;

    case PGRES_COPY_IN:
    case PGRES_COPY_OUT:
    case PGRES_COPY_BOTH:
        /* PQgetResult() would return the same state forever */
        PQclear(res);
        ngx_edge_pg_fail(pg, NGX_ERROR, "COPY is not supported");
        return NGX_ERROR;

    case PGRES_EMPTY_QUERY:
        if (!pg->failed) {
            pg->failed = 1;
            ngx_edge_pg_set_error(pg, "the query is empty");
        }

        PQclear(res);
        return NGX_OK;

    default:
        /* the first error is the one to report; libpq still has to be
         * read until PQgetResult() returns NULL */
        if (!pg->failed) {
            pg->failed = 1;
            ngx_edge_pg_set_error(pg, "%s", PQresultErrorMessage(res));
        }

        PQclear(res);
        return NGX_OK;
    }
}


static void
ngx_edge_pg_done(ngx_edge_pg_t *pg)
{
    void                    *data;
    PGresult                *res;
    ngx_edge_pg_handler_pt   handler;

    handler = pg->handler;
    data = pg->data;

    res = pg->result;
    pg->result = NULL;

    if (res == NULL && !pg->failed) {
        pg->failed = 1;
        ngx_edge_pg_set_error(pg, "the query returned no result");
    }

    if (pg->failed && res) {
        PQclear(res);
        res = NULL;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_EVENT, pg->log, 0,
                   "postgresql %V: query done, %s", &pg->dsn->peer,
                   pg->failed ? "failed" : "ok");

    /* idle again before the handler runs: it may start the next query */
    ngx_edge_pg_close(pg);

    if (handler) {
        if (res) {
            handler(pg, data, NGX_OK, res, NULL);

        } else {
            handler(pg, data, NGX_ERROR, NULL, &pg->err);
        }

    } else if (res) {
        PQclear(res);
    }
}


static void
ngx_edge_pg_fail(ngx_edge_pg_t *pg, ngx_int_t rc, const char *fmt, ...)
{
    u_char                  *p;
    void                    *data;
    va_list                  args;
    ngx_edge_pg_handler_pt   handler;
    u_char                   buf[NGX_EDGE_PG_ERRSTR_LEN];

    va_start(args, fmt);
    p = ngx_vslprintf(buf, buf + sizeof(buf), fmt, args);
    va_end(args);

    ngx_edge_pg_set_error(pg, "%*s", (size_t) (p - buf), buf);

    handler = pg->handler;
    data = pg->data;

    ngx_edge_pg_close(pg);

    if (handler) {
        handler(pg, data, rc, NULL, &pg->err);
    }
}


/* the socket, owned by libpq, in an nginx connection while we watch it */

static ngx_int_t
ngx_edge_pg_watch(ngx_edge_pg_t *pg, ngx_uint_t read, ngx_uint_t write)
{
    ngx_socket_t       fd;
    ngx_connection_t  *c;

    fd = PQsocket(pg->conn);

    if (fd == (ngx_socket_t) -1) {
        return NGX_ERROR;
    }

    c = pg->c;

    if (c && c->fd != fd) {
        ngx_edge_pg_unwatch(pg);
        c = NULL;
    }

    if (c == NULL) {
        c = ngx_edge_conn_wrap(fd, pg->log, pg, ngx_edge_pg_event_handler,
                               ngx_edge_pg_event_handler);
        if (c == NULL) {
            return NGX_ERROR;
        }

        pg->c = c;
    }

    /* level-triggered: libpq reads what it wants, not all there is */

    if (read && !c->read->active) {
        if (ngx_add_event(c->read, NGX_READ_EVENT, NGX_LEVEL_EVENT)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

    } else if (!read && c->read->active) {
        if (ngx_del_event(c->read, NGX_READ_EVENT, 0) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    if (write && !c->write->active) {
        if (ngx_add_event(c->write, NGX_WRITE_EVENT, NGX_LEVEL_EVENT)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

    } else if (!write && c->write->active) {
        if (ngx_del_event(c->write, NGX_WRITE_EVENT, 0) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static void
ngx_edge_pg_unwatch(ngx_edge_pg_t *pg)
{
    ngx_connection_t  *c;

    c = pg->c;

    if (c == NULL) {
        return;
    }

    pg->c = NULL;

    ngx_edge_conn_release(c);
}


/* libpq's messages span lines ("... failed: Connection refused\n\tIs the
 * server running ...?\n"): one line each for the error log */

static void
ngx_edge_pg_set_error(ngx_edge_pg_t *pg, const char *fmt, ...)
{
    u_char   *p, *last, *dst, ch;
    va_list   args;
    u_char    buf[NGX_EDGE_PG_ERRSTR_LEN];

    va_start(args, fmt);
    last = ngx_vslprintf(buf, buf + sizeof(buf), fmt, args);
    va_end(args);

    dst = pg->errstr;

    for (p = buf; p < last; p++) {
        ch = *p;

        if (ch == '\n' || ch == '\r' || ch == '\t') {
            ch = ' ';
        }

        if (ch == ' ' && (dst == pg->errstr || dst[-1] == ' ')) {
            continue;
        }

        *dst++ = ch;
    }

    while (dst > pg->errstr && dst[-1] == ' ') {
        dst--;
    }

    pg->err.data = pg->errstr;
    pg->err.len = dst - pg->errstr;
}


static void
ngx_edge_pg_notice(void *arg, const char *message)
{
    ngx_edge_pg_t  *pg = arg;

    size_t  len;

    len = ngx_strlen(message);

    while (len && (message[len - 1] == '\n' || message[len - 1] == ' ')) {
        len--;
    }

    ngx_log_error(NGX_LOG_NOTICE, pg->log, 0, "postgresql %V: %*s",
                  &pg->dsn->peer, len, message);
}
