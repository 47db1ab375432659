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

#include <string.h>

static const char *nz(const char *s)
{
    return s ? s : "";
}

/* ------------------------------------------------------------------------ */
/* Key entries                                                              */
/* ------------------------------------------------------------------------ */

typedef struct key_ctx {
    const char *provider;
    const char *id;
    uint64_t vhash;
    bool has_value;
    aigw_key_origin origin;
} key_ctx;

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
    atomic_init(&k->bench_until, AIGW_NONE_MS);
    atomic_init(&k->bench_reason, AIGW_CLASS_NONE);
    aigw__counters_init(&k->c);
    return &k->nd;
}

static const aigw_entry_ops key_ops = {key_eq, key_make, key_destroy};

/* ------------------------------------------------------------------------ */
/* Endpoint entries: a key (by identity: keys never move) with a model      */
/* ------------------------------------------------------------------------ */

typedef struct site_ctx {
    const char *name;
    const char *provider; /* NULL for a host */
    const char *model;
} site_ctx;

typedef struct endpoint_ctx {
    aigw_hkey *key;
    const char *model;
} endpoint_ctx;

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
    atomic_init(&e->cool_until, AIGW_NONE_MS);
    atomic_init(&e->last_limited, AIGW_NONE_MS);
    aigw__breaker_init(&e->br);
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
    c.provider = nz(provider);
    c.id = nz(id);
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
    aigw_sip s;
    uint64_t hash;
    if (!h || !k)
        return NULL;
    c.key = k;
    c.model = nz(model);
    aigw__sip_init(&s, h->sipkey);
    aigw__sip_update(&s, &k->nd.hash, sizeof k->nd.hash);
    aigw__sip_str(&s, c.model);
    hash = aigw__sip_final(&s);
    if (!make)
        return (aigw_endpoint *)aigw__table_find(&h->endpoints, hash, &c);
    return (aigw_endpoint *)aigw__table_get(&h->endpoints, hash, &c);
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

void aigw__hkey_bench(aigw_hkey *k, const aigw_health_opts *o, aigw_class reason, int64_t now)
{
    if (k && o && o->bench_ms > 0 && extend(&k->bench_until, now + o->bench_ms))
        atomic_store(&k->bench_reason, (int)reason);
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
    if (cool > 0)
        extend(&e->cool_until, now + cool);
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
        aigw__breaker_close(&e->br);
    }
    aigw__table_unlock(&h->endpoints);
    if (!id) {
        aigw__table_rdlock(&h->hosts);
        for (n = h->hosts.first; n; n = n->order)
            aigw__breaker_close(&((aigw_site *)n)->br);
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
    if (!h)
        return NULL;
    aigw_site *site;
    c.name = NULL;
    c.provider = nz(provider);
    c.model = nz(model);
    site = get_site(h, &h->backends, &c);
    return site ? &site->br : NULL;
}

aigw_breaker *aigw__health_host(aigw_health *h, const char *url)
{
    site_ctx c;
    aigw_site *site;
    char *origin;
    if (!h || !url || !(origin = aigw__url_origin(url)))
        return NULL;
    c.name = origin;
    c.provider = NULL;
    c.model = NULL;
    site = get_site(h, &h->hosts, &c);
    aigw__free(origin);
    return site ? &site->br : NULL;
}
