/*
 * test_log.c: spim_log writes one line per call, and what a sender could
 * put in it (terminal escapes, C1 controls, newlines) comes out as '?'.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "spim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* What spim_log writes for the given argument of "from %s", read back from stderr. */
static char *logged(const char *arg)
{
    static char buf[4096];
    FILE *tmp = tmpfile();
    int saved = dup(2);
    size_t n;

    assert_non_null(tmp);
    assert_true(saved >= 0);
    fflush(stderr);
    assert_true(dup2(fileno(tmp), 2) == 2);
    spim_log(SPIM_LOG_ERR, "from %s", arg);
    fflush(stderr);
    assert_true(dup2(saved, 2) == 2);
    close(saved);
    rewind(tmp);
    n = fread(buf, 1, sizeof(buf) - 1, tmp);
    buf[n] = '\0';
    fclose(tmp);
    return buf;
}

static void test_log_escapes_cleaned(void **state)
{
    const char *line, *msg;

    (void)state;
    line = logged("\x1b[2J\x1b]0;owned\x07 <sip:a@b>\r\nfake line\t\xc2\x9b"
                  "31m \xc3\xa9");
    /* one line: the only newline is the last byte */
    assert_non_null(strchr(line, '\n'));
    assert_int_equal(strchr(line, '\n') - line, (long)strlen(line) - 1);
    msg = strstr(line, "spimfilter error: from ");
    assert_non_null(msg);
    assert_string_equal(msg + strlen("spimfilter error: from "),
                        "?[2J?]0;owned? <sip:a@b>??fake line\t??31m \xc3\xa9\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_log_escapes_cleaned),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
