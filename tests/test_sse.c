/* test_sse.c - the incremental SSE parser: real provider streams fed at every
 * split position, byte by byte and in random chunks, with LF, CRLF and CR
 * line ends; the spec's field rules; the cap; stop values; allocation
 * failures. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ---- expected and recorded events ---- */

typedef struct exp_ev {
    const char *event;
    const char *data;
    size_t data_len; /* data may hold NUL bytes */
    const char *id;
    int64_t retry_ms;
} exp_ev;

#define EV(e, d, i) {e, d, sizeof(d) - 1, i, -1}
#define EVR(e, d, i, r) {e, d, sizeof(d) - 1, i, r}
#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

typedef struct rec_ev {
    char *event, *data, *id;
    size_t event_len, data_len, id_len;
    int64_t retry_ms;
} rec_ev;

typedef struct recorder {
    rec_ev *v;
    size_t n, cap;
    size_t stop_at; /* 1-based event number whose callback returns stop_rc */
    int stop_rc;
    bool stop_each; /* every callback returns STOP_EACH */
} recorder;

#define STOP_EACH 77

/* Plain malloc on purpose: the allocation sweep counts the parser's only. */
static char *copy(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    assert_non_null(d);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

static int on_event(void *ctx, const aigw_sse_event *ev)
{
    recorder *r = ctx;
    rec_ev *e;
    /* The contract: never NULL; event and id NUL-terminated, data a view
     * of data_len bytes (it may lie in the bytes fed). */
    assert_non_null(ev->event);
    assert_non_null(ev->data);
    assert_non_null(ev->id);
    assert_int_equal(ev->event[ev->event_len], '\0');
    assert_int_equal(ev->id[ev->id_len], '\0');
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 16;
        r->v = realloc(r->v, r->cap * sizeof *r->v);
        assert_non_null(r->v);
    }
    e = &r->v[r->n++];
    e->event = copy(ev->event, ev->event_len);
    e->event_len = ev->event_len;
    e->data = copy(ev->data, ev->data_len);
    e->data_len = ev->data_len;
    e->id = copy(ev->id, ev->id_len);
    e->id_len = ev->id_len;
    e->retry_ms = ev->retry_ms;
    if (r->stop_each)
        return STOP_EACH;
    return r->n == r->stop_at ? r->stop_rc : 0;
}

static void rec_clear(recorder *r)
{
    size_t i;
    for (i = 0; i < r->n; i++) {
        free(r->v[i].event);
        free(r->v[i].data);
        free(r->v[i].id);
    }
    free(r->v);
    r->v = NULL;
    r->n = r->cap = 0;
}

/* Checks that the recorded events are exp[0..n_exp) (all of them when
 * prefix_ok is false, a prefix otherwise). */
static void check_events(const recorder *r, const exp_ev *exp, size_t n_exp, bool prefix_ok,
                         const char *what)
{
    size_t i;
    if (prefix_ok ? r->n > n_exp : r->n != n_exp)
        fail_msg("%s: %zu events, want %zu", what, r->n, n_exp);
    for (i = 0; i < r->n; i++) {
        const rec_ev *g = &r->v[i];
        const exp_ev *w = &exp[i];
        if (g->event_len != strlen(w->event) || memcmp(g->event, w->event, g->event_len) != 0)
            fail_msg("%s: event %zu type \"%s\", want \"%s\"", what, i, g->event, w->event);
        if (g->data_len != w->data_len || memcmp(g->data, w->data, g->data_len) != 0)
            fail_msg("%s: event %zu data \"%s\" (%zu), want \"%s\" (%zu)", what, i, g->data,
                     g->data_len, w->data, w->data_len);
        if (g->id_len != strlen(w->id) || memcmp(g->id, w->id, g->id_len) != 0)
            fail_msg("%s: event %zu id \"%s\", want \"%s\"", what, i, g->id, w->id);
        if (g->retry_ms != w->retry_ms)
            fail_msg("%s: event %zu retry %lld, want %lld", what, i, (long long)g->retry_ms,
                     (long long)w->retry_ms);
    }
}

/* ---- feeding a stream in pieces ---- */

typedef struct sse_case {
    const char *name;
    const char *s;
    size_t len;
    size_t cap;           /* max_event_bytes */
    const exp_ev *exp;
    size_t n_exp;
    int rc;               /* the first non-zero feed result, or 0 */
    long comments;        /* -1: not checked */
    bool pending;         /* aigw__sse_pending at the end */
} sse_case;

enum { CUT_TWO, CUT_BYTES, CUT_RANDOM, CUT_STOPS };

static uint32_t lcg(uint32_t *seed)
{
    *seed = *seed * 1103515245u + 12345u;
    return (*seed >> 16) & 0x7fff;
}

/* Feeds c->s cut as `how` says; checks events, return value, pending and
 * comments. */
static void run_cut(const sse_case *c, int how, size_t k, uint32_t seed)
{
    aigw_sse *p = aigw__sse_new(c->cap);
    recorder r = {0};
    size_t at = 0;
    int rc = 0;
    char what[160];

    if (how == CUT_TWO)
        snprintf(what, sizeof what, "%s, split at %zu", c->name, k);
    else if (how == CUT_BYTES)
        snprintf(what, sizeof what, "%s, byte by byte", c->name);
    else if (how == CUT_RANDOM)
        snprintf(what, sizeof what, "%s, random chunks (seed %u)", c->name, (unsigned)seed);
    else
        snprintf(what, sizeof what, "%s, random chunks (seed %u), a stop at each event",
                 c->name, (unsigned)seed);
    assert_non_null(p);
    r.stop_each = how == CUT_STOPS;

    while (rc == 0 && at < c->len) {
        size_t n;
        if (how == CUT_TWO)
            n = at < k ? k - at : c->len - at;
        else if (how == CUT_BYTES)
            n = 1;
        else
            n = 1 + lcg(&seed) % (how == CUT_STOPS ? 200 : 23);
        if (n > c->len - at)
            n = c->len - at;
        rc = aigw__sse_feed(p, c->s + at, n, on_event, &r);
        /* stopped: the rest of the chunk is fed next, from where it stopped */
        while (rc == STOP_EACH) {
            size_t fed = aigw__sse_fed(p);
            if (fed == 0 || fed > n)
                fail_msg("%s: stopped at %zu of a chunk of %zu", what, fed, n);
            at += fed;
            n -= fed;
            rc = n ? aigw__sse_feed(p, c->s + at, n, on_event, &r) : 0;
        }
        at += n;
    }
    if (rc != c->rc)
        fail_msg("%s: feed returned %d, want %d", what, rc, c->rc);
    check_events(&r, c->exp, c->n_exp, false, what);
    if (aigw__sse_pending(p) != c->pending)
        fail_msg("%s: pending %d, want %d", what, aigw__sse_pending(p), c->pending);
    if (c->comments >= 0 && aigw__sse_comments(p) != c->comments)
        fail_msg("%s: %ld comments, want %ld", what, aigw__sse_comments(p), c->comments);
    if (c->rc == AIGW_SSE_TOO_LARGE) /* sticky */
        assert_int_equal(aigw__sse_feed(p, "data: x\n\n", 9, on_event, &r), AIGW_SSE_TOO_LARGE);
    aigw__sse_free(p);
    rec_clear(&r);
}

static void run_case(const sse_case *c)
{
    size_t k;
    uint32_t seed;
    for (k = 0; k <= c->len; k++)
        run_cut(c, CUT_TWO, k, 0);
    run_cut(c, CUT_BYTES, 0, 0);
    for (seed = 1; seed <= 8; seed++) {
        run_cut(c, CUT_RANDOM, 0, seed);
        run_cut(c, CUT_STOPS, 0, seed);
    }
}

/* The same stream with LF, CRLF and CR line ends (the sources use LF only
 * as a line end). */
static void run_all_line_ends(const sse_case *c)
{
    static const char *const ends[] = {"\r\n", "\r"};
    size_t e, i;
    run_case(c);
    for (e = 0; e < N_OF(ends); e++) {
        size_t elen = strlen(ends[e]), n = 0;
        char *t = malloc(c->len * 2 + 1), name[96];
        sse_case v = *c;
        assert_non_null(t);
        for (i = 0; i < c->len; i++) {
            if (c->s[i] == '\n') {
                memcpy(t + n, ends[e], elen);
                n += elen;
            } else {
                t[n++] = c->s[i];
            }
        }
        snprintf(name, sizeof name, "%s (%s)", c->name, e == 0 ? "CRLF" : "CR");
        v.name = name;
        v.s = t;
        v.len = n;
        run_case(&v);
        free(t);
    }
}

#define CASE(nm, str, cp, ex, r, com, pend) \
    {nm, str, sizeof(str) - 1, cp, ex, N_OF(ex), r, com, pend}

/* ---- real provider streams ---- */

#define OAI_HEAD                                                                     \
    "{\"id\":\"chatcmpl-A1b2C3\",\"object\":\"chat.completion.chunk\",\"created\":" \
    "1718000000,\"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":"        \
    "\"fp_0ba0d124f1\","

static const char openai_stream[] =
    "data: " OAI_HEAD "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\","
    "\"content\":\"\",\"refusal\":null},\"logprobs\":null,\"finish_reason\":null}],"
    "\"usage\":null}\n\n"
    "data: " OAI_HEAD "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Bonjour\"},"
    "\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n"
    "data: " OAI_HEAD "\"choices\":[{\"index\":0,\"delta\":{\"content\":\" \xc3\xa7" "a va "
    "\xe2\x80\x94 \xf0\x9f\x98\x80\"},\"logprobs\":null,\"finish_reason\":null}],"
    "\"usage\":null}\n\n"
    "data: " OAI_HEAD "\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,"
    "\"finish_reason\":\"stop\"}],\"usage\":null}\n\n"
    "data: " OAI_HEAD "\"choices\":[],\"usage\":{\"prompt_tokens\":12,"
    "\"completion_tokens\":6,\"total_tokens\":18}}\n\n"
    "data: [DONE]\n\n";

static const exp_ev openai_events[] = {
    EV("", OAI_HEAD "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\","
           "\"content\":\"\",\"refusal\":null},\"logprobs\":null,\"finish_reason\":null}],"
           "\"usage\":null}", ""),
    EV("", OAI_HEAD "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Bonjour\"},"
           "\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}", ""),
    EV("", OAI_HEAD "\"choices\":[{\"index\":0,\"delta\":{\"content\":\" \xc3\xa7" "a va "
           "\xe2\x80\x94 \xf0\x9f\x98\x80\"},\"logprobs\":null,\"finish_reason\":null}],"
           "\"usage\":null}", ""),
    EV("", OAI_HEAD "\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,"
           "\"finish_reason\":\"stop\"}],\"usage\":null}", ""),
    EV("", OAI_HEAD "\"choices\":[],\"usage\":{\"prompt_tokens\":12,"
           "\"completion_tokens\":6,\"total_tokens\":18}}", ""),
    EV("", "[DONE]", ""),
};

static void test_openai_stream(void **state)
{
    const sse_case c = CASE("openai", openai_stream, 4096, openai_events, 0, 0, false);
    (void)state;
    run_all_line_ends(&c);
}

#define ANT_START                                                                          \
    "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_01XFDUDYJgAACzvnptvVoYEL\","     \
    "\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":"                 \
    "\"claude-3-5-sonnet-20241022\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":" \
    "{\"input_tokens\":25,\"output_tokens\":1}}}"
#define ANT_BLOCK_START \
    "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}"
#define ANT_DELTA(t) \
    "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"" t "\"}}"
#define ANT_BLOCK_STOP "{\"type\":\"content_block_stop\",\"index\":0}"
#define ANT_MSG_DELTA                                                                      \
    "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":" \
    "null},\"usage\":{\"output_tokens\":15}}"

static const char anthropic_stream[] =
    "event: message_start\ndata: " ANT_START "\n\n"
    "event: content_block_start\ndata: " ANT_BLOCK_START "\n\n"
    "event: ping\ndata: {\"type\": \"ping\"}\n\n"
    "event: content_block_delta\ndata: " ANT_DELTA("Hello") "\n\n"
    "event: content_block_delta\ndata: " ANT_DELTA("! \xe6\x97\xa5\xe6\x9c\xac") "\n\n"
    "event: content_block_stop\ndata: " ANT_BLOCK_STOP "\n\n"
    "event: message_delta\ndata: " ANT_MSG_DELTA "\n\n"
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

static const exp_ev anthropic_events[] = {
    EV("message_start", ANT_START, ""),
    EV("content_block_start", ANT_BLOCK_START, ""),
    EV("ping", "{\"type\": \"ping\"}", ""),
    EV("content_block_delta", ANT_DELTA("Hello"), ""),
    EV("content_block_delta", ANT_DELTA("! \xe6\x97\xa5\xe6\x9c\xac"), ""),
    EV("content_block_stop", ANT_BLOCK_STOP, ""),
    EV("message_delta", ANT_MSG_DELTA, ""),
    EV("message_stop", "{\"type\":\"message_stop\"}", ""),
};

static void test_anthropic_stream(void **state)
{
    const sse_case c = CASE("anthropic", anthropic_stream, 4096, anthropic_events, 0, 0, false);
    (void)state;
    run_all_line_ends(&c);
}

#define ANT_OVERLOADED \
    "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}"

static const char inband_error_stream[] =
    "event: message_start\ndata: " ANT_START "\n\n"
    "event: ping\ndata: {\"type\": \"ping\"}\n\n"
    "event: error\ndata: " ANT_OVERLOADED "\n\n";

static const exp_ev inband_error_events[] = {
    EV("message_start", ANT_START, ""),
    EV("ping", "{\"type\": \"ping\"}", ""),
    EV("error", ANT_OVERLOADED, ""),
};

static void test_inband_error_stream(void **state)
{
    const sse_case c =
        CASE("in-band error", inband_error_stream, 4096, inband_error_events, 0, 0, false);
    (void)state;
    run_all_line_ends(&c);
}

/* ---- the spec's rules ---- */

static void test_comments(void **state)
{
    static const char s[] = ": stream opened\n"
                            ":\n"
                            "data: a\n"
                            ": between data lines\n"
                            "data: b\n"
                            "\n"
                            ": keep-alive\n"
                            "\n"
                            ":data: not data\n"
                            "\n";
    static const exp_ev ev[] = {EV("", "a\nb", "")};
    const sse_case c = CASE("comments", s, 4096, ev, 0, 5, false);
    (void)state;
    run_all_line_ends(&c);
}

static void test_multiline_and_bare_fields(void **state)
{
    /* "data" alone is an empty data line; the final LF goes, inner ones stay;
     * the single space after the colon goes, a second one stays. */
    static const char s[] = "data:\n\n"
                            "data\ndata\n\n"
                            "data:line one\ndata: line two\ndata:  indented\ndata\n\n"
                            "event\ndata: e\n\n"
                            "event:\ndata: f\n\n"
                            "event:noSpace\ndata:x: y\n\n"
                            "unknown: field\nDATA: shouted\nEvent: no\ndata: g\n\n"
                            "unknown only\n\n"
                            "event: lonely\n\n"
                            "data: h\n\n";
    static const exp_ev ev[] = {
        EV("", "", ""),
        EV("", "\n", ""),
        EV("", "line one\nline two\n indented\n", ""),
        EV("", "e", ""),
        EV("", "f", ""),
        EV("noSpace", "x: y", ""),
        EV("", "g", ""),
        EV("", "h", ""), /* "event: lonely" had no data: reset, not dispatched */
    };
    const sse_case c = CASE("multi-line and bare fields", s, 4096, ev, 0, 0, false);
    (void)state;
    run_all_line_ends(&c);
}

static void test_wpt_field_parsing(void **state)
{
    /* web-platform-tests eventsource/format-field-parsing: NUL bytes, case,
     * odd names and mixed line ends in one event. */
    static const char s[] = "data:\0\ndata:  2\rData:1\ndata\0:2\ndata:1\r\0data:4\nda-ta:3\r"
                            "data_5\ndata:3\rdata:\r\n data:32\ndata:4\n\n";
    static const exp_ev ev[] = {EV("", "\0\n 2\n1\n3\n\n4", "")};
    const sse_case c = CASE("wpt field parsing", s, 4096, ev, 0, 0, false);
    (void)state;
    run_case(&c);
}

static void test_id_and_event_persistence(void **state)
{
    static const char s[] = "id: 1\ndata: a\n\n"
                            "data: b\n\n"        /* the last event id persists */
                            "id: 2\n\n"          /* set without dispatch, still kept */
                            "data: c\n\n"
                            "id\ndata: d\n\n"    /* a bare id clears it */
                            "id: 9\nid: x\0y\ndata: e\n\n" /* NUL: ignored, 9 stays */
                            "id: 3\nid: 4\ndata: f\n\n"
                            "event: foo\ndata: g\n\n"
                            "data: h\n\n"        /* the event type does not persist */
                            "event: bar\n\n"     /* reset even when nothing dispatched */
                            "data: i\n\n"
                            "data: j\nid: 5\n\n"; /* id after data counts for this event */
    static const exp_ev ev[] = {
        EV("", "a", "1"), EV("", "b", "1"),   EV("", "c", "2"),    EV("", "d", ""),
        EV("", "e", "9"), EV("", "f", "4"),   EV("foo", "g", "4"), EV("", "h", "4"),
        EV("", "i", "4"), EV("", "j", "5"),
    };
    const sse_case c = CASE("id and event persistence", s, 4096, ev, 0, 0, false);
    (void)state;
    run_all_line_ends(&c);
}

static void test_retry(void **state)
{
    static const char s[] = "retry: 1500\ndata: a\n\n"
                            "data: b\n\n"                /* per event: gone */
                            "retry: 15x\ndata: c\n\n"    /* not only digits */
                            "retry:\ndata: d\n\n"        /* empty */
                            "retry:  100\ndata: e\n\n"   /* " 100" is not digits */
                            "retry: -1\ndata: f\n\n"
                            "retry: 2000\n\ndata: g\n\n" /* a data-less block rides on */
                            "retry: 007\nretry: 1x\ndata: h\n\n"
                            "retry: 99999999999999999999999\ndata: i\n\n"
                            "retry:0\ndata: j\n\n";
    static const exp_ev ev[] = {
        EVR("", "a", "", 1500), EV("", "b", ""),       EV("", "c", ""),
        EV("", "d", ""),        EV("", "e", ""),       EV("", "f", ""),
        EVR("", "g", "", 2000), EVR("", "h", "", 7),   EVR("", "i", "", INT64_MAX),
        EVR("", "j", "", 0),
    };
    const sse_case c = CASE("retry", s, 4096, ev, 0, 0, false);
    (void)state;
    run_all_line_ends(&c);
}

static void test_bom(void **state)
{
    static const char one[] = "\xef\xbb\xbf" "data: 1\n\n";
    static const char two[] = "\xef\xbb\xbf\xef\xbb\xbf" "data: 1\n\ndata: 2\n\n";
    static const char half[] = "\xef\xbb" "data: 1\n\ndata: 2\n\n";
    static const char later[] = "data: 1\n\n\xef\xbb\xbf" "data: 2\n\n";
    static const char comment[] = "\xef\xbb\xbf: hi\ndata: 1\n\n";
    static const char bom_cr[] = "\xef\xbb\xbf\r\ndata: 1\n\n";
    static const exp_ev ev1[] = {EV("", "1", "")};
    static const exp_ev ev2[] = {EV("", "2", "")};
    /* Only the first BOM goes; a second one, or half of one, makes the first
     * field name unknown; a BOM later in the stream is never skipped. */
    const sse_case cases[] = {
        CASE("one BOM", one, 4096, ev1, 0, 0, false),
        CASE("two BOMs", two, 4096, ev2, 0, 0, false),
        CASE("half a BOM", half, 4096, ev2, 0, 0, false),
        CASE("late BOM", later, 4096, ev1, 0, 0, false),
        CASE("BOM then comment", comment, 4096, ev1, 0, 1, false),
        CASE("BOM then blank line", bom_cr, 4096, ev1, 0, 0, false),
    };
    size_t i;
    aigw_sse *p;
    (void)state;
    for (i = 0; i < N_OF(cases); i++)
        run_all_line_ends(&cases[i]);

    /* A BOM prefix alone is unfinished framing. */
    p = aigw__sse_new(64);
    assert_non_null(p);
    assert_int_equal(aigw__sse_feed(p, "\xef\xbb", 2, on_event, NULL), 0);
    assert_true(aigw__sse_pending(p));
    assert_int_equal(aigw__sse_feed(p, "\xbf", 1, on_event, NULL), 0);
    assert_false(aigw__sse_pending(p));
    aigw__sse_free(p);
}

static void test_cr_lf_across_feeds(void **state)
{
    /* A CR ending one feed and an LF starting the next are one line end: an
     * extra blank line would dispatch "a" alone. */
    aigw_sse *p = aigw__sse_new(64);
    recorder r = {0};
    static const exp_ev ev[] = {EV("", "a\nb", ""), EV("", "c", ""), EV("", "d", "")};
    (void)state;
    assert_non_null(p);
    assert_int_equal(aigw__sse_feed(p, "data: a\r", 8, on_event, &r), 0);
    assert_int_equal(aigw__sse_feed(p, "\n", 1, on_event, &r), 0);
    assert_int_equal(aigw__sse_feed(p, "data: b\r", 8, on_event, &r), 0);
    assert_int_equal(aigw__sse_feed(p, "\n\r", 2, on_event, &r), 0);
    check_events(&r, ev, 1, false, "CRLF across feeds");
    /* The LF after that blank CR line is its tail, not another line. */
    assert_int_equal(aigw__sse_feed(p, "\ndata: c\r\n\r", 11, on_event, &r), 0);
    check_events(&r, ev, 2, false, "CRLF across feeds");
    /* A CR then something other than LF: the CR was the whole line end. */
    assert_int_equal(aigw__sse_feed(p, "data: d\n\n", 9, on_event, &r), 0);
    check_events(&r, ev, 3, false, "CRLF across feeds");
    assert_false(aigw__sse_pending(p));
    aigw__sse_free(p);
    rec_clear(&r);
}

/* ---- pending ---- */

static void test_pending(void **state)
{
    static const struct {
        const char *s;
        bool pending;
    } t[] = {
        {"", false},
        {"data: x\n\n", false},
        {"data: x\n\ndata: y", true},  /* cut mid-line */
        {"data: x\n\ndata: y\n", true}, /* cut before the blank line */
        {"data: x\r", true},
        {"data: x\n\r", false},
        {"data: x\r\n\r", false},
        {"id: 7\n", true},               /* a block with fields, unfinished */
        {"event: e\nretry: 5\n\n", false},
        {": comment\n", false},
        {": comment", true},             /* a comment cut mid-line */
        {"unknown", true},
        {"data: [DONE]\n\n", false},
    };
    size_t i;
    (void)state;
    for (i = 0; i < N_OF(t); i++) {
        size_t len = strlen(t[i].s), k;
        for (k = 0; k <= len; k++) {
            aigw_sse *p = aigw__sse_new(64);
            recorder r = {0};
            assert_non_null(p);
            assert_int_equal(aigw__sse_feed(p, t[i].s, k, on_event, &r), 0);
            assert_int_equal(aigw__sse_feed(p, t[i].s + k, len - k, on_event, &r), 0);
            if (aigw__sse_pending(p) != t[i].pending)
                fail_msg("\"%s\" split at %zu: pending %d", t[i].s, k, aigw__sse_pending(p));
            aigw__sse_free(p);
            rec_clear(&r);
        }
    }
    assert_false(aigw__sse_pending(NULL));
    assert_int_equal(aigw__sse_comments(NULL), 0);
    aigw__sse_free(NULL);
}

/* ---- the cap ---- */

static void fill(char *dst, const char *head, char c, size_t total, const char *tail)
{
    size_t h = strlen(head);
    memcpy(dst, head, h);
    memset(dst + h, c, total - h);
    strcpy(dst + total, tail);
}

static void test_cap_single_line(void **state)
{
    /* cap 64: the line "data: " + 58 x is 64 bytes and fits; 59 x do not. */
    char fit[128], over[128], data58[64];
    exp_ev ev[2] = {EV("", "first", ""), EV("", "", "")};
    sse_case c;
    (void)state;
    memset(data58, 'x', 58);
    data58[58] = '\0';
    ev[1].data = data58;
    ev[1].data_len = 58;

    strcpy(fit, "data: first\n\n");
    fill(fit + 13, "data: ", 'x', 64, "\n\n");
    c = (sse_case){"cap: exactly", fit, strlen(fit), 64, ev, 2, 0, 0, false};
    run_all_line_ends(&c);

    strcpy(over, "data: first\n\n");
    fill(over + 13, "data: ", 'x', 65, "\n\ndata: after\n\n");
    c = (sse_case){"cap: one over", over, strlen(over), 64, ev, 1, AIGW_SSE_TOO_LARGE, 0, true};
    run_all_line_ends(&c);
}

static void test_cap_counts_held_bytes(void **state)
{
    /* What the event holds counts with the line: after "data: aaaa" (5 bytes
     * held, its LF included) a line of 59 fits, 60 does not.  The persistent
     * last event id counts too. */
    char s[256], fit_data[64], id_data[64];
    exp_ev ev_fit[] = {EV("", "", "")};
    exp_ev ev_id[] = {EV("", "1", "0123456789"), EV("", "", "0123456789")};
    sse_case c;
    (void)state;
    fill(fit_data, "aaaa\n", 'b', 5 + 53, "");
    ev_fit[0].data = fit_data;
    ev_fit[0].data_len = 58;
    memset(id_data, 'y', 48);
    id_data[48] = '\0';
    ev_id[1].data = id_data;
    ev_id[1].data_len = 48;

    strcpy(s, "data: aaaa\n");
    fill(s + 11, "data: ", 'b', 59, "\n\n");
    c = (sse_case){"cap: held data", s, strlen(s), 64, ev_fit, 1, 0, 0, false};
    run_all_line_ends(&c);
    strcpy(s, "data: aaaa\n");
    fill(s + 11, "data: ", 'b', 60, "\n\n");
    c = (sse_case){"cap: held data, over", s, strlen(s), 64, ev_fit, 0, AIGW_SSE_TOO_LARGE, 0,
                   true};
    run_all_line_ends(&c);

    /* id "0123456789" (10 held): "data: " + 48 y = 54 fits, 55 does not. */
    strcpy(s, "id: 0123456789\ndata: 1\n\n");
    fill(s + strlen(s), "data: ", 'y', 54, "\n\n");
    c = (sse_case){"cap: held id", s, strlen(s), 64, ev_id, 2, 0, 0, false};
    run_all_line_ends(&c);
    strcpy(s, "id: 0123456789\ndata: 1\n\n");
    fill(s + strlen(s), "data: ", 'y', 55, "\n\n");
    c = (sse_case){"cap: held id, over", s, strlen(s), 64, ev_id, 1, AIGW_SSE_TOO_LARGE, 0, true};
    run_all_line_ends(&c);

    /* An unknown field is held while it is read, so it is bounded too. */
    fill(s, "x-padding: ", 'p', 65, "\ndata: z\n\n");
    c = (sse_case){"cap: unknown field", s, strlen(s), 64, ev_id, 0, AIGW_SSE_TOO_LARGE, 0, true};
    run_case(&c);
}

static void test_cap_long_comment(void **state)
{
    /* A comment is never stored: 1 MiB of it with a 64-byte cap costs no
     * allocation, is no error, and counts once. */
    enum { CHUNK = 4096, CHUNKS = 256 };
    char *chunk = malloc(CHUNK);
    aigw_sse *p = aigw__sse_new(64);
    recorder r = {0};
    static const exp_ev ev[] = {EV("", "ok", ""), EV("", "fine", "")};
    long before;
    size_t i;
    (void)state;
    assert_non_null(chunk);
    assert_non_null(p);
    assert_int_equal(aigw__sse_feed(p, "data: ok\n\n", 10, on_event, &r), 0);
    memset(chunk, 'c', CHUNK);
    chunk[0] = ':';
    before = aigw__alloc_count();
    for (i = 0; i < CHUNKS; i++) {
        assert_int_equal(aigw__sse_feed(p, chunk, CHUNK, on_event, &r), 0);
        assert_true(aigw__sse_pending(p));
        chunk[0] = 'c';
    }
    assert_int_equal(aigw__alloc_count(), before);
    /* One buffer: comment end and an event. */
    memcpy(chunk, "cc\r\ndata: fine\r\n\r\n", 18);
    assert_int_equal(aigw__sse_feed(p, chunk, 18, on_event, &r), 0);
    check_events(&r, ev, 2, false, "long comment");
    assert_int_equal(aigw__sse_comments(p), 1);
    assert_false(aigw__sse_pending(p));
    aigw__sse_free(p);
    rec_clear(&r);
    free(chunk);
}

/* ---- the callback's stop value ---- */

static void test_callback_stop(void **state)
{
    static const char s[] = "data: one\n\nevent: e\ndata: two\n\ndata: three\n\n";
    static const exp_ev ev[] = {EV("", "one", ""), EV("e", "two", "")};
    static const int stops[] = {7, -5, AIGW_SSE_TOO_LARGE + 1};
    size_t len = sizeof s - 1, k, j;
    (void)state;
    for (j = 0; j < N_OF(stops); j++) {
        for (k = 0; k <= len; k++) {
            aigw_sse *p = aigw__sse_new(64);
            recorder r = {0};
            int rc;
            assert_non_null(p);
            r.stop_at = 2;
            r.stop_rc = stops[j];
            rc = aigw__sse_feed(p, s, k, on_event, &r);
            if (rc == 0)
                rc = aigw__sse_feed(p, s + k, len - k, on_event, &r);
            if (rc != stops[j])
                fail_msg("split at %zu: returned %d, want %d", k, rc, stops[j]);
            check_events(&r, ev, 2, false, "stop");
            aigw__sse_free(p);
            rec_clear(&r);
        }
    }
}

static void test_no_callback_and_bad_args(void **state)
{
    aigw_sse *p = aigw__sse_new(64);
    (void)state;
    assert_non_null(p);
    assert_int_equal(aigw__sse_feed(p, "data: x\n\n", 9, NULL, NULL), 0);
    assert_int_equal(aigw__sse_feed(p, NULL, 0, NULL, NULL), 0);
    assert_int_equal(aigw__sse_feed(p, NULL, 3, NULL, NULL), AIGW_EINVAL);
    assert_int_equal(aigw__sse_feed(NULL, "x", 1, NULL, NULL), AIGW_EINVAL);
    assert_false(aigw__sse_pending(p));
    aigw__sse_free(p);
}

/* ---- allocation failures ---- */

/* Feeds the Anthropic stream with the n-th allocation failing.  Returns
 * whether the failure was hit. */
static bool sweep_once(long n, int how)
{
    size_t len = sizeof anthropic_stream - 1, at = 0;
    aigw_sse *p;
    recorder r = {0};
    int rc = 0;
    long start = aigw__alloc_count();
    bool hit;

    aigw__alloc_fail_at(n);
    p = aigw__sse_new(4096);
    if (!p) {
        aigw__alloc_fail_at(0);
        return true;
    }
    while (rc == 0 && at < len) {
        size_t step = how == CUT_BYTES ? 1 : how == CUT_TWO ? len / 2 + 1 : 37;
        if (step > len - at)
            step = len - at;
        rc = aigw__sse_feed(p, anthropic_stream + at, step, on_event, &r);
        at += step;
    }
    hit = aigw__alloc_count() - start >= n;
    aigw__alloc_fail_at(0);
    if (rc != 0) {
        assert_int_equal(rc, AIGW_ENOMEM);
        assert_true(hit);
        /* Sticky, still answers, and what came before is intact. */
        assert_int_equal(aigw__sse_feed(p, "data: x\n\n", 9, on_event, &r), AIGW_ENOMEM);
        assert_true(aigw__sse_pending(p));
        check_events(&r, anthropic_events, N_OF(anthropic_events), true, "alloc sweep");
    } else {
        check_events(&r, anthropic_events, N_OF(anthropic_events), false, "alloc sweep");
    }
    aigw__sse_free(p);
    rec_clear(&r);
    return hit;
}

static void test_alloc_failures(void **state)
{
    static const int hows[] = {CUT_TWO, CUT_BYTES, CUT_RANDOM};
    size_t h;
    (void)state;
    for (h = 0; h < N_OF(hows); h++) {
        long n;
        for (n = 1; n < 100; n++)
            if (!sweep_once(n, hows[h]))
                break;
        assert_true(n > 2); /* the sweep failed the parser's allocations */
        assert_true(n < 100);
    }
}

/* In the steady state an event costs no allocation: the parser's buffers
 * are kept and reused, whatever the events' fields, line ends and the way
 * the stream is cut into reads. */
static int count_event(void *ctx, const aigw_sse_event *ev)
{
    (*(size_t *)ctx)++;
    (void)ev;
    return 0;
}

static void test_events_reuse_buffers(void **state)
{
    static const char *const events[] = {
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"tok\"}}]}\n\n",
        "event: content_block_delta\r\ndata: {\"type\":\"content_block_delta\"}\r\n\r\n",
        "id: 7\nretry: 10\ndata: a\ndata: b\n\n",
        ": keep-alive\r\r",
        "data:x\r\n\r\n",
    };
    char stream[4096];
    size_t len = 0, n = 0, k, cut;
    long before;
    int round;
    aigw_sse *p = aigw__sse_new(1 << 20);
    (void)state;
    assert_non_null(p);
    for (k = 0; k < 30; k++) {
        const char *e = events[k % N_OF(events)];
        memcpy(stream + len, e, strlen(e));
        len += strlen(e);
    }
    /* whole, then in reads cut anywhere; the first rounds grow the buffers
     * (a line held across reads needs one too) */
    assert_int_equal(aigw__sse_feed(p, stream, len, count_event, &n), 0);
    before = aigw__alloc_count();
    for (round = 0; round < 50; round++) {
        if (round == 1)
            before = aigw__alloc_count();
        for (k = 0; k < len; k = cut) {
            cut = k + 1 + (size_t)(round * 7 + k) % 97;
            if (cut > len)
                cut = len;
            assert_int_equal(aigw__sse_feed(p, stream + k, cut - k, count_event, &n), 0);
        }
    }
    assert_int_equal(aigw__alloc_count() - before, 0);
    assert_int_equal(n, 51 * 24);
    assert_false(aigw__sse_pending(p));
    aigw__sse_free(p);
}

/* Lines longer than the stretch the parser looks for a CR in at once
 * (sse.c's CR_WINDOW), with every line end, whole and cut. */
static void test_long_lines(void **state)
{
    static const char *const ends[] = {"\n", "\r\n", "\r"};
    enum { LONG = 9000 };
    char *s = malloc(3 * LONG + 64), *want = malloc(LONG + 1);
    size_t e, n, cut;
    (void)state;
    assert_non_null(s);
    assert_non_null(want);
    memset(want, 'x', LONG);
    want[LONG] = '\0';
    for (e = 0; e < N_OF(ends); e++) {
        size_t el = strlen(ends[e]);
        exp_ev ev[2];
        n = 0;
        /* a long event, then a short one after a line end of another kind */
        memcpy(s + n, "data: ", 6);
        n += 6;
        memset(s + n, 'x', LONG);
        n += LONG;
        memcpy(s + n, ends[e], el);
        n += el;
        memcpy(s + n, ends[e], el);
        n += el;
        memcpy(s + n, "data: y\r\n\n", 10);
        n += 10;
        ev[0] = (exp_ev)EV("", "", "");
        ev[0].data = want;
        ev[0].data_len = LONG;
        ev[1] = (exp_ev)EV("", "y", "");
        for (cut = 0; cut <= n; cut += cut < 20 || n - cut < 20 ? 1 : 997) {
            aigw_sse *p = aigw__sse_new(2 * LONG);
            recorder r = {0};
            assert_non_null(p);
            assert_int_equal(aigw__sse_feed(p, s, cut, on_event, &r), 0);
            assert_int_equal(aigw__sse_feed(p, s + cut, n - cut, on_event, &r), 0);
            check_events(&r, ev, 2, false, ends[e][0] == '\r' ? "long CR lines" : "long lines");
            assert_false(aigw__sse_pending(p));
            aigw__sse_free(p);
            rec_clear(&r);
        }
    }
    free(s);
    free(want);
}

/* ---- where a block may be read without the parser ---- */

/* aigw__sse_room: between events, the bytes a block may take beside the
 * last event id; 0 inside a block or a line, before the BOM is settled,
 * with a CR whose LF may follow, a "retry:" waiting for its event, after an
 * error. */
static void test_room(void **state)
{
    static const struct {
        const char *fed;
        size_t room; /* with max_event_bytes 64 */
    } cases[] = {
        {"", 0},                       /* the BOM not settled */
        {"da", 0},                     /* a line */
        {"data: x\n", 0},              /* a block */
        {"data: x\n\n", 64},
        {"\xef\xbb\xbf" "data: x\n\n", 64},
        {"event: e\n", 0},
        {"event: e\ndata: x\n\n", 64},
        {"id: abc\ndata: x\n\n", 61}, /* the id is held */
        {"id: abc\n\n", 61},
        {"data: x\n\r", 0},            /* its LF may come next */
        {"data: x\n\r\n", 64},
        {"data: x\r\r", 0},
        {"retry: 5\n\n", 0},           /* rides on the next event */
        {"retry: 5\n\ndata: x\n\n", 64},
        {": a comment\n", 64},
        {": a comm", 0},
        {"data: x\n\ndata: y", 0},
    };
    size_t i;
    (void)state;
    for (i = 0; i < N_OF(cases); i++) {
        aigw_sse *p = aigw__sse_new(64);
        assert_non_null(p);
        assert_int_equal(aigw__sse_feed(p, cases[i].fed, strlen(cases[i].fed), NULL, NULL), 0);
        if (aigw__sse_room(p) != cases[i].room)
            fail_msg("after \"%s\": room %zu, want %zu", cases[i].fed, aigw__sse_room(p),
                     cases[i].room);
        aigw__sse_free(p);
    }
    {
        aigw_sse *p = aigw__sse_new(8);
        assert_non_null(p);
        assert_int_equal(aigw__sse_feed(p, "data: 123456789\n", 16, NULL, NULL),
                         AIGW_SSE_TOO_LARGE);
        assert_int_equal(aigw__sse_room(p), 0); /* after an error */
        aigw__sse_free(p);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_openai_stream),
        cmocka_unit_test(test_anthropic_stream),
        cmocka_unit_test(test_inband_error_stream),
        cmocka_unit_test(test_comments),
        cmocka_unit_test(test_multiline_and_bare_fields),
        cmocka_unit_test(test_wpt_field_parsing),
        cmocka_unit_test(test_id_and_event_persistence),
        cmocka_unit_test(test_retry),
        cmocka_unit_test(test_bom),
        cmocka_unit_test(test_cr_lf_across_feeds),
        cmocka_unit_test(test_pending),
        cmocka_unit_test(test_cap_single_line),
        cmocka_unit_test(test_cap_counts_held_bytes),
        cmocka_unit_test(test_cap_long_comment),
        cmocka_unit_test(test_callback_stop),
        cmocka_unit_test(test_no_callback_and_bad_args),
        cmocka_unit_test(test_alloc_failures),
        cmocka_unit_test(test_events_reuse_buffers),
        cmocka_unit_test(test_long_lines),
        cmocka_unit_test(test_room),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
