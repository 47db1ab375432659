/*
 * internal.h - what the modules of libaigw share.  Never installed.
 *
 * Every allocation goes through aigw__malloc & co (alloc.c).  Names with the
 * `aigw__` prefix are internal: compiled with hidden visibility and kept out
 * of the version script.
 */
#ifndef AIGW_INTERNAL_H
#define AIGW_INTERNAL_H

#include "aigw.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define AIGW__PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define AIGW__PRINTF(a, b)
#endif

/* A thread-local of the library's own, reached without a call to
 * __tls_get_addr: its few bytes come from the static TLS block (a
 * shared library's default model asks the dynamic linker on every
 * access).  Only for small variables: a library loaded with dlopen takes
 * them from the surplus glibc keeps for that. */
#if defined(__GNUC__) || defined(__clang__)
#define AIGW__TLS_FAST __attribute__((tls_model("initial-exec")))
#else
#define AIGW__TLS_FAST
#endif

/* Defined in a build under AddressSanitizer (GCC's and clang's ways of
 * saying so). */
#if defined(__SANITIZE_ADDRESS__)
#define AIGW__ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define AIGW__ASAN 1
#endif
#endif

/* ---- alloc.c: the one allocator door ---- */
void *aigw__malloc(size_t n);
void *aigw__calloc(size_t count, size_t n);
void *aigw__realloc(void *p, size_t n);
void aigw__free(void *p);
char *aigw__strdup(const char *s);
char *aigw__strndup(const char *s, size_t n);
/* Wipe memory so the compiler cannot drop it (secrets). */
void aigw__wipe(void *p, size_t n);
/* Test hooks: make the n-th allocation from now fail (n >= 1; 0 disables),
 * or (fail_from) it and every one after it until disabled; count
 * allocations made since start, and those made to fail since the last
 * fail_at / fail_from.  Only in builds with AIGW_ALLOC_HOOKS (debug info
 * on, lib/meson.build); elsewhere they count nothing and fail nothing. */
void aigw__alloc_fail_at(long n);
void aigw__alloc_fail_from(long n);
long aigw__alloc_count(void);
long aigw__alloc_failures(void);

/* ---- buf.c: growable byte buffer, always NUL-terminated ---- */
typedef struct aigw_buf {
    char *data;
    size_t len;
    size_t cap;
} aigw_buf;

#define AIGW_BUF_INIT {NULL, 0, 0}
int aigw__buf_append(aigw_buf *b, const void *data, size_t len); /* 0 or -1 */
int aigw__buf_puts(aigw_buf *b, const char *s);
int aigw__buf_printf(aigw_buf *b, const char *fmt, ...) AIGW__PRINTF(2, 3);
/* Appends s (len bytes) as a JSON string literal, quotes included: always
 * valid JSON and valid UTF-8 - '"', '\\' and control characters escaped,
 * each byte that is not part of well-formed UTF-8 written as \ufffd. */
int aigw__buf_json_str(aigw_buf *b, const char *s, size_t len);
int aigw__buf_json_cstr(aigw_buf *b, const char *s); /* NULL -> null */
/* Gives up ownership of the data (NULL-safe; "" when empty). */
char *aigw__buf_take(aigw_buf *b);
void aigw__buf_free(aigw_buf *b);
void aigw__buf_wipe_free(aigw_buf *b); /* wipes first (held a secret) */

/* ---- error.c ---- */
struct aigw_error {
    aigw_status code;
    char *message;
    size_t n;
    size_t cap;
    char **paths;
    char **problems;
};
aigw_error *aigw__error_new(aigw_status code);
/* Adds one problem. Returns 0 or -1 (out of memory). */
int aigw__error_add(aigw_error *e, const char *path, const char *fmt, ...) AIGW__PRINTF(3, 4);
int aigw__error_addv(aigw_error *e, const char *path, const char *fmt, va_list ap);
/* Builds the summary message from the problems. Returns e (or NULL). */
aigw_error *aigw__error_finish(aigw_error *e);
/* Convenience: stores a one-problem error in *err (if err) and returns code. */
aigw_status aigw__fail(aigw_error **err, aigw_status code, const char *fmt, ...) AIGW__PRINTF(3, 4);

/* ---- headers (headers.c) ---- */
typedef struct aigw_hdr {
    char *name; /* lower-cased */
    char *value;
} aigw_hdr;

/* {NULL, 0, 0} is an empty list.  Entries and their strings live in one
 * block that v points into: only these functions add, change or free them
 * (adding may move the block: a name or value added must not point into
 * the list itself). */
typedef struct aigw_hdrs {
    aigw_hdr *v;
    size_t n;
    size_t cap;
} aigw_hdrs;

int aigw__hdrs_add(aigw_hdrs *h, const char *name, const char *value); /* copies */
int aigw__hdrs_addn(aigw_hdrs *h, const char *name, size_t nlen, const char *value,
                    size_t vlen);
/* aigw__hdrs_addn for a name already in lower case (as it is stored). */
int aigw__hdrs_addn_lower(aigw_hdrs *h, const char *name, size_t nlen, const char *value,
                          size_t vlen);
/* One header line of an answer, its CR/LF gone: "Name: value" is added
 * (the name before the first ':', both without the blanks (space, tab)
 * around them); a line that begins with a blank continues the last header
 * (aigw__hdrs_unfold); a line without a name or a ':' is ignored.  0
 * (added or ignored), or -1 when out of memory (h as it was). */
int aigw__hdrs_add_line(aigw_hdrs *h, const char *p, size_t len);
/* The length of the name aigw__hdrs_add_line reads from such a line (up to
 * the first ':', the blanks before it left out), and the ':''s offset into
 * *colon (when not NULL); 0 for a folded line or no header line. */
size_t aigw__hdrs_line_name(const char *p, size_t len, size_t *colon);
/* Whether a header is hop-by-hop (connection, keep-alive, content-length,
 * transfer-encoding, te, trailer, upgrade, proxy-connection): it describes
 * the connection, not the answer, and is never passed on.  A stored
 * (lower-case) name; and the n bytes of a name as an answer's line has it,
 * in any case (upstream.c). */
bool aigw__hop_by_hop(const char *name);
bool aigw__hop_by_hop_n(const char *name, size_t n);
/* Room for every header of src to be added to h without an allocation.
 * 0, or -1 when out of memory (h as it was). */
int aigw__hdrs_reserve_for(aigw_hdrs *h, const aigw_hdrs *src);
/* Joins the last header's value with one space and len bytes of p (an
 * obsolete folded line), its leading blanks (space, tab) left out; nothing
 * without a header or bytes.  0 or -1. */
int aigw__hdrs_unfold(aigw_hdrs *h, const char *p, size_t len);
/* Replaces header i's value (i < h->n); the old bytes are wiped.  0 or -1. */
int aigw__hdrs_set_value(aigw_hdrs *h, size_t i, const char *value);
const char *aigw__hdrs_get(const aigw_hdrs *h, const char *name); /* case-insensitive */
void aigw__hdrs_free(aigw_hdrs *h);
/* No headers, the block kept (its room reused by the next adds). */
void aigw__hdrs_clear(aigw_hdrs *h);
/* h's block (NULL: none), its bytes (0: none), and the bytes of its head
 * (what aigw__hdrs_bytes reads). */
void *aigw__hdrs_block(const aigw_hdrs *h);
size_t aigw__hdrs_bytes(const aigw_hdrs *h);
size_t aigw__hdrs_head_bytes(void);

/* ---- ASCII, whatever the locale ---- */
static inline bool aigw__is_digit(int c)
{
    return c >= '0' && c <= '9';
}
static inline bool aigw__is_alpha(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
static inline int aigw__lower(int c)
{
    return (c >= 'A' && c <= 'Z') ? c - 'A' + 'a' : c;
}
/* The index of the first byte at or after i that is not JSON white space. */
static inline size_t aigw__skip_ws(const char *s, size_t len, size_t i)
{
    while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
        i++;
    return i;
}

/* ---- duration.c ---- */
/* Go duration ("500ms", "1m30s", "1.5s", "2h", "0") -> milliseconds
 * (rounded down; sub-ms units allowed).  0 on success, -1 when malformed,
 * negative or out of range. */
int aigw__parse_duration(const char *s, int64_t *ms);

/* ---- catalog.c: built-in providers ---- */
typedef enum aigw_auth_style {
    AIGW_AUTH_BEARER = 0,  /* Authorization: Bearer KEY                   */
    AIGW_AUTH_X_API_KEY,   /* x-api-key: KEY + anthropic-version          */
    AIGW_AUTH_GOOG_API_KEY /* x-goog-api-key: KEY                         */
} aigw_auth_style;

typedef struct aigw_catalog_entry {
    const char *id;
    const char *name;
    const char *base_url;        /* OpenAI-compatible base, no trailing '/' */
    aigw_auth_style native_auth; /* auth of the provider's native API */
    const char *const *prefixes; /* NULL-terminated bare-model prefixes */
} aigw_catalog_entry;

size_t aigw__catalog_count(void);
const aigw_catalog_entry *aigw__catalog_at(size_t i);
const aigw_catalog_entry *aigw__catalog_find(const char *id);
/* The catalog provider whose bare-model prefixes match model, or NULL. */
const aigw_catalog_entry *aigw__catalog_for_model(const char *model);

#define AIGW_NGROK_GATEWAY_URL "https://gateway.ngrok.ai/v1"

/* ---- config.c: the parsed, immutable configuration ---- */
typedef struct aigw_secret {
    char *value; /* NUL-terminated; wiped on free */
    size_t len;
} aigw_secret;

typedef struct aigw_provider {
    char *id;
    char *name;
    char *base_url; /* no trailing '/' */
    aigw_auth_style native_auth;
    bool custom;    /* declared in "providers" (not a pure catalog entry) */
    char **models;  /* custom providers' declared model ids */
    char **upstream_models; /* per model: its providerModelId, or NULL */
    size_t n_models;
} aigw_provider;

typedef struct aigw_pkey {
    char *id;
    char *provider_id;
    char *name;
    aigw_secret value;
} aigw_pkey;

typedef enum aigw_step_type { AIGW_STEP_USER = 0, AIGW_STEP_NGROK = 1 } aigw_step_type;
/* keySelectionStrategy: ngrok's "ordered", and local extensions. */
typedef enum aigw_strategy_kind {
    AIGW_STRATEGY_ORDERED = 0,           /* "ordered": list order          */
    AIGW_STRATEGY_ROUND_ROBIN,           /* "round-robin"                  */
    AIGW_STRATEGY_RANDOM,                /* "random"                       */
    AIGW_STRATEGY_WEIGHTED,              /* "weighted": per-key "weight"   */
    AIGW_STRATEGY_LEAST_RECENTLY_LIMITED /* "least-recently-limited"       */
} aigw_strategy_kind;

typedef struct aigw_step_key {
    char *id;           /* the provider key id, or the inline key's name */
    aigw_secret value;  /* a copy of the secret (inline or from providerKeys) */
    bool resolved;      /* false only in a bare configuration */
    uint32_t weight;    /* "weight" (local extension): 1 unless set; 0..1000000 */
} aigw_step_key;

typedef struct aigw_step {
    aigw_step_type type;
    aigw_strategy_kind strategy;
    aigw_step_key *keys;
    size_t n_keys;
    /* round-robin's turn counter: the one member of a configuration that
     * changes after the parse (atomically; shared by the requests using it) */
    _Atomic unsigned long turn;
} aigw_step;

typedef struct aigw_rule {
    char *provider; /* provider id, or NULL */
    char *model;    /* model id without provider prefix, or NULL */
    aigw_step *steps;
    size_t n_steps;
} aigw_rule;

/* What the client remembers across requests (gatewayConfig extensions;
 * see health.h). */
typedef struct aigw_health_opts {
    int64_t cooldown_ms;        /* keyCooldown, 2s: a 429 that names no wait,
                                   jittered into [1/2, 1] of it             */
    int64_t cooldown_max_ms;    /* keyCooldownMax, 1h: the longest wait an
                                   upstream may impose on a key             */
    int64_t bench_ms;           /* keyBenchTime, 1h: auth / quota; 0 = off  */
    int breaker_threshold;      /* circuitBreaker.failures, 5 consecutive;
                                   0 (or circuitBreaker false) = off        */
    int64_t breaker_cooloff_ms; /* circuitBreaker.cooloff, 5s: open -> probe */
    int64_t probe_timeout_ms;   /* perRequestTimeout: a probe's longest life */
    bool budget_on;             /* retryBudget false = off                  */
    int budget_percent;         /* retryBudget.percent, 20 (0..1000)        */
    int budget_min_per_sec;     /* retryBudget.minPerSecond, 10 (0..100000) */
    int64_t budget_window_ms;   /* retryBudget.window, 10s (1s..1h)         */
} aigw_health_opts;

/* gatewayConfig.healthStore: where key health is shared (see health.h and
 * store_redis.c).  Only Redis for now. */
typedef struct aigw_store_opts {
    char *url;            /* redis://[[user]:password@]host[:port][/db], or
                             unix:///path/to/socket[?db=N]                   */
    char *prefix;         /* keyPrefix, "aigw:"                              */
    aigw_secret password; /* password: {value} / {valueFrom}; empty: none   */
    aigw_secret salt;     /* salt: {value} / {valueFrom}; keys the names    */
    int64_t timeout_ms;   /* timeout, 50ms: connecting, and each round trip  */
    int64_t sync_ms;      /* syncInterval, 100ms: the longest a client goes
                             on its own copy before reading the store again */
} aigw_store_opts;

/* One access key configuration: who may use which models, and the routes. */
typedef struct aigw_akc {
    char *name; /* NULL: unnamed (a bare body, or a file's single one) */
    bool has_provider_allow;
    char **provider_allow;
    size_t n_provider_allow;
    bool has_model_allow;
    char **model_allow; /* as written: "gpt-4o", "openai/gpt-4o", "openai:gpt-4o" */
    size_t n_model_allow;
    aigw_rule *rules;
    size_t n_rules;
} aigw_akc;

/* One access key of the gateway file (aigw serve's callers). */
typedef struct aigw_access_key {
    char *id;
    aigw_secret value;
    size_t akc; /* index into cfg->akcs */
} aigw_access_key;

struct aigw_config {
    int refs; /* atomic */
    bool bare;

    aigw_provider *providers; /* catalog entries (with overrides) + custom */
    size_t n_providers;
    aigw_pkey *keys;
    size_t n_keys;

    /* The access key configurations: accessKeyConfiguration (or the bare
     * body) first, then each of accessKeyConfigurations; akcs[0] is the
     * default.  Never empty: a file without any has one with no rules. */
    aigw_akc *akcs;
    size_t n_akcs;
    /* accessKeys: the callers' credentials, each bound to one akc */
    aigw_access_key *access_keys;
    size_t n_access_keys;

    int64_t per_request_timeout_ms; /* 60s  */
    int64_t total_timeout_ms;       /* 120s */
    int64_t connect_timeout_ms;     /* 10s  */
    int64_t retry_after_max_ms;     /* 5s   */
    int max_attempts;               /* 10   */
    int same_backend_retries;       /* 2    */
    size_t max_response_bytes;      /* 32 MiB */
    int64_t first_token_timeout_ms; /* 30s: request sent -> first content event */
    int64_t stream_idle_timeout_ms; /* 30s: longest gap once committed */
    bool stream_restart;            /* false */
    size_t max_event_bytes;         /* 1 MiB: one SSE event */
    aigw_health_opts health;
    bool has_store; /* gatewayConfig.healthStore.redis */
    aigw_store_opts store;
    /* gatewayConfig.tls: PEM file paths, NULL when not set */
    char *tls_ca_file;
    char *tls_client_cert;
    char *tls_client_key;

    bool has_ngrok_key;
    aigw_secret ngrok_key;
    char *ngrok_gateway_url;

    /* every key a request may use, once: providerKeys, then the steps' own
     * keys (aigw__config_keys) */
    struct aigw_key_entry *all_keys;
    size_t n_all_keys;
};

/* One key of a configuration: borrowed from it. */
typedef struct aigw_key_entry {
    const char *provider; /* the provider it is for ("" when no rule says) */
    const char *id;
    const aigw_secret *value;
} aigw_key_entry;

/* The keys of cfg, each (provider, id, value) once, in configuration order:
 * providerKeys, then the keys of the rules' user steps.  The provider of a
 * step's key: the providerKey it names, else the rule's provider, else the
 * provider its model resolves to. */
const aigw_key_entry *aigw__config_keys(const aigw_config *cfg, size_t *n);

const aigw_provider *aigw__config_provider(const aigw_config *cfg, const char *id);

/* ---- strategy.c: the built-in key orders ---- */
/*
 * Orders a step's n keys for one request.  `ordered`: as listed (the engine
 * passes over the keys that are not ready, recording skips).  The others:
 * the ready keys first, in the strategy's order, then the others (cooling,
 * benched: the engine skips them) in configuration order.  keys[i] is key i's health, weight included.
 * turn is the step's round-robin counter (advanced once per call for
 * round-robin).  Writes all n indexes into order.
 * - ordered: configuration order, whatever the health.
 * - round-robin: the ready keys, rotated by one more each call.
 * - random: the ready keys, shuffled uniformly.
 * - weighted: the ready keys drawn one by one with probability weight/sum
 *   of the weights left; keys of weight 0 after them, in configuration order.
 * - least-recently-limited: never-limited keys first, then by the oldest
 *   rate limit; ties in configuration order.
 */
void aigw__strategy_order(aigw_strategy_kind kind, const aigw_key_health *const *keys,
                          size_t n, _Atomic unsigned long *turn, size_t *order);
/* "ordered", "round-robin", ...; and the kind for a name (-1 unknown). */
const char *aigw__strategy_name(aigw_strategy_kind kind);
int aigw__strategy_kind(const char *name);

/* ---- route.c ---- */
/* Resolves a model spec ("provider:model", or a bare id through custom
 * providers' model lists and the catalog prefixes).  0 and *prov + *model
 * (allocated) on success; -1 unknown provider / unresolvable; -2 no memory. */
int aigw__resolve_model(const aigw_config *cfg, const char *spec, const aigw_provider **prov,
                        char **model);
/* The same, *model pointing into spec instead of a copy.  memo (NULL:
 * none) remembers the provider a "provider:" prefix named last; only for a
 * configuration whose provider ids differ from each other ignoring case. */
int aigw__resolve_model_in(const aigw_config *cfg, const char *spec,
                           _Atomic(const aigw_provider *) *memo, const aigw_provider **prov,
                           const char **model);
/* The model id to send upstream: a declared model's providerModelId, or
 * the model id itself. */
const char *aigw__upstream_model(const aigw_provider *p, const char *model);
/* Whether the access scope lets (provider, model) through. */
bool aigw__access_allows(const aigw_akc *akc, const char *provider, const char *model);
/* The routing rule for (provider, model): a model rule beats a provider rule;
 * NULL when none matches. */
const aigw_rule *aigw__rule_for(const aigw_akc *akc, const char *provider, const char *model);
/* The access key configuration of that name (NULL: the default); NULL when
 * there is none of that name. */
const aigw_akc *aigw__config_akc(const aigw_config *cfg, const char *name);

/* ---- body.c: request body handling ---- */
/* Copies a JSON object body with its top-level "model" replaced by model and
 * its top-level "models" removed, keeping every other byte as it was.
 * 0 on success, -1 not a JSON object (or not valid UTF-8), -2 no memory. */
int aigw__body_rewrite(const char *body, size_t len, const char *model, aigw_buf *out);
/* The same without validating first: for a body aigw__body_models has
 * already accepted (the engine parses each request body once). */
int aigw__body_splice(const char *body, size_t len, const char *model, aigw_buf *out);
/* Extracts the top-level "model" (a non-empty string) and the optional
 * "models" (an array of non-empty strings).  0; -1 with *why (allocated) when
 * the body is unusable ("not valid UTF-8 at byte N" (from 0), "nested deeper
 * than 1000 levels at line L, column C", "the request body is not a JSON
 * object", ...); -2 no memory. */
int aigw__body_models(const char *body, size_t len, char **model, char ***models,
                      size_t *n_models, char **why);
void aigw__strv_free(char **v, size_t n);
/* Where a body's top-level members lie (offsets into it), as
 * aigw__body_read found them, so that a rewrite splices from them instead
 * of scanning the body again.  m holds the first AIGW_BODY_MAP_MEMBERS
 * members; a body with more is scanned again for each rewrite. */
#define AIGW_BODY_MAP_MEMBERS 16
typedef enum aigw_body_key {
    AIGW_BODY_OTHER = 0,
    AIGW_BODY_MODEL, /* "model" (escapes decoded) */
    AIGW_BODY_MODELS /* "models" */
} aigw_body_key;
typedef struct aigw_body_member {
    size_t key;       /* the key's opening quote */
    size_t key_end;   /* just past its closing quote */
    size_t value;     /* the value's first byte */
    size_t value_end; /* just past the value */
    aigw_body_key kind;
} aigw_body_member;
typedef struct aigw_body_map {
    size_t open;  /* just past the top-level '{' */
    size_t first; /* the first member, or the closing brace */
    size_t n;     /* members */
    bool has_model, has_models;
    aigw_body_member model, models; /* the first of each name, when there is one */
    aigw_body_member m[AIGW_BODY_MAP_MEMBERS];
} aigw_body_map;
/* aigw__body_models, and the map of the body it accepted (*map is only
 * meaningful when it returns 0).  A body whose first "models" is not null,
 * or whose "model" holds an escape, is read through cJSON; any other is
 * read in one pass, without a tree. */
int aigw__body_read(const char *body, size_t len, aigw_body_map *map, char **model,
                    char ***models, size_t *n_models, char **why);
/* aigw__body_read, the model written into room (room_size bytes) when it
 * fits there without decoding: then *model is room, not to be freed. */
int aigw__body_read_in(const char *body, size_t len, aigw_body_map *map, char *room,
                       size_t room_size, char **model, char ***models, size_t *n_models,
                       char **why);
/* aigw__body_splice from the map of an accepted body: the same bytes. */
int aigw__body_splice_map(const char *body, size_t len, const aigw_body_map *map,
                          const char *model, aigw_buf *out);
/* aigw__body_splice_map's bytes written into dst (cap bytes, a NUL after
 * them) for the common rewrite: each "model" of a mapped body without
 * "models" given model, which needs no escape.  Their length, or 0 when
 * the rewrite is another or does not fit (dst then means nothing). */
size_t aigw__body_splice_into(const char *body, size_t len, const aigw_body_map *map,
                              const char *model, char *dst, size_t cap);
/* Whether splicing model into the accepted body would give it back byte
 * for byte (each "model" already holds it as written, no "models"). */
bool aigw__body_unchanged(const char *body, const aigw_body_map *map, const char *model);
/* Whether the body's top-level "stream" (the first) is true: one pass, no
 * allocation; false for a body that is not a JSON object. */
bool aigw__body_wants_stream(const char *body, size_t len);

/* ---- classify.c ---- */
typedef enum aigw_class {
    AIGW_CLASS_NONE = 0, /* success */
    AIGW_CLASS_AUTH,
    AIGW_CLASS_QUOTA,
    AIGW_CLASS_RATE_LIMIT,
    AIGW_CLASS_OVERLOADED,
    AIGW_CLASS_SERVER,
    AIGW_CLASS_TIMEOUT,
    AIGW_CLASS_NETWORK,
    AIGW_CLASS_CONTEXT_LENGTH,
    AIGW_CLASS_CONTENT_POLICY,
    AIGW_CLASS_BAD_REQUEST,
    AIGW_CLASS_PAYLOAD_TOO_LARGE,
    AIGW_CLASS_NOT_FOUND,
    AIGW_CLASS_REDIRECT,
    AIGW_CLASS__COUNT
} aigw_class;

const char *aigw__class_name(aigw_class c);

/* Classifies one upstream answer.  tr is the transport result; status, headers
 * and body the HTTP answer (when tr == AIGW_TR_OK).  now_unix_ms is the wall
 * clock, for Retry-After HTTP dates.  *wait_ms receives the wait the upstream
 * asked for (the first of: retry-after-ms, Retry-After seconds or HTTP date,
 * Gemini RetryInfo.retryDelay, the largest x-ratelimit-reset-* duration whose
 * remaining count is 0, or any x-ratelimit-reset-* when none says), or -1. */
aigw_class aigw__classify(aigw_transport_result tr, int status, const aigw_hdrs *headers,
                          const char *body, size_t body_len, int64_t now_unix_ms,
                          int64_t *wait_ms);
/* The same, and *nomem when an error body that is JSON could not be read
 * for lack of memory, or tr is AIGW_TR_NOMEM (the class is then a guess:
 * the engine ends the request instead). */
aigw_class aigw__classify_checked(aigw_transport_result tr, int status,
                                  const aigw_hdrs *headers, const char *body, size_t body_len,
                                  int64_t now_unix_ms, int64_t *wait_ms, bool *nomem);

/* ---- sse.c: an incremental Server-Sent Events parser ---- */
typedef struct aigw_sse aigw_sse;

typedef struct aigw_sse_event {
    const char *event; /* the "event:" field, "" when absent (= "message") */
    size_t event_len;
    const char *data;  /* "data:" lines joined by '\n' (not NUL-terminated:
                          an event of one line may be read where it lies
                          in the bytes fed) */
    size_t data_len;
    const char *id;    /* the last event id, persisting across events (SSE
                          spec); "" when none */
    size_t id_len;
    int64_t retry_ms;  /* the last valid "retry:" since the previous
                          dispatched event, -1 when none */
} aigw_sse_event;

/* Called for each complete event (a blank line ends it; an event with no
 * data line is not dispatched, as the SSE spec says).  The pointers live
 * until the callback returns.  Return 0 to go on; anything else stops
 * aigw__sse_feed, which returns it. */
typedef int (*aigw_sse_event_fn)(void *ctx, const aigw_sse_event *ev);

#define AIGW_SSE_TOO_LARGE (-1000) /* one event (or line) passed the cap */

/* max_event_bytes bounds the memory of one event (its lines and data). */
aigw_sse *aigw__sse_new(size_t max_event_bytes);
/* Feeds bytes, split anywhere (CR, LF and CRLF line ends; a CR at the end of
 * one chunk and LF at the start of the next are one line end; a leading BOM
 * is skipped).  Returns 0, AIGW_SSE_TOO_LARGE, AIGW_ENOMEM, AIGW_EINVAL (NULL
 * parser, or NULL buffer with len > 0), or the callback's non-zero; errors
 * are sticky, and after one the parser is only to be freed.  After the
 * callback's non-zero, aigw__sse_fed() bytes of buf were read and the rest
 * may be fed next.
 * Comment lines (":...") are skipped but counted (see aigw__sse_comments). */
int aigw__sse_feed(aigw_sse *p, const char *buf, size_t len, aigw_sse_event_fn cb, void *ctx);
/* Whether bytes of an unfinished event (or line) are pending: at the end of
 * a stream, that event is dropped (SSE spec) and the framing was cut. */
bool aigw__sse_pending(const aigw_sse *p);
long aigw__sse_comments(const aigw_sse *p);
/* In an event callback: how many bytes of the buffer being fed are read,
 * through the line end of the blank line that dispatched the event. */
size_t aigw__sse_fed(const aigw_sse *p);
/* Between two events (nothing of a block or a line held, no CR whose LF may
 * follow, the BOM settled, no error): how many bytes the next block, its
 * blank line included, may take without passing max_event_bytes, a bound
 * as strict as the parser's or stricter; 0 otherwise.  Whoever reads a
 * block itself instead of feeding it (an "event:" and a "data:" line, LF
 * ends) leaves the parser as feeding it would have, but for comments and
 * aigw__sse_fed. */
size_t aigw__sse_room(const aigw_sse *p);
void aigw__sse_free(aigw_sse *p);

/* ---- transport ---- */
struct aigw_transport_response {
    int status;
    aigw_hdrs headers;
    aigw_buf body;
    size_t max_body;
    bool header_cap; /* AIGW_TR_TOO_LARGE for the header block, not the body */
    /* headers holds no hop-by-hop header: the curl transport leaves them
     * out (a custom transport's answer is filtered instead) */
    bool end_to_end;
};

/* All header lines of one answer, at most (libcurl's transport): below
 * libcurl's own 300 KB limit, so that a header flood is reported as too
 * large, with this limit named. */
#define AIGW_MAX_RESPONSE_HEADER_BYTES (256 * 1024)

/* libcurl's transport: fills *vt and *userdata (destroy frees it). */
aigw_status aigw__curl_transport_new(aigw_transport *vt, void **userdata);
const char *aigw__transport_result_name(aigw_transport_result r); /* NULL for OK */

/* ---- store_redis.c: the Redis health store ---- */

/* Whether this build has the Redis store (hiredis was found). */
bool aigw__have_redis(void);
/* Checks a healthStore.redis url: 0, or -1 with *why (allocated with
 * aigw__malloc; NULL when out of memory) saying what is wrong with it, never
 * quoting a password it holds.  Compiled with or without hiredis:
 * `rediss://` is refused here (the hiredis libaigw builds against has no
 * TLS). */
int aigw__redis_url_check(const char *url, char **why);
/* Fills *vt and *ud with a Redis store for o (copied: o may go away).  It
 * connects at first use, not here.  AIGW_OK; AIGW_ENOMEM; AIGW_EINVAL when
 * this build has no Redis store. */
aigw_status aigw__redis_store_new(const aigw_store_opts *o, aigw_health_store *vt, void **ud);

/* ---- url.c: URLs, parsed by libcurl's URL API (curl_url) ---- */
typedef struct aigw_url {
    char *scheme;      /* lower-cased */
    char *host;        /* lower-cased (ASCII letters); an IPv6 literal in
                          brackets, with its zone as "%25zone" */
    long port;         /* as written, else the scheme's default (http, ws
                          80; https, wss 443); -1 when neither */
    bool port_written; /* the URL names a port */
    char *path;        /* as written (no dot segments removed), "/" when
                          the URL has none */
    bool has_userinfo; /* user[:password]@ */
    bool has_query;    /* a '?' (even an empty query) */
    bool has_fragment; /* a '#' */
} aigw_url;

/* Parses an absolute URL "scheme://authority[path][?query][#fragment]".
 * 0 and *out (free with aigw__url_free); -1 and, when why is not NULL,
 * *why: what is wrong, as a phrase after "the URL" ("must have a host",
 * "has an invalid port", ...; allocated, NULL when out of memory);
 * -2 out of memory.  Refused: whitespace or control characters, a scheme
 * not of the form letter (letter | digit | + - .)*, an empty authority
 * ("https:///v1"), a percent-encoded host, port 0, and whatever curl_url
 * refuses (bad host, IPv6 literal or port).  The user info ends at the
 * last '@' of the authority. */
int aigw__url_parse(const char *url, aigw_url *out, char **why);
void aigw__url_free(aigw_url *u);
/* "scheme://host:port" of url (allocated: default ports made explicit,
 * scheme and host lower-cased, user info dropped), or NULL when it does not
 * parse (aigw__url_parse), has no port and a scheme without a default
 * one, or memory ran out. */
char *aigw__url_origin(const char *url);
/* One parse of a base URL: whether it has a path ("/" is none) and its
 * origin (aigw__url_origin; NULL when it has none).  A URL that does not
 * parse has neither.  0, or -2 out of memory. */
int aigw__url_split(const char *url, bool *has_path, char **origin);

/* ---- misc (util.c) ---- */
struct cJSON;
/* cJSON_ParseWithLengthOpts behind a process-wide lock: cJSON writes a global
 * error position on every parse, a data race when clients send from several
 * threads.  end may be NULL. */
struct cJSON *aigw__json_parse(const char *s, size_t len, const char **end);
int64_t aigw__mono_ms(void);
void aigw__sleep_ms(int64_t ms); /* the system's sleep; EINTR resumed */
int64_t aigw__unix_ms(void);
/* Fills out with n random bytes (getrandom, falling back to a seeded PRNG). */
void aigw__random_bytes(void *out, size_t n);
/* Non-cryptographic: a per-thread generator seeded from the kernel. */
void aigw__fast_random(void *out, size_t n);
int aigw__strcasecmp(const char *a, const char *b);
int aigw__strncasecmp(const char *a, const char *b, size_t n);

/* ---- UTF-8 (util.c): the one validator every check uses ---- */
/* The length (1 to 4) of the well-formed UTF-8 sequence at the start of
 * s[0..n), or 0 when there is none (RFC 3629: no overlong form, no
 * surrogate, nothing past U+10FFFF; a sequence cut short by n is not one). */
size_t aigw__utf8_seq(const char *s, size_t n);
/* The offset of the first byte of s[0..len) that is not part of well-formed
 * UTF-8; len when all of it is. */
size_t aigw__utf8_check(const char *s, size_t len);
static inline bool aigw__utf8_valid(const char *s, size_t len)
{
    return aigw__utf8_check(s, len) == len;
}
/* The longest prefix of the valid UTF-8 s[0..len), at most max bytes, that
 * does not cut a character in two (for "%.*s" in messages). */
size_t aigw__utf8_prefix(const char *s, size_t len, size_t max);

/* ---- JSON text (util.c) ---- */
/* The line and column (both from 1; columns count bytes) of offset off. */
void aigw__text_pos(const char *s, size_t off, size_t *line, size_t *col);
/* Where cJSON 1.7.15 would read JSON text s[0..len) otherwise than it was
 * written, or len: a \u escape inside a string that is not four hex digits
 * (decoded as U+0000, which cuts the string: "k\uzzzzX" reads as "k") and,
 * when strict, \u0000 itself and a control byte other than JSON's
 * whitespace (cJSON skips any byte up to 0x20 as whitespace; JSON allows
 * none inside a string).  *control says whether it is such a byte. */
size_t aigw__json_misread(const char *s, size_t len, bool strict, bool *control);
/* What cJSON_ParseWithLengthOpts(s, len, &end, 0) would make of s[0..len)
 * with memory enough, found without allocating (cJSON's hooks are the
 * host's: the library never sets them), so that a failed parse can tell
 * why.  AIGW_JSON_OK: it parses, and *offset is where the value ends (text
 * may follow); the failure was memory.  AIGW_JSON_SYNTAX: *offset is where
 * cJSON stops, as its end pointer says (the last byte when the text ends
 * too early).  AIGW_JSON_TOO_DEEP: *offset is the bracket that opens one
 * level more than CJSON_NESTING_LIMIT. */
typedef enum aigw_json_verdict {
    AIGW_JSON_OK = 0,
    AIGW_JSON_SYNTAX,
    AIGW_JSON_TOO_DEEP
} aigw_json_verdict;
aigw_json_verdict aigw__json_check(const char *s, size_t len, size_t *offset);
/* The text of that problem: "nested deeper than 1000 levels". */
#define AIGW_JSON_TOO_DEEP_FMT "nested deeper than %d levels"

/* The string at s[*i] (its opening quote) or number ('-' or a digit) as
 * aigw__json_check reads it: true and *i just past it, or false when cJSON
 * refuses it. */
bool aigw__json_string_at(const char *s, size_t len, size_t *i);
bool aigw__json_number_at(const char *s, size_t len, size_t *i);

/* ---- JSON token by token, without a tree (jscan.c) ---- */
/* What aigw__jscan_next hands over. */
typedef enum aigw_jtok {
    AIGW_JTOK_ERROR = -1, /* cJSON would not parse the text (sticky) */
    AIGW_JTOK_END = 0,    /* the text's value is whole (sticky) */
    AIGW_JTOK_OBJECT,     /* an object opens: its members, then AIGW_JTOK_CLOSE */
    AIGW_JTOK_ARRAY,      /* an array opens: its elements, then AIGW_JTOK_CLOSE */
    AIGW_JTOK_CLOSE,      /* the innermost open object or array closes */
    AIGW_JTOK_STRING,
    AIGW_JTOK_NUMBER,
    AIGW_JTOK_NULL,
    AIGW_JTOK_TRUE,
    AIGW_JTOK_FALSE
} aigw_jtok;

/* Bytes of the text: a key's or string's between its quotes (escaped: as
 * written, with a backslash in it), a number's characters.  p is NULL for
 * the key of what is not an object's member. */
typedef struct aigw_jspan {
    const char *p;
    size_t len;
    bool escaped;
} aigw_jspan;

/* The reader of one text (on the stack: it allocates nothing). */
typedef struct aigw_jscan {
    const char *s;
    size_t len;
    size_t pos;        /* where reading goes on */
    size_t depth;      /* objects and arrays open */
    size_t level;      /* of the last token: how many enclose it (for a
                          close, the level of its opening token) */
    aigw_jspan key;    /* the last value's member key */
    aigw_jspan value;  /* the last value (a string or number) */
    unsigned char mode;  /* what the next call reads (jscan.c) */
    unsigned char after; /* the mode once a value at this depth is read */
    unsigned char obj[125]; /* a bit per open level: an object */
} aigw_jscan;

/* Reads s[0..len) as cJSON_ParseWithLengthOpts(s, len, &end, 0) would, with
 * memory enough: token after token, AIGW_JTOK_ERROR exactly when cJSON
 * fails (the tokens before it were read from a text that is not JSON), or
 * AIGW_JTOK_END once the value is whole; aigw__jscan_end is then where it
 * ends, as cJSON's end pointer. */
void aigw__jscan_init(aigw_jscan *j, const char *s, size_t len);
aigw_jtok aigw__jscan_next(aigw_jscan *j);
size_t aigw__jscan_end(const aigw_jscan *j);
/* Whether the key or string reads as the ASCII name: strcmp(name, cJSON's
 * decoding of it) == 0, so "\u0074ype" and "type\u0000x" are "type". */
bool aigw__jspan_is(const aigw_jspan *sp, const char *name);
/* Whether a string's cJSON valuestring is not "" (one that starts with
 * \u0000 or a NUL byte is). */
bool aigw__jspan_nonempty(const aigw_jspan *sp);
/* The string whose quote is at s[at], read as a scan or a walk reads it:
 * its span in *sp and the offset past its closing quote, or 0 when cJSON
 * refuses it. */
size_t aigw__jscan_string_end(const char *s, size_t len, size_t at, aigw_jspan *sp);
/* *v: a number's valuedouble as cJSON has it.  Allocates only for one of
 * 64 characters or more: -1 when that fails, else 0. */
int aigw__jspan_number(const aigw_jspan *sp, double *v);

/* ---- a text read whole, only the wanted values handed over (jscan.c) ----
 * For a reader that wants a few members of a few containers: one pass, as
 * fast as the text can be checked, judged exactly as aigw__jscan_next
 * judges it.  Each container the reader cares about has a role (a small
 * number > 0 it chooses); wants[role] says which of its members or
 * elements it wants. */
typedef struct aigw_jwant {
    bool all;       /* every member or element (an array's: only so) */
    uint64_t first; /* else the members whose key may be a wanted name: a
                       bit per name's first byte (AIGW_JFIRST) */
    bool close;     /* its close goes to the close callback */
} aigw_jwant;
#define AIGW_JFIRST(c) ((uint64_t)1 << ((unsigned char)(c) % 64))
/* Where a walk may resume (aigw__jscan_walk_from): at the value of a member
 * of an object with a role, just past the member's colon.  What the walk
 * did before it, and the reader's callbacks with it, depends on the bytes
 * before pos alone: another text with the same first pos bytes reads on
 * from there as it would from its start. */
#define AIGW_JMARK_DEPTH 8
typedef struct aigw_jmark {
    size_t pos;            /* past the member's colon */
    size_t key_at, key_len; /* its key: offset and length in the text */
    bool key_escaped;
    unsigned char depth;   /* the containers (with roles) around it: levels
                              0..depth-1; 0: no place to resume */
    unsigned char frame[AIGW_JMARK_DEPTH]; /* each one's role << 1 | object */
} aigw_jmark;
typedef struct aigw_jwalk {
    const aigw_jwant *wants; /* indexed by role */
    /* A wanted value of the container of role parent, in text order: its
     * token (never AIGW_JTOK_CLOSE), its member key (p NULL for an array's
     * element) and its span (as aigw_jscan's value).  With wants[parent].
     * first, every key that begins with a wanted name's first byte comes,
     * and every one with an escape (which may read as a name): compare it
     * (aigw__jspan_is).
     * Returns, for an object or array, the role it plays (0: none, it is
     * passed over; roles go 64 levels deep at most); < 0 stops the walk. */
    int (*value)(void *ctx, int parent, aigw_jtok t, const aigw_jspan *key,
                 const aigw_jspan *value);
    /* The container of role r closes (where wants[r].close); < 0 stops. */
    int (*close)(void *ctx, int r);
    void *ctx;
    /* When set (roles then below 128), written before each value callback
     * for a member of an object: where a walk could resume to read that
     * value again (a reader keeps it with its own state of the moment). */
    aigw_jmark *here;
} aigw_jwalk;
/* Reads s[0..len) as aigw__jscan_next would, to its end (what follows the
 * value is not read), the value itself in a container of role: 0 when it
 * is whole, 1 when cJSON would not parse it (the calls made so far were
 * for a text that is not JSON), -1 when a callback stopped it. */
int aigw__jscan_walk(const char *s, size_t len, int role, const aigw_jwalk *w);
/* Reads s[0..len) on from *at, a place a walk of another text with the
 * same first at->pos bytes marked (w->here), as aigw__jscan_walk would
 * after it: the callbacks for that member's value and what follows.  The
 * reader's state must be what it was there.  Returns as aigw__jscan_walk. */
int aigw__jscan_walk_from(const char *s, size_t len, const aigw_jmark *at, const aigw_jwalk *w);

#endif /* AIGW_INTERNAL_H */
