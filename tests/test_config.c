/* test_config.c - the gateway file: ngrok's documented shapes, the parsed
 * structures, every problem at its path, secrets, allocation failures. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "internal.h"
#include "oom.h"

#define DOCS FIXTURES_DIR "/ngrok-docs"

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */
/* ------------------------------------------------------------------------ */

static void print_problems(const aigw_error *err)
{
    size_t i;
    for (i = 0; i < aigw_error_count(err); i++)
        print_message("  [%zu] %s: %s\n", i, aigw_error_path(err, i), aigw_error_problem(err, i));
}

static aigw_config *parse_ok(const char *json)
{
    aigw_config *cfg = NULL;
    aigw_error *err = (aigw_error *)1; /* must be reset to NULL */
    aigw_status st = aigw_config_parse(json, strlen(json), &cfg, &err);
    if (st != AIGW_OK) {
        print_message("config:\n%s\n", json);
        print_problems(err);
        fail_msg("parse failed: %s", aigw_error_message(err));
    }
    assert_null(err);
    assert_non_null(cfg);
    return cfg;
}

static aigw_error *parse_err(const char *json)
{
    aigw_config *cfg = (aigw_config *)1; /* must be reset to NULL */
    aigw_error *err = NULL;
    aigw_status st = aigw_config_parse(json, strlen(json), &cfg, &err);
    if (st != AIGW_ECONFIG)
        fail_msg("expected AIGW_ECONFIG, got %s for:\n%s", aigw_status_name(st), json);
    assert_null(cfg);
    assert_non_null(err);
    assert_int_equal(aigw_error_code(err), AIGW_ECONFIG);
    return err;
}

/* Some problem sits exactly at path and mentions text. */
static void has_problem(const aigw_error *err, const char *path, const char *text)
{
    size_t i;
    for (i = 0; i < aigw_error_count(err); i++)
        if (strcmp(aigw_error_path(err, i), path) == 0 && strstr(aigw_error_problem(err, i), text))
            return;
    print_problems(err);
    fail_msg("no problem at \"%s\" mentioning \"%s\"", path, text);
}

/* Exactly one problem, at path, mentioning text. */
static void only_problem(const char *json, const char *path, const char *text)
{
    aigw_error *err = parse_err(json);
    if (aigw_error_count(err) != 1) {
        print_problems(err);
        fail_msg("expected one problem, got %zu", aigw_error_count(err));
    }
    has_problem(err, path, text);
    aigw_error_free(err);
}

static void no_secret_in(const aigw_error *err, const char *secret)
{
    size_t i;
    assert_null(strstr(aigw_error_message(err), secret));
    for (i = 0; i < aigw_error_count(err); i++) {
        assert_null(strstr(aigw_error_path(err, i), secret));
        assert_null(strstr(aigw_error_problem(err, i), secret));
    }
}

static char *write_temp(const char *content, size_t len)
{
    char *path = strdup("/tmp/aigw-test-XXXXXX");
    int fd;
    assert_non_null(path);
    fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, content, len), (ssize_t)len);
    close(fd);
    return path;
}

static char *read_fixture(const char *name)
{
    char path[512];
    FILE *f;
    long n;
    char *s;
    snprintf(path, sizeof path, "%s/%s", DOCS, name);
    f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    s = malloc((size_t)n + 1);
    assert_non_null(s);
    assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = '\0';
    fclose(f);
    return s;
}

/* The catalog ids and a wrapper for gateway files around one AKC. */
#define AKC(rules) "{\"accessKeyConfiguration\":{\"name\":\"t\",\"router\":{\"rules\":[" rules "]}}}"
#define KEYS_OA_AN                                                                          \
    "\"providerKeys\":[{\"id\":\"oa\",\"providerId\":\"openai\",\"value\":\"sk-oa-1111\"},"  \
    "{\"id\":\"an\",\"providerId\":\"anthropic\",\"value\":\"sk-an-2222\"}]"

/* ------------------------------------------------------------------------ */
/* ngrok's documented bodies                                                */
/* ------------------------------------------------------------------------ */

static aigw_config *load_fixture(const char *name)
{
    char path[512];
    aigw_config *cfg = NULL;
    aigw_error *err = NULL;
    snprintf(path, sizeof path, "%s/%s", DOCS, name);
    if (aigw_config_load_file(path, &cfg, &err) != AIGW_OK) {
        print_problems(err);
        fail_msg("%s: %s", name, aigw_error_message(err));
    }
    assert_true(aigw_config_is_bare(cfg));
    return cfg;
}

/* Every access key configuration body in the docs validates as it is. */
static void test_every_akc_fixture(void **state)
{
    DIR *d = opendir(DOCS);
    struct dirent *de;
    int n = 0;
    (void)state;
    assert_non_null(d);
    while ((de = readdir(d)) != NULL) {
        if (!strstr(de->d_name, "-akc-"))
            continue;
        aigw_config_unref(load_fixture(de->d_name));
        n++;
    }
    closedir(d);
    assert_true(n >= 6);
}

static void test_fixture_01(void **state)
{
    aigw_config *cfg = load_fixture("01-akc-create-production-openai-byok.json");
    const aigw_step *st;
    (void)state;
    assert_string_equal(cfg->akcs[0].name, "Production OpenAI BYOK");
    assert_true(cfg->akcs[0].has_provider_allow);
    assert_int_equal(cfg->akcs[0].n_provider_allow, 1);
    assert_string_equal(cfg->akcs[0].provider_allow[0], "openai");
    assert_true(cfg->akcs[0].has_model_allow);
    assert_int_equal(cfg->akcs[0].n_model_allow, 1);
    assert_string_equal(cfg->akcs[0].model_allow[0], "openai/gpt-4o");
    assert_int_equal(cfg->akcs[0].n_rules, 1);
    assert_string_equal(cfg->akcs[0].rules[0].provider, "openai");
    assert_null(cfg->akcs[0].rules[0].model);
    assert_int_equal(cfg->akcs[0].rules[0].n_steps, 1);
    st = &cfg->akcs[0].rules[0].steps[0];
    assert_int_equal(st->type, AIGW_STEP_USER);
    assert_int_equal(st->strategy, AIGW_STRATEGY_ORDERED);
    assert_int_equal(st->n_keys, 1);
    assert_string_equal(st->keys[0].id, "aigpk_xxxxx");
    assert_false(st->keys[0].resolved); /* form only: no providerKeys here */
    assert_null(st->keys[0].value.value);
    assert_int_equal(cfg->n_keys, 0);
    /* The catalog is there all the same. */
    assert_int_equal(cfg->n_providers, aigw__catalog_count());
    aigw_config_unref(cfg);
}

static void test_fixture_others(void **state)
{
    aigw_config *cfg;
    (void)state;
    cfg = load_fixture("03-akc-router-single-user-key.json"); /* no name */
    assert_null(cfg->akcs[0].name);
    assert_false(cfg->akcs[0].has_provider_allow);
    assert_false(cfg->akcs[0].has_model_allow);
    assert_int_equal(cfg->akcs[0].rules[0].steps[0].n_keys, 1);
    aigw_config_unref(cfg);

    cfg = load_fixture("04-akc-create-openai-with-failover.json");
    assert_int_equal(cfg->akcs[0].rules[0].steps[0].n_keys, 2);
    assert_string_equal(cfg->akcs[0].rules[0].steps[0].keys[0].id, "aigpk_primary");
    assert_string_equal(cfg->akcs[0].rules[0].steps[0].keys[1].id, "aigpk_backup");
    aigw_config_unref(cfg);

    cfg = load_fixture("06-akc-openai-only-ngrok-step.json");
    assert_int_equal(cfg->akcs[0].rules[0].steps[0].type, AIGW_STEP_NGROK);
    assert_int_equal(cfg->akcs[0].rules[0].steps[0].n_keys, 0);
    assert_true(cfg->akcs[0].has_provider_allow);
    assert_false(cfg->akcs[0].has_model_allow);
    aigw_config_unref(cfg);

    cfg = load_fixture("08-akc-multi-provider-ngrok-steps.json");
    assert_int_equal(cfg->akcs[0].n_rules, 2);
    assert_string_equal(cfg->akcs[0].rules[1].provider, "anthropic");
    assert_int_equal(cfg->akcs[0].n_provider_allow, 2);
    aigw_config_unref(cfg);

    cfg = load_fixture("09-akc-access-providers-only.json"); /* no name, no router */
    assert_int_equal(cfg->akcs[0].n_rules, 0);
    assert_string_equal(cfg->akcs[0].provider_allow[1], "anthropic");
    aigw_config_unref(cfg);
}

/* The other documented bodies, each placed in a gateway file. */
static void test_fixture_resources_in_gateway_file(void **state)
{
    char *prov = read_fixture("16-api-custom-provider-create.json");
    char *key = read_fixture("14-api-provider-key-create.json");
    char *gw = read_fixture("17-api-gateway-config-patch.json");
    cJSON *root = cJSON_CreateObject(), *arr, *k = cJSON_Parse(key);
    char *json;
    aigw_config *cfg;
    const aigw_provider *p;
    (void)state;
    assert_non_null(k);
    cJSON_AddStringToObject(k, "id", "k1"); /* the local id a rule refers to */
    arr = cJSON_AddArrayToObject(root, "providers");
    cJSON_AddItemToArray(arr, cJSON_Parse(prov));
    arr = cJSON_AddArrayToObject(root, "providerKeys");
    cJSON_AddItemToArray(arr, k);
    cJSON_AddItemToObject(root, "gatewayConfig", cJSON_Parse(gw));
    json = cJSON_Print(root);
    cfg = parse_ok(json);
    p = aigw__config_provider(cfg, "my-ollama");
    assert_non_null(p);
    assert_string_equal(p->name, "Local Ollama");
    assert_string_equal(p->base_url, "https://my-ollama.internal");
    assert_true(p->custom);
    assert_int_equal(p->n_models, 1);
    assert_string_equal(p->models[0], "llama3.2");
    assert_string_equal(cfg->keys[0].name, "My OpenAI Key");
    assert_string_equal(cfg->keys[0].value.value, "sk-proj-...");
    assert_int_equal(cfg->total_timeout_ms, 120000);
    assert_int_equal(cfg->per_request_timeout_ms, 60000);
    aigw_config_unref(cfg);
    cJSON_free(json);
    cJSON_Delete(root);
    free(prov);
    free(key);
    free(gw);
}

/* ------------------------------------------------------------------------ */
/* A full gateway file                                                      */
/* ------------------------------------------------------------------------ */

static const char FULL_FMT[] =
    "{\n"
    "  \"providers\": [\n"
    "    {\"providerId\": \"my-ollama\", \"name\": \"Local Ollama\",\n"
    "     \"baseUrl\": \"http://127.0.0.1:11434/v1/\", \"metadata\": \"m\",\n"
    "     \"supportedApiSurfaces\": [{\"format\": \"openai\", \"surface\": \"chat-completions\"}],\n"
    "     \"models\": [{\"modelId\": \"llama3.2\"}, {\"modelId\": \"qwen3\"}]},\n"
    "    {\"providerId\": \"openai\", \"baseUrl\": \"https://openai-proxy.example.com/v1\"}\n"
    "  ],\n"
    "  \"providerKeys\": [\n"
    "    {\"id\": \"oa-1\", \"providerId\": \"openai\", \"name\": \"primary\",\n"
    "     \"value\": \"sk-inline-1111\"},\n"
    "    {\"id\": \"oa-2\", \"providerId\": \"openai\",\n"
    "     \"valueFrom\": {\"env\": \"AIGW_TEST_KEY_ENV\"}},\n"
    "    {\"id\": \"an-1\", \"providerId\": \"anthropic\", \"description\": \"d\",\n"
    "     \"metadata\": \"{\\\"team\\\":\\\"x\\\"}\", \"valueFrom\": {\"file\": \"%s\"}},\n"
    "    {\"id\": \"ol-1\", \"providerId\": \"my-ollama\", \"value\": \"ollama-key\"},\n"
    "    {\"id\": \"gm-1\", \"providerId\": \"gemini\", \"value\": \"AIza-gm\"}\n"
    "  ],\n"
    "  \"accessKeyConfiguration\": {\n"
    "    \"name\": \"Production\", \"description\": \"desc\", \"metadata\": \"meta\",\n"
    "    \"access\": {\"providers\": {\"allow\": [\"openai\", \"anthropic\", \"my-ollama\","
    " \"Gemini\"]},\n"
    "               \"models\": {\"allow\": []}},\n"
    "    \"router\": {\"rules\": [\n"
    "      {\"provider\": \"openai\", \"steps\": [\n"
    "        {\"type\": \"user\", \"keySelectionStrategy\": \"ordered\",\n"
    "         \"keys\": [{\"id\": \"oa-1\"}, {\"id\": \"oa-2\"}]},\n"
    "        {\"type\": \"user\", \"keySelectionStrategy\": \"weighted\",\n"
    "         \"keys\": [{\"name\": \"inline-1\", \"value\": \"sk-inline-9999\", \"weight\": 3},\n"
    "                  {\"id\": \"oa-1\", \"weight\": 0}]},\n"
    "        {\"type\": \"ngrok\"}]},\n"
    "      {\"model\": \"anthropic:claude-sonnet-4-5\",\n"
    "       \"steps\": [{\"type\": \"user\", \"keys\": [{\"id\": \"an-1\"}]}]},\n"
    "      {\"model\": \"gpt-4o-mini\", \"steps\": [{\"type\": \"user\", \"keys\": [{\"id\": \"oa-2\"}]}]},\n"
    "      {\"model\": \"openai:openai/gpt-4o\", \"steps\": [{\"type\": \"ngrok\"}]},\n"
    "      {\"model\": \"llama3.2\", \"steps\": [{\"type\": \"user\", \"keys\": [{\"id\": \"ol-1\"}]}]},\n"
    "      {\"provider\": \"groq\", \"model\": \"openai/gpt-oss-120b\", \"steps\": [{\"type\": \"ngrok\"}]},\n"
    "      {\"model\": \"google/gemini-2.5-pro\",\n"
    "       \"steps\": [{\"type\": \"user\", \"keys\": [{\"id\": \"gm-1\"}]}]}\n"
    "    ]}\n"
    "  },\n"
    "  \"gatewayConfig\": {\"totalTimeout\": \"2m30s\", \"perRequestTimeout\": \"45s\",\n"
    "    \"connectTimeout\": \"1.5s\", \"retryAfterMax\": \"0\", \"maxAttempts\": 7,\n"
    "    \"sameBackendRetries\": 0, \"maxResponseBytes\": 1048576, \"maxInputTokens\": 128000,\n"
    "    \"maxOutputTokens\": null, \"metadata\": \"gw\", \"keyCooldown\": \"1s\",\n"
    "    \"keyBenchTime\": \"10m\", \"circuitBreaker\": {\"failures\": 3},\n"
    "    \"retryBudget\": false},\n"
    "  \"ngrokAccessKey\": {\"valueFrom\": {\"env\": \"AIGW_TEST_NGROK_KEY\"}},\n"
    "  \"ngrokGatewayUrl\": \"https://gateway.example.ai/v1/\"\n"
    "}\n";

static char *key_file;
static char full_json[8192];

static int full_setup(void **state)
{
    (void)state;
    key_file = write_temp("sk-ant-from-file\r\n", 18);
    setenv("AIGW_TEST_KEY_ENV", "sk-from-env-2222", 1);
    setenv("AIGW_TEST_NGROK_KEY", "ng-key-3333", 1);
    snprintf(full_json, sizeof full_json, FULL_FMT, key_file);
    return 0;
}

static int full_teardown(void **state)
{
    (void)state;
    unlink(key_file);
    free(key_file);
    return 0;
}

static const aigw_step_key *rule_key(const aigw_config *cfg, size_t r, size_t s, size_t k)
{
    assert_true(r < cfg->akcs[0].n_rules);
    assert_true(s < cfg->akcs[0].rules[r].n_steps);
    assert_true(k < cfg->akcs[0].rules[r].steps[s].n_keys);
    return &cfg->akcs[0].rules[r].steps[s].keys[k];
}

static void test_full_providers(void **state)
{
    aigw_config *cfg = parse_ok(full_json);
    const aigw_provider *p;
    size_t i;
    (void)state;
    assert_false(aigw_config_is_bare(cfg));
    /* every catalog entry, plus the one new provider */
    assert_int_equal(cfg->n_providers, aigw__catalog_count() + 1);
    for (i = 0; i < aigw__catalog_count(); i++)
        assert_non_null(aigw__config_provider(cfg, aigw__catalog_at(i)->id));
    p = aigw__config_provider(cfg, "my-ollama");
    assert_string_equal(p->id, "my-ollama");
    assert_string_equal(p->base_url, "http://127.0.0.1:11434/v1"); /* '/' trimmed */
    assert_int_equal(p->native_auth, AIGW_AUTH_BEARER);
    assert_int_equal(p->n_models, 2);
    assert_string_equal(p->models[1], "qwen3");
    /* the override keeps the catalog's name and auth */
    p = aigw__config_provider(cfg, "openai");
    assert_string_equal(p->base_url, "https://openai-proxy.example.com/v1");
    assert_string_equal(p->name, "OpenAI");
    assert_true(p->custom);
    p = aigw__config_provider(cfg, "anthropic");
    assert_string_equal(p->base_url, "https://api.anthropic.com/v1");
    assert_int_equal(p->native_auth, AIGW_AUTH_X_API_KEY);
    assert_false(p->custom);
    /* ngrok's aliases, case-insensitive */
    assert_ptr_equal(aigw__config_provider(cfg, "gemini"), aigw__config_provider(cfg, "google"));
    assert_ptr_equal(aigw__config_provider(cfg, "OpenAI"), aigw__config_provider(cfg, "openai"));
    assert_null(aigw__config_provider(cfg, "nope"));
    assert_null(aigw__config_provider(cfg, NULL));
    assert_null(aigw__config_provider(NULL, "openai"));
    aigw_config_unref(cfg);
}

static void test_full_keys(void **state)
{
    aigw_config *cfg = parse_ok(full_json);
    (void)state;
    assert_int_equal(cfg->n_keys, 5);
    assert_string_equal(cfg->keys[0].id, "oa-1");
    assert_string_equal(cfg->keys[0].provider_id, "openai");
    assert_string_equal(cfg->keys[0].name, "primary");
    assert_string_equal(cfg->keys[0].value.value, "sk-inline-1111");
    assert_int_equal(cfg->keys[0].value.len, 14);
    assert_null(cfg->keys[1].name);
    assert_string_equal(cfg->keys[1].value.value, "sk-from-env-2222");
    /* trailing CR/LF of the file trimmed */
    assert_string_equal(cfg->keys[2].value.value, "sk-ant-from-file");
    assert_int_equal(cfg->keys[2].value.len, 16);
    assert_string_equal(cfg->keys[4].provider_id, "google"); /* alias resolved */
    assert_true(cfg->has_ngrok_key);
    assert_string_equal(cfg->ngrok_key.value, "ng-key-3333");
    assert_string_equal(cfg->ngrok_gateway_url, "https://gateway.example.ai/v1");
    aigw_config_unref(cfg);
}

static void test_full_access_and_rules(void **state)
{
    aigw_config *cfg = parse_ok(full_json);
    const aigw_rule *r;
    const aigw_step_key *k;
    (void)state;
    assert_string_equal(cfg->akcs[0].name, "Production");
    assert_true(cfg->akcs[0].has_provider_allow);
    assert_int_equal(cfg->akcs[0].n_provider_allow, 4);
    assert_string_equal(cfg->akcs[0].provider_allow[3], "google"); /* "Gemini" canonicalised */
    assert_true(cfg->akcs[0].has_model_allow);                     /* [] = nothing allowed */
    assert_int_equal(cfg->akcs[0].n_model_allow, 0);
    assert_int_equal(cfg->akcs[0].n_rules, 7);

    r = &cfg->akcs[0].rules[0];
    assert_string_equal(r->provider, "openai");
    assert_null(r->model);
    assert_int_equal(r->n_steps, 3);
    assert_int_equal(r->steps[0].type, AIGW_STEP_USER);
    assert_int_equal(r->steps[0].n_keys, 2);
    k = rule_key(cfg, 0, 0, 1);
    assert_string_equal(k->id, "oa-2");
    assert_true(k->resolved);
    assert_string_equal(k->value.value, "sk-from-env-2222");
    /* a copy, not a borrowed pointer */
    assert_ptr_not_equal(k->value.value, cfg->keys[1].value.value);
    k = rule_key(cfg, 0, 1, 0); /* inline key */
    assert_string_equal(k->id, "inline-1");
    assert_true(k->resolved);
    assert_string_equal(k->value.value, "sk-inline-9999");
    assert_int_equal(k->value.len, 14);
    assert_int_equal(r->steps[2].type, AIGW_STEP_NGROK);
    assert_int_equal(r->steps[2].n_keys, 0);

    /* "anthropic:claude-sonnet-4-5": the provider from the prefix */
    r = &cfg->akcs[0].rules[1];
    assert_string_equal(r->provider, "anthropic");
    assert_string_equal(r->model, "claude-sonnet-4-5");
    assert_string_equal(rule_key(cfg, 1, 0, 0)->value.value, "sk-ant-from-file");
    /* a bare id: the catalog's prefixes */
    assert_string_equal(cfg->akcs[0].rules[2].provider, "openai");
    assert_string_equal(cfg->akcs[0].rules[2].model, "gpt-4o-mini");
    /* ngrok's "openai:openai/gpt-4o" names the provider twice */
    assert_string_equal(cfg->akcs[0].rules[3].provider, "openai");
    assert_string_equal(cfg->akcs[0].rules[3].model, "gpt-4o");
    /* a custom provider's declared model */
    assert_string_equal(cfg->akcs[0].rules[4].provider, "my-ollama");
    assert_string_equal(cfg->akcs[0].rules[4].model, "llama3.2");
    /* an explicit provider keeps the author of an author/model id */
    assert_string_equal(cfg->akcs[0].rules[5].provider, "groq");
    assert_string_equal(cfg->akcs[0].rules[5].model, "openai/gpt-oss-120b");
    /* "provider/model" */
    assert_string_equal(cfg->akcs[0].rules[6].provider, "google");
    assert_string_equal(cfg->akcs[0].rules[6].model, "gemini-2.5-pro");
    aigw_config_unref(cfg);
}

static void test_full_gateway_config(void **state)
{
    aigw_config *cfg = parse_ok(full_json);
    (void)state;
    assert_int_equal(cfg->total_timeout_ms, 150000);
    assert_int_equal(cfg->per_request_timeout_ms, 45000);
    assert_int_equal(cfg->connect_timeout_ms, 1500);
    assert_int_equal(cfg->retry_after_max_ms, 0);
    assert_int_equal(cfg->max_attempts, 7);
    assert_int_equal(cfg->same_backend_retries, 0);
    assert_int_equal(cfg->max_response_bytes, 1048576);
    assert_int_equal(cfg->health.cooldown_ms, 1000);
    assert_int_equal(cfg->health.cooldown_max_ms, 3600000);
    assert_int_equal(cfg->health.bench_ms, 600000);
    assert_int_equal(cfg->health.breaker_threshold, 3);
    assert_int_equal(cfg->health.breaker_cooloff_ms, 5000);
    assert_int_equal(cfg->health.probe_timeout_ms, 45000); /* perRequestTimeout */
    assert_false(cfg->health.budget_on);
    /* the weighted step */
    assert_int_equal(cfg->akcs[0].rules[0].steps[0].strategy, AIGW_STRATEGY_ORDERED);
    assert_int_equal(cfg->akcs[0].rules[0].steps[1].strategy, AIGW_STRATEGY_WEIGHTED);
    assert_int_equal(rule_key(cfg, 0, 0, 0)->weight, 1);
    assert_int_equal(rule_key(cfg, 0, 1, 0)->weight, 3);
    assert_int_equal(rule_key(cfg, 0, 1, 1)->weight, 0);
    assert_int_equal(cfg->akcs[0].rules[0].steps[1].turn, 0);
    aigw_config_unref(cfg);
}

static void test_defaults(void **state)
{
    aigw_config *cfg = parse_ok("{}");
    (void)state;
    assert_false(aigw_config_is_bare(cfg));
    assert_int_equal(cfg->per_request_timeout_ms, 60000);
    assert_int_equal(cfg->total_timeout_ms, 120000);
    assert_int_equal(cfg->connect_timeout_ms, 10000);
    assert_int_equal(cfg->retry_after_max_ms, 5000);
    assert_int_equal(cfg->max_attempts, 10);
    assert_int_equal(cfg->same_backend_retries, 2);
    assert_int_equal(cfg->max_response_bytes, 32 * 1024 * 1024);
    assert_int_equal(cfg->health.cooldown_ms, 2000);
    assert_int_equal(cfg->health.cooldown_max_ms, 3600000);
    assert_int_equal(cfg->health.bench_ms, 3600000);
    assert_int_equal(cfg->health.breaker_threshold, 5);
    assert_int_equal(cfg->health.breaker_cooloff_ms, 5000);
    assert_int_equal(cfg->health.probe_timeout_ms, 60000);
    assert_true(cfg->health.budget_on);
    assert_int_equal(cfg->health.budget_percent, 20);
    assert_int_equal(cfg->health.budget_min_per_sec, 10);
    assert_int_equal(cfg->health.budget_window_ms, 10000);
    assert_false(cfg->has_ngrok_key);
    assert_string_equal(cfg->ngrok_gateway_url, AIGW_NGROK_GATEWAY_URL);
    assert_int_equal(cfg->n_providers, aigw__catalog_count());
    assert_int_equal(cfg->akcs[0].n_rules, 0);
    assert_null(cfg->akcs[0].name);
    assert_false(cfg->akcs[0].has_provider_allow);
    aigw_config_unref(cfg);

    /* An AKC without router; a string ngrok key; whitespace around. */
    cfg = parse_ok(" \n{\"accessKeyConfiguration\":{\"name\":\"x\"},\"ngrokAccessKey\":\"ng-1\"}\r\n ");
    assert_string_equal(cfg->akcs[0].name, "x");
    assert_true(cfg->has_ngrok_key);
    assert_int_equal(cfg->ngrok_key.len, 4);
    aigw_config_unref(cfg);
}

/* ---- several access key configurations, access keys (aigw serve) ---- */

#define AKS_FILE                                                                               \
    "{\"providers\":[{\"providerId\":\"fake\",\"name\":\"F\",\"baseUrl\":\"http://127.0.0.1:9/v1\"," \
    "\"models\":[{\"modelId\":\"m1\"},{\"modelId\":\"m2\"}]}],"                                  \
    "\"providerKeys\":[{\"id\":\"p1\",\"providerId\":\"fake\",\"value\":\"sk-provider-1\"}],"     \
    "\"accessKeyConfiguration\":{\"name\":\"dev\",\"router\":{\"rules\":[{\"provider\":\"fake\"," \
    "\"steps\":[{\"type\":\"user\",\"keys\":[{\"id\":\"p1\"}]}]}]}},"                            \
    "\"accessKeyConfigurations\":[{\"name\":\"prod\",\"access\":{\"models\":{\"allow\":"         \
    "[\"fake:m2\",\"openai:gpt-4o\",\"gpt-*\"]}},\"router\":{\"rules\":[{\"model\":\"fake:m2\","  \
    "\"steps\":[{\"type\":\"user\",\"keys\":[{\"id\":\"p1\"}]}]}]}},{\"name\":\"empty\"}],"       \
    "\"accessKeys\":[{\"id\":\"team-a\",\"value\":\"ak-team-a-0123\",\"configuration\":\"prod\"}," \
    "{\"id\":\"team-b\",\"value\":\"ak-team-b-0123\",\"configuration\":\"dev\",\"description\":\"b\"}]}"

typedef struct listed {
    char text[512];
    int n;
    int stop_at;
} listed;

static int list_model(void *ud, const char *provider, const char *model)
{
    listed *l = ud;
    size_t len = strlen(l->text);
    snprintf(l->text + len, sizeof l->text - len, "%s%s:%s", l->n ? " " : "", provider, model);
    l->n++;
    return l->stop_at && l->n >= l->stop_at;
}

static void test_access_key_configurations(void **state)
{
    aigw_config *cfg = parse_ok(AKS_FILE);
    listed l;
    (void)state;
    assert_int_equal(aigw_config_configuration_count(cfg), 3);
    assert_string_equal(aigw_config_configuration_name(cfg, 0), "dev");
    assert_string_equal(aigw_config_configuration_name(cfg, 1), "prod");
    assert_string_equal(aigw_config_configuration_name(cfg, 2), "empty");
    assert_null(aigw_config_configuration_name(cfg, 3));
    assert_int_equal(aigw_config_access_key_count(cfg), 2);
    assert_string_equal(aigw_config_access_key_id(cfg, 0), "team-a");
    assert_string_equal(aigw_config_access_key_configuration(cfg, 0), "prod");
    assert_string_equal(aigw_config_access_key_id(cfg, 1), "team-b");
    assert_string_equal(aigw_config_access_key_configuration(cfg, 1), "dev");
    assert_null(aigw_config_access_key_id(cfg, 2));

    /* exact matches only: a prefix, an extension, a case change are none */
    assert_int_equal(aigw_config_access_key_find(cfg, "ak-team-a-0123", 14), 0);
    assert_int_equal(aigw_config_access_key_find(cfg, "ak-team-b-0123", 14), 1);
    assert_int_equal(aigw_config_access_key_find(cfg, "ak-team-b-012", 13), -1);
    assert_int_equal(aigw_config_access_key_find(cfg, "ak-team-b-01234", 15), -1);
    assert_int_equal(aigw_config_access_key_find(cfg, "AK-team-b-0123", 14), -1);
    assert_int_equal(aigw_config_access_key_find(cfg, "", 0), -1);
    assert_int_equal(aigw_config_access_key_find(cfg, NULL, 0), -1);
    assert_int_equal(aigw_config_access_key_find(NULL, "x", 1), -1);

    /* the models each offers: rules, custom providers' declared, allow-list
     * exact entries; each within its access scope */
    memset(&l, 0, sizeof l);
    assert_int_equal(aigw_config_models(cfg, NULL, list_model, &l), AIGW_OK);
    assert_string_equal(l.text, "fake:m1 fake:m2");
    memset(&l, 0, sizeof l);
    assert_int_equal(aigw_config_models(cfg, "prod", list_model, &l), AIGW_OK);
    assert_string_equal(l.text, "fake:m2 openai:gpt-4o");
    memset(&l, 0, sizeof l);
    l.stop_at = 1;
    assert_int_equal(aigw_config_models(cfg, "dev", list_model, &l), AIGW_OK);
    assert_string_equal(l.text, "fake:m1");
    assert_int_equal(aigw_config_models(cfg, "nope", list_model, &l), AIGW_EINVAL);
    assert_int_equal(aigw_config_models(cfg, NULL, NULL, &l), AIGW_EINVAL);
    aigw_config_unref(cfg);

    /* a file with none has one configuration, unnamed, and no access keys */
    cfg = parse_ok("{}");
    assert_int_equal(aigw_config_configuration_count(cfg), 1);
    assert_string_equal(aigw_config_configuration_name(cfg, 0), "");
    assert_int_equal(aigw_config_access_key_count(cfg), 0);
    assert_int_equal(aigw_config_access_key_find(cfg, "anything", 8), -1);
    aigw_config_unref(cfg);

    /* only the list: the first is the default; one configuration: an access
     * key need not name it */
    cfg = parse_ok("{\"accessKeyConfigurations\":[{\"name\":\"only\"}],"
                   "\"accessKeys\":[{\"id\":\"a\",\"value\":\"ak-0123456789\"}]}");
    assert_int_equal(aigw_config_configuration_count(cfg), 1);
    assert_string_equal(aigw_config_access_key_configuration(cfg, 0), "only");
    aigw_config_unref(cfg);
}

static void test_access_key_problems(void **state)
{
    aigw_error *err;
    (void)state;
    only_problem("{\"accessKeyConfiguration\":{\"name\":\"a\"},"
                 "\"accessKeyConfigurations\":[{\"name\":\"b\"},{\"name\":\"a\"}]}",
                 "accessKeyConfigurations[1].name", "duplicate name");
    only_problem("{\"accessKeyConfigurations\":[{\"name\":\"b\"},{\"name\":\"b\"}]}",
                 "accessKeyConfigurations[1].name", "duplicate name (also "
                 "accessKeyConfigurations[0])");
    only_problem("{\"accessKeyConfigurations\":[{\"router\":{}}]}",
                 "accessKeyConfigurations[0].name", "required");
    only_problem("{\"accessKeyConfigurations\":{}}", "accessKeyConfigurations", "expected an array");
    only_problem("{\"accessKeyConfigurations\":[{\"name\":\"a\"},{\"name\":\"b\"}],"
                 "\"accessKeys\":[{\"id\":\"k\",\"value\":\"ak-0123456789\"}]}",
                 "accessKeys[0].configuration", "required");
    only_problem("{\"accessKeyConfigurations\":[{\"name\":\"a\"}],"
                 "\"accessKeys\":[{\"id\":\"k\",\"value\":\"ak-0123456789\",\"configuration\":\"b\"}]}",
                 "accessKeys[0].configuration", "no access key configuration with this name");
    only_problem("{\"accessKeys\":[{\"id\":\"k\",\"value\":\"ak-0123456789\"},"
                 "{\"id\":\"k\",\"value\":\"ak-9876543210\"}]}",
                 "accessKeys[1].id", "duplicate id (also accessKeys[0])");
    only_problem("{\"accessKeys\":[{\"id\":\"k\",\"value\":\"ak-0123456789\"},"
                 "{\"id\":\"j\",\"value\":\"ak-0123456789\"}]}",
                 "accessKeys[1].value", "the same value as accessKeys[0]");
    only_problem("{\"accessKeys\":[{\"id\":\"k\",\"value\":\"short\"}]}", "accessKeys[0].value",
                 "too short");
    only_problem("{\"accessKeys\":[{\"id\":\"k\"}]}", "accessKeys[0]", "needs \"value\" or");
    only_problem("{\"accessKeys\":[{\"id\":\"k\",\"value\":\"ak-0123456789\",\"role\":\"x\"}]}",
                 "accessKeys[0].role", "unknown field");
    err = parse_err("{\"accessKeys\":[{\"id\":\"k\",\"value\":\"ak-secret\\r\\n\"},"
                    "{\"id\":\"j\",\"valueFrom\":{\"env\":\"AIGW_TEST_SURELY_UNSET\"}}]}");
    has_problem(err, "accessKeys[0].value", "control character");
    has_problem(err, "accessKeys[1].valueFrom.env", "");
    no_secret_in(err, "ak-secret");
    aigw_error_free(err);
}

static void test_refcount(void **state)
{
    aigw_config *cfg = parse_ok("{}");
    (void)state;
    assert_ptr_equal(aigw_config_ref(cfg), cfg);
    assert_int_equal(cfg->refs, 2);
    assert_null(aigw_config_unref(cfg));
    assert_int_equal(cfg->refs, 1);
    assert_null(aigw_config_unref(cfg)); /* freed here (ASan would see a leak otherwise) */
    assert_null(aigw_config_ref(NULL));
    assert_null(aigw_config_unref(NULL));
    assert_int_equal(aigw_config_is_bare(NULL), 0);
}

static void test_bare_specifics(void **state)
{
    aigw_config *cfg;
    (void)state;
    /* Inline keys hold their value even in a bare configuration; provider
     * ids unknown here may be providers of the ngrok account. */
    cfg = parse_ok("{\"router\":{\"rules\":["
                   "{\"provider\":\"openai\",\"steps\":[{\"type\":\"user\",\"keys\":"
                   "[{\"name\":\"k\",\"value\":\"sk-1\"},{\"id\":\"aigpk_1\"}]}]},"
                   "{\"provider\":\"aigp_123\",\"steps\":[{\"type\":\"user\",\"keys\":[{\"id\":\"x\"}]}]},"
                   "{\"model\":\"my-llm:llama3\",\"steps\":[{\"type\":\"ngrok\"}]}]}}");
    assert_true(aigw_config_is_bare(cfg));
    assert_true(cfg->akcs[0].rules[0].steps[0].keys[0].resolved);
    assert_string_equal(cfg->akcs[0].rules[0].steps[0].keys[0].value.value, "sk-1");
    assert_false(cfg->akcs[0].rules[0].steps[0].keys[1].resolved);
    assert_string_equal(cfg->akcs[0].rules[1].provider, "aigp_123");
    assert_string_equal(cfg->akcs[0].rules[2].provider, "my-llm");
    assert_string_equal(cfg->akcs[0].rules[2].model, "llama3");
    aigw_config_unref(cfg);

    /* The same rule in a full file: the provider must exist. */
    only_problem(AKC("{\"provider\":\"aigp_123\",\"steps\":[{\"type\":\"ngrok\"}]}"),
                 "accessKeyConfiguration.router.rules[0].provider", "no provider with this id");
    /* Bare paths are relative; a bare name, when there, is checked. */
    {
        aigw_error *err = parse_err("{\"name\":\"\",\"router\":{\"rules\":[{\"provider\":"
                                    "\"openai\",\"steps\":[]}]},\"bogus\":1}");
        assert_int_equal(aigw_error_count(err), 3);
        has_problem(err, "bogus", "unknown field");
        has_problem(err, "name", "must not be empty");
        has_problem(err, "router.rules[0].steps", "at least one step");
        aigw_error_free(err);
    }
}

/* ------------------------------------------------------------------------ */
/* The catalog                                                              */
/* ------------------------------------------------------------------------ */

static void test_catalog(void **state)
{
    static const char *const ids[] = {"openai", "anthropic", "google", "deepseek", "groq",
                                      "openrouter", "hyperbolic", "inference-net",
                                      "moonshotai", "z-ai"};
    static const struct {
        const char *model, *provider;
    } bare[] = {
        {"gpt-4o", "openai"},          {"GPT-4o-mini", "openai"},   {"o1", "openai"},
        {"o1-mini", "openai"},         {"o3-pro", "openai"},        {"o4-mini", "openai"},
        {"chatgpt-4o-latest", "openai"}, {"text-embedding-3-small", "openai"},
        {"dall-e-3", "openai"},        {"claude-sonnet-4-5", "anthropic"},
        {"gemini-2.5-pro", "google"},  {"gemma-3-27b", "google"},
        {"deepseek-chat", "deepseek"}, {"kimi-k2", "moonshotai"},
        {"moonshot-v1-8k", "moonshotai"}, {"glm-4.7", "z-ai"},
    };
    static const char *const unknown[] = {"o1x", "o5", "omni", "o", "llama3.2", "gpt",
                                          "claude", "meta-llama/llama-3", "openai/gpt-4o",
                                          "", "mistral-large"};
    size_t i;
    (void)state;
    assert_int_equal(aigw__catalog_count(), 10);
    for (i = 0; i < 10; i++) {
        const aigw_catalog_entry *e = aigw__catalog_at(i);
        size_t n = strlen(e->base_url);
        assert_string_equal(e->id, ids[i]);
        assert_ptr_equal(aigw__catalog_find(ids[i]), e);
        assert_true(strncmp(e->base_url, "https://", 8) == 0);
        assert_true(e->base_url[n - 1] != '/');
        assert_non_null(e->name);
        assert_non_null(e->prefixes);
    }
    assert_null(aigw__catalog_at(10));
    assert_string_equal(aigw__catalog_find("openai")->base_url, "https://api.openai.com/v1");
    assert_string_equal(aigw__catalog_find("z-ai")->base_url, "https://api.z.ai/api/paas/v4");
    assert_string_equal(aigw__catalog_find("google")->base_url,
                        "https://generativelanguage.googleapis.com/v1beta/openai");
    assert_int_equal(aigw__catalog_find("anthropic")->native_auth, AIGW_AUTH_X_API_KEY);
    assert_int_equal(aigw__catalog_find("google")->native_auth, AIGW_AUTH_GOOG_API_KEY);
    assert_int_equal(aigw__catalog_find("groq")->native_auth, AIGW_AUTH_BEARER);
    /* aliases */
    assert_string_equal(aigw__catalog_find("gemini")->id, "google");
    assert_string_equal(aigw__catalog_find("inference.net")->id, "inference-net");
    assert_string_equal(aigw__catalog_find("OpenAI")->id, "openai");
    assert_null(aigw__catalog_find("nope"));
    assert_null(aigw__catalog_find(NULL));
    for (i = 0; i < sizeof bare / sizeof bare[0]; i++) {
        const aigw_catalog_entry *e = aigw__catalog_for_model(bare[i].model);
        if (!e || strcmp(e->id, bare[i].provider) != 0)
            fail_msg("%s -> %s, want %s", bare[i].model, e ? e->id : "NULL", bare[i].provider);
    }
    for (i = 0; i < sizeof unknown / sizeof unknown[0]; i++)
        if (aigw__catalog_for_model(unknown[i]))
            fail_msg("%s matched %s", unknown[i], aigw__catalog_for_model(unknown[i])->id);
    assert_null(aigw__catalog_for_model(NULL));
}

/* ------------------------------------------------------------------------ */
/* Problems, each at its path                                               */
/* ------------------------------------------------------------------------ */

static void test_unknown_fields(void **state)
{
    (void)state;
    only_problem("{\"providers\":[],\"extra\":1}", "extra", "unknown field");
    only_problem(AKC("{\"provider\":\"openai\",\"steps\":[{\"type\":\"ngrok\",\"weight\":2}]}"),
                 "accessKeyConfiguration.router.rules[0].steps[0].weight", "unknown field");
    only_problem("{\"name\":\"x\",\"acess\":{}}", "acess", "unknown field (expected one of: name");
    only_problem("{\"gatewayConfig\":{\"timeout\":\"1s\"}}", "gatewayConfig.timeout",
                 "unknown field");
    only_problem("{\"providerKeys\":[{\"id\":\"a\",\"providerId\":\"openai\",\"value\":\"v\","
                 "\"keyRedacted\":\"x\"}]}",
                 "providerKeys[0].keyRedacted", "unknown field");
    {
        aigw_error *err = parse_err("{\"providerKeys\":[{\"id\":\"a\",\"providerId\":"
                                    "\"openai\",\"valueFrom\":{\"vault\":\"x\"}}]}");
        assert_int_equal(aigw_error_count(err), 2);
        has_problem(err, "providerKeys[0].valueFrom.vault",
                    "unknown field (expected one of: env, file)");
        has_problem(err, "providerKeys[0].valueFrom", "needs \"env\" or \"file\"");
        aigw_error_free(err);
    }
    /* A gateway member makes the whole file a gateway file. */
    only_problem("{\"providers\":[],\"name\":\"x\"}", "name", "unknown field");
    only_problem("{\"accessKeyConfiguration\":{\"name\":\"x\",\"name\":\"y\"}}",
                 "accessKeyConfiguration.name", "duplicate field");
}

static void test_unknown_key_id(void **state)
{
    aigw_error *err;
    (void)state;
    err = parse_err("{" KEYS_OA_AN ",\"accessKeyConfiguration\":{\"name\":\"t\",\"router\":"
                    "{\"rules\":[{\"provider\":\"openai\",\"steps\":[{\"type\":\"user\","
                    "\"keys\":[{\"id\":\"oa\"},{\"id\":\"missing\"}]}]}]}}}");
    assert_int_equal(aigw_error_count(err), 1);
    assert_string_equal(aigw_error_path(err, 0),
                        "accessKeyConfiguration.router.rules[0].steps[0].keys[1].id");
    assert_string_equal(aigw_error_problem(err, 0), "no provider key with this id");
    assert_string_equal(aigw_error_message(err),
                        "accessKeyConfiguration.router.rules[0].steps[0].keys[1].id: "
                        "no provider key with this id");
    aigw_error_free(err);
}

static void test_key_of_another_provider(void **state)
{
    aigw_error *err;
    (void)state;
    err = parse_err("{" KEYS_OA_AN ",\"accessKeyConfiguration\":{\"name\":\"t\",\"router\":"
                    "{\"rules\":[{\"provider\":\"openai\",\"steps\":[{\"type\":\"user\","
                    "\"keys\":[{\"id\":\"an\"}]}]}]}}}");
    assert_int_equal(aigw_error_count(err), 1);
    has_problem(err, "accessKeyConfiguration.router.rules[0].steps[0].keys[0].id",
                "is for provider 'anthropic', but this rule is for provider 'openai'");
    no_secret_in(err, "sk-an-2222");
    aigw_error_free(err);
    /* the provider inferred from a model rule counts as well */
    only_problem("{" KEYS_OA_AN ",\"accessKeyConfiguration\":{\"name\":\"t\",\"router\":"
                 "{\"rules\":[{\"model\":\"claude-opus-4-1\",\"steps\":[{\"type\":\"user\","
                 "\"keys\":[{\"id\":\"oa\"}]}]}]}}}",
                 "accessKeyConfiguration.router.rules[0].steps[0].keys[0].id",
                 "provider 'openai', but this rule is for provider 'anthropic'");
}

static void url_ok(const char *url, const char *want)
{
    char json[1024];
    aigw_config *cfg;
    snprintf(json, sizeof json, "{\"providers\":[{\"providerId\":\"p\",\"baseUrl\":\"%s\"}]}", url);
    cfg = parse_ok(json);
    assert_string_equal(aigw__config_provider(cfg, "p")->base_url, want);
    aigw_config_unref(cfg);
}

static void url_bad(const char *url, const char *text)
{
    char json[1024];
    snprintf(json, sizeof json, "{\"ngrokGatewayUrl\":\"%s\"}", url);
    only_problem(json, "ngrokGatewayUrl", text);
}

static void test_urls(void **state)
{
    (void)state;
    /* http to a non-loopback host */
    only_problem("{\"providers\":[{\"providerId\":\"p\",\"baseUrl\":\"http://api.example.com/v1\"}]}",
                 "providers[0].baseUrl", "loopback");
    url_ok("https://api.example.com/v1/", "https://api.example.com/v1");
    url_ok("https://api.example.com", "https://api.example.com");
    url_ok("HTTPS://Api.Example.com:8443/a/b//", "HTTPS://Api.Example.com:8443/a/b");
    url_ok("http://127.0.0.1:8080/v1", "http://127.0.0.1:8080/v1");
    url_ok("http://127.1.2.3/v1", "http://127.1.2.3/v1");
    url_ok("http://localhost:11434", "http://localhost:11434");
    url_ok("http://LOCALHOST/", "http://LOCALHOST");
    url_ok("http://[::1]:9000/v1", "http://[::1]:9000/v1");
    url_ok("https://[2001:db8::1]/v1", "https://[2001:db8::1]/v1");
    url_bad("http://128.0.0.1/v1", "loopback");
    url_bad("http://127.0.0.1.evil.com/v1", "loopback");
    url_bad("http://localhost.evil.com/", "loopback");
    url_bad("http://[::2]/", "loopback");
    url_bad("http://127.0.0.256/", "loopback");
    url_bad("ftp://example.com", "https://");
    url_bad("example.com/v1", "https://");
    url_bad("https://", "must have a host");
    url_bad("https:///v1", "must have a host");
    url_bad("https://:443/v1", "must have a host");
    url_bad("https://exa mple.com", "whitespace");
    url_bad("https://example.com/v1\\r\\n", "control characters");
    url_bad("https://example.com/v1 ", "whitespace");
    url_bad("https://user:pw@example.com/", "credentials");
    url_bad("https://example.com/v1?x=1", "query");
    url_bad("https://example.com/v1#f", "fragment");
    url_bad("https://example.com:0/", "port");
    url_bad("https://example.com:65536/", "port");
    url_bad("https://example.com:8a/", "port");
    url_bad("https://exa%6dple.com/", "invalid host");
    url_bad("", "must not be empty");
    only_problem("{\"ngrokGatewayUrl\":7}", "ngrokGatewayUrl", "expected a string");
    /* as libcurl's URL API reads them (aigw__url_parse) */
    url_ok("http://[0:0:0:0:0:0:0:1]:9/v1", "http://[0:0:0:0:0:0:0:1]:9/v1"); /* [::1] */
    url_ok("http://127.1:8/v1", "http://127.1:8/v1");                         /* 127.0.0.1 */
    url_ok("http://[::1]", "http://[::1]");
    url_ok("https://API.Example.COM/V1", "https://API.Example.COM/V1"); /* kept as written */
    url_ok("https://api.example.com:443/v1", "https://api.example.com:443/v1");
    url_ok("http://localhost:08080/v1", "http://localhost:08080/v1");
    url_ok("https://exa_mple.com", "https://exa_mple.com");
    url_bad("http://[::1", "invalid host");
    url_bad("https://[fe80::1%25eth0]/v1", "invalid host"); /* a zone */
    url_bad("https://h\u00e9.example/v1", "invalid host");  /* not ASCII */
    url_bad("http://0x7f000002.evil/", "loopback");
    url_bad("https://user@example.com/", "credentials");
    url_bad("https://:pw@example.com/", "credentials");
    url_bad("https://a@b@example.com/", "credentials");
    url_bad("1http://example.com", "https://");
    url_bad("wss://example.com", "https://");
    url_bad("https:/example.com", "https://");
    url_bad("https://example.com/v1?", "query");
    url_bad("https://example.com#", "fragment");
    url_bad("http://localhost:0/", "port");
    url_bad("http://u@/x", "must have a host");
}

/* ------------------------------------------------------------------------ */
/* UTF-8 and nesting                                                        */
/* ------------------------------------------------------------------------ */

/* Exactly one problem, and the whole message is want. */
static void only_message(const char *json, const char *want)
{
    aigw_error *err = parse_err(json);
    if (aigw_error_count(err) != 1 || strcmp(aigw_error_message(err), want) != 0) {
        print_problems(err);
        fail_msg("got \"%s\", want \"%s\"", aigw_error_message(err), want);
    }
    aigw_error_free(err);
}

static void test_utf8_strings(void **state)
{
    aigw_error *err;
    aigw_config *cfg;
    char json[1024], *file;
    size_t i;
    (void)state;
    /* a key id (the binding read it as text after the upstream served) */
    only_message("{\"providerKeys\":[{\"id\":\"abc\xff\",\"providerId\":\"openai\","
                 "\"value\":\"sk-1\"}]}",
                 "providerKeys[0].id: not valid UTF-8 (byte 0xff at offset 3)");
    /* a provider name, a custom provider's model, a rule's model */
    only_problem("{\"providers\":[{\"providerId\":\"p\",\"name\":\"N\xc3\",\"baseUrl\":\"https://a\"}]}",
                 "providers[0].name", "not valid UTF-8 (byte 0xc3 at offset 1)");
    only_problem("{\"providers\":[{\"providerId\":\"p\",\"baseUrl\":\"https://a\","
                 "\"models\":[{\"modelId\":\"ok\"},{\"modelId\":\"m\xed\xa0\x80\"}]}]}",
                 "providers[0].models[1].modelId", "not valid UTF-8 (byte 0xed at offset 1)");
    only_problem(AKC("{\"model\":\"openai:gpt-\xc0\xaf\",\"steps\":[{\"type\":\"ngrok\"}]}"),
                 "accessKeyConfiguration.router.rules[0].model",
                 "not valid UTF-8 (byte 0xc0 at offset 11)");
    only_problem("{\"accessKeyConfiguration\":{\"name\":\"t\",\"access\":{\"models\":"
                 "{\"allow\":[\"gpt-4o\",\"\x80\"]}}}}",
                 "accessKeyConfiguration.access.models.allow[1]",
                 "not valid UTF-8 (byte 0x80 at offset 0)");
    /* member names: at their object (the value is not looked into) */
    only_message("{\"providerKeys\":[{\"id\":\"a\",\"providerId\":\"openai\",\"value\":\"v\","
                 "\"x\xfe\":\"\xff\"}]}",
                 "providerKeys[0]: a member name is not valid UTF-8 (byte 0xfe at offset 1)");
    only_message("{\"\xf5x\":1}", "a member name is not valid UTF-8 (byte 0xf5 at offset 0)");
    /* a bare configuration too */
    only_problem("{\"name\":\"n\xff\",\"router\":{\"rules\":[]}}", "name",
                 "not valid UTF-8 (byte 0xff at offset 1)");
    /* every one is reported, and nothing else is checked until they are
     * fixed: the checks after quote strings and copy them */
    err = parse_err("{\"providerKeys\":[{\"id\":\"\xff\",\"providerId\":\"nope\",\"value\":\"v\"},"
                    "{\"id\":\"b\",\"providerId\":\"openai\",\"name\":\"\xfe\",\"value\":\"v\"}],"
                    "\"gatewayConfig\":{\"metadata\":\"\xc3\"}}");
    assert_int_equal(aigw_error_count(err), 3);
    has_problem(err, "providerKeys[0].id", "byte 0xff at offset 0");
    has_problem(err, "providerKeys[1].name", "byte 0xfe at offset 0");
    has_problem(err, "gatewayConfig.metadata", "byte 0xc3 at offset 0");
    aigw_error_free(err);

    /* A key value becomes a header value (here for a custom provider):
     * where, never which byte - it is a secret. */
    err = parse_err("{\"providers\":[{\"providerId\":\"p\",\"baseUrl\":\"https://a\"}],"
                    "\"providerKeys\":[{\"id\":\"a\",\"providerId\":\"p\","
                    "\"value\":\"SECRET\xe9VALUE\"}]}");
    assert_int_equal(aigw_error_count(err), 1);
    has_problem(err, "providerKeys[0].value", "not valid UTF-8 (at offset 6)");
    assert_null(strstr(aigw_error_problem(err, 0), "0x"));
    no_secret_in(err, "SECRET");
    aigw_error_free(err);
    only_problem(AKC("{\"provider\":\"openai\",\"steps\":[{\"type\":\"user\",\"keys\":"
                     "[{\"name\":\"n\",\"value\":\"\xff\"}]}]}"),
                 "accessKeyConfiguration.router.rules[0].steps[0].keys[0].value",
                 "not valid UTF-8 (at offset 0)");
    only_problem("{\"ngrokAccessKey\":{\"value\":\"ng\xff\"}}", "ngrokAccessKey.value",
                 "not valid UTF-8 (at offset 2)");
    only_problem("{\"ngrokAccessKey\":\"ng\xff\"}", "ngrokAccessKey", "(at offset 2)");
    err = parse_err("{\"gatewayConfig\":{\"healthStore\":{\"redis\":"
                    "{\"url\":\"redis://:pa\xffss@h\",\"password\":\"\xfe\"}}}}");
    assert_int_equal(aigw_error_count(err), 2);
    has_problem(err, "gatewayConfig.healthStore.redis.url", "not valid UTF-8 (at offset 11)");
    has_problem(err, "gatewayConfig.healthStore.redis.password", "(at offset 0)");
    assert_null(strstr(aigw_error_message(err), "0x"));
    aigw_error_free(err);
    /* from the environment or a file: the same */
    setenv("AIGW_TEST_UTF8_ENV", "sk-\xff-SECRET", 1);
    only_problem("{\"ngrokAccessKey\":{\"valueFrom\":{\"env\":\"AIGW_TEST_UTF8_ENV\"}}}",
                 "ngrokAccessKey.valueFrom.env",
                 "environment variable AIGW_TEST_UTF8_ENV is not valid UTF-8 (at offset 3)");
    unsetenv("AIGW_TEST_UTF8_ENV");
    file = write_temp("sk-\xc3\x28-SECRET\n", 13);
    snprintf(json, sizeof json, "{\"providerKeys\":[{\"id\":\"a\",\"providerId\":\"openai\","
                                "\"valueFrom\":{\"file\":\"%s\"}}]}", file);
    only_problem(json, "providerKeys[0].valueFrom.file", "is not valid UTF-8 (at offset 3)");
    unlink(file);
    free(file);

    /* valid UTF-8 goes through as it is, raw or escaped */
    cfg = parse_ok("{\"providers\":[{\"providerId\":\"p\",\"name\":\"Caf\xc3\xa9 \\ud83d\\ude00\","
                   "\"baseUrl\":\"https://a\",\"models\":[{\"modelId\":\"m\xe2\x82\xac\"}]}],"
                   "\"providerKeys\":[{\"id\":\"k\xf0\x9f\x98\x80\",\"providerId\":\"p\","
                   "\"value\":\"v\"}],\"gatewayConfig\":{\"metadata\":\"\xef\xbf\xbf\"}}");
    assert_string_equal(aigw__config_provider(cfg, "p")->name, "Caf\xc3\xa9 \xf0\x9f\x98\x80");
    assert_string_equal(aigw__config_provider(cfg, "p")->models[0], "m\xe2\x82\xac");
    assert_string_equal(cfg->keys[0].id, "k\xf0\x9f\x98\x80");
    aigw_config_unref(cfg);

    /* A problem quoting a string cuts it between characters: 39 'a' and an
     * 'é' (bytes 40 and 41) quoted at most 40 bytes long. */
    err = parse_err("{\"gatewayConfig\":{\"totalTimeout\":"
                    "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\xc3\xa9zz\"}}");
    has_problem(err, "gatewayConfig.totalTimeout",
                "'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa' is not a valid duration");
    aigw_error_free(err);
    /* and a path cut at its cap keeps whole characters */
    {
        char big[1400];
        size_t n = (size_t)snprintf(big, sizeof big, "{\"gatewayConfig\":{\"x");
        for (i = 0; i < 300; i++) {
            memcpy(big + n, "\xc3\xa9", 2);
            n += 2;
        }
        memcpy(big + n, "\":1}}", 6);
        err = parse_err(big);
        assert_int_equal(aigw_error_count(err), 1);
        assert_true(strlen(aigw_error_path(err, 0)) > 400);
        assert_true(aigw__utf8_valid(aigw_error_path(err, 0), strlen(aigw_error_path(err, 0))));
        assert_true(aigw__utf8_valid(aigw_error_message(err), strlen(aigw_error_message(err))));
        aigw_error_free(err);
    }
}

/* "{"gatewayConfig":{"metadata":" then n '[': the metadata array is level 3. */
static char *deep_json(size_t n, const char *open)
{
    static const char head[] = "{\"gatewayConfig\":{\"metadata\":";
    size_t k = strlen(open), i, len = sizeof head - 1;
    char *s = malloc(len + n * k + n + 8);
    assert_non_null(s);
    memcpy(s, head, len);
    for (i = 0; i < n; i++, len += k)
        memcpy(s + len, open, k);
    for (i = 0; i < n; i++)
        s[len++] = open[0] == '[' ? ']' : '}';
    memcpy(s + len, "}}", 3);
    return s;
}

static void test_nesting_limit(void **state)
{
    char want[128], *s;
    aigw_error *err;
    (void)state;
    /* 999 levels under the root and gatewayConfig: one too many */
    s = deep_json(999, "[");
    snprintf(want, sizeof want, "nested deeper than 1000 levels at line 1, column %zu",
             strlen("{\"gatewayConfig\":{\"metadata\":") + 999);
    only_problem(s, "", want);
    free(s);
    /* objects count the same */
    s = deep_json(999, "{\"a\":");
    snprintf(want, sizeof want, "nested deeper than 1000 levels at line 1, column %zu",
             strlen("{\"gatewayConfig\":{\"metadata\":") + 998 * 5 + 1);
    only_problem(s, "", want);
    free(s);
    /* 1000 levels: JSON, so the problems are about its meaning */
    s = deep_json(998, "[");
    err = parse_err(s);
    has_problem(err, "gatewayConfig.metadata", "expected a string");
    assert_null(strstr(aigw_error_message(err), "nested"));
    aigw_error_free(err);
    free(s);
    /* on another line */
    only_problem("\n\n  [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
                 "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
                 "[[[[[[[[[[[[[",
                 "", "invalid JSON at line 3"); /* not deep: cut short */
}

static void test_control_chars_in_secrets(void **state)
{
    aigw_error *err;
    char *file;
    char json[1024];
    (void)state;
    err = parse_err("{\"providerKeys\":[{\"id\":\"a\",\"providerId\":\"openai\","
                    "\"value\":\"sk-SECRETVALUE\\r\\nX-Injected: 1\"}]}");
    assert_int_equal(aigw_error_count(err), 1);
    has_problem(err, "providerKeys[0].value", "control character");
    no_secret_in(err, "SECRETVALUE");
    no_secret_in(err, "Injected");
    aigw_error_free(err);

    err = parse_err(AKC("{\"provider\":\"openai\",\"steps\":[{\"type\":\"user\",\"keys\":"
                        "[{\"name\":\"n\",\"value\":\"sk-SECRETVALUE\\n\"}]}]}"));
    has_problem(err, "accessKeyConfiguration.router.rules[0].steps[0].keys[0].value",
                "control character");
    no_secret_in(err, "SECRETVALUE");
    aigw_error_free(err);

    err = parse_err("{\"ngrokAccessKey\":\"ng-SECRETVALUE\\u0007\"}");
    has_problem(err, "ngrokAccessKey", "control character");
    no_secret_in(err, "SECRETVALUE");
    aigw_error_free(err);

    setenv("AIGW_TEST_BAD_ENV", "sk-SECRETVALUE\r\n", 1);
    err = parse_err("{\"ngrokAccessKey\":{\"valueFrom\":{\"env\":\"AIGW_TEST_BAD_ENV\"}}}");
    has_problem(err, "ngrokAccessKey.valueFrom.env", "environment variable AIGW_TEST_BAD_ENV");
    no_secret_in(err, "SECRETVALUE");
    aigw_error_free(err);

    /* In a file only trailing CR/LF go; one inside is refused. */
    file = write_temp("sk-SECRETVALUE\nsecond-line\n", 27);
    snprintf(json, sizeof json, "{\"providerKeys\":[{\"id\":\"a\",\"providerId\":\"openai\","
                                "\"valueFrom\":{\"file\":\"%s\"}}]}", file);
    err = parse_err(json);
    has_problem(err, "providerKeys[0].valueFrom.file", "control character");
    no_secret_in(err, "SECRETVALUE");
    aigw_error_free(err);
    unlink(file);
    free(file);

    /* A NUL, raw or escaped, never reaches a C string (nor a message). */
    err = parse_err("{\"ngrokAccessKey\":\"ng-SECRETVALUE\\u0000tail\"}");
    has_problem(err, "", "line 1, column 34");
    no_secret_in(err, "SECRETVALUE");
    aigw_error_free(err);
    {
        static const char raw[] = "{\"ngrokAccessKey\":\"ng-SECRET\0tail\"}";
        aigw_config *cfg = NULL;
        assert_int_equal(aigw_config_parse(raw, sizeof raw - 1, &cfg, &err), AIGW_ECONFIG);
        has_problem(err, "", "NUL");
        aigw_error_free(err);
    }
    /* the escape itself ("\\u0000" as text) is fine */
    {
        aigw_config *cfg = parse_ok("{\"ngrokAccessKey\":\"a\\\\u0000b\"}");
        assert_string_equal(cfg->ngrok_key.value, "a\\u0000b");
        aigw_config_unref(cfg);
    }
    /* a tab is a legal header character */
    {
        aigw_config *cfg = parse_ok("{\"ngrokAccessKey\":\"a\\tb\"}");
        aigw_config_unref(cfg);
    }
}

static void test_durations_and_limits(void **state)
{
    (void)state;
    only_problem("{\"gatewayConfig\":{\"totalTimeout\":\"2 minutes\"}}",
                 "gatewayConfig.totalTimeout", "not a valid duration");
    only_problem("{\"gatewayConfig\":{\"perRequestTimeout\":\"-5s\"}}",
                 "gatewayConfig.perRequestTimeout", "not a valid duration");
    only_problem("{\"gatewayConfig\":{\"perRequestTimeout\":\"0s\"}}",
                 "gatewayConfig.perRequestTimeout", "at least 1ms");
    only_problem("{\"gatewayConfig\":{\"connectTimeout\":\"999us\"}}",
                 "gatewayConfig.connectTimeout", "at least 1ms");
    only_problem("{\"gatewayConfig\":{\"totalTimeout\":30}}", "gatewayConfig.totalTimeout",
                 "expected a string");
    only_problem("{\"gatewayConfig\":{\"maxAttempts\":0}}", "gatewayConfig.maxAttempts",
                 "between 1 and 1000");
    only_problem("{\"gatewayConfig\":{\"maxAttempts\":1001}}", "gatewayConfig.maxAttempts",
                 "between 1 and 1000");
    only_problem("{\"gatewayConfig\":{\"maxAttempts\":2.5}}", "gatewayConfig.maxAttempts",
                 "expected an integer");
    only_problem("{\"gatewayConfig\":{\"maxAttempts\":\"3\"}}", "gatewayConfig.maxAttempts",
                 "expected an integer");
    only_problem("{\"gatewayConfig\":{\"sameBackendRetries\":11}}",
                 "gatewayConfig.sameBackendRetries", "between 0 and 10");
    only_problem("{\"gatewayConfig\":{\"sameBackendRetries\":-1}}",
                 "gatewayConfig.sameBackendRetries", "between 0 and 10");
    only_problem("{\"gatewayConfig\":{\"maxResponseBytes\":0}}",
                 "gatewayConfig.maxResponseBytes", "between 1 and");
    only_problem("{\"gatewayConfig\":{\"maxInputTokens\":-3}}", "gatewayConfig.maxInputTokens",
                 "between 1 and");
    only_problem("{\"gatewayConfig\":{\"retryAfterMax\":null}}", "gatewayConfig.retryAfterMax",
                 "expected a string");
    only_problem("{\"gatewayConfig\":[]}", "gatewayConfig", "expected an object, got an array");
    {
        aigw_config *cfg = parse_ok("{\"gatewayConfig\":{\"maxAttempts\":1000,"
                                    "\"sameBackendRetries\":10,\"retryAfterMax\":\"1h\","
                                    "\"maxOutputTokens\":8192,\"metadata\":null}}");
        assert_int_equal(cfg->max_attempts, 1000);
        assert_int_equal(cfg->same_backend_retries, 10);
        assert_int_equal(cfg->retry_after_max_ms, 3600000);
        aigw_config_unref(cfg);
    }
}

/* ------------------------------------------------------------------------ */
/* Key health: gatewayConfig extensions                                     */
/* ------------------------------------------------------------------------ */

static void test_health_knobs(void **state)
{
    aigw_config *cfg;
    (void)state;
    /* every bound, accepted */
    cfg = parse_ok("{\"gatewayConfig\":{\"keyCooldown\":\"1ms\",\"keyCooldownMax\":\"0\","
                   "\"keyBenchTime\":\"0\",\"perRequestTimeout\":\"3s\","
                   "\"circuitBreaker\":{\"failures\":1,\"cooloff\":\"1ms\"},"
                   "\"retryBudget\":{\"percent\":0,\"minPerSecond\":100000,\"window\":\"1h\"}}}");
    assert_int_equal(cfg->health.cooldown_ms, 1);
    assert_int_equal(cfg->health.cooldown_max_ms, 0);
    assert_int_equal(cfg->health.bench_ms, 0);
    assert_int_equal(cfg->health.breaker_threshold, 1);
    assert_int_equal(cfg->health.breaker_cooloff_ms, 1);
    assert_int_equal(cfg->health.probe_timeout_ms, 3000);
    assert_true(cfg->health.budget_on);
    assert_int_equal(cfg->health.budget_percent, 0);
    assert_int_equal(cfg->health.budget_min_per_sec, 100000);
    assert_int_equal(cfg->health.budget_window_ms, 3600000);
    aigw_config_unref(cfg);

    cfg = parse_ok("{\"gatewayConfig\":{\"keyCooldown\":\"1m30s\",\"keyCooldownMax\":\"24h\","
                   "\"keyBenchTime\":\"1.5s\",\"circuitBreaker\":{\"failures\":1000},"
                   "\"retryBudget\":{\"percent\":1000,\"minPerSecond\":0,\"window\":\"1s\"}}}");
    assert_int_equal(cfg->health.cooldown_ms, 90000);
    assert_int_equal(cfg->health.cooldown_max_ms, 86400000);
    assert_int_equal(cfg->health.bench_ms, 1500);
    assert_int_equal(cfg->health.breaker_threshold, 1000);
    assert_int_equal(cfg->health.breaker_cooloff_ms, 5000); /* default kept */
    assert_int_equal(cfg->health.budget_percent, 1000);
    assert_int_equal(cfg->health.budget_min_per_sec, 0);
    assert_int_equal(cfg->health.budget_window_ms, 1000);
    aigw_config_unref(cfg);

    /* false turns off, true and {} keep the defaults */
    cfg = parse_ok("{\"gatewayConfig\":{\"circuitBreaker\":false,\"retryBudget\":false}}");
    assert_int_equal(cfg->health.breaker_threshold, 0);
    assert_false(cfg->health.budget_on);
    aigw_config_unref(cfg);
    cfg = parse_ok("{\"gatewayConfig\":{\"circuitBreaker\":true,\"retryBudget\":true}}");
    assert_int_equal(cfg->health.breaker_threshold, 5);
    assert_int_equal(cfg->health.breaker_cooloff_ms, 5000);
    assert_true(cfg->health.budget_on);
    assert_int_equal(cfg->health.budget_percent, 20);
    assert_int_equal(cfg->health.budget_min_per_sec, 10);
    assert_int_equal(cfg->health.budget_window_ms, 10000);
    aigw_config_unref(cfg);
    cfg = parse_ok("{\"gatewayConfig\":{\"circuitBreaker\":{},\"retryBudget\":"
                   "{\"minPerSecond\":3}}}");
    assert_int_equal(cfg->health.breaker_threshold, 5);
    assert_true(cfg->health.budget_on);
    assert_int_equal(cfg->health.budget_percent, 20);
    assert_int_equal(cfg->health.budget_min_per_sec, 3);
    aigw_config_unref(cfg);

    /* a bare configuration has the defaults too */
    cfg = parse_ok("{\"name\":\"b\"}");
    assert_true(aigw_config_is_bare(cfg));
    assert_int_equal(cfg->health.breaker_threshold, 5);
    assert_int_equal(cfg->health.probe_timeout_ms, 60000);
    aigw_config_unref(cfg);
}

static void test_health_problems(void **state)
{
    (void)state;
    only_problem("{\"gatewayConfig\":{\"keyCooldown\":\"-1s\"}}", "gatewayConfig.keyCooldown",
                 "'-1s' is not a valid duration");
    only_problem("{\"gatewayConfig\":{\"keyCooldown\":2}}", "gatewayConfig.keyCooldown",
                 "expected a string (a duration such as \"30s\"), got a number");
    only_problem("{\"gatewayConfig\":{\"keyCooldownMax\":\"-1s\"}}",
                 "gatewayConfig.keyCooldownMax", "'-1s' is not a valid duration");
    only_problem("{\"gatewayConfig\":{\"keyBenchTime\":\"forever\"}}",
                 "gatewayConfig.keyBenchTime", "'forever' is not a valid duration");
    only_problem("{\"gatewayConfig\":{\"keyBenchTime\":null}}", "gatewayConfig.keyBenchTime",
                 "expected a string");

    only_problem("{\"gatewayConfig\":{\"circuitBreaker\":\"off\"}}",
                 "gatewayConfig.circuitBreaker", "expected false, true or an object, got a string");
    only_problem("{\"gatewayConfig\":{\"circuitBreaker\":null}}", "gatewayConfig.circuitBreaker",
                 "expected false, true or an object, got null");
    only_problem("{\"gatewayConfig\":{\"circuitBreaker\":[]}}", "gatewayConfig.circuitBreaker",
                 "expected false, true or an object, got an array");
    only_problem("{\"gatewayConfig\":{\"circuitBreaker\":{\"failures\":0}}}",
                 "gatewayConfig.circuitBreaker.failures", "must be between 1 and 1000");
    only_problem("{\"gatewayConfig\":{\"circuitBreaker\":{\"failures\":1001}}}",
                 "gatewayConfig.circuitBreaker.failures", "must be between 1 and 1000");
    only_problem("{\"gatewayConfig\":{\"circuitBreaker\":{\"failures\":2.5}}}",
                 "gatewayConfig.circuitBreaker.failures", "expected an integer, got a fraction");
    only_problem("{\"gatewayConfig\":{\"circuitBreaker\":{\"failures\":\"5\"}}}",
                 "gatewayConfig.circuitBreaker.failures", "expected an integer, got a string");
    only_problem("{\"gatewayConfig\":{\"circuitBreaker\":{\"cooloff\":\"0\"}}}",
                 "gatewayConfig.circuitBreaker.cooloff", "must be at least 1ms");
    only_problem("{\"gatewayConfig\":{\"circuitBreaker\":{\"cooloff\":5}}}",
                 "gatewayConfig.circuitBreaker.cooloff", "expected a string");
    only_problem("{\"gatewayConfig\":{\"circuitBreaker\":{\"threshold\":3}}}",
                 "gatewayConfig.circuitBreaker.threshold",
                 "unknown field (expected one of: failures, cooloff)");
    only_problem("{\"gatewayConfig\":{\"circuitBreaker\":{\"failures\":3,\"failures\":4}}}",
                 "gatewayConfig.circuitBreaker.failures", "duplicate field");

    only_problem("{\"gatewayConfig\":{\"retryBudget\":20}}", "gatewayConfig.retryBudget",
                 "expected false, true or an object, got a number");
    only_problem("{\"gatewayConfig\":{\"retryBudget\":{\"percent\":-1}}}",
                 "gatewayConfig.retryBudget.percent", "must be between 0 and 1000");
    only_problem("{\"gatewayConfig\":{\"retryBudget\":{\"percent\":1001}}}",
                 "gatewayConfig.retryBudget.percent", "must be between 0 and 1000");
    only_problem("{\"gatewayConfig\":{\"retryBudget\":{\"percent\":\"20%\"}}}",
                 "gatewayConfig.retryBudget.percent", "expected an integer, got a string");
    only_problem("{\"gatewayConfig\":{\"retryBudget\":{\"minPerSecond\":100001}}}",
                 "gatewayConfig.retryBudget.minPerSecond", "must be between 0 and 100000");
    only_problem("{\"gatewayConfig\":{\"retryBudget\":{\"minPerSecond\":0.5}}}",
                 "gatewayConfig.retryBudget.minPerSecond", "expected an integer, got a fraction");
    only_problem("{\"gatewayConfig\":{\"retryBudget\":{\"window\":\"999ms\"}}}",
                 "gatewayConfig.retryBudget.window", "must be at least 1s");
    only_problem("{\"gatewayConfig\":{\"retryBudget\":{\"window\":\"1h0m0.001s\"}}}",
                 "gatewayConfig.retryBudget.window", "must be at most 1h");
    only_problem("{\"gatewayConfig\":{\"retryBudget\":{\"window\":10}}}",
                 "gatewayConfig.retryBudget.window", "expected a string");
    only_problem("{\"gatewayConfig\":{\"retryBudget\":{\"window\":\"ten\"}}}",
                 "gatewayConfig.retryBudget.window", "'ten' is not a valid duration");
    only_problem("{\"gatewayConfig\":{\"retryBudget\":{\"ratio\":0.2}}}",
                 "gatewayConfig.retryBudget.ratio",
                 "unknown field (expected one of: percent, minPerSecond, window)");
    /* the list of gatewayConfig's members is whole */
    only_problem("{\"gatewayConfig\":{\"cooldown\":\"1s\"}}", "gatewayConfig.cooldown",
                 "maxEventBytes, keyCooldown, keyCooldownMax, keyBenchTime, circuitBreaker, "
                 "retryBudget, healthStore, tls)");
    /* all of them at once, each at its path */
    {
        aigw_error *err = parse_err(
            "{\"gatewayConfig\":{\"keyCooldown\":\"x0\",\"keyCooldownMax\":1,"
            "\"keyBenchTime\":\"x\",\"circuitBreaker\":{\"failures\":0,\"cooloff\":\"0\"},"
            "\"retryBudget\":{\"percent\":-5,\"minPerSecond\":-1,\"window\":\"2h\"}}}");
        assert_int_equal(aigw_error_count(err), 8);
        has_problem(err, "gatewayConfig.keyCooldown", "not a valid duration");
        has_problem(err, "gatewayConfig.keyCooldownMax", "expected a string");
        has_problem(err, "gatewayConfig.keyBenchTime", "not a valid duration");
        has_problem(err, "gatewayConfig.circuitBreaker.failures", "between 1 and 1000");
        has_problem(err, "gatewayConfig.circuitBreaker.cooloff", "at least 1ms");
        has_problem(err, "gatewayConfig.retryBudget.percent", "between 0 and 1000");
        has_problem(err, "gatewayConfig.retryBudget.minPerSecond", "between 0 and 100000");
        has_problem(err, "gatewayConfig.retryBudget.window", "at most 1h");
        aigw_error_free(err);
    }
}

/* ------------------------------------------------------------------------ */
/* keySelectionStrategy and key weights (local extensions)                  */
/* ------------------------------------------------------------------------ */

#define STEP_PATH "accessKeyConfiguration.router.rules[0].steps[0]"
#define USER_STEP(strategy, keys)                                                           \
    AKC("{\"provider\":\"openai\",\"steps\":[{\"type\":\"user\",\"keySelectionStrategy\":" \
        strategy ",\"keys\":[" keys "]}]}")

static void test_strategies(void **state)
{
    static const struct {
        const char *name;
        aigw_strategy_kind kind;
    } all[] = {{"ordered", AIGW_STRATEGY_ORDERED},
               {"round-robin", AIGW_STRATEGY_ROUND_ROBIN},
               {"random", AIGW_STRATEGY_RANDOM},
               {"weighted", AIGW_STRATEGY_WEIGHTED},
               {"least-recently-limited", AIGW_STRATEGY_LEAST_RECENTLY_LIMITED}};
    char json[1024];
    aigw_config *cfg;
    size_t i;
    (void)state;
    for (i = 0; i < sizeof all / sizeof all[0]; i++) {
        snprintf(json, sizeof json,
                 AKC("{\"provider\":\"openai\",\"steps\":[{\"type\":\"user\","
                     "\"keySelectionStrategy\":\"%s\",\"keys\":[{\"name\":\"a\","
                     "\"value\":\"sk-a\"},{\"name\":\"b\",\"value\":\"sk-b\"}]}]}"),
                 all[i].name);
        cfg = parse_ok(json);
        assert_int_equal(cfg->akcs[0].rules[0].steps[0].strategy, all[i].kind);
        assert_int_equal(cfg->akcs[0].rules[0].steps[0].turn, 0);
        aigw_config_unref(cfg);
    }
    /* absent: ordered */
    cfg = parse_ok(AKC("{\"provider\":\"openai\",\"steps\":[{\"type\":\"user\",\"keys\":"
                       "[{\"name\":\"a\",\"value\":\"sk-a\"}]},{\"type\":\"ngrok\","
                       "\"keySelectionStrategy\":\"ordered\"}]}"));
    assert_int_equal(cfg->akcs[0].rules[0].steps[0].strategy, AIGW_STRATEGY_ORDERED);
    assert_int_equal(cfg->akcs[0].rules[0].steps[1].strategy, AIGW_STRATEGY_ORDERED);
    aigw_config_unref(cfg);

    only_problem(USER_STEP("\"fastest\"", "{\"name\":\"a\",\"value\":\"sk-a\"}"),
                 STEP_PATH ".keySelectionStrategy",
                 "unknown key selection strategy 'fastest' (allowed: ordered, round-robin, "
                 "random, weighted, least-recently-limited)");
    only_problem(USER_STEP("\"Round-Robin\"", "{\"name\":\"a\",\"value\":\"sk-a\"}"),
                 STEP_PATH ".keySelectionStrategy", "unknown key selection strategy 'Round-Robin'");
    only_problem(USER_STEP("\"\"", "{\"name\":\"a\",\"value\":\"sk-a\"}"),
                 STEP_PATH ".keySelectionStrategy", "unknown key selection strategy ''");
    only_problem(USER_STEP("1", "{\"name\":\"a\",\"value\":\"sk-a\"}"),
                 STEP_PATH ".keySelectionStrategy", "expected a string, got a number");
    /* an ngrok step: "ordered" only; an unknown name is reported once */
    only_problem(AKC("{\"provider\":\"openai\",\"steps\":[{\"type\":\"ngrok\","
                     "\"keySelectionStrategy\":\"least-recently-limited\"}]}"),
                 STEP_PATH ".keySelectionStrategy",
                 "'least-recently-limited' does not apply to an ngrok step");
    only_problem(AKC("{\"provider\":\"openai\",\"steps\":[{\"type\":\"ngrok\","
                     "\"keySelectionStrategy\":\"nope\"}]}"),
                 STEP_PATH ".keySelectionStrategy", "unknown key selection strategy 'nope'");
}

static void test_key_weights(void **state)
{
    aigw_config *cfg;
    (void)state;
    /* default 1; 0..1000000 on keys by id and inline keys */
    cfg = parse_ok("{" KEYS_OA_AN ","
                   "\"accessKeyConfiguration\":{\"name\":\"t\",\"router\":{\"rules\":["
                   "{\"provider\":\"openai\",\"steps\":[{\"type\":\"user\","
                   "\"keySelectionStrategy\":\"weighted\",\"keys\":["
                   "{\"id\":\"oa\"},{\"id\":\"oa\",\"weight\":0},"
                   "{\"name\":\"x\",\"value\":\"sk-x\",\"weight\":1000000},"
                   "{\"name\":\"y\",\"value\":\"sk-y\"},{\"weight\":7,\"id\":\"oa\"}]}]}]}}}");
    assert_int_equal(rule_key(cfg, 0, 0, 0)->weight, 1);
    assert_int_equal(rule_key(cfg, 0, 0, 1)->weight, 0);
    assert_int_equal(rule_key(cfg, 0, 0, 2)->weight, 1000000);
    assert_int_equal(rule_key(cfg, 0, 0, 3)->weight, 1);
    assert_int_equal(rule_key(cfg, 0, 0, 4)->weight, 7);
    assert_string_equal(rule_key(cfg, 0, 0, 4)->id, "oa");
    assert_string_equal(rule_key(cfg, 0, 0, 2)->value.value, "sk-x");
    aigw_config_unref(cfg);

    /* a weight under another strategy is allowed, even 0 everywhere */
    cfg = parse_ok(USER_STEP("\"ordered\"", "{\"name\":\"a\",\"value\":\"sk-a\",\"weight\":0}"));
    assert_int_equal(rule_key(cfg, 0, 0, 0)->weight, 0);
    aigw_config_unref(cfg);
    cfg = parse_ok(USER_STEP("\"random\"", "{\"name\":\"a\",\"value\":\"sk-a\",\"weight\":5}"));
    assert_int_equal(rule_key(cfg, 0, 0, 0)->weight, 5);
    aigw_config_unref(cfg);
    /* weighted: one key above 0 is enough */
    cfg = parse_ok(USER_STEP("\"weighted\"", "{\"name\":\"a\",\"value\":\"sk-a\",\"weight\":0},"
                                             "{\"name\":\"b\",\"value\":\"sk-b\",\"weight\":1}"));
    aigw_config_unref(cfg);
    /* a bare configuration (form only) takes them as well */
    cfg = parse_ok("{\"router\":{\"rules\":[{\"provider\":\"openai\",\"steps\":[{\"type\":"
                   "\"user\",\"keySelectionStrategy\":\"weighted\",\"keys\":[{\"id\":"
                   "\"aigpk_a\",\"weight\":2}]}]}]}}");
    assert_true(aigw_config_is_bare(cfg));
    assert_int_equal(rule_key(cfg, 0, 0, 0)->weight, 2);
    assert_int_equal(cfg->akcs[0].rules[0].steps[0].strategy, AIGW_STRATEGY_WEIGHTED);
    aigw_config_unref(cfg);

    only_problem(USER_STEP("\"weighted\"", "{\"name\":\"a\",\"value\":\"sk-a\",\"weight\":0},"
                                           "{\"name\":\"b\",\"value\":\"sk-b\",\"weight\":0}"),
                 STEP_PATH ".keys", "weighted needs at least one key with a weight above 0");
    only_problem(USER_STEP("\"weighted\"", "{\"name\":\"a\",\"value\":\"sk-a\",\"weight\":-1}"),
                 STEP_PATH ".keys[0].weight", "must be between 0 and 1000000");
    only_problem(USER_STEP("\"weighted\"", "{\"name\":\"a\",\"value\":\"sk-a\",\"weight\":0},"
                                           "{\"name\":\"b\",\"value\":\"sk-b\",\"weight\":1000001}"),
                 STEP_PATH ".keys[1].weight", "must be between 0 and 1000000");
    only_problem(USER_STEP("\"ordered\"", "{\"name\":\"a\",\"value\":\"sk-a\",\"weight\":1.5}"),
                 STEP_PATH ".keys[0].weight", "expected an integer, got a fraction");
    only_problem(USER_STEP("\"ordered\"", "{\"name\":\"a\",\"value\":\"sk-a\",\"weight\":\"2\"}"),
                 STEP_PATH ".keys[0].weight", "expected an integer, got a string");
    only_problem(USER_STEP("\"ordered\"", "{\"name\":\"a\",\"value\":\"sk-a\",\"weight\":null}"),
                 STEP_PATH ".keys[0].weight", "expected an integer, got null");
    only_problem(USER_STEP("\"weighted\"", "{\"weight\":3}"), STEP_PATH ".keys[0]",
                 "a key needs \"id\", or \"name\" and \"value\"");
    only_problem(USER_STEP("\"ordered\"", "{\"name\":\"a\",\"value\":\"sk-a\",\"weight\":1,"
                                          "\"weight\":2}"),
                 STEP_PATH ".keys[0].weight", "duplicate field");
    /* weights only on keys, not on steps (checked in test_unknown_fields) */
}

/* A secret becomes a header value: past 8192 bytes it is refused when the
 * file is read, from every source, without quoting it. */
static void test_secret_size_bound(void **state)
{
    static const size_t sizes[] = {8192, 8193, 1 << 20};
    char *json, *file, *big;
    aigw_config *cfg;
    size_t i, n;
    (void)state;
    for (i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        n = sizes[i];
        assert_non_null(big = malloc(n + 1));
        memset(big, 'k', n);
        big[n] = '\0';
        assert_non_null(json = malloc(n + 256));
        snprintf(json, n + 256, "{\"providerKeys\":[{\"id\":\"a\",\"providerId\":\"openai\","
                                "\"value\":\"%s\"}]}", big);
        if (n == 8192) {
            cfg = parse_ok(json);
            assert_int_equal(cfg->keys[0].value.len, 8192);
            aigw_config_unref(cfg);
        } else {
            char want[96];
            snprintf(want, sizeof want, "the value is %zu bytes, longer than the 8192 an HTTP "
                                        "header can carry", n);
            only_problem(json, "providerKeys[0].value", want);
        }
        if (n == 8193) {
            setenv("AIGW_TEST_BIG_VAR", big, 1);
            only_problem("{\"accessKeys\":[{\"id\":\"a\",\"valueFrom\":"
                         "{\"env\":\"AIGW_TEST_BIG_VAR\"}}]}",
                         "accessKeys[0].valueFrom.env",
                         "environment variable AIGW_TEST_BIG_VAR is 8193 bytes, longer than");
            unsetenv("AIGW_TEST_BIG_VAR");
            file = write_temp(big, n);
            snprintf(json, n + 256, "{\"ngrokAccessKey\":{\"valueFrom\":{\"file\":\"%s\"}}}",
                     file);
            only_problem(json, "ngrokAccessKey.valueFrom.file", "is 8193 bytes, longer than");
            unlink(file);
            free(file);
        }
        free(json);
        free(big);
    }
}

static void test_secret_sources(void **state)
{
    char json[1024];
    char *file;
    aigw_config *cfg;
    aigw_error *err;
    (void)state;
    unsetenv("AIGW_TEST_UNSET_VAR");
    err = parse_err("{\"providerKeys\":[{\"id\":\"a\",\"providerId\":\"openai\","
                    "\"valueFrom\":{\"env\":\"AIGW_TEST_UNSET_VAR\"}}]}");
    assert_int_equal(aigw_error_count(err), 1);
    has_problem(err, "providerKeys[0].valueFrom.env",
                "environment variable AIGW_TEST_UNSET_VAR is not set");
    aigw_error_free(err);

    setenv("AIGW_TEST_EMPTY_VAR", "", 1);
    only_problem("{\"providerKeys\":[{\"id\":\"a\",\"providerId\":\"openai\","
                 "\"valueFrom\":{\"env\":\"AIGW_TEST_EMPTY_VAR\"}}]}",
                 "providerKeys[0].valueFrom.env", "AIGW_TEST_EMPTY_VAR is empty");

    setenv("AIGW_TEST_GOOD_VAR", "sk-env-ok", 1);
    cfg = parse_ok("{\"providerKeys\":[{\"id\":\"a\",\"providerId\":\"openai\","
                   "\"valueFrom\":{\"env\":\"AIGW_TEST_GOOD_VAR\"}}],"
                   "\"ngrokAccessKey\":{\"value\":\"ng-v\"}}");
    assert_string_equal(cfg->keys[0].value.value, "sk-env-ok");
    assert_string_equal(cfg->ngrok_key.value, "ng-v");
    aigw_config_unref(cfg);

    file = write_temp("sk-file-ok\n\n\r\n", 14);
    snprintf(json, sizeof json, "{\"ngrokAccessKey\":{\"valueFrom\":{\"file\":\"%s\"}}}", file);
    cfg = parse_ok(json);
    assert_string_equal(cfg->ngrok_key.value, "sk-file-ok");
    assert_int_equal(cfg->ngrok_key.len, 10);
    aigw_config_unref(cfg);
    unlink(file);
    free(file);

    file = write_temp("\r\n", 2);
    snprintf(json, sizeof json, "{\"ngrokAccessKey\":{\"valueFrom\":{\"file\":\"%s\"}}}", file);
    only_problem(json, "ngrokAccessKey.valueFrom.file", "is empty");
    unlink(file);
    free(file);

    {
        static char big[70 * 1024];
        memset(big, 'k', sizeof big);
        file = write_temp(big, sizeof big);
        snprintf(json, sizeof json, "{\"ngrokAccessKey\":{\"valueFrom\":{\"file\":\"%s\"}}}",
                 file);
        only_problem(json, "ngrokAccessKey.valueFrom.file", "larger than 65536 bytes");
        unlink(file);
        free(file);
    }
    only_problem("{\"providerKeys\":[{\"id\":\"a\",\"providerId\":\"openai\","
                 "\"valueFrom\":{\"file\":\"/nonexistent/aigw/key\"}}]}",
                 "providerKeys[0].valueFrom.file", "cannot read file '/nonexistent/aigw/key'");
    only_problem("{\"providerKeys\":[{\"id\":\"a\",\"providerId\":\"openai\","
                 "\"valueFrom\":{\"file\":\"/tmp\"}}]}",
                 "providerKeys[0].valueFrom.file", "cannot read file '/tmp'");
    only_problem("{\"providerKeys\":[{\"id\":\"a\",\"providerId\":\"openai\",\"value\":\"\"}]}",
                 "providerKeys[0].value", "the value is empty");
    only_problem("{\"providerKeys\":[{\"id\":\"a\",\"providerId\":\"openai\",\"value\":\"v\","
                 "\"valueFrom\":{\"env\":\"X\"}}]}",
                 "providerKeys[0]", "not both");
    only_problem("{\"providerKeys\":[{\"id\":\"a\",\"providerId\":\"openai\"}]}",
                 "providerKeys[0]", "needs \"value\" or \"valueFrom\"");
    only_problem("{\"providerKeys\":[{\"id\":\"a\",\"providerId\":\"openai\","
                 "\"valueFrom\":{\"env\":\"A\",\"file\":\"B\"}}]}",
                 "providerKeys[0].valueFrom", "not both");
    only_problem("{\"providerKeys\":[{\"id\":\"a\",\"providerId\":\"openai\","
                 "\"valueFrom\":{}}]}",
                 "providerKeys[0].valueFrom", "needs \"env\" or \"file\"");
    only_problem("{\"ngrokAccessKey\":7}", "ngrokAccessKey", "expected a string or an object");
}

static void test_steps_and_rules(void **state)
{
    (void)state;
    only_problem(AKC("{\"provider\":\"openai\",\"steps\":[]}"),
                 "accessKeyConfiguration.router.rules[0].steps", "at least one step");
    only_problem(AKC("{\"provider\":\"openai\"}"),
                 "accessKeyConfiguration.router.rules[0].steps", "required field is missing");
    only_problem(AKC("{\"provider\":\"openai\",\"steps\":[{\"type\":\"ngrok\","
                     "\"keySelectionStrategy\":\"random\"}]}"),
                 "accessKeyConfiguration.router.rules[0].steps[0].keySelectionStrategy",
                 "'random' does not apply to an ngrok step, which has no keys to select "
                 "(allowed: ordered)");
    only_problem(AKC("{\"provider\":\"openai\",\"steps\":[{\"type\":\"byok\"}]}"),
                 "accessKeyConfiguration.router.rules[0].steps[0].type",
                 "unknown step type 'byok' (allowed: user, ngrok)");
    only_problem(AKC("{\"provider\":\"openai\",\"steps\":[{}]}"),
                 "accessKeyConfiguration.router.rules[0].steps[0].type",
                 "required field is missing");
    only_problem(AKC("{\"provider\":\"openai\",\"steps\":[{\"type\":\"user\"}]}"),
                 "accessKeyConfiguration.router.rules[0].steps[0].keys", "at least one key");
    only_problem(AKC("{\"provider\":\"openai\",\"steps\":[{\"type\":\"user\",\"keys\":[]}]}"),
                 "accessKeyConfiguration.router.rules[0].steps[0].keys", "at least one key");
    only_problem(AKC("{\"provider\":\"openai\",\"steps\":[{\"type\":\"ngrok\",\"keys\":[]}]}"),
                 "accessKeyConfiguration.router.rules[0].steps[0].keys", "takes no keys");
    only_problem(AKC("{\"provider\":\"openai\",\"steps\":[{\"type\":\"user\",\"keys\":[{}]}]}"),
                 "accessKeyConfiguration.router.rules[0].steps[0].keys[0]", "a key needs");
    only_problem(AKC("{\"provider\":\"openai\",\"steps\":[{\"type\":\"user\",\"keys\":"
                     "[{\"id\":\"\"}]}]}"),
                 "accessKeyConfiguration.router.rules[0].steps[0].keys[0].id", "must not be empty");
    only_problem(AKC("{\"provider\":\"openai\",\"steps\":[{\"type\":\"user\",\"keys\":"
                     "[{\"value\":\"sk-x\"}]}]}"),
                 "accessKeyConfiguration.router.rules[0].steps[0].keys[0].name",
                 "required field is missing");
    only_problem(AKC("{\"provider\":\"openai\",\"steps\":[{\"type\":\"user\",\"keys\":"
                     "[{\"name\":\"n\"}]}]}"),
                 "accessKeyConfiguration.router.rules[0].steps[0].keys[0].value",
                 "required field is missing");
    only_problem(AKC("{\"provider\":\"openai\",\"steps\":[{\"type\":\"user\",\"keys\":"
                     "[{\"id\":\"a\",\"name\":\"n\",\"value\":\"v\"}]}]}"),
                 "accessKeyConfiguration.router.rules[0].steps[0].keys[0]", "not both");
    only_problem(AKC("{\"steps\":[{\"type\":\"ngrok\"}]}"),
                 "accessKeyConfiguration.router.rules[0]", "needs \"provider\", \"model\" or both");
    only_problem(AKC("{\"provider\":\"openai\",\"model\":\"anthropic:claude-x\","
                     "\"steps\":[{\"type\":\"ngrok\"}]}"),
                 "accessKeyConfiguration.router.rules[0].model",
                 "names provider 'anthropic', but the rule's provider is 'openai'");
    only_problem(AKC("{\"model\":\"llama-70b\",\"steps\":[{\"type\":\"ngrok\"}]}"),
                 "accessKeyConfiguration.router.rules[0].model", "cannot tell which provider");
    only_problem(AKC("{\"model\":\"openai:\",\"steps\":[{\"type\":\"ngrok\"}]}"),
                 "accessKeyConfiguration.router.rules[0].model", "empty");
    only_problem(AKC("{\"provider\":\"openai\",\"steps\":[{\"type\":\"ngrok\"}]},"
                     "{\"provider\":\"openai\",\"steps\":[{\"type\":\"ngrok\"}]}"),
                 "accessKeyConfiguration.router.rules[1]", "same provider and model as rules[0]");
    only_problem("{\"providers\":[{\"providerId\":\"p\",\"baseUrl\":\"https://p.example\"}],"
                 "\"accessKeyConfiguration\":{\"name\":\"t\",\"router\":{\"rules\":"
                 "[{\"provider\":\"p\",\"steps\":[{\"type\":\"ngrok\"}]}]}}}",
                 "accessKeyConfiguration.router.rules[0].steps[0].type", "built-in providers only");
    only_problem("{\"accessKeyConfiguration\":{\"router\":{}}}", "accessKeyConfiguration.name",
                 "required field is missing");
    only_problem("{\"accessKeyConfiguration\":{\"name\":\"\"}}", "accessKeyConfiguration.name",
                 "must not be empty");
    only_problem("{\"accessKeyConfiguration\":{\"name\":\"t\",\"router\":{\"rules\":{}}}}",
                 "accessKeyConfiguration.router.rules", "expected an array, got an object");
    only_problem("{\"accessKeyConfiguration\":{\"name\":\"t\",\"access\":{\"providers\":"
                 "{\"allow\":[\"openai\",\"nope\"]}}}}",
                 "accessKeyConfiguration.access.providers.allow[1]", "no provider with this id");
    only_problem("{\"accessKeyConfiguration\":{\"name\":\"t\",\"access\":{\"models\":"
                 "{\"allow\":[\"gpt-4o\",3]}}}}",
                 "accessKeyConfiguration.access.models.allow[1]", "expected a string, got a number");
    {
        /* 256 characters: one too many */
        char json[1024], name[257];
        memset(name, 'n', 256);
        name[256] = '\0';
        snprintf(json, sizeof json, "{\"accessKeyConfiguration\":{\"name\":\"%s\"}}", name);
        only_problem(json, "accessKeyConfiguration.name", "at most 255 characters");
        /* 255 multi-byte characters are fine: characters, not bytes */
        json[0] = '\0';
        strcat(json, "{\"accessKeyConfiguration\":{\"name\":\"");
        for (int i = 0; i < 255; i++)
            strcat(json, "\xc3\xa9");
        strcat(json, "\"}}");
        aigw_config_unref(parse_ok(json));
    }
}

static void test_providers_and_keys_problems(void **state)
{
    (void)state;
    only_problem("{\"providers\":[{\"providerId\":\"p\",\"baseUrl\":\"https://a\"},"
                 "{\"providerId\":\"p\",\"baseUrl\":\"https://b\"}]}",
                 "providers[1].providerId", "duplicate providerId");
    only_problem("{\"providers\":[{\"providerId\":\"openai\"},{\"providerId\":\"openai\"}]}",
                 "providers[1].providerId", "duplicate providerId");
    only_problem("{\"providers\":[{\"providerId\":\"gemini\"}]}", "providers[0].providerId",
                 "another name of the built-in provider 'google'");
    only_problem("{\"providers\":[{\"providerId\":\"My Provider\",\"baseUrl\":\"https://a\"}]}",
                 "providers[0].providerId", "lowercase");
    only_problem("{\"providers\":[{\"providerId\":\"a:b\",\"baseUrl\":\"https://a\"}]}",
                 "providers[0].providerId", "lowercase");
    only_problem("{\"providers\":[{\"providerId\":\"p\"}]}", "providers[0].baseUrl",
                 "required field is missing");
    only_problem("{\"providers\":[{\"name\":\"x\",\"baseUrl\":\"https://a\"}]}",
                 "providers[0].providerId", "required field is missing");
    only_problem("{\"providers\":[{\"providerId\":\"p\",\"baseUrl\":\"https://a\","
                 "\"models\":[{\"modelId\":\"m\",\"providerModelId\":7}]}]}",
                 "providers[0].models[0].providerModelId", "expected a string");
    only_problem("{\"providers\":[{\"providerId\":\"p\",\"baseUrl\":\"https://a\","
                 "\"models\":[{}]}]}",
                 "providers[0].models[0].modelId", "required field is missing");
    only_problem("{\"providers\":[{\"providerId\":\"p\",\"baseUrl\":\"https://a\","
                 "\"supportedApiSurfaces\":[{\"format\":\"soap\"}]}]}",
                 "providers[0].supportedApiSurfaces[0].format", "unknown format 'soap'");
    {
        aigw_error *err = parse_err(
            "{\"providers\":[{\"providerId\":\"p\",\"baseUrl\":\"https://a\","
            "\"supportedApiSurfaces\":[{\"format\":\"openai\",\"supportedParams\":"
            "[{\"name\":\"tools\"},{\"nme\":\"x\"}]}]}]}");
        assert_int_equal(aigw_error_count(err), 2);
        has_problem(err, "providers[0].supportedApiSurfaces[0].supportedParams[1].nme",
                    "unknown field");
        has_problem(err, "providers[0].supportedApiSurfaces[0].supportedParams[1].name",
                    "required field is missing");
        aigw_error_free(err);
    }
    only_problem("{\"providers\":{}}", "providers", "expected an array, got an object");
    only_problem("{\"providerKeys\":[{\"id\":\"a\",\"providerId\":\"openai\",\"value\":\"v\"},"
                 "{\"id\":\"a\",\"providerId\":\"openai\",\"value\":\"w\"}]}",
                 "providerKeys[1].id", "duplicate id (also providerKeys[0])");
    only_problem("{\"providerKeys\":[{\"id\":\"a\",\"providerId\":\"mistral\",\"value\":\"v\"}]}",
                 "providerKeys[0].providerId", "no provider with this id");
    only_problem("{\"providerKeys\":[{\"providerId\":\"openai\",\"value\":\"v\"}]}",
                 "providerKeys[0].id", "required field is missing");
    only_problem("{\"providerKeys\":[{\"id\":true,\"providerId\":\"openai\",\"value\":\"v\"}]}",
                 "providerKeys[0].id", "expected a string, got a boolean");
    only_problem("{\"providerKeys\":[7]}", "providerKeys[0]", "expected an object, got a number");
    only_problem("[]", "", "expected an object, got an array");
}

static void test_many_problems_at_once(void **state)
{
    aigw_error *err;
    (void)state;
    err = parse_err("{\"providers\":[{\"providerId\":\"p\",\"baseUrl\":\"http://example.com\"}],"
                    "\"providerKeys\":[{\"id\":\"a\",\"providerId\":\"nope\",\"value\":\"v\"}],"
                    "\"accessKeyConfiguration\":{\"router\":{\"rules\":[{\"provider\":\"openai\","
                    "\"steps\":[{\"type\":\"user\",\"keys\":[{\"id\":\"zz\"}]}]}]}},"
                    "\"gatewayConfig\":{\"totalTimeout\":\"soon\",\"maxAttempts\":0},"
                    "\"wat\":null}");
    if (aigw_error_count(err) != 7)
        print_problems(err);
    assert_int_equal(aigw_error_count(err), 7);
    has_problem(err, "wat", "unknown field");
    has_problem(err, "providers[0].baseUrl", "loopback");
    has_problem(err, "providerKeys[0].providerId", "no provider with this id");
    has_problem(err, "accessKeyConfiguration.name", "required field is missing");
    has_problem(err, "accessKeyConfiguration.router.rules[0].steps[0].keys[0].id",
                "no provider key with this id");
    has_problem(err, "gatewayConfig.totalTimeout", "not a valid duration");
    has_problem(err, "gatewayConfig.maxAttempts", "between 1 and 1000");
    assert_non_null(strstr(aigw_error_message(err), "(and 6 more problems)"));
    aigw_error_free(err);
}

static void test_invalid_json(void **state)
{
    aigw_error *err;
    aigw_config *cfg = NULL;
    (void)state;
    only_problem("{\n  \"providers\": [1,]\n}", "", "invalid JSON at line 2, column 19");
    /* at the end of the text cJSON points at the last character */
    only_problem("{\"a\":1", "", "invalid JSON at line 1, column 6");
    only_problem("", "", "invalid JSON at line 1, column 1");
    only_problem("{}\n{}", "", "invalid JSON (text after the value) at line 2, column 1");
    /* cJSON would read "k\uzzzzX" as "k" (found by tests/fuzz) */
    only_problem("{\"providerKeys\":[{\"id\":\"k\\uzzzzX\"}]}", "",
                 "invalid JSON (a \\u escape that is not four hex digits) at line 1, column 26");
    only_problem("{\"a\":\"\\u12\"}", "",
                 "invalid JSON (a \\u escape that is not four hex digits) at line 1, column 7");
    only_problem("{\r\n\t\"x\": tru }", "", "invalid JSON at line 2");
    /* the length is what counts, not a NUL */
    assert_int_equal(aigw_config_parse("{}garbage", 2, &cfg, &err), AIGW_OK);
    assert_null(err);
    aigw_config_unref(cfg);
    /* NULL arguments */
    assert_int_equal(aigw_config_parse(NULL, 0, &cfg, &err), AIGW_EINVAL);
    assert_null(cfg);
    assert_int_equal(aigw_error_code(err), AIGW_EINVAL);
    aigw_error_free(err);
    assert_int_equal(aigw_config_parse("{}", 2, NULL, NULL), AIGW_EINVAL);
    assert_int_equal(aigw_config_load_file(NULL, &cfg, NULL), AIGW_EINVAL);
    assert_int_equal(aigw_config_load_file("/x", NULL, NULL), AIGW_EINVAL);
    /* a missing file */
    assert_int_equal(aigw_config_load_file("/nonexistent/aigw.json", &cfg, &err), AIGW_EIO);
    assert_null(cfg);
    assert_non_null(strstr(aigw_error_message(err), "/nonexistent/aigw.json"));
    aigw_error_free(err);
}

/* ------------------------------------------------------------------------ */
/* Allocation failures: every one is survived, nothing leaks (ASan)         */
/* ------------------------------------------------------------------------ */

static void sweep(const char *json, aigw_status want)
{
    long before, total, n;
    aigw_config *cfg = NULL;
    aigw_error *err = NULL;
    int ok_seen = 0, oom_seen = 0;
    before = aigw__alloc_count();
    assert_int_equal(aigw_config_parse(json, strlen(json), &cfg, &err), want);
    total = aigw__alloc_count() - before;
    aigw_config_unref(cfg);
    aigw_error_free(err);
    assert_true(total > 10);
    for (n = 1; n <= total + 5; n++) {
        aigw_status st;
        cfg = NULL;
        err = NULL;
        aigw__alloc_fail_at(n);
        st = aigw_config_parse(json, strlen(json), &cfg, &err);
        aigw__alloc_fail_at(0);
        if (st == AIGW_ENOMEM) {
            assert_null(cfg);
            oom_seen++;
        } else if (st == want) {
            ok_seen++;
            if (want == AIGW_OK)
                assert_non_null(cfg);
        } else {
            fail_msg("allocation %ld failing gave %s", n, aigw_status_name(st));
        }
        aigw_config_unref(cfg);
        aigw_error_free(err);
    }
    assert_true(oom_seen > 0);
    assert_true(ok_seen >= 5); /* the failures past the last allocation */
}

static void test_alloc_failures(void **state)
{
    (void)state;
    sweep(full_json, AIGW_OK);
    /* failing while reporting problems as well */
    sweep("{\"providers\":[{\"providerId\":\"p\",\"baseUrl\":\"http://x.com\"}],"
          "\"providerKeys\":[{\"id\":\"a\",\"providerId\":\"nope\",\"value\":\"v\"}],"
          "\"accessKeyConfiguration\":{\"router\":{\"rules\":[{\"provider\":\"openai\","
          "\"steps\":[{\"type\":\"user\",\"keys\":[{\"id\":\"zz\"}]}]}]}}}",
          AIGW_ECONFIG);
}

static void test_alloc_failures_load_file(void **state)
{
    char *file = write_temp(full_json, strlen(full_json));
    long n;
    int ok_seen = 0;
    (void)state;
    for (n = 1; n < 600; n++) {
        aigw_config *cfg = NULL;
        aigw_error *err = NULL;
        aigw_status st;
        aigw__alloc_fail_at(n);
        st = aigw_config_load_file(file, &cfg, &err);
        aigw__alloc_fail_at(0);
        assert_true(st == AIGW_OK || st == AIGW_ENOMEM);
        ok_seen += st == AIGW_OK;
        aigw_config_unref(cfg);
        aigw_error_free(err);
    }
    assert_true(ok_seen > 0);
    unlink(file);
    free(file);
}

/* gatewayConfig.healthStore.redis, exactly the issue's shape; its errors
 * at their paths, and never a password in them. */
static void test_health_store(void **state)
{
    aigw_config *cfg;
    aigw_error *err;
    size_t i;
    (void)state;
    if (!aigw__have_redis()) {
        only_problem("{\"gatewayConfig\":{\"healthStore\":{\"redis\":{\"url\":"
                     "\"redis://127.0.0.1:6379/0\"}}}}",
                     "gatewayConfig.healthStore.redis", "without the Redis health store");
        return;
    }
    cfg = parse_ok("{\"gatewayConfig\":{\"healthStore\":{\"redis\":{\"url\":"
                   "\"redis://127.0.0.1:6379/0\",\"keyPrefix\":\"aigw:\",\"timeout\":\"50ms\","
                   "\"syncInterval\":\"100ms\"}}}}");
    assert_true(cfg->has_store);
    assert_string_equal(cfg->store.url, "redis://127.0.0.1:6379/0");
    assert_string_equal(cfg->store.prefix, "aigw:");
    assert_int_equal(cfg->store.timeout_ms, 50);
    assert_int_equal(cfg->store.sync_ms, 100);
    assert_null(cfg->store.password.value);
    aigw_config_unref(cfg);
    /* only url is required: the defaults */
    setenv("AIGW_TEST_REDIS_PW", "s3cret-pw", 1);
    cfg = parse_ok("{\"gatewayConfig\":{\"healthStore\":{\"redis\":{\"url\":"
                   "\"unix:///run/redis.sock?db=2\",\"password\":{\"valueFrom\":{\"env\":"
                   "\"AIGW_TEST_REDIS_PW\"}},\"salt\":\"fleet-1\"}}}}");
    assert_string_equal(cfg->store.prefix, "aigw:");
    assert_int_equal(cfg->store.timeout_ms, 50);
    assert_int_equal(cfg->store.sync_ms, 100);
    assert_string_equal(cfg->store.password.value, "s3cret-pw");
    assert_string_equal(cfg->store.salt.value, "fleet-1");
    aigw_config_unref(cfg);
    cfg = parse_ok("{\"gatewayConfig\":{\"totalTimeout\":\"30s\"}}");
    assert_false(cfg->has_store);
    aigw_config_unref(cfg);

    only_problem("{\"gatewayConfig\":{\"healthStore\":{}}}", "gatewayConfig.healthStore",
                 "needs \"redis\"");
    only_problem("{\"gatewayConfig\":{\"healthStore\":{\"memcached\":{}}}}",
                 "gatewayConfig.healthStore.memcached", "unknown field (expected one of: redis)");
    only_problem("{\"gatewayConfig\":{\"healthStore\":{\"redis\":{}}}}",
                 "gatewayConfig.healthStore.redis.url", "required field is missing");
    only_problem("{\"gatewayConfig\":{\"healthStore\":{\"redis\":{\"url\":\"rediss://h:6380\"}}}}",
                 "gatewayConfig.healthStore.redis.url", "TLS");
    only_problem("{\"gatewayConfig\":{\"healthStore\":{\"redis\":{\"url\":\"http://h\"}}}}",
                 "gatewayConfig.healthStore.redis.url", "redis://");
    only_problem("{\"gatewayConfig\":{\"healthStore\":{\"redis\":{\"url\":\"redis://h\","
                 "\"timeout\":\"fast\"}}}}",
                 "gatewayConfig.healthStore.redis.timeout", "not a valid duration");
    only_problem("{\"gatewayConfig\":{\"healthStore\":{\"redis\":{\"url\":\"redis://h\","
                 "\"syncInterval\":\"0s\"}}}}",
                 "gatewayConfig.healthStore.redis.syncInterval", "at least");
    only_problem("{\"gatewayConfig\":{\"healthStore\":{\"redis\":{\"url\":\"redis://h\","
                 "\"keyPrefix\":\"a b\"}}}}",
                 "gatewayConfig.healthStore.redis.keyPrefix", "printable");
    only_problem("{\"gatewayConfig\":{\"healthStore\":{\"redis\":{\"url\":\"redis://h\","
                 "\"db\":1}}}}",
                 "gatewayConfig.healthStore.redis.db", "unknown field");
    only_problem("{\"gatewayConfig\":{\"healthStore\":{\"redis\":{\"url\":\"redis://h\","
                 "\"password\":{\"value\":\"x\",\"valueFrom\":{\"env\":\"X\"}}}}}}",
                 "gatewayConfig.healthStore.redis.password", "not both");
    only_problem("{\"gatewayConfig\":{\"healthStore\":{\"redis\":{\"url\":\"redis://h\","
                 "\"password\":{\"valueFrom\":{\"env\":\"AIGW_TEST_NO_SUCH_VAR\"}}}}}}",
                 "gatewayConfig.healthStore.redis.password.valueFrom.env", "not set");
    /* a password in a bad url is never quoted back */
    err = parse_err("{\"gatewayConfig\":{\"healthStore\":{\"redis\":{\"url\":"
                    "\"redis://:hunter2@h:99999/0\"}}}}");
    assert_int_equal(aigw_error_count(err), 1);
    assert_string_equal(aigw_error_path(err, 0), "gatewayConfig.healthStore.redis.url");
    for (i = 0; i < aigw_error_count(err); i++)
        assert_null(strstr(aigw_error_problem(err, i), "hunter2"));
    assert_null(strstr(aigw_error_message(err), "hunter2"));
    aigw_error_free(err);
}

/* gatewayConfig.tls: three paths to readable regular files, kept as given
 * (their contents are read by the transport, at each handshake); every
 * problem at its JSON path. */
static void test_tls(void **state)
{
    static const char pem[] = "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n";
    char *ca = write_temp(pem, sizeof pem - 1), *cert = write_temp(pem, sizeof pem - 1);
    char *key = write_temp(pem, sizeof pem - 1);
    char json[1024];
    aigw_config *cfg;
    aigw_error *err;
    (void)state;

    snprintf(json, sizeof json,
             "{\"gatewayConfig\":{\"tls\":{\"caBundle\":\"%s\",\"clientCertificate\":\"%s\","
             "\"clientKey\":\"%s\"}}}",
             ca, cert, key);
    cfg = parse_ok(json);
    assert_string_equal(cfg->tls_ca_file, ca);
    assert_string_equal(cfg->tls_client_cert, cert);
    assert_string_equal(cfg->tls_client_key, key);
    aigw_config_unref(cfg);
    sweep(json, AIGW_OK);
    /* each alone: the key may sit in the certificate's file */
    snprintf(json, sizeof json, "{\"gatewayConfig\":{\"tls\":{\"clientCertificate\":\"%s\"}}}",
             cert);
    cfg = parse_ok(json);
    assert_null(cfg->tls_ca_file);
    assert_string_equal(cfg->tls_client_cert, cert);
    assert_null(cfg->tls_client_key);
    aigw_config_unref(cfg);
    snprintf(json, sizeof json, "{\"gatewayConfig\":{\"tls\":{\"caBundle\":\"%s\"}}}", ca);
    cfg = parse_ok(json);
    assert_string_equal(cfg->tls_ca_file, ca);
    assert_null(cfg->tls_client_cert);
    aigw_config_unref(cfg);
    /* none, or an empty object: the system's CAs, no client certificate */
    cfg = parse_ok("{\"gatewayConfig\":{\"tls\":{}}}");
    assert_null(cfg->tls_ca_file);
    assert_null(cfg->tls_client_cert);
    assert_null(cfg->tls_client_key);
    aigw_config_unref(cfg);
    cfg = parse_ok("{\"gatewayConfig\":{}}");
    assert_null(cfg->tls_ca_file);
    aigw_config_unref(cfg);

    /* files that cannot be used */
    only_problem("{\"gatewayConfig\":{\"tls\":{\"caBundle\":\"/nonexistent/aigw/ca.pem\"}}}",
                 "gatewayConfig.tls.caBundle",
                 "cannot read file '/nonexistent/aigw/ca.pem': No such file or directory");
    only_problem("{\"gatewayConfig\":{\"tls\":{\"caBundle\":\"/tmp\"}}}",
                 "gatewayConfig.tls.caBundle", "'/tmp' is not a regular file");
    only_problem("{\"gatewayConfig\":{\"tls\":{\"caBundle\":\"/dev/null\"}}}",
                 "gatewayConfig.tls.caBundle", "'/dev/null' is not a regular file");
    snprintf(json, sizeof json,
             "{\"gatewayConfig\":{\"tls\":{\"clientCertificate\":\"/nonexistent/c.pem\","
             "\"clientKey\":\"%s\"}}}",
             key);
    only_problem(json, "gatewayConfig.tls.clientCertificate",
                 "cannot read file '/nonexistent/c.pem': No such file or directory");
    snprintf(json, sizeof json,
             "{\"gatewayConfig\":{\"tls\":{\"clientCertificate\":\"%s\",\"clientKey\":\"/tmp\"}}}",
             cert);
    only_problem(json, "gatewayConfig.tls.clientKey", "'/tmp' is not a regular file");
    /* a key needs its certificate */
    snprintf(json, sizeof json, "{\"gatewayConfig\":{\"tls\":{\"clientKey\":\"%s\"}}}", key);
    only_problem(json, "gatewayConfig.tls.clientKey",
                 "needs \"clientCertificate\" (the certificate this key is for)");
    /* types */
    only_problem("{\"gatewayConfig\":{\"tls\":{\"caBundle\":5}}}", "gatewayConfig.tls.caBundle",
                 "expected a string, got a number");
    only_problem("{\"gatewayConfig\":{\"tls\":{\"caBundle\":null}}}",
                 "gatewayConfig.tls.caBundle", "expected a string, got null");
    only_problem("{\"gatewayConfig\":{\"tls\":{\"caBundle\":\"\"}}}", "gatewayConfig.tls.caBundle",
                 "must not be empty");
    only_problem("{\"gatewayConfig\":{\"tls\":{\"clientCertificate\":[]}}}",
                 "gatewayConfig.tls.clientCertificate", "expected a string, got an array");
    only_problem("{\"gatewayConfig\":{\"tls\":\"/etc/ssl/ca.pem\"}}", "gatewayConfig.tls",
                 "expected an object, got a string");
    only_problem("{\"gatewayConfig\":{\"tls\":true}}", "gatewayConfig.tls",
                 "expected an object, got a boolean");
    only_problem("{\"gatewayConfig\":{\"tls\":null}}", "gatewayConfig.tls",
                 "expected an object, got null");
    only_problem("{\"gatewayConfig\":{\"tls\":{\"verify\":false}}}", "gatewayConfig.tls.verify",
                 "unknown field (expected one of: caBundle, clientCertificate, clientKey)");
    snprintf(json, sizeof json,
             "{\"gatewayConfig\":{\"tls\":{\"caBundle\":\"%s\",\"caBundle\":\"%s\"}}}", ca, ca);
    only_problem(json, "gatewayConfig.tls.caBundle", "duplicate field");
    /* all at once, each at its path */
    err = parse_err("{\"gatewayConfig\":{\"tls\":{\"caBundle\":\"/tmp\","
                    "\"clientKey\":\"/nonexistent/k.pem\"}}}");
    assert_int_equal(aigw_error_count(err), 3);
    has_problem(err, "gatewayConfig.tls.caBundle", "'/tmp' is not a regular file");
    has_problem(err, "gatewayConfig.tls.clientKey", "cannot read file '/nonexistent/k.pem'");
    has_problem(err, "gatewayConfig.tls.clientKey", "needs \"clientCertificate\"");
    aigw_error_free(err);

    unlink(ca);
    unlink(cert);
    unlink(key);
    free(ca);
    free(cert);
    free(key);
}

/* ------------------------------------------------------------------------ */
/* cJSON out of memory (its hooks, which the library never sets, set here)  */
/* ------------------------------------------------------------------------ */

/* A gateway file with each cJSON allocation failing in turn, once and from
 * it on: AIGW_ENOMEM, never a problem with the text.  A text that is bad
 * stays bad, at its line and column, whatever the memory. */
static void test_cjson_out_of_memory(void **state)
{
    static const char json[] =
        "{\"providerKeys\":[{\"id\":\"k1\",\"providerId\":\"openai\",\"value\":\"sk-oom-1\"}],"
        "\"accessKeyConfiguration\":{\"name\":\"oom\","
        "\"router\":{\"rules\":[{\"provider\":\"openai\","
        "\"steps\":[{\"type\":\"user\",\"keys\":[{\"id\":\"k1\"}]}]}]}},"
        "\"gatewayConfig\":{\"totalTimeout\":\"30s\",\"maxAttempts\":3}}";
    static const char *const bad[][2] = {
        {"{\n  \"providers\": [1,]\n}", "invalid JSON at line 2, column 19"},
        {"{\"a\":1", "invalid JSON at line 1, column 6"},
        {"{}\n{}", "invalid JSON (text after the value) at line 2, column 1"},
        {"{\"a\" 1}", "invalid JSON at line 1, column 6"},
    };
    aigw_config *cfg;
    aigw_error *err;
    long n, k, before;
    size_t i;
    int from;
    char *deep, want[128];
    (void)state;
    oom_cjson_hooks(OOM_CJSON_GATE);
    before = oom_count(&OOM_CJSON);
    aigw_config_unref(parse_ok(json));
    n = oom_count(&OOM_CJSON) - before;
    assert_true(n > 10);
    for (from = 0; from <= 1; from++)
        for (k = 1; k <= n; k++) {
            cfg = (aigw_config *)1;
            err = NULL;
            (from ? oom_fail_from : oom_fail_at)(&OOM_CJSON, k);
            assert_int_equal(aigw_config_parse(json, sizeof json - 1, &cfg, &err), AIGW_ENOMEM);
            oom_fail_at(&OOM_CJSON, 0);
            assert_null(cfg);
            assert_non_null(err);
            assert_int_equal(aigw_error_code(err), AIGW_ENOMEM);
            assert_string_equal(aigw_error_message(err), "out of memory");
            aigw_error_free(err);
        }
    deep = deep_json(999, "[");
    snprintf(want, sizeof want, "nested deeper than 1000 levels at line 1, column %zu",
             strlen("{\"gatewayConfig\":{\"metadata\":") + 999);
    for (i = 0; i <= sizeof bad / sizeof *bad; i++)
        for (k = 1; k <= 3; k++) {
            oom_fail_from(&OOM_CJSON, k);
            if (i < sizeof bad / sizeof *bad)
                only_problem(bad[i][0], "", bad[i][1]);
            else
                only_problem(deep, "", want);
            oom_fail_at(&OOM_CJSON, 0);
        }
    free(deep);
    oom_cjson_hooks(OOM_CJSON_MALLOC);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_akc_fixture),
        cmocka_unit_test(test_fixture_01),
        cmocka_unit_test(test_fixture_others),
        cmocka_unit_test(test_fixture_resources_in_gateway_file),
        cmocka_unit_test(test_full_providers),
        cmocka_unit_test(test_full_keys),
        cmocka_unit_test(test_full_access_and_rules),
        cmocka_unit_test(test_full_gateway_config),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_refcount),
        cmocka_unit_test(test_access_key_configurations),
        cmocka_unit_test(test_access_key_problems),
        cmocka_unit_test(test_bare_specifics),
        cmocka_unit_test(test_catalog),
        cmocka_unit_test(test_unknown_fields),
        cmocka_unit_test(test_unknown_key_id),
        cmocka_unit_test(test_key_of_another_provider),
        cmocka_unit_test(test_urls),
        cmocka_unit_test(test_control_chars_in_secrets),
        cmocka_unit_test(test_durations_and_limits),
        cmocka_unit_test(test_health_knobs),
        cmocka_unit_test(test_health_problems),
        cmocka_unit_test(test_health_store),
        cmocka_unit_test(test_strategies),
        cmocka_unit_test(test_key_weights),
        cmocka_unit_test(test_secret_sources),
        cmocka_unit_test(test_secret_size_bound),
        cmocka_unit_test(test_steps_and_rules),
        cmocka_unit_test(test_providers_and_keys_problems),
        cmocka_unit_test(test_many_problems_at_once),
        cmocka_unit_test(test_invalid_json),
        cmocka_unit_test(test_utf8_strings),
        cmocka_unit_test(test_nesting_limit),
        cmocka_unit_test(test_alloc_failures),
        cmocka_unit_test(test_alloc_failures_load_file),
        cmocka_unit_test(test_tls),
        cmocka_unit_test(test_cjson_out_of_memory),
    };
    return cmocka_run_group_tests(tests, full_setup, full_teardown);
}
