/*
 * htable.h - SipHash-2-4 and the chained hash table the health entries
 * live in.  Never installed.
 *
 * A table finds an entry under its read lock and takes the write lock only
 * to insert one it has not seen; entries are allocated one by one, never
 * move and are never removed before the table is freed, so callers keep
 * plain pointers to them.  Past `max` entries nothing new is inserted (the
 * lookup returns NULL), so names taken from requests cannot grow a table
 * without bound.
 */
#ifndef AIGW_HTABLE_H
#define AIGW_HTABLE_H

#include "internal.h"

#include <pthread.h>

/* ---- siphash.c ---- */
typedef struct aigw_sip {
    uint64_t v0, v1, v2, v3;
    uint64_t m;   /* bytes of the word being filled */
    unsigned nm;  /* how many */
    uint64_t len; /* bytes seen */
} aigw_sip;

/* SipHash-2-4 (64-bit) of len bytes under a 16-byte key. */
uint64_t aigw__siphash24(const uint8_t key[16], const void *data, size_t len);
void aigw__sip_init(aigw_sip *s, const uint8_t key[16]);
void aigw__sip_update(aigw_sip *s, const void *data, size_t n);
/* A string with its terminating NUL, so "ab"+"c" and "a"+"bc" differ. */
void aigw__sip_str(aigw_sip *s, const char *str);
/* The hash; wipes the state. */
uint64_t aigw__sip_final(aigw_sip *s);

/* ---- htable.c ---- */
typedef struct aigw_node {
    struct aigw_node *chain; /* next in its slot        */
    struct aigw_node *order; /* next in insertion order */
    uint64_t hash;
} aigw_node;

/* How a table compares, makes and frees its entries (a node is the first
 * member of an entry). */
typedef struct aigw_entry_ops {
    bool (*eq)(const aigw_node *n, const void *ctx);
    aigw_node *(*make)(const void *ctx); /* NULL when out of memory */
    void (*destroy)(aigw_node *n);
} aigw_entry_ops;

typedef struct aigw_table {
    pthread_rwlock_t lock; /* the structure, not the entries' state */
    aigw_node **slots;     /* cap slots, a power of two; NULL before the first */
    size_t cap;
    size_t n;
    size_t max;
    aigw_node *first;      /* insertion order, for listing */
    aigw_node **last;
    const aigw_entry_ops *ops;
} aigw_table;

/* 0, or -1 when the lock cannot be made. */
int aigw__table_init(aigw_table *t, size_t max, const aigw_entry_ops *ops);
/* Lets the table hold at least n more entries than it holds now (and never
 * fewer than before). */
void aigw__table_make_room(aigw_table *t, size_t n);
/* Destroys every entry and the lock. */
void aigw__table_free(aigw_table *t);
/* The entry equal to ctx, made (outside the lock) when it is new; NULL when
 * the table is full or out of memory. */
aigw_node *aigw__table_get(aigw_table *t, uint64_t hash, const void *ctx);
/* The entry equal to ctx, or NULL; never makes one. */
aigw_node *aigw__table_find(aigw_table *t, uint64_t hash, const void *ctx);
/* Listing: between these, walk t->first along ->order. */
void aigw__table_rdlock(aigw_table *t);
void aigw__table_unlock(aigw_table *t);

#endif
