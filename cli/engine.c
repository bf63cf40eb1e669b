/*
 * engine.c: joins the classifier to the store. The classifier asks for
 * token counts through struct spim_counts_ops; here that is a per-thread
 * LMDB reader, so every lookup sees the last committed training.
 */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

int spim_engine_open(struct spim_engine *e, const struct spim_config *cfg, int writable, char *err,
                     size_t errcap)
{
    struct spim_diag d;
    int rc;

    memset(e, 0, sizeof(*e));
    e->cfg = *cfg;
    rc = spim_store_open(cfg->db, writable ? SPIM_STORE_CREATE : SPIM_STORE_RDONLY, 0, &e->store);
    if (rc != 0) {
        snprintf(err, errcap, "%s: %s%s", cfg->db, spim_strerror(rc),
                 rc == SPIM_ENOTFOUND ? " (train it first: spimfilter train --db DIR ...)" : "");
        return rc;
    }
    if (cfg->rules[0] != '\0') {
        memset(&d, 0, sizeof(d));
        rc = spim_rules_load(cfg->rules, &e->rules, &d);
        if (rc != 0) {
            if (d.line)
                snprintf(err, errcap, "%s:%u: %s", d.file[0] ? d.file : cfg->rules, d.line, d.msg);
            else
                snprintf(err, errcap, "%s: %s", cfg->rules, d.msg[0] ? d.msg : spim_strerror(rc));
            spim_store_close(e->store);
            e->store = NULL;
            return rc;
        }
    }
    return 0;
}

void spim_engine_close(struct spim_engine *e)
{
    spim_rules_free(e->rules);
    spim_store_close(e->store);
    e->rules = NULL;
    e->store = NULL;
}

int spim_engine_worker_new(struct spim_engine *e, struct spim_engine_worker **out)
{
    struct spim_engine_worker *w = calloc(1, sizeof(*w));
    int rc;

    if (w == NULL)
        return SPIM_ENOMEM;
    w->e = e;
    if ((rc = spim_store_reader_new(e->store, &w->reader)) != 0 ||
        (rc = spim_scan_new(e->rules, &w->scan)) != 0) {
        spim_engine_worker_free(w);
        return rc;
    }
    *out = w;
    return 0;
}

void spim_engine_worker_free(struct spim_engine_worker *w)
{
    if (w == NULL)
        return;
    spim_scan_free(w->scan);
    spim_store_reader_free(w->reader);
    free(w);
}

static int lookup(void *ud, struct spim_token *toks, size_t n, struct spim_totals *totals)
{
    return spim_store_lookup(ud, toks, n, totals);
}

static const struct spim_counts_ops store_counts = {.lookup = lookup};

int spim_engine_classify(struct spim_engine_worker *w, const char *text, size_t len,
                         const struct spim_tok_meta *meta, struct spim_verdict *v)
{
    return spim_classify(w->scan, &store_counts, w->reader, &w->e->cfg.bp, &w->e->cfg.th, text, len,
                         meta, v);
}
