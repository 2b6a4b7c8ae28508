/* check_auth_throttle.c - auth-checker's failure windows and delays. */
#include <check.h>
#include <stdio.h>

#include "auth_throttle.h"

static void setup(void) { throttle_reset(); }

START_TEST(test_user_delays)
{
    time_t t = 1000000;
    int want[] = { 0, 0, 0, 1, 2, 4, 8, 8, 8, 8, -1, -1 };
    for (unsigned i = 0; i < sizeof want / sizeof want[0]; i++) {
        ck_assert_int_eq(throttle_delay("alice", "192.0.2.1", t), want[i]);
        throttle_fail(THROTTLE_USER, "alice", t);
    }
    ck_assert_int_eq(throttle_delay("bob", "192.0.2.1", t), 0);       /* other names unaffected */
    throttle_clear(THROTTLE_USER, "alice");                             /* a success */
    ck_assert_int_eq(throttle_delay("alice", "192.0.2.1", t), 0);
}
END_TEST

START_TEST(test_addr_delays_and_window)
{
    time_t t = 1000000;
    for (int i = 0; i < 10; i++) throttle_fail(THROTTLE_ADDR, "192.0.2.9", t + i);
    ck_assert_int_eq(throttle_delay("x", "192.0.2.9", t + 10), 1);
    ck_assert_int_eq(throttle_delay("x", "192.0.2.8", t + 10), 0);
    ck_assert_int_eq(throttle_delay("x", "", t + 10), 0);               /* no address: no address key */
    for (int i = 10; i < 30; i++) throttle_fail(THROTTLE_ADDR, "192.0.2.9", t + i);
    ck_assert_int_eq(throttle_delay("x", "192.0.2.9", t + 30), -1);
    /* the window slides: failures older than 15 minutes no longer count */
    ck_assert_uint_eq(throttle_count(THROTTLE_ADDR, "192.0.2.9", t + 30), 30);
    ck_assert_uint_eq(throttle_count(THROTTLE_ADDR, "192.0.2.9", t + THROTTLE_WINDOW + 5), 24);
    ck_assert_uint_eq(throttle_count(THROTTLE_ADDR, "192.0.2.9", t + THROTTLE_WINDOW + 30), 0);
    ck_assert_int_eq(throttle_delay("x", "192.0.2.9", t + THROTTLE_WINDOW + 30), 0);
    /* user and address keys are separate even with the same text */
    throttle_fail(THROTTLE_USER, "192.0.2.7", t);
    ck_assert_uint_eq(throttle_count(THROTTLE_ADDR, "192.0.2.7", t), 0);
}
END_TEST

START_TEST(test_limits)
{
    time_t t = 2000000;
    /* the ring keeps THROTTLE_KEEP times per key */
    for (int i = 0; i < 100; i++) throttle_fail(THROTTLE_USER, "many", t);
    ck_assert_uint_eq(throttle_count(THROTTLE_USER, "many", t), THROTTLE_KEEP);
    /* a full table forgets the key idle longest */
    char key[32];
    throttle_fail(THROTTLE_USER, "oldest", t - 10);
    for (int i = 0; i < THROTTLE_SLOTS; i++) {
        snprintf(key, sizeof key, "k%d", i);
        throttle_fail(THROTTLE_USER, key, t);
    }
    ck_assert_uint_eq(throttle_count(THROTTLE_USER, "oldest", t), 0);
    ck_assert_uint_eq(throttle_count(THROTTLE_USER, "k4095", t), 1);
    /* very long keys are cut, not overflowed */
    char longkey[1000];
    for (int i = 0; i < 999; i++) longkey[i] = 'z';
    longkey[999] = 0;
    throttle_fail(THROTTLE_USER, longkey, t);
    ck_assert_uint_eq(throttle_count(THROTTLE_USER, longkey, t), 1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("auth_throttle");
    TCase *core = tcase_create("core");
    tcase_add_checked_fixture(core, setup, 0);
    tcase_add_test(core, test_user_delays);
    tcase_add_test(core, test_addr_delays_and_window);
    suite_add_tcase(s, core);
    TCase *limits = tcase_create("limits");
    tcase_add_checked_fixture(limits, setup, 0);
    tcase_add_test(limits, test_limits);
    suite_add_tcase(s, limits);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
