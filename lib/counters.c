/* counters.c - what each health entry counts: requests, successes,
 * failures by class, skips, and a log-scale latency histogram whose
 * percentiles the snapshot reads.  Relaxed atomics: counters are read
 * whole only by a snapshot, which tolerates a report in flight. */
#include "health_int.h"

#define LAT_BUCKETS AIGW_LAT_BUCKETS
/* Latencies below this many ms find their bucket in a table. */
#define LAT_SMALL 256
static int64_t lat_ub[LAT_BUCKETS];
static unsigned char lat_small[LAT_SMALL];
static pthread_once_t lat_once = PTHREAD_ONCE_INIT;

static int lat_search(int64_t ms)
{
    int lo = 0, hi = LAT_BUCKETS - 1;
    while (lo < hi) { /* the first bucket whose bound holds ms */
        int mid = (lo + hi) / 2;
        if (lat_ub[mid] >= ms)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

static void lat_init(void)
{
    int i;
    lat_ub[0] = 0;
    lat_ub[1] = 1;
    for (i = 2; i < LAT_BUCKETS - 1; i++) {
        int64_t next = lat_ub[i - 1] * 1189207 / 1000000; /* 2^(1/4), rounded down */
        lat_ub[i] = next > lat_ub[i - 1] ? next : lat_ub[i - 1] + 1;
    }
    lat_ub[LAT_BUCKETS - 1] = INT64_MAX;
    for (i = 0; i < LAT_SMALL; i++)
        lat_small[i] = (unsigned char)lat_search(i);
}

static int lat_bucket(int64_t ms)
{
    return ms >= 0 && ms < LAT_SMALL ? lat_small[ms] : lat_search(ms);
}

void aigw__counters_init(aigw_counters *c)
{
    int i;
    pthread_once(&lat_once, lat_init);
    atomic_init(&c->requests, 0);
    atomic_init(&c->successes, 0);
    atomic_init(&c->failures, 0);
    atomic_init(&c->skips, 0);
    for (i = 0; i < AIGW_CLASS__COUNT; i++)
        atomic_init(&c->by_class[i], 0);
    atomic_init(&c->lat_count, 0);
    atomic_init(&c->lat_sum, 0);
    atomic_init(&c->lat_max, 0);
    for (i = 0; i < LAT_BUCKETS; i++)
        atomic_init(&c->lat_hist[i], 0);
}

static void counters_latency(aigw_counters *c, int64_t ms)
{
    uint64_t v = (uint64_t)ms, max = atomic_load_explicit(&c->lat_max, memory_order_relaxed);
    atomic_fetch_add_explicit(&c->lat_hist[lat_bucket(ms)], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&c->lat_sum, v, memory_order_relaxed);
    while (v > max && !atomic_compare_exchange_weak_explicit(&c->lat_max, &max, v,
                                                            memory_order_relaxed,
                                                            memory_order_relaxed)) {
    }
    atomic_fetch_add_explicit(&c->lat_count, 1, memory_order_relaxed);
}

void aigw__counters_add(aigw_counters *c, bool success, bool failure, aigw_class cls,
                        int64_t latency_ms)
{
    atomic_fetch_add_explicit(&c->requests, 1, memory_order_relaxed);
    if (success) {
        atomic_fetch_add_explicit(&c->successes, 1, memory_order_relaxed);
        if (latency_ms >= 0)
            counters_latency(c, latency_ms);
    } else if (failure) {
        atomic_fetch_add_explicit(&c->failures, 1, memory_order_relaxed);
        if ((unsigned)cls < AIGW_CLASS__COUNT)
            atomic_fetch_add_explicit(&c->by_class[cls], 1, memory_order_relaxed);
    }
}

int64_t aigw__counters_mean(const aigw_counters *c)
{
    uint64_t n = atomic_load_explicit(&c->lat_count, memory_order_relaxed);
    uint64_t sum = atomic_load_explicit(&c->lat_sum, memory_order_relaxed);
    return n ? (int64_t)((sum + n / 2) / n) : -1;
}

void aigw__counters_skip(aigw_counters *c)
{
    atomic_fetch_add_explicit(&c->skips, 1, memory_order_relaxed);
}

int64_t aigw__lat_bound(int bucket)
{
    pthread_once(&lat_once, lat_init);
    return lat_ub[bucket < 0 ? 0 : bucket < LAT_BUCKETS ? bucket : LAT_BUCKETS - 1];
}
