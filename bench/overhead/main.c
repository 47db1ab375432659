/*
 * main.c - what libaigw costs over raw libcurl doing the same requests, and
 * the performance targets, in one run (build/tests/bench; the
 * one-command way is scripts/bench, which makes a release build first).
 *
 *   bench [--quick] [--json FILE] [--mock] [--no-callgrind]
 *         [--profile DIR] [--keep-callgrind DIR] [N]
 *
 * The upstream is a loopback nginx (else the mock provider) in a process
 * of its own, so every clock and counter read here is the client's alone
 * (upstream.c).  Each case runs its sides - raw libcurl done right
 * (sides.c) and libaigw - in interleaved rounds whose order rotates, so
 * drift on the machine hits every side alike, and reports per-request
 * medians over the rounds: wall time, the process's CPU time, allocations
 * (allocs.c).  Instructions per request come from callgrind runs of a
 * fresh client process and RSS growth from fresh processes (children.c).
 * The sequential cases run pinned to one CPU; the thread sweep is not.
 *
 * Cases: one key, sequential (raw, libaigw, and libaigw with [429 key, ok
 * key] at the default memory, whose primary cools for its Retry-After and
 * is skipped); the same pair with no memory (every request fails over, as
 * raw libcurl's naive failover does); 1..16 threads on one shared client
 * vs a raw handle per thread; a 200-event streamed answer (time to the
 * first byte handed to the caller, and to the end); with hiredis, the
 * Redis health store at steady state (a redis-server of the bench's own);
 * RSS of a client with 10 keys.  The table ends with the targets, each
 * PASS, FAIL or not measured; --json writes the same for trend tracking.
 */
#define _GNU_SOURCE /* sched_setaffinity, sched_getcpu */
#include "bench.h"

#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifdef BENCH_REDIS
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
extern char **environ;
#endif

#ifndef BENCH_BUILDTYPE
#define BENCH_BUILDTYPE "unknown"
#endif

#define MAX_ROUNDS 41
#define WARM 20 /* requests per side before the rounds */

/* ---- the plan: how much of everything ---- */

typedef struct plan {
    int quick;
    int rounds, n;            /* sequential cases: rounds, requests per side per round */
    int thread_rounds, per_thread;
    int stream_rounds, stream_n;
    int ir_n1, ir_n2;         /* callgrind runs (the streamed cases: a fifth) */
    int ir_reps;              /* pairs of them per case, the median taken */
    int rss_n;
} plan;

static const plan FULL = {0, 15, 1000, 21, 1000, 11, 300, 200, 2200, 3, 2000};
static const plan QUICK = {1, 9, 300, 3, 200, 7, 50, 50, 250, 1, 500};

static const int THREADS[] = {1, 2, 4, 8, 16};
#define N_THREADS (sizeof THREADS / sizeof THREADS[0])

/* ---- small helpers ---- */

/* Progress, on stderr: the table goes to stdout. */
static void say(const char *what)
{
    fprintf(stderr, "bench: %s\n", what);
}

static void die(const char *what)
{
    fprintf(stderr, "bench: %s\n", what);
    exit(1);
}

/* ---- a side of a case ---- */

typedef enum side_kind {
    RAW_ONE = 0,  /* one handle, one key */
    RAW_FAILOVER, /* two handles: the 429 key, then the ok key */
    RAW_STREAM,
    AIGW_SEND,
    AIGW_STREAM
} side_kind;

typedef struct side {
    side_kind kind;
    bench_raw *raw[2];
    aigw_client *c;
    aigw_request *req;
    long want;         /* libaigw: attempts per request; -1 any */
    int count_upstream; /* read the upstream's count around each run */
    int redis_port;     /* > 0: count Redis commands around each run */
    /* totals over the rounds */
    long requests, attempts, upstream, redis_cmds;
    /* per round, per request */
    int rounds;
    double wall[MAX_ROUNDS], cpu[MAX_ROUNDS], ttfb[MAX_ROUNDS];
    double allocs[BENCH_ALLOC_N][MAX_ROUNDS];
} side;

static const bench_upstream *g_up;

#ifdef BENCH_REDIS
static long redis_commands(int port);
#endif

/* The upstream requests counted since up0: nginx writes a request's log
 * line after its answer, so wait (at most 1 s) for as many as the client
 * made; more are counted if there were more. */
static long upstream_settled(long up0, long attempts)
{
    struct timespec ms = {0, 1000000L};
    long got = bench_upstream_requests(g_up) - up0;
    int i;
    for (i = 0; i < 1000 && got < attempts; i++) {
        nanosleep(&ms, NULL);
        got = bench_upstream_requests(g_up) - up0;
    }
    nanosleep(&ms, NULL);
    return bench_upstream_requests(g_up) - up0;
}

/* n requests of one side; with record, one round's figures. */
static void run_side(side *s, int n, int record)
{
    bench_allocs a0, a1;
    long up0 = -1, rc0 = -1, attempts = 0;
    double t0, t1, c0, c1, ttfb = 0, start, fb;
    size_t stream_len;
    int i, k;
    bench_stream_body(&stream_len);
    if (record && s->count_upstream)
        up0 = bench_upstream_requests(g_up);
#ifdef BENCH_REDIS
    if (record && s->redis_port > 0)
        rc0 = redis_commands(s->redis_port);
#endif
    bench_allocs_get(&a0);
    c0 = bench_cpu_s();
    t0 = bench_now_s();
    for (i = 0; i < n; i++) {
        switch (s->kind) {
        case RAW_ONE:
            if (bench_raw_perform(s->raw[0]) != 200)
                die("raw request failed");
            break;
        case RAW_FAILOVER:
            if (bench_raw_failover(s->raw, 2) != 0)
                die("raw failover failed");
            attempts += 2;
            break;
        case RAW_STREAM:
            start = bench_now_s();
            if (bench_raw_perform(s->raw[0]) != 200 || s->raw[0]->got != stream_len)
                die("raw stream failed");
            ttfb += s->raw[0]->first_byte_s - start;
            break;
        case AIGW_SEND:
            attempts += bench_aigw_send(s->c, s->req, s->want);
            break;
        case AIGW_STREAM:
            start = bench_now_s();
            attempts += bench_aigw_stream(s->c, s->req, &fb);
            ttfb += fb - start;
            break;
        }
    }
    t1 = bench_now_s();
    c1 = bench_cpu_s();
    bench_allocs_get(&a1);
    if (!record || s->rounds == MAX_ROUNDS)
        return;
    s->wall[s->rounds] = (t1 - t0) / n;
    s->cpu[s->rounds] = (c1 - c0) / n;
    s->ttfb[s->rounds] = ttfb / n;
    for (k = 0; k < BENCH_ALLOC_N; k++)
        s->allocs[k][s->rounds] = (double)(a1.n[k] - a0.n[k]) / n;
    s->rounds++;
    s->requests += n;
    s->attempts += attempts;
    if (up0 >= 0)
        s->upstream += upstream_settled(up0, attempts);
#ifdef BENCH_REDIS
    if (rc0 >= 0)
        s->redis_cmds += redis_commands(s->redis_port) - rc0;
#else
    (void)rc0;
#endif
}

/* Warms every side, then rounds of n requests each, the order rotating. */
static void run_case(side *const *sides, int k, int rounds, int n)
{
    int r, j;
    for (j = 0; j < k; j++)
        run_side(sides[j], WARM, 0);
    for (r = 0; r < rounds; r++)
        for (j = 0; j < k; j++)
            run_side(sides[(r + j) % k], n, 1);
}

static double m_wall(const side *s)
{
    return bench_median(s->wall, s->rounds) * 1e6;
}

static double m_cpu(const side *s)
{
    return bench_median(s->cpu, s->rounds) * 1e6;
}

static double m_ttfb(const side *s)
{
    return bench_median(s->ttfb, s->rounds) * 1e6;
}

static double m_allocs(const side *s, char *note, size_t size)
{
    double total = 0, v[BENCH_ALLOC_N];
    size_t len = 0;
    int k;
    for (k = 0; k < BENCH_ALLOC_N; k++) {
        v[k] = bench_median(s->allocs[k], s->rounds);
        total += v[k];
    }
    if (note) {
        for (k = 0; k < BENCH_ALLOC_N; k++)
            if (v[k] >= 0.05 && len < size)
                len += (size_t)snprintf(note + len, size - len, "%s%s %.1f", len ? ", " : "",
                                        bench_alloc_src_names[k], v[k]);
        if (len == 0)
            snprintf(note, size, "none");
    }
    return total;
}

/* "raw: libcurl 12.0, other 3.0; libaigw: libaigw 20.0, ..." */
static void alloc_row(const char *id, const char *label, const side *base, const char *base_name,
                      const side *lib)
{
    char nb[96], nl[96], note[220];
    double b = m_allocs(base, nb, sizeof nb), l = m_allocs(lib, nl, sizeof nl);
    if (!bench_allocs_counting()) {
        bench_row(id, label, "allocs", NAN, NAN, BENCH_T_NONE, 0,
                  "not counted: a sanitizer's runtime owns malloc in this build");
        return;
    }
    snprintf(note, sizeof note, "by caller - %s: %s; libaigw: %s", base_name, nb, nl);
    bench_row(id, label, "allocs", b, l, BENCH_T_NONE, 0, note);
}

static side *side_raw(side_kind kind, bench_raw *a, bench_raw *b)
{
    side *s = calloc(1, sizeof *s);
    if (!s)
        die("out of memory");
    s->kind = kind;
    s->raw[0] = a;
    s->raw[1] = b;
    return s;
}

static side *side_aigw(side_kind kind, aigw_client *c, aigw_request *req, long want)
{
    side *s = calloc(1, sizeof *s);
    if (!s)
        die("out of memory");
    s->kind = kind;
    s->c = c;
    s->req = req;
    s->want = want;
    return s;
}

/* ---- CPU placement ---- */

static cpu_set_t all_cpus;

static void pin(int on)
{
#ifdef __linux__
    cpu_set_t one;
    int cpu = sched_getcpu();
    CPU_ZERO(&one);
    CPU_SET(cpu >= 0 ? cpu : 0, &one);
    if (sched_setaffinity(0, sizeof(cpu_set_t), on ? &one : &all_cpus) != 0 && on)
        fprintf(stderr, "bench: could not pin to one CPU; figures will be noisier\n");
#else
    (void)on;
#endif
}

/* ---- threads ---- */

typedef struct tctx {
    pthread_t th;
    side_kind kind;
    bench_raw *raw;
    aigw_client *c;
    aigw_request *req;
    int n;
    pthread_barrier_t *bar;
    double end;
} tctx;

static void *thread_main(void *p)
{
    tctx *t = p;
    int i;
    /* one request first: a raw handle's connection is open, the pool warm */
    if (t->kind == RAW_ONE ? bench_raw_perform(t->raw) != 200 : bench_aigw_send(t->c, t->req, 1) != 1)
        die("thread request failed");
    pthread_barrier_wait(t->bar);
    for (i = 0; i < t->n; i++)
        if (t->kind == RAW_ONE) {
            if (bench_raw_perform(t->raw) != 200)
                die("raw request failed");
        } else {
            bench_aigw_send(t->c, t->req, 1);
        }
    t->end = bench_now_s();
    return NULL;
}

/* T threads, n requests each; wall and CPU from the start line to the last
 * thread's end. */
static void run_threads(int T, side_kind kind, bench_raw *raws, aigw_client *const *cs,
                        aigw_request *req, int n, double *wall, double *cpu)
{
    tctx t[16];
    pthread_barrier_t bar;
    double t0, c0, end = 0;
    int i;
    pthread_barrier_init(&bar, NULL, (unsigned)T + 1);
    for (i = 0; i < T; i++) {
        t[i].kind = kind;
        t[i].raw = &raws[i];
        t[i].c = cs ? cs[i] : NULL;
        t[i].req = req;
        t[i].n = n;
        t[i].bar = &bar;
        if (pthread_create(&t[i].th, NULL, thread_main, &t[i]) != 0)
            die("pthread_create failed");
    }
    pthread_barrier_wait(&bar);
    t0 = bench_now_s();
    c0 = bench_cpu_s();
    for (i = 0; i < T; i++) {
        pthread_join(t[i].th, NULL);
        if (t[i].end > end)
            end = t[i].end;
    }
    *cpu = bench_cpu_s() - c0;
    *wall = end - t0;
    pthread_barrier_destroy(&bar);
}

/* Per thread count: requests/s and CPU/request, medians over the rounds;
 * own_*: libaigw with a client per thread, the control that tells what
 * sharing one client costs from what a request costs. */
typedef struct sweep {
    double raw_rps, lib_rps, own_rps, raw_cpu, lib_cpu, own_cpu;
    double paired; /* median over the rounds of lib/raw, each round's runs side by side */
} sweep;

/* Each run opens its connections anew (new raw handles, new clients): with
 * nginx's workers taking connections as they come, a side whose connections
 * all landed on one worker would otherwise keep that handicap for every
 * round; fresh each run, the medians see where connections fall as chance,
 * alike for every side. */
static void thread_sweep(const plan *p, const char *base_url, sweep *out)
{
    static const char *const ok[] = {BENCH_KEY_OK};
    aigw_client *cs[16];
    aigw_request *req = bench_request_new(0);
    size_t ti;
    int i;
    for (ti = 0; ti < N_THREADS; ti++) {
        int T = THREADS[ti], r;
        bench_raw raws[16];
        double rw[MAX_ROUNDS], lw[MAX_ROUNDS], ow[MAX_ROUNDS];
        double rc[MAX_ROUNDS], lc[MAX_ROUNDS], oc[MAX_ROUNDS], pr[MAX_ROUNDS];
        double total = (double)T * p->per_thread;
        fprintf(stderr, "bench: %d thread%s\n", T, T > 1 ? "s" : "");
        for (r = 0; r < p->thread_rounds; r++) {
            int side_i;
            for (side_i = 0; side_i < 3; side_i++) {
                int which = (r + side_i) % 3;
                double w, cp;
                if (which == 0) {
                    for (i = 0; i < T; i++)
                        if (bench_raw_init(&raws[i], g_up->url, BENCH_KEY_OK, 0) != 0)
                            die("curl_easy_init failed");
                    run_threads(T, RAW_ONE, raws, NULL, NULL, p->per_thread, &w, &cp);
                    for (i = 0; i < T; i++)
                        bench_raw_cleanup(&raws[i]);
                    rw[r] = total / w;
                    rc[r] = cp / total;
                    continue;
                }
                /* 1: one client shared by the threads; 2: a client each */
                for (i = 0; i < T; i++)
                    cs[i] = which == 1 && i ? cs[0] : bench_client_new(base_url, ok, 1, NULL, "");
                run_threads(T, AIGW_SEND, raws, cs, req, p->per_thread, &w, &cp);
                for (i = 0; i < (which == 1 ? 1 : T); i++)
                    aigw_client_free(cs[i]);
                (which == 1 ? lw : ow)[r] = total / w;
                (which == 1 ? lc : oc)[r] = cp / total;
            }
            pr[r] = lw[r] / rw[r];
        }
        out[ti].raw_rps = bench_median(rw, p->thread_rounds);
        out[ti].lib_rps = bench_median(lw, p->thread_rounds);
        out[ti].own_rps = bench_median(ow, p->thread_rounds);
        out[ti].raw_cpu = bench_median(rc, p->thread_rounds) * 1e6;
        out[ti].lib_cpu = bench_median(lc, p->thread_rounds) * 1e6;
        out[ti].own_cpu = bench_median(oc, p->thread_rounds) * 1e6;
        out[ti].paired = bench_median(pr, p->thread_rounds);
    }
    aigw_request_free(req);
}

static void sweep_rows(const sweep *sw)
{
    char label[64], id[32], note[160];
    size_t ti;
    bench_section("threads", "Threads: a shared libaigw client vs raw libcurl, a handle per "
                             "thread (ratio: per-round median)", "raw libcurl");
    for (ti = 0; ti < N_THREADS; ti++) {
        int T = THREADS[ti];
        snprintf(id, sizeof id, "t%d.rps", T);
        snprintf(label, sizeof label, "%d thread%s: requests/s", T, T > 1 ? "s" : "");
        snprintf(note, sizeof note,
                 "CPU/request: raw %.1f us, libaigw %.1f us; a client per thread: %.0f req/s, "
                 "%.1f us",
                 sw[ti].raw_cpu, sw[ti].lib_cpu, sw[ti].own_rps, sw[ti].own_cpu);
        bench_row_paired(id, label, "req/s", sw[ti].raw_rps, sw[ti].lib_rps, sw[ti].paired,
                         BENCH_T_RATIO_GE, 0.95, note);
    }
}

/* ---- Redis ---- */

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
        struct timespec ts = {0, 20 * 1000 * 1000};
        redisContext *c = redisConnect("127.0.0.1", atoi(port));
        if (c && !c->err) {
            redisFree(c);
            snprintf(url, size, "redis://127.0.0.1:%s/0", port);
            return atoi(port);
        }
        if (c)
            redisFree(c);
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
        redis_pid = 0;
    }
}
#endif

/* ---- the run ---- */

/* What must not outlive the bench, even when it stops early (exit(1)). */
static bench_upstream *g_up_owned;

static void at_exit(void)
{
    if (g_up_owned)
        bench_upstream_stop(g_up_owned);
#ifdef BENCH_REDIS
    redis_stop();
#endif
}

static void usage(void)
{
    printf("usage: bench [--quick] [--json FILE] [--mock] [--threads] [--no-callgrind]\n"
           "             [--profile DIR] [--keep-callgrind DIR] [N]\n"
           "  --quick              fewer rounds and requests (seconds rather than minutes)\n"
           "  --json FILE          also write the figures and targets as JSON\n"
           "  --mock               the mock provider as upstream even when nginx is installed\n"
           "  --threads            the thread sweep alone\n"
           "  --no-callgrind       skip the instruction counts (also BENCH_CALLGRIND=0)\n"
           "  --profile DIR        also run callgrind only inside the per-request calls and\n"
           "                       keep its files in DIR (for callgrind_annotate)\n"
           "  --keep-callgrind DIR keep the instruction-count runs' files in DIR\n"
           "  N                    requests per side per round in the sequential cases\n");
}

static void self_exe(char *out, size_t size)
{
    ssize_t n = readlink("/proc/self/exe", out, size - 1);
    if (n <= 0)
        die("cannot find /proc/self/exe");
    out[n] = '\0';
}

static void put_meta(const plan *p, const char *valgrind)
{
    char line[256] = "", buf[256];
    FILE *f;
    bench_meta("libaigw", aigw_version_string());
    bench_meta("libcurl", curl_version());
    bench_meta("buildtype", BENCH_BUILDTYPE);
    bench_meta("upstream", g_up->kind);
    bench_meta("mode", p->quick ? "quick" : "full");
    bench_meta_num("cpus", (double)sysconf(_SC_NPROCESSORS_ONLN));
    if ((f = fopen("/proc/cpuinfo", "r")) != NULL) {
        while (fgets(buf, sizeof buf, f))
            if (strncmp(buf, "model name", 10) == 0) {
                char *v = strchr(buf, ':');
                if (v) {
                    v[strcspn(v, "\n")] = '\0';
                    snprintf(line, sizeof line, "%s", v + 2);
                }
                break;
            }
        fclose(f);
        bench_meta("cpu_model", line);
    }
    if ((f = fopen("/proc/loadavg", "r")) != NULL) {
        if (fgets(buf, sizeof buf, f)) {
            buf[strcspn(buf, "\n")] = '\0';
            bench_meta("loadavg_at_start", buf);
        }
        fclose(f);
    }
    {
        time_t now = time(NULL);
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
        bench_meta("date", buf);
    }
    bench_meta("callgrind", valgrind ? valgrind : "not run");
    bench_meta_num("rounds", p->rounds);
    bench_meta_num("requests_per_round", p->n);
    bench_meta_num("thread_rounds", p->thread_rounds);
    bench_meta_num("requests_per_thread", p->per_thread);
    bench_meta_num("stream_rounds", p->stream_rounds);
    bench_meta_num("stream_requests_per_round", p->stream_n);
    bench_meta_num("callgrind_n1", p->ir_n1);
    bench_meta_num("callgrind_n2", p->ir_n2);
    bench_meta_num("callgrind_pairs", p->ir_reps);
    bench_meta_num("rss_requests", p->rss_n);
}

int main(int argc, char **argv)
{
    static const char *const ok[] = {BENCH_KEY_OK};
    static const char *const lim_ok[] = {BENCH_KEY_LIMITED, BENCH_KEY_OK};
    static const char *const lim_counted[] = {BENCH_KEY_LIMITED, BENCH_KEY_OK_COUNTED};
    static const char *const st[] = {BENCH_KEY_STREAM};
    plan p = FULL;
    const char *json = NULL, *profile_dir = NULL, *keep_dir = NULL, *valgrind;
    int force_mock = 0, no_cg = 0, n_override = 0, threads_only = 0, i;
    char why[256], exe[1024], redis_url[128] = "", note[200];
    bench_upstream up;
    bench_raw raw_ok, raw_lim, raw_ok2, raw_st;
    aigw_client *c1, *cF, *cN, *cS;
    aigw_request *req, *sreq;
    side *s_raw1, *s_lib1, *s_libF, *s_rawF, *s_libN, *s_rawS, *s_libS;
    double ir[BENCH_IR_N];
    sweep sw[N_THREADS];
    long upstream_ok;

    if (argc >= 2 && strcmp(argv[1], "--child") == 0)
        return bench_child_main(argc - 2, argv + 2);
    /* Everything goes to loopback, both sides alike: no proxy in the way
     * (the children inherit this). */
    {
        static const char *const proxy_vars[] = {"http_proxy", "HTTP_PROXY", "https_proxy",
                                                 "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
                                                 "no_proxy", "NO_PROXY"};
        for (i = 0; i < (int)(sizeof proxy_vars / sizeof proxy_vars[0]); i++)
            unsetenv(proxy_vars[i]);
    }
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0)
            p = QUICK;
        else if (strcmp(argv[i], "--json") == 0 && i + 1 < argc)
            json = argv[++i];
        else if (strcmp(argv[i], "--mock") == 0)
            force_mock = 1;
        else if (strcmp(argv[i], "--threads") == 0)
            threads_only = 1;
        else if (strcmp(argv[i], "--no-callgrind") == 0)
            no_cg = 1;
        else if (strcmp(argv[i], "--profile") == 0 && i + 1 < argc)
            profile_dir = argv[++i];
        else if (strcmp(argv[i], "--keep-callgrind") == 0 && i + 1 < argc)
            keep_dir = argv[++i];
        else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage();
            return 0;
        } else if (atoi(argv[i]) > 0)
            n_override = atoi(argv[i]);
        else {
            usage();
            return 2;
        }
    }
    if (n_override)
        p.n = n_override < 10 ? 10 : n_override;
    if (no_cg)
        setenv("BENCH_CALLGRIND", "0", 1);
    valgrind = bench_valgrind();
    self_exe(exe, sizeof exe);

    /* the upstream first: it may fork, and no thread exists yet */
    if (bench_upstream_start(&up, force_mock, why, sizeof why) != 0) {
        fprintf(stderr, "bench: no upstream: %s\n", why);
        return 1;
    }
    g_up = g_up_owned = &up;
    atexit(at_exit);
    curl_global_init(CURL_GLOBAL_ALL);
    bench_allocs_init();
    sched_getaffinity(0, sizeof all_cpus, &all_cpus);
    put_meta(&p, valgrind);
    printf("libaigw %s bench (%s, %s build): upstream %s at %s, in its own process; "
           "libcurl %s; %ld CPUs\n",
           aigw_version_string(), p.quick ? "quick" : "full", BENCH_BUILDTYPE, up.kind,
           up.base_url, curl_version(), sysconf(_SC_NPROCESSORS_ONLN));
    printf("medians over interleaved rounds; CPU = this process's (the client's) CPU time; "
           "allocations = malloc+calloc+realloc of every library\n");
    fflush(stdout);

    if (threads_only) {
        thread_sweep(&p, up.base_url, sw);
        sweep_rows(sw);
        bench_report_print();
        if (json && bench_report_json(json) != 0)
            fprintf(stderr, "bench: cannot write %s\n", json);
        bench_upstream_stop(&up);
        curl_global_cleanup();
        return 0;
    }

    /* ---- one key, and [429 key, ok key] remembered ---- */
    pin(1);
    say("one key, sequential; [429 key, ok key] with the default memory");
    if (bench_raw_init(&raw_ok, up.url, BENCH_KEY_OK, 0) != 0 ||
        bench_raw_init(&raw_lim, up.url, BENCH_KEY_LIMITED, 0) != 0 ||
        bench_raw_init(&raw_ok2, up.url, BENCH_KEY_OK, 0) != 0 ||
        bench_raw_init(&raw_st, up.url, BENCH_KEY_STREAM, 1) != 0)
        die("curl_easy_init failed");
    req = bench_request_new(0);
    sreq = bench_request_new(1);
    c1 = bench_client_new(up.base_url, ok, 1, NULL, "");
    cF = bench_client_new(up.base_url, lim_counted, 2, NULL, "");
    bench_aigw_send(cF, req, 2); /* learns of the 429: the primary cools */
    s_raw1 = side_raw(RAW_ONE, &raw_ok, NULL);
    s_lib1 = side_aigw(AIGW_SEND, c1, req, 1);
    s_libF = side_aigw(AIGW_SEND, cF, req, -1);
    s_libF->count_upstream = 1;
    {
        side *sides[] = {s_raw1, s_lib1, s_libF};
        run_case(sides, 3, p.rounds, p.n);
    }

    /* ---- [429 key, ok key] with no memory: every request fails over ---- */
    say("[429 key, ok key] with no memory");
    cN = bench_client_new(up.base_url, lim_ok, 2, NULL,
                          "\"keyCooldown\":\"0\",\"keyCooldownMax\":\"0\"");
    {
        bench_raw *pair[2] = {&raw_lim, &raw_ok2};
        side *sides[2];
        s_rawF = side_raw(RAW_FAILOVER, pair[0], pair[1]);
        s_libN = side_aigw(AIGW_SEND, cN, req, 2);
        sides[0] = s_rawF;
        sides[1] = s_libN;
        run_case(sides, 2, p.rounds, p.n);
    }

    /* ---- streaming ---- */
    say("streaming");
    cS = bench_client_new(up.base_url, st, 1, NULL, "");
    s_rawS = side_raw(RAW_STREAM, &raw_st, NULL);
    s_libS = side_aigw(AIGW_STREAM, cS, sreq, 1);
    {
        side *sides[] = {s_rawS, s_libS};
        run_case(sides, 2, p.stream_rounds, p.stream_n);
    }

    /* ---- Redis ---- */
#ifdef BENCH_REDIS
    side *s_r1 = NULL, *s_r1s = NULL, *s_rF = NULL, *s_rFs = NULL;
    aigw_client *cr1 = NULL, *cr1s = NULL, *crF = NULL, *crFs = NULL;
    {
        char gw[256];
        int port = redis_start(redis_url, sizeof redis_url);
        if (port < 0) {
            fprintf(stderr, "bench: cannot start redis-server: the Redis rows are skipped\n");
            redis_url[0] = '\0';
        } else {
            say("the Redis health store");
            snprintf(gw, sizeof gw, "\"healthStore\":{\"redis\":{\"url\":\"%s\"}}", redis_url);
            cr1 = bench_client_new(up.base_url, ok, 1, NULL, "");
            cr1s = bench_client_new(up.base_url, ok, 1, NULL, gw);
            crF = bench_client_new(up.base_url, lim_ok, 2, NULL, "");
            crFs = bench_client_new(up.base_url, lim_ok, 2, NULL, gw);
            bench_aigw_send(crF, req, 2);
            bench_aigw_send(crFs, req, 2);
            s_r1 = side_aigw(AIGW_SEND, cr1, req, 1);
            s_r1s = side_aigw(AIGW_SEND, cr1s, req, 1);
            s_rF = side_aigw(AIGW_SEND, crF, req, -1);
            s_rFs = side_aigw(AIGW_SEND, crFs, req, -1);
            s_r1s->redis_port = s_rFs->redis_port = port;
            {
                side *sides[] = {s_r1, s_r1s, s_rF, s_rFs};
                run_case(sides, 4, p.rounds, p.n);
            }
        }
    }
#endif
    pin(0);

    /* ---- threads ---- */
    thread_sweep(&p, up.base_url, sw);

    /* ---- instructions, RSS ---- */
    {
        static const bench_ir_case whole[] = {BENCH_IR_ONE_RAW, BENCH_IR_ONE_AIGW,
                                              BENCH_IR_FAILOVER_AIGW, BENCH_IR_STORE_AIGW,
                                              BENCH_IR_ONE_RAW_ENV, BENCH_IR_ONE_RAW_TUNED};
        static const bench_ir_case streamed[] = {BENCH_IR_STREAM_RAW, BENCH_IR_STREAM_AIGW};
        double w[6], s[2];
        if (valgrind)
            say("instructions per request (callgrind runs)");
        bench_ir_measure(exe, up.base_url, redis_url[0] ? redis_url : NULL, whole, 6, p.ir_n1,
                         p.ir_n2, p.ir_reps, 0, keep_dir, w);
        bench_ir_measure(exe, up.base_url, NULL, streamed, 2, p.ir_n1 / 5, p.ir_n2 / 5,
                         p.ir_reps, 0, keep_dir, s);
        for (i = 0; i < BENCH_IR_N; i++)
            ir[i] = NAN;
        ir[BENCH_IR_ONE_RAW] = w[0];
        ir[BENCH_IR_ONE_AIGW] = w[1];
        ir[BENCH_IR_FAILOVER_AIGW] = w[2];
        ir[BENCH_IR_STORE_AIGW] = w[3];
        ir[BENCH_IR_ONE_RAW_ENV] = w[4];
        ir[BENCH_IR_ONE_RAW_TUNED] = w[5];
        ir[BENCH_IR_STREAM_RAW] = s[0];
        ir[BENCH_IR_STREAM_AIGW] = s[1];
    }
    say("RSS growth (fresh processes)");
    double rss_raw_anon, rss_lib_anon;
    double rss_raw = bench_rss_growth(exe, up.base_url, 0, p.rss_n, &rss_raw_anon);
    double rss_lib = bench_rss_growth(exe, up.base_url, 1, p.rss_n, &rss_lib_anon);

    /* ---- the report ---- */
    bench_section("one_key", "One key, sequential", "raw libcurl");
    bench_row("ir", "instructions/request (callgrind)", "Ir", ir[BENCH_IR_ONE_RAW],
              ir[BENCH_IR_ONE_AIGW], BENCH_T_RATIO_LE, 1.05, NULL);
    bench_row("ir_env", "instructions/request, raw reading the proxy environment once, as "
                        "libaigw does",
              "Ir", ir[BENCH_IR_ONE_RAW_ENV], ir[BENCH_IR_ONE_AIGW], BENCH_T_NONE, 0,
              "libcurl left to itself reads no_proxy, NO_PROXY, http_proxy, all_proxy, "
              "ALL_PROXY on every transfer");
    bench_row("ir_tuned", "instructions/request, raw set up as libaigw sets up libcurl: the "
                          "proxy environment read once and the URL parsed once (CURLOPT_CURLU)",
              "Ir", ir[BENCH_IR_ONE_RAW_TUNED], ir[BENCH_IR_ONE_AIGW], BENCH_T_NONE, 0,
              "libcurl given only CURLOPT_URL parses it on every transfer; this is what "
              "libaigw itself costs over the same libcurl work");
    bench_row("cpu", "client CPU/request (us)", "us", m_cpu(s_raw1), m_cpu(s_lib1),
              BENCH_T_RATIO_LE, 1.05, NULL);
    bench_row("wall", "wall/request (us)", "us", m_wall(s_raw1), m_wall(s_lib1), BENCH_T_NONE, 0,
              NULL);
    alloc_row("allocs", "allocations/request", s_raw1, "raw", s_lib1);

    bench_section("failover", "[429 key (Retry-After: 30), ok key], the default memory",
                  "libaigw 1 key");
    upstream_ok = s_libF->upstream;
    if (g_up->log_path[0])
        snprintf(note, sizeof note, "counted by nginx: %ld upstream requests for %ld served; "
                                    "libaigw's attempt records: %ld",
                 upstream_ok, s_libF->requests, s_libF->attempts);
    else
        snprintf(note, sizeof note, "counted from libaigw's attempt records (the mock upstream "
                                    "cannot count for the bench)");
    bench_row("upstream_per_served", "upstream requests per served request", "calls", NAN,
              (double)(g_up->log_path[0] ? upstream_ok : s_libF->attempts) /
                  (double)s_libF->requests,
              BENCH_T_LIB_LE, 1.01, note);
    bench_row("ir", "instructions/request vs one key", "Ir", ir[BENCH_IR_ONE_AIGW],
              ir[BENCH_IR_FAILOVER_AIGW], BENCH_T_RATIO_LE, 1.05, NULL);
    bench_row("cpu", "client CPU/request vs one key (us)", "us", m_cpu(s_lib1), m_cpu(s_libF),
              BENCH_T_RATIO_LE, 1.05, NULL);
    bench_row("wall", "wall/request vs one key (us)", "us", m_wall(s_lib1), m_wall(s_libF),
              BENCH_T_NONE, 0, NULL);
    alloc_row("allocs", "allocations/request vs one key", s_lib1, "1 key", s_libF);
    bench_row("cpu_vs_raw", "client CPU/request vs raw one key (us)", "us", m_cpu(s_raw1),
              m_cpu(s_libF), BENCH_T_NONE, 0, NULL);

    sweep_rows(sw);

    bench_section("no_memory", "[429 key, ok key], no memory (keyCooldown 0): every request "
                               "fails over", "raw naive failover");
    bench_row("cpu", "client CPU/request (us)", "us", m_cpu(s_rawF), m_cpu(s_libN), BENCH_T_NONE,
              0, NULL);
    bench_row("wall", "wall/request (us)", "us", m_wall(s_rawF), m_wall(s_libN), BENCH_T_NONE, 0,
              NULL);
    alloc_row("allocs", "allocations/request", s_rawF, "raw", s_libN);

    {
        size_t len;
        bench_stream_body(&len);
        snprintf(note, sizeof note, "%d events, %zu bytes, sent whole by the upstream",
                 BENCH_STREAM_EVENTS, len);
    }
    bench_section("stream", "Streaming: a 200-event SSE answer (aigw_client_stream vs a raw "
                            "write callback)", "raw libcurl");
    bench_row("ttfb", "time to the first byte handed to the caller (us)", "us", m_ttfb(s_rawS),
              m_ttfb(s_libS), BENCH_T_RATIO_LE, 1.05, note);
    bench_row("total", "total time/request (us)", "us", m_wall(s_rawS), m_wall(s_libS),
              BENCH_T_RATIO_LE, 1.05, NULL);
    bench_row("cpu", "client CPU/request (us)", "us", m_cpu(s_rawS), m_cpu(s_libS), BENCH_T_NONE,
              0, NULL);
    bench_row("ir", "instructions/request (callgrind)", "Ir", ir[BENCH_IR_STREAM_RAW],
              ir[BENCH_IR_STREAM_AIGW], BENCH_T_NONE, 0, NULL);
    alloc_row("allocs", "allocations/request", s_rawS, "raw", s_libS);

#ifdef BENCH_REDIS
    if (s_r1) {
        bench_section("redis", "Redis health store at steady state (redis-server of the bench's "
                               "own)", "in-process");
        snprintf(note, sizeof note, "added: %.2f us CPU/request; Redis commands/request %.4f",
                 m_cpu(s_r1s) - m_cpu(s_r1), (double)s_r1s->redis_cmds / s_r1s->requests);
        bench_row("one_key.cpu", "one key: client CPU/request (us)", "us", m_cpu(s_r1),
                  m_cpu(s_r1s), BENCH_T_NONE, 0, note);
        bench_row("one_key.wall", "one key: wall/request (us)", "us", m_wall(s_r1), m_wall(s_r1s),
                  BENCH_T_NONE, 0, NULL);
        snprintf(note, sizeof note, "added: %.0f instructions/request",
                 ir[BENCH_IR_STORE_AIGW] - ir[BENCH_IR_ONE_AIGW]);
        bench_row("one_key.ir", "one key: instructions/request (callgrind)", "Ir",
                  ir[BENCH_IR_ONE_AIGW], ir[BENCH_IR_STORE_AIGW], BENCH_T_NONE, 0,
                  isnan(ir[BENCH_IR_STORE_AIGW]) ? NULL : note);
        bench_row("one_key.redis_cmds", "one key: Redis commands/request", "cmds", NAN,
                  (double)s_r1s->redis_cmds / s_r1s->requests, BENCH_T_NONE, 0, NULL);
        alloc_row("one_key.allocs", "one key: allocations/request", s_r1, "in-process", s_r1s);
        snprintf(note, sizeof note, "added: %.2f us CPU/request; Redis commands/request %.4f",
                 m_cpu(s_rFs) - m_cpu(s_rF), (double)s_rFs->redis_cmds / s_rFs->requests);
        bench_row("failover.cpu", "[429 key, ok key]: client CPU/request (us)", "us", m_cpu(s_rF),
                  m_cpu(s_rFs), BENCH_T_NONE, 0, note);
        bench_row("failover.wall", "[429 key, ok key]: wall/request (us)", "us", m_wall(s_rF),
                  m_wall(s_rFs), BENCH_T_NONE, 0, NULL);
    }
#endif

    bench_section("rss", "RSS: a fresh process, a client of 10 keys (round-robin) and its "
                         "requests",
                  "raw libcurl");
    snprintf(note, sizeof note, "VmRSS growth over %d requests; RssAnon growth: raw %.0f KiB, "
                                "libaigw %.0f KiB",
             p.rss_n, rss_raw_anon, rss_lib_anon);
    bench_row("growth", "RSS growth (KiB)", "KiB", rss_raw, rss_lib, BENCH_T_DIFF_LE, 1024, note);

    bench_report_print();
    if (json) {
        if (bench_report_json(json) != 0)
            fprintf(stderr, "bench: cannot write %s\n", json);
        else
            printf("\nJSON: %s\n", json);
    }
    fflush(stdout);

    /* ---- the profile: where libaigw's instructions go ---- */
    if (profile_dir && valgrind) {
        static const bench_ir_case prof[] = {BENCH_IR_ONE_RAW, BENCH_IR_ONE_AIGW,
                                             BENCH_IR_FAILOVER_AIGW};
        static const bench_ir_case prof_s[] = {BENCH_IR_STREAM_RAW, BENCH_IR_STREAM_AIGW};
        double v[3], vs[2];
        say("profile runs (callgrind, collecting inside the per-request calls)");
        bench_ir_measure(exe, up.base_url, NULL, prof, 3, p.ir_n1, p.ir_n2, 1, 1, profile_dir,
                         v);
        bench_ir_measure(exe, up.base_url, NULL, prof_s, 2, p.ir_n1 / 5, p.ir_n2 / 5, 1, 1,
                         profile_dir, vs);
        printf("\nProfile (instructions per request inside the per-request calls), files in %s:\n"
               "  one-raw %.0f  one-aigw %.0f  failover-aigw %.0f  stream-raw %.0f  "
               "stream-aigw %.0f\n",
               profile_dir, v[0], v[1], v[2], vs[0], vs[1]);
    }

#ifdef BENCH_REDIS
    aigw_client_free(cr1);
    aigw_client_free(cr1s);
    aigw_client_free(crF);
    aigw_client_free(crFs);
    free(s_r1);
    free(s_r1s);
    free(s_rF);
    free(s_rFs);
    redis_stop();
#endif
    aigw_client_free(c1);
    aigw_client_free(cF);
    aigw_client_free(cN);
    aigw_client_free(cS);
    aigw_request_free(req);
    aigw_request_free(sreq);
    bench_raw_cleanup(&raw_ok);
    bench_raw_cleanup(&raw_lim);
    bench_raw_cleanup(&raw_ok2);
    bench_raw_cleanup(&raw_st);
    free(s_raw1);
    free(s_lib1);
    free(s_libF);
    free(s_rawF);
    free(s_libN);
    free(s_rawS);
    free(s_libS);
    bench_upstream_stop(&up);
    curl_global_cleanup();
    return 0;
}
