/* check_smtp_net.c - relay_networks matching. */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "smtp_net.h"

static struct config_list nets;

static void set(const char *const *v, size_t n)
{
    nets.n = n;
    for (size_t i = 0; i < n; i++) ck_assert((size_t)snprintf(nets.v[i], sizeof nets.v[i], "%s", v[i]) < sizeof nets.v[i]);
}

static int m4(const char *ip)
{
    struct sockaddr_in s;
    memset(&s, 0, sizeof s);
    s.sin_family = AF_INET;
    ck_assert_int_eq(inet_pton(AF_INET, ip, &s.sin_addr), 1);
    return smtp_net_match(&nets, (struct sockaddr *)&s);
}

static int m6(const char *ip)
{
    struct sockaddr_in6 s;
    memset(&s, 0, sizeof s);
    s.sin6_family = AF_INET6;
    ck_assert_int_eq(inet_pton(AF_INET6, ip, &s.sin6_addr), 1);
    return smtp_net_match(&nets, (struct sockaddr *)&s);
}

START_TEST(test_match)
{
    static const char *const v[] = { "127.0.0.0/8", "::1/128", "192.0.2.7", "2001:db8::/32", "10.1.0.0/17" };
    set(v, 5);
    ck_assert(m4("127.0.0.1"));
    ck_assert(m4("127.255.1.2"));
    ck_assert(!m4("128.0.0.1"));
    ck_assert(m4("192.0.2.7"));
    ck_assert(!m4("192.0.2.8"));
    ck_assert(m4("10.1.127.255"));
    ck_assert(!m4("10.1.128.0"));
    ck_assert(m6("::1"));
    ck_assert(!m6("::2"));
    ck_assert(m6("2001:db8:ffff::1"));
    ck_assert(!m6("2001:db9::1"));
    ck_assert(m6("::ffff:127.0.0.1"));     /* v4-mapped: matched as v4 */
    ck_assert(!m6("::ffff:8.8.8.8"));
}
END_TEST

START_TEST(test_bad_entries)
{
    ck_assert(smtp_net_valid("0.0.0.0/0"));
    ck_assert(smtp_net_valid("::/0"));
    ck_assert(!smtp_net_valid("127.0.0.0/33"));
    ck_assert(!smtp_net_valid("::1/129"));
    ck_assert(!smtp_net_valid("127.0.0.0/"));
    ck_assert(!smtp_net_valid("127.0.0.0/8x"));
    ck_assert(!smtp_net_valid("localhost"));
    ck_assert(!smtp_net_valid(""));
    static const char *const v[] = { "nonsense/8", "0.0.0.0/0" };
    set(v, 1);
    ck_assert(!m4("127.0.0.1"));            /* a bad entry never matches */
    set(v, 2);
    ck_assert(m4("203.0.113.9"));           /* /0 matches everything of its family */
    ck_assert(!m6("2001:db8::1"));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("smtp_net");
    TCase *core = tcase_create("core");
    tcase_add_test(core, test_match);
    suite_add_tcase(s, core);
    TCase *limits = tcase_create("limits");
    tcase_add_test(limits, test_bad_entries);
    suite_add_tcase(s, limits);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
