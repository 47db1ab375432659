/*
 * resolved.c - what one client resolves of one configuration, once rather
 * than per request: each provider's base URL split (whether it has a path,
 * its origin) and its host's breaker, the last backend found for it, and
 * the health entry of each key.  The client makes one for each
 * configuration it installs, so a swap starts afresh (the new one finds the
 * same health entries again, by name); requests fill its slots the first
 * time they need one and read it after that.
 *
 * Nothing is resolved before a request asks for it, so the health tables
 * hold what they held without it, made in the same order.  Slots are
 * atomics written once with what any thread would find (two that race
 * store the same pointer); health entries never move or go away while the
 * client lives, so the pointers stay good.  A lookup that found nothing
 * (a full table, no memory) is not remembered: the next request asks again.
 */
#include "engine.h"

#include <stdatomic.h>
#include <string.h>

/* A provider's base URL, or (the last) ngrok's gateway. */
typedef struct site {
    _Atomic int has_path;              /* -1 until the URL is read */
    char *_Atomic origin;              /* NULL until read; no_origin: none */
    _Atomic(aigw_breaker *) host;
    _Atomic(aigw_breaker *) backend;   /* the last one found for a model */
    _Atomic(aigw_hkey *) ngrok;        /* (provider, "ngrok", the ngrok key) */
    _Atomic(aigw_hkey *) keyless;      /* (provider, "", no value) */
} site;

/* A key of the configuration, by the address of its aigw_pkey or
 * aigw_step_key, with the provider it was first asked for (a rule for a
 * model alone may send a step's keys to several). */
typedef struct key_slot {
    const void *at; /* NULL: an empty slot */
    _Atomic(const aigw_provider *) prov;
    _Atomic(aigw_hkey *) hk;
} key_slot;

struct aigw_resolved {
    _Atomic long refs;
    aigw_config *cfg; /* a reference */
    aigw_health *h;   /* the client's */
    bool distinct_ids; /* no two provider ids match ignoring case */
    _Atomic(const aigw_provider *) prefix; /* the last "provider:" found */
    size_t n_sites;   /* cfg->n_providers + 1 */
    site *sites;
    size_t key_mask;  /* the key table's size - 1 (a power of two) */
    key_slot *keys;
};

static char no_origin[] = "";

static size_t slot_of(const aigw_resolved *r, const void *at)
{
    uint64_t x = (uint64_t)(uintptr_t)at;
    x ^= x >> 29;
    x *= 0x9e3779b97f4a7c15ULL;
    return (size_t)(x >> 17) & r->key_mask;
}

static void add_key(aigw_resolved *r, const void *at)
{
    size_t i = slot_of(r, at);
    while (r->keys[i].at)
        i = (i + 1) & r->key_mask;
    r->keys[i].at = at;
}

static size_t count_keys(const aigw_config *cfg)
{
    size_t a, i, s, n = cfg->n_keys;
    for (a = 0; a < cfg->n_akcs; a++)
        for (i = 0; i < cfg->akcs[a].n_rules; i++)
            for (s = 0; s < cfg->akcs[a].rules[i].n_steps; s++)
                n += cfg->akcs[a].rules[i].steps[s].n_keys;
    return n;
}

static void index_keys(aigw_resolved *r)
{
    const aigw_config *cfg = r->cfg;
    size_t a, i, s, k;
    for (i = 0; i < cfg->n_keys; i++)
        add_key(r, &cfg->keys[i]);
    for (a = 0; a < cfg->n_akcs; a++)
        for (i = 0; i < cfg->akcs[a].n_rules; i++)
            for (s = 0; s < cfg->akcs[a].rules[i].n_steps; s++) {
                const aigw_step *st = &cfg->akcs[a].rules[i].steps[s];
                for (k = 0; k < st->n_keys; k++)
                    add_key(r, &st->keys[k]);
            }
}

/* Whether a "provider:" prefix matches at most one provider (ids are
 * lower-case and unique: only a check). */
static bool distinct_ids(const aigw_config *cfg)
{
    size_t i, j;
    for (i = 0; i < cfg->n_providers; i++)
        for (j = i + 1; j < cfg->n_providers; j++)
            if (!cfg->providers[i].id || !cfg->providers[j].id ||
                aigw__strcasecmp(cfg->providers[i].id, cfg->providers[j].id) == 0)
                return false;
    return true;
}

aigw_resolved *aigw__resolved_new(aigw_config *cfg, aigw_health *h)
{
    aigw_resolved *r;
    size_t n = count_keys(cfg), cap = 4, i;
    while (cap < 2 * n)
        cap *= 2;
    if (!(r = aigw__calloc(1, sizeof *r)))
        return NULL;
    r->n_sites = cfg->n_providers + 1;
    r->sites = aigw__calloc(r->n_sites, sizeof *r->sites);
    r->keys = aigw__calloc(cap, sizeof *r->keys);
    if (!r->sites || !r->keys) {
        aigw__free(r->sites);
        aigw__free(r->keys);
        aigw__free(r);
        return NULL;
    }
    atomic_init(&r->refs, 1);
    r->cfg = aigw_config_ref(cfg);
    r->h = h;
    r->key_mask = cap - 1;
    for (i = 0; i < r->n_sites; i++) {
        atomic_init(&r->sites[i].has_path, -1);
        atomic_init(&r->sites[i].origin, NULL);
        atomic_init(&r->sites[i].host, NULL);
        atomic_init(&r->sites[i].backend, NULL);
        atomic_init(&r->sites[i].ngrok, NULL);
        atomic_init(&r->sites[i].keyless, NULL);
    }
    for (i = 0; i < cap; i++) {
        atomic_init(&r->keys[i].prov, NULL);
        atomic_init(&r->keys[i].hk, NULL);
    }
    atomic_init(&r->prefix, NULL);
    r->distinct_ids = distinct_ids(cfg);
    index_keys(r);
    return r;
}

aigw_resolved *aigw__resolved_ref(aigw_resolved *r)
{
    if (r)
        atomic_fetch_add_explicit(&r->refs, 1, memory_order_relaxed);
    return r;
}

void aigw__resolved_unref(aigw_resolved *r)
{
    size_t i;
    if (!r || atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (i = 0; i < r->n_sites; i++) {
        char *o = atomic_load_explicit(&r->sites[i].origin, memory_order_relaxed);
        if (o != no_origin)
            aigw__free(o);
    }
    aigw__free(r->sites);
    aigw__free(r->keys);
    aigw_config_unref(r->cfg);
    aigw__free(r);
}

const aigw_config *aigw__resolved_config(const aigw_resolved *r)
{
    return r->cfg;
}

_Atomic(const aigw_provider *) *aigw__resolved_prefix_memo(aigw_resolved *r)
{
    return r && r->distinct_ids ? &r->prefix : NULL;
}

/* The site of provider p (NULL: ngrok's gateway), or NULL for a provider
 * of another configuration. */
static site *site_for(aigw_resolved *r, const aigw_provider *p)
{
    const aigw_config *cfg = r->cfg;
    if (!p)
        return &r->sites[r->n_sites - 1];
    if (p < cfg->providers || p >= cfg->providers + cfg->n_providers)
        return NULL;
    return &r->sites[p - cfg->providers];
}

/* Reads the site's URL, once: 0, or -1 out of memory. */
static int split(site *s, const char *url)
{
    char *origin = NULL, *none = NULL;
    bool has_path;
    if (atomic_load_explicit(&s->origin, memory_order_acquire))
        return 0;
    if (aigw__url_split(url, &has_path, &origin) != 0)
        return -1;
    atomic_store_explicit(&s->has_path, has_path, memory_order_relaxed);
    if (!atomic_compare_exchange_strong_explicit(&s->origin, &none,
                                                 origin ? origin : no_origin,
                                                 memory_order_acq_rel, memory_order_acquire))
        aigw__free(origin); /* another thread read it first */
    return 0;
}

int aigw__resolved_has_path(aigw_resolved *r, const aigw_provider *p, const char *url)
{
    site *s = r ? site_for(r, p) : NULL;
    char *origin = NULL;
    bool has_path;
    if (s) {
        if (split(s, url) != 0)
            return -1;
        return atomic_load_explicit(&s->has_path, memory_order_relaxed);
    }
    if (aigw__url_split(url, &has_path, &origin) != 0)
        return -1;
    aigw__free(origin);
    return has_path;
}

aigw_breaker *aigw__resolved_host(aigw_resolved *r, aigw_health *h, const aigw_provider *p,
                                  const char *url)
{
    site *s = r ? site_for(r, p) : NULL;
    aigw_breaker *b;
    const char *origin;
    if (!s)
        return aigw__health_host(h, url);
    if ((b = atomic_load_explicit(&s->host, memory_order_acquire)) != NULL)
        return b;
    if (split(s, url) != 0)
        return NULL; /* out of memory: untracked, as aigw__health_host */
    origin = atomic_load_explicit(&s->origin, memory_order_acquire);
    if (origin == no_origin || !(b = aigw__health_host_origin(h, origin)))
        return NULL;
    atomic_store_explicit(&s->host, b, memory_order_release);
    return b;
}

aigw_breaker *aigw__resolved_backend(aigw_resolved *r, aigw_health *h, const aigw_provider *p,
                                     const char *model)
{
    site *s = r ? site_for(r, p) : NULL;
    return aigw__health_backend_at(h, p->id, model, s ? &s->backend : NULL);
}

static key_slot *key_slot_for(aigw_resolved *r, const void *at)
{
    size_t i = slot_of(r, at);
    while (r->keys[i].at && r->keys[i].at != at)
        i = (i + 1) & r->key_mask;
    return r->keys[i].at ? &r->keys[i] : NULL;
}

/* Where the entry of a key is remembered, or NULL. */
static _Atomic(aigw_hkey *) *key_memo(aigw_resolved *r, const aigw_provider *p, const void *at,
                                      aigw_key_origin origin)
{
    site *s;
    key_slot *k;
    const aigw_provider *first = NULL;
    if (!r || !(s = site_for(r, p)) || !p)
        return NULL;
    if (origin == AIGW_ORIGIN_NGROK)
        return &s->ngrok;
    if (origin == AIGW_ORIGIN_NONE)
        return &s->keyless;
    if (!at || !(k = key_slot_for(r, at)))
        return NULL;
    /* the first provider it is asked for owns the slot */
    if (atomic_compare_exchange_strong_explicit(&k->prov, &first, p, memory_order_acq_rel,
                                                memory_order_acquire) ||
        first == p)
        return &k->hk;
    return NULL;
}

aigw_hkey *aigw__resolved_key(aigw_resolved *r, aigw_health *h, const aigw_provider *p,
                              const void *at, const char *id, const aigw_secret *value,
                              aigw_key_origin origin)
{
    _Atomic(aigw_hkey *) *memo = key_memo(r, p, at, origin);
    aigw_hkey *k = memo ? atomic_load_explicit(memo, memory_order_acquire) : NULL;
    if (k)
        return k;
    k = aigw__health_key(h, p->id, id, value, origin);
    if (memo && k)
        atomic_store_explicit(memo, k, memory_order_release);
    return k;
}
