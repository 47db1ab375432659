/*
 * upstream.c - one attempt's upstream request (URL from the provider's base
 * URL and the API surface, the provider's auth header, the body with its
 * model rewritten) and the hand-over of an upstream answer to the caller
 * (end-to-end headers only, every copy of the key's value scrubbed).
 */
#define _GNU_SOURCE /* memmem */
#include "engine_int.h"

#include <stdio.h>
#include <string.h>

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define HAVE_PAIR_SCAN 1
#endif

static bool path_is(const char *path, const char *suffix)
{
    size_t pl = strcspn(path, "?"), sl = strlen(suffix);
    return pl >= sl && memcmp(path + pl - sl, suffix, sl) == 0;
}

/* Room for n bytes and a NUL: the inline buffer, else an allocation kept
 * in *heap.  NULL when out of memory. */
static char *room(char *inline_buf, char **heap, size_t n)
{
    if (n < BUILT_INLINE)
        return inline_buf;
    return *heap = aigw__malloc(n + 1);
}

static void add_header(built_req *b, const char *name, const char *value)
{
    b->hv[b->req.n_headers].name = name;
    b->hv[b->req.n_headers].value = value;
    b->req.n_headers++;
}

/* The auth header of a provider for the API surface at path: the key's
 * own value, or "Bearer " and it.  0, or -1 when out of memory. */
static int add_auth(built_req *b, const aigw_provider *p, const char *path, bool ngrok,
                    const aigw_secret *s)
{
    static const char bearer[] = "Bearer ";
    size_t n;
    char *v;
    if (!s)
        return 0;
    if (!ngrok && p->native_auth == AIGW_AUTH_X_API_KEY && path_is(path, "/messages")) {
        add_header(b, "x-api-key", s->value);
        add_header(b, "anthropic-version", "2023-06-01");
        return 0;
    }
    if (!ngrok && p->native_auth == AIGW_AUTH_GOOG_API_KEY &&
        (path_is(path, ":generateContent") || path_is(path, ":streamGenerateContent"))) {
        add_header(b, "x-goog-api-key", s->value);
        return 0;
    }
    n = sizeof bearer - 1 + s->len;
    if (!(v = room(b->auth_inline, &b->auth_heap, n)))
        return -1;
    memcpy(v, bearer, sizeof bearer - 1);
    memcpy(v + sizeof bearer - 1, s->value, n - (sizeof bearer - 1) + 1);
    b->auth_len = n;
    add_header(b, "authorization", v);
    return 0;
}

void aigw__tres_free(aigw_transport_response *t)
{
    aigw__hdrs_free(&t->headers);
    aigw__buf_free(&t->body);
}

void aigw__req_free(built_req *b)
{
    if (b->auth_len)
        aigw__wipe(b->auth_heap ? b->auth_heap : b->auth_inline, b->auth_len);
    aigw__free(b->auth_heap);
    aigw__free(b->url_heap);
    b->auth_heap = b->url_heap = NULL;
    b->auth_len = 0;
}

/* The URL: the base URL, then the API path.  A base URL with a path
 * ("https://api.example.com/v1") takes the surface path; one without
 * ("https://my-ollama.internal") the whole API path, as ngrok's examples
 * of custom providers show both.  Whether it has a path is read once per
 * client and configuration (aigw__resolved_has_path). */
static int build_url(run *r, const slot *s, built_req *b)
{
    const aigw_provider *p = s->ngrok ? NULL : s->cd->prov;
    const char *base = s->ngrok ? r->cfg->ngrok_gateway_url : s->cd->prov->base_url;
    int has_path = aigw__resolved_has_path(r->env->resolved, p, base);
    const char *v1 = has_path == 0 && strncmp(r->path, "/v1", 3) != 0 ? "/v1" : "";
    size_t nb = strlen(base), nv = strlen(v1), np = strlen(r->path);
    char *u;
    if (has_path < 0 || !(u = room(b->url_inline, &b->url_heap, nb + nv + np)))
        return -1;
    memcpy(u, base, nb);
    memcpy(u + nb, v1, nv);
    memcpy(u + nb + nv, r->path, np + 1);
    b->req.url = u;
    return 0;
}

int aigw__build_req(run *r, const slot *s, built_req *b)
{
    return aigw__build_req_at(r, s, b, aigw__run_now(r));
}

int aigw__build_req_at(run *r, const slot *s, built_req *b, int64_t now)
{
    const aigw_config *cfg = r->cfg;
    aigw_transport_request *req = &b->req;
    int64_t left = r->deadline - now;

    b->url_heap = b->auth_heap = NULL;
    b->auth_len = 0;
    memset(req, 0, sizeof *req);
    req->headers = b->hv;
    add_header(b, "content-type", "application/json");
    add_header(b, "user-agent", "libaigw/" AIGW_VERSION_STRING);
    if (r->sh)
        add_header(b, "accept", "text/event-stream");
    if (build_url(r, s, b) != 0 ||
        add_auth(b, s->cd->prov, r->path, s->ngrok, s->key->secret) != 0) {
        aigw__req_free(b);
        return -1;
    }
    req->method = "POST";
    req->body = s->body->data;
    req->body_len = s->body->len;
    r->budget_capped = left < cfg->per_request_timeout_ms;
    req->timeout_ms = r->budget_capped ? left : cfg->per_request_timeout_ms;
    if (req->timeout_ms < 1)
        req->timeout_ms = 1;
    req->connect_timeout_ms = cfg->connect_timeout_ms < req->timeout_ms ? cfg->connect_timeout_ms
                                                                          : req->timeout_ms;
    req->max_response_bytes = cfg->max_response_bytes;
    req->cancel = r->cancel;
    req->ca_file = cfg->tls_ca_file;
    req->client_cert_file = cfg->tls_client_cert;
    req->client_key_file = cfg->tls_client_key;
    return 0;
}

int aigw__send_once(run *r, const slot *s, aigw_transport_response *t,
                    aigw_transport_result *tr)
{
    return aigw__send_once_at(r, s, t, tr, aigw__run_now(r));
}

int aigw__send_once_at(run *r, const slot *s, aigw_transport_response *t,
                       aigw_transport_result *tr, int64_t now)
{
    built_req b;
    if (aigw__build_req_at(r, s, &b, now) != 0)
        return -1;
    t->max_body = r->cfg->max_response_bytes;
    *tr = r->env->transport->send(r->env->transport_ud, &b.req, t);
    aigw__req_free(&b);
    return 0;
}

static size_t pivot_of(const char *key, size_t klen);
static const char *find_at(const char *p, size_t len, const char *key, size_t klen, size_t at);

/* scrub_headers with the key's pivot (pivot_of) known. */
static int scrub_headers_at(aigw_hdrs *h, const aigw_secret *s, size_t at)
{
    size_t i, n;
    for (i = 0; i < h->n; i++) {
        /* a value without the pivot's byte holds no copy of the key: one
         * pass finds that, for most values, and no more */
        const char *v = h->v[i].value, *piv = strchr(v, s->value[at]);
        if (!piv)
            continue;
        n = (size_t)(piv - v) + strlen(piv);
        if (n >= s->len && find_at(v, n, s->value, s->len, at) &&
            aigw__hdrs_set_value(h, i, AIGW_REDACTED) != 0)
            return -1;
    }
    return 0;
}

int aigw__scrub_headers(aigw_hdrs *h, const aigw_secret *s)
{
    if (!s || s->len == 0)
        return 0;
    return scrub_headers_at(h, s, pivot_of(s->value, s->len));
}

/* How often a byte turns up in an answer's text, roughly (lower: rarer):
 * lower-case letters and JSON's own punctuation 2, digits 1, the rest
 * (capitals, '-', '_', ...) 0. */
static const unsigned char commonness[256] = {
    [' '] = 2, ['"'] = 2, [','] = 2, [':'] = 2,
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1,
    ['5'] = 1, ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1,
    ['a'] = 2, ['b'] = 2, ['c'] = 2, ['d'] = 2, ['e'] = 2, ['f'] = 2, ['g'] = 2,
    ['h'] = 2, ['i'] = 2, ['j'] = 2, ['k'] = 2, ['l'] = 2, ['m'] = 2, ['n'] = 2,
    ['o'] = 2, ['p'] = 2, ['q'] = 2, ['r'] = 2, ['s'] = 2, ['t'] = 2, ['u'] = 2,
    ['v'] = 2, ['w'] = 2, ['x'] = 2, ['y'] = 2, ['z'] = 2,
};

/* The pivot: the rarest-looking of the key's first 16 bytes (the first
 * such), klen > 0. */
static size_t pivot_of(const char *key, size_t klen)
{
    size_t at = 0, i;
    for (i = 1; i < klen && i < 16 && commonness[(unsigned char)key[at]] > 0; i++)
        if (commonness[(unsigned char)key[i]] < commonness[(unsigned char)key[at]])
            at = i;
    return at;
}

/* Whether the 8 bytes at a and b are the same. */
static inline bool same8(const char *a, const char *b)
{
    uint64_t x, y;
    memcpy(&x, a, 8);
    memcpy(&y, b, 8);
    return x == y;
}

/* find_at one pivot byte at a time: memchr from each to the next. */
static const char *find_scalar(const char *p, size_t len, const char *key, size_t klen,
                               size_t at)
{
    const char *end = p + len, *q, *last, *c;
    size_t misses = 0;
    if (len < klen)
        return NULL;
    /* each place the pivot's byte lies is a candidate starting at bytes
     * before it, in the order of their starts */
    q = p + at;
    last = end - (klen - at);
    while (q <= last) {
        if (!(c = memchr(q, key[at], (size_t)(last - q) + 1)))
            return NULL;
        /* most candidates differ in the key's first eight bytes: one word
         * compare tells, without a call (c - at + klen <= end) */
        if (klen >= 8 ? same8(c - at, key) && memcmp(c - at + 8, key + 8, klen - 8) == 0
                      : memcmp(c - at, key, klen) == 0)
            return c - at;
        /* a text full of that byte (a miss every 64 bytes or more often):
         * memmem, from the first start not ruled out, keeps the search
         * linear; a byte a streamed event holds once ('-' in "chatcmpl-")
         * stays with memchr, which passes the bytes between faster */
        if (++misses > 16 && (size_t)(c - p) < misses * 64)
            return memmem(c - at + 1, (size_t)(end - (c - at + 1)), key, klen);
        q = c + 1;
    }
    return NULL;
}

#ifdef HAVE_PAIR_SCAN
/* From start i on, by 32, to start stop at most: the first 32 starts where
 * some hold the pivot's byte at a and the last byte at z; the mask of those
 * in *m (0: none up to stop).  No call in the loop, so the vectors stay in
 * registers. */
__attribute__((target("avx2"), noinline)) static size_t
pairs_next(const char *a, const char *z, char pc, char zc, size_t i, size_t stop, unsigned *m)
{
    const __m256i piv = _mm256_set1_epi8(pc), end = _mm256_set1_epi8(zc);
    for (; i <= stop; i += 32) {
        __m256i x = _mm256_loadu_si256((const __m256i *)(const void *)(a + i));
        __m256i y = _mm256_loadu_si256((const __m256i *)(const void *)(z + i));
        unsigned hit = (unsigned)_mm256_movemask_epi8(
            _mm256_and_si256(_mm256_cmpeq_epi8(x, piv), _mm256_cmpeq_epi8(y, end)));
        if (hit) {
            *m = hit;
            return i;
        }
    }
    *m = 0;
    return i;
}

/* find_at with AVX2, 32 candidate starts at a time: those whose pivot byte
 * and last byte are the key's (two compares), then memcmp.  A pair of bytes
 * klen - 1 - at apart seldom matches where the key is not, so a text that
 * holds the pivot's byte often ('-' of "chatcmpl-" in every streamed event,
 * for a key "sk-...") is passed as fast as one that holds none.  len >=
 * klen + 31. */
static const char *find_pairs(const char *p, size_t len, const char *key, size_t klen, size_t at)
{
    /* the last start whose 32 starts all end inside */
    size_t stop = len - klen - 31, i = 0, misses = 0;
    unsigned m;
    while ((i = pairs_next(p + at, p + klen - 1, key[at], key[klen - 1], i, stop, &m)), m) {
        do {
            size_t c = i + (size_t)__builtin_ctz(m);
            if (memcmp(p + c, key, klen) == 0)
                return p + c;
            /* a text where both bytes line up at most starts (a run of one
             * byte, a key of it but one): memmem, from the next start,
             * keeps the search linear, as in find_scalar */
            if (++misses > 16 && c < misses * 64)
                return memmem(p + c + 1, len - c - 1, key, klen);
            m &= m - 1;
        } while (m);
        i += 32;
    }
    return find_scalar(p + i, len - i, key, klen, at);
}
#endif

/* aigw__secret_find with the key's pivot (klen > 0, at < klen). */
static const char *find_at(const char *p, size_t len, const char *key, size_t klen, size_t at)
{
#ifdef HAVE_PAIR_SCAN
    /* libgcc's (or compiler-rt's) constructor has read the CPU's features */
    if (len >= klen + 31 && __builtin_cpu_supports("avx2"))
        return find_pairs(p, len, key, klen, at);
#endif
    return find_scalar(p, len, key, klen, at);
}

const char *aigw__secret_find(const char *p, size_t len, const char *key, size_t klen)
{
    if (klen == 0)
        return p;
    if (len < klen)
        return NULL;
    return find_at(p, len, key, klen, pivot_of(key, klen));
}

/* Replaces every verbatim copy of the secret in the answer we hand back. */
static int scrub(aigw_response *resp, const aigw_secret *s)
{
    static const char red[] = AIGW_REDACTED;
    aigw_buf out = AIGW_BUF_INIT;
    const char *p, *end, *hit;
    size_t at;
    if (!s || s->len == 0)
        return 0;
    at = pivot_of(s->value, s->len);
    if (scrub_headers_at(&resp->headers, s, at) != 0)
        return -1;
    if (!resp->body.data)
        return 0;
    p = resp->body.data;
    end = p + resp->body.len;
    while ((hit = find_at(p, (size_t)(end - p), s->value, s->len, at)) != NULL) {
        if (aigw__buf_append(&out, p, (size_t)(hit - p)) != 0 ||
            aigw__buf_puts(&out, red) != 0) {
            aigw__buf_free(&out);
            return -1;
        }
        p = hit + s->len;
    }
    if (p == resp->body.data)
        return 0;
    if (aigw__buf_append(&out, p, (size_t)(end - p)) != 0) {
        aigw__buf_free(&out);
        return -1;
    }
    aigw__buf_free(&resp->body);
    resp->body = out;
    return 0;
}

/* Whether the n bytes at name are a hop-by-hop header's name: exactly, as
 * names are stored (lower case), or with nocase in any case (a raw line's).
 * By the first byte and the length, so that most end-to-end names take no
 * compare. */
/* Whether the n bytes at p are lit's (lower-case letters and '-'), the
 * letters in any case. */
static bool same_nocase(const char *p, const char *lit, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        if (p[i] != lit[i] && (lit[i] < 'a' || (p[i] | 0x20) != lit[i]))
            return false;
    return true;
}

static inline bool hop_name(const char *name, size_t n, bool nocase)
{
#define HOP_IS(lit)                                                                                \
    (n == sizeof lit - 1 &&                                                                        \
     (nocase ? same_nocase(name, lit, n) : memcmp(name, lit, n) == 0))
    if (n == 0)
        return false;
    switch (nocase ? name[0] | 0x20 : name[0]) {
    case 'c': return HOP_IS("connection") || HOP_IS("content-length");
    case 'k': return HOP_IS("keep-alive");
    case 'p': return HOP_IS("proxy-connection");
    case 't': return HOP_IS("te") || HOP_IS("trailer") || HOP_IS("transfer-encoding");
    case 'u': return HOP_IS("upgrade");
    default: return false;
    }
#undef HOP_IS
}

bool aigw__hop_by_hop(const char *name)
{
    return hop_name(name, strlen(name), false);
}

bool aigw__hop_by_hop_n(const char *name, size_t n)
{
    return hop_name(name, n, true);
}

int aigw__copy_headers(aigw_hdrs *dst, const aigw_hdrs *src)
{
    size_t i;
    for (i = 0; i < src->n; i++)
        if (!aigw__hop_by_hop(src->v[i].name) &&
            aigw__hdrs_add(dst, src->v[i].name, src->v[i].value) != 0)
            return -1;
    return 0;
}

int aigw__move_headers(aigw_hdrs *dst, aigw_hdrs *src, bool end_to_end)
{
    size_t i, n = 0;
    if (dst->n == 0) { /* the usual case: the transport's list becomes the caller's */
        aigw__hdrs_free(dst);
        *dst = *src;
        memset(src, 0, sizeof *src);
        if (end_to_end)
            return 0;
        /* the hop-by-hop ones go, the order of the rest kept (their bytes
         * stay in the list's block) */
        for (i = 0; i < dst->n; i++)
            if (!aigw__hop_by_hop(dst->v[i].name))
                dst->v[n++] = dst->v[i];
        dst->n = n;
        return 0;
    }
    /* after the list's own: room for all first, so nothing moves unless
     * everything does */
    if (aigw__hdrs_reserve_for(dst, src) != 0)
        return -1;
    for (i = 0; i < src->n; i++) {
        const aigw_hdr *hd = &src->v[i];
        if (!aigw__hop_by_hop(hd->name))
            (void)aigw__hdrs_addn(dst, hd->name, strlen(hd->name), hd->value, strlen(hd->value));
    }
    aigw__hdrs_free(src);
    return 0;
}

int aigw__take_upstream_answer(run *r, aigw_transport_response *t, const key_ref *key,
                               aigw_outcome oc)
{
    aigw_response *resp = r->resp;
    if (aigw__move_headers(&resp->headers, &t->headers, t->end_to_end) != 0)
        return -1;
    aigw__buf_free(&resp->body);
    resp->body = t->body;
    t->body.data = NULL;
    t->body.len = t->body.cap = 0;
    resp->status = t->status;
    resp->outcome = oc;
    r->done = true;
    return scrub(resp, key->secret);
}

void aigw__cand_body_free(cand_body *b)
{
    aigw__buf_free(&b->own);
    b->data = NULL;
    b->len = 0;
}

/* The body for one model: the caller's bytes when splicing it in would
 * not change them, else the splice. */
static int body_for(const run *r, const char *model, cand_body *out)
{
    size_t n;
    if (aigw__body_unchanged(r->body, r->map, model)) {
        out->data = r->body;
        out->len = r->body_len;
        return 0;
    }
    /* the common rewrite of a small body: no allocation */
    n = out->room ? aigw__body_splice_into(r->body, r->body_len, r->map, model, out->room,
                                           out->room_size)
                  : 0;
    if (n > 0) {
        out->data = out->room;
        out->len = n;
        return 0;
    }
    if (aigw__body_splice_map(r->body, r->body_len, r->map, model, &out->own) != 0)
        return -1;
    out->data = out->own.data;
    out->len = out->own.len;
    return 0;
}

int aigw__build_body(const run *r, const cand *cd, bool ngrok, cand_body *out)
{
    char small[128];
    aigw_buf spec = AIGW_BUF_INIT;
    const char *model = cd->upstream;
    int rc, n;
    if (ngrok) { /* ngrok's gateway is told "provider:model" */
        n = snprintf(small, sizeof small, "%s:%s", cd->prov->id, cd->model);
        if (n >= 0 && (size_t)n < sizeof small)
            model = small;
        else if (aigw__buf_printf(&spec, "%s:%s", cd->prov->id, cd->model) == 0)
            model = spec.data;
        else
            return -1;
    }
    rc = body_for(r, model, out);
    aigw__buf_free(&spec);
    return rc;
}
