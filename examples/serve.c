/*
 * serve.c - `aigw serve`: libaigw as a local OpenAI/Anthropic-compatible
 * gateway, for programs in any language.
 *
 *   aigw serve -c FILE [--listen HOST:PORT] [--access-log FILE]
 *              [--max-body BYTES] [--max-header BYTES] [--max-connections N]
 *              [--max-concurrent N] [--idle-timeout SECONDS]
 *              [--drain-timeout SECONDS]
 *
 * One aigw_client serves every caller, so key health, breakers and the
 * retry budget are shared.  It uses libaigw's public API only.
 *
 * The HTTP side is GNU libmicrohttpd (Debian's libmicrohttpd-dev): a small,
 * long-maintained C server library that does the HTTP/1.1 parsing, chunked
 * encoding, keep-alive, connection limits and timeouts.  It runs in its
 * thread-per-connection mode, which matches libaigw's blocking API: a whole
 * request is sent from the connection's own thread; a streamed one from a
 * worker thread that feeds the connection's content reader, so that the
 * answer's status and headers can wait for the library's commit point.
 */
#define _GNU_SOURCE /* POLLRDHUP */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <microhttpd.h>

#include "aigw.h"
#include "cli.h"
#include "serve.h"

const char USAGE_SERVE[] =
    "  aigw serve -c FILE [--listen HOST:PORT] [options]\n"
    "      Run a local gateway in the foreground: POST /v1/chat/completions,\n"
    "      /v1/responses, /v1/messages (Anthropic's shape), GET /v1/models,\n"
    "      /healthz and /metrics (Prometheus), every request through failover\n"
    "      with one shared client. SDK base URLs: http://HOST:PORT/v1 (OpenAI),\n"
    "      http://HOST:PORT (Anthropic). The first line on stderr says\n"
    "      \"listening on http://HOST:PORT\"; then one JSON access log line per\n"
    "      request. SIGHUP re-reads FILE (a bad file keeps the old one);\n"
    "      SIGTERM/SIGINT stop accepting, let requests finish, exit 0.\n"
    "      -c, --config FILE       the gateway file; its \"accessKeys\" say who may\n"
    "                              call (Authorization: Bearer KEY or x-api-key)\n"
    "      --listen HOST:PORT      default 127.0.0.1:8080; port 0 picks a free one.\n"
    "                              Beyond loopback only with accessKeys\n"
    "      --access-log FILE       the access log (default - : stderr)\n"
    "      --max-body BYTES        request body limit (default 8m; k, m suffixes)\n"
    "      --max-header BYTES      request line and headers limit (default 32k)\n"
    "      --max-connections N     open connections (default 256)\n"
    "      --max-concurrent N      requests in flight; more get 503 (default 64)\n"
    "      --idle-timeout SECONDS  close a connection idle this long (default 30)\n"
    "      --drain-timeout SECONDS on SIGTERM, how long requests in flight may\n"
    "                              finish before they are cancelled (default 30)\n"
    "      -h, --help              this help\n";

/* ------------------------------------------------------------------------ */
/* Small helpers                                                            */
/* ------------------------------------------------------------------------ */

typedef struct sbuf {
    char *p;
    size_t len, cap;
    bool oom;
    bool on_stack; /* p is the caller's buffer: never freed nor realloc'd */
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        char *p;
        while (cap < b->len + n + 1)
            cap *= 2;
        if (b->on_stack) { /* out of the caller's buffer, once */
            if ((p = malloc(cap)) != NULL)
                memcpy(p, b->p, b->len);
        } else {
            p = realloc(b->p, cap);
        }
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
        b->on_stack = false;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    int n;
    va_start(ap, fmt);
    n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof tmp) {
        sb_add(b, tmp, (size_t)n);
        return;
    }
    {
        char *big = malloc((size_t)n + 1);
        if (!big) {
            b->oom = true;
            return;
        }
        va_start(ap, fmt);
        vsnprintf(big, (size_t)n + 1, fmt, ap);
        va_end(ap);
        sb_add(b, big, (size_t)n);
        free(big);
    }
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int ascii_casecmp(const char *a, const char *b)
{
    for (; *a && *b; a++, b++) {
        int x = (*a >= 'A' && *a <= 'Z') ? *a + 32 : *a;
        int y = (*b >= 'A' && *b <= 'Z') ? *b + 32 : *b;
        if (x != y)
            return x - y;
    }
    return (unsigned char)*a - (unsigned char)*b;
}

/* ------------------------------------------------------------------------ */
/* The server                                                               */
/* ------------------------------------------------------------------------ */

enum route {
    R_CHAT,
    R_RESPONSES,
    R_MESSAGES,
    R_MODELS,
    R_HEALTHZ,
    R_METRICS,
    R_OTHER,
    R__N
};
static const char *const ROUTE_NAMES[R__N] = {"/v1/chat/completions", "/v1/responses",
                                              "/v1/messages",         "/v1/models",
                                              "/healthz",             "/metrics",
                                              "other"};

/* the status codes /metrics counts per route; others go to "other" */
static const int CODES[] = {200, 400, 401, 403, 404, 405, 408, 413, 429, 431,
                            499, 500, 502, 503, 504, 0};
#define N_CODES (sizeof CODES / sizeof CODES[0])

/* request duration buckets (seconds), for /metrics */
static const double DURATION_LE[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                     1,     2.5,  5,     10,   30,  60,  120};
#define N_DURATION_LE (sizeof DURATION_LE / sizeof DURATION_LE[0])

struct request;

typedef struct serve_server {
    struct MHD_Daemon *daemon;
    aigw_client *client;
    const char *file;
    pthread_mutex_t cfg_mu;
    aigw_config *cfg; /* the current one; a reference is ours */
    bool loopback;
    char url[300];
    /* limits */
    size_t max_body;
    size_t max_header;
    unsigned max_connections;
    unsigned max_concurrent;
    unsigned idle_timeout_s;
    int64_t drain_timeout_ms;
    /* state */
    atomic_uint in_flight;
    atomic_bool stopping;
    atomic_bool watch_stop; /* the watcher's end, once MHD has stopped */
    pthread_mutex_t active_mu;
    struct request *active; /* requests running through the library */
    uint64_t next_serial;   /* under active_mu */
    pthread_t watcher;      /* notices clients that leave a whole request */
    bool watcher_started;
    /* the access log */
    FILE *log;
    bool own_log;
    pthread_mutex_t log_mu;
    /* metrics */
    _Atomic uint64_t counts[R__N][N_CODES];
    _Atomic uint64_t duration_bucket[N_DURATION_LE];
    _Atomic uint64_t duration_count, duration_sum_us;
    _Atomic uint64_t reloads, reload_failures;
    int64_t started_ms;
    /* serve_server_start_unbound's caller's */
    serve_closed_fn on_closed;
    void *closed_cls;
} server;

/* A streamed answer on its way: the worker thread running
 * aigw_client_stream fills it, the connection's content reader drains it. */
typedef struct stream_state {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;              /* the request and the MHD response */
    pthread_t worker;
    bool worker_started, joined;
    aigw_client *client;
    aigw_request *areq;
    aigw_cancel *cancel;
    enum route route;
    int fd;                /* the client's socket, to notice it leave */
    /* what the worker learned */
    bool committed, finished, gone;
    int status;
    char **hnames, **hvalues;
    size_t n_headers;
    char request_id[40];
    char provider[128], model[256];
    int attempt;
    aigw_response *resp;
    aigw_status st;
    char errmsg[256];
    /* bytes not yet handed to the connection: q[qoff, qready) are whole
     * events, ready to go; q[qready, qlen) is an event still arriving */
    char *q;
    size_t qlen, qoff, qready, qcap;
    bool error_sent;
    uint64_t bytes_out;
} stream_state;

typedef struct request {
    server *srv;
    enum route route;
    bool post;
    char method[16];         /* as the client sent it, for the log */
    bool checked;            /* on_headers has run */
    aigw_config *cfg;        /* the configuration it was authorised by */
    int access_key;          /* index, or -1 */
    char key_id[256];
    char configuration[256];
    bool authorised;
    bool slot;               /* holds one of max_concurrent */
    bool answered;           /* a response is queued */
    char *body;
    size_t body_len, body_cap;
    bool too_large;
    int64_t t0;
    struct MHD_Connection *conn;
    aigw_cancel *cancel;
    struct request *prev, *next; /* in srv->active while it runs */
    bool in_active;
    uint64_t serial;         /* unique while in srv->active */
    bool watch;              /* a whole request: the watcher looks after it */
    int fd;                  /* the client's socket; -1 unknown */
    /* for the log */
    int status;
    bool stream;
    uint64_t bytes_out;
    char error_code[64];
    aigw_response *resp;     /* whole: the library's answer */
    stream_state *ss;
} request;

static void request_state_free(request *r);

/* ---- the configuration in use ---- */

static aigw_config *current_config(server *s)
{
    aigw_config *c;
    pthread_mutex_lock(&s->cfg_mu);
    c = aigw_config_ref(s->cfg);
    pthread_mutex_unlock(&s->cfg_mu);
    return c;
}

/* ---- requests the library is running (for the drain) ---- */

static void active_add(request *r)
{
    server *s = r->srv;
    pthread_mutex_lock(&s->active_mu);
    r->prev = NULL;
    r->next = s->active;
    if (s->active)
        s->active->prev = r;
    s->active = r;
    r->in_active = true;
    r->serial = ++s->next_serial;
    pthread_mutex_unlock(&s->active_mu);
}

static void active_remove(request *r)
{
    server *s = r->srv;
    pthread_mutex_lock(&s->active_mu);
    if (r->in_active) {
        if (r->prev)
            r->prev->next = r->next;
        else
            s->active = r->next;
        if (r->next)
            r->next->prev = r->prev;
        r->in_active = false;
    }
    pthread_mutex_unlock(&s->active_mu);
}

/*
 * Clients that go away while a whole request runs: one thread for the whole
 * server polls the sockets of those requests for the peer's FIN (POLLRDHUP,
 * which a pipelined next request does not raise) and fires their cancel
 * tokens, so the upstream attempt stops.  (A stream's own waits watch its
 * client.)
 */
#define WATCH_MAX 1024
#define WATCH_EVERY_MS 100

static void *watcher_main(void *arg)
{
    server *s = arg;
    struct pollfd *fds = calloc(WATCH_MAX, sizeof *fds);
    uint64_t *serials = calloc(WATCH_MAX, sizeof *serials);
    if (!fds || !serials) {
        free(fds);
        free(serials);
        return NULL;
    }
    while (!atomic_load(&s->watch_stop)) {
        request *r;
        size_t n = 0, i;
        int ready;
        pthread_mutex_lock(&s->active_mu);
        for (r = s->active; r && n < WATCH_MAX; r = r->next)
            if (r->watch && r->fd >= 0) {
                fds[n].fd = r->fd;
                fds[n].events = POLLRDHUP;
                fds[n].revents = 0;
                serials[n++] = r->serial;
            }
        pthread_mutex_unlock(&s->active_mu);
        if (n == 0) {
            struct timespec ts = {0, WATCH_EVERY_MS * 1000000L};
            nanosleep(&ts, NULL);
            continue;
        }
        ready = poll(fds, (nfds_t)n, WATCH_EVERY_MS);
        if (ready > 0) {
            pthread_mutex_lock(&s->active_mu);
            for (i = 0; i < n; i++) {
                if (!(fds[i].revents & (POLLRDHUP | POLLHUP | POLLERR)))
                    continue;
                for (r = s->active; r; r = r->next) /* still there, the same one */
                    if (r->serial == serials[i]) {
                        aigw_cancel_fire(r->cancel);
                        break;
                    }
            }
            pthread_mutex_unlock(&s->active_mu);
            /* a socket that stays readable-at-hangup until its request ends
             * must not make this loop spin */
            struct timespec ts = {0, 20 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    free(fds);
    free(serials);
    return NULL;
}

static void active_cancel_all(server *s)
{
    request *r;
    pthread_mutex_lock(&s->active_mu);
    for (r = s->active; r; r = r->next)
        if (r->cancel)
            aigw_cancel_fire(r->cancel);
    pthread_mutex_unlock(&s->active_mu);
}

/* ------------------------------------------------------------------------ */
/* Answers                                                                  */
/* ------------------------------------------------------------------------ */

/* The error type Anthropic's API names for a status. */
static const char *anthropic_type(int status)
{
    switch (status) {
    case 400:
    case 405:
    case 422:
        return "invalid_request_error";
    case 401:
        return "authentication_error";
    case 403:
        return "permission_error";
    case 404:
        return "not_found_error";
    case 413:
    case 431:
        return "request_too_large";
    case 429:
        return "rate_limit_error";
    case 504:
        return "timeout_error";
    case 529:
    case 503:
        return "overloaded_error";
    default:
        return "api_error";
    }
}

/* An error body in the shape of the route's API: OpenAI's
 * {"error":{"message","type","code"}}, or Anthropic's
 * {"type":"error","error":{"type","message"}} on /v1/messages. */
static char *error_body(enum route route, int status, const char *type, const char *code,
                        const char *message)
{
    cJSON *o = cJSON_CreateObject(), *e = cJSON_CreateObject();
    char *out;
    if (!o || !e) {
        cJSON_Delete(o);
        cJSON_Delete(e);
        return NULL;
    }
    if (route == R_MESSAGES) {
        cJSON_AddStringToObject(o, "type", "error");
        cJSON_AddStringToObject(e, "type", anthropic_type(status));
        cJSON_AddStringToObject(e, "message", message);
        if (code)
            cJSON_AddStringToObject(e, "code", code);
    } else {
        cJSON_AddStringToObject(e, "message", message);
        cJSON_AddStringToObject(e, "type", type);
        if (code)
            cJSON_AddStringToObject(e, "code", code);
        else
            cJSON_AddNullToObject(e, "code");
    }
    cJSON_AddItemToObject(o, "error", e);
    out = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return out;
}

static bool hop_or_framing(const char *name)
{
    static const char *const drop[] = {"connection", "keep-alive", "transfer-encoding",
                                       "content-length", "content-encoding", "te",
                                       "trailer", "upgrade", "proxy-connection",
                                       "proxy-authenticate", "set-cookie", "date", "server",
                                       NULL};
    size_t i;
    for (i = 0; drop[i]; i++)
        if (!ascii_casecmp(name, drop[i]))
            return true;
    return !strncmp(name, "x-aigw-", 7); /* ours are set by us */
}

/* Every answer goes out here: while the gateway drains, it asks the client
 * to take its next request elsewhere (Connection: close).  The request is
 * answered (for the log: with this status) only once libmicrohttpd took the
 * answer; it refuses one in some states (a pipelined request after
 * "Expect: 100-continue" and no body), and then ends the connection, which
 * on_completed logs as such. */
static enum MHD_Result queue_response(request *r, unsigned status, struct MHD_Response *m)
{
    enum MHD_Result ret;
    if (atomic_load(&r->srv->stopping))
        MHD_add_response_header(m, MHD_HTTP_HEADER_CONNECTION, "close");
    ret = MHD_queue_response(r->conn, status, m);
    r->answered = ret == MHD_YES;
    r->status = ret == MHD_YES ? (int)status : 0;
    if (ret != MHD_YES)
        r->error_code[0] = '\0';
    return ret;
}

static enum MHD_Result queue_body(request *r, int status, const char *ctype, const char *body,
                                  size_t len, const char *retry_after)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)(uintptr_t)body, MHD_RESPMEM_MUST_COPY);
    enum MHD_Result ret;
    if (!resp)
        return MHD_NO;
    if (ctype)
        MHD_add_response_header(resp, "content-type", ctype);
    if (retry_after)
        MHD_add_response_header(resp, "retry-after", retry_after);
    ret = queue_response(r, (unsigned)status, resp);
    MHD_destroy_response(resp);
    if (r->answered)
        r->bytes_out = len;
    return ret;
}

/* One of the gateway's own errors (not the library's). */
static enum MHD_Result queue_error(request *r, int status, const char *type, const char *code,
                                   const char *message, const char *retry_after)
{
    char *body = error_body(r->route, status, type, code, message);
    enum MHD_Result ret;
    snprintf(r->error_code, sizeof r->error_code, "%s", code ? code : type);
    if (!body)
        return queue_body(r, 500, "text/plain", "out of memory\n", 14, NULL);
    ret = queue_body(r, status, "application/json", body, strlen(body), retry_after);
    cJSON_free(body);
    return ret;
}

/* The served attempt (or, for an upstream's answer that was not served,
 * the last one): who answered. */
static const aigw_attempt *answering_attempt(const aigw_response *resp)
{
    size_t i, n = aigw_response_attempt_count(resp);
    for (i = 0; i < n; i++)
        if (aigw_attempt_served(aigw_response_attempt(resp, i)))
            return aigw_response_attempt(resp, i);
    if (n > 0 && !aigw_response_error_code(resp))
        return aigw_response_attempt(resp, n - 1);
    return NULL;
}

/* A header the gateway passes on (an upstream's, or the model a client
 * named): left out when its value holds a control character other than
 * tab, which HTTP does not allow in a field value and for which clients
 * refuse the whole answer (libmicrohttpd itself refuses CR and LF only). */
static void add_passed_header(struct MHD_Response *m, const char *name, const char *value)
{
    const unsigned char *p;
    for (p = (const unsigned char *)value; *p; p++)
        if ((*p < 0x20 && *p != '\t') || *p == 0x7f)
            return;
    MHD_add_response_header(m, name, value);
}

static void add_attempt_headers(struct MHD_Response *m, size_t n_attempts, const char *provider,
                                const char *model)
{
    char num[24];
    snprintf(num, sizeof num, "%zu", n_attempts);
    MHD_add_response_header(m, "x-aigw-attempts", num);
    if (provider && *provider)
        add_passed_header(m, "x-aigw-provider", provider);
    if (model && *model)
        add_passed_header(m, "x-aigw-model", model);
}

/* The library's error answers are OpenAI's shape; on /v1/messages they
 * become Anthropic's. */
static char *library_error_for_route(const aigw_response *resp, enum route route,
                                     size_t *len)
{
    const char *body = aigw_response_body(resp, len);
    cJSON *doc, *e, *msg;
    char *out = NULL;
    if (route != R_MESSAGES || !aigw_response_error_code(resp))
        return NULL;
    if (!(doc = cJSON_ParseWithLength(body, *len)))
        return NULL;
    e = cJSON_GetObjectItemCaseSensitive(doc, "error");
    msg = e ? cJSON_GetObjectItemCaseSensitive(e, "message") : NULL;
    if (cJSON_IsString(msg))
        out = error_body(R_MESSAGES, aigw_response_status(resp), "aigw_error",
                         aigw_response_error_code(resp), msg->valuestring);
    cJSON_Delete(doc);
    if (out)
        *len = strlen(out);
    return out;
}

/* A whole answer from the library (served, fail-fast or its own error). */
static enum MHD_Result queue_library_answer(request *r, const aigw_response *resp)
{
    size_t len, i, n = aigw_response_header_count(resp);
    char *converted = library_error_for_route(resp, r->route, &len);
    const char *body = converted ? converted : aigw_response_body(resp, &len);
    const aigw_attempt *a = answering_attempt(resp);
    struct MHD_Response *m =
        MHD_create_response_from_buffer(len, (void *)(uintptr_t)body, MHD_RESPMEM_MUST_COPY);
    enum MHD_Result ret;
    if (converted)
        cJSON_free(converted);
    if (!m)
        return MHD_NO;
    for (i = 0; i < n; i++) {
        const char *name, *value;
        if (aigw_response_header(resp, i, &name, &value) == AIGW_OK && !hop_or_framing(name))
            add_passed_header(m, name, value);
    }
    MHD_add_response_header(m, "x-aigw-request-id", aigw_response_request_id(resp));
    add_attempt_headers(m, aigw_response_attempt_count(resp), a ? aigw_attempt_provider(a) : NULL,
                        a ? aigw_attempt_model(a) : NULL);
    ret = queue_response(r, (unsigned)aigw_response_status(resp), m);
    MHD_destroy_response(m);
    if (r->answered) {
        r->bytes_out = len;
        if (aigw_response_error_code(resp))
            snprintf(r->error_code, sizeof r->error_code, "%s",
                     aigw_response_error_code(resp));
    }
    return ret;
}

/* ------------------------------------------------------------------------ */
/* Is the client still there?                                               */
/* ------------------------------------------------------------------------ */

static bool client_gone(int fd)
{
    struct pollfd p;
    char c;
    if (fd < 0)
        return false;
    p.fd = fd;
    p.events = POLLIN | POLLRDHUP;
    p.revents = 0;
    if (poll(&p, 1, 0) <= 0)
        return false;
    if (p.revents & (POLLHUP | POLLERR | POLLRDHUP | POLLNVAL))
        return true;
    if (p.revents & POLLIN) /* readable: data (a pipelined request) or EOF */
        return recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
    return false;
}

static int connection_fd(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    return ci ? (int)ci->connect_fd : -1;
}

/* ------------------------------------------------------------------------ */
/* Streams                                                                  */
/* ------------------------------------------------------------------------ */

#define STREAM_QUEUE_MAX (1024 * 1024) /* bytes held for a slow client */
#define STREAM_EVENT_MAX (256 * 1024)  /* an event longer than this goes out in pieces */
#define STREAM_POLL_MS 100             /* how often a waiting side looks at the client */

static void ss_wait(stream_state *s, int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += (long)ms * 1000000L;
    ts.tv_sec += ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    pthread_cond_timedwait(&s->cv, &s->mu, &ts);
}

static int ss_push(stream_state *s, const char *data, size_t len)
{
    if (s->qoff > 0 && s->qoff == s->qlen)
        s->qoff = s->qready = s->qlen = 0;
    if (s->qlen + len > s->qcap) {
        size_t cap = s->qcap ? s->qcap : 16384;
        char *q;
        if (s->qoff > 0) { /* compact first */
            memmove(s->q, s->q + s->qoff, s->qlen - s->qoff);
            s->qlen -= s->qoff;
            s->qready -= s->qoff;
            s->qoff = 0;
        }
        while (cap < s->qlen + len)
            cap *= 2;
        if (cap > s->qcap) {
            if (!(q = realloc(s->q, cap)))
                return -1;
            s->q = q;
            s->qcap = cap;
        }
    }
    memcpy(s->q + s->qlen, data, len);
    s->qlen += len;
    return 0;
}

/* Marks the events completed by the bytes from q[from] on as ready to go.
 * An SSE event ends with an empty line (its last line's end, then a line
 * end: "\n\n", "\r\r", "\n\r\n"); the client gets whole events only, so a
 * stream cut inside one never hands it half an event followed by an error
 * event or a restart marker. */
static void ss_mark_events(stream_state *s, size_t from)
{
    size_t lo = from >= s->qready + 2 ? from - 2 : s->qready;
    size_t i;
    for (i = s->qlen; i > lo && i >= 2; i--) {
        const char *p = s->q + i;
        if ((p[-1] == '\n' && (p[-2] == '\n' || (i >= 3 && p[-2] == '\r' && p[-3] == '\n'))) ||
            (p[-1] == '\r' && p[-2] == '\r')) {
            s->qready = i;
            break;
        }
    }
    if (s->qlen - s->qready > STREAM_EVENT_MAX) /* no end in sight: pass it on */
        s->qready = s->qlen;
}

static int on_commit(void *ud, const char *request_id, const aigw_attempt *a)
{
    stream_state *s = ud;
    pthread_mutex_lock(&s->mu);
    snprintf(s->request_id, sizeof s->request_id, "%s", request_id);
    snprintf(s->provider, sizeof s->provider, "%s", aigw_attempt_provider(a));
    snprintf(s->model, sizeof s->model, "%s", aigw_attempt_model(a));
    s->attempt = aigw_attempt_number(a);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

static int on_start(void *ud, int status, const aigw_header *h, size_t n)
{
    stream_state *s = ud;
    size_t i;
    int rc = 0;
    pthread_mutex_lock(&s->mu);
    if (s->committed) { /* a restarted stream: its headers went out already */
        pthread_mutex_unlock(&s->mu);
        return 0;
    }
    s->hnames = calloc(n ? n : 1, sizeof *s->hnames);
    s->hvalues = calloc(n ? n : 1, sizeof *s->hvalues);
    if (!s->hnames || !s->hvalues)
        rc = 1;
    for (i = 0; rc == 0 && i < n; i++) {
        if (hop_or_framing(h[i].name))
            continue;
        s->hnames[s->n_headers] = strdup(h[i].name);
        s->hvalues[s->n_headers] = strdup(h[i].value);
        if (!s->hnames[s->n_headers] || !s->hvalues[s->n_headers])
            rc = 1;
        s->n_headers++;
    }
    s->status = status;
    s->committed = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static int on_data(void *ud, const char *data, size_t len)
{
    stream_state *s = ud;
    int rc = 0;
    size_t from;
    pthread_mutex_lock(&s->mu);
    while (!s->gone && s->qready - s->qoff > STREAM_QUEUE_MAX)
        ss_wait(s, STREAM_POLL_MS);
    if (s->gone || ss_push(s, data, len) != 0) {
        rc = 1; /* the client left: cancel */
    } else {
        from = s->qlen - len; /* after the push: it may have moved the queue */
        ss_mark_events(s, from > s->qoff ? from : s->qoff);
    }
    if (s->qready > s->qoff)
        pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* A committed stream broke and the next candidate answers from the start
 * (gatewayConfig.streamRestart): the bytes sent cannot be taken back, so
 * the client is told in the stream itself, as an SSE comment that SDKs pass
 * over (": aigw.reset {reason}"; an event of any name, even unknown, is
 * handed to their callers); what follows is the next model's answer whole. */
static int on_reset(void *ud, const char *reason_json)
{
    stream_state *s = ud;
    sbuf b = {0};
    int rc = 0;
    sb_printf(&b, ": aigw.reset %s\n\n", reason_json);
    pthread_mutex_lock(&s->mu);
    s->qlen = s->qready; /* the broken answer's unfinished event: gone */
    if (b.oom || ss_push(s, b.p, b.len) != 0)
        rc = 1;
    s->qready = s->qlen;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    free(b.p);
    return rc;
}

static const aigw_stream_handler STREAM_HANDLER = {AIGW_STREAM_VERSION, on_start, on_data,
                                                   on_reset, on_commit};

static void *stream_worker(void *arg)
{
    stream_state *s = arg;
    aigw_response *resp = NULL;
    aigw_error *err = NULL;
    aigw_status st = aigw_client_stream(s->client, s->areq, &STREAM_HANDLER, s, &resp, &err);
    pthread_mutex_lock(&s->mu);
    s->resp = resp;
    s->st = st;
    if (err)
        snprintf(s->errmsg, sizeof s->errmsg, "%s", aigw_error_message(err));
    s->finished = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    aigw_error_free(err);
    return NULL;
}

/* Makes sure the worker has ended (cancelling it first when told to). */
static void ss_finish(stream_state *s, bool cancel)
{
    bool join = false;
    pthread_mutex_lock(&s->mu);
    if (cancel && !s->finished) {
        s->gone = true;
        aigw_cancel_fire(s->cancel);
        pthread_cond_broadcast(&s->cv);
    }
    if (s->worker_started && !s->joined) {
        s->joined = true;
        join = true;
    }
    pthread_mutex_unlock(&s->mu);
    if (join)
        pthread_join(s->worker, NULL);
}

static void ss_release(stream_state *s)
{
    int left;
    size_t i;
    pthread_mutex_lock(&s->mu);
    left = --s->refs;
    pthread_mutex_unlock(&s->mu);
    if (left > 0)
        return;
    ss_finish(s, true);
    for (i = 0; i < s->n_headers; i++) {
        free(s->hnames[i]);
        free(s->hvalues[i]);
    }
    free(s->hnames);
    free(s->hvalues);
    free(s->q);
    aigw_response_free(s->resp);
    aigw_request_free(s->areq);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* The error event that ends a committed stream that did not end well, in
 * the route's shape (SDKs raise it as an API error). */
static size_t stream_error_event(stream_state *s, char *buf, size_t max)
{
    const char *code = s->resp && aigw_response_error_code(s->resp)
                           ? aigw_response_error_code(s->resp)
                           : "stream_failed";
    char msg[160];
    char *body;
    size_t n = 0;
    snprintf(msg, sizeof msg, "the upstream stream did not end properly (%s)", code);
    body = error_body(s->route, 502, "aigw_error", code, msg);
    if (body) {
        int w = s->route == R_MESSAGES ? snprintf(buf, max, "event: error\ndata: %s\n\n", body)
                                       : snprintf(buf, max, "data: %s\n\n", body);
        n = w > 0 && (size_t)w < max ? (size_t)w : 0;
        cJSON_free(body);
    }
    return n;
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    stream_state *s = cls;
    ssize_t ret;
    (void)pos;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        bool served = s->finished && s->st == AIGW_OK && s->resp &&
                      aigw_response_outcome(s->resp) == AIGW_OUTCOME_SERVED;
        if (s->finished) { /* an answer that ended well ends as it ended; */
            if (served)    /* one that broke loses its unfinished event */
                s->qready = s->qlen;
            else
                s->qlen = s->qready;
        }
        if (s->qready > s->qoff) {
            size_t n = s->qready - s->qoff < max ? s->qready - s->qoff : max;
            memcpy(buf, s->q + s->qoff, n);
            s->qoff += n;
            s->bytes_out += n;
            pthread_cond_broadcast(&s->cv); /* room for the worker */
            ret = (ssize_t)n;
            break;
        }
        if (s->finished) {
            if (served) {
                ret = MHD_CONTENT_READER_END_OF_STREAM;
            } else if (!s->error_sent && !s->gone) {
                size_t n = stream_error_event(s, buf, max);
                s->error_sent = true;
                s->bytes_out += n;
                ret = n ? (ssize_t)n : MHD_CONTENT_READER_END_WITH_ERROR;
            } else {
                ret = MHD_CONTENT_READER_END_WITH_ERROR;
            }
            break;
        }
        if (s->gone) {
            ret = MHD_CONTENT_READER_END_WITH_ERROR;
            break;
        }
        ss_wait(s, STREAM_POLL_MS);
        if (s->qready == s->qoff && !s->finished && client_gone(s->fd)) {
            s->gone = true;
            aigw_cancel_fire(s->cancel);
        }
    }
    pthread_mutex_unlock(&s->mu);
    return ret;
}

static void stream_reader_free(void *cls)
{
    ss_release(cls);
}

/* Sends a streamed request: waits for the commit point (or the end), then
 * answers with the stream, or whole when nothing was committed. */
static enum MHD_Result serve_stream(request *r, aigw_request *areq)
{
    server *srv = r->srv;
    stream_state *s = calloc(1, sizeof *s);
    struct MHD_Response *m;
    enum MHD_Result ret;
    size_t i;
    int status;
    if (!s) {
        aigw_request_free(areq);
        return queue_error(r, 500, "server_error", "out_of_memory", "out of memory", NULL);
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->refs = 1;
    s->client = srv->client;
    s->areq = areq;
    s->cancel = r->cancel;
    s->route = r->route;
    s->fd = connection_fd(r->conn);
    r->ss = s;
    r->stream = true;
    if (pthread_create(&s->worker, NULL, stream_worker, s) != 0)
        return queue_error(r, 503, "server_error", "overloaded",
                           "the gateway cannot start another stream now", "1");
    s->worker_started = true;

    pthread_mutex_lock(&s->mu);
    while (!s->committed && !s->finished) {
        ss_wait(s, STREAM_POLL_MS);
        if (!s->committed && !s->finished && !s->gone && client_gone(s->fd)) {
            s->gone = true;
            aigw_cancel_fire(s->cancel);
        }
    }
    pthread_mutex_unlock(&s->mu);

    if (!s->committed) { /* nothing reached the client: answer whole */
        ss_finish(s, false);
        if (s->st != AIGW_OK) {
            return queue_error(r, s->st == AIGW_EREQUEST ? 400 : 500,
                               s->st == AIGW_EREQUEST ? "invalid_request_error" : "server_error",
                               s->st == AIGW_EREQUEST ? "invalid_request" : "internal_error",
                               s->errmsg[0] ? s->errmsg : aigw_status_name(s->st), NULL);
        }
        return queue_library_answer(r, s->resp);
    }

    m = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, stream_reader, s,
                                          stream_reader_free);
    if (!m)
        return MHD_NO;
    pthread_mutex_lock(&s->mu);
    s->refs++; /* the response's */
    for (i = 0; i < s->n_headers; i++)
        add_passed_header(m, s->hnames[i], s->hvalues[i]);
    MHD_add_response_header(m, "x-aigw-request-id", s->request_id);
    {
        char num[24];
        snprintf(num, sizeof num, "%d", s->attempt);
        MHD_add_response_header(m, "x-aigw-attempts", num);
    }
    if (s->provider[0])
        add_passed_header(m, "x-aigw-provider", s->provider);
    if (s->model[0])
        add_passed_header(m, "x-aigw-model", s->model);
    status = s->status;
    pthread_mutex_unlock(&s->mu);
    ret = queue_response(r, (unsigned)status, m);
    MHD_destroy_response(m);
    return ret;
}

/* ------------------------------------------------------------------------ */
/* GET /v1/models, /healthz, /metrics                                       */
/* ------------------------------------------------------------------------ */

typedef struct models_ctx {
    cJSON *data;
    bool anthropic;
} models_ctx;

static int add_model(void *ud, const char *provider, const char *model)
{
    models_ctx *m = ud;
    cJSON *o = cJSON_CreateObject();
    char id[512];
    snprintf(id, sizeof id, "%s:%s", provider, model);
    if (!o)
        return 1;
    if (m->anthropic) {
        cJSON_AddStringToObject(o, "type", "model");
        cJSON_AddStringToObject(o, "id", id);
        cJSON_AddStringToObject(o, "display_name", id);
        cJSON_AddStringToObject(o, "created_at", "1970-01-01T00:00:00Z");
    } else {
        cJSON_AddStringToObject(o, "id", id);
        cJSON_AddStringToObject(o, "object", "model");
        cJSON_AddNumberToObject(o, "created", 0);
        cJSON_AddStringToObject(o, "owned_by", provider);
    }
    cJSON_AddItemToArray(m->data, o);
    return 0;
}

static enum MHD_Result serve_models(request *r)
{
    models_ctx m;
    cJSON *o = cJSON_CreateObject();
    char *text;
    enum MHD_Result ret;
    m.anthropic = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "anthropic-version") != NULL;
    m.data = cJSON_CreateArray();
    if (!o || !m.data) {
        cJSON_Delete(o);
        cJSON_Delete(m.data);
        return queue_error(r, 500, "server_error", "out_of_memory", "out of memory", NULL);
    }
    aigw_config_models(r->cfg, r->configuration[0] ? r->configuration : NULL, add_model, &m);
    if (!m.anthropic)
        cJSON_AddStringToObject(o, "object", "list");
    cJSON_AddItemToObject(o, "data", m.data);
    if (m.anthropic) {
        int n = cJSON_GetArraySize(m.data);
        cJSON_AddBoolToObject(o, "has_more", 0);
        if (n > 0) {
            cJSON_AddStringToObject(o, "first_id", cJSON_GetArrayItem(m.data, 0)->child->next->valuestring);
            cJSON_AddStringToObject(o, "last_id",
                                    cJSON_GetArrayItem(m.data, n - 1)->child->next->valuestring);
        } else {
            cJSON_AddNullToObject(o, "first_id");
            cJSON_AddNullToObject(o, "last_id");
        }
    }
    text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!text)
        return queue_error(r, 500, "server_error", "out_of_memory", "out of memory", NULL);
    ret = queue_body(r, 200, "application/json", text, strlen(text), NULL);
    cJSON_free(text);
    return ret;
}

/* A Prometheus label value: backslash, double quote and newline escaped. */
static void sb_label(sbuf *b, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\')
            sb_add(b, "\\\\", 2);
        else if (*v == '"')
            sb_add(b, "\\\"", 2);
        else if (*v == '\n')
            sb_add(b, "\\n", 2);
        else
            sb_add(b, v, 1);
    }
}

static void sb_entry_labels(sbuf *b, const aigw_stat *st)
{
    sb_add(b, "kind=\"", 6);
    sb_label(b, st->kind);
    sb_add(b, "\",name=\"", 8);
    sb_label(b, st->name);
    sb_add(b, "\",provider=\"", 12);
    sb_label(b, st->provider);
    sb_add(b, "\",model=\"", 9);
    sb_label(b, st->model);
    sb_add(b, "\"", 1);
}

static const char *const CLASSES[] = {"auth",           "quota",       "rate_limit",
                                      "overloaded",     "server",      "timeout",
                                      "network",        "context_length", "content_policy",
                                      "bad_request",    "payload_too_large", "not_found",
                                      "redirect",       NULL};

/* upstream latency buckets, ms */
static const int64_t LATENCY_LE_MS[] = {10,   25,   50,    100,   250,   500,
                                        1000, 2500, 5000, 10000, 30000, 60000};
#define N_LATENCY_LE (sizeof LATENCY_LE_MS / sizeof LATENCY_LE_MS[0])

static void metric_head(sbuf *b, const char *name, const char *type, const char *help)
{
    sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void metrics_entries(sbuf *b, const aigw_stats *stats)
{
    size_t i, n = aigw_stats_count(stats), c, k;
    static const struct {
        const char *name, *help;
        size_t off;
    } counters[] = {
        {"aigw_upstream_requests_total", "Upstream calls, per key, backend, host and endpoint.",
         offsetof(aigw_stat, requests)},
        {"aigw_upstream_successes_total", "Upstream calls that succeeded.",
         offsetof(aigw_stat, successes)},
        {"aigw_upstream_failures_total", "Upstream calls that failed, any class.",
         offsetof(aigw_stat, failures)},
        {"aigw_upstream_skips_total", "Times a request passed an entry over while it was not "
                                      "ready (cooling, benched, open).",
         offsetof(aigw_stat, skips)},
    };
    for (c = 0; c < sizeof counters / sizeof counters[0]; c++) {
        metric_head(b, counters[c].name, "counter", counters[c].help);
        for (i = 0; i < n; i++) {
            const aigw_stat *st = aigw_stats_at(stats, i);
            sb_printf(b, "%s{", counters[c].name);
            sb_entry_labels(b, st);
            sb_printf(b, "} %" PRIu64 "\n",
                      *(const uint64_t *)(const void *)((const char *)st + counters[c].off));
        }
    }
    metric_head(b, "aigw_upstream_failures_by_class_total", "counter",
                "Upstream calls that failed, by failure class.");
    for (i = 0; i < n; i++) {
        const aigw_stat *st = aigw_stats_at(stats, i);
        for (k = 0; CLASSES[k]; k++) {
            uint64_t v = aigw_stat_failures(st, CLASSES[k]);
            if (!v)
                continue;
            sb_add(b, "aigw_upstream_failures_by_class_total{", 38);
            sb_entry_labels(b, st);
            sb_printf(b, ",class=\"%s\"} %" PRIu64 "\n", CLASSES[k], v);
        }
    }
    metric_head(b, "aigw_health_state", "gauge",
                "1 for the state an entry is in (ready, cooling, benched, closed, open, "
                "half_open).");
    for (i = 0; i < n; i++) {
        const aigw_stat *st = aigw_stats_at(stats, i);
        sb_add(b, "aigw_health_state{", 18);
        sb_entry_labels(b, st);
        sb_add(b, ",state=\"", 8);
        sb_label(b, st->state);
        sb_add(b, "\",reason=\"", 10);
        sb_label(b, st->reason);
        sb_add(b, "\"} 1\n", 5);
    }
    metric_head(b, "aigw_health_wait_seconds", "gauge",
                "Time left in the entry's state (until a probe, for an open breaker).");
    for (i = 0; i < n; i++) {
        const aigw_stat *st = aigw_stats_at(stats, i);
        sb_add(b, "aigw_health_wait_seconds{", 25);
        sb_entry_labels(b, st);
        sb_printf(b, "} %.3f\n", (double)st->wait_ms / 1000.0);
    }
    metric_head(b, "aigw_upstream_latency_seconds", "histogram",
                "Upstream latency of successes (whole answers: until complete; streams: "
                "until the first content event).");
    for (i = 0; i < n; i++) {
        const aigw_stat *st = aigw_stats_at(stats, i);
        for (k = 0; k < N_LATENCY_LE; k++) {
            sb_add(b, "aigw_upstream_latency_seconds_bucket{", 37);
            sb_entry_labels(b, st);
            sb_printf(b, ",le=\"%g\"} %" PRIu64 "\n", (double)LATENCY_LE_MS[k] / 1000.0,
                      aigw_stat_latency_le(st, LATENCY_LE_MS[k]));
        }
        sb_add(b, "aigw_upstream_latency_seconds_bucket{", 37);
        sb_entry_labels(b, st);
        sb_printf(b, ",le=\"+Inf\"} %" PRIu64 "\n", st->latency_count);
        sb_add(b, "aigw_upstream_latency_seconds_sum{", 34);
        sb_entry_labels(b, st);
        sb_printf(b, "} %.3f\n", (double)st->latency_sum_ms / 1000.0);
        sb_add(b, "aigw_upstream_latency_seconds_count{", 36);
        sb_entry_labels(b, st);
        sb_printf(b, "} %" PRIu64 "\n", st->latency_count);
    }
}

static enum MHD_Result serve_metrics(request *r)
{
    server *s = r->srv;
    sbuf b = {0};
    aigw_stats *stats = NULL;
    size_t i, k;
    uint64_t breq = 0, bret = 0, bden = 0, cum = 0;
    int64_t bavail = 0;
    const char *store_state = NULL, *store_kind;
    enum MHD_Result ret;

    metric_head(&b, "aigw_serve_requests_total", "counter",
                "Requests answered by this gateway, by route and status code.");
    for (i = 0; i < R__N; i++)
        for (k = 0; k < N_CODES; k++) {
            uint64_t v = atomic_load(&s->counts[i][k]);
            if (!v)
                continue;
            if (CODES[k])
                sb_printf(&b, "aigw_serve_requests_total{route=\"%s\",code=\"%d\"} %" PRIu64 "\n",
                          ROUTE_NAMES[i], CODES[k], v);
            else
                sb_printf(&b, "aigw_serve_requests_total{route=\"%s\",code=\"other\"} %" PRIu64
                              "\n", ROUTE_NAMES[i], v);
        }
    metric_head(&b, "aigw_serve_requests_in_flight", "gauge",
                "Model requests running through the library now.");
    sb_printf(&b, "aigw_serve_requests_in_flight %u\n", atomic_load(&s->in_flight));
    metric_head(&b, "aigw_serve_request_duration_seconds", "histogram",
                "Time from a request's headers to its answer's end.");
    for (k = 0; k < N_DURATION_LE; k++) {
        cum = atomic_load(&s->duration_bucket[k]);
        sb_printf(&b, "aigw_serve_request_duration_seconds_bucket{le=\"%g\"} %" PRIu64 "\n",
                  DURATION_LE[k], cum);
    }
    sb_printf(&b, "aigw_serve_request_duration_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n",
              atomic_load(&s->duration_count));
    sb_printf(&b, "aigw_serve_request_duration_seconds_sum %.6f\n",
              (double)atomic_load(&s->duration_sum_us) / 1e6);
    sb_printf(&b, "aigw_serve_request_duration_seconds_count %" PRIu64 "\n",
              atomic_load(&s->duration_count));
    metric_head(&b, "aigw_serve_config_reloads_total", "counter",
                "SIGHUP reloads of the gateway file, by result.");
    sb_printf(&b, "aigw_serve_config_reloads_total{result=\"ok\"} %" PRIu64 "\n",
              atomic_load(&s->reloads));
    sb_printf(&b, "aigw_serve_config_reloads_total{result=\"failed\"} %" PRIu64 "\n",
              atomic_load(&s->reload_failures));
    metric_head(&b, "aigw_serve_uptime_seconds", "gauge", "Seconds since the gateway started.");
    sb_printf(&b, "aigw_serve_uptime_seconds %.3f\n",
              (double)(mono_ms() - s->started_ms) / 1000.0);

    if (aigw_client_stats(s->client, &stats) == AIGW_OK) {
        metrics_entries(&b, stats);
        aigw_stats_budget(stats, &breq, &bret, &bden, &bavail);
        metric_head(&b, "aigw_retry_budget_requests_total", "counter",
                    "Requests the retry budget has seen.");
        sb_printf(&b, "aigw_retry_budget_requests_total %" PRIu64 "\n", breq);
        metric_head(&b, "aigw_retry_budget_retries_total", "counter", "Retries spent.");
        sb_printf(&b, "aigw_retry_budget_retries_total %" PRIu64 "\n", bret);
        metric_head(&b, "aigw_retry_budget_denied_total", "counter",
                    "Retries refused because the budget was spent.");
        sb_printf(&b, "aigw_retry_budget_denied_total %" PRIu64 "\n", bden);
        metric_head(&b, "aigw_retry_budget_available", "gauge", "Retries available now.");
        sb_printf(&b, "aigw_retry_budget_available %" PRId64 "\n", bavail);
        store_kind = aigw_stats_health_store(stats, &store_state);
        metric_head(&b, "aigw_health_store_info", "gauge",
                    "The health store: its kind and state (1).");
        sb_add(&b, "aigw_health_store_info{kind=\"", 29);
        sb_label(&b, store_kind ? store_kind : "");
        sb_add(&b, "\",state=\"", 9);
        sb_label(&b, store_state ? store_state : "");
        sb_add(&b, "\"} 1\n", 5);
        aigw_stats_free(stats);
    }
    if (b.oom) {
        free(b.p);
        return queue_error(r, 500, "server_error", "out_of_memory", "out of memory", NULL);
    }
    ret = queue_body(r, 200, "text/plain; version=0.0.4; charset=utf-8", b.p, b.len, NULL);
    free(b.p);
    return ret;
}

/* ------------------------------------------------------------------------ */
/* The access log                                                           */
/* ------------------------------------------------------------------------ */

/* The length of the UTF-8 sequence at p (NUL-terminated) when it is a
 * valid one (no overlong form, surrogate or code point past U+10FFFF),
 * else 0. */
static size_t utf8_seq(const unsigned char *p)
{
    size_t n, i;
    uint32_t cp, min;
    if (p[0] >= 0xc2 && p[0] <= 0xdf)
        n = 2, cp = p[0] & 0x1fu, min = 0x80;
    else if (p[0] >= 0xe0 && p[0] <= 0xef)
        n = 3, cp = p[0] & 0x0fu, min = 0x800;
    else if (p[0] >= 0xf0 && p[0] <= 0xf4)
        n = 4, cp = p[0] & 0x07u, min = 0x10000;
    else
        return 0;
    for (i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80) /* also the NUL at the end */
            return 0;
        cp = (cp << 6) | (p[i] & 0x3fu);
    }
    return cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff) ? 0 : n;
}

/* A JSON string: quotes, backslash and control characters escaped, and
 * each byte that is not part of valid UTF-8 written as U+FFFD, so that a
 * log line stays JSON whatever the client sent (the method is its own
 * bytes, cut at 15). */
static void sb_json_str(sbuf *b, const char *v)
{
    const char *run = v;
    sb_add(b, "\"", 1);
    while (*v) {
        unsigned char c = (unsigned char)*v;
        size_t n = c >= 0x80 ? utf8_seq((const unsigned char *)v) : 1;
        if (n > 1 || (c >= 0x20 && c < 0x80 && c != '"' && c != '\\')) {
            v += n;
            continue;
        }
        sb_add(b, run, (size_t)(v - run));
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            sb_add(b, esc, 2);
        } else if (c >= 0x80) {
            sb_add(b, "\\ufffd", 6);
        } else {
            sb_printf(b, "\\u%04x", c);
        }
        run = ++v;
    }
    sb_add(b, run, (size_t)(v - run));
    sb_add(b, "\"", 1);
}

/* ,"name":"value" */
static void sb_member_str(sbuf *b, const char *name, const char *v)
{
    sb_printf(b, ",\"%s\":", name);
    sb_json_str(b, v ? v : "");
}

static void log_attempts(sbuf *b, const aigw_response *resp)
{
    size_t i, n = aigw_response_attempt_count(resp);
    sb_add(b, ",\"attempts\":[", 13);
    for (i = 0; i < n; i++) {
        const aigw_attempt *a = aigw_response_attempt(resp, i);
        sb_add(b, i ? ",{\"provider\":" : "{\"provider\":", i ? 13 : 12);
        sb_json_str(b, aigw_attempt_provider(a));
        sb_member_str(b, "model", aigw_attempt_model(a));
        sb_member_str(b, "key", aigw_attempt_key_id(a));
        sb_printf(b, ",\"status\":%d", aigw_attempt_status_code(a));
        if (aigw_attempt_error_class(a))
            sb_member_str(b, "errorClass", aigw_attempt_error_class(a));
        sb_member_str(b, "verdict", aigw_attempt_verdict(a));
        sb_printf(b, ",\"durationMs\":%" PRId64 "}", aigw_attempt_duration_ms(a));
    }
    sb_add(b, "]", 1);
}

/* One JSON line per request: what happened, never a secret (key ids only). */
static void access_log(request *r, int64_t duration_ms)
{
    server *s = r->srv;
    const aigw_response *resp = r->resp ? r->resp : (r->ss ? r->ss->resp : NULL);
    char stack[2048];
    sbuf b = {stack, 0, sizeof stack, false, true};
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    sb_printf(&b, "{\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\"", tm.tm_year + 1900,
              tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
              ts.tv_nsec / 1000000L);
    if (resp)
        sb_member_str(&b, "requestId", aigw_response_request_id(resp));
    else if (r->ss && r->ss->request_id[0])
        sb_member_str(&b, "requestId", r->ss->request_id);
    sb_member_str(&b, "method", r->method);
    sb_printf(&b, ",\"route\":\"%s\",\"status\":%d,\"durationMs\":%" PRId64,
              ROUTE_NAMES[r->route], r->status, duration_ms);
    if (r->key_id[0])
        sb_member_str(&b, "accessKey", r->key_id);
    if (r->configuration[0])
        sb_member_str(&b, "configuration", r->configuration);
    if (r->route == R_CHAT || r->route == R_RESPONSES || r->route == R_MESSAGES)
        sb_printf(&b, ",\"stream\":%s", r->stream ? "true" : "false");
    sb_printf(&b, ",\"bytes\":%" PRIu64, r->ss ? r->ss->bytes_out : r->bytes_out);
    if (resp) {
        const aigw_attempt *a = answering_attempt(resp);
        sb_member_str(&b, "outcome", aigw_outcome_name(aigw_response_outcome(resp)));
        if (a) {
            sb_member_str(&b, "provider", aigw_attempt_provider(a));
            sb_member_str(&b, "model", aigw_attempt_model(a));
        }
        log_attempts(&b, resp);
    }
    if (r->error_code[0])
        sb_member_str(&b, "errorCode", r->error_code);
    sb_add(&b, "}\n", 2);
    if (!b.oom) {
        pthread_mutex_lock(&s->log_mu);
        fwrite(b.p, 1, b.len, s->log);
        fflush(s->log);
        pthread_mutex_unlock(&s->log_mu);
    }
    if (!b.on_stack)
        free(b.p);
}

static void count_request(server *s, request *r, int64_t duration_ms)
{
    size_t k;
    for (k = 0; k < N_CODES - 1 && CODES[k] != r->status; k++)
        ;
    atomic_fetch_add(&s->counts[r->route][k], 1);
    for (k = 0; k < N_DURATION_LE; k++)
        if ((double)duration_ms / 1000.0 <= DURATION_LE[k])
            atomic_fetch_add(&s->duration_bucket[k], 1);
    atomic_fetch_add(&s->duration_count, 1);
    atomic_fetch_add(&s->duration_sum_us, (uint64_t)(duration_ms > 0 ? duration_ms : 0) * 1000);
}

/* ------------------------------------------------------------------------ */
/* The request handler                                                      */
/* ------------------------------------------------------------------------ */

static enum route route_of(const char *url)
{
    size_t i;
    for (i = 0; i < R_OTHER; i++)
        if (!strcmp(url, ROUTE_NAMES[i]))
            return (enum route)i;
    return R_OTHER;
}

/* The access key the caller presented: "Authorization: Bearer KEY" or
 * "x-api-key: KEY". */
static const char *presented_key(struct MHD_Connection *conn, size_t *len)
{
    const char *v = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
    if (v && !strncasecmp(v, "Bearer ", 7)) { /* the scheme is case-insensitive */
        v += 7;
        while (*v == ' ')
            v++;
        *len = strlen(v);
        return v;
    }
    v = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "x-api-key");
    if (v) {
        *len = strlen(v);
        return v;
    }
    *len = 0;
    return NULL;
}

/* Who is calling: with access keys, one of them; without (loopback only),
 * anyone, on the default configuration. */
static bool authorise(request *r)
{
    aigw_config *cfg = r->cfg;
    size_t len;
    const char *key = presented_key(r->conn, &len);
    int i;
    if (aigw_config_access_key_count(cfg) == 0)
        return true;
    if (!key || (i = aigw_config_access_key_find(cfg, key, len)) < 0)
        return false;
    r->access_key = i;
    snprintf(r->key_id, sizeof r->key_id, "%s", aigw_config_access_key_id(cfg, (size_t)i));
    snprintf(r->configuration, sizeof r->configuration, "%s",
             aigw_config_access_key_configuration(cfg, (size_t)i));
    return true;
}

/* A model request, its body read: through the library. */
static enum MHD_Result serve_model(request *r)
{
    server *srv = r->srv;
    aigw_request *areq = NULL;
    aigw_response *resp = NULL;
    aigw_error *err = NULL;
    aigw_status st;
    enum MHD_Result ret;
    if (aigw_request_new(&areq) != AIGW_OK || aigw_cancel_new(&r->cancel) != AIGW_OK) {
        aigw_request_free(areq);
        return queue_error(r, 500, "server_error", "out_of_memory", "out of memory", NULL);
    }
    st = aigw_request_set_body(areq, r->body ? r->body : "", r->body_len);
    if (st == AIGW_OK)
        st = aigw_request_set_path(areq, ROUTE_NAMES[r->route]);
    if (st == AIGW_OK)
        st = aigw_request_set_configuration(areq, r->configuration);
    if (st == AIGW_OK)
        st = aigw_request_set_cancel(areq, r->cancel);
    if (st != AIGW_OK) {
        aigw_request_free(areq);
        return queue_error(r, 400, "invalid_request_error", "invalid_request",
                           "the request cannot be sent", NULL);
    }
    r->watch = !aigw_request_wants_stream(areq); /* before the watcher can see it */
    active_add(r);
    if (!r->watch)
        return serve_stream(r, areq); /* it owns areq now */
    st = aigw_client_send(srv->client, areq, &resp, &err);
    aigw_request_free(areq);
    if (st != AIGW_OK) {
        ret = queue_error(r, st == AIGW_EREQUEST ? 400 : 500,
                          st == AIGW_EREQUEST ? "invalid_request_error" : "server_error",
                          st == AIGW_EREQUEST ? "invalid_request" : "internal_error",
                          err ? aigw_error_message(err) : aigw_status_name(st), NULL);
        aigw_error_free(err);
        return ret;
    }
    r->resp = resp;
    return queue_library_answer(r, resp);
}

/* The headers are in: what can be decided before the body. An answer
 * queued here, before a body has been read, ends the connection (MHD cannot
 * know where the unread body ends), so requests without a body are decided
 * once they are complete, and their connections stay open. */
static enum MHD_Result on_headers(request *r, const char *method)
{
    server *srv = r->srv;
    struct MHD_Connection *conn = r->conn;
    const char *cl;
    if (r->route == R_OTHER)
        return queue_error(r, 404, "invalid_request_error", "not_found",
                           "no such route: the gateway serves POST /v1/chat/completions, "
                           "/v1/responses, /v1/messages and GET /v1/models, /healthz, "
                           "/metrics",
                           NULL);
    if ((r->route <= R_MESSAGES) != r->post || (!r->post && strcmp(method, "GET") &&
                                                strcmp(method, "HEAD"))) {
        struct MHD_Response *m;
        char *body = error_body(r->route, 405, "invalid_request_error",
                                "method_not_allowed", r->route <= R_MESSAGES
                                                          ? "use POST on this route"
                                                          : "use GET on this route");
        size_t len = body ? strlen(body) : 0;
        enum MHD_Result ret;
        snprintf(r->error_code, sizeof r->error_code, "method_not_allowed");
        m = MHD_create_response_from_buffer(len, body ? body : (char *)"",
                                            MHD_RESPMEM_MUST_COPY);
        cJSON_free(body);
        if (!m)
            return MHD_NO;
        MHD_add_response_header(m, "content-type", "application/json");
        MHD_add_response_header(m, "allow", r->route <= R_MESSAGES ? "POST" : "GET, HEAD");
        ret = queue_response(r, 405, m);
        MHD_destroy_response(m);
        if (r->answered)
            r->bytes_out = len;
        return ret;
    }
    if (r->route == R_HEALTHZ)
        return queue_body(r, 200, "application/json", "{\"status\":\"ok\"}", 15, NULL);
    if (!authorise(r))
        return queue_error(r, 401, "invalid_request_error", "invalid_api_key",
                           "missing or unknown access key: send one of the gateway's "
                           "access keys as \"Authorization: Bearer KEY\" or \"x-api-key: "
                           "KEY\"",
                           NULL);
    r->authorised = true;
    if (!r->post)
        return MHD_YES; /* answered when the request is complete */
    cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
    if (cl && strtoull(cl, NULL, 10) > srv->max_body) {
        char msg[128];
        snprintf(msg, sizeof msg, "the request body is larger than the gateway's limit "
                                  "(--max-body, %zu bytes)", srv->max_body);
        snprintf(r->error_code, sizeof r->error_code, "request_too_large");
        return queue_error(r, 413, "invalid_request_error", "request_too_large", msg, NULL);
    }
    /* the slot first, then the flag: drain() sets the flag, then waits
     * for in_flight to reach 0, so a request either is counted or sees
     * the flag */
    if (atomic_fetch_add(&srv->in_flight, 1) >= srv->max_concurrent) {
        char msg[128];
        atomic_fetch_sub(&srv->in_flight, 1);
        snprintf(msg, sizeof msg, "the gateway is busy: %u requests in flight "
                                  "(--max-concurrent); retry shortly", srv->max_concurrent);
        return queue_error(r, 503, "server_error", "overloaded", msg, "1");
    }
    if (atomic_load(&srv->stopping)) {
        atomic_fetch_sub(&srv->in_flight, 1);
        return queue_error(r, 503, "server_error", "shutting_down",
                           "the gateway is shutting down", "1");
    }
    r->slot = true;
    return MHD_YES;
}

/* libmicrohttpd's memory per connection (MHD_OPTION_CONNECTION_MEMORY_LIMIT)
 * holds the request's head and then the answer's: --max-header is for the
 * first, and this much more for the second, so that a request whose head
 * nearly fills --max-header still gets its answer (it got none: the
 * connection closed).  serve enforces --max-header itself; a head past both
 * gets libmicrohttpd's own 431. */
#define ANSWER_HEAD_ROOM (16 * 1024)

static bool head_too_large(const server *srv, struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE);
    return ci && ci->header_size > srv->max_header;
}

static bool has_body(struct MHD_Connection *conn)
{
    return MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length") ||
           MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Transfer-Encoding");
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    server *srv = cls;
    request *r = *con_cls;
    (void)version;
    if (!r) {
        if (!(r = calloc(1, sizeof *r)))
            return MHD_NO;
        *con_cls = r;
        r->srv = srv;
        r->conn = conn;
        r->t0 = mono_ms();
        r->access_key = -1;
        r->route = route_of(url);
        r->post = !strcmp(method, "POST");
        snprintf(r->method, sizeof r->method, "%s", method);
        r->fd = connection_fd(conn);
        r->cfg = current_config(srv);
        if (head_too_large(srv, conn)) {
            char msg[128];
            r->checked = true;
            snprintf(msg, sizeof msg, "the request line and headers are larger than the "
                                      "gateway's limit (--max-header, %zu bytes)",
                     srv->max_header);
            return queue_error(r, 431, "invalid_request_error",
                               "request_header_fields_too_large", msg, NULL);
        }
        if (r->post || has_body(conn)) { /* decided now, its body to come */
            r->checked = true;
            return on_headers(r, method);
        }
        return MHD_YES; /* decided at the next call, the request complete */
    }
    if (!r->checked) { /* a request without a body, now complete */
        enum MHD_Result ret;
        r->checked = true;
        if ((ret = on_headers(r, method)) != MHD_YES || r->answered)
            return ret;
    }
    if (r->answered) { /* answered early: the body is not wanted */
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (r->too_large)
            return MHD_YES;
        if (r->body_len + n > srv->max_body) {
            r->too_large = true;
            return MHD_YES;
        }
        if (r->body_len + n + 1 > r->body_cap) {
            size_t cap = r->body_cap ? r->body_cap : 4096;
            char *p;
            while (cap < r->body_len + n + 1)
                cap *= 2;
            if (!(p = realloc(r->body, cap)))
                return MHD_NO;
            r->body = p;
            r->body_cap = cap;
        }
        memcpy(r->body + r->body_len, upload_data, n);
        r->body_len += n;
        return MHD_YES;
    }
    /* the whole request is in */
    if (r->too_large) {
        char msg[128];
        snprintf(msg, sizeof msg, "the request body is larger than the gateway's limit "
                                  "(--max-body, %zu bytes)", srv->max_body);
        return queue_error(r, 413, "invalid_request_error", "request_too_large", msg, NULL);
    }
    if (r->route == R_MODELS)
        return serve_models(r);
    if (r->route == R_METRICS)
        return serve_metrics(r);
    return serve_model(r);
}

static void request_state_free(request *r)
{
    if (r->ss) {
        ss_finish(r->ss, true);
        ss_release(r->ss);
        r->ss = NULL;
    }
    aigw_response_free(r->resp);
    aigw_cancel_free(r->cancel);
    aigw_config_unref(r->cfg);
    free(r->body);
    free(r);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    server *srv = cls;
    request *r = *con_cls;
    int64_t ms;
    (void)conn;
    if (!r)
        return;
    *con_cls = NULL;
    if (r->ss)
        ss_finish(r->ss, toe != MHD_REQUEST_TERMINATED_COMPLETED_OK);
    active_remove(r);
    if (toe == MHD_REQUEST_TERMINATED_CLIENT_ABORT && !r->answered)
        r->status = 499;
    if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && !r->error_code[0] &&
        (r->ss || !r->answered) &&
        !(r->ss && r->ss->error_sent)) /* why the answer did not go out whole */
        snprintf(r->error_code, sizeof r->error_code, "%s",
                 toe == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED   ? "idle_timeout"
                 : toe == MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN ? "shutting_down"
                 : toe == MHD_REQUEST_TERMINATED_WITH_ERROR && !(r->ss && r->ss->gone)
                     ? "send_failed"
                     : "client_closed");
    if (!r->status)
        r->status = 499;
    ms = mono_ms() - r->t0;
    count_request(srv, r, ms);
    access_log(r, ms);
    if (r->slot)
        atomic_fetch_sub(&srv->in_flight, 1);
    request_state_free(r);
}

/* ------------------------------------------------------------------------ */
/* Options, start, signals                                                  */
/* ------------------------------------------------------------------------ */

typedef struct serve_opts {
    const char *config;
    const char *listen;
    const char *access_log;
    size_t max_body, max_header;
    unsigned long max_connections, max_concurrent, idle_timeout, drain_timeout;
} serve_opts;

static int parse_size(const char *s, size_t lo, size_t hi, size_t *out)
{
    char *end;
    unsigned long long v, mult = 1;
    if (!s || !*s || *s == '-')
        return -1;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || end == s)
        return -1;
    if (*end == 'k' || *end == 'K') {
        mult = 1024;
        end++;
    } else if (*end == 'm' || *end == 'M') {
        mult = 1024 * 1024;
        end++;
    }
    if (*end || v > hi / mult || v * mult < lo) /* checked before it can overflow */
        return -1;
    v *= mult;
    *out = (size_t)v;
    return 0;
}

static int parse_count(const char *s, unsigned long lo, unsigned long hi, unsigned long *out)
{
    char *end;
    unsigned long v;
    if (!s || !*s || *s == '-')
        return -1;
    errno = 0;
    v = strtoul(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

/* "--name VALUE" or "--name=VALUE": the value, else NULL. */
static const char *opt_value(int argc, char **argv, int *i, const char *longname,
                             const char *shortname, int *matched)
{
    size_t n = strlen(longname);
    const char *a = argv[*i];
    *matched = 0;
    if (!strncmp(a, longname, n) && a[n] == '=') {
        *matched = 1;
        return a + n + 1;
    }
    if (!strcmp(a, longname) || (shortname && !strcmp(a, shortname))) {
        *matched = 1;
        if (*i + 1 >= argc)
            return NULL;
        return argv[++*i];
    }
    return NULL;
}

static int parse_serve_opts(int argc, char **argv, serve_opts *o)
{
    int i, m;
    const char *v;
    serve_limits d;
    serve_limits_default(&d);
    memset(o, 0, sizeof *o);
    o->listen = "127.0.0.1:8080";
    o->access_log = "-";
    o->max_body = d.max_body;
    o->max_header = d.max_header;
    o->max_connections = d.max_connections;
    o->max_concurrent = d.max_concurrent;
    o->idle_timeout = d.idle_timeout_s;
    o->drain_timeout = (unsigned long)(d.drain_timeout_ms / 1000);
    for (i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help"))
            return -1;
        if ((v = opt_value(argc, argv, &i, "--config", "-c", &m)), m) {
            if (!v)
                return cli_usage_error("serve: %s needs a FILE", a);
            o->config = v;
        } else if ((v = opt_value(argc, argv, &i, "--listen", NULL, &m)), m) {
            if (!v)
                return cli_usage_error("serve: %s needs HOST:PORT", a);
            o->listen = v;
        } else if ((v = opt_value(argc, argv, &i, "--access-log", NULL, &m)), m) {
            if (!v)
                return cli_usage_error("serve: %s needs a FILE (or -)", a);
            o->access_log = v;
        } else if ((v = opt_value(argc, argv, &i, "--max-body", NULL, &m)), m) {
            if (parse_size(v, 1, (size_t)1 << 30, &o->max_body))
                return cli_usage_error("serve: --max-body takes 1 to 1g bytes (k, m suffixes), "
                                       "not '%s'", v);
        } else if ((v = opt_value(argc, argv, &i, "--max-header", NULL, &m)), m) {
            if (parse_size(v, 4096, (size_t)1 << 20, &o->max_header))
                return cli_usage_error("serve: --max-header takes 4k to 1m bytes, not '%s'", v);
        } else if ((v = opt_value(argc, argv, &i, "--max-connections", NULL, &m)), m) {
            if (parse_count(v, 1, 100000, &o->max_connections))
                return cli_usage_error("serve: --max-connections takes 1 to 100000, not '%s'",
                                       v);
        } else if ((v = opt_value(argc, argv, &i, "--max-concurrent", NULL, &m)), m) {
            if (parse_count(v, 1, 100000, &o->max_concurrent))
                return cli_usage_error("serve: --max-concurrent takes 1 to 100000, not '%s'", v);
        } else if ((v = opt_value(argc, argv, &i, "--idle-timeout", NULL, &m)), m) {
            if (parse_count(v, 1, 86400, &o->idle_timeout))
                return cli_usage_error("serve: --idle-timeout takes 1 to 86400 seconds, not "
                                       "'%s'", v);
        } else if ((v = opt_value(argc, argv, &i, "--drain-timeout", NULL, &m)), m) {
            if (parse_count(v, 0, 86400, &o->drain_timeout))
                return cli_usage_error("serve: --drain-timeout takes 0 to 86400 seconds, not "
                                       "'%s'", v);
        } else {
            return cli_usage_error("serve: unknown argument '%s'", a);
        }
    }
    if (!o->config)
        return cli_usage_error("serve: -c FILE is required (the gateway file)%s", "");
    return 0;
}

typedef struct listen_addr {
    struct sockaddr_storage ss;
    socklen_t len;
    bool loopback;
    char host[256];
    unsigned port;
} listen_addr;

/* "HOST:PORT", "[V6]:PORT", "localhost:PORT". */
static int parse_listen(const char *s, listen_addr *out)
{
    const char *colon, *h = s;
    size_t hl;
    char host[256], *end;
    unsigned long port;
    struct addrinfo hints, *res = NULL;
    memset(out, 0, sizeof *out);
    if (s[0] == '[') {
        const char *rb = strchr(s, ']');
        if (!rb || rb[1] != ':')
            return -1;
        h = s + 1;
        hl = (size_t)(rb - h);
        colon = rb + 1;
    } else {
        if (!(colon = strrchr(s, ':')))
            return -1;
        hl = (size_t)(colon - s);
        if (memchr(s, ':', hl))
            return -1; /* an IPv6 address needs brackets */
    }
    if (hl == 0 || hl >= sizeof host)
        return -1;
    memcpy(host, h, hl);
    host[hl] = '\0';
    errno = 0;
    port = strtoul(colon + 1, &end, 10);
    if (errno || end == colon + 1 || *end || port > 65535)
        return -1;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    if (getaddrinfo(host, colon + 1, &hints, &res) != 0 || !res)
        return -2;
    memcpy(&out->ss, res->ai_addr, res->ai_addrlen);
    out->len = res->ai_addrlen;
    freeaddrinfo(res);
    if (out->ss.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)&out->ss;
        out->loopback = (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    } else if (out->ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)&out->ss;
        out->loopback = IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
    }
    snprintf(out->host, sizeof out->host, "%s", host);
    out->port = (unsigned)port;
    return 0;
}

/* A configuration serve can run with: beyond loopback, only with keys. */
static bool config_acceptable(const server *s, const aigw_config *cfg, const char *listen)
{
    if (!s->loopback && aigw_config_access_key_count(cfg) == 0) {
        fprintf(stderr,
                "aigw: serve: refusing to listen on %s without access keys: anyone who can "
                "reach it would spend your provider keys. Add \"accessKeys\" to %s, or listen "
                "on 127.0.0.1\n",
                listen, s->file);
        return false;
    }
    return true;
}

static void reload(server *s, const char *listen)
{
    aigw_config *cfg = cli_load_config(s->file), *old;
    aigw_error *err = NULL;
    if (!cfg || !config_acceptable(s, cfg, listen)) {
        fprintf(stderr, "aigw: serve: reload of %s failed; the previous configuration stays\n",
                s->file);
        aigw_config_unref(cfg);
        atomic_fetch_add(&s->reload_failures, 1);
        return;
    }
    if (aigw_client_set_config(s->client, cfg, &err) != AIGW_OK) {
        fprintf(stderr, "aigw: serve: reload of %s failed: %s; the previous configuration "
                        "stays\n",
                s->file, err ? aigw_error_message(err) : "?");
        aigw_error_free(err);
        aigw_config_unref(cfg);
        atomic_fetch_add(&s->reload_failures, 1);
        return;
    }
    pthread_mutex_lock(&s->cfg_mu);
    old = s->cfg;
    s->cfg = cfg;
    pthread_mutex_unlock(&s->cfg_mu);
    aigw_config_unref(old);
    atomic_fetch_add(&s->reloads, 1);
    fprintf(stderr, "aigw: serve: reloaded %s (%zu access key configuration%s, %zu access "
                    "key%s)\n",
            s->file, aigw_config_configuration_count(cfg),
            aigw_config_configuration_count(cfg) == 1 ? "" : "s",
            aigw_config_access_key_count(cfg), aigw_config_access_key_count(cfg) == 1 ? "" : "s");
}

/* Stop accepting, let requests in flight finish (bounded), then stop. */
static void drain(server *s, const char *signame)
{
    int64_t deadline = mono_ms() + s->drain_timeout_ms;
    MHD_socket lsock;
    atomic_store(&s->stopping, true);
    lsock = MHD_quiesce_daemon(s->daemon);
    /* Stop listening now, so that new connections are refused rather than
     * left in the backlog; the descriptor stays open until MHD has stopped
     * (Linux: shutdown of a listening socket ends the listen). */
    if (lsock != MHD_INVALID_SOCKET)
        shutdown(lsock, SHUT_RD);
    fprintf(stderr, "aigw: serve: %s: finishing the requests in flight, then exiting\n",
            signame);
    while (atomic_load(&s->in_flight) > 0 && mono_ms() < deadline) {
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (atomic_load(&s->in_flight) > 0) {
        fprintf(stderr, "aigw: serve: %u request%s still in flight after the drain timeout: "
                        "cancelling\n",
                atomic_load(&s->in_flight), atomic_load(&s->in_flight) == 1 ? "" : "s");
        active_cancel_all(s);
        deadline = mono_ms() + 2000;
        while (atomic_load(&s->in_flight) > 0 && mono_ms() < deadline) {
            struct timespec ts = {0, 20 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    MHD_stop_daemon(s->daemon);
    s->daemon = NULL;
    atomic_store(&s->watch_stop, true);
    if (s->watcher_started)
        pthread_join(s->watcher, NULL);
    s->watcher_started = false;
    if (lsock != MHD_INVALID_SOCKET)
        close(lsock);
}

static void mhd_panic(void *cls, const char *file, unsigned int line, const char *reason)
{
    (void)cls;
    fprintf(stderr, "aigw: serve: libmicrohttpd failed (%s:%u): %s\n", file, line,
            reason ? reason : "?");
    abort();
}

/* ------------------------------------------------------------------------ */
/* The server's life: made, started, freed (cmd_serve and serve.h)          */
/* ------------------------------------------------------------------------ */

void serve_limits_default(serve_limits *limits)
{
    limits->max_body = (size_t)8 * 1024 * 1024;
    limits->max_header = 32 * 1024;
    limits->max_connections = 256;
    limits->max_concurrent = 64;
    limits->idle_timeout_s = 30;
    limits->drain_timeout_ms = 30 * 1000;
}

/* A server without configuration, client or log yet (NULL: out of memory). */
static server *server_alloc(const serve_limits *limits)
{
    server *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->max_body = limits->max_body;
    s->max_header = limits->max_header;
    s->max_connections = limits->max_connections;
    s->max_concurrent = limits->max_concurrent;
    s->idle_timeout_s = limits->idle_timeout_s;
    s->drain_timeout_ms = limits->drain_timeout_ms;
    s->started_ms = mono_ms();
    pthread_mutex_init(&s->cfg_mu, NULL);
    pthread_mutex_init(&s->active_mu, NULL);
    pthread_mutex_init(&s->log_mu, NULL);
    return s;
}

static void notify_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                              enum MHD_ConnectionNotificationCode toe)
{
    server *s = cls;
    (void)conn;
    (void)socket_context;
    if (toe == MHD_CONNECTION_NOTIFY_CLOSED)
        s->on_closed(s->closed_cls);
}

/* libmicrohttpd, a thread per connection: on addr (port) or, with
 * MHD_USE_NO_LISTEN_SOCKET in flags, on no socket.  0, or -1. */
static int server_start(server *s, unsigned flags, uint16_t port, const struct sockaddr *addr)
{
    MHD_set_panic_func(mhd_panic, NULL);
    /* poll(), not select(): a descriptor past FD_SETSIZE must not end a
     * connection */
    flags |= MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC |
             MHD_USE_POLL;
    s->daemon = MHD_start_daemon(
        flags, port, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, addr,
        MHD_OPTION_CONNECTION_LIMIT, s->max_connections, MHD_OPTION_CONNECTION_TIMEOUT,
        s->idle_timeout_s, MHD_OPTION_CONNECTION_MEMORY_LIMIT, s->max_header + ANSWER_HEAD_ROOM,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_NOTIFY_CONNECTION,
        s->on_closed ? notify_connection : NULL, s, MHD_OPTION_END);
    return s->daemon ? 0 : -1;
}

/* Frees what server_alloc and cmd_serve (or serve_server_new) made. */
static void server_free(server *s)
{
    if (s->daemon)
        MHD_stop_daemon(s->daemon);
    atomic_store(&s->watch_stop, true);
    if (s->watcher_started)
        pthread_join(s->watcher, NULL);
    aigw_client_free(s->client);
    aigw_config_unref(s->cfg);
    if (s->own_log)
        fclose(s->log);
    pthread_mutex_destroy(&s->cfg_mu);
    pthread_mutex_destroy(&s->active_mu);
    pthread_mutex_destroy(&s->log_mu);
    free(s);
}

serve_server *serve_server_new(aigw_config *cfg, const serve_limits *limits, FILE *log,
                               aigw_error **err)
{
    server *s = server_alloc(limits);
    if (!s)
        return NULL;
    s->file = "";
    s->loopback = true;
    s->log = log;
    if (aigw_client_new(cfg, &s->client, err) != AIGW_OK) {
        server_free(s);
        return NULL;
    }
    s->cfg = aigw_config_ref(cfg);
    return s;
}

aigw_client *serve_server_client(serve_server *s)
{
    return s->client;
}

void serve_server_replace_client(serve_server *s, aigw_client *client)
{
    aigw_client_free(s->client);
    s->client = client;
}

int serve_server_start_unbound(serve_server *s, serve_closed_fn on_closed, void *cls)
{
    s->on_closed = on_closed;
    s->closed_cls = cls;
    return server_start(s, MHD_USE_NO_LISTEN_SOCKET, 0, NULL);
}

int serve_server_add_connection(serve_server *s, int fd)
{
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    return MHD_add_connection(s->daemon, fd, (const struct sockaddr *)&addr, sizeof addr) ==
                   MHD_YES
               ? 0
               : -1;
}

bool serve_server_idle(serve_server *s)
{
    bool idle;
    pthread_mutex_lock(&s->active_mu);
    idle = s->active == NULL && atomic_load(&s->in_flight) == 0;
    pthread_mutex_unlock(&s->active_mu);
    return idle;
}

unsigned serve_server_connections(serve_server *s)
{
    const union MHD_DaemonInfo *di =
        MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
    return di ? di->num_connections : 0;
}

void serve_server_free(serve_server *s)
{
    if (s)
        server_free(s);
}

/* ------------------------------------------------------------------------ */
/* The command                                                              */
/* ------------------------------------------------------------------------ */

int cmd_serve(int argc, char **argv)
{
    serve_opts o;
    serve_limits limits;
    listen_addr la;
    server *s;
    aigw_error *err = NULL;
    sigset_t sigs;
    int rc, sig, exit_code = 0;

    if ((rc = parse_serve_opts(argc, argv, &o)) != 0) {
        if (rc < 0) {
            fputs("Usage:\n", stdout);
            fputs(USAGE_SERVE, stdout);
            return 0;
        }
        return rc;
    }
    if ((rc = parse_listen(o.listen, &la)) != 0)
        return cli_usage_error(rc == -2 ? "serve: --listen: cannot resolve the host of '%s'"
                                        : "serve: --listen takes HOST:PORT ([ADDRESS]:PORT "
                                          "for IPv6), not '%s'",
                               o.listen);
    limits.max_body = o.max_body;
    limits.max_header = o.max_header;
    limits.max_connections = (unsigned)o.max_connections;
    limits.max_concurrent = (unsigned)o.max_concurrent;
    limits.idle_timeout_s = (unsigned)o.idle_timeout;
    limits.drain_timeout_ms = (int64_t)o.drain_timeout * 1000;
    if (!(s = server_alloc(&limits)))
        return EXIT_FAILED;
    s->file = o.config;
    s->loopback = la.loopback;

    if (!strcmp(o.config, "-")) {
        server_free(s);
        return cli_usage_error("serve: the gateway file must be a file (SIGHUP re-reads it), "
                               "not %s", "-");
    }
    if (!(s->cfg = cli_load_config(o.config))) {
        server_free(s);
        return EXIT_USAGE;
    }
    if (!config_acceptable(s, s->cfg, o.listen)) {
        server_free(s);
        return EXIT_USAGE;
    }
    if (!strcmp(o.access_log, "-")) {
        s->log = stderr;
    } else if (!(s->log = fopen(o.access_log, "a"))) {
        fprintf(stderr, "aigw: serve: cannot open the access log '%s': %s\n", o.access_log,
                strerror(errno));
        server_free(s);
        return EXIT_FAILED;
    } else {
        s->own_log = true;
    }
    if (aigw_client_new(s->cfg, &s->client, &err) != AIGW_OK) {
        fprintf(stderr, "aigw: serve: %s\n", err ? aigw_error_message(err) : "cannot start");
        aigw_error_free(err);
        server_free(s);
        return EXIT_USAGE;
    }

    /* Signals go to this thread only (sigwait below); the threads started
     * from here on inherit the mask. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGHUP);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (server_start(s, la.ss.ss_family == AF_INET6 ? MHD_USE_IPv6 : 0, (uint16_t)la.port,
                     (const struct sockaddr *)&la.ss) != 0) {
        fprintf(stderr, "aigw: serve: cannot listen on %s: %s\n", o.listen,
                errno ? strerror(errno) : "libmicrohttpd refused to start");
        server_free(s);
        return EXIT_FAILED;
    }
    {
        const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
        unsigned port = di ? di->port : la.port;
        if (strchr(la.host, ':')) /* an IPv6 address */
            snprintf(s->url, sizeof s->url, "http://[%s]:%u", la.host, port);
        else
            snprintf(s->url, sizeof s->url, "http://%s:%u", la.host, port);
    }
    s->watcher_started = pthread_create(&s->watcher, NULL, watcher_main, s) == 0;
    fprintf(stderr, "listening on %s\n", s->url);
    fflush(stderr);

    for (;;) {
        if (sigwait(&sigs, &sig) != 0)
            continue;
        if (sig == SIGHUP) {
            reload(s, o.listen);
            continue;
        }
        break;
    }
    drain(s, sig == SIGTERM ? "SIGTERM" : "SIGINT");
    server_free(s);
    return exit_code;
}
