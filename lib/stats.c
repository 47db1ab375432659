/*
 * stats.c - aigw_client_stats: a snapshot of the health tables, copied out
 * so it outlives its client, and the same as JSON.  Keys are listed as the
 * configuration names them (aigw__config_keys), then the keys the engine
 * met that the configuration does not list as such (the ngrok access key per
 * provider, key-less calls), then backends, hosts and endpoints as first
 * seen.
 */
#include "health_int.h"

#include <inttypes.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

typedef struct stat_entry {
    aigw_stat pub; /* first: aigw_stat_failures finds its entry from it */
    uint64_t by_class[AIGW_CLASS__COUNT];
    uint64_t hist[AIGW_LAT_BUCKETS]; /* the latency histogram, as taken */
    char *own[3];  /* the strings of pub it owns */
} stat_entry;

/* Everything is copied out of the table, so a snapshot outlives its client;
 * the JSON is built with the snapshot (aigw_stats_json takes a const
 * snapshot, which may be read from several threads). */
struct aigw_stats {
    stat_entry *v;
    size_t n;
    size_t n_keys, n_backends, n_hosts; /* v: keys, backends, hosts, endpoints */
    bool budget_on;
    int budget_percent;
    int budget_min_per_sec;
    int64_t budget_window_ms;
    uint64_t budget_requests, budget_retries, budget_denied;
    int64_t budget_available;
    char store_kind[16];
    const char *store_state;
    int64_t store_retry_ms; /* in fallback: until the next try */
    uint64_t store_n[7];    /* syncs, writes, claims, errors, fallbacks, recoveries, ignored */
    char *json; /* built with the snapshot */
};

static const char *key_state_name(aigw_key_state s)
{
    switch (s) {
    case AIGW_KEY_COOLING:
        return "cooling";
    case AIGW_KEY_BENCHED:
        return "benched";
    default:
        return "ready";
    }
}

/* The latency percentile p (1..99): the upper bound of the bucket holding
 * it, no more than the maximum. */
static int64_t percentile(const uint64_t *hist, uint64_t total, int p, int64_t max)
{
    uint64_t rank = (total * (uint64_t)p + 99) / 100, seen = 0;
    int i;
    if (rank == 0)
        rank = 1;
    for (i = 0; i < AIGW_LAT_BUCKETS; i++) {
        seen += hist[i];
        if (seen >= rank)
            return aigw__lat_bound(i) < max ? aigw__lat_bound(i) : max;
    }
    return max;
}

static void fill_counters(stat_entry *e, const aigw_counters *c)
{
    uint64_t *hist = e->hist, total = 0;
    int i;
    e->pub.requests = atomic_load_explicit(&c->requests, memory_order_relaxed);
    e->pub.successes = atomic_load_explicit(&c->successes, memory_order_relaxed);
    e->pub.failures = atomic_load_explicit(&c->failures, memory_order_relaxed);
    e->pub.skips = atomic_load_explicit(&c->skips, memory_order_relaxed);
    for (i = 0; i < AIGW_CLASS__COUNT; i++)
        e->by_class[i] = atomic_load_explicit(&c->by_class[i], memory_order_relaxed);
    for (i = 0; i < AIGW_LAT_BUCKETS; i++)
        total += hist[i] = atomic_load_explicit(&c->lat_hist[i], memory_order_relaxed);
    e->pub.latency_count = atomic_load_explicit(&c->lat_count, memory_order_relaxed);
    if (e->pub.latency_count == 0 || total == 0) {
        e->pub.latency_count = 0;
        return;
    }
    e->pub.latency_mean_ms = aigw__counters_mean(c);
    e->pub.latency_sum_ms = atomic_load_explicit(&c->lat_sum, memory_order_relaxed);
    e->pub.latency_max_ms = (int64_t)atomic_load_explicit(&c->lat_max, memory_order_relaxed);
    e->pub.latency_p50_ms = percentile(hist, total, 50, e->pub.latency_max_ms);
    e->pub.latency_p90_ms = percentile(hist, total, 90, e->pub.latency_max_ms);
    e->pub.latency_p99_ms = percentile(hist, total, 99, e->pub.latency_max_ms);
}

static void entry_init(stat_entry *e, const char *kind)
{
    memset(e, 0, sizeof *e);
    e->pub.kind = kind;
    e->pub.name = e->pub.provider = e->pub.model = e->pub.reason = "";
    e->pub.latency_mean_ms = e->pub.latency_p50_ms = e->pub.latency_p90_ms = -1;
    e->pub.latency_p99_ms = e->pub.latency_max_ms = -1;
}

/* Copies s into the entry's slot i of owned strings. */
static const char *own(stat_entry *e, int i, const char *s)
{
    if (!s || !*s)
        return "";
    e->own[i] = aigw__strdup(s);
    return e->own[i];
}

static int fill_key(stat_entry *e, const aigw_hkey *k, const char *provider, const char *id,
                    int64_t now)
{
    aigw_class reason;
    entry_init(e, "key");
    e->pub.name = own(e, 0, id);
    e->pub.provider = own(e, 1, provider);
    if ((id && *id && !e->own[0]) || (provider && *provider && !e->own[1]))
        return -1;
    e->pub.state = key_state_name(aigw__key_state(k, NULL, now, &e->pub.wait_ms));
    reason = aigw__key_reason(k, NULL, now);
    e->pub.reason = reason != AIGW_CLASS_NONE ? aigw__class_name(reason) : "";
    if (k)
        fill_counters(e, &k->c);
    return 0;
}

/* An endpoint: benched (its key), cooling, open, half_open, or ready. */
static int fill_endpoint(stat_entry *e, aigw_endpoint *ep, const aigw_health_opts *o,
                         int64_t now)
{
    aigw_class reason;
    int64_t wait;
    const char *br;
    entry_init(e, "endpoint");
    e->pub.name = own(e, 0, ep->key->id);
    e->pub.provider = own(e, 1, ep->key->provider);
    e->pub.model = own(e, 2, ep->model);
    if ((*ep->key->id && !e->own[0]) || (*ep->key->provider && !e->own[1]) ||
        (*ep->model && !e->own[2]))
        return -1;
    br = aigw__breaker_state(&ep->br, o, now, &wait, &reason);
    if (strcmp(br, "open") == 0 || aigw__key_state(ep->key, ep, now, NULL) == AIGW_KEY_READY) {
        e->pub.state = strcmp(br, "closed") == 0 ? "ready" : br;
        e->pub.wait_ms = wait;
    } else {
        e->pub.state = key_state_name(aigw__key_state(ep->key, ep, now, &e->pub.wait_ms));
        reason = aigw__key_reason(ep->key, ep, now);
    }
    e->pub.reason = reason != AIGW_CLASS_NONE ? aigw__class_name(reason) : "";
    fill_counters(e, &ep->br.c);
    return 0;
}

static int fill_host(stat_entry *e, aigw_site *s, const aigw_health_opts *o, int64_t now)
{
    aigw_class reason;
    entry_init(e, "host");
    if (!(e->pub.name = own(e, 0, s->name)) || !e->own[0])
        return -1;
    e->pub.state = aigw__breaker_state(&s->br, o, now, &e->pub.wait_ms, &reason);
    e->pub.reason = reason != AIGW_CLASS_NONE ? aigw__class_name(reason) : "";
    fill_counters(e, &s->br.c);
    return 0;
}

static int fill_backend(stat_entry *e, aigw_site *s)
{
    entry_init(e, "backend");
    e->pub.name = own(e, 0, s->name);
    e->pub.provider = own(e, 1, s->provider);
    e->pub.model = own(e, 2, s->model);
    if (!e->own[0] || (*s->provider && !e->own[1]) || (*s->model && !e->own[2]))
        return -1;
    e->pub.state = "closed";
    fill_counters(e, &s->br.c);
    return 0;
}

/* ---- a backend's state, from its endpoints ---- */

/* What a backend's endpoints say, gathered in one pass over them. */
typedef struct backend_tally {
    const aigw_site *site;
    size_t index;      /* the backend's place among the snapshot's backends */
    size_t counted, half;
    bool closed;       /* an endpoint of it is closed: so is the backend */
    int64_t wait;      /* the shortest wait of the others; -1 */
    aigw_class reason; /* that endpoint's */
} backend_tally;

/* By (provider, model). */
static int tally_cmp(const void *a, const void *b)
{
    const aigw_site *x = ((const backend_tally *)a)->site, *y = ((const backend_tally *)b)->site;
    int c = strcmp(x->provider, y->provider);
    return c ? c : strcmp(x->model, y->model);
}

/* An endpoint's breaker counted into its backend's tally (t sorted by
 * provider and model), unless its key is benched: a benched key serves no
 * model, so it neither opens nor closes the backend. */
static void tally_endpoint(backend_tally *t, size_t n, aigw_endpoint *ep,
                           const aigw_health_opts *o, int64_t now)
{
    backend_tally want, *bt;
    aigw_site probe;
    const char *st;
    int64_t w;
    aigw_class r;
    probe.provider = ep->key->provider;
    probe.model = ep->model;
    want.site = &probe;
    if (!(bt = bsearch(&want, t, n, sizeof *t, tally_cmp)) ||
        aigw__key_state(ep->key, NULL, now, NULL) == AIGW_KEY_BENCHED)
        return;
    bt->counted++;
    st = aigw__breaker_state(&ep->br, o, now, &w, &r);
    if (strcmp(st, "closed") == 0) {
        bt->closed = true;
        return;
    }
    if (strcmp(st, "half_open") == 0)
        bt->half++;
    if (bt->wait < 0 || w < bt->wait) {
        bt->wait = w;
        bt->reason = r;
    }
}

/* A backend is open when every endpoint of it (of the configuration's keys
 * that are not benched) is open; half-open when each is open or half-open
 * and one is half-open; else closed.  Its wait: the shortest of its
 * endpoints'; its reason: that endpoint's.  A key never sent to for the
 * model has no endpoint and does not count: the stats say what was seen,
 * and the engine decides from each key's own endpoint, not from this. */
static void backend_states(aigw_stats *st, const backend_tally *t, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        stat_entry *e = &st->v[st->n_keys + t[i].index];
        if (t[i].counted == 0 || t[i].closed)
            continue;
        e->pub.state = t[i].half ? "half_open" : "open";
        e->pub.wait_ms = t[i].half ? 0 : t[i].wait;
        e->pub.reason = aigw__class_name(t[i].reason) ? aigw__class_name(t[i].reason) : "";
    }
}

/* ---- the keys to list ---- */

typedef struct listed_key {
    const char *provider;
    const char *id;
    const aigw_secret *value;
    aigw_hkey *hk; /* a table entry; NULL: a configuration key, looked up
                      (made) later, or the untracked ngrok placeholder */
    bool look_up;
} listed_key;

typedef struct key_list {
    listed_key *v;
    size_t n, cap;
} key_list;

static int list_add(key_list *l, const char *provider, const char *id, const aigw_secret *value,
                    aigw_hkey *hk, bool look_up)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        listed_key *v = aigw__realloc(l->v, cap * sizeof *v);
        if (!v)
            return -1;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n].provider = provider;
    l->v[l->n].id = id;
    l->v[l->n].value = value;
    l->v[l->n].hk = hk;
    l->v[l->n].look_up = look_up;
    l->n++;
    return 0;
}

/* The configuration's keys, then the ngrok access key as tracked (per
 * provider it reached; once as provider "ngrok", untracked, before any
 * use), then the key-less calls to the configuration's custom providers.
 * The strings of table entries are borrowed: entries outlive the
 * snapshot's making. */
static int keys_to_list(aigw_health *h, const aigw_config *cfg, key_list *l)
{
    const aigw_key_entry *ck;
    size_t n, i, before;
    uint64_t nh = 0;
    aigw_node *nd;
    int rc = 0, pass;
    ck = aigw__config_keys(cfg, &n);
    for (i = 0; i < n && rc == 0; i++)
        rc = list_add(l, ck[i].provider, ck[i].id, ck[i].value, NULL, true);
    if (!cfg || rc != 0)
        return rc;
    if (cfg->has_ngrok_key)
        nh = aigw__siphash24(h->sipkey, cfg->ngrok_key.value, cfg->ngrok_key.len);
    aigw__table_rdlock(&h->keys);
    for (pass = 0; pass < 2 && rc == 0; pass++) {
        before = l->n;
        for (nd = h->keys.first; nd && rc == 0; nd = nd->order) {
            aigw_hkey *k = (aigw_hkey *)nd;
            const aigw_provider *p;
            if (pass == 0 && k->origin == AIGW_ORIGIN_NGROK && cfg->has_ngrok_key &&
                k->has_value && k->vhash == nh)
                rc = list_add(l, k->provider, k->id, &cfg->ngrok_key, k, false);
            else if (pass == 1 && k->origin == AIGW_ORIGIN_NONE &&
                     (p = aigw__config_provider(cfg, k->provider)) && p->custom)
                rc = list_add(l, k->provider, k->id, NULL, k, false);
        }
        /* the ngrok key before any use: listed, not tracked */
        if (pass == 0 && rc == 0 && cfg->has_ngrok_key && l->n == before)
            rc = list_add(l, "ngrok", "ngrok", &cfg->ngrok_key, NULL, false);
    }
    aigw__table_unlock(&h->keys);
    return rc;
}

/* ---- JSON ---- */

static int json_counters(aigw_buf *b, const stat_entry *e)
{
    int i, first = 1;
    const aigw_stat *s = &e->pub;
    if (aigw__buf_puts(b, ",\"state\":") != 0 || aigw__buf_json_cstr(b, s->state) != 0 ||
        aigw__buf_puts(b, ",\"reason\":") != 0 ||
        aigw__buf_json_cstr(b, *s->reason ? s->reason : NULL) != 0 ||
        aigw__buf_printf(b, ",\"waitMs\":%" PRId64 ",\"requests\":%" PRIu64
                            ",\"successes\":%" PRIu64 ",\"failures\":%" PRIu64
                            ",\"failuresByClass\":{",
                         s->wait_ms, s->requests, s->successes, s->failures) != 0)
        return -1;
    for (i = 0; i < AIGW_CLASS__COUNT; i++) {
        const char *name = aigw__class_name((aigw_class)i);
        if (!name || e->by_class[i] == 0)
            continue;
        if ((!first && aigw__buf_puts(b, ",") != 0) || aigw__buf_json_cstr(b, name) != 0 ||
            aigw__buf_printf(b, ":%" PRIu64, e->by_class[i]) != 0)
            return -1;
        first = 0;
    }
    if (aigw__buf_printf(b, "},\"skips\":%" PRIu64 ",\"latencyMs\":{\"count\":%" PRIu64,
                         s->skips, s->latency_count) != 0)
        return -1;
    if (s->latency_count == 0)
        return aigw__buf_puts(b, ",\"mean\":null,\"p50\":null,\"p90\":null,\"p99\":null,"
                                 "\"max\":null}}");
    return aigw__buf_printf(b, ",\"mean\":%" PRId64 ",\"p50\":%" PRId64 ",\"p90\":%" PRId64
                               ",\"p99\":%" PRId64 ",\"max\":%" PRId64 "}}",
                            s->latency_mean_ms, s->latency_p50_ms, s->latency_p90_ms,
                            s->latency_p99_ms, s->latency_max_ms);
}

/* The members that name an entry, by its kind. */
static int json_entry(aigw_buf *b, const stat_entry *e)
{
    const aigw_stat *s = &e->pub;
    int rc = 0;
    if (strcmp(s->kind, "host") == 0) {
        rc |= aigw__buf_puts(b, "{\"host\":");
        rc |= aigw__buf_json_cstr(b, s->name);
    } else {
        rc |= aigw__buf_puts(b, "{\"provider\":");
        rc |= aigw__buf_json_cstr(b, s->provider);
        if (strcmp(s->kind, "backend") != 0) {
            rc |= aigw__buf_puts(b, ",\"id\":");
            rc |= aigw__buf_json_cstr(b, s->name);
        }
        if (strcmp(s->kind, "key") != 0) {
            rc |= aigw__buf_puts(b, ",\"model\":");
            rc |= aigw__buf_json_cstr(b, s->model);
        }
    }
    return rc != 0 ? -1 : json_counters(b, e);
}

static int json_budget(aigw_buf *b, const aigw_stats *st)
{
    if (aigw__buf_printf(b, ",\"retryBudget\":{\"enabled\":%s,\"percent\":%d,"
                            "\"minPerSecond\":%d,\"windowMs\":%" PRId64 ",\"requests\":%" PRIu64
                            ",\"retries\":%" PRIu64 ",\"denied\":%" PRIu64 ",\"available\":",
                         st->budget_on ? "true" : "false", st->budget_percent,
                         st->budget_min_per_sec, st->budget_window_ms, st->budget_requests,
                         st->budget_retries, st->budget_denied) != 0)
        return -1;
    if (st->budget_available < 0)
        return aigw__buf_puts(b, "null}}");
    return aigw__buf_printf(b, "%" PRId64 "}}", st->budget_available);
}

static int json_store(aigw_buf *b, const aigw_stats *st)
{
    static const char *const names[7] = {"syncs",     "writes",     "claims", "errors",
                                         "fallbacks", "recoveries", "ignored"};
    int i, rc = 0;
    rc |= aigw__buf_puts(b, ",\"healthStore\":{\"kind\":");
    rc |= aigw__buf_json_cstr(b, st->store_kind);
    rc |= aigw__buf_printf(b, ",\"state\":\"%s\"", st->store_state);
    if (strcmp(st->store_kind, "local") != 0) {
        for (i = 0; i < 7; i++)
            rc |= aigw__buf_printf(b, ",\"%s\":%" PRIu64, names[i], st->store_n[i]);
        if (st->store_retry_ms >= 0)
            rc |= aigw__buf_printf(b, ",\"retryInMs\":%" PRId64, st->store_retry_ms);
    }
    return rc | aigw__buf_puts(b, "}");
}

static char *stats_to_json(const aigw_stats *st)
{
    /* v holds keys, backends, hosts, endpoints; the JSON lists the
     * endpoints right after their keys */
    static const char *const sections[] = {"{\"keys\":[", "],\"endpoints\":[",
                                           "],\"backends\":[", "],\"hosts\":["};
    size_t from[4], to[4], i;
    int sec;
    aigw_buf b = AIGW_BUF_INIT;
    size_t eps = st->n_keys + st->n_backends + st->n_hosts;
    from[0] = 0, to[0] = st->n_keys;
    from[1] = eps, to[1] = st->n;
    from[2] = st->n_keys, to[2] = st->n_keys + st->n_backends;
    from[3] = to[2], to[3] = eps;
    for (sec = 0; sec < 4; sec++) {
        if (aigw__buf_puts(&b, sections[sec]) != 0)
            goto fail;
        for (i = from[sec]; i < to[sec]; i++)
            if ((i > from[sec] && aigw__buf_puts(&b, ",") != 0) ||
                json_entry(&b, &st->v[i]) != 0)
                goto fail;
    }
    if (aigw__buf_puts(&b, "]") != 0 || json_store(&b, st) != 0 || json_budget(&b, st) != 0)
        goto fail;
    return aigw__buf_take(&b);
fail:
    aigw__buf_free(&b);
    return NULL;
}

/* ---- building ---- */

static void store_figures(aigw_store *sto, int64_t now, aigw_stats *st)
{
    int64_t until;
    snprintf(st->store_kind, sizeof st->store_kind, "%s", sto->on ? sto->kind : "local");
    st->store_retry_ms = -1;
    if (!sto->on) {
        st->store_state = "ok";
        return;
    }
    switch (atomic_load(&sto->state)) {
    case AIGW_STORE_UP:
        st->store_state = "connected";
        break;
    case AIGW_STORE_DOWN:
        st->store_state = "fallback";
        until = atomic_load(&sto->down_until);
        st->store_retry_ms = until != AIGW_NONE_MS && until > now ? until - now : 0;
        break;
    default:
        st->store_state = "connecting";
        break;
    }
    st->store_n[0] = atomic_load(&sto->syncs);
    st->store_n[1] = atomic_load(&sto->writes);
    st->store_n[2] = atomic_load(&sto->claims);
    st->store_n[3] = atomic_load(&sto->errors);
    st->store_n[4] = atomic_load(&sto->fallbacks);
    st->store_n[5] = atomic_load(&sto->recoveries);
    st->store_n[6] = atomic_load(&sto->ignored);
}

static int ptr_cmp(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)*(const void *const *)a, y = (uintptr_t)*(const void *const *)b;
    return x < y ? -1 : x > y;
}

/* Under the backends', hosts' and endpoints' read locks: every entry after
 * the n_keys keys.  Endpoints are listed (and counted into their backend's
 * state) only for the keys listed, hk: sorted, n_hk of them, so a key
 * rotated away or an old configuration's leaves no trace (hk NULL, with no
 * configuration: every endpoint). */
static int snapshot_tables(aigw_health *h, const aigw_health_opts *o, int64_t now,
                           aigw_stats *st, aigw_hkey *const *hk, size_t n_hk)
{
    backend_tally *t = aigw__calloc(h->backends.n + 1, sizeof *t);
    size_t nb = 0;
    aigw_node *n;
    int rc = -1;
    if (!t)
        return -1;
    for (n = h->backends.first; n; n = n->order, nb++) {
        aigw_site *site = (aigw_site *)n;
        if (fill_backend(&st->v[st->n++], site) != 0)
            goto out;
        t[nb].site = site;
        t[nb].index = nb;
        t[nb].wait = -1;
    }
    qsort(t, nb, sizeof *t, tally_cmp);
    for (n = h->hosts.first; n; n = n->order)
        if (fill_host(&st->v[st->n++], (aigw_site *)n, o, now) != 0)
            goto out;
    for (n = h->endpoints.first; n; n = n->order) {
        aigw_endpoint *ep = (aigw_endpoint *)n;
        if (hk && !bsearch(&ep->key, hk, n_hk, sizeof *hk, ptr_cmp))
            continue;
        if (fill_endpoint(&st->v[st->n++], ep, o, now) != 0)
            goto out;
        tally_endpoint(t, nb, ep, o, now);
    }
    backend_states(st, t, nb);
    rc = 0;
out:
    aigw__free(t);
    return rc;
}

aigw_stats *aigw__health_snapshot(aigw_health *h, const aigw_config *cfg,
                                  const aigw_health_opts *o, int64_t now)
{
    key_list keys = {NULL, 0, 0};
    aigw_stats *st;
    aigw_hkey **hk = NULL;
    size_t i, total;
    int rc;
    if (!h || !(st = aigw__calloc(1, sizeof *st)))
        return NULL;
    if (!o && cfg)
        o = &cfg->health;
    if (keys_to_list(h, cfg, &keys) != 0 || !(hk = aigw__calloc(keys.n + 1, sizeof *hk)))
        goto fail;
    for (i = 0; i < keys.n; i++) /* outside the locks: it may insert */
        hk[i] = keys.v[i].look_up ? aigw__health_key(h, keys.v[i].provider, keys.v[i].id,
                                                     keys.v[i].value, AIGW_ORIGIN_CONFIG)
                                  : keys.v[i].hk;
    aigw__table_rdlock(&h->backends);
    aigw__table_rdlock(&h->hosts);
    aigw__table_rdlock(&h->endpoints);
    total = keys.n + h->backends.n + h->hosts.n + h->endpoints.n;
    rc = (st->v = aigw__calloc(total + 1, sizeof *st->v)) ? 0 : -1;
    for (i = 0; rc == 0 && i < keys.n; i++, st->n++)
        rc = fill_key(&st->v[i], hk[i], keys.v[i].provider, keys.v[i].id, now);
    st->n_keys = keys.n;
    st->n_backends = h->backends.n;
    st->n_hosts = h->hosts.n;
    qsort(hk, keys.n, sizeof *hk, ptr_cmp); /* the keys are filled: now a set */
    if (rc == 0)
        rc = snapshot_tables(h, o, now, st, cfg ? hk : NULL, keys.n);
    aigw__table_unlock(&h->endpoints);
    aigw__table_unlock(&h->hosts);
    aigw__table_unlock(&h->backends);
    if (rc != 0)
        goto fail;
    st->budget_on = o && o->budget_on;
    if (o) {
        st->budget_percent = o->budget_percent;
        st->budget_min_per_sec = o->budget_min_per_sec;
        st->budget_window_ms = o->budget_window_ms;
    }
    aigw__budget_figures(&h->budget, o, now, &st->budget_requests, &st->budget_retries,
                         &st->budget_denied, &st->budget_available);
    store_figures(&h->st, now, st);
    if (!(st->json = stats_to_json(st)))
        goto fail;
    aigw__free(hk);
    aigw__free(keys.v);
    return st;
fail:
    aigw__free(hk);
    aigw__free(keys.v);
    aigw_stats_free(st);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* The public snapshot functions                                            */
/* ------------------------------------------------------------------------ */

void aigw_stats_free(aigw_stats *stats)
{
    size_t i;
    if (!stats)
        return;
    for (i = 0; stats->v && i < stats->n; i++) {
        aigw__free(stats->v[i].own[0]);
        aigw__free(stats->v[i].own[1]);
        aigw__free(stats->v[i].own[2]);
    }
    aigw__free(stats->v);
    aigw__free(stats->json);
    aigw__free(stats);
}

size_t aigw_stats_count(const aigw_stats *stats)
{
    return stats ? stats->n : 0;
}

const aigw_stat *aigw_stats_at(const aigw_stats *stats, size_t i)
{
    return stats && i < stats->n ? &stats->v[i].pub : NULL;
}

uint64_t aigw_stat_failures(const aigw_stat *stat, const char *error_class)
{
    const stat_entry *e = (const stat_entry *)stat; /* pub is its first member */
    int i;
    if (!stat || !error_class)
        return 0;
    for (i = 0; i < AIGW_CLASS__COUNT; i++) {
        const char *name = aigw__class_name((aigw_class)i);
        if (name && strcmp(name, error_class) == 0)
            return e->by_class[i];
    }
    return 0;
}

void aigw_stats_budget(const aigw_stats *stats, uint64_t *requests, uint64_t *retries,
                       uint64_t *denied, int64_t *available)
{
    if (requests)
        *requests = stats ? stats->budget_requests : 0;
    if (retries)
        *retries = stats ? stats->budget_retries : 0;
    if (denied)
        *denied = stats ? stats->budget_denied : 0;
    if (available)
        *available = stats ? stats->budget_available : -1;
}

const char *aigw_stats_json(const aigw_stats *stats)
{
    return stats ? stats->json : NULL;
}

const char *aigw_stats_health_store(const aigw_stats *stats, const char **state)
{
    if (state)
        *state = stats ? stats->store_state : NULL;
    return stats ? stats->store_kind : NULL;
}

uint64_t aigw_stat_latency_le(const aigw_stat *stat, int64_t le_ms)
{
    const stat_entry *e = (const stat_entry *)(const void *)stat;
    uint64_t n = 0;
    int i;
    if (!stat || stat->latency_count == 0)
        return 0;
    if (le_ms >= stat->latency_max_ms)
        return stat->latency_count;
    for (i = 0; i < AIGW_LAT_BUCKETS - 1 && aigw__lat_bound(i) <= le_ms; i++)
        n += e->hist[i];
    return n;
}
