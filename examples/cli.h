/*
 * cli.h - what the aigw command's parts share (aigw.c, serve.c).  An
 * example program's header, not part of libaigw.
 */
#ifndef AIGW_CLI_H
#define AIGW_CLI_H

#include "aigw.h"

#define EXIT_FAILED 1
#define EXIT_USAGE 2

/* Loads a gateway file ("-": stdin); NULL after printing its problems on
 * stderr ("JSON.path: problem", or "FILE: problem"). */
aigw_config *cli_load_config(const char *file);

/* "aigw: <message>" and a pointer to --help on stderr; returns EXIT_USAGE. */
int cli_usage_error(const char *fmt, const char *arg);

/* aigw serve (serve.c) */
extern const char USAGE_SERVE[];
int cmd_serve(int argc, char **argv);

#endif
