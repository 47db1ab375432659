/* policy.c - the failover policy table, the verdict and skip-reason names,
 * and the table as Markdown for the README.  See policy.h. */
#include "policy.h"

#include <string.h>

/* Move sideways before down, and wait only when nothing sideways is left. */
const aigw_policy_row aigw__policy[AIGW_CLASS__COUNT] = {
    [AIGW_CLASS_NONE] = {"2xx", AIGW_MOVE_SERVE, AIGW_VERDICT_SUCCEEDED, AIGW_WAIT_NEVER, false,
                         AIGW_HEAR_SUCCESS, AIGW_HEAR_SUCCESS, AIGW_REMEMBER_NOTHING},
    [AIGW_CLASS_AUTH] = {"401, 403", AIGW_MOVE_NEXT_KEY, AIGW_VERDICT_NEXT_KEY, AIGW_WAIT_NEVER,
                         false, AIGW_HEAR_NEUTRAL, AIGW_HEAR_NEUTRAL, AIGW_REMEMBER_BENCH_KEY},
    [AIGW_CLASS_QUOTA] = {"402; 429 with insufficient_quota / billing / spend limit; Anthropic "
                          "400 \"reached your specified API usage limits\"; Gemini per-day quota",
                          AIGW_MOVE_NEXT_KEY, AIGW_VERDICT_NEXT_QUOTA_POOL, AIGW_WAIT_NEVER, false,
                          AIGW_HEAR_NEUTRAL, AIGW_HEAR_NEUTRAL, AIGW_REMEMBER_BENCH_KEY},
    [AIGW_CLASS_RATE_LIMIT] = {"429 otherwise; 503 with Retry-After", AIGW_MOVE_NEXT_KEY,
                               AIGW_VERDICT_NEXT_KEY, AIGW_WAIT_ASKED, false, AIGW_HEAR_NEUTRAL,
                               AIGW_HEAR_NEUTRAL, AIGW_REMEMBER_COOL_ENDPOINT},
    [AIGW_CLASS_OVERLOADED] = {"529, overloaded_error", AIGW_MOVE_NEXT_KEY, AIGW_VERDICT_NEXT_KEY,
                               AIGW_WAIT_BACKOFF, true, AIGW_HEAR_FAILURE, AIGW_HEAR_NEUTRAL,
                               AIGW_REMEMBER_NOTHING},
    [AIGW_CLASS_SERVER] = {"500, 502, 503, 504, other 5xx", AIGW_MOVE_NEXT_KEY,
                           AIGW_VERDICT_NEXT_KEY, AIGW_WAIT_BACKOFF, true, AIGW_HEAR_FAILURE,
                           AIGW_HEAR_NEUTRAL, AIGW_REMEMBER_NOTHING},
    [AIGW_CLASS_TIMEOUT] = {"408, attempt timeout", AIGW_MOVE_NEXT_STEP,
                            AIGW_VERDICT_NEXT_BACKEND, AIGW_WAIT_NEVER, true,
                            AIGW_HEAR_FAILURE_IF_ANSWERED, AIGW_HEAR_FAILURE,
                            AIGW_REMEMBER_NOTHING},
    [AIGW_CLASS_NETWORK] = {"connection refused or reset, DNS, TLS; a stream cut after it "
                            "began", AIGW_MOVE_NEXT_STEP, AIGW_VERDICT_NEXT_BACKEND,
                            AIGW_WAIT_NEVER, true, AIGW_HEAR_FAILURE_IF_ANSWERED,
                            AIGW_HEAR_FAILURE, AIGW_REMEMBER_NOTHING},
    [AIGW_CLASS_CONTEXT_LENGTH] = {"400 context_length_exceeded", AIGW_MOVE_NEXT_MODEL,
                                   AIGW_VERDICT_NEXT_BACKEND, AIGW_WAIT_NEVER, false,
                                   AIGW_HEAR_NEUTRAL, AIGW_HEAR_NEUTRAL, AIGW_REMEMBER_BAN_MODEL},
    [AIGW_CLASS_CONTENT_POLICY] = {"400 content policy", AIGW_MOVE_FAIL_FAST,
                                   AIGW_VERDICT_FAIL_FAST, AIGW_WAIT_NEVER, false,
                                   AIGW_HEAR_NEUTRAL, AIGW_HEAR_NEUTRAL, AIGW_REMEMBER_NOTHING},
    [AIGW_CLASS_BAD_REQUEST] = {"400, 422, other 4xx", AIGW_MOVE_FAIL_FAST,
                                AIGW_VERDICT_FAIL_FAST, AIGW_WAIT_NEVER, false, AIGW_HEAR_NEUTRAL,
                                AIGW_HEAR_NEUTRAL, AIGW_REMEMBER_NOTHING},
    [AIGW_CLASS_PAYLOAD_TOO_LARGE] = {"413", AIGW_MOVE_FAIL_FAST, AIGW_VERDICT_FAIL_FAST,
                                      AIGW_WAIT_NEVER, false, AIGW_HEAR_NEUTRAL,
                                      AIGW_HEAR_NEUTRAL, AIGW_REMEMBER_NOTHING},
    [AIGW_CLASS_NOT_FOUND] = {"404", AIGW_MOVE_FAIL_FAST, AIGW_VERDICT_FAIL_FAST,
                              AIGW_WAIT_NEVER, false, AIGW_HEAR_NEUTRAL, AIGW_HEAR_NEUTRAL,
                              AIGW_REMEMBER_NOTHING},
    [AIGW_CLASS_REDIRECT] = {"3xx (never followed)", AIGW_MOVE_NEXT_STEP,
                             AIGW_VERDICT_NEXT_BACKEND, AIGW_WAIT_NEVER, true, AIGW_HEAR_NEUTRAL,
                             AIGW_HEAR_NEUTRAL, AIGW_REMEMBER_NOTHING},
};

const aigw_policy_row *aigw__policy_row(aigw_class c)
{
    return &aigw__policy[(unsigned)c < AIGW_CLASS__COUNT ? c : AIGW_CLASS_NONE];
}

aigw_hear aigw__policy_endpoint_hears(aigw_class c, bool answered)
{
    aigw_hear h = aigw__policy_row(c)->endpoint;
    if (h == AIGW_HEAR_FAILURE_IF_ANSWERED)
        h = answered ? AIGW_HEAR_FAILURE : AIGW_HEAR_NEUTRAL;
    /* Nothing answered: the endpoint said nothing at all, so a probe is
     * released rather than taken for a sign of health. */
    return !answered && h == AIGW_HEAR_NEUTRAL ? AIGW_HEAR_ABANDON : h;
}

aigw_hear aigw__policy_host_hears(aigw_class c, bool answered)
{
    aigw_hear h = aigw__policy_row(c)->host;
    if (answered)
        return AIGW_HEAR_SUCCESS; /* it answered: the host is up */
    return h == AIGW_HEAR_FAILURE_IF_ANSWERED ? AIGW_HEAR_NEUTRAL : h;
}

bool aigw__policy_key_failure(aigw_class c)
{
    aigw_remember m = aigw__policy_row(c)->remember;
    return m == AIGW_REMEMBER_COOL_ENDPOINT || m == AIGW_REMEMBER_BENCH_KEY;
}

static const char *const verdict_names[AIGW_VERDICT__COUNT] = {
    [AIGW_VERDICT_NONE] = NULL,
    [AIGW_VERDICT_SUCCEEDED] = "succeeded",
    [AIGW_VERDICT_NEXT_KEY] = "next_key",
    [AIGW_VERDICT_NEXT_QUOTA_POOL] = "next_quota_pool",
    [AIGW_VERDICT_NEXT_BACKEND] = "next_backend",
    [AIGW_VERDICT_MANAGED_FALLBACK] = "managed_fallback",
    [AIGW_VERDICT_RETRY_SAME_BACKEND] = "retry_same_backend",
    [AIGW_VERDICT_FAIL_FAST] = "fail_fast",
    [AIGW_VERDICT_EXHAUSTED] = "exhausted",
};

const char *aigw__verdict_name(aigw_verdict v)
{
    return (unsigned)v < AIGW_VERDICT__COUNT ? verdict_names[v] : NULL;
}

static const char *const skip_names[AIGW_SKIP__COUNT] = {
    [AIGW_SKIP_UNKNOWN_MODEL] = "unknown_model",
    [AIGW_SKIP_MODEL_NOT_ALLOWED] = "model_not_allowed",
    [AIGW_SKIP_DUPLICATE_CANDIDATE] = "duplicate_candidate",
    [AIGW_SKIP_CONTEXT_LENGTH_EXCEEDED] = "context_length_exceeded",
    [AIGW_SKIP_NO_NGROK_ACCESS_KEY] = "no_ngrok_access_key",
    [AIGW_SKIP_KEY_COOLING] = "key_cooling",
    [AIGW_SKIP_KEY_BENCHED] = "key_benched",
    [AIGW_SKIP_CIRCUIT_OPEN] = "circuit_open",
    [AIGW_SKIP_HOST_CIRCUIT_OPEN] = "host_circuit_open",
};

const char *aigw__skip_reason_name(aigw_skip_reason r)
{
    return (unsigned)r < AIGW_SKIP__COUNT ? skip_names[r] : "";
}

/* ---- the table as Markdown ---- */

static const char *const move_text[AIGW_MOVE__COUNT] = {
    [AIGW_MOVE_SERVE] = "serve",
    [AIGW_MOVE_NEXT_KEY] = "next key of the step",
    [AIGW_MOVE_NEXT_STEP] = "skip the step's other keys (same host): next step, then next model",
    [AIGW_MOVE_NEXT_MODEL] = "next model; this model is not tried again in the request",
    [AIGW_MOVE_FAIL_FAST] = "the upstream answer is returned as is",
};

static const char *const wait_text[AIGW_WAIT__COUNT] = {
    [AIGW_WAIT_NEVER] = "never",
    [AIGW_WAIT_ASKED] = "only for a named wait",
    [AIGW_WAIT_BACKOFF] = "the named wait, else back-off",
};

static const char *const remember_text[AIGW_REMEMBER__COUNT] = {
    [AIGW_REMEMBER_NOTHING] = "—",
    [AIGW_REMEMBER_COOL_ENDPOINT] = "(key, model) cools",
    [AIGW_REMEMBER_BENCH_KEY] = "key benched",
    [AIGW_REMEMBER_BAN_MODEL] = "(provider, model) banned for the request",
};

static const char *const hear_text[AIGW_HEAR__COUNT] = {
    [AIGW_HEAR_SUCCESS] = "success",
    [AIGW_HEAR_FAILURE] = "failure",
    [AIGW_HEAR_NEUTRAL] = NULL,
    [AIGW_HEAR_ABANDON] = NULL,
    [AIGW_HEAR_FAILURE_IF_ANSWERED] = "failure when answered",
};

/* The host hears the row's column only when no HTTP answer came. */
static int md_breakers(aigw_buf *b, const aigw_policy_row *row)
{
    const char *e = hear_text[row->endpoint], *h = hear_text[row->host];
    if (row->host == AIGW_HEAR_SUCCESS)
        return aigw__buf_printf(b, "endpoint, host: %s", e);
    if (row->host == AIGW_HEAR_FAILURE)
        h = "failure when nothing answered";
    if (e && h)
        return aigw__buf_printf(b, "endpoint: %s; host: %s", e, h);
    if (e)
        return aigw__buf_printf(b, "endpoint: %s", e);
    if (h)
        return aigw__buf_printf(b, "host: %s", h);
    return aigw__buf_puts(b, "—");
}

char *aigw__policy_markdown(void)
{
    aigw_buf b = AIGW_BUF_INIT;
    int rc = 0, c;
    rc |= aigw__buf_puts(&b, "| class | upstream answer | next move (`retryAction`) | "
                             "same-backend wait | retry budget | breakers hear | remembered |\n"
                             "|---|---|---|---|---|---|---|\n");
    for (c = 0; c < AIGW_CLASS__COUNT; c++) {
        const aigw_policy_row *row = &aigw__policy[c];
        const char *name = aigw__class_name((aigw_class)c);
        rc |= aigw__buf_printf(&b, "| %s%s%s | %s | %s (`%s`) | %s | %s | ", name ? "`" : "",
                               name ? name : "—", name ? "`" : "", row->answers,
                               move_text[row->move], aigw__verdict_name(row->verdict),
                               wait_text[row->wait], row->retry ? "charges the next attempt"
                                                                : "—");
        rc |= md_breakers(&b, row);
        rc |= aigw__buf_printf(&b, " | %s |\n", remember_text[row->remember]);
    }
    if (rc != 0) {
        aigw__buf_free(&b);
        return NULL;
    }
    return aigw__buf_take(&b);
}
