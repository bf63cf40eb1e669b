/*
 * snapshot.c: a compact, consistent copy of the store for other filter
 * instances, and the check that a copy is whole before it is used.
 *
 * LMDB's copy with compaction (mdb_env_copyfd2, MDB_CP_COMPACT) walks the
 * B-trees in one read transaction, so the copy is the state of one commit
 * whatever writers do meanwhile, and omits free pages. It writes to a file
 * descriptor: we give it a temporary file beside the target and rename it
 * into place only once it is complete and flushed, so a reader of the
 * target never sees half a copy.
 */
#include "store_int.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#define SNAPSHOT_ATTEMPTS 8

int spim_store_snapshot(struct spim_store *st, const char *path)
{
    char tmp[PATH_MAX];
    MDB_txn *txn;
    int fd, n, rc = 0;

    if (st == NULL || path == NULL || path[0] == '\0')
        return SPIM_EINVAL;
    n = snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
    if (n < 0 || (size_t)n >= sizeof(tmp))
        return SPIM_EINVAL;
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return spim__err(errno);
    for (int attempt = 0; attempt < SNAPSHOT_ATTEMPTS; attempt++) {
        /* Adopts a map another process grew, which the copy's own txn would refuse. */
        rc = spim__read_begin(st, &txn);
        if (rc != 0)
            goto fail;
        spim__read_end(st, txn);
        /* Held shared, as by every transaction: no remap of this process under the copy. */
        pthread_rwlock_rdlock(&st->lock);
        rc = mdb_env_copyfd2(st->env, fd, MDB_CP_COMPACT);
        pthread_rwlock_unlock(&st->lock);
        if (rc != MDB_MAP_RESIZED)
            break;
        if (ftruncate(fd, 0) != 0 || lseek(fd, 0, SEEK_SET) != 0) {
            rc = errno;
            break;
        }
    }
    if (rc != 0) {
        rc = spim__err(rc);
        goto fail;
    }
    if (fsync(fd) != 0) {
        rc = spim__err(errno);
        goto fail;
    }
    if (close(fd) != 0) {
        fd = -1;
        rc = spim__err(errno);
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        rc = spim__err(errno);
        goto fail;
    }
    return 0;

fail:
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    return rc;
}

int spim_store_check(const char *dir)
{
    char data[PATH_MAX];
    MDB_env *env = NULL;
    MDB_envinfo info;
    MDB_stat ms;
    struct stat sb;
    int n, rc;

    if (dir == NULL)
        return SPIM_EINVAL;
    n = snprintf(data, sizeof(data), "%s/data.mdb", dir);
    if (n < 0 || (size_t)n >= sizeof(data))
        return SPIM_EINVAL;
    if (stat(data, &sb) != 0)
        return errno == ENOENT ? SPIM_ENOTFOUND : spim__err(errno);
    /*
     * A bare environment: open reads the meta pages with pread(); info and
     * stat read only those and the header, never a page past them.
     */
    if ((rc = mdb_env_create(&env)) != 0)
        return spim__err(rc);
    rc = mdb_env_open(env, dir, MDB_RDONLY | MDB_NOTLS, 0600);
    if (rc == 0 && (rc = mdb_env_stat(env, &ms)) == 0 && (rc = mdb_env_info(env, &info)) == 0 &&
        (uint64_t)sb.st_size < ((uint64_t)info.me_last_pgno + 1) * ms.ms_psize)
        rc = SPIM_ESTORE;
    mdb_env_close(env);
    return rc == MDB_INVALID || rc == MDB_VERSION_MISMATCH ? SPIM_ESTORE : spim__err(rc);
}
