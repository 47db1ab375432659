/* catalog.c - the built-in providers (mirrors ngrok AI Gateway's catalog).
 *
 * Base URLs are the providers' OpenAI-compatible endpoints, the one API
 * surface the engine speaks; native_auth records what the provider's own
 * API wants, for a later native surface.  Sources: notes/catalog.md. */
#include "internal.h"

#include <string.h>

/* A prefix ending in '-' matches any id that starts with it.  Any other
 * prefix is a family name ("o3") and matches the id itself or the id
 * followed by '-' ("o3-pro"), so that "o3x" or "omni" are not caught. */
static const char *const openai_prefixes[] = {"gpt-", "o1", "o3", "o4", "chatgpt-",
                                              "text-embedding-", "dall-e", NULL};
static const char *const anthropic_prefixes[] = {"claude-", NULL};
static const char *const google_prefixes[] = {"gemini-", "gemma-", NULL};
static const char *const deepseek_prefixes[] = {"deepseek-", NULL};
static const char *const moonshot_prefixes[] = {"kimi-", "moonshot-", NULL};
static const char *const zai_prefixes[] = {"glm-", NULL};
/* Aggregators and hosts of other vendors' models own no prefix: their ids
 * are "author/model", reachable only as "provider:model". */
static const char *const no_prefixes[] = {NULL};

static const aigw_catalog_entry catalog[] = {
    {"openai", "OpenAI", "https://api.openai.com/v1", AIGW_AUTH_BEARER, openai_prefixes},
    {"anthropic", "Anthropic", "https://api.anthropic.com/v1", AIGW_AUTH_X_API_KEY,
     anthropic_prefixes},
    {"google", "Google", "https://generativelanguage.googleapis.com/v1beta/openai",
     AIGW_AUTH_GOOG_API_KEY, google_prefixes},
    {"deepseek", "DeepSeek", "https://api.deepseek.com/v1", AIGW_AUTH_BEARER, deepseek_prefixes},
    {"groq", "Groq", "https://api.groq.com/openai/v1", AIGW_AUTH_BEARER, no_prefixes},
    {"openrouter", "OpenRouter", "https://openrouter.ai/api/v1", AIGW_AUTH_BEARER, no_prefixes},
    {"hyperbolic", "Hyperbolic", "https://api.hyperbolic.xyz/v1", AIGW_AUTH_BEARER, no_prefixes},
    {"inference-net", "Inference.net", "https://api.inference.net/v1", AIGW_AUTH_BEARER,
     no_prefixes},
    {"moonshotai", "Moonshot AI", "https://api.moonshot.ai/v1", AIGW_AUTH_BEARER,
     moonshot_prefixes},
    {"z-ai", "Z.ai", "https://api.z.ai/api/paas/v4", AIGW_AUTH_BEARER, zai_prefixes},
};

#define CATALOG_N (sizeof catalog / sizeof catalog[0])

/* ngrok's alias table: other spellings its API accepts for a provider id
 * (matched case-insensitively, like the ids themselves). */
static const struct alias {
    const char *alias;
    const char *id;
} aliases[] = {
    {"open-ai", "openai"},         {"gemini", "google"},       {"deep-seek", "deepseek"},
    {"groqcloud", "groq"},         {"open-router", "openrouter"},
    {"inference.net", "inference-net"}, {"inference_net", "inference-net"},
};

size_t aigw__catalog_count(void)
{
    return CATALOG_N;
}

const aigw_catalog_entry *aigw__catalog_at(size_t i)
{
    return i < CATALOG_N ? &catalog[i] : NULL;
}

static const aigw_catalog_entry *find_exact(const char *id)
{
    size_t i;
    for (i = 0; i < CATALOG_N; i++)
        if (aigw__strcasecmp(catalog[i].id, id) == 0)
            return &catalog[i];
    return NULL;
}

const aigw_catalog_entry *aigw__catalog_find(const char *id)
{
    const aigw_catalog_entry *e;
    size_t i;
    if (!id)
        return NULL;
    if ((e = find_exact(id)) != NULL)
        return e;
    for (i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
        if (aigw__strcasecmp(aliases[i].alias, id) == 0)
            return find_exact(aliases[i].id);
    return NULL;
}

static bool prefix_matches(const char *prefix, const char *model)
{
    size_t n = strlen(prefix);
    if (aigw__strncasecmp(prefix, model, n) != 0)
        return false;
    if (prefix[n - 1] == '-')
        return true;
    return model[n] == '\0' || model[n] == '-';
}

const aigw_catalog_entry *aigw__catalog_for_model(const char *model)
{
    size_t i, j;
    if (!model)
        return NULL;
    for (i = 0; i < CATALOG_N; i++)
        for (j = 0; catalog[i].prefixes[j]; j++)
            if (prefix_matches(catalog[i].prefixes[j], model))
                return &catalog[i];
    return NULL;
}
