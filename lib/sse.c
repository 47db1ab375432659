/* sse.c - an incremental Server-Sent Events parser.
 *
 * Follows the WHATWG HTML "event stream" parsing and interpretation rules,
 * on bytes: lines end at CR, LF or CRLF (a CR ending one feed and an LF
 * starting the next are one line end); one leading UTF-8 BOM is skipped;
 * ":..." lines are comments; "name:value" drops one space after the colon;
 * a line without a colon is a field with an empty value; "data" appends the
 * value plus LF, "event" sets the type, "id" sets the last event id unless
 * the value holds a NUL, "retry" takes ASCII digits only; other fields are
 * ignored.  A blank line dispatches: the final LF of the data is removed, an
 * empty data buffer dispatches nothing, and the event type is reset either
 * way while the last event id persists.  Field names match case-sensitively.
 * Bytes are not UTF-8-validated: a broken sequence reaches the callback as it
 * came (whoever parses the JSON judges it).  The buffers are kept from event
 * to event, so once they have grown to the stream's largest event (or line
 * held across reads) an event costs no allocation.
 *
 * Decisions where the contract is silent:
 * - The cap counts what is held: the line being read (in full, even when it
 *   is processed straight from the caller's buffer) plus the event's data
 *   (with its LFs), event type and the current last event id.  A line makes
 *   the parser fail when line + held > max_event_bytes, so where the input is
 *   split never changes the outcome.  Each buffer's capacity is clamped to
 *   max_event_bytes + 1.  Comment lines are skipped as they stream in, never
 *   stored, so a comment of any length costs nothing and is not an error.
 * - Errors are sticky: after AIGW_SSE_TOO_LARGE (or AIGW_ENOMEM when an
 *   allocation fails) the buffers are released, every later feed returns the
 *   same code at once, aigw__sse_pending() is true (the stream was not framed
 *   cleanly) and aigw__sse_free() is the only thing left to do.
 * - A callback's non-zero return stops the feed right after the blank line
 *   that dispatched the event; the rest of that buffer is not consumed.  The
 *   parser stays consistent: aigw__sse_fed() says where the rest begins, and
 *   feeding it goes on as if the feed had not stopped.
 * - retry_ms carries the last valid "retry:" seen since the previous
 *   dispatched event (a "retry:" block without data is not lost: it rides on
 *   the next event), -1 when none; values past INT64_MAX saturate.
 * - pending is also true while a block holds fields (even "id:" or "retry:"
 *   lines only) without its blank line, and while a BOM prefix is unresolved.
 */
#include "internal.h"

#include <string.h>

struct aigw_sse {
    size_t max;     /* max_event_bytes */
    aigw_buf line;  /* a line split across feeds (not its terminator) */
    aigw_buf data;  /* "data" values, each followed by LF */
    aigw_buf event; /* the event type buffer */
    aigw_buf id;    /* the last event id buffer: persists across events */
    int64_t retry_ms;
    long comments;
    int error;      /* sticky: AIGW_SSE_TOO_LARGE or AIGW_ENOMEM, else 0 */
    unsigned bom;   /* BOM bytes matched so far; 3 once settled */
    bool after_cr;  /* the last line ended with CR: an LF next is its tail */
    bool skipping;  /* inside a comment line that spans feeds */
    bool in_block;  /* a field line was seen since the last blank line */
    size_t fed;     /* the feed's bytes read through the line being read */
};

static const unsigned char bom_bytes[3] = {0xEF, 0xBB, 0xBF};

aigw_sse *aigw__sse_new(size_t max_event_bytes)
{
    aigw_sse *p = aigw__calloc(1, sizeof *p);
    if (!p)
        return NULL;
    /* Leave room for the NUL each buffer keeps, without overflowing. */
    p->max = max_event_bytes < SIZE_MAX - 1 ? max_event_bytes : SIZE_MAX - 2;
    p->retry_ms = -1;
    return p;
}

void aigw__sse_free(aigw_sse *p)
{
    if (!p)
        return;
    aigw__buf_free(&p->line);
    aigw__buf_free(&p->data);
    aigw__buf_free(&p->event);
    aigw__buf_free(&p->id);
    aigw__free(p);
}

bool aigw__sse_pending(const aigw_sse *p)
{
    if (!p)
        return false;
    return p->error != 0 || p->line.len > 0 || p->skipping || p->in_block ||
           (p->bom > 0 && p->bom < 3);
}

size_t aigw__sse_fed(const aigw_sse *p)
{
    return p->fed;
}

size_t aigw__sse_room(const aigw_sse *p)
{
    if (p->error || p->bom < 3 || p->after_cr || p->skipping || p->in_block || p->line.len ||
        p->data.len || p->event.len || p->retry_ms != -1)
        return 0;
    return p->max - p->id.len; /* fits() holds id.len <= max */
}

long aigw__sse_comments(const aigw_sse *p)
{
    return p ? p->comments : 0;
}

static int fail(aigw_sse *p, int code)
{
    p->error = code;
    aigw__buf_free(&p->line);
    aigw__buf_free(&p->data);
    aigw__buf_free(&p->event);
    aigw__buf_free(&p->id);
    p->skipping = false;
    return code;
}

/* Whether a line of n bytes fits beside what the event already holds. */
static bool fits(const aigw_sse *p, size_t n)
{
    size_t held = p->data.len + p->event.len + p->id.len;
    return n <= p->max && held <= p->max - n;
}

/* Makes room for need bytes plus the NUL; capacity never passes max + 1. */
static int reserve(aigw_sse *p, aigw_buf *b, size_t need)
{
    size_t limit = p->max + 1, cap;
    char *d;
    need++;
    if (need <= b->cap)
        return 0;
    cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap = cap > limit / 2 ? limit : cap * 2;
    if (cap > limit)
        cap = limit;
    if (cap < need) /* cannot happen while fits() guards every growth */
        cap = need;
    d = aigw__realloc(b->data, cap);
    if (!d)
        return -1;
    b->data = d;
    b->cap = cap;
    return 0;
}

static int append(aigw_sse *p, aigw_buf *b, const char *s, size_t n)
{
    if (reserve(p, b, b->len + n) != 0)
        return -1;
    if (n)
        memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

/* A "data" value and the LF that follows it, in one growth. */
static int append_line(aigw_sse *p, aigw_buf *b, const char *s, size_t n)
{
    if (reserve(p, b, b->len + n + 1) != 0)
        return -1;
    if (n)
        memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len++] = '\n';
    b->data[b->len] = '\0';
    return 0;
}

static int assign(aigw_sse *p, aigw_buf *b, const char *s, size_t n)
{
    b->len = 0;
    if (n == 0 && !b->data)
        return 0; /* empty: no need to allocate */
    return append(p, b, s, n);
}

static void parse_retry(aigw_sse *p, const char *v, size_t n)
{
    int64_t ms = 0;
    size_t i;
    if (n == 0)
        return;
    for (i = 0; i < n; i++) {
        int d = (unsigned char)v[i] - '0';
        if (d < 0 || d > 9)
            return;
        ms = ms > (INT64_MAX - d) / 10 ? INT64_MAX : ms * 10 + d;
    }
    p->retry_ms = ms;
}

/* The event whose data is data[0..len), to the callback. */
static int emit(aigw_sse *p, const char *data, size_t len, aigw_sse_event_fn cb, void *ctx)
{
    aigw_sse_event ev;
    ev.event = p->event.len ? p->event.data : "";
    ev.event_len = p->event.len;
    ev.data = data;
    ev.data_len = len;
    ev.id = p->id.len ? p->id.data : "";
    ev.id_len = p->id.len;
    ev.retry_ms = p->retry_ms;
    p->retry_ms = -1;
    return cb ? cb(ctx, &ev) : 0;
}

static int dispatch(aigw_sse *p, aigw_sse_event_fn cb, void *ctx)
{
    int rc = 0;
    p->in_block = false;
    if (p->data.len > 0) {
        p->data.data[--p->data.len] = '\0'; /* the final LF */
        rc = emit(p, p->data.data, p->data.len, cb, ctx);
        p->data.len = 0;
    }
    p->event.len = 0;
    return rc;
}

/* The common event: one "data:" line of n bytes at s (no data held) and
 * the blank line after it, both in the bytes fed.  What process_line and
 * dispatch would do, the data handed on from where it lies, not copied. */
static int one_line_event(aigw_sse *p, const char *s, size_t n, aigw_sse_event_fn cb, void *ctx)
{
    const char *v = s + 5;
    size_t vlen = n - 5;
    int rc;
    if (!fits(p, n))
        return fail(p, AIGW_SSE_TOO_LARGE);
    if (vlen > 0 && v[0] == ' ') {
        v++;
        vlen--;
    }
    p->in_block = false;
    rc = emit(p, v, vlen, cb, ctx);
    p->event.len = 0;
    return rc;
}

/* One complete line, terminator excluded. */
static int process_line(aigw_sse *p, const char *s, size_t n, aigw_sse_event_fn cb, void *ctx)
{
    const char *colon, *v;
    size_t name_len, vlen;
    int rc = 0;

    if (n == 0)
        return dispatch(p, cb, ctx);
    if (s[0] == ':') {
        p->comments++;
        return 0;
    }
    if (!fits(p, n))
        return fail(p, AIGW_SSE_TOO_LARGE);
    p->in_block = true;
    /* most lines are "data:": their colon is known without a search */
    colon = n >= 5 && memcmp(s, "data:", 5) == 0 ? s + 4 : memchr(s, ':', n);
    if (colon) {
        name_len = (size_t)(colon - s);
        v = colon + 1;
        vlen = n - name_len - 1;
        if (vlen > 0 && v[0] == ' ') {
            v++;
            vlen--;
        }
    } else {
        name_len = n;
        v = s + n;
        vlen = 0;
    }

    switch (name_len) {
    case 2:
        if (memcmp(s, "id", 2) == 0 && (vlen == 0 || !memchr(v, '\0', vlen)))
            rc = assign(p, &p->id, v, vlen);
        break;
    case 4:
        if (memcmp(s, "data", 4) == 0)
            rc = append_line(p, &p->data, v, vlen);
        break;
    case 5:
        if (memcmp(s, "event", 5) == 0)
            rc = assign(p, &p->event, v, vlen);
        else if (memcmp(s, "retry", 5) == 0)
            parse_retry(p, v, vlen);
        break;
    default:
        break; /* unknown fields are ignored */
    }
    return rc == 0 ? 0 : fail(p, AIGW_ENOMEM);
}

/* Keeps the start of a line that continues in a later feed. */
static int hold_partial(aigw_sse *p, const char *s, size_t n)
{
    if (p->skipping)
        return 0;
    if (p->line.len == 0 && n > 0 && s[0] == ':') {
        p->skipping = true; /* a comment: nothing of it is needed */
        return 0;
    }
    if (!fits(p, p->line.len + n))
        return fail(p, AIGW_SSE_TOO_LARGE);
    if (append(p, &p->line, s, n) != 0)
        return fail(p, AIGW_ENOMEM);
    return 0;
}

/* Settles the leading BOM, which may arrive a byte at a time.  Returns the
 * bytes consumed, or -1 (p->error set). */
static long eat_bom(aigw_sse *p, const char *buf, size_t len)
{
    size_t i = 0;
    while (p->bom < 3 && i < len) {
        if ((unsigned char)buf[i] == bom_bytes[p->bom]) {
            p->bom++;
            i++;
            continue;
        }
        /* Not a BOM after all: what matched is the start of a line. */
        if (p->bom > 0 && hold_partial(p, (const char *)bom_bytes, p->bom) != 0)
            return -1;
        p->bom = 3;
    }
    return (long)i;
}

static size_t find(const char *buf, size_t from, size_t len, char c)
{
    const char *q = memchr(buf + from, c, len - from);
    return q ? (size_t)(q - buf) : len;
}

/* The next CR at or after from, or where a window of the bytes without one
 * ends (len at the latest): a feed its callback stops early (aigw__sse_fed)
 * has not looked for CR to the end of the buffer. */
#define CR_WINDOW 4096

static size_t find_cr(const char *buf, size_t from, size_t len)
{
    size_t lim = len - from > CR_WINDOW ? from + CR_WINDOW : len;
    const char *q = memchr(buf + from, '\r', lim - from);
    return q ? (size_t)(q - buf) : lim;
}

int aigw__sse_feed(aigw_sse *p, const char *buf, size_t len, aigw_sse_event_fn cb, void *ctx)
{
    size_t i = 0, lf, cr;
    int rc;

    if (!p)
        return AIGW_EINVAL;
    if (p->error)
        return p->error;
    if (len == 0)
        return 0;
    if (!buf)
        return AIGW_EINVAL;
    if (p->bom < 3) {
        long n = eat_bom(p, buf, len);
        if (n < 0)
            return p->error;
        i = (size_t)n;
    }
    if (p->after_cr && i < len) {
        p->after_cr = false;
        if (buf[i] == '\n')
            i++;
    }

    /* The next CR and LF are found once per scan, not once per line: an
     * LF-only stream costs one memchr for CR per CR_WINDOW bytes (cr: the
     * next CR, or the end of bytes known to hold none). */
    lf = find(buf, i, len, '\n');
    cr = find_cr(buf, i, len);
    while (i < len) {
        size_t eol;
        if (lf < i) /* a blank line ends each event: no search for it */
            lf = buf[i] == '\n' ? i : find(buf, i, len, '\n');
        if (cr < i)
            cr = find_cr(buf, i, len);
        while (cr < lf && buf[cr] != '\r') /* a window's end before the LF */
            cr = find_cr(buf, cr, len);
        eol = lf < cr ? lf : cr;

        if (eol == len)
            return hold_partial(p, buf + i, len - i);

        p->fed = eol + 1 + (buf[eol] == '\r' && eol + 1 < len && buf[eol + 1] == '\n');
        if (p->skipping) {
            p->skipping = false;
            p->comments++;
            rc = 0;
        } else if (p->line.len > 0) {
            const char *s;
            size_t n;
            if (hold_partial(p, buf + i, eol - i) != 0)
                return p->error;
            s = p->line.data;
            n = p->line.len;
            p->line.len = 0; /* the line no longer counts once processed */
            rc = process_line(p, s, n, cb, ctx);
        } else if (p->data.len == 0 && eol + 1 < len && buf[eol] == '\n' &&
                   buf[eol + 1] == '\n' && eol - i >= 5 && memcmp(buf + i, "data:", 5) == 0) {
            p->fed = eol + 2; /* its blank line too */
            rc = one_line_event(p, buf + i, eol - i, cb, ctx);
            i = eol + 2;
            if (rc != 0)
                return rc;
            continue;
        } else {
            rc = process_line(p, buf + i, eol - i, cb, ctx);
        }

        i = eol + 1;
        if (buf[eol] == '\r') {
            if (i == len)
                p->after_cr = true;
            else if (buf[i] == '\n')
                i++;
        }
        if (rc != 0)
            return rc;
    }
    return 0;
}
