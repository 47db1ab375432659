/*
 * clock.c - time for the tests: the real monotonic clock in ms and a sleep
 * that finishes what it started (the library's own), for the tests on
 * loopback; and a fake
 * clock (FAKE_CLOCK over a fake_clock) for the tests on the scripted
 * transport, whose "now" moves only when the library sleeps or a scripted
 * answer takes time, and which records every sleep it was asked for.
 */
#include "support.h"
#include "internal.h"

/* The library's own clock and sleep (lib/util.c). */
int64_t now_ms(void)
{
    return aigw__mono_ms();
}

void sleep_ms(int64_t ms)
{
    aigw__sleep_ms(ms);
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
