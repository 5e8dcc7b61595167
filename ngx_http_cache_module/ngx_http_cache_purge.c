/*
 * Purges: the endpoint, the tags, the check on read, the prefix jobs.
 *
 * A module of its own (ngx_http_cache_purge_module, in the cache's .so)
 * so that its directives, location configuration and worker life stay out
 * of the cache's tables.
 *
 * The endpoint (edge_cache_purge ZONE), a content handler answering JSON:
 *   key purge     DEL of the key's main Redis key (the variants hang off
 *                 its epoch: they go with it), recorded as "k:<md5>"
 *   soft          (header Edge-Purge-Soft: 1) the entry stays, recorded as
 *                 "s:<md5>": stale from now on
 *   ?tag=NAME     recorded as "t:<tag>": every entry carrying the tag and
 *                 stored before the purge is a miss; O(1), whatever the
 *                 number of entries
 *   ?prefix=TEXT  a background job over the zone's keys (below)
 *   ?pattern=GLOB
 *   ?job=ID       the job's progress, from Redis (any node)
 * A record is a member of the sorted set "<zone>:purges" scored with the
 * purge's wall-clock time (ms); each purge also trims the records older
 * than NGX_HTTP_CACHE_PURGE_KEEP.
 *
 * The check on read.  Each worker polls the set every purge_poll= with
 * ZRANGEBYSCORE from the highest score it has seen (less an overlap, for
 * records written by a node whose clock is a little behind) and keeps the
 * records in a red-black tree of its own, bounded: past
 * NGX_HTTP_CACHE_PURGE_RECORDS the oldest record is dropped and its time
 * becomes the table's floor, under which every entry is a miss (safe: a
 * purge is never forgotten, at worst an entry is fetched once more).  An
 * entry whose response time is not after a record's time is purged; the
 * lookup asks for every entry read from Redis and every L1 copy.  A purge
 * on one node is seen by every worker within purge_poll plus one round
 * trip to Redis.  Purges are counted in nginx_cache_purges_total.
 *
 * Prefix and pattern jobs.  Redis keys are hashes of the key text, so a
 * job SCANs "<zone>:{*}" (main entries only: the variants die with them),
 * reads each entry's key text (GETRANGE: the entry's key length at offset
 * 56, the text at 88, after the "NXEC" magic) and UNLINKs the matches, a
 * batch of about NGX_HTTP_CACHE_PURGE_SCAN_COUNT keys per script call, in
 * one Lua script that keeps the job's state (cursor, counts) in the hash
 * "<zone>:job:<id>".  The worker that started the job keeps exactly one
 * call in flight and sends the next one when the previous one answers,
 * so Redis serves every other client between two batches.  Never KEYS.
 */

#include "ngx_http_cache_purge.h"
#include "ngx_http_cache_l1.h"
#include "ngx_edge_json.h"
#include "ngx_edge_utf8.h"


#define NGX_HTTP_CACHE_PURGE_TAGS_MAX     32
#define NGX_HTTP_CACHE_PURGE_TAG_MAX      128
#define NGX_HTTP_CACHE_PURGE_RECORDS      16384     /* per zone, worker */
#define NGX_HTTP_CACHE_PURGE_KEEP         86400000  /* ms, records kept */
#define NGX_HTTP_CACHE_PURGE_OVERLAP      1000      /* ms read again */
#define NGX_HTTP_CACHE_PURGE_PAGE         512       /* records per poll */
#define NGX_HTTP_CACHE_PURGE_PAGES        16        /* pages per round */
#define NGX_HTTP_CACHE_PURGE_SYNC_RETRY   50        /* ms, first round */
#define NGX_HTTP_CACHE_PURGE_SCAN_COUNT   "200"
#define NGX_HTTP_CACHE_PURGE_JOBS         4         /* per zone, worker */
#define NGX_HTTP_CACHE_PURGE_JOB_TTL      "86400000"
#define NGX_HTTP_CACHE_PURGE_JOB_RETRY    1000      /* ms */
#define NGX_HTTP_CACHE_PURGE_JOB_FAILURES 30
#define NGX_HTTP_CACHE_PURGE_STALLED      10000     /* ms */
#define NGX_HTTP_CACHE_PURGE_PATTERN_MAX  256
#define NGX_HTTP_CACHE_PURGE_ID_LEN       32

#define NGX_HTTP_CACHE_PURGE_MEMBER_MAX   (2 + NGX_HTTP_CACHE_PURGE_TAG_MAX)


typedef enum {
    NGX_HTTP_CACHE_PURGE_KEY = 0,
    NGX_HTTP_CACHE_PURGE_SOFT_KEY,
    NGX_HTTP_CACHE_PURGE_TAG,
    NGX_HTTP_CACHE_PURGE_PREFIX,
    NGX_HTTP_CACHE_PURGE_PATTERN,
    NGX_HTTP_CACHE_PURGE_STATUS
} ngx_http_cache_purge_kind_e;


typedef struct {
    ngx_http_cache_zone_t       *zone;       /* edge_cache_purge */
    ngx_array_t                 *methods;    /* ngx_str_t */
    ngx_str_t                    tags_header;
} ngx_http_cache_purge_loc_conf_t;


/* a purge record in a worker's table */
typedef struct {
    ngx_str_node_t               sn;         /* key: crc32 of the member */
    ngx_queue_t                  queue;      /* least recently set first */
    int64_t                      time;       /* wall ms */
} ngx_http_cache_purge_rec_t;


/* a zone's purge state (zone->purge): its series, made at configuration
 * time, and what each worker keeps (ready once the worker has set it) */
typedef struct {
    ngx_http_cache_zone_t       *zone;
    ngx_event_t                  timer;      /* the poll, cancelable */
    ngx_edge_redis_cmd_t        *cmd;        /* a poll in flight */
    int64_t                      since;      /* highest score seen */
    ngx_uint_t                   pages;      /* in this round */
    int64_t                      resume;     /* a round cut short: the
                                                next one starts there */

    ngx_rbtree_t                 tree;
    ngx_rbtree_node_t            sentinel;
    ngx_queue_t                  records;
    ngx_uint_t                   nrecords;
    int64_t                      floor;      /* of the dropped records */

    ngx_queue_t                  jobs;
    ngx_uint_t                   njobs;

    ngx_edge_log_gate_t          gate;

    /* nginx_cache_purges_total{zone,kind}, by ngx_http_cache_purge_kind_e
     * (but STATUS) */
    ngx_edge_stats_id_t          st_purges[NGX_HTTP_CACHE_PURGE_STATUS];

    unsigned                     ready:1;    /* the worker's part is set */
    unsigned                     synced:1;   /* a whole round was read */
    unsigned                     resuming:1;
    unsigned                     resume_after:1;  /* exclusive */
} ngx_http_cache_purge_worker_t;


/* a prefix or pattern job driven by this worker */
typedef struct {
    ngx_queue_t                  queue;
    ngx_http_cache_purge_worker_t  *worker;
    ngx_event_t                  retry;      /* after a failure */
    ngx_edge_redis_cmd_t        *cmd;        /* the batch in flight */
    ngx_uint_t                   failures;   /* in a row */
    ngx_str_t                    rkey;       /* "<zone>:job:<id>" */
    ngx_str_t                    glob;       /* "<zone>:{*}" */

    /* Redis Cluster: the node being scanned (-1: none yet), its cursor,
     * and its last batch's counts, to add to the job's hash once (the
     * batches are numbered: a progress call resent after a timeout is
     * not added twice) */
    ngx_int_t                    node;
    ngx_uint_t                   batch;
    ngx_str_t                    kind;
    ngx_str_t                    match;
    u_char                       cursor[NGX_INT64_LEN + 1];
    size_t                       cursor_len;
    ngx_uint_t                   scanned;
    ngx_uint_t                   deleted;
    unsigned                     report:1;
    unsigned                     last:1;
} ngx_http_cache_purge_job_t;


/* a purge request */
typedef struct {
    ngx_http_request_t          *request;
    ngx_http_cache_zone_t       *zone;
    ngx_edge_redis_cmd_t        *cmd;
    ngx_http_cache_purge_kind_e  kind;
    ngx_str_t                    text;       /* key, tag, prefix, glob */
    u_char                       hash[NGX_HTTP_CACHE_HASH_LEN];
    u_char                       id[NGX_HTTP_CACHE_PURGE_ID_LEN];
    int64_t                      now;        /* wall ms */
} ngx_http_cache_purge_ctx_t;


static ngx_int_t ngx_http_cache_purge_handler(ngx_http_request_t *r);
static void ngx_http_cache_purge_reply(void *data, redisReply *reply,
    ngx_int_t rc);
static void ngx_http_cache_purge_entry(void *data, redisReply *reply,
    ngx_int_t rc);
static void ngx_http_cache_purge_poll(ngx_http_cache_purge_worker_t *pw,
    int64_t min, ngx_flag_t exclusive);
static void ngx_http_cache_purge_job_step(ngx_http_cache_purge_job_t *job);
static ngx_int_t ngx_http_cache_purge_postconf(ngx_conf_t *cf);
static void *ngx_http_cache_purge_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_cache_purge_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);
static char *ngx_http_cache_purge(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_cache_purge_methods(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_cache_purge_init_process(ngx_cycle_t *cycle);
static void ngx_http_cache_purge_exit_process(ngx_cycle_t *cycle);


static ngx_command_t  ngx_http_cache_purge_commands[] = {

    { ngx_string("edge_cache_purge"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_cache_purge,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("edge_cache_purge_methods"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_cache_purge_methods,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("edge_cache_tags_header"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_cache_purge_loc_conf_t, tags_header),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_cache_purge_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_cache_purge_postconf,         /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_cache_purge_create_loc_conf,  /* create location configuration */
    ngx_http_cache_purge_merge_loc_conf    /* merge location configuration */
};


ngx_module_t  ngx_http_cache_purge_module = {
    NGX_MODULE_V1,
    &ngx_http_cache_purge_module_ctx,      /* module context */
    ngx_http_cache_purge_commands,         /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_cache_purge_init_process,     /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_cache_purge_exit_process,     /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


/*
 * Records a key, soft or tag purge.  KEYS[1] the purges set, KEYS[2] the
 * entry; ARGV: the time, the member, the trim horizon, and what to do
 * with the entry ("del", "exists" or "none").  A record never moves back
 * in time (a node with a late clock).  Returns whether the entry existed.
 */
static ngx_str_t  ngx_http_cache_purge_record_lua = ngx_string(
    "local n = 0\n"
    "if ARGV[4] == 'del' then n = redis.call('DEL', KEYS[2])\n"
    "elseif ARGV[4] == 'exists' then n = redis.call('EXISTS', KEYS[2]) end\n"
    "local old = redis.call('ZSCORE', KEYS[1], ARGV[2])\n"
    "if not old or tonumber(old) < tonumber(ARGV[1]) then\n"
    "  redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])\n"
    "end\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])\n"
    "return n\n");


/* a job's hash: KEYS[1]; ARGV: kind, match, now, TTL (ms) */
static ngx_str_t  ngx_http_cache_purge_start_lua = ngx_string(
    "redis.call('HSET', KEYS[1], 'state', 'running', 'kind', ARGV[1],\n"
    "  'match', ARGV[2], 'cursor', '0', 'scanned', '0', 'deleted', '0',\n"
    "  'started', ARGV[3], 'updated', ARGV[3])\n"
    "redis.call('PEXPIRE', KEYS[1], ARGV[4])\n"
    "return 1\n");


/* Lua: the glob functions, and one SCAN batch's matching entries (kind,
 * match and cursor set before it; the matches in "victims") */
#define NGX_HTTP_CACHE_PURGE_GLOB_LUA                                         \
    "local function segs(p)\n"                                                \
    "  local out = {}\n"                                                      \
    "  for seg in string.gmatch(p .. '*', '([^*]*)%*') do\n"                  \
    "    local lp = string.gsub(seg, '[%^%$%(%)%%%.%[%]%+%-]', '%%%0')\n"     \
    "    lp = string.gsub(lp, '%?', '.')\n"                                   \
    "    out[#out + 1] = {lp, #seg}\n"                                        \
    "  end\n"                                                                 \
    "  return out\n"                                                          \
    "end\n"                                                                   \
    "local function glob(s, sg)\n"                                            \
    "  local n = #sg\n"                                                       \
    "  if n == 1 then\n"                                                      \
    "    return #s == sg[1][2] and string.find(s, '^' .. sg[1][1]) ~= nil\n"  \
    "  end\n"                                                                 \
    "  local pos = 1\n"                                                       \
    "  if sg[1][2] > 0 then\n"                                                \
    "    if not string.find(s, '^' .. sg[1][1]) then return false end\n"      \
    "    pos = sg[1][2] + 1\n"                                                \
    "  end\n"                                                                 \
    "  for i = 2, n - 1 do\n"                                                 \
    "    if sg[i][2] > 0 then\n"                                              \
    "      local a, b = string.find(s, sg[i][1], pos)\n"                      \
    "      if not a then return false end\n"                                  \
    "      pos = b + 1\n"                                                     \
    "    end\n"                                                               \
    "  end\n"                                                                 \
    "  local l = sg[n][2]\n"                                                  \
    "  if l == 0 then return true end\n"                                      \
    "  local start = #s - l + 1\n"                                            \
    "  if start < pos then return false end\n"                                \
    "  return string.find(s, '^' .. sg[n][1], start) ~= nil\n"                \
    "end\n"

/*
 * A key the node cannot read but for its type is an error of the batch:
 * a Cluster node demoted to a replica answers "non local key" for every
 * key it still holds, and a batch that skipped them would end the node's
 * scan with its entries left.  Failed, the batch is sent again, and the
 * job moves on once the map no longer names the node.
 */
#define NGX_HTTP_CACHE_PURGE_SCAN_LUA                                         \
    "local sg\n"                                                              \
    "if kind == 'pattern' then sg = segs(match) end\n"                        \
    "local want = 88\n"                                                       \
    "if kind == 'prefix' then want = 88 + #match end\n"                       \
    "local r = redis.call('SCAN', cursor, 'MATCH', ARGV[1], 'COUNT', "        \
    "ARGV[2])\n"                                                              \
    "local scanned, victims = 0, {}\n"                                        \
    "for _, k in ipairs(r[2]) do\n"                                           \
    "  scanned = scanned + 1\n"                                               \
    "  local h = redis.pcall('GETRANGE', k, 0, want - 1)\n"                   \
    "  if type(h) == 'table' and h.err\n"                                     \
    "     and string.sub(h.err, 1, 9) ~= 'WRONGTYPE' then\n"                  \
    "    return redis.error_reply(h.err)\n"                                   \
    "  end\n"                                                                 \
    "  if type(h) == 'string' and #h >= 88\n"                                 \
    "     and string.sub(h, 1, 4) == 'NXEC' then\n"                           \
    "    local b1, b2, b3, b4 = string.byte(h, 57, 60)\n"                     \
    "    local klen = ((b1 * 256 + b2) * 256 + b3) * 256 + b4\n"              \
    "    local hit = false\n"                                                 \
    "    if kind == 'prefix' then\n"                                          \
    "      hit = klen >= #match and #h == want\n"                             \
    "            and string.sub(h, 89) == match\n"                            \
    "    elseif klen > 0 and klen <= 4096 then\n"                             \
    "      local text = redis.call('GETRANGE', k, 88, 87 + klen)\n"           \
    "      hit = #text == klen and glob(text, sg)\n"                          \
    "    end\n"                                                               \
    "    if hit then victims[#victims + 1] = k end\n"                         \
    "  end\n"                                                                 \
    "end\n"


/*
 * One batch of a job: KEYS[1] the job's hash; ARGV: the SCAN pattern,
 * COUNT, now.  The state is in the hash, so a batch that timed out but
 * ran is not run twice.  A glob has "*" (any bytes) and "?" (one byte):
 * it is split at its stars into literal segments, found left to right at
 * their first place (enough for a glob, and linear in the key for each
 * segment: no backtracking a hostile pattern could make exponential).
 * Returns {state, scanned, deleted}.
 */
static ngx_str_t  ngx_http_cache_purge_step_lua = ngx_string(
    NGX_HTTP_CACHE_PURGE_GLOB_LUA
    "local st = redis.call('HMGET', KEYS[1], 'state', 'kind', 'match',\n"
    "                      'cursor')\n"
    "if not st[1] then return {'gone', 0, 0} end\n"
    "if st[1] ~= 'running' then return {st[1], 0, 0} end\n"
    "local kind, match, cursor = st[2], st[3], st[4]\n"
    NGX_HTTP_CACHE_PURGE_SCAN_LUA
    "local deleted = 0\n"
    "for i = 1, #victims, 256 do\n"
    "  deleted = deleted + redis.call('UNLINK',\n"
    "                                 unpack(victims, i, math.min(i + 255,\n"
    "                                                             #victims)))\n"
    "end\n"
    "local state = 'running'\n"
    "if r[1] == '0' then state = 'done' end\n"
    "redis.call('HSET', KEYS[1], 'cursor', r[1], 'state', state,\n"
    "           'updated', ARGV[3])\n"
    "redis.call('HINCRBY', KEYS[1], 'scanned', scanned)\n"
    "redis.call('HINCRBY', KEYS[1], 'deleted', deleted)\n"
    "if state == 'done' then\n"
    "  redis.call('HSET', KEYS[1], 'finished', ARGV[3])\n"
    "end\n"
    "return {state, scanned, deleted}\n");


/*
 * Redis Cluster: the entries are spread over the primaries, and a SCAN
 * sees one node's keys only.  A job scans each primary in turn (the
 * worker keeps the node and its cursor): one batch on the node, with no
 * key (ARGV: the SCAN pattern, COUNT, cursor, kind, match; each victim
 * unlinked on its own, the victims being of many slots), returns {cursor,
 * scanned, deleted}; then the progress script adds it to the job's hash
 * (KEYS[1]; ARGV: scanned, deleted, now, "1" when the last node is done,
 * the cursor, the batch's number) and returns {state, scanned, deleted}
 * as a step does.  The counts are added once per batch number: a
 * progress call that timed out after it ran, and is sent again, does not
 * count its batch twice.
 */
static ngx_str_t  ngx_http_cache_purge_node_lua = ngx_string(
    NGX_HTTP_CACHE_PURGE_GLOB_LUA
    "local kind, match, cursor = ARGV[4], ARGV[5], ARGV[3]\n"
    NGX_HTTP_CACHE_PURGE_SCAN_LUA
    "local deleted = 0\n"
    "for _, k in ipairs(victims) do\n"
    "  deleted = deleted + redis.call('UNLINK', k)\n"
    "end\n"
    "return {r[1], scanned, deleted}\n");


static ngx_str_t  ngx_http_cache_purge_progress_lua = ngx_string(
    "local st = redis.call('HMGET', KEYS[1], 'state', 'batches')\n"
    "if not st[1] then return {'gone', 0, 0} end\n"
    "if st[1] ~= 'running' then return {st[1], 0, 0} end\n"
    "if tonumber(st[2] or '0') < tonumber(ARGV[6]) then\n"
    "  redis.call('HINCRBY', KEYS[1], 'scanned', ARGV[1])\n"
    "  redis.call('HINCRBY', KEYS[1], 'deleted', ARGV[2])\n"
    "  redis.call('HSET', KEYS[1], 'batches', ARGV[6])\n"
    "end\n"
    "local state = 'running'\n"
    "if ARGV[4] == '1' then\n"
    "  state = 'done'\n"
    "  redis.call('HSET', KEYS[1], 'finished', ARGV[3])\n"
    "end\n"
    "redis.call('HSET', KEYS[1], 'cursor', ARGV[5], 'state', state,\n"
    "           'updated', ARGV[3])\n"
    "return {state, ARGV[1], ARGV[2]}\n");


static ngx_str_t  ngx_http_cache_purge_default_method = ngx_string("PURGE");


/* the per-worker table */

static ngx_http_cache_purge_rec_t *
ngx_http_cache_purge_find(ngx_http_cache_purge_worker_t *pw, u_char *member,
    size_t len)
{
    ngx_str_t        name;
    ngx_str_node_t  *sn;

    name.data = member;
    name.len = len;

    sn = ngx_str_rbtree_lookup(&pw->tree, &name, ngx_crc32_short(member, len));

    return (ngx_http_cache_purge_rec_t *) sn;
}


static void
ngx_http_cache_purge_drop(ngx_http_cache_purge_worker_t *pw,
    ngx_http_cache_purge_rec_t *rec)
{
    ngx_rbtree_delete(&pw->tree, &rec->sn.node);
    ngx_queue_remove(&rec->queue);
    pw->nrecords--;
    ngx_free(rec);
}


static void
ngx_http_cache_purge_remember(ngx_http_cache_purge_worker_t *pw,
    u_char *member, size_t len, int64_t time)
{
    ngx_queue_t                 *q;
    ngx_http_cache_purge_rec_t  *rec;

    rec = ngx_http_cache_purge_find(pw, member, len);

    if (rec) {
        if (time > rec->time) {
            rec->time = time;
            ngx_queue_remove(&rec->queue);
            ngx_queue_insert_tail(&pw->records, &rec->queue);
        }

        return;
    }

    if (pw->nrecords >= NGX_HTTP_CACHE_PURGE_RECORDS) {
        /* full: the oldest record goes, and everything stored before it
         * is a miss from now on, so no purge is forgotten */
        q = ngx_queue_head(&pw->records);
        rec = ngx_queue_data(q, ngx_http_cache_purge_rec_t, queue);

        pw->floor = ngx_max(pw->floor, rec->time);
        ngx_http_cache_purge_drop(pw, rec);
    }

    rec = ngx_alloc(sizeof(ngx_http_cache_purge_rec_t) + len,
                    ngx_cycle->log);
    if (rec == NULL) {
        /* as when full: nothing is forgotten */
        pw->floor = ngx_max(pw->floor, time);
        return;
    }

    rec->sn.str.data = (u_char *) rec + sizeof(ngx_http_cache_purge_rec_t);
    rec->sn.str.len = len;
    ngx_memcpy(rec->sn.str.data, member, len);
    rec->sn.node.key = ngx_crc32_short(member, len);
    rec->time = time;

    ngx_rbtree_insert(&pw->tree, &rec->sn.node);
    ngx_queue_insert_tail(&pw->records, &rec->queue);
    pw->nrecords++;
}


/* records older than what Redis keeps: their entries are gone too */

static void
ngx_http_cache_purge_expire(ngx_http_cache_purge_worker_t *pw, int64_t now)
{
    ngx_queue_t                 *q;
    ngx_http_cache_purge_rec_t  *rec;

    while (!ngx_queue_empty(&pw->records)) {
        q = ngx_queue_head(&pw->records);
        rec = ngx_queue_data(q, ngx_http_cache_purge_rec_t, queue);

        if (rec->time >= now - NGX_HTTP_CACHE_PURGE_KEEP) {
            return;
        }

        ngx_http_cache_purge_drop(pw, rec);
    }
}


static ngx_flag_t
ngx_http_cache_purge_after(ngx_http_cache_purge_worker_t *pw, u_char *member,
    size_t len, int64_t stored)
{
    ngx_http_cache_purge_rec_t  *rec;

    rec = ngx_http_cache_purge_find(pw, member, len);

    return rec != NULL && stored <= rec->time;
}


ngx_int_t
ngx_http_cache_purge_check(ngx_http_cache_ctx_t *ctx,
    ngx_http_cache_zone_t *zone, ngx_http_cache_entry_t *e)
{
    u_char                          *p, *end, *nl;
    u_char                           member[NGX_HTTP_CACHE_PURGE_MEMBER_MAX];
    size_t                           len;
    ngx_http_cache_purge_worker_t   *pw;

    if (zone == NULL || zone->purge == NULL) {
        return NGX_OK;
    }

    pw = zone->purge;

    if (!pw->ready || (pw->nrecords == 0 && pw->floor == 0)) {
        return NGX_OK;
    }

    if (e->response_time <= pw->floor) {
        return NGX_DECLINED;
    }

    member[1] = ':';
    ngx_memcpy(member + 2, ctx->hash, NGX_HTTP_CACHE_HASH_LEN);

    member[0] = 'k';
    if (ngx_http_cache_purge_after(pw, member, 2 + NGX_HTTP_CACHE_HASH_LEN,
                                   e->response_time))
    {
        return NGX_DECLINED;
    }

    /* the tags were validated by the entry parser: "tag\n" lines */
    p = (u_char *) e->tags.data;
    end = p + e->tags.len;
    member[0] = 't';

    while (p < end) {
        nl = ngx_strlchr(p, end, '\n');
        if (nl == NULL) {
            break;
        }

        len = nl - p;

        if (len <= NGX_HTTP_CACHE_PURGE_TAG_MAX) {
            ngx_memcpy(member + 2, p, len);

            if (ngx_http_cache_purge_after(pw, member, 2 + len,
                                           e->response_time))
            {
                return NGX_DECLINED;
            }
        }

        p = nl + 1;
    }

    member[0] = 's';
    ngx_memcpy(member + 2, ctx->hash, NGX_HTTP_CACHE_HASH_LEN);

    if (ngx_http_cache_purge_after(pw, member, 2 + NGX_HTTP_CACHE_HASH_LEN,
                                   e->response_time))
    {
        return NGX_HTTP_CACHE_PURGE_SOFT;
    }

    return NGX_OK;
}


ngx_http_cache_zone_t *
ngx_http_cache_purge_zone(ngx_http_request_t *r)
{
    ngx_http_cache_loc_conf_t  *clcf;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_cache_module);

    return clcf->zone;
}


/* tags: visible ASCII but "," (the separator) */

static ngx_flag_t
ngx_http_cache_purge_tag_char(u_char ch)
{
    return ch > 0x20 && ch < 0x7f && ch != ',';
}


static ngx_flag_t
ngx_http_cache_purge_has_tag(u_char *tags, u_char *last, u_char *tag,
    size_t len)
{
    u_char  *p, *nl;

    for (p = tags; p < last; p = nl + 1) {
        nl = ngx_strlchr(p, last, '\n');

        if ((size_t) (nl - p) == len && ngx_memcmp(p, tag, len) == 0) {
            return 1;
        }
    }

    return 0;
}


/*
 * The response's tags into ctx->tags: every header line named by
 * edge_cache_tags_header, tags separated by commas or spaces; a tag longer
 * than NGX_HTTP_CACHE_PURGE_TAG_MAX or with another byte than visible
 * ASCII is ignored, and so are the tags past the 32nd (or past the
 * entry format's bound on the section).
 */

ngx_int_t
ngx_http_cache_purge_collect_tags(ngx_http_request_t *r,
    ngx_http_cache_ctx_t *ctx)
{
    u_char                           *p, *end, *start, *buf, *last;
    size_t                            len;
    ngx_uint_t                        i, n;
    ngx_flag_t                        bad;
    ngx_list_part_t                  *part;
    ngx_table_elt_t                  *h;
    ngx_http_cache_purge_loc_conf_t  *plcf;

    ngx_str_null(&ctx->tags);

    plcf = ngx_http_get_module_loc_conf(r, ngx_http_cache_purge_module);

    if (plcf->tags_header.len == 0) {
        return NGX_OK;
    }

    buf = NULL;
    last = NULL;
    n = 0;

    part = &r->headers_out.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].hash == 0
            || h[i].key.len != plcf->tags_header.len
            || ngx_strncasecmp(h[i].key.data, plcf->tags_header.data,
                               h[i].key.len) != 0)
        {
            continue;
        }

        if (buf == NULL) {
            buf = ngx_pnalloc(r->pool, NGX_HTTP_CACHE_ENTRY_TAGS_MAX);
            if (buf == NULL) {
                return NGX_ERROR;
            }

            last = buf;
        }

        p = h[i].value.data;
        end = p + h[i].value.len;

        while (p < end && n < NGX_HTTP_CACHE_PURGE_TAGS_MAX) {

            while (p < end && (*p == ',' || *p == ' ' || *p == '\t')) {
                p++;
            }

            start = p;
            bad = 0;

            while (p < end && *p != ',' && *p != ' ' && *p != '\t') {
                bad |= !ngx_http_cache_purge_tag_char(*p);
                p++;
            }

            len = p - start;

            if (len == 0 || bad || len > NGX_HTTP_CACHE_PURGE_TAG_MAX
                || ngx_http_cache_purge_has_tag(buf, last, start, len))
            {
                continue;
            }

            if ((size_t) (last - buf) + len + 1
                > NGX_HTTP_CACHE_ENTRY_TAGS_MAX)
            {
                break;
            }

            last = ngx_cpymem(last, start, len);
            *last++ = '\n';
            n++;
        }
    }

    if (n) {
        ctx->tags.data = buf;
        ctx->tags.len = last - buf;
    }

    return NGX_OK;
}


/* the poll */

static ngx_flag_t
ngx_http_cache_purge_exiting(void)
{
    return ngx_exiting || ngx_quit || ngx_terminate;
}


static ngx_int_t
ngx_http_cache_purge_parse_time(u_char *p, size_t len, int64_t *t)
{
    int64_t  v;
    size_t   i;

    /* scores of whole milliseconds: Redis prints them without a point */
    if (len == 0 || len > 16) {
        return NGX_ERROR;
    }

    v = 0;

    for (i = 0; i < len; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return NGX_ERROR;
        }

        v = v * 10 + (p[i] - '0');
    }

    *t = v;

    return NGX_OK;
}


/* "k:<md5>", "s:<md5>" or "t:<tag>"; others (a later version's) are
 * skipped */

static ngx_flag_t
ngx_http_cache_purge_valid_member(u_char *p, size_t len)
{
    size_t  i;

    if (len < 3 || p[1] != ':') {
        return 0;
    }

    switch (p[0]) {

    case 'k':
    case 's':
        if (len != 2 + NGX_HTTP_CACHE_HASH_LEN) {
            return 0;
        }

        for (i = 2; i < len; i++) {
            if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
            {
                return 0;
            }
        }

        return 1;

    case 't':
        if (len > NGX_HTTP_CACHE_PURGE_MEMBER_MAX) {
            return 0;
        }

        for (i = 2; i < len; i++) {
            if (!ngx_http_cache_purge_tag_char(p[i])) {
                return 0;
            }
        }

        return 1;

    default:
        return 0;
    }
}


static void
ngx_http_cache_purge_poll_reply(void *data, redisReply *reply, ngx_int_t rc)
{
    ngx_http_cache_purge_worker_t *pw = data;

    int64_t       t, min, max;
    ngx_uint_t    i, n;
    ngx_uint_t    suppressed;
    redisReply   *m, *s;

    pw->cmd = NULL;

    if (rc != NGX_OK || reply->type != REDIS_REPLY_ARRAY) {
        if (ngx_edge_log_gate_open(&pw->gate, 10000, &suppressed)) {
            ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                          "edge_cache: purge poll of zone \"%V\" failed "
                          "(%ui more not logged): purges made elsewhere "
                          "are seen once it succeeds", &pw->zone->name,
                          suppressed);
        }

        return;
    }

    n = reply->elements / 2;
    min = -1;
    max = -1;

    for (i = 0; i < n; i++) {
        m = reply->element[2 * i];
        s = reply->element[2 * i + 1];

        if (m->type != REDIS_REPLY_STRING || s->type != REDIS_REPLY_STRING
            || ngx_http_cache_purge_parse_time((u_char *) s->str,
                                               (size_t) s->len, &t)
               != NGX_OK)
        {
            continue;
        }

        if (min == -1) {
            min = t;
        }

        max = ngx_max(max, t);

        if (ngx_http_cache_purge_valid_member((u_char *) m->str,
                                              (size_t) m->len))
        {
            ngx_http_cache_purge_remember(pw, (u_char *) m->str,
                                          (size_t) m->len, t);
        }
    }

    if (max > pw->since) {
        pw->since = max;
    }

    if (n == NGX_HTTP_CACHE_PURGE_PAGE && max >= 0) {
        /* a full page: the next one from its last score (after it, when
         * the whole page had one score), at once or, past the pages of a
         * round, in the next round */

        if (++pw->pages < NGX_HTTP_CACHE_PURGE_PAGES
            && !ngx_http_cache_purge_exiting())
        {
            ngx_http_cache_purge_poll(pw, max, min == max);
            return;
        }

        pw->resuming = 1;
        pw->resume = max;
        pw->resume_after = (min == max);

    } else {
        pw->resuming = 0;
        pw->synced = 1;
    }

    ngx_http_cache_purge_expire(pw, ngx_edge_wall_usec() / 1000);
}


static void
ngx_http_cache_purge_poll(ngx_http_cache_purge_worker_t *pw, int64_t min,
    ngx_flag_t exclusive)
{
    u_char       key[NGX_HTTP_CACHE_ZONE_NAME_MAX + sizeof(":purges")];
    u_char       from[NGX_INT64_LEN + 2], page[NGX_INT_T_LEN];
    const char  *argv[8];
    size_t       argvlen[8];

    argv[0] = "ZRANGEBYSCORE";
    argvlen[0] = sizeof("ZRANGEBYSCORE") - 1;
    argv[1] = (const char *) key;
    argvlen[1] = ngx_sprintf(key, "%V:purges", &pw->zone->name) - key;
    argv[2] = (const char *) from;
    argvlen[2] = ngx_sprintf(from, "%s%L", exclusive ? "(" : "", min) - from;
    argv[3] = "+inf";
    argvlen[3] = 4;
    argv[4] = "WITHSCORES";
    argvlen[4] = 10;
    argv[5] = "LIMIT";
    argvlen[5] = 5;
    argv[6] = "0";
    argvlen[6] = 1;
    argv[7] = (const char *) page;
    argvlen[7] = ngx_sprintf(page, "%ui", (ngx_uint_t)
                             NGX_HTTP_CACHE_PURGE_PAGE) - page;

    pw->cmd = ngx_edge_redis_send_command(pw->zone->redis,
                                          ngx_http_cache_purge_poll_reply,
                                          pw, 8, argv, argvlen);
}


static void
ngx_http_cache_purge_poll_handler(ngx_event_t *ev)
{
    ngx_http_cache_purge_worker_t *pw = ev->data;

    if (ngx_http_cache_purge_exiting()) {
        return;
    }

    if (pw->cmd == NULL) {
        pw->pages = 0;

        if (pw->resuming) {
            ngx_http_cache_purge_poll(pw, pw->resume, pw->resume_after);

        } else {
            /* the records since the last whole round, and those of its
             * last second again (written by a node whose clock is late) */
            ngx_http_cache_purge_poll(pw,
                                      ngx_max(pw->since
                                              - NGX_HTTP_CACHE_PURGE_OVERLAP,
                                              0),
                                      0);
        }
    }

    ngx_add_timer(ev, pw->synced ? pw->zone->purge_poll
                      : ngx_min(pw->zone->purge_poll,
                                NGX_HTTP_CACHE_PURGE_SYNC_RETRY));
}


/* answers */

static ngx_int_t
ngx_http_cache_purge_send(ngx_http_request_t *r, ngx_uint_t status,
    u_char *body, size_t len)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    r->headers_out.status = status;
    r->headers_out.content_length_n = len;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->pos = body;
    b->last = body + len;
    b->memory = 1;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


static ngx_int_t
ngx_http_cache_purge_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *error)
{
    u_char  *p, *last;
    size_t   len;

    len = ngx_strlen(error);

    p = ngx_pnalloc(r->pool, sizeof("{\"error\":\"\"}\n") - 1
                             + NGX_EDGE_JSON_ESCAPED_MAX(len));
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    last = ngx_cpymem(p, "{\"error\":\"", sizeof("{\"error\":\"") - 1);
    last = ngx_edge_json_escape(last, (u_char *) error, len);
    last = ngx_cpymem(last, "\"}\n", 3);

    return ngx_http_cache_purge_send(r, status, p, last - p);
}


/* a JSON string: quotes, escaping, hostile bytes as U+FFFD */

static u_char *
ngx_http_cache_purge_json_str(u_char *p, ngx_str_t *s)
{
    *p++ = '"';
    p = ngx_edge_json_escape(p, s->data, s->len);
    *p++ = '"';

    return p;
}


#define ngx_http_cache_purge_json_size(s)                                    \
    (2 + NGX_EDGE_JSON_ESCAPED_MAX((s)->len))


static ngx_int_t
ngx_http_cache_purge_answer_done(ngx_http_request_t *r,
    ngx_http_cache_purge_ctx_t *ctx, ngx_uint_t existed)
{
    u_char     *p, *start;
    ngx_str_t   id;
    ngx_uint_t  status;

    p = ngx_pnalloc(r->pool, 128 + ngx_http_cache_purge_json_size(&ctx->text)
                             + NGX_HTTP_CACHE_PURGE_ID_LEN);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    start = p;
    status = NGX_HTTP_OK;

    switch (ctx->kind) {

    case NGX_HTTP_CACHE_PURGE_KEY:
    case NGX_HTTP_CACHE_PURGE_SOFT_KEY:
        if (!existed) {
            status = NGX_HTTP_NOT_FOUND;
            p = ngx_sprintf(p, "{\"purged\":false,\"key\":");

        } else {
            p = ngx_sprintf(p, "{\"purged\":\"key\",\"key\":");
        }

        p = ngx_http_cache_purge_json_str(p, &ctx->text);
        p = ngx_sprintf(p, ",\"soft\":%s}\n",
                        ctx->kind == NGX_HTTP_CACHE_PURGE_SOFT_KEY
                        ? "true" : "false");
        break;

    case NGX_HTTP_CACHE_PURGE_TAG:
        p = ngx_sprintf(p, "{\"purged\":\"tag\",\"tag\":");
        p = ngx_http_cache_purge_json_str(p, &ctx->text);
        p = ngx_sprintf(p, ",\"soft\":false}\n");
        break;

    default: /* a job */
        status = NGX_HTTP_ACCEPTED;
        id.data = ctx->id;
        id.len = NGX_HTTP_CACHE_PURGE_ID_LEN;

        if (ctx->kind == NGX_HTTP_CACHE_PURGE_PREFIX) {
            p = ngx_sprintf(p, "{\"purged\":\"prefix\",\"prefix\":");

        } else {
            p = ngx_sprintf(p, "{\"purged\":\"pattern\",\"pattern\":");
        }

        p = ngx_http_cache_purge_json_str(p, &ctx->text);
        p = ngx_sprintf(p, ",\"job\":\"%V\",\"state\":\"running\"}\n", &id);
        break;
    }

    return ngx_http_cache_purge_send(r, status, start, p - start);
}


static ngx_flag_t
ngx_http_cache_purge_digits(redisReply *v)
{
    size_t  i;

    if (v->type != REDIS_REPLY_STRING || v->len == 0 || v->len > 20) {
        return 0;
    }

    for (i = 0; i < (size_t) v->len; i++) {
        if (v->str[i] < '0' || v->str[i] > '9') {
            return 0;
        }
    }

    return 1;
}


/*
 * ?job=ID: the job's hash as JSON, numbers as numbers, "stalled" for a
 * running job whose worker has not written for NGX_HTTP_CACHE_PURGE_STALLED
 * (it went away: a fast shutdown, a crash, Redis lost for long)
 */

static ngx_int_t
ngx_http_cache_purge_answer_status(ngx_http_request_t *r,
    ngx_http_cache_purge_ctx_t *ctx, redisReply *reply)
{
    u_char      *p, *start;
    size_t       len;
    int64_t      updated;
    ngx_str_t    id, s;
    ngx_uint_t   i;
    ngx_flag_t   running;
    redisReply  *f, *v;

    id.data = ctx->id;
    id.len = NGX_HTTP_CACHE_PURGE_ID_LEN;

    if (reply->elements == 0) {
        p = ngx_pnalloc(r->pool, 64 + NGX_HTTP_CACHE_PURGE_ID_LEN);
        if (p == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        start = p;
        p = ngx_sprintf(p, "{\"job\":\"%V\",\"state\":\"unknown\"}\n", &id);

        return ngx_http_cache_purge_send(r, NGX_HTTP_NOT_FOUND, start,
                                         p - start);
    }

    len = 64 + NGX_HTTP_CACHE_PURGE_ID_LEN;
    running = 0;
    updated = -1;

    for (i = 0; i + 1 < reply->elements; i += 2) {
        f = reply->element[i];
        v = reply->element[i + 1];

        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) {
            continue;
        }

        len += 4 + NGX_EDGE_JSON_ESCAPED_MAX((size_t) f->len)
               + 2 + NGX_EDGE_JSON_ESCAPED_MAX((size_t) v->len);

        if (f->len == 5 && ngx_strncmp(f->str, "state", 5) == 0) {
            running = v->len == 7 && ngx_strncmp(v->str, "running", 7) == 0;

        } else if (f->len == 7 && ngx_strncmp(f->str, "updated", 7) == 0
                   && ngx_http_cache_purge_digits(v))
        {
            (void) ngx_http_cache_purge_parse_time((u_char *) v->str,
                                                   (size_t) v->len,
                                                   &updated);
        }
    }

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    start = p;
    p = ngx_sprintf(p, "{\"job\":\"%V\"", &id);

    for (i = 0; i + 1 < reply->elements; i += 2) {
        f = reply->element[i];
        v = reply->element[i + 1];

        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) {
            continue;
        }

        *p++ = ',';
        s.data = (u_char *) f->str;
        s.len = f->len;
        p = ngx_http_cache_purge_json_str(p, &s);
        *p++ = ':';

        s.data = (u_char *) v->str;
        s.len = v->len;

        if (f->len == 5 && ngx_strncmp(f->str, "state", 5) == 0
            && running && updated >= 0
            && ctx->now - updated > NGX_HTTP_CACHE_PURGE_STALLED)
        {
            p = ngx_cpymem(p, "\"stalled\"", sizeof("\"stalled\"") - 1);

        } else if (ngx_http_cache_purge_digits(v)
                   && !(f->len == 6 && ngx_strncmp(f->str, "cursor", 6) == 0))
        {
            p = ngx_cpymem(p, s.data, s.len);

        } else {
            p = ngx_http_cache_purge_json_str(p, &s);
        }
    }

    *p++ = '}';
    *p++ = '\n';

    return ngx_http_cache_purge_send(r, NGX_HTTP_OK, start, p - start);
}


/* jobs */

static void
ngx_http_cache_purge_job_free(ngx_http_cache_purge_job_t *job)
{
    if (job->retry.timer_set) {
        ngx_del_timer(&job->retry);
    }

    ngx_queue_remove(&job->queue);
    job->worker->njobs--;
    ngx_free(job);
}


static void
ngx_http_cache_purge_job_retry(ngx_event_t *ev)
{
    ngx_http_cache_purge_job_step(ev->data);
}


static void
ngx_http_cache_purge_job_failed(ngx_http_cache_purge_job_t *job,
    const char *why)
{
    if (++job->failures > NGX_HTTP_CACHE_PURGE_JOB_FAILURES) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "edge_cache: purge job \"%V\" abandoned after %ui "
                      "failures in a row (last: %s)", &job->rkey,
                      job->failures - 1, why);
        ngx_http_cache_purge_job_free(job);
        return;
    }

    /* cancelable: a worker that is leaving does not stay for a retry */
    ngx_add_timer(&job->retry, NGX_HTTP_CACHE_PURGE_JOB_RETRY);
}


static void
ngx_http_cache_purge_job_reply(void *data, redisReply *reply, ngx_int_t rc)
{
    ngx_http_cache_purge_job_t *job = data;

    redisReply  *state;

    job->cmd = NULL;

    if (rc != NGX_OK) {
        ngx_http_cache_purge_job_failed(job, rc == NGX_AGAIN ? "timeout"
                                                            : "redis error");
        return;
    }

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3
        || reply->element[0]->type != REDIS_REPLY_STRING)
    {
        if (reply->type == REDIS_REPLY_ERROR) {
            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                          "edge_cache: purge job \"%V\": %*s", &job->rkey,
                          (size_t) reply->len, reply->str);
        }

        ngx_http_cache_purge_job_failed(job, "unexpected reply");
        return;
    }

    job->failures = 0;
    job->report = 0;
    state = reply->element[0];

    if (state->len == 7 && ngx_strncmp(state->str, "running", 7) == 0) {
        /* the next batch right away: Redis serves everyone else between
         * two batches, and a command in flight keeps a worker that is
         * shutting down gracefully until the job is done */
        ngx_http_cache_purge_job_step(job);
        return;
    }

    ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                  "edge_cache: purge job \"%V\" %*s", &job->rkey,
                  (size_t) state->len, state->str);

    ngx_http_cache_purge_job_free(job);
}


/*
 * Redis Cluster: a node's batch failed.  The map is asked again (a node
 * demoted by a failover fails every batch until the map says so), and
 * the retry checks that the node is still in it.
 */

static void
ngx_http_cache_purge_node_failed(ngx_http_cache_purge_job_t *job,
    const char *why)
{
    ngx_edge_redis_refresh_map(job->worker->zone->redis);
    ngx_http_cache_purge_job_failed(job, why);
}


/* Redis Cluster: a node's batch answered {cursor, scanned, deleted} */

static void
ngx_http_cache_purge_node_reply(void *data, redisReply *reply, ngx_int_t rc)
{
    ngx_http_cache_purge_job_t *job = data;

    ngx_int_t    next;
    redisReply  *cursor;

    job->cmd = NULL;

    if (rc != NGX_OK) {
        ngx_http_cache_purge_node_failed(job, rc == NGX_AGAIN ? "timeout"
                                                             : "redis error");
        return;
    }

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3
        || reply->element[0]->type != REDIS_REPLY_STRING
        || reply->element[0]->len > NGX_INT64_LEN
        || reply->element[1]->type != REDIS_REPLY_INTEGER
        || reply->element[2]->type != REDIS_REPLY_INTEGER)
    {
        if (reply->type == REDIS_REPLY_ERROR) {
            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                          "edge_cache: purge job \"%V\": %*s", &job->rkey,
                          (size_t) reply->len, reply->str);
        }

        ngx_http_cache_purge_node_failed(job, "unexpected reply");
        return;
    }

    job->failures = 0;

    cursor = reply->element[0];
    job->cursor_len = cursor->len;
    ngx_memcpy(job->cursor, cursor->str, cursor->len);

    job->scanned = (ngx_uint_t) reply->element[1]->integer;
    job->deleted = (ngx_uint_t) reply->element[2]->integer;
    job->batch++;
    job->report = 1;

    if (cursor->len == 1 && cursor->str[0] == '0') {
        /* this node is done: the next primary, from its start */
        next = ngx_edge_redis_next_node(job->worker->zone->redis,
                                        job->node + 1);
        if (next >= 0) {
            job->node = next;

        } else {
            job->last = 1;
        }
    }

    ngx_http_cache_purge_job_step(job);
}


/*
 * The node being scanned left the map (a failover demoted it, or its
 * slots were resharded away): its keys are now on other primaries, maybe
 * ones already scanned, so the job scans every primary again from the
 * first (a key already unlinked is not found again).  Sending to the
 * departed node instead would fail until the job is given up, the
 * primaries after it never scanned.
 */

static void
ngx_http_cache_purge_node_check(ngx_http_cache_purge_job_t *job)
{
    ngx_int_t  node;

    node = ngx_edge_redis_next_node(job->worker->zone->redis,
                                    (ngx_uint_t) job->node);

    if (node == job->node || node == NGX_DECLINED) {
        return;
    }

    ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                  "edge_cache: purge job \"%V\": the node it scans left "
                  "the cluster map: scanning every primary again",
                  &job->rkey);

    job->node = -1;
    job->cursor[0] = '0';
    job->cursor_len = 1;
}


static void
ngx_http_cache_purge_node_step(ngx_http_cache_purge_job_t *job)
{
    ngx_int_t    node;
    u_char       now[NGX_INT64_LEN], scanned[NGX_INT_T_LEN];
    u_char       deleted[NGX_INT_T_LEN], batch[NGX_INT_T_LEN];
    const char  *argv[10];
    size_t       argvlen[10];

    if (job->node >= 0 && !job->report) {
        ngx_http_cache_purge_node_check(job);
    }

    if (job->node < 0 && !job->report) {
        node = ngx_edge_redis_next_node(job->worker->zone->redis, 0);

        if (node == NGX_DECLINED) {
            ngx_http_cache_purge_job_failed(job, "no cluster map yet");
            return;
        }

        if (node == NGX_DONE) {
            /* no primary: nothing to scan */
            job->report = 1;
            job->last = 1;

        } else {
            job->node = node;
        }
    }

    argv[0] = "EVAL";
    argvlen[0] = 4;

    if (job->report) {
        argv[1] = (const char *) ngx_http_cache_purge_progress_lua.data;
        argvlen[1] = ngx_http_cache_purge_progress_lua.len;
        argv[2] = "1";
        argvlen[2] = 1;
        argv[3] = (const char *) job->rkey.data;
        argvlen[3] = job->rkey.len;
        argv[4] = (const char *) scanned;
        argvlen[4] = ngx_sprintf(scanned, "%ui", job->scanned) - scanned;
        argv[5] = (const char *) deleted;
        argvlen[5] = ngx_sprintf(deleted, "%ui", job->deleted) - deleted;
        argv[6] = (const char *) now;
        argvlen[6] = ngx_sprintf(now, "%L", ngx_edge_wall_usec() / 1000)
                     - now;
        argv[7] = job->last ? "1" : "0";
        argvlen[7] = 1;
        argv[8] = (const char *) job->cursor;
        argvlen[8] = job->cursor_len;
        argv[9] = (const char *) batch;
        argvlen[9] = ngx_sprintf(batch, "%ui", job->batch) - batch;

        job->cmd = ngx_edge_redis_send_command(job->worker->zone->redis,
                                               ngx_http_cache_purge_job_reply,
                                               job, 10, argv, argvlen);

    } else {
        argv[1] = (const char *) ngx_http_cache_purge_node_lua.data;
        argvlen[1] = ngx_http_cache_purge_node_lua.len;
        argv[2] = "0";
        argvlen[2] = 1;
        argv[3] = (const char *) job->glob.data;
        argvlen[3] = job->glob.len;
        argv[4] = NGX_HTTP_CACHE_PURGE_SCAN_COUNT;
        argvlen[4] = sizeof(NGX_HTTP_CACHE_PURGE_SCAN_COUNT) - 1;
        argv[5] = (const char *) job->cursor;
        argvlen[5] = job->cursor_len;
        argv[6] = (const char *) job->kind.data;
        argvlen[6] = job->kind.len;
        argv[7] = (const char *) job->match.data;
        argvlen[7] = job->match.len;

        job->cmd = ngx_edge_redis_send_command_to(
                       job->worker->zone->redis, (ngx_uint_t) job->node,
                       ngx_http_cache_purge_node_reply, job, 8, argv,
                       argvlen);
    }

    if (job->cmd == NULL) {
        ngx_http_cache_purge_job_failed(job, "redis not connected");
    }
}


static void
ngx_http_cache_purge_job_step(ngx_http_cache_purge_job_t *job)
{
    u_char       now[NGX_INT64_LEN];
    const char  *argv[7];
    size_t       argvlen[7];

    if (job->worker->zone->redis->nseeds) {
        ngx_http_cache_purge_node_step(job);
        return;
    }

    argv[0] = "EVAL";
    argvlen[0] = 4;
    argv[1] = (const char *) ngx_http_cache_purge_step_lua.data;
    argvlen[1] = ngx_http_cache_purge_step_lua.len;
    argv[2] = "1";
    argvlen[2] = 1;
    argv[3] = (const char *) job->rkey.data;
    argvlen[3] = job->rkey.len;
    argv[4] = (const char *) job->glob.data;
    argvlen[4] = job->glob.len;
    argv[5] = NGX_HTTP_CACHE_PURGE_SCAN_COUNT;
    argvlen[5] = sizeof(NGX_HTTP_CACHE_PURGE_SCAN_COUNT) - 1;
    argv[6] = (const char *) now;
    argvlen[6] = ngx_sprintf(now, "%L", ngx_edge_wall_usec() / 1000) - now;

    job->cmd = ngx_edge_redis_send_command(job->worker->zone->redis,
                                           ngx_http_cache_purge_job_reply,
                                           job, 7, argv, argvlen);
    if (job->cmd == NULL) {
        ngx_http_cache_purge_job_failed(job, "redis not connected");
    }
}


static ngx_int_t
ngx_http_cache_purge_job_start(ngx_http_cache_purge_ctx_t *ctx)
{
    u_char                         *p;
    ngx_http_cache_zone_t          *zone;
    ngx_http_cache_purge_job_t     *job;
    ngx_http_cache_purge_worker_t  *pw;

    zone = ctx->zone;
    pw = zone->purge;

    job = ngx_alloc(sizeof(ngx_http_cache_purge_job_t)
                    + 2 * zone->name.len + sizeof(":job:") - 1
                    + NGX_HTTP_CACHE_PURGE_ID_LEN + sizeof(":{*}") - 1
                    + ctx->text.len,
                    ngx_cycle->log);
    if (job == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(job, sizeof(ngx_http_cache_purge_job_t));

    p = (u_char *) job + sizeof(ngx_http_cache_purge_job_t);

    job->rkey.data = p;
    p = ngx_sprintf(p, "%V:job:%*s", &zone->name,
                    (size_t) NGX_HTTP_CACHE_PURGE_ID_LEN, ctx->id);
    job->rkey.len = p - job->rkey.data;

    job->glob.data = p;
    p = ngx_sprintf(p, "%V:{*}", &zone->name);
    job->glob.len = p - job->glob.data;

    job->match.data = p;
    job->match.len = ctx->text.len;
    ngx_memcpy(p, ctx->text.data, ctx->text.len);

    if (ctx->kind == NGX_HTTP_CACHE_PURGE_PREFIX) {
        ngx_str_set(&job->kind, "prefix");

    } else {
        ngx_str_set(&job->kind, "pattern");
    }

    job->node = -1;
    job->cursor[0] = '0';
    job->cursor_len = 1;

    job->worker = pw;
    job->retry.handler = ngx_http_cache_purge_job_retry;
    job->retry.data = job;
    job->retry.log = ngx_cycle->log;
    job->retry.cancelable = 1;

    ngx_queue_insert_tail(&pw->jobs, &job->queue);
    pw->njobs++;

    ngx_http_cache_purge_job_step(job);

    return NGX_OK;
}


/* the endpoint */

static void
ngx_http_cache_purge_detach(void *data)
{
    ngx_http_cache_purge_ctx_t  *ctx = data;

    if (ctx->cmd) {
        ngx_edge_redis_detach(ctx->cmd);
        ctx->cmd = NULL;
    }
}


static ngx_flag_t
ngx_http_cache_purge_method_allowed(ngx_http_request_t *r,
    ngx_http_cache_purge_loc_conf_t *plcf)
{
    ngx_str_t   *m;
    ngx_uint_t   i;

    m = plcf->methods->elts;

    for (i = 0; i < plcf->methods->nelts; i++) {
        if (m[i].len == r->method_name.len
            && ngx_strncmp(m[i].data, r->method_name.data, m[i].len) == 0)
        {
            return 1;
        }
    }

    return 0;
}


static ngx_int_t
ngx_http_cache_purge_not_allowed(ngx_http_request_t *r,
    ngx_http_cache_purge_loc_conf_t *plcf)
{
    u_char           *p;
    size_t            len;
    ngx_str_t        *m;
    ngx_uint_t        i;
    ngx_table_elt_t  *h;

    len = 0;
    m = plcf->methods->elts;

    for (i = 0; i < plcf->methods->nelts; i++) {
        len += m[i].len + 2;
    }

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
#if (nginx_version >= 1023000)
    h->next = NULL;
#endif
    ngx_str_set(&h->key, "Allow");
    h->value.data = p;

    for (i = 0; i < plcf->methods->nelts; i++) {
        if (i) {
            *p++ = ','; *p++ = ' ';
        }

        p = ngx_cpymem(p, m[i].data, m[i].len);
    }

    h->value.len = p - h->value.data;

    return ngx_http_cache_purge_error(r, NGX_HTTP_NOT_ALLOWED,
                                      "method not allowed");
}


/* prefixes and patterns: printable UTF-8 (a key text is a URI, mostly) */

static ngx_flag_t
ngx_http_cache_purge_printable(ngx_str_t *s)
{
    size_t  i;

    if (!ngx_edge_utf8_valid(s->data, s->len)) {
        return 0;
    }

    for (i = 0; i < s->len; i++) {
        if (s->data[i] < 0x20 || s->data[i] == 0x7f) {
            return 0;
        }
    }

    return 1;
}


static void
ngx_http_cache_purge_new_id(u_char *id)
{
    ngx_md5_t          md5;
    u_char             digest[16];
    int64_t            t;
    long               rnd[4];
    static ngx_uint_t  seq;

    rnd[0] = ngx_random();
    rnd[1] = ngx_random();
    rnd[2] = ngx_random();
    rnd[3] = (long) seq++;
    t = ngx_edge_mono_usec() ^ ngx_edge_wall_usec();

    ngx_md5_init(&md5);
    ngx_md5_update(&md5, rnd, sizeof(rnd));
    ngx_md5_update(&md5, &t, sizeof(t));
    ngx_md5_update(&md5, &ngx_pid, sizeof(ngx_pid));
    ngx_md5_final(digest, &md5);

    ngx_hex_dump(id, digest, 16);
}


static ngx_flag_t
ngx_http_cache_purge_valid_id(ngx_str_t *s)
{
    size_t  i;

    if (s->len != NGX_HTTP_CACHE_PURGE_ID_LEN) {
        return 0;
    }

    for (i = 0; i < s->len; i++) {
        if (!((s->data[i] >= '0' && s->data[i] <= '9')
              || (s->data[i] >= 'a' && s->data[i] <= 'f')))
        {
            return 0;
        }
    }

    return 1;
}


/*
 * "Edge-Purge-Soft: 1" (or "true"): a header, not an argument, so that a
 * key built from the purge request's arguments ($args) stays the key
 */

static ngx_flag_t
ngx_http_cache_purge_soft(ngx_http_request_t *r)
{
    ngx_uint_t        i;
    ngx_str_t        *v;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return 0;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len != sizeof("Edge-Purge-Soft") - 1
            || ngx_strncasecmp(h[i].key.data, (u_char *) "Edge-Purge-Soft",
                               h[i].key.len) != 0)
        {
            continue;
        }

        v = &h[i].value;

        return (v->len == 1 && v->data[0] == '1')
               || (v->len == 4 && ngx_strncasecmp(v->data, (u_char *) "true",
                                                  4) == 0);
    }
}


/* what the request asks: ctx->kind and ctx->text; NGX_OK, or an error
 * message for a 400 in *error */

static ngx_int_t
ngx_http_cache_purge_parse(ngx_http_request_t *r,
    ngx_http_cache_purge_ctx_t *ctx, ngx_str_t *job, const char **error)
{
    ngx_int_t                   rc;
    ngx_str_t                   v;
    ngx_uint_t                  i, n;
    ngx_flag_t                  is_soft;
    ngx_http_cache_loc_conf_t  *clcf;

    static const char          *names[] = { "tag", "prefix", "pattern" };
    static ngx_http_cache_purge_kind_e  kinds[] = {
        NGX_HTTP_CACHE_PURGE_TAG, NGX_HTTP_CACHE_PURGE_PREFIX,
        NGX_HTTP_CACHE_PURGE_PATTERN
    };

    if (job->len) {
        if (!ngx_http_cache_purge_valid_id(job)) {
            *error = "job: 32 hexadecimal digits";
            return NGX_DECLINED;
        }

        ngx_memcpy(ctx->id, job->data, NGX_HTTP_CACHE_PURGE_ID_LEN);
        ctx->kind = NGX_HTTP_CACHE_PURGE_STATUS;
        return NGX_OK;
    }

    is_soft = ngx_http_cache_purge_soft(r);

    n = 0;
    ctx->kind = NGX_HTTP_CACHE_PURGE_KEY;

    for (i = 0; i < 3; i++) {
        rc = ngx_edge_http_arg(r, names[i], &v);

        if (rc == NGX_ERROR) {
            return NGX_ERROR;
        }

        if (rc == NGX_OK) {
            n++;
            ctx->kind = kinds[i];
            ctx->text = v;
        }
    }

    if (n > 1) {
        *error = "one of tag, prefix and pattern at a time";
        return NGX_DECLINED;
    }

    if (is_soft && n) {
        *error = "soft applies to key purges";
        return NGX_DECLINED;
    }

    switch (ctx->kind) {

    case NGX_HTTP_CACHE_PURGE_TAG:
        if (ctx->text.len == 0 || ctx->text.len > NGX_HTTP_CACHE_PURGE_TAG_MAX)
        {
            *error = "tag: 1 to 128 bytes";
            return NGX_DECLINED;
        }

        for (i = 0; i < ctx->text.len; i++) {
            if (!ngx_http_cache_purge_tag_char(ctx->text.data[i])) {
                *error = "tag: visible ASCII characters but \",\"";
                return NGX_DECLINED;
            }
        }

        return NGX_OK;

    case NGX_HTTP_CACHE_PURGE_PREFIX:
    case NGX_HTTP_CACHE_PURGE_PATTERN:
        if (ctx->text.len == 0
            || ctx->text.len > (ctx->kind == NGX_HTTP_CACHE_PURGE_PREFIX
                                ? NGX_HTTP_CACHE_ENTRY_KEY_MAX
                                : NGX_HTTP_CACHE_PURGE_PATTERN_MAX))
        {
            *error = ctx->kind == NGX_HTTP_CACHE_PURGE_PREFIX
                     ? "prefix: 1 to 4096 bytes"
                     : "pattern: 1 to 256 bytes";
            return NGX_DECLINED;
        }

        if (!ngx_http_cache_purge_printable(&ctx->text)) {
            *error = "prefix and pattern: printable UTF-8";
            return NGX_DECLINED;
        }

        return NGX_OK;

    default:
        break;
    }

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_cache_module);

    if (ngx_http_complex_value(r, clcf->key, &ctx->text) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ctx->text.len == 0 || ctx->text.len > NGX_HTTP_CACHE_ENTRY_KEY_MAX) {
        *error = "the key is empty or over 4096 bytes";
        return NGX_DECLINED;
    }

    ngx_http_cache_hash_key(&ctx->text, ctx->hash);

    if (is_soft) {
        ctx->kind = NGX_HTTP_CACHE_PURGE_SOFT_KEY;
    }

    return NGX_OK;
}


/* the Redis command of a request; NULL: not sent */

static ngx_edge_redis_cmd_t *
ngx_http_cache_purge_command(ngx_http_request_t *r,
    ngx_http_cache_purge_ctx_t *ctx)
{
    u_char       *set, *entry, *member, *now, *horizon;
    ngx_str_t     rkey;
    const char   *argv[9];
    size_t        argvlen[9];
    const char   *op;
    ngx_uint_t    argc;
    ngx_str_t    *zn;

    ngx_edge_redis_handler_pt  handler;

    zn = &ctx->zone->name;
    handler = ngx_http_cache_purge_reply;

    if (ctx->kind == NGX_HTTP_CACHE_PURGE_STATUS) {
        rkey.data = ngx_pnalloc(r->pool, zn->len + sizeof(":job:") - 1
                                         + NGX_HTTP_CACHE_PURGE_ID_LEN);
        if (rkey.data == NULL) {
            return NULL;
        }

        rkey.len = ngx_sprintf(rkey.data, "%V:job:%*s", zn,
                               (size_t) NGX_HTTP_CACHE_PURGE_ID_LEN, ctx->id)
                   - rkey.data;

        argv[0] = "HGETALL";
        argvlen[0] = 7;
        argv[1] = (const char *) rkey.data;
        argvlen[1] = rkey.len;

        return ngx_edge_redis_send_command(ctx->zone->redis,
                                           ngx_http_cache_purge_reply, ctx,
                                           2, argv, argvlen);
    }

    now = ngx_pnalloc(r->pool, NGX_INT64_LEN);
    if (now == NULL) {
        return NULL;
    }

    if (ctx->kind == NGX_HTTP_CACHE_PURGE_PREFIX
        || ctx->kind == NGX_HTTP_CACHE_PURGE_PATTERN)
    {
        ngx_http_cache_purge_new_id(ctx->id);

        rkey.data = ngx_pnalloc(r->pool, zn->len + sizeof(":job:") - 1
                                         + NGX_HTTP_CACHE_PURGE_ID_LEN);
        if (rkey.data == NULL) {
            return NULL;
        }

        rkey.len = ngx_sprintf(rkey.data, "%V:job:%*s", zn,
                               (size_t) NGX_HTTP_CACHE_PURGE_ID_LEN, ctx->id)
                   - rkey.data;

        argv[0] = "EVAL";
        argvlen[0] = 4;
        argv[1] = (const char *) ngx_http_cache_purge_start_lua.data;
        argvlen[1] = ngx_http_cache_purge_start_lua.len;
        argv[2] = "1";
        argvlen[2] = 1;
        argv[3] = (const char *) rkey.data;
        argvlen[3] = rkey.len;

        if (ctx->kind == NGX_HTTP_CACHE_PURGE_PREFIX) {
            argv[4] = "prefix";
            argvlen[4] = 6;

        } else {
            argv[4] = "pattern";
            argvlen[4] = 7;
        }

        argv[5] = (const char *) ctx->text.data;
        argvlen[5] = ctx->text.len;
        argv[6] = (const char *) now;
        argvlen[6] = ngx_sprintf(now, "%L", ctx->now) - now;
        argv[7] = NGX_HTTP_CACHE_PURGE_JOB_TTL;
        argvlen[7] = sizeof(NGX_HTTP_CACHE_PURGE_JOB_TTL) - 1;

        return ngx_edge_redis_send_command(ctx->zone->redis,
                                           ngx_http_cache_purge_reply, ctx,
                                           8, argv, argvlen);
    }

    /* key, soft and tag purges: the record script */

    set = ngx_pnalloc(r->pool, zn->len + sizeof(":purges") - 1);
    entry = ngx_pnalloc(r->pool, NGX_HTTP_CACHE_RKEY_MAX);
    member = ngx_pnalloc(r->pool, NGX_HTTP_CACHE_PURGE_MEMBER_MAX);
    horizon = ngx_pnalloc(r->pool, NGX_INT64_LEN + 1);

    if (set == NULL || entry == NULL || member == NULL || horizon == NULL) {
        return NULL;
    }

    argv[0] = "EVAL";
    argvlen[0] = 4;
    argv[1] = (const char *) ngx_http_cache_purge_record_lua.data;
    argvlen[1] = ngx_http_cache_purge_record_lua.len;
    argv[2] = "2";
    argvlen[2] = 1;
    argv[3] = (const char *) set;
    argvlen[3] = ngx_sprintf(set, "%V:purges", zn) - set;

    if (ctx->kind == NGX_HTTP_CACHE_PURGE_TAG) {
        argv[4] = argv[3];
        argvlen[4] = argvlen[3];
        argvlen[6] = ngx_sprintf(member, "t:%V", &ctx->text) - member;
        op = "none";

    } else {
        argv[4] = (const char *) entry;
        argvlen[4] = ngx_sprintf(entry, "%V:{%*s}", zn,
                                 (size_t) NGX_HTTP_CACHE_HASH_LEN, ctx->hash)
                     - entry;
        argvlen[6] = ngx_sprintf(member, "%c:%*s",
                                 ctx->kind == NGX_HTTP_CACHE_PURGE_KEY
                                 ? 'k' : 's',
                                 (size_t) NGX_HTTP_CACHE_HASH_LEN, ctx->hash)
                     - member;
        op = ctx->kind == NGX_HTTP_CACHE_PURGE_KEY ? "del" : "exists";

        if (ctx->zone->redis->nseeds) {
            /* Redis Cluster: the set and the entry are in two slots; the
             * record first, then the entry (ngx_http_cache_purge_entry) */
            argv[4] = argv[3];
            argvlen[4] = argvlen[3];
            op = "none";
            handler = ngx_http_cache_purge_entry;
        }
    }

    argv[5] = (const char *) now;
    argvlen[5] = ngx_sprintf(now, "%L", ctx->now) - now;
    argv[6] = (const char *) member;
    argv[7] = (const char *) horizon;
    argvlen[7] = ngx_sprintf(horizon, "%L",
                             ctx->now - NGX_HTTP_CACHE_PURGE_KEEP) - horizon;
    argv[8] = op;
    argvlen[8] = ngx_strlen(op);
    argc = 9;

    return ngx_edge_redis_send_command(ctx->zone->redis, handler, ctx,
                                       argc, argv, argvlen);
}


/*
 * Redis Cluster, a key or soft purge: its record is written; now the
 * entry's DEL (or EXISTS), on the entry's node, whose answer (did the
 * entry exist) is the purge's, as the record script's is otherwise.
 */

static void
ngx_http_cache_purge_entry(void *data, redisReply *reply, ngx_int_t rc)
{
    ngx_http_cache_purge_ctx_t  *ctx = data;

    u_char      *entry;
    const char  *argv[2];
    size_t       argvlen[2];

    ctx->cmd = NULL;

    if (rc == NGX_OK && reply->type != REDIS_REPLY_ERROR) {
        entry = ngx_pnalloc(ctx->request->pool, NGX_HTTP_CACHE_RKEY_MAX);

        if (entry) {
            argv[0] = ctx->kind == NGX_HTTP_CACHE_PURGE_KEY ? "DEL"
                                                            : "EXISTS";
            argvlen[0] = ngx_strlen(argv[0]);
            argv[1] = (const char *) entry;
            argvlen[1] = ngx_sprintf(entry, "%V:{%*s}", &ctx->zone->name,
                                     (size_t) NGX_HTTP_CACHE_HASH_LEN,
                                     ctx->hash)
                         - entry;

            ctx->cmd = ngx_edge_redis_send_command(ctx->zone->redis,
                                                   ngx_http_cache_purge_reply,
                                                   ctx, 2, argv, argvlen);
            if (ctx->cmd) {
                return;
            }
        }

        reply = NULL;
        rc = NGX_ERROR;
    }

    ngx_http_cache_purge_reply(ctx, reply, rc);
}


static void
ngx_http_cache_purge_count(ngx_http_cache_purge_ctx_t *ctx)
{
    ngx_http_cache_purge_worker_t  *pw;

    pw = ctx->zone->purge;

    if (ctx->zone->stats && pw && ctx->kind < NGX_HTTP_CACHE_PURGE_STATUS) {
        ngx_edge_stats_add(ctx->zone->stats, pw->st_purges[ctx->kind], 1);
    }
}


/* the purging worker knows at once, without waiting for its poll */

static void
ngx_http_cache_purge_note(ngx_http_cache_purge_ctx_t *ctx)
{
    u_char                          member[NGX_HTTP_CACHE_PURGE_MEMBER_MAX];
    size_t                          len;
    ngx_http_cache_purge_worker_t  *pw;

    pw = ctx->zone->purge;

    if (pw == NULL || !pw->ready) {
        return;
    }

    switch (ctx->kind) {

    case NGX_HTTP_CACHE_PURGE_TAG:
        len = ngx_sprintf(member, "t:%V", &ctx->text) - member;
        break;

    case NGX_HTTP_CACHE_PURGE_KEY:
    case NGX_HTTP_CACHE_PURGE_SOFT_KEY:
        /* this node's hot copies (main and variants) go for every worker */
        ngx_http_cache_l1_purge(ctx->zone, ctx->hash);

        len = ngx_sprintf(member, "%c:%*s",
                          ctx->kind == NGX_HTTP_CACHE_PURGE_KEY ? 'k' : 's',
                          (size_t) NGX_HTTP_CACHE_HASH_LEN, ctx->hash)
              - member;
        break;

    default:
        return;
    }

    ngx_http_cache_purge_remember(pw, member, len, ctx->now);
}


static ngx_int_t
ngx_http_cache_purge_answer(ngx_http_request_t *r,
    ngx_http_cache_purge_ctx_t *ctx, redisReply *reply, ngx_int_t rc)
{
    if (rc == NGX_AGAIN) {
        return ngx_http_cache_purge_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                          "redis timed out");
    }

    if (rc != NGX_OK) {
        return ngx_http_cache_purge_error(r, NGX_HTTP_BAD_GATEWAY,
                                          "redis connection lost");
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "edge_cache: purge: redis error: %*s",
                      (size_t) reply->len, reply->str);
        return ngx_http_cache_purge_error(r, NGX_HTTP_BAD_GATEWAY,
                                          "redis error");
    }

    if (ctx->kind == NGX_HTTP_CACHE_PURGE_STATUS) {
        if (reply->type != REDIS_REPLY_ARRAY) {
            return ngx_http_cache_purge_error(r, NGX_HTTP_BAD_GATEWAY,
                                              "unexpected redis reply");
        }

        return ngx_http_cache_purge_answer_status(r, ctx, reply);
    }

    if (reply->type != REDIS_REPLY_INTEGER) {
        return ngx_http_cache_purge_error(r, NGX_HTTP_BAD_GATEWAY,
                                          "unexpected redis reply");
    }

    if (ctx->kind == NGX_HTTP_CACHE_PURGE_PREFIX
        || ctx->kind == NGX_HTTP_CACHE_PURGE_PATTERN)
    {
        if (ngx_http_cache_purge_job_start(ctx) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

    } else {
        ngx_http_cache_purge_note(ctx);
    }

    ngx_http_cache_purge_count(ctx);

    return ngx_http_cache_purge_answer_done(r, ctx, reply->integer != 0);
}


static void
ngx_http_cache_purge_reply(void *data, redisReply *reply, ngx_int_t rc)
{
    ngx_http_cache_purge_ctx_t  *ctx = data;

    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    ctx->cmd = NULL;
    r = ctx->request;
    c = r->connection;

    ngx_http_finalize_request(r, ngx_http_cache_purge_answer(r, ctx, reply,
                                                             rc));
    ngx_http_run_posted_requests(c);
}


static ngx_int_t
ngx_http_cache_purge_handler(ngx_http_request_t *r)
{
    ngx_int_t                         rc;
    ngx_str_t                         job;
    ngx_flag_t                        has_job;
    const char                       *error;
    ngx_pool_cleanup_t               *cln;
    ngx_http_cache_purge_ctx_t       *ctx;
    ngx_http_cache_purge_worker_t    *pw;
    ngx_http_cache_purge_loc_conf_t  *plcf;

    plcf = ngx_http_get_module_loc_conf(r, ngx_http_cache_purge_module);

    rc = ngx_edge_http_arg(r, "job", &job);
    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    has_job = (rc == NGX_OK);

    if (!has_job) {
        ngx_str_null(&job);
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    /* progress is a read: GET and HEAD too */
    if (!ngx_http_cache_purge_method_allowed(r, plcf)
        && !(has_job && (r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))))
    {
        return ngx_http_cache_purge_not_allowed(r, plcf);
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_cache_purge_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->request = r;
    ctx->zone = plcf->zone;
    ctx->now = ngx_edge_wall_usec() / 1000;

    if (has_job && job.len == 0) {
        return ngx_http_cache_purge_error(r, NGX_HTTP_BAD_REQUEST,
                                          "job: 32 hexadecimal digits");
    }

    error = NULL;
    rc = ngx_http_cache_purge_parse(r, ctx, &job, &error);

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc == NGX_DECLINED) {
        return ngx_http_cache_purge_error(r, NGX_HTTP_BAD_REQUEST, error);
    }

    if (ctx->kind == NGX_HTTP_CACHE_PURGE_PREFIX
        || ctx->kind == NGX_HTTP_CACHE_PURGE_PATTERN)
    {
        pw = ctx->zone->purge;

        if (pw == NULL || !pw->ready
            || pw->njobs >= NGX_HTTP_CACHE_PURGE_JOBS)
        {
            return ngx_http_cache_purge_error(r,
                                        NGX_HTTP_SERVICE_UNAVAILABLE,
                                        "too many purge jobs in this worker");
        }
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_cache_purge_detach;
    cln->data = ctx;

    ctx->cmd = ngx_http_cache_purge_command(r, ctx);

    if (ctx->cmd == NULL) {
        return ngx_http_cache_purge_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                          "redis unavailable");
    }

    /* the reply finalizes the request; the command's timeout bounds it */
    r->main->count++;

    return NGX_DONE;
}


/* configuration */

static ngx_str_t  ngx_http_cache_purge_kinds[] = {
    ngx_string("key"),
    ngx_string("soft"),
    ngx_string("tag"),
    ngx_string("prefix"),
    ngx_string("pattern")
};


/* every zone's purge state, and its series when the zone has a registry */

static ngx_int_t
ngx_http_cache_purge_postconf(ngx_conf_t *cf)
{
    ngx_int_t                        fam;
    ngx_str_t                        values[2];
    ngx_uint_t                       i, k;
    ngx_http_cache_zone_t          **zp;
    ngx_edge_stats_family_t          family;
    ngx_http_cache_main_conf_t      *cmcf;
    ngx_http_cache_purge_worker_t   *pw;

    static const char               *labels[] = { "zone", "kind", NULL };

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_cache_module);
    zp = cmcf->zones.elts;

    for (i = 0; i < cmcf->zones.nelts; i++) {
        pw = ngx_pcalloc(cf->pool, sizeof(ngx_http_cache_purge_worker_t));
        if (pw == NULL) {
            return NGX_ERROR;
        }

        pw->zone = zp[i];
        zp[i]->purge = pw;

        for (k = 0; k < NGX_HTTP_CACHE_PURGE_STATUS; k++) {
            pw->st_purges[k] = NGX_EDGE_STATS_NONE;
        }

        if (zp[i]->stats == NULL) {
            continue;
        }

        ngx_memzero(&family, sizeof(ngx_edge_stats_family_t));
        family.name = "cache_purges_total";
        family.help = "Purges answered by a purge endpoint of a cache zone "
                      "(a job counts when it starts), by kind.";
        family.type = NGX_EDGE_STATS_COUNTER;
        family.labels = labels;

        fam = ngx_edge_stats_add_family(cf, zp[i]->stats, &family);
        if (fam == NGX_ERROR) {
            return NGX_ERROR;
        }

        values[0] = zp[i]->name;

        for (k = 0; k < NGX_HTTP_CACHE_PURGE_STATUS; k++) {
            values[1] = ngx_http_cache_purge_kinds[k];

            pw->st_purges[k] = ngx_edge_stats_add_series(cf, zp[i]->stats,
                                                         fam, values);
            if (pw->st_purges[k] == NGX_EDGE_STATS_NONE) {
                return NGX_ERROR;
            }
        }
    }

    return NGX_OK;
}


static void *
ngx_http_cache_purge_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_cache_purge_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_cache_purge_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->tags_header = { 0, NULL };
     */

    conf->zone = NGX_CONF_UNSET_PTR;
    conf->methods = NGX_CONF_UNSET_PTR;

    return conf;
}


static char *
ngx_http_cache_purge_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child)
{
    ngx_http_cache_purge_loc_conf_t *prev = parent;
    ngx_http_cache_purge_loc_conf_t *conf = child;

    ngx_str_t  *m;

    /* the handler is the location's own: not inherited */
    if (conf->zone == NGX_CONF_UNSET_PTR) {
        conf->zone = NULL;
    }

    ngx_conf_merge_ptr_value(conf->methods, prev->methods, NULL);

    if (conf->methods == NULL) {
        conf->methods = ngx_array_create(cf->pool, 1, sizeof(ngx_str_t));
        if (conf->methods == NULL) {
            return NGX_CONF_ERROR;
        }

        m = ngx_array_push(conf->methods);
        if (m == NULL) {
            return NGX_CONF_ERROR;
        }

        *m = ngx_http_cache_purge_default_method;
    }

    ngx_conf_merge_str_value(conf->tags_header, prev->tags_header,
                             "Cache-Tag");

    return NGX_CONF_OK;
}


/* edge_cache_purge zone */

static char *
ngx_http_cache_purge(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_cache_purge_loc_conf_t *plcf = conf;

    ngx_str_t                    *value;
    ngx_uint_t                    i;
    ngx_http_cache_zone_t       **zp;
    ngx_http_core_loc_conf_t     *clcf;
    ngx_http_cache_main_conf_t   *cmcf;

    if (plcf->zone != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_cache_module);
    zp = cmcf->zones.elts;

    for (i = 0; i < cmcf->zones.nelts; i++) {
        if (zp[i]->name.len == value[1].len
            && ngx_strncmp(zp[i]->name.data, value[1].data, value[1].len)
               == 0)
        {
            plcf->zone = zp[i];

            clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
            clcf->handler = ngx_http_cache_purge_handler;

            return NGX_CONF_OK;
        }
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "unknown edge_cache_zone \"%V\" in edge_cache_purge",
                       &value[1]);
    return NGX_CONF_ERROR;
}


/* edge_cache_purge_methods PURGE DELETE ...: method names, as sent */

static char *
ngx_http_cache_purge_methods(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_cache_purge_loc_conf_t *plcf = conf;

    ngx_str_t   *value, *m;
    ngx_uint_t   i, j;

    if (plcf->methods != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    plcf->methods = ngx_array_create(cf->pool, cf->args->nelts - 1,
                                     sizeof(ngx_str_t));
    if (plcf->methods == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        if (value[i].len == 0 || value[i].len > 32) {
            goto invalid;
        }

        for (j = 0; j < value[i].len; j++) {
            if ((value[i].data[j] < 'A' || value[i].data[j] > 'Z')
                && value[i].data[j] != '_' && value[i].data[j] != '-')
            {
                goto invalid;
            }
        }

        m = ngx_array_push(plcf->methods);
        if (m == NULL) {
            return NGX_CONF_ERROR;
        }

        *m = value[i];
        continue;

    invalid:

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid method \"%V\" in "
                           "edge_cache_purge_methods: upper-case letters, "
                           "\"_\" and \"-\", at most 32", &value[i]);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* worker life */

static ngx_int_t
ngx_http_cache_purge_init_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                       i;
    ngx_http_cache_zone_t          **zp;
    ngx_http_cache_main_conf_t      *cmcf;
    ngx_http_cache_purge_worker_t   *pw;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    cmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_cache_module);
    if (cmcf == NULL) {
        return NGX_OK;
    }

    zp = cmcf->zones.elts;

    for (i = 0; i < cmcf->zones.nelts; i++) {
        pw = zp[i]->purge;

        if (pw == NULL) {
            continue;
        }

        ngx_rbtree_init(&pw->tree, &pw->sentinel,
                        ngx_str_rbtree_insert_value);
        ngx_queue_init(&pw->records);
        ngx_queue_init(&pw->jobs);

        /* cancelable: no request waits on the poll */
        pw->timer.handler = ngx_http_cache_purge_poll_handler;
        pw->timer.data = pw;
        pw->timer.log = cycle->log;
        pw->timer.cancelable = 1;

        ngx_add_timer(&pw->timer, 1);

        pw->ready = 1;
    }

    return NGX_OK;
}


static void
ngx_http_cache_purge_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                       i;
    ngx_queue_t                     *q;
    ngx_http_cache_zone_t          **zp;
    ngx_http_cache_main_conf_t      *cmcf;
    ngx_http_cache_purge_job_t      *job;
    ngx_http_cache_purge_worker_t   *pw;

    cmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_cache_module);
    if (cmcf == NULL) {
        return;
    }

    zp = cmcf->zones.elts;

    for (i = 0; i < cmcf->zones.nelts; i++) {
        pw = zp[i]->purge;
        if (pw == NULL || !pw->ready) {
            continue;
        }

        /* the commands in flight are the Redis client's to detach */

        while (!ngx_queue_empty(&pw->jobs)) {
            q = ngx_queue_head(&pw->jobs);
            job = ngx_queue_data(q, ngx_http_cache_purge_job_t, queue);

            if (job->cmd) {
                ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                              "edge_cache: purge job \"%V\" interrupted "
                              "by the worker's exit", &job->rkey);
            }

            ngx_http_cache_purge_job_free(job);
        }

        while (!ngx_queue_empty(&pw->records)) {
            q = ngx_queue_head(&pw->records);
            ngx_http_cache_purge_drop(pw, ngx_queue_data(q,
                                          ngx_http_cache_purge_rec_t, queue));
        }

        pw->ready = 0;
    }
}
