/* test_body.c - the request body rewrite (byte for byte) and the model list;
 * bodies that are not UTF-8 or nest too deep; cJSON out of memory (its
 * hooks, set by the test) told from a bad body by aigw__json_check, which
 * must read every text as cJSON does; and, through the scripted transport,
 * what a request with such bytes (or an upstream answering with them) gets
 * back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "oom.h"
#include "support.h"

/* ---- helpers ---- */

static void rewrites_to(const char *body, const char *model, const char *want)
{
    aigw_buf out = AIGW_BUF_INIT;
    int rc = aigw__body_rewrite(body, strlen(body), model, &out);
    if (rc != 0)
        print_message("body: %s\n", body);
    assert_int_equal(rc, 0);
    assert_non_null(out.data);
    assert_string_equal(out.data, want);
    assert_int_equal(out.len, strlen(want));
    aigw__buf_free(&out);
}

static void refused_n(const char *body, size_t len)
{
    aigw_buf out = AIGW_BUF_INIT;
    assert_int_equal(aigw__buf_puts(&out, "keep"), 0);
    if (aigw__body_rewrite(body, len, "m", &out) != -1)
        fail_msg("accepted: %.*s", (int)len, body ? body : "(null)");
    /* What was in the buffer before is left as it was. */
    assert_string_equal(out.data, "keep");
    assert_int_equal(out.len, 4);
    aigw__buf_free(&out);
}

static void refused(const char *body)
{
    refused_n(body, strlen(body));
}

/* ---- rewrite ---- */

static void test_rewrite_basic(void **state)
{
    (void)state;
    rewrites_to("{\"model\":\"gpt-4o\",\"models\":[\"a\",\"b\"],\"messages\":[{\"role\":\"user\","
                "\"content\":\"Hello\"}]}",
                "gpt-4o-mini",
                "{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":"
                "\"Hello\"}]}");
    rewrites_to("{\"model\":\"a\"}", "b", "{\"model\":\"b\"}");
    /* The model is written as a JSON string, escaped. */
    rewrites_to("{\"model\":\"a\"}", "x\"y\\z\n\x01", "{\"model\":\"x\\\"y\\\\z\\n\\u0001\"}");
    rewrites_to("{\"model\":\"a\"}", "caf\xc3\xa9", "{\"model\":\"caf\xc3\xa9\"}");
    /* Whatever the old value was. */
    rewrites_to("{\"model\":{\"x\":[1,{\"y\":\"}\"}]},\"n\":1}", "m",
                "{\"model\":\"m\",\"n\":1}");
    rewrites_to("{\"model\":null}", "m", "{\"model\":\"m\"}");
    rewrites_to("{\"model\":123,\"a\":true}", "m", "{\"model\":\"m\",\"a\":true}");
}

static void test_rewrite_pretty(void **state)
{
    (void)state;
    /* ngrok-docs 22-req-fallback-provider-qualified.json */
    rewrites_to("{\n"
                "  \"model\": \"openai:gpt-4o\",\n"
                "  \"models\": [\n"
                "    \"openai:gpt-4o-mini\",\n"
                "    \"anthropic:claude-sonnet-4-6\"\n"
                "  ],\n"
                "  \"messages\": [{\"role\": \"user\", \"content\": \"Hello\"}]\n"
                "}\n",
                "gpt-4o-mini",
                "{\n"
                "  \"model\": \"gpt-4o-mini\",\n"
                "  \"messages\": [{\"role\": \"user\", \"content\": \"Hello\"}]\n"
                "}\n");
    rewrites_to("\r\n\t{ \"model\" :\t\"m\" ,\n \"models\" : [ ] , \"t\" : 1.0 }\n  ", "N",
                "\r\n\t{ \"model\" :\t\"N\" , \"t\" : 1.0 }\n  ");
}

static void test_rewrite_models_positions(void **state)
{
    (void)state;
    /* first */
    rewrites_to("{\"models\":[\"a\"],\"model\":\"m\",\"x\":1}", "N", "{\"model\":\"N\",\"x\":1}");
    rewrites_to("{ \"models\" : [\"a\"] , \"model\":\"m\"}", "N", "{ \"model\":\"N\"}");
    /* middle */
    rewrites_to("{\"model\":\"m\", \"models\":[], \"x\":1}", "N", "{\"model\":\"N\", \"x\":1}");
    /* last */
    rewrites_to("{\"model\":\"m\",\"models\":[\"a\"]}", "N", "{\"model\":\"N\"}");
    rewrites_to("{\"x\":1,\"model\":\"m\" , \"models\":[\"a\"] }", "N",
                "{\"x\":1,\"model\":\"N\" }");
    rewrites_to("{\n  \"model\": \"m\",\n  \"models\": [\"a\"]\n}", "N",
                "{\n  \"model\": \"N\"\n}");
    /* the only member: model is added in its place */
    rewrites_to("{\"models\":[\"a\"]}", "N", "{\"model\":\"N\"}");
    rewrites_to("{ \"models\" : null }", "N", "{ \"model\":\"N\" }");
    /* twice, and with a value of any type */
    rewrites_to("{\"models\":1,\"model\":\"m\",\"models\":{\"a\":[]},\"x\":2}", "N",
                "{\"model\":\"N\",\"x\":2}");
    /* several in a row, at the end */
    rewrites_to("{\"x\":1,\"models\":1,\"models\":2}", "N", "{\"model\":\"N\",\"x\":1}");
}

static void test_rewrite_adds_model(void **state)
{
    (void)state;
    rewrites_to("{}", "N", "{\"model\":\"N\"}");
    rewrites_to("  { }  ", "N", "  { \"model\":\"N\"}  ");
    rewrites_to("{\"messages\":[]}", "N", "{\"model\":\"N\",\"messages\":[]}");
    rewrites_to("{\n  \"messages\": []\n}", "N", "{\n  \"model\":\"N\",\n  \"messages\": []\n}");
    rewrites_to("{\"models\":[\"a\"],\"messages\":[]}", "N", "{\"model\":\"N\",\"messages\":[]}");
    rewrites_to("{\"messages\":[],\"models\":[\"a\"]}", "N", "{\"model\":\"N\",\"messages\":[]}");
    /* Keys that merely look like it are other members. */
    rewrites_to("{\"Model\":\"a\",\"model \":\"b\",\"modelx\":1}", "N",
                "{\"model\":\"N\",\"Model\":\"a\",\"model \":\"b\",\"modelx\":1}");
}

static void test_rewrite_keeps_bytes(void **state)
{
    (void)state;
    /* Numbers as written, even those no double holds. */
    rewrites_to("{\"model\":\"m\",\"t\":1.0,\"big\":1e400,\"n\":-0,\"i\":12345678901234567890,"
                "\"f\":0.1000000000000000055511151231257827}",
                "N",
                "{\"model\":\"N\",\"t\":1.0,\"big\":1e400,\"n\":-0,\"i\":12345678901234567890,"
                "\"f\":0.1000000000000000055511151231257827}");
    /* Escapes as written. */
    rewrites_to("{\"c\":\"caf\\u00e9 \\ud83d\\ude00 \\/ \\\" \\\\\",\"model\":\"m\"}", "N",
                "{\"c\":\"caf\\u00e9 \\ud83d\\ude00 \\/ \\\" \\\\\",\"model\":\"N\"}");
    /* Raw UTF-8 and a BOM. */
    rewrites_to("\xef\xbb\xbf{\"c\":\"\xe2\x82\xac\",\"model\":\"m\"}", "N",
                "\xef\xbb\xbf{\"c\":\"\xe2\x82\xac\",\"model\":\"N\"}");
    /* Strings that look like structure. */
    rewrites_to("{\"x\":\"}{\\\"model\\\":\",\"y\":[\"]\",\"models\"],\"model\":\"m\"}", "N",
                "{\"x\":\"}{\\\"model\\\":\",\"y\":[\"]\",\"models\"],\"model\":\"N\"}");
}

static void test_rewrite_escaped_keys(void **state)
{
    (void)state;
    /* Keys are compared unescaped. */
    rewrites_to("{\"mo\\u0064el\":\"m\",\"x\":1}", "N", "{\"mo\\u0064el\":\"N\",\"x\":1}");
    rewrites_to("{\"\\u006d\\u006F\\u0064\\u0065\\u006c\":\"m\"}", "N",
                "{\"\\u006d\\u006F\\u0064\\u0065\\u006c\":\"N\"}");
    rewrites_to("{\"model\":\"m\",\"mo\\u0064els\":[\"a\"],\"x\":1}", "N",
                "{\"model\":\"N\",\"x\":1}");
    /* cJSON cuts a key at \u0000 (it would read "model" twice): refused */
    refused("{\"model\\u0000\":\"m\"}");
    rewrites_to("{\"mod\\\"el\":\"m\"}", "N", "{\"model\":\"N\",\"mod\\\"el\":\"m\"}");
}

static void test_rewrite_nested_untouched(void **state)
{
    (void)state;
    rewrites_to("{\"messages\":[{\"model\":\"x\",\"models\":[1]}],\"model\":\"m\","
                "\"meta\":{\"model\":\"y\",\"models\":[]}}",
                "N",
                "{\"messages\":[{\"model\":\"x\",\"models\":[1]}],\"model\":\"N\","
                "\"meta\":{\"model\":\"y\",\"models\":[]}}");
    /* Duplicate top-level models: every one is replaced, whichever the
     * upstream's parser keeps. */
    rewrites_to("{\"model\":\"a\",\"x\":1,\"model\":\"b\"}", "N",
                "{\"model\":\"N\",\"x\":1,\"model\":\"N\"}");
}

static void test_rewrite_refused(void **state)
{
    static const char nul_inside[] = "{\"model\":\"m\"\0}";
    static const char nul_after[] = "{\"model\":\"m\"}\0";
    aigw_buf out = AIGW_BUF_INIT;
    (void)state;
    refused("");
    refused("   ");
    refused("[]");
    refused("[{\"model\":\"m\"}]");
    refused("\"model\"");
    refused("1");
    refused("null");
    refused("{");
    refused("{\"model\":\"m\"");
    refused("{\"model\":\"m");
    refused("{\"model\":}");
    refused("{\"model\" \"m\"}");
    refused("{model:\"m\"}");
    refused("{\"model\":\"m\",}");
    refused("{\"model\":\"m\"} x");
    refused("{\"model\":\"m\"}{}");
    refused("{\"a\":[1,2}");
    /* what cJSON reads differently from the scanner (found by tests/fuzz):
     * a control byte where cJSON sees whitespace, a \u escape cJSON turns
     * into U+0000 (cutting the string), a raw NUL in a string */
    refused("{\"x\":\x01{},\"model\":\"gpt-4o\",\"models\":[\"b\"]}");
    refused("{\"model\":\"gpt-4o\",\"stream\":\x01true}");
    refused("{\"model\":\"gpt-4o\\u00zz-not-this\"}");
    refused("{\"model\\uzzzz\":\"m\"}");
    refused("{\"model\":\"m\\u12\"}");
    refused_n("{\"model\":\"gpt\0x\"}", 17);
    refused("\xff\xfe garbage");
    refused_n(nul_inside, sizeof nul_inside - 1);
    refused_n(nul_after, sizeof nul_after - 1);
    refused_n(NULL, 0);
    /* cJSON takes control bytes for whitespace; JSON does not. */
    refused("{\x01\"model\":\"m\"}");
    refused("{\"model\":\"m\"\x0b}");
    /* A truncated body: the length rules, not a NUL. */
    refused_n("{\"model\":\"m\"}", 12);
    assert_int_equal(aigw__body_rewrite("{}", 2, NULL, &out), -1);
    assert_int_equal(aigw__body_rewrite("{}", 2, "m", NULL), -1);
    assert_null(out.data);
}

static void test_rewrite_appends(void **state)
{
    aigw_buf out = AIGW_BUF_INIT;
    (void)state;
    assert_int_equal(aigw__buf_puts(&out, "prefix:"), 0);
    assert_int_equal(aigw__body_rewrite("{\"model\":\"a\"}", 13, "b", &out), 0);
    assert_string_equal(out.data, "prefix:{\"model\":\"b\"}");
    aigw__buf_free(&out);
}

static void test_rewrite_deep(void **state)
{
    /* Deep nesting is refused by the validator (cJSON stops at 1000 levels);
     * under that it is copied as is. */
    size_t depth = 900, i, n;
    char *body = malloc(2 * depth + 64), *want = malloc(2 * depth + 64);
    aigw_buf out = AIGW_BUF_INIT;
    (void)state;
    assert_non_null(body);
    assert_non_null(want);
    n = (size_t)sprintf(body, "{\"models\":[\"a\"],\"x\":");
    for (i = 0; i < depth; i++)
        body[n++] = '[';
    for (i = 0; i < depth; i++)
        body[n++] = ']';
    body[n++] = '}';
    body[n] = '\0';
    strcpy(want, "{\"model\":\"N\",");
    strcat(want, body + strlen("{\"models\":[\"a\"],"));
    assert_int_equal(aigw__body_rewrite(body, n, "N", &out), 0);
    assert_string_equal(out.data, want);
    aigw__buf_free(&out);
    free(body);
    free(want);
}

static void test_rewrite_alloc_failures(void **state)
{
    static const char body[] = "{\n  \"models\": [\"a\"],\n  \"messages\": [{\"role\": \"user\"}],"
                               "\n  \"stream\": true\n}";
    static const char want[] = "{\n  \"model\":\"N\",\n  \"messages\": [{\"role\": \"user\"}],"
                               "\n  \"stream\": true\n}";
    long n;
    int rc = -2;
    (void)state;
    for (n = 1; n < 100 && rc != 0; n++) {
        aigw_buf out = AIGW_BUF_INIT;
        aigw__alloc_fail_at(n);
        rc = aigw__body_rewrite(body, sizeof body - 1, "N", &out);
        aigw__alloc_fail_at(0);
        if (rc == 0)
            assert_string_equal(out.data, want);
        else
            assert_int_equal(rc, -2);
        aigw__buf_free(&out);
    }
    assert_int_equal(rc, 0);
}

/* ---- the model list ---- */

typedef struct models_result {
    int rc;
    char *model;
    char **models;
    size_t n;
    char *why;
} models_result;

static models_result read_models_n(const char *body, size_t len)
{
    models_result r;
    r.rc = aigw__body_models(body, len, &r.model, &r.models, &r.n, &r.why);
    return r;
}

static models_result read_models(const char *body)
{
    return read_models_n(body, strlen(body));
}

static void models_result_free(models_result *r)
{
    aigw__free(r->model);
    aigw__strv_free(r->models, r->n);
    aigw__free(r->why);
}

static void models_ok(const char *body, const char *model, const char *const *want, size_t n)
{
    models_result r = read_models(body);
    size_t i;
    assert_int_equal(r.rc, 0);
    assert_null(r.why);
    assert_string_equal(r.model, model);
    assert_int_equal(r.n, n);
    if (n == 0)
        assert_null(r.models);
    for (i = 0; i < n; i++)
        assert_string_equal(r.models[i], want[i]);
    models_result_free(&r);
}

static void models_bad(const char *body, const char *why_part)
{
    models_result r = read_models(body);
    assert_int_equal(r.rc, -1);
    assert_null(r.model);
    assert_null(r.models);
    assert_int_equal(r.n, 0);
    assert_non_null(r.why);
    if (!strstr(r.why, why_part))
        fail_msg("why \"%s\" lacks \"%s\"", r.why, why_part);
    models_result_free(&r);
}

static void test_models_ok(void **state)
{
    static const char *const two[] = {"gpt-4o-mini", "anthropic:claude-sonnet-4-6"};
    static const char *const one[] = {"x"};
    (void)state;
    models_ok("{\"model\":\"gpt-4o\",\"models\":[\"gpt-4o-mini\",\"anthropic:claude-sonnet-4-6\"],"
              "\"messages\":[]}",
              "gpt-4o", two, 2);
    models_ok("{\"model\":\"gpt-4o\"}", "gpt-4o", NULL, 0);
    models_ok("{\"model\":\"gpt-4o\",\"models\":[]}", "gpt-4o", NULL, 0);
    models_ok("{\"model\":\"gpt-4o\",\"models\":null}", "gpt-4o", NULL, 0);
    models_ok("{\"mo\\u0064el\":\"caf\\u00e9\",\"models\":[\"x\"]}", "caf\xc3\xa9", one, 1);
    models_ok(" {\"models\":[\"x\"], \"model\":\"m\"} \n", "m", one, 1);
}

static void test_models_bad(void **state)
{
    models_result r;
    (void)state;
    models_bad("", "not a JSON object");
    models_bad("[\"gpt-4o\"]", "not a JSON object");
    models_bad("{\"model\":\"m\"", "not a JSON object");
    models_bad("{\"model\":\"m\"} junk", "not a JSON object");
    models_bad("{}", "no \"model\"");
    models_bad("{\"messages\":[]}", "no \"model\"");
    models_bad("{\"model\":1}", "\"model\" must be a non-empty string");
    models_bad("{\"model\":null}", "\"model\" must be a non-empty string");
    models_bad("{\"model\":[\"a\"]}", "\"model\" must be a non-empty string");
    models_bad("{\"model\":\"\"}", "\"model\" must be a non-empty string");
    models_bad("{\"model\":\"m\",\"models\":\"a\"}", "\"models\" must be an array");
    models_bad("{\"model\":\"m\",\"models\":{\"a\":1}}", "\"models\" must be an array");
    models_bad("{\"model\":\"m\",\"models\":true}", "\"models\" must be an array");
    models_bad("{\"model\":\"m\",\"models\":[\"a\",2]}", "\"models[1]\" must be a non-empty");
    models_bad("{\"model\":\"m\",\"models\":[\"a\",\"b\",\"\"]}", "\"models[2]\"");
    models_bad("{\"model\":\"m\",\"models\":[null]}", "\"models[0]\"");
    models_bad("{\"model\":\"m\",\"models\":[[\"a\"]]}", "\"models[0]\"");
    r = read_models_n("{\"model\":\"m\"\0}", 14);
    assert_int_equal(r.rc, -1);
    models_result_free(&r);
    /* why may be NULL. */
    assert_int_equal(aigw__body_models("{}", 2, &r.model, &r.models, &r.n, NULL), -1);
    assert_null(r.model);
}

static void test_models_alloc_failures(void **state)
{
    static const char ok[] = "{\"model\":\"m\",\"models\":[\"a\",\"b\",\"c\"]}";
    static const char bad[] = "{\"model\":\"m\",\"models\":[\"a\",7]}";
    long n;
    int rc = -2;
    (void)state;
    for (n = 1; n < 100 && rc != 0; n++) {
        models_result r;
        aigw__alloc_fail_at(n);
        r = read_models(ok);
        aigw__alloc_fail_at(0);
        rc = r.rc;
        if (rc == 0) {
            assert_int_equal(r.n, 3);
            assert_string_equal(r.models[2], "c");
        } else {
            assert_int_equal(rc, -2);
            assert_null(r.model);
            assert_null(r.models);
            assert_null(r.why);
        }
        models_result_free(&r);
    }
    assert_int_equal(rc, 0);
    for (rc = -2, n = 1; n < 100 && rc != -1; n++) {
        models_result r;
        aigw__alloc_fail_at(n);
        r = read_models(bad);
        aigw__alloc_fail_at(0);
        rc = r.rc;
        assert_true(rc == -1 || rc == -2);
        assert_null(r.model);
        if (rc == -1)
            assert_string_equal(r.why, "\"models[1]\" must be a non-empty string");
        else
            assert_null(r.why);
        models_result_free(&r);
    }
    assert_int_equal(rc, -1);
}

/* ---- UTF-8 and nesting ---- */

static void test_models_utf8(void **state)
{
    static const char lone_ff[] = "{\"model\":\"m\xff\"}";
    models_result r;
    (void)state;
    /* refused before anything else, at the first bad byte (from 0) */
    models_bad(lone_ff, "not valid UTF-8 at byte 11");
    r = read_models(lone_ff);
    assert_string_equal(r.why, "not valid UTF-8 at byte 11");
    models_result_free(&r);
    models_bad("{\"model\":\"m\",\"messages\":[{\"content\":\"caf\xe9\"}]}",
               "not valid UTF-8 at byte 40");
    models_bad("\xff", "not valid UTF-8 at byte 0");
    models_bad("{\"model\":\"m\"} \xc3", "not valid UTF-8 at byte 14");
    models_bad("{\"model\":\"\xed\xa0\x80\"}", "not valid UTF-8 at byte 10"); /* surrogate */
    models_bad("{\"model\":\"\xc0\xae\"}", "not valid UTF-8 at byte 10");     /* overlong */
    /* the rewrite refuses it too */
    refused(lone_ff);
    refused("{\"model\":\"m\",\"x\":\"\x80\"}");
    /* valid UTF-8, raw or escaped, and a BOM: fine */
    models_ok("\xef\xbb\xbf{\"model\":\"caf\xc3\xa9\xf0\x9f\x98\x80\",\"x\":\"\\ud83d\\ude00\"}",
              "caf\xc3\xa9\xf0\x9f\x98\x80", NULL, 0);
    /* a lone surrogate escape is not JSON (cJSON) */
    models_bad("{\"model\":\"\\ud800\"}", "not a JSON object");
}

static char *deep_body(size_t n)
{
    static const char head[] = "{\"model\":\"m\",\"x\":";
    size_t len = sizeof head - 1, i;
    char *s = malloc(len + 2 * n + 2);
    assert_non_null(s);
    memcpy(s, head, len);
    for (i = 0; i < n; i++)
        s[len++] = '[';
    for (i = 0; i < n; i++)
        s[len++] = ']';
    s[len++] = '}';
    s[len] = '\0';
    return s;
}

static void test_models_nesting(void **state)
{
    char *s;
    models_result r;
    (void)state;
    /* the object is level 1: 1000 brackets in it make 1001 */
    s = deep_body(1000);
    r = read_models(s);
    assert_int_equal(r.rc, -1);
    assert_non_null(r.why);
    assert_string_equal(r.why, "nested deeper than 1000 levels at line 1, column 1017");
    models_result_free(&r);
    refused(s);
    free(s);
    s = deep_body(999);
    models_ok(s, "m", NULL, 0);
    free(s);
}

/* ---- cJSON out of memory, and the scan that tells it from bad text ---- */

/* aigw__json_check says of s what cJSON_ParseWithLengthOpts does: it parses
 * (ending where cJSON's value ends), or not, and where cJSON stopped; and
 * too deep exactly at the bracket one level past cJSON's limit. */
/* Whether off is an opening bracket one level past cJSON's nesting limit
 * in text cJSON read up to off: the cross-check of a TOO_DEEP verdict. */
static bool past_nesting_limit(const char *s, size_t len, size_t off)
{
    size_t i, depth = 0;
    bool in_str = false;
    if (!s || off >= len || (s[off] != '[' && s[off] != '{'))
        return false;
    /* cJSON read everything before off, so this is JSON up to there:
     * brackets count outside strings only. */
    for (i = 0; i < off; i++) {
        char c = s[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == '[' || c == '{') {
            depth++;
        } else if ((c == ']' || c == '}') && depth > 0) {
            depth--;
        }
    }
    return !in_str && depth >= CJSON_NESTING_LIMIT;
}

static void agrees(const char *s, size_t len)
{
    const char *end = NULL;
    size_t off = 12345, ce;
    cJSON *root = cJSON_ParseWithLengthOpts(s, len, &end, 0);
    aigw_json_verdict v = aigw__json_check(s, len, &off);
    ce = end ? (size_t)(end - s) : (size_t)-1;
    if ((root != NULL) != (v == AIGW_JSON_OK) || ce != off ||
        (v == AIGW_JSON_TOO_DEEP && !past_nesting_limit(s, len, off)))
        fail_msg("cJSON %s at %zu, the scan %d at %zu: %.*s", root ? "parses" : "fails", ce,
                 (int)v, off, (int)(len < 200 ? len : 200), s);
    cJSON_Delete(root);
}

static void agrees_s(const char *s)
{
    agrees(s, strlen(s));
}

/* depth levels of open ("[" or "{\\"a\\":"), then tail. */
static char *nested(size_t depth, const char *open, const char *tail)
{
    size_t k = strlen(open), len = 0, i;
    char *s = malloc(depth * k + strlen(tail) + 1);
    assert_non_null(s);
    for (i = 0; i < depth; i++, len += k)
        memcpy(s + len, open, k);
    strcpy(s + len, tail);
    return s;
}

static void test_json_check_agrees_with_cjson(void **state)
{
    static const char *const texts[] = {
        "", " ", "\t\n", "{}", " {} ", "{} x", "[]", "[1,2]", "[1,]", "[,1]", "{\"a\":1}",
        "{\"a\":1,}", "{\"a\" 1}", "{a:1}", "{\"a\":}", "{\"a\"", "{\"a\":1", "{\"a\":[1,{}]}",
        "null", "nul", "nullx", "true", "tru", "false", "fals", "\"str\"", "\"str", "\"a\\\"",
        "\"\\", "\"\\x\"", "\"\\n\\t\\/\\b\\f\\r\\\"\\\\\"", "\"\\u00e9\"", "\"\\u12\"",
        "\"\\uzzzz\"", "\"\\ud83d\\ude00\"", "\"\\ud83d\"", "\"\\ud83dx\\ude00\"", "\"\\udc00\"",
        "\"\\ud83d\\u0041\"", "0", "-0", "01", "-", "-.5", "1.", ".5", "1e5", "1e", "1e+", "1E-2",
        "1.5.3", "-x", "--1", "1-2", "[1e]", "[-]", "[01]", "\xef\xbb\xbf{}", "\xef\xbb\xbf[]",
        "\xef\xbb\xbf{} ", "\xef\xbb\xbf" "1", "\x01{}", "{\x01\"a\"\x02:\x03" "1\x04}",
        "[1\x00]", "{\"a\":1}\x00", "[[[]]]", "[[[", "]]]",
        "{\"a\":{\"b\":{\"c\":[true,false,null]}}}",
        "[\"a\" \"b\"]", "{\"a\":1 \"b\":2}", "{,}", "{\"\\ud800\":1}",
        "[123456789012345678901234567890123456789012345678901234567890123456789012345]",
    };
    uint64_t seed = 88172645463325252ULL;
    size_t i, depth;
    (void)state;
    for (i = 0; i < sizeof texts / sizeof *texts; i++)
        agrees_s(texts[i]);
    agrees("[1\0]", 4);
    agrees("\xef\xbb\xbf{", 4); /* a BOM counts only in 5 bytes or more */
    /* the nesting limit, for arrays and objects, at and past it */
    for (depth = 998; depth <= 1002; depth++) {
        static const char *const opens[] = {"[", "{\"a\":"};
        size_t o;
        for (o = 0; o < 2; o++) {
            char *s = nested(depth, opens[o], "1");
            agrees_s(s);
            free(s);
            s = nested(depth, opens[o], "");
            agrees_s(s);
            free(s);
        }
    }
    {
        /* well formed and closed: 1000 levels parse, 1001 do not */
        char buf[2100];
        for (depth = 999; depth <= 1001; depth++) {
            memset(buf, '[', depth);
            memset(buf + depth, ']', depth);
            agrees(buf, 2 * depth);
        }
    }
    /* random texts of JSON's pieces */
    for (i = 0; i < 20000; i++) {
        char buf[256];
        size_t len = json_pieces(&seed, buf, sizeof buf);
        agrees(buf, seed % 3 == 0 ? len / 2 : len);
    }
}

/* The model list and the rewrite of body with every cJSON allocation
 * failing in turn (once, and from it on): out of memory, not a bad body. */
static void test_cjson_out_of_memory(void **state)
{
    static const char body[] = "{\"model\":\"m\",\"models\":[\"a\",\"b\"],\"temperature\":0.5,"
                               "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
    models_result r;
    long n, k, before;
    int from;
    (void)state;
    oom_cjson_hooks(OOM_CJSON_GATE);
    before = oom_count(&OOM_CJSON);
    r = read_models(body);
    n = oom_count(&OOM_CJSON) - before;
    assert_int_equal(r.rc, 0);
    models_result_free(&r);
    assert_true(n > 5);
    for (from = 0; from <= 1; from++)
        for (k = 1; k <= n; k++) {
            aigw_buf out = AIGW_BUF_INIT;
            (from ? oom_fail_from : oom_fail_at)(&OOM_CJSON, k);
            r = read_models(body);
            oom_fail_at(&OOM_CJSON, 0);
            assert_int_equal(r.rc, -2);
            assert_null(r.why);
            assert_null(r.model);
            assert_null(r.models);
            models_result_free(&r);
            assert_int_equal(aigw__buf_puts(&out, "keep"), 0);
            (from ? oom_fail_from : oom_fail_at)(&OOM_CJSON, k);
            assert_int_equal(aigw__body_rewrite(body, sizeof body - 1, "N", &out), -2);
            oom_fail_at(&OOM_CJSON, 0);
            assert_string_equal(out.data, "keep");
            aigw__buf_free(&out);
        }
    /* a bad body is bad whatever the memory: the same reason */
    {
        static const char *const bad[] = {"{\"model\":\"m\",}", "[{\"model\":\"m\"}]",
                                          "{\"model\":\"m\"} {}", "{\"model\":\"m\"",
                                          "{\"model\":\"m\",\"models\":[1.2.3]}"};
        char *deep = deep_body(1000);
        size_t i;
        for (i = 0; i <= sizeof bad / sizeof *bad; i++) {
            const char *b = i < sizeof bad / sizeof *bad ? bad[i] : deep;
            models_result want = read_models(b), got;
            assert_int_equal(want.rc, -1);
            for (k = 1; k <= 3; k++) {
                oom_fail_from(&OOM_CJSON, k);
                got = read_models(b);
                oom_fail_at(&OOM_CJSON, 0);
                assert_int_equal(got.rc, -1);
                assert_string_equal(got.why, want.why);
                models_result_free(&got);
                oom_fail_from(&OOM_CJSON, k);
                refused(b);
                oom_fail_at(&OOM_CJSON, 0);
            }
            models_result_free(&want);
        }
        free(deep);
    }
    oom_cjson_hooks(OOM_CJSON_MALLOC);
}

/* ---- through the engine ---- */

#define CFG                                                                                \
    "{\"providers\":[{\"providerId\":\"fake\",\"name\":\"Fake\","                          \
    "\"baseUrl\":\"http://127.0.0.1:9/v1\",\"models\":[{\"modelId\":\"m1\"}]}],"           \
    "\"providerKeys\":[{\"id\":\"a\",\"providerId\":\"fake\",\"value\":\"sk-aaaa-1111\"}," \
    "{\"id\":\"b\",\"providerId\":\"fake\",\"value\":\"sk-bbbb-2222\"}],"                  \
    "\"accessKeyConfiguration\":{\"name\":\"t\"},"                                         \
    "\"gatewayConfig\":{\"sameBackendRetries\":0}}"

/* s is one JSON text and valid UTF-8. */
static void assert_json_text(const char *s, size_t len)
{
    cJSON *j;
    assert_non_null(s);
    if (!aigw__utf8_valid(s, len))
        fail_msg("not UTF-8: %.*s", (int)len, s);
    if (!(j = cJSON_ParseWithLength(s, len)))
        fail_msg("not JSON: %.*s", (int)len, s);
    cJSON_Delete(j);
}

static void test_send_refuses_bad_utf8(void **state)
{
    static const char body[] = "{\"model\":\"fake:m1\",\"messages\":[{\"content\":\"\xff\"}]}";
    aigw_client *c = mock_attach(client_from_json(CFG));
    aigw_request *req = NULL;
    aigw_response *resp = NULL;
    aigw_error *err = NULL;
    (void)state;
    assert_int_equal(aigw_request_new(&req), AIGW_OK);
    assert_int_equal(aigw_request_set_body(req, body, sizeof body - 1), AIGW_OK);
    assert_int_equal(aigw_client_send(c, req, &resp, &err), AIGW_EREQUEST);
    assert_null(resp);
    assert_string_equal(aigw_error_message(err), "request body: not valid UTF-8 at byte 43");
    assert_int_equal(M.n_calls, 0); /* nothing was sent */
    aigw_error_free(err);
    err = NULL;
    /* nested too deep: the same, before anything is sent */
    {
        char *deep = deep_body(1000);
        assert_int_equal(aigw_request_set_body(req, deep, strlen(deep)), AIGW_OK);
        assert_int_equal(aigw_client_send(c, req, &resp, &err), AIGW_EREQUEST);
        assert_string_equal(aigw_error_message(err), "request body: nested deeper than 1000 "
                                                     "levels at line 1, column 1017");
        assert_int_equal(M.n_calls, 0);
        free(deep);
    }
    aigw_error_free(err);
    aigw_request_free(req);
    aigw_client_free(c);
}

/* cJSON out of memory reading the body (a fallback list is read through
 * cJSON): the request cannot start (AIGW_ENOMEM), and nothing is sent. */
static void test_send_cjson_out_of_memory(void **state)
{
    aigw_client *c = mock_attach(client_from_json(CFG));
    aigw_request *req = NULL;
    aigw_response *resp = NULL;
    aigw_error *err = NULL;
    static const char body[] = "{\"model\":\"fake:m1\",\"models\":[\"fake:m1\"]}";
    (void)state;
    assert_int_equal(aigw_request_new(&req), AIGW_OK);
    assert_int_equal(aigw_request_set_body(req, body, sizeof body - 1), AIGW_OK);
    oom_cjson_hooks(OOM_CJSON_GATE);
    oom_fail_at(&OOM_CJSON, 1);
    assert_int_equal(aigw_client_send(c, req, &resp, &err), AIGW_ENOMEM);
    oom_fail_at(&OOM_CJSON, 0);
    oom_cjson_hooks(OOM_CJSON_MALLOC);
    assert_null(resp);
    assert_string_equal(aigw_error_message(err), "out of memory");
    assert_int_equal(M.n_calls, 0);
    aigw_error_free(err);
    aigw_request_free(req);
    aigw_client_free(c);
}

/* A body without a fallback list (or with "models": null) and a "model"
 * without escapes is read without cJSON: the same answers, and no cJSON
 * allocation; with escapes or a list, cJSON's tree decodes them. */
static void test_models_without_tree(void **state)
{
    static const char *const no_tree[] = {
        "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":\"hi \\u00e9\"}]}",
        "{\"model\":\"gpt-4o\",\"models\":null}",
        "\xef\xbb\xbf {\"model\" : \"caf\xc3\xa9\" }",
        "{\"mo\\u0064el\":\"m\",\"model\":\"x\"}",
        "{}", "{\"model\":\"\"}", "{\"model\":1}", "{\"model\":\"m\"} x", "[1]",
    };
    static const char *const want[] = {"gpt-4o", "gpt-4o", "caf\xc3\xa9", "m", NULL,
                                       NULL, NULL, NULL, NULL};
    long before;
    size_t i;
    (void)state;
    oom_cjson_hooks(OOM_CJSON_GATE);
    for (i = 0; i < sizeof no_tree / sizeof *no_tree; i++) {
        models_result r;
        before = oom_count(&OOM_CJSON);
        r = read_models(no_tree[i]);
        assert_int_equal(oom_count(&OOM_CJSON), before);
        if (want[i]) {
            assert_int_equal(r.rc, 0);
            assert_string_equal(r.model, want[i]);
            assert_int_equal(r.n, 0);
        } else {
            assert_int_equal(r.rc, -1);
        }
        models_result_free(&r);
    }
    /* escapes in "model", a list: through the tree */
    before = oom_count(&OOM_CJSON);
    models_ok("{\"model\":\"caf\\u00e9\"}", "caf\xc3\xa9", NULL, 0);
    assert_true(oom_count(&OOM_CJSON) > before);
    oom_cjson_hooks(OOM_CJSON_MALLOC);
}

static bool tree_nonempty(const cJSON *v)
{
    return cJSON_IsString(v) && v->valuestring && v->valuestring[0] != '\0';
}

/* aigw__body_read against cJSON's reading of the body (the rewrite's
 * validation says whether it is a whole object): accepted exactly when the
 * tree has a non-empty "model" and a "models" absent, null or of non-empty
 * strings, with the tree's strings; and its map splices as the scan does. */
static void reads_as_tree(const char *body, size_t len)
{
    aigw_buf tmp = AIGW_BUF_INIT, a = AIGW_BUF_INIT, b = AIGW_BUF_INIT;
    bool valid = aigw__body_rewrite(body, len, "x", &tmp) == 0, ok = false;
    cJSON *root = valid ? cJSON_ParseWithLength(body, len) : NULL;
    const cJSON *m = NULL, *ms = NULL, *v;
    aigw_body_map map;
    models_result r;
    size_t i = 0;
    aigw__buf_free(&tmp);
    r.rc = aigw__body_read(body, len, &map, &r.model, &r.models, &r.n, &r.why);
    if (root) {
        m = cJSON_GetObjectItemCaseSensitive(root, "model");
        ms = cJSON_GetObjectItemCaseSensitive(root, "models");
        ok = tree_nonempty(m) && (!ms || cJSON_IsNull(ms) || cJSON_IsArray(ms));
        for (v = cJSON_IsArray(ms) ? ms->child : NULL; ok && v; v = v->next)
            ok = tree_nonempty(v);
    }
    if ((r.rc == 0) != ok)
        fail_msg("read %d, cJSON says %s: %.*s", r.rc, ok ? "yes" : "no", (int)len, body);
    if (ok) {
        assert_string_equal(r.model, m->valuestring);
        for (v = cJSON_IsArray(ms) ? ms->child : NULL; v; v = v->next, i++)
            assert_string_equal(r.models[i], v->valuestring);
        assert_int_equal(r.n, i);
        assert_int_equal(aigw__body_splice_map(body, len, &map, "N", &a), 0);
        assert_int_equal(aigw__body_splice(body, len, "N", &b), 0);
        assert_int_equal(a.len, b.len);
        assert_memory_equal(a.data, b.data, a.len);
    } else {
        assert_non_null(r.why);
    }
    aigw__buf_free(&a);
    aigw__buf_free(&b);
    cJSON_Delete(root);
    models_result_free(&r);
}

/* Bodies at the edges of the one-pass reading of plain bodies, each read
 * as cJSON reads it (whichever way the library takes). */
static void test_read_edges(void **state)
{
    static const char *const bodies[] = {
        "{\"model\":\"m\"}", " \t\r\n{\"model\":\"m\"} \n", "{\"model\":\"m\",}",
        "{\"model\":\"m\"}x", "{\"model\":\"m\"", "{\"model\" \"m\"}", "{\"model\":\"a\tb\"}",
        "{\"model\":\"a\nb\"}", "{\"model\":\"a\x01\"}", "{\"model\":\"a\x7f\"}",
        "{\"model\":\"caf\xc3\xa9\"}", "{\"model\":\"caf\xc3\"}", "{\"model\":\"\xed\xa0\x80\"}",
        "{\"model\":\"a\\u0000b\"}", "{\"model\":\"\\ud83d\\ude00\"}", "{\"model\":\"\\ud83d\"}",
        "{\"model\":\"\\udc00\"}", "{\"model\":\"\\u00e9\"}", "{\"model\":\"\\uzzzz\"}",
        "{\"model\":\"\\x\"}", "{\"model\":\"\\/\\b\\f\\n\\r\\t\\\"\\\\\"}",
        "{\"mo\\u0064el\":\"m\"}", "{\"a\":{\"mo\\u0064el\":1},\"model\":\"m\"}",
        "{\"model\":\"m\",\"n\":01}", "{\"model\":\"m\",\"n\":1.}", "{\"model\":\"m\",\"n\":-0}",
        "{\"model\":\"m\",\"n\":-}", "{\"model\":\"m\",\"n\":1e5}", "{\"model\":\"m\",\"n\":1E+5}",
        "{\"model\":\"m\",\"n\":1e}", "{\"model\":\"m\",\"n\":.5}", "{\"model\":\"m\",\"n\":1.5e-3}",
        "{\"model\":\"m\",\"n\":1e400}", "{\"model\":\"m\",\"n\":tru}", "{\"model\":\"m\",\"n\":nul}",
        "{\"model\":\"m\",\"n\":[true,false,null,{},[],\"\"]}", "{\"model\":\"m\",\"n\":[1,]}",
        "{\"model\":\"m\",\"n\":[,1]}", "{\"model\":\"m\",\"n\":{\"a\" : [ 1 , 2 ] }}",
        "{\"model\":\"m\",\"n\":{\"a\"}}", "\xef\xbb\xbf{\"model\":\"m\"}", "{\"model\":\"m\"}\x00",
        "{\"model\":\"m\",\"models\":null}", "{\"model\":\"m\",\"models\":[\"a\",\"b\"]}",
        "{\"model\":\"m\",\"models\":[\"a\",1]}", "{\"models\":null,\"model\":\"m\",\"models\":[1]}",
        "{\"model\":1,\"model\":\"m\"}", "{\"model\":\"m\",\"model\":1}", "{\"model\":\"\"}",
        "{}", "[]", "\"m\"", "", " ", "{\"model\":\"m\"}}", "{{}}",
    };
    size_t i, depth;
    (void)state;
    for (i = 0; i < sizeof bodies / sizeof *bodies; i++)
        reads_as_tree(bodies[i], strlen(bodies[i]));
    reads_as_tree("{\"model\":\"m\"}\0", 15);
    reads_as_tree("{\"model\":\"a\0b\"}", 16);
    /* nesting around what one pass takes (64 levels) and cJSON's limit */
    for (depth = 60; depth <= 1001; depth = depth == 70 ? 999 : depth + 1) {
        /* arrays and objects in turn, depth levels in all */
        static char b[8 * 1001 + 64];
        size_t n, k;
        n = (size_t)sprintf(b, "{\"model\":\"m\",\"x\":");
        for (k = 1; k < depth; k++) {
            if (k % 2)
                b[n++] = '[';
            else
                n += (size_t)sprintf(b + n, "{\"k\":");
        }
        b[n++] = '1';
        for (k = depth - 1; k >= 1; k--)
            b[n++] = k % 2 ? ']' : '}';
        b[n++] = '}';
        reads_as_tree(b, n);
    }
}

/* The map of an accepted body: splicing from it gives aigw__body_splice's
 * bytes, and "unchanged" says when they are the body's own. */
static void test_splice_map(void **state)
{
    static const char *const bodies[] = {
        "{\"model\":\"m\",\"x\":1}",
        "{\"x\":1,\"model\":\"m\",\"model\":\"m\"}",
        "{\"model\":\"m\",\"models\":null}",
        ("{ \"model\" : \"m\" , \"a\":1,\"b\":2,\"c\":3,\"d\":4,\"e\":5,\"f\":6,\"g\":7,\"h\":8,"
         "\"i\":9,\"j\":10,\"k\":11,\"l\":12,\"n\":13,\"o\":14,\"p\":15,\"q\":16,\"r\":17 }"),
        "{\"model\":\"m\",\"models\":[\"a\"],\"model\":\"z\"}",
    };
    static const char *const models[] = {"m", "N", "m\"q", "caf\xc3\xa9", "a:b"};
    size_t i, k;
    (void)state;
    for (i = 0; i < sizeof bodies / sizeof *bodies; i++)
        for (k = 0; k < sizeof models / sizeof *models; k++) {
            const char *b = bodies[i];
            size_t len = strlen(b);
            aigw_body_map map;
            aigw_buf a = AIGW_BUF_INIT, c = AIGW_BUF_INIT;
            models_result r;
            bool same;
            r.rc = aigw__body_read(b, len, &map, &r.model, &r.models, &r.n, &r.why);
            assert_int_equal(r.rc, 0);
            models_result_free(&r);
            assert_int_equal(aigw__body_splice_map(b, len, &map, models[k], &a), 0);
            assert_int_equal(aigw__body_splice(b, len, models[k], &c), 0);
            assert_int_equal(a.len, c.len);
            assert_memory_equal(a.data, c.data, a.len);
            same = a.len == len && memcmp(a.data, b, len) == 0;
            /* with more members than the map holds it may only say no */
            if (map.n <= AIGW_BODY_MAP_MEMBERS)
                assert_int_equal(aigw__body_unchanged(b, &map, models[k]), same);
            else
                assert_false(aigw__body_unchanged(b, &map, models[k]));
            aigw__buf_free(&a);
            aigw__buf_free(&c);
        }
    {
        aigw_body_map map;
        models_result r;
        r.rc = aigw__body_read(bodies[0], strlen(bodies[0]), &map, &r.model, &r.models, &r.n,
                               &r.why);
        models_result_free(&r);
        assert_true(aigw__body_unchanged(bodies[0], &map, "m"));
        assert_false(aigw__body_unchanged(bodies[0], &map, "n"));
    }
}

static void test_upstream_bad_utf8(void **state)
{
    /* an upstream error message and header value that are not UTF-8 */
    static const char bad_body[] = "{\"error\":{\"message\":\"over\xff\xfe loaded \x01\","
                                   "\"type\":\"server_error\"}}";
    aigw_client *c = mock_attach(client_from_json(CFG));
    aigw_response *r;
    const char *v, *body;
    size_t len;
    (void)state;
    /* every key fails: the library's own answer and the trace are JSON */
    push_h(500, "x-upstream", "a\xff\x80z", bad_body);
    push_h(500, "x-upstream", "a\xff\x80z", bad_body);
    r = send_body(c, "{\"model\":\"fake:m1\",\"note\":\"caf\xc3\xa9\"}");
    assert_error_answer(r, 502, "upstream_error", NULL);
    body = aigw_response_body(r, &len);
    assert_json_text(body, len);
    v = aigw_response_trace_json(r);
    assert_json_text(v, strlen(v));
    aigw_response_free(r);
    /* a fail-fast answer is the upstream's, bytes as they came (header
     * values are bytes); the trace stays JSON */
    mock_rewind();
    push_h(400, "x-upstream", "a\xff\x80z", "{\"error\":{\"message\":\"bad \xff\"}}");
    r = send_body(c, "{\"model\":\"fake:m1\"}");
    assert_int_equal(aigw_response_status(r), 400);
    assert_string_equal(aigw_response_body(r, &len), "{\"error\":{\"message\":\"bad \xff\"}}");
    v = aigw_response_header_get(r, "x-upstream");
    assert_non_null(v);
    assert_string_equal(v, "a\xff\x80z");
    v = aigw_response_trace_json(r);
    assert_json_text(v, strlen(v));
    aigw_response_free(r);
    aigw_client_free(c);
}

static void test_strv_free(void **state)
{
    char **v = aigw__calloc(2, sizeof *v);
    (void)state;
    assert_non_null(v);
    v[0] = aigw__strdup("a");
    v[1] = NULL;
    aigw__strv_free(v, 2);
    aigw__strv_free(NULL, 3);
}

/* aigw_request_wants_stream: the top-level "stream", exactly true. */
static void wants(const char *body, int want)
{
    aigw_request *req = NULL;
    assert_int_equal(aigw_request_new(&req), AIGW_OK);
    assert_int_equal(aigw_request_set_body(req, body, strlen(body)), AIGW_OK);
    if (aigw_request_wants_stream(req) != want)
        fail_msg("aigw_request_wants_stream(%s): expected %d", body, want);
    assert_int_equal(aigw__body_wants_stream(body, strlen(body)), want);
    aigw_request_free(req);
}

static void test_wants_stream(void **state)
{
    aigw_request *req = NULL;
    (void)state;
    wants("{\"model\":\"m\",\"stream\":true}", 1);
    wants(" \xef\xbb\xbf{ \"stream\" :\ttrue }", 0); /* a BOM only at the very start */
    wants("\xef\xbb\xbf{\"stream\":true}", 1);
    wants("{ \"stream\" :\n true , \"model\":\"m\"}", 1);
    wants("{\"st\\u0072eam\":true}", 1);                /* an escaped name is the name */
    wants("{\"stream\":true,\"stream\":false}", 1);      /* the first, as cJSON reads it */
    wants("{\"stream\":false}", 0);
    wants("{\"stream\":\"true\"}", 0);
    wants("{\"stream\":1}", 0);
    wants("{\"stream\":trueish}", 0);
    wants("{\"streams\":true}", 0);
    wants("{\"a\":{\"stream\":true}}", 0);              /* not at the top */
    wants("{\"messages\":[{\"content\":\"\\\"stream\\\":true\"}]}", 0);
    wants("[{\"stream\":true}]", 0);
    wants("not json", 0);
    wants("", 0);
    wants("{\"model\":\"m\",", 0);
    assert_int_equal(aigw_request_wants_stream(NULL), 0);
    assert_int_equal(aigw_request_new(&req), AIGW_OK);
    assert_int_equal(aigw_request_wants_stream(req), 0); /* no body yet */
    aigw_request_free(req);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rewrite_basic),
        cmocka_unit_test(test_rewrite_pretty),
        cmocka_unit_test(test_rewrite_models_positions),
        cmocka_unit_test(test_rewrite_adds_model),
        cmocka_unit_test(test_rewrite_keeps_bytes),
        cmocka_unit_test(test_rewrite_escaped_keys),
        cmocka_unit_test(test_rewrite_nested_untouched),
        cmocka_unit_test(test_rewrite_refused),
        cmocka_unit_test(test_rewrite_appends),
        cmocka_unit_test(test_rewrite_deep),
        cmocka_unit_test(test_rewrite_alloc_failures),
        cmocka_unit_test(test_models_ok),
        cmocka_unit_test(test_models_bad),
        cmocka_unit_test(test_models_alloc_failures),
        cmocka_unit_test(test_strv_free),
        cmocka_unit_test(test_models_utf8),
        cmocka_unit_test(test_models_nesting),
        cmocka_unit_test(test_wants_stream),
        cmocka_unit_test_setup_teardown(test_send_refuses_bad_utf8, mock_setup, mock_teardown),
        cmocka_unit_test_setup_teardown(test_upstream_bad_utf8, mock_setup, mock_teardown),
        cmocka_unit_test(test_json_check_agrees_with_cjson),
        cmocka_unit_test(test_models_without_tree),
        cmocka_unit_test(test_splice_map),
        cmocka_unit_test(test_read_edges),
        cmocka_unit_test(test_cjson_out_of_memory),
        cmocka_unit_test_setup_teardown(test_send_cjson_out_of_memory, mock_setup,
                                        mock_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
