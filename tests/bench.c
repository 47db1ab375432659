/*
 * bench.c - what libaigw costs over raw libcurl, measured in one run against
 * the same loopback mock provider.
 *
 *   meson test -C build --benchmark --verbose     (or: build/tests/bench [N])
 *
 * Each case runs N requests both ways, interleaved in rounds so drift on the
 * machine hits both alike, and prints the median per-request time of each and
 * their ratio (libaigw / raw).  "raw" is what a careful caller would write by
 * hand: one reused easy handle, the same headers and body.
 *
 * The process is pinned to one CPU: on a small VM, where the client and the
 * in-process server threads land (same core, or a cross-core wake-up) moves
 * a loopback round trip by a factor of four, which would drown what is
 * measured here.  Rounds alternate which side goes first.
 */
#define _GNU_SOURCE /* sched_setaffinity */
#include <curl/curl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "aigw.h"
#include "mockprov.h"

#ifdef BENCH_REDIS
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
extern char **environ;
#endif

#define ROUNDS 15

static const char BODY[] = "{\"model\":\"mock:m1\",\"messages\":[{\"role\":\"user\","
                           "\"content\":\"Say hello in one short sentence.\"}]}";
static const char RAW_BODY[] = "{\"model\":\"m1\",\"messages\":[{\"role\":\"user\","
                               "\"content\":\"Say hello in one short sentence.\"}]}";

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU time of the whole process (client and in-process server threads):
 * steadier than wall time on a shared machine. */
static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static size_t sink(char *p, size_t sz, size_t n, void *ud)
{
    size_t *total = ud;
    (void)p;
    *total += sz * n;
    return sz * n;
}

/* n raw requests; keys[i % n_keys] rotates like a failover would. */
static double run_raw(CURL *h, const char *url, const char *const *keys, size_t n_keys, int n)
{
    double t0 = now_s();
    int i;
    for (i = 0; i < n; i++) {
        size_t k, total = 0;
        for (k = 0; k < n_keys; k++) {
            struct curl_slist *hd = NULL;
            char auth[256];
            long status = 0;
            snprintf(auth, sizeof auth, "authorization: Bearer %s", keys[k]);
            hd = curl_slist_append(hd, "content-type: application/json");
            hd = curl_slist_append(hd, "user-agent: bench");
            hd = curl_slist_append(hd, auth);
            hd = curl_slist_append(hd, "Expect:");
            curl_easy_setopt(h, CURLOPT_URL, url);
            curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
            curl_easy_setopt(h, CURLOPT_POSTFIELDS, RAW_BODY);
            curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(RAW_BODY));
            curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sink);
            curl_easy_setopt(h, CURLOPT_WRITEDATA, &total);
            curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
            curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
            if (curl_easy_perform(h) != CURLE_OK) {
                fprintf(stderr, "raw request failed\n");
                exit(1);
            }
            curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
            curl_slist_free_all(hd);
            if (status == 200)
                break;
        }
    }
    return now_s() - t0;
}

static double run_aigw(aigw_client *c, aigw_request *req, int n, int want_attempts)
{
    double t0 = now_s();
    int i;
    for (i = 0; i < n; i++) {
        aigw_response *resp = NULL;
        if (aigw_client_send(c, req, &resp, NULL) != AIGW_OK ||
            aigw_response_status(resp) != 200 ||
            (int)aigw_response_attempt_count(resp) != want_attempts) {
            fprintf(stderr, "aigw request failed\n");
            exit(1);
        }
        aigw_response_free(resp);
    }
    return now_s() - t0;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static aigw_client *make_client(const char *base_url, const char *gateway)
{
    char json[1024];
    aigw_config *cfg = NULL;
    aigw_client *c = NULL;
    aigw_error *err = NULL;
    snprintf(json, sizeof json,
             "{\"providers\":[{\"providerId\":\"mock\",\"name\":\"m\",\"baseUrl\":\"%s\"}],"
             "\"providerKeys\":[{\"id\":\"primary\",\"providerId\":\"mock\",\"value\":\"key-primary\"},"
             "{\"id\":\"backup\",\"providerId\":\"mock\",\"value\":\"key-backup\"}],"
             "\"accessKeyConfiguration\":{\"name\":\"bench\",\"router\":{\"rules\":[{\"provider\":"
             "\"mock\",\"steps\":[{\"type\":\"user\",\"keys\":[{\"id\":\"primary\"},{\"id\":"
             "\"backup\"}]}]}]}},\"gatewayConfig\":{%s}}",
             base_url, gateway);
    if (aigw_config_parse(json, strlen(json), &cfg, &err) != AIGW_OK ||
        aigw_client_new(cfg, &c, &err) != AIGW_OK) {
        fprintf(stderr, "bench: %s\n", aigw_error_message(err));
        exit(1);
    }
    aigw_config_unref(cfg);
    return c;
}

/* failover: the raw side tries the second key after a 429 on the first;
 * want: the attempts libaigw makes per request; gateway: its knobs. */
static double bench_case(const char *name, mockprov *mp, int n, int failover, int want,
                         const char *gateway)
{
    double median;
    static const char *const keys[] = {"key-primary", "key-backup"};
    char url[256];
    double raw[ROUNDS], lib[ROUNDS], craw[ROUNDS], clib[ROUNDS];
    aigw_client *c = make_client(mockprov_base_url(mp), gateway);
    aigw_request *req = NULL;
    CURL *h = curl_easy_init();
    int r;
    snprintf(url, sizeof url, "%s/chat/completions", mockprov_base_url(mp));
    aigw_request_new(&req);
    aigw_request_set_body(req, BODY, strlen(BODY));
    /* one request first: a remembering client learns of the 429 here */
    {
        aigw_response *resp = NULL;
        if (aigw_client_send(c, req, &resp, NULL) != AIGW_OK || aigw_response_status(resp) != 200) {
            fprintf(stderr, "aigw request failed\n");
            exit(1);
        }
        aigw_response_free(resp);
    }
    /* warm both connection caches */
    {
        long c0 = mockprov_connection_count(mp), c1, c2;
        run_raw(h, url, keys, failover ? 2 : 1, 20);
        c1 = mockprov_connection_count(mp);
        run_aigw(c, req, 20, want);
        c2 = mockprov_connection_count(mp);
        printf("  (warm-up connections: raw %ld, libaigw %ld)\n", c1 - c0, c2 - c1);
    }
    for (r = 0; r < ROUNDS; r++) {
        int side;
        for (side = 0; side < 2; side++) {
            double c0 = cpu_s();
            if ((side + r) % 2 == 0) {
                raw[r] = run_raw(h, url, keys, failover ? 2 : 1, n) / n;
                craw[r] = (cpu_s() - c0) / n;
            } else {
                lib[r] = run_aigw(c, req, n, want) / n;
                clib[r] = (cpu_s() - c0) / n;
            }
        }
    }
    qsort(raw, ROUNDS, sizeof raw[0], cmp_d);
    qsort(lib, ROUNDS, sizeof lib[0], cmp_d);
    qsort(craw, ROUNDS, sizeof craw[0], cmp_d);
    qsort(clib, ROUNDS, sizeof clib[0], cmp_d);
    printf("%-28s wall: raw %6.1f us  libaigw %6.1f us  ratio %.3f | cpu: raw %6.1f us  "
           "libaigw %6.1f us  ratio %.3f\n",
           name, raw[ROUNDS / 2] * 1e6, lib[ROUNDS / 2] * 1e6, lib[ROUNDS / 2] / raw[ROUNDS / 2],
           craw[ROUNDS / 2] * 1e6, clib[ROUNDS / 2] * 1e6, clib[ROUNDS / 2] / craw[ROUNDS / 2]);
    fflush(stdout);
    median = lib[ROUNDS / 2];
    curl_easy_cleanup(h);
    aigw_request_free(req);
    aigw_client_free(c);
    return median;
}

/* The requests bench_case sends through libaigw. */
static long case_requests(int n)
{
    return 1 + 20 + (long)ROUNDS * n; /* as bench_pair sends through each */
}

/* Two clients on the same requests, interleaved in rounds as bench_case
 * does with raw libcurl: what b costs over a (median per-request ratios,
 * wall and CPU). */
static void bench_pair(const char *name, mockprov *mp, int n, int first_want, int want,
                       const char *gw_a, const char *gw_b)
{
    double ta[ROUNDS], tb[ROUNDS], ca[ROUNDS], cb[ROUNDS];
    aigw_client *a = make_client(mockprov_base_url(mp), gw_a);
    aigw_client *b = make_client(mockprov_base_url(mp), gw_b);
    aigw_request *req = NULL;
    int r;
    aigw_request_new(&req);
    aigw_request_set_body(req, BODY, strlen(BODY));
    /* the first request learns of a 429; then warm both */
    run_aigw(a, req, 1, first_want);
    run_aigw(b, req, 1, first_want);
    run_aigw(a, req, 20, want);
    run_aigw(b, req, 20, want);
    for (r = 0; r < ROUNDS; r++) {
        int side;
        for (side = 0; side < 2; side++) {
            double c0 = cpu_s();
            if ((side + r) % 2 == 0) {
                ta[r] = run_aigw(a, req, n, want) / n;
                ca[r] = (cpu_s() - c0) / n;
            } else {
                tb[r] = run_aigw(b, req, n, want) / n;
                cb[r] = (cpu_s() - c0) / n;
            }
        }
    }
    qsort(ta, ROUNDS, sizeof ta[0], cmp_d);
    qsort(tb, ROUNDS, sizeof tb[0], cmp_d);
    qsort(ca, ROUNDS, sizeof ca[0], cmp_d);
    qsort(cb, ROUNDS, sizeof cb[0], cmp_d);
    printf("%-28s wall: in-process %6.1f us  store %6.1f us  ratio %.3f | cpu: %6.1f us  "
           "%6.1f us  ratio %.3f\n",
           name, ta[ROUNDS / 2] * 1e6, tb[ROUNDS / 2] * 1e6, tb[ROUNDS / 2] / ta[ROUNDS / 2],
           ca[ROUNDS / 2] * 1e6, cb[ROUNDS / 2] * 1e6, cb[ROUNDS / 2] / ca[ROUNDS / 2]);
    fflush(stdout);
    aigw_request_free(req);
    aigw_client_free(a);
    aigw_client_free(b);
}

#ifdef BENCH_REDIS
/* A redis-server of the bench's own on a free loopback port, and the
 * commands it has run (INFO commandstats, the INFO calls excluded). */
static pid_t redis_pid;

static int redis_start(char *url, size_t size)
{
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    char port[16];
    int fd = socket(AF_INET, SOCK_STREAM, 0), i;
    char *argv[] = {(char *)"redis-server", (char *)"--port", port, (char *)"--bind",
                    (char *)"127.0.0.1", (char *)"--save", (char *)"", (char *)"--appendonly",
                    (char *)"no", NULL};
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        return -1;
    snprintf(port, sizeof port, "%d", ntohs(a.sin_port));
    close(fd);
    {
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", 1, 0);
        posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", 1, 0);
        if (posix_spawnp(&redis_pid, "redis-server", &fa, NULL, argv, environ) != 0)
            return -1;
        posix_spawn_file_actions_destroy(&fa);
    }
    for (i = 0; i < 100; i++) {
        redisContext *c = redisConnect("127.0.0.1", atoi(port));
        if (c && !c->err) {
            redisFree(c);
            snprintf(url, size, "redis://127.0.0.1:%s/0", port);
            return atoi(port);
        }
        if (c)
            redisFree(c);
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return -1;
}

static long redis_commands(int port)
{
    redisContext *c = redisConnect("127.0.0.1", port);
    redisReply *r;
    long total = 0;
    const char *p;
    if (!c || c->err || !(r = redisCommand(c, "INFO commandstats"))) {
        if (c)
            redisFree(c);
        return -1;
    }
    for (p = r->str; (p = strstr(p, "calls=")) != NULL; p++) {
        const char *line = p;
        while (line > r->str && line[-1] != '\n')
            line--;
        if (strncmp(line, "cmdstat_info:", 13) != 0 && strncmp(line, "cmdstat_command", 15) != 0)
            total += atol(p + 6);
    }
    freeReplyObject(r);
    redisFree(c);
    return total;
}

static void redis_stop(void)
{
    if (redis_pid > 0) {
        kill(redis_pid, SIGKILL);
        waitpid(redis_pid, NULL, 0);
    }
}
#endif

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 500;
    mockprov *mp;
    mockprov_rule rl;
#ifdef BENCH_REDIS
    long c0, c1;
    int redis_port = 0;
    char redis_gw[256];
#endif
    if (n < 10)
        n = 10;
    curl_global_init(CURL_GLOBAL_DEFAULT);
#ifdef __linux__
    {
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(sched_getcpu() >= 0 ? sched_getcpu() : 0, &one);
        if (sched_setaffinity(0, sizeof one, &one) != 0)
            fprintf(stderr, "bench: could not pin to one CPU; figures will be noisier\n");
    }
#endif
    mp = mockprov_start(0);
    if (!mp) {
        fprintf(stderr, "bench: cannot start the mock provider\n");
        return 1;
    }
    printf("libaigw %s bench: %d requests x %d interleaved rounds per case, per-request "
           "medians, loopback %s\n",
           aigw_version_string(), n, ROUNDS, mockprov_base_url(mp));
    bench_case("served by the first key", mp, n, 0, 1, "");
#ifdef BENCH_REDIS
    {
        /* The same through the Redis health store at steady state: the
         * store read at most every syncInterval (100 ms), nothing written */
        char url[128], gw[256];
        int port = redis_start(url, sizeof url);
        if (port < 0) {
            fprintf(stderr, "bench: cannot start redis-server\n");
            return 1;
        }
        snprintf(gw, sizeof gw, "\"healthStore\":{\"redis\":{\"url\":\"%s\"}}", url);
        c0 = redis_commands(port);
        bench_pair("  Redis store / in-process", mp, n, 1, 1, "", gw);
        c1 = redis_commands(port);
        printf("  Redis commands per request through the store: %.4f\n",
               (double)(c1 - c0) / (double)case_requests(n));
        redis_port = port;
        snprintf(redis_gw, sizeof redis_gw, "%s", gw);
    }
#endif
    memset(&rl, 0, sizeof rl);
    rl.key = "key-primary";
    rl.status = 429;
    rl.headers = "Retry-After: 30\r\n";
    rl.body = "{\"error\":{\"code\":\"rate_limit_exceeded\"}}";
    mockprov_add_rule(mp, &rl);
    /* the cost of failover itself: a client that forgets the 429 (no
     * cooldown), so every request pays for the primary again, as the raw
     * side does */
    bench_case("failover 429 -> second key", mp, n, 1, 2,
               "\"keyCooldown\":\"0\",\"keyCooldownMax\":\"0\"");
    /* what remembering buys: the primary cools for its Retry-After and is
     * skipped; raw libcurl (naive failover) still asks it every time */
    bench_case("429 primary, remembered", mp, n, 1, 1, "");
#ifdef BENCH_REDIS
    c0 = redis_commands(redis_port);
    bench_pair("  Redis store / in-process", mp, n, 2, 1, "", redis_gw);
    c1 = redis_commands(redis_port);
    printf("  Redis commands per request through the store: %.4f\n",
           (double)(c1 - c0) / (double)case_requests(n));
    redis_stop();
#else
    (void)case_requests;
    (void)bench_pair;
#endif
    mockprov_stop(mp);
    curl_global_cleanup();
    return 0;
}
