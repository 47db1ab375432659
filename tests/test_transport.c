/*
 * test_transport.c - the libcurl transport against a real loopback server
 * (examples/mockprov.c), the response setters, and the mock itself.
 */
#include "internal.h"
#include "mockprov.h"
#include "support.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>

#define MIB (1024u * 1024u)

static const char CHAT_BODY[] = "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\","
                                "\"content\":\"hi\"}]}";

/* ---- helpers ---- */

typedef struct tr_fixture {
    aigw_transport vt;
    void *ud;
    mockprov *mp;
    char url[128];
} tr_fixture;

static int setup(void **state)
{
    tr_fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    assert_int_equal(aigw__curl_transport_new(&f->vt, &f->ud), AIGW_OK);
    assert_int_equal(f->vt.version, AIGW_TRANSPORT_VERSION);
    assert_non_null(f->vt.send);
    f->mp = mockprov_start(0);
    assert_non_null(f->mp);
    snprintf(f->url, sizeof f->url, "%s/chat/completions", mockprov_base_url(f->mp));
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    tr_fixture *f = *state;
    mockprov_stop(f->mp);
    f->vt.destroy(f->ud);
    free(f);
    return 0;
}

static void resp_init(aigw_transport_response *r, size_t max_body)
{
    memset(r, 0, sizeof *r);
    r->max_body = max_body;
}

static void resp_free(aigw_transport_response *r)
{
    aigw__hdrs_free(&r->headers);
    aigw__buf_free(&r->body);
}

/* Sends a chat request with a Bearer key through the fixture's transport. */
/* One request as the engine builds it, with a cancel token (or NULL). */
static aigw_transport_result send_with(tr_fixture *f, const char *url, const char *key,
                                       const char *body, int64_t timeout_ms, size_t cap,
                                       const aigw_cancel *cancel, aigw_transport_response *resp)
{
    char auth[256];
    aigw_header h[2];
    aigw_transport_request req;
    snprintf(auth, sizeof auth, "Bearer %s", key);
    h[0].name = "content-type";
    h[0].value = "application/json";
    h[1].name = "authorization";
    h[1].value = auth;
    memset(&req, 0, sizeof req);
    req.method = "POST";
    req.url = url;
    req.headers = h;
    req.n_headers = 2;
    req.body = body;
    req.body_len = strlen(body);
    req.timeout_ms = timeout_ms;
    req.connect_timeout_ms = timeout_ms;
    req.max_response_bytes = cap;
    req.cancel = cancel;
    return f->vt.send(f->ud, &req, resp);
}

static aigw_transport_result send_full(tr_fixture *f, const char *url, const char *key,
                                       const char *body, int64_t timeout_ms, size_t cap,
                                       aigw_transport_response *resp)
{
    return send_with(f, url, key, body, timeout_ms, cap, NULL, resp);
}

static aigw_transport_result send_simple(tr_fixture *f, const char *key,
                                         aigw_transport_response *resp)
{
    resp_init(resp, 32 * MIB);
    return send_full(f, f->url, key, CHAT_BODY, 5000, 32 * MIB, resp);
}

static mockprov_rule rule_of(mockprov_action action, int status)
{
    mockprov_rule r;
    memset(&r, 0, sizeof r);
    r.action = action;
    r.status = status;
    return r;
}

static int raw_connect(int port)
{
    struct sockaddr_in sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons((unsigned short)port);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

/* Reads one Content-Length framed answer from fd into buf; returns its length. */
static size_t raw_read_answer(int fd, char *buf, size_t size)
{
    size_t len = 0;
    for (;;) {
        char *he;
        ssize_t n;
        buf[len] = '\0';
        he = strstr(buf, "\r\n\r\n");
        if (he) {
            const char *cl = strstr(buf, "Content-Length: ");
            size_t want = (size_t)(he + 4 - buf) + (cl ? strtoul(cl + 16, NULL, 10) : 0);
            if (len >= want)
                return len;
        }
        assert_true(len + 1 < size);
        n = recv(fd, buf + len, size - len - 1, 0);
        if (n <= 0)
            return len;
        len += (size_t)n;
    }
}

static void send_str(int fd, const char *s)
{
    size_t n = strlen(s);
    assert_int_equal(send(fd, s, n, MSG_NOSIGNAL), (ssize_t)n);
}

/* ---- the response setters and names ---- */

static void test_setters(void **state)
{
    aigw_transport_response r;
    (void)state;
    resp_init(&r, 10);
    assert_int_equal(aigw_transport_response_set_status(NULL, 200), AIGW_EINVAL);
    assert_int_equal(aigw_transport_response_set_status(&r, 99), AIGW_EINVAL);
    assert_int_equal(aigw_transport_response_set_status(&r, 1000), AIGW_EINVAL);
    assert_int_equal(aigw_transport_response_set_status(&r, 429), AIGW_OK);
    assert_int_equal(r.status, 429);

    assert_int_equal(aigw_transport_response_add_header(NULL, "a", "b"), AIGW_EINVAL);
    assert_int_equal(aigw_transport_response_add_header(&r, NULL, "b"), AIGW_EINVAL);
    assert_int_equal(aigw_transport_response_add_header(&r, "a", NULL), AIGW_EINVAL);
    assert_int_equal(aigw_transport_response_add_header(&r, "", "b"), AIGW_EINVAL);
    assert_int_equal(aigw_transport_response_add_header(&r, "a:b", "c"), AIGW_EINVAL);
    assert_int_equal(aigw_transport_response_add_header(&r, "a", "b\r\nx: y"), AIGW_EINVAL);
    assert_int_equal(aigw_transport_response_add_header(&r, "Retry-After", "3"), AIGW_OK);
    assert_int_equal(aigw_transport_response_add_header(&r, "retry-after", "4"), AIGW_OK);
    assert_int_equal(aigw_transport_response_add_header(&r, "X-Empty", ""), AIGW_OK);
    assert_int_equal(r.headers.n, 3);
    assert_string_equal(r.headers.v[0].name, "retry-after");
    assert_string_equal(r.headers.v[0].value, "3");
    assert_string_equal(r.headers.v[1].value, "4");
    assert_string_equal(r.headers.v[2].name, "x-empty");

    assert_int_equal(aigw_transport_response_append_body(NULL, "a", 1), AIGW_EINVAL);
    assert_int_equal(aigw_transport_response_append_body(&r, NULL, 1), AIGW_EINVAL);
    assert_int_equal(aigw_transport_response_append_body(&r, NULL, 0), AIGW_OK);
    assert_int_equal(aigw_transport_response_append_body(&r, "0123456", 7), AIGW_OK);
    assert_int_equal(aigw_transport_response_append_body(&r, "789", 3), AIGW_OK);
    assert_int_equal(aigw_transport_response_append_body(&r, "x", 1), AIGW_EINVAL);
    assert_int_equal(r.body.len, 10);
    assert_memory_equal(r.body.data, "0123456789", 10);
    assert_int_equal(aigw_transport_response_append_body(&r, (const char *)"", SIZE_MAX),
                     AIGW_EINVAL);
    r.max_body = 0; /* no cap */
    assert_int_equal(aigw_transport_response_append_body(&r, "ab", 2), AIGW_OK);
    assert_int_equal(r.body.len, 12);
    resp_free(&r);

    assert_null(aigw__transport_result_name(AIGW_TR_OK));
    assert_string_equal(aigw__transport_result_name(AIGW_TR_TIMEOUT), "timeout");
    assert_string_equal(aigw__transport_result_name(AIGW_TR_CONNECT), "connect");
    assert_string_equal(aigw__transport_result_name(AIGW_TR_RESET), "reset");
    assert_string_equal(aigw__transport_result_name(AIGW_TR_DNS), "dns");
    assert_string_equal(aigw__transport_result_name(AIGW_TR_TLS), "tls");
    assert_string_equal(aigw__transport_result_name(AIGW_TR_TOO_LARGE), "too_large");
    assert_string_equal(aigw__transport_result_name(AIGW_TR_PROTOCOL), "protocol");
    assert_string_equal(aigw__transport_result_name(AIGW_TR_OTHER), "other");
    assert_string_equal(aigw__transport_result_name(AIGW_TR_CANCELLED), "cancelled");
    assert_string_equal(aigw__transport_result_name((aigw_transport_result)99), "other");

    assert_int_equal(aigw__curl_transport_new(NULL, NULL), AIGW_EINVAL);
}

/* ---- the transport on loopback ---- */

static void test_ok_exact(void **state)
{
    tr_fixture *f = *state;
    aigw_transport_response r;
    mockprov_rule rl = rule_of(MOCKPROV_RESPOND, 200);
    char raw[4096], expect[4096], line[64], key[64], model[64];
    long n;
    rl.headers = "X-Request-Id: req-1\r\nx-ratelimit-remaining-requests: 0\r\n";
    rl.body = "{\"ok\":true}";
    assert_int_equal(mockprov_add_rule(f->mp, &rl), 0);

    assert_int_equal(send_simple(f, "sk-test-1", &r), AIGW_TR_OK);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body.len, 11);
    assert_string_equal(r.body.data, "{\"ok\":true}");
    /* every header the server sent but the hop-by-hop ones (its
     * Content-Length), names lower-cased, in order */
    assert_int_equal(r.headers.n, 3);
    assert_string_equal(r.headers.v[0].name, "content-type");
    assert_string_equal(r.headers.v[0].value, "application/json");
    assert_string_equal(r.headers.v[1].name, "x-request-id");
    assert_string_equal(r.headers.v[1].value, "req-1");
    assert_string_equal(r.headers.v[2].name, "x-ratelimit-remaining-requests");
    assert_string_equal(r.headers.v[2].value, "0");
    resp_free(&r);

    /* the exact bytes on the wire: no Expect, no Accept, our headers as given */
    assert_int_equal(mockprov_log_count(f->mp), 1);
    snprintf(expect, sizeof expect,
             "POST /v1/chat/completions HTTP/1.1\r\n"
             "Host: 127.0.0.1:%d\r\n"
             "content-type: application/json\r\n"
             "authorization: Bearer sk-test-1\r\n"
             "Content-Length: %zu\r\n"
             "\r\n%s",
             mockprov_port(f->mp), strlen(CHAT_BODY), CHAT_BODY);
    n = mockprov_log_raw(f->mp, 0, raw, sizeof raw);
    assert_int_equal(n, (long)strlen(expect));
    assert_memory_equal(raw, expect, (size_t)n);
    assert_int_equal(mockprov_log_get(f->mp, 0, line, sizeof line, key, sizeof key, model,
                                      sizeof model),
                     0);
    assert_string_equal(line, "POST /v1/chat/completions");
    assert_string_equal(key, "sk-test-1");
    assert_string_equal(model, "gpt-4o");
    assert_int_equal(mockprov_log_get(f->mp, 1, line, sizeof line, NULL, 0, NULL, 0), -1);
    assert_int_equal(mockprov_log_raw(f->mp, 1, raw, sizeof raw), -1);
    /* truncation */
    assert_int_equal(mockprov_log_get(f->mp, 0, line, 5, key, 3, NULL, 0), 0);
    assert_string_equal(line, "POST");
    assert_string_equal(key, "sk");
    assert_int_equal(mockprov_log_raw(f->mp, 0, raw, 4), n);
    assert_memory_equal(raw, "POST", 4);
}

static void test_default_completion(void **state)
{
    tr_fixture *f = *state;
    aigw_transport_response r;
    const char *want = "{\"id\":\"chatcmpl-mock-1\",\"object\":\"chat.completion\",\"created\":0,"
                       "\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"message\":{\"role\":"
                       "\"assistant\",\"content\":\"Hello from gpt-4o\"},\"finish_reason\":"
                       "\"stop\"}],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":3,"
                       "\"total_tokens\":4}}";
    assert_int_equal(send_simple(f, "k", &r), AIGW_TR_OK);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body.data, want);
    assert_string_equal(aigw__hdrs_get(&r.headers, "content-type"), "application/json");
    resp_free(&r);
    /* a model with quotes is escaped back */
    resp_init(&r, 0);
    assert_int_equal(send_full(f, f->url, "k", "{\"stream\":false,\"x\":{\"model\":\"no\"},"
                                              "\"model\":\"a\\\"b\\u00e9\"}",
                               5000, 0, &r),
                     AIGW_TR_OK);
    assert_non_null(strstr(r.body.data, "\"model\":\"a\\\"b\xc3\xa9\""));
    assert_non_null(strstr(r.body.data, "chatcmpl-mock-2"));
    resp_free(&r);
}

static void test_429_retry_after(void **state)
{
    tr_fixture *f = *state;
    aigw_transport_response r;
    mockprov_rule rl = rule_of(MOCKPROV_RESPOND, 429);
    rl.headers = "Retry-After: 7\r\n";
    rl.body = "{\"error\":{\"code\":\"rate_limit_exceeded\"}}";
    assert_int_equal(mockprov_add_rule(f->mp, &rl), 0);
    assert_int_equal(send_simple(f, "k", &r), AIGW_TR_OK);
    assert_int_equal(r.status, 429);
    assert_string_equal(aigw__hdrs_get(&r.headers, "retry-after"), "7");
    assert_string_equal(r.body.data, rl.body);
    resp_free(&r);
}

static void test_connect_refused(void **state)
{
    tr_fixture *f = *state;
    aigw_transport_response r;
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/chat/completions", dead_port());
    resp_init(&r, 0);
    assert_int_equal(send_full(f, url, "k", CHAT_BODY, 2000, 0, &r), AIGW_TR_CONNECT);
    resp_free(&r);
}

static void test_silent_timeout(void **state)
{
    tr_fixture *f = *state;
    aigw_transport_response r;
    mockprov_rule rl = rule_of(MOCKPROV_SILENT, 0);
    int64_t t0, dt;
    assert_int_equal(mockprov_add_rule(f->mp, &rl), 0);
    resp_init(&r, 0);
    t0 = now_ms();
    assert_int_equal(send_full(f, f->url, "k", CHAT_BODY, 300, 0, &r), AIGW_TR_TIMEOUT);
    dt = now_ms() - t0;
    assert_true(dt >= 250);
    assert_true(dt < 1000);
    resp_free(&r);
}

static void test_close_reset(void **state)
{
    tr_fixture *f = *state;
    aigw_transport_response r;
    mockprov_rule rl = rule_of(MOCKPROV_CLOSE, 0);
    assert_int_equal(mockprov_add_rule(f->mp, &rl), 0);
    assert_int_equal(send_simple(f, "k", &r), AIGW_TR_RESET);
    assert_int_equal(r.status, 0);
    resp_free(&r);
    /* a fresh connection: libcurl does not resend */
    assert_int_equal(mockprov_count(f->mp, "k"), 1);
}

/* A kept-alive connection closed without an answer looks like a stale one:
 * libcurl resends once on a new connection (the upstream sees the request
 * twice).  Pinned here because the engine's attempt counts rely on it. */
static void test_close_on_reused_connection(void **state)
{
    tr_fixture *f = *state;
    aigw_transport_response r;
    mockprov_rule rl = rule_of(MOCKPROV_CLOSE, 0);
    assert_int_equal(send_simple(f, "warm", &r), AIGW_TR_OK);
    resp_free(&r);
    rl.times = 1;
    assert_int_equal(mockprov_add_rule(f->mp, &rl), 0);
    assert_int_equal(send_simple(f, "k", &r), AIGW_TR_OK);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    assert_int_equal(mockprov_count(f->mp, "k"), 2);
    assert_int_equal(mockprov_connection_count(f->mp), 2);

    /* closing every time: the resend fails too, reported as a reset */
    rl.times = 0;
    assert_int_equal(mockprov_add_rule(f->mp, &rl), 0);
    assert_int_equal(send_simple(f, "k2", &r), AIGW_TR_RESET);
    resp_free(&r);
    assert_int_equal(mockprov_count(f->mp, "k2"), 2);
}

static void test_redirect_not_followed(void **state)
{
    tr_fixture *f = *state;
    aigw_transport_response r;
    mockprov *other = mockprov_start(0);
    mockprov_rule rl = rule_of(MOCKPROV_RESPOND, 302);
    char loc[256];
    assert_non_null(other);
    snprintf(loc, sizeof loc, "Location: %s/chat/completions\r\n", mockprov_base_url(other));
    rl.headers = loc;
    rl.body = "{}";
    assert_int_equal(mockprov_add_rule(f->mp, &rl), 0);
    assert_int_equal(send_simple(f, "k", &r), AIGW_TR_OK);
    assert_int_equal(r.status, 302);
    assert_non_null(aigw__hdrs_get(&r.headers, "location"));
    resp_free(&r);
    assert_int_equal(mockprov_count(f->mp, NULL), 1);
    assert_int_equal(mockprov_count(other, NULL), 0);
    assert_int_equal(mockprov_connection_count(other), 0);
    mockprov_stop(other);
}

static void test_huge_too_large(void **state)
{
    tr_fixture *f = *state;
    aigw_transport_response r;
    mockprov_rule rl = rule_of(MOCKPROV_HUGE, 200);
    int64_t t0;
    rl.huge_bytes = 8 * MIB;
    rl.times = 1;
    assert_int_equal(mockprov_add_rule(f->mp, &rl), 0);
    /* the announced length is over the cap: stopped before the body */
    resp_init(&r, 1 * MIB);
    assert_int_equal(send_full(f, f->url, "k", CHAT_BODY, 5000, 1 * MIB, &r), AIGW_TR_TOO_LARGE);
    assert_true(r.body.len <= 1 * MIB);
    resp_free(&r);

    /* the cap found while reading (only the response's max_body knows it):
     * a 1 GiB body must not be read to its end */
    rl.huge_bytes = 1024 * MIB;
    assert_int_equal(mockprov_add_rule(f->mp, &rl), 0);
    resp_init(&r, 1 * MIB);
    t0 = now_ms();
    assert_int_equal(send_full(f, f->url, "k", CHAT_BODY, 20000, 0, &r), AIGW_TR_TOO_LARGE);
    assert_true(now_ms() - t0 < 3000);
    assert_true(r.body.len <= 1 * MIB);
    resp_free(&r);

    /* and the transport is fine afterwards */
    assert_int_equal(send_simple(f, "k", &r), AIGW_TR_OK);
    assert_int_equal(r.status, 200);
    resp_free(&r);
}

/* A header block past the transport's cap is cut short as too large. */
static void test_header_flood(void **state)
{
    tr_fixture *f = *state;
    aigw_transport_response r;
    mockprov_rule rl = rule_of(MOCKPROV_RESPOND, 200);
    size_t i, n = 8000, len = 0; /* 432 KB */
    char *pad = malloc(n * 64 + 1);
    assert_non_null(pad);
    for (i = 0; i < n; i++)
        len += (size_t)sprintf(pad + len, "X-Pad-%04zu: %040d\r\n", i, 0);
    rl.headers = pad;
    rl.times = 1;
    assert_int_equal(mockprov_add_rule(f->mp, &rl), 0);
    free(pad);
    assert_int_equal(send_simple(f, "k", &r), AIGW_TR_TOO_LARGE);
    resp_free(&r);
    assert_int_equal(send_simple(f, "k", &r), AIGW_TR_OK);
    assert_int_equal(r.headers.n, 1); /* content-type (content-length: hop-by-hop) */
    resp_free(&r);
}

static void test_keepalive(void **state)
{
    tr_fixture *f = *state;
    int i;
    for (i = 0; i < 20; i++) {
        aigw_transport_response r;
        assert_int_equal(send_simple(f, "k", &r), AIGW_TR_OK);
        assert_int_equal(r.status, 200);
        resp_free(&r);
    }
    assert_int_equal(mockprov_count(f->mp, "k"), 20);
    assert_true(mockprov_connection_count(f->mp) <= 2);
    assert_true(mockprov_connection_count(f->mp) >= 1);
}

/* One pooled handle, request after request: the options it is left with
 * are skipped only when they are the request's (set_opts), so each request
 * goes out as asked - the URL, the method back to POST after a GET or a
 * custom one, a body changed in place at the same address, another body of
 * another length, the header list and the timeouts. */
static void sent(tr_fixture *f, long i, const char *want_line, const char *want_model)
{
    char line[96], key[64], model[64];
    assert_int_equal(mockprov_log_get(f->mp, i, line, sizeof line, key, sizeof key, model,
                                      sizeof model),
                     0);
    assert_string_equal(line, want_line);
    assert_string_equal(model, want_model);
}

static aigw_transport_result send_req(tr_fixture *f, aigw_transport_request *req)
{
    aigw_transport_response r;
    aigw_transport_result tr;
    resp_init(&r, 0);
    tr = f->vt.send(f->ud, req, &r);
    if (tr == AIGW_TR_OK)
        assert_true(r.status > 0);
    resp_free(&r);
    return tr;
}

static void test_options_follow_requests(void **state)
{
    tr_fixture *f = *state;
    char body[64], url2[160], raw[2048];
    aigw_header h[2] = {{"content-type", "application/json"}, {"authorization", "Bearer k1"}};
    aigw_header h2[2] = {{"content-type", "application/json"}, {"authorization", "Bearer k2"}};
    aigw_header bad[2] = {{"content-type", "application/json"}, {"x: y", "z"}};
    aigw_header folded[1] = {{"x-a", "b: c"}}, tricky[1] = {{"x-a: b", "c"}};
    aigw_transport_request req;
    long n;

    snprintf(url2, sizeof url2, "%s/messages", mockprov_base_url(f->mp));
    memset(&req, 0, sizeof req);
    req.url = f->url;
    req.headers = h;
    req.n_headers = 2;
    req.timeout_ms = 5000;
    snprintf(body, sizeof body, "{\"model\":\"m-a\"}");
    req.body = body;
    req.body_len = strlen(body);
    assert_int_equal(send_req(f, &req), AIGW_TR_OK);
    /* the same address, other bytes */
    snprintf(body, sizeof body, "{\"model\":\"m-b\"}");
    assert_int_equal(send_req(f, &req), AIGW_TR_OK);
    /* the same address, another length */
    snprintf(body, sizeof body, "{\"model\":\"m-long\"}");
    req.body_len = strlen(body);
    assert_int_equal(send_req(f, &req), AIGW_TR_OK);
    req.method = "GET";
    req.body = NULL;
    req.body_len = 0;
    assert_int_equal(send_req(f, &req), AIGW_TR_OK);
    req.method = NULL; /* POST, the same body as before the GET */
    req.body = body;
    req.body_len = strlen(body);
    assert_int_equal(send_req(f, &req), AIGW_TR_OK);
    req.method = "PUT";
    assert_int_equal(send_req(f, &req), AIGW_TR_OK);
    req.method = "POST";
    req.url = url2;
    assert_int_equal(send_req(f, &req), AIGW_TR_OK);
    req.url = f->url;
    req.headers = h2; /* another key: another header list */
    req.timeout_ms = 4000;
    req.connect_timeout_ms = 2000;
    assert_int_equal(send_req(f, &req), AIGW_TR_OK);
    /* a bad name after good ones: refused, nothing sent, the handle kept */
    req.headers = bad;
    assert_int_equal(send_req(f, &req), AIGW_TR_OTHER);
    req.headers = h2;
    assert_int_equal(send_req(f, &req), AIGW_TR_OK);

    n = mockprov_log_count(f->mp);
    assert_int_equal(n, 9);
    sent(f, 0, "POST /v1/chat/completions", "m-a");
    sent(f, 1, "POST /v1/chat/completions", "m-b");
    sent(f, 2, "POST /v1/chat/completions", "m-long");
    sent(f, 3, "GET /v1/chat/completions", "");
    sent(f, 4, "POST /v1/chat/completions", "m-long");
    sent(f, 5, "PUT /v1/chat/completions", "m-long");
    sent(f, 6, "POST /v1/messages", "m-long");
    sent(f, 7, "POST /v1/chat/completions", "m-long");
    assert_int_equal(mockprov_count(f->mp, "k1"), 7);
    assert_int_equal(mockprov_count(f->mp, "k2"), 2);
    assert_true(mockprov_log_raw(f->mp, 3, raw, sizeof raw) > 0);
    assert_null(strstr(raw, "Content-Length"));
    assert_true(mockprov_log_raw(f->mp, 8, raw, sizeof raw) > 0);
    assert_non_null(strstr(raw, "Bearer k2"));
    assert_null(strstr(raw, "x: y"));

    /* a name that runs into the last list's value ("x-a: b" + ": " + "c"
     * is the line "x-a: b: c") is no token: refused, not matched */
    req.headers = folded;
    req.n_headers = 1;
    assert_int_equal(send_req(f, &req), AIGW_TR_OK);
    req.headers = tricky;
    assert_int_equal(send_req(f, &req), AIGW_TR_OTHER);
    assert_int_equal(mockprov_log_count(f->mp), 10);
    assert_int_equal(mockprov_connection_count(f->mp), 1);

    /* a value that only grows or shrinks past the last one's bytes, and
     * the same headers in another order, are other headers */
    {
        aigw_header k10[2] = {{"content-type", "application/json"}, {"authorization", "Bearer k10"}};
        aigw_header swapped[2] = {{"authorization", "Bearer k1"}, {"content-type", "application/json"}};
        req.n_headers = 2;
        req.headers = h;
        assert_int_equal(send_req(f, &req), AIGW_TR_OK);
        req.headers = k10;
        assert_int_equal(send_req(f, &req), AIGW_TR_OK);
        req.headers = h;
        assert_int_equal(send_req(f, &req), AIGW_TR_OK);
        req.headers = swapped;
        assert_int_equal(send_req(f, &req), AIGW_TR_OK);
        assert_int_equal(mockprov_log_count(f->mp), 14);
        assert_true(mockprov_log_raw(f->mp, 11, raw, sizeof raw) > 0);
        assert_non_null(strstr(raw, "Bearer k10\r\n"));
        assert_true(mockprov_log_raw(f->mp, 12, raw, sizeof raw) > 0);
        assert_non_null(strstr(raw, "Bearer k1\r\n"));
        assert_true(mockprov_log_raw(f->mp, 13, raw, sizeof raw) > 0);
        assert_non_null(strstr(raw, "authorization: Bearer k1"));
        assert_non_null(strstr(raw, "content-type:"));
        assert_true(strstr(raw, "authorization: Bearer k1") < strstr(raw, "content-type:"));
    }
}

typedef struct worker {
    tr_fixture *f;
    int ok;
    char key[16];
} worker;

static void *worker_main(void *arg)
{
    worker *w = arg;
    int i;
    for (i = 0; i < 50; i++) {
        aigw_transport_response r;
        if (send_simple(w->f, w->key, &r) == AIGW_TR_OK && r.status == 200 &&
            strstr(r.body.data, "Hello from gpt-4o"))
            w->ok++;
        resp_free(&r);
    }
    return NULL;
}

static void test_concurrency(void **state)
{
    tr_fixture *f = *state;
    pthread_t th[4];
    worker w[4];
    int i;
    for (i = 0; i < 4; i++) {
        w[i].f = f;
        w[i].ok = 0;
        snprintf(w[i].key, sizeof w[i].key, "key-%d", i);
        assert_int_equal(pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
    }
    for (i = 0; i < 4; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(w[i].ok, 50);
        assert_int_equal(mockprov_count(f->mp, w[i].key), 50);
    }
    assert_int_equal(mockprov_count(f->mp, NULL), 200);
    assert_int_equal(mockprov_log_count(f->mp), 200);
    /* one connection per handle, at most one handle per thread */
    assert_true(mockprov_connection_count(f->mp) <= 4);
}

static void test_bad_requests(void **state)
{
    tr_fixture *f = *state;
    aigw_transport_response r;
    aigw_transport_request req;
    aigw_header bad = {"x-bad", "a\r\nInjected: 1"};
    aigw_header badname = {"x bad", "a"};
    char url[160];

    memset(&req, 0, sizeof req);
    resp_init(&r, 0);
    assert_int_equal(f->vt.send(f->ud, NULL, &r), AIGW_TR_OTHER);
    assert_int_equal(f->vt.send(f->ud, &req, &r), AIGW_TR_OTHER); /* no url */
    req.url = f->url;
    assert_int_equal(f->vt.send(f->ud, &req, NULL), AIGW_TR_OTHER);
    req.body_len = 3; /* body NULL */
    assert_int_equal(f->vt.send(f->ud, &req, &r), AIGW_TR_OTHER);
    req.body_len = 0;
    req.headers = &bad;
    req.n_headers = 1;
    assert_int_equal(f->vt.send(f->ud, &req, &r), AIGW_TR_OTHER);
    req.headers = &badname;
    assert_int_equal(f->vt.send(f->ud, &req, &r), AIGW_TR_OTHER);
    req.headers = NULL;
    req.n_headers = 1; /* headers NULL */
    assert_int_equal(f->vt.send(f->ud, &req, &r), AIGW_TR_OTHER);
    req.n_headers = 0;
    req.method = "PO ST";
    assert_int_equal(f->vt.send(f->ud, &req, &r), AIGW_TR_OTHER);
    req.method = NULL; /* POST */
    assert_int_equal(mockprov_count(f->mp, NULL), 0);

    /* an empty POST still works */
    req.timeout_ms = 5000;
    assert_int_equal(f->vt.send(f->ud, &req, &r), AIGW_TR_OK);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    assert_int_equal(mockprov_count(f->mp, NULL), 1);

    /* only http and https */
    resp_init(&r, 0);
    req.url = "file:///etc/passwd";
    assert_int_equal(f->vt.send(f->ud, &req, &r), AIGW_TR_PROTOCOL);
    req.url = "ftp://127.0.0.1/x";
    assert_int_equal(f->vt.send(f->ud, &req, &r), AIGW_TR_PROTOCOL);
    req.url = "not a url";
    assert_true(f->vt.send(f->ud, &req, &r) != AIGW_TR_OK);
    snprintf(url, sizeof url, "http://no-such-host.invalid:%d/", mockprov_port(f->mp));
    req.url = url;
    req.timeout_ms = 3000;
    {
        aigw_transport_result tr = f->vt.send(f->ud, &req, &r);
        /* resolvers in sandboxes may time out rather than say NXDOMAIN */
        assert_true(tr == AIGW_TR_DNS || tr == AIGW_TR_TIMEOUT);
    }
    assert_null(r.body.data);
    resp_free(&r);
}

static void test_expect_continue(void **state)
{
    tr_fixture *f = *state;
    aigw_transport_response r;
    aigw_transport_request req;
    aigw_header h[2] = {{"authorization", "Bearer k"}, {"expect", "100-continue"}};
    memset(&req, 0, sizeof req);
    req.method = "POST";
    req.url = f->url;
    req.headers = h;
    req.n_headers = 2;
    req.body = CHAT_BODY;
    req.body_len = strlen(CHAT_BODY);
    req.timeout_ms = 5000;
    resp_init(&r, 0);
    assert_int_equal(f->vt.send(f->ud, &req, &r), AIGW_TR_OK);
    assert_int_equal(r.status, 200);
    /* only the final answer's headers (its content-length: hop-by-hop) */
    assert_int_equal(r.headers.n, 1);
    assert_string_equal(r.headers.v[0].name, "content-type");
    resp_free(&r);
}

/* ---- the mock's rules ---- */

static void test_rules(void **state)
{
    tr_fixture *f = *state;
    aigw_transport_response r;
    mockprov_rule rl;
    aigw_transport_request req;
    aigw_header xh = {"x-api-key", "k-anthropic"};
    aigw_header gh = {"x-goog-api-key", "k-google"};
    int64_t t0, dt;
    int i;

    /* times: the first two answers are 500, then the default */
    rl = rule_of(MOCKPROV_RESPOND, 500);
    rl.times = 2;
    rl.body = "{\"error\":{}}";
    assert_int_equal(mockprov_add_rule(f->mp, &rl), 0);
    for (i = 0; i < 3; i++) {
        assert_int_equal(send_simple(f, "k", &r), AIGW_TR_OK);
        assert_int_equal(r.status, i < 2 ? 500 : 200);
        resp_free(&r);
    }
    mockprov_reset(f->mp);
    assert_int_equal(mockprov_count(f->mp, NULL), 0);
    assert_int_equal(mockprov_log_count(f->mp), 0);

    /* key match: Bearer, x-api-key and x-goog-api-key */
    rl = rule_of(MOCKPROV_RESPOND, 401);
    rl.key = "k-bad";
    assert_int_equal(mockprov_add_rule(f->mp, &rl), 0);
    rl.key = "k-anthropic";
    rl.status = 529;
    assert_int_equal(mockprov_add_rule(f->mp, &rl), 0);
    rl.key = "k-google";
    rl.status = 503;
    assert_int_equal(mockprov_add_rule(f->mp, &rl), 0);
    assert_int_equal(send_simple(f, "k-bad", &r), AIGW_TR_OK);
    assert_int_equal(r.status, 401);
    resp_free(&r);
    assert_int_equal(send_simple(f, "k-good", &r), AIGW_TR_OK);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    memset(&req, 0, sizeof req);
    req.url = f->url;
    req.body = CHAT_BODY;
    req.body_len = strlen(CHAT_BODY);
    req.timeout_ms = 5000;
    req.headers = &xh;
    req.n_headers = 1;
    resp_init(&r, 0);
    assert_int_equal(f->vt.send(f->ud, &req, &r), AIGW_TR_OK);
    assert_int_equal(r.status, 529);
    resp_free(&r);
    req.headers = &gh;
    resp_init(&r, 0);
    assert_int_equal(f->vt.send(f->ud, &req, &r), AIGW_TR_OK);
    assert_int_equal(r.status, 503);
    resp_free(&r);
    assert_int_equal(mockprov_count(f->mp, "k-bad"), 1);
    assert_int_equal(mockprov_count(f->mp, "k-good"), 1);
    assert_int_equal(mockprov_count(f->mp, "k-anthropic"), 1);
    assert_int_equal(mockprov_count(f->mp, "k-google"), 1);
    assert_int_equal(mockprov_count(f->mp, "nobody"), 0);
    assert_int_equal(mockprov_count(f->mp, NULL), 4);
    mockprov_reset(f->mp);

    /* model match, with a delay */
    rl = rule_of(MOCKPROV_RESPOND, 0);
    rl.model = "slow-model";
    rl.delay_ms = 200;
    rl.body = "{\"slow\":true}";
    assert_int_equal(mockprov_add_rule(f->mp, &rl), 0);
    t0 = now_ms();
    assert_int_equal(send_simple(f, "k", &r), AIGW_TR_OK); /* gpt-4o: no match */
    assert_true(now_ms() - t0 < 150);
    assert_string_not_equal(r.body.data, "{\"slow\":true}");
    resp_free(&r);
    resp_init(&r, 0);
    t0 = now_ms();
    assert_int_equal(send_full(f, f->url, "k", "{\"model\":\"slow-model\"}", 5000, 0, &r),
                     AIGW_TR_OK);
    dt = now_ms() - t0;
    assert_true(dt >= 190);
    assert_true(dt < 1000);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body.data, "{\"slow\":true}");
    resp_free(&r);

    /* key and model together */
    mockprov_reset(f->mp);
    rl = rule_of(MOCKPROV_RESPOND, 404);
    rl.key = "k1";
    rl.model = "m1";
    assert_int_equal(mockprov_add_rule(f->mp, &rl), 0);
    resp_init(&r, 0);
    assert_int_equal(send_full(f, f->url, "k1", "{\"model\":\"m2\"}", 5000, 0, &r), AIGW_TR_OK);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    resp_init(&r, 0);
    assert_int_equal(send_full(f, f->url, "k1", "{\"model\":\"m1\"}", 5000, 0, &r), AIGW_TR_OK);
    assert_int_equal(r.status, 404);
    resp_free(&r);

    /* bad rules */
    assert_int_equal(mockprov_add_rule(NULL, &rl), -1);
    assert_int_equal(mockprov_add_rule(f->mp, NULL), -1);
    rl.times = -1;
    assert_int_equal(mockprov_add_rule(f->mp, &rl), -1);
}

/* Chunked request bodies, pipelining on one connection, and the size cap,
 * spoken to the mock directly. */
static void test_mock_wire(void **state)
{
    tr_fixture *f = *state;
    static char buf[65536];
    char line[64], key[64], model[64];
    int fd = raw_connect(mockprov_port(f->mp));
    size_t n;

    send_str(fd, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                 "Authorization: Bearer chunky\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "5\r\n{\"mod\r\n"
                 "c;ext=1\r\nel\":\"chunk-m\r\n"
                 "2\r\n\"}\r\n"
                 "0\r\n\r\n");
    n = raw_read_answer(fd, buf, sizeof buf);
    assert_true(n > 0);
    assert_memory_equal(buf, "HTTP/1.1 200 OK\r\n", 17);
    assert_non_null(strstr(buf, "\"model\":\"chunk-m\""));
    assert_int_equal(mockprov_log_get(f->mp, 0, line, sizeof line, key, sizeof key, model,
                                      sizeof model),
                     0);
    assert_string_equal(key, "chunky");
    assert_string_equal(model, "chunk-m");

    /* the same connection, Content-Length framing, x-api-key */
    send_str(fd, "POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: ak\r\n"
                 "Content-Length: 17\r\n\r\n{\"model\":\"claude\"}");
    n = raw_read_answer(fd, buf, sizeof buf);
    assert_true(n > 0);
    assert_non_null(strstr(buf, "Hello from claude"));
    assert_int_equal(mockprov_log_get(f->mp, 1, line, sizeof line, key, sizeof key, model,
                                      sizeof model),
                     0);
    assert_string_equal(line, "POST /v1/messages");
    assert_string_equal(key, "ak");
    assert_int_equal(mockprov_connection_count(f->mp), 1);

    /* over 16 MiB: 413 and the connection is closed */
    send_str(fd, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                 "Content-Length: 16777217\r\n\r\n");
    n = raw_read_answer(fd, buf, sizeof buf);
    assert_true(n > 0);
    assert_memory_equal(buf, "HTTP/1.1 413 ", 13);
    assert_int_equal(recv(fd, buf, sizeof buf, 0), 0);
    close(fd);

    /* garbage: 400 */
    fd = raw_connect(mockprov_port(f->mp));
    send_str(fd, "HELLO\r\n\r\n");
    n = raw_read_answer(fd, buf, sizeof buf);
    assert_true(n > 0);
    assert_memory_equal(buf, "HTTP/1.1 400 ", 13);
    close(fd);
}

typedef struct silent_arg {
    tr_fixture *f;
    aigw_transport_result tr;
} silent_arg;

static void *silent_main(void *arg)
{
    silent_arg *a = arg;
    aigw_transport_response r;
    resp_init(&r, 0);
    a->tr = send_full(a->f, a->f->url, "k", CHAT_BODY, 10000, 0, &r);
    resp_free(&r);
    return NULL;
}

static void test_stop_prompt(void **state)
{
    tr_fixture *f = *state;
    mockprov_rule rl = rule_of(MOCKPROV_SILENT, 0);
    mockprov_rule slow = rule_of(MOCKPROV_RESPOND, 200);
    silent_arg a;
    pthread_t th;
    int64_t t0;
    int fd, i;

    slow.key = "delayed";
    slow.delay_ms = 60000;
    assert_int_equal(mockprov_add_rule(f->mp, &slow), 0);
    assert_int_equal(mockprov_add_rule(f->mp, &rl), 0);
    a.f = f;
    a.tr = AIGW_TR_OK;
    assert_int_equal(pthread_create(&th, NULL, silent_main, &a), 0);
    /* an idle connection, and one waiting in a 60 s delay, as well */
    fd = raw_connect(mockprov_port(f->mp));
    {
        int fd2 = raw_connect(mockprov_port(f->mp));
        send_str(fd2, "POST / HTTP/1.1\r\nHost: x\r\nx-api-key: delayed\r\n"
                      "Content-Length: 2\r\n\r\n{}");
        for (i = 0; i < 500 && mockprov_count(f->mp, NULL) < 2; i++)
            sleep_ms(5);
        assert_int_equal(mockprov_count(f->mp, NULL), 2);
        t0 = now_ms();
        mockprov_stop(f->mp);
        f->mp = NULL;
        assert_true(now_ms() - t0 < 500);
        close(fd2);
    }
    close(fd);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(a.tr, AIGW_TR_RESET);
    mockprov_stop(NULL);
}

/* ---- send_stream ---- */

static const char STREAM_BODY[] = "{\"model\":\"gpt-4o\",\"stream\":true,\"messages\":[{\"role\":"
                                  "\"user\",\"content\":\"hi\"}]}";

#define SINK_MAX_CALLS 64

/* What on_data saw. */
typedef struct sink {
    aigw_transport_response *resp;
    char *data;
    size_t len;
    size_t n_calls;
    size_t call_len[SINK_MAX_CALLS];
    int64_t call_ms[SINK_MAX_CALLS]; /* arrival, monotonic */
    int64_t ret;        /* what on_data returns ... */
    size_t stop_at;     /* ... except at this call (1-based; 0 never) */
    int64_t stop_ret;   /* where it returns this */
    /* the answer as on_data first saw it */
    int first_status;
    size_t first_n_headers;
    char first_ctype[64];
    char first_custom[64];
    bool body_empty_at_first;
} sink;

static void sink_init(sink *k, aigw_transport_response *resp, int64_t ret)
{
    memset(k, 0, sizeof *k);
    k->resp = resp;
    k->ret = ret;
}

static int64_t sink_on_data(void *ctx, const char *data, size_t len)
{
    sink *k = ctx;
    char *p;
    if (k->n_calls == 0) {
        const char *ct = aigw__hdrs_get(&k->resp->headers, "content-type");
        const char *xs = aigw__hdrs_get(&k->resp->headers, "x-stream");
        k->first_status = k->resp->status;
        k->first_n_headers = k->resp->headers.n;
        snprintf(k->first_ctype, sizeof k->first_ctype, "%s", ct ? ct : "");
        snprintf(k->first_custom, sizeof k->first_custom, "%s", xs ? xs : "");
        k->body_empty_at_first = k->resp->body.len == 0;
    }
    if (k->n_calls < SINK_MAX_CALLS) {
        k->call_len[k->n_calls] = len;
        k->call_ms[k->n_calls] = now_ms();
    }
    k->n_calls++;
    p = realloc(k->data, k->len + len + 1);
    if (!p)
        return -1;
    memcpy(p + k->len, data, len);
    k->data = p;
    k->len += len;
    k->data[k->len] = '\0';
    if (k->stop_at && k->n_calls == k->stop_at)
        return k->stop_ret;
    return k->ret;
}

static void sink_free(sink *k)
{
    free(k->data);
    k->data = NULL;
}

static aigw_transport_result stream_full(tr_fixture *f, const char *key, int64_t timeout_ms,
                                         int64_t idle_ms, aigw_transport_response *resp, sink *k)
{
    char auth[256];
    aigw_header h[2];
    aigw_transport_request req;
    snprintf(auth, sizeof auth, "Bearer %s", key);
    h[0].name = "content-type";
    h[0].value = "application/json";
    h[1].name = "authorization";
    h[1].value = auth;
    memset(&req, 0, sizeof req);
    req.method = "POST";
    req.url = f->url;
    req.headers = h;
    req.n_headers = 2;
    req.body = STREAM_BODY;
    req.body_len = strlen(STREAM_BODY);
    req.timeout_ms = timeout_ms;
    req.connect_timeout_ms = timeout_ms;
    req.stream = 1;
    req.idle_timeout_ms = idle_ms;
    resp_init(resp, 0);
    return f->vt.send_stream(f->ud, &req, resp, sink_on_data, k);
}

static mockprov_rule stream_rule(const char *const *chunks, int delay_ms, mockprov_stream_end end)
{
    mockprov_rule r = rule_of(MOCKPROV_STREAM, 0);
    r.chunks = chunks;
    r.chunk_delay_ms = delay_ms;
    r.stream_end = end;
    return r;
}

/* Each chunk reaches on_data as it arrives, in order and byte-identical,
 * after the status and headers; the first long before the end. */
static void test_stream_chunks(void **state)
{
    tr_fixture *f = *state;
    static const char *const chunks[] = {
        "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n",
        "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n",
        "data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\ndata: [DONE]\n\n", NULL};
    mockprov_rule rl = stream_rule(chunks, 200, MOCKPROV_END_OK);
    aigw_transport_response r;
    char all[1024] = "";
    size_t i, at = 0;
    int64_t t0, t_end;
    sink k;
    rl.headers = "X-Stream: yes\r\n";
    assert_non_null(f->vt.send_stream);
    assert_int_equal(mockprov_add_rule(f->mp, &rl), 0);

    sink_init(&k, &r, INT64_MAX); /* a budget that must not overflow */
    t0 = now_ms();
    assert_int_equal(stream_full(f, "k", 10000, 5000, &r, &k), AIGW_TR_OK);
    t_end = now_ms();
    assert_int_equal(r.status, 200);
    assert_int_equal(k.n_calls, 3);
    for (i = 0; i < 3; i++) {
        assert_int_equal(k.call_len[i], strlen(chunks[i]));
        assert_memory_equal(k.data + at, chunks[i], strlen(chunks[i]));
        at += strlen(chunks[i]);
        strcat(all, chunks[i]);
    }
    assert_int_equal(k.len, strlen(all));
    assert_string_equal(k.data, all);
    /* as they arrived: ~200, ~400, ~600 ms */
    assert_true(k.call_ms[0] - t0 >= 180);
    assert_true(k.call_ms[1] - k.call_ms[0] >= 150);
    assert_true(k.call_ms[2] - k.call_ms[1] >= 150);
    assert_true(t_end - k.call_ms[0] >= 350);
    assert_true(t_end - k.call_ms[2] < 150);
    /* the answer was complete before the first chunk, the body never kept */
    assert_int_equal(k.first_status, 200);
    assert_string_equal(k.first_ctype, "text/event-stream");
    assert_string_equal(k.first_custom, "yes");
    assert_int_equal(k.first_n_headers, 2); /* transfer-encoding: hop-by-hop */
    assert_null(aigw__hdrs_get(&r.headers, "transfer-encoding"));
    assert_true(k.body_empty_at_first);
    assert_int_equal(r.body.len, 0);
    resp_free(&r);
    sink_free(&k);
    assert_int_equal(mockprov_count(f->mp, "k"), 1);
}

/* A chunk bigger than libcurl's buffer comes in several calls; a stream
 * with no chunk at all is answered without any. */
static void test_stream_large_and_empty(void **state)
{
    tr_fixture *f = *state;
    char *big = malloc(200001);
    const char *chunks[4];
    mockprov_rule rl;
    aigw_transport_response r;
    sink k;
    size_t i;
    assert_non_null(big);
    for (i = 0; i < 200000; i++)
        big[i] = (char)('a' + i % 26);
    big[200000] = '\0';
    chunks[0] = "data: x\n\n";
    chunks[1] = ""; /* skipped by the mock */
    chunks[2] = big;
    chunks[3] = NULL;
    rl = stream_rule(chunks, 0, MOCKPROV_END_OK);
    rl.times = 1;
    assert_int_equal(mockprov_add_rule(f->mp, &rl), 0);
    free(big); /* the rule holds copies */

    sink_init(&k, &r, 1000);
    assert_int_equal(stream_full(f, "k", 5000, 1000, &r, &k), AIGW_TR_OK);
    assert_int_equal(k.len, 200009);
    assert_memory_equal(k.data, "data: x\n\n", 9);
    for (i = 0; i < 200000; i++)
        if (k.data[9 + i] != (char)('a' + i % 26))
            fail_msg("byte %zu differs", i);
    assert_true(k.n_calls >= 3);
    resp_free(&r);
    sink_free(&k);

    chunks[0] = NULL;
    rl = stream_rule(chunks, 0, MOCKPROV_END_OK);
    rl.status = 204;
    rl.times = 1;
    assert_int_equal(mockprov_add_rule(f->mp, &rl), 0);
    sink_init(&k, &r, 1000);
    assert_int_equal(stream_full(f, "k", 5000, 1000, &r, &k), AIGW_TR_OK);
    assert_int_equal(r.status, 204);
    assert_int_equal(k.n_calls, 0);
    resp_free(&r);

    rl = stream_rule(chunks, 0, MOCKPROV_END_OK);
    assert_int_equal(mockprov_add_rule(f->mp, &rl), 0);
    sink_init(&k, &r, 1000);
    assert_int_equal(stream_full(f, "k", 5000, 1000, &r, &k), AIGW_TR_OK);
    assert_int_equal(r.status, 200);
    assert_int_equal(k.n_calls, 0);
    assert_string_equal(aigw__hdrs_get(&r.headers, "content-type"), "text/event-stream");
    resp_free(&r);
    assert_int_equal(mockprov_connection_count(f->mp), 1);
}

/* Silence before the first body byte: the request's idle budget, whether
 * nothing at all comes or the headers do. */
static void test_stream_idle_first_byte(void **state)
{
    tr_fixture *f = *state;
    static const char *const none[] = {NULL};
    mockprov_rule silent = rule_of(MOCKPROV_SILENT, 0);
    mockprov_rule stall = stream_rule(none, 0, MOCKPROV_END_STALL);
    aigw_transport_response r;
    int64_t t0, dt;
    sink k;

    silent.times = 1;
    assert_int_equal(mockprov_add_rule(f->mp, &silent), 0);
    assert_int_equal(mockprov_add_rule(f->mp, &stall), 0);
    sink_init(&k, &r, 5000);
    t0 = now_ms();
    assert_int_equal(stream_full(f, "k", 10000, 300, &r, &k), AIGW_TR_TIMEOUT);
    dt = now_ms() - t0;
    assert_true(dt >= 295);
    assert_true(dt < 600);
    assert_int_equal(k.n_calls, 0);
    resp_free(&r);

    sink_init(&k, &r, 5000);
    t0 = now_ms();
    assert_int_equal(stream_full(f, "k", 10000, 300, &r, &k), AIGW_TR_TIMEOUT);
    dt = now_ms() - t0;
    assert_true(dt >= 295);
    assert_true(dt < 600);
    assert_int_equal(k.n_calls, 0);
    assert_int_equal(r.headers.n, 1); /* the headers came (content-type) */
    resp_free(&r);

    /* no idle budget: only the overall timeout */
    sink_init(&k, &r, 5000);
    t0 = now_ms();
    assert_int_equal(stream_full(f, "k", 400, 0, &r, &k), AIGW_TR_TIMEOUT);
    dt = now_ms() - t0;
    assert_true(dt >= 395);
    assert_true(dt < 700);
    resp_free(&r);
    assert_int_equal(mockprov_connection_count(f->mp), 3);
}

/* The budget on_data returns replaces the request's. */
static void test_stream_idle_budget(void **state)
{
    tr_fixture *f = *state;
    static const char *const chunks[] = {"data: 1\n\n", "data: 2\n\n", NULL};
    mockprov_rule rl = stream_rule(chunks, 50, MOCKPROV_END_STALL);
    aigw_transport_response r;
    int64_t t_end, dt;
    sink k;
    assert_int_equal(mockprov_add_rule(f->mp, &rl), 0);

    sink_init(&k, &r, 200);
    assert_int_equal(stream_full(f, "k", 10000, 3000, &r, &k), AIGW_TR_TIMEOUT);
    t_end = now_ms();
    assert_int_equal(k.n_calls, 2);
    assert_string_equal(k.data, "data: 1\n\ndata: 2\n\n");
    dt = t_end - k.call_ms[1];
    assert_true(dt >= 195);
    assert_true(dt < 450);
    resp_free(&r);
    sink_free(&k);

    /* a longer budget than the request's first-byte one is honoured too */
    sink_init(&k, &r, 700);
    assert_int_equal(stream_full(f, "k", 10000, 300, &r, &k), AIGW_TR_TIMEOUT);
    dt = now_ms() - k.call_ms[1];
    assert_true(dt >= 695);
    assert_true(dt < 1000);
    assert_int_equal(k.n_calls, 2);
    resp_free(&r);
    sink_free(&k);
    /* the stalled connection was dropped, not reused */
    assert_int_equal(mockprov_connection_count(f->mp), 2);
}

/* The overall timeout ends a stream that keeps talking. */
static void test_stream_overall_timeout(void **state)
{
    tr_fixture *f = *state;
    static const char *const chunks[] = {"a", "b", "c", "d", "e", "f", "g", "h", "i", "j",
                                         "k", "l", "m", "n", "o", "p", "q", "r", "s", "t", NULL};
    mockprov_rule rl = stream_rule(chunks, 100, MOCKPROV_END_OK);
    aigw_transport_response r;
    int64_t t0, dt;
    sink k;
    assert_int_equal(mockprov_add_rule(f->mp, &rl), 0);
    sink_init(&k, &r, 1000);
    t0 = now_ms();
    assert_int_equal(stream_full(f, "k", 450, 1000, &r, &k), AIGW_TR_TIMEOUT);
    dt = now_ms() - t0;
    assert_true(dt >= 445);
    assert_true(dt < 700);
    assert_true(k.n_calls >= 2 && k.n_calls <= 5);
    assert_memory_equal(k.data, "abcde", k.len);
    resp_free(&r);
    sink_free(&k);
}

/* An obsolete folded header line (RFC 9112 5.2) continues the header
 * before it, whole or streamed. */
static void test_folded_header(void **state)
{
    tr_fixture *f = *state;
    aigw_transport_response r;
    mockprov_rule rl = rule_of(MOCKPROV_RESPOND, 200);
    sink k;
    rl.headers = "X-Folded: first\r\n \t second\r\n\tthird\r\nX-After: z\r\n";
    rl.body = "{\"ok\":true}";
    assert_int_equal(mockprov_add_rule(f->mp, &rl), 0);
    assert_int_equal(send_simple(f, "k", &r), AIGW_TR_OK);
    assert_string_equal(aigw__hdrs_get(&r.headers, "x-folded"), "first second third");
    assert_string_equal(aigw__hdrs_get(&r.headers, "x-after"), "z");
    resp_free(&r);
    sink_init(&k, &r, 1000);
    assert_int_equal(stream_full(f, "k", 5000, 1000, &r, &k), AIGW_TR_OK);
    assert_string_equal(aigw__hdrs_get(&r.headers, "x-folded"), "first second third");
    resp_free(&r);
    sink_free(&k);
}

/* The hop-by-hop headers, in any case, and the lines folded into them are
 * left out; names that only begin like them are kept. */
static void test_hop_by_hop_headers(void **state)
{
    static const char *const kept[] = {"x-before",  "connectionz",       "content-lengthy",
                                       "tex",       "trailers",          "upgrade-x",
                                       "transfer_encoding", "x-after"};
    tr_fixture *f = *state;
    aigw_transport_response r;
    mockprov_rule rl = rule_of(MOCKPROV_RESPOND, 200);
    sink k;
    size_t i;
    rl.headers = "X-Before: 1\r\nCONNECTION: keep-alive\r\nKeep-Alive: timeout=5\r\n"
                 "TE: trailers\r\nUpgrade: h2c\r\n\tfolded-into-upgrade\r\n"
                 "Proxy-Connection: keep-alive\r\ntrailer: x-t\r\nConnectionz: kept\r\n"
                 "Content-Lengthy: kept\r\nTEx: kept\r\nTrailers: kept\r\n"
                 "Upgrade-X: kept\r\n continued\r\nKeep-Alive : spaced\r\n"
                 "Upgrade\t: tabbed\r\nTrailer  : two spaces\r\n\tand folded\r\n"
                 "Transfer_Encoding: kept\r\nX-After: 2\r\n";
    rl.body = "{\"ok\":true}";
    assert_int_equal(mockprov_add_rule(f->mp, &rl), 0);
    assert_int_equal(send_simple(f, "k", &r), AIGW_TR_OK);
    /* content-type, and the kept ones in order */
    assert_int_equal(r.headers.n, 1 + sizeof kept / sizeof *kept);
    assert_string_equal(r.headers.v[0].name, "content-type");
    for (i = 0; i < sizeof kept / sizeof *kept; i++)
        assert_string_equal(r.headers.v[1 + i].name, kept[i]);
    assert_string_equal(aigw__hdrs_get(&r.headers, "upgrade-x"), "kept continued");
    assert_string_equal(aigw__hdrs_get(&r.headers, "x-after"), "2");
    resp_free(&r);
    sink_init(&k, &r, 1000);
    assert_int_equal(stream_full(f, "k", 5000, 1000, &r, &k), AIGW_TR_OK);
    assert_null(aigw__hdrs_get(&r.headers, "transfer-encoding"));
    assert_null(aigw__hdrs_get(&r.headers, "keep-alive"));
    assert_string_equal(aigw__hdrs_get(&r.headers, "upgrade-x"), "kept continued");
    resp_free(&r);
    sink_free(&k);
}

/* ---- status lines ---- */

static size_t discard(char *p, size_t size, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return size * n;
}

/* CHAT_BODY POSTed to url by a new raw libcurl handle left to its defaults
 * (the answer discarded); libcurl's result, and the status into *status
 * (-1 when the transfer failed; status may be NULL). */
static CURLcode raw_post(const char *url, long timeout_ms, long *status)
{
    CURLcode rc;
    CURL *h = curl_easy_init();
    assert_non_null(h);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, CHAT_BODY);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
    rc = curl_easy_perform(h);
    if (status) {
        *status = -1;
        if (rc == CURLE_OK)
            curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
    }
    curl_easy_cleanup(h);
    return rc;
}

/* A server that answers each connection it accepts with the next of its
 * answers, verbatim, once the request is in, then closes it. */
typedef struct script_server {
    int fd, port;
    const char *const *answers;
    size_t n;
    pthread_t th;
} script_server;

static void read_request(int fd)
{
    char buf[8192];
    size_t got = 0;
    const char *end = NULL, *cl;
    while (!end && got < sizeof buf - 1) {
        ssize_t k = recv(fd, buf + got, sizeof buf - 1 - got, 0);
        if (k <= 0)
            return;
        got += (size_t)k;
        buf[got] = '\0';
        end = strstr(buf, "\r\n\r\n");
    }
    if (!end)
        return;
    cl = strstr(buf, "Content-Length:"); /* as libcurl writes it */
    if (cl) {
        size_t want = (size_t)(end + 4 - buf) + (size_t)strtoul(cl + 15, NULL, 10);
        while (got < want && got < sizeof buf - 1) {
            ssize_t k = recv(fd, buf + got, sizeof buf - 1 - got, 0);
            if (k <= 0)
                return;
            got += (size_t)k;
        }
    }
}

static void *script_main(void *arg)
{
    script_server *s = arg;
    size_t i;
    for (i = 0; i < s->n; i++) {
        int c = accept(s->fd, NULL, NULL);
        if (c < 0)
            break;
        read_request(c);
        send_str(c, s->answers[i]);
        shutdown(c, SHUT_WR);
        close(c);
    }
    return NULL;
}

static void script_start(script_server *s, const char *const *answers, size_t n)
{
    struct sockaddr_in sa;
    socklen_t sl = sizeof sa;
    memset(s, 0, sizeof *s);
    s->answers = answers;
    s->n = n;
    s->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(s->fd >= 0);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(s->fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(s->fd, 8), 0);
    assert_int_equal(getsockname(s->fd, (struct sockaddr *)&sa, &sl), 0);
    s->port = ntohs(sa.sin_port);
    assert_int_equal(pthread_create(&s->th, NULL, script_main, s), 0);
}

static void script_stop(script_server *s)
{
    pthread_join(s->th, NULL);
    close(s->fd);
}

/* The transport reads the status from the final answer's status line when
 * it has the usual form, and asks libcurl otherwise: for each answer it
 * reports what libcurl's CURLINFO_RESPONSE_CODE says. */
static void test_status_lines(void **state)
{
    static const char *const answers[] = {
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
        "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 2\r\n\r\n{}",
        "HTTP/1.0 404 Not Found\r\nContent-Length: 2\r\n\r\n{}",
        "HTTP/1.1 503\r\nContent-Length: 2\r\n\r\n{}",
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}",
        ("HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
         "HTTP/1.1 299 Odd\r\nContent-Length: 2\r\n\r\n{}"),
        "HTTP/1.1 999 Last\r\nContent-Length: 2\r\n\r\n{}",
        "HTTP/1.1 2000 Four digits\r\nContent-Length: 2\r\n\r\n{}",
        "HTTP/1.1  200 Two spaces\r\nContent-Length: 2\r\n\r\n{}",
        "HTTP/1.1 200\tTab\r\nContent-Length: 2\r\n\r\n{}",
        /* status-like lines that are not a block's first line */
        "HTTP/1.1 200 OK\r\nHTTP/1.1 500 x: y\r\nContent-Length: 2\r\n\r\n{}",
        "HTTP/1.1 200 OK\r\nHTTP/A.B 404 x\r\nHTTP/x.1 404\r\nContent-Length: 2\r\n\r\n{}",
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x\r\n\r\n"
         "2\r\n{}\r\n0\r\nHTTP/1.1 503 x: y\r\n\r\n"),
        /* libcurl reads the prefix in any case */
        "HTTP/1.1 100 Continue\r\n\r\nhttp/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}",
        "http/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}",
        "HTTP/A.B 404 Odd version\r\nContent-Length: 2\r\n\r\n{}",
    };
    static const int want[] = {200, 429, 404, 503, 201, 299, 999, 200, 200, 200};
    enum { N = sizeof answers / sizeof *answers };
    tr_fixture *f = *state;
    script_server s;
    char url[64];
    long raw[N];
    size_t i;
    /* raw libcurl first, a fresh handle per answer */
    script_start(&s, answers, N);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/chat/completions", s.port);
    for (i = 0; i < N; i++) {
        (void)raw_post(url, 5000, &raw[i]);
    }
    script_stop(&s);
    /* then the transport: the same answers, one pooled handle */
    script_start(&s, answers, N);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/chat/completions", s.port);
    for (i = 0; i < N; i++) {
        aigw_transport_response r;
        aigw_transport_result tr;
        resp_init(&r, MIB);
        tr = send_full(f, url, "k", CHAT_BODY, 5000, MIB, &r);
        if (raw[i] < 0) {
            assert_int_not_equal(tr, AIGW_TR_OK);
        } else {
            assert_int_equal(tr, AIGW_TR_OK);
            if (r.status != raw[i])
                fail_msg("answer %zu: the transport says %d, libcurl %ld", i, r.status, raw[i]);
        }
        resp_free(&r);
    }
    script_stop(&s);
    /* and the usual ones are what they say */
    for (i = 0; i < 7; i++)
        assert_int_equal(raw[i], want[i]);
}

/* ---- URLs ---- */

/* The request line and Host header of the last request the mock logged,
 * into out ("" when it logged none since n0). */
static void last_target(tr_fixture *f, long n0, char *out, size_t size)
{
    char raw[4096];
    long n = mockprov_log_count(f->mp), len;
    char *host, *end;
    out[0] = '\0';
    if (n <= n0)
        return;
    len = mockprov_log_raw(f->mp, n - 1, raw, sizeof raw);
    assert_true(len > 0);
    raw[(size_t)len < sizeof raw ? (size_t)len : sizeof raw - 1] = '\0';
    end = strstr(raw, "\r\n");
    assert_non_null(end);
    host = strstr(raw, "\r\nHost: ");
    assert_non_null(host);
    *end = '\0';
    end = strstr(host + 2, "\r\n");
    assert_non_null(end);
    *end = '\0';
    snprintf(out, size, "%.240s | %.240s", raw, host + 2);
}

/* The transport parses a URL once per pooled handle (CURLOPT_CURLU) where
 * libcurl alone parses CURLOPT_URL on every transfer: each URL form reaches
 * the server with the request line and Host that raw libcurl sends, one
 * handle going from URL to URL and back, and a URL libcurl refuses fails
 * both ways. */
static void test_url_forms(void **state)
{
    static const char *const forms[] = {
        "http://127.0.0.1:%d/v1/chat/completions",
        "http://127.0.0.1:%d/v1/chat/completions?api-version=2024-06-01&x=a%%20b",
        "http://LOCALHOST:%d/v1/chat/completions",
        "HTTP://127.0.0.1:%d/v1/chat/completions",
        "http://127.0.0.1:%d/v1/./chat/../chat/completions",
        "http://127.0.0.1:%d/v1/chat/completions#fragment",
        "http://127.0.0.1:%d/v1/chat%%2Fcompletions",
        "http://127.0.0.1:%d/v1/chat/completions?",
        "http://127.0.0.1:%d",
        "http://127.0.0.1:%d/v1/caf%%C3%%A9/completions",
        "http://127.0.0.1:%d/v1/chat/completions?q=a b",
        "http://127.0.0.1:%d/v1/chat/completions",
        /* not absolute: read on their own, never against the URL before */
        "/v1/chat/completions",
        "//127.0.0.1:%d/v1/chat/completions",
        "127.0.0.1:%d/v1/chat/completions",
        " http://127.0.0.1:%d/v1/chat/completions",
        "http:127.0.0.1:%d/v1/chat/completions",
        "http://127.0.0.1:%d/v1/chat/completions",
    };
    enum { N = sizeof forms / sizeof *forms };
    tr_fixture *f = *state;
    char url[N][160], raw_seen[N][512], seen[512];
    CURLcode raw_rc[N];
    size_t i;
    for (i = 0; i < N; i++)
        snprintf(url[i], sizeof url[i], forms[i], mockprov_port(f->mp));
    for (i = 0; i < N; i++) { /* raw libcurl: a new handle each */
        long n0 = mockprov_log_count(f->mp);
        raw_rc[i] = raw_post(url[i], 5000, NULL);
        last_target(f, n0, raw_seen[i], sizeof raw_seen[i]);
    }
    /* the refused one, and the absolute ones reached the server */
    assert_int_equal(raw_rc[10], CURLE_URL_MALFORMAT);
    for (i = 0; i < 10; i++)
        assert_int_equal(raw_rc[i], CURLE_OK);
    assert_int_equal(raw_rc[11], CURLE_OK);
    assert_int_equal(raw_rc[N - 1], CURLE_OK);
    for (i = 0; i < N; i++) { /* the transport: one pooled handle */
        long n0 = mockprov_log_count(f->mp);
        aigw_transport_response r;
        aigw_transport_result tr;
        resp_init(&r, MIB);
        tr = send_full(f, url[i], "k", CHAT_BODY, 5000, MIB, &r);
        resp_free(&r);
        last_target(f, n0, seen, sizeof seen);
        if (raw_rc[i] != CURLE_OK) {
            assert_int_not_equal(tr, AIGW_TR_OK);
            assert_string_equal(seen, "");
            continue;
        }
        assert_int_equal(tr, AIGW_TR_OK);
        if (strcmp(seen, raw_seen[i]) != 0)
            fail_msg("%s: the transport sent \"%s\", libcurl \"%s\"", url[i], seen,
                     raw_seen[i]);
    }
}

/* ---- the proxy environment ---- */

static const char *const PROXY_VARS[] = {"http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY",
                                         "all_proxy",  "ALL_PROXY",  "no_proxy",    "NO_PROXY"};
#define N_PROXY_VARS (sizeof PROXY_VARS / sizeof PROXY_VARS[0])

/* The variables as the test found them, put back however it ends. */
static char *saved_env[N_PROXY_VARS];

static int setup_env(void **state)
{
    size_t k;
    for (k = 0; k < N_PROXY_VARS; k++) {
        const char *v = getenv(PROXY_VARS[k]);
        saved_env[k] = v ? strdup(v) : NULL;
    }
    return setup(state);
}

static int teardown_env(void **state)
{
    size_t k;
    for (k = 0; k < N_PROXY_VARS; k++) {
        if (saved_env[k])
            setenv(PROXY_VARS[k], saved_env[k], 1);
        else
            unsetenv(PROXY_VARS[k]);
        free(saved_env[k]);
        saved_env[k] = NULL;
    }
    return teardown(state);
}

/* Which server a request to url reached: 'A' (the target, f->mp), 'B' (the
 * proxy) or '-' (neither), by the connections each accepted.  raw: sent by
 * a new libcurl easy handle left to its own reading of the environment;
 * else by a new curl transport. */
static char reached(tr_fixture *f, mockprov *proxy, const char *url, bool raw)
{
    long a0 = mockprov_connection_count(f->mp), b0 = mockprov_connection_count(proxy), da, db;
    int64_t until;
    if (raw) {
        (void)raw_post(url, 250, NULL);
    } else {
        tr_fixture g = *f;
        aigw_transport_response r;
        assert_int_equal(aigw__curl_transport_new(&g.vt, &g.ud), AIGW_OK);
        resp_init(&r, MIB);
        (void)send_full(&g, url, "k", CHAT_BODY, 250, MIB, &r);
        resp_free(&r);
        g.vt.destroy(g.ud);
    }
    /* the accept is counted by the server's thread */
    until = now_ms() + 2000;
    do {
        da = mockprov_connection_count(f->mp) - a0;
        db = mockprov_connection_count(proxy) - b0;
        if (da + db > 0)
            break;
        sleep_ms(5);
    } while (now_ms() < until);
    return da == 1 && db == 0 ? 'A' : db == 1 && da == 0 ? 'B' : '-';
}

/* The transport reads the proxy variables once per handle, as libcurl
 * reads them on every transfer: each case goes where libcurl alone sends
 * it, for an http:// and an https:// URL. */
static void test_proxy_env(void **state)
{
    tr_fixture *f = *state;
    mockprov *proxy = mockprov_start(0);
    char b[64], socks[64], bare[64], dead[64], http[128], https[128];
    struct {
        /* "name=value" each, the rest unset; value B: the proxy, S: the same as
         * socks5://, N: without a scheme, D: a port nothing listens on */
        const char *set[4];
        const char *want;   /* where http://, https:// go */
    } cases[] = {
        {{NULL}, "AA"},
        {{"http_proxy=B"}, "BA"},
        {{"HTTP_PROXY=B"}, "AA"},
        {{"https_proxy=B"}, "AB"},
        {{"HTTPS_PROXY=B"}, "AB"},
        {{"https_proxy=B", "HTTPS_PROXY=D"}, "AB"},
        {{"all_proxy=B"}, "BB"},
        {{"ALL_PROXY=B"}, "BB"},
        {{"http_proxy=", "https_proxy=", "all_proxy=B"}, "BB"},
        {{"http_proxy=B", "no_proxy=127.0.0.1"}, "AA"},
        {{"all_proxy=B", "NO_PROXY=127.0.0.1"}, "AA"},
        {{"all_proxy=B", "no_proxy=*"}, "AA"},
        {{"all_proxy=B", "no_proxy=", "NO_PROXY=127.0.0.1"}, "AA"},
        {{"all_proxy=B", "no_proxy=example.com,localhost"}, "BB"},
        {{"all_proxy=B", "no_proxy=127.0.0.0/8"}, "AA"},
        {{"all_proxy=B", "no_proxy= example.com , 127.0.0.1 "}, "AA"},
        {{"all_proxy=B", "no_proxy=example.com", "NO_PROXY=127.0.0.1"}, "BB"},
        {{"all_proxy=S"}, "BB"},
        {{"http_proxy=N", "https_proxy=N"}, "BB"},
    };
    size_t i, j, k;
    assert_non_null(proxy);
    snprintf(b, sizeof b, "http://127.0.0.1:%d", mockprov_port(proxy));
    snprintf(socks, sizeof socks, "socks5://127.0.0.1:%d", mockprov_port(proxy));
    snprintf(bare, sizeof bare, "127.0.0.1:%d", mockprov_port(proxy)); /* no scheme */
    snprintf(dead, sizeof dead, "http://127.0.0.1:%d", dead_port());
    snprintf(http, sizeof http, "http://127.0.0.1:%d/v1/chat/completions", mockprov_port(f->mp));
    snprintf(https, sizeof https, "https://127.0.0.1:%d/v1/chat/completions",
             mockprov_port(f->mp));
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        for (k = 0; k < N_PROXY_VARS; k++)
            unsetenv(PROXY_VARS[k]);
        for (j = 0; j < 4 && cases[i].set[j]; j++) {
            char name[32];
            const char *eq = strchr(cases[i].set[j], '='), *v = eq + 1;
            snprintf(name, sizeof name, "%.*s", (int)(eq - cases[i].set[j]), cases[i].set[j]);
            setenv(name,
                   strcmp(v, "B") == 0   ? b
                   : strcmp(v, "S") == 0 ? socks
                   : strcmp(v, "N") == 0 ? bare
                   : strcmp(v, "D") == 0 ? dead
                                         : v,
                   1);
        }
        for (j = 0; j < 2; j++) {
            const char *url = j == 0 ? http : https;
            char raw = reached(f, proxy, url, true), ours = reached(f, proxy, url, false);
            if (raw != cases[i].want[j] || ours != raw)
                fail_msg("case %zu, %s: libcurl reached %c, the transport %c, want %c", i,
                         j == 0 ? "http" : "https", raw, ours, cases[i].want[j]);
        }
    }
    /* read when a handle is first pointed at a URL, not again */
    for (k = 0; k < N_PROXY_VARS; k++)
        unsetenv(PROXY_VARS[k]);
    {
        aigw_transport_response r;
        long a0 = mockprov_connection_count(f->mp), b0 = mockprov_connection_count(proxy);
        long k0 = mockprov_count(f->mp, "k");
        assert_int_equal(send_simple(f, "k", &r), AIGW_TR_OK);
        resp_free(&r);
        setenv("http_proxy", b, 1);
        assert_int_equal(send_simple(f, "k", &r), AIGW_TR_OK);
        resp_free(&r);
        assert_int_equal(mockprov_connection_count(f->mp) - a0, 1);
        assert_int_equal(mockprov_count(f->mp, "k") - k0, 2);
        assert_int_equal(mockprov_connection_count(proxy) - b0, 0);
    }
    mockprov_stop(proxy);
}

/* on_data's 0 ends the call at once as OK, < 0 as cancelled; the connection
 * left half-read is closed, never reused. */
static void test_stream_stop_and_cancel(void **state)
{
    tr_fixture *f = *state;
    static const char *const chunks[] = {"data: 1\n\n", "data: 2\n\n", "data: 3\n\n",
                                         "data: 4\n\n", "data: 5\n\n", NULL};
    mockprov_rule rl = stream_rule(chunks, 100, MOCKPROV_END_OK);
    aigw_transport_response r;
    int64_t t_end;
    sink k;
    assert_int_equal(mockprov_add_rule(f->mp, &rl), 0);

    sink_init(&k, &r, 1000);
    k.stop_at = 2;
    k.stop_ret = 0;
    assert_int_equal(stream_full(f, "k", 10000, 1000, &r, &k), AIGW_TR_OK);
    t_end = now_ms();
    assert_true(t_end - k.call_ms[1] < 60);
    assert_int_equal(k.n_calls, 2);
    assert_string_equal(k.data, "data: 1\n\ndata: 2\n\n");
    assert_int_equal(r.status, 200);
    resp_free(&r);
    sink_free(&k);

    sink_init(&k, &r, 1000);
    k.stop_at = 1;
    k.stop_ret = -1;
    assert_int_equal(stream_full(f, "k", 10000, 1000, &r, &k), AIGW_TR_CANCELLED);
    assert_true(now_ms() - k.call_ms[0] < 60);
    assert_int_equal(k.n_calls, 1);
    resp_free(&r);
    sink_free(&k);
    assert_int_equal(mockprov_connection_count(f->mp), 2);

    /* the next stream: a fresh connection, the whole answer, nothing stale */
    sink_init(&k, &r, 1000);
    assert_int_equal(stream_full(f, "k", 10000, 1000, &r, &k), AIGW_TR_OK);
    assert_int_equal(k.n_calls, 5);
    assert_string_equal(k.data, "data: 1\n\ndata: 2\n\ndata: 3\n\ndata: 4\n\ndata: 5\n\n");
    resp_free(&r);
    sink_free(&k);
    assert_int_equal(mockprov_connection_count(f->mp), 3);
    assert_int_equal(mockprov_count(f->mp, "k"), 3);

    /* and it was kept: the next stream reuses it */
    sink_init(&k, &r, 1000);
    assert_int_equal(stream_full(f, "k", 10000, 1000, &r, &k), AIGW_TR_OK);
    assert_int_equal(k.n_calls, 5);
    resp_free(&r);
    sink_free(&k);
    assert_int_equal(mockprov_connection_count(f->mp), 3);
}

/* A chunked body cut short is a reset, after what came was delivered. */
static void test_stream_cut(void **state)
{
    tr_fixture *f = *state;
    static const char *const chunks[] = {"data: 1\n\n", "data: 2\n\n", NULL};
    mockprov_rule rl = stream_rule(chunks, 30, MOCKPROV_END_CUT);
    aigw_transport_response r;
    sink k;
    rl.times = 1;
    assert_int_equal(mockprov_add_rule(f->mp, &rl), 0);
    sink_init(&k, &r, 1000);
    assert_int_equal(stream_full(f, "k", 5000, 1000, &r, &k), AIGW_TR_RESET);
    assert_int_equal(k.n_calls, 2);
    assert_string_equal(k.data, "data: 1\n\ndata: 2\n\n");
    assert_int_equal(k.first_status, 200);
    resp_free(&r);
    sink_free(&k);
    /* not resent */
    assert_int_equal(mockprov_count(f->mp, "k"), 1);
    /* and the transport goes on on a new connection */
    sink_init(&k, &r, 1000);
    assert_int_equal(stream_full(f, "k", 5000, 1000, &r, &k), AIGW_TR_OK);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(k.data, "Hello from gpt-4o"));
    resp_free(&r);
    sink_free(&k);
    assert_int_equal(mockprov_connection_count(f->mp), 2);
}

/* An error answer to a streamed request: its status and headers, and its
 * body through on_data for the engine to classify. */
static void test_stream_error_status(void **state)
{
    tr_fixture *f = *state;
    mockprov_rule rl = rule_of(MOCKPROV_RESPOND, 429);
    aigw_transport_response r;
    sink k;
    rl.headers = "Retry-After: 3\r\n";
    rl.body = "{\"error\":{\"code\":\"rate_limit_exceeded\",\"message\":\"slow down\"}}";
    assert_int_equal(mockprov_add_rule(f->mp, &rl), 0);
    sink_init(&k, &r, 1000);
    assert_int_equal(stream_full(f, "k", 5000, 1000, &r, &k), AIGW_TR_OK);
    assert_int_equal(r.status, 429);
    assert_int_equal(k.first_status, 429);
    assert_string_equal(k.first_ctype, "application/json");
    assert_string_equal(aigw__hdrs_get(&r.headers, "retry-after"), "3");
    assert_string_equal(k.data, rl.body);
    assert_int_equal(r.body.len, 0);
    resp_free(&r);
    sink_free(&k);
}

/* Streams that ended cleanly leave their connection for the next stream
 * or cancellable send; plain sends keep a connection of their own. */
static void test_stream_reuse(void **state)
{
    tr_fixture *f = *state;
    static const char *const chunks[] = {"data: a\n\n", "data: b\n\n", NULL};
    mockprov_rule rl = stream_rule(chunks, 0, MOCKPROV_END_OK);
    aigw_transport_response r;
    aigw_cancel *cancel = NULL;
    sink k;
    int i;
    rl.model = "gpt-4o";
    assert_int_equal(mockprov_add_rule(f->mp, &rl), 0);
    for (i = 0; i < 10; i++) {
        sink_init(&k, &r, 1000);
        assert_int_equal(stream_full(f, "k", 5000, 1000, &r, &k), AIGW_TR_OK);
        assert_string_equal(k.data, "data: a\n\ndata: b\n\n");
        resp_free(&r);
        sink_free(&k);
    }
    assert_int_equal(mockprov_connection_count(f->mp), 1);
    /* A send with a cancel token runs the streams' way (the loop that
     * looks at the token): on their connection. */
    assert_int_equal(aigw_cancel_new(&cancel), AIGW_OK);
    resp_init(&r, 0);
    assert_int_equal(send_with(f, f->url, "k", "{\"model\":\"other\"}", 5000, 0, cancel, &r), AIGW_TR_OK);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    assert_int_equal(mockprov_connection_count(f->mp), 1);
    /* A plain send runs on curl_easy_perform, whose connections are its own:
     * one more connection, then each way keeps reusing its own. */
    for (i = 0; i < 5; i++) {
        resp_init(&r, 0);
        assert_int_equal(send_full(f, f->url, "k", "{\"model\":\"other\"}", 5000, 0, &r),
                         AIGW_TR_OK);
        assert_int_equal(r.status, 200);
        resp_free(&r);
        sink_init(&k, &r, 1000);
        assert_int_equal(stream_full(f, "k", 5000, 1000, &r, &k), AIGW_TR_OK);
        assert_string_equal(k.data, "data: a\n\ndata: b\n\n");
        resp_free(&r);
        sink_free(&k);
        resp_init(&r, 0);
        assert_int_equal(send_with(f, f->url, "k", "{\"model\":\"other\"}", 5000, 0, cancel, &r),
                         AIGW_TR_OK);
        resp_free(&r);
    }
    aigw_cancel_free(cancel);
    assert_int_equal(mockprov_count(f->mp, "k"), 10 + 1 + 15);
    assert_int_equal(mockprov_connection_count(f->mp), 2);
}

typedef struct stream_worker {
    tr_fixture *f;
    int ok;
    char key[16];
} stream_worker;

static void *stream_worker_main(void *arg)
{
    stream_worker *w = arg;
    int i;
    for (i = 0; i < 20; i++) {
        aigw_transport_response r;
        sink k;
        sink_init(&k, &r, 2000);
        if (stream_full(w->f, w->key, 10000, 2000, &r, &k) == AIGW_TR_OK && r.status == 200 &&
            k.first_status == 200 && k.data &&
            strcmp(k.data, "data: one\n\ndata: two\n\ndata: [DONE]\n\n") == 0)
            w->ok++;
        resp_free(&r);
        sink_free(&k);
    }
    return NULL;
}

static void test_stream_concurrency(void **state)
{
    tr_fixture *f = *state;
    static const char *const chunks[] = {"data: one\n\n", "data: two\n\n", "data: [DONE]\n\n",
                                         NULL};
    mockprov_rule rl = stream_rule(chunks, 2, MOCKPROV_END_OK);
    pthread_t th[4];
    stream_worker w[4];
    int i;
    assert_int_equal(mockprov_add_rule(f->mp, &rl), 0);
    for (i = 0; i < 4; i++) {
        w[i].f = f;
        w[i].ok = 0;
        snprintf(w[i].key, sizeof w[i].key, "key-%d", i);
        assert_int_equal(pthread_create(&th[i], NULL, stream_worker_main, &w[i]), 0);
    }
    for (i = 0; i < 4; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(w[i].ok, 20);
        assert_int_equal(mockprov_count(f->mp, w[i].key), 20);
    }
    assert_int_equal(mockprov_count(f->mp, NULL), 80);
    assert_true(mockprov_connection_count(f->mp) <= 4);
}

static void test_stream_bad_requests(void **state)
{
    tr_fixture *f = *state;
    aigw_transport_response r;
    aigw_transport_request req;
    sink k;
    memset(&req, 0, sizeof req);
    req.url = f->url;
    req.timeout_ms = 5000;
    resp_init(&r, 0);
    sink_init(&k, &r, 1000);
    assert_int_equal(f->vt.send_stream(f->ud, &req, &r, NULL, &k), AIGW_TR_OTHER);
    assert_int_equal(f->vt.send_stream(f->ud, NULL, &r, sink_on_data, &k), AIGW_TR_OTHER);
    assert_int_equal(f->vt.send_stream(f->ud, &req, NULL, sink_on_data, &k), AIGW_TR_OTHER);
    req.url = "ftp://127.0.0.1/x";
    assert_int_equal(f->vt.send_stream(f->ud, &req, &r, sink_on_data, &k), AIGW_TR_PROTOCOL);
    assert_int_equal(mockprov_count(f->mp, NULL), 0);
    assert_int_equal(k.n_calls, 0);
    resp_free(&r);
}

/* The mock's STREAM answer on the wire, and its rule checks. */
static void test_mock_stream_wire(void **state)
{
    tr_fixture *f = *state;
    static const char *const chunks[] = {"hello", "", "data: x\n\n", NULL};
    static char buf[4096];
    mockprov_rule rl = stream_rule(chunks, 0, MOCKPROV_END_OK);
    const char *want = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                       "Transfer-Encoding: chunked\r\nX-A: 1\r\n\r\n"
                       "5\r\nhello\r\n9\r\ndata: x\n\n\r\n0\r\n\r\n";
    size_t len = 0, want_len = strlen(want);
    int fd;
    rl.headers = "X-A: 1\r\n";
    assert_int_equal(mockprov_add_rule(f->mp, &rl), 0);
    fd = raw_connect(mockprov_port(f->mp));
    send_str(fd, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}");
    while (len < want_len) {
        ssize_t n = recv(fd, buf + len, sizeof buf - len - 1, 0);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    assert_int_equal(len, want_len);
    assert_memory_equal(buf, want, want_len);
    close(fd);

    rl.stream_end = (mockprov_stream_end)3;
    assert_int_equal(mockprov_add_rule(f->mp, &rl), -1);
    rl.stream_end = (mockprov_stream_end)-1;
    assert_int_equal(mockprov_add_rule(f->mp, &rl), -1);
    rl = rule_of((mockprov_action)(MOCKPROV_STREAM + 1), 0);
    assert_int_equal(mockprov_add_rule(f->mp, &rl), -1);
}

/* Stopping the mock is prompt with streams stalled or waiting between
 * chunks; their clients see a reset. */
static void *stream_reset_main(void *arg)
{
    silent_arg *a = arg;
    aigw_transport_response r;
    sink k;
    sink_init(&k, &r, 30000);
    a->tr = stream_full(a->f, "k", 30000, 30000, &r, &k);
    resp_free(&r);
    sink_free(&k);
    return NULL;
}

static void test_mock_stream_stop_prompt(void **state)
{
    tr_fixture *f = *state;
    static const char *const chunks[] = {"data: 1\n\n", "data: 2\n\n", NULL};
    mockprov_rule stall = stream_rule(chunks, 0, MOCKPROV_END_STALL);
    mockprov_rule slow = stream_rule(chunks, 60000, MOCKPROV_END_OK);
    silent_arg a[2];
    pthread_t th[2];
    int64_t t0;
    int i;
    stall.times = 1;
    assert_int_equal(mockprov_add_rule(f->mp, &stall), 0);
    assert_int_equal(mockprov_add_rule(f->mp, &slow), 0);
    for (i = 0; i < 2; i++) {
        a[i].f = f;
        a[i].tr = AIGW_TR_OK;
        assert_int_equal(pthread_create(&th[i], NULL, stream_reset_main, &a[i]), 0);
        while (mockprov_count(f->mp, NULL) < i + 1)
            sleep_ms(5);
    }
    sleep_ms(50);
    t0 = now_ms();
    mockprov_stop(f->mp);
    f->mp = NULL;
    assert_true(now_ms() - t0 < 500);
    for (i = 0; i < 2; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(a[i].tr, AIGW_TR_RESET);
    }
}

int main(void)
{
    static const char *const proxies[] = {"http_proxy", "https_proxy", "HTTPS_PROXY",
                                          "all_proxy", "ALL_PROXY"};
    size_t i;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_setters),
        cmocka_unit_test_setup_teardown(test_ok_exact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_default_completion, setup, teardown),
        cmocka_unit_test_setup_teardown(test_429_retry_after, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_silent_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_reset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_folded_header, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hop_by_hop_headers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_status_lines, setup, teardown),
        cmocka_unit_test_setup_teardown(test_url_forms, setup, teardown),
        cmocka_unit_test_setup_teardown(test_proxy_env, setup_env, teardown_env),
        cmocka_unit_test_setup_teardown(test_close_on_reused_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redirect_not_followed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_huge_too_large, setup, teardown),
        cmocka_unit_test_setup_teardown(test_header_flood, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keepalive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_options_follow_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrency, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expect_continue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mock_wire, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_prompt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_chunks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_large_and_empty, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_idle_first_byte, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_idle_budget, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_overall_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_stop_and_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_cut, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_error_status, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_reuse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_concurrency, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_bad_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mock_stream_wire, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mock_stream_stop_prompt, setup, teardown),
    };
    /* loopback must not go through a proxy from the environment */
    for (i = 0; i < sizeof proxies / sizeof proxies[0]; i++)
        unsetenv(proxies[i]);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
