/*
 * health.h - what a client remembers across requests: each key's cooldown
 * or bench, a circuit breaker per backend (provider + model) and per host,
 * the retry budget, and the counters behind aigw_client_stats.
 *
 * Thread-safe and lock-light: entries are found through a table under a
 * read-write lock (written only when a new key, backend or host is first
 * seen) and never move or go away before aigw__health_free, so callers keep
 * plain pointers to them; their state is C11 atomics.  No threads of its
 * own.  Time is the client's clock in ms, always passed in.
 * Never installed.
 */
#ifndef AIGW_HEALTH_H
#define AIGW_HEALTH_H

#include "internal.h"

typedef struct aigw_health aigw_health;
typedef struct aigw_hkey aigw_hkey;      /* one key's state            */
typedef struct aigw_breaker aigw_breaker; /* one backend's or host's   */

/* Limits on what is tracked: past them, a new key, backend or host is not
 * tracked (its lookup returns NULL: always ready, never counted), so model
 * names from request bodies cannot grow the table without bound. */
#define AIGW_HEALTH_MAX_KEYS 4096
#define AIGW_HEALTH_MAX_BACKENDS 4096
#define AIGW_HEALTH_MAX_HOSTS 1024

aigw_health *aigw__health_new(void);
void aigw__health_free(aigw_health *h);

/* ---- keys ---- */

/* The state of a key, found or made: identified by its provider, id and
 * value (value NULL: a key-less request, e.g. a local server).  The value
 * itself is not kept: a keyed hash of it (SipHash-2-4, a random key per
 * health table).  NULL when the table is full or out of memory. */
aigw_hkey *aigw__health_key(aigw_health *h, const char *provider, const char *id,
                            const aigw_secret *value);

/* The key's state now; *wait_ms gets the time left in it (0 when ready). */
aigw_key_state aigw__hkey_state(const aigw_hkey *k, int64_t now, int64_t *wait_ms);
/* The failure class that put it in its state (AIGW_CLASS_NONE when ready). */
aigw_class aigw__hkey_reason(const aigw_hkey *k, int64_t now);
/* Fills the strategy's view of the key (id borrowed from the entry; k NULL:
 * a ready key with id "" and no counts, for the caller to name). */
void aigw__hkey_view(const aigw_hkey *k, int64_t now, uint32_t weight, aigw_key_health *out);
/* A request passed it over while cooling or benched. */
void aigw__hkey_skipped(aigw_hkey *k);

/*
 * After an attempt with the key.  cls: AIGW_CLASS_NONE on success.
 * - rate_limit: cools for wait_ms when >= 0 (capped by o->cooldown_max_ms),
 *   else for o->cooldown_ms jittered into [cooldown/2, cooldown]; a cooldown
 *   only ever extends (a shorter one does not cut a longer one short).
 *   Records the time of the limit (since_limited_ms).
 * - auth, quota: benched for o->bench_ms (0: not benched).
 * - anything else: counted only.
 * latency_ms (success only; < 0 when unknown) feeds the latency summary.
 */
void aigw__hkey_report(aigw_hkey *k, const aigw_health_opts *o, aigw_class cls,
                       int64_t wait_ms, int64_t latency_ms, int64_t now);

/* Ends every key's bench (a configuration was installed). */
void aigw__health_end_benches(aigw_health *h);
/* Ends the cooldown and bench of every key with that id (NULL: all keys)
 * and, with id NULL, closes every breaker.  Returns how many keys matched. */
size_t aigw__health_reset(aigw_health *h, const char *id);

/* ---- circuit breakers ---- */

/* A backend's breaker, found or made; NULL as for keys. */
aigw_breaker *aigw__health_backend(aigw_health *h, const char *provider, const char *model);
/* A host's breaker, from any URL: "scheme://host:port" (default ports made
 * explicit, host lower-cased, user info dropped); NULL as for keys. */
aigw_breaker *aigw__health_host(aigw_health *h, const char *url);

typedef enum aigw_admit {
    AIGW_ADMIT_GO = 0,    /* closed: go                                        */
    AIGW_ADMIT_PROBE = 1, /* half-open and this caller holds the one probe: go,
                             and report with probe = true                      */
    AIGW_ADMIT_OPEN = 2   /* open, or half-open with its probe out: skip       */
} aigw_admit;

/* May a request go to it now?  For AIGW_ADMIT_OPEN, *wait_ms gets the time
 * until a probe may go (0 when a probe is out).  Breakers off
 * (o->breaker_threshold 0) or b NULL: always GO.  The closed path is one
 * atomic load.  A probe that has not reported within o->breaker_cooloff_ms
 * (plus the longest attempt, o->probe_timeout_ms) is presumed lost and
 * another may go. */
aigw_admit aigw__breaker_admit(aigw_breaker *b, const aigw_health_opts *o, int64_t now,
                               int64_t *wait_ms);

typedef enum aigw_verdict {
    AIGW_BR_SUCCESS = 0, /* a 2xx: closes; resets the failure count           */
    AIGW_BR_FAILURE = 1, /* counts toward opening; a failed probe re-opens    */
    AIGW_BR_NEUTRAL = 2, /* it answered, but the answer says nothing of its
                            health (429, 401, 400, ...): closes a half-open
                            breaker, leaves the count as it is otherwise        */
    AIGW_BR_ABANDON = 3  /* no verdict (the caller cancelled): a probe is
                            released, so another may go at once                */
} aigw_verdict;

/* After an attempt it admitted.  cls is the attempt's class (for the
 * per-class counters and the state's reason); latency_ms as for keys.  o->
 * breaker_threshold consecutive failures open a closed breaker for
 * o->breaker_cooloff_ms; then one probe may go (half-open). */
void aigw__breaker_report(aigw_breaker *b, const aigw_health_opts *o, aigw_verdict v,
                          bool probe, aigw_class cls, int64_t latency_ms, int64_t now);
/* A request passed it over while open. */
void aigw__breaker_skipped(aigw_breaker *b);

/* ---- retry budget ---- */

/* The client's configuration is o (made or swapped): the budget's buckets
 * take its window; a changed window keeps what the old one held (carried
 * into the bucket of now).  Requests never change the width: those still
 * running on an older configuration use the client's buckets. */
void aigw__health_configure(aigw_health *h, const aigw_health_opts *o, int64_t now);

/* Over a sliding window of o->budget_window_ms (ten buckets), retries may be
 * up to o->budget_percent % of the requests started in it plus a floor of
 * o->budget_min_per_sec per second of the window.  The engine charges an
 * attempt that follows a server error, overload, timeout, redirect or
 * network failure (not one that moves past a rate-limited, quota- or
 * auth-failed key: that key cools or is benched instead). */
void aigw__budget_request(aigw_health *h, const aigw_health_opts *o, int64_t now);
/* Takes one retry; false (and counted as denied) when the budget is spent.
 * Always true when o->budget_on is false. */
bool aigw__budget_retry(aigw_health *h, const aigw_health_opts *o, int64_t now);

/* ---- snapshot ---- */

/* Builds a snapshot: an entry for each key of cfg (providerKeys, inline step
 * keys, each once, in configuration order; then the ngrok access key, id
 * "ngrok", once per provider it was used for, or once with provider "ngrok"
 * before any use; then the key-less calls to custom providers, id ""), then
 * every backend and host tracked, in the order first seen; a
 * key the table cannot hold is listed untracked (ready, no counts).  The
 * JSON is built with it.  NULL when out of memory. */
aigw_stats *aigw__health_snapshot(aigw_health *h, const aigw_config *cfg,
                                  const aigw_health_opts *o, int64_t now);

/* SipHash-2-4 (64-bit) of len bytes under a 16-byte key: the keyed hash of
 * key values and of table entries (exposed for its test vectors). */
uint64_t aigw__siphash24(const uint8_t key[16], const void *data, size_t len);

#endif
