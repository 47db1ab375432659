/*
 * test_engine.c - the attempt loop through a mock transport and a fake clock:
 * the exact attempt sequence for every row of the failover policy, the
 * waits, the final answers, and the bytes handed to the transport.
 */
#define _GNU_SOURCE /* memmem */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "aigw.h"
#include "engine_int.h"
#include "internal.h"
#include "support.h"

/* ---- configurations ---- */

#define KEYS                                                                               \
    "\"providerKeys\":["                                                                   \
    "{\"id\":\"a\",\"providerId\":\"fake\",\"value\":\"sk-aaaa-1111\"},"                   \
    "{\"id\":\"b\",\"providerId\":\"fake\",\"value\":\"sk-bbbb-2222\"},"                   \
    "{\"id\":\"c\",\"providerId\":\"fake\",\"value\":\"sk-cccc-3333\"},"                   \
    "{\"id\":\"d\",\"providerId\":\"other\",\"value\":\"sk-dddd-4444\"}]"

#define PROVIDERS                                                                          \
    "\"providers\":["                                                                      \
    "{\"providerId\":\"fake\",\"name\":\"Fake\",\"baseUrl\":\"http://127.0.0.1:9/v1\","    \
    "\"models\":[{\"modelId\":\"m1\"},{\"modelId\":\"m2\"},"                                \
    "{\"modelId\":\"m1-alias\",\"providerModelId\":\"m1\"}]},"                            \
    "{\"providerId\":\"other\",\"name\":\"Other\",\"baseUrl\":\"http://127.0.0.1:8/v1\"}]"

/* fake: step 0 [a, b], step 1 [c]; other: [d]. */
static const char *CFG_TWO_STEPS =
    "{" PROVIDERS "," KEYS ","
    "\"accessKeyConfiguration\":{\"name\":\"t\",\"router\":{\"rules\":["
    "{\"provider\":\"fake\",\"steps\":["
    "{\"type\":\"user\",\"keySelectionStrategy\":\"ordered\",\"keys\":[{\"id\":\"a\"},{\"id\":\"b\"}]},"
    "{\"type\":\"user\",\"keys\":[{\"id\":\"c\"}]}]},"
    "{\"provider\":\"other\",\"steps\":[{\"type\":\"user\",\"keys\":[{\"id\":\"d\"}]}]}]}},"
    "\"gatewayConfig\":{\"totalTimeout\":\"120s\",\"perRequestTimeout\":\"60s\"}}";

static const char *BODY = "{\"model\":\"fake:m1\",\"models\":[\"other:m9\"],"
                          "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";

/* A client on json, sending through the scripted transport M. */
static aigw_client *client_for(const char *json)
{
    return mock_attach(client_from_json(json));
}

/* Asserts the attempts as "key:verdict" words, e.g. "a:next_key b:succeeded". */
#define assert_attempts(r, want) assert_attempts_as(r, "key:verdict", want)

/* Asserts the credentials the transport saw, e.g. "sk-aaaa-1111 sk-bbbb-2222". */
#define assert_calls(want) assert_calls_as("key", want)

#define RL_BODY "{\"error\":{\"message\":\"Rate limit reached\",\"code\":\"rate_limit_exceeded\"}}"
#define QUOTA_BODY "{\"error\":{\"message\":\"You exceeded your current quota\",\"type\":\"insufficient_quota\",\"code\":\"insufficient_quota\"}}"

/* ---- the policy table, row by row ---- */

static void test_success_first_key(void **state)
{
    aigw_client *c = client_for(CFG_TWO_STEPS);
    aigw_response *r;
    size_t len;
    (void)state;
    push(200, "{\"id\":\"x\",\"choices\":[]}");
    r = send_body(c, BODY);
    assert_attempts(r, "a:succeeded");
    assert_calls("sk-aaaa-1111");
    assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_SERVED);
    assert_int_equal(aigw_response_status(r), 200);
    assert_string_equal(aigw_response_body(r, &len), "{\"id\":\"x\",\"choices\":[]}");
    assert_string_equal(M.urls[0], "http://127.0.0.1:9/v1/chat/completions");
    /* model rewritten to the provider's id, models removed, the rest kept */
    assert_string_equal(M.bodies[0], "{\"model\":\"m1\","
                                     "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}");
    assert_null(aigw_response_error_code(r));
    assert_string_equal(aigw_response_model(r), "m1");
    assert_true(aigw_attempt_served(aigw_response_attempt(r, 0)));
    aigw_response_free(r);
    aigw_client_free(c);
    assert_int_equal(M.destroyed, 1);
}

static void test_rate_limit_next_key(void **state)
{
    aigw_client *c = client_for(CFG_TWO_STEPS);
    aigw_response *r;
    (void)state;
    push(429, RL_BODY);
    r = send_body(c, BODY);
    assert_attempts(r, "a:next_key b:succeeded");
    assert_calls("sk-aaaa-1111 sk-bbbb-2222");
    assert_string_equal(aigw_attempt_error_class(aigw_response_attempt(r, 0)), "rate_limit");
    assert_int_equal(aigw_attempt_status_code(aigw_response_attempt(r, 0)), 429);
    assert_int_equal(M.clock.n_sleeps, 0); /* sideways before waiting */
    aigw_response_free(r);
    aigw_client_free(c);
}

static void test_auth_401_403_next_key(void **state)
{
    aigw_client *c = client_for(CFG_TWO_STEPS);
    aigw_response *r;
    (void)state;
    push(401, "{\"error\":{\"code\":\"invalid_api_key\"}}");
    push(403, "{\"error\":{\"code\":\"forbidden\"}}");
    r = send_body(c, BODY);
    /* a 401, b 403: the step is spent, next step's c serves */
    assert_attempts(r, "a:next_key b:next_backend c:succeeded");
    assert_calls("sk-aaaa-1111 sk-bbbb-2222 sk-cccc-3333");
    assert_int_equal(aigw_attempt_step(aigw_response_attempt(r, 2)), 1);
    aigw_response_free(r);
    aigw_client_free(c);
}

static void test_quota_next_quota_pool(void **state)
{
    aigw_client *c = client_for(CFG_TWO_STEPS);
    aigw_response *r;
    (void)state;
    push(429, QUOTA_BODY);
    push(402, "{\"type\":\"error\",\"error\":{\"type\":\"billing_error\"}}");
    r = send_body(c, BODY);
    assert_attempts(r, "a:next_quota_pool b:next_backend c:succeeded");
    assert_string_equal(aigw_attempt_error_class(aigw_response_attempt(r, 0)), "quota");
    assert_string_equal(aigw_attempt_error_class(aigw_response_attempt(r, 1)), "quota");
    assert_int_equal(M.clock.n_sleeps, 0);
    aigw_response_free(r);
    aigw_client_free(c);
}

static void test_rate_limit_waits_shortest_retry_after(void **state)
{
    aigw_client *c = client_for(CFG_TWO_STEPS);
    aigw_response *r;
    (void)state;
    push_h(429, "retry-after", "3", RL_BODY);
    push_h(429, "retry-after", "1", RL_BODY);
    r = send_body(c, BODY);
    /* both keys limited: wait the shorter Retry-After (b's 1 s), retry b */
    assert_attempts(r, "a:next_key b:retry_same_backend b:succeeded");
    assert_calls("sk-aaaa-1111 sk-bbbb-2222 sk-bbbb-2222");
    assert_int_equal(M.clock.n_sleeps, 1);
    assert_int_equal(M.clock.slept[0], 1000);
    assert_int_equal(aigw_attempt_requested_wait_ms(aigw_response_attempt(r, 1)), 1000);
    assert_int_equal(aigw_attempt_waited_ms(aigw_response_attempt(r, 1)), 1000);
    aigw_response_free(r);
    aigw_client_free(c);
}

static void test_rate_limit_wait_too_long_moves_down(void **state)
{
    aigw_client *c = client_for(CFG_TWO_STEPS);
    aigw_response *r;
    (void)state;
    /* retryAfterMax is 5 s: a 30 s wait is not waited, the next step serves */
    push_h(429, "retry-after", "30", RL_BODY);
    push_h(429, "retry-after", "30", RL_BODY);
    r = send_body(c, BODY);
    assert_attempts(r, "a:next_key b:next_backend c:succeeded");
    assert_int_equal(M.clock.n_sleeps, 0);
    aigw_response_free(r);
    aigw_client_free(c);
}

static void test_server_error_backoff_then_next_model(void **state)
{
    aigw_client *c = client_for(
        "{" PROVIDERS "," KEYS ",\"accessKeyConfiguration\":{\"name\":\"t\",\"router\":{\"rules\":["
        "{\"provider\":\"fake\",\"steps\":[{\"type\":\"user\",\"keys\":[{\"id\":\"a\"}]}]},"
        "{\"provider\":\"other\",\"steps\":[{\"type\":\"user\",\"keys\":[{\"id\":\"d\"}]}]}]}}}");
    aigw_response *r;
    (void)state;
    push(500, "{\"error\":{\"type\":\"server_error\"}}");
    push(502, "<html>bad gateway</html>");
    push(529, "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}");
    r = send_body(c, BODY);
    /* one key: two jittered back-offs on it (sameBackendRetries 2), then the
     * fallback model on the other provider */
    assert_attempts(r, "a:retry_same_backend a:retry_same_backend a:next_backend d:succeeded");
    assert_calls("sk-aaaa-1111 sk-aaaa-1111 sk-aaaa-1111 sk-dddd-4444");
    assert_int_equal(M.clock.n_sleeps, 2);
    assert_in_range(M.clock.slept[0], 125, 250); /* 250 ms base, jitter [b/2, b] */
    assert_in_range(M.clock.slept[1], 250, 500);
    assert_string_equal(aigw_attempt_error_class(aigw_response_attempt(r, 2)), "overloaded");
    assert_string_equal(aigw_attempt_provider(aigw_response_attempt(r, 3)), "other");
    assert_string_equal(aigw_attempt_model(aigw_response_attempt(r, 3)), "m9");
    assert_string_equal(M.urls[3], "http://127.0.0.1:8/v1/chat/completions");
    assert_string_equal(aigw_response_model(r), "m9");
    aigw_response_free(r);
    aigw_client_free(c);
}

static void test_timeout_skips_sibling_keys(void **state)
{
    aigw_client *c = client_for(CFG_TWO_STEPS);
    aigw_response *r;
    (void)state;
    push_tr(AIGW_TR_TIMEOUT, 60000);
    r = send_body(c, BODY);
    /* b shares a's host: skipped; never retried; step 1's c serves */
    assert_attempts(r, "a:next_backend c:succeeded");
    assert_calls("sk-aaaa-1111 sk-cccc-3333");
    assert_string_equal(aigw_attempt_transport_error(aigw_response_attempt(r, 0)), "timeout");
    assert_string_equal(aigw_attempt_error_class(aigw_response_attempt(r, 0)), "timeout");
    assert_int_equal(aigw_attempt_status_code(aigw_response_attempt(r, 0)), 0);
    assert_int_equal(aigw_attempt_duration_ms(aigw_response_attempt(r, 0)), 60000);
    assert_int_equal(M.clock.n_sleeps, 0);
    aigw_response_free(r);
    aigw_client_free(c);
}

static void test_network_errors_skip_sibling_keys(void **state)
{
    static const aigw_transport_result trs[] = {AIGW_TR_CONNECT, AIGW_TR_RESET, AIGW_TR_DNS,
                                                AIGW_TR_TLS};
    size_t i;
    (void)state;
    for (i = 0; i < sizeof trs / sizeof trs[0]; i++) {
        aigw_client *c;
        aigw_response *r;
        mock_reset(NULL);
        c = client_for(CFG_TWO_STEPS);
        push_tr(trs[i], 1);
        r = send_body(c, BODY);
        assert_attempts(r, "a:next_backend c:succeeded");
        assert_string_equal(aigw_attempt_error_class(aigw_response_attempt(r, 0)), "network");
        aigw_response_free(r);
        aigw_client_free(c);
    }
}

static void test_408_is_timeout(void **state)
{
    aigw_client *c = client_for(CFG_TWO_STEPS);
    aigw_response *r;
    (void)state;
    push(408, "");
    r = send_body(c, BODY);
    assert_attempts(r, "a:next_backend c:succeeded");
    aigw_response_free(r);
    aigw_client_free(c);
}

static void test_redirect_not_served(void **state)
{
    aigw_client *c = client_for(CFG_TWO_STEPS);
    aigw_response *r;
    (void)state;
    push_h(302, "location", "http://127.0.0.1:7/steal", "");
    r = send_body(c, BODY);
    assert_attempts(r, "a:next_backend c:succeeded");
    assert_string_equal(aigw_attempt_error_class(aigw_response_attempt(r, 0)), "redirect");
    assert_null(aigw_response_header_get(r, "location"));
    aigw_response_free(r);
    aigw_client_free(c);
}

static void test_context_length_next_model_never_again(void **state)
{
    aigw_client *c = client_for(CFG_TWO_STEPS);
    aigw_response *r;
    (void)state;
    push(400, "{\"error\":{\"message\":\"This model's maximum context length is 128000 tokens.\","
              "\"type\":\"invalid_request_error\",\"code\":\"context_length_exceeded\"}}");
    push(500, "{}");
    /* primary fake:m1 -> fallback fake:m2 -> other:m1 (same model again) */
    r = send_body(c, "{\"model\":\"fake:m1\",\"models\":[\"fake:m2\",\"other:m1\",\"other:m3\"]}");
    /* m1 exceeded: step 0's sibling and step 1 are not tried; m2 then fails
     * on a 500 -> b; other:m1 is skipped, other:m3 serves */
    assert_attempts(r, "a:next_backend a:next_key b:succeeded");
    assert_string_equal(aigw_attempt_model(aigw_response_attempt(r, 1)), "m2");
    assert_string_equal(M.bodies[1], "{\"model\":\"m2\"}");
    aigw_response_free(r);

    /* The ban is (provider, upstream model): fake:m1-alias is m1 upstream
     * and is skipped; other:m1 is another provider's m1, whose context
     * window may differ, and is tried. */
    mock_reset(NULL);
    push(400, "{\"error\":{\"code\":\"context_length_exceeded\"}}");
    push(400, "{\"error\":{\"code\":\"context_length_exceeded\"}}");
    r = send_body(c, "{\"model\":\"fake:m1\",\"models\":[\"fake:m2\",\"fake:m1-alias\","
                     "\"other:m1\",\"other:m3\"]}");
    assert_attempts(r, "a:next_backend a:next_backend d:succeeded");
    assert_string_equal(aigw_attempt_provider(aigw_response_attempt(r, 2)), "other");
    assert_string_equal(aigw_attempt_model(aigw_response_attempt(r, 2)), "m1");
    assert_int_equal(M.n_calls, 3);
    {
        const char *prov, *model, *reason;
        assert_int_equal(aigw_response_skip_count(r), 1);
        assert_int_equal(aigw_response_skip(r, 0, &prov, &model, &reason), AIGW_OK);
        assert_string_equal(prov, "fake");
        assert_string_equal(model, "m1-alias");
        assert_string_equal(reason, "context_length_exceeded");
    }
    aigw_response_free(r);
    aigw_client_free(c);
}

static void test_fail_fast_returns_upstream_answer(void **state)
{
    static const struct {
        int status;
        const char *body;
    } cases[] = {
        {400, "{\"error\":{\"message\":\"Your request was rejected as a result of our safety "
              "system.\",\"code\":\"content_policy_violation\"}}"},
        {400, "{\"error\":{\"message\":\"Unrecognized request argument supplied: foo\"}}"},
        {404, "{\"error\":{\"message\":\"no such model\"}}"},
        {413, "{\"type\":\"error\",\"error\":{\"type\":\"request_too_large\"}}"},
        {422, "{\"detail\":\"unprocessable\"}"},
    };
    size_t i;
    (void)state;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        aigw_client *c;
        aigw_response *r;
        size_t len;
        mock_reset(NULL);
        c = client_for(CFG_TWO_STEPS);
        push_h(cases[i].status, "content-type", "application/json", cases[i].body);
        r = send_body(c, BODY);
        assert_attempts(r, "a:fail_fast");
        assert_int_equal(M.n_calls, 1);
        assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_FAIL_FAST);
        assert_int_equal(aigw_response_status(r), cases[i].status);
        assert_string_equal(aigw_response_body(r, &len), cases[i].body);
        assert_int_equal(len, strlen(cases[i].body));
        assert_string_equal(aigw_response_header_get(r, "content-type"), "application/json");
        assert_null(aigw_response_error_code(r));
        aigw_response_free(r);
        aigw_client_free(c);
    }
}

static void test_503_with_retry_after_is_rate_limit(void **state)
{
    aigw_client *c = client_for(CFG_TWO_STEPS);
    aigw_response *r;
    (void)state;
    push_h(503, "retry-after", "2", "{}");
    r = send_body(c, BODY);
    assert_attempts(r, "a:next_key b:succeeded");
    assert_string_equal(aigw_attempt_error_class(aigw_response_attempt(r, 0)), "rate_limit");
    assert_int_equal(aigw_attempt_requested_wait_ms(aigw_response_attempt(r, 0)), 2000);
    aigw_response_free(r);
    aigw_client_free(c);
}

static void test_provider_model_id_sent_upstream(void **state)
{
    aigw_client *c = client_for(
        "{\"providers\":[{\"providerId\":\"my-ollama\",\"name\":\"Local\","
        "\"baseUrl\":\"http://127.0.0.1:5\",\"models\":[{\"modelId\":\"llama3.2\","
        "\"providerModelId\":\"llama3.2:3b-instruct\"}]}]}");
    aigw_response *r;
    (void)state;
    /* a bare id declared by a custom provider; no key: no credentials */
    r = send_body(c, "{\"model\":\"llama3.2\"}");
    assert_attempts(r, ":succeeded");
    assert_string_equal(M.urls[0], "http://127.0.0.1:5/v1/chat/completions");
    assert_string_equal(M.bodies[0], "{\"model\":\"llama3.2:3b-instruct\"}");
    assert_string_equal(M.keys[0], "");
    assert_string_equal(aigw_attempt_model(aigw_response_attempt(r, 0)), "llama3.2");
    aigw_response_free(r);
    aigw_client_free(c);
}

static const char *CFG_THREE_KEYS =
    "{" PROVIDERS "," KEYS ",\"accessKeyConfiguration\":{\"name\":\"t\",\"router\":{\"rules\":["
    "{\"provider\":\"fake\",\"steps\":[{\"type\":\"user\",\"keys\":[{\"id\":\"a\"},{\"id\":\"b\"},{\"id\":\"c\"}]}]}]}}}";

/* A same-backend retry resends one key, the one whose wait ends first, and
 * never goes back through the keys that failed auth. */
static void test_retry_resends_only_the_chosen_key(void **state)
{
    aigw_client *c = client_for(CFG_THREE_KEYS);
    aigw_response *r;
    (void)state;
    push_h(429, "retry-after", "1", RL_BODY);
    push(401, "{}");
    push_h(429, "retry-after", "2", RL_BODY);
    push_h(429, "retry-after", "1", RL_BODY);
    r = send_body(c, BODY);
    assert_attempts(r, "a:next_key b:next_key c:retry_same_backend a:retry_same_backend a:succeeded");
    assert_calls("sk-aaaa-1111 sk-bbbb-2222 sk-cccc-3333 sk-aaaa-1111 sk-aaaa-1111");
    assert_int_equal(M.clock.n_sleeps, 2);
    assert_int_equal(M.clock.slept[0], 1000);
    assert_int_equal(M.clock.slept[1], 1000);
    aigw_response_free(r);
    aigw_client_free(c);
}

/* The last key failing auth does not stop a retry of an earlier,
 * rate-limited one; the wait counts from when that key asked for it. */
static void test_retry_after_counts_from_the_answer(void **state)
{
    aigw_client *c = client_for(CFG_THREE_KEYS);
    aigw_response *r;
    (void)state;
    push_h(429, "retry-after", "2", RL_BODY);
    push(500, "{}");
    M.script[1].takes_ms = 1500; /* 1.5 s of a's 2 s pass during b's attempt */
    push(403, "{}");
    r = send_body(c, BODY);
    /* b (500) would be a back-off retry, a (429) has 500 ms left: b wins only
     * if its back-off is shorter, which is 125..250 ms */
    assert_attempts(r, "a:next_key b:next_key c:retry_same_backend b:succeeded");
    assert_int_equal(M.clock.n_sleeps, 1);
    assert_in_range(M.clock.slept[0], 125, 250);
    aigw_response_free(r);
    aigw_client_free(c);

    mock_reset(NULL);
    c = client_for(CFG_THREE_KEYS);
    push_h(429, "retry-after", "2", RL_BODY);
    push(401, "{}");
    M.script[1].takes_ms = 1500;
    push(403, "{}");
    r = send_body(c, BODY);
    assert_attempts(r, "a:next_key b:next_key c:retry_same_backend a:succeeded");
    assert_int_equal(M.clock.slept[0], 500);
    aigw_response_free(r);
    aigw_client_free(c);
}

/* A 429 that names no wait is not waited for: the next step instead. */
static void test_rate_limit_without_wait_moves_down(void **state)
{
    aigw_client *c = client_for(
        "{" PROVIDERS "," KEYS ",\"accessKeyConfiguration\":{\"name\":\"t\",\"router\":{\"rules\":["
        "{\"provider\":\"fake\",\"steps\":[{\"type\":\"user\",\"keys\":[{\"id\":\"a\"}]},"
        "{\"type\":\"user\",\"keys\":[{\"id\":\"c\"}]}]}]}}}");
    aigw_response *r;
    (void)state;
    push(429, RL_BODY);
    r = send_body(c, BODY);
    assert_attempts(r, "a:next_backend c:succeeded");
    assert_int_equal(M.clock.n_sleeps, 0);
    aigw_response_free(r);
    aigw_client_free(c);
}

/* maxAttempts ends the request before any wait for an attempt it would not make. */
static void test_max_attempts_does_not_sleep(void **state)
{
    aigw_client *c = client_for(
        "{" PROVIDERS "," KEYS ",\"accessKeyConfiguration\":{\"name\":\"t\",\"router\":{\"rules\":["
        "{\"provider\":\"fake\",\"steps\":[{\"type\":\"user\",\"keys\":[{\"id\":\"a\"}]}]}]}},"
        "\"gatewayConfig\":{\"maxAttempts\":1}}");
    aigw_response *r;
    (void)state;
    push_h(429, "retry-after", "3", RL_BODY);
    r = send_body(c, BODY);
    assert_attempts(r, "a:exhausted");
    assert_int_equal(M.clock.n_sleeps, 0);
    assert_int_equal(aigw_attempt_waited_ms(aigw_response_attempt(r, 0)), 0);
    aigw_response_free(r);
    aigw_client_free(c);
}

/* ---- how a request ends ---- */

static const char *CFG_ONE_KEY_EACH =
    "{" PROVIDERS "," KEYS ",\"accessKeyConfiguration\":{\"name\":\"t\",\"router\":{\"rules\":["
    "{\"provider\":\"fake\",\"steps\":[{\"type\":\"user\",\"keys\":[{\"id\":\"a\"},{\"id\":\"b\"}]}]},"
    "{\"provider\":\"other\",\"steps\":[{\"type\":\"user\",\"keys\":[{\"id\":\"d\"}]}]}]}},"
    "\"gatewayConfig\":{\"sameBackendRetries\":0}}";

static void test_all_rate_limited_429_with_shortest_wait(void **state)
{
    aigw_client *c = client_for(CFG_ONE_KEY_EACH);
    aigw_response *r;
    cJSON *j;
    size_t len;
    const char *body;
    (void)state;
    push_h(429, "retry-after", "7", RL_BODY);
    push_h(429, "retry-after-ms", "2500", RL_BODY);
    push_h(429, "retry-after", "9", RL_BODY);
    r = send_body(c, BODY);
    assert_attempts(r, "a:next_key b:next_backend d:exhausted");
    assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_EXHAUSTED);
    assert_int_equal(aigw_response_status(r), 429);
    assert_string_equal(aigw_response_error_code(r), "rate_limited");
    assert_string_equal(aigw_response_header_get(r, "retry-after"), "3");
    assert_string_equal(aigw_response_header_get(r, "retry-after-ms"), "2500");
    body = aigw_response_body(r, &len);
    j = cJSON_Parse(body);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "error"), "code")->valuestring,
                        "rate_limited");
    cJSON_Delete(j);
    aigw_response_free(r);
    aigw_client_free(c);
}

static void test_all_auth_401(void **state)
{
    aigw_client *c = client_for(CFG_ONE_KEY_EACH);
    aigw_response *r;
    (void)state;
    push(401, "{}");
    push(403, "{}");
    push(401, "{}");
    r = send_body(c, BODY);
    assert_attempts(r, "a:next_key b:next_backend d:exhausted");
    assert_int_equal(aigw_response_status(r), 401);
    assert_string_equal(aigw_response_error_code(r), "unauthorized");
    aigw_response_free(r);
    aigw_client_free(c);
}

static void test_mixed_failures_502_names_last(void **state)
{
    aigw_client *c = client_for(CFG_ONE_KEY_EACH);
    aigw_response *r;
    size_t len;
    (void)state;
    push(429, RL_BODY);
    push(401, "{}");
    push(503, "{}");
    r = send_body(c, BODY);
    assert_attempts(r, "a:next_key b:next_backend d:exhausted");
    assert_int_equal(aigw_response_status(r), 502);
    assert_string_equal(aigw_response_error_code(r), "upstream_error");
    assert_non_null(strstr(aigw_response_body(r, &len), "HTTP 503"));
    assert_non_null(strstr(aigw_response_body(r, &len), "other m9"));
    aigw_response_free(r);
    aigw_client_free(c);
}

static void test_total_timeout_504(void **state)
{
    aigw_client *c = client_for(
        "{" PROVIDERS "," KEYS ",\"accessKeyConfiguration\":{\"name\":\"t\",\"router\":{\"rules\":["
        "{\"provider\":\"fake\",\"steps\":[{\"type\":\"user\",\"keys\":[{\"id\":\"a\"},{\"id\":\"b\"}]}]}]}},"
        "\"gatewayConfig\":{\"totalTimeout\":\"10s\",\"perRequestTimeout\":\"8s\"}}");
    aigw_response *r;
    (void)state;
    push(500, "{}");
    M.script[0].takes_ms = 7000;
    push_tr(AIGW_TR_TIMEOUT, 3000);
    r = send_body(c, BODY);
    /* the second attempt only gets what is left of the 10 s */
    assert_int_equal(M.timeouts[0], 8000);
    assert_int_equal(M.timeouts[1], 3000);
    assert_attempts(r, "a:next_key b:exhausted");
    assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_TIMED_OUT);
    assert_int_equal(aigw_response_status(r), 504);
    assert_string_equal(aigw_response_error_code(r), "timeout");
    aigw_response_free(r);
    aigw_client_free(c);
}

static void test_max_attempts(void **state)
{
    aigw_client *c = client_for(
        "{" PROVIDERS "," KEYS ",\"accessKeyConfiguration\":{\"name\":\"t\",\"router\":{\"rules\":["
        "{\"provider\":\"fake\",\"steps\":[{\"type\":\"user\",\"keys\":[{\"id\":\"a\"},{\"id\":\"b\"},{\"id\":\"c\"}]}]}]}},"
        "\"gatewayConfig\":{\"maxAttempts\":2}}");
    aigw_response *r;
    (void)state;
    push(500, "{}");
    push(500, "{}");
    r = send_body(c, BODY);
    assert_attempts(r, "a:next_key b:exhausted");
    assert_int_equal(M.n_calls, 2);
    assert_int_equal(aigw_response_status(r), 502);
    assert_string_equal(aigw_response_error_code(r), "max_attempts_reached");
    aigw_response_free(r);
    aigw_client_free(c);
}

/* ---- access scope, candidates, ngrok steps ---- */

static void test_access_scope(void **state)
{
    aigw_client *c = client_for(
        "{" PROVIDERS "," KEYS ",\"accessKeyConfiguration\":{\"name\":\"t\","
        "\"access\":{\"providers\":{\"allow\":[\"fake\",\"other\"]},"
        "\"models\":{\"allow\":[\"m1\",\"fake/m2\",\"other:m4\"]}},"
        "\"router\":{\"rules\":[{\"provider\":\"fake\",\"steps\":[{\"type\":\"user\",\"keys\":[{\"id\":\"a\"}]}]},"
        "{\"provider\":\"other\",\"steps\":[{\"type\":\"user\",\"keys\":[{\"id\":\"d\"}]}]}]}}}");
    aigw_response *r;
    const char *prov, *model, *reason;
    size_t len;
    (void)state;
    /* a primary outside the scope: an error, nothing sent */
    r = send_body(c, "{\"model\":\"other:m3\"}");
    assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_REJECTED);
    assert_int_equal(aigw_response_status(r), 403);
    assert_string_equal(aigw_response_error_code(r), "model_not_allowed");
    assert_non_null(strstr(aigw_response_body(r, &len), "other:m3"));
    assert_int_equal(aigw_response_attempt_count(r), 0);
    assert_int_equal(M.n_calls, 0);
    aigw_response_free(r);

    /* a fallback outside the scope: skipped and recorded */
    for (len = 0; len < 6; len++)
        push(500, "{}");
    r = send_body(c, "{\"model\":\"fake:m1\",\"models\":[\"other:m3\",\"fake:m2\",\"other:m4\"]}");
    assert_int_equal(aigw_response_skip_count(r), 1);
    assert_int_equal(aigw_response_skip(r, 0, &prov, &model, &reason), AIGW_OK);
    assert_string_equal(prov, "other");
    assert_string_equal(model, "m3");
    assert_string_equal(reason, "model_not_allowed");
    /* m1: a and two same-backend retries; m2 the same; other:m4 serves */
    assert_attempts(r, "a:retry_same_backend a:retry_same_backend a:next_backend "
                       "a:retry_same_backend a:retry_same_backend a:next_backend d:succeeded");
    assert_string_equal(aigw_attempt_model(aigw_response_attempt(r, 6)), "m4");
    aigw_response_free(r);
    aigw_client_free(c);
}

static void test_unknown_primary_model_rejected(void **state)
{
    aigw_client *c = client_for(CFG_TWO_STEPS);
    aigw_response *r;
    (void)state;
    r = send_body(c, "{\"model\":\"no-such-model-xyz\"}");
    assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_REJECTED);
    assert_int_equal(aigw_response_status(r), 400);
    assert_string_equal(aigw_response_error_code(r), "unknown_model");
    assert_int_equal(M.n_calls, 0);
    aigw_response_free(r);
    aigw_client_free(c);
}

static void test_bad_request_bodies(void **state)
{
    aigw_client *c = client_for(CFG_TWO_STEPS);
    static const char *bad[] = {"", "not json", "[1,2]", "{\"models\":[\"a\"]}",
                                "{\"model\":7}", "{\"model\":\"\"}",
                                "{\"model\":\"fake:m1\",\"models\":\"x\"}",
                                "{\"model\":\"fake:m1\",\"models\":[1]}", "{\"model\":\"fake:m1\""};
    size_t i;
    (void)state;
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        aigw_request *req;
        aigw_response *resp = (aigw_response *)&M; /* must be reset to NULL */
        aigw_error *err = NULL;
        assert_int_equal(aigw_request_new(&req), AIGW_OK);
        assert_int_equal(aigw_request_set_body(req, bad[i], strlen(bad[i])), AIGW_OK);
        assert_int_equal(aigw_client_send(c, req, &resp, &err), AIGW_EREQUEST);
        assert_null(resp);
        assert_non_null(err);
        assert_int_equal(aigw_error_code(err), AIGW_EREQUEST);
        assert_non_null(strstr(aigw_error_message(err), "request body"));
        aigw_error_free(err);
        aigw_request_free(req);
    }
    assert_int_equal(M.n_calls, 0);
    aigw_client_free(c);
}

static void test_ngrok_step(void **state)
{
    const char *cfg_no_key =
        "{\"providerKeys\":[{\"id\":\"k1\",\"providerId\":\"openai\",\"value\":\"sk-user-5555\"}],"
        "\"accessKeyConfiguration\":{\"name\":\"t\",\"router\":{\"rules\":[{\"provider\":\"openai\","
        "\"steps\":[{\"type\":\"user\",\"keys\":[{\"id\":\"k1\"}]},{\"type\":\"ngrok\"}]}]}}";
    char cfg[2048];
    aigw_client *c;
    aigw_response *r;
    const char *prov, *model, *reason;
    (void)state;

    /* without an ngrok access key the step is skipped, and the trace says why */
    snprintf(cfg, sizeof cfg, "%s}", cfg_no_key);
    c = client_for(cfg);
    push_h(429, "retry-after", "30", RL_BODY);
    r = send_body(c, "{\"model\":\"gpt-4o\"}");
    assert_attempts(r, "k1:exhausted");
    assert_int_equal(aigw_response_skip_count(r), 1);
    aigw_response_skip(r, 0, &prov, &model, &reason);
    assert_string_equal(reason, "no_ngrok_access_key");
    assert_non_null(strstr(aigw_response_trace_json(r), "no_ngrok_access_key"));
    aigw_response_free(r);
    aigw_client_free(c);

    /* with one: managed fallback to the hosted gateway */
    mock_reset(NULL);
    snprintf(cfg, sizeof cfg, "%s,\"ngrokAccessKey\":{\"value\":\"ng-secret-6666\"},"
                              "\"ngrokGatewayUrl\":\"http://127.0.0.1:6/v1\"}", cfg_no_key);
    c = client_for(cfg);
    push_h(429, "retry-after", "30", RL_BODY);
    r = send_body(c, "{\"model\":\"gpt-4o\",\"stream\":false}");
    assert_attempts(r, "k1:managed_fallback ngrok:succeeded");
    assert_calls("sk-user-5555 ng-secret-6666");
    assert_string_equal(M.urls[0], "https://api.openai.com/v1/chat/completions");
    assert_string_equal(M.urls[1], "http://127.0.0.1:6/v1/chat/completions");
    assert_string_equal(M.bodies[1], "{\"model\":\"openai:gpt-4o\",\"stream\":false}");
    assert_string_equal(aigw_attempt_key_source(aigw_response_attempt(r, 1)), "ngrok");
    assert_string_equal(aigw_attempt_key_source(aigw_response_attempt(r, 0)), "user");
    aigw_response_free(r);
    aigw_client_free(c);
}

/* ---- strategy, secrets, trace ---- */

static int reverse_order(void *ud, const char *provider, const char *model, size_t step,
                         const char *const *ids, size_t n, size_t *order)
{
    size_t i;
    (void)ud;
    (void)provider;
    (void)model;
    (void)step;
    (void)ids;
    for (i = 0; i < n; i++)
        order[i] = n - 1 - i;
    return (int)n;
}

static int strategy_destroyed;
static void strategy_destroy(void *ud)
{
    (void)ud;
    strategy_destroyed++;
}

static void test_custom_strategy(void **state)
{
    aigw_client *c = client_for(CFG_TWO_STEPS);
    aigw_strategy st = {AIGW_STRATEGY_VERSION, reverse_order, strategy_destroy, NULL};
    aigw_strategy bad = {99, reverse_order, NULL, NULL};
    aigw_response *r;
    (void)state;
    strategy_destroyed = 0;
    assert_int_equal(aigw_client_set_strategy(c, &bad, NULL), AIGW_EVERSION);
    assert_int_equal(aigw_client_set_strategy(c, &st, NULL), AIGW_OK);
    push(429, RL_BODY);
    r = send_body(c, BODY);
    assert_attempts(r, "b:next_key a:succeeded");
    aigw_response_free(r);
    aigw_client_free(c);
    assert_int_equal(strategy_destroyed, 1);
}

static void test_secret_scrubbed_and_trace_shape(void **state)
{
    aigw_client *c = client_for(CFG_TWO_STEPS);
    aigw_response *r;
    size_t len;
    const char *trace;
    cJSON *j, *att;
    (void)state;
    push(400, "{\"error\":{\"message\":\"bad key sk-aaaa-1111 given\"}}");
    r = send_body(c, BODY);
    assert_string_equal(aigw_response_body(r, &len),
                        "{\"error\":{\"message\":\"bad key [REDACTED] given\"}}");
    trace = aigw_response_trace_json(r);
    assert_null(strstr(trace, "sk-aaaa"));
    j = cJSON_Parse(trace);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "requestId")->valuestring,
                        aigw_response_request_id(r));
    assert_int_equal(strlen(aigw_response_request_id(r)), 29);
    assert_string_equal(cJSON_GetObjectItem(j, "outcome")->valuestring, "fail_fast");
    att = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "attempts"), 0);
    assert_non_null(att);
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(att, "event"), "attemptNumber")->valueint, 1);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(att, "event"), "providerKeyId")->valuestring, "a");
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(att, "event"), "keySource")->valuestring, "user");
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(att, "event"), "statusCode")->valueint, 400);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetObjectItem(att, "event"), "isError")));
    assert_string_equal(cJSON_GetObjectItem(att, "retryAction")->valuestring, "fail_fast");
    assert_string_equal(cJSON_GetObjectItem(att, "completion")->valuestring, "failed");
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(att, "served")));
    assert_non_null(cJSON_GetObjectItem(att, "upstreamDurationMs"));
    cJSON_Delete(j);
    aigw_response_free(r);
    aigw_client_free(c);
}

static void test_bad_vtables_and_args(void **state)
{
    aigw_client *c = client_for(CFG_TWO_STEPS);
    aigw_transport t = {7, MOCK_TRANSPORT.send, NULL, NULL};
    aigw_clock k = {AIGW_CLOCK_VERSION, NULL, FAKE_CLOCK.sleep_ms, NULL};
    aigw_request *req;
    aigw_response *resp;
    (void)state;
    assert_int_equal(aigw_client_set_transport(c, &t, NULL), AIGW_EVERSION);
    assert_int_equal(aigw_client_set_clock(c, &k, NULL), AIGW_EINVAL);
    assert_int_equal(aigw_client_send(NULL, NULL, NULL, NULL), AIGW_EINVAL);
    assert_int_equal(aigw_request_new(&req), AIGW_OK);
    assert_int_equal(aigw_request_set_path(req, "no-slash"), AIGW_EINVAL);
    assert_int_equal(aigw_request_set_path(req, "/v1/chat/completions\r\nX: y"), AIGW_EINVAL);
    assert_int_equal(aigw_client_send(c, req, &resp, NULL), AIGW_EREQUEST); /* no body */
    assert_int_equal(aigw_request_set_path(req, "/v1/responses"), AIGW_OK);
    assert_int_equal(aigw_request_set_body(req, "{\"model\":\"fake:m1\"}", 19), AIGW_OK);
    assert_int_equal(aigw_client_send(c, req, &resp, NULL), AIGW_OK);
    assert_string_equal(M.urls[0], "http://127.0.0.1:9/v1/responses");
    aigw_response_free(resp);
    aigw_request_free(req);
    aigw_client_free(c);
    aigw_client_free(NULL);
    aigw_response_free(NULL);
}

/* The hop-by-hop names (lower-cased, as header lists keep them), and
 * nothing else: not their near misses. */
static void test_hop_by_hop(void **state)
{
    static const char *const hop[] = {"connection",     "keep-alive",       "transfer-encoding",
                                      "content-length", "proxy-connection", "te",
                                      "trailer",        "upgrade"};
    static const char *const other[] = {
        "",        "t",        "tea",         "ta",         "trailers",       "upgrades",
        "upgradE", "tupgrade", "connections", "keep-alivE", "kontent-length", "content-type",
        "date",    "server",   "x-upgrade",   "proxy-connectioN", "transfer-encodinG",
        "uransfer-encoding", "qroxy-connection", "xonnection", "content-lengtH",
        "c", "co", "con", "conn", "cont", "k", "p", "u", "tr", "te-", "connectio", "content-"};
    size_t i;
    (void)state;
    for (i = 0; i < sizeof hop / sizeof *hop; i++)
        if (!aigw__hop_by_hop(hop[i]))
            fail_msg("%s: not hop-by-hop", hop[i]);
    for (i = 0; i < sizeof other / sizeof *other; i++)
        if (aigw__hop_by_hop(other[i]))
            fail_msg("%s: hop-by-hop", other[i]);
}

static void hdrs_of(aigw_hdrs *h, const char *const *nv)
{
    for (; *nv; nv += 2)
        assert_int_equal(aigw__hdrs_add(h, nv[0], nv[1]), 0);
}

static void assert_hdrs(const aigw_hdrs *h, const char *want)
{
    char got[256] = "";
    size_t i;
    for (i = 0; i < h->n; i++) {
        size_t n = strlen(got);
        snprintf(got + n, sizeof got - n, "%s%s=%s", i ? " " : "", h->v[i].name, h->v[i].value);
    }
    assert_string_equal(got, want);
}

/* The upstream's headers move to the caller's list, the hop-by-hop ones
 * dropped, the order kept; into a list that has some, after them; with no
 * memory for that, nothing moves. */
static void test_move_headers(void **state)
{
    static const char *const up[] = {"Date", "d", "Connection", "close", "Content-Type", "ct",
                                     "Transfer-Encoding", "chunked", "X-A", "a", "TE", "t",
                                     NULL};
    aigw_hdrs dst = {NULL, 0, 0}, src = {NULL, 0, 0};
    long n;
    (void)state;
    hdrs_of(&src, up);
    assert_int_equal(aigw__move_headers(&dst, &src, false), 0);
    assert_hdrs(&dst, "date=d content-type=ct x-a=a");
    assert_int_equal(src.n, 0);
    assert_null(src.v);
    aigw__hdrs_free(&dst);
    /* a list known to be end-to-end (the curl transport's) moves as it is */
    hdrs_of(&src, up);
    assert_int_equal(aigw__move_headers(&dst, &src, true), 0);
    assert_int_equal(dst.n, 6);
    assert_int_equal(src.n, 0);
    aigw__hdrs_free(&dst);

    for (n = 1; n < 20; n++) {
        int rc;
        /* four and six: past the list's first eight slots */
        static const char *const first[] = {"x-1", "1", "x-2", "2", "x-3", "3", "x-4", "4",
                                            NULL};
        hdrs_of(&dst, first);
        hdrs_of(&src, up);
        aigw__alloc_fail_at(n);
        rc = aigw__move_headers(&dst, &src, false);
        aigw__alloc_fail_at(0);
        if (rc == 0) {
            assert_hdrs(&dst, "x-1=1 x-2=2 x-3=3 x-4=4 date=d content-type=ct x-a=a");
            assert_int_equal(src.n, 0);
        } else {
            assert_int_equal(rc, -1);
            assert_hdrs(&dst, "x-1=1 x-2=2 x-3=3 x-4=4");
            assert_int_equal(src.n, 6);
        }
        aigw__hdrs_free(&dst);
        aigw__hdrs_free(&src);
        if (rc == 0)
            break;
    }
    assert_true(n > 1 && n < 20); /* it failed before it moved */
}

/* aigw__body_splice_into writes what aigw__body_splice_map writes, or
 * declines (0): other rewrites, models needing escapes, too little room. */
static void test_splice_into(void **state)
{
    static const char *const bodies[] = {
        "{\"model\":\"bench:m1\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
        "{ \"a\" : 1 , \"model\" : \"x\" , \"b\" : [true, null] }",
        "{\"model\":\"a\",\"model\":\"b\",\"z\":{\"model\":\"c\"}}",
        "{\"messages\":[],\"model\":\"m\"}",
        "{\"model\":\"m\",\"models\":[\"p:q\"]}",
        "{\"model\":\"m\",\"models\":null}",
        "{\"messages\":[]}",
        "{\"model\":\"caf\u00e9\"}",
    };
    static const char *const models[] = {"m1", "", "gpt-4o", "a\"b", "caf\xc3\xa9", "x\\y"};
    size_t b, m, cap;
    (void)state;
    for (b = 0; b < sizeof bodies / sizeof *bodies; b++) {
        for (m = 0; m < sizeof models / sizeof *models; m++) {
            aigw_body_map map;
            aigw_buf want = AIGW_BUF_INIT;
            char *model = NULL, **list = NULL, why_room[1], room[256];
            size_t n_list = 0, got;
            char *why = NULL;
            const char *body = bodies[b];
            int rc = aigw__body_read_in(body, strlen(body), &map, why_room, 0, &model, &list,
                                        &n_list, &why);
            aigw__free(why);
            aigw__free(model);
            aigw__strv_free(list, n_list);
            if (rc != 0) { /* no "model": not a body the engine splices */
                assert_string_equal(body, "{\"messages\":[]}");
                continue;
            }
            assert_int_equal(aigw__body_splice_map(body, strlen(body), &map, models[m], &want),
                             0);
            for (cap = 0; cap <= sizeof room; cap += cap < 80 ? 1 : 64) {
                memset(room, 'Z', sizeof room);
                got = aigw__body_splice_into(body, strlen(body), &map, models[m], room, cap);
                if (got == 0)
                    continue;
                assert_true(got < cap);
                assert_int_equal(got, want.len);
                assert_memory_equal(room, want.data, got);
                assert_int_equal(room[got], '\0');
            }
            /* with room to spare it declines only another kind of rewrite */
            got = aigw__body_splice_into(body, strlen(body), &map, models[m], room, sizeof room);
            assert_int_equal(got != 0, !map.has_models && strchr(models[m], '"') == NULL &&
                                           strchr(models[m], '\\') == NULL);
            aigw__buf_free(&want);
        }
    }
}

/* Names are lower-cased byte by byte as aigw__lower does, whatever their
 * length (the word-at-a-time paths) and whatever the bytes; values of
 * every length are copied as they are. */
static void test_header_lowercase(void **state)
{
    static const char alpha[] = "AZaz@[`{-_09\x80\xc1\xdaQm";
    uint64_t rs = 0x243f6a8885a308d3ULL;
    int round;
    (void)state;
    for (round = 0; round < 2000; round++) {
        aigw_hdrs h = {0};
        char name[24], value[48];
        size_t n = 1 + (size_t)round % 20, vn = (size_t)round % 41, i;
        for (i = 0; i < n; i++) {
            rs ^= rs << 13;
            rs ^= rs >> 7;
            rs ^= rs << 17;
            name[i] = alpha[rs % (sizeof alpha - 1)];
        }
        for (i = 0; i < vn; i++)
            value[i] = alpha[(rs >> (i % 40)) % (sizeof alpha - 1)];
        assert_int_equal(aigw__hdrs_addn(&h, name, n, "v", 1), 0);
        assert_int_equal(aigw__hdrs_addn(&h, "x", 1, value, vn), 0);
        assert_int_equal(strlen(h.v[1].value), vn);
        assert_memory_equal(h.v[1].value, value, vn);
        assert_int_equal(strlen(h.v[0].name), n);
        for (i = 0; i < n; i++)
            assert_int_equal((unsigned char)h.v[0].name[i], aigw__lower((unsigned char)name[i]));
        assert_string_equal(h.v[0].value, "v");
        aigw__hdrs_free(&h);
    }
}

/* aigw__secret_find finds what memmem finds, whatever the key's bytes,
 * where its copies lie (overlapping, at either end), however often its rare
 * byte turns up without it, and whatever the length of the text (the
 * 32-at-a-time scan for 32 starts and more, byte by byte for the rest). */
static void test_secret_find(void **state)
{
    static const char alpha[] = "ab-X1\"";
    char text[300], key[24];
    uint64_t rs = 0x9e3779b97f4a7c15ULL;
    int round;
    (void)state;
    for (round = 0; round < 20000; round++) {
        size_t len, klen, i;
        rs ^= rs << 13;
        rs ^= rs >> 7;
        rs ^= rs << 17;
        len = (size_t)(rs % sizeof text);
        klen = 1 + (size_t)((rs >> 20) % (sizeof key - 1));
        for (i = 0; i < klen; i++)
            key[i] = alpha[(rs >> (i * 2 % 60)) % (round % 3 == 0 ? 2 : sizeof alpha - 1)];
        for (i = 0; i < len; i++) {
            rs ^= rs << 13;
            rs ^= rs >> 7;
            rs ^= rs << 17;
            text[i] = alpha[rs % (round % 3 == 0 ? 3 : sizeof alpha - 1)];
        }
        /* plant the key now and then, at the ends too */
        if (len >= klen && round % 2 == 0)
            memcpy(text + (round % 4 == 0 ? len - klen : (size_t)(rs % (len - klen + 1))), key,
                   klen);
        assert_ptr_equal(aigw__secret_find(text, len, key, klen),
                         memmem(text, len, key, klen));
    }
    assert_ptr_equal(aigw__secret_find("abc", 3, "abcd", 4), NULL);
    assert_ptr_equal(aigw__secret_find(text, 0, key, 1), NULL);
    /* a run of one byte and keys of it but one byte, which line up with
     * it at every start: found where memmem finds them (and in linear
     * time: the scan hands over to memmem) */
    {
        static char same[1 << 16];
        static char k2[1000];
        static const size_t klens[] = {40, 200, 1000};
        size_t k;
        memset(same, 'a', sizeof same);
        for (k = 0; k < sizeof klens / sizeof *klens; k++) {
            memset(k2, 'a', klens[k]);
            k2[klens[k] - 2] = 'b';
            assert_ptr_equal(aigw__secret_find(same, sizeof same, k2, klens[k]), NULL);
            same[sizeof same - 2] = 'b';
            assert_ptr_equal(aigw__secret_find(same, sizeof same, k2, klens[k]),
                             same + sizeof same - klens[k]);
            same[sizeof same - 2] = 'a';
        }
    }
}

/* A header list is one block (headers.c): names lower-cased eight bytes at
 * a time and the rest byte by byte, whatever the case and bytes; the block
 * grows past its first entries and bytes with every string kept; a folded
 * line joins the last value where it lies or from a copy; a value replaced
 * in place or anew; with no memory, each change fails and leaves the list
 * as it was. */
static void test_header_block(void **state)
{
    aigw_hdrs h = {NULL, 0, 0};
    char name[64], value[700], want[64];
    size_t i, k;
    (void)state;
    /* upper, lower, digits, punctuation and bytes from 0x80 up */
    assert_int_equal(aigw__hdrs_add(&h, "X-RateLimit-Reset-Tokens\xc3\x89Z@[`{", "v"), 0);
    assert_string_equal(h.v[0].name, "x-ratelimit-reset-tokens\xc3\x89z@[`{");
    for (i = 0; i <= 26; i++) { /* every length around the eight-byte steps */
        aigw_hdrs one = {NULL, 0, 0};
        assert_int_equal(aigw__hdrs_addn(&one, "ABCDEFGHIJKLMNOPQRSTUVWXYZ", i, "", 0), 0);
        assert_int_equal(strlen(one.v[0].name), i);
        assert_memory_equal(one.v[0].name, "abcdefghijklmnopqrstuvwxyz", i);
        assert_string_equal(one.v[0].value, "");
        aigw__hdrs_free(&one);
    }
    for (i = 1; i < 40; i++) {
        snprintf(name, sizeof name, "X-H%zu-ABCDEFGHIJKLMNOPQRSTUVWXYZ", i);
        memset(value, 'a' + (int)(i % 26), 40);
        value[40] = '\0';
        assert_int_equal(aigw__hdrs_add(&h, name, value), 0);
    }
    assert_int_equal(h.n, 40);
    assert_true(h.cap >= 40);
    for (i = 1; i < 40; i++) {
        snprintf(want, sizeof want, "x-h%zu-abcdefghijklmnopqrstuvwxyz", i);
        assert_string_equal(h.v[i].name, want);
        assert_int_equal(strlen(h.v[i].value), 40);
        assert_int_equal(h.v[i].value[39], 'a' + (int)(i % 26));
    }
    /* a long value: the text grows past its room */
    memset(value, 'q', sizeof value - 1);
    value[sizeof value - 1] = '\0';
    assert_int_equal(aigw__hdrs_add(&h, "Big", value), 0);
    assert_string_equal(h.v[40].value, value);
    assert_string_equal(aigw__hdrs_get(&h, "x-h39-ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
                        "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn");

    /* folded lines: at the end in place, then after a value moved */
    assert_int_equal(aigw__hdrs_unfold(&h, "more", 4), 0);
    assert_int_equal(strlen(h.v[40].value), sizeof value - 1 + 5);
    assert_string_equal(h.v[40].value + sizeof value - 1, " more");
    assert_int_equal(aigw__hdrs_add(&h, "last", "x"), 0);
    assert_int_equal(aigw__hdrs_set_value(&h, 41, "a longer value"), 0); /* moved */
    assert_int_equal(aigw__hdrs_add(&h, "after", "y"), 0);
    assert_int_equal(aigw__hdrs_set_value(&h, 41, "short"), 0);         /* in place */
    assert_string_equal(h.v[41].value, "short");
    h.n--; /* "last" is the last again; its value is not at the end */
    assert_int_equal(aigw__hdrs_unfold(&h, "tail", 4), 0);
    assert_string_equal(h.v[41].value, "short tail");
    assert_int_equal(aigw__hdrs_unfold(&h, "", 0), 0);
    assert_string_equal(h.v[41].value, "short tail");
    /* a header line that begins with a blank is one: its blanks left out */
    assert_int_equal(aigw__hdrs_add_line(&h, " \t end", 7), 0);
    assert_string_equal(h.v[41].value, "short tail end");
    assert_int_equal(aigw__hdrs_add_line(&h, "\t ", 2), 0); /* blanks only: nothing */
    assert_string_equal(h.v[41].value, "short tail end");
    assert_int_equal(h.n, 42);
    assert_string_equal(h.v[40].value + sizeof value - 1, " more");
    assert_string_equal(h.v[0].name, "x-ratelimit-reset-tokens\xc3\x89z@[`{");

    /* no memory: each change that needs room fails, the list as it was */
    {
        aigw_hdrs dst = {NULL, 0, 0};
        int rc1, rc2, rc3;
        assert_int_equal(aigw__hdrs_add(&dst, "a", "1"), 0);
        aigw__alloc_fail_from(1);
        rc1 = aigw__hdrs_reserve_for(&dst, &h);
        for (k = 0; k < 8; k++)
            if (aigw__hdrs_add(&dst, "b", "2") != 0)
                break;
        rc2 = aigw__hdrs_set_value(&dst, 0, value);
        rc3 = aigw__hdrs_unfold(&dst, value, sizeof value - 1);
        aigw__alloc_fail_from(0);
        assert_int_equal(rc1, -1);
        assert_int_equal(k, 7); /* the first eight entries fit */
        assert_int_equal(rc2, -1);
        assert_int_equal(rc3, -1);
        assert_int_equal(dst.n, 8);
        assert_string_equal(dst.v[0].value, "1");
        assert_string_equal(dst.v[7].name, "b");
        assert_string_equal(dst.v[7].value, "2");
        aigw__hdrs_free(&dst);
    }
    aigw__hdrs_free(&h);
    assert_null(h.v);
    assert_int_equal(h.n, 0);
    aigw__hdrs_free(&h); /* twice: nothing */
}

/* Every allocation of a send failing in turn: an error or an answer, never a
 * crash or a leak (ASan checks the leaks). */
static void test_send_allocation_failures(void **state)
{
    aigw_client *c = client_for(CFG_TWO_STEPS);
    long n;
    int ok = 0, nomem = 0;
    (void)state;
    for (n = 1; n < 400; n++) {
        aigw_request *req = NULL;
        aigw_response *resp = NULL;
        aigw_error *err = NULL;
        aigw_status st;
        mock_rewind(); /* each round: a's 429, then b */
        push(429, RL_BODY);
        assert_int_equal(aigw_request_new(&req), AIGW_OK);
        assert_int_equal(aigw_request_set_body(req, BODY, strlen(BODY)), AIGW_OK);
        aigw__alloc_fail_at(n);
        st = aigw_client_send(c, req, &resp, &err);
        aigw__alloc_fail_at(0);
        if (st == AIGW_OK) {
            ok++;
            aigw_response_free(resp);
        } else {
            assert_int_equal(st, AIGW_ENOMEM);
            assert_null(resp);
            nomem++;
        }
        aigw_error_free(err);
        aigw_request_free(req);
    }
    /* a send allocates little (a handful of places can fail), but some */
    assert_true(nomem >= 5);
    assert_true(ok > 0);
    aigw_client_free(c);
}

/* ---- out of memory is not a failure of the key ---- */

/* Fails unless no key, endpoint, backend or host of c's health holds a
 * request, a failure or a state, and the retry budget paid nothing. */
static void assert_health_untouched(aigw_client *c)
{
    aigw_stats *st = NULL;
    uint64_t retries = 1, denied = 1;
    size_t i;
    assert_int_equal(aigw_client_stats(c, &st), AIGW_OK);
    for (i = 0; i < aigw_stats_count(st); i++) {
        const aigw_stat *e = aigw_stats_at(st, i);
        if (e->requests || e->failures || e->successes || e->reason[0] ||
            (strcmp(e->state, "ready") != 0 && strcmp(e->state, "closed") != 0))
            fail_msg("health changed: %s", aigw_stats_json(st));
    }
    aigw_stats_budget(st, NULL, &retries, &denied, NULL);
    assert_int_equal(retries, 0);
    assert_int_equal(denied, 0);
    aigw_stats_free(st);
}

/* A transport that ran out of memory: the request ends with AIGW_ENOMEM,
 * no further attempt (b, c and other:m9 are left), no response, and health
 * hears nothing - not a network failure of key a or its host. */
static void test_transport_nomem_ends_request(void **state)
{
    aigw_client *c = client_for(CFG_TWO_STEPS);
    aigw_request *req = NULL;
    aigw_response *resp = NULL;
    aigw_error *err = NULL;
    (void)state;
    assert_string_equal(aigw__transport_result_name(AIGW_TR_NOMEM), "nomem");
    push_tr(AIGW_TR_NOMEM, 5);
    assert_int_equal(aigw_request_new(&req), AIGW_OK);
    assert_int_equal(aigw_request_set_body(req, BODY, strlen(BODY)), AIGW_OK);
    assert_int_equal(aigw_client_send(c, req, &resp, &err), AIGW_ENOMEM);
    assert_null(resp);
    assert_string_equal(aigw_error_message(err), "out of memory");
    assert_calls("sk-aaaa-1111");
    assert_health_untouched(c);
    aigw_error_free(err);
    /* the next request is served by a, as if nothing had happened */
    mock_rewind();
    resp = send_body(c, BODY);
    assert_attempts(resp, "a:succeeded");
    aigw_response_free(resp);
    aigw_request_free(req);
    aigw_client_free(c);
}

/* The same for a stream, before and after its commit point: no callback
 * after the failure, no reset announced though a restart was possible. */
typedef struct nomem_stream {
    int calls;
    bool commit_first; /* deliver a content chunk before running out */
} nomem_stream;

static aigw_transport_result ns_send(void *ud, const aigw_transport_request *req,
                                     aigw_transport_response *resp)
{
    (void)ud;
    (void)req;
    (void)resp;
    fail_msg("a streamed request must go through send_stream");
    return AIGW_TR_OTHER;
}

static aigw_transport_result ns_stream(void *ud, const aigw_transport_request *req,
                                       aigw_transport_response *resp,
                                       aigw_transport_data_fn on_data, void *ctx)
{
    static const char chunk[] = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}"
                                "\n\n";
    nomem_stream *m = ud;
    (void)req;
    m->calls++;
    aigw_transport_response_set_status(resp, 200);
    aigw_transport_response_add_header(resp, "content-type", "text/event-stream");
    if (m->commit_first && on_data(ctx, chunk, sizeof chunk - 1) <= 0)
        return AIGW_TR_CANCELLED;
    return AIGW_TR_NOMEM;
}

static const aigw_transport NOMEM_STREAM = {AIGW_TRANSPORT_VERSION, ns_send, NULL, ns_stream};

static void test_stream_transport_nomem_ends_request(void **state)
{
    static const char body[] = "{\"model\":\"fake:m1\",\"models\":[\"other:m9\"],\"stream\":true}";
    int commit_first;
    (void)state;
    for (commit_first = 0; commit_first <= 1; commit_first++) {
        nomem_stream m = {0, commit_first != 0};
        stream_caller g;
        aigw_client *c = client_from_json(CFG_TWO_STEPS);
        aigw_request *req = NULL;
        aigw_response *resp = NULL;
        aigw_error *err = NULL;
        memset(&g, 0, sizeof g);
        assert_int_equal(aigw_client_set_transport(c, &NOMEM_STREAM, &m), AIGW_OK);
        assert_int_equal(aigw_request_new(&req), AIGW_OK);
        assert_int_equal(aigw_request_set_body(req, body, sizeof body - 1), AIGW_OK);
        assert_int_equal(aigw_request_set_stream_restart(req, 1), AIGW_OK);
        assert_int_equal(aigw_client_stream(c, req, &STREAM_CALLER, &g, &resp, &err),
                         AIGW_ENOMEM);
        assert_null(resp);
        assert_int_equal(aigw_error_code(err), AIGW_ENOMEM);
        assert_int_equal(m.calls, 1);
        assert_int_equal(g.starts, commit_first);
        assert_int_equal(g.commits, commit_first);
        assert_int_equal(g.data_calls, commit_first);
        assert_int_equal(g.resets, 0);
        assert_health_untouched(c);
        aigw_error_free(err);
        aigw_request_free(req);
        aigw_client_free(c);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_success_first_key, mock_setup, mock_teardown),
        cmocka_unit_test_setup_teardown(test_rate_limit_next_key, mock_setup, mock_teardown),
        cmocka_unit_test_setup_teardown(test_auth_401_403_next_key, mock_setup, mock_teardown),
        cmocka_unit_test_setup_teardown(test_quota_next_quota_pool, mock_setup, mock_teardown),
        cmocka_unit_test_setup_teardown(test_rate_limit_waits_shortest_retry_after, mock_setup, mock_teardown),
        cmocka_unit_test_setup_teardown(test_rate_limit_wait_too_long_moves_down, mock_setup, mock_teardown),
        cmocka_unit_test_setup_teardown(test_server_error_backoff_then_next_model, mock_setup, mock_teardown),
        cmocka_unit_test_setup_teardown(test_timeout_skips_sibling_keys, mock_setup, mock_teardown),
        cmocka_unit_test_setup_teardown(test_network_errors_skip_sibling_keys, mock_setup, mock_teardown),
        cmocka_unit_test_setup_teardown(test_408_is_timeout, mock_setup, mock_teardown),
        cmocka_unit_test_setup_teardown(test_redirect_not_served, mock_setup, mock_teardown),
        cmocka_unit_test_setup_teardown(test_context_length_next_model_never_again, mock_setup, mock_teardown),
        cmocka_unit_test_setup_teardown(test_fail_fast_returns_upstream_answer, mock_setup, mock_teardown),
        cmocka_unit_test_setup_teardown(test_503_with_retry_after_is_rate_limit, mock_setup, mock_teardown),
        cmocka_unit_test_setup_teardown(test_provider_model_id_sent_upstream, mock_setup, mock_teardown),
        cmocka_unit_test_setup_teardown(test_retry_resends_only_the_chosen_key, mock_setup, mock_teardown),
        cmocka_unit_test_setup_teardown(test_retry_after_counts_from_the_answer, mock_setup, mock_teardown),
        cmocka_unit_test_setup_teardown(test_rate_limit_without_wait_moves_down, mock_setup, mock_teardown),
        cmocka_unit_test_setup_teardown(test_max_attempts_does_not_sleep, mock_setup, mock_teardown),
        cmocka_unit_test_setup_teardown(test_all_rate_limited_429_with_shortest_wait, mock_setup, mock_teardown),
        cmocka_unit_test_setup_teardown(test_all_auth_401, mock_setup, mock_teardown),
        cmocka_unit_test_setup_teardown(test_mixed_failures_502_names_last, mock_setup, mock_teardown),
        cmocka_unit_test_setup_teardown(test_total_timeout_504, mock_setup, mock_teardown),
        cmocka_unit_test_setup_teardown(test_max_attempts, mock_setup, mock_teardown),
        cmocka_unit_test_setup_teardown(test_access_scope, mock_setup, mock_teardown),
        cmocka_unit_test_setup_teardown(test_unknown_primary_model_rejected, mock_setup, mock_teardown),
        cmocka_unit_test_setup_teardown(test_bad_request_bodies, mock_setup, mock_teardown),
        cmocka_unit_test_setup_teardown(test_ngrok_step, mock_setup, mock_teardown),
        cmocka_unit_test_setup_teardown(test_custom_strategy, mock_setup, mock_teardown),
        cmocka_unit_test_setup_teardown(test_secret_scrubbed_and_trace_shape, mock_setup, mock_teardown),
        cmocka_unit_test_setup_teardown(test_bad_vtables_and_args, mock_setup, mock_teardown),
        cmocka_unit_test(test_hop_by_hop),
        cmocka_unit_test(test_move_headers),
        cmocka_unit_test(test_header_block),
        cmocka_unit_test(test_splice_into),
        cmocka_unit_test(test_header_lowercase),
        cmocka_unit_test(test_secret_find),
        cmocka_unit_test_setup_teardown(test_send_allocation_failures, mock_setup, mock_teardown),
        cmocka_unit_test_setup_teardown(test_transport_nomem_ends_request, mock_setup,
                                        mock_teardown),
        cmocka_unit_test(test_stream_transport_nomem_ends_request),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
