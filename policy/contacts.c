/*
 * contacts.c: the contacts table of a running serve, in fixed memory.
 *
 * A slot holds one pair (lo, hi), its counts and days in both directions,
 * when it was last used (a clock bumped by every operation) and flags:
 * filled (the counts are the pair's, the store was read), dirty (an update
 * not yet handed to the writer) and queued (its index is in the queue).
 * The queue is a ring of slot indices, oldest update first, so that
 * spim_contacts_table_dirty finds the updates without walking the table; a
 * slot is in it at most once, so a ring as long as the table never
 * overflows. An evicted slot keeps its place in the queue and its new pair
 * inherits it; whoever pops it looks at what the slot holds then.
 *
 * Like rate.c: PROBES slots per pair, one mutex, nothing allocated after
 * creation. The victim for a new pair is an empty slot, else the least
 * recently used clean one; only _delivered (and _redirty) may take a dirty
 * one, and counts the update it loses.
 */
#include "policy.h"
#include "store.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define PROBES 8
#define MIN_SLOTS 64
#define MAX_SLOTS ((size_t)1 << 30)

enum { F_USED = 1, F_FILLED = 2, F_DIRTY = 4, F_QUEUED = 8 };

struct cslot {
    uint64_t lo, hi;
    uint64_t used;         /* the table's clock when last looked up or changed */
    uint32_t n[2], day[2]; /* [0] lo->hi, [1] hi->lo; while not filled: the updates waiting */
    uint32_t flags;
};

struct spim_contacts_table {
    pthread_mutex_t lock;
    struct cslot *s;
    size_t mask;
    uint32_t *queue; /* slot indices, a ring of mask + 1 */
    size_t qhead, qlen;
    uint64_t clock;
    _Atomic uint64_t dirty_evictions;
    uint32_t forget_days; /* the last _delivered's: a pair silent longer starts over */
};

/* Whether a pair last active on day0/day1 was silent for more than forget days by day. */
static int forgotten(uint32_t day0, uint32_t day1, uint32_t day, uint32_t forget)
{
    uint32_t last = day0 > day1 ? day0 : day1;

    return forget > 0 && last != 0 && (uint64_t)last + forget < day;
}

int spim_contacts_table_new(size_t slots, struct spim_contacts_table **out)
{
    struct spim_contacts_table *t;
    size_t n = MIN_SLOTS;

    if (out == NULL)
        return SPIM_EINVAL;
    while (n < slots && n < MAX_SLOTS)
        n *= 2;
    t = calloc(1, sizeof(*t));
    if (t == NULL)
        return SPIM_ENOMEM;
    t->s = calloc(n, sizeof(*t->s));
    t->queue = calloc(n, sizeof(*t->queue));
    if (t->s == NULL || t->queue == NULL || pthread_mutex_init(&t->lock, NULL) != 0) {
        free(t->s);
        free(t->queue);
        free(t);
        return SPIM_ENOMEM;
    }
    t->mask = n - 1;
    atomic_init(&t->dirty_evictions, 0);
    *out = t;
    return 0;
}

void spim_contacts_table_free(struct spim_contacts_table *t)
{
    if (t == NULL)
        return;
    pthread_mutex_destroy(&t->lock);
    free(t->s);
    free(t->queue);
    free(t);
}

size_t spim_contacts_table_memory(const struct spim_contacts_table *t)
{
    if (t == NULL)
        return 0;
    return sizeof(*t) + (t->mask + 1) * (sizeof(*t->s) + sizeof(*t->queue));
}

uint64_t spim_contacts_table_dirty_evictions(const struct spim_contacts_table *t)
{
    return t ? atomic_load(&((struct spim_contacts_table *)t)->dirty_evictions) : 0;
}

static uint64_t mix(uint64_t a, uint64_t b)
{
    uint64_t x = a ^ (b + 0x9e3779b97f4a7c15ULL + (a << 6) + (a >> 2));

    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
}

static uint32_t sat_add(uint32_t a, uint32_t b)
{
    return a > UINT32_MAX - b ? UINT32_MAX : a + b;
}

static uint32_t max32(uint32_t a, uint32_t b)
{
    return a > b ? a : b;
}

static struct cslot *find(struct spim_contacts_table *t, uint64_t lo, uint64_t hi)
{
    uint64_t h = mix(lo, hi);

    for (size_t i = 0; i < PROBES; i++) {
        struct cslot *s = &t->s[(h + i) & t->mask];

        if ((s->flags & F_USED) && s->lo == lo && s->hi == hi)
            return s;
    }
    return NULL;
}

/*
 * The slot a new pair takes: an empty one, else the clean one used longest
 * ago, else with may_dirty the dirty one used longest ago (*lost set), else
 * NULL. The slot is emptied for the pair, its queue place kept.
 */
static struct cslot *take(struct spim_contacts_table *t, uint64_t lo, uint64_t hi, int may_dirty,
                          int *lost)
{
    uint64_t h = mix(lo, hi);
    struct cslot *clean = NULL, *dirty = NULL, *s = NULL;

    *lost = 0;
    for (size_t i = 0; i < PROBES && s == NULL; i++) {
        struct cslot *c = &t->s[(h + i) & t->mask];

        if (!(c->flags & F_USED))
            s = c;
        else if (!(c->flags & F_DIRTY) && (clean == NULL || c->used < clean->used))
            clean = c;
        else if ((c->flags & F_DIRTY) && (dirty == NULL || c->used < dirty->used))
            dirty = c;
    }
    if (s == NULL)
        s = clean;
    if (s == NULL && may_dirty) {
        s = dirty;
        *lost = s != NULL;
    }
    if (s == NULL)
        return NULL;
    s->flags = F_USED | (s->flags & F_QUEUED);
    s->lo = lo;
    s->hi = hi;
    s->n[0] = s->n[1] = s->day[0] = s->day[1] = 0;
    return s;
}

/* Marks s dirty and queues it unless its index is in the queue already. */
static void mark_dirty(struct spim_contacts_table *t, struct cslot *s)
{
    s->flags |= F_DIRTY;
    if (!(s->flags & F_QUEUED)) {
        t->queue[(t->qhead + t->qlen) & t->mask] = (uint32_t)(s - t->s);
        t->qlen++;
        s->flags |= F_QUEUED;
    }
}

/* The store's record c merged into an entry that waits for it: the updates are added. */
static void merge_store(const struct spim_contacts_table *t, struct cslot *s,
                        const struct spim_contact *c)
{
    /* Updates waiting since the store's record went silent: the pair started over. */
    if (forgotten(c->lo_hi_day, c->hi_lo_day, max32(s->day[0], s->day[1]), t->forget_days)) {
        s->flags |= F_FILLED;
        return;
    }
    s->n[0] = sat_add(c->lo_hi_n, s->n[0]);
    s->n[1] = sat_add(c->hi_lo_n, s->n[1]);
    s->day[0] = max32(c->lo_hi_day, s->day[0]);
    s->day[1] = max32(c->hi_lo_day, s->day[1]);
    s->flags |= F_FILLED;
}

/* c with lo <= hi (the directions swapped with the parties). */
static struct spim_contact ordered(const struct spim_contact *c)
{
    struct spim_contact o = *c;

    if (c->lo > c->hi) {
        o.lo = c->hi;
        o.hi = c->lo;
        o.lo_hi_n = c->hi_lo_n;
        o.hi_lo_n = c->lo_hi_n;
        o.lo_hi_day = c->hi_lo_day;
        o.hi_lo_day = c->lo_hi_day;
    }
    return o;
}

int spim_contacts_table_get(struct spim_contacts_table *t, uint64_t from, uint64_t to,
                            struct spim_contact_view *v)
{
    uint64_t lo = from < to ? from : to, hi = from < to ? to : from;
    struct cslot *s;
    int d, found = 0;

    if (t == NULL || v == NULL)
        return 0;
    pthread_mutex_lock(&t->lock);
    s = find(t, lo, hi);
    if (s != NULL && (s->flags & F_FILLED)) {
        d = from == lo ? 0 : 1;
        v->sent = s->n[d];
        v->sent_day = s->day[d];
        /* A party writing to itself has received what it sent. */
        v->received = lo == hi ? s->n[0] : s->n[1 - d];
        v->received_day = lo == hi ? s->day[0] : s->day[1 - d];
        s->used = ++t->clock;
        found = 1;
    }
    pthread_mutex_unlock(&t->lock);
    return found;
}

void spim_contacts_table_fill(struct spim_contacts_table *t, const struct spim_contact *c)
{
    struct spim_contact o;
    struct cslot *s;
    int lost;

    if (t == NULL || c == NULL)
        return;
    o = ordered(c);
    pthread_mutex_lock(&t->lock);
    s = find(t, o.lo, o.hi);
    if (s == NULL)
        s = take(t, o.lo, o.hi, 0, &lost);
    if (s != NULL) {
        if (!(s->flags & F_FILLED)) {
            merge_store(t, s, &o); /* a fresh slot (nothing waiting) or one with updates waiting */
        } else if (!(s->flags & F_DIRTY)) {
            s->n[0] = o.lo_hi_n;
            s->n[1] = o.hi_lo_n;
            s->day[0] = o.lo_hi_day;
            s->day[1] = o.hi_lo_day;
        }
        s->used = ++t->clock;
    }
    pthread_mutex_unlock(&t->lock);
}

void spim_contacts_table_delivered(struct spim_contacts_table *t, uint64_t from, uint64_t to,
                                   uint32_t day, uint32_t forget_days)
{
    uint64_t lo = from < to ? from : to, hi = from < to ? to : from;
    struct cslot *s;
    int d = from == lo ? 0 : 1, lost = 0;

    if (t == NULL)
        return;
    pthread_mutex_lock(&t->lock);
    t->forget_days = forget_days;
    s = find(t, lo, hi);
    if (s == NULL)
        s = take(t, lo, hi, 1, &lost); /* never NULL: a dirty slot may be taken */
    if (lost)
        atomic_fetch_add(&t->dirty_evictions, 1);
    if (s != NULL) {
        if (forgotten(s->day[0], s->day[1], day, forget_days)) {
            /* silent too long: the old counts are forgotten, not added to */
            s->n[0] = s->n[1] = 0;
            s->day[0] = s->day[1] = 0;
        }
        if (s->n[d] < UINT32_MAX)
            s->n[d]++;
        s->day[d] = max32(s->day[d], day);
        s->used = ++t->clock;
        mark_dirty(t, s);
    }
    pthread_mutex_unlock(&t->lock);
}

static struct spim_contact record(const struct cslot *s)
{
    struct spim_contact c = {s->lo, s->hi, s->n[0], s->n[1], s->day[0], s->day[1]};

    return c;
}

size_t spim_contacts_table_dirty(struct spim_contacts_table *t, struct spim_contact *out,
                                 size_t cap)
{
    size_t got = 0, rounds;

    if (t == NULL || (cap > 0 && out == NULL))
        return 0;
    pthread_mutex_lock(&t->lock);
    /* Each index in the queue is looked at once at most: those waiting go to its tail. */
    for (rounds = t->qlen; rounds > 0 && got < cap; rounds--) {
        struct cslot *s = &t->s[t->queue[t->qhead]];

        t->qhead = (t->qhead + 1) & t->mask;
        t->qlen--;
        if ((s->flags & (F_USED | F_DIRTY)) != (F_USED | F_DIRTY)) {
            s->flags &= ~(uint32_t)F_QUEUED; /* written already, or evicted for a clean pair */
            continue;
        }
        if (!(s->flags & F_FILLED)) {
            /* Its counts are not the pair's yet: it waits for _fill. */
            t->queue[(t->qhead + t->qlen) & t->mask] = (uint32_t)(s - t->s);
            t->qlen++;
            continue;
        }
        out[got++] = record(s);
        s->flags &= ~(uint32_t)(F_DIRTY | F_QUEUED);
    }
    pthread_mutex_unlock(&t->lock);
    return got;
}

void spim_contacts_table_redirty(struct spim_contacts_table *t, const struct spim_contact *c,
                                 size_t n)
{
    if (t == NULL || (n > 0 && c == NULL))
        return;
    pthread_mutex_lock(&t->lock);
    for (size_t i = 0; i < n; i++) {
        struct spim_contact o = ordered(&c[i]);
        struct cslot *s = find(t, o.lo, o.hi);
        int lost;

        if (s == NULL) {
            s = take(t, o.lo, o.hi, 0, &lost);
            if (s == NULL) {
                atomic_fetch_add(&t->dirty_evictions, 1); /* no room: this update is lost */
                continue;
            }
        }
        if (!(s->flags & F_FILLED)) {
            /* The record is what the store lacks, the entry what came since. */
            merge_store(t, s, &o);
        } else {
            /* Counts only grow: the larger is the newer (a refill read the store without it). */
            s->n[0] = max32(s->n[0], o.lo_hi_n);
            s->n[1] = max32(s->n[1], o.hi_lo_n);
            s->day[0] = max32(s->day[0], o.lo_hi_day);
            s->day[1] = max32(s->day[1], o.hi_lo_day);
        }
        s->used = ++t->clock;
        mark_dirty(t, s);
    }
    pthread_mutex_unlock(&t->lock);
}

size_t spim_contacts_table_unfilled(struct spim_contacts_table *t, struct spim_contact *out,
                                    size_t cap)
{
    size_t got = 0;

    if (t == NULL || (cap > 0 && out == NULL))
        return 0;
    pthread_mutex_lock(&t->lock);
    for (size_t i = 0; i < t->qlen && got < cap; i++) {
        const struct cslot *s = &t->s[t->queue[(t->qhead + i) & t->mask]];

        if ((s->flags & (F_USED | F_DIRTY | F_FILLED)) == (F_USED | F_DIRTY))
            out[got++] = record(s);
    }
    pthread_mutex_unlock(&t->lock);
    return got;
}
