/* check_authproto.c - auth-checker records: framing, strict parsing, the client. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "authproto.h"

START_TEST(test_request_roundtrip)
{
    struct auth_request q, p;
    char rec[AUTH_RECORD_MAX];
    size_t len;
    ck_assert(authproto_request_set(&q, AUTH_SVC_POP3, "alice", 5, "pa ss:", 6, "192.0.2.1"));
    ck_assert(authproto_request_format(&q, rec, sizeof rec, &len));
    ck_assert_uint_eq(len, 6 + 7 + 8 + 11);
    ck_assert(!memcmp(rec, "Qpop3\0Ualice\0Ppa ss:\0A192.0.2.1\0", len));
    ck_assert(authproto_request_parse(rec, len, &p));
    ck_assert_int_eq(p.service, AUTH_SVC_POP3);
    ck_assert_str_eq(p.user, "alice");
    ck_assert_uint_eq(p.passlen, 6);
    ck_assert_str_eq(p.addr, "192.0.2.1");
    authproto_request_wipe(&p);
    ck_assert_uint_eq(p.passlen, 0);
    ck_assert_int_eq(p.pass[0], 0);
}
END_TEST

START_TEST(test_reply_roundtrip)
{
    struct auth_reply r, p;
    char rec[AUTH_RECORD_MAX];
    size_t len;
    memset(&r, 0, sizeof r);
    r.result = AUTH_OK;
    snprintf(r.name, sizeof r.name, "alice");
    r.uid = 20000;
    r.gid = 20001;
    snprintf(r.maildir, sizeof r.maildir, "/r/mail/alice/Maildir");
    ck_assert(authproto_reply_format(&r, rec, sizeof rec, &len));
    ck_assert(authproto_reply_parse(rec, len, &p));
    ck_assert_int_eq(p.result, AUTH_OK);
    ck_assert_uint_eq(p.uid, 20000);
    ck_assert_uint_eq(p.gid, 20001);
    ck_assert_str_eq(p.maildir, "/r/mail/alice/Maildir");
    ck_assert(authproto_reply_parse("Rbad\0", 5, &p));
    ck_assert_int_eq(p.result, AUTH_BAD);
    ck_assert(authproto_reply_parse("Rtemp\0", 6, &p));
    ck_assert_int_eq(p.result, AUTH_TEMP);
}
END_TEST

START_TEST(test_refused_records)
{
    struct auth_request q;
    struct auth_reply r;
    static const struct { const char *s; size_t n; } bad[] = {
        { "Qpop3\0Ua\0Pb\0", 12 },                  /* no A */
        { "Qpop3\0Ua\0Pb\0A1\0Ux\0", 19 },          /* U twice */
        { "Qimap\0Ua\0Pb\0A1\0", 15 },              /* unknown service */
        { "Qpop3\0Ua\0Pb\0A1\0Zz\0", 18 },          /* unknown letter */
        { "Qpop3\0Ua\0Pb\0A1", 14 },                /* not NUL-ended */
        { "Qpop3\0Ua\0\0Pb\0A1\0", 16 },            /* empty field */
        { "", 0 },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(!authproto_request_parse(bad[i].s, bad[i].n, &q), "case %zu", i);
    ck_assert(!authproto_reply_parse("Rok\0", 4, &r));                     /* ok without fields */
    ck_assert(!authproto_reply_parse("Rok\0Na\0u0x\0g1\0m/m\0", 19, &r));  /* bad uid */
    ck_assert(!authproto_reply_parse("Rok\0Na\0u1\0g1\0mrel\0", 19, &r));  /* relative maildir */
    ck_assert(!authproto_reply_parse("Rbad\0Na\0", 8, &r));               /* extra field */
    ck_assert(!authproto_reply_parse("Rmaybe\0", 7, &r));
    ck_assert(!authproto_request_set(&q, AUTH_SVC_SMTP, "a\0b", 3, "p", 1, ""));
}
END_TEST

START_TEST(test_client_over_socketpair)
{
    int sp[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sp), 0);
    ck_assert_int_eq(write(sp[1], "Rbad\0", 5), 5);  /* queued reply */
    struct auth_request q;
    struct auth_reply r;
    ck_assert(authproto_request_set(&q, AUTH_SVC_SMTP, "u", 1, "p", 1, "::1"));
    ck_assert(authproto_ask(sp[0], &q, &r, 1000));
    ck_assert_int_eq(r.result, AUTH_BAD);
    char got[64];
    ck_assert_int_eq(read(sp[1], got, sizeof got), 17);   /* "Qsmtp\0Uu\0Pp\0A::1\0" */
    ck_assert(!authproto_ask(sp[0], &q, &r, 50));   /* no reply: timeout */
    ck_assert_int_eq(errno, ETIMEDOUT);
    close(sp[0]);
    close(sp[1]);
}
END_TEST

START_TEST(test_limits)
{
    static char user[AUTH_USER_MAX + 2], pass[AUTH_PASS_MAX + 2];
    struct auth_request q, p;
    char rec[AUTH_RECORD_MAX];
    size_t len;
    memset(user, 'u', sizeof user);
    memset(pass, 'p', sizeof pass);
    ck_assert(authproto_request_set(&q, AUTH_SVC_POP3, user, AUTH_USER_MAX, pass, AUTH_PASS_MAX, "addr"));
    ck_assert(authproto_request_format(&q, rec, sizeof rec, &len));
    ck_assert_uint_le(len, AUTH_RECORD_MAX);
    ck_assert(authproto_request_parse(rec, len, &p));
    ck_assert_uint_eq(p.userlen, AUTH_USER_MAX);
    ck_assert(!authproto_request_set(&q, AUTH_SVC_POP3, user, AUTH_USER_MAX + 1, pass, 1, ""));
    ck_assert(!authproto_request_set(&q, AUTH_SVC_POP3, user, 1, pass, AUTH_PASS_MAX + 1, ""));
    /* a hand-made record with an over-long user is refused */
    static char big[AUTH_RECORD_MAX];
    memset(big, 'x', sizeof big);
    memcpy(big, "Qpop3\0U", 7);
    big[7 + AUTH_USER_MAX + 1] = 0;
    memcpy(big + 7 + AUTH_USER_MAX + 2, "Pp\0A\0", 5);
    ck_assert(!authproto_request_parse(big, 7 + AUTH_USER_MAX + 2 + 5, &p));
    ck_assert(!authproto_request_parse(big, AUTH_RECORD_MAX + 1, &p));
    /* output buffer too small */
    ck_assert(!authproto_request_format(&q, rec, 10, &len));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("authproto");
    TCase *core = tcase_create("core");
    tcase_add_test(core, test_request_roundtrip);
    tcase_add_test(core, test_reply_roundtrip);
    tcase_add_test(core, test_refused_records);
    tcase_add_test(core, test_client_over_socketpair);
    suite_add_tcase(s, core);
    TCase *limits = tcase_create("limits");
    tcase_add_test(limits, test_limits);
    suite_add_tcase(s, limits);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
