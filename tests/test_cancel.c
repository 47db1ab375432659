/*
 * test_cancel.c - a request stopped from another thread by its cancel
 * token (aigw_cancel), end to end: the default libcurl transport against
 * the loopback mock provider.  Each case fires the token while the request
 * waits on something different (an upstream that never answers, a retry's
 * Retry-After, a stream before its first token), and checks how soon the
 * call returns, what the response says, and that the key's health learned
 * nothing from it.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support.h"

#define K_A "sk-cancel-a-0123456789"
#define K_B "sk-cancel-b-9876543210"
#define KEY(id, value) "{\"id\":\"" id "\",\"providerId\":\"mock\",\"value\":\"" value "\"}"
#define RL_BODY "{\"error\":{\"message\":\"Rate limit reached\",\"code\":\"rate_limit_exceeded\"}}"
#define BODY "{\"model\":\"mock:m1\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}"
#define STREAM_BODY                                                                        \
    "{\"model\":\"mock:m1\",\"stream\":true,\"messages\":[{\"role\":\"user\","              \
    "\"content\":\"hi\"}]}"

static aigw_client *make_client(const char *gw)
{
    char *json = mock_gateway_json(
        "cancel", mockprov_base_url(MP), KEY("a", K_A) "," KEY("b", K_B),
        "{\"provider\":\"mock\",\"steps\":[{\"type\":\"user\",\"keys\":[{\"id\":\"a\"},"
        "{\"id\":\"b\"}]}]}",
        gw);
    aigw_client *c = client_from_json(json);
    free(json);
    return c;
}

typedef struct firer {
    aigw_cancel *cancel;
    int after_ms;
    pthread_t t;
} firer;

static void *fire_later(void *arg)
{
    firer *f = arg;
    sleep_ms(f->after_ms);
    aigw_cancel_fire(f->cancel);
    return NULL;
}

/* Sends body with a token fired after after_ms (< 0: fired before);
 * *took gets how long the call took. */
static aigw_response *send_cancelled(aigw_client *c, const char *body, int after_ms,
                                     const aigw_stream_handler *sh, void *sud, int64_t *took)
{
    aigw_request *req = NULL;
    aigw_response *resp = NULL;
    aigw_error *err = NULL;
    firer f;
    int64_t t0;
    assert_int_equal(aigw_request_new(&req), AIGW_OK);
    assert_int_equal(aigw_request_set_body(req, body, strlen(body)), AIGW_OK);
    assert_int_equal(aigw_cancel_new(&f.cancel), AIGW_OK);
    assert_int_equal(aigw_request_set_cancel(req, f.cancel), AIGW_OK);
    f.after_ms = after_ms;
    if (after_ms < 0)
        aigw_cancel_fire(f.cancel);
    else
        assert_int_equal(pthread_create(&f.t, NULL, fire_later, &f), 0);
    t0 = now_ms();
    if (sh)
        assert_int_equal(aigw_client_stream(c, req, sh, sud, &resp, &err), AIGW_OK);
    else
        assert_int_equal(aigw_client_send(c, req, &resp, &err), AIGW_OK);
    *took = now_ms() - t0;
    if (after_ms >= 0)
        pthread_join(f.t, NULL);
    assert_true(aigw_cancel_fired(f.cancel));
    aigw_cancel_free(f.cancel);
    aigw_request_free(req);
    assert_null(err);
    return resp;
}

/* The key's endpoint learned nothing: no failure counted. */
static void assert_key_untouched(aigw_client *c, const char *id)
{
    aigw_stats *s = NULL;
    size_t i;
    assert_int_equal(aigw_client_stats(c, &s), AIGW_OK);
    for (i = 0; i < aigw_stats_count(s); i++) {
        const aigw_stat *e = aigw_stats_at(s, i);
        if (strcmp(e->name, id) == 0 && strcmp(e->kind, "host") != 0) {
            assert_int_equal(e->failures, 0);
            assert_string_equal(e->state, "ready");
        }
    }
    aigw_stats_free(s);
}

static void assert_cancelled_answer(const aigw_response *r)
{
    assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_CANCELLED);
    assert_int_equal(aigw_response_status(r), 499);
    assert_string_equal(aigw_response_error_code(r), "cancelled");
    assert_error_answer(r, 499, "cancelled", "cancelled");
}

/* An upstream that never answers: the attempt in flight is abandoned. */
static void test_cancel_in_flight(void **state)
{
    aigw_client *c = make_client("\"perRequestTimeout\":\"30s\",\"totalTimeout\":\"60s\"");
    aigw_response *r;
    int64_t took;
    (void)state;
    mp_add_rule(MP, MOCKPROV_SILENT, K_A, NULL, 0, NULL, NULL, 0);
    r = send_cancelled(c, BODY, 200, NULL, NULL, &took);
    assert_true(took >= 190 && took < 1500);
    assert_cancelled_answer(r);
    assert_attempts_as(r, "key/result/completion", "a/cancelled/cancelled");
    assert_int_equal(mockprov_count(MP, K_A), 1);
    assert_int_equal(mockprov_count(MP, K_B), 0);
    aigw_response_free(r);
    assert_key_untouched(c, "a");
    aigw_client_free(c);
}

/* Fired before the request: nothing is sent. */
static void test_cancel_before(void **state)
{
    aigw_client *c = make_client("");
    aigw_response *r;
    int64_t took;
    (void)state;
    r = send_cancelled(c, BODY, -1, NULL, NULL, &took);
    assert_cancelled_answer(r);
    assert_int_equal(aigw_response_attempt_count(r), 0);
    assert_int_equal(mockprov_count(MP, NULL), 0);
    aigw_response_free(r);
    aigw_client_free(c);
}

/* Waiting for a retry's Retry-After: the wait ends. */
static void test_cancel_during_retry_wait(void **state)
{
    aigw_client *c = make_client("\"retryAfterMax\":\"10s\",\"sameBackendRetries\":1");
    aigw_response *r;
    int64_t took;
    (void)state;
    mp_add_rule(MP, MOCKPROV_RESPOND, NULL, NULL, 429, "Retry-After: 5\r\n", RL_BODY, 0);
    r = send_cancelled(c, BODY, 300, NULL, NULL, &took);
    assert_true(took < 2000);
    assert_cancelled_answer(r);
    assert_attempts_as(r, "key/result", "a/429 b/429");
    assert_int_equal(mockprov_count(MP, NULL), 2);
    aigw_response_free(r);
    aigw_client_free(c);
}

/* A stream whose upstream sends nothing: stopped before its first token. */
static void test_cancel_stream_before_first_token(void **state)
{
    aigw_client *c = make_client("\"firstTokenTimeout\":\"30s\"");
    aigw_response *r;
    stream_caller g;
    int64_t took;
    (void)state;
    memset(&g, 0, sizeof g);
    mp_add_rule(MP, MOCKPROV_SILENT, K_A, NULL, 0, NULL, NULL, 0);
    r = send_cancelled(c, STREAM_BODY, 200, &STREAM_CALLER, &g, &took);
    assert_true(took < 1500);
    assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_CANCELLED);
    assert_int_equal(g.starts, 0);
    assert_int_equal(g.len, 0);
    assert_int_equal(mockprov_count(MP, K_B), 0);
    aigw_response_free(r);
    assert_key_untouched(c, "a");
    aigw_client_free(c);
}

static void test_cancel_api(void **state)
{
    aigw_cancel *k = NULL;
    (void)state;
    assert_int_equal(aigw_cancel_new(NULL), AIGW_EINVAL);
    assert_int_equal(aigw_request_set_cancel(NULL, NULL), AIGW_EINVAL);
    assert_int_equal(aigw_cancel_new(&k), AIGW_OK);
    assert_false(aigw_cancel_fired(k));
    aigw_cancel_fire(k);
    aigw_cancel_fire(k);
    assert_true(aigw_cancel_fired(k));
    assert_false(aigw_cancel_fired(NULL));
    aigw_cancel_fire(NULL);
    aigw_cancel_free(k);
    aigw_cancel_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cancel_api),
        cmocka_unit_test_setup(test_cancel_in_flight, mp_setup),
        cmocka_unit_test_setup(test_cancel_before, mp_setup),
        cmocka_unit_test_setup(test_cancel_during_retry_wait, mp_setup),
        cmocka_unit_test_setup(test_cancel_stream_before_first_token, mp_setup),
    };
    return cmocka_run_group_tests(tests, mp_group_setup, mp_group_teardown);
}
