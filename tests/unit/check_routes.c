/* check_routes.c - conf/routes and conf/relay-auth parsing and lookup. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "routes.h"

static struct routes rs;
static struct relay_auth ra;
static char err[512];

static int parse(const char *text)
{
    err[0] = 0;
    return routes_parse_text(&rs, "conf/routes", text, strlen(text), err, sizeof err);
}

START_TEST(test_parse_forms)
{
    ck_assert(parse("# comment\n"
                    "Example.NET   mx.example.net\n"
                    "\n"
                    ".corp.example [192.0.2.7]:2525 tls=require-verify ca=/etc/ca.pem  # inline\n"
                    "v6.example    [IPv6:2001:db8::1]   tls=none\n"
                    "ip.example    192.0.2.9:26\n"
                    "*             smarthost.isp.example:587 auth=isp\n"));
    ck_assert_uint_eq(rs.n, 5);
    const struct route *r = &rs.r[0];
    ck_assert_str_eq(r->domain, "example.net");
    ck_assert_str_eq(r->host, "mx.example.net");
    ck_assert_uint_eq(r->port, 0);
    ck_assert(!r->literal);
    ck_assert_int_eq(r->tls, ROUTE_TLS_MAY);
    ck_assert_uint_eq(r->line, 2);
    r = &rs.r[1];
    ck_assert_str_eq(r->host, "192.0.2.7");
    ck_assert(r->literal);
    ck_assert_uint_eq(r->port, 2525);
    ck_assert_int_eq(r->tls, ROUTE_TLS_VERIFY);
    ck_assert_str_eq(r->ca, "/etc/ca.pem");
    r = &rs.r[2];
    ck_assert_str_eq(r->host, "2001:db8::1");
    ck_assert(r->literal);
    ck_assert_int_eq(r->tls, ROUTE_TLS_NONE);
    ck_assert(rs.r[3].literal);
    ck_assert_uint_eq(rs.r[3].port, 26);
    ck_assert_str_eq(rs.r[4].auth, "isp");
    ck_assert_uint_eq(rs.r[4].port, 587);
}
END_TEST

START_TEST(test_find)
{
    ck_assert(parse("example.net a.test\n.corp.example b.test\n.eu.corp.example c.test\n* d.test\n"));
    ck_assert_str_eq(routes_find(&rs, "EXAMPLE.net")->host, "a.test");
    ck_assert_str_eq(routes_find(&rs, "x.corp.example")->host, "b.test");
    ck_assert_str_eq(routes_find(&rs, "y.eu.corp.example")->host, "c.test");  /* longest suffix */
    ck_assert_str_eq(routes_find(&rs, "corp.example")->host, "d.test");      /* ".corp" is subdomains only */
    ck_assert_str_eq(routes_find(&rs, "sub.example.net")->host, "d.test");   /* exact is exact */
    ck_assert(parse("example.net a.test\n"));
    ck_assert_ptr_null(routes_find(&rs, "other.example"));                    /* no "*": MX */
}
END_TEST

START_TEST(test_errors_name_line)
{
    static const struct { const char *text, *want; } cases[] = {
        { "ok.example a.test\nbad.example\n", "conf/routes:2: expected: domain host" },
        { "\n\nx.example a.test tls=sometimes\n", "conf/routes:3: tls= must be none, may or require-verify" },
        { "x.example a.test colour=blue\n", "conf/routes:1: unknown option 'colour=blue'" },
        { "x.example a.test:0\n", "conf/routes:1: bad port '0'" },
        { "x.example a.test:65536\n", "conf/routes:1: bad port '65536'" },
        { "x.example [300.1.1.1]\n", "conf/routes:1: bad address literal '300.1.1.1'" },
        { "x.example [192.0.2.1\n", "conf/routes:1: address literal without ']'" },
        { "x.example 2001:db8::1\n", "conf/routes:1: an IPv6 address must be written as a literal" },
        { "x.example a!b.test\n", "conf/routes:1: bad host name 'a!b.test'" },
        { "x..example@ a.test\n", "conf/routes:1: bad domain" },
        { "x.example a.test\nX.example b.test\n", "conf/routes:2: duplicate route for 'x.example' (first on line 1)" },
        { "x.example a.test tls=none auth=isp\n", "conf/routes:1: auth= needs TLS" },
        { "x.example a.test ca=/x.pem\n", "conf/routes:1: ca= only makes sense with tls=require-verify" },
        { "x.example a.test tls=require-verify ca=rel.pem\n", "conf/routes:1: ca= needs an absolute file name" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ck_assert_msg(!parse(cases[i].text), "case %zu accepted", i);
        ck_assert_msg(!strncmp(err, cases[i].want, strlen(cases[i].want)), "case %zu: got '%s'", i, err);
        ck_assert_uint_eq(rs.n, 0);
    }
}
END_TEST

START_TEST(test_relay_auth)
{
    const char *t = "# name user password\nisp  me@isp.example  pass with spaces  \nother u p\n";
    ck_assert(relay_auth_parse_text(&ra, "conf/relay-auth", t, strlen(t), err, sizeof err));
    ck_assert_uint_eq(ra.n, 2);
    const struct relay_cred *c = relay_auth_find(&ra, "isp");
    ck_assert_ptr_nonnull(c);
    ck_assert_str_eq(c->user, "me@isp.example");
    ck_assert_str_eq(c->pass, "pass with spaces");
    ck_assert_ptr_null(relay_auth_find(&ra, "nope"));
    t = "isp u p\nbroken user\n";
    ck_assert(!relay_auth_parse_text(&ra, "conf/relay-auth", t, strlen(t), err, sizeof err));
    ck_assert_str_eq(err, "conf/relay-auth:2: expected: NAME user password");
    ck_assert(parse("* a.test auth=isp\nx.example b.test auth=missing\n"));
    t = "isp u p\n";
    ck_assert(relay_auth_parse_text(&ra, "conf/relay-auth", t, strlen(t), err, sizeof err));
    ck_assert(!routes_check_auth(&rs, &ra, "conf/routes", err, sizeof err));
    ck_assert_str_eq(err, "conf/routes:2: auth=missing: no such entry in conf/relay-auth");
}
END_TEST

/* conf/routes of the source tree (the documented example, installed to
 * PREFIX/share/postern): the real parser takes it.  The tests run from the
 * top of the source tree (make unit). */
START_TEST(test_example_file)
{
    ck_assert_msg(access("conf/routes", R_OK) == 0, "conf/routes: %s (run from the source tree: make unit)",
                  strerror(errno));
    ck_assert_msg(routes_load(&rs, "conf/routes", err, sizeof err), "%s", err);
    ck_assert_uint_ge(rs.n, 1);
    for (size_t i = 0; i < rs.n; i++)
        ck_assert_msg(rs.r[i].auth[0] == 0, "conf/routes:%u: auth= needs a conf/relay-auth", rs.r[i].line);
}
END_TEST

START_TEST(test_files)
{
    char dir[] = "/tmp/check_routes.XXXXXX", path[128];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/routes", dir);
    ck_assert(routes_load(&rs, path, err, sizeof err));       /* missing: no routes */
    ck_assert_uint_eq(rs.n, 0);
    FILE *f = fopen(path, "w");
    fputs("x.example a.test\ny.example\n", f);
    fclose(f);
    ck_assert(!routes_load(&rs, path, err, sizeof err));
    ck_assert(strstr(err, "/routes:2: "));
    snprintf(path, sizeof path, "%s/relay-auth", dir);
    f = fopen(path, "w");
    fputs("isp u secret\n", f);
    fclose(f);
    chmod(path, 0640);
    ck_assert(!relay_auth_load(&ra, path, err, sizeof err));
    ck_assert(strstr(err, "readable by group or others"));
    chmod(path, 0600);
    ck_assert(relay_auth_load(&ra, path, err, sizeof err));
    ck_assert_str_eq(ra.c[0].pass, "secret");
    unlink(path);
    snprintf(path, sizeof path, "%s/routes", dir);
    unlink(path);
    rmdir(dir);
}
END_TEST

/* ---- limits ---- */

START_TEST(test_too_many_routes)
{
    size_t cap = (ROUTES_MAX + 1) * 40;
    char *t = malloc(cap);
    size_t o = 0;
    for (int i = 0; i <= ROUTES_MAX; i++) o += (size_t)snprintf(t + o, cap - o, "d%d.example h.test\n", i);
    ck_assert(!parse(t));
    char want[64];
    snprintf(want, sizeof want, "conf/routes:%d: too many routes", ROUTES_MAX + 1);
    ck_assert_msg(!strncmp(err, want, strlen(want)), "%s", err);
    free(t);
}
END_TEST

START_TEST(test_long_lines_and_names)
{
    char t[3000];
    memset(t, 'a', sizeof t);
    memcpy(t, "x.example ", 10);
    t[2000] = '\n';
    t[2001] = 0;
    ck_assert(!parse(t));
    ck_assert_str_eq(err, "conf/routes:1: line too long");
    char host[400];
    memset(host, 'h', sizeof host);
    host[sizeof host - 1] = 0;
    snprintf(t, sizeof t, "x.example %s\n", host);
    ck_assert(!parse(t));
    ck_assert(strstr(err, "conf/routes:1: host name too long"));
    const char nul[] = "x.example a.test\ny.exa\0mple b.test\n";
    ck_assert(!routes_parse_text(&rs, "conf/routes", nul, sizeof nul - 1, err, sizeof err));
    ck_assert_str_eq(err, "conf/routes:2: NUL byte");
}
END_TEST

START_TEST(test_port_edges)
{
    ck_assert(parse("a.example h.test:65535\nb.example [192.0.2.1]:1\n"));
    ck_assert_uint_eq(rs.r[0].port, 65535);
    ck_assert_uint_eq(rs.r[1].port, 1);
    ck_assert(!parse("a.example h.test:\n"));
    ck_assert(!parse("a.example h.test:123456\n"));
    ck_assert(!parse("a.example [192.0.2.1]x\n"));
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("routes");
    TCase *core = tcase_create("core");
    tcase_add_test(core, test_parse_forms);
    tcase_add_test(core, test_find);
    tcase_add_test(core, test_errors_name_line);
    tcase_add_test(core, test_relay_auth);
    tcase_add_test(core, test_files);
    tcase_add_test(core, test_example_file);
    suite_add_tcase(s, core);
    TCase *lim = tcase_create("limits");
    tcase_add_test(lim, test_too_many_routes);
    tcase_add_test(lim, test_long_lines_and_names);
    tcase_add_test(lim, test_port_edges);
    suite_add_tcase(s, lim);
    return s;
}

int main(void)
{
    SRunner *r = srunner_create(suite());
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? 1 : 0;
}
