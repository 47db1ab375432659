/* replay.c - runs a fuzz target's LLVMFuzzerTestOneInput on saved inputs,
 * without libFuzzer: what the normal test suite does with the committed
 * corpora (tests/fuzz/meson.build), under whatever sanitizers the build has.
 *
 *   fuzz-replay-<target> PATH...
 *
 * A file is one input; a directory gives each file in it and in its
 * subdirectories one level down, in name order (names starting with '.'
 * skipped).  Each input gets a buffer of exactly its size, as under
 * libFuzzer, so a read past its end is an ASan report.  Prints "replayed N
 * inputs"; exits 0, or 1 when a path cannot be read (a test that replays
 * nothing because its corpus went missing must not pass). */
#include <dirent.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The whole file in a buffer of its size (NULL: error, printed). */
static uint8_t *read_all(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL, *grown;
    size_t len = 0, cap = 0, n;
    if (!f) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        return NULL;
    }
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 4096;
            if (!(grown = realloc(buf, cap)))
                goto fail;
            buf = grown;
        }
        n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0)
            break;
    }
    if (ferror(f))
        goto fail;
    fclose(f);
    /* exactly len bytes (at least 1 for malloc), so overreads are caught */
    grown = malloc(len ? len : 1);
    if (!grown) {
        free(buf);
        fprintf(stderr, "replay: out of memory\n");
        return NULL;
    }
    if (len)
        memcpy(grown, buf, len);
    free(buf);
    *size = len;
    return grown;
fail:
    fprintf(stderr, "replay: %s: cannot read\n", path);
    free(buf);
    fclose(f);
    return NULL;
}

static int run_file(const char *path, long *count)
{
    size_t size = 0;
    uint8_t *data = read_all(path, &size);
    if (!data)
        return -1;
    LLVMFuzzerTestOneInput(data, size);
    free(data);
    (*count)++;
    return 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The entries of dir, sorted (NULL and *n 0 when empty). */
static char **list_dir(const char *dir, size_t *n, int *rc)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char **names = NULL, **grown;
    size_t cap = 0;
    *n = 0;
    if (!d) {
        fprintf(stderr, "replay: %s: %s\n", dir, strerror(errno));
        *rc = -1;
        return NULL;
    }
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 64;
            if (!(grown = realloc(names, cap * sizeof *names)))
                break;
            names = grown;
        }
        if (!(names[*n] = strdup(e->d_name)))
            break;
        (*n)++;
    }
    closedir(d);
    if (*n)
        qsort(names, *n, sizeof *names, by_name);
    return names;
}

/* Files of path; directories down to depth 1 below it. */
static int run_path(const char *path, int depth, long *count)
{
    struct stat st;
    char **names, *child;
    size_t n, i;
    int rc = 0;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode))
        return run_file(path, count);
    if (depth > 1)
        return 0;
    names = list_dir(path, &n, &rc);
    for (i = 0; i < n; i++) {
        size_t len = strlen(path) + strlen(names[i]) + 2;
        if ((child = malloc(len)) != NULL) {
            snprintf(child, len, "%s/%s", path, names[i]);
            if (run_path(child, depth + 1, count) != 0)
                rc = -1;
            free(child);
        } else {
            rc = -1;
        }
        free(names[i]);
    }
    free(names);
    return rc;
}

int main(int argc, char **argv)
{
    long count = 0;
    int i, rc = 0;
    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE|DIR...\n", argv[0]);
        return 2;
    }
    for (i = 1; i < argc; i++)
        if (run_path(argv[i], 0, &count) != 0)
            rc = 1;
    printf("replayed %ld inputs\n", count);
    return rc;
}
