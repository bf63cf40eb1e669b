/*
 * judge.c: the serve verdict for one MESSAGE: classify it with the
 * worker's engine and, when it is to be blocked, quarantine it (committed)
 * before the filter answers. This is where policy checks join the verdict.
 */
#include "cli.h"
#include "filter.h"

#include <stdatomic.h>
#include <string.h>

/* Set while the quarantine is over quarantine_max_mb: one log line per change. */
static atomic_int quar_over;

void *spim_judge_worker_new(void *ud)
{
    struct spim_engine_worker *w = NULL;

    if (spim_engine_worker_new(ud, &w) != 0)
        return NULL;
    return w;
}

void spim_judge_worker_free(void *wud)
{
    spim_engine_worker_free(wud);
}

/*
 * Writes the blocked message and its verdict to the quarantine. Over the
 * quarantine_max_mb quota nothing is stored and, with quarantine_full = tag,
 * the message is tagged and delivered instead of blocked (r->action).
 */
static int quarantine(struct spim_engine_worker *w, const struct spim_filter_msg *m,
                      const struct spim_verdict *v, struct spim_filter_result *r)
{
    const struct spim_config *cfg = &w->conf->cfg;
    struct spim_quar_entry q;
    char reasons[256];
    uint64_t id;
    int rc, existed = 0, over = 0;

    snprintf(reasons, sizeof(reasons), "score %.2f >= block_score %.2f (bayes p=%.4f, rules %.2f)",
             v->score, w->conf->cfg.th.block_score, v->spam_probability, v->hits.score);
    memset(&q, 0, sizeof(q));
    q.time_us = spim_now_us();
    q.status = SPIM_QUAR_HELD;
    q.score = v->score;
    q.spam_probability = v->spam_probability;
    q.dedup_key = m->txn_key;
    q.from = m->from;
    q.to = m->to;
    q.call_id = m->call_id;
    q.source = (struct spim_slice){m->source, strlen(m->source)};
    q.rules = (struct spim_slice){r->rules, strlen(r->rules)};
    q.reasons = (struct spim_slice){reasons, strlen(reasons)};
    q.text = m->text;
    q.raw = m->raw;
    rc = spim_quar_put_quota(w->e->store, &q, (uint64_t)cfg->quarantine_max_mb << 20, &id,
                             &existed, &over);
    if (rc != 0) {
        spim_log(SPIM_LOG_ERR, "quarantine write failed, answering 503: %s", spim_strerror(rc));
        return rc;
    }
    if (over) {
        if (!atomic_exchange(&quar_over, 1))
            spim_log(SPIM_LOG_WARN,
                     "quarantine full: it uses quarantine_max_mb %u MB or more; blocked messages "
                     "are now %s (quarantine_full = %s) until `spimfilter quarantine purge` or "
                     "expiry frees space",
                     cfg->quarantine_max_mb,
                     cfg->quarantine_full_tag ? "tagged and delivered" : "refused and not stored",
                     cfg->quarantine_full_tag ? "tag" : "block");
        spim_log(SPIM_LOG_DEBUG, "quarantine full: %s %.*s without storing",
                 cfg->quarantine_full_tag ? "tagging" : "blocking", (int)m->call_id.len,
                 m->call_id.p);
        if (cfg->quarantine_full_tag)
            r->action = SPIM_TAG;
        return 0;
    }
    if (atomic_exchange(&quar_over, 0))
        spim_log(SPIM_LOG_INFO, "quarantine below quarantine_max_mb %u MB again: storing",
                 cfg->quarantine_max_mb);
    spim_log(SPIM_LOG_DEBUG, "quarantine id %llu%s", (unsigned long long)id,
             existed ? " (retransmission)" : "");
    return 0;
}

int spim_judge(void *wud, const struct spim_filter_msg *m, struct spim_filter_result *r)
{
    struct spim_engine_worker *w = wud;
    struct spim_verdict v;
    int rc;

    spim_engine_worker_sync(w);
    rc = spim_engine_classify(w, m->text.p, m->text.len, NULL, &v);
    if (rc != 0) {
        spim_log(SPIM_LOG_ERR, "classify failed: %s", spim_strerror(rc));
        return rc;
    }
    if (v.action == SPIM_BLOCK && w->conf->cfg.mode_tag)
        v.action = SPIM_TAG;
    r->action = (int)v.action;
    r->score = v.score;
    r->spam_probability = v.spam_probability;
    spim_verdict_rules(&v, r->rules, sizeof(r->rules));
    if (v.action != SPIM_BLOCK)
        return 0;
    return quarantine(w, m, &v, r);
}
