/*
 * transport.c - the scripted transport M for tests of the engine without a
 * network: the test pushes the answers the upstream calls get, in order
 * (a status, headers and body, or a transport failure, each taking some
 * fake time and optionally running a hook inside the call), and reads back
 * what each call carried: its credential, model, URL, body and timeout.
 * M keeps its own fake clock (M.clock), which the scripted answers advance.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support.h"
#include "render.h"

mock M;

static char *dupstr(const char *s)
{
    char *d = malloc(strlen(s) + 1);
    assert_non_null(d);
    strcpy(d, s);
    return d;
}

/* The call's credential, as mock.key_prefix says. */
static char *key_of(const mock *m, const aigw_transport_request *req)
{
    size_t i;
    for (i = 0; i < req->n_headers; i++) {
        const char *v = req->headers[i].value;
        if (strcmp(req->headers[i].name, "authorization") == 0) {
            if (m->key_prefix) {
                size_t n = strlen(m->key_prefix);
                assert_true(strncmp(v, "Bearer ", 7) == 0 &&
                            strncmp(v + 7, m->key_prefix, n) == 0);
                return dupstr(v + 7 + n);
            }
            return dupstr(v + strlen("Bearer "));
        }
        if (!m->key_prefix && strcmp(req->headers[i].name, "x-api-key") == 0)
            return dupstr(v);
    }
    return dupstr(m->key_prefix ? "-" : "");
}

static char *model_of(const aigw_transport_request *req)
{
    char *body = malloc(req->body_len + 1), *p, *end, *m;
    assert_non_null(body);
    memcpy(body, req->body, req->body_len);
    body[req->body_len] = '\0';
    p = strstr(body, "\"model\":\"");
    if (!p) {
        free(body);
        return dupstr("?");
    }
    p += 9;
    end = strchr(p, '"');
    assert_non_null(end);
    *end = '\0';
    m = dupstr(p);
    free(body);
    return m;
}

static aigw_transport_result mock_send(void *ud, const aigw_transport_request *req,
                                       aigw_transport_response *resp)
{
    mock *m = ud;
    const scripted *s;
    int i = m->n_calls++, h;
    assert_true(i < MOCK_MAX_CALLS);
    m->keys[i] = key_of(m, req);
    m->models[i] = model_of(req);
    m->urls[i] = dupstr(req->url);
    m->bodies[i] = malloc(req->body_len + 1);
    assert_non_null(m->bodies[i]);
    memcpy(m->bodies[i], req->body, req->body_len);
    m->bodies[i][req->body_len] = '\0';
    m->timeouts[i] = req->timeout_ms;
    /* Each call pops the next scripted answer; with none left it succeeds
     * at once. */
    /* As a transport should, it says so when the answer cannot be kept for
     * want of memory (the library's allocation failure tests). */
    if (m->next >= m->n_script) {
        aigw_transport_response_set_status(resp, 200);
        return aigw_transport_response_append_body(resp, "{\"ok\":true}", 11) == AIGW_ENOMEM
                   ? AIGW_TR_NOMEM
                   : AIGW_TR_OK;
    }
    s = &m->script[m->next++];
    if (s->hook)
        s->hook();
    m->clock.now += s->takes_ms;
    if (s->tr != AIGW_TR_OK)
        return s->tr;
    assert_int_equal(aigw_transport_response_set_status(resp, s->status), AIGW_OK);
    for (h = 0; s->headers[h]; h += 2) {
        aigw_status st = aigw_transport_response_add_header(resp, s->headers[h], s->headers[h + 1]);
        if (st == AIGW_ENOMEM)
            return AIGW_TR_NOMEM;
        assert_int_equal(st, AIGW_OK);
    }
    if (s->body &&
        aigw_transport_response_append_body(resp, s->body, strlen(s->body)) == AIGW_ENOMEM)
        return AIGW_TR_NOMEM;
    return AIGW_TR_OK;
}

static void mock_destroy(void *ud)
{
    ((mock *)ud)->destroyed++;
}

const aigw_transport MOCK_TRANSPORT = {AIGW_TRANSPORT_VERSION, mock_send, mock_destroy, NULL};

static void free_calls(void)
{
    int i;
    for (i = 0; i < M.n_calls && i < MOCK_MAX_CALLS; i++) {
        free(M.keys[i]);
        free(M.models[i]);
        free(M.urls[i]);
        free(M.bodies[i]);
    }
}

void mock_reset(const char *key_prefix)
{
    free_calls();
    memset(&M, 0, sizeof M);
    M.key_prefix = key_prefix;
    M.clock.now = MOCK_T0;
}

void mock_rewind(void)
{
    free_calls();
    memset(M.script, 0, sizeof M.script);
    M.n_script = M.next = M.n_calls = 0;
}

int mock_setup(void **state)
{
    (void)state;
    mock_reset(NULL);
    return 0;
}

int mock_teardown(void **state)
{
    (void)state;
    mock_reset(NULL);
    return 0;
}

static void owned_store_free(void *ud)
{
    fake_store_free(ud);
}

aigw_client *mock_attach(aigw_client *c)
{
    const char *store = getenv("AIGW_TEST_HEALTH_STORE");
    assert_int_equal(aigw_client_set_transport(c, &MOCK_TRANSPORT, &M), AIGW_OK);
    assert_int_equal(aigw_client_set_clock(c, &FAKE_CLOCK, &M.clock), AIGW_OK);
    if (store && strcmp(store, "fake") == 0) {
        /* the same suite through a health store: a fake one of its own */
        aigw_health_store vt = FAKE_STORE;
        fake_store *fs = fake_store_new(&M.clock);
        assert_non_null(fs);
        vt.destroy = owned_store_free;
        assert_int_equal(aigw_client_set_health_store(c, &vt, fs), AIGW_OK);
    }
    M.client = c;
    return c;
}

scripted *push(int status, const char *body)
{
    scripted *s;
    assert_true(M.n_script < MOCK_MAX_CALLS);
    s = &M.script[M.n_script++];
    s->status = status;
    s->body = body;
    return s;
}

scripted *push_h(int status, const char *hname, const char *hvalue, const char *body)
{
    scripted *s = push(status, body);
    s->headers[0] = hname;
    s->headers[1] = hvalue;
    return s;
}

scripted *push_tr(aigw_transport_result tr, int64_t takes_ms)
{
    scripted *s = push(0, NULL);
    s->tr = tr;
    s->takes_ms = takes_ms;
    return s;
}

static int call_field(const void *ctx, size_t i, const char *name, char *out, size_t cap)
{
    (void)ctx;
    if (strcmp(name, "key") == 0)
        snprintf(out, cap, "%s", M.keys[i]);
    else if (strcmp(name, "model") == 0)
        snprintf(out, cap, "%s", M.models[i]);
    else if (strcmp(name, "url") == 0)
        snprintf(out, cap, "%s", M.urls[i]);
    else
        return -1;
    return 0;
}

void calls_string(const char *fields, char *buf, size_t size)
{
    size_t n = M.n_calls < MOCK_MAX_CALLS ? (size_t)M.n_calls : MOCK_MAX_CALLS;
    (void)render_items(buf, size, n, fields, call_field, NULL);
}

void assert_calls_at(const char *fields, const char *want, const char *file, int line)
{
    char got[4096];
    calls_string(fields, got, sizeof got);
    _assert_string_equal(got, want, file, line);
}
