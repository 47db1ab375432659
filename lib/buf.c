/* buf.c - a growable, always NUL-terminated byte buffer. */
#include "internal.h"

#include <stdio.h>
#include <string.h>

static int buf_reserve(aigw_buf *b, size_t extra)
{
    size_t need, cap;
    char *p;
    if (extra > SIZE_MAX - b->len - 1)
        return -1;
    need = b->len + extra + 1;
    if (need <= b->cap)
        return 0;
    cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    p = aigw__realloc(b->data, cap);
    if (!p)
        return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

int aigw__buf_append(aigw_buf *b, const void *data, size_t len)
{
    if (buf_reserve(b, len) != 0)
        return -1;
    if (len)
        memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
    return 0;
}

int aigw__buf_puts(aigw_buf *b, const char *s)
{
    return aigw__buf_append(b, s, strlen(s));
}

int aigw__buf_printf(aigw_buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;
    /* Print into the spare room first: one pass in the common case. */
    if (buf_reserve(b, 64) != 0)
        return -1;
    va_start(ap, fmt);
    n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->data[b->len] = '\0';
        return -1;
    }
    if ((size_t)n >= b->cap - b->len) {
        if (buf_reserve(b, (size_t)n) != 0) {
            b->data[b->len] = '\0';
            return -1;
        }
        va_start(ap, fmt);
        vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    b->len += (size_t)n;
    return 0;
}

int aigw__buf_json_str(aigw_buf *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t i, start = 0;
    char *p;
    /* printable ASCII but '"' and '\\' (most strings): as it is, at once */
    for (i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] >= 0x80 || s[i] == '"' ||
            s[i] == '\\')
            break;
    if (i == len) {
        if (len > SIZE_MAX - 2 || buf_reserve(b, len + 2) != 0)
            return -1;
        p = b->data + b->len;
        p[0] = '"';
        if (len)
            memcpy(p + 1, s, len);
        p[len + 1] = '"';
        b->len += len + 2;
        b->data[b->len] = '\0';
        return 0;
    }
    if (aigw__buf_append(b, "\"", 1) != 0)
        return -1;
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[7];
        size_t elen = 2, k;
        if (c >= 0x80) {
            /* Well-formed UTF-8 as it is; any other byte becomes U+FFFD,
             * so the text is valid JSON whatever came in. */
            if ((k = aigw__utf8_seq(s + i, len - i)) > 0) {
                i += k - 1;
                continue;
            }
            if (aigw__buf_append(b, s + start, i - start) != 0 ||
                aigw__buf_append(b, "\\ufffd", 6) != 0)
                return -1;
            start = i + 1;
            continue;
        }
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        esc[0] = '\\';
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        default:
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            elen = 6;
        }
        if (aigw__buf_append(b, s + start, i - start) != 0 || aigw__buf_append(b, esc, elen) != 0)
            return -1;
        start = i + 1;
    }
    if (aigw__buf_append(b, s + start, len - start) != 0)
        return -1;
    return aigw__buf_append(b, "\"", 1);
}

int aigw__buf_json_cstr(aigw_buf *b, const char *s)
{
    if (!s)
        return aigw__buf_puts(b, "null");
    return aigw__buf_json_str(b, s, strlen(s));
}

char *aigw__buf_take(aigw_buf *b)
{
    char *d = b->data;
    if (!d)
        d = aigw__strdup("");
    b->data = NULL;
    b->len = b->cap = 0;
    return d;
}

void aigw__buf_free(aigw_buf *b)
{
    aigw__free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

void aigw__buf_wipe_free(aigw_buf *b)
{
    aigw__wipe(b->data, b->cap);
    aigw__buf_free(b);
}
