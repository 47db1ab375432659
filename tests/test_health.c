/*
 * test_health.c - what a client remembers across requests, each fact at its
 * scope, with the clock passed in: keys (benches, counters), endpoints (a
 * key with one upstream model: cooldowns and outlier breakers), backends
 * (counters, a state derived from their endpoints), hosts (breakers), the
 * retry budget, host names, latency percentiles, the snapshot and its JSON,
 * the table caps, running out of memory, and four threads at once (for
 * TSan).
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
#include "health_int.h" /* white box: an endpoint's key */
#include "htable.h"
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
static char vngrok_old[] = "ngrok-SECRET-older";
static char vempty[] = "";

static aigw_secret secret(char *s)
{
    aigw_secret x;
    x.value = s;
    x.len = strlen(s);
    return x;
}

/* A configured key without a value (the value is not what these tests are
 * about). */
static aigw_hkey *key_of(aigw_health *h, const char *provider, const char *id)
{
    return aigw__health_key(h, provider, id, NULL, AIGW_ORIGIN_CONFIG);
}

/* The time left of a key's state on one endpoint. */
static int64_t wait_of(const aigw_hkey *k, const aigw_endpoint *e, int64_t now)
{
    int64_t w = -42;
    (void)aigw__key_state(k, e, now, &w);
    return w;
}

static aigw_breaker *br(aigw_endpoint *e)
{
    return aigw__endpoint_breaker(e);
}

/* o->breaker_threshold failures of class cls: opens a closed breaker. */
static void fail_n(aigw_breaker *b, const aigw_health_opts *o, aigw_class cls, int64_t now)
{
    int i;
    for (i = 0; i < o->breaker_threshold; i++)
        aigw__breaker_report(b, o, AIGW_HEAR_FAILURE, false, cls, -1, now);
}

/* ---- snapshot helpers ---- */

/* An endpoint's entry: its key's provider and id, and the model. */
static const aigw_stat *stat_endpoint(const aigw_stats *st, const char *provider, const char *id,
                                      const char *model)
{
    size_t i;
    for (i = 0; i < aigw_stats_count(st); i++) {
        const aigw_stat *s = aigw_stats_at(st, i);
        if (strcmp(s->kind, "endpoint") == 0 && strcmp(s->provider, provider) == 0 &&
            strcmp(s->name, id) == 0 && strcmp(s->model, model) == 0)
            return s;
    }
    fail_msg("no endpoint %s %s %s", provider, id, model);
    return NULL;
}

static size_t count_kind(const aigw_stats *st, const char *kind)
{
    size_t i, n = 0;
    for (i = 0; i < aigw_stats_count(st); i++)
        n += strcmp(aigw_stats_at(st, i)->kind, kind) == 0;
    return n;
}

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

/* The text of one top-level array of a snapshot's JSON, brackets included
 * (allocated). */
static char *json_section(const char *json, const char *name)
{
    char pat[64];
    const char *p, *q;
    int depth = 0;
    char *out;
    snprintf(pat, sizeof pat, "\"%s\":[", name);
    p = strstr(json, pat);
    assert_non_null(p);
    p += strlen(pat) - 1;
    for (q = p;; q++) { /* no brackets inside the strings of these tests */
        assert_true(*q != '\0');
        if (*q == '[' || *q == '{')
            depth++;
        else if ((*q == ']' || *q == '}') && --depth == 0)
            break;
    }
    out = malloc((size_t)(q - p) + 2);
    assert_non_null(out);
    memcpy(out, p, (size_t)(q - p) + 1);
    out[q - p + 1] = '\0';
    return out;
}

typedef struct test_cfg {
    aigw_config cfg;
    aigw_provider providers[2];
    aigw_pkey keys[2];
    aigw_rule rules[2];
    aigw_akc akc;
    aigw_step steps1[2];
    aigw_step steps2[1];
    aigw_step_key sk1[2];
    aigw_step_key sk2[1];
    aigw_key_entry all[4];
} test_cfg;

/* providerKeys k1 (openai), k2 (anthropic); an openai rule with k1 again,
 * an inline key and an ngrok step; a model-only rule (gpt-4o: openai) with
 * another inline key; the ngrok access key.  Its keys as the parser lists
 * them (aigw__config_keys): k1, k2, inline1, inline2 (k1 once; inline2's
 * provider resolved from the rule's model). */
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
    t->rules[1].provider = (char *)(uintptr_t)"openai"; /* as rule_target resolves it */
    t->rules[1].steps = t->steps2;
    t->rules[1].n_steps = 1;
    t->cfg.providers = t->providers;
    t->cfg.n_providers = 1;
    t->cfg.keys = t->keys;
    t->cfg.n_keys = 2;
    t->akc.rules = t->rules;
    t->akc.n_rules = 2;
    t->cfg.akcs = &t->akc;
    t->cfg.n_akcs = 1;
    t->cfg.has_ngrok_key = true;
    t->cfg.ngrok_key = secret(vngrok);
    t->cfg.health = base_opts();
    t->all[0].provider = "openai";
    t->all[0].id = "k1";
    t->all[0].value = &t->keys[0].value;
    t->all[1].provider = "anthropic";
    t->all[1].id = "k2";
    t->all[1].value = &t->keys[1].value;
    t->all[2].provider = "openai";
    t->all[2].id = "inline1";
    t->all[2].value = &t->sk1[1].value;
    t->all[3].provider = "openai";
    t->all[3].id = "inline2";
    t->all[3].value = &t->sk2[0].value;
    t->cfg.all_keys = t->all;
    t->cfg.n_all_keys = 4;
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

/* ---- key and endpoint identity ---- */

static void test_key_identity(void **state)
{
    aigw_health *h = aigw__health_new();
    aigw_secret a = secret(v1), a2, b = secret(v2), e = secret(vempty);
    aigw_hkey *k, *k2;
    aigw_endpoint *ep;
    char copy[sizeof v1];
    (void)state;
    memcpy(copy, v1, sizeof v1);
    a2 = secret(copy);
    k = aigw__health_key(h, "openai", "k1", &a, AIGW_ORIGIN_CONFIG);
    assert_non_null(k);
    /* same triple (the value compared by content): the same entry */
    assert_ptr_equal(k, aigw__health_key(h, "openai", "k1", &a2, AIGW_ORIGIN_CONFIG));
    /* the origin is recorded when the entry is made, not part of its identity */
    assert_ptr_equal(k, aigw__health_key(h, "openai", "k1", &a, AIGW_ORIGIN_NGROK));
    /* same id, another value: another entry */
    assert_ptr_not_equal(k, aigw__health_key(h, "openai", "k1", &b, AIGW_ORIGIN_CONFIG));
    assert_ptr_not_equal(k, aigw__health_key(h, "anthropic", "k1", &a, AIGW_ORIGIN_CONFIG));
    assert_ptr_not_equal(k, aigw__health_key(h, "openai", "k2", &a, AIGW_ORIGIN_CONFIG));
    /* no value, and an empty one, are keys of their own */
    assert_non_null(aigw__health_key(h, "local", "", NULL, AIGW_ORIGIN_NONE));
    assert_ptr_equal(aigw__health_key(h, "local", "", NULL, AIGW_ORIGIN_NONE),
                     aigw__health_key(h, "local", NULL, NULL, AIGW_ORIGIN_NONE));
    assert_ptr_not_equal(aigw__health_key(h, "local", "", NULL, AIGW_ORIGIN_NONE),
                         aigw__health_key(h, "local", "", &e, AIGW_ORIGIN_NONE));
    /* "ab"+"c" and "a"+"bc" are different keys */
    assert_ptr_not_equal(key_of(h, "ab", "c"), key_of(h, "a", "bc"));
    assert_null(aigw__health_key(NULL, "openai", "k1", &a, AIGW_ORIGIN_CONFIG));

    /* endpoints: one per key and model */
    ep = aigw__health_endpoint(h, k, "gpt-4o", true);
    assert_non_null(ep);
    assert_ptr_equal(ep, aigw__health_endpoint(h, k, "gpt-4o", true));
    assert_ptr_equal(ep, aigw__health_endpoint(
                             h, aigw__health_key(h, "openai", "k1", &a2, AIGW_ORIGIN_CONFIG),
                             "gpt-4o", true));
    assert_ptr_not_equal(ep, aigw__health_endpoint(h, k, "gpt-4o-mini", true));
    k2 = aigw__health_key(h, "openai", "k1", &b, AIGW_ORIGIN_CONFIG); /* same id, other value */
    assert_ptr_not_equal(ep, aigw__health_endpoint(h, k2, "gpt-4o", true));
    assert_ptr_not_equal(ep, aigw__health_endpoint(h, key_of(h, "azure", "k1"), "gpt-4o", true));
    assert_non_null(br(ep));
    assert_ptr_equal(br(ep), br(aigw__health_endpoint(h, k, "gpt-4o", true)));
    assert_ptr_not_equal(br(ep), br(aigw__health_endpoint(h, k, "gpt-4o-mini", true)));
    assert_null(aigw__health_endpoint(h, NULL, "gpt-4o", true));
    assert_null(aigw__health_endpoint(NULL, k, "gpt-4o", true));
    assert_null(br(NULL));
    aigw__health_free(h);
    aigw__health_free(NULL);
}

/* What lookups remember (a key's last endpoint, a caller's last backend)
 * never answers for another model, provider or key; a find does not make. */
static void test_lookups_remembered(void **state)
{
    aigw_health *h = aigw__health_new();
    aigw_secret a = secret(v1);
    aigw_hkey *k = aigw__health_key(h, "openai", "k1", &a, AIGW_ORIGIN_CONFIG);
    aigw_hkey *k2 = key_of(h, "openai", "k2");
    _Atomic(aigw_breaker *) memo;
    aigw_endpoint *e1, *e2;
    aigw_breaker *b1, *b2;
    (void)state;
    assert_null(aigw__health_endpoint(h, k, "m1", false));
    e1 = aigw__health_endpoint(h, k, "m1", true);
    e2 = aigw__health_endpoint(h, k, "m2", true);
    assert_non_null(e1);
    assert_ptr_not_equal(e1, e2);
    assert_ptr_equal(aigw__health_endpoint(h, k, "m1", false), e1);
    assert_ptr_equal(aigw__health_endpoint(h, k, "m2", false), e2);
    assert_null(aigw__health_endpoint(h, k, "m3", false));
    assert_null(aigw__health_endpoint(h, k2, "m1", false));
    assert_ptr_not_equal(aigw__health_endpoint(h, k2, "m1", true), e1);
    assert_ptr_equal(aigw__health_endpoint(h, k, "m1", true), e1);

    atomic_init(&memo, NULL);
    b1 = aigw__health_backend_at(h, "openai", "m1", &memo);
    assert_ptr_equal(b1, aigw__health_backend(h, "openai", "m1"));
    assert_ptr_equal(aigw__health_backend_at(h, "openai", "m1", &memo), b1);
    b2 = aigw__health_backend_at(h, "openai", "m2", &memo);
    assert_ptr_not_equal(b1, b2);
    assert_ptr_equal(b2, aigw__health_backend(h, "openai", "m2"));
    assert_ptr_not_equal(aigw__health_backend_at(h, "azure", "m2", &memo), b2);
    assert_ptr_equal(aigw__health_backend_at(h, "openai", "m1", &memo), b1);
    assert_ptr_equal(aigw__health_backend_at(h, "openai", "m1", NULL), b1);

    /* a host by its origin is the host of any URL with that origin */
    assert_ptr_equal(aigw__health_host_origin(h, "https://api.openai.com:443"),
                     aigw__health_host(h, "https://API.openai.com/v1"));
    assert_null(aigw__health_host_origin(h, NULL));
    aigw__health_free(h);
}

/* ---- cooldowns (per endpoint) ---- */

static void test_cooldown_with_wait(void **state)
{
    aigw_health *h = aigw__health_new();
    aigw_health_opts o = base_opts();
    aigw_secret s = secret(v1);
    aigw_hkey *k = aigw__health_key(h, "openai", "k1", &s, AIGW_ORIGIN_CONFIG);
    aigw_endpoint *e = aigw__health_endpoint(h, k, "gpt-4o", true);
    aigw_key_health v;
    (void)state;
    assert_int_equal(aigw__key_state(k, e, 1000, NULL), AIGW_KEY_READY);
    assert_int_equal(wait_of(k, e, 1000), 0);
    assert_int_equal(aigw__key_reason(k, e, 1000), AIGW_CLASS_NONE);
    aigw__key_view(k, e, 1000, 7, &v);
    assert_int_equal(v.since_limited_ms, -1);

    /* a rate limit, as the engine records it: counted on the key and the
     * endpoint, and the endpoint cools */
    aigw__hkey_count(k, AIGW_CLASS_RATE_LIMIT, -1);
    aigw__breaker_report(br(e), &o, AIGW_HEAR_NEUTRAL, false, AIGW_CLASS_RATE_LIMIT, -1, 1000);
    assert_int_equal(aigw__endpoint_cool(e, &o, 1500, 1000), 1500);
    assert_int_equal(aigw__key_state(k, e, 1000, NULL), AIGW_KEY_COOLING);
    assert_int_equal(wait_of(k, e, 1000), 1500);
    assert_int_equal(aigw__key_reason(k, e, 1000), AIGW_CLASS_RATE_LIMIT);
    assert_int_equal(wait_of(k, e, 2499), 1);
    assert_int_equal(aigw__key_state(k, e, 2499, NULL), AIGW_KEY_COOLING);
    /* the key itself is not cooling: a cooldown is the endpoint's */
    assert_int_equal(aigw__key_state(k, NULL, 1000, NULL), AIGW_KEY_READY);
    assert_int_equal(wait_of(k, NULL, 1000), 0);
    assert_int_equal(aigw__key_reason(k, NULL, 1000), AIGW_CLASS_NONE);
    /* nor is the endpoint's breaker */
    assert_true(aigw__breaker_would_admit(br(e), &o, 1000));
    /* expires exactly at the boundary */
    assert_int_equal(aigw__key_state(k, e, 2500, NULL), AIGW_KEY_READY);
    assert_int_equal(wait_of(k, e, 2500), 0);
    assert_int_equal(aigw__key_reason(k, e, 2500), AIGW_CLASS_NONE);

    aigw__key_view(k, e, 3000, 7, &v);
    assert_string_equal(v.id, "k1");
    assert_int_equal(v.state, AIGW_KEY_READY);
    assert_int_equal(v.wait_ms, 0);
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
    aigw_hkey *k = key_of(h, "openai", "k1");
    aigw_endpoint *e = aigw__health_endpoint(h, k, "gpt-4o", true);
    int64_t lo = INT64_MAX, hi = 0;
    int i;
    (void)state;
    for (i = 0; i < 2000; i++) {
        int64_t w;
        assert_int_equal(aigw__health_reset(h, "k1"), 1);
        w = aigw__endpoint_cool(e, &o, -1, 0);
        assert_int_equal(wait_of(k, e, 0), w);
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
        w = aigw__endpoint_cool(e, &o, -1, 0);
        assert_int_equal(wait_of(k, e, 0), w);
        assert_true(w >= 1 && w <= 3);
    }
    /* the jittered default is capped too */
    o.cooldown_ms = 2000;
    o.cooldown_max_ms = 500;
    for (i = 0; i < 50; i++) {
        aigw__health_reset(h, NULL);
        assert_int_equal(aigw__endpoint_cool(e, &o, -1, 0), 500);
        assert_int_equal(wait_of(k, e, 0), 500);
    }
    /* cooldown 0: no cooldown at all */
    o = base_opts();
    o.cooldown_ms = 0;
    aigw__health_reset(h, NULL);
    assert_int_equal(aigw__endpoint_cool(e, &o, -1, 0), 0);
    assert_int_equal(aigw__key_state(k, e, 0, NULL), AIGW_KEY_READY);
    aigw__health_free(h);
}

static void test_cooldown_only_extends_and_cap(void **state)
{
    aigw_health *h = aigw__health_new();
    aigw_health_opts o = base_opts();
    aigw_hkey *k = key_of(h, "openai", "k1");
    aigw_endpoint *e = aigw__health_endpoint(h, k, "gpt-4o", true);
    aigw_key_health v;
    (void)state;
    assert_int_equal(aigw__endpoint_cool(e, &o, 5000, 0), 5000);
    /* shorter: kept (and the cooldown in force is what it returns) */
    assert_int_equal(aigw__endpoint_cool(e, &o, 1000, 100), 4900);
    assert_int_equal(wait_of(k, e, 100), 4900);
    /* longer: extends */
    assert_int_equal(aigw__endpoint_cool(e, &o, 10000, 200), 10000);
    assert_int_equal(wait_of(k, e, 200), 10000);
    /* a jittered default shorter than what is in force: kept */
    assert_int_equal(aigw__endpoint_cool(e, &o, -1, 300), 9900);
    aigw__key_view(k, e, 400, 1, &v);
    assert_int_equal(v.since_limited_ms, 100); /* the latest limit */
    /* a limit reported late (an earlier time) does not move it back */
    aigw__endpoint_cool(e, &o, 0, 250);
    aigw__key_view(k, e, 400, 1, &v);
    assert_int_equal(v.since_limited_ms, 100);
    /* the upstream's wait is capped by cooldown_max_ms */
    aigw__health_reset(h, NULL);
    assert_int_equal(aigw__endpoint_cool(e, &o, 3600000, 1000), 60000);
    assert_int_equal(wait_of(k, e, 1000), 60000);
    /* wait 0: no cooldown, but the limit is remembered (what it returns
     * then: test_cool_none_in_force) */
    aigw__health_reset(h, NULL);
    aigw__endpoint_cool(e, &o, 0, 5000);
    assert_int_equal(aigw__key_state(k, e, 5000, NULL), AIGW_KEY_READY);
    aigw__key_view(k, e, 5250, 1, &v);
    assert_int_equal(v.since_limited_ms, 250);
    /* cooling counts nothing: counting is the caller's (hkey_count and the
     * endpoint's breaker report) */
    assert_int_equal(v.requests, 0);
    assert_int_equal(v.failures, 0);
    /* NULL-safe: an untracked endpoint never cools */
    assert_int_equal(aigw__endpoint_cool(NULL, &o, 5000, 0), 0);
    assert_int_equal(aigw__endpoint_cool(e, NULL, 5000, 0), 0);
    aigw__health_free(h);
}

/* With no cooldown in force after it (wait 0, or cooldown_ms 0), cooling
 * returns 0, whenever it is: on an endpoint never cooled, after a reset,
 * after a cooldown that has run out. */
static void test_cool_none_in_force(void **state)
{
    aigw_health *h = aigw__health_new();
    aigw_health_opts o = base_opts();
    aigw_hkey *k = key_of(h, "openai", "k1");
    aigw_endpoint *e = aigw__health_endpoint(h, k, "gpt-4o", true);
    aigw_endpoint *e2 = aigw__health_endpoint(h, k, "gpt-4o-mini", true);
    (void)state;
    /* never cooled */
    assert_int_equal(aigw__endpoint_cool(e, &o, 0, 5000), 0);
    assert_int_equal(aigw__key_state(k, e, 5000, NULL), AIGW_KEY_READY);
    /* a cooldown run out */
    assert_int_equal(aigw__endpoint_cool(e, &o, 100, 5000), 100);
    assert_int_equal(aigw__endpoint_cool(e, &o, 0, 6000), 0);
    /* after a reset */
    assert_int_equal(aigw__endpoint_cool(e, &o, 1000, 7000), 1000);
    aigw__health_reset(h, "k1");
    assert_int_equal(aigw__endpoint_cool(e, &o, 0, 7000), 0);
    /* cooldown_ms 0 and no wait named */
    o.cooldown_ms = 0;
    assert_int_equal(aigw__endpoint_cool(e2, &o, -1, 8000), 0);
    assert_int_equal(aigw__key_state(k, e2, 8000, NULL), AIGW_KEY_READY);
    aigw__health_free(h);
}

/* A rate limit on (k, gpt-4o) leaves (k, gpt-4o-mini) ready: providers
 * limit per model.  The view a strategy gets is per model too. */
static void test_rate_limit_per_model(void **state)
{
    aigw_health *h = aigw__health_new();
    aigw_health_opts o = base_opts();
    aigw_hkey *k = key_of(h, "openai", "k1");
    aigw_hkey *k2 = key_of(h, "openai", "k2");
    aigw_endpoint *big = aigw__health_endpoint(h, k, "gpt-4o", true);
    aigw_endpoint *mini = aigw__health_endpoint(h, k, "gpt-4o-mini", true);
    aigw_endpoint *other = aigw__health_endpoint(h, k2, "gpt-4o", true);
    aigw_key_health v;
    aigw_stats *st;
    const aigw_stat *s;
    int64_t w = -1;
    (void)state;
    aigw__breaker_report(br(big), &o, AIGW_HEAR_NEUTRAL, false, AIGW_CLASS_RATE_LIMIT, -1, 1000);
    assert_int_equal(aigw__endpoint_cool(big, &o, 3000, 1000), 3000);
    aigw__breaker_report(br(mini), &o, AIGW_HEAR_SUCCESS, false, AIGW_CLASS_NONE, 40, 1200);
    aigw__key_skipped(big ? big->key : NULL, big);

    assert_int_equal(aigw__key_state(k, big, 1500, &w), AIGW_KEY_COOLING);
    assert_int_equal(w, 2500);
    assert_int_equal(aigw__key_reason(k, big, 1500), AIGW_CLASS_RATE_LIMIT);
    assert_int_equal(aigw__key_state(k, mini, 1500, &w), AIGW_KEY_READY);
    assert_int_equal(w, 0);
    assert_int_equal(aigw__key_reason(k, mini, 1500), AIGW_CLASS_NONE);
    /* another key on the same model: ready */
    assert_int_equal(aigw__key_state(k2, other, 1500, &w), AIGW_KEY_READY);
    assert_int_equal(w, 0);

    aigw__key_view(k, big, 1500, 2, &v);
    assert_string_equal(v.id, "k1");
    assert_int_equal(v.state, AIGW_KEY_COOLING);
    assert_int_equal(v.wait_ms, 2500);
    assert_int_equal(v.since_limited_ms, 500);
    assert_int_equal(v.weight, 2);
    assert_int_equal(v.requests, 1);
    assert_int_equal(v.successes, 0);
    assert_int_equal(v.failures, 1);
    assert_int_equal(v.latency_mean_ms, -1);
    aigw__key_view(k, mini, 1500, 2, &v);
    assert_string_equal(v.id, "k1");
    assert_int_equal(v.state, AIGW_KEY_READY);
    assert_int_equal(v.wait_ms, 0);
    assert_int_equal(v.since_limited_ms, -1);
    assert_int_equal(v.requests, 1);
    assert_int_equal(v.successes, 1);
    assert_int_equal(v.failures, 0);
    assert_int_equal(v.latency_mean_ms, 40);
    aigw__key_view(k2, other, 1500, 1, &v);
    assert_string_equal(v.id, "k2");
    assert_int_equal(v.state, AIGW_KEY_READY);
    assert_int_equal(v.since_limited_ms, -1);
    assert_int_equal(v.requests, 0);

    /* the snapshot lists each endpoint with its own state */
    st = aigw__health_snapshot(h, NULL, &o, 1500);
    assert_non_null(st);
    assert_int_equal(aigw_stats_count(st), 3);
    s = stat_endpoint(st, "openai", "k1", "gpt-4o");
    assert_string_equal(s->state, "cooling");
    assert_string_equal(s->reason, "rate_limit");
    assert_int_equal(s->wait_ms, 2500);
    assert_int_equal(s->skips, 1);
    assert_int_equal(aigw_stat_failures(s, "rate_limit"), 1);
    s = stat_endpoint(st, "openai", "k1", "gpt-4o-mini");
    assert_string_equal(s->state, "ready");
    assert_string_equal(s->reason, "");
    assert_int_equal(s->wait_ms, 0);
    assert_int_equal(s->skips, 0);
    assert_int_equal(s->successes, 1);
    s = stat_endpoint(st, "openai", "k2", "gpt-4o");
    assert_string_equal(s->state, "ready");
    aigw_stats_free(st);
    aigw__health_free(h);
}

/* ---- benches (per key) ---- */

static void test_bench(void **state)
{
    aigw_health *h = aigw__health_new();
    aigw_health_opts o = base_opts();
    aigw_hkey *a = key_of(h, "openai", "a");
    aigw_hkey *q = key_of(h, "openai", "q");
    aigw_hkey *s = key_of(h, "openai", "s");
    aigw_hkey *z = key_of(h, "openai", "z");
    aigw_endpoint *ea = aigw__health_endpoint(h, a, "gpt-4o", true);
    aigw_endpoint *eq = aigw__health_endpoint(h, q, "gpt-4o", true);
    (void)state;
    aigw__hkey_bench(a, &o, AIGW_CLASS_AUTH, 1000);
    aigw__hkey_bench(q, &o, AIGW_CLASS_QUOTA, 1000);
    aigw__hkey_count(s, AIGW_CLASS_SERVER, -1);
    assert_int_equal(aigw__key_state(a, NULL, 1000, NULL), AIGW_KEY_BENCHED);
    assert_int_equal(wait_of(a, NULL, 1000), 3600000);
    assert_int_equal(aigw__key_reason(a, NULL, 1000), AIGW_CLASS_AUTH);
    assert_int_equal(aigw__key_state(a, ea, 1000, NULL), AIGW_KEY_BENCHED);
    assert_int_equal(wait_of(a, ea, 1000), 3600000);
    assert_int_equal(aigw__key_reason(a, ea, 1000), AIGW_CLASS_AUTH);
    assert_int_equal(aigw__key_state(q, eq, 2000, NULL), AIGW_KEY_BENCHED);
    assert_int_equal(wait_of(q, eq, 2000), 3599000);
    assert_int_equal(aigw__key_reason(q, eq, 2000), AIGW_CLASS_QUOTA);
    /* counting alone benches nothing */
    assert_int_equal(aigw__key_state(s, NULL, 1000, NULL), AIGW_KEY_READY);
    assert_int_equal(aigw__key_state(a, ea, 3601000, NULL), AIGW_KEY_READY);
    /* benched and cooling: benched wins, with the bench's wait */
    assert_int_equal(aigw__endpoint_cool(ea, &o, 5000, 2000), 5000);
    assert_int_equal(aigw__key_state(a, ea, 2000, NULL), AIGW_KEY_BENCHED);
    assert_int_equal(wait_of(a, ea, 2000), 3599000);
    assert_int_equal(aigw__key_reason(a, ea, 2000), AIGW_CLASS_AUTH);
    /* a bench only extends: a shorter one keeps the longer and its reason */
    o.bench_ms = 1000;
    aigw__hkey_bench(a, &o, AIGW_CLASS_QUOTA, 2000);
    assert_int_equal(wait_of(a, ea, 2000), 3599000);
    assert_int_equal(aigw__key_reason(a, ea, 2000), AIGW_CLASS_AUTH);
    /* a longer one extends, with its reason */
    o.bench_ms = 7200000;
    aigw__hkey_bench(q, &o, AIGW_CLASS_AUTH, 2000);
    assert_int_equal(wait_of(q, eq, 2000), 7200000);
    assert_int_equal(aigw__key_reason(q, eq, 2000), AIGW_CLASS_AUTH);
    /* bench_ms 0: no bench */
    o.bench_ms = 0;
    aigw__hkey_bench(z, &o, AIGW_CLASS_AUTH, 1000);
    assert_int_equal(aigw__key_state(z, NULL, 1000, NULL), AIGW_KEY_READY);
    /* NULL-safe */
    o = base_opts();
    aigw__hkey_bench(NULL, &o, AIGW_CLASS_AUTH, 1000);
    aigw__hkey_bench(z, NULL, AIGW_CLASS_AUTH, 1000);
    assert_int_equal(aigw__key_state(z, NULL, 1000, NULL), AIGW_KEY_READY);
    /* end_benches: benches end, cooldowns stay */
    aigw__health_end_benches(h);
    assert_int_equal(aigw__key_state(a, ea, 2000, NULL), AIGW_KEY_COOLING);
    assert_int_equal(wait_of(a, ea, 2000), 5000);
    assert_int_equal(aigw__key_reason(a, ea, 2000), AIGW_CLASS_RATE_LIMIT);
    assert_int_equal(aigw__key_state(a, NULL, 2000, NULL), AIGW_KEY_READY);
    assert_int_equal(aigw__key_state(q, eq, 2000, NULL), AIGW_KEY_READY);
    aigw__health_end_benches(NULL);
    aigw__health_free(h);
}

/* A bench is the key's: every model of it is benched, those seen before
 * and after, and the other keys on the same models are not. */
static void test_bench_every_model(void **state)
{
    aigw_health *h = aigw__health_new();
    aigw_health_opts o = base_opts();
    aigw_hkey *k = key_of(h, "openai", "k1");
    aigw_hkey *k2 = key_of(h, "openai", "k2");
    aigw_endpoint *e1 = aigw__health_endpoint(h, k, "gpt-4o", true);
    aigw_endpoint *e2 = aigw__health_endpoint(h, k, "gpt-4o-mini", true);
    aigw_endpoint *e3, *other = aigw__health_endpoint(h, k2, "gpt-4o", true);
    aigw_key_health v;
    aigw_stats *st;
    const aigw_stat *s;
    (void)state;
    aigw__hkey_bench(k, &o, AIGW_CLASS_QUOTA, 1000);
    e3 = aigw__health_endpoint(h, k, "o1", true); /* first seen after the bench */
    assert_int_equal(aigw__key_state(k, e1, 1000, NULL), AIGW_KEY_BENCHED);
    assert_int_equal(aigw__key_state(k, e2, 1000, NULL), AIGW_KEY_BENCHED);
    assert_int_equal(aigw__key_state(k, e3, 1000, NULL), AIGW_KEY_BENCHED);
    assert_int_equal(wait_of(k, e1, 1500), 3599500);
    assert_int_equal(wait_of(k, e2, 1500), 3599500);
    assert_int_equal(wait_of(k, e3, 1500), 3599500);
    assert_int_equal(aigw__key_reason(k, e2, 1500), AIGW_CLASS_QUOTA);
    assert_int_equal(aigw__key_reason(k, e3, 1500), AIGW_CLASS_QUOTA);
    assert_int_equal(aigw__key_state(k2, other, 1500, NULL), AIGW_KEY_READY);
    aigw__key_view(k, e2, 1500, 1, &v);
    assert_int_equal(v.state, AIGW_KEY_BENCHED);
    assert_int_equal(v.wait_ms, 3599500);
    aigw__key_view(k2, other, 1500, 1, &v);
    assert_int_equal(v.state, AIGW_KEY_READY);

    /* the snapshot: every endpoint of the key benched, with the key's
     * reason and wait */
    st = aigw__health_snapshot(h, NULL, &o, 1500);
    assert_non_null(st);
    assert_int_equal(aigw_stats_count(st), 4);
    s = stat_endpoint(st, "openai", "k1", "gpt-4o");
    assert_string_equal(s->state, "benched");
    assert_string_equal(s->reason, "quota");
    assert_int_equal(s->wait_ms, 3599500);
    s = stat_endpoint(st, "openai", "k1", "gpt-4o-mini");
    assert_string_equal(s->state, "benched");
    assert_string_equal(s->reason, "quota");
    s = stat_endpoint(st, "openai", "k1", "o1");
    assert_string_equal(s->state, "benched");
    s = stat_endpoint(st, "openai", "k2", "gpt-4o");
    assert_string_equal(s->state, "ready");
    assert_string_equal(s->reason, "");
    aigw_stats_free(st);

    /* the bench over, a cooldown of one model shows through */
    aigw__endpoint_cool(e1, &o, 4000, 1500);
    aigw__health_end_benches(h);
    assert_int_equal(aigw__key_state(k, e1, 1500, NULL), AIGW_KEY_COOLING);
    assert_int_equal(aigw__key_state(k, e2, 1500, NULL), AIGW_KEY_READY);
    assert_int_equal(aigw__key_state(k, e3, 1500, NULL), AIGW_KEY_READY);
    aigw__health_free(h);
}

/* ---- reset ---- */

static void test_reset(void **state)
{
    aigw_health *h = aigw__health_new();
    aigw_health_opts o = base_opts();
    aigw_hkey *a1 = key_of(h, "openai", "a");
    aigw_hkey *a2 = key_of(h, "anthropic", "a");
    aigw_hkey *b = key_of(h, "openai", "b");
    aigw_endpoint *ea1 = aigw__health_endpoint(h, a1, "gpt-4o", true);
    aigw_endpoint *ea2 = aigw__health_endpoint(h, a2, "claude", true);
    aigw_endpoint *eb = aigw__health_endpoint(h, b, "gpt-4o", true);
    aigw_breaker *host = aigw__health_host(h, "https://api.openai.com/v1");
    aigw_key_health v;
    int64_t w;
    (void)state;
    aigw__breaker_report(br(ea1), &o, AIGW_HEAR_NEUTRAL, false, AIGW_CLASS_RATE_LIMIT, -1, 0);
    aigw__endpoint_cool(ea1, &o, 9000, 0);
    aigw__hkey_bench(a2, &o, AIGW_CLASS_AUTH, 0);
    aigw__endpoint_cool(eb, &o, 9000, 0);
    fail_n(host, &o, AIGW_CLASS_NETWORK, 0);
    assert_int_equal(aigw__breaker_admit(host, &o, 0, &w), AIGW_ADMIT_OPEN);
    assert_int_equal(aigw__health_reset(h, "a"), 2);
    assert_int_equal(aigw__key_state(a1, ea1, 0, NULL), AIGW_KEY_READY);
    assert_int_equal(aigw__key_state(a2, ea2, 0, NULL), AIGW_KEY_READY);
    assert_int_equal(aigw__key_state(b, eb, 0, NULL), AIGW_KEY_COOLING);
    /* by id: keys and their endpoints only; hosts stay */
    assert_int_equal(aigw__breaker_admit(host, &o, 0, &w), AIGW_ADMIT_OPEN);
    assert_int_equal(aigw__health_reset(h, "nope"), 0);
    assert_int_equal(aigw__health_reset(h, NULL), 3);
    assert_int_equal(aigw__key_state(b, eb, 0, NULL), AIGW_KEY_READY);
    assert_int_equal(aigw__breaker_admit(host, &o, 0, &w), AIGW_ADMIT_GO);
    /* counters are kept, and the time of the last limit */
    aigw__key_view(a1, ea1, 0, 1, &v);
    assert_int_equal(v.requests, 1);
    assert_int_equal(v.since_limited_ms, 0);
    assert_int_equal(aigw__health_reset(NULL, NULL), 0);
    aigw__health_free(h);
}

/* reset(h, "k1") ends k1's cooldowns on every model and closes k1's
 * endpoint breakers (with any provider), and leaves k2's alone. */
static void test_reset_endpoints(void **state)
{
    aigw_health *h = aigw__health_new();
    aigw_health_opts o = base_opts();
    aigw_hkey *k1 = key_of(h, "openai", "k1");
    aigw_hkey *k1b = key_of(h, "anthropic", "k1");
    aigw_hkey *k2 = key_of(h, "openai", "k2");
    aigw_endpoint *k1m1 = aigw__health_endpoint(h, k1, "m1", true);
    aigw_endpoint *k1m2 = aigw__health_endpoint(h, k1, "m2", true);
    aigw_endpoint *k1bm1 = aigw__health_endpoint(h, k1b, "m1", true);
    aigw_endpoint *k2m1 = aigw__health_endpoint(h, k2, "m1", true);
    aigw_endpoint *k2m2 = aigw__health_endpoint(h, k2, "m2", true);
    aigw_key_health v;
    int64_t w = -1;
    (void)state;
    aigw__endpoint_cool(k1m1, &o, 9000, 0);
    aigw__endpoint_cool(k1m2, &o, 9000, 0);
    aigw__endpoint_cool(k2m1, &o, 9000, 0);
    fail_n(br(k1m1), &o, AIGW_CLASS_SERVER, 0);
    fail_n(br(k1bm1), &o, AIGW_CLASS_OVERLOADED, 0);
    fail_n(br(k2m2), &o, AIGW_CLASS_SERVER, 0);
    aigw__hkey_bench(k2, &o, AIGW_CLASS_QUOTA, 0);
    /* k1's endpoint of m2: half-open, its probe out */
    fail_n(br(k1m2), &o, AIGW_CLASS_SERVER, 0);
    assert_int_equal(aigw__breaker_admit(br(k1m2), &o, 5000, NULL), AIGW_ADMIT_PROBE);
    assert_int_equal(aigw__breaker_admit(br(k1m1), &o, 1000, &w), AIGW_ADMIT_OPEN);
    assert_int_equal(w, 4000);

    assert_int_equal(aigw__health_reset(h, "k1"), 2);
    /* k1: every model ready, every breaker closed */
    assert_int_equal(aigw__key_state(k1, k1m1, 1000, NULL), AIGW_KEY_READY);
    assert_int_equal(aigw__key_state(k1, k1m2, 1000, NULL), AIGW_KEY_READY);
    assert_int_equal(aigw__breaker_admit(br(k1m1), &o, 1000, &w), AIGW_ADMIT_GO);
    assert_int_equal(w, 0);
    assert_int_equal(aigw__breaker_admit(br(k1m2), &o, 5000, &w), AIGW_ADMIT_GO);
    assert_int_equal(aigw__breaker_admit(br(k1bm1), &o, 1000, &w), AIGW_ADMIT_GO);
    /* a closed breaker counts again from zero */
    aigw__breaker_report(br(k1m1), &o, AIGW_HEAR_FAILURE, false, AIGW_CLASS_SERVER, -1, 1000);
    aigw__breaker_report(br(k1m1), &o, AIGW_HEAR_FAILURE, false, AIGW_CLASS_SERVER, -1, 1000);
    assert_int_equal(aigw__breaker_admit(br(k1m1), &o, 1000, &w), AIGW_ADMIT_GO);
    /* k2: as it was */
    assert_int_equal(aigw__key_state(k2, NULL, 1000, NULL), AIGW_KEY_BENCHED);
    aigw__health_end_benches(h);
    assert_int_equal(aigw__key_state(k2, k2m1, 1000, &w), AIGW_KEY_COOLING);
    assert_int_equal(w, 8000);
    assert_int_equal(aigw__breaker_admit(br(k2m2), &o, 1000, &w), AIGW_ADMIT_OPEN);
    assert_int_equal(w, 4000);
    assert_false(aigw__breaker_would_admit(br(k2m2), &o, 1000));
    /* k1's counters and time of its last limit are kept */
    aigw__key_view(k1, k1m1, 1000, 1, &v);
    assert_int_equal(v.requests, 5);
    assert_int_equal(v.failures, 5);
    assert_int_equal(v.since_limited_ms, 1000);
    /* reset(h, "k2") now */
    assert_int_equal(aigw__health_reset(h, "k2"), 1);
    assert_int_equal(aigw__key_state(k2, k2m1, 1000, NULL), AIGW_KEY_READY);
    assert_int_equal(aigw__breaker_admit(br(k2m2), &o, 1000, &w), AIGW_ADMIT_GO);
    aigw__health_free(h);
}

/* ---- counters: the key's, and each endpoint's ---- */

static void test_key_counters(void **state)
{
    aigw_health *h = aigw__health_new();
    aigw_health_opts o = base_opts();
    test_cfg t;
    aigw_hkey *k;
    aigw_endpoint *e, *e2;
    aigw_key_health v;
    aigw_stats *st;
    const aigw_stat *s;
    int64_t w = -1;
    (void)state;
    make_cfg(&t);
    k = aigw__health_key(h, "openai", "k1", &t.keys[0].value, AIGW_ORIGIN_CONFIG);
    e = aigw__health_endpoint(h, k, "gpt-4o", true);
    e2 = aigw__health_endpoint(h, k, "gpt-4o-mini", true);
    /* on the key */
    aigw__hkey_count(k, AIGW_CLASS_NONE, 100);
    aigw__hkey_count(k, AIGW_CLASS_NONE, 301);
    aigw__hkey_count(k, AIGW_CLASS_NONE, -1);       /* untimed success */
    aigw__hkey_count(k, AIGW_CLASS_SERVER, 5000);   /* failures are not timed */
    /* on its endpoint */
    aigw__breaker_report(br(e), &o, AIGW_HEAR_SUCCESS, false, AIGW_CLASS_NONE, 100, 0);
    aigw__breaker_report(br(e), &o, AIGW_HEAR_SUCCESS, false, AIGW_CLASS_NONE, 301, 0);
    aigw__breaker_report(br(e), &o, AIGW_HEAR_SUCCESS, false, AIGW_CLASS_NONE, -1, 0);
    aigw__breaker_report(br(e), &o, AIGW_HEAR_FAILURE, false, AIGW_CLASS_SERVER, 5000, 0);
    /* a skip counts on the endpoint and on its key */
    aigw__key_skipped(e ? e->key : NULL, e);
    aigw__key_skipped(e2 ? e2->key : NULL, e2);
    aigw__key_view(k, e, 0, 3, &v);
    assert_string_equal(v.id, "k1");
    assert_int_equal(v.weight, 3);
    assert_int_equal(v.requests, 4);
    assert_int_equal(v.successes, 3);
    assert_int_equal(v.failures, 1);
    assert_int_equal(v.latency_mean_ms, 201); /* (100 + 301) / 2, rounded */
    /* another model of the key: counts of its own */
    aigw__key_view(k, e2, 0, 3, &v);
    assert_int_equal(v.requests, 0);
    assert_int_equal(v.latency_mean_ms, -1);
    /* no endpoint: the key's state, no counts */
    aigw__key_view(k, NULL, 0, 3, &v);
    assert_string_equal(v.id, "k1");
    assert_int_equal(v.state, AIGW_KEY_READY);
    assert_int_equal(v.since_limited_ms, -1);
    assert_int_equal(v.requests, 0);
    assert_int_equal(v.latency_mean_ms, -1);

    /* the key's own counters, in the snapshot */
    st = aigw__health_snapshot(h, &t.cfg, &o, 0);
    assert_non_null(st);
    s = aigw_stats_at(st, 0);
    assert_string_equal(s->kind, "key");
    assert_string_equal(s->name, "k1");
    assert_int_equal(s->requests, 4);
    assert_int_equal(s->successes, 3);
    assert_int_equal(s->failures, 1);
    assert_int_equal(s->skips, 2);
    assert_int_equal(s->latency_count, 2);
    assert_int_equal(s->latency_mean_ms, 201);
    assert_int_equal(aigw_stat_failures(s, "server"), 1);
    s = stat_endpoint(st, "openai", "k1", "gpt-4o");
    assert_int_equal(s->requests, 4);
    assert_int_equal(s->skips, 1);
    assert_int_equal(s->latency_count, 2);
    s = stat_endpoint(st, "openai", "k1", "gpt-4o-mini");
    assert_int_equal(s->requests, 0);
    assert_int_equal(s->skips, 1);
    aigw_stats_free(st);

    /* an untracked key or endpoint (NULL): ready, never counted */
    aigw__hkey_count(NULL, AIGW_CLASS_AUTH, -1);
    aigw__hkey_bench(NULL, &o, AIGW_CLASS_AUTH, 0);
    aigw__key_skipped(NULL, NULL);
    assert_int_equal(aigw__key_state(NULL, NULL, 0, &w), AIGW_KEY_READY);
    assert_int_equal(w, 0);
    assert_int_equal(aigw__key_reason(NULL, NULL, 0), AIGW_CLASS_NONE);
    aigw__key_view(NULL, NULL, 0, 5, &v);
    assert_string_equal(v.id, "");
    assert_int_equal(v.state, AIGW_KEY_READY);
    assert_int_equal(v.weight, 5);
    assert_int_equal(v.since_limited_ms, -1);
    assert_int_equal(v.latency_mean_ms, -1);
    assert_int_equal(v.requests, 0);
    aigw__health_free(h);
}

/* ---- circuit breakers (an endpoint's; a host's is the same) ---- */

static void test_breaker_opens_after_threshold(void **state)
{
    aigw_health *h = aigw__health_new();
    aigw_health_opts o = base_opts();
    aigw_hkey *k = key_of(h, "openai", "k1");
    aigw_breaker *b = br(aigw__health_endpoint(h, k, "gpt-4o", true));
    aigw_breaker *bk = aigw__health_backend(h, "openai", "gpt-4o");
    int64_t w = -1;
    (void)state;
    assert_non_null(b);
    /* a backend's counters: one per provider and model, not an endpoint's */
    assert_non_null(bk);
    assert_ptr_equal(bk, aigw__health_backend(h, "openai", "gpt-4o"));
    assert_ptr_not_equal(bk, aigw__health_backend(h, "openai", "gpt-4o-mini"));
    assert_ptr_not_equal(bk, aigw__health_backend(h, "azure", "gpt-4o"));
    assert_ptr_not_equal(bk, b);
    assert_null(aigw__health_backend(NULL, "openai", "gpt-4o"));
    assert_int_equal(aigw__breaker_admit(b, &o, 0, &w), AIGW_ADMIT_GO);
    assert_int_equal(w, 0);
    /* a success in between resets the count; neutral answers leave it */
    aigw__breaker_report(b, &o, AIGW_HEAR_FAILURE, false, AIGW_CLASS_SERVER, -1, 0);
    aigw__breaker_report(b, &o, AIGW_HEAR_FAILURE, false, AIGW_CLASS_SERVER, -1, 0);
    aigw__breaker_report(b, &o, AIGW_HEAR_SUCCESS, false, AIGW_CLASS_NONE, 10, 0);
    aigw__breaker_report(b, &o, AIGW_HEAR_FAILURE, false, AIGW_CLASS_SERVER, -1, 0);
    aigw__breaker_report(b, &o, AIGW_HEAR_NEUTRAL, false, AIGW_CLASS_RATE_LIMIT, -1, 0);
    aigw__breaker_report(b, &o, AIGW_HEAR_FAILURE, false, AIGW_CLASS_TIMEOUT, -1, 0);
    aigw__breaker_report(b, &o, AIGW_HEAR_ABANDON, false, AIGW_CLASS_NONE, -1, 0);
    assert_int_equal(aigw__breaker_admit(b, &o, 1000, &w), AIGW_ADMIT_GO);
    assert_true(aigw__breaker_would_admit(b, &o, 1000));
    aigw__breaker_report(b, &o, AIGW_HEAR_FAILURE, false, AIGW_CLASS_NETWORK, -1, 1000);
    /* open: skipped, with the wait until a probe may go */
    assert_int_equal(aigw__breaker_admit(b, &o, 1000, &w), AIGW_ADMIT_OPEN);
    assert_int_equal(w, 5000);
    assert_false(aigw__breaker_would_admit(b, &o, 1000));
    aigw__breaker_skipped(b);
    assert_int_equal(aigw__breaker_admit(b, &o, 5999, &w), AIGW_ADMIT_OPEN);
    assert_int_equal(w, 1);
    assert_false(aigw__breaker_would_admit(b, &o, 5999));
    /* a late failure of an earlier request changes nothing */
    aigw__breaker_report(b, &o, AIGW_HEAR_FAILURE, false, AIGW_CLASS_SERVER, -1, 5500);
    /* would_admit peeks: it does not take the probe */
    assert_true(aigw__breaker_would_admit(b, &o, 6000));
    assert_true(aigw__breaker_would_admit(b, &o, 6000));
    /* exactly one probe after the cooloff */
    assert_int_equal(aigw__breaker_admit(b, &o, 6000, &w), AIGW_ADMIT_PROBE);
    assert_int_equal(w, 0);
    w = -1;
    /* the probe is out: it decides within about a cooloff, the wait named */
    assert_int_equal(aigw__breaker_admit(b, &o, 6000, &w), AIGW_ADMIT_OPEN);
    assert_int_equal(w, o.breaker_cooloff_ms);
    assert_false(aigw__breaker_would_admit(b, &o, 6000));
    assert_int_equal(aigw__breaker_admit(b, &o, 7000, &w), AIGW_ADMIT_OPEN);
    assert_int_equal(w, o.breaker_cooloff_ms);
    /* the probe succeeds: closed */
    aigw__breaker_report(b, &o, AIGW_HEAR_SUCCESS, true, AIGW_CLASS_NONE, 20, 7000);
    assert_int_equal(aigw__breaker_admit(b, &o, 7000, &w), AIGW_ADMIT_GO);
    assert_true(aigw__breaker_would_admit(b, &o, 7000));
    /* and the count starts again from zero */
    aigw__breaker_report(b, &o, AIGW_HEAR_FAILURE, false, AIGW_CLASS_SERVER, -1, 7000);
    aigw__breaker_report(b, &o, AIGW_HEAR_FAILURE, false, AIGW_CLASS_SERVER, -1, 7000);
    assert_int_equal(aigw__breaker_admit(b, &o, 7000, &w), AIGW_ADMIT_GO);
    aigw__health_free(h);
}

/* An endpoint of key "k1" for model, its breaker opened at now. */
static aigw_breaker *opened(aigw_health *h, const aigw_health_opts *o, const char *model,
                            int64_t now)
{
    aigw_breaker *b = br(aigw__health_endpoint(h, key_of(h, "openai", "k1"), model, true));
    fail_n(b, o, AIGW_CLASS_SERVER, now);
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
    aigw__breaker_report(b, &o, AIGW_HEAR_FAILURE, true, AIGW_CLASS_SERVER, -1, 7000);
    assert_int_equal(aigw__breaker_admit(b, &o, 7000, &w), AIGW_ADMIT_OPEN);
    assert_int_equal(w, 5000);
    assert_int_equal(aigw__breaker_admit(b, &o, 11999, &w), AIGW_ADMIT_OPEN);
    assert_int_equal(w, 1);
    /* an abandoned probe: another may go at once */
    assert_int_equal(aigw__breaker_admit(b, &o, 12000, &w), AIGW_ADMIT_PROBE);
    aigw__breaker_report(b, &o, AIGW_HEAR_ABANDON, true, AIGW_CLASS_NONE, -1, 12001);
    assert_true(aigw__breaker_would_admit(b, &o, 12001));
    assert_int_equal(aigw__breaker_admit(b, &o, 12001, &w), AIGW_ADMIT_PROBE);
    /* a neutral answer to the probe closes */
    aigw__breaker_report(b, &o, AIGW_HEAR_NEUTRAL, true, AIGW_CLASS_RATE_LIMIT, -1, 12002);
    assert_int_equal(aigw__breaker_admit(b, &o, 12002, &w), AIGW_ADMIT_GO);

    /* a lost probe: after cooloff + probe timeout another may go */
    b = opened(h, &o, "m2", 0);
    assert_int_equal(aigw__breaker_admit(b, &o, 6000, &w), AIGW_ADMIT_PROBE);
    assert_int_equal(aigw__breaker_admit(b, &o, 70999, &w), AIGW_ADMIT_OPEN);
    assert_int_equal(w, o.breaker_cooloff_ms); /* the probe is out */
    assert_false(aigw__breaker_would_admit(b, &o, 70999));
    assert_true(aigw__breaker_would_admit(b, &o, 71000));
    assert_int_equal(aigw__breaker_admit(b, &o, 71000, &w), AIGW_ADMIT_PROBE);
    assert_int_equal(aigw__breaker_admit(b, &o, 71000, &w), AIGW_ADMIT_OPEN);

    /* a success that was not the probe closes too */
    b = opened(h, &o, "m3", 0);
    assert_int_equal(aigw__breaker_admit(b, &o, 100, &w), AIGW_ADMIT_OPEN);
    aigw__breaker_report(b, &o, AIGW_HEAR_SUCCESS, false, AIGW_CLASS_NONE, 5, 100);
    assert_int_equal(aigw__breaker_admit(b, &o, 100, &w), AIGW_ADMIT_GO);
    /* and a neutral one does not */
    b = opened(h, &o, "m4", 0);
    aigw__breaker_report(b, &o, AIGW_HEAR_NEUTRAL, false, AIGW_CLASS_AUTH, -1, 100);
    assert_int_equal(aigw__breaker_admit(b, &o, 100, &w), AIGW_ADMIT_OPEN);
    assert_int_equal(w, 4900);
    aigw__health_free(h);
}

static void test_breaker_off(void **state)
{
    aigw_health *h = aigw__health_new();
    aigw_health_opts o = base_opts();
    aigw_hkey *k = key_of(h, "openai", "k1");
    aigw_breaker *b = br(aigw__health_endpoint(h, k, "gpt-4o", true));
    aigw_breaker *c = br(aigw__health_endpoint(h, k, "gpt-4o-mini", true));
    aigw_class reason = AIGW_CLASS_AUTH;
    int64_t w = -1;
    int i;
    (void)state;
    o.breaker_threshold = 0;
    for (i = 0; i < 100; i++)
        aigw__breaker_report(b, &o, AIGW_HEAR_FAILURE, false, AIGW_CLASS_SERVER, -1, 0);
    assert_int_equal(aigw__breaker_admit(b, &o, 0, &w), AIGW_ADMIT_GO);
    assert_int_equal(w, 0);
    assert_true(aigw__breaker_would_admit(b, &o, 0));
    /* no options: counted only (as a backend's counters are) */
    o = base_opts();
    for (i = 0; i < 100; i++)
        aigw__breaker_report(c, NULL, AIGW_HEAR_FAILURE, false, AIGW_CLASS_SERVER, -1, 0);
    assert_int_equal(aigw__breaker_admit(c, &o, 0, &w), AIGW_ADMIT_GO);
    assert_string_equal(aigw__breaker_state(c, &o, 0, &w, &reason), "closed");
    assert_int_equal(w, 0);
    assert_int_equal(reason, AIGW_CLASS_NONE);
    assert_int_equal(aigw__breaker_admit(b, NULL, 0, &w), AIGW_ADMIT_GO);
    assert_true(aigw__breaker_would_admit(b, NULL, 0));
    /* an untracked breaker (NULL) always admits */
    assert_int_equal(aigw__breaker_admit(NULL, &o, 0, &w), AIGW_ADMIT_GO);
    assert_true(aigw__breaker_would_admit(NULL, &o, 0));
    aigw__breaker_report(NULL, &o, AIGW_HEAR_FAILURE, false, AIGW_CLASS_SERVER, -1, 0);
    aigw__breaker_skipped(NULL);
    aigw__health_free(h);
}

/* One key's failures never shut out its siblings: the breaker of (k1, m)
 * opening leaves (k2, m) closed.  The backend m is open only when every
 * endpoint of it whose key is not benched is open, with the shortest
 * wait; half-open when one of them may probe. */
static void test_endpoint_breakers_and_backend_state(void **state)
{
    aigw_health *h = aigw__health_new();
    aigw_health_opts o = base_opts();
    aigw_hkey *k1 = key_of(h, "openai", "k1");
    aigw_hkey *k2 = key_of(h, "openai", "k2");
    aigw_hkey *k3 = key_of(h, "openai", "k3");
    aigw_hkey *kz = key_of(h, "azure", "kz");
    aigw_endpoint *e1 = aigw__health_endpoint(h, k1, "gpt-4o", true);
    aigw_endpoint *e2 = aigw__health_endpoint(h, k2, "gpt-4o", true);
    aigw_endpoint *e3 = aigw__health_endpoint(h, k3, "gpt-4o", true);
    aigw_endpoint *ez = aigw__health_endpoint(h, kz, "gpt-4o", true);     /* another provider */
    aigw_endpoint *e1m = aigw__health_endpoint(h, k1, "gpt-4o-mini", true); /* another model */
    aigw_breaker *bk = aigw__health_backend(h, "openai", "gpt-4o");
    aigw_breaker *bkm = aigw__health_backend(h, "openai", "gpt-4o-mini");
    aigw_stats *st;
    const aigw_stat *s;
    int64_t w = -1;
    int i;
    (void)state;
    assert_non_null(bkm);
    /* the backend's own counters hear failures but never open it */
    for (i = 0; i < 10; i++)
        aigw__breaker_report(bk, NULL, AIGW_HEAR_FAILURE, false, AIGW_CLASS_SERVER, -1, 0);
    assert_int_equal(aigw__breaker_admit(bk, &o, 0, &w), AIGW_ADMIT_GO);

    fail_n(br(e1), &o, AIGW_CLASS_SERVER, 1000);
    assert_int_equal(aigw__breaker_admit(br(e1), &o, 1000, &w), AIGW_ADMIT_OPEN);
    assert_int_equal(w, 5000);
    assert_int_equal(aigw__breaker_admit(br(e2), &o, 1000, &w), AIGW_ADMIT_GO);
    assert_int_equal(w, 0);
    assert_true(aigw__breaker_would_admit(br(e2), &o, 1000));
    assert_int_equal(aigw__breaker_admit(br(e1m), &o, 1000, &w), AIGW_ADMIT_GO);
    /* an open breaker is not a cooldown: the key stays ready */
    assert_int_equal(aigw__key_state(k1, e1, 1000, NULL), AIGW_KEY_READY);

    st = aigw__health_snapshot(h, NULL, &o, 1000);
    assert_non_null(st);
    /* 2 backends, no hosts, 5 endpoints */
    assert_int_equal(aigw_stats_count(st), 2 + 5);
    assert_int_equal(count_kind(st, "endpoint"), 5);
    s = find_stat(st, "backend", "openai:gpt-4o");
    assert_string_equal(s->state, "closed");
    assert_string_equal(s->reason, "");
    assert_int_equal(s->wait_ms, 0);
    assert_int_equal(s->failures, 10); /* its own counters */
    s = stat_endpoint(st, "openai", "k1", "gpt-4o");
    assert_string_equal(s->state, "open");
    assert_string_equal(s->reason, "server");
    assert_int_equal(s->wait_ms, 5000);
    assert_int_equal(s->failures, 3);
    s = stat_endpoint(st, "openai", "k2", "gpt-4o");
    assert_string_equal(s->state, "ready");
    assert_string_equal(s->reason, "");
    assert_int_equal(s->wait_ms, 0);
    assert_string_equal(stat_endpoint(st, "openai", "k1", "gpt-4o-mini")->state, "ready");
    aigw_stats_free(st);

    /* k2's too: k3's is still closed */
    fail_n(br(e2), &o, AIGW_CLASS_TIMEOUT, 2000);
    st = aigw__health_snapshot(h, NULL, &o, 3000);
    assert_string_equal(find_stat(st, "backend", "openai:gpt-4o")->state, "closed");
    assert_int_equal(find_stat(st, "backend", "openai:gpt-4o")->wait_ms, 0);
    aigw_stats_free(st);

    /* k3 benched: its endpoint does not count; the others are open.  The
     * wait: the shortest (k1's, until 6000), with its reason; another
     * provider's endpoint of the same model name is not one of them */
    aigw__hkey_bench(k3, &o, AIGW_CLASS_AUTH, 3000);
    st = aigw__health_snapshot(h, NULL, &o, 3000);
    s = find_stat(st, "backend", "openai:gpt-4o");
    assert_string_equal(s->state, "open");
    assert_string_equal(s->reason, "server");
    assert_int_equal(s->wait_ms, 3000);
    assert_string_equal(find_stat(st, "backend", "openai:gpt-4o-mini")->state, "closed");
    assert_string_equal(stat_endpoint(st, "openai", "k3", "gpt-4o")->state, "benched");
    assert_string_equal(stat_endpoint(st, "azure", "kz", "gpt-4o")->state, "ready");
    aigw_stats_free(st);

    /* the bench ended: k3's endpoint is closed, so the backend is */
    aigw__health_end_benches(h);
    st = aigw__health_snapshot(h, NULL, &o, 3000);
    assert_string_equal(find_stat(st, "backend", "openai:gpt-4o")->state, "closed");
    aigw_stats_free(st);

    /* k3's opens too (at 3500, until 8500): open, the shortest wait still
     * k1's */
    fail_n(br(e3), &o, AIGW_CLASS_OVERLOADED, 3500);
    st = aigw__health_snapshot(h, NULL, &o, 4000);
    s = find_stat(st, "backend", "openai:gpt-4o");
    assert_string_equal(s->state, "open");
    assert_string_equal(s->reason, "server");
    assert_int_equal(s->wait_ms, 2000);
    aigw_stats_free(st);
    /* the shortest wait is whichever endpoint reopens first */
    st = aigw__health_snapshot(h, NULL, &o, 5999);
    assert_int_equal(find_stat(st, "backend", "openai:gpt-4o")->wait_ms, 1);
    aigw_stats_free(st);

    /* k1's may probe at 6000: the backend is half-open, no wait */
    st = aigw__health_snapshot(h, NULL, &o, 6000);
    s = find_stat(st, "backend", "openai:gpt-4o");
    assert_string_equal(s->state, "half_open");
    assert_int_equal(s->wait_ms, 0);
    assert_string_equal(s->reason, "server");
    assert_string_equal(stat_endpoint(st, "openai", "k1", "gpt-4o")->state, "half_open");
    assert_string_equal(stat_endpoint(st, "openai", "k2", "gpt-4o")->state, "open");
    assert_int_equal(stat_endpoint(st, "openai", "k2", "gpt-4o")->wait_ms, 1000);
    aigw_stats_free(st);
    /* the probe goes and succeeds: closed again */
    assert_int_equal(aigw__breaker_admit(br(e1), &o, 6000, NULL), AIGW_ADMIT_PROBE);
    st = aigw__health_snapshot(h, NULL, &o, 6001);
    assert_string_equal(find_stat(st, "backend", "openai:gpt-4o")->state, "half_open");
    aigw_stats_free(st);
    aigw__breaker_report(br(e1), &o, AIGW_HEAR_SUCCESS, true, AIGW_CLASS_NONE, 30, 6100);
    st = aigw__health_snapshot(h, NULL, &o, 6100);
    assert_string_equal(find_stat(st, "backend", "openai:gpt-4o")->state, "closed");
    assert_string_equal(stat_endpoint(st, "openai", "k1", "gpt-4o")->state, "ready");
    aigw_stats_free(st);

    /* every key benched: no endpoint speaks for the backend, it is closed
     * (its keys are out, not the backend) */
    fail_n(br(e1), &o, AIGW_CLASS_SERVER, 6100);
    aigw__hkey_bench(k1, &o, AIGW_CLASS_AUTH, 6100);
    aigw__hkey_bench(k2, &o, AIGW_CLASS_AUTH, 6100);
    aigw__hkey_bench(k3, &o, AIGW_CLASS_AUTH, 6100);
    st = aigw__health_snapshot(h, NULL, &o, 6100);
    assert_string_equal(find_stat(st, "backend", "openai:gpt-4o")->state, "closed");
    aigw_stats_free(st);
    (void)ez;
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
        aigw__breaker_report(a, &o, AIGW_HEAR_SUCCESS, false, AIGW_CLASS_NONE, i, 0);
    for (i = 0; i < 90; i++)
        aigw__breaker_report(b, &o, AIGW_HEAR_SUCCESS, false, AIGW_CLASS_NONE, 10, 0);
    for (i = 0; i < 9; i++)
        aigw__breaker_report(b, &o, AIGW_HEAR_SUCCESS, false, AIGW_CLASS_NONE, 1000, 0);
    aigw__breaker_report(b, &o, AIGW_HEAR_SUCCESS, false, AIGW_CLASS_NONE, 5000, 0);
    aigw__breaker_report(b, &o, AIGW_HEAR_FAILURE, false, AIGW_CLASS_SERVER, 99999, 0);
    aigw__breaker_report(b, &o, AIGW_HEAR_SUCCESS, false, AIGW_CLASS_NONE, -1, 0);
    for (i = 0; i < 10; i++)
        aigw__breaker_report(z, &o, AIGW_HEAR_SUCCESS, false, AIGW_CLASS_NONE, 0, 0);
    aigw__breaker_report(n, &o, AIGW_HEAR_FAILURE, false, AIGW_CLASS_SERVER, 10, 0);
    b = aigw__health_backend(h, "p", "three");
    aigw__breaker_report(b, &o, AIGW_HEAR_SUCCESS, false, AIGW_CLASS_NONE, 1000, 0);
    aigw__breaker_report(b, &o, AIGW_HEAR_SUCCESS, false, AIGW_CLASS_NONE, 10, 0);
    aigw__breaker_report(b, &o, AIGW_HEAR_SUCCESS, false, AIGW_CLASS_NONE, 20, 0);
    b = aigw__health_backend(h, "p", "hours");
    for (i = 0; i < 3; i++)
        aigw__breaker_report(b, &o, AIGW_HEAR_SUCCESS, false, AIGW_CLASS_NONE, 7200000, 0);
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
    assert_int_equal(aigw_stat_latency_le(s, 53), 53);
    assert_int_equal(aigw_stat_latency_le(s, 0), 0);
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
    /* the cumulative histogram: 90 at 10 ms, 9 at 1 s, 1 at 5 s */
    assert_int_equal(s->latency_sum_ms, 90 * 10 + 9 * 1000 + 5000);
    assert_int_equal(aigw_stat_latency_le(s, 9), 0);
    assert_int_equal(aigw_stat_latency_le(s, 10), 90);
    assert_int_equal(aigw_stat_latency_le(s, 961), 90);
    assert_int_equal(aigw_stat_latency_le(s, 1144), 99);
    assert_int_equal(aigw_stat_latency_le(s, 4999), 99);
    assert_int_equal(aigw_stat_latency_le(s, 5000), 100);
    assert_int_equal(aigw_stat_latency_le(s, INT64_MAX), 100);
    assert_int_equal(aigw_stat_latency_le(NULL, 10), 0);

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
            aigw__breaker_report(b, &o, AIGW_HEAR_SUCCESS, false, AIGW_CLASS_NONE, v, 0);
            aigw__breaker_report(b, &o, AIGW_HEAR_SUCCESS, false, AIGW_CLASS_NONE, 1000000000, 0);
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

static void test_snapshot_and_json(void **state)
{
    aigw_health *h = aigw__health_new();
    test_cfg t;
    const aigw_health_opts *o;
    aigw_hkey *k1, *k2, *i2;
    aigw_endpoint *k1_mini, *k1_4o, *k2_claude, *i2_mini;
    aigw_breaker *b1, *b2, *host;
    aigw_stats *st;
    const aigw_stat *s;
    const char *json;
    char *section;
    cJSON *root, *keys, *e, *fbc, *lat, *rb, *m;
    int i;
    uint64_t req, ret, den;
    int64_t avail;
    static const char *const members[] = {"keys", "endpoints", "backends", "hosts",
                                          "healthStore", "retryBudget"};
    static const char want_endpoints[] =
        "["
        "{\"provider\":\"openai\",\"id\":\"k1\",\"model\":\"gpt-4o-mini\",\"state\":\"cooling\","
        "\"reason\":\"rate_limit\",\"waitMs\":500,\"requests\":2,\"successes\":1,\"failures\":1,"
        "\"failuresByClass\":{\"rate_limit\":1},\"skips\":1,\"latencyMs\":{\"count\":1,"
        "\"mean\":120,\"p50\":120,\"p90\":120,\"p99\":120,\"max\":120}},"
        "{\"provider\":\"openai\",\"id\":\"k1\",\"model\":\"gpt-4o\",\"state\":\"open\","
        "\"reason\":\"server\",\"waitMs\":4000,\"requests\":3,\"successes\":0,\"failures\":3,"
        "\"failuresByClass\":{\"server\":3},\"skips\":1,\"latencyMs\":{\"count\":0,"
        "\"mean\":null,\"p50\":null,\"p90\":null,\"p99\":null,\"max\":null}},"
        "{\"provider\":\"anthropic\",\"id\":\"k2\",\"model\":\"claude\",\"state\":\"open\","
        "\"reason\":\"timeout\",\"waitMs\":3000,\"requests\":3,\"successes\":0,\"failures\":3,"
        "\"failuresByClass\":{\"timeout\":3},\"skips\":0,\"latencyMs\":{\"count\":0,"
        "\"mean\":null,\"p50\":null,\"p90\":null,\"p99\":null,\"max\":null}},"
        "{\"provider\":\"openai\",\"id\":\"inline2\",\"model\":\"gpt-4o-mini\","
        "\"state\":\"benched\",\"reason\":\"auth\",\"waitMs\":3599000,\"requests\":2,"
        "\"successes\":0,\"failures\":2,\"failuresByClass\":{\"auth\":1,\"server\":1},"
        "\"skips\":0,\"latencyMs\":{\"count\":0,\"mean\":null,\"p50\":null,\"p90\":null,"
        "\"p99\":null,\"max\":null}}"
        "]";
    (void)state;
    make_cfg(&t);
    o = &t.cfg.health;
    k1 = aigw__health_key(h, "openai", "k1", &t.keys[0].value, AIGW_ORIGIN_CONFIG);
    k2 = aigw__health_key(h, "anthropic", "k2", &t.keys[1].value, AIGW_ORIGIN_CONFIG);
    i2 = aigw__health_key(h, "openai", "inline2", &t.sk2[0].value, AIGW_ORIGIN_CONFIG);
    k1_mini = aigw__health_endpoint(h, k1, "gpt-4o-mini", true);
    k1_4o = aigw__health_endpoint(h, k1, "gpt-4o", true);
    k2_claude = aigw__health_endpoint(h, k2, "claude", true);
    i2_mini = aigw__health_endpoint(h, i2, "gpt-4o-mini", true);
    b1 = aigw__health_backend(h, "openai", "gpt-4o");
    b2 = aigw__health_backend(h, "anthropic", "claude");

    /* k1 on gpt-4o-mini: a success, then a rate limit (cooling until 2500),
     * then a skip */
    aigw__hkey_count(k1, AIGW_CLASS_NONE, 120);
    aigw__breaker_report(br(k1_mini), o, AIGW_HEAR_SUCCESS, false, AIGW_CLASS_NONE, 120, 0);
    aigw__hkey_count(k1, AIGW_CLASS_RATE_LIMIT, -1);
    aigw__breaker_report(br(k1_mini), o, AIGW_HEAR_NEUTRAL, false, AIGW_CLASS_RATE_LIMIT, -1,
                         1000);
    assert_int_equal(aigw__endpoint_cool(k1_mini, o, 1500, 1000), 1500);
    aigw__key_skipped(k1_mini ? k1_mini->key : NULL, k1_mini);
    /* k1 on gpt-4o: three server errors (open until 6000), then a skip */
    for (i = 0; i < 3; i++) {
        aigw__hkey_count(k1, AIGW_CLASS_SERVER, -1);
        aigw__breaker_report(br(k1_4o), o, AIGW_HEAR_FAILURE, false, AIGW_CLASS_SERVER, -1, 1000);
        aigw__breaker_report(b1, NULL, AIGW_HEAR_FAILURE, false, AIGW_CLASS_SERVER, -1, 1000);
    }
    aigw__key_skipped(k1_4o ? k1_4o->key : NULL, k1_4o);
    aigw__breaker_skipped(b1);
    /* k2 on claude: three timeouts (open until 5000) */
    for (i = 0; i < 3; i++) {
        aigw__hkey_count(k2, AIGW_CLASS_TIMEOUT, -1);
        aigw__breaker_report(br(k2_claude), o, AIGW_HEAR_FAILURE, false, AIGW_CLASS_TIMEOUT, -1,
                             0);
        aigw__breaker_report(b2, NULL, AIGW_HEAR_FAILURE, false, AIGW_CLASS_TIMEOUT, -1, 0);
    }
    /* inline2 on gpt-4o-mini: a server error, then an auth failure: benched */
    aigw__hkey_count(i2, AIGW_CLASS_SERVER, -1);
    aigw__breaker_report(br(i2_mini), o, AIGW_HEAR_FAILURE, false, AIGW_CLASS_SERVER, -1, 500);
    aigw__hkey_count(i2, AIGW_CLASS_AUTH, -1);
    aigw__breaker_report(br(i2_mini), o, AIGW_HEAR_NEUTRAL, false, AIGW_CLASS_AUTH, -1, 1000);
    aigw__hkey_bench(i2, o, AIGW_CLASS_AUTH, 1000);
    host = aigw__health_host(h, "https://api.openai.com/v1/chat/completions");
    aigw__breaker_report(host, o, AIGW_HEAR_SUCCESS, false, AIGW_CLASS_NONE, 80, 0);
    for (i = 0; i < 10; i++)
        aigw__budget_request(h, o, 1000);
    for (i = 0; i < 3; i++)
        aigw__budget_retry(h, o, 1000);

    st = aigw__health_snapshot(h, &t.cfg, o, 2000);
    assert_non_null(st);
    assert_int_equal(aigw_stats_count(st), 5 + 2 + 1 + 4);
    /* keys, in configuration order, each once; ready or benched only (a
     * cooldown is an endpoint's) */
    s = aigw_stats_at(st, 0);
    assert_string_equal(s->kind, "key");
    assert_string_equal(s->name, "k1");
    assert_string_equal(s->provider, "openai");
    assert_string_equal(s->model, "");
    assert_string_equal(s->state, "ready");
    assert_string_equal(s->reason, "");
    assert_int_equal(s->wait_ms, 0);
    assert_int_equal(s->requests, 5);
    assert_int_equal(s->successes, 1);
    assert_int_equal(s->failures, 4);
    assert_int_equal(s->skips, 2);
    assert_int_equal(s->latency_count, 1);
    assert_int_equal(s->latency_mean_ms, 120);
    assert_int_equal(s->latency_max_ms, 120);
    assert_int_equal(aigw_stat_failures(s, "rate_limit"), 1);
    assert_int_equal(aigw_stat_failures(s, "server"), 3);
    assert_int_equal(aigw_stat_failures(s, "auth"), 0);
    assert_int_equal(aigw_stat_failures(s, "bogus"), 0);
    assert_int_equal(aigw_stat_failures(s, NULL), 0);
    assert_int_equal(aigw_stat_failures(NULL, "server"), 0);
    s = aigw_stats_at(st, 1);
    assert_string_equal(s->name, "k2");
    assert_string_equal(s->provider, "anthropic");
    assert_string_equal(s->state, "ready"); /* its endpoint's breaker is open, not the key */
    assert_string_equal(s->reason, "");
    assert_int_equal(s->wait_ms, 0);
    assert_int_equal(s->failures, 3);
    assert_int_equal(aigw_stat_failures(s, "timeout"), 3);
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
    assert_string_equal(s->state, "benched");
    assert_string_equal(s->reason, "auth");
    assert_int_equal(s->wait_ms, 3600000 - 1000);
    assert_int_equal(s->failures, 2);
    assert_int_equal(aigw_stat_failures(s, "auth"), 1);
    assert_int_equal(aigw_stat_failures(s, "server"), 1);
    s = aigw_stats_at(st, 4);
    assert_string_equal(s->name, "ngrok");
    assert_string_equal(s->provider, "ngrok");
    assert_string_equal(s->state, "ready");
    /* backends and hosts, in the order first seen; a backend's state is
     * derived from its endpoints, its counters its own */
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
    assert_string_equal(s->reason, "timeout");
    assert_int_equal(s->wait_ms, 3000);
    s = aigw_stats_at(st, 7);
    assert_string_equal(s->kind, "host");
    assert_string_equal(s->name, "https://api.openai.com:443");
    assert_string_equal(s->provider, "");
    assert_string_equal(s->model, "");
    assert_string_equal(s->state, "closed");
    assert_string_equal(s->reason, "");
    assert_int_equal(s->successes, 1);
    /* then endpoints, in the order first seen: name the key's id */
    s = aigw_stats_at(st, 8);
    assert_string_equal(s->kind, "endpoint");
    assert_string_equal(s->name, "k1");
    assert_string_equal(s->provider, "openai");
    assert_string_equal(s->model, "gpt-4o-mini");
    assert_string_equal(s->state, "cooling");
    assert_string_equal(s->reason, "rate_limit");
    assert_int_equal(s->wait_ms, 500);
    assert_int_equal(s->requests, 2);
    assert_int_equal(s->successes, 1);
    assert_int_equal(s->failures, 1);
    assert_int_equal(s->skips, 1);
    assert_int_equal(s->latency_count, 1);
    assert_int_equal(s->latency_mean_ms, 120);
    s = aigw_stats_at(st, 9);
    assert_string_equal(s->kind, "endpoint");
    assert_string_equal(s->name, "k1");
    assert_string_equal(s->model, "gpt-4o");
    assert_string_equal(s->state, "open");
    assert_string_equal(s->reason, "server");
    assert_int_equal(s->wait_ms, 4000);
    assert_int_equal(s->failures, 3);
    assert_int_equal(s->skips, 1);
    s = aigw_stats_at(st, 10);
    assert_string_equal(s->name, "k2");
    assert_string_equal(s->provider, "anthropic");
    assert_string_equal(s->model, "claude");
    assert_string_equal(s->state, "open");
    assert_string_equal(s->reason, "timeout");
    assert_int_equal(s->wait_ms, 3000);
    s = aigw_stats_at(st, 11);
    assert_string_equal(s->name, "inline2");
    assert_string_equal(s->model, "gpt-4o-mini");
    assert_string_equal(s->state, "benched");
    assert_string_equal(s->reason, "auth");
    assert_int_equal(s->wait_ms, 3599000);
    assert_null(aigw_stats_at(st, 12));
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
    /* the endpoints section, exactly */
    section = json_section(json, "endpoints");
    assert_string_equal(section, want_endpoints);
    free(section);
    root = cJSON_Parse(json);
    assert_non_null(root);
    /* the members, in this order */
    for (i = 0, m = root->child; m; m = m->next, i++) {
        assert_true(i < 6);
        assert_string_equal(m->string, members[i]);
    }
    assert_int_equal(i, 6);
    keys = item(root, "keys");
    assert_int_equal(cJSON_GetArraySize(keys), 5);
    e = cJSON_GetArrayItem(keys, 0);
    assert_string_equal(str(e, "provider"), "openai");
    assert_string_equal(str(e, "id"), "k1");
    assert_null(cJSON_GetObjectItemCaseSensitive(e, "model"));
    assert_string_equal(str(e, "state"), "ready");
    assert_true(cJSON_IsNull(item(e, "reason")));
    assert_true(num(e, "waitMs") == 0);
    assert_true(num(e, "requests") == 5);
    assert_true(num(e, "successes") == 1);
    assert_true(num(e, "failures") == 4);
    assert_true(num(e, "skips") == 2);
    fbc = item(e, "failuresByClass");
    assert_int_equal(cJSON_GetArraySize(fbc), 2);
    assert_true(num(fbc, "rate_limit") == 1);
    assert_true(num(fbc, "server") == 3);
    lat = item(e, "latencyMs");
    assert_true(num(lat, "count") == 1);
    assert_true(num(lat, "mean") == 120);
    assert_true(num(lat, "p50") == 120);
    assert_true(num(lat, "p90") == 120);
    assert_true(num(lat, "p99") == 120);
    assert_true(num(lat, "max") == 120);
    e = cJSON_GetArrayItem(keys, 3);
    assert_string_equal(str(e, "id"), "inline2");
    assert_string_equal(str(e, "state"), "benched");
    assert_string_equal(str(e, "reason"), "auth");
    assert_true(num(e, "waitMs") == 3599000);
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

    assert_int_equal(cJSON_GetArraySize(item(root, "endpoints")), 4);
    e = cJSON_GetArrayItem(item(root, "endpoints"), 1);
    assert_string_equal(str(e, "provider"), "openai");
    assert_string_equal(str(e, "id"), "k1");
    assert_string_equal(str(e, "model"), "gpt-4o");

    e = cJSON_GetArrayItem(item(root, "backends"), 0);
    assert_int_equal(cJSON_GetArraySize(item(root, "backends")), 2);
    assert_string_equal(str(e, "provider"), "openai");
    assert_string_equal(str(e, "model"), "gpt-4o");
    assert_null(cJSON_GetObjectItemCaseSensitive(e, "id"));
    assert_string_equal(str(e, "state"), "open");
    assert_string_equal(str(e, "reason"), "server");
    assert_true(num(e, "waitMs") == 4000);
    assert_true(num(item(e, "failuresByClass"), "server") == 3);
    assert_int_equal(cJSON_GetArraySize(item(root, "hosts")), 1);
    e = cJSON_GetArrayItem(item(root, "hosts"), 0);
    assert_string_equal(str(e, "host"), "https://api.openai.com:443");
    assert_null(cJSON_GetObjectItemCaseSensitive(e, "provider"));
    assert_null(cJSON_GetObjectItemCaseSensitive(e, "id"));
    assert_null(cJSON_GetObjectItemCaseSensitive(e, "model"));
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

    /* later: k2's claude endpoint may probe (half-open, and so the
     * backend), then its probe is out (half-open still); k1's gpt-4o one is
     * open until 6000; k1's cooldown on gpt-4o-mini is over */
    st = aigw__health_snapshot(h, &t.cfg, o, 5000);
    assert_non_null(st);
    assert_string_equal(find_stat(st, "backend", "anthropic:claude")->state, "half_open");
    assert_string_equal(find_stat(st, "backend", "anthropic:claude")->reason, "timeout");
    assert_int_equal(find_stat(st, "backend", "anthropic:claude")->wait_ms, 0);
    assert_string_equal(stat_endpoint(st, "anthropic", "k2", "claude")->state, "half_open");
    assert_string_equal(find_stat(st, "backend", "openai:gpt-4o")->state, "open");
    assert_int_equal(find_stat(st, "backend", "openai:gpt-4o")->wait_ms, 1000);
    s = stat_endpoint(st, "openai", "k1", "gpt-4o-mini");
    assert_string_equal(s->state, "ready");
    assert_string_equal(s->reason, "");
    assert_int_equal(s->wait_ms, 0);
    assert_string_equal(find_stat(st, "key", "k1")->state, "ready");
    assert_int_equal(find_stat(st, "key", "k1")->wait_ms, 0);
    aigw_stats_free(st);
    assert_int_equal(aigw__breaker_admit(br(k2_claude), o, 5000, NULL), AIGW_ADMIT_PROBE);
    st = aigw__health_snapshot(h, &t.cfg, o, 5001);
    assert_string_equal(find_stat(st, "backend", "anthropic:claude")->state, "half_open");
    assert_string_equal(stat_endpoint(st, "anthropic", "k2", "claude")->state, "half_open");
    assert_int_equal(stat_endpoint(st, "anthropic", "k2", "claude")->wait_ms, 0);
    aigw_stats_free(st);
    /* breakers off: reported closed (endpoints ready, unless benched) */
    t.cfg.health.breaker_threshold = 0;
    st = aigw__health_snapshot(h, &t.cfg, o, 5001);
    assert_string_equal(find_stat(st, "backend", "openai:gpt-4o")->state, "closed");
    assert_string_equal(find_stat(st, "backend", "openai:gpt-4o")->reason, "");
    s = stat_endpoint(st, "openai", "k1", "gpt-4o");
    assert_string_equal(s->state, "ready");
    assert_string_equal(s->reason, "");
    assert_int_equal(s->wait_ms, 0);
    assert_string_equal(stat_endpoint(st, "openai", "inline2", "gpt-4o-mini")->state, "benched");
    aigw_stats_free(st);

    /* no configuration: no keys, the endpoints all the same; budget off:
     * available null */
    t.cfg.health.budget_on = false;
    st = aigw__health_snapshot(h, NULL, o, 5001);
    assert_int_equal(aigw_stats_count(st), 2 + 1 + 4);
    root = cJSON_Parse(aigw_stats_json(st));
    assert_non_null(root);
    assert_int_equal(cJSON_GetArraySize(item(root, "keys")), 0);
    assert_int_equal(cJSON_GetArraySize(item(root, "endpoints")), 4);
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

/* An empty snapshot's JSON, exactly. */
static void test_snapshot_json_empty(void **state)
{
    aigw_health *h = aigw__health_new();
    aigw_health_opts o = base_opts();
    aigw_stats *st;
    (void)state;
    st = aigw__health_snapshot(h, NULL, &o, 0);
    assert_non_null(st);
    assert_string_equal(aigw_stats_json(st),
                        "{\"keys\":[],\"endpoints\":[],\"backends\":[],\"hosts\":[],"
                        "\"healthStore\":{\"kind\":\"local\",\"state\":\"ok\"},"
                        "\"retryBudget\":{\"enabled\":true,\"percent\":20,\"minPerSecond\":0,"
                        "\"windowMs\":10000,\"requests\":0,\"retries\":0,\"denied\":0,"
                        "\"available\":0}}");
    aigw_stats_free(st);
    aigw__health_free(h);
}

/* Snapshot keys dedupe on the value too: the same id with another value is
 * listed twice, each with its own state. */
static void test_snapshot_same_id_other_value(void **state)
{
    aigw_health *h = aigw__health_new();
    test_cfg t;
    aigw_stats *st;
    (void)state;
    make_cfg(&t);
    t.sk1[1].id = (char *)(uintptr_t)"k1"; /* an inline key named like the providerKey */
    t.all[2].id = "k1";
    t.cfg.has_ngrok_key = false;
    aigw__hkey_bench(aigw__health_key(h, "openai", "k1", &t.sk1[1].value, AIGW_ORIGIN_CONFIG),
                     &t.cfg.health, AIGW_CLASS_AUTH, 0);
    st = aigw__health_snapshot(h, &t.cfg, NULL, 0); /* opts from cfg */
    assert_non_null(st);
    assert_int_equal(aigw_stats_count(st), 4);
    assert_string_equal(aigw_stats_at(st, 0)->name, "k1");
    assert_string_equal(aigw_stats_at(st, 0)->state, "ready");
    assert_string_equal(aigw_stats_at(st, 1)->name, "k2");
    assert_string_equal(aigw_stats_at(st, 2)->name, "k1");
    assert_string_equal(aigw_stats_at(st, 2)->provider, "openai");
    assert_string_equal(aigw_stats_at(st, 2)->state, "benched");
    assert_string_equal(aigw_stats_at(st, 3)->name, "inline2");
    aigw_stats_free(st);
    aigw__health_free(h);
}

/* The keys a configuration does not list as such: the ngrok access key,
 * per provider it was used for (with the configuration's value only), and
 * key-less calls to custom providers. */
static void test_snapshot_key_origins(void **state)
{
    aigw_health *h = aigw__health_new();
    aigw_health_opts o = base_opts();
    test_cfg t;
    aigw_secret old = secret(vngrok_old);
    aigw_stats *st;
    const aigw_stat *s;
    cJSON *root, *e;
    (void)state;
    make_cfg(&t);
    t.providers[1].id = (char *)(uintptr_t)"local";
    t.providers[1].custom = true;
    t.cfg.n_providers = 2;
    /* used for anthropic, then openai: once per provider, in that order */
    aigw__hkey_count(aigw__health_key(h, "anthropic", "ngrok", &t.cfg.ngrok_key,
                                      AIGW_ORIGIN_NGROK),
                     AIGW_CLASS_SERVER, -1);
    aigw__hkey_bench(aigw__health_key(h, "openai", "ngrok", &t.cfg.ngrok_key, AIGW_ORIGIN_NGROK),
                     &o, AIGW_CLASS_QUOTA, 0);
    /* an older ngrok key (another configuration's): not listed */
    aigw__health_key(h, "openai", "ngrok", &old, AIGW_ORIGIN_NGROK);
    /* key-less calls: to a custom provider, listed; to a catalog one, not */
    aigw__hkey_count(aigw__health_key(h, "local", "", NULL, AIGW_ORIGIN_NONE), AIGW_CLASS_NONE,
                     7);
    aigw__health_key(h, "openai", "", NULL, AIGW_ORIGIN_NONE);
    st = aigw__health_snapshot(h, &t.cfg, &o, 1000);
    assert_non_null(st);
    assert_int_equal(aigw_stats_count(st), 4 + 2 + 1);
    assert_int_equal(count_kind(st, "key"), 7);
    s = aigw_stats_at(st, 4);
    assert_string_equal(s->name, "ngrok");
    assert_string_equal(s->provider, "anthropic");
    assert_string_equal(s->state, "ready");
    assert_int_equal(aigw_stat_failures(s, "server"), 1);
    s = aigw_stats_at(st, 5);
    assert_string_equal(s->name, "ngrok");
    assert_string_equal(s->provider, "openai");
    assert_string_equal(s->state, "benched");
    assert_string_equal(s->reason, "quota");
    assert_int_equal(s->wait_ms, 3600000 - 1000);
    s = aigw_stats_at(st, 6);
    assert_string_equal(s->kind, "key");
    assert_string_equal(s->name, "");
    assert_string_equal(s->provider, "local");
    assert_int_equal(s->successes, 1);
    assert_int_equal(s->latency_mean_ms, 7);
    root = cJSON_Parse(aigw_stats_json(st));
    assert_non_null(root);
    e = cJSON_GetArrayItem(item(root, "keys"), 6);
    assert_string_equal(str(e, "provider"), "local");
    assert_string_equal(str(e, "id"), "");
    cJSON_Delete(root);
    assert_null(strstr(aigw_stats_json(st), "SECRET"));
    aigw_stats_free(st);

    /* no ngrok key configured: none listed, however it was used before */
    t.cfg.has_ngrok_key = false;
    st = aigw__health_snapshot(h, &t.cfg, &o, 1000);
    assert_int_equal(aigw_stats_count(st), 4 + 1);
    assert_string_equal(aigw_stats_at(st, 4)->provider, "local");
    aigw_stats_free(st);
    aigw__health_free(h);
}

/* The ngrok key listed before any use (as provider "ngrok"), then used:
 * listed per provider used, the placeholder gone. */
static void test_snapshot_ngrok_placeholder_then_use(void **state)
{
    aigw_health *h = aigw__health_new();
    aigw_health_opts o = base_opts();
    test_cfg t;
    aigw_stats *st;
    (void)state;
    make_cfg(&t);
    st = aigw__health_snapshot(h, &t.cfg, &o, 0);
    assert_non_null(st);
    assert_int_equal(aigw_stats_count(st), 5);
    assert_string_equal(aigw_stats_at(st, 4)->provider, "ngrok");
    assert_string_equal(aigw_stats_at(st, 4)->name, "ngrok");
    aigw_stats_free(st);
    aigw__health_key(h, "openai", "ngrok", &t.cfg.ngrok_key, AIGW_ORIGIN_NGROK);
    st = aigw__health_snapshot(h, &t.cfg, &o, 0);
    assert_non_null(st);
    assert_int_equal(aigw_stats_count(st), 5);
    assert_string_equal(aigw_stats_at(st, 4)->provider, "openai");
    assert_string_equal(aigw_stats_at(st, 4)->name, "ngrok");
    aigw_stats_free(st);
    aigw__health_free(h);
}

/* The order of those keys: the ngrok key (per provider used, or its
 * placeholder) before the key-less calls, whatever the order they were
 * first seen in. */
static void test_snapshot_key_origins_order(void **state)
{
    aigw_health *h = aigw__health_new();
    aigw_health_opts o = base_opts();
    test_cfg t;
    aigw_stats *st;
    (void)state;
    make_cfg(&t);
    t.providers[1].id = (char *)(uintptr_t)"local";
    t.providers[1].custom = true;
    t.cfg.n_providers = 2;
    /* the ngrok key used after a key-less call: still listed before it */
    aigw__health_key(h, "local", "", NULL, AIGW_ORIGIN_NONE);
    aigw__health_key(h, "openai", "ngrok", &t.cfg.ngrok_key, AIGW_ORIGIN_NGROK);
    st = aigw__health_snapshot(h, &t.cfg, &o, 0);
    assert_non_null(st);
    assert_int_equal(aigw_stats_count(st), 6);
    assert_string_equal(aigw_stats_at(st, 4)->provider, "openai");
    assert_string_equal(aigw_stats_at(st, 4)->name, "ngrok");
    assert_string_equal(aigw_stats_at(st, 5)->provider, "local");
    assert_string_equal(aigw_stats_at(st, 5)->name, "");
    aigw_stats_free(st);
    aigw__health_free(h);

    /* a key-less call, the ngrok key never used: the placeholder first */
    h = aigw__health_new();
    aigw__health_key(h, "local", "", NULL, AIGW_ORIGIN_NONE);
    st = aigw__health_snapshot(h, &t.cfg, &o, 0);
    assert_non_null(st);
    assert_int_equal(aigw_stats_count(st), 6);
    assert_string_equal(aigw_stats_at(st, 4)->provider, "ngrok");
    assert_string_equal(aigw_stats_at(st, 4)->name, "ngrok");
    assert_string_equal(aigw_stats_at(st, 5)->provider, "local");
    assert_string_equal(aigw_stats_at(st, 5)->name, "");
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
    for (n = 1; n < 300 && !ok; n++) {
        aigw_health *h;
        aigw__alloc_fail_at(n);
        h = aigw__health_new();
        if (h) {
            aigw_hkey *k = aigw__health_key(h, "openai", "k1", &t.keys[0].value,
                                            AIGW_ORIGIN_CONFIG);
            aigw_endpoint *e = aigw__health_endpoint(h, k, "gpt-4o", true);
            aigw_breaker *b = aigw__health_backend(h, "openai", "gpt-4o");
            aigw_breaker *hb = aigw__health_host(h, "https://api.openai.com/v1");
            ok = k && e && b && hb;
            aigw__hkey_count(k, AIGW_CLASS_AUTH, -1);
            aigw__hkey_bench(k, &t.cfg.health, AIGW_CLASS_AUTH, 0);
            aigw__endpoint_cool(e, &t.cfg.health, -1, 0);
            aigw__key_skipped(e ? e->key : NULL, e);
            aigw__breaker_report(br(e), &t.cfg.health, AIGW_HEAR_FAILURE, false,
                                 AIGW_CLASS_SERVER, -1, 0);
            aigw__breaker_report(b, NULL, AIGW_HEAR_FAILURE, false, AIGW_CLASS_SERVER, -1, 0);
            aigw__breaker_report(hb, &t.cfg.health, AIGW_HEAR_FAILURE, false,
                                 AIGW_CLASS_NETWORK, -1, 0);
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
        aigw__health_endpoint(
            h, aigw__health_key(h, "openai", "k1", &t.keys[0].value, AIGW_ORIGIN_CONFIG),
            "gpt-4o", true);
        aigw__health_backend(h, "openai", "gpt-4o");
        aigw__health_host(h, "https://api.openai.com/v1");
        aigw_stats_free(aigw__health_snapshot(h, &t.cfg, &t.cfg.health, 0));
        aigw__alloc_fail_at(n);
        st = aigw__health_snapshot(h, &t.cfg, &t.cfg.health, 0);
        aigw__alloc_fail_at(0);
        if (st) {
            assert_int_equal(aigw_stats_count(st), 5 + 3);
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
    aigw_endpoint *first_ep = NULL, *e;
    aigw_hkey *k, *k0;
    char name[64];
    int i;
    int64_t w = -1;
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
        assert_non_null(key_of(h, "p", name));
    }
    k = key_of(h, "p", "one-too-many");
    assert_null(k);
    /* an untracked key: always ready, never counted, no endpoints */
    aigw__hkey_count(k, AIGW_CLASS_AUTH, -1);
    aigw__hkey_bench(k, &o, AIGW_CLASS_AUTH, 0);
    assert_null(aigw__health_endpoint(h, k, "m", true));
    assert_int_equal(aigw__key_state(k, NULL, 0, NULL), AIGW_KEY_READY);
    assert_int_equal(aigw__health_reset(h, NULL), AIGW_HEALTH_MAX_KEYS);

    /* endpoints: of any keys, up to their own cap */
    k0 = key_of(h, "p", "key-0");
    assert_non_null(k0);
    for (i = 0; i < AIGW_HEALTH_MAX_ENDPOINTS; i++) {
        snprintf(name, sizeof name, "m-%d", i);
        e = aigw__health_endpoint(h, i % 2 ? key_of(h, "p", "key-1") : k0, name, true);
        assert_non_null(e);
        if (i == 0)
            first_ep = e;
    }
    assert_null(aigw__health_endpoint(h, k0, "one-too-many", true));
    assert_null(aigw__health_endpoint(h, key_of(h, "p", "key-2"), "m-0", true));
    assert_ptr_equal(first_ep, aigw__health_endpoint(h, k0, "m-0", true)); /* still found */
    /* an untracked endpoint: never cools, its (absent) breaker admits */
    e = aigw__health_endpoint(h, k0, "one-too-many", true);
    assert_null(e);
    assert_int_equal(aigw__endpoint_cool(e, &o, 5000, 0), 0);
    aigw__key_skipped(e ? e->key : NULL, e);
    assert_int_equal(aigw__key_state(k0, e, 0, NULL), AIGW_KEY_READY);
    assert_null(br(e));
    assert_int_equal(aigw__breaker_admit(br(e), &o, 0, &w), AIGW_ADMIT_GO);
    /* the key's bench still holds there */
    aigw__hkey_bench(k0, &o, AIGW_CLASS_AUTH, 0);
    assert_int_equal(aigw__key_state(k0, e, 0, NULL), AIGW_KEY_BENCHED);
    aigw__health_free(h);
}

/* A configuration's keys always fit: each one given to a client makes room
 * for its keys beyond what the tables hold, with the usual caps to spare. */
static void test_caps_follow_the_configuration(void **state)
{
    aigw_health *h = aigw__health_new();
    aigw_hkey *k0;
    char name[64];
    int i;
    (void)state;
    for (i = 0; i < AIGW_HEALTH_MAX_KEYS; i++) {
        snprintf(name, sizeof name, "key-%d", i);
        assert_non_null(key_of(h, "p", name));
    }
    assert_null(key_of(h, "p", "cfg-0"));
    aigw__health_expect_keys(h, 1000);
    for (i = 0; i < 1000 + AIGW_HEALTH_MAX_KEYS; i++) {
        snprintf(name, sizeof name, "cfg-%d", i);
        if (!key_of(h, "p", name))
            fail_msg("key %d of a configuration of 1000 is not tracked", i);
    }
    assert_null(key_of(h, "p", "one-too-many"));
    /* a smaller configuration later never shrinks the room */
    aigw__health_expect_keys(h, 0);
    assert_non_null(key_of(h, "p", "one-too-many"));
    /* endpoints: two models per configured key beyond their cap */
    k0 = key_of(h, "p", "key-0");
    for (i = 0; i < AIGW_HEALTH_MAX_ENDPOINTS + 2000; i++) {
        snprintf(name, sizeof name, "m-%d", i);
        if (!aigw__health_endpoint(h, k0, name, true))
            fail_msg("endpoint %d is not tracked", i);
    }
    assert_null(aigw__health_endpoint(h, k0, "one-too-many", true));
    aigw__health_free(h);
}

/* ---- threads ---- */

#define N_THREADS 4
#define N_ITER 20000
#define N_KEYS 8
#define N_MODELS 50

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
        aigw_class cls = (aigw_class)(i % AIGW_CLASS__COUNT);
        aigw_hkey *k;
        aigw_endpoint *e;
        aigw_breaker *b;
        aigw_admit a;
        aigw_key_health v;
        snprintf(id, sizeof id, "k%d", i % N_KEYS);
        snprintf(model, sizeof model, "m%d", (i * 7 + w->index) % N_MODELS);
        k = key_of(w->h, "p", id);
        e = aigw__health_endpoint(w->h, k, model, true);
        aigw__key_state(k, e, now, &wait);
        aigw__key_reason(k, e, now);
        aigw__key_view(k, e, now, 1, &v);
        aigw__hkey_count(k, cls, i % 200);
        if (cls == AIGW_CLASS_RATE_LIMIT)
            aigw__endpoint_cool(e, &w->o, i % 3 ? -1 : 50, now);
        else if (cls == AIGW_CLASS_AUTH || cls == AIGW_CLASS_QUOTA)
            aigw__hkey_bench(k, &w->o, cls, now);
        /* one of: the endpoint's breaker skips it, or hears it */
        (void)aigw__breaker_would_admit(br(e), &w->o, now);
        a = aigw__breaker_admit(br(e), &w->o, now, &wait);
        if (a == AIGW_ADMIT_OPEN)
            aigw__key_skipped(e ? e->key : NULL, e);
        else
            aigw__breaker_report(br(e), &w->o, i % 4 ? AIGW_HEAR_FAILURE : AIGW_HEAR_SUCCESS,
                                 a == AIGW_ADMIT_PROBE, AIGW_CLASS_SERVER, i % 100, now);
        b = aigw__health_backend(w->h, "p", model);
        aigw__breaker_report(b, NULL, i % 4 ? AIGW_HEAR_FAILURE : AIGW_HEAR_SUCCESS, false,
                             AIGW_CLASS_SERVER, i % 100, now);
        b = aigw__health_host(w->h, i % 2 ? "https://a.example/v1" : "https://b.example/v1");
        aigw__breaker_report(b, &w->o, AIGW_HEAR_SUCCESS, false, AIGW_CLASS_NONE, 5, now);
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
    aigw_config cfg;
    aigw_key_entry all[N_KEYS];
    char ids[N_KEYS][24];
    uint64_t key_requests = 0, key_skips = 0, ep_requests = 0, ep_skips = 0;
    uint64_t backend_requests = 0, host_requests = 0, granted = 0, req, ret, den;
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
    /* the keys, through a configuration that lists them */
    memset(&cfg, 0, sizeof cfg);
    for (i = 0; i < N_KEYS; i++) {
        snprintf(ids[i], sizeof ids[i], "k%zu", i);
        all[i].provider = "p";
        all[i].id = ids[i];
        all[i].value = NULL;
    }
    cfg.all_keys = all;
    cfg.n_all_keys = N_KEYS;
    st = aigw__health_snapshot(h, &cfg, &w[0].o, N_ITER);
    assert_non_null(st);
    /* every (key, model) pair met: 8 x 50 endpoints */
    assert_int_equal(aigw_stats_count(st), N_KEYS + N_MODELS + 2 + N_KEYS * N_MODELS);
    for (i = 0; i < aigw_stats_count(st); i++) {
        const aigw_stat *s = aigw_stats_at(st, i);
        if (strcmp(s->kind, "key") == 0) {
            key_requests += s->requests;
            key_skips += s->skips;
        } else if (strcmp(s->kind, "endpoint") == 0) {
            ep_requests += s->requests;
            ep_skips += s->skips;
        } else if (strcmp(s->kind, "backend") == 0) {
            backend_requests += s->requests;
        }
    }
    assert_int_equal(key_requests, (uint64_t)N_THREADS * N_ITER);
    assert_int_equal(ep_requests + ep_skips, (uint64_t)N_THREADS * N_ITER);
    assert_int_equal(key_skips, ep_skips);
    assert_int_equal(backend_requests, (uint64_t)N_THREADS * N_ITER);
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
        cmocka_unit_test(test_lookups_remembered),
        cmocka_unit_test(test_cooldown_with_wait),
        cmocka_unit_test(test_cooldown_jitter),
        cmocka_unit_test(test_cooldown_only_extends_and_cap),
        cmocka_unit_test(test_cool_none_in_force),
        cmocka_unit_test(test_rate_limit_per_model),
        cmocka_unit_test(test_bench),
        cmocka_unit_test(test_bench_every_model),
        cmocka_unit_test(test_reset),
        cmocka_unit_test(test_reset_endpoints),
        cmocka_unit_test(test_key_counters),
        cmocka_unit_test(test_breaker_opens_after_threshold),
        cmocka_unit_test(test_breaker_probe_outcomes),
        cmocka_unit_test(test_breaker_off),
        cmocka_unit_test(test_endpoint_breakers_and_backend_state),
        cmocka_unit_test(test_budget_exhaustion),
        cmocka_unit_test(test_budget_floor),
        cmocka_unit_test(test_budget_window_slides),
        cmocka_unit_test(test_budget_off),
        cmocka_unit_test(test_host_normalisation),
        cmocka_unit_test(test_latency_percentiles),
        cmocka_unit_test(test_latency_buckets_within_19_percent),
        cmocka_unit_test(test_snapshot_and_json),
        cmocka_unit_test(test_snapshot_json_empty),
        cmocka_unit_test(test_snapshot_same_id_other_value),
        cmocka_unit_test(test_snapshot_key_origins),
        cmocka_unit_test(test_snapshot_ngrok_placeholder_then_use),
        cmocka_unit_test(test_snapshot_key_origins_order),
        cmocka_unit_test(test_out_of_memory),
        cmocka_unit_test(test_table_caps),
        cmocka_unit_test(test_caps_follow_the_configuration),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
