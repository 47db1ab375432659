/* classify.c - an upstream answer -> a failure class and the wait it asked for.
 *
 * Providers disagree on status codes: OpenAI and Gemini answer 429 both for a
 * per-minute rate limit and for an exhausted balance, Anthropic answers 400
 * for a user-set spend limit.  So the status gives the class and the error
 * body refines it.  Machine-readable fields (code, type, status, details) are
 * matched as identifiers; the free-text message only against phrases specific
 * enough not to collide - Gemini's per-minute 429 also says "check your plan
 * and billing details", so "billing" is never looked for in a message. */
#include "internal.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <string.h>
#include <time.h>

/* No upstream wait is honoured beyond a day: a larger one is a bug or an
 * attack, and the policy caps waits far lower anyway (retryAfterMax). */
#define WAIT_MAX_MS (24LL * 3600 * 1000)
#define NS_PER_MS 1000000ULL
/* Saturation point of duration arithmetic; anything beyond clamps anyway. */
#define SAT_NS ((uint64_t)WAIT_MAX_MS * NS_PER_MS * 2)
/* Error bodies are small; a huge one is not worth parsing as JSON. */
#define BODY_PARSE_MAX ((size_t)1 << 20)
/* How much of a body that is not JSON is searched for known phrases. */
#define RAW_SCAN_MAX ((size_t)64 << 10)
#define MAX_IDS 6

static const char *const class_names[AIGW_CLASS__COUNT] = {
    [AIGW_CLASS_NONE] = NULL,
    [AIGW_CLASS_AUTH] = "auth",
    [AIGW_CLASS_QUOTA] = "quota",
    [AIGW_CLASS_RATE_LIMIT] = "rate_limit",
    [AIGW_CLASS_OVERLOADED] = "overloaded",
    [AIGW_CLASS_SERVER] = "server",
    [AIGW_CLASS_TIMEOUT] = "timeout",
    [AIGW_CLASS_NETWORK] = "network",
    [AIGW_CLASS_CONTEXT_LENGTH] = "context_length",
    [AIGW_CLASS_CONTENT_POLICY] = "content_policy",
    [AIGW_CLASS_BAD_REQUEST] = "bad_request",
    [AIGW_CLASS_PAYLOAD_TOO_LARGE] = "payload_too_large",
    [AIGW_CLASS_NOT_FOUND] = "not_found",
    [AIGW_CLASS_REDIRECT] = "redirect",
};

const char *aigw__class_name(aigw_class c)
{
    return ((unsigned)c < AIGW_CLASS__COUNT) ? class_names[c] : NULL;
}

/* ------------------------------------------------------------------------ */
/* Small text helpers                                                       */
/* ------------------------------------------------------------------------ */


static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static const char *skip_space(const char *s)
{
    while (is_space(*s))
        s++;
    return s;
}

/* Case-insensitive search of needle in n bytes of hay; NUL bytes in hay are
 * ordinary bytes, so a body holding them is searched to its end. */
static bool ci_contains(const char *hay, size_t n, const char *needle)
{
    size_t m = strlen(needle), i, j;
    if (!hay || m > n)
        return false;
    for (i = 0; i + m <= n; i++) {
        for (j = 0; j < m; j++)
            if (aigw__lower((unsigned char)hay[i + j]) != aigw__lower((unsigned char)needle[j]))
                break;
        if (j == m)
            return true;
    }
    return false;
}

static bool cstr_contains(const char *hay, const char *needle)
{
    return hay && ci_contains(hay, strlen(hay), needle);
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n, m = strlen(suffix);
    if (!s)
        return false;
    n = strlen(s);
    return n >= m && memcmp(s + n - m, suffix, m) == 0;
}

/* ------------------------------------------------------------------------ */
/* Numbers and durations                                                    */
/* ------------------------------------------------------------------------ */

static uint64_t sat_add(uint64_t a, uint64_t b)
{
    return (a >= SAT_NS || b >= SAT_NS - a) ? SAT_NS : a + b;
}

static int64_t ns_to_ms(uint64_t ns)
{
    uint64_t ms = ns / NS_PER_MS;
    return ms > (uint64_t)WAIT_MAX_MS ? WAIT_MAX_MS : (int64_t)ms;
}

/* Parses "digits[.digits]" at *sp as a count of unit_ns nanoseconds,
 * saturating at SAT_NS.  Decimal points are read by hand because strtod
 * follows the host's locale.  False when there is no digit. */
static bool parse_scaled(const char **sp, uint64_t unit_ns, uint64_t *ns)
{
    const char *s = *sp;
    uint64_t ip = 0, frac = 0, scale = unit_ns;
    bool any = false;
    for (; aigw__is_digit(*s); s++, any = true)
        if (ip <= SAT_NS)
            ip = ip * 10 + (uint64_t)(*s - '0');
    if (*s == '.')
        for (s++; aigw__is_digit(*s); s++, any = true) {
            scale /= 10;
            frac += (uint64_t)(*s - '0') * scale;
        }
    if (!any)
        return false;
    *ns = sat_add(ip > SAT_NS / unit_ns ? SAT_NS : ip * unit_ns, frac);
    *sp = s;
    return true;
}

/* A plain non-negative decimal taking the whole value, e.g. Retry-After
 * "120" (unit: seconds) or retry-after-ms "1500.5" (unit: ms).  -1 if not. */
static int64_t parse_plain(const char *v, uint64_t unit_ns)
{
    uint64_t ns;
    const char *s = skip_space(v);
    if (!parse_scaled(&s, unit_ns, &ns) || *skip_space(s) != '\0')
        return -1;
    return ns_to_ms(ns);
}

/* A Go-style duration ("6m0s", "1m30.5s", "120ms", "22s") as OpenAI's
 * x-ratelimit-reset-* and Gemini's retryDelay write them: duration.c's
 * parser, with the blanks a header value may carry around it, clamped like
 * every wait.  -1 when malformed, negative or past an int64 of ns. */
static int64_t parse_go_duration(const char *v)
{
    const char *s = skip_space(v);
    size_t n = strlen(s);
    char buf[64];
    int64_t ms;
    while (n > 0 && is_space(s[n - 1]))
        n--;
    if (n == 0 || n >= sizeof buf)
        return -1;
    memcpy(buf, s, n);
    buf[n] = '\0';
    if (aigw__parse_duration(buf, &ms) != 0)
        return -1;
    return ms > WAIT_MAX_MS ? WAIT_MAX_MS : ms;
}

/* ------------------------------------------------------------------------ */
/* Dates: HTTP-date (RFC 9110: IMF-fixdate, RFC 850, asctime), RFC 3339      */
/* ------------------------------------------------------------------------ */

typedef struct civil {
    int year, mon, day, hour, min, sec, ms;
} civil;

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
 * algorithm), so no timegm(), which is neither C11 nor POSIX. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    int64_t era, yoe, doy;
    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    return era * 146097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719468;
}

static bool civil_valid(const civil *c)
{
    return c->year >= 1970 && c->year <= 9999 && c->mon >= 1 && c->mon <= 12 && c->day >= 1 &&
           c->day <= 31 && c->hour <= 23 && c->min <= 59 && c->sec <= 60;
}

static int64_t civil_to_unix_ms(const civil *c)
{
    int64_t days = days_from_civil(c->year, c->mon, c->day);
    return ((days * 24 + c->hour) * 60 + c->min) * 60000 + (int64_t)c->sec * 1000 + c->ms;
}

/* Reads between min and max digits. */
static bool take_int(const char **sp, int min, int max, int *out)
{
    const char *s = *sp;
    int n = 0, v = 0;
    for (; n < max && aigw__is_digit(*s); n++, s++)
        v = v * 10 + (*s - '0');
    if (n < min)
        return false;
    *out = v;
    *sp = s;
    return true;
}

static bool take_char(const char **sp, char c)
{
    if (**sp != c)
        return false;
    (*sp)++;
    return true;
}

/* One or more spaces, as the date grammars put them. */
static bool take_spaces(const char **sp)
{
    if (**sp != ' ')
        return false;
    while (**sp == ' ')
        (*sp)++;
    return true;
}

static bool take_word(const char **sp, const char *w)
{
    size_t n = strlen(w);
    if (strncmp(*sp, w, n) != 0)
        return false;
    *sp += n;
    return true;
}

static bool take_month(const char **sp, int *mon)
{
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    int i;
    for (i = 0; i < 12; i++)
        if (strncmp(*sp, months + 3 * i, 3) == 0) {
            *mon = i + 1;
            *sp += 3;
            return true;
        }
    return false;
}

static bool take_hms(const char **sp, civil *c)
{
    return take_int(sp, 2, 2, &c->hour) && take_char(sp, ':') && take_int(sp, 2, 2, &c->min) &&
           take_char(sp, ':') && take_int(sp, 2, 2, &c->sec);
}

/* RFC 850 years have two digits: RFC 9110 reads one that would be more than
 * 50 years ahead of now as the last century's. */
static int full_year(int yy, int64_t now_ms)
{
    int now_year = 1970 + (int)(now_ms / (INT64_C(1000) * 3600 * 24 * 36525 / 100));
    int y = now_year - now_year % 100 + yy;
    return y > now_year + 50 ? y - 100 : y;
}

/* After "Weekday,": "06 Nov 1994 08:49:37 GMT" or "06-Nov-94 08:49:37 GMT"
 * (*rfc850). */
static bool parse_after_comma(const char *s, civil *c, int64_t now_ms, bool *rfc850)
{
    bool ok = take_spaces(&s) && take_int(&s, 2, 2, &c->day);
    if (ok && *s == '-') {
        int yy;
        *rfc850 = true;
        ok = take_char(&s, '-') && take_month(&s, &c->mon) && take_char(&s, '-') &&
             take_int(&s, 2, 2, &yy);
        c->year = ok ? full_year(yy, now_ms) : 0;
    } else {
        ok = ok && take_spaces(&s) && take_month(&s, &c->mon) && take_spaces(&s) &&
             take_int(&s, 4, 4, &c->year);
    }
    ok = ok && take_spaces(&s) && take_hms(&s, c) && take_spaces(&s) && take_word(&s, "GMT");
    return ok && *skip_space(s) == '\0';
}

/* After "Sun": " Nov  6 08:49:37 1994" (asctime). */
static bool parse_asctime_rest(const char *s, civil *c)
{
    bool ok = take_spaces(&s) && take_month(&s, &c->mon) && take_spaces(&s) &&
              take_int(&s, 1, 2, &c->day) && take_spaces(&s) && take_hms(&s, c) &&
              take_spaces(&s) && take_int(&s, 4, 4, &c->year);
    return ok && *skip_space(s) == '\0';
}

/* An HTTP-date: the grammar above says whether v is one (RFC 9110: GMT
 * only, seconds and all, nothing after it); libcurl's curl_getdate, which
 * reads many more forms, says when.  Not for an RFC 850 date: curl_getdate
 * reads a two-digit year 70..99 as 19yy and 00..69 as 20yy, where RFC 9110
 * reads one more than 50 years ahead as the last century's, whatever the
 * year now. */
static bool parse_http_date(const char *v, int64_t now_ms, int64_t *unix_ms)
{
    civil c = {0, 0, 0, 0, 0, 0, 0};
    const char *s = skip_space(v), *word = s;
    bool ok, rfc850 = false;
    time_t t;
    while ((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z'))
        s++;
    if (s - word < 3)
        return false;
    ok = *s == ',' ? parse_after_comma(s + 1, &c, now_ms, &rfc850) : parse_asctime_rest(s, &c);
    if (!ok || !civil_valid(&c))
        return false;
    if (rfc850) {
        *unix_ms = civil_to_unix_ms(&c);
        return true;
    }
    if ((t = curl_getdate(v, NULL)) == (time_t)-1)
        return false;
    *unix_ms = (int64_t)t * 1000;
    return true;
}

/* Up to milliseconds of an RFC 3339 fraction; finer digits are dropped. */
static void take_fraction(const char **sp, civil *c)
{
    int scale = 100;
    if (**sp != '.')
        return;
    for ((*sp)++; aigw__is_digit(**sp); (*sp)++, scale /= 10)
        c->ms += (**sp - '0') * scale;
}

/* "Z" or "+hh:mm" / "-hh:mm" -> minutes east of UTC. */
static bool take_offset(const char **sp, int *minutes)
{
    int sign, h, m;
    if (**sp == 'Z' || **sp == 'z') {
        (*sp)++;
        *minutes = 0;
        return true;
    }
    if (**sp != '+' && **sp != '-')
        return false;
    sign = **sp == '-' ? -1 : 1;
    (*sp)++;
    if (!take_int(sp, 2, 2, &h) || !take_char(sp, ':') || !take_int(sp, 2, 2, &m))
        return false;
    *minutes = sign * (h * 60 + m);
    return h <= 23 && m <= 59;
}

/* "2026-11-25T10:00:03Z", "2026-11-25T10:00:03.5+01:00" (Anthropic resets). */
static bool parse_rfc3339(const char *v, int64_t *unix_ms)
{
    civil c = {0, 0, 0, 0, 0, 0, 0};
    const char *s = skip_space(v);
    int off = 0;
    bool ok = take_int(&s, 4, 4, &c.year) && take_char(&s, '-') && take_int(&s, 2, 2, &c.mon) &&
              take_char(&s, '-') && take_int(&s, 2, 2, &c.day);
    ok = ok && (*s == 'T' || *s == 't' || *s == ' ');
    if (!ok)
        return false;
    s++;
    if (!take_hms(&s, &c))
        return false;
    take_fraction(&s, &c);
    if (!take_offset(&s, &off) || *skip_space(s) != '\0' || !civil_valid(&c))
        return false;
    *unix_ms = civil_to_unix_ms(&c) - (int64_t)off * 60000;
    return true;
}

/* The wait until an absolute time: 0 when it is already past. */
static int64_t wait_until(int64_t at_ms, int64_t ref_ms)
{
    int64_t d = at_ms - ref_ms;
    if (d < 0)
        return 0;
    return d > WAIT_MAX_MS ? WAIT_MAX_MS : d;
}

/* ------------------------------------------------------------------------ */
/* The error body                                                           */
/* ------------------------------------------------------------------------ */

typedef struct err_info {
    const char *ids[MAX_IDS]; /* code, type, status, details codes */
    size_t n_ids;
    const char *message;
    const cJSON *details; /* Gemini error.details[] */
    const char *raw;      /* a body that is not JSON, searched as text */
    size_t raw_len;
} err_info;

static void add_id(err_info *e, const cJSON *item)
{
    if (cJSON_IsString(item) && item->valuestring && e->n_ids < MAX_IDS)
        e->ids[e->n_ids++] = item->valuestring;
}

static const cJSON *member(const cJSON *obj, const char *name)
{
    return cJSON_IsObject(obj) ? cJSON_GetObjectItemCaseSensitive(obj, name) : NULL;
}

/* OpenAI/Azure {"error":{"code","type","message","innererror"}}, Anthropic
 * {"error":{"type","message","details":{"error_code"}}}, Gemini
 * {"error":{"status","message","details":[...]}} (or that in an array, as
 * its streaming endpoint answers), or a bare {"error":"text"}. */
static void info_from_json(err_info *e, const cJSON *root)
{
    const cJSON *err, *msg;
    if (cJSON_IsArray(root))
        root = cJSON_GetArrayItem(root, 0);
    err = member(root, "error");
    if (cJSON_IsString(err)) {
        /* {"error":"..."} may hold a code as well as a sentence. */
        add_id(e, err);
        e->message = err->valuestring;
        return;
    }
    if (!cJSON_IsObject(err))
        err = root; /* {"message":..., "code":...} at the top */
    add_id(e, member(err, "code"));
    add_id(e, member(err, "type"));
    add_id(e, member(err, "status"));
    add_id(e, member(member(err, "details"), "error_code"));
    add_id(e, member(member(err, "innererror"), "code"));
    msg = member(err, "message");
    if (cJSON_IsString(msg))
        e->message = msg->valuestring;
    if (cJSON_IsArray(member(err, "details")))
        e->details = member(err, "details");
}

static bool looks_like_json(const char *s, size_t n)
{
    size_t i = 0;
    if (n >= 3 && memcmp(s, "\xef\xbb\xbf", 3) == 0)
        i = 3;
    while (i < n && is_space(s[i]))
        i++;
    return i < n && (s[i] == '{' || s[i] == '[');
}

/* Fills e from the body; returns the parsed tree for the caller to delete
 * (NULL when the body is searched as text instead).  *nomem: it is JSON,
 * but cJSON ran out of memory reading it (searched as text meanwhile). */
static cJSON *read_body(const char *body, size_t len, err_info *e, bool *nomem)
{
    cJSON *root = NULL;
    size_t end;
    if (!body || len == 0)
        return NULL;
    if (len <= BODY_PARSE_MAX && looks_like_json(body, len)) {
        root = aigw__json_parse(body, len, NULL);
        *nomem = !root && aigw__json_check(body, len, &end) == AIGW_JSON_OK;
    }
    if (root) {
        info_from_json(e, root);
        return root;
    }
    e->raw = body;
    e->raw_len = len < RAW_SCAN_MAX ? len : RAW_SCAN_MAX;
    return NULL;
}

static bool has_id(const err_info *e, const char *const *needles, bool raw)
{
    size_t i;
    for (; *needles; needles++) {
        for (i = 0; i < e->n_ids; i++)
            if (cstr_contains(e->ids[i], *needles))
                return true;
        if (raw && ci_contains(e->raw, e->raw_len, *needles))
            return true;
    }
    return false;
}

static bool has_msg(const err_info *e, const char *const *needles)
{
    for (; *needles; needles++)
        if (cstr_contains(e->message, *needles) || ci_contains(e->raw, e->raw_len, *needles))
            return true;
    return false;
}

/* The Gemini detail entries whose "@type" ends with suffix, one by one. */
static const cJSON *next_detail(const err_info *e, const cJSON *after, const char *suffix)
{
    const cJSON *d = after ? after->next : (e->details ? e->details->child : NULL);
    for (; d; d = d->next) {
        const cJSON *t = member(d, "@type");
        if (cJSON_IsString(t) && ends_with(t->valuestring, suffix))
            return d;
    }
    return NULL;
}

static bool is_per_day(const cJSON *v)
{
    const char *s = cJSON_IsString(v) ? v->valuestring : NULL;
    return cstr_contains(s, "perday") || cstr_contains(s, "per_day") ||
           cstr_contains(s, "per-day");
}

/* A Gemini QuotaFailure naming a daily quota: retrying within minutes is
 * pointless even though the answer carries a RetryInfo. */
static bool gemini_daily_quota(const err_info *e)
{
    const cJSON *d = NULL, *v;
    while ((d = next_detail(e, d, "google.rpc.QuotaFailure")) != NULL) {
        v = member(d, "violations");
        for (v = cJSON_IsArray(v) ? v->child : NULL; v; v = v->next)
            if (is_per_day(member(v, "quotaId")) || is_per_day(member(v, "quotaMetric")))
                return true;
    }
    return false;
}

/* ------------------------------------------------------------------------ */
/* Status + body -> class                                                   */
/* ------------------------------------------------------------------------ */

static const char *const quota_ids[] = {"insufficient_quota", "billing_error",
                                        "spend_limit", NULL};
static const char *const quota_429_msgs[] = {"spend limit", NULL};
static const char *const quota_400_msgs[] = {"reached your specified api usage limits",
                                             "credit balance is too low", NULL};
static const char *const context_ids[] = {"context_length", NULL};
static const char *const context_msgs[] = {
    "maximum context length", "context length", "context window", "prompt is too long",
    "too many tokens", "maximum number of tokens", "input is too long", NULL};
static const char *const policy_ids[] = {"content_policy", "content_filter", "safety",
                                         "responsibleaipolicyviolation", NULL};
static const char *const policy_msgs[] = {"content policy", "content management policy",
                                          "safety system", "content filter", NULL};
static const char *const overloaded_ids[] = {"overloaded", "unavailable", NULL};

static aigw_class classify_429(const err_info *e)
{
    if (has_id(e, quota_ids, true) || has_msg(e, quota_429_msgs) || gemini_daily_quota(e))
        return AIGW_CLASS_QUOTA;
    return AIGW_CLASS_RATE_LIMIT;
}

static aigw_class classify_400(const err_info *e)
{
    if (has_id(e, quota_ids, true) || has_msg(e, quota_400_msgs))
        return AIGW_CLASS_QUOTA;
    if (has_id(e, context_ids, true) || has_msg(e, context_msgs))
        return AIGW_CLASS_CONTEXT_LENGTH;
    if (has_id(e, policy_ids, true) || has_msg(e, policy_msgs))
        return AIGW_CLASS_CONTENT_POLICY;
    return AIGW_CLASS_BAD_REQUEST;
}

static aigw_class classify_4xx(int status, const err_info *e)
{
    switch (status) {
    case 400: return classify_400(e);
    case 401:
    case 403: return AIGW_CLASS_AUTH;
    case 402: return AIGW_CLASS_QUOTA;
    case 404: return AIGW_CLASS_NOT_FOUND;
    case 408: return AIGW_CLASS_TIMEOUT;
    case 413: return AIGW_CLASS_PAYLOAD_TOO_LARGE;
    case 429: return classify_429(e);
    default: return AIGW_CLASS_BAD_REQUEST;
    }
}

static bool has_header(const aigw_hdrs *h, const char *name)
{
    const char *v = aigw__hdrs_get(h, name);
    return v && *skip_space(v) != '\0';
}

/* A 503 that says when to come back is a rate limit (Azure, some proxies);
 * one that does not is an overload.  Only identifiers are looked at, never
 * text: a CDN's HTML page may say anything. */
static aigw_class classify_5xx(int status, const aigw_hdrs *h, const err_info *e)
{
    if (status == 503 && (has_header(h, "retry-after") || has_header(h, "retry-after-ms")))
        return AIGW_CLASS_RATE_LIMIT;
    if (status == 503 || status == 529 || has_id(e, overloaded_ids, false))
        return AIGW_CLASS_OVERLOADED;
    return AIGW_CLASS_SERVER;
}

static aigw_class classify_http(int status, const aigw_hdrs *h, const err_info *e)
{
    if (status >= 200 && status <= 299)
        return AIGW_CLASS_NONE;
    if (status >= 300 && status <= 399)
        return AIGW_CLASS_REDIRECT;
    if (status >= 400 && status <= 499)
        return classify_4xx(status, e);
    if (status >= 500 && status <= 599)
        return classify_5xx(status, h, e);
    return AIGW_CLASS_NETWORK; /* 1xx or out of range: not a final HTTP answer */
}

/* ------------------------------------------------------------------------ */
/* The wait asked for                                                       */
/* ------------------------------------------------------------------------ */

/* "Now" as the server saw it when it has a Date header: an HTTP-date or a
 * reset time is then read against the clock that wrote it, immune to skew
 * between the two hosts. */
static int64_t server_now(const aigw_hdrs *h, int64_t now_ms)
{
    const char *v = aigw__hdrs_get(h, "date");
    int64_t t;
    return (v && parse_http_date(v, now_ms, &t)) ? t : now_ms;
}

static int64_t wait_retry_after(const aigw_hdrs *h, int64_t ref_ms)
{
    const char *v = aigw__hdrs_get(h, "retry-after");
    int64_t w, at;
    if (!v)
        return -1;
    w = parse_plain(v, 1000ULL * NS_PER_MS);
    if (w >= 0)
        return w;
    return parse_http_date(v, ref_ms, &at) ? wait_until(at, ref_ms) : -1;
}

static int64_t wait_retry_info(const err_info *e)
{
    const cJSON *d = NULL, *delay;
    while ((d = next_detail(e, d, "google.rpc.RetryInfo")) != NULL) {
        delay = member(d, "retryDelay");
        if (cJSON_IsString(delay)) {
            int64_t w = parse_go_duration(delay->valuestring);
            if (w >= 0)
                return w;
        }
    }
    return -1;
}

/* A family of per-limit reset headers: prefix X suffix for the reset,
 * remaining_prefix X remaining_suffix for the count left. */
typedef struct reset_family {
    const char *prefix, *suffix;
    const char *remaining_prefix, *remaining_suffix;
    bool absolute; /* RFC 3339 time, else a Go duration */
} reset_family;

static const reset_family openai_resets = {"x-ratelimit-reset-", "", "x-ratelimit-remaining-",
                                           "", false};
static const reset_family anthropic_resets = {"anthropic-ratelimit-", "-reset",
                                              "anthropic-ratelimit-", "-remaining", true};

/* The X of a header named prefix X suffix, or NULL. */
static const char *reset_limit_name(const reset_family *f, const char *name, size_t *xlen)
{
    size_t n = strlen(name), p = strlen(f->prefix), s = strlen(f->suffix);
    if (n <= p + s || aigw__strncasecmp(name, f->prefix, p) != 0 ||
        aigw__strcasecmp(name + n - s, f->suffix) != 0)
        return NULL;
    *xlen = n - p - s;
    return name + p;
}

static bool limit_exhausted(const aigw_hdrs *h, const reset_family *f, const char *x,
                            size_t xlen)
{
    char name[128];
    const char *v;
    size_t p = strlen(f->remaining_prefix), s = strlen(f->remaining_suffix);
    if (p + xlen + s >= sizeof name)
        return false;
    memcpy(name, f->remaining_prefix, p);
    memcpy(name + p, x, xlen);
    memcpy(name + p + xlen, f->remaining_suffix, s + 1);
    v = aigw__hdrs_get(h, name);
    return v && skip_space(v)[0] == '0' && *skip_space(skip_space(v) + 1) == '\0';
}

static int64_t reset_value(const reset_family *f, const char *v, int64_t ref_ms)
{
    int64_t at;
    if (!f->absolute)
        return parse_go_duration(v);
    return parse_rfc3339(v, &at) ? wait_until(at, ref_ms) : -1;
}

/* The reset of a limit whose remaining count is 0 (the longest if several);
 * when none says so, the longest reset of all. */
static int64_t wait_resets(const aigw_hdrs *h, const reset_family *f, int64_t ref_ms)
{
    int64_t best_zero = -1, best_any = -1;
    size_t i, xlen;
    for (i = 0; h && i < h->n; i++) {
        const char *x = reset_limit_name(f, h->v[i].name, &xlen);
        int64_t w = x ? reset_value(f, h->v[i].value, ref_ms) : -1;
        if (w < 0)
            continue;
        if (w > best_any)
            best_any = w;
        if (w > best_zero && limit_exhausted(h, f, x, xlen))
            best_zero = w;
    }
    return best_zero >= 0 ? best_zero : best_any;
}

static int64_t requested_wait(const aigw_hdrs *h, const err_info *e, int64_t now_ms)
{
    int64_t ref = server_now(h, now_ms), w;
    const char *ms = aigw__hdrs_get(h, "retry-after-ms");
    if (ms && (w = parse_plain(ms, NS_PER_MS)) >= 0)
        return w;
    if ((w = wait_retry_after(h, ref)) >= 0)
        return w;
    if ((w = wait_retry_info(e)) >= 0)
        return w;
    if ((w = wait_resets(h, &openai_resets, ref)) >= 0)
        return w;
    return wait_resets(h, &anthropic_resets, ref);
}

aigw_class aigw__classify(aigw_transport_result tr, int status, const aigw_hdrs *headers,
                          const char *body, size_t body_len, int64_t now_unix_ms,
                          int64_t *wait_ms)
{
    bool nomem;
    return aigw__classify_checked(tr, status, headers, body, body_len, now_unix_ms, wait_ms,
                                  &nomem);
}

aigw_class aigw__classify_checked(aigw_transport_result tr, int status,
                                  const aigw_hdrs *headers, const char *body, size_t body_len,
                                  int64_t now_unix_ms, int64_t *wait_ms, bool *nomem)
{
    err_info e;
    cJSON *root = NULL;
    aigw_class c;
    *nomem = tr == AIGW_TR_NOMEM;
    if (wait_ms)
        *wait_ms = -1;
    if (tr != AIGW_TR_OK)
        return tr == AIGW_TR_TIMEOUT ? AIGW_CLASS_TIMEOUT : AIGW_CLASS_NETWORK;
    memset(&e, 0, sizeof e);
    /* Success bodies can be large and say nothing about failure. */
    if (status >= 400)
        root = read_body(body, body_len, &e, nomem);
    c = classify_http(status, headers, &e);
    /* A success asks for no wait even though OpenAI sends its reset headers
     * on every answer. */
    if (wait_ms && c != AIGW_CLASS_NONE)
        *wait_ms = requested_wait(headers, &e, now_unix_ms);
    cJSON_Delete(root);
    return c;
}
