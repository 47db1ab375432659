/*
 * store_redis.c - the Redis health store (gatewayConfig.healthStore.redis):
 * the aigw_health_store vtable over one hiredis connection.
 *
 * The URL check is compiled in every build, so that a configuration naming
 * a bad URL says what is wrong with it whether or not this build has the
 * store.  The store itself needs hiredis (AIGW_HAVE_REDIS, set by meson when
 * it is found): one blocking redisContext behind a mutex, made at first use
 * and remade after any failure, every call one pipelined round trip bounded
 * by the configured timeout (connecting, and each read or write).  Nothing
 * is printed; a store that does not answer returns -1 and the client goes
 * on with its own state.
 *
 * hiredis 0.14 allocates its contexts, buffers and replies with the C
 * library's malloc: it has no allocator hooks (hiredisSetAllocators came in
 * 1.0), so those allocations do not pass through alloc.c and its test
 * hooks.  Everything this file allocates itself does.
 */
#include "internal.h"

#include <arpa/inet.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* The URL                                                                  */
/* ------------------------------------------------------------------------ */

#define DB_MAX 1000000
#define SUN_PATH_MAX 107 /* sizeof(sockaddr_un.sun_path) - 1 on Linux */
#define DEFAULT_PORT 6379

typedef struct redis_url {
    bool unix_socket;
    char *host; /* TCP: a name, an IPv4 address, or an IPv6 one (no brackets) */
    int port;
    char *path; /* unix: the socket's absolute path */
    char *user; /* NULL when none */
    char *password; /* NULL when none; wiped on free */
    long db;
} redis_url;

static void url_free(redis_url *u)
{
    aigw__free(u->host);
    aigw__free(u->path);
    aigw__free(u->user);
    if (u->password)
        aigw__wipe(u->password, strlen(u->password));
    aigw__free(u->password);
    memset(u, 0, sizeof *u);
}

static int hex_val(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = aigw__lower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* s[0..n) with each valid %XX decoded (a '%' not followed by two hex
 * digits stays as it is); NULL when out of memory. */
static char *pct_decode(const char *s, size_t n)
{
    char *d = aigw__malloc(n + 1);
    size_t i, j = 0;
    if (!d)
        return NULL;
    for (i = 0; i < n; i++) {
        int hi, lo;
        if (s[i] == '%' && i + 2 < n && (hi = hex_val((unsigned char)s[i + 1])) >= 0 &&
            (lo = hex_val((unsigned char)s[i + 2])) >= 0) {
            d[j++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            d[j++] = s[i];
        }
    }
    d[j] = '\0';
    return d;
}

/* A decimal number of s[0..n) in [lo, hi]: 0, or -1 (empty, not all
 * digits, out of range). */
static int parse_num(const char *s, size_t n, long lo, long hi, long *out)
{
    long v = 0;
    size_t i;
    if (n == 0 || n > 9)
        return -1;
    for (i = 0; i < n; i++) {
        if (!aigw__is_digit((unsigned char)s[i]))
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static bool host_char(int c)
{
    return aigw__is_alpha(c) || aigw__is_digit(c) || c == '-' || c == '.' || c == '_';
}

/* Parses url into *u: NULL, or a fixed message (never quoting the URL: it
 * may hold a password) and *u cleared.  *oom when out of memory. */
static const char *url_parse(const char *url, redis_url *u, bool *oom)
{
    const char *rest, *end, *at, *auth_end, *host, *host_end, *p;
    size_t len, i;
    memset(u, 0, sizeof *u);
    u->port = DEFAULT_PORT;
    *oom = false;
    if (!url || !url[0])
        return "expected a redis:// or unix:// URL, got an empty string";
    len = strlen(url);
    for (i = 0; i < len; i++)
        if ((unsigned char)url[i] <= 0x20 || (unsigned char)url[i] >= 0x7f)
            return "the URL holds a space, a control character or a non-ASCII byte";
    if (aigw__strncasecmp(url, "rediss://", 9) == 0)
        return "rediss:// (TLS) is not available: the hiredis libaigw is built against has "
               "no TLS; use redis:// on a trusted network or a TLS tunnel";

    if (aigw__strncasecmp(url, "unix://", 7) == 0) {
        const char *q;
        rest = url + 7;
        if (rest[0] != '/')
            return "a unix:// URL needs an absolute socket path (unix:///path/to/socket)";
        q = strchr(rest, '?');
        end = q ? q : rest + strlen(rest);
        if (memchr(rest, '#', (size_t)(end - rest)))
            return "a unix:// URL takes no fragment (#...)";
        if (end - rest < 2 || end[-1] == '/')
            return "a unix:// URL needs the path of a socket, not of a directory";
        if ((size_t)(end - rest) > SUN_PATH_MAX)
            return "the socket path is too long (at most 107 bytes)";
        u->unix_socket = true;
        if (q) {
            const char *v = q + 1;
            if (strncmp(v, "db=", 3) != 0)
                return "a unix:// URL takes only ?db=N after the path";
            v += 3;
            if (parse_num(v, strlen(v), 0, DB_MAX, &u->db) != 0)
                return "the database (?db=) must be a number, 0..1000000";
        }
        if (!(u->path = aigw__strndup(rest, (size_t)(end - rest)))) {
            *oom = true;
            return "out of memory";
        }
        return NULL;
    }

    if (aigw__strncasecmp(url, "redis://", 8) != 0)
        return "expected a redis:// or unix:// URL";
    rest = url + 8;
    /* Neither the host, the port nor the database holds an '@': the last one
     * ends the user info, whatever the password holds ('/', '@', ...). */
    at = strrchr(rest, '@');
    host = at ? at + 1 : rest;
    if (at) {
        const char *colon = memchr(rest, ':', (size_t)(at - rest));
        if (!colon)
            return "the user info before '@' must be [user]:password";
        if (colon > rest && !(u->user = pct_decode(rest, (size_t)(colon - rest))))
            goto oom;
        if (at > colon + 1 && !(u->password = pct_decode(colon + 1, (size_t)(at - colon - 1))))
            goto oom;
    }
    auth_end = host + strcspn(host, "/?#");
    if (*auth_end == '?')
        goto query;
    if (*auth_end == '#')
        goto fragment;
    /* the host */
    if (host[0] == '[') {
        char buf[INET6_ADDRSTRLEN + 1];
        struct in6_addr a6;
        const char *close = memchr(host, ']', (size_t)(auth_end - host));
        if (!close)
            goto bad_ipv6;
        if ((size_t)(close - host - 1) >= sizeof buf || close == host + 1)
            goto bad_ipv6;
        memcpy(buf, host + 1, (size_t)(close - host - 1));
        buf[close - host - 1] = '\0';
        if (inet_pton(AF_INET6, buf, &a6) != 1)
            goto bad_ipv6;
        if (!(u->host = aigw__strdup(buf)))
            goto oom;
        host_end = close + 1;
        if (host_end != auth_end && *host_end != ':') {
            url_free(u);
            return "an IPv6 address in brackets may be followed only by :port";
        }
    } else {
        host_end = host;
        while (host_end < auth_end && *host_end != ':')
            host_end++;
        if (host_end == host) {
            url_free(u);
            return "the URL names no host (redis://host[:port][/db])";
        }
        for (p = host; p < host_end; p++)
            if (!host_char((unsigned char)*p)) {
                url_free(u);
                return "the host must be a name, an IPv4 address or an [IPv6] address";
            }
        if (!(u->host = aigw__strndup(host, (size_t)(host_end - host))))
            goto oom;
    }
    /* the port */
    if (host_end < auth_end) {
        long port;
        if (parse_num(host_end + 1, (size_t)(auth_end - host_end - 1), 1, 65535, &port) != 0) {
            url_free(u);
            return "the port must be 1..65535";
        }
        u->port = (int)port;
    }
    /* the database */
    if (*auth_end == '/') {
        const char *db = auth_end + 1;
        size_t n = strcspn(db, "?#");
        if (db[n] == '?')
            goto query;
        if (db[n] == '#')
            goto fragment;
        if (n > 0 && parse_num(db, n, 0, DB_MAX, &u->db) != 0) {
            url_free(u);
            return "the database (after the host's '/') must be a number, 0..1000000";
        }
    }
    return NULL;

query:
    url_free(u);
    return "a redis:// URL takes no query (?...): redis://[[user]:password@]host[:port][/db]";
fragment:
    url_free(u);
    return "a redis:// URL takes no fragment (#...)";
bad_ipv6:
    url_free(u);
    return "the host in brackets must be an IPv6 address";
oom:
    url_free(u);
    *oom = true;
    return "out of memory";
}

int aigw__redis_url_check(const char *url, char **why)
{
    redis_url u;
    bool oom;
    const char *msg = url_parse(url, &u, &oom);
    if (!msg) {
        url_free(&u);
        if (why)
            *why = NULL;
        return 0;
    }
    if (why)
        *why = oom ? NULL : aigw__strdup(msg);
    return -1;
}

#ifndef AIGW_HAVE_REDIS

bool aigw__have_redis(void)
{
    return false;
}

aigw_status aigw__redis_store_new(const aigw_store_opts *o, aigw_health_store *vt, void **ud)
{
    (void)o;
    (void)vt;
    (void)ud;
    return AIGW_EINVAL;
}

#else /* AIGW_HAVE_REDIS */

#include <errno.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <signal.h>
#include <sys/time.h>
#include <time.h>

/* Compare-and-delete: a fact is deleted only while it holds what the caller
 * wrote (someone else may have written since). */
static const char CAD_SCRIPT[] = "if redis.call('get',KEYS[1])==ARGV[1] then "
                                 "return redis.call('del',KEYS[1]) else return 0 end";

typedef struct rstore {
    pthread_mutex_t lock;
    redis_url url;
    char *prefix;
    size_t prefix_len;
    char *password; /* the configured one, else the URL's; NULL: no AUTH */
    size_t password_len;
    int64_t timeout_ms;
    redisContext *ctx; /* NULL until first use and after a failure */
    /* under the lock; for a debugger, never printed */
    long connects;
    long round_trips;
    long failures;
} rstore;

bool aigw__have_redis(void)
{
    return true;
}

/* ---- SIGPIPE ----
 * hiredis writes with write(2), not send(MSG_NOSIGNAL): a write on a
 * connection Redis has closed raises SIGPIPE, whose default kills the
 * process.  A library must not change the process's dispositions, so each
 * round trip blocks SIGPIPE in the calling thread and consumes one it
 * raised itself before unblocking. */
typedef struct sigpipe_guard {
    sigset_t old;
    bool was_pending;
} sigpipe_guard;

static void sigpipe_block(sigpipe_guard *g)
{
    sigset_t set, pending;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, &g->old);
    sigemptyset(&pending);
    g->was_pending = sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) == 1;
}

static void sigpipe_unblock(sigpipe_guard *g)
{
    if (!g->was_pending) {
        sigset_t set, pending;
        sigemptyset(&pending);
        if (sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) == 1) {
            struct timespec zero = {0, 0};
            sigemptyset(&set);
            sigaddset(&set, SIGPIPE);
            while (sigtimedwait(&set, NULL, &zero) == -1 && errno == EINTR)
                ;
        }
    }
    pthread_sigmask(SIG_SETMASK, &g->old, NULL);
}

/* ---- the connection ---- */

static void drop(rstore *s)
{
    if (s->ctx) {
        redisFree(s->ctx);
        s->ctx = NULL;
    }
    s->failures++;
}

/* One command's reply, on the connection as it is being set up: whether it
 * is not an error (AUTH's OK, SELECT's OK). */
static bool setup_ok(redisContext *c, redisReply *r)
{
    bool ok = r && c->err == 0 && r->type != REDIS_REPLY_ERROR;
    if (r)
        freeReplyObject(r);
    return ok;
}

/* The connection, made when there is none: 0, or -1 (none now). */
static int connect_store(rstore *s)
{
    struct timeval tv;
    redisContext *c;
    if (s->ctx)
        return 0;
    tv.tv_sec = (time_t)(s->timeout_ms / 1000);
    tv.tv_usec = (suseconds_t)((s->timeout_ms % 1000) * 1000);
    s->connects++;
    if (s->url.unix_socket)
        c = redisConnectUnixWithTimeout(s->url.path, tv);
    else
        c = redisConnectWithTimeout(s->url.host, s->url.port, tv);
    if (!c)
        return -1;
    if (c->err || redisSetTimeout(c, tv) != REDIS_OK)
        goto fail;
    if (s->password) {
        redisReply *r;
        if (s->url.user)
            r = redisCommand(c, "AUTH %s %b", s->url.user, s->password, s->password_len);
        else
            r = redisCommand(c, "AUTH %b", s->password, s->password_len);
        if (!setup_ok(c, r))
            goto fail;
    }
    if (s->url.db != 0 && !setup_ok(c, redisCommand(c, "SELECT %ld", s->url.db)))
        goto fail;
    s->ctx = c;
    return 0;
fail:
    redisFree(c);
    return -1;
}

/* ---- replies ---- */

static bool printable(const char *s, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
            return false;
    return true;
}

static bool is_wrongtype(const redisReply *r)
{
    return r->type == REDIS_REPLY_ERROR && r->str && strncmp(r->str, "WRONGTYPE", 9) == 0;
}

/* Fills e from the replies to GET and PTTL of its name: 0, or -1 when they
 * say the store is not serving (an error other than WRONGTYPE, a reply of
 * the wrong kind to PTTL). */
static int read_fact(const redisReply *g, const redisReply *t, aigw_store_entry *e)
{
    e->value[0] = '\0';
    if (g->type == REDIS_REPLY_ERROR && !is_wrongtype(g))
        return -1;
    if (t->type != REDIS_REPLY_INTEGER)
        return -1;
    if (g->type == REDIS_REPLY_NIL || t->integer == -2) {
        e->ttl_ms = AIGW_STORE_ABSENT;
        return 0;
    }
    if (g->type != REDIS_REPLY_STRING || g->len >= AIGW_STORE_VALUE_MAX ||
        !printable(g->str, g->len) || t->integer < 0) {
        e->ttl_ms = AIGW_STORE_UNREADABLE; /* another type, too long, no expiry */
        return 0;
    }
    memcpy(e->value, g->str, g->len);
    e->value[g->len] = '\0';
    e->ttl_ms = (int64_t)t->integer;
    return 0;
}

/* ---- one round trip ----
 * The commands are appended to the context's buffer, then their replies
 * read (the first read writes the buffer).  Every reply is read, so that
 * the connection stays in step; any I/O error or timeout drops it. */

typedef struct trip {
    rstore *s;
    sigpipe_guard g;
    size_t appended;
    bool broken;
} trip;

static int trip_begin(trip *t, rstore *s)
{
    struct timespec until;
    t->s = s;
    t->appended = 0;
    t->broken = false;
    /* Behind a call in flight no longer than the timeout: callers queued
     * on a stalled Redis would otherwise each wait a whole timeout in
     * turn. */
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += (time_t)(s->timeout_ms / 1000);
    until.tv_nsec += (long)(s->timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    if (pthread_mutex_timedlock(&s->lock, &until) != 0)
        return -1;
    sigpipe_block(&t->g);
    if (connect_store(s) != 0) {
        sigpipe_unblock(&t->g);
        s->failures++;
        pthread_mutex_unlock(&s->lock);
        return -1;
    }
    s->round_trips++;
    return 0;
}

/* Appends one command; a failure (out of memory) marks the trip broken. */
static void trip_append(trip *t, int rc)
{
    if (rc != REDIS_OK)
        t->broken = true;
    else
        t->appended++;
}

/* The next reply, or NULL when the connection failed (then broken). */
static redisReply *trip_reply(trip *t)
{
    void *r = NULL;
    if (t->broken || t->appended == 0)
        return NULL;
    t->appended--;
    if (redisGetReply(t->s->ctx, &r) != REDIS_OK || !r) {
        if (r)
            freeReplyObject(r);
        t->broken = true;
        return NULL;
    }
    return r;
}

/* Ends the trip: rc, or -1 when it broke (or rc is -1: the connection is
 * then remade on the next call, with AUTH and SELECT again). */
static int trip_end(trip *t, int rc)
{
    rstore *s = t->s;
    if (t->broken || rc < 0) {
        drop(s);
        rc = -1;
    }
    sigpipe_unblock(&t->g);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static void free_reply(redisReply *r)
{
    if (r)
        freeReplyObject(r);
}

static size_t value_len(const char *v)
{
    const char *z = memchr(v, '\0', AIGW_STORE_VALUE_MAX);
    return z ? (size_t)(z - v) : AIGW_STORE_VALUE_MAX;
}

static const char *name_of(const aigw_store_entry *e)
{
    return e->name ? e->name : "";
}

/* ---- the vtable ----
 * get: GET and PTTL of each name, pipelined.  put: SET ... PX for a ttl > 0;
 * for a ttl <= 0 DEL when the value is "", else compare-and-delete (EVAL).
 * claim: SET ... NX PX, GET, PTTL: 1 when the SET took, else 0 with the
 * holder read as get reads it. */

static int rs_get(void *ud, aigw_store_entry *entries, size_t n)
{
    rstore *s = ud;
    trip t;
    size_t i;
    int rc = 0;
    if (n == 0)
        return 0;
    if (trip_begin(&t, s) != 0)
        return -1;
    for (i = 0; i < n && !t.broken; i++) {
        const char *nm = name_of(&entries[i]);
        size_t nl = strlen(nm);
        trip_append(&t, redisAppendCommand(s->ctx, "GET %b%b", s->prefix, s->prefix_len, nm, nl));
        trip_append(&t, redisAppendCommand(s->ctx, "PTTL %b%b", s->prefix, s->prefix_len, nm, nl));
    }
    for (i = 0; i < n && !t.broken; i++) {
        redisReply *g = trip_reply(&t);
        redisReply *p = trip_reply(&t);
        if (g && p && read_fact(g, p, &entries[i]) != 0)
            rc = -1;
        free_reply(g);
        free_reply(p);
    }
    return trip_end(&t, rc);
}

static int rs_put(void *ud, const aigw_store_entry *entries, size_t n)
{
    rstore *s = ud;
    trip t;
    size_t i;
    int rc = 0;
    if (n == 0)
        return 0;
    if (trip_begin(&t, s) != 0)
        return -1;
    for (i = 0; i < n && !t.broken; i++) {
        const aigw_store_entry *e = &entries[i];
        const char *nm = name_of(e);
        size_t nl = strlen(nm), vl = value_len(e->value);
        if (e->ttl_ms > 0)
            trip_append(&t, redisAppendCommand(s->ctx, "SET %b%b %b PX %lld", s->prefix,
                                               s->prefix_len, nm, nl, e->value, vl,
                                               (long long)e->ttl_ms));
        else if (vl == 0)
            trip_append(&t, redisAppendCommand(s->ctx, "DEL %b%b", s->prefix, s->prefix_len, nm,
                                               nl));
        else
            trip_append(&t, redisAppendCommand(s->ctx, "EVAL %s 1 %b%b %b", CAD_SCRIPT, s->prefix,
                                               s->prefix_len, nm, nl, e->value, vl));
    }
    for (i = 0; i < n && !t.broken; i++) {
        const aigw_store_entry *e = &entries[i];
        redisReply *r = trip_reply(&t);
        if (!r)
            break;
        if (e->ttl_ms > 0 || value_len(e->value) == 0) {
            /* SET answers OK, DEL a count; an error (OOM, NOAUTH,
             * READONLY, ...) is a store that did not take the write */
            if (r->type == REDIS_REPLY_ERROR)
                rc = -1;
        }
        /* compare-and-delete: an error (the name holds another type) is
         * about that name, not the store; the fact expires anyway */
        free_reply(r);
    }
    return trip_end(&t, rc);
}

static int rs_claim(void *ud, aigw_store_entry *e)
{
    rstore *s = ud;
    trip t;
    redisReply *r, *g, *p;
    const char *nm = name_of(e);
    size_t nl = strlen(nm), vl = value_len(e->value);
    long long ttl = e->ttl_ms > 0 ? (long long)e->ttl_ms : 1;
    int rc = -1;
    if (trip_begin(&t, s) != 0)
        return -1;
    trip_append(&t, redisAppendCommand(s->ctx, "SET %b%b %b NX PX %lld", s->prefix, s->prefix_len,
                                       nm, nl, e->value, vl, ttl));
    trip_append(&t, redisAppendCommand(s->ctx, "GET %b%b", s->prefix, s->prefix_len, nm, nl));
    trip_append(&t, redisAppendCommand(s->ctx, "PTTL %b%b", s->prefix, s->prefix_len, nm, nl));
    r = trip_reply(&t);
    g = trip_reply(&t);
    p = trip_reply(&t);
    if (r && g && p) {
        if (r->type == REDIS_REPLY_STATUS && r->str && strcmp(r->str, "OK") == 0)
            rc = 1;
        else if (r->type == REDIS_REPLY_NIL)
            rc = read_fact(g, p, e) == 0 ? 0 : -1;
        /* else an error (OOM, NOAUTH, READONLY, ...): -1 */
    }
    free_reply(r);
    free_reply(g);
    free_reply(p);
    return trip_end(&t, rc);
}

static void rs_destroy(void *ud)
{
    rstore *s = ud;
    if (!s)
        return;
    if (s->ctx)
        redisFree(s->ctx);
    url_free(&s->url);
    aigw__free(s->prefix);
    if (s->password) {
        aigw__wipe(s->password, s->password_len);
        aigw__free(s->password);
    }
    pthread_mutex_destroy(&s->lock);
    aigw__free(s);
}

aigw_status aigw__redis_store_new(const aigw_store_opts *o, aigw_health_store *vt, void **ud)
{
    rstore *s;
    bool oom;
    if (!o || !vt || !ud)
        return AIGW_EINVAL;
    if (!(s = aigw__calloc(1, sizeof *s)))
        return AIGW_ENOMEM;
    if (url_parse(o->url, &s->url, &oom) != NULL) {
        aigw__free(s);
        return oom ? AIGW_ENOMEM : AIGW_EINVAL;
    }
    /* the configured password, else the URL's; the store keeps one copy */
    if (o->password.value && o->password.len) {
        s->password = aigw__strndup(o->password.value, o->password.len);
        s->password_len = o->password.len;
        oom = !s->password;
    } else if (s->url.password && s->url.password[0]) {
        s->password = s->url.password;
        s->password_len = strlen(s->password);
        s->url.password = NULL;
    }
    if (s->url.password) {
        aigw__wipe(s->url.password, strlen(s->url.password));
        aigw__free(s->url.password);
        s->url.password = NULL;
    }
    s->prefix = aigw__strdup(o->prefix ? o->prefix : "");
    if (oom || !s->prefix || pthread_mutex_init(&s->lock, NULL) != 0) {
        url_free(&s->url);
        aigw__free(s->prefix);
        if (s->password) {
            aigw__wipe(s->password, s->password_len);
            aigw__free(s->password);
        }
        aigw__free(s);
        return AIGW_ENOMEM;
    }
    s->prefix_len = strlen(s->prefix);
    s->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 50;

    memset(vt, 0, sizeof *vt);
    vt->version = AIGW_HEALTH_STORE_VERSION;
    vt->kind = "redis";
    vt->get = rs_get;
    vt->put = rs_put;
    vt->claim = rs_claim;
    vt->destroy = rs_destroy;
    *ud = s;
    return AIGW_OK;
}

#endif /* AIGW_HAVE_REDIS */
