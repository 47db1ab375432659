/*
 * policy.h - the failover policy as data.
 *
 * What one failure class means is written down once, as one row of
 * aigw__policy[]: the move it makes within the request, whether a
 * same-backend wait may follow it, whether the attempt after it is a retry
 * paid from the retry budget, what the circuit breakers hear, and where the
 * client remembers it for later requests.  The engine reads the rows; it
 * holds no per-class decisions of its own.  The README's policy table is
 * generated from the same rows (aigw__policy_markdown), and a test checks
 * the two are the same.
 *
 * Also here: the verdicts an attempt is given and the reasons a skip is
 * recorded for, each an enum with one name table.  Never installed.
 */
#ifndef AIGW_POLICY_H
#define AIGW_POLICY_H

#include "internal.h"

/* The move a failure makes within the request. */
typedef enum aigw_move_kind {
    AIGW_MOVE_SERVE = 0,  /* success: the answer is the caller's              */
    AIGW_MOVE_NEXT_KEY,   /* the step's next ready key, at once; with none
                             left, a same-backend wait (when the row allows
                             one), then the next step                        */
    AIGW_MOVE_NEXT_STEP,  /* host-level: the step's other keys share the
                             host, so they are skipped                       */
    AIGW_MOVE_NEXT_MODEL, /* the next candidate; this (provider, upstream
                             model) is not tried again in the request        */
    AIGW_MOVE_FAIL_FAST,  /* rejected on its merits: the upstream answer is
                             the caller's as it is                           */
    AIGW_MOVE__COUNT
} aigw_move_kind;

/* Whether a same-backend retry may wait for the failed key. */
typedef enum aigw_wait_rule {
    AIGW_WAIT_NEVER = 0, /* never retried on the same backend               */
    AIGW_WAIT_ASKED,     /* only for a wait the upstream named               */
    AIGW_WAIT_BACKOFF,   /* the named wait, else a jittered back-off        */
    AIGW_WAIT__COUNT
} aigw_wait_rule;

/* What a circuit breaker hears of an attempt. */
typedef enum aigw_hear {
    AIGW_HEAR_SUCCESS = 0,     /* it served: closes, resets the count       */
    AIGW_HEAR_FAILURE,         /* counts toward opening; a failed probe
                                  re-opens                                   */
    AIGW_HEAR_NEUTRAL,         /* it answered, but the answer says nothing of
                                  its health: closes a half-open breaker     */
    AIGW_HEAR_ABANDON,         /* no verdict (cancelled): a probe is released */
    AIGW_HEAR_FAILURE_IF_ANSWERED, /* table only: a failure when an HTTP answer
                                  came (a 408; a stream cut after its 200),
                                  else neutral                               */
    AIGW_HEAR__COUNT
} aigw_hear;

/* Where a failure is remembered across requests. */
typedef enum aigw_remember {
    AIGW_REMEMBER_NOTHING = 0,
    AIGW_REMEMBER_COOL_ENDPOINT, /* the (provider, key, upstream model) cools
                                    for the wait the upstream named, else
                                    keyCooldown                              */
    AIGW_REMEMBER_BENCH_KEY,     /* the key (every model) is benched for
                                    keyBenchTime                             */
    AIGW_REMEMBER_BAN_MODEL,     /* (provider, upstream model) is not tried
                                    again in this request                     */
    AIGW_REMEMBER__COUNT
} aigw_remember;

/* The verdict of an attempt: ngrok's retryAction names. */
typedef enum aigw_verdict {
    AIGW_VERDICT_NONE = 0, /* not decided (a cancelled attempt) */
    AIGW_VERDICT_SUCCEEDED,
    AIGW_VERDICT_NEXT_KEY,
    AIGW_VERDICT_NEXT_QUOTA_POOL,
    AIGW_VERDICT_NEXT_BACKEND,
    AIGW_VERDICT_MANAGED_FALLBACK,
    AIGW_VERDICT_RETRY_SAME_BACKEND,
    AIGW_VERDICT_FAIL_FAST,
    AIGW_VERDICT_EXHAUSTED,
    AIGW_VERDICT__COUNT
} aigw_verdict;

/* Why a candidate, step or key was passed over without an upstream call. */
typedef enum aigw_skip_reason {
    AIGW_SKIP_UNKNOWN_MODEL = 0,
    AIGW_SKIP_MODEL_NOT_ALLOWED,
    AIGW_SKIP_DUPLICATE_CANDIDATE,
    AIGW_SKIP_CONTEXT_LENGTH_EXCEEDED,
    AIGW_SKIP_NO_NGROK_ACCESS_KEY,
    AIGW_SKIP_KEY_COOLING,
    AIGW_SKIP_KEY_BENCHED,
    AIGW_SKIP_CIRCUIT_OPEN,      /* a key's endpoint (key id set), or every
                                    endpoint of the candidate (key id "")    */
    AIGW_SKIP_HOST_CIRCUIT_OPEN,
    AIGW_SKIP__COUNT
} aigw_skip_reason;

/* One row of the policy. */
typedef struct aigw_policy_row {
    const char *answers;    /* what the upstream said (documentation)     */
    aigw_move_kind move;
    aigw_verdict verdict;   /* the verdict of that move                   */
    aigw_wait_rule wait;
    bool retry;             /* the attempt after it is a retry (budget)   */
    aigw_hear endpoint;     /* what the (key, model) endpoint's breaker hears */
    aigw_hear host;         /* what the host's breaker hears when no HTTP
                               answer came (any answer: success)          */
    aigw_remember remember;
} aigw_policy_row;

extern const aigw_policy_row aigw__policy[AIGW_CLASS__COUNT];

/* The row of a class (the success row for one out of range). */
const aigw_policy_row *aigw__policy_row(aigw_class c);
/* What the endpoint's and the host's breakers hear of an attempt of class
 * c; answered: an HTTP status came back (for a stream, its headers, even
 * when no token followed).  An endpoint that did not answer and whose row
 * holds nothing against it hears ABANDON: no verdict. */
aigw_hear aigw__policy_endpoint_hears(aigw_class c, bool answered);
aigw_hear aigw__policy_host_hears(aigw_class c, bool answered);
/* A failure of one key (cooled or benched), not of the backend or host. */
bool aigw__policy_key_failure(aigw_class c);

const char *aigw__verdict_name(aigw_verdict v);  /* NULL for NONE */
const char *aigw__skip_reason_name(aigw_skip_reason r);

/* The policy table as Markdown (allocated; NULL when out of memory): the
 * README's table is this text. */
char *aigw__policy_markdown(void);

#endif
