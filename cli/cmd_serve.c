/*
 * cmd_serve.c: `spimfilter serve`: the inline filter. Loads the config
 * (defaults, the file, then flags), opens the store and rules, starts the
 * filter's workers with the judge of judge.c, and turns signals into
 * reloads (SIGHUP) and a clean stop (SIGTERM, SIGINT).
 */
#include "cli.h"
#include "store.h"
#include "filter.h"

#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: spimfilter serve [--config FILE] [options]\n"
               "\n"
               "  --config FILE        an INI file of the keys below (flags override it)\n"
               "  --listen HOST:PORT   where to receive SIP, over UDP and TCP (listen)\n"
               "  --next-hop HOST:PORT where to forward what is delivered (next_hop)\n"
               "  --advertise HOST:PORT our Via sent-by, if not the listen address (advertise)\n"
               "  --db DIR             the store (db)\n"
               "  --rules FILE         the rules file (rules)\n"
               "  --mode block|tag     tag instead of blocking (mode)\n"
               "  --tag-score N        score from which a message is tagged (tag_score)\n"
               "  --block-score N      score from which a message is blocked (block_score)\n"
               "  --workers N          worker threads, 0 for one per core (workers)\n"
               "  --block-reason TEXT  reason phrase of the 403 (block_reason)\n"
               "  --log-level L        error, warning, info or debug (log_level)\n"
               "  --metrics-listen HOST:PORT  Prometheus endpoint, \"\" for none (metrics_listen)\n"
               "  --check-config       load everything, report, and exit\n"
               "\n"
               "SIGHUP reloads the config file (all but listen, advertise, next_hop, db,\n"
               "workers, metrics_listen, rate_entries, contacts and contacts_memory), the\n"
               "rules and lists, and swaps in a snapshot dropped as DIR/snapshot.mdb\n"
               "(docs/scaling.md); SIGTERM stops.\n");
}

static const struct spim_filter_ops ops = {
    .worker_new = spim_judge_worker_new,
    .worker_free = spim_judge_worker_free,
    .judge = spim_judge,
    .flush = spim_judge_flush,
    .flush_take = spim_judge_flush_take,
    .flush_commit = spim_judge_flush_commit,
    .report = spim_judge_report,
    .delivered = spim_judge_delivered,
};

/*
 * Retention: a thread that removes quarantine records older than
 * quarantine_days (read from the current conf, so SIGHUP changes it) at an
 * interval of a tenth of the retention, between 1 s and an hour. Each purge
 * is bounded steps of spim_quar_purge, so the workers' writes go on.
 */
struct purger {
    struct spim_engine *e;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
    pthread_t tid;
};

static void purge_once(struct spim_engine *e, double days)
{
    char detail[96];
    uint64_t n = 0;
    int64_t before = spim_now_us() - (int64_t)(days * 86400e6);
    int rc = spim_quar_purge(e->store, before, 0, 0, &n);

    if (rc != 0) {
        spim_log(SPIM_LOG_ERR, "quarantine purge failed: %s", spim_strerror(rc));
        return;
    }
    if (n == 0)
        return;
    spim_log(SPIM_LOG_INFO, "quarantine purge: removed %llu records older than %g days",
             (unsigned long long)n, days);
    snprintf(detail, sizeof(detail), "%llu expired (quarantine_days %g)", (unsigned long long)n,
             days);
    struct spim_quar_audit a = {
        .action = {"purge", 5}, .user = {"serve", 5}, .detail = {detail, strlen(detail)}};
    spim_quar_audit_add(e->store, &a);
}

/* Contacts silent for contacts_days go, then the oldest past contacts_max (docs/policy.md). */
static void contacts_expire(struct spim_engine *e, unsigned days, uint64_t max)
{
    uint32_t today = (uint32_t)(spim_now_us() / 86400000000LL);
    uint64_t n = 0;
    int rc = spim_contacts_expire(e->store, today > days ? today - days : 0, max, 0, &n);

    if (rc != 0)
        spim_log(SPIM_LOG_ERR, "contacts expiry failed: %s", spim_strerror(rc));
    else if (n > 0)
        spim_log(SPIM_LOG_INFO, "contacts: forgot %llu pairs (contacts_days %u, contacts_max %llu)",
                 (unsigned long long)n, days, (unsigned long long)max);
}

static void *purge_main(void *arg)
{
    struct purger *p = arg;

    pthread_mutex_lock(&p->mu);
    while (!p->stop) {
        double days, secs;
        unsigned cdays;
        uint64_t cmax;
        struct timespec ts;

        pthread_mutex_unlock(&p->mu);
        pthread_mutex_lock(&p->e->lock);
        days = p->e->conf->cfg.quarantine_days;
        cdays = p->e->conf->cfg.contacts_days;
        cmax = p->e->conf->cfg.contacts_max;
        pthread_mutex_unlock(&p->e->lock);
        if (days > 0)
            purge_once(p->e, days);
        if (p->e->contacts != NULL)
            contacts_expire(p->e, cdays, cmax);
        secs = days > 0 ? days * 8640 : 3600;
        secs = secs < 1 ? 1 : secs > 3600 ? 3600 : secs;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += (time_t)secs;
        ts.tv_nsec += (long)((secs - (double)(time_t)secs) * 1e9);
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&p->mu);
        while (!p->stop && pthread_cond_timedwait(&p->cv, &p->mu, &ts) == 0)
            ;
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static int purger_start(struct purger *p, struct spim_engine *e)
{
    p->e = e;
    p->stop = 0;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    if (pthread_create(&p->tid, NULL, purge_main, p) != 0) {
        pthread_cond_destroy(&p->cv);
        pthread_mutex_destroy(&p->mu);
        return -1;
    }
    return 0;
}

static void purger_stop(struct purger *p)
{
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->tid, NULL);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
}

/* The flags given, kept to be applied again over the file at each reload. */
struct flags {
    const char *config;
    int n, c[32];
    const char *v[32];
};

/* clang-format off */
static const char *keys[128] = {
    ['l'] = "listen",  ['n'] = "next_hop",     ['a'] = "advertise", ['d'] = "db",
    ['r'] = "rules",   ['m'] = "mode",         ['T'] = "tag_score", ['B'] = "block_score",
    ['w'] = "workers", ['R'] = "block_reason", ['L'] = "log_level",
    ['M'] = "metrics_listen",
};
/* clang-format on */

static int load_config(const struct flags *fl, struct spim_config *cfg, char *err, size_t errcap)
{
    char e2[256];

    spim_config_defaults(cfg);
    if (fl->config != NULL && spim_config_load(fl->config, cfg, err, errcap) != 0)
        return SPIM_EPARSE;
    for (int i = 0; i < fl->n; i++)
        if (spim_config_set(cfg, keys[fl->c[i]], fl->v[i], e2, sizeof(e2)) != 0) {
            snprintf(err, errcap, "--%s", e2);
            return SPIM_EINVAL;
        }
    return 0;
}

static int filter_config(const struct spim_config *cfg, struct spim_filter_config *fc)
{
    memset(fc, 0, sizeof(*fc));
    if (spim_hostport(cfg->listen, fc->listen_host, sizeof(fc->listen_host), &fc->listen_port) ||
        spim_hostport(cfg->next_hop, fc->next_host, sizeof(fc->next_host), &fc->next_port))
        return SPIM_EINVAL;
    if (cfg->advertise[0] != '\0' &&
        spim_hostport(cfg->advertise, fc->self.host, sizeof(fc->self.host), &fc->self.port))
        return SPIM_EINVAL;
    fc->workers = cfg->workers;
    snprintf(fc->block_reason, sizeof(fc->block_reason), "%s", cfg->block_reason);
    {
        char bad[64];

        if (spim_cidr_list_parse(cfg->trusted_sources, fc->trusted, SPIM_FILTER_MAX_TRUSTED,
                                 &fc->ntrusted, bad, sizeof(bad)) != 0)
            return SPIM_EINVAL;
    }
    fc->on_error_deliver = cfg->on_error_deliver;
    fc->block_code = cfg->block_code;
    snprintf(fc->block_call_info, sizeof(fc->block_call_info), "%s", cfg->block_call_info);
    fc->max_message_size = cfg->max_message_size;
    fc->udp_max = cfg->udp_max;
    fc->tcp_idle_s = cfg->tcp_idle_timeout;
    return 0;
}

/*
 * SIGHUP: reload what can change without new sockets or a new store
 * (rules, thresholds, mode, lists, log level; the filter's trusted networks,
 * answers, sizes and timeouts). A config that fails to load is refused with
 * its error and the running one stays.
 */
static void reload(struct spim_engine *e, struct spim_filter *f, const struct flags *fl,
                   const struct spim_config *run)
{
    struct spim_config cfg;
    struct spim_filter_config fc;
    char err[512];

    if (load_config(fl, &cfg, err, sizeof(err)) != 0) {
        spim_log(SPIM_LOG_ERR, "reload refused, the running config stays: %s", err);
        return;
    }
    if (filter_config(&cfg, &fc) != 0) {
        spim_log(SPIM_LOG_ERR, "reload refused, the running config stays: bad listen, next_hop, "
                               "advertise or trusted_sources");
        return;
    }
    if (spim_engine_reload(e, &cfg, err, sizeof(err)) != 0) {
        spim_log(SPIM_LOG_ERR, "reload refused, the running config stays: %s", err);
        return;
    }
    if (spim_filter_reconfigure(f, &fc) != 0)
        spim_log(SPIM_LOG_ERR, "reload: out of memory: trusted_sources, block_code, block_reason, "
                               "block_call_info, on_error, max_message_size, udp_max and "
                               "tcp_idle_timeout stay as they were");
    if (strcmp(cfg.listen, run->listen) != 0 || strcmp(cfg.db, run->db) != 0 ||
        strcmp(cfg.next_hop, run->next_hop) != 0 || strcmp(cfg.advertise, run->advertise) != 0 ||
        cfg.workers != run->workers || strcmp(cfg.metrics_listen, run->metrics_listen) != 0 ||
        cfg.rate_entries != run->rate_entries || cfg.contacts != run->contacts ||
        cfg.contacts_memory != run->contacts_memory)
        spim_log(SPIM_LOG_WARN, "reload: listen, advertise, next_hop, db, workers, "
                                "metrics_listen, rate_entries, contacts and contacts_memory "
                                "change only on restart");
    spim_log_set_level(cfg.log_level);
    spim_log(SPIM_LOG_INFO, "reloaded: rules %s, mode %s, tag at %.2f, block at %.2f",
             cfg.rules[0] ? cfg.rules : "(none)", cfg.mode_tag ? "tag" : "block", cfg.th.tag_score,
             cfg.th.block_score);
}

/*
 * The metrics endpoint, when metrics_listen is set. Failing to bind it is
 * logged and serve goes on without it: the SIP path matters more, and a
 * second instance on the same host must not be kept from starting.
 */
static struct spim_metrics_http *metrics_start(const struct spim_config *cfg, struct spim_engine *e)
{
    struct spim_metrics_http *mh = NULL;
    char err[512];

    if (cfg->metrics_listen[0] == '\0')
        return NULL;
    if (spim_metrics_http_start(cfg->metrics_listen, e->store, &mh, err, sizeof(err)) != 0) {
        spim_log(SPIM_LOG_ERR, "%s; serving without metrics", err);
        return NULL;
    }
    spim_log(SPIM_LOG_INFO, "metrics on http://%s/metrics", cfg->metrics_listen);
    return mh;
}

int spim_cmd_serve(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"listen", required_argument, NULL, 'l'},
        {"next-hop", required_argument, NULL, 'n'},
        {"advertise", required_argument, NULL, 'a'},
        {"db", required_argument, NULL, 'd'},
        {"rules", required_argument, NULL, 'r'},
        {"mode", required_argument, NULL, 'm'},
        {"tag-score", required_argument, NULL, 'T'},
        {"block-score", required_argument, NULL, 'B'},
        {"workers", required_argument, NULL, 'w'},
        {"block-reason", required_argument, NULL, 'R'},
        {"log-level", required_argument, NULL, 'L'},
        {"metrics-listen", required_argument, NULL, 'M'},
        {"check-config", no_argument, NULL, 'C'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct spim_config cfg;
    struct spim_engine e;
    struct spim_filter_config fc;
    struct spim_filter *f = NULL;
    struct flags fl = {NULL, 0, {0}, {NULL}};
    char err[512];
    int c, check = 0, rc, sig;
    sigset_t sigs;

    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 'c')
            fl.config = optarg;
        else if (c == 'C')
            check = 1;
        else if (c == 'h') {
            usage(stdout);
            return 0;
        } else if (c > 0 && c < 128 && keys[c] != NULL && fl.n < 32) {
            fl.c[fl.n] = c;
            fl.v[fl.n++] = optarg;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "spimfilter serve: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (load_config(&fl, &cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "spimfilter serve: %s\n", err);
        return 1;
    }
    spim_log_set_level(cfg.log_level);
    if (filter_config(&cfg, &fc) != 0) {
        fprintf(stderr, "spimfilter serve: listen, next_hop and advertise must be HOST:PORT\n");
        return 1;
    }
    /* The SIP parser's library is loaded, not linked: a missing one is said now. */
    if (spim_sip_init(err, sizeof(err)) != 0) {
        fprintf(stderr, "spimfilter serve: %s\n", err);
        return 1;
    }
    /* --check-config reads: it never creates a store a typo in db named */
    if ((rc = spim_engine_open(&e, &cfg, check ? 0 : SPIM_ENGINE_WRITABLE, err, sizeof(err))) !=
        0) {
        if (check && rc == SPIM_ENOTFOUND)
            fprintf(stderr,
                    "spimfilter serve: %s: no store there; serve would create it empty, and "
                    "until a train or a snapshot only rules and lists would decide (train it "
                    "first: spimfilter train --db %s ...)\n",
                    cfg.db, cfg.db);
        else
            fprintf(stderr, "spimfilter serve: %s\n", err);
        return 1;
    }
    {
        struct spim_totals t0;

        if (spim_store_totals(e.store, &t0) == 0 && (t0.spam_msgs == 0 || t0.ham_msgs == 0))
            spim_log(SPIM_LOG_WARN,
                     "the store %s has %llu spam and %llu ham trained: without both, Bayes "
                     "says 0.5 to everything and only rules and lists decide (spimfilter train)",
                     cfg.db, (unsigned long long)t0.spam_msgs, (unsigned long long)t0.ham_msgs);
    }
    if (check) {
        struct spim_totals tot;

        spim_store_totals(e.store, &tot);
        printf("config OK: listen %s, next hop %s, store %s (%llu spam, %llu ham trained), "
               "%u rules, mode %s, tag at %.2f, block at %.2f\n",
               cfg.listen, cfg.next_hop, cfg.db, (unsigned long long)tot.spam_msgs,
               (unsigned long long)tot.ham_msgs,
               e.conf->rules ? spim_rules_count(e.conf->rules) : 0, cfg.mode_tag ? "tag" : "block",
               cfg.th.tag_score, cfg.th.block_score);
        {
            char model[PATH_MAX + 32];

            if (spim_model_file(cfg.db, model, sizeof(model)) == 1)
                printf("model: %s: serve will classify with its counts, not the store's\n", model);
        }
        spim_engine_close(&e);
        return 0;
    }
    /* A snapshot dropped beside the store, or the model of the last run (docs/scaling.md). */
    if (spim_engine_snapshot_load(&e, 1, err, sizeof(err)) < 0)
        spim_log(SPIM_LOG_ERR, "snapshot not loaded, classifying with %s itself: %s", cfg.db, err);
    rc = spim_filter_new(&fc, &ops, &e, &f, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "spimfilter serve: %s: %s\n", cfg.listen, err);
        spim_engine_close(&e);
        return 1;
    }
    /*
     * Signals go to this thread only (the workers inherit the mask and never
     * see them): SIGHUP reloads, SIGTERM and SIGINT stop taking requests and
     * let each worker finish the request it holds.
     */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGHUP);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    rc = spim_filter_start(f);
    if (rc == 0) {
        struct purger pg;
        int purging = purger_start(&pg, &e) == 0;
        struct spim_metrics_http *mh = metrics_start(&cfg, &e);

        if (!purging)
            spim_log(SPIM_LOG_ERR, "cannot start the quarantine purge thread");
        for (unsigned ticks = 1;; ticks++) {
            struct timespec tick = {0, 200000000};

            /*
             * Every 200 ms, the pages of the map this process touched leave its
             * RSS. Writing the quarantine touches pages all over it (its dedup
             * index is keyed by a hash), more of them as it grows: released
             * this often, RSS holds the model and a fifth of a second of them,
             * whatever the size of the quarantine. The model's pages come back
             * from the page cache at the next lookups, a few hundred faults.
             * Every second (5 ticks): the contacts the workers noted go to the
             * store (one write).
             */
            sig = sigtimedwait(&sigs, NULL, &tick);
            if (sig < 0) {
                if (ticks % 5 == 0)
                    spim_judge_contacts_sync(&e);
                spim_store_release_pages(e.store);
                continue;
            }
            if (sig == SIGHUP) {
                reload(&e, f, &fl, &cfg);
                if (spim_engine_snapshot_load(&e, 0, err, sizeof(err)) < 0)
                    spim_log(SPIM_LOG_ERR, "snapshot refused, the running model stays: %s", err);
                continue;
            }
            spim_log(SPIM_LOG_INFO, "%s: stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
            break;
        }
        if (purging)
            purger_stop(&pg);
        spim_metrics_http_stop(mh);
        spim_filter_stop(f);
        spim_filter_wait(f);
        spim_judge_contacts_sync(&e); /* what the last second noted */
    }
    spim_log(SPIM_LOG_INFO, "stopped");
    spim_filter_free(f);
    spim_engine_close(&e);
    return rc == 0 ? 0 : 1;
}
