/*
 * test_stream_integration.c - streamed requests through the whole stack: a
 * gateway file parsed by aigw_config_parse, a client with the default
 * libcurl transport and the system clock, real HTTP on loopback to the
 * embedded mock provider (examples/mockprov.c, MOCKPROV_STREAM).
 *
 * Every scenario checks the attempt sequence (key:verdict:completion per
 * attempt), what the provider received per key, what the caller received
 * through the stream handler (byte for byte the chunks of the serving
 * attempt, nothing of a failed one) and the outcome.  Timeouts are small
 * (firstTokenTimeout / streamIdleTimeout 400 ms) only where a scenario runs
 * into them; elsewhere they stay far (2 s) from the mock's delays, so that a
 * loaded machine does not turn a delay into a timeout.  Timing assertions
 * have wide margins.
 *
 * The soak sends 1,000 streamed requests with mixed faults through one
 * client; under ASan it checks for leaks (at exit), in the plain build that
 * the resident set stays flat.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <pthread.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "aigw.h"
#include "mockprov.h"
#include "support.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

/* ---- keys, events, gateway files ---- */

#define K_PRIMARY "sk-si-primary-0123456789"
#define K_BACKUP "sk-si-backup-9876543210"
#define K_THIRD "sk-si-third-5555555555"

#define ROLE "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"}}]}\n\n"
#define TOK(x) "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"" x "\"}}]}\n\n"
#define FINISH "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n"
#define USAGE "data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\n"
#define DONE "data: [DONE]\n\n"
/* Anthropic's in-band error on a 200 stream */
#define A_START "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\"}}\n\n"
#define A_OVERLOADED                                                                       \
    "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\","      \
    "\"message\":\"Overloaded\"}}\n\n"
/* OpenAI's: an error object as a data event */
#define O_ERROR "data: {\"error\":{\"message\":\"The server had an error\",\"type\":\"server_error\"}}\n\n"

#define RL_BODY "{\"error\":{\"message\":\"Rate limit reached\",\"type\":\"requests\"," \
                "\"code\":\"rate_limit_exceeded\"}}"

/* One healthy answer: the role chunk is held back, then delivered with the
 * first token. */
static const char *const HEALTHY[] = {ROLE, TOK("Hel"), TOK("lo"), FINISH, DONE, NULL};
static const char HEALTHY_BYTES[] = ROLE TOK("Hel") TOK("lo") FINISH DONE;

/* Primary model m1, fallback m2 (same provider, so the same plan). */
static const char BODY[] = "{\"model\":\"mock:m1\",\"models\":[\"mock:m2\"],\"stream\":true,"
                           "\"messages\":[{\"role\":\"user\",\"content\":\"h\xc3\xa9llo\"}]}";

/* Provider "mock": step 0 [primary, backup], step 1 [third]. */
#define KEYS_PBT                                                                        \
    "{\"id\":\"primary\",\"providerId\":\"mock\",\"name\":\"p\",\"value\":\"" K_PRIMARY "\"}," \
    "{\"id\":\"backup\",\"providerId\":\"mock\",\"name\":\"b\",\"value\":\"" K_BACKUP "\"},"   \
    "{\"id\":\"third\",\"providerId\":\"mock\",\"name\":\"t\",\"value\":\"" K_THIRD "\"}"
#define RULES_2STEPS                                                                    \
    "{\"provider\":\"mock\",\"steps\":["                                                 \
    "{\"type\":\"user\",\"keySelectionStrategy\":\"ordered\","                            \
    "\"keys\":[{\"id\":\"primary\"},{\"id\":\"backup\"}]},"                             \
    "{\"type\":\"user\",\"keys\":[{\"id\":\"third\"}]}]}"

static char *gateway_file(const char *base_url, const char *gateway_config)
{
    return mock_gateway_json("stream-integration", base_url, KEYS_PBT, RULES_2STEPS,
                             gateway_config);
}

#define GW_BASE "\"perRequestTimeout\":\"5s\",\"totalTimeout\":\"20s\",\"connectTimeout\":\"2s\"," \
                "\"retryAfterMax\":\"2s\",\"sameBackendRetries\":0"
/* timeouts far from the mock's delays */
#define GW_CALM GW_BASE ",\"firstTokenTimeout\":\"2s\",\"streamIdleTimeout\":\"2s\""
/* The client forgets: every request meets the faults afresh (a 429 naming
 * no wait leaves the key ready; no retry budget, no breakers).  For tests of failover
 * itself under load; key health has its own tests. */
#define GW_NO_MEMORY GW_CALM ",\"keyCooldown\":\"0\",\"retryBudget\":false,\"circuitBreaker\":false"
/* timeouts a scenario runs into */
#define GW_TIGHT GW_BASE ",\"firstTokenTimeout\":\"400ms\",\"streamIdleTimeout\":\"400ms\""
#define TIGHT_MS 400

/* A client on the gateway file for m, with the default transport (libcurl)
 * and clock. */
static aigw_client *client_for(mockprov *m, const char *gw)
{
    char *json = gateway_file(mockprov_base_url(m), gw);
    aigw_client *c = client_from_json(json);
    free(json);
    return c;
}

/* ---- the caller's side: STREAM_CALLER recording into G (support.h) ---- */

static stream_caller G;

/* Streams body (restart: -1 config, 0 off, 1 on); G holds what came. */
static aigw_response *stream_body(aigw_client *c, const char *body, int restart)
{
    aigw_response *resp;
    int cancel_at = G.cancel_at;
    memset(&G, 0, sizeof G);
    G.cancel_at = cancel_at;
    resp = stream_to(c, body, restart, &G);
    assert_non_null(aigw_response_trace_json(resp));
    return resp;
}

/* "key:verdict:completion" per attempt, space separated. */
#define ATTEMPT_FIELDS "key:verdict:completion"
#define assert_attempts(r, want) assert_attempts_as(r, ATTEMPT_FIELDS, want)

/* The caller holds exactly want (since the last reset). */
static void assert_got(const char *want)
{
    if (G.len != strlen(want) || memcmp(G.bytes, want, G.len) != 0)
        fail_msg("the caller got (%zu bytes):\n%s\nwant (%zu bytes):\n%s", G.len, G.bytes,
                 strlen(want), want);
}

/* What the mock provider received, per key. */
static void assert_received(mockprov *m, long primary, long backup, long third)
{
    static const char *const keys[] = {K_PRIMARY, K_BACKUP, K_THIRD};
    const long want[] = {primary, backup, third};
    assert_received_by_key(m, keys, want, 3);
}

/* The model the mock received in request i. */
static void assert_log_model(mockprov *m, long i, const char *key, const char *model)
{
    char line[128], k[128], mo[128];
    assert_int_equal(mockprov_log_get(m, i, line, sizeof line, k, sizeof k, mo, sizeof mo), 0);
    assert_string_equal(line, "POST /v1/chat/completions");
    assert_string_equal(k, key);
    assert_string_equal(mo, model);
}

static void assert_trace_has(const aigw_response *r, const char *needle)
{
    const char *t = aigw_response_trace_json(r);
    if (!strstr(t, needle))
        fail_msg("no %s in the trace: %s", needle, t);
}

/* No key value anywhere in what the library made. */
static void assert_no_secret(const aigw_response *r)
{
    static const char *const keys[] = {K_PRIMARY, K_BACKUP, K_THIRD};
    assert_response_no_secret(r, keys, 3);
    assert_no_secret_in(G.reset_reason, keys, 3);
}

static void stream_rule(mockprov *m, const char *key, const char *model, int status,
                        const char *const *chunks, int delay_ms, mockprov_stream_end end,
                        int times)
{
    mockprov_rule r = mp_rule(MOCKPROV_STREAM, key, model, status, NULL, NULL, times);
    r.chunks = chunks;
    r.chunk_delay_ms = delay_ms;
    r.stream_end = end;
    mp_add(m, r);
}

/* ---- fixtures: MP for the whole run (support.h) ---- */

static int setup(void **state)
{
    mp_setup(state);
    memset(&G, 0, sizeof G);
    return 0;
}

/* ---- scenarios ---- */

/* A healthy stream reaches the caller byte for byte, as it arrives: the
 * first token long before the end. */
static void test_healthy_stream_byte_identical(void **state)
{
    aigw_client *c = client_for(MP, GW_CALM);
    aigw_response *r;
    const aigw_attempt *a;
    int64_t fb, ft;
    (void)state;
    /* 150 ms before each of the 5 chunks: the first token at ~300 ms, the
     * end at ~750 ms */
    stream_rule(MP, K_PRIMARY, NULL, 200, HEALTHY, 150, MOCKPROV_END_OK, 0);
    r = stream_body(c, BODY, -1);
    assert_attempts(r, "primary:succeeded:succeeded");
    assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_SERVED);
    assert_int_equal(aigw_response_status(r), 200);
    assert_null(aigw_response_error_code(r));
    assert_string_equal(aigw_response_model(r), "m1");
    assert_received(MP, 1, 0, 0);
    assert_log_model(MP, 0, K_PRIMARY, "m1");
    assert_got(HEALTHY_BYTES);
    assert_int_equal(G.starts, 1);
    assert_int_equal(G.status, 200);
    assert_true(G.sse_ctype);
    assert_int_equal(G.resets, 0);
    /* streamed, not buffered: the first bytes reached the caller well before
     * the stream ended (nominally 450 ms before), in several calls */
    assert_true(G.data_calls >= 2);
    if (G.t_end - G.t_first_data < 200)
        fail_msg("first data %lld ms before the end, want >= 200 (%d calls)",
                 (long long)(G.t_end - G.t_first_data), G.data_calls);
    if (G.t_end - G.t_start < 600)
        fail_msg("the stream took %lld ms, the mock needs >= 750",
                 (long long)(G.t_end - G.t_start));
    /* timings: first byte ~150 ms, first token ~300 ms */
    a = aigw_response_attempt(r, 0);
    fb = aigw_attempt_first_byte_ms(a);
    ft = aigw_attempt_first_token_ms(a);
    if (fb < 100 || ft < fb + 100 || ft > aigw_attempt_duration_ms(a) ||
        aigw_attempt_duration_ms(a) < 600)
        fail_msg("first byte %lld, first token %lld, duration %lld ms", (long long)fb,
                 (long long)ft, (long long)aigw_attempt_duration_ms(a));
    assert_true(aigw_attempt_served(a));
    assert_null(aigw_attempt_error_class(a));
    assert_trace_has(r, "\"timeToFirstTokenMs\":");
    assert_trace_has(r, "\"timeToFirstByteMs\":");
    assert_trace_has(r, "\"outcome\":\"served\"");
    assert_non_null(aigw_response_header_get(r, "x-aigw-request-id"));
    assert_no_secret(r);
    aigw_response_free(r);
    aigw_client_free(c);
}

/* Streams that end with [DONE] leave their connection reusable: ten in a
 * row use one connection. */
static void test_done_streams_reuse_the_connection(void **state)
{
    aigw_client *c = client_for(MP, GW_CALM);
    long before;
    int i;
    (void)state;
    stream_rule(MP, K_PRIMARY, NULL, 200, HEALTHY, 0, MOCKPROV_END_OK, 0);
    before = mockprov_connection_count(MP);
    for (i = 0; i < 10; i++) {
        aigw_response *r = stream_body(c, BODY, -1);
        assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_SERVED);
        aigw_response_free(r);
    }
    assert_int_equal(mockprov_connection_count(MP) - before, 1);
    aigw_client_free(c);
}

/* 429 before the first token: the sibling key streams; the caller never
 * sees the 429. */
static void test_429_before_first_token_backup_streams(void **state)
{
    aigw_client *c = client_for(MP, GW_CALM);
    aigw_response *r;
    const aigw_attempt *a;
    (void)state;
    mp_add_rule(MP, MOCKPROV_RESPOND, K_PRIMARY, NULL, 429, NULL, RL_BODY, 0);
    stream_rule(MP, K_BACKUP, NULL, 200, HEALTHY, 0, MOCKPROV_END_OK, 0);
    r = stream_body(c, BODY, -1);
    assert_attempts(r, "primary:next_key:failed backup:succeeded:succeeded");
    assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_SERVED);
    assert_received(MP, 1, 1, 0);
    assert_log_model(MP, 0, K_PRIMARY, "m1");
    assert_log_model(MP, 1, K_BACKUP, "m1");
    a = aigw_response_attempt(r, 0);
    assert_int_equal(aigw_attempt_status_code(a), 429);
    assert_string_equal(aigw_attempt_error_class(a), "rate_limit");
    assert_int_equal(aigw_attempt_first_token_ms(a), -1);
    assert_got(HEALTHY_BYTES);
    assert_null(strstr(G.bytes, "Rate limit"));
    assert_int_equal(G.starts, 1);
    assert_int_equal(G.resets, 0);
    assert_no_secret(r);
    aigw_response_free(r);
    aigw_client_free(c);
}

/* An in-band error event on a 200 before the first token (Anthropic's
 * overloaded_error, then OpenAI's error object): the sibling key streams. */
static void test_inband_error_before_first_token_backup(void **state)
{
    static const char *const anthropic[] = {A_START, A_OVERLOADED, NULL};
    static const char *const openai[] = {ROLE, O_ERROR, NULL};
    aigw_client *c = client_for(MP, GW_CALM);
    aigw_response *r;
    (void)state;
    /* the connection is kept open after the error: the library must not wait
     * for it to end */
    stream_rule(MP, K_PRIMARY, NULL, 200, anthropic, 0, MOCKPROV_END_STALL, 0);
    stream_rule(MP, K_BACKUP, NULL, 200, HEALTHY, 0, MOCKPROV_END_OK, 0);
    r = stream_body(c, BODY, -1);
    assert_attempts(r, "primary:next_key:failed backup:succeeded:succeeded");
    assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_SERVED);
    assert_int_equal(aigw_attempt_status_code(aigw_response_attempt(r, 0)), 200);
    assert_string_equal(aigw_attempt_error_class(aigw_response_attempt(r, 0)), "overloaded");
    assert_trace_has(r, "\"streamError\":\"inband_error\"");
    assert_received(MP, 1, 1, 0);
    assert_got(HEALTHY_BYTES); /* nothing of the failed attempt */
    assert_int_equal(G.starts, 1);
    if (G.t_end - G.t_start > 1500)
        fail_msg("took %lld ms: waited on the erroring stream",
                 (long long)(G.t_end - G.t_start));
    aigw_response_free(r);

    mockprov_reset(MP);
    stream_rule(MP, K_PRIMARY, NULL, 200, openai, 0, MOCKPROV_END_OK, 0);
    stream_rule(MP, K_BACKUP, NULL, 200, HEALTHY, 0, MOCKPROV_END_OK, 0);
    r = stream_body(c, BODY, -1);
    assert_attempts(r, "primary:next_key:failed backup:succeeded:succeeded");
    assert_string_equal(aigw_attempt_error_class(aigw_response_attempt(r, 0)), "server");
    assert_received(MP, 1, 1, 0);
    assert_got(HEALTHY_BYTES);
    aigw_response_free(r);
    aigw_client_free(c);
}

/* A role-only chunk, then silence: firstTokenTimeout fails the attempt over
 * to the next step (the sibling key shares the host: skipped). */
static void test_silence_until_first_token_timeout(void **state)
{
    static const char *const role_only[] = {ROLE, NULL};
    aigw_client *c = client_for(MP, GW_TIGHT);
    aigw_response *r;
    const aigw_attempt *a;
    int64_t d;
    (void)state;
    stream_rule(MP, K_PRIMARY, NULL, 200, role_only, 0, MOCKPROV_END_STALL, 0);
    stream_rule(MP, K_THIRD, NULL, 200, HEALTHY, 0, MOCKPROV_END_OK, 0);
    r = stream_body(c, BODY, -1);
    assert_attempts(r, "primary:next_backend:timed_out third:succeeded:succeeded");
    assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_SERVED);
    assert_received(MP, 1, 0, 1);
    assert_log_model(MP, 1, K_THIRD, "m1");
    a = aigw_response_attempt(r, 0);
    assert_string_equal(aigw_attempt_error_class(a), "timeout");
    assert_int_equal(aigw_attempt_step(a), 0);
    assert_int_equal(aigw_attempt_step(aigw_response_attempt(r, 1)), 1);
    assert_true(aigw_attempt_first_byte_ms(a) >= 0); /* the role chunk came */
    assert_int_equal(aigw_attempt_first_token_ms(a), -1);
    d = aigw_attempt_duration_ms(a);
    if (d < TIGHT_MS - 20 || d > TIGHT_MS + 1500)
        fail_msg("the silent attempt lasted %lld ms, want ~%d", (long long)d, TIGHT_MS);
    assert_got(HEALTHY_BYTES); /* the held-back role chunk never reached the caller */
    assert_int_equal(G.starts, 1);
    aigw_response_free(r);
    aigw_client_free(c);
}

/* Cut after two tokens, restart off: stream_failed, the caller has the two
 * tokens and nothing else; no second request. */
static void test_cut_after_tokens_restart_off(void **state)
{
    static const char *const cut[] = {ROLE, TOK("one"), TOK("two"), NULL};
    aigw_client *c = client_for(MP, GW_CALM);
    aigw_response *r;
    (void)state;
    stream_rule(MP, K_PRIMARY, NULL, 200, cut, 20, MOCKPROV_END_CUT, 0);
    r = stream_body(c, BODY, 0);
    assert_attempts(r, "primary:fail_fast:stream_failed");
    assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_STREAM_FAILED);
    assert_string_equal(aigw_response_error_code(r), "stream_failed");
    assert_int_equal(aigw_response_status(r), 200);
    assert_trace_has(r, "\"streamError\":\"connection_cut\"");
    assert_trace_has(r, "\"completion\":\"stream_failed\"");
    assert_trace_has(r, "\"outcome\":\"stream_failed\"");
    assert_false(aigw_attempt_served(aigw_response_attempt(r, 0)));
    assert_received(MP, 1, 0, 0);
    assert_got(ROLE TOK("one") TOK("two"));
    assert_int_equal(G.starts, 1);
    assert_int_equal(G.resets, 0);
    if (G.t_end - G.t_start > 1500)
        fail_msg("took %lld ms after a cut", (long long)(G.t_end - G.t_start));
    assert_no_secret(r);
    aigw_response_free(r);
    aigw_client_free(c);
}

/* Cut after two tokens, restart on (per request, then from the gateway
 * file): on_reset with the reason, then the fallback model's whole answer,
 * sent from the start. */
static void test_cut_after_tokens_restart_on(void **state)
{
    static const char *const cut[] = {ROLE, TOK("one"), TOK("two"), NULL};
    static const char *const gws[] = {GW_CALM, GW_CALM ",\"streamRestart\":true"};
    size_t i;
    (void)state;
    for (i = 0; i < 2; i++) {
        aigw_client *c = client_for(MP, gws[i]);
        aigw_response *r;
        cJSON *j;
        mockprov_reset(MP);
        stream_rule(MP, K_PRIMARY, "m1", 200, cut, 20, MOCKPROV_END_CUT, 0);
        stream_rule(MP, K_PRIMARY, "m2", 200, HEALTHY, 0, MOCKPROV_END_OK, 0);
        r = stream_body(c, BODY, i == 0 ? 1 : -1);
        assert_attempts(r, "primary:next_backend:stream_failed primary:succeeded:succeeded");
        assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_SERVED);
        assert_null(aigw_response_error_code(r));
        assert_string_equal(aigw_attempt_model(aigw_response_attempt(r, 0)), "m1");
        assert_string_equal(aigw_attempt_model(aigw_response_attempt(r, 1)), "m2");
        assert_string_equal(aigw_response_model(r), "m2");
        assert_received(MP, 2, 0, 0);
        assert_log_model(MP, 0, K_PRIMARY, "m1");
        assert_log_model(MP, 1, K_PRIMARY, "m2");
        assert_int_equal(G.resets, 1);
        assert_int_equal(G.starts, 2);
        /* before the reset: exactly the cut stream's tokens; after it: the
         * fallback's complete answer, no prefill of the partial one */
        assert_int_equal(G.before_len, strlen(ROLE TOK("one") TOK("two")));
        assert_memory_equal(G.before_reset, ROLE TOK("one") TOK("two"), G.before_len);
        assert_got(HEALTHY_BYTES);
        j = cJSON_Parse(G.reset_reason);
        if (!j)
            fail_msg("reset reason not JSON: %s", G.reset_reason);
        assert_string_equal(cJSON_GetObjectItem(j, "reason")->valuestring, "connection_cut");
        assert_int_equal(cJSON_GetObjectItem(j, "attempt")->valueint, 1);
        assert_string_equal(cJSON_GetObjectItem(j, "provider")->valuestring, "mock");
        assert_string_equal(cJSON_GetObjectItem(j, "model")->valuestring, "m1");
        cJSON_Delete(j);
        {
            /* the second request's body: the original one, model rewritten */
            static char raw[8192];
            long n = mockprov_log_raw(MP, 1, raw, sizeof raw);
            const char *b;
            assert_true(n > 0 && n < (long)sizeof raw);
            raw[n] = '\0';
            b = strstr(raw, "\r\n\r\n");
            assert_non_null(b);
            assert_string_equal(b + 4, "{\"model\":\"m2\",\"stream\":true,\"messages\":"
                                       "[{\"role\":\"user\",\"content\":\"h\xc3\xa9llo\"}]}");
        }
        assert_no_secret(r);
        aigw_response_free(r);
        aigw_client_free(c);
    }
}

/* Two tokens, then silence: stream_failed idle_timeout after about
 * streamIdleTimeout. */
static void test_stall_after_tokens_idle_timeout(void **state)
{
    static const char *const stall[] = {TOK("one"), TOK("two"), NULL};
    aigw_client *c = client_for(MP, GW_TIGHT);
    aigw_response *r;
    int64_t quiet;
    (void)state;
    stream_rule(MP, K_PRIMARY, NULL, 200, stall, 0, MOCKPROV_END_STALL, 0);
    r = stream_body(c, BODY, 0);
    assert_attempts(r, "primary:fail_fast:stream_failed");
    assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_STREAM_FAILED);
    assert_string_equal(aigw_response_error_code(r), "stream_failed");
    assert_trace_has(r, "\"streamError\":\"idle_timeout\"");
    assert_received(MP, 1, 0, 0);
    assert_got(TOK("one") TOK("two"));
    quiet = G.t_end - G.t_last_data;
    if (quiet < TIGHT_MS - 20 || quiet > TIGHT_MS + 1500)
        fail_msg("ended %lld ms after the last bytes, want ~%d", (long long)quiet, TIGHT_MS);
    aigw_response_free(r);
    aigw_client_free(c);
}

/* A malformed event (data that is not JSON) is passed through, counted and
 * skipped; the stream is served; the next request works. */
static void test_malformed_event_served(void **state)
{
    static const char *const bad[] = {ROLE, TOK("a"), "data: {not json\n\n", TOK("b"), FINISH,
                                      DONE, NULL};
    aigw_client *c = client_for(MP, GW_CALM);
    aigw_response *r;
    (void)state;
    stream_rule(MP, K_PRIMARY, NULL, 200, bad, 0, MOCKPROV_END_OK, 1);
    r = stream_body(c, BODY, -1);
    assert_attempts(r, "primary:succeeded:succeeded");
    assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_SERVED);
    assert_trace_has(r, "\"malformedEvents\":1");
    assert_got(ROLE TOK("a") "data: {not json\n\n" TOK("b") FINISH DONE);
    aigw_response_free(r);
    /* the process and the client are fine: the next request is served */
    stream_rule(MP, K_PRIMARY, NULL, 200, HEALTHY, 0, MOCKPROV_END_OK, 0);
    r = stream_body(c, BODY, -1);
    assert_attempts(r, "primary:succeeded:succeeded");
    assert_null(strstr(aigw_response_trace_json(r), "malformedEvents"));
    assert_got(HEALTHY_BYTES);
    assert_received(MP, 2, 0, 0);
    aigw_response_free(r);
    aigw_client_free(c);
}

/* No [DONE] but a finish_reason (and usage): a success.  When the body ends
 * (END_OK), at once; when the connection stays open (END_STALL), after the
 * one-second grace - not the 3 s streamIdleTimeout. */
static void test_no_done_with_finish_reason(void **state)
{
    static const char *const no_done[] = {ROLE, TOK("a"), FINISH, USAGE, NULL};
    aigw_client *c = client_for(MP, GW_BASE ",\"firstTokenTimeout\":\"3s\","
                                            "\"streamIdleTimeout\":\"3s\"");
    aigw_response *r;
    int64_t el;
    (void)state;
    stream_rule(MP, K_PRIMARY, NULL, 200, no_done, 0, MOCKPROV_END_OK, 1);
    r = stream_body(c, BODY, 0);
    assert_attempts(r, "primary:succeeded:succeeded");
    assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_SERVED);
    assert_got(ROLE TOK("a") FINISH USAGE);
    el = G.t_end - G.t_start;
    if (el > 700)
        fail_msg("a stream that ended took %lld ms", (long long)el);
    aigw_response_free(r);

    stream_rule(MP, K_PRIMARY, NULL, 200, no_done, 0, MOCKPROV_END_STALL, 1);
    r = stream_body(c, BODY, 0);
    assert_attempts(r, "primary:succeeded:succeeded");
    assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_SERVED);
    assert_null(strstr(aigw_response_trace_json(r), "streamError"));
    assert_got(ROLE TOK("a") FINISH USAGE);
    el = G.t_end - G.t_last_data;
    if (el < 900 || el > 2500)
        fail_msg("served %lld ms after the last bytes, want ~1000 (the grace)", (long long)el);
    assert_received(MP, 2, 0, 0);
    aigw_response_free(r);
    aigw_client_free(c);
}

/* The caller cancels from on_data: the request ends at once (the rest of the
 * stream would never come), nothing else is sent, the client goes on. */
static void test_caller_cancels_from_on_data(void **state)
{
    static const char *const slow[] = {TOK("a"), TOK("b"), TOK("c"), TOK("d"), NULL};
    aigw_client *c = client_for(MP, GW_CALM);
    aigw_response *r;
    (void)state;
    stream_rule(MP, K_PRIMARY, NULL, 200, slow, 100, MOCKPROV_END_STALL, 1);
    G.cancel_at = 2;
    r = stream_body(c, BODY, 1);
    G.cancel_at = 0;
    assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_CANCELLED);
    assert_string_equal(aigw_response_error_code(r), "cancelled");
    assert_attempts(r, "primary:fail_fast:stream_failed");
    assert_got(TOK("a") TOK("b"));
    assert_int_equal(G.data_calls, 2);
    assert_int_equal(G.resets, 0); /* restart on, but a cancel is no break */
    assert_received(MP, 1, 0, 0);
    if (G.t_end - G.t_start > 1500)
        fail_msg("a cancel took %lld ms", (long long)(G.t_end - G.t_start));
    aigw_response_free(r);

    stream_rule(MP, K_PRIMARY, NULL, 200, HEALTHY, 0, MOCKPROV_END_OK, 0);
    r = stream_body(c, BODY, -1);
    assert_attempts(r, "primary:succeeded:succeeded");
    assert_got(HEALTHY_BYTES);
    assert_received(MP, 2, 0, 0);
    aigw_response_free(r);
    aigw_client_free(c);
}


/* A role-only chunk, then the connection is cut: nothing was committed, so
 * the request fails over (the host: to the next step) unseen. */
static void test_cut_before_first_token_fails_over(void **state)
{
    static const char *const role_cut[] = {ROLE, NULL};
    aigw_client *c = client_for(MP, GW_CALM);
    aigw_response *r;
    (void)state;
    stream_rule(MP, K_PRIMARY, NULL, 200, role_cut, 0, MOCKPROV_END_CUT, 0);
    stream_rule(MP, K_THIRD, NULL, 200, HEALTHY, 0, MOCKPROV_END_OK, 0);
    r = stream_body(c, BODY, 1);
    assert_attempts(r, "primary:next_backend:failed third:succeeded:succeeded");
    assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_SERVED);
    assert_string_equal(aigw_attempt_error_class(aigw_response_attempt(r, 0)), "network");
    assert_received(MP, 1, 0, 1);
    assert_got(HEALTHY_BYTES);
    assert_int_equal(G.starts, 1);
    assert_int_equal(G.resets, 0); /* nothing to discard: no reset */
    aigw_response_free(r);
    aigw_client_free(c);
}

/* Keep-alive comments are not content: they do not hold the first-token
 * deadline off. */
static void test_pings_do_not_extend_first_token_timeout(void **state)
{
    static const char *const pings[] = {": ping\n\n", ": ping\n\n", ": ping\n\n", ": ping\n\n",
                                        ": ping\n\n", ": ping\n\n", ": ping\n\n", ": ping\n\n",
                                        NULL};
    aigw_client *c = client_for(MP, GW_TIGHT);
    aigw_response *r;
    int64_t d;
    (void)state;
    /* a ping every 100 ms, for 800 ms, then silence */
    stream_rule(MP, K_PRIMARY, NULL, 200, pings, 100, MOCKPROV_END_STALL, 0);
    stream_rule(MP, K_THIRD, NULL, 200, HEALTHY, 0, MOCKPROV_END_OK, 0);
    r = stream_body(c, BODY, -1);
    assert_attempts(r, "primary:next_backend:timed_out third:succeeded:succeeded");
    assert_received(MP, 1, 0, 1);
    d = aigw_attempt_duration_ms(aigw_response_attempt(r, 0));
    if (d < TIGHT_MS - 20 || d > TIGHT_MS + 1500)
        fail_msg("the pinging attempt lasted %lld ms, want ~%d", (long long)d, TIGHT_MS);
    assert_got(HEALTHY_BYTES);
    aigw_response_free(r);
    aigw_client_free(c);
}

/* One event past maxEventBytes in a committed stream: stream_failed with
 * event_too_large; the caller has what came before it. */
static void test_event_too_large_after_commit(void **state)
{
    static char big[2100];
    static const char *const chunks[] = {TOK("x"), big, FINISH, DONE, NULL};
    aigw_client *c = client_for(MP, GW_CALM ",\"maxEventBytes\":1024");
    aigw_response *r;
    (void)state;
    memset(big, 0, sizeof big);
    memcpy(big, "data: \"", 7);
    memset(big + 7, 'a', 2000);
    memcpy(big + 2007, "\"\n\n", 3);
    stream_rule(MP, K_PRIMARY, NULL, 200, chunks, 0, MOCKPROV_END_OK, 0);
    r = stream_body(c, BODY, 0);
    assert_attempts(r, "primary:fail_fast:stream_failed");
    assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_STREAM_FAILED);
    assert_trace_has(r, "\"streamError\":\"event_too_large\"");
    assert_received(MP, 1, 0, 0);
    assert_true(G.len >= strlen(TOK("x")));
    assert_memory_equal(G.bytes, TOK("x"), strlen(TOK("x")));
    assert_null(strstr(G.bytes, FINISH));
    aigw_response_free(r);
    aigw_client_free(c);
}

/* ---- several threads streaming through one client ---- */

#define CC_THREADS 4
#define CC_PER_THREAD 40

typedef struct cc_state {
    aigw_client *c;
    int index;
    char bytes[4096];
    size_t len;
    int starts;
    int failures; /* checks that failed (cmocka asserts are for the main thread) */
    char first_failure[512];
} cc_state;

static int cc_start(void *ud, int status, const aigw_header *h, size_t n)
{
    (void)h;
    (void)n;
    ((cc_state *)ud)->starts++;
    return status == 200 ? 0 : 1;
}

static int cc_data(void *ud, const char *data, size_t len)
{
    cc_state *s = ud;
    if (s->len + len >= sizeof s->bytes)
        return 1;
    memcpy(s->bytes + s->len, data, len);
    s->len += len;
    return 0;
}

static void cc_fail(cc_state *s, int i, const char *what, const aigw_response *r)
{
    if (s->failures++ == 0)
        snprintf(s->first_failure, sizeof s->first_failure, "thread %d request %d: %s; %s",
                 s->index, i, what, r ? aigw_response_trace_json(r) : "");
}

static void *cc_thread(void *arg)
{
    static const aigw_stream_handler h = {AIGW_STREAM_VERSION, cc_start, cc_data, NULL, NULL};
    static const char healthy[] = "{\"model\":\"mock:h\",\"stream\":true,\"messages\":[]}";
    static const char limited[] = "{\"model\":\"mock:r\",\"stream\":true,\"messages\":[]}";
    cc_state *s = arg;
    int i;
    for (i = 0; i < CC_PER_THREAD; i++) {
        aigw_request *req = NULL;
        aigw_response *r = NULL;
        const char *body = (i + s->index) % 2 ? limited : healthy;
        char got[256];
        s->len = 0;
        s->starts = 0;
        if (aigw_request_new(&req) != AIGW_OK ||
            aigw_request_set_body(req, body, strlen(body)) != AIGW_OK ||
            aigw_client_stream(s->c, req, &h, s, &r, NULL) != AIGW_OK) {
            cc_fail(s, i, "aigw_client_stream failed", NULL);
            aigw_request_free(req);
            continue;
        }
        aigw_request_free(req);
        if (attempts_string(r, ATTEMPT_FIELDS, got, sizeof got) != 0)
            cc_fail(s, i, "attempt numbers", r);
        else if (aigw_response_outcome(r) != AIGW_OUTCOME_SERVED)
            cc_fail(s, i, "not served", r);
        else if (strcmp(got, body == healthy ? "primary:succeeded:succeeded"
                                             : "primary:next_key:failed backup:succeeded:succeeded") != 0)
            cc_fail(s, i, got, r);
        else if (s->starts != 1 || s->len != strlen(HEALTHY_BYTES) ||
                 memcmp(s->bytes, HEALTHY_BYTES, s->len) != 0)
            cc_fail(s, i, "wrong bytes", r);
        aigw_response_free(r);
    }
    return NULL;
}

static void test_concurrent_streams_one_client(void **state)
{
    aigw_client *c = client_for(MP, GW_NO_MEMORY);
    pthread_t th[CC_THREADS];
    static cc_state st[CC_THREADS];
    int i;
    (void)state;
    /* a few ms between chunks so that the streams overlap */
    stream_rule(MP, NULL, "h", 200, HEALTHY, 2, MOCKPROV_END_OK, 0);
    mp_add_rule(MP, MOCKPROV_RESPOND, K_PRIMARY, "r", 429, NULL, RL_BODY, 0);
    stream_rule(MP, NULL, "r", 200, HEALTHY, 2, MOCKPROV_END_OK, 0);
    for (i = 0; i < CC_THREADS; i++) {
        memset(&st[i], 0, sizeof st[i]);
        st[i].c = c;
        st[i].index = i;
        assert_int_equal(pthread_create(&th[i], NULL, cc_thread, &st[i]), 0);
    }
    for (i = 0; i < CC_THREADS; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    for (i = 0; i < CC_THREADS; i++)
        if (st[i].failures)
            fail_msg("%d failures; first: %s", st[i].failures, st[i].first_failure);
    /* half of each thread's requests were rate limited once */
    assert_received(MP, CC_THREADS * CC_PER_THREAD, CC_THREADS * CC_PER_THREAD / 2, 0);
    aigw_client_free(c);
}

/* ---- the soak ---- */

#define SOAK_N 1000
#define SOAK_HALF (SOAK_N / 2)

static const char SOAK_HEALTHY[] = "{\"model\":\"mock:h\",\"stream\":true,\"messages\":[]}";
static const char SOAK_429[] = "{\"model\":\"mock:r\",\"stream\":true,\"messages\":[]}";
static const char SOAK_INBAND[] = "{\"model\":\"mock:e\",\"stream\":true,\"messages\":[]}";
static const char SOAK_CUT[] = "{\"model\":\"mock:c\",\"models\":[\"mock:h2\"],\"stream\":true,"
                               "\"messages\":[]}";

static void soak_rules(mockprov *m)
{
    static const char *const inband[] = {A_START, A_OVERLOADED, NULL};
    static const char *const cut[] = {TOK("one"), TOK("two"), NULL};
    stream_rule(m, NULL, "h", 200, HEALTHY, 0, MOCKPROV_END_OK, 0);
    mp_add_rule(m, MOCKPROV_RESPOND, K_PRIMARY, "r", 429, NULL, RL_BODY, 0);
    stream_rule(m, NULL, "r", 200, HEALTHY, 0, MOCKPROV_END_OK, 0);
    stream_rule(m, K_PRIMARY, "e", 200, inband, 0, MOCKPROV_END_OK, 0);
    stream_rule(m, NULL, "e", 200, HEALTHY, 0, MOCKPROV_END_OK, 0);
    stream_rule(m, K_PRIMARY, "c", 200, cut, 0, MOCKPROV_END_CUT, 0);
    stream_rule(m, NULL, "h2", 200, HEALTHY, 0, MOCKPROV_END_OK, 0);
}

static long rss_kib(void)
{
    long pages_total = 0, pages_res = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return -1;
    if (fscanf(f, "%ld %ld", &pages_total, &pages_res) != 2)
        pages_res = -1;
    fclose(f);
    return pages_res < 0 ? -1 : pages_res * (sysconf(_SC_PAGESIZE) / 1024);
}

static void soak_one(aigw_client *c, int i)
{
    aigw_response *r;
    char got[512];
    switch (i % 4) {
    case 0:
        r = stream_body(c, SOAK_HEALTHY, -1);
        assert_int_equal(attempts_string(r, ATTEMPT_FIELDS, got, sizeof got), 0);
        if (strcmp(got, "primary:succeeded:succeeded") != 0)
            fail_msg("request %d (healthy): %s", i, aigw_response_trace_json(r));
        assert_int_equal(G.resets, 0);
        break;
    case 1:
        r = stream_body(c, SOAK_429, -1);
        assert_int_equal(attempts_string(r, ATTEMPT_FIELDS, got, sizeof got), 0);
        if (strcmp(got, "primary:next_key:failed backup:succeeded:succeeded") != 0)
            fail_msg("request %d (429): %s", i, aigw_response_trace_json(r));
        assert_int_equal(G.resets, 0);
        break;
    case 2:
        r = stream_body(c, SOAK_INBAND, -1);
        assert_int_equal(attempts_string(r, ATTEMPT_FIELDS, got, sizeof got), 0);
        if (strcmp(got, "primary:next_key:failed backup:succeeded:succeeded") != 0)
            fail_msg("request %d (in-band): %s", i, aigw_response_trace_json(r));
        assert_int_equal(G.resets, 0);
        break;
    default:
        r = stream_body(c, SOAK_CUT, 1);
        assert_int_equal(attempts_string(r, ATTEMPT_FIELDS, got, sizeof got), 0);
        if (strcmp(got, "primary:next_backend:stream_failed primary:succeeded:succeeded") != 0)
            fail_msg("request %d (cut): %s", i, aigw_response_trace_json(r));
        assert_int_equal(G.resets, 1);
        assert_int_equal(G.before_len, strlen(TOK("one") TOK("two")));
        assert_memory_equal(G.before_reset, TOK("one") TOK("two"), G.before_len);
        assert_non_null(strstr(G.reset_reason, "\"reason\":\"connection_cut\""));
        break;
    }
    if (aigw_response_outcome(r) != AIGW_OUTCOME_SERVED)
        fail_msg("request %d: outcome %s", i, aigw_outcome_name(aigw_response_outcome(r)));
    assert_got(HEALTHY_BYTES);
    assert_int_equal(G.starts, G.resets + 1);
    aigw_response_free(r);
}

/* Per half: 125 of each kind; primary sees 125 + 125 + 125 + 250, backup
 * 125 + 125. */
static void soak_assert_half(mockprov *m)
{
    long q = SOAK_HALF / 4;
    assert_received(m, 5 * q, 2 * q, 0);
}

static void test_soak_mixed_faults(void **state)
{
    aigw_client *c = client_for(MP, GW_NO_MEMORY);
    long rss_half, rss_end, total = 0;
    int64_t t0 = now_ms();
    int i;
    (void)state;
    soak_rules(MP);
    for (i = 0; i < SOAK_HALF; i++)
        soak_one(c, i);
    soak_assert_half(MP);
    total += mockprov_count(MP, NULL);
    /* The mock's own request log grows with every request: drop it so that
     * the second half measures the client, not the mock. */
    mockprov_reset(MP);
    soak_rules(MP);
    rss_half = rss_kib();
    for (; i < SOAK_N; i++)
        soak_one(c, i);
    rss_end = rss_kib();
    soak_assert_half(MP);
    total += mockprov_count(MP, NULL);
    assert_int_equal(total, 7 * SOAK_N / 4);
    print_message("soak: %d streamed requests in %lld ms; %ld requests upstream; "
                  "RSS %ld KiB after %d, %ld KiB after %d (%+ld KiB); %ld connections "
                  "in the second half\n",
                  SOAK_N, (long long)(now_ms() - t0), total, rss_half, SOAK_HALF, rss_end,
                  SOAK_N, rss_end - rss_half, mockprov_connection_count(MP));
    if (!UNDER_ASAN) {
        assert_true(rss_half > 0 && rss_end > 0);
        if (rss_end - rss_half > 3 * 1024)
            fail_msg("RSS grew by %ld KiB over the last %d requests", rss_end - rss_half,
                     SOAK_N - SOAK_HALF);
    }
    aigw_client_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_healthy_stream_byte_identical, setup),
        cmocka_unit_test_setup(test_done_streams_reuse_the_connection, setup),
        cmocka_unit_test_setup(test_429_before_first_token_backup_streams, setup),
        cmocka_unit_test_setup(test_inband_error_before_first_token_backup, setup),
        cmocka_unit_test_setup(test_silence_until_first_token_timeout, setup),
        cmocka_unit_test_setup(test_cut_after_tokens_restart_off, setup),
        cmocka_unit_test_setup(test_cut_after_tokens_restart_on, setup),
        cmocka_unit_test_setup(test_stall_after_tokens_idle_timeout, setup),
        cmocka_unit_test_setup(test_malformed_event_served, setup),
        cmocka_unit_test_setup(test_no_done_with_finish_reason, setup),
        cmocka_unit_test_setup(test_caller_cancels_from_on_data, setup),
        cmocka_unit_test_setup(test_cut_before_first_token_fails_over, setup),
        cmocka_unit_test_setup(test_pings_do_not_extend_first_token_timeout, setup),
        cmocka_unit_test_setup(test_event_too_large_after_commit, setup),
        cmocka_unit_test_setup(test_concurrent_streams_one_client, setup),
        cmocka_unit_test_setup(test_soak_mixed_faults, setup),
    };
    return cmocka_run_group_tests(tests, mp_group_setup, mp_group_teardown);
}
