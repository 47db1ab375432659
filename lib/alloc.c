/* alloc.c - the one allocator door.  Every allocation in lib/ passes here, so
 * tests can count allocations and make the n-th one fail, once or from it
 * on (the torture tests, tests/test_torture.c).
 *
 * The counter and the failure hook exist only in builds with
 * AIGW_ALLOC_HOOKS (lib/meson.build: buildtypes with debug info on, which
 * the test suites use).  Elsewhere - release builds - they are compiled
 * out: an atomic counter bumped by every allocation of every thread is a
 * cache line all threads fight over.  There the hooks keep their names
 * (the test programs still link) but count nothing and fail nothing. */
#define _DEFAULT_SOURCE /* explicit_bzero */
#include "internal.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#ifdef AIGW_ALLOC_HOOKS

static atomic_long alloc_count;
static atomic_long fail_at;    /* allocation number that fails; 0 = never */
static atomic_bool fail_on;    /* and every one after it ("from k on") */
static atomic_long fail_count; /* allocations made to fail since armed */

static void arm(long n, bool sticky)
{
    atomic_store(&fail_at, 0);
    atomic_store(&fail_count, 0);
    atomic_store(&fail_on, sticky);
    if (n > 0)
        atomic_store(&fail_at, atomic_load(&alloc_count) + n);
}

void aigw__alloc_fail_at(long n)
{
    arm(n, false);
}

void aigw__alloc_fail_from(long n)
{
    arm(n, true);
}

long aigw__alloc_count(void)
{
    return atomic_load(&alloc_count);
}

long aigw__alloc_failures(void)
{
    return atomic_load(&fail_count);
}

static bool should_fail(void)
{
    long n = atomic_fetch_add(&alloc_count, 1) + 1;
    long f = atomic_load(&fail_at);
    if (f == 0 || n < f || (n > f && !atomic_load(&fail_on)))
        return false;
    atomic_fetch_add(&fail_count, 1);
    return true;
}

#else /* !AIGW_ALLOC_HOOKS */

void aigw__alloc_fail_at(long n)
{
    (void)n;
}

void aigw__alloc_fail_from(long n)
{
    (void)n;
}

long aigw__alloc_count(void)
{
    return 0;
}

long aigw__alloc_failures(void)
{
    return 0;
}

static inline bool should_fail(void)
{
    return false;
}

#endif /* AIGW_ALLOC_HOOKS */

void *aigw__malloc(size_t n)
{
    if (should_fail())
        return NULL;
    return malloc(n ? n : 1);
}

void *aigw__calloc(size_t count, size_t n)
{
    if (should_fail())
        return NULL;
    if (count == 0 || n == 0)
        count = n = 1;
    return calloc(count, n);
}

void *aigw__realloc(void *p, size_t n)
{
    if (should_fail())
        return NULL;
    return realloc(p, n ? n : 1);
}

void aigw__free(void *p)
{
    free(p);
}

char *aigw__strndup(const char *s, size_t n)
{
    char *d;
    if (!s)
        return NULL;
    d = aigw__malloc(n + 1);
    if (!d)
        return NULL;
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *aigw__strdup(const char *s)
{
    return s ? aigw__strndup(s, strlen(s)) : NULL;
}

void aigw__wipe(void *p, size_t n)
{
    if (!p)
        return;
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 25))
    explicit_bzero(p, n);
#else
    {
        /* A volatile pointer keeps the stores from being optimised away. */
        volatile unsigned char *v = p;
        while (n--)
            *v++ = 0;
    }
#endif
}
