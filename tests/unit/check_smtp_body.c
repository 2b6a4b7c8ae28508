/* check_smtp_body.c - the message body stream: CRLF -> LF, bare CR/LF,
 * size and hop counting, BDAT octets split anywhere. */
#include <check.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "smtp_body.h"

static int pp[2];
static struct smtp_msgbody b;

static void setup(void)
{
    ck_assert_int_eq(pipe(pp), 0);
    fcntl(pp[1], F_SETFL, O_NONBLOCK);
    fcntl(pp[0], F_SETFL, O_NONBLOCK);
    fcntl(pp[1], F_SETPIPE_SZ, 1 << 20);
}

static void teardown(void) { close(pp[0]); if (pp[1] >= 0) close(pp[1]); }

static char *drain(size_t *n)
{
    static char out[1 << 20];
    ssize_t r = read(pp[0], out, sizeof out - 1);
    *n = r > 0 ? (size_t)r : 0;
    out[*n] = 0;
    return out;
}

START_TEST(test_lines)
{
    smtp_body_init(&b, pp[1], 1000, 1000);
    smtp_body_line(&b, "Received: x", 11, IO_EOL_CRLF);
    smtp_body_line(&b, "Subject: s", 10, IO_EOL_CRLF);
    smtp_body_line(&b, "", 0, IO_EOL_CRLF);
    smtp_body_line(&b, "Received: in body", 17, IO_EOL_CRLF);
    smtp_body_line(&b, "long ", 5, IO_EOL_NONE);
    smtp_body_line(&b, "line", 4, IO_EOL_CRLF);
    ck_assert(smtp_body_finish(&b));
    size_t n;
    char *out = drain(&n);
    ck_assert_str_eq(out, "Received: x\nSubject: s\n\nReceived: in body\nlong line\n");
    ck_assert_uint_eq(b.size, n);
    ck_assert_uint_eq(b.hops, 1);
    ck_assert(!b.bare_cr && !b.bare_lf && !b.too_big);
}
END_TEST

START_TEST(test_octets_any_split)
{
    const char msg[] = "A: 1\r\nreceived: 2\r\n\r\nbody\r\nend\r\n";
    for (size_t cut = 0; cut <= sizeof msg - 1; cut++) {
        smtp_body_init(&b, pp[1], 1000, 1000);
        smtp_body_octets(&b, msg, cut);
        smtp_body_octets(&b, msg + cut, sizeof msg - 1 - cut);
        ck_assert(smtp_body_finish(&b));
        size_t n;
        char *out = drain(&n);
        ck_assert_str_eq(out, "A: 1\nreceived: 2\n\nbody\nend\n");
        ck_assert_uint_eq(b.hops, 1);
        ck_assert_msg(!b.bare_cr && !b.bare_lf, "cut %zu", cut);
    }
}
END_TEST

START_TEST(test_bare_and_size)
{
    smtp_body_init(&b, pp[1], 1000, 1000);
    smtp_body_octets(&b, "a\nb", 3);
    smtp_body_finish(&b);
    ck_assert(b.bare_lf && !b.bare_cr);
    size_t n;
    ck_assert_str_eq(drain(&n), "a\nb\n");   /* a bare LF is a line end */
    smtp_body_init(&b, pp[1], 1000, 1000);
    smtp_body_octets(&b, "a\rb\r\n", 5);
    smtp_body_finish(&b);
    ck_assert(b.bare_cr && !b.bare_lf);
    drain(&n);
    smtp_body_init(&b, pp[1], 1000, 1000);
    smtp_body_octets(&b, "a\r", 2);          /* CR at the very end */
    smtp_body_finish(&b);
    ck_assert(b.bare_cr);
    drain(&n);
    smtp_body_init(&b, pp[1], 1000, 1000);
    smtp_body_line(&b, "x", 1, IO_EOL_LF);
    ck_assert(b.bare_lf && !b.bare_cr);
    smtp_body_line(&b, "y", 1, IO_EOL_CR);
    ck_assert(b.bare_cr);
    smtp_body_finish(&b);
    drain(&n);
    /* size: stops writing past the limit but keeps counting */
    char big[3000];
    memset(big, 'x', sizeof big);
    smtp_body_init(&b, pp[1], 1000, 1000);
    smtp_body_line(&b, big, sizeof big, IO_EOL_CRLF);
    ck_assert(smtp_body_finish(&b));
    ck_assert(b.too_big);
    ck_assert_uint_eq(b.size, 3001);
    drain(&n);
    ck_assert_uint_eq(n, 1000);
    /* a reader that went away */
    smtp_body_init(&b, pp[1], 100000, 1000);
    close(pp[0]);
    pp[0] = open("/dev/null", O_RDONLY);
    smtp_body_line(&b, big, sizeof big, IO_EOL_CRLF);
    ck_assert(!smtp_body_finish(&b));
    ck_assert(b.write_failed);
}
END_TEST

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    Suite *s = suite_create("smtp_body");
    TCase *core = tcase_create("core");
    tcase_add_checked_fixture(core, setup, teardown);
    tcase_add_test(core, test_lines);
    tcase_add_test(core, test_octets_any_split);
    suite_add_tcase(s, core);
    TCase *limits = tcase_create("limits");
    tcase_add_checked_fixture(limits, setup, teardown);
    tcase_add_test(limits, test_bare_and_size);
    suite_add_tcase(s, limits);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
