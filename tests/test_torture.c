/*
 * test_torture.c - running out of memory, everywhere, in curl's torture
 * style.  For each scenario one clean run counts its allocations (N); then
 * for each k in 1..N the k-th allocation fails once, and again from k on.
 * Every run must end cleanly: AIGW_ENOMEM (no response, an error that is
 * NULL or says so), or the clean run's own result when what failed was
 * recoverable; no leak (LeakSanitizer, checked after each scenario under
 * ASan); nothing half applied; no stream callback after a failure that
 * ended the request; and health left as the clean run leaves it or less:
 * no key, endpoint, backend or host holds a failure, a state or a reason
 * the clean run does not give it, and the retry budget refused nothing.
 *
 * The library's allocations fail through its own door
 * (aigw__alloc_fail_at / _from), and cJSON's with them: the test routes
 * cJSON's hooks through that door (the library never sets them).
 * libcurl's own allocations fail through curl_global_init_mem's allocators
 * (tests/support/oom.c), against a real loopback provider (the embedded
 * mock, tests/support/provider.c), so CURLE_OUT_OF_MEMORY comes for real.
 *
 * Scenarios: load a gateway file; a served request (one key, 200); a
 * request that fails over twice (429, 401, then 200); a stream; a stream
 * restarted on the next model; a configuration swap; a round trip through
 * the Redis health store (with hiredis and redis-server only).
 */
#define _GNU_SOURCE /* setenv, mkdtemp */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "aigw.h"
#include "internal.h"
#include "oom.h"
#include "support.h"
#ifdef AIGW_TEST_REDIS
#include "redis.h"
#endif

#ifdef AIGW__ASAN /* internal.h */
#include <sanitizer/lsan_interface.h>
#endif

/* ---- the provider's answers ---- */

#define K_A "sk-torture-a-0123456789"
#define K_B "sk-torture-b-0123456789"
#define K_C "sk-torture-c-0123456789"

#define CHUNK(choice) "data: {\"id\":\"c1\",\"choices\":[{\"index\":0," choice "}]}\n\n"
#define ROLE CHUNK("\"delta\":{\"role\":\"assistant\"}")
#define TOK(x) CHUNK("\"delta\":{\"content\":\"" x "\"}")
#define FINISH CHUNK("\"delta\":{},\"finish_reason\":\"stop\"")
#define DONE "data: [DONE]\n\n"

static const char *const HEALTHY[] = {ROLE, TOK("Hel"), TOK("lo"), FINISH, DONE, NULL};
static const char *const CUT[] = {ROLE, TOK("Hal"), NULL};

#define RL_BODY "{\"error\":{\"message\":\"Rate limit reached\",\"type\":\"requests\"," \
                "\"code\":\"rate_limit_exceeded\"}}"
#define AUTH_BODY "{\"error\":{\"message\":\"Incorrect API key provided\"," \
                  "\"type\":\"invalid_request_error\",\"code\":\"invalid_api_key\"}}"

#define BODY "{\"model\":\"mock:m1\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}"
#define STREAM_BODY                                                                        \
    "{\"model\":\"mock:m1\",\"models\":[\"mock:m2\"],\"stream\":true,"                     \
    "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}"

#define KEY(id, v)                                                                         \
    "{\"id\":\"" id "\",\"providerId\":\"mock\",\"name\":\"" id "\",\"value\":\"" v "\"}"
#define KEYS_ABC KEY("a", K_A) "," KEY("b", K_B) "," KEY("c", K_C)
#define RULE(keys)                                                                         \
    "{\"provider\":\"mock\",\"steps\":[{\"type\":\"user\",\"keySelectionStrategy\":"       \
    "\"ordered\",\"keys\":[" keys "]}]}"
#define GW "\"perRequestTimeout\":\"10s\",\"totalTimeout\":\"30s\",\"connectTimeout\":\"5s\"," \
           "\"firstTokenTimeout\":\"10s\",\"streamIdleTimeout\":\"10s\",\"sameBackendRetries\":0"

/* ---- what one run did ---- */

#define MAX_ENTRIES 32

/* One snapshot entry, copied. */
typedef struct entry {
    char kind[16], name[96], provider[32], model[32], state[16], reason[24];
    uint64_t requests, successes, failures;
} entry;

typedef struct result {
    aigw_status st;
    char answer[512];   /* outcome, status and attempts; "" without a response */
    char bytes[2048];   /* what a stream's caller holds */
    int starts, resets;
    long late;          /* callbacks after a failed allocation */
    entry health[MAX_ENTRIES];
    size_t n_health;
    uint64_t budget_retries, budget_denied;
    char redis[1024];   /* the store's names, sorted */
    char served_after[32]; /* swap: the key that serves once the run is over */
} result;

/* What a scenario's run works with. */
typedef struct world {
    aigw_config *cfg;        /* the scenario's, parsed once */
    aigw_client *c;          /* made afresh for each run, outside the window */
    stream_caller g;         /* a stream's caller ... */
    long late;               /* ... and its callbacks after a failed allocation */
    bool curl_gate;          /* failures come through OOM_CURL, not the door */
    aigw_response *resp;
    aigw_error *err;
    aigw_config *loaded;     /* load */
    char *json;              /* swap: the new gateway file */
    bool swapped;            /* swap: aigw_client_set_config said OK */
    char path[256];          /* load: the gateway file */
} world;

typedef struct scenario {
    const char *name;
    void (*prepare)(world *w); /* once */
    aigw_status (*run)(world *w);
    bool needs_client;
    void (*finish)(world *w); /* once */
} scenario;

/* ---- the caller's side of a stream: STREAM_CALLER, watched ---- */

static long failures_now(const world *w)
{
    return w->curl_gate ? oom_failures(&OOM_CURL) : aigw__alloc_failures();
}

static void note(world *w)
{
    if (failures_now(w) > 0)
        w->late++;
}

static int w_start(void *ud, int status, const aigw_header *h, size_t n)
{
    note(ud);
    return STREAM_CALLER.on_start(&((world *)ud)->g, status, h, n);
}

static int w_data(void *ud, const char *data, size_t len)
{
    note(ud);
    return STREAM_CALLER.on_data(&((world *)ud)->g, data, len);
}

static int w_reset(void *ud, const char *reason)
{
    note(ud);
    return STREAM_CALLER.on_reset(&((world *)ud)->g, reason);
}

static int w_commit(void *ud, const char *request_id, const aigw_attempt *a)
{
    note(ud);
    return STREAM_CALLER.on_commit(&((world *)ud)->g, request_id, a);
}

static const aigw_stream_handler WATCHED = {AIGW_STREAM_VERSION, w_start, w_data, w_reset,
                                            w_commit};

/* ---- runs ---- */

/* body through the client: whole (stream false) or streamed to w. */
static aigw_status send_one(world *w, const char *body, bool stream, int restart)
{
    aigw_request *req = NULL;
    aigw_status st = aigw_request_new(&req);
    if (st == AIGW_OK)
        st = aigw_request_set_body(req, body, strlen(body));
    if (st == AIGW_OK && stream)
        st = aigw_request_set_stream_restart(req, restart);
    if (st == AIGW_OK && stream)
        st = aigw_client_stream(w->c, req, &WATCHED, w, &w->resp, &w->err);
    else if (st == AIGW_OK)
        st = aigw_client_send(w->c, req, &w->resp, &w->err);
    aigw_request_free(req);
    return st;
}

static void rule(mockprov_action action, const char *key, const char *model, int status,
                 const char *body, const char *const *chunks, mockprov_stream_end end)
{
    mockprov_rule r = mp_rule(action, key, model, status, NULL, body, 0);
    r.chunks = chunks;
    r.stream_end = end;
    mp_add(MP, r);
}

static aigw_config *config_for(const char *keys, const char *rules, const char *gw)
{
    char *json = mock_gateway_json("torture", mockprov_base_url(MP), keys, rules, gw);
    aigw_config *cfg = config_from_json(json);
    free(json);
    return cfg;
}

/* A served request: one key, 200. */
static void prep_served(world *w)
{
    w->cfg = config_for(KEY("a", K_A), RULE("{\"id\":\"a\"}"), GW);
}

static aigw_status run_send(world *w)
{
    return send_one(w, BODY, false, 0);
}

/* Fails over twice: a's 429, b's 401, then c's 200. */
static void prep_failover(world *w)
{
    w->cfg = config_for(KEYS_ABC, RULE("{\"id\":\"a\"},{\"id\":\"b\"},{\"id\":\"c\"}"), GW);
    rule(MOCKPROV_RESPOND, K_A, NULL, 429, RL_BODY, NULL, MOCKPROV_END_OK);
    rule(MOCKPROV_RESPOND, K_B, NULL, 401, AUTH_BODY, NULL, MOCKPROV_END_OK);
}

/* A stream: a's answer, whole. */
static void prep_stream(world *w)
{
    prep_served(w);
    rule(MOCKPROV_STREAM, K_A, NULL, 200, NULL, HEALTHY, MOCKPROV_END_OK);
}

static aigw_status run_stream(world *w)
{
    return send_one(w, STREAM_BODY, true, 0);
}

/* A stream restarted: m1's is cut after its first token, m2 answers. */
static void prep_restart(world *w)
{
    prep_served(w);
    rule(MOCKPROV_STREAM, K_A, "m1", 200, NULL, CUT, MOCKPROV_END_CUT);
    rule(MOCKPROV_STREAM, K_A, "m2", 200, NULL, HEALTHY, MOCKPROV_END_OK);
}

static aigw_status run_restart(world *w)
{
    return send_one(w, STREAM_BODY, true, 1);
}

/* Loads a gateway file whose keys come from a file and the environment. */
static void prep_load(world *w)
{
    char dir[] = "/tmp/aigw-torture-XXXXXX", keyfile[300];
    FILE *f;
    char *json;
    assert_non_null(mkdtemp(dir));
    snprintf(keyfile, sizeof keyfile, "%s/key-b", dir);
    snprintf(w->path, sizeof w->path, "%s/gateway.json", dir);
    f = fopen(keyfile, "w");
    assert_non_null(f);
    fputs(K_B "\n", f);
    fclose(f);
    assert_int_equal(setenv("AIGW_TORTURE_KEY_C", K_C, 1), 0);
    {
        char keys[1024];
        snprintf(keys, sizeof keys,
                 KEY("a", K_A) ",{\"id\":\"b\",\"providerId\":\"mock\",\"name\":\"b\","
                               "\"valueFrom\":{\"file\":\"%s\"}},"
                               "{\"id\":\"c\",\"providerId\":\"mock\",\"name\":\"c\","
                               "\"valueFrom\":{\"env\":\"AIGW_TORTURE_KEY_C\"}}",
                 keyfile);
        json = mock_gateway_json("torture", mockprov_base_url(MP), keys,
                                 RULE("{\"id\":\"a\"},{\"id\":\"b\"},{\"id\":\"c\"}"), GW);
    }
    f = fopen(w->path, "w");
    assert_non_null(f);
    fputs(json, f);
    fclose(f);
    free(json);
}

static aigw_status run_load(world *w)
{
    return aigw_config_load_file(w->path, &w->loaded, &w->err);
}

static void finish_load(world *w)
{
    char dir[256];
    snprintf(dir, sizeof dir, "%s", w->path);
    unlink(w->path);
    *strrchr(dir, '/') = '\0';
    strcat(dir, "/key-b");
    unlink(dir);
    *strrchr(dir, '/') = '\0';
    rmdir(dir);
}

/* A configuration swap: the new file (its rule uses b where the old one
 * used a) parsed, installed, and used. */
static void prep_swap(world *w)
{
    w->json = mock_gateway_json("torture", mockprov_base_url(MP), KEYS_ABC,
                                RULE("{\"id\":\"b\"}"), GW);
    w->cfg = config_for(KEYS_ABC, RULE("{\"id\":\"a\"}"), GW);
}

static void finish_swap(world *w)
{
    free(w->json);
}

static aigw_status run_swap(world *w)
{
    aigw_config *cfg = NULL;
    aigw_status st = aigw_config_parse(w->json, strlen(w->json), &cfg, &w->err);
    if (st != AIGW_OK)
        return st;
    st = aigw_client_set_config(w->c, cfg, &w->err);
    aigw_config_unref(cfg);
    if (st != AIGW_OK)
        return st;
    w->swapped = true;
    return send_one(w, BODY, false, 0);
}

#ifdef AIGW_TEST_REDIS
static redis_server *SRV;

/* Through the Redis store: a's 429 is written there, b serves. */
static void prep_redis(world *w)
{
    char gw[512];
    snprintf(gw, sizeof gw,
             GW ",\"healthStore\":{\"redis\":{\"url\":\"%s\",\"keyPrefix\":\"t:\","
                "\"timeout\":\"2s\",\"salt\":{\"value\":\"torture-salt\"}}}",
             redis_server_url(SRV));
    w->cfg = config_for(KEYS_ABC, RULE("{\"id\":\"a\"},{\"id\":\"b\"}"), gw);
    rule(MOCKPROV_RESPOND, K_A, NULL, 429, RL_BODY, NULL, MOCKPROV_END_OK);
}
#endif

/* ---- what a run left ---- */

static void copy(char *dst, size_t size, const char *src)
{
    snprintf(dst, size, "%s", src ? src : "");
}

static void take_health(world *w, result *res)
{
    aigw_stats *s = NULL;
    size_t i;
    res->n_health = 0;
    if (!w->c)
        return;
    assert_int_equal(aigw_client_stats(w->c, &s), AIGW_OK);
    for (i = 0; i < aigw_stats_count(s); i++) {
        const aigw_stat *e = aigw_stats_at(s, i);
        entry *d = &res->health[res->n_health++];
        assert_true(res->n_health <= MAX_ENTRIES);
        copy(d->kind, sizeof d->kind, e->kind);
        copy(d->name, sizeof d->name, e->name);
        copy(d->provider, sizeof d->provider, e->provider);
        copy(d->model, sizeof d->model, e->model);
        copy(d->state, sizeof d->state, e->state);
        copy(d->reason, sizeof d->reason, e->reason);
        d->requests = e->requests;
        d->successes = e->successes;
        d->failures = e->failures;
    }
    aigw_stats_budget(s, NULL, &res->budget_retries, &res->budget_denied, NULL);
    aigw_stats_free(s);
}

static void take_answer(world *w, result *res)
{
    char attempts[400] = "";
    const aigw_response *r = w->resp;
    res->answer[0] = '\0';
    if (w->loaded) {
        snprintf(res->answer, sizeof res->answer, "config: %zu keys",
                 aigw_config_access_key_count(w->loaded) + w->loaded->n_keys);
        return;
    }
    if (!r)
        return;
    assert_int_equal(attempts_string(r, "key:class:verdict:result", attempts, sizeof attempts),
                     0);
    snprintf(res->answer, sizeof res->answer, "%s %d [%s]",
             aigw_outcome_name(aigw_response_outcome(r)), aigw_response_status(r), attempts);
    assert_non_null(aigw_response_trace_json(r));
}

/* The key that serves the next request (swap): which configuration is in. */
static void take_served_after(world *w, result *res)
{
    aigw_response *r = send_body(w->c, BODY);
    assert_int_equal(aigw_response_outcome(r), AIGW_OUTCOME_SERVED);
    copy(res->served_after, sizeof res->served_after,
         aigw_attempt_key_id(aigw_response_attempt(r, aigw_response_attempt_count(r) - 1)));
    aigw_response_free(r);
}

/* ---- the harness ---- */

typedef enum mode { CLEAN, ONCE, FROM } mode;

static void arm(const world *w, mode m, long k)
{
    if (m == CLEAN)
        return;
    if (w->curl_gate)
        (m == ONCE ? oom_fail_at : oom_fail_from)(&OOM_CURL, k);
    else
        (m == ONCE ? aigw__alloc_fail_at : aigw__alloc_fail_from)(k);
}

static void disarm(const world *w)
{
    if (w->curl_gate)
        oom_fail_at(&OOM_CURL, 0);
    else
        aigw__alloc_fail_at(0);
}

static long allocations(const world *w)
{
    return w->curl_gate ? oom_count(&OOM_CURL) : aigw__alloc_count();
}

/* One run of sc with the k-th allocation failing as m says: its result in
 * *res, whether a failure was injected in *failed, and the allocations it
 * made. */
static long run_one(const scenario *sc, world *w, mode m, long k, result *res, bool *failed)
{
    long made;
    memset(res, 0, sizeof *res);
    memset(&w->g, 0, sizeof w->g);
    w->late = 0;
    w->resp = NULL;
    w->err = NULL;
    w->loaded = NULL;
    w->swapped = false;
#ifdef AIGW_TEST_REDIS
    if (SRV)
        redis_flush(SRV);
#endif
    w->c = sc->needs_client ? client_on(w->cfg) : NULL;
    made = allocations(w);
    arm(w, m, k);
    res->st = sc->run(w);
    *failed = failures_now(w) > 0;
    disarm(w);
    made = allocations(w) - made;
    res->late = w->late;
    res->starts = w->g.starts;
    res->resets = w->g.resets;
    copy(res->bytes, sizeof res->bytes, w->g.bytes);
    take_answer(w, res);
    take_health(w, res);
#ifdef AIGW_TEST_REDIS
    if (SRV)
        redis_keys(SRV, "t:*", res->redis, sizeof res->redis);
#endif
    if (res->st != AIGW_OK) {
        /* an error: nothing else, and it says what it is when there is one */
        if (res->st != AIGW_ENOMEM)
            fail_msg("%s: k=%ld: %s (%s)", sc->name, k, aigw_status_name(res->st),
                     w->err ? aigw_error_message(w->err) : "no error object");
        assert_null(w->resp);
        assert_null(w->loaded);
        if (w->err)
            assert_int_equal(aigw_error_code(w->err), AIGW_ENOMEM);
    }
    if (sc->run == run_swap) {
        copy(res->answer + strlen(res->answer), sizeof res->answer - strlen(res->answer),
             w->swapped ? " swapped" : "");
        take_served_after(w, res);
    }
    aigw_response_free(w->resp);
    aigw_error_free(w->err);
    aigw_config_unref(w->loaded);
    aigw_client_free(w->c);
    w->c = NULL;
    return made;
}

/* e's counterpart in the clean run's health, or NULL. */
static const entry *counterpart(const result *clean, const entry *e)
{
    size_t i;
    for (i = 0; i < clean->n_health; i++) {
        const entry *c = &clean->health[i];
        if (strcmp(c->kind, e->kind) == 0 && strcmp(c->name, e->name) == 0 &&
            strcmp(c->provider, e->provider) == 0 && strcmp(c->model, e->model) == 0)
            return c;
    }
    return NULL;
}

static bool fresh_state(const char *state)
{
    return strcmp(state, "ready") == 0 || strcmp(state, "closed") == 0;
}

/* Health after a failed run: what the clean run leaves, or less. */
static void check_health(const char *what, const result *clean, const result *got)
{
    size_t i;
    for (i = 0; i < got->n_health; i++) {
        const entry *e = &got->health[i], *c = counterpart(clean, e);
        if (!c)
            fail_msg("%s: %s %s (%s) is not in the clean run's health", what, e->kind, e->name,
                     e->model);
        if ((!fresh_state(e->state) && strcmp(e->state, c->state) != 0) ||
            (e->reason[0] && strcmp(e->reason, c->reason) != 0) ||
            e->failures > c->failures || e->requests > c->requests ||
            e->successes > c->successes)
            fail_msg("%s: %s %s (%s): %s/%s %llu requests %llu failures; the clean run: "
                     "%s/%s %llu requests %llu failures",
                     what, e->kind, e->name, e->model, e->state, e->reason,
                     (unsigned long long)e->requests, (unsigned long long)e->failures, c->state,
                     c->reason, (unsigned long long)c->requests,
                     (unsigned long long)c->failures);
    }
    if (got->budget_denied != 0 || got->budget_retries > clean->budget_retries)
        fail_msg("%s: the retry budget: %llu retries %llu denied", what,
                 (unsigned long long)got->budget_retries, (unsigned long long)got->budget_denied);
}

/* Whether every name of got is one of clean's (both space separated). */
static void check_names(const char *what, const char *clean, const char *got)
{
    char buf[1024], *save = NULL, *t;
    copy(buf, sizeof buf, got);
    for (t = strtok_r(buf, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
        const char *p = strstr(clean, t);
        size_t n = strlen(t);
        if (!p || (p != clean && p[-1] != ' ') || (p[n] != ' ' && p[n] != '\0'))
            fail_msg("%s: the store holds %s, which the clean run does not write (%s)", what,
                     t, clean);
    }
}

static void check_run(const scenario *sc, mode m, long k, const result *clean,
                      const result *got, bool failed)
{
    char what[96];
    snprintf(what, sizeof what, "%s, allocation %ld %s", sc->name, k,
             m == ONCE ? "failing" : "on failing");
    if (!failed || got->st == AIGW_OK) {
        /* nothing failed, or what failed was recovered: the clean result */
        if (got->st != AIGW_OK)
            fail_msg("%s: %s without a failed allocation", what, aigw_status_name(got->st));
        if (strcmp(got->answer, clean->answer) != 0 || strcmp(got->bytes, clean->bytes) != 0)
            fail_msg("%s: recovered, but answered\n  %s\n  %s\nnot\n  %s\n  %s", what,
                     got->answer, got->bytes, clean->answer, clean->bytes);
    } else if (m == ONCE && got->late > 0) {
        /* the one failure ended the request: nothing may follow it */
        fail_msg("%s: %ld stream callbacks after the failure", what, got->late);
    }
    if (got->starts > 1 + got->resets)
        fail_msg("%s: %d on_start for %d resets", what, got->starts, got->resets);
    check_health(what, clean, got);
    check_names(what, clean->redis, got->redis);
    if (clean->served_after[0] &&
        strcmp(got->served_after, strstr(got->answer, "swapped") ? clean->served_after : "a") !=
            0)
        fail_msg("%s: half applied: %s serves after it (%s)", what, got->served_after,
                 got->answer);
}

static void leak_check(const char *what)
{
#ifdef AIGW__ASAN
    if (__lsan_do_recoverable_leak_check() != 0)
        fail_msg("%s: leaks (above)", what);
#else
    (void)what;
#endif
}

/* Runs sc clean, then failing each allocation once and from it on. */
static void torture(const scenario *sc, bool curl_gate)
{
    world w;
    result clean, got;
    bool failed;
    long n, k;
    mode m;
    int64_t t0 = now_ms();
    int recovered = 0, nomem = 0;
    memset(&w, 0, sizeof w);
    w.curl_gate = curl_gate;
    mp_reset();
    sc->prepare(&w);
    n = run_one(sc, &w, CLEAN, 0, &clean, &failed);
    assert_int_equal(clean.st, AIGW_OK);
    assert_false(failed);
    for (m = ONCE; m <= FROM; m++) {
        for (k = 1; k <= n; k++) {
            run_one(sc, &w, m, k, &got, &failed);
            check_run(sc, m, k, &clean, &got, failed);
            recovered += failed && got.st == AIGW_OK;
            nomem += got.st == AIGW_ENOMEM;
        }
    }
    /* one past the end: nothing should fail (a run may allocate more than
     * the clean one did, as reads come in other pieces: then it is judged
     * as any other) */
    run_one(sc, &w, FROM, n + 1, &got, &failed);
    check_run(sc, FROM, n + 1, &clean, &got, failed);
    if (sc->finish)
        sc->finish(&w);
    aigw_config_unref(w.cfg);
    leak_check(sc->name);
    print_message("%-10s %s N=%ld: %d AIGW_ENOMEM, %d recovered, %lld ms (%s)\n", sc->name,
                  curl_gate ? "libcurl" : "libaigw", n, nomem, recovered,
                  (long long)(now_ms() - t0), clean.answer);
    assert_true(nomem > 0);
}

static const scenario LOAD = {"load", prep_load, run_load, false, finish_load};
static const scenario SERVED = {"served", prep_served, run_send, true, NULL};
static const scenario FAILOVER = {"failover", prep_failover, run_send, true, NULL};
static const scenario STREAM = {"stream", prep_stream, run_stream, true, NULL};
static const scenario RESTART = {"restart", prep_restart, run_restart, true, NULL};
static const scenario SWAP = {"swap", prep_swap, run_swap, true, finish_swap};

static void test_load(void **state)
{
    (void)state;
    torture(&LOAD, false);
}

static void test_served(void **state)
{
    (void)state;
    torture(&SERVED, false);
}

static void test_failover(void **state)
{
    (void)state;
    torture(&FAILOVER, false);
}

static void test_stream(void **state)
{
    (void)state;
    torture(&STREAM, false);
}

static void test_restart(void **state)
{
    (void)state;
    torture(&RESTART, false);
}

static void test_swap(void **state)
{
    (void)state;
    torture(&SWAP, false);
}

static void test_redis(void **state)
{
    (void)state;
#ifdef AIGW_TEST_REDIS
    {
        static const scenario REDIS = {"redis", prep_redis, run_send, true, NULL};
        SRV = redis_server_start(NULL);
        if (!SRV)
            skip();
        torture(&REDIS, false);
        redis_server_stop(SRV);
        SRV = NULL;
    }
#else
    skip();
#endif
}

/* libcurl's own allocations: CURLE_OUT_OF_MEMORY for real. */
static void test_curl_failover(void **state)
{
    (void)state;
    torture(&FAILOVER, true);
}

static void test_curl_restart(void **state)
{
    (void)state;
    torture(&RESTART, true);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load),
        cmocka_unit_test(test_served),
        cmocka_unit_test(test_failover),
        cmocka_unit_test(test_stream),
        cmocka_unit_test(test_restart),
        cmocka_unit_test(test_swap),
        cmocka_unit_test(test_redis),
        cmocka_unit_test(test_curl_failover),
        cmocka_unit_test(test_curl_restart),
    };
    /* before anything initialises libcurl: its allocations through the
     * test's gate; and cJSON's through the library's door */
    if (oom_curl_init() != 0) {
        fprintf(stderr, "test_torture: curl_global_init_mem failed\n");
        return 1;
    }
    oom_cjson_hooks(OOM_CJSON_AIGW);
    return cmocka_run_group_tests(tests, mp_group_setup, mp_group_teardown);
}
