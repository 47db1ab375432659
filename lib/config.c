/* config.c - a gateway file (ngrok AI Gateway's own resource shapes) into an
 * immutable, reference-counted aigw_config.
 *
 * Validation reports every problem it finds, each at its JSON path, and
 * carries on after the first: someone fixing a file wants the whole list.
 * Every string and member name must be valid UTF-8; that is checked first,
 * on the whole tree, and the rest only once it holds (the rest quotes
 * strings in problems and copies them out, for bindings that read them as
 * text).  URLs are read by libcurl's URL API (aigw__url_parse).
 * ngrok's schemas forbid unknown members (additionalProperties: false), so
 * do we.  Secrets (key values, the ngrok access key) are copied out of the
 * cJSON tree, never named in a problem, and wiped wherever they lie once
 * they are no longer needed. */
#include "internal.h"
#include "htable.h" /* aigw__siphash24 */

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PATH_CAP 512
#define ID_CAP 256
#define MAX_SECRET_FILE ((size_t)64 * 1024)
/* A secret becomes an HTTP header value: HTTP servers refuse a header line
 * much past 8 KiB (nginx, Go's net/http per line; libcurl's own send
 * buffer), so a longer key would fail every request as a network error. */
#define MAX_SECRET ((size_t)8192)
#define MAX_CONFIG_FILE ((size_t)16 * 1024 * 1024)
#define MAX_URL 2048
#define MAX_JSON_INT ((int64_t)9007199254740991) /* 2^53 - 1: exact in a double */

/* An index of what the parse has seen, hash -> position: open addressing
 * with linear probing, sized once for all its entries, so that the checks
 * for duplicates and the lookups by id stay linear in the size of the file
 * (a list searched item by item made 40,000 keys take 20 s).  A hit is only
 * a candidate: the caller compares (idx_find_str does, for strings). */
typedef struct idx_slot {
    uint64_t hash;
    size_t pos; /* position + 1; 0: empty */
} idx_slot;
typedef struct idx {
    idx_slot *v;
    size_t mask; /* capacity - 1 */
} idx;

typedef struct parser {
    aigw_config *cfg;
    aigw_akc *akc; /* the access key configuration being read */
    aigw_error *e;
    bool oom;
    bool bare;
    uint8_t sipkey[16]; /* the indexes' hash key, random per parse */
    idx key_ids;        /* providerKeys by id */
    idx akc_names;      /* access key configurations by name */
    idx access_ids;     /* accessKeys by id */
    idx access_values;  /* accessKeys by value */
    char path[PATH_CAP]; /* where we are, e.g. "providerKeys[2].valueFrom" */
    size_t plen;
} parser;

/* ------------------------------------------------------------------------ */
/* Paths, problems, allocations                                             */
/* ------------------------------------------------------------------------ */

static void path_put(parser *p, int n)
{
    size_t room = PATH_CAP - 1 - p->plen;
    if (n > 0 && (size_t)n <= room) {
        p->plen += (size_t)n;
    } else if (n > 0) {
        /* cut short, but never inside a character: the names put in a
         * path are valid UTF-8, so what is not is a character cut */
        p->plen += aigw__utf8_check(p->path + p->plen, room);
        p->path[p->plen] = '\0';
    }
}

/* Appends ".name" ("name" at the root); returns the mark to pop back to. */
static size_t path_field(parser *p, const char *name)
{
    size_t mark = p->plen;
    path_put(p, snprintf(p->path + p->plen, PATH_CAP - p->plen, "%s%s", p->plen ? "." : "",
                         name));
    return mark;
}

static size_t path_index(parser *p, size_t i)
{
    size_t mark = p->plen;
    path_put(p, snprintf(p->path + p->plen, PATH_CAP - p->plen, "[%zu]", i));
    return mark;
}

static void path_pop(parser *p, size_t mark)
{
    p->plen = mark;
    p->path[mark] = '\0';
}

static void problemv(parser *p, const char *fmt, va_list ap)
{
    if (aigw__error_addv(p->e, p->path, fmt, ap) != 0)
        p->oom = true;
}

/* One problem at the current path. */
static void problem(parser *p, const char *fmt, ...) AIGW__PRINTF(2, 3);
static void problem(parser *p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    problemv(p, fmt, ap);
    va_end(ap);
}

/* One problem at member `field` of the current path. */
static void problem_at(parser *p, const char *field, const char *fmt, ...) AIGW__PRINTF(3, 4);
static void problem_at(parser *p, const char *field, const char *fmt, ...)
{
    va_list ap;
    size_t mark = path_field(p, field);
    va_start(ap, fmt);
    problemv(p, fmt, ap);
    va_end(ap);
    path_pop(p, mark);
}

static char *str_copy(parser *p, const char *s)
{
    char *d = aigw__strdup(s);
    if (!d)
        p->oom = true;
    return d;
}

static void *zalloc(parser *p, size_t n, size_t size)
{
    void *v = aigw__calloc(n, size);
    if (!v)
        p->oom = true;
    return v;
}

/* ---- the parse's indexes ---- */

#define IDX_NONE SIZE_MAX

/* An index for n entries (at most half full); false when memory ran out. */
static bool idx_init(parser *p, idx *x, size_t n)
{
    size_t cap = 16;
    while (cap / 2 < n && cap < SIZE_MAX / 4)
        cap *= 2;
    if (!(x->v = aigw__calloc(cap, sizeof *x->v))) {
        p->oom = true;
        return false;
    }
    x->mask = cap - 1;
    return true;
}

static void idx_free(idx *x)
{
    aigw__free(x->v);
    x->v = NULL;
    x->mask = 0;
}

/* The next position filed under hash h, from the probe cursor *at (start
 * it at h); IDX_NONE after the last. */
static size_t idx_next(const idx *x, uint64_t h, size_t *at)
{
    if (!x->v)
        return IDX_NONE;
    for (;; (*at)++) {
        const idx_slot *sl = &x->v[*at & x->mask];
        if (sl->pos == 0)
            return IDX_NONE;
        if (sl->hash == h) {
            (*at)++;
            return sl->pos - 1;
        }
    }
}

static void idx_add(idx *x, uint64_t h, size_t pos)
{
    size_t at = (size_t)h;
    if (!x->v)
        return;
    while (x->v[at & x->mask].pos != 0)
        at++;
    x->v[at & x->mask].hash = h;
    x->v[at & x->mask].pos = pos + 1;
}

/* The string filed at position i of the table an index covers (a key's id,
 * a configuration's name). */
typedef const char *(*idx_str_fn)(const aigw_config *cfg, size_t i);

/* The position filed under h whose string is s, or IDX_NONE.  h is s's
 * hash, taken once by the caller, who files s under it when it is new. */
static size_t idx_find_str(const idx *x, uint64_t h, const char *s, idx_str_fn str,
                           const aigw_config *cfg)
{
    size_t at = (size_t)h, j;
    while ((j = idx_next(x, h, &at)) != IDX_NONE && strcmp(str(cfg, j), s) != 0)
        ;
    return j;
}

static uint64_t hash_bytes(const parser *p, const void *s, size_t n)
{
    return aigw__siphash24(p->sipkey, s, n);
}

static uint64_t hash_str(const parser *p, const char *s)
{
    return hash_bytes(p, s, strlen(s));
}

/* Strings that may be absent, and a secret's bytes, as one hash. */
static uint64_t hash_tuple(const parser *p, const char *a, const char *b, const aigw_secret *v)
{
    aigw_sip st;
    const unsigned char has[3] = {a != NULL, b != NULL, v && v->value};
    aigw__sip_init(&st, p->sipkey);
    aigw__sip_update(&st, has, sizeof has);
    if (a)
        aigw__sip_str(&st, a);
    if (b)
        aigw__sip_str(&st, b);
    if (v && v->value) /* has[2], said so that an optimizer sees v is not NULL */
        aigw__sip_update(&st, v->value, v->len);
    return aigw__sip_final(&st);
}


/* ------------------------------------------------------------------------ */
/* JSON values                                                              */
/* ------------------------------------------------------------------------ */

static const char *kind(const cJSON *v)
{
    if (cJSON_IsString(v))
        return "a string";
    if (cJSON_IsNumber(v))
        return "a number";
    if (cJSON_IsBool(v))
        return "a boolean";
    if (cJSON_IsArray(v))
        return "an array";
    if (cJSON_IsObject(v))
        return "an object";
    return "null";
}

static void unknown_field(parser *p, const char *name, const char *const names[])
{
    char list[512];
    size_t i, n = 0;
    list[0] = '\0';
    for (i = 0; names[i] && n < sizeof list; i++)
        n += (size_t)snprintf(list + n, sizeof list - n, "%s%s", i ? ", " : "", names[i]);
    problem_at(p, name, "unknown field (expected one of: %s)", list);
}

/* Checks that obj (at the current path) is an object holding only the
 * NULL-terminated names, each at most once, and sets got[i] to member
 * names[i] or NULL.  False when obj is not an object. */
static bool members(parser *p, const cJSON *obj, const char *const names[], const cJSON *got[])
{
    const cJSON *c;
    size_t i;
    for (i = 0; names[i]; i++)
        got[i] = NULL;
    if (!cJSON_IsObject(obj)) {
        problem(p, "expected an object, got %s", kind(obj));
        return false;
    }
    cJSON_ArrayForEach(c, obj) {
        for (i = 0; names[i] && strcmp(names[i], c->string) != 0; i++)
            ;
        if (!names[i])
            unknown_field(p, c->string, names);
        else if (got[i])
            problem_at(p, c->string, "duplicate field");
        else
            got[i] = c;
    }
    return true;
}

/* Characters, not bytes: ngrok's maxLength counts UTF-8 characters. */
static size_t utf8_len(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

/* v (at the current path) as a string of min..max characters, or NULL after
 * reporting why not. */
static const char *str_check(parser *p, const cJSON *v, size_t min, size_t max)
{
    size_t n;
    if (!cJSON_IsString(v)) {
        problem(p, "expected a string, got %s", kind(v));
        return NULL;
    }
    n = utf8_len(v->valuestring);
    if (n < min) {
        problem(p, "must not be empty");
        return NULL;
    }
    if (n > max) {
        problem(p, "must be at most %zu characters", max);
        return NULL;
    }
    return v->valuestring;
}

/* Member `field` (v, possibly absent) as a string; NULL when absent or bad. */
static const char *get_str(parser *p, const char *field, const cJSON *v, bool required,
                           size_t min, size_t max)
{
    const char *s = NULL;
    size_t mark = path_field(p, field);
    if (v)
        s = str_check(p, v, min, max);
    else if (required)
        problem(p, "required field is missing");
    path_pop(p, mark);
    return s;
}

static bool is_array(parser *p, const cJSON *v)
{
    if (cJSON_IsArray(v))
        return true;
    problem(p, "expected an array, got %s", kind(v));
    return false;
}

/* A zeroed C array as long as the JSON array v (at the current path), or
 * NULL when v is not an array (reported) or memory ran out. */
static void *new_array(parser *p, const cJSON *v, size_t size, size_t *n)
{
    *n = 0;
    if (!is_array(p, v))
        return NULL;
    *n = (size_t)cJSON_GetArraySize(v);
    return zalloc(p, *n, size);
}

typedef void (*item_fn)(parser *p, const cJSON *item, size_t i, void *ctx);

/* Calls fn on each item of array v with the path at "[i]". */
static void each(parser *p, const cJSON *v, item_fn fn, void *ctx)
{
    const cJSON *item;
    size_t i = 0;
    cJSON_ArrayForEach(item, v) {
        size_t mark;
        if (p->oom)
            return;
        mark = path_index(p, i);
        fn(p, item, i++, ctx);
        path_pop(p, mark);
    }
}

/* An optional array member whose items fn only checks. */
static void parse_list(parser *p, const char *field, const cJSON *v, item_fn fn)
{
    size_t mark;
    if (!v)
        return;
    mark = path_field(p, field);
    if (is_array(p, v))
        each(p, v, fn, NULL);
    path_pop(p, mark);
}

/* An integer member in [min, max].  Absent, null when nullable, or bad:
 * false and *out untouched. */
static bool get_int(parser *p, const char *field, const cJSON *v, int64_t min, int64_t max,
                    bool nullable, int64_t *out)
{
    size_t mark;
    bool ok = false;
    if (!v || (nullable && cJSON_IsNull(v)))
        return false;
    mark = path_field(p, field);
    if (!cJSON_IsNumber(v))
        problem(p, "expected an integer, got %s", kind(v));
    else if (!(v->valuedouble >= (double)min && v->valuedouble <= (double)max))
        problem(p, "must be between %lld and %lld", (long long)min, (long long)max);
    else if ((double)(int64_t)v->valuedouble != v->valuedouble)
        problem(p, "expected an integer, got a fraction");
    else {
        *out = (int64_t)v->valuedouble;
        ok = true;
    }
    path_pop(p, mark);
    return ok;
}

/* How much of s (valid UTF-8) a problem quotes: at most max bytes, whole
 * characters. */
static size_t quoted(const char *s, size_t max)
{
    return aigw__utf8_prefix(s, strlen(s), max);
}

/* A bound for a problem, in the largest unit that divides it: "1ms", "1s",
 * "1h". */
static const char *ms_text(int64_t ms, char *buf, size_t n)
{
    static const struct {
        int64_t ms;
        const char *unit;
    } units[] = {{3600000, "h"}, {60000, "m"}, {1000, "s"}};
    size_t i;
    for (i = 0; i < sizeof units / sizeof units[0]; i++)
        if (ms > 0 && ms % units[i].ms == 0) {
            snprintf(buf, n, "%lld%s", (long long)(ms / units[i].ms), units[i].unit);
            return buf;
        }
    snprintf(buf, n, "%lldms", (long long)ms);
    return buf;
}

/* A Go duration member ("30s", "1m30s") in [min_ms, max_ms], into *out. */
static void get_duration_in(parser *p, const char *field, const cJSON *v, int64_t min_ms,
                            int64_t max_ms, int64_t *out)
{
    char bound[32];
    int64_t ms;
    size_t mark;
    if (!v)
        return;
    mark = path_field(p, field);
    if (!cJSON_IsString(v))
        problem(p, "expected a string (a duration such as \"30s\"), got %s", kind(v));
    else if (aigw__parse_duration(v->valuestring, &ms) != 0)
        problem(p, "'%.*s' is not a valid duration (Go syntax, e.g. \"30s\", \"1m30s\", "
                   "\"500ms\")", (int)quoted(v->valuestring, 40), v->valuestring);
    else if (ms < min_ms)
        problem(p, "must be at least %s", ms_text(min_ms, bound, sizeof bound));
    else if (ms > max_ms)
        problem(p, "must be at most %s", ms_text(max_ms, bound, sizeof bound));
    else
        *out = ms;
    path_pop(p, mark);
}

/* A Go duration member of at least min_ms, into *out. */
static void get_duration(parser *p, const char *field, const cJSON *v, int64_t min_ms,
                         int64_t *out)
{
    get_duration_in(p, field, v, min_ms, INT64_MAX, out);
}

/* ------------------------------------------------------------------------ */
/* Files (config files and key files)                                       */
/* ------------------------------------------------------------------------ */

/* Grows by copy and wipe rather than realloc: the bytes may be a secret,
 * and realloc would leave a copy behind in freed memory. */
static int grow_wiped(aigw_buf *b, size_t cap)
{
    char *d = aigw__malloc(cap);
    if (!d)
        return -1;
    if (b->data) {
        memcpy(d, b->data, b->len);
        aigw__wipe(b->data, b->cap);
        aigw__free(b->data);
    }
    b->data = d;
    b->cap = cap;
    return 0;
}

/* Reads fd to its end into b, at most max bytes.  hint: the expected size. */
static int read_fd(int fd, size_t max, size_t hint, aigw_buf *b, int *errnum)
{
    size_t limit = max + 2; /* one byte too many, to notice, and the NUL */
    size_t first = hint > 0 ? hint + 2 : 4096;
    if (grow_wiped(b, first < limit ? first : limit) != 0)
        return -2;
    for (;;) {
        ssize_t r;
        if (b->len + 1 == b->cap) {
            size_t cap = b->cap * 2 < limit ? b->cap * 2 : limit;
            if (b->cap == limit)
                return -3;
            if (grow_wiped(b, cap) != 0)
                return -2;
        }
        r = read(fd, b->data + b->len, b->cap - 1 - b->len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            *errnum = errno;
            return -1;
        }
        if (r == 0)
            break;
        b->len += (size_t)r;
        if (b->len > max)
            return -3;
    }
    b->data[b->len] = '\0';
    return 0;
}

/* A whole file into b (which the caller wipes: it may hold secrets).
 * 0; -1 with *errnum; -2 no memory; -3 larger than max. */
static int read_file(const char *path, size_t max, aigw_buf *b, int *errnum)
{
    struct stat st;
    size_t hint = 0;
    int rc, fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        *errnum = errno;
        return -1;
    }
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
        if ((uint64_t)st.st_size > (uint64_t)max) {
            close(fd);
            return -3;
        }
        hint = (size_t)st.st_size;
    }
    rc = read_fd(fd, max, hint, b, errnum);
    close(fd);
    return rc;
}

static const char *errno_text(int errnum, char *buf, size_t n)
{
    if (strerror_r(errnum, buf, n) != 0)
        snprintf(buf, n, "error %d", errnum);
    return buf;
}

/* ------------------------------------------------------------------------ */
/* Secrets                                                                  */
/* ------------------------------------------------------------------------ */

static void secret_free(aigw_secret *s)
{
    if (s->value) {
        aigw__wipe(s->value, s->len);
        aigw__free(s->value);
    }
    s->value = NULL;
    s->len = 0;
}

/* Takes a copy of a secret that will become an HTTP header value.  `what`
 * names where it came from for problems ("the value", "environment variable
 * X"); the secret itself is never put in one. */
static void secret_accept(parser *p, const char *v, size_t len, const char *what,
                          aigw_secret *out)
{
    size_t i;
    if (len == 0) {
        problem(p, "%s is empty", what);
        return;
    }
    if (len > MAX_SECRET) {
        problem(p, "%s is %zu bytes, longer than the %zu an HTTP header can carry", what, len,
                MAX_SECRET);
        return;
    }
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)v[i];
        /* CR/LF would split the header (injection), NUL would cut it. */
        if ((c < 0x20 && c != '\t') || c == 0x7f) {
            problem(p, "%s holds a control character (CR, LF, NUL, ...), which cannot go "
                       "into an HTTP header", what);
            return;
        }
    }
    /* Like every string of a configuration (a value read from the
     * environment or a file too); where, never which byte: a secret. */
    if ((i = aigw__utf8_check(v, len)) < len) {
        problem(p, "%s is not valid UTF-8 (at offset %zu)", what, i);
        return;
    }
    out->value = aigw__strndup(v, len);
    if (!out->value) {
        p->oom = true;
        return;
    }
    out->len = len;
}

static void secret_copy(parser *p, aigw_secret *dst, const aigw_secret *src)
{
    if (!src->value)
        return; /* the source had a problem of its own */
    dst->value = aigw__strndup(src->value, src->len);
    if (!dst->value) {
        p->oom = true;
        return;
    }
    dst->len = src->len;
}

static void secret_from_env(parser *p, const cJSON *v, aigw_secret *out)
{
    char what[160];
    const char *name, *val;
    size_t mark = path_field(p, "env");
    if ((name = str_check(p, v, 1, 255)) != NULL) {
        if (!(val = getenv(name))) {
            problem(p, "environment variable %s is not set", name);
        } else {
            snprintf(what, sizeof what, "environment variable %.*s", (int)quoted(name, 100),
                     name);
            secret_accept(p, val, strlen(val), what, out);
        }
    }
    path_pop(p, mark);
}

static void secret_from_file(parser *p, const cJSON *v, aigw_secret *out)
{
    aigw_buf b = AIGW_BUF_INIT;
    char what[160], why[128];
    const char *name;
    int errnum = 0, rc;
    size_t mark = path_field(p, "file");
    if ((name = str_check(p, v, 1, 4096)) != NULL) {
        rc = read_file(name, MAX_SECRET_FILE, &b, &errnum);
        if (rc == -2)
            p->oom = true;
        else if (rc == -3)
            problem(p, "file '%s' is larger than %zu bytes: not a key", name, MAX_SECRET_FILE);
        else if (rc == -1)
            problem(p, "cannot read file '%s': %s", name, errno_text(errnum, why, sizeof why));
        else {
            /* Editors and `echo` end files with a newline; a key never does. */
            while (b.len > 0 && (b.data[b.len - 1] == '\n' || b.data[b.len - 1] == '\r'))
                b.len--;
            snprintf(what, sizeof what, "file '%.*s'", (int)quoted(name, 100), name);
            secret_accept(p, b.data, b.len, what, out);
        }
    }
    aigw__buf_wipe_free(&b);
    path_pop(p, mark);
}

enum { VF_ENV, VF_FILE, VF__N };
static const char *const value_from_fields[] = {"env", "file", NULL};

/* The members "value" / "valueFrom" of the object at the current path. */
static void read_secret(parser *p, const cJSON *value, const cJSON *from, aigw_secret *out)
{
    const cJSON *f[VF__N];
    size_t mark;
    if (value && from) {
        problem(p, "give either \"value\" or \"valueFrom\", not both");
        return;
    }
    if (!value && !from) {
        problem(p, "needs \"value\" or \"valueFrom\"");
        return;
    }
    mark = path_field(p, value ? "value" : "valueFrom");
    if (value && cJSON_IsString(value))
        secret_accept(p, value->valuestring, strlen(value->valuestring), "the value", out);
    else if (value)
        problem(p, "expected a string, got %s", kind(value));
    else if (members(p, from, value_from_fields, f)) {
        if (f[VF_ENV] && f[VF_FILE])
            problem(p, "give either \"env\" or \"file\", not both");
        else if (f[VF_ENV])
            secret_from_env(p, f[VF_ENV], out);
        else if (f[VF_FILE])
            secret_from_file(p, f[VF_FILE], out);
        else
            problem(p, "needs \"env\" or \"file\"");
    }
    path_pop(p, mark);
}

/* ------------------------------------------------------------------------ */
/* URLs                                                                     */
/* ------------------------------------------------------------------------ */

static bool is_ipv4_loopback(const char *h, size_t n)
{
    size_t i, parts = 1, digits = 0;
    unsigned v = 0;
    if (n < 4 || memcmp(h, "127.", 4) != 0)
        return false;
    for (i = 0; i < n; i++) {
        if (h[i] == '.') {
            if (digits == 0)
                return false;
            parts++;
            digits = 0;
            v = 0;
        } else if (h[i] >= '0' && h[i] <= '9' && digits < 3) {
            v = v * 10 + (unsigned)(h[i] - '0');
            digits++;
            if (v > 255)
                return false;
        } else {
            return false;
        }
    }
    return parts == 4 && digits > 0;
}

/* Plain HTTP would carry provider keys in the clear: only to this host
 * (as curl reads it: "127.1" is 127.0.0.1, "[0::1]" is [::1]). */
static bool is_loopback(const char *h, size_t n)
{
    return (n == 9 && aigw__strncasecmp(h, "localhost", 9) == 0) ||
           (n == 5 && memcmp(h, "[::1]", 5) == 0) || is_ipv4_loopback(h, n);
}

static bool host_chars_ok(const char *h, size_t n)
{
    size_t i;
    bool bracket = n > 2 && h[0] == '[' && h[n - 1] == ']';
    for (i = bracket ? 1 : 0; i < (bracket ? n - 1 : n); i++) {
        char c = h[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '.' || (bracket ? c == ':' : c == '_');
        if (!ok)
            return false;
    }
    return n > 0;
}

static char *url_copy(parser *p, const char *u, size_t n)
{
    char *s = aigw__strndup(u, n);
    if (!s)
        p->oom = true;
    return s;
}

/* A base URL: https://host[:port][/path], or http:// to a loopback host,
 * as libcurl's URL API reads it (aigw__url_parse).  Returns it allocated,
 * as written but without trailing '/' (paths are appended to it), or NULL
 * after reporting the problem at the current path. */
static char *check_url(parser *p, const char *u)
{
    static const char scheme_text[] = "must start with https:// (or http:// to a loopback host)";
    size_t n = strlen(u);
    const char *why = NULL;
    char *curl_why = NULL, *out = NULL;
    aigw_url url;
    bool https = false;
    int rc;
    if (n > MAX_URL) {
        problem(p, "must be at most %d characters", MAX_URL);
        return NULL;
    }
    rc = aigw__url_parse(u, &url, &curl_why);
    if (rc == -2 || (rc == -1 && !curl_why)) {
        p->oom = true;
        return NULL;
    }
    if (rc != 0) {
        /* not http(s) at all: say what is wanted rather than what is wrong */
        bool http_ish = aigw__strncasecmp(u, "https://", 8) == 0 ||
                        aigw__strncasecmp(u, "http://", 7) == 0;
        why = !http_ish && strstr(curl_why, "whitespace") == NULL ? scheme_text : curl_why;
    } else if (!(https = strcmp(url.scheme, "https") == 0) && strcmp(url.scheme, "http") != 0) {
        why = scheme_text;
    } else if (url.has_query || url.has_fragment) {
        why = "must not have a query or a fragment";
    } else if (url.has_userinfo) {
        why = "must not hold credentials (user:password@)";
    } else if (!host_chars_ok(url.host, strlen(url.host))) {
        why = "has an invalid host";
    } else if (!https && !is_loopback(url.host, strlen(url.host))) {
        why = "http:// is only allowed to a loopback host (127.0.0.0/8, localhost, [::1]); "
              "use https://";
    }
    if (why) {
        problem(p, "%s", why);
    } else {
        while (n > 0 && u[n - 1] == '/')
            n--;
        out = url_copy(p, u, n);
    }
    aigw__free(curl_why);
    aigw__url_free(&url);
    return out;
}

/* A URL member; NULL when absent or bad. */
static char *get_url(parser *p, const char *field, const cJSON *v)
{
    char *url = NULL;
    const char *s;
    size_t mark = path_field(p, field);
    if ((s = str_check(p, v, 1, MAX_URL)) != NULL)
        url = check_url(p, s);
    path_pop(p, mark);
    return url;
}

/* ------------------------------------------------------------------------ */
/* Providers: the catalog, plus "providers" (ngrok POST /providers)         */
/* ------------------------------------------------------------------------ */

static void provider_free(aigw_provider *pr)
{
    aigw__free(pr->id);
    aigw__free(pr->name);
    aigw__free(pr->base_url);
    aigw__strv_free(pr->models, pr->n_models);
    aigw__strv_free(pr->upstream_models, pr->n_models);
    memset(pr, 0, sizeof *pr);
}

/* Every catalog entry, with room for n_custom more after them. */
static void init_providers(parser *p, size_t n_custom)
{
    aigw_config *cfg = p->cfg;
    size_t i, n = aigw__catalog_count();
    cfg->providers = zalloc(p, n + n_custom, sizeof *cfg->providers);
    if (!cfg->providers)
        return;
    for (i = 0; i < n; i++) {
        const aigw_catalog_entry *e = aigw__catalog_at(i);
        aigw_provider *pr = &cfg->providers[cfg->n_providers++];
        pr->id = str_copy(p, e->id);
        pr->name = str_copy(p, e->name);
        pr->base_url = str_copy(p, e->base_url);
        pr->native_auth = e->native_auth;
    }
}

/* Custom ids share a namespace with model specs ("my-ollama:llama3.2"),
 * so ':' '/' and the like are kept out; lowercase as ngrok's own ids. */
static bool id_form(const char *s, size_t n)
{
    size_t i;
    if (n == 0 || n > 255)
        return false;
    for (i = 0; i < n; i++) {
        char c = s[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (!alnum && (i == 0 || (c != '-' && c != '.' && c != '_')))
            return false;
    }
    return true;
}

/* The entry a "providers" item fills: a built-in one (a local extension:
 * overriding its baseUrl or name) or a fresh one after the last.  NULL
 * after a problem (the path is the providerId's). */
static aigw_provider *provider_slot(parser *p, const char *id, bool *is_new)
{
    aigw_config *cfg = p->cfg;
    const aigw_catalog_entry *e = aigw__catalog_find(id);
    size_t i;
    if (e && strcmp(e->id, id) != 0) {
        problem(p, "'%s' is another name of the built-in provider '%s'; use '%s'", id, e->id,
                e->id);
        return NULL;
    }
    for (i = 0; i < cfg->n_providers; i++) {
        aigw_provider *pr = &cfg->providers[i];
        if (!pr->id || strcmp(pr->id, id) != 0)
            continue;
        if (pr->custom) {
            problem(p, "duplicate providerId");
            return NULL;
        }
        *is_new = false;
        return pr;
    }
    *is_new = true;
    return &cfg->providers[cfg->n_providers];
}

enum { MO_ID, MO_PROVIDER_MODEL_ID, MO_UNSUPPORTED, MO__N };
static const char *const model_fields[] = {"modelId", "providerModelId", "unsupportedParams",
                                           NULL};

static void parse_param_name(parser *p, const cJSON *v, size_t i, void *ctx)
{
    (void)i;
    (void)ctx;
    str_check(p, v, 1, 255);
}

static void parse_model(parser *p, const cJSON *v, size_t i, void *ctx)
{
    aigw_provider *tmp = ctx;
    const cJSON *f[MO__N];
    const char *id;
    if (!members(p, v, model_fields, f))
        return;
    if ((id = get_str(p, "modelId", f[MO_ID], true, 1, 255)) != NULL)
        tmp->models[i] = str_copy(p, id);
    /* The id sent upstream when it differs from modelId. */
    if ((id = get_str(p, "providerModelId", f[MO_PROVIDER_MODEL_ID], false, 1, 255)) != NULL)
        tmp->upstream_models[i] = str_copy(p, id);
    parse_list(p, "unsupportedParams", f[MO_UNSUPPORTED], parse_param_name);
}

enum { SP_NAME, SP__N };
static const char *const param_fields[] = {"name", NULL};

static void parse_surface_param(parser *p, const cJSON *v, size_t i, void *ctx)
{
    const cJSON *f[SP__N];
    (void)i;
    (void)ctx;
    if (members(p, v, param_fields, f))
        get_str(p, "name", f[SP_NAME], true, 1, 255);
}

enum { SU_FORMAT, SU_SURFACE, SU_BASE_URL, SU_PARAMS, SU__N };
static const char *const surface_fields[] = {"format", "surface", "baseUrl", "supportedParams",
                                             NULL};

static bool one_of(const char *s, const char *const list[])
{
    size_t i;
    for (i = 0; list[i]; i++)
        if (strcmp(s, list[i]) == 0)
            return true;
    return false;
}

/* ngrok checks formats and surfaces against its known ones at run time. */
static void parse_surface(parser *p, const cJSON *v, size_t i, void *ctx)
{
    static const char *const formats[] = {"openai", "anthropic", NULL};
    static const char *const surfaces[] = {"chat-completions", "responses", "messages", NULL};
    const cJSON *f[SU__N];
    const char *s;
    (void)i;
    (void)ctx;
    if (!members(p, v, surface_fields, f))
        return;
    if ((s = get_str(p, "format", f[SU_FORMAT], true, 1, 64)) != NULL && !one_of(s, formats))
        problem_at(p, "format", "unknown format '%s' (known: openai, anthropic)", s);
    if ((s = get_str(p, "surface", f[SU_SURFACE], false, 1, 64)) != NULL && !one_of(s, surfaces))
        problem_at(p, "surface", "unknown surface '%s' (known: chat-completions, responses, "
                                 "messages)", s);
    if (f[SU_BASE_URL])
        problem_at(p, "baseUrl", "a per-surface baseUrl is not supported by libaigw; set the "
                                 "provider's baseUrl");
    parse_list(p, "supportedParams", f[SU_PARAMS], parse_surface_param);
}


/* The model ids a provider declares, into tmp. */
static void parse_models(parser *p, const cJSON *v, aigw_provider *tmp)
{
    size_t n, mark;
    if (!v)
        return;
    mark = path_field(p, "models");
    if ((tmp->models = new_array(p, v, sizeof *tmp->models, &n)) != NULL) {
        tmp->n_models = n;
        tmp->upstream_models = new_array(p, v, sizeof *tmp->upstream_models, &n);
        if (tmp->upstream_models)
            each(p, v, parse_model, tmp);
    }
    path_pop(p, mark);
}

/* Moves what tmp holds into the slot. */
static void provider_commit(parser *p, aigw_provider *slot, bool is_new, const char *id,
                            aigw_provider *tmp)
{
    if (is_new) {
        slot->id = str_copy(p, id);
        slot->native_auth = AIGW_AUTH_BEARER; /* OpenAI-compatible */
        if (!tmp->name)
            tmp->name = str_copy(p, id);
        p->cfg->n_providers++;
    }
    if (tmp->name) {
        aigw__free(slot->name);
        slot->name = tmp->name;
    }
    if (tmp->base_url) {
        aigw__free(slot->base_url);
        slot->base_url = tmp->base_url;
    }
    slot->models = tmp->models;
    slot->upstream_models = tmp->upstream_models;
    slot->n_models = tmp->n_models;
    slot->custom = true;
    memset(tmp, 0, sizeof *tmp);
}

enum { PR_ID, PR_NAME, PR_BASE_URL, PR_METADATA, PR_SURFACES, PR_MODELS, PR__N };
static const char *const provider_fields[] = {
    "providerId", "name", "baseUrl", "metadata", "supportedApiSurfaces", "models", NULL};

static void parse_provider(parser *p, const cJSON *v, size_t i, void *ctx)
{
    const cJSON *f[PR__N];
    aigw_provider tmp, *slot = NULL;
    const char *id, *name;
    bool is_new = false;
    size_t mark;
    (void)i;
    (void)ctx;
    if (!members(p, v, provider_fields, f))
        return;
    memset(&tmp, 0, sizeof tmp);
    if ((id = get_str(p, "providerId", f[PR_ID], true, 1, 255)) != NULL) {
        mark = path_field(p, "providerId");
        if (!id_form(id, strlen(id)))
            problem(p, "must be lowercase letters, digits, '-', '.' and '_', starting with a "
                       "letter or digit");
        else
            slot = provider_slot(p, id, &is_new);
        path_pop(p, mark);
    }
    if ((name = get_str(p, "name", f[PR_NAME], false, 1, 255)) != NULL)
        tmp.name = str_copy(p, name);
    get_str(p, "metadata", f[PR_METADATA], false, 0, 4096);
    if (f[PR_BASE_URL])
        tmp.base_url = get_url(p, "baseUrl", f[PR_BASE_URL]);
    else if (slot && is_new)
        problem_at(p, "baseUrl", "required field is missing (only a built-in provider may "
                                 "omit it)");
    parse_list(p, "supportedApiSurfaces", f[PR_SURFACES], parse_surface);
    parse_models(p, f[PR_MODELS], &tmp);
    if (slot && !p->oom)
        provider_commit(p, slot, is_new, id, &tmp);
    provider_free(&tmp);
}

/* ------------------------------------------------------------------------ */
/* Provider keys (ngrok POST /provider-keys, plus "id" and "valueFrom")     */
/* ------------------------------------------------------------------------ */

/* For p->key_ids. */
static const char *key_id(const aigw_config *cfg, size_t i)
{
    return cfg->keys[i].id;
}

/* The providerKey with this id: its position, or IDX_NONE. */
static size_t find_key(const parser *p, const char *id, uint64_t h)
{
    return idx_find_str(&p->key_ids, h, id, key_id, p->cfg);
}

enum { PK_ID, PK_PROVIDER, PK_NAME, PK_DESCRIPTION, PK_METADATA, PK_VALUE, PK_VALUE_FROM, PK__N };
static const char *const pkey_fields[] = {"id",       "providerId", "name",      "description",
                                          "metadata", "value",      "valueFrom", NULL};

static void parse_pkey(parser *p, const cJSON *v, size_t i, void *ctx)
{
    aigw_pkey *k = &p->cfg->keys[i];
    const cJSON *f[PK__N];
    const aigw_provider *pr;
    const char *s;
    size_t j;
    (void)ctx;
    if (!members(p, v, pkey_fields, f))
        return;
    if ((s = get_str(p, "id", f[PK_ID], true, 1, 255)) != NULL) {
        uint64_t h = hash_str(p, s);
        if ((j = find_key(p, s, h)) != IDX_NONE)
            problem_at(p, "id", "duplicate id (also providerKeys[%zu])", j);
        else if ((k->id = str_copy(p, s)) != NULL)
            idx_add(&p->key_ids, h, i);
    }
    if ((s = get_str(p, "providerId", f[PK_PROVIDER], true, 1, 255)) != NULL) {
        if (!(pr = aigw__config_provider(p->cfg, s)))
            problem_at(p, "providerId", "no provider with this id (neither built in nor in "
                                        "\"providers\")");
        else
            k->provider_id = str_copy(p, pr->id);
    }
    if ((s = get_str(p, "name", f[PK_NAME], false, 1, 255)) != NULL)
        k->name = str_copy(p, s);
    get_str(p, "description", f[PK_DESCRIPTION], false, 0, 255);
    get_str(p, "metadata", f[PK_METADATA], false, 0, 4096);
    read_secret(p, f[PK_VALUE], f[PK_VALUE_FROM], &k->value);
}

/* ------------------------------------------------------------------------ */
/* Access key configuration (ngrok POST /access-key-configurations)         */
/* ------------------------------------------------------------------------ */

static const aigw_provider *provider_n(const aigw_config *cfg, const char *s, size_t n)
{
    char id[ID_CAP];
    if (n == 0 || n >= sizeof id)
        return NULL;
    memcpy(id, s, n);
    id[n] = '\0';
    return aigw__config_provider(cfg, id);
}

static void copy_id(char *dst, const char *s, size_t n)
{
    n = n < ID_CAP - 1 ? n : ID_CAP - 1;
    memcpy(dst, s, n);
    dst[n] = '\0';
}

/* Splits a rule's model spec.  "provider:model" and "provider/model" name
 * their provider, ngrok's own "openai:openai/gpt-4o" names it twice.  A
 * prefix naming no provider is part of the model id ("llama3.2:8b",
 * "meta-llama/llama-3"), and "groq:openai/gpt-oss" keeps its author.  In a
 * bare configuration "x:" may name a provider of the ngrok account, unknown
 * here.  Returns the model id; prov gets the provider id or "". */
static const char *split_model(parser *p, const char *spec, const char *want, char *prov)
{
    const aigw_provider *pr;
    const char *m = spec, *sep;
    prov[0] = '\0';
    if ((sep = strchr(m, ':')) != NULL && sep > m) {
        size_t n = (size_t)(sep - m);
        if ((pr = provider_n(p->cfg, m, n)) != NULL)
            copy_id(prov, pr->id, strlen(pr->id));
        else if (p->bare && id_form(m, n))
            copy_id(prov, m, n);
        if (prov[0])
            m = sep + 1;
    }
    if ((sep = strchr(m, '/')) != NULL && sep > m &&
        (pr = provider_n(p->cfg, m, (size_t)(sep - m))) != NULL &&
        (!want || strcmp(pr->id, want) == 0) && (!prov[0] || strcmp(pr->id, prov) == 0)) {
        copy_id(prov, pr->id, strlen(pr->id));
        m = sep + 1;
    }
    return m;
}

static const aigw_provider *provider_with_model(const aigw_config *cfg, const char *model)
{
    size_t i, j;
    for (i = 0; i < cfg->n_providers; i++)
        for (j = 0; j < cfg->providers[i].n_models; j++)
            if (cfg->providers[i].models[j] && strcmp(cfg->providers[i].models[j], model) == 0)
                return &cfg->providers[i];
    return NULL;
}

/* A bare model id's provider: declared by a custom provider, else by the
 * catalog's prefixes. */
static void infer_provider(parser *p, aigw_rule *r, const char *model)
{
    const aigw_provider *pr = provider_with_model(p->cfg, model);
    const aigw_catalog_entry *e;
    if (!pr && (e = aigw__catalog_for_model(model)) != NULL)
        pr = aigw__config_provider(p->cfg, e->id);
    if (pr)
        r->provider = str_copy(p, pr->id);
    else if (!p->bare)
        problem_at(p, "model", "cannot tell which provider serves this model: write it as "
                               "\"provider:model\" or add \"provider\"");
}

/* rule->provider and rule->model from the rule's "provider" and "model"
 * (prov_s / model_s: NULL when absent or bad; has_prov: "provider" given). */
static void rule_target(parser *p, aigw_rule *r, bool has_prov, const char *prov_s,
                        const char *model_s)
{
    char mprov[ID_CAP];
    const char *m;
    if (prov_s) {
        const aigw_provider *ep = aigw__config_provider(p->cfg, prov_s);
        if (!ep && !p->bare)
            problem_at(p, "provider", "no provider with this id (neither built in nor in "
                                      "\"providers\")");
        else
            r->provider = str_copy(p, ep ? ep->id : prov_s);
    }
    if (!model_s)
        return;
    m = split_model(p, model_s, r->provider, mprov);
    if (*m == '\0') {
        problem_at(p, "model", "the model id after the provider is empty");
        return;
    }
    r->model = str_copy(p, m);
    if (mprov[0] && r->provider && strcmp(mprov, r->provider) != 0)
        problem_at(p, "model", "names provider '%s', but the rule's provider is '%s'", mprov,
                   r->provider);
    else if (!has_prov && mprov[0])
        r->provider = str_copy(p, mprov);
    else if (!has_prov)
        infer_provider(p, r, m);
}

static void key_by_id(parser *p, const cJSON *v, const aigw_rule *r, aigw_step_key *sk)
{
    const char *id = get_str(p, "id", v, true, 1, 255);
    const aigw_pkey *k;
    size_t at;
    if (!id)
        return;
    if (p->bare) {
        /* A bare configuration holds no providerKeys: the id names a key
         * in the ngrok account.  aigw_client_new refuses it. */
        sk->id = str_copy(p, id);
        return;
    }
    if ((at = find_key(p, id, hash_str(p, id))) == IDX_NONE) {
        problem_at(p, "id", "no provider key with this id");
        return;
    }
    k = &p->cfg->keys[at];
    if (r->provider && k->provider_id && strcmp(k->provider_id, r->provider) != 0) {
        problem_at(p, "id", "provider key '%s' is for provider '%s', but this rule is for "
                            "provider '%s'", id, k->provider_id, r->provider);
        return;
    }
    sk->id = str_copy(p, id);
    secret_copy(p, &sk->value, &k->value);
    sk->resolved = true;
}

enum { SK_ID, SK_NAME, SK_VALUE, SK_WEIGHT, SK__N };
static const char *const step_key_fields[] = {"id", "name", "value", "weight", NULL};

/* An inline key {name, value}: created with the configuration. */
static void inline_key(parser *p, const cJSON *f[], aigw_step_key *sk)
{
    const char *name = get_str(p, "name", f[SK_NAME], true, 1, 255);
    size_t mark;
    if (!f[SK_VALUE]) {
        problem_at(p, "value", "required field is missing (an inline key needs \"name\" and "
                               "\"value\")");
    } else {
        mark = path_field(p, "value");
        if (cJSON_IsString(f[SK_VALUE]))
            secret_accept(p, f[SK_VALUE]->valuestring, strlen(f[SK_VALUE]->valuestring),
                          "the value", &sk->value);
        else
            problem(p, "expected a string, got %s", kind(f[SK_VALUE]));
        path_pop(p, mark);
    }
    if (name)
        sk->id = str_copy(p, name);
    sk->resolved = true;
}

typedef struct step_ctx {
    const aigw_rule *rule;
    aigw_step *step;
} step_ctx;

static void parse_step_key(parser *p, const cJSON *v, size_t i, void *ctx)
{
    step_ctx *sc = ctx;
    aigw_step_key *sk = &sc->step->keys[i];
    const cJSON *f[SK__N];
    int64_t w;
    sk->weight = 1;
    if (!members(p, v, step_key_fields, f))
        return;
    /* Local extension, for keySelectionStrategy "weighted"; harmless (and
     * unused) under the other strategies, so a strategy can be switched
     * without editing every key. */
    if (get_int(p, "weight", f[SK_WEIGHT], 0, 1000000, false, &w))
        sk->weight = (uint32_t)w;
    if (f[SK_ID] && (f[SK_NAME] || f[SK_VALUE]))
        problem(p, "give either \"id\", or \"name\" and \"value\", not both");
    else if (f[SK_ID])
        key_by_id(p, f[SK_ID], sc->rule, sk);
    else if (f[SK_NAME] || f[SK_VALUE])
        inline_key(p, f, sk);
    else
        problem(p, "a key needs \"id\", or \"name\" and \"value\"");
}

static bool any_weight(const aigw_step *st)
{
    size_t i;
    for (i = 0; i < st->n_keys; i++)
        if (st->keys[i].weight > 0)
            return true;
    return false;
}

static void parse_user_keys(parser *p, const cJSON *v, const aigw_rule *r, aigw_step *st)
{
    step_ctx sc;
    size_t n, mark = path_field(p, "keys");
    sc.rule = r;
    sc.step = st;
    if (!v) {
        problem(p, "required field is missing (a user step needs at least one key)");
    } else if ((st->keys = new_array(p, v, sizeof *st->keys, &n)) != NULL) {
        st->n_keys = n;
        if (n == 0)
            problem(p, "a user step needs at least one key");
        each(p, v, parse_step_key, &sc);
        if (n > 0 && st->strategy == AIGW_STRATEGY_WEIGHTED && !any_weight(st))
            problem(p, "weighted needs at least one key with a weight above 0");
    }
    path_pop(p, mark);
}

enum { ST_TYPE, ST_KEYS, ST_STRATEGY, ST__N };
static const char *const step_fields[] = {"type", "keys", "keySelectionStrategy", NULL};

static void parse_ngrok_step(parser *p, const cJSON *keys, const aigw_rule *r)
{
    if (keys)
        problem_at(p, "keys", "an ngrok step takes no keys (it uses the ngrok access key)");
    /* ngrok serves built-in providers only. */
    if (r->provider && !aigw__catalog_find(r->provider) &&
        aigw__config_provider(p->cfg, r->provider))
        problem_at(p, "type", "an ngrok step serves built-in providers only, and '%s' is a "
                              "custom provider", r->provider);
}

static void parse_step(parser *p, const cJSON *v, size_t i, void *ctx)
{
    aigw_rule *r = ctx;
    aigw_step *st = &r->steps[i];
    const cJSON *f[ST__N];
    const char *type, *strategy;
    int kind = AIGW_STRATEGY_ORDERED;
    if (!members(p, v, step_fields, f))
        return;
    /* ngrok knows "ordered"; the others are local extensions. */
    strategy = get_str(p, "keySelectionStrategy", f[ST_STRATEGY], false, 0, 64);
    if (strategy && (kind = aigw__strategy_kind(strategy)) < 0) {
        problem_at(p, "keySelectionStrategy",
                   "unknown key selection strategy '%s' (allowed: ordered, round-robin, "
                   "random, weighted, least-recently-limited)", strategy);
        kind = AIGW_STRATEGY_ORDERED;
    }
    st->strategy = (aigw_strategy_kind)kind;
    if (!(type = get_str(p, "type", f[ST_TYPE], true, 1, 64)))
        return;
    if (strcmp(type, "user") == 0) {
        st->type = AIGW_STEP_USER;
        parse_user_keys(p, f[ST_KEYS], r, st);
    } else if (strcmp(type, "ngrok") == 0) {
        st->type = AIGW_STEP_NGROK;
        /* An ngrok step has no keys of ours to choose among: a strategy
         * other than ngrok's own "ordered" would be silently meaningless,
         * so it is refused rather than ignored. */
        if (kind != AIGW_STRATEGY_ORDERED)
            problem_at(p, "keySelectionStrategy",
                       "'%s' does not apply to an ngrok step, which has no keys to select "
                       "(allowed: ordered)", strategy);
        parse_ngrok_step(p, f[ST_KEYS], r);
    } else {
        problem_at(p, "type", "unknown step type '%s' (allowed: user, ngrok)", type);
    }
}

enum { RU_PROVIDER, RU_MODEL, RU_STEPS, RU__N };
static const char *const rule_fields[] = {"provider", "model", "steps", NULL};

static void parse_rule(parser *p, const cJSON *v, size_t i, void *ctx)
{
    aigw_rule *r = &p->akc->rules[i];
    const cJSON *f[RU__N];
    const char *prov, *model;
    size_t n, mark;
    (void)ctx;
    if (!members(p, v, rule_fields, f))
        return;
    prov = get_str(p, "provider", f[RU_PROVIDER], false, 1, 255);
    model = get_str(p, "model", f[RU_MODEL], false, 1, 512);
    if (!f[RU_PROVIDER] && !f[RU_MODEL])
        problem(p, "a rule needs \"provider\", \"model\" or both");
    rule_target(p, r, f[RU_PROVIDER] != NULL, prov, model);
    mark = path_field(p, "steps");
    if (!f[RU_STEPS]) {
        problem(p, "required field is missing (a rule needs at least one step)");
    } else if ((r->steps = new_array(p, f[RU_STEPS], sizeof *r->steps, &n)) != NULL) {
        r->n_steps = n;
        if (n == 0)
            problem(p, "a rule needs at least one step");
        each(p, f[RU_STEPS], parse_step, r);
    }
    path_pop(p, mark);
}

static bool same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* Only the first of two rules for the same target would ever be used
 * (ngrok: "at most one provider rule per upstream"). */
static void check_duplicate_rules(parser *p)
{
    const aigw_akc *cfg = p->akc;
    idx seen;
    size_t i, j, mark;
    if (!idx_init(p, &seen, cfg->n_rules))
        return;
    for (j = 0; j < cfg->n_rules; j++) {
        const aigw_rule *b = &cfg->rules[j];
        uint64_t h = hash_tuple(p, b->provider, b->model, NULL);
        size_t at = (size_t)h;
        if (!b->provider && !b->model)
            continue;
        while ((i = idx_next(&seen, h, &at)) != IDX_NONE &&
               !(same_str(cfg->rules[i].provider, b->provider) &&
                 same_str(cfg->rules[i].model, b->model)))
            ;
        if (i == IDX_NONE) {
            idx_add(&seen, h, j);
            continue;
        }
        mark = path_index(p, j);
        problem(p, "the same provider and model as rules[%zu]: only one would be used", i);
        path_pop(p, mark);
    }
    idx_free(&seen);
}

enum { RO_RULES, RO__N };
static const char *const router_fields[] = {"rules", NULL};

static void parse_router(parser *p, const cJSON *v)
{
    const cJSON *f[RO__N];
    size_t n, mark;
    if (!members(p, v, router_fields, f) || !f[RO_RULES])
        return;
    mark = path_field(p, "rules");
    if ((p->akc->rules = new_array(p, f[RO_RULES], sizeof *p->akc->rules, &n)) != NULL) {
        p->akc->n_rules = n;
        each(p, f[RO_RULES], parse_rule, NULL);
        if (!p->oom)
            check_duplicate_rules(p);
    }
    path_pop(p, mark);
}

static void parse_provider_allow(parser *p, const cJSON *v, size_t i, void *ctx)
{
    const char *s = str_check(p, v, 1, 255);
    const aigw_provider *pr;
    (void)ctx;
    if (!s)
        return;
    pr = aigw__config_provider(p->cfg, s);
    if (!pr && !p->bare)
        problem(p, "no provider with this id (neither built in nor in \"providers\")");
    else
        p->akc->provider_allow[i] = str_copy(p, pr ? pr->id : s);
}

static void parse_model_allow(parser *p, const cJSON *v, size_t i, void *ctx)
{
    const char *s = str_check(p, v, 1, 512);
    (void)ctx;
    if (s)
        p->akc->model_allow[i] = str_copy(p, s);
}

enum { DI_ALLOW, DI__N };
static const char *const dimension_fields[] = {"allow", NULL};

/* access.providers / access.models: an omitted "allow" restricts nothing,
 * an empty one allows nothing. */
static void parse_dimension(parser *p, const char *field, const cJSON *v, bool providers)
{
    aigw_akc *cfg = p->akc;
    const cJSON *f[DI__N];
    size_t n, mark, mark2;
    char **list;
    if (!v)
        return;
    mark = path_field(p, field);
    if (members(p, v, dimension_fields, f) && f[DI_ALLOW]) {
        mark2 = path_field(p, "allow");
        if ((list = new_array(p, f[DI_ALLOW], sizeof *list, &n)) != NULL) {
            if (providers) {
                cfg->provider_allow = list;
                cfg->n_provider_allow = n;
                cfg->has_provider_allow = true;
            } else {
                cfg->model_allow = list;
                cfg->n_model_allow = n;
                cfg->has_model_allow = true;
            }
            each(p, f[DI_ALLOW], providers ? parse_provider_allow : parse_model_allow, NULL);
        }
        path_pop(p, mark2);
    }
    path_pop(p, mark);
}

enum { AC_PROVIDERS, AC_MODELS, AC__N };
static const char *const access_fields[] = {"providers", "models", NULL};

static void parse_access(parser *p, const cJSON *v)
{
    const cJSON *f[AC__N];
    if (!members(p, v, access_fields, f))
        return;
    parse_dimension(p, "providers", f[AC_PROVIDERS], true);
    parse_dimension(p, "models", f[AC_MODELS], false);
}

enum { AKC_NAME, AKC_DESCRIPTION, AKC_METADATA, AKC_ACCESS, AKC_ROUTER, AKC__N };
static const char *const akc_fields[] = {"name", "description", "metadata", "access", "router",
                                         NULL};

static void parse_akc(parser *p, const cJSON *v)
{
    const cJSON *f[AKC__N];
    const char *name;
    size_t mark;
    if (!members(p, v, akc_fields, f))
        return;
    /* ngrok requires a name on create; the docs' bare examples omit it. */
    if ((name = get_str(p, "name", f[AKC_NAME], !p->bare, 1, 255)) != NULL)
        p->akc->name = str_copy(p, name);
    get_str(p, "description", f[AKC_DESCRIPTION], false, 0, 255);
    get_str(p, "metadata", f[AKC_METADATA], false, 0, 4096);
    if (f[AKC_ACCESS]) {
        mark = path_field(p, "access");
        parse_access(p, f[AKC_ACCESS]);
        path_pop(p, mark);
    }
    if (f[AKC_ROUTER]) {
        mark = path_field(p, "router");
        parse_router(p, f[AKC_ROUTER]);
        path_pop(p, mark);
    }
}

/* ------------------------------------------------------------------------ */
/* gatewayConfig (ngrok PATCH /gateway-config, plus local limits)           */
/* ------------------------------------------------------------------------ */

enum {
    GC_TOTAL,
    GC_PER_REQUEST,
    GC_MAX_INPUT,
    GC_MAX_OUTPUT,
    GC_METADATA,
    GC_CONNECT,
    GC_MAX_ATTEMPTS,
    GC_RETRY_AFTER_MAX,
    GC_SAME_BACKEND,
    GC_MAX_RESPONSE,
    GC_FIRST_TOKEN,
    GC_STREAM_IDLE,
    GC_STREAM_RESTART,
    GC_MAX_EVENT,
    GC_KEY_COOLDOWN,
    GC_KEY_COOLDOWN_MAX,
    GC_KEY_BENCH,
    GC_BREAKER,
    GC_BUDGET,
    GC_STORE,
    GC_TLS,
    GC__N
};
static const char *const gateway_fields[] = {
    "totalTimeout",  "perRequestTimeout", "maxInputTokens",     "maxOutputTokens",
    "metadata",      "connectTimeout",    "maxAttempts",        "retryAfterMax",
    "sameBackendRetries", "maxResponseBytes", "firstTokenTimeout", "streamIdleTimeout",
    "streamRestart", "maxEventBytes", "keyCooldown", "keyCooldownMax", "keyBenchTime",
    "circuitBreaker", "retryBudget", "healthStore", "tls", NULL};

/* A member that is false (off), true (the defaults) or an object; whether
 * to read it as an object.  *on gets false for false. */
static bool switch_or_object(parser *p, const cJSON *v, bool *on)
{
    if (cJSON_IsBool(v)) {
        *on = cJSON_IsTrue(v);
        return false;
    }
    if (!cJSON_IsObject(v)) {
        problem(p, "expected false, true or an object, got %s", kind(v));
        return false;
    }
    *on = true;
    return true;
}

typedef void (*section_fn)(parser *p, const cJSON *v);

/* One section (top-level, or a nested object), parsed with the path at
 * its name. */
static void section(parser *p, const char *field, const cJSON *v, section_fn fn)
{
    size_t mark;
    if (!v || p->oom)
        return;
    mark = path_field(p, field);
    fn(p, v);
    path_pop(p, mark);
}

enum { CB_FAILURES, CB_COOLOFF, CB__N };
static const char *const breaker_fields[] = {"failures", "cooloff", NULL};

/* circuitBreaker: consecutive failures that open a backend's (and a host's)
 * breaker, and how long it stays open before a probe. */
static void parse_breaker(parser *p, const cJSON *v)
{
    aigw_health_opts *h = &p->cfg->health;
    const cJSON *f[CB__N];
    int64_t n;
    bool on = true;
    if (switch_or_object(p, v, &on) && members(p, v, breaker_fields, f)) {
        if (get_int(p, "failures", f[CB_FAILURES], 1, 1000, false, &n))
            h->breaker_threshold = (int)n;
        get_duration(p, "cooloff", f[CB_COOLOFF], 1, &h->breaker_cooloff_ms);
    }
    if (!on)
        h->breaker_threshold = 0;
}

enum { RB_PERCENT, RB_MIN_PER_SECOND, RB_WINDOW, RB__N };
static const char *const budget_fields[] = {"percent", "minPerSecond", "window", NULL};

/* retryBudget: retries may add percent% to the requests of the last window,
 * plus minPerSecond a second whatever the traffic. */
static void parse_budget(parser *p, const cJSON *v)
{
    aigw_health_opts *h = &p->cfg->health;
    const cJSON *f[RB__N];
    int64_t n;
    bool on = true;
    if (switch_or_object(p, v, &on) && members(p, v, budget_fields, f)) {
        if (get_int(p, "percent", f[RB_PERCENT], 0, 1000, false, &n))
            h->budget_percent = (int)n;
        if (get_int(p, "minPerSecond", f[RB_MIN_PER_SECOND], 0, 100000, false, &n))
            h->budget_min_per_sec = (int)n;
        get_duration_in(p, "window", f[RB_WINDOW], 1000, 3600 * 1000, &h->budget_window_ms);
    }
    h->budget_on = on;
}

enum { NK_VALUE, NK_VALUE_FROM, NK__N };
static const char *const ngrok_key_fields[] = {"value", "valueFrom", NULL};

/* A secret given as a string, {value} or {valueFrom}. */
static void read_secret_member(parser *p, const cJSON *v, aigw_secret *out)
{
    const cJSON *f[NK__N];
    if (cJSON_IsString(v))
        secret_accept(p, v->valuestring, strlen(v->valuestring), "the value", out);
    else if (cJSON_IsObject(v) && members(p, v, ngrok_key_fields, f))
        read_secret(p, f[NK_VALUE], f[NK_VALUE_FROM], out);
    else if (!cJSON_IsObject(v))
        problem(p, "expected a string or an object, got %s", kind(v));
}

enum { RS_URL, RS_PREFIX, RS_TIMEOUT, RS_SYNC, RS_PASSWORD, RS_SALT, RS__N };
static const char *const redis_fields[] = {"url",      "keyPrefix", "timeout", "syncInterval",
                                           "password", "salt",      NULL};

/* healthStore.redis: where a fleet shares key health. */
static void parse_redis_store(parser *p, const cJSON *v)
{
    aigw_store_opts *o = &p->cfg->store;
    const cJSON *f[RS__N];
    const char *url, *prefix;
    size_t mark;
    if (!members(p, v, redis_fields, f))
        return;
    if (!aigw__have_redis()) {
        problem(p, "this libaigw was built without the Redis health store (hiredis)");
        return;
    }
    p->cfg->has_store = true;
    if ((url = get_str(p, "url", f[RS_URL], true, 1, 4096)) != NULL) {
        char *why = NULL;
        mark = path_field(p, "url");
        if (aigw__redis_url_check(url, &why) != 0) {
            if (why)
                problem(p, "%s", why);
            else
                p->oom = true;
            aigw__free(why);
        } else if (!(o->url = aigw__strdup(url))) {
            p->oom = true;
        }
        path_pop(p, mark);
    }
    prefix = f[RS_PREFIX] ? get_str(p, "keyPrefix", f[RS_PREFIX], false, 0, 64) : "aigw:";
    if (prefix) {
        size_t i;
        for (i = 0; prefix[i]; i++)
            if ((unsigned char)prefix[i] < 0x21 || (unsigned char)prefix[i] > 0x7e)
                break;
        if (prefix[i]) {
            mark = path_field(p, "keyPrefix");
            problem(p, "must be printable ASCII without spaces");
            path_pop(p, mark);
        } else if (!(o->prefix = aigw__strdup(prefix))) {
            p->oom = true;
        }
    }
    get_duration_in(p, "timeout", f[RS_TIMEOUT], 1, 60 * 1000, &o->timeout_ms);
    get_duration_in(p, "syncInterval", f[RS_SYNC], 1, 60 * 1000, &o->sync_ms);
    if (f[RS_PASSWORD]) {
        mark = path_field(p, "password");
        read_secret_member(p, f[RS_PASSWORD], &o->password);
        path_pop(p, mark);
    }
    if (f[RS_SALT]) {
        mark = path_field(p, "salt");
        read_secret_member(p, f[RS_SALT], &o->salt);
        path_pop(p, mark);
    }
}

enum { HS_REDIS, HS__N };
static const char *const store_fields[] = {"redis", NULL};

/* healthStore: {"redis": {...}}. */
static void parse_health_store(parser *p, const cJSON *v)
{
    const cJSON *f[HS__N];
    if (!members(p, v, store_fields, f))
        return;
    if (!f[HS_REDIS]) {
        if (!v->child) /* else the unknown member was named */
            problem(p, "needs \"redis\" (the one store a gateway file can name)");
        return;
    }
    section(p, "redis", f[HS_REDIS], parse_redis_store);
}

enum { TLS_CA, TLS_CERT, TLS_KEY, TLS__N };
static const char *const tls_fields[] = {"caBundle", "clientCertificate", "clientKey", NULL};

/* A path member of tls: a regular file this process can read now (libcurl
 * reads it at each handshake; a problem is better named here, by its path,
 * than as a TLS failure of every request).  Its contents are not read. */
static void tls_file(parser *p, const char *field, const cJSON *v, char **out)
{
    char why[128];
    const char *name;
    struct stat st;
    int fd;
    size_t mark;
    if (!v || !(name = get_str(p, field, v, false, 1, 4096)))
        return;
    mark = path_field(p, field);
    if ((fd = open(name, O_RDONLY | O_CLOEXEC)) < 0) {
        problem(p, "cannot read file '%s': %s", name, errno_text(errno, why, sizeof why));
    } else {
        if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
            problem(p, "'%s' is not a regular file", name);
        else if (!(*out = aigw__strdup(name)))
            p->oom = true;
        close(fd);
    }
    path_pop(p, mark);
}

/* tls: {caBundle, clientCertificate, clientKey}, PEM files.  caBundle
 * replaces the system's trusted CAs; verification is never turned off. */
static void parse_tls(parser *p, const cJSON *v)
{
    aigw_config *c = p->cfg;
    const cJSON *f[TLS__N];
    if (!members(p, v, tls_fields, f))
        return;
    tls_file(p, "caBundle", f[TLS_CA], &c->tls_ca_file);
    tls_file(p, "clientCertificate", f[TLS_CERT], &c->tls_client_cert);
    tls_file(p, "clientKey", f[TLS_KEY], &c->tls_client_key);
    if (f[TLS_KEY] && !f[TLS_CERT]) {
        size_t mark = path_field(p, "clientKey");
        problem(p, "needs \"clientCertificate\" (the certificate this key is for)");
        path_pop(p, mark);
    }
}

/* The key-health extensions of gatewayConfig (see aigw_health_opts). */
static void parse_health(parser *p, const cJSON *f[])
{
    aigw_health_opts *h = &p->cfg->health;
    /* 0: a 429 that names no wait leaves the key ready (no memory of it) */
    get_duration(p, "keyCooldown", f[GC_KEY_COOLDOWN], 0, &h->cooldown_ms);
    get_duration(p, "keyCooldownMax", f[GC_KEY_COOLDOWN_MAX], 0, &h->cooldown_max_ms);
    /* 0: an auth or quota failure never benches a key */
    get_duration(p, "keyBenchTime", f[GC_KEY_BENCH], 0, &h->bench_ms);
    section(p, "circuitBreaker", f[GC_BREAKER], parse_breaker);
    section(p, "retryBudget", f[GC_BUDGET], parse_budget);
    section(p, "healthStore", f[GC_STORE], parse_health_store);
    section(p, "tls", f[GC_TLS], parse_tls);
}

static void parse_gateway_config(parser *p, const cJSON *v)
{
    aigw_config *c = p->cfg;
    const cJSON *f[GC__N];
    int64_t n, max_bytes = (uint64_t)SIZE_MAX < (uint64_t)MAX_JSON_INT ? (int64_t)SIZE_MAX
                                                                        : MAX_JSON_INT;
    if (!members(p, v, gateway_fields, f))
        return;
    get_duration(p, "totalTimeout", f[GC_TOTAL], 1, &c->total_timeout_ms);
    get_duration(p, "perRequestTimeout", f[GC_PER_REQUEST], 1, &c->per_request_timeout_ms);
    get_duration(p, "connectTimeout", f[GC_CONNECT], 1, &c->connect_timeout_ms);
    /* 0 is meaningful here: never wait for a Retry-After. */
    get_duration(p, "retryAfterMax", f[GC_RETRY_AFTER_MAX], 0, &c->retry_after_max_ms);
    if (get_int(p, "maxAttempts", f[GC_MAX_ATTEMPTS], 1, 1000, false, &n))
        c->max_attempts = (int)n;
    if (get_int(p, "sameBackendRetries", f[GC_SAME_BACKEND], 0, 10, false, &n))
        c->same_backend_retries = (int)n;
    if (get_int(p, "maxResponseBytes", f[GC_MAX_RESPONSE], 1, max_bytes, false, &n))
        c->max_response_bytes = (size_t)n;
    get_duration(p, "firstTokenTimeout", f[GC_FIRST_TOKEN], 1, &c->first_token_timeout_ms);
    get_duration(p, "streamIdleTimeout", f[GC_STREAM_IDLE], 1, &c->stream_idle_timeout_ms);
    if (f[GC_STREAM_RESTART]) {
        size_t mark = path_field(p, "streamRestart");
        if (cJSON_IsBool(f[GC_STREAM_RESTART]))
            c->stream_restart = cJSON_IsTrue(f[GC_STREAM_RESTART]);
        else
            problem(p, "expected a boolean, got %s", kind(f[GC_STREAM_RESTART]));
        path_pop(p, mark);
    }
    if (get_int(p, "maxEventBytes", f[GC_MAX_EVENT], 64, 256 * 1024 * 1024, false, &n))
        c->max_event_bytes = (size_t)n;
    /* ngrok's token caps (null clears them): checked, not yet enforced. */
    get_int(p, "maxInputTokens", f[GC_MAX_INPUT], 1, MAX_JSON_INT, true, &n);
    get_int(p, "maxOutputTokens", f[GC_MAX_OUTPUT], 1, MAX_JSON_INT, true, &n);
    if (f[GC_METADATA] && !cJSON_IsNull(f[GC_METADATA]))
        get_str(p, "metadata", f[GC_METADATA], false, 0, 4096);
    parse_health(p, f);
}

/* The ngrok access key: a string, {value} or {valueFrom}. */
static void parse_ngrok_key(parser *p, const cJSON *v)
{
    aigw_config *c = p->cfg;
    read_secret_member(p, v, &c->ngrok_key);
    c->has_ngrok_key = c->ngrok_key.value != NULL;
}

/* ------------------------------------------------------------------------ */
/* The file                                                                 */
/* ------------------------------------------------------------------------ */

enum {
    TOP_PROVIDERS,
    TOP_KEYS,
    TOP_AKC,
    TOP_AKCS,
    TOP_ACCESS_KEYS,
    TOP_GATEWAY,
    TOP_NGROK_KEY,
    TOP_NGROK_URL,
    TOP__N
};
static const char *const top_fields[] = {
    "providers",     "providerKeys",   "accessKeyConfiguration", "accessKeyConfigurations",
    "accessKeys",    "gatewayConfig",  "ngrokAccessKey",         "ngrokGatewayUrl",
    NULL};

/* The ngrok POST body alone: no gateway-file member, some AKC member. */
static bool looks_bare(const cJSON *root)
{
    size_t i;
    bool akc = false;
    for (i = 0; top_fields[i]; i++)
        if (cJSON_GetObjectItemCaseSensitive(root, top_fields[i]))
            return false;
    for (i = 0; akc_fields[i]; i++)
        akc = akc || cJSON_GetObjectItemCaseSensitive(root, akc_fields[i]) != NULL;
    return akc;
}

static void parse_providers(parser *p, const cJSON *v)
{
    if (is_array(p, v))
        each(p, v, parse_provider, NULL);
}

static void parse_keys(parser *p, const cJSON *v)
{
    size_t n;
    if ((p->cfg->keys = new_array(p, v, sizeof *p->cfg->keys, &n)) != NULL &&
        idx_init(p, &p->key_ids, n)) {
        p->cfg->n_keys = n;
        each(p, v, parse_pkey, NULL);
    }
}

static void parse_ngrok_url(parser *p, const cJSON *v)
{
    const char *s = str_check(p, v, 1, MAX_URL);
    char *url = s ? check_url(p, s) : NULL;
    if (url) {
        aigw__free(p->cfg->ngrok_gateway_url);
        p->cfg->ngrok_gateway_url = url;
    }
}

/* The access key configurations: akcs[0] is accessKeyConfiguration's
 * when there is one (else the list's first, else an empty one). */
static bool alloc_akcs(parser *p, size_t n)
{
    p->cfg->n_akcs = n ? n : 1;
    if (!(p->cfg->akcs = aigw__calloc(p->cfg->n_akcs, sizeof *p->cfg->akcs))) {
        p->oom = true;
        return false;
    }
    p->akc = &p->cfg->akcs[0];
    return true;
}

/* For p->akc_names. */
static const char *akc_name(const aigw_config *cfg, size_t i)
{
    return cfg->akcs[i].name;
}

/* The access key configuration with this name: its position, or IDX_NONE. */
static size_t find_akc(const parser *p, const char *name, uint64_t h)
{
    return idx_find_str(&p->akc_names, h, name, akc_name, p->cfg);
}

static void parse_listed_akc(parser *p, const cJSON *v, size_t i, void *ctx)
{
    size_t at = *(const size_t *)ctx + i, j;
    aigw_akc *a = &p->cfg->akcs[at];
    uint64_t h;
    p->akc = a;
    parse_akc(p, v);
    p->akc = &p->cfg->akcs[0];
    if (!a->name)
        return;
    h = hash_str(p, a->name);
    if ((j = find_akc(p, a->name, h)) == IDX_NONE)
        idx_add(&p->akc_names, h, at);
    else if (*(const size_t *)ctx == 1 && j == 0)
        problem_at(p, "name", "duplicate name (also accessKeyConfiguration's)");
    else
        problem_at(p, "name", "duplicate name (also accessKeyConfigurations[%zu])",
                   j - *(const size_t *)ctx);
}

static void parse_akc_list(parser *p, const cJSON *v)
{
    size_t first = p->cfg->n_akcs - (size_t)cJSON_GetArraySize(v);
    if (is_array(p, v))
        each(p, v, parse_listed_akc, &first);
}

static bool same_secret(const aigw_secret *a, const aigw_secret *b);

/* For p->access_ids. */
static const char *access_id(const aigw_config *cfg, size_t i)
{
    return cfg->access_keys[i].id;
}

enum { AK_ID, AK_DESCRIPTION, AK_METADATA, AK_VALUE, AK_VALUE_FROM, AK_CONFIGURATION, AK__N };
static const char *const access_key_fields[] = {"id",        "description", "metadata",
                                                "value",     "valueFrom",   "configuration",
                                                NULL};

static void parse_access_key(parser *p, const cJSON *v, size_t i, void *ctx)
{
    aigw_access_key *k = &p->cfg->access_keys[i];
    const aigw_config *cfg = p->cfg;
    const cJSON *f[AK__N];
    const char *s;
    size_t j;
    (void)ctx;
    if (!members(p, v, access_key_fields, f))
        return;
    if ((s = get_str(p, "id", f[AK_ID], true, 1, 255)) != NULL) {
        uint64_t h = hash_str(p, s);
        if ((j = idx_find_str(&p->access_ids, h, s, access_id, cfg)) != IDX_NONE)
            problem_at(p, "id", "duplicate id (also accessKeys[%zu])", j);
        else if ((k->id = str_copy(p, s)) != NULL)
            idx_add(&p->access_ids, h, i);
    }
    get_str(p, "description", f[AK_DESCRIPTION], false, 0, 255);
    get_str(p, "metadata", f[AK_METADATA], false, 0, 4096);
    /* Which configuration its caller uses: required when there is a choice. */
    s = get_str(p, "configuration", f[AK_CONFIGURATION], cfg->n_akcs > 1, 1, 255);
    if (s) {
        if ((j = find_akc(p, s, hash_str(p, s))) == IDX_NONE)
            problem_at(p, "configuration", "no access key configuration with this name");
        else
            k->akc = j;
    }
    read_secret(p, f[AK_VALUE], f[AK_VALUE_FROM], &k->value);
    if (k->value.value && k->value.len < 8)
        problem_at(p, f[AK_VALUE] ? "value" : "valueFrom",
                   "too short for an access key (at least 8 bytes)");
    if (k->value.value) {
        uint64_t h = hash_bytes(p, k->value.value, k->value.len);
        size_t at = (size_t)h;
        while ((j = idx_next(&p->access_values, h, &at)) != IDX_NONE &&
               !same_secret(&cfg->access_keys[j].value, &k->value))
            ;
        if (j != IDX_NONE)
            problem_at(p, f[AK_VALUE] ? "value" : "valueFrom",
                       "the same value as accessKeys[%zu]", j);
        else
            idx_add(&p->access_values, h, i);
    }
}

static void parse_access_keys(parser *p, const cJSON *v)
{
    size_t n;
    if ((p->cfg->access_keys = new_array(p, v, sizeof *p->cfg->access_keys, &n)) != NULL &&
        idx_init(p, &p->access_ids, n) && idx_init(p, &p->access_values, n)) {
        p->cfg->n_access_keys = n;
        each(p, v, parse_access_key, NULL);
    }
}

static void parse_root(parser *p, const cJSON *root)
{
    const cJSON *f[TOP__N];
    size_t n_custom = 0, n_akcs;
    if (!cJSON_IsObject(root)) {
        problem(p, "expected an object, got %s", kind(root));
        return;
    }
    p->bare = p->cfg->bare = looks_bare(root);
    if (p->bare) {
        init_providers(p, 0);
        if (!p->oom && alloc_akcs(p, 1))
            parse_akc(p, root);
        return;
    }
    members(p, root, top_fields, f);
    if (cJSON_IsArray(f[TOP_PROVIDERS]))
        n_custom = (size_t)cJSON_GetArraySize(f[TOP_PROVIDERS]);
    init_providers(p, n_custom);
    n_akcs = f[TOP_AKC] ? 1 : 0;
    if (cJSON_IsArray(f[TOP_AKCS]))
        n_akcs += (size_t)cJSON_GetArraySize(f[TOP_AKCS]);
    if (p->oom || !alloc_akcs(p, n_akcs) || !idx_init(p, &p->akc_names, p->cfg->n_akcs))
        return;
    /* Order matters: keys name providers, rules name both, access keys
     * name configurations. */
    section(p, "providers", f[TOP_PROVIDERS], parse_providers);
    section(p, "providerKeys", f[TOP_KEYS], parse_keys);
    section(p, "accessKeyConfiguration", f[TOP_AKC], parse_akc);
    if (p->cfg->akcs[0].name)
        idx_add(&p->akc_names, hash_str(p, p->cfg->akcs[0].name), 0);
    section(p, "accessKeyConfigurations", f[TOP_AKCS], parse_akc_list);
    section(p, "accessKeys", f[TOP_ACCESS_KEYS], parse_access_keys);
    section(p, "gatewayConfig", f[TOP_GATEWAY], parse_gateway_config);
    section(p, "ngrokAccessKey", f[TOP_NGROK_KEY], parse_ngrok_key);
    section(p, "ngrokGatewayUrl", f[TOP_NGROK_URL], parse_ngrok_url);
}

/* ---- the JSON text ---- */

static void json_problem(parser *p, const char *s, size_t off, const char *what)
{
    size_t line, col;
    aigw__text_pos(s, off, &line, &col);
    problem(p, "%s at line %zu, column %zu", what, line, col);
}

/* Where a NUL hides in the text, raw or as \u0000 in a string (cJSON would
 * keep it and C strings would be cut there, a key value among them). */
static size_t find_nul(const char *s, size_t len)
{
    size_t i;
    bool in_str = false;
    for (i = 0; i < len; i++) {
        if (s[i] == '\0')
            return i;
        if (!in_str) {
            in_str = s[i] == '"';
        } else if (s[i] == '"') {
            in_str = false;
        } else if (s[i] == '\\' && i + 1 < len && s[i + 1] != '\0') {
            if (i + 5 < len && s[i + 1] == 'u' && memcmp(s + i + 2, "0000", 4) == 0)
                return i;
            i++;
        }
    }
    return len;
}

/* ---- UTF-8: every string and member name, before anything reads them ---- */

/* Members whose strings are secrets (or may hold one, as a Redis URL's
 * password): a problem says where, never which byte. */
static bool secret_member(const char *name)
{
    static const char *const names[] = {"value", "ngrokAccessKey", "password", "salt", "url",
                                         NULL};
    return one_of(name, names);
}

/* s at the current path: false after reporting where it is not UTF-8. */
static bool utf8_ok(parser *p, const char *what, const char *s, bool secret)
{
    size_t len = strlen(s), off = aigw__utf8_check(s, len);
    if (off == len)
        return true;
    if (secret)
        problem(p, "%snot valid UTF-8 (at offset %zu)", what, off);
    else
        problem(p, "%snot valid UTF-8 (byte 0x%02x at offset %zu)", what,
                (unsigned)(unsigned char)s[off], off);
    return false;
}

/* Every string of the tree at n (the current path) and every member name:
 * a problem at each that is not valid UTF-8.  A name that is not is
 * reported at its object, and its value is not looked into (its path could
 * not be written). */
static void check_utf8(parser *p, const cJSON *n, bool secret)
{
    const cJSON *c;
    size_t i = 0, mark;
    if (cJSON_IsString(n) && n->valuestring) {
        utf8_ok(p, "", n->valuestring, secret);
        return;
    }
    cJSON_ArrayForEach(c, n) {
        if (p->oom)
            return;
        if (!cJSON_IsObject(n)) {
            mark = path_index(p, i++);
            check_utf8(p, c, secret);
        } else if (!c->string || !utf8_ok(p, "a member name is ", c->string, false)) {
            continue;
        } else {
            mark = path_field(p, c->string);
            check_utf8(p, c, secret || secret_member(c->string));
        }
        path_pop(p, mark);
    }
}

/* The strings of a parsed tree may be secrets: wipe them before cJSON
 * frees them. */
static void wipe_tree(cJSON *n)
{
    for (; n; n = n->next) {
        if (n->valuestring)
            aigw__wipe(n->valuestring, strlen(n->valuestring));
        if (n->child)
            wipe_tree(n->child);
    }
}

static void json_free(cJSON *root)
{
    wipe_tree(root);
    cJSON_Delete(root);
}

static cJSON *parse_text(parser *p, const char *json, size_t len)
{
    const char *end = NULL;
    bool control;
    size_t off = find_nul(json, len);
    cJSON *root;
    if (off < len) {
        json_problem(p, json, off, "invalid JSON (a NUL character)");
        return NULL;
    }
    if ((off = aigw__json_misread(json, len, false, &control)) < len) {
        json_problem(p, json, off, "invalid JSON (a \\u escape that is not four hex digits)");
        return NULL;
    }
    root = aigw__json_parse(json, len, &end);
    off = end && end >= json && (size_t)(end - json) <= len ? (size_t)(end - json) : len;
    if (!root) {
        /* cJSON fails alike for bad text and for memory (its allocator is
         * the host's): the scan, which allocates nothing, tells which, and
         * where.  Text that would have parsed is out of memory, unless
         * something follows it (a problem whatever the memory). */
        char what[64];
        aigw_json_verdict v = aigw__json_check(json, len, &off);
        if (v == AIGW_JSON_OK && aigw__skip_ws(json, len, off) == len) {
            p->oom = true;
            return NULL;
        }
        if (v == AIGW_JSON_TOO_DEEP)
            snprintf(what, sizeof what, AIGW_JSON_TOO_DEEP_FMT, CJSON_NESTING_LIMIT);
        else
            snprintf(what, sizeof what, "invalid JSON%s",
                     v == AIGW_JSON_OK ? " (text after the value)" : "");
        json_problem(p, json, v == AIGW_JSON_OK ? aigw__skip_ws(json, len, off) : off, what);
        return NULL;
    }
    if ((off = aigw__skip_ws(json, len, off)) < len) {
        json_problem(p, json, off, "invalid JSON (text after the value)");
        json_free(root);
        return NULL;
    }
    return root;
}

/* ------------------------------------------------------------------------ */
/* The object                                                               */
/* ------------------------------------------------------------------------ */

static void rule_free(aigw_rule *r);

static void akc_free(aigw_akc *a)
{
    size_t i;
    aigw__free(a->name);
    aigw__strv_free(a->provider_allow, a->n_provider_allow);
    aigw__strv_free(a->model_allow, a->n_model_allow);
    for (i = 0; a->rules && i < a->n_rules; i++)
        rule_free(&a->rules[i]);
    aigw__free(a->rules);
}

static void rule_free(aigw_rule *r)
{
    size_t s, k;
    for (s = 0; r->steps && s < r->n_steps; s++) {
        aigw_step *st = &r->steps[s];
        for (k = 0; st->keys && k < st->n_keys; k++) {
            aigw__free(st->keys[k].id);
            secret_free(&st->keys[k].value);
        }
        aigw__free(st->keys);
    }
    aigw__free(r->steps);
    aigw__free(r->provider);
    aigw__free(r->model);
}

static void config_free(aigw_config *cfg)
{
    size_t i;
    if (!cfg)
        return;
    for (i = 0; cfg->providers && i < cfg->n_providers; i++)
        provider_free(&cfg->providers[i]);
    aigw__free(cfg->providers);
    for (i = 0; cfg->keys && i < cfg->n_keys; i++) {
        aigw__free(cfg->keys[i].id);
        aigw__free(cfg->keys[i].provider_id);
        aigw__free(cfg->keys[i].name);
        secret_free(&cfg->keys[i].value);
    }
    aigw__free(cfg->keys);
    for (i = 0; cfg->akcs && i < cfg->n_akcs; i++)
        akc_free(&cfg->akcs[i]);
    aigw__free(cfg->akcs);
    for (i = 0; cfg->access_keys && i < cfg->n_access_keys; i++) {
        aigw__free(cfg->access_keys[i].id);
        secret_free(&cfg->access_keys[i].value);
    }
    aigw__free(cfg->access_keys);
    secret_free(&cfg->ngrok_key);
    aigw__free(cfg->ngrok_gateway_url);
    aigw__free(cfg->tls_ca_file);
    aigw__free(cfg->tls_client_cert);
    aigw__free(cfg->tls_client_key);
    if (cfg->store.url) /* may hold a password */
        aigw__wipe(cfg->store.url, strlen(cfg->store.url));
    aigw__free(cfg->store.url);
    aigw__free(cfg->store.prefix);
    secret_free(&cfg->store.password);
    secret_free(&cfg->store.salt);
    aigw__free(cfg->all_keys);
    aigw__free(cfg);
}

/* ---- the configuration's keys, listed once ---- */

static bool same_secret(const aigw_secret *a, const aigw_secret *b)
{
    bool ha = a && a->value, hb = b && b->value;
    if (ha != hb)
        return false;
    return !ha || (a->len == b->len && memcmp(a->value, b->value, a->len) == 0);
}

static void list_key(parser *p, idx *seen, const char *provider, const char *id,
                     const aigw_secret *value)
{
    aigw_config *c = p->cfg;
    uint64_t h;
    size_t i, at;
    provider = provider ? provider : "";
    id = id ? id : "";
    h = hash_tuple(p, provider, id, value);
    at = (size_t)h;
    while ((i = idx_next(seen, h, &at)) != IDX_NONE)
        if (strcmp(c->all_keys[i].provider, provider) == 0 &&
            strcmp(c->all_keys[i].id, id) == 0 && same_secret(c->all_keys[i].value, value))
            return;
    idx_add(seen, h, c->n_all_keys);
    c->all_keys[c->n_all_keys].provider = provider;
    c->all_keys[c->n_all_keys].id = id;
    c->all_keys[c->n_all_keys].value = value;
    c->n_all_keys++;
}

/* The provider of a rule's step key: the providerKey it names (same id and
 * value), else the rule's provider (rule_target resolved it from the model
 * when the rule names none). */
static const char *step_key_provider(const parser *p, const aigw_rule *rule,
                                     const aigw_step_key *sk)
{
    const aigw_pkey *k;
    size_t i;
    if (sk->id && (i = find_key(p, sk->id, hash_str(p, sk->id))) != IDX_NONE) {
        k = &p->cfg->keys[i];
        if (same_secret(&k->value, &sk->value))
            return k->provider_id;
    }
    return rule->provider;
}

static void collect_keys(parser *p)
{
    aigw_config *c = p->cfg;
    idx seen;
    size_t a, i, s, j, cap = c->n_keys;
    for (a = 0; a < c->n_akcs; a++)
        for (i = 0; i < c->akcs[a].n_rules; i++)
            for (s = 0; s < c->akcs[a].rules[i].n_steps; s++)
                cap += c->akcs[a].rules[i].steps[s].n_keys;
    if (!(c->all_keys = aigw__calloc(cap ? cap : 1, sizeof *c->all_keys))) {
        p->oom = true;
        return;
    }
    if (!idx_init(p, &seen, cap))
        return;
    for (i = 0; i < c->n_keys; i++)
        list_key(p, &seen, c->keys[i].provider_id, c->keys[i].id, &c->keys[i].value);
    for (a = 0; a < c->n_akcs; a++)
        for (i = 0; i < c->akcs[a].n_rules; i++)
            for (s = 0; s < c->akcs[a].rules[i].n_steps; s++) {
                const aigw_rule *rule = &c->akcs[a].rules[i];
                const aigw_step *st = &rule->steps[s];
                if (st->type != AIGW_STEP_USER)
                    continue;
                for (j = 0; j < st->n_keys; j++)
                    list_key(p, &seen, step_key_provider(p, rule, &st->keys[j]),
                             st->keys[j].id, &st->keys[j].value);
            }
    idx_free(&seen);
}

const aigw_key_entry *aigw__config_keys(const aigw_config *cfg, size_t *n)
{
    *n = cfg ? cfg->n_all_keys : 0;
    return cfg ? cfg->all_keys : NULL;
}

static void set_defaults(parser *p)
{
    aigw_config *c = p->cfg;
    c->refs = 1;
    c->per_request_timeout_ms = 60 * 1000;
    c->total_timeout_ms = 120 * 1000;
    c->connect_timeout_ms = 10 * 1000;
    c->retry_after_max_ms = 5 * 1000;
    c->max_attempts = 10;
    c->same_backend_retries = 2;
    c->max_response_bytes = (size_t)32 * 1024 * 1024;
    c->first_token_timeout_ms = 30 * 1000;
    c->stream_idle_timeout_ms = 30 * 1000;
    c->stream_restart = false;
    c->max_event_bytes = (size_t)1024 * 1024;
    c->health.cooldown_ms = 2 * 1000;
    c->health.cooldown_max_ms = 3600 * 1000;
    c->health.bench_ms = 3600 * 1000;
    c->health.breaker_threshold = 5;
    c->health.breaker_cooloff_ms = 5 * 1000;
    c->health.probe_timeout_ms = c->per_request_timeout_ms; /* again after the parse */
    c->health.budget_on = true;
    c->health.budget_percent = 20;
    c->health.budget_min_per_sec = 10;
    c->health.budget_window_ms = 10 * 1000;
    c->store.timeout_ms = 50;
    c->store.sync_ms = 100;
    c->ngrok_gateway_url = str_copy(p, AIGW_NGROK_GATEWAY_URL);
}

static aigw_status finish(parser *p, aigw_config **out, aigw_error **err)
{
    if (p->oom) {
        config_free(p->cfg);
        aigw_error_free(p->e);
        return aigw__fail(err, AIGW_ENOMEM, "out of memory");
    }
    if (p->e->n > 0) {
        config_free(p->cfg);
        if (err)
            *err = aigw__error_finish(p->e);
        else
            aigw_error_free(p->e);
        return AIGW_ECONFIG;
    }
    aigw_error_free(p->e);
    *out = p->cfg;
    return AIGW_OK;
}

aigw_status aigw_config_parse(const char *json, size_t len, aigw_config **out, aigw_error **err)
{
    parser p;
    cJSON *root;
    if (err)
        *err = NULL;
    if (out)
        *out = NULL;
    if (!json || !out)
        return aigw__fail(err, AIGW_EINVAL, "aigw_config_parse: json and out must not be NULL");
    memset(&p, 0, sizeof p);
    aigw__random_bytes(p.sipkey, sizeof p.sipkey);
    p.e = aigw__error_new(AIGW_ECONFIG);
    p.cfg = aigw__calloc(1, sizeof *p.cfg);
    if (!p.e || !p.cfg) {
        aigw_error_free(p.e);
        aigw__free(p.cfg);
        return aigw__fail(err, AIGW_ENOMEM, "out of memory");
    }
    set_defaults(&p);
    if (!p.oom && (root = parse_text(&p, json, len)) != NULL) {
        /* Encoding first: the checks after it quote strings in problems
         * and copy them into the configuration (ids, names, models), where
         * a binding reads them as text. */
        check_utf8(&p, root, false);
        if (!p.oom && p.e->n == 0)
            parse_root(&p, root);
        json_free(root);
    }
    /* a probe through an open breaker lives as long as any attempt */
    p.cfg->health.probe_timeout_ms = p.cfg->per_request_timeout_ms;
    if (!p.oom && p.e->n == 0)
        collect_keys(&p);
    idx_free(&p.key_ids);
    idx_free(&p.akc_names);
    idx_free(&p.access_ids);
    idx_free(&p.access_values);
    return finish(&p, out, err);
}

aigw_status aigw_config_load_file(const char *path, aigw_config **out, aigw_error **err)
{
    aigw_buf b = AIGW_BUF_INIT;
    char why[128];
    aigw_status st;
    int errnum = 0, rc;
    if (err)
        *err = NULL;
    if (out)
        *out = NULL;
    if (!path || !out)
        return aigw__fail(err, AIGW_EINVAL, "aigw_config_load_file: path and out must not be "
                                            "NULL");
    rc = read_file(path, MAX_CONFIG_FILE, &b, &errnum);
    if (rc == 0)
        st = aigw_config_parse(b.data, b.len, out, err);
    else if (rc == -2)
        st = aigw__fail(err, AIGW_ENOMEM, "out of memory");
    else if (rc == -3)
        st = aigw__fail(err, AIGW_EIO, "cannot read '%s': larger than %zu bytes", path,
                        MAX_CONFIG_FILE);
    else
        st = aigw__fail(err, AIGW_EIO, "cannot read '%s': %s", path,
                        errno_text(errnum, why, sizeof why));
    aigw__buf_wipe_free(&b); /* the file may hold key values */
    return st;
}

aigw_config *aigw_config_ref(aigw_config *cfg)
{
    if (cfg)
        __atomic_fetch_add(&cfg->refs, 1, __ATOMIC_RELAXED);
    return cfg;
}

aigw_config *aigw_config_unref(aigw_config *cfg)
{
    /* acq_rel: every thread's last reads happen before the free. */
    if (cfg && __atomic_sub_fetch(&cfg->refs, 1, __ATOMIC_ACQ_REL) == 0)
        config_free(cfg);
    return NULL;
}

int aigw_config_is_bare(const aigw_config *cfg)
{
    return cfg && cfg->bare;
}

const aigw_provider *aigw__config_provider(const aigw_config *cfg, const char *id)
{
    const aigw_catalog_entry *e;
    size_t i;
    if (!cfg || !id)
        return NULL;
    for (i = 0; i < cfg->n_providers; i++)
        if (cfg->providers[i].id && aigw__strcasecmp(cfg->providers[i].id, id) == 0)
            return &cfg->providers[i];
    /* ngrok's aliases ("gemini" for google, ...) */
    if ((e = aigw__catalog_find(id)) != NULL && strcmp(e->id, id) != 0)
        return aigw__config_provider(cfg, e->id);
    return NULL;
}

/* ---- access key configurations, access keys, the models offered ---- */

const aigw_akc *aigw__config_akc(const aigw_config *cfg, const char *name)
{
    size_t i;
    if (!name || !*name)
        return &cfg->akcs[0];
    for (i = 0; i < cfg->n_akcs; i++)
        if (cfg->akcs[i].name && strcmp(cfg->akcs[i].name, name) == 0)
            return &cfg->akcs[i];
    return NULL;
}

size_t aigw_config_configuration_count(const aigw_config *cfg)
{
    return cfg ? cfg->n_akcs : 0;
}

const char *aigw_config_configuration_name(const aigw_config *cfg, size_t i)
{
    if (!cfg || i >= cfg->n_akcs)
        return NULL;
    return cfg->akcs[i].name ? cfg->akcs[i].name : "";
}

size_t aigw_config_access_key_count(const aigw_config *cfg)
{
    return cfg ? cfg->n_access_keys : 0;
}

const char *aigw_config_access_key_id(const aigw_config *cfg, size_t i)
{
    return cfg && i < cfg->n_access_keys ? cfg->access_keys[i].id : NULL;
}

const char *aigw_config_access_key_configuration(const aigw_config *cfg, size_t i)
{
    if (!cfg || i >= cfg->n_access_keys)
        return NULL;
    return aigw_config_configuration_name(cfg, cfg->access_keys[i].akc);
}

/*
 * Every key is compared, whatever matches, and each comparison touches the
 * longer of the two values whole: the time taken depends on the lengths of
 * the presented text and the keys, never on where the bytes differ or which
 * key matched.
 */
int aigw_config_access_key_find(const aigw_config *cfg, const char *presented, size_t len)
{
    size_t i, j;
    int found = -1;
    if (!cfg || !presented)
        return -1;
    for (i = 0; i < cfg->n_access_keys; i++) {
        const aigw_secret *v = &cfg->access_keys[i].value;
        size_t n = v->len > len ? v->len : len;
        unsigned char d = (unsigned char)(v->len != len);
        int eq, mask;
        for (j = 0; j < n; j++) {
            unsigned char a = j < len ? (unsigned char)presented[j] : 0;
            unsigned char b = j < v->len ? (unsigned char)v->value[j] : 0;
            d |= (unsigned char)(a ^ b);
        }
        eq = (int)(1u & (((unsigned)d - 1u) >> 8)); /* d == 0, without a branch */
        mask = -eq;                                  /* all ones when equal */
        found = (found & ~mask) | ((int)i & mask);
    }
    return found;
}

typedef struct model_pair {
    const char *provider;
    const char *model;
    char *owned; /* the model, when resolving allocated it */
} model_pair;

typedef struct model_list {
    model_pair *v;
    size_t n, cap;
    const aigw_akc *akc;
} model_list;

static int offer(model_list *l, const char *provider, const char *model, char *owned)
{
    size_t i;
    if (!aigw__access_allows(l->akc, provider, model)) {
        aigw__free(owned);
        return 0;
    }
    for (i = 0; i < l->n; i++)
        if (strcmp(l->v[i].provider, provider) == 0 && strcmp(l->v[i].model, model) == 0) {
            aigw__free(owned);
            return 0;
        }
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        model_pair *v = aigw__realloc(l->v, cap * sizeof *v);
        if (!v) {
            aigw__free(owned);
            return -1;
        }
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n].provider = provider;
    l->v[l->n].model = model;
    l->v[l->n].owned = owned;
    l->n++;
    return 0;
}

aigw_status aigw_config_models(const aigw_config *cfg, const char *configuration,
                               aigw_model_fn fn, void *userdata)
{
    model_list l;
    size_t i, j;
    int rc = 0;
    if (!cfg || !fn)
        return AIGW_EINVAL;
    memset(&l, 0, sizeof l);
    if (!(l.akc = aigw__config_akc(cfg, configuration)))
        return AIGW_EINVAL;
    /* the rules' models, then the custom providers' declared ones, then the
     * allow-list's exact entries */
    for (i = 0; rc == 0 && i < l.akc->n_rules; i++)
        if (l.akc->rules[i].provider && l.akc->rules[i].model)
            rc = offer(&l, l.akc->rules[i].provider, l.akc->rules[i].model, NULL);
    for (i = 0; rc == 0 && i < cfg->n_providers; i++)
        for (j = 0; rc == 0 && j < cfg->providers[i].n_models; j++)
            rc = offer(&l, cfg->providers[i].id, cfg->providers[i].models[j], NULL);
    for (i = 0; rc == 0 && l.akc->has_model_allow && i < l.akc->n_model_allow; i++) {
        const char *spec = l.akc->model_allow[i];
        const aigw_provider *pr;
        char *model = NULL;
        int r;
        if (strchr(spec, '*'))
            continue;
        r = aigw__resolve_model(cfg, spec, &pr, &model);
        if (r == -2)
            rc = -1;
        else if (r == 0)
            rc = offer(&l, pr->id, model, model);
    }
    for (i = 0; rc == 0 && i < l.n; i++)
        if (fn(userdata, l.v[i].provider, l.v[i].model) != 0)
            break;
    for (i = 0; i < l.n; i++)
        aigw__free(l.v[i].owned);
    aigw__free(l.v);
    return rc == 0 ? AIGW_OK : AIGW_ENOMEM;
}
