/*
 * allocs.c - every malloc, calloc and realloc of the process, counted per
 * thread and by the library that asked, and the process's RSS.
 *
 * The bench executable defines malloc, calloc, realloc and free itself; the
 * dynamic linker then binds every library's calls (libaigw's allocator
 * door, libcurl's Curl_cmalloc, cJSON's hooks, libc's own strdup) to these,
 * which count and hand over to glibc's __libc_malloc and friends.  This
 * sees all three libraries at once without their cooperation, so both
 * sides are counted the same way (curl_global_init_mem would see libcurl
 * only, and libaigw calls curl_global_init itself).  The counters are
 * thread-local: a count taken around a run of requests on one thread holds
 * that thread's requests and nothing else.  Who asked is the return
 * address: inside libaigw's code, libcurl's, libcjson's, or elsewhere
 * ("other": libc's strdup on a library's behalf, OpenSSL, the bench).  A
 * tail call can move a count to the caller's library; calls through glibc's
 * own internal paths (reallocarray, posix_memalign) are not seen.  The
 * processes started to count instructions (children.c) do not count
 * allocations, so that the counting adds next to nothing to what callgrind
 * sees.
 */
#define _GNU_SOURCE /* dl_iterate_phdr */
#include "bench.h"

#include <link.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef BENCH_NO_ALLOC_COUNT
extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t count, size_t n);
extern void *__libc_realloc(void *p, size_t n);
extern void __libc_free(void *p);
#endif

const char *const bench_alloc_src_names[BENCH_ALLOC_N] = {"libaigw", "libcurl", "cJSON",
                                                         "other"};

/* The executable code of each library (one range each: its PT_LOAD
 * segment with PF_X). */
static struct {
    uintptr_t lo, hi;
} code[BENCH_ALLOC_OTHER];

static _Thread_local bench_allocs counts;
static int enabled; /* set once, before any thread */

int bench_allocs_counting(void)
{
#ifdef BENCH_NO_ALLOC_COUNT
    return 0;
#else
    return 1;
#endif
}

/* Under a sanitizer, whose runtime owns malloc, nothing is counted. */
#ifndef BENCH_NO_ALLOC_COUNT
static bench_alloc_src who(uintptr_t ra)
{
    int i;
    for (i = 0; i < BENCH_ALLOC_OTHER; i++)
        if (ra >= code[i].lo && ra < code[i].hi)
            return (bench_alloc_src)i;
    return BENCH_ALLOC_OTHER;
}

/* Only after bench_allocs_init: the fresh processes that callgrind counts
 * instructions in then pay a test and a jump per allocation, no more. */
#define COUNT()                                                                                   \
    do {                                                                                          \
        if (enabled)                                                                              \
            counts.n[who((uintptr_t)__builtin_return_address(0))]++;                              \
    } while (0)

__attribute__((visibility("default"))) void *malloc(size_t n)
{
    COUNT();
    return __libc_malloc(n);
}

__attribute__((visibility("default"))) void *calloc(size_t count, size_t n)
{
    COUNT();
    return __libc_calloc(count, n);
}

__attribute__((visibility("default"))) void *realloc(void *p, size_t n)
{
    COUNT();
    return __libc_realloc(p, n);
}

__attribute__((visibility("default"))) void free(void *p)
{
    __libc_free(p);
}

#endif

static int find_code(struct dl_phdr_info *info, size_t size, void *ud)
{
    static const char *const names[BENCH_ALLOC_OTHER] = {"/libaigw.so", "/libcurl",
                                                         "/libcjson.so"};
    int i, k;
    (void)size;
    (void)ud;
    if (!info->dlpi_name)
        return 0;
    for (i = 0; i < BENCH_ALLOC_OTHER; i++) {
        if (!strstr(info->dlpi_name, names[i]))
            continue;
        for (k = 0; k < info->dlpi_phnum; k++) {
            const ElfW(Phdr) *ph = &info->dlpi_phdr[k];
            if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X)) {
                code[i].lo = info->dlpi_addr + ph->p_vaddr;
                code[i].hi = code[i].lo + ph->p_memsz;
            }
        }
    }
    return 0;
}

void bench_allocs_init(void)
{
    dl_iterate_phdr(find_code, NULL);
    enabled = 1;
}

void bench_allocs_get(bench_allocs *out)
{
    *out = counts;
}

long bench_rss_kib(long *anon_kib)
{
    char line[256];
    long rss = -1;
    FILE *f = fopen("/proc/self/status", "r");
    if (anon_kib)
        *anon_kib = -1;
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "VmRSS:", 6) == 0)
            rss = strtol(line + 6, NULL, 10);
        else if (anon_kib && strncmp(line, "RssAnon:", 8) == 0)
            *anon_kib = strtol(line + 8, NULL, 10);
    }
    fclose(f);
    return rss;
}
