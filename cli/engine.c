/*
 * engine.c: joins the classifier to the store, and swaps what SIGHUP
 * reloads. The classifier asks for token counts through struct
 * spim_counts_ops; here that is a per-thread LMDB reader, so every lookup
 * sees the last committed training.
 */
#include "cli.h"
#include "policy.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/*
 * Builds the policy of cfg: the allow and block list files (errors name the
 * file and line) and the file-transfer rules. Loaded in full beside the
 * running one, so a reload with a bad list keeps the old policy.
 */
static int policy_load(const struct spim_config *cfg, struct spim_policy **out, char *err,
                       size_t errcap)
{
    struct spim_policy_files_conf fc = {cfg->file_block_ext, cfg->file_allow_ext,
                                        cfg->file_block_types, cfg->file_allow_types,
                                        cfg->file_max_size};
    struct spim_policy *p;
    struct spim_diag d;
    int rc;

    if ((rc = spim_policy_new(&p)) != 0) {
        snprintf(err, errcap, "out of memory");
        return rc;
    }
    memset(&d, 0, sizeof(d));
    if ((cfg->allow_list[0] != '\0' &&
         (rc = spim_policy_load_list(p, SPIM_POLICY_ALLOW, cfg->allow_list, &d)) != 0) ||
        (cfg->block_list[0] != '\0' &&
         (rc = spim_policy_load_list(p, SPIM_POLICY_BLOCK, cfg->block_list, &d)) != 0) ||
        (rc = spim_policy_set_files(p, &fc, &d)) != 0) {
        if (d.line)
            snprintf(err, errcap, "%s:%u: %s", d.file, d.line, d.msg);
        else
            snprintf(err, errcap, "%s%s%s", d.file, d.file[0] ? ": " : "",
                     d.msg[0] ? d.msg : spim_strerror(rc));
        spim_policy_free(p);
        return rc;
    }
    *out = p;
    return 0;
}

static int conf_new(const struct spim_config *cfg, unsigned rules_flags,
                    struct spim_engine_conf **out, char *err, size_t errcap)
{
    struct spim_engine_conf *c = calloc(1, sizeof(*c));
    struct spim_diag d;
    int rc;

    if (c == NULL) {
        snprintf(err, errcap, "out of memory");
        return SPIM_ENOMEM;
    }
    c->refs = 1;
    c->cfg = *cfg;
    if (cfg->rules[0] != '\0') {
        memset(&d, 0, sizeof(d));
        rc = spim_rules_load_ex(cfg->rules, rules_flags, &c->rules, &d);
        if (rc != 0) {
            if (d.line)
                snprintf(err, errcap, "%s:%u: %s", d.file[0] ? d.file : cfg->rules, d.line, d.msg);
            else
                snprintf(err, errcap, "%s: %s", cfg->rules, d.msg[0] ? d.msg : spim_strerror(rc));
            free(c);
            return rc;
        }
    }
    rc = policy_load(cfg, &c->policy, err, errcap);
    if (rc != 0) {
        spim_rules_free(c->rules);
        free(c);
        return rc;
    }
    if (cfg->recipient_policy[0] != '\0') {
        memset(&d, 0, sizeof(d));
        rc = spim_rcpts_load(cfg->recipient_policy, &c->rcpts, &d);
        if (rc != 0) {
            if (d.line)
                snprintf(err, errcap, "%s:%u: %s", d.file[0] ? d.file : cfg->recipient_policy,
                         d.line, d.msg);
            else
                snprintf(err, errcap, "%s: %s", cfg->recipient_policy,
                         d.msg[0] ? d.msg : spim_strerror(rc));
            spim_policy_free(c->policy);
            spim_rules_free(c->rules);
            free(c);
            return rc;
        }
    }
    *out = c;
    return 0;
}

static void conf_free(struct spim_engine_conf *c)
{
    if (c == NULL)
        return;
    spim_rules_free(c->rules);
    spim_policy_free(c->policy);
    spim_rcpts_free(c->rcpts);
    free(c);
}

/* Drops a reference; the last one frees. */
static void conf_release(struct spim_engine *e, struct spim_engine_conf *c)
{
    int last;

    if (c == NULL)
        return;
    pthread_mutex_lock(&e->lock);
    last = --c->refs == 0;
    pthread_mutex_unlock(&e->lock);
    if (last)
        conf_free(c);
}

int spim_engine_open(struct spim_engine *e, const struct spim_config *cfg, unsigned flags,
                     char *err, size_t errcap)
{
    int rc;

    memset(e, 0, sizeof(*e));
    pthread_mutex_init(&e->lock, NULL);
    e->rules_flags = (flags & SPIM_ENGINE_BATCH) ? SPIM_RULES_MAP : 0;
    rc = spim_store_open(cfg->db,
                         (flags & SPIM_ENGINE_WRITABLE) ? SPIM_STORE_CREATE : SPIM_STORE_RDONLY, 0,
                         &e->store);
    if (rc != 0) {
        snprintf(err, errcap, "%s: %s%s", cfg->db, spim_strerror(rc),
                 rc == SPIM_ENOTFOUND ? " (train it first: spimfilter train --db DIR ...)" : "");
        pthread_mutex_destroy(&e->lock);
        return rc;
    }
    rc = conf_new(cfg, e->rules_flags, &e->conf, err, errcap);
    if (rc != 0) {
        spim_store_close(e->store);
        e->store = NULL;
        pthread_mutex_destroy(&e->lock);
        return rc;
    }
    e->conf->generation = 1;
    atomic_store(&e->generation, 1);
    snprintf(e->model_root, sizeof(e->model_root), "%s", cfg->db);
    if (spim_engine_model_init(e) != 0) {
        snprintf(err, errcap, "out of memory");
        spim_engine_close(e);
        return SPIM_ENOMEM;
    }
    /* Counter memory is fixed here (rate_entries) and kept across reloads; the
     * batch commands judge no SIP traffic, so they have no counters (judge.c
     * skips the checks without them). */
    if (!(flags & SPIM_ENGINE_BATCH) &&
        (spim_rate_new(cfg->rate_entries, (size_t)cfg->rate_entries * 2, &e->fanout) != 0 ||
         spim_rate_new(cfg->rate_entries, (size_t)cfg->rate_entries * 2, &e->bulk) != 0)) {
        snprintf(err, errcap, "out of memory for %u rate_entries", cfg->rate_entries);
        spim_engine_close(e);
        return SPIM_ENOMEM;
    }
    /* The contacts table is sized here too (contacts_memory) and only where serve writes. */
    if ((flags & SPIM_ENGINE_WRITABLE) && cfg->contacts &&
        spim_contacts_table_new(cfg->contacts_memory, &e->contacts) != 0) {
        snprintf(err, errcap, "out of memory for %u contacts_memory", cfg->contacts_memory);
        spim_engine_close(e);
        return SPIM_ENOMEM;
    }
    return 0;
}

void spim_engine_close(struct spim_engine *e)
{
    spim_rate_free(e->fanout);
    spim_rate_free(e->bulk);
    e->fanout = e->bulk = NULL;
    spim_contacts_table_free(e->contacts);
    e->contacts = NULL;
    conf_release(e, e->conf);
    e->conf = NULL;
    spim_engine_model_fini(e); /* a snapshot model is closed here, the own store below */
    spim_store_close(e->store);
    e->store = NULL;
    pthread_mutex_destroy(&e->lock);
}

int spim_engine_reload(struct spim_engine *e, const struct spim_config *cfg, char *err,
                       size_t errcap)
{
    struct spim_engine_conf *c, *old;
    int rc = conf_new(cfg, e->rules_flags, &c, err, errcap);

    if (rc != 0)
        return rc;
    pthread_mutex_lock(&e->lock);
    old = e->conf;
    c->generation = old->generation + 1;
    e->conf = c;
    atomic_store(&e->generation, c->generation);
    pthread_mutex_unlock(&e->lock);
    conf_release(e, old);
    return 0;
}

/* The current conf, with a reference taken. */
static struct spim_engine_conf *conf_get(struct spim_engine *e)
{
    struct spim_engine_conf *c;

    pthread_mutex_lock(&e->lock);
    c = e->conf;
    c->refs++;
    pthread_mutex_unlock(&e->lock);
    return c;
}

static int worker_new(struct spim_engine *e, int batch, struct spim_engine_worker **out)
{
    struct spim_engine_worker *w = calloc(1, sizeof(*w));
    struct spim_store *st;
    int rc;

    if (w == NULL)
        return SPIM_ENOMEM;
    w->e = e;
    w->conf = conf_get(e);
    w->model = spim_engine_model_get(e);
    st = w->model ? w->model->store : e->store;
    rc = batch ? spim_store_reader_snapshot(st, &w->reader) : spim_store_reader_new(st, &w->reader);
    if (rc != 0 || (rc = spim_scan_new(w->conf->rules, &w->scan)) != 0) {
        spim_engine_worker_free(w);
        return rc;
    }
    *out = w;
    return 0;
}

int spim_engine_worker_new(struct spim_engine *e, struct spim_engine_worker **out)
{
    return worker_new(e, 0, out);
}

int spim_engine_worker_batch(struct spim_engine *e, struct spim_engine_worker **out)
{
    return worker_new(e, 1, out);
}

void spim_engine_worker_release(struct spim_engine_worker *w)
{
    if (w != NULL)
        spim_store_reader_release(w->reader);
}

void spim_engine_worker_free(struct spim_engine_worker *w)
{
    if (w == NULL)
        return;
    for (unsigned i = 0; i < w->npend; i++)
        free(w->pend_buf[i]);
    spim_scan_free(w->scan);
    spim_store_reader_free(w->reader);
    spim_engine_model_release(w->e, w->model);
    conf_release(w->e, w->conf);
    free(w);
}

int spim_engine_worker_sync(struct spim_engine_worker *w)
{
    struct spim_engine_conf *c;
    struct spim_scan *scan;
    int rc;

    spim_engine_model_sync(w); /* a failure keeps the old model, retried at the next message */
    if (atomic_load_explicit(&w->e->generation, memory_order_acquire) == w->conf->generation)
        return 0;
    c = conf_get(w->e);
    rc = spim_scan_new(c->rules, &scan);
    if (rc != 0) {
        conf_release(w->e, c); /* keep the old one; retried at the next message */
        return rc;
    }
    spim_scan_free(w->scan);
    w->scan = scan;
    conf_release(w->e, w->conf);
    w->conf = c;
    return 0;
}

static int lookup(void *ud, struct spim_token *toks, size_t n, struct spim_totals *totals)
{
    return spim_store_lookup(ud, toks, n, totals);
}

static void prefetch(void *ud, uint64_t key)
{
    spim_store_prefetch(ud, key);
}

static const struct spim_counts_ops store_counts = {.lookup = lookup, .prefetch = prefetch};

int spim_engine_classify(struct spim_engine_worker *w, const char *text, size_t len,
                         const struct spim_tok_meta *meta, struct spim_verdict *v)
{
    return spim_classify(w->scan, &store_counts, w->reader, &w->conf->cfg.bp, &w->conf->cfg.th,
                         text, len, meta, v);
}

int spim_engine_explain(struct spim_engine_worker *w, const struct spim_verdict *v,
                        struct spim_evidence *ev)
{
    return spim_scan_explain(w->scan, NULL, &w->conf->cfg.bp, &w->conf->cfg.th, v, ev);
}

int spim_engine_classify_ex(struct spim_engine_worker *w, const char *text, size_t len,
                            const struct spim_tok_meta *meta, struct spim_verdict *v,
                            struct spim_evidence *ev)
{
    return spim_classify_ex(w->scan, &store_counts, w->reader, &w->conf->cfg.bp, &w->conf->cfg.th,
                            text, len, meta, v, ev);
}
