/* client.c - clients, requests, and the vtables a caller may plug in.  A
 * request is handed to the engine with what it needs (engine.h); the engine
 * never reaches back into the client. */
#include "engine.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

/* Requests on different threads count themselves in different slots, 64
 * bytes apart: no two counts share a cache line. */
#define READER_SLOTS 16

typedef struct reader_slot {
    atomic_ulong n;
    char pad[64 - sizeof(atomic_ulong)];
} reader_slot;

struct aigw_client {
    /* What a request starts on, taken without a lock (take_resolved): a
     * request announces itself in its thread's reader slot, loads the
     * pointer and takes a reference; a hot swap (under cfg_lock, which
     * also guards cfg) exchanges the pointer, waits until every slot has
     * been empty once (those loads are over: each took its reference) and
     * only then drops its own. */
    reader_slot readers[READER_SLOTS];
    _Atomic(aigw_resolved *) resolved; /* cfg as this client resolves it */
    pthread_mutex_t cfg_lock;
    aigw_config *cfg;
    aigw_health *health; /* what requests remember, shared by all of them */
    aigw_transport transport;
    void *transport_ud;
    bool has_strategy;
    aigw_strategy strategy;
    void *strategy_ud;
    bool has_clock;
    aigw_clock clock;
    void *clock_ud;
};

static int64_t client_now(const aigw_client *c)
{
    return c->has_clock ? c->clock.now_ms(c->clock_ud) : aigw__mono_ms();
}

/* The keys of cfg the health tables must have room for. */
static size_t config_key_count(const aigw_config *cfg)
{
    size_t n;
    (void)aigw__config_keys(cfg, &n);
    return n + cfg->n_providers + 1; /* the ngrok key per provider, key-less */
}

static void wait_readers(aigw_client *c);

/* A bare access key configuration names provider keys it does not hold. */
static aigw_status check_keys_resolved(const aigw_config *cfg, aigw_error **err)
{
    aigw_error *e = NULL;
    size_t r, s, k;
    const aigw_akc *akc = &cfg->akcs[0]; /* bare: the only one */
    for (r = 0; r < akc->n_rules; r++)
        for (s = 0; s < akc->rules[r].n_steps; s++)
            for (k = 0; k < akc->rules[r].steps[s].n_keys; k++) {
                char path[96];
                if (akc->rules[r].steps[s].keys[k].resolved)
                    continue;
                if (!e && !(e = aigw__error_new(AIGW_ECONFIG)))
                    return AIGW_ENOMEM;
                snprintf(path, sizeof path, "router.rules[%zu].steps[%zu].keys[%zu].id", r, s, k);
                aigw__error_add(e, path,
                                "no provider key with this id (a bare access key "
                                "configuration holds no providerKeys)");
            }
    if (!e)
        return AIGW_OK;
    if (err)
        *err = aigw__error_finish(e);
    else
        aigw_error_free(e);
    return AIGW_ECONFIG;
}

aigw_status aigw_client_new(aigw_config *cfg, aigw_client **out, aigw_error **err)
{
    aigw_client *c;
    aigw_resolved *res;
    aigw_status st;
    if (err)
        *err = NULL;
    if (out)
        *out = NULL;
    if (!cfg || !out)
        return aigw__fail(err, AIGW_EINVAL, "aigw_client_new: cfg and out must not be NULL");
    st = check_keys_resolved(cfg, err);
    if (st != AIGW_OK)
        return st;
    c = aigw__calloc(1, sizeof *c);
    if (!c)
        return aigw__fail(err, AIGW_ENOMEM, "out of memory");
    if (pthread_mutex_init(&c->cfg_lock, NULL) != 0) {
        aigw__free(c);
        return aigw__fail(err, AIGW_ENOMEM, "out of memory");
    }
    if (!(c->health = aigw__health_new())) {
        pthread_mutex_destroy(&c->cfg_lock);
        aigw__free(c);
        return aigw__fail(err, AIGW_ENOMEM, "out of memory");
    }
    aigw__health_expect_keys(c->health, config_key_count(cfg));
    /* the store's names are keyed before any entry is made */
    aigw__health_salt(c->health, cfg->has_store ? &cfg->store.salt : NULL);
    if (cfg->has_store) {
        aigw_health_store vt;
        void *ud;
        st = aigw__redis_store_new(&cfg->store, &vt, &ud);
        if (st != AIGW_OK) {
            aigw__health_free(c->health);
            pthread_mutex_destroy(&c->cfg_lock);
            aigw__free(c);
            return aigw__fail(err, st, st == AIGW_ENOMEM ? "out of memory"
                                                         : "this libaigw has no Redis store");
        }
        aigw__health_set_store(c->health, &vt, ud, cfg->store.sync_ms);
    }
    res = aigw__resolved_new(cfg, c->health);
    if (!res) {
        aigw__health_free(c->health);
        pthread_mutex_destroy(&c->cfg_lock);
        aigw__free(c);
        return aigw__fail(err, AIGW_ENOMEM, "out of memory");
    }
    st = aigw__curl_transport_new(&c->transport, &c->transport_ud);
    if (st != AIGW_OK) {
        aigw__resolved_unref(res);
        aigw__health_free(c->health);
        pthread_mutex_destroy(&c->cfg_lock);
        aigw__free(c);
        return aigw__fail(err, st, "the libcurl transport could not be initialised");
    }
    atomic_init(&c->resolved, res);
    c->cfg = aigw_config_ref(cfg);
    aigw__health_configure(c->health, &cfg->health, client_now(c));
    *out = c;
    return AIGW_OK;
}

static void drop_transport(aigw_client *c)
{
    if (c->transport.destroy)
        c->transport.destroy(c->transport_ud);
    memset(&c->transport, 0, sizeof c->transport);
    c->transport_ud = NULL;
}

static void drop_strategy(aigw_client *c)
{
    if (c->has_strategy && c->strategy.destroy)
        c->strategy.destroy(c->strategy_ud);
    c->has_strategy = false;
}

static void drop_clock(aigw_client *c)
{
    if (c->has_clock && c->clock.destroy)
        c->clock.destroy(c->clock_ud);
    c->has_clock = false;
}

void aigw_client_free(aigw_client *client)
{
    if (!client)
        return;
    drop_transport(client);
    drop_strategy(client);
    drop_clock(client);
    aigw__resolved_unref(atomic_load(&client->resolved));
    aigw_config_unref(client->cfg);
    aigw__health_free(client->health);
    pthread_mutex_destroy(&client->cfg_lock);
    aigw__free(client);
}

/* The current configuration, with a reference the caller drops. */
static aigw_config *current_config(aigw_client *c)
{
    aigw_config *cfg;
    pthread_mutex_lock(&c->cfg_lock);
    cfg = aigw_config_ref(c->cfg);
    pthread_mutex_unlock(&c->cfg_lock);
    return cfg;
}

static bool same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static bool same_secret(const aigw_secret *a, const aigw_secret *b)
{
    return a->len == b->len && (a->len == 0 || memcmp(a->value, b->value, a->len) == 0);
}

/* Whether two configurations name the same health store. */
static bool same_store(const aigw_config *a, const aigw_config *b)
{
    if (a->has_store != b->has_store)
        return false;
    return !a->has_store ||
           (same_str(a->store.url, b->store.url) && same_str(a->store.prefix, b->store.prefix) &&
            a->store.timeout_ms == b->store.timeout_ms && a->store.sync_ms == b->store.sync_ms &&
            same_secret(&a->store.password, &b->store.password) &&
            same_secret(&a->store.salt, &b->store.salt));
}

aigw_status aigw_client_set_config(aigw_client *client, aigw_config *cfg, aigw_error **err)
{
    aigw_config *old;
    aigw_resolved *resolved, *old_resolved;
    aigw_status st;
    if (err)
        *err = NULL;
    if (!client || !cfg)
        return aigw__fail(err, AIGW_EINVAL, "aigw_client_set_config: client and cfg must not be NULL");
    st = check_keys_resolved(cfg, err);
    if (st != AIGW_OK)
        return st;
    aigw__health_expect_keys(client->health, config_key_count(cfg));
    if (!(resolved = aigw__resolved_new(cfg, client->health)))
        return aigw__fail(err, AIGW_ENOMEM, "out of memory");
    /* Decided: a client keeps the store it was made with (its names are
     * keyed by the salt its entries were made under). */
    pthread_mutex_lock(&client->cfg_lock);
    if (!same_store(client->cfg, cfg)) {
        aigw_error *e = NULL;
        pthread_mutex_unlock(&client->cfg_lock);
        aigw__resolved_unref(resolved);
        if (err && (e = aigw__error_new(AIGW_ECONFIG)) != NULL)
            aigw__error_add(e, "gatewayConfig.healthStore",
                            "the health store cannot change on a running client (make a new "
                            "client for a new store)");
        if (err)
            *err = aigw__error_finish(e);
        return AIGW_ECONFIG;
    }
    aigw_config_ref(cfg);
    old = client->cfg;
    client->cfg = cfg;
    old_resolved = atomic_exchange(&client->resolved, resolved);
    wait_readers(client);
    pthread_mutex_unlock(&client->cfg_lock);
    aigw__resolved_unref(old_resolved);
    /* Decided: a new configuration ends every bench (an operator who fixed
     * a key's account reloads); cooldowns, breakers and counters carry over
     * for keys whose provider, id and value are unchanged. */
    aigw__health_configure(client->health, &cfg->health, client_now(client));
    aigw__health_end_benches(client->health);
    aigw__health_forget_shared(client->health, &cfg->health, NULL, false, client_now(client));
    /* Requests still running on the old one hold their own references; the
     * last of them frees it and wipes its secrets. */
    aigw_config_unref(old);
    return AIGW_OK;
}

static bool config_has_key(const aigw_config *cfg, const char *id)
{
    size_t i, n;
    const aigw_key_entry *k = aigw__config_keys(cfg, &n);
    for (i = 0; i < n; i++)
        if (strcmp(k[i].id, id) == 0)
            return true;
    return cfg->has_ngrok_key && strcmp(id, "ngrok") == 0;
}

aigw_status aigw_client_reset_health(aigw_client *client, const char *key_id)
{
    aigw_config *cfg;
    bool known;
    if (!client)
        return AIGW_EINVAL;
    if (key_id) {
        cfg = current_config(client);
        known = config_has_key(cfg, key_id);
        aigw_config_unref(cfg);
        if (!known)
            return AIGW_EINVAL;
    }
    aigw__health_reset(client->health, key_id);
    cfg = current_config(client);
    aigw__health_forget_shared(client->health, &cfg->health, key_id, true, client_now(client));
    aigw_config_unref(cfg);
    return AIGW_OK;
}

aigw_status aigw_client_stats(aigw_client *client, aigw_stats **out)
{
    aigw_config *cfg;
    if (out)
        *out = NULL;
    if (!client || !out)
        return AIGW_EINVAL;
    cfg = current_config(client);
    *out = aigw__health_snapshot(client->health, cfg, &cfg->health, client_now(client));
    aigw_config_unref(cfg);
    return *out ? AIGW_OK : AIGW_ENOMEM;
}

aigw_status aigw_client_set_strategy(aigw_client *client, const aigw_strategy *strategy,
                                     void *userdata)
{
    bool known = strategy && strategy->version >= 1 && strategy->version <= AIGW_STRATEGY_VERSION;
    bool usable = known && (strategy->order || (strategy->version >= 2 && strategy->order_health));
    if (!client || (strategy && !usable)) {
        if (strategy && strategy->destroy)
            strategy->destroy(userdata);
        if (client && strategy && !known)
            return AIGW_EVERSION;
        return AIGW_EINVAL;
    }
    drop_strategy(client);
    if (strategy) {
        /* Copy only the members the caller's version has. */
        memset(&client->strategy, 0, sizeof client->strategy);
        client->strategy.version = strategy->version;
        client->strategy.order = strategy->order;
        client->strategy.destroy = strategy->destroy;
        if (strategy->version >= 2)
            client->strategy.order_health = strategy->order_health;
        client->strategy_ud = userdata;
        client->has_strategy = true;
    }
    return AIGW_OK;
}

aigw_status aigw_client_set_health_store(aigw_client *client, const aigw_health_store *store,
                                         void *userdata)
{
    aigw_config *cfg;
    int64_t sync_ms;
    bool known = store && store->version == AIGW_HEALTH_STORE_VERSION;
    if (!client || (store && (!known || !store->get || !store->put || !store->claim))) {
        if (store && store->destroy)
            store->destroy(userdata);
        if (client && store && !known)
            return AIGW_EVERSION;
        return AIGW_EINVAL;
    }
    cfg = current_config(client);
    sync_ms = cfg->has_store ? cfg->store.sync_ms : 100;
    aigw_config_unref(cfg);
    aigw__health_set_store(client->health, store, userdata, sync_ms);
    return AIGW_OK;
}

aigw_status aigw_client_set_transport(aigw_client *client, const aigw_transport *transport,
                                      void *userdata)
{
    aigw_transport vt;
    void *ud;
    bool known = transport && transport->version >= 1 && transport->version <= AIGW_TRANSPORT_VERSION;
    if (!client || (transport && (!known || !transport->send))) {
        if (transport && transport->destroy)
            transport->destroy(userdata);
        if (client && transport && !known)
            return AIGW_EVERSION;
        return AIGW_EINVAL;
    }
    if (transport) {
        /* Copy only the members the caller's version has. */
        memset(&vt, 0, sizeof vt);
        vt.version = transport->version;
        vt.send = transport->send;
        vt.destroy = transport->destroy;
        if (transport->version >= 2)
            vt.send_stream = transport->send_stream;
        ud = userdata;
    } else {
        aigw_status st = aigw__curl_transport_new(&vt, &ud);
        if (st != AIGW_OK)
            return st;
    }
    drop_transport(client);
    client->transport = vt;
    client->transport_ud = ud;
    return AIGW_OK;
}

aigw_status aigw_client_set_clock(aigw_client *client, const aigw_clock *clock, void *userdata)
{
    if (!client || (clock && (clock->version != AIGW_CLOCK_VERSION || !clock->now_ms ||
                              !clock->sleep_ms))) {
        if (clock && clock->destroy)
            clock->destroy(userdata);
        if (client && clock && clock->version != AIGW_CLOCK_VERSION)
            return AIGW_EVERSION;
        return AIGW_EINVAL;
    }
    drop_clock(client);
    if (clock) {
        client->clock = *clock;
        client->clock_ud = userdata;
        client->has_clock = true;
    }
    return AIGW_OK;
}

/* This thread's reader slot: dealt round-robin on first use. */
static reader_slot *my_slot(aigw_client *c)
{
    static _Thread_local unsigned home AIGW__TLS_FAST; /* 1 + the slot; 0: not dealt yet */
    static atomic_uint next;
    if (home == 0)
        home = 1 + atomic_fetch_add_explicit(&next, 1, memory_order_relaxed) % READER_SLOTS;
    return &c->readers[home - 1];
}

/* The configuration current now, with a reference the caller drops; no
 * lock (struct aigw_client).  Sequentially consistent: the slot's count is
 * seen by a swap that comes after the load. */
static aigw_resolved *take_resolved(aigw_client *c)
{
    reader_slot *s = my_slot(c);
    aigw_resolved *r;
    atomic_fetch_add(&s->n, 1);
    r = aigw__resolved_ref(atomic_load(&c->resolved));
    atomic_fetch_sub(&s->n, 1);
    return r;
}

/* After a swap: returns once no request can still be between loading the
 * old pointer and taking its reference.  Each slot is busy for a few
 * instructions at a time, so this waits for nanoseconds, not requests. */
static void wait_readers(aigw_client *c)
{
    size_t i;
    for (i = 0; i < READER_SLOTS; i++)
        while (atomic_load(&c->readers[i].n) != 0)
            sched_yield();
}

/* One request on the configuration current when it starts, held to its
 * end whatever a hot swap does. */
static aigw_status send(aigw_client *c, const aigw_request *req, const aigw_stream_handler *sh,
                        void *sud, aigw_response **out, aigw_error **err)
{
    aigw_engine_env env;
    aigw_resolved *resolved;
    aigw_status st;
    resolved = take_resolved(c);
    env.cfg = aigw__resolved_config(resolved);
    env.resolved = resolved;
    env.health = c->health;
    env.transport = &c->transport;
    env.transport_ud = c->transport_ud;
    env.strategy = c->has_strategy ? &c->strategy : NULL;
    env.strategy_ud = c->strategy_ud;
    env.clock = c->has_clock ? &c->clock : NULL;
    env.clock_ud = c->clock_ud;
    st = aigw__engine_send(&env, req, sh, sud, out, err);
    aigw__resolved_unref(resolved);
    return st;
}

aigw_status aigw_client_send(aigw_client *client, const aigw_request *req, aigw_response **out,
                             aigw_error **err)
{
    if (err)
        *err = NULL;
    if (out)
        *out = NULL;
    if (!client || !req || !out)
        return aigw__fail(err, AIGW_EINVAL, "aigw_client_send: client, req and out must not be NULL");
    return send(client, req, NULL, NULL, out, err);
}

aigw_status aigw_client_stream(aigw_client *client, const aigw_request *req,
                               const aigw_stream_handler *handler, void *userdata,
                               aigw_response **out, aigw_error **err)
{
    static const aigw_stream_handler none = {AIGW_STREAM_VERSION, NULL, NULL, NULL, NULL};
    if (err)
        *err = NULL;
    if (out)
        *out = NULL;
    if (!client || !req || !out)
        return aigw__fail(err, AIGW_EINVAL,
                          "aigw_client_stream: client, req and out must not be NULL");
    if (handler && (handler->version < 1 || handler->version > AIGW_STREAM_VERSION))
        return aigw__fail(err, AIGW_EVERSION, "aigw_client_stream: unknown handler version %u",
                          (unsigned)handler->version);
    return send(client, req, handler ? handler : &none, userdata, out, err);
}

aigw_status aigw_request_set_stream_restart(aigw_request *req, int restart)
{
    if (!req || restart < -1 || restart > 1)
        return AIGW_EINVAL;
    req->stream_restart = restart;
    return AIGW_OK;
}

/* ---- cancel tokens ---- */

struct aigw_cancel {
    _Atomic int fired;
};

aigw_status aigw_cancel_new(aigw_cancel **out)
{
    aigw_cancel *c;
    if (!out)
        return AIGW_EINVAL;
    *out = NULL;
    if (!(c = aigw__calloc(1, sizeof *c)))
        return AIGW_ENOMEM;
    atomic_init(&c->fired, 0);
    *out = c;
    return AIGW_OK;
}

void aigw_cancel_fire(aigw_cancel *cancel)
{
    if (cancel) /* one lock-free store: safe in a signal handler */
        atomic_store(&cancel->fired, 1);
}

int aigw_cancel_fired(const aigw_cancel *cancel)
{
    return cancel ? atomic_load(&((aigw_cancel *)(uintptr_t)cancel)->fired) : 0;
}

void aigw_cancel_free(aigw_cancel *cancel)
{
    aigw__free(cancel);
}

aigw_status aigw_request_set_cancel(aigw_request *req, aigw_cancel *cancel)
{
    if (!req)
        return AIGW_EINVAL;
    req->cancel = cancel;
    return AIGW_OK;
}

/* ---- requests ---- */

aigw_status aigw_request_new(aigw_request **out)
{
    aigw_request *r;
    if (!out)
        return AIGW_EINVAL;
    *out = NULL;
    r = aigw__calloc(1, sizeof *r);
    if (!r)
        return AIGW_ENOMEM;
    r->stream_restart = -1;
    r->path = aigw__strdup("/v1/chat/completions");
    if (!r->path) {
        aigw__free(r);
        return AIGW_ENOMEM;
    }
    *out = r;
    return AIGW_OK;
}

aigw_status aigw_request_set_body(aigw_request *req, const char *body, size_t len)
{
    char *copy;
    if (!req || (!body && len))
        return AIGW_EINVAL;
    copy = aigw__strndup(body ? body : "", len);
    if (!copy)
        return AIGW_ENOMEM;
    aigw__free(req->body);
    req->body = copy;
    req->body_len = len;
    return AIGW_OK;
}

aigw_status aigw_request_set_path(aigw_request *req, const char *path)
{
    char *copy;
    const char *p;
    if (!req || !path || path[0] != '/')
        return AIGW_EINVAL;
    for (p = path; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f)
            return AIGW_EINVAL; /* no spaces, CR, LF or controls in a request line */
    if (strstr(path, "/../") || strstr(path, "/./"))
        return AIGW_EINVAL;
    copy = aigw__strdup(path);
    if (!copy)
        return AIGW_ENOMEM;
    aigw__free(req->path);
    req->path = copy;
    return AIGW_OK;
}

int aigw_request_wants_stream(const aigw_request *req)
{
    return req && aigw__body_wants_stream(req->body, req->body_len);
}

aigw_status aigw_request_set_configuration(aigw_request *req, const char *name)
{
    char *copy = NULL;
    size_t len;
    if (!req)
        return AIGW_EINVAL;
    if (name && *name) {
        len = strlen(name);
        if (len > 255 || aigw__utf8_check(name, len) != len)
            return AIGW_EINVAL;
        if (!(copy = aigw__strdup(name)))
            return AIGW_ENOMEM;
    }
    aigw__free(req->configuration);
    req->configuration = copy;
    return AIGW_OK;
}

void aigw_request_free(aigw_request *req)
{
    if (!req)
        return;
    aigw__free(req->configuration);
    aigw__free(req->path);
    aigw__free(req->body);
    aigw__free(req);
}
