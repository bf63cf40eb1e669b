/*
 * cmd_serve.c: `spimfilter serve`: the inline filter. Loads the config
 * (defaults, the file, then flags), opens the store and rules, starts the
 * filter's workers with the judge of judge.c, and turns signals into
 * reloads (SIGHUP) and a clean stop (SIGTERM, SIGINT).
 */
#include "cli.h"
#include "filter.h"

#include <getopt.h>
#include <pthread.h>
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
               "  --check-config       load everything, report, and exit\n"
               "\n"
               "SIGHUP reloads the config file, rules and thresholds; SIGTERM stops.\n");
}

static const struct spim_filter_ops ops = {
    .worker_new = spim_judge_worker_new,
    .worker_free = spim_judge_worker_free,
    .judge = spim_judge,
};

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

/*
 * SIGHUP: reload what can change without new sockets or a new store
 * (rules, thresholds, mode, log level). A config that fails to load is
 * refused with its error and the running one stays.
 */
static void reload(struct spim_engine *e, const struct flags *fl, const struct spim_config *run)
{
    struct spim_config cfg;
    char err[512];

    if (load_config(fl, &cfg, err, sizeof(err)) != 0 ||
        spim_engine_reload(e, &cfg, err, sizeof(err)) != 0) {
        spim_log(SPIM_LOG_ERR, "reload refused, the running config stays: %s", err);
        return;
    }
    if (strcmp(cfg.listen, run->listen) != 0 || strcmp(cfg.db, run->db) != 0 ||
        strcmp(cfg.next_hop, run->next_hop) != 0 || strcmp(cfg.advertise, run->advertise) != 0 ||
        cfg.workers != run->workers)
        spim_log(SPIM_LOG_WARN,
                 "reload: listen, advertise, next_hop, db and workers change only on restart");
    spim_log_set_level(cfg.log_level);
    spim_log(SPIM_LOG_INFO, "reloaded: rules %s, mode %s, tag at %.2f, block at %.2f",
             cfg.rules[0] ? cfg.rules : "(none)", cfg.mode_tag ? "tag" : "block", cfg.th.tag_score,
             cfg.th.block_score);
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
    return 0;
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
               (unsigned long long)tot.ham_msgs,
               e.conf->rules ? spim_rules_count(e.conf->rules) : 0, cfg.mode_tag ? "tag" : "block",
               cfg.th.tag_score, cfg.th.block_score);
        spim_engine_close(&e);
        return 0;
    }
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
        for (;;) {
            if (sigwait(&sigs, &sig) != 0)
                continue;
            if (sig == SIGHUP) {
                reload(&e, &fl, &cfg);
                continue;
            }
            spim_log(SPIM_LOG_INFO, "%s: stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
            break;
        }
        spim_filter_stop(f);
        spim_filter_wait(f);
    }
    spim_log(SPIM_LOG_INFO, "stopped");
    spim_filter_free(f);
    spim_engine_close(&e);
    return rc == 0 ? 0 : 1;
}
