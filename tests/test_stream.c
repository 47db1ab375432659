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

#include <cjson/cJSON.h>

#include "aigw.h"
#include "engine_int.h"
#include "internal.h"
#include "oom.h"
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
    /* Or one body of body_len bytes (chunks unused), in reads of piece
     * bytes (0: one read), or of 1 to piece bytes drawn from seed. */
    const char *body;
    size_t body_len, piece;
    uint64_t seed;
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
    if (s->body) {
        uint64_t rs = s->seed;
        size_t at = 0, n;
        while (at < s->body_len) {
            int64_t r;
            n = s->piece ? s->piece : s->body_len;
            if (rs)
                n = 1 + (size_t)(xorshift64(&rs) % s->piece);
            if (n > s->body_len - at)
                n = s->body_len - at;
            r = on_data(ctx, s->body + at, n);
            if (r == 0)
                return AIGW_TR_OK;
            if (r < 0)
                return AIGW_TR_CANCELLED;
            at += n;
        }
        return AIGW_TR_OK;
    }
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

/* The commit point is the first content event itself, not the end of the
 * read that holds it: content then an in-band error ends the same way
 * (committed, then stream_failed) wherever the reads split the bytes. */
static void test_commit_point_ignores_read_splits(void **state)
{
    static const char all[] = ROLE TOK("a") INBAND_ERR;
    char head[sizeof all], rest[sizeof all];
    size_t cut;
    (void)state;
    for (cut = 0; cut < sizeof all - 1; cut++) {
        aigw_client *c = client(NULL);
        script *s;
        aigw_response *r;
        setup(NULL);
        s = push_script();
        memcpy(head, all, cut);
        head[cut] = '\0';
        snprintf(rest, sizeof rest, "%s", all + cut);
        s->chunks[0] = cut ? head : rest;
        s->chunks[1] = cut ? rest : NULL;
        r = stream(c, 0);
        if (aigw_response_outcome(r) != AIGW_OUTCOME_STREAM_FAILED || strcmp(G.bytes, all) != 0)
            fail_msg("cut at %zu: outcome %s, caller got %s", cut,
                     aigw_outcome_name(aigw_response_outcome(r)), G.bytes);
        assert_attempts(r, "a:fail_fast:stream_failed");
        assert_int_equal(G.starts, 1);
        aigw_response_free(r);
        aigw_client_free(c);
    }
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

/* The commit point hands on the bytes through the committing event at
 * once, the rest of its read after that read's events are read: a caller
 * that stops at its first bytes got those and no more, and one that goes
 * on gets the whole read in two calls. */
static void test_first_bytes_through_the_commit_event(void **state)
{
    int cancel;
    (void)state;
    for (cancel = 1; cancel >= 0; cancel--) {
        aigw_client *c = client(NULL);
        script *s;
        aigw_response *r;
        setup(NULL);
        s = push_script();
        G.cancel_at = cancel;
        s->chunks[0] = ROLE TOK("a") TOK("b") FINISH DONE;
        r = stream(c, 0);
        if (cancel) {
            assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_CANCELLED);
            assert_string_equal(G.bytes, ROLE TOK("a"));
        } else {
            assert_attempts(r, "a:succeeded:succeeded");
            assert_string_equal(G.bytes, ROLE TOK("a") TOK("b") FINISH DONE);
            assert_int_equal(G.data_calls, 2);
        }
        assert_int_equal(G.starts, 1);
        aigw_response_free(r);
        aigw_client_free(c);
    }
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

/* ---- reading events: the scanner against the cJSON tree it replaced ---- */

/* What stream.c read from each event when it parsed it with cJSON: the
 * reference the scanner (aigw__stream_event_read) must agree with. */
static bool ref_nonempty(const cJSON *v)
{
    return cJSON_IsString(v) && v->valuestring && v->valuestring[0];
}

static bool ref_type_is(const cJSON *o, const char *type)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "type");
    return cJSON_IsString(t) && strcmp(t->valuestring, type) == 0;
}

static int ref_event_read(const char *data, size_t len, aigw_event_facts *f)
{
    cJSON *o = cJSON_ParseWithLengthOpts(data, len, NULL, 0);
    const cJSON *choices, *err, *ch;
    memset(f, 0, sizeof *f);
    if (!o)
        return 1;
    choices = cJSON_GetObjectItemCaseSensitive(o, "choices");
    err = cJSON_GetObjectItemCaseSensitive(o, "error");
    if ((err && !cJSON_IsNull(err) && !choices) || ref_type_is(o, "error") ||
        ref_type_is(o, "response.failed")) {
        f->error = true;
        cJSON_Delete(o);
        return 0;
    }
    if (ref_type_is(o, "content_block_delta") || ref_type_is(o, "response.output_text.delta") ||
        ref_type_is(o, "response.function_call_arguments.delta"))
        f->content = true;
    if (ref_type_is(o, "message_stop") || ref_type_is(o, "response.completed") ||
        ref_type_is(o, "response.incomplete"))
        f->done = true;
    if (ref_type_is(o, "message_delta")) {
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(o, "delta");
        if (ref_nonempty(cJSON_GetObjectItemCaseSensitive(d, "stop_reason")))
            f->stop = true;
    }
    cJSON_ArrayForEach(ch, choices)
    {
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(ch, "delta");
        const cJSON *tc = cJSON_GetObjectItemCaseSensitive(d, "tool_calls");
        const cJSON *ix = cJSON_GetObjectItemCaseSensitive(ch, "index");
        uint64_t bit = 1;
        if (cJSON_IsNumber(ix) && ix->valuedouble >= 0 && ix->valuedouble < 64)
            bit <<= (int)ix->valuedouble;
        f->seen |= bit;
        if (ref_nonempty(cJSON_GetObjectItemCaseSensitive(d, "content")) ||
            (cJSON_IsArray(tc) && cJSON_GetArraySize(tc) > 0) ||
            cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(d, "function_call")))
            f->content = true;
        if (ref_nonempty(cJSON_GetObjectItemCaseSensitive(ch, "finish_reason")))
            f->finished |= bit;
    }
    cJSON_Delete(o);
    return 0;
}

static const char *facts_str(int rc, const aigw_event_facts *f, char *buf, size_t size)
{
    snprintf(buf, size, "rc=%d error=%d content=%d done=%d stop=%d seen=%llx finished=%llx", rc,
             f->error, f->content, f->done, f->stop, (unsigned long long)f->seen,
             (unsigned long long)f->finished);
    return buf;
}

/* The scanner reads data as the reference does; its facts as a string. */
static const char *event_agrees(const char *data, size_t len)
{
    static char got[160];
    char want[160];
    aigw_event_facts f, rf;
    int rc = aigw__stream_event_read(data, len, &f), rrc = ref_event_read(data, len, &rf);
    facts_str(rc, &f, got, sizeof got);
    facts_str(rrc, &rf, want, sizeof want);
    if (strcmp(got, want) != 0)
        fail_msg("%.*s\n  scanner:   %s\n  reference: %s", (int)(len < 400 ? len : 400), data,
                 got, want);
    return got;
}

static const char *event_agrees_s(const char *data)
{
    return event_agrees(data, strlen(data));
}

#define NOTHING "rc=0 error=0 content=0 done=0 stop=0 seen=0 finished=0"
#define NOT_JSON "rc=1 error=0 content=0 done=0 stop=0 seen=0 finished=0"
#define IN_BAND_ERROR "rc=0 error=1 content=0 done=0 stop=0 seen=0 finished=0"
#define CHOICE_0 "rc=0 error=0 content=0 done=0 stop=0 seen=1 finished=0"
#define CONTENT_0 "rc=0 error=0 content=1 done=0 stop=0 seen=1 finished=0"

/* Events whose reading is easy to get wrong, each with what it says. */
static void test_event_read_tricky(void **state)
{
    static const struct {
        const char *data;
        const char *want;
    } cases[] = {
        /* chat completions */
        {"{\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
         "\"finish_reason\":null}]}",
         CHOICE_0},
        {"{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"say \\\"}]}\\\" \\\\\"}}]}",
         CONTENT_0},
        {"{\"choices\":[{\"index\":0,\"delta\":{\"content\":"
         "\"{\\\"a\\\":[1,{\\\"b\\\":\\\"]\\\"}]}\"}}]}",
         CONTENT_0},
        {"{\"choices\":[{\"delta\":{\"content\":{\"text\":\"x\"}},\"index\":0}]}",
         CHOICE_0},
        {"{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\\u00e9\\ud83d\\ude00\"}}]}",
         CONTENT_0},
        /* cJSON's string ends at U+0000: this content is "" */
        {"{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\\u0000abc\"}}]}",
         CHOICE_0},
        {"{\"choices\":[{\"index\":0,\"delta\":{\"\\u0063ontent\":\"x\"}}]}",
         CONTENT_0},
        {"{\"choices\":[{\"index\":0,\"delta\":{\"content\\u0000junk\":\"x\"}}]}",
         CONTENT_0},
        {"{\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"},"
         "{\"index\":1,\"delta\":{\"content\":\"b\"},\"finish_reason\":null},"
         "{\"index\":2,\"delta\":{},\"finish_reason\":\"\"}]}",
         "rc=0 error=0 content=1 done=0 stop=0 seen=7 finished=1"},
        {"{\"choices\":[{\"index\":63,\"finish_reason\":\"length\"},{\"index\":64},"
         "{\"index\":-1},{\"index\":\"2\"},{\"index\":1.9},{\"index\":6.2e1}]}",
         "rc=0 error=0 content=0 done=0 stop=0 seen=c000000000000003 finished=8000000000000000"},
        /* strtod rounds this to 64: out of range, so choice 0 */
        {"{\"choices\":[{\"index\":63.999999999999999999999,\"finish_reason\":\"stop\"}]}",
         "rc=0 error=0 content=0 done=0 stop=0 seen=1 finished=1"},
        {"{\"choices\":[{\"index\":0000000000000000000000000000000000000000000000000000000000000000"
         "0000000000000000000000003,\"finish_reason\":\"stop\"}]}",
         "rc=0 error=0 content=0 done=0 stop=0 seen=8 finished=8"},
        {"{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[ ]}},{\"index\":1,\"delta\":"
         "{\"function_call\":null}}]}",
         "rc=0 error=0 content=0 done=0 stop=0 seen=3 finished=0"},
        {"{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":"
         "{\"arguments\":\"{\\\"\"}}]}}]}",
         CONTENT_0},
        {"{\"choices\":[{\"index\":0,\"delta\":{\"function_call\":{}}}]}",
         CONTENT_0},
        /* the first of two members counts, as in cJSON's tree */
        {"{\"choices\":[],\"choices\":[{\"delta\":{\"content\":\"x\"}}]}",
         NOTHING},
        /* choices as an object: its members are gone over as choices */
        {"{\"choices\":{\"a\":{\"index\":1,\"delta\":{\"content\":\"x\"}}}}",
         "rc=0 error=0 content=1 done=0 stop=0 seen=2 finished=0"},
        {"{\"choices\":[[{\"delta\":{\"content\":\"x\"}}],\"s\",null]}",
         CHOICE_0},
        {"[{\"choices\":[{\"delta\":{\"content\":\"x\"}}]}]",
         NOTHING},
        /* text after the value is not read, by cJSON either */
        {"{\"choices\":[{\"delta\":{\"content\":\"x\"}}]} trailing {",
         CONTENT_0},
        {"\xef\xbb\xbf \x01{\x02\"choices\"\x1f:[{\"delta\":{\"content\":\"x\"}}]}",
         CONTENT_0},
        /* in-band errors */
        {"{\"error\":{\"message\":\"boom\"}}", IN_BAND_ERROR},
        {"{\"error\":null,\"choices\":[{\"delta\":{\"content\":\"x\"}}]}",
         CONTENT_0},
        {"{\"error\":null}", NOTHING},
        {"{\"error\":\"x\",\"choices\":null}", NOTHING},
        {"{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\","
         "\"message\":\"Overloaded\"}}",
         IN_BAND_ERROR},
        {"{\"type\":\"\\u0065rror\\u0000tail\",\"choices\":[]}",
         IN_BAND_ERROR},
        /* Anthropic messages */
        {"{\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"content\":[]}}",
         NOTHING},
        {"{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
         "\"text\":\"Hi\"}}",
         "rc=0 error=0 content=1 done=0 stop=0 seen=0 finished=0"},
        {"{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{}}",
         "rc=0 error=0 content=0 done=0 stop=1 seen=0 finished=0"},
        {"{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":null}}",
         NOTHING},
        {"{\"delta\":{\"stop_reason\":\"end_turn\"},\"type\":\"message_delta\"}",
         "rc=0 error=0 content=0 done=0 stop=1 seen=0 finished=0"},
        {"{\"type\":\"message_stop\"}", "rc=0 error=0 content=0 done=1 stop=0 seen=0 finished=0"},
        {"{\"type\":\"message_stop \"}", NOTHING},
        /* OpenAI Responses */
        {"{\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}",
         "rc=0 error=0 content=1 done=0 stop=0 seen=0 finished=0"},
        {"{\"type\":\"response.function_call_arguments.delta\",\"delta\":\"{\"}",
         "rc=0 error=0 content=1 done=0 stop=0 seen=0 finished=0"},
        {"{\"type\":\"response.completed\",\"response\":{\"status\":\"completed\"}}",
         "rc=0 error=0 content=0 done=1 stop=0 seen=0 finished=0"},
        {"{\"type\":\"response.incomplete\"}",
         "rc=0 error=0 content=0 done=1 stop=0 seen=0 finished=0"},
        {"{\"type\":\"response.failed\",\"response\":{}}",
         IN_BAND_ERROR},
        /* not JSON as cJSON reads it: skipped and counted */
        {"{not json", NOT_JSON},
        {"{\"choices\":[{\"delta\":{\"content\":\"x\"}}]", NOT_JSON},
        {"{\"choices\":[{\"delta\":{\"content\":\"x\\q\"}}]}", NOT_JSON},
        {"{\"choices\":[{\"index\":01.,\"delta\":{\"content\":\"\\udc00\"}}]}",
         NOT_JSON},
        {"{\"a\":1,}", NOT_JSON},
        {"", NOT_JSON},
        {"[DONE", NOT_JSON},
    };
    size_t i;
    (void)state;
    for (i = 0; i < sizeof cases / sizeof *cases; i++) {
        const char *got = event_agrees_s(cases[i].data);
        if (strcmp(got, cases[i].want) != 0)
            fail_msg("%s\n  got:  %s\n  want: %s", cases[i].data, got, cases[i].want);
    }
    /* a raw NUL byte ends a string for cJSON: this content is "" */
    assert_string_equal(event_agrees("{\"choices\":[{\"delta\":{\"content\":\"\0x\"}}]}", 40),
                        CHOICE_0);
    assert_string_equal(event_agrees("{\"choices\":[{\"delta\":{\"content\":\"x\0\"}}]}", 40),
                        CONTENT_0);
}

/* Real events whose most bytes no role wants: passed over, still checked
 * as cJSON would (a fault deep in them makes the event not JSON), and keys
 * that share a wanted name's first byte and length, or escape it. */
static void test_event_read_passes_over(void **state)
{
    static const struct {
        const char *data, *want;
    } cases[] = {
        {"{\"type\":\"response.completed\",\"sequence_number\":9,\"response\":{\"id\":\"resp_1\","
         "\"object\":\"response\",\"status\":\"completed\",\"output\":[{\"type\":\"message\","
         "\"content\":[{\"type\":\"output_text\",\"text\":\"a \\\"b\\\" \\u00e9\",\"annotations\":"
         "[]}]}],\"usage\":{\"input_tokens\":12,\"output_tokens\":3.5e1,\"details\":null},"
         "\"choices\":[{\"delta\":{\"content\":\"x\"}}]}}",
         "rc=0 error=0 content=0 done=1 stop=0 seen=0 finished=0"},
        {"{\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":"
         "\"assistant\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":25,"
         "\"output_tokens\":1}}}",
         NOTHING},
        {"{\"type\":\"message_delta\",\"delta\":{\"stop_sequence\":null,"
         "\"stop_reason\":\"end_turn\",\"stop\":1},\"usage\":{\"output_tokens\":15}}",
         "rc=0 error=0 content=0 done=0 stop=1 seen=0 finished=0"},
        /* a fault inside a member no one reads */
        {"{\"choices\":[],\"usage\":{\"a\":[1,2,{\"b\":tru}]}}", NOT_JSON},
        {"{\"choices\":[],\"usage\":{\"a\":[1,2,{\"b\":\"\\x\"}]}}", NOT_JSON},
        {"{\"choices\":[],\"usage\":{\"a\":[1,2,]}}", NOT_JSON},
        {"{\"choices\":[{\"logprobs\":{\"content\":[{\"token\":\"x\",\"logprob\":-0.1}]}}],"
         "\"usage\":{\"a\":{\"b\" 1}}}",
         NOT_JSON},
        /* the same first byte and length as a wanted name, or an escaped one */
        {"{\"chooses\":[{\"delta\":{\"content\":\"x\"}}],\"tyqe\":\"message_stop\"}", NOTHING},
        {"{\"\\u0063hoices\":[{\"delta\":{\"content\":\"x\"}}],\"t\\u0079pe\":\"message_stop\"}",
         "rc=0 error=0 content=1 done=1 stop=0 seen=1 finished=0"},
        {"{\"choices\":[{\"indey\":3,\"index\":2,\"deltb\":{\"content\":\"y\"},"
         "\"finish_reasoo\":\"stop\"}]}",
         "rc=0 error=0 content=0 done=0 stop=0 seen=4 finished=0"},
        /* tool calls: the first element counts, the rest is passed over */
        {"{\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":"
         "\"{\\\"a\\\":1}\"}},[1,[2]],{}]}}]}",
         CONTENT_0},
    };
    size_t i;
    (void)state;
    for (i = 0; i < sizeof cases / sizeof *cases; i++)
        assert_string_equal(event_agrees_s(cases[i].data), cases[i].want);
}

/* Nesting at cJSON's limit, anywhere in the event: 1000 levels read, 1001
 * are not JSON for cJSON. */
static void test_event_read_deep(void **state)
{
    static const char head[] = "{\"choices\":[{\"delta\":{\"content\":\"x\"}}],\"deep\":";
    char *s = malloc(sizeof head + 2 * 1001 + 2);
    size_t depth;
    (void)state;
    assert_non_null(s);
    for (depth = 997; depth <= 1000; depth++) {
        size_t n = sizeof head - 1;
        memcpy(s, head, n);
        memset(s + n, '[', depth);
        memset(s + n + depth, ']', depth);
        s[n + 2 * depth] = '}';
        event_agrees(s, n + 2 * depth + 1);
    }
    free(s);
}

/* ---- random events: JSON made of the members the reading looks at ---- */

static uint64_t rnd_state = 0x9e3779b97f4a7c15ULL;

static unsigned rnd(unsigned n)
{
    return (unsigned)(xorshift64(&rnd_state) % n);
}

typedef struct gen {
    char b[2048];
    size_t len;
    bool full;
} gen;

static void put(gen *g, const char *s)
{
    size_t n = strlen(s);
    if (g->len + n >= sizeof g->b) {
        g->full = true;
        return;
    }
    memcpy(g->b + g->len, s, n);
    g->len += n;
}

static void put_ws(gen *g)
{
    static const char *const ws[] = {"", "", "", "", " ", "\n", "\t", "\x01", "\r\n "};
    put(g, ws[rnd(sizeof ws / sizeof *ws)]);
}

/* How a member's value is made: mostly as the APIs send it under that key,
 * sometimes anything. */
typedef enum vkind { V_ANY, V_CHOICES, V_CHOICE, V_DELTA, V_INDEX, V_STRING, V_TYPE, V_ITEMS,
                     V_OBJECT } vkind;

typedef struct member_gen {
    const char *key; /* as written in the JSON text */
    vkind kind;
} member_gen;

static const member_gen EVENT_MEMBERS[] = {
    {"choices", V_CHOICES}, {"choices", V_CHOICES}, {"\\u0063hoices", V_CHOICES},
    {"choices ", V_CHOICES}, {"error", V_OBJECT}, {"type", V_TYPE}, {"type", V_TYPE},
    {"ty\\u0070e", V_TYPE}, {"type\\u0000x", V_TYPE}, {"delta", V_DELTA}, {"delta", V_DELTA},
    {"delta", V_DELTA}, {"Type", V_TYPE},
    {"", V_ANY}, {"\\ud83d\\ude00", V_ANY}, {"usage", V_OBJECT}};
static const member_gen CHOICE_MEMBERS[] = {
    {"index", V_INDEX}, {"index", V_INDEX}, {"index\\u0000", V_INDEX}, {"delta", V_DELTA},
    {"delta", V_DELTA}, {"finish_reason", V_STRING}, {"finish_reason", V_STRING},
    {"\\u0000", V_STRING}, {"logprobs", V_ANY}};
static const member_gen DELTA_MEMBERS[] = {
    {"content", V_STRING}, {"content", V_STRING}, {"cont\\u0065nt", V_STRING},
    {"Content", V_STRING}, {"tool_calls", V_ITEMS}, {"function_call", V_OBJECT},
    {"stop_reason", V_STRING}, {"stop_reason", V_STRING}, {"role", V_STRING},
    {"type", V_TYPE}, {"text", V_STRING}};

#define N_OF(a) (sizeof(a) / sizeof *(a))

static void gen_value(gen *g, int depth, vkind kind);

static void gen_object(gen *g, int depth, const member_gen *pool, size_t n_pool)
{
    unsigned n = rnd(5), i;
    put(g, "{");
    for (i = 0; i < n; i++) {
        const member_gen *m = &pool[rnd((unsigned)n_pool)];
        if (rnd(8) == 0) /* now and then a member from elsewhere */
            m = &DELTA_MEMBERS[rnd(N_OF(DELTA_MEMBERS))];
        if (i)
            put(g, ",");
        put_ws(g);
        put(g, "\"");
        put(g, m->key);
        put(g, "\"");
        put_ws(g);
        put(g, ":");
        put_ws(g);
        gen_value(g, depth + 1, rnd(5) == 0 ? V_ANY : m->kind);
        put_ws(g);
    }
    put(g, "}");
}

static void gen_array(gen *g, int depth, unsigned max, vkind kind)
{
    unsigned n = rnd(max + 1), i;
    put(g, "[");
    for (i = 0; i < n; i++) {
        if (i)
            put(g, ",");
        put_ws(g);
        gen_value(g, depth + 1, kind);
    }
    put_ws(g);
    put(g, "]");
}

static void gen_value(gen *g, int depth, vkind kind)
{
    static const char *const strings[] = {
        "\"\"", "\"x\"", "\"stop\"", "\"stop\"", "\"\\u0000x\"", "\"\\\"q\\\"\"",
        "\"\\ud83d\\ude00\"", "\"\\u00e9\"", "\"\\n\"", "\"\\uzzzz\"", "\"\\\\\"", "\"]}\"",
        "\"\x01\"", "null", "null", "1", "{}", "[]"};
    static const char *const types[] = {
        "\"error\"", "\"message_delta\"", "\"message_delta\"", "\"message_delta\"",
        "\"message_stop\"", "\"content_block_delta\"",
        "\"response.failed\"", "\"response.completed\"", "\"response.incomplete\"",
        "\"response.output_text.delta\"", "\"response.function_call_arguments.delta\"",
        "\"\\u0065rror\"", "\"error\\u0000z\"", "\"message_stop\\u0000\"", "\"Error\"",
        "\"message_start\"", "\"ping\"", "\"message_stop \"", "\"\"", "null"};
    static const char *const numbers[] = {
        "0", "0", "1", "2", "3", "63", "64", "-1", "-0", "1.5", "0.5", "1e1", "6.3e1", "1E0",
        "63.99999999999999999999", "1e400", "007", "-0.0", "2.0", "0.1e2", "-1e-400",
        "18446744073709551617", "1e", "1.", "-", "\"0\"", "null"};
    static const char *const words[] = {"null", "true", "false", "nul"};
    unsigned k;
    if (g->full)
        return;
    if (depth >= 6 && (kind == V_ANY || kind == V_CHOICES || kind == V_CHOICE ||
                       kind == V_DELTA || kind == V_ITEMS || kind == V_OBJECT))
        kind = V_STRING;
    switch (kind) {
    case V_CHOICES:
        if (rnd(8) == 0)
            gen_object(g, depth, CHOICE_MEMBERS, N_OF(CHOICE_MEMBERS)); /* choices as object */
        else
            gen_array(g, depth, 3, V_CHOICE);
        return;
    case V_CHOICE:
        gen_object(g, depth, CHOICE_MEMBERS, N_OF(CHOICE_MEMBERS));
        return;
    case V_DELTA:
        gen_object(g, depth, DELTA_MEMBERS, N_OF(DELTA_MEMBERS));
        return;
    case V_INDEX:
        put(g, numbers[rnd(N_OF(numbers))]);
        return;
    case V_STRING:
        put(g, strings[rnd(N_OF(strings))]);
        return;
    case V_TYPE:
        put(g, types[rnd(N_OF(types))]);
        return;
    case V_ITEMS:
        gen_array(g, depth, 2, V_OBJECT);
        return;
    case V_OBJECT:
        if (rnd(3) == 0)
            put(g, rnd(2) ? "null" : "\"x\"");
        else
            gen_object(g, depth, EVENT_MEMBERS, N_OF(EVENT_MEMBERS));
        return;
    case V_ANY:
        break;
    }
    k = rnd(6);
    if (k == 0)
        gen_object(g, depth, EVENT_MEMBERS, N_OF(EVENT_MEMBERS));
    else if (k == 1)
        gen_array(g, depth, 3, V_ANY);
    else if (k == 2)
        put(g, types[rnd(N_OF(types))]);
    else if (k == 3)
        put(g, numbers[rnd(N_OF(numbers))]);
    else if (k == 4)
        put(g, strings[rnd(N_OF(strings))]);
    else
        put(g, words[rnd(N_OF(words))]);
}

static void test_event_read_agrees_with_cjson(void **state)
{
    int i;
    (void)state;
    for (i = 0; i < 60000; i++) {
        gen g;
        g.len = 0;
        g.full = false;
        put_ws(&g);
        if (rnd(8) == 0)
            gen_value(&g, 0, V_ANY);
        else
            gen_object(&g, 0, EVENT_MEMBERS, N_OF(EVENT_MEMBERS));
        if (rnd(8) == 0)
            put(&g, rnd(2) ? " x" : "}");
        if (g.full)
            continue;
        switch (rnd(10)) {
        case 0: /* cut short */
            g.len = rnd((unsigned)g.len + 1);
            break;
        case 1: /* one byte changed */
            if (g.len)
                g.b[rnd((unsigned)g.len)] = "{}[],:\"\\ 0-e.u"[rnd(14)];
            break;
        default:
            break;
        }
        event_agrees(g.b, g.len);
    }
}

/* ---- events read in turn: resumed where they share bytes (the memo) ---- */

/* Reading data after whatever the memo saw says what the reference says
 * (and so what a reading from the start says: event_agrees). */
static void memo_agrees(aigw_event_memo *m, const char *data, size_t len)
{
    char got[160], want[160];
    aigw_event_facts f, rf;
    int rc = aigw__stream_event_read_memo(m, data, len, &f), rrc = ref_event_read(data, len, &rf);
    facts_str(rc, &f, got, sizeof got);
    facts_str(rrc, &rf, want, sizeof want);
    if (strcmp(got, want) != 0)
        fail_msg("after a memo: %.*s\n  memo:      %s\n  reference: %s",
                 (int)(len < 400 ? len : 400), data, got, want);
}

/* Events as the APIs stream them, and a few that are easy to get wrong. */
static const char *const MEMO_EVENTS[] = {
    "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,"
    "\"model\":\"m1\",\"system_fingerprint\":\"fp_1\",\"choices\":[{\"index\":0,\"delta\":"
    "{\"content\":\"Hello\"},\"logprobs\":null,\"finish_reason\":null}]}",
    "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,"
    "\"model\":\"m1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\","
    "\"content\":\"\"},\"finish_reason\":null}]}",
    "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,"
    "\"model\":\"m1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],"
    "\"usage\":null}",
    "{\"id\":\"c\",\"choices\":[{\"index\":1,\"delta\":{\"tool_calls\":[{\"index\":0,"
    "\"function\":{\"arguments\":\"{\\\"a\\\"\"}}]}},{\"index\":0,\"delta\":{\"content\":"
    "\"x\"},\"finish_reason\":\"length\"}]}",
    "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
    "\"text\":\"Hi\"}}",
    "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\","
    "\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}",
    "{\"type\":\"response.output_text.delta\",\"sequence_number\":4,\"item_id\":\"msg_1\","
    "\"output_index\":0,\"content_index\":0,\"delta\":\"Hi\"}",
    "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"x\"}}",
    "{\"error\":null,\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\\u0000x\"}}]}",
    "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"},\"delta\":{\"content\":"
    "\"\"},\"finish_reason\":null,\"finish_reason\":\"stop\"}],\"choices\":null}",
};

/* Each event after each other one, and after itself with a byte changed,
 * cut, added or taken out at every place: wherever the bytes part, the
 * reading resumed from a mark says what the reference says. */
static void test_event_memo_every_place(void **state)
{
    static const char bytes[] = "{}[],:\"\\ 0xe.-";
    const size_t n_bytes = sizeof bytes - 1;
    aigw_event_memo *m = aigw__event_memo_new();
    char b[1024];
    size_t i, j, p, k;
    (void)state;
    assert_non_null(m);
    for (i = 0; i < N_OF(MEMO_EVENTS); i++)
        for (j = 0; j < N_OF(MEMO_EVENTS); j++) {
            memo_agrees(m, MEMO_EVENTS[i], strlen(MEMO_EVENTS[i]));
            memo_agrees(m, MEMO_EVENTS[j], strlen(MEMO_EVENTS[j]));
        }
    for (i = 0; i < N_OF(MEMO_EVENTS); i++) {
        const char *e = MEMO_EVENTS[i];
        size_t n = strlen(e);
        assert_true(n + 1 < sizeof b);
        for (p = 0; p <= n; p++)
            for (k = 0; k < n_bytes + 3; k++) {
                size_t len;
                memcpy(b, e, p);
                if (k < n_bytes) { /* one byte changed */
                    if (p == n)
                        continue;
                    b[p] = bytes[k];
                    memcpy(b + p + 1, e + p + 1, n - p - 1);
                    len = n;
                } else if (k == n_bytes) { /* cut */
                    len = p;
                } else if (k == n_bytes + 1) { /* a byte added */
                    b[p] = ' ';
                    memcpy(b + p + 1, e + p, n - p);
                    len = n + 1;
                } else { /* one taken out */
                    if (p == n)
                        continue;
                    memcpy(b + p, e + p + 1, n - p - 1);
                    len = n - 1;
                }
                memo_agrees(m, e, n);
                memo_agrees(m, b, len);
                memo_agrees(m, e, n); /* and back */
            }
    }
    aigw__event_memo_free(m);
}

/* Events that differ from the one before only inside the string a stream
 * varies (a chat chunk's content, an Anthropic delta's text), or there and
 * after it: each in turn after each other, three in a row, so that an event
 * taken as the last one but for that string (struct aigw_event_memo) is
 * then the base the next one resumes from. */
static void test_event_memo_vary(void **state)
{
    static const char *const templates[] = {
        "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,"
        "\"model\":\"m1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"%s\"},"
        "\"logprobs\":null,\"finish_reason\":%s}]}",
        "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"%s\",\"content\":\"\"},"
        "\"finish_reason\":%s},{\"index\":1,\"delta\":{\"content\":\"y\"}}]}",
        "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
        "\"text\":\"%s\",\"stop_reason\":%s}}",
        "{\"type\":\"message_delta\",\"delta\":{\"text\":\"%s\",\"stop_reason\":%s}}",
    };
    /* what goes between the string's quotes: plain, empty, escapes,
     * bytes that end it early or leave it open, a control byte, UTF-8 */
    static const char *const texts[] = {
        "Hello", "", " world, and a longer piece of text", "\\\"", "a\\u0041",
        "\\", "\"", "x\", y", "\\u0000", "\\u0000z", "\x01", "\xc3\xa9t\xc3\xa9",
        "\\n\\t", "}]}", "\\ud83d\\ude00", "\\uzzzz",
    };
    static const char *const ends[] = {"null", "\"stop\"", "\"\"", "\"length\""};
    aigw_event_memo *m = aigw__event_memo_new();
    char b[3][512];
    size_t t, i, j, k, n[3];
    (void)state;
    assert_non_null(m);
    for (t = 0; t < N_OF(templates); t++)
        for (i = 0; i < N_OF(texts) * N_OF(ends); i++)
            for (j = 0; j < N_OF(texts) * N_OF(ends); j++) {
                size_t pick[3];
                pick[0] = i;
                pick[1] = j;
                pick[2] = (i * 7 + j * 3) % (N_OF(texts) * N_OF(ends));
                for (k = 0; k < 3; k++) {
                    int w = snprintf(b[k], sizeof b[k], templates[t],
                                     texts[pick[k] % N_OF(texts)], ends[pick[k] / N_OF(texts)]);
                    assert_true(w > 0 && (size_t)w < sizeof b[k]);
                    n[k] = (size_t)w;
                }
                for (k = 0; k < 3; k++)
                    memo_agrees(m, b[k], n[k]);
            }
    aigw__event_memo_free(m);
}

/* Random events in turn, each often the one before with a byte changed,
 * cut, or the same again. */
static void test_event_memo_random(void **state)
{
    aigw_event_memo *m = aigw__event_memo_new();
    static gen g, last;
    int i;
    (void)state;
    assert_non_null(m);
    last.len = 0;
    for (i = 0; i < 40000; i++) {
        if (last.len && rnd(3) != 0) {
            g = last;
            switch (rnd(3)) {
            case 0:
                g.b[rnd((unsigned)g.len)] = "{}[],:\"\\ 0-e.u"[rnd(14)];
                break;
            case 1:
                g.len = rnd((unsigned)g.len + 1);
                break;
            default:
                break; /* the same again */
            }
        } else {
            g.len = 0;
            g.full = false;
            put_ws(&g);
            gen_object(&g, 0, EVENT_MEMBERS, N_OF(EVENT_MEMBERS));
            if (g.full)
                continue;
        }
        memo_agrees(m, g.b, g.len);
        last = g;
    }
    aigw__event_memo_free(m);
}

/* A streamed request costs the same allocations with 2 events or 150: the
 * events are read (and framed) without any, cJSON's included. */
static aigw_response *stream_events(int n_events, long *allocs)
{
    static char many[150 * 64];
    aigw_client *c = client(NULL);
    script *s = push_script();
    aigw_response *r;
    size_t len = 0;
    long before;
    int i;
    for (i = 0; i < n_events; i++)
        len += (size_t)snprintf(many + len, sizeof many - len, "%s", TOK("b"));
    s->chunks[0] = TOK("a");
    s->chunks[1] = many;
    s->chunks[2] = FINISH DONE;
    memset(&G, 0, sizeof G);
    before = aigw__alloc_count();
    r = stream(c, -1);
    *allocs = aigw__alloc_count() - before;
    assert_attempts(r, "a:succeeded:succeeded");
    aigw_client_free(c);
    return r;
}

static void test_events_allocate_nothing(void **state)
{
    long few, lots;
    (void)state;
    oom_cjson_hooks(OOM_CJSON_AIGW); /* cJSON's allocations counted too */
    aigw_response_free(stream_events(2, &few));
    SM.n_script = SM.n_calls = 0;
    aigw_response_free(stream_events(150, &lots));
    oom_cjson_hooks(OOM_CJSON_MALLOC);
    assert_int_equal(lots, few);
}

/* An Anthropic messages stream through the engine: content_block_delta is
 * the commit point, message_delta's stop_reason a finish, message_stop the
 * end; an error event without "event: error" fails over unseen. */
#define ANT_START "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{}}\n\n"
#define ANT_TEXT(x)                                                                         \
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,"     \
    "\"delta\":{\"type\":\"text_delta\",\"text\":\"" x "\"}}\n\n"
#define ANT_STOP_REASON                                                                     \
    "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":"  \
    "\"end_turn\"}}\n\n"
#define ANT_STOP "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"

static void test_anthropic_stream(void **state)
{
    aigw_client *c = client(NULL);
    script *s = push_script();
    aigw_response *r;
    (void)state;
    s->chunks[0] = ANT_START "data: {\"type\":\"error\",\"error\":{\"type\":"
                             "\"overloaded_error\"}}\n\n" ANT_TEXT("never");
    s = push_script();
    s->chunks[0] = ANT_START;
    s->chunks[1] = ANT_TEXT("He said \\\"hi\\\"");
    s->chunks[2] = ANT_STOP_REASON; /* a finish: no message_stop needed */
    r = stream(c, -1);
    assert_attempts(r, "a:next_key:failed b:succeeded:succeeded");
    assert_string_equal(aigw_attempt_error_class(aigw_response_attempt(r, 0)), "overloaded");
    assert_string_equal(G.bytes, ANT_START ANT_TEXT("He said \\\"hi\\\"") ANT_STOP_REASON);
    aigw_response_free(r);
    aigw_client_free(c);

    memset(&SM, 0, sizeof SM);
    memset(&G, 0, sizeof G);
    c = client(NULL);
    s = push_script();
    s->chunks[0] = ANT_START ANT_TEXT("a") ANT_STOP;
    s->end = END_STALL; /* message_stop is the end: the open connection is moot */
    r = stream(c, -1);
    assert_attempts(r, "a:succeeded:succeeded");
    aigw_response_free(r);
    aigw_client_free(c);
}

/* A content string of nothing but U+0000 is empty to cJSON, so not the
 * commit point: a role chunk and it, then a cut, fail over unseen. */
/* The upstream echoes the key's value ("key-a") after the commit point:
 * every copy reaches the caller as [REDACTED], wherever the reads split it,
 * and a near miss passes as it came. */
static void test_echoed_key_is_scrubbed_across_reads(void **state)
{
    static const char body[] = TOK("xkey-key-akey-a.key-") FINISH;
    static const char want[] = ROLE TOK("go") TOK("xkey-[REDACTED][REDACTED].key-") FINISH;
    char head[sizeof body], rest[sizeof body];
    size_t cut;
    (void)state;
    for (cut = 0; cut <= sizeof body - 1; cut++) {
        aigw_client *c = client(NULL);
        script *s;
        aigw_response *r;
        setup(NULL);
        s = push_script();
        memcpy(head, body, cut);
        head[cut] = '\0';
        snprintf(rest, sizeof rest, "%s", body + cut);
        s->chunks[0] = ROLE;
        s->chunks[1] = TOK("go");
        s->chunks[2] = head;
        s->chunks[3] = rest;
        r = stream(c, -1);
        assert_attempts(r, "a:succeeded:succeeded");
        if (strcmp(G.bytes, want) != 0)
            fail_msg("cut at %zu: got %s", cut, G.bytes);
        aigw_response_free(r);
        aigw_client_free(c);
    }
}

/* A broken stream drops the held tail: it can only be the start of the key. */
static void test_broken_stream_drops_a_held_key_prefix(void **state)
{
    aigw_client *c = client(NULL);
    script *s = push_script();
    aigw_response *r;
    (void)state;
    s->chunks[0] = ROLE TOK("go");
    s->chunks[1] = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"key-";
    s->end = END_RESET;
    r = stream(c, 0);
    assert_attempts(r, "a:fail_fast:stream_failed");
    assert_string_equal(G.bytes, ROLE TOK("go") "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"");
    aigw_response_free(r);
    aigw_client_free(c);
}

/* A complete answer hands on the tail it held back: here a whole (not SSE)
 * answer whose last bytes are a prefix of the key, read in two parts. */
static void test_complete_answer_hands_on_a_held_tail(void **state)
{
    aigw_client *c = client(NULL);
    script *s = push_script();
    aigw_response *r;
    (void)state;
    s->content_type = "text/plain";
    s->chunks[0] = "the key is key-a, not key-";
    s->chunks[1] = "b; key-";
    r = stream(c, -1);
    assert_attempts(r, "a:succeeded:succeeded");
    assert_string_equal(G.bytes, "the key is [REDACTED], not key-b; key-");
    aigw_response_free(r);
    aigw_client_free(c);
}

static void test_nul_content_is_not_content(void **state)
{
    aigw_client *c = client(NULL);
    script *s = push_script();
    aigw_response *r;
    (void)state;
    s->chunks[0] = ROLE TOK("\\u0000");
    s->end = END_RESET;
    s = push_script();
    s->chunks[0] = TOK("ok") FINISH DONE;
    r = stream(c, 0);
    assert_attempts(r, "a:next_backend:failed d:succeeded:succeeded");
    assert_string_equal(G.bytes, TOK("ok") FINISH DONE);
    aigw_response_free(r);
    aigw_client_free(c);
}

/* ---- replay: events read straight from the bytes ---- */

/* A block of a generated stream: its text, with %s where the content goes
 * (or none). */
static const char *const BLOCKS[] = {
    /* 0-4: the shapes replay reads, when one repeats the one before */
    "data: {\"id\":\"c-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,"
    "\"delta\":{\"content\":\"%s\"},\"finish_reason\":null}]}\n\n",
    "data:{\"id\":\"c-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"%s\"}}]}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,"
    "\"delta\":{\"type\":\"text_delta\",\"text\":\"%s\"}}\n\n",
    "event:content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,"
    "\"delta\":{\"type\":\"text_delta\",\"text\":\"%s\"}}\n\n",
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":"
    "{\"arguments\":\"%s\"}}]}}]}\n\n",
    /* 5-: what it leaves to the parser */
    "data: {\"id\":\"c-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"%s\"}}]}\r\n\r\n",
    "id: 7\ndata: {\"id\":\"c-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"%s\"}}]}\n\n",
    "retry: 100\ndata: {\"id\":\"c-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"%s\"}}]}"
    "\n\n",
    ": ping\n\n",
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"%s\ndata: two lines\"}}]}\n\n",
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
    "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
    "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":"
    "\"end_turn\"}}\n\n",
    "data: {\"id\":\"c-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"%s\"\n\n",
    "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}\n\n",
    "data: {\"error\":{\"message\":\"%s\"}}\n\n",
    "data: [DONE]\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,"
    "\"delta\":{\"type\":\"text_delta\",\"text\":\"%s\"}}\n\n\n",
};
#define N_REPEATED 5
#define B_FINISH 11
#define B_ERROR 14
#define B_DONE 16

/* What a content string holds: escapes, the key's value ("key-a",
 * redacted) and the start of it, a long one; then, seldom, what ends a run
 * of repeats: empty (NUL is empty too), a raw CR, bad JSON. */
static const char *const CONTENTS[] = {
    "a", "tok ", "\\n\\n", "He said \\\"hi\\\"", "caf\xc3\xa9", "key-a", "xkey-", "a\\\\", " ",
    "0123456789abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRST", "\\ud83d\\ude00",
    /* seldom */
    "", "\\u0000", "a\rb", "\\x", "}\"",
};
#define N_GOOD 11

/* A stream of runs of blocks, most of them shapes replay reads, the others
 * between; now and then a content longer than the memo keeps, a BOM at the
 * start, a finish and [DONE] at the end.  Its length. */
static size_t gen_stream(uint64_t *rs, char *out, size_t size)
{
    size_t len = 0;
    char content[1200];
    if (xorshift64(rs) % 8 == 0)
        len += (size_t)snprintf(out, size, "\xef\xbb\xbf");
    while (len < size - 2400) {
        size_t b = xorshift64(rs) % 4 ? xorshift64(rs) % N_REPEATED
                                   : N_REPEATED + xorshift64(rs) % (sizeof BLOCKS / sizeof *BLOCKS -
                                                                 N_REPEATED);
        unsigned n_run = 1 + (unsigned)(xorshift64(rs) % 24), k;
        /* [DONE] and in-band errors end the stream: seldom */
        if ((b == B_DONE || b == B_ERROR || b == B_ERROR + 1) && xorshift64(rs) % 4)
            b = 0;
        for (k = 0; k < n_run && len < size - 2400; k++) {
            if (xorshift64(rs) % 80 == 0) {
                size_t n = 900 + xorshift64(rs) % 200;
                memset(content, 'x', n);
                content[n] = '\0';
            } else {
                size_t n = xorshift64(rs) % 8 ? N_GOOD : sizeof CONTENTS / sizeof *CONTENTS;
                snprintf(content, sizeof content, "%s", CONTENTS[xorshift64(rs) % n]);
            }
            len += (size_t)snprintf(out + len, size - len, BLOCKS[b], content);
        }
    }
    if (xorshift64(rs) % 2)
        len += (size_t)snprintf(out + len, size - len, "%s%s", BLOCKS[B_FINISH],
                                xorshift64(rs) % 2 ? BLOCKS[B_DONE] : "");
    return len;
}

/* What a streamed request of body (every call answered with it, in reads of
 * piece bytes or, with a seed, of 1 to piece) came to, replay on or off: the
 * response's trace from its outcome on (the request id differs), what the
 * caller got, and at once (the commit point's hand-over). */
static void stream_story(const char *body, size_t len, size_t piece, uint64_t seed,
                         const char *extra, int replay, char *out, size_t size)
{
    aigw_client *c;
    aigw_response *r;
    const char *trace;
    int i;
    setup(NULL);
    aigw__stream_replay(replay);
    c = client(extra);
    for (i = 0; i < MAX_CALLS; i++) {
        script *s = push_script();
        s->body = body;
        s->body_len = len;
        s->piece = piece;
        s->seed = seed;
    }
    r = stream(c, -1);
    trace = strstr(aigw_response_trace_json(r), "\"outcome\"");
    assert_non_null(trace);
    snprintf(out, size,
             "%s calls %d starts %d resets %d commits %d first %zu len %zu before %zu [%.*s] [%.*s]",
             trace, SM.n_calls, G.starts, G.resets, G.commits, G.first_data_len, G.len,
             G.before_len, (int)G.len, G.bytes, (int)G.before_len, G.before_reset);
    aigw_response_free(r);
    aigw_client_free(c);
    aigw__stream_replay(1);
}

/* Replay reads the blocks that repeat the one before straight from the
 * bytes, the parser the others (and those split between reads).  Whatever
 * the stream and wherever the reads split it, a request comes to the same
 * with replay as without: its outcome and attempts (the commit point,
 * errors, malformed events), what the caller gets (the key redacted). */
/* Streams made to trip replay: a raw CR in a content at the very end of
 * the bytes; the first content after empty ones replay read; data of two
 * lines, then blocks whose second line lacks its "data:" (the same data
 * bytes, which the parser reads as other). */
#define TWO_LINES(x) \
    "data: {\"choices\":[{\"index\":0,\ndata: \"delta\":{\"content\":\"" x "\"}}]}\n\n"
#define NOT_TWO_LINES(x) \
    "data: {\"choices\":[{\"index\":0,\n\"delta\":{\"content\":\"" x "\"}}]}\n\n"
#define SHORT_TOK(x) "data:{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"" x "\"}}]}\n\n"
static const char *const TRAPS[] = {
    ROLE SHORT_TOK("a") SHORT_TOK("b") SHORT_TOK("c") SHORT_TOK("d") SHORT_TOK("a\rb"),
    ROLE SHORT_TOK("a") SHORT_TOK("b") SHORT_TOK("c") SHORT_TOK("d") SHORT_TOK("a\nb"),
    ROLE SHORT_TOK("a") SHORT_TOK("b") SHORT_TOK("c") SHORT_TOK("\\n\rb") SHORT_TOK("e") FINISH,
    ROLE SHORT_TOK("a") SHORT_TOK("b") SHORT_TOK("c") SHORT_TOK("\\\"\nb") SHORT_TOK("e") FINISH,
    ROLE SHORT_TOK("a") SHORT_TOK("b") SHORT_TOK("c") SHORT_TOK("d") SHORT_TOK("") FINISH,
    /* the commit point after blocks replay read, in the same read */
    ROLE SHORT_TOK("") SHORT_TOK("") SHORT_TOK("") SHORT_TOK("") SHORT_TOK("a") FINISH DONE,
    ROLE TWO_LINES("a") TWO_LINES("b") TWO_LINES("c") NOT_TWO_LINES("d") NOT_TWO_LINES("e")
        NOT_TWO_LINES("f") FINISH DONE,
};

static void test_replay_reads_as_the_parser_does(void **state)
{
    static char body[14000], want[40000], got[40000];
    static const char *const extras[] = {NULL, ",\"maxEventBytes\":300", ",\"streamRestart\":true"};
    static const size_t pieces[] = {0, 4096, 200, 61, 1, 700, 90};
    uint64_t rs = 0x2545f4914f6cdd1dULL;
    long replayed = aigw__stream_replay(-1);
    int round;
    size_t v;
    (void)state;
    for (round = 0; round < 40 + (int)(sizeof TRAPS / sizeof *TRAPS); round++) {
        size_t len = round < 40 ? gen_stream(&rs, body, sizeof body)
                                : (size_t)snprintf(body, sizeof body, "%s", TRAPS[round - 40]);
        const char *extra = extras[round % 3];
        for (v = 0; v < sizeof pieces / sizeof *pieces; v++) {
            uint64_t seed = v < 5 ? 0 : xorshift64(&rs) | 1; /* the last two: drawn */
            stream_story(body, len, pieces[v], seed, extra, 0, want, sizeof want);
            stream_story(body, len, pieces[v], seed, extra, 1, got, sizeof got);
            if (strcmp(got, want) != 0) {
                size_t at = 0;
                while (got[at] == want[at])
                    at++;
                at = at > 200 ? at - 200 : 0;
                fail_msg("round %d, reads of %s%zu: ...%.600s\nwithout replay: ...%.600s", round,
                         seed ? "at most " : "", pieces[v], got + at, want + at);
            }
        }
    }
    /* and replay did read */
    assert_true(aigw__stream_replay(-1) - replayed > 2000);
}

/* A chat completions stream and an Anthropic one, each in one read: all
 * but the first two of a run of token events are read by replay. */
static void test_replay_reads_runs(void **state)
{
    static char body[16384];
    size_t k, len, i;
    (void)state;
    for (k = 0; k < 2; k++) {
        long before = aigw__stream_replay(-1);
        aigw_client *c = client(NULL);
        script *s = push_script();
        aigw_response *r;
        len = (size_t)snprintf(body, sizeof body, "%s", k ? ANT_START : ROLE);
        for (i = 0; i < 50; i++)
            len += (size_t)snprintf(body + len, sizeof body - len, BLOCKS[k ? 2 : 0],
                                    i % 2 ? "tok " : "He said \\\"hi\\\"");
        len += (size_t)snprintf(body + len, sizeof body - len, "%s",
                                k ? ANT_STOP_REASON ANT_STOP : FINISH DONE);
        s->body = body;
        s->body_len = len;
        memset(&G, 0, sizeof G);
        r = stream(c, -1);
        assert_attempts(r, "a:succeeded:succeeded");
        assert_int_equal(G.len, len);
        assert_memory_equal(G.bytes, body, len);
        assert_int_equal(aigw__stream_replay(-1) - before, 48);
        aigw_response_free(r);
        aigw_client_free(c);
        SM.n_script = SM.n_calls = 0;
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_healthy_stream_byte_identical, setup),
        cmocka_unit_test_setup(test_echoed_key_is_scrubbed_across_reads, setup),
        cmocka_unit_test_setup(test_broken_stream_drops_a_held_key_prefix, setup),
        cmocka_unit_test_setup(test_complete_answer_hands_on_a_held_tail, setup),
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
        cmocka_unit_test_setup(test_commit_point_ignores_read_splits, setup),
        cmocka_unit_test_setup(test_caller_cancels, setup),
        cmocka_unit_test_setup(test_first_bytes_through_the_commit_event, setup),
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
        cmocka_unit_test_setup(test_event_read_tricky, setup),
        cmocka_unit_test_setup(test_event_read_passes_over, setup),
        cmocka_unit_test_setup(test_event_read_deep, setup),
        cmocka_unit_test_setup(test_event_read_agrees_with_cjson, setup),
        cmocka_unit_test_setup(test_event_memo_every_place, setup),
        cmocka_unit_test_setup(test_event_memo_vary, setup),
        cmocka_unit_test_setup(test_event_memo_random, setup),
        cmocka_unit_test_setup(test_events_allocate_nothing, setup),
        cmocka_unit_test_setup(test_anthropic_stream, setup),
        cmocka_unit_test_setup(test_nul_content_is_not_content, setup),
        cmocka_unit_test_setup(test_replay_reads_as_the_parser_does, setup),
        cmocka_unit_test_setup(test_replay_reads_runs, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
