/* check_log.c - log lines, log_safe, and buf. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"

/* run fn with stderr captured; returns bytes captured */
static size_t capture(void (*fn)(void), char *out, size_t outlen)
{
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    int saved = dup(2);
    dup2(p[1], 2);
    fn();
    dup2(saved, 2);
    close(saved);
    close(p[1]);
    size_t n = 0;
    ssize_t r;
    while (n < outlen - 1 && (r = read(p[0], out + n, outlen - 1 - n)) > 0) n += (size_t)r;
    out[n] = 0;
    close(p[0]);
    return n;
}

static void emit_basic(void)
{
    log_init("/some/dir/smtp-listener");
    log_info("s1", "event=connect client=%s", "192.0.2.1");
    log_warn(NULL, "evil=%s", "a\r\nsmtp-listener: info: forged");
}

START_TEST(test_format)
{
    char out[2048];
    capture(emit_basic, out, sizeof out);
    ck_assert_str_eq(out, "smtp-listener: info: s1 event=connect client=192.0.2.1\n"
                          "smtp-listener: warn: - evil=a??smtp-listener: info: forged\n");
    ck_assert_str_eq(log_program(), "smtp-listener");
}
END_TEST

START_TEST(test_safe)
{
    char d[32];
    ck_assert_str_eq(log_safe(d, sizeof d, "user@x", 6), "user@x");
    ck_assert_str_eq(log_safe(d, sizeof d, "a b=\"\n", 6), "a\\x20b\\x3d\\x22\\x0a");
    ck_assert_str_eq(log_safe(d, sizeof d, "a\0b", 3), "a\\x00b");
}
END_TEST

START_TEST(test_quote)
{
    char d[64];
    ck_assert_str_eq(log_quote(d, sizeof d, "4.2.0 say \"hi\" \\ go", 19), "4.2.0 say \\\"hi\\\" \\\\ go");
    ck_assert_str_eq(log_quote(d, sizeof d, "a\tb\n\x7f", 5), "a?b??");
    ck_assert_str_eq(log_quote(d, sizeof d, "", 0), "");
    /* cut: never half an escape, always the mark */
    char s8[8];
    ck_assert_str_eq(log_quote(s8, sizeof s8, "abc\"defgh", 9), "abc...");
    ck_assert_str_eq(log_quote(s8, sizeof s8, "ab\"defgh", 9), "ab\\\"...");
}
END_TEST

static void emit_long(void)
{
    char big[4000];
    memset(big, 'z', sizeof big - 1);
    big[sizeof big - 1] = 0;
    log_info("id", "v=%s", big);
}

START_TEST(test_limits)
{
    char out[8192];
    size_t n = capture(emit_long, out, sizeof out);
    ck_assert_uint_le(n, LOG_LINE_MAX);
    ck_assert(out[n - 1] == '\n');
    ck_assert(memchr(out, '\n', n) == out + n - 1);   /* exactly one line */
    char d[8];
    char src[100];
    memset(src, 'q', sizeof src);
    log_safe(d, sizeof d, src, sizeof src);
    ck_assert_uint_lt(strlen(d), sizeof d);
    ck_assert(strstr(d, "...") != NULL);
    /* buf: growth and overflow checks */
    struct buf b = BUF_ZERO;
    for (int i = 0; i < 1000; i++) ck_assert(buf_appendf(&b, "%d,", i));
    ck_assert_uint_eq(b.len, strlen(b.s));
    ck_assert(!strncmp(b.s, "0,1,2,", 6));
    ck_assert(buf_copys(&b, "x"));
    ck_assert_str_eq(b.s, "x");
    errno = 0;
    ck_assert(!buf_reserve(&b, SIZE_MAX));
    ck_assert_int_eq(errno, EOVERFLOW);
    size_t r;
    ck_assert(!size_add(SIZE_MAX, 1, &r));
    ck_assert(!size_mul(SIZE_MAX / 2 + 1, 2, &r));
    ck_assert(size_mul(0, SIZE_MAX, &r) && r == 0);
    buf_free(&b);
    ck_assert(b.s == NULL && b.len == 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("log");
    TCase *core = tcase_create("core");
    tcase_add_test(core, test_format);
    tcase_add_test(core, test_safe);
    tcase_add_test(core, test_quote);
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
