/*
 * engine.c - the attempt loop: candidates -> steps -> keys, one upstream call
 * per attempt, the failover policy between them, and the final answer.
 *
 * Policy: move sideways before down, and wait only when nothing sideways is
 * left.  A sibling key first (no delay), then a bounded same-backend retry,
 * then the next step, then the next model.  Host-level failures skip the
 * sibling keys (they share the host); answers rejected on their merits fail
 * fast; a context-length failure skips to another model.
 */
#define _GNU_SOURCE /* memmem */
#include "engine.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

#define BACKOFF_BASE_MS 250
/* Less time than this left of totalTimeout: no new attempt is started. */
#define MIN_ATTEMPT_MS 10

typedef struct cand {
    const aigw_provider *prov;
    char *model; /* the provider's model id */
} cand;

/* One key of a step as the loop sees it. */
typedef struct key_ref {
    const char *id;
    const aigw_secret *secret; /* NULL: send without credentials */
    aigw_hkey *hk;             /* its health; NULL: untracked */
} key_ref;

typedef enum move {
    MV_SERVE,
    MV_FAIL_FAST,
    MV_NEXT_KEY,
    MV_RETRY,
    MV_NEXT_STEP,
    MV_NEXT_CAND,
    MV_RESTART,  /* streaming: a committed stream broke; the next model anew */
    MV_END,      /* streaming: the request ended (stream failed, cancelled) */
    MV_SKIP_CAND /* the backend's circuit is open: the next model, no ban */
} move;

typedef struct run {
    aigw_client *c;
    const aigw_config *cfg;
    aigw_response *resp;
    const char *path;  /* the API path after "/v1", e.g. "/chat/completions" */
    const char *body;
    size_t body_len;
    int64_t deadline;
    cand *cands;
    size_t n_cands;
    char **banned;     /* models that exceeded their context length */
    size_t n_banned;
    bool any_non_rate_limit;
    bool any_rate_limit;
    bool any_non_key_failure; /* a failure not of one key (server, timeout, ...) */
    bool any_non_auth;
    int64_t min_wait;  /* shortest wait an upstream asked for; -1 none */
    bool timed_out;
    bool budget_capped; /* the last attempt got only what was left of totalTimeout */
    bool max_reached;
    bool done;         /* the answer is in resp */
    const aigw_stream_handler *sh; /* streaming: where the answer goes */
    void *sud;
    bool restart;      /* streaming: restart a broken committed stream */
    size_t cur_cand;   /* the candidate being tried */
    /* what the client remembers across requests */
    aigw_health *h;
    const aigw_health_opts *ho;
    bool budget_denied;  /* a retry was refused: the request ends */
    bool any_cool_skip;  /* a key was skipped while cooling ... */
    bool any_bench_skip; /* ... or benched ... */
    bool bench_not_auth; /* ... for something other than auth (quota) */
    bool any_open_skip;  /* a backend or host was skipped, its circuit open */
    int64_t open_wait;   /* the shortest wait of those circuits; -1 */
    int64_t pass_cool_wait; /* this pass: the shortest cooling wait skipped; -1 */
} run;

/* ------------------------------------------------------------------------ */
/* candidates                                                               */
/* ------------------------------------------------------------------------ */

static void cands_free(run *r)
{
    size_t i;
    for (i = 0; i < r->n_cands; i++)
        aigw__free(r->cands[i].model);
    aigw__free(r->cands);
    aigw__strv_free(r->banned, r->n_banned);
}

static bool cand_seen(const run *r, const aigw_provider *p, const char *model)
{
    size_t i;
    for (i = 0; i < r->n_cands; i++)
        if (r->cands[i].prov == p && strcmp(r->cands[i].model, model) == 0)
            return true;
    return false;
}

/* Resolves one spec.  0 added, 1 skipped (recorded), -2 no memory; for the
 * primary, -1 when no provider serves it and -3 when the access scope
 * rejects it. */
static int add_cand(run *r, const char *spec, bool primary)
{
    const aigw_provider *p;
    char *model;
    int rc = aigw__resolve_model(r->cfg, spec, &p, &model);
    const char *reason = NULL;
    if (rc == -2)
        return -2;
    if (rc != 0)
        reason = "unknown_model";
    else if (!aigw__access_allows(r->cfg, p->id, model))
        reason = "model_not_allowed";
    else if (cand_seen(r, p, model))
        reason = "duplicate_candidate";
    if (reason) {
        int ok;
        if (primary) {
            aigw__free(model);
            return strcmp(reason, "unknown_model") == 0 ? -1 : -3;
        }
        ok = aigw__response_add_skip(r->resp, p ? p->id : "", model ? model : spec, reason);
        aigw__free(model);
        return ok == 0 ? 1 : -2;
    }
    r->cands[r->n_cands].prov = p;
    r->cands[r->n_cands].model = model;
    r->n_cands++;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* the library's own answers                                                */
/* ------------------------------------------------------------------------ */

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
    if (a->tr == AIGW_TR_TOO_LARGE)
        aigw__buf_printf(b, "transport error too_large (the response passed maxResponseBytes, "
                            "%zu bytes)", max_body);
    else if (tr)
        aigw__buf_printf(b, "transport error %s", tr);
    else
        aigw__buf_printf(b, "HTTP %d", a->status);
    if (cls)
        aigw__buf_printf(b, " (%s)", cls);
}

/* The request ended without a served or fail-fast answer. */
static int finish_unserved(run *r)
{
    aigw_response *resp = r->resp;
    aigw_buf msg = AIGW_BUF_INIT;
    const aigw_attempt *last = resp->n_attempts ? &resp->attempts[resp->n_attempts - 1] : NULL;
    aigw_outcome oc = r->timed_out ? AIGW_OUTCOME_TIMED_OUT : AIGW_OUTCOME_EXHAUSTED;
    int status = 502, rc;
    const char *code = "upstream_error";

    if (last)
        resp->attempts[resp->n_attempts - 1].verdict = "exhausted";
    /* a committed stream broke and a restart found nothing left */
    if (last && last->completion && strcmp(last->completion, "stream_failed") == 0) {
        resp->outcome = AIGW_OUTCOME_STREAM_FAILED;
        resp->status = last->status;
        resp->error_code = "stream_failed";
        r->done = true;
        return 0;
    }
    if (r->timed_out) {
        status = 504;
        code = "timeout";
        aigw__buf_printf(&msg, "totalTimeout (%lld ms) passed after %zu attempt%s",
                         (long long)r->cfg->total_timeout_ms, resp->n_attempts,
                         resp->n_attempts == 1 ? "" : "s");
    } else if (!last && r->any_cool_skip) {
        /* every usable key is cooling and waiting does not fit */
        status = 429;
        code = "rate_limited";
        aigw__buf_printf(&msg, "every key is cooling after a rate limit; the first is ready in "
                               "%lld ms", (long long)(r->min_wait > 0 ? r->min_wait : 0));
    } else if (!last && r->any_open_skip) {
        status = 503;
        code = "circuit_open";
        aigw__buf_printf(&msg, "every backend's circuit breaker is open; the next probe may go "
                               "in %lld ms", (long long)(r->open_wait > 0 ? r->open_wait : 0));
    } else if (!last && r->any_bench_skip) {
        status = r->bench_not_auth ? 429 : 401;
        code = r->bench_not_auth ? "quota_exceeded" : "unauthorized";
        aigw__buf_puts(&msg, r->bench_not_auth ? "every key is benched after a quota or auth "
                                                 "failure"
                                               : "every key is benched after an auth failure");
    } else if (!last) {
        size_t i;
        code = "no_route";
        aigw__buf_puts(&msg, "no attempt could be made");
        for (i = 0; i < resp->n_skips; i++)
            aigw__buf_printf(&msg, "%s %s %s: %s", i ? ";" : ":", resp->skips[i].provider,
                             resp->skips[i].model, resp->skips[i].reason);
    } else if (r->budget_denied) {
        status = 503;
        code = "retry_budget_exhausted";
        aigw__buf_printf(&msg, "the client's retry budget is spent (retries may be %d%% of "
                               "requests plus %d per second); %zu attempt%s made",
                         r->ho->budget_percent, r->ho->budget_min_per_sec, resp->n_attempts,
                         resp->n_attempts == 1 ? "" : "s");
    } else if (!r->any_non_rate_limit) {
        status = 429;
        code = "rate_limited";
        aigw__buf_printf(&msg, "every attempt (%zu) was rate limited", resp->n_attempts);
    } else if (!r->any_non_key_failure && (r->any_rate_limit || r->any_cool_skip)) {
        /* only the keys failed, and waiting will free one of them */
        status = 429;
        code = "rate_limited";
        aigw__buf_printf(&msg, "no key is usable: each was rate limited or failed auth or quota "
                               "(%zu attempt%s)", resp->n_attempts, resp->n_attempts == 1 ? "" : "s");
    } else if (!r->any_non_auth) {
        status = 401;
        code = "unauthorized";
        aigw__buf_printf(&msg, "every attempt (%zu) failed authentication", resp->n_attempts);
    } else if (r->max_reached) {
        code = "max_attempts_reached";
        aigw__buf_printf(&msg, "maxAttempts (%d) reached", r->cfg->max_attempts);
    } else {
        if (resp->n_attempts == 1)
            aigw__buf_puts(&msg, "the only attempt failed");
        else
            aigw__buf_printf(&msg, "all %zu attempts failed", resp->n_attempts);
    }
    if (last && !(last->cls == AIGW_CLASS_NONE && last->tr == AIGW_TR_OK)) {
        aigw__buf_puts(&msg, "; last: ");
        describe_attempt(&msg, last, r->cfg->max_response_bytes);
    }
    if (!msg.data) {
        aigw__buf_free(&msg);
        return -1;
    }
    rc = set_error_answer(r, oc, status, code, msg.data);
    aigw__buf_free(&msg);
    {
        int64_t ra = status == 429 ? r->min_wait : status == 503 && !last ? r->open_wait : -1;
        if (rc == 0 && ra >= 0 && strcmp(code, "quota_exceeded") != 0) {
            char v[32];
            snprintf(v, sizeof v, "%lld", (long long)((ra + 999) / 1000));
            rc |= aigw__hdrs_add(&resp->headers, "retry-after", v);
            snprintf(v, sizeof v, "%lld", (long long)ra);
            rc |= aigw__hdrs_add(&resp->headers, "retry-after-ms", v);
        }
    }
    return rc;
}

/* ------------------------------------------------------------------------ */
/* one attempt                                                              */
/* ------------------------------------------------------------------------ */

static bool path_is(const char *path, const char *suffix)
{
    size_t pl = strcspn(path, "?"), sl = strlen(suffix);
    return pl >= sl && memcmp(path + pl - sl, suffix, sl) == 0;
}

/* The auth header of a provider for the API surface at path. */
static int add_auth(aigw_hdrs *h, const aigw_provider *p, const char *path, bool ngrok,
                    const aigw_secret *s, aigw_buf *scratch)
{
    if (!s)
        return 0;
    if (!ngrok && p->native_auth == AIGW_AUTH_X_API_KEY && path_is(path, "/messages"))
        return aigw__hdrs_add(h, "x-api-key", s->value) |
               aigw__hdrs_add(h, "anthropic-version", "2023-06-01");
    if (!ngrok && p->native_auth == AIGW_AUTH_GOOG_API_KEY &&
        (path_is(path, ":generateContent") || path_is(path, ":streamGenerateContent")))
        return aigw__hdrs_add(h, "x-goog-api-key", s->value);
    scratch->len = 0;
    if (aigw__buf_puts(scratch, "Bearer ") != 0 || aigw__buf_puts(scratch, s->value) != 0)
        return -1;
    return aigw__hdrs_add(h, "authorization", scratch->data);
}

static void wipe_hdrs(aigw_hdrs *h)
{
    size_t i;
    for (i = 0; i < h->n; i++)
        aigw__wipe(h->v[i].value, strlen(h->v[i].value));
    aigw__hdrs_free(h);
}

static void tres_free(aigw_transport_response *t)
{
    aigw__hdrs_free(&t->headers);
    aigw__buf_free(&t->body);
}

static bool url_has_path(const char *url)
{
    const char *p = url ? strstr(url, "://") : NULL;
    return p && strchr(p + 3, '/') != NULL;
}

/* The upstream request of one attempt; free with req_free. */
typedef struct built_req {
    aigw_buf url;
    aigw_hdrs h;
    aigw_header *hv;
    aigw_transport_request req;
} built_req;

static void req_free(built_req *b)
{
    aigw__buf_free(&b->url);
    wipe_hdrs(&b->h);
    aigw__free(b->hv);
}

static int build_req(run *r, const cand *cd, bool ngrok, const key_ref *key,
                     const aigw_buf *body, built_req *b)
{
    const aigw_config *cfg = r->cfg;
    aigw_buf scratch = AIGW_BUF_INIT;
    aigw_transport_request *req = &b->req;
    int64_t left = r->deadline - aigw__client_now(r->c);
    int rc = 0;
    size_t i;

    memset(b, 0, sizeof *b);
    rc |= aigw__buf_puts(&b->url, ngrok ? cfg->ngrok_gateway_url : cd->prov->base_url);
    /* A base URL with a path ("https://api.example.com/v1") takes the surface
     * path; one without ("https://my-ollama.internal") the whole API path,
     * as ngrok's examples of custom providers show both. */
    if (!url_has_path(b->url.data) && strncmp(r->path, "/v1", 3) != 0)
        rc |= aigw__buf_puts(&b->url, "/v1");
    rc |= aigw__buf_puts(&b->url, r->path);
    rc |= aigw__hdrs_add(&b->h, "content-type", "application/json");
    rc |= aigw__hdrs_add(&b->h, "user-agent", "libaigw/" AIGW_VERSION_STRING);
    if (r->sh)
        rc |= aigw__hdrs_add(&b->h, "accept", "text/event-stream");
    rc |= add_auth(&b->h, cd->prov, r->path, ngrok, key->secret, &scratch);
    aigw__buf_wipe_free(&scratch);
    /* aigw_hdr and aigw_header differ in constness only. */
    if (rc == 0 && (b->hv = aigw__calloc(b->h.n, sizeof *b->hv)) == NULL)
        rc = -1;
    if (rc != 0) {
        req_free(b);
        return -1;
    }
    for (i = 0; i < b->h.n; i++) {
        b->hv[i].name = b->h.v[i].name;
        b->hv[i].value = b->h.v[i].value;
    }
    req->method = "POST";
    req->url = b->url.data;
    req->headers = b->hv;
    req->n_headers = b->h.n;
    req->body = body->data;
    req->body_len = body->len;
    r->budget_capped = left < cfg->per_request_timeout_ms;
    req->timeout_ms = r->budget_capped ? left : cfg->per_request_timeout_ms;
    if (req->timeout_ms < 1)
        req->timeout_ms = 1;
    req->connect_timeout_ms = cfg->connect_timeout_ms < req->timeout_ms ? cfg->connect_timeout_ms
                                                                          : req->timeout_ms;
    req->max_response_bytes = cfg->max_response_bytes;
    return 0;
}

/* Sends one attempt.  Returns 0, or -1 when out of memory. */
static int send_once(run *r, const cand *cd, bool ngrok, const key_ref *key,
                     const aigw_buf *body, aigw_transport_response *t, aigw_transport_result *tr)
{
    built_req b;
    if (build_req(r, cd, ngrok, key, body, &b) != 0)
        return -1;
    t->max_body = r->cfg->max_response_bytes;
    *tr = r->c->transport.send(r->c->transport_ud, &b.req, t);
    req_free(&b);
    return 0;
}

/* Replaces every verbatim copy of the secret in the answer we hand back. */
static int scrub(aigw_response *resp, const aigw_secret *s)
{
    static const char red[] = "[REDACTED]";
    aigw_buf out = AIGW_BUF_INIT;
    const char *p, *end, *hit;
    size_t i;
    if (!s || s->len == 0)
        return 0;
    for (i = 0; i < resp->headers.n; i++)
        if (strstr(resp->headers.v[i].value, s->value)) {
            char *v = aigw__strdup(red);
            if (!v)
                return -1;
            aigw__free(resp->headers.v[i].value);
            resp->headers.v[i].value = v;
        }
    if (!resp->body.data)
        return 0;
    p = resp->body.data;
    end = p + resp->body.len;
    while ((hit = memmem(p, (size_t)(end - p), s->value, s->len)) != NULL) {
        if (aigw__buf_append(&out, p, (size_t)(hit - p)) != 0 ||
            aigw__buf_puts(&out, red) != 0) {
            aigw__buf_free(&out);
            return -1;
        }
        p = hit + s->len;
    }
    if (p == resp->body.data)
        return 0;
    if (aigw__buf_append(&out, p, (size_t)(end - p)) != 0) {
        aigw__buf_free(&out);
        return -1;
    }
    aigw__buf_free(&resp->body);
    resp->body = out;
    return 0;
}

static bool hop_by_hop(const char *name)
{
    static const char *const drop[] = {"connection", "keep-alive", "transfer-encoding",
                                       "content-length", "proxy-connection", "te",
                                       "trailer", "upgrade", NULL};
    size_t i;
    for (i = 0; drop[i]; i++)
        if (strcmp(name, drop[i]) == 0)
            return true;
    return false;
}

/* The upstream's end-to-end headers, for the caller's response. */
static int copy_headers(aigw_hdrs *dst, const aigw_hdrs *src)
{
    size_t i;
    for (i = 0; i < src->n; i++)
        if (!hop_by_hop(src->v[i].name) &&
            aigw__hdrs_add(dst, src->v[i].name, src->v[i].value) != 0)
            return -1;
    return 0;
}

/* Hands the upstream answer to the caller. */
static int take_upstream_answer(run *r, aigw_transport_response *t, const key_ref *key,
                                aigw_outcome oc)
{
    aigw_response *resp = r->resp;
    if (copy_headers(&resp->headers, &t->headers) != 0)
        return -1;
    aigw__buf_free(&resp->body);
    resp->body = t->body;
    t->body.data = NULL;
    t->body.len = t->body.cap = 0;
    resp->status = t->status;
    resp->outcome = oc;
    r->done = true;
    return scrub(resp, key->secret);
}


/* ------------------------------------------------------------------------ */
/* streamed attempts                                                        */
/* ------------------------------------------------------------------------ */

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
        /* Decided: an event whose data is not JSON is skipped and counted;
         * the stream goes on. */
        s->a->malformed_events++;
        return 0;
    } else {
        read_event_json(s, o);
        cJSON_Delete(o);
    }
    if (s->inband_error && !s->err_data.len)
        aigw__buf_append(&s->err_data, ev->data, ev->data_len);
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
    if (!hv)
        return -1;
    for (i = 0; i < s->t->headers.n; i++)
        if (!hop_by_hop(s->t->headers.v[i].name)) {
            hv[n].name = s->t->headers.v[i].name;
            hv[n].value = s->t->headers.v[i].value;
            n++;
        }
    s->committed = true;
    if (h->on_start && h->on_start(s->r->sud, s->t->status, hv, n) != 0) {
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
    int64_t now = aigw__client_now(s->r->c);
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
        if (aigw__buf_append(&s->pre, data, len) != 0)
            return -1;
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
        s->a->stream_error = rc == AIGW_SSE_TOO_LARGE ? "event_too_large" : "out_of_memory";
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

/* The class of a streamed attempt that never reached the commit point. */
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
        return aigw__classify(AIGW_TR_OK, 500, &t->headers, s->err_data.data, s->err_data.len,
                              aigw__unix_ms(), wait);
    }
    if (*tr == AIGW_TR_OK && s->ok_status && s->sse_mode && !s->a->stream_error) {
        s->a->stream_error = "ended_before_first_token";
        *tr = AIGW_TR_RESET;
    }
    if (s->a->stream_error && *tr == AIGW_TR_CANCELLED)
        *tr = AIGW_TR_PROTOCOL; /* an event past maxEventBytes */
    return aigw__classify(*tr, *tr == AIGW_TR_OK ? t->status : 0, &t->headers, s->pre.data,
                          s->pre.len, aigw__unix_ms(), wait);
}

/* Sends one streamed attempt; fills the attempt's record.  Returns the move
 * when it is already decided (served, restart, end), else -2 with *cls
 * and the held-back body in t->body for the usual policy. */
static int stream_once(run *r, const cand *cd, bool ngrok, const key_ref *key,
                       const aigw_buf *body, aigw_transport_response *t, aigw_attempt *a,
                       aigw_transport_result *trp, int64_t *wait)
{
    built_req b;
    sctx s;
    aigw_transport_result tr;
    const char *why;
    memset(&s, 0, sizeof s);
    s.r = r;
    s.a = a;
    s.t = t;
    if (!(s.sse = aigw__sse_new(r->cfg->max_event_bytes)))
        return -1;
    if (build_req(r, cd, ngrok, key, body, &b) != 0) {
        aigw__sse_free(s.sse);
        return -1;
    }
    s.t0 = aigw__client_now(r->c);
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
    tr = r->c->transport.send_stream(r->c->transport_ud, &b.req, t, on_stream_data, &s);
    req_free(&b);
    a->duration_ms = aigw__client_now(r->c) - s.t0;
    a->status = t->status;
    if (!s.started && tr == AIGW_TR_OK)
        note_start(&s, aigw__client_now(r->c)); /* an answer with no body */
    if (s.cancelled) {
        a->tr = AIGW_TR_CANCELLED;
        a->verdict = "fail_fast";
        a->completion = s.committed ? "stream_failed" : "failed";
        r->resp->outcome = AIGW_OUTCOME_CANCELLED;
        r->resp->status = t->status;
        r->resp->error_code = "cancelled";
        r->done = true;
        aigw__sse_free(s.sse);
        aigw__buf_free(&s.pre);
        aigw__buf_free(&s.err_data);
        return MV_END;
    }
    if (!s.committed && tr == AIGW_TR_OK && !s.inband_error && !s.first_token_expired &&
        s.ok_status && (!s.sse_mode || s.done || s.finished)) {
        /* a complete answer without content (or not a stream at all) */
        if (commit(&s) != 0 && !s.cancelled) {
            aigw__sse_free(s.sse);
            aigw__buf_free(&s.err_data);
            return -1;
        }
    }
    if (!s.committed) {
        *trp = tr;
        a->cls = classify_uncommitted(&s, trp, wait);
        a->tr = *trp;
        a->status = *trp == AIGW_TR_OK ? t->status : 0;
        aigw__buf_free(&t->body);
        t->body = s.pre;
        aigw__sse_free(s.sse);
        aigw__buf_free(&s.err_data);
        return -2;
    }
    why = s.cancelled ? "cancelled" : stream_break(&s, tr);
    a->tr = tr == AIGW_TR_CANCELLED && !s.cancelled ? AIGW_TR_OK : tr;
    aigw__sse_free(s.sse);
    aigw__buf_free(&s.err_data);
    aigw__buf_free(&s.pre);
    r->resp->status = t->status;
    if (!why) {
        a->tr = AIGW_TR_OK; /* a grace or drain that ran out is no error */
        a->served = true;
        a->verdict = "succeeded";
        if (copy_headers(&r->resp->headers, &t->headers) != 0)
            return -1;
        r->resp->outcome = AIGW_OUTCOME_SERVED;
        r->done = true;
        return MV_SERVE;
    }
    a->completion = "stream_failed";
    a->stream_error = why;
    a->cls = AIGW_CLASS_NETWORK;
    if (strcmp(why, "cancelled") == 0) {
        a->verdict = "fail_fast";
        r->resp->outcome = AIGW_OUTCOME_CANCELLED;
        r->resp->error_code = "cancelled";
        r->done = true;
        return MV_END;
    }
    if (r->restart && (int)r->resp->n_attempts >= r->cfg->max_attempts)
        r->max_reached = true;
    /* A restart needs somewhere to go: another model, attempts left. */
    if (r->restart && !r->max_reached && r->cur_cand + 1 < r->n_cands) {
        aigw_buf j = AIGW_BUF_INIT;
        int rc = aigw__buf_printf(&j, "{\"reason\":\"%s\",\"attempt\":%d,\"provider\":", why,
                                  a->number);
        rc |= aigw__buf_json_cstr(&j, a->provider);
        rc |= aigw__buf_puts(&j, ",\"model\":");
        rc |= aigw__buf_json_cstr(&j, a->model);
        rc |= aigw__buf_puts(&j, "}");
        if (rc != 0) {
            aigw__buf_free(&j);
            return -1;
        }
        a->verdict = "next_backend";
        if (r->sh->on_reset && r->sh->on_reset(r->sud, j.data) != 0) {
            aigw__buf_free(&j);
            r->resp->outcome = AIGW_OUTCOME_CANCELLED;
            r->resp->error_code = "cancelled";
            r->done = true;
            return MV_END;
        }
        aigw__buf_free(&j);
        return MV_RESTART;
    }
    a->verdict = "fail_fast";
    r->resp->outcome = AIGW_OUTCOME_STREAM_FAILED;
    r->resp->error_code = "stream_failed";
    r->done = true;
    return MV_END;
}

/* ------------------------------------------------------------------------ */
/* policy                                                                   */
/* ------------------------------------------------------------------------ */

static int64_t backoff_ms(const run *r, int retry)
{
    uint32_t rnd;
    int64_t b = (int64_t)BACKOFF_BASE_MS << (retry < 10 ? retry : 10);
    if (b > r->cfg->retry_after_max_ms)
        b = r->cfg->retry_after_max_ms;
    aigw__fast_random(&rnd, sizeof rnd);
    /* Jitter in [b/2, b]: spreads retries of many clients apart. */
    return b / 2 + (int64_t)(rnd % (uint32_t)(b / 2 + 1));
}

/* Whether a wait of w ms fits retryAfterMax and the total deadline. */
static bool wait_fits(const run *r, int64_t w)
{
    /* room for an attempt after the wait, or waiting is only a slower 504 */
    return w >= 0 && w <= r->cfg->retry_after_max_ms &&
           aigw__client_now(r->c) + w + MIN_ATTEMPT_MS <= r->deadline;
}

static bool is_fail_fast(aigw_class c)
{
    return c == AIGW_CLASS_CONTENT_POLICY || c == AIGW_CLASS_BAD_REQUEST ||
           c == AIGW_CLASS_PAYLOAD_TOO_LARGE || c == AIGW_CLASS_NOT_FOUND;
}

/* The state of one step's walk through its keys. */
typedef struct step_walk {
    const key_ref *keys; /* in this step's order */
    size_t n;          /* keys in this step's order */
    size_t k;          /* the current key */
    int retries;       /* same-backend retries spent */
    bool retrying;     /* every key was tried once: only retries are left */
    aigw_class *cls;   /* per ordered key: its last failure class */
    int64_t *ready_at; /* per ordered key: when the wait it asked for ends; -1 none */
} step_walk;

/* Whether key i of the walk may be sent to now.  A cooling key is marked
 * for pick_retry (its wait is known); a benched one never is. */
static bool key_usable(const run *r, step_walk *w, size_t i, aigw_key_state *st, int64_t *left)
{
    int64_t now = aigw__client_now(r->c);
    *left = 0;
    *st = w->keys[i].hk ? aigw__hkey_state(w->keys[i].hk, now, left) : AIGW_KEY_READY;
    if (*st == AIGW_KEY_READY)
        return true;
    if (w->cls[i] == AIGW_CLASS_NONE) { /* not tried in this walk */
        w->cls[i] = *st == AIGW_KEY_COOLING ? AIGW_CLASS_RATE_LIMIT : AIGW_CLASS_AUTH;
        w->ready_at[i] = *st == AIGW_KEY_COOLING ? now + *left : -1;
    }
    return false;
}

/* Whether a key after k in the walk is ready (sideways is still open). */
static bool ready_after(const run *r, step_walk *w, size_t k)
{
    size_t i;
    aigw_key_state st;
    int64_t left;
    for (i = k + 1; i < w->n; i++)
        if (key_usable(r, w, i, &st, &left))
            return true;
    return false;
}

/* Picks the key a same-backend retry goes to, and the wait before it: a
 * rate-limited key whose asked-for wait is known (what is left of it), or a
 * server-failed key (what it asked for, else a jittered back-off); the
 * shortest wait that fits.  false when none may be retried. */
static bool pick_retry(const run *r, const step_walk *w, size_t *best, int64_t *wait)
{
    int64_t now = aigw__client_now(r->c), backoff = -1;
    size_t i;
    bool found = false;
    for (i = 0; i < w->n; i++) {
        int64_t e;
        if (w->cls[i] == AIGW_CLASS_RATE_LIMIT && w->ready_at[i] >= 0) {
            e = w->ready_at[i] > now ? w->ready_at[i] - now : 0;
        } else if (w->cls[i] == AIGW_CLASS_SERVER || w->cls[i] == AIGW_CLASS_OVERLOADED) {
            if (w->ready_at[i] >= 0) {
                e = w->ready_at[i] > now ? w->ready_at[i] - now : 0;
            } else {
                if (backoff < 0)
                    backoff = backoff_ms(r, w->retries);
                e = backoff;
            }
        } else {
            continue; /* auth, quota, a 429 with no known wait: waiting won't help */
        }
        if (wait_fits(r, e) && (!found || e < *wait)) {
            *best = i;
            *wait = e;
            found = true;
        }
    }
    return found;
}

/* Decides the next move after a failed attempt; sets a->verdict, and for
 * MV_RETRY the key to retry (w->k) and *sleep_ms. */
static move decide(run *r, step_walk *w, aigw_attempt *a, int64_t *sleep_ms)
{
    aigw_class c = a->cls;
    size_t best = 0;
    int64_t wait = 0;
    *sleep_ms = 0;
    if (is_fail_fast(c)) {
        a->verdict = "fail_fast";
        return MV_FAIL_FAST;
    }
    if ((int)r->resp->n_attempts >= r->cfg->max_attempts) {
        r->max_reached = true;
        a->verdict = "exhausted";
        return MV_NEXT_STEP;
    }
    if (c == AIGW_CLASS_CONTEXT_LENGTH) {
        a->verdict = "next_backend";
        return MV_NEXT_CAND;
    }
    if (c == AIGW_CLASS_TIMEOUT || c == AIGW_CLASS_NETWORK || c == AIGW_CLASS_REDIRECT) {
        /* the host is the problem, not the key: skip the siblings */
        a->verdict = "next_backend";
        return MV_NEXT_STEP;
    }
    if (!w->retrying && ready_after(r, w, w->k)) {
        a->verdict = c == AIGW_CLASS_QUOTA ? "next_quota_pool" : "next_key";
        return MV_NEXT_KEY;
    }
    /* Nothing sideways is left: wait, boundedly, for the step's best key. */
    if (w->retries < r->cfg->same_backend_retries && pick_retry(r, w, &best, &wait)) {
        a->verdict = "retry_same_backend";
        w->k = best;
        w->retries++;
        w->retrying = true;
        *sleep_ms = wait;
        return MV_RETRY;
    }
    a->verdict = "next_backend";
    return MV_NEXT_STEP;
}

/* ------------------------------------------------------------------------ */
/* the walk                                                                 */
/* ------------------------------------------------------------------------ */

static void note_result(run *r, const aigw_attempt *a)
{
    if (a->cls != AIGW_CLASS_RATE_LIMIT)
        r->any_non_rate_limit = true;
    if (a->cls == AIGW_CLASS_RATE_LIMIT)
        r->any_rate_limit = true;
    else if (a->cls != AIGW_CLASS_AUTH && a->cls != AIGW_CLASS_QUOTA)
        r->any_non_key_failure = true;
    if (a->cls != AIGW_CLASS_AUTH)
        r->any_non_auth = true;
    if (a->requested_wait_ms >= 0 && (r->min_wait < 0 || a->requested_wait_ms < r->min_wait))
        r->min_wait = a->requested_wait_ms;
}

static int record_attempt(run *r, const cand *cd, int step, bool ngrok, const key_ref *key,
                          aigw_attempt **out)
{
    aigw_attempt *a = aigw__response_add_attempt(r->resp);
    if (!a)
        return -1;
    a->step = step;
    a->key_source = ngrok ? "ngrok" : "user";
    a->provider = aigw__strdup(cd->prov->id);
    a->model = aigw__strdup(cd->model);
    a->key_id = aigw__strdup(key->id ? key->id : "");
    if (!a->provider || !a->model || !a->key_id)
        return -1;
    /* Moving from the caller's keys to ngrok's is a managed fallback. */
    if (ngrok && r->resp->n_attempts > 1) {
        aigw_attempt *prev = &r->resp->attempts[r->resp->n_attempts - 2];
        if (prev->verdict && strcmp(prev->verdict, "next_backend") == 0 &&
            strcmp(prev->key_source, "user") == 0)
            prev->verdict = "managed_fallback";
    }
    *out = a;
    return 0;
}

/* Runs one attempt and decides.  Returns the move, or -1 on no memory. */
static int attempt(run *r, const cand *cd, int step, bool ngrok, const key_ref *key,
                   const aigw_buf *body, step_walk *w, int64_t *sleep_ms)
{
    aigw_transport_response t;
    aigw_transport_result tr = AIGW_TR_OTHER;
    aigw_attempt *a;
    int64_t t0, wait = -1;
    int mv;

    memset(&t, 0, sizeof t);
    if (record_attempt(r, cd, step, ngrok, key, &a) != 0)
        return -1;
    if (r->sh) {
        mv = stream_once(r, cd, ngrok, key, body, &t, a, &tr, &wait);
        if (mv != -2) {
            tres_free(&t);
            return mv;
        }
    } else {
        t0 = aigw__client_now(r->c);
        if (send_once(r, cd, ngrok, key, body, &t, &tr) != 0) {
            tres_free(&t);
            return -1;
        }
        a->duration_ms = aigw__client_now(r->c) - t0;
        a->tr = tr;
        a->status = tr == AIGW_TR_OK ? t.status : 0;
        a->cls = aigw__classify(tr, a->status, &t.headers, t.body.data, t.body.len,
                                aigw__unix_ms(), &wait);
    }
    a->requested_wait_ms = wait;
    w->cls[w->k] = a->cls;
    w->ready_at[w->k] = wait >= 0 ? aigw__client_now(r->c) + wait : -1;
    note_result(r, a);

    if (a->cls == AIGW_CLASS_NONE) {
        a->served = true;
        a->verdict = "succeeded";
        mv = take_upstream_answer(r, &t, key, AIGW_OUTCOME_SERVED) == 0 ? MV_SERVE : -1;
    } else {
        mv = (int)decide(r, w, a, sleep_ms);
        if (mv == MV_FAIL_FAST && take_upstream_answer(r, &t, key, AIGW_OUTCOME_FAIL_FAST) != 0)
            mv = -1;
        if (mv == MV_RETRY)
            a->waited_ms = *sleep_ms;
    }
    tres_free(&t);
    return mv;
}

/* Orders a user step's keys: the client's strategy, or the step's own
 * (keySelectionStrategy).  Either sees each key's health; the walk skips
 * the keys that are not ready, whatever the order. */
static int order_keys(run *r, const cand *cd, size_t step_index, const aigw_step *st,
                      key_ref *refs, size_t *n_out)
{
    size_t i, n = 0, nk = st->n_keys;
    int64_t now = aigw__client_now(r->c);
    aigw_key_health *views = aigw__calloc(nk, sizeof *views);
    const aigw_key_health **pv = aigw__calloc(nk, sizeof *pv);
    size_t *order = aigw__calloc(nk, sizeof *order);
    bool *used = aigw__calloc(nk, sizeof *used);
    aigw_hkey **hk = aigw__calloc(nk, sizeof *hk);
    int got = -1, rc = -1;
    if (!views || !pv || !order || !used || !hk)
        goto out;
    for (i = 0; i < nk; i++) {
        hk[i] = aigw__health_key(r->h, cd->prov->id, st->keys[i].id, &st->keys[i].value);
        if (hk[i]) {
            aigw__hkey_view(hk[i], now, st->keys[i].weight, &views[i]);
        } else {
            views[i].id = st->keys[i].id;
            views[i].since_limited_ms = -1;
            views[i].weight = st->keys[i].weight;
            views[i].latency_mean_ms = -1;
        }
        pv[i] = &views[i];
    }
    if (r->c->has_strategy) {
        const aigw_strategy *vt = &r->c->strategy;
        if (vt->order_health) {
            got = vt->order_health(r->c->strategy_ud, cd->prov->id, cd->model, step_index, pv,
                                   nk, order);
        } else {
            const char **ids = aigw__calloc(nk, sizeof *ids);
            if (!ids)
                goto out;
            for (i = 0; i < nk; i++)
                ids[i] = st->keys[i].id;
            got = vt->order(r->c->strategy_ud, cd->prov->id, cd->model, step_index, ids, nk,
                            order);
            aigw__free(ids);
        }
    }
    if (got < 0) {
        /* The turn counter is the one member of a configuration that
         * changes after the parse: atomically, through this cast. */
        aigw__strategy_order(r->c->has_strategy ? AIGW_STRATEGY_ORDERED : st->strategy, pv, nk,
                             (_Atomic unsigned long *)(uintptr_t)&st->turn, order);
        got = (int)nk;
    }
    for (i = 0; i < (size_t)got && i < nk; i++) {
        size_t ix = order[i];
        if (ix < nk && !used[ix]) {
            used[ix] = true;
            refs[n].id = st->keys[ix].id;
            refs[n].secret = &st->keys[ix].value;
            refs[n].hk = hk[ix];
            n++;
        }
    }
    *n_out = n;
    rc = 0;
out:
    aigw__free(views);
    aigw__free(pv);
    aigw__free(order);
    aigw__free(used);
    aigw__free(hk);
    return rc;
}

/* The health verdict of an attempt for a backend and for a host. */
static aigw_verdict backend_verdict(const aigw_attempt *a)
{
    switch (a->cls) {
    case AIGW_CLASS_NONE:
        return AIGW_BR_SUCCESS;
    case AIGW_CLASS_SERVER:
    case AIGW_CLASS_OVERLOADED:
    case AIGW_CLASS_TIMEOUT:
    case AIGW_CLASS_NETWORK:
        return AIGW_BR_FAILURE;
    default:
        return AIGW_BR_NEUTRAL;
    }
}

static aigw_verdict host_verdict(const aigw_attempt *a)
{
    if (a->status > 0)
        return AIGW_BR_SUCCESS; /* it answered: the host is up */
    if (a->cls == AIGW_CLASS_TIMEOUT || a->cls == AIGW_CLASS_NETWORK)
        return AIGW_BR_FAILURE;
    return AIGW_BR_NEUTRAL;
}

/* The breakers in force for one attempt, and whether it holds their probes. */
typedef struct gate {
    aigw_breaker *backend;
    aigw_breaker *host;
    bool backend_probe;
    bool host_probe;
} gate;

/* Tells health how an attempt went (a NULL: it was never made). */
static void report(run *r, const key_ref *key, const gate *g, const aigw_attempt *a)
{
    int64_t now = aigw__client_now(r->c), lat = -1;
    if (!a || a->tr == AIGW_TR_CANCELLED) {
        if (g->backend_probe)
            aigw__breaker_report(g->backend, r->ho, AIGW_BR_ABANDON, true, AIGW_CLASS_NONE, -1, now);
        if (g->host_probe)
            aigw__breaker_report(g->host, r->ho, AIGW_BR_ABANDON, true, AIGW_CLASS_NONE, -1, now);
        return;
    }
    if (a->cls == AIGW_CLASS_NONE)
        lat = r->sh && a->first_token_ms >= 0 ? a->first_token_ms : a->duration_ms;
    if (key->hk) {
        aigw__hkey_report(key->hk, r->ho, a->cls, a->requested_wait_ms, lat, now);
        /* a 429 naming no wait still cools the key: that is its wait */
        if (a->cls == AIGW_CLASS_RATE_LIMIT && a->requested_wait_ms < 0) {
            int64_t left = 0;
            if (aigw__hkey_state(key->hk, now, &left) == AIGW_KEY_COOLING &&
                (r->min_wait < 0 || left < r->min_wait))
                r->min_wait = left;
        }
    }
    if (g->backend)
        aigw__breaker_report(g->backend, r->ho, backend_verdict(a), g->backend_probe, a->cls,
                             lat, now);
    if (g->host)
        aigw__breaker_report(g->host, r->ho, host_verdict(a), g->host_probe, a->cls, lat, now);
}

/* A key the walk passes over: recorded as a skip, not an attempt. */
static int skip_key(run *r, const cand *cd, int step_index, const key_ref *key,
                    aigw_key_state st, int64_t left)
{
    if (key->hk)
        aigw__hkey_skipped(key->hk);
    if (st == AIGW_KEY_COOLING) {
        r->any_cool_skip = true;
        if (r->pass_cool_wait < 0 || left < r->pass_cool_wait)
            r->pass_cool_wait = left;
        if (r->min_wait < 0 || left < r->min_wait)
            r->min_wait = left;
    } else {
        r->any_bench_skip = true;
        if (key->hk && aigw__hkey_reason(key->hk, aigw__client_now(r->c)) != AIGW_CLASS_AUTH)
            r->bench_not_auth = true;
    }
    return aigw__response_add_skip_ex(r->resp, cd->prov->id, cd->model,
                                      st == AIGW_KEY_COOLING ? "key_cooling" : "key_benched",
                                      key->id ? key->id : "", step_index, left);
}

/* A backend or host the walk passes over: its circuit is open. */
static int skip_open(run *r, const cand *cd, int step_index, aigw_breaker *b, bool host,
                     int64_t left)
{
    aigw__breaker_skipped(b);
    /* 0: half-open, its probe in flight; the probe decides within about a
     * cool-off, so that is the wait to name (never "retry now") */
    if (left <= 0)
        left = r->ho->breaker_cooloff_ms;
    r->any_open_skip = true;
    if (r->open_wait < 0 || left < r->open_wait)
        r->open_wait = left;
    return aigw__response_add_skip_ex(r->resp, cd->prov->id, cd->model,
                                      host ? "host_circuit_open" : "circuit_open", NULL,
                                      step_index, left);
}

static bool budget_charged(const aigw_attempt *prev)
{
    switch (prev->cls) {
    case AIGW_CLASS_SERVER:
    case AIGW_CLASS_OVERLOADED:
    case AIGW_CLASS_TIMEOUT:
    case AIGW_CLASS_NETWORK:
    case AIGW_CLASS_REDIRECT:
        return true;
    default:
        return false;
    }
}

/* Health's word before an attempt: 0 go (g filled), or the move that
 * replaces the attempt (a skip recorded), or -1 on no memory. */
static int admit(run *r, const cand *cd, int step_index, bool ngrok, gate *g)
{
    int64_t now = aigw__client_now(r->c), left = 0;
    aigw_admit ab, ah;
    memset(g, 0, sizeof *g);
    g->backend = aigw__health_backend(r->h, cd->prov->id, cd->model);
    g->host = aigw__health_host(r->h, ngrok ? r->cfg->ngrok_gateway_url : cd->prov->base_url);
    ab = g->backend ? aigw__breaker_admit(g->backend, r->ho, now, &left) : AIGW_ADMIT_GO;
    if (ab == AIGW_ADMIT_OPEN)
        return skip_open(r, cd, step_index, g->backend, false, left) == 0 ? MV_SKIP_CAND : -1;
    g->backend_probe = ab == AIGW_ADMIT_PROBE;
    ah = g->host ? aigw__breaker_admit(g->host, r->ho, now, &left) : AIGW_ADMIT_GO;
    if (ah == AIGW_ADMIT_OPEN) {
        report(r, NULL, g, NULL);
        return skip_open(r, cd, step_index, g->host, true, left) == 0 ? MV_NEXT_STEP : -1;
    }
    g->host_probe = ah == AIGW_ADMIT_PROBE;
    /* An attempt that follows a sign of an outage (server error, overload,
     * timeout, network failure) is a retry, paid from the client's budget.
     * Moving past a rate-limited, quota- or auth-failed key is not: that key
     * cools or is benched, so it cannot multiply traffic, and charging it
     * would turn a working failover into errors. */
    if (r->resp->n_attempts > 0 && budget_charged(&r->resp->attempts[r->resp->n_attempts - 1]) &&
        !aigw__budget_retry(r->h, r->ho, now)) {
        report(r, NULL, g, NULL);
        r->budget_denied = true;
        return MV_NEXT_STEP;
    }
    return 0;
}

/* Walks one step's keys.  Returns MV_SERVE / MV_FAIL_FAST (answer set),
 * MV_NEXT_STEP, MV_NEXT_CAND, MV_SKIP_CAND, or -1 on no memory.  Sets
 * r->timed_out, r->max_reached or r->budget_denied when the request must
 * end. */
static int walk_step(run *r, const cand *cd, int step_index, bool ngrok, key_ref *keys,
                     size_t n_keys, const aigw_buf *body)
{
    step_walk w;
    int mv = MV_NEXT_STEP;
    w.keys = keys;
    w.n = n_keys;
    w.k = 0;
    w.retries = 0;
    w.retrying = false;
    w.cls = aigw__calloc(n_keys ? n_keys : 1, sizeof *w.cls);
    w.ready_at = aigw__calloc(n_keys ? n_keys : 1, sizeof *w.ready_at);
    if (!w.cls || !w.ready_at) {
        aigw__free(w.cls);
        aigw__free(w.ready_at);
        return -1;
    }
    while (w.k < w.n) {
        int64_t sleep_ms = 0, left;
        aigw_key_state ks;
        size_t sent;
        gate g;
        if (r->deadline - aigw__client_now(r->c) < MIN_ATTEMPT_MS) {
            r->timed_out = true;
            break;
        }
        /* A retry goes to the key it waited for; otherwise a key that is
         * cooling or benched is passed over without an upstream call. */
        if (!w.retrying && !key_usable(r, &w, w.k, &ks, &left)) {
            if (skip_key(r, cd, step_index, &keys[w.k], ks, left) != 0) {
                mv = -1;
                break;
            }
            w.k++;
            continue;
        }
        mv = admit(r, cd, step_index, ngrok, &g);
        if (mv != 0)
            break;
        sent = w.k; /* decide() may point w.k at the key a retry goes to */
        mv = attempt(r, cd, step_index, ngrok, &keys[sent], body, &w, &sleep_ms);
        report(r, &keys[sent], &g, mv < 0 ? NULL : &r->resp->attempts[r->resp->n_attempts - 1]);
        if (mv < 0 || mv == MV_SERVE || mv == MV_FAIL_FAST || mv == MV_NEXT_CAND ||
            mv == MV_RESTART || mv == MV_END || r->max_reached)
            break;
        /* An attempt that timed out on what was left of totalTimeout ends
         * the request, whatever the clock says to the millisecond. */
        if (r->budget_capped && r->resp->attempts[r->resp->n_attempts - 1].cls == AIGW_CLASS_TIMEOUT) {
            r->timed_out = true;
            mv = MV_NEXT_STEP;
            break;
        }
        if (mv == MV_NEXT_KEY) {
            w.k++;
        } else if (mv == MV_RETRY) {
            aigw__client_sleep(r->c, sleep_ms);
        } else {
            break; /* MV_NEXT_STEP */
        }
        mv = MV_NEXT_STEP;
    }
    aigw__free(w.cls);
    aigw__free(w.ready_at);
    if (mv == MV_NEXT_STEP && aigw__client_now(r->c) >= r->deadline && !r->done)
        r->timed_out = true;
    return mv;
}

static int build_body(run *r, const cand *cd, bool ngrok, aigw_buf *out)
{
    int rc;
    if (!ngrok)
        return aigw__body_splice(r->body, r->body_len, aigw__upstream_model(cd->prov, cd->model),
                                 out) == 0 ? 0 : -1;
    {
        aigw_buf spec = AIGW_BUF_INIT;
        if (aigw__buf_printf(&spec, "%s:%s", cd->prov->id, cd->model) != 0)
            return -1;
        rc = aigw__body_splice(r->body, r->body_len, spec.data, out);
        aigw__buf_free(&spec);
    }
    return rc == 0 ? 0 : -1;
}

/* The keys of an implicit user step: every provider key of the provider. */
static size_t implicit_keys(const run *r, const cand *cd, key_ref *refs)
{
    size_t i, n = 0;
    for (i = 0; i < r->cfg->n_keys; i++)
        if (strcmp(r->cfg->keys[i].provider_id, cd->prov->id) == 0) {
            refs[n].id = r->cfg->keys[i].id;
            refs[n].secret = &r->cfg->keys[i].value;
            refs[n].hk = aigw__health_key(r->h, cd->prov->id, refs[n].id, refs[n].secret);
            n++;
        }
    return n;
}

static bool banned(const run *r, const char *model)
{
    size_t i;
    for (i = 0; i < r->n_banned; i++)
        if (strcmp(r->banned[i], model) == 0)
            return true;
    return false;
}

static int ban(run *r, const char *model)
{
    char **v = aigw__realloc(r->banned, (r->n_banned + 1) * sizeof *v);
    if (!v)
        return -1;
    r->banned = v;
    v[r->n_banned] = aigw__strdup(model);
    if (!v[r->n_banned])
        return -1;
    r->n_banned++;
    return 0;
}

/* Runs one step of a candidate's plan (step_index -1: an implicit step). */
static int run_step(run *r, const cand *cd, int step_index, const aigw_step *st,
                    aigw_buf *body_user, aigw_buf *body_ngrok)
{
    size_t cap = st ? (st->n_keys ? st->n_keys : 1) : (r->cfg->n_keys ? r->cfg->n_keys : 1);
    key_ref *refs;
    size_t n = 0;
    bool ngrok;
    aigw_buf *body;
    int mv;
    ngrok = st ? st->type == AIGW_STEP_NGROK : false;
    refs = aigw__calloc(cap, sizeof *refs);
    if (!refs)
        return -1;
    if (st && !ngrok) {
        if (order_keys(r, cd, (size_t)step_index, st, refs, &n) != 0) {
            aigw__free(refs);
            return -1;
        }
    } else if (!st) {
        n = implicit_keys(r, cd, refs);
        if (n == 0 && cd->prov->custom) {
            /* A custom provider with no key (a local server): no credentials. */
            refs[0].id = "";
            refs[0].secret = NULL;
            refs[0].hk = aigw__health_key(r->h, cd->prov->id, "", NULL);
            n = 1;
        } else if (n == 0) {
            ngrok = true;
        }
    }
    if (ngrok) {
        if (!r->cfg->has_ngrok_key) {
            aigw__free(refs);
            return aigw__response_add_skip(r->resp, cd->prov->id, cd->model,
                                           "no_ngrok_access_key") == 0 ? MV_NEXT_STEP : -1;
        }
        refs[0].id = "ngrok";
        refs[0].secret = &r->cfg->ngrok_key;
        /* per provider: one provider's limit relayed by ngrok says nothing
         * of another's */
        refs[0].hk = aigw__health_key(r->h, cd->prov->id, "ngrok", &r->cfg->ngrok_key);
        n = 1;
    }
    body = ngrok ? body_ngrok : body_user;
    if (!body->data && build_body(r, cd, ngrok, body) != 0) {
        aigw__free(refs);
        return -1;
    }
    mv = walk_step(r, cd, step_index, ngrok, refs, n, body);
    aigw__free(refs);
    return mv;
}

/* Runs a candidate's plan.  Returns a move like walk_step. */
static int run_cand(run *r, const cand *cd)
{
    const aigw_rule *rule = aigw__rule_for(r->cfg, cd->prov->id, cd->model);
    aigw_buf body_user = AIGW_BUF_INIT, body_ngrok = AIGW_BUF_INIT;
    int mv = MV_NEXT_STEP;
    size_t s;
    if (banned(r, cd->model))
        return aigw__response_add_skip(r->resp, cd->prov->id, cd->model,
                                       "context_length_exceeded") == 0 ? MV_NEXT_CAND : -1;
    if (!rule) {
        mv = run_step(r, cd, -1, NULL, &body_user, &body_ngrok);
    } else {
        for (s = 0; s < rule->n_steps; s++) {
            mv = run_step(r, cd, (int)s, &rule->steps[s], &body_user, &body_ngrok);
            if (mv != MV_NEXT_STEP || r->timed_out || r->max_reached || r->budget_denied)
                break;
        }
    }
    aigw__buf_free(&body_user);
    aigw__buf_free(&body_ngrok);
    if (mv == MV_NEXT_CAND && ban(r, cd->model) != 0)
        return -1;
    return mv == MV_RESTART || mv == MV_SKIP_CAND ? MV_NEXT_CAND : mv;
}

/* ------------------------------------------------------------------------ */
/* the request                                                              */
/* ------------------------------------------------------------------------ */

/* "/v1/chat/completions" and "/chat/completions" both name the surface
 * "/chat/completions", which is appended to a provider's base URL. */
static const char *surface_path(const char *path)
{
    if (strncmp(path, "/v1", 3) == 0 && (path[3] == '/' || path[3] == '?' || path[3] == '\0'))
        return path + 3;
    return path;
}

static int reject(run *r, const char *spec, int why)
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

/* Resolves the candidates; may end the request (rejected primary). */
static int plan(run *r, const char *model, char **models, size_t n_models)
{
    size_t i;
    int rc;
    r->cands = aigw__calloc(n_models + 1, sizeof *r->cands);
    if (!r->cands)
        return -1;
    rc = add_cand(r, model, true);
    if (rc == -2)
        return -1;
    if (rc < 0)
        return reject(r, model, rc);
    for (i = 0; i < n_models; i++)
        if (add_cand(r, models[i], false) == -2)
            return -1;
    return 0;
}

/* At most this many waits for a cooling key in one request. */
#define MAX_COOL_WAITS 8

static int run_all(run *r)
{
    int waits = 0;
    aigw__budget_request(r->h, r->ho, aigw__client_now(r->c));
    for (;;) {
        size_t i, before = r->resp->n_attempts;
        r->pass_cool_wait = -1;
        for (i = 0; i < r->n_cands && !r->done; i++) {
            int mv;
            r->cur_cand = i;
            mv = run_cand(r, &r->cands[i]);
            if (mv < 0)
                return -1;
            if (r->done || r->timed_out || r->max_reached || r->budget_denied)
                break;
        }
        if (r->done || r->timed_out || r->max_reached || r->budget_denied)
            break;
        /* Nothing was sent because every usable key is cooling: wait for
         * the first to be ready when that fits, rather than hammer or give
         * up; else the request ends at once (429 with that wait). */
        if (r->resp->n_attempts != before || r->pass_cool_wait < 0 || ++waits > MAX_COOL_WAITS ||
            !wait_fits(r, r->pass_cool_wait))
            break;
        aigw__client_sleep(r->c, r->pass_cool_wait > 0 ? r->pass_cool_wait : 1);
    }
    if (!r->done && finish_unserved(r) != 0)
        return -1;
    return 0;
}

aigw_status aigw__engine_send(aigw_client *c, const aigw_request *req,
                              const aigw_stream_handler *sh, void *sud, aigw_response **out,
                              aigw_error **err)
{
    run r;
    aigw_config *cfg;
    char *model = NULL, **models = NULL, *why = NULL;
    size_t n_models = 0;
    int rc;

    if (!req->body)
        return aigw__fail(err, AIGW_EREQUEST, "the request has no body");
    rc = aigw__body_models(req->body, req->body_len, &model, &models, &n_models, &why);
    if (rc == -2)
        return aigw__fail(err, AIGW_ENOMEM, "out of memory");
    if (rc != 0) {
        aigw_status st = aigw__fail(err, AIGW_EREQUEST, "request body: %s",
                                    why ? why : "not a JSON object");
        aigw__free(why);
        return st;
    }
    if (sh && (c->transport.version < 2 || !c->transport.send_stream)) {
        aigw__free(model);
        aigw__strv_free(models, n_models);
        return aigw__fail(err, AIGW_EINVAL, "the client's transport cannot stream");
    }
    memset(&r, 0, sizeof r);
    r.c = c;
    /* One configuration from start to end, whatever a hot swap does. */
    cfg = aigw__client_config(c);
    r.cfg = cfg;
    r.h = c->health;
    r.ho = &cfg->health;
    r.open_wait = -1;
    r.pass_cool_wait = -1;
    r.sh = sh;
    r.sud = sud;
    r.restart = req->stream_restart < 0 ? cfg->stream_restart : req->stream_restart == 1;
    r.path = surface_path(req->path);
    r.body = req->body;
    r.body_len = req->body_len;
    r.min_wait = -1;
    r.deadline = aigw__client_now(c) + cfg->total_timeout_ms;
    r.resp = aigw__response_new();
    rc = r.resp ? 0 : -1;
    if (rc == 0)
        rc = plan(&r, model, models, n_models);
    if (rc == 0 && !r.done)
        rc = run_all(&r);
    if (rc == 0 && r.resp->n_attempts > 0) {
        const aigw_attempt *last = &r.resp->attempts[r.resp->n_attempts - 1];
        r.resp->model = aigw__strdup(last->model);
        rc = r.resp->model ? 0 : -1;
    }
    if (rc == 0)
        rc = aigw__hdrs_add(&r.resp->headers, "x-aigw-request-id", r.resp->request_id);
    cands_free(&r);
    aigw_config_unref(cfg);
    aigw__free(model);
    aigw__strv_free(models, n_models);
    if (rc != 0) {
        aigw_response_free(r.resp);
        return aigw__fail(err, AIGW_ENOMEM, "out of memory");
    }
    *out = r.resp;
    return AIGW_OK;
}
