/* htable.c - the chained hash table of the health entries (see htable.h). */
#include "htable.h"

#include <string.h>

int aigw__table_init(aigw_table *t, size_t max, const aigw_entry_ops *ops)
{
    memset(t, 0, sizeof *t);
    t->max = max;
    t->last = &t->first;
    t->ops = ops;
    return pthread_rwlock_init(&t->lock, NULL) == 0 ? 0 : -1;
}

void aigw__table_free(aigw_table *t)
{
    aigw_node *n = t->first, *next;
    for (; n; n = next) {
        next = n->order;
        t->ops->destroy(n);
    }
    aigw__free(t->slots);
    pthread_rwlock_destroy(&t->lock);
}

void aigw__table_rdlock(aigw_table *t)
{
    pthread_rwlock_rdlock(&t->lock);
}

void aigw__table_unlock(aigw_table *t)
{
    pthread_rwlock_unlock(&t->lock);
}

/* Under the lock (either kind). */
static aigw_node *find(const aigw_table *t, uint64_t hash, const void *ctx)
{
    aigw_node *n;
    if (!t->slots)
        return NULL;
    for (n = t->slots[hash & (t->cap - 1)]; n; n = n->chain)
        if (n->hash == hash && t->ops->eq(n, ctx))
            return n;
    return NULL;
}

/* Under the write lock.  Slots double when entries outnumber them; failing
 * to grow only makes chains longer.  Returns -1 when no slot array exists. */
static int grow(aigw_table *t)
{
    size_t cap = t->cap ? t->cap * 2 : 16, i;
    aigw_node **slots, *n;
    if (t->slots && t->n < t->cap)
        return 0;
    slots = aigw__calloc(cap, sizeof *slots);
    if (!slots)
        return t->slots ? 0 : -1;
    for (n = t->first; n; n = n->order) {
        i = n->hash & (cap - 1);
        n->chain = slots[i];
        slots[i] = n;
    }
    aigw__free(t->slots);
    t->slots = slots;
    t->cap = cap;
    return 0;
}

aigw_node *aigw__table_find(aigw_table *t, uint64_t hash, const void *ctx)
{
    aigw_node *n;
    pthread_rwlock_rdlock(&t->lock);
    n = find(t, hash, ctx);
    pthread_rwlock_unlock(&t->lock);
    return n;
}

void aigw__table_make_room(aigw_table *t, size_t n)
{
    pthread_rwlock_wrlock(&t->lock);
    if (t->n + n > t->max && t->n + n >= n) /* unless it would wrap */
        t->max = t->n + n;
    pthread_rwlock_unlock(&t->lock);
}

aigw_node *aigw__table_get(aigw_table *t, uint64_t hash, const void *ctx)
{
    aigw_node *n, *fresh;
    bool full;
    pthread_rwlock_rdlock(&t->lock);
    n = find(t, hash, ctx);
    full = t->n >= t->max;
    pthread_rwlock_unlock(&t->lock);
    if (n || full)
        return n;
    if (!(fresh = t->ops->make(ctx)))
        return NULL;
    fresh->hash = hash;
    pthread_rwlock_wrlock(&t->lock);
    n = find(t, hash, ctx);
    if (!n && t->n < t->max && grow(t) == 0) {
        size_t i = hash & (t->cap - 1);
        fresh->chain = t->slots[i];
        fresh->order = NULL;
        t->slots[i] = fresh;
        *t->last = fresh;
        t->last = &fresh->order;
        t->n++;
        n = fresh;
        fresh = NULL;
    }
    pthread_rwlock_unlock(&t->lock);
    if (fresh)
        t->ops->destroy(fresh);
    return n;
}
