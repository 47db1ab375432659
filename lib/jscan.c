/* jscan.c - a JSON text token by token, as cJSON reads it, without a tree.
 *
 * One pass, no allocation: each call hands over the next value (with its
 * member key) or the close of a container, and the text is judged as
 * cJSON_ParseWithLengthOpts(s, len, &end, 0) judges it - the same texts
 * fail (aigw__json_check's rules: whitespace is any byte up to 0x20, a BOM
 * counts in 5 bytes or more, numbers as strtod takes them, \u escapes and
 * surrogates as cJSON decodes them, 1000 levels at most), and the value
 * ends where cJSON's does (what follows is not read).  Strings and numbers
 * are those of aigw__json_string_at / aigw__json_number_at; a string
 * without a backslash, the common case, is taken in one quick scan.  Keys
 * and strings compare as strcmp compares cJSON's decoded text, so a \u0000
 * escape or a raw NUL byte ends them, and "\u0074ype" is "type".  Tokens
 * are handed over before the text is known to be whole: a reader keeps what
 * it learns until AIGW_JTOK_END.
 *
 * aigw__jscan_walk reads a text whole the same way for a reader that wants
 * a few members of a few containers, in one call: what it wants goes to
 * its callbacks, the rest is checked and passed over in a tight loop, not
 * handed over token by token (a call and a reader's dispatch per token
 * cost more than the checking).  A streamed answer's events are read this
 * way (stream.c): a cJSON tree per event cost some 26 allocations. */
#include "internal.h"

#include <cjson/cJSON.h>
#if defined(__GNUC__) && defined(__SSE2__)
#include <emmintrin.h>
#endif
#include <locale.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(CJSON_NESTING_LIMIT <= 8 * sizeof(((aigw_jscan *)0)->obj),
               "aigw_jscan.obj holds a bit per level cJSON allows");

/* What the next call reads: the first value; a member or the close of an
 * object just opened (FIRST) or after one of its values (NEXT); the same
 * for an array; nothing more (END, ERROR: sticky). */
enum { M_NEXT = 1, M_ARRAY = 2 };
enum {
    M_OBJ_FIRST = 0,
    M_OBJ_NEXT = M_NEXT,
    M_ARR_FIRST = M_ARRAY,
    M_ARR_NEXT = M_ARRAY | M_NEXT,
    M_START,
    M_END,
    M_ERROR
};

void aigw__jscan_init(aigw_jscan *j, const char *s, size_t len)
{
    /* obj is written before it is read: left as it is */
    j->s = s;
    j->len = s ? len : 0;
    j->pos = j->depth = j->level = 0;
    j->key.p = j->value.p = NULL;
    j->key.len = j->value.len = 0;
    j->key.escaped = j->value.escaped = false;
    j->mode = M_START;
    j->after = M_END;
}

static inline size_t ws(const char *s, size_t len, size_t i)
{
    while (i < len && (unsigned char)s[i] <= 32)
        i++;
    return i;
}

static aigw_jtok fail(aigw_jscan *j)
{
    j->mode = M_ERROR;
    return AIGW_JTOK_ERROR;
}

#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

/* The first '"' or '\\' in s[i..len), or len.  Sixteen bytes at a time
 * with SSE2 (x86-64 has it always); then eight at a time where the first
 * match in a word can be told from its bits (little-endian, with GCC's or
 * Clang's count of trailing zeros): a byte equal to c is a zero byte of
 * w ^ (ONES * c), and the lowest byte flagged by (x - ONES) & ~x & HIGHS is
 * the first zero byte of x (a false flag needs a zero below it). */
static inline size_t quote_or_backslash(const char *s, size_t i, size_t len)
{
#if defined(__GNUC__) && defined(__SSE2__)
    const __m128i q = _mm_set1_epi8('"'), b = _mm_set1_epi8('\\');
    while (len - i >= 16) {
        __m128i w = _mm_loadu_si128((const __m128i *)(const void *)(s + i));
        unsigned m = (unsigned)_mm_movemask_epi8(
            _mm_or_si128(_mm_cmpeq_epi8(w, q), _mm_cmpeq_epi8(w, b)));
        if (m)
            return i + (size_t)__builtin_ctz(m);
        i += 16;
    }
#endif
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    while (len - i >= 8) {
        uint64_t w, q8, b8, m8;
        memcpy(&w, s + i, 8);
        q8 = w ^ (ONES * '"');
        b8 = w ^ (ONES * '\\');
        m8 = (((q8 - ONES) & ~q8) | ((b8 - ONES) & ~b8)) & HIGHS;
        if (m8)
            return i + (size_t)__builtin_ctzll(m8) / 8;
        i += 8;
    }
#endif
    while (i < len && s[i] != '"' && s[i] != '\\')
        i++;
    return i;
}

/* A string with a backslash in it, whose quote is at s[at], into *sp: the
 * uncommon case, out of the way of the quick one.  false when cJSON
 * refuses it; else *end is past its closing quote. */
static bool escaped_string(const char *s, size_t len, size_t at, aigw_jspan *sp, size_t *end)
{
    size_t i = at;
    if (!aigw__json_string_at(s, len, &i))
        return false;
    sp->p = s + at + 1;
    sp->len = i - 2 - at;
    sp->escaped = true;
    *end = i;
    return true;
}

/* The string whose quote is at s[at] into *sp, *end past it; false when
 * cJSON refuses it.  One without a backslash, the common case, in one
 * quick scan. */
static inline bool string(const char *s, size_t len, size_t at, aigw_jspan *sp, size_t *end)
{
    size_t e = quote_or_backslash(s, at + 1, len);
    if (e < len && s[e] == '"') {
        sp->p = s + at + 1;
        sp->len = e - at - 1;
        sp->escaped = false;
        *end = e + 1;
        return true;
    }
    return escaped_string(s, len, at, sp, end);
}

/* The end of the string whose quote is at s[at], its span in *sp; 0 when
 * cJSON refuses it. */
static inline size_t string_end(const char *s, size_t len, size_t at, aigw_jspan *sp)
{
    size_t e;
    if (!string(s, len, at, sp, &e))
        return 0;
    return e;
}

/* The end of the number at s[at] ('-' or a digit) that is not a plain
 * integer, as aigw__json_check reads it; 0 when cJSON refuses it. */
static size_t long_number_end(const char *s, size_t len, size_t at)
{
    size_t i = at;
    return aigw__json_number_at(s, len, &i) ? i : 0;
}

/* A value read whole at s[at..end): what comes next. */
static inline aigw_jtok took(aigw_jscan *j, size_t end, aigw_jtok t)
{
    j->pos = end;
    j->mode = j->after;
    return t;
}

/* An object or array opens at s[at]. */
static inline aigw_jtok open_one(aigw_jscan *j, size_t at, bool object)
{
    size_t d = j->depth;
    if (d >= CJSON_NESTING_LIMIT)
        return fail(j);
    if (object)
        j->obj[d / 8] |= (unsigned char)(1u << (d % 8));
    else
        j->obj[d / 8] &= (unsigned char)~(1u << (d % 8));
    j->depth = d + 1;
    j->pos = at + 1;
    j->value.len = 1;
    j->mode = object ? M_OBJ_FIRST : M_ARR_FIRST;
    j->after = object ? M_OBJ_NEXT : M_ARR_NEXT;
    return object ? AIGW_JTOK_OBJECT : AIGW_JTOK_ARRAY;
}

#if defined(__GNUC__)
#define HOT inline __attribute__((always_inline))
#else
#define HOT inline
#endif

/* The end of the number or word (null, true, false) at s[at < len], *t
 * its token; 0 when cJSON refuses it.  A plain integer at once, another
 * number as aigw__json_check reads it. */
static HOT size_t scalar_end(const char *s, size_t len, size_t at, aigw_jtok *t)
{
    size_t e = at;
    switch (s[at]) {
    case 'n':
        *t = AIGW_JTOK_NULL;
        return len - at >= 4 && memcmp(s + at, "null", 4) == 0 ? at + 4 : 0;
    case 't':
        *t = AIGW_JTOK_TRUE;
        return len - at >= 4 && memcmp(s + at, "true", 4) == 0 ? at + 4 : 0;
    case 'f':
        *t = AIGW_JTOK_FALSE;
        return len - at >= 5 && memcmp(s + at, "false", 5) == 0 ? at + 5 : 0;
    default:
        *t = AIGW_JTOK_NUMBER;
        while (e < len && aigw__is_digit((unsigned char)s[e]))
            e++;
        if (e > at && (e == len || (s[e] != '.' && s[e] != 'e' && s[e] != 'E')))
            return e;
        return s[at] == '-' || aigw__is_digit((unsigned char)s[at]) ? long_number_end(s, len, at)
                                                                      : 0;
    }
}

/* The value at s[at]. */
static HOT aigw_jtok value(aigw_jscan *j, size_t at)
{
    const char *s = j->s;
    size_t len = j->len, e;
    aigw_jtok t;
    j->level = j->depth;
    j->value.p = s + at;
    j->value.len = 0;
    j->value.escaped = false;
    if (at >= len)
        return fail(j);
    switch (s[at]) {
    case '"':
        if (!(e = string_end(s, len, at, &j->value)))
            return fail(j);
        return took(j, e, AIGW_JTOK_STRING);
    case '{':
        return open_one(j, at, true);
    case '[':
        return open_one(j, at, false);
    default:
        if (!(e = scalar_end(s, len, at, &t)))
            return fail(j);
        if (t == AIGW_JTOK_NUMBER)
            j->value.len = e - at;
        return took(j, e, t);
    }
}

/* The innermost container closes at s[i]. */
static inline aigw_jtok close_one(aigw_jscan *j, size_t i)
{
    size_t d = --j->depth;
    j->level = d;
    j->pos = i + 1;
    if (d == 0)
        j->after = M_END;
    else
        j->after = (j->obj[(d - 1) / 8] >> ((d - 1) % 8)) & 1u ? M_OBJ_NEXT : M_ARR_NEXT;
    j->mode = j->after;
    return AIGW_JTOK_CLOSE;
}

/* The first value (after a BOM cJSON skips only in a text of 5 bytes or
 * more), or what the end repeats. */
static aigw_jtok first_or_last(aigw_jscan *j)
{
    const char *s = j->s;
    size_t len = j->len;
    if (j->mode == M_START)
        return value(j, ws(s, len, len >= 5 && memcmp(s, "\xef\xbb\xbf", 3) == 0 ? 3 : 0));
    /* END: the value is whole, j->pos is where it ends */
    return j->mode == M_END ? AIGW_JTOK_END : AIGW_JTOK_ERROR;
}

/* One token. */
static inline aigw_jtok step(aigw_jscan *j)
{
    const char *s = j->s;
    size_t len = j->len, i;
    unsigned m = j->mode;
    if (m > M_ARR_NEXT)
        return first_or_last(j);
    /* the next member or element, or the close */
    i = ws(s, len, j->pos);
    if (i >= len)
        return fail(j);
    if (s[i] == (m & M_ARRAY ? ']' : '}'))
        return close_one(j, i);
    if (m & M_NEXT) {
        if (s[i] != ',')
            return fail(j);
        i = ws(s, len, i + 1);
    }
    if (m & M_ARRAY) {
        j->key.p = NULL;
        j->key.len = 0;
        j->key.escaped = false;
        return value(j, i);
    }
    /* a member: its key, the colon (most often at once), its value */
    if (i >= len || s[i] != '"' || !(i = string_end(s, len, i, &j->key)))
        return fail(j);
    if (i >= len || s[i] != ':') {
        i = ws(s, len, i);
        if (i >= len || s[i] != ':')
            return fail(j);
    }
    return value(j, ws(s, len, i + 1));
}

aigw_jtok aigw__jscan_next(aigw_jscan *j)
{
    return step(j);
}

size_t aigw__jscan_end(const aigw_jscan *j)
{
    return j->pos;
}

/* ---- a text read whole, the wanted values handed to callbacks ---- */

/* How deep the containers with a role may go: the walk recurses through
 * them (what it passes over, it reads in a loop), so one deeper is passed
 * over whatever role the callback gives it. */
#define WALK_ROLE_DEPTH 64

typedef struct walker {
    const char *s;
    size_t len;
    const aigw_jwalk *w;
    aigw_jmark *here; /* w->here, NULL once a role is too large to mark */
    unsigned char obj[125]; /* as aigw_jscan's, for what is passed over */
} walker;

enum { W_OK = 0, W_REFUSED = 1, W_STOPPED = -1 };

/* Whether the key may be a wanted name as aigw__jspan_is tells: true for
 * every key that is (the callback compares it whole), and cheap for the
 * rest.  A key with an escape may read as anything; another, even one a
 * NUL byte ends early, begins with its name's first byte. */
static HOT bool key_in(const aigw_jspan *k, const aigw_jwant *want)
{
    return k->escaped || ((want->first >> ((unsigned char)k->p[0] % 64)) & 1u);
}

/* *i past the ':' that follows a member's key (at *i), and the white
 * space after it, *past just past the ':'; false when it is missing. */
static HOT bool colon(const char *s, size_t len, size_t *i, size_t *past)
{
    size_t k = *i;
    if (k >= len || s[k] != ':') { /* most often at once */
        k = ws(s, len, k);
        if (k >= len || s[k] != ':')
            return false;
    }
    *past = k + 1;
    *i = ws(s, len, k + 1);
    return true;
}

/* Passes over the object or array that opens at s[*i] at level d (so many
 * enclose it), read as aigw__jscan_next reads it but in one loop: *i past
 * its close; false when cJSON refuses it. */
static bool pass_container(walker *k, size_t *pi, size_t d)
{
    const char *s = k->s;
    size_t len = k->len, i = *pi, top = d, e;
    bool object = s[i] == '{', first = true;
    aigw_jspan sp;
    aigw_jtok t;
    for (;;) {
        /* an opening bracket at s[i], level d */
        if (d >= CJSON_NESTING_LIMIT)
            return false;
        if (object)
            k->obj[d / 8] |= (unsigned char)(1u << (d % 8));
        else
            k->obj[d / 8] &= (unsigned char)~(1u << (d % 8));
        d++;
        i++;
        first = true;
        /* its members or elements, and the closes, up to the next opening */
        for (;;) {
            i = ws(s, len, i);
            if (i >= len)
                return false;
            if (s[i] == (object ? '}' : ']')) {
                i++;
                if (--d == top) {
                    *pi = i;
                    return true;
                }
                object = (k->obj[(d - 1) / 8] >> ((d - 1) % 8)) & 1u;
                first = false;
                continue;
            }
            if (!first) {
                if (s[i] != ',')
                    return false;
                i = ws(s, len, i + 1);
            }
            first = false;
            if (object && (i >= len || s[i] != '"' || !(i = string_end(s, len, i, &sp)) ||
                           !colon(s, len, &i, &e)))
                return false;
            if (i >= len)
                return false;
            if (s[i] == '{' || s[i] == '[')
                break;
            e = s[i] == '"' ? string_end(s, len, i, &sp) : scalar_end(s, len, i, &t);
            if (!e)
                return false;
            i = e;
        }
        object = s[i] == '{';
    }
}

static int walk_open(walker *k, size_t *pi, size_t d, int parent, const aigw_jspan *key);

/* The value at s[*i], at level d, in a container of role parent (key: its
 * member key, p NULL for an element) to the callback; *i past it.  An
 * object or array apart (walk_open): the common case stays without a
 * call. */
static HOT int walk_value(walker *k, size_t *pi, size_t d, int parent, const aigw_jspan *key)
{
    const char *s = k->s;
    size_t len = k->len, at = *pi, e;
    aigw_jspan v;
    aigw_jtok t;
    if (at >= len)
        return W_REFUSED;
    v.p = s + at;
    v.len = 0;
    v.escaped = false;
    if (s[at] == '"') {
        if (!(e = string_end(s, len, at, &v)))
            return W_REFUSED;
        t = AIGW_JTOK_STRING;
    } else if (s[at] == '{' || s[at] == '[') {
        return walk_open(k, pi, d, parent, key);
    } else {
        if (!(e = scalar_end(s, len, at, &t)))
            return W_REFUSED;
        if (t == AIGW_JTOK_NUMBER)
            v.len = e - at;
    }
    if (k->w->value(k->w->ctx, parent, t, key, &v) < 0)
        return W_STOPPED;
    *pi = e;
    return W_OK;
}

/* Where the member whose value starts past the colon at s[past - 1] is:
 * the place a walk may resume at to read it again (aigw_jmark). */
static HOT void mark_here(walker *k, size_t d, size_t past, const aigw_jspan *key)
{
    aigw_jmark *h = k->here;
    h->pos = past;
    h->key_at = (size_t)(key->p - k->s);
    h->key_len = key->len;
    h->key_escaped = key->escaped;
    h->depth = d < AIGW_JMARK_DEPTH ? (unsigned char)(d + 1) : 0;
}

/* The members or elements of the container of role r (an object or not)
 * whose opening bracket is at s[*i - 1], at level d: the wanted ones to the
 * callback, the others passed over; *i past its close.  With from, the
 * walk resumes inside it instead (aigw__jscan_walk_from): in the container
 * at the next level that from holds, or at from's member when this is the
 * last. */
static int walk_container(walker *k, size_t *pi, size_t d, int r, bool object,
                          const aigw_jmark *from)
{
    const char *s = k->s;
    size_t len = k->len, i = *pi, e, past;
    const aigw_jwant *want = &k->w->wants[r];
    aigw_jspan key = {NULL, 0, false}, sp;
    char close = object ? '}' : ']';
    aigw_jtok t;
    int rc;
    if (k->here) {
        if (r > 127) /* the frame cannot hold it: no more places to resume */
            k->here = NULL;
        else if (d < AIGW_JMARK_DEPTH)
            k->here->frame[d] = (unsigned char)((unsigned)r << 1 | object);
    }
    if (from) {
        if (d + 1 < from->depth) {
            unsigned f = from->frame[d + 1];
            rc = walk_container(k, &i, d + 1, (int)(f >> 1), f & 1u, from);
            if (rc != W_OK)
                return rc;
            goto next;
        }
        key.p = s + from->key_at;
        key.len = from->key_len;
        key.escaped = from->key_escaped;
        past = from->pos;
        i = ws(s, len, past);
        if (k->here) /* the same place again: the reader may mark it */
            mark_here(k, d, past, &key);
        goto member;
    }
    i = ws(s, len, i);
    if (i >= len)
        return W_REFUSED;
    while (s[i] != close) {
        /* a member (its key, the colon) or element */
        if (object && (i >= len || s[i] != '"' || !(i = string_end(s, len, i, &key)) ||
                       !colon(s, len, &i, &past)))
            return W_REFUSED;
        if (want->all || (object && key_in(&key, want))) {
            if (object && k->here)
                mark_here(k, d, past, &key);
        member:
            if ((rc = walk_value(k, &i, d + 1, r, &key)) != W_OK)
                return rc;
        } else if (i >= len) { /* not wanted: passed over */
            return W_REFUSED;
        } else if (s[i] == '{' || s[i] == '[') {
            if (!pass_container(k, &i, d + 1))
                return W_REFUSED;
        } else {
            if (!(e = s[i] == '"' ? string_end(s, len, i, &sp) : scalar_end(s, len, i, &t)))
                return W_REFUSED;
            i = e;
        }
    next:
        /* a comma and the next, or the close */
        i = ws(s, len, i);
        if (i >= len)
            return W_REFUSED;
        if (s[i] == ',') {
            i = ws(s, len, i + 1);
            if (i >= len || s[i] == close) /* no value after the comma */
                return W_REFUSED;
        } else if (s[i] != close) {
            return W_REFUSED;
        }
    }
    *pi = i + 1;
    if (want->close && k->w->close(k->w->ctx, r) < 0)
        return W_STOPPED;
    return W_OK;
}

/* The object or array at s[*i], at level d, to the callback, then its
 * members if it gives it a role, else passed over. */
static int walk_open(walker *k, size_t *pi, size_t d, int parent, const aigw_jspan *key)
{
    size_t at = *pi;
    bool object = k->s[at] == '{';
    aigw_jspan v;
    int r;
    if (d >= CJSON_NESTING_LIMIT)
        return W_REFUSED;
    v.p = k->s + at;
    v.len = 1;
    v.escaped = false;
    r = k->w->value(k->w->ctx, parent, object ? AIGW_JTOK_OBJECT : AIGW_JTOK_ARRAY, key, &v);
    if (r < 0)
        return W_STOPPED;
    if (r > 0 && d < WALK_ROLE_DEPTH) {
        *pi = at + 1;
        return walk_container(k, pi, d, r, object, NULL);
    }
    return pass_container(k, pi, d) ? W_OK : W_REFUSED;
}

int aigw__jscan_walk(const char *s, size_t len, int role, const aigw_jwalk *w)
{
    static const aigw_jspan none = {NULL, 0, false};
    walker k;
    size_t i;
    k.s = s;
    k.len = s ? len : 0;
    k.w = w;
    k.here = w->here;
    /* cJSON skips a BOM only in a text of 5 bytes or more */
    i = ws(s, k.len, k.len >= 5 && memcmp(s, "\xef\xbb\xbf", 3) == 0 ? 3 : 0);
    return walk_value(&k, &i, 0, role, &none);
}

int aigw__jscan_walk_from(const char *s, size_t len, const aigw_jmark *at, const aigw_jwalk *w)
{
    walker k;
    size_t i = 0;
    unsigned f;
    if (!s || at->depth == 0 || at->depth > AIGW_JMARK_DEPTH || at->pos > len ||
        at->key_at + at->key_len > at->pos)
        return W_REFUSED; /* not a place in this text */
    k.s = s;
    k.len = len;
    k.w = w;
    k.here = w->here;
    if (k.here) /* the frames around: as the walk that marked it left them */
        memcpy(k.here->frame, at->frame, at->depth);
    f = at->frame[0];
    return walk_container(&k, &i, 0, (int)(f >> 1), f & 1u, at);
}

/* ---- reading a key or a string as cJSON decodes it ---- */

static unsigned hex4(const char *s)
{
    unsigned h = 0;
    int k;
    for (k = 0; k < 4; k++) {
        char c = s[k];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0)
            return 0; /* cJSON reads an escape that is not hex as U+0000 */
        h = h * 16 + (unsigned)d;
    }
    return h;
}

/* The next byte of cJSON's decoding of the escaped text p[*i..end), *i past
 * what made it; -1 at the end.  A \u escape past ASCII gives 0x80 for its
 * first UTF-8 byte (a surrogate pair taken whole): what it is compared with
 * is ASCII, so it differs there whatever the byte. */
static int next_byte(const char *p, size_t end, size_t *i)
{
    size_t k = *i;
    unsigned cp;
    if (k >= end)
        return -1;
    if (p[k] != '\\') {
        *i = k + 1;
        return (unsigned char)p[k];
    }
    *i = k + 2; /* an accepted text: the escape is whole */
    switch (p[k + 1]) {
    case 'b':
        return '\b';
    case 'f':
        return '\f';
    case 'n':
        return '\n';
    case 'r':
        return '\r';
    case 't':
        return '\t';
    case 'u':
        break;
    default:
        return (unsigned char)p[k + 1]; /* '"', '\\' or '/' */
    }
    cp = hex4(p + k + 2);
    *i = k + (cp >= 0xD800 && cp <= 0xDBFF ? 12 : 6);
    return cp < 0x80 ? (int)cp : 0x80;
}

bool aigw__jspan_is(const aigw_jspan *sp, const char *name)
{
    size_t i = 0, n;
    if (!sp->p)
        return false;
    if (!sp->escaped) {
        /* strcmp stops at a NUL byte in the text too */
        n = strlen(name);
        return (sp->len == n || (sp->len > n && sp->p[n] == '\0')) &&
               memcmp(sp->p, name, n) == 0;
    }
    for (;;) {
        int c = next_byte(sp->p, sp->len, &i);
        if (c <= 0)
            return *name == '\0';
        if ((unsigned char)*name != c)
            return false;
        name++;
    }
}

size_t aigw__jscan_string_end(const char *s, size_t len, size_t at, aigw_jspan *sp)
{
    if (at >= len || s[at] != '"')
        return 0;
    return string_end(s, len, at, sp);
}

bool aigw__jspan_nonempty(const aigw_jspan *sp)
{
    size_t i = 0;
    return sp->p && next_byte(sp->p, sp->len, &i) > 0;
}

int aigw__jspan_number(const aigw_jspan *sp, double *v)
{
    const char *s = sp->p;
    char small[64], *b, point;
    size_t n = sp->len, k, neg = n > 0 && s[0] == '-';
    bool digits = n > neg && n - neg <= 15;
    for (k = neg; digits && k < n; k++)
        digits = aigw__is_digit((unsigned char)s[k]);
    if (digits) {
        /* up to 15 digits: every step exact in a double, as strtod's result */
        double d = 0;
        for (k = neg; k < n; k++)
            d = d * 10 + (s[k] - '0');
        *v = neg ? -d : d;
        return 0;
    }
    /* Otherwise as cJSON does it: the number, '.' as the locale's decimal
     * point, through strtod. */
    b = n < sizeof small ? small : aigw__malloc(n + 1);
    if (!b)
        return -1;
    point = localeconv()->decimal_point[0];
    for (k = 0; k < n; k++)
        b[k] = s[k] == '.' ? point : s[k];
    b[n] = '\0';
    *v = strtod(b, NULL);
    if (b != small)
        aigw__free(b);
    return 0;
}
