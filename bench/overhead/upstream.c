/*
 * upstream.c - the loopback upstream both sides talk to, in a process of
 * its own so that nothing it does is counted as the client's.
 *
 * nginx when it is installed (BENCH_NGINX, then PATH, then /usr/sbin/nginx),
 * with a configuration written here: it answers POST /v1/chat/completions by
 * the key presented, as bench/serve/upstream.conf.in does - a canned chat
 * completion; for BENCH_KEY_LIMITED a 429 with Retry-After: 30 and OpenAI's
 * rate-limit error; for BENCH_KEY_STREAM a streamed answer of
 * BENCH_STREAM_EVENTS server-sent events (a static file, sent whole) - and
 * logs one line per request with a marker of the key, which is how the
 * upstream calls of the failover client (BENCH_KEY_LIMITED and
 * BENCH_KEY_OK_COUNTED, which no other client uses while it is counted)
 * are counted.
 * Otherwise the mock provider (examples/mockprov.c) in a forked child, with
 * the same three answers; it then cannot count for the parent.
 *
 * Both children get PR_SET_PDEATHSIG, so a bench killed mid-run leaves no
 * server behind.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mockprov.h"

#define CHAT_JSON                                                                                 \
    "{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion\",\"created\":1700000000,"          \
    "\"model\":\"m1\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":" \
    "\"Hello from the bench upstream.\"},\"logprobs\":null,\"finish_reason\":\"stop\"}],"         \
    "\"usage\":{\"prompt_tokens\":8,\"completion_tokens\":7,\"total_tokens\":15}}"
#define LIMITED_JSON                                                                          \
    "{\"error\":{\"message\":\"Rate limit reached for requests (bench).\",\"type\":"          \
    "\"requests\",\"param\":null,\"code\":\"rate_limit_exceeded\"}}"

/* ---- the streamed answer ---- */

#define CHUNK_HEAD                                                                            \
    "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":"      \
    "1700000000,\"model\":\"m1\",\"choices\":[{\"index\":0,\"delta\":"

static char *stream_body;
static size_t stream_len;

/* OpenAI's shape: a first event with the role, content events, one with the
 * finish reason, then [DONE]: BENCH_STREAM_EVENTS events in all. */
const char *bench_stream_body(size_t *len)
{
    if (!stream_body) {
        size_t cap = 256u * BENCH_STREAM_EVENTS, n = 0;
        int i;
        char *b = malloc(cap);
        if (!b)
            abort();
#define ADD(...) (n += (size_t)snprintf(b + n, cap - n, __VA_ARGS__))
        ADD(CHUNK_HEAD "{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n");
        for (i = 0; i < BENCH_STREAM_EVENTS - 3; i++)
            ADD(CHUNK_HEAD "{\"content\":\"tok%d \"},\"finish_reason\":null}]}\n\n", i);
        ADD(CHUNK_HEAD "{},\"finish_reason\":\"stop\"}]}\n\n");
        ADD("data: [DONE]\n\n");
#undef ADD
        stream_body = b;
        stream_len = n;
    }
    if (len)
        *len = stream_len;
    return stream_body;
}

/* ---- helpers ---- */

static int free_port(void)
{
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static int can_connect(int port)
{
    struct sockaddr_in a;
    int fd = socket(AF_INET, SOCK_STREAM, 0), ok;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int write_file(const char *path, const char *data, size_t len)
{
    FILE *f = fopen(path, "w");
    int rc = 0;
    if (!f)
        return -1;
    if (fwrite(data, 1, len, f) != len)
        rc = -1;
    if (fclose(f) != 0)
        rc = -1;
    return rc;
}

static void set_urls(bench_upstream *u, int port)
{
    snprintf(u->base_url, sizeof u->base_url, "http://127.0.0.1:%d/v1", port);
    snprintf(u->url, sizeof u->url, "%s/chat/completions", u->base_url);
}

/* ---- nginx ---- */

static const char NGINX_CONF[] =
    "daemon off;\n"
    "master_process on;\n"
    "worker_processes auto;\n"
    "pid @DIR@/nginx.pid;\n"
    "error_log @DIR@/error.log warn;\n"
    "events { worker_connections 4096; }\n"
    "http {\n"
    "    client_body_temp_path @DIR@/tmp;\n"
    "    proxy_temp_path @DIR@/tmp;\n"
    "    fastcgi_temp_path @DIR@/tmp;\n"
    "    uwsgi_temp_path @DIR@/tmp;\n"
    "    scgi_temp_path @DIR@/tmp;\n"
    "    keepalive_requests 10000000;\n"
    "    keepalive_timeout 600s;\n"
    "    server_tokens off;\n"
    "    etag off;\n"
    "    map $http_authorization $bench_key {\n"
    "        \"Bearer " BENCH_KEY_LIMITED "\" limited;\n"
    "        \"Bearer " BENCH_KEY_STREAM "\" stream;\n"
    "        \"Bearer " BENCH_KEY_OK_COUNTED "\" counted;\n"
    "        default ok;\n"
    "    }\n"
    "    log_format bench_keys '$bench_key $status';\n"
    "    access_log @DIR@/access.log bench_keys;\n"
    "    server {\n"
    "        listen 127.0.0.1:@PORT@ backlog=4096;\n"
    "        location = /v1/chat/completions {\n"
    "            if ($bench_key = limited) { rewrite ^ /bench-limited last; }\n"
    "            if ($bench_key = stream) { rewrite ^ /bench-stream last; }\n"
    "            default_type application/json;\n"
    "            return 200 '" CHAT_JSON "';\n"
    "        }\n"
    "        location = /bench-limited {\n"
    "            internal;\n"
    "            default_type application/json;\n"
    "            add_header Retry-After 30 always;\n"
    "            return 429 '" LIMITED_JSON "';\n"
    "        }\n"
    /* The static module refuses a POST (405); the error page sends the
     * same file back as 200, so the body is a file sent whole. */
    "        location = /bench-stream {\n"
    "            internal;\n"
    "            default_type text/event-stream;\n"
    "            error_page 405 =200 $uri;\n"
    "            alias @DIR@/stream.sse;\n"
    "        }\n"
    "    }\n"
    "}\n";

static const char *find_nginx(void)
{
    static char path[512];
    const char *env = getenv("BENCH_NGINX"), *p;
    if (env && *env)
        return access(env, X_OK) == 0 ? env : NULL;
    for (p = getenv("PATH"); p && *p;) {
        const char *e = strchr(p, ':');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        snprintf(path, sizeof path, "%.*s/nginx", (int)n, p);
        if (n && access(path, X_OK) == 0)
            return path;
        p = e ? e + 1 : NULL;
    }
    return access("/usr/sbin/nginx", X_OK) == 0 ? "/usr/sbin/nginx" : NULL;
}

/* "nginx/1.22.1" from `nginx -v` (written to stderr). */
static void nginx_version(const char *nginx, const char *dir, char *out, size_t size)
{
    char cmd[1024], line[256] = "";
    FILE *f;
    snprintf(out, size, "nginx");
    snprintf(cmd, sizeof cmd, "'%s' -v 2>&1", nginx);
    (void)dir;
    if ((f = popen(cmd, "r")) != NULL) {
        if (fgets(line, sizeof line, f)) {
            char *v = strstr(line, "nginx/");
            if (v) {
                v[strcspn(v, " \r\n")] = '\0';
                snprintf(out, size, "%s", v);
            }
        }
        pclose(f);
    }
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

/* The template with @DIR@ and @PORT@ filled in; NULL out of memory. */
static char *fill(const char *tpl, const char *dir, int port)
{
    char portstr[16], *out, *o;
    const char *p;
    size_t dl = strlen(dir), len = 1;
    snprintf(portstr, sizeof portstr, "%d", port);
    for (p = tpl; *p; p++)
        len += strncmp(p, "@DIR@", 5) == 0 ? dl : strncmp(p, "@PORT@", 6) == 0 ? 5 : 1;
    if ((out = malloc(len)) == NULL)
        return NULL;
    for (p = tpl, o = out; *p;) {
        if (strncmp(p, "@DIR@", 5) == 0) {
            memcpy(o, dir, dl);
            o += dl;
            p += 5;
        } else if (strncmp(p, "@PORT@", 6) == 0) {
            o += sprintf(o, "%s", portstr);
            p += 6;
        } else {
            *o++ = *p++;
        }
    }
    *o = '\0';
    return out;
}

static int start_nginx(bench_upstream *u, const char *nginx, char *why, size_t why_size)
{
    char path[256], *conf = NULL;
    const char *body;
    size_t len;
    int port = -1, tries, i;

    snprintf(u->dir, sizeof u->dir, "/tmp/aigw-bench-XXXXXX");
    if (!mkdtemp(u->dir)) {
        snprintf(why, why_size, "mkdtemp: %s", strerror(errno));
        u->dir[0] = '\0';
        return -1;
    }
    /* nginx's workers run as another user when started by root */
    chmod(u->dir, 0755);
    snprintf(path, sizeof path, "%s/tmp", u->dir);
    mkdir(path, 0700);
    chmod(path, 0777);
    body = bench_stream_body(&len);
    snprintf(path, sizeof path, "%s/stream.sse", u->dir);
    if (write_file(path, body, len) != 0 || chmod(path, 0644) != 0) {
        snprintf(why, why_size, "cannot write %s", path);
        return -1;
    }
    snprintf(u->log_path, sizeof u->log_path, "%s/access.log", u->dir);
    for (tries = 0; tries < 3; tries++) {
        pid_t pid;
        if ((port = free_port()) < 0)
            break;
        free(conf);
        if ((conf = fill(NGINX_CONF, u->dir, port)) == NULL)
            break;
        snprintf(path, sizeof path, "%s/nginx.conf", u->dir);
        if (write_file(path, conf, strlen(conf)) != 0)
            break;
        pid = fork();
        if (pid < 0)
            break;
        if (pid == 0) {
            char err[256], out[256];
            int fd;
            prctl(PR_SET_PDEATHSIG, SIGTERM);
            snprintf(out, sizeof out, "%s/stderr", u->dir);
            fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
            if (fd >= 0) {
                dup2(fd, 1);
                dup2(fd, 2);
            }
            snprintf(err, sizeof err, "%s/error.log", u->dir);
            execl(nginx, nginx, "-p", u->dir, "-c", path, "-e", err, (char *)NULL);
            _exit(127);
        }
        for (i = 0; i < 200; i++) {
            int st;
            if (waitpid(pid, &st, WNOHANG) == pid) {
                pid = -1;
                break;
            }
            if (can_connect(port)) {
                u->pid = pid;
                free(conf);
                set_urls(u, port);
                nginx_version(nginx, u->dir, u->kind, sizeof u->kind);
                return 0;
            }
            sleep_ms(25);
        }
        if (pid > 0) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
        }
    }
    free(conf);
    snprintf(why, why_size, "nginx did not start (see %s/stderr and error.log)", u->dir);
    return -1;
}

/* ---- the mock provider, forked ---- */

static void mock_child(int port_fd, int ctl_fd)
{
    const char *chunks[2] = {NULL, NULL};
    mockprov_rule rl;
    mockprov *mp;
    char c;
    int port;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    mp = mockprov_start(0);
    port = mp ? mockprov_port(mp) : -1;
    if (mp) {
        memset(&rl, 0, sizeof rl);
        rl.key = BENCH_KEY_LIMITED;
        rl.status = 429;
        rl.headers = "Retry-After: 30\r\n";
        rl.body = LIMITED_JSON;
        mockprov_add_rule(mp, &rl);
        memset(&rl, 0, sizeof rl);
        chunks[0] = bench_stream_body(NULL);
        rl.key = BENCH_KEY_STREAM;
        rl.action = MOCKPROV_STREAM;
        rl.status = 200;
        rl.chunks = chunks;
        mockprov_add_rule(mp, &rl);
        memset(&rl, 0, sizeof rl);
        rl.body = CHAT_JSON;
        mockprov_add_rule(mp, &rl);
    }
    if (write(port_fd, &port, sizeof port) != (ssize_t)sizeof port)
        _exit(1);
    close(port_fd);
    /* until the parent closes its end (or dies) */
    for (;;) {
        ssize_t r = read(ctl_fd, &c, 1);
        if (r == 0 || (r < 0 && errno != EINTR))
            break;
    }
    mockprov_stop(mp);
    _exit(0);
}

static int start_mock(bench_upstream *u, char *why, size_t why_size)
{
    int port_pipe[2], ctl_pipe[2], port = -1;
    pid_t pid;
    if (pipe(port_pipe) != 0 || pipe(ctl_pipe) != 0) {
        snprintf(why, why_size, "pipe: %s", strerror(errno));
        return -1;
    }
    pid = fork();
    if (pid < 0) {
        snprintf(why, why_size, "fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        close(port_pipe[0]);
        close(ctl_pipe[1]);
        mock_child(port_pipe[1], ctl_pipe[0]);
    }
    close(port_pipe[1]);
    close(ctl_pipe[0]);
    if (read(port_pipe[0], &port, sizeof port) != (ssize_t)sizeof port || port <= 0) {
        close(port_pipe[0]);
        close(ctl_pipe[1]);
        waitpid(pid, NULL, 0);
        snprintf(why, why_size, "the mock provider did not start");
        return -1;
    }
    close(port_pipe[0]);
    u->pid = pid;
    u->ctl_fd = ctl_pipe[1];
    set_urls(u, port);
    snprintf(u->kind, sizeof u->kind, "mock provider (examples/mockprov.c, forked process)");
    return 0;
}

/* ---- the interface ---- */

int bench_upstream_start(bench_upstream *u, int force_mock, char *why, size_t why_size)
{
    const char *nginx = force_mock ? NULL : find_nginx();
    memset(u, 0, sizeof *u);
    u->ctl_fd = -1;
    why[0] = '\0';
    if (nginx && start_nginx(u, nginx, why, why_size) == 0)
        return 0;
    if (nginx) {
        fprintf(stderr, "bench: %s; falling back to the mock provider\n", why);
        bench_upstream_stop(u);
        memset(u, 0, sizeof *u);
        u->ctl_fd = -1;
    }
    return start_mock(u, why, why_size);
}

/* Lines of the access log ("MARKER STATUS") that begin with "limited " or
 * "counted ". */
long bench_upstream_requests(const bench_upstream *u)
{
    char line[256];
    long n = 0;
    FILE *f;
    if (!u->log_path[0] || (f = fopen(u->log_path, "r")) == NULL)
        return -1;
    while (fgets(line, sizeof line, f))
        n += strncmp(line, "limited ", 8) == 0 || strncmp(line, "counted ", 8) == 0;
    fclose(f);
    return n;
}

void bench_upstream_stop(bench_upstream *u)
{
    if (u->ctl_fd >= 0) {
        close(u->ctl_fd);
        u->ctl_fd = -1;
    }
    if (u->pid > 0) {
        int i;
        if (u->log_path[0])
            kill(u->pid, SIGTERM); /* nginx: fast shutdown of the workers too */
        for (i = 0; i < 100 && waitpid(u->pid, NULL, WNOHANG) == 0; i++)
            sleep_ms(20);
        if (i == 100) {
            kill(u->pid, SIGKILL);
            waitpid(u->pid, NULL, 0);
        }
        u->pid = 0;
    }
    if (u->dir[0] && !getenv("BENCH_KEEP")) {
        nftw(u->dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
        u->dir[0] = '\0';
    }
}
