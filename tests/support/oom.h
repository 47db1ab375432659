/*
 * oom.h - allocation failures on demand in the libraries under libaigw, for
 * tests of what running out of memory does: cJSON, whose hooks libaigw
 * never sets (they are process-wide: the host's), so a test program may;
 * and libcurl, through curl_global_init_mem before the library's first use.
 * Each library's allocations pass a gate that counts them and makes the
 * k-th one fail, once or from it on, as aigw__alloc_fail_at / _from do for
 * libaigw's own; cJSON's may instead go through libaigw's allocator door,
 * so that one count and one failure point cover both.  Thread-safe
 * (libcurl may allocate on any thread that runs a transfer).
 */
#ifndef AIGW_TEST_OOM_H
#define AIGW_TEST_OOM_H

#include <stdbool.h>

typedef struct oom_gate oom_gate;
extern oom_gate OOM_CJSON; /* cJSON's allocations, under OOM_CJSON_GATE */
extern oom_gate OOM_CURL;  /* libcurl's, after oom_curl_init */

/* The k-th allocation through g from now fails (k >= 1; 0 disarms), or
 * (fail_from) it and every one after it until disarmed. */
void oom_fail_at(oom_gate *g, long k);
void oom_fail_from(oom_gate *g, long k);
/* Allocations through g since the program started, and those made to fail
 * since the last oom_fail_at / oom_fail_from. */
long oom_count(const oom_gate *g);
long oom_failures(const oom_gate *g);

typedef enum oom_cjson_mode {
    OOM_CJSON_MALLOC = 0, /* cJSON's defaults (malloc, free) */
    OOM_CJSON_GATE,       /* through OOM_CJSON */
    OOM_CJSON_AIGW        /* through aigw__malloc / aigw__free: counted and
                             failed with libaigw's own allocations */
} oom_cjson_mode;
/* Sets cJSON's hooks.  Every cJSON tree must be freed under the hooks it
 * was made with (all of them end in malloc and free, so any of them does). */
void oom_cjson_hooks(oom_cjson_mode mode);

/* Routes libcurl's allocations through OOM_CURL (curl_global_init_mem):
 * only before anything in the process has initialised libcurl, so first
 * thing in main.  0, or -1 when libcurl would not take the allocators. */
int oom_curl_init(void);

#endif
