/* util.c - clocks, randomness, ASCII case-insensitive compares, the UTF-8
 * validator, and where a JSON text went wrong (aigw__json_check: what
 * cJSON would say of a text, found without allocating). */
#define _GNU_SOURCE
#include "internal.h"
#include "slots.h"

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

/* A thread's generator: one thread-local block, so one look-up. */
typedef struct rand_state {
    uint64_t state;
    int generation;
} rand_state;

void aigw__fast_random(void *out, size_t n)
{
    static _Thread_local rand_state t AIGW__TLS_FAST;
    rand_state *ts = &t;
    unsigned char *p = out;
    uint64_t st; /* the thread's state, in a register while it runs */
    int gen;
    pthread_once(&atfork_once, register_atfork);
    /* a forked child must not repeat its parent's request ids */
    gen = atomic_load(&fork_generation);
    if (ts->generation != gen) {
        ts->generation = gen;
        ts->state = 0;
    }
    st = ts->state;
    while (st == 0)
        aigw__random_bytes(&st, sizeof st);
    while (n > 0) {
        uint64_t z = (st += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        z ^= z >> 31;
        if (n < sizeof z) { /* the last few bytes */
            memcpy(p, &z, n);
            break;
        }
        memcpy(p, &z, sizeof z); /* a whole word: no call */
        p += sizeof z;
        n -= sizeof z;
    }
    ts->state = st;
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
        unsigned char x = (unsigned char)*a, y = (unsigned char)*b;
        int d;
        if (x == y) { /* most bytes: no case to fold */
            if (x == '\0')
                return 0;
            continue;
        }
        d = aigw__lower(x) - aigw__lower(y);
        if (d != 0)
            return d; /* else two letters, one capital: neither ends a string */
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

/* ---- what cJSON would make of a text, without allocating ---- */

/* cJSON 1.7.15 (with Debian's fixes) step by step, offsets included: its
 * whitespace is any byte up to 0x20, and a skip that runs to the end of the
 * text stops on the last byte. */
static size_t cj_ws(const char *s, size_t len, size_t i)
{
    if (i >= len)
        return i;
    while (i < len && (unsigned char)s[i] <= 32)
        i++;
    return i == len ? i - 1 : i;
}

static unsigned cj_hex4(const char *s)
{
    unsigned h = 0;
    size_t k;
    for (k = 0; k < 4; k++) {
        int d = s[k] >= '0' && s[k] <= '9'   ? s[k] - '0'
                : s[k] >= 'a' && s[k] <= 'f' ? s[k] - 'a' + 10
                : s[k] >= 'A' && s[k] <= 'F' ? s[k] - 'A' + 10
                                             : -1;
        if (d < 0)
            return 0; /* cJSON reads any non-hex escape as U+0000 */
        h = h * 16 + (unsigned)d;
    }
    return h;
}

/* The length of the \u escape at s[q] within a string ending at end (its
 * closing quote): 6, 12 for a surrogate pair, 0 when cJSON refuses it. */
static size_t cj_u_escape(const char *s, size_t q, size_t end)
{
    unsigned first, second;
    if (end - q < 6)
        return 0;
    first = cj_hex4(s + q + 2);
    if (first >= 0xDC00 && first <= 0xDFFF)
        return 0;
    if (first < 0xD800 || first > 0xDBFF)
        return 6;
    if (end - (q + 6) < 6 || s[q + 6] != '\\' || s[q + 7] != 'u')
        return 0;
    second = cj_hex4(s + q + 8);
    return second >= 0xDC00 && second <= 0xDFFF ? 12 : 0;
}

/* The string whose quote is at s[i]: true and *i past it, or false and
 * *i where cJSON stops (just past the quote when it has no end, else at
 * the bad escape).  Like cJSON: its end first, then its escapes. */
static bool cj_string(const char *s, size_t len, size_t *i)
{
    size_t start = *i + 1, end = start, q;
    while (end < len && s[end] != '"') {
        if (s[end] == '\\' && ++end >= len)
            break;
        end++;
    }
    if (end >= len) {
        *i = start;
        return false;
    }
    for (q = start; q < end;) {
        size_t n = 2;
        if (s[q] != '\\') {
            q++;
            continue;
        }
        if (s[q + 1] == 'u')
            n = cj_u_escape(s, q, end);
        else if (!strchr("bfnrt\"\\/", s[q + 1]) || s[q + 1] == '\0')
            n = 0;
        if (n == 0) {
            *i = q;
            return false;
        }
        q += n;
    }
    *i = end + 1;
    return true;
}

static size_t cj_digits(const char *s, size_t len, size_t i)
{
    while (i < len && aigw__is_digit((unsigned char)s[i]))
        i++;
    return i;
}

/* The number at s[i] ('-' or a digit): what strtod takes of the run of
 * number characters there, however long (Debian's 1.7.15 copies the whole
 * run: the fix for CVE-2023-26819); false (cJSON's offset unmoved) when
 * strtod takes nothing. */
static bool cj_number(const char *s, size_t len, size_t *i)
{
    size_t j = *i, d;
    if (s[j] == '-')
        j++;
    d = cj_digits(s, len, j);
    if (d < len && s[d] == '.') {
        size_t f = cj_digits(s, len, d + 1);
        if (f == d + 1 && d == j) /* "-." : no digit either side */
            return false;
        d = f;
    } else if (d == j) {
        return false;
    }
    j = d;
    if (j < len && (s[j] == 'e' || s[j] == 'E')) {
        size_t k = j + 1;
        if (k < len && (s[k] == '+' || s[k] == '-'))
            k++;
        if (cj_digits(s, len, k) > k)
            j = cj_digits(s, len, k);
    }
    *i = j;
    return true;
}

static bool cj_word(const char *s, size_t len, size_t i, const char *w)
{
    size_t n = strlen(w);
    return len - i >= n && memcmp(s + i, w, n) == 0;
}

/* One scalar at s[*i]: true and *i past it; false, *i where cJSON stops. */
static bool cj_scalar(const char *s, size_t len, size_t *i)
{
    if (cj_word(s, len, *i, "null") || cj_word(s, len, *i, "true")) {
        *i += 4;
        return true;
    }
    if (cj_word(s, len, *i, "false")) {
        *i += 5;
        return true;
    }
    if (*i < len && s[*i] == '"')
        return cj_string(s, len, i);
    if (*i < len && (s[*i] == '-' || aigw__is_digit((unsigned char)s[*i])))
        return cj_number(s, len, i);
    return false;
}

/* The scan: where it is, and the open containers (a bit per level, set for
 * an object).  No recursion and no allocation, so it answers when memory
 * has run out and whatever the nesting. */
typedef struct cj_scan {
    const char *s;
    size_t len, i, depth;
    unsigned char obj[(CJSON_NESTING_LIMIT + 7) / 8];
} cj_scan;

typedef enum cj_next { CJ_VALUE, CJ_AFTER, CJ_MEMBER, CJ_DONE, CJ_SYNTAX, CJ_DEEP } cj_next;

static bool cj_in_object(const cj_scan *c)
{
    size_t d = c->depth - 1;
    return c->depth > 0 && ((c->obj[d / 8] >> (d % 8)) & 1u);
}

/* A value: a scalar, or a container that opens (its first member next, or
 * closed at once). */
static cj_next cj_value(cj_scan *c)
{
    const char *s = c->s;
    size_t d = c->depth;
    bool object;
    if (c->i >= c->len || (s[c->i] != '[' && s[c->i] != '{'))
        return cj_scalar(s, c->len, &c->i) ? CJ_AFTER : CJ_SYNTAX;
    if (d >= CJSON_NESTING_LIMIT)
        return CJ_DEEP; /* at the bracket one level too deep */
    object = s[c->i] == '{';
    if (object)
        c->obj[d / 8] |= (unsigned char)(1u << (d % 8));
    else
        c->obj[d / 8] &= (unsigned char)~(1u << (d % 8));
    c->depth++;
    c->i = cj_ws(s, c->len, c->i + 1);
    if (c->i < c->len && s[c->i] == (object ? '}' : ']')) {
        c->depth--;
        c->i++;
        return CJ_AFTER;
    }
    if (c->i >= c->len) { /* the bracket was the last byte */
        c->i--;
        return CJ_SYNTAX;
    }
    return CJ_MEMBER;
}

/* After a value: the end of the text's value, the next member, or the
 * close of its container. */
static cj_next cj_after(cj_scan *c)
{
    char close;
    if (c->depth == 0)
        return CJ_DONE;
    close = cj_in_object(c) ? '}' : ']';
    c->i = cj_ws(c->s, c->len, c->i);
    if (c->i < c->len && c->s[c->i] == ',') {
        c->i = cj_ws(c->s, c->len, c->i + 1);
        return CJ_MEMBER;
    }
    if (c->i >= c->len || c->s[c->i] != close)
        return CJ_SYNTAX;
    c->depth--;
    c->i++;
    return CJ_AFTER;
}

/* A member: an array's value, or an object's "name": value. */
static cj_next cj_member(cj_scan *c)
{
    if (!cj_in_object(c))
        return CJ_VALUE;
    if (c->i >= c->len || c->s[c->i] != '"') {
        c->i++; /* cJSON's string parser stops past the byte it refused */
        return CJ_SYNTAX;
    }
    if (!cj_string(c->s, c->len, &c->i))
        return CJ_SYNTAX;
    c->i = cj_ws(c->s, c->len, c->i);
    if (c->i >= c->len || c->s[c->i] != ':')
        return CJ_SYNTAX;
    c->i = cj_ws(c->s, c->len, c->i + 1);
    return CJ_VALUE;
}

aigw_json_verdict aigw__json_check(const char *s, size_t len, size_t *offset)
{
    cj_scan c;
    cj_next n = CJ_SYNTAX;
    c.s = s;
    c.len = len;
    c.i = c.depth = 0;
    if (s && len > 0) {
        /* cJSON skips a BOM only in a text of 5 bytes or more */
        if (len >= 5 && memcmp(s, "\xef\xbb\xbf", 3) == 0)
            c.i = 3;
        c.i = cj_ws(s, len, c.i);
        n = CJ_VALUE;
        while (n == CJ_VALUE || n == CJ_AFTER || n == CJ_MEMBER)
            n = n == CJ_VALUE ? cj_value(&c) : n == CJ_AFTER ? cj_after(&c) : cj_member(&c);
    }
    if (n == CJ_DONE) {
        *offset = c.i; /* where the value ends, as cJSON's end pointer */
        return AIGW_JSON_OK;
    }
    /* at or past the end, cJSON points at the last byte */
    *offset = c.i < len ? c.i : (len > 0 ? len - 1 : 0);
    return n == CJ_DEEP ? AIGW_JSON_TOO_DEEP : AIGW_JSON_SYNTAX;
}

/* The string (quote at s[*i]) and number ('-' or a digit at s[*i]) that
 * aigw__json_check reads, for a reader that goes token by token. */
bool aigw__json_string_at(const char *s, size_t len, size_t *i)
{
    return *i < len && s[*i] == '"' && cj_string(s, len, i);
}

bool aigw__json_number_at(const char *s, size_t len, size_t *i)
{
    return *i < len && cj_number(s, len, i);
}

/* ---- slots.h ---- */

static _Thread_local unsigned t_slot_home AIGW__TLS_FAST; /* 1 + the home number; 0: not dealt */
static atomic_uint g_slot_next;

unsigned aigw__slot_home(void)
{
    if (t_slot_home == 0)
        t_slot_home =
            1 + atomic_fetch_add_explicit(&g_slot_next, 1, memory_order_relaxed) % 65536u;
    return t_slot_home - 1;
}
