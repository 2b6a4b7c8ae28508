/* check_privdrop.c - the privilege-drop helper and listening sockets. */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
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

/* a listener out of descriptors: accept4() fails with EMFILE while the
 * client stays queued; that starts a pause, other errors do not, and the
 * pause ends by itself */
START_TEST(test_accept_pause)
{
    const char *specs[] = { "127.0.0.1:0" };
    struct listen_set ls;
    size_t bad;
    ck_assert(listen_open(&ls, specs, 1, &bad));
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    ck_assert_int_eq(getsockname(ls.fd[0], (struct sockaddr *)&ss, &len), 0);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_eq(connect(c, (struct sockaddr *)&ss, len), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        /* no descriptor free: the lowest one above those open is the limit */
        int lowest = dup(0);
        if (lowest < 0) _exit(2);
        close(lowest);
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) < 0) _exit(3);
        rl.rlim_cur = (rlim_t)lowest;      /* the soft limit: what valgrind lets a program set */
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0) _exit(3);
        struct listen_pause p = { 0 };
        if (listen_pause_left(&p) != 0) _exit(4);
        usleep(100000);    /* the connection is queued by now */
        if (accept4(ls.fd[0], NULL, NULL, SOCK_CLOEXEC) >= 0 || errno != EMFILE) _exit(5);
        if (!listen_pause_start(&p, errno)) _exit(6);
        int left = listen_pause_left(&p);
        if (left < 1 || left > LISTEN_PAUSE_MS) _exit(7);
        _exit(0);
    }
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %d", st);
    /* the client was never taken: it is still there to accept. Not under
     * valgrind, which enforces the soft limit itself, by closing the
     * descriptor the kernel gave (its memory checks are what it is run
     * for; the integration test HostileResources covers the queueing) */
    const char *preload = getenv("LD_PRELOAD");
    if (!preload || !strstr(preload, "vgpreload")) {
        int fd = accept4(ls.fd[0], NULL, NULL, SOCK_CLOEXEC);
        ck_assert_int_ge(fd, 0);
        close(fd);
    }
    close(c);
    listen_close(&ls);
    struct listen_pause p = { 0 };
    ck_assert(!listen_pause_start(&p, ECONNABORTED));
    ck_assert(!listen_pause_start(&p, EAGAIN));
    ck_assert_int_eq(listen_pause_left(&p), 0);
    ck_assert(listen_pause_start(&p, ENFILE));
    ck_assert_int_gt(listen_pause_left(&p), 0);
    clock_gettime(CLOCK_MONOTONIC, &p.until);    /* as if the pause were over */
    ck_assert_int_eq(listen_pause_left(&p), 0);
    ck_assert_int_eq(p.on, 0);
}
END_TEST

/* a passwd(5) file in /tmp with the given text; its path in path[] */
static void passwd_file(char *path, const char *text)
{
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

START_TEST(test_lookup_file)
{
    char path[] = "/tmp/check_privuser.XXXXXX";
    passwd_file(path, "root:x:0:0:root:/root:/bin/bash\n"
                      "postern:x:990:990::/nonexistent:/usr/sbin/nologin\n"
                      "postern-smtp:x:991:989:postern SMTP:/nonexistent:/usr/sbin/nologin\n"
                      "postern-queue:x:992:988::/:/bin/false");   /* no final newline */
    struct privuser u = { 1, 1 };
    ck_assert(privuser_lookup_file(path, "postern-smtp", &u));
    ck_assert_uint_eq(u.uid, 991);
    ck_assert_uint_eq(u.gid, 989);
    ck_assert(privuser_lookup_file(path, "postern", &u));         /* not a prefix match */
    ck_assert_uint_eq(u.uid, 990);
    ck_assert(privuser_lookup_file(path, "postern-queue", &u));
    ck_assert_uint_eq(u.uid, 992);
    ck_assert_uint_eq(u.gid, 988);
    ck_assert(privuser_lookup_file(path, "root", &u));
    ck_assert_uint_eq(u.uid, 0);
    errno = 0;
    ck_assert(!privuser_lookup_file(path, "postern-pop3", &u));
    ck_assert_int_eq(errno, ENOENT);
    unlink(path);
    /* the system's own file agrees with getpwnam for root */
    ck_assert(privuser_lookup("root", &u));
    ck_assert_uint_eq(u.uid, 0);
}
END_TEST

START_TEST(test_lookup_limits)
{
    char path[] = "/tmp/check_privuser.XXXXXX";
    char text[6000];
    int n = snprintf(text, sizeof text, "long:x:5:5:");
    memset(text + n, 'g', 3000);     /* an over-long line is skipped whole... */
    n += 3000;
    n += snprintf(text + n, sizeof text - (size_t)n,
                  ":postern-smtp:x:1:1\n"          /* ...even where it looks like a user */
                  "bad-uid:x:12a:5::/:/bin/sh\n"
                  "big-uid:x:4294967295:5::/:/bin/sh\n"
                  "huge-uid:x:99999999999:5::/:/bin/sh\n"
                  "short:x:7\n"
                  "empty-gid:x:7::::\n"
                  "postern-smtp:x:991:989::/:/bin/sh\n");
    passwd_file(path, text);
    struct privuser u = { 1, 1 };
    ck_assert(privuser_lookup_file(path, "postern-smtp", &u));
    ck_assert_uint_eq(u.uid, 991);
    const char *bad[] = { "bad-uid", "big-uid", "huge-uid", "short", "empty-gid" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        errno = 0;
        ck_assert_msg(!privuser_lookup_file(path, bad[i], &u), "%s", bad[i]);
        ck_assert_int_eq(errno, EINVAL);
    }
    errno = 0;
    ck_assert(!privuser_lookup_file(path, "long", &u));     /* its line was skipped */
    ck_assert_int_eq(errno, ENOENT);
    ck_assert(!privuser_lookup_file(path, "", &u));
    ck_assert(!privuser_lookup_file(path, "postern-smtp:x", &u));
    unlink(path);
    errno = 0;
    ck_assert(!privuser_lookup_file(path, "postern-smtp", &u));   /* no file */
    ck_assert_int_eq(errno, ENOENT);
}
END_TEST

START_TEST(test_name)
{
    char got[17] = "";
    privdrop_name("smtp-session");
    ck_assert_int_eq(prctl(PR_GET_NAME, got, 0, 0, 0), 0);
    ck_assert_str_eq(got, "smtp-session");
    privdrop_name("a-role-name-longer-than-fifteen");   /* cut at 15 */
    ck_assert_int_eq(prctl(PR_GET_NAME, got, 0, 0, 0), 0);
    ck_assert_str_eq(got, "a-role-name-lon");
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
    tcase_add_test(core, test_lookup_file);
    tcase_add_test(core, test_name);
    suite_add_tcase(s, core);
    TCase *limits = tcase_create("limits");
    tcase_add_test(limits, test_limits);
    tcase_add_test(limits, test_accept_pause);
    tcase_add_test(limits, test_lookup_limits);
    suite_add_tcase(s, limits);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
