/* check_inject_client.c - running queue-inject: what reaches its fd 0 and
 * fd 1, the id coming back, exit codes. A stand-in ROOT/bin/queue-inject
 * (a shell script) records what it got. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "inject_client.h"

static char root[64];

static void write_file(const char *name, const char *text, mode_t mode)
{
    char p[256];
    snprintf(p, sizeof p, "%s/%s", root, name);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, mode);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

static size_t read_file(const char *name, char *b, size_t cap)
{
    char p[256];
    snprintf(p, sizeof p, "%s/%s", root, name);
    int fd = open(p, O_RDONLY);
    ck_assert_int_ge(fd, 0);
    ssize_t n = read(fd, b, cap);
    close(fd);
    ck_assert_int_ge(n, 0);
    return (size_t)n;
}

static void setup(void)
{
    char p[128];
    snprintf(root, sizeof root, "/tmp/check_inject_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(root));
    snprintf(p, sizeof p, "%s/bin", root);
    ck_assert_int_eq(mkdir(p, 0755), 0);
    /* message from fd 0, envelope from fd 1 (a socket), then the id back */
    write_file("bin/queue-inject",
             "#!/bin/sh\nd=$(dirname \"$0\")/..\ncat > \"$d/msg\"\ncat <&1 > \"$d/env\"\n"
             "code=$(cat \"$d/code\" 2>/dev/null || echo 0)\n"
             "[ \"$code\" = 0 ] && printf '6926A1C0F00DBA5E\\n' >&1\nexit $code\n", 0755);
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    ck_assert_int_eq(system(cmd), 0);
}

START_TEST(test_from_memory)
{
    const char *rc[2] = { "a@example.test", "b@far.test" };
    struct inject_req r = { "", "queue-manager bounce", 1, rc, 2, NULL, 0, "Subject: x\n\nhi\n", 15, -1, NULL, NULL, NULL, NULL, 0 };
    char id[32], b[512];
    int status;
    ck_assert(inject_run(root, &r, id, &status));
    ck_assert_int_eq(status, 0);
    ck_assert_str_eq(id, "6926A1C0F00DBA5E");
    ck_assert_uint_eq(read_file("msg", b, sizeof b), 15);
    ck_assert(!memcmp(b, "Subject: x\n\nhi\n", 15));
    static const char want[] = "F\0Cqueue-manager bounce\0B8BITMIME\0Ta@example.test\t\t\0Tb@far.test\t\t\0";
    size_t n = read_file("env", b, sizeof b);
    ck_assert_uint_eq(n, sizeof want);     /* the closing empty record is the final NUL */
    ck_assert(!memcmp(b, want, sizeof want));
}
END_TEST

START_TEST(test_from_fd_with_prefix_on_low_fds)
{
    /* the caller's fd 0 is closed: the message memfd lands on 0, which must
     * still reach queue-inject (a bug found by the forwarding test) */
    char path[] = "/tmp/check_inject_msg_XXXXXX", id[32], b[512];
    int fd = mkstemp(path);
    unlink(path);
    ck_assert_int_eq(write(fd, "body\n", 5), 5);
    int saved0 = dup(0);
    close(0);
    const char *rc[1] = { "x@far.test" };
    struct inject_req r = { "bob@example.test", "", 0, rc, 1, "Delivered-To: f@example.test\n", 29, NULL, 0, fd,
                            NULL, NULL, NULL, NULL, 0 };
    int status;
    int ok = inject_run(root, &r, id, &status);
    dup2(saved0, 0);
    close(saved0);
    ck_assert(ok);
    size_t n = read_file("msg", b, sizeof b);
    ck_assert_uint_eq(n, 34);
    ck_assert(!memcmp(b, "Delivered-To: f@example.test\nbody\n", 34));
    static const char want[] = "Fbob@example.test\0Tx@far.test\t\t\0";
    ck_assert_uint_eq(read_file("env", b, sizeof b), sizeof want);
    ck_assert(!memcmp(b, want, sizeof want));
    close(fd);
}
END_TEST

START_TEST(test_dsn_parameters)
{
    /* a forwarded copy: SMTPUTF8, ENVID, RET and each recipient's NOTIFY and ORCPT */
    const char *rc[2] = { "a@far.test", "b@far.test" };
    struct inject_req r = { .sender = "bob@example.test", .rcpt = rc, .nrcpt = 2, .msg = "m\n", .msglen = 2,
                            .msgfd = -1, .envid = "Q+2B1", .ret = "HDRS", .notify = "FAILURE",
                            .orcpt = "rfc822;fwd@example.test", .smtputf8 = 1 };
    char id[32], b[512];
    int status;
    ck_assert(inject_run(root, &r, id, &status));
    static const char want[] = "Fbob@example.test\0U\0EQ+2B1\0NHDRS\0"
                               "Ta@far.test\tFAILURE\trfc822;fwd@example.test\0"
                               "Tb@far.test\tFAILURE\trfc822;fwd@example.test\0";
    ck_assert_uint_eq(read_file("env", b, sizeof b), sizeof want);
    ck_assert(!memcmp(b, want, sizeof want));
}
END_TEST

START_TEST(test_limits_exit_codes)
{
    const char *rc[1] = { "x@far.test" };
    struct inject_req r = { "a@b", "", 0, rc, 1, NULL, 0, "m\n", 2, -1, NULL, NULL, NULL, NULL, 0 };
    char id[32];
    int status;
    write_file("code", "53\n", 0644);
    ck_assert(!inject_run(root, &r, id, &status));
    ck_assert_int_eq(status, 53);
    ck_assert_int_eq(errno, ENOSPC);
    ck_assert_str_eq(id, "");
    write_file("code", "54\n", 0644);
    ck_assert(!inject_run(root, &r, id, &status));
    ck_assert_int_eq(status, 54);
    ck_assert_int_eq(errno, EIO);
    /* no recipients: refused before anything runs */
    r.nrcpt = 0;
    ck_assert(!inject_run(root, &r, id, &status));
    ck_assert_int_eq(status, -1);
    /* no queue-inject at all */
    r.nrcpt = 1;
    char p[128];
    snprintf(p, sizeof p, "%s/bin/queue-inject", root);
    unlink(p);
    ck_assert(!inject_run(root, &r, id, &status));
    ck_assert_int_eq(status, 111);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("inject_client");
    TCase *core = tcase_create("core");
    tcase_add_checked_fixture(core, setup, teardown);
    tcase_add_test(core, test_from_memory);
    tcase_add_test(core, test_from_fd_with_prefix_on_low_fds);
    tcase_add_test(core, test_dsn_parameters);
    suite_add_tcase(s, core);
    TCase *limits = tcase_create("limits");
    tcase_add_checked_fixture(limits, setup, teardown);
    tcase_add_test(limits, test_limits_exit_codes);
    suite_add_tcase(s, limits);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
