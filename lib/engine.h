/* engine.h - what the client hands the engine for one request: the
 * configuration, the health it shares with the client's other requests, the
 * transport, strategy and clock.  Data flows one way: the client calls the
 * engine; the engine knows nothing of the client.  Never installed. */
#ifndef AIGW_ENGINE_H
#define AIGW_ENGINE_H

#include "health.h"
#include "internal.h"

struct aigw_request {
    int stream_restart; /* -1: the configuration's */
    char *path;
    char *body;
    size_t body_len;
    const aigw_cancel *cancel; /* the caller's token, borrowed; NULL none */
    char *configuration;       /* the access key configuration's name; NULL: the default */
};

/* What one client resolves of one configuration, once (resolved.c): each
 * provider's base URL split and its host's breaker, the last backend found
 * for it, each key's health entry.  The client makes one per configuration
 * it installs; a request holds a reference to it (and through it to the
 * configuration).  Slots are filled the first time a request needs them,
 * from any thread. */
typedef struct aigw_resolved aigw_resolved;

/* NULL when out of memory.  Holds a reference to cfg; h must outlive it. */
aigw_resolved *aigw__resolved_new(aigw_config *cfg, aigw_health *h);
aigw_resolved *aigw__resolved_ref(aigw_resolved *r);
void aigw__resolved_unref(aigw_resolved *r); /* NULL-safe */
const aigw_config *aigw__resolved_config(const aigw_resolved *r);
/* Where aigw__resolve_model_in may remember a "provider:" prefix (NULL
 * when the configuration's ids do not allow it, or r is NULL). */
_Atomic(const aigw_provider *) *aigw__resolved_prefix_memo(aigw_resolved *r);
/* The provider p of its configuration (NULL: the ngrok gateway) whose URL
 * is url.  With r NULL (or p of another configuration) each is found
 * without remembering. */
/* Whether the URL has a path: 1, 0, or -1 out of memory. */
int aigw__resolved_has_path(aigw_resolved *r, const aigw_provider *p, const char *url);
/* aigw__health_host of the URL. */
aigw_breaker *aigw__resolved_host(aigw_resolved *r, aigw_health *h, const aigw_provider *p,
                                  const char *url);
/* aigw__health_backend of (p->id, model): the last one for p, when it is. */
aigw_breaker *aigw__resolved_backend(aigw_resolved *r, aigw_health *h, const aigw_provider *p,
                                     const char *model);
/* aigw__health_key of (p->id, id, value, origin) for the configuration's
 * key at `at` (its aigw_pkey or aigw_step_key; NULL for the ngrok key and
 * a key-less call, which are remembered per provider). */
aigw_hkey *aigw__resolved_key(aigw_resolved *r, aigw_health *h, const aigw_provider *p,
                              const void *at, const char *id, const aigw_secret *value,
                              aigw_key_origin origin);

typedef struct aigw_engine_env {
    const aigw_config *cfg;       /* held by the caller for the request */
    aigw_resolved *resolved;      /* cfg as this client resolved it; NULL: none */
    aigw_health *health;
    const aigw_transport *transport;
    void *transport_ud;
    const aigw_strategy *strategy; /* NULL: each step's own */
    void *strategy_ud;
    const aigw_clock *clock;       /* NULL: the system's monotonic clock */
    void *clock_ud;
} aigw_engine_env;

/* One request (sh NULL: a whole answer; else streamed to sh). */
aigw_status aigw__engine_send(const aigw_engine_env *env, const aigw_request *req,
                              const aigw_stream_handler *sh, void *sud, aigw_response **out,
                              aigw_error **err);

#endif
