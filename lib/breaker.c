/*
 * breaker.c - one circuit breaker: closed, open, half-open with exactly one
 * probe.  An endpoint's (a key with a model), a host's; a backend's only
 * counts.  State changes under a small mutex of the breaker's own; a closed
 * breaker admits with a single atomic load.
 *
 * With a health store, an endpoint's or a host's breaker is shared: opening
 * writes "open <class> <window>" with an expiry of the cool-off plus the
 * window (the half-open time); the probe is claimed in the store, so one
 * client of the fleet probes per cool-off; the probe's answer closes (the
 * fact deleted) or reopens it.  What the store holds is applied when the
 * client reads it (aigw__breaker_apply).  Store calls are made outside the
 * mutex.
 */
#include "health_int.h"

#include <string.h>

enum { BR_CLOSED = 0, BR_OPEN = 1 };

static void set_closed(aigw_breaker *b, int64_t now);

void aigw__breaker_init(aigw_breaker *b)
{
    pthread_mutex_init(&b->mu, NULL);
    atomic_init(&b->state, BR_CLOSED);
    atomic_init(&b->consecutive, 0);
    atomic_init(&b->reopen_at, AIGW_NONE_MS);
    atomic_init(&b->probe_out, false);
    atomic_init(&b->probe_at, AIGW_NONE_MS);
    atomic_init(&b->reason, AIGW_CLASS_NONE);
    atomic_init(&b->opened_at, AIGW_NONE_MS);
    atomic_init(&b->closed_at, AIGW_NONE_MS);
    atomic_init(&b->synced_at, AIGW_NONE_MS);
    atomic_init(&b->probe_shared, false);
    b->st = NULL;
    b->kind = 0;
    b->fid = 0;
    aigw__counters_init(&b->c);
}

void aigw__breaker_share(aigw_breaker *b, aigw_store *st, char kind, uint64_t fid)
{
    b->st = st;
    b->kind = kind;
    b->fid = fid;
}

void aigw__breaker_names(const aigw_breaker *b, char open[24], char probe[24])
{
    aigw__store_name(open, b->kind, b->fid);
    aigw__store_name(probe, b->kind == 'o' ? 'p' : 'q', b->fid);
}

static bool shared(const aigw_breaker *b)
{
    return b->kind && b->st && b->st->on;
}

/* The half-open time a shared open fact ends with: a probe's longest life. */
static int64_t window(const aigw_health_opts *o)
{
    return o->breaker_cooloff_ms + o->probe_timeout_ms;
}

/* Tells the store the breaker opened (cls) or closed (cls NONE); a probe
 * this client claimed is let go. */
static void publish(aigw_breaker *b, const aigw_health_opts *o, bool open, aigw_class cls,
                    bool release_probe, int64_t now)
{
    char on[24], pn[24];
    aigw_store_entry e[2];
    size_t n = 1;
    if (!shared(b) || !aigw__store_usable(b->st, now))
        return;
    aigw__breaker_names(b, on, pn);
    if (open) {
        aigw__fact_entry(&e[0], on, b->st, AIGW_FACT_OPEN, cls, window(o),
                         o->breaker_cooloff_ms + window(o));
    } else {
        memset(&e[0], 0, sizeof e[0]); /* deleted, whatever it holds */
        e[0].name = on;
    }
    if (release_probe) {
        /* let go of the probe, after the open fact is written (one
         * pipeline, in order): a client that claims it next finds the new
         * cool-off when it checks (check_half_open) */
        aigw__fact_entry(&e[1], pn, b->st, AIGW_FACT_PROBE, AIGW_CLASS_NONE, 0, 0);
        n = 2;
    }
    aigw__store_put(b->st, e, n, now);
}

/* Lets go of the probe this client claimed (if it still holds it). */
static void release(aigw_breaker *b, int64_t now)
{
    char on[24], pn[24];
    aigw_store_entry e;
    aigw__breaker_names(b, on, pn);
    aigw__fact_entry(&e, pn, b->st, AIGW_FACT_PROBE, AIGW_CLASS_NONE, 0, 0);
    aigw__store_put(b->st, &e, 1, now);
}

/* Another client has the probe, or reopened the breaker: open for this
 * one for wait ms (the store is read again meanwhile). */
static aigw_admit stay_open(aigw_breaker *b, int64_t now, int64_t wait, int64_t *wait_ms)
{
    if (wait < 1)
        wait = 1;
    *wait_ms = wait;
    pthread_mutex_lock(&b->mu);
    atomic_store(&b->probe_out, false);
    if (atomic_load(&b->reopen_at) < now + wait)
        atomic_store(&b->reopen_at, now + wait);
    pthread_mutex_unlock(&b->mu);
    return AIGW_ADMIT_OPEN;
}

/* The probe was claimed: is the breaker still half-open in the store?  A
 * client that had not read a reopening (another's probe failed just
 * before) must not probe in the new cool-off; one that had not read a
 * closing goes as a plain request. */
static aigw_admit check_half_open(aigw_breaker *b, const aigw_health_opts *o, int64_t now,
                                  int64_t *wait_ms)
{
    char on[24], pn[24];
    aigw_store_entry e;
    aigw_fact f;
    aigw__breaker_names(b, on, pn);
    memset(&e, 0, sizeof e);
    e.name = on;
    if (aigw__store_get(b->st, &e, 1, now) != 0)
        return AIGW_ADMIT_PROBE;
    if (e.ttl_ms == AIGW_STORE_ABSENT) { /* closed by another's probe */
        release(b, now);
        pthread_mutex_lock(&b->mu);
        atomic_store(&b->probe_shared, false);
        set_closed(b, now);
        pthread_mutex_unlock(&b->mu);
        return AIGW_ADMIT_GO;
    }
    if (e.ttl_ms >= 0 && aigw__fact_parse(b->st, e.value, &f) == 0 &&
        f.kind == AIGW_FACT_OPEN && e.ttl_ms > f.window) {
        int64_t left = e.ttl_ms - f.window;
        release(b, now);
        atomic_store(&b->probe_shared, false);
        return stay_open(b, now, left < o->breaker_cooloff_ms ? left : o->breaker_cooloff_ms,
                         wait_ms);
    }
    return AIGW_ADMIT_PROBE;
}

/* Claims the probe in the store for a client whose breaker is half-open:
 * AIGW_ADMIT_PROBE (this request probes), AIGW_ADMIT_GO (closed meanwhile)
 * or AIGW_ADMIT_OPEN (another probes, or it reopened). */
static aigw_admit claim_probe(aigw_breaker *b, const aigw_health_opts *o, int64_t now,
                              int64_t *wait_ms)
{
    char on[24], pn[24];
    aigw_store_entry e;
    aigw_fact f;
    int rc;
    aigw__breaker_names(b, on, pn);
    aigw__fact_entry(&e, pn, b->st, AIGW_FACT_PROBE, AIGW_CLASS_NONE, 0, window(o));
    rc = aigw__store_claim(b->st, &e, now);
    if (rc < 0)
        return AIGW_ADMIT_PROBE; /* on its own: the local probe goes */
    if (rc == 1) {
        atomic_store(&b->probe_shared, true);
        return check_half_open(b, o, now, wait_ms);
    }
    if (e.ttl_ms == AIGW_STORE_ABSENT)
        return AIGW_ADMIT_PROBE; /* let go meanwhile: nobody probes */
    if (e.ttl_ms < 0 || aigw__fact_parse(b->st, e.value, &f) != 0 || f.kind != AIGW_FACT_PROBE) {
        /* not a probe: written over */
        aigw__fact_entry(&e, pn, b->st, AIGW_FACT_PROBE, AIGW_CLASS_NONE, 0, window(o));
        if (aigw__store_put(b->st, &e, 1, now) == 0) {
            atomic_store(&b->probe_shared, true);
            return check_half_open(b, o, now, wait_ms);
        }
        return AIGW_ADMIT_PROBE;
    }
    if (f.ours) {
        atomic_store(&b->probe_shared, true);
        return AIGW_ADMIT_PROBE;
    }
    /* another client probes: open for us until its answer is read */
    return stay_open(b, now, e.ttl_ms < b->st->sync_ms ? e.ttl_ms : b->st->sync_ms, wait_ms);
}

void aigw__breaker_apply(aigw_breaker *b, const aigw_health_opts *o, const aigw_store_entry *e,
                         int64_t fetch_start, int64_t now)
{
    aigw_fact f;
    int64_t ttl, left;
    if (!o || o->breaker_threshold <= 0)
        return;
    if (e->ttl_ms == AIGW_STORE_ABSENT) {
        /* closed in the store: closed here, unless it opened here since
         * the store was read or this client's probe is out */
        if (atomic_load(&b->state) == BR_CLOSED)
            return;
        pthread_mutex_lock(&b->mu);
        if (atomic_load(&b->state) != BR_CLOSED && atomic_load(&b->opened_at) < fetch_start &&
            !atomic_load(&b->probe_out))
            set_closed(b, now);
        pthread_mutex_unlock(&b->mu);
        return;
    }
    if (e->ttl_ms < 0) {
        atomic_fetch_add(&b->st->ignored, 1);
        return;
    }
    if (aigw__fact_parse(b->st, e->value, &f) != 0 || f.kind != AIGW_FACT_OPEN)
        return;
    if (atomic_load(&b->closed_at) >= fetch_start)
        return; /* read before this client closed it (its probe answered) */
    ttl = e->ttl_ms;
    left = ttl > f.window ? ttl - f.window : 0;
    if (left > o->breaker_cooloff_ms) /* never trusted past what this client would do */
        left = o->breaker_cooloff_ms;
    pthread_mutex_lock(&b->mu);
    if (!atomic_load(&b->probe_out) &&
        (atomic_load(&b->state) == BR_CLOSED || atomic_load(&b->reopen_at) < now + left)) {
        atomic_store(&b->reopen_at, now + left);
        atomic_store(&b->consecutive, 0);
        atomic_store(&b->reason, (int)f.cls);
        if (atomic_load(&b->state) == BR_CLOSED)
            atomic_store(&b->opened_at, now);
        atomic_store_explicit(&b->state, BR_OPEN, memory_order_release);
    }
    pthread_mutex_unlock(&b->mu);
}

void aigw__breaker_destroy(aigw_breaker *b)
{
    pthread_mutex_destroy(&b->mu);
}

/* Under the mutex. */
static void set_closed(aigw_breaker *b, int64_t now)
{
    atomic_store(&b->closed_at, now);
    atomic_store(&b->consecutive, 0);
    atomic_store(&b->probe_out, false);
    atomic_store(&b->reason, AIGW_CLASS_NONE);
    atomic_store(&b->state, BR_CLOSED);
}

void aigw__breaker_close(aigw_breaker *b, int64_t now)
{
    pthread_mutex_lock(&b->mu);
    set_closed(b, now);
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
        atomic_store(&b->probe_shared, false);
    }
    pthread_mutex_unlock(&b->mu);
    if (a == AIGW_ADMIT_PROBE && shared(b))
        a = claim_probe(b, o, now, &w);
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
    atomic_store(&b->opened_at, now);
    atomic_store(&b->reopen_at, now + o->breaker_cooloff_ms);
    atomic_store(&b->probe_out, false);
    atomic_store(&b->consecutive, 0);
    atomic_store(&b->reason, (int)cls);
    atomic_store_explicit(&b->state, BR_OPEN, memory_order_release);
}

static void probe_report(aigw_breaker *b, const aigw_health_opts *o, aigw_hear v,
                         aigw_class cls, int64_t now)
{
    bool claimed;
    pthread_mutex_lock(&b->mu);
    claimed = atomic_exchange(&b->probe_shared, false);
    switch (v) {
    case AIGW_HEAR_SUCCESS:
    case AIGW_HEAR_NEUTRAL:
        set_closed(b, now);
        break;
    case AIGW_HEAR_FAILURE:
        set_open(b, o, cls, now);
        break;
    default: /* abandoned: another may probe at once */
        atomic_store(&b->probe_out, false);
        break;
    }
    pthread_mutex_unlock(&b->mu);
    if (v == AIGW_HEAR_FAILURE)
        publish(b, o, true, cls, claimed, now);
    else if (v == AIGW_HEAR_SUCCESS || v == AIGW_HEAR_NEUTRAL)
        publish(b, o, false, AIGW_CLASS_NONE, claimed, now);
    else if (claimed)
        release(b, now);
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
            bool opened = false;
            pthread_mutex_lock(&b->mu);
            if (atomic_load(&b->state) == BR_CLOSED) {
                set_open(b, o, cls, now);
                opened = true;
            }
            pthread_mutex_unlock(&b->mu);
            if (opened)
                publish(b, o, true, cls, false, now);
        }
    } else if (v == AIGW_HEAR_SUCCESS) {
        /* A late success proves the backend answers: close. */
        aigw__breaker_close(b, now);
        publish(b, o, false, AIGW_CLASS_NONE, false, now);
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
