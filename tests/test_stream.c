/*
 * test_stream.c - streamed requests through the engine with a scripted
 * streaming transport and a fake clock: the commit point, failover before
 * it, stream_failed after it, restart, timeouts, cancellation.
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
#include "internal.h"
#include "support.h"

#define MAX_CHUNKS 16
#define MAX_CALLS 16

typedef enum end_mode { END_OK, END_RESET, END_STALL } end_mode;

typedef struct script {
    int status;
    const char *content_type;
    const char *chunks[MAX_CHUNKS];
    int64_t gap_ms[MAX_CHUNKS]; /* silence before each chunk */
    end_mode end;
} script;

typedef struct stream_mock {
    script s[MAX_CALLS];
    int n_script;
    int n_calls;
    char keys[MAX_CALLS][64];
    char models[MAX_CALLS][64];
    fake_clock clock;
} stream_mock;

static stream_mock SM;

/* ---- the caller's side: STREAM_CALLER recording into G (support.h) ---- */

static stream_caller G;

/* ---- the scripted streaming transport ---- */

static const char *cred(const aigw_transport_request *req)
{
    size_t i;
    for (i = 0; i < req->n_headers; i++)
        if (strcmp(req->headers[i].name, "authorization") == 0)
            return req->headers[i].value + 7;
    return "";
}

static aigw_transport_result t_send(void *ud, const aigw_transport_request *req,
                                    aigw_transport_response *resp)
{
    (void)ud;
    (void)req;
    (void)resp;
    fail_msg("a streamed request must go through send_stream");
    return AIGW_TR_OTHER;
}

static aigw_transport_result t_stream(void *ud, const aigw_transport_request *req,
                                      aigw_transport_response *resp, aigw_transport_data_fn on_data,
                                      void *ctx)
{
    stream_mock *m = ud;
    int i = m->n_calls++;
    const script *s;
    int64_t budget = req->idle_timeout_ms, t_end = m->clock.now + req->timeout_ms;
    size_t c;
    const char *mp;
    assert_true(req->stream);
    snprintf(m->keys[i], sizeof m->keys[i], "%s", cred(req));
    mp = strstr(req->body, "\"model\":\"");
    snprintf(m->models[i], sizeof m->models[i], "%.*s", mp ? (int)strcspn(mp + 9, "\"") : 0,
             mp ? mp + 9 : "");
    if (i >= m->n_script)
        fail_msg("unscripted call %d", i);
    s = &m->s[i];
    aigw_transport_response_set_status(resp, s->status ? s->status : 200);
    aigw_transport_response_add_header(resp, "Content-Type",
                                       s->content_type ? s->content_type : "text/event-stream");
    aigw_transport_response_add_header(resp, "Transfer-Encoding", "chunked");
    for (c = 0; c < MAX_CHUNKS && s->chunks[c]; c++) {
        int64_t r;
        if (budget > 0 && s->gap_ms[c] >= budget) {
            m->clock.now += budget;
            return AIGW_TR_TIMEOUT;
        }
        m->clock.now += s->gap_ms[c];
        if (m->clock.now > t_end)
            return AIGW_TR_TIMEOUT;
        r = on_data(ctx, s->chunks[c], strlen(s->chunks[c]));
        if (r == 0)
            return AIGW_TR_OK;
        if (r < 0)
            return AIGW_TR_CANCELLED;
        budget = r;
    }
    if (s->end == END_RESET)
        return AIGW_TR_RESET;
    if (s->end == END_STALL) {
        m->clock.now += budget;
        return AIGW_TR_TIMEOUT;
    }
    return AIGW_TR_OK;
}

static const aigw_transport TRANSPORT = {AIGW_TRANSPORT_VERSION, t_send, NULL, t_stream};

/* ---- fixtures ---- */

#define ROLE "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"}}]}\n\n"
#define TOK(x) "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"" x "\"}}]}\n\n"
#define FINISH "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n"
#define DONE "data: [DONE]\n\n"
#define INBAND_ERR                                                                         \
    "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\","      \
    "\"message\":\"Overloaded\"}}\n\n"

static const char *CFG =
    "{\"providers\":[{\"providerId\":\"fake\",\"name\":\"F\",\"baseUrl\":\"http://127.0.0.1:9/v1\"},"
    "{\"providerId\":\"other\",\"name\":\"O\",\"baseUrl\":\"http://127.0.0.1:8/v1\"}],"
    "\"providerKeys\":[{\"id\":\"a\",\"providerId\":\"fake\",\"value\":\"key-a\"},"
    "{\"id\":\"b\",\"providerId\":\"fake\",\"value\":\"key-b\"},"
    "{\"id\":\"d\",\"providerId\":\"other\",\"value\":\"key-d\"}],"
    "\"accessKeyConfiguration\":{\"name\":\"s\",\"router\":{\"rules\":["
    "{\"provider\":\"fake\",\"steps\":[{\"type\":\"user\",\"keys\":[{\"id\":\"a\"},{\"id\":\"b\"}]}]},"
    "{\"provider\":\"other\",\"steps\":[{\"type\":\"user\",\"keys\":[{\"id\":\"d\"}]}]}]}},"
    "\"gatewayConfig\":{\"firstTokenTimeout\":\"5s\",\"streamIdleTimeout\":\"3s\","
    "\"sameBackendRetries\":0%s}}";

static const char *BODY = "{\"model\":\"fake:m1\",\"models\":[\"other:m2\"],\"stream\":true,"
                          "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";

static aigw_client *client(const char *extra)
{
    char json[2048];
    aigw_client *c;
    snprintf(json, sizeof json, CFG, extra ? extra : "");
    c = client_from_json(json);
    assert_int_equal(aigw_client_set_transport(c, &TRANSPORT, &SM), AIGW_OK);
    assert_int_equal(aigw_client_set_clock(c, &FAKE_CLOCK, &SM.clock), AIGW_OK);
    return c;
}

/* Streams BODY; G holds what came (G is not cleared). */
static aigw_response *stream(aigw_client *c, int restart)
{
    return stream_to(c, BODY, restart, &G);
}

/* "key:verdict:completion" per attempt */
#define assert_attempts(r, want) assert_attempts_as(r, "key:verdict:completion", want)

static script *push_script(void)
{
    script *s = &SM.s[SM.n_script++];
    memset(s, 0, sizeof *s);
    return s;
}

static int setup(void **state)
{
    (void)state;
    memset(&SM, 0, sizeof SM);
    memset(&G, 0, sizeof G);
    SM.clock.now = 1000;
    return 0;
}

/* ---- tests ---- */

static void test_healthy_stream_byte_identical(void **state)
{
    aigw_client *c = client(NULL);
    script *s = push_script();
    aigw_response *r;
    (void)state;
    s->chunks[0] = ROLE;
    s->chunks[1] = TOK("Hel");
    s->gap_ms[1] = 40;
    s->chunks[2] = TOK("lo") FINISH;
    s->chunks[3] = DONE;
    r = stream(c, -1);
    assert_attempts(r, "a:succeeded:succeeded");
    assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_SERVED);
    assert_string_equal(G.bytes, ROLE TOK("Hel") TOK("lo") FINISH DONE);
    assert_int_equal(G.starts, 1);
    assert_int_equal(G.status, 200);
    assert_int_equal(aigw_attempt_first_token_ms(aigw_response_attempt(r, 0)), 40);
    assert_int_equal(aigw_attempt_first_byte_ms(aigw_response_attempt(r, 0)), 0);
    assert_non_null(strstr(aigw_response_trace_json(r), "\"timeToFirstTokenMs\":40"));
    aigw_response_free(r);
    aigw_client_free(c);
}

static void test_http_error_before_first_token_fails_over_unseen(void **state)
{
    aigw_client *c = client(NULL);
    script *s = push_script();
    aigw_response *r;
    (void)state;
    s->status = 429;
    s->content_type = "application/json";
    s->chunks[0] = "{\"error\":{\"code\":\"rate_limit_exceeded\"}}";
    s = push_script();
    s->chunks[0] = TOK("ok") FINISH DONE;
    r = stream(c, -1);
    assert_attempts(r, "a:next_key:failed b:succeeded:succeeded");
    assert_string_equal(G.bytes, TOK("ok") FINISH DONE);
    assert_int_equal(G.starts, 1);
    assert_string_equal(SM.keys[0], "key-a");
    assert_string_equal(SM.keys[1], "key-b");
    aigw_response_free(r);
    aigw_client_free(c);
}

static void test_inband_error_before_first_token(void **state)
{
    aigw_client *c = client(NULL);
    script *s = push_script();
    aigw_response *r;
    (void)state;
    s->chunks[0] = ROLE;
    s->chunks[1] = INBAND_ERR;
    s = push_script();
    s->chunks[0] = TOK("fine") FINISH DONE;
    r = stream(c, -1);
    assert_attempts(r, "a:next_key:failed b:succeeded:succeeded");
    assert_string_equal(aigw_attempt_error_class(aigw_response_attempt(r, 0)), "overloaded");
    assert_string_equal(G.bytes, TOK("fine") FINISH DONE); /* no trace of the failed one */
    aigw_response_free(r);
    aigw_client_free(c);
}

static void test_silence_until_first_token_timeout(void **state)
{
    aigw_client *c = client(NULL);
    script *s = push_script();
    aigw_response *r;
    (void)state;
    s->chunks[0] = ROLE;
    s->chunks[1] = TOK("late");
    s->gap_ms[1] = 10000; /* past firstTokenTimeout 5s */
    s = push_script();             /* the sibling key shares the host: skipped */
    s->chunks[0] = TOK("x") FINISH DONE;
    r = stream(c, -1);
    assert_attempts(r, "a:next_backend:timed_out d:succeeded:succeeded");
    assert_string_equal(aigw_attempt_error_class(aigw_response_attempt(r, 0)), "timeout");
    assert_int_equal(aigw_attempt_duration_ms(aigw_response_attempt(r, 0)), 5000);
    assert_string_equal(SM.models[1], "m2");
    assert_string_equal(G.bytes, TOK("x") FINISH DONE);
    aigw_response_free(r);
    aigw_client_free(c);
}

static void test_cut_after_tokens_restart_off(void **state)
{
    aigw_client *c = client(NULL);
    script *s = push_script();
    aigw_response *r;
    (void)state;
    s->chunks[0] = TOK("one");
    s->chunks[1] = TOK("two");
    s->end = END_RESET;
    r = stream(c, -1);
    assert_attempts(r, "a:fail_fast:stream_failed");
    assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_STREAM_FAILED);
    assert_string_equal(aigw_response_error_code(r), "stream_failed");
    assert_string_equal(G.bytes, TOK("one") TOK("two"));
    assert_int_equal(SM.n_calls, 1);
    assert_non_null(strstr(aigw_response_trace_json(r), "\"streamError\":\"connection_cut\""));
    aigw_response_free(r);
    aigw_client_free(c);
}

static void test_cut_after_tokens_restart_on(void **state)
{
    aigw_client *c = client(NULL);
    script *s = push_script();
    aigw_response *r;
    (void)state;
    s->chunks[0] = TOK("one");
    s->end = END_RESET;
    s = push_script();
    s->chunks[0] = TOK("again") FINISH DONE;
    r = stream(c, 1);
    assert_attempts(r, "a:next_backend:stream_failed d:succeeded:succeeded");
    assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_SERVED);
    assert_int_equal(G.resets, 1);
    assert_non_null(strstr(G.reset_reason, "\"reason\":\"connection_cut\""));
    assert_non_null(strstr(G.reset_reason, "\"attempt\":1"));
    assert_string_equal(G.bytes, TOK("again") FINISH DONE); /* after the discard */
    assert_int_equal(G.starts, 2);
    assert_string_equal(SM.models[1], "m2"); /* the next candidate, from the start */
    aigw_response_free(r);
    aigw_client_free(c);
}

static void test_restart_from_configuration(void **state)
{
    aigw_client *c = client(",\"streamRestart\":true");
    script *s = push_script();
    aigw_response *r;
    (void)state;
    s->chunks[0] = TOK("one");
    s->end = END_STALL;
    s = push_script();
    s->chunks[0] = TOK("b") FINISH DONE;
    r = stream(c, -1);
    assert_attempts(r, "a:next_backend:stream_failed d:succeeded:succeeded");
    assert_non_null(strstr(G.reset_reason, "idle_timeout"));
    aigw_response_free(r);
    aigw_client_free(c);
}

static void test_stall_after_tokens_idle_timeout(void **state)
{
    aigw_client *c = client(NULL);
    script *s = push_script();
    aigw_response *r;
    (void)state;
    s->chunks[0] = TOK("one");
    s->chunks[1] = TOK("two");
    s->gap_ms[1] = 2000; /* within streamIdleTimeout 3s */
    s->end = END_STALL;
    r = stream(c, 0);
    assert_attempts(r, "a:fail_fast:stream_failed");
    assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_STREAM_FAILED);
    assert_string_equal(G.bytes, TOK("one") TOK("two"));
    assert_non_null(strstr(aigw_response_trace_json(r), "idle_timeout"));
    aigw_response_free(r);
    aigw_client_free(c);
}

static void test_malformed_event_skipped(void **state)
{
    aigw_client *c = client(NULL);
    script *s = push_script();
    aigw_response *r;
    (void)state;
    s->chunks[0] = TOK("a") "data: {not json\n\n" TOK("b") FINISH DONE;
    r = stream(c, -1);
    assert_attempts(r, "a:succeeded:succeeded");
    assert_non_null(strstr(aigw_response_trace_json(r), "\"malformedEvents\":1"));
    assert_string_equal(G.bytes, TOK("a") "data: {not json\n\n" TOK("b") FINISH DONE);
    aigw_response_free(r);
    aigw_client_free(c);
}

static void test_no_done_with_finish_reason_is_success(void **state)
{
    aigw_client *c = client(NULL);
    script *s = push_script();
    aigw_response *r;
    (void)state;
    s->chunks[0] = TOK("a") FINISH;
    r = stream(c, -1);
    assert_attempts(r, "a:succeeded:succeeded");
    assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_SERVED);
    aigw_response_free(r);

    /* the connection stays open after the finish reason: a short grace, not
     * the whole idle timeout */
    memset(&SM, 0, sizeof SM);
    SM.clock.now = 1000;
    s = push_script();
    s->chunks[0] = TOK("a") FINISH;
    s->end = END_STALL;
    r = stream(c, -1);
    assert_attempts(r, "a:succeeded:succeeded");
    assert_int_equal(SM.clock.now - 1000, 1000);
    aigw_response_free(r);
    aigw_client_free(c);
}

static void test_end_without_finish_or_done_fails(void **state)
{
    aigw_client *c = client(NULL);
    script *s = push_script();
    aigw_response *r;
    (void)state;
    s->chunks[0] = TOK("a");
    r = stream(c, 0);
    assert_attempts(r, "a:fail_fast:stream_failed");
    assert_non_null(strstr(aigw_response_trace_json(r), "ended_without_finish"));
    aigw_response_free(r);

    memset(&SM, 0, sizeof SM);
    s = push_script();
    s->chunks[0] = TOK("a") "data: {\"choices\":[{\"delta\":{\"content\":\"cut mid-ev";
    r = stream(c, 0);
    assert_attempts(r, "a:fail_fast:stream_failed");
    assert_non_null(strstr(aigw_response_trace_json(r), "malformed_framing"));
    aigw_response_free(r);
    aigw_client_free(c);
}

static void test_inband_error_after_commit(void **state)
{
    aigw_client *c = client(NULL);
    script *s = push_script();
    aigw_response *r;
    (void)state;
    s->chunks[0] = TOK("a");
    s->chunks[1] = INBAND_ERR;
    s->chunks[2] = TOK("never");
    r = stream(c, 0);
    assert_attempts(r, "a:fail_fast:stream_failed");
    assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_STREAM_FAILED);
    assert_string_equal(G.bytes, TOK("a") INBAND_ERR); /* the caller sees what came */
    aigw_response_free(r);
    aigw_client_free(c);
}

static void test_caller_cancels(void **state)
{
    aigw_client *c = client(NULL);
    script *s = push_script();
    aigw_response *r;
    (void)state;
    G.cancel_at = 2;
    s->chunks[0] = TOK("a");
    s->chunks[1] = TOK("b");
    s->chunks[2] = TOK("c") FINISH DONE;
    r = stream(c, 1);
    assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_CANCELLED);
    assert_string_equal(G.bytes, TOK("a") TOK("b"));
    assert_int_equal(SM.n_calls, 1);
    assert_int_equal(G.resets, 0);
    aigw_response_free(r);
    aigw_client_free(c);
}

static void test_plain_json_answer_to_a_stream_request(void **state)
{
    aigw_client *c = client(NULL);
    script *s = push_script();
    aigw_response *r;
    (void)state;
    s->content_type = "application/json";
    s->chunks[0] = "{\"id\":\"x\",";
    s->chunks[1] = "\"choices\":[]}";
    r = stream(c, -1);
    assert_attempts(r, "a:succeeded:succeeded");
    assert_string_equal(G.bytes, "{\"id\":\"x\",\"choices\":[]}");
    aigw_response_free(r);
    aigw_client_free(c);
}

static void test_role_only_then_cut_fails_over(void **state)
{
    aigw_client *c = client(NULL);
    script *s = push_script();
    aigw_response *r;
    (void)state;
    s->chunks[0] = ROLE; /* not content: nothing committed */
    s->end = END_RESET;
    s = push_script();
    s->chunks[0] = TOK("z") FINISH DONE;
    r = stream(c, 0);
    assert_attempts(r, "a:next_backend:failed d:succeeded:succeeded");
    assert_string_equal(G.bytes, TOK("z") FINISH DONE);
    assert_int_equal(G.starts, 1);
    aigw_response_free(r);
    aigw_client_free(c);
}

static void test_restart_needs_a_next_model(void **state)
{
    aigw_client *c = client(NULL);
    script *s = push_script();
    aigw_response *r;
    aigw_request *req;
    aigw_error *err = NULL;
    const char *only = "{\"model\":\"fake:m1\",\"stream\":true}";
    (void)state;
    s->chunks[0] = TOK("one");
    s->end = END_RESET;
    assert_int_equal(aigw_request_new(&req), AIGW_OK);
    assert_int_equal(aigw_request_set_body(req, only, strlen(only)), AIGW_OK);
    assert_int_equal(aigw_request_set_stream_restart(req, 1), AIGW_OK);
    assert_int_equal(aigw_client_stream(c, req, &STREAM_CALLER, &G, &r, &err), AIGW_OK);
    aigw_request_free(req);
    assert_false(G.hop_by_hop);
    /* no other model: no reset is announced, the stream failed */
    assert_attempts(r, "a:fail_fast:stream_failed");
    assert_int_equal(G.resets, 0);
    assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_STREAM_FAILED);
    aigw_response_free(r);
    aigw_client_free(c);
}

static void test_restart_respects_max_attempts(void **state)
{
    aigw_client *c = client(",\"maxAttempts\":1");
    script *s = push_script();
    aigw_response *r;
    (void)state;
    s->chunks[0] = TOK("one");
    s->end = END_RESET;
    r = stream(c, 1);
    assert_attempts(r, "a:fail_fast:stream_failed");
    assert_int_equal(SM.n_calls, 1);
    assert_int_equal(G.resets, 0);
    aigw_response_free(r);
    aigw_client_free(c);
}

static void test_done_then_open_connection_is_success(void **state)
{
    aigw_client *c = client(NULL);
    script *s = push_script();
    aigw_response *r;
    (void)state;
    s->chunks[0] = TOK("a") FINISH DONE;
    s->end = END_STALL; /* the body's end never comes: a short drain */
    r = stream(c, -1);
    assert_attempts(r, "a:succeeded:succeeded");
    assert_null(aigw_attempt_transport_error(aigw_response_attempt(r, 0)));
    assert_int_equal(SM.clock.now - 1000, 200);
    aigw_response_free(r);
    aigw_client_free(c);
}

static void test_silence_names_first_token_timeout(void **state)
{
    aigw_client *c = client(NULL);
    script *s = push_script();
    aigw_response *r;
    (void)state;
    s->end = END_STALL; /* headers, then nothing */
    s = push_script();
    s->chunks[0] = TOK("x") FINISH DONE;
    r = stream(c, -1);
    assert_attempts(r, "a:next_backend:timed_out d:succeeded:succeeded");
    assert_non_null(strstr(aigw_response_trace_json(r), "\"streamError\":\"first_token_timeout\""));
    aigw_response_free(r);
    aigw_client_free(c);
}

static void test_error_then_content_in_one_read_fails_over(void **state)
{
    aigw_client *c = client(NULL);
    script *s = push_script();
    aigw_response *r;
    (void)state;
    s->chunks[0] = INBAND_ERR TOK("after the error");
    s = push_script();
    s->chunks[0] = TOK("ok") FINISH DONE;
    r = stream(c, -1);
    assert_attempts(r, "a:next_key:failed b:succeeded:succeeded");
    assert_string_equal(G.bytes, TOK("ok") FINISH DONE);
    aigw_response_free(r);
    aigw_client_free(c);
}

static void test_done_then_cut_is_success(void **state)
{
    aigw_client *c = client(NULL);
    script *s = push_script();
    aigw_response *r;
    (void)state;
    s->chunks[0] = TOK("a") DONE;
    s->end = END_RESET;
    r = stream(c, 0);
    assert_attempts(r, "a:succeeded:succeeded");
    aigw_response_free(r);
    aigw_client_free(c);
}

static void test_drain_after_done_is_bounded(void **state)
{
    aigw_client *c = client(NULL);
    script *s = push_script();
    aigw_response *r;
    int i;
    (void)state;
    s->chunks[0] = TOK("a") FINISH DONE;
    for (i = 1; i < 10; i++) {
        s->chunks[i] = ": ping\n\n";
        s->gap_ms[i] = 100;
    }
    s->end = END_STALL;
    r = stream(c, 0);
    assert_attempts(r, "a:succeeded:succeeded");
    assert_int_equal(SM.clock.now - 1000, 200);
    assert_string_equal(G.bytes, TOK("a") FINISH DONE); /* nothing after the end */
    aigw_response_free(r);
    aigw_client_free(c);
}

static void test_whole_answer_keeps_its_deadline(void **state)
{
    aigw_client *c = client(",\"perRequestTimeout\":\"2s\"");
    script *s = push_script();
    aigw_response *r;
    int i;
    (void)state;
    s->status = 500;
    s->content_type = "application/json";
    for (i = 0; i < 8; i++) {
        s->chunks[i] = "{";
        s->gap_ms[i] = 400; /* a trickle: each gap within the idle budget */
    }
    s = push_script();
    s->chunks[0] = TOK("b") FINISH DONE;
    r = stream(c, -1);
    assert_attempts(r, "a:next_backend:timed_out d:succeeded:succeeded");
    assert_true(aigw_attempt_duration_ms(aigw_response_attempt(r, 0)) <= 2000);
    aigw_response_free(r);
    aigw_client_free(c);
}

static void test_empty_bodies(void **state)
{
    aigw_client *c = client(NULL);
    script *s = push_script();
    aigw_response *r;
    (void)state;
    /* an empty event stream is no answer: fail over */
    s = push_script();
    s->chunks[0] = TOK("b") FINISH DONE;
    r = stream(c, -1);
    assert_attempts(r, "a:next_backend:failed d:succeeded:succeeded");
    aigw_response_free(r);

    /* an empty JSON 200 is a (whole, empty) answer */
    memset(&SM, 0, sizeof SM);
    memset(&G, 0, sizeof G);
    s = push_script();
    s->content_type = "application/json";
    r = stream(c, -1);
    assert_attempts(r, "a:succeeded:succeeded");
    assert_int_equal(G.starts, 1);
    aigw_response_free(r);
    aigw_client_free(c);
}

static void test_complete_answer_without_content(void **state)
{
    aigw_client *c = client(NULL);
    script *s = push_script();
    aigw_response *r;
    (void)state;
    s->chunks[0] = ROLE FINISH DONE;
    s->end = END_STALL;
    r = stream(c, 0);
    assert_attempts(r, "a:succeeded:succeeded");
    assert_string_equal(G.bytes, ROLE FINISH DONE);
    assert_int_equal(SM.clock.now - 1000, 200);
    aigw_response_free(r);
    aigw_client_free(c);
}

#define CH(i, x) "data: {\"choices\":[{\"index\":" #i ",\"delta\":{\"content\":\"" x "\"}}]}\n\n"
#define CHFIN(i) "data: {\"choices\":[{\"index\":" #i ",\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n"

static void test_every_choice_must_finish(void **state)
{
    aigw_client *c = client(NULL);
    script *s = push_script();
    aigw_response *r;
    (void)state;
    s->chunks[0] = CH(0, "a") CH(1, "b") CHFIN(0);
    s->chunks[1] = CH(1, "c") CHFIN(1) DONE;
    s->gap_ms[1] = 1500; /* past the 1 s grace: choice 1 is still running */
    r = stream(c, 0);
    assert_attempts(r, "a:succeeded:succeeded");
    assert_string_equal(G.bytes, CH(0, "a") CH(1, "b") CHFIN(0) CH(1, "c") CHFIN(1) DONE);
    aigw_response_free(r);
    aigw_client_free(c);
}

static void test_responses_incomplete_is_an_end(void **state)
{
    aigw_client *c = client(NULL);
    script *s = push_script();
    aigw_response *r;
    (void)state;
    s->chunks[0] = "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\","
                   "\"delta\":\"Hi\"}\n\nevent: response.incomplete\ndata: {\"type\":"
                   "\"response.incomplete\"}\n\n";
    r = stream(c, 0);
    assert_attempts(r, "a:succeeded:succeeded");
    aigw_response_free(r);
    aigw_client_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_healthy_stream_byte_identical, setup),
        cmocka_unit_test_setup(test_http_error_before_first_token_fails_over_unseen, setup),
        cmocka_unit_test_setup(test_inband_error_before_first_token, setup),
        cmocka_unit_test_setup(test_silence_until_first_token_timeout, setup),
        cmocka_unit_test_setup(test_cut_after_tokens_restart_off, setup),
        cmocka_unit_test_setup(test_cut_after_tokens_restart_on, setup),
        cmocka_unit_test_setup(test_restart_from_configuration, setup),
        cmocka_unit_test_setup(test_stall_after_tokens_idle_timeout, setup),
        cmocka_unit_test_setup(test_malformed_event_skipped, setup),
        cmocka_unit_test_setup(test_no_done_with_finish_reason_is_success, setup),
        cmocka_unit_test_setup(test_end_without_finish_or_done_fails, setup),
        cmocka_unit_test_setup(test_inband_error_after_commit, setup),
        cmocka_unit_test_setup(test_caller_cancels, setup),
        cmocka_unit_test_setup(test_plain_json_answer_to_a_stream_request, setup),
        cmocka_unit_test_setup(test_role_only_then_cut_fails_over, setup),
        cmocka_unit_test_setup(test_restart_needs_a_next_model, setup),
        cmocka_unit_test_setup(test_restart_respects_max_attempts, setup),
        cmocka_unit_test_setup(test_done_then_open_connection_is_success, setup),
        cmocka_unit_test_setup(test_silence_names_first_token_timeout, setup),
        cmocka_unit_test_setup(test_error_then_content_in_one_read_fails_over, setup),
        cmocka_unit_test_setup(test_done_then_cut_is_success, setup),
        cmocka_unit_test_setup(test_drain_after_done_is_bounded, setup),
        cmocka_unit_test_setup(test_whole_answer_keeps_its_deadline, setup),
        cmocka_unit_test_setup(test_empty_bodies, setup),
        cmocka_unit_test_setup(test_complete_answer_without_content, setup),
        cmocka_unit_test_setup(test_every_choice_must_finish, setup),
        cmocka_unit_test_setup(test_responses_incomplete_is_an_end, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
