/*
 * policy_int.h: what the files of policy/ share: the string sets and the
 * layout of struct spim_policy. Not for other modules.
 */
#ifndef SPIM_POLICY_INT_H
#define SPIM_POLICY_INT_H

#include "policy.h"

#include <stddef.h>
#include <stdint.h>

/* The longest list value, User-Agent or file name looked at. */
#define SPIM__POLICY_VALUE_MAX 255

/* Bytes of every entry's strings; entries refer to them by offset. */
struct spim__pool {
    char *p;
    size_t len, cap;
};

/* One entry of a string set: its match key and the value as written. */
struct spim__sent {
    uint64_t h;
    uint32_t key_off, disp_off;
    uint16_t key_len, disp_len;
};

/* Open addressing, linear probing, power-of-two capacity, at most half full. */
struct spim__strset {
    struct spim__sent *e; /* h == 0: empty */
    size_t cap, n;
};

/* A network as 128 bits (IPv4 as ::ffff:a.b.c.d, prefix + 96). */
struct spim__net {
    uint64_t hi, lo;
    uint32_t disp_off;
    uint16_t disp_len;
    uint8_t plen;
};

struct spim__list {
    struct spim__strset uri;                           /* user@host */
    struct spim__strset udomain;                       /* *@domain: that domain exactly */
    struct spim__strset domain;                        /* domain and subdomains */
    struct spim__strset ua_exact;                      /* lower-cased, no wildcard */
    struct spim__strset ua_prefix;                     /* lower-cased prefix of "prefix*" */
    uint8_t ua_prefix_len[SPIM__POLICY_VALUE_MAX + 1]; /* lengths present in ua_prefix */
    struct spim__net *nets;                            /* sorted by plen, hi, lo */
    size_t nnets, capnets;
    unsigned plen_first[130]; /* nets[plen_first[l] .. plen_first[l + 1]) have prefix l */
    uint8_t plens[129];       /* prefix lengths present, longest first */
    unsigned nplens;
    struct spim__sent *globs; /* other User-Agent patterns, matched one by one */
    size_t nglobs, capglobs;
    size_t count;
};

struct spim_policy {
    struct spim__pool pool;
    struct spim__list lists[2];                              /* allow, block */
    struct spim__list shadow[2];                             /* marked shadow: never decide */
    char *block_ext, *allow_ext, *block_types, *allow_types; /* ",a,b," or NULL */
    uint64_t max_size;
};

int spim__pool_add(struct spim__pool *pool, const char *s, size_t n, uint32_t *off);
uint64_t spim__key_hash(const char *s, size_t n);
int spim__strset_add(struct spim__strset *set, const struct spim__pool *pool,
                     const struct spim__sent *e);
const struct spim__sent *spim__strset_find(const struct spim__strset *set,
                                           const struct spim__pool *pool, const char *s, size_t n);
void spim__strset_free(struct spim__strset *set);
/* Case-insensitive glob with '*' and '?': 1 when s matches pat. */
int spim__glob(const char *pat, size_t pn, const char *s, size_t sn);
/*
 * Reads the whole file path into a malloc'd *buf (the caller frees) of *len
 * bytes: SPIM_EIO when it cannot be read, SPIM_ETOOBIG past max bytes,
 * SPIM_ENOMEM. The list and policy files' one reader.
 */
int spim__read_file(const char *path, size_t max, char **buf, size_t *len);

#endif
