/* response.c - the answer of one request and the record of its attempts.
 * The trace is valid JSON and UTF-8 whatever the strings in it hold: each
 * goes through aigw__buf_json_str. */
#include "response.h"
#include "slots.h"

#include <stddef.h>
#include <string.h>

/* "rq_" and 26 base-62 characters, one from each six random bits: the 64
 * values name the 62 characters, two of them twice (each character then
 * carries 5.94 bits rather than 5.95: 154 random bits in all, for a shift
 * and a load a character). */
static void request_id(char *out)
{
    static const char b62[65] =
        "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz" "rq";
    uint64_t w[3];
    size_t i, k;
    aigw__fast_random(w, sizeof w);
    memcpy(out, "rq_", 3);
    out += 3;
    for (i = 0; i < 3; i++) {
        uint64_t x = w[i];
        for (k = 0; k < 10 && i * 10 + k < 26; k++, x >>= 6)
            out[i * 10 + k] = b62[x & 63];
    }
    out[26] = '\0';
}

/* ---- spare responses ----
 *
 * aigw_response_free parks a response in a slot here, with its header block
 * and body buffer (when they are small), and aigw__response_new takes it
 * back: the engine hands those two to the transport for the first attempt
 * (aigw__response_lend), so that a steady run of requests allocates nothing
 * for its answers (three allocations a request fewer).  The slots are
 * slots.h's, as the curl transport's pool; the responses parked are
 * reachable from here until the process ends.  Under AddressSanitizer a
 * parked response is poisoned (but for the two pointers LeakSanitizer
 * follows to its blocks), so that a caller's use after free is still
 * caught. */

#define SPARE_SLOTS 16
#define SPARE_BODY_MAX 16384 /* a body buffer kept up to this capacity */
#define SPARE_HDRS_MAX 4096  /* a header block kept up to this size */

#ifdef AIGW__ASAN
#include <sanitizer/asan_interface.h>
static void spare_poison(aigw_response *r, bool on)
{
    if (!on) { /* the response, and the header block's head, tell where the rest lies */
        __asan_unpoison_memory_region(r, sizeof *r);
        if (r->headers.v)
            __asan_unpoison_memory_region(aigw__hdrs_block(&r->headers), aigw__hdrs_head_bytes());
    }
    if (r->headers.v)
        (on ? __asan_poison_memory_region : __asan_unpoison_memory_region)(
            aigw__hdrs_block(&r->headers), aigw__hdrs_bytes(&r->headers));
    if (r->body.data) /* cap: the buffer's whole size, its NUL's room too */
        (on ? __asan_poison_memory_region : __asan_unpoison_memory_region)(r->body.data,
                                                                           r->body.cap);
    if (on) {
        /* all but the two pointers to its blocks: LeakSanitizer does not
         * read poisoned words, and the blocks are reachable through them */
        __asan_poison_memory_region(r, sizeof *r);
        __asan_unpoison_memory_region(&r->headers.v, sizeof r->headers.v);
        __asan_unpoison_memory_region(&r->body.data, sizeof r->body.data);
    }
}
#else
#define spare_poison(r, on) ((void)0)
#endif

static aigw_slot spares[SPARE_SLOTS];

static aigw_response *spare_take(void)
{
    aigw_response *r = aigw__slot_take(spares, SPARE_SLOTS, aigw__slot_home());
    if (r)
        spare_poison(r, false);
    return r;
}

/* true: parked (r belongs to the slot now). */
static bool spare_give(aigw_response *r)
{
    spare_poison(r, true);
    if (aigw__slot_give(spares, SPARE_SLOTS, aigw__slot_home(), r))
        return true;
    spare_poison(r, false);
    return false;
}

aigw_response *aigw__response_new(void)
{
    aigw_response *r = spare_take();
    aigw_hdrs h = {NULL, 0, 0};
    aigw_buf b = AIGW_BUF_INIT;
    if (r) { /* its blocks, emptied when it was parked, go on */
        h = r->headers;
        b = r->body;
    } else if (!(r = aigw__malloc(sizeof *r))) {
        return NULL;
    }
    /* the arena and the inline records need no zeroing (each record is
     * cleared when it is added), the rest does */
    memset(r, 0, offsetof(aigw_response, arena));
    r->headers = h;
    r->body = b;
    r->trace_json = &r->trace_cell;
    r->attempts = r->attempts_inline;
    r->cap_attempts = AIGW_RESPONSE_INLINE_ATTEMPTS;
    request_id(r->request_id);
    return r;
}

void aigw__response_lend(aigw_response *r, aigw_hdrs *h, aigw_buf *b)
{
    if (r->headers.n != 0 || r->body.len != 0 || h->v || b->data)
        return;
    *h = r->headers;
    *b = r->body;
    memset(&r->headers, 0, sizeof r->headers);
    memset(&r->body, 0, sizeof r->body);
}

const char *aigw__response_strdup(aigw_response *r, const char *s)
{
    size_t n = strlen(s) + 1, cap;
    aigw_chunk *c = r->chunks;
    char *p;
    if (AIGW_RESPONSE_ARENA - r->arena_used >= n) {
        p = r->arena + r->arena_used;
        r->arena_used += n;
    } else if (c && c->cap - c->used >= n) {
        p = c->data + c->used;
        c->used += n;
    } else {
        cap = n > 1024 ? n : 1024;
        if (!(c = aigw__malloc(sizeof *c + cap)))
            return NULL;
        c->next = r->chunks;
        c->cap = cap;
        c->used = n;
        r->chunks = c;
        p = c->data;
    }
    memcpy(p, s, n);
    return p;
}

aigw_attempt *aigw__response_add_attempt(aigw_response *r)
{
    aigw_attempt *a;
    if (r->n_attempts == r->cap_attempts) {
        size_t cap = r->cap_attempts * 2;
        aigw_attempt *v;
        if (r->attempts == r->attempts_inline) {
            if ((v = aigw__malloc(cap * sizeof *v)) != NULL)
                memcpy(v, r->attempts, r->n_attempts * sizeof *v);
        } else {
            v = aigw__realloc(r->attempts, cap * sizeof *v);
        }
        if (!v)
            return NULL;
        r->attempts = v;
        r->cap_attempts = cap;
    }
    a = &r->attempts[r->n_attempts++];
    memset(a, 0, sizeof *a);
    a->number = (int)r->n_attempts;
    a->requested_wait_ms = -1;
    a->first_byte_ms = -1;
    a->first_token_ms = -1;
    return a;
}

int aigw__response_add_skip(aigw_response *r, const char *provider, const char *model,
                            aigw_skip_reason reason, const char *key_id, int step,
                            int64_t wait_ms)
{
    aigw_skip *s;
    if (r->n_skips == r->cap_skips) {
        size_t cap = r->cap_skips ? r->cap_skips * 2 : 4;
        aigw_skip *v = aigw__realloc(r->skips, cap * sizeof *v);
        if (!v)
            return -1;
        r->skips = v;
        r->cap_skips = cap;
    }
    s = &r->skips[r->n_skips];
    s->provider = aigw__response_strdup(r, provider ? provider : "");
    s->model = aigw__response_strdup(r, model ? model : "");
    s->reason = reason;
    s->key_id = aigw__response_strdup(r, key_id ? key_id : "");
    s->step = step;
    s->wait_ms = wait_ms;
    if (!s->provider || !s->model || !s->key_id)
        return -1; /* what the arena took goes with the response */
    r->n_skips++;
    return 0;
}

void aigw__response_drop_skips(aigw_response *r, size_t from)
{
    if (r->n_skips > from)
        r->n_skips = from; /* their strings stay in the arena until the end */
}

static int trace_attempt(aigw_buf *b, const aigw_attempt *a)
{
    const char *tr = aigw__transport_result_name(a->tr);
    const char *cls = aigw__class_name(a->cls);
    int r = 0;
    r |= aigw__buf_printf(b, "{\"event\":{\"attemptNumber\":%d,\"provider\":", a->number);
    r |= aigw__buf_json_cstr(b, a->provider);
    r |= aigw__buf_puts(b, ",\"model\":");
    r |= aigw__buf_json_cstr(b, a->model);
    r |= aigw__buf_printf(b, ",\"statusCode\":%d,\"isError\":%s,\"keySource\":", a->status,
                          a->served ? "false" : "true");
    r |= aigw__buf_json_cstr(b, a->key_source);
    r |= aigw__buf_puts(b, ",\"providerKeyId\":");
    r |= aigw__buf_json_cstr(b, a->key_id);
    r |= aigw__buf_printf(b, "},\"served\":%s,\"retryAction\":", a->served ? "true" : "false");
    r |= aigw__buf_json_cstr(b, aigw__verdict_name(a->verdict));
    r |= aigw__buf_printf(b, ",\"completion\":\"%s\",\"upstreamDurationMs\":%lld",
                          aigw_attempt_completion(a), (long long)a->duration_ms);
    r |= aigw__buf_printf(b, ",\"step\":%d,\"errorClass\":", a->step);
    r |= aigw__buf_json_cstr(b, cls);
    r |= aigw__buf_puts(b, ",\"transportError\":");
    r |= aigw__buf_json_cstr(b, tr);
    if (a->requested_wait_ms >= 0)
        r |= aigw__buf_printf(b, ",\"requestedWaitMs\":%lld", (long long)a->requested_wait_ms);
    if (a->waited_ms > 0)
        r |= aigw__buf_printf(b, ",\"waitedMs\":%lld", (long long)a->waited_ms);
    if (a->first_byte_ms >= 0)
        r |= aigw__buf_printf(b, ",\"timeToFirstByteMs\":%lld", (long long)a->first_byte_ms);
    if (a->first_token_ms >= 0)
        r |= aigw__buf_printf(b, ",\"timeToFirstTokenMs\":%lld", (long long)a->first_token_ms);
    if (a->malformed_events > 0)
        r |= aigw__buf_printf(b, ",\"malformedEvents\":%ld", a->malformed_events);
    if (a->stream_error) {
        r |= aigw__buf_puts(b, ",\"streamError\":");
        r |= aigw__buf_json_cstr(b, a->stream_error);
    }
    r |= aigw__buf_puts(b, "}");
    return r;
}

char *aigw__response_build_trace(const aigw_response *r)
{
    aigw_buf b = AIGW_BUF_INIT;
    size_t i;
    int rc = 0;
    rc |= aigw__buf_printf(&b, "{\"requestId\":\"%s\",\"outcome\":\"%s\",\"model\":", r->request_id,
                           aigw_outcome_name(r->outcome));
    rc |= aigw__buf_json_cstr(&b, r->model ? r->model : "");
    rc |= aigw__buf_printf(&b, ",\"statusCode\":%d,\"attempts\":[", r->status);
    for (i = 0; i < r->n_attempts; i++) {
        if (i)
            rc |= aigw__buf_puts(&b, ",");
        rc |= trace_attempt(&b, &r->attempts[i]);
    }
    rc |= aigw__buf_puts(&b, "],\"skipped\":[");
    for (i = 0; i < r->n_skips; i++) {
        rc |= aigw__buf_puts(&b, i ? ",{\"provider\":" : "{\"provider\":");
        rc |= aigw__buf_json_cstr(&b, r->skips[i].provider);
        rc |= aigw__buf_puts(&b, ",\"model\":");
        rc |= aigw__buf_json_cstr(&b, r->skips[i].model);
        rc |= aigw__buf_puts(&b, ",\"reason\":");
        rc |= aigw__buf_json_cstr(&b, aigw__skip_reason_name(r->skips[i].reason));
        if (r->skips[i].key_id[0]) {
            rc |= aigw__buf_printf(&b, ",\"step\":%d,\"providerKeyId\":", r->skips[i].step);
            rc |= aigw__buf_json_cstr(&b, r->skips[i].key_id);
        }
        if (r->skips[i].wait_ms >= 0)
            rc |= aigw__buf_printf(&b, ",\"waitMs\":%lld", (long long)r->skips[i].wait_ms);
        rc |= aigw__buf_puts(&b, "}");
    }
    rc |= aigw__buf_puts(&b, "],\"healthStore\":");
    rc |= aigw__buf_json_cstr(&b, r->health_store[0] ? r->health_store : "local");
    rc |= aigw__buf_puts(&b, "}");
    if (rc != 0) {
        aigw__buf_free(&b);
        return NULL;
    }
    return aigw__buf_take(&b);
}

/* ---- public getters ---- */

aigw_outcome aigw_response_outcome(const aigw_response *resp)
{
    return resp ? resp->outcome : AIGW_OUTCOME_EXHAUSTED;
}

const char *aigw_outcome_name(aigw_outcome outcome)
{
    switch (outcome) {
    case AIGW_OUTCOME_SERVED: return "served";
    case AIGW_OUTCOME_FAIL_FAST: return "fail_fast";
    case AIGW_OUTCOME_EXHAUSTED: return "exhausted";
    case AIGW_OUTCOME_TIMED_OUT: return "timed_out";
    case AIGW_OUTCOME_REJECTED: return "rejected";
    case AIGW_OUTCOME_STREAM_FAILED: return "stream_failed";
    case AIGW_OUTCOME_CANCELLED: return "cancelled";
    }
    return "unknown";
}

int aigw_response_status(const aigw_response *resp)
{
    return resp ? resp->status : 0;
}

const char *aigw_response_body(const aigw_response *resp, size_t *len)
{
    if (len)
        *len = resp ? resp->body.len : 0;
    if (!resp)
        return NULL;
    return resp->body.data ? resp->body.data : "";
}

size_t aigw_response_header_count(const aigw_response *resp)
{
    return resp ? resp->headers.n : 0;
}

aigw_status aigw_response_header(const aigw_response *resp, size_t i, const char **name,
                                 const char **value)
{
    if (!resp || i >= resp->headers.n)
        return AIGW_EINVAL;
    if (name)
        *name = resp->headers.v[i].name;
    if (value)
        *value = resp->headers.v[i].value;
    return AIGW_OK;
}

const char *aigw_response_header_get(const aigw_response *resp, const char *name)
{
    if (!resp || !name)
        return NULL;
    return aigw__hdrs_get(&resp->headers, name);
}

const char *aigw_response_health_store(const aigw_response *resp)
{
    if (!resp)
        return NULL;
    return resp->health_store[0] ? resp->health_store : "local";
}

const char *aigw_response_request_id(const aigw_response *resp)
{
    return resp ? resp->request_id : NULL;
}

const char *aigw_response_model(const aigw_response *resp)
{
    if (!resp)
        return NULL;
    return resp->model ? resp->model : "";
}

const char *aigw_response_error_code(const aigw_response *resp)
{
    return resp ? resp->error_code : NULL;
}

const char *aigw_response_trace_json(const aigw_response *resp)
{
    if (!resp)
        return NULL;
    if (!*resp->trace_json)
        *resp->trace_json = aigw__response_build_trace(resp);
    return *resp->trace_json;
}

size_t aigw_response_attempt_count(const aigw_response *resp)
{
    return resp ? resp->n_attempts : 0;
}

const aigw_attempt *aigw_response_attempt(const aigw_response *resp, size_t i)
{
    if (!resp || i >= resp->n_attempts)
        return NULL;
    return &resp->attempts[i];
}

const char *aigw_response_skip_key_id(const aigw_response *resp, size_t i)
{
    return resp && i < resp->n_skips ? resp->skips[i].key_id : NULL;
}

int64_t aigw_response_skip_wait_ms(const aigw_response *resp, size_t i)
{
    return resp && i < resp->n_skips ? resp->skips[i].wait_ms : -1;
}

size_t aigw_response_skip_count(const aigw_response *resp)
{
    return resp ? resp->n_skips : 0;
}

aigw_status aigw_response_skip(const aigw_response *resp, size_t i, const char **provider,
                               const char **model, const char **reason)
{
    if (!resp || i >= resp->n_skips)
        return AIGW_EINVAL;
    if (provider)
        *provider = resp->skips[i].provider;
    if (model)
        *model = resp->skips[i].model;
    if (reason)
        *reason = aigw__skip_reason_name(resp->skips[i].reason);
    return AIGW_OK;
}

void aigw_response_free(aigw_response *resp)
{
    aigw_chunk *c, *next;
    if (!resp)
        return;
    if (resp->attempts != resp->attempts_inline)
        aigw__free(resp->attempts);
    aigw__free(resp->skips);
    aigw__free(resp->trace_cell);
    for (c = resp->chunks; c; c = next) {
        next = c->next;
        aigw__free(c);
    }
    /* parked with its blocks emptied (a big one freed: no slot holds more
     * than a small answer's room) */
    if (aigw__hdrs_bytes(&resp->headers) > SPARE_HDRS_MAX)
        aigw__hdrs_free(&resp->headers);
    aigw__hdrs_clear(&resp->headers);
    if (resp->body.cap > SPARE_BODY_MAX)
        aigw__buf_free(&resp->body);
    resp->body.len = 0;
    if (resp->body.data)
        resp->body.data[0] = '\0';
    if (spare_give(resp))
        return;
    aigw__hdrs_free(&resp->headers);
    aigw__buf_free(&resp->body);
    aigw__free(resp);
}

/* ---- attempt getters ---- */

int aigw_attempt_number(const aigw_attempt *a) { return a ? a->number : 0; }
const char *aigw_attempt_provider(const aigw_attempt *a) { return a ? a->provider : NULL; }
const char *aigw_attempt_model(const aigw_attempt *a) { return a ? a->model : NULL; }
int aigw_attempt_step(const aigw_attempt *a) { return a ? a->step : -1; }
const char *aigw_attempt_key_id(const aigw_attempt *a) { return a ? a->key_id : NULL; }
const char *aigw_attempt_key_source(const aigw_attempt *a) { return a ? a->key_source : NULL; }
int aigw_attempt_status_code(const aigw_attempt *a) { return a ? a->status : 0; }
const char *aigw_attempt_transport_error(const aigw_attempt *a)
{
    return a ? aigw__transport_result_name(a->tr) : NULL;
}
const char *aigw_attempt_error_class(const aigw_attempt *a)
{
    return a ? aigw__class_name(a->cls) : NULL;
}
const char *aigw_attempt_verdict(const aigw_attempt *a)
{
    return a ? aigw__verdict_name(a->verdict) : NULL;
}
int aigw_attempt_served(const aigw_attempt *a) { return a ? a->served : 0; }
int64_t aigw_attempt_duration_ms(const aigw_attempt *a) { return a ? a->duration_ms : 0; }
int64_t aigw_attempt_requested_wait_ms(const aigw_attempt *a)
{
    return a ? a->requested_wait_ms : -1;
}
int64_t aigw_attempt_waited_ms(const aigw_attempt *a) { return a ? a->waited_ms : 0; }
const char *aigw_attempt_completion(const aigw_attempt *a)
{
    if (!a)
        return NULL;
    if (a->completion)
        return a->completion;
    return a->served ? "succeeded" : a->cls == AIGW_CLASS_TIMEOUT ? "timed_out" : "failed";
}
int64_t aigw_attempt_first_byte_ms(const aigw_attempt *a) { return a ? a->first_byte_ms : -1; }
int64_t aigw_attempt_first_token_ms(const aigw_attempt *a) { return a ? a->first_token_ms : -1; }
