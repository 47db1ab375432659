/*
 * bench.h - what the parts of the overhead benchmark (build/tests/bench,
 * scripts/bench) share.  The benchmark measures libaigw against raw libcurl
 * doing the same requests to the same loopback upstream, which runs in a
 * process of its own (nginx, else the mock provider in a forked child), so
 * that every figure taken in the bench's process is the client's alone.
 *
 *   main.c      the cases, their interleaved rounds, the order of the run
 *   sides.c     the two sides: raw libcurl done right, and libaigw
 *   upstream.c  the loopback upstream: nginx, or the forked mock provider
 *   allocs.c    counting allocations (malloc, calloc, realloc) per thread,
 *               by the library that asked; RSS
 *   children.c  the measurements made in a fresh process: instruction
 *               counts under callgrind, RSS growth
 *   report.c    the table with ratios and targets, and the JSON file
 */
#ifndef AIGW_BENCH_H
#define AIGW_BENCH_H

#include <curl/curl.h>
#include <stddef.h>
#include <sys/types.h>

#include "aigw.h"

/* The upstream answers by the key presented (see upstream.c). */
#define BENCH_KEY_OK "sk-bench-ok"
#define BENCH_KEY_LIMITED "sk-bench-limited" /* 429, Retry-After: 30 */
#define BENCH_KEY_STREAM "sk-bench-stream"   /* a 200-event SSE answer */
/* Answered as BENCH_KEY_OK, but logged apart: the ok key of the failover
 * client, whose upstream requests the bench counts. */
#define BENCH_KEY_OK_COUNTED "sk-bench-ok-counted"
#define BENCH_STREAM_EVENTS 200

/* ---- allocs.c ---- */

/* Who asked for an allocation: the code its return address lies in. */
typedef enum bench_alloc_src {
    BENCH_ALLOC_AIGW = 0,
    BENCH_ALLOC_CURL,
    BENCH_ALLOC_CJSON,
    BENCH_ALLOC_OTHER, /* libc (strdup, ...), OpenSSL, hiredis, the bench */
    BENCH_ALLOC_N
} bench_alloc_src;

/* Allocations (malloc + calloc + realloc) made by the calling thread. */
typedef struct bench_allocs {
    long n[BENCH_ALLOC_N];
} bench_allocs;

extern const char *const bench_alloc_src_names[BENCH_ALLOC_N];
/* Finds the code of libaigw, libcurl and libcjson in memory and starts
 * counting (before it, nothing is counted).  Call it before any thread. */
void bench_allocs_init(void);
/* 0 when this build does not count (under a sanitizer): no figures. */
int bench_allocs_counting(void);
/* The calling thread's counts since it started. */
void bench_allocs_get(bench_allocs *out);
/* VmRSS of this process in KiB (-1 unknown); *anon_kib its RssAnon. */
long bench_rss_kib(long *anon_kib);

/* ---- upstream.c ---- */

typedef struct bench_upstream {
    char kind[96];      /* "nginx/1.22.1", "mock provider (forked process)" */
    char base_url[96];  /* http://127.0.0.1:PORT/v1 */
    char url[128];      /* base_url + /chat/completions */
    pid_t pid;
    int ctl_fd;         /* mock: closing it stops the child */
    char dir[64];       /* nginx: its scratch folder */
    char log_path[128]; /* nginx: one line per request; "" for the mock */
} bench_upstream;

/* Starts nginx (BENCH_NGINX, PATH, /usr/sbin/nginx) unless force_mock, else
 * the mock provider in a forked child.  Call it before any thread exists.
 * 0, or -1 with why filled in. */
int bench_upstream_start(bench_upstream *u, int force_mock, char *why, size_t why_size);
/* The requests the upstream has answered so far with BENCH_KEY_LIMITED or
 * BENCH_KEY_OK_COUNTED (nginx's access log); -1 when it cannot say (the
 * mock). */
long bench_upstream_requests(const bench_upstream *u);
void bench_upstream_stop(bench_upstream *u);
/* The streamed answer's body, as the upstream sends it. */
const char *bench_stream_body(size_t *len);

/* ---- sides.c ---- */

/* Raw libcurl done right: one easy handle, every option and the header
 * list set once, then only curl_easy_perform per request. */
typedef struct bench_raw {
    CURL *h;
    CURLU *uh; /* bench_raw_url_once's; NULL: none */
    struct curl_slist *hd;
    size_t got;          /* body bytes of the last answer */
    double first_byte_s; /* monotonic: the first body byte of the last one */
} bench_raw;

int bench_raw_init(bench_raw *r, const char *url, const char *key, int stream);
/* The proxy environment read once, as libaigw's transport reads it: with
 * none set (the bench unsets it), CURLOPT_NOPROXY "*", so that libcurl no
 * longer reads five variables on every transfer. */
void bench_raw_env_once(bench_raw *r);
/* The URL parsed once, as libaigw's transport parses it: CURLOPT_CURLU
 * beside CURLOPT_URL, so that libcurl copies the parsed URL on every
 * transfer instead of parsing the string. */
void bench_raw_url_once(bench_raw *r, const char *url);
/* One request; the HTTP status (0 on a transport failure).  Sets got and
 * first_byte_s. */
long bench_raw_perform(bench_raw *r);
/* keys[0..n) tried in turn until one answers 200 (naive failover). */
int bench_raw_failover(bench_raw *const *handles, size_t n);
void bench_raw_cleanup(bench_raw *r);

/* A client of base_url with the keys (values) given, in order, in one
 * `user` step; extra: more gatewayConfig members ("" none); strategy: the
 * step's keySelectionStrategy (NULL: ordered). */
aigw_client *bench_client_new(const char *base_url, const char *const *keys, size_t n_keys,
                              const char *strategy, const char *extra);
aigw_request *bench_request_new(int stream);
/* One request, which must be served with want_attempts upstream calls
 * (-1: any); exits on anything else.  Returns the attempts made. */
long bench_aigw_send(aigw_client *c, const aigw_request *req, long want_attempts);
/* One streamed request, which must be served; first_byte_s: when the first
 * byte reached the caller (monotonic). */
long bench_aigw_stream(aigw_client *c, const aigw_request *req, double *first_byte_s);

double bench_now_s(void);
double bench_cpu_s(void);

/* ---- children.c ---- */

/* The measurements run in a fresh process of this executable:
 *   --child ir CASE N BASE_URL [REDIS_URL]   (under callgrind)
 *   --child rss raw|aigw N BASE_URL          (prints "KIB ANON_KIB")
 * Returns the exit status. */
int bench_child_main(int argc, char **argv);
/* The instruction-count cases. */
typedef enum bench_ir_case {
    BENCH_IR_ONE_RAW = 0,
    BENCH_IR_ONE_AIGW,
    BENCH_IR_FAILOVER_AIGW, /* [429 key, ok key], the default memory */
    BENCH_IR_STREAM_RAW,
    BENCH_IR_STREAM_AIGW,
    BENCH_IR_STORE_AIGW, /* one key, with the Redis health store */
    BENCH_IR_ONE_RAW_ENV, /* one-raw, the proxy environment read once (see sides.c) */
    BENCH_IR_ONE_RAW_TUNED, /* one-raw-env, and the URL parsed once (CURLOPT_CURLU) */
    BENCH_IR_N
} bench_ir_case;
extern const char *const bench_ir_case_names[BENCH_IR_N];
/* valgrind's path, or NULL when it cannot be run (BENCH_CALLGRIND=0). */
const char *bench_valgrind(void);
#define BENCH_IR_REPS 5
/* The median of v[0..n) (the mean of the middle two when n is even); NAN
 * when n is 0 or more than BENCH_MEDIAN_MAX. */
#define BENCH_MEDIAN_MAX 64
double bench_median(const double *v, int n);
/* Instructions per request of each case in cases[0..n) (NAN when not
 * measured): (Ir(n2) - Ir(n1)) / (n2 - n1), each a callgrind run of the
 * whole client process, two runs at a time; with reps > 1 (at most
 * BENCH_IR_REPS) the median of that many such pairs (libcurl's loop turns
 * as many more times as it finds the answer not there yet: a run's figure
 * moves by up to ~1% with the timing).  keep_dir: where the callgrind
 * files go (NULL: a scratch folder, removed).  With profile, instead, one
 * run per case at n2 collecting only inside the per-request calls
 * (--toggle-collect), its file kept in keep_dir for callgrind_annotate;
 * the result is then Ir per request inside those calls. */
void bench_ir_measure(const char *exe, const char *base_url, const char *redis_url,
                      const bench_ir_case *cases, size_t n, int n1, int n2, int reps,
                      int profile, const char *keep_dir, double *ir_out);
/* RSS growth (KiB) of a fresh process doing n requests: raw libcurl, or a
 * libaigw client of 10 keys (NAN when it failed). */
double bench_rss_growth(const char *exe, const char *base_url, int aigw, int n,
                        double *anon_out);

/* ---- report.c ---- */

typedef enum bench_target {
    BENCH_T_NONE = 0,
    BENCH_T_RATIO_LE, /* lib / base <= limit */
    BENCH_T_RATIO_GE, /* lib / base >= limit */
    BENCH_T_LIB_LE,   /* lib <= limit */
    BENCH_T_DIFF_LE   /* lib - base <= limit */
} bench_target;

/* A section heading: its rows compare "base" with libaigw. */
void bench_section(const char *id, const char *title, const char *base_name);
/* One row of the current section: base and lib (NAN: none), their ratio,
 * a target on them, and a note. */
void bench_row(const char *id, const char *label, const char *unit, double base, double lib,
               bench_target target, double limit, const char *note);
/* bench_row whose ratio is given rather than lib / base: the median of
 * per-round ratios, each of two runs next to each other in time. */
void bench_row_paired(const char *id, const char *label, const char *unit, double base,
                      double lib, double paired, bench_target target, double limit,
                      const char *note);
void bench_meta(const char *key, const char *value);
void bench_meta_num(const char *key, double value);
/* Prints the table (rows as measured, then the targets) to stdout. */
void bench_report_print(void);
/* Writes the JSON file; 0 or -1. */
int bench_report_json(const char *path);

#endif
