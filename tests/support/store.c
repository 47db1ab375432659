/*
 * store.c - a fake health store in memory (aigw_health_store), shared by
 * several clients of one test program as Redis is by a fleet: expiry read
 * from a clock the test gives (the fake clock of tests/support/clock.c, so
 * time moves only when the test says), calls counted per operation, a
 * switch that makes every call fail as a store that does not answer, and
 * raw access to write garbage and read what the clients wrote.
 */
#include "support.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAKE_STORE_MAX 512

typedef struct fs_entry {
    char name[80];
    char value[256]; /* may be longer than a fact can be: garbage */
    int64_t expires; /* INT64_MAX: no expiry */
    bool wrong_type; /* another type than a string */
} fs_entry;

struct fake_store {
    pthread_mutex_t mu;
    fake_clock *clock;
    int64_t latency; /* each call moves the clock this much */
    int64_t late;    /* each write lands this much later than asked */
    fs_entry v[FAKE_STORE_MAX];
    size_t n;
    bool fail;
    long calls[3];
};

fake_store *fake_store_new(fake_clock *clock)
{
    fake_store *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    pthread_mutex_init(&s->mu, NULL);
    s->clock = clock;
    return s;
}

void fake_store_free(fake_store *s)
{
    if (!s)
        return;
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* Under the mutex: drops what expired; the entry named, or NULL. */
static fs_entry *find(fake_store *s, const char *name)
{
    size_t i;
    for (i = 0; i < s->n;) {
        if (s->v[i].expires <= s->clock->now) {
            s->v[i] = s->v[--s->n];
            continue;
        }
        i++;
    }
    for (i = 0; i < s->n; i++)
        if (strcmp(s->v[i].name, name) == 0)
            return &s->v[i];
    return NULL;
}

static fs_entry *make(fake_store *s, const char *name)
{
    fs_entry *e = find(s, name);
    if (e || s->n == FAKE_STORE_MAX)
        return e;
    e = &s->v[s->n++];
    memset(e, 0, sizeof *e);
    snprintf(e->name, sizeof e->name, "%s", name);
    return e;
}

static void read_into(fake_store *s, aigw_store_entry *out)
{
    fs_entry *e = find(s, out->name);
    out->value[0] = '\0';
    if (!e) {
        out->ttl_ms = AIGW_STORE_ABSENT;
    } else if (e->wrong_type || e->expires == INT64_MAX ||
               strlen(e->value) >= sizeof out->value) {
        out->ttl_ms = AIGW_STORE_UNREADABLE;
    } else {
        memcpy(out->value, e->value, strlen(e->value) + 1); /* fits: checked */
        out->ttl_ms = e->expires - s->clock->now;
    }
}

static int fs_get(void *ud, aigw_store_entry *entries, size_t n)
{
    fake_store *s = ud;
    size_t i;
    pthread_mutex_lock(&s->mu);
    s->calls[0]++;
    s->clock->now += s->latency;
    if (s->fail) {
        pthread_mutex_unlock(&s->mu);
        return -1;
    }
    for (i = 0; i < n; i++)
        read_into(s, &entries[i]);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

static int fs_put(void *ud, const aigw_store_entry *entries, size_t n)
{
    fake_store *s = ud;
    size_t i;
    pthread_mutex_lock(&s->mu);
    s->calls[1]++;
    s->clock->now += s->latency;
    if (s->fail) {
        pthread_mutex_unlock(&s->mu);
        return -1;
    }
    for (i = 0; i < n; i++) {
        const aigw_store_entry *w = &entries[i];
        fs_entry *e = find(s, w->name);
        if (w->ttl_ms > 0) {
            if ((e = make(s, w->name)) != NULL) {
                snprintf(e->value, sizeof e->value, "%s", w->value);
                e->expires = s->clock->now + w->ttl_ms + s->late;
                e->wrong_type = false;
            }
        } else if (e && (w->value[0] == '\0' || (!e->wrong_type && strcmp(e->value, w->value) == 0))) {
            *e = s->v[--s->n];
        }
    }
    pthread_mutex_unlock(&s->mu);
    return 0;
}

static int fs_claim(void *ud, aigw_store_entry *w)
{
    fake_store *s = ud;
    fs_entry *e;
    pthread_mutex_lock(&s->mu);
    s->calls[2]++;
    s->clock->now += s->latency;
    if (s->fail) {
        pthread_mutex_unlock(&s->mu);
        return -1;
    }
    if (find(s, w->name)) {
        read_into(s, w);
        pthread_mutex_unlock(&s->mu);
        return 0;
    }
    if ((e = make(s, w->name)) != NULL) {
        snprintf(e->value, sizeof e->value, "%s", w->value);
        e->expires = s->clock->now + w->ttl_ms;
    }
    pthread_mutex_unlock(&s->mu);
    return 1;
}

const aigw_health_store FAKE_STORE = {AIGW_HEALTH_STORE_VERSION, "fake", fs_get, fs_put,
                                      fs_claim, NULL};

void fake_store_latency(fake_store *s, int64_t ms, int64_t late_ms)
{
    pthread_mutex_lock(&s->mu);
    s->latency = ms;
    s->late = late_ms;
    pthread_mutex_unlock(&s->mu);
}

void fake_store_fail(fake_store *s, bool fail)
{
    pthread_mutex_lock(&s->mu);
    s->fail = fail;
    pthread_mutex_unlock(&s->mu);
}

long fake_store_calls(fake_store *s, const char *op)
{
    long n;
    int i = strcmp(op, "get") == 0 ? 0 : strcmp(op, "put") == 0 ? 1 : 2;
    pthread_mutex_lock(&s->mu);
    n = s->calls[i];
    pthread_mutex_unlock(&s->mu);
    return n;
}

void fake_store_raw(fake_store *s, const char *name, const char *value, int64_t ttl_ms,
                    bool wrong_type)
{
    fs_entry *e;
    pthread_mutex_lock(&s->mu);
    if ((e = make(s, name)) != NULL) {
        snprintf(e->value, sizeof e->value, "%s", value);
        e->expires = ttl_ms < 0 ? INT64_MAX : s->clock->now + ttl_ms;
        e->wrong_type = wrong_type;
    }
    pthread_mutex_unlock(&s->mu);
}

size_t fake_store_find(fake_store *s, const char *prefix, const char *value_prefix,
                       char *name, size_t name_size, char *value, size_t value_size,
                       int64_t *ttl)
{
    size_t i, found = 0;
    pthread_mutex_lock(&s->mu);
    find(s, ""); /* drops what expired */
    for (i = 0; i < s->n; i++) {
        fs_entry *e = &s->v[i];
        if (strncmp(e->name, prefix, strlen(prefix)) != 0 ||
            strncmp(e->value, value_prefix, strlen(value_prefix)) != 0)
            continue;
        if (found++ == 0) {
            if (name)
                snprintf(name, name_size, "%s", e->name);
            if (value)
                snprintf(value, value_size, "%s", e->value);
            if (ttl)
                *ttl = e->expires == INT64_MAX ? -1 : e->expires - s->clock->now;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return found;
}

size_t fake_store_dump(fake_store *s, char *buf, size_t size)
{
    size_t i, len = 0;
    pthread_mutex_lock(&s->mu);
    find(s, "");
    if (size)
        buf[0] = '\0';
    for (i = 0; i < s->n && len < size; i++) {
        int w = snprintf(buf + len, size - len, "%s=%s\n", s->v[i].name, s->v[i].value);
        if (w < 0)
            break;
        len += (size_t)w;
    }
    i = s->n;
    pthread_mutex_unlock(&s->mu);
    return i;
}
