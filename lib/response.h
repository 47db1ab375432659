/* response.h - the answer of one request and the record of its attempts
 * and skips, as the engine fills them and the getters of aigw.h read them.
 * Never installed. */
#ifndef AIGW_RESPONSE_H
#define AIGW_RESPONSE_H

#include "internal.h"
#include "policy.h"

struct aigw_attempt {
    int number;
    const char *provider; /* in the response's arena */
    const char *model;
    int step;
    const char *key_id;
    const char *key_source; /* static */
    int status;
    aigw_transport_result tr;
    aigw_class cls;
    bool answered;   /* an HTTP status came back (a stream: its headers),
                        whatever followed; status may still be 0 */
    aigw_verdict verdict;
    bool served;
    int64_t duration_ms;
    int64_t requested_wait_ms;
    int64_t waited_ms;
    const char *completion; /* static; NULL: derived from served/cls */
    int64_t first_byte_ms;  /* streams; -1 none */
    int64_t first_token_ms;
    long malformed_events;  /* streams: data that was not JSON, skipped */
    const char *stream_error; /* static: why a stream failed, or NULL */
    bool header_cap;  /* too_large: the header block passed its cap */
};

typedef struct aigw_skip {
    const char *provider; /* in the response's arena */
    const char *model;
    aigw_skip_reason reason;
    const char *key_id; /* "" unless a key was skipped */
    int step;        /* the step (0-based), -1 implicit or none */
    int64_t wait_ms; /* what it had left to wait; -1 unknown */
} aigw_skip;

/* The strings of a response's records, bump-allocated, freed with it. */
typedef struct aigw_chunk {
    struct aigw_chunk *next;
    size_t cap, used;
    char data[];
} aigw_chunk;

#define AIGW_RESPONSE_INLINE_ATTEMPTS 2
#define AIGW_RESPONSE_ARENA 256

struct aigw_response {
    aigw_outcome outcome;
    int status;
    aigw_hdrs headers;
    aigw_buf body;
    char request_id[32];
    char health_store[16]; /* the store that answered: "local", "redis", ... */
    const char *model;      /* in the arena */
    const char *error_code; /* static, or NULL */
    aigw_attempt *attempts; /* attempts_inline until there are more */
    size_t n_attempts;
    size_t cap_attempts;
    aigw_skip *skips;
    size_t n_skips;
    size_t cap_skips;
    /* Built on first read (most callers never ask for it): written through
     * this pointer to trace_cell, so the getter can fill it through a const
     * response. */
    char **trace_json;
    char *trace_cell;
    /* The records' strings (provider ids, models, key ids): the first
     * bytes here, then in chunks; a request's own allocations are few. */
    size_t arena_used;
    aigw_chunk *chunks;
    /* From here on, not zeroed by aigw__response_new: keep them last. */
    char arena[AIGW_RESPONSE_ARENA];
    aigw_attempt attempts_inline[AIGW_RESPONSE_INLINE_ATTEMPTS];
};

/* A new response, or a spare one (see response.c). */
aigw_response *aigw__response_new(void);
/* The header block and body buffer r kept from a spare life, into *h and
 * *b (for the transport to fill), when r has no headers or body yet and
 * h and b hold nothing; else nothing. */
void aigw__response_lend(aigw_response *r, aigw_hdrs *h, aigw_buf *b);
/* A copy of s that lives as long as r (NULL when out of memory). */
const char *aigw__response_strdup(aigw_response *r, const char *s);
aigw_attempt *aigw__response_add_attempt(aigw_response *r);
/* A skip of a candidate, step or key (key_id NULL: none) with the time it
 * had left (-1 unknown).  0, or -1 when out of memory. */
int aigw__response_add_skip(aigw_response *r, const char *provider, const char *model,
                            aigw_skip_reason reason, const char *key_id, int step,
                            int64_t wait_ms);
/* Drops the skips from index `from` on. */
void aigw__response_drop_skips(aigw_response *r, size_t from);
/* The attempt records as JSON (allocated), or NULL when out of memory. */
char *aigw__response_build_trace(const aigw_response *r);

#endif
