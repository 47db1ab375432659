/*
 * serve.h - `aigw serve`'s server (serve.c) without its command line: the
 * same request handling, for a program that hands it connections itself
 * instead of listening.  tests/fuzz/fuzz_serve.c uses it: one end of an
 * AF_UNIX socketpair per input, an in-process transport on the client.
 * An example program's header, not part of libaigw.
 *
 * Threads: libmicrohttpd's, one per connection (as `aigw serve` runs);
 * serve_server_add_connection and serve_server_idle may be called from any
 * thread, the rest from one.
 */
#ifndef AIGW_SERVE_H
#define AIGW_SERVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "aigw.h"

/* The limits `aigw serve`'s options set. */
typedef struct serve_limits {
    size_t max_body;          /* --max-body */
    size_t max_header;        /* --max-header: libmicrohttpd's memory per connection */
    unsigned max_connections; /* --max-connections */
    unsigned max_concurrent;  /* --max-concurrent */
    unsigned idle_timeout_s;  /* --idle-timeout */
    int64_t drain_timeout_ms; /* --drain-timeout */
} serve_limits;

/* The command line's defaults (8m, 32k, 256, 64, 30 s, 30 s). */
void serve_limits_default(serve_limits *limits);

typedef struct serve_server serve_server;

/* Runs on libmicrohttpd's thread once a connection has closed, after its
 * last request was answered, counted and written to the access log. */
typedef void (*serve_closed_fn)(void *cls);

/* A server for cfg (it takes a reference; the caller keeps its own) with
 * those limits, writing its access log to log (borrowed: it must outlive
 * the server).  Its client is made here, with libcurl's transport; change
 * it through serve_server_client before serve_server_start_unbound.  NULL:
 * out of memory, or the client could not be made (*err then says why when
 * the library said). */
serve_server *serve_server_new(aigw_config *cfg, const serve_limits *limits, FILE *log,
                               aigw_error **err);

/* The server's client (borrowed; freed with the server). */
aigw_client *serve_server_client(serve_server *s);

/* Gives the server another client (it takes client and frees the one it
 * had); only while no request runs.  A harness gives each input a new one,
 * so that no input inherits another's key health, stats or retry budget. */
void serve_server_replace_client(serve_server *s, aigw_client *client);

/* Starts libmicrohttpd as `aigw serve` does (a thread per connection) but
 * with no listening socket and without the thread that cancels a whole
 * request once its client half-closes: connections come only from
 * serve_server_add_connection.  on_closed may be NULL.  0, or -1. */
int serve_server_start_unbound(serve_server *s, serve_closed_fn on_closed, void *cls);

/* Serves a connected stream socket (an AF_UNIX socketpair end is fine);
 * libmicrohttpd owns and closes fd, also when this fails.  0, or -1. */
int serve_server_add_connection(serve_server *s, int fd);

/* True when no request holds a --max-concurrent slot or runs through the
 * library: what must hold once every connection has closed. */
bool serve_server_idle(serve_server *s);

/* The connections libmicrohttpd holds: a closed one counts until its thread
 * has been joined and its memory freed, a little after serve_closed_fn. */
unsigned serve_server_connections(serve_server *s);

/* Stops libmicrohttpd (connections still open are cut) and frees the
 * server.  NULL is allowed. */
void serve_server_free(serve_server *s);

#endif
