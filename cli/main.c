/* main.c: the spimfilter binary: one program, several subcommands. */
#include "cli.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: spimfilter <command> [options]\n"
               "\n"
               "commands:\n"
               "  serve        run the inline SIP filter\n"
               "  train        learn token counts from labelled messages\n"
               "  classify     print the verdict for messages\n"
               "  eval         measure accuracy with K-fold cross-validation\n"
               "  quarantine   list, show, delete blocked messages\n"
               "  db           store statistics, pruning and snapshots\n"
               "  av-check     check that the host's ClamAV leaves the filter's files alone\n"
               "  stats        print the metrics of a running serve\n"
               "  reports      list and learn from 607 Unwanted reports of recipients\n"
               "\n"
               "spimfilter <command> --help shows the options of a command.\n");
}

#ifdef SPIM_TWIN_NAME
/*
 * A static spimfilter (SPIM_STATIC_EXE in cli/CMakeLists.txt) has the batch
 * commands only: the network commands load libosip2 and libmicrohttpd and
 * use the system's user and host databases, which a static program cannot
 * do safely, so they run in the dynamic build, SPIM_TWIN_NAME, exec'd with
 * the same arguments (the same process: a service manager sees no change).
 * It is looked for beside this program (a build tree), then where an
 * install puts it relative to this program (SPIM_TWIN_RELDIR: an installed
 * tree, wherever its prefix was moved), then in SPIM_TWIN_DIR (the
 * configured prefix). Returns only on failure: 1, with the reason.
 */
static int run_twin(char **argv)
{
    char self[PATH_MAX], path[PATH_MAX + 64];
    const char *dirs[3] = {NULL, NULL, SPIM_TWIN_DIR};
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    int err = ENOENT;
    char *slash;

    /* SPIM_PROGRAM_ENV names the program the operator ran (av-check checks it
     * too); set already, this static program was exec'd as its own twin (a
     * copy or a link under the twin's name): say so instead of exec'ing on. */
    if (getenv(SPIM_PROGRAM_ENV) != NULL) {
        fprintf(stderr,
                "spimfilter: %s: %s is this static spimfilter again, not the dynamic build "
                "(rebuild or reinstall it)\n",
                argv[1], SPIM_TWIN_NAME);
        return 1;
    }
    if (n > 0) {
        self[n] = '\0';
        setenv(SPIM_PROGRAM_ENV, self, 1);
        if ((slash = strrchr(self, '/')) != NULL) {
            *slash = '\0';
            dirs[0] = self;
            dirs[1] = self;
        }
    }
    for (int i = 0; i < 3; i++) {
        if (dirs[i] == NULL)
            continue;
        if (i == 1)
            snprintf(path, sizeof(path), "%s/%s/%s", dirs[i], SPIM_TWIN_RELDIR, SPIM_TWIN_NAME);
        else
            snprintf(path, sizeof(path), "%s/%s", dirs[i], SPIM_TWIN_NAME);
        execv(path, argv);
        if (errno != ENOENT) {
            err = errno; /* there, but not runnable: that is the reason to give */
            break;
        }
    }
    if (err != ENOENT)
        fprintf(stderr, "spimfilter: %s runs in %s, which cannot be run: %s\n", argv[1], path,
                strerror(err));
    else
        fprintf(stderr,
                "spimfilter: %s runs in %s (the build of spimfilter that loads libosip2 and "
                "libmicrohttpd), not found beside this program, in %s/ from its directory or "
                "in %s/\n",
                argv[1], SPIM_TWIN_NAME, SPIM_TWIN_RELDIR, SPIM_TWIN_DIR);
    return 1;
}
#endif

/* The network commands: in a static spimfilter, run by its twin (run_twin). */
#ifdef SPIM_TWIN_NAME
#define NET_CMD(fn) NULL
#else
#define NET_CMD(fn) fn
#endif

int main(int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*fn)(int, char **); /* NULL: the twin's */
    } cmds[] = {
        {"serve", NET_CMD(spim_cmd_serve)},
        {"quarantine", NET_CMD(spim_cmd_quarantine)},
        {"av-check", NET_CMD(spim_cmd_avcheck)},
        {"stats", NET_CMD(spim_cmd_stats)},
        {"train", spim_cmd_train},
        {"classify", spim_cmd_classify},
        {"eval", spim_cmd_eval},
        {"db", spim_cmd_db},
        {"reports", spim_cmd_reports},
    };

    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
        printf("spimfilter %s\n", SPIM_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
        if (strcmp(argv[1], cmds[i].name) != 0)
            continue;
#ifdef SPIM_TWIN_NAME
        if (cmds[i].fn == NULL)
            return run_twin(argv);
#endif
        return cmds[i].fn(argc - 1, argv + 1);
    }
    fprintf(stderr, "spimfilter: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
