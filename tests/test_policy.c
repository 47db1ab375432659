/* test_policy.c - the failover policy table: the README's table is the one
 * in the code, row for row, and the rows keep the invariants the engine
 * relies on.  With --print, prints the table (scripts/policy-table puts it
 * into the README). */
#include "policy.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define BEGIN_MARK "<!-- policy-table: generated from lib/policy.c by scripts/policy-table -->\n"
#define END_MARK "<!-- /policy-table -->"

static char *read_all(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    if (buf)
        buf[n] = '\0';
    fclose(f);
    return buf;
}

static void test_readme_table_is_the_code(void **state)
{
    char *readme = read_all(README_PATH), *md = aigw__policy_markdown(), *begin, *end;
    (void)state;
    assert_non_null(readme);
    assert_non_null(md);
    begin = strstr(readme, BEGIN_MARK);
    assert_non_null(begin);
    begin += strlen(BEGIN_MARK);
    end = strstr(begin, END_MARK);
    assert_non_null(end);
    *end = '\0';
    if (strcmp(begin, md) != 0) {
        fprintf(stderr, "README.md's policy table differs from lib/policy.c; run "
                        "scripts/policy-table.  The code's table:\n%s", md);
        fail();
    }
    aigw__free(md);
    free(readme);
}

/* One name per verdict, skip reason and class; none shared. */
static void test_names_unique(void **state)
{
    const char *seen[64];
    size_t n = 0, i;
    int v;
    (void)state;
    assert_null(aigw__verdict_name(AIGW_VERDICT_NONE));
    for (v = 1; v < AIGW_VERDICT__COUNT; v++)
        seen[n++] = aigw__verdict_name((aigw_verdict)v);
    for (v = 0; v < AIGW_SKIP__COUNT; v++)
        seen[n++] = aigw__skip_reason_name((aigw_skip_reason)v);
    for (i = 0; i < n; i++) {
        size_t j;
        assert_non_null(seen[i]);
        assert_true(seen[i][0] != '\0');
        for (j = 0; j < i; j++)
            assert_string_not_equal(seen[i], seen[j]);
    }
    assert_null(aigw__verdict_name(AIGW_VERDICT__COUNT));
}

/* What the engine relies on, row by row. */
static void test_row_invariants(void **state)
{
    int c;
    (void)state;
    for (c = 0; c < AIGW_CLASS__COUNT; c++) {
        const aigw_policy_row *row = aigw__policy_row((aigw_class)c);
        assert_non_null(row->answers);
        if (c == AIGW_CLASS_NONE) {
            assert_int_equal(row->move, AIGW_MOVE_SERVE);
            assert_int_equal(row->verdict, AIGW_VERDICT_SUCCEEDED);
            continue;
        }
        assert_int_not_equal(row->move, AIGW_MOVE_SERVE);
        /* only a sideways move can fall back to a same-backend wait */
        if (row->move != AIGW_MOVE_NEXT_KEY)
            assert_int_equal(row->wait, AIGW_WAIT_NEVER);
        if (row->move == AIGW_MOVE_FAIL_FAST) {
            assert_int_equal(row->verdict, AIGW_VERDICT_FAIL_FAST);
            assert_false(row->retry);
            assert_int_equal(row->remember, AIGW_REMEMBER_NOTHING);
        }
        if (row->move == AIGW_MOVE_NEXT_STEP || row->move == AIGW_MOVE_NEXT_MODEL)
            assert_int_equal(row->verdict, AIGW_VERDICT_NEXT_BACKEND);
        /* a failure the key cools or is benched for is not a retry: that
         * key cannot multiply traffic */
        if (aigw__policy_key_failure((aigw_class)c))
            assert_false(row->retry);
        /* the caller's own mistakes say nothing of anyone's health */
        if (row->move == AIGW_MOVE_FAIL_FAST) {
            assert_int_equal(aigw__policy_endpoint_hears((aigw_class)c, true), AIGW_HEAR_NEUTRAL);
            assert_int_equal(aigw__policy_host_hears((aigw_class)c, false), AIGW_HEAR_NEUTRAL);
        }
    }
}

/* The scopes of issue "health at the scope each failure speaks for". */
static void test_scopes(void **state)
{
    (void)state;
    assert_int_equal(aigw__policy_row(AIGW_CLASS_RATE_LIMIT)->remember,
                     AIGW_REMEMBER_COOL_ENDPOINT);
    assert_int_equal(aigw__policy_row(AIGW_CLASS_AUTH)->remember, AIGW_REMEMBER_BENCH_KEY);
    assert_int_equal(aigw__policy_row(AIGW_CLASS_QUOTA)->remember, AIGW_REMEMBER_BENCH_KEY);
    assert_int_equal(aigw__policy_row(AIGW_CLASS_CONTEXT_LENGTH)->remember,
                     AIGW_REMEMBER_BAN_MODEL);
    /* server errors: the endpoint, not the host */
    assert_int_equal(aigw__policy_endpoint_hears(AIGW_CLASS_SERVER, true), AIGW_HEAR_FAILURE);
    assert_int_equal(aigw__policy_host_hears(AIGW_CLASS_SERVER, true), AIGW_HEAR_SUCCESS);
    /* a 408 is the endpoint's; a timeout with no answer the host's */
    assert_int_equal(aigw__policy_endpoint_hears(AIGW_CLASS_TIMEOUT, true), AIGW_HEAR_FAILURE);
    /* nothing answered: no verdict on the endpoint (a probe is released,
     * never taken for a sign of health) */
    assert_int_equal(aigw__policy_endpoint_hears(AIGW_CLASS_TIMEOUT, false), AIGW_HEAR_ABANDON);
    assert_int_equal(aigw__policy_host_hears(AIGW_CLASS_TIMEOUT, false), AIGW_HEAR_FAILURE);
    /* connection refused: the host only */
    assert_int_equal(aigw__policy_endpoint_hears(AIGW_CLASS_NETWORK, false), AIGW_HEAR_ABANDON);
    assert_int_equal(aigw__policy_endpoint_hears(AIGW_CLASS_NETWORK, true), AIGW_HEAR_FAILURE);
    /* a 429 answered: neutral; it closes a half-open breaker */
    assert_int_equal(aigw__policy_endpoint_hears(AIGW_CLASS_RATE_LIMIT, true), AIGW_HEAR_NEUTRAL);
    assert_int_equal(aigw__policy_host_hears(AIGW_CLASS_NETWORK, false), AIGW_HEAR_FAILURE);
    /* out of range: the success row, never a crash */
    assert_ptr_equal(aigw__policy_row((aigw_class)99), aigw__policy_row(AIGW_CLASS_NONE));
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_readme_table_is_the_code),
        cmocka_unit_test(test_names_unique),
        cmocka_unit_test(test_row_invariants),
        cmocka_unit_test(test_scopes),
    };
    if (argc > 1 && strcmp(argv[1], "--print") == 0) {
        char *md = aigw__policy_markdown();
        if (!md)
            return 1;
        fputs(md, stdout);
        aigw__free(md);
        return 0;
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
