/*
 * test_sip.c: the SIP side of the filter on raw messages from
 * tests/inputs/sip/, parsed by libosip2: parsing, body text, the forwarded
 * request and response, local answers, and the whole per-datagram handling
 * with a judge that blocks texts containing "prize".
 */
#define _GNU_SOURCE /* memmem */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "filter.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *load(const char *name, size_t *len)
{
    char path[512];
    FILE *f;
    char *buf = malloc(SPIM_SIP_MAX + 1);

    snprintf(path, sizeof(path), "%s/tests/inputs/sip/%s", SPIM_SOURCE_DIR, name);
    f = fopen(path, "rb");
    assert_non_null(f);
    assert_non_null(buf);
    *len = fread(buf, 1, SPIM_SIP_MAX, f);
    fclose(f);
    buf[*len] = '\0';
    return buf;
}

static struct sockaddr_storage addr(const char *ip, unsigned port)
{
    struct sockaddr_storage ss;
    struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

    memset(&ss, 0, sizeof(ss));
    sin->sin_family = AF_INET;
    sin->sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, ip, &sin->sin_addr);
    return ss;
}

static const struct spim_proxy_self self = {"127.0.0.1", 5070};

static int slice_is(struct spim_slice s, const char *want)
{
    return s.len == strlen(want) && memcmp(s.p, want, s.len) == 0;
}

static void test_sip_parse_kamailio_message(void **state)
{
    size_t len;
    char *buf = load("kamailio_message.sip", &len), err[128];
    struct spim_sip_msg m;

    (void)state;
    assert_int_equal(spim_sip_parse(buf, len, &m, err, sizeof(err)), 0);
    assert_true(m.is_request);
    assert_true(slice_is(m.method, "MESSAGE"));
    assert_true(slice_is(m.ruri, "sip:bob@127.0.0.1:5080"));
    assert_true(slice_is(m.call_id, "call-1@127.0.0.1"));
    assert_true(slice_is(m.body, "Win a free iPhone!!!"));
    assert_true(slice_is(m.via_host, "127.0.0.1"));
    assert_int_equal(m.via_port, 0);
    assert_true(slice_is(m.via_branch, "z9hG4bKkam1"));
    assert_int_equal(m.max_forwards, 69);
    assert_int_equal(m.via_count, 2);
    assert_int_equal(m.cseq_num, 1);
    spim_sip_msg_free(&m);
    free(buf);
}

/* P-Asserted-Identity, Identity (and its compact y) and the verstat a verifier adds. */
static void test_sip_identity_headers(void **state)
{
    static const char msg[] =
        "MESSAGE sip:bob@example.com SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-id-1\r\n"
        "From: <sip:+15551230000@example.com;user=phone>;tag=1\r\n"
        "To: <sip:bob@example.com>\r\n"
        "Call-ID: id-1\r\n"
        "CSeq: 1 MESSAGE\r\n"
        "P-Asserted-Identity: \"A\" <sip:+15551230000@example.com;verstat=tn-validation-passed>\r\n"
        "P-Asserted-Identity: <tel:+15551230000>\r\n"
        "y: eyJhbGciOiJFUzI1NiJ9.e30.sig;info=<https://cert.example/c.pem>\r\n"
        "Content-Length: 2\r\n\r\nhi";
    struct spim_sip_msg m;
    char err[128];

    (void)state;
    assert_int_equal(spim_sip_parse(msg, sizeof(msg) - 1, &m, err, sizeof(err)), 0);
    assert_non_null(strstr(m.pai.p, "verstat=tn-validation-passed>"));
    assert_true(m.pai.len < 80); /* the first one only */
    assert_true(m.identity.len > 0 && m.identity.p[0] == 'e');
    spim_sip_msg_free(&m);
    assert_int_equal(
        spim_sip_verstat((struct spim_slice){"sip:a@b;verstat=TN-Validation-Passed", 36}),
        SPIM_VERSTAT_PASSED);
    assert_int_equal(
        spim_sip_verstat((struct spim_slice){"tel:+1555;verstat=TN-Validation-Failed;x=1", 42}),
        SPIM_VERSTAT_FAILED);
    assert_int_equal(spim_sip_verstat((struct spim_slice){"sip:a@b;verstat=No-TN-Validation", 32}),
                     SPIM_VERSTAT_NONE);
    assert_int_equal(
        spim_sip_verstat((struct spim_slice){"sip:a@b;verstat=TN-Validation-Passed-Not", 40}),
        SPIM_VERSTAT_NONE);
    assert_int_equal(
        spim_sip_verstat((struct spim_slice){"sip:a@b;xverstat=TN-Validation-Passed", 37}),
        SPIM_VERSTAT_NONE);
    assert_int_equal(spim_sip_verstat((struct spim_slice){";verstat=", 9}), SPIM_VERSTAT_NONE);
    {
        /* the user-part form of a sip: URI with user=phone; a display name does not count;
         * one Failed among several values wins */
        static const char *const vals[] = {
            "<sip:+15551230000;verstat=TN-Validation-Passed@example.com;user=phone>",
            "\"x;verstat=TN-Validation-Passed\" <sip:a@example.com>",
            "<sip:a@example.com;verstat=TN-Validation-Passed>, "
            "<tel:+1555;verstat=TN-Validation-Failed>",
        };
        static const int want[] = {SPIM_VERSTAT_PASSED, SPIM_VERSTAT_NONE, SPIM_VERSTAT_FAILED};

        for (size_t i = 0; i < 3; i++)
            assert_int_equal(spim_sip_verstat((struct spim_slice){vals[i], strlen(vals[i])}),
                             want[i]);
    }
    assert_int_equal(spim_sip_verstat((struct spim_slice){"", 0}), SPIM_VERSTAT_NONE);
}

static void test_sip_parse_compact_and_folded(void **state)
{
    size_t len;
    char *buf = load("compact_message.sip", &len), err[128];
    struct spim_sip_msg m;

    (void)state;
    assert_int_equal(spim_sip_parse(buf, len, &m, err, sizeof(err)), 0);
    assert_true(slice_is(m.call_id, "compact-1"));
    assert_true(slice_is(m.body, "hello"));
    assert_true(slice_is(m.via_host, "10.0.0.9"));
    assert_int_equal(m.via_port, 5062);
    assert_true(m.via_has_rport);
    assert_int_equal(m.via_rport.len, 0);
    assert_int_equal(m.via_count, 2);
    assert_false(m.via_single);
    assert_int_equal(m.max_forwards, -1);
    assert_non_null(strstr(m.user_agent.p, "Client/1.0"));
    spim_sip_msg_free(&m);
    free(buf);
}

static void test_sip_parse_rejects_bad_input(void **state)
{
    static const struct {
        const char *file;
        int answerable;
    } cases[] = {
        {"content_length_too_big.sip", 1},
        {"content_length_negative.sip", 1},
        {"truncated.sip", 1},
        {"garbage.sip", 0},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t len;
        char *buf = load(cases[i].file, &len), err[128];
        struct spim_sip_msg m;

        assert_int_equal(spim_sip_parse(buf, len, &m, err, sizeof(err)), SPIM_EPARSE);
        assert_true(err[0] != '\0');
        assert_int_equal(spim_sip_can_answer(&m), cases[i].answerable);
        spim_sip_msg_free(&m);
        free(buf);
    }
    {
        struct spim_sip_msg m;
        char err[64];

        assert_int_equal(spim_sip_parse("", 0, &m, err, sizeof(err)), SPIM_EPARSE);
    }
}

/* CSeq numbers go up to 2**31 - 1 (RFC 3261 8.1.1.5): ten digits. */
static void test_sip_parse_cseq_range(void **state)
{
    static const struct {
        const char *cseq;
        int ok;
    } cases[] = {{"2147483647", 1}, {"2147483648", 0}, {"12345678901", 0}, {"", 0}};

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char buf[512], err[128];
        struct spim_sip_msg m;
        int n = snprintf(buf, sizeof(buf),
                         "MESSAGE sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKc\r\n"
                         "From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c\r\nCSeq: %s "
                         "MESSAGE\r\nContent-Length: 0\r\n\r\n",
                         cases[i].cseq);

        assert_int_equal(spim_sip_parse(buf, (size_t)n, &m, err, sizeof(err)) == 0, cases[i].ok);
        spim_sip_msg_free(&m);
    }
}

/* The address of a From or To value, whatever surrounds it. */
static void test_sip_uri_of(void **state)
{
    static const struct {
        const char *value, *uri;
    } cases[] = {
        {"<sip:alice@127.0.0.1:5061>;tag=1", "sip:alice@127.0.0.1:5061"},
        {"\"Alice\" <sip:alice@h>;tag=x", "sip:alice@h"},
        {"\"<sip:ceo@corp>\" <sip:x@y>", "sip:x@y"},
        {"\"a \\\" <sip:q@q>\" <sip:z@z>", "sip:z@z"},
        {"  sip:bob@h;tag=2", "sip:bob@h"},
        {"sip:bob@h", "sip:bob@h"},
        {"\"open <sip:a@b>", ""},
        {"", ""},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct spim_slice u =
            spim_sip_uri_of((struct spim_slice){cases[i].value, strlen(cases[i].value)});

        assert_int_equal(u.len, strlen(cases[i].uri));
        assert_memory_equal(u.p, cases[i].uri, u.len);
    }
    /* a record's empty From: no pointer at all */
    assert_int_equal(spim_sip_uri_of((struct spim_slice){NULL, 0}).len, 0);
}

static void test_sip_body_kinds(void **state)
{
    static const struct {
        const char *file;
        enum spim_body_kind kind;
        const char *text;
    } cases[] = {
        {"kamailio_message.sip", SPIM_BODY_TEXT, "Win a free iPhone!!!"},
        {"cpim_message.sip", SPIM_BODY_TEXT, "claim your prize now"},
        {"latin1_message.sip", SPIM_BODY_TEXT, "caf\xc3\xa9 ok"},
        {"iscomposing.sip", SPIM_BODY_NONE, ""},
        {"multipart_message.sip", SPIM_BODY_TEXT, NULL},
    };
    char out[4096];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t len, n;
        char *buf = load(cases[i].file, &len), err[128];
        struct spim_sip_msg m;

        assert_int_equal(spim_sip_parse(buf, len, &m, err, sizeof(err)), 0);
        assert_int_equal(spim_sip_body_text(&m, out, sizeof(out), &n), cases[i].kind);
        if (cases[i].text != NULL) {
            assert_int_equal(n, strlen(cases[i].text));
            assert_memory_equal(out, cases[i].text, n);
        } else {
            out[n] = '\0';
            assert_non_null(strstr(out, "first part"));
            assert_non_null(strstr(out, "second & part"));
        }
        spim_sip_msg_free(&m);
        free(buf);
    }
}

static void test_sip_body_keeps_nul_bytes(void **state)
{
    size_t len, n;
    char *buf = load("nul_in_body.sip", &len), err[128], out[64];
    struct spim_sip_msg m;

    (void)state;
    assert_int_equal(spim_sip_parse(buf, len, &m, err, sizeof(err)), 0);
    assert_int_equal(m.body.len, 9);
    assert_int_equal(spim_sip_body_text(&m, out, sizeof(out), &n), SPIM_BODY_TEXT);
    assert_int_equal(n, 9);
    assert_memory_equal(out, "free\0cash", 9);
    spim_sip_msg_free(&m);
    free(buf);
}

static void test_sip_files_and_sdp_offers(void **state)
{
    size_t len, n;
    char *buf = load("attachment_message.sip", &len), err[128], out[4096];
    struct spim_sip_msg m;
    struct spim_sip_files files;

    (void)state;
    assert_int_equal(spim_sip_parse(buf, len, &m, err, sizeof(err)), 0);
    assert_int_equal(spim_sip_body(&m, out, sizeof(out), &n, &files), SPIM_BODY_TEXT);
    assert_int_equal(n, strlen("see the invoice"));
    assert_int_equal(files.n, 1);
    assert_true(slice_is(files.f[0].name, "invoice.exe"));
    assert_true(slice_is(files.f[0].content_type, "application/octet-stream"));
    assert_int_equal(files.f[0].data.len, 10);
    assert_memory_equal(files.f[0].data.p,
                        "MZ\x90\0"
                        "binary",
                        10);
    spim_sip_msg_free(&m);
    free(buf);

    buf = load("invite_file_offer.sip", &len);
    assert_int_equal(spim_sip_parse(buf, len, &m, err, sizeof(err)), 0);
    assert_int_equal(spim_sip_sdp_files(&m, &files), 1);
    assert_true(slice_is(files.f[0].name, "My cool picture.jpg"));
    assert_true(slice_is(files.f[0].content_type, "image/jpeg"));
    assert_int_equal(files.f[0].size, 32349);
    spim_sip_msg_free(&m);
    free(buf);

    /* keys inside the quoted name do not count; an escaped quote stays in the name */
    {
        static const char inv[] =
            "INVITE sip:bob@h SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKq\r\n"
            "From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: q\r\nCSeq: 1 INVITE\r\n"
            "Content-Type: application/sdp\r\n\r\nv=0\r\nm=message 7 TCP/MSRP *\r\n"
            "a=file-selector:name:\"a\\\".exe size:1 type:text/plain\" "
            "type:application/x-msdownload size:20000000\r\n";
        assert_int_equal(spim_sip_parse(inv, sizeof(inv) - 1, &m, err, sizeof(err)), 0);
        assert_int_equal(spim_sip_sdp_files(&m, &files), 1);
        assert_true(slice_is(files.f[0].content_type, "application/x-msdownload"));
        assert_int_equal(files.f[0].size, 20000000);
        assert_non_null(memmem(files.f[0].name.p, files.f[0].name.len, ".exe", 4));
        spim_sip_msg_free(&m);
    }
}

static void test_proxy_forward_request_splices(void **state)
{
    size_t len;
    char *buf = load("kamailio_message.sip", &len), err[128], branch[64];
    char outb[SPIM_SIP_MAX + 1024], expect[2048];
    struct spim_buf out = {outb, 0, sizeof(outb)};
    struct spim_sip_msg m;
    struct sockaddr_storage src = addr("127.0.0.1", 5060);

    (void)state;
    assert_int_equal(spim_sip_parse(buf, len, &m, err, sizeof(err)), 0);
    assert_int_equal(spim_proxy_forward_request(&m, &self, &src, NULL, &out), 0);
    spim_proxy_branch(&m, branch, sizeof(branch));
    snprintf(expect, sizeof(expect),
             "MESSAGE sip:bob@127.0.0.1:5080 SIP/2.0\r\n"
             "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=%s\r\n"
             "Via: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKkam1\r\n"
             "Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bKuac1;rport=5061\r\n"
             "Max-Forwards: 68\r\n",
             branch);
    assert_true(out.len > strlen(expect));
    assert_memory_equal(out.p, expect, strlen(expect));
    /* the rest is byte for byte */
    assert_memory_equal(out.p + out.len - 20, "Win a free iPhone!!!", 20);
    assert_non_null(strstr(outb, "Content-Length:    20\r\n"));
    assert_int_equal(strncmp(branch, "z9hG4bK", 7), 0);
    /* a branch made already (the server makes it once per request) is the one used */
    {
        char again[SPIM_SIP_MAX + 1024];
        struct spim_buf out2 = {again, 0, sizeof(again)};
        struct spim_proxy_fwd how = {0, 0, NULL, 0, branch};

        assert_int_equal(spim_proxy_forward_request(&m, &self, &src, &how, &out2), 0);
        assert_int_equal(out2.len, out.len);
        assert_memory_equal(again, outb, out.len);
        how.branch = "z9hG4bKspf0123456789abcdef";
        assert_int_equal(spim_proxy_forward_request(&m, &self, &src, &how, &out2), 0);
        again[out2.len] = '\0';
        assert_non_null(strstr(again, ";branch=z9hG4bKspf0123456789abcdef\r\n"));
    }
    spim_sip_msg_free(&m);
    free(buf);
}

static void test_proxy_branch_is_stable_and_distinct(void **state)
{
    size_t len;
    char *buf = load("kamailio_message.sip", &len), err[128], b1[64], b2[64], b3[64];
    struct spim_sip_msg m;

    (void)state;
    assert_int_equal(spim_sip_parse(buf, len, &m, err, sizeof(err)), 0);
    spim_proxy_branch(&m, b1, sizeof(b1));
    spim_sip_msg_free(&m);
    assert_int_equal(spim_sip_parse(buf, len, &m, err, sizeof(err)), 0);
    spim_proxy_branch(&m, b2, sizeof(b2));
    spim_sip_msg_free(&m);
    assert_string_equal(b1, b2);
    /* another upstream transaction gets another branch */
    memcpy(strstr(buf, "z9hG4bKkam1"), "z9hG4bKkam2", 11);
    assert_int_equal(spim_sip_parse(buf, len, &m, err, sizeof(err)), 0);
    spim_proxy_branch(&m, b3, sizeof(b3));
    spim_sip_msg_free(&m);
    assert_string_not_equal(b1, b3);
    free(buf);
}

static void test_proxy_received_and_rport(void **state)
{
    size_t len;
    char *buf = load("compact_message.sip", &len), err[128];
    char outb[8192];
    struct spim_buf out = {outb, 0, sizeof(outb) - 1};
    struct spim_sip_msg m;
    struct sockaddr_storage src = addr("127.0.0.1", 40000);

    (void)state;
    assert_int_equal(spim_sip_parse(buf, len, &m, err, sizeof(err)), 0);
    assert_int_equal(spim_proxy_forward_request(&m, &self, &src, NULL, &out), 0);
    outb[out.len] = '\0';
    assert_non_null(strstr(outb, "v: SIP/2.0/UDP 10.0.0.9:5062;rport=40000;branch=z9hG4bKc1;"
                                 "received=127.0.0.1, SIP/2.0/UDP 127.0.0.1:5061"));
    /* Max-Forwards was absent: added */
    assert_non_null(strstr(outb, "Max-Forwards: 70\r\n\r\nhello"));
    spim_sip_msg_free(&m);
    free(buf);
}

/* What the client wrote in received and rport is replaced by where it came from. */
static void test_proxy_received_rport_overwritten(void **state)
{
    static const char *vias[] = {"received=10.9.9.9;rport=", "rport=9;received=10.9.9.9",
                                 "received=10.9.9.9;rport"};
    static const char *want[] = {"received=127.0.0.1;rport=40000", "rport=40000;received=127.0.0.1",
                                 "received=127.0.0.1;rport=40000"};
    struct sockaddr_storage src = addr("127.0.0.1", 40000);

    (void)state;
    for (size_t i = 0; i < 3; i++) {
        char buf[1024], outb[4096], err[128], expect[256];
        struct spim_buf out = {outb, 0, sizeof(outb) - 1};
        struct spim_sip_msg m;
        int n =
            snprintf(buf, sizeof(buf),
                     "MESSAGE sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.9:5062;branch=z9hG4bKo;%s"
                     "\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: ow\r\nCSeq: 1 "
                     "MESSAGE\r\nContent-Length: 0\r\n\r\n",
                     vias[i]);

        assert_int_equal(spim_sip_parse(buf, (size_t)n, &m, err, sizeof(err)), 0);
        assert_int_equal(spim_proxy_forward_request(&m, &self, &src, NULL, &out), 0);
        outb[out.len] = '\0';
        snprintf(expect, sizeof(expect), "branch=z9hG4bKo;%s\r\n", want[i]);
        assert_non_null(strstr(outb, expect));
        spim_sip_msg_free(&m);
    }
}

static void test_proxy_tag_headers(void **state)
{
    size_t len;
    char *buf = load("kamailio_message.sip", &len), err[128];
    char outb[8192];
    struct spim_buf out = {outb, 0, sizeof(outb) - 1};
    struct spim_sip_msg m;
    struct sockaddr_storage src = addr("127.0.0.1", 5060);
    struct spim_proxy_header h[2] = {{"X-SPIM-Verdict", "tag"}, {"X-SPIM-Score", "5.10"}};
    struct spim_proxy_fwd how = {0, 0, h, 2, NULL};

    (void)state;
    assert_int_equal(spim_sip_parse(buf, len, &m, err, sizeof(err)), 0);
    assert_int_equal(spim_proxy_forward_request(&m, &self, &src, &how, &out), 0);
    outb[out.len] = '\0';
    assert_non_null(strstr(outb, "Content-Length:    20\r\nX-SPIM-Verdict: tag\r\n"
                                 "X-SPIM-Score: 5.10\r\n\r\nWin a free iPhone!!!"));
    spim_sip_msg_free(&m);
    free(buf);
}

/*
 * response_folded_via.sip with our real branch for kamailio_message.sip in
 * place of its z9hG4bKspfXXXX (a response carries what the branch is made of).
 */
static char *load_response(size_t *len)
{
    size_t rl, ql;
    char *resp = load("response_folded_via.sip", &rl), *req = load("kamailio_message.sip", &ql);
    char *out = malloc(rl + 64), *ph = strstr(resp, "z9hG4bKspfXXXX"), branch[64], err[128];
    struct spim_sip_msg m;

    assert_non_null(ph);
    assert_int_equal(spim_sip_parse(req, ql, &m, err, sizeof(err)), 0);
    spim_proxy_branch(&m, branch, sizeof(branch));
    spim_sip_msg_free(&m);
    *len = (size_t)snprintf(out, rl + 64, "%.*s%s%s", (int)(ph - resp), resp, branch, ph + 14);
    free(resp);
    free(req);
    return out;
}

static void test_proxy_response_removes_folded_via(void **state)
{
    size_t len;
    char *buf = load_response(&len), err[128];
    char outb[8192];
    struct spim_buf out = {outb, 0, sizeof(outb) - 1};
    struct spim_sip_msg m;
    struct sockaddr_storage dst;
    socklen_t dl;
    struct sockaddr_in *sin = (struct sockaddr_in *)&dst;
    char ip[32];
    uint32_t conn = 1;

    (void)state;
    assert_int_equal(spim_sip_parse(buf, len, &m, err, sizeof(err)), 0);
    assert_false(m.is_request);
    assert_int_equal(m.status, 200);
    assert_int_equal(spim_proxy_forward_response(&m, &self, &out, &dst, &dl, &conn), 0);
    outb[out.len] = '\0';
    assert_non_null(strstr(outb, "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKkam1;"
                                 "received=127.0.0.2, SIP/2.0/UDP 127.0.0.1:5061"));
    assert_null(strstr(outb, "spf"));
    /* the next Via's received, its port (none: 5060) */
    inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof(ip));
    assert_string_equal(ip, "127.0.0.2");
    assert_int_equal(conn, 0);
    assert_int_equal(ntohs(sin->sin_port), 5060);
    spim_sip_msg_free(&m);

    /* a branch with our prefix that we did not make (forged) is dropped */
    {
        char *b = strstr(buf, "branch=z9hG4bKspf") + 17;

        b[0] = b[0] == '0' ? '1' : '0';
        assert_int_equal(spim_sip_parse(buf, len, &m, err, sizeof(err)), 0);
        assert_int_equal(spim_proxy_forward_response(&m, &self, &out, &dst, &dl, &conn),
                         SPIM_ENOTFOUND);
        spim_sip_msg_free(&m);
        b[0] = b[0] == '0' ? '1' : '0';
    }
    /* a response whose top Via is not ours is dropped */
    memcpy(strstr(buf, ":5070"), ":5071", 5);
    assert_int_equal(spim_sip_parse(buf, len, &m, err, sizeof(err)), 0);
    assert_int_equal(spim_proxy_forward_response(&m, &self, &out, &dst, &dl, &conn),
                     SPIM_ENOTFOUND);
    spim_sip_msg_free(&m);
    free(buf);
}

static void test_proxy_answer_403(void **state)
{
    size_t len;
    char *buf = load("kamailio_message.sip", &len), err[128];
    char outb[8192], again[8192];
    struct spim_buf out = {outb, 0, sizeof(outb) - 1};
    struct spim_sip_msg m;
    struct sockaddr_storage src = addr("127.0.0.1", 5060), dst;
    socklen_t dl;

    (void)state;
    assert_int_equal(spim_sip_parse(buf, len, &m, err, sizeof(err)), 0);
    assert_int_equal(spim_proxy_answer(&m, 403, "Forbidden", NULL, &src, &out, &dst, &dl), 0);
    outb[out.len] = '\0';
    assert_non_null(strstr(outb, "SIP/2.0 403 Forbidden\r\n"
                                 "Via: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKkam1\r\n"
                                 "Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bKuac1;rport=5061\r\n"
                                 "From: <sip:alice@127.0.0.1:5061>;tag=abc\r\n"
                                 "To: <sip:bob@127.0.0.1:5060>;tag=spf"));
    assert_non_null(strstr(outb, "Call-ID: call-1@127.0.0.1\r\nCSeq: 1 MESSAGE\r\n"));
    assert_non_null(strstr(outb, "Content-Length: 0\r\n\r\n"));
    assert_non_null(strstr(outb, "\r\nServer: spimfilter/"));
    assert_int_equal(ntohs(((struct sockaddr_in *)&dst)->sin_port), 5060);
    /* a silent drop's 200 does not say it is ours: no Server, no spf tag */
    assert_int_equal(spim_proxy_answer(&m, 200, "OK", NULL, &src, &out, &dst, &dl), 0);
    outb[out.len] = '\0';
    assert_null(strstr(outb, "Server:"));
    assert_null(strstr(outb, "tag=spf"));
    assert_non_null(strstr(outb, "To: <sip:bob@127.0.0.1:5060>;tag="));
    spim_sip_msg_free(&m);
    free(buf);

    /* an empty rport is filled, and received added (RFC 3581) */
    buf = load("compact_message.sip", &len);
    src = addr("127.0.0.1", 40000);
    assert_int_equal(spim_sip_parse(buf, len, &m, err, sizeof(err)), 0);
    assert_int_equal(spim_proxy_answer(&m, 403, "Forbidden", NULL, &src, &out, &dst, &dl), 0);
    outb[out.len] = '\0';
    assert_non_null(strstr(outb, "Via: SIP/2.0/UDP 10.0.0.9:5062;rport=40000;branch=z9hG4bKc1;"
                                 "received=127.0.0.1\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;"));
    assert_int_equal(ntohs(((struct sockaddr_in *)&dst)->sin_port), 40000);
    /* a retransmission gets the same bytes, To-tag included */
    memcpy(again, outb, out.len + 1);
    assert_int_equal(spim_proxy_answer(&m, 403, "Forbidden", NULL, &src, &out, &dst, &dl), 0);
    assert_memory_equal(again, outb, out.len);
    spim_sip_msg_free(&m);
    free(buf);
}

static void test_proxy_loop_and_options(void **state)
{
    size_t len;
    char *buf = load("options_to_filter.sip", &len), err[128];
    char outb[8192];
    struct spim_buf out = {outb, 0, sizeof(outb) - 1};
    struct spim_sip_msg m, fwd;
    struct sockaddr_storage src = addr("127.0.0.1", 5060);

    (void)state;
    assert_int_equal(spim_sip_parse(buf, len, &m, err, sizeof(err)), 0);
    assert_true(spim_proxy_is_for_us(&m, &self));
    assert_false(spim_proxy_is_loop(&m, &self));
    /* what we forward carries our Via: seeing it again is a loop */
    assert_int_equal(spim_proxy_forward_request(&m, &self, &src, NULL, &out), 0);
    assert_int_equal(spim_sip_parse(out.p, out.len, &fwd, err, sizeof(err)), 0);
    assert_true(spim_proxy_is_loop(&fwd, &self));
    spim_sip_msg_free(&fwd);
    spim_sip_msg_free(&m);
    free(buf);
}

/* --- the whole datagram path through a filter with a simple judge --- */

static int judged;

static int judge(void *wud, const struct spim_filter_msg *m, struct spim_filter_result *r)
{
    (void)wud;
    judged++;
    r->action = memmem(m->text.p, m->text.len, "prize", 5) != NULL ? 2 : 0;
    snprintf(r->rules, sizeof(r->rules), "%s", r->action ? "PRIZE" : "");
    return 0;
}

static void *wnew(void *ud)
{
    return ud;
}

static const struct spim_filter_ops ops = {.worker_new = wnew, .judge = judge};

struct handled {
    char out[SPIM_SIP_MAX + 8192];
    size_t len;
    int how;
    struct sockaddr_storage dst;
};

static struct spim_filter *filter;
static struct spim_filter_worker *worker;

static void handle_from(const char *file, const char *ip, struct handled *h)
{
    struct spim_filter_config cfg;
    char err[128];
    size_t len;
    char *buf;
    struct spim_filter_out out;
    struct sockaddr_storage src = addr(ip, 5060);

    if (filter == NULL) {
        memset(&cfg, 0, sizeof(cfg));
        snprintf(cfg.listen_host, sizeof(cfg.listen_host), "127.0.0.1");
        cfg.listen_port = 0;
        snprintf(cfg.next_host, sizeof(cfg.next_host), "127.0.0.1");
        cfg.next_port = 5080;
        cfg.self = self;
        cfg.workers = 1;
        cfg.udp_max = 1300;
        assert_int_equal(spim_filter_new(&cfg, &ops, &judged, &filter, err, sizeof(err)), 0);
        worker = spim_filter_worker_new(filter);
        assert_non_null(worker);
    }
    buf = file ? load(file, &len) : calloc(1, 1);
    if (file == NULL)
        len = 0;
    memset(&out, 0, sizeof(out));
    out.buf = (struct spim_buf){h->out, 0, sizeof(h->out) - 1};
    spim_filter_handle(worker, buf, len, &src, 0, &out);
    h->len = out.buf.len;
    h->how = out.how;
    h->dst = out.dst;
    h->out[out.buf.len] = '\0';
    free(buf);
}

static void handle(const char *file, struct handled *h)
{
    handle_from(file, "127.0.0.1", h);
}

static void test_filter_handle_paths(void **state)
{
    struct handled *h = malloc(sizeof(*h));

    (void)state;
    handle("kamailio_message.sip", h); /* no "prize": forwarded */
    assert_non_null(strstr(h->out, "MESSAGE sip:bob@127.0.0.1:5080 SIP/2.0\r\nVia: SIP/2.0/UDP "
                                   "127.0.0.1:5070;branch=z9hG4bKspf"));
    assert_int_equal(ntohs(((struct sockaddr_in *)&h->dst)->sin_port), 5080);
    handle("cpim_message.sip", h); /* "prize": blocked */
    assert_non_null(strstr(h->out, "SIP/2.0 403 Forbidden\r\n"));
    handle("content_length_too_big.sip", h);
    assert_non_null(strstr(h->out, "SIP/2.0 400 Bad Request\r\n"));
    handle("content_length_negative.sip", h);
    assert_non_null(strstr(h->out, "SIP/2.0 400 Bad Request\r\n"));
    handle("truncated.sip", h);
    assert_non_null(strstr(h->out, "SIP/2.0 400 Bad Request\r\n"));
    handle("garbage.sip", h);
    assert_int_equal(h->len, 0);
    handle(NULL, h);
    assert_int_equal(h->len, 0);
    handle("max_forwards_zero.sip", h);
    assert_non_null(strstr(h->out, "SIP/2.0 483 "));
    handle("options_to_filter.sip", h);
    assert_non_null(strstr(h->out, "SIP/2.0 200 OK\r\n"));
    /* an untrusted source: 403, nothing forwarded */
    handle_from("kamailio_message.sip", "192.0.2.7", h);
    assert_non_null(strstr(h->out, "SIP/2.0 403 Source Not Trusted\r\n"));
    assert_int_equal(h->how, SPIM_OUT_UDP);
    assert_int_equal(((struct sockaddr_in *)&h->dst)->sin_addr.s_addr, inet_addr("192.0.2.7"));
    judged = 0;
    handle("iscomposing.sip", h); /* forwarded unscored */
    assert_int_equal(judged, 0);
    assert_non_null(strstr(h->out, "MESSAGE sip:bob@"));
    free(h);
    spim_filter_worker_free(worker);
    spim_filter_free(filter);
}

/* Every input under tests/inputs/sip (fuzzer finds among them) goes through whole. */
static void test_filter_handle_every_input(void **state)
{
    struct handled *h = malloc(sizeof(*h));
    char path[512];
    DIR *d;
    struct dirent *de;
    unsigned n = 0;

    (void)state;
    snprintf(path, sizeof(path), "%s/tests/inputs/sip", SPIM_SOURCE_DIR);
    d = opendir(path);
    assert_non_null(d);
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        handle(de->d_name, h);
        n++;
    }
    closedir(d);
    assert_true(n >= 19);
    free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sip_parse_kamailio_message),
        cmocka_unit_test(test_sip_parse_compact_and_folded),
        cmocka_unit_test(test_sip_identity_headers),
        cmocka_unit_test(test_sip_parse_rejects_bad_input),
        cmocka_unit_test(test_sip_parse_cseq_range),
        cmocka_unit_test(test_sip_uri_of),
        cmocka_unit_test(test_sip_body_kinds),
        cmocka_unit_test(test_sip_body_keeps_nul_bytes),
        cmocka_unit_test(test_sip_files_and_sdp_offers),
        cmocka_unit_test(test_proxy_forward_request_splices),
        cmocka_unit_test(test_proxy_branch_is_stable_and_distinct),
        cmocka_unit_test(test_proxy_received_and_rport),
        cmocka_unit_test(test_proxy_received_rport_overwritten),
        cmocka_unit_test(test_proxy_tag_headers),
        cmocka_unit_test(test_proxy_response_removes_folded_via),
        cmocka_unit_test(test_proxy_answer_403),
        cmocka_unit_test(test_proxy_loop_and_options),
        cmocka_unit_test(test_filter_handle_every_input),
        cmocka_unit_test(test_filter_handle_paths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
