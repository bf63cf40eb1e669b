/*
 * store.c: the LMDB environment, token counts and training batches.
 *
 * Layout (all integers fixed-width little-endian unless said otherwise):
 *   "tokens"  8-byte token key -> uint32 ham, uint32 spam, uint32 day
 *             (8-byte values without the day are read too)
 *   "learned" 8-byte message hash -> uint8 label (0 ham, 1 spam), uint32 day
 *   "meta"    "format" -> uint32, "ham_msgs"/"spam_msgs"/"quar_next" -> uint64
 *   "quar", "quar_dedup": see quarantine.c
 *
 * The one subtle part is the map size. LMDB fails a write with MDB_MAP_FULL
 * when the map is too small, and mdb_env_set_mapsize() may only run while
 * no transaction of this process is live, because it unmaps the file under
 * them. So every transaction runs with st->lock held shared and a resize
 * takes it exclusive; a failed batch is aborted, the map doubled and the
 * whole batch run again. Another process may grow the map too, which we
 * learn as MDB_MAP_RESIZED when a transaction begins; we then adopt the
 * size recorded in the file the same way.
 */
#include "store_int.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

/* Sparse on Linux: a large map costs nothing until used, and avoids remaps (which
   stall every reader) while serve runs. */
#define DEFAULT_MAP_SIZE ((size_t)1 << 30)
/* Retries of one write; each doubles the map, so this is never the limit. */
#define MAX_WRITE_ATTEMPTS 48
#define MAX_READ_ATTEMPTS 16

/*
 * How many store locks this thread holds shared. A thread that already holds
 * one (say, a spim_quar_foreach() callback that deletes) must not wait for
 * the exclusive lock: it would wait for itself. glibc's default rwlock lets
 * such a thread take the shared lock again even while a resizer waits.
 */
static _Thread_local unsigned lock_depth;

static void lock_shared(struct spim_store *st)
{
    pthread_rwlock_rdlock(&st->lock);
    lock_depth++;
}

static void unlock_shared(struct spim_store *st)
{
    lock_depth--;
    pthread_rwlock_unlock(&st->lock);
}

int spim__err(int rc)
{
    if (rc == 0)
        return SPIM_OK;
    /* Ours are just above SPIM__ERR_FIRST; MDB_* codes are near -30800. */
    if (rc > SPIM__ERR_FIRST && rc < 0)
        return rc;
    switch (rc) {
    case MDB_NOTFOUND:
    case ENOENT:
        return SPIM_ENOTFOUND;
    case MDB_KEYEXIST:
    case EEXIST:
        return SPIM_EEXISTS;
    case MDB_MAP_FULL:
    case MDB_DBS_FULL:
    case MDB_READERS_FULL:
    case MDB_TXN_FULL:
    case MDB_CURSOR_FULL:
    case MDB_PAGE_FULL:
        return SPIM_EFULL;
    case MDB_VERSION_MISMATCH:
        return SPIM_EVERSION;
    case ENOMEM:
        return SPIM_ENOMEM;
    case EINVAL:
    case ENOTDIR:
        return SPIM_EINVAL;
    case EACCES:
    case EPERM:
    case EROFS:
    case EIO:
    case ENOSPC:
    case EAGAIN:
        return SPIM_EIO;
    default:
        /* MDB_INVALID, MDB_CORRUPTED, MDB_PANIC, MDB_BAD_*, ... */
        return rc > 0 ? SPIM_EIO : SPIM_ESTORE;
    }
}

/*
 * Changes the map under the exclusive lock: grow doubles it, otherwise the
 * size another process recorded in the file is adopted. seen is the size the
 * failed transaction ran with; if it changed meanwhile another thread has
 * already done the work and the caller simply retries.
 */
static int remap(struct spim_store *st, size_t seen, int grow)
{
    MDB_envinfo info;
    size_t cur, want = 0;
    int rc = 0;

    if (lock_depth > 0)
        return grow ? SPIM_EFULL : SPIM_ESTORE;
    pthread_rwlock_wrlock(&st->lock);
    cur = atomic_load(&st->map_size);
    if (cur != seen && grow)
        goto out;
    if (grow) {
        if (cur > SIZE_MAX / 2) {
            rc = SPIM_EFULL;
            goto out;
        }
        want = cur * 2;
    }
    rc = mdb_env_set_mapsize(st->env, want);
    if (rc != 0) {
        /* A failed remap may leave no map at all: try the old size back. */
        if (mdb_env_set_mapsize(st->env, cur) != 0)
            atomic_store(&st->broken, 1);
        rc = grow ? SPIM_EFULL : spim__err(rc);
        goto out;
    }
    mdb_env_info(st->env, &info);
    atomic_store(&st->map_size, info.me_mapsize);
out:
    pthread_rwlock_unlock(&st->lock);
    return rc;
}

int spim__write(struct spim_store *st, int (*fn)(struct spim_store *st, MDB_txn *txn, void *ud),
                void *ud)
{
    if (st->flags & SPIM_STORE_RDONLY)
        return SPIM_EINVAL;
    for (int attempt = 0; attempt < MAX_WRITE_ATTEMPTS; attempt++) {
        MDB_txn *txn;
        size_t seen;
        int rc;

        if (atomic_load(&st->broken))
            return SPIM_ESTORE;
        lock_shared(st);
        seen = atomic_load(&st->map_size);
        rc = mdb_txn_begin(st->env, NULL, 0, &txn);
        if (rc == 0) {
            rc = fn(st, txn, ud);
            if (rc == 0)
                rc = mdb_txn_commit(txn); /* frees txn, also on failure */
            else
                mdb_txn_abort(txn);
        }
        unlock_shared(st);
        if (rc == MDB_MAP_FULL || rc == MDB_MAP_RESIZED) {
            int r2 = remap(st, seen, rc == MDB_MAP_FULL);

            if (r2 != 0)
                return r2;
            continue;
        }
        return spim__err(rc);
    }
    return SPIM_EFULL;
}

/*
 * Begins (*txn NULL) or renews (a reset *txn) a read transaction with the
 * lock held shared; on success the lock stays held until the caller's end.
 * A map another process grew (MDB_MAP_RESIZED) is adopted and the attempt
 * made again. A failed renew leaves the txn reset, so it can be renewed.
 */
static int read_acquire(struct spim_store *st, MDB_txn **txn)
{
    for (int attempt = 0; attempt < MAX_READ_ATTEMPTS; attempt++) {
        MDB_txn *t = *txn;
        size_t seen;
        int rc;

        if (atomic_load(&st->broken))
            return SPIM_ESTORE;
        lock_shared(st);
        seen = atomic_load(&st->map_size);
        rc = t != NULL ? mdb_txn_renew(t) : mdb_txn_begin(st->env, NULL, MDB_RDONLY, &t);
        if (rc == 0) {
            *txn = t;
            return 0;
        }
        unlock_shared(st);
        if (rc != MDB_MAP_RESIZED)
            return spim__err(rc);
        rc = remap(st, seen, 0);
        if (rc != 0)
            return rc;
    }
    return SPIM_ESTORE;
}

int spim__read_begin(struct spim_store *st, MDB_txn **out)
{
    *out = NULL;
    return read_acquire(st, out); /* the lock stays held until spim__read_end() */
}

void spim__read_end(struct spim_store *st, MDB_txn *txn)
{
    mdb_txn_abort(txn);
    unlock_shared(st);
}

int spim__read_renew(struct spim_store *st, MDB_txn **txn)
{
    return read_acquire(st, txn);
}

void spim__read_reset(struct spim_store *st, MDB_txn *txn)
{
    mdb_txn_reset(txn);
    unlock_shared(st);
}

int spim__read_commit(struct spim_store *st, MDB_txn *txn)
{
    int rc = mdb_txn_commit(txn);

    unlock_shared(st);
    return spim__err(rc);
}

int spim__meta_get_u64(struct spim_store *st, MDB_txn *txn, const char *key, uint64_t *out)
{
    MDB_val k = {strlen(key), (void *)key}, v;
    int rc = mdb_get(txn, st->meta, &k, &v);

    if (rc == MDB_NOTFOUND) {
        *out = 0;
        return 0;
    }
    if (rc != 0)
        return rc;
    if (v.mv_size != 8)
        return SPIM_ESTORE;
    *out = spim_get_le64(v.mv_data);
    return 0;
}

int spim__meta_put_u64(struct spim_store *st, MDB_txn *txn, const char *key, uint64_t val)
{
    unsigned char buf[8];
    MDB_val k = {strlen(key), (void *)key}, v = {sizeof(buf), buf};

    spim_put_le64(buf, val);
    return mdb_put(txn, st->meta, &k, &v, 0);
}

/* --- Open and close ------------------------------------------------------ */

/*
 * The directories this process has open. LMDB must not open one environment
 * twice in a process: closing the second copy drops the first one's fcntl
 * locks, after which another process may reinitialise the lock file under
 * it. So a second open of the same directory fails with SPIM_EEXISTS.
 */
struct open_dir {
    dev_t dev;
    ino_t ino;
    pid_t pid; /* a child of fork() inherits the list but not the opens */
    struct open_dir *next;
};

static pthread_mutex_t open_mu = PTHREAD_MUTEX_INITIALIZER;
static struct open_dir *open_dirs;

static int claim_dir(const char *dir, struct open_dir **out)
{
    struct open_dir *d;
    struct stat sb;
    int rc = 0;

    if (stat(dir, &sb) != 0)
        return spim__err(errno);
    pthread_mutex_lock(&open_mu);
    for (d = open_dirs; d != NULL; d = d->next) {
        if (d->dev == sb.st_dev && d->ino == sb.st_ino && d->pid == getpid()) {
            rc = SPIM_EEXISTS;
            goto out;
        }
    }
    d = malloc(sizeof(*d));
    if (d == NULL) {
        rc = SPIM_ENOMEM;
        goto out;
    }
    d->dev = sb.st_dev;
    d->ino = sb.st_ino;
    d->pid = getpid();
    d->next = open_dirs;
    open_dirs = d;
    *out = d;
out:
    pthread_mutex_unlock(&open_mu);
    return rc;
}

static void release_dir(struct open_dir *od)
{
    struct open_dir **pp;

    pthread_mutex_lock(&open_mu);
    for (pp = &open_dirs; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == od) {
            *pp = od->next;
            break;
        }
    }
    pthread_mutex_unlock(&open_mu);
    free(od);
}

/* Opens (and for a new store writes) the meta keys and named databases. */
static int init_fn(struct spim_store *st, MDB_txn *txn, void *ud)
{
    unsigned create = (st->flags & SPIM_STORE_CREATE) ? MDB_CREATE : 0;
    unsigned rdonly = (st->flags & SPIM_STORE_RDONLY) != 0;
    MDB_val k = {sizeof(SPIM__META_FORMAT) - 1, SPIM__META_FORMAT}, v;
    unsigned char fmt[4];
    int rc;

    (void)ud;
    rc = mdb_dbi_open(txn, "meta", create, &st->meta);
    if (rc != 0)
        return rc; /* MDB_NOTFOUND: an LMDB env, but no store in it */
    rc = mdb_get(txn, st->meta, &k, &v);
    if (rc == MDB_NOTFOUND && create) {
        spim_put_le32(fmt, SPIM_STORE_FORMAT);
        v.mv_size = sizeof(fmt);
        v.mv_data = fmt;
        if ((rc = mdb_put(txn, st->meta, &k, &v, 0)) != 0 ||
            (rc = spim__meta_put_u64(st, txn, SPIM__META_HAM, 0)) != 0 ||
            (rc = spim__meta_put_u64(st, txn, SPIM__META_SPAM, 0)) != 0 ||
            (rc = spim__meta_put_u64(st, txn, SPIM__META_QUAR_NEXT, 1)) != 0)
            return rc;
    } else if (rc != 0) {
        return rc;
    } else if (v.mv_size != 4) {
        return SPIM_ESTORE;
    } else if (spim_get_le32(v.mv_data) != SPIM_STORE_FORMAT) {
        return SPIM_EVERSION;
    }
    /* A writer may add a database a store of this format lacks; a reader may not. */
    create = rdonly ? 0 : MDB_CREATE;
    if ((rc = mdb_dbi_open(txn, "tokens", create, &st->tokens)) != 0 ||
        (rc = mdb_dbi_open(txn, "quar", create, &st->quar)) != 0 ||
        (rc = mdb_dbi_open(txn, "quar_dedup", create, &st->dedup)) != 0)
        return rc == MDB_NOTFOUND ? SPIM_ESTORE : rc;
    /* The learned-message cache came later: a reader of a store without it goes on. */
    rc = mdb_dbi_open(txn, "learned", create, &st->learned);
    if (rc == MDB_NOTFOUND && rdonly)
        return 0;
    if (rc != 0)
        return rc;
    st->has_learned = 1;
    return 0;
}

/*
 * A read-only open cannot use spim__write(); the handles it opens survive
 * only if its read transaction commits, which is why this is not read_begin.
 */
static int init_rdonly(struct spim_store *st)
{
    MDB_txn *txn;
    int rc;

    rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0)
        return spim__err(rc);
    rc = init_fn(st, txn, NULL);
    if (rc != 0) {
        mdb_txn_abort(txn);
        return spim__err(rc);
    }
    return spim__err(mdb_txn_commit(txn));
}

/*
 * Decides whether dir holds a store, creating the directory (0700) when
 * allowed. *fresh is set when the LMDB files do not exist yet.
 */
static int prepare_dir(const char *dir, unsigned flags, int *fresh)
{
    char path[PATH_MAX];
    struct stat sb;
    int n;

    n = snprintf(path, sizeof(path), "%s/data.mdb", dir);
    if (n < 0 || (size_t)n >= sizeof(path))
        return SPIM_EINVAL;
    if (stat(dir, &sb) != 0) {
        if (errno != ENOENT)
            return spim__err(errno);
        if (!(flags & SPIM_STORE_CREATE))
            return SPIM_ENOTFOUND;
        if (mkdir(dir, 0700) != 0 && errno != EEXIST)
            return spim__err(errno);
    } else if (!S_ISDIR(sb.st_mode)) {
        return SPIM_EINVAL;
    }
    *fresh = 0;
    if (stat(path, &sb) != 0) {
        if (errno != ENOENT)
            return spim__err(errno);
        if (!(flags & SPIM_STORE_CREATE))
            return SPIM_ENOTFOUND;
        *fresh = 1;
    }
    return 0;
}

int spim_store_open(const char *dir, unsigned flags, size_t map_size, struct spim_store **out)
{
    struct spim_store *st;
    MDB_envinfo info;
    unsigned envflags = MDB_NOTLS;
    size_t want = map_size ? map_size : DEFAULT_MAP_SIZE;
    int fresh, rc;

    if (dir == NULL || out == NULL || (flags & ~(SPIM_STORE_CREATE | SPIM_STORE_RDONLY)) ||
        (flags & SPIM_STORE_CREATE && flags & SPIM_STORE_RDONLY))
        return SPIM_EINVAL;
    rc = prepare_dir(dir, flags, &fresh);
    if (rc != 0)
        return rc;

    st = calloc(1, sizeof(*st));
    if (st == NULL)
        return SPIM_ENOMEM;
    st->flags = flags;
    rc = claim_dir(dir, &st->dir);
    if (rc != 0)
        goto fail_free;
    if (pthread_rwlock_init(&st->lock, NULL) != 0) {
        rc = SPIM_ENOMEM;
        goto fail_dir;
    }
    rc = mdb_env_create(&st->env);
    if (rc != 0) {
        rc = spim__err(rc);
        goto fail_lock;
    }
    if ((rc = mdb_env_set_maxdbs(st->env, 8)) != 0 ||
        (fresh && (rc = mdb_env_set_mapsize(st->env, want)) != 0)) {
        rc = spim__err(rc);
        goto fail_env;
    }
    if (flags & SPIM_STORE_RDONLY)
        envflags |= MDB_RDONLY;
    rc = mdb_env_open(st->env, dir, envflags, 0600);
    if (rc != 0) {
        rc = spim__err(rc);
        goto fail_env;
    }
    /* Slots of crashed readers would pin old pages and make the map grow. */
    mdb_reader_check(st->env, NULL);
    /*
     * An existing store keeps the size it grew to (LMDB reads it from the
     * file); only a larger request raises it, never shrinks it.
     */
    mdb_env_info(st->env, &info);
    if (!fresh && info.me_mapsize < want) {
        rc = mdb_env_set_mapsize(st->env, want);
        if (rc != 0) {
            rc = spim__err(rc);
            goto fail_env;
        }
        mdb_env_info(st->env, &info);
    }
    atomic_init(&st->map_size, info.me_mapsize);
    atomic_init(&st->broken, 0);

    if (flags & SPIM_STORE_RDONLY)
        rc = init_rdonly(st);
    else
        rc = spim__write(st, init_fn, NULL);
    if (rc != 0)
        goto fail_env;
    *out = st;
    return 0;

fail_env:
    mdb_env_close(st->env);
fail_lock:
    pthread_rwlock_destroy(&st->lock);
fail_dir:
    release_dir(st->dir);
fail_free:
    free(st);
    return rc;
}

/* The mapping of /proc/self/maps that holds addr: LMDB does not tell where its map is. */
static int mapping_of(uintptr_t addr, uintptr_t *start, uintptr_t *end)
{
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    int found = 0;

    if (f == NULL)
        return 0;
    while (!found && fgets(line, sizeof(line), f) != NULL) {
        unsigned long long a, b;

        if (sscanf(line, "%llx-%llx", &a, &b) == 2 && addr >= a && addr < b) {
            *start = (uintptr_t)a;
            *end = (uintptr_t)b;
            found = 1;
        }
    }
    fclose(f);
    return found;
}

void spim_store_release_pages(struct spim_store *st)
{
    MDB_txn *txn;
    MDB_val k = {strlen(SPIM__META_FORMAT), (void *)SPIM__META_FORMAT}, v;
    uintptr_t a, b;

    if (st == NULL || spim__read_begin(st, &txn) != 0)
        return;
    /* a value read in place lies in the map; the lock held keeps a remap away */
    if (mdb_get(txn, st->meta, &k, &v) == 0 && mapping_of((uintptr_t)v.mv_data, &a, &b))
        madvise((void *)a, b - a, MADV_DONTNEED);
    spim__read_end(st, txn);
}

void spim_store_close(struct spim_store *st)
{
    if (st == NULL)
        return;
    spim__contacts_close(st);
    mdb_env_close(st->env);
    pthread_rwlock_destroy(&st->lock);
    release_dir(st->dir);
    free(st);
}

size_t spim_store_map_size(const struct spim_store *st)
{
    return atomic_load(&((struct spim_store *)st)->map_size);
}

/* --- Training batches ---------------------------------------------------- */

/*
 * LMDB orders keys by memcmp. Our keys are little-endian on disk, so the
 * store's order is that of the byte-swapped value: sorting by it makes a
 * batch (and a lookup) walk the B-tree left to right.
 */
static uint64_t store_order(uint64_t key)
{
    return __builtin_bswap64(key);
}

/* --- The token index -------------------------------------------------------
 * A reader that classifies many messages keeps the whole token table in
 * memory (see Lookup below) as an open-addressing table of (tag, ham, spam)
 * slots (tab_slot). Building it takes a cursor pass over the tokens; so a training
 * batch large enough to be worth it (one that touched at least a
 * FULL_MISS_SHARE-th of the tokens: a first training, a retraining) writes
 * the table itself, as it would be in memory, into the meta database under
 * SPIM__META_INDEX, and a reader copies it in one memcpy instead.
 *
 * Layout (little-endian): le32 INDEX_MAGIC, le32 bits, le64 the token
 * generation it was built for, le64 tokens, 16 bytes of zeros; then
 * 1 << bits slots of le32 tag, le16 ham, le16 spam, each token at the first
 * free slot from its home (full_index) on. An index whose generation is not
 * the store's is stale and never read: every commit that does not write it
 * deletes it. (The first layout, "SPX1", had 16-byte slots of the whole key
 * and 32-bit counts: 1 MiB for 43,000 tokens, twice the second-level cache
 * of this machine's cores, and its probes were a sixth of a `classify`.)
 */
/* Tokens of a store that may be loaded whole: at most 4 MiB of table per reader. */
#define FULL_MAX_TOKENS ((size_t)1 << 18)
/*
 * A cursor step and an insert cost about a thirteenth of a lookup from the
 * root: a reader loads the table once its misses reach a 32nd of the
 * tokens, and a batch of at least that share writes it.
 */
#define FULL_MISS_SHARE 32
#define INDEX_MAGIC 0x32585053u /* "SPX2": the layout above, full_index as below */
#define INDEX_HDR 40
#define INDEX_SLOT 8
#define INDEX_MIN_BITS 10

/*
 * A slot of the table, one 64-bit word (the index's le32, le16, le16 read
 * as one le64): the tag in bits 0-31, ham in 32-47, spam in 48-63. The tag
 * is the key's upper half, and the home slot comes from its lowest bytes
 * (full_index), so a probe that meets the tag has matched 32 + bits bits of
 * the key: a token never trained takes another's counts once in about 2^32
 * lookups (with 64-bit keys, two tokens share a key once in 2^64). Counts of
 * TAB_ESC or more are stored as TAB_ESC in both fields, and such a token is
 * read from LMDB. 0 is an empty slot; a token counted neither way is left
 * out, its answer (0 and 0) being an empty slot's.
 */
typedef uint64_t tab_slot;
#define TAB_ESC 0xffffu

static uint32_t tab_tag(uint64_t key)
{
    return (uint32_t)(key >> 32);
}

static tab_slot tab_make(uint64_t key, uint32_t ham, uint32_t spam)
{
    if (ham >= TAB_ESC || spam >= TAB_ESC)
        ham = spam = TAB_ESC;
    return tab_tag(key) | (uint64_t)ham << 32 | (uint64_t)spam << 48;
}

static uint32_t tab_ham(tab_slot w)
{
    return (uint32_t)(w >> 32) & 0xffff;
}

static uint32_t tab_spam(tab_slot w)
{
    return (uint32_t)(w >> 48);
}

/* The bits of a table for entries: at most three quarters full, so a probe meets a free slot. */
static unsigned index_bits(size_t entries)
{
    unsigned bits = INDEX_MIN_BITS;

    while (((size_t)1 << bits) - ((size_t)1 << bits) / 4 < entries)
        bits++;
    return bits;
}

/*
 * The home slot of key in a table of 1 << bits: the top bits in the store's
 * order, so that a cursor pass, which yields the keys in that order, fills
 * the table front to back instead of at random (keys are hashes, so the top
 * bits spread them evenly all the same). They are the key's lowest bytes,
 * apart from the tag (bits is at most 19).
 */
static size_t full_index(uint64_t key, unsigned bits)
{
    return (size_t)(store_order(key) >> (64 - bits));
}

/* Decodes a token value (8 bytes from earlier builds, or 12). */
static int token_value(const MDB_val *v, uint32_t *ham, uint32_t *spam)
{
    if (v->mv_size != 8 && v->mv_size != 12)
        return SPIM_ESTORE;
    *ham = spim_get_le32(v->mv_data);
    *spam = spim_get_le32((const unsigned char *)v->mv_data + 4);
    return 0;
}

/*
 * The slot of key in tab (mask + 1 == 1 << bits slots), or 0 (an empty
 * slot's answer: 0 and 0) when it is not there. A quarter of the slots at
 * least is empty, so a probe meets one; the bound holds for a table whose
 * header lied about that. Every lookup from the whole table is this.
 */
static inline tab_slot tab_find(const tab_slot *tab, size_t mask, unsigned bits, uint64_t key)
{
    uint32_t tag = tab_tag(key);
    size_t s = full_index(key, bits), p = 0;
    tab_slot w = tab[s];

    while (w != 0 && (uint32_t)w != tag && p++ < mask) {
        s = (s + 1) & mask;
        w = tab[s];
    }
    return (uint32_t)w == tag ? w : 0;
}

/* Puts key's counts into tab (three quarters full at most) at the first free slot from its home. */
static void tab_put(tab_slot *tab, unsigned bits, uint64_t key, uint32_t ham, uint32_t spam)
{
    size_t mask = ((size_t)1 << bits) - 1, s = full_index(key, bits);

    if (ham == 0 && spam == 0)
        return;
    while (tab[s] != 0)
        s = (s + 1) & mask;
    tab[s] = tab_make(key, ham, spam);
}

/*
 * Writes the index of the tokens as they are in txn, for generation gen, or
 * deletes it when there are too many tokens to be loaded whole, or when a
 * token value is not one (only a lookup of that token reports it, as it
 * did before there was an index; the training itself goes on). MDB_RESERVE
 * gives the value's pages, filled in place before the next update.
 */
static int index_write(struct spim_store *st, MDB_txn *txn, uint64_t gen)
{
    MDB_val k = {sizeof(SPIM__META_INDEX) - 1, SPIM__META_INDEX}, v, tk, tv;
    MDB_cursor *c;
    MDB_stat ms;
    unsigned char *p;
    tab_slot *tab;
    size_t nslots, n = 0;
    unsigned bits;
    int rc, op = MDB_FIRST;

    if ((rc = mdb_stat(txn, st->tokens, &ms)) != 0)
        return rc;
    bits = index_bits(ms.ms_entries);
    nslots = (size_t)1 << bits;
    /* The table as a reader holds it (tab_put, as full_load fills it), then
     * written out little-endian as index_load reads it back. */
    tab = ms.ms_entries > FULL_MAX_TOKENS ? NULL : calloc(nslots, sizeof(*tab));
    if (tab == NULL)
        goto no_index; /* too many tokens to load whole, or no memory for it now */
    if ((rc = mdb_cursor_open(txn, st->tokens, &c)) != 0) {
        free(tab);
        return rc;
    }
    while ((rc = mdb_cursor_get(c, &tk, &tv, op)) == 0) {
        uint32_t ham, spam;

        op = MDB_NEXT;
        if (tk.mv_size != 8)
            continue; /* not a token key: no lookup asks for it */
        if (token_value(&tv, &ham, &spam) != 0 || ++n > nslots - nslots / 4)
            break; /* rc 0: no index */
        tab_put(tab, bits, spim_get_le64(tk.mv_data), ham, spam);
    }
    mdb_cursor_close(c);
    if (rc != MDB_NOTFOUND) {
        free(tab);
        if (rc != 0)
            return rc;
        goto no_index;
    }
    v.mv_size = INDEX_HDR + nslots * INDEX_SLOT;
    v.mv_data = NULL;
    if ((rc = mdb_put(txn, st->meta, &k, &v, MDB_RESERVE)) != 0) {
        free(tab);
        return rc;
    }
    p = v.mv_data;
    memset(p, 0, INDEX_HDR);
    spim_put_le32(p, INDEX_MAGIC);
    spim_put_le32(p + 4, bits);
    spim_put_le64(p + 8, gen);
    spim_put_le64(p + 16, n);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(p + INDEX_HDR, tab, nslots * INDEX_SLOT);
#else
    for (size_t i = 0; i < nslots; i++)
        spim_put_le64(p + INDEX_HDR + i * INDEX_SLOT, tab[i]);
#endif
    free(tab);
    return 0;

no_index:
    rc = mdb_del(txn, st->meta, &k, NULL);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

struct batch_ent {
    uint64_t key;
    uint64_t msg; /* last message that counted this key */
    int64_t dham, dspam;
};

struct spim_store_batch {
    struct spim_store *st;
    struct batch_ent *ents;
    size_t n, cap;
    uint32_t *slots; /* open addressing: 0 empty, else index + 1 into ents */
    size_t nslots;   /* a power of two, kept at least twice n */
    uint64_t msg;
    int64_t dham_msgs, dspam_msgs;
    uint32_t day; /* of this batch, written into every value it touches */
    /* The learned cache of this batch: message hash -> state (0 forget, 1 ham, 2 spam). */
    struct batch_msg *msgs;
    size_t nmsgs, capmsgs;
    uint32_t *mslots; /* as slots, into msgs */
    size_t nmslots;
    struct spim_store_reader *rd; /* reads the stored cache; made on first use */
    /* The stored cache was empty in snapshot learned_txnid (learned_empty set):
     * until something commits, no message of the batch needs a lookup. */
    int learned_empty;
    size_t learned_txnid;
    /* Made by commit: ents and msgs in the store's key order. */
    struct sort_pair *ord, *mord;
};

struct batch_msg {
    uint64_t key;
    uint8_t state;
};

/* A key in the store's order and the index of its entry, for sorting. */
struct sort_pair {
    uint64_t ord;
    size_t idx;
};

#define BATCH_MAX_ENTS ((size_t)UINT32_MAX - 1)

static size_t slot_of(uint64_t key, size_t nslots)
{
    return (size_t)((key * 0x9E3779B97F4A7C15ull) >> 32) & (nslots - 1);
}

int spim_store_batch_new(struct spim_store *st, struct spim_store_batch **out)
{
    struct spim_store_batch *b;

    if (st == NULL || out == NULL)
        return SPIM_EINVAL;
    if (st->flags & SPIM_STORE_RDONLY)
        return SPIM_EINVAL;
    b = calloc(1, sizeof(*b));
    if (b == NULL)
        return SPIM_ENOMEM;
    b->st = st;
    b->day = (uint32_t)(spim_now_us() / (86400 * (int64_t)1000000));
    *out = b;
    return 0;
}

void spim_store_batch_free(struct spim_store_batch *b)
{
    if (b == NULL)
        return;
    free(b->ents);
    free(b->slots);
    free(b->msgs);
    free(b->mslots);
    free(b->ord);
    free(b->mord);
    spim_store_reader_free(b->rd);
    free(b);
}

/* Makes room for extra more keys so that adding a message cannot fail half way. */
static int batch_reserve(struct spim_store_batch *b, size_t extra)
{
    size_t need, cap, nslots;

    if (extra > BATCH_MAX_ENTS - b->n)
        return SPIM_ETOOBIG;
    need = b->n + extra;
    if (need > b->cap) {
        struct batch_ent *ents;

        cap = b->cap ? b->cap : 256;
        while (cap < need)
            cap *= 2;
        ents = realloc(b->ents, cap * sizeof(*ents));
        if (ents == NULL)
            return SPIM_ENOMEM;
        b->ents = ents;
        b->cap = cap;
    }
    if (need * 2 > b->nslots) {
        uint32_t *slots;

        nslots = b->nslots ? b->nslots : 512;
        while (nslots < need * 2)
            nslots *= 2;
        slots = calloc(nslots, sizeof(*slots));
        if (slots == NULL)
            return SPIM_ENOMEM;
        for (size_t i = 0; i < b->n; i++) {
            size_t s = slot_of(b->ents[i].key, nslots);

            while (slots[s] != 0)
                s = (s + 1) & (nslots - 1);
            slots[s] = (uint32_t)(i + 1);
        }
        free(b->slots);
        b->slots = slots;
        b->nslots = nslots;
    }
    return 0;
}

/* Finds key or appends it; room was reserved, so this cannot fail. */
static struct batch_ent *batch_ent(struct spim_store_batch *b, uint64_t key)
{
    size_t s = slot_of(key, b->nslots);
    struct batch_ent *e;

    while (b->slots[s] != 0) {
        e = &b->ents[b->slots[s] - 1];
        if (e->key == key)
            return e;
        s = (s + 1) & (b->nslots - 1);
    }
    e = &b->ents[b->n];
    b->slots[s] = (uint32_t)(++b->n);
    e->key = key;
    e->msg = 0;
    e->dham = e->dspam = 0;
    return e;
}

int spim_store_batch_add(struct spim_store_batch *b, const struct spim_token *toks, size_t n,
                         int is_spam, int delta)
{
    int rc;

    if (b == NULL || (n > 0 && toks == NULL) || (delta != 1 && delta != -1))
        return SPIM_EINVAL;
    rc = batch_reserve(b, n);
    if (rc != 0)
        return rc;
    b->msg++;
    for (size_t i = 0; i < n; i++) {
        struct batch_ent *e = batch_ent(b, toks[i].key);

        if (e->msg == b->msg)
            continue; /* a duplicate within this message counts once */
        e->msg = b->msg;
        if (is_spam)
            e->dspam += delta;
        else
            e->dham += delta;
    }
    if (is_spam)
        b->dspam_msgs += delta;
    else
        b->dham_msgs += delta;
    return 0;
}

/* A stored count plus a delta, kept within [0, UINT32_MAX]. */
static uint32_t add_u32(uint32_t old, int64_t d)
{
    int64_t r = (int64_t)old + d;

    if (r < 0)
        return 0;
    if (r > (int64_t)UINT32_MAX)
        return UINT32_MAX;
    return (uint32_t)r;
}

static uint64_t add_u64(uint64_t old, int64_t d)
{
    if (d < 0)
        return (uint64_t)(-d) > old ? 0 : old - (uint64_t)(-d);
    return old > UINT64_MAX - (uint64_t)d ? UINT64_MAX : old + (uint64_t)d;
}

static int apply_total(struct spim_store *st, MDB_txn *txn, const char *key, int64_t d)
{
    uint64_t v;
    int rc;

    if (d == 0)
        return 0;
    rc = spim__meta_get_u64(st, txn, key, &v);
    if (rc != 0)
        return rc;
    return spim__meta_put_u64(st, txn, key, add_u64(v, d));
}

/* Writes the learned-cache states of the batch's messages, in key order. */
static int apply_learned(struct spim_store *st, MDB_txn *txn, const struct spim_store_batch *b)
{
    unsigned char kb[8], vb[5];
    MDB_val k = {sizeof(kb), kb}, v = {sizeof(vb), vb};
    MDB_cursor *cur = NULL;
    MDB_stat ms;
    int rc;

    if (b->nmsgs == 0)
        return 0;
    if (!st->has_learned)
        return SPIM_ESTORE;
    /* Into an empty cache (a first training) the sorted keys can be appended. */
    if ((rc = mdb_stat(txn, st->learned, &ms)) != 0 ||
        (ms.ms_entries == 0 && (rc = mdb_cursor_open(txn, st->learned, &cur)) != 0))
        return rc;
    for (size_t i = 0; i < b->nmsgs && rc == 0; i++) {
        const struct batch_msg *m = &b->msgs[b->mord[i].idx];

        spim_put_le64(kb, m->key);
        if (m->state == 0) {
            if (cur == NULL && (rc = mdb_del(txn, st->learned, &k, NULL)) == MDB_NOTFOUND)
                rc = 0;
            continue;
        }
        vb[0] = (unsigned char)(m->state - 1);
        spim_put_le32(vb + 1, b->day);
        rc = cur != NULL ? mdb_cursor_put(cur, &k, &v, MDB_APPEND)
                         : mdb_put(txn, st->learned, &k, &v, 0);
    }
    if (cur != NULL)
        mdb_cursor_close(cur);
    return rc;
}

/*
 * After a commit's token writes: a batch of touched distinct tokens, against
 * at most about tokens in the table, writes the index if that is worth it
 * and otherwise deletes the one there, which is stale from now on.
 */
static int apply_index(struct spim_store *st, MDB_txn *txn, size_t touched, size_t tokens)
{
    MDB_val k = {sizeof(SPIM__META_INDEX) - 1, SPIM__META_INDEX};
    uint64_t gen;
    int rc;

    if (touched * FULL_MISS_SHARE >= tokens && tokens <= FULL_MAX_TOKENS) {
        if ((rc = spim__meta_get_u64(st, txn, SPIM__META_GEN, &gen)) != 0)
            return rc;
        return index_write(st, txn, gen);
    }
    rc = mdb_del(txn, st->meta, &k, NULL);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/*
 * The write of a batch; run again from scratch after a map resize. The keys
 * go in the store's order through one cursor: a search starts from the page
 * the cursor is on when the key is there, the value is replaced where it was
 * found, and into an empty table (a first training) the keys are appended,
 * with no search at all, filling each page before the next.
 */
static int apply_fn(struct spim_store *st, MDB_txn *txn, void *ud)
{
    struct spim_store_batch *b = ud;
    unsigned char kb[8], vb[12];
    MDB_val k = {sizeof(kb), kb}, v, nv = {sizeof(vb), vb};
    MDB_cursor *cur;
    MDB_stat ms;
    int rc, append;

    if ((rc = mdb_stat(txn, st->tokens, &ms)) != 0 ||
        (rc = mdb_cursor_open(txn, st->tokens, &cur)) != 0)
        return rc;
    append = ms.ms_entries == 0;
    for (size_t i = 0; i < b->n && rc == 0; i++) {
        const struct batch_ent *e = &b->ents[b->ord[i].idx];
        uint32_t ham = 0, spam = 0;
        int found = 0;

        /* The entries are read in key order, at random in memory: ask for one ahead. */
        if (i + 8 < b->n)
            __builtin_prefetch(&b->ents[b->ord[i + 8].idx]);

        if (e->dham == 0 && e->dspam == 0)
            continue;
        spim_put_le64(kb, e->key);
        if (!append) {
            rc = mdb_cursor_get(cur, &k, &v, MDB_SET);
            found = rc == 0;
            if (found)
                rc = token_value(&v, &ham, &spam);
            else if (rc == MDB_NOTFOUND)
                rc = 0;
            if (rc != 0)
                break;
        }
        ham = add_u32(ham, e->dham);
        spam = add_u32(spam, e->dspam);
        if (ham == 0 && spam == 0) {
            /* A token nobody has any more takes no room. */
            if (found)
                rc = mdb_cursor_del(cur, 0);
            continue;
        }
        spim_put_le32(vb, ham);
        spim_put_le32(vb + 4, spam);
        spim_put_le32(vb + 8, b->day);
        rc = mdb_cursor_put(cur, &k, &nv, append ? MDB_APPEND : found ? MDB_CURRENT : 0);
    }
    mdb_cursor_close(cur);
    if (rc != 0)
        return rc;
    if ((rc = apply_total(st, txn, SPIM__META_HAM, b->dham_msgs)) != 0 ||
        (rc = apply_total(st, txn, SPIM__META_SPAM, b->dspam_msgs)) != 0 ||
        (rc = apply_total(st, txn, SPIM__META_GEN, 1)) != 0 ||
        (rc = apply_index(st, txn, b->n, ms.ms_entries + b->n)) != 0)
        return rc;
    return apply_learned(st, txn, b);
}

/*
 * Sorts a[0..n) by ord with tmp (n pairs): a least-significant-byte radix
 * sort, eight counting passes after one that counts them all, a pass whose
 * byte is the same everywhere skipped. Keys are hashes, so buckets are even;
 * for 43,000 keys this takes a tenth of qsort's n log n compares.
 */
static void sort_pairs(struct sort_pair *a, struct sort_pair *tmp, size_t n)
{
    enum { passes = 8 };
    size_t count[passes][256]; /* 16 KiB */
    struct sort_pair *src = a, *dst = tmp, *t;

    memset(count, 0, sizeof(count));
    for (size_t i = 0; i < n; i++)
        for (unsigned p = 0; p < passes; p++)
            count[p][(a[i].ord >> (8 * p)) & 0xFF]++;
    for (unsigned p = 0; p < passes && n > 0; p++) {
        unsigned shift = 8 * p;
        size_t sum = 0;

        if (count[p][(src[0].ord >> shift) & 0xFF] == n)
            continue;
        for (unsigned d = 0; d < 256; d++) {
            size_t c = count[p][d];

            count[p][d] = sum;
            sum += c;
        }
        for (size_t i = 0; i < n; i++)
            dst[count[p][(src[i].ord >> shift) & 0xFF]++] = src[i];
        t = src;
        src = dst;
        dst = t;
    }
    if (src != a)
        memcpy(a, src, n * sizeof(*a));
}

/* The store's order of the n keys at base (stride bytes apart) into *out. */
_Static_assert(offsetof(struct batch_ent, key) == 0 && offsetof(struct batch_msg, key) == 0,
               "key_order reads the key at the start of an entry");
static int key_order(const void *base, size_t stride, size_t n, struct sort_pair **out)
{
    struct sort_pair *a, *tmp;

    *out = NULL;
    if (n == 0)
        return 0;
    a = malloc(n * sizeof(*a));
    tmp = malloc(n * sizeof(*tmp));
    if (a == NULL || tmp == NULL) {
        free(a);
        free(tmp);
        return SPIM_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        uint64_t key;

        memcpy(&key, (const char *)base + i * stride, sizeof(key));
        a[i].ord = store_order(key);
        a[i].idx = i;
    }
    sort_pairs(a, tmp, n);
    free(tmp);
    *out = a;
    return 0;
}

int spim_store_batch_commit(struct spim_store_batch *b)
{
    int rc;

    if (b == NULL)
        return SPIM_EINVAL;
    /* The hash sets are done with; the sort needs their memory more. */
    free(b->slots);
    free(b->mslots);
    b->slots = b->mslots = NULL;
    b->nslots = b->nmslots = 0;
    /* The batch's reader must not hold a read slot while the batch writes. */
    spim_store_reader_free(b->rd);
    b->rd = NULL;
    if ((rc = key_order(b->ents, sizeof(*b->ents), b->n, &b->ord)) == 0 &&
        (rc = key_order(b->msgs, sizeof(*b->msgs), b->nmsgs, &b->mord)) == 0)
        rc = spim__write(b->st, apply_fn, b);
    spim_store_batch_free(b);
    return rc;
}

/* --- Lookup -------------------------------------------------------------- */

/*
 * A reader keeps the counts it has read in memory: a token lookup in LMDB
 * costs about 300 ns even when its pages are hot (a binary search of 8-byte
 * keys on each of three pages), and a message has tens of tokens, most of
 * them seen before. What it keeps is valid while the store's token
 * generation (bumped by every training batch and prune) stays what it was;
 * the quarantine writes of serve do not touch it. It is kept in one of two
 * forms:
 *
 *   - a direct-mapped cache of the counts read one token at a time;
 *   - the whole token table, as an open-addressing table (see "The token
 *     index" above): copied from the index when the last training wrote
 *     one for this generation, else read in one cursor pass (about 25 ns a
 *     token) once the reader has gone to LMDB for a FULL_MISS_SHARE-th as
 *     many tokens as the store holds. From then on every lookup is answered
 *     from memory, a token absent from the table being unknown. Paying for
 *     the table once the misses have cost a third of it bounds what a
 *     reader that then needed no more lookups wasted at four times the
 *     least, once per generation, and a serve classifying a message now and
 *     then against a large store never pays it. Stores above
 *     FULL_MAX_TOKENS are never loaded whole.
 *
 * A lookup also skips the read transaction altogether when every token is
 * in memory and no transaction was committed since the one the reader last
 * read: LMDB's last transaction id comes from the meta page and needs no
 * reader slot, and a commit of training changes it before its counts can be
 * read.
 */
/*
 * Slots of the direct-mapped cache: RCACHE_SLOTS (1 MiB) for a store too
 * large to be loaded whole, else a quarter as many as it has tokens (within
 * the bounds), since at most a 32nd of them are read one by one before the
 * whole table is: every page of the cache costs two page faults.
 */
#define RCACHE_SLOTS 65536
#define RCACHE_MIN_SLOTS 1024
struct rcache_slot {
    uint64_t key; /* 0: empty (a token key of 0 bypasses the cache) */
    uint32_t ham, spam;
};

struct spim_store_reader {
    struct spim_store *st;
    MDB_txn *txn; /* always reset between lookups */
    uint64_t gen; /* of the cached counts and totals; UINT64_MAX: none */
    size_t txnid; /* the last snapshot read; nothing newer committed: memory is current */
    struct spim_totals totals;
    /* Direct-mapped, cache_mask + 1 slots; made at the first LMDB read (a
     * reader answered from the whole table never needs it) with cache_want. */
    struct rcache_slot *cache;
    size_t cache_want;
    size_t cache_mask;
    int cache_used; /* cache holds something to clear at the next generation */
    /* The whole token table of generation gen (NULL: not loaded). */
    const tab_slot *full;
    int full_borrowed; /* full is the index in the map itself (a snapshot reader) */
    int snapshot;      /* keeps its read transaction between lookups (see below) */
    int held;          /* snapshot: the transaction is live and the lock held */
    unsigned recheck;  /* snapshot: lookups since the last check for a newer commit */
    size_t full_mask;
    unsigned full_bits; /* full_mask + 1 == 1 << full_bits */
    int full_failed;    /* no memory for it this generation */
    size_t entries;     /* tokens stored at gen */
    size_t misses;      /* LMDB lookups since gen */
};

static int reader_refresh(struct spim_store_reader *r, int *moved);

/*
 * How many lookups a snapshot reader makes before it checks for a newer
 * commit (LMDB's last transaction id, from the meta page): a commit is seen
 * within as many messages, and the pages a train or serve frees meanwhile
 * are kept from reuse for no longer.
 */
#define SNAPSHOT_RECHECK 64

/* A reader of st whose read transaction has begun, with the lock held shared. */
static int reader_begin(struct spim_store *st, int snapshot, struct spim_store_reader **out)
{
    struct spim_store_reader *r;
    int rc;

    if (st == NULL || out == NULL)
        return SPIM_EINVAL;
    r = calloc(1, sizeof(*r));
    if (r == NULL)
        return SPIM_ENOMEM;
    r->cache_want = RCACHE_MIN_SLOTS;
    r->gen = UINT64_MAX;
    r->st = st;
    r->snapshot = snapshot;
    rc = spim__read_begin(st, &r->txn);
    if (rc != 0) {
        free(r);
        return rc;
    }
    *out = r;
    return 0;
}

int spim_store_reader_new(struct spim_store *st, struct spim_store_reader **out)
{
    struct spim_store_reader *r;
    int rc = reader_begin(st, 0, &r);

    if (rc != 0)
        return rc;
    mdb_txn_reset(r->txn);
    unlock_shared(st);
    *out = r;
    return 0;
}

int spim_store_reader_snapshot(struct spim_store *st, struct spim_store_reader **out)
{
    struct spim_store_reader *r;
    int rc = reader_begin(st, 1, &r), moved;

    if (rc != 0)
        return rc;
    r->held = 1;
    rc = reader_refresh(r, &moved);
    if (rc != 0) {
        spim_store_reader_free(r);
        return spim__err(rc);
    }
    *out = r;
    return 0;
}

void spim_store_reader_free(struct spim_store_reader *r)
{
    if (r == NULL)
        return;
    if (r->snapshot && r->held) {
        spim__read_end(r->st, r->txn); /* live, with the lock held */
    } else {
        /* A reset transaction holds no page of the map: no lock needed. */
        mdb_txn_abort(r->txn);
    }
    if (!r->full_borrowed)
        free((void *)r->full);
    free(r->cache);
    free(r);
}

/* Renews r->txn with the lock held shared; on success the lock stays held. */
static int reader_renew(struct spim_store_reader *r)
{
    return read_acquire(r->st, &r->txn);
}

/*
 * The id of the last committed transaction, from the meta page (no read
 * slot). SIZE_MAX when the env has no usable map, which no snapshot has.
 */
static size_t last_txnid(struct spim_store *st)
{
    MDB_envinfo info;

    if (atomic_load(&st->broken))
        return SIZE_MAX;
    lock_shared(st); /* the meta pages are in the map: keep a remap away */
    mdb_env_info(st->env, &info);
    unlock_shared(st);
    return info.me_last_txnid;
}

static int read_totals(struct spim_store *st, MDB_txn *txn, struct spim_totals *t)
{
    int rc;

    if ((rc = spim__meta_get_u64(st, txn, SPIM__META_HAM, &t->ham_msgs)) != 0 ||
        (rc = spim__meta_get_u64(st, txn, SPIM__META_SPAM, &t->spam_msgs)) != 0)
        return rc;
    return 0;
}

static size_t rcache_index(uint64_t key, size_t mask)
{
    return (size_t)(key ^ (key >> 29)) & mask;
}

/* Fills t from memory if the reader has its counts there; 1 if it did. */
static int mem_get(const struct spim_store_reader *r, struct spim_token *t)
{
    const struct rcache_slot *c;

    if (r->full != NULL) {
        tab_slot w = tab_find(r->full, r->full_mask, r->full_bits, t->key);

        if (tab_ham(w) == TAB_ESC)
            return 0; /* a count too large for the table: LMDB has it */
        t->ham = tab_ham(w);
        t->spam = tab_spam(w);
        return 1;
    }
    if (r->cache == NULL)
        return 0;
    c = &r->cache[rcache_index(t->key, r->cache_mask)];
    if (t->key == 0 || c->key != t->key)
        return 0;
    t->ham = c->ham;
    t->spam = c->spam;
    return 1;
}

/*
 * Faults in the pages of a table just allocated, in one call: one fault per
 * 4 KiB page (256 for the table of a 43,000-token store) costs more than
 * the kernel filling them all at once. Where MADV_POPULATE_WRITE is not
 * known (Linux before 5.14) the pages fault in as they are written.
 */
static void table_populate(void *p, size_t bytes)
{
#ifdef MADV_POPULATE_WRITE
    long pg = sysconf(_SC_PAGESIZE);
    uintptr_t a = (uintptr_t)p, e = a + bytes;

    if (pg > 0 && bytes >= ((size_t)64 << 10)) {
        a &= ~((uintptr_t)pg - 1); /* the page p is in belongs to the allocation */
        (void)madvise((void *)a, e - a, MADV_POPULATE_WRITE);
    }
#else
    (void)p;
    (void)bytes;
#endif
}

/*
 * Takes the index written for generation r->gen, if there is one that is
 * whole, as r->full (one copy; decoded slot by slot on a big-endian host).
 * No index, or one that does not check out, leaves r->full NULL: the reader
 * then builds the table itself when it is worth it.
 */
static int index_load(struct spim_store_reader *r)
{
    MDB_val k = {sizeof(SPIM__META_INDEX) - 1, SPIM__META_INDEX}, v;
    const unsigned char *p;
    tab_slot *tab;
    size_t nslots;
    unsigned bits;
    int rc = mdb_get(r->txn, r->st->meta, &k, &v);

    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc != 0)
        return rc;
    p = v.mv_data;
    if (v.mv_size < INDEX_HDR || spim_get_le32(p) != INDEX_MAGIC || spim_get_le64(p + 8) != r->gen)
        return 0;
    bits = spim_get_le32(p + 4);
    if (bits < INDEX_MIN_BITS || bits > index_bits(FULL_MAX_TOKENS) ||
        v.mv_size != INDEX_HDR + ((size_t)1 << bits) * INDEX_SLOT ||
        spim_get_le64(p + 16) > ((size_t)1 << bits) - ((size_t)1 << bits) / 4)
        return 0;
    nslots = (size_t)1 << bits;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    /* A snapshot reader's transaction stays live, so the index stays where
     * it is in the map: it is read there, not copied (the copy, with the
     * zeroed pages under it, was a twentieth of a `classify --tsv` of a
     * thousand messages). The slots follow the page header and the 40-byte
     * index header, so they are 8-byte aligned; checked anyway. */
    if (r->snapshot && (uintptr_t)(p + INDEX_HDR) % _Alignof(tab_slot) == 0) {
        r->full = (const tab_slot *)(const void *)(p + INDEX_HDR);
        r->full_borrowed = 1;
        r->full_mask = nslots - 1;
        r->full_bits = bits;
        return 0;
    }
#endif
    tab = malloc(nslots * sizeof(*tab));
    if (tab == NULL)
        return 0;
    table_populate(tab, nslots * sizeof(*tab));
    _Static_assert(sizeof(tab_slot) == INDEX_SLOT, "a slot is le32 tag, le16, le16");
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(tab, p + INDEX_HDR, nslots * INDEX_SLOT);
#else
    for (size_t i = 0; i < nslots; i++)
        tab[i] = spim_get_le64(p + INDEX_HDR + i * INDEX_SLOT);
#endif
    r->full = tab;
    r->full_borrowed = 0;
    r->full_mask = nslots - 1;
    r->full_bits = bits;
    return 0;
}

/*
 * Reads the store's generation in r->txn; when it moved, drops what the
 * reader holds, reads the totals and the token count and sets *moved (the
 * counts filled in before are stale).
 */
static int reader_refresh(struct spim_store_reader *r, int *moved)
{
    struct spim_totals t;
    MDB_stat ms;
    uint64_t gen;
    size_t want;
    int rc;

    *moved = 0;
    r->txnid = mdb_txn_id(r->txn);
    rc = spim__meta_get_u64(r->st, r->txn, SPIM__META_GEN, &gen);
    if (rc != 0 || gen == r->gen)
        return rc;
    /* the totals change only with the generation: read them once per generation */
    if ((rc = read_totals(r->st, r->txn, &t)) != 0 ||
        (rc = mdb_stat(r->txn, r->st->tokens, &ms)) != 0)
        return rc;
    want = RCACHE_SLOTS;
    if (ms.ms_entries <= FULL_MAX_TOKENS)
        for (want = RCACHE_MIN_SLOTS; want < RCACHE_SLOTS && want < ms.ms_entries / 4;)
            want *= 2;
    if (r->cache != NULL && want != r->cache_mask + 1) {
        free(r->cache); /* made again, of the new size, by the next db_get */
        r->cache = NULL;
    } else if (r->cache_used) {
        memset(r->cache, 0, (r->cache_mask + 1) * sizeof(*r->cache));
    }
    r->cache_want = want;
    r->cache_used = 0;
    if (!r->full_borrowed)
        free((void *)r->full);
    r->full = NULL;
    r->full_borrowed = 0;
    r->full_failed = 0;
    r->entries = ms.ms_entries;
    r->misses = 0;
    r->gen = gen;
    r->totals = t;
    *moved = 1;
    /* A large training wrote the table for this generation: copying it beats any lookup. */
    return r->entries <= FULL_MAX_TOKENS ? index_load(r) : 0;
}

/*
 * Reads the whole token table of r->txn into r->full. Without the memory
 * for it, or past a value that is not a token value (which only a lookup of
 * that token may report), the reader goes on with its cache (full_failed).
 */
static int full_load(struct spim_store_reader *r)
{
    tab_slot *tab;
    MDB_cursor *c;
    MDB_val k, v;
    unsigned bits = index_bits(r->entries);
    size_t nslots = (size_t)1 << bits, mask = nslots - 1, n = 0;
    int rc, op = MDB_FIRST;

    tab = calloc(nslots, sizeof(*tab));
    if (tab == NULL) {
        r->full_failed = 1;
        return 0;
    }
    table_populate(tab, nslots * sizeof(*tab));
    rc = mdb_cursor_open(r->txn, r->st->tokens, &c);
    if (rc != 0) {
        free(tab);
        return rc;
    }
    while ((rc = mdb_cursor_get(c, &k, &v, op)) == 0) {
        uint32_t ham, spam;

        op = MDB_NEXT;
        if (k.mv_size != 8)
            continue; /* not a token key: no lookup can ask for it */
        /* The count came from the same snapshot, so the table has room; if not, give up. */
        if (token_value(&v, &ham, &spam) != 0 || ++n > nslots - nslots / 4)
            break;
        tab_put(tab, bits, spim_get_le64(k.mv_data), ham, spam);
    }
    mdb_cursor_close(c);
    if (rc != MDB_NOTFOUND) {
        free(tab);
        r->full_failed = 1;
        return rc == 0 ? 0 : rc;
    }
    r->full = tab;
    r->full_borrowed = 0;
    r->full_mask = mask;
    r->full_bits = bits;
    return 0;
}

int spim__reader_whole(const struct spim_store_reader *r)
{
    return r != NULL && r->full != NULL;
}

/* Reads t from LMDB into the cache, or (after enough misses) loads the whole table. */
static int db_get(struct spim_store_reader *r, struct spim_token *t)
{
    unsigned char kb[8];
    MDB_val k = {sizeof(kb), kb}, v;
    struct rcache_slot *c;
    int rc;

    if (r->full == NULL && !r->full_failed && r->entries <= FULL_MAX_TOKENS &&
        r->misses * FULL_MISS_SHARE >= r->entries) {
        rc = full_load(r);
        if (rc != 0)
            return rc;
        if (r->full != NULL)
            return mem_get(r, t) ? 0 : SPIM_ESTORE;
    }
    r->misses++;
    spim_put_le64(kb, t->key);
    rc = mdb_get(r->txn, r->st->tokens, &k, &v);
    if (rc == MDB_NOTFOUND) {
        t->ham = t->spam = 0;
    } else if (rc != 0) {
        return rc;
    } else if ((rc = token_value(&v, &t->ham, &t->spam)) != 0) {
        return rc;
    }
    if (r->cache == NULL && (r->cache = calloc(r->cache_want, sizeof(*r->cache))) != NULL)
        r->cache_mask = r->cache_want - 1;
    if (t->key != 0 && r->cache != NULL) { /* without memory for it, no cache */
        c = &r->cache[rcache_index(t->key, r->cache_mask)];
        c->key = t->key;
        c->ham = t->ham;
        c->spam = t->spam;
        r->cache_used = 1;
    }
    return 0;
}

/*
 * A snapshot reader ends its transaction: its pages, and the index it read in
 * place, are the map's again (a borrowed index is forgotten, and the next
 * refresh reads it anew).
 */
static void snapshot_release(struct spim_store_reader *r)
{
    if (!r->held)
        return;
    mdb_txn_reset(r->txn);
    unlock_shared(r->st);
    r->held = 0;
    if (r->full_borrowed) {
        r->full = NULL;
        r->full_borrowed = 0;
        r->gen = UINT64_MAX; /* refresh as for a new generation: the index is looked up again */
    }
}

/* A snapshot reader moves to the last commit (its transaction renewed, held). */
static int snapshot_renew(struct spim_store_reader *r)
{
    int rc, moved;

    snapshot_release(r);
    rc = reader_renew(r);
    if (rc != 0)
        return rc; /* not held; the next lookup tries again */
    r->held = 1;
    return reader_refresh(r, &moved);
}

void spim_store_prefetch(const struct spim_store_reader *r, uint64_t key)
{
    /* The lookup's first probe; the table of a batch reader (512 KiB for
     * 43,000 tokens) comes from memory in each new process, and tokenizing
     * the rest of the message takes longer than the fetch. */
    if (r != NULL && r->full != NULL)
        __builtin_prefetch(&r->full[full_index(key, r->full_bits)]);
}

void spim_store_reader_release(struct spim_store_reader *r)
{
    if (r != NULL && r->snapshot)
        snapshot_release(r);
}

/* Asks for the table slots of toks first, so that their cache misses overlap. */
static void prefetch_slots(const struct spim_store_reader *r, const struct spim_token *toks,
                           size_t n)
{
    for (size_t j = 0; r->full != NULL && j < n; j++)
        __builtin_prefetch(&r->full[full_index(toks[j].key, r->full_bits)]);
}

/* Fills toks[i..n) from memory, else from r->txn (live); 0 or an LMDB code. */
static int lookup_rest(struct spim_store_reader *r, struct spim_token *toks, size_t i, size_t n)
{
    int rc = 0;

    for (; i < n && rc == 0; i++) {
        if (!mem_get(r, &toks[i]))
            rc = db_get(r, &toks[i]);
    }
    return rc;
}

/*
 * Fills toks from the whole table, a probe sequence each (tab_find); the
 * tokens whose counts the table could not hold are then read from LMDB
 * (r->txn is live). 0 or an LMDB code.
 */
static int table_lookup(struct spim_store_reader *r, struct spim_token *toks, size_t n)
{
    unsigned esc = 0;
    int rc = 0;

    prefetch_slots(r, toks, n);
    for (size_t j = 0; j < n; j++) {
        tab_slot w = tab_find(r->full, r->full_mask, r->full_bits, toks[j].key);

        toks[j].ham = tab_ham(w);
        toks[j].spam = tab_spam(w);
        esc |= tab_ham(w) == TAB_ESC;
    }
    for (size_t j = 0; esc && j < n && rc == 0; j++) {
        if (toks[j].ham == TAB_ESC) /* only an escape gives TAB_ESC (see tab_put) */
            rc = db_get(r, &toks[j]);
    }
    return rc;
}

/* A snapshot reader's lookup: its transaction is live and its lock held, and
 * it stays so for SNAPSHOT_RECHECK lookups at most when something is committed. */
static int snapshot_lookup(struct spim_store_reader *r, struct spim_token *toks, size_t n,
                           struct spim_totals *totals)
{
    int rc;

    if (!r->held || ++r->recheck >= SNAPSHOT_RECHECK) {
        r->recheck = 0;
        if (!r->held || last_txnid(r->st) != r->txnid) {
            rc = snapshot_renew(r);
            if (rc != 0)
                return spim__err(rc);
        }
    }
    if (r->full != NULL) {
        rc = table_lookup(r, toks, n);
    } else {
        prefetch_slots(r, toks, n);
        rc = lookup_rest(r, toks, 0, n);
    }
    if (rc == 0)
        *totals = r->totals;
    return spim__err(rc);
}

int spim_store_lookup(struct spim_store_reader *r, struct spim_token *toks, size_t n,
                      struct spim_totals *totals)
{
    size_t i = 0;
    int rc, moved;

    if (r == NULL || (n > 0 && toks == NULL) || totals == NULL)
        return SPIM_EINVAL;
    if (r->snapshot)
        return snapshot_lookup(r, toks, n, totals);
    if (r->gen != UINT64_MAX && last_txnid(r->st) == r->txnid) {
        /* Nothing committed since the reader's snapshot: memory is current. The
         * table (1 MiB for 43,000 tokens) is out of the nearer caches. */
        prefetch_slots(r, toks, n);
        while (i < n && mem_get(r, &toks[i]))
            i++;
        if (i == n) {
            *totals = r->totals;
            return 0;
        }
    }
    rc = reader_renew(r);
    if (rc != 0)
        return rc;
    rc = reader_refresh(r, &moved);
    if (rc != 0)
        goto out;
    if (moved)
        i = 0; /* a new generation: the counts filled in above may be stale */
    rc = lookup_rest(r, toks, i, n);
    if (rc == 0)
        *totals = r->totals;
out:
    mdb_txn_reset(r->txn);
    unlock_shared(r->st);
    return spim__err(rc);
}

int spim_store_totals(struct spim_store *st, struct spim_totals *totals)
{
    struct spim_totals t;
    MDB_txn *txn;
    int rc;

    if (st == NULL || totals == NULL)
        return SPIM_EINVAL;
    rc = spim__read_begin(st, &txn);
    if (rc != 0)
        return rc;
    rc = read_totals(st, txn, &t);
    spim__read_end(st, txn);
    if (rc == 0)
        *totals = t;
    return spim__err(rc);
}

/* --- Stats, prune, learned-message cache ------------------------------------ */

uint64_t spim_store_msg_key(const char *text, size_t len)
{
    /* Its own seed: a message key never equals a token key by construction. */
    return spim_hash64(text, len, 0x6c6561726e6564ull);
}

size_t spim_store_batch_size(const struct spim_store_batch *b)
{
    return b ? b->n : 0;
}

/* The slot of key in the batch's message map, or where it would go. */
static size_t msg_slot(const struct spim_store_batch *b, uint64_t key)
{
    size_t s = slot_of(key, b->nmslots);

    while (b->mslots[s] != 0 && b->msgs[b->mslots[s] - 1].key != key)
        s = (s + 1) & (b->nmslots - 1);
    return s;
}

/* Room for one more message in the batch's map. */
static int msgs_reserve(struct spim_store_batch *b)
{
    if (b->nmsgs + 1 > b->capmsgs) {
        size_t cap = b->capmsgs ? b->capmsgs * 2 : 256;
        struct batch_msg *m;

        if (cap > BATCH_MAX_ENTS)
            return SPIM_ETOOBIG;
        m = realloc(b->msgs, cap * sizeof(*m));
        if (m == NULL)
            return SPIM_ENOMEM;
        b->msgs = m;
        b->capmsgs = cap;
    }
    if ((b->nmsgs + 1) * 2 > b->nmslots) {
        size_t ns = b->nmslots ? b->nmslots * 2 : 512;
        uint32_t *sl = calloc(ns, sizeof(*sl));

        if (sl == NULL)
            return SPIM_ENOMEM;
        free(b->mslots);
        b->mslots = sl;
        b->nmslots = ns;
        for (size_t i = 0; i < b->nmsgs; i++)
            b->mslots[msg_slot(b, b->msgs[i].key)] = (uint32_t)(i + 1);
    }
    return 0;
}

/* The stored cache state of key: 0 unknown, 1 ham, 2 spam. */
static int learned_get(struct spim_store_batch *b, uint64_t key, uint8_t *state)
{
    struct spim_store *st = b->st;
    unsigned char kb[8];
    MDB_val k = {sizeof(kb), kb}, v;
    int rc;

    MDB_stat ms;

    *state = 0;
    if (!st->has_learned)
        return 0;
    /* A first training: an empty cache stays empty until something commits. */
    if (b->learned_empty && last_txnid(st) == b->learned_txnid)
        return 0;
    if (b->rd == NULL && (rc = spim_store_reader_new(st, &b->rd)) != 0)
        return rc;
    rc = reader_renew(b->rd);
    if (rc != 0)
        return rc;
    b->learned_empty = mdb_stat(b->rd->txn, st->learned, &ms) == 0 && ms.ms_entries == 0;
    b->learned_txnid = mdb_txn_id(b->rd->txn);
    spim_put_le64(kb, key);
    rc = mdb_get(b->rd->txn, st->learned, &k, &v);
    if (rc == 0 && v.mv_size >= 1)
        *state = ((const unsigned char *)v.mv_data)[0] ? 2 : 1;
    else if (rc == MDB_NOTFOUND)
        rc = 0;
    mdb_txn_reset(b->rd->txn);
    unlock_shared(st);
    return spim__err(rc);
}

int spim_store_batch_learn(struct spim_store_batch *b, uint64_t msg_key,
                           const struct spim_token *toks, size_t n, int is_spam, int delta,
                           int *outcome)
{
    uint8_t cur, want = is_spam ? 2 : 1;
    size_t slot;
    int rc, res;

    if (b == NULL || (n > 0 && toks == NULL) || (delta != 1 && delta != -1))
        return SPIM_EINVAL;
    if ((rc = msgs_reserve(b)) != 0)
        return rc;
    slot = msg_slot(b, msg_key);
    if (b->mslots[slot] != 0) {
        cur = b->msgs[b->mslots[slot] - 1].state;
    } else if ((rc = learned_get(b, msg_key, &cur)) != 0) {
        return rc;
    }
    if (delta > 0) {
        if (cur == want) {
            res = SPIM_LEARN_DUP;
        } else if (cur != 0) {
            /* Learned with the other label: take it out there, count it here. */
            if ((rc = spim_store_batch_add(b, toks, n, !is_spam, -1)) != 0)
                return rc;
            if ((rc = spim_store_batch_add(b, toks, n, is_spam, 1)) != 0)
                return rc;
            res = SPIM_LEARN_MOVED;
        } else {
            if ((rc = spim_store_batch_add(b, toks, n, is_spam, 1)) != 0)
                return rc;
            res = SPIM_LEARN_NEW;
        }
    } else if (cur == want) {
        if ((rc = spim_store_batch_add(b, toks, n, is_spam, -1)) != 0)
            return rc;
        res = SPIM_LEARN_UNLEARNED;
        want = 0;
    } else {
        res = SPIM_LEARN_UNKNOWN;
    }
    if (res != SPIM_LEARN_DUP && res != SPIM_LEARN_UNKNOWN) {
        if (b->mslots[slot] == 0) {
            b->msgs[b->nmsgs].key = msg_key;
            b->mslots[slot] = (uint32_t)(++b->nmsgs);
        }
        b->msgs[b->mslots[slot] - 1].state = want;
    }
    if (outcome)
        *outcome = res;
    return 0;
}

static int count_entries(MDB_txn *txn, MDB_dbi dbi, uint64_t *out)
{
    MDB_stat ms;
    int rc = mdb_stat(txn, dbi, &ms);

    if (rc == 0)
        *out = ms.ms_entries;
    return rc;
}

/*
 * Pages on LMDB's free list (FREE_DBI, database 0: each record an array of
 * page numbers whose first element is their count), what `mdb_stat -f`
 * counts: pages a prune or an update freed, reused before the file grows.
 */
static int count_free_pages(MDB_txn *txn, uint64_t *out)
{
    MDB_cursor *cur;
    MDB_val k, v;
    uint64_t n = 0;
    int rc = mdb_cursor_open(txn, 0, &cur);

    if (rc != 0)
        return rc;
    while ((rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) == 0) {
        size_t count;

        if (v.mv_size < sizeof(count))
            continue;
        memcpy(&count, v.mv_data, sizeof(count));
        n += count;
    }
    mdb_cursor_close(cur);
    *out = n;
    return rc == MDB_NOTFOUND ? 0 : rc;
}

int spim_store_stats(struct spim_store *st, struct spim_store_stats *out)
{
    struct spim_store_stats s;
    struct spim_totals t;
    MDB_envinfo info;
    MDB_stat es;
    const char *dir = NULL;
    char path[PATH_MAX];
    struct stat sb;
    MDB_txn *txn;
    uint64_t free_pages = 0;
    int rc;

    if (st == NULL || out == NULL)
        return SPIM_EINVAL;
    memset(&s, 0, sizeof(s));
    rc = spim__read_begin(st, &txn);
    if (rc != 0)
        return rc;
    if ((rc = count_entries(txn, st->tokens, &s.tokens)) == 0 &&
        (!st->has_learned || (rc = count_entries(txn, st->learned, &s.learned)) == 0) &&
        (rc = read_totals(st, txn, &t)) == 0 && (rc = mdb_env_info(st->env, &info)) == 0 &&
        (rc = mdb_env_stat(st->env, &es)) == 0 && (rc = count_free_pages(txn, &free_pages)) == 0) {
        uint64_t pages = (uint64_t)info.me_last_pgno + 1;

        s.ham_msgs = t.ham_msgs;
        s.spam_msgs = t.spam_msgs;
        free_pages = free_pages < pages ? free_pages : pages;
        s.used_bytes = (pages - free_pages) * es.ms_psize;
        s.free_bytes = free_pages * es.ms_psize;
        s.map_size = info.me_mapsize;
    }
    spim__read_end(st, txn);
    if (rc != 0)
        return spim__err(rc);
    if (mdb_env_get_path(st->env, &dir) == 0 && dir != NULL &&
        (size_t)snprintf(path, sizeof(path), "%s/data.mdb", dir) < sizeof(path) &&
        stat(path, &sb) == 0) {
        s.file_bytes = (uint64_t)sb.st_size;
        s.disk_bytes = (uint64_t)sb.st_blocks * 512;
    }
    *out = s;
    return 0;
}

struct prune_args {
    uint32_t min_count, max_age_days, today;
    int dry_run;
    uint64_t removed, learned_removed;
};

/* Walks dbi with a cursor and deletes what old() says; counts into *n. */
static int prune_dbi(MDB_txn *txn, MDB_dbi dbi, int (*old)(const MDB_val *v, void *ud), void *ud,
                     int dry_run, uint64_t *n)
{
    MDB_cursor *c;
    MDB_val k, v;
    int rc, op = MDB_FIRST;

    *n = 0;
    rc = mdb_cursor_open(txn, dbi, &c);
    if (rc != 0)
        return rc;
    while ((rc = mdb_cursor_get(c, &k, &v, op)) == 0) {
        op = MDB_NEXT;
        if (!old(&v, ud))
            continue;
        (*n)++;
        /* After a delete LMDB's MDB_NEXT yields the entry that moved under the cursor. */
        if (!dry_run && (rc = mdb_cursor_del(c, 0)) != 0)
            break;
    }
    mdb_cursor_close(c);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

static int too_old(const struct prune_args *a, uint32_t day)
{
    return a->max_age_days > 0 && day > 0 && a->today > day && a->today - day > a->max_age_days;
}

static int token_old(const MDB_val *v, void *ud)
{
    const struct prune_args *a = ud;
    const unsigned char *p = v->mv_data;
    uint64_t cnt;

    if (v->mv_size != 8 && v->mv_size != 12)
        return 0;
    cnt = (uint64_t)spim_get_le32(p) + spim_get_le32(p + 4);
    if (a->min_count > 0 && cnt < a->min_count)
        return 1;
    return v->mv_size == 12 && too_old(a, spim_get_le32(p + 8));
}

static int learned_old(const MDB_val *v, void *ud)
{
    const struct prune_args *a = ud;

    return v->mv_size == 5 && too_old(a, spim_get_le32((const unsigned char *)v->mv_data + 1));
}

static int prune_fn(struct spim_store *st, MDB_txn *txn, void *ud)
{
    struct prune_args *a = ud;
    int rc;

    rc = prune_dbi(txn, st->tokens, token_old, a, a->dry_run, &a->removed);
    if (rc == 0 && !a->dry_run && a->removed > 0 &&
        (rc = apply_total(st, txn, SPIM__META_GEN, 1)) == 0)
        rc = apply_index(st, txn, 0, 1); /* the index is stale: deleted */
    if (rc == 0 && st->has_learned && a->max_age_days > 0)
        rc = prune_dbi(txn, st->learned, learned_old, a, a->dry_run, &a->learned_removed);
    return rc;
}

int spim_store_prune(struct spim_store *st, uint32_t min_count, uint32_t max_age_days,
                     int64_t now_us, int dry_run, uint64_t *removed, uint64_t *learned_removed)
{
    struct prune_args a;
    int rc;

    if (st == NULL || now_us < 0)
        return SPIM_EINVAL;
    memset(&a, 0, sizeof(a));
    a.min_count = min_count;
    a.max_age_days = max_age_days;
    a.today = (uint32_t)(now_us / (86400 * (int64_t)1000000));
    a.dry_run = dry_run;
    rc = spim__write(st, prune_fn, &a);
    if (rc == 0) {
        if (removed)
            *removed = a.removed;
        if (learned_removed)
            *learned_removed = a.learned_removed;
    }
    return rc;
}
