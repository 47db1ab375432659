/* headers.c - a small list of HTTP headers, names lower-cased.
 *
 * A list is one allocation: a head, the entries, then the bytes of the
 * names and values (each NUL-terminated) - so an answer's headers cost one
 * malloc and one free however many lines it has.  h->v points just past
 * the head; h->cap counts the entries' room.  A value replaced (or a
 * header dropped) leaves its old bytes in the block until the list is
 * freed; a list that runs out of room moves to a new block, the part that
 * ran short (entries or text) doubled, its entries re-pointed. */
#include "internal.h"

#include <stdint.h>
#include <string.h>

typedef struct hdrs_head {
    size_t size; /* bytes of room for text */
    size_t used;
} hdrs_head;

_Static_assert(sizeof(hdrs_head) % _Alignof(aigw_hdr) == 0, "entries follow the head aligned");

#define MIN_ENTRIES 8
#define MIN_TEXT 512

static hdrs_head *head_of(const aigw_hdrs *h)
{
    return (hdrs_head *)(void *)((char *)h->v - sizeof(hdrs_head));
}

static char *text_of(const aigw_hdrs *h)
{
    return (char *)(h->v + h->cap);
}

/* At least want, doubling from have (or min): 0 when it would overflow. */
static size_t grown(size_t have, size_t min, size_t want)
{
    size_t n = have > min ? have : min;
    while (n < want) {
        if (n > SIZE_MAX / 2)
            return 0;
        n *= 2;
    }
    return n;
}

/* reserve() when the block lacks room. */
static int grow(aigw_hdrs *h, size_t entries, size_t bytes)
{
    hdrs_head *old = h->v ? head_of(h) : NULL, *nh;
    size_t size = old ? old->size : 0, used = old ? old->used : 0, cap, i;
    char *otext, *ntext;
    aigw_hdr *nv;
    if (entries > SIZE_MAX / 2 - h->n || bytes > SIZE_MAX / 2 - used)
        return -1;
    cap = grown(h->cap, MIN_ENTRIES, h->n + entries);
    size = grown(size, MIN_TEXT, used + bytes);
    if (cap == 0 || size == 0 || cap > (SIZE_MAX / 2 - size) / sizeof *nv)
        return -1;
    nh = aigw__malloc(sizeof *nh + cap * sizeof *nv + size);
    if (!nh)
        return -1;
    nv = (aigw_hdr *)(void *)(nh + 1);
    ntext = (char *)(nv + cap);
    if (old) {
        otext = text_of(h);
        memcpy(ntext, otext, used);
        for (i = 0; i < h->n; i++) {
            nv[i].name = ntext + (h->v[i].name - otext);
            nv[i].value = ntext + (h->v[i].value - otext);
        }
        aigw__free(old);
    }
    nh->size = size;
    nh->used = used;
    h->v = nv;
    h->cap = cap;
    return 0;
}

/* 8 bytes of src lower-cased into dst (an ASCII capital gains 0x20;
 * nothing else changes). */
static void lower8(char *dst, const char *src)
{
    const uint64_t ones = 0x0101010101010101ULL, high = 0x8080808080808080ULL;
    uint64_t w, h, upper;
    memcpy(&w, src, 8);
    h = w & ~high;
    /* per byte, its bit 7: >= 'A', not > 'Z', and ASCII */
    upper = (h + ones * (0x80 - 'A')) & ~(h + ones * (0x7f - 'Z')) & ~w & high;
    w |= upper >> 2;
    memcpy(dst, &w, 8);
}

/* lower8 for 4 bytes. */
static void lower4(char *dst, const char *src)
{
    const uint32_t ones = 0x01010101U, high = 0x80808080U;
    uint32_t w, h, upper;
    memcpy(&w, src, 4);
    h = w & ~high;
    upper = (h + ones * (0x80 - 'A')) & ~(h + ones * (0x7f - 'Z')) & ~w & high;
    w |= upper >> 2;
    memcpy(dst, &w, 4);
}

/* n bytes of src lower-cased into dst: eight (or four) at a time, the
 * last eight (four) overlapping those before them (lower-casing twice
 * changes nothing). */
static inline void lower_copy(char *dst, const char *src, size_t n)
{
    size_t i;
    if (n < 8) {
        if (n >= 4) {
            lower4(dst, src);
            lower4(dst + n - 4, src + n - 4);
            return;
        }
        for (i = 0; i < n; i++)
            dst[i] = (char)aigw__lower((unsigned char)src[i]);
        return;
    }
    for (i = 0; n - i > 8; i += 8)
        lower8(dst + i, src + i);
    lower8(dst + n - 8, src + n - 8);
}

/* n bytes from src to dst: the short values most headers hold as two
 * overlapping words, without a call. */
static inline void copy_short(char *dst, const char *src, size_t n)
{
    uint64_t a, b;
    uint32_t c, d;
    if (n >= 8 && n <= 16) {
        memcpy(&a, src, 8);
        memcpy(&b, src + n - 8, 8);
        memcpy(dst, &a, 8);
        memcpy(dst + n - 8, &b, 8);
    } else if (n >= 4 && n < 8) {
        memcpy(&c, src, 4);
        memcpy(&d, src + n - 4, 4);
        memcpy(dst, &c, 4);
        memcpy(dst + n - 4, &d, 4);
    } else if (n) {
        memcpy(dst, src, n);
    }
}

/* Room for `entries` more entries and `bytes` more bytes of text.  0, or -1
 * when out of memory (h as it was). */
static inline int reserve(aigw_hdrs *h, size_t entries, size_t bytes)
{
    const hdrs_head *hd;
    if (h->v) {
        hd = head_of(h);
        if (entries <= h->cap - h->n && bytes <= hd->size - hd->used)
            return 0;
    }
    return grow(h, entries, bytes);
}

/* aigw__hdrs_addn, in line where it is called; lower: the name is to be
 * lower-cased (false: it is already). */
static inline int add_n(aigw_hdrs *h, const char *name, size_t nlen, const char *value,
                        size_t vlen, bool lower)
{
    hdrs_head *hd;
    char *p;
    if (nlen > SIZE_MAX / 4 || vlen > SIZE_MAX / 4 || reserve(h, 1, nlen + vlen + 2) != 0)
        return -1;
    hd = head_of(h);
    p = text_of(h) + hd->used;
    if (lower)
        lower_copy(p, name, nlen);
    else
        memcpy(p, name, nlen);
    p[nlen] = '\0';
    copy_short(p + nlen + 1, value, vlen);
    p[nlen + 1 + vlen] = '\0';
    h->v[h->n].name = p;
    h->v[h->n].value = p + nlen + 1;
    hd->used += nlen + vlen + 2;
    h->n++;
    return 0;
}

int aigw__hdrs_addn(aigw_hdrs *h, const char *name, size_t nlen, const char *value, size_t vlen)
{
    return add_n(h, name, nlen, value, vlen, true);
}

int aigw__hdrs_addn_lower(aigw_hdrs *h, const char *name, size_t nlen, const char *value,
                          size_t vlen)
{
    return add_n(h, name, nlen, value, vlen, false);
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

size_t aigw__hdrs_line_name(const char *p, size_t len, size_t *colon)
{
    const char *c;
    size_t nend;
    if (!len || is_ows(p[0]) || !(c = memchr(p, ':', len)))
        return 0;
    nend = (size_t)(c - p);
    if (colon)
        *colon = nend;
    while (nend && is_ows(p[nend - 1]))
        nend--;
    return nend;
}

int aigw__hdrs_add_line(aigw_hdrs *h, const char *p, size_t len)
{
    size_t nend, colon = 0, vs, ve;
    if (len && is_ows(p[0]))
        return aigw__hdrs_unfold(h, p, len);
    nend = aigw__hdrs_line_name(p, len, &colon);
    if (nend == 0)
        return 0; /* not a header line: ignored */
    vs = colon + 1;
    while (vs < len && is_ows(p[vs]))
        vs++;
    ve = len;
    while (ve > vs && is_ows(p[ve - 1]))
        ve--;
    return add_n(h, p, nend, p + vs, ve - vs, true);
}

int aigw__hdrs_add(aigw_hdrs *h, const char *name, const char *value)
{
    return aigw__hdrs_addn(h, name, strlen(name), value, strlen(value));
}

int aigw__hdrs_reserve_for(aigw_hdrs *h, const aigw_hdrs *src)
{
    if (!src->v)
        return 0;
    return reserve(h, src->n, head_of(src)->used);
}

int aigw__hdrs_unfold(aigw_hdrs *h, const char *p, size_t len)
{
    hdrs_head *hd;
    char *v, *end;
    size_t old;
    while (len && is_ows(*p)) {
        p++;
        len--;
    }
    if (h->n == 0 || len == 0)
        return 0;
    old = strlen(h->v[h->n - 1].value);
    if (len > SIZE_MAX / 4 || reserve(h, 0, old + len + 2) != 0)
        return -1;
    hd = head_of(h);
    v = h->v[h->n - 1].value;
    end = text_of(h) + hd->used;
    if (v + old + 1 != end) { /* not the last bytes: a copy at the end */
        memcpy(end, v, old + 1);
        h->v[h->n - 1].value = v = end;
        hd->used += old + 1;
    }
    v[old] = ' ';
    memcpy(v + old + 1, p, len);
    v[old + 1 + len] = '\0';
    hd->used += len + 1;
    return 0;
}

int aigw__hdrs_set_value(aigw_hdrs *h, size_t i, const char *value)
{
    size_t n = strlen(value), old = strlen(h->v[i].value);
    hdrs_head *hd;
    char *p;
    if (n > old && reserve(h, 0, n + 1) != 0)
        return -1;
    /* the old bytes may be a secret's: wiped, not left in the block */
    aigw__wipe(h->v[i].value, old);
    if (n <= old) {
        memcpy(h->v[i].value, value, n + 1);
        return 0;
    }
    hd = head_of(h);
    p = text_of(h) + hd->used;
    memcpy(p, value, n + 1);
    hd->used += n + 1;
    h->v[i].value = p;
    return 0;
}

const char *aigw__hdrs_get(const aigw_hdrs *h, const char *name)
{
    size_t i;
    if (!h)
        return NULL;
    for (i = 0; i < h->n; i++)
        if (aigw__strcasecmp(h->v[i].name, name) == 0)
            return h->v[i].value;
    return NULL;
}

void *aigw__hdrs_block(const aigw_hdrs *h)
{
    return h->v ? (void *)head_of(h) : NULL;
}

size_t aigw__hdrs_head_bytes(void)
{
    return sizeof(hdrs_head);
}

size_t aigw__hdrs_bytes(const aigw_hdrs *h)
{
    return h->v ? sizeof(hdrs_head) + h->cap * sizeof *h->v + head_of(h)->size : 0;
}

void aigw__hdrs_clear(aigw_hdrs *h)
{
    if (h->v)
        head_of(h)->used = 0;
    h->n = 0;
}

void aigw__hdrs_free(aigw_hdrs *h)
{
    if (h->v)
        aigw__free(head_of(h));
    h->v = NULL;
    h->n = h->cap = 0;
}
