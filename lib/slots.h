/* slots.h - a row of lock-free slots, each holding one idle object or
 * nothing: the curl transport's pool of handles and the spare responses.
 *
 * A slot is one cache line, so that two threads at two slots never share
 * one.  Each thread has a home number, dealt out on first use; it tries the
 * slot its home names first and the others after it, so threads mostly
 * keep to slots of their own.  An object is taken with an atomic exchange
 * and given back with a compare-and-swap into an empty slot; a slot is only
 * read before it is written, so an empty one costs no cache line.  Nothing
 * is locked; an object belongs to no thread.  C11 only (not for C++). */
#ifndef AIGW_SLOTS_H
#define AIGW_SLOTS_H

#include "internal.h"

#include <stdatomic.h>
#include <stdbool.h>

typedef union aigw_slot {
    _Atomic(void *) p; /* an idle object, or NULL */
    char pad[64];
} aigw_slot;

/* This thread's home number (from 0; the same for every row). */
unsigned aigw__slot_home(void);

/* An object from one of the n slots of row, home's first; NULL when all
 * are empty. */
static inline void *aigw__slot_take(aigw_slot *row, unsigned n, unsigned home)
{
    unsigned i;
    void *p;
    for (i = 0; i < n; i++) {
        aigw_slot *s = &row[(home + i) % n];
        if (atomic_load_explicit(&s->p, memory_order_relaxed) &&
            (p = atomic_exchange_explicit(&s->p, NULL, memory_order_acquire)) != NULL)
            return p;
    }
    return NULL;
}

/* p into the first empty one of the n slots of row from home on: true, or
 * false when none is empty (p is still the caller's). */
static inline bool aigw__slot_give(aigw_slot *row, unsigned n, unsigned home, void *p)
{
    unsigned i;
    for (i = 0; i < n; i++) {
        aigw_slot *s = &row[(home + i) % n];
        void *none = NULL;
        if (!atomic_load_explicit(&s->p, memory_order_relaxed) &&
            atomic_compare_exchange_strong_explicit(&s->p, &none, p, memory_order_release,
                                                    memory_order_relaxed))
            return true;
    }
    return false;
}

#endif
