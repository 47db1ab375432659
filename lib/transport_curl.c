/*
 * transport_curl.c - the default transport: libcurl.
 *
 * A stream, or any exchange with a cancel token, runs one easy handle on a
 * multi handle of its own, driven here (perform / poll) so that our
 * deadlines - the overall timeout and a stream's idle budget - and the
 * token are checked to the millisecond rather than left to libcurl's
 * coarser timers.  A plain send (whole answer, no token) can only end by
 * itself or by its deadline, which CURLOPT_TIMEOUT_MS holds as exactly:
 * it runs on curl_easy_perform, the cheaper way (see the kinds below).
 *
 * Handles are pooled as a pair: an easy handle, the multi handle that runs
 * it and keeps its connections (none for a plain send's pair: the easy
 * handle's private one keeps them), a share handle with the TLS sessions
 * its transfers may resume and their DNS cache, and the header list the
 * easy handle last sent.
 * The easy handle is configured once, when it is made: the options no
 * request changes (http and https only, no redirects, no signals, no
 * progress meter, TCP_NODELAY, verification on, nothing printed) and the
 * callbacks, whose data is the pair's own call record so that its address
 * never changes.  An exchange sets only what a request may change, and
 * all of it, defaults included: URL, timeouts, the body cap (MAXFILESIZE
 * 0 when there is none), the method (CUSTOMREQUEST back to NULL, the POST
 * body, or for a GET the body cleared and HTTPGET) - each option skipped
 * when the pair remembers the handle holding that very value already
 * (set_opts), as a request to the same URL with the same body does.
 *
 * A handle is never curl_easy_reset: in libcurl 7.88 it cannot report a
 * failed allocation, and a handle it left half reset failed its next
 * transfer as if the server had said nothing - a failure of the key that
 * was a want of memory.  Instead a handle whose setopt failed, or whose
 * exchange ended in anything but an HTTP answer, is freed rather than
 * pooled, and the next exchange makes a fresh one.  gatewayConfig.tls's
 * files are part of a handle's making, not per-request options: a request
 * that names other files than the handle was made for (a configuration
 * swap) gets a fresh handle, so no CA or certificate setting outlives the
 * configuration that asked for it and none has to be put back.  The header
 * list is reused when the next request's headers are byte for byte those
 * it was built from (kept beside it, its signature); other headers build a
 * new list.  The lists and signatures hold the key: every one is wiped
 * when it is replaced or freed.
 *
 * The pool takes no lock: for each kind of pair, POOL_SLOTS slots of one
 * idle pair each (slots.h), a cache line apart, taken with an atomic
 * exchange and filled with a compare-and-swap.  Each thread has a home slot
 * (a number dealt out on the thread's first exchange, the same for every
 * transport and row of slots) where it looks
 * first and gives back first, so a thread sending again and again takes
 * back its own pair - its keep-alive connection - and writes no cache line
 * another thread writes; when its home slot is empty it tries the others
 * and makes a new pair when all are empty, and a pair that finds no empty
 * slot is freed, connections and all.  No pair belongs to a thread: a
 * thread's exit leaves nothing behind, any number of clients and threads
 * share the slots of each transport, and destroy (which runs when no
 * exchange is in flight) frees whatever the slots hold.
 *
 * libcurl's own allocation failures are AIGW_TR_NOMEM, never a failure of
 * the host.  A transfer stopped before its end (a callback's stop, a
 * deadline) is removed from its multi handle mid-transfer (or ends
 * curl_easy_perform so), which makes libcurl close that HTTP/1 connection
 * rather than cache it half-read.
 */
#include "internal.h"
#include "slots.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define POOL_SLOTS 16 /* idle pairs kept per transport */
/* All header lines of one answer (internal.h). */
#define MAX_HEADER_BYTES AIGW_MAX_RESPONSE_HEADER_BYTES

/* The longest single wait in the loop when no deadline is nearer; libcurl
 * shortens it to its own timers anyway. */
#define POLL_MAX_MS 1000
#define CANCEL_POLL_MS 20

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}
#define NO_DEADLINE INT64_MAX

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
    const char *url;     /* the request's */
    size_t cap;          /* req->max_response_bytes; 0 = none */
    size_t header_bytes; /* of the current answer */
    bool too_large;      /* a callback stopped the transfer over a cap */
    bool nomem;
    bool status_set;     /* resp's status was recorded */
    bool hop_line;       /* the last header line was a hop-by-hop one (left out) */
    bool in_block;       /* past a header block's first line, before its blank line */
    bool body_seen;      /* a body byte came: header lines now are trailers */
    int line_status;     /* the last answer's status, from its status line; 0: ask libcurl */
    /* streaming: the body goes to on_data; NULL: into resp's body */
    aigw_transport_data_fn on_data;
    void *ctx;
    int64_t idle_deadline; /* monotonic ms; NO_DEADLINE when none */
    const aigw_cancel *cancel; /* the caller's token (NULL: none) */
    stop_reason stop;
} call;

/* What an easy handle's per-request options were last set to, so that an
 * exchange sets only those that differ (libcurl's setopt copies a URL, and
 * each call costs): known only while the handle lives, all of it cleared
 * with it.  url NULL: not known (set it). */
typedef struct set_opts {
    char *url;       /* a copy of CURLOPT_URL */
    CURLU *uh;       /* CURLOPT_CURLU: url, parsed once (NULL: none) */
    long timeout_ms; /* CURLOPT_TIMEOUT_MS */
    long connect_ms; /* CURLOPT_CONNECTTIMEOUT_MS */
    curl_off_t max_size; /* CURLOPT_MAXFILESIZE_LARGE */
    /* A plain POST: CUSTOMREQUEST NULL, POSTFIELDS body, POSTFIELDSIZE_LARGE
     * body_len.  false: some other method, or not known. */
    bool post;
    const char *body;
    curl_off_t body_len;
} set_opts;

/* A pooled set of handles.  easy is NULL until an exchange makes it; hdrs
 * and the file names belong to it and go with it. */
typedef struct pair {
    CURL *easy;
    CURLM *multi;            /* NULL: a pair of the kind PERFORM */
    CURLSH *share;           /* TLS sessions and DNS, for the easy handles of this multi */
    struct curl_slist *hdrs; /* easy's CURLOPT_HTTPHEADER; NULL: none set yet */
    char *sig;               /* the headers hdrs was built from (hdr_sig); NULL: none */
    char *ca_file;           /* the gatewayConfig.tls files easy was made for */
    char *cert_file;
    char *key_file;
    set_opts set;            /* what easy's per-request options hold */
    call c;                  /* the callbacks' data: the current exchange */
} pair;

/* The two kinds of pair.  A send that can only end by itself or by its
 * deadline (no stream, no cancel token: libcurl's own CURLOPT_TIMEOUT_MS
 * holds the deadline) runs on curl_easy_perform, whose private multi handle
 * keeps the connections; every other exchange runs on the pair's multi
 * handle, in a loop that looks at the idle deadline and the cancel token.
 * Why two: libcurl walks its whole connection cache when a transfer is
 * taken out of a multi handle, and curl_multi_init's cache has 97 buckets
 * against the 3 of curl_easy_perform's (about 1,000 instructions a request,
 * a seventh of libaigw's own); a handle moved from one way to the other
 * loses its connections (curl_multi_add_handle frees the private multi
 * handle), hence pairs of one kind each, pooled apart. */
enum { KIND_MULTI = 0, KIND_PERFORM = 1, N_KINDS };

typedef struct curl_tr {
    aigw_slot idle[N_KINDS][POOL_SLOTS];
} curl_tr;

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

static void slist_wipe_free(struct curl_slist *l);
static void sig_free(pair *p);

/* Frees the easy handle and what belongs to it (its header list, wiped,
 * and its file names); the multi handle keeps its connections. */
static void easy_drop(pair *p)
{
    /* The handle first: it points at the list.  It is never left in its
     * multi handle. */
    if (p->easy)
        curl_easy_cleanup(p->easy);
    p->easy = NULL;
    slist_wipe_free(p->hdrs);
    p->hdrs = NULL;
    sig_free(p);
    aigw__free(p->ca_file);
    aigw__free(p->cert_file);
    aigw__free(p->key_file);
    p->ca_file = p->cert_file = p->key_file = NULL;
    aigw__free(p->set.url);
    if (p->set.uh)
        curl_url_cleanup(p->set.uh); /* after the handle that points at it */
    memset(&p->set, 0, sizeof p->set);
}

static void pair_free(pair *p)
{
    if (!p)
        return;
    /* The share outlives every handle that uses it. */
    easy_drop(p);
    if (p->multi)
        curl_multi_cleanup(p->multi); /* closes the cached connections */
    if (p->share)
        curl_share_cleanup(p->share);
    aigw__free(p);
}

/* A pair of that kind without an easy handle, or NULL when out of memory
 * (libcurl's handles fail to be made for no other reason). */
static pair *pair_new(int kind)
{
    pair *p = aigw__calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->multi = kind == KIND_MULTI ? curl_multi_init() : NULL;
    p->share = curl_share_init();
    /* The DNS cache too: libcurl prunes it after every transfer, walking
     * every bucket, and a share's has a third of a multi handle's. */
    if ((kind == KIND_MULTI && !p->multi) || !p->share ||
        curl_share_setopt(p->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION) != CURLSHE_OK ||
        curl_share_setopt(p->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) != CURLSHE_OK) {
        pair_free(p);
        return NULL;
    }
    return p;
}

/* An idle pair of that kind, the home slot's (h, aigw__slot_home()) first,
 * else a new one; NULL when out of memory. */
static pair *pool_take(curl_tr *t, int kind, unsigned h)
{
    pair *p = aigw__slot_take(t->idle[kind], POOL_SLOTS, h);
    return p ? p : pair_new(kind);
}

/* Into the first empty slot of its kind from home (h) on; freed when there
 * is none. */
static void pool_give(curl_tr *t, pair *p, unsigned h)
{
    if (!aigw__slot_give(t->idle[p->multi ? KIND_MULTI : KIND_PERFORM], POOL_SLOTS, h, p))
        pair_free(p);
}

/* ---- deadlines ---- */

static int64_t add_ms(int64_t now, int64_t ms)
{
    return ms > NO_DEADLINE - now ? NO_DEADLINE : now + ms;
}

/* ---- callbacks ---- */

/* Whether a line begins as a status line: "HTTP/", in any case (as
 * libcurl reads it). */
static bool status_prefix(const char *p, size_t len)
{
    return len >= 5 && aigw__strncasecmp(p, "HTTP/", 5) == 0;
}

/* The code of a status line as libcurl hands it over ("HTTP/1.1 200 OK",
 * "HTTP/2 200"): three digits after "HTTP/d.d " or "HTTP/d " (upper case),
 * then a space or the end; 0 when the line is not so (libcurl is asked
 * instead). */
static int status_of_line(const char *p, size_t len)
{
    size_t i;
    unsigned d1, d2, d3;
    if (len < 10 || memcmp(p, "HTTP/", 5) != 0 || !aigw__is_digit(p[5]))
        return 0; /* "http/" too: libcurl's reading of it differs by case */
    i = p[8] == ' ' && p[6] == '.' && aigw__is_digit(p[7]) ? 8 : p[6] == ' ' ? 6 : 0;
    if (!i || len < i + 4 || (len > i + 4 && p[i + 4] != ' '))
        return 0;
    d1 = (unsigned)(p[i + 1] - '0');
    d2 = (unsigned)(p[i + 2] - '0');
    d3 = (unsigned)(p[i + 3] - '0');
    if (d1 - 1 > 8 || d2 > 9 || d3 > 9)
        return 0;
    return (int)(d1 * 100 + d2 * 10 + d3);
}

static size_t on_header(char *p, size_t size, size_t nitems, void *ud)
{
    call *c = ud;
    aigw_hdrs *h = &c->resp->headers;
    size_t len = size * nitems, end = len;

    c->header_bytes += len;
    if (c->header_bytes > MAX_HEADER_BYTES) {
        c->too_large = true;
        c->resp->header_cap = true;
        return 0;
    }
    /* the CRLF most lines end with at once, then any other CR or LF */
    if (end >= 2 && p[end - 1] == '\n' && p[end - 2] == '\r')
        end -= 2;
    while (end && (p[end - 1] == '\r' || p[end - 1] == '\n'))
        end--;
    if (end == 0) {
        c->in_block = false; /* the blank line closing the block */
        return len;
    }
    if (!c->in_block && !c->body_seen) {
        /* A block's first line: an answer's status line (after 1xx, or a
         * proxy's CONNECT, a new answer: only the last answer's headers
         * are kept, in the same block). */
        c->in_block = true;
        c->line_status = 0;
        if (status_prefix(p, end)) {
            aigw__hdrs_clear(h);
            c->header_bytes = len;
            c->hop_line = false;
            c->line_status = status_of_line(p, end);
            return len;
        }
    } else if (status_prefix(p, end)) {
        return len; /* inside a block or among trailers: no header, no status */
    }
    /* A hop-by-hop header, and the lines folded into it, left out: they
     * describe the connection, not the answer, and the engine never passes
     * them on (the answer is marked end_to_end). */
    if (p[0] == ' ' || p[0] == '\t'
            ? c->hop_line
            : (c->hop_line = aigw__hop_by_hop_n(p, aigw__hdrs_line_name(p, end, NULL))))
        return len;
    /* "Name: value", or a folded line (a line that is neither is ignored) */
    if (aigw__hdrs_add_line(h, p, end) != 0) {
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
    if (c->line_status) { /* the final answer's status line said it */
        c->resp->status = c->line_status;
        c->status_set = true;
        return 0;
    }
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
    c->body_seen = true;
    return c->on_data ? pass_body(c, p, len) : keep_body(c, p, len);
}

/* ---- request headers ---- */

static bool has_crlf(const char *s)
{
    return strpbrk(s, "\r\n") != NULL;
}

/* A byte a header name (or method) may hold: printable ASCII but ':'. */
static bool tchar(char c)
{
    return (unsigned char)(c - 0x21) < 0x7f - 0x21 && c != ':';
}

static bool token_ok(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!tchar(*s))
            return false;
    return true;
}

/* Whether every header of req can be sent as it is. */
static bool headers_ok(const aigw_transport_request *req)
{
    size_t i;
    if (req->n_headers && !req->headers)
        return false;
    for (i = 0; i < req->n_headers; i++) {
        const char *name = req->headers[i].name, *value = req->headers[i].value;
        if (!name || !value || !token_ok(name) || has_crlf(value))
            return false;
    }
    return true;
}

/* What build_headers does with a header. */
typedef enum hdr_kind {
    HDR_PLAIN = 0,
    HDR_FRAMING, /* Content-Length, Transfer-Encoding: libcurl frames the body itself */
    HDR_EXPECT,
    HDR_ACCEPT
} hdr_kind;

/* By length first: most names are none of these. */
static hdr_kind header_kind(const char *name, size_t len)
{
    switch (len) {
    case 14:
        return aigw__strcasecmp(name, "content-length") == 0 ? HDR_FRAMING : HDR_PLAIN;
    case 17:
        return aigw__strcasecmp(name, "transfer-encoding") == 0 ? HDR_FRAMING : HDR_PLAIN;
    case 6:
        if (aigw__strcasecmp(name, "expect") == 0)
            return HDR_EXPECT;
        return aigw__strcasecmp(name, "accept") == 0 ? HDR_ACCEPT : HDR_PLAIN;
    default:
        return HDR_PLAIN;
    }
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

/* The header list for req, whose headers are ok: a line per header,
 * "Name: value" or, for an empty value, "Name;" (libcurl's way to send one),
 * then an empty "Expect:" and "Accept:" unless req has them, which remove
 * what libcurl would add (no 100-continue round trip, and no Accept the
 * caller did not ask for).  0, or -1 out of memory. */
static int build_headers(const aigw_transport_request *req, struct curl_slist **out)
{
    struct curl_slist *l = NULL;
    aigw_buf line = AIGW_BUF_INIT;
    bool has_expect = false, has_accept = false;
    int rc = 0;
    size_t i;

    *out = NULL;
    for (i = 0; i < req->n_headers && rc == 0; i++) {
        const char *name = req->headers[i].name, *value = req->headers[i].value;
        hdr_kind k = header_kind(name, strlen(name));
        if (k == HDR_FRAMING)
            continue;
        has_expect |= k == HDR_EXPECT;
        has_accept |= k == HDR_ACCEPT;
        line.len = 0;
        if (aigw__buf_puts(&line, name) != 0 ||
            aigw__buf_puts(&line, *value ? ": " : ";") != 0 ||
            aigw__buf_puts(&line, value) != 0 || slist_add(&l, line.data) != 0)
            rc = -1;
        if (line.data)
            aigw__wipe(line.data, line.len);
    }
    aigw__buf_wipe_free(&line);
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

/* A header list's signature: the request headers it was built from, as
 * they were given - the number of headers, then per header the lengths of
 * its name and value, then the bytes of each, NUL-terminated.  It holds
 * the key: wiped when replaced or freed. */
typedef struct sig_head {
    size_t n;     /* headers */
    size_t bytes; /* the whole block's */
} sig_head;

static void sig_free(pair *p)
{
    if (p->sig)
        aigw__wipe(p->sig, ((const sig_head *)(void *)p->sig)->bytes);
    aigw__free(p->sig);
    p->sig = NULL;
}

/* req's signature (its headers are ok, name and value set), or NULL when
 * out of memory. */
static char *sig_make(const aigw_transport_request *req)
{
    size_t i, bytes = sizeof(sig_head) + 2 * req->n_headers * sizeof(size_t), *lens;
    sig_head *h;
    char *b, *t;
    for (i = 0; i < req->n_headers; i++)
        bytes += strlen(req->headers[i].name) + strlen(req->headers[i].value) + 2;
    if (!(b = aigw__malloc(bytes)))
        return NULL;
    h = (sig_head *)(void *)b;
    h->n = req->n_headers;
    h->bytes = bytes;
    lens = (size_t *)(void *)(h + 1);
    t = (char *)(lens + 2 * req->n_headers);
    for (i = 0; i < req->n_headers; i++) {
        size_t nl = strlen(req->headers[i].name), vl = strlen(req->headers[i].value);
        lens[2 * i] = nl;
        lens[2 * i + 1] = vl;
        memcpy(t, req->headers[i].name, nl + 1);
        t += nl + 1;
        memcpy(t, req->headers[i].value, vl + 1);
        t += vl + 1;
    }
    return b;
}

/* Whether req's headers are, byte for byte, those sig was made of - and
 * then every one is ok (headers_ok) as it stands, being one that was
 * checked when the list was built, and build_headers would make that very
 * list of them.  false tells nothing of whether they are ok. */
static bool same_headers(const char *sig, const aigw_transport_request *req)
{
    const sig_head *h = (const sig_head *)(const void *)sig;
    const size_t *lens;
    const char *t;
    size_t i;
    if (!sig || h->n != req->n_headers)
        return false;
    lens = (const size_t *)(const void *)(h + 1);
    t = (const char *)(lens + 2 * h->n);
    for (i = 0; i < h->n; i++) {
        const char *name = req->headers[i].name, *value = req->headers[i].value;
        /* strncmp stops at the request's NUL: equal with the NUL, equal */
        if (!name || !value || strncmp(name, t, lens[2 * i] + 1) != 0)
            return false;
        t += lens[2 * i] + 1;
        if (strncmp(value, t, lens[2 * i + 1] + 1) != 0)
            return false;
        t += lens[2 * i + 1] + 1;
    }
    return true;
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
        return numeric_host(c->url) ? AIGW_TR_NOMEM : AIGW_TR_DNS;
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
 * certificate paths, so the pooled handles never mix settings.  Set once,
 * on a new handle (see same_tls). */
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

static bool same_str(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

/* Whether p's easy handle was made for req's TLS files. */
static bool same_tls(const pair *p, const aigw_transport_request *req)
{
    return same_str(p->ca_file, req->ca_file) && same_str(p->cert_file, req->client_cert_file) &&
           same_str(p->key_file, req->client_key_file);
}

static int copy_str(char **dst, const char *s)
{
    *dst = s ? aigw__strdup(s) : NULL;
    return s && !*dst ? -1 : 0;
}

/* p's easy handle, new, made for req's TLS files, with every option no
 * request changes.  CURLE_OK, or the first failure (when out of memory
 * itself, CURLE_OUT_OF_MEMORY), p then without one. */
static CURLcode easy_make(pair *p, const aigw_transport_request *req)
{
    CURLcode rc = CURLE_OK;
    CURL *h = curl_easy_init();
    if (!h)
        return CURLE_OUT_OF_MEMORY;
    p->easy = h;
    SET(CURLOPT_SHARE, p->share);
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
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_HEADERDATA, &p->c);
    SET(CURLOPT_WRITEFUNCTION, on_body);
    SET(CURLOPT_WRITEDATA, &p->c);
    if (rc == CURLE_OK)
        rc = set_tls(h, req);
    if (rc == CURLE_OK &&
        (copy_str(&p->ca_file, req->ca_file) != 0 ||
         copy_str(&p->cert_file, req->client_cert_file) != 0 ||
         copy_str(&p->key_file, req->client_key_file) != 0))
        rc = CURLE_OUT_OF_MEMORY;
    if (rc != CURLE_OK)
        easy_drop(p);
    return rc;
}

/* An environment variable, NULL when unset or empty (as libcurl's
 * curl_getenv reads it). */
static const char *env_set(const char *name)
{
    const char *v = getenv(name);
    return v && v[0] ? v : NULL;
}

/* The proxy environment, read as libcurl reads it, set on the handle.
 * Left unset, libcurl reads no_proxy, NO_PROXY, <scheme>_proxy and
 * all_proxy, ALL_PROXY with getenv and copies what it finds on every
 * transfer (about 3,000 instructions, a twenty-fifth of a whole request on
 * loopback); set here, they are read when a handle is first pointed at a
 * URL.  The reading is libcurl's (create_conn_helper_init_proxy,
 * detect_proxy): no_proxy, else NO_PROXY, given to CURLOPT_NOPROXY, which
 * matches hosts as it matches the variable; for http:// http_proxy alone
 * (never HTTP_PROXY, which a CGI request's "Proxy:" header can set), for
 * https:// https_proxy, else HTTPS_PROXY; else all_proxy, else ALL_PROXY;
 * an empty variable counts as unset.  A URL of any other form keeps
 * libcurl's own reading (both options NULL). */
static CURLcode set_proxy(CURL *h, const char *url)
{
    CURLcode rc = CURLE_OK;
    const char *proxy, *no_proxy;
    bool https = aigw__strncasecmp(url, "https://", 8) == 0;
    if (!https && aigw__strncasecmp(url, "http://", 7) != 0) {
        SET(CURLOPT_PROXY, (const char *)NULL);
        SET(CURLOPT_NOPROXY, (const char *)NULL);
        return rc;
    }
    if (!(no_proxy = env_set("no_proxy")))
        no_proxy = env_set("NO_PROXY");
    if (https) {
        if (!(proxy = env_set("https_proxy")))
            proxy = env_set("HTTPS_PROXY");
    } else {
        proxy = env_set("http_proxy");
    }
    if (!proxy && !(proxy = env_set("all_proxy")))
        proxy = env_set("ALL_PROXY");
    if (!proxy) {
        /* no proxy: "*", every host bypasses it, and libcurl, with no
         * CURLOPT_PROXY to copy, allocates nothing for it either */
        SET(CURLOPT_PROXY, (const char *)NULL);
        SET(CURLOPT_NOPROXY, "*");
        return rc;
    }
    SET(CURLOPT_NOPROXY, no_proxy ? no_proxy : "");
    SET(CURLOPT_PROXY, proxy);
    return rc;
}

/* Whether the method m is lit (short: compared in line, stopping at the
 * first difference, so never past m's NUL). */
static bool method_is(const char *m, const char *lit)
{
    while (*lit && *m == *lit) {
        m++;
        lit++;
    }
    return *m == *lit;
}

/* The method and body, every option of them set: CUSTOMREQUEST back to
 * NULL unless the method needs it, and for a GET no body left from a
 * previous request.  A plain POST of the body the handle already has sets
 * nothing. */
static CURLcode set_method(CURL *h, const aigw_transport_request *req, set_opts *so)
{
    const char *m = req->method ? req->method : "POST";
    bool get = req->body_len == 0 && method_is(m, "GET");
    bool post = !get && method_is(m, "POST");
    const char *body = req->body ? req->body : "";
    CURLcode rc = CURLE_OK;
    if (post && so->post && so->body == body && so->body_len == (curl_off_t)req->body_len)
        return CURLE_OK;
    so->post = false;
    SET(CURLOPT_CUSTOMREQUEST, get || post ? (const char *)NULL : m);
    if (get) {
        SET(CURLOPT_POSTFIELDS, (const char *)NULL);
        SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)-1);
        SET(CURLOPT_HTTPGET, 1L);
        return rc;
    }
    SET(CURLOPT_POSTFIELDS, body);
    SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
    if (rc == CURLE_OK && post) {
        so->post = true;
        so->body = body;
        so->body_len = (curl_off_t)req->body_len;
    }
    return rc;
}

/* The URL parsed once, for every transfer of the handle: given only
 * CURLOPT_URL, libcurl parses the string on every transfer (curl_url_set,
 * then curl_url_get of the whole URL: ~13k instructions a request, a sixth
 * of one); given CURLOPT_CURLU too it copies the parsed handle instead
 * (curl_url_dup), and keeps CURLOPT_URL's string as the transfer's URL.
 * Parsed with the flags libcurl 7.88 parses CURLOPT_URL with; a URL it
 * refuses, or no memory, leaves libcurl to parse the string itself (and
 * to report what is wrong with it). */
static CURLcode set_url_parsed(CURL *h, const char *url, set_opts *so)
{
    if (!so->uh)
        so->uh = curl_url();
    /* cleared first: a URL set on a handle that holds one is read relative
     * to it, where libcurl reads CURLOPT_URL on its own */
    if (so->uh && curl_url_set(so->uh, CURLUPART_URL, NULL, 0) == CURLUE_OK &&
        curl_url_set(so->uh, CURLUPART_URL, url, CURLU_GUESS_SCHEME | CURLU_NON_SUPPORT_SCHEME) ==
            CURLUE_OK)
        return curl_easy_setopt(h, CURLOPT_CURLU, so->uh);
    return curl_easy_setopt(h, CURLOPT_CURLU, (CURLU *)NULL);
}

/* What a request may change, all of it, every time: set unless the handle
 * holds it already (so; a failed setopt drops the handle, and so with it). */
static CURLcode set_request(CURL *h, const aigw_transport_request *req, const call *c,
                            set_opts *so)
{
    CURLcode rc = CURLE_OK;
    long timeout = clamp_ms(req->timeout_ms), connect = clamp_ms(req->connect_timeout_ms);
    /* Stops at once when Content-Length announces too much (before 8.4.0
     * libcurl checks only then; on_body covers the rest); 0 is no limit. */
    curl_off_t max_size = (curl_off_t)(c->cap && c->cap <= (size_t)INT64_MAX ? c->cap : 0);
    if (!so->url || strcmp(so->url, req->url) != 0) {
        aigw__free(so->url);
        so->url = NULL;
        SET(CURLOPT_URL, req->url);
        if (rc == CURLE_OK)
            rc = set_url_parsed(h, req->url, so);
        if (rc == CURLE_OK)
            rc = set_proxy(h, req->url);
        if (rc == CURLE_OK)
            so->url = aigw__strdup(req->url); /* NULL: not known, set next time */
        /* a new handle: none of the others is known either */
        so->timeout_ms = so->connect_ms = -1;
        so->max_size = -1;
    }
    if (so->timeout_ms != timeout) {
        SET(CURLOPT_TIMEOUT_MS, timeout);
        so->timeout_ms = timeout;
    }
    if (so->connect_ms != connect) {
        SET(CURLOPT_CONNECTTIMEOUT_MS, connect);
        so->connect_ms = connect;
    }
    if (so->max_size != max_size) {
        SET(CURLOPT_MAXFILESIZE_LARGE, max_size);
        so->max_size = max_size;
    }
    if (rc == CURLE_OK)
        rc = set_method(h, req, so);
    return rc;
}
#undef SET

/* p's easy handle ready for req: made when there is none or it was made
 * for other TLS files, its header list kept when req's headers are the
 * same (same: same_headers said so of p->sig; else a new list, set before
 * the old one is wiped and freed, so the handle never points at freed
 * memory, and its signature), the request's options set.  CURLE_OK or the
 * first failure. */
static CURLcode prepare(pair *p, const aigw_transport_request *req, bool same)
{
    struct curl_slist *l;
    CURLcode rc;
    if (p->easy && !same_tls(p, req))
        easy_drop(p);
    if (!p->easy && (rc = easy_make(p, req)) != CURLE_OK)
        return rc;
    if (!p->hdrs || !same) {
        if (build_headers(req, &l) != 0)
            return CURLE_OUT_OF_MEMORY;
        if ((rc = curl_easy_setopt(p->easy, CURLOPT_HTTPHEADER, l)) != CURLE_OK) {
            slist_wipe_free(l);
            return rc;
        }
        slist_wipe_free(p->hdrs);
        p->hdrs = l;
        /* without memory for it, the next request builds its list again */
        sig_free(p);
        p->sig = sig_make(req);
    }
    return set_request(p->easy, req, &p->c, &p->set);
}

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

/* What an exchange came to: libcurl's code rc, or the loop's own end (the
 * deadline passed; the multi handle failed with mc). */
static aigw_transport_result outcome(const call *c, CURLcode rc, bool timed_out, bool failed,
                                     CURLMcode mc)
{
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
        /* The multi handle runs this one transfer: while it runs there is
         * no message to read, and once it has ended its message is there. */
        if (running == 0) {
            while ((msg = curl_multi_info_read(p->multi, &left)) != NULL)
                if (msg->msg == CURLMSG_DONE && msg->easy_handle == p->easy) {
                    rc = msg->data.result;
                    done = true;
                }
            if (!done) /* ended without a word: cannot happen */
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
    return outcome(c, rc, timed_out, failed, mc);
}

/* A pair of the kind PERFORM: libcurl runs the transfer to its end or to
 * CURLOPT_TIMEOUT_MS (the request's deadline, set_request). */
static aigw_transport_result perform(pair *p, call *c)
{
    return outcome(c, curl_easy_perform(p->easy), false, false, CURLM_OK);
}

/* send and send_stream: on_data NULL keeps the body in resp. */
static aigw_transport_result exchange(curl_tr *t, const aigw_transport_request *req,
                                      aigw_transport_response *resp,
                                      aigw_transport_data_fn on_data, void *ctx)
{
    aigw_transport_result tr;
    int64_t start;
    unsigned home;
    CURLcode rc;
    bool same;
    pair *p;
    call *c;

    if (!t || !req || !resp || !req->url || (!req->body && req->body_len) ||
        (req->method && !token_ok(req->method)) || (req->n_headers && !req->headers))
        return AIGW_TR_OTHER;
    home = aigw__slot_home();
    p = pool_take(t, on_data || req->cancel ? KIND_MULTI : KIND_PERFORM, home);
    if (!p)
        return headers_ok(req) ? AIGW_TR_NOMEM : AIGW_TR_OTHER;
    /* The headers the handle sent last time were checked then: the same
     * ones need no second look (same_headers). */
    same = p->hdrs && same_headers(p->sig, req);
    if (!same && !headers_ok(req)) {
        pool_give(t, p, home); /* untouched */
        return AIGW_TR_OTHER;
    }
    c = &p->c;
    memset(c, 0, sizeof *c);
    c->resp = resp;
    resp->end_to_end = true; /* on_header leaves the hop-by-hop ones out */
    c->url = req->url;
    c->cap = on_data ? 0 : req->max_response_bytes; /* a stream has no cap */
    c->on_data = on_data;
    c->ctx = ctx;
    c->cancel = req->cancel;
    /* the clock: only the loop reads deadlines */
    start = p->multi ? aigw__mono_ms() : 0;
    c->idle_deadline = on_data && req->idle_timeout_ms > 0 ? add_ms(start, req->idle_timeout_ms)
                                                           : NO_DEADLINE;

    rc = prepare(p, req, same);
    if (rc == CURLE_OK) {
        c->h = p->easy;
        tr = p->multi ? drive(p, c, req->timeout_ms > 0 ? add_ms(start, req->timeout_ms)
                                                         : NO_DEADLINE)
                      : perform(p, c);
    } else {
        tr = map_code(rc, c);
    }
    /* An answer without a body (or a send) gets its status at the end. */
    if (tr == AIGW_TR_OK && take_status(c) != 0)
        tr = AIGW_TR_PROTOCOL;
    /* Only a handle that gave an answer is used again: one whose setopt
     * failed, or whose transfer ended otherwise (out of memory above all),
     * may hold what its next request must not inherit. */
    if (tr != AIGW_TR_OK)
        easy_drop(p);
    pool_give(t, p, home);
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

/* Runs when no exchange is in flight (the client is being freed). */
static void curl_destroy(void *ud)
{
    curl_tr *t = ud;
    size_t i, k;
    if (!t)
        return;
    for (k = 0; k < N_KINDS; k++)
        for (i = 0; i < POOL_SLOTS; i++)
            pair_free(atomic_exchange(&t->idle[k][i].p, NULL));
    aigw__free(t);
}

aigw_status aigw__curl_transport_new(aigw_transport *vt, void **userdata)
{
    curl_tr *t;
    size_t i, k;
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
    for (k = 0; k < N_KINDS; k++)
        for (i = 0; i < POOL_SLOTS; i++)
            atomic_init(&t->idle[k][i].p, NULL);
    memset(vt, 0, sizeof *vt);
    vt->version = AIGW_TRANSPORT_VERSION;
    vt->send = curl_send;
    vt->destroy = curl_destroy;
    vt->send_stream = curl_send_stream;
    *userdata = t;
    return AIGW_OK;
}
