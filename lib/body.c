/* body.c - the request body: read its model list, rewrite it per attempt.
 *
 * The rewrite splices bytes instead of re-serialising a parsed tree: a parse
 * and print round trip would turn 1.0 into 1, 1e400 into null, reorder or
 * reformat members and re-escape strings, and the upstream must see the
 * caller's body as the caller wrote it.  cJSON only validates; a small
 * scanner over the top-level object finds what to replace or drop. */
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

typedef struct member {
    size_t key;       /* the key's opening quote */
    size_t key_end;   /* just past its closing quote */
    size_t value;     /* the value's first byte */
    size_t value_end; /* just past the value */
} member;

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

/* Whether the object has a top-level "model", and where its first member
 * starts (the closing brace's position when it has none). */
static int survey(const char *s, size_t len, bool *has_model, size_t *first)
{
    scanner sc;
    member m;
    int r;
    if (scan_open(&sc, s, len) != 0)
        return -1;
    *has_model = false;
    *first = aigw__skip_ws(s, len, sc.pos);
    while ((r = scan_member(&sc, &m)) > 0)
        if (key_is(s, &m, "model"))
            *has_model = true;
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
    bool has_model;
    size_t first;
    return aigw__skip_ws(body, len, end) == len && survey(body, len, &has_model, &first) == 0;
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
    why->bad_utf8 = why->too_deep = why->bad_char = why->bad_escape = BAD;
    why->nomem = false;
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
    if (key_is(sp->s, m, "model"))
        r |= put(sp, m->key, m->value) | put_model(sp);
    else
        r |= put(sp, m->key, m->value_end);
    sp->n_real++;
    return r;
}

static int splice(const char *s, size_t len, const char *model, aigw_buf *out)
{
    splicer sp = {s, model, out, 0, 0, 0, false, 0};
    scanner sc;
    member m;
    bool has_model;
    int r;
    if (survey(s, len, &has_model, &sp.first) != 0 || scan_open(&sc, s, len) != 0)
        return -1;
    sp.open = sc.pos;
    sp.prev_end = sp.first;
    sp.inserted = !has_model;
    if (put(&sp, 0, sp.first) != 0)
        return -2;
    if (sp.inserted && (aigw__buf_puts(out, "\"model\":") != 0 || put_model(&sp) != 0))
        return -2;
    while ((r = scan_member(&sc, &m)) > 0) {
        if (!key_is(s, &m, "models") && put_member(&sp, &m) != 0)
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

int aigw__body_splice(const char *body, size_t len, const char *model, aigw_buf *out)
{
    size_t mark;
    int rc;
    if (!body || !model || !out)
        return -1;
    mark = out->len;
    rc = splice(body, len, model, out);
    if (rc != 0 && out->data) {
        out->len = mark;
        out->data[mark] = '\0';
    }
    return rc;
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

int aigw__body_models(const char *body, size_t len, char **model, char ***models,
                      size_t *n_models, char **why)
{
    cJSON *root;
    refusal bad;
    int rc;
    *model = NULL;
    *models = NULL;
    *n_models = 0;
    if (why)
        *why = NULL;
    if (!(root = parse_object(body, len, &bad)))
        return refuse_body(why, body, &bad);
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
