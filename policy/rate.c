/*
 * rate.c: distinct members per key in a window, in fixed memory.
 *
 * A key slot holds the key, the start of its current window and how many
 * distinct members it reached in it. A pair slot holds a hash of (key,
 * member) and the window start it was counted in: a member counts again
 * only in a new window. Both tables probe PROBES slots; when none is free
 * the oldest is reused. A reused pair slot can only make a member count
 * twice (a larger count), and a reused key slot restarts that key's window
 * (a smaller count): neither grows memory.
 */
#include "policy.h"

#include <pthread.h>
#include <stdlib.h>

#define PROBES 8

struct kslot {
    uint64_t key, start;
    uint32_t count;
};

struct pslot {
    uint64_t pair, stamp;
};

struct spim_rate {
    pthread_mutex_t lock;
    struct kslot *k;
    struct pslot *p;
    size_t kmask, pmask;
};

static size_t pow2(size_t n)
{
    size_t c = 64;

    while (c < n && c < ((size_t)1 << 30))
        c *= 2;
    return c;
}

int spim_rate_new(size_t keys, size_t pairs, struct spim_rate **out)
{
    struct spim_rate *r = calloc(1, sizeof(*r));

    if (r == NULL)
        return SPIM_ENOMEM;
    keys = pow2(keys);
    pairs = pow2(pairs);
    r->k = calloc(keys, sizeof(*r->k));
    r->p = calloc(pairs, sizeof(*r->p));
    if (r->k == NULL || r->p == NULL) {
        free(r->k);
        free(r->p);
        free(r);
        return SPIM_ENOMEM;
    }
    r->kmask = keys - 1;
    r->pmask = pairs - 1;
    pthread_mutex_init(&r->lock, NULL);
    *out = r;
    return 0;
}

void spim_rate_free(struct spim_rate *r)
{
    if (r == NULL)
        return;
    pthread_mutex_destroy(&r->lock);
    free(r->k);
    free(r->p);
    free(r);
}

size_t spim_rate_memory(const struct spim_rate *r)
{
    return sizeof(*r) + (r->kmask + 1) * sizeof(*r->k) + (r->pmask + 1) * sizeof(*r->p);
}

static uint64_t mix(uint64_t a, uint64_t b)
{
    uint64_t x = a ^ (b + 0x9e3779b97f4a7c15ULL + (a << 6) + (a >> 2));

    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x ? x : 1;
}

unsigned spim_rate_observe(struct spim_rate *r, uint64_t key, uint64_t member, unsigned window_s,
                           uint64_t now_s)
{
    struct kslot *ks = NULL, *old = NULL;
    struct pslot *ps = NULL, *pold = NULL;
    uint64_t pair;
    unsigned count;
    size_t i;

    key = key ? key : 1;
    now_s = now_s ? now_s : 1;
    pair = mix(key, member);
    pthread_mutex_lock(&r->lock);
    for (i = 0; i < PROBES; i++) {
        struct kslot *s = &r->k[(key + i) & r->kmask];

        if (s->key == key) {
            ks = s;
            break;
        }
        /* The victim: an empty slot, else the one whose window started first. */
        if (old == NULL || (old->key != 0 && (s->key == 0 || s->start < old->start)))
            old = s;
    }
    if (ks == NULL) {
        ks = old;
        ks->key = key;
        ks->start = now_s;
        ks->count = 0;
    } else if (now_s >= ks->start + window_s || now_s < ks->start) {
        ks->start = now_s;
        ks->count = 0;
    }
    for (i = 0; i < PROBES; i++) {
        struct pslot *s = &r->p[(pair + i) & r->pmask];

        if (s->pair == pair) {
            ps = s;
            break;
        }
        if (pold == NULL || (pold->pair != 0 && (s->pair == 0 || s->stamp < pold->stamp)))
            pold = s;
    }
    if (ps == NULL) {
        ps = pold;
        ps->pair = pair;
        ps->stamp = 0;
    }
    if (ps->stamp != ks->start) {
        ps->stamp = ks->start;
        if (ks->count < UINT32_MAX)
            ks->count++;
    }
    count = ks->count;
    pthread_mutex_unlock(&r->lock);
    return count;
}
