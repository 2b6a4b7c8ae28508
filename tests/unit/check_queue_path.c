/* check_queue_path.c - queue IDs, paths, the directory tree, the trigger. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "queue_path.h"

static char root[64];

static void setup(void)
{
    snprintf(root, sizeof root, "/tmp/check_qp.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(root));
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    ck_assert_int_eq(system(cmd), 0);
}

START_TEST(test_ids)
{
    char a[ENV_ID_LEN + 1], b[ENV_ID_LEN + 1];
    ck_assert(queue_id_make(a, 0x6926A1C0));
    ck_assert(envelope_id_valid(a));
    ck_assert(!strncmp(a, "6926A1C0", 8));
    ck_assert_int_eq(queue_id_time(a), 0x6926A1C0);
    ck_assert(queue_id_make(b, 0x6926A1C0));
    ck_assert_str_ne(a, b);  /* 32 random bits: equal once in 4 billion */
    time_t before = time(NULL);
    ck_assert(queue_id_new(a));
    ck_assert_int_ge(queue_id_time(a), before);
    ck_assert_int_le(queue_id_time(a), time(NULL));
}
END_TEST

START_TEST(test_paths)
{
    char p[QUEUE_PATH_MAX];
    const char *id = "6926A1C0F00DBA5E";
    ck_assert(queue_path(p, sizeof p, "/r", QUEUE_MESS, id));
    ck_assert_str_eq(p, "/r/queue/mess/E/6926A1C0F00DBA5E");
    ck_assert(queue_path(p, sizeof p, "/r", QUEUE_ENV, id));
    ck_assert_str_eq(p, "/r/queue/env/E/6926A1C0F00DBA5E");
    ck_assert(queue_path(p, sizeof p, "/r", QUEUE_TODO, id));
    ck_assert_str_eq(p, "/r/queue/todo/6926A1C0F00DBA5E");
    ck_assert(queue_path(p, sizeof p, "/r", QUEUE_TMP, id));
    ck_assert_str_eq(p, "/r/queue/tmp/6926A1C0F00DBA5E");
    ck_assert(queue_dir(p, sizeof p, "/r", "lock/trigger"));
    ck_assert_str_eq(p, "/r/queue/lock/trigger");
    ck_assert(!queue_path(p, sizeof p, "/r", QUEUE_MESS, "../../etc/passwd"));
    ck_assert_int_eq(errno, EINVAL);
}
END_TEST

START_TEST(test_tree_and_trigger)
{
    char p[QUEUE_PATH_MAX];
    struct stat st;
    ck_assert(queue_tree_create(root, (uid_t)-1, (gid_t)-1));
    ck_assert(queue_tree_create(root, (uid_t)-1, (gid_t)-1));   /* idempotent */
    static const char *dirs[] = { "tmp", "mess/0", "mess/F", "env/0", "env/A", "todo", "bounce", "lock" };
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        ck_assert(queue_dir(p, sizeof p, root, dirs[i]));
        ck_assert_msg(stat(p, &st) == 0 && S_ISDIR(st.st_mode), "%s", p);
    }
    ck_assert(queue_dir(p, sizeof p, root, "tmp"));
    ck_assert(stat(p, &st) == 0);
    ck_assert_uint_eq(st.st_mode & 07777, 0700);
    ck_assert(queue_dir(p, sizeof p, root, "tmp/7"));   /* injections: tmp/<h>, 0700 too */
    ck_assert(stat(p, &st) == 0 && S_ISDIR(st.st_mode));
    ck_assert_uint_eq(st.st_mode & 07777, 0700);
    ck_assert(queue_dir(p, sizeof p, root, "lock/trigger"));
    ck_assert(lstat(p, &st) == 0 && S_ISFIFO(st.st_mode));
    ck_assert_uint_eq(st.st_mode & 07777, 0600);

    ck_assert(queue_trigger(root));            /* nobody listens: still fine */
    int rfd = open(p, O_RDONLY | O_NONBLOCK);
    ck_assert_int_ge(rfd, 0);
    ck_assert(queue_trigger(root));
    ck_assert(queue_trigger(root));
    char b[8];
    ck_assert_int_eq(read(rfd, b, sizeof b), 2);
    close(rfd);

    /* a wrong mode is repaired */
    ck_assert(queue_dir(p, sizeof p, root, "todo"));
    ck_assert_int_eq(chmod(p, 0777), 0);
    ck_assert(queue_tree_create(root, (uid_t)-1, (gid_t)-1));
    ck_assert(stat(p, &st) == 0);
    ck_assert_uint_eq(st.st_mode & 07777, 0750);
}
END_TEST

START_TEST(test_root_from_exe)
{
    char top[4096], exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    ck_assert(n > 0);
    exe[n] = 0;
    *strrchr(exe, '/') = 0;              /* .../tests */
    *strrchr(exe, '/') = 0;              /* the build dir: this test's "ROOT" */
    ck_assert(queue_root_from_exe(top, sizeof top));
    ck_assert_str_eq(top, exe[0] ? exe : "/");
    ck_assert(!queue_root_from_exe(top, 4));   /* does not fit */
}
END_TEST

START_TEST(test_limits)
{
    char p[64], longroot[QUEUE_PATH_MAX + 10];
    ck_assert(!queue_path(p, sizeof p, "/a/very/long/root/directory/name/that/does/not/fit",
                          QUEUE_MESS, "6926A1C0F00DBA5E"));
    ck_assert_int_eq(errno, ENAMETOOLONG);
    memset(longroot, 'x', sizeof longroot);
    longroot[sizeof longroot - 1] = 0;
    ck_assert(!queue_tree_create(longroot, (uid_t)-1, (gid_t)-1));
    ck_assert_int_eq(errno, ENAMETOOLONG);
    ck_assert(!queue_trigger(longroot));
    /* a file where a directory belongs is an error, not silently accepted */
    char q[QUEUE_PATH_MAX];
    ck_assert(queue_dir(q, sizeof q, root, ""));
    ck_assert_int_eq(mkdir(q, 0750), 0);
    ck_assert(queue_dir(q, sizeof q, root, "todo"));
    int fd = open(q, O_CREAT | O_WRONLY, 0600);
    ck_assert_int_ge(fd, 0);
    close(fd);
    ck_assert(!queue_tree_create(root, (uid_t)-1, (gid_t)-1));
    ck_assert_int_eq(errno, ENOTDIR);
    /* no trigger FIFO: an error the caller may log */
    ck_assert(!queue_trigger(root));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("queue_path");
    TCase *core = tcase_create("core");
    tcase_add_checked_fixture(core, setup, teardown);
    tcase_add_test(core, test_ids);
    tcase_add_test(core, test_paths);
    tcase_add_test(core, test_tree_and_trigger);
    tcase_add_test(core, test_root_from_exe);
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
