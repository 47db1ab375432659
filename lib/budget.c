/*
 * budget.c - the client's retry budget (as Finagle's and Envoy's): over a
 * sliding window of ten buckets, retries may be a percentage of the
 * requests started in it plus a floor per second.  One mutex, held for a
 * few instructions, for retries and for moving to a new bucket; a request
 * started in the current bucket is counted with two atomic additions and
 * no lock, so requests on many threads do not queue on it.
 */
#include "health_int.h"

#include <string.h>

void aigw__budget_init(aigw_budget *bg)
{
    int i;
    memset(bg, 0, sizeof *bg);
    pthread_mutex_init(&bg->mu, NULL);
    for (i = 0; i < AIGW_BUDGET_BUCKETS; i++)
        bg->epoch[i] = AIGW_NONE_MS;
}

void aigw__budget_destroy(aigw_budget *bg)
{
    pthread_mutex_destroy(&bg->mu);
}

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* Under the mutex: the buckets' width, from a window.  When it changes,
 * what the old window held is carried into the bucket of now, so a new
 * configuration neither forgets the retries just spent nor counts them
 * twice; they age out with that bucket. */
static void budget_width(aigw_budget *bg, int64_t window_ms, int64_t now)
{
    int64_t width = window_ms / AIGW_BUDGET_BUCKETS, epoch;
    uint64_t req = 0, ret = 0;
    size_t i;
    if (width < 1)
        width = 1;
    if (width == bg->width)
        return;
    if (bg->width > 0) {
        epoch = floor_div(now, bg->width);
        for (i = 0; i < AIGW_BUDGET_BUCKETS; i++)
            if (bg->epoch[i] != AIGW_NONE_MS && bg->epoch[i] <= epoch &&
                epoch - bg->epoch[i] < AIGW_BUDGET_BUCKETS) {
                req += bg->requests[i];
                ret += bg->retries[i];
            }
    }
    for (i = 0; i < AIGW_BUDGET_BUCKETS; i++) {
        bg->epoch[i] = AIGW_NONE_MS;
        bg->requests[i] = bg->retries[i] = 0;
    }
    bg->width = width;
    epoch = floor_div(now, width);
    i = (size_t)(epoch - floor_div(epoch, AIGW_BUDGET_BUCKETS) * AIGW_BUDGET_BUCKETS);
    bg->epoch[i] = epoch;
    bg->requests[i] = req;
    bg->retries[i] = ret;
}

void aigw__health_configure(aigw_health *h, const aigw_health_opts *o, int64_t now)
{
    pthread_mutex_lock(&h->budget.mu);
    budget_width(&h->budget, o->budget_window_ms, now);
    pthread_mutex_unlock(&h->budget.mu);
}

/* Under the mutex.  The bucket for now, zeroed when stale.  The width is
 * the client's (aigw__health_configure), not the request's: requests still
 * running on an older configuration must not restart the window. */
static size_t budget_bucket(aigw_budget *bg, const aigw_health_opts *o, int64_t now)
{
    int64_t epoch;
    size_t i;
    if (bg->width == 0)
        budget_width(bg, o->budget_window_ms, now);
    epoch = floor_div(now, bg->width);
    i = (size_t)(epoch - floor_div(epoch, AIGW_BUDGET_BUCKETS) * AIGW_BUDGET_BUCKETS);
    if (bg->epoch[i] != epoch) {
        /* zeroed before the epoch says current: a request counted without
         * the lock (aigw__budget_request) never lands in a stale count */
        bg->requests[i] = bg->retries[i] = 0;
        bg->epoch[i] = epoch;
    }
    return i;
}

/* Under the mutex: the window's sums and the retries it allows. */
static uint64_t budget_window(const aigw_budget *bg, const aigw_health_opts *o, int64_t now,
                              uint64_t *retries)
{
    uint64_t requests = 0, allowed;
    int64_t epoch;
    size_t i;
    *retries = 0;
    if (bg->width > 0) {
        epoch = floor_div(now, bg->width);
        for (i = 0; i < AIGW_BUDGET_BUCKETS; i++) {
            if (bg->epoch[i] == AIGW_NONE_MS || bg->epoch[i] > epoch ||
                epoch - bg->epoch[i] >= AIGW_BUDGET_BUCKETS)
                continue;
            requests += bg->requests[i];
            *retries += bg->retries[i];
        }
    }
    allowed = (uint64_t)(o->budget_min_per_sec > 0 ? o->budget_min_per_sec : 0) *
              (uint64_t)(o->budget_window_ms > 0 ? o->budget_window_ms : 0) / 1000;
    allowed += (uint64_t)(o->budget_percent > 0 ? o->budget_percent : 0) * requests / 100;
    return allowed;
}

void aigw__budget_request(aigw_health *h, const aigw_health_opts *o, int64_t now)
{
    aigw_budget *bg;
    int64_t width, epoch;
    size_t i;
    if (!h || !o)
        return;
    bg = &h->budget;
    /* the common case, without the lock: the bucket of now is current */
    width = atomic_load_explicit(&bg->width, memory_order_acquire);
    if (width > 0) {
        epoch = floor_div(now, width);
        i = (size_t)(epoch - floor_div(epoch, AIGW_BUDGET_BUCKETS) * AIGW_BUDGET_BUCKETS);
        if (atomic_load_explicit(&bg->epoch[i], memory_order_acquire) == epoch) {
            atomic_fetch_add_explicit(&bg->requests[i], 1, memory_order_relaxed);
            atomic_fetch_add_explicit(&bg->total_requests, 1, memory_order_relaxed);
            return;
        }
    }
    pthread_mutex_lock(&bg->mu);
    i = budget_bucket(bg, o, now);
    bg->requests[i]++;
    bg->total_requests++;
    pthread_mutex_unlock(&bg->mu);
}

bool aigw__budget_retry(aigw_health *h, const aigw_health_opts *o, int64_t now)
{
    uint64_t retries, allowed;
    bool ok = true;
    size_t i;
    if (!h || !o)
        return true;
    pthread_mutex_lock(&h->budget.mu);
    i = budget_bucket(&h->budget, o, now);
    if (o->budget_on) {
        allowed = budget_window(&h->budget, o, now, &retries);
        ok = retries < allowed;
    }
    if (ok) {
        h->budget.retries[i]++;
        h->budget.total_retries++;
    } else {
        h->budget.total_denied++;
    }
    pthread_mutex_unlock(&h->budget.mu);
    return ok;
}


void aigw__budget_figures(aigw_budget *bg, const aigw_health_opts *o, int64_t now,
                          uint64_t *requests, uint64_t *retries, uint64_t *denied,
                          int64_t *available)
{
    uint64_t in_window, allowed;
    pthread_mutex_lock(&bg->mu);
    *requests = bg->total_requests;
    *retries = bg->total_retries;
    *denied = bg->total_denied;
    *available = -1;
    if (o && o->budget_on) {
        allowed = budget_window(bg, o, now, &in_window);
        *available = allowed > in_window ? (int64_t)(allowed - in_window) : 0;
    }
    pthread_mutex_unlock(&bg->mu);
}
