/*
 * custom-transport.c - a transport of your own (aigw_transport): every
 * upstream exchange goes through it.  This one sends with libcurl and logs
 * each exchange on stderr -- method, URL, header names (never their values:
 * one of them is the key), body size, then the status or the transport
 * error and the time taken -- the place to add metrics, tracing, a proxy or
 * a recorded replay.
 *
 *   custom-transport GATEWAY_FILE BODY_JSON
 *
 * Sends the request once (aigw_client_send) and prints the answer's body on
 * stdout.  The vtable has no send_stream: this transport carries whole
 * answers only, not aigw_client_stream's streams.  It honours what the
 * library asks of a version 4 transport: the caller's cancel token, and
 * gatewayConfig.tls (a CA file, a client certificate and key); the header
 * lines it builds hold the key, so they are wiped before they are freed.
 *
 * Built by meson (examples/meson.build), run by tests/test_examples.py.
 */
#include <aigw.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct logging_transport {
    FILE *log;
} logging_transport;

typedef struct exchange {
    const aigw_transport_request *req;
    aigw_transport_response *resp;
    int too_large;
    int nomem; /* a callback's allocation failed (libcurl then sees an error) */
} exchange;

static size_t on_body(char *data, size_t size, size_t n, void *ud)
{
    exchange *x = ud;
    aigw_status st = aigw_transport_response_append_body(x->resp, data, size * n);
    if (st == AIGW_EINVAL)
        x->too_large = 1; /* past req->max_response_bytes */
    else if (st == AIGW_ENOMEM)
        x->nomem = 1;
    return st == AIGW_OK ? size * n : 0;
}

/* Each header line of the answer; a status line starts the headers over
 * (after a 100 Continue). */
static size_t on_header(char *line, size_t size, size_t n, void *ud)
{
    exchange *x = ud;
    size_t len = size * n;
    char buf[8192], *colon, *value, *end;
    if (len < 3 || len >= sizeof buf || !memcmp(line, "HTTP/", 5))
        return len;
    memcpy(buf, line, len);
    buf[len] = '\0';
    end = buf + len;
    while (end > buf && (end[-1] == '\r' || end[-1] == '\n'))
        *--end = '\0';
    colon = strchr(buf, ':');
    if (!colon)
        return len;
    *colon = '\0';
    for (value = colon + 1; *value == ' ' || *value == '\t'; value++)
        ;
    /* A header the library refuses (AIGW_EINVAL) is skipped; out of
     * memory stops the exchange. */
    if (aigw_transport_response_add_header(x->resp, buf, value) == AIGW_ENOMEM) {
        x->nomem = 1;
        return 0;
    }
    return len;
}

/* Polled by libcurl while it works: the caller's cancel token (version 3). */
static int on_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    exchange *x = ud;
    (void)dt, (void)dn, (void)ut, (void)un;
    return x->req->cancel && aigw_cancel_fired(x->req->cancel);
}

/* Out of memory (ours or libcurl's) is AIGW_TR_NOMEM, never a fault of the
 * upstream: the request then ends with AIGW_ENOMEM. */
static aigw_transport_result result_of(CURLcode rc, const exchange *x)
{
    if (x->nomem)
        return AIGW_TR_NOMEM;
    switch (rc) {
    case CURLE_OK: return AIGW_TR_OK;
    case CURLE_OUT_OF_MEMORY: return AIGW_TR_NOMEM;
    case CURLE_OPERATION_TIMEDOUT: return AIGW_TR_TIMEOUT;
    case CURLE_COULDNT_CONNECT: return AIGW_TR_CONNECT;
    case CURLE_COULDNT_RESOLVE_HOST: return AIGW_TR_DNS;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION: return AIGW_TR_TLS;
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE: return AIGW_TR_RESET;
    case CURLE_WRITE_ERROR: return x->too_large ? AIGW_TR_TOO_LARGE : AIGW_TR_OTHER;
    case CURLE_ABORTED_BY_CALLBACK: return AIGW_TR_CANCELLED;
    case CURLE_WEIRD_SERVER_REPLY: return AIGW_TR_PROTOCOL;
    default: return AIGW_TR_OTHER;
    }
}

static const char *result_name(aigw_transport_result r)
{
    static const char *const names[] = {"ok",    "timeout",   "connect",   "reset",
                                        "dns",   "tls",       "too_large", "protocol",
                                        "other", "cancelled", "nomem"};
    return (unsigned)r < sizeof names / sizeof names[0] ? names[r] : "?";
}

/* Frees a header list, each line wiped first: one holds the key. */
static void headers_free(struct curl_slist *headers)
{
    struct curl_slist *h;
    for (h = headers; h; h = h->next)
        memset(h->data, 0, strlen(h->data));
    curl_slist_free_all(headers);
}

/* gatewayConfig.tls (version 4): the CA file to trust instead of the
 * system's, the client certificate and key to present.  libcurl copies the
 * paths: the copy may fail. */
static CURLcode set_tls(CURL *curl, const aigw_transport_request *req)
{
    CURLcode rc = CURLE_OK;
    if (req->ca_file && (rc = curl_easy_setopt(curl, CURLOPT_CAINFO, req->ca_file)) != CURLE_OK)
        return rc;
    if (req->client_cert_file &&
        (rc = curl_easy_setopt(curl, CURLOPT_SSLCERT, req->client_cert_file)) != CURLE_OK)
        return rc;
    if (req->client_key_file &&
        (rc = curl_easy_setopt(curl, CURLOPT_SSLKEY, req->client_key_file)) != CURLE_OK)
        return rc;
    return rc;
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* One exchange; thread-safe (a handle of its own each time: a real
 * transport would keep a pool, for connection reuse). */
static aigw_transport_result send_one(void *userdata, const aigw_transport_request *req,
                                      aigw_transport_response *resp)
{
    logging_transport *lt = userdata;
    exchange x = {req, resp, 0, 0};
    struct curl_slist *headers = NULL, *h;
    CURL *curl = curl_easy_init();
    aigw_transport_result res = AIGW_TR_NOMEM; /* until the exchange runs */
    CURLcode rc;
    long status = 0;
    long long t0 = now_ms();
    size_t i;

    fprintf(lt->log, "transport: %s %s (%zu bytes; headers:", req->method, req->url,
            req->body_len);
    for (i = 0; i < req->n_headers; i++)
        fprintf(lt->log, " %s", req->headers[i].name); /* names only */
    fprintf(lt->log, ")\n");
    if (!curl)
        goto done; /* libcurl could not allocate the handle */
    for (i = 0; i < req->n_headers; i++) {
        size_t len = strlen(req->headers[i].name) + strlen(req->headers[i].value) + 3;
        char *line = malloc(len);
        if (!line)
            goto done;
        snprintf(line, len, "%s: %s", req->headers[i].name, req->headers[i].value);
        h = curl_slist_append(headers, line);
        memset(line, 0, len); /* it may hold the key */
        free(line);
        if (!h)
            goto done;
        headers = h;
    }
    if (!(h = curl_slist_append(headers, "Expect:"))) /* no 100-continue round trip */
        goto done;
    headers = h;
    /* libcurl copies these two strings: the copy may fail */
    if ((rc = curl_easy_setopt(curl, CURLOPT_URL, req->url)) != CURLE_OK ||
        (rc = curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, req->method)) != CURLE_OK ||
        (rc = set_tls(curl, req)) != CURLE_OK) {
        res = result_of(rc, &x);
        goto done;
    }
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, req->body);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, (long)req->timeout_ms);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, (long)req->connect_timeout_ms);
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L); /* never follow redirects */
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &x);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, &x);
    curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(curl, CURLOPT_XFERINFODATA, &x);
    res = result_of(curl_easy_perform(curl), &x);
    if (res == AIGW_TR_OK) {
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
        if (aigw_transport_response_set_status(resp, (int)status) != AIGW_OK)
            res = AIGW_TR_PROTOCOL;
    }
done:
    if (res == AIGW_TR_OK)
        fprintf(lt->log, "transport:   -> HTTP %ld in %lld ms\n", status, now_ms() - t0);
    else
        fprintf(lt->log, "transport:   -> %s after %lld ms\n", result_name(res), now_ms() - t0);
    headers_free(headers);
    curl_easy_cleanup(curl);
    return res;
}

static void destroy(void *userdata)
{
    free(userdata);
}

int main(int argc, char **argv)
{
    static const aigw_transport transport = {
        .version = AIGW_TRANSPORT_VERSION, /* 4: req->cancel and the TLS files */
        .send = send_one,
        .destroy = destroy,
        .send_stream = NULL, /* whole answers only */
    };
    aigw_config *cfg = NULL;
    aigw_client *client = NULL;
    aigw_request *req = NULL;
    aigw_response *resp = NULL;
    aigw_error *err = NULL;
    logging_transport *lt;
    int rc = 1;

    if (argc != 3) {
        fprintf(stderr, "usage: custom-transport GATEWAY_FILE BODY_JSON\n");
        return 2;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT); /* once, before any thread */
    if (aigw_config_load_file(argv[1], &cfg, &err) != AIGW_OK ||
        aigw_client_new(cfg, &client, &err) != AIGW_OK) {
        fprintf(stderr, "%s: %s\n", argv[1], aigw_error_message(err));
        aigw_error_free(err);
        aigw_config_unref(cfg);
        curl_global_cleanup();
        return 2;
    }
    aigw_config_unref(cfg);
    lt = malloc(sizeof *lt);
    if (lt)
        lt->log = stderr;
    /* Before the client is shared; on failure destroy(lt) has run already. */
    if (!lt || aigw_client_set_transport(client, &transport, lt) != AIGW_OK) {
        fprintf(stderr, "custom-transport: the library refused the transport\n");
        goto done;
    }
    if (aigw_request_new(&req) != AIGW_OK ||
        aigw_request_set_body(req, argv[2], strlen(argv[2])) != AIGW_OK)
        goto done;
    if (aigw_client_send(client, req, &resp, &err) != AIGW_OK) {
        fprintf(stderr, "custom-transport: %s\n", aigw_error_message(err));
        aigw_error_free(err);
        rc = 2;
        goto done;
    }
    {
        size_t len;
        const char *body = aigw_response_body(resp, &len);
        fwrite(body, 1, len, stdout);
        putchar('\n');
    }
    fprintf(stderr, "custom-transport: %s, HTTP %d after %zu attempt%s\n",
            aigw_outcome_name(aigw_response_outcome(resp)), aigw_response_status(resp),
            aigw_response_attempt_count(resp), aigw_response_attempt_count(resp) == 1 ? "" : "s");
    rc = aigw_response_outcome(resp) == AIGW_OUTCOME_SERVED ? 0 : 1;
done:
    aigw_response_free(resp);
    aigw_request_free(req);
    aigw_client_free(client); /* runs destroy(lt) */
    curl_global_cleanup();
    return rc;
}
