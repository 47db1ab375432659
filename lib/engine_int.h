/*
 * engine_int.h - what the engine's files share: one request's run, its
 * candidates, the keys of a step, and where one attempt goes.
 *   engine.c   the attempt loop: candidates -> steps -> keys, the policy
 *              table read at each failure, what health learns
 *   upstream.c building the upstream request; handing its answer over
 *   stream.c   one streamed attempt: the commit point, breaks, restarts
 *   answer.c   the library's own answers (rejected, exhausted, timed out)
 * Never installed.
 */
#ifndef AIGW_ENGINE_INT_H
#define AIGW_ENGINE_INT_H

#include "engine.h"
#include "health.h"
#include "policy.h"
#include "response.h"

typedef struct cand {
    const aigw_provider *prov;
    const char *model;    /* the provider's model id: in the request's spec */
    const char *upstream; /* the id sent upstream (providerModelId), borrowed */
} cand;

/* One key of a step as the loop sees it. */
typedef struct key_ref {
    const char *id;
    const aigw_secret *secret; /* NULL: send without credentials */
    aigw_hkey *hk;             /* its health; NULL: untracked */
    aigw_endpoint *ep;         /* its health with the candidate's model;
                                  NULL until there is something to record */
} key_ref;

/* The body of a candidate for one key source: the caller's own bytes when
 * the rewrite would not change them, else the rewrite (in room when it
 * fits there, else own). */
typedef struct cand_body {
    const char *data; /* NULL until made */
    size_t len;
    aigw_buf own;
    char *room;       /* the caller's (a stack buffer of run_cand) */
    size_t room_size;
} cand_body;

/* Where one attempt goes. */
typedef struct slot {
    const cand *cd;
    int step;            /* the step (0-based); -1 an implicit one */
    bool ngrok;          /* through ngrok's gateway with the ngrok key */
    key_ref *key;         /* the walk's: report() fills in key->ep */
    const cand_body *body; /* the body for this candidate and key source */
} slot;

/* Why a request ended before an answer was served. */
typedef enum end_reason {
    END_NONE = 0,
    END_TIMED_OUT,    /* totalTimeout */
    END_MAX_ATTEMPTS, /* maxAttempts */
    END_BUDGET,       /* the retry budget refused a retry */
    END_CANCELLED     /* the caller fired the request's cancel token */
} end_reason;

/* A (provider, upstream model) banned for the rest of the request. */
typedef struct model_ban {
    const aigw_provider *prov;
    const char *upstream; /* borrowed from a candidate */
} model_ban;

typedef struct run {
    const aigw_engine_env *env;
    const aigw_config *cfg;
    const aigw_akc *akc; /* the request's access key configuration */
    aigw_health *h;
    const aigw_health_opts *ho;
    aigw_response *resp;
    const char *path;  /* the API path after "/v1", e.g. "/chat/completions" */
    const char *body;
    size_t body_len;
    const aigw_body_map *map; /* where the body's members lie */
    int64_t deadline;
    cand *cands;       /* cands_inline when they fit */
    size_t n_cands;
    size_t cur_cand;   /* the candidate being tried */
    model_ban *bans;   /* context length exceeded; bans_inline when they fit */
    size_t n_bans;
    cand cands_inline[4];
    model_ban bans_inline[4];
    const aigw_cancel *cancel;     /* the caller's token; NULL none */
    const aigw_stream_handler *sh; /* streaming: where the answer goes */
    void *sud;
    bool restart;      /* streaming: restart a broken committed stream */
    bool done;         /* the answer is in resp */
    end_reason end;
    bool budget_capped; /* the last attempt got only what was left of totalTimeout */
    /* What the request met, for the library's own answer. */
    int attempts_by_class[AIGW_CLASS__COUNT];
    int skips_by_reason[AIGW_SKIP__COUNT];
    int quota_bench_skips; /* key_benched skips for a quota failure */
    int64_t min_wait;      /* shortest wait an upstream asked for; -1 none */
    int64_t open_wait;     /* shortest wait of the open circuits skipped; -1 */
    int64_t pass_cool_wait; /* this pass: the shortest cooling wait skipped; -1 */
} run;

/* The moves of the loop, from the policy's rows and the loop's own ends. */
typedef enum move {
    MV_SERVE,
    MV_FAIL_FAST,
    MV_NEXT_KEY,
    MV_RETRY,
    MV_NEXT_STEP,
    MV_NEXT_CAND,
    MV_RESTART, /* streaming: a committed stream broke; the next model anew */
    MV_END      /* streaming: the request ended (stream failed, cancelled) */
} move;

int64_t aigw__run_now(const run *r);
/* Whether the caller fired the request's cancel token (then r->end is set
 * to END_CANCELLED). */
bool aigw__run_cancelled(run *r);

/* upstream.c */
/* The upstream request of one attempt, in storage of its own: the URL and
 * the "Bearer" header's value here when they fit, allocated past that;
 * other header values are static or the key's own. */
#define BUILT_INLINE 256
#define BUILT_MAX_HEADERS 5
typedef struct built_req {
    char url_inline[BUILT_INLINE];
    char *url_heap;
    char auth_inline[BUILT_INLINE];
    char *auth_heap;
    size_t auth_len; /* the "Bearer ..." value's bytes: wiped */
    aigw_header hv[BUILT_MAX_HEADERS];
    aigw_transport_request req;
} built_req;
/* The body of a candidate for user or ngrok keys (model rewritten). */
int aigw__build_body(const run *r, const cand *cd, bool ngrok, cand_body *out);
void aigw__cand_body_free(cand_body *b);
/* The upstream request of one attempt; free with aigw__req_free.  Sets
 * r->budget_capped when totalTimeout cuts the attempt's time. */
int aigw__build_req(run *r, const slot *s, built_req *b);
void aigw__req_free(built_req *b);
/* Sends one whole attempt.  0, or -1 when out of memory. */
int aigw__send_once(run *r, const slot *s, aigw_transport_response *t,
                    aigw_transport_result *tr);
/* aigw__build_req and aigw__send_once with the client's clock as read by
 * the caller (now), with nothing but work since: one reading fewer. */
int aigw__build_req_at(run *r, const slot *s, built_req *b, int64_t now);
int aigw__send_once_at(run *r, const slot *s, aigw_transport_response *t,
                       aigw_transport_result *tr, int64_t now);
void aigw__tres_free(aigw_transport_response *t);
/* The upstream's end-to-end headers, for the caller's response. */
int aigw__copy_headers(aigw_hdrs *dst, const aigw_hdrs *src);
/* The same, moved: src is left empty (0), or as it was (-1, no memory).
 * end_to_end: src is known to hold no hop-by-hop header. */
int aigw__move_headers(aigw_hdrs *dst, aigw_hdrs *src, bool end_to_end);
/* What stands in for the key's value wherever an answer echoed it. */
#define AIGW_REDACTED "[REDACTED]"
/* The first copy of key (klen bytes) in the len bytes at p, or NULL: what
 * memmem finds, found mostly by memchr on a rare-looking byte of the key. */
const char *aigw__secret_find(const char *p, size_t len, const char *key, size_t klen);
/* Replaces each header value that holds the secret with AIGW_REDACTED. */
int aigw__scrub_headers(aigw_hdrs *h, const aigw_secret *s);
/* Hands the upstream answer to the caller (secrets scrubbed). */
int aigw__take_upstream_answer(run *r, aigw_transport_response *t, const key_ref *key,
                               aigw_outcome oc);

/* stream.c: one streamed attempt; fills the attempt's record.  Returns the
 * move when it is already decided (MV_SERVE, MV_RESTART, MV_END), -2 with
 * a->cls, *wait and the held-back body in t->body for the policy, or -1
 * when out of memory. */
int aigw__stream_once(run *r, const slot *s, aigw_transport_response *t, aigw_attempt *a,
                      int64_t *wait);

/* What one streamed event's data says, for the commit point and the end. */
typedef struct aigw_event_facts {
    bool error;        /* an in-band error (nothing else is then read) */
    bool content;      /* content: the commit point */
    bool done;         /* the API's own end event */
    bool stop;         /* a finish reason outside chat choices (message_delta) */
    uint64_t seen;     /* chat choice indexes (< 64; others count as 0) ... */
    uint64_t finished; /* ... and those with a finish_reason */
} aigw_event_facts;

/* Reads one event's data without allocating (but for a choice index of 64
 * characters or more): 0 and *f (nothing set when it is JSON but not an
 * object); 1 when cJSON would not parse it (*f cleared); -1 out of memory.
 * What it reads is what the cJSON tree of it would say. */
int aigw__stream_event_read(const char *data, size_t len, aigw_event_facts *f);
/* The same for the events of one stream in turn: m keeps where the last
 * one's reading may resume, so the bytes an event shares with the one
 * before are not read again (the facts are the same). */
typedef struct aigw_event_memo aigw_event_memo;
int aigw__stream_event_read_memo(aigw_event_memo *m, const char *data, size_t len,
                                 aigw_event_facts *f);
aigw_event_memo *aigw__event_memo_new(void);
/* Test hook, in builds with AIGW_ALLOC_HOOKS (a no-op returning 0
 * elsewhere): replay (stream.c) on (on 1) or off (0, every event through the
 * parser) from now on, or as it is (-1); returns the events it has read
 * since the start. */
long aigw__stream_replay(int on);
void aigw__event_memo_free(aigw_event_memo *m);

/* answer.c */
/* The request ended without a served or fail-fast answer. */
int aigw__finish_unserved(run *r);
/* The primary model cannot be served (why: -1 unknown, -3 not allowed). */
int aigw__reject(run *r, const char *spec, int why);

#endif
