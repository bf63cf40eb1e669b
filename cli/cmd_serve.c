/*
 * cmd_serve.c: `spimfilter serve`: the inline filter. Loads the config
 * (file, then flags), opens the store and rules, and runs the filter with a
 * judge that classifies each MESSAGE and quarantines what it blocks.
 */
#include "cli.h"
#include "filter.h"

#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: spimfilter serve [--config FILE] [options]\n"
               "\n"
               "  --config FILE        an INI file of the keys below (flags override it)\n"
               "  --listen HOST:PORT   where to receive SIP over UDP (listen)\n"
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
               "  --check-config       load everything, report, and exit\n");
}

static struct spim_filter *running;

static void on_signal(int sig)
{
    (void)sig;
    if (running != NULL)
        spim_filter_stop(running);
}

static void *worker_new(void *ud)
{
    struct spim_engine_worker *w = NULL;

    if (spim_engine_worker_new(ud, &w) != 0)
        return NULL;
    return w;
}

static void worker_free(void *wud)
{
    spim_engine_worker_free(wud);
}

static int judge(void *wud, const struct spim_filter_msg *m, struct spim_filter_result *r)
{
    struct spim_engine_worker *w = wud;
    struct spim_verdict v;
    struct spim_quar_entry q;
    char reasons[256];
    uint64_t id;
    int rc, existed = 0;

    rc = spim_engine_classify(w, m->text.p, m->text.len, NULL, &v);
    if (rc != 0) {
        spim_log(SPIM_LOG_ERR, "classify failed: %s", spim_strerror(rc));
        return rc;
    }
    if (v.action == SPIM_BLOCK && w->e->cfg.mode_tag)
        v.action = SPIM_TAG;
    r->action = (int)v.action;
    r->score = v.score;
    r->spam_probability = v.spam_probability;
    spim_verdict_rules(&v, r->rules, sizeof(r->rules));
    if (v.action != SPIM_BLOCK)
        return 0;

    snprintf(reasons, sizeof(reasons), "score %.2f >= block_score %.2f (bayes p=%.4f, rules %.2f)",
             v.score, w->e->cfg.th.block_score, v.spam_probability, v.hits.score);
    memset(&q, 0, sizeof(q));
    q.time_us = spim_now_us();
    q.status = SPIM_QUAR_HELD;
    q.score = v.score;
    q.spam_probability = v.spam_probability;
    q.dedup_key = m->txn_key;
    q.from = m->from;
    q.to = m->to;
    q.call_id = m->call_id;
    q.source = (struct spim_slice){m->source, strlen(m->source)};
    q.rules = (struct spim_slice){r->rules, strlen(r->rules)};
    q.reasons = (struct spim_slice){reasons, strlen(reasons)};
    q.text = m->text;
    q.raw = m->raw;
    rc = spim_quar_put(w->e->store, &q, &id, &existed);
    if (rc != 0) {
        spim_log(SPIM_LOG_ERR, "quarantine write failed, answering 503: %s", spim_strerror(rc));
        return rc;
    }
    spim_log(SPIM_LOG_DEBUG, "quarantine id %llu%s", (unsigned long long)id,
             existed ? " (retransmission)" : "");
    return 0;
}

static const struct spim_filter_ops ops = {
    .worker_new = worker_new,
    .worker_free = worker_free,
    .judge = judge,
};

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
        {"check-config", no_argument, NULL, 'C'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    static const char *keys[128] = {
        ['l'] = "listen",  ['n'] = "next_hop",     ['a'] = "advertise", ['d'] = "db",
        ['r'] = "rules",   ['m'] = "mode",         ['T'] = "tag_score", ['B'] = "block_score",
        ['w'] = "workers", ['R'] = "block_reason", ['L'] = "log_level",
    };
    struct spim_config cfg;
    struct spim_engine e;
    struct spim_filter_config fc;
    struct spim_filter *f = NULL;
    const char *config = NULL;
    char err[512];
    int c, check = 0, rc;
    int nflags = 0, flagc[32];
    const char *flagv[32];
    struct sigaction sa;

    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 'c')
            config = optarg;
        else if (c == 'C')
            check = 1;
        else if (c == 'h') {
            usage(stdout);
            return 0;
        } else if (c > 0 && c < 128 && keys[c] != NULL && nflags < 32) {
            flagc[nflags] = c;
            flagv[nflags++] = optarg;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "spimfilter serve: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    spim_config_defaults(&cfg);
    if (config != NULL && spim_config_load(config, &cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "spimfilter serve: %s\n", err);
        return 1;
    }
    for (int i = 0; i < nflags; i++)
        if (spim_config_set(&cfg, keys[flagc[i]], flagv[i], err, sizeof(err)) != 0) {
            fprintf(stderr, "spimfilter serve: --%s\n", err);
            return 1;
        }
    spim_log_set_level(cfg.log_level);

    memset(&fc, 0, sizeof(fc));
    if (spim_hostport(cfg.listen, fc.listen_host, sizeof(fc.listen_host), &fc.listen_port) ||
        spim_hostport(cfg.next_hop, fc.next_host, sizeof(fc.next_host), &fc.next_port)) {
        fprintf(stderr, "spimfilter serve: listen and next_hop must be HOST:PORT\n");
        return 1;
    }
    if (cfg.advertise[0] != '\0')
        spim_hostport(cfg.advertise, fc.self.host, sizeof(fc.self.host), &fc.self.port);
    fc.workers = cfg.workers;
    snprintf(fc.block_reason, sizeof(fc.block_reason), "%s", cfg.block_reason);

    if (spim_engine_open(&e, &cfg, 1, err, sizeof(err)) != 0) {
        fprintf(stderr, "spimfilter serve: %s\n", err);
        return 1;
    }
    if (check) {
        struct spim_totals tot;

        spim_store_totals(e.store, &tot);
        printf("config OK: listen %s, next hop %s, store %s (%llu spam, %llu ham trained), "
               "%u rules, mode %s, tag at %.2f, block at %.2f\n",
               cfg.listen, cfg.next_hop, cfg.db, (unsigned long long)tot.spam_msgs,
               (unsigned long long)tot.ham_msgs, e.rules ? spim_rules_count(e.rules) : 0,
               cfg.mode_tag ? "tag" : "block", cfg.th.tag_score, cfg.th.block_score);
        spim_engine_close(&e);
        return 0;
    }
    rc = spim_filter_new(&fc, &ops, &e, &f, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "spimfilter serve: %s: %s\n", cfg.listen, err);
        spim_engine_close(&e);
        return 1;
    }
    running = f;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    rc = spim_filter_run(f);
    running = NULL;
    spim_log(SPIM_LOG_INFO, "stopped");
    spim_filter_free(f);
    spim_engine_close(&e);
    return rc == 0 ? 0 : 1;
}
