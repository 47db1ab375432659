/*
 * answer.c - the library's own answers, when no upstream answer is the
 * caller's: a primary model rejected before anything was sent, or a request
 * that ended exhausted, timed out, or with every key cooling, benched or
 * every circuit open.  OpenAI's error shape, a stable code, and the status
 * and Retry-After an SDK should act on.
 */
#include "engine_int.h"

#include <stdio.h>
#include <string.h>

static int set_error_answer(run *r, aigw_outcome oc, int status, const char *code,
                            const char *message)
{
    aigw_response *resp = r->resp;
    aigw_buf b = AIGW_BUF_INIT;
    int rc = 0;
    rc |= aigw__buf_puts(&b, "{\"error\":{\"message\":");
    rc |= aigw__buf_json_cstr(&b, message);
    rc |= aigw__buf_printf(&b, ",\"type\":\"aigw_error\",\"code\":\"%s\",\"requestId\":\"%s\","
                               "\"attempts\":%zu}}",
                           code, resp->request_id, resp->n_attempts);
    rc |= aigw__hdrs_add(&resp->headers, "content-type", "application/json");
    if (rc != 0) {
        aigw__buf_free(&b);
        return -1;
    }
    aigw__buf_free(&resp->body);
    resp->body = b;
    resp->outcome = oc;
    resp->status = status;
    resp->error_code = code;
    r->done = true;
    return 0;
}

static void describe_attempt(aigw_buf *b, const aigw_attempt *a, size_t max_body)
{
    const char *tr = aigw__transport_result_name(a->tr);
    const char *cls = aigw__class_name(a->cls);
    aigw__buf_printf(b, "%s %s (key %s): ", a->provider, a->model,
                     a->key_id && a->key_id[0] ? a->key_id : "none");
    if (a->tr == AIGW_TR_TOO_LARGE && a->header_cap)
        aigw__buf_printf(b, "transport error too_large (the response's headers passed %d bytes)",
                         AIGW_MAX_RESPONSE_HEADER_BYTES);
    else if (a->tr == AIGW_TR_TOO_LARGE)
        aigw__buf_printf(b, "transport error too_large (the response passed maxResponseBytes, "
                            "%zu bytes)", max_body);
    else if (tr)
        aigw__buf_printf(b, "transport error %s", tr);
    else
        aigw__buf_printf(b, "HTTP %d", a->status);
    if (cls)
        aigw__buf_printf(b, " (%s)", cls);
}

/* The attempts the policy judged: all of them, or those that failed for
 * something other than one key (a server error, a timeout, ...). */
static int judged(const run *r, bool non_key_only)
{
    int c, n = 0;
    for (c = 0; c < AIGW_CLASS__COUNT; c++)
        if (!non_key_only || !aigw__policy_key_failure((aigw_class)c))
            n += r->attempts_by_class[c];
    return n;
}

static int add_retry_after(aigw_response *resp, int64_t ms)
{
    char v[32];
    int rc;
    snprintf(v, sizeof v, "%lld", (long long)((ms + 999) / 1000));
    rc = aigw__hdrs_add(&resp->headers, "retry-after", v);
    snprintf(v, sizeof v, "%lld", (long long)ms);
    return rc | aigw__hdrs_add(&resp->headers, "retry-after-ms", v);
}

/* What the library answers for a request that ended unserved. */
typedef struct unserved {
    int status;
    const char *code;
    aigw_buf msg;
    int64_t retry_after; /* ms, or -1 none */
} unserved;

/* Decides the status, code and message from what the request met. */
static void judge_unserved(const run *r, const aigw_attempt *last, unserved *u)
{
    const aigw_response *resp = r->resp;
    int n = judged(r, false);
    int rate_limited = r->attempts_by_class[AIGW_CLASS_RATE_LIMIT];
    int cool_skips = r->skips_by_reason[AIGW_SKIP_KEY_COOLING];
    int bench_skips = r->skips_by_reason[AIGW_SKIP_KEY_BENCHED];
    int open_skips = r->skips_by_reason[AIGW_SKIP_CIRCUIT_OPEN] +
                     r->skips_by_reason[AIGW_SKIP_HOST_CIRCUIT_OPEN];
    bool quota = r->quota_bench_skips > 0;
    const char *s = resp->n_attempts == 1 ? "" : "s";
    aigw_buf *msg = &u->msg;

    u->status = 502;
    u->code = "upstream_error";
    u->retry_after = -1;
    if (r->end == END_TIMED_OUT) {
        u->status = 504;
        u->code = "timeout";
        aigw__buf_printf(msg, "totalTimeout (%lld ms) passed after %zu attempt%s",
                         (long long)r->cfg->total_timeout_ms, resp->n_attempts, s);
    } else if (!last && cool_skips) {
        /* every usable key is cooling and waiting does not fit */
        u->status = 429;
        u->code = "rate_limited";
        aigw__buf_printf(msg, "every key is cooling after a rate limit; the first is ready in "
                              "%lld ms", (long long)(r->min_wait > 0 ? r->min_wait : 0));
    } else if (!last && open_skips) {
        u->status = 503;
        u->code = "circuit_open";
        u->retry_after = r->open_wait;
        aigw__buf_printf(msg, "every backend's circuit breaker is open; the next probe may go "
                              "in %lld ms", (long long)(r->open_wait > 0 ? r->open_wait : 0));
    } else if (!last && bench_skips) {
        u->status = quota ? 429 : 401;
        u->code = quota ? "quota_exceeded" : "unauthorized";
        aigw__buf_puts(msg, quota ? "every key is benched after a quota or auth failure"
                                  : "every key is benched after an auth failure");
        return; /* waiting does not end a bench: no Retry-After */
    } else if (!last) {
        size_t i;
        u->code = "no_route";
        aigw__buf_puts(msg, "no attempt could be made");
        for (i = 0; i < resp->n_skips; i++)
            aigw__buf_printf(msg, "%s %s %s: %s", i ? ";" : ":", resp->skips[i].provider,
                             resp->skips[i].model,
                             aigw__skip_reason_name(resp->skips[i].reason));
    } else if (r->end == END_BUDGET) {
        u->status = 503;
        u->code = "retry_budget_exhausted";
        aigw__buf_printf(msg, "the client's retry budget is spent (retries may be %d%% of "
                              "requests plus %d per second); %zu attempt%s made",
                         r->ho->budget_percent, r->ho->budget_min_per_sec, resp->n_attempts, s);
    } else if (n == rate_limited) {
        u->status = 429;
        u->code = "rate_limited";
        aigw__buf_printf(msg, "every attempt (%zu) was rate limited", resp->n_attempts);
    } else if (judged(r, true) == 0 && (rate_limited || cool_skips)) {
        /* only the keys failed, and waiting will free one of them */
        u->status = 429;
        u->code = "rate_limited";
        aigw__buf_printf(msg, "no key is usable: each was rate limited or failed auth or quota "
                              "(%zu attempt%s)", resp->n_attempts, s);
    } else if (n == r->attempts_by_class[AIGW_CLASS_AUTH]) {
        u->status = 401;
        u->code = "unauthorized";
        aigw__buf_printf(msg, "every attempt (%zu) failed authentication", resp->n_attempts);
    } else if (r->end == END_MAX_ATTEMPTS) {
        u->code = "max_attempts_reached";
        aigw__buf_printf(msg, "maxAttempts (%d) reached", r->cfg->max_attempts);
    } else if (resp->n_attempts == 1) {
        aigw__buf_puts(msg, "the only attempt failed");
    } else {
        aigw__buf_printf(msg, "all %zu attempts failed", resp->n_attempts);
    }
    /* a 429 names when the first key is ready again */
    if (u->status == 429)
        u->retry_after = r->min_wait;
    if (last && !(last->cls == AIGW_CLASS_NONE && last->tr == AIGW_TR_OK)) {
        aigw__buf_puts(msg, "; last: ");
        describe_attempt(msg, last, r->cfg->max_response_bytes);
    }
}

int aigw__finish_unserved(run *r)
{
    aigw_response *resp = r->resp;
    const aigw_attempt *last = resp->n_attempts ? &resp->attempts[resp->n_attempts - 1] : NULL;
    unserved u;
    int rc = -1;

    if (r->end == END_CANCELLED) /* the caller's token: its own answer */
        return set_error_answer(r, AIGW_OUTCOME_CANCELLED, 499, "cancelled",
                                "the caller cancelled the request");
    if (last)
        resp->attempts[resp->n_attempts - 1].verdict = AIGW_VERDICT_EXHAUSTED;
    /* a committed stream broke and a restart found nothing left */
    if (last && last->completion && strcmp(last->completion, "stream_failed") == 0) {
        resp->outcome = AIGW_OUTCOME_STREAM_FAILED;
        resp->status = last->status;
        resp->error_code = "stream_failed";
        r->done = true;
        return 0;
    }
    memset(&u, 0, sizeof u);
    judge_unserved(r, last, &u);
    if (u.msg.data)
        rc = set_error_answer(r, r->end == END_TIMED_OUT ? AIGW_OUTCOME_TIMED_OUT
                                                         : AIGW_OUTCOME_EXHAUSTED,
                              u.status, u.code, u.msg.data);
    if (rc == 0 && u.retry_after >= 0)
        rc = add_retry_after(resp, u.retry_after);
    aigw__buf_free(&u.msg);
    return rc;
}

int aigw__reject(run *r, const char *spec, int why)
{
    aigw_buf msg = AIGW_BUF_INIT;
    int rc;
    if (why == -1)
        aigw__buf_printf(&msg, "model '%s': no provider serves it (write provider:model, "
                               "e.g. openai:gpt-4o)", spec);
    else
        aigw__buf_printf(&msg, "model '%s' is not allowed by this access key configuration",
                         spec);
    if (!msg.data)
        return -1;
    rc = set_error_answer(r, AIGW_OUTCOME_REJECTED, why == -1 ? 400 : 403,
                          why == -1 ? "unknown_model" : "model_not_allowed", msg.data);
    aigw__buf_free(&msg);
    return rc;
}
