/*
 * health_int.h - the entries behind health.h, shared by the files that
 * make up the health module: health.c (the client's tables, keys and
 * endpoints), breaker.c, budget.c, counters.c and stats.c.  Never installed;
 * nothing outside those files includes it.
 */
#ifndef AIGW_HEALTH_INT_H
#define AIGW_HEALTH_INT_H

#include "health.h"
#include "htable.h"

#include <pthread.h>
#include <stdatomic.h>

#define AIGW_NONE_MS INT64_MIN /* "no deadline" / "never" */

/* ---- counters.c: per-entry counters and the latency histogram ---- */

/* Bucket 0 holds 0 ms; bucket i > 0 holds (ub[i-1], ub[i]] with ub growing
 * by 2^(1/4) (at least 1 ms a step), so an upper bound is within 19% of any
 * latency in its bucket; 86 steps reach past an hour, the last bucket takes
 * the rest (its bound is the maximum seen). */
#define AIGW_LAT_BUCKETS 88

typedef struct aigw_counters {
    _Atomic uint64_t requests, successes, failures, skips;
    _Atomic uint64_t by_class[AIGW_CLASS__COUNT];
    _Atomic uint64_t lat_count, lat_sum, lat_max;
    _Atomic uint64_t lat_hist[AIGW_LAT_BUCKETS];
} aigw_counters;

void aigw__counters_init(aigw_counters *c);
/* One report: a success (with its latency, < 0 unknown), or a failure of
 * class cls, or neither. */
void aigw__counters_add(aigw_counters *c, bool success, bool failure, aigw_class cls,
                        int64_t latency_ms);
void aigw__counters_skip(aigw_counters *c);
int64_t aigw__counters_mean(const aigw_counters *c);
/* The upper bound of a latency bucket. */
int64_t aigw__lat_bound(int bucket);

/* ---- breaker.c ---- */
struct aigw_breaker {
    _Atomic int state;         /* closed or open (half-open derives)        */
    _Atomic int consecutive;   /* failures in a row while closed           */
    _Atomic int64_t reopen_at; /* open: when a probe may go                */
    _Atomic bool probe_out;
    _Atomic int64_t probe_at;  /* when the probe went                      */
    _Atomic int reason;        /* the class that opened it                 */
    pthread_mutex_t mu;        /* serializes state changes                 */
    aigw_counters c;
};

void aigw__breaker_init(aigw_breaker *b);
void aigw__breaker_destroy(aigw_breaker *b);
/* Closes it (under its mutex). */
void aigw__breaker_close(aigw_breaker *b);

/* ---- health.c: the entries ---- */
struct aigw_hkey {
    aigw_node nd; /* first: a node is its entry */
    char *provider;
    char *id;
    aigw_key_origin origin;
    uint64_t vhash; /* keyed hash of the value (never the value) */
    bool has_value;
    _Atomic int64_t bench_until;
    _Atomic int bench_reason;
    aigw_counters c;
};

struct aigw_endpoint {
    aigw_node nd; /* first */
    aigw_hkey *key;
    char *model;  /* the upstream model id */
    _Atomic int64_t cool_until;
    _Atomic int64_t last_limited;
    aigw_breaker br; /* the outlier breaker; its counters are the endpoint's */
};

/* A backend (provider + model: counters, its state derived from its
 * endpoints) or a host (a breaker of its own). */
typedef struct aigw_site {
    aigw_node nd; /* first */
    char *name;     /* backend: "provider:model"; host: the origin */
    char *provider; /* backend only, else "" */
    char *model;    /* backend only, else "" */
    aigw_breaker br;
} aigw_site;

/* ---- budget.c ---- */
#define AIGW_BUDGET_BUCKETS 10

typedef struct aigw_budget {
    pthread_mutex_t mu;
    int64_t width; /* ms per bucket; 0 before first use */
    int64_t epoch[AIGW_BUDGET_BUCKETS];
    uint64_t requests[AIGW_BUDGET_BUCKETS];
    uint64_t retries[AIGW_BUDGET_BUCKETS];
    uint64_t total_requests, total_retries, total_denied;
} aigw_budget;

void aigw__budget_init(aigw_budget *bg);
void aigw__budget_destroy(aigw_budget *bg);
/* The budget's figures now: totals, and the retries available (-1 when the
 * budget is off). */
void aigw__budget_figures(aigw_budget *bg, const aigw_health_opts *o, int64_t now,
                          uint64_t *requests, uint64_t *retries, uint64_t *denied,
                          int64_t *available);

struct aigw_health {
    uint8_t sipkey[16];
    aigw_table keys, endpoints, backends, hosts;
    aigw_budget budget;
};

#endif
