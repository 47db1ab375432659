/*
 * upstream.c - one attempt's upstream request (URL from the provider's base
 * URL and the API surface, the provider's auth header, the body with its
 * model rewritten) and the hand-over of an upstream answer to the caller
 * (end-to-end headers only, every copy of the key's value scrubbed).
 */
#define _GNU_SOURCE /* memmem */
#include "engine_int.h"

#include <string.h>

static bool path_is(const char *path, const char *suffix)
{
    size_t pl = strcspn(path, "?"), sl = strlen(suffix);
    return pl >= sl && memcmp(path + pl - sl, suffix, sl) == 0;
}

/* The auth header of a provider for the API surface at path. */
static int add_auth(aigw_hdrs *h, const aigw_provider *p, const char *path, bool ngrok,
                    const aigw_secret *s, aigw_buf *scratch)
{
    if (!s)
        return 0;
    if (!ngrok && p->native_auth == AIGW_AUTH_X_API_KEY && path_is(path, "/messages"))
        return aigw__hdrs_add(h, "x-api-key", s->value) |
               aigw__hdrs_add(h, "anthropic-version", "2023-06-01");
    if (!ngrok && p->native_auth == AIGW_AUTH_GOOG_API_KEY &&
        (path_is(path, ":generateContent") || path_is(path, ":streamGenerateContent")))
        return aigw__hdrs_add(h, "x-goog-api-key", s->value);
    scratch->len = 0;
    if (aigw__buf_puts(scratch, "Bearer ") != 0 || aigw__buf_puts(scratch, s->value) != 0)
        return -1;
    return aigw__hdrs_add(h, "authorization", scratch->data);
}

static void wipe_hdrs(aigw_hdrs *h)
{
    size_t i;
    for (i = 0; i < h->n; i++)
        aigw__wipe(h->v[i].value, strlen(h->v[i].value));
    aigw__hdrs_free(h);
}

void aigw__tres_free(aigw_transport_response *t)
{
    aigw__hdrs_free(&t->headers);
    aigw__buf_free(&t->body);
}

/* 1 when the base URL has a path ("/" is none), 0 when not, -1 out of
 * memory (aigw__url_parse: libcurl's URL API). */
static int url_has_path(const char *url)
{
    aigw_url u;
    int rc = aigw__url_parse(url, &u, NULL), has;
    if (rc == -2)
        return -1;
    has = rc == 0 && strcmp(u.path, "/") != 0 && u.path[0] != '\0';
    aigw__url_free(&u);
    return has;
}

void aigw__req_free(built_req *b)
{
    aigw__buf_free(&b->url);
    wipe_hdrs(&b->h);
    aigw__free(b->hv);
}

int aigw__build_req(run *r, const slot *s, built_req *b)
{
    const cand *cd = s->cd;
    bool ngrok = s->ngrok;
    const aigw_config *cfg = r->cfg;
    aigw_buf scratch = AIGW_BUF_INIT;
    aigw_transport_request *req = &b->req;
    int64_t left = r->deadline - aigw__run_now(r);
    int rc = 0, has_path;
    size_t i;

    memset(b, 0, sizeof *b);
    rc |= aigw__buf_puts(&b->url, ngrok ? cfg->ngrok_gateway_url : cd->prov->base_url);
    /* A base URL with a path ("https://api.example.com/v1") takes the surface
     * path; one without ("https://my-ollama.internal") the whole API path,
     * as ngrok's examples of custom providers show both. */
    if ((has_path = url_has_path(b->url.data)) < 0)
        rc = -1;
    else if (!has_path && strncmp(r->path, "/v1", 3) != 0)
        rc |= aigw__buf_puts(&b->url, "/v1");
    rc |= aigw__buf_puts(&b->url, r->path);
    rc |= aigw__hdrs_add(&b->h, "content-type", "application/json");
    rc |= aigw__hdrs_add(&b->h, "user-agent", "libaigw/" AIGW_VERSION_STRING);
    if (r->sh)
        rc |= aigw__hdrs_add(&b->h, "accept", "text/event-stream");
    rc |= add_auth(&b->h, cd->prov, r->path, ngrok, s->key->secret, &scratch);
    aigw__buf_wipe_free(&scratch);
    /* aigw_hdr and aigw_header differ in constness only. */
    if (rc == 0 && (b->hv = aigw__calloc(b->h.n, sizeof *b->hv)) == NULL)
        rc = -1;
    if (rc != 0) {
        aigw__req_free(b);
        return -1;
    }
    for (i = 0; i < b->h.n; i++) {
        b->hv[i].name = b->h.v[i].name;
        b->hv[i].value = b->h.v[i].value;
    }
    req->method = "POST";
    req->url = b->url.data;
    req->headers = b->hv;
    req->n_headers = b->h.n;
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
    built_req b;
    if (aigw__build_req(r, s, &b) != 0)
        return -1;
    t->max_body = r->cfg->max_response_bytes;
    *tr = r->env->transport->send(r->env->transport_ud, &b.req, t);
    aigw__req_free(&b);
    return 0;
}

/* Replaces every verbatim copy of the secret in the answer we hand back. */
static int scrub(aigw_response *resp, const aigw_secret *s)
{
    static const char red[] = "[REDACTED]";
    aigw_buf out = AIGW_BUF_INIT;
    const char *p, *end, *hit;
    size_t i;
    if (!s || s->len == 0)
        return 0;
    for (i = 0; i < resp->headers.n; i++)
        if (strstr(resp->headers.v[i].value, s->value)) {
            char *v = aigw__strdup(red);
            if (!v)
                return -1;
            aigw__free(resp->headers.v[i].value);
            resp->headers.v[i].value = v;
        }
    if (!resp->body.data)
        return 0;
    p = resp->body.data;
    end = p + resp->body.len;
    while ((hit = memmem(p, (size_t)(end - p), s->value, s->len)) != NULL) {
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

bool aigw__hop_by_hop(const char *name)
{
    static const char *const drop[] = {"connection", "keep-alive", "transfer-encoding",
                                       "content-length", "proxy-connection", "te",
                                       "trailer", "upgrade", NULL};
    size_t i;
    for (i = 0; drop[i]; i++)
        if (strcmp(name, drop[i]) == 0)
            return true;
    return false;
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

int aigw__take_upstream_answer(run *r, aigw_transport_response *t, const key_ref *key,
                               aigw_outcome oc)
{
    aigw_response *resp = r->resp;
    if (aigw__copy_headers(&resp->headers, &t->headers) != 0)
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

int aigw__build_body(const run *r, const cand *cd, bool ngrok, aigw_buf *out)
{
    int rc;
    if (!ngrok)
        return aigw__body_splice(r->body, r->body_len, cd->upstream, out) == 0 ? 0 : -1;
    {
        aigw_buf spec = AIGW_BUF_INIT;
        if (aigw__buf_printf(&spec, "%s:%s", cd->prov->id, cd->model) != 0)
            return -1;
        rc = aigw__body_splice(r->body, r->body_len, spec.data, out);
        aigw__buf_free(&spec);
    }
    return rc == 0 ? 0 : -1;
}

