/*
 * test_health_integration.c - key health across requests, end to end: a
 * gateway file parsed by aigw_config_parse, a client with the default
 * libcurl transport and the system clock, and real HTTP on loopback to the
 * embedded mock provider (examples/mockprov.c).
 *
 * Every scenario checks, per request, the exact attempt sequence
 * (provider/model/key/status/verdict), the skips (reason, key or model) and
 * how many requests the mock provider really received per key.  Waits are
 * kept short: retry-after-ms where the scenario allows, cooloffs of a few
 * hundred ms.  The whole program sleeps a few seconds.
 */
#include <pthread.h>
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
#include "mockprov.h"
#include "support.h"

/* ---- keys, bodies, gateway files ---- */

#define K_PRIMARY "sk-hi-primary-0123456789"
#define K_BACKUP "sk-hi-backup-9876543210"
#define K_A "sk-hi-aaaa-1111111111"
#define K_A2 "sk-hi-aaaa-changed-2222"
#define K_B "sk-hi-bbbb-3333333333"
#define K_C "sk-hi-cccc-4444444444"
#define K_SOLO "sk-hi-solo-5555555555"

static const char *const ALL_KEYS[] = {K_PRIMARY, K_BACKUP, K_A, K_A2, K_B, K_C, K_SOLO};

#define RL_BODY "{\"error\":{\"message\":\"Rate limit reached\",\"type\":\"requests\"," \
                "\"code\":\"rate_limit_exceeded\"}}"
#define AUTH_BODY "{\"error\":{\"message\":\"Incorrect API key provided\"," \
                  "\"type\":\"invalid_request_error\",\"code\":\"invalid_api_key\"}}"
#define SERVER_BODY "{\"error\":{\"message\":\"The server had an error\",\"type\":\"server_error\"}}"
#define UNAVAIL_BODY "{\"error\":{\"message\":\"Service unavailable\",\"type\":\"server_error\"}}"

static const char BODY[] = "{\"model\":\"mock:m1\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
static const char BODY_FLAP[] = "{\"model\":\"mock:primary-model\",\"models\":[\"mock:fallback-model\"],"
                                "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";

#define KEY(id, value) "{\"id\":\"" id "\",\"providerId\":\"mock\",\"name\":\"" id "\",\"value\":\"" value "\"}"
/* A rule for provider mock with one user step. */
#define RULE1(strategy, keys)                                                                  \
    "{\"provider\":\"mock\",\"steps\":[{\"type\":\"user\",\"keySelectionStrategy\":\"" strategy \
    "\",\"keys\":[" keys "]}]}"

/* Timeouts small enough for a test; no same-backend retries. */
#define GW_BASE "\"perRequestTimeout\":\"5s\",\"totalTimeout\":\"10s\",\"connectTimeout\":\"2s\"," \
                "\"sameBackendRetries\":0"

static aigw_config *make_cfg(const char *keys, const char *rules, const char *gw)
{
    char *json = mock_gateway_json("health", mockprov_base_url(MP), keys, rules, gw);
    aigw_config *cfg = config_from_json(json);
    free(json);
    return cfg;
}

static aigw_client *make_client(const char *keys, const char *rules, const char *gw)
{
    aigw_config *cfg = make_cfg(keys, rules, gw);
    aigw_client *c = client_on(cfg);
    aigw_config_unref(cfg); /* the client holds its own reference */
    return c;
}

/* ---- what a response says ---- */

/* "provider/model/key/status/verdict" per attempt, space separated, and
 * "reason:provider/model/key" per skip ("" key for a model's skip); skips
 * NULL: any. */
#define ATTEMPT_FIELDS "provider/model/key/status/verdict"
#define SKIP_FIELDS "reason:provider/model/key"

static void assert_seq(const aigw_response *r, const char *attempts, const char *skips)
{
    char got[2048], sk[2048];
    assert_int_equal(attempts_string(r, ATTEMPT_FIELDS, got, sizeof got), 0);
    assert_int_equal(skips_string(r, SKIP_FIELDS, sk, sizeof sk), 0);
    if (strcmp(got, attempts) != 0 || (skips && strcmp(sk, skips) != 0))
        fail_msg("attempts \"%s\" skips \"%s\";\nwant     \"%s\" skips \"%s\";\ntrace: %s", got,
                 sk, attempts, skips ? skips : "(any)", aigw_response_trace_json(r));
}

static void assert_served(const aigw_response *r)
{
    if (aigw_response_outcome(r) != AIGW_OUTCOME_SERVED || aigw_response_status(r) != 200)
        fail_msg("outcome %s status %d; trace: %s",
                 aigw_outcome_name(aigw_response_outcome(r)), aigw_response_status(r),
                 aigw_response_trace_json(r));
    assert_null(aigw_response_error_code(r));
}

#define N_ALL_KEYS (sizeof ALL_KEYS / sizeof ALL_KEYS[0])

static void assert_no_secret(const aigw_response *r)
{
    assert_response_no_secret(r, ALL_KEYS, N_ALL_KEYS);
}

/* ---- time ---- */

static void sleep_until(int64_t t)
{
    sleep_ms(t - now_ms());
}

/* ---- the mock provider ---- */

static void assert_count(const char *key, long want)
{
    long got = mockprov_count(MP, key);
    if (got != want)
        fail_msg("the mock received %ld requests with key %s, want %ld", got,
                 key ? key : "(any)", want);
}

/* ---- snapshots ---- */

static aigw_stats *snapshot(aigw_client *c)
{
    aigw_stats *s = NULL;
    assert_int_equal(aigw_client_stats(c, &s), AIGW_OK);
    assert_non_null(s);
    return s;
}

static void assert_stat_state(aigw_client *c, const char *kind, const char *name,
                              const char *state)
{
    aigw_stats *s = snapshot(c);
    const aigw_stat *e = find_stat(s, kind, name);
    if (strcmp(e->state, state) != 0)
        fail_msg("%s %s is %s, want %s: %s", kind, name, e->state, state, aigw_stats_json(s));
    aigw_stats_free(s);
}

/* ---- fixtures: MP for the whole run, reset per test (support.h) ---- */

/* ------------------------------------------------------------------------ */
/* (a) a 429 with Retry-After: 1 cools the primary for that second          */
/* ------------------------------------------------------------------------ */

#define A_REQUESTS 200

/* What (a) saw, for (i) and the tests after it. */
static aigw_stats *A_STATS;       /* right after the 200 requests */
static int A_DONE;                /* (a) ran to its end */
static int A_SKIPS[A_REQUESTS];   /* key_cooling skips of primary, per request */

#define KEYS_PB KEY("primary", K_PRIMARY) "," KEY("backup", K_BACKUP)
#define RULE_PB RULE1("ordered", "{\"id\":\"primary\"},{\"id\":\"backup\"}")

static void test_a_retry_after_cools_primary(void **state)
{
    aigw_client *c = make_client(KEYS_PB, RULE_PB, GW_BASE ",\"retryAfterMax\":\"2s\"");
    aigw_response *r;
    const aigw_attempt *a;
    int64_t t429, t_end;
    int i;
    size_t j;
    (void)state;
    mp_add_rule(MP, MOCKPROV_RESPOND, K_PRIMARY, NULL, 429, "Retry-After: 1\r\n", RL_BODY, 1);

    r = send_body(c, BODY);
    t429 = now_ms(); /* primary's cooldown began before this */
    assert_seq(r, "mock/m1/primary/429/next_key mock/m1/backup/200/succeeded", "");
    assert_served(r);
    a = aigw_response_attempt(r, 0);
    assert_string_equal(aigw_attempt_error_class(a), "rate_limit");
    assert_int_equal(aigw_attempt_requested_wait_ms(a), 1000);
    assert_no_secret(r);
    aigw_response_free(r);

    /* Requests 2..200 within the second: primary is never sent to; when the
     * walk passes it over, that is a key_cooling skip, never an attempt. */
    for (i = 1; i < A_REQUESTS; i++) {
        r = send_body(c, BODY);
        assert_seq(r, "mock/m1/backup/200/succeeded", NULL);
        assert_served(r);
        for (j = 0; j < aigw_response_skip_count(r); j++) {
            const char *p, *m, *why;
            int64_t w = aigw_response_skip_wait_ms(r, j);
            assert_int_equal(aigw_response_skip(r, j, &p, &m, &why), AIGW_OK);
            if (strcmp(why, "key_cooling") != 0 ||
                strcmp(aigw_response_skip_key_id(r, j), "primary") != 0 || w <= 0 || w > 1000)
                fail_msg("request %d: skip %zu: %s key %s wait %lld; trace %s", i + 1, j, why,
                         aigw_response_skip_key_id(r, j), (long long)w,
                         aigw_response_trace_json(r));
            A_SKIPS[i]++;
        }
        aigw_response_free(r);
    }
    t_end = now_ms();
    A_STATS = snapshot(c);
    if (t_end - t429 >= 1000)
        fail_msg("the %d requests took %lld ms: too slow for this scenario", A_REQUESTS,
                 (long long)(t_end - t429));
    assert_count(K_PRIMARY, 1);
    assert_count(K_BACKUP, A_REQUESTS);

    /* The second has passed: primary (its rule spent, the mock answers 200)
     * is first again and serves. */
    sleep_until(t429 + 1000 + 20);
    r = send_body(c, BODY);
    assert_seq(r, "mock/m1/primary/200/succeeded", "");
    assert_served(r);
    aigw_response_free(r);
    assert_count(K_PRIMARY, 2);
    assert_count(K_BACKUP, A_REQUESTS);
    assert_stat_state(c, "key", "primary", "ready");
    aigw_client_free(c);
    A_DONE = 1;
}

/* (i) The snapshot taken right after (a)'s 200 requests. */
static void test_i_stats_after_a(void **state)
{
    const aigw_stat *p, *b, *be;
    const char *json;
    cJSON *j, *keys;
    uint64_t requests = 0, retries = 0, denied = 0;
    int64_t available = 0;
    long skips = 0;
    int i;
    (void)state;
    if (!A_STATS)
        fail_msg("(a) did not get as far as its snapshot");
    for (i = 0; i < A_REQUESTS; i++)
        skips += A_SKIPS[i];
    /* the keys first, in configuration order */
    assert_true(aigw_stats_count(A_STATS) >= 2);
    p = aigw_stats_at(A_STATS, 0);
    b = aigw_stats_at(A_STATS, 1);
    assert_null(aigw_stats_at(A_STATS, aigw_stats_count(A_STATS)));
    assert_string_equal(p->kind, "key");
    assert_string_equal(p->name, "primary");
    assert_string_equal(p->provider, "mock");
    assert_string_equal(p->model, "");
    /* the key is ready: its rate limit was for m1, where it cools */
    assert_string_equal(p->state, "ready");
    assert_string_equal(p->reason, "");
    assert_int_equal(p->wait_ms, 0);
    {
        const aigw_stat *pm = find_stat(A_STATS, "endpoint", "primary");
        assert_string_equal(pm->provider, "mock");
        assert_string_equal(pm->model, "m1");
        assert_string_equal(pm->state, "cooling");
        assert_string_equal(pm->reason, "rate_limit");
        assert_in_range(pm->wait_ms, 1, 1000);
        assert_int_equal(pm->requests, 1);
        assert_int_equal(pm->failures, 1);
        assert_int_equal(pm->skips, 199);
    }
    assert_int_equal(p->requests, 1);
    assert_int_equal(p->successes, 0);
    assert_int_equal(p->failures, 1);
    assert_int_equal(aigw_stat_failures(p, "rate_limit"), 1);
    assert_int_equal(aigw_stat_failures(p, "auth"), 0);
    assert_int_equal(aigw_stat_failures(p, "no_such_class"), 0);
    /* skips: one per request that passed it over (requests 2..200) */
    assert_int_equal(skips, 199);
    assert_int_equal(p->skips, (uint64_t)skips);
    assert_int_equal(p->latency_count, 0);
    assert_int_equal(p->latency_mean_ms, -1);

    assert_string_equal(b->kind, "key");
    assert_string_equal(b->name, "backup");
    assert_string_equal(b->state, "ready");
    assert_string_equal(b->reason, "");
    assert_int_equal(b->wait_ms, 0);
    assert_int_equal(b->requests, A_REQUESTS);
    assert_int_equal(b->successes, A_REQUESTS);
    assert_int_equal(b->failures, 0);
    assert_int_equal(b->skips, 0);
    assert_int_equal(b->latency_count, A_REQUESTS);
    assert_true(b->latency_mean_ms >= 0);
    assert_true(b->latency_p50_ms >= 0);
    assert_true(b->latency_p50_ms <= b->latency_p90_ms);
    assert_true(b->latency_p90_ms <= b->latency_p99_ms);
    assert_true(b->latency_p99_ms <= b->latency_max_ms + b->latency_max_ms / 5 + 1);

    be = find_stat(A_STATS, "backend", "mock:m1");
    assert_string_equal(be->provider, "mock");
    assert_string_equal(be->model, "m1");
    assert_string_equal(be->state, "closed");
    assert_int_equal(be->requests, A_REQUESTS + 1);
    assert_int_equal(be->successes, A_REQUESTS);
    {
        char host[64];
        const aigw_stat *h;
        snprintf(host, sizeof host, "http://127.0.0.1:%d", mockprov_port(MP));
        h = find_stat(A_STATS, "host", host);
        assert_string_equal(h->state, "closed");
        assert_int_equal(h->requests, A_REQUESTS + 1);
    }
    /* every request started; no retry charged: request 1's second attempt
     * moved past a rate-limited key, which cools instead */
    aigw_stats_budget(A_STATS, &requests, &retries, &denied, &available);
    assert_int_equal(requests, A_REQUESTS);
    assert_int_equal(retries, 0);
    assert_int_equal(denied, 0);
    aigw_stats_budget(A_STATS, NULL, NULL, NULL, NULL);

    json = aigw_stats_json(A_STATS);
    assert_non_null(json);
    assert_no_secret_in(json, ALL_KEYS, N_ALL_KEYS);
    j = cJSON_Parse(json);
    if (!j)
        fail_msg("stats JSON does not parse: %s", json);
    keys = cJSON_GetObjectItemCaseSensitive(j, "keys");
    assert_true(cJSON_IsArray(keys));
    assert_int_equal(cJSON_GetArraySize(keys), 2);
    assert_true(cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(j, "backends")));
    assert_true(cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(j, "hosts")));
    assert_true(cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(j, "retryBudget")));
    cJSON_Delete(j);
}

/*
 * "While cooling, requests skip it without spending an upstream call
 * (verdict recorded as a skip, not an attempt)": in (a) requests 2..200 each
 * hold one key_cooling skip of primary (the `ordered` step lists it first),
 * and primary's stats count 199 skips.
 */
static void test_a_cooling_key_skip_recorded(void **state)
{
    int i, with = 0;
    (void)state;
    if (!A_DONE)
        fail_msg("(a) did not run to its end");
    for (i = 1; i < A_REQUESTS; i++)
        with += A_SKIPS[i] == 1;
    if (with != A_REQUESTS - 1)
        fail_msg("%d of requests 2..%d hold a key_cooling skip of primary, want all %d; "
                 "primary's snapshot skips: %llu, want %d",
                 with, A_REQUESTS, A_REQUESTS - 1,
                 (unsigned long long)aigw_stats_at(A_STATS, 0)->skips, A_REQUESTS - 1);
}

/* ------------------------------------------------------------------------ */
/* (b) a flapping backend: its circuit opens, the fallback model serves     */
/* ------------------------------------------------------------------------ */

#define KEYS_SOLO KEY("solo", K_SOLO)
#define RULE_SOLO RULE1("ordered", "{\"id\":\"solo\"}")
#define FLAP_FAIL "mock/primary-model/solo/503/next_backend mock/fallback-model/solo/200/succeeded"
#define FLAP_SKIP "mock/fallback-model/solo/200/succeeded"
#define FLAP_OPEN "circuit_open:mock/primary-model/"

static void assert_open_skip(const aigw_response *r, int64_t max_wait)
{
    int64_t w = aigw_response_skip_wait_ms(r, 0);
    assert_seq(r, FLAP_SKIP, FLAP_OPEN);
    if (w < 0 || w > max_wait)
        fail_msg("circuit_open skip wait %lld, want 0..%lld", (long long)w, (long long)max_wait);
}

static void test_b_flapping_backend_circuit(void **state)
{
    aigw_client *c = make_client(KEYS_SOLO, RULE_SOLO,
                                 GW_BASE ",\"retryAfterMax\":\"2s\","
                                 "\"circuitBreaker\":{\"failures\":3,\"cooloff\":\"300ms\"}");
    aigw_response *r;
    aigw_stats *s;
    const aigw_stat *e;
    int64_t t_open, t_probe, t_healthy, t_back = -1;
    long primary_seen;
    int i;
    (void)state;
    mp_add_rule(MP, MOCKPROV_RESPOND, NULL, "primary-model", 503, NULL, UNAVAIL_BODY, 0);

    /* Three failures in a row: each request served by the fallback model. */
    for (i = 0; i < 3; i++) {
        r = send_body(c, BODY_FLAP);
        assert_seq(r, FLAP_FAIL, "");
        assert_served(r);
        assert_string_equal(aigw_response_model(r), "fallback-model");
        aigw_response_free(r);
    }
    t_open = now_ms(); /* the breaker opened before this */
    s = snapshot(c);
    e = find_stat(s, "backend", "mock:primary-model");
    assert_string_equal(e->state, "open");
    assert_in_range(e->wait_ms, 1, 300);
    assert_int_equal(e->requests, 3);
    assert_int_equal(e->failures, 3);
    assert_string_equal(find_stat(s, "backend", "mock:fallback-model")->state, "closed");
    aigw_stats_free(s);

    /* Open: the primary model is skipped, nothing sent to it. */
    for (i = 0; i < 10; i++) {
        r = send_body(c, BODY_FLAP);
        assert_open_skip(r, 300);
        assert_served(r);
        aigw_response_free(r);
    }
    if (now_ms() - t_open >= 300)
        fail_msg("too slow: the open phase outlived the cooloff");
    assert_count(NULL, 3 + 3 + 10);
    assert_int_equal(mockprov_count(MP, K_SOLO), 16);

    /* After the cooloff one request probes; it fails: open again. */
    sleep_until(t_open + 300 + 20);
    r = send_body(c, BODY_FLAP);
    t_probe = now_ms();
    assert_seq(r, FLAP_FAIL, "");
    assert_served(r);
    aigw_response_free(r);
    assert_stat_state(c, "backend", "mock:primary-model", "open");
    r = send_body(c, BODY_FLAP);
    assert_open_skip(r, 300);
    aigw_response_free(r);
    if (now_ms() - t_probe >= 300)
        fail_msg("too slow: the second open phase outlived the cooloff");
    /* during the outage: 3 failures + 1 probe reached the primary model */
    {
        long n = mockprov_log_count(MP), k;
        primary_seen = 0;
        for (k = 0; k < n; k++) {
            char line[128], key[64], model[64];
            assert_int_equal(mockprov_log_get(MP, k, line, sizeof line, key, sizeof key, model,
                                              sizeof model), 0);
            primary_seen += strcmp(model, "primary-model") == 0;
        }
        assert_int_equal(primary_seen, 3 + 1);
    }

    /* The primary model is healthy again: within cooloff + 100 ms of that,
     * the next probe succeeds and it serves. */
    mockprov_reset(MP);
    t_healthy = now_ms();
    while (now_ms() - t_healthy < 1000) {
        r = send_body(c, BODY_FLAP);
        assert_served(r);
        if (aigw_response_attempt_count(r) == 1 &&
            strcmp(aigw_attempt_model(aigw_response_attempt(r, 0)), "primary-model") == 0) {
            assert_seq(r, "mock/primary-model/solo/200/succeeded", "");
            t_back = now_ms();
            aigw_response_free(r);
            break;
        }
        assert_open_skip(r, 300);
        aigw_response_free(r);
        sleep_ms(10);
    }
    if (t_back < 0 || t_back - t_healthy > 300 + 100)
        fail_msg("the primary model served again %lld ms after it was healthy (cooloff 300)",
                 (long long)(t_back < 0 ? -1 : t_back - t_healthy));
    s = snapshot(c);
    e = find_stat(s, "backend", "mock:primary-model");
    assert_string_equal(e->state, "closed");
    assert_int_equal(e->wait_ms, 0);
    assert_int_equal(e->requests, 3 + 1 + 1);
    assert_int_equal(e->successes, 1);
    assert_no_secret_in(aigw_stats_json(s), ALL_KEYS, N_ALL_KEYS);
    aigw_stats_free(s);
    /* closed: the next request goes straight to it */
    r = send_body(c, BODY_FLAP);
    assert_seq(r, "mock/primary-model/solo/200/succeeded", "");
    aigw_response_free(r);
    assert_int_equal(mockprov_count(MP, K_SOLO), mockprov_count(MP, NULL));
    aigw_client_free(c);
}

/* ------------------------------------------------------------------------ */
/* (b3) half-open: of many concurrent requests, exactly one probes          */
/* ------------------------------------------------------------------------ */

#define PROBERS 6

typedef struct prober {
    pthread_t th;
    aigw_client *c;
    pthread_barrier_t *bar;
    int ok;
    char attempts[512];
    char skips[512];
    int64_t skip_wait;
} prober;

static void *prober_main(void *arg)
{
    prober *p = arg;
    aigw_request *req = NULL;
    aigw_response *r = NULL;
    pthread_barrier_wait(p->bar);
    if (aigw_request_new(&req) == AIGW_OK &&
        aigw_request_set_body(req, BODY_FLAP, strlen(BODY_FLAP)) == AIGW_OK &&
        aigw_client_send(p->c, req, &r, NULL) == AIGW_OK) {
        size_t i;
        p->ok = aigw_response_outcome(r) == AIGW_OUTCOME_SERVED;
        p->attempts[0] = p->skips[0] = '\0';
        for (i = 0; i < aigw_response_attempt_count(r); i++) {
            const aigw_attempt *a = aigw_response_attempt(r, i);
            size_t n = strlen(p->attempts);
            snprintf(p->attempts + n, sizeof p->attempts - n, "%s%s/%d/%s", i ? " " : "",
                     aigw_attempt_model(a), aigw_attempt_status_code(a), aigw_attempt_verdict(a));
        }
        for (i = 0; i < aigw_response_skip_count(r); i++) {
            const char *pr, *m, *why;
            size_t n = strlen(p->skips);
            aigw_response_skip(r, i, &pr, &m, &why);
            snprintf(p->skips + n, sizeof p->skips - n, "%s%s:%s", i ? " " : "", why, m);
        }
        p->skip_wait = aigw_response_skip_count(r) ? aigw_response_skip_wait_ms(r, 0) : -1;
    }
    aigw_response_free(r);
    aigw_request_free(req);
    return NULL;
}

static void test_b3_one_probe_at_a_time(void **state)
{
    aigw_client *c = make_client(KEYS_SOLO, RULE_SOLO,
                                 GW_BASE ",\"retryAfterMax\":\"2s\","
                                 "\"circuitBreaker\":{\"failures\":1,\"cooloff\":\"200ms\"}");
    aigw_response *r;
    prober p[PROBERS];
    pthread_barrier_t bar;
    mockprov_rule slow;
    int64_t t_open;
    int i, probes = 0, skipped = 0;
    (void)state;
    mp_add_rule(MP, MOCKPROV_RESPOND, NULL, "primary-model", 503, NULL, UNAVAIL_BODY, 1);
    r = send_body(c, BODY_FLAP);
    t_open = now_ms();
    assert_seq(r, FLAP_FAIL, "");
    aigw_response_free(r);
    assert_stat_state(c, "backend", "mock:primary-model", "open");
    /* healthy again, but slow: the probe is out for 300 ms */
    slow = mp_rule(MOCKPROV_RESPOND, NULL, "primary-model", 200, NULL, NULL, 0);
    slow.delay_ms = 300;
    assert_int_equal(mockprov_add_rule(MP, &slow), 0);
    sleep_until(t_open + 200 + 20);
    assert_int_equal(pthread_barrier_init(&bar, NULL, PROBERS), 0);
    memset(p, 0, sizeof p);
    for (i = 0; i < PROBERS; i++) {
        p[i].c = c;
        p[i].bar = &bar;
        assert_int_equal(pthread_create(&p[i].th, NULL, prober_main, &p[i]), 0);
    }
    for (i = 0; i < PROBERS; i++)
        assert_int_equal(pthread_join(p[i].th, NULL), 0);
    pthread_barrier_destroy(&bar);
    for (i = 0; i < PROBERS; i++) {
        if (!p[i].ok)
            fail_msg("request %d not served: %s / %s", i, p[i].attempts, p[i].skips);
        if (strcmp(p[i].attempts, "primary-model/200/succeeded") == 0 && !p[i].skips[0])
            probes++;
        else if (strcmp(p[i].attempts, "fallback-model/200/succeeded") == 0 &&
                 strcmp(p[i].skips, "circuit_open:primary-model") == 0 && p[i].skip_wait >= 0)
            skipped++;
        else
            fail_msg("request %d: attempts \"%s\" skips \"%s\"", i, p[i].attempts, p[i].skips);
    }
    assert_int_equal(probes, 1);
    assert_int_equal(skipped, PROBERS - 1);
    {
        long n = mockprov_log_count(MP), k, primary = 0;
        for (k = 0; k < n; k++) {
            char line[128], key[64], model[64];
            assert_int_equal(mockprov_log_get(MP, k, line, sizeof line, key, sizeof key, model,
                                              sizeof model), 0);
            primary += strcmp(model, "primary-model") == 0;
        }
        assert_int_equal(primary, 1 + 1); /* the failure, then the one probe */
    }
    /* the probe succeeded: closed */
    assert_stat_state(c, "backend", "mock:primary-model", "closed");
    aigw_client_free(c);
}

/* ------------------------------------------------------------------------ */
/* (c) every key cooling: wait for the first when it fits, else 429 at once */
/* ------------------------------------------------------------------------ */

static void test_c_all_keys_cooling_waits(void **state)
{
    aigw_client *c = make_client(KEYS_SOLO, RULE_SOLO, GW_BASE ",\"retryAfterMax\":\"5s\"");
    aigw_response *r;
    int64_t t0, elapsed, w;
    (void)state;
    mp_add_rule(MP, MOCKPROV_RESPOND, K_SOLO, NULL, 429, "Retry-After: 1\r\n", RL_BODY, 1);
    r = send_body(c, BODY);
    assert_seq(r, "mock/m1/solo/429/exhausted", "");
    assert_error_answer(r, 429, "rate_limited", NULL);
    aigw_response_free(r);

    /* Started right after: the only key is cooling, its wait fits: the
     * request waits ~1 s, then the key serves. */
    t0 = now_ms();
    r = send_body(c, BODY);
    elapsed = now_ms() - t0;
    assert_seq(r, "mock/m1/solo/200/succeeded", "key_cooling:mock/m1/solo");
    assert_served(r);
    w = aigw_response_skip_wait_ms(r, 0);
    assert_in_range(w, 1, 1000);
    if (elapsed < 900 || elapsed > 2500)
        fail_msg("elapsed %lld ms, want 900..2500", (long long)elapsed);
    assert_count(K_SOLO, 2);
    aigw_response_free(r);
    aigw_client_free(c);
}

static void test_c_all_keys_cooling_429_at_once(void **state)
{
    /* retryAfterMax 0: never wait; 500ms: the 1 s asked for does not fit;
     * totalTimeout 600ms: it does not fit the request's time */
    static const char *const gws[] = {
        GW_BASE ",\"retryAfterMax\":\"0s\"", GW_BASE ",\"retryAfterMax\":\"500ms\"",
        ("\"perRequestTimeout\":\"5s\",\"totalTimeout\":\"600ms\",\"sameBackendRetries\":0,"
         "\"retryAfterMax\":\"5s\"")};
    size_t v;
    (void)state;
    for (v = 0; v < sizeof gws / sizeof gws[0]; v++) {
        aigw_client *c = make_client(KEYS_SOLO, RULE_SOLO, gws[v]);
        aigw_response *r;
        int64_t t0, elapsed, w;
        const char *ra, *ram;
        mockprov_reset(MP);
        mp_add_rule(MP, MOCKPROV_RESPOND, K_SOLO, NULL, 429, "Retry-After: 1\r\n", RL_BODY, 1);
        r = send_body(c, BODY);
        assert_seq(r, "mock/m1/solo/429/exhausted", "");
        assert_error_answer(r, 429, "rate_limited", NULL);
        aigw_response_free(r);

        t0 = now_ms();
        r = send_body(c, BODY);
        elapsed = now_ms() - t0;
        assert_seq(r, "", "key_cooling:mock/m1/solo");
        assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_EXHAUSTED);
        assert_error_answer(r, 429, "rate_limited", NULL);
        w = aigw_response_skip_wait_ms(r, 0);
        assert_in_range(w, 1, 1000);
        ra = aigw_response_header_get(r, "retry-after");
        ram = aigw_response_header_get(r, "retry-after-ms");
        if (!ra || strcmp(ra, "1") != 0)
            fail_msg("variant %zu: Retry-After %s, want 1", v, ra ? ra : "(none)");
        assert_non_null(ram);
        assert_in_range(atoll(ram), 1, 1000);
        if (elapsed >= 100)
            fail_msg("variant %zu: took %lld ms, want < 100", v, (long long)elapsed);
        assert_count(K_SOLO, 1);
        assert_no_secret(r);
        aigw_response_free(r);
        aigw_client_free(c);
    }
}

/* A 429 naming no wait cools the key for keyCooldown, jittered into
 * [1/2, 1] of it; a wait asked for past keyCooldownMax is cut to it. */
static void test_c2_cooldown_default_and_cap(void **state)
{
    static const struct {
        const char *gw;
        const char *headers;
        int64_t lo, hi;    /* the key's wait right after the 429 */
    } v[] = {
        {GW_BASE ",\"retryAfterMax\":\"2s\",\"keyCooldown\":\"300ms\"", NULL, 140, 300},
        {GW_BASE ",\"retryAfterMax\":\"2s\",\"keyCooldownMax\":\"400ms\"", "Retry-After: 3600\r\n",
         300, 400},
    };
    size_t i;
    (void)state;
    for (i = 0; i < 2; i++) {
        aigw_client *c = make_client(KEYS_SOLO, RULE_SOLO, v[i].gw);
        aigw_response *r;
        aigw_stats *s;
        const aigw_stat *e;
        int64_t t0, elapsed;
        mockprov_reset(MP);
        mp_add_rule(MP, MOCKPROV_RESPOND, K_SOLO, NULL, 429, v[i].headers, RL_BODY, 1);
        r = send_body(c, BODY);
        assert_seq(r, "mock/m1/solo/429/exhausted", "");
        assert_error_answer(r, 429, "rate_limited", NULL);
        aigw_response_free(r);
        s = snapshot(c);
        assert_string_equal(find_stat(s, "key", "solo")->state, "ready");
        e = find_stat(s, "endpoint", "solo");
        assert_string_equal(e->state, "cooling");
        if (e->wait_ms < v[i].lo || e->wait_ms > v[i].hi)
            fail_msg("variant %zu: the key cools for %lld ms, want %lld..%lld", i,
                     (long long)e->wait_ms, (long long)v[i].lo, (long long)v[i].hi);
        aigw_stats_free(s);
        /* every key cooling, the wait fits: the next request waits it out */
        t0 = now_ms();
        r = send_body(c, BODY);
        elapsed = now_ms() - t0;
        assert_seq(r, "mock/m1/solo/200/succeeded", "key_cooling:mock/m1/solo");
        assert_served(r);
        aigw_response_free(r);
        if (elapsed < v[i].lo - 60 || elapsed > v[i].hi + 250)
            fail_msg("variant %zu: waited %lld ms, want about %lld..%lld", i, (long long)elapsed,
                     (long long)v[i].lo, (long long)v[i].hi);
        assert_count(K_SOLO, 2);
        aigw_client_free(c);
    }
}

/* ------------------------------------------------------------------------ */
/* (d) benches: an auth failure benches the key until a new configuration   */
/* or a reset                                                               */
/* ------------------------------------------------------------------------ */

#define KEYS_AB KEY("A", K_A) "," KEY("B", K_B)
#define RULE_AB RULE1("ordered", "{\"id\":\"A\"},{\"id\":\"B\"}")
#define AB_BENCHED "mock/m1/A/401/next_key mock/m1/B/200/succeeded"

/* n requests: the first finds A ready (401, benched), the others skip it. */
static void bench_round(aigw_client *c, int n, long *benched_skips)
{
    aigw_response *r;
    int i;
    size_t j;
    r = send_body(c, BODY);
    assert_seq(r, AB_BENCHED, "");
    assert_served(r);
    assert_string_equal(aigw_attempt_error_class(aigw_response_attempt(r, 0)), "auth");
    assert_no_secret(r);
    aigw_response_free(r);
    for (i = 1; i < n; i++) {
        r = send_body(c, BODY);
        assert_seq(r, "mock/m1/B/200/succeeded", NULL);
        assert_served(r);
        for (j = 0; j < aigw_response_skip_count(r); j++) {
            const char *p, *m, *why;
            assert_int_equal(aigw_response_skip(r, j, &p, &m, &why), AIGW_OK);
            assert_string_equal(why, "key_benched");
            assert_string_equal(aigw_response_skip_key_id(r, j), "A");
            (*benched_skips)++;
        }
        aigw_response_free(r);
    }
}

static void test_d_bench_until_new_config_or_reset(void **state)
{
    aigw_client *c = make_client(KEYS_AB, RULE_AB, GW_BASE ",\"retryAfterMax\":\"2s\"");
    aigw_config *again;
    aigw_stats *s;
    const aigw_stat *e;
    long skips = 0;
    (void)state;
    mp_add_rule(MP, MOCKPROV_RESPOND, K_A, NULL, 401, NULL, AUTH_BODY, 0);

    bench_round(c, 20, &skips);
    assert_count(K_A, 1);
    assert_count(K_B, 20);
    s = snapshot(c);
    e = find_stat(s, "key", "A");
    assert_string_equal(e->state, "benched");
    assert_string_equal(e->reason, "auth");
    assert_true(e->wait_ms > 3500 * 1000); /* keyBenchTime 1h */
    assert_int_equal(aigw_stat_failures(e, "auth"), 1);
    assert_int_equal(e->skips, (uint64_t)skips);
    aigw_stats_free(s);

    /* A new configuration (the same file, parsed again) ends the bench. */
    again = make_cfg(KEYS_AB, RULE_AB, GW_BASE ",\"retryAfterMax\":\"2s\"");
    set_config(c, again);
    aigw_config_unref(again);
    bench_round(c, 5, &skips);
    assert_count(K_A, 2);
    assert_count(K_B, 25);

    /* So does a reset of that key. */
    assert_int_equal(aigw_client_reset_health(c, "A"), AIGW_OK);
    assert_stat_state(c, "key", "A", "ready");
    bench_round(c, 5, &skips);
    assert_count(K_A, 3);
    assert_count(K_B, 30);

    /* and of every key */
    assert_int_equal(aigw_client_reset_health(c, NULL), AIGW_OK);
    bench_round(c, 2, &skips);
    assert_count(K_A, 4);

    /* an id the configuration does not hold */
    assert_int_equal(aigw_client_reset_health(c, "no-such-key"), AIGW_EINVAL);
    assert_int_equal(aigw_client_reset_health(c, K_A), AIGW_EINVAL); /* a value is no id */
    assert_int_equal(aigw_client_reset_health(NULL, "A"), AIGW_EINVAL);
    assert_stat_state(c, "key", "A", "benched");
    aigw_client_free(c);
}

#define QUOTA_BODY "{\"error\":{\"message\":\"You exceeded your current quota\"," \
                   "\"type\":\"insufficient_quota\",\"code\":\"insufficient_quota\"}}"

/* A quota failure benches too; every key benched for quota: 429
 * quota_exceeded at once, without Retry-After.  keyBenchTime bounds a
 * bench; 0 turns benches off. */
static void test_d2_quota_bench_and_bench_time(void **state)
{
    aigw_client *c = make_client(KEYS_SOLO, RULE_SOLO, GW_BASE ",\"retryAfterMax\":\"2s\"");
    aigw_response *r;
    int64_t t0;
    (void)state;
    mp_add_rule(MP, MOCKPROV_RESPOND, K_SOLO, NULL, 429, NULL, QUOTA_BODY, 1);
    r = send_body(c, BODY);
    assert_seq(r, "mock/m1/solo/429/exhausted", "");
    assert_string_equal(aigw_attempt_error_class(aigw_response_attempt(r, 0)), "quota");
    aigw_response_free(r);
    t0 = now_ms();
    r = send_body(c, BODY);
    assert_seq(r, "", "key_benched:mock/m1/solo");
    assert_error_answer(r, 429, "quota_exceeded", NULL);
    assert_null(aigw_response_header_get(r, "retry-after"));
    assert_true(now_ms() - t0 < 100);
    aigw_response_free(r);
    assert_count(K_SOLO, 1);
    assert_stat_state(c, "key", "solo", "benched");
    aigw_client_free(c);

    /* keyBenchTime 200ms: an auth failure benches the key that long */
    mockprov_reset(MP);
    c = make_client(KEYS_SOLO, RULE_SOLO,
                    GW_BASE ",\"retryAfterMax\":\"2s\",\"keyBenchTime\":\"200ms\"");
    mp_add_rule(MP, MOCKPROV_RESPOND, K_SOLO, NULL, 401, NULL, AUTH_BODY, 1);
    r = send_body(c, BODY);
    t0 = now_ms();
    assert_seq(r, "mock/m1/solo/401/exhausted", "");
    assert_error_answer(r, 401, "unauthorized", NULL);
    aigw_response_free(r);
    r = send_body(c, BODY);
    assert_seq(r, "", "key_benched:mock/m1/solo");
    assert_error_answer(r, 401, "unauthorized", NULL);
    assert_in_range(aigw_response_skip_wait_ms(r, 0), 100, 200);
    aigw_response_free(r);
    sleep_until(t0 + 200 + 20);
    r = send_body(c, BODY);
    assert_seq(r, "mock/m1/solo/200/succeeded", "");
    aigw_response_free(r);
    assert_count(K_SOLO, 2);
    aigw_client_free(c);

    /* keyBenchTime 0: never benched */
    mockprov_reset(MP);
    c = make_client(KEYS_SOLO, RULE_SOLO,
                    GW_BASE ",\"retryAfterMax\":\"2s\",\"keyBenchTime\":\"0s\"");
    mp_add_rule(MP, MOCKPROV_RESPOND, K_SOLO, NULL, 401, NULL, AUTH_BODY, 1);
    r = send_body(c, BODY);
    assert_seq(r, "mock/m1/solo/401/exhausted", "");
    aigw_response_free(r);
    assert_stat_state(c, "key", "solo", "ready");
    r = send_body(c, BODY);
    assert_seq(r, "mock/m1/solo/200/succeeded", "");
    aigw_response_free(r);
    assert_count(K_SOLO, 2);
    aigw_client_free(c);
}

/*
 * The issue: benches are "ended by aigw_client_set_config or
 * aigw_client_reset_health"; the header: "benches end, since the
 * configuration was replaced".  Handing the client the very configuration
 * object it already holds (an operator reloading after fixing the key's
 * account, with a cached config) is a set_config too; lib/client.c ends the
 * benches only when the object differs (`if (old != cfg)`).
 */
static void test_d_set_config_same_object_ends_bench(void **state)
{
    aigw_config *cfg = make_cfg(KEYS_AB, RULE_AB, GW_BASE ",\"retryAfterMax\":\"2s\"");
    aigw_client *c = client_on(cfg);
    aigw_response *r;
    aigw_stats *s;
    char state_after[32], got[512];
    long skips = 0, a_count;
    (void)state;
    mp_add_rule(MP, MOCKPROV_RESPOND, K_A, NULL, 401, NULL, AUTH_BODY, 0);
    bench_round(c, 3, &skips);
    assert_count(K_A, 1);
    set_config(c, cfg); /* the same object, again */
    s = snapshot(c);
    snprintf(state_after, sizeof state_after, "%s", find_stat(s, "key", "A")->state);
    aigw_stats_free(s);
    r = send_body(c, BODY);
    assert_int_equal(attempts_string(r, ATTEMPT_FIELDS, got, sizeof got), 0);
    aigw_response_free(r);
    a_count = mockprov_count(MP, K_A);
    aigw_config_unref(cfg);
    aigw_client_free(c);
    /* checked after the cleanup, so a failure leaks nothing */
    if (strcmp(state_after, "ready") != 0 || strcmp(got, AB_BENCHED) != 0 || a_count != 2)
        fail_msg("after aigw_client_set_config(client, <the config it holds>): key A is %s, "
                 "the next request's attempts are \"%s\" (want \"%s\"), the mock saw A %ld "
                 "times (want 2)", state_after, got, AB_BENCHED, a_count);
}

/* ------------------------------------------------------------------------ */
/* (b2) a host's breaker: a dead host is skipped for any of its models      */
/* ------------------------------------------------------------------------ */

static void test_b2_host_circuit(void **state)
{
    char dead[64], *json, *b2_json;
    aigw_config *cfg;
    aigw_client *c;
    aigw_response *r;
    int i;
    static const char BODY_D1[] = "{\"model\":\"dead:m1\",\"models\":[\"mock:m1\"],\"messages\":[]}";
    static const char BODY_D2[] = "{\"model\":\"dead:m2\",\"models\":[\"mock:m1\"],\"messages\":[]}";
    (void)state;
    snprintf(dead, sizeof dead, "http://127.0.0.1:%d/v1", dead_port());
    {
        static const char fmt[] =
            "{\"providers\":[{\"providerId\":\"mock\",\"name\":\"Mock\",\"baseUrl\":\"%s\"},"
            "{\"providerId\":\"dead\",\"name\":\"Dead\",\"baseUrl\":\"%s\"}],"
            "\"providerKeys\":[" KEYS_SOLO ",{\"id\":\"d\",\"providerId\":\"dead\",\"name\":\"d\","
            "\"value\":\"" K_A "\"}],"
            "\"gatewayConfig\":{" GW_BASE ",\"retryAfterMax\":\"2s\","
            "\"circuitBreaker\":{\"failures\":2,\"cooloff\":\"5s\"}}}";
        size_t n = sizeof fmt + 2 * 64;
        json = malloc(n);
        assert_non_null(json);
        snprintf(json, n, fmt, mockprov_base_url(MP), dead);
    }
    cfg = config_from_json(json);
    b2_json = json;
    c = client_on(cfg);
    aigw_config_unref(cfg);
    /* two refused connections: the host's breaker opens (a refused
     * connection says nothing of dead:m1's endpoint: no HTTP answer came) */
    for (i = 0; i < 2; i++) {
        r = send_body(c, BODY_D1);
        assert_seq(r, "dead/m1/d/0/next_backend mock/m1/solo/200/succeeded", "");
        assert_string_equal(aigw_attempt_transport_error(aigw_response_attempt(r, 0)), "connect");
        assert_served(r);
        aigw_response_free(r);
    }
    r = send_body(c, BODY_D1);
    assert_seq(r, "mock/m1/solo/200/succeeded", "host_circuit_open:dead/m1/");
    aigw_response_free(r);
    /* another model of the dead host: skipped by the host's breaker too */
    r = send_body(c, BODY_D2);
    assert_seq(r, "mock/m1/solo/200/succeeded", "host_circuit_open:dead/m2/");
    assert_in_range(aigw_response_skip_wait_ms(r, 0), 1, 5000);
    aigw_response_free(r);
    assert_count(K_SOLO, 4);
    assert_count(NULL, 4);
    {
        char host[64];
        aigw_stats *s = snapshot(c);
        const aigw_stat *e;
        snprintf(host, sizeof host, "http://127.0.0.1:%d", atoi(strrchr(dead, ':') + 1));
        e = find_stat(s, "host", host);
        assert_string_equal(e->state, "open");
        assert_string_equal(e->provider, "");
        assert_int_equal(e->failures, 2);
        assert_int_equal(aigw_stat_failures(e, "network"), 2);
        assert_int_equal(e->skips, 2);
        e = find_stat(s, "backend", "dead:m1");
        assert_string_equal(e->state, "closed");
        assert_int_equal(aigw_stat_failures(e, "network"), 2);
        assert_int_equal(e->skips, 0);
        aigw_stats_free(s);
    }
    /* only when nothing is left to try: 503 circuit_open, with the wait */
    {
        static const char BODY_D3[] = "{\"model\":\"dead:m3\",\"messages\":[]}";
        r = send_body(c, BODY_D3);
        assert_seq(r, "", "host_circuit_open:dead/m3/");
        assert_error_answer(r, 503, "circuit_open", NULL);
        assert_non_null(aigw_response_header_get(r, "retry-after"));
        aigw_response_free(r);
    }
    /* breakers carry over a hot swap */
    cfg = config_from_json(b2_json);
    set_config(c, cfg);
    aigw_config_unref(cfg);
    r = send_body(c, BODY_D2);
    assert_seq(r, "mock/m1/solo/200/succeeded", "host_circuit_open:dead/m2/");
    aigw_response_free(r);
    free(b2_json);
    /* a reset of every key closes every breaker: dead:m1 is tried again */
    assert_int_equal(aigw_client_reset_health(c, NULL), AIGW_OK);
    assert_stat_state(c, "backend", "dead:m1", "closed");
    r = send_body(c, BODY_D1);
    assert_seq(r, "dead/m1/d/0/next_backend mock/m1/solo/200/succeeded", "");
    aigw_response_free(r);
    aigw_client_free(c);
}

/* ------------------------------------------------------------------------ */
/* (e) hot swap: health carries over for an unchanged key, not a changed one */
/* ------------------------------------------------------------------------ */

static void test_e_hot_swap_carry_over(void **state)
{
    aigw_client *c = make_client(KEYS_AB, RULE_AB, GW_BASE ",\"retryAfterMax\":\"2s\"");
    aigw_config *same, *changed;
    aigw_response *r;
    aigw_stats *s;
    const aigw_stat *e;
    (void)state;
    mp_add_rule(MP, MOCKPROV_RESPOND, K_A, NULL, 429, "Retry-After: 5\r\n", RL_BODY, 0);

    r = send_body(c, BODY);
    assert_seq(r, "mock/m1/A/429/next_key mock/m1/B/200/succeeded", "");
    assert_int_equal(aigw_attempt_requested_wait_ms(aigw_response_attempt(r, 0)), 5000);
    aigw_response_free(r);
    r = send_body(c, BODY);
    assert_seq(r, "mock/m1/B/200/succeeded", NULL);
    aigw_response_free(r);
    assert_count(K_A, 1);

    /* A new object, the same key id and value: A is still cooling. */
    same = make_cfg(KEYS_AB, RULE_AB, GW_BASE ",\"retryAfterMax\":\"2s\"");
    set_config(c, same);
    aigw_config_unref(same);
    s = snapshot(c);
    e = find_stat(s, "endpoint", "A");
    assert_string_equal(e->state, "cooling");
    assert_in_range(e->wait_ms, 3000, 5000);
    assert_int_equal(e->requests, 1);
    aigw_stats_free(s);
    r = send_body(c, BODY);
    assert_seq(r, "mock/m1/B/200/succeeded", NULL);
    aigw_response_free(r);
    assert_count(K_A, 1);

    /* A bare access key configuration naming keys it does not hold is
     * refused, and the client keeps its configuration (and A's cooldown). */
    {
        static const char bare[] =
            "{\"name\":\"bare\",\"router\":{\"rules\":[{\"provider\":\"mock\",\"steps\":"
            "[{\"type\":\"user\",\"keys\":[{\"id\":\"A\"}]}]}]}}";
        aigw_config *b = config_from_json(bare);
        aigw_error *err = NULL;
        assert_true(aigw_config_is_bare(b));
        assert_int_equal(aigw_client_set_config(c, b, &err), AIGW_ECONFIG);
        assert_non_null(err);
        aigw_error_free(err);
        aigw_config_unref(b);
        assert_int_equal(aigw_client_set_config(c, NULL, NULL), AIGW_EINVAL);
        assert_int_equal(aigw_client_set_config(NULL, NULL, NULL), AIGW_EINVAL);
        r = send_body(c, BODY);
        assert_seq(r, "mock/m1/B/200/succeeded", NULL);
        aigw_response_free(r);
        assert_count(K_A, 1);
    }

    /* A's value changed: a different key as far as health goes: tried. */
    changed = make_cfg(KEY("A", K_A2) "," KEY("B", K_B), RULE_AB,
                       GW_BASE ",\"retryAfterMax\":\"2s\"");
    set_config(c, changed);
    aigw_config_unref(changed);
    s = snapshot(c);
    e = find_stat(s, "key", "A");
    assert_string_equal(e->state, "ready");
    assert_int_equal(e->requests, 0);
    assert_no_secret_in(aigw_stats_json(s), ALL_KEYS, N_ALL_KEYS);
    aigw_stats_free(s);
    r = send_body(c, BODY);
    assert_seq(r, "mock/m1/A/200/succeeded", "");
    assert_served(r);
    aigw_response_free(r);
    assert_count(K_A, 1);
    assert_count(K_A2, 1);
    assert_count(K_B, 4);
    aigw_client_free(c);
}

/* ------------------------------------------------------------------------ */
/* (f) the retry budget                                                     */
/* ------------------------------------------------------------------------ */

static void test_f_retry_budget(void **state)
{
    aigw_client *c = make_client(KEYS_AB, RULE_AB,
                                 GW_BASE ",\"retryAfterMax\":\"2s\",\"circuitBreaker\":false,"
                                 "\"retryBudget\":{\"percent\":20,\"minPerSecond\":0,"
                                 "\"window\":\"10s\"}");
    aigw_stats *s;
    uint64_t requests = 0, retries = 0, denied = 0;
    int i, granted = 0, refused = 0;
    (void)state;
    mp_add_rule(MP, MOCKPROV_RESPOND, NULL, NULL, 500, NULL, SERVER_BODY, 0);
    for (i = 0; i < 100; i++) {
        aigw_response *r = send_body(c, BODY);
        char got[512];
        assert_int_equal(attempts_string(r, ATTEMPT_FIELDS, got, sizeof got), 0);
        assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_EXHAUSTED);
        if (strcmp(got, "mock/m1/A/500/next_key mock/m1/B/500/exhausted") == 0) {
            assert_error_answer(r, 502, "upstream_error", NULL);
            granted++;
        } else if (strcmp(got, "mock/m1/A/500/exhausted") == 0) {
            assert_error_answer(r, 503, "retry_budget_exhausted", NULL);
            refused++;
        } else {
            fail_msg("request %d: attempts %s; trace %s", i + 1, got,
                     aigw_response_trace_json(r));
        }
        assert_seq(r, got, "");
        aigw_response_free(r);
    }
    /* each request's first attempt, plus 20% of 100 granted retries */
    assert_int_equal(granted, 20);
    assert_int_equal(refused, 80);
    assert_count(NULL, 100 + 20);
    assert_count(K_A, 100);
    assert_count(K_B, 20);
    s = snapshot(c);
    aigw_stats_budget(s, &requests, &retries, &denied, NULL);
    assert_int_equal(requests, 100);
    assert_int_equal(retries, 20);
    assert_int_equal(denied, 80);
    /* circuitBreaker false: 100 failures in a row and still closed */
    assert_string_equal(find_stat(s, "backend", "mock:m1")->state, "closed");
    aigw_stats_free(s);
    aigw_client_free(c);
}

/* The floor: percent 0, minPerSecond 1 over a 10 s window: 10 retries
 * whatever the traffic. */
static void test_f2_retry_budget_floor(void **state)
{
    aigw_client *c = make_client(KEYS_AB, RULE_AB,
                                 GW_BASE ",\"retryAfterMax\":\"2s\",\"circuitBreaker\":false,"
                                 "\"retryBudget\":{\"percent\":0,\"minPerSecond\":1,"
                                 "\"window\":\"10s\"}");
    aigw_stats *s;
    uint64_t requests = 0, retries = 0, denied = 0;
    int i, granted = 0;
    (void)state;
    mp_add_rule(MP, MOCKPROV_RESPOND, NULL, NULL, 500, NULL, SERVER_BODY, 0);
    for (i = 0; i < 30; i++) {
        aigw_response *r = send_body(c, BODY);
        granted += aigw_response_attempt_count(r) == 2;
        aigw_response_free(r);
    }
    assert_int_equal(granted, 10);
    assert_count(NULL, 30 + 10);
    s = snapshot(c);
    aigw_stats_budget(s, &requests, &retries, &denied, NULL);
    assert_int_equal(requests, 30);
    assert_int_equal(retries, 10);
    assert_int_equal(denied, 20);
    aigw_stats_free(s);
    aigw_client_free(c);
}

/*
 * The header: on aigw_client_set_config "Circuit breakers and the retry
 * budget carry over".  lib/health.c restarts the budget's window (forgets
 * the requests and retries counted) whenever a request's configuration has
 * another retryBudget.window than the last one seen: a swap to a
 * configuration with another window, and back, grants the whole budget
 * again within seconds.  While requests that started on the old
 * configuration are still running, every one of their attempts flips the
 * window back and restarts it again, so during a hot swap the budget is not
 * enforced at all.
 *
 * Here: config P allows 10 retries per 10 s (percent 0, minPerSecond 1),
 * config Q 5 per 5 s.  10 retries are spent on P and the 11th is refused;
 * one request on Q (as a request still running on an old configuration
 * would be), then P again: within the same second P grants 10 more.
 */
static void test_f_budget_survives_window_change(void **state)
{
#define BUDGET_GW(window)                                                                     \
    GW_BASE ",\"retryAfterMax\":\"2s\",\"circuitBreaker\":false,\"retryBudget\":{\"percent\":0," \
            "\"minPerSecond\":1,\"window\":\"" window "\"}"
    aigw_config *p = make_cfg(KEYS_AB, RULE_AB, BUDGET_GW("10s"));
    aigw_config *q = make_cfg(KEYS_AB, RULE_AB, BUDGET_GW("5s"));
    aigw_client *c = client_on(p);
    aigw_response *r;
    int i, granted = 0, q_granted, later = 0;
    int64_t t0 = now_ms();
    (void)state;
    mp_add_rule(MP, MOCKPROV_RESPOND, NULL, NULL, 500, NULL, SERVER_BODY, 0);
    for (i = 0; i < 11; i++) {
        r = send_body(c, BODY);
        granted += aigw_response_attempt_count(r) == 2;
        aigw_response_free(r);
    }
    assert_int_equal(granted, 10); /* P's budget, then refused */
    set_config(c, q);
    r = send_body(c, BODY);
    q_granted = aigw_response_attempt_count(r) == 2;
    aigw_response_free(r);
    set_config(c, p);
    for (i = 0; i < 10; i++) {
        r = send_body(c, BODY);
        later += aigw_response_attempt_count(r) == 2;
        aigw_response_free(r);
    }
    aigw_config_unref(p);
    aigw_config_unref(q);
    aigw_client_free(c);
    if (now_ms() - t0 > 4000)
        fail_msg("too slow for this scenario (%lld ms)", (long long)(now_ms() - t0));
    /* 11 retries in the last second: neither P (10 / 10 s) nor Q (5 / 5 s)
     * has any left */
    if (q_granted || later)
        fail_msg("after 10 retries spent and one refused, within a second: a request on a "
                 "configuration with another window got %d retry, and back on the first "
                 "configuration %d more were granted (want 0 and 0)", q_granted, later);
#undef BUDGET_GW
}

/* ------------------------------------------------------------------------ */
/* (g) strategies through the engine                                        */
/* ------------------------------------------------------------------------ */

#define KEYS_ABC KEY("a", K_A) "," KEY("b", K_B) "," KEY("c", K_C)

static void run_ok(aigw_client *c, int n)
{
    int i;
    for (i = 0; i < n; i++) {
        aigw_response *r = send_body(c, BODY);
        assert_served(r);
        assert_int_equal(aigw_response_attempt_count(r), 1);
        aigw_response_free(r);
    }
}

static void test_g_round_robin_even(void **state)
{
    aigw_client *c = make_client(KEYS_ABC,
                                 RULE1("round-robin", "{\"id\":\"a\"},{\"id\":\"b\"},{\"id\":\"c\"}"),
                                 GW_BASE);
    (void)state;
    run_ok(c, 300);
    assert_count(K_A, 100);
    assert_count(K_B, 100);
    assert_count(K_C, 100);
    aigw_client_free(c);
}

/* 1:3.  The draws are random: with N requests key a's count is binomial
 * (N, 1/4); ±15% of its mean is 4.2 standard deviations at N = 2400
 * (one failure in ~40,000 runs), where at N = 400 it would be 1.7 (one in
 * twelve), so this sends 2400. */
#define WEIGHTED_N 2400
static void test_g_weighted(void **state)
{
    aigw_client *c = make_client(KEYS_ABC,
                                 RULE1("weighted", "{\"id\":\"a\",\"weight\":1},"
                                                   "{\"id\":\"b\",\"weight\":3}"),
                                 GW_BASE);
    long a, b;
    (void)state;
    run_ok(c, WEIGHTED_N);
    a = mockprov_count(MP, K_A);
    b = mockprov_count(MP, K_B);
    assert_int_equal(a + b, WEIGHTED_N);
    if (a < WEIGHTED_N / 4 * 85 / 100 || a > WEIGHTED_N / 4 * 115 / 100 ||
        b < WEIGHTED_N * 3 / 4 * 85 / 100 || b > WEIGHTED_N * 3 / 4 * 115 / 100)
        fail_msg("weighted 1:3 over %d: a %ld, b %ld", WEIGHTED_N, a, b);
    assert_count(K_C, 0);
    aigw_client_free(c);
}

static void test_g_round_robin_skips_cooling_key(void **state)
{
    aigw_client *c = make_client(KEYS_ABC,
                                 RULE1("round-robin", "{\"id\":\"a\"},{\"id\":\"b\"},{\"id\":\"c\"}"),
                                 GW_BASE);
    long a, b;
    int i;
    (void)state;
    /* c answers 429 asking for 5 s: it cools at its first turn */
    mp_add_rule(MP, MOCKPROV_RESPOND, K_C, NULL, 429, "retry-after-ms: 5000\r\n", RL_BODY, 0);
    for (i = 0; i < 3 && mockprov_count(MP, K_C) == 0; i++) {
        aigw_response *r = send_body(c, BODY);
        assert_served(r);
        aigw_response_free(r);
    }
    assert_count(K_C, 1);
    assert_stat_state(c, "key", "c", "ready");
    assert_stat_state(c, "endpoint", "c", "cooling");
    mockprov_reset(MP);
    for (i = 0; i < 300; i++) {
        aigw_response *r = send_body(c, BODY);
        char got[256];
        assert_served(r);
        assert_int_equal(attempts_string(r, ATTEMPT_FIELDS, got, sizeof got), 0);
        if (strcmp(got, "mock/m1/a/200/succeeded") != 0 &&
            strcmp(got, "mock/m1/b/200/succeeded") != 0)
            fail_msg("request %d: %s", i, aigw_response_trace_json(r));
        aigw_response_free(r);
    }
    a = mockprov_count(MP, K_A);
    b = mockprov_count(MP, K_B);
    assert_int_equal(a + b, 300);
    if (a < 120 || b < 120)
        fail_msg("round-robin over the two ready keys: a %ld, b %ld", a, b);
    assert_count(K_C, 0);
    aigw_client_free(c);
}

/* random: uniform over the ready keys (600 requests: each key's count is
 * binomial(600, 1/3), sd 11.5; 130..270 is six of them). */
static void test_g_random(void **state)
{
    aigw_client *c = make_client(KEYS_ABC,
                                 RULE1("random", "{\"id\":\"a\"},{\"id\":\"b\"},{\"id\":\"c\"}"),
                                 GW_BASE);
    (void)state;
    run_ok(c, 600);
    assert_in_range(mockprov_count(MP, K_A), 130, 270);
    assert_in_range(mockprov_count(MP, K_B), 130, 270);
    assert_in_range(mockprov_count(MP, K_C), 130, 270);
    aigw_client_free(c);
}

/* least-recently-limited: never-limited keys first (configuration order),
 * then the oldest rate limit. */
static void test_g_least_recently_limited(void **state)
{
    aigw_client *c = make_client(
        KEYS_ABC, RULE1("least-recently-limited", "{\"id\":\"a\"},{\"id\":\"b\"},{\"id\":\"c\"}"),
        GW_BASE ",\"retryAfterMax\":\"2s\"");
    aigw_response *r;
    (void)state;
    mp_add_rule(MP, MOCKPROV_RESPOND, K_A, NULL, 429, "retry-after-ms: 100\r\n", RL_BODY, 1);
    r = send_body(c, BODY);
    assert_seq(r, "mock/m1/a/429/next_key mock/m1/b/200/succeeded", "");
    aigw_response_free(r);
    sleep_ms(150); /* a is ready again, but was limited */
    r = send_body(c, BODY);
    assert_seq(r, "mock/m1/b/200/succeeded", "");
    aigw_response_free(r);
    mp_add_rule(MP, MOCKPROV_RESPOND, K_B, NULL, 429, "retry-after-ms: 100\r\n", RL_BODY, 1);
    r = send_body(c, BODY);
    assert_seq(r, "mock/m1/b/429/next_key mock/m1/c/200/succeeded", "");
    aigw_response_free(r);
    sleep_ms(150);
    r = send_body(c, BODY); /* c never limited, then a (older), then b */
    assert_seq(r, "mock/m1/c/200/succeeded", "");
    aigw_response_free(r);
    mp_add_rule(MP, MOCKPROV_RESPOND, K_C, NULL, 429, "retry-after-ms: 100\r\n", RL_BODY, 1);
    r = send_body(c, BODY);
    assert_seq(r, "mock/m1/c/429/next_key mock/m1/a/200/succeeded", "");
    aigw_response_free(r);
    aigw_client_free(c);
}

/* ------------------------------------------------------------------------ */
/* (h) user strategies: version 2 sees health, version 1 still works        */
/* ------------------------------------------------------------------------ */

#define MAX_SEEN 8
typedef struct seen_call {
    size_t n;
    char id[2][16];
    aigw_key_health h[2];
} seen_call;

static seen_call SEEN[MAX_SEEN];
static int N_SEEN;
static int DESTROYED;

static int v2_order_health(void *ud, const char *provider, const char *model, size_t step,
                           const aigw_key_health *const *keys, size_t n, size_t *order)
{
    size_t i;
    assert_ptr_equal(ud, &SEEN);
    assert_string_equal(provider, "mock");
    assert_string_equal(model, "m1");
    assert_int_equal(step, 0);
    assert_int_equal(n, 2);
    assert_true(N_SEEN < MAX_SEEN);
    SEEN[N_SEEN].n = n;
    for (i = 0; i < n; i++) {
        SEEN[N_SEEN].h[i] = *keys[i];
        snprintf(SEEN[N_SEEN].id[i], sizeof SEEN[N_SEEN].id[i], "%s", keys[i]->id);
        order[i] = i; /* configuration order, cooling keys included */
    }
    N_SEEN++;
    return (int)n;
}

static int must_not_be_called(void *ud, const char *provider, const char *model, size_t step,
                              const char *const *ids, size_t n, size_t *order)
{
    (void)ud, (void)provider, (void)model, (void)step, (void)ids, (void)n, (void)order;
    fail_msg("a version 2 strategy's `order` was called although order_health is set");
    return -1;
}

static void count_destroy(void *ud)
{
    (void)ud;
    DESTROYED++;
}

static void test_h_strategy_v2_sees_health(void **state)
{
    aigw_client *c = make_client(KEYS_AB, RULE_AB, GW_BASE ",\"retryAfterMax\":\"0s\"");
    aigw_strategy vt;
    aigw_response *r;
    const aigw_key_health *a, *b;
    (void)state;
    memset(&vt, 0, sizeof vt);
    vt.version = 2;
    vt.order = must_not_be_called;
    vt.order_health = v2_order_health;
    vt.destroy = count_destroy;
    N_SEEN = 0;
    DESTROYED = 0;
    assert_int_equal(aigw_client_set_strategy(c, &vt, &SEEN), AIGW_OK);
    mp_add_rule(MP, MOCKPROV_RESPOND, K_A, NULL, 429, "retry-after-ms: 3000\r\n", RL_BODY, 1);

    r = send_body(c, BODY);
    assert_seq(r, "mock/m1/A/429/next_key mock/m1/B/200/succeeded", "");
    aigw_response_free(r);
    assert_int_equal(N_SEEN, 1);
    assert_string_equal(SEEN[0].id[0], "A");
    assert_string_equal(SEEN[0].id[1], "B");
    assert_int_equal(SEEN[0].h[0].state, AIGW_KEY_READY);
    assert_int_equal(SEEN[0].h[0].wait_ms, 0);
    assert_int_equal(SEEN[0].h[0].since_limited_ms, -1);
    assert_int_equal(SEEN[0].h[0].weight, 1);
    assert_int_equal(SEEN[0].h[0].requests, 0);
    assert_int_equal(SEEN[0].h[0].latency_mean_ms, -1);

    /* A first in the strategy's order, but cooling: skipped, B serves. */
    r = send_body(c, BODY);
    assert_seq(r, "mock/m1/B/200/succeeded", "key_cooling:mock/m1/A");
    assert_in_range(aigw_response_skip_wait_ms(r, 0), 1, 3000);
    assert_no_secret(r);
    aigw_response_free(r);
    assert_int_equal(N_SEEN, 2);
    a = &SEEN[1].h[0];
    b = &SEEN[1].h[1];
    assert_string_equal(SEEN[1].id[0], "A");
    assert_int_equal(a->state, AIGW_KEY_COOLING);
    assert_in_range(a->wait_ms, 1, 3000);
    assert_in_range(a->since_limited_ms, 0, 2999);
    assert_int_equal(a->requests, 1);
    assert_int_equal(a->successes, 0);
    assert_int_equal(a->failures, 1);
    assert_int_equal(a->weight, 1);
    assert_int_equal(b->state, AIGW_KEY_READY);
    assert_int_equal(b->wait_ms, 0);
    assert_int_equal(b->requests, 1);
    assert_int_equal(b->successes, 1);
    assert_true(b->latency_mean_ms >= 0);
    assert_count(K_A, 1);
    assert_count(K_B, 2);
    aigw_client_free(c);
    assert_int_equal(DESTROYED, 1);
}

static int v1_reverse(void *ud, const char *provider, const char *model, size_t step,
                      const char *const *ids, size_t n, size_t *order)
{
    size_t i;
    (void)ud, (void)provider, (void)model, (void)step;
    assert_int_equal(n, 2);
    assert_string_equal(ids[0], "A");
    assert_string_equal(ids[1], "B");
    for (i = 0; i < n; i++)
        order[i] = n - 1 - i;
    return (int)n;
}

static int v1_must_not_see_health(void *ud, const char *provider, const char *model,
                                  size_t step, const aigw_key_health *const *keys, size_t n,
                                  size_t *order)
{
    (void)ud, (void)provider, (void)model, (void)step, (void)keys, (void)n, (void)order;
    fail_msg("a version 1 strategy's order_health (past its version) was called");
    return -1;
}

static void test_h_strategy_v1_still_works(void **state)
{
    aigw_client *c = make_client(KEYS_AB, RULE_AB, GW_BASE ",\"retryAfterMax\":\"0s\"");
    aigw_strategy vt;
    aigw_response *r;
    (void)state;
    memset(&vt, 0, sizeof vt);
    vt.version = 1;
    vt.order = v1_reverse;
    vt.destroy = count_destroy;
    /* a version 1 caller's struct ends before this member: whatever is
     * there must be ignored */
    vt.order_health = v1_must_not_see_health;
    DESTROYED = 0;
    assert_int_equal(aigw_client_set_strategy(c, &vt, NULL), AIGW_OK);
    mp_add_rule(MP, MOCKPROV_RESPOND, K_B, NULL, 429, "retry-after-ms: 3000\r\n", RL_BODY, 1);
    r = send_body(c, BODY);
    assert_seq(r, "mock/m1/B/429/next_key mock/m1/A/200/succeeded", "");
    aigw_response_free(r);
    /* B cooling, first in the v1 order: skipped, A serves */
    r = send_body(c, BODY);
    assert_seq(r, "mock/m1/A/200/succeeded", "key_cooling:mock/m1/B");
    aigw_response_free(r);
    assert_count(K_A, 2);
    assert_count(K_B, 1);
    /* an unknown version is refused, and its destroy runs */
    vt.version = 3;
    assert_int_equal(aigw_client_set_strategy(c, &vt, NULL), AIGW_EVERSION);
    assert_int_equal(DESTROYED, 1);
    aigw_client_free(c); /* the v1 strategy's destroy */
    assert_int_equal(DESTROYED, 2);
}

/* ------------------------------------------------------------------------ */
/* (j) streams share the health: a 429 on a stream cools the key too       */
/* ------------------------------------------------------------------------ */

#define S_ROLE "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"}}]}\n\n"
#define S_TOK(x) "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"" x "\"}}]}\n\n"
#define S_FINISH "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n"
#define S_DONE "data: [DONE]\n\n"
static const char *const S_HEALTHY[] = {S_ROLE, S_TOK("Hel"), S_TOK("lo"), S_FINISH, S_DONE, NULL};
static const char S_HEALTHY_BYTES[] = S_ROLE S_TOK("Hel") S_TOK("lo") S_FINISH S_DONE;
static const char BODY_STREAM[] = "{\"model\":\"mock:m1\",\"stream\":true,\"messages\":[]}";

static stream_caller S_CALLER;

/* Streams body; S_CALLER holds what came. */
static aigw_response *stream_body(aigw_client *c, const char *body)
{
    memset(&S_CALLER, 0, sizeof S_CALLER);
    return stream_to(c, body, -1, &S_CALLER);
}

static void test_j_streams_share_key_health(void **state)
{
    aigw_client *c = make_client(KEYS_PB, RULE_PB, GW_BASE ",\"retryAfterMax\":\"2s\"");
    aigw_response *r;
    mockprov_rule sr;
    aigw_stats *s;
    const aigw_stat *e;
    (void)state;
    mp_add_rule(MP, MOCKPROV_RESPOND, K_PRIMARY, NULL, 429, "retry-after-ms: 5000\r\n", RL_BODY, 0);
    sr = mp_rule(MOCKPROV_RESPOND, K_BACKUP, NULL, 200, NULL, NULL, 0);
    sr.action = MOCKPROV_STREAM;
    sr.chunks = S_HEALTHY;
    assert_int_equal(mockprov_add_rule(MP, &sr), 0);
    r = stream_body(c, BODY_STREAM);
    assert_seq(r, "mock/m1/primary/429/next_key mock/m1/backup/200/succeeded", "");
    assert_served(r);
    assert_string_equal(S_CALLER.bytes, S_HEALTHY_BYTES);
    aigw_response_free(r);
    /* a whole answer next: primary cools for both kinds of request */
    r = send_body(c, BODY);
    assert_seq(r, "mock/m1/backup/200/succeeded", NULL);
    aigw_response_free(r);
    r = stream_body(c, BODY_STREAM);
    assert_seq(r, "mock/m1/backup/200/succeeded", NULL);
    assert_string_equal(S_CALLER.bytes, S_HEALTHY_BYTES);
    aigw_response_free(r);
    assert_count(K_PRIMARY, 1);
    assert_count(K_BACKUP, 3);
    s = snapshot(c);
    e = find_stat(s, "endpoint", "primary");
    assert_string_equal(e->state, "cooling");
    assert_int_equal(aigw_stat_failures(e, "rate_limit"), 1);
    e = find_stat(s, "key", "backup");
    assert_int_equal(e->successes, 3);
    assert_int_equal(e->latency_count, 3);
    aigw_stats_free(s);
    aigw_client_free(c);
}


/* ------------------------------------------------------------------------ */
/* (k) review findings: each a regression test                              */
/* ------------------------------------------------------------------------ */

#define KEYS_AB2 KEY("a", K_A) "," KEY("b", K_B)
#define RULE_AB2 RULE1("ordered", "{\"id\":\"a\"},{\"id\":\"b\"}")

/* A same-backend retry to another key: the failure is the key's that
 * answered, not the retry target's. */
static void test_k_retry_blames_the_key_that_failed(void **state)
{
    aigw_client *c = make_client(KEYS_AB2, RULE_AB2,
                                 "\"perRequestTimeout\":\"5s\",\"totalTimeout\":\"10s\","
                                 "\"sameBackendRetries\":1,\"retryAfterMax\":\"2s\"");
    aigw_response *r;
    aigw_stats *st;
    (void)state;
    mp_add_rule(MP, MOCKPROV_RESPOND, K_A, NULL, 429, "retry-after-ms: 100\r\n", RL_BODY, 1);
    mp_add_rule(MP, MOCKPROV_RESPOND, K_B, NULL, 429, "Retry-After: 30\r\n", RL_BODY, 0);
    r = send_body(c, BODY);
    assert_served(r);
    assert_seq(r, "mock/m1/a/429/next_key mock/m1/b/429/retry_same_backend mock/m1/a/200/succeeded",
               "");
    aigw_response_free(r);
    st = snapshot(c);
    assert_string_equal(find_stat(st, "key", "a")->state, "ready");
    assert_int_equal(find_stat(st, "key", "a")->failures, 1);
    assert_int_equal(find_stat(st, "key", "a")->successes, 1);
    assert_string_equal(find_stat(st, "key", "b")->state, "ready");
    assert_string_equal(find_stat(st, "endpoint", "b")->state, "cooling");
    assert_int_equal(find_stat(st, "endpoint", "b")->requests, 1);
    assert_in_range(find_stat(st, "endpoint", "b")->wait_ms, 29000, 30000);
    aigw_stats_free(st);
    /* the next request goes to a, skipping the cooling b: nothing wasted */
    r = send_body(c, BODY);
    assert_served(r);
    assert_seq(r, "mock/m1/a/200/succeeded", "");
    aigw_response_free(r);
    assert_count(K_A, 3);
    assert_count(K_B, 1);
    aigw_client_free(c);
}

/* The library's 429 names the cooldown it imposed on a 429 that named no
 * wait, not only waits the upstream asked for. */
static void test_k_retry_after_includes_default_cooldown(void **state)
{
    aigw_client *c = make_client(KEYS_AB2, RULE_AB2, GW_BASE ",\"keyCooldown\":\"2s\"");
    aigw_response *r;
    const char *ram;
    (void)state;
    mp_add_rule(MP, MOCKPROV_RESPOND, K_A, NULL, 429, "Retry-After: 30\r\n", RL_BODY, 0);
    mp_add_rule(MP, MOCKPROV_RESPOND, K_B, NULL, 429, NULL, RL_BODY, 0);
    r = send_body(c, BODY);
    assert_error_answer(r, 429, "rate_limited", NULL);
    ram = aigw_response_header_get(r, "retry-after-ms");
    assert_non_null(ram);
    /* b's cooldown, jittered into [1 s, 2 s], not a's 30 s; Retry-After is
     * it in whole seconds, rounded up */
    assert_in_range(atoll(ram), 1000, 2000);
    assert_string_equal(aigw_response_header_get(r, "retry-after"),
                        atoll(ram) > 1000 ? "2" : "1");
    aigw_response_free(r);
    aigw_client_free(c);
}

/* One key 401, the other 429: only keys failed, waiting frees one: 429. */
static void test_k_auth_and_rate_limit_is_429(void **state)
{
    aigw_client *c = make_client(KEYS_AB2, RULE_AB2, GW_BASE);
    aigw_response *r;
    (void)state;
    mp_add_rule(MP, MOCKPROV_RESPOND, K_A, NULL, 401, NULL, AUTH_BODY, 0);
    mp_add_rule(MP, MOCKPROV_RESPOND, K_B, NULL, 429, "Retry-After: 30\r\n", RL_BODY, 0);
    r = send_body(c, BODY);
    assert_seq(r, "mock/m1/a/401/next_key mock/m1/b/429/exhausted", "");
    assert_error_answer(r, 429, "rate_limited", NULL);
    assert_string_equal(aigw_response_header_get(r, "retry-after"), "30");
    aigw_response_free(r);
    /* the next one, a benched and b cooling, says the same without a call */
    r = send_body(c, BODY);
    assert_seq(r, "", "key_benched:mock/m1/a key_cooling:mock/m1/b");
    assert_error_answer(r, 429, "rate_limited", NULL);
    aigw_response_free(r);
    assert_count(K_A, 1);
    assert_count(K_B, 1);
    aigw_client_free(c);
}

/* keyCooldownMax caps the default cooldown too: 0 = no memory of 429s. */
static void test_k_cooldown_max_caps_default(void **state)
{
    aigw_client *c = make_client(KEYS_AB2, RULE_AB2,
                                 GW_BASE ",\"keyCooldown\":\"2s\",\"keyCooldownMax\":\"0s\"");
    aigw_response *r;
    int i;
    (void)state;
    mp_add_rule(MP, MOCKPROV_RESPOND, K_A, NULL, 429, NULL, RL_BODY, 0);
    for (i = 0; i < 3; i++) {
        r = send_body(c, BODY);
        assert_seq(r, "mock/m1/a/429/next_key mock/m1/b/200/succeeded", "");
        aigw_response_free(r);
    }
    assert_count(K_A, 3);
    aigw_client_free(c);
}

/* A rate limit relayed through an ngrok step cools the ngrok key for that
 * provider only. */
static void test_k_ngrok_key_health_per_provider(void **state)
{
    char json[1024];
    aigw_config *cfg;
    aigw_client *c;
    aigw_response *r;
    aigw_stats *st;
    size_t i, ngrok_entries = 0, ngrok_endpoints = 0;
    static const char body_o[] = "{\"model\":\"openai:gpt-4o\",\"messages\":[]}";
    static const char body_a[] = "{\"model\":\"anthropic:claude-x\",\"messages\":[]}";
    (void)state;
    snprintf(json, sizeof json,
             "{\"ngrokAccessKey\":\"%s\",\"ngrokGatewayUrl\":\"%s\","
             "\"accessKeyConfiguration\":{\"name\":\"n\"},\"gatewayConfig\":{" GW_BASE "}}",
             K_SOLO, mockprov_base_url(MP));
    cfg = config_from_json(json);
    c = client_on(cfg);
    aigw_config_unref(cfg);
    mp_add_rule(MP, MOCKPROV_RESPOND, NULL, "openai:gpt-4o", 429, "Retry-After: 30\r\n", RL_BODY,
                0);
    r = send_body(c, body_o);
    assert_seq(r, "openai/gpt-4o/ngrok/429/exhausted", "");
    aigw_response_free(r);
    r = send_body(c, body_a);
    assert_served(r);
    assert_seq(r, "anthropic/claude-x/ngrok/200/succeeded", "");
    aigw_response_free(r);
    r = send_body(c, body_o);
    assert_seq(r, "", "key_cooling:openai/gpt-4o/ngrok");
    aigw_response_free(r);
    st = snapshot(c);
    for (i = 0; i < aigw_stats_count(st); i++) {
        const aigw_stat *e = aigw_stats_at(st, i);
        if (strcmp(e->kind, "key") == 0 && strcmp(e->name, "ngrok") == 0) {
            ngrok_entries++;
            assert_string_equal(e->state, "ready");
        }
        /* its rate limit: openai's gpt-4o, not anthropic's claude-x */
        if (strcmp(e->kind, "endpoint") == 0 && strcmp(e->name, "ngrok") == 0) {
            ngrok_endpoints++;
            assert_string_equal(e->state, strcmp(e->provider, "openai") == 0 ? "cooling" : "ready");
        }
    }
    assert_int_equal(ngrok_entries, 2);
    assert_int_equal(ngrok_endpoints, 2);
    assert_no_secret_in(aigw_stats_json(st), ALL_KEYS, N_ALL_KEYS);
    aigw_stats_free(st);
    aigw_client_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_a_retry_after_cools_primary, mp_setup),
        cmocka_unit_test_setup(test_i_stats_after_a, mp_setup),
        cmocka_unit_test_setup(test_a_cooling_key_skip_recorded, mp_setup),
        cmocka_unit_test_setup(test_b_flapping_backend_circuit, mp_setup),
        cmocka_unit_test_setup(test_b2_host_circuit, mp_setup),
        cmocka_unit_test_setup(test_b3_one_probe_at_a_time, mp_setup),
        cmocka_unit_test_setup(test_c_all_keys_cooling_waits, mp_setup),
        cmocka_unit_test_setup(test_c_all_keys_cooling_429_at_once, mp_setup),
        cmocka_unit_test_setup(test_c2_cooldown_default_and_cap, mp_setup),
        cmocka_unit_test_setup(test_d_bench_until_new_config_or_reset, mp_setup),
        cmocka_unit_test_setup(test_d2_quota_bench_and_bench_time, mp_setup),
        cmocka_unit_test_setup(test_d_set_config_same_object_ends_bench, mp_setup),
        cmocka_unit_test_setup(test_e_hot_swap_carry_over, mp_setup),
        cmocka_unit_test_setup(test_f_retry_budget, mp_setup),
        cmocka_unit_test_setup(test_f2_retry_budget_floor, mp_setup),
        cmocka_unit_test_setup(test_f_budget_survives_window_change, mp_setup),
        cmocka_unit_test_setup(test_g_round_robin_even, mp_setup),
        cmocka_unit_test_setup(test_g_weighted, mp_setup),
        cmocka_unit_test_setup(test_g_round_robin_skips_cooling_key, mp_setup),
        cmocka_unit_test_setup(test_g_random, mp_setup),
        cmocka_unit_test_setup(test_g_least_recently_limited, mp_setup),
        cmocka_unit_test_setup(test_h_strategy_v2_sees_health, mp_setup),
        cmocka_unit_test_setup(test_h_strategy_v1_still_works, mp_setup),
        cmocka_unit_test_setup(test_j_streams_share_key_health, mp_setup),
        cmocka_unit_test_setup(test_k_retry_blames_the_key_that_failed, mp_setup),
        cmocka_unit_test_setup(test_k_retry_after_includes_default_cooldown, mp_setup),
        cmocka_unit_test_setup(test_k_auth_and_rate_limit_is_429, mp_setup),
        cmocka_unit_test_setup(test_k_cooldown_max_caps_default, mp_setup),
        cmocka_unit_test_setup(test_k_ngrok_key_health_per_provider, mp_setup),
    };
    int rc = cmocka_run_group_tests(tests, mp_group_setup, mp_group_teardown);
    aigw_stats_free(A_STATS);
    return rc;
}
