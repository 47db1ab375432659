/* test_util.c - durations, JSON string escaping, error objects, headers, the
 * UTF-8 validator, URLs (libcurl's URL API), and the JSON the library writes
 * itself (traces, its own error answers) whatever bytes went in. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"
#include "internal.h"
#include "support.h"

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

/* ---- UTF-8 ---- */

static void test_utf8_validator(void **state)
{
    static const struct {
        const char *s;
        size_t len;
        size_t bad; /* the offset of the first bad byte; len when valid */
    } cases[] = {
        {"", 0, 0},
        {"plain ascii", 11, 11},
        {"a\0b", 3, 3},                                /* NUL is U+0000 */
        {"caf\xc3\xa9", 5, 5},                         /* U+00E9 */
        {"\xc2\x80", 2, 2},                            /* U+0080, the first 2-byte */
        {"\xdf\xbf", 2, 2},                            /* U+07FF */
        {"\xe0\xa0\x80", 3, 3},                        /* U+0800 */
        {"\xe2\x82\xac", 3, 3},                        /* the euro sign */
        {"\xed\x9f\xbf", 3, 3},                        /* U+D7FF, before the surrogates */
        {"\xee\x80\x80", 3, 3},                        /* U+E000, after them */
        {"\xef\xbf\xbf", 3, 3},                        /* U+FFFF */
        {"\xef\xbb\xbf{}", 5, 5},                      /* a BOM is a character */
        {"\xf0\x90\x80\x80", 4, 4},                    /* U+10000 */
        {"\xf0\x9f\x98\x80", 4, 4},                    /* an emoji */
        {"\xf4\x8f\xbf\xbf", 4, 4},                    /* U+10FFFF, the last */
        {"abc\xff", 4, 3},                             /* a byte UTF-8 never uses */
        {"\xfe", 1, 0},
        {"ab\x80", 3, 2},                              /* a lone continuation byte */
        {"\xc3", 1, 0},                                /* cut short at the end */
        {"\xe2\x82", 2, 0},
        {"\xf0\x9f\x98", 3, 0},
        {"\xc3(", 2, 0},                               /* not continued */
        {"\xe2(\xac", 3, 0},
        {"\xc0\x80", 2, 0},                            /* overlong NUL */
        {"\xc1\xbf", 2, 0},                            /* overlong 2-byte */
        {"\xe0\x9f\xbf", 3, 0},                        /* overlong 3-byte */
        {"\xf0\x8f\xbf\xbf", 4, 0},                    /* overlong 4-byte */
        {"x\xed\xa0\x80", 4, 1},                       /* U+D800, a surrogate */
        {"\xed\xbf\xbf", 3, 0},                        /* U+DFFF */
        {"\xf4\x90\x80\x80", 4, 0},                    /* U+110000 */
        {"\xf5\x80\x80\x80", 4, 0},
        {"ok\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80 then \xff", 18, 17},
    };
    size_t i;
    (void)state;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t got = aigw__utf8_check(cases[i].s, cases[i].len);
        if (got != cases[i].bad)
            fail_msg("case %zu: first bad byte at %zu, want %zu", i, got, cases[i].bad);
        assert_int_equal(aigw__utf8_valid(cases[i].s, cases[i].len),
                         cases[i].bad == cases[i].len);
    }
    /* one sequence */
    assert_int_equal(aigw__utf8_seq("a", 1), 1);
    assert_int_equal(aigw__utf8_seq("\xc3\xa9x", 3), 2);
    assert_int_equal(aigw__utf8_seq("\xe2\x82\xac", 3), 3);
    assert_int_equal(aigw__utf8_seq("\xe2\x82\xac", 2), 0); /* n cuts it */
    assert_int_equal(aigw__utf8_seq("\xf0\x9f\x98\x80", 4), 4);
    assert_int_equal(aigw__utf8_seq("", 0), 0);
}

static void test_utf8_prefix(void **state)
{
    static const char s[] = "ab\xc3\xa9\xe2\x82\xac"; /* a b é € */
    (void)state;
    assert_int_equal(aigw__utf8_prefix(s, 7, 100), 7);
    assert_int_equal(aigw__utf8_prefix(s, 7, 7), 7);
    assert_int_equal(aigw__utf8_prefix(s, 7, 6), 4); /* not into the euro sign */
    assert_int_equal(aigw__utf8_prefix(s, 7, 5), 4);
    assert_int_equal(aigw__utf8_prefix(s, 7, 4), 4);
    assert_int_equal(aigw__utf8_prefix(s, 7, 3), 2); /* not into the é */
    assert_int_equal(aigw__utf8_prefix(s, 7, 2), 2);
    assert_int_equal(aigw__utf8_prefix(s, 7, 0), 0);
}

/* s is one JSON text and valid UTF-8. */
static void assert_json_at(const char *s, const char *file, int line)
{
    cJSON *j;
    if (!s)
        _fail(file, line);
    if (!aigw__utf8_valid(s, strlen(s))) {
        print_error("not UTF-8: %s\n", s);
        _fail(file, line);
    }
    j = cJSON_ParseWithOpts(s, NULL, 1);
    if (!j) {
        print_error("not JSON: %s\n", s);
        _fail(file, line);
    }
    cJSON_Delete(j);
}
#define assert_json(s) assert_json_at(s, __FILE__, __LINE__)

static void test_buf_json_invalid_utf8(void **state)
{
    /* every byte that is not part of well-formed UTF-8: U+FFFD, escaped */
    static const struct {
        const char *in;
        size_t len;
        const char *want;
    } cases[] = {
        {"abc\xff", 4, "\"abc\\ufffd\""},
        {"\x80\x80", 2, "\"\\ufffd\\ufffd\""},
        {"a\xc3(b", 4, "\"a\\ufffd(b\""},
        {"\xe2\x82", 2, "\"\\ufffd\\ufffd\""},             /* cut short */
        {"\xc0\x80", 2, "\"\\ufffd\\ufffd\""},             /* overlong */
        {"\xed\xa0\x80", 3, "\"\\ufffd\\ufffd\\ufffd\""},  /* a surrogate */
        {"\xe2\x82\xac\xff\xe2\x82\xac", 7, "\"\xe2\x82\xac\\ufffd\xe2\x82\xac\""},
        {"\xf0\x9f\x98\x80\"\x01", 6, "\"\xf0\x9f\x98\x80\\\"\\u0001\""},
    };
    size_t i;
    (void)state;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        aigw_buf b = AIGW_BUF_INIT;
        assert_int_equal(aigw__buf_json_str(&b, cases[i].in, cases[i].len), 0);
        assert_string_equal(b.data, cases[i].want);
        assert_json(b.data);
        aigw__buf_free(&b);
    }
}

/* ---- JSON token by token (jscan.c), against cJSON ---- */

/* The tokens of text, one letter each (O{ A[ ) S N n t f, a member's key
 * before a colon, a string's or number's text after an equals sign),
 * then "END@offset" or "ERROR". */
static const char *tokens(const char *text, size_t len)
{
    static char out[1024];
    size_t n = 0;
    aigw_jscan j;
    aigw_jtok t;
    aigw__jscan_init(&j, text, len);
    while ((t = aigw__jscan_next(&j)) > AIGW_JTOK_END) {
        static const char letters[] = "?{[)SNntf";
        if (n > sizeof out - 64)
            continue; /* read on, to the end, printing no more */
        if (t != AIGW_JTOK_CLOSE && j.key.p)
            n += (size_t)snprintf(out + n, sizeof out - n, "%.*s:", (int)j.key.len, j.key.p);
        out[n++] = letters[t];
        if (t == AIGW_JTOK_STRING || t == AIGW_JTOK_NUMBER)
            n += (size_t)snprintf(out + n, sizeof out - n, "=%.*s", (int)j.value.len,
                                  j.value.p);
        n += (size_t)snprintf(out + n, sizeof out - n, "%zu ", j.level);
    }
    if (t == AIGW_JTOK_END)
        snprintf(out + n, sizeof out - n, "END@%zu", aigw__jscan_end(&j));
    else
        snprintf(out + n, sizeof out - n, "ERROR");
    assert_int_equal(aigw__jscan_next(&j), t); /* sticky */
    return out;
}

static void test_jscan_tokens(void **state)
{
    static const char text[] = "\xef\xbb\xbf {\"a\" : [1, {\"b\":\"}]\\\"\"}, [] ] ,\"c\":{},"
                               "\"d\":-1.5e3 ,\"e\":null,\"f\":true,\"g\":false} junk";
    (void)state;
    assert_string_equal(tokens(text, sizeof text - 1),
                        "{0 a:[1 N=12 {2 b:S=}]\\\"3 )2 [2 )2 )1 c:{1 )1 d:N=-1.5e31 e:n1 f:t1 "
                        "g:f1 )0 END@82");
    assert_string_equal(tokens("\"x\" y", 5), "S=x0 END@3");
    assert_string_equal(tokens("nullx", 5), "n0 END@4");
    assert_string_equal(tokens("1.5.3", 5), "N=1.50 END@3");
    assert_string_equal(tokens("[1,]", 4), "[0 N=11 ERROR");
    assert_string_equal(tokens("{\"a\":1", 6), "{0 a:N=11 ERROR");
    assert_string_equal(tokens("", 0), "ERROR");
    assert_string_equal(tokens("[.5]", 4), "[0 ERROR");
}

/* Every text ends in END where aigw__json_check says it parses, at the
 * same offset, and in ERROR where it does not. */
static void jscan_agrees(const char *s, size_t len)
{
    size_t off = 0;
    aigw_json_verdict v = aigw__json_check(s, len, &off);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(s, len, &end, 0);
    const char *got = tokens(s, len), *tail = strrchr(got, ' ');
    char want[40];
    tail = tail ? tail + 1 : got;
    if (v == AIGW_JSON_OK)
        snprintf(want, sizeof want, "END@%zu", off);
    else
        snprintf(want, sizeof want, "ERROR");
    if (strcmp(tail, want) != 0 || (root != NULL) != (v == AIGW_JSON_OK) ||
        (root && (size_t)(end - s) != off))
        fail_msg("%s, want %s: %.*s", got, want, (int)(len < 200 ? len : 200), s);
    cJSON_Delete(root);
}

static void test_jscan_agrees_with_json_check(void **state)
{
    static const char *const texts[] = {
        "", " ", "{}", " {} ", "{} x", "[]", "[1,2]", "[1,]", "[,1]", "{\"a\":1}", "{\"a\":1,}",
        "{\"a\" 1}", "{a:1}", "{\"a\":}", "{\"a\"", "{\"a\":1", "null", "nul", "nullx", "true",
        "tru", "false", "fals", "\"str\"", "\"str", "\"a\\\"", "\"\\", "\"\\x\"",
        "\"\\n\\t\\/\\b\\f\\r\\\"\\\\\"", "\"\\u00e9\"", "\"\\u12\"", "\"\\uzzzz\"",
        "\"\\ud83d\\ude00\"", "\"\\ud83d\"", "\"\\udc00\"", "\"\\ud83d\\u0041\"", "0", "-0",
        "01", "-", "-.5", "1.", ".5", "1e5", "1e", "1e+", "1.5.3", "--1", "1-2", "[1e]", "[-]",
        "[01]", "\xef\xbb\xbf{}", "\xef\xbb\xbf" "1", "\x01{}", "{\x01\"a\"\x02:\x03" "1\x04}",
        "[\"a\" \"b\"]", "{\"a\":1 \"b\":2}", "{,}", "{\"\\ud800\":1}", "[[[", "]]]", "[}", "{]",
        "[123456789012345678901234567890123456789012345678901234567890123456789012345]"};
    uint64_t seed = 0x853c49e6748fea9bULL;
    static char deep[2 * 1002 + 1];
    size_t i, depth;
    (void)state;
    for (i = 0; i < sizeof texts / sizeof *texts; i++)
        jscan_agrees(texts[i], strlen(texts[i]));
    jscan_agrees("[1\0]", 4);
    jscan_agrees("\xef\xbb\xbf{", 4);
    for (depth = 998; depth <= 1001; depth++) {
        memset(deep, '[', depth);
        memset(deep + depth, ']', depth);
        jscan_agrees(deep, 2 * depth);
        jscan_agrees(deep, depth);
    }
    for (i = 0; i < 50000; i++) {
        char buf[256];
        size_t len = json_pieces(&seed, buf, sizeof buf);
        jscan_agrees(buf, seed % 3 == 0 ? len / 2 : len);
    }
}

/* The span of text's first member key, and of its value. */
static void first_member(const char *text, aigw_jscan *j, aigw_jspan *key, aigw_jspan *value)
{
    aigw__jscan_init(j, text, strlen(text));
    assert_int_equal(aigw__jscan_next(j), AIGW_JTOK_OBJECT);
    assert_true(aigw__jscan_next(j) > AIGW_JTOK_CLOSE);
    *key = j->key;
    *value = j->value;
}

/* Keys and strings read as cJSON's decoded text compares with strcmp. */
static void test_jspan_strings_agree_with_cjson(void **state)
{
    static const char *const strs[] = {
        "\"type\"", "\"\"", "\"typ\"", "\"types\"", "\"t\\u0079pe\"", "\"\\u0074ype\"",
        "\"type\\u0000x\"", "\"\\u0000\"", "\"\\u0000type\"", "\"typ\\u00e9\"",
        "\"\\ud83d\\ude00\"",
        "\"\\uzzzzx\"", "\"ty\\npe\"", "\"\\/\"", "\"\\\\\"", "\"\\\"\"", "\"TYPE\"", "\"type \"",
        "\"\\u0020\"", "\"\\t\"", "\"\\ud83d\\ude00type\"", "\"\xc3\xa9\"", "\"\x01\"",
        "\"\\u0054ype\"", "\"\\u0074\\u0079\\u0070\\u0065\""};
    static const char *const names[] = {"type", "", "typ", "types", "/", "\\", "\"", " ",
                                        "\t", "ty\npe", "TYPE", "\x01"};
    size_t i, k;
    (void)state;
    for (i = 0; i < sizeof strs / sizeof *strs; i++) {
        char text[128];
        aigw_jscan j;
        aigw_jspan key, value;
        cJSON *o;
        snprintf(text, sizeof text, "{%s:%s}", strs[i], strs[i]);
        first_member(text, &j, &key, &value);
        o = cJSON_Parse(text);
        assert_non_null(o);
        assert_int_equal(aigw__jspan_nonempty(&value), o->child->valuestring[0] != '\0');
        for (k = 0; k < sizeof names / sizeof *names; k++) {
            bool want = strcmp(names[k], o->child->string) == 0;
            if (aigw__jspan_is(&key, names[k]) != want || aigw__jspan_is(&value, names[k]) != want)
                fail_msg("%s against \"%s\": want %d", strs[i], names[k], want);
        }
        cJSON_Delete(o);
    }
    /* a raw NUL byte ends cJSON's string too */
    {
        static const char text[] = "{\"type\0x\":\"\0type\"}";
        aigw_jscan j;
        aigw__jscan_init(&j, text, sizeof text - 1);
        assert_int_equal(aigw__jscan_next(&j), AIGW_JTOK_OBJECT);
        assert_int_equal(aigw__jscan_next(&j), AIGW_JTOK_STRING);
        assert_true(aigw__jspan_is(&j.key, "type"));
        assert_false(aigw__jspan_nonempty(&j.value));
        assert_false(aigw__jspan_is(&j.value, "type"));
        assert_true(aigw__jspan_is(&j.value, ""));
    }
}

/* A number's valuedouble, bit for bit: integers of up to 15 digits are
 * computed, the rest go through strtod as in cJSON. */
static void number_agrees(const char *num)
{
    char text[256];
    aigw_jscan j;
    cJSON *o;
    double v = 7;
    snprintf(text, sizeof text, "[%s]", num);
    aigw__jscan_init(&j, text, strlen(text));
    assert_int_equal(aigw__jscan_next(&j), AIGW_JTOK_ARRAY);
    assert_int_equal(aigw__jscan_next(&j), AIGW_JTOK_NUMBER);
    o = cJSON_Parse(text);
    assert_non_null(o);
    assert_int_equal(aigw__jspan_number(&j.value, &v), 0);
    if (memcmp(&v, &o->child->valuedouble, sizeof v) != 0)
        fail_msg("%s: %.17g, cJSON %.17g", num, v, o->child->valuedouble);
    cJSON_Delete(o);
}

static void test_jspan_number_agrees_with_cjson(void **state)
{
    static const char *const nums[] = {
        "0", "-0", "1", "-1", "63", "64", "007", "-007", "1.5", "-0.0", "1e1", "6.3e1", "1E+2",
        "1e-2", "63.99999999999999999999", "1e400", "-1e400", "1e-400", "999999999999999",
        "9999999999999999", "9007199254740993", "123456789012345678901234567890", "1.",
        "-.5", "1.e3", "0.1", "2.5e-3", "1.7976931348623157e308"};
    uint64_t seed = 0x2545F4914F6CDD1DULL;
    char num[80];
    size_t i;
    double v;
    long before;
    aigw_jscan j;
    (void)state;
    for (i = 0; i < sizeof nums / sizeof *nums; i++)
        number_agrees(nums[i]);
    for (i = 0; i < 5000; i++) {
        size_t n = 0, digits, k;
        if (xorshift64(&seed) & 1)
            num[n++] = '-';
        digits = 1 + (seed >> 8) % 25;
        for (k = 0; k < digits; k++)
            num[n++] = (char)('0' + xorshift64(&seed) % 10);
        if ((seed >> 20) % 4 == 0)
            n += (size_t)snprintf(num + n, sizeof num - n, ".%u", (unsigned)(seed % 1000));
        if ((seed >> 24) % 4 == 0)
            n += (size_t)snprintf(num + n, sizeof num - n, "e%d", (int)(seed % 40) - 20);
        num[n] = '\0';
        number_agrees(num);
    }
    /* a number of 64 characters or more is copied to the heap for strtod */
    memset(num, '0', 70);
    strcpy(num + 70, "5]");
    num[0] = '[';
    aigw__jscan_init(&j, num, strlen(num));
    assert_int_equal(aigw__jscan_next(&j), AIGW_JTOK_ARRAY);
    assert_int_equal(aigw__jscan_next(&j), AIGW_JTOK_NUMBER);
    before = aigw__alloc_count();
    assert_int_equal(aigw__jspan_number(&j.value, &v), 0);
    assert_true(v == 5);
    if (aigw__alloc_count() > before) { /* a build with the allocation hooks */
        aigw__alloc_fail_at(1);
        assert_int_equal(aigw__jspan_number(&j.value, &v), -1);
        aigw__alloc_fail_at(0);
    }
}

/* ---- a text read whole, wanted values to callbacks (aigw__jscan_walk) ---- */

/* Records what the walk hands over as tokens() prints it.  Every container
 * gets role 1: what that wants is the test's. */
typedef struct walk_rec {
    char out[1024];
    size_t n, depth;
    int stop_at; /* the call that stops the walk (1-based), 0: none */
    int calls;
} walk_rec;

static void walk_put(walk_rec *r, const char *fmt, ...)
{
    va_list ap;
    if (r->n > sizeof r->out - 64)
        return;
    va_start(ap, fmt);
    r->n += (size_t)vsnprintf(r->out + r->n, sizeof r->out - r->n, fmt, ap);
    va_end(ap);
}

static int walk_value_cb(void *ctx, int parent, aigw_jtok t, const aigw_jspan *key,
                         const aigw_jspan *value)
{
    static const char letters[] = "?{[)SNntf";
    walk_rec *r = ctx;
    (void)parent;
    if (++r->calls == r->stop_at)
        return -1;
    if (key->p)
        walk_put(r, "%.*s:", (int)key->len, key->p);
    walk_put(r, "%c", letters[t]);
    if (t == AIGW_JTOK_STRING || t == AIGW_JTOK_NUMBER)
        walk_put(r, "=%.*s", (int)value->len, value->p);
    walk_put(r, "%zu ", r->depth);
    if (t == AIGW_JTOK_OBJECT || t == AIGW_JTOK_ARRAY) {
        r->depth++;
        return 1;
    }
    return 0;
}

static int walk_close_cb(void *ctx, int role)
{
    walk_rec *r = ctx;
    (void)role;
    if (++r->calls == r->stop_at)
        return -1;
    r->depth--;
    walk_put(r, ")%zu ", r->depth);
    return 0;
}

/* The walk of text wanting everything, as tokens() prints it (no end
 * offset: "END" or "ERROR"), or "STOP" after stop_at calls. */
static const char *walked(const char *text, size_t len, int stop_at)
{
    static walk_rec r;
    static const aigw_jwant all[] = {{true, 0, false}, {true, 0, true}};
    aigw_jwalk w = {all, walk_value_cb, walk_close_cb, &r, NULL};
    int rc;
    memset(&r, 0, sizeof r);
    r.stop_at = stop_at;
    rc = aigw__jscan_walk(text, len, 1, &w);
    walk_put(&r, "%s", rc == 0 ? "END" : rc == 1 ? "ERROR" : "STOP");
    return r.out;
}

/* tokens(), its end offset dropped. */
static const char *tokens_no_offset(const char *text, size_t len)
{
    static char out[1024];
    char *at;
    snprintf(out, sizeof out, "%s", tokens(text, len));
    if ((at = strstr(out, "END@")) != NULL)
        at[3] = '\0';
    return out;
}

static size_t max_depth(const char *s, size_t len)
{
    size_t i, d = 0, m = 0;
    for (i = 0; i < len; i++)
        if (s[i] == '{' || s[i] == '[')
            m = ++d > m ? d : m;
        else if ((s[i] == '}' || s[i] == ']') && d)
            d--;
    return m;
}

static void test_jscan_walk_tokens(void **state)
{
    static const char text[] = "\xef\xbb\xbf {\"a\" : [1, {\"b\":\"}]\\\"\"}, [] ] ,\"c\":{},"
                               "\"d\":-1.5e3 ,\"e\":null,\"f\":true,\"g\":false} junk";
    (void)state;
    assert_string_equal(walked(text, sizeof text - 1, 0),
                        "{0 a:[1 N=12 {2 b:S=}]\\\"3 )2 [2 )2 )1 c:{1 )1 d:N=-1.5e31 e:n1 f:t1 "
                        "g:f1 )0 END");
    assert_string_equal(walked("[1,]", 4, 0), "[0 N=11 ERROR");
    assert_string_equal(walked("", 0, 0), "ERROR");
    assert_string_equal(walked(NULL, 5, 0), "ERROR");
    assert_string_equal(walked("[1,2]", 5, 2), "[0 STOP");
    assert_string_equal(walked("[1,2]", 5, 3), "[0 N=11 STOP");
    assert_string_equal(walked("[[]]", 4, 2), "[0 STOP");
    assert_string_equal(walked("[[]]", 4, 3), "[0 [1 STOP");
    {
        /* closes not wanted: no close callback */
        static const aigw_jwant quiet[] = {{true, 0, false}, {true, 0, false}};
        static walk_rec r;
        aigw_jwalk w = {quiet, walk_value_cb, NULL, &r, NULL};
        memset(&r, 0, sizeof r);
        assert_int_equal(aigw__jscan_walk("[1,[2]]", 7, 1, &w), 0);
        assert_string_equal(r.out, "[0 N=11 [1 N=22 ");
    }
}

/* The walk wanting everything hands over what aigw__jscan_next does, and
 * judges every text as it does (deeper than roles go: the verdict). */
static void walk_agrees(const char *s, size_t len)
{
    const char *want = tokens_no_offset(s, len), *got = walked(s, len, 0);
    const char *wt = strrchr(want, ' '), *gt = strrchr(got, ' ');
    wt = wt ? wt + 1 : want;
    gt = gt ? gt + 1 : got;
    if (max_depth(s, len) < 64 ? strcmp(want, got) != 0 : strcmp(wt, gt) != 0)
        fail_msg("walk %s, want %s: %.*s", got, want, (int)(len < 200 ? len : 200), s);
}

static void test_jscan_walk_agrees_with_next(void **state)
{
    uint64_t seed = 0x2545f4914f6cdd1dULL;
    static char deep[2 * 1002 + 1];
    size_t i, depth;
    (void)state;
    walk_agrees("[1\0]", 4);
    walk_agrees("\xef\xbb\xbf{", 4);
    walk_agrees("\xef\xbb\xbf{}x", 6);
    walk_agrees("{\"a\":1}", 7);
    for (depth = 998; depth <= 1001; depth++) {
        memset(deep, '[', depth);
        memset(deep + depth, ']', depth);
        walk_agrees(deep, 2 * depth);
        walk_agrees(deep, depth);
        memset(deep, '{', 1);
        walk_agrees(deep, 2 * depth);
    }
    for (i = 0; i < 50000; i++) {
        char buf[256];
        size_t len = json_pieces(&seed, buf, sizeof buf);
        walk_agrees(buf, seed % 3 == 0 ? len / 2 : len);
    }
}

/* Passed over, the members not wanted are judged as ever; a key that may
 * be wanted comes to the callback, one that is not does not. */
static void test_jscan_walk_passes_over(void **state)
{
    static const aigw_jwant wants[] = {
        {true, 0, false},
        {false, AIGW_JFIRST('a') | AIGW_JFIRST('c'), true}, /* ab, cd */
    };
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"{\"x\":[1,{\"y\":2}],\"ab\":1,\"z\":\"s\",\"cd\":[2]}", "{0 ab:N=11 cd:[1 )1 )0 END"},
        /* another first byte: not handed over */
        {"{\"xb\":1,\"bz\":3,\"\":4}", "{0 )0 END"},
        /* a name's first byte: handed over, for the callback to compare */
        {"{\"ca\":1,\"abc\":2}", "{0 ca:N=11 abc:N=21 )0 END"},
        /* escaped: the callback compares */
        {"{\"\\u0061b\":1,\"q\\n\":2}", "{0 \\u0061b:N=11 q\\n:N=21 )0 END"},
        /* an array: its elements are not members */
        {"[1,{\"ab\":2}]", "[0 )0 END"},
        /* what is passed over is still checked */
        {"{\"x\":[1,]}", "{0 ERROR"},
        {"{\"x\":{\"y\" 1}}", "{0 ERROR"},
        {"{\"x\":\"\\q\"}", "{0 ERROR"},
        {"{\"x\":-}", "{0 ERROR"},
        {"{\"x\":nul}", "{0 ERROR"},
        {"{\"x\":[}", "{0 ERROR"},
        {"{\"x\":1,\"ab\":2", "{0 ab:N=21 ERROR"},
    };
    size_t i;
    uint64_t seed = 0x9e3779b97f4a7c15ULL;
    (void)state;
    for (i = 0; i < sizeof cases / sizeof *cases; i++) {
        static walk_rec r;
        aigw_jwalk w = {wants, walk_value_cb, walk_close_cb, &r, NULL};
        int rc;
        memset(&r, 0, sizeof r);
        rc = aigw__jscan_walk(cases[i].text, strlen(cases[i].text), 1, &w);
        walk_put(&r, "%s", rc == 0 ? "END" : rc == 1 ? "ERROR" : "STOP");
        assert_string_equal(r.out, cases[i].want);
    }
    {
        /* a raw NUL byte where a name ends: strcmp would stop there */
        static const char nul[] = "{\"ab\0x\":1}";
        static walk_rec r;
        aigw_jwalk w = {wants, walk_value_cb, walk_close_cb, &r, NULL};
        memset(&r, 0, sizeof r);
        assert_int_equal(aigw__jscan_walk(nul, sizeof nul - 1, 1, &w), 0);
        assert_int_equal(r.calls, 3); /* the object, its member, its close */
    }
    /* the verdict, whatever is passed over */
    for (i = 0; i < 50000; i++) {
        char buf[256];
        size_t len = json_pieces(&seed, buf, sizeof buf);
        static walk_rec r;
        aigw_jwalk w = {wants, walk_value_cb, walk_close_cb, &r, NULL};
        aigw_jtok t;
        aigw_jscan j;
        memset(&r, 0, sizeof r);
        aigw__jscan_init(&j, buf, len);
        while ((t = aigw__jscan_next(&j)) > AIGW_JTOK_END)
            ;
        assert_int_equal(aigw__jscan_walk(buf, len, 1, &w), t == AIGW_JTOK_END ? 0 : 1);
    }
}

/* ---- URLs (libcurl's URL API) ---- */

static void url_is(const char *in, const char *scheme, const char *host, long port,
                   bool written, const char *path)
{
    aigw_url u;
    char *why = NULL;
    int rc = aigw__url_parse(in, &u, &why);
    if (rc != 0)
        fail_msg("%s: refused (%s)", in, why ? why : "?");
    assert_null(why);
    assert_string_equal(u.scheme, scheme);
    assert_string_equal(u.host, host);
    if (u.port != port || u.port_written != written)
        fail_msg("%s: port %ld (%s), want %ld", in, u.port, u.port_written ? "written" : "default",
                 port);
    assert_string_equal(u.path, path);
    aigw__url_free(&u);
}

static void url_refused(const char *in, const char *want)
{
    aigw_url u;
    char *why = NULL;
    int rc = aigw__url_parse(in, &u, &why);
    if (rc != -1)
        fail_msg("%s: accepted", in ? in : "(null)");
    assert_non_null(why);
    if (!strstr(why, want))
        fail_msg("%s: \"%s\" does not say \"%s\"", in ? in : "(null)", why, want);
    assert_null(u.scheme);
    assert_null(u.host);
    aigw__free(why);
    /* why is optional */
    assert_int_equal(aigw__url_parse(in, &u, NULL), -1);
}

static void test_url_parse(void **state)
{
    aigw_url u;
    (void)state;
    /* default ports, and ports as written */
    url_is("https://api.openai.com/v1", "https", "api.openai.com", 443, false, "/v1");
    url_is("http://example.com", "http", "example.com", 80, false, "/");
    url_is("http://example.com/", "http", "example.com", 80, false, "/");
    url_is("wss://h/x", "wss", "h", 443, false, "/x");
    url_is("ws://h", "ws", "h", 80, false, "/");
    url_is("https://h:8443/a/b//", "https", "h", 8443, true, "/a/b//");
    url_is("http://h:0080/", "http", "h", 80, true, "/"); /* leading zeros */
    url_is("http://h:/x", "http", "h", 80, false, "/x");  /* an empty port */
    url_is("ftp://h:21/x", "ftp", "h", 21, true, "/x");
    url_is("ftp://h/x", "ftp", "h", -1, false, "/x");      /* no default known */
    /* scheme and host lower-cased; the path as written, dot segments too */
    url_is("HTTPS://Api.Example.COM/V1/../x", "https", "api.example.com", 443, false,
           "/V1/../x");
    /* IPv6 literals: in brackets, lower-cased; a zone as written */
    url_is("http://[::1]:11434/v1", "http", "[::1]", 11434, true, "/v1");
    url_is("https://[2001:DB8::1]/v1", "https", "[2001:db8::1]", 443, false, "/v1");
    url_is("http://[fe80::1%25eth0]:8/", "http", "[fe80::1%25eth0]", 8, true, "/");
    /* IPv4 as curl reads it */
    url_is("http://127.1/", "http", "127.0.0.1", 80, false, "/");
    /* user info: noted, not part of the host; it ends at the last '@' */
    assert_int_equal(aigw__url_parse("https://user:pa%40ss@Example.COM:8443/x", &u, NULL), 0);
    assert_true(u.has_userinfo);
    assert_string_equal(u.host, "example.com");
    assert_int_equal(u.port, 8443);
    aigw__url_free(&u);
    assert_int_equal(aigw__url_parse("https://u@h@host.example/x", &u, NULL), 0);
    assert_true(u.has_userinfo);
    assert_string_equal(u.host, "host.example");
    aigw__url_free(&u);
    assert_int_equal(aigw__url_parse("https://:pw@host.example/x", &u, NULL), 0);
    assert_true(u.has_userinfo);
    aigw__url_free(&u);
    /* query and fragment, even empty */
    assert_int_equal(aigw__url_parse("https://h/p?", &u, NULL), 0);
    assert_true(u.has_query && !u.has_fragment && !u.has_userinfo);
    aigw__url_free(&u);
    assert_int_equal(aigw__url_parse("https://h#", &u, NULL), 0);
    assert_true(!u.has_query && u.has_fragment);
    aigw__url_free(&u);
    assert_int_equal(aigw__url_parse("https://h/a#b?c", &u, NULL), 0);
    assert_true(!u.has_query && u.has_fragment);
    aigw__url_free(&u);
    /* refused */
    url_refused(NULL, "not a URL");
    url_refused("", "scheme");
    url_refused("api.openai.com/v1", "scheme");
    url_refused("1http://h/", "scheme");
    url_refused("https:/h", "scheme");
    url_refused("https://", "must have a host");
    url_refused("https:///v1", "must have a host");
    url_refused("https://:443/v1", "must have a host");
    url_refused("http://u@/x", "must have a host");
    url_refused("https://h:0/", "invalid port");
    url_refused("https://h:65536/", "invalid port");
    url_refused("https://h:12a/", "invalid port");
    url_refused("http://[::1]x/", "invalid port");
    url_refused("http://[::1/", "invalid host");
    url_refused("http://[]:80", "invalid host");
    url_refused("https://exa%6dple.com/", "invalid host");
    url_refused("https://a b/", "whitespace");
    url_refused("https://h/\x01", "control characters");
    url_refused("https://h/ ", "whitespace");
}

static void test_url_origin(void **state)
{
    static const struct {
        const char *in, *want;
    } cases[] = {
        {"https://API.OpenAI.com/v1/chat/completions", "https://api.openai.com:443"},
        {"http://localhost:08080/v1", "http://localhost:8080"},
        {"https://u:p@Example.COM:8443/x?y#z", "https://example.com:8443"},
        {"http://[::1]:11434/v1", "http://[::1]:11434"},
        {"https://[2001:DB8::1]/v1", "https://[2001:db8::1]:443"},
        {"wss://h", "wss://h:443"},
        {"ftp://files.example/x", NULL},
        {"https://", NULL},
        {"nope", NULL},
        {NULL, NULL},
    };
    size_t i;
    (void)state;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *o = aigw__url_origin(cases[i].in);
        if (!cases[i].want) {
            if (o)
                fail_msg("%s: origin %s, want none", cases[i].in ? cases[i].in : "(null)", o);
        } else {
            assert_non_null(o);
            assert_string_equal(o, cases[i].want);
        }
        aigw__free(o);
    }
}

/* One parse for a base URL: whether it has a path, and its origin (as
 * aigw__url_origin). */
static void test_url_split(void **state)
{
    static const struct {
        const char *in;
        bool has_path;
        const char *origin;
    } cases[] = {
        {"https://API.OpenAI.com/v1", true, "https://api.openai.com:443"},
        {"http://127.0.0.1:9", false, "http://127.0.0.1:9"},
        {"http://127.0.0.1:9/", false, "http://127.0.0.1:9"},
        {"http://[::1]:11434/api/x", true, "http://[::1]:11434"},
        {"ftp://files.example/x", true, NULL},
        {"https://", false, NULL},
        {"nope", false, NULL},
    };
    size_t i;
    long n;
    int rc = -2;
    (void)state;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bool has_path = !cases[i].has_path;
        char *o = (char *)"unset";
        assert_int_equal(aigw__url_split(cases[i].in, &has_path, &o), 0);
        if (has_path != cases[i].has_path)
            fail_msg("%s: has_path %d", cases[i].in, (int)has_path);
        if (!cases[i].origin)
            assert_null(o);
        else
            assert_string_equal(o, cases[i].origin);
        aigw__free(o);
    }
    for (n = 1; n < 50 && rc != 0; n++) {
        bool has_path;
        char *o = NULL;
        aigw__alloc_fail_at(n);
        rc = aigw__url_split("https://Host.example:8443/v1", &has_path, &o);
        aigw__alloc_fail_at(0);
        assert_true(rc == 0 || rc == -2);
        if (rc == 0) {
            assert_true(has_path);
            assert_string_equal(o, "https://host.example:8443");
        } else {
            assert_null(o);
        }
        aigw__free(o);
    }
    assert_int_equal(rc, 0);
}

static void test_url_alloc_failures(void **state)
{
    long n;
    int rc = -2;
    (void)state;
    for (n = 1; n < 50 && rc != 0; n++) {
        aigw_url u;
        char *why = NULL;
        aigw__alloc_fail_at(n);
        rc = aigw__url_parse("https://a@b@Host.example:8443/v1", &u, &why);
        aigw__alloc_fail_at(0);
        assert_true(rc == 0 || rc == -2);
        assert_null(why);
        if (rc == 0) {
            assert_string_equal(u.host, "host.example");
            aigw__url_free(&u);
        } else {
            assert_null(u.host);
        }
    }
    assert_int_equal(rc, 0);
    /* a problem's text is allocated too */
    for (rc = -2, n = 1; n < 50 && rc != -1; n++) {
        aigw_url u;
        char *why = NULL;
        aigw__alloc_fail_at(n);
        rc = aigw__url_parse("https://h:0/", &u, &why);
        aigw__alloc_fail_at(0);
        assert_true(rc == -1 || rc == -2);
        if (rc == -1)
            assert_string_equal(why, "has an invalid port");
        else
            assert_null(why);
        aigw__free(why);
    }
    assert_int_equal(rc, -1);
}

/* ---- what the library writes: traces and its own answers ---- */

static void test_trace_and_answer_stay_json(void **state)
{
    /* strings as an upstream or a caller might have them: bytes that are
     * not UTF-8, control characters, quotes */
    static const char odd[] = "m\xff\xfe\x01\"\\\xc3";
    aigw_response *resp = aigw__response_new();
    aigw_attempt *a;
    run r;
    const char *trace, *body;
    size_t len;
    (void)state;
    assert_non_null(resp);
    a = aigw__response_add_attempt(resp);
    assert_non_null(a);
    a->provider = aigw__response_strdup(resp, "p\x80");
    a->model = aigw__response_strdup(resp, odd);
    a->key_id = aigw__response_strdup(resp, "k\xed\xa0\x80");
    a->key_source = "config";
    a->status = 500;
    a->cls = AIGW_CLASS_SERVER;
    assert_int_equal(aigw__response_add_skip(resp, odd, odd, AIGW_SKIP_KEY_COOLING, odd, 0, 5),
                     0);
    resp->model = aigw__response_strdup(resp, odd);
    trace = aigw_response_trace_json(resp);
    assert_json(trace);
    assert_non_null(strstr(trace, "\"model\":\"m\\ufffd\\ufffd\\u0001\\\"\\\\\\ufffd\""));
    /* the library's own error answer naming the model */
    memset(&r, 0, sizeof r);
    r.resp = resp;
    assert_int_equal(aigw__reject(&r, odd, -1), 0);
    body = aigw_response_body(resp, &len);
    assert_json(body);
    assert_non_null(strstr(body, "model 'm\\ufffd\\ufffd\\u0001\\\"\\\\\\ufffd'"));
    aigw_response_free(resp);
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
        cmocka_unit_test(test_utf8_validator),
        cmocka_unit_test(test_utf8_prefix),
        cmocka_unit_test(test_buf_json_invalid_utf8),
        cmocka_unit_test(test_jscan_tokens),
        cmocka_unit_test(test_jscan_agrees_with_json_check),
        cmocka_unit_test(test_jspan_strings_agree_with_cjson),
        cmocka_unit_test(test_jspan_number_agrees_with_cjson),
        cmocka_unit_test(test_jscan_walk_tokens),
        cmocka_unit_test(test_jscan_walk_agrees_with_next),
        cmocka_unit_test(test_jscan_walk_passes_over),
        cmocka_unit_test(test_url_parse),
        cmocka_unit_test(test_url_origin),
        cmocka_unit_test(test_url_split),
        cmocka_unit_test(test_url_alloc_failures),
        cmocka_unit_test(test_trace_and_answer_stay_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
