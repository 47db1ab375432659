/*
 * health.c - what a client remembers across requests (see health.h): key
 * cooldowns and benches, circuit breakers per backend and per host, the
 * retry budget, their counters, and the aigw_stats snapshot.
 *
 * Entries live in three chained hash tables under one read-write lock: a
 * lookup takes the read lock, only the first sight of a key, backend or host
 * takes the write lock.  Entries are allocated one by one and never move, so
 * callers keep pointers; their state is atomics.  A breaker changes state
 * under a small mutex of its own, but a closed breaker admits with a single
 * atomic load.  The budget's ring of buckets sits behind one mutex held for
 * a few instructions.
 */
#include "health.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#define NONE_MS INT64_MIN /* "no deadline" / "never" */

/* ------------------------------------------------------------------------ */
/* SipHash-2-4                                                              */
/* ------------------------------------------------------------------------ */

typedef struct sip {
    uint64_t v0, v1, v2, v3;
    uint64_t m;   /* bytes of the word being filled */
    unsigned nm;  /* how many */
    uint64_t len; /* bytes seen */
} sip;

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

static void sip_round(sip *s)
{
    s->v0 += s->v1;
    s->v1 = ROTL(s->v1, 13);
    s->v1 ^= s->v0;
    s->v0 = ROTL(s->v0, 32);
    s->v2 += s->v3;
    s->v3 = ROTL(s->v3, 16);
    s->v3 ^= s->v2;
    s->v0 += s->v3;
    s->v3 = ROTL(s->v3, 21);
    s->v3 ^= s->v0;
    s->v2 += s->v1;
    s->v1 = ROTL(s->v1, 17);
    s->v1 ^= s->v2;
    s->v2 = ROTL(s->v2, 32);
}

static uint64_t load_le64(const uint8_t *p)
{
    uint64_t v = 0;
    int i;
    for (i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static void sip_init(sip *s, const uint8_t key[16])
{
    uint64_t k0 = load_le64(key), k1 = load_le64(key + 8);
    s->v0 = k0 ^ 0x736f6d6570736575ULL;
    s->v1 = k1 ^ 0x646f72616e646f6dULL;
    s->v2 = k0 ^ 0x6c7967656e657261ULL;
    s->v3 = k1 ^ 0x7465646279746573ULL;
    s->m = 0;
    s->nm = 0;
    s->len = 0;
}

static void sip_word(sip *s, uint64_t m)
{
    s->v3 ^= m;
    sip_round(s);
    sip_round(s);
    s->v0 ^= m;
}

static void sip_update(sip *s, const void *data, size_t n)
{
    const uint8_t *p = data;
    s->len += n;
    while (n > 0 && s->nm != 0) {
        s->m |= (uint64_t)*p++ << (8 * s->nm);
        n--;
        if (++s->nm == 8) {
            sip_word(s, s->m);
            s->m = 0;
            s->nm = 0;
        }
    }
    for (; n >= 8; n -= 8, p += 8)
        sip_word(s, load_le64(p));
    for (; n > 0; n--)
        s->m |= (uint64_t)*p++ << (8 * s->nm++);
}

static uint64_t sip_final(sip *s)
{
    uint64_t h;
    sip_word(s, s->m | (s->len << 56));
    s->v2 ^= 0xff;
    sip_round(s);
    sip_round(s);
    sip_round(s);
    sip_round(s);
    h = s->v0 ^ s->v1 ^ s->v2 ^ s->v3;
    aigw__wipe(s, sizeof *s);
    return h;
}

uint64_t aigw__siphash24(const uint8_t key[16], const void *data, size_t len)
{
    sip s;
    sip_init(&s, key);
    sip_update(&s, data, len);
    return sip_final(&s);
}

/* ------------------------------------------------------------------------ */
/* Counters and the latency histogram                                       */
/* ------------------------------------------------------------------------ */

/* Bucket 0 holds 0 ms; bucket i > 0 holds (ub[i-1], ub[i]] with ub growing
 * by 2^(1/4) (at least 1 ms a step), so an upper bound is within 19% of any
 * latency in its bucket; 86 steps reach past an hour, the last bucket takes
 * the rest (its bound is the maximum seen). */
#define LAT_BUCKETS 88
static int64_t lat_ub[LAT_BUCKETS];
static pthread_once_t lat_once = PTHREAD_ONCE_INIT;

static void lat_init(void)
{
    int i;
    lat_ub[0] = 0;
    lat_ub[1] = 1;
    for (i = 2; i < LAT_BUCKETS - 1; i++) {
        int64_t next = lat_ub[i - 1] * 1189207 / 1000000; /* 2^(1/4), rounded down */
        lat_ub[i] = next > lat_ub[i - 1] ? next : lat_ub[i - 1] + 1;
    }
    lat_ub[LAT_BUCKETS - 1] = INT64_MAX;
}

static int lat_bucket(int64_t ms)
{
    int lo = 0, hi = LAT_BUCKETS - 1;
    while (lo < hi) { /* the first bucket whose bound holds ms */
        int mid = (lo + hi) / 2;
        if (lat_ub[mid] >= ms)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

typedef struct counters {
    _Atomic uint64_t requests, successes, failures, skips;
    _Atomic uint64_t by_class[AIGW_CLASS__COUNT];
    _Atomic uint64_t lat_count, lat_sum, lat_max;
    _Atomic uint64_t lat_hist[LAT_BUCKETS];
} counters;

static void counters_init(counters *c)
{
    int i;
    atomic_init(&c->requests, 0);
    atomic_init(&c->successes, 0);
    atomic_init(&c->failures, 0);
    atomic_init(&c->skips, 0);
    for (i = 0; i < AIGW_CLASS__COUNT; i++)
        atomic_init(&c->by_class[i], 0);
    atomic_init(&c->lat_count, 0);
    atomic_init(&c->lat_sum, 0);
    atomic_init(&c->lat_max, 0);
    for (i = 0; i < LAT_BUCKETS; i++)
        atomic_init(&c->lat_hist[i], 0);
}

static void counters_latency(counters *c, int64_t ms)
{
    uint64_t v = (uint64_t)ms, max = atomic_load_explicit(&c->lat_max, memory_order_relaxed);
    atomic_fetch_add_explicit(&c->lat_hist[lat_bucket(ms)], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&c->lat_sum, v, memory_order_relaxed);
    while (v > max && !atomic_compare_exchange_weak_explicit(&c->lat_max, &max, v,
                                                            memory_order_relaxed,
                                                            memory_order_relaxed)) {
    }
    atomic_fetch_add_explicit(&c->lat_count, 1, memory_order_relaxed);
}

/* One report: a success, or a failure of class cls, or neither. */
static void counters_add(counters *c, bool success, bool failure, aigw_class cls,
                         int64_t latency_ms)
{
    atomic_fetch_add_explicit(&c->requests, 1, memory_order_relaxed);
    if (success) {
        atomic_fetch_add_explicit(&c->successes, 1, memory_order_relaxed);
        if (latency_ms >= 0)
            counters_latency(c, latency_ms);
    } else if (failure) {
        atomic_fetch_add_explicit(&c->failures, 1, memory_order_relaxed);
        if ((unsigned)cls < AIGW_CLASS__COUNT)
            atomic_fetch_add_explicit(&c->by_class[cls], 1, memory_order_relaxed);
    }
}

static int64_t counters_mean(const counters *c)
{
    uint64_t n = atomic_load_explicit(&c->lat_count, memory_order_relaxed);
    uint64_t sum = atomic_load_explicit(&c->lat_sum, memory_order_relaxed);
    return n ? (int64_t)((sum + n / 2) / n) : -1;
}

/* ------------------------------------------------------------------------ */
/* Entries and tables                                                       */
/* ------------------------------------------------------------------------ */

typedef struct node {
    struct node *chain; /* next in its slot       */
    struct node *order; /* next in insertion order */
    uint64_t hash;
} node;

typedef struct table {
    node **slots; /* cap slots, a power of two; NULL before the first entry */
    size_t cap;
    size_t n;
    size_t max;
    node *first;
    node **last;
} table;

struct aigw_hkey {
    node nd; /* first: a node is its entry */
    char *provider;
    char *id;
    uint64_t vhash; /* keyed hash of the value (never the value) */
    bool has_value;
    _Atomic int64_t cool_until;
    _Atomic int64_t bench_until;
    _Atomic int64_t last_limited;
    _Atomic int bench_reason;
    counters c;
};

enum { BR_CLOSED = 0, BR_OPEN = 1 };

struct aigw_breaker {
    node nd; /* first: a node is its entry */
    char *name;     /* backend: "provider:model"; host: the host */
    char *provider; /* backend only */
    char *model;    /* backend only */
    _Atomic int state;        /* BR_CLOSED or BR_OPEN (half-open derives) */
    _Atomic int consecutive;  /* failures in a row while closed */
    _Atomic int64_t reopen_at; /* open: when a probe may go */
    _Atomic bool probe_out;
    _Atomic int64_t probe_at;  /* when the probe went */
    _Atomic int reason;        /* the class that opened it */
    pthread_mutex_t mu;        /* serializes state changes */
    counters c;
};

#define BUDGET_BUCKETS 10

typedef struct budget {
    pthread_mutex_t mu;
    int64_t width; /* ms per bucket; 0 before first use */
    int64_t epoch[BUDGET_BUCKETS];
    uint64_t requests[BUDGET_BUCKETS];
    uint64_t retries[BUDGET_BUCKETS];
    uint64_t total_requests, total_retries, total_denied;
} budget;

struct aigw_health {
    pthread_rwlock_t lock; /* guards the tables' structure, not entry state */
    uint8_t sipkey[16];
    table keys, backends, hosts;
    budget budget;
};

static void table_init(table *t, size_t max)
{
    memset(t, 0, sizeof *t);
    t->max = max;
    t->last = &t->first;
}

typedef bool (*node_eq)(const node *n, const void *ctx);

/* Under the lock (either kind). */
static node *table_find(const table *t, uint64_t hash, node_eq eq, const void *ctx)
{
    node *n;
    if (!t->slots)
        return NULL;
    for (n = t->slots[hash & (t->cap - 1)]; n; n = n->chain)
        if (n->hash == hash && eq(n, ctx))
            return n;
    return NULL;
}

/* Under the write lock.  Slots double when entries outnumber them; failing
 * to grow only makes chains longer.  Returns -1 when no slot array exists. */
static int table_grow(table *t)
{
    size_t cap = t->cap ? t->cap * 2 : 16, i;
    node **slots, *n;
    if (t->slots && t->n < t->cap)
        return 0;
    slots = aigw__calloc(cap, sizeof *slots);
    if (!slots)
        return t->slots ? 0 : -1;
    for (n = t->first; n; n = n->order) {
        i = n->hash & (cap - 1);
        n->chain = slots[i];
        slots[i] = n;
    }
    aigw__free(t->slots);
    t->slots = slots;
    t->cap = cap;
    return 0;
}

typedef struct entry_ops {
    node_eq eq;
    node *(*make)(const void *ctx);
    void (*destroy)(node *n);
} entry_ops;

/* Finds the entry, or makes it (allocated outside the lock). */
static node *table_get(aigw_health *h, table *t, uint64_t hash, const entry_ops *ops,
                       const void *ctx)
{
    node *n, *fresh;
    bool full;
    pthread_rwlock_rdlock(&h->lock);
    n = table_find(t, hash, ops->eq, ctx);
    full = t->n >= t->max;
    pthread_rwlock_unlock(&h->lock);
    if (n || full)
        return n;
    if (!(fresh = ops->make(ctx)))
        return NULL;
    fresh->hash = hash;
    pthread_rwlock_wrlock(&h->lock);
    n = table_find(t, hash, ops->eq, ctx);
    if (!n && t->n < t->max && table_grow(t) == 0) {
        size_t i = hash & (t->cap - 1);
        fresh->chain = t->slots[i];
        fresh->order = NULL;
        t->slots[i] = fresh;
        *t->last = fresh;
        t->last = &fresh->order;
        t->n++;
        n = fresh;
        fresh = NULL;
    }
    pthread_rwlock_unlock(&h->lock);
    if (fresh)
        ops->destroy(fresh);
    return n;
}

static void table_free(table *t, void (*destroy)(node *n))
{
    node *n = t->first, *next;
    for (; n; n = next) {
        next = n->order;
        destroy(n);
    }
    aigw__free(t->slots);
    table_init(t, t->max);
}

static const char *nz(const char *s)
{
    return s ? s : "";
}

/* ---- key entries ---- */

typedef struct key_ctx {
    const char *provider;
    const char *id;
    uint64_t vhash;
    bool has_value;
} key_ctx;

static bool key_eq(const node *n, const void *ctx)
{
    const aigw_hkey *k = (const aigw_hkey *)n;
    const key_ctx *c = ctx;
    return k->has_value == c->has_value && k->vhash == c->vhash &&
           strcmp(k->provider, c->provider) == 0 && strcmp(k->id, c->id) == 0;
}

static void key_destroy(node *n)
{
    aigw_hkey *k = (aigw_hkey *)n;
    aigw__free(k->provider);
    aigw__free(k->id);
    aigw__free(k);
}

static node *key_make(const void *ctx)
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
    atomic_init(&k->cool_until, NONE_MS);
    atomic_init(&k->bench_until, NONE_MS);
    atomic_init(&k->last_limited, NONE_MS);
    atomic_init(&k->bench_reason, AIGW_CLASS_NONE);
    counters_init(&k->c);
    return &k->nd;
}

static const entry_ops key_ops = {key_eq, key_make, key_destroy};

/* ---- breaker entries ---- */

typedef struct breaker_ctx {
    const char *name;
    const char *provider; /* NULL for a host */
    const char *model;
} breaker_ctx;

static bool breaker_eq(const node *n, const void *ctx)
{
    const aigw_breaker *b = (const aigw_breaker *)n;
    const breaker_ctx *c = ctx;
    if (c->provider)
        return strcmp(b->provider, c->provider) == 0 && strcmp(b->model, c->model) == 0;
    return strcmp(b->name, c->name) == 0;
}

static void breaker_destroy(node *n)
{
    aigw_breaker *b = (aigw_breaker *)n;
    aigw__free(b->name);
    aigw__free(b->provider);
    aigw__free(b->model);
    pthread_mutex_destroy(&b->mu);
    aigw__free(b);
}

static node *breaker_make(const void *ctx)
{
    const breaker_ctx *c = ctx;
    aigw_breaker *b = aigw__calloc(1, sizeof *b);
    aigw_buf name = AIGW_BUF_INIT;
    if (!b)
        return NULL;
    pthread_mutex_init(&b->mu, NULL);
    if (c->provider) {
        if (aigw__buf_puts(&name, c->provider) != 0 || aigw__buf_puts(&name, ":") != 0 ||
            aigw__buf_puts(&name, c->model) != 0) {
            aigw__buf_free(&name);
            breaker_destroy(&b->nd);
            return NULL;
        }
        b->name = aigw__buf_take(&name);
    } else {
        b->name = aigw__strdup(c->name);
    }
    b->provider = aigw__strdup(c->provider ? c->provider : "");
    b->model = aigw__strdup(c->provider ? c->model : "");
    if (!b->name || !b->provider || !b->model) {
        breaker_destroy(&b->nd);
        return NULL;
    }
    atomic_init(&b->state, BR_CLOSED);
    atomic_init(&b->consecutive, 0);
    atomic_init(&b->reopen_at, NONE_MS);
    atomic_init(&b->probe_out, false);
    atomic_init(&b->probe_at, NONE_MS);
    atomic_init(&b->reason, AIGW_CLASS_NONE);
    counters_init(&b->c);
    return &b->nd;
}

static const entry_ops breaker_ops = {breaker_eq, breaker_make, breaker_destroy};

/* ------------------------------------------------------------------------ */
/* The table                                                                */
/* ------------------------------------------------------------------------ */

aigw_health *aigw__health_new(void)
{
    aigw_health *h;
    int i;
    pthread_once(&lat_once, lat_init);
    if (!(h = aigw__calloc(1, sizeof *h)))
        return NULL;
    if (pthread_rwlock_init(&h->lock, NULL) != 0) {
        aigw__free(h);
        return NULL;
    }
    pthread_mutex_init(&h->budget.mu, NULL);
    for (i = 0; i < BUDGET_BUCKETS; i++)
        h->budget.epoch[i] = NONE_MS;
    aigw__random_bytes(h->sipkey, sizeof h->sipkey);
    table_init(&h->keys, AIGW_HEALTH_MAX_KEYS);
    table_init(&h->backends, AIGW_HEALTH_MAX_BACKENDS);
    table_init(&h->hosts, AIGW_HEALTH_MAX_HOSTS);
    return h;
}

void aigw__health_free(aigw_health *h)
{
    if (!h)
        return;
    table_free(&h->keys, key_destroy);
    table_free(&h->backends, breaker_destroy);
    table_free(&h->hosts, breaker_destroy);
    pthread_mutex_destroy(&h->budget.mu);
    pthread_rwlock_destroy(&h->lock);
    aigw__wipe(h->sipkey, sizeof h->sipkey);
    aigw__free(h);
}

/* A string with its terminating NUL, so "ab"+"c" and "a"+"bc" differ. */
static void sip_str(sip *s, const char *str)
{
    sip_update(s, str, strlen(str) + 1);
}

/* ------------------------------------------------------------------------ */
/* Keys                                                                     */
/* ------------------------------------------------------------------------ */

aigw_hkey *aigw__health_key(aigw_health *h, const char *provider, const char *id,
                            const aigw_secret *value)
{
    key_ctx c;
    sip s;
    uint8_t tag;
    if (!h)
        return NULL;
    c.provider = nz(provider);
    c.id = nz(id);
    c.has_value = value && value->value;
    c.vhash = c.has_value ? aigw__siphash24(h->sipkey, value->value, value->len) : 0;
    tag = c.has_value ? 1 : 0;
    sip_init(&s, h->sipkey);
    sip_str(&s, c.provider);
    sip_str(&s, c.id);
    sip_update(&s, &tag, 1);
    sip_update(&s, &c.vhash, sizeof c.vhash);
    return (aigw_hkey *)table_get(h, &h->keys, sip_final(&s), &key_ops, &c);
}

aigw_key_state aigw__hkey_state(const aigw_hkey *k, int64_t now, int64_t *wait_ms)
{
    int64_t bench, cool;
    if (wait_ms)
        *wait_ms = 0;
    if (!k)
        return AIGW_KEY_READY;
    bench = atomic_load_explicit(&k->bench_until, memory_order_relaxed);
    if (bench > now) {
        if (wait_ms)
            *wait_ms = bench - now;
        return AIGW_KEY_BENCHED;
    }
    cool = atomic_load_explicit(&k->cool_until, memory_order_relaxed);
    if (cool > now) {
        if (wait_ms)
            *wait_ms = cool - now;
        return AIGW_KEY_COOLING;
    }
    return AIGW_KEY_READY;
}

aigw_class aigw__hkey_reason(const aigw_hkey *k, int64_t now)
{
    switch (aigw__hkey_state(k, now, NULL)) {
    case AIGW_KEY_BENCHED:
        return (aigw_class)atomic_load_explicit(&k->bench_reason, memory_order_relaxed);
    case AIGW_KEY_COOLING:
        return AIGW_CLASS_RATE_LIMIT;
    default:
        return AIGW_CLASS_NONE;
    }
}

void aigw__hkey_view(const aigw_hkey *k, int64_t now, uint32_t weight, aigw_key_health *out)
{
    int64_t limited;
    memset(out, 0, sizeof *out);
    out->weight = weight;
    out->since_limited_ms = -1;
    out->latency_mean_ms = -1;
    out->id = "";
    out->state = aigw__hkey_state(k, now, &out->wait_ms);
    if (!k)
        return;
    out->id = k->id;
    limited = atomic_load_explicit(&k->last_limited, memory_order_relaxed);
    if (limited != NONE_MS)
        out->since_limited_ms = now > limited ? now - limited : 0;
    out->requests = atomic_load_explicit(&k->c.requests, memory_order_relaxed);
    out->successes = atomic_load_explicit(&k->c.successes, memory_order_relaxed);
    out->failures = atomic_load_explicit(&k->c.failures, memory_order_relaxed);
    out->latency_mean_ms = counters_mean(&k->c);
}

void aigw__hkey_skipped(aigw_hkey *k)
{
    if (k)
        atomic_fetch_add_explicit(&k->c.skips, 1, memory_order_relaxed);
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

static int64_t jittered(int64_t cooldown_ms)
{
    uint64_t r;
    int64_t half = cooldown_ms / 2, span = cooldown_ms - half;
    aigw__fast_random(&r, sizeof r);
    return half + (int64_t)(r % ((uint64_t)span + 1));
}

void aigw__hkey_report(aigw_hkey *k, const aigw_health_opts *o, aigw_class cls,
                       int64_t wait_ms, int64_t latency_ms, int64_t now)
{
    if (!k)
        return;
    counters_add(&k->c, cls == AIGW_CLASS_NONE, cls != AIGW_CLASS_NONE, cls, latency_ms);
    if (!o)
        return;
    if (cls == AIGW_CLASS_RATE_LIMIT) {
        int64_t cool;
        if (wait_ms >= 0)
            cool = wait_ms < o->cooldown_max_ms ? wait_ms : o->cooldown_max_ms;
        else
            cool = o->cooldown_ms > 0 ? jittered(o->cooldown_ms) : 0;
        if (cool > o->cooldown_max_ms) /* the cap holds for the default too */
            cool = o->cooldown_max_ms;
        extend(&k->last_limited, now); /* the latest, whatever order reports come in */
        if (cool > 0)
            extend(&k->cool_until, now + cool);
    } else if ((cls == AIGW_CLASS_AUTH || cls == AIGW_CLASS_QUOTA) && o->bench_ms > 0) {
        if (extend(&k->bench_until, now + o->bench_ms))
            atomic_store(&k->bench_reason, (int)cls);
    }
}

void aigw__health_end_benches(aigw_health *h)
{
    node *n;
    if (!h)
        return;
    pthread_rwlock_rdlock(&h->lock);
    for (n = h->keys.first; n; n = n->order)
        atomic_store(&((aigw_hkey *)n)->bench_until, NONE_MS);
    pthread_rwlock_unlock(&h->lock);
}

static void breaker_close(aigw_breaker *b)
{
    atomic_store(&b->consecutive, 0);
    atomic_store(&b->probe_out, false);
    atomic_store(&b->reason, AIGW_CLASS_NONE);
    atomic_store(&b->state, BR_CLOSED);
}

static void close_all(table *t)
{
    node *n;
    for (n = t->first; n; n = n->order) {
        aigw_breaker *b = (aigw_breaker *)n;
        pthread_mutex_lock(&b->mu);
        breaker_close(b);
        pthread_mutex_unlock(&b->mu);
    }
}

size_t aigw__health_reset(aigw_health *h, const char *id)
{
    node *n;
    size_t matched = 0;
    if (!h)
        return 0;
    pthread_rwlock_rdlock(&h->lock);
    for (n = h->keys.first; n; n = n->order) {
        aigw_hkey *k = (aigw_hkey *)n;
        if (id && strcmp(k->id, id) != 0)
            continue;
        atomic_store(&k->cool_until, NONE_MS);
        atomic_store(&k->bench_until, NONE_MS);
        matched++;
    }
    if (!id) {
        close_all(&h->backends);
        close_all(&h->hosts);
    }
    pthread_rwlock_unlock(&h->lock);
    return matched;
}

/* ------------------------------------------------------------------------ */
/* Breakers                                                                 */
/* ------------------------------------------------------------------------ */

static aigw_breaker *get_breaker(aigw_health *h, table *t, const breaker_ctx *c)
{
    sip s;
    sip_init(&s, h->sipkey);
    if (c->provider) {
        sip_str(&s, c->provider);
        sip_str(&s, c->model);
    } else {
        sip_str(&s, c->name);
    }
    return (aigw_breaker *)table_get(h, t, sip_final(&s), &breaker_ops, c);
}

aigw_breaker *aigw__health_backend(aigw_health *h, const char *provider, const char *model)
{
    breaker_ctx c;
    if (!h)
        return NULL;
    c.name = NULL;
    c.provider = nz(provider);
    c.model = nz(model);
    return get_breaker(h, &h->backends, &c);
}

static char lower_ascii(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

static bool is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* The port: digits, 1..65535 (leading zeros allowed); -1 otherwise. */
static long parse_port(const char *s, size_t n)
{
    long v = 0;
    size_t i;
    if (n == 0)
        return -1;
    for (i = 0; i < n; i++) {
        if (!is_digit(s[i]))
            return -1;
        v = v * 10 + (s[i] - '0');
        if (v > 65535)
            return -1;
    }
    return v > 0 ? v : -1;
}

static long default_port(const char *scheme, size_t n)
{
    if ((n == 4 && aigw__strncasecmp(scheme, "http", 4) == 0) ||
        (n == 2 && aigw__strncasecmp(scheme, "ws", 2) == 0))
        return 80;
    if ((n == 5 && aigw__strncasecmp(scheme, "https", 5) == 0) ||
        (n == 3 && aigw__strncasecmp(scheme, "wss", 3) == 0))
        return 443;
    return -1;
}

/* "scheme://host:port" for url (allocated), or NULL when it has no scheme,
 * no host, a bad port, or no port and a scheme without a default one. */
static char *host_of(const char *url)
{
    const char *p = url, *auth, *end, *at, *host, *host_end, *port = NULL;
    size_t scheme_len, i;
    long portnum;
    aigw_buf b = AIGW_BUF_INIT;
    if (!is_alpha(*p))
        return NULL;
    while (is_alpha(*p) || is_digit(*p) || *p == '+' || *p == '-' || *p == '.')
        p++;
    if (strncmp(p, "://", 3) != 0)
        return NULL;
    scheme_len = (size_t)(p - url);
    auth = p + 3;
    end = auth + strcspn(auth, "/?#");
    for (at = NULL, p = auth; p < end; p++)
        if (*p == '@')
            at = p;
    host = at ? at + 1 : auth;
    if (*host == '[') {
        const char *close = memchr(host, ']', (size_t)(end - host));
        if (!close || close == host + 1)
            return NULL;
        host_end = close + 1;
        if (host_end < end && *host_end != ':')
            return NULL;
    } else {
        host_end = memchr(host, ':', (size_t)(end - host));
        if (!host_end)
            host_end = end;
    }
    if (host_end == host)
        return NULL;
    for (p = host; p < host_end; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f)
            return NULL;
    if (host_end < end)
        port = host_end + 1;
    portnum = port && port < end ? parse_port(port, (size_t)(end - port))
                                 : default_port(url, scheme_len);
    if (portnum < 0)
        return NULL;
    for (i = 0; i < scheme_len; i++) {
        char c = lower_ascii(url[i]);
        if (aigw__buf_append(&b, &c, 1) != 0)
            goto fail;
    }
    if (aigw__buf_puts(&b, "://") != 0)
        goto fail;
    for (p = host; p < host_end; p++) {
        char c = lower_ascii(*p);
        if (aigw__buf_append(&b, &c, 1) != 0)
            goto fail;
    }
    if (aigw__buf_printf(&b, ":%ld", portnum) != 0)
        goto fail;
    return aigw__buf_take(&b);
fail:
    aigw__buf_free(&b);
    return NULL;
}

aigw_breaker *aigw__health_host(aigw_health *h, const char *url)
{
    breaker_ctx c;
    aigw_breaker *b;
    char *host;
    if (!h || !url || !(host = host_of(url)))
        return NULL;
    c.name = host;
    c.provider = NULL;
    c.model = NULL;
    b = get_breaker(h, &h->hosts, &c);
    aigw__free(host);
    return b;
}

aigw_admit aigw__breaker_admit(aigw_breaker *b, const aigw_health_opts *o, int64_t now,
                               int64_t *wait_ms)
{
    aigw_admit a;
    int64_t reopen;
    if (wait_ms)
        *wait_ms = 0;
    if (!b || !o || o->breaker_threshold <= 0)
        return AIGW_ADMIT_GO;
    if (atomic_load_explicit(&b->state, memory_order_acquire) == BR_CLOSED)
        return AIGW_ADMIT_GO;
    pthread_mutex_lock(&b->mu);
    reopen = atomic_load(&b->reopen_at);
    if (atomic_load(&b->state) == BR_CLOSED) {
        a = AIGW_ADMIT_GO;
    } else if (now < reopen) {
        a = AIGW_ADMIT_OPEN;
        if (wait_ms)
            *wait_ms = reopen - now;
    } else if (atomic_load(&b->probe_out) &&
               now < atomic_load(&b->probe_at) + o->breaker_cooloff_ms + o->probe_timeout_ms) {
        a = AIGW_ADMIT_OPEN; /* the probe is out; wait 0: it may report any time */
    } else {
        atomic_store(&b->probe_out, true);
        atomic_store(&b->probe_at, now);
        a = AIGW_ADMIT_PROBE;
    }
    pthread_mutex_unlock(&b->mu);
    return a;
}

static void breaker_open(aigw_breaker *b, const aigw_health_opts *o, aigw_class cls,
                         int64_t now)
{
    atomic_store(&b->reopen_at, now + o->breaker_cooloff_ms);
    atomic_store(&b->probe_out, false);
    atomic_store(&b->consecutive, 0);
    atomic_store(&b->reason, (int)cls);
    atomic_store_explicit(&b->state, BR_OPEN, memory_order_release);
}

static void breaker_probe_report(aigw_breaker *b, const aigw_health_opts *o, aigw_verdict v,
                                 aigw_class cls, int64_t now)
{
    pthread_mutex_lock(&b->mu);
    switch (v) {
    case AIGW_BR_SUCCESS:
    case AIGW_BR_NEUTRAL:
        breaker_close(b);
        break;
    case AIGW_BR_FAILURE:
        breaker_open(b, o, cls, now);
        break;
    default: /* abandoned: another may probe at once */
        atomic_store(&b->probe_out, false);
        break;
    }
    pthread_mutex_unlock(&b->mu);
}

void aigw__breaker_report(aigw_breaker *b, const aigw_health_opts *o, aigw_verdict v,
                          bool probe, aigw_class cls, int64_t latency_ms, int64_t now)
{
    bool success = v == AIGW_BR_SUCCESS;
    bool failure = v == AIGW_BR_FAILURE || (!success && cls != AIGW_CLASS_NONE);
    if (!b)
        return;
    counters_add(&b->c, success, failure, cls, latency_ms);
    if (!o || o->breaker_threshold <= 0)
        return;
    if (probe) {
        breaker_probe_report(b, o, v, cls, now);
        return;
    }
    if (atomic_load_explicit(&b->state, memory_order_acquire) == BR_CLOSED) {
        if (v == AIGW_BR_SUCCESS) {
            if (atomic_load_explicit(&b->consecutive, memory_order_relaxed) != 0)
                atomic_store(&b->consecutive, 0);
        } else if (v == AIGW_BR_FAILURE &&
                   atomic_fetch_add(&b->consecutive, 1) + 1 >= o->breaker_threshold) {
            pthread_mutex_lock(&b->mu);
            if (atomic_load(&b->state) == BR_CLOSED)
                breaker_open(b, o, cls, now);
            pthread_mutex_unlock(&b->mu);
        }
    } else if (v == AIGW_BR_SUCCESS) {
        /* A late success proves the backend answers: close. */
        pthread_mutex_lock(&b->mu);
        breaker_close(b);
        pthread_mutex_unlock(&b->mu);
    }
}

void aigw__breaker_skipped(aigw_breaker *b)
{
    if (b)
        atomic_fetch_add_explicit(&b->c.skips, 1, memory_order_relaxed);
}

/* "closed", "open" or "half_open", with the wait and the reason. */
static const char *breaker_state(aigw_breaker *b, const aigw_health_opts *o, int64_t now,
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

/* ------------------------------------------------------------------------ */
/* Retry budget                                                             */
/* ------------------------------------------------------------------------ */

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* Under the mutex: the buckets' width, from a window.  When it changes,
 * what the old window held is carried into the bucket of now, so a new
 * configuration neither forgets the retries just spent nor counts them
 * twice; they age out with that bucket. */
static void budget_width(budget *bg, int64_t window_ms, int64_t now)
{
    int64_t width = window_ms / BUDGET_BUCKETS, epoch;
    uint64_t req = 0, ret = 0;
    size_t i;
    if (width < 1)
        width = 1;
    if (width == bg->width)
        return;
    if (bg->width > 0) {
        epoch = floor_div(now, bg->width);
        for (i = 0; i < BUDGET_BUCKETS; i++)
            if (bg->epoch[i] != NONE_MS && bg->epoch[i] <= epoch &&
                epoch - bg->epoch[i] < BUDGET_BUCKETS) {
                req += bg->requests[i];
                ret += bg->retries[i];
            }
    }
    for (i = 0; i < BUDGET_BUCKETS; i++) {
        bg->epoch[i] = NONE_MS;
        bg->requests[i] = bg->retries[i] = 0;
    }
    bg->width = width;
    epoch = floor_div(now, width);
    i = (size_t)(epoch - floor_div(epoch, BUDGET_BUCKETS) * BUDGET_BUCKETS);
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
static size_t budget_bucket(budget *bg, const aigw_health_opts *o, int64_t now)
{
    int64_t epoch;
    size_t i;
    if (bg->width == 0)
        budget_width(bg, o->budget_window_ms, now);
    epoch = floor_div(now, bg->width);
    i = (size_t)(epoch - floor_div(epoch, BUDGET_BUCKETS) * BUDGET_BUCKETS);
    if (bg->epoch[i] != epoch) {
        bg->epoch[i] = epoch;
        bg->requests[i] = bg->retries[i] = 0;
    }
    return i;
}

/* Under the mutex: the window's sums and the retries it allows. */
static uint64_t budget_window(const budget *bg, const aigw_health_opts *o, int64_t now,
                              uint64_t *retries)
{
    uint64_t requests = 0, allowed;
    int64_t epoch;
    size_t i;
    *retries = 0;
    if (bg->width > 0) {
        epoch = floor_div(now, bg->width);
        for (i = 0; i < BUDGET_BUCKETS; i++) {
            if (bg->epoch[i] == NONE_MS || bg->epoch[i] > epoch ||
                epoch - bg->epoch[i] >= BUDGET_BUCKETS)
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
    size_t i;
    if (!h || !o)
        return;
    pthread_mutex_lock(&h->budget.mu);
    i = budget_bucket(&h->budget, o, now);
    h->budget.requests[i]++;
    h->budget.total_requests++;
    pthread_mutex_unlock(&h->budget.mu);
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

/* ------------------------------------------------------------------------ */
/* Snapshot                                                                 */
/* ------------------------------------------------------------------------ */

typedef struct stat_entry {
    aigw_stat pub; /* first: aigw_stat_failures finds its entry from it */
    uint64_t by_class[AIGW_CLASS__COUNT];
    char *own[3];  /* the strings of pub it owns */
} stat_entry;

/* Everything is copied out of the table, so a snapshot outlives its client;
 * the JSON is built with the snapshot (aigw_stats_json takes a const
 * snapshot, which may be read from several threads). */
struct aigw_stats {
    stat_entry *v;
    size_t n;
    size_t n_keys, n_backends; /* v: keys, then backends, then hosts */
    bool budget_on;
    int budget_percent;
    int budget_min_per_sec;
    int64_t budget_window_ms;
    uint64_t budget_requests, budget_retries, budget_denied;
    int64_t budget_available;
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
    for (i = 0; i < LAT_BUCKETS; i++) {
        seen += hist[i];
        if (seen >= rank)
            return lat_ub[i] < max ? lat_ub[i] : max;
    }
    return max;
}

static void fill_counters(stat_entry *e, const counters *c)
{
    uint64_t hist[LAT_BUCKETS], total = 0;
    int i;
    e->pub.requests = atomic_load_explicit(&c->requests, memory_order_relaxed);
    e->pub.successes = atomic_load_explicit(&c->successes, memory_order_relaxed);
    e->pub.failures = atomic_load_explicit(&c->failures, memory_order_relaxed);
    e->pub.skips = atomic_load_explicit(&c->skips, memory_order_relaxed);
    for (i = 0; i < AIGW_CLASS__COUNT; i++)
        e->by_class[i] = atomic_load_explicit(&c->by_class[i], memory_order_relaxed);
    for (i = 0; i < LAT_BUCKETS; i++)
        total += hist[i] = atomic_load_explicit(&c->lat_hist[i], memory_order_relaxed);
    e->pub.latency_count = atomic_load_explicit(&c->lat_count, memory_order_relaxed);
    if (e->pub.latency_count == 0 || total == 0) {
        e->pub.latency_count = 0;
        return;
    }
    e->pub.latency_mean_ms = counters_mean(c);
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
    e->pub.state = key_state_name(aigw__hkey_state(k, now, &e->pub.wait_ms));
    reason = aigw__hkey_reason(k, now);
    e->pub.reason = reason != AIGW_CLASS_NONE ? aigw__class_name(reason) : "";
    if (k)
        fill_counters(e, &k->c);
    return 0;
}

static int fill_breaker(stat_entry *e, aigw_breaker *b, bool host, const aigw_health_opts *o,
                        int64_t now)
{
    aigw_class reason;
    entry_init(e, host ? "host" : "backend");
    e->pub.name = own(e, 0, b->name);
    if (!host) {
        e->pub.provider = own(e, 1, b->provider);
        e->pub.model = own(e, 2, b->model);
    }
    if (!e->own[0] || (!host && ((*b->provider && !e->own[1]) || (*b->model && !e->own[2]))))
        return -1;
    e->pub.state = breaker_state(b, o, now, &e->pub.wait_ms, &reason);
    e->pub.reason = reason != AIGW_CLASS_NONE ? aigw__class_name(reason) : "";
    fill_counters(e, &b->c);
    return 0;
}

/* ---- the keys of a configuration ---- */

typedef struct key_ref {
    const char *provider;
    const char *id;
    const aigw_secret *value;
    char *provider_own; /* a provider resolved from a model (allocated) */
} key_ref;

typedef struct key_refs {
    key_ref *v;
    size_t n, cap;
} key_refs;

static bool same_secret(const aigw_secret *a, const aigw_secret *b)
{
    bool ha = a && a->value, hb = b && b->value;
    if (ha != hb)
        return false;
    return !ha || (a->len == b->len && memcmp(a->value, b->value, a->len) == 0);
}

/* Adds (provider, id, value) unless already there.  0 or -1 (memory). */
static int refs_add(key_refs *r, const char *provider, const char *id, const aigw_secret *value,
                    char *provider_own)
{
    size_t i;
    provider = nz(provider);
    id = nz(id);
    for (i = 0; i < r->n; i++) {
        if (strcmp(r->v[i].provider, provider) == 0 && strcmp(r->v[i].id, id) == 0 &&
            same_secret(r->v[i].value, value)) {
            aigw__free(provider_own);
            return 0;
        }
    }
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 8;
        key_ref *v = aigw__realloc(r->v, cap * sizeof *v);
        if (!v) {
            aigw__free(provider_own);
            return -1;
        }
        r->v = v;
        r->cap = cap;
    }
    r->v[r->n].provider = provider;
    r->v[r->n].id = id;
    r->v[r->n].value = value;
    r->v[r->n].provider_own = provider_own;
    r->n++;
    return 0;
}

static void refs_free(key_refs *r)
{
    size_t i;
    for (i = 0; i < r->n; i++)
        aigw__free(r->v[i].provider_own);
    aigw__free(r->v);
}

/* The provider of a rule's step key: the providerKey it names (same id and
 * value), else the rule's provider, else the provider its model resolves
 * to, else "".  *own gets what was allocated.  0 or -1 (memory). */
static int step_key_provider(const aigw_config *cfg, const aigw_rule *rule,
                             const aigw_step_key *sk, const char **provider, char **own_p)
{
    const aigw_provider *prov;
    char *model;
    size_t i;
    int rc;
    *own_p = NULL;
    for (i = 0; i < cfg->n_keys; i++) {
        if (sk->id && cfg->keys[i].id && strcmp(cfg->keys[i].id, sk->id) == 0 &&
            same_secret(&cfg->keys[i].value, &sk->value)) {
            *provider = cfg->keys[i].provider_id;
            return 0;
        }
    }
    *provider = rule->provider;
    if (rule->provider || !rule->model)
        return 0;
    rc = aigw__resolve_model(cfg, rule->model, &prov, &model);
    if (rc == -2)
        return -1;
    if (rc == 0) {
        aigw__free(model);
        if (!(*own_p = aigw__strdup(prov->id)))
            return -1;
        *provider = *own_p;
    }
    return 0;
}

static int config_keys(const aigw_config *cfg, key_refs *r)
{
    size_t i, s, j;
    if (!cfg)
        return 0;
    for (i = 0; i < cfg->n_keys; i++)
        if (refs_add(r, cfg->keys[i].provider_id, cfg->keys[i].id, &cfg->keys[i].value,
                     NULL) != 0)
            return -1;
    for (i = 0; i < cfg->n_rules; i++) {
        const aigw_rule *rule = &cfg->rules[i];
        for (s = 0; s < rule->n_steps; s++) {
            const aigw_step *st = &rule->steps[s];
            if (st->type != AIGW_STEP_USER)
                continue;
            for (j = 0; j < st->n_keys; j++) {
                const char *provider;
                char *prov_own;
                if (step_key_provider(cfg, rule, &st->keys[j], &provider, &prov_own) != 0 ||
                    refs_add(r, provider, st->keys[j].id, &st->keys[j].value, prov_own) != 0)
                    return -1;
            }
        }
    }
    return 0;
}

/* The keys the engine tracks per provider that the configuration does not
 * list as such: the ngrok access key (its health is per provider it
 * reached: one provider's rate limit relayed by ngrok says nothing of
 * another's) and the key-less calls to custom providers.  Listed as
 * found in the table, the ngrok key as ("ngrok", "ngrok") until used. */
static int table_keys(aigw_health *h, const aigw_config *cfg, key_refs *r)
{
    uint64_t nh = 0;
    bool ngrok_seen = false;
    node *n;
    int rc = 0;
    if (!cfg)
        return 0;
    if (cfg->has_ngrok_key)
        nh = aigw__siphash24(h->sipkey, cfg->ngrok_key.value, cfg->ngrok_key.len);
    pthread_rwlock_rdlock(&h->lock);
    for (n = h->keys.first; n && rc == 0; n = n->order) {
        const aigw_hkey *k = (const aigw_hkey *)n;
        if (cfg->has_ngrok_key && k->has_value && k->vhash == nh && strcmp(k->id, "ngrok") == 0) {
            ngrok_seen = true;
            rc = refs_add(r, k->provider, "ngrok", &cfg->ngrok_key, NULL);
        } else if (!k->has_value && k->id[0] == '\0') {
            const aigw_provider *p = aigw__config_provider(cfg, k->provider);
            if (p && p->custom)
                rc = refs_add(r, k->provider, "", NULL, NULL);
        }
    }
    pthread_rwlock_unlock(&h->lock);
    if (rc == 0 && cfg->has_ngrok_key && !ngrok_seen)
        rc = refs_add(r, "ngrok", "ngrok", &cfg->ngrok_key, NULL);
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

static int json_entry(aigw_buf *b, const stat_entry *e, size_t i, size_t n_keys,
                      size_t n_backends)
{
    const aigw_stat *s = &e->pub;
    if (i < n_keys)
        return (aigw__buf_puts(b, "{\"provider\":") != 0 ||
                aigw__buf_json_cstr(b, s->provider) != 0 || aigw__buf_puts(b, ",\"id\":") != 0 ||
                aigw__buf_json_cstr(b, s->name) != 0 || json_counters(b, e) != 0) ? -1 : 0;
    if (i < n_keys + n_backends)
        return (aigw__buf_puts(b, "{\"provider\":") != 0 ||
                aigw__buf_json_cstr(b, s->provider) != 0 ||
                aigw__buf_puts(b, ",\"model\":") != 0 || aigw__buf_json_cstr(b, s->model) != 0 ||
                json_counters(b, e) != 0) ? -1 : 0;
    return (aigw__buf_puts(b, "{\"host\":") != 0 || aigw__buf_json_cstr(b, s->name) != 0 ||
            json_counters(b, e) != 0) ? -1 : 0;
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

static char *stats_to_json(const aigw_stats *st)
{
    static const char *const sections[] = {"{\"keys\":[", "],\"backends\":[", "],\"hosts\":["};
    size_t bounds[3], i, start = 0;
    int sec;
    aigw_buf b = AIGW_BUF_INIT;
    bounds[0] = st->n_keys;
    bounds[1] = st->n_keys + st->n_backends;
    bounds[2] = st->n;
    for (sec = 0; sec < 3; sec++) {
        if (aigw__buf_puts(&b, sections[sec]) != 0)
            goto fail;
        for (i = start; i < bounds[sec]; i++)
            if ((i > start && aigw__buf_puts(&b, ",") != 0) ||
                json_entry(&b, &st->v[i], i, st->n_keys, st->n_backends) != 0)
                goto fail;
        start = bounds[sec];
    }
    if (aigw__buf_puts(&b, "]") != 0 || json_budget(&b, st) != 0)
        goto fail;
    return aigw__buf_take(&b);
fail:
    aigw__buf_free(&b);
    return NULL;
}

/* ---- building ---- */

static void snapshot_budget(aigw_health *h, const aigw_health_opts *o, int64_t now,
                            aigw_stats *st)
{
    uint64_t retries, allowed;
    st->budget_on = o && o->budget_on;
    st->budget_available = -1;
    if (o) {
        st->budget_percent = o->budget_percent;
        st->budget_min_per_sec = o->budget_min_per_sec;
        st->budget_window_ms = o->budget_window_ms;
    }
    pthread_mutex_lock(&h->budget.mu);
    st->budget_requests = h->budget.total_requests;
    st->budget_retries = h->budget.total_retries;
    st->budget_denied = h->budget.total_denied;
    if (st->budget_on) {
        allowed = budget_window(&h->budget, o, now, &retries);
        st->budget_available = allowed > retries ? (int64_t)(allowed - retries) : 0;
    }
    pthread_mutex_unlock(&h->budget.mu);
}

/* Under the read lock: the backends and hosts after the n_keys keys. */
static int snapshot_breakers(aigw_health *h, const aigw_health_opts *o, int64_t now,
                             aigw_stats *st)
{
    const table *tabs[2] = {&h->backends, &h->hosts};
    int t;
    for (t = 0; t < 2; t++) {
        node *n;
        for (n = tabs[t]->first; n; n = n->order)
            if (fill_breaker(&st->v[st->n++], (aigw_breaker *)n, t == 1, o, now) != 0)
                return -1;
    }
    return 0;
}

aigw_stats *aigw__health_snapshot(aigw_health *h, const aigw_config *cfg,
                                  const aigw_health_opts *o, int64_t now)
{
    key_refs refs = {NULL, 0, 0};
    aigw_stats *st;
    aigw_hkey **keys = NULL;
    size_t i, total;
    int rc;
    if (!h || !(st = aigw__calloc(1, sizeof *st)))
        return NULL;
    if (!o && cfg)
        o = &cfg->health;
    if (config_keys(cfg, &refs) != 0 || table_keys(h, cfg, &refs) != 0 ||
        !(keys = aigw__calloc(refs.n + 1, sizeof *keys)))
        goto fail;
    for (i = 0; i < refs.n; i++) /* outside the lock: it may insert */
        keys[i] = aigw__health_key(h, refs.v[i].provider, refs.v[i].id, refs.v[i].value);
    pthread_rwlock_rdlock(&h->lock);
    total = refs.n + h->backends.n + h->hosts.n;
    rc = (st->v = aigw__calloc(total + 1, sizeof *st->v)) ? 0 : -1;
    for (i = 0; rc == 0 && i < refs.n; i++, st->n++)
        rc = fill_key(&st->v[i], keys[i], refs.v[i].provider, refs.v[i].id, now);
    st->n_keys = refs.n;
    st->n_backends = h->backends.n;
    if (rc == 0)
        rc = snapshot_breakers(h, o, now, st);
    pthread_rwlock_unlock(&h->lock);
    if (rc != 0)
        goto fail;
    snapshot_budget(h, o, now, st);
    if (!(st->json = stats_to_json(st)))
        goto fail;
    aigw__free(keys);
    refs_free(&refs);
    return st;
fail:
    aigw__free(keys);
    refs_free(&refs);
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
