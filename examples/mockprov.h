/*
 * mockprov.h - an embedded mock LLM provider: a real HTTP/1.1 server on
 * loopback, scripted per key and model, that counts what it receives.
 *
 * Used by `aigw demo` and by the test suite.  It is an example program's
 * helper, not part of libaigw.  One accept thread plus one thread per
 * connection; keep-alive is supported.  It never prints.
 */
#ifndef AIGW_MOCKPROV_H
#define AIGW_MOCKPROV_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mockprov mockprov;

typedef enum mockprov_action {
    MOCKPROV_RESPOND = 0, /* answer status/headers/body (after delay_ms)      */
    MOCKPROV_CLOSE,       /* read the request, then close: no answer at all   */
    MOCKPROV_SILENT,      /* read the request, never answer (until stopped or
                             the client goes away)                            */
    MOCKPROV_HUGE,        /* answer status with a body of huge_bytes bytes    */
    MOCKPROV_STREAM       /* answer status (text/event-stream unless headers
                             name a Content-Type) with a chunked body: each
                             of `chunks` as one HTTP chunk, chunk_delay_ms
                             before each, then end as stream_end says (no
                             body at all for 1xx, 204 and 304)               */
} mockprov_action;

/* How a MOCKPROV_STREAM answer ends after its chunks. */
typedef enum mockprov_stream_end {
    MOCKPROV_END_OK = 0, /* the terminating 0-chunk; the connection is kept */
    MOCKPROV_END_CUT,    /* close the connection without it                 */
    MOCKPROV_END_STALL   /* send nothing more and keep the connection open
                            until the client closes it or the server stops  */
} mockprov_stream_end;

typedef struct mockprov_rule {
    const char *key;     /* credential to match (Bearer token, x-api-key or
                            x-goog-api-key value); NULL = any               */
    const char *model;   /* the request body's "model" to match; NULL = any */
    mockprov_action action;
    int status;          /* HTTP status for RESPOND / HUGE (0 = 200)        */
    const char *headers; /* extra header lines, each ending "\r\n"; or NULL */
    const char *body;    /* the body; NULL = a chat completion naming model */
    int delay_ms;        /* wait before answering                           */
    size_t huge_bytes;   /* for HUGE                                        */
    int times;           /* apply to the first N matching requests; 0 = all */
    /* -- for STREAM (appended: older initializers leave them 0) -- */
    const char *const *chunks; /* NULL-terminated; each one HTTP chunk (an
                                  empty string is skipped: a 0-chunk would
                                  end the body); copied; NULL = none       */
    int chunk_delay_ms;        /* wait before each chunk                   */
    mockprov_stream_end stream_end;
} mockprov_rule;

/* Starts a server on 127.0.0.1; port 0 picks a free one.  NULL on failure. */
mockprov *mockprov_start(int port);
int mockprov_port(const mockprov *m);
/* "http://127.0.0.1:PORT/v1" in a static per-server buffer. */
const char *mockprov_base_url(const mockprov *m);
/* Rules are tried in the order added; the first match (with times left)
 * wins; with none, the answer is 200 and a chat completion.  Copied. */
int mockprov_add_rule(mockprov *m, const mockprov_rule *rule);
/* Drops all rules, counters and the request log (chatcmpl-mock-N restarts
 * at 1).  Connections stay open. */
void mockprov_reset(mockprov *m);
/* Requests received so far carrying that credential (NULL = all). */
long mockprov_count(mockprov *m, const char *key);
/* TCP connections accepted so far (since start or the last reset). */
long mockprov_connection_count(mockprov *m);
/* Number of logged requests, and request i: its method + path (e.g.
 * "POST /v1/chat/completions"), credential, model and the raw body.  The
 * strings are copied into the caller's buffers (NUL-terminated, truncated
 * to the sizes given).  Returns 0, or -1 when i is out of range. */
long mockprov_log_count(mockprov *m);
int mockprov_log_get(mockprov *m, long i, char *line, size_t line_size, char *key,
                     size_t key_size, char *model, size_t model_size);
/* The raw bytes of request i (request line, headers, body) into buf;
 * returns the full length (may exceed size), -1 when out of range. */
long mockprov_log_raw(mockprov *m, long i, char *buf, size_t size);
/* Stops the server, closes every connection and frees it. NULL-safe. */
void mockprov_stop(mockprov *m);

#ifdef __cplusplus
}
#endif

#endif
