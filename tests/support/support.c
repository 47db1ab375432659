/*
 * support.c - clients and requests for the tests, and what a response says
 * as strings: a config or client from gateway JSON (failing the test with
 * the library's message), sending a body, the attempts and skips rendered
 * by a fields spec and compared in one assertion that prints the trace, the
 * library's own error answer, the absence of key values, and a snapshot's
 * entries.  Also the renderer all *_string helpers share (render.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "support.h"
#include "render.h"

/* ---- rendering ---- */

static void append(char *buf, size_t size, size_t *len, const char *s)
{
    int n;
    if (*len + 1 >= size)
        return;
    n = snprintf(buf + *len, size - *len, "%s", s);
    *len += n < 0 ? 0 : (size_t)n;
    if (*len >= size)
        *len = size - 1;
}

int render_items(char *buf, size_t size, size_t n, const char *fields, render_field_fn fn,
                 const void *ctx)
{
    size_t i, len = 0;
    int rc = 0;
    buf[0] = '\0';
    for (i = 0; i < n; i++) {
        const char *p = fields;
        if (i)
            append(buf, size, &len, " ");
        while (*p) {
            char name[32], value[1024];
            size_t k = 0;
            if (!((*p >= 'a' && *p <= 'z') || *p == '_')) {
                char c[2] = {*p++, '\0'};
                append(buf, size, &len, c);
                continue;
            }
            while ((*p >= 'a' && *p <= 'z') || *p == '_') {
                if (k + 1 < sizeof name)
                    name[k++] = *p;
                p++;
            }
            name[k] = '\0';
            value[0] = '\0';
            if (fn(ctx, i, name, value, sizeof value) != 0) {
                snprintf(value, sizeof value, "<%s?>", name);
                rc = -1;
            }
            append(buf, size, &len, value);
        }
    }
    return rc;
}

/* Fails at the caller's line with a message. */
static void fail_at(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail_at(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprint_error(fmt, ap);
    va_end(ap);
    print_error("\n");
    _fail(file, line);
}

/* ---- clients and requests ---- */

aigw_config *config_from_json(const char *json)
{
    aigw_config *cfg = NULL;
    aigw_error *err = NULL;
    if (aigw_config_parse(json, strlen(json), &cfg, &err) != AIGW_OK)
        fail_msg("config: %s\n%s", err ? aigw_error_message(err) : "?", json);
    assert_non_null(cfg);
    return cfg;
}

char *mock_gateway_json(const char *name, const char *base_url, const char *keys,
                        const char *rules, const char *gw)
{
    static const char fmt[] =
        "{\"providers\":[{\"providerId\":\"mock\",\"name\":\"Mock\",\"baseUrl\":\"%s\"}],"
        "\"providerKeys\":[%s],"
        "\"accessKeyConfiguration\":{\"name\":\"%s\",\"router\":{\"rules\":[%s]}},"
        "\"gatewayConfig\":{%s}}";
    size_t n = sizeof fmt + strlen(base_url) + strlen(keys) + strlen(name) + strlen(rules) +
               strlen(gw);
    char *s = malloc(n);
    assert_non_null(s);
    snprintf(s, n, fmt, base_url, keys, name, rules, gw);
    return s;
}

aigw_client *client_on(aigw_config *cfg)
{
    aigw_client *c = NULL;
    aigw_error *err = NULL;
    if (aigw_client_new(cfg, &c, &err) != AIGW_OK)
        fail_msg("client: %s", err ? aigw_error_message(err) : "?");
    assert_non_null(c);
    return c;
}

aigw_client *client_from_json(const char *json)
{
    aigw_config *cfg = config_from_json(json);
    aigw_client *c = client_on(cfg);
    aigw_config_unref(cfg); /* the client holds its own reference */
    return c;
}

void set_config(aigw_client *c, aigw_config *cfg)
{
    aigw_error *err = NULL;
    if (aigw_client_set_config(c, cfg, &err) != AIGW_OK)
        fail_msg("set_config: %s", err ? aigw_error_message(err) : "?");
}

aigw_response *send_body(aigw_client *c, const char *body)
{
    aigw_request *req = NULL;
    aigw_response *resp = NULL;
    aigw_error *err = NULL;
    assert_int_equal(aigw_request_new(&req), AIGW_OK);
    assert_int_equal(aigw_request_set_body(req, body, strlen(body)), AIGW_OK);
    if (aigw_client_send(c, req, &resp, &err) != AIGW_OK)
        fail_msg("send: %s", err ? aigw_error_message(err) : "?");
    aigw_request_free(req);
    assert_non_null(resp);
    assert_non_null(aigw_response_trace_json(resp));
    return resp;
}

/* ---- what a response says ---- */

static int attempt_field(const void *ctx, size_t i, const char *name, char *out, size_t cap)
{
    const aigw_attempt *a = aigw_response_attempt(ctx, i);
    if (strcmp(name, "provider") == 0)
        snprintf(out, cap, "%s", aigw_attempt_provider(a));
    else if (strcmp(name, "model") == 0)
        snprintf(out, cap, "%s", aigw_attempt_model(a));
    else if (strcmp(name, "key") == 0)
        snprintf(out, cap, "%s", aigw_attempt_key_id(a));
    else if (strcmp(name, "step") == 0)
        snprintf(out, cap, "%d", aigw_attempt_step(a));
    else if (strcmp(name, "status") == 0)
        snprintf(out, cap, "%d", aigw_attempt_status_code(a));
    else if (strcmp(name, "result") == 0 && aigw_attempt_transport_error(a))
        snprintf(out, cap, "%s", aigw_attempt_transport_error(a));
    else if (strcmp(name, "result") == 0)
        snprintf(out, cap, "%d", aigw_attempt_status_code(a));
    else if (strcmp(name, "class") == 0)
        snprintf(out, cap, "%s", aigw_attempt_error_class(a) ? aigw_attempt_error_class(a) : "-");
    else if (strcmp(name, "verdict") == 0)
        snprintf(out, cap, "%s", aigw_attempt_verdict(a));
    else if (strcmp(name, "completion") == 0)
        snprintf(out, cap, "%s", aigw_attempt_completion(a));
    else
        return -1;
    return 0;
}

int attempts_string(const aigw_response *r, const char *fields, char *buf, size_t size)
{
    size_t i, n = aigw_response_attempt_count(r);
    int rc = render_items(buf, size, n, fields, attempt_field, r);
    for (i = 0; i < n; i++)
        if (aigw_attempt_number(aigw_response_attempt(r, i)) != (int)i + 1)
            rc = -1;
    return rc;
}

static int skip_field(const void *ctx, size_t i, const char *name, char *out, size_t cap)
{
    const aigw_response *r = ctx;
    const char *prov = NULL, *model = NULL, *reason = NULL, *key;
    if (aigw_response_skip(r, i, &prov, &model, &reason) != AIGW_OK)
        return -1;
    key = aigw_response_skip_key_id(r, i);
    if (strcmp(name, "provider") == 0)
        snprintf(out, cap, "%s", prov);
    else if (strcmp(name, "model") == 0)
        snprintf(out, cap, "%s", model);
    else if (strcmp(name, "reason") == 0)
        snprintf(out, cap, "%s", reason);
    else if (strcmp(name, "key") == 0 && key)
        snprintf(out, cap, "%s", key);
    else if (strcmp(name, "wait") == 0)
        snprintf(out, cap, "%lld", (long long)aigw_response_skip_wait_ms(r, i));
    else
        return -1;
    return 0;
}

int skips_string(const aigw_response *r, const char *fields, char *buf, size_t size)
{
    return render_items(buf, size, aigw_response_skip_count(r), fields, skip_field, r);
}

/* Fails at file:line unless rc is 0 and got is want. */
static void check_rendered(const aigw_response *r, const char *what, int rc, const char *got,
                           const char *want, const char *file, int line)
{
    if (rc != 0 || strcmp(got, want) != 0)
        fail_at(file, line, "%s \"%s\"%s, want \"%s\"; trace: %s", what, got,
                rc ? " (misnumbered, unreadable or an unknown field)" : "", want,
                aigw_response_trace_json(r));
}

void assert_attempts_at(const aigw_response *r, const char *fields, const char *want,
                        const char *file, int line)
{
    char got[4096];
    int rc = attempts_string(r, fields, got, sizeof got);
    check_rendered(r, "attempts", rc, got, want, file, line);
}

void assert_skips_at(const aigw_response *r, const char *fields, const char *want,
                     const char *file, int line)
{
    char got[4096];
    int rc = skips_string(r, fields, got, sizeof got);
    check_rendered(r, "skips", rc, got, want, file, line);
}

void assert_error_answer(const aigw_response *r, int status, const char *code,
                         const char *needle)
{
    size_t len;
    const char *body = aigw_response_body(r, &len);
    cJSON *j = cJSON_ParseWithLength(body, len);
    cJSON *e, *c, *m, *t, *id;
    if (!j)
        fail_msg("not JSON: %.*s", (int)len, body);
    if (aigw_response_status(r) != status || !aigw_response_error_code(r) ||
        strcmp(aigw_response_error_code(r), code) != 0)
        fail_msg("status %d code %s, want %d %s; body %s; trace %s", aigw_response_status(r),
                 aigw_response_error_code(r) ? aigw_response_error_code(r) : "(null)", status,
                 code, body, aigw_response_trace_json(r));
    e = cJSON_GetObjectItemCaseSensitive(j, "error");
    c = cJSON_GetObjectItemCaseSensitive(e, "code");
    m = cJSON_GetObjectItemCaseSensitive(e, "message");
    t = cJSON_GetObjectItemCaseSensitive(e, "type");
    id = cJSON_GetObjectItemCaseSensitive(e, "requestId");
    assert_true(cJSON_IsString(c) && cJSON_IsString(m) && cJSON_IsString(t) && cJSON_IsString(id));
    assert_string_equal(c->valuestring, code);
    assert_string_equal(t->valuestring, "aigw_error");
    assert_string_equal(id->valuestring, aigw_response_request_id(r));
    if (needle && !strstr(m->valuestring, needle))
        fail_msg("message '%s' does not name '%s'", m->valuestring, needle);
    cJSON_Delete(j);
}

void assert_no_secret_in(const char *s, const char *const *keys, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        if (strstr(s, keys[i]))
            fail_msg("a key value in: %s", s);
}

void assert_response_no_secret(const aigw_response *r, const char *const *keys, size_t n)
{
    size_t len, j;
    assert_no_secret_in(aigw_response_body(r, &len), keys, n);
    assert_no_secret_in(aigw_response_trace_json(r), keys, n);
    for (j = 0; j < aigw_response_header_count(r); j++) {
        const char *name, *value;
        assert_int_equal(aigw_response_header(r, j, &name, &value), AIGW_OK);
        assert_no_secret_in(value, keys, n);
    }
}

/* ---- snapshots ---- */

const aigw_stat *find_stat(const aigw_stats *s, const char *kind, const char *name)
{
    size_t i;
    for (i = 0; i < aigw_stats_count(s); i++) {
        const aigw_stat *e = aigw_stats_at(s, i);
        if (strcmp(e->kind, kind) == 0 && strcmp(e->name, name) == 0)
            return e;
    }
    fail_msg("no %s entry \"%s\" in the snapshot: %s", kind, name, aigw_stats_json(s));
    return NULL;
}
