/* route.c - from a model spec to a provider, the access scope, the rule. */
#include "internal.h"

#include <stdatomic.h>
#include <string.h>

static const aigw_provider *provider_with_model(const aigw_config *cfg, const char *model)
{
    size_t i, j;
    for (i = 0; i < cfg->n_providers; i++)
        for (j = 0; j < cfg->providers[i].n_models; j++)
            if (strcmp(cfg->providers[i].models[j], model) == 0)
                return &cfg->providers[i];
    return NULL;
}

/* aigw__config_provider of spec[0..n) (no NUL in it): copied on the stack
 * when it is short, as provider ids are.  With a memo (whose holder knows
 * that no two ids of cfg match each other ignoring case), the provider
 * found last time, when its id is the one asked for. */
static const aigw_provider *provider_prefix(const aigw_config *cfg, const char *spec, size_t n,
                                            _Atomic(const aigw_provider *) *memo, int *nomem)
{
    char buf[64], *heap = NULL;
    const aigw_provider *p = memo ? atomic_load_explicit(memo, memory_order_acquire) : NULL;
    if (p && aigw__strncasecmp(p->id, spec, n) == 0 && p->id[n] == '\0')
        return p;
    if (n < sizeof buf) {
        memcpy(buf, spec, n);
        buf[n] = '\0';
    } else if (!(heap = aigw__strndup(spec, n))) {
        *nomem = 1;
        return NULL;
    }
    p = aigw__config_provider(cfg, heap ? heap : buf);
    aigw__free(heap);
    if (memo && p)
        atomic_store_explicit(memo, p, memory_order_release);
    return p;
}

int aigw__resolve_model_in(const aigw_config *cfg, const char *spec,
                           _Atomic(const aigw_provider *) *memo, const aigw_provider **prov,
                           const char **model)
{
    const char *colon = strchr(spec, ':');
    const aigw_provider *p = NULL;
    const char *id = spec;
    int nomem = 0;

    *prov = NULL;
    *model = NULL;
    if (colon && colon != spec && colon[1] != '\0') {
        /* "provider:model" when the prefix names a provider; otherwise the
         * colon belongs to the model id (e.g. "llama3.2:8b"). */
        p = provider_prefix(cfg, spec, (size_t)(colon - spec), memo, &nomem);
        if (nomem)
            return -2;
        if (p)
            id = colon + 1;
    }
    if (!p)
        p = provider_with_model(cfg, spec);
    if (!p) {
        const aigw_catalog_entry *e = aigw__catalog_for_model(spec);
        if (e)
            p = aigw__config_provider(cfg, e->id);
    }
    if (!p || id[0] == '\0')
        return -1;
    *model = id;
    *prov = p;
    return 0;
}

int aigw__resolve_model(const aigw_config *cfg, const char *spec, const aigw_provider **prov,
                        char **model)
{
    const char *id;
    int rc = aigw__resolve_model_in(cfg, spec, NULL, prov, &id);
    *model = NULL;
    if (rc != 0)
        return rc;
    if (!(*model = aigw__strdup(id))) {
        *prov = NULL;
        return -2;
    }
    return 0;
}

const char *aigw__upstream_model(const aigw_provider *p, const char *model)
{
    size_t i;
    for (i = 0; i < p->n_models; i++)
        if (p->upstream_models && p->upstream_models[i] && strcmp(p->models[i], model) == 0)
            return p->upstream_models[i];
    return model;
}

/* An allow-list entry names a model as "model", "provider/model" or
 * "provider:model"; a trailing '*' matches any rest (a local extension). */
static bool glob_eq(const char *pat, const char *s)
{
    size_t n = strlen(pat);
    if (n > 0 && pat[n - 1] == '*')
        return strncmp(pat, s, n - 1) == 0;
    return strcmp(pat, s) == 0;
}

static bool entry_matches(const char *entry, const char *provider, const char *model)
{
    size_t plen = strlen(provider);
    const char *m = entry;
    /* "openai:gpt-4o", "openai/gpt-4o", even "openai:openai/gpt-4o" */
    if (strncmp(m, provider, plen) == 0 && m[plen] == ':')
        m += plen + 1;
    if (strncmp(m, provider, plen) == 0 && m[plen] == '/' && glob_eq(m + plen + 1, model))
        return true;
    return glob_eq(m, model);
}

bool aigw__access_allows(const aigw_akc *cfg, const char *provider, const char *model)
{
    size_t i;
    bool ok;
    if (cfg->has_provider_allow) {
        ok = false;
        for (i = 0; i < cfg->n_provider_allow && !ok; i++)
            ok = strcmp(cfg->provider_allow[i], provider) == 0;
        if (!ok)
            return false;
    }
    if (cfg->has_model_allow) {
        ok = false;
        for (i = 0; i < cfg->n_model_allow && !ok; i++)
            ok = entry_matches(cfg->model_allow[i], provider, model);
        if (!ok)
            return false;
    }
    return true;
}

const aigw_rule *aigw__rule_for(const aigw_akc *cfg, const char *provider, const char *model)
{
    size_t i;
    for (i = 0; i < cfg->n_rules; i++) {
        const aigw_rule *r = &cfg->rules[i];
        if (r->model && strcmp(r->model, model) == 0 &&
            (!r->provider || strcmp(r->provider, provider) == 0))
            return r;
    }
    for (i = 0; i < cfg->n_rules; i++) {
        const aigw_rule *r = &cfg->rules[i];
        if (!r->model && r->provider && strcmp(r->provider, provider) == 0)
            return r;
    }
    return NULL;
}
