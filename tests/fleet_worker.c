/*
 * fleet_worker.c - one process of a fleet, for test_fleet.c: loads a
 * gateway file (whose gatewayConfig.healthStore names the Redis the fleet
 * shares), makes one client, and sends requests from THREADS threads, one
 * after another, for SECONDS; then prints one JSON line:
 *   {"served":N,"failed":M,"local":L,"stats":{...aigw_stats_json...}}
 * where failed counts the answers that were not 200 and local the requests
 * whose trace says the store did not answer ("healthStore":"local").  The
 * first failures' traces go to stderr.  Public API only.
 *
 *   fleet_worker CONFIG SECONDS THREADS [PAUSE_MS]
 *
 * PAUSE_MS (default 1): each thread rests that long between requests, so
 * that a fleet on a small machine leaves it room to breathe.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "aigw.h"

static const char BODY[] =
    "{\"model\":\"mock:m1\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";

static aigw_client *client;
static double deadline;
static atomic_long served, failed, local, reported;
static long pause_ms = 1;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *run(void *arg)
{
    aigw_request *req = NULL;
    (void)arg;
    if (aigw_request_new(&req) != AIGW_OK || aigw_request_set_body(req, BODY, strlen(BODY)) != AIGW_OK)
        abort();
    while (now_s() < deadline) {
        aigw_response *resp = NULL;
        aigw_error *err = NULL;
        aigw_status st = aigw_client_send(client, req, &resp, &err);
        if (st != AIGW_OK || aigw_response_status(resp) != 200) {
            atomic_fetch_add(&failed, 1);
            if (atomic_fetch_add(&reported, 1) < 3)
                fprintf(stderr, "fleet_worker: failed: %s\n",
                        st != AIGW_OK ? aigw_error_message(err) : aigw_response_trace_json(resp));
        } else {
            atomic_fetch_add(&served, 1);
        }
        if (resp && strcmp(aigw_response_health_store(resp), "local") == 0)
            atomic_fetch_add(&local, 1);
        aigw_response_free(resp);
        aigw_error_free(err);
        if (pause_ms > 0) {
            struct timespec ts = {pause_ms / 1000, (pause_ms % 1000) * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    aigw_request_free(req);
    return NULL;
}

int main(int argc, char **argv)
{
    aigw_config *cfg = NULL;
    aigw_error *err = NULL;
    aigw_stats *stats = NULL;
    pthread_t t[64];
    int i, n;
    if (argc < 4 || argc > 5 || (n = atoi(argv[3])) < 1 || n > 64) {
        fprintf(stderr, "usage: fleet_worker CONFIG SECONDS THREADS [PAUSE_MS]\n");
        return 2;
    }
    if (argc == 5)
        pause_ms = atol(argv[4]);
    if (aigw_config_load_file(argv[1], &cfg, &err) != AIGW_OK ||
        aigw_client_new(cfg, &client, &err) != AIGW_OK) {
        fprintf(stderr, "fleet_worker: %s\n", aigw_error_message(err));
        return 1;
    }
    aigw_config_unref(cfg);
    deadline = now_s() + atof(argv[2]);
    for (i = 0; i < n; i++)
        if (pthread_create(&t[i], NULL, run, NULL) != 0)
            return 1;
    for (i = 0; i < n; i++)
        pthread_join(t[i], NULL);
    if (aigw_client_stats(client, &stats) != AIGW_OK)
        return 1;
    printf("{\"served\":%ld,\"failed\":%ld,\"local\":%ld,\"stats\":%s}\n", atomic_load(&served),
           atomic_load(&failed), atomic_load(&local), aigw_stats_json(stats));
    aigw_stats_free(stats);
    aigw_client_free(client);
    return 0;
}
