/*
 * test_lists.c: list files (every kind, comments, errors with file:line),
 * lookups naming the entry that decided, block winning over allow,
 * 100,000 entries loading in well under a second, and entries marked
 * shadow that never decide but are found by spim_policy_lookup_shadow.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "policy.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct fx {
    char dir[64];
    char allow[128], block[128];
    struct spim_policy *p;
};

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int setup(void **state)
{
    struct fx *x = calloc(1, sizeof(*x));

    snprintf(x->dir, sizeof(x->dir), "/tmp/spim-lists.XXXXXX");
    if (mkdtemp(x->dir) == NULL)
        return -1;
    snprintf(x->allow, sizeof(x->allow), "%s/allow.list", x->dir);
    snprintf(x->block, sizeof(x->block), "%s/block.list", x->dir);
    if (spim_policy_new(&x->p) != 0)
        return -1;
    *state = x;
    return 0;
}

static int teardown(void **state)
{
    struct fx *x = *state;

    spim_policy_free(x->p);
    unlink(x->allow);
    unlink(x->block);
    rmdir(x->dir);
    free(x);
    return 0;
}

static struct spim_slice sl(const char *s)
{
    return (struct spim_slice){s, s ? strlen(s) : 0};
}

static enum spim_policy_list look(struct spim_policy *p, const char *uri, const char *ua,
                                  const char *ip, char *entry, size_t cap)
{
    struct sockaddr_storage ss;
    struct spim_policy_who w = {sl(uri), sl(ua), NULL};

    memset(&ss, 0, sizeof(ss));
    if (ip != NULL) {
        if (strchr(ip, ':') != NULL) {
            struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

            s6->sin6_family = AF_INET6;
            assert_int_equal(inet_pton(AF_INET6, ip, &s6->sin6_addr), 1);
        } else {
            struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;

            s4->sin_family = AF_INET;
            assert_int_equal(inet_pton(AF_INET, ip, &s4->sin_addr), 1);
        }
        w.src = (struct sockaddr *)&ss;
    }
    return spim_policy_lookup(p, &w, entry, cap);
}

static void test_lists_every_kind(void **state)
{
    struct fx *x = *state;
    char e[128];

    write_file(x->allow, "# trusted\n"
                         "uri sip:Boss@Example.com   # the boss\n"
                         "uri *@partner.example\n"
                         "domain corp.example\n"
                         "net 10.0.0.0/8\n"
                         "net 2001:db8::/32\n"
                         "ua Linphone/*\n"
                         "ua CorpChat 2.1\n"
                         "ua *Jitsi?Meet*\n"
                         "\n");
    write_file(x->block, "uri sip:spammer@corp.example\n"
                         "net 192.0.2.7\n"
                         "domain bad.example\n");
    assert_int_equal(spim_policy_load_list(x->p, SPIM_POLICY_ALLOW, x->allow, NULL), 0);
    assert_int_equal(spim_policy_load_list(x->p, SPIM_POLICY_BLOCK, x->block, NULL), 0);
    assert_int_equal(spim_policy_count(x->p, SPIM_POLICY_ALLOW), 8);
    assert_int_equal(spim_policy_count(x->p, SPIM_POLICY_BLOCK), 3);

    assert_int_equal(
        look(x->p, "<sip:boss@example.com:5061;transport=udp>", NULL, NULL, e, sizeof(e)),
        SPIM_POLICY_ALLOW);
    assert_string_equal(e, "allow:uri:sip:Boss@Example.com");
    assert_int_equal(look(x->p, "sip:anyone@partner.example", NULL, NULL, e, sizeof(e)),
                     SPIM_POLICY_ALLOW);
    assert_string_equal(e, "allow:uri:*@partner.example");
    /* *@domain is that domain only; domain covers subdomains. */
    assert_int_equal(look(x->p, "sip:a@sub.partner.example", NULL, NULL, e, sizeof(e)),
                     SPIM_POLICY_NONE);
    assert_string_equal(e, "");
    assert_int_equal(look(x->p, "sip:a@eu.corp.example", NULL, NULL, e, sizeof(e)),
                     SPIM_POLICY_ALLOW);
    assert_string_equal(e, "allow:domain:corp.example");
    assert_int_equal(look(x->p, "sip:a@xcorp.example", NULL, NULL, e, sizeof(e)), SPIM_POLICY_NONE);
    assert_int_equal(look(x->p, "sip:a@x.org", NULL, "10.1.2.3", e, sizeof(e)), SPIM_POLICY_ALLOW);
    assert_string_equal(e, "allow:net:10.0.0.0/8");
    assert_int_equal(look(x->p, "sip:a@x.org", NULL, "11.1.2.3", e, sizeof(e)), SPIM_POLICY_NONE);
    assert_int_equal(look(x->p, NULL, NULL, "2001:db8:1::5", e, sizeof(e)), SPIM_POLICY_ALLOW);
    assert_string_equal(e, "allow:net:2001:db8::/32");
    assert_int_equal(look(x->p, NULL, NULL, "::ffff:10.9.9.9", e, sizeof(e)), SPIM_POLICY_ALLOW);
    assert_int_equal(look(x->p, NULL, "linphone/5.0 (belle-sip)", NULL, e, sizeof(e)),
                     SPIM_POLICY_ALLOW);
    assert_string_equal(e, "allow:ua:Linphone/*");
    assert_int_equal(look(x->p, NULL, "CorpChat 2.1", NULL, e, sizeof(e)), SPIM_POLICY_ALLOW);
    assert_int_equal(look(x->p, NULL, "CorpChat 2.10", NULL, e, sizeof(e)), SPIM_POLICY_NONE);
    assert_int_equal(look(x->p, NULL, "x Jitsi-Meet y", NULL, e, sizeof(e)), SPIM_POLICY_ALLOW);
    assert_string_equal(e, "allow:ua:*Jitsi?Meet*");
    /* Block wins: the spammer is in an allowed domain. */
    assert_int_equal(look(x->p, "sip:spammer@corp.example", NULL, NULL, e, sizeof(e)),
                     SPIM_POLICY_BLOCK);
    assert_string_equal(e, "block:uri:sip:spammer@corp.example");
    assert_int_equal(look(x->p, "sip:boss@example.com", NULL, "192.0.2.7", e, sizeof(e)),
                     SPIM_POLICY_BLOCK);
    assert_string_equal(e, "block:net:192.0.2.7");
    assert_int_equal(look(x->p, "sip:boss@example.com", NULL, "192.0.2.8", e, sizeof(e)),
                     SPIM_POLICY_ALLOW);
    assert_int_equal(look(x->p, "sip:x@a.b.bad.example", NULL, NULL, e, sizeof(e)),
                     SPIM_POLICY_BLOCK);
    assert_string_equal(e, "block:domain:bad.example");
    /* The entry is cut to fit. */
    assert_int_equal(look(x->p, "sip:x@bad.example", NULL, NULL, e, 8), SPIM_POLICY_BLOCK);
    assert_string_equal(e, "block:d");
}

static void test_lists_errors_say_where(void **state)
{
    struct fx *x = *state;
    struct spim_diag d;

    write_file(x->block, "uri sip:a@b\n# ok\nnet 300.1.1.1/8\n");
    memset(&d, 0, sizeof(d));
    assert_int_equal(spim_policy_load_list(x->p, SPIM_POLICY_BLOCK, x->block, &d), SPIM_EPARSE);
    assert_string_equal(d.file, x->block);
    assert_int_equal(d.line, 3);
    assert_non_null(strstr(d.msg, "300.1.1.1/8"));

    write_file(x->block, "\n\nphone 123\n");
    memset(&d, 0, sizeof(d));
    assert_int_equal(spim_policy_load_list(x->p, SPIM_POLICY_BLOCK, x->block, &d), SPIM_EPARSE);
    assert_int_equal(d.line, 3);
    assert_non_null(strstr(d.msg, "unknown kind"));

    write_file(x->block, "uri\n");
    assert_int_equal(spim_policy_load_list(x->p, SPIM_POLICY_BLOCK, x->block, &d), SPIM_EPARSE);
    write_file(x->block, "uri nobody-at-all\n");
    assert_int_equal(spim_policy_load_list(x->p, SPIM_POLICY_BLOCK, x->block, &d), SPIM_EPARSE);
    write_file(x->block, "net 10.0.0.0/33\n");
    assert_int_equal(spim_policy_load_list(x->p, SPIM_POLICY_BLOCK, x->block, &d), SPIM_EPARSE);
    write_file(x->block, "domain has space.example\n");
    assert_int_equal(spim_policy_load_list(x->p, SPIM_POLICY_BLOCK, x->block, &d), SPIM_EPARSE);
    assert_int_equal(spim_policy_load_list(x->p, SPIM_POLICY_BLOCK, "/nonexistent/x.list", &d),
                     SPIM_EIO);
}

static void test_lists_100k_load_fast(void **state)
{
    struct fx *x = *state;
    FILE *f = fopen(x->block, "w");
    uint64_t t0, t1;
    char e[128];

    assert_non_null(f);
    for (unsigned i = 0; i < 100000; i++) {
        switch (i % 4) {
        case 0:
            fprintf(f, "uri sip:user%u@spam%u.example\n", i, i % 997);
            break;
        case 1:
            fprintf(f, "domain d%u.example\n", i);
            break;
        case 2:
            fprintf(f, "net %u.%u.%u.0/24\n", 20 + i / 65536, (i / 256) % 256, i % 256);
            break;
        default:
            fprintf(f, "ua Bot%u/*\n", i);
        }
    }
    fclose(f);
    t0 = spim_mono_ns();
    assert_int_equal(spim_policy_load_list(x->p, SPIM_POLICY_BLOCK, x->block, NULL), 0);
    t1 = spim_mono_ns();
    assert_int_equal(spim_policy_count(x->p, SPIM_POLICY_BLOCK), 100000);
    print_message("100,000 entries loaded in %.1f ms\n", (double)(t1 - t0) / 1e6);
    assert_true(t1 - t0 < 1000000000ULL);
    assert_int_equal(look(x->p, "sip:user400@spam400.example", NULL, NULL, e, sizeof(e)),
                     SPIM_POLICY_BLOCK);
    assert_string_equal(e, "block:uri:sip:user400@spam400.example");
    assert_int_equal(look(x->p, "sip:a@x.d401.example", NULL, NULL, e, sizeof(e)),
                     SPIM_POLICY_BLOCK);
    assert_int_equal(look(x->p, NULL, NULL, "20.1.146.9", e, sizeof(e)), SPIM_POLICY_BLOCK);
    assert_string_equal(e, "block:net:20.1.146.0/24");
    assert_int_equal(look(x->p, NULL, "bot403/1.0", NULL, e, sizeof(e)), SPIM_POLICY_BLOCK);
    assert_int_equal(look(x->p, "sip:ok@fine.example", "Linphone", "8.8.8.8", e, sizeof(e)),
                     SPIM_POLICY_NONE);
}

static enum spim_policy_list look_shadow(struct spim_policy *p, const char *uri, const char *ua,
                                         const char *ip, char *entry, size_t cap)
{
    struct sockaddr_in s4;
    struct spim_policy_who w = {sl(uri), sl(ua), NULL};

    memset(&s4, 0, sizeof(s4));
    if (ip != NULL) {
        s4.sin_family = AF_INET;
        assert_int_equal(inet_pton(AF_INET, ip, &s4.sin_addr), 1);
        w.src = (struct sockaddr *)&s4;
    }
    return spim_policy_lookup_shadow(p, &w, entry, cap);
}

static void test_lists_shadow_never_decides(void **state)
{
    struct fx *x = *state;
    struct spim_diag d;
    char e[128];

    write_file(x->block, "uri sip:x@example.com shadow\n"
                         "net 10.0.0.0/8 shadow   # on trial\n"
                         "domain bad.example\n"
                         "ua Bot/* \tshadow\n"
                         "ua shadowy\n");
    write_file(x->allow, "domain example.com shadow\n"
                         "  uri sip:boss@corp.example\n");
    assert_int_equal(spim_policy_load_list(x->p, SPIM_POLICY_BLOCK, x->block, NULL), 0);
    assert_int_equal(spim_policy_load_list(x->p, SPIM_POLICY_ALLOW, x->allow, NULL), 0);
    assert_int_equal(spim_policy_count(x->p, SPIM_POLICY_BLOCK), 2);
    assert_int_equal(spim_policy_count_shadow(x->p, SPIM_POLICY_BLOCK), 3);
    assert_int_equal(spim_policy_count(x->p, SPIM_POLICY_ALLOW), 1);
    assert_int_equal(spim_policy_count_shadow(x->p, SPIM_POLICY_ALLOW), 1);

    /* A shadow entry never decides, block or allow... */
    assert_int_equal(look(x->p, "sip:x@example.com", NULL, NULL, e, sizeof(e)), SPIM_POLICY_NONE);
    assert_string_equal(e, "");
    assert_int_equal(look(x->p, "sip:a@b.org", NULL, "10.1.2.3", e, sizeof(e)), SPIM_POLICY_NONE);
    assert_int_equal(look(x->p, NULL, "Bot/1.0", NULL, e, sizeof(e)), SPIM_POLICY_NONE);
    assert_int_equal(look(x->p, "sip:a@www.example.com", NULL, NULL, e, sizeof(e)),
                     SPIM_POLICY_NONE);
    /* ...and lookup_shadow says what it would have decided, block first. */
    assert_int_equal(look_shadow(x->p, "sip:x@example.com", NULL, NULL, e, sizeof(e)),
                     SPIM_POLICY_BLOCK);
    assert_string_equal(e, "block:uri:sip:x@example.com");
    assert_int_equal(look_shadow(x->p, "sip:a@b.org", NULL, "10.1.2.3", e, sizeof(e)),
                     SPIM_POLICY_BLOCK);
    assert_string_equal(e, "block:net:10.0.0.0/8");
    assert_int_equal(look_shadow(x->p, NULL, "Bot/1.0", NULL, e, sizeof(e)), SPIM_POLICY_BLOCK);
    assert_string_equal(e, "block:ua:Bot/*");
    assert_int_equal(look_shadow(x->p, "sip:a@www.example.com", NULL, NULL, e, sizeof(e)),
                     SPIM_POLICY_ALLOW);
    assert_string_equal(e, "allow:domain:example.com");
    /* The other entries decide as before and are not shadow entries. */
    assert_int_equal(look(x->p, "sip:y@bad.example", NULL, NULL, e, sizeof(e)), SPIM_POLICY_BLOCK);
    assert_string_equal(e, "block:domain:bad.example");
    assert_int_equal(look_shadow(x->p, "sip:y@bad.example", NULL, NULL, e, sizeof(e)),
                     SPIM_POLICY_NONE);
    assert_string_equal(e, "");
    assert_int_equal(look(x->p, "sip:boss@corp.example", NULL, "10.0.0.1", e, sizeof(e)),
                     SPIM_POLICY_ALLOW);
    assert_int_equal(look(x->p, NULL, "shadowy", NULL, e, sizeof(e)), SPIM_POLICY_BLOCK);
    assert_int_equal(spim_policy_lookup_shadow(NULL, &(struct spim_policy_who){0}, e, sizeof(e)),
                     SPIM_POLICY_NONE);

    /* "shadow" is a flag after a value, never the value. */
    write_file(x->block, "uri sip:a@b.example\nuri shadow\n");
    memset(&d, 0, sizeof(d));
    assert_int_equal(spim_policy_load_list(x->p, SPIM_POLICY_BLOCK, x->block, &d), SPIM_EPARSE);
    assert_int_equal(d.line, 2);
    write_file(x->block, "shadow\n");
    assert_int_equal(spim_policy_load_list(x->p, SPIM_POLICY_BLOCK, x->block, &d), SPIM_EPARSE);
    write_file(x->block, "net 300.0.0.0/8 shadow\n");
    memset(&d, 0, sizeof(d));
    assert_int_equal(spim_policy_load_list(x->p, SPIM_POLICY_BLOCK, x->block, &d), SPIM_EPARSE);
    assert_int_equal(d.line, 1);
    assert_non_null(strstr(d.msg, "300.0.0.0/8"));
}

static void test_lists_uri_norm(void **state)
{
    char out[64];

    (void)state;
    assert_int_equal(spim_policy_uri_norm(sl("\"Al\" <SIPS:Al@H.Example:5061;x=y>"), out, 64), 12);
    assert_string_equal(out, "al@h.example");
    spim_policy_uri_norm(sl("sip:bob@[2001:db8::1]:5060"), out, sizeof(out));
    assert_string_equal(out, "bob@[2001:db8::1]");
    spim_policy_uri_norm(sl("sip:host.example"), out, sizeof(out));
    assert_string_equal(out, "host.example");
    assert_int_equal(spim_policy_uri_norm(sl(""), out, sizeof(out)), 0);
    /* a display name may hold a URI of its own: it is not the address */
    spim_policy_uri_norm(sl("\"<sip:ceo@corp.example>\" <sip:spammer@s.example>"), out, 64);
    assert_string_equal(out, "spammer@s.example");
    spim_policy_uri_norm(sl("\"a \\\"<sip:x@y>\" <sip:b@c>;tag=1"), out, 64);
    assert_string_equal(out, "b@c");
    assert_int_equal(spim_policy_uri_norm(sl("\"<sip:ceo@corp.example> <sip:x@y>"), out, 64), 0);
    /* parameters of the user part (user=phone) are not part of the user */
    spim_policy_uri_norm(sl("<sip:+1555;verstat=TN-Validation-Passed@Example.com;user=phone>"), out,
                         64);
    assert_string_equal(out, "+1555@example.com");
    assert_int_equal(spim_policy_uri_norm(sl("<sip:bob@>"), out, 64), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_lists_every_kind, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lists_errors_say_where, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lists_100k_load_fast, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lists_shadow_never_decides, setup, teardown),
        cmocka_unit_test(test_lists_uri_norm),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
