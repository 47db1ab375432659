/*
 * breaker.c - one circuit breaker: closed, open, half-open with exactly one
 * probe.  An endpoint's (a key with a model), a host's; a backend's only
 * counts.  State changes under a small mutex of the breaker's own; a closed
 * breaker admits with a single atomic load.
 */
#include "health_int.h"

enum { BR_CLOSED = 0, BR_OPEN = 1 };

void aigw__breaker_init(aigw_breaker *b)
{
    pthread_mutex_init(&b->mu, NULL);
    atomic_init(&b->state, BR_CLOSED);
    atomic_init(&b->consecutive, 0);
    atomic_init(&b->reopen_at, AIGW_NONE_MS);
    atomic_init(&b->probe_out, false);
    atomic_init(&b->probe_at, AIGW_NONE_MS);
    atomic_init(&b->reason, AIGW_CLASS_NONE);
    aigw__counters_init(&b->c);
}

void aigw__breaker_destroy(aigw_breaker *b)
{
    pthread_mutex_destroy(&b->mu);
}

/* Under the mutex. */
static void set_closed(aigw_breaker *b)
{
    atomic_store(&b->consecutive, 0);
    atomic_store(&b->probe_out, false);
    atomic_store(&b->reason, AIGW_CLASS_NONE);
    atomic_store(&b->state, BR_CLOSED);
}

void aigw__breaker_close(aigw_breaker *b)
{
    pthread_mutex_lock(&b->mu);
    set_closed(b);
    pthread_mutex_unlock(&b->mu);
}

/* Under the mutex: what admission would say, and whether it takes the
 * probe. */
static aigw_admit judge(aigw_breaker *b, const aigw_health_opts *o, int64_t now,
                        int64_t *wait_ms)
{
    int64_t reopen = atomic_load(&b->reopen_at);
    *wait_ms = 0;
    if (atomic_load(&b->state) == BR_CLOSED)
        return AIGW_ADMIT_GO;
    if (now < reopen) {
        *wait_ms = reopen - now;
        return AIGW_ADMIT_OPEN;
    }
    if (atomic_load(&b->probe_out) &&
        now < atomic_load(&b->probe_at) + o->breaker_cooloff_ms + o->probe_timeout_ms) {
        /* the probe is out and decides within about a cool-off: that is
         * the wait to name (never "retry now") */
        *wait_ms = o->breaker_cooloff_ms;
        return AIGW_ADMIT_OPEN;
    }
    return AIGW_ADMIT_PROBE;
}

aigw_admit aigw__breaker_admit(aigw_breaker *b, const aigw_health_opts *o, int64_t now,
                               int64_t *wait_ms)
{
    aigw_admit a;
    int64_t w = 0;
    if (wait_ms)
        *wait_ms = 0;
    if (!b || !o || o->breaker_threshold <= 0)
        return AIGW_ADMIT_GO;
    if (atomic_load_explicit(&b->state, memory_order_acquire) == BR_CLOSED)
        return AIGW_ADMIT_GO;
    pthread_mutex_lock(&b->mu);
    a = judge(b, o, now, &w);
    if (a == AIGW_ADMIT_PROBE) {
        atomic_store(&b->probe_out, true);
        atomic_store(&b->probe_at, now);
    }
    pthread_mutex_unlock(&b->mu);
    if (wait_ms)
        *wait_ms = w;
    return a;
}

bool aigw__breaker_would_admit(aigw_breaker *b, const aigw_health_opts *o, int64_t now)
{
    aigw_admit a;
    int64_t w;
    if (!b || !o || o->breaker_threshold <= 0 ||
        atomic_load_explicit(&b->state, memory_order_acquire) == BR_CLOSED)
        return true;
    pthread_mutex_lock(&b->mu);
    a = judge(b, o, now, &w);
    pthread_mutex_unlock(&b->mu);
    return a != AIGW_ADMIT_OPEN;
}

/* Under the mutex. */
static void set_open(aigw_breaker *b, const aigw_health_opts *o, aigw_class cls, int64_t now)
{
    atomic_store(&b->reopen_at, now + o->breaker_cooloff_ms);
    atomic_store(&b->probe_out, false);
    atomic_store(&b->consecutive, 0);
    atomic_store(&b->reason, (int)cls);
    atomic_store_explicit(&b->state, BR_OPEN, memory_order_release);
}

static void probe_report(aigw_breaker *b, const aigw_health_opts *o, aigw_hear v,
                         aigw_class cls, int64_t now)
{
    pthread_mutex_lock(&b->mu);
    switch (v) {
    case AIGW_HEAR_SUCCESS:
    case AIGW_HEAR_NEUTRAL:
        set_closed(b);
        break;
    case AIGW_HEAR_FAILURE:
        set_open(b, o, cls, now);
        break;
    default: /* abandoned: another may probe at once */
        atomic_store(&b->probe_out, false);
        break;
    }
    pthread_mutex_unlock(&b->mu);
}

void aigw__breaker_report(aigw_breaker *b, const aigw_health_opts *o, aigw_hear v, bool probe,
                          aigw_class cls, int64_t latency_ms, int64_t now)
{
    bool success = v == AIGW_HEAR_SUCCESS;
    bool failure = v == AIGW_HEAR_FAILURE || (!success && cls != AIGW_CLASS_NONE);
    if (!b)
        return;
    aigw__counters_add(&b->c, success, failure, cls, latency_ms);
    if (!o || o->breaker_threshold <= 0)
        return;
    if (probe) {
        probe_report(b, o, v, cls, now);
        return;
    }
    if (atomic_load_explicit(&b->state, memory_order_acquire) == BR_CLOSED) {
        if (v == AIGW_HEAR_SUCCESS) {
            if (atomic_load_explicit(&b->consecutive, memory_order_relaxed) != 0)
                atomic_store(&b->consecutive, 0);
        } else if (v == AIGW_HEAR_FAILURE &&
                   atomic_fetch_add(&b->consecutive, 1) + 1 >= o->breaker_threshold) {
            pthread_mutex_lock(&b->mu);
            if (atomic_load(&b->state) == BR_CLOSED)
                set_open(b, o, cls, now);
            pthread_mutex_unlock(&b->mu);
        }
    } else if (v == AIGW_HEAR_SUCCESS) {
        /* A late success proves the backend answers: close. */
        aigw__breaker_close(b);
    }
}

void aigw__breaker_skipped(aigw_breaker *b)
{
    if (b)
        aigw__counters_skip(&b->c);
}

const char *aigw__breaker_state(aigw_breaker *b, const aigw_health_opts *o, int64_t now,
                                int64_t *wait_ms, aigw_class *reason)
{
    int64_t reopen;
    const char *state;
    *wait_ms = 0;
    *reason = AIGW_CLASS_NONE;
    if (!o || o->breaker_threshold <= 0)
        return "closed";
    pthread_mutex_lock(&b->mu);
    reopen = atomic_load(&b->reopen_at);
    if (atomic_load(&b->state) == BR_CLOSED) {
        state = "closed";
    } else {
        *reason = (aigw_class)atomic_load(&b->reason);
        if (now < reopen && !atomic_load(&b->probe_out)) {
            state = "open";
            *wait_ms = reopen - now;
        } else {
            state = "half_open";
        }
    }
    pthread_mutex_unlock(&b->mu);
    return state;
}
