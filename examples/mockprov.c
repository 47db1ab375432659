/*
 * mockprov.c - an embedded mock LLM provider (see mockprov.h).
 *
 * A small HTTP/1.1 server on 127.0.0.1: one accept thread, one thread per
 * connection, keep-alive with Content-Length framing (chunked request bodies
 * are accepted too; STREAM answers are chunked).  Everything shared (rules, log, counters, the connection
 * list) is guarded by one mutex.  Stopping writes to a self-pipe that every
 * wait polls, and shuts down every socket so that blocked sends return too.
 * It never prints and never raises SIGPIPE (MSG_NOSIGNAL / SO_NOSIGPIPE).
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* MSG_NOSIGNAL, strncasecmp, pthreads */
#endif
#include "mockprov.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#ifdef MSG_NOSIGNAL
#define MP_SEND_FLAGS MSG_NOSIGNAL
#else
#define MP_SEND_FLAGS 0
#endif

#define MP_MAX_REQUEST (16u * 1024u * 1024u) /* request line + headers + body */
#define MP_MAX_HEAD (64u * 1024u)            /* request line + headers */
#define MP_CHUNK (64u * 1024u)               /* HUGE bodies go out in these */

typedef struct mp_rule {
    char *key, *model, *headers, *body;
    mockprov_action action;
    int status;
    int delay_ms;
    size_t huge_bytes;
    int left;    /* uses left when limited */
    int limited; /* times > 0 was given */
    char **chunks; /* STREAM: n_chunks strings (empty ones dropped) */
    size_t n_chunks;
    int chunk_delay_ms;
    mockprov_stream_end stream_end;
} mp_rule;

typedef struct mp_entry {
    char *line, *key, *model;
    char *raw;
    size_t raw_len;
} mp_entry;

typedef struct mp_conn {
    mockprov *m;
    int fd;   /* -1 once closed (under m->mu) */
    int done; /* the thread has finished (under m->mu) */
    pthread_t th;
    struct mp_conn *next;
} mp_conn;

struct mockprov {
    int lfd;
    int port;
    int wake[2]; /* self-pipe: readable once stopping */
    char base_url[64];
    pthread_t accept_th;

    pthread_mutex_t mu;
    int stopping;
    mp_rule *rules;
    size_t n_rules, cap_rules;
    mp_entry *log;
    size_t n_log, cap_log;
    long seq;   /* requests seen since start (names chatcmpl-mock-N) */
    long conns; /* connections accepted since start / the last reset */
    mp_conn *conn_list;
};

/* ------------------------------------------------------------------------ */
/* small helpers                                                            */
/* ------------------------------------------------------------------------ */

static char *mp_strndup(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (!p)
        return NULL;
    if (n)
        memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

static char *mp_strdup_or_null(const char *s, int *fail)
{
    char *p;
    if (!s)
        return NULL;
    p = mp_strndup(s, strlen(s));
    if (!p)
        *fail = 1;
    return p;
}

static void chunks_free(char **v, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* Copies n strings (NULL when n is 0); sets *fail when out of memory. */
static char **chunks_dup(const char *const *src, size_t n, int *fail)
{
    char **v;
    size_t i;
    if (n == 0)
        return NULL;
    v = calloc(n, sizeof *v);
    if (!v) {
        *fail = 1;
        return NULL;
    }
    for (i = 0; i < n; i++) {
        v[i] = mp_strndup(src[i], strlen(src[i]));
        if (!v[i]) {
            chunks_free(v, i);
            *fail = 1;
            return NULL;
        }
    }
    return v;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void copy_out(char *dst, size_t size, const char *src)
{
    size_t n;
    if (!dst || size == 0)
        return;
    n = src ? strlen(src) : 0;
    if (n >= size)
        n = size - 1;
    if (n)
        memcpy(dst, src, n);
    dst[n] = '\0';
}

/* Growable byte buffer for one connection's input and the replies. */
typedef struct mp_buf {
    char *p;
    size_t len, cap;
} mp_buf;

static int buf_add(mp_buf *b, const void *data, size_t n)
{
    if (!b->p || b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        char *np;
        while (cap < b->len + n + 1)
            cap *= 2;
        np = realloc(b->p, cap);
        if (!np)
            return -1;
        b->p = np;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

static int buf_str(mp_buf *b, const char *s)
{
    return buf_add(b, s, strlen(s));
}

static void buf_consume(mp_buf *b, size_t n)
{
    memmove(b->p, b->p + n, b->len - n);
    b->len -= n;
    if (b->p)
        b->p[b->len] = '\0';
}

/* JSON string literal (quotes included). */
static int buf_json_str(mp_buf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    int rc = buf_add(b, "\"", 1);
    for (; *s && rc == 0; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            rc = buf_add(b, e, 2);
        } else if (c < 0x20) {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            rc = buf_add(b, e, 6);
        } else {
            rc = buf_add(b, s, 1);
        }
    }
    return rc ? rc : buf_add(b, "\"", 1);
}

static int is_stopping(mockprov *m)
{
    int s;
    pthread_mutex_lock(&m->mu);
    s = m->stopping;
    pthread_mutex_unlock(&m->mu);
    return s;
}

/* Waits until fd is readable (or writable), the server stops, or ms pass
 * (ms < 0: no limit).  1 ready, 0 timed out, -1 stopping or error. */
static int wait_fd(mockprov *m, int fd, short events, int ms)
{
    struct pollfd p[2];
    int n;
    p[0].fd = m->wake[0];
    p[0].events = POLLIN;
    p[1].fd = fd;
    p[1].events = events;
    for (;;) {
        p[0].revents = p[1].revents = 0;
        n = poll(p, fd >= 0 ? 2 : 1, ms);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 || p[0].revents)
            return -1;
        if (n == 0)
            return 0;
        return 1;
    }
}

static int send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MP_SEND_FLAGS);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* request parsing                                                          */
/* ------------------------------------------------------------------------ */

typedef struct mp_req {
    char *line;     /* "METHOD PATH" */
    char *key;      /* credential, "" when none */
    char *model;    /* top-level "model", "" when none */
    size_t head_len; /* request line + headers + blank line */
    size_t raw_len;  /* head + body as received */
    mp_buf body;     /* decoded body */
    int close_after;
    int expect_continue;
} mp_req;

static void req_free(mp_req *r)
{
    free(r->line);
    free(r->key);
    free(r->model);
    free(r->body.p);
    memset(r, 0, sizeof *r);
}

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
        p++;
    return p;
}

static void put_utf8(mp_buf *o, unsigned long cp, int *fail)
{
    char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xC0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | (cp >> 12));
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        u[0] = (char)(0xF0 | (cp >> 18));
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    if (buf_add(o, u, n) != 0)
        *fail = 1;
}

static int hex4(const char *p, const char *end, unsigned long *v)
{
    int i;
    *v = 0;
    if (end - p < 4)
        return -1;
    for (i = 0; i < 4; i++) {
        char c = p[i];
        int d = c >= '0' && c <= '9' ? c - '0'
              : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0)
            return -1;
        *v = *v * 16 + (unsigned long)d;
    }
    return 0;
}

/* Parses the JSON string at p (on its opening quote); decodes it into o when
 * o is not NULL.  Returns the position after the closing quote, NULL when
 * malformed. */
static const char *json_string(const char *p, const char *end, mp_buf *o)
{
    int fail = 0;
    p++;
    while (p < end && *p != '"') {
        if (*p == '\\') {
            char c;
            if (++p >= end)
                return NULL;
            c = *p++;
            if (c == 'u') {
                unsigned long cp, lo;
                if (hex4(p, end, &cp) != 0)
                    return NULL;
                p += 4;
                if (cp >= 0xD800 && cp < 0xDC00 && end - p >= 6 && p[0] == '\\' &&
                    p[1] == 'u' && hex4(p + 2, end, &lo) == 0 && lo >= 0xDC00 && lo < 0xE000) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    p += 6;
                }
                if (o)
                    put_utf8(o, cp, &fail);
            } else if (o) {
                char d = c == 'n' ? '\n' : c == 't' ? '\t' : c == 'r' ? '\r'
                       : c == 'b' ? '\b' : c == 'f' ? '\f' : c;
                fail |= buf_add(o, &d, 1) != 0;
            }
        } else {
            if (o)
                fail |= buf_add(o, p, 1) != 0;
            p++;
        }
    }
    return p < end && !fail ? p + 1 : NULL;
}

/* Skips one JSON value (not validated, but strings are honoured). */
static const char *json_skip(const char *p, const char *end)
{
    int depth = 0;
    while (p < end) {
        char c = *p;
        if (c == '"') {
            p = json_string(p, end, NULL);
            if (!p)
                return NULL;
            if (depth == 0)
                return p;
            continue;
        }
        if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            if (depth == 0)
                return p;
            if (--depth == 0)
                return p + 1;
        } else if (depth == 0 && (c == ',' || c == ' ' || c == '\t' || c == '\r' || c == '\n')) {
            return p;
        }
        p++;
    }
    return depth == 0 ? p : NULL;
}

/* The body's top-level "model" string (allocated; "" when there is none). */
static char *body_model(const char *s, size_t len)
{
    const char *p = s, *end = s + len;
    mp_buf key = {NULL, 0, 0}, val = {NULL, 0, 0};
    char *out = NULL;
    p = skip_ws(p, end);
    if (p >= end || *p != '{')
        goto done;
    p = skip_ws(p + 1, end);
    while (p < end && *p == '"') {
        key.len = 0;
        p = json_string(p, end, &key);
        if (!p)
            goto done;
        p = skip_ws(p, end);
        if (p >= end || *p != ':')
            goto done;
        p = skip_ws(p + 1, end);
        if (key.p && strcmp(key.p, "model") == 0 && p < end && *p == '"') {
            if (json_string(p, end, &val) && val.p)
                out = mp_strndup(val.p, val.len);
            goto done;
        }
        p = json_skip(p, end);
        if (!p)
            goto done;
        p = skip_ws(p, end);
        if (p >= end || *p != ',')
            goto done;
        p = skip_ws(p + 1, end);
    }
done:
    free(key.p);
    free(val.p);
    return out ? out : mp_strndup("", 0);
}

/* Finds the end of the header block; returns its length (blank line
 * included) or 0 when not complete yet. */
static size_t head_end(const char *p, size_t len)
{
    size_t i;
    for (i = 0; i + 3 < len; i++)
        if (p[i] == '\r' && p[i + 1] == '\n' && p[i + 2] == '\r' && p[i + 3] == '\n')
            return i + 4;
    return 0;
}

static int name_is(const char *name, size_t nlen, const char *want)
{
    return strlen(want) == nlen && strncasecmp(name, want, nlen) == 0;
}

/* Parses the request line and headers in buf[0..hlen).  Sets *clen (-1 when
 * chunked).  0, or an HTTP status to answer (400, 413, 501). */
static int parse_head(const char *buf, size_t hlen, mp_req *r, long long *clen)
{
    const char *p = buf, *end = buf + hlen - 2, *eol, *sp1, *sp2;
    const char *bearer = NULL, *xkey = NULL, *gkey = NULL;
    size_t bl = 0, xl = 0, gl = 0;
    int chunked = 0, http10 = 0;
    *clen = 0;
    eol = memchr(p, '\r', (size_t)(end - p));
    if (!eol)
        return 400;
    sp1 = memchr(p, ' ', (size_t)(eol - p));
    sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
    if (!sp1 || !sp2 || sp1 == p || sp2 == sp1 + 1 || (size_t)(eol - sp2 - 1) < 8 ||
        strncmp(sp2 + 1, "HTTP/1.", 7) != 0)
        return 400;
    http10 = sp2[8] == '0';
    r->line = mp_strndup(p, (size_t)(sp2 - p));
    if (!r->line)
        return 500;
    r->close_after = http10;
    p = eol + 2;
    while (p < end) {
        const char *colon, *v, *ve;
        size_t nlen;
        eol = memchr(p, '\r', (size_t)(end - p) + 1);
        if (!eol)
            eol = end;
        colon = memchr(p, ':', (size_t)(eol - p));
        if (!colon)
            return 400;
        nlen = (size_t)(colon - p);
        v = colon + 1;
        while (v < eol && (*v == ' ' || *v == '\t'))
            v++;
        ve = eol;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        if (name_is(p, nlen, "content-length")) {
            char *e;
            char tmp[32];
            size_t vl = (size_t)(ve - v);
            if (vl == 0 || vl >= sizeof tmp)
                return vl ? 413 : 400;
            memcpy(tmp, v, vl);
            tmp[vl] = '\0';
            errno = 0;
            *clen = strtoll(tmp, &e, 10);
            if (*e || errno || *clen < 0)
                return 400;
        } else if (name_is(p, nlen, "transfer-encoding")) {
            if ((size_t)(ve - v) == 7 && strncasecmp(v, "chunked", 7) == 0)
                chunked = 1;
            else
                return 501;
        } else if (name_is(p, nlen, "connection")) {
            if ((size_t)(ve - v) == 5 && strncasecmp(v, "close", 5) == 0)
                r->close_after = 1;
            else if ((size_t)(ve - v) == 10 && strncasecmp(v, "keep-alive", 10) == 0)
                r->close_after = 0;
        } else if (name_is(p, nlen, "expect")) {
            if ((size_t)(ve - v) == 12 && strncasecmp(v, "100-continue", 12) == 0)
                r->expect_continue = 1;
        } else if (name_is(p, nlen, "authorization")) {
            if ((size_t)(ve - v) > 7 && strncasecmp(v, "bearer ", 7) == 0) {
                bearer = v + 7;
                while (bearer < ve && *bearer == ' ')
                    bearer++;
                bl = (size_t)(ve - bearer);
            }
        } else if (name_is(p, nlen, "x-api-key")) {
            xkey = v;
            xl = (size_t)(ve - v);
        } else if (name_is(p, nlen, "x-goog-api-key")) {
            gkey = v;
            gl = (size_t)(ve - v);
        }
        p = eol + 2;
    }
    if (chunked)
        *clen = -1;
    r->key = bearer ? mp_strndup(bearer, bl)
           : xkey   ? mp_strndup(xkey, xl)
           : gkey   ? mp_strndup(gkey, gl) : mp_strndup("", 0);
    return r->key ? 0 : 500;
}

/* Walks a chunked body in buf[0..len); copies the data into out when out is
 * not NULL (callers walk first without copying, so that a body arriving in
 * many reads is not copied again each time).  Returns the bytes used when
 * complete, 0 when more input is needed, -1 malformed, -2 too large. */
static long long dechunk(const char *buf, size_t len, mp_buf *out, size_t limit)
{
    size_t pos = 0, total = 0;
    for (;;) {
        const char *eol;
        char *e;
        unsigned long long n;
        eol = len > pos ? memchr(buf + pos, '\n', len - pos) : NULL;
        if (!eol)
            return len - pos > 1024 ? -1 : 0;
        errno = 0;
        n = strtoull(buf + pos, &e, 16);
        if (e == buf + pos || errno)
            return -1;
        pos = (size_t)(eol - buf) + 1;
        if (n == 0) {
            /* trailers, then a blank line */
            for (;;) {
                eol = len > pos ? memchr(buf + pos, '\n', len - pos) : NULL;
                if (!eol)
                    return 0;
                if (eol == buf + pos || (eol == buf + pos + 1 && buf[pos] == '\r'))
                    return (long long)((size_t)(eol - buf) + 1);
                pos = (size_t)(eol - buf) + 1;
            }
        }
        if (n > limit || total + n > limit)
            return -2;
        if (len - pos < n + 2)
            return 0;
        if (out && buf_add(out, buf + pos, (size_t)n) != 0)
            return -2;
        total += (size_t)n;
        pos += (size_t)n;
        if (buf[pos] == '\r')
            pos++;
        if (pos >= len)
            return 0;
        if (buf[pos] != '\n')
            return -1;
        pos++;
    }
}

/* ------------------------------------------------------------------------ */
/* log and rules                                                            */
/* ------------------------------------------------------------------------ */

/* Logs the request and picks the rule (copied into *out).  Returns the
 * request's sequence number. */
static long log_and_match(mockprov *m, mp_req *r, const char *raw, size_t raw_len, mp_rule *out,
                          int *matched)
{
    size_t i;
    long seq;
    int fail = 0;
    *matched = 0;
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&m->mu);
    seq = ++m->seq;
    if (m->n_log == m->cap_log) {
        size_t cap = m->cap_log ? m->cap_log * 2 : 64;
        mp_entry *v = realloc(m->log, cap * sizeof *v);
        if (v) {
            m->log = v;
            m->cap_log = cap;
        }
    }
    if (m->n_log < m->cap_log) {
        mp_entry *e = &m->log[m->n_log];
        e->line = mp_strdup_or_null(r->line, &fail);
        e->key = mp_strdup_or_null(r->key, &fail);
        e->model = mp_strdup_or_null(r->model, &fail);
        e->raw = mp_strndup(raw, raw_len);
        e->raw_len = raw_len;
        if (fail || !e->raw) {
            free(e->line);
            free(e->key);
            free(e->model);
            free(e->raw);
        } else {
            m->n_log++;
        }
    }
    for (i = 0; i < m->n_rules; i++) {
        mp_rule *rl = &m->rules[i];
        if (rl->limited && rl->left <= 0)
            continue;
        if (rl->key && strcmp(rl->key, r->key) != 0)
            continue;
        if (rl->model && strcmp(rl->model, r->model) != 0)
            continue;
        if (rl->limited)
            rl->left--;
        *out = *rl;
        fail = 0;
        out->key = out->model = NULL;
        out->headers = mp_strdup_or_null(rl->headers, &fail);
        out->body = mp_strdup_or_null(rl->body, &fail);
        out->chunks = chunks_dup((const char *const *)rl->chunks, rl->n_chunks, &fail);
        if (!out->chunks)
            out->n_chunks = 0;
        *matched = 1;
        if (fail) { /* out of memory: answer 500 rather than a wrong rule */
            free(out->headers);
            free(out->body);
            chunks_free(out->chunks, out->n_chunks);
            memset(out, 0, sizeof *out);
            out->status = 500;
            out->body = mp_strndup("{}", 2);
        }
        break;
    }
    pthread_mutex_unlock(&m->mu);
    return seq;
}

static void rule_free(mp_rule *r)
{
    free(r->key);
    free(r->model);
    free(r->headers);
    free(r->body);
    chunks_free(r->chunks, r->n_chunks);
    r->chunks = NULL;
    r->n_chunks = 0;
}

/* ------------------------------------------------------------------------ */
/* answers                                                                  */
/* ------------------------------------------------------------------------ */

static const char *reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 529: return "Overloaded";
    default: return "Status";
    }
}

/* Whether the extra header lines already carry that header. */
static int has_header(const char *lines, const char *name)
{
    size_t n = strlen(name);
    const char *p = lines;
    while (p && *p) {
        if (strncasecmp(p, name, n) == 0 && p[n] == ':')
            return 1;
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    return 0;
}

/* Writes the status line and headers for a body of body_len bytes, or a
 * chunked one when body_len < 0; ctype unless extra names a Content-Type. */
static int send_head_as(int fd, int status, const char *extra, long long body_len,
                        int close_after, const char *ctype)
{
    mp_buf h = {NULL, 0, 0};
    char line[160];
    int rc = 0, nobody = (status >= 100 && status < 200) || status == 204 || status == 304;
    snprintf(line, sizeof line, "HTTP/1.1 %d %s\r\n", status, reason(status));
    rc |= buf_str(&h, line);
    if (!nobody && !(extra && has_header(extra, "content-type"))) {
        snprintf(line, sizeof line, "Content-Type: %s\r\n", ctype);
        rc |= buf_str(&h, line);
    }
    if (!nobody && body_len < 0) {
        rc |= buf_str(&h, "Transfer-Encoding: chunked\r\n");
    } else if (!nobody) {
        snprintf(line, sizeof line, "Content-Length: %lld\r\n", body_len);
        rc |= buf_str(&h, line);
    }
    if (close_after)
        rc |= buf_str(&h, "Connection: close\r\n");
    if (extra)
        rc |= buf_str(&h, extra);
    rc |= buf_str(&h, "\r\n");
    if (rc == 0)
        rc = send_all(fd, h.p, h.len);
    free(h.p);
    return rc ? -1 : 0;
}

static int send_head(int fd, int status, const char *extra, unsigned long long body_len,
                     int close_after)
{
    if (body_len > (unsigned long long)INT64_MAX)
        return -1;
    return send_head_as(fd, status, extra, (long long)body_len, close_after, "application/json");
}

static int send_simple(int fd, int status, const char *body, const char *extra, int close_after)
{
    size_t n = body ? strlen(body) : 0;
    int nobody = (status >= 100 && status < 200) || status == 204 || status == 304;
    if (send_head(fd, status, extra, n, close_after) != 0)
        return -1;
    return nobody || n == 0 ? 0 : send_all(fd, body, n);
}

static char *default_body(long seq, const char *model)
{
    mp_buf b = {NULL, 0, 0};
    char num[32];
    int rc = 0;
    snprintf(num, sizeof num, "%ld", seq);
    rc |= buf_str(&b, "{\"id\":\"chatcmpl-mock-");
    rc |= buf_str(&b, num);
    rc |= buf_str(&b, "\",\"object\":\"chat.completion\",\"created\":0,\"model\":");
    rc |= buf_json_str(&b, model);
    rc |= buf_str(&b, ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
                      "\"content\":");
    {
        size_t n = strlen(model);
        char *hello = malloc(n + 12);
        if (hello) {
            memcpy(hello, "Hello from ", 11);
            memcpy(hello + 11, model, n + 1);
            rc |= buf_json_str(&b, hello);
            free(hello);
        } else {
            rc = -1;
        }
    }
    rc |= buf_str(&b, "},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":1,"
                      "\"completion_tokens\":3,\"total_tokens\":4}}");
    if (rc) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

static int send_huge(mockprov *m, int fd, int status, const char *extra, size_t n, int close_after)
{
    char *chunk;
    if (send_head(fd, status, extra, (unsigned long long)n, close_after) != 0)
        return -1;
    chunk = malloc(MP_CHUNK);
    if (!chunk)
        return -1;
    memset(chunk, 'x', MP_CHUNK);
    while (n > 0) {
        size_t k = n < MP_CHUNK ? n : MP_CHUNK;
        if (is_stopping(m) || send_all(fd, chunk, k) != 0) {
            free(chunk);
            return -1;
        }
        n -= k;
    }
    free(chunk);
    return 0;
}

/* Keeps a connection open without answering until the peer goes or the
 * server stops; whatever the peer sends is dropped. */
static void stay_silent(mockprov *m, int fd)
{
    char tmp[4096];
    for (;;) {
        ssize_t n;
        if (wait_fd(m, fd, POLLIN, -1) <= 0)
            return;
        n = recv(fd, tmp, sizeof tmp, 0);
        if (n == 0 || (n < 0 && errno != EINTR))
            return;
    }
}

/* The wait before a stream's next chunk.  Watches the connection as well, so
 * that a client that went away ends the stream at once rather than at the
 * next write.  0 go on, -1 the server stops or the client has gone. */
static int stream_pause(mockprov *m, int fd, int ms)
{
    int64_t end = mono_ms() + ms;
    for (;;) {
        int64_t left = end - mono_ms();
        char b;
        ssize_t n;
        int w;
        if (left <= 0)
            return 0;
        w = wait_fd(m, fd, POLLIN, (int)left);
        if (w <= 0)
            return w;
        n = recv(fd, &b, 1, MSG_PEEK);
        if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
            return -1;
        if (n > 0) /* the client sent more early: leave it for later */
            return wait_fd(m, -1, 0, (int)left) < 0 ? -1 : 0;
    }
}

/* A STREAM answer.  0 keep the connection, -1 close it. */
static int send_stream(mockprov *m, int fd, const mp_rule *rl, int status, int close_after)
{
    size_t i;
    int nobody = (status >= 100 && status < 200) || status == 204 || status == 304;
    if (send_head_as(fd, status, rl->headers, -1, close_after, "text/event-stream") != 0)
        return -1;
    if (nobody) /* no body to frame: the chunks are not sent */
        return close_after ? -1 : 0;
    for (i = 0; i < rl->n_chunks; i++) {
        const char *p = rl->chunks[i];
        size_t n = strlen(p);
        char size[32];
        if (rl->chunk_delay_ms > 0 && stream_pause(m, fd, rl->chunk_delay_ms) != 0)
            return -1;
        snprintf(size, sizeof size, "%zx\r\n", n);
        if (send_all(fd, size, strlen(size)) != 0 || send_all(fd, p, n) != 0 ||
            send_all(fd, "\r\n", 2) != 0)
            return -1;
    }
    switch (rl->stream_end) {
    case MOCKPROV_END_CUT:
        return -1; /* the connection thread closes it: a FIN mid-body */
    case MOCKPROV_END_STALL:
        stay_silent(m, fd);
        return -1;
    case MOCKPROV_END_OK:
    default:
        return send_all(fd, "0\r\n\r\n", 5) != 0 || close_after ? -1 : 0;
    }
}

/* Closes with a reset (SO_LINGER 0) rather than a FIN. */
static void abortive_close(mp_conn *c)
{
    struct linger lg;
    lg.l_onoff = 1;
    lg.l_linger = 0;
    pthread_mutex_lock(&c->m->mu);
    if (c->fd >= 0) {
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(c->fd);
        c->fd = -1;
    }
    pthread_mutex_unlock(&c->m->mu);
}

/* Answers one request.  0 keep the connection, -1 close it. */
static int answer(mockprov *m, mp_conn *c, mp_req *r, const char *raw, size_t raw_len)
{
    mp_rule rl;
    int matched, rc = 0, status;
    long seq = log_and_match(m, r, raw, raw_len, &rl, &matched);
    if (!matched)
        rl.action = MOCKPROV_RESPOND;
    if (rl.delay_ms > 0 && wait_fd(m, -1, 0, rl.delay_ms) < 0) {
        rule_free(&rl);
        return -1;
    }
    status = rl.status ? rl.status : 200;
    switch (rl.action) {
    case MOCKPROV_CLOSE:
        abortive_close(c);
        rc = -1;
        break;
    case MOCKPROV_SILENT:
        stay_silent(m, c->fd);
        rc = -1;
        break;
    case MOCKPROV_HUGE:
        rc = send_huge(m, c->fd, status, rl.headers, rl.huge_bytes, r->close_after);
        break;
    case MOCKPROV_STREAM:
        rc = send_stream(m, c->fd, &rl, status, r->close_after);
        break;
    case MOCKPROV_RESPOND:
    default:
        if (rl.body) {
            rc = send_simple(c->fd, status, rl.body, rl.headers, r->close_after);
        } else {
            char *b = default_body(seq, r->model);
            if (b)
                rc = send_simple(c->fd, status, b, rl.headers, r->close_after);
            else {
                send_simple(c->fd, 500, "{}", NULL, 1);
                rc = -1;
            }
            free(b);
        }
        break;
    }
    rule_free(&rl);
    return rc != 0 || r->close_after ? -1 : 0;
}

/* Reads more input; 1 got bytes, 0 peer closed / stopping / error. */
static int read_more(mockprov *m, int fd, mp_buf *in)
{
    char tmp[16384];
    for (;;) {
        ssize_t n;
        if (wait_fd(m, fd, POLLIN, -1) <= 0)
            return 0;
        n = recv(fd, tmp, sizeof tmp, 0);
        if (n > 0)
            return buf_add(in, tmp, (size_t)n) == 0;
        if (n == 0 || errno != EINTR)
            return 0;
    }
}

/* Logs what we know of a request we refuse, then answers status and closes. */
static void refuse(mockprov *m, int fd, mp_req *r, const char *raw, size_t raw_len, int status)
{
    if (r->line && r->key) {
        mp_rule rl;
        int matched;
        if (!r->model)
            r->model = mp_strndup("", 0);
        if (r->model) {
            log_and_match(m, r, raw, raw_len, &rl, &matched);
            rule_free(&rl);
        }
    }
    send_simple(fd, status, "{\"error\":{\"message\":\"mockprov: request refused\"}}", NULL, 1);
}

static void serve(mp_conn *c)
{
    mockprov *m = c->m;
    mp_buf in = {NULL, 0, 0};
    int fd = c->fd;
    for (;;) {
        mp_req r;
        size_t hlen, total;
        long long clen;
        int st;
        memset(&r, 0, sizeof r);
        while ((hlen = head_end(in.p ? in.p : "", in.len)) == 0) {
            if (in.len > MP_MAX_HEAD) {
                refuse(m, fd, &r, in.p, in.len, 413);
                goto out;
            }
            if (!read_more(m, fd, &in))
                goto out;
        }
        st = parse_head(in.p, hlen, &r, &clen);
        if (st == 0 && clen >= 0 && (unsigned long long)clen > MP_MAX_REQUEST - hlen)
            st = 413;
        if (st != 0) {
            refuse(m, fd, &r, in.p, hlen, st);
            req_free(&r);
            goto out;
        }
        if (r.expect_continue && clen != 0 && in.len == hlen &&
            send_all(fd, "HTTP/1.1 100 Continue\r\n\r\n", 25) != 0) {
            req_free(&r);
            goto out;
        }
        if (clen >= 0) {
            total = hlen + (size_t)clen;
            while (in.len < total)
                if (!read_more(m, fd, &in)) {
                    req_free(&r);
                    goto out;
                }
            st = buf_add(&r.body, in.p + hlen, (size_t)clen);
        } else {
            long long used;
            for (;;) {
                used = dechunk(in.p + hlen, in.len - hlen, NULL, MP_MAX_REQUEST - hlen);
                if (used > 0)
                    used = dechunk(in.p + hlen, in.len - hlen, &r.body, MP_MAX_REQUEST - hlen);
                if (used != 0)
                    break;
                if (!read_more(m, fd, &in)) {
                    req_free(&r);
                    goto out;
                }
            }
            if (used < 0) {
                refuse(m, fd, &r, in.p, hlen, used == -2 ? 413 : 400);
                req_free(&r);
                goto out;
            }
            total = hlen + (size_t)used;
            st = 0;
        }
        r.model = st == 0 ? body_model(r.body.p ? r.body.p : "", r.body.len) : NULL;
        if (!r.model) {
            req_free(&r);
            goto out;
        }
        st = answer(m, c, &r, in.p, total);
        req_free(&r);
        if (st != 0)
            goto out;
        buf_consume(&in, total);
    }
out:
    free(in.p);
}

static void *conn_main(void *arg)
{
    mp_conn *c = arg;
    serve(c);
    pthread_mutex_lock(&c->m->mu);
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    c->done = 1;
    pthread_mutex_unlock(&c->m->mu);
    return NULL;
}

/* Joins and frees the connections whose thread has finished (accept thread
 * only: it alone changes the list until stop). */
static void reap(mockprov *m, int all)
{
    mp_conn **pp = &m->conn_list;
    while (*pp) {
        mp_conn *c = *pp;
        int done;
        pthread_mutex_lock(&m->mu);
        done = c->done;
        pthread_mutex_unlock(&m->mu);
        if (done || all) {
            pthread_join(c->th, NULL);
            *pp = c->next;
            free(c);
        } else {
            pp = &c->next;
        }
    }
}

static void *accept_main(void *arg)
{
    mockprov *m = arg;
    for (;;) {
        mp_conn *c;
        int fd, one = 1;
        if (wait_fd(m, m->lfd, POLLIN, -1) < 0)
            break;
        fd = accept(m->lfd, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EAGAIN ||
                errno == EWOULDBLOCK)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                wait_fd(m, -1, 0, 10);
                continue;
            }
            break;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
#ifdef SO_NOSIGPIPE
        setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
#endif
        reap(m, 0);
        c = calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        c->m = m;
        c->fd = fd;
        pthread_mutex_lock(&m->mu);
        if (m->stopping) {
            pthread_mutex_unlock(&m->mu);
            close(fd);
            free(c);
            break;
        }
        m->conns++;
        pthread_mutex_unlock(&m->mu);
        if (pthread_create(&c->th, NULL, conn_main, c) != 0) {
            close(fd);
            free(c);
            continue;
        }
        c->next = m->conn_list;
        m->conn_list = c;
    }
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* public API                                                               */
/* ------------------------------------------------------------------------ */

mockprov *mockprov_start(int port)
{
    mockprov *m;
    struct sockaddr_in sa;
    socklen_t sl = sizeof sa;
    int one = 1, fl;
    if (port < 0 || port > 65535)
        return NULL;
    m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->lfd = m->wake[0] = m->wake[1] = -1;
    if (pthread_mutex_init(&m->mu, NULL) != 0) {
        free(m);
        return NULL;
    }
    if (pipe(m->wake) != 0)
        goto fail;
    fl = fcntl(m->wake[0], F_GETFD);
    fcntl(m->wake[0], F_SETFD, fl | FD_CLOEXEC);
    fl = fcntl(m->wake[1], F_GETFD);
    fcntl(m->wake[1], F_SETFD, fl | FD_CLOEXEC);
    m->lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (m->lfd < 0)
        goto fail;
    fl = fcntl(m->lfd, F_GETFD);
    fcntl(m->lfd, F_SETFD, fl | FD_CLOEXEC);
    setsockopt(m->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons((unsigned short)port);
    if (bind(m->lfd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(m->lfd, 128) != 0 ||
        getsockname(m->lfd, (struct sockaddr *)&sa, &sl) != 0)
        goto fail;
    /* Non-blocking, so that a connection that vanishes between poll and
     * accept cannot block the accept thread. */
    fl = fcntl(m->lfd, F_GETFL);
    fcntl(m->lfd, F_SETFL, fl | O_NONBLOCK);
    m->port = ntohs(sa.sin_port);
    snprintf(m->base_url, sizeof m->base_url, "http://127.0.0.1:%d/v1", m->port);
    if (pthread_create(&m->accept_th, NULL, accept_main, m) != 0)
        goto fail;
    return m;
fail:
    if (m->lfd >= 0)
        close(m->lfd);
    if (m->wake[0] >= 0) {
        close(m->wake[0]);
        close(m->wake[1]);
    }
    pthread_mutex_destroy(&m->mu);
    free(m);
    return NULL;
}

int mockprov_port(const mockprov *m)
{
    return m ? m->port : -1;
}

const char *mockprov_base_url(const mockprov *m)
{
    return m ? m->base_url : "";
}

int mockprov_add_rule(mockprov *m, const mockprov_rule *rule)
{
    mp_rule r;
    int fail = 0;
    size_t n = 0;
    if (!m || !rule || (int)rule->action < MOCKPROV_RESPOND || rule->action > MOCKPROV_STREAM ||
        rule->times < 0 || (int)rule->stream_end < MOCKPROV_END_OK ||
        rule->stream_end > MOCKPROV_END_STALL)
        return -1;
    memset(&r, 0, sizeof r);
    r.key = mp_strdup_or_null(rule->key, &fail);
    r.model = mp_strdup_or_null(rule->model, &fail);
    r.headers = mp_strdup_or_null(rule->headers, &fail);
    r.body = mp_strdup_or_null(rule->body, &fail);
    r.action = rule->action;
    r.status = rule->status;
    r.delay_ms = rule->delay_ms;
    r.huge_bytes = rule->huge_bytes;
    r.chunk_delay_ms = rule->chunk_delay_ms;
    r.stream_end = rule->stream_end;
    if (rule->chunks) {
        /* empty strings dropped: a 0-size chunk would end the body */
        const char *const *src = rule->chunks;
        size_t i, total = 0;
        while (src[total])
            total++;
        r.chunks = total ? calloc(total, sizeof *r.chunks) : NULL;
        if (total && !r.chunks)
            fail = 1;
        for (i = 0; i < total && !fail; i++) {
            if (!*src[i])
                continue;
            r.chunks[n] = mp_strndup(src[i], strlen(src[i]));
            if (!r.chunks[n++])
                fail = 1;
        }
        r.n_chunks = n;
    }
    r.left = rule->times;
    r.limited = rule->times > 0;
    pthread_mutex_lock(&m->mu);
    if (!fail && m->n_rules == m->cap_rules) {
        size_t cap = m->cap_rules ? m->cap_rules * 2 : 8;
        mp_rule *v = realloc(m->rules, cap * sizeof *v);
        if (v) {
            m->rules = v;
            m->cap_rules = cap;
        } else {
            fail = 1;
        }
    }
    if (!fail)
        m->rules[m->n_rules++] = r;
    pthread_mutex_unlock(&m->mu);
    if (fail) {
        rule_free(&r);
        return -1;
    }
    return 0;
}

static void clear_locked(mockprov *m)
{
    size_t i;
    for (i = 0; i < m->n_rules; i++)
        rule_free(&m->rules[i]);
    free(m->rules);
    m->rules = NULL;
    m->n_rules = m->cap_rules = 0;
    for (i = 0; i < m->n_log; i++) {
        free(m->log[i].line);
        free(m->log[i].key);
        free(m->log[i].model);
        free(m->log[i].raw);
    }
    free(m->log);
    m->log = NULL;
    m->n_log = m->cap_log = 0;
    m->conns = 0;
    m->seq = 0;
}

void mockprov_reset(mockprov *m)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    clear_locked(m);
    pthread_mutex_unlock(&m->mu);
}

long mockprov_count(mockprov *m, const char *key)
{
    long n = 0;
    size_t i;
    if (!m)
        return 0;
    pthread_mutex_lock(&m->mu);
    for (i = 0; i < m->n_log; i++)
        if (!key || strcmp(m->log[i].key, key) == 0)
            n++;
    pthread_mutex_unlock(&m->mu);
    return n;
}

long mockprov_connection_count(mockprov *m)
{
    long n;
    if (!m)
        return 0;
    pthread_mutex_lock(&m->mu);
    n = m->conns;
    pthread_mutex_unlock(&m->mu);
    return n;
}

long mockprov_log_count(mockprov *m)
{
    long n;
    if (!m)
        return 0;
    pthread_mutex_lock(&m->mu);
    n = (long)m->n_log;
    pthread_mutex_unlock(&m->mu);
    return n;
}

int mockprov_log_get(mockprov *m, long i, char *line, size_t line_size, char *key,
                     size_t key_size, char *model, size_t model_size)
{
    if (!m)
        return -1;
    pthread_mutex_lock(&m->mu);
    if (i < 0 || (size_t)i >= m->n_log) {
        pthread_mutex_unlock(&m->mu);
        return -1;
    }
    copy_out(line, line_size, m->log[i].line);
    copy_out(key, key_size, m->log[i].key);
    copy_out(model, model_size, m->log[i].model);
    pthread_mutex_unlock(&m->mu);
    return 0;
}

long mockprov_log_raw(mockprov *m, long i, char *buf, size_t size)
{
    long n;
    if (!m)
        return -1;
    pthread_mutex_lock(&m->mu);
    if (i < 0 || (size_t)i >= m->n_log) {
        pthread_mutex_unlock(&m->mu);
        return -1;
    }
    n = (long)m->log[i].raw_len;
    if (buf && size) {
        size_t k = m->log[i].raw_len < size ? m->log[i].raw_len : size;
        memcpy(buf, m->log[i].raw, k);
        if (k < size)
            buf[k] = '\0';
    }
    pthread_mutex_unlock(&m->mu);
    return n;
}

void mockprov_stop(mockprov *m)
{
    mp_conn *c;
    ssize_t w;
    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    m->stopping = 1;
    pthread_mutex_unlock(&m->mu);
    do
        w = write(m->wake[1], "x", 1);
    while (w < 0 && errno == EINTR);
    shutdown(m->lfd, SHUT_RDWR);
    pthread_join(m->accept_th, NULL);
    /* Wake connection threads blocked in send (HUGE) as well. */
    pthread_mutex_lock(&m->mu);
    for (c = m->conn_list; c; c = c->next)
        if (c->fd >= 0)
            shutdown(c->fd, SHUT_RDWR);
    pthread_mutex_unlock(&m->mu);
    reap(m, 1);
    close(m->lfd);
    close(m->wake[0]);
    close(m->wake[1]);
    clear_locked(m);
    pthread_mutex_destroy(&m->mu);
    free(m);
}
