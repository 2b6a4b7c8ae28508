/* check_maildir.c - Maildir delivery. */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "maildir.h"
#include "maildrop.h"

static char base[64];
static char md[128];

static void setup(void)
{
    snprintf(base, sizeof base, "/tmp/check_maildir_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(base));
    snprintf(md, sizeof md, "%s/Maildir", base);
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
    ck_assert_int_eq(system(cmd), 0);
}

static int msg_fd(const char *text)
{
    char path[] = "/tmp/check_maildir_msg_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    unlink(path);
    ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    return fd;       /* offset at the end: delivery must read from 0 anyway */
}

static size_t count(const char *sub, char *name, size_t namelen)
{
    char p[256];
    snprintf(p, sizeof p, "%s/%s", md, sub);
    DIR *d = opendir(p);
    ck_assert_ptr_nonnull(d);
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (de->d_name[0] != '.') { n++; if (name) snprintf(name, namelen, "%s", de->d_name); }
    closedir(d);
    return n;
}

START_TEST(test_make_and_deliver)
{
    static const char pre[] = "Return-Path: <bob@example.test>\nDelivered-To: alice@example.test\n";
    static const char body[] = "Subject: hi\n\nhello\n";
    char name[MAILDIR_NAME_MAX + 1], got[MAILDIR_NAME_MAX + 1], path[512], b[512];
    int fd = msg_fd(body);
    ck_assert(maildir_make(md));
    ck_assert(maildir_make(md));         /* idempotent */
    struct stat st;
    ck_assert_int_eq(stat(md, &st), 0);
    ck_assert_int_eq(st.st_mode & 0777, 0700);
    ck_assert(maildir_deliver(md, "mail.example.test", pre, strlen(pre), fd, name, sizeof name));
    ck_assert_uint_eq(count("new", got, sizeof got), 1);
    ck_assert_uint_eq(count("tmp", NULL, 0), 0);
    ck_assert_str_eq(got, name);
    ck_assert_ptr_nonnull(strstr(name, ".mail.example.test"));
    /* Maildir++ sizes in the name: octets, and octets with CRLF line ends
     * (5 LFs), the same count POP3 would make by reading the file */
    char want[64];
    snprintf(want, sizeof want, ".mail.example.test,S=%zu,W=%zu", strlen(pre) + strlen(body),
             strlen(pre) + strlen(body) + 5);
    ck_assert_str_eq(strstr(name, ".mail.example.test"), want);
    snprintf(path, sizeof path, "%s/new/%s", md, name);
    int in = open(path, O_RDONLY);
    ssize_t n = read(in, b, sizeof b);
    close(in);
    ck_assert_int_eq(n, (ssize_t)(strlen(pre) + strlen(body)));
    ck_assert(!memcmp(b, pre, strlen(pre)));
    ck_assert(!memcmp(b + strlen(pre), body, strlen(body)));
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_int_eq(st.st_mode & 0777, 0600);
    /* a second delivery gets another name */
    ck_assert(maildir_deliver(md, "mail.example.test", pre, strlen(pre), fd, got, sizeof got));
    ck_assert_str_ne(got, name);
    ck_assert_uint_eq(count("new", NULL, 0), 2);
    close(fd);
}
END_TEST

START_TEST(test_symlinks_refused)
{
    char real[128], part[160], link[160];
    int fd = msg_fd("x\n");
    /* the Maildir itself a symlink */
    snprintf(real, sizeof real, "%s/real", base);
    ck_assert(maildir_make(real));
    ck_assert_int_eq(symlink(real, md), 0);
    ck_assert(!maildir_make(md));
    ck_assert_int_eq(errno, ELOOP);
    ck_assert(!maildir_deliver(md, "h", "", 0, fd, NULL, 0));
    ck_assert_int_eq(errno, ELOOP);
    /* new/ a symlink inside a real Maildir */
    unlink(md);
    ck_assert(maildir_make(md));
    snprintf(part, sizeof part, "%s/new", md);
    ck_assert_int_eq(rmdir(part), 0);
    snprintf(link, sizeof link, "%s/new", real);
    ck_assert_int_eq(symlink(link, part), 0);
    ck_assert(!maildir_make(md));
    ck_assert_int_eq(errno, ELOOP);
    ck_assert(!maildir_deliver(md, "h", "", 0, fd, NULL, 0));
    ck_assert_int_eq(errno, ELOOP);
    ck_assert_uint_eq(count("tmp", NULL, 0), 0);
    /* a plain file where a directory should be */
    unlink(part);
    ck_assert_int_eq(close(open(part, O_CREAT | O_WRONLY, 0600)), 0);
    ck_assert(!maildir_make(md));
    ck_assert_int_eq(errno, ENOTDIR);
    close(fd);
}
END_TEST

START_TEST(test_delivered_to)
{
    int fd = msg_fd("Received: x\nDelivered-To:  Alice@Example.test \nSubject: s\n\nDelivered-To: bob@example.test\n");
    ck_assert_int_eq(maildir_has_delivered_to(fd, "alice@example.test"), 1);
    ck_assert_int_eq(maildir_has_delivered_to(fd, "bob@example.test"), 0);  /* body, not header */
    ck_assert_int_eq(maildir_has_delivered_to(fd, "alice@example"), 0);
    close(fd);
    fd = msg_fd("X-Delivered-To: carol@example.test\n\n");
    ck_assert_int_eq(maildir_has_delivered_to(fd, "carol@example.test"), 0);
    close(fd);
    /* a message that ends inside its header: its last line is whole */
    fd = msg_fd("Subject: s\nDelivered-To: carol@example.test");
    ck_assert_int_eq(maildir_has_delivered_to(fd, "carol@example.test"), 1);
    close(fd);
    /* folded (the value on a continuation line, as a host that refolds
     * long fields writes it), white space before the colon, case changed */
    fd = msg_fd("Subject: s\nDelivered-To:\r\n  <Dave@Example.TEST>\r\nDELIVERED-TO :\n\terin@example.test\n\n");
    ck_assert_int_eq(maildir_has_delivered_to(fd, "dave@example.test"), 1);
    ck_assert_int_eq(maildir_has_delivered_to(fd, "erin@example.test"), 1);
    ck_assert_int_eq(maildir_has_delivered_to(fd, "s"), 0);
    close(fd);
    fd = msg_fd("Delivered-To:\n frank@example.test");     /* folded on the unended last line */
    ck_assert_int_eq(maildir_has_delivered_to(fd, "frank@example.test"), 1);
    close(fd);
    /* a continuation of another field is not a Delivered-To value */
    fd = msg_fd("X-Note: x\n gina@example.test\nDelivered-To: hal@example.test\n more\n\n");
    ck_assert_int_eq(maildir_has_delivered_to(fd, "gina@example.test"), 0);
    ck_assert_int_eq(maildir_has_delivered_to(fd, "hal@example.test"), 0);
    close(fd);
}
END_TEST

START_TEST(test_unique_name)
{
    char a[MAILDIR_NAME_MAX + 1], b[MAILDIR_NAME_MAX + 1];
    ck_assert(maildir_unique_name("host/with:odd", a, sizeof a));
    ck_assert_ptr_null(strchr(a, '/'));
    ck_assert_ptr_null(strchr(a, ':'));
    ck_assert_ptr_nonnull(strstr(a, "host\\057with\\072odd"));
    ck_assert(maildir_unique_name("host", b, sizeof b));
    ck_assert_str_ne(a, b);
}
END_TEST

START_TEST(test_usage)
{
    char p[256];
    unsigned long long used;
    int fd = msg_fd("0123456789");
    ck_assert(maildir_make(md));
    ck_assert(maildir_usage(md, &used));
    ck_assert_uint_eq(used, 0);
    ck_assert(maildir_deliver(md, "h", "ab\n", 3, fd, NULL, 0));
    ck_assert(maildir_usage(md, &used));
    ck_assert_uint_eq(used, 13);
    /* a Maildir++ size in the name is trusted; tmp/ does not count */
    snprintf(p, sizeof p, "%s/cur/1.2.h,S=1000:2,S", md);
    ck_assert_int_eq(close(open(p, O_CREAT | O_WRONLY, 0600)), 0);
    snprintf(p, sizeof p, "%s/tmp/junk", md);
    int t = open(p, O_CREAT | O_WRONLY, 0600);
    ck_assert_int_eq(write(t, "xxxx", 4), 4);
    close(t);
    ck_assert(maildir_usage(md, &used));
    ck_assert_uint_eq(used, 1013);
    /* sizes in names that add up past 2^64 (each under 10^16, the most one
     * name may claim): the sum stops at the top, it does not wrap to a
     * small number that a quota would let pass */
    for (int i = 0; i < 1900; i++) {
        snprintf(p, sizeof p, "%s/cur/%d.h,S=9999999999999999:2,", md, i);
        ck_assert_int_eq(close(open(p, O_CREAT | O_WRONLY, 0600)), 0);
    }
    ck_assert(maildir_usage(md, &used));
    ck_assert(used == ~0ULL);
    close(fd);
}
END_TEST

START_TEST(test_limits_big_message_and_names)
{
    char name[MAILDIR_NAME_MAX + 1], small[16], path[512];
    size_t big = 3 * 65536 + 17;
    char *text = malloc(big + 1);
    for (size_t i = 0; i < big; i++) text[i] = (char)('a' + i % 26);
    text[big] = 0;
    int fd = msg_fd(text);
    ck_assert(maildir_make(md));
    ck_assert(maildir_deliver(md, "h", "P: x\n", 5, fd, name, sizeof name));
    snprintf(path, sizeof path, "%s/new/%s", md, name);
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_int_eq(st.st_size, (off_t)(big + 5));
    /* sizes in the name agree with POP3's count of the file: a CR ending one
     * 64 KiB read and its LF starting the next is one CRLF, a last line
     * without LF counts 2 */
    char want[64];
    snprintf(want, sizeof want, ",S=%zu,W=%zu", big + 5, big + 5 + 1 + 2);
    ck_assert_str_eq(strstr(name, ",S="), want);
    text[65535] = '\r';
    text[65536] = '\n';
    text[100] = '\n';
    int fd2 = msg_fd(text);
    ck_assert(maildir_deliver(md, "h", "", 0, fd2, name, sizeof name));
    snprintf(path, sizeof path, "%s/new/%s", md, name);
    int rfd = open(path, O_RDONLY);
    unsigned long long vs;
    ck_assert(maildrop_size_fd(rfd, &vs));
    close(rfd);
    snprintf(want, sizeof want, ",S=%zu,W=%llu", big, vs);
    ck_assert_str_eq(strstr(name, ",S="), want);
    ck_assert_uint_eq(vs, big + 1 + 2);
    close(fd2);
    unlink(path);
    /* a name with no room for the sizes is delivered under the plain name */
    char host[MAILDIR_NAME_MAX];
    memset(host, 'h', 205);
    host[205] = 0;
    int fd3 = msg_fd("x\n");
    ck_assert(maildir_deliver(md, host, "", 0, fd3, name, sizeof name));
    ck_assert(strstr(name, ",S=") || strlen(name) + strlen(",S=2,W=3") > MAILDIR_NAME_MAX);
    snprintf(path, sizeof path, "%s/new/%s", md, name);
    ck_assert_int_eq(access(path, F_OK), 0);
    unlink(path);
    close(fd3);
    /* a name that does not fit is refused, not cut */
    ck_assert(!maildir_unique_name("h", small, sizeof small));
    ck_assert_int_eq(errno, ENAMETOOLONG);
    /* an unreadable message: nothing left in tmp/ */
    ck_assert(!maildir_deliver(md, "h", "", 0, -1, NULL, 0));
    ck_assert_uint_eq(count("tmp", NULL, 0), 0);
    ck_assert_uint_eq(count("new", NULL, 0), 1);
    /* the header scan stops at its limit */
    size_t hl = MAILDIR_HEADER_SCAN_MAX + 100;
    char *h = malloc(hl + 64);
    memset(h, 'X', hl);
    memcpy(h, "X-Long: ", 8);
    snprintf(h + hl, 64, "\nDelivered-To: a@b\n\n");
    int hfd = msg_fd(h);
    ck_assert_int_eq(maildir_has_delivered_to(hfd, "a@b"), 0);
    close(hfd);
    free(h);
    free(text);
    close(fd);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("maildir");
    TCase *core = tcase_create("core");
    tcase_add_checked_fixture(core, setup, teardown);
    tcase_add_test(core, test_make_and_deliver);
    tcase_add_test(core, test_symlinks_refused);
    tcase_add_test(core, test_delivered_to);
    tcase_add_test(core, test_unique_name);
    tcase_add_test(core, test_usage);
    suite_add_tcase(s, core);
    TCase *limits = tcase_create("limits");
    tcase_add_checked_fixture(limits, setup, teardown);
    tcase_add_test(limits, test_limits_big_message_and_names);
    suite_add_tcase(s, limits);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
