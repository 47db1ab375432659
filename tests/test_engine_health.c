/*
 * test_engine_health.c - key health across requests, through the public API
 * only, fully deterministic: a scripted mock transport (one scripted answer
 * per upstream call; it records the key each call carried, its URL and the
 * model it asked for) and a fake clock (now_ms reads a counter; sleep_ms
 * advances it and records the sleep).
 *
 * Every scenario asserts, per request, the exact attempts
 * (model/key/status-or-transport-error/verdict), the skips
 * (model/reason/key/waitMs), the sleeps, the transport's calls (key@model,
 * in order) and the fake time.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "aigw.h"
#include "support.h"

/* ---- the scripted transport M and its fake clock (support.h) ---- */

#define T0 MOCK_T0
#define KEY_PREFIX "sk-" /* every key value here is "sk-<id>": M records the id */

static void set_now(int64_t t)
{
    assert_true(t >= M.clock.now); /* a monotonic clock */
    M.clock.now = t;
}

/* ---- configurations ---- */

#define PROVIDERS                                                                          \
    "\"providers\":["                                                                      \
    "{\"providerId\":\"fake\",\"name\":\"Fake\",\"baseUrl\":\"http://127.0.0.1:9/v1\","    \
    "\"models\":[{\"modelId\":\"m1\"},{\"modelId\":\"m2\"}]},"                             \
    "{\"providerId\":\"other\",\"name\":\"Other\",\"baseUrl\":\"http://127.0.0.1:8/v1\","  \
    "\"models\":[{\"modelId\":\"m9\"}]}]"

#define KEYS                                                                               \
    "\"providerKeys\":["                                                                   \
    "{\"id\":\"a\",\"providerId\":\"fake\",\"value\":\"sk-a\"},"                           \
    "{\"id\":\"b\",\"providerId\":\"fake\",\"value\":\"sk-b\"},"                           \
    "{\"id\":\"c\",\"providerId\":\"fake\",\"value\":\"sk-c\"},"                           \
    "{\"id\":\"d\",\"providerId\":\"other\",\"value\":\"sk-d\"}]"

#define STEP(keys) "{\"type\":\"user\",\"keys\":[" keys "]}"
#define STEP_S(strategy, keys) \
    "{\"type\":\"user\",\"keySelectionStrategy\":\"" strategy "\",\"keys\":[" keys "]}"
#define K(id) "{\"id\":\"" id "\"}"
#define STEP_A STEP(K("a"))
#define STEP_AB STEP(K("a") "," K("b"))
#define STEP_ABC STEP(K("a") "," K("b") "," K("c"))

#define NGROK "\"ngrokAccessKey\":{\"value\":\"sk-ngrok\"},\"ngrokGatewayUrl\":\"http://127.0.0.1:6/v1\""

static const char *BODY_M1 = "{\"model\":\"fake:m1\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
static const char *BODY_M1_M2 = "{\"model\":\"fake:m1\",\"models\":[\"fake:m2\"],"
                                "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
static const char *BODY_M1_M9 = "{\"model\":\"fake:m1\",\"models\":[\"other:m9\"],"
                                "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
static const char *BODY_M2_M9 = "{\"model\":\"fake:m2\",\"models\":[\"other:m9\"],"
                                "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";

#define RL_BODY "{\"error\":{\"message\":\"Rate limit reached\",\"code\":\"rate_limit_exceeded\"}}"
#define AUTH_BODY "{\"error\":{\"message\":\"Incorrect API key\",\"code\":\"invalid_api_key\"}}"
#define QUOTA_BODY "{\"error\":{\"message\":\"You exceeded your current quota\"," \
                   "\"type\":\"insufficient_quota\",\"code\":\"insufficient_quota\"}}"
#define SERVER_BODY "{\"error\":{\"message\":\"The server had an error\",\"type\":\"server_error\"}}"

/* A gateway file: providers fake (:9, m1 m2) and other (:8, m9), keys a b c
 * (fake) and d (other); rule fake: fake_steps; rule other: [d]. */
static aigw_config *make_cfg(const char *fake_steps, const char *gateway, const char *extra)
{
    char json[4096];
    int n = snprintf(json, sizeof json,
                     "{" PROVIDERS "," KEYS ",\"accessKeyConfiguration\":{\"name\":\"t\","
                     "\"router\":{\"rules\":[{\"provider\":\"fake\",\"steps\":[%s]},"
                     "{\"provider\":\"other\",\"steps\":[" STEP(K("d")) "]}]}},"
                     "\"gatewayConfig\":{%s}%s%s}",
                     fake_steps, gateway, extra ? "," : "", extra ? extra : "");
    assert_true(n > 0 && (size_t)n < sizeof json);
    return config_from_json(json);
}

/* A client on cfg (the caller keeps its own reference), sending through M. */
static aigw_client *client_on_mock(aigw_config *cfg)
{
    return mock_attach(client_on(cfg));
}

static aigw_client *client_for(const char *fake_steps, const char *gateway, const char *extra)
{
    aigw_config *cfg = make_cfg(fake_steps, gateway, extra);
    aigw_client *c = client_on_mock(cfg);
    aigw_config_unref(cfg); /* the client holds its own reference */
    return c;
}

/* ---- what a response says ---- */

/* The helpers below report the caller's line. */
#define WHERE const char *file, int line
#define HERE __FILE__, __LINE__

/* "model/key/status/verdict" per attempt ("connect" etc. for a transport
 * error), space separated. */
#define ATTEMPT_FIELDS "model/key/result/verdict"
#define assert_attempts(r, want) assert_attempts_as(r, ATTEMPT_FIELDS, want)

/* "model/reason/key/waitMs" per skip, space separated. */
#define SKIP_FIELDS "model/reason/key/wait"
#define assert_skips(r, want) assert_skips_as(r, SKIP_FIELDS, want)

/* Sends body: its attempts are `attempts`, and its skips `skips` (unless
 * NULL); the response is freed. */
static void sends_at(aigw_client *c, const char *body, const char *attempts, const char *skips,
                     WHERE)
{
    aigw_response *r = send_body(c, body);
    assert_attempts_at(r, ATTEMPT_FIELDS, attempts, file, line);
    if (skips)
        assert_skips_at(r, SKIP_FIELDS, skips, file, line);
    aigw_response_free(r);
}
#define assert_sends(c, body, attempts) sends_at(c, body, attempts, NULL, HERE)
#define assert_sends_skips(c, body, attempts, skips) sends_at(c, body, attempts, skips, HERE)

/* The calls the transport saw, as "key@model", in order. */
#define assert_calls(want) assert_calls_as("key@model", want)

static int calls_of(const char *key)
{
    int i, n = 0;
    for (i = 0; i < M.n_calls; i++)
        if (strcmp(M.keys[i], key) == 0)
            n++;
    return n;
}

static void assert_sleeps_at(const char *want, WHERE)
{
    char got[512] = "";
    int i;
    for (i = 0; i < M.clock.n_sleeps && i < FAKE_CLOCK_MAX_SLEEPS; i++) {
        size_t n = strlen(got);
        snprintf(got + n, sizeof got - n, "%s%lld", i ? " " : "", (long long)M.clock.slept[i]);
    }
    _assert_string_equal(got, want, file, line);
}
#define assert_sleeps(want) assert_sleeps_at(want, HERE)

#define assert_now(want) _assert_int_equal(cast_to_largest_integral_type(M.clock.now), \
                                           cast_to_largest_integral_type(want), HERE)

/* The answer: status, the library's error code (NULL: the upstream's). */
static void assert_answer_at(const aigw_response *r, int status, const char *code, WHERE)
{
    const char *got = aigw_response_error_code(r);
    _assert_int_equal(cast_to_largest_integral_type(aigw_response_status(r)),
                      cast_to_largest_integral_type(status), file, line);
    _assert_string_equal(got ? got : "(null)", code ? code : "(null)", file, line);
}
#define assert_answer(r, status, code) assert_answer_at(r, status, code, HERE)

/* retry-after and retry-after-ms (NULL: absent). */
static void assert_retry_after_at(const aigw_response *r, const char *s, const char *ms, WHERE)
{
    const char *v = aigw_response_header_get(r, "retry-after");
    const char *vms = aigw_response_header_get(r, "retry-after-ms");
    _assert_string_equal(v ? v : "(absent)", s ? s : "(absent)", file, line);
    _assert_string_equal(vms ? vms : "(absent)", ms ? ms : "(absent)", file, line);
}
#define assert_retry_after(r, s, ms) assert_retry_after_at(r, s, ms, HERE)

/* ---- snapshots ---- */

/* "state reason wait=W req=R ok=S fail=F skips=K" of one entry, now. */
static void assert_stat_at(aigw_client *c, const char *kind, const char *name, const char *want,
                           WHERE)
{
    aigw_stats *s = NULL;
    const aigw_stat *e;
    char got[256];
    assert_int_equal(aigw_client_stats(c, &s), AIGW_OK);
    e = find_stat(s, kind, name);
    snprintf(got, sizeof got, "%s %s wait=%lld req=%llu ok=%llu fail=%llu skips=%llu", e->state,
             e->reason[0] ? e->reason : "-", (long long)e->wait_ms,
             (unsigned long long)e->requests, (unsigned long long)e->successes,
             (unsigned long long)e->failures, (unsigned long long)e->skips);
    aigw_stats_free(s);
    _assert_string_equal(got, want, file, line);
}
#define assert_stat(c, kind, name, want) assert_stat_at(c, kind, name, want, HERE)

/* How many entries of that kind and name the snapshot has now. */
static size_t entries_named(aigw_client *c, const char *kind, const char *name)
{
    aigw_stats *s = NULL;
    size_t i, n = 0;
    assert_int_equal(aigw_client_stats(c, &s), AIGW_OK);
    for (i = 0; i < aigw_stats_count(s); i++)
        if (strcmp(aigw_stats_at(s, i)->kind, kind) == 0 &&
            strcmp(aigw_stats_at(s, i)->name, name) == 0)
            n++;
    aigw_stats_free(s);
    return n;
}

/* "requests retries denied available" of the retry budget, now. */
static void assert_budget_at(aigw_client *c, const char *want, WHERE)
{
    aigw_stats *s = NULL;
    uint64_t req, ret, den;
    int64_t avail;
    char got[128];
    assert_int_equal(aigw_client_stats(c, &s), AIGW_OK);
    aigw_stats_budget(s, &req, &ret, &den, &avail);
    aigw_stats_free(s);
    snprintf(got, sizeof got, "requests=%llu retries=%llu denied=%llu available=%lld",
             (unsigned long long)req, (unsigned long long)ret, (unsigned long long)den,
             (long long)avail);
    _assert_string_equal(got, want, file, line);
}
#define assert_budget(c, want) assert_budget_at(c, want, HERE)

static int setup(void **state)
{
    (void)state;
    mock_reset(KEY_PREFIX);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* 1. a cooldown ends exactly when its wait has passed                      */
/* ------------------------------------------------------------------------ */

static void test_cooldown_expires_at_the_boundary(void **state)
{
    aigw_client *c = client_for(STEP_AB, "", NULL);
    aigw_response *r;
    (void)state;

    push_h(429, "retry-after-ms", "1500", RL_BODY);
    r = send_body(c, BODY_M1);
    assert_attempts(r, "m1/a/429/next_key m1/b/200/succeeded");
    assert_skips(r, "");
    assert_int_equal(aigw_attempt_requested_wait_ms(aigw_response_attempt(r, 0)), 1500);
    assert_string_equal(aigw_attempt_error_class(aigw_response_attempt(r, 0)), "rate_limit");
    assert_answer(r, 200, NULL);
    aigw_response_free(r);
    /* the key is ready; it cools for the model that was limited */
    assert_stat(c, "key", "a", "ready - wait=0 req=1 ok=0 fail=1 skips=0");
    assert_stat(c, "endpoint", "a", "cooling rate_limit wait=1500 req=1 ok=0 fail=1 skips=0");

    /* one ms before the end: passed over, no upstream call */
    set_now(T0 + 1499);
    r = send_body(c, BODY_M1);
    assert_attempts(r, "m1/b/200/succeeded");
    assert_skips(r, "m1/key_cooling/a/1");
    assert_answer(r, 200, NULL);
    aigw_response_free(r);

    /* at the end exactly: ready */
    set_now(T0 + 1500);
    assert_sends_skips(c, BODY_M1, "m1/a/200/succeeded", "");

    assert_calls("a@m1 b@m1 b@m1 a@m1");
    assert_int_equal(calls_of("a"), 2);
    assert_int_equal(calls_of("b"), 2);
    assert_sleeps("");
    assert_now(T0 + 1500);
    assert_stat(c, "key", "a", "ready - wait=0 req=2 ok=1 fail=1 skips=1");
    aigw_client_free(c);
}

/* ------------------------------------------------------------------------ */
/* 2. a 429 naming no wait: keyCooldown jittered into [1/2, 1]              */
/* ------------------------------------------------------------------------ */

static void test_default_cooldown_without_wait(void **state)
{
    int round;
    (void)state;
    for (round = 0; round < 16; round++) {
        aigw_client *c;
        aigw_response *r;
        int64_t left, cool;
        mock_reset(KEY_PREFIX);
        c = client_for(STEP_AB, "\"keyCooldown\":\"2s\"", NULL);
        push(429, RL_BODY);
        r = send_body(c, BODY_M1);
        assert_attempts(r, "m1/a/429/next_key m1/b/200/succeeded");
        assert_int_equal(aigw_attempt_requested_wait_ms(aigw_response_attempt(r, 0)), -1);
        aigw_response_free(r);

        /* probe with the clock: at +999 a is still cooling */
        set_now(T0 + 999);
        r = send_body(c, BODY_M1);
        assert_attempts(r, "m1/b/200/succeeded");
        assert_int_equal(aigw_response_skip_count(r), 1);
        left = aigw_response_skip_wait_ms(r, 0);
        assert_in_range(left, 1, 1001);
        cool = 999 + left; /* the jittered cooldown: [1000, 2000] */
        assert_in_range(cool, 1000, 2000);
        {
            char want[64];
            snprintf(want, sizeof want, "m1/key_cooling/a/%lld", (long long)left);
            assert_skips(r, want);
        }
        aigw_response_free(r);

        /* one ms before its end: still cooling */
        set_now(T0 + cool - 1);
        assert_sends_skips(c, BODY_M1, "m1/b/200/succeeded", "m1/key_cooling/a/1");

        /* at +2000 at the latest a is tried again */
        set_now(T0 + 2000);
        assert_sends_skips(c, BODY_M1, "m1/a/200/succeeded", "");
        assert_calls("a@m1 b@m1 b@m1 b@m1 a@m1");
        assert_sleeps("");
        aigw_client_free(c);
    }

    /* and exactly at its end (not a ms later) */
    {
        aigw_client *c;
        aigw_response *r;
        aigw_stats *s = NULL;
        int64_t cool;
        mock_reset(KEY_PREFIX);
        c = client_for(STEP_AB, "\"keyCooldown\":\"2s\"", NULL);
        push(429, RL_BODY);
        r = send_body(c, BODY_M1);
        aigw_response_free(r);
        assert_int_equal(aigw_client_stats(c, &s), AIGW_OK);
        cool = find_stat(s, "endpoint", "a")->wait_ms;
        assert_string_equal(find_stat(s, "endpoint", "a")->state, "cooling");
        assert_string_equal(find_stat(s, "key", "a")->state, "ready");
        aigw_stats_free(s);
        assert_in_range(cool, 1000, 2000);
        set_now(T0 + cool);
        assert_sends_skips(c, BODY_M1, "m1/a/200/succeeded", "");
        aigw_client_free(c);
    }

    /* the only key: the answer names the cooldown it imposed as its wait */
    {
        aigw_client *c;
        aigw_response *r;
        aigw_stats *s = NULL;
        char ms[32], sec[32];
        int64_t cool;
        mock_reset(KEY_PREFIX);
        c = client_for(STEP_A, "\"keyCooldown\":\"2s\",\"sameBackendRetries\":0", NULL);
        push(429, RL_BODY);
        r = send_body(c, BODY_M1);
        assert_int_equal(aigw_client_stats(c, &s), AIGW_OK);
        cool = find_stat(s, "endpoint", "a")->wait_ms;
        aigw_stats_free(s);
        assert_in_range(cool, 1000, 2000);
        snprintf(ms, sizeof ms, "%lld", (long long)cool);
        snprintf(sec, sizeof sec, "%lld", (long long)((cool + 999) / 1000));
        assert_attempts(r, "m1/a/429/exhausted");
        assert_answer(r, 429, "rate_limited");
        assert_retry_after(r, sec, ms);
        aigw_response_free(r);
        aigw_client_free(c);
    }
}

/* ------------------------------------------------------------------------ */
/* 3. keyCooldownMax caps what an upstream may ask                          */
/* ------------------------------------------------------------------------ */

static void test_cooldown_max_caps_upstream_wait(void **state)
{
    aigw_client *c = client_for(STEP_AB, "\"keyCooldownMax\":\"10s\"", NULL);
    aigw_response *r;
    (void)state;
    push_h(429, "retry-after", "3600", RL_BODY);
    r = send_body(c, BODY_M1);
    assert_attempts(r, "m1/a/429/next_key m1/b/200/succeeded");
    /* the attempt records what was asked; the key cools for the cap */
    assert_int_equal(aigw_attempt_requested_wait_ms(aigw_response_attempt(r, 0)), 3600000);
    aigw_response_free(r);
    /* the key is ready; it cools for the model that was limited */
    assert_stat(c, "key", "a", "ready - wait=0 req=1 ok=0 fail=1 skips=0");
    assert_stat(c, "endpoint", "a", "cooling rate_limit wait=10000 req=1 ok=0 fail=1 skips=0");

    set_now(T0 + 9999);
    assert_sends_skips(c, BODY_M1, "m1/b/200/succeeded", "m1/key_cooling/a/1");

    set_now(T0 + 10000);
    assert_sends_skips(c, BODY_M1, "m1/a/200/succeeded", "");
    assert_calls("a@m1 b@m1 b@m1 a@m1");
    assert_sleeps("");
    assert_now(T0 + 10000);
    aigw_client_free(c);
}

/* ------------------------------------------------------------------------ */
/* 4. every key cooling, the wait fits: the request waits, then sends       */
/* ------------------------------------------------------------------------ */

static void test_all_cooling_wait_fits(void **state)
{
    aigw_client *c = client_for(STEP_A, "\"sameBackendRetries\":0", NULL);
    aigw_response *r;
    (void)state;
    push_h(429, "retry-after-ms", "800", RL_BODY);
    r = send_body(c, BODY_M1);
    assert_attempts(r, "m1/a/429/exhausted");
    assert_answer(r, 429, "rate_limited");
    assert_retry_after(r, "1", "800");
    aigw_response_free(r);

    set_now(T0 + 100);
    r = send_body(c, BODY_M1);
    assert_attempts(r, "m1/a/200/succeeded");
    assert_skips(r, "m1/key_cooling/a/700");
    assert_answer(r, 200, NULL);
    assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_SERVED);
    aigw_response_free(r);
    assert_sleeps("700");
    assert_now(T0 + 800);
    assert_calls("a@m1 a@m1");
    assert_stat(c, "key", "a", "ready - wait=0 req=2 ok=1 fail=1 skips=1");
    aigw_client_free(c);
}

/* Within one request, with nothing sideways left, a same-backend retry
 * waits for the step's key that is ready soonest (a, 100 ms) after b (300 ms)
 * failed: each 429 cools the key that answered it, not the one retried. */
static void test_retry_waits_for_cooling_key_blames_each(void **state)
{
    aigw_client *c = client_for(STEP_AB, "", NULL);
    aigw_response *r;
    (void)state;
    push_h(429, "retry-after-ms", "100", RL_BODY);
    push_h(429, "retry-after-ms", "300", RL_BODY)->takes_ms = 20;
    r = send_body(c, BODY_M1);
    assert_attempts(r, "m1/a/429/next_key m1/b/429/retry_same_backend m1/a/200/succeeded");
    assert_skips(r, "");
    /* a asked for 100 ms at T0; 20 ms passed during b's call */
    assert_int_equal(aigw_attempt_waited_ms(aigw_response_attempt(r, 1)), 80);
    aigw_response_free(r);
    assert_sleeps("80");
    assert_now(T0 + 100);
    assert_calls("a@m1 b@m1 a@m1");
    assert_stat(c, "key", "a", "ready - wait=0 req=2 ok=1 fail=1 skips=0");
    /* b answered its 429 at T0+20: cooling until T0+320 */
    /* the key is ready; it cools for the model that was limited */
    assert_stat(c, "key", "b", "ready - wait=0 req=1 ok=0 fail=1 skips=0");
    assert_stat(c, "endpoint", "b", "cooling rate_limit wait=220 req=1 ok=0 fail=1 skips=0");

    assert_sends(c, BODY_M1, "m1/a/200/succeeded");
    aigw_client_free(c);
}

/* ------------------------------------------------------------------------ */
/* 5. every key cooling, the wait does not fit: 429 at once                 */
/* ------------------------------------------------------------------------ */

static void test_all_cooling_wait_does_not_fit(void **state)
{
    aigw_client *c = client_for(STEP_A, "\"retryAfterMax\":\"500ms\"", NULL);
    aigw_response *r;
    (void)state;
    push_h(429, "retry-after-ms", "800", RL_BODY);
    r = send_body(c, BODY_M1);
    /* 800 ms > retryAfterMax: no same-backend retry either */
    assert_attempts(r, "m1/a/429/exhausted");
    assert_answer(r, 429, "rate_limited");
    assert_retry_after(r, "1", "800");
    aigw_response_free(r);

    r = send_body(c, BODY_M1);
    assert_attempts(r, "");
    assert_skips(r, "m1/key_cooling/a/800");
    assert_answer(r, 429, "rate_limited");
    assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_EXHAUSTED);
    assert_retry_after(r, "1", "800");
    aigw_response_free(r);
    assert_sleeps("");
    assert_calls("a@m1");
    assert_now(T0);

    /* 500 ms left = retryAfterMax: that fits */
    set_now(T0 + 300);
    assert_sends_skips(c, BODY_M1, "m1/a/200/succeeded", "m1/key_cooling/a/500");
    assert_sleeps("500");
    assert_now(T0 + 800);
    aigw_client_free(c);

    /* totalTimeout shorter than the wait */
    mock_reset(KEY_PREFIX);
    c = client_for(STEP_A, "\"totalTimeout\":\"700ms\",\"perRequestTimeout\":\"700ms\"", NULL);
    push_h(429, "retry-after-ms", "800", RL_BODY);
    r = send_body(c, BODY_M1);
    assert_attempts(r, "m1/a/429/exhausted");
    assert_answer(r, 429, "rate_limited");
    aigw_response_free(r);

    r = send_body(c, BODY_M1);
    assert_attempts(r, "");
    assert_skips(r, "m1/key_cooling/a/800");
    assert_answer(r, 429, "rate_limited");
    assert_retry_after(r, "1", "800");
    aigw_response_free(r);

    /* 700 left, 700 of totalTimeout: the wait must end before the deadline */
    set_now(T0 + 100);
    r = send_body(c, BODY_M1);
    assert_attempts(r, "");
    assert_skips(r, "m1/key_cooling/a/700");
    assert_answer(r, 429, "rate_limited");
    assert_retry_after(r, "1", "700");
    aigw_response_free(r);
    assert_sleeps("");

    /* 690 left: fits, with 10 ms of totalTimeout left for the attempt
     * (691..699 left: see test_cooling_wait_must_leave_room_for_an_attempt) */
    set_now(T0 + 110);
    assert_sends_skips(c, BODY_M1, "m1/a/200/succeeded", "m1/key_cooling/a/690");
    assert_sleeps("690");
    assert_now(T0 + 800);
    assert_calls("a@m1 a@m1");
    aigw_client_free(c);
}

/* ------------------------------------------------------------------------ */
/* 6. benches                                                               */
/* ------------------------------------------------------------------------ */

static void test_benches(void **state)
{
    aigw_config *cfg = make_cfg(STEP_AB, "\"keyBenchTime\":\"30s\"", NULL);
    aigw_client *c = client_on_mock(cfg);
    aigw_response *r;
    (void)state;

    push(401, AUTH_BODY);
    assert_sends(c, BODY_M1, "m1/a/401/next_key m1/b/200/succeeded");
    assert_stat(c, "key", "a", "benched auth wait=30000 req=1 ok=0 fail=1 skips=0");

    set_now(T0 + 1000);
    assert_sends_skips(c, BODY_M1, "m1/b/200/succeeded", "m1/key_benched/a/29000");
    set_now(T0 + 29999);
    assert_sends_skips(c, BODY_M1, "m1/b/200/succeeded", "m1/key_benched/a/1");
    assert_int_equal(calls_of("a"), 1);

    /* keyBenchTime passed */
    set_now(T0 + 30000);
    assert_sends_skips(c, BODY_M1, "m1/a/200/succeeded", "");

    /* benched again; aigw_client_reset_health ends it at once */
    push(401, AUTH_BODY);
    assert_sends(c, BODY_M1, "m1/a/401/next_key m1/b/200/succeeded");
    assert_int_equal(aigw_client_reset_health(c, "zz"), AIGW_EINVAL);
    assert_stat(c, "key", "a", "benched auth wait=30000 req=3 ok=1 fail=2 skips=2");
    assert_int_equal(aigw_client_reset_health(c, "a"), AIGW_OK);
    assert_stat(c, "key", "a", "ready - wait=0 req=3 ok=1 fail=2 skips=2");
    assert_sends(c, BODY_M1, "m1/a/200/succeeded");

    /* benched again; set_config with the very object it holds ends it */
    push(401, AUTH_BODY);
    assert_sends(c, BODY_M1, "m1/a/401/next_key m1/b/200/succeeded");
    assert_int_equal(aigw_client_set_config(c, cfg, NULL), AIGW_OK);
    assert_stat(c, "key", "a", "ready - wait=0 req=5 ok=2 fail=3 skips=2");
    assert_sends(c, BODY_M1, "m1/a/200/succeeded");
    assert_calls("a@m1 b@m1 b@m1 b@m1 a@m1 a@m1 b@m1 a@m1 a@m1 b@m1 a@m1");

    /* every key benched for auth: 401 unauthorized, zero attempts */
    push(401, AUTH_BODY);
    push(403, AUTH_BODY);
    r = send_body(c, BODY_M1);
    assert_attempts(r, "m1/a/401/next_key m1/b/403/exhausted");
    assert_answer(r, 401, "unauthorized");
    aigw_response_free(r);
    r = send_body(c, BODY_M1);
    assert_attempts(r, "");
    assert_skips(r, "m1/key_benched/a/30000 m1/key_benched/b/30000");
    assert_answer(r, 401, "unauthorized");
    assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_EXHAUSTED);
    assert_retry_after(r, NULL, NULL);
    aigw_response_free(r);
    assert_int_equal(M.n_calls, 13);
    assert_sleeps("");
    assert_now(T0 + 30000);
    aigw_client_free(c);
    aigw_config_unref(cfg);

    /* a quota-benched key among them: 429 quota_exceeded, no retry-after */
    mock_reset(KEY_PREFIX);
    c = client_for(STEP_AB, "\"keyBenchTime\":\"30s\"", NULL);
    push(429, QUOTA_BODY);
    push(401, AUTH_BODY);
    r = send_body(c, BODY_M1);
    assert_attempts(r, "m1/a/429/next_quota_pool m1/b/401/exhausted");
    assert_answer(r, 502, "upstream_error");
    aigw_response_free(r);
    assert_stat(c, "key", "a", "benched quota wait=30000 req=1 ok=0 fail=1 skips=0");
    set_now(T0 + 5);
    r = send_body(c, BODY_M1);
    assert_attempts(r, "");
    assert_skips(r, "m1/key_benched/a/29995 m1/key_benched/b/29995");
    assert_answer(r, 429, "quota_exceeded");
    assert_retry_after(r, NULL, NULL);
    aigw_response_free(r);
    assert_calls("a@m1 b@m1");
    aigw_client_free(c);
}

/* ------------------------------------------------------------------------ */
/* 7. a backend's circuit breaker                                           */
/* ------------------------------------------------------------------------ */

static aigw_response *nested_resp;
static char nested_half_open[32];

/* Inside the probe's upstream call: another request on the same client
 * finds the probe out; the snapshot says half_open. */
static void nested_request_hook(void)
{
    aigw_stats *s = NULL;
    nested_resp = send_body(M.client, BODY_M1_M2);
    assert_int_equal(aigw_client_stats(M.client, &s), AIGW_OK);
    snprintf(nested_half_open, sizeof nested_half_open, "%s",
             find_stat(s, "backend", "fake:m1")->state);
    aigw_stats_free(s);
}

static void test_backend_breaker(void **state)
{
    aigw_client *c = client_for(
        STEP_A, "\"circuitBreaker\":{\"failures\":3,\"cooloff\":\"1s\"},\"sameBackendRetries\":0",
        NULL);
    aigw_response *r;
    int i;
    (void)state;

    /* three requests: the primary fails, the fallback model serves */
    for (i = 0; i < 3; i++) {
        set_now(T0 + 100 * i);
        push(500, SERVER_BODY);
        push(200, "{}");
        r = send_body(c, BODY_M1_M2);
        assert_attempts(r, "m1/a/500/next_backend m2/a/200/succeeded");
        assert_skips(r, "");
        assert_string_equal(aigw_response_model(r), "m2");
        aigw_response_free(r);
    }
    /* opened at T0+200 by the third failure */
    assert_stat(c, "backend", "fake:m1", "open server wait=1000 req=3 ok=0 fail=3 skips=0");

    set_now(T0 + 450);
    assert_sends_skips(c, BODY_M1_M2, "m2/a/200/succeeded", "m1/circuit_open//750");
    assert_calls("a@m1 a@m2 a@m1 a@m2 a@m1 a@m2 a@m2");

    /* one ms early: still open */
    set_now(T0 + 1199);
    assert_sends_skips(c, BODY_M1_M2, "m2/a/200/succeeded", "m1/circuit_open//1");

    /* at +1 s exactly one probe goes; it fails: open for another second */
    set_now(T0 + 1200);
    push(500, SERVER_BODY)->hook = nested_request_hook;
    push(200, "{}"); /* the nested request's fallback */
    push(200, "{}"); /* the probing request's fallback */
    assert_sends_skips(c, BODY_M1_M2, "m1/a/500/next_backend m2/a/200/succeeded", "");
    /* the request made while the probe was out did not probe; the wait it
     * names is a cool-off (the probe decides within about that) */
    assert_attempts(nested_resp, "m2/a/200/succeeded");
    assert_skips(nested_resp, "m1/circuit_open//1000");
    assert_string_equal(nested_half_open, "half_open");
    aigw_response_free(nested_resp);
    nested_resp = NULL;
    assert_stat(c, "backend", "fake:m1", "open server wait=1000 req=4 ok=0 fail=4 skips=3");

    set_now(T0 + 2199);
    assert_sends_skips(c, BODY_M1_M2, "m2/a/200/succeeded", "m1/circuit_open//1");

    /* the next probe succeeds: closed, and the primary serves again */
    set_now(T0 + 2200);
    assert_sends_skips(c, BODY_M1_M2, "m1/a/200/succeeded", "");
    assert_sends_skips(c, BODY_M1_M2, "m1/a/200/succeeded", "");
    assert_stat(c, "backend", "fake:m1", "closed - wait=0 req=6 ok=2 fail=4 skips=4");
    assert_calls("a@m1 a@m2 a@m1 a@m2 a@m1 a@m2 a@m2 a@m2 a@m1 a@m2 a@m2 a@m2 a@m1 a@m1");
    assert_int_equal(calls_of("a"), 14);
    assert_sleeps("");
    assert_now(T0 + 2200);
    aigw_client_free(c);
}

/* A probe that gets no HTTP answer says nothing of the endpoint: the probe
 * is released (half-open), never taken for a recovery. */
static void test_probe_without_answer_keeps_endpoint_suspect(void **state)
{
    aigw_client *c = client_for(STEP_A, "\"sameBackendRetries\":0,\"retryBudget\":false,"
                                        "\"circuitBreaker\":{\"failures\":2,\"cooloff\":\"5s\"}",
                                NULL);
    int i;
    (void)state;
    for (i = 0; i < 2; i++) {
        push(500, SERVER_BODY);
        assert_sends(c, BODY_M1, "m1/a/500/exhausted");
    }
    assert_stat(c, "endpoint", "a", "open server wait=5000 req=2 ok=0 fail=2 skips=0");
    set_now(T0 + 5000);
    push_tr(AIGW_TR_RESET, 0); /* the probe: reset, no answer */
    assert_sends(c, BODY_M1, "m1/a/reset/exhausted");
    /* still suspect: the next request probes again (the host heard the
     * reset), and its 500 re-opens the endpoint for a full cool-off */
    assert_stat(c, "endpoint", "a", "half_open server wait=0 req=3 ok=0 fail=3 skips=0");
    push(500, SERVER_BODY);
    assert_sends(c, BODY_M1, "m1/a/500/exhausted");
    assert_stat(c, "endpoint", "a", "open server wait=5000 req=4 ok=0 fail=4 skips=0");
    assert_calls("a@m1 a@m1 a@m1 a@m1");
    aigw_client_free(c);
}

/* The probe's own answer decides its breaker before the next move: a probe
 * answered 429 with a named wait closes it, so the same-backend retry may
 * wait for it. */
static void test_probe_answered_429_may_be_retried(void **state)
{
    aigw_client *c = client_for(STEP_A, "\"circuitBreaker\":{\"failures\":1,\"cooloff\":\"5s\"}",
                                NULL);
    aigw_response *r;
    (void)state;
    push(500, SERVER_BODY);
    push(500, SERVER_BODY);
    push(500, SERVER_BODY);
    r = send_body(c, BODY_M1);
    /* the first 500 opens the endpoint: no back-off is spent on it */
    assert_attempts(r, "m1/a/500/exhausted");
    assert_sleeps("");
    aigw_response_free(r);
    mock_rewind();
    set_now(T0 + 5000);
    push_h(429, "retry-after-ms", "300", RL_BODY);
    r = send_body(c, BODY_M1);
    assert_attempts(r, "m1/a/429/retry_same_backend m1/a/200/succeeded");
    assert_sleeps("300");
    aigw_response_free(r);
    aigw_client_free(c);
}

/* Model names that only ever fail fast (a 404) take no room among the
 * endpoints, whose cooldowns and breakers the policy relies on: that table
 * cannot be filled from request bodies that way (backends still count
 * every attempt, for the stats). */
static void test_fail_fast_models_take_no_endpoint(void **state)
{
    aigw_client *c = client_for(STEP_A, "", NULL);
    aigw_response *r;
    aigw_stats *s = NULL;
    char body[128], want[64];
    size_t i, n;
    (void)state;
    for (i = 0; i < 50; i++) {
        snprintf(body, sizeof body, "{\"model\":\"fake:junk-%zu\",\"messages\":[]}", i);
        snprintf(want, sizeof want, "junk-%zu/a/404/fail_fast", i);
        push(404, "{\"error\":{\"message\":\"The model does not exist\","
                  "\"code\":\"model_not_found\"}}");
        r = send_body(c, body);
        assert_attempts(r, want);
        aigw_response_free(r);
    }
    /* a real model's answer makes its entries */
    assert_sends(c, BODY_M1, "m1/a/200/succeeded");
    assert_int_equal(aigw_client_stats(c, &s), AIGW_OK);
    n = aigw_stats_count(s);
    for (i = 0; i < n; i++) {
        const aigw_stat *e = aigw_stats_at(s, i);
        if (strcmp(e->kind, "endpoint") == 0)
            assert_string_equal(e->model, "m1");
    }
    assert_string_equal(find_stat(s, "endpoint", "a")->model, "m1");
    assert_int_equal(find_stat(s, "key", "a")->requests, 51); /* the key counts them all */
    aigw_stats_free(s);
    aigw_client_free(c);
}

/* One skip stands for a candidate's keys only when the walk saw them all:
 * when the retry budget ends the request after a's endpoint was skipped,
 * the skip stays a's, and the backend is not counted as skipped. */
static void test_no_backend_skip_from_a_walk_cut_short(void **state)
{
    aigw_client *c = client_for(STEP_AB, "\"sameBackendRetries\":0,"
                                         "\"circuitBreaker\":{\"failures\":1,\"cooloff\":\"5s\"},"
                                         "\"retryBudget\":{\"percent\":0,\"minPerSecond\":0}",
                                NULL);
    aigw_response *r;
    (void)state;
    push(500, SERVER_BODY); /* opens a's endpoint; the budget refuses b */
    r = send_body(c, BODY_M1);
    assert_attempts(r, "m1/a/500/exhausted");
    assert_answer(r, 503, "retry_budget_exhausted");
    aigw_response_free(r);
    push(500, SERVER_BODY);
    r = send_body(c, "{\"model\":\"other:m9\",\"models\":[\"fake:m1\"],\"messages\":[]}");
    assert_attempts(r, "m9/d/500/exhausted");
    assert_skips(r, "m1/circuit_open/a/5000");
    assert_answer(r, 503, "retry_budget_exhausted");
    aigw_response_free(r);
    /* no skip counted for the backend (its state is what its endpoints
     * show: only a's, open) */
    assert_stat(c, "backend", "fake:m1", "open server wait=5000 req=1 ok=0 fail=1 skips=0");
    assert_calls("a@m1 d@m9");
    aigw_client_free(c);
}

static void test_every_circuit_open_503(void **state)
{
    aigw_client *c = client_for(
        STEP_A, "\"circuitBreaker\":{\"failures\":1,\"cooloff\":\"1s\"},\"sameBackendRetries\":0",
        NULL);
    aigw_response *r;
    (void)state;
    push(500, SERVER_BODY);
    push(500, SERVER_BODY)->takes_ms = 100;
    r = send_body(c, BODY_M1_M2);
    assert_attempts(r, "m1/a/500/next_backend m2/a/500/exhausted");
    assert_answer(r, 502, "upstream_error");
    aigw_response_free(r);

    set_now(T0 + 200);
    r = send_body(c, BODY_M1_M2);
    assert_attempts(r, "");
    assert_skips(r, "m1/circuit_open//800 m2/circuit_open//900");
    assert_answer(r, 503, "circuit_open");
    assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_EXHAUSTED);
    assert_retry_after(r, "1", "800");
    aigw_response_free(r);
    assert_calls("a@m1 a@m2");

    /* aigw_client_reset_health(c, NULL) closes every breaker */
    assert_int_equal(aigw_client_reset_health(c, NULL), AIGW_OK);
    assert_stat(c, "backend", "fake:m1", "closed - wait=0 req=1 ok=0 fail=1 skips=1");
    assert_sends_skips(c, BODY_M1_M2, "m1/a/200/succeeded", "");
    assert_calls("a@m1 a@m2 a@m1");
    assert_sleeps("");
    assert_now(T0 + 200);
    aigw_client_free(c);
}

/* ------------------------------------------------------------------------ */
/* 8. a host's circuit breaker                                              */
/* ------------------------------------------------------------------------ */

/* An ngrok step serves built-in providers only: openai, its base URL
 * overridden to :9; the ngrok gateway on :6. */
static const char CFG_OPENAI_NGROK[] =
    "{\"providers\":[{\"providerId\":\"openai\",\"name\":\"OpenAI\","
    "\"baseUrl\":\"http://127.0.0.1:9/v1\"}],"
    "\"providerKeys\":[{\"id\":\"a\",\"providerId\":\"openai\",\"value\":\"sk-a\"}],"
    "\"accessKeyConfiguration\":{\"name\":\"t\",\"router\":{\"rules\":[{\"provider\":\"openai\","
    "\"steps\":[" STEP_A ",{\"type\":\"ngrok\"}]}]}},"
    "\"gatewayConfig\":{\"circuitBreaker\":{\"failures\":2,\"cooloff\":\"1s\"}}," NGROK "}";

static const char *BODY_GPT = "{\"model\":\"openai:gpt-4o\"}";

static void test_host_breaker_next_step_ngrok(void **state)
{
    aigw_config *cfg = config_from_json(CFG_OPENAI_NGROK);
    aigw_client *c = client_on_mock(cfg);
    aigw_response *r;
    (void)state;
    aigw_config_unref(cfg);
    /* two connection failures to :9; ngrok's gateway (:6) serves */
    push_tr(AIGW_TR_CONNECT, 0);
    push(200, "{}");
    r = send_body(c, BODY_GPT);
    assert_attempts(r, "gpt-4o/a/connect/managed_fallback gpt-4o/ngrok/200/succeeded");
    assert_string_equal(aigw_attempt_error_class(aigw_response_attempt(r, 0)), "network");
    aigw_response_free(r);
    set_now(T0 + 100);
    push_tr(AIGW_TR_CONNECT, 0);
    push(200, "{}");
    assert_sends(c, BODY_GPT, "gpt-4o/a/connect/managed_fallback gpt-4o/ngrok/200/succeeded");
    assert_stat(c, "host", "http://127.0.0.1:9", "open network wait=1000 req=2 ok=0 fail=2 skips=0");
    /* the ngrok successes kept the backend's count below its threshold */
    assert_stat(c, "backend", "openai:gpt-4o", "closed - wait=0 req=4 ok=2 fail=2 skips=0");

    /* the step on the dead host is skipped; the request goes on */
    set_now(T0 + 300);
    r = send_body(c, BODY_GPT);
    assert_attempts(r, "gpt-4o/ngrok/200/succeeded");
    assert_skips(r, "gpt-4o/host_circuit_open//800");
    assert_answer(r, 200, NULL);
    aigw_response_free(r);
    assert_calls("a@gpt-4o ngrok@openai:gpt-4o a@gpt-4o ngrok@openai:gpt-4o ngrok@openai:gpt-4o");
    assert_string_equal(M.urls[0], "http://127.0.0.1:9/v1/chat/completions");
    assert_string_equal(M.urls[4], "http://127.0.0.1:6/v1/chat/completions");
    assert_stat(c, "host", "http://127.0.0.1:9", "open network wait=800 req=2 ok=0 fail=2 skips=1");

    /* after the cooloff one probe goes to :9 and closes it */
    set_now(T0 + 1100);
    assert_sends_skips(c, BODY_GPT, "gpt-4o/a/200/succeeded", "");
    assert_stat(c, "host", "http://127.0.0.1:9", "closed - wait=0 req=3 ok=1 fail=2 skips=1");
    assert_stat(c, "host", "http://127.0.0.1:6", "closed - wait=0 req=3 ok=3 fail=0 skips=0");
    /* the ngrok key's health is kept per provider it reached */
    assert_stat(c, "key", "ngrok", "ready - wait=0 req=3 ok=3 fail=0 skips=0");
    {
        aigw_stats *s = NULL;
        assert_int_equal(aigw_client_stats(c, &s), AIGW_OK);
        assert_string_equal(find_stat(s, "key", "ngrok")->provider, "openai");
        aigw_stats_free(s);
    }
    assert_sleeps("");
    aigw_client_free(c);
}

static void test_host_breaker_other_provider(void **state)
{
    aigw_client *c = client_for(STEP_A, "\"circuitBreaker\":{\"failures\":1,\"cooloff\":\"1s\"}",
                                NULL);
    (void)state;
    push_tr(AIGW_TR_CONNECT, 0);
    assert_sends(c, BODY_M1_M9, "m1/a/connect/next_backend m9/d/200/succeeded");

    /* another model on the same dead host: its step is skipped, the other
     * provider's host serves */
    set_now(T0 + 10);
    assert_sends_skips(c, BODY_M2_M9, "m9/d/200/succeeded", "m2/host_circuit_open//990");

    /* the model that failed: a refused connection says nothing of the
     * endpoint (a key with m1), only of the host, which skips it too */
    assert_sends_skips(c, BODY_M1_M9, "m9/d/200/succeeded", "m1/host_circuit_open//990");
    assert_calls("a@m1 d@m9 d@m9 d@m9");
    assert_string_equal(M.urls[1], "http://127.0.0.1:8/v1/chat/completions");
    assert_sleeps("");
    aigw_client_free(c);
}

/* ------------------------------------------------------------------------ */
/* 9. the retry budget                                                      */
/* ------------------------------------------------------------------------ */

#define GW_BUDGET                                                                          \
    "\"retryBudget\":{\"percent\":0,\"minPerSecond\":1,\"window\":\"10s\"},"               \
    "\"sameBackendRetries\":0,\"circuitBreaker\":false"

static void test_retry_budget(void **state)
{
    aigw_client *c = client_for(STEP_AB, GW_BUDGET, NULL);
    aigw_response *r;
    int i;
    (void)state;
    /* the floor: 1/s over 10 s = 10 retries */
    for (i = 0; i < 10; i++) {
        push(500, SERVER_BODY);
        push(500, SERVER_BODY);
        r = send_body(c, BODY_M1);
        assert_attempts(r, "m1/a/500/next_key m1/b/500/exhausted");
        assert_answer(r, 502, "upstream_error");
        aigw_response_free(r);
    }
    assert_budget(c, "requests=10 retries=10 denied=0 available=0");

    push(500, SERVER_BODY);
    r = send_body(c, BODY_M1);
    assert_attempts(r, "m1/a/500/exhausted");
    assert_answer(r, 503, "retry_budget_exhausted");
    aigw_response_free(r);
    assert_budget(c, "requests=11 retries=10 denied=1 available=0");
    assert_int_equal(calls_of("a"), 11);
    assert_int_equal(calls_of("b"), 10);

    /* moving past a rate-limited key is not a retry: served even now */
    push(429, RL_BODY);
    r = send_body(c, BODY_M1);
    assert_attempts(r, "m1/a/429/next_key m1/b/200/succeeded");
    assert_answer(r, 200, NULL);
    aigw_response_free(r);
    assert_budget(c, "requests=12 retries=10 denied=1 available=0");

    /* one ms before the window has passed: still spent */
    set_now(T0 + 9999);
    push(500, SERVER_BODY);
    r = send_body(c, BODY_M1);
    assert_attempts(r, "m1/a/500/exhausted");
    assert_answer(r, 503, "retry_budget_exhausted");
    aigw_response_free(r);

    /* the window has passed: retries again */
    set_now(T0 + 10000);
    push(500, SERVER_BODY);
    push(500, SERVER_BODY);
    r = send_body(c, BODY_M1);
    assert_attempts(r, "m1/a/500/next_key m1/b/500/exhausted");
    assert_answer(r, 502, "upstream_error");
    aigw_response_free(r);
    assert_budget(c, "requests=14 retries=11 denied=2 available=9");
    assert_int_equal(M.n_calls, 10 * 2 + 1 + 2 + 1 + 2);
    assert_sleeps("");
    aigw_client_free(c);

    /* a 429 then a served request: nothing charged */
    mock_reset(KEY_PREFIX);
    c = client_for(STEP_AB, GW_BUDGET, NULL);
    push(429, RL_BODY);
    assert_sends(c, BODY_M1, "m1/a/429/next_key m1/b/200/succeeded");
    assert_budget(c, "requests=1 retries=0 denied=0 available=10");
    aigw_client_free(c);
}

/* ------------------------------------------------------------------------ */
/* 10. the snapshot agrees with what the responses recorded                 */
/* ------------------------------------------------------------------------ */

typedef struct tally {
    const char *key;
    unsigned long requests, successes, failures, skips;
} tally;

static void tally_response(const aigw_response *r, tally *t, size_t n)
{
    size_t i, k;
    for (i = 0; i < aigw_response_attempt_count(r); i++) {
        const aigw_attempt *a = aigw_response_attempt(r, i);
        for (k = 0; k < n; k++)
            if (strcmp(aigw_attempt_key_id(a), t[k].key) == 0) {
                t[k].requests++;
                if (aigw_attempt_error_class(a))
                    t[k].failures++;
                else
                    t[k].successes++;
            }
    }
    for (i = 0; i < aigw_response_skip_count(r); i++)
        for (k = 0; k < n; k++)
            if (strcmp(aigw_response_skip_key_id(r, i), t[k].key) == 0)
                t[k].skips++;
}

static const char STATS_JSON[] =
    "{\"keys\":["
    "{\"provider\":\"fake\",\"id\":\"a\",\"state\":\"ready\",\"reason\":null,"
    "\"waitMs\":0,\"requests\":1,\"successes\":0,\"failures\":1,"
    "\"failuresByClass\":{\"rate_limit\":1},\"skips\":2,\"latencyMs\":{\"count\":0,"
    "\"mean\":null,\"p50\":null,\"p90\":null,\"p99\":null,\"max\":null}},"
    "{\"provider\":\"fake\",\"id\":\"b\",\"state\":\"benched\",\"reason\":\"auth\","
    "\"waitMs\":3599500,\"requests\":3,\"successes\":1,\"failures\":2,"
    "\"failuresByClass\":{\"auth\":1,\"server\":1},\"skips\":0,\"latencyMs\":{\"count\":1,"
    "\"mean\":30,\"p50\":30,\"p90\":30,\"p99\":30,\"max\":30}},"
    "{\"provider\":\"fake\",\"id\":\"c\",\"state\":\"ready\",\"reason\":null,"
    "\"waitMs\":0,\"requests\":0,\"successes\":0,\"failures\":0,"
    "\"failuresByClass\":{},\"skips\":0,\"latencyMs\":{\"count\":0,"
    "\"mean\":null,\"p50\":null,\"p90\":null,\"p99\":null,\"max\":null}},"
    "{\"provider\":\"other\",\"id\":\"d\",\"state\":\"ready\",\"reason\":null,"
    "\"waitMs\":0,\"requests\":2,\"successes\":2,\"failures\":0,"
    "\"failuresByClass\":{},\"skips\":0,\"latencyMs\":{\"count\":2,"
    "\"mean\":15,\"p50\":10,\"p90\":20,\"p99\":20,\"max\":20}}],"
    /* a key with one model: a cools for m1 (rate limits are per model) */
    "\"endpoints\":["
    "{\"provider\":\"fake\",\"id\":\"a\",\"model\":\"m1\",\"state\":\"cooling\","
    "\"reason\":\"rate_limit\",\"waitMs\":3000,\"requests\":1,\"successes\":0,\"failures\":1,"
    "\"failuresByClass\":{\"rate_limit\":1},\"skips\":2,\"latencyMs\":{\"count\":0,"
    "\"mean\":null,\"p50\":null,\"p90\":null,\"p99\":null,\"max\":null}},"
    "{\"provider\":\"fake\",\"id\":\"b\",\"model\":\"m1\",\"state\":\"benched\","
    "\"reason\":\"auth\",\"waitMs\":3599500,\"requests\":3,\"successes\":1,\"failures\":2,"
    "\"failuresByClass\":{\"auth\":1,\"server\":1},\"skips\":0,\"latencyMs\":{\"count\":1,"
    "\"mean\":30,\"p50\":30,\"p90\":30,\"p99\":30,\"max\":30}},"
    "{\"provider\":\"other\",\"id\":\"d\",\"model\":\"m9\",\"state\":\"ready\","
    "\"reason\":null,\"waitMs\":0,\"requests\":2,\"successes\":2,\"failures\":0,"
    "\"failuresByClass\":{},\"skips\":0,\"latencyMs\":{\"count\":2,"
    "\"mean\":15,\"p50\":10,\"p90\":20,\"p99\":20,\"max\":20}}],"
    "\"backends\":["
    "{\"provider\":\"fake\",\"model\":\"m1\",\"state\":\"closed\",\"reason\":null,"
    "\"waitMs\":0,\"requests\":4,\"successes\":1,\"failures\":3,"
    "\"failuresByClass\":{\"auth\":1,\"rate_limit\":1,\"server\":1},\"skips\":0,"
    "\"latencyMs\":{\"count\":1,\"mean\":30,\"p50\":30,\"p90\":30,\"p99\":30,\"max\":30}},"
    "{\"provider\":\"other\",\"model\":\"m9\",\"state\":\"closed\",\"reason\":null,"
    "\"waitMs\":0,\"requests\":2,\"successes\":2,\"failures\":0,"
    "\"failuresByClass\":{},\"skips\":0,\"latencyMs\":{\"count\":2,"
    "\"mean\":15,\"p50\":10,\"p90\":20,\"p99\":20,\"max\":20}}],"
    "\"hosts\":["
    "{\"host\":\"http://127.0.0.1:9\",\"state\":\"closed\",\"reason\":null,"
    "\"waitMs\":0,\"requests\":4,\"successes\":4,\"failures\":0,"
    "\"failuresByClass\":{},\"skips\":0,\"latencyMs\":{\"count\":1,"
    "\"mean\":30,\"p50\":30,\"p90\":30,\"p99\":30,\"max\":30}},"
    "{\"host\":\"http://127.0.0.1:8\",\"state\":\"closed\",\"reason\":null,"
    "\"waitMs\":0,\"requests\":2,\"successes\":2,\"failures\":0,"
    "\"failuresByClass\":{},\"skips\":0,\"latencyMs\":{\"count\":2,"
    "\"mean\":15,\"p50\":10,\"p90\":20,\"p99\":20,\"max\":20}}],"
    "\"healthStore\":{\"kind\":\"local\",\"state\":\"ok\"},"
    "\"retryBudget\":{\"enabled\":true,\"percent\":20,\"minPerSecond\":10,\"windowMs\":10000,"
    "\"requests\":3,\"retries\":1,\"denied\":0,\"available\":99}}";

static void test_stats_match_responses(void **state)
{
    aigw_client *c = client_for(STEP_AB, "\"sameBackendRetries\":0", NULL);
    aigw_response *r;
    aigw_stats *s = NULL;
    tally t[] = {{"a", 0, 0, 0, 0}, {"b", 0, 0, 0, 0}, {"c", 0, 0, 0, 0}, {"d", 0, 0, 0, 0}};
    const size_t nt = sizeof t / sizeof t[0];
    size_t k;
    uint64_t req, ret, den;
    int64_t avail;
    (void)state;

    /* a rate limited for 5 s; b serves in 30 ms */
    push_h(429, "retry-after-ms", "5000", RL_BODY);
    push(200, "{}")->takes_ms = 30;
    r = send_body(c, BODY_M1_M9);
    assert_attempts(r, "m1/a/429/next_key m1/b/200/succeeded");
    tally_response(r, t, nt);
    aigw_response_free(r);

    /* a skipped; b a server error; the fallback model's d serves in 20 ms */
    set_now(T0 + 1000);
    push(500, SERVER_BODY);
    push(200, "{}")->takes_ms = 20;
    r = send_body(c, BODY_M1_M9);
    assert_attempts(r, "m1/b/500/next_backend m9/d/200/succeeded");
    assert_skips(r, "m1/key_cooling/a/4000");
    tally_response(r, t, nt);
    aigw_response_free(r);

    /* a skipped; b fails auth (benched for 1 h); d serves in 10 ms */
    set_now(T0 + 1500);
    push(401, AUTH_BODY);
    push(200, "{}")->takes_ms = 10;
    r = send_body(c, BODY_M1_M9);
    assert_attempts(r, "m1/b/401/next_backend m9/d/200/succeeded");
    assert_skips(r, "m1/key_cooling/a/3500");
    tally_response(r, t, nt);
    aigw_response_free(r);
    assert_now(T0 + 1510);

    set_now(T0 + 2000);
    assert_int_equal(aigw_client_stats(c, &s), AIGW_OK);
    /* every key of the configuration, then backends, hosts, endpoints */
    assert_int_equal(aigw_stats_count(s), 4 + 2 + 2 + 3);
    for (k = 0; k < nt; k++) {
        const aigw_stat *e = aigw_stats_at(s, k);
        assert_string_equal(e->kind, "key");
        assert_string_equal(e->name, t[k].key);
        assert_int_equal(e->requests, t[k].requests);
        assert_int_equal(e->successes, t[k].successes);
        assert_int_equal(e->failures, t[k].failures);
        assert_int_equal(e->skips, t[k].skips);
    }
    {
        const aigw_stat *a = aigw_stats_at(s, 0), *b = aigw_stats_at(s, 1);
        const aigw_stat *d = aigw_stats_at(s, 3), *be = aigw_stats_at(s, 4);
        const aigw_stat *am1 = aigw_stats_at(s, 8);
        assert_string_equal(a->state, "ready"); /* the key; it cools for m1 */
        assert_string_equal(am1->kind, "endpoint");
        assert_string_equal(am1->name, "a");
        assert_string_equal(am1->model, "m1");
        assert_string_equal(am1->state, "cooling");
        assert_string_equal(am1->reason, "rate_limit");
        assert_int_equal(am1->wait_ms, 3000); /* limited at T0 for 5000 ms */
        assert_int_equal(am1->skips, 2);
        assert_int_equal(a->requests, 1);
        assert_int_equal(a->skips, 2);
        assert_int_equal(aigw_stat_failures(a, "rate_limit"), 1);
        assert_string_equal(b->state, "benched");
        assert_string_equal(b->reason, "auth");
        assert_int_equal(b->wait_ms, 3600000 - 500); /* benched at T0+1500 */
        assert_int_equal(b->requests, 3);
        assert_int_equal(b->successes, 1);
        assert_int_equal(b->failures, 2);
        assert_int_equal(aigw_stat_failures(b, "server"), 1);
        assert_int_equal(aigw_stat_failures(b, "auth"), 1);
        assert_int_equal(aigw_stat_failures(b, "rate_limit"), 0);
        assert_int_equal(aigw_stat_failures(b, "no_such_class"), 0);
        assert_int_equal(b->latency_count, 1);
        assert_int_equal(b->latency_mean_ms, 30);
        assert_int_equal(b->latency_max_ms, 30);
        assert_int_equal(d->latency_count, 2);
        assert_int_equal(d->latency_mean_ms, 15);
        assert_int_equal(d->latency_max_ms, 20);
        assert_string_equal(be->kind, "backend");
        assert_string_equal(be->name, "fake:m1");
        assert_string_equal(be->provider, "fake");
        assert_string_equal(be->model, "m1");
        assert_int_equal(be->requests, 4);
        assert_int_equal(be->successes, 1);
        assert_int_equal(be->failures, 3);
        assert_int_equal(aigw_stat_failures(be, "rate_limit"), 1);
        assert_int_equal(aigw_stat_failures(be, "server"), 1);
        assert_int_equal(aigw_stat_failures(be, "auth"), 1);
        assert_string_equal(aigw_stats_at(s, 5)->name, "other:m9");
        assert_string_equal(aigw_stats_at(s, 6)->kind, "host");
        assert_string_equal(aigw_stats_at(s, 6)->name, "http://127.0.0.1:9");
        assert_string_equal(aigw_stats_at(s, 7)->name, "http://127.0.0.1:8");
    }
    aigw_stats_budget(s, &req, &ret, &den, &avail);
    assert_int_equal(req, 3);
    assert_int_equal(ret, 1); /* d after b's 500; d after b's 401 is not charged */
    assert_int_equal(den, 0);
    assert_int_equal(avail, 99);
    {
        /* with a health store (AIGW_TEST_HEALTH_STORE), its own member differs */
        const char *j = aigw_stats_json(s), *hs = strstr(j, ",\"healthStore\":{");
        const char *end = hs ? strstr(hs, "},\"retryBudget\"") : NULL;
        char got[sizeof STATS_JSON + 512];
        assert_non_null(end);
        snprintf(got, sizeof got, "%.*s,\"healthStore\":{\"kind\":\"local\",\"state\":\"ok\"%s",
                 (int)(hs - j), j, end);
        assert_string_equal(got, STATS_JSON);
    }
    aigw_stats_free(s);
    assert_calls("a@m1 b@m1 b@m1 d@m9 b@m1 d@m9");
    assert_sleeps("");
    aigw_client_free(c);
}

/* ------------------------------------------------------------------------ */
/* 11. strategies through the engine                                        */
/* ------------------------------------------------------------------------ */

static void test_round_robin_with_cooling_key(void **state)
{
    aigw_client *c = client_for(STEP_S("round-robin", K("a") "," K("b") "," K("c")),
                                "\"sameBackendRetries\":0", NULL);
    aigw_response *r;
    (void)state;
    /* turn 0: a b c */
    assert_sends(c, BODY_M1, "m1/a/200/succeeded");
    /* turn 1: b c a; b is rate limited for a minute */
    push_h(429, "retry-after-ms", "60000", RL_BODY);
    assert_sends_skips(c, BODY_M1, "m1/b/429/next_key m1/c/200/succeeded", "");

    /* turns 2..5: the ready keys a, c alternate; b sorts last and the walk
     * never reaches it, so no skip is recorded */
    set_now(T0 + 10);
    assert_sends_skips(c, BODY_M1, "m1/a/200/succeeded", "");
    assert_sends_skips(c, BODY_M1, "m1/c/200/succeeded", "");
    assert_sends(c, BODY_M1, "m1/a/200/succeeded");
    assert_sends(c, BODY_M1, "m1/c/200/succeeded");
    assert_calls("a@m1 b@m1 c@m1 a@m1 c@m1 a@m1 c@m1");

    /* turn 6 (a c b): a and c fail; b, still cooling and last, is not
     * tried; the walk ends at c, before reaching it: no skip recorded */
    push(500, SERVER_BODY);
    push(500, SERVER_BODY);
    assert_sends_skips(c, BODY_M1, "m1/a/500/next_key m1/c/500/exhausted", "");
    /* the key is ready; it cools for the model that was limited */
    assert_stat(c, "key", "b", "ready - wait=0 req=1 ok=0 fail=1 skips=0");
    assert_stat(c, "endpoint", "b", "cooling rate_limit wait=59990 req=1 ok=0 fail=1 skips=0");

    /* turn 7 (c a b): c and a rate limited for a minute too */
    push_h(429, "retry-after-ms", "60000", RL_BODY);
    push_h(429, "retry-after-ms", "60000", RL_BODY);
    r = send_body(c, BODY_M1);
    assert_attempts(r, "m1/c/429/next_key m1/a/429/exhausted");
    assert_answer(r, 429, "rate_limited");
    aigw_response_free(r);
    /* every key cooling: each is recorded, in configuration order */
    r = send_body(c, BODY_M1);
    assert_attempts(r, "");
    assert_skips(r, "m1/key_cooling/a/60000 m1/key_cooling/b/59990 m1/key_cooling/c/60000");
    assert_answer(r, 429, "rate_limited");
    aigw_response_free(r);
    assert_int_equal(calls_of("b"), 1);
    assert_sleeps("");
    aigw_client_free(c);

    /* ordered, by contrast, keeps b in place: the walk steps over it to
     * reach c, and records the skip between the two attempts */
    mock_reset(KEY_PREFIX);
    c = client_for(STEP_ABC, "\"sameBackendRetries\":0", NULL);
    push(500, SERVER_BODY);
    push_h(429, "retry-after-ms", "60000", RL_BODY);
    assert_sends(c, BODY_M1, "m1/a/500/next_key m1/b/429/next_key m1/c/200/succeeded");
    set_now(T0 + 10);
    push(500, SERVER_BODY);
    assert_sends_skips(c, BODY_M1,
                       "m1/a/500/next_key m1/c/200/succeeded", "m1/key_cooling/b/59990");
    assert_calls("a@m1 b@m1 c@m1 a@m1 c@m1");
    /* the key is ready; it cools for the model that was limited */
    assert_stat(c, "key", "b", "ready - wait=0 req=1 ok=0 fail=1 skips=1");
    assert_stat(c, "endpoint", "b", "cooling rate_limit wait=59990 req=1 ok=0 fail=1 skips=1");
    aigw_client_free(c);
}

static void test_least_recently_limited(void **state)
{
    aigw_client *c = client_for(STEP_S("least-recently-limited", K("a") "," K("b") "," K("c")),
                                "\"sameBackendRetries\":0", NULL);
    aigw_response *r;
    (void)state;
    /* never limited: configuration order; a limited at T0, b at T0+5 */
    push_h(429, "retry-after-ms", "10", RL_BODY);
    push_h(429, "retry-after-ms", "10", RL_BODY)->takes_ms = 5;
    assert_sends(c, BODY_M1, "m1/a/429/next_key m1/b/429/next_key m1/c/200/succeeded");

    /* all ready: c (never limited), then a (100 ms ago), then b (95) */
    set_now(T0 + 100);
    push_h(429, "retry-after-ms", "10", RL_BODY);
    push_h(429, "retry-after-ms", "10", RL_BODY);
    assert_sends(c, BODY_M1, "m1/c/429/next_key m1/a/429/next_key m1/b/200/succeeded");

    /* b (195 ms ago) first; a and c (both 100) in configuration order */
    set_now(T0 + 200);
    push_h(429, "retry-after-ms", "10", RL_BODY);
    push_h(429, "retry-after-ms", "10", RL_BODY);
    assert_sends(c, BODY_M1, "m1/b/429/next_key m1/a/429/next_key m1/c/200/succeeded");

    /* now a T0+200, b T0+200, c T0+100: c, then a and b in configuration
     * order; c cools for a minute, a and b for 10 ms */
    set_now(T0 + 300);
    push_h(429, "retry-after-ms", "60000", RL_BODY);
    push_h(429, "retry-after-ms", "10", RL_BODY)->takes_ms = 5;
    push_h(429, "retry-after-ms", "10", RL_BODY)->takes_ms = 5;
    r = send_body(c, BODY_M1);
    assert_attempts(r, "m1/c/429/next_key m1/a/429/next_key m1/b/429/exhausted");
    assert_answer(r, 429, "rate_limited");
    aigw_response_free(r);

    /* c was limited longest ago (100 ms; a 95, b 90) but is still cooling:
     * it comes after the ready keys, and a serves */
    set_now(T0 + 400);
    assert_sends_skips(c, BODY_M1, "m1/a/200/succeeded", "");
    assert_calls("a@m1 b@m1 c@m1 c@m1 a@m1 b@m1 b@m1 a@m1 c@m1 c@m1 a@m1 b@m1 a@m1");
    assert_sleeps("");
    aigw_client_free(c);
}

/* A version 2 strategy: captures what it sees, returns the given order. */
typedef struct seen_key {
    char id[8];
    aigw_key_state state;
    int64_t wait_ms, since_limited_ms, latency_mean_ms;
    uint32_t weight;
    uint64_t requests, successes, failures;
} seen_key;

typedef struct strat_ud {
    int calls;
    char provider[16], model[16];
    size_t step, n;
    seen_key keys[4];
    char v1_ids[32];             /* v1: the ids it was passed, comma-separated */
    size_t order[4];
    int n_order;
    int destroyed;
} strat_ud;

static int order_v2(void *ud, const char *provider, const char *model, size_t step,
                    const aigw_key_health *const *keys, size_t n, size_t *order)
{
    strat_ud *s = ud;
    size_t i;
    s->calls++;
    snprintf(s->provider, sizeof s->provider, "%s", provider);
    snprintf(s->model, sizeof s->model, "%s", model);
    s->step = step;
    s->n = n;
    for (i = 0; i < n && i < 4; i++) {
        seen_key *k = &s->keys[i];
        snprintf(k->id, sizeof k->id, "%s", keys[i]->id);
        k->state = keys[i]->state;
        k->wait_ms = keys[i]->wait_ms;
        k->since_limited_ms = keys[i]->since_limited_ms;
        k->latency_mean_ms = keys[i]->latency_mean_ms;
        k->weight = keys[i]->weight;
        k->requests = keys[i]->requests;
        k->successes = keys[i]->successes;
        k->failures = keys[i]->failures;
    }
    for (i = 0; i < (size_t)s->n_order; i++)
        order[i] = s->order[i];
    return s->n_order;
}

static int order_v1(void *ud, const char *provider, const char *model, size_t step,
                    const char *const *ids, size_t n, size_t *order)
{
    strat_ud *s = ud;
    size_t i;
    (void)provider;
    (void)model;
    (void)step;
    s->calls++;
    s->v1_ids[0] = '\0';
    for (i = 0; i < n; i++) {
        size_t l = strlen(s->v1_ids);
        snprintf(s->v1_ids + l, sizeof s->v1_ids - l, "%s%s", i ? "," : "", ids[i]);
    }
    for (i = 0; i < n; i++)
        order[i] = n - 1 - i; /* reversed */
    return (int)n;
}

static void strat_destroy(void *ud)
{
    ((strat_ud *)ud)->destroyed++;
}

static void assert_seen(const seen_key *k, const char *id, aigw_key_state st, int64_t wait,
                        int64_t since, uint32_t weight, uint64_t req, uint64_t ok,
                        uint64_t fail, int64_t lat)
{
    assert_string_equal(k->id, id);
    assert_int_equal(k->state, st);
    assert_int_equal(k->wait_ms, wait);
    assert_int_equal(k->since_limited_ms, since);
    assert_int_equal(k->weight, weight);
    assert_int_equal(k->requests, req);
    assert_int_equal(k->successes, ok);
    assert_int_equal(k->failures, fail);
    assert_int_equal(k->latency_mean_ms, lat);
}

static void test_user_strategy_v2_sees_health(void **state)
{
    aigw_client *c = client_for(STEP(K("a") "," K("b") ",{\"id\":\"c\",\"weight\":3}"), "", NULL);
    aigw_strategy st = {2, NULL, strat_destroy, order_v2};
    strat_ud ud;
    aigw_response *r;
    (void)state;
    memset(&ud, 0, sizeof ud);
    ud.order[0] = 0;
    ud.order[1] = 1;
    ud.order[2] = 2;
    ud.n_order = 3;
    assert_int_equal(aigw_client_set_strategy(c, &st, &ud), AIGW_OK);

    push_h(429, "retry-after-ms", "2000", RL_BODY);
    push(401, AUTH_BODY);
    push(200, "{}")->takes_ms = 40;
    assert_sends(c, BODY_M1, "m1/a/429/next_key m1/b/401/next_key m1/c/200/succeeded");
    assert_int_equal(ud.calls, 1);
    assert_string_equal(ud.provider, "fake");
    assert_string_equal(ud.model, "m1");
    assert_int_equal(ud.step, 0);
    assert_int_equal(ud.n, 3);
    assert_seen(&ud.keys[0], "a", AIGW_KEY_READY, 0, -1, 1, 0, 0, 0, -1);
    assert_seen(&ud.keys[1], "b", AIGW_KEY_READY, 0, -1, 1, 0, 0, 0, -1);
    assert_seen(&ud.keys[2], "c", AIGW_KEY_READY, 0, -1, 3, 0, 0, 0, -1);

    /* 500 ms on: a cooling (limited at T0 for 2 s), b benched (1 h, at T0),
     * c served once in 40 ms */
    set_now(T0 + 500);
    r = send_body(c, BODY_M1);
    assert_int_equal(ud.calls, 2);
    assert_seen(&ud.keys[0], "a", AIGW_KEY_COOLING, 1500, 500, 1, 1, 0, 1, -1);
    assert_seen(&ud.keys[1], "b", AIGW_KEY_BENCHED, 3600000 - 500, -1, 1, 1, 0, 1, -1);
    assert_seen(&ud.keys[2], "c", AIGW_KEY_READY, 0, -1, 3, 1, 1, 0, 40);
    /* whatever the order, keys that are not ready are skipped */
    assert_attempts(r, "m1/c/200/succeeded");
    assert_skips(r, "m1/key_cooling/a/1500 m1/key_benched/b/3599500");
    aigw_response_free(r);

    /* the strategy puts c first: nothing is skipped */
    ud.order[0] = 2;
    ud.order[1] = 0;
    ud.order[2] = 1;
    set_now(T0 + 2000);
    r = send_body(c, BODY_M1);
    assert_int_equal(ud.calls, 3);
    /* a's cooldown ended exactly now; since_limited counts on */
    assert_seen(&ud.keys[0], "a", AIGW_KEY_READY, 0, 2000, 1, 1, 0, 1, -1);
    assert_seen(&ud.keys[2], "c", AIGW_KEY_READY, 0, -1, 3, 2, 2, 0, 20);
    assert_attempts(r, "m1/c/200/succeeded");
    assert_skips(r, "");
    aigw_response_free(r);
    assert_calls("a@m1 b@m1 c@m1 c@m1 c@m1");
    aigw_client_free(c);
    assert_int_equal(ud.destroyed, 1);
}

static void test_user_strategy_v1_still_works(void **state)
{
    aigw_client *c = client_for(STEP_AB, "", NULL);
    aigw_strategy st = {1, order_v1, strat_destroy, NULL};
    strat_ud ud;
    (void)state;
    memset(&ud, 0, sizeof ud);
    assert_int_equal(aigw_client_set_strategy(c, &st, &ud), AIGW_OK);
    push_h(429, "retry-after-ms", "1000", RL_BODY);
    assert_sends(c, BODY_M1, "m1/b/429/next_key m1/a/200/succeeded");
    assert_string_equal(ud.v1_ids, "a,b");

    set_now(T0 + 10);
    assert_sends_skips(c, BODY_M1, "m1/a/200/succeeded", "m1/key_cooling/b/990");
    assert_int_equal(ud.calls, 2);
    assert_calls("b@m1 a@m1 a@m1");
    aigw_client_free(c);
    assert_int_equal(ud.destroyed, 1);
}

/* ------------------------------------------------------------------------ */
/* 12. hot swap                                                             */
/* ------------------------------------------------------------------------ */

static void test_hot_swap_carries_cooldown(void **state)
{
    aigw_config *cfg1 = make_cfg(STEP_AB, "", NULL);
    aigw_config *cfg2 = make_cfg(STEP_AB, "", NULL); /* the same keys, a new object */
    aigw_config *cfg3;
    aigw_client *c = client_on_mock(cfg1);
    static const char cfg3_json[] =
        "{" PROVIDERS ",\"providerKeys\":["
        "{\"id\":\"a\",\"providerId\":\"fake\",\"value\":\"sk-a2\"},"
        "{\"id\":\"b\",\"providerId\":\"fake\",\"value\":\"sk-b\"}],"
        "\"accessKeyConfiguration\":{\"name\":\"t\",\"router\":{\"rules\":["
        "{\"provider\":\"fake\",\"steps\":[" STEP_AB "]}]}}}";
    (void)state;
    aigw_config_unref(cfg1);
    cfg3 = config_from_json(cfg3_json);

    push_h(429, "retry-after-ms", "3000", RL_BODY);
    assert_sends(c, BODY_M1, "m1/a/429/next_key m1/b/200/succeeded");

    /* same provider, id and value: the cooldown carries over */
    assert_int_equal(aigw_client_set_config(c, cfg2, NULL), AIGW_OK);
    set_now(T0 + 1000);
    assert_sends_skips(c, BODY_M1, "m1/b/200/succeeded", "m1/key_cooling/a/2000");
    /* the key is ready; it cools for the model that was limited */
    assert_stat(c, "key", "a", "ready - wait=0 req=1 ok=0 fail=1 skips=1");
    assert_stat(c, "endpoint", "a", "cooling rate_limit wait=2000 req=1 ok=0 fail=1 skips=1");

    /* a's value changed: a fresh key, ready, no counts; the old value's
     * endpoint is not listed (nor counted into its backend's state) */
    assert_int_equal(aigw_client_set_config(c, cfg3, NULL), AIGW_OK);
    assert_stat(c, "key", "a", "ready - wait=0 req=0 ok=0 fail=0 skips=0");
    assert_int_equal(entries_named(c, "endpoint", "a"), 0);
    assert_sends_skips(c, BODY_M1, "m1/a/200/succeeded", "");

    /* the old value back: its health was kept */
    assert_int_equal(aigw_client_set_config(c, cfg2, NULL), AIGW_OK);
    assert_sends_skips(c, BODY_M1, "m1/b/200/succeeded", "m1/key_cooling/a/2000");
    assert_calls("a@m1 b@m1 b@m1 a2@m1 b@m1");
    assert_sleeps("");
    aigw_client_free(c);
    aigw_config_unref(cfg2);
    aigw_config_unref(cfg3);
}

static aigw_config *swap_to; /* for the config-swapping hook */

/* Swaps the client's configuration from inside an upstream call. */
static void swap_hook(void)
{
    assert_int_equal(aigw_client_set_config(M.client, swap_to, NULL), AIGW_OK);
    aigw_config_unref(swap_to); /* the client's reference is now the only one */
    swap_to = NULL;
}

static void test_hot_swap_mid_request(void **state)
{
    static const char new_json[] =
        "{\"providers\":[{\"providerId\":\"fake\",\"name\":\"Fake\","
        "\"baseUrl\":\"http://127.0.0.1:7/v1\",\"models\":[{\"modelId\":\"m1\"}]}],"
        "\"providerKeys\":["
        "{\"id\":\"x\",\"providerId\":\"fake\",\"value\":\"sk-x\"},"
        "{\"id\":\"y\",\"providerId\":\"fake\",\"value\":\"sk-y\"}],"
        "\"accessKeyConfiguration\":{\"name\":\"t2\",\"router\":{\"rules\":["
        "{\"provider\":\"fake\",\"steps\":[" STEP(K("x") "," K("y")) "]}]}}}";
    aigw_client *c = client_for(STEP_AB, "", NULL); /* the client holds the only reference */
    aigw_response *r;
    aigw_stats *s = NULL;
    (void)state;
    swap_to = config_from_json(new_json);

    /* during a's call the configuration is replaced: the request goes on
     * with the old one's keys and URL */
    push_h(429, "retry-after-ms", "3000", RL_BODY)->hook = swap_hook;
    r = send_body(c, BODY_M1);
    assert_attempts(r, "m1/a/429/next_key m1/b/200/succeeded");
    assert_answer(r, 200, NULL);
    aigw_response_free(r);
    assert_string_equal(M.urls[0], "http://127.0.0.1:9/v1/chat/completions");
    assert_string_equal(M.urls[1], "http://127.0.0.1:9/v1/chat/completions");

    /* the next request uses the new one */
    assert_sends_skips(c, BODY_M1, "m1/x/200/succeeded", "");
    assert_string_equal(M.urls[2], "http://127.0.0.1:7/v1/chat/completions");
    assert_calls("a@m1 b@m1 x@m1");

    /* the snapshot lists the new configuration's keys */
    assert_int_equal(aigw_client_stats(c, &s), AIGW_OK);
    assert_string_equal(aigw_stats_at(s, 0)->name, "x");
    assert_string_equal(aigw_stats_at(s, 1)->name, "y");
    assert_string_equal(aigw_stats_at(s, 2)->kind, "backend");
    aigw_stats_free(s);
    assert_sleeps("");
    aigw_client_free(c);
}

/* What a client resolves of a configuration once (its base URLs split,
 * its host's breaker, its keys' entries) is resolved again for a new one:
 * the same provider with another base URL gets that URL, with or without a
 * path, and that URL's host; unchanged keys keep their health. */
static void test_swap_resolves_afresh(void **state)
{
#define SWAP_CFG(url)                                                                      \
    "{\"providers\":[{\"providerId\":\"fake\",\"name\":\"Fake\",\"baseUrl\":\"" url "\","      \
    "\"models\":[{\"modelId\":\"m1\"}]}],"                                                    \
    "\"providerKeys\":[{\"id\":\"a\",\"providerId\":\"fake\",\"value\":\"sk-a\"},"            \
    "{\"id\":\"b\",\"providerId\":\"fake\",\"value\":\"sk-b\"}],"                             \
    "\"accessKeyConfiguration\":{\"name\":\"t\",\"router\":{\"rules\":["                       \
    "{\"provider\":\"fake\",\"steps\":[" STEP_AB "]}]}}}"
    aigw_config *with_path = config_from_json(SWAP_CFG("http://127.0.0.1:9/api"));
    aigw_config *bare = config_from_json(SWAP_CFG("http://127.0.0.1:5"));
    aigw_client *c = client_on_mock(with_path);
    aigw_response *r;
    (void)state;
    push_h(429, "retry-after-ms", "3000", RL_BODY);
    assert_sends(c, BODY_M1, "m1/a/429/next_key m1/b/200/succeeded");
    assert_sends(c, BODY_M1, "m1/b/200/succeeded");
    assert_string_equal(M.urls[0], "http://127.0.0.1:9/api/chat/completions");
    assert_string_equal(M.urls[2], "http://127.0.0.1:9/api/chat/completions");
    /* the host answered each time: a 429 is no failure of it */
    assert_stat(c, "host", "http://127.0.0.1:9", "closed - wait=0 req=3 ok=3 fail=0 skips=0");

    assert_int_equal(aigw_client_set_config(c, bare, NULL), AIGW_OK);
    set_now(T0 + 1000);
    /* a's entry: found again */
    assert_sends_skips(c, BODY_M1, "m1/b/200/succeeded", "m1/key_cooling/a/2000");
    assert_string_equal(M.urls[3], "http://127.0.0.1:5/v1/chat/completions");
    assert_stat(c, "host", "http://127.0.0.1:5", "closed - wait=0 req=1 ok=1 fail=0 skips=0");
    assert_stat(c, "host", "http://127.0.0.1:9", "closed - wait=0 req=3 ok=3 fail=0 skips=0");

    /* and back */
    assert_int_equal(aigw_client_set_config(c, with_path, NULL), AIGW_OK);
    r = send_body(c, BODY_M1);
    aigw_response_free(r);
    assert_string_equal(M.urls[4], "http://127.0.0.1:9/api/chat/completions");
    assert_stat(c, "host", "http://127.0.0.1:9", "closed - wait=0 req=4 ok=4 fail=0 skips=0");
    aigw_client_free(c);
    aigw_config_unref(with_path);
    aigw_config_unref(bare);
#undef SWAP_CFG
}

/* ------------------------------------------------------------------------ */
/* a wait must leave room for the attempt it waits for                      */
/* ------------------------------------------------------------------------ */

/*
 * A wait that "fits" totalTimeout must leave time for the attempt it waits
 * for: walk_step() starts none with less than MIN_ATTEMPT_MS (10 ms) of
 * totalTimeout left, so a wait ending 1..9 ms before the deadline would be
 * only a slower 504 (a regression: wait_fits() once accepted it).
 *
 * Here: totalTimeout 700 ms, a cooling with 699 ms left: no sleep, no call,
 * 429 rate_limited, retry-after-ms 699.
 */
static void test_cooling_wait_must_leave_room_for_an_attempt(void **state)
{
    aigw_client *c = client_for(STEP_A, "\"totalTimeout\":\"700ms\",\"perRequestTimeout\":\"700ms\"",
                                NULL);
    aigw_response *r;
    int status;
    char code[32], sleeps[64];
    int64_t now;
    (void)state;
    push_h(429, "retry-after-ms", "800", RL_BODY);
    assert_sends(c, BODY_M1, "m1/a/429/exhausted");

    set_now(T0 + 101);
    r = send_body(c, BODY_M1);
    status = aigw_response_status(r);
    snprintf(code, sizeof code, "%s", aigw_response_error_code(r) ? aigw_response_error_code(r) : "-");
    snprintf(sleeps, sizeof sleeps, "%d sleep(s)%s", M.clock.n_sleeps, M.clock.n_sleeps ? " of " : "");
    if (M.clock.n_sleeps)
        snprintf(sleeps + strlen(sleeps), sizeof sleeps - strlen(sleeps), "%lld ms",
                 (long long)M.clock.slept[0]);
    now = M.clock.now;
    assert_attempts(r, "");
    assert_skips(r, "m1/key_cooling/a/699");
    aigw_response_free(r);
    aigw_client_free(c);
    if (status != 429 || strcmp(code, "rate_limited") != 0 || M.clock.n_sleeps != 0 || now != T0 + 101)
        fail_msg("every key cooling, 699 ms left, 700 ms of totalTimeout: want 429 rate_limited "
                 "at once (no sleep); got %d %s after %s, the clock at T0+%lld",
                 status, code, sleeps, (long long)(now - T0));
}

/*
 * The same for a same-backend retry (pick_retry uses wait_fits): the only
 * key answers 429 with retry-after-ms 695 and totalTimeout is 700 ms: no
 * retry, no sleep, 429 rate_limited with retry-after-ms 695.
 */
static void test_retry_wait_must_leave_room_for_an_attempt(void **state)
{
    aigw_client *c = client_for(STEP_A, "\"totalTimeout\":\"700ms\",\"perRequestTimeout\":\"700ms\"",
                                NULL);
    aigw_response *r;
    int status;
    char code[32], got[256];
    int n_sleeps;
    (void)state;
    push_h(429, "retry-after-ms", "695", RL_BODY);
    r = send_body(c, BODY_M1);
    status = aigw_response_status(r);
    snprintf(code, sizeof code, "%s", aigw_response_error_code(r) ? aigw_response_error_code(r) : "-");
    assert_int_equal(attempts_string(r, ATTEMPT_FIELDS, got, sizeof got), 0);
    n_sleeps = M.clock.n_sleeps;
    aigw_response_free(r);
    aigw_client_free(c);
    assert_int_equal(M.n_calls, 1);
    if (status != 429 || strcmp(code, "rate_limited") != 0 || n_sleeps != 0 ||
        strcmp(got, "m1/a/429/exhausted") != 0)
        fail_msg("one key, 429 retry-after-ms 695, 700 ms of totalTimeout: want 429 rate_limited "
                 "at once (no sleep, attempts \"m1/a/429/exhausted\"); got %d %s, %d sleep(s) "
                 "(the clock at T0+%lld), attempts \"%s\"",
                 status, code, n_sleeps, (long long)(M.clock.now - T0), got);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_cooldown_expires_at_the_boundary, setup, mock_teardown),
        cmocka_unit_test_setup_teardown(test_default_cooldown_without_wait, setup, mock_teardown),
        cmocka_unit_test_setup_teardown(test_cooldown_max_caps_upstream_wait, setup, mock_teardown),
        cmocka_unit_test_setup_teardown(test_all_cooling_wait_fits, setup, mock_teardown),
        cmocka_unit_test_setup_teardown(test_retry_waits_for_cooling_key_blames_each, setup, mock_teardown),
        cmocka_unit_test_setup_teardown(test_all_cooling_wait_does_not_fit, setup, mock_teardown),
        cmocka_unit_test_setup_teardown(test_benches, setup, mock_teardown),
        cmocka_unit_test_setup_teardown(test_backend_breaker, setup, mock_teardown),
        cmocka_unit_test_setup_teardown(test_every_circuit_open_503, setup, mock_teardown),
        cmocka_unit_test_setup_teardown(test_probe_without_answer_keeps_endpoint_suspect, setup,
                                        mock_teardown),
        cmocka_unit_test_setup_teardown(test_probe_answered_429_may_be_retried, setup,
                                        mock_teardown),
        cmocka_unit_test_setup_teardown(test_fail_fast_models_take_no_endpoint, setup,
                                        mock_teardown),
        cmocka_unit_test_setup_teardown(test_no_backend_skip_from_a_walk_cut_short, setup,
                                        mock_teardown),
        cmocka_unit_test_setup_teardown(test_host_breaker_next_step_ngrok, setup, mock_teardown),
        cmocka_unit_test_setup_teardown(test_host_breaker_other_provider, setup, mock_teardown),
        cmocka_unit_test_setup_teardown(test_retry_budget, setup, mock_teardown),
        cmocka_unit_test_setup_teardown(test_stats_match_responses, setup, mock_teardown),
        cmocka_unit_test_setup_teardown(test_round_robin_with_cooling_key, setup, mock_teardown),
        cmocka_unit_test_setup_teardown(test_least_recently_limited, setup, mock_teardown),
        cmocka_unit_test_setup_teardown(test_user_strategy_v2_sees_health, setup, mock_teardown),
        cmocka_unit_test_setup_teardown(test_user_strategy_v1_still_works, setup, mock_teardown),
        cmocka_unit_test_setup_teardown(test_hot_swap_carries_cooldown, setup, mock_teardown),
        cmocka_unit_test_setup_teardown(test_hot_swap_mid_request, setup, mock_teardown),
        cmocka_unit_test_setup_teardown(test_swap_resolves_afresh, setup, mock_teardown),
        cmocka_unit_test_setup_teardown(test_cooling_wait_must_leave_room_for_an_attempt, setup, mock_teardown),
        cmocka_unit_test_setup_teardown(test_retry_wait_must_leave_room_for_an_attempt, setup, mock_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
