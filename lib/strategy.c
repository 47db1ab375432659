/* strategy.c - the built-in key orders of a step (keySelectionStrategy).
 *
 * `ordered` is the list as written: the engine walks it and records a skip
 * for each key it passes over (cooling, benched).  Every other order puts
 * the ready keys first, so rotation and weights are shared among the keys
 * that can serve, and the others after them in configuration order.  Random picks are unbiased: a draw below a bound
 * rejects the few values that would favour the small results.
 *
 * weighted and least-recently-limited need scratch space as large as the
 * step: on the stack up to STACK_KEYS keys, from aigw__malloc beyond; when
 * that fails they fall back to `ordered` (ready keys still first), which is
 * still a correct order, only not the configured one. */
#include "internal.h"

#include <stdatomic.h>
#include <string.h>

#define STACK_KEYS 64

static const char *const names[] = {"ordered", "round-robin", "random", "weighted",
                                    "least-recently-limited"};
#define N_NAMES (sizeof names / sizeof names[0])

const char *aigw__strategy_name(aigw_strategy_kind kind)
{
    /* "unknown" rather than NULL: callers print it */
    return (size_t)kind < N_NAMES ? names[kind] : "unknown";
}

int aigw__strategy_kind(const char *name)
{
    size_t i;
    for (i = 0; name && i < N_NAMES; i++)
        if (strcmp(name, names[i]) == 0)
            return (int)i;
    return -1;
}

/* ---- randomness ---- */

/* Uniform in [0, bound), bound >= 1: draws below 2^64 mod bound are
 * rejected, so every result has the same number of preimages. */
static uint64_t below(uint64_t bound)
{
    uint64_t r, threshold = (0 - bound) % bound;
    do
        aigw__fast_random(&r, sizeof r);
    while (r < threshold);
    return r % bound;
}

/* ---- helpers ---- */

static bool is_ready(const aigw_key_health *const *keys, size_t i)
{
    return keys && keys[i] && keys[i]->state == AIGW_KEY_READY;
}

static uint32_t weight_of(const aigw_key_health *const *keys, size_t i)
{
    return keys[i]->weight;
}

typedef bool (*key_pred)(const aigw_key_health *const *keys, size_t i);

static bool ready_weighted(const aigw_key_health *const *keys, size_t i)
{
    return is_ready(keys, i) && weight_of(keys, i) > 0;
}

static bool ready_unweighted(const aigw_key_health *const *keys, size_t i)
{
    return is_ready(keys, i) && weight_of(keys, i) == 0;
}

static bool not_ready(const aigw_key_health *const *keys, size_t i)
{
    return !is_ready(keys, i);
}

/* Writes into order, from position at, the keys for which want holds, in
 * configuration order; returns the position after the last. */
static size_t append(const aigw_key_health *const *keys, size_t n, key_pred want, size_t *order,
                     size_t at)
{
    size_t i;
    for (i = 0; i < n; i++)
        if (want(keys, i))
            order[at++] = i;
    return at;
}

static void reverse(size_t *v, size_t n)
{
    size_t i, t;
    for (i = 0; i < n / 2; i++) {
        t = v[i];
        v[i] = v[n - 1 - i];
        v[n - 1 - i] = t;
    }
}

/* Left rotation in place (three reversals): v[start] comes first. */
static void rotate(size_t *v, size_t n, size_t start)
{
    if (start == 0 || start >= n)
        return;
    reverse(v, start);
    reverse(v + start, n - start);
    reverse(v, n);
}

static void shuffle(size_t *v, size_t n)
{
    size_t i, j, t;
    for (i = n; i > 1; i--) {
        j = (size_t)below(i);
        t = v[i - 1];
        v[i - 1] = v[j];
        v[j] = t;
    }
}

/* ---- scratch space ---- */

typedef union slot {
    uint64_t w; /* weighted: Fenwick tree of the weights */
    size_t i;   /* key indexes */
} slot;

typedef struct scratch {
    slot stack[2 * STACK_KEYS + 1];
    slot *v;
} scratch;

static slot *scratch_get(scratch *s, size_t n)
{
    s->v = NULL;
    if (n <= sizeof s->stack / sizeof s->stack[0])
        return s->stack;
    if (n > SIZE_MAX / sizeof(slot))
        return NULL;
    s->v = aigw__malloc(n * sizeof(slot));
    return s->v;
}

static void scratch_put(scratch *s)
{
    aigw__free(s->v);
}

/* ---- weighted ---- */

/*
 * order[0, m) holds the ready keys of weight > 0.  Draws them one by one,
 * each with probability weight / (sum of the weights not yet drawn), with a
 * Fenwick tree of the weights: O(m log m).
 */
static void weighted(const aigw_key_health *const *keys, size_t *order, size_t m)
{
    scratch s;
    slot *tree, *cand;
    uint64_t total = 0, r;
    size_t i, j, pos, step, top = 1;
    if (m < 2 || !(tree = scratch_get(&s, 2 * m + 1)))
        return; /* one key, or no memory: ordered */
    cand = tree + m + 1;
    tree[0].w = 0;
    for (i = 1; i <= m; i++) {
        cand[i - 1].i = order[i - 1];
        tree[i].w = weight_of(keys, order[i - 1]);
        total += tree[i].w;
    }
    for (i = 1; i <= m; i++)
        if ((j = i + (i & (0 - i))) <= m)
            tree[j].w += tree[i].w;
    while (top * 2 <= m)
        top *= 2;
    for (i = 0; i < m; i++) {
        /* the first position whose running sum passes r */
        r = below(total);
        pos = 0;
        for (step = top; step > 0; step /= 2) {
            if (pos + step <= m && tree[pos + step].w <= r) {
                pos += step;
                r -= tree[pos].w;
            }
        }
        order[i] = cand[pos].i;
        total -= weight_of(keys, cand[pos].i);
        for (j = pos + 1; j <= m; j += j & (0 - j))
            tree[j].w -= weight_of(keys, cand[pos].i);
    }
    scratch_put(&s);
}

/* ---- least-recently-limited ---- */

/* Older rate limits first; never limited (-1) is the oldest of all. */
static uint64_t age(const aigw_key_health *const *keys, size_t i)
{
    int64_t ms = keys[i]->since_limited_ms;
    return ms < 0 ? UINT64_MAX : (uint64_t)ms;
}

/* A stable bottom-up merge sort of order[0, r) by age, oldest first. */
static void least_recently_limited(const aigw_key_health *const *keys, size_t *order, size_t r)
{
    scratch s;
    slot *tmp;
    size_t width, lo, mid, hi, a, b, k;
    if (r < 2 || !(tmp = scratch_get(&s, r)))
        return;
    for (width = 1; width < r; width *= 2) {
        for (lo = 0; lo < r; lo += 2 * width) {
            mid = lo + width < r ? lo + width : r;
            hi = mid + width < r ? mid + width : r;
            a = lo;
            b = mid;
            k = lo;
            /* ">=" keeps the left run's key first on ties: stable */
            while (a < mid && b < hi)
                tmp[k++].i = age(keys, order[a]) >= age(keys, order[b]) ? order[a++]
                                                                         : order[b++];
            while (a < mid)
                tmp[k++].i = order[a++];
            while (b < hi)
                tmp[k++].i = order[b++];
        }
        for (k = 0; k < r; k++)
            order[k] = tmp[k].i;
    }
    scratch_put(&s);
}

/* ---- the entry point ---- */

void aigw__strategy_order(aigw_strategy_kind kind, const aigw_key_health *const *keys,
                          size_t n, _Atomic unsigned long *turn, size_t *order)
{
    size_t ready, m = 0;
    unsigned long t = 0;
    if (!order || n == 0)
        return;
    if (kind == AIGW_STRATEGY_ORDERED || kind > AIGW_STRATEGY_LEAST_RECENTLY_LIMITED) {
        /* as listed, cooling keys in place: the walk passes over them and
         * records each as a skip, as a gateway walking its list would */
        size_t i;
        for (i = 0; i < n; i++)
            order[i] = i;
        return;
    }
    if (kind == AIGW_STRATEGY_WEIGHTED) {
        m = append(keys, n, ready_weighted, order, 0);
        ready = append(keys, n, ready_unweighted, order, m);
    } else {
        ready = append(keys, n, is_ready, order, 0);
    }
    append(keys, n, not_ready, order, ready);

    switch (kind) {
    case AIGW_STRATEGY_ROUND_ROBIN:
        /* advanced on every call, so concurrent requests start apart */
        if (turn)
            t = atomic_fetch_add_explicit(turn, 1, memory_order_relaxed);
        if (ready > 0)
            rotate(order, ready, (size_t)(t % ready));
        break;
    case AIGW_STRATEGY_RANDOM:
        shuffle(order, ready);
        break;
    case AIGW_STRATEGY_WEIGHTED:
        weighted(keys, order, m);
        break;
    case AIGW_STRATEGY_LEAST_RECENTLY_LIMITED:
        least_recently_limited(keys, order, ready);
        break;
    case AIGW_STRATEGY_ORDERED:
    default:
        break;
    }
}
