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

/* ---- store.c: the shared store behind the client's tables ---- */

/* A fact as the library writes it into a store's value. */
typedef enum aigw_fact_kind {
    AIGW_FACT_BENCH = 0, /* "bench <class>": a key benched                    */
    AIGW_FACT_COOL,      /* "cool": an endpoint cooling after a rate limit    */
    AIGW_FACT_TRIAL,     /* "trial <token>": one client's first try after a
                            cooldown ended                                    */
    AIGW_FACT_OPEN,      /* "open <class> <window ms>": a breaker open; its
                            last window ms are the half-open time for a probe */
    AIGW_FACT_PROBE,     /* "probe <token>": the one probe of a breaker       */
    AIGW_FACT_CLEAR      /* "clear": a bench or cooldown ended by a reset;
                            whoever learned it before ends it too           */
} aigw_fact_kind;

typedef struct aigw_fact {
    aigw_fact_kind kind;
    aigw_class cls;   /* bench, open */
    int64_t window;   /* open */
    bool ours;        /* trial, probe: this client's token */
} aigw_fact;

typedef enum { AIGW_STORE_IDLE = 0, AIGW_STORE_UP, AIGW_STORE_DOWN } aigw_store_state;

typedef struct aigw_store {
    bool on; /* a store is set; else every function below is a no-op */
    aigw_health_store vt;
    void *ud;
    char kind[16];
    uint8_t fkey[16];   /* keys the names (from the configuration's salt) */
    char token[17];     /* this client's, in trials and probes (hex)       */
    int64_t sync_ms;    /* the longest the client's copy goes unread       */
    _Atomic int64_t down_until; /* in fallback: no call before then        */
    _Atomic int64_t backoff_ms;
    _Atomic int state;
    _Atomic uint64_t syncs, writes, claims, errors, fallbacks, recoveries, ignored;
} aigw_store;

/* The fleet key from the salt (NULL or empty: the library's fixed one). */
void aigw__store_init(aigw_store *st, const aigw_secret *salt);
/* Sets (vt NULL: drops) the store; the old one is destroyed. */
void aigw__store_set(aigw_store *st, const aigw_health_store *vt, void *ud, int64_t sync_ms);
/* Whether a store call may go now (set, and not backing off). */
bool aigw__store_usable(aigw_store *st, int64_t now);
/* The vtable's calls, each counted, a failure switching the client to its
 * own state with back-off: 0 (claim: 1 / 0) or -1 (also while backing
 * off). */
int aigw__store_get(aigw_store *st, aigw_store_entry *e, size_t n, int64_t now);
int aigw__store_put(aigw_store *st, const aigw_store_entry *e, size_t n, int64_t now);
int aigw__store_claim(aigw_store *st, aigw_store_entry *e, int64_t now);
/* A fact's name: "<kind>:<16 hex>". */
void aigw__store_name(char out[24], char kind, uint64_t fid);
/* Fills e with a name and a fact. */
void aigw__fact_entry(aigw_store_entry *e, const char *name, const aigw_store *st,
                      aigw_fact_kind kind, aigw_class cls, int64_t window, int64_t ttl_ms);
/* Reads a value: 0, or -1 when it is not a fact (then counted as ignored;
 * parse_quiet does not count). */
int aigw__fact_parse(aigw_store *st, const char *value, aigw_fact *out);
int aigw__fact_parse_quiet(aigw_store *st, const char *value, aigw_fact *out);
/* One write (ttl 0: a delete; value NULL: whatever the name holds, else
 * only if it holds that fact). */
void aigw__store_write1(aigw_store *st, const char *name, const aigw_store_entry *e,
                        int64_t now);

/* ---- breaker.c ---- */
struct aigw_breaker {
    _Atomic int state;         /* closed or open (half-open derives)        */
    _Atomic int consecutive;   /* failures in a row while closed           */
    _Atomic int64_t reopen_at; /* open: when a probe may go                */
    _Atomic bool probe_out;
    _Atomic int64_t probe_at;  /* when the probe went                      */
    _Atomic int reason;        /* the class that opened it                 */
    _Atomic int64_t opened_at; /* when it last opened (here or in the store) */
    _Atomic int64_t closed_at; /* when it last closed here                  */
    _Atomic int64_t synced_at; /* when the store was last read for it       */
    _Atomic bool probe_shared; /* the probe out is claimed in the store     */
    pthread_mutex_t mu;        /* serializes state changes                 */
    aigw_store *st;            /* shared through it when kind != 0         */
    char kind;                 /* 'o' an endpoint's, 'h' a host's, 0 local  */
    uint64_t fid;              /* its identity in the store                */
    aigw_counters c;
};

void aigw__breaker_init(aigw_breaker *b);
/* Shares it through st under the identity fid ('o' endpoint, 'h' host). */
void aigw__breaker_share(aigw_breaker *b, aigw_store *st, char kind, uint64_t fid);
/* Applies what the store holds for it (read at fetch_start): a fact, or
 * none (ttl AIGW_STORE_ABSENT); unreadable values are ignored. */
void aigw__breaker_apply(aigw_breaker *b, const aigw_health_opts *o, const aigw_store_entry *e,
                         int64_t fetch_start, int64_t now);
/* The names of its open fact and its probe claim. */
void aigw__breaker_names(const aigw_breaker *b, char open[24], char probe[24]);
void aigw__breaker_destroy(aigw_breaker *b);
/* Closes it (under its mutex); now: when (AIGW_NONE_MS: unknown). */
void aigw__breaker_close(aigw_breaker *b, int64_t now);

/* ---- health.c: the entries ---- */
struct aigw_hkey {
    aigw_node nd; /* first: a node is its entry */
    char *provider;
    char *id;
    aigw_key_origin origin;
    uint64_t vhash; /* keyed hash of the value (never the value) */
    bool has_value;
    uint64_t fid;   /* its identity in the store (fleet-keyed) */
    aigw_store *st;
    _Atomic int64_t bench_until;
    _Atomic int bench_reason;
    _Atomic int64_t bench_at; /* when the bench in force was set or read */
    _Atomic int64_t synced_at;
    /* the endpoint last found for it (aigw__health_endpoint): entries
     * never move or go, so it stays valid */
    struct aigw_endpoint *_Atomic last_endpoint;
    aigw_counters c;
};

struct aigw_endpoint {
    aigw_node nd; /* first */
    aigw_hkey *key;
    char *model;  /* the upstream model id */
    _Atomic int64_t cool_until;
    _Atomic int64_t last_limited;
    _Atomic int64_t cool_at; /* when the cooldown in force was set or read */
    uint64_t fid;
    aigw_store *st;
    _Atomic int64_t synced_at;
    _Atomic bool gated;     /* a cooldown was in force: the first try after
                               it is claimed in the store                  */
    _Atomic int64_t trial_at; /* this client's first try went then (NONE: none
                                 out): one atomic, so one thread owns it   */
    _Atomic int64_t trial_wait_until; /* another client's first try is out */
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
    /* Changes to the buckets are made under mu; a request is counted
     * without it when its bucket is current (aigw__budget_request). */
    pthread_mutex_t mu;
    _Atomic int64_t width; /* ms per bucket; 0 before first use */
    _Atomic int64_t epoch[AIGW_BUDGET_BUCKETS];
    _Atomic uint64_t requests[AIGW_BUDGET_BUCKETS];
    _Atomic uint64_t retries[AIGW_BUDGET_BUCKETS];
    _Atomic uint64_t total_requests, total_retries, total_denied;
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
    aigw_store st;
    aigw_table keys, endpoints, backends, hosts;
    aigw_budget budget;
};

#endif
