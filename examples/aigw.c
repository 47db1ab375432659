/*
 * aigw - the libaigw command line: validate a gateway file, send a request
 * through failover with a per-attempt trace, or run the offline demo.
 *
 *   aigw validate FILE
 *   aigw request -c FILE [-d JSON | -d @FILE | -d -] [--path PATH] [--trace json]
 *   aigw demo
 *
 * Exit status: 0 success; 1 the request ended in an error; 2 usage or
 * configuration error (nothing sent).
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "aigw.h"
#include "mockprov.h"

#define EXIT_FAILED 1
#define EXIT_USAGE 2

static const char USAGE[] =
    "aigw - provider-key failover for LLM APIs, in process (libaigw " AIGW_VERSION_STRING ")\n"
    "\n"
    "Usage:\n"
    "  aigw validate FILE\n"
    "      Check a gateway file (or a bare ngrok access key configuration).\n"
    "      Exit 0 when valid; exit 2 with one line per problem on stderr.\n"
    "  aigw request -c FILE [-d JSON | -d @FILE | -d -] [--path PATH] [--trace json]\n"
    "      Send one request through failover and print the served body on stdout\n"
    "      (a streamed answer, \"stream\": true, as it arrives).\n"
    "      -c, --config FILE   the gateway file\n"
    "      -d, --data DATA     the request body: JSON text, @FILE, or - for stdin\n"
    "                          (default: read stdin)\n"
    "      --path PATH         API path (default /v1/chat/completions)\n"
    "      --trace json        one JSON attempt record per attempt on stderr, then a\n"
    "                          summary line {requestId, attempts, outcome, model}\n"
    "      Exit 0 when a complete 2xx answer was served, 1 when the request ended\n"
    "      in an error, 2 on a usage or configuration error (nothing sent).\n"
    "  aigw demo\n"
    "      Offline: start an embedded mock provider whose first key is rate\n"
    "      limited and second answers, and show the failover with its trace.\n"
    "  aigw version\n"
    "  aigw help\n";

static int usage_error(const char *fmt, const char *arg)
{
    fputs("aigw: ", stderr);
    fprintf(stderr, fmt, arg ? arg : "");
    fputs("\nTry 'aigw help'.\n", stderr);
    return EXIT_USAGE;
}

/* Reads a whole stream; NULL on error (errno set). */
static char *read_stream(FILE *f, size_t *len)
{
    size_t cap = 8192, n = 0;
    char *buf = malloc(cap), *nb;
    if (!buf)
        return NULL;
    for (;;) {
        size_t got;
        if (n + 1 >= cap) {
            cap *= 2;
            nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                return NULL;
            }
            buf = nb;
        }
        got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0)
            break;
    }
    if (ferror(f)) {
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *d;
    if (!f)
        return NULL;
    d = read_stream(f, len);
    fclose(f);
    return d;
}

static void print_config_error(const aigw_error *err, const char *file)
{
    size_t i, n = aigw_error_count(err);
    if (aigw_error_code(err) != AIGW_ECONFIG) {
        fprintf(stderr, "aigw: %s: %s\n", file, aigw_error_message(err));
        return;
    }
    for (i = 0; i < n; i++) {
        const char *path = aigw_error_path(err, i);
        if (path && path[0])
            fprintf(stderr, "%s: %s\n", path, aigw_error_problem(err, i));
        else
            fprintf(stderr, "%s\n", aigw_error_problem(err, i));
    }
}

static aigw_config *load_config(const char *file)
{
    aigw_config *cfg = NULL;
    aigw_error *err = NULL;
    if (aigw_config_load_file(file, &cfg, &err) != AIGW_OK) {
        print_config_error(err, file);
        aigw_error_free(err);
        return NULL;
    }
    return cfg;
}

static int cmd_validate(int argc, char **argv)
{
    aigw_config *cfg;
    if (argc != 3)
        return usage_error("validate takes exactly one FILE", NULL);
    cfg = load_config(argv[2]);
    if (!cfg)
        return EXIT_USAGE;
    printf("%s: valid%s\n", argv[2],
           aigw_config_is_bare(cfg) ? " (bare access key configuration)" : "");
    aigw_config_unref(cfg);
    return 0;
}

/* Prints each attempt record, then the summary, one JSON object a line. */
static void print_trace(const aigw_response *resp, FILE *out)
{
    cJSON *t = cJSON_Parse(aigw_response_trace_json(resp));
    cJSON *att, *sum;
    char *s;
    if (!t)
        return;
    cJSON_ArrayForEach(att, cJSON_GetObjectItem(t, "attempts"))
    {
        s = cJSON_PrintUnformatted(att);
        if (s)
            fprintf(out, "%s\n", s);
        free(s);
    }
    sum = cJSON_CreateObject();
    cJSON_AddStringToObject(sum, "requestId", aigw_response_request_id(resp));
    cJSON_AddNumberToObject(sum, "attempts", (double)aigw_response_attempt_count(resp));
    cJSON_AddStringToObject(sum, "outcome", aigw_outcome_name(aigw_response_outcome(resp)));
    cJSON_AddStringToObject(sum, "model", aigw_response_model(resp));
    cJSON_AddNumberToObject(sum, "statusCode", aigw_response_status(resp));
    if (aigw_response_error_code(resp))
        cJSON_AddStringToObject(sum, "errorCode", aigw_response_error_code(resp));
    cJSON_AddItemReferenceToObject(sum, "skipped", cJSON_GetObjectItem(t, "skipped"));
    s = cJSON_PrintUnformatted(sum);
    if (s)
        fprintf(out, "%s\n", s);
    free(s);
    cJSON_Delete(sum);
    cJSON_Delete(t);
    fflush(out);
}

typedef struct request_opts {
    const char *config;
    const char *data;
    const char *path;
    const char *trace;
} request_opts;

static int parse_request_opts(int argc, char **argv, request_opts *o)
{
    int i;
    memset(o, 0, sizeof *o);
    for (i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char **slot = NULL;
        if (!strcmp(a, "-c") || !strcmp(a, "--config"))
            slot = &o->config;
        else if (!strcmp(a, "-d") || !strcmp(a, "--data"))
            slot = &o->data;
        else if (!strcmp(a, "--path"))
            slot = &o->path;
        else if (!strcmp(a, "--trace"))
            slot = &o->trace;
        else if (!strncmp(a, "--trace=", 8))
            o->trace = a + 8;
        else if (!strncmp(a, "--path=", 7))
            o->path = a + 7;
        else if (!strncmp(a, "--config=", 9))
            o->config = a + 9;
        else if (!strncmp(a, "--data=", 7))
            o->data = a + 7;
        else
            return usage_error("unknown option '%s'", a);
        if (slot) {
            if (i + 1 >= argc)
                return usage_error("option '%s' needs a value", a);
            *slot = argv[++i];
        }
    }
    if (!o->config)
        return usage_error("request needs -c FILE%s", "");
    if (o->trace && strcmp(o->trace, "json") != 0)
        return usage_error("--trace takes 'json', not '%s'", o->trace);
    return 0;
}

static char *read_body(const char *data, size_t *len)
{
    char *b;
    if (!data || !strcmp(data, "-")) {
        b = read_stream(stdin, len);
        if (!b)
            fprintf(stderr, "aigw: cannot read the request body from stdin: %s\n",
                    strerror(errno));
        return b;
    }
    if (data[0] == '@') {
        b = read_file(data + 1, len);
        if (!b)
            fprintf(stderr, "aigw: cannot read %s: %s\n", data + 1, strerror(errno));
        return b;
    }
    *len = strlen(data);
    b = malloc(*len + 1);
    if (b)
        memcpy(b, data, *len + 1);
    return b;
}

/* Streams go to stdout as they arrive. */
typedef struct stream_out {
    FILE *f;
    int started;
} stream_out;

static int so_start(void *ud, int status, const aigw_header *h, size_t n)
{
    (void)status;
    (void)h;
    (void)n;
    ((stream_out *)ud)->started = 1;
    return 0;
}

static int so_data(void *ud, const char *data, size_t len)
{
    stream_out *o = ud;
    if (fwrite(data, 1, len, o->f) != len || fflush(o->f) != 0)
        return 1; /* stdout is gone: cancel */
    return 0;
}

/* Tells the reader to discard what it got: the answer starts again. */
static int so_reset(void *ud, const char *reason_json)
{
    stream_out *o = ud;
    o->started = 0; /* if nothing commits again, the final answer is printed */
    fprintf(o->f, "event: aigw.reset\ndata: %s\n\n", reason_json);
    return fflush(o->f) != 0;
}

/* Whether the body asks for a streamed answer ("stream": true). */
static int wants_stream(const char *body, size_t len)
{
    cJSON *j = cJSON_ParseWithLength(body, len);
    int yes = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "stream"));
    cJSON_Delete(j);
    return yes;
}

/* Sends one request; prints body and trace; returns the exit status. */
static int send_and_print(aigw_client *client, aigw_request *req, int stream, int trace,
                          FILE *body_out)
{
    static const aigw_stream_handler handler = {AIGW_STREAM_VERSION, so_start, so_data,
                                                so_reset};
    stream_out so = {body_out, 0};
    aigw_response *resp = NULL;
    aigw_error *err = NULL;
    aigw_status st = stream ? aigw_client_stream(client, req, &handler, &so, &resp, &err)
                            : aigw_client_send(client, req, &resp, &err);
    const char *body;
    size_t len;
    int rc;
    if (st != AIGW_OK) {
        fprintf(stderr, "aigw: %s\n", aigw_error_message(err));
        aigw_error_free(err);
        return st == AIGW_EREQUEST ? EXIT_USAGE : EXIT_FAILED;
    }
    body = aigw_response_body(resp, &len);
    if (!so.started) { /* a streamed answer was written as it came */
        fwrite(body, 1, len, body_out);
        fflush(body_out);
    }
    if (trace)
        print_trace(resp, stderr);
    rc = aigw_response_outcome(resp) == AIGW_OUTCOME_SERVED ? 0 : EXIT_FAILED;
    /* With --trace json, stderr holds JSON lines only: the summary says it. */
    if (rc != 0 && !trace)
        fprintf(stderr, "aigw: request %s ended %s: HTTP %d%s%s after %zu attempt%s\n",
                aigw_response_request_id(resp), aigw_outcome_name(aigw_response_outcome(resp)),
                aigw_response_status(resp), aigw_response_error_code(resp) ? " " : "",
                aigw_response_error_code(resp) ? aigw_response_error_code(resp) : "",
                aigw_response_attempt_count(resp),
                aigw_response_attempt_count(resp) == 1 ? "" : "s");
    aigw_response_free(resp);
    return rc;
}

static int cmd_request(int argc, char **argv)
{
    request_opts o;
    aigw_config *cfg;
    aigw_client *client = NULL;
    aigw_request *req = NULL;
    aigw_error *err = NULL;
    char *body;
    size_t len = 0;
    int rc = parse_request_opts(argc, argv, &o);
    if (rc != 0)
        return rc;
    cfg = load_config(o.config);
    if (!cfg)
        return EXIT_USAGE;
    body = read_body(o.data, &len);
    if (!body) {
        aigw_config_unref(cfg);
        return EXIT_USAGE;
    }
    if (aigw_client_new(cfg, &client, &err) != AIGW_OK) {
        print_config_error(err, o.config);
        rc = EXIT_USAGE;
    } else if (aigw_request_new(&req) != AIGW_OK ||
               aigw_request_set_body(req, body, len) != AIGW_OK) {
        fprintf(stderr, "aigw: out of memory\n");
        rc = EXIT_FAILED;
    } else if (o.path && aigw_request_set_path(req, o.path) != AIGW_OK) {
        rc = usage_error("--path must start with '/' and hold no spaces: '%s'", o.path);
    } else {
        rc = send_and_print(client, req, wants_stream(body, len), o.trace != NULL, stdout);
    }
    aigw_error_free(err);
    aigw_request_free(req);
    aigw_client_free(client);
    aigw_config_unref(cfg);
    free(body);
    return rc;
}

/* ---- demo ---- */

#define DEMO_PRIMARY "demo-primary-value-not-a-real-key"
#define DEMO_BACKUP "demo-backup-value-not-a-real-key"

static void demo_print_attempts(const aigw_response *resp)
{
    size_t i;
    for (i = 0; i < aigw_response_attempt_count(resp); i++) {
        const aigw_attempt *a = aigw_response_attempt(resp, i);
        const char *cls = aigw_attempt_error_class(a);
        printf("  attempt %d  %s/%s  key %-8s HTTP %d  %-10s -> %s  (%lld ms)\n",
               aigw_attempt_number(a), aigw_attempt_provider(a), aigw_attempt_model(a),
               aigw_attempt_key_id(a), aigw_attempt_status_code(a), cls ? cls : "ok",
               aigw_attempt_verdict(a), (long long)aigw_attempt_duration_ms(a));
    }
}

static int cmd_demo(void)
{
    static const char rate_limited[] =
        "{\"error\":{\"message\":\"Rate limit reached for requests\",\"type\":\"requests\","
        "\"param\":null,\"code\":\"rate_limit_exceeded\"}}";
    mockprov_rule rule;
    mockprov *mp = mockprov_start(0);
    char cfg_json[2048];
    aigw_config *cfg = NULL;
    aigw_client *client = NULL;
    aigw_request *req = NULL;
    aigw_response *resp = NULL;
    aigw_error *err = NULL;
    const char *body = "{\"model\":\"mock:demo-model\","
                       "\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}]}";
    const char *out;
    size_t len;
    int rc = EXIT_FAILED;

    if (!mp) {
        fprintf(stderr, "aigw demo: cannot start the mock provider on 127.0.0.1\n");
        return EXIT_FAILED;
    }
    memset(&rule, 0, sizeof rule);
    rule.key = DEMO_PRIMARY;
    rule.status = 429;
    rule.headers = "Retry-After: 30\r\n";
    rule.body = rate_limited;
    mockprov_add_rule(mp, &rule);
    snprintf(cfg_json, sizeof cfg_json,
             "{\"providers\":[{\"providerId\":\"mock\",\"name\":\"Embedded mock\","
             "\"baseUrl\":\"%s\"}],"
             "\"providerKeys\":[{\"id\":\"primary\",\"providerId\":\"mock\",\"value\":\"%s\"},"
             "{\"id\":\"backup\",\"providerId\":\"mock\",\"value\":\"%s\"}],"
             "\"accessKeyConfiguration\":{\"name\":\"demo\",\"router\":{\"rules\":[{"
             "\"provider\":\"mock\",\"steps\":[{\"type\":\"user\",\"keySelectionStrategy\":"
             "\"ordered\",\"keys\":[{\"id\":\"primary\"},{\"id\":\"backup\"}]}]}]}}}",
             mockprov_base_url(mp), DEMO_PRIMARY, DEMO_BACKUP);

    printf("libaigw demo (offline)\n\n");
    printf("An embedded mock provider listens on %s.\n", mockprov_base_url(mp));
    printf("The access key configuration routes provider 'mock' to keys [primary, backup],\n"
           "tried in order. The mock answers key 'primary' with 429 Too Many Requests\n"
           "(Retry-After: 30) and key 'backup' with a chat completion.\n\n");
    printf("POST /v1/chat/completions  %s\n\n", body);

    if (aigw_config_parse(cfg_json, strlen(cfg_json), &cfg, &err) != AIGW_OK ||
        aigw_client_new(cfg, &client, &err) != AIGW_OK || aigw_request_new(&req) != AIGW_OK ||
        aigw_request_set_body(req, body, strlen(body)) != AIGW_OK ||
        aigw_client_send(client, req, &resp, &err) != AIGW_OK) {
        fprintf(stderr, "aigw demo: %s\n", err ? aigw_error_message(err) : "out of memory");
        goto done;
    }
    printf("Attempts:\n");
    demo_print_attempts(resp);
    out = aigw_response_body(resp, &len);
    printf("\nOutcome: %s, HTTP %d, request %s\n", aigw_outcome_name(aigw_response_outcome(resp)),
           aigw_response_status(resp), aigw_response_request_id(resp));
    printf("Served body:\n%.*s\n", (int)len, out);
    printf("\nThe mock provider received %ld requests: primary %ld, backup %ld.\n",
           mockprov_count(mp, NULL), mockprov_count(mp, DEMO_PRIMARY),
           mockprov_count(mp, DEMO_BACKUP));
    printf("\nTrace (--trace json):\n");
    fflush(stdout);
    print_trace(resp, stdout);
    rc = aigw_response_outcome(resp) == AIGW_OUTCOME_SERVED ? 0 : EXIT_FAILED;
done:
    aigw_response_free(resp);
    aigw_request_free(req);
    aigw_client_free(client);
    aigw_config_unref(cfg);
    aigw_error_free(err);
    mockprov_stop(mp);
    return rc;
}

int main(int argc, char **argv)
{
    const char *cmd = argc > 1 ? argv[1] : NULL;
    if (!cmd || !strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        fputs(USAGE, stdout);
        return 0;
    }
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("aigw %s (libaigw %s)\n", AIGW_VERSION_STRING, aigw_version_string());
        return 0;
    }
    if (!strcmp(cmd, "validate"))
        return cmd_validate(argc, argv);
    if (!strcmp(cmd, "request"))
        return cmd_request(argc, argv);
    if (!strcmp(cmd, "demo")) {
        if (argc != 2)
            return usage_error("demo takes no arguments%s", "");
        return cmd_demo();
    }
    return usage_error("unknown command '%s'", cmd);
}
