/*
 * cmd_train.c: `spimfilter train`: learn token counts from labelled
 * messages. Every TSV is read through once before anything is learned, so
 * a bad line anywhere means nothing is written. Messages go into batches of
 * at most CHUNK_ENTS distinct tokens, each written in one LMDB transaction,
 * which bounds memory however large the corpus (a read error of a file
 * part way leaves the batches before it written). Each message is learned
 * once: the store's learned-message cache makes a repeat a no-op and a
 * message trained with the other label moves.
 */
#include "cli.h"

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/*
 * Distinct tokens a batch may hold before it is written: about 40 bytes
 * each in the batch, so 1M keeps the batch near 40 MB; larger batches save
 * little, since each commit rewrites the leaf pages its keys land on.
 */
#define CHUNK_ENTS ((size_t)1 << 20)

static void usage(FILE *f)
{
    fprintf(f, "usage: spimfilter train --db DIR (--tsv FILE | --spam PATH... --ham PATH...)\n"
               "                        [--unlearn]\n"
               "\n"
               "  --db DIR      the store (created when missing)\n"
               "  --tsv FILE    lines of 'spam' or 'ham', a TAB, the text (a header is skipped)\n"
               "  --spam PATH   files, or directories of one message per file, that are spam\n"
               "  --ham PATH    the same for ham; several paths may follow each\n"
               "  --unlearn     remove these messages from the counts instead\n");
}

struct trainer {
    struct spim_store *st;
    struct spim_scan *scan;
    struct spim_store_batch *batch;
    struct spim_token *toks;
    unsigned long spam, ham, dup, moved, unknown;
    int delta;
};

static int add(struct trainer *t, const char *text, size_t len, int is_spam)
{
    size_t n = spim_scan_tokens(t->scan, text, len, NULL, t->toks, SPIM_TOK_MAX);
    int oc = SPIM_LEARN_NEW;
    int rc = spim_store_batch_learn(t->batch, spim_store_msg_key(text, len), t->toks, n, is_spam,
                                    t->delta, &oc);

    if (rc != 0)
        return rc;
    if (oc == SPIM_LEARN_DUP)
        t->dup++;
    else if (oc == SPIM_LEARN_UNKNOWN)
        t->unknown++;
    else if (is_spam)
        t->spam++;
    else
        t->ham++;
    if (oc == SPIM_LEARN_MOVED)
        t->moved++;
    if (spim_store_batch_size(t->batch) >= CHUNK_ENTS) {
        rc = spim_store_batch_commit(t->batch);
        t->batch = NULL;
        if (rc == 0)
            rc = spim_store_batch_new(t->st, &t->batch);
    }
    return rc;
}

static int add_file(struct trainer *t, const char *path, int is_spam)
{
    char *buf;
    size_t len;
    int rc;

    if (spim_read_file(path, &buf, &len) != 0) {
        fprintf(stderr, "spimfilter train: %s: %s\n", path, strerror(errno ? errno : EIO));
        return SPIM_EIO;
    }
    rc = add(t, buf, len, is_spam);
    free(buf);
    return rc;
}

static int add_path(struct trainer *t, const char *path, int is_spam)
{
    struct stat st;
    DIR *d;
    struct dirent *de;
    int rc = 0;

    if (stat(path, &st) != 0) {
        fprintf(stderr, "spimfilter train: %s: %s\n", path, strerror(errno));
        return SPIM_EIO;
    }
    if (!S_ISDIR(st.st_mode))
        return add_file(t, path, is_spam);
    d = opendir(path);
    if (d == NULL) {
        fprintf(stderr, "spimfilter train: %s: %s\n", path, strerror(errno));
        return SPIM_EIO;
    }
    while (rc == 0 && (de = readdir(d)) != NULL) {
        char full[PATH_MAX];
        struct stat fs;

        if (de->d_name[0] == '.')
            continue;
        if ((size_t)snprintf(full, sizeof(full), "%s/%s", path, de->d_name) >= sizeof(full))
            continue;
        if (stat(full, &fs) == 0 && S_ISREG(fs.st_mode))
            rc = add_file(t, full, is_spam);
    }
    closedir(d);
    return rc;
}

/*
 * Reads a TSV a line at a time (so a corpus of any size takes one line of
 * memory) with the rules of spim_tsv_next, and learns each record into t,
 * or only checks the lines when t is NULL. "-" is stdin. Returns 0 or an
 * error already printed.
 */
static int learn_record(void *ud, int is_spam, const char *text, size_t len)
{
    return ud != NULL ? add(ud, text, len, is_spam) : 0;
}

static int stream_tsv(struct trainer *t, const char *path)
{
    char err[512];
    int rc = spim_tsv_each(path, learn_record, t, err, sizeof(err));

    if (rc != 0)
        fprintf(stderr, "spimfilter train: %s\n", err[0] ? err : spim_strerror(rc));
    return rc;
}

int spim_cmd_train(int argc, char **argv)
{
    static const struct option opts[] = {
        {"db", required_argument, NULL, 'd'},
        {"tsv", required_argument, NULL, 't'},
        {"spam", no_argument, NULL, 's'},
        {"ham", no_argument, NULL, 'h'},
        {"unlearn", no_argument, NULL, 'u'},
        {"help", no_argument, NULL, 'H'},
        {NULL, 0, NULL, 0},
    };
    const char *db = NULL;
    const char **tsvs = calloc((size_t)argc, sizeof(char *));
    const char **paths = calloc((size_t)argc, sizeof(char *));
    int *labels = calloc((size_t)argc, sizeof(int));
    size_t ntsv = 0, npath = 0;
    int label = -1, c, rc = 1, err = 0;
    struct spim_store *st = NULL;
    struct trainer t = {0};
    uint64_t t0;

    if (tsvs == NULL || paths == NULL || labels == NULL)
        goto out;
    t.delta = 1;
    optind = 1;
    /* "+" and the loop over non-options: --spam a b --ham c takes a and b as spam */
    while (optind < argc) {
        c = getopt_long(argc, argv, "+", opts, NULL);
        if (c == -1) {
            if (label < 0) {
                fprintf(stderr, "spimfilter train: '%s': give --spam or --ham before paths\n",
                        argv[optind]);
                rc = 2;
                goto out;
            }
            paths[npath] = argv[optind++];
            labels[npath++] = label;
            continue;
        }
        switch (c) {
        case 'd':
            db = optarg;
            break;
        case 't':
            tsvs[ntsv++] = optarg;
            break;
        case 's':
            label = 1;
            break;
        case 'h':
            label = 0;
            break;
        case 'u':
            t.delta = -1;
            break;
        case 'H':
            usage(stdout);
            rc = 0;
            goto out;
        default:
            usage(stderr);
            rc = 2; /* a usage error, as every command says it */
            goto out;
        }
    }
    if (db == NULL || (ntsv == 0 && npath == 0)) {
        usage(stderr);
        rc = 2;
        goto out;
    }
    /* Every line of a file is checked before anything is written. stdin, a
     * pipe or a FIFO (--tsv /dev/stdin, <(...)) cannot be read twice: it is
     * learned as it comes (read twice, the second pass saw nothing, or a FIFO
     * waited for a writer that had gone). */
    for (size_t i = 0; i < ntsv && err == 0; i++) {
        if (!spim_path_is_stream(tsvs[i])) /* a missing file is reported here, before the store */
            err = stream_tsv(NULL, tsvs[i]);
    }
    if (err != 0) {
        fprintf(stderr, "spimfilter train: nothing written\n");
        goto out;
    }
    t0 = spim_mono_ns();
    if ((err = spim_store_open(db, SPIM_STORE_CREATE, 0, &st)) != 0) {
        fprintf(stderr, "spimfilter train: %s: %s\n", db, spim_strerror(err));
        goto out;
    }
    t.st = st;
    t.toks = malloc(SPIM_TOK_MAX * sizeof(*t.toks));
    if (t.toks == NULL || spim_scan_new(NULL, &t.scan) != 0 ||
        spim_store_batch_new(st, &t.batch) != 0) {
        fprintf(stderr, "spimfilter train: out of memory\n");
        goto out;
    }
    for (size_t i = 0; i < ntsv && err == 0; i++)
        err = stream_tsv(&t, tsvs[i]);
    for (size_t i = 0; i < npath && err == 0; i++)
        err = add_path(&t, paths[i], labels[i]);
    if (err != 0) {
        fprintf(stderr, "spimfilter train: stopped; batches before the error are written\n");
        goto out;
    }
    err = spim_store_batch_commit(t.batch);
    t.batch = NULL;
    if (err != 0) {
        fprintf(stderr, "spimfilter train: %s: %s\n", db, spim_strerror(err));
        goto out;
    }
    {
        struct spim_totals tot;
        double s = (double)(spim_mono_ns() - t0) / 1e9;

        spim_store_totals(st, &tot);
        unsigned long all = t.spam + t.ham + t.dup + t.unknown;

        printf("%s %lu spam and %lu ham messages in %.2f s (%.0f messages/s); the store now "
               "holds %llu spam and %llu ham\n",
               t.delta > 0 ? "learned" : "unlearned", t.spam, t.ham, s,
               s > 0 ? (double)all / s : 0.0, (unsigned long long)tot.spam_msgs,
               (unsigned long long)tot.ham_msgs);
        /* only what happened: duplicates skipped, labels moved, nothing to unlearn */
        if (t.dup)
            printf("%lu messages already learned with that label (repeats): skipped\n", t.dup);
        if (t.moved)
            printf("%lu messages moved from the other label\n", t.moved);
        if (t.unknown)
            printf("%lu messages were not learned before: nothing to unlearn\n", t.unknown);
    }
    rc = 0;
out:
    spim_store_batch_free(t.batch);
    spim_scan_free(t.scan);
    free(t.toks);
    spim_store_close(st);
    free(tsvs);
    free(paths);
    free(labels);
    return rc;
}
