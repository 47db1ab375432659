/*
 * test_health.c - what a client remembers across requests, with the clock
 * passed in: key cooldowns and benches, circuit breakers, the retry budget,
 * host names, latency percentiles, the snapshot and its JSON, the table
 * caps, running out of memory, and four threads at once (for TSan).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <cjson/cJSON.h>
#include <pthread.h>

#include "health.h"
#include "support.h"

static aigw_health_opts base_opts(void)
{
    aigw_health_opts o;
    memset(&o, 0, sizeof o);
    o.cooldown_ms = 2000;
    o.cooldown_max_ms = 60000;
    o.bench_ms = 3600000;
    o.breaker_threshold = 3;
    o.breaker_cooloff_ms = 5000;
    o.probe_timeout_ms = 60000;
    o.budget_on = true;
    o.budget_percent = 20;
    o.budget_min_per_sec = 0;
    o.budget_window_ms = 10000;
    return o;
}

static char v1[] = "sk-SECRET-one";
static char v2[] = "sk-SECRET-two";
static char v3[] = "sk-SECRET-three";
static char v4[] = "sk-SECRET-four";
static char vngrok[] = "ngrok-SECRET-access";
static char vempty[] = "";

static aigw_secret secret(char *s)
{
    aigw_secret x;
    x.value = s;
    x.len = strlen(s);
    return x;
}

static int64_t wait_of(const aigw_hkey *k, int64_t now)
{
    int64_t w = -42;
    (void)aigw__hkey_state(k, now, &w);
    return w;
}

/* ---- SipHash-2-4 ---- */

static void test_siphash_vectors(void **state)
{
    /* The reference vectors (Aumasson & Bernstein): key 00..0f, message
     * 00..len-1. */
    uint8_t key[16], msg[16];
    int i;
    (void)state;
    for (i = 0; i < 16; i++)
        key[i] = msg[i] = (uint8_t)i;
    assert_true(aigw__siphash24(key, msg, 0) == 0x726fdb47dd0e0e31ULL);
    assert_true(aigw__siphash24(key, msg, 1) == 0x74f839c593dc67fdULL);
    assert_true(aigw__siphash24(key, msg, 8) == 0x93f5f5799a932462ULL);
    assert_true(aigw__siphash24(key, msg, 15) == 0xa129ca6149be45e5ULL);
    key[0] ^= 1;
    assert_true(aigw__siphash24(key, msg, 15) != 0xa129ca6149be45e5ULL);
}

/* ---- key identity ---- */

static void test_key_identity(void **state)
{
    aigw_health *h = aigw__health_new();
    aigw_secret a = secret(v1), a2, b = secret(v2), e = secret(vempty);
    aigw_hkey *k;
    char copy[sizeof v1];
    (void)state;
    memcpy(copy, v1, sizeof v1);
    a2 = secret(copy);
    k = aigw__health_key(h, "openai", "k1", &a);
    assert_non_null(k);
    /* same triple (the value compared by content): the same entry */
    assert_ptr_equal(k, aigw__health_key(h, "openai", "k1", &a2));
    /* same id, another value: another entry */
    assert_ptr_not_equal(k, aigw__health_key(h, "openai", "k1", &b));
    assert_ptr_not_equal(k, aigw__health_key(h, "anthropic", "k1", &a));
    assert_ptr_not_equal(k, aigw__health_key(h, "openai", "k2", &a));
    /* no value, and an empty one, are keys of their own */
    assert_non_null(aigw__health_key(h, "local", "", NULL));
    assert_ptr_equal(aigw__health_key(h, "local", "", NULL),
                     aigw__health_key(h, "local", NULL, NULL));
    assert_ptr_not_equal(aigw__health_key(h, "local", "", NULL),
                         aigw__health_key(h, "local", "", &e));
    /* "ab"+"c" and "a"+"bc" are different keys */
    assert_ptr_not_equal(aigw__health_key(h, "ab", "c", NULL), aigw__health_key(h, "a", "bc", NULL));
    assert_null(aigw__health_key(NULL, "openai", "k1", &a));
    aigw__health_free(h);
    aigw__health_free(NULL);
}

/* ---- cooldowns ---- */

static void test_cooldown_with_wait(void **state)
{
    aigw_health *h = aigw__health_new();
    aigw_health_opts o = base_opts();
    aigw_secret s = secret(v1);
    aigw_hkey *k = aigw__health_key(h, "openai", "k1", &s);
    aigw_key_health v;
    (void)state;
    assert_int_equal(aigw__hkey_state(k, 1000, NULL), AIGW_KEY_READY);
    assert_int_equal(wait_of(k, 1000), 0);
    assert_int_equal(aigw__hkey_reason(k, 1000), AIGW_CLASS_NONE);
    aigw__hkey_view(k, 1000, 7, &v);
    assert_int_equal(v.since_limited_ms, -1);

    aigw__hkey_report(k, &o, AIGW_CLASS_RATE_LIMIT, 1500, -1, 1000);
    assert_int_equal(aigw__hkey_state(k, 1000, NULL), AIGW_KEY_COOLING);
    assert_int_equal(wait_of(k, 1000), 1500);
    assert_int_equal(aigw__hkey_reason(k, 1000), AIGW_CLASS_RATE_LIMIT);
    assert_int_equal(wait_of(k, 2499), 1);
    assert_int_equal(aigw__hkey_state(k, 2499, NULL), AIGW_KEY_COOLING);
    /* expires exactly at the boundary */
    assert_int_equal(aigw__hkey_state(k, 2500, NULL), AIGW_KEY_READY);
    assert_int_equal(wait_of(k, 2500), 0);
    assert_int_equal(aigw__hkey_reason(k, 2500), AIGW_CLASS_NONE);

    aigw__hkey_view(k, 3000, 7, &v);
    assert_string_equal(v.id, "k1");
    assert_int_equal(v.state, AIGW_KEY_READY);
    assert_int_equal(v.since_limited_ms, 2000);
    assert_int_equal(v.weight, 7);
    assert_int_equal(v.requests, 1);
    assert_int_equal(v.failures, 1);
    assert_int_equal(v.successes, 0);
    assert_int_equal(v.latency_mean_ms, -1);
    aigw__health_free(h);
}

static void test_cooldown_jitter(void **state)
{
    aigw_health *h = aigw__health_new();
    aigw_health_opts o = base_opts();
    aigw_hkey *k = aigw__health_key(h, "openai", "k1", NULL);
    int64_t lo = INT64_MAX, hi = 0;
    int i;
    (void)state;
    for (i = 0; i < 2000; i++) {
        int64_t w;
        assert_int_equal(aigw__health_reset(h, "k1"), 1);
        aigw__hkey_report(k, &o, AIGW_CLASS_RATE_LIMIT, -1, -1, 0);
        w = wait_of(k, 0);
        assert_true(w >= 1000 && w <= 2000);
        lo = w < lo ? w : lo;
        hi = w > hi ? w : hi;
    }
    /* spread over the range, not a constant */
    assert_true(lo < 1100);
    assert_true(hi > 1900);
    /* an odd cooldown: [cd/2, cd] still */
    o.cooldown_ms = 3;
    for (i = 0; i < 200; i++) {
        int64_t w;
        aigw__health_reset(h, NULL);
        aigw__hkey_report(k, &o, AIGW_CLASS_RATE_LIMIT, -1, -1, 0);
        w = wait_of(k, 0);
        assert_true(w >= 1 && w <= 3);
    }
    /* cooldown 0: no cooldown at all */
    o.cooldown_ms = 0;
    aigw__health_reset(h, NULL);
    aigw__hkey_report(k, &o, AIGW_CLASS_RATE_LIMIT, -1, -1, 0);
    assert_int_equal(aigw__hkey_state(k, 0, NULL), AIGW_KEY_READY);
    aigw__health_free(h);
}

static void test_cooldown_only_extends_and_cap(void **state)
{
    aigw_health *h = aigw__health_new();
    aigw_health_opts o = base_opts();
    aigw_hkey *k = aigw__health_key(h, "openai", "k1", NULL);
    aigw_key_health v;
    (void)state;
    aigw__hkey_report(k, &o, AIGW_CLASS_RATE_LIMIT, 5000, -1, 0);
    aigw__hkey_report(k, &o, AIGW_CLASS_RATE_LIMIT, 1000, -1, 100); /* shorter: kept */
    assert_int_equal(wait_of(k, 100), 4900);
    aigw__hkey_report(k, &o, AIGW_CLASS_RATE_LIMIT, 10000, -1, 200); /* longer: extends */
    assert_int_equal(wait_of(k, 200), 10000);
    aigw__hkey_view(k, 300, 1, &v);
    assert_int_equal(v.since_limited_ms, 100); /* the latest limit */
    /* the upstream's wait is capped by cooldown_max_ms */
    aigw__health_reset(h, NULL);
    aigw__hkey_report(k, &o, AIGW_CLASS_RATE_LIMIT, 3600000, -1, 1000);
    assert_int_equal(wait_of(k, 1000), 60000);
    /* wait 0: no cooldown, but the limit is remembered */
    aigw__health_reset(h, NULL);
    aigw__hkey_report(k, &o, AIGW_CLASS_RATE_LIMIT, 0, -1, 5000);
    assert_int_equal(aigw__hkey_state(k, 5000, NULL), AIGW_KEY_READY);
    aigw__hkey_view(k, 5250, 1, &v);
    assert_int_equal(v.since_limited_ms, 250);
    assert_int_equal(v.failures, 5);
    aigw__health_free(h);
}

/* ---- benches ---- */

static void test_bench(void **state)
{
    aigw_health *h = aigw__health_new();
    aigw_health_opts o = base_opts();
    aigw_hkey *a = aigw__health_key(h, "openai", "a", NULL);
    aigw_hkey *q = aigw__health_key(h, "openai", "q", NULL);
    aigw_hkey *s = aigw__health_key(h, "openai", "s", NULL);
    aigw_hkey *z = aigw__health_key(h, "openai", "z", NULL);
    (void)state;
    aigw__hkey_report(a, &o, AIGW_CLASS_AUTH, -1, -1, 1000);
    aigw__hkey_report(q, &o, AIGW_CLASS_QUOTA, -1, -1, 1000);
    aigw__hkey_report(s, &o, AIGW_CLASS_SERVER, -1, -1, 1000);
    assert_int_equal(aigw__hkey_state(a, 1000, NULL), AIGW_KEY_BENCHED);
    assert_int_equal(wait_of(a, 1000), 3600000);
    assert_int_equal(aigw__hkey_reason(a, 1000), AIGW_CLASS_AUTH);
    assert_int_equal(aigw__hkey_state(q, 2000, NULL), AIGW_KEY_BENCHED);
    assert_int_equal(wait_of(q, 2000), 3599000);
    assert_int_equal(aigw__hkey_reason(q, 2000), AIGW_CLASS_QUOTA);
    /* other failures: counted only */
    assert_int_equal(aigw__hkey_state(s, 1000, NULL), AIGW_KEY_READY);
    assert_int_equal(aigw__hkey_state(a, 3601000, NULL), AIGW_KEY_READY);
    /* benched and cooling: benched wins, with the bench's wait */
    aigw__hkey_report(a, &o, AIGW_CLASS_RATE_LIMIT, 5000, -1, 2000);
    assert_int_equal(aigw__hkey_state(a, 2000, NULL), AIGW_KEY_BENCHED);
    assert_int_equal(wait_of(a, 2000), 3599000);
    /* bench_ms 0: no bench */
    o.bench_ms = 0;
    aigw__hkey_report(z, &o, AIGW_CLASS_AUTH, -1, -1, 1000);
    assert_int_equal(aigw__hkey_state(z, 1000, NULL), AIGW_KEY_READY);
    /* end_benches: benches end, cooldowns stay */
    aigw__health_end_benches(h);
    assert_int_equal(aigw__hkey_state(a, 2000, NULL), AIGW_KEY_COOLING);
    assert_int_equal(wait_of(a, 2000), 5000);
    assert_int_equal(aigw__hkey_reason(a, 2000), AIGW_CLASS_RATE_LIMIT);
    assert_int_equal(aigw__hkey_state(q, 2000, NULL), AIGW_KEY_READY);
    aigw__health_free(h);
}

static void test_reset(void **state)
{
    aigw_health *h = aigw__health_new();
    aigw_health_opts o = base_opts();
    aigw_hkey *a1 = aigw__health_key(h, "openai", "a", NULL);
    aigw_hkey *a2 = aigw__health_key(h, "anthropic", "a", NULL);
    aigw_hkey *b = aigw__health_key(h, "openai", "b", NULL);
    aigw_breaker *br = aigw__health_backend(h, "openai", "gpt-4o");
    aigw_key_health v;
    int i;
    int64_t w;
    (void)state;
    aigw__hkey_report(a1, &o, AIGW_CLASS_RATE_LIMIT, 9000, -1, 0);
    aigw__hkey_report(a2, &o, AIGW_CLASS_AUTH, -1, -1, 0);
    aigw__hkey_report(b, &o, AIGW_CLASS_RATE_LIMIT, 9000, -1, 0);
    for (i = 0; i < 3; i++)
        aigw__breaker_report(br, &o, AIGW_BR_FAILURE, false, AIGW_CLASS_SERVER, -1, 0);
    assert_int_equal(aigw__breaker_admit(br, &o, 0, &w), AIGW_ADMIT_OPEN);
    assert_int_equal(aigw__health_reset(h, "a"), 2);
    assert_int_equal(aigw__hkey_state(a1, 0, NULL), AIGW_KEY_READY);
    assert_int_equal(aigw__hkey_state(a2, 0, NULL), AIGW_KEY_READY);
    assert_int_equal(aigw__hkey_state(b, 0, NULL), AIGW_KEY_COOLING);
    assert_int_equal(aigw__breaker_admit(br, &o, 0, &w), AIGW_ADMIT_OPEN); /* by id: keys only */
    assert_int_equal(aigw__health_reset(h, "nope"), 0);
    assert_int_equal(aigw__health_reset(h, NULL), 3);
    assert_int_equal(aigw__hkey_state(b, 0, NULL), AIGW_KEY_READY);
    assert_int_equal(aigw__breaker_admit(br, &o, 0, &w), AIGW_ADMIT_GO);
    /* counters are kept */
    aigw__hkey_view(a1, 0, 1, &v);
    assert_int_equal(v.requests, 1);
    assert_int_equal(v.since_limited_ms, 0);
    assert_int_equal(aigw__health_reset(NULL, NULL), 0);
    aigw__health_free(h);
}

static void test_key_counters(void **state)
{
    aigw_health *h = aigw__health_new();
    aigw_health_opts o = base_opts();
    aigw_hkey *k = aigw__health_key(h, "openai", "k", NULL);
    aigw_key_health v;
    int64_t w = -1;
    (void)state;
    aigw__hkey_report(k, &o, AIGW_CLASS_NONE, -1, 100, 0);
    aigw__hkey_report(k, &o, AIGW_CLASS_NONE, -1, 301, 0);
    aigw__hkey_report(k, &o, AIGW_CLASS_NONE, -1, -1, 0);       /* untimed success */
    aigw__hkey_report(k, &o, AIGW_CLASS_SERVER, -1, 5000, 0);   /* failures are not timed */
    aigw__hkey_skipped(k);
    aigw__hkey_skipped(k);
    aigw__hkey_view(k, 0, 3, &v);
    assert_int_equal(v.requests, 4);
    assert_int_equal(v.successes, 3);
    assert_int_equal(v.failures, 1);
    assert_int_equal(v.latency_mean_ms, 201); /* (100 + 301) / 2, rounded */
    /* an untracked key (NULL): ready, never counted */
    aigw__hkey_report(NULL, &o, AIGW_CLASS_AUTH, -1, -1, 0);
    aigw__hkey_skipped(NULL);
    assert_int_equal(aigw__hkey_state(NULL, 0, &w), AIGW_KEY_READY);
    assert_int_equal(w, 0);
    assert_int_equal(aigw__hkey_reason(NULL, 0), AIGW_CLASS_NONE);
    aigw__hkey_view(NULL, 0, 5, &v);
    assert_string_equal(v.id, "");
    assert_int_equal(v.state, AIGW_KEY_READY);
    assert_int_equal(v.weight, 5);
    assert_int_equal(v.since_limited_ms, -1);
    assert_int_equal(v.latency_mean_ms, -1);
    assert_int_equal(v.requests, 0);
    aigw__health_free(h);
}

/* ---- circuit breakers ---- */

static void test_breaker_opens_after_threshold(void **state)
{
    aigw_health *h = aigw__health_new();
    aigw_health_opts o = base_opts();
    aigw_breaker *b = aigw__health_backend(h, "openai", "gpt-4o");
    int64_t w = -1;
    (void)state;
    assert_non_null(b);
    assert_ptr_equal(b, aigw__health_backend(h, "openai", "gpt-4o"));
    assert_ptr_not_equal(b, aigw__health_backend(h, "openai", "gpt-4o-mini"));
    assert_ptr_not_equal(b, aigw__health_backend(h, "azure", "gpt-4o"));
    assert_int_equal(aigw__breaker_admit(b, &o, 0, &w), AIGW_ADMIT_GO);
    assert_int_equal(w, 0);
    /* a success in between resets the count; neutral answers leave it */
    aigw__breaker_report(b, &o, AIGW_BR_FAILURE, false, AIGW_CLASS_SERVER, -1, 0);
    aigw__breaker_report(b, &o, AIGW_BR_FAILURE, false, AIGW_CLASS_SERVER, -1, 0);
    aigw__breaker_report(b, &o, AIGW_BR_SUCCESS, false, AIGW_CLASS_NONE, 10, 0);
    aigw__breaker_report(b, &o, AIGW_BR_FAILURE, false, AIGW_CLASS_SERVER, -1, 0);
    aigw__breaker_report(b, &o, AIGW_BR_NEUTRAL, false, AIGW_CLASS_RATE_LIMIT, -1, 0);
    aigw__breaker_report(b, &o, AIGW_BR_FAILURE, false, AIGW_CLASS_TIMEOUT, -1, 0);
    aigw__breaker_report(b, &o, AIGW_BR_ABANDON, false, AIGW_CLASS_NONE, -1, 0);
    assert_int_equal(aigw__breaker_admit(b, &o, 1000, &w), AIGW_ADMIT_GO);
    aigw__breaker_report(b, &o, AIGW_BR_FAILURE, false, AIGW_CLASS_NETWORK, -1, 1000);
    /* open: skipped, with the wait until a probe may go */
    assert_int_equal(aigw__breaker_admit(b, &o, 1000, &w), AIGW_ADMIT_OPEN);
    assert_int_equal(w, 5000);
    aigw__breaker_skipped(b);
    assert_int_equal(aigw__breaker_admit(b, &o, 5999, &w), AIGW_ADMIT_OPEN);
    assert_int_equal(w, 1);
    /* a late failure of an earlier request changes nothing */
    aigw__breaker_report(b, &o, AIGW_BR_FAILURE, false, AIGW_CLASS_SERVER, -1, 5500);
    /* exactly one probe after the cooloff */
    assert_int_equal(aigw__breaker_admit(b, &o, 6000, &w), AIGW_ADMIT_PROBE);
    assert_int_equal(w, 0);
    w = -1;
    assert_int_equal(aigw__breaker_admit(b, &o, 6000, &w), AIGW_ADMIT_OPEN);
    assert_int_equal(w, 0);
    assert_int_equal(aigw__breaker_admit(b, &o, 7000, &w), AIGW_ADMIT_OPEN);
    /* the probe succeeds: closed */
    aigw__breaker_report(b, &o, AIGW_BR_SUCCESS, true, AIGW_CLASS_NONE, 20, 7000);
    assert_int_equal(aigw__breaker_admit(b, &o, 7000, &w), AIGW_ADMIT_GO);
    /* and the count starts again from zero */
    aigw__breaker_report(b, &o, AIGW_BR_FAILURE, false, AIGW_CLASS_SERVER, -1, 7000);
    aigw__breaker_report(b, &o, AIGW_BR_FAILURE, false, AIGW_CLASS_SERVER, -1, 7000);
    assert_int_equal(aigw__breaker_admit(b, &o, 7000, &w), AIGW_ADMIT_GO);
    aigw__health_free(h);
}

static aigw_breaker *opened(aigw_health *h, const aigw_health_opts *o, const char *model,
                            int64_t now)
{
    aigw_breaker *b = aigw__health_backend(h, "openai", model);
    int i;
    for (i = 0; i < o->breaker_threshold; i++)
        aigw__breaker_report(b, o, AIGW_BR_FAILURE, false, AIGW_CLASS_SERVER, -1, now);
    return b;
}

static void test_breaker_probe_outcomes(void **state)
{
    aigw_health *h = aigw__health_new();
    aigw_health_opts o = base_opts();
    aigw_breaker *b = opened(h, &o, "m1", 0);
    int64_t w = -1;
    (void)state;
    /* a failed probe: open again for a full cooloff */
    assert_int_equal(aigw__breaker_admit(b, &o, 5000, &w), AIGW_ADMIT_PROBE);
    aigw__breaker_report(b, &o, AIGW_BR_FAILURE, true, AIGW_CLASS_SERVER, -1, 7000);
    assert_int_equal(aigw__breaker_admit(b, &o, 7000, &w), AIGW_ADMIT_OPEN);
    assert_int_equal(w, 5000);
    assert_int_equal(aigw__breaker_admit(b, &o, 11999, &w), AIGW_ADMIT_OPEN);
    assert_int_equal(w, 1);
    /* an abandoned probe: another may go at once */
    assert_int_equal(aigw__breaker_admit(b, &o, 12000, &w), AIGW_ADMIT_PROBE);
    aigw__breaker_report(b, &o, AIGW_BR_ABANDON, true, AIGW_CLASS_NONE, -1, 12001);
    assert_int_equal(aigw__breaker_admit(b, &o, 12001, &w), AIGW_ADMIT_PROBE);
    /* a neutral answer to the probe closes */
    aigw__breaker_report(b, &o, AIGW_BR_NEUTRAL, true, AIGW_CLASS_RATE_LIMIT, -1, 12002);
    assert_int_equal(aigw__breaker_admit(b, &o, 12002, &w), AIGW_ADMIT_GO);

    /* a lost probe: after cooloff + probe timeout another may go */
    b = opened(h, &o, "m2", 0);
    assert_int_equal(aigw__breaker_admit(b, &o, 6000, &w), AIGW_ADMIT_PROBE);
    assert_int_equal(aigw__breaker_admit(b, &o, 70999, &w), AIGW_ADMIT_OPEN);
    assert_int_equal(w, 0);
    assert_int_equal(aigw__breaker_admit(b, &o, 71000, &w), AIGW_ADMIT_PROBE);
    assert_int_equal(aigw__breaker_admit(b, &o, 71000, &w), AIGW_ADMIT_OPEN);

    /* a success that was not the probe closes too */
    b = opened(h, &o, "m3", 0);
    assert_int_equal(aigw__breaker_admit(b, &o, 100, &w), AIGW_ADMIT_OPEN);
    aigw__breaker_report(b, &o, AIGW_BR_SUCCESS, false, AIGW_CLASS_NONE, 5, 100);
    assert_int_equal(aigw__breaker_admit(b, &o, 100, &w), AIGW_ADMIT_GO);
    /* and a neutral one does not */
    b = opened(h, &o, "m4", 0);
    aigw__breaker_report(b, &o, AIGW_BR_NEUTRAL, false, AIGW_CLASS_AUTH, -1, 100);
    assert_int_equal(aigw__breaker_admit(b, &o, 100, &w), AIGW_ADMIT_OPEN);
    assert_int_equal(w, 4900);
    aigw__health_free(h);
}

static void test_breaker_off(void **state)
{
    aigw_health *h = aigw__health_new();
    aigw_health_opts o = base_opts();
    aigw_breaker *b = aigw__health_backend(h, "openai", "gpt-4o");
    int64_t w = -1;
    int i;
    (void)state;
    o.breaker_threshold = 0;
    for (i = 0; i < 100; i++)
        aigw__breaker_report(b, &o, AIGW_BR_FAILURE, false, AIGW_CLASS_SERVER, -1, 0);
    assert_int_equal(aigw__breaker_admit(b, &o, 0, &w), AIGW_ADMIT_GO);
    assert_int_equal(w, 0);
    /* an untracked breaker (NULL) always admits */
    o = base_opts();
    assert_int_equal(aigw__breaker_admit(NULL, &o, 0, &w), AIGW_ADMIT_GO);
    aigw__breaker_report(NULL, &o, AIGW_BR_FAILURE, false, AIGW_CLASS_SERVER, -1, 0);
    aigw__breaker_skipped(NULL);
    aigw__health_free(h);
}

/* ---- retry budget ---- */

static void budget_numbers(aigw_health *h, const aigw_health_opts *o, int64_t now,
                           uint64_t *req, uint64_t *ret, uint64_t *den, int64_t *avail)
{
    aigw_stats *st = aigw__health_snapshot(h, NULL, o, now);
    assert_non_null(st);
    aigw_stats_budget(st, req, ret, den, avail);
    aigw_stats_free(st);
}

static void test_budget_exhaustion(void **state)
{
    aigw_health *h = aigw__health_new();
    aigw_health_opts o = base_opts();
    uint64_t req, ret, den;
    int64_t avail;
    int i;
    (void)state;
    for (i = 0; i < 100; i++)
        aigw__budget_request(h, &o, 0);
    budget_numbers(h, &o, 0, &req, &ret, &den, &avail);
    assert_int_equal(avail, 20);
    for (i = 0; i < 20; i++)
        assert_true(aigw__budget_retry(h, &o, 10 * i));
    assert_false(aigw__budget_retry(h, &o, 500));
    assert_false(aigw__budget_retry(h, &o, 9999));
    budget_numbers(h, &o, 9999, &req, &ret, &den, &avail);
    assert_int_equal(req, 100);
    assert_int_equal(ret, 20);
    assert_int_equal(den, 2);
    assert_int_equal(avail, 0);
    /* five more requests: one more retry (20% of 105 = 21) */
    for (i = 0; i < 5; i++)
        aigw__budget_request(h, &o, 9999);
    assert_true(aigw__budget_retry(h, &o, 9999));
    assert_false(aigw__budget_retry(h, &o, 9999));
    aigw__health_free(h);
}

static void test_budget_floor(void **state)
{
    aigw_health *h = aigw__health_new();
    aigw_health_opts o = base_opts();
    uint64_t den;
    int64_t avail;
    int i;
    (void)state;
    o.budget_percent = 0;
    o.budget_min_per_sec = 10;
    o.budget_window_ms = 1000;
    budget_numbers(h, &o, 0, NULL, NULL, NULL, &avail);
    assert_int_equal(avail, 10);
    for (i = 0; i < 10; i++)
        assert_true(aigw__budget_retry(h, &o, 0));
    assert_false(aigw__budget_retry(h, &o, 0));
    budget_numbers(h, &o, 0, NULL, NULL, &den, &avail);
    assert_int_equal(den, 1);
    assert_int_equal(avail, 0);
    /* a longer window scales the floor: 10/s over 3 s */
    aigw__health_free(h);
    h = aigw__health_new();
    o.budget_window_ms = 3000;
    for (i = 0; i < 30; i++)
        assert_true(aigw__budget_retry(h, &o, 0));
    assert_false(aigw__budget_retry(h, &o, 0));
    aigw__health_free(h);
}

static void test_budget_window_slides(void **state)
{
    aigw_health *h = aigw__health_new();
    aigw_health_opts o = base_opts();
    int i;
    (void)state;
    o.budget_percent = 100;
    o.budget_window_ms = 1000; /* ten buckets of 100 ms */
    for (i = 0; i < 10; i++)
        aigw__budget_request(h, &o, 0);
    for (i = 0; i < 10; i++)
        assert_true(aigw__budget_retry(h, &o, 0));
    assert_false(aigw__budget_retry(h, &o, 0));
    assert_false(aigw__budget_retry(h, &o, 999)); /* still in the window */
    /* at 1000 the first bucket has left the window: its requests and
     * retries with it */
    assert_false(aigw__budget_retry(h, &o, 1000));
    for (i = 0; i < 5; i++)
        aigw__budget_request(h, &o, 1000);
    for (i = 0; i < 5; i++)
        assert_true(aigw__budget_retry(h, &o, 1050));
    assert_false(aigw__budget_retry(h, &o, 1050));
    /* half a window later, more requests; the earlier ones still count */
    for (i = 0; i < 5; i++)
        aigw__budget_request(h, &o, 1500);
    for (i = 0; i < 5; i++)
        assert_true(aigw__budget_retry(h, &o, 1500));
    assert_false(aigw__budget_retry(h, &o, 1999));
    /* at 2000 the bucket of 1000 leaves: 5 requests, 5 retries (of 1500) */
    assert_false(aigw__budget_retry(h, &o, 2000));
    /* at 2500 everything left */
    aigw__budget_request(h, &o, 2500);
    assert_true(aigw__budget_retry(h, &o, 2500));
    assert_false(aigw__budget_retry(h, &o, 2500));
    /* a snapshot sees the window slide too, without writing to it */
    {
        aigw_health *h2 = aigw__health_new();
        int64_t avail;
        for (i = 0; i < 10; i++)
            aigw__budget_request(h2, &o, 0);
        budget_numbers(h2, &o, 999, NULL, NULL, NULL, &avail);
        assert_int_equal(avail, 10);
        budget_numbers(h2, &o, 1000, NULL, NULL, NULL, &avail);
        assert_int_equal(avail, 0);
        aigw__health_free(h2);
    }
    /* a long silence, then again (stale buckets are zeroed) */
    aigw__budget_request(h, &o, 1000000);
    assert_true(aigw__budget_retry(h, &o, 1000000));
    assert_false(aigw__budget_retry(h, &o, 1000000));
    aigw__health_free(h);
}

static void test_budget_off(void **state)
{
    aigw_health *h = aigw__health_new();
    aigw_health_opts o = base_opts();
    uint64_t req, ret, den;
    int64_t avail;
    int i;
    (void)state;
    o.budget_on = false;
    for (i = 0; i < 50; i++)
        assert_true(aigw__budget_retry(h, &o, 0));
    aigw__budget_request(h, &o, 0);
    budget_numbers(h, &o, 0, &req, &ret, &den, &avail);
    assert_int_equal(req, 1);
    assert_int_equal(ret, 50);
    assert_int_equal(den, 0);
    assert_int_equal(avail, -1);
    /* NULL-safe */
    assert_true(aigw__budget_retry(NULL, &o, 0));
    aigw__budget_request(NULL, &o, 0);
    aigw__health_free(h);
}

/* ---- hosts ---- */

static void check_host(const char *url, const char *want)
{
    aigw_health *h = aigw__health_new();
    aigw_breaker *b = aigw__health_host(h, url);
    aigw_stats *st;
    const aigw_stat *s;
    if (!want) {
        if (b)
            fail_msg("%s: expected no host", url ? url : "(null)");
        aigw__health_free(h);
        return;
    }
    assert_non_null(b);
    st = aigw__health_snapshot(h, NULL, NULL, 0);
    assert_non_null(st);
    assert_int_equal(aigw_stats_count(st), 1);
    s = aigw_stats_at(st, 0);
    assert_string_equal(s->kind, "host");
    assert_string_equal(s->name, want);
    assert_string_equal(s->provider, "");
    assert_string_equal(s->model, "");
    aigw_stats_free(st);
    aigw__health_free(h);
}

static void test_host_normalisation(void **state)
{
    aigw_health *h;
    (void)state;
    check_host("https://API.OpenAI.com/v1/chat/completions", "https://api.openai.com:443");
    check_host("HTTPS://api.openai.com", "https://api.openai.com:443");
    check_host("http://example.com", "http://example.com:80");
    check_host("http://localhost:8080/v1", "http://localhost:8080");
    check_host("http://localhost:08080/v1", "http://localhost:8080");
    check_host("https://user:pa%40ss@Example.COM:8443/x?y#z", "https://example.com:8443");
    check_host("https://u@h@host.example/x", "https://host.example:443");
    check_host("http://[::1]:11434/v1", "http://[::1]:11434");
    check_host("https://[2001:DB8::1]/v1", "https://[2001:db8::1]:443");
    check_host("http://host:/x", "http://host:80");
    check_host("https://h?q=1", "https://h:443");
    check_host("https://h#frag", "https://h:443");
    check_host("ftp://files.example:21/x", "ftp://files.example:21");
    check_host("http://127.0.0.1:1/", "http://127.0.0.1:1");
    check_host("api.openai.com/v1", NULL);
    check_host("https://", NULL);
    check_host("https:///v1", NULL);
    check_host("https://:443/v1", NULL);
    check_host("http://h:99999", NULL);
    check_host("http://h:0", NULL);
    check_host("http://h:12a", NULL);
    check_host("ftp://files.example/x", NULL); /* no default port */
    check_host("http://[::1", NULL);
    check_host("http://[]:80", NULL);
    check_host("http://[::1]x/", NULL);
    check_host("http://u@/x", NULL);
    check_host("http://a b/", NULL);
    check_host("1http://h/", NULL);
    check_host("", NULL);
    check_host(NULL, NULL);
    /* equivalent URLs: one breaker */
    h = aigw__health_new();
    assert_ptr_equal(aigw__health_host(h, "https://API.openai.com/v1"),
                     aigw__health_host(h, "https://u:p@api.openai.com:443/v2/x"));
    assert_ptr_not_equal(aigw__health_host(h, "https://api.openai.com/v1"),
                         aigw__health_host(h, "http://api.openai.com/v1"));
    aigw__health_free(h);
}

/* ---- latency ---- */

static void test_latency_percentiles(void **state)
{
    aigw_health *h = aigw__health_new();
    aigw_health_opts o = base_opts();
    aigw_breaker *a = aigw__health_backend(h, "p", "uniform");
    aigw_breaker *b = aigw__health_backend(h, "p", "skewed");
    aigw_breaker *z = aigw__health_backend(h, "p", "zero");
    aigw_breaker *n = aigw__health_backend(h, "p", "none");
    aigw_stats *st;
    const aigw_stat *s;
    int i;
    (void)state;
    for (i = 1; i <= 100; i++)
        aigw__breaker_report(a, &o, AIGW_BR_SUCCESS, false, AIGW_CLASS_NONE, i, 0);
    for (i = 0; i < 90; i++)
        aigw__breaker_report(b, &o, AIGW_BR_SUCCESS, false, AIGW_CLASS_NONE, 10, 0);
    for (i = 0; i < 9; i++)
        aigw__breaker_report(b, &o, AIGW_BR_SUCCESS, false, AIGW_CLASS_NONE, 1000, 0);
    aigw__breaker_report(b, &o, AIGW_BR_SUCCESS, false, AIGW_CLASS_NONE, 5000, 0);
    aigw__breaker_report(b, &o, AIGW_BR_FAILURE, false, AIGW_CLASS_SERVER, 99999, 0);
    aigw__breaker_report(b, &o, AIGW_BR_SUCCESS, false, AIGW_CLASS_NONE, -1, 0);
    for (i = 0; i < 10; i++)
        aigw__breaker_report(z, &o, AIGW_BR_SUCCESS, false, AIGW_CLASS_NONE, 0, 0);
    aigw__breaker_report(n, &o, AIGW_BR_FAILURE, false, AIGW_CLASS_SERVER, 10, 0);
    b = aigw__health_backend(h, "p", "three");
    aigw__breaker_report(b, &o, AIGW_BR_SUCCESS, false, AIGW_CLASS_NONE, 1000, 0);
    aigw__breaker_report(b, &o, AIGW_BR_SUCCESS, false, AIGW_CLASS_NONE, 10, 0);
    aigw__breaker_report(b, &o, AIGW_BR_SUCCESS, false, AIGW_CLASS_NONE, 20, 0);
    b = aigw__health_backend(h, "p", "hours");
    for (i = 0; i < 3; i++)
        aigw__breaker_report(b, &o, AIGW_BR_SUCCESS, false, AIGW_CLASS_NONE, 7200000, 0);
    st = aigw__health_snapshot(h, NULL, &o, 0);
    assert_non_null(st);

    /* past the last bucket (about an hour): the maximum */
    s = find_stat(st, "backend", "p:hours");
    assert_int_equal(s->latency_p50_ms, 7200000);
    assert_int_equal(s->latency_p99_ms, 7200000);

    s = find_stat(st, "backend", "p:uniform");
    assert_int_equal(s->latency_count, 100);
    assert_int_equal(s->latency_mean_ms, 51); /* 50.5, rounded */
    assert_int_equal(s->latency_p50_ms, 53);  /* bucket (45, 53] */
    assert_int_equal(s->latency_p90_ms, 100); /* bucket (88, 104], clamped to the max */
    assert_int_equal(s->latency_p99_ms, 100);
    assert_int_equal(s->latency_max_ms, 100);

    s = find_stat(st, "backend", "p:skewed");
    assert_int_equal(s->requests, 102);
    assert_int_equal(s->successes, 101);
    assert_int_equal(s->failures, 1);
    assert_int_equal(s->latency_count, 100);
    assert_int_equal(s->latency_mean_ms, 149);
    assert_int_equal(s->latency_p50_ms, 10);
    assert_int_equal(s->latency_p90_ms, 10);
    assert_int_equal(s->latency_p99_ms, 1144); /* bucket (962, 1144] */
    assert_int_equal(s->latency_max_ms, 5000);

    s = find_stat(st, "backend", "p:zero");
    assert_int_equal(s->latency_count, 10);
    assert_int_equal(s->latency_mean_ms, 0);
    assert_int_equal(s->latency_p50_ms, 0);
    assert_int_equal(s->latency_p99_ms, 0);
    assert_int_equal(s->latency_max_ms, 0);

    /* ranks round up: the 2nd of 3 for p50, the 3rd for p90 and p99 */
    s = find_stat(st, "backend", "p:three");
    assert_int_equal(s->latency_count, 3);
    assert_int_equal(s->latency_mean_ms, 343);
    assert_int_equal(s->latency_p50_ms, 20);
    assert_int_equal(s->latency_p90_ms, 1000);
    assert_int_equal(s->latency_p99_ms, 1000);

    s = find_stat(st, "backend", "p:none");
    assert_int_equal(s->latency_count, 0);
    assert_int_equal(s->latency_mean_ms, -1);
    assert_int_equal(s->latency_p50_ms, -1);
    assert_int_equal(s->latency_p90_ms, -1);
    assert_int_equal(s->latency_p99_ms, -1);
    assert_int_equal(s->latency_max_ms, -1);
    aigw_stats_free(st);
    aigw__health_free(h);
}

/* Any latency up to an hour is reported within 19% above it: two samples, v and a
 * huge one, make p50 the bound of v's bucket. */
static void test_latency_buckets_within_19_percent(void **state)
{
    int64_t v = 0;
    int round = 0;
    (void)state;
    while (v <= 3600000) {
        aigw_health *h = aigw__health_new();
        aigw_health_opts o = base_opts();
        aigw_stats *st;
        int i;
        int64_t vs[200];
        for (i = 0; i < 200 && v <= 3600000; i++) {
            char model[32];
            aigw_breaker *b;
            snprintf(model, sizeof model, "m%d", i);
            b = aigw__health_backend(h, "p", model);
            vs[i] = v;
            aigw__breaker_report(b, &o, AIGW_BR_SUCCESS, false, AIGW_CLASS_NONE, v, 0);
            aigw__breaker_report(b, &o, AIGW_BR_SUCCESS, false, AIGW_CLASS_NONE, 1000000000, 0);
            v = v < 300 ? v + 1 : v + v / 97 + 1;
        }
        st = aigw__health_snapshot(h, NULL, &o, 0);
        assert_non_null(st);
        assert_int_equal(aigw_stats_count(st), (size_t)i);
        while (i-- > 0) {
            const aigw_stat *s = aigw_stats_at(st, (size_t)i);
            if (s->latency_p50_ms < vs[i] || (double)s->latency_p50_ms > (double)vs[i] * 1.19 + 1e-9)
                fail_msg("latency %lld reported as %lld", (long long)vs[i],
                         (long long)s->latency_p50_ms);
        }
        aigw_stats_free(st);
        aigw__health_free(h);
        round++;
    }
    assert_true(round > 1);
}

/* ---- snapshot ---- */

static cJSON *item(const cJSON *o, const char *name)
{
    cJSON *x = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!x)
        fail_msg("no \"%s\"", name);
    return x;
}

static double num(const cJSON *o, const char *name)
{
    cJSON *x = item(o, name);
    assert_true(cJSON_IsNumber(x));
    return x->valuedouble;
}

static const char *str(const cJSON *o, const char *name)
{
    cJSON *x = item(o, name);
    assert_true(cJSON_IsString(x));
    return x->valuestring;
}

typedef struct test_cfg {
    aigw_config cfg;
    aigw_provider providers[1];
    aigw_pkey keys[2];
    aigw_rule rules[2];
    aigw_step steps1[2];
    aigw_step steps2[1];
    aigw_step_key sk1[2];
    aigw_step_key sk2[1];
} test_cfg;

/* providerKeys k1 (openai), k2 (anthropic); an openai rule with k1 again,
 * an inline key and an ngrok step; a model-only rule (gpt-4o: openai) with
 * another inline key; the ngrok access key. */
static void make_cfg(test_cfg *t)
{
    memset(t, 0, sizeof *t);
    t->providers[0].id = (char *)(uintptr_t)"openai";
    t->keys[0].id = (char *)(uintptr_t)"k1";
    t->keys[0].provider_id = (char *)(uintptr_t)"openai";
    t->keys[0].value = secret(v1);
    t->keys[1].id = (char *)(uintptr_t)"k2";
    t->keys[1].provider_id = (char *)(uintptr_t)"anthropic";
    t->keys[1].value = secret(v2);
    t->sk1[0].id = (char *)(uintptr_t)"k1";
    t->sk1[0].value = secret(v1);
    t->sk1[1].id = (char *)(uintptr_t)"inline1";
    t->sk1[1].value = secret(v3);
    t->steps1[0].type = AIGW_STEP_USER;
    t->steps1[0].keys = t->sk1;
    t->steps1[0].n_keys = 2;
    t->steps1[1].type = AIGW_STEP_NGROK;
    t->rules[0].provider = (char *)(uintptr_t)"openai";
    t->rules[0].steps = t->steps1;
    t->rules[0].n_steps = 2;
    t->sk2[0].id = (char *)(uintptr_t)"inline2";
    t->sk2[0].value = secret(v4);
    t->steps2[0].type = AIGW_STEP_USER;
    t->steps2[0].keys = t->sk2;
    t->steps2[0].n_keys = 1;
    t->rules[1].model = (char *)(uintptr_t)"gpt-4o";
    t->rules[1].steps = t->steps2;
    t->rules[1].n_steps = 1;
    t->cfg.providers = t->providers;
    t->cfg.n_providers = 1;
    t->cfg.keys = t->keys;
    t->cfg.n_keys = 2;
    t->cfg.rules = t->rules;
    t->cfg.n_rules = 2;
    t->cfg.has_ngrok_key = true;
    t->cfg.ngrok_key = secret(vngrok);
    t->cfg.health = base_opts();
}

static void test_snapshot_and_json(void **state)
{
    aigw_health *h = aigw__health_new();
    test_cfg t;
    const aigw_health_opts *o;
    aigw_hkey *k1, *k2;
    aigw_breaker *b1, *b2, *host;
    aigw_stats *st;
    const aigw_stat *s;
    const char *json;
    cJSON *root, *keys, *e, *fbc, *lat, *rb;
    int i;
    uint64_t req, ret, den;
    int64_t avail;
    (void)state;
    make_cfg(&t);
    o = &t.cfg.health;
    k1 = aigw__health_key(h, "openai", "k1", &t.keys[0].value);
    k2 = aigw__health_key(h, "anthropic", "k2", &t.keys[1].value);
    aigw__hkey_report(k1, o, AIGW_CLASS_NONE, -1, 120, 0);
    aigw__hkey_report(k1, o, AIGW_CLASS_RATE_LIMIT, 1500, -1, 1000);
    aigw__hkey_skipped(k1);
    aigw__hkey_report(k2, o, AIGW_CLASS_AUTH, -1, -1, 1000);
    aigw__hkey_report(k2, o, AIGW_CLASS_SERVER, -1, -1, 1000);
    b1 = aigw__health_backend(h, "openai", "gpt-4o");
    for (i = 0; i < 3; i++)
        aigw__breaker_report(b1, o, AIGW_BR_FAILURE, false, AIGW_CLASS_SERVER, -1, 1000);
    aigw__breaker_skipped(b1);
    b2 = aigw__health_backend(h, "anthropic", "claude");
    for (i = 0; i < 3; i++)
        aigw__breaker_report(b2, o, AIGW_BR_FAILURE, false, AIGW_CLASS_TIMEOUT, -1, 0);
    host = aigw__health_host(h, "https://api.openai.com/v1/chat/completions");
    aigw__breaker_report(host, o, AIGW_BR_SUCCESS, false, AIGW_CLASS_NONE, 80, 0);
    for (i = 0; i < 10; i++)
        aigw__budget_request(h, o, 1000);
    for (i = 0; i < 3; i++)
        aigw__budget_retry(h, o, 1000);

    st = aigw__health_snapshot(h, &t.cfg, o, 2000);
    assert_non_null(st);
    assert_int_equal(aigw_stats_count(st), 5 + 2 + 1);
    /* keys, in configuration order, each once */
    s = aigw_stats_at(st, 0);
    assert_string_equal(s->kind, "key");
    assert_string_equal(s->name, "k1");
    assert_string_equal(s->provider, "openai");
    assert_string_equal(s->model, "");
    assert_string_equal(s->state, "cooling");
    assert_string_equal(s->reason, "rate_limit");
    assert_int_equal(s->wait_ms, 500);
    assert_int_equal(s->requests, 2);
    assert_int_equal(s->successes, 1);
    assert_int_equal(s->failures, 1);
    assert_int_equal(s->skips, 1);
    assert_int_equal(s->latency_count, 1);
    assert_int_equal(s->latency_mean_ms, 120);
    assert_int_equal(s->latency_max_ms, 120);
    assert_int_equal(aigw_stat_failures(s, "rate_limit"), 1);
    assert_int_equal(aigw_stat_failures(s, "server"), 0);
    assert_int_equal(aigw_stat_failures(s, "bogus"), 0);
    assert_int_equal(aigw_stat_failures(s, NULL), 0);
    assert_int_equal(aigw_stat_failures(NULL, "server"), 0);
    s = aigw_stats_at(st, 1);
    assert_string_equal(s->name, "k2");
    assert_string_equal(s->provider, "anthropic");
    assert_string_equal(s->state, "benched");
    assert_string_equal(s->reason, "auth");
    assert_int_equal(s->wait_ms, 3600000 - 1000);
    assert_int_equal(s->failures, 2);
    assert_int_equal(aigw_stat_failures(s, "auth"), 1);
    assert_int_equal(aigw_stat_failures(s, "server"), 1);
    s = aigw_stats_at(st, 2);
    assert_string_equal(s->name, "inline1");
    assert_string_equal(s->provider, "openai");
    assert_string_equal(s->state, "ready");
    assert_string_equal(s->reason, "");
    assert_int_equal(s->wait_ms, 0);
    assert_int_equal(s->requests, 0);
    assert_int_equal(s->latency_mean_ms, -1);
    s = aigw_stats_at(st, 3);
    assert_string_equal(s->name, "inline2");
    assert_string_equal(s->provider, "openai"); /* resolved from the rule's model */
    s = aigw_stats_at(st, 4);
    assert_string_equal(s->name, "ngrok");
    assert_string_equal(s->provider, "ngrok");
    /* backends and hosts, in the order first seen */
    s = aigw_stats_at(st, 5);
    assert_string_equal(s->kind, "backend");
    assert_string_equal(s->name, "openai:gpt-4o");
    assert_string_equal(s->provider, "openai");
    assert_string_equal(s->model, "gpt-4o");
    assert_string_equal(s->state, "open");
    assert_string_equal(s->reason, "server");
    assert_int_equal(s->wait_ms, 4000);
    assert_int_equal(s->failures, 3);
    assert_int_equal(s->skips, 1);
    s = aigw_stats_at(st, 6);
    assert_string_equal(s->name, "anthropic:claude");
    assert_string_equal(s->state, "open");
    assert_int_equal(s->wait_ms, 3000);
    s = aigw_stats_at(st, 7);
    assert_string_equal(s->kind, "host");
    assert_string_equal(s->name, "https://api.openai.com:443");
    assert_string_equal(s->state, "closed");
    assert_string_equal(s->reason, "");
    assert_int_equal(s->successes, 1);
    assert_null(aigw_stats_at(st, 8));
    aigw_stats_budget(st, &req, &ret, &den, &avail);
    assert_int_equal(req, 10);
    assert_int_equal(ret, 2); /* 20% of 10 */
    assert_int_equal(den, 1);
    assert_int_equal(avail, 0);
    aigw_stats_budget(st, NULL, NULL, NULL, NULL);

    json = aigw_stats_json(st);
    assert_non_null(json);
    assert_ptr_equal(json, aigw_stats_json(st)); /* owned by the snapshot */
    assert_null(strstr(json, "SECRET"));
    root = cJSON_Parse(json);
    assert_non_null(root);
    keys = item(root, "keys");
    assert_int_equal(cJSON_GetArraySize(keys), 5);
    e = cJSON_GetArrayItem(keys, 0);
    assert_string_equal(str(e, "provider"), "openai");
    assert_string_equal(str(e, "id"), "k1");
    assert_string_equal(str(e, "state"), "cooling");
    assert_string_equal(str(e, "reason"), "rate_limit");
    assert_true(num(e, "waitMs") == 500);
    assert_true(num(e, "requests") == 2);
    assert_true(num(e, "successes") == 1);
    assert_true(num(e, "failures") == 1);
    assert_true(num(e, "skips") == 1);
    fbc = item(e, "failuresByClass");
    assert_int_equal(cJSON_GetArraySize(fbc), 1);
    assert_true(num(fbc, "rate_limit") == 1);
    lat = item(e, "latencyMs");
    assert_true(num(lat, "count") == 1);
    assert_true(num(lat, "mean") == 120);
    assert_true(num(lat, "p50") == 120);
    assert_true(num(lat, "p90") == 120);
    assert_true(num(lat, "p99") == 120);
    assert_true(num(lat, "max") == 120);
    e = cJSON_GetArrayItem(keys, 1);
    assert_string_equal(str(e, "state"), "benched");
    assert_string_equal(str(e, "reason"), "auth");
    fbc = item(e, "failuresByClass");
    assert_int_equal(cJSON_GetArraySize(fbc), 2);
    assert_true(num(fbc, "auth") == 1);
    assert_true(num(fbc, "server") == 1);
    e = cJSON_GetArrayItem(keys, 2);
    assert_string_equal(str(e, "state"), "ready");
    assert_true(cJSON_IsNull(item(e, "reason")));
    assert_true(num(e, "waitMs") == 0);
    assert_int_equal(cJSON_GetArraySize(item(e, "failuresByClass")), 0);
    lat = item(e, "latencyMs");
    assert_true(num(lat, "count") == 0);
    assert_true(cJSON_IsNull(item(lat, "mean")));
    assert_true(cJSON_IsNull(item(lat, "p50")));
    assert_true(cJSON_IsNull(item(lat, "max")));
    e = cJSON_GetArrayItem(keys, 4);
    assert_string_equal(str(e, "id"), "ngrok");
    assert_null(cJSON_GetObjectItemCaseSensitive(e, "value"));

    e = cJSON_GetArrayItem(item(root, "backends"), 0);
    assert_int_equal(cJSON_GetArraySize(item(root, "backends")), 2);
    assert_string_equal(str(e, "provider"), "openai");
    assert_string_equal(str(e, "model"), "gpt-4o");
    assert_string_equal(str(e, "state"), "open");
    assert_string_equal(str(e, "reason"), "server");
    assert_true(num(e, "waitMs") == 4000);
    assert_true(num(item(e, "failuresByClass"), "server") == 3);
    assert_int_equal(cJSON_GetArraySize(item(root, "hosts")), 1);
    e = cJSON_GetArrayItem(item(root, "hosts"), 0);
    assert_string_equal(str(e, "host"), "https://api.openai.com:443");
    assert_string_equal(str(e, "state"), "closed");
    assert_true(cJSON_IsNull(item(e, "reason")));
    assert_true(num(item(e, "latencyMs"), "mean") == 80);

    rb = item(root, "retryBudget");
    assert_true(cJSON_IsTrue(item(rb, "enabled")));
    assert_true(num(rb, "percent") == 20);
    assert_true(num(rb, "minPerSecond") == 0);
    assert_true(num(rb, "windowMs") == 10000);
    assert_true(num(rb, "requests") == 10);
    assert_true(num(rb, "retries") == 2);
    assert_true(num(rb, "denied") == 1);
    assert_true(num(rb, "available") == 0);
    cJSON_Delete(root);
    aigw_stats_free(st);

    /* later: the anthropic breaker may probe (half-open), then its probe is
     * out (half-open still); the openai one is open until 6000 */
    st = aigw__health_snapshot(h, &t.cfg, o, 5000);
    assert_non_null(st);
    assert_string_equal(find_stat(st, "backend", "anthropic:claude")->state, "half_open");
    assert_string_equal(find_stat(st, "backend", "anthropic:claude")->reason, "timeout");
    assert_int_equal(find_stat(st, "backend", "anthropic:claude")->wait_ms, 0);
    assert_string_equal(find_stat(st, "backend", "openai:gpt-4o")->state, "open");
    assert_string_equal(find_stat(st, "key", "k1")->state, "ready");
    assert_int_equal(find_stat(st, "key", "k1")->wait_ms, 0);
    aigw_stats_free(st);
    assert_int_equal(aigw__breaker_admit(b2, o, 5000, NULL), AIGW_ADMIT_PROBE);
    st = aigw__health_snapshot(h, &t.cfg, o, 5001);
    assert_string_equal(find_stat(st, "backend", "anthropic:claude")->state, "half_open");
    aigw_stats_free(st);
    /* breakers off: reported closed */
    t.cfg.health.breaker_threshold = 0;
    st = aigw__health_snapshot(h, &t.cfg, o, 5001);
    assert_string_equal(find_stat(st, "backend", "openai:gpt-4o")->state, "closed");
    assert_string_equal(find_stat(st, "backend", "openai:gpt-4o")->reason, "");
    aigw_stats_free(st);

    /* no configuration: no keys; budget off: available null */
    t.cfg.health.budget_on = false;
    st = aigw__health_snapshot(h, NULL, o, 5001);
    assert_int_equal(aigw_stats_count(st), 3);
    root = cJSON_Parse(aigw_stats_json(st));
    assert_non_null(root);
    assert_int_equal(cJSON_GetArraySize(item(root, "keys")), 0);
    rb = item(root, "retryBudget");
    assert_true(cJSON_IsFalse(item(rb, "enabled")));
    assert_true(cJSON_IsNull(item(rb, "available")));
    cJSON_Delete(root);
    aigw_stats_free(st);

    /* NULL-safe */
    aigw_stats_free(NULL);
    assert_int_equal(aigw_stats_count(NULL), 0);
    assert_null(aigw_stats_at(NULL, 0));
    assert_null(aigw_stats_json(NULL));
    aigw_stats_budget(NULL, &req, &ret, &den, &avail);
    assert_int_equal(req, 0);
    assert_int_equal(avail, -1);
    assert_null(aigw__health_snapshot(NULL, &t.cfg, o, 0));
    aigw__health_free(h);
}

/* Snapshot keys dedupe on the value too: the same id with another value is
 * listed twice. */
static void test_snapshot_same_id_other_value(void **state)
{
    aigw_health *h = aigw__health_new();
    test_cfg t;
    aigw_stats *st;
    (void)state;
    make_cfg(&t);
    t.sk1[1].id = (char *)(uintptr_t)"k1"; /* an inline key named like the providerKey */
    t.cfg.has_ngrok_key = false;
    st = aigw__health_snapshot(h, &t.cfg, NULL, 0); /* opts from cfg */
    assert_non_null(st);
    assert_int_equal(aigw_stats_count(st), 4);
    assert_string_equal(aigw_stats_at(st, 0)->name, "k1");
    assert_string_equal(aigw_stats_at(st, 1)->name, "k2");
    assert_string_equal(aigw_stats_at(st, 2)->name, "k1");
    assert_string_equal(aigw_stats_at(st, 2)->provider, "openai");
    assert_string_equal(aigw_stats_at(st, 3)->name, "inline2");
    aigw_stats_free(st);
    aigw__health_free(h);
}

/* ---- out of memory ---- */

static void test_out_of_memory(void **state)
{
    test_cfg t;
    long n;
    int ok = 0;
    (void)state;
    make_cfg(&t);
    /* a health table and its lookups */
    for (n = 1; n < 200 && !ok; n++) {
        aigw_health *h;
        aigw__alloc_fail_at(n);
        h = aigw__health_new();
        if (h) {
            aigw_hkey *k = aigw__health_key(h, "openai", "k1", &t.keys[0].value);
            aigw_breaker *b = aigw__health_backend(h, "openai", "gpt-4o");
            aigw_breaker *hb = aigw__health_host(h, "https://api.openai.com/v1");
            ok = k && b && hb;
            aigw__hkey_report(k, &t.cfg.health, AIGW_CLASS_AUTH, -1, -1, 0);
            aigw__breaker_report(b, &t.cfg.health, AIGW_BR_FAILURE, false, AIGW_CLASS_SERVER,
                                 -1, 0);
        }
        aigw__alloc_fail_at(0);
        aigw__health_free(h);
    }
    assert_true(ok);
    assert_true(n > 4);
    /* snapshots: every allocation failing makes it fail cleanly (the keys
     * exist already, so their lookups allocate nothing) */
    ok = 0;
    for (n = 1; n < 500 && !ok; n++) {
        aigw_health *h = aigw__health_new();
        aigw_stats *st;
        aigw__health_backend(h, "openai", "gpt-4o");
        aigw__health_host(h, "https://api.openai.com/v1");
        aigw_stats_free(aigw__health_snapshot(h, &t.cfg, &t.cfg.health, 0));
        aigw__alloc_fail_at(n);
        st = aigw__health_snapshot(h, &t.cfg, &t.cfg.health, 0);
        aigw__alloc_fail_at(0);
        if (st) {
            assert_int_equal(aigw_stats_count(st), 5 + 2);
            assert_non_null(aigw_stats_json(st));
            ok = 1;
            aigw_stats_free(st);
        }
        aigw__health_free(h);
    }
    assert_true(ok);
    assert_true(n > 10);
    /* a key that cannot be made: listed all the same, untracked (ready, no
     * counts), and the snapshot succeeds */
    ok = 0;
    for (n = 1; n < 100 && !ok; n++) {
        aigw_health *h = aigw__health_new();
        aigw_stats *st;
        aigw__alloc_fail_at(n);
        st = aigw__health_snapshot(h, &t.cfg, &t.cfg.health, 0);
        aigw__alloc_fail_at(0);
        if (st && aigw__health_reset(h, NULL) < 5) {
            assert_int_equal(aigw_stats_count(st), 5);
            assert_string_equal(aigw_stats_at(st, 0)->state, "ready");
            ok = 1;
        }
        aigw_stats_free(st);
        aigw__health_free(h);
    }
    assert_true(ok);
}

/* ---- caps ---- */

static void test_table_caps(void **state)
{
    aigw_health *h = aigw__health_new();
    aigw_health_opts o = base_opts();
    aigw_breaker *first = NULL;
    aigw_hkey *k;
    char name[64];
    int i;
    (void)state;
    for (i = 0; i < AIGW_HEALTH_MAX_BACKENDS; i++) {
        aigw_breaker *b;
        snprintf(name, sizeof name, "model-%d", i);
        b = aigw__health_backend(h, "p", name);
        assert_non_null(b);
        if (i == 0)
            first = b;
    }
    assert_null(aigw__health_backend(h, "p", "one-too-many"));
    assert_ptr_equal(first, aigw__health_backend(h, "p", "model-0")); /* still found */
    snprintf(name, sizeof name, "model-%d", AIGW_HEALTH_MAX_BACKENDS - 1);
    assert_non_null(aigw__health_backend(h, "p", name));
    for (i = 0; i < AIGW_HEALTH_MAX_HOSTS; i++) {
        snprintf(name, sizeof name, "http://h%d.example", i);
        assert_non_null(aigw__health_host(h, name));
    }
    assert_null(aigw__health_host(h, "http://one-too-many.example"));
    assert_non_null(aigw__health_host(h, "http://H0.example:80/x"));
    for (i = 0; i < AIGW_HEALTH_MAX_KEYS; i++) {
        snprintf(name, sizeof name, "key-%d", i);
        assert_non_null(aigw__health_key(h, "p", name, NULL));
    }
    k = aigw__health_key(h, "p", "one-too-many", NULL);
    assert_null(k);
    /* an untracked key: always ready, never counted */
    aigw__hkey_report(k, &o, AIGW_CLASS_RATE_LIMIT, 5000, -1, 0);
    assert_int_equal(aigw__hkey_state(k, 0, NULL), AIGW_KEY_READY);
    assert_int_equal(aigw__health_reset(h, NULL), AIGW_HEALTH_MAX_KEYS);
    aigw__health_free(h);
}

/* ---- threads ---- */

#define N_THREADS 4
#define N_ITER 20000

typedef struct worker {
    aigw_health *h;
    aigw_health_opts o;
    int index;
    uint64_t granted;
    int bad;
} worker;

static void *work(void *arg)
{
    worker *w = arg;
    int i;
    for (i = 0; i < N_ITER; i++) {
        char id[16], model[16];
        int64_t now = i, wait;
        aigw_hkey *k;
        aigw_breaker *b;
        aigw_admit a;
        aigw_key_health v;
        snprintf(id, sizeof id, "k%d", i % 8);
        snprintf(model, sizeof model, "m%d", (i * 7 + w->index) % 50);
        k = aigw__health_key(w->h, "p", id, NULL);
        aigw__hkey_state(k, now, &wait);
        aigw__hkey_view(k, now, 1, &v);
        aigw__hkey_report(k, &w->o, (aigw_class)(i % AIGW_CLASS__COUNT), i % 3 ? -1 : 50, i % 200,
                          now);
        if (i % 5 == 0)
            aigw__hkey_skipped(k);
        b = aigw__health_backend(w->h, "p", model);
        a = aigw__breaker_admit(b, &w->o, now, &wait);
        if (a == AIGW_ADMIT_OPEN)
            aigw__breaker_skipped(b);
        else
            aigw__breaker_report(b, &w->o, i % 4 ? AIGW_BR_FAILURE : AIGW_BR_SUCCESS,
                                 a == AIGW_ADMIT_PROBE, AIGW_CLASS_SERVER, i % 100, now);
        b = aigw__health_host(w->h, i % 2 ? "https://a.example/v1" : "https://b.example/v1");
        aigw__breaker_report(b, &w->o, AIGW_BR_SUCCESS, false, AIGW_CLASS_NONE, 5, now);
        aigw__budget_request(w->h, &w->o, now);
        if (aigw__budget_retry(w->h, &w->o, now))
            w->granted++;
        if (i % 1000 == 0) {
            aigw_stats *st = aigw__health_snapshot(w->h, NULL, &w->o, now);
            if (!st || !aigw_stats_json(st))
                w->bad++; /* no cmocka asserts off the main thread */
            aigw_stats_free(st);
            aigw__health_reset(w->h, w->index == 0 ? NULL : "k1");
            aigw__health_end_benches(w->h);
        }
    }
    return NULL;
}

static void test_threads(void **state)
{
    aigw_health *h = aigw__health_new();
    pthread_t th[N_THREADS];
    worker w[N_THREADS];
    aigw_stats *st;
    uint64_t key_requests = 0, host_requests = 0, granted = 0, req, ret, den;
    size_t i;
    (void)state;
    for (i = 0; i < N_THREADS; i++) {
        w[i].h = h;
        w[i].o = base_opts();
        w[i].index = (int)i;
        w[i].granted = 0;
        w[i].bad = 0;
        assert_int_equal(pthread_create(&th[i], NULL, work, &w[i]), 0);
    }
    for (i = 0; i < N_THREADS; i++) {
        pthread_join(th[i], NULL);
        granted += w[i].granted;
        assert_int_equal(w[i].bad, 0);
    }
    for (i = 0; i < 8; i++) {
        char id[16];
        aigw_key_health v;
        snprintf(id, sizeof id, "k%zu", i);
        aigw__hkey_view(aigw__health_key(h, "p", id, NULL), 0, 1, &v);
        key_requests += v.requests;
    }
    assert_int_equal(key_requests, (uint64_t)N_THREADS * N_ITER);
    st = aigw__health_snapshot(h, NULL, &w[0].o, N_ITER);
    assert_non_null(st);
    assert_int_equal(aigw_stats_count(st), 50 + 2);
    host_requests = find_stat(st, "host", "https://a.example:443")->requests +
                    find_stat(st, "host", "https://b.example:443")->requests;
    assert_int_equal(host_requests, (uint64_t)N_THREADS * N_ITER);
    aigw_stats_budget(st, &req, &ret, &den, NULL);
    assert_int_equal(req, (uint64_t)N_THREADS * N_ITER);
    assert_int_equal(ret, granted);
    assert_int_equal(ret + den, (uint64_t)N_THREADS * N_ITER);
    aigw_stats_free(st);
    aigw__health_free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_siphash_vectors),
        cmocka_unit_test(test_key_identity),
        cmocka_unit_test(test_cooldown_with_wait),
        cmocka_unit_test(test_cooldown_jitter),
        cmocka_unit_test(test_cooldown_only_extends_and_cap),
        cmocka_unit_test(test_bench),
        cmocka_unit_test(test_reset),
        cmocka_unit_test(test_key_counters),
        cmocka_unit_test(test_breaker_opens_after_threshold),
        cmocka_unit_test(test_breaker_probe_outcomes),
        cmocka_unit_test(test_breaker_off),
        cmocka_unit_test(test_budget_exhaustion),
        cmocka_unit_test(test_budget_floor),
        cmocka_unit_test(test_budget_window_slides),
        cmocka_unit_test(test_budget_off),
        cmocka_unit_test(test_host_normalisation),
        cmocka_unit_test(test_latency_percentiles),
        cmocka_unit_test(test_latency_buckets_within_19_percent),
        cmocka_unit_test(test_snapshot_and_json),
        cmocka_unit_test(test_snapshot_same_id_other_value),
        cmocka_unit_test(test_out_of_memory),
        cmocka_unit_test(test_table_caps),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
