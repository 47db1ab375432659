/* fuzz_body.c - the request body reader and rewriter (lib/body.c) on the
 * input as a request body (in a buffer of exactly its size):
 * aigw__body_models, aigw__body_rewrite, aigw__body_splice and
 * aigw__body_wants_stream, each new "model" written in three ways (plain,
 * one that needs escapes, and the body's own first fallback model).
 *
 * Checked (abort() on failure):
 * - return codes are in range; a refusal says why;
 * - any rewrite that succeeds is a JSON object of valid UTF-8 with nothing
 *   after it;
 * - for a body aigw__body_models accepts (the engine's path): the rewrite
 *   succeeds, aigw__body_splice gives the same bytes, the rewritten body
 *   reads back with the new model and no fallback list, asks for a stream
 *   exactly when the original does, and holds the original's members in
 *   order (cJSON's view, printed) minus "models", with every "model"
 *   replaced; aigw__body_wants_stream agrees with cJSON's first "stream";
 * - aigw__body_models (which reads most bodies without cJSON) accepts a
 *   body exactly when cJSON's tree of it is a whole object (as the
 *   rewrite's validation says) with a non-empty string "model" and a
 *   "models" absent, null or of non-empty strings, and gives the tree's
 *   strings; the map it makes (aigw__body_read) splices to the same bytes
 *   as aigw__body_splice, and when it says a model leaves the body
 *   unchanged, the splice is the body itself.
 */
#include "internal.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_body: invariant violated: %s\n", what);
        abort();
    }
}

static bool first_stream_true(const cJSON *root)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "stream"));
}

static bool same_print(const cJSON *a, const cJSON *b)
{
    char *pa = cJSON_PrintUnformatted(a), *pb = cJSON_PrintUnformatted(b);
    bool same;
    check(pa && pb, "out of memory in the harness");
    same = strcmp(pa, pb) == 0;
    cJSON_free(pa);
    cJSON_free(pb);
    return same;
}

/* The rewritten object: the original's members in order, "models" gone,
 * each "model" now the new model. */
static void check_members(const cJSON *orig, const cJSON *out, const char *model)
{
    const cJSON *a = orig->child, *b = out->child;
    for (; a; a = a->next) {
        if (strcmp(a->string, "models") == 0)
            continue;
        check(b != NULL, "rewrite: a member went missing");
        check(strcmp(a->string, b->string) == 0, "rewrite: members out of order");
        if (strcmp(a->string, "model") == 0)
            check(cJSON_IsString(b) && strcmp(b->valuestring, model) == 0,
                  "rewrite: a \"model\" not replaced");
        else
            check(same_print(a, b), "rewrite: a member's value changed");
        b = b->next;
    }
    check(b == NULL, "rewrite: a member appeared");
}

/* A rewrite's output is a JSON object of valid UTF-8, nothing after it. */
static cJSON *parse_output(const aigw_buf *out)
{
    const char *end = NULL;
    cJSON *root;
    check(out->data != NULL, "rewrite: no output");
    check(aigw__utf8_valid(out->data, out->len), "rewrite: output not UTF-8");
    root = aigw__json_parse(out->data, out->len, &end);
    check(cJSON_IsObject(root), "rewrite: output not a JSON object");
    check(end && aigw__skip_ws(out->data, out->len, (size_t)(end - out->data)) == out->len,
          "rewrite: text after the object");
    return root;
}

static void rewrite_accepted(const char *body, size_t len, const cJSON *orig, const char *model)
{
    aigw_buf out = AIGW_BUF_INIT, spliced = AIGW_BUF_INIT;
    char *m2 = NULL, **ms2 = NULL, *why = NULL;
    size_t n2 = 0;
    cJSON *root;

    check(aigw__body_rewrite(body, len, model, &out) == 0, "rewrite refused an accepted body");
    check(aigw__body_splice(body, len, model, &spliced) == 0, "splice refused an accepted body");
    check(out.len == spliced.len && memcmp(out.data, spliced.data, out.len) == 0,
          "splice and rewrite differ");
    root = parse_output(&out);
    check_members(orig, root, model);
    cJSON_Delete(root);

    check(aigw__body_models(out.data, out.len, &m2, &ms2, &n2, &why) == 0,
          "the rewritten body is refused");
    check(strcmp(m2, model) == 0, "the rewritten body has another model");
    check(n2 == 0 && ms2 == NULL, "the rewritten body kept a fallback list");
    check(aigw__body_wants_stream(out.data, out.len) == aigw__body_wants_stream(body, len),
          "the rewrite changed \"stream\"");
    aigw__free(m2);
    aigw__strv_free(ms2, n2);
    aigw__buf_free(&out);
    aigw__buf_free(&spliced);
}

static bool nonempty(const cJSON *v)
{
    return cJSON_IsString(v) && v->valuestring && v->valuestring[0] != '\0';
}

/* What cJSON's tree says the model list is: whether the body is accepted,
 * and then the same strings. */
static void check_against_tree(const char *body, size_t size, int rc, const char *model,
                               char **models, size_t n_models)
{
    aigw_buf tmp = AIGW_BUF_INIT;
    bool valid = aigw__body_rewrite(body, size, "x", &tmp) == 0, ok;
    const cJSON *m, *ms, *v;
    cJSON *root;
    size_t i = 0;
    aigw__buf_free(&tmp);
    if (!valid) {
        check(rc != 0, "aigw__body_models accepted a body the rewrite refuses");
        return;
    }
    root = aigw__json_parse(body, size, NULL);
    check(cJSON_IsObject(root), "the rewrite accepted what cJSON does not read as an object");
    m = cJSON_GetObjectItemCaseSensitive(root, "model");
    ms = cJSON_GetObjectItemCaseSensitive(root, "models");
    ok = nonempty(m) && (!ms || cJSON_IsNull(ms) || cJSON_IsArray(ms));
    for (v = cJSON_IsArray(ms) ? ms->child : NULL; ok && v; v = v->next)
        ok = nonempty(v);
    check((rc == 0) == ok, "aigw__body_models disagrees with cJSON's tree");
    if (rc == 0) {
        check(strcmp(model, m->valuestring) == 0, "\"model\" differs from cJSON's");
        for (v = cJSON_IsArray(ms) ? ms->child : NULL; v; v = v->next, i++)
            check(i < n_models && strcmp(models[i], v->valuestring) == 0,
                  "\"models\" differs from cJSON's");
        check(i == n_models, "\"models\" has another length than cJSON's");
    }
    cJSON_Delete(root);
}

/* The map aigw__body_read made of an accepted body, against the scan. */
static void check_map(const char *body, size_t size, const char *model)
{
    aigw_body_map map;
    aigw_buf a = AIGW_BUF_INIT, b = AIGW_BUF_INIT;
    char *m = NULL, **ms = NULL;
    size_t n = 0;
    check(aigw__body_read(body, size, &map, &m, &ms, &n, NULL) == 0, "aigw__body_read refused");
    check(aigw__body_splice_map(body, size, &map, model, &a) == 0, "splice from the map failed");
    check(aigw__body_splice(body, size, model, &b) == 0, "splice failed");
    check(a.len == b.len && memcmp(a.data, b.data, a.len) == 0,
          "the map splices otherwise than the scan");
    if (aigw__body_unchanged(body, &map, model))
        check(a.len == size && memcmp(a.data, body, size) == 0, "\"unchanged\", yet changed");
    aigw__buf_free(&a);
    aigw__buf_free(&b);
    aigw__free(m);
    aigw__strv_free(ms, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const fixed[] = {"gpt-4o-mini", "m\"o\\d\x01" "el/\xc3\xa9\xe2\x80\xa8"};
    char *body = malloc(size ? size : 1), *model = NULL, **models = NULL, *why = NULL;
    size_t n_models = 0, i;
    aigw_buf out = AIGW_BUF_INIT;
    bool stream;
    int rc;

    check(body != NULL, "out of memory in the harness");
    if (size)
        memcpy(body, data, size);

    stream = aigw__body_wants_stream(body, size);
    rc = aigw__body_models(body, size, &model, &models, &n_models, &why);
    check(rc == 0 || rc == -1, "aigw__body_models: return code");
    check_against_tree(body, size, rc, model, models, n_models);
    if (rc == 0) {
        const char *end = NULL;
        cJSON *root = aigw__json_parse(body, size, &end);
        check(why == NULL, "accepted, with a reason");
        check(model && model[0], "accepted without a model");
        check((n_models == 0) == (models == NULL), "models list and count disagree");
        for (i = 0; i < n_models; i++)
            check(models[i] && models[i][0], "an empty fallback model");
        check(cJSON_IsObject(root), "accepted a body cJSON does not read as an object");
        for (i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
            rewrite_accepted(body, size, root, fixed[i]);
            check_map(body, size, fixed[i]);
        }
        check_map(body, size, model);
        if (n_models > 0 && aigw__utf8_valid(models[0], strlen(models[0])))
            rewrite_accepted(body, size, root, models[0]);
        check(stream == first_stream_true(root), "wants_stream disagrees with cJSON");
        cJSON_Delete(root);
    } else {
        check(why && why[0] && aigw__utf8_valid(why, strlen(why)), "refused without a reason");
        check(model == NULL && models == NULL && n_models == 0, "refused, with results");
    }
    aigw__free(model);
    aigw__strv_free(models, n_models);
    aigw__free(why);

    /* the same without a reason asked for */
    rc = aigw__body_models(body, size, &model, &models, &n_models, NULL);
    check(rc == 0 || rc == -1, "aigw__body_models (no why): return code");
    aigw__free(model);
    aigw__strv_free(models, n_models);

    /* any body: a rewrite that succeeds gives a JSON object */
    rc = aigw__body_rewrite(body, size, fixed[1], &out);
    check(rc == 0 || rc == -1, "aigw__body_rewrite: return code");
    if (rc == 0)
        cJSON_Delete(parse_output(&out));
    aigw__buf_free(&out);

    free(body);
    return 0;
}
