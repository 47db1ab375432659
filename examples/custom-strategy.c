/*
 * custom-strategy.c - a key-selection strategy of your own (aigw_strategy,
 * version 2: order_health): "fastest first".
 *
 *   custom-strategy GATEWAY_FILE BODY_JSON [N]
 *
 * Sends the request N times (default 5) through one client whose `user`
 * steps order their keys by what the client has seen of each, with the
 * request's model:
 *   1. keys never tried with it first (in configuration order): measure them;
 *   2. then the keys that succeeded, by mean latency, fastest first;
 *   3. then the keys that were tried but never succeeded;
 *   4. keys that are cooling or benched last (the library skips them anyway).
 * Each ordering is logged on stderr; each request's serving key on stdout.
 *
 * Built by meson (examples/meson.build), run by tests/test_examples.py.
 */
#include <aigw.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct fastest_first {
    FILE *log;
    atomic_ulong calls; /* the strategy may be called from several threads */
} fastest_first;

/* 0 untried, 1 fast to slow, 2 never succeeded, 3 not ready. */
static int tier(const aigw_key_health *k)
{
    if (k->state != AIGW_KEY_READY)
        return 3;
    if (k->requests == 0)
        return 0;
    return k->latency_mean_ms >= 0 ? 1 : 2;
}

/* Whether key a goes before key b (ia, ib: their configuration order). */
static int before(const aigw_key_health *a, size_t ia, const aigw_key_health *b, size_t ib)
{
    int ta = tier(a), tb = tier(b);
    if (ta != tb)
        return ta < tb;
    if (ta == 1 && a->latency_mean_ms != b->latency_mean_ms)
        return a->latency_mean_ms < b->latency_mean_ms;
    return ia < ib;
}

static int order_health(void *userdata, const char *provider, const char *model,
                        size_t step_index, const aigw_key_health *const *keys, size_t n_keys,
                        size_t *order_out)
{
    fastest_first *ff = userdata;
    size_t i, j;
    atomic_fetch_add(&ff->calls, 1);
    for (i = 0; i < n_keys; i++) /* insertion sort: a step holds a few keys */
        order_out[i] = i;
    for (i = 1; i < n_keys; i++) {
        size_t k = order_out[i];
        for (j = i; j > 0 && before(keys[k], k, keys[order_out[j - 1]], order_out[j - 1]); j--)
            order_out[j] = order_out[j - 1];
        order_out[j] = k;
    }
    fprintf(ff->log, "strategy: %s/%s step %zu:", provider, model, step_index);
    for (i = 0; i < n_keys; i++) {
        const aigw_key_health *k = keys[order_out[i]];
        if (tier(k) == 1)
            fprintf(ff->log, " %s (%lld ms)", k->id, (long long)k->latency_mean_ms);
        else
            fprintf(ff->log, " %s (%s)", k->id,
                    tier(k) == 0 ? "untried" : tier(k) == 2 ? "no success" : "not ready");
    }
    fputc('\n', ff->log);
    return (int)n_keys;
}

static void destroy(void *userdata)
{
    fastest_first *ff = userdata;
    fprintf(ff->log, "strategy: ordered %lu steps\n", (unsigned long)atomic_load(&ff->calls));
    free(ff);
}

int main(int argc, char **argv)
{
    static const aigw_strategy strategy = {
        .version = AIGW_STRATEGY_VERSION, /* 2: order_health */
        .order = NULL,                    /* version 1's form, not needed with order_health */
        .destroy = destroy,
        .order_health = order_health,
    };
    aigw_config *cfg = NULL;
    aigw_client *client = NULL;
    aigw_request *req = NULL;
    aigw_error *err = NULL;
    fastest_first *ff;
    long i, n = argc > 3 ? strtol(argv[3], NULL, 10) : 5;
    int rc = 0;

    if (argc < 3 || argc > 4 || n < 1) {
        fprintf(stderr, "usage: custom-strategy GATEWAY_FILE BODY_JSON [N]\n");
        return 2;
    }
    if (aigw_config_load_file(argv[1], &cfg, &err) != AIGW_OK ||
        aigw_client_new(cfg, &client, &err) != AIGW_OK) {
        fprintf(stderr, "%s: %s\n", argv[1], aigw_error_message(err));
        aigw_error_free(err);
        aigw_config_unref(cfg);
        return 2;
    }
    aigw_config_unref(cfg);

    ff = calloc(1, sizeof *ff);
    if (!ff)
        return 1;
    ff->log = stderr;
    atomic_init(&ff->calls, 0);
    /* Before the client is shared; on failure destroy(ff) has run already. */
    if (aigw_client_set_strategy(client, &strategy, ff) != AIGW_OK) {
        fprintf(stderr, "custom-strategy: the library refused the strategy\n");
        aigw_client_free(client);
        return 1;
    }

    if (aigw_request_new(&req) != AIGW_OK ||
        aigw_request_set_body(req, argv[2], strlen(argv[2])) != AIGW_OK) {
        aigw_request_free(req);
        aigw_client_free(client);
        return 1;
    }
    for (i = 1; i <= n; i++) {
        aigw_response *resp = NULL;
        size_t last;
        if (aigw_client_send(client, req, &resp, &err) != AIGW_OK) {
            fprintf(stderr, "custom-strategy: %s\n", aigw_error_message(err));
            aigw_error_free(err);
            rc = 2;
            break;
        }
        last = aigw_response_attempt_count(resp);
        if (aigw_response_outcome(resp) == AIGW_OUTCOME_SERVED && last > 0)
            printf("request %ld: HTTP %d from key %s after %zu attempt%s\n", i,
                   aigw_response_status(resp),
                   aigw_attempt_key_id(aigw_response_attempt(resp, last - 1)), last,
                   last == 1 ? "" : "s");
        else {
            printf("request %ld: HTTP %d, %s\n", i, aigw_response_status(resp),
                   aigw_outcome_name(aigw_response_outcome(resp)));
            rc = 1;
        }
        fflush(stdout);
        aigw_response_free(resp);
    }
    aigw_request_free(req);
    aigw_client_free(client); /* runs destroy(ff) */
    return rc;
}
