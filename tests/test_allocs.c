/*
 * test_allocs.c - allocations per request, pinned (issue 13): libaigw's own
 * (its allocator door, cJSON's routed through it) and libcurl's
 * (curl_global_init_mem), counted over many requests at steady state
 * against the mock provider on loopback through the real libcurl
 * transport.  Each count must be exactly the same for every request, and
 * at most its pin: an allocation added to the hot path fails this test (a
 * change that removes one lowers the pin with it).  Needs AIGW_ALLOC_HOOKS
 * (debug and debugoptimized builds); in a release build it skips.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "aigw.h"
#include "internal.h"
#ifdef AIGW__ASAN
#include <sanitizer/asan_interface.h>
#endif
#include "response.h"
#include "mockprov.h"
#include "oom.h"
#include "support.h"

/* The pins: allocations per request, as measured when they were set
 * against the mock provider's answers. */
#define PIN_ONE_KEY_AIGW 0 /* one key, a whole answer: a spare response's room */
#define PIN_ONE_KEY_CURL 29 /* the URL parsed once (CURLOPT_CURLU): 31 before */
#define PIN_COOLING_AIGW 1 /* [429 key (cooling), ok key] */
#define PIN_COOLING_CURL 29
#define PIN_STREAM_AIGW 6  /* a stream, whatever its length */
#define PIN_STREAM_CURL 30

#define K_A "sk-alloc-a-0123456789"
#define K_B "sk-alloc-b-9876543210"
#define ROUNDS 50

static const char CFG[] =
    "{\"providers\":[{\"providerId\":\"mock\",\"name\":\"M\",\"baseUrl\":\"%s\"}],"
    "\"providerKeys\":[{\"id\":\"a\",\"providerId\":\"mock\",\"value\":\"" K_A "\"},"
    "{\"id\":\"b\",\"providerId\":\"mock\",\"value\":\"" K_B "\"}],"
    "\"accessKeyConfiguration\":{\"name\":\"allocs\",\"router\":{\"rules\":["
    "{\"provider\":\"mock\",\"steps\":[{\"type\":\"user\",\"keys\":[%s]}]}]}},"
    "\"gatewayConfig\":{\"perRequestTimeout\":\"5s\",\"totalTimeout\":\"10s\"}}";

static const char BODY[] = "{\"model\":\"mock:m1\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
static const char STREAM_BODY[] =
    "{\"model\":\"mock:m1\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";

static aigw_client *make_client(const char *keys)
{
    char json[2048];
    snprintf(json, sizeof json, CFG, mockprov_base_url(MP), keys);
    return client_from_json(json);
}

typedef struct counts {
    long aigw, curl;
} counts;

static counts now_counts(void)
{
    counts c = {aigw__alloc_count(), oom_count(&OOM_CURL)};
    return c;
}

static int on_data(void *ud, const char *data, size_t len)
{
    (void)data;
    *(size_t *)ud += len;
    return 0;
}

/* One request (whole or streamed), served by key_id.  The request object
 * is the caller's, made once: its allocations are not the request's. */
static void one(aigw_client *c, const aigw_request *req, bool stream, const char *key_id)
{
    aigw_response *r = NULL;
    size_t got = 0;
    aigw_status st;
    if (stream) {
        aigw_stream_handler h;
        memset(&h, 0, sizeof h);
        h.version = AIGW_STREAM_VERSION;
        h.on_data = on_data;
        st = aigw_client_stream(c, req, &h, &got, &r, NULL);
    } else {
        st = aigw_client_send(c, req, &r, NULL);
    }
    assert_int_equal(st, AIGW_OK);
    assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_SERVED);
    assert_string_equal(
        aigw_attempt_key_id(aigw_response_attempt(r, aigw_response_attempt_count(r) - 1)), key_id);
    if (stream)
        assert_true(got > 0);
    aigw_response_free(r);
}

/* Warms up, then counts ROUNDS requests one by one: the most any of them
 * made must be at most the pins.  (Not exactly equal: how the answer's
 * bytes are split into reads may add a buffer's growth now and then.) */
static void pinned(aigw_client *c, bool stream, const char *key_id, const char *what,
                   long pin_aigw, long pin_curl)
{
    counts lo = {LONG_MAX, LONG_MAX}, hi = {0, 0};
    aigw_request *req = NULL;
    const char *body = stream ? STREAM_BODY : BODY;
    int i;
    assert_int_equal(aigw_request_new(&req), AIGW_OK);
    assert_int_equal(aigw_request_set_body(req, body, strlen(body)), AIGW_OK);
    for (i = 0; i < 5; i++)
        one(c, req, stream, key_id);
    for (i = 0; i < ROUNDS; i++) {
        counts a = now_counts(), b, d;
        one(c, req, stream, key_id);
        b = now_counts();
        d.aigw = b.aigw - a.aigw;
        d.curl = b.curl - a.curl;
        lo.aigw = d.aigw < lo.aigw ? d.aigw : lo.aigw;
        lo.curl = d.curl < lo.curl ? d.curl : lo.curl;
        hi.aigw = d.aigw > hi.aigw ? d.aigw : hi.aigw;
        hi.curl = d.curl > hi.curl ? d.curl : hi.curl;
    }
    aigw_request_free(req);
    print_message("%s: allocations per request: libaigw %ld-%ld (pin %ld), libcurl %ld-%ld "
                  "(pin %ld)\n", what, lo.aigw, hi.aigw, pin_aigw, lo.curl, hi.curl, pin_curl);
    if (hi.aigw > pin_aigw)
        fail_msg("%s: libaigw made up to %ld allocations per request, pinned at %ld", what,
                 hi.aigw, pin_aigw);
    if (hi.curl > pin_curl)
        fail_msg("%s: libcurl made up to %ld allocations per request, pinned at %ld", what,
                 hi.curl, pin_curl);
}

static void test_one_key(void **state)
{
    aigw_client *c = make_client("{\"id\":\"a\"}");
    (void)state;
    pinned(c, false, "a", "one key", PIN_ONE_KEY_AIGW, PIN_ONE_KEY_CURL);
    aigw_client_free(c);
}

/* The first key answers 429 with Retry-After: 30 once; afterwards it cools
 * and every request goes to the second key without asking the first. */
static void test_cooling_key_skipped(void **state)
{
    aigw_client *c = make_client("{\"id\":\"a\"},{\"id\":\"b\"}");
    (void)state;
    mp_add_rule(MP, MOCKPROV_RESPOND, K_A, NULL, 429, "Retry-After: 30\r\n",
                "{\"error\":{\"message\":\"Rate limit reached\",\"code\":\"rate_limit_exceeded\"}}",
                0);
    pinned(c, false, "b", "[429 key, ok key]", PIN_COOLING_AIGW, PIN_COOLING_CURL);
    assert_int_equal(mockprov_count(MP, K_A), 1);
    assert_int_equal(mockprov_count(MP, K_B), 5 + ROUNDS);
    aigw_client_free(c);
}

/* A stream's allocations do not grow with its length. */
static void stream_of(int n_events, const char *what)
{
    aigw_client *c = make_client("{\"id\":\"a\"}");
    const char **chunks = calloc((size_t)n_events + 3, sizeof *chunks);
    mockprov_rule rl;
    int i;
    assert_non_null(chunks);
    for (i = 0; i < n_events; i++)
        chunks[i] = "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":"
                    "[{\"index\":0,\"delta\":{\"content\":\"tok\"},\"finish_reason\":null}]}\n\n";
    chunks[n_events] = "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},"
                       "\"finish_reason\":\"stop\"}]}\n\n";
    chunks[n_events + 1] = "data: [DONE]\n\n";
    rl = mp_rule(MOCKPROV_STREAM, NULL, NULL, 200, NULL, NULL, 0);
    rl.chunks = chunks;
    mp_add(MP, rl);
    free(chunks);
    pinned(c, true, "a", what, PIN_STREAM_AIGW, PIN_STREAM_CURL);
    aigw_client_free(c);
}

static void test_stream_short(void **state)
{
    (void)state;
    stream_of(2, "a stream of 2 events");
}

static void test_stream_long(void **state)
{
    (void)state;
    stream_of(200, "a stream of 200 events");
}

/* A freed response is parked and the next request's is made from it: its
 * header block and body buffer filled again, nothing of the old answer
 * showing; under AddressSanitizer a parked response is poisoned, so a use
 * after aigw_response_free is still caught. */
static void test_spare_response(void **state)
{
    aigw_client *c = make_client("{\"id\":\"a\"}");
    aigw_request *req = NULL;
    aigw_response *r1 = NULL, *r2 = NULL;
    const char *body;
    size_t len;
    char first[64];
    (void)state;
    mp_add_rule(MP, MOCKPROV_RESPOND, NULL, NULL, 200, "X-First: 1\r\n",
                "{\"id\":\"first-answer-with-a-longer-body-than-the-next-one\"}", 1);
    mp_add_rule(MP, MOCKPROV_RESPOND, NULL, NULL, 200, NULL, "{\"id\":\"2\"}", 0);
    assert_int_equal(aigw_request_new(&req), AIGW_OK);
    assert_int_equal(aigw_request_set_body(req, BODY, strlen(BODY)), AIGW_OK);
    assert_int_equal(aigw_client_send(c, req, &r1, NULL), AIGW_OK);
    assert_string_equal(aigw_response_header_get(r1, "x-first"), "1");
    snprintf(first, sizeof first, "%s", aigw_response_request_id(r1));
    aigw_response_free(r1);
#ifdef AIGW__ASAN
    assert_true(__asan_address_is_poisoned(r1));
#endif
    assert_int_equal(aigw_client_send(c, req, &r2, NULL), AIGW_OK);
#ifdef AIGW__ASAN
    assert_false(__asan_address_is_poisoned(r2));
    /* its body buffer as it was allocated: not one byte more made usable */
    assert_true(r2->body.cap > 0);
    assert_false(__asan_address_is_poisoned(r2->body.data + r2->body.cap - 1));
    assert_true(__asan_address_is_poisoned(r2->body.data + r2->body.cap));
#endif
    body = aigw_response_body(r2, &len);
    assert_int_equal(len, strlen("{\"id\":\"2\"}"));
    assert_string_equal(body, "{\"id\":\"2\"}");
    assert_null(aigw_response_header_get(r2, "x-first"));
    assert_string_not_equal(aigw_response_request_id(r2), first);
    assert_int_equal(aigw_response_attempt_count(r2), 1);
    aigw_response_free(r2);
    aigw_request_free(req);
    aigw_client_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_one_key, mp_setup),
        cmocka_unit_test_setup(test_cooling_key_skipped, mp_setup),
        cmocka_unit_test_setup(test_stream_short, mp_setup),
        cmocka_unit_test_setup(test_stream_long, mp_setup),
        cmocka_unit_test_setup(test_spare_response, mp_setup),
    };
    if (oom_curl_init() != 0) {
        fprintf(stderr, "libcurl would not take the counting allocators\n");
        return 1;
    }
    oom_cjson_hooks(OOM_CJSON_AIGW); /* cJSON's allocations are libaigw's */
    if (aigw__alloc_count() == 0) {
        void *p = aigw__malloc(1); /* counts nothing without AIGW_ALLOC_HOOKS */
        aigw__free(p);
        if (aigw__alloc_count() == 0) {
            printf("1..0 # SKIP a build without AIGW_ALLOC_HOOKS counts no allocations\n");
            return 77;
        }
    }
    return cmocka_run_group_tests(tests, mp_group_setup, mp_group_teardown);
}
