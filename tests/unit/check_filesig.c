/* check_filesig.c - file signatures and the "read it again?" decision. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "filesig.h"

static char dir[] = "/tmp/check_filesig_XXXXXX";
static char path[sizeof dir + 16];

static void setup(void)
{
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/table", dir);
}

static void teardown(void)
{
    char tmp[sizeof path + 4];
    snprintf(tmp, sizeof tmp, "%s.new", path);
    unlink(tmp);
    unlink(path);
    rmdir(dir);
}

static void put(const char *p, const char *text)
{
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

/* set the file's modification time to now - age seconds */
static void age_file(const char *p, time_t age)
{
    struct timespec ts[2];
    clock_gettime(CLOCK_REALTIME, &ts[0]);
    ts[0].tv_sec -= age;
    ts[1] = ts[0];
    ck_assert_int_eq(utimensat(AT_FDCWD, p, ts, 0), 0);
}

START_TEST(test_signature)
{
    struct filesig a, b;
    ck_assert(!filesig_read(path, &a));
    ck_assert_int_eq(errno, ENOENT);
    ck_assert_int_eq(a.found, 0);
    ck_assert(!filesig_read(path, &b));
    ck_assert(filesig_same(&a, &b));            /* absent twice: the same */
    put(path, "alice\n");
    ck_assert(filesig_read(path, &b));
    ck_assert_int_eq(b.found, 1);
    ck_assert_int_eq(b.size, 6);
    ck_assert(!filesig_same(&a, &b));           /* appeared */
    ck_assert(filesig_read(path, &a));
    ck_assert(filesig_same(&a, &b));
    put(path, "alice\nbob\n");                  /* grew */
    ck_assert(filesig_read(path, &b));
    ck_assert(!filesig_same(&a, &b));
}
END_TEST

START_TEST(test_cache)
{
    struct filesig_cache c;
    struct filesig now;
    char tmp[sizeof path + 4];
    memset(&c, 0, sizeof c);
    put(path, "alice\n");
    age_file(path, 60);
    ck_assert(filesig_cache_stale(&c, path, &now));     /* never read */
    filesig_cache_loaded(&c, &now);
    ck_assert(!filesig_cache_stale(&c, path, &now));    /* unchanged, old enough */
    /* replaced by rename, as postern-user writes: another inode */
    snprintf(tmp, sizeof tmp, "%s.new", path);
    put(tmp, "alicE\n");
    age_file(tmp, 60);
    ck_assert_int_eq(rename(tmp, path), 0);
    ck_assert(filesig_cache_stale(&c, path, &now));
    filesig_cache_loaded(&c, &now);
    ck_assert(!filesig_cache_stale(&c, path, &now));
    /* edited in place, same size, same inode: the modification time shows it */
    put(path, "carol\n");
    ck_assert(filesig_cache_stale(&c, path, &now));
    filesig_cache_loaded(&c, &now);
    /* ...and since it changed just before it was read, it is read again
     * each time until it has been left alone for FILESIG_SETTLE seconds */
    ck_assert(filesig_cache_stale(&c, path, &now));
    ck_assert(filesig_cache_stale(&c, path, &now));
    age_file(path, FILESIG_SETTLE + 1);
    ck_assert(filesig_cache_stale(&c, path, &now));     /* utimensat moved the mtime */
    filesig_cache_loaded(&c, &now);
    ck_assert(!filesig_cache_stale(&c, path, &now));
    /* removed: stale, and loading "absent" is a state that can be current */
    unlink(path);
    ck_assert(filesig_cache_stale(&c, path, &now));
    ck_assert_int_eq(now.found, 0);
    filesig_cache_loaded(&c, &now);
    ck_assert(!filesig_cache_stale(&c, path, &now));
    put(path, "x\n");
    ck_assert(filesig_cache_stale(&c, path, &now));
}
END_TEST

START_TEST(test_limits_future_mtime)
{
    /* a file dated in the future is never trusted: read again every time */
    struct filesig_cache c;
    struct filesig now;
    struct timespec ts[2];
    memset(&c, 0, sizeof c);
    put(path, "alice\n");
    clock_gettime(CLOCK_REALTIME, &ts[0]);
    ts[0].tv_sec += 3600;
    ts[1] = ts[0];
    ck_assert_int_eq(utimensat(AT_FDCWD, path, ts, 0), 0);
    ck_assert(filesig_cache_stale(&c, path, &now));
    filesig_cache_loaded(&c, &now);
    ck_assert(filesig_cache_stale(&c, path, &now));
    /* errno is left as it was by the stat() of a missing file */
    unlink(path);
    errno = EPERM;
    ck_assert(filesig_cache_stale(&c, path, &now));
    ck_assert_int_eq(errno, EPERM);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("filesig");
    TCase *core = tcase_create("core");
    tcase_add_checked_fixture(core, setup, teardown);
    tcase_add_test(core, test_signature);
    tcase_add_test(core, test_cache);
    suite_add_tcase(s, core);
    TCase *limits = tcase_create("limits");
    tcase_add_checked_fixture(limits, setup, teardown);
    tcase_add_test(limits, test_limits_future_mtime);
    suite_add_tcase(s, limits);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
