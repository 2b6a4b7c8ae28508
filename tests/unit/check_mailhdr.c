/* check_mailhdr.c - header fields and address lists. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "mailhdr.h"

static char got[1024];

static int collect(void *ctx, const char *addr)
{
    (void)ctx;
    size_t n = strlen(got);
    snprintf(got + n, sizeof got - n, "%s%s", n ? "|" : "", addr);
    return 1;
}

static int addrs(const char *s)
{
    got[0] = 0;
    return mailhdr_addresses(s, strlen(s), collect, NULL);
}

START_TEST(test_fields)
{
    size_t n;
    ck_assert(mailhdr_is_field("To: a@b", 7, &n));
    ck_assert_uint_eq(n, 2);
    ck_assert(mailhdr_name_is("To", n, "to"));
    ck_assert(!mailhdr_name_is("To", n, "tox"));
    ck_assert(mailhdr_is_field("X-Mailer:x", 10, &n));
    ck_assert(!mailhdr_is_field("hello world: x", 14, &n));
    ck_assert(!mailhdr_is_field(": x", 3, &n));
    ck_assert(!mailhdr_is_field("no colon", 8, &n));
    ck_assert(mailhdr_is_continuation("\tmore", 5));
    ck_assert(!mailhdr_is_continuation("more", 4));
}
END_TEST

START_TEST(test_addresses)
{
    ck_assert(addrs(" bob@example.test"));
    ck_assert_str_eq(got, "bob@example.test");
    ck_assert(addrs(" Bob Smith <bob@x>, \"Doe, Jane\" <jane@y>,carol@z (Carol, C.)"));
    ck_assert_str_eq(got, "bob@x|jane@y|carol@z");
    ck_assert(addrs(" friends: a@x, b@y;, c@z"));
    ck_assert_str_eq(got, "a@x|b@y|c@z");
    ck_assert(addrs(" undisclosed-recipients:;"));
    ck_assert_str_eq(got, "");
    ck_assert(addrs(" a@x,\n\tb@y\r\n"));
    ck_assert_str_eq(got, "a@x|b@y");
    ck_assert(addrs(" \"john doe\"@x"));
    ck_assert_str_eq(got, "\"john doe\"@x");
    ck_assert(addrs(" bob"));
    ck_assert_str_eq(got, "bob");
}
END_TEST

START_TEST(test_date_utc)
{
    char d[64];
    ck_assert(mailhdr_date_utc(0, d, sizeof d));
    ck_assert_str_eq(d, "Thu, 01 Jan 1970 00:00:00 +0000");
    ck_assert(mailhdr_date_utc(1795683885, d, sizeof d));
    ck_assert_str_eq(d, "Thu, 26 Nov 2026 09:04:45 +0000");
    ck_assert(mailhdr_date_utc(951782400, d, sizeof d));          /* a leap day */
    ck_assert_str_eq(d, "Tue, 29 Feb 2000 00:00:00 +0000");
    ck_assert(mailhdr_date_utc(1795683885, d, 32));               /* 31 characters and the NUL */
    errno = 0;
    ck_assert(!mailhdr_date_utc(1795683885, d, 31));
    ck_assert_int_eq(errno, ENOSPC);
    errno = 0;
    ck_assert(!mailhdr_date_utc((time_t)400000000000LL, d, sizeof d));   /* year > 9999 */
    ck_assert_int_eq(errno, EINVAL);
}
END_TEST

START_TEST(test_limits)
{
    ck_assert(!addrs(" <a@x"));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert(!addrs(" \"unterminated <a@x>"));
    ck_assert(!addrs(" a@x (open comment"));
    char big[600];
    memset(big, 'a', sizeof big);
    big[sizeof big - 1] = 0;
    ck_assert(!addrs(big));
    ck_assert_int_eq(errno, EINVAL);
    big[MAILHDR_ADDR_MAX] = 0;   /* exactly the maximum */
    ck_assert(addrs(big));
    ck_assert_uint_eq(strlen(got), MAILHDR_ADDR_MAX);
}
END_TEST

/* found by fuzzing (fuzz_mailhdr): a NUL inside an address cut it short, so
 * "To: bob\0@example.net" gave the local recipient "bob" */
START_TEST(test_nul_in_address)
{
    static const char v[] = " bob\0@example.net, carol@x";
    got[0] = 0;
    errno = 0;
    ck_assert(!mailhdr_addresses(v, sizeof v - 1, collect, NULL));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_str_eq(got, "");
    static const char w[] = " <a\0b@x>";
    ck_assert(!mailhdr_addresses(w, sizeof w - 1, collect, NULL));
    ck_assert_str_eq(got, "");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("mailhdr");
    TCase *core = tcase_create("core");
    tcase_add_test(core, test_fields);
    tcase_add_test(core, test_addresses);
    tcase_add_test(core, test_date_utc);
    suite_add_tcase(s, core);
    TCase *limits = tcase_create("limits");
    tcase_add_test(limits, test_limits);
    tcase_add_test(limits, test_nul_in_address);
    suite_add_tcase(s, limits);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
