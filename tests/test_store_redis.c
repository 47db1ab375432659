/*
 * test_store_redis.c - the Redis health store (lib/store_redis.c) against a
 * real redis-server (tests/support/redis.c): the URLs it takes and refuses;
 * get, put and claim, each one round trip, with what Redis holds looked at
 * and tampered with on a connection of the test's own (absent names,
 * garbage, another type, no expiry, too long); the key prefix, the
 * database, a unix socket, a password; a server that is killed (refused,
 * then reconnected), paused (a timeout), gone mid-write (no SIGPIPE); and
 * eight threads on one store (for TSan).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <pthread.h>

#include "internal.h"
#include "redis.h"
#include "support.h"

static redis_server *SRV; /* the group's server, flushed before each test */

static int group_setup(void **state)
{
    (void)state;
    SRV = redis_server_start(NULL);
    if (!SRV) {
        fprintf(stderr, "test_store_redis: could not start redis-server\n");
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    redis_server_stop(SRV);
    SRV = NULL;
    return 0;
}

static int flush_setup(void **state)
{
    (void)state;
    redis_flush(SRV);
    return 0;
}

/* ---- a store under test ---- */

typedef struct store {
    aigw_health_store vt;
    void *ud;
} store;

/* A store on url with prefix and password ("" none); timeout_ms 0: 1 s
 * (generous: sanitizers are slow). */
static store open_store(const char *url, const char *prefix, const char *password,
                        int64_t timeout_ms)
{
    aigw_store_opts o;
    store s;
    memset(&o, 0, sizeof o);
    memset(&s, 0, sizeof s);
    o.url = strdup(url);
    o.prefix = strdup(prefix);
    o.password.value = strdup(password);
    o.password.len = strlen(password);
    o.timeout_ms = timeout_ms ? timeout_ms : 1000;
    o.sync_ms = 100;
    assert_int_equal(aigw__redis_store_new(&o, &s.vt, &s.ud), AIGW_OK);
    /* the store holds copies */
    free(o.url);
    free(o.prefix);
    memset(o.password.value, 'x', o.password.len);
    free(o.password.value);
    assert_int_equal(s.vt.version, AIGW_HEALTH_STORE_VERSION);
    assert_string_equal(s.vt.kind, "redis");
    assert_non_null(s.vt.get);
    assert_non_null(s.vt.put);
    assert_non_null(s.vt.claim);
    assert_non_null(s.vt.destroy);
    return s;
}

static store srv_store(const char *prefix)
{
    return open_store(redis_server_url(SRV), prefix, "", 0);
}

static void close_store(store *s)
{
    s->vt.destroy(s->ud);
    s->ud = NULL;
}

static aigw_store_entry entry(const char *name, const char *value, int64_t ttl_ms)
{
    aigw_store_entry e;
    memset(&e, 0, sizeof e);
    e.name = name;
    snprintf(e.value, sizeof e.value, "%s", value);
    e.ttl_ms = ttl_ms;
    return e;
}

static int put1(store *s, const char *name, const char *value, int64_t ttl_ms)
{
    aigw_store_entry e = entry(name, value, ttl_ms);
    return s->vt.put(s->ud, &e, 1);
}

/* One name read: its ttl (or ABSENT / UNREADABLE), its value into value. */
static int64_t get1(store *s, const char *name, char value[AIGW_STORE_VALUE_MAX])
{
    aigw_store_entry e = entry(name, "poison", 12345);
    assert_int_equal(s->vt.get(s->ud, &e, 1), 0);
    if (value)
        memcpy(value, e.value, AIGW_STORE_VALUE_MAX);
    if (e.ttl_ms < 0)
        assert_string_equal(e.value, ""); /* nothing readable: no value */
    return e.ttl_ms;
}

/* get of one name until it answers (at most 3 s): 0, or -1. */
static int get_eventually(store *s, const char *name, char value[AIGW_STORE_VALUE_MAX])
{
    int64_t deadline = now_ms() + 3000;
    do {
        aigw_store_entry e = entry(name, "", 0);
        if (s->vt.get(s->ud, &e, 1) == 0) {
            memcpy(value, e.value, AIGW_STORE_VALUE_MAX);
            return 0;
        }
        sleep_ms(20);
    } while (now_ms() < deadline);
    return -1;
}

static char *reply_str(redisReply *r)
{
    static char buf[256];
    if (!r)
        snprintf(buf, sizeof buf, "(no answer)");
    else if (r->type == REDIS_REPLY_NIL)
        snprintf(buf, sizeof buf, "(nil)");
    else if (r->type == REDIS_REPLY_INTEGER)
        snprintf(buf, sizeof buf, "%lld", r->integer);
    else if (r->str)
        snprintf(buf, sizeof buf, "%s", r->str);
    else
        snprintf(buf, sizeof buf, "(type %d)", r->type);
    if (r)
        freeReplyObject(r);
    return buf;
}

/* ---- the URL ---- */

static void test_url_accepted(void **state)
{
    static const char *const good[] = {
        "redis://localhost",
        "redis://localhost:6379",
        "redis://localhost/",
        "redis://localhost:6380/0",
        "redis://redis.internal.example.com:1/15",
        "redis://10.0.0.7:65535/1000000",
        "redis://[::1]",
        "redis://[::1]:6379/2",
        "redis://[fe80::1:2]:7000/",
        "redis://:s3cret@host",
        "redis://user:s3cret@host:6379/3",
        "redis://user:@host",
        "redis://:p%40ss%2Fw@host",
        "redis://:p@ss/w:rd@host/1", /* the last '@' ends the user info */
        "REDIS://Host_1",
        "unix:///var/run/redis/redis.sock",
        "unix:///tmp/r.sock?db=4",
        "unix:///tmp/r.sock?db=0",
    };
    static char sentinel[] = "unset";
    size_t i;
    (void)state;
    for (i = 0; i < sizeof good / sizeof good[0]; i++) {
        char *why = sentinel;
        if (aigw__redis_url_check(good[i], &why) != 0)
            fail_msg("refused %s: %s", good[i], why ? why : "(null)");
        assert_null(why);
    }
}

static void test_url_refused(void **state)
{
    static const struct {
        const char *url;
        const char *needle;
    } bad[] = {
        {"", "expected a redis:// or unix:// URL"},
        {"http://host:6379", "expected a redis:// or unix:// URL"},
        {"redis:/host", "expected a redis:// or unix:// URL"},
        {"localhost:6379", "expected a redis:// or unix:// URL"},
        {"redis://", "names no host"},
        {"redis://:6379", "names no host"},
        {"redis://host:0", "the port must be 1..65535"},
        {"redis://host:65536", "the port must be 1..65535"},
        {"redis://host:", "the port must be 1..65535"},
        {"redis://host:63x9", "the port must be 1..65535"},
        {"redis://host:-1", "the port must be 1..65535"},
        {"redis://host/x", "the database"},
        {"redis://host/1000001", "the database"},
        {"redis://host/-1", "the database"},
        {"redis://host/0/", "the database"},
        {"redis://host?db=1", "takes no query"},
        {"redis://host/0?timeout=1", "takes no query"},
        {"redis://host#frag", "no fragment"},
        {"redis://ho st", "a space"},
        {"redis://host\n", "control character"},
        {"redis://h%st", "the host must be"},
        {"redis://[::1", "IPv6"},
        {"redis://[nothex]:1", "IPv6"},
        {"redis://[::1]x", "followed only by :port"},
        {"redis://justapassword@host", "must be [user]:password"},
        {"unix://tmp/r.sock", "absolute socket path"},
        {"unix:///", "not of a directory"},
        {"unix:///tmp/", "not of a directory"},
        {"unix:///tmp/r.sock?db=x", "must be a number"},
        {"unix:///tmp/r.sock?db=", "must be a number"},
        {"unix:///tmp/r.sock?timeout=1", "only ?db=N"},
        {"rediss://host:6380", "rediss:// (TLS) is not available: the hiredis libaigw is built "
                               "against has no TLS; use redis:// on a trusted network or a TLS "
                               "tunnel"},
        {"REDISS://:pw@host", "(TLS) is not available"},
    };
    size_t i;
    (void)state;
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *why = NULL;
        if (aigw__redis_url_check(bad[i].url, &why) != -1)
            fail_msg("accepted %s", bad[i].url);
        assert_non_null(why);
        if (!strstr(why, bad[i].needle))
            fail_msg("%s: \"%s\" does not say \"%s\"", bad[i].url, why, bad[i].needle);
        aigw__free(why);
    }
    /* NULL why is allowed; NULL url refused */
    assert_int_equal(aigw__redis_url_check("redis://host", NULL), 0);
    assert_int_equal(aigw__redis_url_check("nope", NULL), -1);
    {
        char *why = NULL;
        assert_int_equal(aigw__redis_url_check(NULL, &why), -1);
        assert_non_null(why);
        aigw__free(why);
    }
}

/* Whatever is wrong with a URL holding a password, the message does not
 * hold the password (nor any part of the URL). */
static void test_url_why_never_holds_password(void **state)
{
    static const char *const bad[] = {
        "rediss://:Hunter2Pass@host:6380",
        "rediss://admin:Hunter2Pass@host",
        "redis://admin:Hunter2Pass@host:99999",
        "redis://admin:Hunter2Pass@host/db9",
        "redis://admin:Hunter2Pass@",
        "redis://admin:Hunter2Pass@host?x=Hunter2Pass",
        "redis://admin:Hunter2Pass@[zz]",
        "redis://Hunter2Pass@host:0",
        "redis://Hunter2Pass@host",
        "redis://adm in:Hunter2Pass@host",
        "http://admin:Hunter2Pass@host",
        "Hunter2Pass",
        "redis://host/Hunter2Pass",
        "redis://host:Hunter2Pass",
    };
    size_t i;
    (void)state;
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *why = NULL;
        assert_int_equal(aigw__redis_url_check(bad[i], &why), -1);
        assert_non_null(why);
        if (strstr(why, "Hunter2") || strstr(why, "admin") || strstr(why, "unter"))
            fail_msg("%s: the message quotes it: %s", bad[i], why);
        aigw__free(why);
    }
}

static void test_store_new_refuses_bad_url(void **state)
{
    aigw_store_opts o;
    aigw_health_store vt;
    void *ud = NULL;
    char url[] = "rediss://host";
    char prefix[] = "p:";
    (void)state;
    assert_true(aigw__have_redis());
    memset(&o, 0, sizeof o);
    o.url = url;
    o.prefix = prefix;
    assert_int_equal(aigw__redis_store_new(&o, &vt, &ud), AIGW_EINVAL);
    assert_null(ud);
    o.url = NULL;
    assert_int_equal(aigw__redis_store_new(&o, &vt, &ud), AIGW_EINVAL);
    assert_int_equal(aigw__redis_store_new(NULL, &vt, &ud), AIGW_EINVAL);
}

/* ---- get ---- */

static void test_get_absent_and_set(void **state)
{
    store s = srv_store("t:");
    aigw_store_entry e[3];
    (void)state;
    redis_ok(SRV, "SET t:b:1 %s PX 30000", "v=1 reason=rate_limit");
    e[0] = entry("a:1", "poison", 7);
    e[1] = entry("b:1", "poison", 7);
    e[2] = entry("c:1", "poison", 7);
    assert_int_equal(s.vt.get(s.ud, e, 3), 0);
    assert_int_equal(e[0].ttl_ms, AIGW_STORE_ABSENT);
    assert_string_equal(e[0].value, "");
    assert_string_equal(e[1].value, "v=1 reason=rate_limit");
    assert_true(e[1].ttl_ms > 25000 && e[1].ttl_ms <= 30000);
    assert_int_equal(e[2].ttl_ms, AIGW_STORE_ABSENT);
    assert_int_equal(s.vt.get(s.ud, e, 0), 0); /* nothing to read */
    close_store(&s);
}

static void test_get_unreadable(void **state)
{
    store s = srv_store("t:");
    char v[AIGW_STORE_VALUE_MAX];
    char long63[64], long64[65];
    (void)state;
    memset(long63, 'x', 63);
    long63[63] = '\0';
    memset(long64, 'y', 64);
    long64[64] = '\0';
    redis_ok(SRV, "SET t:bin %b PX 30000", "a\0b", (size_t)3);
    redis_ok(SRV, "SET t:nl %s PX 30000", "a\nb");
    redis_ok(SRV, "SET t:hi %s PX 30000", "caf\xc3\xa9");
    redis_ok(SRV, "SET t:del %b PX 30000", "\x7f", (size_t)1);
    assert_int_equal(redis_int(SRV, "RPUSH t:list a b"), 2);
    assert_int_equal(redis_int(SRV, "PEXPIRE t:list 30000"), 1);
    assert_int_equal(redis_int(SRV, "RPUSH t:list-forever a"), 1);
    assert_int_equal(redis_int(SRV, "HSET t:hash f v"), 1);
    redis_ok(SRV, "SET t:forever %s", "v=1");
    redis_ok(SRV, "SET t:63 %s PX 30000", long63);
    redis_ok(SRV, "SET t:64 %s PX 30000", long64);
    redis_ok(SRV, "SET t:empty %s PX 30000", "");
    redis_ok(SRV, "SET t:edge %s PX 30000", " ~");

    assert_int_equal(get1(&s, "bin", NULL), AIGW_STORE_UNREADABLE);
    assert_int_equal(get1(&s, "nl", NULL), AIGW_STORE_UNREADABLE);
    assert_int_equal(get1(&s, "hi", NULL), AIGW_STORE_UNREADABLE);
    assert_int_equal(get1(&s, "del", NULL), AIGW_STORE_UNREADABLE);
    assert_int_equal(get1(&s, "list", NULL), AIGW_STORE_UNREADABLE);
    assert_int_equal(get1(&s, "list-forever", NULL), AIGW_STORE_UNREADABLE);
    assert_int_equal(get1(&s, "hash", NULL), AIGW_STORE_UNREADABLE);
    assert_int_equal(get1(&s, "forever", NULL), AIGW_STORE_UNREADABLE);
    assert_int_equal(get1(&s, "64", NULL), AIGW_STORE_UNREADABLE);
    assert_true(get1(&s, "63", v) > 0);
    assert_string_equal(v, long63);
    assert_true(get1(&s, "empty", v) > 0);
    assert_string_equal(v, "");
    assert_true(get1(&s, "edge", v) > 0);
    assert_string_equal(v, " ~");
    /* the store is fine after all that */
    assert_int_equal(get1(&s, "nothing", NULL), AIGW_STORE_ABSENT);
    close_store(&s);
}

/* A batch mixing all kinds is read in one round trip, each name on its own. */
static void test_get_batch_one_round_trip(void **state)
{
    store s = srv_store("t:");
    aigw_store_entry e[5];
    long reads, gets, pttls;
    (void)state;
    redis_ok(SRV, "SET t:ok %s PX 30000", "fine");
    assert_int_equal(redis_int(SRV, "RPUSH t:list a"), 1);
    redis_ok(SRV, "SET t:forever %s", "v");
    assert_int_equal(get1(&s, "warm-up", NULL), AIGW_STORE_ABSENT); /* connected */
    e[0] = entry("list", "", 0);
    e[1] = entry("ok", "", 0);
    e[2] = entry("none", "", 0);
    e[3] = entry("forever", "", 0);
    e[4] = entry("ok", "", 0);
    reads = redis_reads(SRV);
    gets = redis_calls(SRV, "get");
    pttls = redis_calls(SRV, "pttl");
    assert_int_equal(s.vt.get(s.ud, e, 5), 0);
    assert_int_equal(redis_reads(SRV) - reads, 1);
    assert_int_equal(redis_calls(SRV, "get") - gets, 5);
    assert_int_equal(redis_calls(SRV, "pttl") - pttls, 5);
    assert_int_equal(e[0].ttl_ms, AIGW_STORE_UNREADABLE);
    assert_string_equal(e[1].value, "fine");
    assert_true(e[1].ttl_ms > 0);
    assert_int_equal(e[2].ttl_ms, AIGW_STORE_ABSENT);
    assert_int_equal(e[3].ttl_ms, AIGW_STORE_UNREADABLE);
    assert_string_equal(e[4].value, "fine");
    close_store(&s);
}

/* ---- put ---- */

static void test_put_ttl(void **state)
{
    store s = srv_store("t:");
    char v[AIGW_STORE_VALUE_MAX];
    int64_t ttl;
    (void)state;
    assert_int_equal(put1(&s, "f", "v=1 one", 5000), 0);
    ttl = get1(&s, "f", v);
    assert_string_equal(v, "v=1 one");
    assert_true(ttl > 4000 && ttl <= 5000);
    assert_string_equal(reply_str(redis_cmd(SRV, "GET t:f")), "v=1 one");
    ttl = redis_int(SRV, "PTTL t:f");
    assert_true(ttl > 4000 && ttl <= 5000);
    /* set, whatever was there: another value, another type */
    assert_int_equal(put1(&s, "f", "v=1 two", 200), 0);
    ttl = get1(&s, "f", v);
    assert_string_equal(v, "v=1 two");
    assert_true(ttl > 0 && ttl <= 200);
    assert_int_equal(redis_int(SRV, "RPUSH t:list a"), 1);
    assert_int_equal(put1(&s, "list", "v=1 three", 3000), 0);
    assert_string_equal(reply_str(redis_cmd(SRV, "GET t:list")), "v=1 three");
    /* it expires */
    sleep_ms(300);
    assert_int_equal(get1(&s, "f", NULL), AIGW_STORE_ABSENT);
    close_store(&s);
}

static void test_put_compare_and_delete(void **state)
{
    store s = srv_store("t:");
    char v[AIGW_STORE_VALUE_MAX];
    (void)state;
    assert_int_equal(put1(&s, "f", "mine", 30000), 0);
    /* another value: kept */
    assert_int_equal(put1(&s, "f", "theirs", 0), 0);
    assert_true(get1(&s, "f", v) > 0);
    assert_string_equal(v, "mine");
    /* a prefix of the value is another value */
    assert_int_equal(put1(&s, "f", "min", 0), 0);
    assert_true(get1(&s, "f", v) > 0);
    /* the value: deleted */
    assert_int_equal(put1(&s, "f", "mine", 0), 0);
    assert_int_equal(get1(&s, "f", NULL), AIGW_STORE_ABSENT);
    assert_int_equal(redis_int(SRV, "EXISTS t:f"), 0);
    /* absent: nothing to do, no failure */
    assert_int_equal(put1(&s, "f", "mine", 0), 0);
    /* "": whatever it holds */
    assert_int_equal(put1(&s, "g", "anything", 30000), 0);
    assert_int_equal(put1(&s, "g", "", 0), 0);
    assert_int_equal(redis_int(SRV, "EXISTS t:g"), 0);
    assert_int_equal(redis_int(SRV, "RPUSH t:list a"), 1);
    assert_int_equal(put1(&s, "list", "", 0), 0);
    assert_int_equal(redis_int(SRV, "EXISTS t:list"), 0);
    /* compare-and-delete on another type: that name's trouble, not the
     * store's; the list stays */
    assert_int_equal(redis_int(SRV, "RPUSH t:list a"), 1);
    assert_int_equal(put1(&s, "list", "mine", 0), 0);
    assert_int_equal(redis_int(SRV, "EXISTS t:list"), 1);
    assert_true(redis_calls(SRV, "eval") >= 4);
    close_store(&s);
}

static void test_put_batch_one_round_trip(void **state)
{
    store s = srv_store("t:");
    aigw_store_entry e[4];
    long reads;
    char v[AIGW_STORE_VALUE_MAX];
    (void)state;
    redis_ok(SRV, "SET t:old %s PX 30000", "gone soon");
    redis_ok(SRV, "SET t:kept %s PX 30000", "not yours");
    assert_int_equal(redis_int(SRV, "RPUSH t:list a"), 1);
    assert_int_equal(get1(&s, "warm-up", NULL), AIGW_STORE_ABSENT);
    e[0] = entry("new", "fresh", 10000);
    e[1] = entry("old", "gone soon", 0);
    e[2] = entry("kept", "yours", 0);
    e[3] = entry("list", "x", 0); /* an error for this one only */
    reads = redis_reads(SRV);
    assert_int_equal(s.vt.put(s.ud, e, 4), 0);
    assert_int_equal(redis_reads(SRV) - reads, 1);
    assert_true(get1(&s, "new", v) > 0);
    assert_string_equal(v, "fresh");
    assert_int_equal(get1(&s, "old", NULL), AIGW_STORE_ABSENT);
    assert_true(get1(&s, "kept", v) > 0);
    assert_string_equal(v, "not yours");
    assert_int_equal(s.vt.put(s.ud, e, 0), 0);
    close_store(&s);
}

/* A SET the server refuses is a store that did not take the write. */
static void test_put_refused_write(void **state)
{
    store s = srv_store("t:");
    (void)state;
    assert_int_equal(put1(&s, "f", "v", 30000), 0);
    redis_ok(SRV, "CONFIG SET maxmemory 1");
    redis_ok(SRV, "CONFIG SET maxmemory-policy noeviction");
    assert_int_equal(put1(&s, "g", "v", 30000), -1); /* OOM */
    redis_ok(SRV, "CONFIG SET maxmemory 0");
    assert_int_equal(put1(&s, "g", "v", 30000), 0);
    close_store(&s);
}

/* ---- claim ---- */

static void test_claim(void **state)
{
    store a = srv_store("t:"), b = srv_store("t:");
    aigw_store_entry e;
    long reads;
    (void)state;
    assert_int_equal(get1(&b, "warm-up", NULL), AIGW_STORE_ABSENT);
    e = entry("p:1", "probe by a", 5000);
    assert_int_equal(a.vt.claim(a.ud, &e), 1);
    assert_string_equal(e.value, "probe by a"); /* untouched */
    assert_int_equal(e.ttl_ms, 5000);
    /* the second loses, and learns who holds it and for how long */
    e = entry("p:1", "probe by b", 9000);
    reads = redis_reads(SRV);
    assert_int_equal(b.vt.claim(b.ud, &e), 0);
    assert_int_equal(redis_reads(SRV) - reads, 1);
    assert_string_equal(e.value, "probe by a");
    assert_true(e.ttl_ms > 4000 && e.ttl_ms <= 5000);
    /* a claims again: held by itself, 0 too */
    e = entry("p:1", "probe by a", 5000);
    assert_int_equal(a.vt.claim(a.ud, &e), 0);
    /* released: b wins */
    assert_int_equal(put1(&a, "p:1", "probe by a", 0), 0);
    e = entry("p:1", "probe by b", 9000);
    assert_int_equal(b.vt.claim(b.ud, &e), 1);
    assert_string_equal(reply_str(redis_cmd(SRV, "GET t:p:1")), "probe by b");
    assert_true(redis_int(SRV, "PTTL t:p:1") > 8000);
    /* a claim expires */
    e = entry("p:2", "short", 100);
    assert_int_equal(a.vt.claim(a.ud, &e), 1);
    sleep_ms(200);
    e = entry("p:2", "later", 100);
    assert_int_equal(b.vt.claim(b.ud, &e), 1);
    close_store(&a);
    close_store(&b);
}

static void test_claim_garbage_holder(void **state)
{
    store s = srv_store("t:");
    aigw_store_entry e;
    (void)state;
    redis_ok(SRV, "SET t:bin %b PX 30000", "\x01\x02", (size_t)2);
    assert_int_equal(redis_int(SRV, "RPUSH t:list a"), 1);
    redis_ok(SRV, "SET t:forever %s", "v");
    e = entry("bin", "mine", 1000);
    assert_int_equal(s.vt.claim(s.ud, &e), 0);
    assert_int_equal(e.ttl_ms, AIGW_STORE_UNREADABLE);
    assert_string_equal(e.value, "");
    e = entry("list", "mine", 1000);
    assert_int_equal(s.vt.claim(s.ud, &e), 0);
    assert_int_equal(e.ttl_ms, AIGW_STORE_UNREADABLE);
    e = entry("forever", "mine", 1000);
    assert_int_equal(s.vt.claim(s.ud, &e), 0);
    assert_int_equal(e.ttl_ms, AIGW_STORE_UNREADABLE);
    /* nothing was overwritten */
    assert_string_equal(reply_str(redis_cmd(SRV, "GET t:forever")), "v");
    assert_int_equal(redis_int(SRV, "LLEN t:list"), 1);
    close_store(&s);
}

/* ---- names, databases, sockets, passwords ---- */

static void test_prefix(void **state)
{
    store a = srv_store("fleet-a:"), none = srv_store("");
    aigw_store_entry e;
    char keys[256];
    (void)state;
    assert_int_equal(put1(&a, "b:0123456789abcdef", "v", 30000), 0);
    e = entry("p:1", "c", 30000);
    assert_int_equal(a.vt.claim(a.ud, &e), 1);
    assert_int_equal(put1(&none, "b:0123456789abcdef", "w", 30000), 0);
    redis_keys(SRV, "*", keys, sizeof keys);
    assert_string_equal(keys, "b:0123456789abcdef fleet-a:b:0123456789abcdef fleet-a:p:1");
    assert_string_equal(reply_str(redis_cmd(SRV, "GET fleet-a:b:0123456789abcdef")), "v");
    assert_string_equal(reply_str(redis_cmd(SRV, "GET b:0123456789abcdef")), "w");
    /* each reads its own */
    {
        char v[AIGW_STORE_VALUE_MAX];
        assert_true(get1(&a, "b:0123456789abcdef", v) > 0);
        assert_string_equal(v, "v");
        assert_true(get1(&none, "b:0123456789abcdef", v) > 0);
        assert_string_equal(v, "w");
        assert_int_equal(get1(&none, "p:1", NULL), AIGW_STORE_ABSENT);
    }
    assert_int_equal(put1(&a, "p:1", "c", 0), 0);
    assert_int_equal(redis_int(SRV, "EXISTS fleet-a:p:1"), 0);
    close_store(&a);
    close_store(&none);
}

static void test_database(void **state)
{
    char url[96];
    store s;
    (void)state;
    snprintf(url, sizeof url, "redis://127.0.0.1:%d/3", redis_server_port(SRV));
    s = open_store(url, "t:", "", 0);
    assert_int_equal(put1(&s, "f", "in three", 30000), 0);
    assert_int_equal(redis_int(SRV, "EXISTS t:f"), 0); /* the helper is on 0 */
    redis_ok(SRV, "SELECT 3");
    assert_string_equal(reply_str(redis_cmd(SRV, "GET t:f")), "in three");
    redis_ok(SRV, "SELECT 0");
    close_store(&s);
}

static void test_unix_socket(void **state)
{
    char path[64], url[96];
    const char *extra[] = {"--unixsocket", path, "--unixsocketperm", "700", NULL};
    redis_server *u;
    store s;
    char v[AIGW_STORE_VALUE_MAX];
    (void)state;
    snprintf(path, sizeof path, "/tmp/aigw-test-redis-%ld.sock", (long)getpid());
    u = redis_server_start(extra);
    assert_non_null(u);
    snprintf(url, sizeof url, "unix://%s?db=2", path);
    s = open_store(url, "u:", "", 0);
    assert_int_equal(put1(&s, "f", "over a socket", 30000), 0);
    assert_true(get1(&s, "f", v) > 0);
    assert_string_equal(v, "over a socket");
    redis_ok(u, "SELECT 2");
    assert_string_equal(reply_str(redis_cmd(u, "GET u:f")), "over a socket");
    close_store(&s);
    redis_server_stop(u);
    unlink(path);
}

static void test_password(void **state)
{
    const char *extra[] = {"--requirepass", "pa ss@w/rd", NULL};
    redis_server *p;
    char url[160];
    store s;
    aigw_store_entry e;
    char v[AIGW_STORE_VALUE_MAX];
    (void)state;
    p = redis_server_start(extra);
    assert_non_null(p);
    /* the configured password */
    s = open_store(redis_server_url(p), "t:", "pa ss@w/rd", 0);
    assert_int_equal(put1(&s, "f", "authed", 30000), 0);
    assert_true(get1(&s, "f", v) > 0);
    assert_string_equal(v, "authed");
    close_store(&s);
    /* the URL's, percent-encoded, with and without the default user */
    snprintf(url, sizeof url, "redis://:pa%%20ss%%40w%%2Frd@127.0.0.1:%d/0", redis_server_port(p));
    s = open_store(url, "t:", "", 0);
    assert_true(get1(&s, "f", v) > 0);
    close_store(&s);
    snprintf(url, sizeof url, "redis://default:pa%%20ss@w/rd@127.0.0.1:%d", redis_server_port(p));
    s = open_store(url, "t:", "", 0);
    assert_true(get1(&s, "f", v) > 0);
    close_store(&s);
    /* the configured one wins over the URL's */
    snprintf(url, sizeof url, "redis://:wrong@127.0.0.1:%d", redis_server_port(p));
    s = open_store(url, "t:", "pa ss@w/rd", 0);
    assert_true(get1(&s, "f", v) > 0);
    close_store(&s);
    /* none, or a wrong one: the store does not answer */
    s = open_store(redis_server_url(p), "t:", "", 0);
    e = entry("f", "", 0);
    assert_int_equal(s.vt.get(s.ud, &e, 1), -1);
    assert_int_equal(put1(&s, "f", "x", 1000), -1);
    e = entry("f", "x", 1000);
    assert_int_equal(s.vt.claim(s.ud, &e), -1);
    close_store(&s);
    s = open_store(redis_server_url(p), "t:", "wrong", 0);
    e = entry("f", "", 0);
    assert_int_equal(s.vt.get(s.ud, &e, 1), -1);
    assert_int_equal(put1(&s, "f", "x", 1000), -1);
    close_store(&s);
    assert_string_equal(reply_str(redis_cmd(p, "GET t:f")), "authed");
    redis_server_stop(p);
}

/* ---- a server that goes away ---- */

static void test_refused_then_reconnect(void **state)
{
    store s = srv_store("t:");
    aigw_store_entry e;
    int64_t t0;
    char v[AIGW_STORE_VALUE_MAX];
    (void)state;
    assert_int_equal(put1(&s, "f", "before", 30000), 0);
    redis_server_kill(SRV);
    /* on the connection it had */
    t0 = now_ms();
    e = entry("f", "", 0);
    assert_int_equal(s.vt.get(s.ud, &e, 1), -1);
    /* refused: no connection to make */
    e = entry("f", "", 0);
    assert_int_equal(s.vt.get(s.ud, &e, 1), -1);
    assert_int_equal(put1(&s, "f", "x", 1000), -1);
    e = entry("f", "x", 1000);
    assert_int_equal(s.vt.claim(s.ud, &e), -1);
    assert_true(now_ms() - t0 < 1000);
    /* back (empty: nothing was saved): the next call reconnects */
    assert_int_equal(redis_server_restart(SRV), 0);
    assert_int_equal(get1(&s, "f", NULL), AIGW_STORE_ABSENT);
    assert_int_equal(put1(&s, "f", "after", 30000), 0);
    assert_true(get1(&s, "f", v) > 0);
    assert_string_equal(v, "after");
    close_store(&s);
}

/* A server that accepts but never answers: each call gives up after about
 * the timeout; once it answers again, so does the store. */
static void test_paused_times_out(void **state)
{
    store s = open_store(redis_server_url(SRV), "t:", "", 50);
    store fresh = open_store(redis_server_url(SRV), "t:", "", 50);
    aigw_store_entry e;
    int64_t t0, took;
    char v[AIGW_STORE_VALUE_MAX];
    (void)state;
    assert_int_equal(put1(&s, "f", "v", 30000), 0);
    redis_server_pause(SRV);
    t0 = now_ms();
    e = entry("f", "", 0);
    assert_int_equal(s.vt.get(s.ud, &e, 1), -1);
    took = now_ms() - t0;
    assert_true(took >= 40 && took < 1000);
    t0 = now_ms();
    /* (a write that timed out may still land once the server runs again) */
    assert_int_equal(put1(&s, "h", "x", 1000), -1);
    e = entry("g", "x", 1000);
    assert_int_equal(s.vt.claim(s.ud, &e), -1);
    /* connecting to it (the kernel accepts), then no answer */
    e = entry("f", "", 0);
    assert_int_equal(fresh.vt.get(fresh.ud, &e, 1), -1);
    took = now_ms() - t0;
    assert_true(took < 3000); /* three calls, one connecting */
    redis_server_resume(SRV);
    /* the server first works off what queued up while it was stopped: 50 ms
     * may not be enough for the very next call on a loaded machine */
    assert_int_equal(get_eventually(&s, "f", v), 0);
    assert_string_equal(v, "v");
    assert_int_equal(get_eventually(&fresh, "f", v), 0);
    assert_string_equal(v, "v");
    close_store(&s);
    close_store(&fresh);
}

/* Writing a large batch to a server that is gone raises no SIGPIPE (which
 * would kill this program): the store gives up with -1. */
static void test_gone_mid_write(void **state)
{
    enum { N = 20000 };
    store s = open_store(redis_server_url(SRV), "t:", "", 2000);
    aigw_store_entry *e = calloc(N, sizeof *e);
    static char names[N][24];
    int i, round;
    (void)state;
    assert_non_null(e);
    for (i = 0; i < N; i++) {
        snprintf(names[i], sizeof names[i], "gone:%d", i);
        e[i] = entry(names[i], "a value of some length to fill the buffers", 30000);
    }
    for (round = 0; round < 3; round++) {
        assert_int_equal(get1(&s, "warm-up", NULL), AIGW_STORE_ABSENT);
        redis_server_kill(SRV);
        assert_int_equal(s.vt.put(s.ud, e, N), -1);
        assert_int_equal(redis_server_restart(SRV), 0);
    }
    assert_int_equal(s.vt.put(s.ud, e, N), 0);
    assert_int_equal(redis_int(SRV, "DBSIZE"), N);
    free(e);
    close_store(&s);
}

/* ---- threads ---- */

#define THREADS 8
#define ROUNDS 300

typedef struct worker {
    store *s;
    int id;
    int failures, claims_won;
} worker;

static void *work(void *arg)
{
    worker *w = arg;
    int i;
    for (i = 0; i < ROUNDS; i++) {
        char own[32], val[32];
        aigw_store_entry e[3];
        snprintf(own, sizeof own, "own:%d:%d", w->id, i % 10);
        snprintf(val, sizeof val, "w%d r%d", w->id, i);
        e[0] = entry(own, val, 5000);
        e[1] = entry("shared", val, 50);
        if (w->s->vt.put(w->s->ud, e, 2) != 0)
            w->failures++;
        e[0] = entry(own, "", 0);
        e[1] = entry("shared", "", 0);
        e[2] = entry("probe", "", 0);
        if (w->s->vt.get(w->s->ud, e, 3) != 0 || strcmp(e[0].value, val) != 0)
            w->failures++;
        e[0] = entry("probe", val, 2);
        switch (w->s->vt.claim(w->s->ud, &e[0])) {
        case 1:
            w->claims_won++;
            break;
        case 0:
            if (e[0].ttl_ms != AIGW_STORE_ABSENT && e[0].ttl_ms < 0)
                w->failures++;
            break;
        default:
            w->failures++;
        }
        if (i % 7 == 0) {
            e[0] = entry("probe", val, 0); /* release, if still ours */
            if (w->s->vt.put(w->s->ud, e, 1) != 0)
                w->failures++;
        }
    }
    return NULL;
}

static void test_threads(void **state)
{
    store s = srv_store("thr:");
    pthread_t t[THREADS];
    worker w[THREADS];
    int i, won = 0;
    (void)state;
    for (i = 0; i < THREADS; i++) {
        w[i].s = &s;
        w[i].id = i;
        w[i].failures = w[i].claims_won = 0;
        assert_int_equal(pthread_create(&t[i], NULL, work, &w[i]), 0);
    }
    for (i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(w[i].failures, 0);
        won += w[i].claims_won;
    }
    assert_true(won >= 1);
    close_store(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_accepted),
        cmocka_unit_test(test_url_refused),
        cmocka_unit_test(test_url_why_never_holds_password),
        cmocka_unit_test(test_store_new_refuses_bad_url),
        cmocka_unit_test_setup(test_get_absent_and_set, flush_setup),
        cmocka_unit_test_setup(test_get_unreadable, flush_setup),
        cmocka_unit_test_setup(test_get_batch_one_round_trip, flush_setup),
        cmocka_unit_test_setup(test_put_ttl, flush_setup),
        cmocka_unit_test_setup(test_put_compare_and_delete, flush_setup),
        cmocka_unit_test_setup(test_put_batch_one_round_trip, flush_setup),
        cmocka_unit_test_setup(test_put_refused_write, flush_setup),
        cmocka_unit_test_setup(test_claim, flush_setup),
        cmocka_unit_test_setup(test_claim_garbage_holder, flush_setup),
        cmocka_unit_test_setup(test_prefix, flush_setup),
        cmocka_unit_test_setup(test_database, flush_setup),
        cmocka_unit_test_setup(test_unix_socket, flush_setup),
        cmocka_unit_test_setup(test_password, flush_setup),
        cmocka_unit_test_setup(test_refused_then_reconnect, flush_setup),
        cmocka_unit_test_setup(test_paused_times_out, flush_setup),
        cmocka_unit_test_setup(test_gone_mid_write, flush_setup),
        cmocka_unit_test_setup(test_threads, flush_setup),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
