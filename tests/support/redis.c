/*
 * redis.c - a real redis-server for the Redis health store's tests: spawned
 * on a free loopback port, waited for, killed, paused, restarted, and
 * looked at through a connection of its own (see redis.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "redis.h"
#include "support.h"

extern char **environ;

#define MAX_EXTRA 16
#define MAX_LIVE 16
#define READY_MS 5000

struct redis_server {
    pid_t pid; /* 0 when not running */
    int port;
    char url[64];
    char *extra[MAX_EXTRA + 1];
    const char *password; /* in extra: --requirepass's value */
    redisContext *c;      /* the helpers' own connection */
    long own_cmds;        /* commands sent on it (each one read event) */
    bool paused;
};

/* ---- no server left behind ---- */

static volatile pid_t live[MAX_LIVE];
static bool hooks_installed;
static pid_t owner; /* the process that started them (not a forked child) */

static void kill_live(void)
{
    int i;
    if (getpid() != owner)
        return;
    for (i = 0; i < MAX_LIVE; i++)
        if (live[i] > 0)
            kill(live[i], SIGKILL);
}

static void on_fatal(int sig)
{
    kill_live();
    signal(sig, SIG_DFL);
    raise(sig);
}

static void at_exit(void)
{
    int i;
    if (getpid() != owner)
        return;
    kill_live();
    for (i = 0; i < MAX_LIVE; i++)
        if (live[i] > 0) {
            waitpid(live[i], NULL, 0);
            live[i] = 0;
        }
}

static void install_hooks(void)
{
    static const int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGABRT, SIGPIPE};
    size_t i;
    if (hooks_installed)
        return;
    hooks_installed = true;
    owner = getpid();
    atexit(at_exit);
    for (i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        struct sigaction old, sa;
        if (sigaction(sigs[i], NULL, &old) != 0 || old.sa_handler != SIG_DFL)
            continue; /* the program's own (or a sanitizer's) handler stays */
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_fatal;
        sigemptyset(&sa.sa_mask);
        sigaction(sigs[i], &sa, NULL);
    }
}

static void track(pid_t pid, pid_t was)
{
    int i;
    for (i = 0; i < MAX_LIVE; i++)
        if (live[i] == was) {
            live[i] = pid;
            return;
        }
}

/* ---- spawning ---- */

static int free_port(void)
{
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;
    if (fd < 0)
        return -1;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static void drop_conn(redis_server *s)
{
    if (s->c) {
        redisFree(s->c);
        s->c = NULL;
    }
}

/* Whether the server answers PING (an error such as NOAUTH counts: it is
 * up), on a connection of its own. */
static bool answers(const redis_server *s)
{
    struct timeval tv = {0, 200 * 1000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", s->port, tv);
    redisReply *r;
    bool up = false;
    if (!c)
        return false;
    if (!c->err && redisSetTimeout(c, tv) == REDIS_OK && (r = redisCommand(c, "PING")) != NULL) {
        up = true;
        freeReplyObject(r);
    }
    redisFree(c);
    return up;
}

/* Spawns redis-server on s->port and waits until it answers: 0; -1 when it
 * exited (the port was taken, ...) or did not answer; -2 when it could not
 * be run (not installed). */
static int spawn(redis_server *s)
{
    char port[16];
    const char *argv[32];
    posix_spawn_file_actions_t fa;
    int n = 0, i, rc;
    int64_t deadline;
    pid_t pid;
    snprintf(port, sizeof port, "%d", s->port);
    argv[n++] = "redis-server";
    argv[n++] = "--port";
    argv[n++] = port;
    argv[n++] = "--bind";
    argv[n++] = "127.0.0.1";
    argv[n++] = "--save";
    argv[n++] = "";
    argv[n++] = "--appendonly";
    argv[n++] = "no";
    argv[n++] = "--daemonize";
    argv[n++] = "no";
    argv[n++] = "--loglevel";
    argv[n++] = "warning";
    for (i = 0; s->extra[i]; i++)
        argv[n++] = s->extra[i];
    argv[n] = NULL;

    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    /* posix_spawnp's argv is char *const[]: it does not write to it */
    rc = posix_spawnp(&pid, "redis-server", &fa, NULL, (char *const *)(void *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
        fprintf(stderr, "redis.c: cannot run redis-server: %s%s\n", strerror(rc),
                rc == ENOENT ? " (not on PATH: apt-get install redis-server)" : "");
        return -2;
    }
    s->pid = pid;
    track(pid, 0);
    deadline = now_ms() + READY_MS;
    for (;;) {
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            track(0, pid);
            s->pid = 0;
            return -1; /* exited: the port was taken, a bad argument, ... */
        }
        if (answers(s))
            return 0;
        if (now_ms() >= deadline) {
            fprintf(stderr, "redis.c: redis-server on port %d did not answer PING within %d ms\n",
                    s->port, READY_MS);
            redis_server_kill(s);
            return -1;
        }
        sleep_ms(20);
    }
}

redis_server *redis_server_start(const char *const *extra)
{
    redis_server *s = calloc(1, sizeof *s);
    int i, attempt;
    if (!s)
        return NULL;
    install_hooks();
    for (i = 0; extra && extra[i]; i++) {
        if (i == MAX_EXTRA) {
            fprintf(stderr, "redis.c: more than %d extra arguments\n", MAX_EXTRA);
            redis_server_stop(s);
            return NULL;
        }
        s->extra[i] = strdup(extra[i]);
        if (i > 0 && strcmp(extra[i - 1], "--requirepass") == 0)
            s->password = s->extra[i];
    }
    /* another program may take the free port before redis-server binds it */
    for (attempt = 0; attempt < 5; attempt++) {
        if ((s->port = free_port()) < 0)
            break;
        int rc = spawn(s);
        if (rc == 0) {
            snprintf(s->url, sizeof s->url, "redis://127.0.0.1:%d/0", s->port);
            return s;
        }
        if (rc == -2)
            break; /* spawn said why; it does not come back */
    }
    fprintf(stderr, "redis.c: could not start redis-server (is it installed?)\n");
    redis_server_stop(s);
    return NULL;
}

void redis_server_kill(redis_server *s)
{
    if (!s)
        return;
    drop_conn(s);
    if (s->pid > 0) {
        kill(s->pid, SIGKILL);
        waitpid(s->pid, NULL, 0);
        track(0, s->pid);
        s->pid = 0;
    }
    s->paused = false;
}

int redis_server_restart(redis_server *s)
{
    int attempt;
    redis_server_kill(s);
    /* the port was freed by the kill; allow a moment for it to be bindable */
    for (attempt = 0; attempt < 10; attempt++) {
        int rc = spawn(s);
        if (rc == 0)
            return 0;
        if (rc == -2)
            break;
        sleep_ms(50);
    }
    return -1;
}

void redis_server_stop(redis_server *s)
{
    int i;
    if (!s)
        return;
    redis_server_kill(s);
    for (i = 0; i < MAX_EXTRA; i++)
        free(s->extra[i]);
    free(s);
}

void redis_server_pause(redis_server *s)
{
    if (s->pid > 0 && kill(s->pid, SIGSTOP) == 0)
        s->paused = true;
}

void redis_server_resume(redis_server *s)
{
    if (s->pid > 0 && kill(s->pid, SIGCONT) == 0)
        s->paused = false;
}

const char *redis_server_url(const redis_server *s)
{
    return s->url;
}

int redis_server_port(const redis_server *s)
{
    return s->port;
}

/* ---- the helpers' connection ---- */

static int own_conn(redis_server *s)
{
    struct timeval tv = {2, 0};
    if (s->c)
        return 0;
    s->c = redisConnectWithTimeout("127.0.0.1", s->port, tv);
    if (!s->c || s->c->err || redisSetTimeout(s->c, tv) != REDIS_OK) {
        drop_conn(s);
        return -1;
    }
    if (s->password) {
        redisReply *r = redisCommand(s->c, "AUTH %s", s->password);
        s->own_cmds++;
        if (!r || r->type == REDIS_REPLY_ERROR) {
            if (r)
                freeReplyObject(r);
            drop_conn(s);
            return -1;
        }
        freeReplyObject(r);
    }
    return 0;
}

static redisReply *vcmd(redis_server *s, const char *fmt, va_list ap)
{
    int attempt;
    for (attempt = 0; attempt < 2; attempt++) {
        va_list aq;
        redisReply *r;
        if (own_conn(s) != 0)
            return NULL;
        va_copy(aq, ap);
        r = redisvCommand(s->c, fmt, aq);
        va_end(aq);
        s->own_cmds++;
        if (r)
            return r;
        drop_conn(s); /* a connection the server closed (restarted): again */
    }
    return NULL;
}

redisReply *redis_cmd(redis_server *s, const char *fmt, ...)
{
    va_list ap;
    redisReply *r;
    va_start(ap, fmt);
    r = vcmd(s, fmt, ap);
    va_end(ap);
    return r;
}

long long redis_int(redis_server *s, const char *fmt, ...)
{
    va_list ap;
    redisReply *r;
    long long v = -999999;
    va_start(ap, fmt);
    r = vcmd(s, fmt, ap);
    va_end(ap);
    if (r && r->type == REDIS_REPLY_INTEGER)
        v = r->integer;
    if (r)
        freeReplyObject(r);
    return v;
}

void redis_ok(redis_server *s, const char *fmt, ...)
{
    va_list ap;
    redisReply *r;
    bool ok;
    va_start(ap, fmt);
    r = vcmd(s, fmt, ap);
    va_end(ap);
    ok = r && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "OK") == 0;
    if (!ok)
        fail_msg("redis: %s: %s", fmt,
                 !r ? "no answer" : r->type == REDIS_REPLY_ERROR ? r->str : "not OK");
    freeReplyObject(r);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void redis_keys(redis_server *s, const char *pattern, char *buf, size_t size)
{
    redisReply *r = redis_cmd(s, "KEYS %s", pattern);
    char **v;
    size_t i, len = 0;
    buf[0] = '\0';
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        snprintf(buf, size, "(no answer)");
        if (r)
            freeReplyObject(r);
        return;
    }
    v = calloc(r->elements + 1, sizeof *v);
    for (i = 0; v && i < r->elements; i++)
        v[i] = r->element[i]->str;
    if (v)
        qsort(v, r->elements, sizeof *v, cmp_str);
    for (i = 0; v && i < r->elements; i++) {
        int w = snprintf(buf + len, size - len, "%s%s", i ? " " : "", v[i]);
        if (w < 0 || (size_t)w >= size - len)
            break;
        len += (size_t)w;
    }
    free(v);
    freeReplyObject(r);
}

/* The number after `field` in an INFO section's text, or -1. */
static long info_field(redis_server *s, const char *section, const char *field)
{
    redisReply *r = redis_cmd(s, "INFO %s", section);
    long v = -1;
    const char *p;
    if (r && r->type == REDIS_REPLY_STRING && (p = strstr(r->str, field)) != NULL)
        v = strtol(p + strlen(field), NULL, 10);
    if (r)
        freeReplyObject(r);
    return v;
}

long redis_calls(redis_server *s, const char *command)
{
    char field[64];
    long v;
    snprintf(field, sizeof field, "cmdstat_%s:calls=", command);
    v = info_field(s, "commandstats", field);
    return v < 0 ? 0 : v; /* a command that never ran has no line */
}

long redis_reads(redis_server *s)
{
    long v = info_field(s, "stats", "total_reads_processed:");
    return v < 0 ? -1 : v - s->own_cmds;
}

void redis_flush(redis_server *s)
{
    redis_ok(s, "FLUSHALL");
}
