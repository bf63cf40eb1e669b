/*
 * test_recipients.c: the per-recipient policy file: exact beats domain
 * beats parent domain beats "*"; names without case; every key and value;
 * every kind of bad line stopping the load with file:line; a file of
 * 100,000 sections loading and answering lookups.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "policy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct fx {
    char dir[64];
    char path[128];
};

static int setup(void **state)
{
    struct fx *x = calloc(1, sizeof(*x));

    if (x == NULL)
        return -1;
    snprintf(x->dir, sizeof(x->dir), "/tmp/spim-rcpts.XXXXXX");
    if (mkdtemp(x->dir) == NULL) {
        free(x);
        return -1;
    }
    snprintf(x->path, sizeof(x->path), "%s/recipients.conf", x->dir);
    *state = x;
    return 0;
}

static int teardown(void **state)
{
    struct fx *x = *state;

    unlink(x->path);
    rmdir(x->dir);
    free(x);
    return 0;
}

static void write_bytes(const char *path, const char *text, size_t n)
{
    FILE *f = fopen(path, "wb");

    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, n, f), n);
    fclose(f);
}

static void write_file(const char *path, const char *text)
{
    write_bytes(path, text, strlen(text));
}

static const struct spim_rcpt_policy *look(const struct spim_rcpts *p, const char *addr)
{
    return spim_rcpts_lookup(p, addr, strlen(addr));
}

static const char *look_name(const struct spim_rcpts *p, const char *addr)
{
    const struct spim_rcpt_policy *r = look(p, addr);

    return r ? r->name : "(none)";
}

static void test_recipients_precedence(void **state)
{
    struct fx *x = *state;
    struct spim_rcpts *p = NULL;
    const struct spim_rcpt_policy *r;
    struct spim_diag d;

    write_file(x->path, "; defaults for everyone\n"
                        "[*]\n"
                        "tag_score = 4\n"
                        "\n"
                        "[@example.com]\n"
                        "action = tag\n"
                        "contacts_only = tag\n"
                        "[@chat.example.com]\n"
                        "action = deliver\n"
                        "[bob@chat.example.com]\n"
                        "action = drop\n"
                        "block_score = 6\n"
                        "tag_score = 2.5\n"
                        "shadow = yes\n");
    memset(&d, 0, sizeof(d));
    assert_int_equal(spim_rcpts_load(x->path, &p, &d), 0);
    assert_int_equal(spim_rcpts_count(p), 4);

    assert_string_equal(look_name(p, "bob@chat.example.com"), "bob@chat.example.com");
    assert_string_equal(look_name(p, "alice@chat.example.com"), "@chat.example.com");
    assert_string_equal(look_name(p, "alice@eu.chat.example.com"), "@chat.example.com");
    assert_string_equal(look_name(p, "bob@eu.chat.example.com"), "@chat.example.com");
    assert_string_equal(look_name(p, "x@mail.example.com"), "@example.com");
    assert_string_equal(look_name(p, "x@example.com"), "@example.com");
    assert_string_equal(look_name(p, "x@other.org"), "*");
    assert_string_equal(look_name(p, "x@notexample.com"), "*"); /* labels, not suffixes */
    assert_string_equal(look_name(p, "x@com"), "*");
    assert_string_equal(look_name(p, "example.com"), "@example.com"); /* no user: a host */
    assert_string_equal(look_name(p, ""), "*");
    assert_string_equal(look_name(p, "bob@"), "*");

    r = look(p, "bob@chat.example.com");
    assert_int_equal(r->line, 10);
    assert_int_equal(r->action, SPIM_RCPT_DROP);
    assert_int_equal(r->contacts_only, SPIM_RCPT_UNSET);
    assert_true(r->has_tag_score && r->has_block_score);
    assert_true(r->tag_score == 2.5 && r->block_score == 6.0);
    assert_int_equal(r->shadow, 1);
    r = look(p, "x@example.com");
    assert_int_equal(r->line, 5);
    assert_int_equal(r->action, SPIM_RCPT_TAG);
    assert_int_equal(r->contacts_only, SPIM_RCPT_TAG);
    assert_false(r->has_tag_score || r->has_block_score);
    assert_int_equal(r->shadow, 0);
    r = look(p, "x@other.org");
    assert_int_equal(r->line, 2);
    assert_true(r->has_tag_score && r->tag_score == 4.0);
    assert_int_equal(r->action, SPIM_RCPT_UNSET);
    spim_rcpts_free(p);

    /* Without "[*]" an address no section covers gets NULL. */
    write_file(x->path, "[@example.com]\n");
    assert_int_equal(spim_rcpts_load(x->path, &p, NULL), 0);
    assert_null(look(p, "a@example.org"));
    assert_non_null(look(p, "a@b.example.com"));
    spim_rcpts_free(p);
    write_file(x->path, "# nothing\n\n");
    assert_int_equal(spim_rcpts_load(x->path, &p, NULL), 0);
    assert_int_equal(spim_rcpts_count(p), 0);
    assert_null(look(p, "a@example.org"));
    spim_rcpts_free(p);
    spim_rcpts_free(NULL);
    assert_null(spim_rcpts_lookup(NULL, "a@b", 3));
    assert_int_equal(spim_rcpts_count(NULL), 0);
}

static void test_recipients_case_and_syntax(void **state)
{
    struct fx *x = *state;
    struct spim_rcpts *p = NULL;
    const struct spim_rcpt_policy *r;

    write_file(x->path, "\xef\xbb\xbf[Bob@Chat.Example.COM]   ; the boss\r\n"
                        "    action = Block\r\n"
                        "\tcontacts_only: DROP\r\n"
                        "  [@EXAMPLE.org]\n"
                        "  shadow = no\n"
                        "# a comment\n"
                        "  ; another\n"
                        "[@[2001:db8::1]]\n"
                        "contacts_only = off\n");
    assert_int_equal(spim_rcpts_load(x->path, &p, NULL), 0);
    assert_int_equal(spim_rcpts_count(p), 3);
    r = look(p, "bob@chat.example.com");
    assert_non_null(r);
    assert_string_equal(r->name, "Bob@Chat.Example.COM"); /* as written */
    assert_int_equal(r->action, SPIM_RCPT_BLOCK);
    assert_int_equal(r->contacts_only, SPIM_RCPT_DROP);
    assert_ptr_equal(look(p, "BOB@CHAT.example.com"), r);
    assert_ptr_equal(look(p, "bob@Chat.Example.Com"), r);
    assert_string_equal(look_name(p, "x@Mail.Example.ORG"), "@EXAMPLE.org");
    assert_int_equal(look(p, "x@example.org")->shadow, 0);
    assert_int_equal(look(p, "x@[2001:db8::1]")->contacts_only, SPIM_RCPT_OFF);
    assert_string_equal(look_name(p, "x@example.com"), "(none)");
    spim_rcpts_free(p);
}

/* The load of text fails with SPIM_EPARSE (or err) at line, its message holding what. */
static void bad(struct fx *x, const char *text, size_t n, int err, unsigned line, const char *what)
{
    struct spim_rcpts *p = (struct spim_rcpts *)0x1;
    struct spim_diag d;

    write_bytes(x->path, text, n);
    memset(&d, 0, sizeof(d));
    assert_int_equal(spim_rcpts_load(x->path, &p, &d), err);
    assert_ptr_equal(p, (struct spim_rcpts *)0x1); /* *out only on success */
    assert_string_equal(d.file, x->path);
    if (d.line != line || strstr(d.msg, what) == NULL)
        fail_msg("'%s': got line %u '%s', want line %u '%s'", text, d.line, d.msg, line, what);
}

#define BAD(text, line, what) bad(x, text, sizeof(text) - 1, SPIM_EPARSE, line, what)

static void test_recipients_bad_lines_say_where(void **state)
{
    struct fx *x = *state;
    char longline[400], longname[200];

    BAD("[*]\n[@a.example]\n[@A.Example]\n", 3, "given twice (first at line 2)");
    BAD("[a@b.example]\n[a@b.example]\naction = tag\n", 2, "given twice");
    BAD("[*]\n[*]\n", 2, "given twice");
    BAD("[*]\naction = tag\n\nfoo = 1\n", 4, "unknown key 'foo'");
    BAD("[*]\naction = tag\naction = block\n", 3, "action given twice");
    BAD("[*]\ntag_score = abc\n", 2, "tag_score: bad value 'abc'");
    BAD("[*]\ntag_score = 1e9\n", 2, "bad value");
    BAD("[*]\nblock_score = nan\n", 2, "bad value");
    BAD("[*]\nblock_score = 5x\n", 2, "bad value");
    BAD("[*]\nblock_score = 3\ntag_score = 4\n", 3, "tag_score 4 above block_score 3");
    BAD("[*]\naction = reject\n", 2, "action: bad value 'reject'");
    BAD("[*]\ncontacts_only = deliver\n", 2, "contacts_only: bad value");
    BAD("[*]\nshadow = maybe\n", 2, "shadow: bad value");
    BAD("[*]\naction = block # inline hash is not a comment\n", 2, "bad value");
    BAD("\n[example.com]\n", 2, "bad section name [example.com]");
    BAD("[@]\n", 1, "bad section name");
    BAD("[@bad..example]\n", 1, "bad section name");
    BAD("[@.example]\n", 1, "bad section name");
    BAD("[bo b@example.com]\n", 1, "bad section name");
    BAD("[@example.com@x]\n", 1, "bad section name");
    BAD("[]\n", 1, "bad section name");
    BAD("[**]\n", 1, "bad section name");
    BAD("[x@y.example]\n[*@c.example]\n", 2, "every user of a domain is [@c.example]");
    BAD("[*]\nblock_score = 0x10\n", 2, "bad value");
    BAD("[a@b.example\naction = tag\n", 1, "without ']'");
    BAD("[*] junk\n", 1, "text after the section name");
    BAD("action = tag\n[*]\n", 1, "before any section");
    BAD("[*]\naction = tag\njust some words\n", 3, "expected [section], key = value");
    BAD("[*]\n= 5\n", 2, "unknown key ''");
    BAD("[*]\nacti\0on = tag\n", 2, "NUL");
    memset(longline, 'a', sizeof(longline));
    memcpy(longline, "[*]\naction = ", 13);
    longline[sizeof(longline) - 2] = '\n';
    longline[sizeof(longline) - 1] = '\0';
    bad(x, longline, strlen(longline), SPIM_EPARSE, 2, "line longer than");
    memset(longname, 'b', sizeof(longname));
    memcpy(longname, "[@", 2);
    memcpy(longname + 150, ".example]\n", 11);
    bad(x, longname, strlen(longname), SPIM_EPARSE, 1, "longer than 127");
    /* An error inih sees before ours: the earlier line wins. */
    BAD("[*]\nwords\nfoo = 1\n", 2, "expected [section]");

    {
        struct spim_rcpts *p = NULL;
        struct spim_diag d;

        memset(&d, 0, sizeof(d));
        assert_int_equal(spim_rcpts_load("/nonexistent/recipients.conf", &p, &d), SPIM_EIO);
        assert_null(p);
        assert_string_equal(d.file, "/nonexistent/recipients.conf");
        assert_int_equal(spim_rcpts_load(NULL, &p, &d), SPIM_EINVAL);
    }
}

static void test_recipients_100k_sections(void **state)
{
    struct fx *x = *state;
    struct spim_rcpts *p = NULL;
    FILE *f = fopen(x->path, "w");
    uint64_t t0, t1, t2;
    char addr[128];
    unsigned hits = 0;

    assert_non_null(f);
    fputs("[*]\naction = tag\n", f);
    for (unsigned i = 0; i < 100000; i++) {
        if (i % 2 == 0)
            fprintf(f, "[user%u@d%u.example]\naction = block\n", i, i % 5000);
        else
            fprintf(f, "[@d%u.example]\ncontacts_only = drop\ntag_score = %u\n", i, i % 10);
    }
    fclose(f);
    t0 = spim_mono_ns();
    assert_int_equal(spim_rcpts_load(x->path, &p, NULL), 0);
    t1 = spim_mono_ns();
    assert_int_equal(spim_rcpts_count(p), 100001);
    for (unsigned i = 0; i < 100000; i++) {
        const struct spim_rcpt_policy *r;

        if (i % 2 == 0)
            snprintf(addr, sizeof(addr), "user%u@d%u.example", i, i % 5000);
        else
            snprintf(addr, sizeof(addr), "someone@chat.d%u.example", i);
        r = look(p, addr);
        assert_non_null(r);
        hits += r->action == SPIM_RCPT_BLOCK || r->contacts_only == SPIM_RCPT_DROP;
    }
    t2 = spim_mono_ns();
    assert_int_equal(hits, 100000);
    assert_string_equal(look_name(p, "user1@d1.example"), "@d1.example");
    assert_string_equal(look_name(p, "user2@d4.example"), "*");
    print_message("100,001 sections loaded in %.1f ms, 100,000 lookups in %.1f ms\n",
                  (double)(t1 - t0) / 1e6, (double)(t2 - t1) / 1e6);
    spim_rcpts_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_recipients_precedence, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recipients_case_and_syntax, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recipients_bad_lines_say_where, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recipients_100k_sections, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
