/*
 * children.c - the measurements that need a process of their own: this
 * same executable, started again with --child.
 *
 * Instructions per request: the client process alone (the upstream is
 * another process, never traced) runs under `valgrind --tool=callgrind` at
 * two request counts n1 < n2, and (Ir(n2) - Ir(n1)) / (n2 - n1) is what one
 * more request costs: start-up (the dynamic loader, OpenSSL's and libcurl's
 * global init, the configuration parse, the first connection) is the same
 * in both runs and cancels out.  Callgrind counts instructions executed, so
 * the figure does not move with the machine's load; what can move it is
 * how often the event loops find a socket not ready yet, which is why both
 * sides are measured the same way.  The profile runs collect only inside
 * the calls a request makes (--toggle-collect), for callgrind_annotate.
 *
 * RSS growth: a fresh process reads its VmRSS, sets up raw libcurl or a
 * libaigw client (10 keys, round-robin so that every key is used), sends N
 * requests, and reads it again.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define IR_WARM 10 /* requests before the n counted (after the first) */

const char *const bench_ir_case_names[BENCH_IR_N] = {
    "one-raw", "one-aigw", "failover-aigw", "stream-raw", "stream-aigw", "store-aigw", "one-raw-env",
    "one-raw-tuned",
};

/* What each case's per-request loop calls: the profile collects there. */
static const char *const toggles[BENCH_IR_N][3] = {
    {"curl_easy_perform", "curl_easy_getinfo", NULL},
    {"aigw_client_send", "aigw_response_free", NULL},
    {"aigw_client_send", "aigw_response_free", NULL},
    {"curl_easy_perform", "curl_easy_getinfo", NULL},
    {"aigw_client_stream", "aigw_response_free", NULL},
    {"aigw_client_send", "aigw_response_free", NULL},
    {"curl_easy_perform", "curl_easy_getinfo", NULL},
    {"curl_easy_perform", "curl_easy_getinfo", NULL},
};

/* ---- in the child ---- */

static int child_ir(int argc, char **argv)
{
    bench_ir_case k;
    char url[192], gw[256] = "";
    const char *keys[2];
    int n, i, total;
    if (argc < 3)
        return 2;
    for (k = 0; k < BENCH_IR_N && strcmp(argv[0], bench_ir_case_names[k]) != 0; k++)
        ;
    n = atoi(argv[1]);
    total = 1 + IR_WARM + n;
    snprintf(url, sizeof url, "%s/chat/completions", argv[2]);
    switch (k) {
    case BENCH_IR_ONE_RAW:
    case BENCH_IR_ONE_RAW_ENV:
    case BENCH_IR_ONE_RAW_TUNED:
    case BENCH_IR_STREAM_RAW: {
        bench_raw r;
        int stream = k == BENCH_IR_STREAM_RAW;
        if (bench_raw_init(&r, url, stream ? BENCH_KEY_STREAM : BENCH_KEY_OK, stream) != 0)
            return 1;
        if (k == BENCH_IR_ONE_RAW_ENV || k == BENCH_IR_ONE_RAW_TUNED)
            bench_raw_env_once(&r);
        if (k == BENCH_IR_ONE_RAW_TUNED)
            bench_raw_url_once(&r, url);
        for (i = 0; i < total; i++)
            if (bench_raw_perform(&r) != 200)
                return 1;
        bench_raw_cleanup(&r);
        return 0;
    }
    case BENCH_IR_ONE_AIGW:
    case BENCH_IR_FAILOVER_AIGW:
    case BENCH_IR_STREAM_AIGW:
    case BENCH_IR_STORE_AIGW: {
        aigw_client *c;
        aigw_request *req;
        size_t nk = 0;
        if (k == BENCH_IR_FAILOVER_AIGW)
            keys[nk++] = BENCH_KEY_LIMITED;
        keys[nk++] = k == BENCH_IR_STREAM_AIGW ? BENCH_KEY_STREAM : BENCH_KEY_OK;
        if (k == BENCH_IR_STORE_AIGW) {
            if (argc < 4)
                return 2;
            snprintf(gw, sizeof gw, "\"healthStore\":{\"redis\":{\"url\":\"%s\"}}", argv[3]);
        }
        c = bench_client_new(argv[2], keys, nk, NULL, gw);
        req = bench_request_new(k == BENCH_IR_STREAM_AIGW);
        for (i = 0; i < total; i++) {
            if (k == BENCH_IR_STREAM_AIGW) {
                double t;
                bench_aigw_stream(c, req, &t);
            } else {
                /* the first request of [429 key, ok key] learns of the 429 */
                bench_aigw_send(c, req, k == BENCH_IR_FAILOVER_AIGW && i == 0 ? 2 : 1);
            }
        }
        aigw_request_free(req);
        aigw_client_free(c);
        return 0;
    }
    default:
        return 2;
    }
}

static int child_rss(int argc, char **argv)
{
    long anon0, anon1, rss0, rss1;
    char url[192];
    int n, i, aigw;
    if (argc < 3)
        return 2;
    aigw = strcmp(argv[0], "aigw") == 0;
    n = atoi(argv[1]);
    snprintf(url, sizeof url, "%s/chat/completions", argv[2]);
    rss0 = bench_rss_kib(&anon0);
    if (aigw) {
        static const char *const keys[10] = {
            BENCH_KEY_OK "-0", BENCH_KEY_OK "-1", BENCH_KEY_OK "-2", BENCH_KEY_OK "-3",
            BENCH_KEY_OK "-4", BENCH_KEY_OK "-5", BENCH_KEY_OK "-6", BENCH_KEY_OK "-7",
            BENCH_KEY_OK "-8", BENCH_KEY_OK "-9"};
        aigw_client *c = bench_client_new(argv[2], keys, 10, "round-robin", "");
        aigw_request *req = bench_request_new(0);
        for (i = 0; i < n; i++)
            bench_aigw_send(c, req, 1);
        rss1 = bench_rss_kib(&anon1);
        aigw_request_free(req);
        aigw_client_free(c);
    } else {
        bench_raw r;
        curl_global_init(CURL_GLOBAL_ALL); /* as libaigw does */
        if (bench_raw_init(&r, url, BENCH_KEY_OK, 0) != 0)
            return 1;
        for (i = 0; i < n; i++)
            if (bench_raw_perform(&r) != 200)
                return 1;
        rss1 = bench_rss_kib(&anon1);
        bench_raw_cleanup(&r);
    }
    printf("%ld %ld\n", rss1 - rss0, anon1 - anon0);
    return 0;
}

int bench_child_main(int argc, char **argv)
{
    if (argc >= 1 && strcmp(argv[0], "ir") == 0)
        return child_ir(argc - 1, argv + 1);
    if (argc >= 1 && strcmp(argv[0], "rss") == 0)
        return child_rss(argc - 1, argv + 1);
    fprintf(stderr, "bench: unknown child mode\n");
    return 2;
}

/* ---- in the parent ---- */

/* Starts argv (at most 31 words) with stdout (and stderr, if err_too) to
 * out_fd. */
static pid_t spawn(const char *const argv[], int out_fd, int err_too)
{
    pid_t pid = fork();
    if (pid == 0) {
        char *v[32];
        int i;
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (out_fd >= 0) {
            dup2(out_fd, 1);
            if (err_too)
                dup2(out_fd, 2);
        }
        for (i = 0; i < 31 && argv[i]; i++)
            if ((v[i] = strdup(argv[i])) == NULL)
                _exit(127);
        v[i] = NULL;
        execvp(v[0], v);
        _exit(127);
    }
    return pid;
}

const char *bench_valgrind(void)
{
    static char path[512];
    const char *env = getenv("BENCH_CALLGRIND"), *p;
    if (env && strcmp(env, "0") == 0)
        return NULL;
    for (p = getenv("PATH"); p && *p;) {
        const char *e = strchr(p, ':');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        snprintf(path, sizeof path, "%.*s/valgrind", (int)n, p);
        if (n && access(path, X_OK) == 0)
            return path;
        p = e ? e + 1 : NULL;
    }
    return NULL;
}

/* The Ir total of a callgrind file ("totals:" or "summary:"); NAN. */
static double callgrind_total(const char *path)
{
    char line[512];
    double v = NAN;
    FILE *f = fopen(path, "r");
    if (!f)
        return NAN;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "totals:", 7) == 0)
            v = strtod(line + 7, NULL);
        else if (strncmp(line, "summary:", 8) == 0 && isnan(v))
            v = strtod(line + 8, NULL);
    }
    fclose(f);
    return v;
}

typedef struct job {
    bench_ir_case k;
    int n, rep;
    char out[320], log[320];
    pid_t pid;
    double ir;
} job;

static void job_start(job *j, const char *exe, const char *base_url, const char *redis_url,
                      int profile)
{
    const char *vg = bench_valgrind();
    char outopt[400], nstr[16];
    const char *argv[16];
    char togg[3][64];
    int a = 0, i, fd;
    snprintf(outopt, sizeof outopt, "--callgrind-out-file=%s", j->out);
    snprintf(nstr, sizeof nstr, "%d", j->n);
    argv[a++] = vg;
    argv[a++] = "--tool=callgrind";
    argv[a++] = outopt;
    if (profile)
        for (i = 0; toggles[j->k][i]; i++) {
            snprintf(togg[i], sizeof togg[i], "--toggle-collect=%s", toggles[j->k][i]);
            argv[a++] = togg[i];
        }
    argv[a++] = exe;
    argv[a++] = "--child";
    argv[a++] = "ir";
    argv[a++] = bench_ir_case_names[j->k];
    argv[a++] = nstr;
    argv[a++] = base_url;
    if (redis_url)
        argv[a++] = redis_url;
    argv[a] = NULL;
    fd = open(j->log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    j->pid = spawn(argv, fd, 1);
    if (fd >= 0)
        close(fd);
}

static void job_done(job *j, int status)
{
    j->ir = NAN;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        j->ir = callgrind_total(j->out);
    else
        fprintf(stderr, "bench: callgrind run of %s (n=%d) failed; see %s\n",
                bench_ir_case_names[j->k], j->n, j->log);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

void bench_ir_measure(const char *exe, const char *base_url, const char *redis_url,
                      const bench_ir_case *cases, size_t n, int n1, int n2, int reps,
                      int profile, const char *keep_dir, double *ir_out)
{
    char dir[256];
    job jobs[2 * BENCH_IR_N * BENCH_IR_REPS];
    size_t n_jobs = 0, next = 0, running = 0, i;
    int failed_any = 0;

    for (i = 0; i < n; i++)
        ir_out[i] = NAN;
    if (profile || reps < 1)
        reps = 1;
    if (reps > BENCH_IR_REPS)
        reps = BENCH_IR_REPS;
    if (!bench_valgrind() || n == 0 || n > BENCH_IR_N)
        return;
    if (keep_dir) {
        snprintf(dir, sizeof dir, "%s", keep_dir);
        mkdir(dir, 0755);
    } else {
        snprintf(dir, sizeof dir, "/tmp/aigw-bench-cg-XXXXXX");
        if (!mkdtemp(dir))
            return;
    }
    /* the repetitions last: a case's first pair comes early */
    for (int rep = 0; rep < reps; rep++)
        for (i = 0; i < n; i++) {
            int r, runs = profile ? 1 : 2;
            if (cases[i] == BENCH_IR_STORE_AIGW && !redis_url)
                continue;
            for (r = 0; r < runs; r++) {
                char tag[16];
                job *j = &jobs[n_jobs++];
                memset(j, 0, sizeof *j);
                j->k = cases[i];
                j->n = profile || r == 1 ? n2 : n1;
                j->rep = rep;
                /* CASE.N, and .REP when there are more (profile.py reads
                 * the profile's callgrind.profile.CASE.N.out) */
                tag[0] = '\0';
                if (reps > 1)
                    snprintf(tag, sizeof tag, ".%d", rep);
                snprintf(j->out, sizeof j->out, "%s/callgrind.%s%s.%d%s.out", dir,
                         profile ? "profile." : "", bench_ir_case_names[j->k], j->n, tag);
                snprintf(j->log, sizeof j->log, "%s/%s%s.%d%s.log", dir,
                         profile ? "profile." : "", bench_ir_case_names[j->k], j->n, tag);
                j->ir = NAN;
            }
        }
    /* two at a time */
    while (next < n_jobs || running > 0) {
        int status;
        pid_t pid;
        while (running < 2 && next < n_jobs) {
            job_start(&jobs[next++], exe, base_url, redis_url, profile);
            running++;
        }
        pid = waitpid(-1, &status, 0);
        if (pid < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        for (i = 0; i < next; i++)
            if (jobs[i].pid == pid) {
                job_done(&jobs[i], status);
                failed_any |= isnan(jobs[i].ir);
                jobs[i].pid = 0;
                running--;
            }
    }
    /* each repetition's (hi - lo) / (n2 - n1); their median */
    for (i = 0; i < n; i++) {
        double v[BENCH_IR_REPS], lo_v = INFINITY, hi_v = -INFINITY;
        int rep, nv = 0;
        for (rep = 0; rep < reps; rep++) {
            size_t a;
            double lo = NAN, hi = NAN;
            for (a = 0; a < n_jobs; a++) {
                if (jobs[a].k != cases[i] || jobs[a].rep != rep)
                    continue;
                if (jobs[a].n == n2)
                    hi = jobs[a].ir;
                else
                    lo = jobs[a].ir;
            }
            v[rep] = profile ? hi / (1 + IR_WARM + n2) /* everything inside the calls */
                             : (hi - lo) / (n2 - n1);
            if (isnan(v[rep])) {
                nv = 0;
                break;
            }
            lo_v = v[rep] < lo_v ? v[rep] : lo_v;
            hi_v = v[rep] > hi_v ? v[rep] : hi_v;
            nv++;
        }
        if (nv == 0)
            continue;
        ir_out[i] = bench_median(v, nv);
        if (nv > 1)
            fprintf(stderr, "bench: %s: %.0f Ir/request (the median of %d: %.0f to %.0f)\n",
                    bench_ir_case_names[cases[i]], ir_out[i], nv, lo_v, hi_v);
    }
    if (!keep_dir && !failed_any)
        nftw(dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
}

double bench_rss_growth(const char *exe, const char *base_url, int aigw, int n, double *anon_out)
{
    double kib[3], anon[3], t;
    char nstr[16];
    const char *argv[] = {exe, "--child", "rss", aigw ? "aigw" : "raw", nstr, base_url, NULL};
    int runs = 0, i, a, b;
    snprintf(nstr, sizeof nstr, "%d", n);
    *anon_out = NAN;
    for (i = 0; i < 3; i++) {
        int p[2], status;
        long k = 0, an = 0;
        char buf[128] = "";
        ssize_t got;
        pid_t pid;
        if (pipe(p) != 0)
            break;
        pid = spawn(argv, p[1], 0);
        close(p[1]);
        got = read(p[0], buf, sizeof buf - 1);
        close(p[0]);
        if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
            WEXITSTATUS(status) != 0 || got <= 0 || sscanf(buf, "%ld %ld", &k, &an) != 2)
            continue;
        kib[runs] = (double)k;
        anon[runs] = (double)an;
        runs++;
    }
    if (runs == 0)
        return NAN;
    /* the median (a tiny sort) */
    for (a = 0; a < runs; a++)
        for (b = a + 1; b < runs; b++) {
            if (kib[b] < kib[a]) {
                t = kib[a];
                kib[a] = kib[b];
                kib[b] = t;
            }
            if (anon[b] < anon[a]) {
                t = anon[a];
                anon[a] = anon[b];
                anon[b] = t;
            }
        }
    *anon_out = anon[runs / 2];
    return kib[runs / 2];
}
