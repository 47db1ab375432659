/* fuzz_config.c - the gateway file (lib/config.c) through the public API:
 * aigw_config_parse on the input, then what a caller does with a
 * configuration without sending anything - its accessors, a client made
 * from it (the libcurl transport is set up, never used; a Redis health
 * store is made, then dropped unconnected), a hot swap to the same
 * configuration, a health reset, a stats snapshot - and the frees.
 * The library has no separate "validate" entry point: `aigw validate` is
 * aigw_config_load_file, so the same bytes also go through it (from an
 * unlinked temporary file, opened again as /proc/self/fd/N) and must give
 * the same status and the same problems; its error accessors are walked
 * as the command walks them.
 *
 * Key values may come from {"valueFrom": {"env": NAME}}: AIGW_FUZZ_KEY is
 * set (to a dummy) for the seeds that use it.  {"valueFrom": {"file":
 * PATH}} makes the parse read PATH: an input naming a device, FIFO or
 * socket, or anything under /proc, /sys or /dev (but /dev/null, /dev/zero,
 * /dev/urandom) is skipped, so that the fuzzer cannot block on /dev/stdin
 * or /proc/kmsg.
 *
 * Checked (abort() on failure): a parse succeeds with a configuration or
 * fails with an error (ECONFIG/EIO/ENOMEM) holding at least one problem,
 * each with a path and a text, all valid UTF-8; the accessors agree with
 * the counts; each access key is found by its own value; every model
 * listed and the stats JSON are valid UTF-8, and the stats JSON parses.
 */
#define _XOPEN_SOURCE 700 /* realpath */
#include "internal.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_config: invariant violated: %s\n", what);
        abort();
    }
}

static bool utf8(const char *s)
{
    return s && aigw__utf8_valid(s, strlen(s));
}

static bool has_prefix(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* Whether reading path could block or touch the system: see the head. */
static bool unsafe_file(const char *path)
{
    char real[PATH_MAX];
    struct stat st;
    if (!realpath(path, real))
        return false; /* missing (or unreachable): the parse's open fails too */
    if (!strcmp(real, "/dev/null") || !strcmp(real, "/dev/zero") ||
        !strcmp(real, "/dev/urandom"))
        return false;
    if (has_prefix(real, "/proc/") || has_prefix(real, "/sys/") || has_prefix(real, "/dev/"))
        return true;
    return stat(real, &st) != 0 || !(S_ISREG(st.st_mode) || S_ISDIR(st.st_mode));
}

/* Any "file" member, at any depth, naming such a path. */
static bool names_unsafe_file(const cJSON *n)
{
    const cJSON *c;
    cJSON_ArrayForEach(c, n) {
        if (c->string && !strcmp(c->string, "file") && cJSON_IsString(c) &&
            unsafe_file(c->valuestring))
            return true;
        if (c->child && names_unsafe_file(c))
            return true;
    }
    return false;
}

static void check_error(aigw_status st, const aigw_error *err)
{
    size_t i, n;
    check(st == AIGW_ECONFIG || st == AIGW_EIO || st == AIGW_ENOMEM,
          "aigw_config_parse: unexpected status");
    check(err != NULL && aigw_error_code(err) == st, "an error without its object or code");
    check(utf8(aigw_error_message(err)), "error message missing or not UTF-8");
    n = aigw_error_count(err);
    check(n >= 1, "an error with no problem");
    for (i = 0; i < n; i++) {
        check(utf8(aigw_error_path(err, i)), "problem path missing or not UTF-8");
        check(utf8(aigw_error_problem(err, i)), "problem text missing or not UTF-8");
    }
    check(aigw_error_path(err, n) == NULL && aigw_error_problem(err, n) == NULL,
          "a problem past the count");
}

/* The path of an unlinked temporary file the bytes are written to for
 * aigw_config_load_file (nothing is left behind, however the process
 * ends); NULL when that cannot be set up (no /proc). */
static const char *scratch_file(int *fd_out)
{
    static char path[64];
    static int fd = -2;
    if (fd == -2) {
        /* tmpfs when there is one: a disk-backed file makes this 3x slower */
        char shm[] = "/dev/shm/aigw-fuzz-config-XXXXXX", tmp[] = "/tmp/aigw-fuzz-config-XXXXXX";
        char *tmpl = shm;
        struct stat st;
        if ((fd = mkstemp(shm)) < 0)
            fd = mkstemp(tmpl = tmp);
        if (fd >= 0) {
            unlink(tmpl);
            snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
            if (stat(path, &st) != 0) {
                close(fd);
                fd = -1;
            }
        }
    }
    *fd_out = fd;
    return fd >= 0 ? path : NULL;
}

/* aigw_config_load_file on the same bytes: the same outcome as the parse. */
static void check_load_file(const uint8_t *data, size_t size, aigw_status st,
                            const aigw_error *err)
{
    aigw_config *cfg = NULL;
    aigw_error *err2 = NULL;
    aigw_status st2;
    size_t i, n;
    int fd;
    const char *path = scratch_file(&fd);
    if (!path)
        return;
    check(ftruncate(fd, 0) == 0 && pwrite(fd, data, size, 0) == (ssize_t)size,
          "cannot write the scratch file");
    st2 = aigw_config_load_file(path, &cfg, &err2);
    check(st2 == st, "aigw_config_load_file and aigw_config_parse disagree");
    if (st2 == AIGW_OK) {
        aigw_config_unref(cfg);
        return;
    }
    n = aigw_error_count(err);
    check(aigw_error_count(err2) == n, "load_file and parse: problem counts differ");
    for (i = 0; i < n; i++)
        check(!strcmp(aigw_error_path(err, i), aigw_error_path(err2, i)) &&
                  !strcmp(aigw_error_problem(err, i), aigw_error_problem(err2, i)),
              "load_file and parse: problems differ");
    aigw_error_free(err2);
}

static int on_model(void *ud, const char *provider, const char *model)
{
    size_t *count = ud;
    check(utf8(provider) && utf8(model), "a listed model is not UTF-8");
    (*count)++;
    return 0;
}

static void check_config(aigw_config *cfg)
{
    size_t i, n = aigw_config_configuration_count(cfg), n_keys, count;
    const aigw_key_entry *keys;
    check(n >= 1 && n == cfg->n_akcs, "configuration count");
    for (i = 0; i < n; i++) {
        const char *name = aigw_config_configuration_name(cfg, i);
        check(utf8(name), "configuration name missing or not UTF-8");
        check(aigw__config_akc(cfg, name) != NULL, "a configuration not found by its name");
        count = 0;
        check(aigw_config_models(cfg, name[0] ? name : NULL, on_model, &count) == AIGW_OK,
              "aigw_config_models failed");
    }
    check(aigw_config_configuration_name(cfg, n) == NULL, "a configuration past the count");
    n = aigw_config_access_key_count(cfg);
    for (i = 0; i < n; i++) {
        const aigw_secret *v = &cfg->access_keys[i].value;
        int found;
        check(utf8(aigw_config_access_key_id(cfg, i)), "access key id missing or not UTF-8");
        check(utf8(aigw_config_access_key_configuration(cfg, i)),
              "access key configuration missing or not UTF-8");
        found = aigw_config_access_key_find(cfg, v->value, v->len);
        check(found >= 0 && (size_t)found < n &&
                  cfg->access_keys[found].value.len == v->len &&
                  memcmp(cfg->access_keys[found].value.value, v->value, v->len) == 0,
              "an access key not found by its value");
    }
    check(aigw_config_access_key_id(cfg, n) == NULL, "an access key past the count");
    check(aigw_config_access_key_find(cfg, "", 0) < 0, "the empty access key was found");
    keys = aigw__config_keys(cfg, &n_keys);
    for (i = 0; i < n_keys; i++)
        check(keys[i].provider && keys[i].id && keys[i].value, "a key entry with a NULL");
}

static void use_client(aigw_config *cfg)
{
    aigw_client *client = NULL;
    aigw_error *err = NULL;
    aigw_stats *stats = NULL;
    aigw_status st = aigw_client_new(cfg, &client, &err);
    if (st != AIGW_OK) {
        /* a bare configuration naming keys, or a Redis store without hiredis */
        check(client == NULL && err != NULL, "aigw_client_new failed without an error");
        check(utf8(aigw_error_message(err)), "client error message not UTF-8");
        aigw_error_free(err);
        return;
    }
    /* A Redis store (gatewayConfig.healthStore) connects at first use:
     * drop it before anything that would use it, so nothing goes out. */
    if (cfg->has_store)
        check(aigw_client_set_health_store(client, NULL, NULL) == AIGW_OK,
              "dropping the health store failed");
    check(aigw_client_set_config(client, cfg, &err) == AIGW_OK, "hot swap to the same config");
    check(aigw_client_reset_health(client, NULL) == AIGW_OK, "reset_health(NULL) failed");
    if (cfg->n_keys > 0)
        check(aigw_client_reset_health(client, cfg->keys[0].id) == AIGW_OK,
              "reset_health(a key id) failed");
    if (aigw_client_stats(client, &stats) == AIGW_OK) {
        const char *json = aigw_stats_json(stats);
        if (json) {
            cJSON *root = cJSON_Parse(json);
            check(utf8(json), "stats JSON not UTF-8");
            check(root != NULL, "stats JSON does not parse");
            cJSON_Delete(root);
        }
        aigw_stats_free(stats);
    }
    aigw_client_free(client);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool env_set;
    aigw_config *cfg = NULL;
    aigw_error *err = NULL;
    aigw_status st;
    cJSON *tree;

    if (!env_set) {
        setenv("AIGW_FUZZ_KEY", "fuzz-dummy-key-0123456789", 0);
        env_set = true;
    }
    /* the same parser the library uses (util.c) */
    tree = aigw__json_parse((const char *)data, size, NULL);
    if (tree && names_unsafe_file(tree)) {
        cJSON_Delete(tree);
        return 0;
    }
    cJSON_Delete(tree);

    st = aigw_config_parse((const char *)data, size, &cfg, &err);
    check_load_file(data, size, st, err);
    if (st != AIGW_OK) {
        check(cfg == NULL, "a failed parse gave a configuration");
        check_error(st, err);
        aigw_error_free(err);
        return 0;
    }
    check(cfg != NULL && err == NULL, "a parse succeeded without a configuration");
    check_config(cfg);
    use_client(cfg);
    check(aigw_config_unref(cfg) == NULL, "aigw_config_unref");
    return 0;
}
