/*
 * engine.c - the attempt loop: candidates -> steps -> keys, one upstream call
 * per attempt, and between them the move the policy table (policy.h) names
 * for the failure: sideways before down, waiting only when nothing sideways
 * is left.  What an attempt teaches is told to health at the scope the
 * policy names; what health remembers lets later requests pass over cooling
 * keys, benched keys and open circuits without an upstream call.
 */
#include "engine_int.h"

#include <stdio.h>
#include <string.h>

#define BACKOFF_BASE_MS 250
/* Less time than this left of totalTimeout: no new attempt is started. */
#define MIN_ATTEMPT_MS 10
/* A retry waits out at most this much more for its key (see admit). */
#define SHORT_WAIT_MS 100
/* At most this many waits for a cooling key in one request. */
#define MAX_COOL_WAITS 8
/* A step of at most this many keys walks them in arrays on the stack. */
#define STEP_KEYS_INLINE 8
/* A candidate's rewritten body up to this size (with its NUL) lies on the
 * stack. */
#define CAND_BODY_ROOM 2048

int64_t aigw__run_now(const run *r)
{
    const aigw_engine_env *e = r->env;
    return e->clock ? e->clock->now_ms(e->clock_ud) : aigw__mono_ms();
}

bool aigw__run_cancelled(run *r)
{
    if (r->end == END_CANCELLED)
        return true;
    if (!r->cancel || !aigw_cancel_fired(r->cancel))
        return false;
    r->end = END_CANCELLED;
    return true;
}

/* Sleeps ms on the client's clock; with a cancel token, in slices of at
 * most CANCEL_SLICE_MS, ending early once it fires. */
#define CANCEL_SLICE_MS 20
static void run_sleep(const run *r, int64_t ms)
{
    const aigw_engine_env *e = r->env;
    while (ms > 0) {
        int64_t slice = r->cancel && ms > CANCEL_SLICE_MS ? CANCEL_SLICE_MS : ms;
        if (r->cancel && aigw_cancel_fired(r->cancel))
            return;
        if (e->clock)
            e->clock->sleep_ms(e->clock_ud, slice);
        else
            aigw__sleep_ms(slice);
        ms -= slice;
    }
}

static void min_into(int64_t *least, int64_t v)
{
    if (*least < 0 || v < *least)
        *least = v;
}

/* ------------------------------------------------------------------------ */
/* candidates                                                               */
/* ------------------------------------------------------------------------ */

static void cands_free(run *r)
{
    if (r->cands != r->cands_inline)
        aigw__free(r->cands);
    if (r->bans != r->bans_inline)
        aigw__free(r->bans);
}

static bool cand_seen(const run *r, const aigw_provider *p, const char *model)
{
    size_t i;
    for (i = 0; i < r->n_cands; i++)
        if (r->cands[i].prov == p && strcmp(r->cands[i].model, model) == 0)
            return true;
    return false;
}

static int skip(run *r, const cand *cd, aigw_skip_reason why, const char *key_id, int step,
                int64_t wait_ms)
{
    r->skips_by_reason[why]++;
    return aigw__response_add_skip(r->resp, cd->prov->id, cd->model, why, key_id, step,
                                   wait_ms);
}

/* Resolves one spec.  0 added, 1 skipped (recorded), -2 no memory; for the
 * primary, -1 when no provider serves it and -3 when the access scope
 * rejects it. */
static int add_cand(run *r, const char *spec, bool primary)
{
    const aigw_provider *p;
    const char *model;
    int rc = aigw__resolve_model_in(r->cfg, spec, aigw__resolved_prefix_memo(r->env->resolved),
                                    &p, &model);
    int why = -1;
    if (rc == -2)
        return -2;
    if (rc != 0)
        why = AIGW_SKIP_UNKNOWN_MODEL;
    else if (!aigw__access_allows(r->akc, p->id, model))
        why = AIGW_SKIP_MODEL_NOT_ALLOWED;
    else if (cand_seen(r, p, model))
        why = AIGW_SKIP_DUPLICATE_CANDIDATE;
    if (why >= 0) {
        if (primary)
            return why == AIGW_SKIP_UNKNOWN_MODEL ? -1 : -3;
        r->skips_by_reason[why]++;
        return aigw__response_add_skip(r->resp, p ? p->id : "", model ? model : spec,
                                       (aigw_skip_reason)why, NULL, -1, -1) == 0
                   ? 1
                   : -2;
    }
    r->cands[r->n_cands].prov = p;
    r->cands[r->n_cands].model = model;
    r->cands[r->n_cands].upstream = aigw__upstream_model(p, model);
    r->n_cands++;
    return 0;
}

/* Resolves the candidates; may end the request (rejected primary). */
static int plan(run *r, const char *model, char **models, size_t n_models)
{
    size_t i;
    int rc;
    if (n_models < sizeof r->cands_inline / sizeof *r->cands_inline) {
        r->cands = r->cands_inline;
        r->bans = r->bans_inline;
    } else {
        r->cands = aigw__calloc(n_models + 1, sizeof *r->cands);
        r->bans = aigw__calloc(n_models + 1, sizeof *r->bans);
        if (!r->cands || !r->bans)
            return -1;
    }
    rc = add_cand(r, model, true);
    if (rc == -2)
        return -1;
    if (rc < 0)
        return aigw__reject(r, model, rc);
    for (i = 0; i < n_models; i++)
        if (add_cand(r, models[i], false) == -2)
            return -1;
    return 0;
}

/* The context-length ban: (provider, upstream model), for this request. */
static bool banned(const run *r, const cand *cd)
{
    size_t i;
    for (i = 0; i < r->n_bans; i++)
        if (r->bans[i].prov == cd->prov && strcmp(r->bans[i].upstream, cd->upstream) == 0)
            return true;
    return false;
}

static void ban_model(run *r, const cand *cd)
{
    if (!banned(r, cd)) { /* room for every candidate was made by plan() */
        r->bans[r->n_bans].prov = cd->prov;
        r->bans[r->n_bans].upstream = cd->upstream;
        r->n_bans++;
    }
}

/* ------------------------------------------------------------------------ */
/* the policy, as the loop applies it                                       */
/* ------------------------------------------------------------------------ */

static int64_t backoff_ms(const run *r, int retry)
{
    uint32_t rnd;
    int64_t b = (int64_t)BACKOFF_BASE_MS << (retry < 10 ? retry : 10);
    if (b > r->cfg->retry_after_max_ms)
        b = r->cfg->retry_after_max_ms;
    aigw__fast_random(&rnd, sizeof rnd);
    /* Jitter in [b/2, b]: spreads retries of many clients apart. */
    return b / 2 + (int64_t)(rnd % (uint32_t)(b / 2 + 1));
}

/* Whether a wait of w ms fits retryAfterMax and the total deadline. */
static bool wait_fits(const run *r, int64_t w)
{
    /* room for an attempt after the wait, or waiting is only a slower 504 */
    return w >= 0 && w <= r->cfg->retry_after_max_ms &&
           aigw__run_now(r) + w + MIN_ATTEMPT_MS <= r->deadline;
}

/* The state of one step's walk through its keys. */
typedef struct step_walk {
    const key_ref *keys; /* in this step's order */
    size_t n;
    size_t k;          /* the current key */
    int retries;       /* same-backend retries spent */
    bool retrying;     /* every key was tried once: only retries are left */
    aigw_class *cls;   /* per ordered key: its last failure class */
    int64_t *ready_at; /* per ordered key: when the wait it asked for ends; -1 none */
} step_walk;

/* Whether key i of the walk is ready for the candidate's model.  A cooling
 * key is marked for pick_retry (its wait is known); a benched one never is. */
static bool key_usable(step_walk *w, size_t i, int64_t now, aigw_key_state *st, int64_t *left)
{
    *st = aigw__key_state(w->keys[i].hk, w->keys[i].ep, now, left);
    if (*st == AIGW_KEY_READY)
        return true;
    if (w->cls[i] == AIGW_CLASS_NONE) { /* not tried in this walk */
        w->cls[i] = *st == AIGW_KEY_COOLING ? AIGW_CLASS_RATE_LIMIT : AIGW_CLASS_AUTH;
        w->ready_at[i] = *st == AIGW_KEY_COOLING ? now + *left : -1;
    }
    return false;
}

static bool endpoint_admits(const run *r, const key_ref *k)
{
    return aigw__breaker_would_admit(aigw__endpoint_breaker(k->ep), r->ho, aigw__run_now(r));
}

/* Whether a key after k in the walk may be sent to (sideways is open). */
static bool ready_after(const run *r, step_walk *w, size_t k)
{
    size_t i;
    aigw_key_state st;
    int64_t left;
    for (i = k + 1; i < w->n; i++)
        if (key_usable(w, i, aigw__run_now(r), &st, &left) && endpoint_admits(r, &w->keys[i]))
            return true;
    return false;
}

/* Picks the key a same-backend retry goes to, and the wait before it: of
 * the step's keys whose last failure's row allows a wait, the one whose
 * wait ends first and fits (a named wait: what is left of it; else, where
 * the row allows, a jittered back-off).  false when none may be retried. */
static bool pick_retry(const run *r, const step_walk *w, size_t *best, int64_t *wait)
{
    int64_t now = aigw__run_now(r), backoff = -1;
    size_t i;
    bool found = false;
    for (i = 0; i < w->n; i++) {
        aigw_wait_rule rule = aigw__policy_row(w->cls[i])->wait;
        int64_t e;
        if (rule == AIGW_WAIT_NEVER || (rule == AIGW_WAIT_ASKED && w->ready_at[i] < 0) ||
            !endpoint_admits(r, &w->keys[i]))
            continue;
        if (w->ready_at[i] >= 0) {
            e = w->ready_at[i] > now ? w->ready_at[i] - now : 0;
        } else {
            if (backoff < 0)
                backoff = backoff_ms(r, w->retries);
            e = backoff;
        }
        if (wait_fits(r, e) && (!found || e < *wait)) {
            *best = i;
            *wait = e;
            found = true;
        }
    }
    return found;
}

/* The next move after a failed attempt, from its class's row; sets
 * a->verdict, and for MV_RETRY the key to retry (w->k) and *sleep_ms. */
static move decide(run *r, step_walk *w, aigw_attempt *a, int64_t *sleep_ms)
{
    const aigw_policy_row *row = aigw__policy_row(a->cls);
    size_t best = 0;
    int64_t wait = 0;
    *sleep_ms = 0;
    if (row->move == AIGW_MOVE_FAIL_FAST) {
        a->verdict = row->verdict;
        return MV_FAIL_FAST;
    }
    if ((int)r->resp->n_attempts >= r->cfg->max_attempts) {
        r->end = END_MAX_ATTEMPTS;
        a->verdict = AIGW_VERDICT_EXHAUSTED;
        return MV_NEXT_STEP;
    }
    a->verdict = row->verdict;
    if (row->move == AIGW_MOVE_NEXT_MODEL)
        return MV_NEXT_CAND;
    if (row->move == AIGW_MOVE_NEXT_STEP)
        return MV_NEXT_STEP; /* the host is the problem: skip the siblings */
    if (!w->retrying && ready_after(r, w, w->k))
        return MV_NEXT_KEY;
    /* Nothing sideways is left: wait, boundedly, for the step's best key. */
    if (w->retries < r->cfg->same_backend_retries && pick_retry(r, w, &best, &wait)) {
        a->verdict = AIGW_VERDICT_RETRY_SAME_BACKEND;
        w->k = best;
        w->retries++;
        w->retrying = true;
        *sleep_ms = wait;
        return MV_RETRY;
    }
    a->verdict = AIGW_VERDICT_NEXT_BACKEND;
    return MV_NEXT_STEP;
}

/* ------------------------------------------------------------------------ */
/* health: before and after an attempt                                      */
/* ------------------------------------------------------------------------ */

/* The breakers in force for one attempt, and whether it holds their probes. */
typedef struct gate {
    aigw_breaker *endpoint;
    aigw_breaker *backend; /* counters only */
    aigw_breaker *host;
    bool endpoint_trial; /* the first try after a cooldown, claimed */
    bool endpoint_probe;
    bool host_probe;
} gate;

/* Tells health what an attempt taught, each fact at the scope its class's
 * row names (a NULL: it was never made; its probes are released), now
 * being the client's clock read as the attempt ended. */
static void report_at(run *r, const slot *s, const gate *g, const aigw_attempt *a, int64_t now)
{
    int64_t lat = -1;
    const aigw_policy_row *row;
    aigw_hear heard;
    bool answered;
    if (g->endpoint_trial)
        aigw__endpoint_trial_done(s->key->ep, a ? a->cls : AIGW_CLASS_NONE,
                                  !a || a->tr == AIGW_TR_CANCELLED, now);
    if (!a || a->tr == AIGW_TR_CANCELLED) {
        if (g->endpoint_probe)
            aigw__breaker_report(g->endpoint, r->ho, AIGW_HEAR_ABANDON, true, AIGW_CLASS_NONE,
                                 -1, now);
        if (g->host_probe)
            aigw__breaker_report(g->host, r->ho, AIGW_HEAR_ABANDON, true, AIGW_CLASS_NONE, -1,
                                 now);
        return;
    }
    row = aigw__policy_row(a->cls);
    answered = a->answered;
    heard = aigw__policy_endpoint_hears(a->cls, answered);
    if (a->cls == AIGW_CLASS_NONE)
        lat = r->sh && a->first_token_ms >= 0 ? a->first_token_ms : a->duration_ms;
    /* The endpoint's entry is made when there is something to record (a
     * success, a failure its breaker counts, a cooldown, a bench), so
     * model names that only ever fail fast take no room in the table. */
    if (!s->key->ep && (heard == AIGW_HEAR_SUCCESS || heard == AIGW_HEAR_FAILURE ||
                        aigw__policy_key_failure(a->cls)))
        s->key->ep = aigw__health_endpoint(r->h, s->key->hk, s->cd->upstream, true);
    aigw__hkey_count(s->key->hk, a->cls, lat);
    if (row->remember == AIGW_REMEMBER_COOL_ENDPOINT) {
        int64_t cool = aigw__endpoint_cool(s->key->ep, r->ho, a->requested_wait_ms, now);
        /* a 429 naming no wait still cools the key: that is its wait */
        if (a->requested_wait_ms < 0 && cool > 0)
            min_into(&r->min_wait, cool);
    } else if (row->remember == AIGW_REMEMBER_BENCH_KEY) {
        aigw__hkey_bench(s->key->hk, r->ho, a->cls, now);
    }
    aigw__breaker_report(aigw__endpoint_breaker(s->key->ep), r->ho, heard, g->endpoint_probe,
                         a->cls, lat, now);
    aigw__breaker_report(g->backend, NULL, heard, false, a->cls, lat, now);
    aigw__breaker_report(g->host, r->ho, aigw__policy_host_hears(a->cls, answered),
                         g->host_probe, a->cls, lat, now);
}

static void report(run *r, const slot *s, const gate *g, const aigw_attempt *a)
{
    report_at(r, s, g, a, aigw__run_now(r));
}

/* ------------------------------------------------------------------------ */
/* one attempt                                                              */
/* ------------------------------------------------------------------------ */

static int record_attempt(run *r, const slot *s, aigw_attempt **out)
{
    aigw_attempt *a = aigw__response_add_attempt(r->resp);
    if (!a)
        return -1;
    a->step = s->step;
    a->key_source = s->ngrok ? "ngrok" : "user";
    a->provider = aigw__response_strdup(r->resp, s->cd->prov->id);
    a->model = aigw__response_strdup(r->resp, s->cd->model);
    a->key_id = aigw__response_strdup(r->resp, s->key->id ? s->key->id : "");
    if (!a->provider || !a->model || !a->key_id)
        return -1;
    /* Moving from the caller's keys to ngrok's is a managed fallback. */
    if (s->ngrok && r->resp->n_attempts > 1) {
        aigw_attempt *prev = &r->resp->attempts[r->resp->n_attempts - 2];
        if (prev->verdict == AIGW_VERDICT_NEXT_BACKEND && strcmp(prev->key_source, "user") == 0)
            prev->verdict = AIGW_VERDICT_MANAGED_FALLBACK;
    }
    *out = a;
    return 0;
}

/* Runs one attempt, tells health what it taught (before deciding, so a
 * same-backend retry sees the breaker as this attempt left it), and
 * decides.  Returns the move, or -1 on no memory (probes released).
 *
 * Decided (nomem_ends_request): running out of memory is not a failure of
 * the key.  An attempt whose transport ran out (AIGW_TR_NOMEM), or during
 * which the library did (its record keeps AIGW_TR_NOMEM when there is
 * one), has no failure class: health, the breakers and the retry budget
 * hear nothing of it (its probes are released, as a cancelled attempt's
 * are), no further attempt is made, and the request ends with AIGW_ENOMEM,
 * without a response and with no stream callback after it. */
static int attempt(run *r, const slot *s, const gate *g, step_walk *w, int64_t *sleep_ms)
{
    aigw_transport_response t;
    aigw_transport_result tr = AIGW_TR_OTHER;
    aigw_attempt *a = NULL;
    int64_t t0, t1 = -1, wait = -1;
    int mv = -1;
    bool nomem = false;

    memset(&t, 0, sizeof t);
    if (!r->sh) /* the room a spare response kept, for the answer */
        aigw__response_lend(r->resp, &t.headers, &t.body);
    if (record_attempt(r, s, &a) != 0)
        goto out;
    if (r->sh) {
        mv = aigw__stream_once(r, s, &t, a, &wait);
        if (mv != -2) /* served, restarted or ended: no decision left */
            goto out;
    } else {
        t0 = aigw__run_now(r);
        if (aigw__send_once_at(r, s, &t, &tr, t0) != 0) {
            mv = -1;
            goto out;
        }
        t1 = aigw__run_now(r);
        a->duration_ms = t1 - t0;
        a->tr = tr;
        if (tr == AIGW_TR_NOMEM)
            goto out; /* mv -1: see nomem_ends_request */
        if (tr == AIGW_TR_CANCELLED && aigw__run_cancelled(r)) {
            /* the caller's cancel: no verdict on the key (report releases
             * what the attempt held), the request ends */
            a->completion = "cancelled";
            a->verdict = AIGW_VERDICT_FAIL_FAST;
            a->cls = AIGW_CLASS_NETWORK;
            mv = MV_NEXT_STEP;
            goto out;
        }
        a->status = tr == AIGW_TR_OK ? t.status : 0;
        a->answered = t.status > 0;
        /* the wall clock is read only for a failure's wait (an HTTP-date
         * Retry-After): an answer in 2xx, or no answer, asks for none */
        a->cls = aigw__classify_checked(tr, a->status, &t.headers, t.body.data, t.body.len,
                                        tr == AIGW_TR_OK && a->status >= 200 && a->status <= 299
                                            ? 0
                                            : aigw__unix_ms(),
                                        &wait, &nomem);
        if (nomem) {
            a->tr = AIGW_TR_NOMEM;
            goto out;
        }
    }
    a->requested_wait_ms = wait;
    w->cls[w->k] = a->cls;
    w->ready_at[w->k] = wait >= 0 ? aigw__run_now(r) + wait : -1;
    r->attempts_by_class[a->cls]++;
    if (wait >= 0)
        min_into(&r->min_wait, wait);
    /* the clock as the send ended: only the answer's reading came since */
    report_at(r, s, g, a, t1 >= 0 ? t1 : aigw__run_now(r));
    g = NULL; /* reported */
    if (a->cls == AIGW_CLASS_NONE) {
        a->served = true;
        a->verdict = AIGW_VERDICT_SUCCEEDED;
        mv = aigw__take_upstream_answer(r, &t, s->key, AIGW_OUTCOME_SERVED) == 0 ? MV_SERVE : -1;
    } else {
        mv = (int)decide(r, w, a, sleep_ms);
        if (mv == MV_FAIL_FAST &&
            aigw__take_upstream_answer(r, &t, s->key, AIGW_OUTCOME_FAIL_FAST) != 0)
            mv = -1;
        if (mv == MV_RETRY)
            a->waited_ms = *sleep_ms;
    }
out:
    if (a && t.header_cap)
        a->header_cap = true;
    if (g)
        report(r, s, g, mv < 0 ? NULL : a);
    aigw__tres_free(&t);
    return mv;
}

/* A key the walk passes over: recorded as a skip, not an attempt. */
static int skip_key(run *r, const slot *s, aigw_key_state st, int64_t left)
{
    aigw__key_skipped(s->key->hk, s->key->ep);
    if (st == AIGW_KEY_COOLING) {
        min_into(&r->pass_cool_wait, left);
        min_into(&r->min_wait, left);
    } else if (aigw__key_reason(s->key->hk, NULL, aigw__run_now(r)) == AIGW_CLASS_QUOTA) {
        r->quota_bench_skips++;
    }
    return skip(r, s->cd, st == AIGW_KEY_COOLING ? AIGW_SKIP_KEY_COOLING : AIGW_SKIP_KEY_BENCHED,
                s->key->id ? s->key->id : "", s->step, left);
}

/* A key's endpoint (key id set) or a step's host whose circuit is open. */
static int skip_open(run *r, const slot *s, aigw_skip_reason why, int64_t left)
{
    min_into(&r->open_wait, left);
    return skip(r, s->cd, why, why == AIGW_SKIP_CIRCUIT_OPEN ? s->key->id : NULL, s->step,
                left);
}

/* Health's word before an attempt at now: 0 go (g filled), MV_NEXT_KEY
 * when the key's endpoint is open, MV_NEXT_STEP when the host is (a skip
 * recorded) or the retry budget refuses, or -1 on no memory. */
static int admit(run *r, const slot *s, gate *g, bool retrying, int64_t now)
{
    int64_t left = 0;
    int tries;
    aigw_admit ae, ah;
    const aigw_attempt *prev;
    memset(g, 0, sizeof *g);
    /* with a health store, one client of the fleet tries a key first after
     * its cooldown: the others pass it over as cooling meanwhile */
    for (tries = 0;; tries++) {
        ae = aigw__endpoint_admit(s->key->ep, r->ho, now, &left);
        if (ae != AIGW_ADMIT_OPEN)
            break;
        /* A retry that waited for this key is not dropped for what is
         * left: the store's own latency (its cooldown was written a round
         * trip after the wait began) or another client's first try: waited
         * out, briefly. */
        if (!retrying || tries >= 3 || left > SHORT_WAIT_MS || !wait_fits(r, left))
            return skip_key(r, s, AIGW_KEY_COOLING, left) == 0 ? MV_NEXT_KEY : -1;
        run_sleep(r, left);
        now = aigw__run_now(r);
    }
    g->endpoint_trial = ae == AIGW_ADMIT_PROBE;
    g->endpoint = aigw__endpoint_breaker(s->key->ep);
    ae = aigw__breaker_admit(g->endpoint, r->ho, now, &left);
    if (ae == AIGW_ADMIT_OPEN) {
        report(r, s, g, NULL);
        aigw__key_skipped(s->key->hk, s->key->ep);
        return skip_open(r, s, AIGW_SKIP_CIRCUIT_OPEN, left) == 0 ? MV_NEXT_KEY : -1;
    }
    g->endpoint_probe = ae == AIGW_ADMIT_PROBE;
    g->host = aigw__resolved_host(r->env->resolved, r->h, s->ngrok ? NULL : s->cd->prov,
                                  s->ngrok ? r->cfg->ngrok_gateway_url : s->cd->prov->base_url);
    ah = aigw__breaker_admit(g->host, r->ho, now, &left);
    if (ah == AIGW_ADMIT_OPEN) {
        report(r, s, g, NULL);
        aigw__breaker_skipped(g->host);
        return skip_open(r, s, AIGW_SKIP_HOST_CIRCUIT_OPEN, left) == 0 ? MV_NEXT_STEP : -1;
    }
    g->host_probe = ah == AIGW_ADMIT_PROBE;
    /* An attempt after a failure whose row calls it a retry (the signs of
     * an outage) is paid from the client's budget; moving past a key that
     * cools or is benched is not. */
    prev = r->resp->n_attempts ? &r->resp->attempts[r->resp->n_attempts - 1] : NULL;
    if (prev && aigw__policy_row(prev->cls)->retry && !aigw__budget_retry(r->h, r->ho, now)) {
        report(r, s, g, NULL);
        r->end = END_BUDGET;
        return MV_NEXT_STEP;
    }
    g->backend = aigw__resolved_backend(r->env->resolved, r->h, s->cd->prov, s->cd->upstream);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* the walk                                                                 */
/* ------------------------------------------------------------------------ */

static bool request_over(const run *r)
{
    return r->done || r->end != END_NONE;
}

/* Walks one step's keys.  Returns MV_SERVE / MV_FAIL_FAST (answer set),
 * MV_NEXT_STEP, MV_NEXT_CAND, MV_RESTART, MV_END, or -1 on no memory.
 * Sets r->end when the request must end.  now: the client's clock, read
 * with nothing but work since (-1: not read). */
static int walk_step(run *r, const cand *cd, int step_index, bool ngrok, key_ref *keys,
                     size_t n_keys, const cand_body *body, int64_t now0)
{
    aigw_class cls[STEP_KEYS_INLINE];
    int64_t ready_at[STEP_KEYS_INLINE];
    step_walk w;
    slot s;
    int mv = MV_NEXT_STEP;
    memset(&w, 0, sizeof w);
    w.keys = keys;
    w.n = n_keys;
    if (n_keys <= STEP_KEYS_INLINE) {
        memset(cls, 0, sizeof cls);
        memset(ready_at, 0, sizeof ready_at);
        w.cls = cls;
        w.ready_at = ready_at;
    } else {
        w.cls = aigw__calloc(n_keys, sizeof *w.cls);
        w.ready_at = aigw__calloc(n_keys, sizeof *w.ready_at);
        if (!w.cls || !w.ready_at) {
            mv = -1;
            goto out;
        }
    }
    s.cd = cd;
    s.step = step_index;
    s.ngrok = ngrok;
    s.body = body;
    while (w.k < w.n) {
        int64_t sleep_ms = 0, left, now;
        aigw_key_state ks;
        const aigw_attempt *a;
        gate g;
        if (aigw__run_cancelled(r))
            break;
        /* one reading for the checks below: nothing between them waits
         * (the step's own reading, the first time) */
        now = now0 >= 0 ? now0 : aigw__run_now(r);
        now0 = -1;
        if (r->deadline - now < MIN_ATTEMPT_MS) {
            r->end = END_TIMED_OUT;
            break;
        }
        s.key = &keys[w.k]; /* decide() may point w.k at the key a retry goes to */
        /* A retry goes to the key it waited for; otherwise a key that is
         * cooling or benched is passed over without an upstream call. */
        if (!w.retrying && !key_usable(&w, w.k, now, &ks, &left)) {
            if (skip_key(r, &s, ks, left) != 0) {
                mv = -1;
                break;
            }
            w.k++;
            continue;
        }
        mv = admit(r, &s, &g, w.retrying, now);
        if (mv == MV_NEXT_KEY && !w.retrying) {
            w.k++;
            mv = MV_NEXT_STEP;
            continue;
        }
        if (mv != 0)
            break;
        mv = attempt(r, &s, &g, &w, &sleep_ms);
        a = mv < 0 ? NULL : &r->resp->attempts[r->resp->n_attempts - 1];
        if (mv < 0 || mv == MV_SERVE || mv == MV_FAIL_FAST || mv == MV_NEXT_CAND ||
            mv == MV_RESTART || mv == MV_END || r->end != END_NONE)
            break;
        /* An attempt that timed out on what was left of totalTimeout ends
         * the request, whatever the clock says to the millisecond. */
        if (r->budget_capped && a->cls == AIGW_CLASS_TIMEOUT) {
            r->end = END_TIMED_OUT;
            mv = MV_NEXT_STEP;
            break;
        }
        if (mv == MV_NEXT_KEY)
            w.k++;
        else if (mv == MV_RETRY)
            run_sleep(r, sleep_ms);
        else
            break; /* MV_NEXT_STEP */
        mv = MV_NEXT_STEP;
    }
    if (mv == MV_NEXT_KEY) /* a retry's endpoint opened meanwhile */
        mv = MV_NEXT_STEP;
    if (mv == MV_NEXT_STEP && aigw__run_now(r) >= r->deadline && !r->done)
        r->end = END_TIMED_OUT;
out:
    if (w.cls != cls) {
        aigw__free(w.cls);
        aigw__free(w.ready_at);
    }
    return mv;
}

/* One key of a step, with its health for the candidate's model; at: the
 * configuration's aigw_pkey or aigw_step_key (NULL: the ngrok key, or
 * none), by which the client remembers its entry. */
static void key_at(run *r, const cand *cd, key_ref *k, const void *at, const char *id,
                   const aigw_secret *v, aigw_key_origin origin)
{
    k->id = id;
    k->secret = v;
    k->hk = aigw__resolved_key(r->env->resolved, r->h, cd->prov, at, id, v, origin);
    k->ep = aigw__health_endpoint(r->h, k->hk, cd->upstream, false);
}

/* With a health store, reads what the fleet knows of a step's keys (with
 * the candidate's model) and its host, when the client's copy is older
 * than syncInterval: one round trip (per 16 keys).  Returns the client's
 * clock after it. */
static int64_t sync_step(run *r, const cand *cd, key_ref *refs, size_t n, bool ngrok)
{
    aigw_sync sy;
    size_t i;
    int64_t now = aigw__run_now(r);
    aigw__sync_begin(&sy, r->h, r->ho, now);
    if (!sy.on)
        return now; /* nothing was waited for */
    for (i = 0; i < n; i++)
        aigw__sync_key(&sy, refs[i].hk, &refs[i].ep, cd->upstream);
    aigw__sync_host(&sy, aigw__resolved_host(r->env->resolved, r->h, ngrok ? NULL : cd->prov,
                                             ngrok ? r->cfg->ngrok_gateway_url
                                                   : cd->prov->base_url));
    aigw__sync_end(&sy);
    return aigw__run_now(r);
}

/* A step's scratch arrays for ordering its keys: on the stack for a few
 * keys, else allocated. */
typedef struct order_room {
    aigw_key_health views[STEP_KEYS_INLINE];
    const aigw_key_health *pv[STEP_KEYS_INLINE];
    size_t order[STEP_KEYS_INLINE];
    bool used[STEP_KEYS_INLINE];
    key_ref all[STEP_KEYS_INLINE];
} order_room;

/* Orders a user step's keys: the client's strategy, or the step's own
 * (keySelectionStrategy).  Either sees each key's health for the
 * candidate's model; the walk skips the keys that are not ready, whatever
 * the order. */
static int order_keys(run *r, const cand *cd, size_t step_index, const aigw_step *st,
                      key_ref *refs, size_t *n_out)
{
    size_t i, n = 0, nk = st->n_keys;
    int64_t now;
    const aigw_strategy *vt = r->env->strategy;
    order_room room;
    bool heap = nk > STEP_KEYS_INLINE;
    aigw_key_health *views = heap ? aigw__calloc(nk, sizeof *views) : room.views;
    const aigw_key_health **pv = heap ? aigw__calloc(nk, sizeof *pv) : room.pv;
    size_t *order = heap ? aigw__calloc(nk, sizeof *order) : room.order;
    bool *used = heap ? aigw__calloc(nk, sizeof *used) : room.used;
    key_ref *all = heap ? aigw__calloc(nk, sizeof *all) : room.all;
    const char **ids = NULL;
    int got = -1, rc = -1;
    if (!views || !pv || !order || !used || !all)
        goto out;
    for (i = 0; i < nk; i++)
        key_at(r, cd, &all[i], &st->keys[i], st->keys[i].id, &st->keys[i].value,
               AIGW_ORIGIN_CONFIG);
    now = sync_step(r, cd, all, nk, false);
    if (nk == 1 && !vt) {
        /* one key: whatever the strategy, it comes first (the library's
         * own strategies draw nothing and look at no health for one key;
         * a round-robin turn over one key is always 0) */
        refs[0] = all[0];
        *n_out = 1;
        rc = 0;
        goto out;
    }
    if (!heap) {
        memset(order, 0, nk * sizeof *order);
        memset(used, 0, nk * sizeof *used);
    }
    for (i = 0; i < nk; i++) {
        aigw__key_view(all[i].hk, all[i].ep, now, st->keys[i].weight, &views[i]);
        views[i].id = st->keys[i].id;
        pv[i] = &views[i];
    }
    if (vt && vt->order_health) {
        got = vt->order_health(r->env->strategy_ud, cd->prov->id, cd->model, step_index, pv, nk,
                               order);
    } else if (vt) {
        if (!(ids = aigw__calloc(nk, sizeof *ids)))
            goto out;
        for (i = 0; i < nk; i++)
            ids[i] = st->keys[i].id;
        got = vt->order(r->env->strategy_ud, cd->prov->id, cd->model, step_index, ids, nk, order);
    }
    if (got < 0) {
        /* The turn counter is the one member of a configuration that
         * changes after the parse: atomically, through this cast. */
        aigw__strategy_order(vt ? AIGW_STRATEGY_ORDERED : st->strategy, pv, nk,
                             (_Atomic unsigned long *)(uintptr_t)&st->turn, order);
        got = (int)nk;
    }
    for (i = 0; i < (size_t)got && i < nk; i++) {
        size_t ix = order[i];
        if (ix < nk && !used[ix]) {
            used[ix] = true;
            refs[n++] = all[ix];
        }
    }
    *n_out = n;
    rc = 0;
out:
    if (heap) {
        aigw__free(views);
        aigw__free(pv);
        aigw__free(order);
        aigw__free(used);
        aigw__free(all);
    }
    aigw__free(ids);
    return rc;
}

/* The keys of an implicit user step: every provider key of the provider. */
static size_t implicit_keys(run *r, const cand *cd, key_ref *refs)
{
    size_t i, n = 0;
    for (i = 0; i < r->cfg->n_keys; i++)
        if (strcmp(r->cfg->keys[i].provider_id, cd->prov->id) == 0)
            key_at(r, cd, &refs[n++], &r->cfg->keys[i], r->cfg->keys[i].id,
                   &r->cfg->keys[i].value, AIGW_ORIGIN_CONFIG);
    return n;
}

/* Runs one step of a candidate's plan (step_index -1: an implicit step). */
static int run_step(run *r, const cand *cd, int step_index, const aigw_step *st,
                    cand_body *body_user, cand_body *body_ngrok)
{
    size_t cap = st ? (st->n_keys ? st->n_keys : 1) : (r->cfg->n_keys ? r->cfg->n_keys : 1);
    key_ref room[STEP_KEYS_INLINE], *refs = room;
    size_t n = 0;
    bool ngrok = st ? st->type == AIGW_STEP_NGROK : false;
    cand_body *body;
    int64_t now = -1; /* the clock as the keys' health was read */
    int mv = -1;
    /* (room is not zeroed: key_at sets every key_ref the walk reads) */
    if (cap > STEP_KEYS_INLINE && !(refs = aigw__calloc(cap, sizeof *refs)))
        return -1;
    if (st && !ngrok) {
        if (order_keys(r, cd, (size_t)step_index, st, refs, &n) != 0)
            goto out;
    } else if (!st) {
        n = implicit_keys(r, cd, refs);
        if (n == 0 && cd->prov->custom) {
            /* A custom provider with no key (a local server): no credentials. */
            key_at(r, cd, &refs[0], NULL, "", NULL, AIGW_ORIGIN_NONE);
            n = 1;
        } else if (n == 0) {
            ngrok = true;
        }
    }
    if (ngrok) {
        if (!r->cfg->has_ngrok_key) {
            mv = skip(r, cd, AIGW_SKIP_NO_NGROK_ACCESS_KEY, NULL, -1, -1) == 0 ? MV_NEXT_STEP
                                                                               : -1;
            goto out;
        }
        /* per provider: one provider's limit relayed by ngrok says nothing
         * of another's */
        key_at(r, cd, &refs[0], NULL, "ngrok", &r->cfg->ngrok_key, AIGW_ORIGIN_NGROK);
        n = 1;
    }
    if (!st || ngrok)
        now = sync_step(r, cd, refs, n, ngrok);
    body = ngrok ? body_ngrok : body_user;
    if (!body->data && aigw__build_body(r, cd, ngrok, body) != 0)
        goto out;
    mv = walk_step(r, cd, step_index, ngrok, refs, n, body, now);
out:
    if (refs != room)
        aigw__free(refs);
    return mv;
}

/* When nothing was sent to a candidate and each of its keys was passed
 * over because its endpoint's circuit is open, the backend is open: one
 * skip of the candidate stands for them, with the shortest wait. */
static int fold_open_skips(run *r, const cand *cd, size_t skips0, size_t attempts0)
{
    aigw_response *resp = r->resp;
    int64_t wait = -1;
    size_t i;
    if (resp->n_attempts != attempts0 || resp->n_skips == skips0)
        return 0;
    for (i = skips0; i < resp->n_skips; i++) {
        if (resp->skips[i].reason != AIGW_SKIP_CIRCUIT_OPEN)
            return 0;
        min_into(&wait, resp->skips[i].wait_ms);
    }
    aigw__response_drop_skips(resp, skips0);
    aigw__breaker_skipped(aigw__resolved_backend(r->env->resolved, r->h, cd->prov, cd->upstream));
    return aigw__response_add_skip(resp, cd->prov->id, cd->model, AIGW_SKIP_CIRCUIT_OPEN, NULL,
                                   -1, wait);
}

/* Runs a candidate's plan.  Returns a move like walk_step. */
static int run_cand(run *r, const cand *cd)
{
    const aigw_rule *rule = aigw__rule_for(r->akc, cd->prov->id, cd->model);
    char room_user[CAND_BODY_ROOM], room_ngrok[CAND_BODY_ROOM]; /* not zeroed */
    cand_body body_user, body_ngrok;
    size_t s, skips0 = r->resp->n_skips, attempts0 = r->resp->n_attempts;
    int mv = MV_NEXT_STEP;
    if (banned(r, cd))
        return skip(r, cd, AIGW_SKIP_CONTEXT_LENGTH_EXCEEDED, NULL, -1, -1) == 0 ? MV_NEXT_CAND
                                                                                : -1;
    memset(&body_user, 0, sizeof body_user);
    memset(&body_ngrok, 0, sizeof body_ngrok);
    body_user.room = room_user;
    body_ngrok.room = room_ngrok;
    body_user.room_size = body_ngrok.room_size = CAND_BODY_ROOM;
    if (!rule) {
        mv = run_step(r, cd, -1, NULL, &body_user, &body_ngrok);
    } else {
        for (s = 0; s < rule->n_steps; s++) {
            mv = run_step(r, cd, (int)s, &rule->steps[s], &body_user, &body_ngrok);
            if (mv != MV_NEXT_STEP || request_over(r))
                break;
        }
    }
    aigw__cand_body_free(&body_user);
    aigw__cand_body_free(&body_ngrok);
    if (mv == MV_NEXT_CAND)
        ban_model(r, cd);
    /* only a walk that covered every key may say the backend is open */
    if (mv >= 0 && r->end == END_NONE && fold_open_skips(r, cd, skips0, attempts0) != 0)
        return -1;
    return mv == MV_RESTART ? MV_NEXT_CAND : mv;
}

/* ------------------------------------------------------------------------ */
/* the request                                                              */
/* ------------------------------------------------------------------------ */

/* "/v1/chat/completions" and "/chat/completions" both name the surface
 * "/chat/completions", which is appended to a provider's base URL. */
static const char *surface_path(const char *path)
{
    if (strncmp(path, "/v1", 3) == 0 && (path[3] == '/' || path[3] == '?' || path[3] == '\0'))
        return path + 3;
    return path;
}

/* start: the client's clock as the request began (nothing has waited
 * since). */
static int run_all(run *r, int64_t start)
{
    int waits = 0;
    aigw__budget_request(r->h, r->ho, start);
    for (;;) {
        size_t i, before = r->resp->n_attempts;
        r->pass_cool_wait = -1;
        for (i = 0; i < r->n_cands && !request_over(r); i++) {
            r->cur_cand = i;
            if (run_cand(r, &r->cands[i]) < 0)
                return -1;
        }
        if (request_over(r))
            break;
        /* Nothing was sent because every usable key is cooling: wait for
         * the first to be ready when that fits, rather than hammer or give
         * up; else the request ends at once (429 with that wait). */
        if (r->resp->n_attempts != before || r->pass_cool_wait < 0 || ++waits > MAX_COOL_WAITS ||
            !wait_fits(r, r->pass_cool_wait))
            break;
        run_sleep(r, r->pass_cool_wait > 0 ? r->pass_cool_wait : 1);
        if (aigw__run_cancelled(r))
            break;
    }
    if (!r->done && aigw__finish_unserved(r) != 0)
        return -1;
    return 0;
}

/* The store that answered, as the response names it (cut to fit). */
static void set_store_name(aigw_response *resp, const char *kind)
{
    size_t n = strlen(kind);
    if (n >= sizeof resp->health_store)
        n = sizeof resp->health_store - 1;
    memcpy(resp->health_store, kind, n);
    resp->health_store[n] = '\0';
}

/* The body's models, or an error naming what is wrong with it.  The model
 * is written into room when it fits (MODEL_ROOM bytes), else allocated. */
#define MODEL_ROOM 128
static aigw_status read_body(const aigw_request *req, aigw_body_map *map, char *room,
                             char **model, char ***models, size_t *n_models, aigw_error **err)
{
    char *why = NULL;
    int rc;
    aigw_status st;
    if (!req->body)
        return aigw__fail(err, AIGW_EREQUEST, "the request has no body");
    rc = aigw__body_read_in(req->body, req->body_len, map, room, MODEL_ROOM, model, models,
                            n_models, &why);
    if (rc == 0)
        return AIGW_OK;
    if (rc == -2)
        return aigw__fail(err, AIGW_ENOMEM, "out of memory");
    st = aigw__fail(err, AIGW_EREQUEST, "request body: %s", why ? why : "not a JSON object");
    aigw__free(why);
    return st;
}

aigw_status aigw__engine_send(const aigw_engine_env *env, const aigw_request *req,
                              const aigw_stream_handler *sh, void *sud, aigw_response **out,
                              aigw_error **err)
{
    run r;
    aigw_body_map map;
    const aigw_akc *akc;
    char model_room[MODEL_ROOM];
    char *model = NULL, **models = NULL;
    size_t n_models = 0;
    uint64_t fallbacks0;
    int64_t start;
    aigw_status st;
    int rc = -1;

    akc = aigw__config_akc(env->cfg, req->configuration);
    if (!akc)
        return aigw__fail(err, AIGW_EREQUEST,
                          "the configuration has no access key configuration named '%s'",
                          req->configuration);
    st = read_body(req, &map, model_room, &model, &models, &n_models, err);
    if (st != AIGW_OK)
        return st;
    if (sh && (env->transport->version < 2 || !env->transport->send_stream)) {
        st = aigw__fail(err, AIGW_EINVAL, "the client's transport cannot stream");
        goto out;
    }
    memset(&r, 0, sizeof r);
    r.env = env;
    r.cfg = env->cfg;
    r.akc = akc;
    r.h = env->health;
    r.ho = &env->cfg->health;
    r.sh = sh;
    r.sud = sud;
    r.cancel = req->cancel;
    r.restart = req->stream_restart < 0 ? r.cfg->stream_restart : req->stream_restart == 1;
    r.path = surface_path(req->path);
    r.body = req->body;
    r.body_len = req->body_len;
    r.map = &map;
    r.min_wait = r.open_wait = r.pass_cool_wait = -1;
    start = aigw__run_now(&r);
    r.deadline = start + r.cfg->total_timeout_ms;
    fallbacks0 = aigw__health_store_fallbacks(r.h);
    if ((r.resp = aigw__response_new()) != NULL)
        rc = plan(&r, model, models, n_models);
    if (rc == 0 && !r.done)
        rc = run_all(&r, start);
    if (r.resp)
        set_store_name(r.resp, aigw__health_store_down(r.h) ||
                                       aigw__health_store_fallbacks(r.h) != fallbacks0
                                   ? "local"
                                   : aigw__health_store_kind(r.h));
    if (rc == 0 && r.resp->n_attempts > 0) {
        const aigw_attempt *last = &r.resp->attempts[r.resp->n_attempts - 1];
        /* its string is in the response's arena already: no second copy */
        r.resp->model = last->model;
        rc = r.resp->model ? 0 : -1;
    }
    if (rc == 0)
        rc = aigw__hdrs_addn_lower(&r.resp->headers, "x-aigw-request-id",
                                   sizeof "x-aigw-request-id" - 1, r.resp->request_id,
                                   strlen(r.resp->request_id));
    cands_free(&r);
    if (rc != 0) {
        aigw_response_free(r.resp);
        st = aigw__fail(err, AIGW_ENOMEM, "out of memory");
        goto out;
    }
    *out = r.resp;
    st = AIGW_OK;
out:
    if (model != model_room)
        aigw__free(model);
    aigw__strv_free(models, n_models);
    return st;
}
