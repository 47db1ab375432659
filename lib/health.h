/*
 * health.h - what a client remembers across requests, each fact at the
 * scope the failure speaks for:
 * - a key (provider, id, value): benched after an auth or quota failure;
 * - an endpoint (a key and an upstream model): cooling after a rate limit
 *   (providers limit per model), and an outlier circuit breaker that server
 *   errors, overload and answered timeouts open (as Envoy ejects one host of
 *   a cluster: one key's failures never shut out its siblings);
 * - a backend (provider + upstream model): counters; it is open when every
 *   endpoint of it is (derived, not kept);
 * - a host (scheme://host:port): a breaker that failures without an HTTP
 *   answer open;
 * - the retry budget, and the counters behind aigw_client_stats.
 * What each failure class does to them is the policy's (policy.h); this
 * module only keeps the facts.
 *
 * Thread-safe and lock-light: entries are found through tables under
 * read-write locks (written only when an entry is first seen) and never
 * move or go away before aigw__health_free, so callers keep plain pointers
 * to them; their state is C11 atomics.  No threads of its own.  Time is the
 * client's clock in ms, always passed in.  Never installed.
 */
#ifndef AIGW_HEALTH_H
#define AIGW_HEALTH_H

#include "internal.h"
#include "policy.h"

typedef struct aigw_health aigw_health;
typedef struct aigw_hkey aigw_hkey;         /* one key                        */
typedef struct aigw_endpoint aigw_endpoint; /* one key with one model         */
typedef struct aigw_breaker aigw_breaker;   /* an endpoint's, a backend's or a
                                               host's breaker and counters    */

/* Limits on what is tracked: past them, a new entry is not tracked (its
 * lookup returns NULL: always ready, never counted), so model names from
 * request bodies cannot grow the tables without bound.  The key and
 * endpoint limits are raised for each configuration a client is given
 * (aigw__health_expect_keys), so a configuration's own keys always fit. */
#define AIGW_HEALTH_MAX_KEYS 4096
#define AIGW_HEALTH_MAX_ENDPOINTS 16384
#define AIGW_HEALTH_MAX_BACKENDS 4096
#define AIGW_HEALTH_MAX_HOSTS 1024

aigw_health *aigw__health_new(void);
/* Makes room for a configuration of n_keys keys (aigw__config_keys, plus
 * the ngrok key per provider and key-less calls): the key table holds them
 * beyond what it holds now, with AIGW_HEALTH_MAX_KEYS to spare, and the
 * endpoint table two models per key beyond AIGW_HEALTH_MAX_ENDPOINTS. */
void aigw__health_expect_keys(aigw_health *h, size_t n_keys);
void aigw__health_free(aigw_health *h);

/* ---- keys ---- */

/* Where a key comes from, for listing it in a snapshot. */
typedef enum aigw_key_origin {
    AIGW_ORIGIN_CONFIG = 0, /* providerKeys or a step's own key            */
    AIGW_ORIGIN_NGROK,      /* the ngrok access key, tracked per provider   */
    AIGW_ORIGIN_NONE        /* a key-less call (a custom provider)          */
} aigw_key_origin;

/* The state of a key, found or made: identified by its provider, id and
 * value (value NULL: a key-less request).  The value itself is not kept: a
 * keyed hash of it (SipHash-2-4, a random key per health table).  origin
 * is recorded when the entry is made.  NULL when the table is full or out
 * of memory. */
aigw_hkey *aigw__health_key(aigw_health *h, const char *provider, const char *id,
                            const aigw_secret *value, aigw_key_origin origin);
/* The key with one upstream model: found, or (make) made; NULL as above (k
 * NULL: NULL).  The engine makes one only when an attempt has something
 * to record there (a success, a cooldown, a failure its breaker counts):
 * model names from request bodies that only ever fail fast take no room. */
aigw_endpoint *aigw__health_endpoint(aigw_health *h, aigw_hkey *k, const char *model, bool make);

/* The state of a key for one model: benched (the key) before cooling (the
 * endpoint) before ready; *wait_ms gets the time left (0 when ready).
 * Either may be NULL (untracked: ready). */
aigw_key_state aigw__key_state(const aigw_hkey *k, const aigw_endpoint *e, int64_t now,
                               int64_t *wait_ms);
/* The failure class that put it in that state (AIGW_CLASS_NONE: ready). */
aigw_class aigw__key_reason(const aigw_hkey *k, const aigw_endpoint *e, int64_t now);
/* Fills the strategy's view of the key for one model: its state there,
 * since_limited_ms and the counters of that endpoint (id borrowed from the
 * entry; k NULL: a ready key with id "" and no counts, for the caller to
 * name). */
void aigw__key_view(const aigw_hkey *k, const aigw_endpoint *e, int64_t now, uint32_t weight,
                    aigw_key_health *out);
/* A request passed the key over (cooling, benched, its endpoint's breaker
 * open): counted on the key, and on the endpoint when there is one. */
void aigw__key_skipped(aigw_hkey *k, aigw_endpoint *e);

/* An attempt with the key: counted (cls AIGW_CLASS_NONE: a success with
 * latency_ms, < 0 unknown). */
void aigw__hkey_count(aigw_hkey *k, aigw_class cls, int64_t latency_ms);
/* Benches the key for o->bench_ms (0: not benched) for reason cls; a bench
 * only ever extends. */
void aigw__hkey_bench(aigw_hkey *k, const aigw_health_opts *o, aigw_class reason, int64_t now);
/* Cools the endpoint after a rate limit: for wait_ms when >= 0 (capped by
 * o->cooldown_max_ms), else for o->cooldown_ms jittered into [1/2, 1] of it
 * (also capped); a cooldown only ever extends.  Records the time of the
 * limit.  Returns the time left of the cooldown now in force (ms; 0 none). */
int64_t aigw__endpoint_cool(aigw_endpoint *e, const aigw_health_opts *o, int64_t wait_ms,
                            int64_t now);
/* The endpoint's outlier breaker (NULL for e NULL). */
aigw_breaker *aigw__endpoint_breaker(aigw_endpoint *e);

/* Ends every key's bench (a configuration was installed). */
void aigw__health_end_benches(aigw_health *h);
/* Ends the bench of every key with that id (NULL: all keys), the cooldowns
 * of its endpoints and closes their breakers; with id NULL also closes every
 * host's breaker.  Returns how many keys matched. */
size_t aigw__health_reset(aigw_health *h, const char *id);

/* ---- backends and hosts ---- */

/* A backend's counters (its state is derived from its endpoints), found or
 * made; NULL as for keys. */
aigw_breaker *aigw__health_backend(aigw_health *h, const char *provider, const char *model);
/* aigw__health_backend, remembered in *memo (NULL: none): the entry found
 * last time when it is the one asked for, else found and remembered. */
aigw_breaker *aigw__health_backend_at(aigw_health *h, const char *provider, const char *model,
                                      _Atomic(aigw_breaker *) *memo);
/* A host's breaker, from any URL (aigw__url_origin); NULL as for keys. */
aigw_breaker *aigw__health_host(aigw_health *h, const char *url);
/* The same from an origin aigw__url_origin made. */
aigw_breaker *aigw__health_host_origin(aigw_health *h, const char *origin);

/* ---- breakers (breaker.c) ---- */

typedef enum aigw_admit {
    AIGW_ADMIT_GO = 0,    /* closed: go                                        */
    AIGW_ADMIT_PROBE = 1, /* half-open and this caller holds the one probe: go,
                             and report with probe = true                      */
    AIGW_ADMIT_OPEN = 2   /* open, or half-open with its probe out: skip       */
} aigw_admit;

/* May a request go to it now?  For AIGW_ADMIT_OPEN, *wait_ms gets the time
 * until a probe may go; while a probe is out, o->breaker_cooloff_ms (the
 * probe decides within about that).  Breakers off (o->breaker_threshold 0)
 * or b NULL: always GO.  The closed path is one atomic load.  A probe that
 * has not reported within o->breaker_cooloff_ms (plus the longest attempt,
 * o->probe_timeout_ms) is presumed lost and another may go. */
aigw_admit aigw__breaker_admit(aigw_breaker *b, const aigw_health_opts *o, int64_t now,
                               int64_t *wait_ms);
/* Whether aigw__breaker_admit would let a request go now, without taking
 * the probe. */
bool aigw__breaker_would_admit(aigw_breaker *b, const aigw_health_opts *o, int64_t now);

/* After an attempt it admitted: what it heard (policy.h; FAILURE_IF_ANSWERED
 * resolved by the caller), for the state; cls for the per-class counters
 * and the state's reason; latency_ms as for keys.  o->breaker_threshold
 * consecutive failures open a closed breaker for o->breaker_cooloff_ms;
 * then one probe may go (half-open).  o NULL: counted only. */
void aigw__breaker_report(aigw_breaker *b, const aigw_health_opts *o, aigw_hear v, bool probe,
                          aigw_class cls, int64_t latency_ms, int64_t now);
/* A request passed it over while open. */
void aigw__breaker_skipped(aigw_breaker *b);

/* "closed", "open" or "half_open", with the wait and the reason. */
const char *aigw__breaker_state(aigw_breaker *b, const aigw_health_opts *o, int64_t now,
                                int64_t *wait_ms, aigw_class *reason);

/* ---- retry budget (budget.c) ---- */

/* The client's configuration is o (made or swapped): the budget's buckets
 * take its window; a changed window keeps what the old one held (carried
 * into the bucket of now).  Requests never change the width: those still
 * running on an older configuration use the client's buckets. */
void aigw__health_configure(aigw_health *h, const aigw_health_opts *o, int64_t now);

/* Over a sliding window of o->budget_window_ms (ten buckets), retries may be
 * up to o->budget_percent % of the requests started in it plus a floor of
 * o->budget_min_per_sec per second of the window.  Which attempts are
 * retries is the policy's (aigw_policy_row.retry). */
void aigw__budget_request(aigw_health *h, const aigw_health_opts *o, int64_t now);
/* Takes one retry; false (and counted as denied) when the budget is spent.
 * Always true when o->budget_on is false. */
bool aigw__budget_retry(aigw_health *h, const aigw_health_opts *o, int64_t now);

/* ---- the health store (store.c, health.c) ---- */

/* Keys the store's names with the configuration's salt (NULL or empty: the
 * library's fixed key): before the first entry is made. */
void aigw__health_salt(aigw_health *h, const aigw_secret *salt);
/* Sets the store facts are shared through (vt NULL: none, in-process
 * only); the old one is destroyed.  Not while requests run. */
void aigw__health_set_store(aigw_health *h, const aigw_health_store *vt, void *ud,
                            int64_t sync_ms);
/* The store's kind ("local" without one); whether it is set and answered
 * last time (false: the client is on its own state); how many times the
 * client fell back to its own state. */
const char *aigw__health_store_kind(aigw_health *h);
bool aigw__health_store_down(aigw_health *h);
uint64_t aigw__health_store_fallbacks(aigw_health *h);
/* Ends in the store the benches of the keys whose id is id (NULL: all),
 * with all_scopes also their endpoints' cooldowns and breakers (and, id
 * NULL, every host's): a bench or cooldown is written over with "clear"
 * (for as long as it could have lasted), so that the clients that learned
 * it end it too rather than tell it again; a breaker is deleted. */
void aigw__health_forget_shared(aigw_health *h, const aigw_health_opts *o, const char *id,
                                bool all_scopes, int64_t now);

/* Reading the store for one step's keys (with the candidate's model) and
 * its host, in one round trip, for the entries the client has not read
 * within syncInterval; a no-op without a store or while it is backing off.
 * The batch lives on the caller's stack. */
#define AIGW_SYNC_MAX 48
typedef struct aigw_sync {
    aigw_health *h;
    const aigw_health_opts *o;
    int64_t now;
    bool on;
    size_t n;
    aigw_store_entry e[AIGW_SYNC_MAX];
    char names[AIGW_SYNC_MAX][24];
    void *what[AIGW_SYNC_MAX];
    aigw_endpoint **slot[AIGW_SYNC_MAX]; /* an endpoint not made yet */
    const char *model[AIGW_SYNC_MAX];
    char kind[AIGW_SYNC_MAX];
} aigw_sync;

void aigw__sync_begin(aigw_sync *s, aigw_health *h, const aigw_health_opts *o, int64_t now);
/* The key k, and its endpoint for model (*ep: found, or made when the
 * store holds a fact for it). */
void aigw__sync_key(aigw_sync *s, aigw_hkey *k, aigw_endpoint **ep, const char *model);
void aigw__sync_host(aigw_sync *s, aigw_breaker *host);
/* Reads what is left and applies what the store holds. */
void aigw__sync_end(aigw_sync *s);

/* The first try after an endpoint's cooldown, with a store: one client of
 * the fleet claims it.  AIGW_ADMIT_GO (no claim needed), AIGW_ADMIT_PROBE
 * (this request holds it: report with aigw__endpoint_trial_done), or
 * AIGW_ADMIT_OPEN (another has it, or the endpoint cools again: pass the
 * key over for *wait_ms). */
aigw_admit aigw__endpoint_admit(aigw_endpoint *e, const aigw_health_opts *o, int64_t now,
                                int64_t *wait_ms);
/* The held first try ended with class cls (AIGW_CLASS_NONE: served), or
 * was abandoned. */
void aigw__endpoint_trial_done(aigw_endpoint *e, aigw_class cls, bool abandoned, int64_t now);

/* ---- snapshot (stats.c) ---- */

/* Builds a snapshot: an entry for each key of cfg (aigw__config_keys, in
 * configuration order; then the ngrok access key once per provider it was
 * used for, or once with provider "ngrok" before any use; then the key-less
 * calls to custom providers, id ""), then every backend and host tracked,
 * then every endpoint of the keys listed (cfg NULL: every endpoint), each
 * in the order first seen; a key the table cannot hold is listed untracked
 * (ready, no counts).  The JSON is built with it.
 * NULL when out of memory. */
aigw_stats *aigw__health_snapshot(aigw_health *h, const aigw_config *cfg,
                                  const aigw_health_opts *o, int64_t now);

#endif
