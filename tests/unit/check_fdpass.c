/* check_fdpass.c - datagrams with descriptors attached. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fdpass.h"

static int sp[2];

static void setup(void) { ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sp), 0); }
static void teardown(void) { close(sp[0]); close(sp[1]); }

static int same_file(int a, int b)
{
    struct stat x, y;
    return fstat(a, &x) == 0 && fstat(b, &y) == 0 && x.st_dev == y.st_dev && x.st_ino == y.st_ino;
}

START_TEST(test_roundtrip)
{
    int fds[2] = { open("/dev/null", O_RDONLY), open("/", O_RDONLY | O_DIRECTORY) };
    struct iovec iov[2] = { { .iov_base = "ab", .iov_len = 2 }, { .iov_base = "c", .iov_len = 1 } };
    size_t sent;
    char buf[16];
    struct fdpass_in in;
    ck_assert(fdpass_send(sp[0], iov, 2, fds, 2, &sent));
    ck_assert_uint_eq(sent, 3);
    ck_assert(fdpass_wait(sp[1], 1000));
    ck_assert(fdpass_recv(sp[1], buf, sizeof buf, &in));
    ck_assert_uint_eq(in.len, 3);
    ck_assert(!memcmp(buf, "abc", 3));
    ck_assert_uint_eq(in.nfd, 2);
    ck_assert(!in.truncated && !in.too_many && !in.foreign);
    ck_assert(same_file(in.fd[0], fds[0]) && same_file(in.fd[1], fds[1]));
    ck_assert(fcntl(in.fd[0], F_GETFD) & FD_CLOEXEC);
    fdpass_close(&in);
    ck_assert_uint_eq(in.nfd, 0);
    close(fds[0]);
    close(fds[1]);
    /* nothing waiting: the wait times out; the peer gone: a 0-byte read */
    ck_assert(!fdpass_wait(sp[1], 50));
    ck_assert_int_eq(errno, ETIMEDOUT);
    close(sp[0]);
    sp[0] = open("/dev/null", O_RDONLY);   /* teardown closes something */
    ck_assert(fdpass_recv(sp[1], buf, sizeof buf, &in));
    ck_assert_uint_eq(in.len, 0);
    ck_assert_uint_eq(in.nfd, 0);
}
END_TEST

START_TEST(test_limits)
{
    int fds[FDPASS_MAX + 1];
    struct iovec iov = { .iov_base = "0123456789", .iov_len = 10 };
    size_t sent;
    char buf[4];
    struct fdpass_in in;
    for (size_t i = 0; i <= FDPASS_MAX; i++) fds[i] = open("/dev/null", O_RDONLY);
    /* more than FDPASS_MAX is refused on the way out */
    ck_assert(!fdpass_send(sp[0], &iov, 1, fds, FDPASS_MAX + 1, &sent));
    ck_assert_int_eq(errno, EINVAL);
    /* a datagram longer than the buffer is reported truncated */
    ck_assert(fdpass_send(sp[0], &iov, 1, fds, FDPASS_MAX, &sent));
    ck_assert(fdpass_recv(sp[1], buf, sizeof buf, &in));
    ck_assert(in.truncated);
    ck_assert_uint_eq(in.len, sizeof buf);
    ck_assert_uint_eq(in.nfd, FDPASS_MAX);
    fdpass_close(&in);
    for (size_t i = 0; i <= FDPASS_MAX; i++) close(fds[i]);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("fdpass");
    TCase *core = tcase_create("core");
    tcase_add_checked_fixture(core, setup, teardown);
    tcase_add_test(core, test_roundtrip);
    suite_add_tcase(s, core);
    TCase *limits = tcase_create("limits");
    tcase_add_checked_fixture(limits, setup, teardown);
    tcase_add_test(limits, test_limits);
    suite_add_tcase(s, limits);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
