/*
 * test_files.c: the file-transfer policy (defaults, allow lists, size,
 * tricky names) and the normalised-text key of bulk counting.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "policy.h"

#include <string.h>

static struct spim_slice sl(const char *s)
{
    return (struct spim_slice){s, strlen(s)};
}

static int check(struct spim_policy *p, const char *type, const char *name, uint64_t size, char *e)
{
    return spim_policy_file(p, sl(type), sl(name), size, e, 64);
}

static void test_files_defaults(void **state)
{
    struct spim_policy *p;
    struct spim_policy_files_conf fc = {SPIM_POLICY_DEFAULT_BLOCK_EXT, NULL,
                                        SPIM_POLICY_DEFAULT_BLOCK_TYPES, NULL, 1000};
    char e[64];

    (void)state;
    assert_int_equal(spim_policy_new(&p), 0);
    assert_int_equal(spim_policy_set_files(p, &fc, NULL), 0);
    assert_int_equal(check(p, "application/octet-stream", "setup.EXE", 10, e), 1);
    assert_string_equal(e, "file:ext:exe");
    assert_int_equal(check(p, "application/octet-stream", "invoice.pdf.scr", 10, e), 1);
    assert_string_equal(e, "file:ext:scr");
    assert_int_equal(check(p, "application/octet-stream", "C:\\tmp\\run.bat. ", 10, e), 1);
    assert_string_equal(e, "file:ext:bat");
    assert_int_equal(check(p, "application/pdf", "report.pdf", 10, e), 0);
    assert_string_equal(e, "");
    assert_int_equal(check(p, "Application/X-MSDownload; name=x", "", 10, e), 1);
    assert_string_equal(e, "file:type:application/x-msdownload");
    assert_int_equal(check(p, "image/png", "cat.png", 1001, e), 1);
    assert_string_equal(e, "file:size:1001>1000");
    assert_int_equal(check(p, "image/png", "cat.png", 1000, e), 0);
    assert_int_equal(check(p, "image/png", "dir.exe/cat", 10, e), 0);
    spim_policy_free(p);
}

static void test_files_allow_lists(void **state)
{
    struct spim_policy *p;
    struct spim_policy_files_conf fc = {"exe", "pdf, .PNG", "", "image/*", 0};
    char e[64];

    (void)state;
    assert_int_equal(spim_policy_new(&p), 0);
    assert_int_equal(spim_policy_set_files(p, &fc, NULL), 0);
    assert_int_equal(check(p, "application/pdf", "a.pdf", 1 << 30, e), 0);
    assert_int_equal(check(p, "image/jpeg", "a.jpg", 10, e), 0);
    assert_int_equal(check(p, "application/zip", "a.zip", 10, e), 1);
    assert_string_equal(e, "file:not-allowed:zip");
    assert_int_equal(check(p, "", "", 10, e), 1);
    assert_string_equal(e, "file:not-allowed:-");
    /* Blocked wins over allowed. */
    assert_int_equal(check(p, "image/png", "a.exe", 10, e), 1);
    assert_string_equal(e, "file:ext:exe");
    spim_policy_free(p);
}

static void test_files_bad_config(void **state)
{
    struct spim_policy *p;
    struct spim_policy_files_conf fc = {"exe", NULL, "application", NULL, 0};
    struct spim_diag d;

    (void)state;
    memset(&d, 0, sizeof(d));
    assert_int_equal(spim_policy_new(&p), 0);
    assert_int_equal(spim_policy_set_files(p, &fc, &d), SPIM_EINVAL);
    assert_non_null(strstr(d.msg, "file_block_types"));
    fc.block_types = NULL;
    fc.block_ext = "a/b";
    assert_int_equal(spim_policy_set_files(p, &fc, &d), SPIM_EINVAL);
    spim_policy_free(p);
}

static void test_files_text_key(void **state)
{
    size_t n1, n2;

    (void)state;
    assert_true(spim_policy_text_key("Meeting at 10, room 4!", 22, &n1) ==
                spim_policy_text_key("  meeting AT 11 room 5 ", 23, &n2));
    assert_int_equal(n1, n2);
    assert_true(spim_policy_text_key("hello there", 11, NULL) !=
                spim_policy_text_key("hello where", 11, NULL));
    spim_policy_text_key("!!!", 3, &n1);
    assert_int_equal(n1, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_files_defaults),
        cmocka_unit_test(test_files_allow_lists),
        cmocka_unit_test(test_files_bad_config),
        cmocka_unit_test(test_files_text_key),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
