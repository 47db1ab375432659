/* test_strategy.c - the built-in key orders: exact orders where the strategy
 * is deterministic, frequencies over many draws where it is random, and the
 * rule every strategy keeps: ready keys first, the others last in
 * configuration order. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define MAX_KEYS 200
#define PICKS 10000

static const aigw_strategy_kind all_kinds[] = {
    AIGW_STRATEGY_ORDERED, AIGW_STRATEGY_ROUND_ROBIN, AIGW_STRATEGY_RANDOM,
    AIGW_STRATEGY_WEIGHTED, AIGW_STRATEGY_LEAST_RECENTLY_LIMITED};
#define N_KINDS (sizeof all_kinds / sizeof all_kinds[0])

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct keyset {
    aigw_key_health h[MAX_KEYS];
    const aigw_key_health *p[MAX_KEYS];
    size_t n;
} keyset;

/* n ready keys of weight 1, never rate limited. */
static void keys_init(keyset *ks, size_t n)
{
    size_t i;
    assert_true(n <= MAX_KEYS);
    memset(ks, 0, sizeof *ks);
    ks->n = n;
    for (i = 0; i < n; i++) {
        ks->h[i].id = "k";
        ks->h[i].state = AIGW_KEY_READY;
        ks->h[i].since_limited_ms = -1;
        ks->h[i].weight = 1;
        ks->h[i].latency_mean_ms = -1;
        ks->p[i] = &ks->h[i];
    }
}

static void order_of(aigw_strategy_kind kind, const keyset *ks, _Atomic unsigned long *turn,
                     size_t *order)
{
    size_t i;
    for (i = 0; i < ks->n; i++)
        order[i] = (size_t)-1;
    aigw__strategy_order(kind, ks->p, ks->n, turn, order);
}

static void assert_permutation(const size_t *order, size_t n)
{
    bool seen[MAX_KEYS] = {false};
    size_t i;
    for (i = 0; i < n; i++) {
        assert_true(order[i] < n);
        assert_false(seen[order[i]]);
        seen[order[i]] = true;
    }
}

static void assert_order(const size_t *order, const size_t *want, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        if (order[i] != want[i])
            fail_msg("position %zu: got key %zu, want key %zu", i, order[i], want[i]);
}

static bool ready(const keyset *ks, size_t i)
{
    return ks->h[i].state == AIGW_KEY_READY;
}

static uint64_t age(const keyset *ks, size_t i)
{
    return ks->h[i].since_limited_ms < 0 ? UINT64_MAX : (uint64_t)ks->h[i].since_limited_ms;
}

/* What every strategy promises, and each one's own rule where it is not
 * random: a permutation; ready keys first; the rest in configuration order;
 * weighted: weight-0 ready keys after the others, in configuration order;
 * least-recently-limited: oldest limit first, ties in configuration order;
 * ordered: configuration order, not-ready keys in place. */
static void check_invariants(aigw_strategy_kind kind, const keyset *ks, const size_t *order)
{
    size_t i, n_ready = 0, n = ks->n;
    assert_permutation(order, n);
    if (kind == AIGW_STRATEGY_ORDERED) {
        /* the list as written, whatever the health: the engine passes over
         * (and records) the keys that are not ready */
        for (i = 0; i < n; i++)
            assert_int_equal(order[i], i);
        return;
    }
    for (i = 0; i < n; i++)
        n_ready += ready(ks, i);
    for (i = 0; i < n; i++)
        assert_true(ready(ks, order[i]) == (i < n_ready));
    for (i = n_ready + 1; i < n; i++)
        assert_true(order[i - 1] < order[i]);
    switch (kind) {
    case AIGW_STRATEGY_ORDERED:
        for (i = 1; i < n_ready; i++)
            assert_true(order[i - 1] < order[i]);
        break;
    case AIGW_STRATEGY_WEIGHTED:
        for (i = 1; i < n_ready; i++) {
            uint32_t a = ks->h[order[i - 1]].weight, b = ks->h[order[i]].weight;
            assert_false(a == 0 && b > 0);
            if (a == 0 && b == 0)
                assert_true(order[i - 1] < order[i]);
        }
        break;
    case AIGW_STRATEGY_LEAST_RECENTLY_LIMITED:
        for (i = 1; i < n_ready; i++) {
            uint64_t a = age(ks, order[i - 1]), b = age(ks, order[i]);
            assert_true(a >= b);
            if (a == b)
                assert_true(order[i - 1] < order[i]);
        }
        break;
    case AIGW_STRATEGY_ROUND_ROBIN:
        /* a rotation of the ready keys: ascending with one wrap at most */
        {
            size_t drops = 0;
            for (i = 1; i < n_ready; i++)
                drops += order[i - 1] > order[i];
            assert_true(drops <= 1);
            if (drops == 1)
                assert_true(order[n_ready - 1] < order[0]);
        }
        break;
    case AIGW_STRATEGY_RANDOM:
    default:
        break;
    }
}

/* A fixed pseudo-random sequence for the test's own choices (the strategy
 * draws from the library's generator). */
static uint64_t lcg_state = 88172645463325252ULL;
static uint64_t lcg(void)
{
    lcg_state ^= lcg_state << 13;
    lcg_state ^= lcg_state >> 7;
    lcg_state ^= lcg_state << 17;
    return lcg_state;
}

/* ------------------------------------------------------------------------ */
/* Names                                                                    */
/* ------------------------------------------------------------------------ */

static void test_names(void **state)
{
    static const char *const want[] = {"ordered", "round-robin", "random", "weighted",
                                       "least-recently-limited"};
    size_t i;
    (void)state;
    for (i = 0; i < N_KINDS; i++) {
        assert_string_equal(aigw__strategy_name(all_kinds[i]), want[i]);
        assert_int_equal(aigw__strategy_kind(want[i]), (int)all_kinds[i]);
    }
    assert_int_equal(aigw__strategy_kind("Ordered"), -1); /* case matters, as in ngrok */
    assert_int_equal(aigw__strategy_kind("round_robin"), -1);
    assert_int_equal(aigw__strategy_kind(""), -1);
    assert_int_equal(aigw__strategy_kind(NULL), -1);
    assert_string_equal(aigw__strategy_name((aigw_strategy_kind)99), "unknown");
}

/* ------------------------------------------------------------------------ */
/* Sizes 0 and 1                                                            */
/* ------------------------------------------------------------------------ */

static void test_zero_and_one(void **state)
{
    keyset ks;
    size_t order[2], k;
    _Atomic unsigned long turn = 0;
    (void)state;
    for (k = 0; k < N_KINDS; k++) {
        keys_init(&ks, 0);
        order[0] = 77;
        aigw__strategy_order(all_kinds[k], ks.p, 0, &turn, order);
        assert_int_equal(order[0], 77); /* nothing written */
        aigw__strategy_order(all_kinds[k], NULL, 0, NULL, order);
        assert_int_equal(order[0], 77);

        keys_init(&ks, 1);
        order_of(all_kinds[k], &ks, &turn, order);
        assert_int_equal(order[0], 0);
        ks.h[0].state = AIGW_KEY_COOLING;
        order_of(all_kinds[k], &ks, &turn, order);
        assert_int_equal(order[0], 0);
        ks.h[0].state = AIGW_KEY_READY;
        ks.h[0].weight = 0;
        order_of(all_kinds[k], &ks, &turn, order);
        assert_int_equal(order[0], 0);
    }
    /* an out-of-range kind orders as `ordered` */
    keys_init(&ks, 2);
    order_of((aigw_strategy_kind)99, &ks, NULL, order);
    assert_int_equal(order[0], 0);
    assert_int_equal(order[1], 1);
}

/* ------------------------------------------------------------------------ */
/* ordered                                                                  */
/* ------------------------------------------------------------------------ */

static void test_ordered(void **state)
{
    keyset ks;
    size_t order[6], i;
    static const size_t all[] = {0, 1, 2, 3, 4, 5};
    static const size_t in_place[] = {0, 1, 2, 3, 4, 5}; /* the walk skips 1, 3, 4 */
    (void)state;
    keys_init(&ks, 6);
    for (i = 0; i < PICKS; i++) {
        order_of(AIGW_STRATEGY_ORDERED, &ks, NULL, order);
        assert_order(order, all, 6);
    }
    ks.h[1].state = AIGW_KEY_COOLING;
    ks.h[3].state = AIGW_KEY_BENCHED;
    ks.h[4].state = AIGW_KEY_COOLING;
    ks.h[2].weight = 0; /* no meaning for ordered */
    order_of(AIGW_STRATEGY_ORDERED, &ks, NULL, order);
    assert_order(order, in_place, 6);
}

/* ------------------------------------------------------------------------ */
/* round-robin                                                              */
/* ------------------------------------------------------------------------ */

static void test_round_robin(void **state)
{
    keyset ks;
    size_t order[5], first[5] = {0}, i, j;
    _Atomic unsigned long turn = 0;
    (void)state;
    keys_init(&ks, 4);
    for (i = 0; i < PICKS; i++) {
        order_of(AIGW_STRATEGY_ROUND_ROBIN, &ks, &turn, order);
        for (j = 0; j < 4; j++)
            assert_int_equal(order[j], (i + j) % 4); /* rotated by one more each call */
        first[order[0]]++;
    }
    for (j = 0; j < 4; j++)
        assert_int_equal(first[j], PICKS / 4);
    assert_int_equal(atomic_load(&turn), PICKS);

    /* the rotation is over the ready keys; the others wait at the end */
    keys_init(&ks, 5);
    ks.h[1].state = AIGW_KEY_COOLING;
    ks.h[3].state = AIGW_KEY_BENCHED;
    atomic_store(&turn, 0);
    {
        static const size_t want[3][5] = {{0, 2, 4, 1, 3}, {2, 4, 0, 1, 3}, {4, 0, 2, 1, 3}};
        for (i = 0; i < 9; i++) {
            order_of(AIGW_STRATEGY_ROUND_ROBIN, &ks, &turn, order);
            assert_order(order, want[i % 3], 5);
        }
    }
    /* no ready key: configuration order, and the turn still advances */
    for (j = 0; j < 5; j++)
        ks.h[j].state = AIGW_KEY_COOLING;
    atomic_store(&turn, 7);
    order_of(AIGW_STRATEGY_ROUND_ROBIN, &ks, &turn, order);
    for (j = 0; j < 5; j++)
        assert_int_equal(order[j], j);
    assert_int_equal(atomic_load(&turn), 8);

    /* no counter: always from the first ready key */
    keys_init(&ks, 3);
    for (i = 0; i < 5; i++) {
        order_of(AIGW_STRATEGY_ROUND_ROBIN, &ks, NULL, order);
        assert_int_equal(order[0], 0);
        assert_int_equal(order[2], 2);
    }
    /* the counter wraps without trouble */
    atomic_store(&turn, ULONG_MAX);
    order_of(AIGW_STRATEGY_ROUND_ROBIN, &ks, &turn, order);
    assert_int_equal(order[0], ULONG_MAX % 3);
    assert_int_equal(atomic_load(&turn), 0);
    order_of(AIGW_STRATEGY_ROUND_ROBIN, &ks, &turn, order);
    assert_int_equal(order[0], 0);
}

typedef struct rr_thread {
    const keyset *ks;
    _Atomic unsigned long *turn;
    size_t first[4];
} rr_thread;

static void *rr_run(void *arg)
{
    rr_thread *t = arg;
    size_t order[4], i;
    for (i = 0; i < PICKS / 4; i++) {
        aigw__strategy_order(AIGW_STRATEGY_ROUND_ROBIN, t->ks->p, 4, t->turn, order);
        t->first[order[0]]++;
    }
    return NULL;
}

/* Shared by threads, every turn is taken exactly once: still exactly fair. */
static void test_round_robin_threads(void **state)
{
    keyset ks;
    _Atomic unsigned long turn = 0;
    rr_thread t[4];
    pthread_t tid[4];
    size_t i, j, total[4] = {0};
    (void)state;
    keys_init(&ks, 4);
    for (i = 0; i < 4; i++) {
        memset(&t[i], 0, sizeof t[i]);
        t[i].ks = &ks;
        t[i].turn = &turn;
        assert_int_equal(pthread_create(&tid[i], NULL, rr_run, &t[i]), 0);
    }
    for (i = 0; i < 4; i++) {
        assert_int_equal(pthread_join(tid[i], NULL), 0);
        for (j = 0; j < 4; j++)
            total[j] += t[i].first[j];
    }
    for (j = 0; j < 4; j++)
        assert_int_equal(total[j], PICKS / 4);
    assert_int_equal(atomic_load(&turn), PICKS);
}

/* ------------------------------------------------------------------------ */
/* random                                                                   */
/* ------------------------------------------------------------------------ */

static size_t perm_index(const size_t *o)
{
    return ((o[0] * 4 + o[1]) * 4 + o[2]) * 4 + o[3];
}

static void test_random(void **state)
{
    /* 100,000 draws: +-5% of the expected count is then 9 standard
     * deviations, so the test does not fail by chance. */
    enum { DRAWS = 100000 };
    keyset ks;
    size_t order[5], first[4] = {0}, pos[4][4] = {{0}}, i, j, perms = 0;
    static size_t seen[256];
    double chi2 = 0, expect = DRAWS / 4.0;
    (void)state;
    keys_init(&ks, 4);
    memset(seen, 0, sizeof seen);
    for (i = 0; i < DRAWS; i++) {
        order_of(AIGW_STRATEGY_RANDOM, &ks, NULL, order);
        assert_permutation(order, 4);
        first[order[0]]++;
        for (j = 0; j < 4; j++)
            pos[order[j]][j]++;
        seen[perm_index(order)]++;
    }
    for (j = 0; j < 4; j++) {
        double d = (double)first[j] - expect;
        if (d < -0.05 * expect || d > 0.05 * expect)
            fail_msg("key %zu first %zu times of %d", j, first[j], DRAWS);
        chi2 += d * d / expect;
        for (i = 0; i < 4; i++) {
            double e = (double)pos[j][i] - expect;
            assert_true(e > -0.05 * expect && e < 0.05 * expect);
        }
    }
    /* 3 degrees of freedom: above 30 has a chance under 1e-6 */
    assert_true(chi2 < 30.0);
    for (i = 0; i < 256; i++)
        perms += seen[i] > 0;
    assert_int_equal(perms, 24); /* every one of the 4! orders happens */

    /* never a cooling or benched key first while a ready one exists */
    keys_init(&ks, 5);
    ks.h[0].state = AIGW_KEY_COOLING;
    ks.h[2].state = AIGW_KEY_BENCHED;
    memset(first, 0, sizeof first);
    for (i = 0; i < PICKS; i++) {
        order_of(AIGW_STRATEGY_RANDOM, &ks, NULL, order);
        check_invariants(AIGW_STRATEGY_RANDOM, &ks, order);
        assert_int_equal(order[3], 0);
        assert_int_equal(order[4], 2);
        first[order[0] == 1 ? 0 : order[0] == 3 ? 1 : 2]++;
    }
    for (j = 0; j < 3; j++) /* each of the three ready keys leads sometimes */
        assert_true(first[j] > PICKS / 6);
}

/* ------------------------------------------------------------------------ */
/* weighted                                                                 */
/* ------------------------------------------------------------------------ */

/* The exact chance of key k at position p when 4 keys of weights w are
 * drawn without replacement proportionally to weight. */
static void weighted_expect(const double w[4], double expect[4][4])
{
    size_t a, b, c, d;
    memset(expect, 0, 16 * sizeof(double));
    for (a = 0; a < 4; a++)
        for (b = 0; b < 4; b++)
            for (c = 0; c < 4; c++) {
                double pa, pb, pc;
                if (b == a || c == a || c == b)
                    continue;
                d = 6 - a - b - c;
                pa = w[a] / (w[0] + w[1] + w[2] + w[3]);
                pb = w[b] / (w[b] + w[c] + w[d]);
                pc = w[c] / (w[c] + w[d]);
                expect[a][0] += pa * pb * pc;
                expect[b][1] += pa * pb * pc;
                expect[c][2] += pa * pb * pc;
                expect[d][3] += pa * pb * pc;
            }
}

static void test_weighted(void **state)
{
    keyset ks;
    size_t order[6], count[4][4] = {{0}}, i, j;
    const double w[4] = {1, 2, 3, 4};
    double expect[4][4];
    (void)state;
    keys_init(&ks, 4);
    for (j = 0; j < 4; j++)
        ks.h[j].weight = (uint32_t)w[j];
    for (i = 0; i < PICKS; i++) {
        order_of(AIGW_STRATEGY_WEIGHTED, &ks, NULL, order);
        check_invariants(AIGW_STRATEGY_WEIGHTED, &ks, order);
        for (j = 0; j < 4; j++)
            count[order[j]][j]++;
    }
    /* first picks: 10/20/30/40% within 2.5 points (5 standard deviations
     * at worst); and every later position as drawing without replacement
     * predicts */
    weighted_expect(w, expect);
    assert_true(expect[0][0] > 0.0999 && expect[0][0] < 0.1001);
    assert_true(expect[3][0] > 0.3999 && expect[3][0] < 0.4001);
    for (j = 0; j < 4; j++)
        for (i = 0; i < 4; i++) {
            double got = (double)count[j][i] / PICKS;
            if (got < expect[j][i] - 0.025 || got > expect[j][i] + 0.025)
                fail_msg("key %zu (weight %g) at position %zu: %.4f, expected %.4f", j, w[j],
                         i, got, expect[j][i]);
        }

    /* weight 0: never first while a weighted ready key exists; after the
     * weighted ones, in configuration order */
    keys_init(&ks, 6);
    ks.h[0].weight = 0;
    ks.h[1].weight = 5;
    ks.h[2].weight = 0;
    ks.h[3].weight = 5;
    ks.h[4].weight = 9;
    ks.h[4].state = AIGW_KEY_COOLING;
    ks.h[5].weight = 0;
    ks.h[5].state = AIGW_KEY_BENCHED;
    memset(count, 0, sizeof count);
    for (i = 0; i < PICKS; i++) {
        order_of(AIGW_STRATEGY_WEIGHTED, &ks, NULL, order);
        check_invariants(AIGW_STRATEGY_WEIGHTED, &ks, order);
        assert_true(order[0] == 1 || order[0] == 3);
        assert_int_equal(order[2], 0);
        assert_int_equal(order[3], 2);
        assert_int_equal(order[4], 4);
        assert_int_equal(order[5], 5);
        count[order[0] == 1][0]++;
    }
    assert_true(count[0][0] > PICKS / 3 && count[1][0] > PICKS / 3);

    /* every weight 0: configuration order */
    keys_init(&ks, 3);
    for (j = 0; j < 3; j++)
        ks.h[j].weight = 0;
    order_of(AIGW_STRATEGY_WEIGHTED, &ks, NULL, order);
    for (j = 0; j < 3; j++)
        assert_int_equal(order[j], j);

    /* the largest weights do not overflow; a weight of 1 against 1,000,000
     * leads about once in a million */
    keys_init(&ks, 3);
    ks.h[0].weight = 1;
    ks.h[1].weight = 1000000;
    ks.h[2].weight = 1000000;
    memset(count, 0, sizeof count);
    for (i = 0; i < PICKS; i++) {
        order_of(AIGW_STRATEGY_WEIGHTED, &ks, NULL, order);
        assert_permutation(order, 3);
        count[order[0]][0]++;
        count[order[2]][2]++;
    }
    assert_true(count[0][0] < 5);
    assert_true(count[0][2] > PICKS - 5);
}

/* ------------------------------------------------------------------------ */
/* least-recently-limited                                                   */
/* ------------------------------------------------------------------------ */

static void test_least_recently_limited(void **state)
{
    keyset ks;
    size_t order[8], i;
    static const int64_t since[8] = {500, -1, 2000, 500, -1, 10, 2000, 0};
    static const size_t want[8] = {1, 4, 2, 6, 0, 3, 5, 7};
    static const size_t want_skip[8] = {4, 6, 0, 3, 5, 7, 1, 2};
    (void)state;
    keys_init(&ks, 8);
    for (i = 0; i < 8; i++)
        ks.h[i].since_limited_ms = since[i];
    /* never limited first, then the oldest limit; ties in configuration
     * order; the same every time */
    for (i = 0; i < 100; i++) {
        order_of(AIGW_STRATEGY_LEAST_RECENTLY_LIMITED, &ks, NULL, order);
        assert_order(order, want, 8);
    }
    /* cooling and benched keys go last, whatever their age */
    ks.h[1].state = AIGW_KEY_COOLING;
    ks.h[2].state = AIGW_KEY_BENCHED;
    order_of(AIGW_STRATEGY_LEAST_RECENTLY_LIMITED, &ks, NULL, order);
    assert_order(order, want_skip, 8);

    /* all tied: configuration order */
    keys_init(&ks, 5);
    order_of(AIGW_STRATEGY_LEAST_RECENTLY_LIMITED, &ks, NULL, order);
    for (i = 0; i < 5; i++)
        assert_int_equal(order[i], i);
    /* a reversed list comes out reversed */
    for (i = 0; i < 5; i++)
        ks.h[i].since_limited_ms = (int64_t)i * 1000;
    order_of(AIGW_STRATEGY_LEAST_RECENTLY_LIMITED, &ks, NULL, order);
    for (i = 0; i < 5; i++)
        assert_int_equal(order[i], 4 - i);
    /* the largest age stays below never-limited */
    ks.h[0].since_limited_ms = INT64_MAX;
    ks.h[3].since_limited_ms = -1;
    order_of(AIGW_STRATEGY_LEAST_RECENTLY_LIMITED, &ks, NULL, order);
    assert_int_equal(order[0], 3);
    assert_int_equal(order[1], 0);
}

/* ------------------------------------------------------------------------ */
/* Every strategy, random health                                            */
/* ------------------------------------------------------------------------ */

static void random_health(keyset *ks, size_t n)
{
    size_t i;
    keys_init(ks, n);
    for (i = 0; i < n; i++) {
        uint64_t r = lcg();
        ks->h[i].state = r % 3 == 0 ? AIGW_KEY_COOLING
                         : r % 5 == 0 ? AIGW_KEY_BENCHED : AIGW_KEY_READY;
        ks->h[i].weight = (uint32_t)((r >> 8) % 4);
        ks->h[i].since_limited_ms = (r >> 16) % 4 == 0 ? -1 : (int64_t)((r >> 20) % 5) * 100;
    }
}

static void test_every_strategy_skips_unready(void **state)
{
    keyset ks;
    size_t order[MAX_KEYS], k, trial;
    _Atomic unsigned long turn = 0;
    (void)state;
    for (k = 0; k < N_KINDS; k++) {
        for (trial = 0; trial < 2000; trial++) {
            random_health(&ks, 1 + (size_t)(lcg() % 12));
            order_of(all_kinds[k], &ks, &turn, order);
            check_invariants(all_kinds[k], &ks, order);
        }
        /* none ready: configuration order */
        keys_init(&ks, 4);
        for (trial = 0; trial < 4; trial++)
            ks.h[trial].state = trial % 2 ? AIGW_KEY_BENCHED : AIGW_KEY_COOLING;
        order_of(all_kinds[k], &ks, &turn, order);
        for (trial = 0; trial < 4; trial++)
            assert_int_equal(order[trial], trial);
        /* one ready, last in the list: always first (ordered: in place) */
        ks.h[3].state = AIGW_KEY_READY;
        for (trial = 0; trial < 50 && all_kinds[k] != AIGW_STRATEGY_ORDERED; trial++) {
            order_of(all_kinds[k], &ks, &turn, order);
            assert_int_equal(order[0], 3);
            assert_int_equal(order[1], 0);
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Large steps: the scratch space on the heap, and its failure              */
/* ------------------------------------------------------------------------ */

static void test_large_steps(void **state)
{
    keyset ks;
    size_t order[MAX_KEYS], k, trial, i;
    _Atomic unsigned long turn = 0;
    long before;
    (void)state;
    /* up to 64 keys: no allocation at all */
    for (k = 0; k < N_KINDS; k++) {
        random_health(&ks, 64);
        before = aigw__alloc_count();
        order_of(all_kinds[k], &ks, &turn, order);
        assert_int_equal(aigw__alloc_count(), before);
        check_invariants(all_kinds[k], &ks, order);
    }
    /* 100 keys */
    for (k = 0; k < N_KINDS; k++)
        for (trial = 0; trial < 200; trial++) {
            random_health(&ks, 100);
            order_of(all_kinds[k], &ks, &turn, order);
            check_invariants(all_kinds[k], &ks, order);
        }
    /* 100 ready keys of weight 1: the weighted draw still reaches each */
    {
        size_t first[100] = {0};
        keys_init(&ks, 100);
        before = aigw__alloc_count();
        for (trial = 0; trial < PICKS; trial++) {
            order_of(AIGW_STRATEGY_WEIGHTED, &ks, NULL, order);
            assert_permutation(order, 100);
            first[order[0]]++;
        }
        assert_true(aigw__alloc_count() > before); /* the heap path it was */
        for (i = 0; i < 100; i++)
            assert_true(first[i] > 40 && first[i] < 200); /* expected 100 */
    }
    /* no memory for the scratch space: ordered, ready keys still first */
    {
        static const aigw_strategy_kind heap_kinds[] = {AIGW_STRATEGY_WEIGHTED,
                                                        AIGW_STRATEGY_LEAST_RECENTLY_LIMITED};
        for (k = 0; k < 2; k++) {
            keys_init(&ks, MAX_KEYS);
            for (i = 0; i < MAX_KEYS; i++) {
                ks.h[i].since_limited_ms = (int64_t)i; /* LRL would reverse them */
                if (i % 7 == 0)
                    ks.h[i].state = AIGW_KEY_COOLING;
            }
            aigw__alloc_fail_at(1);
            order_of(heap_kinds[k], &ks, NULL, order);
            aigw__alloc_fail_at(0);
            /* the ready keys in configuration order, then the others */
            {
                size_t j = 0;
                for (i = 0; i < MAX_KEYS; i++)
                    if (i % 7 != 0)
                        assert_int_equal(order[j++], i);
                for (i = 0; i < MAX_KEYS; i += 7)
                    assert_int_equal(order[j++], i);
            }
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_zero_and_one),
        cmocka_unit_test(test_ordered),
        cmocka_unit_test(test_round_robin),
        cmocka_unit_test(test_round_robin_threads),
        cmocka_unit_test(test_random),
        cmocka_unit_test(test_weighted),
        cmocka_unit_test(test_least_recently_limited),
        cmocka_unit_test(test_every_strategy_skips_unready),
        cmocka_unit_test(test_large_steps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
