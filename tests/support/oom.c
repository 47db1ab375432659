/*
 * oom.c - allocation failures on demand in cJSON and libcurl (oom.h): a
 * gate per library that counts its allocations and fails the chosen ones.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "internal.h"
#include "oom.h"

struct oom_gate {
    atomic_long count;    /* allocations so far */
    atomic_long fail_at;  /* the allocation number that fails; 0 none */
    atomic_bool sticky;   /* and every one after it */
    atomic_long failures; /* made to fail since armed */
};

oom_gate OOM_CJSON;
oom_gate OOM_CURL;

static void arm(oom_gate *g, long k, bool sticky)
{
    atomic_store(&g->fail_at, 0);
    atomic_store(&g->failures, 0);
    atomic_store(&g->sticky, sticky);
    if (k > 0)
        atomic_store(&g->fail_at, atomic_load(&g->count) + k);
}

void oom_fail_at(oom_gate *g, long k)
{
    arm(g, k, false);
}

void oom_fail_from(oom_gate *g, long k)
{
    arm(g, k, true);
}

long oom_count(const oom_gate *g)
{
    return atomic_load(&g->count);
}

long oom_failures(const oom_gate *g)
{
    return atomic_load(&g->failures);
}

/* Counts one allocation: whether it is to fail. */
static bool refuse(oom_gate *g)
{
    long n = atomic_fetch_add(&g->count, 1) + 1, f = atomic_load(&g->fail_at);
    if (f == 0 || n < f || (n > f && !atomic_load(&g->sticky)))
        return false;
    atomic_fetch_add(&g->failures, 1);
    return true;
}

/* ---- cJSON ---- */

static void *cjson_malloc(size_t n)
{
    return refuse(&OOM_CJSON) ? NULL : malloc(n);
}

void oom_cjson_hooks(oom_cjson_mode mode)
{
    cJSON_Hooks h;
    memset(&h, 0, sizeof h);
    if (mode == OOM_CJSON_MALLOC) {
        cJSON_InitHooks(NULL);
        return;
    }
    h.malloc_fn = mode == OOM_CJSON_GATE ? cjson_malloc : aigw__malloc;
    h.free_fn = mode == OOM_CJSON_GATE ? free : aigw__free;
    cJSON_InitHooks(&h);
}

/* ---- libcurl ---- */

static void *curl_malloc_cb(size_t n)
{
    return refuse(&OOM_CURL) ? NULL : malloc(n);
}

static void *curl_calloc_cb(size_t count, size_t n)
{
    return refuse(&OOM_CURL) ? NULL : calloc(count, n);
}

static void *curl_realloc_cb(void *p, size_t n)
{
    return refuse(&OOM_CURL) ? NULL : realloc(p, n);
}

static char *curl_strdup_cb(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = refuse(&OOM_CURL) ? NULL : malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

int oom_curl_init(void)
{
    return curl_global_init_mem(CURL_GLOBAL_ALL, curl_malloc_cb, free, curl_realloc_cb,
                                curl_strdup_cb, curl_calloc_cb) == CURLE_OK
               ? 0
               : -1;
}
