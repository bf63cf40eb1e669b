/*
 * model.c: which token counts serve classifies with, and the swap to a
 * snapshot of a trainer's store on SIGHUP (docs/scaling.md).
 *
 * The model is reference-counted like the conf of engine.c: the engine holds
 * one reference to the current model, each worker one to the model its
 * store reader reads. A swap builds the new model beside the old one and
 * moves one pointer under the engine's lock; a worker notices the new
 * generation at its next message, makes a reader on the new store and drops
 * the old model; the last reference closes the old store and removes its
 * files. A worker that gets no message keeps the old model (and its files)
 * until it does. The current model's files stay at shutdown, for the next
 * start.
 *
 * On disk, beside the engine's own store in DIR:
 *   DIR/snapshot.mdb   dropped by the operator (rename it into place)
 *   DIR/model.N/       data.mdb (the snapshot moved there) and lock.mdb;
 *                      N grows by one per snapshot loaded
 */
#include "cli.h"

#include <dirent.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MODEL_PREFIX "model."

int spim_engine_model_init(struct spim_engine *e)
{
    struct spim_engine_model *m = calloc(1, sizeof(*m));

    if (m == NULL)
        return SPIM_ENOMEM;
    m->refs = 1;
    m->generation = 1;
    m->store = e->store;
    e->model = m;
    atomic_store(&e->model_generation, 1);
    return 0;
}

/* Removes a snapshot directory: its two LMDB files, then the directory. */
static void remove_model_dir(const char *dir)
{
    char path[PATH_MAX + 16];

    snprintf(path, sizeof(path), "%s/data.mdb", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/lock.mdb", dir);
    unlink(path);
    if (rmdir(dir) != 0)
        spim_log(SPIM_LOG_WARN, "model: cannot remove %s: %s", dir, strerror(errno));
}

static void model_free(struct spim_engine_model *m)
{
    if (m->dir[0] == '\0') {
        free(m); /* the engine's own store: closed by spim_engine_close */
        return;
    }
    spim_store_close(m->store);
    /* The current one stays on disk at shutdown: the next start uses it again. */
    if (m->retired) {
        remove_model_dir(m->dir);
        spim_log(SPIM_LOG_DEBUG, "model: %s released and removed", m->dir);
    }
    free(m);
}

void spim_engine_model_release(struct spim_engine *e, struct spim_engine_model *m)
{
    int last;

    if (m == NULL)
        return;
    pthread_mutex_lock(&e->lock);
    last = --m->refs == 0;
    pthread_mutex_unlock(&e->lock);
    if (last)
        model_free(m);
}

void spim_engine_model_fini(struct spim_engine *e)
{
    spim_engine_model_release(e, e->model);
    e->model = NULL;
}

struct spim_engine_model *spim_engine_model_get(struct spim_engine *e)
{
    struct spim_engine_model *m;

    pthread_mutex_lock(&e->lock);
    m = e->model;
    if (m != NULL)
        m->refs++;
    pthread_mutex_unlock(&e->lock);
    return m;
}

int spim_engine_model_sync(struct spim_engine_worker *w)
{
    struct spim_engine_model *m;
    struct spim_store_reader *r;
    int rc;

    if (w->model == NULL ||
        atomic_load_explicit(&w->e->model_generation, memory_order_acquire) == w->model->generation)
        return 0;
    m = spim_engine_model_get(w->e);
    rc = spim_store_reader_new(m->store, &r);
    if (rc != 0) {
        spim_engine_model_release(w->e, m); /* keep the old one; retried at the next message */
        return rc;
    }
    spim_store_reader_free(w->reader);
    w->reader = r;
    spim_engine_model_release(w->e, w->model);
    w->model = m;
    return 0;
}

/* The N of "model.N", or 0 when name is not one. */
static unsigned long model_number(const char *name)
{
    const char *p = name + sizeof(MODEL_PREFIX) - 1;
    char *end;
    unsigned long n;

    if (strncmp(name, MODEL_PREFIX, sizeof(MODEL_PREFIX) - 1) != 0 || *p < '1' || *p > '9')
        return 0;
    n = strtoul(p, &end, 10);
    return *end == '\0' ? n : 0;
}

/* The highest N of the DIR/model.N present (0: none). */
static unsigned long newest_model(const char *root)
{
    DIR *d = opendir(root);
    struct dirent *de;
    unsigned long best = 0, n;

    if (d == NULL)
        return 0;
    while ((de = readdir(d)) != NULL)
        if ((n = model_number(de->d_name)) > best)
            best = n;
    closedir(d);
    return best;
}

/* At startup: removes every DIR/model.N but keep (nothing has them open yet). */
static void remove_stale(const char *root, unsigned long keep)
{
    DIR *d = opendir(root);
    struct dirent *de;
    char dir[PATH_MAX + 32];
    unsigned long n;

    if (d == NULL)
        return;
    while ((de = readdir(d)) != NULL) {
        n = model_number(de->d_name);
        if (n == 0 || n == keep)
            continue;
        snprintf(dir, sizeof(dir), "%s/%s", root, de->d_name);
        remove_model_dir(dir);
    }
    closedir(d);
}

/* Opens DIR/model.N read-only after checking it is whole. */
static int open_model(const char *dir, struct spim_engine_model **out, char *err, size_t errcap)
{
    struct spim_engine_model *m;
    struct spim_totals tot;
    int rc;

    rc = spim_store_check(dir);
    if (rc != 0) {
        snprintf(err, errcap, "%s: %s (incomplete, or not a spimfilter store)", dir,
                 spim_strerror(rc));
        return rc;
    }
    m = calloc(1, sizeof(*m));
    if (m == NULL) {
        snprintf(err, errcap, "out of memory");
        return SPIM_ENOMEM;
    }
    rc = spim_store_open(dir, SPIM_STORE_RDONLY, 0, &m->store);
    if (rc == 0)
        rc = spim_store_totals(m->store, &tot);
    if (rc != 0) {
        snprintf(err, errcap, "%s: %s", dir, spim_strerror(rc));
        spim_store_close(m->store);
        free(m);
        return rc;
    }
    m->refs = 1;
    snprintf(m->dir, sizeof(m->dir), "%s", dir);
    spim_log(SPIM_LOG_INFO, "model: %s opened: %llu spam and %llu ham messages trained", dir,
             (unsigned long long)tot.spam_msgs, (unsigned long long)tot.ham_msgs);
    *out = m;
    return 0;
}

/* Makes m current and drops the engine's reference to the old one. */
static void swap_model(struct spim_engine *e, struct spim_engine_model *m)
{
    struct spim_engine_model *old;

    pthread_mutex_lock(&e->lock);
    old = e->model;
    m->generation = old->generation + 1;
    old->retired = 1;
    e->model = m;
    atomic_store_explicit(&e->model_generation, m->generation, memory_order_release);
    pthread_mutex_unlock(&e->lock);
    spim_engine_model_release(e, old);
    spim_log(SPIM_LOG_INFO,
             "model: generation %llu is %s; workers move to it at their next message",
             (unsigned long long)m->generation, m->dir);
}

int spim_model_file(const char *db, char *buf, size_t cap)
{
    struct stat sb;
    unsigned long n;

    snprintf(buf, cap, "%s/snapshot.mdb", db);
    if (stat(buf, &sb) == 0)
        return 1;
    if ((n = newest_model(db)) == 0) {
        buf[0] = '\0';
        return 0;
    }
    snprintf(buf, cap, "%s/" MODEL_PREFIX "%lu", db, n);
    return 1;
}

int spim_engine_snapshot_load(struct spim_engine *e, int startup, char *err, size_t errcap)
{
    char snap[PATH_MAX + 32], dir[PATH_MAX + 32], data[PATH_MAX + 48];
    struct spim_engine_model *m = NULL;
    unsigned long n = newest_model(e->model_root);
    struct stat sb;
    int rc;

    err[0] = '\0';
    snprintf(snap, sizeof(snap), "%s/snapshot.mdb", e->model_root);
    if (stat(snap, &sb) != 0) {
        if (!startup || n == 0)
            return 0;
        /* An earlier run's model: used again, so a restart keeps the fleet's counts. */
        snprintf(dir, sizeof(dir), "%s/" MODEL_PREFIX "%lu", e->model_root, n);
        remove_stale(e->model_root, n);
        if ((rc = open_model(dir, &m, err, errcap)) != 0)
            return rc;
        swap_model(e, m);
        return 1;
    }
    if (!S_ISREG(sb.st_mode)) {
        snprintf(err, errcap, "%s is not a file", snap);
        return SPIM_EINVAL;
    }
    if (startup)
        remove_stale(e->model_root, 0);
    snprintf(dir, sizeof(dir), "%s/" MODEL_PREFIX "%lu", e->model_root, n + 1);
    snprintf(data, sizeof(data), "%s/data.mdb", dir);
    if (mkdir(dir, 0700) != 0) {
        snprintf(err, errcap, "%s: %s", dir, strerror(errno));
        return SPIM_EIO;
    }
    if (rename(snap, data) != 0) {
        snprintf(err, errcap, "%s -> %s: %s", snap, data, strerror(errno));
        rmdir(dir);
        return SPIM_EIO;
    }
    rc = open_model(dir, &m, err, errcap);
    if (rc != 0) {
        /* Put it back: a copy still in progress completes there, for the next SIGHUP. */
        if (stat(snap, &sb) != 0 && rename(data, snap) != 0)
            unlink(data);
        remove_model_dir(dir);
        return rc;
    }
    swap_model(e, m);
    return 1;
}
