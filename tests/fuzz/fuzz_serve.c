/* fuzz_serve.c - `aigw serve`'s request handling (examples/serve.c) on what
 * a client sends: the real server, libmicrohttpd's HTTP parsing included,
 * started once per process with no listening socket (serve.h); each input
 * goes in on one end of an AF_UNIX socketpair handed to it as a connection.
 *
 * Input: 4 bytes of upstream script, then the bytes the client sends (one
 * or more HTTP/1.1 requests).  Upstream call i (counted over the input)
 * gets answer script[i % 4]: a hex digit (else the byte's low 4 bits) that
 * picks one of the canned answers below (enum answer; the table is in
 * tests/fuzz/README.md), in the shape of the API the call is for, whole or
 * streamed.  The harness writes the bytes, shuts
 * its write side, reads the answer to its end, waits for the connection to
 * close, then checks.  The gateway file (GATEWAY) has custom provider
 * "fake" (two keys) and anthropic (one key), two access key
 * configurations and an access key bound to each.  Each input gets a new
 * client (no key health, stats or retry budget of an earlier one; only the
 * gateway's own counters in /metrics go on) whose transport is an
 * in-process fake and whose clock only moves when the library sleeps, so
 * that retry waits cost nothing.
 *
 * Checked (abort() on failure):
 * - the answer is a sequence of HTTP/1.x responses: a status line, header
 *   lines (token names; values without control characters), framing by
 *   Content-Length or chunked (never both, one Content-Length), no body
 *   for HEAD, 1xx, 204 and 304; only "100 Continue" as an interim answer;
 *   nothing after a response that says Connection: close or has no length;
 *   only the last may end early, and only as a stream cut after a whole
 *   chunk;
 * - the access log is one JSON object per line, valid UTF-8; the answers
 *   are the log's requests in order (same status), except requests logged
 *   499 (never answered: the connection ended) and one error answer of
 *   libmicrohttpd's own at the end;
 * - no 8-byte window of a provider key or access key value is in the
 *   answer or the log, unless the client sent those bytes itself outside
 *   its credential header lines (Authorization, x-api-key), or the log
 *   has them as a request's method (the client's bytes as they came);
 * - a request is authorised as an access key only if the input holds that
 *   key's value, and runs on the configuration the key is bound to; one
 *   that is not authorised gets 401 (or the route's 404 / 405, /healthz
 *   its 200, a head past --max-header 431) and never reaches the library:
 *   with no authorised request there is no upstream call, and never more
 *   calls than logged attempts;
 * - every upstream call carries exactly one credential, a provider key
 *   (x-api-key: anthropic's only), and nothing of an access key in its
 *   headers;
 * - once the connection has closed, no request holds a slot or is still
 *   listed as running; no hang (8 s), no leak.
 */
#define _GNU_SOURCE /* fopencookie, memmem */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "aigw.h"
#include "cli.h"
#include "serve.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define SCRIPT_LEN 4
#define DEADLINE_MS 8000

static void check(bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_serve: invariant violated: %s\n", what);
        abort();
    }
}

/* serve.c's command line needs these from aigw.c; the harness never runs it. */
aigw_config *cli_load_config(const char *file)
{
    (void)file;
    return NULL;
}

int cli_usage_error(const char *fmt, const char *arg)
{
    (void)fmt;
    (void)arg;
    return EXIT_USAGE;
}

/* ------------------------------------------------------------------------ */
/* The gateway file and its secrets                                         */
/* ------------------------------------------------------------------------ */

#define KEY_FAKE_1 "sk-FZa1-Qm7x2Lp9Wv4Tn8Rk3Hd"
#define KEY_FAKE_2 "sk-FZb2-Yc5Jg0Ue6Bs1Xo7Mf4Pw"
#define KEY_CLAUDE "sk-ant-FZc3-Vi2Nq8Kt5Ea9Zr0Lb"
#define ACCESS_A "ak-FZd4-Gh6Sw3Oy1Cu9Ij2Dn"
#define ACCESS_B "ak-FZe5-Tf8Mk0Ax4Rp7Vg1Hs"

static const char GATEWAY[] =
    "{\"providers\":["
    "{\"providerId\":\"fake\",\"baseUrl\":\"http://127.0.0.1:9/v1\","
    "\"models\":[{\"modelId\":\"m1\"},{\"modelId\":\"m2\",\"providerModelId\":\"m2-up\"}]},"
    "{\"providerId\":\"anthropic\",\"baseUrl\":\"http://127.0.0.1:9\"}],"
    "\"providerKeys\":["
    "{\"id\":\"fake-1\",\"providerId\":\"fake\",\"value\":\"" KEY_FAKE_1 "\"},"
    "{\"id\":\"fake-2\",\"providerId\":\"fake\",\"value\":\"" KEY_FAKE_2 "\"},"
    "{\"id\":\"claude-1\",\"providerId\":\"anthropic\",\"value\":\"" KEY_CLAUDE "\"}],"
    "\"accessKeyConfiguration\":{\"name\":\"alpha\",\"router\":{\"rules\":["
    "{\"model\":\"fake:m1\",\"steps\":[{\"type\":\"user\",\"keys\":[{\"id\":\"fake-1\"},"
    "{\"id\":\"fake-2\"}]}]},"
    "{\"provider\":\"anthropic\",\"steps\":[{\"type\":\"user\",\"keys\":[{\"id\":\"claude-1\"}]}]}"
    "]}},"
    "\"accessKeyConfigurations\":[{\"name\":\"bravo\","
    "\"access\":{\"models\":{\"allow\":[\"fake:m2\",\"fake:m1\",\"anthropic:claude-*\"]}},"
    "\"router\":{\"rules\":[{\"model\":\"fake:m2\",\"steps\":[{\"type\":\"user\","
    "\"keySelectionStrategy\":\"round-robin\",\"keys\":[{\"id\":\"fake-2\"},{\"id\":\"fake-1\"}]}]}"
    "]}}],"
    "\"accessKeys\":["
    "{\"id\":\"team-a\",\"value\":\"" ACCESS_A "\",\"configuration\":\"alpha\"},"
    "{\"id\":\"team-b\",\"value\":\"" ACCESS_B "\",\"configuration\":\"bravo\"}],"
    "\"gatewayConfig\":{\"maxAttempts\":4,\"sameBackendRetries\":1,"
    "\"maxResponseBytes\":65536,\"streamRestart\":true,"
    "\"retryBudget\":{\"percent\":20,\"minPerSecond\":1,\"window\":\"10s\"}}}";

static const char *const SECRETS[] = {KEY_FAKE_1, KEY_FAKE_2, KEY_CLAUDE, ACCESS_A, ACCESS_B};
#define N_SECRETS (sizeof SECRETS / sizeof SECRETS[0])
static const char *const ACCESS_VALUES[] = {ACCESS_A, ACCESS_B};
static const char *const ACCESS_IDS[] = {"team-a", "team-b"};
static const char *const ACCESS_CONFS[] = {"alpha", "bravo"};
#define N_ACCESS 2

/* The server's limits: small, so that the body and header limits are
 * within reach of small inputs. */
#define MAX_BODY 6000
#define MAX_HEADER 8192

/* ------------------------------------------------------------------------ */
/* A growable buffer                                                        */
/* ------------------------------------------------------------------------ */

typedef struct gbuf {
    char *p;
    size_t len, cap;
} gbuf;

static void gb_add(gbuf *b, const void *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        char *p;
        while (cap < b->len + n + 1)
            cap *= 2;
        p = realloc(b->p, cap);
        check(p != NULL, "out of memory in the harness");
        b->p = p;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void gb_str(gbuf *b, const char *s)
{
    gb_add(b, s, strlen(s));
}

/* ------------------------------------------------------------------------ */
/* The fake clock: moves only when the library sleeps (and between inputs)  */
/* ------------------------------------------------------------------------ */

static _Atomic int64_t fake_now = 1000000000;

static int64_t clock_now(void *ud)
{
    (void)ud;
    return atomic_load(&fake_now);
}

static void clock_sleep(void *ud, int64_t ms)
{
    (void)ud;
    if (ms > 0)
        atomic_fetch_add(&fake_now, ms);
}

static const aigw_clock FAKE_CLOCK = {AIGW_CLOCK_VERSION, clock_now, clock_sleep, NULL};

/* ------------------------------------------------------------------------ */
/* The fake upstream                                                        */
/* ------------------------------------------------------------------------ */

/* What upstream call i answers (script[i % SCRIPT_LEN]); a whole call and a
 * streamed one read some differently. */
enum answer {
    A_OK,          /* 200 in the API's shape; a stream that ends properly */
    A_RATE,        /* 429, Retry-After: 1 */
    A_SERVER,      /* 500 */
    A_CONNECT,     /* no connection */
    A_AUTH,        /* 401: the key is refused */
    A_HOP,         /* 200 with hop-by-hop, framing and x-aigw-* headers; a
                      stream is cut inside an event after two content events */
    A_TIMEOUT,     /* whole: timeout; stream: 200, a comment, then a timeout */
    A_BAD_REQUEST, /* 400, context length: fail-fast, passed on */
    A_NO_CONTENT,  /* 204 (whole: with a body) */
    A_BIG,         /* 40 KB whole; a stream of many events and one of 300 KB
                      (past what serve holds back for a whole event) */
    A_OTHER_TYPE,  /* whole: an SSE body; stream: a whole JSON answer */
    A_OVERLOADED,  /* whole: 503 (529 on messages), Retry-After as a date;
                      stream: CRLF line ends, complete */
    A_TOO_LARGE,   /* whole: too large; stream: an in-band error after content */
    A_ODD_HEADERS, /* whole: long, empty, UTF-8 and control-byte header
                      values; stream: one byte per chunk */
    A_REDIRECT,    /* 302 */
    A_EARLY_HINTS, /* 103 as the final answer */
    A__N
};

enum api { API_CHAT, API_RESPONSES, API_MESSAGES };

static uint8_t script[SCRIPT_LEN];
static atomic_uint upstream_calls;

static enum api api_of(const char *url)
{
    if (strstr(url, "/messages"))
        return API_MESSAGES;
    if (strstr(url, "/responses"))
        return API_RESPONSES;
    return API_CHAT;
}

/* The credential of one upstream call: one provider key (both providers
 * have the same base URL), and not a byte window of an access key in any
 * header. */
static void check_upstream_request(const aigw_transport_request *req)
{
    size_t i, k, creds = 0;
    check(strncmp(req->url, "http://127.0.0.1:9/", 19) == 0, "upstream: another host");
    if (getenv("FUZZ_SERVE_SHOW"))
        fprintf(stderr, "---- upstream call: %s %.*s\n", req->url, (int)req->body_len, req->body);
    for (i = 0; i < req->n_headers; i++) {
        const char *name = req->headers[i].name, *value = req->headers[i].value;
        for (k = 0; k < N_ACCESS; k++) {
            size_t off, n = strlen(ACCESS_VALUES[k]);
            for (off = 0; off + 8 <= n; off++)
                check(!memmem(value, strlen(value), ACCESS_VALUES[k] + off, 8),
                      "upstream: an access key in a header sent upstream");
        }
        if (!strcmp(name, "authorization")) {
            creds++;
            /* anthropic's key too, on its OpenAI-compatible paths */
            check(!strcmp(value, "Bearer " KEY_FAKE_1) || !strcmp(value, "Bearer " KEY_FAKE_2) ||
                      !strcmp(value, "Bearer " KEY_CLAUDE),
                  "upstream: Authorization is not a provider key");
        } else if (!strcmp(name, "x-api-key")) {
            creds++;
            check(!strcmp(value, KEY_CLAUDE), "upstream: x-api-key is not anthropic's key");
        }
    }
    check(creds == 1, "upstream: not exactly one credential");
}

static const char *const CHAT_EVENTS[] = {
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"m1\",\"choices\":"
    "[{\"index\":0,\"delta\":{\"role\":\"assistant\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"m1\",\"choices\":"
    "[{\"index\":0,\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"m1\",\"choices\":"
    "[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"m1\",\"choices\":"
    "[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
    "data: [DONE]\n\n",
    NULL};
static const char *const RESPONSES_EVENTS[] = {
    "event: response.created\ndata: {\"type\":\"response.created\",\"response\":"
    "{\"id\":\"r1\",\"status\":\"in_progress\"}}\n\n",
    "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\","
    "\"delta\":\"Hel\"}\n\n",
    "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\","
    "\"delta\":\"lo\"}\n\n",
    "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":"
    "{\"id\":\"r1\",\"status\":\"completed\"}}\n\n",
    NULL};
static const char *const MESSAGES_EVENTS[] = {
    "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\","
    "\"type\":\"message\",\"role\":\"assistant\",\"content\":[]}}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,"
    "\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,"
    "\"delta\":{\"type\":\"text_delta\",\"text\":\"Hel\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,"
    "\"delta\":{\"type\":\"text_delta\",\"text\":\"lo\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":"
    "{\"stop_reason\":\"end_turn\"}}\n\n",
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    NULL};
/* the in-band error each API sends inside a 200 stream */
static const char *const INBAND_ERROR[] = {
    "data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\n",
    "event: response.failed\ndata: {\"type\":\"response.failed\",\"response\":"
    "{\"status\":\"failed\",\"error\":{\"code\":\"server_error\"}}}\n\n",
    "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\","
    "\"message\":\"Overloaded\"}}\n\n"};

static const char *const *events_of(enum api api)
{
    return api == API_CHAT ? CHAT_EVENTS : api == API_RESPONSES ? RESPONSES_EVENTS
                                                                : MESSAGES_EVENTS;
}

/* A whole 200 body in the API's shape, its text `text`. */
static void whole_body(gbuf *b, enum api api, const char *text)
{
    if (api == API_CHAT) {
        gb_str(b, "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"model\":\"m1\","
                  "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"");
        gb_str(b, text);
        gb_str(b, "\"},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":3,"
                  "\"completion_tokens\":1,\"total_tokens\":4}}");
    } else if (api == API_RESPONSES) {
        gb_str(b, "{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"completed\","
                  "\"output\":[{\"type\":\"message\",\"role\":\"assistant\",\"content\":"
                  "[{\"type\":\"output_text\",\"text\":\"");
        gb_str(b, text);
        gb_str(b, "\"}]}]}");
    } else {
        gb_str(b, "{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":"
                  "[{\"type\":\"text\",\"text\":\"");
        gb_str(b, text);
        gb_str(b, "\"}],\"stop_reason\":\"end_turn\"}");
    }
}

/* A whole SSE stream in the API's shape; with crlf, CRLF line ends. */
static void stream_body(gbuf *b, enum api api, bool crlf)
{
    const char *const *ev = events_of(api);
    for (; *ev; ev++) {
        const char *p;
        for (p = *ev; *p; p++) {
            if (*p == '\n' && crlf)
                gb_add(b, "\r", 1);
            gb_add(b, p, 1);
        }
    }
}

/* Many small content events and one of 300 KB, then the end. */
static void big_stream_body(gbuf *b, enum api api)
{
    const char *const *ev = events_of(api);
    char text[1100];
    int i;
    memset(text, 'x', sizeof text - 1);
    text[sizeof text - 1] = '\0';
    gb_str(b, ev[0]);
    for (i = 0; i < 40; i++) {
        char *big = NULL;
        const char *t = text;
        if (i == 20) {
            big = malloc(300001);
            check(big != NULL, "out of memory in the harness");
            memset(big, 'y', 300000);
            big[300000] = '\0';
            t = big;
        }
        if (api == API_CHAT) {
            gb_str(b, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"");
            gb_str(b, t);
            gb_str(b, "\"},\"finish_reason\":null}]}\n\n");
        } else if (api == API_RESPONSES) {
            gb_str(b, "event: response.output_text.delta\ndata: {\"type\":"
                      "\"response.output_text.delta\",\"delta\":\"");
            gb_str(b, t);
            gb_str(b, "\"}\n\n");
        } else {
            gb_str(b, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\","
                      "\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"");
            gb_str(b, t);
            gb_str(b, "\"}}\n\n");
        }
        free(big);
    }
    for (ev += 3; *ev; ev++)
        gb_str(b, *ev);
}

static const char *const ERROR_BODIES[] = {
    [A_RATE] = "{\"error\":{\"message\":\"Rate limit reached\",\"type\":\"requests\","
               "\"code\":\"rate_limit_exceeded\"}}",
    [A_SERVER] = "{\"error\":{\"message\":\"The server had an error\",\"type\":\"server_error\"}}",
    [A_AUTH] = "{\"error\":{\"message\":\"Incorrect API key provided\",\"type\":"
               "\"invalid_request_error\",\"code\":\"invalid_api_key\"}}",
    [A_BAD_REQUEST] = "{\"error\":{\"message\":\"This model's maximum context length is 8192 "
                      "tokens\",\"type\":\"invalid_request_error\",\"code\":"
                      "\"context_length_exceeded\"}}",
    [A_OVERLOADED] = "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":"
                     "\"Overloaded\"}}",
    [A_REDIRECT] = "<html>moved</html>",
    [A_EARLY_HINTS] = "",
};

static void set_status(aigw_transport_response *resp, int status)
{
    check(aigw_transport_response_set_status(resp, status) == AIGW_OK, "set_status refused");
}

static void add_header(aigw_transport_response *resp, const char *name, const char *value)
{
    check(aigw_transport_response_add_header(resp, name, value) == AIGW_OK,
          "add_header refused");
}

/* The status and headers of an error answer (any API), NULL body when the
 * answer is not an error one. */
static const char *error_head(aigw_transport_response *resp, enum answer a)
{
    switch (a) {
    case A_RATE:
        set_status(resp, 429);
        add_header(resp, "retry-after", "1");
        add_header(resp, "x-ratelimit-reset-requests", "1s");
        break;
    case A_SERVER:
        set_status(resp, 500);
        break;
    case A_AUTH:
        set_status(resp, 401);
        break;
    case A_BAD_REQUEST:
        set_status(resp, 400);
        break;
    case A_REDIRECT:
        set_status(resp, 302);
        add_header(resp, "location", "http://127.0.0.1:9/elsewhere");
        add_header(resp, "content-type", "text/html");
        return ERROR_BODIES[a];
    case A_EARLY_HINTS:
        set_status(resp, 103);
        add_header(resp, "link", "</style.css>; rel=preload");
        return ERROR_BODIES[a];
    default:
        return NULL;
    }
    add_header(resp, "content-type", "application/json");
    return ERROR_BODIES[a];
}

/* Headers a gateway must not pass on as they are. */
static void hop_headers(aigw_transport_response *resp)
{
    add_header(resp, "content-length", "999");
    add_header(resp, "transfer-encoding", "chunked");
    add_header(resp, "connection", "close");
    add_header(resp, "keep-alive", "timeout=5");
    add_header(resp, "set-cookie", "session=upstream");
    add_header(resp, "x-aigw-provider", "spoofed");
    add_header(resp, "date", "Wed, 21 Oct 2015 07:28:00 GMT");
    add_header(resp, "server", "upstream/1.0");
    add_header(resp, "x-request-id", "req_upstream_1");
}

static aigw_transport_result append(aigw_transport_response *resp, const char *p, size_t n)
{
    aigw_status st = aigw_transport_response_append_body(resp, p, n);
    if (st == AIGW_EINVAL)
        return AIGW_TR_TOO_LARGE;
    check(st == AIGW_OK, "append_body failed");
    return AIGW_TR_OK;
}

static enum answer next_answer(void)
{
    unsigned i = atomic_fetch_add(&upstream_calls, 1);
    return (enum answer)(script[i % SCRIPT_LEN] % A__N);
}

static aigw_transport_result fake_send(void *ud, const aigw_transport_request *req,
                                       aigw_transport_response *resp)
{
    enum api api = api_of(req->url);
    enum answer a = next_answer();
    gbuf b = {0};
    const char *err;
    aigw_transport_result tr;
    (void)ud;
    check_upstream_request(req);
    if (a == A_CONNECT)
        return AIGW_TR_CONNECT;
    if (a == A_TIMEOUT)
        return AIGW_TR_TIMEOUT;
    if (a == A_TOO_LARGE)
        return AIGW_TR_TOO_LARGE;
    if ((err = error_head(resp, a)) != NULL)
        return append(resp, err, strlen(err));
    if (a == A_OVERLOADED) {
        set_status(resp, api == API_MESSAGES ? 529 : 503);
        add_header(resp, "retry-after", "Wed, 21 Oct 2015 07:28:00 GMT");
        add_header(resp, "content-type", "application/json");
        return append(resp, ERROR_BODIES[A_OVERLOADED], strlen(ERROR_BODIES[A_OVERLOADED]));
    }
    set_status(resp, a == A_NO_CONTENT ? 204 : 200);
    if (a == A_OTHER_TYPE) {
        add_header(resp, "content-type", "text/event-stream");
        stream_body(&b, api, false);
    } else {
        add_header(resp, "content-type", "application/json");
        if (a == A_BIG) {
            char *text = malloc(40001);
            check(text != NULL, "out of memory in the harness");
            memset(text, 'z', 40000);
            text[40000] = '\0';
            whole_body(&b, api, text);
            free(text);
        } else if (a == A_NO_CONTENT) {
            gb_str(&b, "x");
        } else {
            whole_body(&b, api, a == A_ODD_HEADERS ? "caf\\u00e9 \xe2\x82\xac" : "Hello");
        }
    }
    if (a == A_HOP)
        hop_headers(resp);
    if (a == A_ODD_HEADERS) {
        char *longv = malloc(3001);
        check(longv != NULL, "out of memory in the harness");
        memset(longv, 'v', 3000);
        longv[3000] = '\0';
        add_header(resp, "x-upstream-long", longv);
        add_header(resp, "x-upstream-empty", "");
        add_header(resp, "X-Upstream-Utf8", "caf\xc3\xa9");
        add_header(resp, "x-upstream-tab", "a\tb");
        add_header(resp, "x-upstream-ctl", "a\x01b"); /* not for the client */
        free(longv);
    }
    tr = append(resp, b.p ? b.p : "", b.len);
    free(b.p);
    return tr;
}

/* Hands body to on_data in chunks of `step` bytes (0: whole); the
 * transport's own result when the callback stops it. */
static aigw_transport_result feed(aigw_transport_data_fn on_data, void *ctx, const char *body,
                                  size_t len, size_t step, bool *stopped)
{
    size_t off = 0;
    *stopped = false;
    while (off < len) {
        size_t n = step && len - off > step ? step : len - off;
        int64_t rc = on_data(ctx, body + off, n);
        off += n;
        if (rc <= 0) {
            *stopped = true;
            return rc < 0 ? AIGW_TR_CANCELLED : AIGW_TR_OK;
        }
    }
    return AIGW_TR_OK;
}

static aigw_transport_result fake_send_stream(void *ud, const aigw_transport_request *req,
                                              aigw_transport_response *resp,
                                              aigw_transport_data_fn on_data, void *ctx)
{
    enum api api = api_of(req->url);
    enum answer a = next_answer();
    const char *const *ev = events_of(api);
    const char *err;
    gbuf b = {0};
    size_t step = 0;
    bool stopped;
    aigw_transport_result tr, end = AIGW_TR_OK;
    (void)ud;
    check_upstream_request(req);
    if (a == A_CONNECT)
        return AIGW_TR_CONNECT;
    if ((err = error_head(resp, a)) != NULL) {
        gb_str(&b, err);
    } else if (a == A_OVERLOADED) { /* not an error here: CRLF line ends */
        set_status(resp, 200);
        add_header(resp, "content-type", "text/event-stream");
        stream_body(&b, api, true);
    } else if (a == A_NO_CONTENT) {
        set_status(resp, 204);
    } else if (a == A_OTHER_TYPE) {
        set_status(resp, 200);
        add_header(resp, "content-type", "application/json");
        whole_body(&b, api, "Hello");
    } else {
        set_status(resp, 200);
        add_header(resp, "content-type", "text/event-stream");
        add_header(resp, "cache-control", "no-cache");
        if (a == A_HOP) { /* two content events, then cut inside the next */
            size_t i;
            hop_headers(resp);
            for (i = 0; ev[i] && i < 3; i++)
                gb_str(&b, ev[i]);
            if (api == API_MESSAGES)
                gb_str(&b, ev[3]);
            gb_str(&b, "data: {\"choi");
            end = AIGW_TR_RESET;
        } else if (a == A_TIMEOUT) {
            gb_str(&b, ": keep-alive\n\n");
            end = AIGW_TR_TIMEOUT;
        } else if (a == A_TOO_LARGE) {
            size_t i;
            for (i = 0; ev[i] && i < 3; i++)
                gb_str(&b, ev[i]);
            gb_str(&b, INBAND_ERROR[api]);
        } else if (a == A_BIG) {
            big_stream_body(&b, api);
            step = 8192; /* a 300 KB read would pass maxResponseBytes before the commit */
        } else {
            stream_body(&b, api, false);
            if (a == A_ODD_HEADERS)
                step = 1;
        }
    }
    tr = feed(on_data, ctx, b.p ? b.p : "", b.len, step, &stopped);
    free(b.p);
    return stopped ? tr : end;
}

static const aigw_transport FAKE_TRANSPORT = {AIGW_TRANSPORT_VERSION, fake_send, NULL,
                                              fake_send_stream};

/* ------------------------------------------------------------------------ */
/* The server, once per process                                             */
/* ------------------------------------------------------------------------ */

static serve_server *srv;
static aigw_config *gateway;
static FILE *log_file;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER; /* log_buf, closed */
static pthread_cond_t closed_cv = PTHREAD_COND_INITIALIZER;
static gbuf log_buf;      /* the access log of the current input */
static unsigned closed;   /* connections closed so far */
static uint64_t *windows; /* every 8-byte window of a secret, sorted */
static size_t n_windows;

static ssize_t log_write(void *cookie, const char *buf, size_t n)
{
    (void)cookie;
    pthread_mutex_lock(&mu);
    gb_add(&log_buf, buf, n);
    pthread_mutex_unlock(&mu);
    return (ssize_t)n;
}

static void on_closed(void *cls)
{
    (void)cls;
    pthread_mutex_lock(&mu);
    closed++;
    pthread_cond_broadcast(&closed_cv);
    pthread_mutex_unlock(&mu);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void teardown(void)
{
    serve_server_free(srv);
    srv = NULL;
    aigw_config_unref(gateway);
    fclose(log_file);
    free(log_buf.p);
    free(windows);
}

/* A client for the gateway file with the fake transport and clock. */
static aigw_client *new_client(void)
{
    aigw_client *client = NULL;
    aigw_error *err = NULL;
    check(aigw_client_new(gateway, &client, &err) == AIGW_OK, "aigw_client_new");
    check(aigw_client_set_transport(client, &FAKE_TRANSPORT, NULL) == AIGW_OK, "set_transport");
    check(aigw_client_set_clock(client, &FAKE_CLOCK, NULL) == AIGW_OK, "set_clock");
    return client;
}

static void setup(void)
{
    static const cookie_io_functions_t io = {NULL, log_write, NULL, NULL};
    aigw_error *err = NULL;
    serve_limits limits;
    size_t i, off;

    signal(SIGPIPE, SIG_IGN); /* as cmd_serve does */
    check(aigw_config_parse(GATEWAY, sizeof GATEWAY - 1, &gateway, &err) == AIGW_OK,
          "the harness's gateway file is refused");
    check((log_file = fopencookie(NULL, "w", io)) != NULL, "fopencookie");
    serve_limits_default(&limits);
    limits.max_body = MAX_BODY;
    limits.max_header = MAX_HEADER;
    srv = serve_server_new(gateway, &limits, log_file, &err);
    check(srv != NULL, "serve_server_new");
    check(serve_server_start_unbound(srv, on_closed, NULL) == 0, "serve_server_start_unbound");

    for (i = 0; i < N_SECRETS; i++)
        n_windows += strlen(SECRETS[i]) - 7;
    check((windows = calloc(n_windows, sizeof *windows)) != NULL, "out of memory");
    n_windows = 0;
    for (i = 0; i < N_SECRETS; i++)
        for (off = 0; off + 8 <= strlen(SECRETS[i]); off++)
            memcpy(&windows[n_windows++], SECRETS[i] + off, 8);
    qsort(windows, n_windows, sizeof *windows, cmp_u64);
    atexit(teardown);
}

/* ------------------------------------------------------------------------ */
/* One exchange                                                             */
/* ------------------------------------------------------------------------ */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Writes the request bytes (then shuts the write side), reads the answer
 * until the server closes, and waits until the connection is gone. */
static void exchange(const uint8_t *req, size_t len, gbuf *answer)
{
    int sv[2];
    size_t off = 0;
    bool writing = true;
    int64_t deadline = mono_ms() + DEADLINE_MS;
    unsigned target;
    struct timespec until;

    check(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0, "socketpair");
    pthread_mutex_lock(&mu);
    target = closed + 1;
    pthread_mutex_unlock(&mu);
    check(serve_server_add_connection(srv, sv[0]) == 0, "serve_server_add_connection");
    if (len == 0) {
        shutdown(sv[1], SHUT_WR);
        writing = false;
    }
    for (;;) {
        struct pollfd p;
        int64_t left = deadline - mono_ms();
        check(left > 0, "hang: the answer did not end within 8 s");
        p.fd = sv[1];
        p.events = (short)(POLLIN | (writing ? POLLOUT : 0));
        p.revents = 0;
        if (poll(&p, 1, (int)left) <= 0)
            continue;
        if (writing && (p.revents & (POLLOUT | POLLERR | POLLHUP))) {
            ssize_t w = send(sv[1], req + off, len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (w > 0)
                off += (size_t)w;
            else if (w < 0 && errno != EAGAIN && errno != EINTR)
                writing = false; /* the server closed: read what it said */
            if (writing && off == len) {
                shutdown(sv[1], SHUT_WR);
                writing = false;
            }
        }
        if (p.revents & (POLLIN | POLLERR | POLLHUP)) {
            char buf[65536];
            ssize_t r = recv(sv[1], buf, sizeof buf, MSG_DONTWAIT);
            if (r > 0)
                gb_add(answer, buf, (size_t)r);
            else if (r == 0 || (errno != EAGAIN && errno != EINTR))
                break; /* the end (ECONNRESET: it closed with our bytes unread) */
        }
    }
    close(sv[1]);
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += DEADLINE_MS / 1000;
    pthread_mutex_lock(&mu);
    while (closed < target) {
        int rc = pthread_cond_timedwait(&closed_cv, &mu, &until);
        check(rc != ETIMEDOUT || closed >= target, "hang: the connection did not close");
    }
    pthread_mutex_unlock(&mu);
    /* and until libmicrohttpd has freed it, so that the input's allocations
     * and frees balance (else libFuzzer runs a leak check after each) */
    while (serve_server_connections(srv) > 0) {
        struct timespec ts = {0, 20000};
        check(mono_ms() < deadline + DEADLINE_MS, "hang: the connection was not freed");
        nanosleep(&ts, NULL);
    }
}

/* ------------------------------------------------------------------------ */
/* The access log                                                           */
/* ------------------------------------------------------------------------ */

typedef struct logline {
    char method[32];
    char route[32];
    int status;
    int key;          /* index into ACCESS_IDS; -1: none */
    char conf[32];    /* "" when none */
    bool attempts;    /* the library ran it */
    size_t n_attempts;
    bool failed;      /* an errorCode, or an outcome other than "served" */
} logline;

static bool utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i], need, cp, min;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            need = 1, cp = c & 0x1f, min = 0x80;
        } else if (c >= 0xe0 && c <= 0xef) {
            need = 2, cp = c & 0x0f, min = 0x800;
        } else if (c >= 0xf0 && c <= 0xf4) {
            need = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return false;
        }
        if (n - i <= need)
            return false;
        for (c = 1; c <= need; c++) {
            if ((s[i + c] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + c] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += need + 1;
    }
    return true;
}

static void copy_str(char *dst, size_t cap, const cJSON *v)
{
    check(cJSON_IsString(v), "access log: a member is not a string");
    snprintf(dst, cap, "%s", v->valuestring);
}

static void read_logline(const char *line, size_t len, logline *l)
{
    cJSON *o, *v;
    size_t k;
    check(utf8_valid((const unsigned char *)line, len), "access log: a line is not UTF-8");
    o = cJSON_ParseWithLength(line, len);
    check(cJSON_IsObject(o), "access log: a line is not a JSON object");
    memset(l, 0, sizeof *l);
    copy_str(l->method, sizeof l->method, cJSON_GetObjectItemCaseSensitive(o, "method"));
    copy_str(l->route, sizeof l->route, cJSON_GetObjectItemCaseSensitive(o, "route"));
    v = cJSON_GetObjectItemCaseSensitive(o, "status");
    check(cJSON_IsNumber(v), "access log: no status");
    l->status = v->valueint;
    l->key = -1;
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "accessKey")) != NULL) {
        char id[64];
        copy_str(id, sizeof id, v);
        for (k = 0; k < N_ACCESS; k++)
            if (!strcmp(id, ACCESS_IDS[k]))
                l->key = (int)k;
        check(l->key >= 0, "access log: an access key id the gateway file does not have");
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "configuration")) != NULL)
        copy_str(l->conf, sizeof l->conf, v);
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "attempts")) != NULL) {
        check(cJSON_IsArray(v), "access log: attempts is not an array");
        l->attempts = true;
        l->n_attempts = (size_t)cJSON_GetArraySize(v);
    }
    v = cJSON_GetObjectItemCaseSensitive(o, "outcome");
    l->failed = cJSON_GetObjectItemCaseSensitive(o, "errorCode") != NULL ||
                (v && (!cJSON_IsString(v) || strcmp(v->valuestring, "served") != 0));
    cJSON_Delete(o);
}

/* The log's lines (each ends with a newline); *n of them. */
static logline *read_log(const gbuf *log, size_t *n)
{
    logline *lines = NULL;
    size_t pos = 0, cap = 0;
    *n = 0;
    while (pos < log->len) {
        const char *nl = memchr(log->p + pos, '\n', log->len - pos);
        check(nl != NULL, "access log: a line without its newline");
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            lines = realloc(lines, cap * sizeof *lines);
            check(lines != NULL, "out of memory in the harness");
        }
        read_logline(log->p + pos, (size_t)(nl - (log->p + pos)), &lines[(*n)++]);
        pos = (size_t)(nl - log->p) + 1;
    }
    return lines;
}

/* ------------------------------------------------------------------------ */
/* The answer: HTTP/1.x responses                                           */
/* ------------------------------------------------------------------------ */

typedef struct head {
    int status;
    int n_length;       /* Content-Length headers */
    uint64_t length;
    bool chunked, other_te;
    bool close;         /* Connection: close */
    bool json;          /* Content-Type: application/json */
    bool sse;           /* Content-Type: text/event-stream */
} head;

static bool tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static bool name_is(const char *p, size_t n, const char *name)
{
    return strlen(name) == n && !strncasecmp(p, name, n);
}

static bool value_has(const char *v, size_t n, const char *word)
{
    size_t w = strlen(word), i;
    for (i = 0; i + w <= n; i++)
        if (!strncasecmp(v + i, word, w))
            return true;
    return false;
}

/* The status line and headers at a[pos]; the position after them. */
static size_t parse_head(const char *a, size_t len, size_t pos, head *h)
{
    size_t i = pos;
    memset(h, 0, sizeof *h);
    check(len - pos >= 14 && (!memcmp(a + i, "HTTP/1.1 ", 9) || !memcmp(a + i, "HTTP/1.0 ", 9)),
          "answer: not an HTTP/1.x status line");
    i += 9;
    check(a[i] >= '1' && a[i] <= '5' && a[i + 1] >= '0' && a[i + 1] <= '9' && a[i + 2] >= '0' &&
              a[i + 2] <= '9' && a[i + 3] == ' ',
          "answer: a bad status code");
    h->status = (a[i] - '0') * 100 + (a[i + 1] - '0') * 10 + (a[i + 2] - '0');
    for (i += 4; i < len && a[i] != '\r'; i++)
        check((unsigned char)a[i] >= 0x20 && a[i] != 0x7f, "answer: a control byte in the reason");
    check(i + 1 < len && a[i] == '\r' && a[i + 1] == '\n', "answer: the status line does not end");
    i += 2;
    for (;;) {
        size_t name = i, colon, v, vend;
        check(i + 1 < len, "answer: the headers do not end");
        if (a[i] == '\r') {
            check(a[i + 1] == '\n', "answer: a bare CR after the headers");
            return i + 2;
        }
        while (i < len && tchar((unsigned char)a[i]))
            i++;
        check(i > name && i < len && a[i] == ':', "answer: a header name that is not a token");
        colon = i++;
        while (i < len && (a[i] == ' ' || a[i] == '\t'))
            i++;
        v = i;
        for (; i < len && a[i] != '\r'; i++)
            check(((unsigned char)a[i] >= 0x20 && a[i] != 0x7f) || a[i] == '\t',
                  "answer: a control byte in a header value");
        check(i + 1 < len && a[i + 1] == '\n', "answer: a header line does not end in CRLF");
        vend = i;
        i += 2;
        if (name_is(a + name, colon - name, "content-length")) {
            size_t k;
            check(vend > v, "answer: an empty Content-Length");
            h->length = 0;
            for (k = v; k < vend; k++) {
                check(a[k] >= '0' && a[k] <= '9' && h->length < UINT64_MAX / 10,
                      "answer: a Content-Length that is not a number");
                h->length = h->length * 10 + (uint64_t)(a[k] - '0');
            }
            h->n_length++;
        } else if (name_is(a + name, colon - name, "transfer-encoding")) {
            if (vend - v == 7 && !strncasecmp(a + v, "chunked", 7))
                h->chunked = true;
            else
                h->other_te = true;
        } else if (name_is(a + name, colon - name, "connection")) {
            h->close = h->close || value_has(a + v, vend - v, "close");
        } else if (name_is(a + name, colon - name, "content-type")) {
            h->json = value_has(a + v, vend - v, "application/json");
            h->sse = value_has(a + v, vend - v, "text/event-stream");
        }
    }
}

/* A chunked body at a[pos]: the position after it, or 0 when the answer
 * ends right after a whole chunk (a stream cut). */
static size_t parse_chunked(const char *a, size_t len, size_t pos)
{
    for (;;) {
        uint64_t size = 0;
        size_t digits = 0;
        if (pos == len)
            return 0;
        for (; pos < len && isxdigit((unsigned char)a[pos]); pos++, digits++) {
            check(size < (UINT64_MAX >> 4), "answer: a chunk size too large");
            size = size * 16 + (uint64_t)(a[pos] <= '9' ? a[pos] - '0' : (a[pos] | 0x20) - 'a' + 10);
        }
        check(digits > 0, "answer: a chunk without its size");
        while (pos < len && a[pos] != '\r')
            pos++; /* chunk extensions */
        check(pos + 1 < len && a[pos + 1] == '\n', "answer: a chunk size line does not end");
        pos += 2;
        if (size == 0)
            break;
        check(size <= len - pos && len - pos - size >= 2, "answer: cut inside a chunk");
        pos += size;
        check(a[pos] == '\r' && a[pos + 1] == '\n', "answer: a chunk does not end in CRLF");
        pos += 2;
    }
    for (;;) { /* trailers, then the empty line */
        const char *crlf;
        check(pos + 1 < len, "answer: a chunked body does not end");
        if (a[pos] == '\r' && a[pos + 1] == '\n')
            return pos + 2;
        crlf = memmem(a + pos, len - pos, "\r\n", 2);
        check(crlf != NULL, "answer: a trailer line does not end");
        pos = (size_t)(crlf - a) + 2;
    }
}

/* The answer against the log: each response in order is the next logged
 * request's (the same status), except the requests logged 499 (never
 * answered) and one error answer of libmicrohttpd's own at the end. */
static void check_answer(const gbuf *ans, const logline *log, size_t n_log)
{
    const char *a = ans->p ? ans->p : "";
    size_t len = ans->len, pos = 0, li = 0;
    while (pos < len) {
        head h;
        const logline *l = NULL;
        bool no_body, last = false;
        pos = parse_head(a, len, pos, &h);
        if (h.status < 200) {
            check(h.status == 100, "answer: an interim answer other than 100 Continue");
            continue;
        }
        if (li < n_log && log[li].status != 499) {
            l = &log[li++];
            check(l->status == h.status, "answer: its status is not the one logged");
        } else {
            /* libmicrohttpd's own error: ends the connection */
            check(h.status >= 400 && !h.json, "answer: a response no request was logged for");
            last = true;
        }
        if (!l && pos == len) /* its answer to a HEAD request (unlogged) */
            break;
        if (!l && len - pos >= 9 && !memcmp(a + pos, "HTTP/1.1 ", 9))
            continue; /* libmicrohttpd 0.9.75 sends its 400 for a bad Content-Length
                         twice, the first without its body (README) */
        check(h.n_length <= 1, "answer: more than one Content-Length");
        check(!(h.n_length && (h.chunked || h.other_te)), "answer: Content-Length and chunked");
        check(!h.other_te, "answer: a transfer coding other than chunked");
        /* HEAD: libmicrohttpd sends no body; but a method "HEAD\0..." is
         * logged as HEAD and is not one to it */
        no_body = h.status == 204 || h.status == 304 ||
                  (l && !strcmp(l->method, "HEAD") &&
                   (pos == len || (len - pos >= 7 && !memcmp(a + pos, "HTTP/1.", 7))));
        check(!(h.status == 204 && (h.n_length || h.chunked)), "answer: a 204 with a length");
        if (no_body) {
            /* nothing */
        } else if (h.chunked) {
            size_t end = parse_chunked(a, len, pos);
            if (end == 0) { /* a stream cut after a whole chunk */
                check(h.sse && l && l->failed, "answer: a chunked body cut, not a failed stream");
                pos = len;
                last = true;
            } else {
                pos = end;
            }
        } else if (h.n_length) {
            check(h.length <= len - pos, "answer: shorter than its Content-Length");
            pos += (size_t)h.length;
        } else {
            pos = len; /* until the connection closes */
            last = true;
        }
        if (h.close || last) {
            check(pos == len, "answer: bytes after the connection's last response");
            break;
        }
    }
    for (; li < n_log; li++) /* requests the connection ended before answering */
        check(log[li].status == 499, "answer: a logged answer that did not come");
    for (li = 0; li + 1 < n_log; li++) /* which ends the connection */
        check(log[li].status != 499, "answer: a request logged as never answered, then another");
}

/* ------------------------------------------------------------------------ */
/* Secrets and authorisation                                                */
/* ------------------------------------------------------------------------ */

/* The input with the credential header lines (and their continuation
 * lines) of its request heads blanked: what the client sent that the
 * gateway may repeat.  Bodies are the client's own bytes whatever they hold
 * (a model name may be a line that reads "Authorization: ..."), so the
 * walk tells heads from bodies as a server would, roughly: a head ends at
 * an empty line; its body is Content-Length bytes, or chunked up to the
 * last chunk, or nothing. */
static char *public_part(const uint8_t *data, size_t size)
{
    char *p = malloc(size ? size : 1);
    size_t i = 0, length = 0;
    bool blank = false, in_head = false, chunked = false;
    check(p != NULL, "out of memory in the harness");
    if (size)
        memcpy(p, data, size);
    while (i < size) {
        char *nl = memchr(p + i, '\n', size - i);
        size_t end = nl ? (size_t)(nl - p) : size, s = i, n = end - s;
        i = end + 1;
        if (n > 0 && p[end - 1] == '\r')
            n--;
        if (!in_head) { /* a request line (or the blank lines before one) */
            in_head = n > 0;
            blank = false;
            length = 0;
            chunked = false;
            continue;
        }
        if (n == 0) { /* the end of the head: skip the body */
            const char *last;
            in_head = false;
            if (chunked)
                i = (last = memmem(p + i, size - (i < size ? i : size), "0\r\n\r\n", 5))
                        ? (size_t)(last - p) + 5
                        : size;
            else
                i = length < size - (i < size ? i : size) ? i + length : size;
            continue;
        }
        if (p[s] == ' ' || p[s] == '\t') {
            /* a continuation line: blanked when its header was */
        } else {
            blank = (n >= 13 && !strncasecmp(p + s, "authorization", 13)) ||
                    (n >= 9 && !strncasecmp(p + s, "x-api-key", 9));
            if (n >= 15 && !strncasecmp(p + s, "content-length:", 15))
                length = strtoul(p + s + 15, NULL, 10);
            if (n >= 18 && !strncasecmp(p + s, "transfer-encoding:", 18) &&
                memmem(p + s, n, "chunked", 7))
                chunked = true;
        }
        if (blank)
            memset(p + s, ' ', n);
    }
    return p;
}

static void check_secrets(const char *hay, size_t n, const char *pub, size_t pub_len,
                          const char *where)
{
    size_t i;
    for (i = 0; i + 8 <= n; i++) {
        uint64_t w;
        memcpy(&w, hay + i, 8);
        if (bsearch(&w, windows, n_windows, sizeof *windows, cmp_u64) &&
            !memmem(pub, pub_len, hay + i, 8)) {
            fprintf(stderr, "fuzz_serve: secret bytes \"%.8s\" in the %s\n", hay + i, where);
            check(false, "a secret leaked");
        }
    }
}

/* The log with each line's "method" value blanked: the method is the
 * client's own bytes at the start of a request line, which may be anywhere
 * in a line of the input (after a body whose length ends inside one). */
static char *log_without_methods(const gbuf *log)
{
    char *c = malloc(log->len + 1), *p;
    check(c != NULL, "out of memory in the harness");
    memcpy(c, log->p ? log->p : "", log->len);
    c[log->len] = '\0';
    for (p = c; (p = strstr(p, ",\"method\":\"")) != NULL;) {
        for (p += 11; *p && *p != '"'; p++) {
            if (*p == '\\' && p[1])
                *p++ = ' ';
            *p = ' ';
        }
    }
    return c;
}

static void check_authorisation(const uint8_t *data, size_t size, const logline *log,
                                size_t n_log)
{
    bool has[N_ACCESS], any_authorised = false;
    size_t i, attempts = 0;
    for (i = 0; i < N_ACCESS; i++)
        has[i] = memmem(data, size, ACCESS_VALUES[i], strlen(ACCESS_VALUES[i])) != NULL;
    for (i = 0; i < n_log; i++) {
        const logline *l = &log[i];
        if (l->key >= 0) {
            check(has[l->key], "authorised as an access key the client never sent");
            check(!strcmp(l->conf, ACCESS_CONFS[l->key]),
                  "authorised on another configuration than the key's");
            any_authorised = true;
            attempts += l->n_attempts;
            continue;
        }
        check(!l->conf[0], "a configuration without an access key");
        check(!l->attempts, "a request without an access key reached the library");
        if (l->status == 431 || l->status == 499)
            continue; /* decided before the route: its head too large; never answered */
        if (!strcmp(l->route, "other"))
            check(l->status == 404, "an unknown route, not 404");
        else if (!strcmp(l->route, "/healthz"))
            check(l->status == 200 || l->status == 405, "/healthz: not 200 or 405");
        else
            check(l->status == 401 || l->status == 405,
                  "a request without a valid access key, not 401");
    }
    check(any_authorised || atomic_load(&upstream_calls) == 0,
          "an upstream call without an authorised request");
    check(atomic_load(&upstream_calls) <= attempts, "more upstream calls than attempts logged");
}

/* ------------------------------------------------------------------------ */
/* The target                                                               */
/* ------------------------------------------------------------------------ */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool ready;
    gbuf answer = {0};
    logline *log;
    size_t n_log, i;
    char *pub, *logtext;

    if (!ready) {
        setup();
        ready = true;
    }
    if (size < SCRIPT_LEN)
        return 0;
    for (i = 0; i < SCRIPT_LEN; i++) {
        uint8_t c = data[i];
        script[i] = (uint8_t)(isxdigit(c) ? (c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10) : c & 15);
    }
    data += SCRIPT_LEN;
    size -= SCRIPT_LEN;

    /* every input from the same state: a new client (no key health,
     * stats or retry budget of earlier inputs) */
    atomic_store(&upstream_calls, 0);
    serve_server_replace_client(srv, new_client());
    pthread_mutex_lock(&mu);
    log_buf.len = 0;
    pthread_mutex_unlock(&mu);

    exchange(data, size, &answer);
    check(serve_server_idle(srv), "a request still holds a slot or is listed as running");

    pthread_mutex_lock(&mu);
    if (getenv("FUZZ_SERVE_SHOW")) /* what came back, to read a finding */
        fprintf(stderr, "---- answer (%zu bytes)\n%.*s\n---- access log, %u upstream calls\n%.*s",
                answer.len, (int)answer.len, answer.p ? answer.p : "",
                atomic_load(&upstream_calls), (int)log_buf.len, log_buf.p ? log_buf.p : "");
    log = read_log(&log_buf, &n_log);
    pthread_mutex_unlock(&mu);
    check_answer(&answer, log, n_log);
    pub = public_part(data, size);
    check_secrets(answer.p ? answer.p : "", answer.len, pub, size, "answer");
    logtext = log_without_methods(&log_buf);
    check_secrets(logtext, log_buf.len, pub, size, "access log");
    check_authorisation(data, size, log, n_log);

    free(pub);
    free(logtext);
    free(log);
    free(answer.p);
    return 0;
}
