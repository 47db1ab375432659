/*
 * stream.c - one streamed attempt.  Nothing reaches the caller before the
 * commit point (the first content-bearing event, or the end of a complete
 * answer without one), so everything before it fails over unseen; after it
 * a break is stream_failed, or a restart on the next model when the caller
 * opted in.
 */
#include "engine_int.h"

#include <cjson/cJSON.h>
#include <string.h>

/* After a finish reason, how long to wait for the rest (usage, [DONE]) of a
 * stream that does not end: it is complete, so not long. */
#define FINISH_GRACE_MS 1000
/* After [DONE], how long to wait for the body's end before calling it done. */
#define DONE_DRAIN_MS 200

typedef struct sctx {
    run *r;
    aigw_attempt *a;
    aigw_transport_response *t;
    aigw_sse *sse;
    aigw_buf pre;       /* the bytes held back before the commit point */
    aigw_buf err_data;  /* an in-band error event's data */
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
    uint64_t choices_seen;     /* chat choice indexes (< 64) seen ... */
    uint64_t choices_finished; /* ... and those with a finish_reason */
} sctx;

static bool jstr_nonempty(const cJSON *v)
{
    return cJSON_IsString(v) && v->valuestring && v->valuestring[0];
}

static bool jtype_is(const cJSON *o, const char *type)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "type");
    return cJSON_IsString(t) && strcmp(t->valuestring, type) == 0;
}

/* Reads what one event means for the commit point and the end. */
static void read_event_json(sctx *s, const cJSON *o)
{
    const cJSON *choices = cJSON_GetObjectItemCaseSensitive(o, "choices"), *ch;
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(o, "error");
    if ((err && !cJSON_IsNull(err) && !choices) || jtype_is(o, "error") ||
        jtype_is(o, "response.failed")) {
        s->inband_error = true;
        return;
    }
    /* Anthropic messages and OpenAI Responses streams */
    if (jtype_is(o, "content_block_delta") || jtype_is(o, "response.output_text.delta") ||
        jtype_is(o, "response.function_call_arguments.delta"))
        s->content = true;
    if (jtype_is(o, "message_stop") || jtype_is(o, "response.completed") ||
        jtype_is(o, "response.incomplete"))
        s->done = true;
    if (jtype_is(o, "message_delta")) {
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(o, "delta");
        if (jstr_nonempty(cJSON_GetObjectItemCaseSensitive(d, "stop_reason")))
            s->finished = true;
    }
    /* chat completions: a role-only chunk is not content; with "n" > 1 the
     * answer is finished when every choice seen has its finish_reason */
    cJSON_ArrayForEach(ch, choices)
    {
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(ch, "delta");
        const cJSON *tc = cJSON_GetObjectItemCaseSensitive(d, "tool_calls");
        const cJSON *ix = cJSON_GetObjectItemCaseSensitive(ch, "index");
        uint64_t bit = 1;
        if (cJSON_IsNumber(ix) && ix->valuedouble >= 0 && ix->valuedouble < 64)
            bit <<= (int)ix->valuedouble;
        s->choices_seen |= bit;
        if (jstr_nonempty(cJSON_GetObjectItemCaseSensitive(d, "content")) ||
            (cJSON_IsArray(tc) && cJSON_GetArraySize(tc) > 0) ||
            cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(d, "function_call")))
            s->content = true;
        if (jstr_nonempty(cJSON_GetObjectItemCaseSensitive(ch, "finish_reason")))
            s->choices_finished |= bit;
    }
    if (s->choices_seen && (s->choices_finished & s->choices_seen) == s->choices_seen)
        s->finished = true;
}

static int on_sse_event(void *ctx, const aigw_sse_event *ev)
{
    sctx *s = ctx;
    cJSON *o;
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
    } else if ((o = aigw__json_parse(ev->data, ev->data_len, NULL)) == NULL) {
        size_t end;
        /* JSON that cJSON had no memory for: the event cannot be read */
        if (aigw__json_check(ev->data, ev->data_len, &end) == AIGW_JSON_OK) {
            s->nomem = true;
            return -1;
        }
        /* Decided: an event whose data is not JSON is skipped and counted;
         * the stream goes on. */
        s->a->malformed_events++;
        return 0;
    } else {
        read_event_json(s, o);
        cJSON_Delete(o);
    }
    if (s->inband_error && !s->err_data.len &&
        aigw__buf_append(&s->err_data, ev->data, ev->data_len) != 0) {
        s->nomem = true;
        return -1;
    }
    return 0;
}

static int deliver(sctx *s, const char *data, size_t len)
{
    const aigw_stream_handler *h = s->r->sh;
    if (len && h->on_data && h->on_data(s->r->sud, data, len) != 0) {
        s->cancelled = true;
        return -1;
    }
    return 0;
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
    return rc;
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
        if (aigw__buf_append(&s->pre, data, len) != 0) {
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
    rc = aigw__sse_feed(s->sse, data, len, on_sse_event, s);
    if (rc != 0) {
        s->nomem |= rc == AIGW_ENOMEM;
        if (!s->nomem)
            s->a->stream_error = "event_too_large";
        return -1;
    }
    if (s->content && s->a->first_token_ms < 0)
        s->a->first_token_ms = now - s->t0;
    /* the commit point; or a complete answer that had no content */
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
    a->tr = tr == AIGW_TR_CANCELLED && !s->cancelled ? AIGW_TR_OK : tr;
    r->resp->status = t->status;
    if (!why) {
        a->tr = AIGW_TR_OK; /* a grace or drain that ran out is no error */
        a->served = true;
        a->verdict = AIGW_VERDICT_SUCCEEDED;
        if (aigw__copy_headers(&r->resp->headers, &t->headers) != 0)
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
    return mv;
}
