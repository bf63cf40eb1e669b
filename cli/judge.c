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
#include <strings.h>

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

/*
 * Deferred quarantine writes taken from a worker (spim_judge_flush_take),
 * to be committed in the filter's commit thread: with the store and the
 * quota they were judged with, since the worker's config may change by then.
 */
struct judge_group {
    struct spim_store *store;
    unsigned quota_mb;
    unsigned n;
    struct spim_quar_entry pend[32];
    char *pend_buf[32];
};

_Static_assert(sizeof(((struct judge_group *)0)->pend) ==
                   sizeof(((struct spim_engine_worker *)0)->pend),
               "a group holds what a worker defers");

/* Commits n deferred entries in one transaction and frees their copies (bufs). */
static int put_group(struct spim_store *store, unsigned quota_mb,
                     const struct spim_quar_entry *pend, char **bufs, unsigned n)
{
    const struct spim_quar_entry *es[32] = {NULL}; /* all set below; gcc 12 cannot tell */
    uint64_t ids[32];
    int existed[32], over[32], rc;

    if (n == 0)
        return 0;
    if (n > sizeof(es) / sizeof(es[0])) { /* never: a worker defers at most 32 */
        for (unsigned i = 0; i < n; i++)
            free(bufs[i]);
        return SPIM_EINVAL;
    }
    for (unsigned i = 0; i < n; i++)
        es[i] = &pend[i];
    rc = spim_quar_put_many(store, es, n, (uint64_t)quota_mb << 20, ids, existed, over);
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
                     quota_mb);
        else if (rc == 0 && !over[i] && !existed[i] && atomic_exchange(&quar_over, 0))
            spim_log(SPIM_LOG_INFO, "quarantine below quarantine_max_mb %u MB again: storing",
                     quota_mb);
        free(bufs[i]);
    }
    if (rc != 0) {
        spim_metrics_inc(SPIM_METRIC_STORE_ERRORS);
        spim_log(SPIM_LOG_ERR, "quarantine write of %u blocked messages failed, not answered: %s",
                 n, spim_strerror(rc));
    }
    return rc;
}

int spim_judge_flush(void *wud)
{
    struct spim_engine_worker *w = wud;
    unsigned n = w->npend;

    w->npend = 0;
    return put_group(w->e->store, w->conf->cfg.quarantine_max_mb, w->pend, w->pend_buf, n);
}

void *spim_judge_flush_take(void *wud)
{
    struct spim_engine_worker *w = wud;
    struct judge_group *g;

    if (w->npend == 0 || (g = malloc(sizeof(*g))) == NULL)
        return NULL;
    g->store = w->e->store;
    g->quota_mb = w->conf->cfg.quarantine_max_mb;
    g->n = w->npend;
    memcpy(g->pend, w->pend, g->n * sizeof(g->pend[0]));
    memcpy(g->pend_buf, w->pend_buf, g->n * sizeof(g->pend_buf[0]));
    w->npend = 0;
    return g;
}

int spim_judge_flush_commit(void *group)
{
    struct judge_group *g = group;
    int rc = put_group(g->store, g->quota_mb, g->pend, g->pend_buf, g->n);

    free(g);
    return rc;
}

/*
 * Writes the blocked message and its verdict (r: score, rules; why: the
 * evidence as text) to the quarantine. Over the quarantine_max_mb quota
 * nothing is stored and, with quarantine_full = tag, the message is tagged
 * and delivered instead of blocked (r->action).
 */
static int quarantine(struct spim_engine_worker *w, const struct spim_filter_msg *m,
                      struct spim_filter_result *r, const char *why)
{
    const struct spim_config *cfg = &w->conf->cfg;
    struct spim_quar_entry q;
    uint64_t id;
    int rc, existed = 0, over = 0;

    memset(&q, 0, sizeof(q));
    q.time_us = spim_now_us();
    q.status = SPIM_QUAR_HELD;
    q.score = r->score;
    q.spam_probability = r->spam_probability;
    q.dedup_key = m->txn_key;
    q.from = m->from;
    q.to = m->to;
    q.call_id = m->call_id;
    q.source = (struct spim_slice){m->source, strlen(m->source)};
    q.rules = (struct spim_slice){r->rules, strlen(r->rules)};
    q.reasons = (struct spim_slice){why, strlen(why)};
    q.text = m->text;
    q.raw = m->raw;
    /*
     * The group commit: without a quota to honour per message (or when a full
     * quarantine means blocking anyway), the write waits for spim_judge_flush,
     * which the filter calls once per batch before answering.
     */
    if ((cfg->quarantine_max_mb == 0 || !cfg->quarantine_full_tag) && r->code != 200) {
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
        if (cfg->quarantine_full_tag) {
            r->action = SPIM_TAG;
            r->code = 0;
        } else if (r->code == 200) {
            /* a silent drop must be kept: when it cannot be, the sender is told (403) */
            r->code = 0;
        }
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

/* --- who writes to whom ---------------------------------------------------------- */

/* Actions beyond the classifier's three: the config's and the policy file's words. */
enum { ACT_DELIVER = 0, ACT_TAG = 1, ACT_BLOCK = 2, ACT_DROP = 3 };

static const char *act_name(int a)
{
    return a == ACT_DROP ? "drop" : spim_action_name((enum spim_action)a);
}

/* How sure the proxy is of who the sender is (docs/policy.md, "Identity"). */
enum { ID_FAILED = -1, ID_NONE = 0, ID_ASSERTED = 1, ID_VERIFIED = 2 };

/* What the judge knows of a message's parties, worked out once per message. */
struct parties {
    char from[256], rcpt[256]; /* normalised "user@host" of sender and recipient */
    size_t fn, rn;
    uint64_t fk, tk;               /* contact keys of sender and recipient (0: not counted) */
    int self;                      /* sender and recipient are one party */
    int identity;                  /* ID_* */
    int outbound;                  /* the sender is one of local_domains */
    int have_view;                 /* the contacts were read */
    struct spim_contact_view view; /* sender's view of the recipient */
    enum { REL_NONE, REL_CONTACT, REL_FIRST, REL_ONEWAY, REL_UNVERIFIED } rel;
};

static uint64_t party_key(const char *norm, size_t n)
{
    return spim_hash64(norm, n, 0xc0c0);
}

static uint32_t today(void)
{
    return (uint32_t)(spim_now_us() / 86400000000LL);
}

/* Whether host (or a parent of it) is in the comma-separated list of domains. */
static int domain_listed(const char *list, const char *host, size_t hn)
{
    const char *p = list;

    while (*p != '\0') {
        const char *e;
        size_t n;

        while (*p == ',' || *p == ' ' || *p == '\t')
            p++;
        e = p;
        while (*e != '\0' && *e != ',' && *e != ' ' && *e != '\t')
            e++;
        n = (size_t)(e - p);
        if (n > 0 && n <= hn && strncasecmp(host + hn - n, p, n) == 0 &&
            (n == hn || host[hn - n - 1] == '.'))
            return 1;
        p = e;
    }
    return 0;
}

/* The host part of a normalised "user@host" (all of it without an '@'). */
static const char *host_of(const char *a, size_t n, size_t *hn)
{
    const char *at = memchr(a, '@', n);

    if (at == NULL) {
        *hn = n;
        return a;
    }
    *hn = n - (size_t)(at + 1 - a);
    return at + 1;
}

/*
 * The sender's view of the pair from the contacts table, read from the
 * store (and cached) on a miss. A pair silent for contacts_days is a
 * stranger again.
 */
static int contact_view(struct spim_engine_worker *w, uint64_t a, uint64_t b,
                        struct spim_contact_view *v)
{
    struct spim_engine *e = w->e;
    struct spim_contact c;
    int rc;

    if (spim_contacts_table_get(e->contacts, a, b, v))
        return 0;
    rc = spim_contacts_get(e->store, a, b, &c);
    if (rc != 0 && rc != SPIM_ENOTFOUND)
        return rc;
    spim_contacts_table_fill(e->contacts, &c);
    /* a != b: writing to oneself is never looked up (parties_of, spim_judge_delivered) */
    if (c.lo == a) {
        *v = (struct spim_contact_view){c.lo_hi_n, c.hi_lo_n, c.lo_hi_day, c.hi_lo_day};
    } else {
        *v = (struct spim_contact_view){c.hi_lo_n, c.lo_hi_n, c.hi_lo_day, c.lo_hi_day};
    }
    return 0;
}

static int identity_of(const struct spim_config *cfg, const struct spim_filter_msg *m)
{
    if (m->verstat == SPIM_VERSTAT_FAILED)
        return ID_FAILED;
    if (m->verstat == SPIM_VERSTAT_PASSED || (cfg->identity_verified_header && m->identity.len))
        return ID_VERIFIED;
    if (m->pai_uri.len > 0)
        return ID_ASSERTED;
    return ID_NONE;
}

/* Fills *p with the parties and the identity strength (relation_of adds the relationship). */
static void parties_of(struct spim_engine_worker *w, const struct spim_filter_msg *m,
                       struct parties *p)
{
    const struct spim_config *cfg = &w->conf->cfg;
    struct spim_slice ruri = m->ruri;
    const char *h;
    size_t hn;

    memset(p, 0, sizeof(*p));
    /*
     * The sender is the identity the proxy vouches for (P-Asserted-Identity,
     * RFC 3325) when it gives one, else From. The recipient, for the policy
     * file, the contacts, fan-out and bulk alike, is where the request goes:
     * the Request-URI's user@host, else To (a Request-URI without a user).
     */
    p->fn =
        spim_policy_uri_norm(m->pai_uri.len ? m->pai_uri : m->from_uri, p->from, sizeof(p->from));
    p->rn = ruri.len && memchr(ruri.p, '@', ruri.len) != NULL
                ? spim_policy_uri_norm(ruri, p->rcpt, sizeof(p->rcpt))
                : 0;
    if (p->rn == 0)
        p->rn = spim_policy_uri_norm(m->to, p->rcpt, sizeof(p->rcpt));
    p->identity = identity_of(cfg, m);
    if (cfg->local_domains[0] != '\0' && p->fn > 0) {
        h = host_of(p->from, p->fn, &hn);
        p->outbound = domain_listed(cfg->local_domains, h, hn);
    }
    /* contacts off: nobody is known (contacts_only takes everyone as a stranger) */
    p->rel = REL_NONE;
}

/*
 * The relationship of p's parties, from the contacts table (and the store on
 * a miss): only for a message the lists and the file policy let through to
 * the classifier, so that a listed or refused one costs no contacts lookup.
 */
static int relation_of(struct spim_engine_worker *w, struct parties *p)
{
    const struct spim_config *cfg = &w->conf->cfg;
    uint32_t day = today(), last;

    if (!cfg->contacts || w->e->contacts == NULL)
        return 0;
    if (p->fn == 0 || p->rn == 0) {
        p->rel = REL_UNVERIFIED; /* no sender or recipient to know: a stranger */
        return 0;
    }
    p->fk = party_key(p->from, p->fn);
    p->tk = party_key(p->rcpt, p->rn);
    if (p->fk == p->tk) {
        /* writing to oneself is no conversation: a forged From equal to the recipient must
         * not pass as one, so it is a stranger and never counted */
        p->self = 1;
        p->fk = p->tk = 0;
        p->rel = REL_FIRST;
        return 0;
    }
    if (contact_view(w, p->fk, p->tk, &p->view) != 0)
        return SPIM_ESTORE;
    p->have_view = 1;
    last = p->view.sent_day > p->view.received_day ? p->view.sent_day : p->view.received_day;
    if (last != 0 && last + cfg->contacts_days < day)
        memset(&p->view, 0, sizeof(p->view)); /* forgotten: silent too long */
    if (p->identity == ID_FAILED || p->identity < cfg->identity_min)
        p->rel = REL_UNVERIFIED;
    else if (p->view.received > 0)
        p->rel = REL_CONTACT; /* the recipient wrote to the sender: a conversation */
    else if (p->view.sent < cfg->stranger_messages)
        p->rel = REL_FIRST;
    else
        p->rel = REL_ONEWAY;
    return 0;
}

/* Whether the sender is a stranger to the recipient, for contacts_only: anyone not a contact. */
static int is_stranger(const struct parties *p)
{
    return p->rel != REL_CONTACT;
}

/* The relationship's and the identity's points, with their evidence. */
static double relation_points(struct spim_engine_worker *w, const struct spim_verdict *v,
                              const struct parties *p, struct spim_evidence *ev)
{
    const struct spim_config *cfg = &w->conf->cfg;
    double pts = 0, x;
    char name[96];

    switch (p->rel) {
    case REL_CONTACT:
        snprintf(name, sizeof(name), "established: %u sent, %u received", p->view.sent,
                 p->view.received);
        spim_evidence_add(ev, "relationship", name, cfg->contact_score, 0, 0);
        pts += cfg->contact_score;
        break;
    case REL_FIRST:
    case REL_UNVERIFIED: {
        int link = v->has_link;

        x = link ? cfg->stranger_link_score : cfg->stranger_score;
        snprintf(name, sizeof(name), "stranger%s, %s%s",
                 p->rel == REL_UNVERIFIED ? " (identity not verified)" : "",
                 p->view.sent == 0 ? "first message" : "one of the first messages",
                 link ? " with a link or number" : "");
        spim_evidence_add(ev, "relationship", name, x, 0, 0);
        pts += x;
        break;
    }
    case REL_ONEWAY:
        snprintf(name, sizeof(name), "one-way: %u sent, none answered", p->view.sent);
        spim_evidence_add(ev, "relationship", name, 0, 0, 0);
        break;
    case REL_NONE:
        break;
    }
    x = p->identity == ID_VERIFIED   ? cfg->identity_verified_score
        : p->identity == ID_ASSERTED ? cfg->identity_asserted_score
        : p->identity == ID_FAILED   ? cfg->identity_failed_score
                                     : 0;
    spim_evidence_add(ev, "identity",
                      p->identity == ID_VERIFIED   ? "verified (verstat or Identity)"
                      : p->identity == ID_ASSERTED ? "asserted (P-Asserted-Identity)"
                      : p->identity == ID_FAILED   ? "verification failed (verstat)"
                                                   : "none",
                      x, 0, 0);
    return pts + x;
}

/* A 2xx to a forwarded MESSAGE: one delivered message in the pair's direction. */
void spim_judge_delivered(void *wud, const struct spim_filter_delivery *d)
{
    struct spim_engine_worker *w = wud;
    struct spim_contact_view v;

    spim_engine_worker_sync(w);
    if (!w->conf->cfg.contacts || w->e->contacts == NULL || d->sender_key == 0 ||
        d->recipient_key == 0 || d->sender_key == d->recipient_key)
        return;
    /* read (and cache) the store's record first, so the count adds to it */
    if (contact_view(w, d->sender_key, d->recipient_key, &v) != 0) {
        spim_log(SPIM_LOG_ERR, "contacts: cannot read a pair from the store");
        return;
    }
    spim_contacts_table_delivered(w->e->contacts, d->sender_key, d->recipient_key, today(),
                                  w->conf->cfg.contacts_days);
}

int spim_judge_contacts_sync(struct spim_engine *e)
{
    static struct spim_contact buf[4096]; /* serve's main thread only */
    size_t n;
    int total = 0, rc;
    uint64_t lost;
    static uint64_t lost_logged;

    if (e->contacts == NULL)
        return 0;
    /* Deliveries whose pair was not read from the store yet: read them now, so none waits. */
    n = spim_contacts_table_unfilled(e->contacts, buf, sizeof(buf) / sizeof(buf[0]));
    for (size_t i = 0; i < n; i++) {
        struct spim_contact c;

        rc = spim_contacts_get(e->store, buf[i].lo, buf[i].hi, &c);
        if (rc != 0 && rc != SPIM_ENOTFOUND) {
            spim_log(SPIM_LOG_ERR, "contacts: cannot read the store: %s", spim_strerror(rc));
            break;
        }
        spim_contacts_table_fill(e->contacts, &c);
    }
    for (unsigned round = 0; round < 64; round++) {
        n = spim_contacts_table_dirty(e->contacts, buf, sizeof(buf) / sizeof(buf[0]));
        if (n == 0)
            break;
        rc = spim_contacts_put_many(e->store, buf, n);
        if (rc != 0) {
            spim_contacts_table_redirty(e->contacts, buf, n);
            spim_log(SPIM_LOG_ERR, "contacts: %zu updates not written (kept for the next try): %s",
                     n, spim_strerror(rc));
            return rc;
        }
        total += (int)n;
    }
    lost = spim_contacts_table_dirty_evictions(e->contacts);
    if (lost > lost_logged) {
        spim_log(SPIM_LOG_WARN,
                 "contacts: %llu updates lost so far: the table was full of unwritten pairs "
                 "(raise contacts_memory)",
                 (unsigned long long)lost);
        lost_logged = lost;
    }
    return total;
}

/* --- policy ------------------------------------------------------------------------ */

/* A block decided by policy: 403/488 for an INVITE, quarantined (or dropped) for a MESSAGE. */
static int policy_block(struct spim_engine_worker *w, const struct spim_filter_msg *m,
                        struct spim_filter_result *r, const char *entry, int drop)
{
    char why[512];

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
    r->code = drop ? 200 : 0;
    spim_log(SPIM_LOG_INFO, "policy: MESSAGE call-id=%.*s from=%.*s src=%s %s: %s",
             (int)m->call_id.len, m->call_id.p, (int)m->from_uri.len, m->from_uri.p, m->source,
             drop ? "dropped" : "blocked", entry);
    snprintf(why, sizeof(why), "policy %.400s (whatever the score)", entry);
    return quarantine(w, m, r, why);
}

/*
 * The policy before the spam checks: lists, then the file policy and clamd
 * for every payload. Returns 1 when it decided (*r filled, quarantined if
 * blocked), 0 to go on with classification (note holds "av:error" when
 * clamd failed and on_error = deliver; shadow list entries are in ev), or
 * an error (clamd failed and on_error = reject: the filter answers 503).
 */
static int policy_judge(struct spim_engine_worker *w, const struct spim_filter_msg *m,
                        struct spim_filter_result *r, int drop, char *note, size_t notecap,
                        struct spim_evidence *ev, int *shadow_block)
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
        return policy_block(w, m, r, entry, drop) == 0 ? 1 : SPIM_ESTORE;
    /* Shadow entries: evaluated and logged, never deciding (docs/policy.md). */
    l = spim_policy_lookup_shadow(w->conf->policy, &who, entry, sizeof(entry));
    if (l != SPIM_POLICY_NONE) {
        spim_log(SPIM_LOG_INFO, "shadow: list entry %s would have %s call-id=%.*s from=%.*s", entry,
                 l == SPIM_POLICY_BLOCK ? "blocked" : "delivered unchecked", (int)m->call_id.len,
                 m->call_id.p, (int)m->from_uri.len, m->from_uri.p);
        spim_metrics_shadow(entry);
        spim_evidence_add(ev, "list", entry, 0, 1, 0);
        *shadow_block = l == SPIM_POLICY_BLOCK; /* counted once the verdict is known */
    }
    for (unsigned i = 0; i < n && i < SPIM_SIP_MAX_FILES; i++) {
        const struct spim_sip_file *f = &m->files->f[i];

        if (spim_policy_file(w->conf->policy, f->content_type, f->name, f->size, entry,
                             sizeof(entry)))
            return policy_block(w, m, r, entry, drop) == 0 ? 1 : SPIM_ESTORE;
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
            return policy_block(w, m, r, entry, drop) == 0 ? 1 : SPIM_ESTORE;
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
 * Fan-out (distinct recipients of this sender, counting only recipients new
 * to it when contacts are kept) and bulk (distinct recipients of this
 * normalised text) in their windows: points past a limit, with evidence.
 */
static double rate_points(struct spim_engine_worker *w, const struct spim_filter_msg *m,
                          const struct parties *p, char *note, size_t notecap,
                          struct spim_evidence *ev)
{
    const struct spim_config *cfg = &w->conf->cfg;
    char name[64];
    size_t textn = 0;
    uint64_t now = spim_mono_ns() / 1000000000u + 1, rcpt;
    double points = 0;
    unsigned c;
    int new_rcpt = !p->have_view || (p->view.sent == 0 && p->view.received == 0);

    rcpt = spim_hash64(p->rcpt, p->rn, 0);
    if (cfg->fanout_limit > 0 && p->fn > 0 && w->e->fanout != NULL && new_rcpt) {
        c = spim_rate_observe(w->e->fanout, spim_hash64(p->from, p->fn, 1), rcpt,
                              cfg->fanout_window, now);
        if (c > cfg->fanout_limit) {
            snprintf(name, sizeof(name), "fanout:%u>%u", c, cfg->fanout_limit);
            add_rule(note, notecap, name);
            spim_evidence_add(ev, "rate", name, cfg->fanout_score, 0, 0);
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
                spim_evidence_add(ev, "rate", name, cfg->bulk_score, 0, 0);
                points += cfg->bulk_score;
            }
        }
    }
    return points;
}

/* What the thresholds and actions of cfg, overridden by pol, make of a score. */
static int decide(const struct spim_config *cfg, const struct spim_rcpt_policy *pol,
                  const struct parties *p, double score, const char **why)
{
    double tag = cfg->th.tag_score, block = cfg->th.block_score;
    int spam_act = cfg->action, a, co = SPIM_RCPT_UNSET;

    if (pol != NULL) {
        if (pol->has_tag_score)
            tag = pol->tag_score;
        if (pol->has_block_score)
            block = pol->block_score;
        if (pol->action != SPIM_RCPT_UNSET)
            spam_act = pol->action;
        co = pol->contacts_only;
    }
    *why = NULL;
    a = score >= block ? spam_act : score >= tag ? ACT_TAG : ACT_DELIVER;
    if (score >= tag && score < block && spam_act == ACT_DELIVER)
        a = ACT_DELIVER; /* "deliver": nothing is done to this recipient's mail */
    if (co != SPIM_RCPT_UNSET && co != SPIM_RCPT_OFF && is_stranger(p)) {
        int rank_a = a == ACT_DROP ? ACT_BLOCK : a, rank_c = co == SPIM_RCPT_DROP ? ACT_BLOCK : co;

        if (rank_c > rank_a) {
            a = co;
            *why = "contacts_only";
        }
    }
    return a;
}

/*
 * Policy first (allow: deliver unchecked; block: block and quarantine with
 * the entry as reason; files: file policy, then clamd), then the
 * classification, with the relationship, the identity, fan-out and bulk
 * adding to the score, then the recipient's policy. Shadow inputs are
 * evaluated and logged but never change the verdict.
 */
static int judge(void *wud, const struct spim_filter_msg *m, struct spim_filter_result *r)
{
    struct spim_engine_worker *w = wud;
    const struct spim_config *cfg;
    const struct spim_rcpt_policy *pol = NULL, *enforced;
    struct spim_evidence ev;
    struct parties p;
    struct spim_verdict v;
    char note[128] = "", why[4096], names[256];
    const char *co_why, *shadow_co;
    double extra, score, shadow_score;
    int rc, act, shadow_act, drop, shadow_list_block = 0;

    spim_engine_worker_sync(w);
    cfg = &w->conf->cfg;
    memset(&ev, 0, sizeof(ev));
    parties_of(w, m, &p);
    if (w->conf->rcpts != NULL && p.rn > 0)
        pol = spim_rcpts_lookup(w->conf->rcpts, p.rcpt, p.rn);
    enforced = pol != NULL && !pol->shadow ? pol : NULL;
    if (pol != NULL) {
        char name[96];

        snprintf(name, sizeof(name), "recipient policy [%.60s] (line %u)", pol->name, pol->line);
        spim_evidence_add(&ev, "policy", name, 0, pol->shadow, 0);
    }
    drop = enforced != NULL && enforced->action != SPIM_RCPT_UNSET
               ? enforced->action == SPIM_RCPT_DROP
               : cfg->action == ACT_DROP;
    rc = policy_judge(w, m, r, drop, note, sizeof(note), &ev, &shadow_list_block);
    if (rc != 0)
        return rc < 0 ? rc : 0;
    if (m->kind == SPIM_FMSG_INVITE) {
        r->action = SPIM_DELIVER; /* a file offer that passed the file policy */
        return 0;
    }
    if ((rc = relation_of(w, &p)) != 0) {
        spim_metrics_inc(SPIM_METRIC_STORE_ERRORS);
        spim_log(SPIM_LOG_ERR, "contacts could not be read: %s", spim_strerror(rc));
        return rc;
    }
    rc = spim_engine_classify(w, m->text.p, m->text.len, NULL, &v);
    if (rc != 0) {
        spim_metrics_inc(SPIM_METRIC_STORE_ERRORS);
        spim_log(SPIM_LOG_ERR, "classify failed: %s", spim_strerror(rc));
        return rc;
    }
    extra = relation_points(w, &v, &p, &ev) + rate_points(w, m, &p, note, sizeof(note), &ev);
    score = v.score + extra;
    act = decide(cfg, enforced, &p, score, &co_why);
    r->score = score;
    r->spam_probability = v.spam_probability;
    spim_verdict_rules(&v, r->rules, sizeof(r->rules));
    if (note[0] != '\0')
        add_rule(r->rules, sizeof(r->rules), note);
    if (co_why != NULL)
        add_rule(r->rules, sizeof(r->rules), "contacts_only");
    /* Shadow: what the shadow rules, a shadow Bayes or a shadow policy section would have done. */
    shadow_score = score + v.shadow_score;
    shadow_act = shadow_list_block ? ACT_BLOCK : decide(cfg, pol, &p, shadow_score, &shadow_co);
    if (v.hits.nshadow > 0) {
        names[0] = '\0';
        for (unsigned i = 0; i < v.hits.nshadow && i < SPIM_RULES_MAX_HITS; i++)
            add_rule(names, sizeof(names), v.hits.shadow_names[i]);
        spim_metrics_shadow(names);
    }
    if ((shadow_act == ACT_BLOCK || shadow_act == ACT_DROP) && act != ACT_BLOCK &&
        act != ACT_DROP) {
        spim_metrics_inc(SPIM_METRIC_SHADOW_WOULD_BLOCK);
        spim_log(SPIM_LOG_INFO,
                 "shadow: would have %s call-id=%.*s from=%.*s to=%.*s: score %.2f, with shadow "
                 "inputs %.2f%s%s",
                 act_name(shadow_act), (int)m->call_id.len, m->call_id.p, (int)p.fn, p.from,
                 (int)p.rn, p.rcpt, score, shadow_score,
                 pol != NULL && pol->shadow ? ", policy section " : "",
                 pol != NULL && pol->shadow ? pol->name : "");
    }
    if (p.outbound && note[0] != '\0' && (strstr(note, "fanout:") || strstr(note, "bulk:"))) {
        spim_log(SPIM_LOG_WARN,
                 "outbound: local account %.*s tripped %s (call-id=%.*s, to %.*s): check it "
                 "is not compromised",
                 (int)p.fn, p.from, note, (int)m->call_id.len, m->call_id.p, (int)p.rn, p.rcpt);
        spim_metrics_account(p.from);
    }
    r->action = act == ACT_DROP ? SPIM_BLOCK : act;
    r->code = act == ACT_DROP ? 200 : 0;
    if (r->action != SPIM_BLOCK) {
        /* its 2xx, when it comes back through us, counts for the pair (spim_judge_delivered) */
        r->sender_key = p.fk;
        r->recipient_key = p.tk;
        return 0;
    }
    /*
     * Blocked: the record keeps the whole evidence (quarantine show), taken
     * from what the scan still holds of this classification (the token
     * texts cost one tokenizer pass), which only blocked messages pay.
     */
    {
        struct spim_evidence full;
        int n;

        memset(&full, 0, sizeof(full));
        if (spim_engine_explain(w, &v, &full) != 0)
            full = ev;
        else
            for (unsigned i = 0; i < ev.n; i++)
                spim_evidence_add(&full, ev.item[i].kind, ev.item[i].name, ev.item[i].weight,
                                  ev.item[i].shadow, ev.item[i].shadow_weight);
        double blk = enforced != NULL && enforced->has_block_score ? enforced->block_score
                                                                   : cfg->th.block_score;

        n = snprintf(why, sizeof(why), "score %.2f %s block_score %.2f: %s%s (bayes p=%.4f)\n",
                     score, score >= blk ? ">=" : "<", blk, act_name(act),
                     co_why ? " (contacts_only: a stranger)" : "", v.spam_probability);
        if (n > 0 && (size_t)n < sizeof(why))
            spim_evidence_format(&full, why + n, sizeof(why) - (size_t)n);
    }
    return quarantine(w, m, r, why);
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
