/*
 * health.c - the client's health tables (see health.h): keys with their
 * benches, endpoints (a key with one upstream model) with their cooldowns
 * and outlier breakers, backends and hosts.
 *
 * Four chained hash tables (htable.h), hashed with SipHash under a key
 * drawn per client.  A lookup takes a table's read lock; only the first
 * sight of an entry takes its write lock.  Entries never move, so callers
 * keep pointers; their state is atomics.
 */
#include "health_int.h"

#include <stddef.h>
#include <string.h>

static const char *nz(const char *s)
{
    return s ? s : "";
}

/* ------------------------------------------------------------------------ */
/* Key entries                                                              */
/* ------------------------------------------------------------------------ */

typedef struct key_ctx {
    aigw_health *h;
    const char *provider;
    const char *id;
    const aigw_secret *value;
    uint64_t vhash;
    bool has_value;
    aigw_key_origin origin;
} key_ctx;

/* A key's identity in the store: its provider, id and a fleet-keyed hash
 * of its value. */
static uint64_t key_fid(const aigw_store *st, const key_ctx *c)
{
    aigw_sip s;
    uint64_t v = c->has_value ? aigw__siphash24(st->fkey, c->value->value, c->value->len) : 0;
    uint8_t tag = c->has_value ? 1 : 0;
    aigw__sip_init(&s, st->fkey);
    aigw__sip_str(&s, "key");
    aigw__sip_str(&s, c->provider);
    aigw__sip_str(&s, c->id);
    aigw__sip_update(&s, &tag, 1);
    aigw__sip_update(&s, &v, sizeof v);
    return aigw__sip_final(&s);
}

static bool key_eq(const aigw_node *n, const void *ctx)
{
    const aigw_hkey *k = (const aigw_hkey *)n;
    const key_ctx *c = ctx;
    return k->has_value == c->has_value && k->vhash == c->vhash &&
           strcmp(k->provider, c->provider) == 0 && strcmp(k->id, c->id) == 0;
}

static void key_destroy(aigw_node *n)
{
    aigw_hkey *k = (aigw_hkey *)n;
    aigw__free(k->provider);
    aigw__free(k->id);
    aigw__free(k);
}

static aigw_node *key_make(const void *ctx)
{
    const key_ctx *c = ctx;
    aigw_hkey *k = aigw__calloc(1, sizeof *k);
    if (!k)
        return NULL;
    k->provider = aigw__strdup(c->provider);
    k->id = aigw__strdup(c->id);
    if (!k->provider || !k->id) {
        key_destroy(&k->nd);
        return NULL;
    }
    k->vhash = c->vhash;
    k->has_value = c->has_value;
    k->origin = c->origin;
    k->st = &c->h->st;
    k->fid = key_fid(k->st, c);
    atomic_init(&k->bench_until, AIGW_NONE_MS);
    atomic_init(&k->bench_reason, AIGW_CLASS_NONE);
    atomic_init(&k->bench_at, AIGW_NONE_MS);
    atomic_init(&k->synced_at, AIGW_NONE_MS);
    atomic_init(&k->last_endpoint, NULL);
    aigw__counters_init(&k->c);
    return &k->nd;
}

static const aigw_entry_ops key_ops = {key_eq, key_make, key_destroy};

/* ------------------------------------------------------------------------ */
/* Endpoint entries: a key (by identity: keys never move) with a model      */
/* ------------------------------------------------------------------------ */

typedef struct site_ctx {
    aigw_health *h;
    const char *name;
    const char *provider; /* NULL for a host */
    const char *model;
} site_ctx;

typedef struct endpoint_ctx {
    aigw_health *h;
    aigw_hkey *key;
    const char *model;
} endpoint_ctx;

/* An identity in the store: a kind, a number, a string. */
static uint64_t fid_of(const aigw_store *st, const char *kind, uint64_t n, const char *str)
{
    aigw_sip s;
    aigw__sip_init(&s, st->fkey);
    aigw__sip_str(&s, kind);
    aigw__sip_update(&s, &n, sizeof n);
    aigw__sip_str(&s, str);
    return aigw__sip_final(&s);
}

static bool endpoint_eq(const aigw_node *n, const void *ctx)
{
    const aigw_endpoint *e = (const aigw_endpoint *)n;
    const endpoint_ctx *c = ctx;
    return e->key == c->key && strcmp(e->model, c->model) == 0;
}

static void endpoint_destroy(aigw_node *n)
{
    aigw_endpoint *e = (aigw_endpoint *)n;
    aigw__breaker_destroy(&e->br);
    aigw__free(e->model);
    aigw__free(e);
}

static aigw_node *endpoint_make(const void *ctx)
{
    const endpoint_ctx *c = ctx;
    aigw_endpoint *e = aigw__calloc(1, sizeof *e);
    if (!e)
        return NULL;
    if (!(e->model = aigw__strdup(c->model))) {
        aigw__free(e);
        return NULL;
    }
    e->key = c->key;
    e->st = &c->h->st;
    e->fid = fid_of(e->st, "endpoint", c->key->fid, c->model);
    atomic_init(&e->cool_until, AIGW_NONE_MS);
    atomic_init(&e->last_limited, AIGW_NONE_MS);
    atomic_init(&e->synced_at, AIGW_NONE_MS);
    atomic_init(&e->gated, false);
    atomic_init(&e->trial_at, AIGW_NONE_MS);
    atomic_init(&e->cool_at, AIGW_NONE_MS);
    atomic_init(&e->trial_wait_until, AIGW_NONE_MS);
    aigw__breaker_init(&e->br);
    aigw__breaker_share(&e->br, e->st, 'o', e->fid);
    return &e->nd;
}

static const aigw_entry_ops endpoint_ops = {endpoint_eq, endpoint_make, endpoint_destroy};

/* ------------------------------------------------------------------------ */
/* Site entries: backends and hosts                                         */
/* ------------------------------------------------------------------------ */


static bool site_eq(const aigw_node *n, const void *ctx)
{
    const aigw_site *s = (const aigw_site *)n;
    const site_ctx *c = ctx;
    if (c->provider)
        return strcmp(s->provider, c->provider) == 0 && strcmp(s->model, c->model) == 0;
    return strcmp(s->name, c->name) == 0;
}

static void site_destroy(aigw_node *n)
{
    aigw_site *s = (aigw_site *)n;
    aigw__breaker_destroy(&s->br);
    aigw__free(s->name);
    aigw__free(s->provider);
    aigw__free(s->model);
    aigw__free(s);
}

static aigw_node *site_make(const void *ctx)
{
    const site_ctx *c = ctx;
    aigw_site *s = aigw__calloc(1, sizeof *s);
    aigw_buf name = AIGW_BUF_INIT;
    if (!s)
        return NULL;
    aigw__breaker_init(&s->br);
    if (c->provider) {
        if (aigw__buf_printf(&name, "%s:%s", c->provider, c->model) != 0) {
            aigw__buf_free(&name);
            site_destroy(&s->nd);
            return NULL;
        }
        s->name = aigw__buf_take(&name);
    } else {
        s->name = aigw__strdup(c->name);
        if (s->name)
            aigw__breaker_share(&s->br, &c->h->st, 'h', fid_of(&c->h->st, "host", 0, s->name));
    }
    s->provider = aigw__strdup(c->provider ? c->provider : "");
    s->model = aigw__strdup(c->provider ? c->model : "");
    if (!s->name || !s->provider || !s->model) {
        site_destroy(&s->nd);
        return NULL;
    }
    return &s->nd;
}

static const aigw_entry_ops site_ops = {site_eq, site_make, site_destroy};

/* ------------------------------------------------------------------------ */
/* The health object                                                        */
/* ------------------------------------------------------------------------ */

aigw_health *aigw__health_new(void)
{
    aigw_health *h = aigw__calloc(1, sizeof *h);
    if (!h)
        return NULL;
    if (aigw__table_init(&h->keys, AIGW_HEALTH_MAX_KEYS, &key_ops) != 0)
        goto fail_keys;
    if (aigw__table_init(&h->endpoints, AIGW_HEALTH_MAX_ENDPOINTS, &endpoint_ops) != 0)
        goto fail_endpoints;
    if (aigw__table_init(&h->backends, AIGW_HEALTH_MAX_BACKENDS, &site_ops) != 0)
        goto fail_backends;
    if (aigw__table_init(&h->hosts, AIGW_HEALTH_MAX_HOSTS, &site_ops) != 0)
        goto fail_hosts;
    aigw__budget_init(&h->budget);
    aigw__random_bytes(h->sipkey, sizeof h->sipkey);
    aigw__store_init(&h->st, NULL);
    return h;
    /* only the tables made so far are freed */
fail_hosts:
    aigw__table_free(&h->backends);
fail_backends:
    aigw__table_free(&h->endpoints);
fail_endpoints:
    aigw__table_free(&h->keys);
fail_keys:
    aigw__free(h);
    return NULL;
}

void aigw__health_expect_keys(aigw_health *h, size_t n_keys)
{
    aigw__table_make_room(&h->keys, n_keys + AIGW_HEALTH_MAX_KEYS);
    aigw__table_make_room(&h->endpoints, 2 * n_keys + AIGW_HEALTH_MAX_ENDPOINTS);
}

void aigw__health_free(aigw_health *h)
{
    if (!h)
        return;
    /* endpoints point at keys: they go first */
    aigw__table_free(&h->endpoints);
    aigw__table_free(&h->keys);
    aigw__table_free(&h->backends);
    aigw__table_free(&h->hosts);
    aigw__budget_destroy(&h->budget);
    aigw__store_set(&h->st, NULL, NULL, 0);
    aigw__wipe(h->st.fkey, sizeof h->st.fkey);
    aigw__wipe(h->sipkey, sizeof h->sipkey);
    aigw__free(h);
}

/* ------------------------------------------------------------------------ */
/* Keys and endpoints                                                       */
/* ------------------------------------------------------------------------ */

aigw_hkey *aigw__health_key(aigw_health *h, const char *provider, const char *id,
                            const aigw_secret *value, aigw_key_origin origin)
{
    key_ctx c;
    aigw_sip s;
    uint8_t tag;
    if (!h)
        return NULL;
    c.h = h;
    c.provider = nz(provider);
    c.id = nz(id);
    c.value = value;
    c.has_value = value && value->value;
    c.vhash = c.has_value ? aigw__siphash24(h->sipkey, value->value, value->len) : 0;
    c.origin = origin;
    tag = c.has_value ? 1 : 0;
    aigw__sip_init(&s, h->sipkey);
    aigw__sip_str(&s, c.provider);
    aigw__sip_str(&s, c.id);
    aigw__sip_update(&s, &tag, 1);
    aigw__sip_update(&s, &c.vhash, sizeof c.vhash);
    return (aigw_hkey *)aigw__table_get(&h->keys, aigw__sip_final(&s), &c);
}

aigw_endpoint *aigw__health_endpoint(aigw_health *h, aigw_hkey *k, const char *model, bool make)
{
    endpoint_ctx c;
    aigw_endpoint *e;
    aigw_sip s;
    uint64_t hash;
    if (!h || !k)
        return NULL;
    c.h = h;
    c.key = k;
    c.model = nz(model);
    /* a key is mostly asked for with one model: the last one found */
    e = atomic_load_explicit(&k->last_endpoint, memory_order_acquire);
    if (e && strcmp(e->model, c.model) == 0)
        return e;
    aigw__sip_init(&s, h->sipkey);
    aigw__sip_update(&s, &k->nd.hash, sizeof k->nd.hash);
    aigw__sip_str(&s, c.model);
    hash = aigw__sip_final(&s);
    if (!make)
        e = (aigw_endpoint *)aigw__table_find(&h->endpoints, hash, &c);
    else
        e = (aigw_endpoint *)aigw__table_get(&h->endpoints, hash, &c);
    if (e)
        atomic_store_explicit(&k->last_endpoint, e, memory_order_release);
    return e;
}

aigw_key_state aigw__key_state(const aigw_hkey *k, const aigw_endpoint *e, int64_t now,
                               int64_t *wait_ms)
{
    int64_t bench, cool;
    if (wait_ms)
        *wait_ms = 0;
    bench = k ? atomic_load_explicit(&k->bench_until, memory_order_relaxed) : AIGW_NONE_MS;
    if (bench > now) {
        if (wait_ms)
            *wait_ms = bench - now;
        return AIGW_KEY_BENCHED;
    }
    cool = e ? atomic_load_explicit(&e->cool_until, memory_order_relaxed) : AIGW_NONE_MS;
    if (cool > now) {
        if (wait_ms)
            *wait_ms = cool - now;
        return AIGW_KEY_COOLING;
    }
    return AIGW_KEY_READY;
}

aigw_class aigw__key_reason(const aigw_hkey *k, const aigw_endpoint *e, int64_t now)
{
    switch (aigw__key_state(k, e, now, NULL)) {
    case AIGW_KEY_BENCHED:
        return (aigw_class)atomic_load_explicit(&k->bench_reason, memory_order_relaxed);
    case AIGW_KEY_COOLING:
        return AIGW_CLASS_RATE_LIMIT;
    default:
        return AIGW_CLASS_NONE;
    }
}

void aigw__key_view(const aigw_hkey *k, const aigw_endpoint *e, int64_t now, uint32_t weight,
                    aigw_key_health *out)
{
    int64_t limited;
    memset(out, 0, sizeof *out);
    out->weight = weight;
    out->since_limited_ms = -1;
    out->latency_mean_ms = -1;
    out->id = k ? k->id : "";
    out->state = aigw__key_state(k, e, now, &out->wait_ms);
    if (!e)
        return;
    limited = atomic_load_explicit(&e->last_limited, memory_order_relaxed);
    if (limited != AIGW_NONE_MS)
        out->since_limited_ms = now > limited ? now - limited : 0;
    out->requests = atomic_load_explicit(&e->br.c.requests, memory_order_relaxed);
    out->successes = atomic_load_explicit(&e->br.c.successes, memory_order_relaxed);
    out->failures = atomic_load_explicit(&e->br.c.failures, memory_order_relaxed);
    out->latency_mean_ms = aigw__counters_mean(&e->br.c);
}

void aigw__key_skipped(aigw_hkey *k, aigw_endpoint *e)
{
    if (k)
        aigw__counters_skip(&k->c);
    if (e)
        aigw__counters_skip(&e->br.c);
}

void aigw__hkey_count(aigw_hkey *k, aigw_class cls, int64_t latency_ms)
{
    if (k)
        aigw__counters_add(&k->c, cls == AIGW_CLASS_NONE, cls != AIGW_CLASS_NONE, cls,
                           latency_ms);
}

/* Moves *until to t unless it is already later.  True when it moved. */
static bool extend(_Atomic int64_t *until, int64_t t)
{
    int64_t cur = atomic_load(until);
    while (cur < t)
        if (atomic_compare_exchange_weak(until, &cur, t))
            return true;
    return false;
}

/* Tells the store a fact of a key or an endpoint. */
static void publish(aigw_store *st, char kind, uint64_t fid, aigw_fact_kind fk, aigw_class cls,
                    int64_t ttl_ms, int64_t now)
{
    char name[24];
    aigw_store_entry e;
    if (!st->on || ttl_ms <= 0 || !aigw__store_usable(st, now))
        return;
    aigw__store_name(name, kind, fid);
    aigw__fact_entry(&e, name, st, fk, cls, 0, ttl_ms);
    aigw__store_put(st, &e, 1, now);
}

void aigw__hkey_bench(aigw_hkey *k, const aigw_health_opts *o, aigw_class reason, int64_t now)
{
    if (k && o && o->bench_ms > 0 && extend(&k->bench_until, now + o->bench_ms)) {
        atomic_store(&k->bench_reason, (int)reason);
        atomic_store(&k->bench_at, now);
        publish(k->st, 'b', k->fid, AIGW_FACT_BENCH, reason, o->bench_ms, now);
    }
}

static int64_t jittered(int64_t cooldown_ms)
{
    uint64_t r;
    int64_t half = cooldown_ms / 2, span = cooldown_ms - half;
    aigw__fast_random(&r, sizeof r);
    return half + (int64_t)(r % ((uint64_t)span + 1));
}

int64_t aigw__endpoint_cool(aigw_endpoint *e, const aigw_health_opts *o, int64_t wait_ms,
                            int64_t now)
{
    int64_t cool, until;
    if (!e || !o)
        return 0;
    if (wait_ms >= 0)
        cool = wait_ms;
    else
        cool = o->cooldown_ms > 0 ? jittered(o->cooldown_ms) : 0;
    if (cool > o->cooldown_max_ms) /* the cap holds for the default too */
        cool = o->cooldown_max_ms;
    extend(&e->last_limited, now); /* the latest, whatever order reports come in */
    if (cool > 0 && extend(&e->cool_until, now + cool))
        atomic_store(&e->cool_at, now);
    if (cool > 0 && atomic_load(&e->cool_at) == now && e->st->on) {
        atomic_store(&e->gated, true);
        publish(e->st, 'c', e->fid, AIGW_FACT_COOL, AIGW_CLASS_RATE_LIMIT, cool, now);
    }
    until = atomic_load(&e->cool_until);
    return until > now ? until - now : 0;
}

aigw_breaker *aigw__endpoint_breaker(aigw_endpoint *e)
{
    return e ? &e->br : NULL;
}

void aigw__health_end_benches(aigw_health *h)
{
    aigw_node *n;
    if (!h)
        return;
    aigw__table_rdlock(&h->keys);
    for (n = h->keys.first; n; n = n->order)
        atomic_store(&((aigw_hkey *)n)->bench_until, AIGW_NONE_MS);
    aigw__table_unlock(&h->keys);
}

size_t aigw__health_reset(aigw_health *h, const char *id)
{
    aigw_node *n;
    size_t matched = 0;
    if (!h)
        return 0;
    aigw__table_rdlock(&h->keys);
    for (n = h->keys.first; n; n = n->order) {
        aigw_hkey *k = (aigw_hkey *)n;
        if (id && strcmp(k->id, id) != 0)
            continue;
        atomic_store(&k->bench_until, AIGW_NONE_MS);
        matched++;
    }
    aigw__table_unlock(&h->keys);
    aigw__table_rdlock(&h->endpoints);
    for (n = h->endpoints.first; n; n = n->order) {
        aigw_endpoint *e = (aigw_endpoint *)n;
        if (id && strcmp(e->key->id, id) != 0)
            continue;
        atomic_store(&e->cool_until, AIGW_NONE_MS);
        atomic_store(&e->gated, false);
        atomic_store(&e->trial_wait_until, AIGW_NONE_MS);
        aigw__breaker_close(&e->br, AIGW_NONE_MS);
    }
    aigw__table_unlock(&h->endpoints);
    if (!id) {
        aigw__table_rdlock(&h->hosts);
        for (n = h->hosts.first; n; n = n->order)
            aigw__breaker_close(&((aigw_site *)n)->br, AIGW_NONE_MS);
        aigw__table_unlock(&h->hosts);
    }
    return matched;
}

/* ------------------------------------------------------------------------ */
/* Backends and hosts                                                       */
/* ------------------------------------------------------------------------ */

static aigw_site *get_site(aigw_health *h, aigw_table *t, const site_ctx *c)
{
    aigw_sip s;
    aigw__sip_init(&s, h->sipkey);
    if (c->provider) {
        aigw__sip_str(&s, c->provider);
        aigw__sip_str(&s, c->model);
    } else {
        aigw__sip_str(&s, c->name);
    }
    return (aigw_site *)aigw__table_get(t, aigw__sip_final(&s), c);
}

aigw_breaker *aigw__health_backend(aigw_health *h, const char *provider, const char *model)
{
    site_ctx c;
    aigw_site *site;
    if (!h)
        return NULL;
    c.h = h;
    c.name = NULL;
    c.provider = nz(provider);
    c.model = nz(model);
    site = get_site(h, &h->backends, &c);
    return site ? &site->br : NULL;
}

aigw_breaker *aigw__health_backend_at(aigw_health *h, const char *provider, const char *model,
                                      _Atomic(aigw_breaker *) *memo)
{
    aigw_breaker *b = memo ? atomic_load_explicit(memo, memory_order_acquire) : NULL;
    if (b) {
        const aigw_site *site = (const aigw_site *)(const void *)((const char *)b -
                                                                  offsetof(aigw_site, br));
        if (strcmp(site->model, nz(model)) == 0 && strcmp(site->provider, nz(provider)) == 0)
            return b;
    }
    b = aigw__health_backend(h, provider, model);
    if (memo && b)
        atomic_store_explicit(memo, b, memory_order_release);
    return b;
}

aigw_breaker *aigw__health_host_origin(aigw_health *h, const char *origin)
{
    site_ctx c;
    aigw_site *site;
    if (!h || !origin)
        return NULL;
    c.h = h;
    c.name = origin;
    c.provider = NULL;
    c.model = NULL;
    site = get_site(h, &h->hosts, &c);
    return site ? &site->br : NULL;
}

aigw_breaker *aigw__health_host(aigw_health *h, const char *url)
{
    aigw_breaker *b;
    char *origin;
    if (!h || !url || !(origin = aigw__url_origin(url)))
        return NULL;
    b = aigw__health_host_origin(h, origin);
    aigw__free(origin);
    return b;
}

/* ------------------------------------------------------------------------ */
/* The health store: shared facts (store.c has the calls and the values)   */
/* ------------------------------------------------------------------------ */

void aigw__health_salt(aigw_health *h, const aigw_secret *salt)
{
    aigw_store *st = &h->st;
    if (salt && salt->value && salt->len) {
        aigw_store fresh;
        aigw__store_init(&fresh, salt);
        memcpy(st->fkey, fresh.fkey, sizeof st->fkey);
        aigw__wipe(fresh.fkey, sizeof fresh.fkey);
    }
}

void aigw__health_set_store(aigw_health *h, const aigw_health_store *vt, void *ud,
                            int64_t sync_ms)
{
    aigw__store_set(&h->st, vt, ud, sync_ms);
}

const char *aigw__health_store_kind(aigw_health *h)
{
    return h->st.on ? h->st.kind : "local";
}

uint64_t aigw__health_store_fallbacks(aigw_health *h)
{
    return atomic_load(&h->st.fallbacks);
}

bool aigw__health_store_down(aigw_health *h)
{
    return !h->st.on || atomic_load(&h->st.state) == AIGW_STORE_DOWN;
}

/* The longest another client's first try after a cooldown keeps a key to
 * itself. */
static int64_t trial_ms(const aigw_health_opts *o)
{
    return o->probe_timeout_ms < 1000 ? o->probe_timeout_ms : 1000;
}

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

aigw_admit aigw__endpoint_admit(aigw_endpoint *e, const aigw_health_opts *o, int64_t now,
                                int64_t *wait_ms)
{
    char name[24];
    aigw_store_entry se;
    aigw_fact f;
    int64_t t;
    int rc;
    *wait_ms = 0;
    if (!e || !o || !e->st->on || !atomic_load_explicit(&e->gated, memory_order_relaxed) ||
        !aigw__store_usable(e->st, now))
        return AIGW_ADMIT_GO;
    /* a breaker that will not let it go anyway: no claim for nothing */
    if (!aigw__breaker_would_admit(&e->br, o, now))
        return AIGW_ADMIT_GO;
    t = atomic_load(&e->trial_wait_until);
    if (now < t) {
        *wait_ms = t - now;
        return AIGW_ADMIT_OPEN;
    }
    /* one first try per client: its other requests leave the key to it
     * (one that has not answered within trial_ms is presumed lost) */
    t = atomic_load(&e->trial_at);
    if (t != AIGW_NONE_MS && now < t + trial_ms(o)) {
        *wait_ms = min64(e->st->sync_ms, t + trial_ms(o) - now);
        return AIGW_ADMIT_OPEN;
    }
    if (!atomic_compare_exchange_strong(&e->trial_at, &t, now)) {
        *wait_ms = min64(e->st->sync_ms, trial_ms(o));
        return AIGW_ADMIT_OPEN;
    }
    aigw__store_name(name, 'c', e->fid);
    aigw__fact_entry(&se, name, e->st, AIGW_FACT_TRIAL, AIGW_CLASS_NONE, 0, trial_ms(o));
    rc = aigw__store_claim(e->st, &se, now);
    if (rc < 0) { /* on its own: as without a store */
        atomic_store(&e->trial_at, AIGW_NONE_MS);
        return AIGW_ADMIT_GO;
    }
    if (rc == 1 || se.ttl_ms == AIGW_STORE_ABSENT)
        return AIGW_ADMIT_PROBE;
    if (se.ttl_ms < 0 || aigw__fact_parse(e->st, se.value, &f) != 0 ||
        (f.kind != AIGW_FACT_COOL && f.kind != AIGW_FACT_TRIAL)) {
        /* not a fact of this name (or a reset's "clear"): written over */
        aigw__fact_entry(&se, name, e->st, AIGW_FACT_TRIAL, AIGW_CLASS_NONE, 0, trial_ms(o));
        aigw__store_put(e->st, &se, 1, now);
        return AIGW_ADMIT_PROBE;
    }
    if (f.kind == AIGW_FACT_TRIAL && f.ours)
        return AIGW_ADMIT_PROBE;
    atomic_store(&e->trial_at, AIGW_NONE_MS);
    if (f.kind == AIGW_FACT_COOL) { /* cooling again, fleet-wide */
        t = min64(se.ttl_ms, o->cooldown_max_ms);
        if (extend(&e->cool_until, now + t))
            atomic_store(&e->cool_at, now);
        *wait_ms = t > 0 ? t : 1;
        return AIGW_ADMIT_OPEN;
    }
    t = min64(se.ttl_ms, e->st->sync_ms); /* another client's first try */
    if (t < 1)
        t = 1;
    atomic_store(&e->trial_wait_until, now + t);
    *wait_ms = t;
    return AIGW_ADMIT_OPEN;
}

void aigw__endpoint_trial_done(aigw_endpoint *e, aigw_class cls, bool abandoned, int64_t now)
{
    char name[24];
    aigw_store_entry se;
    if (!e || atomic_exchange(&e->trial_at, AIGW_NONE_MS) == AIGW_NONE_MS)
        return;
    if (!abandoned && cls == AIGW_CLASS_RATE_LIMIT)
        return; /* its cooldown was written over the trial */
    if (!abandoned) /* answered otherwise: the rate limit is behind it */
        atomic_store(&e->gated, false);
    aigw__store_name(name, 'c', e->fid);
    aigw__fact_entry(&se, name, e->st, AIGW_FACT_TRIAL, AIGW_CLASS_NONE, 0, 0);
    aigw__store_write1(e->st, name, &se, now);
}

/* ---- reading the store ---- */

enum { SY_BENCH = 'b', SY_COOL = 'c', SY_BREAKER = 'o' };

void aigw__sync_begin(aigw_sync *s, aigw_health *h, const aigw_health_opts *o, int64_t now)
{
    s->h = h;
    s->o = o;
    s->now = now;
    s->n = 0;
    s->on = h && o && aigw__store_usable(&h->st, now);
}

/* Whether an entry read at *at is due, and if so this caller reads it. */
static bool due(aigw_sync *s, _Atomic int64_t *at)
{
    int64_t t = atomic_load_explicit(at, memory_order_relaxed);
    if (t != AIGW_NONE_MS && s->now - t < s->h->st.sync_ms)
        return false;
    return atomic_compare_exchange_strong(at, &t, s->now);
}

/* Republishes a fact this client holds that the store lost (restarted,
 * flushed) or holds garbage for. */
static void tell_again(aigw_sync *s, aigw_store_entry *w, size_t *nw, const char *name,
                       aigw_fact_kind fk, aigw_class cls, int64_t until)
{
    if (until == AIGW_NONE_MS || until <= s->now || *nw >= AIGW_SYNC_MAX)
        return;
    aigw__fact_entry(&w[*nw], name, &s->h->st, fk, cls, 0, until - s->now);
    (*nw)++;
}

static void apply_bench(aigw_sync *s, aigw_hkey *k, const aigw_store_entry *e,
                        aigw_store_entry *w, size_t *nw)
{
    aigw_fact f;
    int64_t until = atomic_load(&k->bench_until);
    if (e->ttl_ms >= 0 && aigw__fact_parse(&s->h->st, e->value, &f) == 0) {
        if (f.kind == AIGW_FACT_BENCH) {
            if (s->o->bench_ms > 0 &&
                extend(&k->bench_until, s->now + min64(e->ttl_ms, s->o->bench_ms))) {
                atomic_store(&k->bench_reason, (int)f.cls);
                atomic_store(&k->bench_at, s->now);
            }
            return;
        }
        if (f.kind == AIGW_FACT_CLEAR) { /* reset: ends what was known before */
            if (atomic_load(&k->bench_at) < s->now)
                atomic_store(&k->bench_until, AIGW_NONE_MS);
            return;
        }
    }
    if (e->ttl_ms == AIGW_STORE_UNREADABLE)
        atomic_fetch_add(&s->h->st.ignored, 1);
    tell_again(s, w, nw, e->name, AIGW_FACT_BENCH,
               (aigw_class)atomic_load(&k->bench_reason), until);
}

static void apply_cool(aigw_sync *s, aigw_endpoint *ep, const aigw_store_entry *e,
                       aigw_store_entry *w, size_t *nw)
{
    aigw_fact f;
    int64_t until = atomic_load(&ep->cool_until);
    if (e->ttl_ms >= 0 && aigw__fact_parse(&s->h->st, e->value, &f) == 0) {
        if (f.kind == AIGW_FACT_COOL) {
            if (extend(&ep->cool_until, s->now + min64(e->ttl_ms, s->o->cooldown_max_ms)))
                atomic_store(&ep->cool_at, s->now);
            atomic_store(&ep->gated, true);
            return;
        }
        if (f.kind == AIGW_FACT_CLEAR) { /* reset: ends what was known before */
            if (atomic_load(&ep->cool_at) < s->now) {
                atomic_store(&ep->cool_until, AIGW_NONE_MS);
                atomic_store(&ep->gated, false);
            }
            return;
        }
        if (f.kind == AIGW_FACT_TRIAL) {
            if (!f.ours) {
                atomic_store(&ep->trial_wait_until,
                             s->now + min64(e->ttl_ms, s->h->st.sync_ms));
                atomic_store(&ep->gated, true);
            }
            return;
        }
    } else if (e->ttl_ms == AIGW_STORE_UNREADABLE) {
        atomic_fetch_add(&s->h->st.ignored, 1);
    }
    tell_again(s, w, nw, e->name, AIGW_FACT_COOL, AIGW_CLASS_RATE_LIMIT, until);
}

/* The endpoint an entry is about: the caller's, or (a fact to apply) made
 * now. */
static aigw_endpoint *entry_endpoint(aigw_sync *s, size_t i, bool fact)
{
    aigw_endpoint **slot = s->slot[i];
    if (!*slot && fact)
        *slot = aigw__health_endpoint(s->h, (aigw_hkey *)s->what[i], s->model[i], true);
    return *slot;
}

/* Whether an entry holds a fact of that kind (what holds no fact is
 * counted as ignored). */
static bool holds(aigw_sync *s, size_t i, aigw_fact_kind k1, aigw_fact_kind k2)
{
    aigw_fact f;
    if (s->e[i].ttl_ms == AIGW_STORE_ABSENT)
        return false;
    if (s->e[i].ttl_ms < 0 || aigw__fact_parse(&s->h->st, s->e[i].value, &f) != 0) {
        if (s->e[i].ttl_ms < 0)
            atomic_fetch_add(&s->h->st.ignored, 1);
        return false;
    }
    return f.kind == k1 || f.kind == k2;
}

static void flush(aigw_sync *s)
{
    aigw_store_entry w[AIGW_SYNC_MAX];
    size_t i, nw = 0;
    int64_t start = s->now;
    aigw_endpoint *ep;
    if (s->n == 0)
        return;
    for (i = 0; i < s->n; i++)
        s->e[i].name = s->names[i];
    if (aigw__store_get(&s->h->st, s->e, s->n, start) != 0) {
        s->n = 0;
        s->on = false;
        return;
    }
    for (i = 0; i < s->n; i++) {
        switch (s->kind[i]) {
        case SY_BENCH:
            apply_bench(s, (aigw_hkey *)s->what[i], &s->e[i], w, &nw);
            break;
        case SY_COOL:
            ep = s->slot[i] ? entry_endpoint(s, i, holds(s, i, AIGW_FACT_COOL, AIGW_FACT_TRIAL))
                            : (aigw_endpoint *)s->what[i];
            if (ep)
                apply_cool(s, ep, &s->e[i], w, &nw);
            break;
        default:
            if (s->slot[i]) {
                ep = entry_endpoint(s, i, holds(s, i, AIGW_FACT_OPEN, AIGW_FACT_OPEN));
                if (ep)
                    aigw__breaker_apply(&ep->br, s->o, &s->e[i], start, s->now);
            } else {
                aigw__breaker_apply((aigw_breaker *)s->what[i], s->o, &s->e[i], start, s->now);
            }
            break;
        }
    }
    s->n = 0;
    if (nw)
        aigw__store_put(&s->h->st, w, nw, s->now);
}

/* One name to read: about what (a key, an endpoint, a breaker), or, slot
 * set, about the endpoint of the key `what` with model, made only if the
 * store holds a fact for it. */
static void add(aigw_sync *s, char kind, void *what, aigw_endpoint **slot, const char *model,
                char name_kind, uint64_t fid)
{
    if (s->n == AIGW_SYNC_MAX)
        flush(s);
    if (!s->on)
        return;
    aigw__store_name(s->names[s->n], name_kind, fid);
    s->kind[s->n] = kind;
    s->what[s->n] = what;
    s->slot[s->n] = slot;
    s->model[s->n] = model;
    s->n++;
}

void aigw__sync_key(aigw_sync *s, aigw_hkey *k, aigw_endpoint **ep, const char *model)
{
    if (!s->on || !k)
        return;
    if (!*ep)
        *ep = aigw__health_endpoint(s->h, k, model, false);
    if (*ep) {
        /* an entry made since its key was read: read with it */
        int64_t never = AIGW_NONE_MS, ks = atomic_load(&k->synced_at);
        if (ks != AIGW_NONE_MS)
            atomic_compare_exchange_strong(&(*ep)->synced_at, &never, ks);
        if (due(s, &k->synced_at))
            add(s, SY_BENCH, k, NULL, NULL, 'b', k->fid);
        if (due(s, &(*ep)->synced_at)) {
            add(s, SY_COOL, *ep, NULL, NULL, 'c', (*ep)->fid);
            add(s, SY_BREAKER, &(*ep)->br, NULL, NULL, 'o', (*ep)->fid);
        }
    } else if (due(s, &k->synced_at)) {
        /* no entry for the model yet: one is made only for a fact (model
         * names that only ever fail fast take no room) */
        uint64_t fid = fid_of(&s->h->st, "endpoint", k->fid, nz(model));
        add(s, SY_BENCH, k, NULL, NULL, 'b', k->fid);
        add(s, SY_COOL, k, ep, nz(model), 'c', fid);
        add(s, SY_BREAKER, k, ep, nz(model), 'o', fid);
    }
}

void aigw__sync_host(aigw_sync *s, aigw_breaker *host)
{
    if (s->on && host && host->kind && due(s, &host->synced_at))
        add(s, SY_BREAKER, host, NULL, NULL, host->kind, host->fid);
}

void aigw__sync_end(aigw_sync *s)
{
    if (s->on)
        flush(s);
}

/* ---- forgetting in the store too ---- */

/* A list of names to forget, collected under the tables' locks and
 * written after. */
typedef struct forget_list {
    char (*names)[24];
    aigw_store_entry *e;
    size_t n, cap;
} forget_list;

static void forget_add(forget_list *l, const aigw_store *st, char kind, uint64_t fid,
                       bool tombstone, int64_t ttl)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 32;
        char(*nn)[24] = aigw__malloc(cap * sizeof *nn);
        aigw_store_entry *ne = aigw__malloc(cap * sizeof *ne);
        if (!nn || !ne) {
            aigw__free(nn);
            aigw__free(ne);
            return; /* out of memory: those are not forgotten in the store */
        }
        if (l->n) {
            memcpy(nn, l->names, l->n * sizeof *nn);
            memcpy(ne, l->e, l->n * sizeof *ne);
        }
        aigw__free(l->names);
        aigw__free(l->e);
        l->names = nn;
        l->e = ne;
        l->cap = cap;
    }
    aigw__store_name(l->names[l->n], kind, fid);
    if (tombstone) /* "clear": whoever learned the fact before ends it too */
        aigw__fact_entry(&l->e[l->n], NULL, st, AIGW_FACT_CLEAR, AIGW_CLASS_NONE, 0,
                         ttl > 1000 ? ttl : 1000);
    else /* deleted, whatever it holds (a breaker: closed) */
        memset(&l->e[l->n], 0, sizeof l->e[l->n]);
    l->n++;
}

void aigw__health_forget_shared(aigw_health *h, const aigw_health_opts *o, const char *id,
                                bool all_scopes, int64_t now)
{
    forget_list l = {NULL, NULL, 0, 0};
    aigw_node *nd;
    size_t i;
    if (!h || !o || !aigw__store_usable(&h->st, now))
        return;
    aigw__table_rdlock(&h->keys);
    for (nd = h->keys.first; nd; nd = nd->order) {
        aigw_hkey *k = (aigw_hkey *)nd;
        if (!id || strcmp(k->id, id) == 0)
            forget_add(&l, &h->st, 'b', k->fid, true, o->bench_ms);
    }
    aigw__table_unlock(&h->keys);
    if (all_scopes) {
        aigw__table_rdlock(&h->endpoints);
        for (nd = h->endpoints.first; nd; nd = nd->order) {
            aigw_endpoint *e = (aigw_endpoint *)nd;
            if (id && strcmp(e->key->id, id) != 0)
                continue;
            forget_add(&l, &h->st, 'c', e->fid, true, o->cooldown_max_ms);
            forget_add(&l, &h->st, 'o', e->fid, false, 0);
            forget_add(&l, &h->st, 'p', e->fid, false, 0);
        }
        aigw__table_unlock(&h->endpoints);
    }
    if (all_scopes && !id) {
        aigw__table_rdlock(&h->hosts);
        for (nd = h->hosts.first; nd; nd = nd->order) {
            aigw_site *site = (aigw_site *)nd;
            forget_add(&l, &h->st, 'h', site->br.fid, false, 0);
            forget_add(&l, &h->st, 'q', site->br.fid, false, 0);
        }
        aigw__table_unlock(&h->hosts);
    }
    /* written outside the locks, AIGW_SYNC_MAX names a round trip */
    for (i = 0; i < l.n; i++)
        l.e[i].name = l.names[i];
    for (i = 0; i < l.n; i += AIGW_SYNC_MAX)
        aigw__store_put(&h->st, l.e + i, l.n - i < AIGW_SYNC_MAX ? l.n - i : AIGW_SYNC_MAX, now);
    aigw__free(l.names);
    aigw__free(l.e);
}
