/*
 * test_store.c - key health shared through a health store, deterministic:
 * two clients (two processes of a fleet) share one fake store
 * (tests/support/store.c) and the scripted transport M with its fake clock,
 * so each test asserts the exact attempts and skips of each client's
 * requests, the calls the upstream saw, and what the store holds.  The same
 * behaviour on a real Redis, with real processes, is test_fleet.c's.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "aigw.h"
#include "support.h"

#define PROVIDER                                                                           \
    "\"providers\":[{\"providerId\":\"fake\",\"name\":\"Fake\","                           \
    "\"baseUrl\":\"http://127.0.0.1:9/v1\",\"models\":[{\"modelId\":\"m1\"}]}]"
#define KEYS                                                                               \
    "\"providerKeys\":[{\"id\":\"a\",\"providerId\":\"fake\",\"value\":\"sk-a\"},"         \
    "{\"id\":\"b\",\"providerId\":\"fake\",\"value\":\"sk-b\"}]"
#define RULE_AB                                                                            \
    "\"accessKeyConfiguration\":{\"name\":\"t\",\"router\":{\"rules\":[{\"provider\":"     \
    "\"fake\",\"steps\":[{\"type\":\"user\",\"keys\":[{\"id\":\"a\"},{\"id\":\"b\"}]}]}]}}"

static const char *BODY = "{\"model\":\"fake:m1\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";

#define RL_BODY "{\"error\":{\"message\":\"Rate limit reached\",\"code\":\"rate_limit_exceeded\"}}"
#define AUTH_BODY "{\"error\":{\"message\":\"Incorrect API key\",\"code\":\"invalid_api_key\"}}"
#define SERVER_BODY "{\"error\":{\"message\":\"The server had an error\",\"type\":\"server_error\"}}"
#define OK_BODY "{\"id\":\"x\",\"choices\":[]}"

#define FIELDS "key/result/verdict"
#define SKIPS "reason/key/wait"

static fake_store *FS;

static int setup(void **state)
{
    mock_setup(state);
    mock_reset("sk-");
    FS = fake_store_new(&M.clock);
    return FS ? 0 : -1;
}

static int teardown(void **state)
{
    fake_store_free(FS);
    FS = NULL;
    return mock_teardown(state);
}

/* A client on the scripted transport sharing FS; gw: more gatewayConfig. */
static aigw_client *fleet_client(const char *gw)
{
    char json[2048];
    aigw_client *c;
    snprintf(json, sizeof json, "{" PROVIDER "," KEYS "," RULE_AB ",\"gatewayConfig\":{%s}}",
             gw ? gw : "");
    c = mock_attach(client_from_json(json));
    assert_int_equal(aigw_client_set_health_store(c, &FAKE_STORE, FS), AIGW_OK);
    return c;
}

static void send_expect(aigw_client *c, const char *attempts, const char *skips)
{
    aigw_response *r = send_body(c, BODY);
    assert_attempts_as(r, FIELDS, attempts);
    assert_skips_as(r, SKIPS, skips);
    aigw_response_free(r);
}

static const char *store_of(aigw_client *c)
{
    static char buf[64];
    aigw_response *r = send_body(c, BODY);
    snprintf(buf, sizeof buf, "%s", aigw_response_health_store(r));
    aigw_response_free(r);
    return buf;
}

static char *stats_json(aigw_client *c)
{
    aigw_stats *s = NULL;
    char *j;
    assert_int_equal(aigw_client_stats(c, &s), AIGW_OK);
    j = strdup(aigw_stats_json(s));
    aigw_stats_free(s);
    return j;
}

/* a meets a 429 on key a (Retry-After: 2) and is served by key b; then b,
 * reading the store, passes key a over. */
static void a_limited_b_learns(aigw_client *a, aigw_client *b)
{
    push_h(429, "retry-after", "2", RL_BODY);
    push(200, OK_BODY);
    send_expect(a, "a/429/next_key b/200/succeeded", "");
    push(200, OK_BODY);
    send_expect(b, "b/200/succeeded", "key_cooling/a/2000");
}

/* A 429 one client met is known to the other at its next request: it
 * passes the key over without calling it. */
static void test_cooldown_is_learned_by_the_fleet(void **state)
{
    aigw_client *a = fleet_client(NULL), *b = fleet_client(NULL);
    char value[64];
    int64_t ttl = 0;
    (void)state;
    push_h(429, "retry-after", "2", RL_BODY);
    push(200, OK_BODY);
    send_expect(a, "a/429/next_key b/200/succeeded", "");
    assert_int_equal(fake_store_find(FS, "c:", "", NULL, 0, value, sizeof value, &ttl), 1);
    assert_string_equal(value, "cool");
    assert_int_equal(ttl, 2000);
    push(200, OK_BODY);
    send_expect(b, "b/200/succeeded", "key_cooling/a/2000");
    assert_calls_as("key", "a b b");
    aigw_client_free(a);
    aigw_client_free(b);
}

/* When the cooldown ends, the first client to send claims the first try;
 * its 429 cools the key again for the fleet: the other never calls it. */
static void test_one_first_try_after_a_cooldown(void **state)
{
    aigw_client *a = fleet_client(NULL), *b = fleet_client(NULL);
    char value[64];
    (void)state;
    a_limited_b_learns(a, b);
    M.clock.now += 2000; /* the cooldown is over for both */
    push_h(429, "retry-after", "2", RL_BODY);
    push(200, OK_BODY);
    send_expect(b, "a/429/next_key b/200/succeeded", "");
    assert_int_equal(fake_store_calls(FS, "claim"), 1);
    push(200, OK_BODY);
    send_expect(a, "b/200/succeeded", "key_cooling/a/2000");
    assert_calls_as("key", "a b b a b b");
    /* a first try held by another client: the key is passed over until it
     * answers (or a sync later) */
    M.clock.now += 2000;
    assert_int_equal(fake_store_find(FS, "c:", "", value, sizeof value, NULL, 0, NULL), 0);
    aigw_client_free(a);
    aigw_client_free(b);
}

/* Another client's first try is out: this one passes the key over for what
 * is left of it (at most syncInterval), then tries it itself. */
static void test_first_try_held_elsewhere(void **state)
{
    aigw_client *a = fleet_client(NULL);
    char name[64];
    (void)state;
    push_h(429, "retry-after", "1", RL_BODY);
    push(200, OK_BODY);
    send_expect(a, "a/429/next_key b/200/succeeded", "");
    assert_int_equal(fake_store_find(FS, "c:", "cool", name, sizeof name, NULL, 0, NULL), 1);
    M.clock.now += 1000;
    fake_store_raw(FS, name, "trial 0123456789abcdef", 700, false);
    push(200, OK_BODY);
    send_expect(a, "b/200/succeeded", "key_cooling/a/100");
    M.clock.now += 100;
    fake_store_raw(FS, name, "trial 0123456789abcdef", 0, false); /* it answered */
    push(200, OK_BODY);
    send_expect(a, "a/200/succeeded", "");
    /* served: the first try is let go, and the key is ungated */
    assert_int_equal(fake_store_find(FS, "c:", "", NULL, 0, NULL, 0, NULL), 0);
    push(200, OK_BODY);
    send_expect(a, "a/200/succeeded", "");
    assert_calls_as("key", "a b b a a");
    aigw_client_free(a);
}

/* A bench (auth) is shared with its expiry. */
static void test_bench_is_shared(void **state)
{
    aigw_client *a = fleet_client("\"keyBenchTime\":\"10m\"");
    aigw_client *b = fleet_client("\"keyBenchTime\":\"10m\"");
    char value[64];
    int64_t ttl;
    (void)state;
    push(401, AUTH_BODY);
    push(200, OK_BODY);
    send_expect(a, "a/401/next_key b/200/succeeded", "");
    assert_int_equal(fake_store_find(FS, "b:", "", NULL, 0, value, sizeof value, &ttl), 1);
    assert_string_equal(value, "bench auth");
    assert_int_equal(ttl, 600000);
    M.clock.now += 1000;
    push(200, OK_BODY);
    send_expect(b, "b/200/succeeded", "key_benched/a/599000");
    assert_calls_as("key", "a b b");
    aigw_client_free(a);
    aigw_client_free(b);
}

#define BREAKER "\"circuitBreaker\":{\"failures\":2,\"cooloff\":\"1s\"},\"perRequestTimeout\":\"10s\""

/* An endpoint's breaker opened by one client is open for the other; after
 * the cool-off exactly one client probes. */
static void test_breaker_is_shared_and_probed_once(void **state)
{
    aigw_client *a = fleet_client(BREAKER), *b = fleet_client(BREAKER);
    char value[64], pname[64], oname[64];
    int64_t ttl;
    (void)state;
    push(500, SERVER_BODY);
    push(200, OK_BODY);
    send_expect(a, "a/500/next_key b/200/succeeded", "");
    push(500, SERVER_BODY);
    push(200, OK_BODY);
    send_expect(a, "a/500/next_key b/200/succeeded", "");
    assert_int_equal(fake_store_find(FS, "o:", "", oname, sizeof oname, value, sizeof value, &ttl), 1);
    assert_string_equal(value, "open server 11000"); /* cool-off + a probe's life */
    assert_int_equal(ttl, 12000);
    push(200, OK_BODY);
    send_expect(b, "b/200/succeeded", "circuit_open/a/1000");
    M.clock.now += 1000;
    /* b's probe is out (claimed in the store): a passes the key over */
    pname[0] = 'p';
    snprintf(pname + 1, sizeof pname - 1, "%s", oname + 1);
    fake_store_raw(FS, pname, "probe 0123456789abcdef", 11000, false);
    push(200, OK_BODY);
    send_expect(a, "b/200/succeeded", "circuit_open/a/100");
    /* that probe failed: open again for another cool-off */
    M.clock.now += 100;
    fake_store_raw(FS, pname, "probe 0123456789abcdef", 0, false);
    fake_store_raw(FS, oname, "open server 11000", 12000, false);
    push(200, OK_BODY);
    send_expect(a, "b/200/succeeded", "circuit_open/a/1000");
    M.clock.now += 1000;
    /* now a probes, and its success closes the breaker for the fleet */
    push(200, OK_BODY);
    send_expect(a, "a/200/succeeded", "");
    assert_int_equal(fake_store_find(FS, "o:", "", NULL, 0, NULL, 0, NULL), 0);
    assert_int_equal(fake_store_find(FS, "p:", "", NULL, 0, NULL, 0, NULL), 0);
    M.clock.now += 100;
    push(200, OK_BODY);
    send_expect(b, "a/200/succeeded", "");
    assert_calls_as("key", "a b a b b b b a a");
    aigw_client_free(a);
    aigw_client_free(b);
}

/* One probe per cool-off even for a client that has not read the reopening
 * yet: a's probe fails and lets the claim go; b, half-open by what it read
 * before, wins the claim, finds the new cool-off in the store and stays
 * open. */
static void test_no_second_probe_after_a_reopening(void **state)
{
    aigw_client *a = fleet_client(BREAKER), *b = fleet_client(BREAKER);
    (void)state;
    push(500, SERVER_BODY);
    push(200, OK_BODY);
    send_expect(a, "a/500/next_key b/200/succeeded", "");
    push(500, SERVER_BODY);
    push(200, OK_BODY);
    send_expect(a, "a/500/next_key b/200/succeeded", "");
    M.clock.now += 950;
    push(200, OK_BODY);
    send_expect(b, "b/200/succeeded", "circuit_open/a/50"); /* b read it: 50 ms left */
    M.clock.now += 50;
    push(500, SERVER_BODY); /* a's probe fails: open again for a cool-off */
    push(200, OK_BODY);
    send_expect(a, "a/500/next_key b/200/succeeded", "");
    M.clock.now += 40; /* b has not read the store since: half-open for b */
    push(200, OK_BODY);
    send_expect(b, "b/200/succeeded", "circuit_open/a/960");
    assert_int_equal(fake_store_find(FS, "p:", "", NULL, 0, NULL, 0, NULL), 0);
    assert_calls_as("key", "a b a b b a b b");
    aigw_client_free(a);
    aigw_client_free(b);
}

/* A store that does not answer never fails a request: the client goes on
 * with its own state, says so, and comes back with back-off. */
static void test_store_down_falls_back(void **state)
{
    aigw_client *a = fleet_client(NULL);
    char *j;
    (void)state;
    assert_string_equal(store_of(a), "fake");
    fake_store_fail(FS, true);
    M.clock.now += 1000;
    push_h(429, "retry-after", "2", RL_BODY);
    push(200, OK_BODY);
    {
        aigw_response *r = send_body(a, BODY);
        assert_attempts_as(r, FIELDS, "a/429/next_key b/200/succeeded");
        assert_string_equal(aigw_response_health_store(r), "local");
        assert_non_null(strstr(aigw_response_trace_json(r), "\"healthStore\":\"local\""));
        aigw_response_free(r);
    }
    j = stats_json(a);
    assert_non_null(strstr(j, "\"healthStore\":{\"kind\":\"fake\",\"state\":\"fallback\""));
    free(j);
    /* the cooldown holds locally, without the store */
    push(200, OK_BODY);
    send_expect(a, "b/200/succeeded", "key_cooling/a/2000");
    fake_store_fail(FS, false);
    M.clock.now += 300; /* past the first back-off */
    assert_string_equal(store_of(a), "fake");
    j = stats_json(a);
    assert_non_null(strstr(j, "\"state\":\"connected\""));
    assert_non_null(strstr(j, "\"fallbacks\":1,\"recoveries\":1"));
    free(j);
    /* what it learned while alone is told to the store it came back to */
    {
        char value[64];
        assert_int_equal(fake_store_find(FS, "c:", "", NULL, 0, value, sizeof value, NULL), 1);
        assert_string_equal(value, "cool");
    }
    aigw_client_free(a);
}

/* What does not parse is ignored and written over; what claims more than
 * this client would ever do is capped. */
static void test_garbage_is_ignored(void **state)
{
    aigw_client *a = fleet_client("\"keyCooldownMax\":\"5s\"");
    char cname[64], oname[64], value[64], *j;
    int64_t ttl;
    (void)state;
    push_h(429, "retry-after", "2", RL_BODY);
    push(200, OK_BODY);
    send_expect(a, "a/429/next_key b/200/succeeded", "");
    assert_int_equal(fake_store_find(FS, "c:", "", cname, sizeof cname, NULL, 0, NULL), 1);
    snprintf(oname, sizeof oname, "o:%s", cname + 2); /* the endpoint's breaker */
    M.clock.now += 2000;
    fake_store_raw(FS, cname, "cool", -1, false);       /* no expiry */
    fake_store_raw(FS, oname, "open server 5", 5000, true); /* another type */
    push(200, OK_BODY);
    send_expect(a, "a/200/succeeded", "");
    j = stats_json(a);
    assert_non_null(strstr(j, "\"ignored\":"));
    assert_null(strstr(j, "\"ignored\":0"));
    free(j);
    /* a forged hour-long cooldown is held for keyCooldownMax at most */
    fake_store_raw(FS, cname, "cool", 3600 * 1000, false);
    M.clock.now += 100;
    push(200, OK_BODY);
    send_expect(a, "b/200/succeeded", "key_cooling/a/5000");
    /* garbage is written over by the next fact */
    M.clock.now += 5000;
    fake_store_raw(FS, cname, "\x01\x02 not a fact", 60000, false);
    push_h(429, "retry-after", "2", RL_BODY);
    push(200, OK_BODY);
    send_expect(a, "a/429/next_key b/200/succeeded", "");
    assert_int_equal(fake_store_find(FS, cname, "", NULL, 0, value, sizeof value, &ttl), 1);
    assert_string_equal(value, "cool");
    assert_int_equal(ttl, 2000);
    aigw_client_free(a);
}

/* Names hold no key value, are the same for every client of the same
 * configuration, and change with the salt. */
static void test_names_hold_no_secret(void **state)
{
    aigw_client *a = fleet_client("\"keyBenchTime\":\"1m\"");
    aigw_client *b = fleet_client("\"keyBenchTime\":\"1m\"");
    char dump[4096], name1[64], name2[64];
    const char *keys[] = {"sk-a", "sk-b"};
    size_t i;
    (void)state;
    push_h(429, "retry-after", "10", RL_BODY); /* longer than retryAfterMax: no wait */
    push(200, OK_BODY);
    send_expect(a, "a/429/next_key b/200/succeeded", "");
    push(401, AUTH_BODY);
    aigw_response_free(send_body(a, BODY)); /* a cools: b's 401 benches it */
    if (fake_store_dump(FS, dump, sizeof dump) < 2)
        fail_msg("the store holds: %s", dump);
    assert_no_secret_in(dump, keys, 2);
    for (i = 0; dump[i]; i++) /* "<kind>:<16 hex>=<value>\n" */
        if (i == 0 || dump[i - 1] == '\n') {
            size_t k;
            assert_true(dump[i] >= 'a' && dump[i] <= 'z');
            assert_int_equal(dump[i + 1], ':');
            for (k = 2; k < 18; k++)
                assert_non_null(strchr("0123456789abcdef", dump[i + k]));
            assert_int_equal(dump[i + 18], '=');
        }
    assert_int_equal(fake_store_find(FS, "c:", "", name1, sizeof name1, NULL, 0, NULL), 1);
    /* the other client's 429 on the same key lands on the same name */
    M.clock.now += 10000;
    push_h(429, "retry-after", "30", RL_BODY);
    aigw_response_free(send_body(b, BODY));
    assert_int_equal(fake_store_find(FS, "c:", "", name2, sizeof name2, NULL, 0, NULL), 1);
    assert_string_equal(name1, name2);
    aigw_client_free(a);
    aigw_client_free(b);
}

/* Resetting a key ends its facts for the fleet: a "clear" over them, so
 * that a client that learned them ends them too rather than tell them
 * again. */
static void test_reset_forgets_in_the_store(void **state)
{
    aigw_client *a = fleet_client(NULL), *b = fleet_client(NULL);
    char value[64];
    (void)state;
    a_limited_b_learns(a, b);
    assert_int_equal(aigw_client_reset_health(a, "a"), AIGW_OK);
    assert_int_equal(fake_store_find(FS, "c:", "", NULL, 0, value, sizeof value, NULL), 1);
    assert_string_equal(value, "clear");
    M.clock.now += 100;
    push(200, OK_BODY);
    send_expect(b, "a/200/succeeded", "");
    push(200, OK_BODY);
    send_expect(a, "a/200/succeeded", "");
    /* nobody told it again */
    assert_int_equal(fake_store_find(FS, "c:", "cool", NULL, 0, NULL, 0, NULL), 0);
    aigw_client_free(a);
    aigw_client_free(b);
}

/* A retry that waited for its key's Retry-After is not dropped because the
 * store holds the cooldown a round trip longer (it was written after the
 * wait began). */
static void test_retry_waits_out_the_store_latency(void **state)
{
    aigw_client *a;
    char json[2048];
    (void)state;
    snprintf(json, sizeof json,
             "{" PROVIDER "," KEYS ",\"accessKeyConfiguration\":{\"name\":\"t\",\"router\":"
             "{\"rules\":[{\"provider\":\"fake\",\"steps\":[{\"type\":\"user\",\"keys\":"
             "[{\"id\":\"a\"}]}]}]}},\"gatewayConfig\":{\"sameBackendRetries\":1}}");
    a = mock_attach(client_from_json(json));
    assert_int_equal(aigw_client_set_health_store(a, &FAKE_STORE, FS), AIGW_OK);
    fake_store_latency(FS, 1, 5);
    push_h(429, "retry-after", "1", RL_BODY);
    push(200, OK_BODY);
    send_expect(a, "a/429/retry_same_backend a/200/succeeded", "");
    assert_calls_as("key", "a a");
    aigw_client_free(a);
}

/* The store is read at most every syncInterval, once for a step's keys. */
static void test_sync_interval(void **state)
{
    aigw_client *a = fleet_client(NULL);
    int i;
    (void)state;
    for (i = 0; i < 4; i++) {
        push(200, OK_BODY);
        send_expect(a, "a/200/succeeded", "");
        M.clock.now += 30;
    }
    /* t = 0, 30, 60, 90: read at 0; at 120 again */
    assert_int_equal(fake_store_calls(FS, "get"), 1);
    push(200, OK_BODY);
    send_expect(a, "a/200/succeeded", "");
    assert_int_equal(fake_store_calls(FS, "get"), 2);
    assert_int_equal(fake_store_calls(FS, "put"), 0);
    assert_int_equal(fake_store_calls(FS, "claim"), 0);
    aigw_client_free(a);
}

static void test_set_health_store_checks(void **state)
{
    aigw_client *a = fleet_client(NULL);
    aigw_health_store bad = FAKE_STORE;
    (void)state;
    bad.version = 99;
    assert_int_equal(aigw_client_set_health_store(a, &bad, FS), AIGW_EVERSION);
    bad = FAKE_STORE;
    bad.claim = NULL;
    assert_int_equal(aigw_client_set_health_store(a, &bad, FS), AIGW_EINVAL);
    assert_int_equal(aigw_client_set_health_store(NULL, &FAKE_STORE, FS), AIGW_EINVAL);
    assert_int_equal(aigw_client_set_health_store(a, NULL, NULL), AIGW_OK);
    assert_string_equal(store_of(a), "local");
    aigw_client_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_cooldown_is_learned_by_the_fleet, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_first_try_after_a_cooldown, setup, teardown),
        cmocka_unit_test_setup_teardown(test_first_try_held_elsewhere, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bench_is_shared, setup, teardown),
        cmocka_unit_test_setup_teardown(test_breaker_is_shared_and_probed_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_second_probe_after_a_reopening, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_store_down_falls_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_garbage_is_ignored, setup, teardown),
        cmocka_unit_test_setup_teardown(test_names_hold_no_secret, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reset_forgets_in_the_store, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_waits_out_the_store_latency, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_sync_interval, setup, teardown),
        cmocka_unit_test_setup_teardown(test_set_health_store_checks, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
