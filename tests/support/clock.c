/*
 * clock.c - time for the tests: the real monotonic clock in ms and a sleep
 * that finishes what it started, for the tests on loopback; and a fake
 * clock (FAKE_CLOCK over a fake_clock) for the tests on the scripted
 * transport, whose "now" moves only when the library sleeps or a scripted
 * answer takes time, and which records every sleep it was asked for.
 */
#include <errno.h>
#include <time.h>

#include "support.h"

int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void sleep_ms(int64_t ms)
{
    struct timespec ts;
    if (ms <= 0)
        return;
    ts.tv_sec = (time_t)(ms / 1000);
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static int64_t fake_now(void *ud)
{
    return ((fake_clock *)ud)->now;
}

static void fake_sleep(void *ud, int64_t ms)
{
    fake_clock *f = ud;
    if (f->n_sleeps < FAKE_CLOCK_MAX_SLEEPS)
        f->slept[f->n_sleeps] = ms;
    f->n_sleeps++;
    f->now += ms;
}

const aigw_clock FAKE_CLOCK = {AIGW_CLOCK_VERSION, fake_now, fake_sleep, NULL};
