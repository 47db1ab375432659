/*
 * test_integration.c - the whole stack: a gateway file parsed by
 * aigw_config_parse, a client with the default libcurl transport and the
 * system clock, and real HTTP on loopback to the embedded mock provider
 * (examples/mockprov.c).
 *
 * Every scenario checks the attempt sequence (key id + verdict per attempt),
 * the outcome, the status, and how many requests the mock provider really
 * received per key; where it matters, the bytes it received.  Waits are kept
 * small through gatewayConfig (retryAfterMax, sameBackendRetries): the whole
 * program sleeps well under two seconds.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cmocka.h>

#include "aigw.h"
#include "mockprov.h"
#include "support.h"

/* ---- keys and gateway files ---- */

#define K_PRIMARY "sk-it-primary-0123456789"
#define K_BACKUP "sk-it-backup-9876543210"
#define K_THIRD "sk-it-third-5555555555"
#define K_DEAD "sk-it-dead-4444444444"
#define K_NGROK "ngrok-it-access-7777777777"

#define RL_BODY "{\"error\":{\"message\":\"Rate limit reached\",\"type\":\"requests\"," \
                "\"code\":\"rate_limit_exceeded\"}}"

/* The request most scenarios send: no fallback model, odd but valid bytes. */
static const char BODY[] = "{\"model\":\"mock:m1\",\"temperature\":0.5,"
                           "\"messages\":[{\"role\":\"user\",\"content\":\"h\xc3\xa9llo \\u2603\"}]}";
/* What the provider must receive for it: model rewritten, the rest as sent. */
static const char BODY_UP[] = "{\"model\":\"m1\",\"temperature\":0.5,"
                              "\"messages\":[{\"role\":\"user\",\"content\":\"h\xc3\xa9llo \\u2603\"}]}";

/* With a fallback model. */
static const char BODY_FB[] = "{\"model\":\"mock:m1\",\"models\":[\"mock:m2\"],"
                              "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
static const char BODY_FB_UP[] = "{\"model\":\"m1\","
                                 "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";

/* Provider "mock" (the mock provider) with keys primary, backup, third.
 * Rule: step 0 [primary, backup]; with two_steps, step 1 [third]. */
#define KEYS_PBT                                                                        \
    "{\"id\":\"primary\",\"providerId\":\"mock\",\"name\":\"p\",\"value\":\"" K_PRIMARY "\"}," \
    "{\"id\":\"backup\",\"providerId\":\"mock\",\"name\":\"b\",\"value\":\"" K_BACKUP "\"},"   \
    "{\"id\":\"third\",\"providerId\":\"mock\",\"name\":\"t\",\"value\":\"" K_THIRD "\"}"
#define RULE_STEP0                                                                      \
    "{\"provider\":\"mock\",\"steps\":["                                                 \
    "{\"type\":\"user\",\"keySelectionStrategy\":\"ordered\","                            \
    "\"keys\":[{\"id\":\"primary\"},{\"id\":\"backup\"}]}"
#define STEP1_THIRD                                                                     \
    ",{\"type\":\"user\",\"keySelectionStrategy\":\"ordered\",\"keys\":[{\"id\":\"third\"}]}"

static char *gateway_file(const char *base_url, int two_steps, const char *gateway_config)
{
    return mock_gateway_json("integration", base_url, KEYS_PBT,
                             two_steps ? RULE_STEP0 STEP1_THIRD "]}" : RULE_STEP0 "]}",
                             gateway_config);
}

/* Timeouts small enough for a test, no same-backend retries unless asked. */
#define GW_FAST "\"perRequestTimeout\":\"5s\",\"totalTimeout\":\"10s\",\"connectTimeout\":\"2s\"," \
                "\"retryAfterMax\":\"2s\",\"sameBackendRetries\":0"

static aigw_client *std_client(mockprov *m, int two_steps, const char *gw)
{
    char *json = gateway_file(mockprov_base_url(m), two_steps, gw);
    aigw_client *c = client_from_json(json);
    free(json);
    return c;
}

/* "key:verdict" per attempt, space separated. */
#define ATTEMPT_FIELDS "key:verdict"
#define assert_attempts(r, want) assert_attempts_as(r, ATTEMPT_FIELDS, want)

/* What the mock provider received, per key. */
static void assert_received(mockprov *m, long primary, long backup, long third)
{
    static const char *const keys[] = {K_PRIMARY, K_BACKUP, K_THIRD};
    const long want[] = {primary, backup, third};
    assert_received_by_key(m, keys, want, 3);
}

/* A header line "name: value" (name case-insensitive) in a raw request head. */
static int head_has(const char *head, size_t head_len, const char *name, const char *value)
{
    const char *p = head, *end = head + head_len;
    size_t nl = strlen(name), vl = strlen(value);
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        size_t ll = eol ? (size_t)(eol - p) : (size_t)(end - p);
        if (ll && p[ll - 1] == '\r')
            ll--;
        if (ll == nl + 2 + vl && strncasecmp(p, name, nl) == 0 && p[nl] == ':' &&
            p[nl + 1] == ' ' && memcmp(p + nl + 2, value, vl) == 0)
            return 1;
        if (!eol)
            break;
        p = eol + 1;
    }
    return 0;
}

/* Request i as the mock provider received it: POST to /v1/chat/completions,
 * Authorization: Bearer key, and exactly the body given. */
static void assert_raw_request(mockprov *m, long i, const char *key, const char *body)
{
    static char raw[65536];
    char auth[256];
    long n = mockprov_log_raw(m, i, raw, sizeof raw);
    const char *sep;
    size_t head_len;
    assert_true(n > 0 && n < (long)sizeof raw);
    sep = strstr(raw, "\r\n\r\n");
    assert_non_null(sep);
    head_len = (size_t)(sep - raw) + 2;
    if (strncmp(raw, "POST /v1/chat/completions HTTP/1.1\r\n", 36) != 0)
        fail_msg("request line: %.60s", raw);
    snprintf(auth, sizeof auth, "Bearer %s", key);
    if (!head_has(raw, head_len, "authorization", auth))
        fail_msg("no 'Authorization: %s' in:\n%.*s", auth, (int)head_len, raw);
    assert_true(head_has(raw, head_len, "content-type", "application/json"));
    /* one credential only */
    assert_int_equal(strstr(raw, K_PRIMARY) != NULL, strcmp(key, K_PRIMARY) == 0);
    assert_int_equal(strstr(raw, K_BACKUP) != NULL, strcmp(key, K_BACKUP) == 0);
    assert_string_equal(sep + 4, body);
    assert_int_equal((size_t)n - head_len - 2, strlen(body));
}

/* Neither the answer nor the trace holds any key value. */
static void assert_no_secret(const aigw_response *r)
{
    static const char *const keys[] = {K_PRIMARY, K_BACKUP, K_THIRD, K_DEAD, K_NGROK};
    assert_response_no_secret(r, keys, sizeof keys / sizeof keys[0]);
}

/* ---- fixtures: two mock providers for the whole run (MP, and MP2 a
 * redirect target), reset per test ---- */

static int group_setup(void **state)
{
    (void)state;
    return mp_start(2);
}

/* ---- scenarios ---- */

/* 429 without Retry-After: the sibling key serves at once, no wait. */
static void test_429_backup_serves(void **state)
{
    aigw_client *c = std_client(MP, 0, GW_FAST);
    aigw_response *r;
    const aigw_attempt *a;
    size_t len;
    const char *body;
    int64_t t0 = now_ms();
    (void)state;
    mp_add_rule(MP, MOCKPROV_RESPOND, K_PRIMARY, NULL, 429, NULL, RL_BODY, 0);
    r = send_body(c, BODY_FB);
    assert_attempts(r, "primary:next_key backup:succeeded");
    assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_SERVED);
    assert_int_equal(aigw_response_status(r), 200);
    assert_null(aigw_response_error_code(r));
    assert_received(MP, 1, 1, 0);
    a = aigw_response_attempt(r, 0);
    assert_int_equal(aigw_attempt_status_code(a), 429);
    assert_string_equal(aigw_attempt_error_class(a), "rate_limit");
    assert_null(aigw_attempt_transport_error(a));
    assert_int_equal(aigw_attempt_requested_wait_ms(a), -1);
    assert_string_equal(aigw_attempt_provider(a), "mock");
    assert_string_equal(aigw_attempt_model(a), "m1");
    assert_string_equal(aigw_attempt_key_source(a), "user");
    a = aigw_response_attempt(r, 1);
    assert_true(aigw_attempt_served(a));
    assert_int_equal(aigw_attempt_status_code(a), 200);
    assert_null(aigw_attempt_error_class(a));
    /* the mock's answer to request 2 (its default chat completion) */
    body = aigw_response_body(r, &len);
    assert_non_null(strstr(body, "\"id\":\"chatcmpl-mock-2\""));
    assert_non_null(strstr(body, "Hello from m1"));
    assert_string_equal(aigw_response_model(r), "m1");
    assert_string_equal(aigw_response_header_get(r, "content-type"), "application/json");
    assert_non_null(aigw_response_header_get(r, "x-aigw-request-id"));
    /* the bytes on the wire: path, each key's own credential, body rewritten
     * (model = the provider's id, "models" gone, the rest as sent) */
    assert_raw_request(MP, 0, K_PRIMARY, BODY_FB_UP);
    assert_raw_request(MP, 1, K_BACKUP, BODY_FB_UP);
    assert_true(now_ms() - t0 < 1000);
    assert_no_secret(r);
    aigw_response_free(r);
    aigw_client_free(c);
}

/* Both keys ask for Retry-After: 1 (within retryAfterMax 2s): the client
 * waits the second out and retries once (sameBackendRetries 1). */
static void test_429_retry_after_waits(void **state)
{
    aigw_client *c = std_client(MP, 0, "\"perRequestTimeout\":\"5s\",\"totalTimeout\":\"10s\","
                                       "\"retryAfterMax\":\"2s\",\"sameBackendRetries\":1");
    aigw_response *r;
    mockprov_rule rl;
    int64_t t0, elapsed;
    (void)state;
    rl = mp_rule(MOCKPROV_RESPOND, K_PRIMARY, NULL, 429, "Retry-After: 1\r\n", RL_BODY, 0);
    rl.times = 1;
    assert_int_equal(mockprov_add_rule(MP, &rl), 0);
    rl.key = K_BACKUP;
    assert_int_equal(mockprov_add_rule(MP, &rl), 0);
    t0 = now_ms();
    r = send_body(c, BODY);
    elapsed = now_ms() - t0;
    /* The same wait on both: the first key asking for the shortest one is
     * retried; the verdict sits on the attempt after which it waited. */
    assert_attempts(r, "primary:next_key backup:retry_same_backend primary:succeeded");
    assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_SERVED);
    assert_int_equal(aigw_response_status(r), 200);
    assert_received(MP, 2, 1, 0);
    assert_int_equal(aigw_attempt_requested_wait_ms(aigw_response_attempt(r, 0)), 1000);
    assert_int_equal(aigw_attempt_requested_wait_ms(aigw_response_attempt(r, 1)), 1000);
    /* the wait counts from primary's answer, so backup's attempt is taken off it */
    assert_in_range(aigw_attempt_waited_ms(aigw_response_attempt(r, 1)), 900, 1000);
    assert_int_equal(aigw_attempt_waited_ms(aigw_response_attempt(r, 0)), 0);
    if (elapsed < 900 || elapsed > 3000)
        fail_msg("elapsed %lld ms, want ~1000", (long long)elapsed);
    assert_raw_request(MP, 2, K_PRIMARY, BODY_UP);
    aigw_response_free(r);
    aigw_client_free(c);
}

/* 401 and 403: auth, the sibling key next. */
static void test_auth_next_key(void **state)
{
    static const int statuses[] = {401, 403};
    size_t i;
    (void)state;
    for (i = 0; i < 2; i++) {
        aigw_client *c = std_client(MP, 0, GW_FAST);
        aigw_response *r;
        const aigw_attempt *a;
        mockprov_reset(MP);
        mp_add_rule(MP, MOCKPROV_RESPOND, K_PRIMARY, NULL, statuses[i], NULL,
                    "{\"error\":{\"message\":\"Incorrect API key provided\","
                    "\"code\":\"invalid_api_key\"}}",
                    0);
        r = send_body(c, BODY);
        assert_attempts(r, "primary:next_key backup:succeeded");
        assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_SERVED);
        assert_int_equal(aigw_response_status(r), 200);
        assert_received(MP, 1, 1, 0);
        a = aigw_response_attempt(r, 0);
        assert_int_equal(aigw_attempt_status_code(a), statuses[i]);
        assert_string_equal(aigw_attempt_error_class(a), "auth");
        assert_raw_request(MP, 0, K_PRIMARY, BODY_UP);
        assert_raw_request(MP, 1, K_BACKUP, BODY_UP);
        aigw_response_free(r);
        aigw_client_free(c);
    }
}

/* 500, 503 (with and without Retry-After), 529: the sibling key next. */
static void test_server_errors_next_key(void **state)
{
    static const struct {
        int status;
        const char *headers;
        const char *cls;
        int64_t wait;
    } cases[] = {
        {500, NULL, "server", -1},
        {502, NULL, "server", -1},
        {503, NULL, "overloaded", -1},
        {503, "Retry-After: 7\r\n", "rate_limit", 7000},
        {529, NULL, "overloaded", -1},
    };
    size_t i;
    (void)state;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        aigw_client *c = std_client(MP, 0, GW_FAST);
        aigw_response *r;
        const aigw_attempt *a;
        int64_t t0 = now_ms();
        mockprov_reset(MP);
        mp_add_rule(MP, MOCKPROV_RESPOND, K_PRIMARY, NULL, cases[i].status, cases[i].headers,
                    "{\"error\":{\"message\":\"upstream trouble\",\"type\":\"server_error\"}}", 0);
        r = send_body(c, BODY);
        assert_attempts(r, "primary:next_key backup:succeeded");
        assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_SERVED);
        assert_int_equal(aigw_response_status(r), 200);
        assert_received(MP, 1, 1, 0);
        a = aigw_response_attempt(r, 0);
        assert_int_equal(aigw_attempt_status_code(a), cases[i].status);
        assert_string_equal(aigw_attempt_error_class(a), cases[i].cls);
        assert_int_equal(aigw_attempt_requested_wait_ms(a), cases[i].wait);
        assert_int_equal(aigw_attempt_waited_ms(a), 0);
        assert_true(now_ms() - t0 < 1000); /* sideways: no wait */
        aigw_response_free(r);
        aigw_client_free(c);
    }
}

/* Every key of the step fails with 500: a jittered back-off (250 ms base,
 * jitter [1/2, 1]) on the last key, once (sameBackendRetries 1). */
static void test_server_error_backoff_real_clock(void **state)
{
    aigw_client *c = std_client(MP, 0, "\"perRequestTimeout\":\"5s\",\"totalTimeout\":\"10s\","
                                       "\"retryAfterMax\":\"2s\",\"sameBackendRetries\":1");
    aigw_response *r;
    mockprov_rule rl;
    int64_t t0, elapsed, waited;
    (void)state;
    /* both keys 500; the back-off retry goes to the first key in the
     * strategy's order, which has recovered */
    mp_add_rule(MP, MOCKPROV_RESPOND, K_BACKUP, NULL, 500, NULL,
                "{\"error\":{\"type\":\"server_error\"}}", 0);
    rl = mp_rule(MOCKPROV_RESPOND, K_PRIMARY, NULL, 500, NULL,
                 "{\"error\":{\"type\":\"server_error\"}}", 0);
    rl.times = 1;
    assert_int_equal(mockprov_add_rule(MP, &rl), 0);
    t0 = now_ms();
    r = send_body(c, BODY);
    elapsed = now_ms() - t0;
    assert_attempts(r, "primary:next_key backup:retry_same_backend primary:succeeded");
    assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_SERVED);
    assert_received(MP, 2, 1, 0);
    waited = aigw_attempt_waited_ms(aigw_response_attempt(r, 1));
    assert_in_range(waited, 125, 250);
    assert_true(elapsed >= waited - 10);
    assert_true(elapsed < 2000);
    aigw_response_free(r);
    aigw_client_free(c);
}

/* 400 context_length_exceeded: the next model of "models"; the model that
 * overflowed is never tried again in this request, not with the sibling key
 * and not on another provider. */
static void test_context_length_next_model(void **state)
{
    char json[4096];
    aigw_client *c;
    aigw_response *r;
    mockprov_rule rl;
    const char *prov, *model, *reason;
    char line[128], key[128], mdl[64];
    (void)state;
    snprintf(json, sizeof json,
             "{\"providers\":[{\"providerId\":\"mock\",\"name\":\"Mock\",\"baseUrl\":\"%s\","
             "\"models\":[{\"modelId\":\"m1\"},{\"modelId\":\"m2\"},"
             "{\"modelId\":\"m1-alias\",\"providerModelId\":\"m1\"}]},"
             "{\"providerId\":\"mock2\",\"name\":\"Mock 2\",\"baseUrl\":\"%s\"}],"
             "\"providerKeys\":["
             "{\"id\":\"primary\",\"providerId\":\"mock\",\"value\":\"" K_PRIMARY "\"},"
             "{\"id\":\"backup\",\"providerId\":\"mock\",\"value\":\"" K_BACKUP "\"},"
             "{\"id\":\"third\",\"providerId\":\"mock2\",\"value\":\"" K_THIRD "\"}],"
             "\"accessKeyConfiguration\":{\"name\":\"integration\",\"router\":{\"rules\":["
             "{\"provider\":\"mock\",\"steps\":[{\"type\":\"user\","
             "\"keys\":[{\"id\":\"primary\"},{\"id\":\"backup\"}]}]},"
             "{\"provider\":\"mock2\",\"steps\":[{\"type\":\"user\",\"keys\":[{\"id\":\"third\"}]}]}"
             "]}},\"gatewayConfig\":{" GW_FAST "}}",
             mockprov_base_url(MP), mockprov_base_url(MP));
    c = client_from_json(json);
    rl = mp_rule(MOCKPROV_RESPOND, NULL, NULL, 400, NULL,
                 "{\"error\":{\"message\":\"This model's maximum context length is 8192 tokens. "
                 "However, your messages resulted in 9000 tokens.\",\"type\":"
                 "\"invalid_request_error\",\"param\":\"messages\",\"code\":"
                 "\"context_length_exceeded\"}}",
                 0);
    rl.key = K_PRIMARY; /* mock's m1: 8192 tokens; mock2's m1 takes more */
    rl.model = "m1";
    assert_int_equal(mockprov_add_rule(MP, &rl), 0);
    /* The ban is (provider, upstream model): mock:m1-alias is mock's m1 and
     * is skipped; mock2:m1 is another provider's m1, with its own context
     * window, and serves. */
    r = send_body(c, "{\"model\":\"mock:m1\",\"models\":[\"mock:m1-alias\",\"mock2:m1\","
                     "\"mock:m2\"],\"messages\":[{\"role\":\"user\",\"content\":\"a long story\"}]}");
    assert_attempts(r, "primary:next_backend third:succeeded");
    assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_SERVED);
    assert_int_equal(aigw_response_status(r), 200);
    assert_string_equal(aigw_attempt_error_class(aigw_response_attempt(r, 0)), "context_length");
    assert_string_equal(aigw_attempt_model(aigw_response_attempt(r, 0)), "m1");
    assert_string_equal(aigw_attempt_provider(aigw_response_attempt(r, 1)), "mock2");
    assert_string_equal(aigw_attempt_model(aigw_response_attempt(r, 1)), "m1");
    assert_string_equal(aigw_response_model(r), "m1");
    assert_received(MP, 1, 0, 1);
    assert_int_equal(mockprov_log_get(MP, 0, line, sizeof line, key, sizeof key, mdl, sizeof mdl), 0);
    assert_string_equal(mdl, "m1");
    assert_string_equal(key, K_PRIMARY);
    assert_int_equal(mockprov_log_get(MP, 1, line, sizeof line, key, sizeof key, mdl, sizeof mdl), 0);
    assert_string_equal(mdl, "m1");
    assert_string_equal(key, K_THIRD);
    assert_string_equal(line, "POST /v1/chat/completions");
    assert_int_equal(aigw_response_skip_count(r), 1);
    assert_int_equal(aigw_response_skip(r, 0, &prov, &model, &reason), AIGW_OK);
    assert_string_equal(prov, "mock");
    assert_string_equal(model, "m1-alias");
    assert_string_equal(reason, "context_length_exceeded");
    aigw_response_free(r);
    aigw_client_free(c);
}

/* 400 content policy: fail fast, the upstream answer byte for byte, one
 * request sent. */
static void test_content_policy_fail_fast(void **state)
{
    static const char upstream[] =
        "{\"error\":{\"message\":\"Your request was rejected as a result of our safety "
        "system. \xe2\x9c\x8b \\u00e9\",\"type\":\"invalid_request_error\",\"param\":null,"
        "\"code\":\"content_policy_violation\"}}  \t";
    aigw_client *c = std_client(MP, 1, GW_FAST);
    aigw_response *r;
    size_t len;
    const char *body;
    (void)state;
    mp_add_rule(MP, MOCKPROV_RESPOND, K_PRIMARY, NULL, 400, "X-Upstream-Note: kept\r\n", upstream,
                0);
    r = send_body(c, BODY);
    assert_attempts(r, "primary:fail_fast");
    assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_FAIL_FAST);
    assert_int_equal(aigw_response_status(r), 400);
    assert_null(aigw_response_error_code(r));
    assert_string_equal(aigw_attempt_error_class(aigw_response_attempt(r, 0)), "content_policy");
    body = aigw_response_body(r, &len);
    assert_int_equal(len, strlen(upstream));
    assert_memory_equal(body, upstream, len);
    assert_string_equal(aigw_response_header_get(r, "x-upstream-note"), "kept");
    assert_received(MP, 1, 0, 0);
    assert_raw_request(MP, 0, K_PRIMARY, BODY_UP);
    aigw_response_free(r);
    aigw_client_free(c);
}

/* Connection refused: the provider's other key (same host) is skipped; the
 * fallback model on another provider serves. */
static void test_connection_refused(void **state)
{
    char json[4096], url[64];
    aigw_client *c;
    aigw_response *r;
    const aigw_attempt *a;
    int64_t t0;
    (void)state;
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1", dead_port());
    snprintf(json, sizeof json,
             "{\"providers\":[{\"providerId\":\"dead\",\"name\":\"Dead\",\"baseUrl\":\"%s\"},"
             "{\"providerId\":\"mock\",\"name\":\"Mock\",\"baseUrl\":\"%s\"}],"
             "\"providerKeys\":["
             "{\"id\":\"dead1\",\"providerId\":\"dead\",\"value\":\"" K_DEAD "\"},"
             "{\"id\":\"dead2\",\"providerId\":\"dead\",\"value\":\"" K_BACKUP "\"},"
             "{\"id\":\"primary\",\"providerId\":\"mock\",\"value\":\"" K_PRIMARY "\"}],"
             "\"accessKeyConfiguration\":{\"name\":\"integration\",\"router\":{\"rules\":["
             "{\"provider\":\"dead\",\"steps\":[{\"type\":\"user\","
             "\"keys\":[{\"id\":\"dead1\"},{\"id\":\"dead2\"}]}]},"
             "{\"provider\":\"mock\",\"steps\":[{\"type\":\"user\",\"keys\":[{\"id\":\"primary\"}]}]}"
             "]}},\"gatewayConfig\":{" GW_FAST "}}",
             url, mockprov_base_url(MP));
    c = client_from_json(json);
    t0 = now_ms();
    r = send_body(c, "{\"model\":\"dead:m1\",\"models\":[\"mock:m1\"],\"messages\":[]}");
    assert_attempts(r, "dead1:next_backend primary:succeeded");
    assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_SERVED);
    assert_int_equal(aigw_response_status(r), 200);
    a = aigw_response_attempt(r, 0);
    assert_string_equal(aigw_attempt_provider(a), "dead");
    assert_int_equal(aigw_attempt_status_code(a), 0);
    assert_string_equal(aigw_attempt_transport_error(a), "connect");
    assert_string_equal(aigw_attempt_error_class(a), "network");
    assert_string_equal(aigw_attempt_provider(aigw_response_attempt(r, 1)), "mock");
    assert_received(MP, 1, 0, 0);
    assert_raw_request(MP, 0, K_PRIMARY, "{\"model\":\"m1\",\"messages\":[]}");
    assert_true(now_ms() - t0 < 1000);
    aigw_response_free(r);
    aigw_client_free(c);
}

/* No answer: perRequestTimeout ends the attempt; the sibling key shares the
 * host and is not tried; the next step serves. */
static void test_no_answer_timeout(void **state)
{
    aigw_client *c = std_client(MP, 1, "\"perRequestTimeout\":\"300ms\",\"totalTimeout\":\"10s\","
                                       "\"retryAfterMax\":\"2s\",\"sameBackendRetries\":1");
    aigw_response *r;
    const aigw_attempt *a;
    int64_t t0, elapsed;
    (void)state;
    mp_add_rule(MP, MOCKPROV_SILENT, K_PRIMARY, NULL, 0, NULL, NULL, 0);
    t0 = now_ms();
    r = send_body(c, BODY);
    elapsed = now_ms() - t0;
    assert_attempts(r, "primary:next_backend third:succeeded");
    assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_SERVED);
    assert_int_equal(aigw_response_status(r), 200);
    assert_received(MP, 1, 0, 1);
    a = aigw_response_attempt(r, 0);
    assert_int_equal(aigw_attempt_status_code(a), 0);
    assert_string_equal(aigw_attempt_transport_error(a), "timeout");
    assert_string_equal(aigw_attempt_error_class(a), "timeout");
    assert_in_range(aigw_attempt_duration_ms(a), 280, 1200);
    assert_int_equal(aigw_attempt_step(aigw_response_attempt(r, 1)), 1);
    assert_in_range(elapsed, 280, 1500);
    assert_raw_request(MP, 1, K_THIRD, BODY_UP);
    aigw_response_free(r);
    aigw_client_free(c);
}

/* The connection is reset after the request, before any header. */
static void test_reset_before_headers(void **state)
{
    /* A fresh client: its first connection is fresh. */
    aigw_client *c = std_client(MP, 1, GW_FAST);
    aigw_response *r;
    const aigw_attempt *a;
    (void)state;
    mp_add_rule(MP, MOCKPROV_CLOSE, K_PRIMARY, NULL, 0, NULL, NULL, 0);
    r = send_body(c, BODY);
    assert_attempts(r, "primary:next_backend third:succeeded");
    assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_SERVED);
    a = aigw_response_attempt(r, 0);
    assert_int_equal(aigw_attempt_status_code(a), 0);
    assert_string_equal(aigw_attempt_transport_error(a), "reset");
    assert_string_equal(aigw_attempt_error_class(a), "network");
    /* On a fresh connection libcurl does not resend: exactly one request. */
    assert_received(MP, 1, 0, 1);
    aigw_response_free(r);

    /* The same client again: the connection left open by `third` is reused
     * for `primary`.  libcurl treats a reused connection that dies before
     * any byte of answer as stale and resends the request once on a new
     * connection, on its own ("Connection died, retrying a fresh connect"):
     * the provider receives the POST twice although the library records one
     * attempt and never retries a reset.  This asserts what is observed. */
    mockprov_reset(MP);
    mp_add_rule(MP, MOCKPROV_CLOSE, K_PRIMARY, NULL, 0, NULL, NULL, 0);
    r = send_body(c, BODY);
    assert_attempts(r, "primary:next_backend third:succeeded");
    assert_string_equal(aigw_attempt_transport_error(aigw_response_attempt(r, 0)), "reset");
    assert_received(MP, 2, 0, 1);
    aigw_response_free(r);
    aigw_client_free(c);
}

/* A 302 whose Location carries the key to another server: not followed,
 * not served; the host is skipped, the next step serves. */
static void test_redirect_not_followed(void **state)
{
    aigw_client *c = std_client(MP, 1, GW_FAST);
    aigw_response *r;
    const aigw_attempt *a;
    char loc[256];
    (void)state;
    snprintf(loc, sizeof loc, "Location: %s/chat/completions?api_key=%s\r\n",
             mockprov_base_url(MP2), K_PRIMARY);
    mp_add_rule(MP, MOCKPROV_RESPOND, K_PRIMARY, NULL, 302, loc, "", 0);
    r = send_body(c, BODY);
    assert_attempts(r, "primary:next_backend third:succeeded");
    assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_SERVED);
    assert_int_equal(aigw_response_status(r), 200);
    a = aigw_response_attempt(r, 0);
    assert_int_equal(aigw_attempt_status_code(a), 302);
    assert_string_equal(aigw_attempt_error_class(a), "redirect");
    assert_null(aigw_response_header_get(r, "location"));
    assert_received(MP, 1, 0, 1);
    assert_int_equal(mockprov_count(MP2, NULL), 0);
    assert_int_equal(mockprov_connection_count(MP2), 0);
    assert_no_secret(r);
    aigw_response_free(r);
    aigw_client_free(c);
}

/* A 64 MiB answer over maxResponseBytes 1 MiB: stopped at once, reported as
 * too_large, the final answer a 502 naming it. */
static void test_huge_body_too_large(void **state)
{
    aigw_client *c = std_client(MP, 0, GW_FAST ",\"maxResponseBytes\":1048576");
    aigw_response *r;
    mockprov_rule rl;
    const aigw_attempt *a;
    int64_t t0, elapsed;
    (void)state;
    rl = mp_rule(MOCKPROV_HUGE, K_PRIMARY, NULL, 200, NULL, NULL, 0);
    rl.huge_bytes = (size_t)64 * 1024 * 1024;
    assert_int_equal(mockprov_add_rule(MP, &rl), 0);
    t0 = now_ms();
    r = send_body(c, BODY);
    elapsed = now_ms() - t0;
    /* a host-level failure: the sibling key is skipped, nothing is left */
    assert_attempts(r, "primary:exhausted");
    assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_EXHAUSTED);
    a = aigw_response_attempt(r, 0);
    assert_int_equal(aigw_attempt_status_code(a), 0);
    assert_string_equal(aigw_attempt_transport_error(a), "too_large");
    assert_error_answer(r, 502, "upstream_error", "maxResponseBytes");
    assert_received(MP, 1, 0, 0);
    if (elapsed > 1500)
        fail_msg("a too-large answer took %lld ms to give up on", (long long)elapsed);
    aigw_response_free(r);
    aigw_client_free(c);
}

/* An answer whose header block passes the 256 KiB cap (280 lines of 1 KiB):
 * too_large like a body over maxResponseBytes, and the message names the
 * header cap, not maxResponseBytes. */
static void test_huge_headers_too_large(void **state)
{
    aigw_client *c = std_client(MP, 0, GW_FAST);
    aigw_response *r;
    mockprov_rule rl;
    const aigw_attempt *a;
    size_t i, len = 0, line = 1024, n = 280;
    char *lines = malloc(n * line + 1);
    (void)state;
    assert_non_null(lines);
    for (i = 0; i < n; i++) {
        int w = snprintf(lines + len, line + 1, "X-Pad-%03zu: ", i);
        memset(lines + len + w, 'p', line - 2 - (size_t)w);
        memcpy(lines + len + line - 2, "\r\n", 3);
        len += line;
    }
    rl = mp_rule(MOCKPROV_RESPOND, K_PRIMARY, NULL, 200, lines, NULL, 0);
    assert_int_equal(mockprov_add_rule(MP, &rl), 0);
    free(lines);
    r = send_body(c, BODY);
    assert_attempts(r, "primary:exhausted");
    a = aigw_response_attempt(r, 0);
    assert_int_equal(aigw_attempt_status_code(a), 0);
    assert_string_equal(aigw_attempt_transport_error(a), "too_large");
    assert_error_answer(r, 502, "upstream_error", "headers passed 262144 bytes");
    assert_null(strstr(aigw_response_body(r, NULL), "maxResponseBytes"));
    assert_received(MP, 1, 0, 0);
    aigw_response_free(r);
    aigw_client_free(c);
}

/* Every key rate limited, the waits too long to wait (> retryAfterMax):
 * 429 with the shortest wait as Retry-After. */
static void test_all_rate_limited_429(void **state)
{
    aigw_client *c = std_client(MP, 0, "\"perRequestTimeout\":\"5s\",\"totalTimeout\":\"10s\","
                                       "\"retryAfterMax\":\"2s\",\"sameBackendRetries\":1");
    aigw_response *r;
    int64_t t0 = now_ms();
    (void)state;
    mp_add_rule(MP, MOCKPROV_RESPOND, K_PRIMARY, NULL, 429, "Retry-After: 30\r\n", RL_BODY, 0);
    mp_add_rule(MP, MOCKPROV_RESPOND, K_BACKUP, NULL, 429, "Retry-After: 20\r\n", RL_BODY, 0);
    r = send_body(c, BODY);
    assert_attempts(r, "primary:next_key backup:exhausted");
    assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_EXHAUSTED);
    assert_error_answer(r, 429, "rate_limited", NULL);
    assert_non_null(aigw_response_header_get(r, "retry-after"));
    assert_string_equal(aigw_response_header_get(r, "retry-after"), "20");
    assert_string_equal(aigw_response_header_get(r, "retry-after-ms"), "20000");
    assert_received(MP, 1, 1, 0);
    assert_true(now_ms() - t0 < 1000); /* nothing waited */
    assert_no_secret(r);
    aigw_response_free(r);
    aigw_client_free(c);
}

/* Every key fails auth: 401. */
static void test_all_auth_401(void **state)
{
    aigw_client *c = std_client(MP, 0, GW_FAST);
    aigw_response *r;
    (void)state;
    mp_add_rule(MP, MOCKPROV_RESPOND, K_PRIMARY, NULL, 401, NULL,
                "{\"error\":{\"message\":\"Incorrect API key provided\","
                "\"code\":\"invalid_api_key\"}}",
                0);
    mp_add_rule(MP, MOCKPROV_RESPOND, K_BACKUP, NULL, 403, NULL,
                "{\"error\":{\"message\":\"Project does not have access\","
                "\"code\":\"forbidden\"}}",
                0);
    r = send_body(c, BODY);
    assert_attempts(r, "primary:next_key backup:exhausted");
    assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_EXHAUSTED);
    assert_error_answer(r, 401, "unauthorized", NULL);
    assert_null(aigw_response_header_get(r, "retry-after"));
    assert_received(MP, 1, 1, 0);
    assert_no_secret(r);
    aigw_response_free(r);
    aigw_client_free(c);
}

/* A user step, then an `ngrok` step (ngrokGatewayUrl may be http to a
 * loopback host, so the mock provider stands in for ngrok's gateway): the
 * move is a managed fallback, the body names provider:model, the ngrok
 * access key is the credential. */
static void test_managed_fallback_to_ngrok_step(void **state)
{
    char json[4096];
    aigw_client *c;
    aigw_response *r;
    const aigw_attempt *a;
    (void)state;
    /* "openai" is a catalog provider (ngrok steps serve those only); its
     * baseUrl is overridden to the mock provider. */
    snprintf(json, sizeof json,
             "{\"providers\":[{\"providerId\":\"openai\",\"name\":\"OpenAI\",\"baseUrl\":\"%s\"}],"
             "\"providerKeys\":["
             "{\"id\":\"primary\",\"providerId\":\"openai\",\"value\":\"" K_PRIMARY "\"}],"
             "\"accessKeyConfiguration\":{\"name\":\"integration\",\"router\":{\"rules\":["
             "{\"provider\":\"openai\",\"steps\":[{\"type\":\"user\",\"keys\":[{\"id\":\"primary\"}]},"
             "{\"type\":\"ngrok\"}]}]}},"
             "\"ngrokAccessKey\":\"" K_NGROK "\",\"ngrokGatewayUrl\":\"%s\","
             "\"gatewayConfig\":{" GW_FAST "}}",
             mockprov_base_url(MP), mockprov_base_url(MP));
    c = client_from_json(json);
    mp_add_rule(MP, MOCKPROV_RESPOND, K_PRIMARY, NULL, 429, NULL, RL_BODY, 0);
    r = send_body(c, "{\"model\":\"gpt-4o\",\"messages\":[]}");
    assert_attempts(r, "primary:managed_fallback ngrok:succeeded");
    assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_SERVED);
    a = aigw_response_attempt(r, 0);
    assert_string_equal(aigw_attempt_provider(a), "openai");
    assert_string_equal(aigw_attempt_key_source(a), "user");
    a = aigw_response_attempt(r, 1);
    assert_string_equal(aigw_attempt_key_source(a), "ngrok");
    assert_int_equal(aigw_attempt_step(a), 1);
    assert_int_equal(mockprov_count(MP, K_PRIMARY), 1);
    assert_int_equal(mockprov_count(MP, K_NGROK), 1);
    assert_raw_request(MP, 0, K_PRIMARY, "{\"model\":\"gpt-4o\",\"messages\":[]}");
    /* to ngrok's gateway the model is provider-qualified */
    assert_raw_request(MP, 1, K_NGROK, "{\"model\":\"openai:gpt-4o\",\"messages\":[]}");
    assert_no_secret(r);
    aigw_response_free(r);
    aigw_client_free(c);
}

/* An upstream that echoes the key it received: every verbatim copy in the
 * answer handed back is replaced by [REDACTED]. */
static void test_echoed_key_redacted(void **state)
{
    aigw_client *c = std_client(MP, 0, GW_FAST);
    aigw_response *r;
    size_t len;
    const char *body;
    (void)state;
    mp_add_rule(MP, MOCKPROV_RESPOND, K_PRIMARY, NULL, 429, "X-Echo: " K_PRIMARY "\r\n",
                "{\"error\":{\"message\":\"key " K_PRIMARY " is rate limited\"}}", 0);
    mp_add_rule(MP, MOCKPROV_RESPOND, K_BACKUP, NULL, 200, "X-Echo: Bearer " K_BACKUP "\r\n",
                "{\"seen\":\"" K_BACKUP "\",\"again\":\"" K_BACKUP K_BACKUP "\"}", 0);
    r = send_body(c, BODY);
    assert_attempts(r, "primary:next_key backup:succeeded");
    body = aigw_response_body(r, &len);
    assert_string_equal(body, "{\"seen\":\"[REDACTED]\",\"again\":\"[REDACTED][REDACTED]\"}");
    assert_int_equal(len, strlen(body));
    assert_string_equal(aigw_response_header_get(r, "x-echo"), "[REDACTED]");
    assert_no_secret(r);
    assert_received(MP, 1, 1, 0);
    aigw_response_free(r);
    aigw_client_free(c);
}

/* totalTimeout passes during an attempt: 504, nothing more is tried. */
static void test_total_timeout_504(void **state)
{
    aigw_client *c = std_client(MP, 1, "\"perRequestTimeout\":\"5s\",\"totalTimeout\":\"400ms\","
                                       "\"retryAfterMax\":\"2s\",\"sameBackendRetries\":1");
    aigw_response *r;
    const aigw_attempt *a;
    int64_t t0, elapsed;
    (void)state;
    mp_add_rule(MP, MOCKPROV_SILENT, K_PRIMARY, NULL, 0, NULL, NULL, 0);
    t0 = now_ms();
    r = send_body(c, BODY);
    elapsed = now_ms() - t0;
    assert_attempts(r, "primary:exhausted");
    assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_TIMED_OUT);
    assert_error_answer(r, 504, "timeout", "totalTimeout");
    a = aigw_response_attempt(r, 0);
    assert_string_equal(aigw_attempt_transport_error(a), "timeout");
    assert_received(MP, 1, 0, 0);
    assert_in_range(elapsed, 380, 1500);
    aigw_response_free(r);
    aigw_client_free(c);
}

/* ---- one client, many threads ---- */

#define THREADS 4
#define PER_THREAD 100

typedef struct worker {
    pthread_t th;
    aigw_client *c;
    int ok;            /* requests that went primary:next_key backup:succeeded */
    char first_bad[320];
} worker;

static void *worker_main(void *arg)
{
    worker *w = arg;
    int i;
    for (i = 0; i < PER_THREAD; i++) {
        aigw_request *req = NULL;
        aigw_response *resp = NULL;
        char got[256];
        if (aigw_request_new(&req) != AIGW_OK ||
            aigw_request_set_body(req, BODY, strlen(BODY)) != AIGW_OK ||
            aigw_client_send(w->c, req, &resp, NULL) != AIGW_OK) {
            snprintf(w->first_bad, sizeof w->first_bad, "send failed");
        } else if (attempts_string(resp, ATTEMPT_FIELDS, got, sizeof got) == 0 &&
                   strcmp(got, "primary:next_key backup:succeeded") == 0 &&
                   aigw_response_outcome(resp) == AIGW_OUTCOME_SERVED &&
                   aigw_response_status(resp) == 200) {
            w->ok++;
        } else if (!w->first_bad[0]) {
            snprintf(w->first_bad, sizeof w->first_bad, "%s (status %d)", got,
                     aigw_response_status(resp));
        }
        aigw_response_free(resp);
        aigw_request_free(req);
    }
    return NULL;
}

static void test_concurrent_shared_client(void **state)
{
    /* failover itself under load: a client that forgets (key health has its
     * own tests) */
    aigw_client *c = std_client(MP, 0, GW_FAST ",\"keyCooldown\":\"0\",\"retryBudget\":false");
    worker w[THREADS];
    int i;
    (void)state;
    mp_add_rule(MP, MOCKPROV_RESPOND, K_PRIMARY, NULL, 429, NULL, RL_BODY, 0);
    memset(w, 0, sizeof w);
    for (i = 0; i < THREADS; i++) {
        w[i].c = c;
        assert_int_equal(pthread_create(&w[i].th, NULL, worker_main, &w[i]), 0);
    }
    for (i = 0; i < THREADS; i++)
        assert_int_equal(pthread_join(w[i].th, NULL), 0);
    for (i = 0; i < THREADS; i++)
        if (w[i].ok != PER_THREAD)
            fail_msg("thread %d: %d of %d served by backup; first other: %s", i, w[i].ok,
                     PER_THREAD, w[i].first_bad);
    assert_received(MP, THREADS * PER_THREAD, THREADS * PER_THREAD, 0);
    /* connections are reused: far fewer than one per request */
    assert_in_range(mockprov_connection_count(MP), 1, 2 * THREADS + 8);
    aigw_client_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_429_backup_serves, mp_setup),
        cmocka_unit_test_setup(test_429_retry_after_waits, mp_setup),
        cmocka_unit_test_setup(test_auth_next_key, mp_setup),
        cmocka_unit_test_setup(test_server_errors_next_key, mp_setup),
        cmocka_unit_test_setup(test_server_error_backoff_real_clock, mp_setup),
        cmocka_unit_test_setup(test_context_length_next_model, mp_setup),
        cmocka_unit_test_setup(test_content_policy_fail_fast, mp_setup),
        cmocka_unit_test_setup(test_connection_refused, mp_setup),
        cmocka_unit_test_setup(test_no_answer_timeout, mp_setup),
        cmocka_unit_test_setup(test_reset_before_headers, mp_setup),
        cmocka_unit_test_setup(test_redirect_not_followed, mp_setup),
        cmocka_unit_test_setup(test_huge_body_too_large, mp_setup),
        cmocka_unit_test_setup(test_huge_headers_too_large, mp_setup),
        cmocka_unit_test_setup(test_all_rate_limited_429, mp_setup),
        cmocka_unit_test_setup(test_all_auth_401, mp_setup),
        cmocka_unit_test_setup(test_managed_fallback_to_ngrok_step, mp_setup),
        cmocka_unit_test_setup(test_echoed_key_redacted, mp_setup),
        cmocka_unit_test_setup(test_total_timeout_504, mp_setup),
        cmocka_unit_test_setup(test_concurrent_shared_client, mp_setup),
    };
    return cmocka_run_group_tests(tests, group_setup, mp_group_teardown);
}
