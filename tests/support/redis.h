/*
 * redis.h - a real redis-server for the tests of the Redis health store
 * (compiled into the support library only when hiredis is found).
 *
 * redis_server_start runs `redis-server` on a free loopback port, in the
 * foreground, saving nothing, its output to /dev/null, and waits (at most
 * about 5 s) until it answers PING.  Every server a test program starts is
 * killed when it exits, also through exit() after a failed test, and when it
 * dies of SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGPIPE or SIGABRT (a
 * sanitizer's abort): no redis-server is left behind.  A second
 * connection of the support code's own (redis_cmd and the helpers over it)
 * lets a test look at and tamper with what the store under test wrote.
 * Not thread-safe: one test thread.
 */
#ifndef AIGW_TEST_REDIS_H
#define AIGW_TEST_REDIS_H

#include <stdbool.h>
#include <stddef.h>

#include <hiredis/hiredis.h>

typedef struct redis_server redis_server;

/* Starts a server; extra: more redis-server arguments (NULL-terminated;
 * NULL for none), e.g. {"--requirepass", "pw", NULL}: the helpers' own
 * connection then authenticates with that password.  NULL (with a message
 * on stderr) when it did not start, e.g. redis-server is not installed. */
redis_server *redis_server_start(const char *const *extra);
/* SIGKILL and reap; the port is kept for redis_server_restart. */
void redis_server_kill(redis_server *s);
/* Starts it again, on the same port with the same arguments (empty: nothing
 * was saved); kills it first when running.  0, or -1. */
int redis_server_restart(redis_server *s);
/* Kills it and frees s (NULL is allowed). */
void redis_server_stop(redis_server *s);
/* SIGSTOP / SIGCONT: a server that accepts connections but never answers. */
void redis_server_pause(redis_server *s);
void redis_server_resume(redis_server *s);
/* "redis://127.0.0.1:PORT/0", and the port. */
const char *redis_server_url(const redis_server *s);
int redis_server_port(const redis_server *s);

/* One command on the helpers' own connection (made, and remade after a
 * failure, as needed; db 0 unless the test SELECTs another): its reply, to
 * freeReplyObject, or NULL when the server did not answer. */
redisReply *redis_cmd(redis_server *s, const char *fmt, ...);
/* An integer reply, or -999999 when the reply is anything else. */
long long redis_int(redis_server *s, const char *fmt, ...);
/* Fails the test unless the command answers OK. */
void redis_ok(redis_server *s, const char *fmt, ...);
/* The names matching pattern, sorted and space separated, into buf. */
void redis_keys(redis_server *s, const char *pattern, char *buf, size_t size);
/* How often a command ran ("get", "set", "eval", ...; INFO commandstats),
 * and the read events the server processed (INFO stats), this call's own
 * INFO excluded. */
long redis_calls(redis_server *s, const char *command);
long redis_reads(redis_server *s);
/* Drops every name of every database. */
void redis_flush(redis_server *s);

#endif
