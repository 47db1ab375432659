/* test_scale.c - a gateway file's cost grows with its size, not its square.
 *
 * Parsing and client creation are timed on the process's CPU clock at n and
 * 10 n provider keys (each also listed in a rule's step, plus as many access
 * keys): a linear (or n log n) parse costs about 10 times more, a quadratic
 * one 100 times.  The bound is generous (30) so that a noisy machine or a
 * sanitizer cannot fail it, and the measure is a ratio of two runs of the
 * same binary, never a wall-clock limit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

#define BIG 100000
#define SMALL (BIG / 10)
#define MAX_RATIO 30.0

/* A gateway file with n providerKeys, one rule whose user step lists them
 * all by id, and n access keys. */
static char *big_file(size_t n, size_t *len)
{
    aigw_buf b = AIGW_BUF_INIT;
    size_t i;
    int rc = aigw__buf_puts(&b, "{\"providerKeys\":[");
    for (i = 0; i < n; i++)
        rc |= aigw__buf_printf(&b, "%s{\"id\":\"k%zu\",\"providerId\":\"openai\","
                                   "\"value\":\"sk-scale-%08zu\"}", i ? "," : "", i, i);
    rc |= aigw__buf_puts(&b, "],\"accessKeyConfiguration\":{\"name\":\"main\",\"router\":"
                             "{\"rules\":[{\"provider\":\"openai\",\"steps\":[{\"type\":\"user\","
                             "\"keys\":[");
    for (i = 0; i < n; i++)
        rc |= aigw__buf_printf(&b, "%s{\"id\":\"k%zu\"}", i ? "," : "", i);
    rc |= aigw__buf_puts(&b, "]}]}]}},\"accessKeys\":[");
    for (i = 0; i < n; i++)
        rc |= aigw__buf_printf(&b, "%s{\"id\":\"a%zu\",\"value\":\"access-%08zu\"}", i ? "," : "",
                               i, i);
    rc |= aigw__buf_puts(&b, "]}");
    assert_int_equal(rc, 0);
    *len = b.len;
    return b.data;
}

static double cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The CPU time of parsing the file and making a client of it (the better of
 * two runs), after checking what came out. */
static double load_cost(size_t n)
{
    size_t len, n_keys;
    char last[32];
    char *json = big_file(n, &len);
    double best = 1e9;
    int run;
    for (run = 0; run < 2; run++) {
        aigw_config *cfg = NULL;
        aigw_client *cl = NULL;
        aigw_error *err = NULL;
        double t0 = cpu_seconds(), t;
        if (aigw_config_parse(json, len, &cfg, &err) != AIGW_OK)
            fail_msg("parse of %zu keys: %s", n, aigw_error_message(err));
        assert_int_equal(aigw_client_new(cfg, &cl, &err), AIGW_OK);
        t = cpu_seconds() - t0;
        best = t < best ? t : best;
        /* each key once, whether named by providerKeys or by the step */
        (void)aigw__config_keys(cfg, &n_keys);
        assert_int_equal(n_keys, n);
        assert_int_equal(aigw_config_access_key_count(cfg), n);
        snprintf(last, sizeof last, "a%zu", n - 1);
        assert_string_equal(aigw_config_access_key_id(cfg, n - 1), last);
        aigw_client_free(cl);
        aigw_config_unref(cfg);
    }
    aigw__free(json);
    return best;
}

static void test_load_is_not_quadratic(void **state)
{
    double small, big;
    (void)state;
    small = load_cost(SMALL);
    big = load_cost(BIG);
    print_message("parse + client: %d keys %.3f s CPU, %d keys %.3f s CPU: ratio %.1f "
                  "(linear 10, quadratic 100; bound %.0f)\n",
                  SMALL, small, BIG, big, big / small, MAX_RATIO);
    assert_true(big / (small > 1e-4 ? small : 1e-4) <= MAX_RATIO);
}

/* Duplicates are still found, each against the first of its kind, when
 * there are many entries to compare with. */
static void test_duplicates_in_a_big_file(void **state)
{
    size_t len;
    char *json = big_file(SMALL, &len), *dup;
    aigw_config *cfg = NULL;
    aigw_error *err = NULL;
    (void)state;
    /* the last provider key and the last access key take earlier ones' id
     * and value */
    dup = strstr(json, "{\"id\":\"k9999\",\"providerId\"");
    assert_non_null(dup);
    memcpy(dup + 7, "k1234", 5);
    dup = strstr(json, "\"access-00009999\"");
    assert_non_null(dup);
    memcpy(dup + 1, "access-00000042", 15);
    assert_int_equal(aigw_config_parse(json, len, &cfg, &err), AIGW_ECONFIG);
    assert_null(cfg);
    /* the step's k9999 then names no key */
    assert_int_equal(aigw_error_count(err), 3);
    assert_string_equal(aigw_error_path(err, 0), "providerKeys[9999].id");
    assert_string_equal(aigw_error_problem(err, 0), "duplicate id (also providerKeys[1234])");
    assert_string_equal(aigw_error_path(err, 1),
                        "accessKeyConfiguration.router.rules[0].steps[0].keys[9999].id");
    assert_string_equal(aigw_error_problem(err, 1), "no provider key with this id");
    assert_string_equal(aigw_error_path(err, 2), "accessKeys[9999].value");
    assert_string_equal(aigw_error_problem(err, 2), "the same value as accessKeys[42]");
    aigw_error_free(err);
    aigw__free(json);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_is_not_quadratic),
        cmocka_unit_test(test_duplicates_in_a_big_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
