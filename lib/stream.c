/*
 * stream.c - one streamed attempt.  Nothing reaches the caller before the
 * commit point (the first content-bearing event, or the end of a complete
 * answer without one), so everything before it fails over unseen; after it
 * a break is stream_failed, or a restart on the next model when the caller
 * opted in.
 */
#include "engine_int.h"

#if defined(__GNUC__) && defined(__SSE2__)
#include <emmintrin.h>
#endif
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>

/* After a finish reason, how long to wait for the rest (usage, [DONE]) of a
 * stream that does not end: it is complete, so not long. */
#define FINISH_GRACE_MS 1000
/* After [DONE], how long to wait for the body's end before calling it done. */
#define DONE_DRAIN_MS 200


/* ---- what one event says ---- */

/* The event types ("type") that mean something here, each with its one
 * effect: OpenAI Responses and Anthropic messages streams. */
typedef enum type_effect {
    TYPE_OTHER = 0,
    TYPE_ERROR,   /* an in-band error */
    TYPE_CONTENT, /* content: the commit point */
    TYPE_END,     /* the API's own end event */
    TYPE_DELTA    /* message_delta: a finish reason is delta.stop_reason */
} type_effect;

#define NAME(s) s, sizeof s - 1

static const struct {
    const char *name;
    size_t len;
    type_effect effect;
} event_types[] = {
    {NAME("error"), TYPE_ERROR},
    {NAME("response.failed"), TYPE_ERROR},
    {NAME("content_block_delta"), TYPE_CONTENT},
    {NAME("response.output_text.delta"), TYPE_CONTENT},
    {NAME("response.function_call_arguments.delta"), TYPE_CONTENT},
    {NAME("message_stop"), TYPE_END},
    {NAME("response.completed"), TYPE_END},
    {NAME("response.incomplete"), TYPE_END},
    {NAME("message_delta"), TYPE_DELTA},
};

/* What an object or array is to the reading.  Each sits at one level: the
 * event 0, its choices and delta 1, a choice 2, its delta 3, that delta's
 * tool_calls 4. */
typedef enum role {
    R_OTHER = 0, /* passed over (aigw__jscan_walk) */
    R_TEXT,    /* the event's data itself (around level 0) */
    R_EVENT,   /* the event: an object */
    R_CHOICES, /* its "choices": an array, or an object whose members count */
    R_CHOICE,  /* a chat completions choice */
    R_CDELTA,  /* a choice's "delta" */
    R_TOOLS,   /* that delta's "tool_calls" */
    R_EDELTA   /* the event's own "delta" (Anthropic's message_delta) */
} role;

/* What each role reads: the members whose names begin with these bytes
 * (read_value compares them whole), or all; the others are passed over,
 * at the cost of checking them. */
#define F AIGW_JFIRST

static const aigw_jwant wants[] = {
    [R_OTHER] = {false, 0, false}, /* not read: passed over */
    [R_TEXT] = {true, 0, false},
    [R_EVENT] = {false, F('c') | F('e') | F('t') | F('d'), false}, /* choices error type delta */
    [R_CHOICES] = {true, 0, false},
    /* index delta finish_reason; its close: end_choice */
    [R_CHOICE] = {false, F('i') | F('d') | F('f'), true},
    [R_CDELTA] = {false, F('c') | F('t') | F('f'), false}, /* content tool_calls function_call */
    [R_TOOLS] = {true, 0, false},
    [R_EDELTA] = {false, F('s') | F('t'), false}, /* stop_reason; text (the memo's vary) */
};

#undef F

/* One event read value by value.  The first member of each name counts, as
 * for cJSON_GetObjectItemCaseSensitive: a flag per name says it was seen. */
typedef struct ev_reader {
    /* the event's members */
    bool has_choices, has_error, has_type, has_delta, has_stop;
    bool error_null;
    type_effect type;
    bool stop; /* its delta.stop_reason is a non-empty string */
    /* the choice being read, and its delta */
    bool has_index, has_cdelta, has_finish, has_content, has_tools, has_function;
    bool index_number;
    double index;
    bool finish;
    bool content;
    aigw_event_facts got; /* from the choices read so far */
    /* the value being read */
    const aigw_jspan *key, *value;
    aigw_event_memo *memo; /* where places to resume are kept, or NULL */
} ev_reader;

/* Most events of a stream begin as the one before did, to the byte:
 * '{"id":"chatcmpl-..","object":"chat.completion.chunk","created":..,
 * "model":..,"choices":[{"index":0,"delta":{"content":' and only then
 * differ; Anthropic's '{"type":"content_block_delta","index":0,"delta":'
 * the same.  So the reading of an event keeps, at each member it reads,
 * where the walk was and what the reader knew (a mark), and the next
 * event, as far as its bytes are the same, is not read again: it resumes
 * at the last mark before the first byte that differs (aigw__jscan_walk_
 * from), with the reader's state of that moment.  What the walk did up to
 * a mark depends on the bytes before it alone, so the facts are the same
 * as a reading from the start (test_stream.c holds the two side by side,
 * a byte changed at every place). */
#define MEMO_MARKS 8
#define MEMO_TEXT 1024 /* marks past this are not kept */

typedef struct ev_mark {
    aigw_jmark at;
    ev_reader e; /* the reader before that member's value */
} ev_mark;

/* And most events differ from the one before only inside one string: a
 * chat chunk's "content", an Anthropic delta's "text".  The memo keeps the
 * last event whole (when it was JSON and fits) with its facts and where that
 * string lay (the vary); an event equal to it but for that string's bytes,
 * which still make one valid string there, says what the last one said (a
 * content string whose emptiness changed excepted) and is not walked at
 * all. */
#define NO_VARY ((size_t)-1)

struct aigw_event_memo {
    size_t n;          /* marks kept, in text order */
    size_t text_len;   /* the last event's first bytes, up to its last mark,
                          or all of them (whole) */
    aigw_jmark here;   /* the walk's place of the moment */
    const char *base;  /* the event being read (while it is) */
    bool whole;        /* text holds the last event whole, and it was JSON */
    aigw_event_facts facts; /* what it said (whole) */
    size_t vary_at, vary_len; /* its string's bytes (past the quote); NO_VARY: none */
    bool vary_content; /* that string is a choice's content (its emptiness counts) */
    bool vary_nonempty;
    bool hit;          /* the last event read was the last but one's but for the vary */
    signed char clean; /* the text but the vary holds no CR or LF: 1, -1 not, 0 not known */
    /* The marks past the vary move as its length changes: not each time,
     * but once they are needed (memo_settle); mark[split..n) owe shift. */
    bool owing;
    size_t split, shift;
    ev_mark mark[MEMO_MARKS];
    char text[MEMO_TEXT];
};

typedef struct sctx {
    run *r;
    aigw_attempt *a;
    aigw_transport_response *t;
    aigw_sse *sse;
    aigw_buf pre;       /* the bytes held back before the commit point */
    aigw_buf err_data;  /* an in-band error event's data */
    const aigw_secret *secret; /* the key's value: never handed on */
    aigw_buf held;      /* a delivered tail that may begin a copy of it */
    int64_t t0;
    int64_t first_token_deadline;
    bool started;       /* the first bytes came */
    bool ok_status;     /* 2xx */
    bool sse_mode;      /* text/event-stream */
    bool content;       /* a content event came: the commit point */
    bool committed;
    bool done;          /* [DONE] or the API's own end event */
    bool finished;      /* a finish reason */
    bool inband_error;
    bool too_large;
    bool first_token_expired;
    bool whole_expired; /* a whole (non-SSE or error) answer passed its deadline */
    bool cancelled;
    bool nomem;         /* an allocation failed: the request ends (AIGW_ENOMEM) */
    int64_t whole_deadline; /* perRequestTimeout / totalTimeout for whole answers */
    int64_t done_at;    /* when [DONE] (or the API's end event) came; -1 */
    int64_t now;        /* when the bytes being read came */
    uint64_t choices_seen;     /* chat choice indexes (< 64) seen ... */
    uint64_t choices_finished; /* ... and those with a finish_reason */
    aigw_event_memo memo; /* where the last event's reading may resume */
    /* Replay (replay()): the events that repeat the last one but for the
     * memo's vary, read straight from the bytes, not through the parser. */
    bool replay;        /* the last event read was such a repeat */
    bool yield_ok;      /* the parser may stop for replay in this read */
    unsigned replay_misses; /* parser stops in a row after which replay read
                               nothing */
    size_t type_len;    /* the last event's "event:" value, in type; past
                           sizeof type: too long to keep */
    char type[32];
    /* The read being fed before the commit point, not yet in pre: the
     * commit hands on what of it is read (cur_sent); after the feed the
     * rest goes on, or into pre when nothing committed. */
    const char *cur;
    size_t cur_len, cur_sent;
    size_t feed_base;   /* where in the read the parser's feed began (replay
                           reads what comes before it; it never commits) */
} sctx;

/* on_sse_event's return that stops the parser after an event that repeated
 * the one before: the next ones are likely repeats too (replay). */
#define REPLAY_NEXT 1
/* After this many such stops in a row with nothing for replay after them
 * (blocks that repeat but for an "id:" line, say), the parser no longer
 * stops: every stop costs a feed.  And after one in a read, not in that
 * read. */
#define REPLAY_MISSES 4

/* aigw__jspan_is for a name of n bytes, the common case (no escape) here
 * without a call: the reading compares every key with a few names. */
static inline bool span_is(const aigw_jspan *sp, const char *name, size_t n)
{
    if (!sp->p || sp->escaped)
        return aigw__jspan_is(sp, name);
    /* strcmp stops at a NUL byte in the text too */
    return (sp->len == n || (sp->len > n && sp->p[n] == '\0')) && memcmp(sp->p, name, n) == 0;
}

/* A mark at the member being read, the reader as it was before it. */
static void keep_mark(const ev_reader *e)
{
    aigw_event_memo *m = e->memo;
    if (m->n < MEMO_MARKS && m->here.depth && m->here.pos <= MEMO_TEXT) {
        m->mark[m->n].at = m->here;
        m->mark[m->n].e = *e;
        m->n++;
    }
}

/* Whether the member is the first one called name (a mark there: nothing
 * in the reader has changed for it yet). */
static inline bool key_is(const ev_reader *e, bool *seen, const char *name, size_t n)
{
    if (*seen || !span_is(e->key, name, n))
        return false;
    if (e->memo)
        keep_mark(e);
    *seen = true;
    return true;
}

static inline bool span_nonempty(const aigw_jspan *v)
{
    /* without an escape, at once: its first byte (a NUL ends it) */
    return v->escaped ? aigw__jspan_nonempty(v) : v->len > 0 && v->p[0] != '\0';
}

static bool nonempty_string(const ev_reader *e, aigw_jtok t)
{
    return t == AIGW_JTOK_STRING && span_nonempty(e->value);
}

/* The string value being read as the memo's vary (struct aigw_event_memo). */
static void keep_vary(const ev_reader *e, aigw_jtok t, bool content)
{
    aigw_event_memo *m = e->memo;
    if (!m || t != AIGW_JTOK_STRING)
        return;
    m->vary_at = (size_t)(e->value->p - m->base);
    m->vary_len = e->value->len;
    m->vary_content = content;
    m->vary_nonempty = span_nonempty(e->value);
}

/* aigw__jspan_number, a one-digit number (a choice's index) at once. */
static inline int number(const aigw_jspan *v, double *d)
{
    if (v->len == 1 && aigw__is_digit((unsigned char)v->p[0])) {
        *d = v->p[0] - '0';
        return 0;
    }
    return aigw__jspan_number(v, d);
}

static type_effect type_of(const ev_reader *e, aigw_jtok t)
{
    size_t k;
    if (t != AIGW_JTOK_STRING)
        return TYPE_OTHER;
    for (k = 0; k < sizeof event_types / sizeof *event_types; k++)
        if (span_is(e->value, event_types[k].name, event_types[k].len))
            return event_types[k].effect;
    return TYPE_OTHER;
}

static void begin_choice(ev_reader *e)
{
    e->has_index = e->has_cdelta = e->has_finish = false;
    e->has_content = e->has_tools = e->has_function = false;
    e->index_number = e->finish = e->content = false;
}

/* Chat completions: a role-only chunk is not content; with "n" > 1 the
 * answer is finished when every choice seen has its finish_reason. */
static void end_choice(ev_reader *e)
{
    uint64_t bit = 1;
    if (e->index_number && e->index >= 0 && e->index < 64)
        bit <<= (int)e->index;
    e->got.seen |= bit;
    if (e->content)
        e->got.content = true;
    if (e->finish)
        e->got.finished |= bit;
}

/* The value t inside a container of role parent: what it says, and in
 * *opens the role it plays if it is an object or array.  -1 out of memory. */
static int read_value(ev_reader *e, role parent, aigw_jtok t, role *opens)
{
    bool object = t == AIGW_JTOK_OBJECT;
    switch (parent) {
    case R_TEXT:
        *opens = object ? R_EVENT : R_OTHER;
        break;
    case R_EVENT:
        if (key_is(e, &e->has_choices, NAME("choices")))
            *opens = R_CHOICES;
        else if (key_is(e, &e->has_error, NAME("error")))
            e->error_null = t == AIGW_JTOK_NULL;
        else if (key_is(e, &e->has_type, NAME("type")))
            e->type = type_of(e, t);
        else if (key_is(e, &e->has_delta, NAME("delta")) && object)
            *opens = R_EDELTA;
        break;
    case R_EDELTA:
        if (key_is(e, &e->has_stop, NAME("stop_reason")))
            e->stop = nonempty_string(e, t);
        else if (span_is(e->key, NAME("text")))
            keep_vary(e, t, false); /* passed over: its bytes say nothing */
        break;
    case R_CHOICES:
        begin_choice(e);
        if (object)
            *opens = R_CHOICE;
        else
            end_choice(e); /* not an object: a choice without members */
        break;
    case R_CHOICE:
        if (key_is(e, &e->has_index, NAME("index"))) {
            if (t == AIGW_JTOK_NUMBER && number(e->value, &e->index) != 0)
                return -1;
            e->index_number = t == AIGW_JTOK_NUMBER;
        } else if (key_is(e, &e->has_cdelta, NAME("delta")) && object) {
            *opens = R_CDELTA;
        } else if (key_is(e, &e->has_finish, NAME("finish_reason"))) {
            e->finish = nonempty_string(e, t);
        }
        break;
    case R_CDELTA:
        if (key_is(e, &e->has_content, NAME("content"))) {
            e->content |= nonempty_string(e, t);
            keep_vary(e, t, true);
        }
        else if (key_is(e, &e->has_tools, NAME("tool_calls")) && t == AIGW_JTOK_ARRAY)
            *opens = R_TOOLS;
        else if (key_is(e, &e->has_function, NAME("function_call")) && object)
            e->content = true;
        break;
    case R_TOOLS:
        e->content = true; /* an element: tool_calls is not empty */
        break;
    case R_OTHER:
        break;
    }
    return 0;
}

/* aigw__jscan_walk's callbacks: a wanted value, and a close. */
static int on_value(void *ctx, int parent, aigw_jtok t, const aigw_jspan *key,
                    const aigw_jspan *value)
{
    ev_reader *e = ctx;
    role opens = R_OTHER;
    e->key = key;
    e->value = value;
    if (read_value(e, (role)parent, t, &opens) != 0)
        return -1;
    return (int)opens;
}

static int on_close(void *ctx, int r)
{
    (void)r; /* R_CHOICE: the one role whose close is wanted */
    end_choice(ctx);
    return 0;
}

/* How many first bytes a and b share. */
static size_t same_prefix(const char *a, size_t alen, const char *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen, i = 0;
#if defined(__GNUC__) && defined(__SSE2__)
    while (n - i >= 16) {
        unsigned eq = (unsigned)_mm_movemask_epi8(
            _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(const void *)(a + i)),
                           _mm_loadu_si128((const __m128i *)(const void *)(b + i))));
        if (eq != 0xFFFFu)
            return i + (size_t)__builtin_ctz(~eq);
        i += 16;
    }
#endif
    while (i < n && a[i] == b[i])
        i++;
    return i;
}

/* The memo takes the event of len bytes at data as its last one: the same
 * but for the vary's bytes, whose closing quote is now at q_new.  Its
 * bytes, the vary's length, the marks past the vary moved. */
static void memo_take(aigw_event_memo *m, const char *data, size_t len, size_t q_new)
{
    size_t o = m->text_len, q_old = m->vary_at + m->vary_len;
    if (!m->owing) { /* the marks in text order: those past the vary */
        for (m->split = 0; m->split < m->n && m->mark[m->split].at.pos <= q_old; m->split++)
            ;
        m->shift = 0;
        m->owing = true;
    }
    m->shift += len - o; /* modulo SIZE_MAX + 1: the sum is what counts */
    memcpy(m->text + m->vary_at, data + m->vary_at, len - m->vary_at);
    m->text_len = len;
    m->vary_len = q_new - m->vary_at;
}

/* The marks where the memo's text has them (memo_take).  Each lies in the
 * whole event the text holds, so within MEMO_TEXT; kept so regardless. */
static void memo_settle(aigw_event_memo *m)
{
    size_t i;
    if (!m->owing)
        return;
    m->owing = false;
    for (i = m->split; i < m->n; i++) {
        aigw_jmark *at = &m->mark[i].at;
        if (at->pos + m->shift > MEMO_TEXT) {
            m->n = i;
            break;
        }
        at->pos += m->shift;
        at->key_at += m->shift;
    }
}

/* Whether the vary's new bytes (sp) say what the old ones did: the same
 * emptiness, when that counts. */
static inline bool vary_agrees(const aigw_event_memo *m, const aigw_jspan *sp)
{
    return !m->vary_content || span_nonempty(sp) == m->vary_nonempty;
}

/* Whether the event (len bytes, the same as the memo's whole last event up
 * to the vary's opening quote and with it) is the last one
 * but for the vary's bytes, which make one string there as the reading
 * would take it, of the same emptiness when that counts.  If so the memo
 * takes it as its last event (memo_take). */
static bool same_but_vary(aigw_event_memo *m, const char *data, size_t len)
{
    size_t o = m->text_len, q_old, q_new, end;
    aigw_jspan sp;
    if (m->vary_at == NO_VARY || len > MEMO_TEXT)
        return false;
    q_old = m->vary_at + m->vary_len; /* the closing quote */
    if (len + q_old < o)
        return false; /* too short to hold the bytes after the vary */
    q_new = q_old + len - o;
    if (q_new < m->vary_at || memcmp(m->text + q_old, data + q_new, o - q_old) != 0)
        return false;
    end = aigw__jscan_string_end(data, len, m->vary_at - 1, &sp);
    if (end != q_new + 1 || !vary_agrees(m, &sp))
        return false;
    memo_take(m, data, len, q_new);
    return true;
}

/* Read in one pass as it is checked, not parsed: a cJSON tree per event
 * cost ~26 allocations and most of a streamed request's instructions.  The
 * values come as cJSON would read them, the members count as in its tree;
 * what no role wants is checked and passed over.  With a memo, from the
 * last mark the event shares with the one before (struct aigw_event_memo). */
static int read_event(aigw_event_memo *m, const char *data, size_t len, aigw_event_facts *f)
{
    ev_reader e;
    aigw_jwalk w;
    aigw_jmark at;
    size_t k = 0, start = 0, end;
    int rc;
    memset(f, 0, sizeof *f);
    w.wants = wants;
    w.value = on_value;
    w.close = on_close;
    w.ctx = &e;
    w.here = NULL;
    if (m && data) {
        size_t common;
        /* the bytes before the vary's quote first (libc's memcmp: these are
         * most of the event), then the rest */
        if (m->whole && m->vary_at != NO_VARY && len >= m->vary_at &&
            memcmp(m->text, data, m->vary_at) == 0 && same_but_vary(m, data, len)) {
            *f = m->facts;
            m->hit = true;
            return 0;
        }
        m->hit = false;
        m->clean = 0;
        memo_settle(m);
        common = same_prefix(m->text, m->text_len, data, len);
        for (k = m->n; k > 0 && m->mark[k - 1].at.pos > common; k--)
            ;
        w.here = &m->here;
        m->base = data;
        m->whole = false;
    }
    if (k > 0) {
        /* the mark is made again as its member is read */
        at = m->mark[k - 1].at;
        e = m->mark[k - 1].e;
        m->n = k - 1;
        start = at.pos;
        /* a vary past the mark is read again, or gone */
        if (m->vary_at != NO_VARY && m->vary_at > start)
            m->vary_at = NO_VARY;
        rc = aigw__jscan_walk_from(data, len, &at, &w);
    } else {
        memset(&e, 0, sizeof e);
        if (m) {
            m->n = 0;
            m->vary_at = NO_VARY;
            e.memo = w.here ? m : NULL;
        }
        rc = aigw__jscan_walk(data, len, R_TEXT, &w);
    }
    if (rc == 0) {
        if ((!e.has_choices && e.has_error && !e.error_null) || e.type == TYPE_ERROR) {
            f->error = true;
        } else {
            *f = e.got;
            if (e.type == TYPE_CONTENT)
                f->content = true;
            f->done = e.type == TYPE_END;
            f->stop = e.type == TYPE_DELTA && e.stop;
        }
    }
    if (m && data) {
        m->base = NULL;
        if (rc == 0 && len <= MEMO_TEXT) {
            /* the bytes before start are the same */
            memcpy(m->text + start, data + start, len - start);
            m->text_len = len;
            m->whole = true;
            m->facts = *f;
        } else {
            end = rc == 0 && m->n ? m->mark[m->n - 1].at.pos : 0;
            if (end > start)
                memcpy(m->text + start, data + start, end - start);
            m->text_len = end;
            if (!end)
                m->n = 0;
        }
    }
    return rc; /* 0, or 1: not JSON, -1: out of memory */
}

int aigw__stream_event_read(const char *data, size_t len, aigw_event_facts *f)
{
    return read_event(NULL, data, len, f);
}

int aigw__stream_event_read_memo(aigw_event_memo *m, const char *data, size_t len,
                                 aigw_event_facts *f)
{
    return read_event(m, data, len, f);
}

aigw_event_memo *aigw__event_memo_new(void)
{
    return aigw__calloc(1, sizeof(aigw_event_memo));
}

void aigw__event_memo_free(aigw_event_memo *m)
{
    aigw__free(m);
}

/* Adds what one event said to what the stream has said: idempotent (the
 * same facts again change nothing), which replay relies on. */
static void note_event(sctx *s, const aigw_event_facts *f)
{
    if (f->error) {
        s->inband_error = true;
        return;
    }
    if (f->content)
        s->content = true;
    if (f->done)
        s->done = true;
    if (f->stop)
        s->finished = true;
    s->choices_seen |= f->seen;
    s->choices_finished |= f->finished;
    if (s->choices_seen && (s->choices_finished & s->choices_seen) == s->choices_seen)
        s->finished = true;
}

static int commit(sctx *s);

static int on_sse_event(void *ctx, const aigw_sse_event *ev)
{
    sctx *s = ctx;
    aigw_event_facts f;
    int rc;
    s->replay = false;
    /* after an in-band error nothing counts: content behind it in the same
     * read must not commit a failed attempt */
    if (s->inband_error)
        return 0;
    if (ev->data_len == 6 && memcmp(ev->data, "[DONE]", 6) == 0) {
        s->done = true;
        return 0;
    }
    if (s->done)
        return 0;
    if (ev->event_len == 5 && memcmp(ev->event, "error", 5) == 0) {
        s->inband_error = true;
    } else if ((rc = read_event(&s->memo, ev->data, ev->data_len, &f)) < 0) {
        s->nomem = true; /* the event cannot be read */
        return -1;
    } else if (rc > 0) {
        /* Decided: an event whose data is not JSON is skipped and counted;
         * the stream goes on. */
        s->a->malformed_events++;
        return 0;
    } else {
        note_event(s, &f);
        /* The commit point is this event, not the end of the read that
         * holds it: the caller has the first content as soon as it is
         * read, and where reads split the stream changes nothing (content,
         * then an in-band error, fails after the commit point whether
         * they came in one read or two).  The caller gets the bytes
         * through this event now (commit), the read's later bytes once
         * their events are read (on_stream_data). */
        if (s->content && !s->committed) {
            if (s->a->first_token_ms < 0)
                s->a->first_token_ms = s->now - s->t0;
            if (commit(s) != 0)
                return -1;
        }
        if (ev->event_len <= sizeof s->type)
            memcpy(s->type, ev->event, ev->event_len);
        s->type_len = ev->event_len;
        s->replay = s->memo.hit;
        if (s->replay && s->yield_ok)
            return REPLAY_NEXT;
    }
    if (s->inband_error && !s->err_data.len &&
        aigw__buf_append(&s->err_data, ev->data, ev->data_len) != 0) {
        s->nomem = true;
        return -1;
    }
    return 0;
}

static int pass(sctx *s, const char *data, size_t len)
{
    const aigw_stream_handler *h = s->r->sh;
    if (len && h->on_data && h->on_data(s->r->sud, data, len) != 0) {
        s->cancelled = true;
        return -1;
    }
    return 0;
}

/* The length of the longest tail of p[0..n) that is a proper prefix of the
 * secret: bytes that may begin a copy the next read completes. */
static size_t secret_tail(const char *p, size_t n, const aigw_secret *k)
{
    size_t m = n < k->len - 1 ? n : k->len - 1;
    const char *q;
    for (; m > 0; m--) {
        if (!(q = memchr(p + n - m, k->value[0], m)))
            return 0;
        m = (size_t)(p + n - q); /* the next candidate start */
        if (memcmp(q, k->value, m) == 0)
            return m;
    }
    return 0;
}

/* Hands bytes to the caller with every verbatim copy of the key's value
 * replaced, as a whole answer's are (upstream.c): a copy split across reads
 * is caught by holding back a tail that could begin one until the next
 * read tells. */
static int deliver(sctx *s, const char *data, size_t len)
{
    static const char red[] = AIGW_REDACTED;
    const aigw_secret *k = s->secret;
    aigw_buf work = AIGW_BUF_INIT, out = AIGW_BUF_INIT;
    const char *p, *end, *hit;
    size_t keep;
    int rc = -1;
    if (len == 0) /* nothing (an empty held-back body: data may be NULL) */
        return 0;
    if (!k || k->len == 0)
        return pass(s, data, len);
    if (s->held.len) { /* the held tail first, then the new bytes */
        if (aigw__buf_append(&s->held, data, len) != 0)
            goto nomem;
        work = s->held;
        memset(&s->held, 0, sizeof s->held);
        data = work.data;
        len = work.len;
    }
    p = data;
    end = data + len;
    while ((hit = aigw__secret_find(p, (size_t)(end - p), k->value, k->len)) != NULL) {
        if (aigw__buf_append(&out, p, (size_t)(hit - p)) != 0 ||
            aigw__buf_append(&out, red, sizeof red - 1) != 0)
            goto nomem;
        p = hit + k->len;
    }
    keep = secret_tail(p, (size_t)(end - p), k);
    if (keep && aigw__buf_append(&s->held, end - keep, keep) != 0)
        goto nomem;
    if (out.len) {
        if (aigw__buf_append(&out, p, (size_t)(end - p) - keep) != 0)
            goto nomem;
        rc = pass(s, out.data, out.len);
    } else {
        rc = pass(s, data, len - keep);
    }
    goto done;
nomem:
    s->nomem = true;
done:
    aigw__buf_free(&work);
    aigw__buf_free(&out);
    return rc;
}

/* The commit point: status and headers, then what was held back. */
static int commit(sctx *s)
{
    const aigw_stream_handler *h = s->r->sh;
    aigw_header *hv = aigw__calloc(s->t->headers.n ? s->t->headers.n : 1, sizeof *hv);
    size_t i, n = 0;
    int rc = 0;
    if (!hv) {
        s->nomem = true;
        return -1;
    }
    for (i = 0; i < s->t->headers.n; i++)
        if (!aigw__hop_by_hop(s->t->headers.v[i].name)) {
            hv[n].name = s->t->headers.v[i].name;
            hv[n].value = s->t->headers.v[i].value;
            if (s->secret && s->secret->len && strstr(hv[n].value, s->secret->value))
                hv[n].value = AIGW_REDACTED;
            n++;
        }
    s->committed = true;
    if (h->version >= 2 && h->on_commit &&
        h->on_commit(s->r->sud, s->r->resp->request_id, s->a) != 0) {
        s->cancelled = true;
        rc = -1;
    } else if (h->on_start && h->on_start(s->r->sud, s->t->status, hv, n) != 0) {
        s->cancelled = true;
        rc = -1;
    }
    aigw__free(hv);
    if (rc == 0)
        rc = deliver(s, s->pre.data, s->pre.len);
    aigw__buf_free(&s->pre);
    /* in the feed of a read: the caller has its bytes through this event
     * at once; the rest of the read after its events are read */
    if (rc == 0 && s->cur) {
        s->cur_sent = s->feed_base + aigw__sse_fed(s->sse);
        rc = deliver(s, s->cur, s->cur_sent);
    }
    return rc;
}

/* ---- replay: the events that repeat the last one ---- */

#ifdef AIGW_ALLOC_HOOKS
static atomic_long replayed; /* the test hooks' count and switch */
static atomic_bool replay_off;

long aigw__stream_replay(int on)
{
    if (on >= 0)
        atomic_store(&replay_off, !on);
    return atomic_load(&replayed);
}
#define COUNT_REPLAYED(n) atomic_fetch_add(&replayed, (long)(n))
#define REPLAY_ON() (!atomic_load_explicit(&replay_off, memory_order_relaxed))
#else
long aigw__stream_replay(int on)
{
    (void)on;
    return 0;
}
#define COUNT_REPLAYED(n) ((void)(n))
#define REPLAY_ON() true
#endif

/* The first '"', '\\', LF or CR in s[i..len), or len. */
static inline size_t string_stop(const char *s, size_t i, size_t len)
{
#if defined(__GNUC__) && defined(__SSE2__)
    const __m128i q = _mm_set1_epi8('"'), b = _mm_set1_epi8('\\');
    const __m128i lf = _mm_set1_epi8('\n'), cr = _mm_set1_epi8('\r');
    while (len - i >= 16) {
        __m128i w = _mm_loadu_si128((const __m128i *)(const void *)(s + i));
        unsigned m = (unsigned)_mm_movemask_epi8(
            _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(w, q), _mm_cmpeq_epi8(w, b)),
                         _mm_or_si128(_mm_cmpeq_epi8(w, lf), _mm_cmpeq_epi8(w, cr))));
        if (m)
            return i + (size_t)__builtin_ctz(m);
        i += 16;
    }
#endif
    while (i < len && s[i] != '"' && s[i] != '\\' && s[i] != '\n' && s[i] != '\r')
        i++;
    return i;
}

/* In data[0..avail), whose bytes through the vary's opening quote are the
 * memo's, a vary with an escape: where its string closes, its span in *sp,
 * when it is a string the reading takes (its own rules) and holds no CR or
 * LF (an SSE line would end there); 0 otherwise. */
static size_t escaped_vary_close(const aigw_event_memo *m, const char *data, size_t avail,
                                 aigw_jspan *sp)
{
    size_t e = aigw__jscan_string_end(data, avail, m->vary_at - 1, sp);
    if (!e || memchr(sp->p, '\n', sp->len) || memchr(sp->p, '\r', sp->len))
        return 0;
    return e - 1;
}

/* Whether the memo's last event may be repeated (replay): whole, read as
 * JSON, not an error, with a vary, and no CR or LF outside it. */
static bool replayable(aigw_event_memo *m)
{
    if (!m->whole || m->vary_at == NO_VARY || m->facts.error)
        return false;
    if (m->clean == 0) {
        size_t q = m->vary_at + m->vary_len, t = m->text_len - q;
        m->clean = !memchr(m->text, '\n', m->vary_at) && !memchr(m->text, '\r', m->vary_at) &&
                           !memchr(m->text + q, '\n', t) && !memchr(m->text + q, '\r', t)
                       ? 1
                       : -1;
    }
    return m->clean > 0;
}

/* Reads from p[0..n) the events that repeat the last one but for the memo's
 * vary, straight from the bytes: each an "event:" line with the last one's
 * type (when it had one), a "data:" line that is the last event's data but
 * for the vary, and a blank line, LF ends.  Such a block is one event to the
 * parser too, whose state it leaves as it was (aigw__sse_room); its data
 * says what the last one's did (read_event's hit): facts note_event took
 * when that one was read, so taking them again would change nothing (it is
 * idempotent, and a commit point they make is passed).  Stops at the first
 * block that is not one; returns the bytes read.
 *
 * From one vary's closing quote to the next one's first byte the bytes of
 * such blocks are the same (the gap): the tail of the data, the blank line,
 * the next block's head and its data up to the vary.  So a block costs a
 * scan of its vary and one compare of the gap after it, which checks its
 * end and the next one's beginning. */
static size_t replay(sctx *s, const char *p, size_t n)
{
    aigw_event_memo *m = &s->memo;
    size_t room = aigw__sse_room(s->sse), tl = s->type_len, va = m->vary_at, i = 0;
    size_t tail, head = 0, glen, open, last_open = 0, last_q = 0, k = 0, q_max;
    /* the data but the vary, the blank line, "event: " type LF "data: " */
    char gap[MEMO_TEXT + 2 + 7 + sizeof s->type + 1 + 6];
    /* after the end or an in-band error on_sse_event reads nothing */
    if (!room || s->done || s->inband_error || tl > sizeof s->type || !REPLAY_ON() ||
        !replayable(m))
        return 0;
    tail = m->text_len - va - m->vary_len; /* from the vary's closing quote */
    /* the first block's head and its data up to the vary */
    if (tl) {
        if (n < 8 + tl || memcmp(p, "event:", 6) != 0)
            return 0;
        head = p[6] == ' ' ? 7 : 6;
        if (memcmp(p + head, s->type, tl) != 0 || p[head + tl] != '\n')
            return 0;
        head += tl + 1;
    }
    if (n - head < 6 || memcmp(p + head, "data:", 5) != 0)
        return 0;
    head += p[head + 5] == ' ' ? 6 : 5;
    if (n - head < va || memcmp(p + head, m->text, va) != 0)
        return 0;
    glen = tail + 2 + head + va;
    if (glen > sizeof gap) /* cannot be: text_len <= MEMO_TEXT */
        return 0;
    memcpy(gap, m->text + va + m->vary_len, tail);
    gap[tail] = gap[tail + 1] = '\n';
    memcpy(gap + tail + 2, p, head);
    memcpy(gap + tail + 2 + head, m->text, va);
    /* a block's data, q + tail bytes (q: its vary's closing quote, va at
     * least), must fit in the memo, and the whole block, head + q + tail + 2
     * bytes, in the room: q <= q_max */
    if (room < head + va + tail + 2)
        return 0;
    q_max = room - head - tail - 2;
    if (q_max > MEMO_TEXT - tail)
        q_max = MEMO_TEXT - tail;
    /* open: where the block's vary begins, its head and data before the
     * vary checked */
    for (open = head + va;;) {
        size_t q, close, e = string_stop(p, open, n);
        if (e < n && p[e] == '"') { /* the common vary: no escape */
            const aigw_jspan sp = {p + open, e - open, false};
            if (!vary_agrees(m, &sp))
                break;
            q = e - (open - va);
        } else {
            aigw_jspan sp;
            if (e == n || p[e] != '\\' ||
                !(q = escaped_vary_close(m, p + open - va, n - (open - va), &sp)) ||
                !vary_agrees(m, &sp))
                break;
        }
        if (q > q_max)
            break;
        close = open - va + q;
        if (n - close >= glen && memcmp(p + close, gap, glen) == 0) {
            /* this block whole, and the next one up to its vary */
            last_open = open;
            last_q = q;
            i = close + tail + 2;
            open = close + glen;
            k++;
            continue;
        }
        if (n - close >= tail + 2 && memcmp(p + close, gap, tail + 2) == 0) {
            last_open = open; /* this block whole, the next one not such */
            last_q = q;
            i = close + tail + 2;
            k++;
        }
        break;
    }
    COUNT_REPLAYED(k);
    if (last_open)
        memo_take(m, p + last_open - va, last_q + tail, last_q);
    return i;
}

/* The events of a read: the repeats by replay, the rest through the
 * parser.  The parser's return (0, or what ends the stream). */
static int read_events(sctx *s, const char *data, size_t len)
{
    size_t off = 0, got;
    bool stopped = false;
    int rc;
    s->yield_ok = s->replay_misses < REPLAY_MISSES && REPLAY_ON();
    for (;;) {
        if (s->replay) {
            got = replay(s, data + off, len - off);
            if (got) {
                s->replay_misses = 0;
            } else if (stopped && off < len) { /* the parser stopped for nothing */
                s->yield_ok = false;
                s->replay_misses++;
            }
            off += got;
        }
        s->feed_base = off;
        rc = aigw__sse_feed(s->sse, data + off, len - off, on_sse_event, s);
        if (rc != REPLAY_NEXT)
            return rc;
        off += aigw__sse_fed(s->sse);
        stopped = true;
    }
}

/* The first bytes (or the end of an answer without any): what kind it is. */
static void note_start(sctx *s, int64_t now)
{
    const char *ct = aigw__hdrs_get(&s->t->headers, "content-type");
    s->started = true;
    s->a->first_byte_ms = now - s->t0;
    s->ok_status = s->t->status >= 200 && s->t->status < 300;
    s->sse_mode = s->ok_status && ct && aigw__strncasecmp(ct, "text/event-stream", 17) == 0;
}

static int64_t on_stream_data(void *ctx, const char *data, size_t len)
{
    sctx *s = ctx;
    const aigw_config *cfg = s->r->cfg;
    int64_t now = aigw__run_now(s->r);
    int rc;
    s->now = now;
    if (!s->started)
        note_start(s, now);
    /* after the end: drain to the body's own end, briefly, passing nothing */
    if (s->done)
        return s->done_at + DONE_DRAIN_MS > now ? s->done_at + DONE_DRAIN_MS - now : 0;
    if (s->committed) {
        if (deliver(s, data, len) != 0)
            return -1;
    } else {
        if (s->pre.len + len > cfg->max_response_bytes) {
            s->too_large = true;
            return -1;
        }
        if (s->sse_mode) { /* read where it lies; kept after the feed */
            s->cur = data;
            s->cur_len = len;
            s->cur_sent = 0;
        } else if (aigw__buf_append(&s->pre, data, len) != 0) {
            s->nomem = true;
            return -1;
        }
    }
    if (!s->sse_mode) { /* a whole answer: kept until it ends, in its time */
        int64_t left = s->whole_deadline - now;
        if (left <= 0) {
            s->whole_expired = true;
            return -1;
        }
        return left < cfg->stream_idle_timeout_ms ? left : cfg->stream_idle_timeout_ms;
    }
    rc = read_events(s, data, len);
    s->nomem |= rc == AIGW_ENOMEM; /* the request ends: nothing more handed on */
    if (s->cur) {
        const char *rest = s->cur + s->cur_sent;
        size_t n = s->cur_len - s->cur_sent;
        s->cur = NULL;
        if (!s->committed) {
            if (aigw__buf_append(&s->pre, rest, n) != 0) {
                s->nomem = true;
                return -1;
            }
        } else if (!s->cancelled && !s->nomem && deliver(s, rest, n) != 0) {
            return -1;
        }
    }
    if (rc != 0) {
        if (s->cancelled) /* the caller, at the commit point */
            return -1;
        s->nomem |= rc == AIGW_ENOMEM;
        if (!s->nomem)
            s->a->stream_error = "event_too_large";
        return -1;
    }
    /* a complete answer that had no content (content commits as it is
     * read: on_sse_event) */
    if (!s->committed && !s->inband_error && (s->content || s->done || s->finished) &&
        commit(s) != 0)
        return -1;
    if (s->inband_error)
        return -1;
    /* Complete.  Reading on to the body's own end (briefly) keeps the
     * connection reusable; stopping here would make libcurl drop it. */
    if (s->done) {
        s->done_at = now;
        return DONE_DRAIN_MS;
    }
    if (!s->committed) {
        if (now >= s->first_token_deadline) {
            s->first_token_expired = true;
            return -1;
        }
        return s->first_token_deadline - now;
    }
    return s->finished && cfg->stream_idle_timeout_ms > FINISH_GRACE_MS ? FINISH_GRACE_MS
                                                                       : cfg->stream_idle_timeout_ms;
}

/* Why a committed stream is not a success, or NULL when it is. */
static const char *stream_break(const sctx *s, aigw_transport_result tr)
{
    if (s->inband_error)
        return "inband_error";
    if (s->a->stream_error)
        return s->a->stream_error;
    if (s->done)
        return NULL; /* the whole answer came; how the connection ended is moot */
    if (!s->sse_mode && tr == AIGW_TR_OK)
        return NULL; /* a whole (non-SSE) answer that came complete */
    if (s->finished && (tr == AIGW_TR_OK || tr == AIGW_TR_TIMEOUT) && !aigw__sse_pending(s->sse))
        return NULL; /* a clean end, or the grace after a finish reason ran out */
    if (tr == AIGW_TR_TIMEOUT)
        return "idle_timeout";
    if (tr != AIGW_TR_OK)
        return "connection_cut";
    return aigw__sse_pending(s->sse) ? "malformed_framing" : "ended_without_finish";
}

/* The class of a streamed attempt that never reached the commit point
 * (s->nomem when its error body could not be read for lack of memory). */
static aigw_class classify_uncommitted(sctx *s, aigw_transport_result *tr, int64_t *wait)
{
    aigw_transport_response *t = s->t;
    if (s->whole_expired) {
        *tr = AIGW_TR_TIMEOUT;
        return AIGW_CLASS_TIMEOUT;
    }
    /* Before the commit point the only deadline in force for a stream is
     * the first token's (capped by totalTimeout). */
    if (s->first_token_expired || (*tr == AIGW_TR_TIMEOUT && (s->ok_status || !s->started))) {
        *tr = AIGW_TR_TIMEOUT;
        s->a->stream_error = "first_token_timeout";
        return AIGW_CLASS_TIMEOUT;
    }
    if (s->too_large)
        *tr = AIGW_TR_TOO_LARGE;
    if (s->inband_error) {
        /* an error event on a 200: a server-side failure, overloaded when it
         * says so (Anthropic's overloaded_error) */
        *tr = AIGW_TR_OK;
        s->a->stream_error = "inband_error";
        return aigw__classify_checked(AIGW_TR_OK, 500, &t->headers, s->err_data.data,
                                      s->err_data.len, aigw__unix_ms(), wait, &s->nomem);
    }
    if (*tr == AIGW_TR_OK && s->ok_status && s->sse_mode && !s->a->stream_error) {
        s->a->stream_error = "ended_before_first_token";
        *tr = AIGW_TR_RESET;
    }
    if (s->a->stream_error && *tr == AIGW_TR_CANCELLED)
        *tr = AIGW_TR_PROTOCOL; /* an event past maxEventBytes */
    return aigw__classify_checked(*tr, *tr == AIGW_TR_OK ? t->status : 0, &t->headers,
                                  s->pre.data, s->pre.len, aigw__unix_ms(), wait, &s->nomem);
}

/* The request ends cancelled by the caller's callback. */
static int end_cancelled(sctx *s, aigw_attempt *a)
{
    run *r = s->r;
    a->verdict = AIGW_VERDICT_FAIL_FAST;
    r->resp->outcome = AIGW_OUTCOME_CANCELLED;
    r->resp->error_code = "cancelled";
    r->done = true;
    return MV_END;
}

/* A committed stream that broke: a restart on the next model when the
 * caller opted in and one is left, else stream_failed. */
static int broke_after_commit(sctx *s, aigw_attempt *a, const char *why)
{
    run *r = s->r;
    aigw_buf j = AIGW_BUF_INIT;
    int rc;
    a->completion = "stream_failed";
    a->stream_error = why;
    a->cls = AIGW_CLASS_NETWORK;
    if (r->restart && (int)r->resp->n_attempts >= r->cfg->max_attempts)
        r->end = END_MAX_ATTEMPTS;
    /* A restart needs somewhere to go: another model, attempts left. */
    if (!r->restart || r->end != END_NONE || r->cur_cand + 1 >= r->n_cands) {
        a->verdict = AIGW_VERDICT_FAIL_FAST;
        r->resp->outcome = AIGW_OUTCOME_STREAM_FAILED;
        r->resp->error_code = "stream_failed";
        r->done = true;
        return MV_END;
    }
    rc = aigw__buf_printf(&j, "{\"reason\":\"%s\",\"attempt\":%d,\"provider\":", why, a->number);
    rc |= aigw__buf_json_cstr(&j, a->provider);
    rc |= aigw__buf_puts(&j, ",\"model\":");
    rc |= aigw__buf_json_cstr(&j, a->model);
    rc |= aigw__buf_puts(&j, "}");
    if (rc != 0) {
        aigw__buf_free(&j);
        return -1;
    }
    a->verdict = AIGW_VERDICT_NEXT_BACKEND;
    rc = r->sh->on_reset ? r->sh->on_reset(r->sud, j.data) : 0;
    aigw__buf_free(&j);
    if (rc != 0) {
        r->resp->outcome = AIGW_OUTCOME_CANCELLED;
        r->resp->error_code = "cancelled";
        r->done = true;
        return MV_END;
    }
    return MV_RESTART;
}

/* After the transport returned: served, broken, cancelled, or (-2) not
 * committed, for the policy to judge. */
static int conclude(sctx *s, aigw_transport_result tr, int64_t *wait)
{
    run *r = s->r;
    aigw_attempt *a = s->a;
    aigw_transport_response *t = s->t;
    const char *why;
    int rc;
    if (s->nomem || tr == AIGW_TR_NOMEM) {
        a->tr = AIGW_TR_NOMEM; /* the engine's nomem_ends_request */
        return -1;
    }
    if (tr == AIGW_TR_CANCELLED && aigw__run_cancelled(r))
        s->cancelled = true; /* the caller's token, not on_data */
    if (s->cancelled) {
        a->tr = AIGW_TR_CANCELLED;
        a->completion = s->committed ? "stream_failed" : "failed";
        r->resp->status = t->status;
        return end_cancelled(s, a);
    }
    if (!s->committed && tr == AIGW_TR_OK && !s->inband_error && !s->first_token_expired &&
        s->ok_status && (!s->sse_mode || s->done || s->finished)) {
        /* a complete answer without content (or not a stream at all) */
        if (commit(s) != 0 && !s->cancelled)
            return -1;
    }
    if (!s->committed) {
        a->cls = classify_uncommitted(s, &tr, wait);
        a->tr = s->nomem ? AIGW_TR_NOMEM : tr;
        if (s->nomem)
            return -1;
        a->status = tr == AIGW_TR_OK ? t->status : 0;
        aigw__buf_free(&t->body);
        t->body = s->pre; /* what was held back, for the policy */
        memset(&s->pre, 0, sizeof s->pre);
        return -2;
    }
    why = s->cancelled ? "cancelled" : stream_break(s, tr);
    /* A complete stream hands on the tail it held; a broken one drops it:
     * it can only be the start of the key's value. */
    if (!why && s->held.len) {
        rc = pass(s, s->held.data, s->held.len);
        aigw__buf_free(&s->held);
        if (rc != 0)
            why = "cancelled";
    }
    a->tr = tr == AIGW_TR_CANCELLED && !s->cancelled ? AIGW_TR_OK : tr;
    r->resp->status = t->status;
    if (!why) {
        a->tr = AIGW_TR_OK; /* a grace or drain that ran out is no error */
        a->served = true;
        a->verdict = AIGW_VERDICT_SUCCEEDED;
        if (aigw__move_headers(&r->resp->headers, &t->headers, t->end_to_end) != 0 ||
            aigw__scrub_headers(&r->resp->headers, s->secret) != 0)
            return -1;
        r->resp->outcome = AIGW_OUTCOME_SERVED;
        r->done = true;
        return MV_SERVE;
    }
    if (s->cancelled) {
        /* the caller's cancel says nothing of the upstream: health releases
         * what the attempt held instead of counting a failure */
        a->tr = AIGW_TR_CANCELLED;
        a->completion = "stream_failed";
        a->stream_error = why;
        a->cls = AIGW_CLASS_NETWORK;
        return end_cancelled(s, a);
    }
    return broke_after_commit(s, a, why);
}

int aigw__stream_once(run *r, const slot *sl, aigw_transport_response *t, aigw_attempt *a,
                      int64_t *wait)
{
    built_req b;
    sctx s;
    aigw_transport_result tr;
    int mv = -1;
    memset(&s, 0, sizeof s);
    s.r = r;
    s.a = a;
    s.t = t;
    s.secret = sl->key ? sl->key->secret : NULL;
    if (!(s.sse = aigw__sse_new(r->cfg->max_event_bytes)) || aigw__build_req(r, sl, &b) != 0)
        goto out;
    s.t0 = aigw__run_now(r);
    s.done_at = -1;
    s.whole_deadline = s.t0 + b.req.timeout_ms; /* build_req's per-attempt limit */
    /* Before the commit point the first-token and total deadlines rule; once
     * committed, only the idle budget: a long answer is not cut for length. */
    s.first_token_deadline = s.t0 + r->cfg->first_token_timeout_ms;
    if (s.first_token_deadline > r->deadline)
        s.first_token_deadline = r->deadline;
    b.req.stream = 1;
    b.req.idle_timeout_ms = s.first_token_deadline - s.t0 > 0 ? s.first_token_deadline - s.t0 : 1;
    b.req.timeout_ms = (int64_t)24 * 3600 * 1000;
    t->max_body = r->cfg->max_response_bytes;
    tr = r->env->transport->send_stream(r->env->transport_ud, &b.req, t, on_stream_data, &s);
    aigw__req_free(&b);
    a->duration_ms = aigw__run_now(r) - s.t0;
    a->status = t->status;
    a->answered = t->status > 0;
    if (!s.started && tr == AIGW_TR_OK)
        note_start(&s, aigw__run_now(r)); /* an answer with no body */
    mv = conclude(&s, tr, wait);
out:
    aigw__sse_free(s.sse);
    aigw__buf_free(&s.pre);
    aigw__buf_free(&s.err_data);
    aigw__buf_free(&s.held);
    return mv;
}
