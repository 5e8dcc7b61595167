/*
 * An asynchronous Redis client on nginx's event loop, built on hiredis's
 * async API.
 *
 * Each configured server gets one connection per worker.  Commands from
 * every request in the worker share it: they are appended to hiredis's
 * output buffer and flushed together once per event-loop iteration (a
 * posted write event), so concurrent requests are pipelined in one write,
 * and replies are matched in order.
 *
 * Commands are plain ones (ngx_edge_redis_send_command(): GET, SET, ...,
 * the handler gets the whole reply), or the items of batched scripts: a
 * script written to loop over items (a fixed number of KEYS and ARGV per
 * item, the item count being #KEYS / keys-per-item) is registered with
 * ngx_edge_redis_add_batch_script(), and each item is sent with
 * ngx_edge_redis_send_item().  The items queued during one event-loop
 * iteration leave as one EVALSHA per script (at most "batch=" items each),
 * and the script's reply, an array with one element per item, is split:
 * each item's handler gets its own element.  Redis runs one script for
 * many decisions: its per-call cost (several microseconds, more than the
 * decision itself) is paid once per batch.
 *
 * An item is tracked by a slot taken from a fixed per-connection array
 * (the in-flight bound).  The slot, not the request, is hiredis's privdata:
 * a request that goes away detaches its slot (ngx_edge_redis_detach() from
 * a pool cleanup), and the reply that arrives later finds no handler.
 *
 * The handler contract.  The handler is called exactly once per
 * ngx_edge_redis_send_item() that returned a slot, unless the slot was
 * detached first; the slot is already free by then, so the handler gets
 * the caller's data only:
 *   rc == NGX_OK       reply != NULL: the item's element of the script's
 *                      reply, or the whole reply when it is an error reply
 *   rc == NGX_ERROR    connection lost or dropped, or a reply of the wrong
 *                      shape; reply == NULL
 *   rc == NGX_AGAIN    the item timed out ("timeout="), reply == NULL
 * While a handler is attached, the slot's timer is not cancelable: a worker
 * that is shutting down (reload, nginx -s quit) stays until every waiting
 * request got its reply or its timeout.  An answered, timed-out or
 * detached slot has no timer.  A connection with no handler attached is
 * idle: a worker that is shutting down closes it at once, or as soon as
 * the last waiting request has its answer, even while other work keeps
 * the worker alive.
 *
 * Connection health.  A connection is given up, and every item still on it
 * gets NGX_ERROR, when it is lost, when the TCP connect takes longer than
 * "connect_timeout=", when the handshake (AUTH, SELECT, SCRIPT LOAD) fails,
 * or when it has gone silent: an item timed out, and no reply of any kind
 * arrived on the connection from the moment that item was queued until
 * 1 s later (or its timeout, if longer).  The worker then reconnects with
 * a backoff (100 ms doubling to 3 s, reset only once a handshake
 * completes), trying the server's resolved addresses in turn.  Items are
 * sent as soon as TCP connects, behind the handshake in the pipeline;
 * until then ngx_edge_redis_send_item() returns NULL.
 *
 * Sentinel.  A server given as "sentinel=addr,... master=name" has no
 * address of its own: each worker asks a Sentinel (the next one on
 * failure) "SENTINEL get-master-addr-by-name", connects to that primary,
 * and takes items only once the handshake, which then ends with ROLE,
 * proved it a master.  A second connection per worker to one Sentinel
 * subscribes to +switch-master: a switch of our master drops the
 * connection to the old primary (its items get NGX_ERROR) and connects to
 * the new one at once.  Every reconnect asks again, and so does a
 * READONLY or MASTERDOWN reply (a demoted primary).
 *
 * Cluster.  A server given as "cluster=addr,..." is a Redis Cluster: each
 * worker connects to the seed nodes, asks one of them CLUSTER SLOTS, and
 * keeps one connection per node in the map.  An item or a command goes to
 * the node that serves its key's hash slot (CRC16 of the key's {hash tag},
 * or of the key, mod 16384; the key is an item's first one, a command's
 * first argument, or an EVAL's first key).  Items are batched per slot: an
 * EVALSHA never carries keys of two slots.  A batch answered MOVED is sent
 * again to the node named (the map updated for that slot and refreshed
 * soon), one answered ASK is sent there behind ASKING, at most 5 times;
 * so is a plain command, from a copy made when it was sent (hiredis
 * keeps none once written): in a 4 KiB buffer the slot keeps, or, for a
 * larger one (a cache entry's SET), in one allocation freed with the
 * slot.  A batch answered TRYAGAIN (keys of a migrating slot split
 * between its two nodes) is sent again after a backoff (10 ms doubling
 * to 250 ms), from the slot's node in the map, at most 10 times; then the
 * error reply is its items' answer (a plain command answered TRYAGAIN
 * gets it at once).  An item whose node is not connected, or whose slot
 * no node serves, is not sent (NULL): the caller's failure policy applies
 * until the map changes.  The map is asked again every 10 s, after a
 * MOVED, and after a node fails.  A node that serves no slot in two maps
 * 5 s apart (not a seed) has its connection closed, and reconnected only
 * if a map, MOVED or ASK names it again.
 * ngx_edge_redis_hold() and _release() on a Cluster server hold every
 * node's connection (the next command's node is not known yet).
 */

#ifndef _NGX_EDGE_REDIS_H_INCLUDED_
#define _NGX_EDGE_REDIS_H_INCLUDED_


#include "ngx_edge_common.h"
#include "ngx_edge_stats.h"

#include <hiredis/hiredis.h>
#include <hiredis/async.h>


typedef struct ngx_edge_redis_server_s  ngx_edge_redis_server_t;
typedef struct ngx_edge_redis_conn_s    ngx_edge_redis_conn_t;
typedef struct ngx_edge_redis_cmd_s     ngx_edge_redis_cmd_t;
typedef struct ngx_edge_redis_cluster_s ngx_edge_redis_cluster_t;

typedef void (*ngx_edge_redis_handler_pt)(void *data, redisReply *reply,
    ngx_int_t rc);


typedef struct {
    ngx_str_t                    host;       /* numeric, a C string */
    int                          port;
} ngx_edge_redis_addr_t;


typedef struct {
    ngx_str_t                    source;
    u_char                       sha1[40];

    /* batched scripts only (item_keys > 0) */
    ngx_uint_t                   index;      /* among the batched ones */
    ngx_uint_t                   item_keys;
    ngx_uint_t                   item_args;
} ngx_edge_redis_script_t;


struct ngx_edge_redis_server_s {
    ngx_str_t                    name;
    ngx_str_t                    address;    /* as written, for logs */

    ngx_str_t                   *hosts;      /* numeric, resolved at conf,
                                                C strings */
    ngx_uint_t                   nhosts;
    int                          port;
    ngx_str_t                    unix_path;  /* or a unix: socket */

    /* or the primary of master_name, asked of these Sentinels */
    ngx_edge_redis_addr_t       *sentinels;
    ngx_uint_t                   nsentinels;
    ngx_str_t                    master_name;        /* C strings */
    ngx_str_t                    sentinel_user;      /* an ACL user */
    ngx_str_t                    sentinel_password;

    /* or a Redis Cluster, discovered from these seed nodes */
    ngx_edge_redis_addr_t       *seeds;
    ngx_uint_t                   nseeds;

    ngx_str_t                    user;
    ngx_str_t                    password;
    ngx_int_t                    db;

    ngx_msec_t                   connect_timeout;
    ngx_msec_t                   timeout;
    ngx_uint_t                   max_inflight;
    ngx_uint_t                   batch;      /* items per EVALSHA, max */

    ngx_array_t                  scripts;    /* ngx_edge_redis_script_t * */
    ngx_uint_t                   nbatched;   /* of them, batched */

    /* series in the owning module's stats zone */
    ngx_edge_stats_t            *stats;
    ngx_edge_stats_id_t          st_commands;
    ngx_edge_stats_id_t          st_errors;
    ngx_edge_stats_id_t          st_timeouts;
    ngx_edge_stats_id_t          st_reconnects;
    ngx_edge_stats_id_t          st_inflight;
    ngx_edge_stats_id_t          st_rtt;
    ngx_edge_stats_id_t          st_connected;   /* workers whose
                                                    connection is READY */

    ngx_edge_redis_conn_t       *conn;       /* this worker's connection */

    /* Cluster: the worker's slot map and nodes (on the configured server
     * and on each node, a server of its own made by the worker) */
    ngx_edge_redis_cluster_t    *cluster;
    unsigned                     node:1;
};


struct ngx_edge_redis_cmd_s {
    ngx_edge_redis_conn_t       *conn;       /* where it was sent */
    ngx_edge_redis_conn_t       *home;       /* whose free list it is in */
    ngx_uint_t                   slot;       /* Cluster: the key's */
    ngx_uint_t                   redirects;  /* Cluster: MOVED, ASK */
    u_char                      *copy;       /* Cluster: a plain command
                                                as sent, for a redirect:
                                                the slot's own buffer */
    u_char                      *big;        /* or, past its size, one
                                                allocated for this command
                                                and freed with the slot */
    size_t                       copy_len;
    ngx_edge_redis_handler_pt    handler;    /* NULL once detached */
    void                        *data;       /* the caller's */

    /* the item's keys and args, the caller's memory, valid until it
     * detaches (kept for a NOSCRIPT retry) */
    ngx_edge_redis_script_t     *script;
    const char                 **argv;
    const size_t                *argvlen;

    int64_t                      start;      /* plain commands: sent at,
                                                monotonic microseconds */
    ngx_event_t                  timer;      /* not cancelable */
    ngx_uint_t                   replies;    /* the connection's reply count
                                                when the item was queued */
    ngx_queue_t                  queue;      /* free list, or an item
                                                waiting for the flush */
};


/* configuration time */

/* args: "name address [password=..|password_file=..] [user=..] [db=N]
 * [connect_timeout=T] [timeout=T] [max_inflight=N] [batch=N]", or
 * "name sentinel=addr[,addr...] master=name [sentinel_user=..]
 * [sentinel_password=..] ..."
 * in place of the address */
NGX_EDGE_API ngx_edge_redis_server_t *ngx_edge_redis_parse_server(
    ngx_conf_t *cf, ngx_str_t *args, ngx_uint_t nargs);

NGX_EDGE_API ngx_int_t ngx_edge_redis_register_stats(ngx_conf_t *cf,
    ngx_edge_redis_server_t *server, ngx_edge_stats_t *stats,
    const char *prefix);

NGX_EDGE_API ngx_edge_redis_script_t *ngx_edge_redis_add_script(
    ngx_conf_t *cf, ngx_edge_redis_server_t *server, ngx_str_t *source);

/* a script whose items are sent with ngx_edge_redis_send_item() */
NGX_EDGE_API ngx_edge_redis_script_t *ngx_edge_redis_add_batch_script(
    ngx_conf_t *cf, ngx_edge_redis_server_t *server, ngx_str_t *source,
    ngx_uint_t item_keys, ngx_uint_t item_args);

/* worker life */

NGX_EDGE_API ngx_int_t ngx_edge_redis_init_worker(ngx_cycle_t *cycle,
    ngx_edge_redis_server_t *server);
NGX_EDGE_API void ngx_edge_redis_exit_worker(ngx_edge_redis_server_t *server);

/* request time */

NGX_EDGE_API ngx_flag_t ngx_edge_redis_ready(ngx_edge_redis_server_t *server);

/* One item of a batched script: argv holds its item_keys keys, then its
 * item_args args, valid until the handler runs or the item is detached
 * (r->pool is fine).  Returns NULL when the server is not ready or the
 * in-flight bound is reached: the caller applies its failure policy. */
NGX_EDGE_API ngx_edge_redis_cmd_t *ngx_edge_redis_send_item(
    ngx_edge_redis_server_t *server, ngx_edge_redis_script_t *script,
    ngx_edge_redis_handler_pt handler, void *data, const char **argv,
    const size_t *argvlen);

/* One plain command (GET, SET, EVAL ...), encoded at once: argv need not
 * outlive the call.  The handler gets the whole reply, of any type (an
 * error reply too), with NGX_OK; NGX_ERROR and NGX_AGAIN as for items.
 * NULL when the server is not ready or the in-flight bound is reached. */
NGX_EDGE_API ngx_edge_redis_cmd_t *ngx_edge_redis_send_command(
    ngx_edge_redis_server_t *server, ngx_edge_redis_handler_pt handler,
    void *data, ngx_uint_t argc, const char **argv, const size_t *argvlen);

/* A command that must reach every primary of a Cluster (a SCAN): the
 * index of the first node at or after "from" that serves a slot of the
 * map, NGX_DONE past the last, NGX_DECLINED while the map is not known;
 * a server that is not a Cluster has one node, 0.  The indexes of a
 * worker's nodes never change (a node that leaves keeps its index). */
NGX_EDGE_API ngx_int_t ngx_edge_redis_next_node(
    ngx_edge_redis_server_t *server, ngx_uint_t from);

/* A caller whose command to a node failed as if the map were stale (a
 * node demoted to a replica answers "non local key" to a keyless
 * script): the map is asked again soon, as after MOVED.  Nothing for a
 * server that is not a Cluster. */
NGX_EDGE_API void ngx_edge_redis_refresh_map(ngx_edge_redis_server_t *server);

/* A plain command sent to that node whatever its keys (none, or keys the
 * node holds: a SCAN's); as ngx_edge_redis_send_command() otherwise. */
NGX_EDGE_API ngx_edge_redis_cmd_t *ngx_edge_redis_send_command_to(
    ngx_edge_redis_server_t *server, ngx_uint_t node,
    ngx_edge_redis_handler_pt handler, void *data, ngx_uint_t argc,
    const char **argv, const size_t *argvlen);

/* From a handler: the reply outlives the handler (its bytes are sent
 * without a copy, say); the caller frees it with freeReplyObject(). */
NGX_EDGE_API void ngx_edge_redis_keep_reply(redisReply *reply);

/* A caller about to send again soon (a request polling on a timer of its
 * own) holds the connection between its commands: held, it is not idle,
 * so a worker shutting down keeps it open as it does while a command is
 * attached.  Every hold is released once. */
NGX_EDGE_API void ngx_edge_redis_hold(ngx_edge_redis_server_t *server);
NGX_EDGE_API void ngx_edge_redis_release(ngx_edge_redis_server_t *server);

/* bytes queued for this worker's connection and not yet written: a
 * caller that sends large values (the cache's SETs) stops adding when
 * Redis does not keep up */
NGX_EDGE_API size_t ngx_edge_redis_backlog(ngx_edge_redis_server_t *server);

NGX_EDGE_API void ngx_edge_redis_detach(ngx_edge_redis_cmd_t *cmd);


#endif /* _NGX_EDGE_REDIS_H_INCLUDED_ */
