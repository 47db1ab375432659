/* headers.c - a small list of HTTP headers, names lower-cased. */
#include "internal.h"

#include <string.h>

int aigw__hdrs_addn(aigw_hdrs *h, const char *name, size_t nlen, const char *value, size_t vlen)
{
    aigw_hdr *hd;
    size_t i;
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 8;
        aigw_hdr *v = aigw__realloc(h->v, cap * sizeof *v);
        if (!v)
            return -1;
        h->v = v;
        h->cap = cap;
    }
    hd = &h->v[h->n];
    hd->name = aigw__malloc(nlen + 1);
    hd->value = aigw__strndup(value, vlen);
    if (!hd->name || !hd->value) {
        aigw__free(hd->name);
        aigw__free(hd->value);
        return -1;
    }
    for (i = 0; i < nlen; i++) /* copied lower-cased */
        hd->name[i] = (char)aigw__lower((unsigned char)name[i]);
    hd->name[nlen] = '\0';
    h->n++;
    return 0;
}

int aigw__hdrs_add(aigw_hdrs *h, const char *name, const char *value)
{
    return aigw__hdrs_addn(h, name, strlen(name), value, strlen(value));
}

const char *aigw__hdrs_get(const aigw_hdrs *h, const char *name)
{
    size_t i;
    if (!h)
        return NULL;
    for (i = 0; i < h->n; i++)
        if (aigw__strcasecmp(h->v[i].name, name) == 0)
            return h->v[i].value;
    return NULL;
}

void aigw__hdrs_free(aigw_hdrs *h)
{
    size_t i;
    for (i = 0; i < h->n; i++) {
        aigw__free(h->v[i].name);
        aigw__free(h->v[i].value);
    }
    aigw__free(h->v);
    h->v = NULL;
    h->n = h->cap = 0;
}
