/*
 * aigw - the libaigw command line: validate a gateway file, send a request
 * (or the same request N times through one client) through failover with a
 * per-attempt trace and the client's key health, or run the offline demo.
 *
 *   aigw validate FILE|-
 *   aigw request -c FILE [-d JSON | -d @FILE | -d -] [--path PATH]
 *                [--trace human|json] [--repeat N] [--interval MS]
 *                [--stats [human|json]]
 *   aigw serve -c FILE [--listen HOST:PORT] [options]   (serve.c)
 *   aigw demo
 *   aigw help [COMMAND] | aigw COMMAND --help | aigw --version
 *
 * Exit status: 0 success (every request served); 1 a request ended in an
 * error; 2 usage or configuration error (nothing sent).  The manual page is
 * examples/aigw.1.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "aigw.h"
#include "cli.h"
#include "mockprov.h"
#define EXIT_HELP (-1) /* an option parser saw --help: print it, exit 0 */

static const char USAGE_HEAD[] =
    "aigw - provider-key failover for LLM APIs, in process (libaigw " AIGW_VERSION_STRING ")\n"
    "\n"
    "Usage:\n";

static const char USAGE_VALIDATE[] =
    "  aigw validate FILE\n"
    "  aigw validate -\n"
    "      Check a gateway file (or a bare ngrok access key configuration); with -,\n"
    "      read it from stdin. Exit 0 when valid; exit 2 with one line per problem\n"
    "      on stderr (\"JSON.path: problem\"; \"FILE: problem\" for the file as a\n"
    "      whole). Another of ngrok's resource bodies (a provider key, a custom\n"
    "      provider, a gateway configuration) or a request body is named as such,\n"
    "      with where it belongs.\n";

static const char USAGE_REQUEST[] =
    "  aigw request -c FILE [-d JSON | -d @FILE | -d -] [--path PATH]\n"
    "               [--trace human|json] [--repeat N] [--interval MS]\n"
    "               [--stats [human|json]]\n"
    "      Send a request through failover and print the served body on stdout\n"
    "      (a streamed answer, \"stream\": true, as it arrives).\n"
    "      -c, --config FILE   the gateway file (- for stdin, when the body is not)\n"
    "      -d, --data DATA     the request body: JSON text, @FILE, or - for stdin\n"
    "                          (default: read stdin)\n"
    "      --path PATH         API path (default /v1/chat/completions)\n"
    "      --trace human       a table of the attempts (and keys skipped) on stderr,\n"
    "                          then the request's outcome\n"
    "      --trace json        one JSON attempt record per attempt on stderr, then a\n"
    "                          summary line {requestId, attempts, outcome, model}\n"
    "      --repeat N          send the same request N times (1..1000000, default 1)\n"
    "                          through one client, so key health carries over; with\n"
    "                          N > 1 each body ends with a newline (one per line)\n"
    "      --interval MS       wait MS ms between repeated requests (0..3600000,\n"
    "                          default 0)\n"
    "      --stats [human|json]\n"
    "                          after the last request, the client's key health on\n"
    "                          stderr: a table (human, the default), or one JSON\n"
    "                          line (json; the default with --trace json)\n"
    "      -h, --help          this help\n"
    "      Long options also take their value after '=' (--repeat=5). Exit 0 when\n"
    "      every request was served a complete 2xx answer, 1 when any ended in an\n"
    "      error, 2 on a usage or configuration error (nothing sent).\n";

static const char USAGE_DEMO[] =
    "  aigw demo\n"
    "      Offline: start an embedded mock provider whose first key is rate\n"
    "      limited and second answers, and show the failover with its trace; then\n"
    "      send again and show the cooling key skipped, and the key health.\n";

static const char USAGE_VERSION[] =
    "  aigw version, aigw --version, aigw -V\n"
    "      Print aigw's version and the version of the libaigw it runs with.\n";

static const char USAGE_HELP[] =
    "  aigw help [COMMAND], aigw COMMAND --help, aigw --help\n"
    "      Print this help, or one command's. The manual: man aigw.\n";

static const char USAGE_TAIL[] =
    "\n"
    "Exit status: 0 success; 1 a request ended in an error; 2 a usage or\n"
    "configuration error (nothing sent).\n";

typedef struct command_help {
    const char *name;
    const char *usage;
} command_help;

static const command_help COMMANDS[] = {
    {"validate", USAGE_VALIDATE}, {"request", USAGE_REQUEST}, {"serve", USAGE_SERVE},
    {"demo", USAGE_DEMO},         {"version", USAGE_VERSION}, {"help", USAGE_HELP},
    {NULL, NULL}};

/* The whole help (cmd NULL), or one command's; NULL for an unknown one. */
static const char *command_usage(const char *cmd)
{
    size_t i;
    for (i = 0; COMMANDS[i].name; i++)
        if (!strcmp(cmd, COMMANDS[i].name))
            return COMMANDS[i].usage;
    return NULL;
}

static int print_help(const char *cmd)
{
    size_t i;
    if (cmd) {
        fputs("Usage:\n", stdout);
        fputs(command_usage(cmd), stdout);
        return 0;
    }
    fputs(USAGE_HEAD, stdout);
    for (i = 0; COMMANDS[i].name; i++)
        fputs(COMMANDS[i].usage, stdout);
    fputs(USAGE_TAIL, stdout);
    return 0;
}

static int is_help(const char *a)
{
    return !strcmp(a, "--help") || !strcmp(a, "-h");
}

int cli_usage_error(const char *fmt, const char *arg)
{
    fputs("aigw: ", stderr);
    fprintf(stderr, fmt, arg ? arg : "");
    fputs("\nTry 'aigw help'.\n", stderr);
    return EXIT_USAGE;
}

/* Zeroes memory that may hold key values (a gateway file), then frees it. */
static void wipe_free(char *p, size_t n)
{
    volatile char *v = p;
    if (!p)
        return;
    while (n--)
        *v++ = 0;
    free(p);
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
            /* not realloc: the old block may hold key values, wiped first */
            nb = malloc(cap * 2);
            if (!nb) {
                wipe_free(buf, cap);
                return NULL;
            }
            memcpy(nb, buf, n);
            wipe_free(buf, cap);
            buf = nb;
            cap *= 2;
        }
        got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0)
            break;
    }
    if (ferror(f)) {
        wipe_free(buf, cap);
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

/* Whether the text holds nothing but white space. */
static int blank(const char *s, size_t len)
{
    size_t i;
    for (i = 0; i < len; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n')
            return 0;
    return 1;
}

static int has_member(const cJSON *o, const char *const names[])
{
    size_t i;
    for (i = 0; names[i]; i++)
        if (cJSON_GetObjectItemCaseSensitive(o, names[i]))
            return 1;
    return 0;
}

/* Zeroes the strings of a parsed tree (they may be key values). */
static void wipe_tree(cJSON *n)
{
    for (; n; n = n->next) {
        if (n->valuestring) {
            volatile char *v = n->valuestring;
            while (*v)
                *v++ = 0;
        }
        wipe_tree(n->child);
    }
}

/*
 * A file that is not a gateway file but another of ngrok's resource bodies
 * (or a request): says what it looks like and where it belongs, on one line;
 * returns 1 when it did.  Names members only, never a value.
 */
static int explain_other_body(const char *text, size_t len, const char *name)
{
    static const char *const gateway_file[] = {
        "providers", "providerKeys", "accessKeyConfiguration", "gatewayConfig",
        "ngrokAccessKey", "ngrokGatewayUrl", "access", "router", NULL};
    static const char *const key[] = {"value", "valueFrom", NULL};
    static const char *const provider[] = {"baseUrl", "supportedApiSurfaces", NULL};
    static const char *const gateway_config[] = {
        "totalTimeout", "perRequestTimeout", "maxInputTokens", "maxOutputTokens",
        "connectTimeout", "maxAttempts", "retryAfterMax", "sameBackendRetries",
        "maxResponseBytes", "firstTokenTimeout", "streamIdleTimeout", "streamRestart",
        "maxEventBytes", "keyCooldown", "keyCooldownMax", "keyBenchTime", "circuitBreaker",
        "retryBudget", "healthStore", NULL};
    static const char *const request[] = {"messages", "input", "prompt", NULL};
    cJSON *root = cJSON_ParseWithLength(text, len);
    const char *what = NULL;
    if (!cJSON_IsObject(root) || has_member(root, gateway_file)) {
        wipe_tree(root); /* its strings may be key values */
        cJSON_Delete(root);
        return 0;
    }
    if (has_member(root, key))
        what = "a provider key (ngrok's POST /provider-keys body): put it in the gateway "
               "file's \"providerKeys\" list, with an \"id\" for the router's steps to name";
    else if (has_member(root, provider))
        what = "a custom provider (ngrok's POST /providers body): put it in the gateway "
               "file's \"providers\" list";
    else if (has_member(root, gateway_config))
        what = "a gateway configuration (ngrok's PATCH /gateway-config body): put it in the "
               "gateway file as its \"gatewayConfig\" object";
    else if (has_member(root, request))
        what = "a request body (POST /v1/chat/completions), not configuration: send it "
               "with aigw request -c GATEWAY_FILE -d @FILE";
    else if (cJSON_GetObjectItemCaseSensitive(root, "requestId") &&
             cJSON_GetObjectItemCaseSensitive(root, "attempts"))
        what = "a request's attempt record (ngrok's GET /usage/requests/{id} answer, what "
               "aigw request --trace json prints), not configuration";
    wipe_tree(root); /* its strings may be key values */
    cJSON_Delete(root);
    if (!what)
        return 0;
    fprintf(stderr, "%s: this looks like %s (see aigw help validate)\n", name, what);
    return 1;
}

/* The problems of a configuration that did not load: one line each, "JSON
 * path: problem", or "FILE: problem" for the file as a whole.  text: the
 * file's content when known (NULL: not read), for what the library cannot
 * say (an empty file; another kind of body). */
static void print_config_error(const aigw_error *err, const char *name, const char *text,
                               size_t len)
{
    size_t i, n = aigw_error_count(err);
    if (aigw_error_code(err) != AIGW_ECONFIG) {
        fprintf(stderr, "aigw: %s: %s\n", name, aigw_error_message(err));
        return;
    }
    if (text && blank(text, len)) {
        fprintf(stderr, "%s: empty file\n", name);
        return;
    }
    if (text && explain_other_body(text, len, name))
        return;
    for (i = 0; i < n; i++) {
        const char *path = aigw_error_path(err, i);
        if (path && path[0])
            fprintf(stderr, "%s: %s\n", path, aigw_error_problem(err, i));
        else
            fprintf(stderr, "%s: %s\n", name, aigw_error_problem(err, i));
    }
}

/* What the CLI calls a file it was given: "<stdin>" for "-". */
static const char *display_name(const char *file)
{
    return strcmp(file, "-") ? file : "<stdin>";
}

aigw_config *cli_load_config(const char *file)
{
    aigw_config *cfg = NULL;
    aigw_error *err = NULL;
    const char *name = display_name(file);
    char *text = NULL;
    size_t len = 0;
    aigw_status st;
    if (!strcmp(file, "-")) {
        text = read_stream(stdin, &len);
        if (!text) {
            fprintf(stderr, "aigw: cannot read the gateway file from stdin: %s\n",
                    strerror(errno));
            return NULL;
        }
        st = aigw_config_parse(text, len, &cfg, &err);
    } else {
        st = aigw_config_load_file(file, &cfg, &err);
        if (st == AIGW_ECONFIG) /* read again to say more than the library can */
            text = read_file(file, &len);
    }
    if (st != AIGW_OK) {
        print_config_error(err, name, text, len);
        aigw_error_free(err);
        cfg = NULL;
    }
    if (text)
        wipe_free(text, len + 1);
    return cfg;
}

static int cmd_validate(int argc, char **argv)
{
    aigw_config *cfg;
    if (argc == 3 && is_help(argv[2]))
        return print_help("validate");
    if (argc != 3)
        return cli_usage_error("validate takes exactly one FILE (or - for stdin)", NULL);
    cfg = cli_load_config(argv[2]);
    if (!cfg)
        return EXIT_USAGE;
    printf("%s: valid%s\n", display_name(argv[2]),
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
    cJSON_AddStringToObject(sum, "healthStore", aigw_response_health_store(resp));
    s = cJSON_PrintUnformatted(sum);
    if (s)
        fprintf(out, "%s\n", s);
    free(s);
    cJSON_Delete(sum);
    cJSON_Delete(t);
    fflush(out);
}

typedef enum stats_mode { STATS_NONE = 0, STATS_AUTO, STATS_HUMAN, STATS_JSON } stats_mode;

typedef enum trace_mode { TRACE_NONE = 0, TRACE_HUMAN, TRACE_JSON } trace_mode;

typedef struct request_opts {
    const char *config;
    const char *data;
    const char *path;
    const char *trace;
    trace_mode trace_mode;
    long repeat;      /* --repeat N: 1..REPEAT_MAX */
    long interval_ms; /* --interval MS: 0..INTERVAL_MAX */
    stats_mode stats;
} request_opts;

#define REPEAT_MAX 1000000L
#define INTERVAL_MAX 3600000L

/* A decimal integer in [lo, hi], digits only (no sign, no spaces). */
static int parse_long(const char *s, long lo, long hi, long *out)
{
    long v = 0;
    if (!*s)
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        if (v > (hi - (*s - '0')) / 10)
            return -1; /* past hi: no overflow on the way */
        v = v * 10 + (*s - '0');
    }
    if (v < lo)
        return -1;
    *out = v;
    return 0;
}

static int stats_value(const char *v, stats_mode *out)
{
    if (!strcmp(v, "human"))
        *out = STATS_HUMAN;
    else if (!strcmp(v, "json"))
        *out = STATS_JSON;
    else
        return -1;
    return 0;
}

static int parse_request_opts(int argc, char **argv, request_opts *o)
{
    const char *repeat = NULL, *interval = NULL;
    int i;
    memset(o, 0, sizeof *o);
    o->repeat = 1;
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
        else if (!strcmp(a, "--repeat"))
            slot = &repeat;
        else if (!strcmp(a, "--interval"))
            slot = &interval;
        else if (!strcmp(a, "--stats")) {
            /* its value is optional: only "human" or "json" is taken as one */
            o->stats = STATS_AUTO;
            if (i + 1 < argc && stats_value(argv[i + 1], &o->stats) == 0)
                i++;
        } else if (!strncmp(a, "--stats=", 8)) {
            if (stats_value(a + 8, &o->stats) != 0)
                return cli_usage_error("--stats takes 'human' or 'json', not '%s'", a + 8);
        } else if (!strncmp(a, "--trace=", 8))
            o->trace = a + 8;
        else if (!strncmp(a, "--path=", 7))
            o->path = a + 7;
        else if (!strncmp(a, "--config=", 9))
            o->config = a + 9;
        else if (!strncmp(a, "--data=", 7))
            o->data = a + 7;
        else if (!strncmp(a, "--repeat=", 9))
            repeat = a + 9;
        else if (!strncmp(a, "--interval=", 11))
            interval = a + 11;
        else if (is_help(a))
            return EXIT_HELP;
        else
            return cli_usage_error("unknown option '%s'", a);
        if (slot) {
            if (i + 1 >= argc)
                return cli_usage_error("option '%s' needs a value", a);
            *slot = argv[++i];
        }
    }
    if (!o->config)
        return cli_usage_error("request needs -c FILE%s", "");
    if (o->trace && !strcmp(o->trace, "json"))
        o->trace_mode = TRACE_JSON;
    else if (o->trace && !strcmp(o->trace, "human"))
        o->trace_mode = TRACE_HUMAN;
    else if (o->trace)
        return cli_usage_error("--trace takes 'human' or 'json', not '%s'", o->trace);
    if (!strcmp(o->config, "-") && (!o->data || !strcmp(o->data, "-")))
        return cli_usage_error("-c - reads the gateway file from stdin: give the body with -d "
                           "JSON or -d @FILE%s", "");
    if (repeat && parse_long(repeat, 1, REPEAT_MAX, &o->repeat) != 0)
        return cli_usage_error("--repeat takes a whole number from 1 to 1000000, not '%s'", repeat);
    if (interval && parse_long(interval, 0, INTERVAL_MAX, &o->interval_ms) != 0)
        return cli_usage_error("--interval takes milliseconds from 0 to 3600000, not '%s'",
                           interval);
    /* with --trace json, stderr holds JSON lines only */
    if (o->stats == STATS_AUTO)
        o->stats = o->trace_mode == TRACE_JSON ? STATS_JSON : STATS_HUMAN;
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
    int last; /* the last byte written, -1 none */
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
    if (len > 0)
        o->last = (unsigned char)data[len - 1];
    return 0;
}

/* Tells the reader to discard what it got: the answer starts again. */
static int so_reset(void *ud, const char *reason_json)
{
    stream_out *o = ud;
    o->started = 0; /* if nothing commits again, the final answer is printed */
    fprintf(o->f, "event: aigw.reset\ndata: %s\n\n", reason_json);
    o->last = '\n';
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

static void print_attempt_table(FILE *out, const aigw_response *resp, const char *indent);

/* Sends one request; prints body and trace; returns the exit status.  With
 * line_end, the body is followed by a newline unless it ends with one. */
static int send_and_print(aigw_client *client, aigw_request *req, int stream, trace_mode trace,
                          FILE *body_out, int line_end)
{
    static const aigw_stream_handler handler = {AIGW_STREAM_VERSION, so_start, so_data,
                                                so_reset, NULL};
    stream_out so = {body_out, 0, -1};
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
        so.last = len > 0 ? (unsigned char)body[len - 1] : -1;
    }
    if (line_end && so.last != '\n')
        fputc('\n', body_out);
    fflush(body_out);
    if (trace == TRACE_JSON)
        print_trace(resp, stderr);
    else if (trace == TRACE_HUMAN)
        print_attempt_table(stderr, resp, "  ");
    rc = aigw_response_outcome(resp) == AIGW_OUTCOME_SERVED ? 0 : EXIT_FAILED;
    if (rc == 0 && trace == TRACE_HUMAN)
        fprintf(stderr, "aigw: request %s served: HTTP %d (model %s) after %zu attempt%s\n",
                aigw_response_request_id(resp), aigw_response_status(resp),
                aigw_response_model(resp) ? aigw_response_model(resp) : "-",
                aigw_response_attempt_count(resp),
                aigw_response_attempt_count(resp) == 1 ? "" : "s");
    /* With --trace json, stderr holds JSON lines only: the summary says it. */
    if (rc != 0 && trace != TRACE_JSON)
        fprintf(stderr, "aigw: request %s ended %s: HTTP %d%s%s after %zu attempt%s\n",
                aigw_response_request_id(resp), aigw_outcome_name(aigw_response_outcome(resp)),
                aigw_response_status(resp), aigw_response_error_code(resp) ? " " : "",
                aigw_response_error_code(resp) ? aigw_response_error_code(resp) : "",
                aigw_response_attempt_count(resp),
                aigw_response_attempt_count(resp) == 1 ? "" : "s");
    aigw_response_free(resp);
    return rc;
}

/* ---- key health (--stats, demo) ---- */

/* A duration left: "-" for none, "850ms", "29.9s", "59m59s", "2h05m". */
static const char *fmt_wait(int64_t ms, char *buf, size_t size)
{
    if (ms <= 0)
        snprintf(buf, size, "-");
    else if (ms < 1000)
        snprintf(buf, size, "%" PRId64 "ms", ms);
    else if (ms < 60000)
        snprintf(buf, size, "%.1fs", (double)ms / 1000.0);
    else if (ms < 3600000)
        snprintf(buf, size, "%" PRId64 "m%02" PRId64 "s", ms / 60000, ms / 1000 % 60);
    else
        snprintf(buf, size, "%" PRId64 "h%02" PRId64 "m", ms / 3600000, ms / 60000 % 60);
    return buf;
}

/* A latency: "-" for none (< 0), else "12ms", or "12.3s" from 10 s on. */
static const char *fmt_latency(int64_t ms, char *buf, size_t size)
{
    if (ms < 0)
        snprintf(buf, size, "-");
    else if (ms < 10000)
        snprintf(buf, size, "%" PRId64 "ms", ms);
    else
        snprintf(buf, size, "%.1fs", (double)ms / 1000.0);
    return buf;
}

#define STAT_COLS 11
#define STAT_CELL 32

/* One row's cells: name, model (endpoints only), provider (keys and
 * endpoints), state, wait, requests, successes, failures, skips, p50, p99.
 * Fixed-width cells hold the numbers; names and states point into the
 * snapshot. */
typedef struct stat_row {
    const char *cell[STAT_COLS];
    char buf[STAT_COLS][STAT_CELL];
} stat_row;

static void stat_row_fill(stat_row *r, const aigw_stat *st)
{
    int c;
    r->cell[0] = st->name;
    r->cell[1] = st->model;
    r->cell[2] = st->provider;
    r->cell[3] = st->state;
    r->cell[4] = fmt_wait(st->wait_ms, r->buf[4], STAT_CELL);
    snprintf(r->buf[5], STAT_CELL, "%" PRIu64, st->requests);
    snprintf(r->buf[6], STAT_CELL, "%" PRIu64, st->successes);
    snprintf(r->buf[7], STAT_CELL, "%" PRIu64, st->failures);
    snprintf(r->buf[8], STAT_CELL, "%" PRIu64, st->skips);
    for (c = 5; c <= 8; c++)
        r->cell[c] = r->buf[c];
    r->cell[9] = fmt_latency(st->latency_p50_ms, r->buf[9], STAT_CELL);
    r->cell[10] = fmt_latency(st->latency_p99_ms, r->buf[10], STAT_CELL);
}

/* Which columns a section shows. */
static int stat_col_shown(int c, const char *kind)
{
    if (c == 1)
        return !strcmp(kind, "endpoint");
    if (c == 2)
        return !strcmp(kind, "key") || !strcmp(kind, "endpoint");
    return 1;
}

static void stat_row_print(FILE *out, const char *indent, const stat_row *r,
                           const size_t *width, const char *kind)
{
    int c;
    fputs(indent, out);
    for (c = 0; c < STAT_COLS; c++) {
        if (!stat_col_shown(c, kind))
            continue;
        if (c > 0)
            fputs("  ", out);
        if (c >= 4) /* numbers and durations: right-aligned */
            fprintf(out, "%*s", (int)width[c], r->cell[c]);
        else
            fprintf(out, "%-*s", (int)width[c], r->cell[c]);
    }
    fputc('\n', out);
}

/* One aligned section: the entries of one kind ("key", "endpoint" (a key
 * with one model), "backend", "host"). */
static void print_stat_section(FILE *out, const char *indent, const aigw_stats *stats,
                               const char *kind)
{
    static const char *const head[STAT_COLS] = {"", "model", "provider", "state", "wait",
                                                 "requests", "successes", "failures", "skips",
                                                 "p50", "p99"};
    size_t width[STAT_COLS], i, n = aigw_stats_count(stats), rows = 0;
    stat_row r;
    int c;
    for (c = 0; c < STAT_COLS; c++)
        width[c] = strlen(c == 0 ? kind : head[c]);
    for (i = 0; i < n; i++) {
        const aigw_stat *st = aigw_stats_at(stats, i);
        if (!st || strcmp(st->kind, kind) != 0)
            continue;
        stat_row_fill(&r, st);
        for (c = 0; c < STAT_COLS; c++)
            if (strlen(r.cell[c]) > width[c])
                width[c] = strlen(r.cell[c]);
        rows++;
    }
    if (rows == 0)
        return;
    for (c = 0; c < STAT_COLS; c++)
        r.cell[c] = c == 0 ? kind : head[c];
    stat_row_print(out, indent, &r, width, kind);
    for (i = 0; i < n; i++) {
        const aigw_stat *st = aigw_stats_at(stats, i);
        if (!st || strcmp(st->kind, kind) != 0)
            continue;
        stat_row_fill(&r, st);
        stat_row_print(out, indent, &r, width, kind);
    }
}

/* The snapshot as a table: keys, endpoints, backends, hosts, then the retry
 * budget. */
static void print_stats_human(FILE *out, const char *indent, const aigw_stats *stats)
{
    uint64_t requests = 0, retries = 0, denied = 0;
    int64_t available = 0;
    print_stat_section(out, indent, stats, "key");
    print_stat_section(out, indent, stats, "endpoint");
    print_stat_section(out, indent, stats, "backend");
    print_stat_section(out, indent, stats, "host");
    aigw_stats_budget(stats, &requests, &retries, &denied, &available);
    fprintf(out,
            "%sretry budget: requests %" PRIu64 ", retries %" PRIu64 ", denied %" PRIu64
            ", available %" PRId64 "\n",
            indent, requests, retries, denied, available);
    {
        const char *state = NULL, *kind = aigw_stats_health_store(stats, &state);
        fprintf(out, "%shealth store: %s (%s)\n", indent, kind ? kind : "local",
                state ? state : "ok");
    }
}

/* Prints the client's health snapshot; 0, or EXIT_FAILED when none could
 * be taken. */
static int print_stats(aigw_client *client, stats_mode mode, FILE *out)
{
    aigw_stats *stats = NULL;
    const char *json;
    aigw_status st = aigw_client_stats(client, &stats);
    if (st != AIGW_OK) {
        fprintf(stderr, "aigw: cannot take the client's health snapshot: %s\n",
                aigw_status_name(st));
        return EXIT_FAILED;
    }
    if (mode == STATS_JSON) {
        json = aigw_stats_json(stats);
        if (!json) {
            fprintf(stderr, "aigw: cannot take the client's health snapshot: out of memory\n");
            aigw_stats_free(stats);
            return EXIT_FAILED;
        }
        fprintf(out, "%s\n", json);
    } else {
        print_stats_human(out, "", stats);
    }
    fflush(out);
    aigw_stats_free(stats);
    return 0;
}

static void sleep_ms(long ms)
{
    struct timespec ts, left;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    while (nanosleep(&ts, &left) != 0 && errno == EINTR)
        ts = left;
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
    long n;
    int stream, r;
    int rc = parse_request_opts(argc, argv, &o);
    if (rc == EXIT_HELP)
        return print_help("request");
    if (rc != 0)
        return rc;
    cfg = cli_load_config(o.config);
    if (!cfg)
        return EXIT_USAGE;
    body = read_body(o.data, &len);
    if (!body) {
        aigw_config_unref(cfg);
        return EXIT_USAGE;
    }
    if (aigw_client_new(cfg, &client, &err) != AIGW_OK) {
        print_config_error(err, display_name(o.config), NULL, 0);
        rc = EXIT_USAGE;
    } else if (aigw_request_new(&req) != AIGW_OK ||
               aigw_request_set_body(req, body, len) != AIGW_OK) {
        fprintf(stderr, "aigw: out of memory\n");
        rc = EXIT_FAILED;
    } else if (o.path && aigw_request_set_path(req, o.path) != AIGW_OK) {
        rc = cli_usage_error("--path must start with '/' and hold no spaces: '%s'", o.path);
    } else {
        /* One client for every repetition: what it learns of each key
         * (cooldowns, benches, breakers) carries over to the next. */
        stream = wants_stream(body, len);
        for (n = 0; n < o.repeat; n++) {
            if (n > 0 && o.interval_ms > 0)
                sleep_ms(o.interval_ms);
            r = send_and_print(client, req, stream, o.trace_mode, stdout, o.repeat > 1);
            if (r == EXIT_USAGE && n == 0) {
                rc = EXIT_USAGE; /* the body is unusable: nothing was sent */
                break;
            }
            if (r != 0)
                rc = EXIT_FAILED;
        }
        if (rc != EXIT_USAGE && o.stats != STATS_NONE && print_stats(client, o.stats, stderr) != 0)
            rc = EXIT_FAILED;
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

/* The attempts of one response as a table (--trace human, demo): first
 * what it passed over without an upstream call (skips), then each attempt:
 * provider/model, key id, HTTP status, error class, verdict, duration. */
static void print_attempt_table(FILE *out, const aigw_response *resp, const char *indent)
{
    size_t i, w = 8, na = aigw_response_attempt_count(resp), ns = aigw_response_skip_count(resp);
    char wait[STAT_CELL];
    for (i = 0; i < na; i++) { /* the key column: the longest id and a space */
        const char *key = aigw_attempt_key_id(aigw_response_attempt(resp, i));
        if (key && strlen(key) + 1 > w)
            w = strlen(key) + 1;
    }
    for (i = 0; i < ns; i++) {
        const char *key = aigw_response_skip_key_id(resp, i);
        if (key && strlen(key) + 1 > w)
            w = strlen(key) + 1;
    }
    for (i = 0; i < ns; i++) {
        const char *provider = "", *model = "", *reason = "";
        const char *key = aigw_response_skip_key_id(resp, i);
        int64_t ms = aigw_response_skip_wait_ms(resp, i);
        aigw_response_skip(resp, i, &provider, &model, &reason);
        fprintf(out, "%sskipped    %s/%s  key %-*s %s", indent, provider, model, (int)w,
                key && key[0] ? key : "-", reason);
        if (ms > 0)
            fprintf(out, "  (%s left)", fmt_wait(ms, wait, sizeof wait));
        fprintf(out, ", no upstream call\n");
    }
    for (i = 0; i < na; i++) {
        const aigw_attempt *a = aigw_response_attempt(resp, i);
        const char *cls = aigw_attempt_error_class(a), *key = aigw_attempt_key_id(a);
        const char *terr = aigw_attempt_transport_error(a);
        int status = aigw_attempt_status_code(a);
        int64_t waited = aigw_attempt_waited_ms(a);
        char http[32];
        if (status > 0)
            snprintf(http, sizeof http, "HTTP %d", status);
        else
            snprintf(http, sizeof http, "%s", terr && terr[0] ? terr : "no answer");
        fprintf(out, "%sattempt %d  %s/%s  key %-*s%-8s  %-10s -> %s  (%lld ms", indent,
                aigw_attempt_number(a), aigw_attempt_provider(a), aigw_attempt_model(a), (int)w,
                key && key[0] ? key : "-", http, cls ? cls : "ok", aigw_attempt_verdict(a),
                (long long)aigw_attempt_duration_ms(a));
        if (waited > 0)
            fprintf(out, ", after a wait of %s", fmt_wait(waited, wait, sizeof wait));
        fprintf(out, ")\n");
    }
    fflush(out);
}

static void demo_print_outcome(const aigw_response *resp)
{
    printf("\nOutcome: %s, HTTP %d, request %s\n", aigw_outcome_name(aigw_response_outcome(resp)),
           aigw_response_status(resp), aigw_response_request_id(resp));
}

static void demo_print_counts(mockprov *mp)
{
    printf("The mock provider received %ld requests: primary %ld, backup %ld.\n",
           mockprov_count(mp, NULL), mockprov_count(mp, DEMO_PRIMARY),
           mockprov_count(mp, DEMO_BACKUP));
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
    aigw_stats *stats = NULL;
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
    fflush(stdout);
    print_attempt_table(stdout, resp, "  ");
    out = aigw_response_body(resp, &len);
    demo_print_outcome(resp);
    printf("Served body:\n%.*s\n\n", (int)len, out);
    demo_print_counts(mp);
    printf("\nTrace (--trace json):\n");
    fflush(stdout);
    print_trace(resp, stdout);
    if (aigw_response_outcome(resp) != AIGW_OUTCOME_SERVED)
        goto done;
    aigw_response_free(resp);
    resp = NULL;

    /* The same request again, through the same client: it remembers that
     * 'primary' asked for 30 s, and does not spend a call on it. */
    printf("\nThe same request again, through the same client (aigw request --repeat 2).\n"
           "The client remembers the 429: key 'primary' is cooling for demo-model (rate\n"
           "limits are per model) for the 30 s it asked for, so it is skipped without an\n"
           "upstream call.\n\n");
    if (aigw_client_send(client, req, &resp, &err) != AIGW_OK) {
        fprintf(stderr, "aigw demo: %s\n", aigw_error_message(err));
        goto done;
    }
    printf("Attempts:\n");
    fflush(stdout);
    print_attempt_table(stdout, resp, "  ");
    demo_print_outcome(resp);
    printf("\n");
    demo_print_counts(mp);
    if (aigw_response_outcome(resp) != AIGW_OUTCOME_SERVED)
        goto done;

    if (aigw_client_stats(client, &stats) != AIGW_OK) {
        fprintf(stderr, "aigw demo: cannot take the client's health snapshot\n");
        goto done;
    }
    printf("\nKey health (aigw request --stats):\n");
    print_stats_human(stdout, "  ", stats);
    rc = 0;
done:
    fflush(stdout);
    aigw_stats_free(stats);
    aigw_response_free(resp);
    aigw_request_free(req);
    aigw_client_free(client);
    aigw_config_unref(cfg);
    aigw_error_free(err);
    mockprov_stop(mp);
    return rc;
}

static int cmd_version(void)
{
    printf("aigw %s (libaigw %s)\n", AIGW_VERSION_STRING, aigw_version_string());
    return 0;
}

int main(int argc, char **argv)
{
    const char *cmd = argc > 1 ? argv[1] : NULL;
    if (!cmd || is_help(cmd))
        return print_help(NULL);
    if (!strcmp(cmd, "help")) { /* aigw help [COMMAND] */
        if (argc == 2)
            return print_help(NULL);
        if (argc > 3)
            return cli_usage_error("help takes at most one COMMAND%s", "");
        if (is_help(argv[2]))
            return print_help("help");
        if (!command_usage(argv[2]))
            return cli_usage_error("no such command: '%s'", argv[2]);
        return print_help(argv[2]);
    }
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version") || !strcmp(cmd, "-V")) {
        if (argc == 3 && is_help(argv[2]))
            return print_help("version");
        return cmd_version(); /* further arguments ignored, as ever */
    }
    if (!strcmp(cmd, "validate"))
        return cmd_validate(argc, argv);
    if (!strcmp(cmd, "request"))
        return cmd_request(argc, argv);
    if (!strcmp(cmd, "serve"))
        return cmd_serve(argc, argv);
    if (!strcmp(cmd, "demo")) {
        if (argc == 3 && is_help(argv[2]))
            return print_help("demo");
        if (argc != 2)
            return cli_usage_error("demo takes no arguments%s", "");
        return cmd_demo();
    }
    return cli_usage_error("unknown command '%s'", cmd);
}
