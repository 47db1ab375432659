/*
 * stream.c - the caller's side of a streamed request: STREAM_CALLER, a
 * stream handler that records into a stream_caller what the library hands
 * on (the bytes since the last reset and those a reset discarded, the
 * status, how often each callback ran, when data came) and whether it kept
 * its contract (no data before on_start, no hop-by-hop header); and
 * stream_to, which streams one body to it.
 */
#include <stdio.h>
#include <string.h>

#include "support.h"

static int h_start(void *ud, int status, const aigw_header *h, size_t n)
{
    stream_caller *g = ud;
    size_t i;
    g->starts++;
    g->status = status;
    for (i = 0; i < n; i++) {
        if (strcmp(h[i].name, "content-type") == 0 &&
            strncmp(h[i].value, "text/event-stream", 17) == 0)
            g->sse_ctype = true;
        if (strcmp(h[i].name, "transfer-encoding") == 0 || strcmp(h[i].name, "connection") == 0)
            g->hop_by_hop = true;
    }
    return 0;
}

static int h_data(void *ud, const char *data, size_t len)
{
    stream_caller *g = ud;
    int64_t t = now_ms();
    if (g->starts == 0)
        g->data_before_start = true;
    assert_true(len > 0);
    assert_true(g->len + len < sizeof g->bytes);
    memcpy(g->bytes + g->len, data, len);
    g->len += len;
    g->bytes[g->len] = '\0';
    g->data_calls++;
    if (g->data_calls == 1) {
        g->t_first_data = t;
        g->first_data_len = len;
    }
    g->t_last_data = t;
    return g->cancel_at && g->data_calls >= g->cancel_at;
}

static int h_reset(void *ud, const char *reason)
{
    stream_caller *g = ud;
    g->resets++;
    snprintf(g->reset_reason, sizeof g->reset_reason, "%s", reason);
    memcpy(g->before_reset, g->bytes, g->len + 1);
    g->before_len = g->len;
    g->len = 0; /* a caller discards what it had */
    g->bytes[0] = '\0';
    return 0;
}

static int h_commit(void *ud, const char *request_id, const aigw_attempt *a)
{
    stream_caller *g = ud;
    g->commits++;
    if (g->starts >= g->commits)
        g->commit_after_start = true;
    snprintf(g->commit_request_id, sizeof g->commit_request_id, "%s", request_id);
    g->commit_attempt = aigw_attempt_number(a);
    snprintf(g->commit_provider, sizeof g->commit_provider, "%s", aigw_attempt_provider(a));
    snprintf(g->commit_model, sizeof g->commit_model, "%s", aigw_attempt_model(a));
    snprintf(g->commit_key, sizeof g->commit_key, "%s", aigw_attempt_key_id(a));
    return 0;
}

const aigw_stream_handler STREAM_CALLER = {AIGW_STREAM_VERSION, h_start, h_data, h_reset,
                                           h_commit};

aigw_response *stream_to(aigw_client *c, const char *body, int restart, stream_caller *g)
{
    aigw_request *req = NULL;
    aigw_response *resp = NULL;
    aigw_error *err = NULL;
    aigw_status st;
    assert_int_equal(aigw_request_new(&req), AIGW_OK);
    assert_int_equal(aigw_request_set_body(req, body, strlen(body)), AIGW_OK);
    assert_int_equal(aigw_request_set_stream_restart(req, restart), AIGW_OK);
    g->t_start = now_ms();
    st = aigw_client_stream(c, req, &STREAM_CALLER, g, &resp, &err);
    g->t_end = now_ms();
    if (st != AIGW_OK)
        fail_msg("stream: %s", err ? aigw_error_message(err) : "?");
    aigw_request_free(req);
    assert_non_null(resp);
    assert_false(g->data_before_start);
    assert_false(g->hop_by_hop);
    /* on_commit: once before each on_start, naming this request and the
     * attempt that is served */
    assert_int_equal(g->commits, g->starts);
    assert_false(g->commit_after_start);
    if (g->commits > 0) {
        size_t i;
        assert_string_equal(g->commit_request_id, aigw_response_request_id(resp));
        for (i = 0; i < aigw_response_attempt_count(resp); i++) {
            const aigw_attempt *a = aigw_response_attempt(resp, i);
            if (!aigw_attempt_served(a))
                continue;
            assert_int_equal(g->commit_attempt, aigw_attempt_number(a));
            assert_string_equal(g->commit_provider, aigw_attempt_provider(a));
            assert_string_equal(g->commit_model, aigw_attempt_model(a));
            assert_string_equal(g->commit_key, aigw_attempt_key_id(a));
        }
    }
    return resp;
}
