/* error.c - error objects owned by the caller, with per-problem JSON paths. */
#include "internal.h"

#include <stdio.h>
#include <string.h>

aigw_error *aigw__error_new(aigw_status code)
{
    aigw_error *e = aigw__calloc(1, sizeof *e);
    if (e)
        e->code = code;
    return e;
}

/* One problem is one line: control bytes that came from the input (a field
 * name, a file name) are written as \xNN so they cannot break or forge lines. */
static char *escape_controls(char *s)
{
    size_t i, n = 0, len = strlen(s);
    char *out, *o;
    for (i = 0; i < len; i++)
        n += ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) ? 4 : 1;
    if (n == len)
        return s;
    out = aigw__malloc(n + 1);
    if (!out) {
        for (i = 0; i < len; i++)
            if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
                s[i] = '?';
        return s;
    }
    for (i = 0, o = out; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f) {
            snprintf(o, 5, "\\x%02x", c);
            o += 4;
        } else {
            *o++ = (char)c;
        }
    }
    *o = '\0';
    aigw__free(s);
    return out;
}

int aigw__error_addv(aigw_error *e, const char *path, const char *fmt, va_list ap)
{
    va_list ap2;
    int n;
    char *p;
    if (!e)
        return -1;
    if (e->n == e->cap) {
        size_t cap = e->cap ? e->cap * 2 : 4;
        char **np = aigw__realloc(e->paths, cap * sizeof *np);
        if (!np)
            return -1;
        e->paths = np;
        np = aigw__realloc(e->problems, cap * sizeof *np);
        if (!np)
            return -1;
        e->problems = np;
        e->cap = cap;
    }
    va_copy(ap2, ap);
    n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return -1;
    p = aigw__malloc((size_t)n + 1);
    if (!p)
        return -1;
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    e->paths[e->n] = aigw__strdup(path ? path : "");
    if (!e->paths[e->n]) {
        aigw__free(p);
        return -1;
    }
    e->paths[e->n] = escape_controls(e->paths[e->n]);
    e->problems[e->n++] = escape_controls(p);
    return 0;
}

int aigw__error_add(aigw_error *e, const char *path, const char *fmt, ...)
{
    va_list ap;
    int r;
    va_start(ap, fmt);
    r = aigw__error_addv(e, path, fmt, ap);
    va_end(ap);
    return r;
}

aigw_error *aigw__error_finish(aigw_error *e)
{
    aigw_buf b = AIGW_BUF_INIT;
    if (!e)
        return NULL;
    aigw__free(e->message);
    e->message = NULL;
    if (e->n == 0) {
        aigw__buf_puts(&b, aigw_status_name(e->code));
    } else {
        if (e->paths[0][0])
            aigw__buf_printf(&b, "%s: ", e->paths[0]);
        aigw__buf_puts(&b, e->problems[0]);
        if (e->n > 1)
            aigw__buf_printf(&b, " (and %zu more problem%s)", e->n - 1, e->n > 2 ? "s" : "");
    }
    e->message = b.data; /* may be NULL on no memory; the getter copes */
    return e;
}

aigw_status aigw__fail(aigw_error **err, aigw_status code, const char *fmt, ...)
{
    va_list ap;
    aigw_error *e;
    if (!err)
        return code;
    e = aigw__error_new(code);
    if (e) {
        va_start(ap, fmt);
        aigw__error_addv(e, "", fmt, ap);
        va_end(ap);
    }
    *err = aigw__error_finish(e);
    return code;
}

aigw_status aigw_error_code(const aigw_error *err)
{
    return err ? err->code : AIGW_EINVAL;
}

const char *aigw_error_message(const aigw_error *err)
{
    if (!err)
        return "";
    return err->message ? err->message : aigw_status_name(err->code);
}

size_t aigw_error_count(const aigw_error *err)
{
    if (!err)
        return 0;
    return err->n ? err->n : 1;
}

const char *aigw_error_path(const aigw_error *err, size_t i)
{
    if (!err)
        return NULL;
    if (err->n == 0)
        return i == 0 ? "" : NULL;
    return i < err->n ? err->paths[i] : NULL;
}

const char *aigw_error_problem(const aigw_error *err, size_t i)
{
    if (!err)
        return NULL;
    if (err->n == 0)
        return i == 0 ? aigw_error_message(err) : NULL;
    return i < err->n ? err->problems[i] : NULL;
}

void aigw_error_free(aigw_error *err)
{
    size_t i;
    if (!err)
        return;
    for (i = 0; i < err->n; i++) {
        aigw__free(err->paths[i]);
        aigw__free(err->problems[i]);
    }
    aigw__free(err->paths);
    aigw__free(err->problems);
    aigw__free(err->message);
    aigw__free(err);
}

const char *aigw_status_name(aigw_status status)
{
    switch (status) {
    case AIGW_OK: return "AIGW_OK";
    case AIGW_EINVAL: return "AIGW_EINVAL";
    case AIGW_ENOMEM: return "AIGW_ENOMEM";
    case AIGW_ECONFIG: return "AIGW_ECONFIG";
    case AIGW_EIO: return "AIGW_EIO";
    case AIGW_EREQUEST: return "AIGW_EREQUEST";
    case AIGW_EVERSION: return "AIGW_EVERSION";
    case AIGW_ETRANSPORT: return "AIGW_ETRANSPORT";
    case AIGW_ECANCELLED: return "AIGW_ECANCELLED";
    }
    return "AIGW_UNKNOWN";
}

int aigw_version_number(void)
{
    return AIGW_VERSION_NUMBER;
}

const char *aigw_version_string(void)
{
    return AIGW_VERSION_STRING;
}
