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

typedef struct aigw_engine_env {
    const aigw_config *cfg;       /* held by the caller for the request */
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
