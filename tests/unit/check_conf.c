/* check_conf.c - the configuration reader and postern.conf settings. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "conf.h"
#include "config.h"

static int collect(void *ctx, const char *key, const char *value, char *why, size_t whylen)
{
    char *acc = ctx;
    if (!strcmp(key, "bad")) { snprintf(why, whylen, "refused"); return 0; }
    size_t n = strlen(acc);
    snprintf(acc + n, 256 - n, "[%s=%s]", key, value);
    return 1;
}

START_TEST(test_parse_text)
{
    char acc[256] = "", err[CONF_ERR_MAX];
    const char *t = "# comment\n\n  a = 1\r\nb=two words  \n\tc =\n";
    ck_assert(conf_parse_text("t.conf", t, strlen(t), collect, acc, err, sizeof err));
    ck_assert_str_eq(acc, "[a=1][b=two words][c=]");
}
END_TEST

START_TEST(test_errors_name_file_and_line)
{
    char acc[256] = "", err[CONF_ERR_MAX];
    const char *t = "a = 1\nnot a setting\n";
    ck_assert(!conf_parse_text("x.conf", t, strlen(t), collect, acc, err, sizeof err));
    ck_assert_str_eq(err, "x.conf:2: expected \"key = value\"");
    t = "a = 1\n\nbad = 3\n";
    ck_assert(!conf_parse_text("x.conf", t, strlen(t), collect, acc, err, sizeof err));
    ck_assert_str_eq(err, "x.conf:3: bad: refused");
    t = "Key = 3\n";
    ck_assert(!conf_parse_text("x.conf", t, strlen(t), collect, acc, err, sizeof err));
    ck_assert(strstr(err, "x.conf:1: bad key") == err);
    ck_assert(!conf_parse_file("/nonexistent/p.conf", collect, acc, err, sizeof err));
    ck_assert(strstr(err, "/nonexistent/p.conf: ") == err);
}
END_TEST

START_TEST(test_config_settings)
{
    struct config c;
    char why[128];
    config_defaults(&c);
    ck_assert_uint_eq(c.max_recipients, 100);
    ck_assert_uint_eq(c.max_message_size, 25ULL * 1024 * 1024);
    ck_assert(config_set(&c, "max_message_size", "10M", why, sizeof why));
    ck_assert_uint_eq(c.max_message_size, 10ULL * 1024 * 1024);
    ck_assert(config_set(&c, "session_timeout", "5m", why, sizeof why));
    ck_assert_uint_eq(c.session_timeout, 300);
    ck_assert(config_set(&c, "local_domains", "example.test, localhost other.test", why, sizeof why));
    ck_assert_uint_eq(c.local_domains.n, 3);
    ck_assert(config_is_local_domain(&c, "EXAMPLE.test", 12));
    ck_assert(!config_is_local_domain(&c, "example.tes", 11));
    ck_assert(!config_set(&c, "no_such_key", "1", why, sizeof why));
    ck_assert_str_eq(why, "unknown setting");
    ck_assert(!config_set(&c, "max_recipients", "lots", why, sizeof why));
    ck_assert_str_eq(why, "not a number");
}
END_TEST

START_TEST(test_config_load_file)
{
    char dir[] = "/tmp/check_conf.XXXXXX", path[256], err[CONF_ERR_MAX];
    ck_assert(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/conf", dir);
    ck_assert_int_eq(mkdir(path, 0700), 0);
    snprintf(path, sizeof path, "%s/conf/postern.conf", dir);
    FILE *f = fopen(path, "w");
    ck_assert(f != NULL);
    fputs("hostname = mx.example.test\nmax_recipients = 0\n", f);
    fclose(f);
    struct config c;
    ck_assert(!config_load(&c, dir, err, sizeof err));
    ck_assert(strstr(err, "postern.conf:2: max_recipients: out of range") != NULL);
    f = fopen(path, "w");
    fputs("hostname = mx.example.test\nmax_recipients = 7\n", f);
    fclose(f);
    ck_assert(config_load(&c, dir, err, sizeof err));
    ck_assert_str_eq(c.hostname, "mx.example.test");
    ck_assert_uint_eq(c.max_recipients, 7);
    ck_assert_str_eq(c.root, dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/conf", dir);
    rmdir(path);
    rmdir(dir);
}
END_TEST

START_TEST(test_limits)
{
    char acc[256] = "", err[CONF_ERR_MAX], why[128];
    unsigned long long v;
    ck_assert(!conf_uint("18446744073709551616", 0, ~0ULL, &v, why, sizeof why));
    ck_assert(conf_uint("18446744073709551615", 0, ~0ULL, &v, why, sizeof why));
    ck_assert(v == ~0ULL);
    ck_assert(!conf_size("17179869184G", ~0ULL, &v, why, sizeof why)); /* overflows */
    ck_assert(!conf_size("2G", 1ULL << 30, &v, why, sizeof why));
    ck_assert(!conf_duration("5x", 100, &v, why, sizeof why));
    ck_assert(!conf_uint("-1", 0, 10, &v, why, sizeof why));
    ck_assert(!conf_uint("", 0, 10, &v, why, sizeof why));
    /* a line longer than CONF_LINE_MAX */
    size_t n = CONF_LINE_MAX + 10;
    char *t = malloc(n + 1);
    memset(t, 'a', n);
    t[0] = 'k'; t[1] = '='; t[n] = 0;
    ck_assert(!conf_parse_text("l.conf", t, n, collect, acc, err, sizeof err));
    ck_assert_str_eq(err, "l.conf:1: line too long");
    free(t);
    ck_assert(!conf_parse_text("n.conf", "a = 1\nb = \0x\n", 12, collect, acc, err, sizeof err));
    ck_assert_str_eq(err, "n.conf:2: NUL byte in line");
    struct config c;
    config_defaults(&c);
    struct buf list = BUF_ZERO;
    for (int i = 0; i < CONFIG_LIST_MAX + 1; i++) ck_assert(buf_appends(&list, "d.test "));
    ck_assert(!config_set(&c, "local_domains", list.s, why, sizeof why));
    buf_free(&list);
    char longname[CONFIG_NAME_MAX + 2];
    memset(longname, 'h', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    ck_assert(!config_set(&c, "hostname", longname, why, sizeof why));
    ck_assert(!config_set(&c, "hostname", "a b", why, sizeof why));
}
END_TEST

/* hostname and local_domains are domain names: SMTP greets, says EHLO and
 * addresses postmaster with them */
START_TEST(test_domain_names)
{
    struct config c;
    char why[160], name[CONFIG_NAME_MAX];
    config_defaults(&c);
    ck_assert(config_set(&c, "hostname", "mx-1.Example.TEST", why, sizeof why));
    ck_assert(config_set(&c, "hostname", "localhost", why, sizeof why));
    ck_assert(config_set(&c, "hostname", "xn--bcher-kva.example", why, sizeof why));
    const char *bad[] = { "mail_host.example", "mail.example.", ".example", "a..b", "-a.example",
                          "a-.example", "user@example.test", "[127.0.0.1]" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_msg(!config_set(&c, "hostname", bad[i], why, sizeof why), "hostname %s", bad[i]);
        ck_assert_msg(strstr(why, "domain name") != NULL, "%s: %s", bad[i], why);
        ck_assert_msg(!config_set(&c, "local_domains", bad[i], why, sizeof why), "domain %s", bad[i]);
    }
    ck_assert(!config_set(&c, "hostname", "b\xc3\xbc" "cher.example", why, sizeof why)); /* IDNs as A-labels */
    ck_assert_str_eq(c.hostname, "xn--bcher-kva.example");
    ck_assert(!config_set(&c, "local_domains", "example.test bad_one.test", why, sizeof why));
    /* a label of 63 is fine, 64 is not */
    memset(name, 'a', 64);
    memcpy(name + 64, ".test", 6);
    ck_assert(!config_set(&c, "hostname", name, why, sizeof why));
    ck_assert(config_set(&c, "hostname", name + 1, why, sizeof why));
    /* the longest hostname still makes <postmaster@hostname> a valid path */
    for (size_t i = 0; i < CONFIG_HOSTNAME_MAX + 1; i++) name[i] = (i % 50 == 49) ? '.' : 'h';
    name[CONFIG_HOSTNAME_MAX + 1] = 0;
    ck_assert(!config_set(&c, "hostname", name, why, sizeof why));
    ck_assert(strstr(why, "too long") != NULL);
    name[CONFIG_HOSTNAME_MAX] = 0;
    ck_assert(config_set(&c, "hostname", name, why, sizeof why));
    ck_assert_uint_le(strlen("<postmaster@>") + strlen(c.hostname), 256);
    name[CONFIG_HOSTNAME_MAX] = 'h';
    ck_assert(config_set(&c, "local_domains", name, why, sizeof why)); /* 244: a domain may be longer */
}
END_TEST

int main(void)
{
    Suite *s = suite_create("conf");
    TCase *core = tcase_create("core");
    tcase_add_test(core, test_parse_text);
    tcase_add_test(core, test_errors_name_file_and_line);
    tcase_add_test(core, test_config_settings);
    tcase_add_test(core, test_config_load_file);
    tcase_add_test(core, test_domain_names);
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
