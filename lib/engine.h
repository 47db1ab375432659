/* engine.h - the client, request, response and attempt records, shared by
 * client.c, engine.c and response.c.  Never installed. */
#ifndef AIGW_ENGINE_H
#define AIGW_ENGINE_H

#include "health.h"
#include "internal.h"

#include <pthread.h>

struct aigw_client {
    /* The current configuration: read (and a reference taken) under
     * cfg_lock, so a hot swap never frees one a request is about to use. */
    pthread_mutex_t cfg_lock;
    aigw_config *cfg;
    aigw_health *health; /* what requests remember, shared by all of them */
    aigw_transport transport;
    void *transport_ud;
    bool has_strategy;
    aigw_strategy strategy;
    void *strategy_ud;
    bool has_clock;
    aigw_clock clock;
    void *clock_ud;
};

struct aigw_request {
    int stream_restart; /* -1: the configuration's */
    char *path;
    char *body;
    size_t body_len;
};

struct aigw_attempt {
    int number;
    char *provider;
    char *model;
    int step;
    char *key_id;
    const char *key_source; /* static */
    int status;
    aigw_transport_result tr;
    aigw_class cls;
    const char *verdict; /* static */
    bool served;
    int64_t duration_ms;
    int64_t requested_wait_ms;
    int64_t waited_ms;
    const char *completion; /* static; NULL: derived from served/cls */
    int64_t first_byte_ms;  /* streams; -1 none */
    int64_t first_token_ms;
    long malformed_events;  /* streams: data that was not JSON, skipped */
    const char *stream_error; /* static: why a stream failed, or NULL */
};

typedef struct aigw_skip {
    char *provider;
    char *model;
    char *reason;
    char *key_id;    /* "" unless a key was skipped */
    int step;        /* the step (0-based), -1 implicit or none */
    int64_t wait_ms; /* what it had left to wait; -1 unknown */
} aigw_skip;

struct aigw_response {
    aigw_outcome outcome;
    int status;
    aigw_hdrs headers;
    aigw_buf body;
    char request_id[32];
    char *model;
    const char *error_code; /* static, or NULL */
    aigw_attempt *attempts;
    size_t n_attempts;
    size_t cap_attempts;
    aigw_skip *skips;
    size_t n_skips;
    size_t cap_skips;
    /* Built on first read (most callers never ask for it): a cell of its
     * own, so the getter can fill it through a const response. */
    char **trace_json;
};

/* response.c */
aigw_response *aigw__response_new(void);
aigw_attempt *aigw__response_add_attempt(aigw_response *r);
int aigw__response_add_skip(aigw_response *r, const char *provider, const char *model,
                            const char *reason);
/* A skip of one key of a step (cooling, benched), or of a step or backend
 * (key_id NULL) with the time it had left. */
int aigw__response_add_skip_ex(aigw_response *r, const char *provider, const char *model,
                               const char *reason, const char *key_id, int step,
                               int64_t wait_ms);
/* The attempt records as JSON (allocated), or NULL when out of memory. */
char *aigw__response_build_trace(const aigw_response *r);

/* engine.c */
aigw_status aigw__engine_send(aigw_client *c, const aigw_request *req,
                              const aigw_stream_handler *sh, void *sud, aigw_response **out,
                              aigw_error **err);

/* client.c: the current configuration, with a reference the caller drops
 * (aigw_config_unref) when its request is over */
aigw_config *aigw__client_config(aigw_client *c);

/* client.c: the client's clock */
int64_t aigw__client_now(const aigw_client *c);
void aigw__client_sleep(const aigw_client *c, int64_t ms);

#endif
