/* check_utf8.c - validating UTF-8: one character, and whole strings. */
#include <check.h>
#include <string.h>

#include "utf8.h"

static size_t len_of(const char *s) { return utf8_char((const unsigned char *)s, strlen(s)); }

START_TEST(test_valid)
{
    ck_assert_uint_eq(len_of("\xc3\xa9"), 2);            /* e acute */
    ck_assert_uint_eq(len_of("\xe2\x82\xac"), 3);        /* euro sign */
    ck_assert_uint_eq(len_of("\xf0\x9f\x93\xab"), 4);    /* mailbox emoji */
    ck_assert_uint_eq(len_of("\xc3\xa9xyz"), 2);         /* only the first character */
    ck_assert_uint_eq(len_of("a"), 0);                   /* ASCII is not this function's */
    /* whole strings */
    ck_assert(utf8_valid("EHLO h\xc3\xa9llo.test", 16));
    ck_assert(utf8_valid("", 0));
    ck_assert(!utf8_valid("EHLO h\xe9llo.test", 15));   /* Latin-1, not UTF-8 */
    ck_assert(!utf8_valid("NOOP \xff\xfe", 7));
    ck_assert(!utf8_valid("x\xc3", 2));                  /* cut at the end */
    ck_assert(!utf8_valid("x\xc3\xa9", 2));             /* n bounds it */
    ck_assert(utf8_valid("x\xc3\xa9", 3));
}
END_TEST

START_TEST(test_limits)
{
    ck_assert_uint_eq(len_of("\xc2\x80"), 0);            /* C1 control U+0080 */
    ck_assert_uint_eq(len_of("\xc2\xa0"), 2);            /* U+00A0, the first allowed */
    ck_assert_uint_eq(len_of("\xc0\xaf"), 0);            /* overlong '/' */
    ck_assert_uint_eq(len_of("\xe0\x80\xaf"), 0);        /* overlong, 3 octets */
    ck_assert_uint_eq(len_of("\xed\xa0\x80"), 0);        /* surrogate U+D800 */
    ck_assert_uint_eq(len_of("\xf4\x8f\xbf\xbf"), 4);    /* U+10FFFF, the last */
    ck_assert_uint_eq(len_of("\xf4\x90\x80\x80"), 0);    /* past U+10FFFF */
    ck_assert_uint_eq(len_of("\xf5\x80\x80\x80"), 0);
    ck_assert_uint_eq(len_of("\xe2\x82"), 0);            /* cut short */
    ck_assert_uint_eq(len_of("\xe2\x28\xa1"), 0);        /* bad continuation */
    ck_assert_uint_eq(len_of("\x80"), 0);                /* a lone continuation octet */
    ck_assert_uint_eq(utf8_char((const unsigned char *)"\xc3\xa9", 1), 0);  /* n bounds it */
}
END_TEST

int main(void)
{
    Suite *s = suite_create("utf8");
    TCase *core = tcase_create("core");
    tcase_add_test(core, test_valid);
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
