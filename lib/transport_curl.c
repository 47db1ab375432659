/*
 * transport_curl.c - the default transport: libcurl.
 *
 * Every exchange, whole or streamed, runs one easy handle on a multi handle
 * of its own, driven here (perform / poll) so that our deadlines - the
 * overall timeout and a stream's idle budget - are checked to the
 * millisecond rather than left to libcurl's coarser timers.  libcurl keeps
 * the connection cache in the multi handle, not the easy one, so the multi
 * handle (with a share handle holding the TLS sessions its transfers may
 * resume) is pooled in a small mutex-guarded free-list: sequential exchanges
 * reuse their keep-alive connection, and concurrent ones each take one of
 * their own (a new one when the list is empty).  The easy handle is made
 * for each exchange: curl_easy_reset cannot report a failed allocation, and
 * a handle it left half reset fails its next transfer as if the server had
 * said nothing - a failure of the key that was a want of memory.  libcurl's
 * own allocation failures are AIGW_TR_NOMEM, never a failure of the host.
 * A transfer stopped before its end (a callback's stop, a deadline) is
 * removed from its multi handle mid-transfer, which makes libcurl close that
 * HTTP/1 connection rather than cache it half-read.  Redirects are never
 * followed, only http and https are allowed, nothing is printed, and the
 * header strings built here (they hold the key) are wiped before they are
 * freed.
 */
#include "internal.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <limits.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

#define POOL_MAX 16 /* idle handles kept per transport */
/* All header lines of one answer; below libcurl's own 300 KB limit (8.3.0+
 * and backports), so that a header flood is reported as too large. */
#define MAX_HEADER_BYTES (256 * 1024)

/* The longest single wait in the loop when no deadline is nearer; libcurl
 * shortens it to its own timers anyway. */
#define POLL_MAX_MS 1000
#define CANCEL_POLL_MS 20

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}
#define NO_DEADLINE INT64_MAX

/* An easy handle and the multi handle that runs it and caches its
 * connections; the easy handle is one exchange's, the rest is pooled. */
typedef struct pair {
    CURL *easy;
    CURLM *multi;
    CURLSH *share; /* TLS sessions, for the easy handles of this multi */
} pair;

typedef struct curl_tr {
    pthread_mutex_t mu;
    pair idle[POOL_MAX];
    size_t n_idle;
} curl_tr;

/* Why a callback stopped a transfer. */
typedef enum stop_reason {
    STOP_NONE = 0,
    STOP_DONE,      /* on_data returned 0: complete as far as the caller cares */
    STOP_CANCELLED, /* on_data returned < 0 */
    STOP_STATUS     /* the status line could not be recorded */
} stop_reason;

/* One exchange's state, seen by the callbacks. */
typedef struct call {
    CURL *h;
    aigw_transport_response *resp;
    size_t cap;          /* req->max_response_bytes; 0 = none */
    size_t header_bytes; /* of the current answer */
    bool too_large;      /* a callback stopped the transfer over a cap */
    bool nomem;
    bool numeric_host;   /* the URL's host is an IP address */
    bool status_set;     /* resp's status was recorded */
    /* streaming: the body goes to on_data; NULL: into resp's body */
    aigw_transport_data_fn on_data;
    void *ctx;
    int64_t idle_deadline; /* monotonic ms; NO_DEADLINE when none */
    const aigw_cancel *cancel; /* the caller's token (NULL: none) */
    stop_reason stop;
} call;

/* ---- process-wide init: curl_global_init exactly once ---- */

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static CURLcode g_init_rc = CURLE_FAILED_INIT;

/* Never undone: curl_global_cleanup is not thread-safe before 7.84 and the
 * host may use libcurl itself. */
static void global_init(void)
{
    g_init_rc = curl_global_init(CURL_GLOBAL_ALL);
}

/* ---- the handle pool ---- */

static void pair_cleanup(pair *p)
{
    /* The easy handle goes first: it is never left in its multi handle, and
     * the share outlives every handle that uses it. */
    if (p->easy)
        curl_easy_cleanup(p->easy);
    if (p->multi)
        curl_multi_cleanup(p->multi); /* closes the cached connections */
    if (p->share)
        curl_share_cleanup(p->share);
    p->easy = NULL;
    p->multi = NULL;
    p->share = NULL;
}

/* A pooled multi handle (or a new one) and a new easy handle on its share.
 * 0, or -1 when out of memory (libcurl's handles fail to be made for no
 * other reason). */
static int pool_take(curl_tr *t, pair *out)
{
    bool got = false;
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&t->mu);
    if (t->n_idle > 0) {
        *out = t->idle[--t->n_idle];
        got = true;
    }
    pthread_mutex_unlock(&t->mu);
    if (!got) {
        out->multi = curl_multi_init();
        out->share = curl_share_init();
        if (!out->multi || !out->share ||
            curl_share_setopt(out->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION) !=
                CURLSHE_OK) {
            pair_cleanup(out);
            return -1;
        }
    }
    out->easy = curl_easy_init();
    if (!out->easy || curl_easy_setopt(out->easy, CURLOPT_SHARE, out->share) != CURLE_OK) {
        pair_cleanup(out);
        return -1;
    }
    return 0;
}

/* The easy handle goes (with every option, which point at this call's
 * memory); the multi handle keeps the live connections for the next
 * exchange. */
static void pool_give(curl_tr *t, pair *p)
{
    bool kept = false;
    curl_easy_cleanup(p->easy);
    p->easy = NULL;
    pthread_mutex_lock(&t->mu);
    if (t->n_idle < POOL_MAX) {
        t->idle[t->n_idle++] = *p;
        kept = true;
    }
    pthread_mutex_unlock(&t->mu);
    if (!kept)
        pair_cleanup(p);
}

/* ---- deadlines ---- */

static int64_t add_ms(int64_t now, int64_t ms)
{
    return ms > NO_DEADLINE - now ? NO_DEADLINE : now + ms;
}

/* ---- callbacks ---- */

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* A folded continuation line (obsolete, RFC 9112 5.2): joins the previous
 * header's value with one space. */
static int unfold(aigw_hdrs *h, const char *p, size_t len)
{
    char *v;
    size_t old;
    while (len && is_ows(*p)) {
        p++;
        len--;
    }
    if (h->n == 0 || len == 0)
        return 0;
    old = strlen(h->v[h->n - 1].value);
    v = aigw__realloc(h->v[h->n - 1].value, old + len + 2);
    if (!v)
        return -1;
    v[old] = ' ';
    memcpy(v + old + 1, p, len);
    v[old + 1 + len] = '\0';
    h->v[h->n - 1].value = v;
    return 0;
}

static size_t on_header(char *p, size_t size, size_t nitems, void *ud)
{
    call *c = ud;
    aigw_hdrs *h = &c->resp->headers;
    size_t len = size * nitems, end = len, nend, vs, ve;
    const char *colon;

    c->header_bytes += len;
    if (c->header_bytes > MAX_HEADER_BYTES) {
        c->too_large = true;
        return 0;
    }
    while (end && (p[end - 1] == '\r' || p[end - 1] == '\n'))
        end--;
    if (end == 0)
        return len; /* the blank line closing the block */
    if (end >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        /* A new answer (after 1xx, or a proxy's CONNECT): only the last
         * answer's headers are kept. */
        aigw__hdrs_free(h);
        c->header_bytes = len;
        return len;
    }
    if (is_ows(p[0])) {
        if (unfold(h, p, end) != 0) {
            c->nomem = true;
            return 0;
        }
        return len;
    }
    colon = memchr(p, ':', end);
    if (!colon || colon == p)
        return len; /* not a header line: ignored */
    nend = (size_t)(colon - p);
    while (nend && is_ows(p[nend - 1]))
        nend--;
    vs = (size_t)(colon - p) + 1;
    while (vs < end && is_ows(p[vs]))
        vs++;
    ve = end;
    while (ve > vs && is_ows(p[ve - 1]))
        ve--;
    if (nend == 0)
        return len;
    if (aigw__hdrs_addn(h, p, nend, p + vs, ve - vs) != 0) {
        c->nomem = true;
        return 0;
    }
    return len;
}

/* Records the final answer's status.  0, or -1 when it is out of range. */
static int take_status(call *c)
{
    long code = 0;
    if (c->status_set)
        return 0;
    if (curl_easy_getinfo(c->h, CURLINFO_RESPONSE_CODE, &code) != CURLE_OK ||
        aigw_transport_response_set_status(c->resp, (int)(code > 999 ? 0 : code)) != AIGW_OK)
        return -1;
    c->status_set = true;
    return 0;
}

/* send: the body into resp, within the cap. */
static size_t keep_body(call *c, const char *p, size_t len)
{
    aigw_status st;
    if (c->cap && (len > c->cap || c->resp->body.len > c->cap - len)) {
        c->too_large = true;
        return 0;
    }
    st = aigw_transport_response_append_body(c->resp, p, len);
    if (st == AIGW_EINVAL) {
        c->too_large = true;
        return 0;
    }
    if (st != AIGW_OK) {
        c->nomem = true;
        return 0;
    }
    return len;
}

/* send_stream: the body to on_data, whose answer sets the idle budget or
 * stops the transfer (a short count makes libcurl fail it with
 * CURLE_WRITE_ERROR; the reason is kept in c->stop). */
static size_t pass_body(call *c, const char *p, size_t len)
{
    int64_t budget;
    if (c->stop != STOP_NONE)
        return 0;
    if (len == 0)
        return 0; /* an empty body: nothing to hand on */
    /* libcurl calls the header callback for the whole block first, so the
     * headers are complete; the status goes in before the first chunk. */
    if (take_status(c) != 0) {
        c->stop = STOP_STATUS;
        return 0;
    }
    budget = c->on_data(c->ctx, p, len);
    if (budget > 0) {
        c->idle_deadline = add_ms(aigw__mono_ms(), budget);
        return len;
    }
    c->stop = budget == 0 ? STOP_DONE : STOP_CANCELLED;
    return 0;
}

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud)
{
    call *c = ud;
    size_t len = size * nmemb;
    return c->on_data ? pass_body(c, p, len) : keep_body(c, p, len);
}

/* ---- request headers ---- */

static bool has_crlf(const char *s)
{
    return strpbrk(s, "\r\n") != NULL;
}

static bool token_ok(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if ((unsigned char)*s <= ' ' || *s == ':' || (unsigned char)*s >= 0x7f)
            return false;
    return true;
}

/* Wipes and frees a header list: its strings may hold the key. */
static void slist_wipe_free(struct curl_slist *l)
{
    struct curl_slist *n;
    for (n = l; n; n = n->next)
        if (n->data)
            aigw__wipe(n->data, strlen(n->data));
    curl_slist_free_all(l);
}

static int slist_add(struct curl_slist **l, const char *line)
{
    struct curl_slist *n = curl_slist_append(*l, line);
    if (!n)
        return -1;
    *l = n;
    return 0;
}

/* Builds the header list.  0, -1 out of memory, -2 a bad header. */
static int build_headers(const aigw_transport_request *req, struct curl_slist **out)
{
    struct curl_slist *l = NULL;
    aigw_buf line = AIGW_BUF_INIT;
    bool has_expect = false, has_accept = false;
    int rc = 0;
    size_t i;

    *out = NULL;
    if (req->n_headers && !req->headers)
        return -2;
    for (i = 0; i < req->n_headers && rc == 0; i++) {
        const char *name = req->headers[i].name, *value = req->headers[i].value;
        if (!name || !value || !token_ok(name) || has_crlf(value)) {
            rc = -2;
            break;
        }
        /* libcurl frames the body itself. */
        if (aigw__strcasecmp(name, "content-length") == 0 ||
            aigw__strcasecmp(name, "transfer-encoding") == 0)
            continue;
        has_expect |= aigw__strcasecmp(name, "expect") == 0;
        has_accept |= aigw__strcasecmp(name, "accept") == 0;
        line.len = 0;
        /* "Name;" is libcurl's way to send a header with an empty value. */
        if (aigw__buf_puts(&line, name) != 0 ||
            aigw__buf_puts(&line, *value ? ": " : ";") != 0 ||
            aigw__buf_puts(&line, value) != 0 || slist_add(&l, line.data) != 0)
            rc = -1;
        if (line.data)
            aigw__wipe(line.data, line.len);
    }
    aigw__buf_wipe_free(&line);
    /* An empty "Name:" removes what libcurl would add: no 100-continue round
     * trip, and no Accept the caller did not ask for. */
    if (rc == 0 && !has_expect && slist_add(&l, "Expect:") != 0)
        rc = -1;
    if (rc == 0 && !has_accept && slist_add(&l, "Accept:") != 0)
        rc = -1;
    if (rc != 0) {
        slist_wipe_free(l);
        return rc;
    }
    *out = l;
    return 0;
}

/* ---- result mapping ---- */

/* Whether the URL's host is an IP address (dotted IPv4, or an IPv6
 * literal), which libcurl resolves without asking anyone. */
static bool numeric_host(const char *url)
{
    const char *a = strstr(url, "://"), *end, *p;
    char host[16];
    struct in_addr v4;
    size_t n;
    if (!a)
        return false;
    a += 3;
    end = a + strcspn(a, "/?#");
    for (p = a; p < end; p++)
        if (*p == '@') /* user info ends at the last '@' */
            a = p + 1;
    if (a < end && *a == '[')
        return true;
    n = strcspn(a, ":/?#");
    if (n == 0 || n >= sizeof host)
        return false;
    memcpy(host, a, n);
    host[n] = '\0';
    return inet_pton(AF_INET, host, &v4) == 1;
}

static aigw_transport_result map_code(CURLcode rc, const call *c)
{
    if (c->nomem) /* a callback's own allocation failed: libcurl saw an error */
        return AIGW_TR_NOMEM;
    switch (rc) {
    case CURLE_OK:
        return AIGW_TR_OK;
    case CURLE_OUT_OF_MEMORY:
        return AIGW_TR_NOMEM;
    case CURLE_OPERATION_TIMEDOUT:
        return AIGW_TR_TIMEOUT;
    case CURLE_COULDNT_CONNECT:
        return AIGW_TR_CONNECT;
    case CURLE_COULDNT_RESOLVE_HOST:
        /* An address is not looked up: libcurl fails to "resolve" one only
         * when it cannot allocate its entry (or the resolver's thread). */
        return c->numeric_host ? AIGW_TR_NOMEM : AIGW_TR_DNS;
    case CURLE_COULDNT_RESOLVE_PROXY:
        return AIGW_TR_DNS;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
#if LIBCURL_VERSION_NUM >= 0x074d00 /* 7.77.0 */
    case CURLE_SSL_CLIENTCERT:
#endif
        return AIGW_TR_TLS;
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2_STREAM:
        return AIGW_TR_RESET;
    case CURLE_WRITE_ERROR:
        return c->too_large ? AIGW_TR_TOO_LARGE : AIGW_TR_OTHER;
    case CURLE_FILESIZE_EXCEEDED:
        return AIGW_TR_TOO_LARGE;
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_BAD_CONTENT_ENCODING:
    case CURLE_HTTP2:
        return AIGW_TR_PROTOCOL;
    default:
        return AIGW_TR_OTHER;
    }
}

/* ---- options ---- */

static long clamp_ms(int64_t ms)
{
    if (ms <= 0)
        return 0; /* libcurl: no limit */
    return ms > LONG_MAX ? LONG_MAX : (long)ms;
}

/* Sets the method and body.  CURLE_OK or the first failure. */
static CURLcode set_method(CURL *h, const aigw_transport_request *req)
{
    const char *m = req->method ? req->method : "POST";
    const char *body = req->body ? req->body : "";
    CURLcode rc = CURLE_OK;
    if (strcmp(m, "GET") == 0 && req->body_len == 0)
        return curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    if (strcmp(m, "POST") != 0)
        rc = curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, m);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
    return rc;
}

#define SET(opt, val)                                                                         \
    do {                                                                                      \
        if (rc == CURLE_OK)                                                                   \
            rc = curl_easy_setopt(h, opt, val);                                               \
    } while (0)

/* gatewayConfig.tls.  Verification is always on, and set so rather than
 * left to the defaults.  ca_file replaces the system's CAs: the build-time
 * CA directory (Debian's /etc/ssl/certs) would otherwise be searched beside
 * it.  The files are read at each handshake, so a file replaced in place
 * counts from the next new connection.  libcurl reuses a connection (or
 * resumes a TLS session) only for a request with the same CA and
 * certificate paths, so the pooled handles never mix settings. */
static CURLcode set_tls(CURL *h, const aigw_transport_request *req)
{
    CURLcode rc = CURLE_OK;
    SET(CURLOPT_SSL_VERIFYPEER, 1L);
    SET(CURLOPT_SSL_VERIFYHOST, 2L);
    if (req->ca_file) {
        SET(CURLOPT_CAINFO, req->ca_file);
        SET(CURLOPT_CAPATH, (char *)NULL);
#if LIBCURL_VERSION_NUM >= 0x075700 /* 7.87.0 */
        /* not the CA store libcurl would keep for 24 hours */
        SET(CURLOPT_CA_CACHE_TIMEOUT, 0L);
#endif
    }
    if (req->client_cert_file) {
        SET(CURLOPT_SSLCERT, req->client_cert_file);
        SET(CURLOPT_SSLCERTTYPE, "PEM");
        /* without it, the key is read from the certificate's file */
        if (req->client_key_file)
            SET(CURLOPT_SSLKEY, req->client_key_file);
        SET(CURLOPT_SSLKEYTYPE, "PEM");
        /* An encrypted key then fails the handshake; without a password
         * OpenSSL would ask for one on the terminal. */
        SET(CURLOPT_KEYPASSWD, "");
    }
    return rc;
}

static CURLcode set_options(CURL *h, const aigw_transport_request *req, struct curl_slist *hdrs,
                            call *c)
{
    CURLcode rc = CURLE_OK;
    SET(CURLOPT_URL, req->url);
#if LIBCURL_VERSION_NUM >= 0x075500 /* 7.85.0 */
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
    SET(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
    SET(CURLOPT_REDIR_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    SET(CURLOPT_FOLLOWLOCATION, 0L);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_VERBOSE, 0L);
    SET(CURLOPT_NOPROGRESS, 1L);
    SET(CURLOPT_TCP_NODELAY, 1L);
    SET(CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
    SET(CURLOPT_TIMEOUT_MS, clamp_ms(req->timeout_ms));
    SET(CURLOPT_CONNECTTIMEOUT_MS, clamp_ms(req->connect_timeout_ms));
    SET(CURLOPT_HTTPHEADER, hdrs);
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_HEADERDATA, c);
    SET(CURLOPT_WRITEFUNCTION, on_body);
    SET(CURLOPT_WRITEDATA, c);
    /* Stops at once when Content-Length announces too much (before 8.4.0
     * libcurl checks only then; on_body covers the rest). */
    if (c->cap && c->cap <= (size_t)INT64_MAX)
        SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)c->cap);
    if (rc == CURLE_OK)
        rc = set_tls(h, req);
    if (rc == CURLE_OK)
        rc = set_method(h, req);
    return rc;
}
#undef SET

/* Waits for socket activity or libcurl's next timer, at most ms. */
static CURLMcode wait_io(CURLM *m, int64_t ms)
{
#if LIBCURL_VERSION_NUM >= 0x074200 /* 7.66.0 */
    return curl_multi_poll(m, NULL, 0, (int)ms, NULL);
#else
    /* curl_multi_wait returns at once when it has nothing to wait on (while
     * resolving, say): a short sleep then avoids a busy loop. */
    int n = -1;
    CURLMcode mc = curl_multi_wait(m, NULL, 0, (int)ms, &n);
    if (mc == CURLM_OK && n == 0) {
        struct timespec ts = {0, (ms < 5 ? (long)ms : 5L) * 1000000L};
        nanosleep(&ts, NULL);
    }
    return mc;
#endif
}

/* Runs the transfer on the pair's multi handle until it ends, a callback
 * stops it or a deadline passes, then takes the easy handle out (mid-transfer
 * that closes the connection: it is never cached half-read). */
static aigw_transport_result drive(pair *p, call *c, int64_t deadline)
{
    CURLcode rc = CURLE_OK;
    CURLMcode mc;
    bool done = false, timed_out = false, failed = false;

    if ((mc = curl_multi_add_handle(p->multi, p->easy)) != CURLM_OK)
        return mc == CURLM_OUT_OF_MEMORY ? AIGW_TR_NOMEM : AIGW_TR_OTHER;
    for (;;) {
        int running = 0, left = 0;
        int64_t now, next;
        CURLMsg *msg;
        if ((mc = curl_multi_perform(p->multi, &running)) != CURLM_OK) {
            failed = true;
            break;
        }
        while ((msg = curl_multi_info_read(p->multi, &left)) != NULL)
            if (msg->msg == CURLMSG_DONE && msg->easy_handle == p->easy) {
                rc = msg->data.result;
                done = true;
            }
        if (done)
            break;
        if (running == 0) { /* ended without a word: cannot happen */
            failed = true;
            break;
        }
        if (c->cancel && aigw_cancel_fired(c->cancel)) {
            c->stop = STOP_CANCELLED;
            break;
        }
        now = aigw__mono_ms();
        next = deadline < c->idle_deadline ? deadline : c->idle_deadline;
        if (now >= next) {
            timed_out = true;
            break;
        }
        /* with a cancel token, looked at every CANCEL_POLL_MS */
        mc = wait_io(p->multi, min64(next - now, c->cancel ? CANCEL_POLL_MS : POLL_MAX_MS));
        if (mc != CURLM_OK) {
            failed = true;
            break;
        }
    }
    curl_multi_remove_handle(p->multi, p->easy);

    /* A callback's stop comes first: libcurl reports it as a write error. */
    if (c->stop == STOP_DONE)
        return AIGW_TR_OK;
    if (c->stop == STOP_CANCELLED)
        return AIGW_TR_CANCELLED;
    if (c->stop == STOP_STATUS)
        return AIGW_TR_PROTOCOL;
    if (timed_out)
        return AIGW_TR_TIMEOUT;
    if (c->nomem || (failed && mc == CURLM_OUT_OF_MEMORY))
        return AIGW_TR_NOMEM;
    if (failed)
        return AIGW_TR_OTHER;
    return map_code(rc, c);
}

/* send and send_stream: on_data NULL keeps the body in resp. */
static aigw_transport_result exchange(curl_tr *t, const aigw_transport_request *req,
                                      aigw_transport_response *resp,
                                      aigw_transport_data_fn on_data, void *ctx)
{
    struct curl_slist *hdrs = NULL;
    aigw_transport_result tr;
    int64_t start;
    call c;
    pair p;
    CURLcode rc;

    if (!t || !req || !resp || !req->url || (!req->body && req->body_len) ||
        (req->method && !token_ok(req->method)))
        return AIGW_TR_OTHER;
    switch (build_headers(req, &hdrs)) {
    case 0:
        break;
    case -1:
        return AIGW_TR_NOMEM;
    default:
        return AIGW_TR_OTHER;
    }
    /* curl_easy_init and curl_multi_init fail only for memory */
    if (pool_take(t, &p) != 0) {
        slist_wipe_free(hdrs);
        return AIGW_TR_NOMEM;
    }
    memset(&c, 0, sizeof c);
    c.h = p.easy;
    c.resp = resp;
    c.cap = on_data ? 0 : req->max_response_bytes; /* a stream has no cap */
    c.on_data = on_data;
    c.ctx = ctx;
    c.cancel = req->cancel;
    c.numeric_host = numeric_host(req->url);
    start = aigw__mono_ms();
    c.idle_deadline = on_data && req->idle_timeout_ms > 0 ? add_ms(start, req->idle_timeout_ms)
                                                          : NO_DEADLINE;

    rc = set_options(p.easy, req, hdrs, &c);
    if (rc == CURLE_OK)
        tr = drive(&p, &c, req->timeout_ms > 0 ? add_ms(start, req->timeout_ms) : NO_DEADLINE);
    else
        tr = map_code(rc, &c);
    /* An answer without a body (or a send) gets its status at the end. */
    if (tr == AIGW_TR_OK && take_status(&c) != 0)
        tr = AIGW_TR_PROTOCOL;
    pool_give(t, &p);
    slist_wipe_free(hdrs);
    return tr;
}

static aigw_transport_result curl_send(void *ud, const aigw_transport_request *req,
                                       aigw_transport_response *resp)
{
    return exchange(ud, req, resp, NULL, NULL);
}

static aigw_transport_result curl_send_stream(void *ud, const aigw_transport_request *req,
                                              aigw_transport_response *resp,
                                              aigw_transport_data_fn on_data, void *ctx)
{
    if (!on_data)
        return AIGW_TR_OTHER;
    return exchange(ud, req, resp, on_data, ctx);
}

static void curl_destroy(void *ud)
{
    curl_tr *t = ud;
    size_t i;
    if (!t)
        return;
    for (i = 0; i < t->n_idle; i++)
        pair_cleanup(&t->idle[i]);
    pthread_mutex_destroy(&t->mu);
    aigw__free(t);
}

aigw_status aigw__curl_transport_new(aigw_transport *vt, void **userdata)
{
    curl_tr *t;
    if (userdata)
        *userdata = NULL;
    if (!vt || !userdata)
        return AIGW_EINVAL;
    pthread_once(&g_once, global_init);
    if (g_init_rc != CURLE_OK)
        return AIGW_ETRANSPORT;
    t = aigw__calloc(1, sizeof *t);
    if (!t)
        return AIGW_ENOMEM;
    if (pthread_mutex_init(&t->mu, NULL) != 0) {
        aigw__free(t);
        return AIGW_ETRANSPORT;
    }
    memset(vt, 0, sizeof *vt);
    vt->version = AIGW_TRANSPORT_VERSION;
    vt->send = curl_send;
    vt->destroy = curl_destroy;
    vt->send_stream = curl_send_stream;
    *userdata = t;
    return AIGW_OK;
}
