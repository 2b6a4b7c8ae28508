/* check_privdrop.c - the privilege-drop helper and listening sockets. */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "listen.h"
#include "privdrop.h"

START_TEST(test_drop_as_root)
{
    if (!privdrop_is_root()) {
        fprintf(stderr, "check_privdrop: SKIPPED test_drop_as_root: not running as root\n");
        return;
    }
    char dir[] = "/tmp/check_privdrop.XXXXXX";
    ck_assert(mkdtemp(dir) != NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        struct privuser u = { 65534, 65534 };
        if (!privdrop(dir, &u)) _exit(1);
        if (getuid() != 65534 || geteuid() != 65534 || getgid() != 65534) _exit(2);
        gid_t g[4];
        if (getgroups(4, g) != 1 || g[0] != 65534) _exit(3);
        char cwd[64];
        if (!getcwd(cwd, sizeof cwd) || strcmp(cwd, "/")) _exit(4);
        if (access("/etc", F_OK) == 0) _exit(5);   /* chrooted: /etc is gone */
        if (setuid(0) == 0) _exit(6);
        _exit(0);
    }
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert(WIFEXITED(st));
    ck_assert_int_eq(WEXITSTATUS(st), 0);
    rmdir(dir);
}
END_TEST

START_TEST(test_drop_unprivileged)
{
    if (privdrop_is_root()) {
        /* as root: a child that becomes nobody then tries the non-root path */
        pid_t pid = fork();
        if (pid == 0) {
            struct privuser nob = { 65534, 65534 };
            if (!privdrop(NULL, &nob)) _exit(1);
            struct privuser other = { 65533, 65533 };
            if (privdrop(NULL, &other) || errno != EPERM) _exit(2);
            if (!privdrop(NULL, &nob)) _exit(3);      /* same user: nothing to do */
            _exit(0);
        }
        int st;
        waitpid(pid, &st, 0);
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    } else {
        struct privuser me = { getuid(), getgid() };
        ck_assert(privdrop(NULL, &me));
    }
}
END_TEST

START_TEST(test_listen)
{
    struct sockaddr_storage ss;
    socklen_t len;
    ck_assert(listen_parse("127.0.0.1:2525", &ss, &len));
    ck_assert_int_eq(ss.ss_family, AF_INET);
    ck_assert_uint_eq(sockaddr_port((struct sockaddr *)&ss), 2525);
    ck_assert(listen_parse("[::1]:110", &ss, &len));
    ck_assert_int_eq(ss.ss_family, AF_INET6);
    char t[64];
    ck_assert_str_eq(sockaddr_text((struct sockaddr *)&ss, t, sizeof t), "::1");
    const char *specs[] = { "127.0.0.1:0", "[::1]:0" };
    struct listen_set ls;
    size_t bad;
    ck_assert(listen_open(&ls, specs, 2, &bad));
    ck_assert_uint_eq(ls.n, 2);
    listen_close(&ls);
}
END_TEST

START_TEST(test_limits)
{
    struct privuser root = { 0, 0 };
    ck_assert(!privdrop(NULL, &root));
    ck_assert_int_eq(errno, EPERM);
    struct privuser u;
    ck_assert(!privuser_lookup("no-such-user-postern", &u));
    struct sockaddr_storage ss;
    socklen_t len;
    ck_assert(!listen_parse("127.0.0.1:65536", &ss, &len));
    ck_assert(!listen_parse("127.0.0.1", &ss, &len));
    ck_assert(!listen_parse("[::1:25", &ss, &len));
    ck_assert(!listen_parse("300.0.0.1:25", &ss, &len));
    ck_assert(!listen_parse("[::1]:", &ss, &len));
    const char *specs[] = { "127.0.0.1:0", "bogus" };
    struct listen_set ls;
    size_t bad = 99;
    ck_assert(!listen_open(&ls, specs, 2, &bad));
    ck_assert_uint_eq(bad, 1);
    ck_assert_uint_eq(ls.n, 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("privdrop");
    TCase *core = tcase_create("core");
    tcase_add_test(core, test_drop_as_root);
    tcase_add_test(core, test_drop_unprivileged);
    tcase_add_test(core, test_listen);
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
