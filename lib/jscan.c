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
 * it learns until AIGW_JTOK_END.  A streamed answer's events are read this
 * way (stream.c): a cJSON tree per event cost some 26 allocations. */
#include "internal.h"

#include <cjson/cJSON.h>
#include <locale.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(CJSON_NESTING_LIMIT <= 8 * sizeof(((aigw_jscan *)0)->obj),
               "aigw_jscan.obj holds a bit per level cJSON allows");

enum { ST_START, ST_OPENED, ST_AFTER, ST_END, ST_ERROR };

void aigw__jscan_init(aigw_jscan *j, const char *s, size_t len)
{
    /* obj is written before it is read: left as it is */
    j->s = s;
    j->len = s ? len : 0;
    j->pos = j->depth = j->level = 0;
    j->key.p = j->value.p = NULL;
    j->key.len = j->value.len = 0;
    j->key.escaped = j->value.escaped = false;
    j->close = 0;
    j->state = ST_START;
}

static size_t ws(const char *s, size_t len, size_t i)
{
    while (i < len && (unsigned char)s[i] <= 32)
        i++;
    return i;
}

static aigw_jtok fail(aigw_jscan *j)
{
    j->state = ST_ERROR;
    return AIGW_JTOK_ERROR;
}

#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

/* The first '"' or '\\' in s[i..len), or len.  Eight bytes at a time where
 * the first match in a word can be told from its bits (little-endian, with
 * GCC's or Clang's count of trailing zeros): a byte equal to c is a zero
 * byte of w ^ (ONES * c), and the lowest byte flagged by (x - ONES) & ~x &
 * HIGHS is the first zero byte of x (a false flag needs a zero below it). */
static inline size_t quote_or_backslash(const char *s, size_t i, size_t len)
{
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    while (len - i >= 8) {
        uint64_t w, q, b, m;
        memcpy(&w, s + i, 8);
        q = w ^ (ONES * '"');
        b = w ^ (ONES * '\\');
        m = (((q - ONES) & ~q) | ((b - ONES) & ~b)) & HIGHS;
        if (m)
            return i + (size_t)__builtin_ctzll(m) / 8;
        i += 8;
    }
#endif
    while (i < len && s[i] != '"' && s[i] != '\\')
        i++;
    return i;
}

/* The string whose quote is at j->pos into *sp; false when cJSON refuses it. */
static inline bool string(aigw_jscan *j, aigw_jspan *sp)
{
    const char *s = j->s;
    size_t len = j->len, start = j->pos + 1, e = quote_or_backslash(s, start, len);
    sp->p = s + start;
    if (e < len && s[e] == '"') {
        sp->len = e - start;
        sp->escaped = false;
        j->pos = e + 1;
        return true;
    }
    if (!aigw__json_string_at(s, len, &j->pos))
        return false;
    sp->len = j->pos - 1 - start;
    sp->escaped = true;
    return true;
}

static bool word(const aigw_jscan *j, const char *w, size_t n)
{
    return j->len - j->pos >= n && memcmp(j->s + j->pos, w, n) == 0;
}

/* The number at j->pos: a plain integer at once, else as aigw__json_check
 * reads it. */
static bool number(aigw_jscan *j)
{
    const char *s = j->s;
    size_t len = j->len, at = j->pos, k = at + (s[at] == '-'), d = k;
    while (d < len && aigw__is_digit((unsigned char)s[d]))
        d++;
    if (d > k && (d == len || (s[d] != '.' && s[d] != 'e' && s[d] != 'E'))) {
        j->pos = d;
        return true;
    }
    return (s[at] == '-' || aigw__is_digit((unsigned char)s[at])) &&
           aigw__json_number_at(s, len, &j->pos);
}

/* The value at j->pos. */
static inline aigw_jtok value(aigw_jscan *j)
{
    const char *s = j->s;
    size_t at = j->pos, d = j->depth;
    aigw_jtok t;
    j->level = d;
    j->value.p = s + at;
    j->value.len = 0;
    j->value.escaped = false;
    if (at >= j->len)
        return fail(j);
    switch (s[at]) {
    case '{':
    case '[':
        if (d >= CJSON_NESTING_LIMIT)
            return fail(j);
        j->close = s[at] == '{' ? '}' : ']';
        if (s[at] == '{')
            j->obj[d / 8] |= (unsigned char)(1u << (d % 8));
        else
            j->obj[d / 8] &= (unsigned char)~(1u << (d % 8));
        j->depth++;
        j->pos++;
        j->value.len = 1;
        j->state = ST_OPENED;
        return s[at] == '{' ? AIGW_JTOK_OBJECT : AIGW_JTOK_ARRAY;
    case '"':
        if (!string(j, &j->value))
            return fail(j);
        t = AIGW_JTOK_STRING;
        break;
    case 'n':
        t = AIGW_JTOK_NULL;
        if (!word(j, "null", 4))
            return fail(j);
        j->pos += 4;
        break;
    case 't':
        t = AIGW_JTOK_TRUE;
        if (!word(j, "true", 4))
            return fail(j);
        j->pos += 4;
        break;
    case 'f':
        t = AIGW_JTOK_FALSE;
        if (!word(j, "false", 5))
            return fail(j);
        j->pos += 5;
        break;
    default:
        if (!number(j))
            return fail(j);
        j->value.len = j->pos - at;
        t = AIGW_JTOK_NUMBER;
        break;
    }
    j->state = ST_AFTER;
    return t;
}

/* The innermost container closes. */
static aigw_jtok close_one(aigw_jscan *j, size_t i)
{
    size_t d = --j->depth;
    j->level = d;
    j->pos = i + 1;
    j->state = ST_AFTER;
    if (d > 0)
        j->close = (j->obj[(d - 1) / 8] >> ((d - 1) % 8)) & 1u ? '}' : ']';
    return AIGW_JTOK_CLOSE;
}

aigw_jtok aigw__jscan_next(aigw_jscan *j)
{
    const char *s = j->s;
    size_t len = j->len, i;
    if (j->state == ST_START) {
        /* cJSON skips a BOM only in a text of 5 bytes or more */
        i = len >= 5 && memcmp(s, "\xef\xbb\xbf", 3) == 0 ? 3 : 0;
        j->pos = ws(s, len, i);
    } else if (j->state == ST_END || j->state == ST_ERROR || j->depth == 0) {
        if (j->state != ST_ERROR)
            j->state = ST_END; /* the value is whole; j->pos: where it ends */
        return j->state == ST_END ? AIGW_JTOK_END : AIGW_JTOK_ERROR;
    } else {
        /* the next member or element, or the close */
        i = ws(s, len, j->pos);
        if (i >= len)
            return fail(j);
        if (s[i] == j->close)
            return close_one(j, i);
        if (j->state == ST_AFTER) {
            if (s[i] != ',')
                return fail(j);
            i = ws(s, len, i + 1);
        }
        j->pos = i;
        if (j->close == '}') {
            if (i >= len || s[i] != '"' || !string(j, &j->key))
                return fail(j);
            i = ws(s, len, j->pos);
            if (i >= len || s[i] != ':')
                return fail(j);
            j->pos = ws(s, len, i + 1);
        } else {
            j->key.p = NULL;
            j->key.len = 0;
            j->key.escaped = false;
        }
    }
    return value(j); /* its one call: inlined */
}

size_t aigw__jscan_end(const aigw_jscan *j)
{
    return j->pos;
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
