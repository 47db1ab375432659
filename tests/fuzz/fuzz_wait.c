/* fuzz_wait.c - every parser of a wait an upstream asks for, on the input as
 * a NUL-terminated string (so it ends at the first NUL byte):
 *   - aigw__parse_duration (lib/duration.c: Go durations, "1m30s")
 *   - through aigw__classify (lib/classify.c keeps its parsers static):
 *     retry-after-ms, Retry-After (seconds or HTTP-date: IMF-fixdate,
 *     RFC 850, asctime), the Date header that sets the server's clock,
 *     x-ratelimit-reset-* (Go durations), anthropic-ratelimit-*-reset
 *     (RFC 3339), Gemini's RetryInfo.retryDelay, and the input as the
 *     limit name inside reset / remaining header names.
 * Checked (abort() on failure): every wait is -1 or within [0, 24 h], and
 * where the answer is known it is the one given - whole seconds and
 * milliseconds, Go durations (against aigw__parse_duration), reset names,
 * and aigw__parse_duration's own "+" prefix and "1h" suffix.
 */
#include "internal.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define WAIT_MAX_MS (INT64_C(24) * 3600 * 1000)
/* 2026-11-25T10:00:05Z, and "now" 5 s before it (as tests/test_classify.c) */
#define DATE_MS INT64_C(1795600805000)
#define NOW_MS (DATE_MS - 5000)
#define DATE_HTTP "Wed, 25 Nov 2026 10:00:05 GMT"
#define DATE_RFC3339 "2026-11-25T10:00:05Z"

static void check(bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_wait: invariant violated: %s\n", what);
        abort();
    }
}

static int64_t clamp(int64_t ms)
{
    return ms > WAIT_MAX_MS ? WAIT_MAX_MS : ms;
}

/* The wait a 429 with these headers (name, value pairs) and body asks for. */
static int64_t wait_for(const char *const *kv, size_t n_kv, const char *body, size_t len)
{
    aigw_hdrs h = {NULL, 0, 0};
    int64_t wait = -2;
    size_t i;
    for (i = 0; i + 1 < n_kv; i += 2)
        check(aigw__hdrs_add(&h, kv[i], kv[i + 1]) == 0, "aigw__hdrs_add failed");
    aigw__classify(AIGW_TR_OK, 429, &h, body, len, NOW_MS, &wait);
    aigw__hdrs_free(&h);
    check(wait == -1 || (wait >= 0 && wait <= WAIT_MAX_MS), "wait out of [-1, 24h]");
    return wait;
}

/* s as a whole number of at most 15 digits (no sign, no blanks), or -1. */
static int64_t plain_number(const char *s)
{
    int64_t v = 0;
    size_t n = 0;
    for (; aigw__is_digit(s[n]); n++)
        if (n < 15)
            v = v * 10 + (s[n] - '0');
    return (n > 0 && n <= 15 && s[n] == '\0') ? v : -1;
}

static bool is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* What a Go-duration header value means: aigw__parse_duration of it with
 * its blanks trimmed (values of 64 bytes or more refused), clamped. */
static int64_t go_duration_wait(const char *s)
{
    char buf[64];
    size_t n;
    int64_t ms;
    while (is_blank(*s))
        s++;
    n = strlen(s);
    while (n > 0 && is_blank(s[n - 1]))
        n--;
    if (n == 0 || n >= sizeof buf)
        return -1;
    memcpy(buf, s, n);
    buf[n] = '\0';
    return aigw__parse_duration(buf, &ms) == 0 ? clamp(ms) : -1;
}

static void fuzz_duration(const char *s, size_t len)
{
    int64_t ms = -2, ms2 = -2;
    int rc = aigw__parse_duration(s, &ms);
    char *t;
    check(rc == 0 || rc == -1, "aigw__parse_duration: return code");
    if (rc == 0)
        check(ms >= 0, "aigw__parse_duration: negative");
    t = malloc(len + 3);
    check(t != NULL, "out of memory in the harness");
    /* "+" in front changes nothing (once) */
    if (s[0] != '+') {
        t[0] = '+';
        memcpy(t + 1, s, len + 1);
        check(aigw__parse_duration(t, &ms2) == rc && (rc != 0 || ms2 == ms),
              "aigw__parse_duration: a leading '+' changed the result");
    }
    /* a term after one that ends in a unit adds to it */
    if (rc == 0 && len > 0 && strcmp(s, "0") != 0 && ms < INT64_C(9000000000000) &&
        (s[len - 1] == 's' || s[len - 1] == 'm' || s[len - 1] == 'h')) {
        memcpy(t, s, len);
        memcpy(t + len, "1h", 3);
        check(aigw__parse_duration(t, &ms2) == 0 && ms2 == ms + 3600000,
              "aigw__parse_duration: appending \"1h\" did not add an hour");
    }
    free(t);
}

static void fuzz_headers(const char *s, size_t len)
{
    int64_t num = plain_number(s), w;
    char *name, *name2;
    size_t cap = len + 64;

    /* retry-after-ms, Retry-After: whole numbers are exact */
    w = wait_for((const char *const[]){"retry-after-ms", s}, 2, NULL, 0);
    if (num >= 0)
        check(w == clamp(num), "retry-after-ms: a whole number misread");
    w = wait_for((const char *const[]){"Retry-After", s}, 2, NULL, 0);
    if (num >= 0)
        check(w == clamp(num * 1000), "Retry-After: whole seconds misread");

    /* the server's clock from Date, under a fixed HTTP-date and reset */
    wait_for((const char *const[]){"Date", s, "Retry-After", DATE_HTTP}, 4, NULL, 0);
    wait_for((const char *const[]){"date", s, "anthropic-ratelimit-tokens-reset", DATE_RFC3339,
                                   "anthropic-ratelimit-tokens-remaining", "0"},
             6, NULL, 0);

    /* reset headers: Go durations (OpenAI), RFC 3339 times (Anthropic) */
    w = wait_for((const char *const[]){"x-ratelimit-reset-requests", s,
                                       "x-ratelimit-remaining-requests", "0"},
                 4, NULL, 0);
    check(w == go_duration_wait(s), "x-ratelimit-reset-*: not the duration's value");
    wait_for((const char *const[]){"anthropic-ratelimit-tokens-reset", s,
                                   "anthropic-ratelimit-tokens-remaining", "0"},
             4, NULL, 0);
    wait_for((const char *const[]){"anthropic-ratelimit-input-tokens-reset", s}, 2, NULL, 0);

    /* the input as the limit's name: any non-empty one is a reset header */
    name = malloc(cap);
    name2 = malloc(cap);
    check(name && name2, "out of memory in the harness");
    snprintf(name, cap, "x-ratelimit-reset-%s", s);
    snprintf(name2, cap, "x-ratelimit-remaining-%s", s);
    w = wait_for((const char *const[]){name, "1s", name2, "0"}, 4, NULL, 0);
    check(w == (len > 0 ? 1000 : -1), "x-ratelimit-reset-<name>: wrong wait");
    snprintf(name, cap, "anthropic-ratelimit-%s-reset", s);
    snprintf(name2, cap, "anthropic-ratelimit-%s-remaining", s);
    w = wait_for((const char *const[]){name, DATE_RFC3339, name2, "0"}, 4, NULL, 0);
    check(w == (len > 0 ? 5000 : -1), "anthropic-ratelimit-<name>-reset: wrong wait");
    free(name);
    free(name2);
}

/* Gemini: {"error":{...,"details":[{"@type":"...RetryInfo","retryDelay":s}]}} */
static void fuzz_retry_delay(const char *s, size_t len)
{
    aigw_buf b = AIGW_BUF_INIT;
    int64_t w;
    int rc = aigw__buf_puts(&b, "{\"error\":{\"code\":429,\"status\":\"RESOURCE_EXHAUSTED\","
                                "\"details\":[{\"@type\":\"type.googleapis.com/"
                                "google.rpc.RetryInfo\",\"retryDelay\":");
    rc |= aigw__buf_json_str(&b, s, len);
    rc |= aigw__buf_puts(&b, "}]}}");
    check(rc == 0, "out of memory in the harness");
    w = wait_for(NULL, 0, b.data, b.len);
    /* the string reaches the parser unchanged when it is UTF-8 */
    if (aigw__utf8_valid(s, len))
        check(w == go_duration_wait(s), "retryDelay: not the duration's value");
    aigw__buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    size_t len;
    check(s != NULL, "out of memory in the harness");
    if (size)
        memcpy(s, data, size);
    s[size] = '\0';
    len = strlen(s);
    fuzz_duration(s, len);
    fuzz_headers(s, len);
    fuzz_retry_delay(s, len);
    free(s);
    return 0;
}
