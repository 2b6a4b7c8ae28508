/* check_retry.c - the retry schedule. */
#include <check.h>

#include "retry.h"

#define BIRTH 1764120000
#define LIFE (5ULL * 86400)

START_TEST(test_isqrt)
{
    ck_assert_uint_eq(retry_isqrt(0), 0);
    ck_assert_uint_eq(retry_isqrt(1), 1);
    ck_assert_uint_eq(retry_isqrt(399), 19);
    ck_assert_uint_eq(retry_isqrt(400), 20);
    ck_assert_uint_eq(retry_isqrt(1ULL << 62), 1ULL << 31);
    ck_assert_uint_eq(retry_isqrt(~0ULL), 4294967295ULL);
}
END_TEST

START_TEST(test_qmail_schedule)
{
    /* first failure at birth: next at birth + 20^2 */
    ck_assert_int_eq(retry_next(BIRTH, BIRTH, LIFE), BIRTH + 400);
    /* at age 400: (20 + 20)^2 = 1600 */
    ck_assert_int_eq(retry_next(BIRTH, BIRTH + 400, LIFE), BIRTH + 1600);
    ck_assert_int_eq(retry_next(BIRTH, BIRTH + 1600, LIFE), BIRTH + 3600);
    /* gaps grow: each next try is later than the previous gap */
    time_t t = BIRTH, prev_gap = 0;
    for (int i = 0; i < 12; i++) {
        time_t n = retry_next(BIRTH, t, LIFE);
        ck_assert_int_gt(n, t);
        ck_assert_int_ge(n - t, prev_gap);
        prev_gap = n - t;
        t = n;
    }
}
END_TEST

START_TEST(test_expiry_and_delay)
{
    ck_assert(!retry_expired(BIRTH, BIRTH + LIFE - 1, LIFE));
    ck_assert(retry_expired(BIRTH, BIRTH + LIFE, LIFE));
    ck_assert(!retry_expired(BIRTH, BIRTH - 100, LIFE));   /* clock went back */
    /* the delay notice: once, at the first failure after 4 hours */
    ck_assert(!retry_delay_due(BIRTH, 0, BIRTH + 60, LIFE));
    ck_assert(retry_delay_due(BIRTH, BIRTH + 3 * 3600, BIRTH + RETRY_DELAY_NOTICE + 5, LIFE));
    ck_assert(retry_delay_due(BIRTH, 0, BIRTH + RETRY_DELAY_NOTICE, LIFE));
    /* a try scheduled by a failure at or after the mark: not again */
    time_t after = retry_next(BIRTH, BIRTH + RETRY_DELAY_NOTICE, LIFE);
    ck_assert(!retry_delay_due(BIRTH, after, after, LIFE));
    ck_assert(!retry_delay_due(BIRTH, after, after - 600, LIFE));    /* flushed early */
}
END_TEST

/* failures at the tries the schedule makes, from the first at birth:
 * how many delay notices */
static int notices(time_t (*when)(time_t scheduled, time_t prev), unsigned long long life)
{
    time_t t = BIRTH, scheduled = 0;
    int n = 0;
    while (!retry_expired(BIRTH, t, life)) {
        n += retry_delay_due(BIRTH, scheduled, t, life);
        scheduled = retry_next(BIRTH, t, life);
        t = when(scheduled, t);
    }
    return n;
}

static time_t on_time(time_t scheduled, time_t prev) { (void)prev; return scheduled; }
static time_t late(time_t scheduled, time_t prev) { (void)prev; return scheduled + 37; }
/* an operator's flush halfway between tries */
static time_t flushed(time_t scheduled, time_t prev)
{
    return scheduled - prev > 120 ? prev + (scheduled - prev) / 2 : scheduled;
}

START_TEST(test_delay_notice_once_on_the_schedule)
{
    /* the try the schedule makes at 4 h exactly (birth + 120^2) was
     * scheduled by a failure before the mark, yet "scheduled < mark" was
     * the test: on time, the notice never came */
    ck_assert_int_eq(notices(on_time, LIFE), 1);
    ck_assert_int_eq(notices(late, LIFE), 1);
    ck_assert_int_eq(notices(flushed, LIFE), 1);
    ck_assert_int_eq(notices(on_time, 86400), 1);
    /* a lifetime shorter than the mark: the message fails first */
    ck_assert_int_eq(notices(on_time, 3 * 3600), 0);
}
END_TEST

START_TEST(test_limits_caps)
{
    /* old message: the gap is capped at RETRY_GAP_MAX */
    time_t now = BIRTH + 3 * 86400;
    ck_assert_int_eq(retry_next(BIRTH, now, LIFE) - now, RETRY_GAP_MAX);
    /* never past the expiry: the last try is at birth + lifetime */
    now = BIRTH + LIFE - 600;
    ck_assert_int_eq(retry_next(BIRTH, now, LIFE), BIRTH + (time_t)LIFE);
    /* a short lifetime */
    ck_assert_int_eq(retry_next(BIRTH, BIRTH, 120), BIRTH + 120);
    /* past the expiry (a late try): still in the future */
    ck_assert_int_gt(retry_next(BIRTH, BIRTH + LIFE + 10, LIFE), BIRTH + (time_t)LIFE + 10);
    /* clock before birth: age 0 */
    ck_assert_int_eq(retry_next(BIRTH, BIRTH - 50, LIFE), BIRTH - 50 + 400);
    /* a huge age does not overflow */
    now = BIRTH + (time_t)(1LL << 45);
    ck_assert_int_eq(retry_next(BIRTH, now, ~0ULL) - now, RETRY_GAP_MAX);
    /* the minimum gap holds even where the formula is close */
    ck_assert_int_ge(retry_next(BIRTH, BIRTH + 399, LIFE) - (BIRTH + 399), RETRY_GAP_MIN);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("retry");
    TCase *core = tcase_create("core");
    tcase_add_test(core, test_isqrt);
    tcase_add_test(core, test_qmail_schedule);
    tcase_add_test(core, test_expiry_and_delay);
    tcase_add_test(core, test_delay_notice_once_on_the_schedule);
    suite_add_tcase(s, core);
    TCase *limits = tcase_create("limits");
    tcase_add_test(limits, test_limits_caps);
    suite_add_tcase(s, limits);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
