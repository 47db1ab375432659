/* test_classify.c - the classifier against the provider-errors fixtures and
 * the edges the fixtures do not reach. */
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

/* Wed, 25 Nov 2026 10:00:05 GMT: the Retry-After date of generic-429-http-date. */
#define FIXTURE_DATE_MS INT64_C(1795600805000)
#define NOW_MS (FIXTURE_DATE_MS - 5000)
#define DAY_MS (INT64_C(86400000))

/* ---- helpers ---- */

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *data;
    long n;
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    n = ftell(f);
    assert_true(n > 0);
    rewind(f);
    data = malloc((size_t)n + 1);
    assert_non_null(data);
    assert_int_equal(fread(data, 1, (size_t)n, f), (size_t)n);
    data[n] = '\0';
    fclose(f);
    return data;
}

/* Headers from a NULL-terminated list of name, value pairs. */
static aigw_hdrs hdrs_of(const char *const *kv)
{
    aigw_hdrs h = {NULL, 0, 0};
    for (; kv && kv[0]; kv += 2)
        assert_int_equal(aigw__hdrs_add(&h, kv[0], kv[1]), 0);
    return h;
}

typedef struct outcome {
    const char *cls;
    int64_t wait;
} outcome;

static outcome run_n(int status, const char *const *kv, const char *body, size_t len,
                     int64_t now)
{
    aigw_hdrs h = hdrs_of(kv);
    outcome o;
    aigw_class c = aigw__classify(AIGW_TR_OK, status, &h, body, len, now, &o.wait);
    o.cls = aigw__class_name(c);
    aigw__hdrs_free(&h);
    return o;
}

static outcome run(int status, const char *const *kv, const char *body)
{
    return run_n(status, kv, body, body ? strlen(body) : 0, NOW_MS);
}

#define H(...) ((const char *const[]){__VA_ARGS__, NULL})

#define assert_class(o, name) assert_string_equal((o).cls ? (o).cls : "(none)", (name))

static void expect(int status, const char *const *kv, const char *body, const char *cls,
                   int64_t wait)
{
    outcome o = run(status, kv, body);
    assert_class(o, cls);
    assert_int_equal(o.wait, wait);
}

/* ---- the fixture table ---- */

static aigw_hdrs fixture_headers(const cJSON *obj)
{
    aigw_hdrs h = {NULL, 0, 0};
    const cJSON *it;
    cJSON_ArrayForEach(it, obj) {
        assert_true(cJSON_IsString(it));
        assert_int_equal(aigw__hdrs_add(&h, it->string, it->valuestring), 0);
    }
    return h;
}

/* One case; returns the number of mismatches, each reported by name. */
static int run_fixture_case(const cJSON *c)
{
    const char *name = cJSON_GetObjectItem(c, "name")->valuestring;
    const char *want = cJSON_GetObjectItem(c, "class")->valuestring;
    const cJSON *want_wait = cJSON_GetObjectItem(c, "wait_ms");
    const cJSON *body = cJSON_GetObjectItem(c, "body");
    aigw_hdrs h = fixture_headers(cJSON_GetObjectItem(c, "headers"));
    char *text = body ? cJSON_PrintUnformatted(body)
                      : strdup(cJSON_GetObjectItem(c, "body_text")->valuestring);
    int64_t wait = -2, now = NOW_MS;
    int bad = 0;
    const char *got = aigw__class_name(aigw__classify(
        AIGW_TR_OK, cJSON_GetObjectItem(c, "status")->valueint, &h, text, strlen(text), now,
        &wait));
    if (!got || strcmp(got, want) != 0) {
        print_message("%s: class %s, want %s\n", name, got ? got : "(none)", want);
        bad++;
    }
    if (want_wait && wait != (int64_t)want_wait->valuedouble) {
        print_message("%s: wait %lld, want %.0f\n", name, (long long)wait,
                      want_wait->valuedouble);
        bad++;
    }
    if (strcmp(name, "generic-429-http-date") == 0 && wait != 5000) {
        print_message("%s: wait %lld, want 5000\n", name, (long long)wait);
        bad++;
    }
    free(text);
    aigw__hdrs_free(&h);
    return bad;
}

static void test_fixture_cases(void **state)
{
    char *json = read_file(FIXTURES_DIR "/provider-errors/cases.json");
    cJSON *root = cJSON_Parse(json), *c;
    int bad = 0, n = 0;
    (void)state;
    assert_non_null(root);
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(root, "cases")) {
        bad += run_fixture_case(c);
        n++;
    }
    assert_true(n >= 23);
    assert_int_equal(bad, 0);
    cJSON_Delete(root);
    free(json);
}

/* ---- names ---- */

static void test_class_names(void **state)
{
    static const char *const want[] = {
        NULL, "auth", "quota", "rate_limit", "overloaded", "server", "timeout", "network",
        "context_length", "content_policy", "bad_request", "payload_too_large", "not_found",
        "redirect"};
    int i;
    (void)state;
    assert_int_equal(sizeof want / sizeof want[0], AIGW_CLASS__COUNT);
    assert_null(aigw__class_name(AIGW_CLASS_NONE));
    for (i = 1; i < AIGW_CLASS__COUNT; i++)
        assert_string_equal(aigw__class_name((aigw_class)i), want[i]);
    assert_null(aigw__class_name(AIGW_CLASS__COUNT));
    assert_null(aigw__class_name((aigw_class)-1));
}

/* ---- transport results and statuses ---- */

static void test_transport_results(void **state)
{
    aigw_hdrs h = hdrs_of(H("retry-after", "5"));
    int64_t w = 0;
    int tr;
    (void)state;
    assert_int_equal(aigw__classify(AIGW_TR_TIMEOUT, 0, &h, NULL, 0, NOW_MS, &w),
                     AIGW_CLASS_TIMEOUT);
    assert_int_equal(w, -1);
    for (tr = AIGW_TR_CONNECT; tr <= AIGW_TR_CANCELLED; tr++) {
        w = 0;
        assert_int_equal(aigw__classify((aigw_transport_result)tr, 503, &h, "{", 1, NOW_MS, &w),
                         AIGW_CLASS_NETWORK);
        assert_int_equal(w, -1);
    }
    /* An unknown result is a network failure too, and wait_ms may be NULL. */
    assert_int_equal(aigw__classify((aigw_transport_result)99, 0, NULL, NULL, 0, 0, NULL),
                     AIGW_CLASS_NETWORK);
    aigw__hdrs_free(&h);
}

static void test_statuses(void **state)
{
    (void)state;
    expect(200, NULL, "{}", "(none)", -1);
    expect(204, NULL, NULL, "(none)", -1);
    /* OpenAI sends reset headers on successes: no wait is asked for. */
    expect(200, H("x-ratelimit-reset-requests", "1s"), "{}", "(none)", -1);
    expect(301, NULL, NULL, "redirect", -1);
    expect(302, H("location", "https://x"), "<html>", "redirect", -1);
    expect(307, NULL, NULL, "redirect", -1);
    expect(401, NULL, NULL, "auth", -1);
    expect(403, NULL, "{\"error\":{\"code\":\"insufficient_quota\"}}", "auth", -1);
    expect(402, NULL, NULL, "quota", -1);
    expect(404, NULL, "{\"error\":{\"message\":\"The model `x` does not exist\"}}",
           "not_found", -1);
    expect(408, NULL, NULL, "timeout", -1);
    expect(413, NULL, NULL, "payload_too_large", -1);
    expect(422, NULL, "{\"detail\":[{\"msg\":\"field required\"}]}", "bad_request", -1);
    expect(409, NULL, NULL, "bad_request", -1);
    expect(451, NULL, NULL, "bad_request", -1);
    expect(400, NULL, NULL, "bad_request", -1);
    expect(500, NULL, NULL, "server", -1);
    expect(502, NULL, NULL, "server", -1);
    expect(504, NULL, NULL, "server", -1);
    expect(599, NULL, NULL, "server", -1);
    expect(529, NULL, NULL, "overloaded", -1);
    expect(100, NULL, NULL, "network", -1);
    expect(0, NULL, NULL, "network", -1);
    expect(-1, NULL, NULL, "network", -1);
    expect(600, NULL, NULL, "network", -1);
}

static void test_null_headers(void **state)
{
    static const char body[] = "{\"error\":{\"details\":[{\"@type\":"
                               "\"type.googleapis.com/google.rpc.RetryInfo\",\"retryDelay\":\"2s\"}]}}";
    int64_t w = 0;
    (void)state;
    assert_int_equal(aigw__classify(AIGW_TR_OK, 503, NULL, NULL, 0, NOW_MS, &w),
                     AIGW_CLASS_OVERLOADED);
    assert_int_equal(w, -1);
    assert_int_equal(aigw__classify(AIGW_TR_OK, 429, NULL, body, sizeof body - 1, NOW_MS, &w),
                     AIGW_CLASS_RATE_LIMIT);
    assert_int_equal(w, 2000);
}

static void test_503(void **state)
{
    (void)state;
    expect(503, NULL, NULL, "overloaded", -1);
    expect(503, H("retry-after", "7"), NULL, "rate_limit", 7000);
    expect(503, H("retry-after-ms", "250"), NULL, "rate_limit", 250);
    /* Present but unreadable still says "come back later". */
    expect(503, H("retry-after", "soon"), NULL, "rate_limit", -1);
    expect(503, H("retry-after", "  "), NULL, "overloaded", -1);
    /* Anthropic's overload on another 5xx, Gemini's UNAVAILABLE. */
    expect(500, NULL, "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}",
           "overloaded", -1);
    expect(500, NULL, "{\"error\":{\"code\":503,\"status\":\"UNAVAILABLE\"}}", "overloaded", -1);
    /* Text is never trusted on a 5xx: a CDN page may say anything. */
    expect(502, NULL, "<html>Service temporarily unavailable, overloaded</html>", "server", -1);
}

/* ---- bodies ---- */

static void test_429_bodies(void **state)
{
    (void)state;
    expect(429, NULL, NULL, "rate_limit", -1);
    expect(429, NULL, "", "rate_limit", -1);
    expect(429, NULL, "{\"error\":{\"type\":\"insufficient_quota\"}}", "quota", -1);
    expect(429, NULL, "{\"error\":{\"type\":\"billing_error\",\"message\":\"x\"}}", "quota", -1);
    expect(429, NULL, "{\"error\":{\"message\":\"Your org hit its Spend Limit.\"}}", "quota",
           -1);
    /* "billing" in a message is no quota: Gemini's per-minute 429 says it. */
    expect(429, NULL, "{\"error\":{\"message\":\"check your plan and billing details\"}}",
           "rate_limit", -1);
    expect(429, NULL, "{\"error\":\"insufficient_quota\"}", "quota", -1);
    expect(429, NULL, "[{\"error\":{\"code\":429,\"status\":\"RESOURCE_EXHAUSTED\",\"details\":"
                      "[{\"@type\":\"type.googleapis.com/google.rpc.QuotaFailure\",\"violations\":"
                      "[{\"quotaMetric\":\"x/requests_per_day\"}]}]}}]",
           "quota", -1);
}

static void test_400_bodies(void **state)
{
    (void)state;
    expect(400, NULL, "{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\","
                      "\"message\":\"prompt is too long: 210000 tokens > 200000 maximum\"}}",
           "context_length", -1);
    expect(400, NULL, "{\"error\":{\"message\":\"The input token count (1200000) exceeds the "
                      "maximum number of tokens allowed (1048576).\",\"status\":"
                      "\"INVALID_ARGUMENT\"}}",
           "context_length", -1);
    expect(400, NULL, "{\"error\":{\"message\":\"The response was filtered\",\"code\":"
                      "\"content_filter\",\"status\":400,\"innererror\":{\"code\":"
                      "\"ResponsibleAIPolicyViolation\"}}}",
           "content_policy", -1);
    expect(400, NULL, "{\"error\":{\"type\":\"invalid_request_error\",\"message\":\"Your "
                      "credit balance is too low to access the Anthropic API.\"}}",
           "quota", -1);
    expect(400, NULL, "{\"error\":{\"message\":\"max_tokens is too large\"}}", "bad_request",
           -1);
}

static void test_odd_bodies(void **state)
{
    static const char nul_quota[] = "\0\0{\"error\":{\"code\":\"insufficient_quota\"}}\0x";
    static const char nul_json[] = "{\"error\":{\"code\":\"insuf\0ficient_quota\"}}";
    static const char garbage[] = "\xff\xfe{[\"\\u12\x01\x80\"";
    char *big;
    size_t n = (size_t)2 << 20;
    (void)state;
    /* Not JSON: searched as text. */
    expect(400, NULL, "Error: prompt is too long", "context_length", -1);
    expect(429, NULL, "rate limited, slow down", "rate_limit", -1);
    /* Truncated JSON: the text still says what happened. */
    expect(429, NULL, "{\"error\":{\"code\":\"insufficient_quota\",\"mess", "quota", -1);
    expect(400, NULL, "{\"error\":{\"message\":\"This model's maximum context length is",
           "context_length", -1);
    expect(400, NULL, "{\"error\":", "bad_request", -1);
    expect(400, NULL, "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[", "bad_request", -1);
    /* NUL bytes: the whole length is searched, nothing stops early. */
    assert_class(run_n(429, NULL, nul_quota, sizeof nul_quota - 1, NOW_MS), "quota");
    assert_class(run_n(429, NULL, nul_json, sizeof nul_json - 1, NOW_MS), "rate_limit");
    assert_class(run_n(400, NULL, garbage, sizeof garbage - 1, NOW_MS), "bad_request");
    /* Odd JSON values where strings are expected. */
    expect(400, NULL, "{\"error\":{\"code\":1e999999,\"type\":null,\"message\":[1]}}",
           "bad_request", -1);
    expect(400, NULL, "{\"error\":[],\"message\":{}}", "bad_request", -1);
    expect(429, NULL, "{\"error\":{\"details\":[1,null,{\"@type\":5},{\"@type\":"
                      "\"google.rpc.RetryInfo\",\"retryDelay\":7}]}}",
           "rate_limit", -1);
    expect(429, NULL, "null", "rate_limit", -1);
    /* A body over the parse bound is searched as text, from its start. */
    big = malloc(n + 1);
    assert_non_null(big);
    memset(big, ' ', n);
    memcpy(big, "{\"error\":{\"code\":\"insufficient_quota\"}}", 40);
    assert_class(run_n(429, NULL, big, n, NOW_MS), "quota");
    free(big);
}

/* ---- waits ---- */

static void test_retry_after_seconds(void **state)
{
    (void)state;
    expect(429, H("Retry-After", "0"), NULL, "rate_limit", 0);
    expect(429, H("retry-after", " 12 "), NULL, "rate_limit", 12000);
    expect(429, H("retry-after", "1.5"), NULL, "rate_limit", 1500);
    expect(429, H("retry-after", "-1"), NULL, "rate_limit", -1);
    expect(429, H("retry-after", "abc"), NULL, "rate_limit", -1);
    expect(429, H("retry-after", "12abc"), NULL, "rate_limit", -1);
    expect(429, H("retry-after", ""), NULL, "rate_limit", -1);
    expect(429, H("retry-after", "nan"), NULL, "rate_limit", -1);
    expect(429, H("retry-after", "1e3"), NULL, "rate_limit", -1);
    /* Clamped to a day. */
    expect(429, H("retry-after", "86401"), NULL, "rate_limit", DAY_MS);
    expect(429, H("retry-after", "99999999999999999999999999999999"), NULL, "rate_limit",
           DAY_MS);
    /* Garbage falls through to the next source. */
    expect(429, H("retry-after", "-5", "x-ratelimit-reset-requests", "3s"), NULL,
           "rate_limit", 3000);
}

static void test_retry_after_dates(void **state)
{
    (void)state;
    expect(429, H("retry-after", "Wed, 25 Nov 2026 10:00:05 GMT"), NULL, "rate_limit", 5000);
    expect(429, H("retry-after", "Wednesday, 25-Nov-26 10:00:05 GMT"), NULL, "rate_limit",
           5000);
    expect(429, H("retry-after", "Wed Nov 25 10:00:05 2026"), NULL, "rate_limit", 5000);
    expect(429, H("retry-after", "Sun Nov  6 08:49:37 1994"), NULL, "rate_limit", 0);
    /* In the past: no wait at all. */
    expect(429, H("retry-after", "Wed, 25 Nov 2026 09:59:00 GMT"), NULL, "rate_limit", 0);
    /* Far ahead: a day at most. */
    expect(429, H("retry-after", "Fri, 01 Jan 9999 00:00:00 GMT"), NULL, "rate_limit", DAY_MS);
    /* The server's own Date is the reference when it has one. */
    expect(429, H("retry-after", "Wed, 25 Nov 2026 10:00:05 GMT", "date",
                  "Wed, 25 Nov 2026 10:00:02 GMT"),
           NULL, "rate_limit", 3000);
    expect(429, H("retry-after", "Wed, 25 Nov 2026 10:00:05 GMT", "date", "garbage"), NULL,
           "rate_limit", 5000);
    /* Malformed dates are ignored. */
    expect(429, H("retry-after", "Wed, 32 Nov 2026 10:00:05 GMT"), NULL, "rate_limit", -1);
    expect(429, H("retry-after", "Wed, 25 Foo 2026 10:00:05 GMT"), NULL, "rate_limit", -1);
    expect(429, H("retry-after", "Wed, 25 Nov 2026 25:00:05 GMT"), NULL, "rate_limit", -1);
    expect(429, H("retry-after", "Wed, 25 Nov 2026 10:00:05 PST"), NULL, "rate_limit", -1);
    expect(429, H("retry-after", "Wed, 25 Nov 2026 10:00"), NULL, "rate_limit", -1);
    expect(429, H("retry-after", "Wed,"), NULL, "rate_limit", -1);
}

/* The three HTTP-date forms (RFC 9110), read by the grammar and, for the
 * instant, by libcurl's curl_getdate; what curl_getdate alone would take but
 * an HTTP-date is not, refused. */
static void test_retry_after_date_forms(void **state)
{
    (void)state;
    /* IMF-fixdate, RFC 850, asctime: the same instant */
    expect(429, H("retry-after", "Wed, 25 Nov 2026 10:00:07 GMT"), NULL, "rate_limit", 7000);
    expect(429, H("retry-after", "Wednesday, 25-Nov-26 10:00:07 GMT"), NULL, "rate_limit",
           7000);
    expect(429, H("retry-after", "Wed Nov 25 10:00:07 2026"), NULL, "rate_limit", 7000);
    expect(429, H("retry-after", "  Wed, 25 Nov 2026 10:00:07 GMT  "), NULL, "rate_limit",
           7000);
    expect(429, H("retry-after", "Thu Nov 26 09:00:00 2026"), NULL, "rate_limit",
           23 * 3600 * 1000);
    expect(429, H("retry-after", "Thu Nov 26  9:00:00 2026"), NULL, "rate_limit", -1);
    /* asctime's day may be one digit after two spaces */
    expect(429, H("retry-after", "Tue Dec  1 10:00:00 2026"), NULL, "rate_limit", DAY_MS);
    /* a leap second: the next minute */
    expect(429, H("retry-after", "Wed, 25 Nov 2026 10:00:60 GMT"), NULL, "rate_limit", 60000);
    /* RFC 850's two-digit year: more than 50 years ahead is the last
     * century's (RFC 9110); curl_getdate would read 72 as 1972 */
    expect(429, H("retry-after", "Friday, 25-Nov-72 10:00:07 GMT"), NULL, "rate_limit",
           DAY_MS);
    expect(429, H("retry-after", "Thursday, 25-Nov-77 10:00:07 GMT"), NULL, "rate_limit", 0);
    expect(429, H("retry-after", "Tuesday, 25-Nov-25 10:00:07 GMT"), NULL, "rate_limit", 0);
    /* garbage, and forms curl_getdate reads but an HTTP-date is not */
    expect(429, H("retry-after", "garbage"), NULL, "rate_limit", -1);
    expect(429, H("retry-after", "tomorrow"), NULL, "rate_limit", -1);
    expect(429, H("retry-after", "Wed, 25 Nov 2026 10:00:07 GMT junk"), NULL, "rate_limit", -1);
    expect(429, H("retry-after", "25 Nov 2026 10:00:07 GMT"), NULL, "rate_limit", -1);
    expect(429, H("retry-after", "wed, 25 nov 2026 10:00:07 gmt"), NULL, "rate_limit", -1);
    expect(429, H("retry-after", "Wed, 25 Nov 2026 10:00:07 UTC"), NULL, "rate_limit", -1);
    expect(429, H("retry-after", "Wed, 25 Nov 2026 10:00:07 +0000"), NULL, "rate_limit", -1);
    expect(429, H("retry-after", "Wed, 25 Nov 26 10:00:07 GMT"), NULL, "rate_limit", -1);
    expect(429, H("retry-after", "Wed Nov 25 10:00:07 2026 GMT"), NULL, "rate_limit", -1);
    expect(429, H("retry-after", "Nov 25 2026"), NULL, "rate_limit", -1);
    expect(429, H("retry-after", "2026-11-25T10:00:07Z"), NULL, "rate_limit", -1);
    expect(429, H("retry-after", "Wed, 25 Nov 2026 10:00:07 GMT\xff"), NULL, "rate_limit", -1);
    expect(429, H("retry-after", "Wed, 25 Nov 1969 10:00:07 GMT"), NULL, "rate_limit", -1);
}

static void test_retry_after_ms(void **state)
{
    (void)state;
    expect(429, H("retry-after", "2", "retry-after-ms", "1500"), NULL, "rate_limit", 1500);
    expect(429, H("retry-after-ms", "20.75"), NULL, "rate_limit", 20);
    expect(429, H("retry-after-ms", "-3", "retry-after", "2"), NULL, "rate_limit", 2000);
    expect(429, H("retry-after-ms", "x", "retry-after", "2"), NULL, "rate_limit", 2000);
    expect(429, H("retry-after-ms", "1e99"), NULL, "rate_limit", -1);
    expect(429, H("retry-after-ms", "999999999999999999999"), NULL, "rate_limit", DAY_MS);
}

static const char *gemini_retry(const char *delay, char *buf, size_t n)
{
    snprintf(buf, n,
             "{\"error\":{\"code\":429,\"status\":\"RESOURCE_EXHAUSTED\",\"details\":[{\"@type\":"
             "\"type.googleapis.com/google.rpc.RetryInfo\",\"retryDelay\":\"%s\"}]}}",
             delay);
    return buf;
}

static void test_retry_info(void **state)
{
    char b[512];
    (void)state;
    expect(429, NULL, gemini_retry("22s", b, sizeof b), "rate_limit", 22000);
    expect(429, NULL, gemini_retry("1.5s", b, sizeof b), "rate_limit", 1500);
    expect(429, NULL, gemini_retry("3.000000001s", b, sizeof b), "rate_limit", 3000);
    expect(429, NULL, gemini_retry("soon", b, sizeof b), "rate_limit", -1);
    expect(429, NULL, gemini_retry("-1s", b, sizeof b), "rate_limit", -1);
    /* Headers come first. */
    expect(429, H("retry-after", "4"), gemini_retry("22s", b, sizeof b), "rate_limit", 4000);
    /* And the RetryInfo beats the reset headers. */
    expect(429, H("x-ratelimit-reset-requests", "9s"), gemini_retry("2s", b, sizeof b),
           "rate_limit", 2000);
}

static void test_openai_resets(void **state)
{
    (void)state;
    expect(429, H("x-ratelimit-reset-tokens", "6m0s"), NULL, "rate_limit", 360000);
    expect(429, H("x-ratelimit-reset-tokens", "1m30.5s"), NULL, "rate_limit", 90500);
    expect(429, H("x-ratelimit-reset-tokens", "120ms"), NULL, "rate_limit", 120);
    expect(429, H("x-ratelimit-reset-tokens", "1h"), NULL, "rate_limit", 3600000);
    expect(429, H("x-ratelimit-reset-tokens", "1.5s"), NULL, "rate_limit", 1500);
    expect(429, H("x-ratelimit-reset-tokens", "0"), NULL, "rate_limit", 0);
    expect(429, H("x-ratelimit-reset-tokens", "500us"), NULL, "rate_limit", 0);
    expect(429, H("x-ratelimit-reset-tokens", "48h"), NULL, "rate_limit", DAY_MS);
    /* Not durations. */
    expect(429, H("x-ratelimit-reset-tokens", "6"), NULL, "rate_limit", -1);
    expect(429, H("x-ratelimit-reset-tokens", "6x"), NULL, "rate_limit", -1);
    expect(429, H("x-ratelimit-reset-tokens", "s"), NULL, "rate_limit", -1);
    expect(429, H("x-ratelimit-reset-tokens", "1.2.3s"), NULL, "rate_limit", -1);
    expect(429, H("x-ratelimit-reset-tokens", "-1s"), NULL, "rate_limit", -1);
    /* The exhausted limit's reset, even when another is longer. */
    expect(429, H("x-ratelimit-reset-requests", "2s", "x-ratelimit-reset-tokens", "30s",
                  "x-ratelimit-remaining-requests", "0", "x-ratelimit-remaining-tokens", "5"),
           NULL, "rate_limit", 2000);
    /* None exhausted: the longest. */
    expect(429, H("x-ratelimit-reset-requests", "2s", "x-ratelimit-reset-tokens", "30s",
                  "x-ratelimit-remaining-requests", "3"),
           NULL, "rate_limit", 30000);
    /* A header family without a match, or a bare prefix, is no reset. */
    expect(429, H("x-ratelimit-reset-", "2s"), NULL, "rate_limit", -1);
}

static void test_anthropic_resets(void **state)
{
    (void)state;
    expect(429, H("anthropic-ratelimit-requests-reset", "2026-11-25T10:00:03Z"), NULL,
           "rate_limit", 3000);
    expect(429, H("anthropic-ratelimit-tokens-reset", "2026-11-25T11:00:03.250+01:00"), NULL,
           "rate_limit", 3250);
    expect(429, H("anthropic-ratelimit-tokens-reset", "2026-11-25T09:00:00Z"), NULL,
           "rate_limit", 0);
    expect(429, H("anthropic-ratelimit-tokens-reset", "tomorrow"), NULL, "rate_limit", -1);
    expect(429, H("anthropic-ratelimit-requests-reset", "2026-11-25T10:00:03Z",
                  "anthropic-ratelimit-tokens-reset", "2026-11-25T10:00:09Z",
                  "anthropic-ratelimit-requests-remaining", "0"),
           NULL, "rate_limit", 3000);
    /* OpenAI-style resets come before Anthropic's. */
    expect(429, H("anthropic-ratelimit-requests-reset", "2026-11-25T10:00:03Z",
                  "x-ratelimit-reset-requests", "1s"),
           NULL, "rate_limit", 1000);
}

static void test_wait_on_other_classes(void **state)
{
    (void)state;
    /* The wait is reported whatever the class; the policy decides. */
    expect(429, H("retry-after", "60"), "{\"error\":{\"code\":\"insufficient_quota\"}}",
           "quota", 60000);
    expect(500, H("retry-after", "1"), NULL, "server", 1000);
    expect(301, H("retry-after", "1"), NULL, "redirect", 1000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture_cases),
        cmocka_unit_test(test_class_names),
        cmocka_unit_test(test_transport_results),
        cmocka_unit_test(test_statuses),
        cmocka_unit_test(test_null_headers),
        cmocka_unit_test(test_503),
        cmocka_unit_test(test_429_bodies),
        cmocka_unit_test(test_400_bodies),
        cmocka_unit_test(test_odd_bodies),
        cmocka_unit_test(test_retry_after_seconds),
        cmocka_unit_test(test_retry_after_dates),
        cmocka_unit_test(test_retry_after_date_forms),
        cmocka_unit_test(test_retry_after_ms),
        cmocka_unit_test(test_retry_info),
        cmocka_unit_test(test_openai_resets),
        cmocka_unit_test(test_anthropic_resets),
        cmocka_unit_test(test_wait_on_other_classes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
