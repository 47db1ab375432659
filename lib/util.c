/* util.c - clocks, randomness, ASCII case-insensitive compares, the UTF-8
 * validator, and where a JSON text went wrong. */
#define _GNU_SOURCE
#include "internal.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdatomic.h>
#include <pthread.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

int64_t aigw__mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void aigw__sleep_ms(int64_t ms)
{
    struct timespec ts;
    if (ms <= 0)
        return;
    ts.tv_sec = (time_t)(ms / 1000);
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

int64_t aigw__unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A fallback when getrandom() is unavailable: splitmix64 over time and a
 * counter.  Only used for request ids and jitter, never for secrets. */
static uint64_t fallback_next(void)
{
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    static uint64_t state;
    uint64_t z;
    pthread_mutex_lock(&mu);
    if (state == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        state = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20);
    }
    z = (state += 0x9e3779b97f4a7c15ULL);
    pthread_mutex_unlock(&mu);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Request ids and jitter need to be unpredictable across processes and
 * distinct, not secret: a per-thread generator seeded once from the kernel
 * saves a system call per request. */
static atomic_int fork_generation;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void after_fork_in_child(void)
{
    atomic_fetch_add(&fork_generation, 1);
}

static void register_atfork(void)
{
    pthread_atfork(NULL, NULL, after_fork_in_child);
}

void aigw__fast_random(void *out, size_t n)
{
    static _Thread_local uint64_t state;
    static _Thread_local int generation;
    unsigned char *p = out;
    pthread_once(&atfork_once, register_atfork);
    /* a forked child must not repeat its parent's request ids */
    if (generation != atomic_load(&fork_generation)) {
        generation = atomic_load(&fork_generation);
        state = 0;
    }
    while (state == 0)
        aigw__random_bytes(&state, sizeof state);
    while (n > 0) {
        uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
        size_t k = n < sizeof z ? n : sizeof z;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        z ^= z >> 31;
        memcpy(p, &z, k);
        p += k;
        n -= k;
    }
}

void aigw__random_bytes(void *out, size_t n)
{
    unsigned char *p = out;
    while (n > 0) {
        ssize_t r = getrandom(p, n, GRND_NONBLOCK);
        if (r > 0) {
            p += r;
            n -= (size_t)r;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        while (n > 0) {
            uint64_t v = fallback_next();
            size_t k = n < sizeof v ? n : sizeof v;
            memcpy(p, &v, k);
            p += k;
            n -= k;
        }
    }
}

int aigw__strncasecmp(const char *a, const char *b, size_t n)
{
    for (; n > 0; n--, a++, b++) {
        int d = aigw__lower((unsigned char)*a) - aigw__lower((unsigned char)*b);
        if (d != 0 || *a == '\0')
            return d;
    }
    return 0;
}

int aigw__strcasecmp(const char *a, const char *b)
{
    return aigw__strncasecmp(a, b, SIZE_MAX);
}

struct cJSON *aigw__json_parse(const char *s, size_t len, const char **end)
{
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    cJSON *root;
    pthread_mutex_lock(&mu);
    root = cJSON_ParseWithLengthOpts(s, len, end, 0);
    pthread_mutex_unlock(&mu);
    return root;
}

/* ---- UTF-8 ---- */

size_t aigw__utf8_seq(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    unsigned char lo = 0x80, hi = 0xBF; /* the second byte's range */
    size_t need, i;
    if (n == 0)
        return 0;
    if (u[0] < 0x80)
        return 1;
    if (u[0] < 0xC2) /* a continuation byte, or an overlong 2-byte form */
        return 0;
    if (u[0] < 0xE0) {
        need = 2;
    } else if (u[0] < 0xF0) {
        need = 3;
        if (u[0] == 0xE0)
            lo = 0xA0; /* overlong */
        else if (u[0] == 0xED)
            hi = 0x9F; /* a surrogate, U+D800..U+DFFF */
    } else if (u[0] < 0xF5) {
        need = 4;
        if (u[0] == 0xF0)
            lo = 0x90; /* overlong */
        else if (u[0] == 0xF4)
            hi = 0x8F; /* past U+10FFFF */
    } else {
        return 0;
    }
    if (n < need || u[1] < lo || u[1] > hi)
        return 0;
    for (i = 2; i < need; i++)
        if (u[i] < 0x80 || u[i] > 0xBF)
            return 0;
    return need;
}

size_t aigw__utf8_check(const char *s, size_t len)
{
    size_t i = 0, k;
    while (i < len) {
        if ((unsigned char)s[i] < 0x80) { /* the common case, byte by byte */
            i++;
            continue;
        }
        if ((k = aigw__utf8_seq(s + i, len - i)) == 0)
            return i;
        i += k;
    }
    return len;
}

size_t aigw__utf8_prefix(const char *s, size_t len, size_t max)
{
    if (len <= max)
        return len;
    /* s[max] starts the first character left out unless it continues one */
    while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80)
        max--;
    return max;
}

/* ---- JSON text ---- */

void aigw__text_pos(const char *s, size_t off, size_t *line, size_t *col)
{
    size_t i;
    *line = 1;
    *col = 1;
    for (i = 0; i < off; i++) {
        if (s[i] == '\n') {
            (*line)++;
            *col = 1;
        } else {
            (*col)++;
        }
    }
}

static bool hex4(const char *s)
{
    size_t k;
    for (k = 0; k < 4; k++)
        if (!((s[k] >= '0' && s[k] <= '9') || (s[k] >= 'a' && s[k] <= 'f') ||
              (s[k] >= 'A' && s[k] <= 'F')))
            return false;
    return true;
}

size_t aigw__json_misread(const char *s, size_t len, bool strict, bool *control)
{
    bool in_str = false;
    size_t i;
    *control = false;
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (strict && c < 0x20 && c != '\t' && c != '\n' && c != '\r') {
            *control = true;
            return i;
        }
        if (c == '"') {
            in_str = !in_str;
        } else if (in_str && c == '\\') {
            if (i + 1 < len && s[i + 1] == 'u') {
                if (i + 6 > len || !hex4(s + i + 2) ||
                    (strict && memcmp(s + i + 2, "0000", 4) == 0))
                    return i;
                i += 5;
            } else {
                i++;
            }
        }
    }
    return len;
}

bool aigw__json_too_deep(const char *s, size_t len, size_t off)
{
    size_t i, depth = 0;
    bool in_str = false;
    if (!s || off >= len || (s[off] != '[' && s[off] != '{'))
        return false;
    /* cJSON read everything before off, so this is JSON up to there:
     * brackets count outside strings only. */
    for (i = 0; i < off; i++) {
        char c = s[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == '[' || c == '{') {
            depth++;
        } else if ((c == ']' || c == '}') && depth > 0) {
            depth--;
        }
    }
    return !in_str && depth >= CJSON_NESTING_LIMIT;
}
