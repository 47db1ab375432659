/*
 * provider.c - the embedded mock provider (examples/mockprov.c, a real HTTP
 * server on loopback) as the tests use it: MP (and a second server MP2)
 * started for a group of tests and reset before each, rules built from the
 * fields most tests set, the requests it received per key, and a loopback
 * port where nothing listens.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "support.h"

mockprov *MP;
mockprov *MP2;

int mp_start(int n)
{
    MP = mockprov_start(0);
    MP2 = n > 1 ? mockprov_start(0) : NULL;
    return MP && (n < 2 || MP2) ? 0 : -1;
}

void mp_stop(void)
{
    mockprov_stop(MP);
    mockprov_stop(MP2);
    MP = MP2 = NULL;
}

void mp_reset(void)
{
    if (MP)
        mockprov_reset(MP);
    if (MP2)
        mockprov_reset(MP2);
}

int mp_group_setup(void **state)
{
    (void)state;
    return mp_start(1);
}

int mp_group_teardown(void **state)
{
    (void)state;
    mp_stop();
    return 0;
}

int mp_setup(void **state)
{
    (void)state;
    mp_reset();
    return 0;
}

mockprov_rule mp_rule(mockprov_action action, const char *key, const char *model, int status,
                      const char *headers, const char *body, int times)
{
    mockprov_rule r;
    memset(&r, 0, sizeof r);
    r.action = action;
    r.key = key;
    r.model = model;
    r.status = status;
    r.headers = headers;
    r.body = body;
    r.times = times;
    return r;
}

void mp_add(mockprov *m, mockprov_rule r)
{
    assert_int_equal(mockprov_add_rule(m, &r), 0);
}

void mp_add_rule(mockprov *m, mockprov_action action, const char *key, const char *model,
                 int status, const char *headers, const char *body, int times)
{
    mp_add(m, mp_rule(action, key, model, status, headers, body, times));
}

void assert_received_by_key(mockprov *m, const char *const *keys, const long *want, size_t n)
{
    size_t i;
    long sum = 0;
    for (i = 0; i < n; i++) {
        assert_int_equal(mockprov_count(m, keys[i]), want[i]);
        sum += want[i];
    }
    assert_int_equal(mockprov_count(m, NULL), sum);
}

int dead_port(void)
{
    struct sockaddr_in sa;
    socklen_t sl = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;
    assert_true(fd >= 0);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    port = ntohs(sa.sin_port);
    close(fd);
    return port;
}
