/*
 * test_concurrency.c - one client, many threads, everything at once: 8
 * threads x 5,000 requests through mixed faults, a configuration swap every
 * ~2 ms (among variants, and now and then a freshly parsed configuration
 * dropped by the caller at once), health resets, and a thread reading the
 * stats every ms.
 *
 * The transport is in process and cheap: it decides each call from a hash
 * of an atomic counter (~60% 200, ~15% 429 with retry-after-ms 1..5, ~10%
 * 500, ~5% 401, ~5% timeout, ~5% connection refused) and counts the calls
 * per key.  Checked: every send returns AIGW_OK with a response; the
 * attempts of all responses add up to the transport's calls; outcomes are
 * only served, exhausted or timed out; the retry budget's counters agree
 * with the attempts.  Leaks and races are the sanitizer builds' to find
 * (scripts/test runs this under ASan and TSan).
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "aigw.h"
#include "support.h"

#define THREADS 8
#define PER_THREAD 5000

#define V_A "sk-cc-aaaa-1111111111"
#define V_B "sk-cc-bbbb-2222222222"
#define V_C "sk-cc-cccc-3333333333"
#define V_C2 "sk-cc-cccc-changed-4444" /* c's value in variant 1 */
static const char *const VALUES[] = {V_A, V_B, V_C, V_C2};
#define N_VALUES 4

static const char BODY[] = "{\"model\":\"fake:m1\",\"models\":[\"fake:m2\"],"
                           "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";

/* ---- the configurations ---- */

#define PROVIDERS "\"providers\":[{\"providerId\":\"fake\",\"name\":\"Fake\"," \
                  "\"baseUrl\":\"https://fake.invalid/v1\"}],"
#define KEYS(c_value)                                                               \
    "\"providerKeys\":["                                                            \
    "{\"id\":\"a\",\"providerId\":\"fake\",\"name\":\"a\",\"value\":\"" V_A "\"},"  \
    "{\"id\":\"b\",\"providerId\":\"fake\",\"name\":\"b\",\"value\":\"" V_B "\"},"  \
    "{\"id\":\"c\",\"providerId\":\"fake\",\"name\":\"c\",\"value\":\"" c_value "\"}],"
#define RULES(strategy, keys)                                                             \
    "\"accessKeyConfiguration\":{\"name\":\"cc\",\"router\":{\"rules\":[{\"provider\":" \
    "\"fake\",\"steps\":[{\"type\":\"user\",\"keySelectionStrategy\":\"" strategy         \
    "\",\"keys\":[" keys "]}]}]}},"
#define GW(extra)                                                                          \
    "\"gatewayConfig\":{\"retryAfterMax\":\"10ms\",\"keyCooldown\":\"5ms\","             \
    "\"keyBenchTime\":\"20ms\",\"circuitBreaker\":{\"failures\":5,\"cooloff\":\"5ms\"}," \
    "\"totalTimeout\":\"2s\",\"perRequestTimeout\":\"1s\"" extra "}"
#define ABC "{\"id\":\"a\"},{\"id\":\"b\"},{\"id\":\"c\"}"
#define ABC_W "{\"id\":\"a\",\"weight\":1},{\"id\":\"b\",\"weight\":2},{\"id\":\"c\",\"weight\":3}"

/* The retry budgets differ but share the default 10 s window, so that the
 * budget is refused now and then. */
static const char *const VARIANTS[] = {
    /* 0: round-robin, no same-backend retries, the default retry budget */
    "{" PROVIDERS KEYS(V_C) RULES("round-robin", ABC) GW(",\"sameBackendRetries\":0") "}",
    /* 1: c's value changed; one same-backend retry; a looser budget */
    "{" PROVIDERS KEYS(V_C2) RULES("round-robin", ABC)
        GW(",\"sameBackendRetries\":1,\"retryBudget\":{\"percent\":50,\"minPerSecond\":200,"
           "\"window\":\"10s\"}") "}",
    /* 2: weighted; a tight budget */
    "{" PROVIDERS KEYS(V_C) RULES("weighted", ABC_W)
        GW(",\"sameBackendRetries\":0,\"retryBudget\":{\"percent\":10,\"minPerSecond\":1,"
           "\"window\":\"10s\"}") "}",
};
#define N_VARIANTS 3

/* ---- the transport ---- */

typedef struct tstate {
    atomic_uint_fast64_t calls;
    atomic_uint_fast64_t per_key[N_VALUES + 1]; /* the last: no known key */
    atomic_int destroyed;
} tstate;

static uint64_t mix(uint64_t x)
{
    /* splitmix64's finaliser */
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static int key_index(const aigw_transport_request *req)
{
    size_t i;
    int k;
    for (i = 0; i < req->n_headers; i++)
        if (strcmp(req->headers[i].name, "authorization") == 0 &&
            strncmp(req->headers[i].value, "Bearer ", 7) == 0)
            for (k = 0; k < N_VALUES; k++)
                if (strcmp(req->headers[i].value + 7, VALUES[k]) == 0)
                    return k;
    return N_VALUES;
}

static const char OK_BODY[] = "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"choices\":"
                              "[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"ok\"},"
                              "\"finish_reason\":\"stop\"}]}";
static const char RL_BODY[] = "{\"error\":{\"message\":\"Rate limit reached\",\"type\":\"requests\"}}";
static const char SERVER_BODY[] = "{\"error\":{\"message\":\"server error\",\"type\":\"server_error\"}}";
static const char AUTH_BODY[] = "{\"error\":{\"message\":\"Incorrect API key provided\","
                                "\"code\":\"invalid_api_key\"}}";

static aigw_transport_result t_send(void *ud, const aigw_transport_request *req,
                                    aigw_transport_response *resp)
{
    tstate *t = ud;
    uint64_t n = atomic_fetch_add(&t->calls, 1), h = mix(n);
    unsigned pick = (unsigned)(h % 100);
    atomic_fetch_add(&t->per_key[key_index(req)], 1);
    if (pick < 60) {
        aigw_transport_response_set_status(resp, 200);
        aigw_transport_response_add_header(resp, "content-type", "application/json");
        aigw_transport_response_append_body(resp, OK_BODY, sizeof OK_BODY - 1);
    } else if (pick < 75) {
        char v[8];
        snprintf(v, sizeof v, "%u", 1 + (unsigned)((h >> 32) % 5));
        aigw_transport_response_set_status(resp, 429);
        aigw_transport_response_add_header(resp, "retry-after-ms", v);
        aigw_transport_response_append_body(resp, RL_BODY, sizeof RL_BODY - 1);
    } else if (pick < 85) {
        aigw_transport_response_set_status(resp, 500);
        aigw_transport_response_append_body(resp, SERVER_BODY, sizeof SERVER_BODY - 1);
    } else if (pick < 90) {
        aigw_transport_response_set_status(resp, 401);
        aigw_transport_response_append_body(resp, AUTH_BODY, sizeof AUTH_BODY - 1);
    } else if (pick < 95) {
        return AIGW_TR_TIMEOUT;
    } else {
        return AIGW_TR_CONNECT;
    }
    return AIGW_TR_OK;
}

static void t_destroy(void *ud)
{
    atomic_fetch_add(&((tstate *)ud)->destroyed, 1);
}

/* ---- the threads ---- */

typedef struct shared {
    aigw_client *c;
    atomic_int workers_left;
    aigw_config *variants[N_VARIANTS];
} shared;

/* The library's error codes this run may see; the last: any other. */
static const char *const CODES[] = {"rate_limited", "unauthorized", "quota_exceeded",
                                    "circuit_open", "upstream_error", "retry_budget_exhausted",
                                    "max_attempts_reached", "timeout", "other"};
#define N_CODES (sizeof CODES / sizeof CODES[0])

typedef struct worker {
    pthread_t th;
    shared *sh;
    uint64_t attempts;          /* all attempts of all its responses */
    uint64_t retries;           /* attempts after an outage-like failure */
    uint64_t budget_refused;    /* answers retry_budget_exhausted */
    uint64_t codes[N_CODES];    /* the library's answers by error code */
    uint64_t outcome[8];
    uint64_t bad;               /* sends that failed or odd answers */
    char first_bad[512];
} worker;

static void note_bad(worker *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note_bad(worker *w, const char *fmt, ...)
{
    va_list ap;
    if (w->bad++ == 0) {
        va_start(ap, fmt);
        vsnprintf(w->first_bad, sizeof w->first_bad, fmt, ap);
        va_end(ap);
    }
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    aigw_request *req = NULL;
    int i;
    if (aigw_request_new(&req) != AIGW_OK ||
        aigw_request_set_body(req, BODY, sizeof BODY - 1) != AIGW_OK) {
        note_bad(w, "request could not be made");
        atomic_fetch_sub(&w->sh->workers_left, 1);
        return NULL;
    }
    for (i = 0; i < PER_THREAD; i++) {
        aigw_response *resp = NULL;
        aigw_status st = aigw_client_send(w->sh->c, req, &resp, NULL);
        size_t n, k;
        aigw_outcome oc;
        if (st != AIGW_OK || !resp) {
            note_bad(w, "send: %s (%d)", aigw_status_name(st), (int)st);
            aigw_response_free(resp);
            continue;
        }
        n = aigw_response_attempt_count(resp);
        w->attempts += n;
        /* a retry: an attempt after one that failed as an outage does */
        for (k = 1; k < n; k++) {
            const char *cls = aigw_attempt_error_class(aigw_response_attempt(resp, k - 1));
            if (cls && (!strcmp(cls, "server") || !strcmp(cls, "overloaded") ||
                        !strcmp(cls, "timeout") || !strcmp(cls, "network") ||
                        !strcmp(cls, "redirect")))
                w->retries++;
        }
        oc = aigw_response_outcome(resp);
        w->outcome[(unsigned)oc < 8 ? (unsigned)oc : 7]++;
        if (oc != AIGW_OUTCOME_SERVED && oc != AIGW_OUTCOME_EXHAUSTED &&
            oc != AIGW_OUTCOME_TIMED_OUT)
            note_bad(w, "outcome %s, status %d", aigw_outcome_name(oc),
                     aigw_response_status(resp));
        if (oc == AIGW_OUTCOME_SERVED && aigw_response_status(resp) != 200)
            note_bad(w, "served with status %d", aigw_response_status(resp));
        if (oc != AIGW_OUTCOME_SERVED && !aigw_response_error_code(resp))
            note_bad(w, "unserved without an error code (status %d)", aigw_response_status(resp));
        if (aigw_response_error_code(resp)) {
            const char *code = aigw_response_error_code(resp);
            size_t c;
            for (c = 0; c < N_CODES - 1 && strcmp(code, CODES[c]) != 0; c++)
                ;
            w->codes[c]++;
            if (strcmp(code, "retry_budget_exhausted") == 0)
                w->budget_refused++;
        }
        for (k = 0; k < n; k++) {
            const char *id = aigw_attempt_key_id(aigw_response_attempt(resp, k));
            if (strcmp(id, "a") != 0 && strcmp(id, "b") != 0 && strcmp(id, "c") != 0)
                note_bad(w, "attempt %zu with key id '%s'", k + 1, id);
        }
        aigw_response_free(resp);
    }
    aigw_request_free(req);
    atomic_fetch_sub(&w->sh->workers_left, 1);
    return NULL;
}

static void sleep_us(long us)
{
    struct timespec ts = {0, us * 1000L};
    nanosleep(&ts, NULL);
}

typedef struct swapper {
    pthread_t th;
    shared *sh;
    long swaps;
    long fresh;
    long resets;
    long bad;
} swapper;

static void *swap_main(void *arg)
{
    swapper *s = arg;
    long i = 0;
    while (atomic_load(&s->sh->workers_left) > 0) {
        int v = (int)(i % N_VARIANTS);
        if (i % 5 == 4) {
            /* a fresh configuration, dropped at once: the client's
             * reference (and in-flight requests') keep it alive */
            aigw_config *cfg = NULL;
            if (aigw_config_parse(VARIANTS[v], strlen(VARIANTS[v]), &cfg, NULL) != AIGW_OK ||
                aigw_client_set_config(s->sh->c, cfg, NULL) != AIGW_OK)
                s->bad++;
            aigw_config_unref(cfg);
            s->fresh++;
        } else if (aigw_client_set_config(s->sh->c, s->sh->variants[v], NULL) != AIGW_OK) {
            s->bad++;
        }
        s->swaps++;
        if (i % 97 == 96) {
            if (aigw_client_reset_health(s->sh->c, (i / 97) % 2 ? "b" : NULL) != AIGW_OK)
                s->bad++;
            s->resets++;
        }
        i++;
        sleep_us(2000);
    }
    return NULL;
}

typedef struct reader {
    pthread_t th;
    shared *sh;
    long reads;
    long bad;
} reader;

static void *read_main(void *arg)
{
    reader *r = arg;
    while (atomic_load(&r->sh->workers_left) > 0) {
        aigw_stats *st = NULL;
        if (aigw_client_stats(r->sh->c, &st) != AIGW_OK || !st) {
            r->bad++;
        } else {
            size_t i, n = aigw_stats_count(st);
            const char *json = aigw_stats_json(st);
            uint64_t req = 0, ret = 0, den = 0;
            int64_t avail = 0;
            if (!json || n < 3)
                r->bad++;
            for (i = 0; i < n; i++) {
                const aigw_stat *e = aigw_stats_at(st, i);
                if (!e || !e->kind || !e->name || !e->state)
                    r->bad++;
                (void)aigw_stat_failures(e, "rate_limit");
            }
            aigw_stats_budget(st, &req, &ret, &den, &avail);
            if (json && (strstr(json, V_A) || strstr(json, V_B) || strstr(json, V_C) ||
                         strstr(json, V_C2)))
                r->bad++;
            aigw_stats_free(st);
        }
        r->reads++;
        sleep_us(1000);
    }
    return NULL;
}

static void test_many_threads_swaps_and_stats(void **state)
{
    static tstate ts;
    static worker w[THREADS];
    shared sh;
    swapper sw;
    reader rd;
    aigw_transport vt;
    aigw_config *first;
    aigw_stats *st;
    uint64_t attempts = 0, retries = 0, refused = 0, outcome[8] = {0}, calls, sum = 0;
    uint64_t b_req = 0, b_ret = 0, b_den = 0, codes[N_CODES] = {0};
    int64_t t0 = now_ms();
    int i;
    cJSON *j;
    (void)state;

    memset(&sh, 0, sizeof sh);
    memset(&ts, 0, sizeof ts);
    memset(w, 0, sizeof w);
    memset(&sw, 0, sizeof sw);
    memset(&rd, 0, sizeof rd);
    for (i = 0; i < N_VARIANTS; i++)
        assert_non_null(sh.variants[i] = config_from_json(VARIANTS[i]));
    /* the first configuration is one nobody else holds */
    first = config_from_json(VARIANTS[0]);
    sh.c = client_on(first);
    aigw_config_unref(first);
    memset(&vt, 0, sizeof vt);
    vt.version = AIGW_TRANSPORT_VERSION;
    vt.send = t_send;
    vt.destroy = t_destroy;
    assert_int_equal(aigw_client_set_transport(sh.c, &vt, &ts), AIGW_OK);

    atomic_store(&sh.workers_left, THREADS);
    sw.sh = &sh;
    rd.sh = &sh;
    for (i = 0; i < THREADS; i++) {
        w[i].sh = &sh;
        assert_int_equal(pthread_create(&w[i].th, NULL, worker_main, &w[i]), 0);
    }
    assert_int_equal(pthread_create(&sw.th, NULL, swap_main, &sw), 0);
    assert_int_equal(pthread_create(&rd.th, NULL, read_main, &rd), 0);
    for (i = 0; i < THREADS; i++)
        assert_int_equal(pthread_join(w[i].th, NULL), 0);
    assert_int_equal(pthread_join(sw.th, NULL), 0);
    assert_int_equal(pthread_join(rd.th, NULL), 0);

    for (i = 0; i < THREADS; i++) {
        int k;
        if (w[i].bad)
            fail_msg("thread %d: %llu bad answers; first: %s", i,
                     (unsigned long long)w[i].bad, w[i].first_bad);
        attempts += w[i].attempts;
        retries += w[i].retries;
        refused += w[i].budget_refused;
        for (k = 0; k < 8; k++)
            outcome[k] += w[i].outcome[k];
    }
    for (i = 0; i < THREADS; i++) {
        size_t c;
        for (c = 0; c < N_CODES; c++)
            codes[c] += w[i].codes[c];
    }
    calls = atomic_load(&ts.calls);
    for (i = 0; i <= N_VALUES; i++)
        sum += atomic_load(&ts.per_key[i]);
    print_message("%d x %d requests in %lld ms: %llu upstream calls (a %llu, b %llu, c %llu, "
                  "c' %llu); served %llu, exhausted %llu, timed out %llu; budget refused %llu; "
                  "%ld swaps (%ld fresh), %ld resets, %ld stats reads\n",
                  THREADS, PER_THREAD, (long long)(now_ms() - t0), (unsigned long long)calls,
                  (unsigned long long)atomic_load(&ts.per_key[0]),
                  (unsigned long long)atomic_load(&ts.per_key[1]),
                  (unsigned long long)atomic_load(&ts.per_key[2]),
                  (unsigned long long)atomic_load(&ts.per_key[3]),
                  (unsigned long long)outcome[AIGW_OUTCOME_SERVED],
                  (unsigned long long)outcome[AIGW_OUTCOME_EXHAUSTED],
                  (unsigned long long)outcome[AIGW_OUTCOME_TIMED_OUT],
                  (unsigned long long)refused, sw.swaps, sw.fresh, sw.resets, rd.reads);
    {
        size_t c;
        print_message("unserved answers by code:");
        for (c = 0; c < N_CODES; c++)
            print_message(" %s %llu", CODES[c], (unsigned long long)codes[c]);
        print_message("\n");
    }
    assert_int_equal(sw.bad, 0);
    assert_int_equal(rd.bad, 0);
    assert_true(sw.swaps > 10);
    assert_true(rd.reads > 10);
    /* every upstream call is one attempt record, and carried a known key */
    assert_int_equal(attempts, calls);
    assert_int_equal(sum, calls);
    assert_int_equal(atomic_load(&ts.per_key[N_VALUES]), 0);
    assert_int_equal(outcome[AIGW_OUTCOME_SERVED] + outcome[AIGW_OUTCOME_EXHAUSTED] +
                         outcome[AIGW_OUTCOME_TIMED_OUT],
                     (uint64_t)THREADS * PER_THREAD);
    assert_true(outcome[AIGW_OUTCOME_SERVED] > 0);
    assert_true(outcome[AIGW_OUTCOME_EXHAUSTED] > 0);

    /* the retry budget saw every request, and every attempt after a
     * server error, timeout or network failure was a retry it granted */
    assert_int_equal(aigw_client_stats(sh.c, &st), AIGW_OK);
    aigw_stats_budget(st, &b_req, &b_ret, &b_den, NULL);
    assert_int_equal(b_req, (uint64_t)THREADS * PER_THREAD);
    assert_int_equal(b_ret, retries);
    assert_int_equal(b_den, refused);
    j = cJSON_Parse(aigw_stats_json(st));
    assert_non_null(j);
    cJSON_Delete(j);
    aigw_stats_free(st);

    for (i = 0; i < N_VARIANTS; i++)
        aigw_config_unref(sh.variants[i]);
    aigw_client_free(sh.c);
    assert_int_equal(atomic_load(&ts.destroyed), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_many_threads_swaps_and_stats),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
