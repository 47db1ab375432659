/*
 * render.h - internal to tests/support: renders a list of items (attempts,
 * skips, calls) as one string by a `fields` spec, the one mechanism behind
 * attempts_string, skips_string and calls_string.  Not for tests.
 */
#ifndef AIGW_TEST_RENDER_H
#define AIGW_TEST_RENDER_H

#include <stddef.h>

/* Writes field `name` of item i into out; -1 when there is no such field. */
typedef int (*render_field_fn)(const void *ctx, size_t i, const char *name, char *out,
                               size_t cap);

/* n items, space separated, each as fields says: runs of [a-z_] name a
 * field, any other character is copied.  Returns -1 (and renders "<name?>")
 * when a field is unknown, else 0. */
int render_items(char *buf, size_t size, size_t n, const char *fields, render_field_fn fn,
                 const void *ctx);

#endif
