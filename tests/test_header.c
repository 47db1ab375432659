/* test_header.c - aigw.h compiles as strict C99 (-pedantic -Werror) on its own. */
#include "aigw.h"
#include "aigw.h" /* include guard */

int main(void)
{
    aigw_transport t = {AIGW_TRANSPORT_VERSION, 0, 0, 0};
    aigw_strategy s = {AIGW_STRATEGY_VERSION, 0, 0, 0};
    aigw_clock k = {AIGW_CLOCK_VERSION, 0, 0, 0};
    (void)t;
    (void)s;
    (void)k;
    return aigw_version_number() == AIGW_VERSION_NUMBER ? 0 : 1;
}
