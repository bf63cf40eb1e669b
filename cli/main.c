/* main.c: the spimfilter binary: one program, several subcommands. */
#include "cli.h"

#include <stdio.h>
#include <string.h>

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

int main(int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*fn)(int, char **);
    } cmds[] = {
        {"serve", spim_cmd_serve},
        {"train", spim_cmd_train},
        {"classify", spim_cmd_classify},
        {"eval", spim_cmd_eval},
        {"quarantine", spim_cmd_quarantine},
        {"av-check", spim_cmd_avcheck},
        {"db", spim_cmd_db},
        {"stats", spim_cmd_stats},
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
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
        if (strcmp(argv[1], cmds[i].name) == 0)
            return cmds[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "spimfilter: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
