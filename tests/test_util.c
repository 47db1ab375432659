/* test_util.c - durations, JSON string escaping, error objects, headers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "internal.h"

/* ---- durations ---- */

static void test_duration_valid(void **state)
{
    static const struct {
        const char *in;
        int64_t ms;
    } ok[] = {
        {"0", 0},
        {"+0", 0},
        {"300ms", 300},
        {"10s", 10000},
        {"1.5h", 5400000},
        {"2h45m", 9900000},
        {"1m30s", 90000},
        {"1h1m1s1ms", 3661001},
        {"0.5s", 500},
        {".5s", 500},
        {"1.s", 1000},
        {"1.0001s", 1000},   /* rounded down */
        {"2.675s", 2675},
        {"1500000us", 1500},
        {"1500000\xc2\xb5s", 1500},  /* micro sign */
        {"1500000\xce\xbcs", 1500},  /* Greek mu */
        {"999999ns", 0},
        {"1000000ns", 1},
        {"0s", 0},
        {"000010s", 10000},
        {"2562047h", 2562047LL * 3600 * 1000},         /* near Go's limit */
        {"9223372036854775807ns", 9223372036854LL},    /* exactly the limit */
        {"0.000000001h", 0},
        {"1.00000000000000000000001s", 1000},          /* long fraction */
    };
    size_t i;
    (void)state;
    for (i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        int64_t ms = -7;
        if (aigw__parse_duration(ok[i].in, &ms) != 0)
            fail_msg("rejected \"%s\"", ok[i].in);
        if (ms != ok[i].ms)
            fail_msg("\"%s\" -> %lld ms, want %lld", ok[i].in, (long long)ms,
                     (long long)ok[i].ms);
    }
}

static void test_duration_invalid(void **state)
{
    static const char *const bad[] = {
        "",         "+",        "-1s",   "-0",     "1",      "10",   "s",       ".s",
        ".",        "1.5",      "1 s",   " 1s",    "1s ",    "1sec", "1mss",    "1S",
        "1H",       "1d",       "1..5s", "1.5.5s", "ms",     "1s-1s", "1e3ms",  "0x10s",
        "2562048h",                                  /* past int64 nanoseconds */
        "9223372036854775808ns",                     /* one past */
        "9223372036854775807ns1ns",                  /* the sum overflows */
        "99999999999999999999s",                     /* the number overflows */
        "nan",      "inf",      "1\xc2s",
    };
    size_t i;
    (void)state;
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t ms = -7;
        if (aigw__parse_duration(bad[i], &ms) == 0)
            fail_msg("accepted \"%s\" as %lld ms", bad[i], (long long)ms);
        assert_int_equal(ms, -7); /* untouched on failure */
    }
    assert_int_equal(aigw__parse_duration(NULL, NULL), -1);
    {
        int64_t ms;
        assert_int_equal(aigw__parse_duration(NULL, &ms), -1);
        assert_int_equal(aigw__parse_duration("1s", NULL), -1);
    }
}

/* ---- JSON escaping ---- */

static void json_is(const char *in, size_t len, const char *want)
{
    aigw_buf b = AIGW_BUF_INIT;
    assert_int_equal(aigw__buf_json_str(&b, in, len), 0);
    assert_string_equal(b.data, want);
    assert_int_equal(b.len, strlen(want));
    aigw__buf_free(&b);
}

static void test_buf_json(void **state)
{
    aigw_buf b = AIGW_BUF_INIT;
    (void)state;
    json_is("", 0, "\"\"");
    json_is("plain", 5, "\"plain\"");
    json_is("a\"b\\c", 5, "\"a\\\"b\\\\c\"");
    json_is("\n\r\t\b\f", 5, "\"\\n\\r\\t\\b\\f\"");
    json_is("\x01\x1f", 2, "\"\\u0001\\u001f\"");
    json_is("a\0b", 3, "\"a\\u0000b\"");        /* embedded NUL, by length */
    json_is("caf\xc3\xa9 /", 7, "\"caf\xc3\xa9 /\""); /* UTF-8 and '/' as they are */
    json_is("\x7f", 1, "\"\x7f\"");
    /* Appends to what is there; NULL is null. */
    assert_int_equal(aigw__buf_puts(&b, "["), 0);
    assert_int_equal(aigw__buf_json_cstr(&b, "x"), 0);
    assert_int_equal(aigw__buf_puts(&b, ","), 0);
    assert_int_equal(aigw__buf_json_cstr(&b, NULL), 0);
    assert_int_equal(aigw__buf_puts(&b, "]"), 0);
    assert_string_equal(b.data, "[\"x\",null]");
    aigw__buf_free(&b);
}

static void test_buf_basics(void **state)
{
    aigw_buf b = AIGW_BUF_INIT;
    char *s;
    int i;
    (void)state;
    for (i = 0; i < 1000; i++)
        assert_int_equal(aigw__buf_printf(&b, "%d,", i % 10), 0);
    assert_int_equal(b.len, 2000);
    assert_int_equal(b.data[b.len], '\0');
    assert_memory_equal(b.data, "0,1,2,", 6);
    s = aigw__buf_take(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(strlen(s), 2000);
    aigw__free(s);
    s = aigw__buf_take(&b); /* empty: "" rather than NULL */
    assert_string_equal(s, "");
    aigw__free(s);
    assert_int_equal(aigw__buf_puts(&b, "secret"), 0);
    aigw__buf_wipe_free(&b);
    assert_null(b.data);
}

/* ---- error objects ---- */

static void test_error_multi(void **state)
{
    aigw_error *e = aigw__error_new(AIGW_ECONFIG);
    (void)state;
    assert_non_null(e);
    assert_int_equal(aigw__error_add(e, "a.b[0]", "bad %s", "thing"), 0);
    assert_int_equal(aigw__error_add(e, "", "no path here"), 0);
    assert_int_equal(aigw__error_add(e, "c", "third %d", 3), 0);
    assert_ptr_equal(aigw__error_finish(e), e);
    assert_int_equal(aigw_error_code(e), AIGW_ECONFIG);
    assert_int_equal(aigw_error_count(e), 3);
    assert_string_equal(aigw_error_message(e), "a.b[0]: bad thing (and 2 more problems)");
    assert_string_equal(aigw_error_path(e, 0), "a.b[0]");
    assert_string_equal(aigw_error_problem(e, 0), "bad thing");
    assert_string_equal(aigw_error_path(e, 1), "");
    assert_string_equal(aigw_error_problem(e, 1), "no path here");
    assert_string_equal(aigw_error_path(e, 2), "c");
    assert_string_equal(aigw_error_problem(e, 2), "third 3");
    assert_null(aigw_error_path(e, 3));
    assert_null(aigw_error_problem(e, 3));
    aigw_error_free(e);
}

static void test_error_two_and_one(void **state)
{
    aigw_error *e = aigw__error_new(AIGW_ECONFIG);
    (void)state;
    aigw__error_add(e, "x", "one");
    aigw__error_add(e, "y", "two");
    aigw__error_finish(e);
    assert_string_equal(aigw_error_message(e), "x: one (and 1 more problem)");
    aigw_error_free(e);

    e = aigw__error_new(AIGW_ECONFIG);
    aigw__error_add(e, "", "only");
    aigw__error_finish(e);
    assert_string_equal(aigw_error_message(e), "only"); /* no "path: " when there is none */
    assert_int_equal(aigw_error_count(e), 1);
    aigw_error_free(e);
}

static void test_error_fail_and_null(void **state)
{
    aigw_error *e = NULL;
    (void)state;
    assert_int_equal(aigw__fail(&e, AIGW_EIO, "cannot read '%s'", "f"), AIGW_EIO);
    assert_non_null(e);
    assert_int_equal(aigw_error_code(e), AIGW_EIO);
    assert_string_equal(aigw_error_message(e), "cannot read 'f'");
    assert_int_equal(aigw_error_count(e), 1);
    assert_string_equal(aigw_error_path(e, 0), "");
    aigw_error_free(e);
    assert_int_equal(aigw__fail(NULL, AIGW_EINVAL, "x"), AIGW_EINVAL);

    /* An error without problems still answers sensibly. */
    e = aigw__error_finish(aigw__error_new(AIGW_ENOMEM));
    assert_int_equal(aigw_error_count(e), 1);
    assert_string_equal(aigw_error_message(e), "AIGW_ENOMEM");
    assert_string_equal(aigw_error_path(e, 0), "");
    assert_null(aigw_error_path(e, 1));
    aigw_error_free(e);

    /* NULL everywhere */
    assert_int_equal(aigw_error_code(NULL), AIGW_EINVAL);
    assert_string_equal(aigw_error_message(NULL), "");
    assert_int_equal(aigw_error_count(NULL), 0);
    assert_null(aigw_error_path(NULL, 0));
    assert_null(aigw_error_problem(NULL, 0));
    aigw_error_free(NULL);
    assert_string_equal(aigw_status_name(AIGW_ECONFIG), "AIGW_ECONFIG");
    assert_string_equal(aigw_status_name((aigw_status)-99), "AIGW_UNKNOWN");
}

/* ---- headers ---- */

static void test_headers(void **state)
{
    aigw_hdrs h = {NULL, 0, 0};
    int i;
    (void)state;
    assert_int_equal(aigw__hdrs_add(&h, "Retry-After", "30"), 0);
    assert_int_equal(aigw__hdrs_add(&h, "X-RateLimit-Reset-Requests", "1s"), 0);
    assert_int_equal(aigw__hdrs_add(&h, "retry-after", "99"), 0); /* repeated: kept */
    assert_int_equal(aigw__hdrs_addn(&h, "Content-TypeXXX", 12, "text/plainYYY", 10), 0);
    assert_int_equal(h.n, 4);
    assert_string_equal(h.v[0].name, "retry-after"); /* stored lower-cased */
    assert_string_equal(aigw__hdrs_get(&h, "RETRY-AFTER"), "30"); /* the first one */
    assert_string_equal(aigw__hdrs_get(&h, "retry-after"), "30");
    assert_string_equal(aigw__hdrs_get(&h, "x-ratelimit-reset-REQUESTS"), "1s");
    assert_string_equal(aigw__hdrs_get(&h, "content-type"), "text/plain");
    assert_null(aigw__hdrs_get(&h, "retry-afte"));
    assert_null(aigw__hdrs_get(&h, "retry-after2"));
    assert_null(aigw__hdrs_get(NULL, "retry-after"));
    for (i = 0; i < 100; i++) /* growth */
        assert_int_equal(aigw__hdrs_add(&h, "x-n", "v"), 0);
    assert_int_equal(h.n, 104);
    aigw__hdrs_free(&h);
    assert_int_equal(h.n, 0);
    assert_null(h.v);
}

static void test_strcasecmp(void **state)
{
    (void)state;
    assert_int_equal(aigw__strcasecmp("OpenAI", "openai"), 0);
    assert_true(aigw__strcasecmp("a", "b") < 0);
    assert_true(aigw__strcasecmp("ab", "a") > 0);
    assert_int_equal(aigw__strncasecmp("GPT-4o", "gpt-", 4), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_duration_valid),
        cmocka_unit_test(test_duration_invalid),
        cmocka_unit_test(test_buf_json),
        cmocka_unit_test(test_buf_basics),
        cmocka_unit_test(test_error_multi),
        cmocka_unit_test(test_error_two_and_one),
        cmocka_unit_test(test_error_fail_and_null),
        cmocka_unit_test(test_headers),
        cmocka_unit_test(test_strcasecmp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
