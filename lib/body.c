/* body.c - the request body: read its model list, rewrite it per attempt.
 *
 * The rewrite splices bytes instead of re-serialising a parsed tree: a parse
 * and print round trip would turn 1.0 into 1, 1e400 into null, reorder or
 * reformat members and re-escape strings, and the upstream must see the
 * caller's body as the caller wrote it.  A small scanner over the top-level
 * object finds what to replace or drop.
 *
 * Reading a request's body (aigw__body_read) builds no tree in the common
 * case.  A plain body (strict JSON, as clients send it) is checked and its
 * top-level members mapped in one pass (fast_map); any other is checked as
 * cJSON would read it (aigw__json_check, which allocates nothing) and
 * mapped by the scanner, so that both give the answers and errors of a
 * cJSON parse.  "model" is copied from its bytes, and the rewrites splice
 * from the map.  Only a body with a "models" list, or a "model" written
 * with escapes, is read through cJSON, whose tree decodes them. */
#include "internal.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

#define BAD SIZE_MAX

static bool is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}


/* ------------------------------------------------------------------------ */
/* The scanner over the top-level object                                    */
/* ------------------------------------------------------------------------ */

typedef struct scanner {
    const char *s;
    size_t len;
    size_t pos;  /* where the next member (or the closing brace) is looked for */
    size_t seen; /* members read so far */
} scanner;

typedef aigw_body_member member;

/* Index past the string whose opening quote is at i, or BAD. */
static size_t skip_string(const char *s, size_t len, size_t i)
{
    for (i++; i < len; i++) {
        if (s[i] == '\\')
            i++;
        else if (s[i] == '"')
            return i + 1;
    }
    return BAD;
}

static size_t skip_scalar(const char *s, size_t len, size_t i)
{
    size_t start = i;
    while (i < len && !is_ws(s[i]) && s[i] != ',' && s[i] != '}' && s[i] != ']' && s[i] != ':')
        i++;
    return i > start ? i : BAD;
}

/* Index past the value at i, or BAD.  Nesting is counted, not recursed
 * into, so a deep body cannot exhaust the stack. */
static size_t skip_value(const char *s, size_t len, size_t i)
{
    size_t depth = 0;
    if (i >= len)
        return BAD;
    do {
        char c = s[i];
        if (c == '"') {
            if ((i = skip_string(s, len, i)) == BAD)
                return BAD;
            continue;
        }
        if (c == '{' || c == '[')
            depth++;
        else if (c == '}' || c == ']') {
            if (depth == 0)
                return BAD;
            depth--;
        } else if (depth == 0)
            return skip_scalar(s, len, i);
        i++;
    } while (depth > 0 && i < len);
    return depth == 0 ? i : BAD;
}

/* Positions the scanner just past the top-level '{' (after a UTF-8 BOM and
 * whitespace, which cJSON accepts too). */
static int scan_open(scanner *sc, const char *s, size_t len)
{
    size_t i = 0;
    if (len >= 3 && memcmp(s, "\xef\xbb\xbf", 3) == 0)
        i = 3;
    i = aigw__skip_ws(s, len, i);
    if (i >= len || s[i] != '{')
        return -1;
    sc->s = s;
    sc->len = len;
    sc->pos = i + 1;
    sc->seen = 0;
    return 0;
}

/* Reads the next member: 1 and *m, 0 at the closing brace, -1 malformed. */
static int scan_member(scanner *sc, member *m)
{
    const char *s = sc->s;
    size_t len = sc->len, i = aigw__skip_ws(s, len, sc->pos);
    if (i < len && s[i] == '}')
        return 0;
    if (sc->seen > 0) {
        if (i >= len || s[i] != ',')
            return -1;
        i = aigw__skip_ws(s, len, i + 1);
    }
    if (i >= len || s[i] != '"')
        return -1;
    m->key = i;
    if ((i = skip_string(s, len, i)) == BAD)
        return -1;
    m->key_end = i;
    i = aigw__skip_ws(s, len, i);
    if (i >= len || s[i] != ':')
        return -1;
    m->value = aigw__skip_ws(s, len, i + 1);
    if ((m->value_end = skip_value(s, len, m->value)) == BAD)
        return -1;
    sc->pos = m->value_end;
    sc->seen++;
    return 1;
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes the escape at s[*i] ('\\') into one code unit.  A surrogate stays
 * a lone unit: it can never equal the ASCII names compared against. */
static bool unescape(const char *s, size_t end, size_t *i, unsigned long *cu)
{
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    const char *p;
    size_t k;
    if (*i + 1 >= end)
        return false;
    p = strchr(from, s[*i + 1]);
    if (p && s[*i + 1] != '\0') {
        *cu = (unsigned char)to[p - from];
        *i += 2;
        return true;
    }
    if (s[*i + 1] != 'u' || *i + 6 > end)
        return false;
    for (*cu = 0, k = 2; k < 6; k++) {
        int h = hex_digit(s[*i + k]);
        if (h < 0)
            return false;
        *cu = *cu * 16 + (unsigned long)h;
    }
    *i += 6;
    return true;
}

/* Whether the key of m, once unescaped, is name ("mo\u0064el" is model). */
static bool key_is(const char *s, const member *m, const char *name)
{
    size_t i = m->key + 1, end = m->key_end - 1;
    while (i < end) {
        unsigned long cu;
        if (s[i] == '\\') {
            if (!unescape(s, end, &i, &cu))
                return false;
        } else {
            cu = (unsigned char)s[i++];
        }
        if (*name == '\0' || cu != (unsigned char)*name)
            return false;
        name++;
    }
    return *name == '\0';
}

/* ------------------------------------------------------------------------ */
/* The rewrite                                                              */
/* ------------------------------------------------------------------------ */

static aigw_body_key member_kind(const char *s, const member *m)
{
    /* "model" and "models" are 7 and 8 bytes with their quotes, more with
     * escapes */
    if (m->key_end - m->key < 7)
        return AIGW_BODY_OTHER;
    if (key_is(s, m, "model"))
        return AIGW_BODY_MODEL;
    if (key_is(s, m, "models"))
        return AIGW_BODY_MODELS;
    return AIGW_BODY_OTHER;
}

/* One more top-level member of the map. */
static void map_add(aigw_body_map *map, const member *m)
{
    if (m->kind == AIGW_BODY_MODEL && !map->has_model) {
        map->model = *m;
        map->has_model = true;
    } else if (m->kind == AIGW_BODY_MODELS && !map->has_models) {
        map->models = *m;
        map->has_models = true;
    }
    if (map->n < AIGW_BODY_MAP_MEMBERS)
        map->m[map->n] = *m;
    map->n++;
}

/* Maps the object's top-level members: 0, or -1 when the scanner cannot
 * walk it. */
static int map_body(const char *s, size_t len, aigw_body_map *map)
{
    scanner sc;
    member m;
    int r;
    if (scan_open(&sc, s, len) != 0)
        return -1;
    map->open = sc.pos;
    map->first = aigw__skip_ws(s, len, sc.pos);
    map->n = 0;
    map->has_model = map->has_models = false;
    while ((r = scan_member(&sc, &m)) > 0) {
        m.kind = member_kind(s, &m);
        map_add(map, &m);
    }
    return r;
}

/* Why a body is not one: BAD, or where it is not UTF-8 or nested deeper
 * than cJSON goes; or it is one, but cJSON ran out of memory reading it. */
typedef struct refusal {
    size_t bad_utf8;
    size_t too_deep;
    size_t bad_char;   /* a control byte JSON does not allow */
    size_t bad_escape; /* a \u escape that is not 4 hex digits, or \u0000 */
    bool nomem;
} refusal;

/* Whether the JSON value ending at end is the whole body and an object the
 * scanner can walk (see parse_object). */
static bool whole_object(const char *body, size_t len, size_t end)
{
    aigw_body_map map;
    return aigw__skip_ws(body, len, end) == len && map_body(body, len, &map) == 0;
}

static void refusal_init(refusal *why)
{
    why->bad_utf8 = why->too_deep = why->bad_char = why->bad_escape = BAD;
    why->nomem = false;
}

/* What parse_object checks, without the tree: aigw__json_check says what
 * cJSON would make of the text, and the scanner maps what it accepted.
 * 0, or -1 and *why. */
static int check_object(const char *body, size_t len, aigw_body_map *map, refusal *why)
{
    aigw_json_verdict v;
    bool control;
    size_t off;
    refusal_init(why);
    if (!body || len == 0)
        return -1;
    if ((off = aigw__utf8_check(body, len)) < len) {
        why->bad_utf8 = off;
        return -1;
    }
    if ((off = aigw__json_misread(body, len, true, &control)) < len) {
        *(control ? &why->bad_char : &why->bad_escape) = off;
        return -1;
    }
    v = aigw__json_check(body, len, &off);
    if (v == AIGW_JSON_TOO_DEEP)
        why->too_deep = off;
    /* scan_open finds the '{' cJSON's root must be: what is left of cJSON's
     * whitespace after the checks above is JSON's */
    if (v != AIGW_JSON_OK || aigw__skip_ws(body, len, off) != len || map_body(body, len, map) != 0)
        return -1;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* The fast path: one pass over a plain body                                */
/* ------------------------------------------------------------------------ */

/* A body as clients send it - strict JSON (RFC 8259), valid UTF-8, no BOM,
 * no \u0000 or surrogate escape, nested at most FAST_DEPTH levels, top-level
 * keys without escapes - is validated and mapped in one pass.  Whatever it
 * accepts, the full checks (check_object) accept too, with the same map;
 * for anything else it only says "not sure", and they decide. */
#define FAST_DEPTH 64

typedef struct fast {
    const unsigned char *s;
    size_t len, i;
} fast;

static size_t fast_ws(const fast *f, size_t i)
{
    /* most bytes come after none: one compare says so */
    while (i < f->len && f->s[i] <= ' ' &&
           (f->s[i] == ' ' || f->s[i] == '\n' || f->s[i] == '\t' || f->s[i] == '\r'))
        i++;
    return i;
}

/* 1 for the bytes a string holds as they are: printable ASCII but '"' and
 * '\\' (and, as cJSON and the full checks allow them, raw tab, LF, CR). */
static const unsigned char plain[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 1, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    /* 0x80 and up: 0 (UTF-8, checked sequence by sequence) */
};

/* Bit 7 of each of the 8 bytes at s (read as a little-endian word) that
 * may not be plain: a control byte, a byte from 0x80 up, '"' or '\\'
 * (tab, LF and CR too, which are plain: the byte loop decides those).
 * The lowest bit set is exact: borrows only run upwards. */
static uint64_t special_mask(const unsigned char *s)
{
    const uint64_t ones = 0x0101010101010101ULL, high = 0x8080808080808080ULL;
    uint64_t w, q, b;
    memcpy(&w, s, 8);
    q = w ^ (ones * '"');
    b = w ^ (ones * '\\');
    /* bit 7 of a byte: it is from 0x80 up, or (for the lowest such byte,
     * whatever the others do) below 0x20 or a zero byte of q or b */
    return ((w - ones * 0x20) | (q - ones) | (b - ones) | w) & high;
}

/* Whether any of the 8 bytes at s may not be plain (special_mask). */
static bool maybe_special(const unsigned char *s)
{
    return special_mask(s) != 0;
}

#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__) && \
    __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
/* The first byte from i on that is not plain, or len: its own word's
 * lowest mark tells where it lies (special_mask reads memory order so). */
static size_t skip_plain(const unsigned char *s, size_t i, size_t len)
{
    uint64_t m;
    for (; len - i >= 8; i += 8)
        if ((m = special_mask(s + i)) != 0)
            return i + (size_t)__builtin_ctzll(m) / 8;
    while (i < len && plain[s[i]])
        i++;
    return i;
}
#else
static size_t skip_plain(const unsigned char *s, size_t i, size_t len)
{
    while (len - i >= 8 && !maybe_special(s + i))
        i += 8;
    while (i < len && plain[s[i]])
        i++;
    return i;
}
#endif

/* fast_string from i on, where a byte that is not plain lies (or the end):
 * escapes and UTF-8 sequences, then on.  Apart, so that the plain strings
 * most bodies hold take no call and few registers. */
static bool fast_string_rest(fast *f, size_t i, bool *escaped)
{
    const unsigned char *s = f->s;
    size_t len = f->len, k;
    unsigned v;
    for (;;) {
        while (len - i >= 8 && !maybe_special(s + i))
            i += 8;
        while (i < len && plain[s[i]])
            i++;
        if (i >= len)
            return false;
        if (s[i] == '"') {
            f->i = i + 1;
            return true;
        }
        if (s[i] == '\\') {
            *escaped = true;
            if (i + 1 >= len)
                return false;
            if (s[i + 1] != 'u') {
                if (!strchr("\"\\/bfnrt", s[i + 1]) || s[i + 1] == '\0')
                    return false;
                i += 2;
                continue;
            }
            if (len - i < 6)
                return false;
            for (v = 0, k = 2; k < 6; k++) {
                int h = hex_digit((char)s[i + k]);
                if (h < 0)
                    return false;
                v = v * 16 + (unsigned)h;
            }
            if (v == 0 || (v >= 0xD800 && v <= 0xDFFF))
                return false;
            i += 6;
            continue;
        }
        if (s[i] < 0x80 || (k = aigw__utf8_seq((const char *)s + i, len - i)) == 0)
            return false; /* a control byte, or not UTF-8 */
        i += k;
    }
}

/* The string at f->i ('"'): true and f->i past it, *escaped when it holds
 * an escape. */
static inline bool fast_string(fast *f, bool *escaped)
{
    const unsigned char *s = f->s;
    size_t i = f->i + 1, len = f->len;
    *escaped = false;
    i = skip_plain(s, i, len); /* a tab, LF or CR there: the rest skips it */
    if (i < len && s[i] == '"') {
        f->i = i + 1;
        return true;
    }
    return fast_string_rest(f, i, escaped);
}

static bool digit_at(const fast *f, size_t i)
{
    return i < f->len && f->s[i] >= '0' && f->s[i] <= '9';
}

/* A number in JSON's own grammar at f->i. */
static bool fast_number(fast *f)
{
    size_t i = f->i;
    if (i < f->len && f->s[i] == '-')
        i++;
    if (!digit_at(f, i))
        return false;
    if (f->s[i++] != '0')
        while (digit_at(f, i))
            i++;
    if (i < f->len && f->s[i] == '.') {
        if (!digit_at(f, ++i))
            return false;
        while (digit_at(f, i))
            i++;
    }
    if (i < f->len && (f->s[i] == 'e' || f->s[i] == 'E')) {
        i++;
        if (i < f->len && (f->s[i] == '+' || f->s[i] == '-'))
            i++;
        if (!digit_at(f, i))
            return false;
        while (digit_at(f, i))
            i++;
    }
    f->i = i;
    return true;
}

static bool fast_word(fast *f, const char *w, size_t n)
{
    if (f->len - f->i < n || memcmp(f->s + f->i, w, n) != 0)
        return false;
    f->i += n;
    return true;
}

/* A scalar at f->i. */
static bool fast_scalar(fast *f)
{
    bool escaped;
    switch (f->s[f->i]) {
    case '"': return fast_string(f, &escaped);
    case 't': return fast_word(f, "true", 4);
    case 'f': return fast_word(f, "false", 5);
    case 'n': return fast_word(f, "null", 4);
    default: return fast_number(f);
    }
}

/* A top-level key (f->i at its quote) and the ':' after it: its member's
 * key, key_end and kind.  False for a key with escapes (key_is decodes
 * them: the full checks map it). */
static bool fast_key(fast *f, member *m)
{
    bool escaped;
    m->key = f->i;
    if (!fast_string(f, &escaped) || escaped)
        return false;
    m->key_end = f->i;
    m->kind = AIGW_BODY_OTHER;
    if (m->key_end - m->key == 7 && memcmp(f->s + m->key, "\"model\"", 7) == 0)
        m->kind = AIGW_BODY_MODEL;
    else if (m->key_end - m->key == 8 && memcmp(f->s + m->key, "\"models\"", 8) == 0)
        m->kind = AIGW_BODY_MODELS;
    f->i = fast_ws(f, f->i);
    if (f->i >= f->len || f->s[f->i] != ':')
        return false;
    f->i = fast_ws(f, f->i + 1);
    return f->i < f->len;
}

/* 1: a plain body, mapped; 0: not sure. */
static int fast_map(const char *s, size_t len, aigw_body_map *map)
{
    fast f = {(const unsigned char *)s, len, 0};
    uint64_t object = 1; /* bit d: level d + 1 is an object; the top one is */
    size_t depth = 1;
    member m;
    bool key_next = true; /* in an object, a key is next (else a value) */
    f.i = fast_ws(&f, 0);
    if (f.i >= len || f.s[f.i] != '{')
        return 0;
    map->open = f.i + 1;
    map->first = f.i = fast_ws(&f, f.i + 1);
    map->n = 0;
    map->has_model = map->has_models = false;
    if (f.i < len && f.s[f.i] == '}') {
        depth = 0;
        f.i++;
    }
    while (depth > 0) {
        /* a value (after its key, in an object) */
        if (key_next) {
            if (f.i >= len || f.s[f.i] != '"')
                return 0;
            if (depth == 1) {
                if (!fast_key(&f, &m))
                    return 0;
                m.value = f.i;
            } else {
                bool escaped;
                if (!fast_string(&f, &escaped))
                    return 0;
                f.i = fast_ws(&f, f.i);
                if (f.i >= len || f.s[f.i] != ':')
                    return 0;
                f.i = fast_ws(&f, f.i + 1);
                if (f.i >= len)
                    return 0;
            }
        }
        if (f.s[f.i] == '{' || f.s[f.i] == '[') {
            bool obj = f.s[f.i] == '{';
            if (depth == FAST_DEPTH)
                return 0;
            object = obj ? object | ((uint64_t)1 << depth) : object & ~((uint64_t)1 << depth);
            depth++;
            f.i = fast_ws(&f, f.i + 1);
            if (f.i >= len)
                return 0;
            if (f.s[f.i] != (obj ? '}' : ']')) {
                key_next = obj;
                continue;
            }
            depth--; /* empty: closed at once */
            f.i++;
        } else if (!fast_scalar(&f)) {
            return 0;
        }
        /* after a value: the next one, or the ends of containers */
        for (;;) {
            bool in_object = (object >> (depth - 1)) & 1;
            if (depth == 1 && in_object) {
                m.value_end = f.i;
                map_add(map, &m);
            }
            f.i = fast_ws(&f, f.i);
            if (f.i >= len)
                return 0;
            if (f.s[f.i] == ',') {
                f.i = fast_ws(&f, f.i + 1);
                if (f.i >= len)
                    return 0;
                key_next = in_object;
                break;
            }
            if (f.s[f.i] != (in_object ? '}' : ']'))
                return 0;
            f.i++;
            if (--depth == 0)
                break;
        }
    }
    return fast_ws(&f, f.i) == len ? 1 : 0;
}

/* The body parsed as one JSON object with nothing after it but whitespace
 * (cJSON_ParseWithLength alone accepts "{} trailing junk"), which the
 * scanner can walk too: cJSON takes any byte up to 0x20, NUL included, for
 * whitespace, the scanner only JSON's four.  And valid UTF-8: cJSON takes
 * any byte in a string, and the model ids read from it end up as text in
 * traces, answers and bindings. */
static cJSON *parse_object(const char *body, size_t len, refusal *why)
{
    const char *end = NULL;
    cJSON *root;
    bool control;
    size_t off;
    refusal_init(why);
    if (!body || len == 0)
        return NULL;
    if ((off = aigw__utf8_check(body, len)) < len) {
        why->bad_utf8 = off;
        return NULL;
    }
    if ((off = aigw__json_misread(body, len, true, &control)) < len) {
        *(control ? &why->bad_char : &why->bad_escape) = off;
        return NULL;
    }
    root = aigw__json_parse(body, len, &end);
    if (!root) {
        /* cJSON fails alike for bad text and for memory (its allocator is
         * the host's): the scan, which allocates nothing, tells which.  A
         * body that would have been accepted is out of memory. */
        aigw_json_verdict v = aigw__json_check(body, len, &off);
        if (v == AIGW_JSON_TOO_DEEP)
            why->too_deep = off;
        else if (v == AIGW_JSON_OK)
            why->nomem = whole_object(body, len, off);
        return NULL;
    }
    if (cJSON_IsObject(root) && end && whole_object(body, len, (size_t)(end - body)))
        return root;
    cJSON_Delete(root);
    return NULL;
}

/* The output being built.  Layout kept: the bytes up to the first member
 * (indentation included) once, then each kept member with the gap that
 * preceded it in the original (so a removed member takes its own comma with
 * it), then everything from the end of the last member on. */
typedef struct splicer {
    const char *s;
    const char *model;
    aigw_buf *out;
    size_t open;     /* just past '{' */
    size_t first;    /* the first member (or '}') */
    size_t prev_end; /* end of the previous original member */
    bool inserted;   /* "model" was absent and went out first */
    size_t n_real;   /* original members copied so far */
} splicer;

static int put(splicer *sp, size_t from, size_t to)
{
    return aigw__buf_append(sp->out, sp->s + from, to - from);
}

static int put_model(splicer *sp)
{
    return aigw__buf_json_str(sp->out, sp->model, strlen(sp->model));
}

static int put_member(splicer *sp, const member *m)
{
    int r = 0;
    if (sp->n_real == 0 && sp->inserted)
        /* After the inserted "model": a comma, then the first member's own
         * indentation again, so pretty bodies stay pretty. */
        r |= aigw__buf_append(sp->out, ",", 1) | put(sp, sp->open, sp->first);
    else if (sp->n_real > 0)
        r |= put(sp, sp->prev_end, m->key);
    if (m->kind == AIGW_BODY_MODEL)
        r |= put(sp, m->key, m->value) | put_model(sp);
    else
        r |= put(sp, m->key, m->value_end);
    sp->n_real++;
    return r;
}

/* Room for the rewrite at once: the body, and the model as often as it is
 * written (more only when it needs escapes). */
static int reserve(size_t len, const aigw_body_map *map, const char *model, aigw_buf *out)
{
    size_t i, k = 1, want;
    char *p;
    for (i = 0; i < map->n && i < AIGW_BODY_MAP_MEMBERS; i++)
        k += map->m[i].kind == AIGW_BODY_MODEL;
    want = out->len + len + k * (strlen(model) + 2) + 16;
    if (want <= out->cap)
        return 0;
    if (!(p = aigw__realloc(out->data, want)))
        return -1;
    out->data = p;
    out->cap = want;
    return 0;
}

static int splice(const char *s, size_t len, const aigw_body_map *map, const char *model,
                  aigw_buf *out)
{
    splicer sp = {s, model, out, map->open, map->first, map->first, !map->has_model, 0};
    bool rescan = map->n > AIGW_BODY_MAP_MEMBERS;
    scanner sc;
    member m;
    size_t i = 0;
    int r;
    if (rescan && scan_open(&sc, s, len) != 0)
        return -1;
    if (reserve(len, map, model, out) != 0 || put(&sp, 0, sp.first) != 0)
        return -2;
    if (sp.inserted && (aigw__buf_puts(out, "\"model\":") != 0 || put_model(&sp) != 0))
        return -2;
    for (;;) {
        if (rescan) {
            if ((r = scan_member(&sc, &m)) <= 0)
                break;
            m.kind = member_kind(s, &m);
        } else {
            if ((r = i < map->n) == 0)
                break;
            m = map->m[i++];
        }
        if (m.kind != AIGW_BODY_MODELS && put_member(&sp, &m) != 0)
            return -2;
        sp.prev_end = m.value_end;
    }
    if (r != 0)
        return -1;
    return put(&sp, sp.prev_end, len) != 0 ? -2 : 0;
}

int aigw__body_rewrite(const char *body, size_t len, const char *model, aigw_buf *out)
{
    cJSON *root;
    refusal why;
    if (!model || !out)
        return -1;
    if (!(root = parse_object(body, len, &why)))
        return why.nomem ? -2 : -1;
    cJSON_Delete(root);
    return aigw__body_splice(body, len, model, out);
}

int aigw__body_splice_map(const char *body, size_t len, const aigw_body_map *map,
                          const char *model, aigw_buf *out)
{
    size_t mark;
    int rc;
    if (!body || !map || !model || !out)
        return -1;
    mark = out->len;
    rc = splice(body, len, map, model, out);
    if (rc != 0 && out->data) {
        out->len = mark;
        out->data[mark] = '\0';
    }
    return rc;
}

int aigw__body_splice(const char *body, size_t len, const char *model, aigw_buf *out)
{
    aigw_body_map map;
    if (!body || !model || !out || map_body(body, len, &map) != 0)
        return -1;
    return aigw__body_splice_map(body, len, &map, model, out);
}

/* Whether aigw__buf_json_str writes s as it is, between its quotes. */
static bool verbatim(const char *s, size_t n)
{
    size_t i;
    unsigned char high = 0; /* bit 7 of any byte: then UTF-8 is checked */
    for (i = 0; i < n; i++) {
        if ((unsigned char)s[i] < 0x20 || s[i] == '"' || s[i] == '\\')
            return false;
        high |= (unsigned char)s[i];
    }
    return high < 0x80 || aigw__utf8_valid(s, n);
}

size_t aigw__body_splice_into(const char *body, size_t len, const aigw_body_map *map,
                              const char *model, char *dst, size_t cap)
{
    size_t i, n, out = 0, from = 0, gap;
    if (!body || !map || !model || !dst || !map->has_model || map->has_models ||
        map->n > AIGW_BODY_MAP_MEMBERS || len > cap)
        return 0;
    n = strlen(model);
    if (!verbatim(model, n))
        return 0;
    /* splice() then copies every byte but the "model" values, each of
     * which becomes the model between quotes, and drops no member */
    for (i = 0; i < map->n; i++) {
        const member *m = &map->m[i];
        if (m->kind == AIGW_BODY_MODELS)
            return 0;
        if (m->kind != AIGW_BODY_MODEL)
            continue;
        gap = m->value - from;
        if (gap > cap - out || n + 2 > cap - out - gap)
            return 0;
        memcpy(dst + out, body + from, gap);
        out += gap;
        dst[out++] = '"';
        memcpy(dst + out, model, n);
        out += n;
        dst[out++] = '"';
        from = m->value_end;
    }
    gap = len - from;
    if (gap >= cap - out)
        return 0; /* no room for the NUL */
    memcpy(dst + out, body + from, gap);
    out += gap;
    dst[out] = '\0';
    return out;
}

bool aigw__body_unchanged(const char *body, const aigw_body_map *map, const char *model)
{
    size_t i, n;
    if (!body || !map || !model || !map->has_model || map->has_models ||
        map->n > AIGW_BODY_MAP_MEMBERS)
        return false;
    n = strlen(model);
    if (!verbatim(model, n))
        return false;
    /* a string token of n + 2 bytes ends with its closing quote */
    for (i = 0; i < map->n; i++) {
        const member *m = &map->m[i];
        if (m->kind == AIGW_BODY_MODEL &&
            (m->value_end - m->value != n + 2 || body[m->value] != '"' ||
             memcmp(body + m->value + 1, model, n) != 0))
            return false;
    }
    return true;
}

/* ------------------------------------------------------------------------ */
/* The model list                                                           */
/* ------------------------------------------------------------------------ */

void aigw__strv_free(char **v, size_t n)
{
    size_t i;
    if (!v)
        return;
    for (i = 0; i < n; i++)
        aigw__free(v[i]);
    aigw__free(v);
}

/* Stores an allocated reason in *why (may be NULL): -1, or -2 when even
 * that allocation fails. */
static int refuse(char **why, const char *msg)
{
    if (!why)
        return -1;
    *why = aigw__strdup(msg);
    return *why ? -1 : -2;
}

static int refuse_fmt(char **why, const char *fmt, ...) AIGW__PRINTF(2, 3);
static int refuse_fmt(char **why, const char *fmt, ...)
{
    aigw_buf b = AIGW_BUF_INIT;
    va_list ap;
    char tmp[160];
    if (!why)
        return -1;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (aigw__buf_puts(&b, tmp) != 0) {
        aigw__buf_free(&b);
        return -2;
    }
    *why = aigw__buf_take(&b);
    return -1;
}

static int refuse_item(char **why, size_t index)
{
    return refuse_fmt(why, "\"models[%zu]\" must be a non-empty string", index);
}

/* A body parse_object refused: the first byte that is not UTF-8 (from 0,
 * as a binding indexes bytes), where the nesting passed cJSON's limit, or
 * just that it is not an object. */
static int refuse_body(char **why, const char *body, const refusal *r)
{
    size_t line, col;
    if (r->nomem)
        return -2;
    if (r->bad_utf8 != BAD)
        return refuse_fmt(why, "not valid UTF-8 at byte %zu", r->bad_utf8);
    if (r->bad_char != BAD)
        return refuse_fmt(why, "a control character (0x%02x) at byte %zu, which JSON does not "
                               "allow there", (unsigned)(unsigned char)body[r->bad_char],
                          r->bad_char);
    if (r->bad_escape != BAD)
        return refuse_fmt(why, "a \\u escape at byte %zu that is not four hex digits or is "
                               "\\u0000, which is not supported", r->bad_escape);
    if (r->too_deep != BAD) {
        char what[64];
        aigw__text_pos(body, r->too_deep, &line, &col);
        snprintf(what, sizeof what, AIGW_JSON_TOO_DEEP_FMT, CJSON_NESTING_LIMIT);
        return refuse_fmt(why, "%s at line %zu, column %zu", what, line, col);
    }
    return refuse(why, "the request body is not a JSON object");
}

static bool nonempty_string(const cJSON *v)
{
    return cJSON_IsString(v) && v->valuestring && v->valuestring[0] != '\0';
}

static int read_model(const cJSON *root, char **model, char **why)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!v)
        return refuse(why, "the request body has no \"model\"");
    if (!nonempty_string(v))
        return refuse(why, "\"model\" must be a non-empty string");
    *model = aigw__strdup(v->valuestring);
    return *model ? 0 : -2;
}

/* "models" is optional; null counts as absent, as OpenAI treats null for
 * any optional parameter. */
static int read_models(const cJSON *root, char ***models, size_t *n_models, char **why)
{
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, "models"), *v;
    size_t n = 0, i = 0;
    char **list;
    if (!arr || cJSON_IsNull(arr))
        return 0;
    if (!cJSON_IsArray(arr))
        return refuse(why, "\"models\" must be an array of model ids");
    for (v = arr->child; v; v = v->next, n++)
        if (!nonempty_string(v))
            return refuse_item(why, n);
    if (n == 0)
        return 0;
    if (!(list = aigw__calloc(n, sizeof *list)))
        return -2;
    for (v = arr->child; v; v = v->next, i++)
        if (!(list[i] = aigw__strdup(v->valuestring))) {
            aigw__strv_free(list, i);
            return -2;
        }
    *models = list;
    *n_models = n;
    return 0;
}

bool aigw__body_wants_stream(const char *body, size_t len)
{
    scanner sc;
    member m;
    if (!body || scan_open(&sc, body, len) != 0)
        return false;
    while (scan_member(&sc, &m) == 1)
        if (key_is(body, &m, "stream")) /* the first, as cJSON reads it */
            return m.value_end - m.value == 4 && memcmp(body + m.value, "true", 4) == 0;
    return false;
}

/* The model list from cJSON's tree of an accepted body (it decodes escapes). */
static int read_tree(const char *body, size_t len, char **model, char ***models,
                     size_t *n_models, char **why)
{
    cJSON *root = aigw__json_parse(body, len, NULL);
    int rc;
    if (!root) /* the text was checked: cJSON ran out of memory */
        return -2;
    rc = read_model(root, model, why);
    if (rc == 0)
        rc = read_models(root, models, n_models, why);
    cJSON_Delete(root);
    if (rc != 0) {
        aigw__free(*model);
        *model = NULL;
    }
    return rc;
}

static bool is_null(const char *body, const member *m)
{
    return m->value_end - m->value == 4 && memcmp(body + m->value, "null", 4) == 0;
}

int aigw__body_read(const char *body, size_t len, aigw_body_map *map, char **model,
                    char ***models, size_t *n_models, char **why)
{
    return aigw__body_read_in(body, len, map, NULL, 0, model, models, n_models, why);
}

int aigw__body_read_in(const char *body, size_t len, aigw_body_map *map, char *room,
                       size_t room_size, char **model, char ***models, size_t *n_models,
                       char **why)
{
    refusal bad;
    const member *m = &map->model;
    size_t n;
    *model = NULL;
    *models = NULL;
    *n_models = 0;
    if (why)
        *why = NULL;
    if (!body || fast_map(body, len, map) != 1) {
        if (check_object(body, len, map, &bad) != 0)
            return refuse_body(why, body, &bad);
    }
    /* "models" null counts as absent (read_models) */
    if (map->has_models && !is_null(body, &map->models))
        return read_tree(body, len, model, models, n_models, why);
    if (!map->has_model)
        return refuse(why, "the request body has no \"model\"");
    /* a string of one character or more: what cJSON would find between
     * its quotes, unless escapes need decoding (\u0000 was refused) */
    n = m->value_end - m->value;
    if (body[m->value] != '"' || n < 3)
        return refuse(why, "\"model\" must be a non-empty string");
    if (memchr(body + m->value + 1, '\\', n - 2))
        return read_tree(body, len, model, models, n_models, why);
    if (room && n - 2 < room_size) {
        memcpy(room, body + m->value + 1, n - 2);
        room[n - 2] = '\0';
        *model = room;
        return 0;
    }
    *model = aigw__strndup(body + m->value + 1, n - 2);
    return *model ? 0 : -2;
}

int aigw__body_models(const char *body, size_t len, char **model, char ***models,
                      size_t *n_models, char **why)
{
    aigw_body_map map;
    return aigw__body_read(body, len, &map, model, models, n_models, why);
}
