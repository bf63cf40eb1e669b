/* cmd_eval.c: `spimfilter eval`: K-fold cross-validation (issue 3). */
#include "cli.h"

int spim_cmd_eval(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "spimfilter eval: not built yet\n");
    return 1;
}
