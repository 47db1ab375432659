/*
 * test_scope.c - each fact a client remembers lives at the scope the
 * failure speaks for, end to end: a gateway file, the default libcurl
 * transport, and real HTTP on loopback to the mock provider, which counts
 * what it receives per key.
 *
 * - a rate limit cools (key, model): the same key still serves a fallback
 *   model;
 * - server errors open the (key, model) endpoint's breaker: one bad key
 *   never shuts out its sibling, from one thread or eight; the backend
 *   counts as open only when every key's endpoint is;
 * - the context-length ban is (provider, upstream model): another provider
 *   serving a model spelled alike is tried.
 * Every case checks the exact attempts and skips and the requests the mock
 * received.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support.h"

#define K_SOLO "sk-scope-solo-0123456789"
#define K_500 "sk-scope-k500-1111111111"
#define K_OK "sk-scope-kok-2222222222"
#define K_PA "sk-scope-pa-3333333333"
#define K_PB "sk-scope-pb-4444444444"

static const char *const ALL_KEYS[] = {K_SOLO, K_500, K_OK, K_PA, K_PB};
#define N_ALL_KEYS (sizeof ALL_KEYS / sizeof ALL_KEYS[0])

#define RL_BODY "{\"error\":{\"message\":\"Rate limit reached for gpt-4o\"," \
                "\"type\":\"requests\",\"code\":\"rate_limit_exceeded\"}}"
#define SERVER_BODY "{\"error\":{\"message\":\"The server had an error\",\"type\":\"server_error\"}}"
#define CONTEXT_BODY "{\"error\":{\"message\":\"This model's maximum context length is 8192 " \
                     "tokens.\",\"type\":\"invalid_request_error\",\"code\":"            \
                     "\"context_length_exceeded\"}}"

#define KEY(id, value) "{\"id\":\"" id "\",\"providerId\":\"mock\",\"value\":\"" value "\"}"
#define GW "\"perRequestTimeout\":\"5s\",\"totalTimeout\":\"10s\",\"connectTimeout\":\"2s\""

/* "model/key/status/verdict" per attempt; "reason:model/key" per skip. */
static void assert_seq_at(const aigw_response *r, const char *attempts, const char *skips,
                          const char *file, int line)
{
    assert_attempts_at(r, "model/key/result/verdict", attempts, file, line);
    assert_skips_at(r, "reason:model/key", skips, file, line);
    assert_response_no_secret(r, ALL_KEYS, N_ALL_KEYS);
}
#define assert_seq(r, attempts, skips) assert_seq_at(r, attempts, skips, __FILE__, __LINE__)

static void assert_received(const char *const *keys, const long *want, size_t n)
{
    assert_received_by_key(MP, keys, want, n);
}

/* The snapshot entry of the endpoint (key id, model). */
static const aigw_stat *endpoint(const aigw_stats *s, const char *key, const char *model)
{
    size_t i;
    for (i = 0; i < aigw_stats_count(s); i++) {
        const aigw_stat *e = aigw_stats_at(s, i);
        if (strcmp(e->kind, "endpoint") == 0 && strcmp(e->name, key) == 0 &&
            strcmp(e->model, model) == 0)
            return e;
    }
    fail_msg("no endpoint %s with %s: %s", key, model, aigw_stats_json(s));
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* 1. one key, a fallback model: a 429 for gpt-4o says nothing of gpt-4o-mini */
/* ------------------------------------------------------------------------ */

/* What a strategy was shown of the key, per model. */
static aigw_key_state seen_state[2];
static int seen_calls;

static int record_view(void *ud, const char *provider, const char *model, size_t step,
                       const aigw_key_health *const *keys, size_t n, size_t *order)
{
    (void)ud;
    (void)provider;
    (void)step;
    assert_int_equal(n, 1);
    seen_state[strcmp(model, "gpt-4o") == 0 ? 0 : 1] = keys[0]->state;
    seen_calls++;
    order[0] = 0;
    return 1;
}

static void test_one_key_fallback_model(void **state)
{
    static const char body[] = "{\"model\":\"mock:gpt-4o\",\"models\":[\"mock:gpt-4o-mini\"],"
                               "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
    static const char *const keys[] = {K_SOLO};
    const aigw_strategy strategy = {AIGW_STRATEGY_VERSION, NULL, NULL, record_view};
    char *json = mock_gateway_json(
        "scope", mockprov_base_url(MP), KEY("solo", K_SOLO),
        "{\"provider\":\"mock\",\"steps\":[{\"type\":\"user\",\"keys\":[{\"id\":\"solo\"}]}]}",
        GW);
    aigw_client *c = client_from_json(json);
    aigw_response *r;
    aigw_stats *s = NULL;
    const aigw_stat *e;
    (void)state;
    free(json);
    assert_int_equal(aigw_client_set_strategy(c, &strategy, NULL), AIGW_OK);
    /* gpt-4o answers 429 naming no wait, every time */
    mp_add_rule(MP, MOCKPROV_RESPOND, K_SOLO, "gpt-4o", 429, NULL, RL_BODY, 0);

    r = send_body(c, body);
    assert_seq(r, "gpt-4o/solo/429/next_backend gpt-4o-mini/solo/200/succeeded", "");
    assert_int_equal(aigw_response_status(r), 200);
    assert_string_equal(aigw_response_model(r), "gpt-4o-mini");
    aigw_response_free(r);
    assert_received(keys, (const long[]){2}, 1);

    /* the next request: gpt-4o is cooling on this key, gpt-4o-mini is not */
    seen_calls = 0;
    r = send_body(c, body);
    assert_seq(r, "gpt-4o-mini/solo/200/succeeded", "key_cooling:gpt-4o/solo");
    aigw_response_free(r);
    assert_received(keys, (const long[]){3}, 1);
    assert_int_equal(seen_calls, 2);
    assert_int_equal(seen_state[0], AIGW_KEY_COOLING);
    assert_int_equal(seen_state[1], AIGW_KEY_READY);

    /* the stats say the same: the key is ready; with gpt-4o it cools */
    assert_int_equal(aigw_client_stats(c, &s), AIGW_OK);
    e = find_stat(s, "key", "solo");
    assert_string_equal(e->state, "ready");
    assert_int_equal(e->requests, 3);
    assert_int_equal(e->skips, 1);
    e = endpoint(s, "solo", "gpt-4o");
    assert_string_equal(e->state, "cooling");
    assert_string_equal(e->reason, "rate_limit");
    assert_in_range(e->wait_ms, 1, 2000); /* keyCooldown 2s, jittered */
    assert_int_equal(e->requests, 1);
    assert_int_equal(e->skips, 1);
    e = endpoint(s, "solo", "gpt-4o-mini");
    assert_string_equal(e->state, "ready");
    assert_int_equal(e->requests, 2);
    assert_int_equal(e->successes, 2);
    assert_no_secret_in(aigw_stats_json(s), ALL_KEYS, N_ALL_KEYS);
    aigw_stats_free(s);
    aigw_client_free(c);
}

/* ------------------------------------------------------------------------ */
/* 2. one broken key, one good key: the broken key's endpoint opens alone   */
/* ------------------------------------------------------------------------ */

/* A client whose one step is [k500, kok], in that order. */
static aigw_client *broken_key_client(const char *gw)
{
    char *json = mock_gateway_json(
        "scope", mockprov_base_url(MP), KEY("k500", K_500) "," KEY("kok", K_OK),
        "{\"provider\":\"mock\",\"steps\":[{\"type\":\"user\","
        "\"keys\":[{\"id\":\"k500\"},{\"id\":\"kok\"}]}]}",
        gw);
    aigw_client *c = client_from_json(json);
    free(json);
    return c;
}

static const char BODY_M1[] = "{\"model\":\"mock:m1\",\"messages\":[{\"role\":\"user\","
                              "\"content\":\"hi\"}]}";

static void test_broken_key_one_thread(void **state)
{
    static const char *const keys[] = {K_500, K_OK};
    aigw_client *c = broken_key_client(GW);
    aigw_response *r;
    aigw_stats *s = NULL;
    int i;
    (void)state;
    mp_add_rule(MP, MOCKPROV_RESPOND, K_500, NULL, 500, NULL, SERVER_BODY, 0);
    /* five failures (circuitBreaker.failures) open k500's endpoint ... */
    for (i = 0; i < 5; i++) {
        r = send_body(c, BODY_M1);
        assert_seq(r, "m1/k500/500/next_key m1/kok/200/succeeded", "");
        aigw_response_free(r);
    }
    /* ... and only it: kok serves without a call to k500 */
    for (i = 0; i < 5; i++) {
        r = send_body(c, BODY_M1);
        assert_seq(r, "m1/kok/200/succeeded", "circuit_open:m1/k500");
        assert_in_range(aigw_response_skip_wait_ms(r, 0), 1, 5000);
        aigw_response_free(r);
    }
    assert_received(keys, (const long[]){5, 10}, 2);
    assert_int_equal(aigw_client_stats(c, &s), AIGW_OK);
    assert_string_equal(endpoint(s, "k500", "m1")->state, "open");
    assert_string_equal(endpoint(s, "k500", "m1")->reason, "server");
    assert_int_equal(endpoint(s, "k500", "m1")->skips, 5);
    assert_string_equal(endpoint(s, "kok", "m1")->state, "ready");
    assert_string_equal(find_stat(s, "backend", "mock:m1")->state, "closed");
    assert_string_equal(find_stat(s, "key", "k500")->state, "ready");
    aigw_stats_free(s);
    aigw_client_free(c);
}

#define THREADS 8
#define PER_THREAD 10

typedef struct worker {
    aigw_client *c;
    int served, k500_attempts, with_skip, bad;
    char first_bad[600];
} worker;

static void *work(void *arg)
{
    worker *w = arg;
    int i;
    for (i = 0; i < PER_THREAD; i++) {
        aigw_request *req = NULL;
        aigw_response *r = NULL;
        char att[256], sk[256];
        if (aigw_request_new(&req) != AIGW_OK ||
            aigw_request_set_body(req, BODY_M1, strlen(BODY_M1)) != AIGW_OK ||
            aigw_client_send(w->c, req, &r, NULL) != AIGW_OK ||
            attempts_string(r, "key/result/verdict", att, sizeof att) != 0 ||
            skips_string(r, "reason/key", sk, sizeof sk) != 0) {
            w->bad++;
        } else if (strcmp(att, "k500/500/next_key kok/200/succeeded") == 0 && !sk[0]) {
            w->served++;
            w->k500_attempts++;
        } else if (strcmp(att, "kok/200/succeeded") == 0 &&
                   strcmp(sk, "circuit_open/k500") == 0) {
            w->served++;
            w->with_skip++;
        } else {
            if (!w->bad)
                snprintf(w->first_bad, sizeof w->first_bad, "attempts \"%s\" skips \"%s\"",
                         att, sk);
            w->bad++;
        }
        aigw_response_free(r);
        aigw_request_free(req);
    }
    return NULL;
}

/* The same from eight threads through one client: every request served by
 * kok; k500 called at most once per thread beyond the five that open it. */
static void test_broken_key_eight_threads(void **state)
{
    static const char *const keys[] = {K_500, K_OK};
    aigw_client *c = broken_key_client(GW);
    pthread_t th[THREADS];
    worker w[THREADS];
    long k500 = 0, served = 0, skipped = 0;
    int i;
    (void)state;
    mp_add_rule(MP, MOCKPROV_RESPOND, K_500, NULL, 500, NULL, SERVER_BODY, 0);
    memset(w, 0, sizeof w);
    for (i = 0; i < THREADS; i++) {
        w[i].c = c;
        assert_int_equal(pthread_create(&th[i], NULL, work, &w[i]), 0);
    }
    for (i = 0; i < THREADS; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    for (i = 0; i < THREADS; i++) {
        if (w[i].bad)
            fail_msg("thread %d: %d requests not as expected, first: %s", i, w[i].bad,
                     w[i].first_bad);
        served += w[i].served;
        k500 += w[i].k500_attempts;
        skipped += w[i].with_skip;
    }
    assert_int_equal(served, THREADS * PER_THREAD);
    assert_int_equal(k500 + skipped, THREADS * PER_THREAD);
    /* the endpoint opens at the fifth failure; requests already past its
     * breaker when it opened (at most one per other thread) still fail */
    assert_in_range(k500, 5, 5 + THREADS - 1);
    assert_received(keys, (const long[]){k500, THREADS * PER_THREAD}, 2);
    aigw_client_free(c);
}

/* Both keys broken: each endpoint opens after its own failures; then the
 * backend is open and one skip of the candidate stands for both. */
static void test_backend_open_only_when_every_endpoint_is(void **state)
{
    static const char *const keys[] = {K_500, K_OK};
    static const char body[] = "{\"model\":\"mock:m1\",\"models\":[\"mock:m2\"],\"messages\":[]}";
    aigw_client *c = broken_key_client(GW ",\"sameBackendRetries\":0,"
                                          "\"circuitBreaker\":{\"failures\":2,\"cooloff\":\"5s\"}");
    aigw_response *r;
    aigw_stats *s = NULL;
    int i;
    (void)state;
    mp_add_rule(MP, MOCKPROV_RESPOND, NULL, "m1", 503, NULL, SERVER_BODY, 0);
    for (i = 0; i < 2; i++) {
        r = send_body(c, body);
        assert_seq(r, "m1/k500/503/next_key m1/kok/503/next_backend m2/k500/200/succeeded", "");
        aigw_response_free(r);
    }
    assert_int_equal(aigw_client_stats(c, &s), AIGW_OK);
    assert_string_equal(find_stat(s, "backend", "mock:m1")->state, "open");
    assert_string_equal(endpoint(s, "k500", "m1")->state, "open");
    assert_string_equal(endpoint(s, "kok", "m1")->state, "open");
    assert_string_equal(endpoint(s, "k500", "m2")->state, "ready");
    aigw_stats_free(s);
    r = send_body(c, body);
    assert_seq(r, "m2/k500/200/succeeded", "circuit_open:m1/");
    assert_in_range(aigw_response_skip_wait_ms(r, 0), 1, 5000);
    aigw_response_free(r);
    /* with nothing else to try: 503 circuit_open, nothing sent */
    r = send_body(c, BODY_M1);
    assert_seq(r, "", "circuit_open:m1/");
    assert_error_answer(r, 503, "circuit_open", NULL);
    assert_non_null(aigw_response_header_get(r, "retry-after"));
    aigw_response_free(r);
    assert_received(keys, (const long[]){5, 2}, 2);
    aigw_client_free(c);
}

/* ------------------------------------------------------------------------ */
/* 3. context length across providers                                       */
/* ------------------------------------------------------------------------ */

static void test_context_length_other_provider_tried(void **state)
{
    static const char *const keys[] = {K_PA, K_PB};
    char json[2048];
    aigw_client *c;
    aigw_response *r;
    (void)state;
    snprintf(json, sizeof json,
             "{\"providers\":[{\"providerId\":\"pa\",\"name\":\"A\",\"baseUrl\":\"%s\"},"
             "{\"providerId\":\"pb\",\"name\":\"B\",\"baseUrl\":\"%s\"}],"
             "\"providerKeys\":[{\"id\":\"ka\",\"providerId\":\"pa\",\"value\":\"" K_PA "\"},"
             "{\"id\":\"kb\",\"providerId\":\"pb\",\"value\":\"" K_PB "\"}],"
             "\"gatewayConfig\":{" GW "}}",
             mockprov_base_url(MP), mockprov_base_url(MP));
    c = client_from_json(json);
    mp_add_rule(MP, MOCKPROV_RESPOND, K_PA, "m", 400, NULL, CONTEXT_BODY, 0);
    r = send_body(c, "{\"model\":\"pa:m\",\"models\":[\"pb:m\"],\"messages\":[]}");
    assert_seq(r, "m/ka/400/next_backend m/kb/200/succeeded", "");
    assert_string_equal(aigw_attempt_provider(aigw_response_attempt(r, 1)), "pb");
    assert_string_equal(aigw_attempt_error_class(aigw_response_attempt(r, 0)), "context_length");
    aigw_response_free(r);
    assert_received(keys, (const long[]){1, 1}, 2);
    aigw_client_free(c);
}

/* ------------------------------------------------------------------------ */
/* 4. a stream that answered 200 and then stalled is the endpoint's failure */
/* ------------------------------------------------------------------------ */

/* The host answered (its headers came), so its breaker hears success; the
 * model that went silent is the (key, model) endpoint's, whose breaker
 * opens; another model on the same host and key is still served. */
static void test_stalled_stream_blames_endpoint_not_host(void **state)
{
    static const char *const keys[] = {K_SOLO};
    static const char *const role_only[] = {
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"}}]}\n\n", NULL};
    char *json = mock_gateway_json(
        "scope", mockprov_base_url(MP), KEY("solo", K_SOLO), "",
        GW ",\"firstTokenTimeout\":\"300ms\",\"sameBackendRetries\":0,"
           "\"circuitBreaker\":{\"failures\":2,\"cooloff\":\"5s\"}");
    aigw_client *c = client_from_json(json);
    mockprov_rule stall = mp_rule(MOCKPROV_STREAM, K_SOLO, "slow", 200, NULL, NULL, 0);
    stream_caller g;
    aigw_response *r;
    aigw_stats *s = NULL;
    char host[64];
    int i;
    (void)state;
    free(json);
    stall.chunks = role_only;
    stall.stream_end = MOCKPROV_END_STALL;
    mp_add(MP, stall);
    for (i = 0; i < 2; i++) {
        memset(&g, 0, sizeof g);
        r = stream_to(c, "{\"model\":\"mock:slow\",\"stream\":true,\"messages\":[]}", -1, &g);
        assert_seq(r, "slow/solo/timeout/exhausted", "");
        assert_string_equal(aigw_attempt_error_class(aigw_response_attempt(r, 0)), "timeout");
        assert_int_equal(g.starts, 0); /* nothing reached the caller */
        aigw_response_free(r);
    }
    assert_int_equal(aigw_client_stats(c, &s), AIGW_OK);
    assert_string_equal(endpoint(s, "solo", "slow")->state, "open");
    assert_string_equal(endpoint(s, "solo", "slow")->reason, "timeout");
    snprintf(host, sizeof host, "http://127.0.0.1:%d", mockprov_port(MP));
    assert_string_equal(find_stat(s, "host", host)->state, "closed");
    aigw_stats_free(s);
    /* the slow model: skipped without a call; another model: served */
    r = send_body(c, "{\"model\":\"mock:slow\",\"messages\":[]}");
    assert_seq(r, "", "circuit_open:slow/");
    aigw_response_free(r);
    r = send_body(c, "{\"model\":\"mock:quick\",\"messages\":[]}");
    assert_seq(r, "quick/solo/200/succeeded", "");
    aigw_response_free(r);
    assert_received(keys, (const long[]){3}, 1);
    aigw_client_free(c);
}

/* A caller that cancels from its callback says nothing of the upstream:
 * the endpoint's breaker does not count it, even at a threshold of 1. */
static void test_caller_cancel_is_no_failure(void **state)
{
    char *json = mock_gateway_json("scope", mockprov_base_url(MP), KEY("solo", K_SOLO), "",
                                   GW ",\"circuitBreaker\":{\"failures\":1,\"cooloff\":\"5s\"}");
    aigw_client *c = client_from_json(json);
    stream_caller g;
    aigw_response *r;
    aigw_stats *s = NULL;
    (void)state;
    free(json);
    memset(&g, 0, sizeof g);
    g.cancel_at = 1; /* the whole (non-SSE) answer's first bytes */
    r = stream_to(c, "{\"model\":\"mock:whole\",\"stream\":true,\"messages\":[]}", -1, &g);
    assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_CANCELLED);
    aigw_response_free(r);
    assert_int_equal(aigw_client_stats(c, &s), AIGW_OK);
    {
        size_t i; /* nothing recorded against the endpoint: no entry made */
        for (i = 0; i < aigw_stats_count(s); i++)
            assert_string_not_equal(aigw_stats_at(s, i)->kind, "endpoint");
    }
    aigw_stats_free(s);
    r = send_body(c, "{\"model\":\"mock:whole\",\"messages\":[]}");
    assert_seq(r, "whole/solo/200/succeeded", "");
    aigw_response_free(r);
    aigw_client_free(c);
}

/* ------------------------------------------------------------------------ */
/* 8. each caller's access key configuration: its scope, its routes        */
/* ------------------------------------------------------------------------ */

static aigw_response *send_in(aigw_client *c, const char *configuration, const char *body,
                              aigw_status want)
{
    aigw_request *req = NULL;
    aigw_response *resp = NULL;
    aigw_error *err = NULL;
    assert_int_equal(aigw_request_new(&req), AIGW_OK);
    assert_int_equal(aigw_request_set_body(req, body, strlen(body)), AIGW_OK);
    assert_int_equal(aigw_request_set_configuration(req, configuration), AIGW_OK);
    assert_int_equal(aigw_client_send(c, req, &resp, &err), want);
    if (want != AIGW_OK) {
        assert_null(resp);
        assert_non_null(err);
        assert_non_null(strstr(aigw_error_message(err), "no access key configuration named"));
        aigw_error_free(err);
    }
    aigw_request_free(req);
    return resp;
}

static void test_request_configuration(void **state)
{
    static const char body_m2[] = "{\"model\":\"mock:m2\",\"messages\":[]}";
    static const char *const keys[] = {K_PA, K_PB};
    char json[2048];
    aigw_client *c;
    aigw_response *r;
    aigw_request *req = NULL;
    (void)state;
    snprintf(json, sizeof json,
             "{\"providers\":[{\"providerId\":\"mock\",\"name\":\"Mock\",\"baseUrl\":\"%s\"}],"
             "\"providerKeys\":[" KEY("pa", K_PA) "," KEY("pb", K_PB) "],"
             "\"accessKeyConfiguration\":{\"name\":\"dev\",\"router\":{\"rules\":[{\"provider\":"
             "\"mock\",\"steps\":[{\"type\":\"user\",\"keys\":[{\"id\":\"pa\"}]}]}]}},"
             "\"accessKeyConfigurations\":[{\"name\":\"prod\",\"access\":{\"models\":{\"allow\":"
             "[\"mock:m2\"]}},\"router\":{\"rules\":[{\"provider\":\"mock\",\"steps\":[{\"type\":"
             "\"user\",\"keys\":[{\"id\":\"pb\"}]}]}]}}],"
             "\"gatewayConfig\":{" GW "}}",
             mockprov_base_url(MP));
    c = client_from_json(json);

    r = send_in(c, NULL, BODY_M1, AIGW_OK); /* the default: dev */
    assert_seq(r, "m1/pa/200/succeeded", "");
    aigw_response_free(r);
    r = send_in(c, "", BODY_M1, AIGW_OK);
    assert_seq(r, "m1/pa/200/succeeded", "");
    aigw_response_free(r);
    r = send_in(c, "dev", body_m2, AIGW_OK);
    assert_seq(r, "m2/pa/200/succeeded", "");
    aigw_response_free(r);
    assert_received(keys, (const long[]){3, 0}, 2);

    r = send_in(c, "prod", body_m2, AIGW_OK); /* prod's own route */
    assert_seq(r, "m2/pb/200/succeeded", "");
    aigw_response_free(r);
    r = send_in(c, "prod", BODY_M1, AIGW_OK); /* outside prod's scope: nothing sent */
    assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_REJECTED);
    assert_int_equal(aigw_response_status(r), 403);
    assert_string_equal(aigw_response_error_code(r), "model_not_allowed");
    assert_seq(r, "", "");
    aigw_response_free(r);
    assert_received(keys, (const long[]){3, 1}, 2);

    assert_null(send_in(c, "staging", BODY_M1, AIGW_EREQUEST));
    assert_received(keys, (const long[]){3, 1}, 2);

    assert_int_equal(aigw_request_new(&req), AIGW_OK);
    assert_int_equal(aigw_request_set_configuration(req, "bad\xff"), AIGW_EINVAL);
    assert_int_equal(aigw_request_set_configuration(NULL, "x"), AIGW_EINVAL);
    aigw_request_free(req);
    aigw_client_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_one_key_fallback_model, mp_setup),
        cmocka_unit_test_setup(test_broken_key_one_thread, mp_setup),
        cmocka_unit_test_setup(test_broken_key_eight_threads, mp_setup),
        cmocka_unit_test_setup(test_backend_open_only_when_every_endpoint_is, mp_setup),
        cmocka_unit_test_setup(test_context_length_other_provider_tried, mp_setup),
        cmocka_unit_test_setup(test_stalled_stream_blames_endpoint_not_host, mp_setup),
        cmocka_unit_test_setup(test_caller_cancel_is_no_failure, mp_setup),
        cmocka_unit_test_setup(test_request_configuration, mp_setup),
    };
    return cmocka_run_group_tests(tests, mp_group_setup, mp_group_teardown);
}
