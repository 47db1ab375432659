/*
 * aigw.h - libaigw, an AI gateway's provider-key failover inside the host process.
 *
 * This header is the whole public contract of libaigw.  It compiles as C99 and
 * as C++ (-pedantic), holds no inline code, no bitfields and no variadic
 * functions, so cgo and cffi can bind it as it is.
 *
 * Conventions
 * - Every function returns an aigw_status (0 = ok, negative = error) unless it
 *   is a getter.  Numbers are never reused; new ones are only appended.
 * - Output parameters come last.  On error, outputs are set to NULL.
 * - Where a function takes `aigw_error **err`, the caller may pass NULL; if not
 *   NULL, on failure *err receives an error object that the caller owns and
 *   frees with aigw_error_free().  On success *err is set to NULL.
 * - Every string, body and vtable passed in is copied: the caller's memory may
 *   go away right after the call returns.
 * - Getters return borrowed pointers, valid as long as the object they were
 *   read from is alive.
 * - All _free/_unref functions accept NULL.
 * - The library never prints, never aborts on bad input and starts no threads;
 *   callbacks run on the caller's thread.
 * - Secrets (provider key values, the ngrok access key) never appear in error
 *   messages, attempt records, traces or library-made response bodies.
 */
#ifndef AIGW_H
#define AIGW_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32) && defined(AIGW_BUILDING)
#define AIGW_API __declspec(dllexport)
#elif defined(__GNUC__) && defined(AIGW_BUILDING)
#define AIGW_API __attribute__((visibility("default")))
#else
#define AIGW_API
#endif

/* ------------------------------------------------------------------------ */
/* Version                                                                  */
/* ------------------------------------------------------------------------ */

#define AIGW_VERSION_MAJOR 0
#define AIGW_VERSION_MINOR 1
#define AIGW_VERSION_PATCH 0
#define AIGW_VERSION_STRING "0.1.0"
/* MAJOR*10000 + MINOR*100 + PATCH */
#define AIGW_VERSION_NUMBER 100

/* The version of the library actually loaded, as AIGW_VERSION_NUMBER.  Compare
 * with the header's AIGW_VERSION_NUMBER to detect a mismatch at run time. */
AIGW_API int aigw_version_number(void);
/* The same as a static string, e.g. "0.1.0". */
AIGW_API const char *aigw_version_string(void);

/* ------------------------------------------------------------------------ */
/* Status codes and errors                                                  */
/* ------------------------------------------------------------------------ */

typedef enum aigw_status {
    AIGW_OK = 0,
    AIGW_EINVAL = -1,      /* a bad argument (NULL where not allowed, ...)   */
    AIGW_ENOMEM = -2,      /* out of memory                                  */
    AIGW_ECONFIG = -3,     /* the configuration is invalid (see error paths) */
    AIGW_EIO = -4,         /* a file could not be read                       */
    AIGW_EREQUEST = -5,    /* the request body is unusable (not JSON, ...)   */
    AIGW_EVERSION = -6,    /* a vtable of an unknown version was given       */
    AIGW_ETRANSPORT = -7,  /* the transport failed to initialise             */
    AIGW_ECANCELLED = -8   /* the caller cancelled the request               */
} aigw_status;

/* A static English name for a status, e.g. "AIGW_ECONFIG".  Never NULL. */
AIGW_API const char *aigw_status_name(aigw_status status);

/* An error object, owned by the caller.  A configuration error holds one
 * problem per thing found wrong, each naming the JSON path it concerns
 * (e.g. "accessKeyConfiguration.router.rules[0].steps[0].keys[1].id"). */
typedef struct aigw_error aigw_error;

AIGW_API aigw_status aigw_error_code(const aigw_error *err);
/* One line summing up the error (for a configuration error: the first
 * problem as "path: problem", plus a count of the others). */
AIGW_API const char *aigw_error_message(const aigw_error *err);
/* The number of problems (at least 1 for any error). */
AIGW_API size_t aigw_error_count(const aigw_error *err);
/* The JSON path of problem i ("" when it concerns no path); NULL when i is
 * out of range. */
AIGW_API const char *aigw_error_path(const aigw_error *err, size_t i);
/* What is wrong at that path; NULL when i is out of range. */
AIGW_API const char *aigw_error_problem(const aigw_error *err, size_t i);
AIGW_API void aigw_error_free(aigw_error *err);

/* ------------------------------------------------------------------------ */
/* Configuration (immutable, reference counted, shareable between threads)  */
/* ------------------------------------------------------------------------ */

typedef struct aigw_config aigw_config;

/*
 * Parse a gateway file: one JSON object holding
 *   "providers"              custom providers / catalog base URL overrides
 *   "providerKeys"           provider keys (ngrok POST /provider-keys + "id")
 *   "accessKeyConfiguration" ngrok's POST /access-key-configurations body
 *   "accessKeyConfigurations" more of them, each with its "name"
 *   "accessKeys"             callers' credentials (aigw serve), each bound
 *                            to one configuration by name
 *   "gatewayConfig"          timeouts and limits
 *   "ngrokAccessKey", "ngrokGatewayUrl"  for `ngrok` steps
 * A bare access key configuration (the ngrok POST body alone) is accepted as
 * well; it holds no provider keys, so key ids it names are checked for form
 * only and a client cannot be made from it while it names any.
 *
 * Key values given by `valueFrom` (env or file) are read during the parse.
 * Every problem found is reported at once in *err (AIGW_ECONFIG).
 * `json` need not be NUL-terminated.  The new config has one reference.
 */
AIGW_API aigw_status aigw_config_parse(const char *json, size_t len,
                                       aigw_config **out, aigw_error **err);
/* The same for a file.  AIGW_EIO when it cannot be read. */
AIGW_API aigw_status aigw_config_load_file(const char *path, aigw_config **out,
                                           aigw_error **err);
/* Take one more reference; returns cfg. Thread-safe. */
AIGW_API aigw_config *aigw_config_ref(aigw_config *cfg);
/* Drop one reference; frees (and wipes its secrets) at zero. Returns NULL.
 * Thread-safe. */
AIGW_API aigw_config *aigw_config_unref(aigw_config *cfg);
/* Non-zero when the config was a bare access key configuration. */
AIGW_API int aigw_config_is_bare(const aigw_config *cfg);

/*
 * Access key configurations and access keys: what a gateway in front of
 * several callers (aigw serve) needs.  A file holds one or more access key
 * configurations: accessKeyConfiguration (number 0, the default, when
 * present), then each of accessKeyConfigurations in order.  A file with
 * none has one, unnamed, without rules.  A request uses the default unless
 * aigw_request_set_configuration names another.
 */
AIGW_API size_t aigw_config_configuration_count(const aigw_config *cfg);
/* The name of configuration i ("" when it has none; NULL out of range). */
AIGW_API const char *aigw_config_configuration_name(const aigw_config *cfg, size_t i);
/* The access keys ("accessKeys"): how many, and key i's id and the name of
 * the configuration its callers use (NULL out of range).  Their values are
 * never handed out. */
AIGW_API size_t aigw_config_access_key_count(const aigw_config *cfg);
AIGW_API const char *aigw_config_access_key_id(const aigw_config *cfg, size_t i);
AIGW_API const char *aigw_config_access_key_configuration(const aigw_config *cfg, size_t i);
/* Which access key a caller presented (len bytes, e.g. a Bearer token):
 * its index, or -1 when it is none of them.  Every key is compared, each
 * over its whole length, so the time taken says nothing of which key
 * matched or where a guess went wrong. */
AIGW_API int aigw_config_access_key_find(const aigw_config *cfg, const char *presented,
                                         size_t len);
/* One model a configuration offers; a non-zero return stops the listing. */
typedef int (*aigw_model_fn)(void *userdata, const char *provider, const char *model);
/* The models a configuration lets its callers use, each (provider, model)
 * once, in this order: the models its rules name, the models custom
 * providers declare, and the exact entries of its access.models allow-list
 * (patterns with '*' name no model); each only when its access scope allows
 * it.  configuration: a name, or NULL for the default.  AIGW_EINVAL when
 * there is no configuration of that name. */
AIGW_API aigw_status aigw_config_models(const aigw_config *cfg, const char *configuration,
                                        aigw_model_fn fn, void *userdata);

/* ------------------------------------------------------------------------ */
/* Key-selection strategy (versioned vtable)                                */
/* ------------------------------------------------------------------------ */

/* Version 2 appended `order_health`; a version 1 vtable is still accepted. */
#define AIGW_STRATEGY_VERSION 2

/* What a client remembers of one key, across requests. */
typedef enum aigw_key_state {
    AIGW_KEY_READY = 0,   /* usable                                            */
    AIGW_KEY_COOLING = 1, /* rate limited for that model: skipped until its
                             wait has passed                                   */
    AIGW_KEY_BENCHED = 2  /* auth or quota failure: skipped for keyBenchTime,
                             until the configuration is replaced, or until
                             aigw_client_reset_health                          */
} aigw_key_state;

/* One key's health as a strategy sees it, with the model being ordered for
 * (rate limits, latency and counters are per model; a bench is the key's):
 * borrowed for the call.  Members are only ever appended; the library passes
 * pointers, never arrays of these, so a strategy built against an older
 * header stays correct. */
typedef struct aigw_key_health {
    const char *id;            /* the key's id (never its value)             */
    aigw_key_state state;
    int64_t wait_ms;           /* cooling or benched: ms until ready; else 0 */
    int64_t since_limited_ms;  /* ms since its last rate limit; -1 never     */
    uint32_t weight;           /* its configured weight (1 unless set)       */
    uint64_t requests;         /* upstream calls made with it                */
    uint64_t successes;
    uint64_t failures;
    int64_t latency_mean_ms;   /* mean latency of its successes; -1 none     */
} aigw_key_health;

/*
 * A strategy orders the keys of one `user` step for one attempt sequence.
 * It writes into order_out (room for n_keys entries) the indexes of the keys
 * to try, best first, and returns how many it wrote (0..n_keys; an index out
 * of range or repeated is ignored), or a negative number to fall back to
 * `ordered`.  Whatever the order, the library never spends an upstream call
 * on a key that is cooling or benched: it records a skip and moves on.
 *
 * `order` (version 1) receives the ids of the step's keys in configuration
 * order.  `order_health` (version 2; used instead of `order` when set)
 * receives each key's health.  Either may be called from several threads at
 * once when the client is shared.  `destroy`, if set, runs exactly once,
 * when the client that holds the strategy is freed (or when
 * aigw_client_set_strategy fails).
 */
typedef struct aigw_strategy {
    uint32_t version; /* AIGW_STRATEGY_VERSION (1 or 2) */
    int (*order)(void *userdata, const char *provider, const char *model,
                 size_t step_index, const char *const *key_ids, size_t n_keys,
                 size_t *order_out);
    void (*destroy)(void *userdata);
    /* -- version 2 -- */
    int (*order_health)(void *userdata, const char *provider, const char *model,
                        size_t step_index, const aigw_key_health *const *keys,
                        size_t n_keys, size_t *order_out);
} aigw_strategy;

/* ------------------------------------------------------------------------ */
/* Transport (versioned vtable; the default is libcurl)                     */
/* ------------------------------------------------------------------------ */

/* Version 2 appended `send_stream` to the vtable and `stream`,
 * `idle_timeout_ms` to the request; version 3 `cancel` to the request (a
 * transport of an older version is handed none: it runs its exchange to its
 * end, the library stops after it); version 4 `ca_file`, `client_cert_file`,
 * `client_key_file` (gatewayConfig.tls).  Older vtables are still accepted (a
 * version 1 transport is then used for whole answers only). */
#define AIGW_TRANSPORT_VERSION 4

typedef struct aigw_header {
    const char *name;
    const char *value;
} aigw_header;

/* One fully built upstream HTTP request.  Borrowed for the call only. */
typedef struct aigw_transport_request {
    const char *method;          /* "POST" */
    const char *url;
    const aigw_header *headers;  /* includes the auth header: a secret */
    size_t n_headers;
    const char *body;
    size_t body_len;
    int64_t timeout_ms;          /* for the whole exchange; > 0 */
    int64_t connect_timeout_ms;
    size_t max_response_bytes;   /* body cap; 0 = none (send only) */
    /* -- version 2 -- */
    int stream;                  /* non-zero: sent through send_stream */
    int64_t idle_timeout_ms;     /* send_stream: the longest wait for the
                                    first body bytes (after that, on_data's
                                    return sets it); <= 0 = none */
    /* -- version 3 -- */
    const struct aigw_cancel *cancel; /* non-NULL: the caller's cancel token;
                                    a transport polls aigw_cancel_fired(cancel)
                                    during the exchange and, once fired,
                                    stops and returns AIGW_TR_CANCELLED */
    /* -- version 4 -- gatewayConfig.tls: PEM file paths, NULL when not set.
     * A transport that speaks TLS trusts ca_file's CAs instead of the
     * system's, and presents client_cert_file (with client_key_file, or the
     * key in the same file) when the server asks.  Never a reason to skip
     * verification. */
    const char *ca_file;
    const char *client_cert_file;
    const char *client_key_file;
} aigw_transport_request;

/* What a transport reports besides the HTTP answer. */
typedef enum aigw_transport_result {
    AIGW_TR_OK = 0,              /* an HTTP answer was received            */
    AIGW_TR_TIMEOUT = 1,         /* the deadline passed                    */
    AIGW_TR_CONNECT = 2,         /* connection refused / unreachable       */
    AIGW_TR_RESET = 3,           /* connection reset or closed early       */
    AIGW_TR_DNS = 4,             /* name resolution failed                 */
    AIGW_TR_TLS = 5,             /* TLS handshake or verification failed   */
    AIGW_TR_TOO_LARGE = 6,       /* the body passed max_response_bytes     */
    AIGW_TR_PROTOCOL = 7,        /* not a valid HTTP answer                */
    AIGW_TR_OTHER = 8,           /* anything else                          */
    AIGW_TR_CANCELLED = 9,       /* the caller cancelled                   */
    AIGW_TR_NOMEM = 10           /* the transport ran out of memory: says
                                    nothing of the upstream; the request
                                    ends with AIGW_ENOMEM                  */
} aigw_transport_result;

/* Filled by the transport through the setters below. */
typedef struct aigw_transport_response aigw_transport_response;

/* AIGW_EINVAL for a status outside 100..999. */
AIGW_API aigw_status aigw_transport_response_set_status(aigw_transport_response *resp,
                                                        int http_status);
/* Each call adds one header (copied); repeated names are all kept.
 * AIGW_EINVAL for a name that is not an HTTP token or a value with CR/LF. */
AIGW_API aigw_status aigw_transport_response_add_header(aigw_transport_response *resp,
                                                        const char *name,
                                                        const char *value);
/* Appends body bytes.  Returns AIGW_ENOMEM (the transport should then stop
 * and report AIGW_TR_NOMEM), or AIGW_EINVAL when the body would pass the
 * request's max_response_bytes (the transport should then stop and report
 * AIGW_TR_TOO_LARGE). */
AIGW_API aigw_status aigw_transport_response_append_body(aigw_transport_response *resp,
                                                         const char *data, size_t len);

/*
 * A streamed answer's body, chunk by chunk, as it arrives (non-2xx bodies
 * too); the status and headers are in resp before the first call, and the
 * chunks are not added to resp's body.  Called only with len > 0, inside the
 * transport (it must not call back into it), never again after it returned
 * <= 0; an answer without a body makes no call.  The idle budget before the
 * first byte counts from the start of send_stream (connect included).  Returns > 0 to go on, allowing that many ms of silence before
 * the next bytes (the idle budget); 0 to stop now as complete (send_stream
 * then returns AIGW_TR_OK); < 0 to abort (send_stream then returns
 * AIGW_TR_CANCELLED).
 */
typedef int64_t (*aigw_transport_data_fn)(void *ctx, const char *data, size_t len);

/*
 * A transport sends one request and reports the answer.  `send` may be called
 * from several threads at once when the client is shared, so it must be
 * thread-safe.  It must not follow redirects.  On a result other than
 * AIGW_TR_OK whatever it put in resp is ignored.  `destroy`, if set, runs exactly
 * once, when the client that holds it is freed (or when
 * aigw_client_set_transport fails).
 */
typedef struct aigw_transport {
    uint32_t version; /* AIGW_TRANSPORT_VERSION */
    aigw_transport_result (*send)(void *userdata, const aigw_transport_request *req,
                                  aigw_transport_response *resp);
    void (*destroy)(void *userdata);
    /* -- version 2 -- streaming: as send, but the body goes to on_data as it
     * arrives; silence past the idle budget is AIGW_TR_TIMEOUT, and so is
     * passing req->timeout_ms.  NULL: the transport cannot stream. */
    aigw_transport_result (*send_stream)(void *userdata, const aigw_transport_request *req,
                                         aigw_transport_response *resp,
                                         aigw_transport_data_fn on_data, void *ctx);
} aigw_transport;

/* ------------------------------------------------------------------------ */
/* Clock (versioned vtable; for tests and event-loop hosts)                 */
/* ------------------------------------------------------------------------ */

#define AIGW_CLOCK_VERSION 1

/* now_ms: a monotonic clock in milliseconds.  sleep_ms: wait that long (the
 * library sleeps only for same-backend retries).  destroy as above. */
typedef struct aigw_clock {
    uint32_t version; /* AIGW_CLOCK_VERSION */
    int64_t (*now_ms)(void *userdata);
    void (*sleep_ms)(void *userdata, int64_t ms);
    void (*destroy)(void *userdata);
} aigw_clock;

/* ------------------------------------------------------------------------ */
/* Health store (versioned vtable; the default keeps key health in-process) */
/* ------------------------------------------------------------------------ */

#define AIGW_HEALTH_STORE_VERSION 1
#define AIGW_STORE_VALUE_MAX 64 /* a fact's value, with its NUL */
#define AIGW_STORE_ABSENT (-1)     /* ttl_ms: nothing under the name          */
#define AIGW_STORE_UNREADABLE (-2) /* ttl_ms: something no fact was written as:
                                      another type, no expiry, too long      */

/* One fact under one name.  The library writes names (printable ASCII, at
 * most 64 bytes, the same in every process that loads the same
 * configuration, never holding a key value or anything it could be
 * recovered from) and values (printable ASCII, NUL-terminated); a store may
 * prefix the names. */
typedef struct aigw_store_entry {
    const char *name;
    char value[AIGW_STORE_VALUE_MAX];
    int64_t ttl_ms; /* the time left; AIGW_STORE_ABSENT, AIGW_STORE_UNREADABLE */
} aigw_store_entry;

/*
 * Where a client's key health is shared (see README, "A health store for a
 * fleet"): cooldowns, benches and open circuit breakers, each written with
 * its expiry, and the claims that let exactly one process probe.  The
 * client keeps its own copy and reads the store at most every syncInterval,
 * so a store is never on every request's path; it starts no threads.
 * Every function may be called from several threads at once; each is one
 * round trip and returns 0, or -1 when the store did not answer in time
 * (the client then goes on with its own state and tries the store again
 * later, with back-off).  Values that do not parse are ignored.
 * - get: reads n names: for each, its value and the time left
 *   (AIGW_STORE_ABSENT, AIGW_STORE_UNREADABLE).
 * - put: writes n facts: a value with ttl_ms > 0 expires after it (set,
 *   whatever was there); ttl_ms 0 deletes the name: whatever it holds when
 *   value is "", else only if it still holds value.
 * - claim: writes e->value for e->ttl_ms only if the name is absent: 1
 *   written; 0 held, with what holds it in e->value and e->ttl_ms (as get).
 * - destroy, if set, runs once when the client lets the store go.
 * - kind names the store in stats and traces ("redis"; at most 15 bytes).
 */
typedef struct aigw_health_store {
    uint32_t version; /* AIGW_HEALTH_STORE_VERSION */
    const char *kind;
    int (*get)(void *userdata, aigw_store_entry *entries, size_t n);
    int (*put)(void *userdata, const aigw_store_entry *entries, size_t n);
    int (*claim)(void *userdata, aigw_store_entry *entry);
    void (*destroy)(void *userdata);
} aigw_health_store;

/* ------------------------------------------------------------------------ */
/* Client                                                                   */
/* ------------------------------------------------------------------------ */

/*
 * A client sends requests through failover with one configuration.
 * Thread-safety: aigw_client_send may be called from any number of threads
 * at once on one client.  The setters (set_strategy, set_transport,
 * set_clock, set_health_store) must be called before the client is shared, never while a send
 * is running; set_config, reset_health and stats may be called at any time.
 * A client remembers, across its requests, each key's health, each
 * backend's and host's circuit breaker and its retry budget (see README,
 * "Key health").
 */
typedef struct aigw_client aigw_client;

/* Make a client holding a reference to cfg (the caller keeps its own).  The
 * transport is libcurl's; the strategy `ordered`; the clock the system's. */
AIGW_API aigw_status aigw_client_new(aigw_config *cfg, aigw_client **out,
                                     aigw_error **err);
/* Free a client (after its last send has returned). NULL is allowed. */
AIGW_API void aigw_client_free(aigw_client *client);

/* Replace the key-selection strategy for every `user` step (NULL restores
 * `ordered`).  The vtable is copied; userdata is passed back to it. */
AIGW_API aigw_status aigw_client_set_strategy(aigw_client *client,
                                              const aigw_strategy *strategy,
                                              void *userdata);
/* Replace the transport (NULL restores libcurl's). */
AIGW_API aigw_status aigw_client_set_transport(aigw_client *client,
                                               const aigw_transport *transport,
                                               void *userdata);
/* Replace the clock (NULL restores the system clock). */
AIGW_API aigw_status aigw_client_set_clock(aigw_client *client, const aigw_clock *clock,
                                           void *userdata);
/* Replace the health store (NULL: in-process only).  A configuration's
 * gatewayConfig.healthStore makes one when the client is made; this one
 * replaces it.  The client's own state is kept; facts are then shared
 * through the new store.  Names are keyed by the healthStore.redis salt of
 * the configuration the client was made with, else by a fixed key (see
 * README). */
AIGW_API aigw_status aigw_client_set_health_store(aigw_client *client,
                                                  const aigw_health_store *store,
                                                  void *userdata);

/*
 * Hot swap: give the client a new configuration (it takes a reference; the
 * caller keeps its own).  Thread-safe, unlike the other setters: requests
 * may be in flight.  Each request uses exactly one configuration from start
 * to end, the one current when it started; an old configuration is freed
 * (and its secrets wiped) after its last request, once nobody else holds it.
 * Key health carries over for keys whose provider, id and value are
 * unchanged (cooldowns, counters); benches end, since the configuration was
 * replaced.  Circuit breakers and the retry budget carry over.  AIGW_ECONFIG
 * (and the client unchanged) for a bare configuration naming keys it does
 * not hold.
 */
AIGW_API aigw_status aigw_client_set_config(aigw_client *client, aigw_config *cfg,
                                            aigw_error **err);

/*
 * Forget what went wrong: end the bench of every key whose id is key_id (any
 * provider), the cooldowns of its models and close their circuit breakers;
 * with key_id NULL, of every key, and close every host's breaker too.
 * Counters are kept.  AIGW_EINVAL when key_id names no key
 * of the current configuration.  Thread-safe.
 */
AIGW_API aigw_status aigw_client_reset_health(aigw_client *client, const char *key_id);

/* ------------------------------------------------------------------------ */
/* Health metrics (a snapshot, cheap to take from any thread)               */
/* ------------------------------------------------------------------------ */

typedef struct aigw_stats aigw_stats;

/* One entry of a snapshot.  Members are only ever appended. */
typedef struct aigw_stat {
    const char *kind;     /* "key", "backend" (provider + model), "host", or
                             "endpoint" (a key with one model)                */
    const char *name;     /* key, endpoint: the key's id; backend:
                             "provider:model"; host: "scheme://host:port"     */
    const char *provider; /* key, endpoint, backend: the provider id; host: "" */
    const char *model;    /* endpoint, backend: the upstream model id; else "" */
    /* key: "ready", "benched"; endpoint: "ready", "cooling" (rate limits are
     * per model), "benched" (its key), "open", "half_open" (its outlier
     * breaker); backend (derived: open when all its endpoints are), host:
     * "closed", "open", "half_open" */
    const char *state;
    const char *reason;   /* the failure class that put it in that state
                             ("rate_limit", "auth", "server", ...); "" */
    int64_t wait_ms;      /* ms left in that state (open: until a probe may
                             go); 0 when ready or closed                      */
    uint64_t requests;    /* upstream calls                                  */
    uint64_t successes;
    uint64_t failures;
    uint64_t skips;       /* times a request passed it over while not ready */
    uint64_t latency_count;   /* successes timed (whole answers: until the
                                 answer was complete; streams: until the
                                 first content event)                          */
    int64_t latency_mean_ms;  /* -1 when none */
    int64_t latency_p50_ms;   /* percentiles from a log-scale histogram:     */
    int64_t latency_p90_ms;   /* upper bounds of their buckets (within 19%)  */
    int64_t latency_p99_ms;
    int64_t latency_max_ms;
    uint64_t latency_sum_ms;  /* the latencies timed, added up */
} aigw_stat;

/* A snapshot of the client's health: one entry per key of the current
 * configuration (in configuration order), then each backend and host the
 * client has sent to, then each endpoint (key and model) it has used.  Thread-safe; takes no lock that a send holds for
 * longer than a few instructions. */
AIGW_API aigw_status aigw_client_stats(aigw_client *client, aigw_stats **out);
AIGW_API void aigw_stats_free(aigw_stats *stats);
AIGW_API size_t aigw_stats_count(const aigw_stats *stats);
/* Entry i, or NULL when out of range; borrowed from the snapshot. */
AIGW_API const aigw_stat *aigw_stats_at(const aigw_stats *stats, size_t i);
/* An entry's failures of one class (the names of aigw_attempt_error_class);
 * 0 for a name it does not know. */
AIGW_API uint64_t aigw_stat_failures(const aigw_stat *stat, const char *error_class);
/* How many of the entry's timed successes took le_ms or less: a cumulative
 * histogram count (Prometheus' "le").  From the log-scale buckets: exact
 * at or past the maximum, else it counts the buckets whose upper bound is
 * at most le_ms (a latency within 19% below le_ms may be left out). */
AIGW_API uint64_t aigw_stat_latency_le(const aigw_stat *stat, int64_t le_ms);
/* The retry budget over its window: requests started, retries spent,
 * retries refused since the client was made, and retries available now.
 * Any output may be NULL. */
AIGW_API void aigw_stats_budget(const aigw_stats *stats, uint64_t *requests,
                                uint64_t *retries, uint64_t *denied, int64_t *available);
/* The whole snapshot as JSON (see README, "Key health"):
 * {"keys":[...],"backends":[...],"hosts":[...],"retryBudget":{...}}.
 * Owned by the snapshot; NULL only when out of memory. */
AIGW_API const char *aigw_stats_json(const aigw_stats *stats);
/* The health store: its kind ("local", "redis") and, in *state, "ok" (local),
 * "connecting" (not used yet), "connected" or "fallback" (it did not answer:
 * the client is on its own state, and tries it again later). */
AIGW_API const char *aigw_stats_health_store(const aigw_stats *stats, const char **state);

/* ------------------------------------------------------------------------ */
/* Request                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct aigw_request aigw_request;

/* A new request: path "/v1/chat/completions", no body yet. */
AIGW_API aigw_status aigw_request_new(aigw_request **out);
/* The body, in the API shape of the path (OpenAI chat completions: a JSON
 * object with "model" and optionally "models", the fallback list). Copied. */
AIGW_API aigw_status aigw_request_set_body(aigw_request *req, const char *body, size_t len);
/* The API path, e.g. "/v1/chat/completions" (a leading "/v1" is optional). */
AIGW_API aigw_status aigw_request_set_path(aigw_request *req, const char *path);
/* 1 when the body asks for a streamed answer (its top-level "stream" is
 * true): send it with aigw_client_stream; 0 otherwise (no body, not a JSON
 * object, no "stream", any other value).  One pass over the body, no
 * allocation: what a gateway or binding needs to pick the call. */
AIGW_API int aigw_request_wants_stream(const aigw_request *req);
/* The access key configuration whose access scope and routing rules the
 * request follows, by name (NULL or "": the default, number 0).  A name the
 * client's configuration does not hold makes the send fail with
 * AIGW_EREQUEST.  AIGW_EINVAL for a name that is not UTF-8 or is longer than
 * 255 bytes. */
AIGW_API aigw_status aigw_request_set_configuration(aigw_request *req, const char *name);
/* Streams only: restart a broken committed stream on the next candidate
 * (1), never (0), or as gatewayConfig.streamRestart says (-1, the default). */
AIGW_API aigw_status aigw_request_set_stream_restart(aigw_request *req, int restart);
AIGW_API void aigw_request_free(aigw_request *req);

/*
 * Cancelling a request from another thread (a binding's Ctrl-C, a Go
 * context): a cancel token, set on requests with aigw_request_set_cancel.
 * aigw_cancel_fire may be called from any thread at any time (also from a
 * signal handler: it is one atomic store); every request carrying the token
 * then stops as soon as it can: no new attempt starts, a wait (a retry's,
 * a cooldown's) ends, and the attempt in flight is abandoned through the
 * transport (libcurl's stops within about 50 ms).  The request then returns
 * AIGW_OK with a response whose outcome is AIGW_OUTCOME_CANCELLED (status
 * 499, error code "cancelled"), its attempts recorded; an abandoned attempt
 * tells key health nothing.  A token fired before the request starts
 * cancels it at once.  The token must outlive every request that carries
 * it; it is never reset (make a new one).
 */
typedef struct aigw_cancel aigw_cancel;
AIGW_API aigw_status aigw_cancel_new(aigw_cancel **out);
AIGW_API void aigw_cancel_fire(aigw_cancel *cancel);
/* Non-zero once fired; thread-safe. */
AIGW_API int aigw_cancel_fired(const aigw_cancel *cancel);
AIGW_API void aigw_cancel_free(aigw_cancel *cancel);
/* The request stops when cancel is fired (NULL: no token).  Borrowed. */
AIGW_API aigw_status aigw_request_set_cancel(aigw_request *req, aigw_cancel *cancel);

/* ------------------------------------------------------------------------ */
/* Response                                                                 */
/* ------------------------------------------------------------------------ */

typedef struct aigw_response aigw_response;
/* One attempt's record (below, "attempt records"). */
typedef struct aigw_attempt aigw_attempt;

/* How a request ended. */
typedef enum aigw_outcome {
    AIGW_OUTCOME_SERVED = 0,     /* an upstream 2xx answer is served          */
    AIGW_OUTCOME_FAIL_FAST = 1,  /* the upstream rejected the request on its
                                    merits; its answer is returned as is      */
    AIGW_OUTCOME_EXHAUSTED = 2,  /* no candidate left, or maxAttempts reached */
    AIGW_OUTCOME_TIMED_OUT = 3,  /* totalTimeout passed                       */
    AIGW_OUTCOME_REJECTED = 4,   /* the primary model is outside the access
                                    scope or has no provider; nothing sent    */
    AIGW_OUTCOME_STREAM_FAILED = 5, /* a committed stream broke (cut, idle,
                                    in-band error, no end): never a success  */
    AIGW_OUTCOME_CANCELLED = 6   /* the caller cancelled from a callback      */
} aigw_outcome;

/*
 * Send a request through failover.  Returns AIGW_OK whenever the request
 * ended with an answer, whatever the outcome: the upstream's (served or fail
 * fast) or one the library made (exhausted, timed out, rejected: a JSON error
 * body {"error":{"message","type":"aigw_error","code"}} with an HTTP-like
 * status: 429 with Retry-After when every attempt was rate limited, 401 when
 * every attempt failed auth, 504 on timeout, 403 when rejected, 502
 * otherwise).  Returns an error status (and no response) only when the
 * request could not be started: AIGW_EINVAL, AIGW_ENOMEM, AIGW_EREQUEST
 * (body not a JSON object, no "model", ...).  Thread-safe; blocks the
 * calling thread; may sleep for same-backend retries.
 */
AIGW_API aigw_status aigw_client_send(aigw_client *client, const aigw_request *req,
                                      aigw_response **out, aigw_error **err);

/* ---- streaming ---- */

#define AIGW_STREAM_VERSION 2 /* 1 is still accepted (no on_commit) */

/*
 * What a streamed answer is delivered to, on the caller's thread, as it
 * arrives.  Nothing reaches the caller before the commit point: the first
 * content-bearing event (a chat-completions chunk with non-empty
 * delta.content or tool calls; an Anthropic content_block_delta; a Responses
 * output delta), or the end of a complete answer that has none.  Failures
 * before it fail over unseen.  Each callback may be NULL; a non-zero return
 * cancels the request (outcome AIGW_OUTCOME_CANCELLED).
 */
typedef struct aigw_stream_handler {
    uint32_t version; /* AIGW_STREAM_VERSION */
    /* The answer is committed: the upstream's status and headers (names
     * lower-cased, hop-by-hop ones left out).  Once per served attempt. */
    int (*on_start)(void *userdata, int status, const aigw_header *headers, size_t n_headers);
    /* The served stream's bytes, exactly as the upstream sent them. */
    int (*on_data)(void *userdata, const char *data, size_t len);
    /* With stream restart on, a committed stream broke and the request goes
     * to the next candidate from the start: discard what was received.
     * reason_json: {"reason":"...","attempt":N,"provider":"...","model":"..."}. */
    int (*on_reset)(void *userdata, const char *reason_json);
    /* Version 2: called just before on_start, with the request's id and the
     * attempt being served (provider, model, key id, number: see the
     * aigw_attempt_* functions; valid during the call only) — what a gateway
     * puts in its answer's headers. */
    int (*on_commit)(void *userdata, const char *request_id, const aigw_attempt *attempt);
} aigw_stream_handler;

/*
 * Send a streamed request ("stream": true in the body) through failover.
 * The served answer goes to the handler as it arrives; the response returned
 * carries the outcome, the status, the attempt records and, when nothing was
 * committed, the answer's body (an upstream fail-fast answer or the
 * library's JSON error).  AIGW_OUTCOME_SERVED only for a stream that ended
 * properly (`data: [DONE]`, or a finish reason).  Timeouts: firstTokenTimeout
 * (request sent -> first content event; fails over like an attempt timeout)
 * and streamIdleTimeout (the longest gap once committed).  Thread-safe like
 * aigw_client_send; the handler is copied.
 */
AIGW_API aigw_status aigw_client_stream(aigw_client *client, const aigw_request *req,
                                        const aigw_stream_handler *handler, void *userdata,
                                        aigw_response **out, aigw_error **err);

AIGW_API aigw_outcome aigw_response_outcome(const aigw_response *resp);
/* "served", "fail_fast", "exhausted", "timed_out", "rejected",
 * "stream_failed", "cancelled". */
AIGW_API const char *aigw_outcome_name(aigw_outcome outcome);
AIGW_API int aigw_response_status(const aigw_response *resp);
/* The body (not NUL-terminated in general; a NUL is kept after it). */
AIGW_API const char *aigw_response_body(const aigw_response *resp, size_t *len);
AIGW_API size_t aigw_response_header_count(const aigw_response *resp);
/* Header i (name lower-cased) or AIGW_EINVAL when out of range. */
AIGW_API aigw_status aigw_response_header(const aigw_response *resp, size_t i,
                                          const char **name, const char **value);
/* The first header of that name (case-insensitive) or NULL. */
AIGW_API const char *aigw_response_header_get(const aigw_response *resp, const char *name);
/* "rq_" followed by 26 random base-62 characters. */
AIGW_API const char *aigw_response_request_id(const aigw_response *resp);
/* The model that served, or the last one tried ("" when none was). */
AIGW_API const char *aigw_response_model(const aigw_response *resp);
/* Where the key health this request went by came from: "local" (the
 * client's own, with no store or while the store does not answer) or the
 * store's kind ("redis"). */
AIGW_API const char *aigw_response_health_store(const aigw_response *resp);
/* The library's error code when it made the answer ("rate_limited",
 * "unauthorized", "quota_exceeded", "timeout", "upstream_error",
 * "max_attempts_reached", "no_route", "circuit_open",
 * "retry_budget_exhausted", "model_not_allowed", "unknown_model",
 * "stream_failed", "cancelled"), or NULL when the answer is the upstream's. */
AIGW_API const char *aigw_response_error_code(const aigw_response *resp);
AIGW_API void aigw_response_free(aigw_response *resp);

/* ---- attempt records ---- */

/* Attempts: one per upstream call, in order. */
AIGW_API size_t aigw_response_attempt_count(const aigw_response *resp);
AIGW_API const aigw_attempt *aigw_response_attempt(const aigw_response *resp, size_t i);

AIGW_API int aigw_attempt_number(const aigw_attempt *a);       /* 1-based */
AIGW_API const char *aigw_attempt_provider(const aigw_attempt *a);
AIGW_API const char *aigw_attempt_model(const aigw_attempt *a);
AIGW_API int aigw_attempt_step(const aigw_attempt *a);          /* 0-based; -1 implicit */
AIGW_API const char *aigw_attempt_key_id(const aigw_attempt *a);    /* never a value */
AIGW_API const char *aigw_attempt_key_source(const aigw_attempt *a); /* "user", "ngrok" */
AIGW_API int aigw_attempt_status_code(const aigw_attempt *a);   /* 0: no HTTP answer */
/* "timeout", "connect", "reset", "dns", "tls", "too_large", "protocol",
 * "other", "cancelled", "nomem", or NULL when an HTTP answer came. */
AIGW_API const char *aigw_attempt_transport_error(const aigw_attempt *a);
/* "auth", "quota", "rate_limit", "overloaded", "server", "timeout",
 * "network", "context_length", "content_policy", "bad_request",
 * "payload_too_large", "not_found", "redirect", or NULL on success. */
AIGW_API const char *aigw_attempt_error_class(const aigw_attempt *a);
/* ngrok's retryAction: "succeeded", "next_key", "next_quota_pool",
 * "next_backend", "managed_fallback", "retry_same_backend", "fail_fast",
 * "exhausted". */
AIGW_API const char *aigw_attempt_verdict(const aigw_attempt *a);
AIGW_API int aigw_attempt_served(const aigw_attempt *a);
AIGW_API int64_t aigw_attempt_duration_ms(const aigw_attempt *a);
/* The wait the upstream asked for (Retry-After, ...), -1 when none. */
AIGW_API int64_t aigw_attempt_requested_wait_ms(const aigw_attempt *a);
/* What the library waited before the next attempt (retry_same_backend). */
AIGW_API int64_t aigw_attempt_waited_ms(const aigw_attempt *a);
/* ngrok's completion: "succeeded", "failed", "timed_out", "stream_failed". */
AIGW_API const char *aigw_attempt_completion(const aigw_attempt *a);
/* Streams: ms from sending to the first body byte and to the first content
 * event; -1 when none came. */
AIGW_API int64_t aigw_attempt_first_byte_ms(const aigw_attempt *a);
AIGW_API int64_t aigw_attempt_first_token_ms(const aigw_attempt *a);

/* Skips: candidates, steps or keys passed over without an upstream call.
 * Each has a provider, a model and a reason: "model_not_allowed",
 * "unknown_model", "duplicate_candidate", "context_length_exceeded",
 * "no_ngrok_access_key", "key_cooling", "key_benched", "circuit_open" (the
 * backend's breaker), "host_circuit_open". */
AIGW_API size_t aigw_response_skip_count(const aigw_response *resp);
AIGW_API aigw_status aigw_response_skip(const aigw_response *resp, size_t i,
                                        const char **provider, const char **model,
                                        const char **reason);
/* The key a skip concerns ("" when it concerns a model or a step). */
AIGW_API const char *aigw_response_skip_key_id(const aigw_response *resp, size_t i);
/* How long what was skipped had left to wait (ms); -1 when unknown. */
AIGW_API int64_t aigw_response_skip_wait_ms(const aigw_response *resp, size_t i);

/*
 * The attempt records as JSON, in ngrok's GET /usage/requests/{id} shape:
 * {"requestId":..., "outcome":..., "model":..., "attempts":[{"event":
 * {"attemptNumber","provider","model","statusCode","isError","keySource",
 * "providerKeyId"},"served","retryAction","completion",
 * "upstreamDurationMs", ...}], "skipped":[...]}.  A NUL-terminated string
 * owned by the response, built on the first call (so, unlike the other
 * getters, do not make that first call from two threads at once on one
 * response).  NULL only when out of memory.
 */
AIGW_API const char *aigw_response_trace_json(const aigw_response *resp);

#ifdef __cplusplus
}
#endif

#endif /* AIGW_H */
