/*
 * sides.c - the two sides of every comparison, sending the same bytes.
 *
 * Raw libcurl is what a careful caller writes by hand: one easy handle per
 * thread, every option and the header list set once, then nothing but
 * curl_easy_perform per request (and curl_easy_getinfo for the status).  It
 * sends the headers libaigw sends (content-type, user-agent, the key, the
 * empty Expect: and Accept: that stop libcurl adding its own; for a stream
 * accept: text/event-stream instead) and the body libaigw sends upstream
 * (the caller's, with "bench:m1" rewritten to the provider's "m1"), with
 * libaigw's default timeouts, NOSIGNAL and TCP_NODELAY.  libaigw's side
 * makes its request object once and sends it again and again, as a host
 * would.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* What the caller gives libaigw, and what libaigw sends upstream. */
#define MESSAGES "\"messages\":[{\"role\":\"user\",\"content\":\"Say hello in one short sentence.\"}]"
static const char LIB_BODY[] = "{\"model\":\"bench:m1\"," MESSAGES "}";
static const char LIB_STREAM_BODY[] = "{\"model\":\"bench:m1\"," MESSAGES ",\"stream\":true}";
static const char RAW_BODY[] = "{\"model\":\"m1\"," MESSAGES "}";
static const char RAW_STREAM_BODY[] = "{\"model\":\"m1\"," MESSAGES ",\"stream\":true}";

double bench_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The process's CPU: the client's alone, the upstream being elsewhere. */
double bench_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
    fprintf(stderr, "bench: %s\n", what);
    exit(1);
}

/* ---- raw libcurl ---- */

static size_t raw_sink(char *p, size_t sz, size_t n, void *ud)
{
    bench_raw *r = ud;
    (void)p;
    if (r->got == 0)
        r->first_byte_s = bench_now_s();
    r->got += sz * n;
    return sz * n;
}

static int add(struct curl_slist **l, const char *line)
{
    struct curl_slist *n = curl_slist_append(*l, line);
    if (!n)
        return -1;
    *l = n;
    return 0;
}

int bench_raw_init(bench_raw *r, const char *url, const char *key, int stream)
{
    char auth[128];
    int rc = 0;
    memset(r, 0, sizeof *r);
    snprintf(auth, sizeof auth, "authorization: Bearer %s", key);
    rc |= add(&r->hd, "content-type: application/json");
    rc |= add(&r->hd, "user-agent: libaigw/" AIGW_VERSION_STRING);
    if (stream)
        rc |= add(&r->hd, "accept: text/event-stream");
    rc |= add(&r->hd, auth);
    rc |= add(&r->hd, "Expect:");
    if (!stream)
        rc |= add(&r->hd, "Accept:");
    r->h = curl_easy_init();
    if (rc || !r->h)
        return -1;
    curl_easy_setopt(r->h, CURLOPT_URL, url);
    curl_easy_setopt(r->h, CURLOPT_HTTPHEADER, r->hd);
    curl_easy_setopt(r->h, CURLOPT_POSTFIELDS, stream ? RAW_STREAM_BODY : RAW_BODY);
    curl_easy_setopt(r->h, CURLOPT_POSTFIELDSIZE,
                     (long)strlen(stream ? RAW_STREAM_BODY : RAW_BODY));
    curl_easy_setopt(r->h, CURLOPT_WRITEFUNCTION, raw_sink);
    curl_easy_setopt(r->h, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(r->h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(r->h, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(r->h, CURLOPT_TIMEOUT_MS, 60000L);        /* perRequestTimeout */
    curl_easy_setopt(r->h, CURLOPT_CONNECTTIMEOUT_MS, 10000L); /* connectTimeout */
    return 0;
}

void bench_raw_env_once(bench_raw *r)
{
    curl_easy_setopt(r->h, CURLOPT_NOPROXY, "*");
}

void bench_raw_url_once(bench_raw *r, const char *url)
{
    r->uh = curl_url();
    if (r->uh && curl_url_set(r->uh, CURLUPART_URL, url,
                              CURLU_GUESS_SCHEME | CURLU_NON_SUPPORT_SCHEME) == CURLUE_OK)
        curl_easy_setopt(r->h, CURLOPT_CURLU, r->uh);
}

long bench_raw_perform(bench_raw *r)
{
    long status = 0;
    r->got = 0;
    r->first_byte_s = 0;
    if (curl_easy_perform(r->h) != CURLE_OK)
        return 0;
    curl_easy_getinfo(r->h, CURLINFO_RESPONSE_CODE, &status);
    return status;
}

int bench_raw_failover(bench_raw *const *handles, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        if (bench_raw_perform(handles[i]) == 200)
            return 0;
    return -1;
}

void bench_raw_cleanup(bench_raw *r)
{
    if (r->h)
        curl_easy_cleanup(r->h);
    if (r->uh)
        curl_url_cleanup(r->uh);
    curl_slist_free_all(r->hd);
    memset(r, 0, sizeof *r);
}

/* ---- libaigw ---- */

aigw_client *bench_client_new(const char *base_url, const char *const *keys, size_t n_keys,
                              const char *strategy, const char *extra)
{
    char json[4096], part[256], strat[96] = "";
    size_t i, len = 0;
    aigw_config *cfg = NULL;
    aigw_client *c = NULL;
    aigw_error *err = NULL;

#define PUT(...) (len += (size_t)snprintf(json + len, len < sizeof json ? sizeof json - len : 0, __VA_ARGS__))
    PUT("{\"providers\":[{\"providerId\":\"bench\",\"name\":\"Bench\",\"baseUrl\":\"%s\"}],"
        "\"providerKeys\":[",
        base_url);
    for (i = 0; i < n_keys; i++)
        PUT("%s{\"id\":\"k%zu\",\"providerId\":\"bench\",\"value\":\"%s\"}", i ? "," : "", i,
            keys[i]);
    if (strategy)
        snprintf(strat, sizeof strat, "\"keySelectionStrategy\":\"%s\",", strategy);
    PUT("],\"accessKeyConfiguration\":{\"name\":\"bench\",\"router\":{\"rules\":[{\"provider\":"
        "\"bench\",\"steps\":[{\"type\":\"user\",%s\"keys\":[",
        strat);
    for (i = 0; i < n_keys; i++) {
        snprintf(part, sizeof part, "%s{\"id\":\"k%zu\"}", i ? "," : "", i);
        PUT("%s", part);
    }
    PUT("]}]}]}},\"gatewayConfig\":{%s}}", extra ? extra : "");
#undef PUT
    if (len >= sizeof json)
        die("gateway file too long");
    if (aigw_config_parse(json, len, &cfg, &err) != AIGW_OK ||
        aigw_client_new(cfg, &c, &err) != AIGW_OK) {
        fprintf(stderr, "bench: %s\n", aigw_error_message(err));
        exit(1);
    }
    aigw_config_unref(cfg);
    return c;
}

aigw_request *bench_request_new(int stream)
{
    aigw_request *req = NULL;
    const char *body = stream ? LIB_STREAM_BODY : LIB_BODY;
    if (aigw_request_new(&req) != AIGW_OK || aigw_request_set_body(req, body, strlen(body)) != AIGW_OK)
        die("cannot make a request");
    return req;
}

long bench_aigw_send(aigw_client *c, const aigw_request *req, long want_attempts)
{
    aigw_response *resp = NULL;
    long attempts;
    if (aigw_client_send(c, req, &resp, NULL) != AIGW_OK || aigw_response_status(resp) != 200) {
        fprintf(stderr, "bench: libaigw request failed (status %d)\n",
                resp ? aigw_response_status(resp) : 0);
        exit(1);
    }
    attempts = (long)aigw_response_attempt_count(resp);
    if (want_attempts >= 0 && attempts != want_attempts) {
        fprintf(stderr, "bench: libaigw made %ld attempts, %ld expected\n", attempts,
                want_attempts);
        exit(1);
    }
    aigw_response_free(resp);
    return attempts;
}

typedef struct stream_seen {
    size_t got;
    double first_byte_s;
} stream_seen;

static int on_data(void *ud, const char *data, size_t len)
{
    stream_seen *s = ud;
    (void)data;
    if (s->got == 0)
        s->first_byte_s = bench_now_s();
    s->got += len;
    return 0;
}

long bench_aigw_stream(aigw_client *c, const aigw_request *req, double *first_byte_s)
{
    static const aigw_stream_handler handler = {AIGW_STREAM_VERSION, NULL, on_data, NULL, NULL};
    stream_seen seen = {0, 0};
    aigw_response *resp = NULL;
    size_t want;
    long attempts;
    bench_stream_body(&want);
    if (aigw_client_stream(c, req, &handler, &seen, &resp, NULL) != AIGW_OK ||
        aigw_response_outcome(resp) != AIGW_OUTCOME_SERVED || seen.got != want) {
        fprintf(stderr, "bench: libaigw stream failed (outcome %s, %zu of %zu bytes)\n",
                resp ? aigw_outcome_name(aigw_response_outcome(resp)) : "none", seen.got, want);
        exit(1);
    }
    attempts = (long)aigw_response_attempt_count(resp);
    aigw_response_free(resp);
    *first_byte_s = seen.first_byte_s;
    return attempts;
}
