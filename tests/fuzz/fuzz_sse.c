/* fuzz_sse.c - the incremental SSE parser (lib/sse.c), against a reference.
 *
 * Input: 4 header bytes, then the stream.
 *   [0] the cap: bit 7 set -> 1 MiB (the default maxEventBytes), else 0..127
 *       bytes, so that AIGW_SSE_TOO_LARGE is reached often
 *   [1] < 0x20: the callback stops the feed (returns 7) at event
 *       ([1] & 7) + 1; else it never does
 *   [2], [3] seed the chunk sizes of the split feeds
 *
 * The stream is fed whole, one byte at a time (up to 4 KiB), and in chunks
 * of seeded sizes (with empty feeds between some), each chunk in a buffer
 * of exactly its size.  Every way must give the same events, return code,
 * comment count and pending flag, and all must equal what a small
 * reference parser written from the WHATWG rules (and sse.c's documented
 * cap rule) computes over the whole stream.  Any difference aborts.
 *
 * In the whole feed each event's data is also read as a stream reads it
 * (aigw__stream_event_read_memo, resumed where it shares bytes with the
 * event before) and from its start (aigw__stream_event_read): the two must
 * say the same.
 */
#include "engine_int.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define STOP_RC 7
#define BYTEWISE_MAX 4096

static void check(bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_sse: invariant violated: %s\n", what);
        abort();
    }
}

/* ---- an event log: every event serialised, compared with memcmp ---- */

typedef struct log {
    unsigned char *b;
    size_t len, cap;
    size_t events;
} log_t;

static void log_put(log_t *l, const void *p, size_t n)
{
    if (l->len + n > l->cap) {
        size_t cap = l->cap ? l->cap : 256;
        while (cap < l->len + n)
            cap *= 2;
        l->b = realloc(l->b, cap);
        check(l->b != NULL, "out of memory in the harness");
        l->cap = cap;
    }
    if (n)
        memcpy(l->b + l->len, p, n);
    l->len += n;
}

static void log_field(log_t *l, const char *s, size_t n)
{
    log_put(l, &n, sizeof n);
    log_put(l, s, n);
}

static void log_event(log_t *l, const char *event, size_t event_len, const char *d,
                      size_t data_len, const char *id, size_t id_len, int64_t retry_ms)
{
    log_field(l, event, event_len);
    log_field(l, d, data_len);
    log_field(l, id, id_len);
    log_put(l, &retry_ms, sizeof retry_ms);
    l->events++;
}

/* ---- the parser under test ---- */

typedef struct sse_run {
    log_t log;
    size_t max;
    size_t stop_at; /* the callback's stop: at this event (1-based); 0 never */
    aigw_event_memo *memo; /* set: each event read resumed and from its start */
} run_t;

/* The event's data read as a stream reads it, after the events before, and
 * read afresh: the same facts. */
static void same_facts(aigw_event_memo *m, const char *d, size_t n)
{
    aigw_event_facts a, b;
    int ra = aigw__stream_event_read_memo(m, d, n, &a), rb = aigw__stream_event_read(d, n, &b);
    check(ra == rb && a.error == b.error && a.content == b.content && a.done == b.done &&
              a.stop == b.stop && a.seen == b.seen && a.finished == b.finished,
          "an event read resumed differs from the same read from its start");
}

static int on_event(void *ctx, const aigw_sse_event *ev)
{
    run_t *r = ctx;
    check(ev->event && ev->data && ev->id, "an event pointer is NULL");
    check(ev->event[ev->event_len] == '\0' && ev->id[ev->id_len] == '\0',
          "the event type or id is not NUL-terminated");
    check(!memchr(ev->event, '\r', ev->event_len) && !memchr(ev->event, '\n', ev->event_len),
          "the event type holds a line end");
    check(!memchr(ev->id, '\r', ev->id_len) && !memchr(ev->id, '\n', ev->id_len) &&
              !memchr(ev->id, '\0', ev->id_len),
          "the id holds a line end or NUL");
    check(!memchr(ev->data, '\r', ev->data_len), "the data holds a CR");
    /* held at dispatch: data with its final LF, event type, id */
    check(ev->data_len + 1 + ev->event_len + ev->id_len <= r->max, "an event passed the cap");
    check(ev->retry_ms >= -1, "retry_ms below -1");
    log_event(&r->log, ev->event, ev->event_len, ev->data, ev->data_len, ev->id, ev->id_len,
              ev->retry_ms);
    if (r->memo)
        same_facts(r->memo, ev->data, ev->data_len);
    return r->stop_at && r->log.events == r->stop_at ? STOP_RC : 0;
}

typedef struct outcome {
    int rc;
    bool pending;
    long comments;
} outcome;

/* Feeds s in chunks of the sizes next_chunk gives (0: an empty feed). */
typedef size_t (*chunker)(void *state, size_t left);

static outcome feed_all(run_t *r, const uint8_t *s, size_t n, chunker next, void *state)
{
    aigw_sse *p = aigw__sse_new(r->max);
    outcome o = {0, false, 0};
    size_t at = 0;
    check(p != NULL, "aigw__sse_new failed");
    while (at < n) {
        size_t k = next(state, n - at);
        char *chunk;
        if (k > n - at)
            k = n - at;
        if (k == 0) {
            o.rc = aigw__sse_feed(p, NULL, 0, on_event, r);
            check(o.rc == 0, "an empty feed failed");
            continue;
        }
        chunk = malloc(k);
        check(chunk != NULL, "out of memory in the harness");
        memcpy(chunk, s + at, k);
        o.rc = aigw__sse_feed(p, chunk, k, on_event, r);
        free(chunk);
        at += k;
        if (o.rc != 0)
            break;
    }
    if (o.rc == AIGW_SSE_TOO_LARGE)
        check(aigw__sse_feed(p, "data: x\n\n", 9, on_event, r) == AIGW_SSE_TOO_LARGE,
              "AIGW_SSE_TOO_LARGE is not sticky");
    o.pending = aigw__sse_pending(p);
    o.comments = aigw__sse_comments(p);
    aigw__sse_free(p);
    return o;
}

static size_t whole(void *state, size_t left)
{
    (void)state;
    return left;
}

static size_t bytewise(void *state, size_t left)
{
    (void)state;
    (void)left;
    return 1;
}

/* xorshift32 from the seed bytes: chunks of 0 (an empty feed) to 64 bytes,
 * most of them short, so that line ends, CRLF pairs and the BOM fall across
 * feeds. */
static size_t seeded(void *state, size_t left)
{
    uint32_t *x = state;
    (void)left;
    *x ^= *x << 13;
    *x ^= *x >> 17;
    *x ^= *x << 5;
    switch (*x & 3) {
    case 0: return (*x >> 8) % 4; /* 0..3 */
    case 1: return 1 + (*x >> 8) % 16;
    default: return 1 + (*x >> 8) % 64;
    }
}

/* ---- the reference: the whole stream at once, from the rules ---- */

typedef struct refbuf {
    unsigned char *b;
    size_t len;
} refbuf;

static void ref_set(refbuf *r, const uint8_t *s, size_t n, bool append)
{
    if (!append)
        r->len = 0;
    r->b = realloc(r->b, r->len + n + 1);
    check(r->b != NULL, "out of memory in the harness");
    if (n)
        memcpy(r->b + r->len, s, n);
    r->len += n;
}

static outcome reference(const uint8_t *s, size_t n, size_t max, size_t stop_at, log_t *log)
{
    static const uint8_t bom[3] = {0xEF, 0xBB, 0xBF};
    refbuf data = {NULL, 0}, event = {NULL, 0}, id = {NULL, 0};
    outcome o = {0, false, 0};
    bool in_block = false;
    int64_t retry = -1;
    size_t i = 0;

    if (n > 0 && n < 3 && memcmp(s, bom, n) == 0) {
        o.pending = true; /* a BOM not settled yet */
        return o;
    }
    if (n >= 3 && memcmp(s, bom, 3) == 0)
        i = 3;
    while (i < n) {
        size_t eol = i, len;
        const uint8_t *line = s + i;
        while (eol < n && s[eol] != '\r' && s[eol] != '\n')
            eol++;
        len = eol - i;
        if (eol == n) { /* unterminated: held, dropped at the end */
            o.pending = true;
            if (line[0] != ':' && (len > max || data.len + event.len + id.len > max - len))
                o.rc = AIGW_SSE_TOO_LARGE;
            break;
        }
        i = eol + 1;
        if (s[eol] == '\r' && i < n && s[i] == '\n')
            i++;
        if (len == 0) { /* dispatch */
            in_block = false;
            if (data.len > 0) {
                data.len--;
                log_event(log, (const char *)event.b, event.len, (const char *)data.b, data.len,
                          (const char *)id.b, id.len, retry);
                retry = -1;
                data.len = 0;
                if (stop_at && log->events == stop_at) {
                    o.rc = STOP_RC;
                    event.len = 0;
                    break;
                }
            }
            event.len = 0;
            continue;
        }
        if (line[0] == ':') {
            o.comments++;
            continue;
        }
        if (len > max || data.len + event.len + id.len > max - len) {
            o.rc = AIGW_SSE_TOO_LARGE;
            break;
        }
        in_block = true;
        {
            const uint8_t *colon = memchr(line, ':', len), *v;
            size_t name_len, vlen;
            if (colon) {
                name_len = (size_t)(colon - line);
                v = colon + 1;
                vlen = len - name_len - 1;
                if (vlen > 0 && v[0] == ' ') {
                    v++;
                    vlen--;
                }
            } else {
                name_len = len;
                v = line + len;
                vlen = 0;
            }
            if (name_len == 4 && memcmp(line, "data", 4) == 0) {
                ref_set(&data, v, vlen, true);
                ref_set(&data, (const uint8_t *)"\n", 1, true);
            } else if (name_len == 5 && memcmp(line, "event", 5) == 0) {
                ref_set(&event, v, vlen, false);
            } else if (name_len == 2 && memcmp(line, "id", 2) == 0) {
                if (!memchr(v, '\0', vlen))
                    ref_set(&id, v, vlen, false);
            } else if (name_len == 5 && memcmp(line, "retry", 5) == 0 && vlen > 0) {
                int64_t ms = 0;
                size_t k;
                for (k = 0; k < vlen && v[k] >= '0' && v[k] <= '9'; k++)
                    ms = ms > (INT64_MAX - (v[k] - '0')) / 10 ? INT64_MAX
                                                               : ms * 10 + (v[k] - '0');
                if (k == vlen)
                    retry = ms;
            }
        }
    }
    if (o.rc == AIGW_SSE_TOO_LARGE || in_block)
        o.pending = true;
    free(data.b);
    free(event.b);
    free(id.b);
    return o;
}

/* The event buffers are NUL-terminated for the callbacks' sake; the
 * reference's are not (they are compared by length), so an empty buffer
 * may be NULL: log_field copies nothing then. */

static void same(const outcome *a, const log_t *la, const outcome *b, const log_t *lb,
                 const char *what)
{
    if (a->rc != b->rc || a->pending != b->pending || a->comments != b->comments ||
        la->events != lb->events || la->len != lb->len ||
        (la->len && memcmp(la->b, lb->b, la->len) != 0)) {
        fprintf(stderr,
                "fuzz_sse: %s: rc %d/%d, pending %d/%d, comments %ld/%ld, events %zu/%zu\n",
                what, a->rc, b->rc, a->pending, b->pending, a->comments, b->comments, la->events,
                lb->events);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *s;
    size_t n, max, stop_at;
    uint32_t seed;
    log_t ref_log = {NULL, 0, 0, 0};
    outcome ref, got;
    run_t r;

    if (size < 4)
        return 0;
    max = (data[0] & 0x80) ? (size_t)1 << 20 : (size_t)(data[0] & 0x7f);
    stop_at = data[1] < 0x20 ? (size_t)(data[1] & 7) + 1 : 0;
    seed = ((uint32_t)data[2] << 8 | data[3]) * 2654435761u + 1;
    if (seed == 0)
        seed = 1; /* xorshift's one fixed point */
    s = data + 4;
    n = size - 4;

    ref = reference(s, n, max, stop_at, &ref_log);

    memset(&r, 0, sizeof r);
    r.max = max;
    r.stop_at = stop_at;
    r.memo = aigw__event_memo_new();
    check(r.memo != NULL, "aigw__event_memo_new failed");
    got = feed_all(&r, s, n, whole, NULL);
    same(&got, &r.log, &ref, &ref_log, "whole feed vs reference");
    aigw__event_memo_free(r.memo);
    free(r.log.b);

    if (n <= BYTEWISE_MAX) {
        memset(&r, 0, sizeof r);
        r.max = max;
        r.stop_at = stop_at;
        got = feed_all(&r, s, n, bytewise, NULL);
        same(&got, &r.log, &ref, &ref_log, "byte-by-byte feed vs reference");
        free(r.log.b);
    }

    memset(&r, 0, sizeof r);
    r.max = max;
    r.stop_at = stop_at;
    got = feed_all(&r, s, n, seeded, &seed);
    same(&got, &r.log, &ref, &ref_log, "split feed vs reference");
    free(r.log.b);

    free(ref_log.b);
    return 0;
}
