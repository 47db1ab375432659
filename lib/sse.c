/* sse.c - placeholder while the module is written. */
#include "internal.h"
