/* duration.c - Go's time.ParseDuration syntax (ngrok's gatewayConfig writes
 * its timeouts that way), reduced to what a configuration needs: no
 * negative values, milliseconds out.  Like Go, the sum is computed in
 * nanoseconds and must fit an int64. */
#include "internal.h"

#include <string.h>

#define NS_MAX ((uint64_t)INT64_MAX)

static const struct unit {
    const char *name;
    uint64_t ns;
} units[] = {
    {"ns", 1ULL},
    {"us", 1000ULL},
    {"\xc2\xb5s", 1000ULL}, /* U+00B5 micro sign */
    {"\xce\xbcs", 1000ULL}, /* U+03BC Greek mu */
    {"ms", 1000000ULL},
    {"s", 1000000000ULL},
    {"m", 60ULL * 1000000000ULL},
    {"h", 3600ULL * 1000000000ULL},
};

/* The unit is the run up to the next digit or '.', as Go reads it, so
 * "1mss" is an unknown unit rather than "1m" and garbage. */
static uint64_t read_unit(const char **s)
{
    const char *p = *s;
    size_t n, i;
    while (*p && !aigw__is_digit(*p) && *p != '.')
        p++;
    n = (size_t)(p - *s);
    for (i = 0; i < sizeof units / sizeof units[0]; i++)
        if (strlen(units[i].name) == n && memcmp(units[i].name, *s, n) == 0) {
            *s = p;
            return units[i].ns;
        }
    return 0;
}

/* One "<number><unit>" term, in nanoseconds.  0 or -1. */
static int read_term(const char **s, uint64_t *ns)
{
    const char *p = *s;
    uint64_t v = 0, f = 0, unit;
    double scale = 1;
    bool digits = false;
    for (; aigw__is_digit(*p); p++, digits = true) {
        uint64_t d = (uint64_t)(*p - '0');
        if (v > (NS_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    if (*p == '.') {
        /* Digits past what f can hold only add precision nobody can use;
         * drop them, as Go does. */
        for (p++; aigw__is_digit(*p); p++, digits = true)
            if (f <= (NS_MAX - 9) / 10) {
                f = f * 10 + (uint64_t)(*p - '0');
                scale *= 10;
            }
    }
    if (!digits || (unit = read_unit(&p)) == 0)
        return -1;
    if (v > NS_MAX / unit)
        return -1;
    v *= unit;
    if (f > 0)
        v += (uint64_t)((double)f * ((double)unit / scale));
    if (v > NS_MAX)
        return -1;
    *ns = v;
    *s = p;
    return 0;
}

int aigw__parse_duration(const char *s, int64_t *ms)
{
    uint64_t total = 0, ns;
    if (!s || !ms)
        return -1;
    if (*s == '+')
        s++;
    if (strcmp(s, "0") == 0) {
        *ms = 0;
        return 0;
    }
    if (*s == '\0')
        return -1;
    while (*s) {
        if (read_term(&s, &ns) != 0 || ns > NS_MAX - total)
            return -1;
        total += ns;
    }
    *ms = (int64_t)(total / 1000000ULL);
    return 0;
}
