/*
 * test_sip_nolib.c: the SIP parser when libosipparser2 cannot be loaded.
 *
 * filter/sip.c and filter/osip_lazy.c are built into this test with a
 * soname no system has (SPIM_OSIP_SONAME, tests/filter/CMakeLists.txt), so
 * the dlopen at the first parse really fails: the reason names the library,
 * a request is refused with it (not parsed half-way, not a crash), and a
 * response, which needs no libosip2, still parses.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "filter.h"

#include <string.h>

static const char request[] = "MESSAGE sip:bob@127.0.0.1 SIP/2.0\r\n"
                              "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-nolib-1\r\n"
                              "Max-Forwards: 70\r\n"
                              "From: <sip:alice@127.0.0.1>;tag=a1\r\n"
                              "To: <sip:bob@127.0.0.1>\r\n"
                              "Call-ID: nolib-1@127.0.0.1\r\n"
                              "CSeq: 1 MESSAGE\r\n"
                              "Content-Type: text/plain\r\n"
                              "Content-Length: 5\r\n"
                              "\r\n"
                              "hello";

static const char response[] = "SIP/2.0 200 OK\r\n"
                               "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-nolib-1\r\n"
                               "From: <sip:alice@127.0.0.1>;tag=a1\r\n"
                               "To: <sip:bob@127.0.0.1>;tag=b1\r\n"
                               "Call-ID: nolib-1@127.0.0.1\r\n"
                               "CSeq: 1 MESSAGE\r\n"
                               "Content-Length: 0\r\n"
                               "\r\n";

static void test_sip_init_names_the_library(void **state)
{
    char err[512] = "";

    (void)state;
    assert_int_equal(spim_sip_init(err, sizeof(err)), SPIM_EIO);
    assert_non_null(strstr(err, "cannot load libspim-no-such-library.so.0"));
    /* Asked again, the same answer (the load is tried once). */
    err[0] = '\0';
    assert_int_equal(spim_sip_init(err, sizeof(err)), SPIM_EIO);
    assert_non_null(strstr(err, "libspim-no-such-library.so.0"));
}

static void test_sip_request_refused_response_parsed(void **state)
{
    struct spim_sip_msg m;
    char err[512] = "";

    (void)state;
    assert_int_equal(spim_sip_parse(request, sizeof(request) - 1, &m, err, sizeof(err)), SPIM_EIO);
    assert_non_null(strstr(err, "libspim-no-such-library.so.0"));
    spim_sip_msg_free(&m);
    assert_int_equal(spim_sip_parse(response, sizeof(response) - 1, &m, err, sizeof(err)), 0);
    assert_false(m.is_request);
    assert_int_equal(m.status, 200);
    spim_sip_msg_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sip_init_names_the_library),
        cmocka_unit_test(test_sip_request_refused_response_parsed),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
