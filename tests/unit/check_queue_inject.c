/* check_queue_inject.c - envelope records and the commit into a real tree. */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "queue_inject.h"
#include "smtp_addr.h"

static char root[64], why[256];
static int qfd = -1;

static void setup(void)
{
    char q[128];
    snprintf(root, sizeof root, "/tmp/check_qi.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(root));
    ck_assert(queue_tree_create(root, (uid_t)-1, (gid_t)-1));
    snprintf(q, sizeof q, "%s/queue", root);
    qfd = open(q, O_RDONLY | O_DIRECTORY);
    ck_assert_int_ge(qfd, 0);
}

static void teardown(void)
{
    char cmd[128];
    close(qfd);
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    ck_assert_int_eq(system(cmd), 0);
}

/* feed records (a "\0"-separated C string of length n) through a pipe */
static int feed(struct inject_env *ie, const char *recs, size_t n)
{
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    ck_assert_int_eq(write(p[1], recs, n), (ssize_t)n);
    close(p[1]);
    int r = inject_env_read(ie, p[0], why, sizeof why);
    int e = errno;
    close(p[0]);
    errno = e;
    return r;
}
#define FEED(ie, lit) feed((ie), (lit), sizeof(lit) - 1)

/* files in ROOT/queue/<sub>, recursively */
static int count_files(const char *sub)
{
    char path[256];
    snprintf(path, sizeof path, "%s/queue/%s", root, sub);
    int n = 0;
    DIR *d = opendir(path);
    if (!d) return -1;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char s[300];
        snprintf(s, sizeof s, "%s/%s", sub, de->d_name);
        if (de->d_type == DT_DIR) n += count_files(s);
        else n++;
    }
    closedir(d);
    return n;
}

START_TEST(test_records)
{
    struct inject_env ie;
    inject_env_init(&ie, 1000);
    ck_assert_msg(FEED(&ie, "Fa@x\0Hfrom h by m; now\0Ex+2B\0NHDRS\0B8BITMIME\0U\0Csmtp 192.0.2.9\0"
                            "Tb@y\t\t\0Tc@z\tNEVER\trfc822;c@z\0\0garbage after the end"), "%s", why);
    ck_assert_str_eq(ie.env.sender, "a@x");
    ck_assert_str_eq(ie.received.s, "Received: from h by m; now");
    ck_assert_str_eq(ie.env.envid, "x+2B");
    ck_assert_int_eq(ie.env.ret_hdrs, 1);
    ck_assert_int_eq(ie.env.body_8bit, 1);
    ck_assert_int_eq(ie.env.smtputf8, 1);
    ck_assert_str_eq(ie.env.client, "smtp 192.0.2.9 (uid 1000)");
    ck_assert_uint_eq(ie.env.nrcpt, 2);
    ck_assert_str_eq(ie.env.rcpt[1].orcpt, "rfc822;c@z");
    inject_env_free(&ie);
    inject_env_init(&ie, 0);
    ck_assert_msg(FEED(&ie, "F\0HReceived: from a\n\tby b\0Tb@y\t\t\0\0"), "%s", why);
    ck_assert_str_eq(ie.env.sender, "");
    ck_assert_str_eq(ie.env.client, "local (uid 0)");
    ck_assert_str_eq(ie.received.s, "Received: from a\n\tby b");
    inject_env_free(&ie);
    /* a recipient given again with the same NOTIFY and ORCPT is stored
     * once (delivered once); another NOTIFY, ORCPT or spelling is another */
    inject_env_init(&ie, 0);
    ck_assert_msg(FEED(&ie, "Fa@x\0Tb@y\t\t\0Tc@z\t\t\0Tb@y\t\t\0Tb@y\tNEVER\t\0Tb@y\t\trfc822;b@y\0"
                            "TB@y\t\t\0Tc@z\t\t\0Tb@y\tNEVER\t\0\0"), "%s", why);
    ck_assert_uint_eq(ie.env.nrcpt, 5);
    const char *want[] = { "b@y", "c@z", "b@y", "b@y", "B@y" };
    for (size_t i = 0; i < 5; i++) ck_assert_str_eq(ie.env.rcpt[i].addr, want[i]);
    ck_assert_uint_eq(ie.env.rcpt[2].notify, SMTP_NOTIFY_NEVER);
    ck_assert_str_eq(ie.env.rcpt[3].orcpt, "rfc822;b@y");
    inject_env_free(&ie);
}
END_TEST

START_TEST(test_bad_records)
{
    static const struct { const char *recs; size_t n; int err; const char *why; } cases[] = {
#define C(lit, e, w) { lit, sizeof(lit) - 1, e, w }
        C("Tb@y\t\t\0Fa@x\0\0", EPROTO, "first record is not F"),
        C("Fa@x\0Fa@x\0\0", EPROTO, "record F twice"),
        C("Fa@x\0\0", EPROTO, "no T record"),
        C("Fa@x\0Tb@y\0\0", EPROTO, "T: want recipient<TAB>notify<TAB>orcpt"),
        C("Fa@x\0Tb@y\t\t\t\0\0", EPROTO, "T: want recipient<TAB>notify<TAB>orcpt"),
        C("Fa@x\0T\t\t\0\0", EPROTO, "T: bad recipient"),
        C("Fa@x\0Tb@y\tSOON\t\0\0", EPROTO, "T: bad notify"),
        C("Fa\rb@x\0Tb@y\t\t\0\0", EPROTO, "F: bad sender"),
        C("Fa@x\0Hfrom a\nby b\0Tb@y\t\t\0\0", EPROTO, "H: bad Received field"),
        C("Fa@x\0Hfrom a\n\0Tb@y\t\t\0\0", EPROTO, "H: bad Received field"),
        C("Fa@x\0H\xc3\xa9\0Tb@y\t\t\0\0", EPROTO, "H: bad Received field"),
        C("Fa@x\0NSOME\0Tb@y\t\t\0\0", EPROTO, "N: want FULL or HDRS"),
        C("Fa@x\0Ux\0Tb@y\t\t\0\0", EPROTO, "U: takes no value"),
        C("Fa@x\0Zzz\0Tb@y\t\t\0\0", EPROTO, "unknown record Z"),
        C("Fa@x\0Tb@y\t\t\0", EPIPE, ""),          /* no end record: caller aborted */
        C("Fa@x\0Tb@y\t\t", EPIPE, ""),
        C("", EPIPE, ""),
#undef C
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct inject_env ie;
        inject_env_init(&ie, 0);
        why[0] = 0;
        ck_assert_msg(!feed(&ie, cases[i].recs, cases[i].n), "case %zu accepted", i);
        ck_assert_msg(errno == cases[i].err, "case %zu: errno %d", i, errno);
        ck_assert_msg(!strcmp(why, cases[i].why), "case %zu: '%s'", i, why);
        inject_env_free(&ie);
    }
    ck_assert_int_eq(inject_exit_code(EPROTO), 31);
    ck_assert_int_eq(inject_exit_code(EPIPE), 55);
    ck_assert_int_eq(inject_exit_code(ENOSPC), 53);
    ck_assert_int_eq(inject_exit_code(EDQUOT), 53);
    ck_assert_int_eq(inject_exit_code(EIO), 54);
}
END_TEST

START_TEST(test_commit)
{
    struct inject_env ie;
    struct inject_msg m;
    struct commit_stats st;
    char id[ENV_ID_LEN + 1], path[256], b[256];
    inject_env_init(&ie, 7);
    ck_assert(FEED(&ie, "Fa@x\0Hfrom h by m\0Tb@y\t\t\0\0"));
    inject_msg_init(&m, qfd);
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    ck_assert_int_eq(write(p[1], "Subject: t\n\nhello\n", 18), 18);
    close(p[1]);
    ck_assert(inject_msg_read(&m, p[0], INJECT_MEM_MAX));
    close(p[0]);
    ck_assert(queue_commit(qfd, root, &ie, &m, id, &st));
    ck_assert_uint_eq(st.fsyncs, 4);
    ck_assert_int_eq(st.todo_failed, 0);
    ck_assert(queue_path(path, sizeof path, root, QUEUE_MESS, id));
    int fd = open(path, O_RDONLY);
    ck_assert_int_ge(fd, 0);
    ssize_t n = read(fd, b, sizeof b - 1);
    close(fd);
    ck_assert_int_eq(n, 40);
    b[n] = 0;
    ck_assert_str_eq(b, "Received: from h by m\nSubject: t\n\nhello\n");
    ck_assert_int_eq(count_files("env"), 1);
    ck_assert_int_eq(count_files("todo"), 1);
    ck_assert_int_eq(count_files("tmp"), 0);
    inject_msg_free(&m);
    inject_env_free(&ie);
}
END_TEST

/* a tree made before tmp/<h> existed: injections use tmp/ itself */
START_TEST(test_commit_without_tmp_subdirs)
{
    struct inject_env ie;
    struct inject_msg m;
    struct commit_stats st;
    char id[ENV_ID_LEN + 1], path[256];
    for (int h = 0; h < 16; h++) {
        snprintf(path, sizeof path, "%s/queue/tmp/%X", root, h);
        ck_assert_msg(rmdir(path) == 0, "%s: %s", path, strerror(errno));
    }
    inject_env_init(&ie, 7);
    ck_assert(FEED(&ie, "Fa@x\0Tb@y\t\t\0\0"));
    inject_msg_init(&m, qfd);
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    ck_assert_int_eq(write(p[1], "Subject: t\n\nold tree\n", 21), 21);
    close(p[1]);
    ck_assert(inject_msg_read(&m, p[0], INJECT_MEM_MAX));
    close(p[0]);
    ck_assert_msg(queue_commit(qfd, root, &ie, &m, id, &st), "%s", strerror(errno));
    ck_assert_uint_eq(st.fsyncs, 4);
    ck_assert(queue_path(path, sizeof path, root, QUEUE_MESS, id));
    ck_assert_int_eq(access(path, F_OK), 0);
    ck_assert_int_eq(count_files("env"), 1);
    ck_assert_int_eq(count_files("tmp"), 0);
    inject_msg_free(&m);
    inject_env_free(&ie);
}
END_TEST

START_TEST(test_big_message_spills)
{
    struct inject_env ie;
    struct inject_msg m;
    struct commit_stats st;
    char id[ENV_ID_LEN + 1], path[256];
    inject_env_init(&ie, 7);
    ck_assert(FEED(&ie, "Fa@x\0Tb@y\t\t\0\0"));
    inject_msg_init(&m, qfd);
    char tmpl[] = "/tmp/check_qi_msg.XXXXXX";
    int in = mkstemp(tmpl);
    ck_assert_int_ge(in, 0);
    unlink(tmpl);
    char chunk[1000];
    memset(chunk, 'x', sizeof chunk);
    chunk[999] = '\n';
    for (int i = 0; i < 3000; i++) ck_assert_int_eq(write(in, chunk, sizeof chunk), 1000);
    lseek(in, 0, SEEK_SET);
    ck_assert(inject_msg_read(&m, in, 4096));   /* small memory limit: spills */
    close(in);
    ck_assert_int_ge(m.spill_fd, 0);
    ck_assert_int_eq(count_files("tmp"), 1);
    /* in tmp/<h>/ (h its id's last digit), not in tmp/ itself */
    ck_assert_msg(strlen(m.spill_name) == 4 + 2 + ENV_ID_LEN + 2 && m.spill_name[5] == '/'
                  && m.spill_name[4] == m.spill_name[6 + ENV_ID_LEN - 1], "%s", m.spill_name);
    ck_assert_msg(queue_commit(qfd, root, &ie, &m, id, &st), "%s", strerror(errno));
    inject_msg_free(&m);
    ck_assert_int_eq(count_files("tmp"), 0);   /* the spill file is gone */
    ck_assert(queue_path(path, sizeof path, root, QUEUE_MESS, id));
    struct stat sb;
    ck_assert_int_eq(stat(path, &sb), 0);
    ck_assert_int_eq(sb.st_size, 3000000);
    inject_env_free(&ie);
}
END_TEST

START_TEST(test_limits)
{
    struct inject_env ie;
    char rec[INJECT_RECORD_MAX + 2];
    /* a record of exactly the maximum is fine, one more is refused */
    inject_env_init(&ie, 0);
    ck_assert(inject_env_record(&ie, "Fa@x", 4, why, sizeof why));
    memset(rec, 'c', sizeof rec);
    rec[0] = 'C';
    ck_assert(inject_env_record(&ie, rec, INJECT_RECORD_MAX, why, sizeof why));
    ck_assert(!inject_env_record(&ie, rec, INJECT_RECORD_MAX + 1, why, sizeof why));
    ck_assert_int_eq(errno, EPROTO);
    ck_assert(inject_env_record(&ie, "Tb@y\t\t", 6, why, sizeof why));
    ck_assert(inject_env_finish(&ie, why, sizeof why));
    ck_assert_uint_le(strlen(ie.env.client), ENV_FIELD_MAX);   /* cut to leave room for the uid */
    ck_assert_ptr_nonnull(strstr(ie.env.client, " (uid 0)"));
    inject_env_free(&ie);

    /* an overlong record on the wire: refused without reading it all */
    struct buf w = BUF_ZERO;
    ck_assert(buf_append(&w, "Fa@x\0C", 6));
    for (int i = 0; i < 3000; i++) ck_assert(buf_appendc(&w, 'y'));
    ck_assert(buf_append(&w, "\0\0", 2));
    inject_env_init(&ie, 0);
    ck_assert(!feed(&ie, w.s, w.len));
    ck_assert_int_eq(errno, EPROTO);
    inject_env_free(&ie);
    buf_free(&w);

    /* recipient limit: ENV_RCPT_MAX accepted, one more refused */
    char a[32];
    inject_env_init(&ie, 0);
    ck_assert(inject_env_record(&ie, "Fa@x", 4, why, sizeof why));
    for (int i = 0; i < ENV_RCPT_MAX; i++) {
        int n = snprintf(a, sizeof a, "Tu%d@x\t\t", i);
        ck_assert(inject_env_record(&ie, a, (size_t)n, why, sizeof why));
    }
    ck_assert(!inject_env_record(&ie, "Tz@x\t\t", 6, why, sizeof why));
    ck_assert_int_eq(errno, EPROTO);
    ck_assert_str_eq(why, "T: more than 100000 recipients");
    inject_env_free(&ie);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("queue_inject");
    TCase *core = tcase_create("core");
    tcase_add_checked_fixture(core, setup, teardown);
    tcase_add_test(core, test_records);
    tcase_add_test(core, test_bad_records);
    tcase_add_test(core, test_commit);
    tcase_add_test(core, test_big_message_spills);
    tcase_add_test(core, test_commit_without_tmp_subdirs);
    suite_add_tcase(s, core);
    TCase *limits = tcase_create("limits");
    tcase_set_timeout(limits, 60);
    tcase_add_checked_fixture(limits, setup, teardown);
    tcase_add_test(limits, test_limits);
    suite_add_tcase(s, limits);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
