/*
 * judge.c: the serve verdict for one MESSAGE: classify it with the
 * worker's engine and, when it is to be blocked, quarantine it (committed)
 * before the filter answers. This is where policy checks join the verdict.
 */
#include "cli.h"
#include "filter.h"
#include "metrics.h"
#include "policy.h"

#include <stdatomic.h>
#include <stdlib.h>
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

/* Copies q and what its slices point to into one allocation, for the group commit. */
static int defer(struct spim_engine_worker *w, const struct spim_quar_entry *q)
{
    struct spim_quar_entry *d = &w->pend[w->npend];
    const struct spim_slice *src[] = {&q->from,  &q->to,      &q->call_id, &q->source,
                                      &q->rules, &q->reasons, &q->text,    &q->raw};
    struct spim_slice *dst[] = {&d->from,  &d->to,      &d->call_id, &d->source,
                                &d->rules, &d->reasons, &d->text,    &d->raw};
    size_t total = 0, off = 0;
    char *buf;

    for (size_t i = 0; i < sizeof(src) / sizeof(src[0]); i++)
        total += src[i]->len;
    buf = malloc(total ? total : 1);
    if (buf == NULL)
        return SPIM_ENOMEM;
    *d = *q;
    for (size_t i = 0; i < sizeof(src) / sizeof(src[0]); i++) {
        if (src[i]->len)
            memcpy(buf + off, src[i]->p, src[i]->len);
        *dst[i] = (struct spim_slice){buf + off, src[i]->len};
        off += src[i]->len;
    }
    w->pend_buf[w->npend++] = buf;
    return 0;
}

int spim_judge_flush(void *wud)
{
    struct spim_engine_worker *w = wud;
    const struct spim_quar_entry *es[32];
    uint64_t ids[32];
    int existed[32], over[32], rc;
    unsigned n = w->npend;

    if (n == 0)
        return 0;
    for (unsigned i = 0; i < n; i++)
        es[i] = &w->pend[i];
    rc = spim_quar_put_many(w->e->store, es, n, (uint64_t)w->conf->cfg.quarantine_max_mb << 20, ids,
                            existed, over);
    for (unsigned i = 0; i < n; i++) {
        if (rc == 0)
            spim_log(SPIM_LOG_DEBUG, "quarantine id %llu%s", (unsigned long long)ids[i],
                     existed[i] ? " (retransmission)"
                     : over[i]  ? " (full: not stored)"
                                : "");
        if (rc == 0 && over[i] && !atomic_exchange(&quar_over, 1))
            spim_log(SPIM_LOG_WARN,
                     "quarantine full: it uses quarantine_max_mb %u MB or more; blocked messages "
                     "are now refused and not stored (quarantine_full = block) until "
                     "`spimfilter quarantine purge` or expiry frees space",
                     w->conf->cfg.quarantine_max_mb);
        else if (rc == 0 && !over[i] && !existed[i] && atomic_exchange(&quar_over, 0))
            spim_log(SPIM_LOG_INFO, "quarantine below quarantine_max_mb %u MB again: storing",
                     w->conf->cfg.quarantine_max_mb);
        free(w->pend_buf[i]);
    }
    w->npend = 0;
    if (rc != 0) {
        spim_metrics_inc(SPIM_METRIC_STORE_ERRORS);
        spim_log(SPIM_LOG_ERR, "quarantine write of %u blocked messages failed, not answered: %s",
                 n, spim_strerror(rc));
    }
    return rc;
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

    if (v == NULL) /* a policy block (lists, files, antivirus): r->rules names the entry */
        snprintf(reasons, sizeof(reasons), "policy %.240s", r->rules);
    else
        snprintf(reasons, sizeof(reasons),
                 "score %.2f >= block_score %.2f (bayes p=%.4f, rules %.2f)", v->score,
                 w->conf->cfg.th.block_score, v->spam_probability, v->hits.score);
    memset(&q, 0, sizeof(q));
    q.time_us = spim_now_us();
    q.status = SPIM_QUAR_HELD;
    q.score = v ? v->score : r->score;
    q.spam_probability = v ? v->spam_probability : r->spam_probability;
    q.dedup_key = m->txn_key;
    q.from = m->from;
    q.to = m->to;
    q.call_id = m->call_id;
    q.source = (struct spim_slice){m->source, strlen(m->source)};
    q.rules = (struct spim_slice){r->rules, strlen(r->rules)};
    q.reasons = (struct spim_slice){reasons, strlen(reasons)};
    q.text = m->text;
    q.raw = m->raw;
    /*
     * The group commit: without a quota to honour per message (or when a full
     * quarantine means blocking anyway), the write waits for spim_judge_flush,
     * which the filter calls once per batch before answering.
     */
    if (cfg->quarantine_max_mb == 0 || !cfg->quarantine_full_tag) {
        if (w->npend == sizeof(w->pend) / sizeof(w->pend[0]) && (rc = spim_judge_flush(w)) != 0)
            return rc;
        if ((rc = defer(w, &q)) != 0)
            return rc;
        r->deferred = 1;
        return 0;
    }
    rc = spim_quar_put_quota(w->e->store, &q, (uint64_t)cfg->quarantine_max_mb << 20, &id, &existed,
                             &over);
    if (rc != 0) {
        spim_metrics_inc(SPIM_METRIC_STORE_ERRORS);
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

/* Appends name to the comma-separated list in buf (cut to fit). */
static void add_rule(char *buf, size_t cap, const char *name)
{
    size_t n = strlen(buf);

    if (n + 1 < cap)
        snprintf(buf + n, cap - n, "%s%s", n ? "," : "", name);
}

/* A block decided by policy: 403/488 for an INVITE, quarantined for a MESSAGE. */
static int policy_block(struct spim_engine_worker *w, const struct spim_filter_msg *m,
                        struct spim_filter_result *r, const char *entry)
{
    r->action = SPIM_BLOCK;
    r->score = 0;
    r->spam_probability = 0;
    snprintf(r->rules, sizeof(r->rules), "%s", entry);
    if (m->kind == SPIM_FMSG_INVITE) {
        r->code = w->conf->cfg.invite_block_code;
        spim_log(SPIM_LOG_INFO, "policy: INVITE call-id=%.*s from=%.*s src=%s answered %d: %s",
                 (int)m->call_id.len, m->call_id.p, (int)m->from_uri.len, m->from_uri.p, m->source,
                 r->code, entry);
        return 0;
    }
    spim_log(SPIM_LOG_INFO, "policy: MESSAGE call-id=%.*s from=%.*s src=%s blocked: %s",
             (int)m->call_id.len, m->call_id.p, (int)m->from_uri.len, m->from_uri.p, m->source,
             entry);
    return quarantine(w, m, NULL, r);
}

/*
 * The policy before the spam checks: lists, then the file policy and clamd
 * for every payload. Returns 1 when it decided (*r filled, quarantined if
 * blocked), 0 to go on with classification (note holds "av:error" when
 * clamd failed and on_error = deliver), or an error (clamd failed and
 * on_error = reject: the filter answers 503).
 */
static int policy_judge(struct spim_engine_worker *w, const struct spim_filter_msg *m,
                        struct spim_filter_result *r, char *note, size_t notecap)
{
    const struct spim_config *cfg = &w->conf->cfg;
    struct spim_policy_who who = {m->from_uri, m->user_agent, (const struct sockaddr *)m->src};
    char entry[384], found[256];
    unsigned n = m->files ? m->files->n : 0;
    enum spim_policy_list l;
    int rc;

    l = spim_policy_lookup(w->conf->policy, &who, entry, sizeof(entry));
    if (l == SPIM_POLICY_ALLOW) {
        r->action = SPIM_DELIVER;
        snprintf(r->rules, sizeof(r->rules), "%s", entry);
        spim_log(SPIM_LOG_DEBUG, "policy: %s call-id=%.*s delivered unchecked: %s",
                 m->kind == SPIM_FMSG_INVITE ? "INVITE" : "MESSAGE", (int)m->call_id.len,
                 m->call_id.p, entry);
        return 1;
    }
    if (l == SPIM_POLICY_BLOCK)
        return policy_block(w, m, r, entry) == 0 ? 1 : SPIM_ESTORE;
    for (unsigned i = 0; i < n && i < SPIM_SIP_MAX_FILES; i++) {
        const struct spim_sip_file *f = &m->files->f[i];

        if (spim_policy_file(w->conf->policy, f->content_type, f->name, f->size, entry,
                             sizeof(entry)))
            return policy_block(w, m, r, entry) == 0 ? 1 : SPIM_ESTORE;
    }
    if (cfg->clamd_socket[0] == '\0' || m->kind != SPIM_FMSG_MESSAGE)
        return 0;
    for (unsigned i = 0; i < n && i < SPIM_SIP_MAX_FILES; i++) {
        const struct spim_sip_file *f = &m->files->f[i];

        if (f->data.len == 0)
            continue;
        rc = spim_clamd_scan(cfg->clamd_socket, f->data.p, f->data.len, cfg->clamd_timeout_ms,
                             found, sizeof(found));
        if (rc == 1) {
            snprintf(entry, sizeof(entry), "av:%s", found);
            return policy_block(w, m, r, entry) == 0 ? 1 : SPIM_ESTORE;
        }
        if (rc < 0) {
            spim_log(SPIM_LOG_ERR, "clamd %s: %s%s%s; on_error = %s", cfg->clamd_socket,
                     spim_strerror(rc), found[0] ? ": " : "", found,
                     cfg->on_error_deliver ? "deliver (unscanned)" : "reject (503)");
            if (!cfg->on_error_deliver)
                return rc;
            add_rule(note, notecap, "av:error");
            return 0;
        }
    }
    return 0;
}

/*
 * Fan-out (distinct recipients of this sender) and bulk (distinct
 * recipients of this normalised text) in their windows: points past a limit.
 */
static double rate_points(struct spim_engine_worker *w, const struct spim_filter_msg *m, char *note,
                          size_t notecap)
{
    const struct spim_config *cfg = &w->conf->cfg;
    char from[256], to[256], name[64];
    size_t fn, tn, textn = 0;
    uint64_t now = spim_mono_ns() / 1000000000u + 1, rcpt;
    double points = 0;
    unsigned c;

    fn = spim_policy_uri_norm(m->from_uri, from, sizeof(from));
    tn = spim_policy_uri_norm(m->to, to, sizeof(to));
    rcpt = spim_hash64(to, tn, 0);
    if (cfg->fanout_limit > 0 && fn > 0 && w->e->fanout != NULL) {
        c = spim_rate_observe(w->e->fanout, spim_hash64(from, fn, 1), rcpt, cfg->fanout_window,
                              now);
        if (c > cfg->fanout_limit) {
            snprintf(name, sizeof(name), "fanout:%u>%u", c, cfg->fanout_limit);
            add_rule(note, notecap, name);
            points += cfg->fanout_score;
        }
    }
    if (cfg->bulk_limit > 0 && w->e->bulk != NULL) {
        uint64_t key = spim_policy_text_key(m->text.p, m->text.len, &textn);

        if (textn >= cfg->bulk_min_length) {
            c = spim_rate_observe(w->e->bulk, key, rcpt, cfg->bulk_window, now);
            if (c > cfg->bulk_limit) {
                snprintf(name, sizeof(name), "bulk:%u>%u", c, cfg->bulk_limit);
                add_rule(note, notecap, name);
                points += cfg->bulk_score;
            }
        }
    }
    return points;
}

/*
 * Policy first (allow: deliver unchecked; block: block and quarantine with
 * the entry as reason; files: file policy, then clamd), then the
 * classification, with fan-out and bulk adding to the score. mode = tag
 * turns score blocks into tags, not policy blocks.
 */
static int judge(void *wud, const struct spim_filter_msg *m, struct spim_filter_result *r)
{
    struct spim_engine_worker *w = wud;
    const struct spim_thresholds *th;
    struct spim_verdict v;
    char note[128] = "";
    double extra;
    int rc;

    spim_engine_worker_sync(w);
    rc = policy_judge(w, m, r, note, sizeof(note));
    if (rc != 0)
        return rc < 0 ? rc : 0;
    if (m->kind == SPIM_FMSG_INVITE) {
        r->action = SPIM_DELIVER; /* a file offer that passed the file policy */
        return 0;
    }
    rc = spim_engine_classify(w, m->text.p, m->text.len, NULL, &v);
    if (rc != 0) {
        spim_metrics_inc(SPIM_METRIC_STORE_ERRORS);
        spim_log(SPIM_LOG_ERR, "classify failed: %s", spim_strerror(rc));
        return rc;
    }
    extra = rate_points(w, m, note, sizeof(note));
    if (extra != 0) {
        th = &w->conf->cfg.th;
        v.score += extra;
        v.action = v.score >= th->block_score ? SPIM_BLOCK
                   : v.score >= th->tag_score ? SPIM_TAG
                                              : SPIM_DELIVER;
    }
    if (v.action == SPIM_BLOCK && w->conf->cfg.mode_tag)
        v.action = SPIM_TAG;
    r->action = (int)v.action;
    r->score = v.score;
    r->spam_probability = v.spam_probability;
    spim_verdict_rules(&v, r->rules, sizeof(r->rules));
    if (note[0] != '\0')
        add_rule(r->rules, sizeof(r->rules), note);
    if (v.action != SPIM_BLOCK)
        return 0;
    return quarantine(w, m, &v, r);
}

/*
 * The judge the filter calls: judge() timed and counted for the metrics
 * endpoint (common/metrics.h). The time is the whole verdict, policy,
 * classification and the quarantine write, which is what the message waits.
 */
int spim_judge(void *wud, const struct spim_filter_msg *m, struct spim_filter_result *r)
{
    uint64_t t0 = spim_mono_ns();
    int rc = judge(wud, m, r);

    spim_metrics_latency(spim_mono_ns() - t0);
    if (rc != 0) {
        spim_metrics_inc(SPIM_METRIC_JUDGE_ERRORS);
        return rc;
    }
    spim_metrics_verdict(m->kind, r->action);
    spim_metrics_rules(r->rules);
    return 0;
}

/*
 * The keys of a report: the message is its normalised text (the bulk key of
 * policy.h, so "WIN 100$" and "win 250$" are one message), the reporter the
 * recipient's normalised URI ("user@host"), hashed with a seed of its own.
 */
void spim_judge_report(void *wud, const struct spim_filter_report *rep)
{
    struct spim_engine_worker *w = wud;
    const struct spim_config *cfg;
    struct spim_policy_who who = {rep->from_uri, {NULL, 0}, NULL};
    char from[256], to[256], entry[384];
    size_t fn, tn, textn = 0;
    uint64_t key;
    uint32_t n = 0;
    int dup = 0, rc;

    spim_engine_worker_sync(w);
    cfg = &w->conf->cfg;
    if (!cfg->reports_record)
        return;
    fn = spim_policy_uri_norm(rep->from_uri, from, sizeof(from));
    tn = spim_policy_uri_norm(rep->to_uri, to, sizeof(to));
    key = spim_policy_text_key(rep->text.p, rep->text.len, &textn);
    if (tn == 0 || textn == 0 || (fn == tn && memcmp(from, to, fn) == 0)) {
        spim_log(SPIM_LOG_DEBUG,
                 "607 for call-id=%.*s from %s ignored: no recipient, no text or a self-report",
                 (int)rep->call_id.len, rep->call_id.p, rep->source);
        return;
    }
    /* The exclusion list: what it lets through is never reported into training. */
    if (spim_policy_lookup(w->conf->policy, &who, entry, sizeof(entry)) == SPIM_POLICY_ALLOW) {
        spim_log(SPIM_LOG_INFO, "607 report by %.*s ignored: sender %.*s is excluded (%s)", (int)tn,
                 to, (int)fn, from, entry);
        return;
    }
    rc = spim_report_add(w->e->store, key, spim_hash64(to, tn, 0x607), rep->from_uri, rep->text, 0,
                         cfg->report_max_entries, &n, &dup);
    if (rc != 0) {
        spim_log(SPIM_LOG_ERR, "607 report by %.*s not recorded: %s", (int)tn, to,
                 spim_strerror(rc));
        return;
    }
    spim_log(SPIM_LOG_INFO, "607 report: call-id=%.*s from=%.*s by=%.*s reporters=%u%s",
             (int)rep->call_id.len, rep->call_id.p, (int)fn, from, (int)tn, to, (unsigned)n,
             dup ? " (already reported by this recipient)" : "");
}
