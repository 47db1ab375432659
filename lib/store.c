/*
 * store.c - the health store behind a client's tables (aigw_health_store):
 * the calls into it, counted, a store that does not answer switching the
 * client to its own state with back-off; the names facts live under; and
 * the facts' values, written and read back (never trusted blindly).
 *
 * A name is "<kind>:<16 hex digits>": the kind of fact ('b' a key's bench,
 * 'c' an endpoint's cooldown gate, 'o' / 'p' an endpoint breaker's open
 * fact / probe claim, 'h' / 'q' a host breaker's) and a SipHash of the
 * entity's identity under the fleet key, which the configuration's
 * healthStore salt gives (the same in every process that loads it).  A key
 * enters its identity only as a fleet-keyed hash of its value: no name
 * holds a key value or anything it could be recovered from.
 */
#include "health_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* The back-off after a store did not answer: doubling from the first to
 * the last, retried on a later request. */
#define BACKOFF_FIRST_MS 250
#define BACKOFF_MAX_MS 2000

static const uint8_t fleet_default[16] = {'l', 'i', 'b', 'a', 'i', 'g', 'w', ' ',
                                          'f', 'l', 'e', 'e', 't', ' ', 'v', '1'};

void aigw__store_init(aigw_store *st, const aigw_secret *salt)
{
    uint64_t a, b, r;
    memset(st, 0, sizeof *st);
    memcpy(st->fkey, fleet_default, sizeof st->fkey);
    if (salt && salt->value && salt->len) {
        /* two halves of a 128-bit key, each a keyed hash of the salt */
        a = aigw__siphash24(fleet_default, salt->value, salt->len);
        st->fkey[0] ^= 0x5a;
        b = aigw__siphash24(st->fkey, salt->value, salt->len);
        memcpy(st->fkey, &a, 8);
        memcpy(st->fkey + 8, &b, 8);
    }
    aigw__random_bytes(&r, sizeof r);
    snprintf(st->token, sizeof st->token, "%016" PRIx64, r);
    strcpy(st->kind, "local");
    atomic_init(&st->down_until, AIGW_NONE_MS);
    atomic_init(&st->backoff_ms, 0);
    atomic_init(&st->state, AIGW_STORE_IDLE);
    atomic_init(&st->syncs, 0);
    atomic_init(&st->writes, 0);
    atomic_init(&st->claims, 0);
    atomic_init(&st->errors, 0);
    atomic_init(&st->fallbacks, 0);
    atomic_init(&st->recoveries, 0);
    atomic_init(&st->ignored, 0);
}

void aigw__store_set(aigw_store *st, const aigw_health_store *vt, void *ud, int64_t sync_ms)
{
    if (st->on && st->vt.destroy)
        st->vt.destroy(st->ud);
    st->on = vt != NULL;
    if (vt) {
        st->vt = *vt;
        st->ud = ud;
        snprintf(st->kind, sizeof st->kind, "%s", vt->kind && vt->kind[0] ? vt->kind : "custom");
    } else {
        memset(&st->vt, 0, sizeof st->vt);
        st->ud = NULL;
        strcpy(st->kind, "local");
    }
    st->sync_ms = sync_ms > 0 ? sync_ms : 100;
    atomic_store(&st->down_until, AIGW_NONE_MS);
    atomic_store(&st->backoff_ms, 0);
    atomic_store(&st->state, AIGW_STORE_IDLE);
}

bool aigw__store_usable(aigw_store *st, int64_t now)
{
    int64_t until;
    if (!st->on)
        return false;
    until = atomic_load_explicit(&st->down_until, memory_order_relaxed);
    return until == AIGW_NONE_MS || now >= until;
}

/* Whether this caller may call the store now: always while it answers;
 * once its back-off is over, one caller tries it again (the others go on
 * alone until that one has its answer).  *retry: this caller is the one. */
static bool may_call(aigw_store *st, int64_t now, bool *retry)
{
    int64_t until = atomic_load(&st->down_until);
    *retry = false;
    if (!st->on)
        return false;
    if (until == AIGW_NONE_MS)
        return true;
    if (now < until)
        return false;
    *retry = atomic_compare_exchange_strong(&st->down_until, &until,
                                            now + atomic_load(&st->backoff_ms) + 1);
    return *retry;
}

/* After a call: the store answered (rc >= 0) or not.  The back-off starts
 * at its first step when the store stops answering and doubles each time a
 * try after it fails (per incident, not per caller). */
static int settle(aigw_store *st, int rc, bool retry, int64_t now)
{
    int64_t b;
    if (rc >= 0) {
        if (atomic_exchange(&st->state, AIGW_STORE_UP) == AIGW_STORE_DOWN)
            atomic_fetch_add(&st->recoveries, 1);
        atomic_store(&st->backoff_ms, 0);
        atomic_store(&st->down_until, AIGW_NONE_MS);
        return rc;
    }
    atomic_fetch_add(&st->errors, 1);
    if (retry) {
        b = atomic_load(&st->backoff_ms) * 2;
        b = b < BACKOFF_FIRST_MS ? BACKOFF_FIRST_MS : b > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : b;
        atomic_store(&st->backoff_ms, b);
        atomic_store(&st->down_until, now + b);
    } else if (atomic_load(&st->state) != AIGW_STORE_DOWN) {
        atomic_store(&st->backoff_ms, BACKOFF_FIRST_MS);
        atomic_store(&st->down_until, now + BACKOFF_FIRST_MS);
    }
    if (atomic_exchange(&st->state, AIGW_STORE_DOWN) != AIGW_STORE_DOWN)
        atomic_fetch_add(&st->fallbacks, 1);
    return -1;
}

int aigw__store_get(aigw_store *st, aigw_store_entry *e, size_t n, int64_t now)
{
    bool retry;
    if (n == 0)
        return aigw__store_usable(st, now) ? 0 : -1;
    if (!may_call(st, now, &retry))
        return -1;
    atomic_fetch_add(&st->syncs, 1);
    return settle(st, st->vt.get(st->ud, e, n) == 0 ? 0 : -1, retry, now);
}

int aigw__store_put(aigw_store *st, const aigw_store_entry *e, size_t n, int64_t now)
{
    bool retry;
    if (n == 0)
        return aigw__store_usable(st, now) ? 0 : -1;
    if (!may_call(st, now, &retry))
        return -1;
    atomic_fetch_add(&st->writes, 1);
    return settle(st, st->vt.put(st->ud, e, n) == 0 ? 0 : -1, retry, now);
}

int aigw__store_claim(aigw_store *st, aigw_store_entry *e, int64_t now)
{
    bool retry;
    int rc;
    if (!may_call(st, now, &retry))
        return -1;
    atomic_fetch_add(&st->claims, 1);
    rc = st->vt.claim(st->ud, e);
    return settle(st, rc == 0 || rc == 1 ? rc : -1, retry, now);
}

void aigw__store_name(char out[24], char kind, uint64_t fid)
{
    snprintf(out, 24, "%c:%016" PRIx64, kind, fid);
}

void aigw__fact_entry(aigw_store_entry *e, const char *name, const aigw_store *st,
                      aigw_fact_kind kind, aigw_class cls, int64_t window, int64_t ttl_ms)
{
    const char *c = aigw__class_name(cls);
    e->name = name;
    e->ttl_ms = ttl_ms;
    switch (kind) {
    case AIGW_FACT_BENCH:
        snprintf(e->value, sizeof e->value, "bench %s", c ? c : "auth");
        break;
    case AIGW_FACT_COOL:
        snprintf(e->value, sizeof e->value, "cool");
        break;
    case AIGW_FACT_TRIAL:
        snprintf(e->value, sizeof e->value, "trial %s", st->token);
        break;
    case AIGW_FACT_OPEN:
        snprintf(e->value, sizeof e->value, "open %s %" PRId64, c ? c : "server", window);
        break;
    case AIGW_FACT_PROBE:
        snprintf(e->value, sizeof e->value, "probe %s", st->token);
        break;
    case AIGW_FACT_CLEAR:
        snprintf(e->value, sizeof e->value, "clear");
        break;
    }
}

/* A failure class by name; -1 unknown (or none). */
static int class_by_name(const char *s, size_t n)
{
    int c;
    for (c = 1; c < AIGW_CLASS__COUNT; c++) {
        const char *name = aigw__class_name((aigw_class)c);
        if (name && strlen(name) == n && memcmp(name, s, n) == 0)
            return c;
    }
    return -1;
}

static bool token_ok(const char *s)
{
    size_t i;
    for (i = 0; i < 16; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return s[16] == '\0';
}

static int parse(aigw_store *st, const char *v, aigw_fact *f)
{
    const char *sp;
    memset(f, 0, sizeof *f);
    if (strcmp(v, "cool") == 0) {
        f->kind = AIGW_FACT_COOL;
        return 0;
    }
    if (strcmp(v, "clear") == 0) {
        f->kind = AIGW_FACT_CLEAR;
        return 0;
    }
    if (strncmp(v, "trial ", 6) == 0 || strncmp(v, "probe ", 6) == 0) {
        if (!token_ok(v + 6))
            return -1;
        f->kind = v[0] == 't' ? AIGW_FACT_TRIAL : AIGW_FACT_PROBE;
        f->ours = strcmp(v + 6, st->token) == 0;
        return 0;
    }
    if (strncmp(v, "bench ", 6) == 0) {
        int c = class_by_name(v + 6, strlen(v + 6));
        if (c < 0)
            return -1;
        f->kind = AIGW_FACT_BENCH;
        f->cls = (aigw_class)c;
        return 0;
    }
    if (strncmp(v, "open ", 5) == 0 && (sp = strchr(v + 5, ' ')) != NULL) {
        int c = class_by_name(v + 5, (size_t)(sp - (v + 5)));
        int64_t w = 0;
        const char *d = sp + 1;
        if (c < 0 || !aigw__is_digit(*d))
            return -1;
        for (; aigw__is_digit(*d); d++) {
            if (w > (INT64_MAX - 9) / 10)
                return -1;
            w = w * 10 + (*d - '0');
        }
        if (*d)
            return -1;
        f->kind = AIGW_FACT_OPEN;
        f->cls = (aigw_class)c;
        f->window = w;
        return 0;
    }
    return -1;
}

int aigw__fact_parse_quiet(aigw_store *st, const char *value, aigw_fact *out)
{
    return parse(st, value, out);
}

int aigw__fact_parse(aigw_store *st, const char *value, aigw_fact *out)
{
    if (parse(st, value, out) == 0)
        return 0;
    atomic_fetch_add(&st->ignored, 1);
    return -1;
}

void aigw__store_write1(aigw_store *st, const char *name, const aigw_store_entry *e, int64_t now)
{
    aigw_store_entry w;
    if (!aigw__store_usable(st, now))
        return;
    if (e) {
        w = *e;
    } else {
        memset(&w, 0, sizeof w); /* value "": whatever it holds */
        w.ttl_ms = 0;
    }
    w.name = name;
    aigw__store_put(st, &w, 1, now);
}
