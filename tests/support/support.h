/*
 * support.h - what the C tests share, compiled once into a static library
 * (tests/meson.build) that every test program links: real and fake time
 * (clock.c); a scripted transport that answers from a list and records each
 * call (transport.c); clients from gateway JSON, sending a body, and
 * rendering a response's attempts, skips and snapshot entries as strings
 * for one comparison (support.c); a stream handler that records what a
 * caller receives (stream.c); a fake health store (store.c); random inputs
 * (random.c); and the embedded mock provider's fixtures and rules
 * (provider.c, over examples/mockprov.c).  Helpers whose output a test
 * compares take a `fields` spec naming what to render, e.g. "key:verdict" or
 * "model/key/result/verdict": field names joined by separator characters,
 * which are copied as they stand.  The assert_*_as macros report the
 * caller's line.
 */
#ifndef AIGW_TEST_SUPPORT_H
#define AIGW_TEST_SUPPORT_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "aigw.h"
#include "mockprov.h"

/* ---- time (clock.c) ---- */

/* The monotonic clock in ms. */
int64_t now_ms(void);
/* Sleeps ms (nothing when ms <= 0), through interruptions. */
void sleep_ms(int64_t ms);

/* A fake clock: now_ms reads `now`; sleep_ms advances it and records the
 * sleep (the first FAKE_CLOCK_MAX_SLEEPS of them; n_sleeps counts all). */
#define FAKE_CLOCK_MAX_SLEEPS 64

typedef struct fake_clock {
    int64_t now;
    int64_t slept[FAKE_CLOCK_MAX_SLEEPS];
    int n_sleeps;
} fake_clock;

/* Its vtable for aigw_client_set_clock; the userdata is a fake_clock *. */
extern const aigw_clock FAKE_CLOCK;

/* ---- the scripted transport (transport.c) ---- */

#define MOCK_MAX_CALLS 128
#define MOCK_T0 1000000 /* the fake clock's time after mock_reset */

typedef void (*mock_hook)(void);

/* One scripted answer. */
typedef struct scripted {
    int status;               /* 0 with tr != OK: a transport failure */
    aigw_transport_result tr;
    const char *headers[6];   /* name, value pairs, NULL-terminated */
    const char *body;
    int64_t takes_ms;         /* the fake clock advances this much */
    mock_hook hook;           /* runs inside the call, before it answers */
} scripted;

typedef struct mock {
    scripted script[MOCK_MAX_CALLS];
    int n_script;             /* answers pushed */
    int next;                 /* the next answer to pop */
    int n_calls;
    /* NULL: keys[i] is the credential as sent (the Bearer token or the
     * x-api-key value; "" when none).  Else every call must carry
     * "Bearer <key_prefix>..." (asserted) and keys[i] is what follows the
     * prefix ("-" when the call carries no Authorization). */
    const char *key_prefix;
    char *keys[MOCK_MAX_CALLS];
    char *models[MOCK_MAX_CALLS]; /* the body's "model" ("?" when none) */
    char *urls[MOCK_MAX_CALLS];
    char *bodies[MOCK_MAX_CALLS];
    int64_t timeouts[MOCK_MAX_CALLS];
    fake_clock clock;
    int destroyed;            /* the transport's destroy ran this often */
    aigw_client *client;      /* the client of mock_attach, for hooks */
} mock;

/* The one scripted transport: each call records what it carried, pops the
 * next scripted answer and, with none left, answers 200 {"ok":true}. */
extern mock M;
/* Its vtable for aigw_client_set_transport; the userdata is &M. */
extern const aigw_transport MOCK_TRANSPORT;

/* Frees the record, clears M (script, calls, sleeps) and sets its clock to
 * MOCK_T0; key_prefix: see mock.key_prefix. */
void mock_reset(const char *key_prefix);
/* Forgets the script and the calls (freeing the record), as if none had
 * been pushed or made; the clock, its sleeps, key_prefix and client stay. */
void mock_rewind(void);
/* cmocka fixtures: mock_reset(NULL) before a test; after it (any key_prefix:
 * frees the record). */
int mock_setup(void **state);
int mock_teardown(void **state);
/* Makes c send through M and read M.clock; M.client = c.  Returns c. */
aigw_client *mock_attach(aigw_client *c);
/* Scripts the next answer: a status and body; the same with one header;
 * a transport failure after takes_ms of fake time.  Each returns the entry
 * for more (takes_ms, hook, headers). */
scripted *push(int status, const char *body);
scripted *push_h(int status, const char *hname, const char *hvalue, const char *body);
scripted *push_tr(aigw_transport_result tr, int64_t takes_ms);
/* The calls M saw, in order, space separated; fields: key, model, url. */
void calls_string(const char *fields, char *buf, size_t size);
void assert_calls_at(const char *fields, const char *want, const char *file, int line);
#define assert_calls_as(fields, want) assert_calls_at(fields, want, __FILE__, __LINE__)

/* ---- clients and requests (support.c) ---- */

/* A gateway file (malloc'd) with one provider "mock" (name "Mock") at
 * base_url, providerKeys [keys], an access key configuration `name` with
 * rules [rules], and gatewayConfig {gw}. */
char *mock_gateway_json(const char *name, const char *base_url, const char *keys,
                        const char *rules, const char *gw);
/* Parses json or fails the test, naming the error and the JSON. */
aigw_config *config_from_json(const char *json);
/* A client on cfg (the caller keeps its own reference) or fails. */
aigw_client *client_on(aigw_config *cfg);
/* A client on json; the client holds the only reference to its config. */
aigw_client *client_from_json(const char *json);
/* aigw_client_set_config or fails. */
void set_config(aigw_client *c, aigw_config *cfg);
/* Sends body (whole answer); fails unless a response with a trace comes. */
aigw_response *send_body(aigw_client *c, const char *body);

/* ---- what a response says (support.c) ---- */

/* Each attempt rendered by fields, space separated; fields: provider,
 * model, key, step, status (the HTTP status, 0 without one), result (the
 * transport error's name, else the HTTP status), class, verdict,
 * completion.  Returns -1 when the attempts are not numbered 1, 2, ... or a
 * field is unknown, else 0.  No cmocka asserts: threads may use it. */
int attempts_string(const aigw_response *r, const char *fields, char *buf, size_t size);
/* Each skip rendered by fields, space separated; fields: provider, model,
 * reason, key ("" unless a key was skipped), wait (ms, -1 unknown).
 * Returns -1 when a skip cannot be read or a field is unknown, else 0. */
int skips_string(const aigw_response *r, const char *fields, char *buf, size_t size);
/* Fails (with the trace) unless the attempts, numbered 1, 2, ..., render
 * as want; the same for the skips. */
void assert_attempts_at(const aigw_response *r, const char *fields, const char *want,
                        const char *file, int line);
void assert_skips_at(const aigw_response *r, const char *fields, const char *want,
                     const char *file, int line);
#define assert_attempts_as(r, fields, want) \
    assert_attempts_at(r, fields, want, __FILE__, __LINE__)
#define assert_skips_as(r, fields, want) assert_skips_at(r, fields, want, __FILE__, __LINE__)

/* The library's own JSON error answer: status, code, type "aigw_error", the
 * response's request id, and a message containing needle (when given). */
void assert_error_answer(const aigw_response *r, int status, const char *code,
                         const char *needle);
/* Fails when s holds any of the n key values. */
void assert_no_secret_in(const char *s, const char *const *keys, size_t n);
/* ... nor the response's body, trace or header values. */
void assert_response_no_secret(const aigw_response *r, const char *const *keys, size_t n);

/* The snapshot entry of that kind and name, or fails (with its JSON). */
const aigw_stat *find_stat(const aigw_stats *s, const char *kind, const char *name);

/* ---- streams (stream.c) ---- */

/* What a caller receives through STREAM_CALLER (userdata: a stream_caller *):
 * the bytes since the last reset, what the last reset discarded, counts,
 * and the contract's breaches (data before on_start, a hop-by-hop header). */
typedef struct stream_caller {
    char bytes[16384]; /* what is current: since the last reset */
    size_t len;
    char before_reset[16384]; /* what was discarded at the (last) reset */
    size_t before_len;
    int starts, status, resets, data_calls;
    bool sse_ctype;    /* on_start saw content-type: text/event-stream */
    bool hop_by_hop;   /* on_start saw transfer-encoding / connection */
    bool data_before_start;
    char reset_reason[512];
    int64_t t_start, t_end; /* now_ms() around aigw_client_stream */
    int64_t t_first_data, t_last_data;
    size_t first_data_len; /* the bytes the first on_data call handed on */
    int cancel_at;     /* on_data returns non-zero at this call (0: never) */
    /* on_commit: how often, and what it said the last time */
    int commits;
    bool commit_after_start; /* on_commit came after on_start (a breach) */
    char commit_request_id[40];
    int commit_attempt;
    char commit_provider[64], commit_model[64], commit_key[64];
} stream_caller;

extern const aigw_stream_handler STREAM_CALLER;

/* Streams body to g (restart: -1 the configuration's, 0 off, 1 on) and
 * fails unless a response comes, with no data before on_start and no
 * hop-by-hop header.  g is not cleared first. */
aigw_response *stream_to(aigw_client *c, const char *body, int restart, stream_caller *g);

/* ---- a fake health store (store.c) ---- */

/* Several clients of one test program share it as a fleet shares Redis:
 * facts expire by the clock given (the fake clock: time moves only when the
 * test moves it). */
typedef struct fake_store fake_store;
/* Its vtable for aigw_client_set_health_store (userdata: a fake_store *;
 * the test frees it, after the clients). */
extern const aigw_health_store FAKE_STORE;
fake_store *fake_store_new(fake_clock *clock);
/* Each call moves the clock ms, as a round trip takes time; each write's
 * expiry lands late_ms later than asked (as a write reaches a real store
 * some time after the caller chose its expiry). */
void fake_store_latency(fake_store *s, int64_t ms, int64_t late_ms);
void fake_store_free(fake_store *s);
/* Every call fails (the store does not answer) until switched back. */
void fake_store_fail(fake_store *s, bool fail);
/* Calls made: op "get", "put" or "claim" (also the failed ones). */
long fake_store_calls(fake_store *s, const char *op);
/* Writes as another client of the store would: ttl_ms < 0 no expiry;
 * wrong_type: not a string at all. */
void fake_store_raw(fake_store *s, const char *name, const char *value, int64_t ttl_ms,
                    bool wrong_type);
/* How many live names start with prefix and hold a value starting with
 * value_prefix; the first one's name, value and time left (-1: none) into
 * the buffers given (each may be NULL). */
size_t fake_store_find(fake_store *s, const char *prefix, const char *value_prefix,
                       char *name, size_t name_size, char *value, size_t value_size,
                       int64_t *ttl);
/* "name=value\n" for every live name into buf; returns how many. */
size_t fake_store_dump(fake_store *s, char *buf, size_t size);

/* ---- random inputs (random.c) ---- */

/* The next number of a xorshift64 generator (state: its seed, not 0). */
uint64_t xorshift64(uint64_t *state);
/* A random text of JSON's pieces (tokens, broken escapes, a BOM, control
 * bytes...): 1 to 24 of them drawn through *seed, as many as fit in buf
 * (NUL-terminated); returns its length. */
size_t json_pieces(uint64_t *seed, char *buf, size_t size);

/* ---- the mock provider (provider.c) ---- */

/* The test program's mock providers, started by mp_start. */
extern mockprov *MP;
extern mockprov *MP2;

/* Starts MP, and MP2 when n is 2, on free loopback ports; 0, or -1 when
 * one did not start. */
int mp_start(int n);
/* Stops those running. */
void mp_stop(void);
/* Drops their rules, counters and request logs. */
void mp_reset(void);
/* cmocka fixtures: a group with MP (mp_start(1)), stopped after it; a test
 * that starts on a fresh MP (and MP2) (mp_reset). */
int mp_group_setup(void **state);
int mp_group_teardown(void **state);
int mp_setup(void **state);

/* A rule for a request carrying key (NULL: any) and asking for model (NULL:
 * any), of the first `times` such (0: all); the other fields 0. */
mockprov_rule mp_rule(mockprov_action action, const char *key, const char *model, int status,
                      const char *headers, const char *body, int times);
/* Adds r to m, or fails. */
void mp_add(mockprov *m, mockprov_rule r);
/* mp_add(m, mp_rule(...)). */
void mp_add_rule(mockprov *m, mockprov_action action, const char *key, const char *model,
                 int status, const char *headers, const char *body, int times);
/* Fails unless m received want[i] requests carrying keys[i], and their sum
 * in all. */
void assert_received_by_key(mockprov *m, const char *const *keys, const long *want, size_t n);
/* A loopback port with nothing listening (bound, then closed). */
int dead_port(void);

#endif
