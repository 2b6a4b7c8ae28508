/* check_smtp_rcptmap.c - the recipient names RCPT accepts. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "smtp_rcptmap.h"

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ck_assert(f);
    fputs(text, f);
    fclose(f);
}

START_TEST(test_parse_and_lookup)
{
    struct smtp_rcptmap m;
    char err[256];
    smtp_rcptmap_init(&m);
    const char text[] = "# users\nalice\n  Bob  # a comment\r\n\ncarol\nalice\n";
    ck_assert(smtp_rcptmap_parse(&m, "recipients", text, sizeof text - 1, err, sizeof err));
    ck_assert_uint_eq(m.n, 3);
    ck_assert(smtp_rcptmap_has(&m, "alice"));
    ck_assert(smtp_rcptmap_has(&m, "bob"));          /* stored lower case */
    ck_assert(smtp_rcptmap_has(&m, "carol"));
    ck_assert(!smtp_rcptmap_has(&m, "Bob"));         /* callers look up lower case */
    ck_assert(!smtp_rcptmap_has(&m, "dave"));
    ck_assert(!smtp_rcptmap_has(&m, "postmaster"));  /* only load() adds it */
    smtp_rcptmap_free(&m);
}
END_TEST

START_TEST(test_load_root)
{
    char root[] = "/tmp/check_rcptmap.XXXXXX", path[256], err[256];
    ck_assert(mkdtemp(root));
    snprintf(path, sizeof path, "%s/conf", root);
    ck_assert_int_eq(mkdir(path, 0755), 0);
    struct smtp_rcptmap m;
    /* no files at all: postmaster and abuse only */
    ck_assert(smtp_rcptmap_load(&m, root, err, sizeof err));
    ck_assert_uint_eq(m.n, 2);
    ck_assert(smtp_rcptmap_has(&m, "postmaster") && smtp_rcptmap_has(&m, "abuse"));
    smtp_rcptmap_free(&m);
    snprintf(path, sizeof path, "%s/conf/recipients", root);
    write_file(path, "alice\n");
    char apath[256];
    snprintf(apath, sizeof apath, "%s/conf/aliases", root);
    write_file(apath, "Staff: alice, bob@remote.example\n  carol\nwebmaster: alice\n");
    ck_assert_msg(smtp_rcptmap_load(&m, root, err, sizeof err), "%s", err);
    ck_assert(smtp_rcptmap_has(&m, "alice"));
    ck_assert(smtp_rcptmap_has(&m, "staff"));
    ck_assert(smtp_rcptmap_has(&m, "webmaster"));
    ck_assert(!smtp_rcptmap_has(&m, "bob"));
    smtp_rcptmap_free(&m);
    unlink(apath);
    write_file(path, "alice\nbad name\n");
    ck_assert(!smtp_rcptmap_load(&m, root, err, sizeof err));
    ck_assert_msg(strstr(err, "recipients:2:"), "%s", err);
    unlink(path);
    snprintf(path, sizeof path, "%s/conf", root);
    rmdir(path);
    rmdir(root);
}
END_TEST

START_TEST(test_names_refused)
{
    struct smtp_rcptmap m;
    smtp_rcptmap_init(&m);
    char long65[66];
    memset(long65, 'a', 65);
    long65[65] = 0;
    ck_assert(smtp_rcptmap_add(&m, long65, 64));
    ck_assert(!smtp_rcptmap_add(&m, long65, 65));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert(!smtp_rcptmap_add(&m, "", 0));
    ck_assert(!smtp_rcptmap_add(&m, "a@b", 3));
    ck_assert(!smtp_rcptmap_add(&m, "a b", 3));
    ck_assert(!smtp_rcptmap_add(&m, "a%b", 3));
    ck_assert(!smtp_rcptmap_add(&m, "a\x01", 2));
    ck_assert(!smtp_rcptmap_add(&m, "caf\xc3\xa9", 5));
    /* many names stay sorted and findable */
    for (int i = 0; i < 2000; i++) {
        char n[16];
        int k = snprintf(n, sizeof n, "u%d", (i * 7919) % 2000);
        ck_assert(smtp_rcptmap_add(&m, n, (size_t)k));
    }
    ck_assert_uint_eq(m.n, 2001);
    for (size_t i = 1; i < m.n; i++) ck_assert(strcmp(m.name[i - 1], m.name[i]) < 0);
    ck_assert(smtp_rcptmap_has(&m, "u1999"));
    ck_assert(!smtp_rcptmap_has(&m, "u2000"));
    smtp_rcptmap_free(&m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("smtp_rcptmap");
    TCase *core = tcase_create("core");
    tcase_add_test(core, test_parse_and_lookup);
    tcase_add_test(core, test_load_root);
    suite_add_tcase(s, core);
    TCase *limits = tcase_create("limits");
    tcase_add_test(limits, test_names_refused);
    suite_add_tcase(s, limits);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
