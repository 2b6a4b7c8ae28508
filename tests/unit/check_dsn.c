/* check_dsn.c - RFC 3464 delivery status notifications. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dsn.h"

#define HOST "mx.example.test"
#define NOW ((time_t)1700000000)   /* Tue, 14 Nov 2023 22:13:20 +0000 */

static const char msg1[] =
    "Received: from client.example.org by mx.example.test\n"
    "From: Alice <alice@example.org>\n"
    "To: bob@example.com\n"
    "Subject: lunch\n"
    "Message-ID: <lunch.42@example.org>\n"
    "\n"
    "Shall we meet at noon?\n"
    "BODY-MARKER\n";

#define SET(dst, src) snprintf((dst), sizeof (dst), "%s", (src))

static struct envelope env;
static struct env_rcpt rc[3];
static char orcpt0[ENV_FIELD_MAX + 1];   /* rc[0]'s orcpt */
static struct dsn_item it[3];
static struct buf out;

static void setup(void)
{
    memset(&env, 0, sizeof env);
    memset(rc, 0, sizeof rc);
    memcpy(env.id, "6553F1A0C0FFEE01", 17);
    env.birth = NOW - 3600;
    SET(env.sender, "alice@example.org");
    SET(env.envid, "QQ+2B314");
    env.nrcpt = 2;
    env.rcpt = rc;
    SET(rc[0].addr, "bob@example.com");
    SET(orcpt0, "rfc822;Bob+2Bx@example.com");
    rc[0].orcpt = orcpt0;
    SET(rc[1].addr, "carol@example.net");
    it[0] = (struct dsn_item){ &rc[0], "5.1.1", "550 5.1.1 no such user", NULL, 0 };
    it[1] = (struct dsn_item){ &rc[1], "5.4.7", "", NULL, 0 };
    it[2] = (struct dsn_item){ &rc[2], "4.4.1", "connection refused", NULL, 0 };
    memset(&out, 0, sizeof out);
}
static void teardown(void) { buf_free(&out); }

/* ---- a small MIME reader, independent of the writer ---- */

struct part { const char *h, *b; size_t hlen, blen; };
struct mime {
    const char *h;
    size_t hlen;
    char bnd[256];
    size_t nparts;
    struct part part[8];
    int closed;
};

static void split_part(const char *s, size_t n, struct part *p)
{
    const char *e = NULL;
    if (n && s[0] == '\n') e = s;
    else
        for (size_t i = 0; i + 1 < n; i++)
            if (s[i] == '\n' && s[i + 1] == '\n') { e = s + i + 1; break; }
    ck_assert_msg(e != NULL, "part without header/body separator");
    p->h = s;
    p->hlen = (size_t)(e - s);
    p->b = e + 1;
    p->blen = n - p->hlen - 1;
}

static void mime_parse(const char *m, size_t n, struct mime *mm)
{
    struct part top;
    memset(mm, 0, sizeof *mm);
    split_part(m, n, &top);
    mm->h = top.h;
    mm->hlen = top.hlen;
    const char *b = memmem(top.h, top.hlen, "boundary=\"", 10);
    ck_assert_ptr_nonnull(b);
    b += 10;
    const char *q = memchr(b, '"', top.hlen - (size_t)(b - top.h));
    ck_assert_ptr_nonnull(q);
    ck_assert_uint_lt((size_t)(q - b), sizeof mm->bnd);
    ck_assert_uint_gt((size_t)(q - b), 0);
    memcpy(mm->bnd, b, (size_t)(q - b));
    size_t bl = strlen(mm->bnd);
    /* walk the body's lines looking for delimiter lines */
    const char *body = top.b, *end = m + n, *line = body, *cur = NULL;
    while (line < end) {
        const char *nl = memchr(line, '\n', (size_t)(end - line));
        size_t ll = nl ? (size_t)(nl - line) : (size_t)(end - line);
        int delim = ll >= 2 + bl && line[0] == '-' && line[1] == '-' && !memcmp(line + 2, mm->bnd, bl);
        if (delim) {
            int close = ll == 4 + bl && line[2 + bl] == '-' && line[3 + bl] == '-';
            ck_assert_msg(close || ll == 2 + bl, "junk after a delimiter");
            ck_assert_msg(!mm->closed, "delimiter after the close delimiter");
            if (cur) {
                /* the LF before the delimiter belongs to the delimiter */
                ck_assert_uint_lt(mm->nparts, 8);
                split_part(cur, (size_t)(line - 1 - cur), &mm->part[mm->nparts++]);
            }
            if (close) mm->closed = 1;
            cur = nl ? nl + 1 : end;
        }
        line = nl ? nl + 1 : end;
    }
}

/* the value of the first "Name: " line in s[0..n), NUL-terminated in a static buffer */
static const char *field(const char *s, size_t n, const char *name)
{
    static char v[2048];
    size_t nl = strlen(name);
    for (size_t i = 0; i + nl <= n; i++) {
        if ((i == 0 || s[i - 1] == '\n') && !strncasecmp(s + i, name, nl)) {
            size_t j = i + nl, k = 0;
            while (j < n && s[j] != '\n' && k + 1 < sizeof v) v[k++] = s[j++];
            v[k] = 0;
            return v;
        }
    }
    return NULL;
}
static int count_lines_starting(const char *s, size_t n, const char *prefix)
{
    int c = 0;
    size_t pl = strlen(prefix);
    for (size_t i = 0; i + pl <= n; i++)
        if ((i == 0 || s[i - 1] == '\n') && !strncasecmp(s + i, prefix, pl)) c++;
    return c;
}
static int contains(const char *s, size_t n, const char *needle)
{
    return memmem(s, n, needle, strlen(needle)) != NULL;
}
static void assert_field(const char *s, size_t n, const char *name, const char *want)
{
    const char *v = field(s, n, name);
    ck_assert_msg(v != NULL, "no %s", name);
    ck_assert_str_eq(v, want);
}
static void assert_lines_sane(const struct buf *b)
{
    ck_assert(!memchr(b->s, '\r', b->len));
    ck_assert(!memchr(b->s, 0, b->len));
    size_t col = 0;
    for (size_t i = 0; i < b->len; i++) {
        if (b->s[i] == '\n') col = 0;
        else ck_assert_uint_le(++col, 998);
    }
}

static void compose(enum dsn_kind k, size_t n, const char *m, size_t mlen, size_t limit, struct mime *mm)
{
    out.len = 0;
    ck_assert(dsn_compose(k, &env, it, n, m, mlen, limit, HOST, NOW, &out));
    ck_assert_uint_eq(strlen(out.s), out.len);
    assert_lines_sane(&out);
    mime_parse(out.s, out.len, mm);
    ck_assert_uint_eq(mm->nparts, 3);
    ck_assert(mm->closed);
}

START_TEST(test_failure_report)
{
    struct mime mm;
    compose(DSN_FAILURE, 2, msg1, sizeof msg1 - 1, 1000000, &mm);
    /* top-level header */
    assert_field(mm.h, mm.hlen, "From: ", "Mail Delivery System <MAILER-DAEMON@" HOST ">");
    assert_field(mm.h, mm.hlen, "To: ", "<alice@example.org>");
    assert_field(mm.h, mm.hlen, "Subject: ", "Undelivered Mail Returned to Sender");
    assert_field(mm.h, mm.hlen, "Date: ", "Tue, 14 Nov 2023 22:13:20 +0000");
    assert_field(mm.h, mm.hlen, "Message-ID: ", "<1700000000.6553F1A0C0FFEE01.failure@" HOST ">");
    assert_field(mm.h, mm.hlen, "Auto-Submitted: ", "auto-replied");
    assert_field(mm.h, mm.hlen, "MIME-Version: ", "1.0");
    assert_field(mm.h, mm.hlen, "In-Reply-To: ", "<lunch.42@example.org>");
    assert_field(mm.h, mm.hlen, "Content-Type: ", "multipart/report; report-type=delivery-status;");
    ck_assert(!field(mm.h, mm.hlen, "Content-Transfer-Encoding: "));
    ck_assert_int_eq(count_lines_starting(out.s, out.len, "--"), 4);   /* 3 delimiters + close */
    /* part 1: text */
    struct part *p = &mm.part[0];
    assert_field(p->h, p->hlen, "Content-Type: ", "text/plain; charset=us-ascii");
    ck_assert(contains(p->b, p->blen, "<bob@example.com>: 5.1.1\n    550 5.1.1 no such user\n"));
    ck_assert(contains(p->b, p->blen, "<carol@example.net>: 5.4.7\n"));
    /* part 2: the delivery status */
    p = &mm.part[1];
    assert_field(p->h, p->hlen, "Content-Type: ", "message/delivery-status");
    assert_field(p->b, p->blen, "Reporting-MTA: ", "dns; " HOST);
    assert_field(p->b, p->blen, "Original-Envelope-Id: ", "QQ+314");
    assert_field(p->b, p->blen, "Arrival-Date: ", "Tue, 14 Nov 2023 21:13:20 +0000");
    assert_field(p->b, p->blen, "Final-Recipient: ", "rfc822; bob@example.com");
    assert_field(p->b, p->blen, "Original-Recipient: ", "rfc822;Bob+x@example.com");
    assert_field(p->b, p->blen, "Action: ", "failed");
    assert_field(p->b, p->blen, "Status: ", "5.1.1");
    assert_field(p->b, p->blen, "Diagnostic-Code: ", "smtp; 550 5.1.1 no such user");
    assert_field(p->b, p->blen, "Last-Attempt-Date: ", "Tue, 14 Nov 2023 22:13:20 +0000");
    ck_assert_int_eq(count_lines_starting(p->b, p->blen, "Final-Recipient: "), 2);
    ck_assert_int_eq(count_lines_starting(p->b, p->blen, "Action: failed"), 2);
    ck_assert_int_eq(count_lines_starting(p->b, p->blen, "Original-Recipient: "), 1);
    ck_assert_int_eq(count_lines_starting(p->b, p->blen, "Diagnostic-Code: "), 1);
    ck_assert(contains(p->b, p->blen, "\n\nFinal-Recipient: rfc822; carol@example.net\nAction: failed\n"
                                    "Status: 5.4.7\nLast-Attempt-Date: "));
    /* in the order of RFC 3464 2.1's grammar: Original-Envelope-Id first,
     * extension fields after Arrival-Date, Original-Recipient before
     * Final-Recipient */
    static const char first[] = "Original-Envelope-Id: QQ+314\nReporting-MTA: dns; " HOST "\n"
                                "Arrival-Date: Tue, 14 Nov 2023 21:13:20 +0000\nX-Postern-Queue-ID: ";
    ck_assert(p->blen > sizeof first && !memcmp(p->b, first, sizeof first - 1));
    ck_assert(contains(p->b, p->blen, "\n\nOriginal-Recipient: rfc822;Bob+x@example.com\n"
                                    "Final-Recipient: rfc822; bob@example.com\nAction: failed\n"));
    /* part 3: the whole message, byte for byte */
    p = &mm.part[2];
    assert_field(p->h, p->hlen, "Content-Type: ", "message/rfc822");
    ck_assert_uint_eq(p->blen, sizeof msg1 - 1);
    ck_assert(!memcmp(p->b, msg1, p->blen));
}
END_TEST

/* remote-deliverer's "host H said: REPLY": H in Remote-MTA, REPLY as the smtp diagnostic */
START_TEST(test_remote_mta)
{
    struct mime mm;
    it[0].diagnostic = "host mx.example.com[192.0.2.1] said: 550 5.1.1 no such user (in reply to RCPT TO)";
    it[1].diagnostic = "host [127.0.0.1]:2525 said: 554 5.7.1 no\r\nX-Injected: yes";
    compose(DSN_FAILURE, 2, msg1, sizeof msg1 - 1, 1000000, &mm);
    struct part *p = &mm.part[1];
    ck_assert(contains(p->b, p->blen, "Status: 5.1.1\nRemote-MTA: dns; mx.example.com\n"
                                    "Diagnostic-Code: smtp; 550 5.1.1 no such user (in reply to RCPT TO)\n"));
    ck_assert(contains(p->b, p->blen, "Remote-MTA: dns; [127.0.0.1]\n"
                                    "Diagnostic-Code: smtp; 554 5.7.1 no??X-Injected: yes\n"));
    ck_assert(!contains(out.s, out.len, "\nX-Injected"));
    /* the human-readable part keeps the whole text */
    ck_assert(contains(mm.part[0].b, mm.part[0].blen, "host mx.example.com[192.0.2.1] said: 550 5.1.1"));
    /* not the "host ... said: NNN" shape: the text as it is, no Remote-MTA */
    it[0].diagnostic = "host mx.example.com said: nothing useful";
    it[1].diagnostic = "host  said: 550 x";
    compose(DSN_FAILURE, 2, msg1, sizeof msg1 - 1, 1000000, &mm);
    p = &mm.part[1];
    ck_assert(!field(p->b, p->blen, "Remote-MTA: "));
    assert_field(p->b, p->blen, "Diagnostic-Code: ", "X-Postern; host mx.example.com said: nothing useful");
    /* postern's own reasons are not SMTP replies (RFC 3464 2.3.6) */
    it[0].diagnostic = "no such user";
    it[1].diagnostic = "5.1.2 domain x.invalid does not exist (DNS: NXDOMAIN)";
    compose(DSN_FAILURE, 2, msg1, sizeof msg1 - 1, 1000000, &mm);
    p = &mm.part[1];
    ck_assert(contains(p->b, p->blen, "Diagnostic-Code: X-Postern; no such user\n"));
    ck_assert(contains(p->b, p->blen, "Diagnostic-Code: X-Postern; 5.1.2 domain x.invalid"));
    ck_assert(!field(p->b, p->blen, "Remote-MTA: "));
}
END_TEST

START_TEST(test_delay_and_success)
{
    struct mime mm;
    it[0].retry_until = NOW + 4 * 86400;
    compose(DSN_DELAY, 1, msg1, sizeof msg1 - 1, 1000000, &mm);
    assert_field(mm.h, mm.hlen, "Subject: ", "Delayed Mail (still being retried)");
    assert_field(mm.part[1].b, mm.part[1].blen, "Action: ", "delayed");
    assert_field(mm.part[1].b, mm.part[1].blen, "Will-Retry-Until: ", "Sat, 18 Nov 2023 22:13:20 +0000");
    assert_field(mm.part[2].h, mm.part[2].hlen, "Content-Type: ", "text/rfc822-headers");
    ck_assert(!contains(out.s, out.len, "BODY-MARKER"));   /* headers only */
    ck_assert(contains(mm.part[2].b, mm.part[2].blen, "Subject: lunch\n"));
    it[0].action_status = "2.0.0";
    it[0].diagnostic = NULL;
    compose(DSN_SUCCESS, 1, msg1, sizeof msg1 - 1, 1000000, &mm);
    assert_field(mm.h, mm.hlen, "Subject: ", "Successful Mail Delivery Report");
    assert_field(mm.part[1].b, mm.part[1].blen, "Action: ", "delivered");
    assert_field(mm.part[1].b, mm.part[1].blen, "Status: ", "2.0.0");
    ck_assert(!field(mm.part[1].b, mm.part[1].blen, "Diagnostic-Code: "));
    ck_assert(!field(mm.part[1].b, mm.part[1].blen, "Will-Retry-Until: "));   /* a delay report's only */
    ck_assert(!contains(out.s, out.len, "BODY-MARKER"));
    /* an invalid status falls back to the kind's default */
    it[0].action_status = "9.9.9";
    compose(DSN_FAILURE, 1, msg1, sizeof msg1 - 1, 1000000, &mm);
    assert_field(mm.part[1].b, mm.part[1].blen, "Status: ", "5.0.0");
    it[0].action_status = "5.1.1\nX: y";
    compose(DSN_FAILURE, 1, msg1, sizeof msg1 - 1, 1000000, &mm);
    assert_field(mm.part[1].b, mm.part[1].blen, "Status: ", "5.0.0");
    /* expired temporary failure: action failed with a 4.x.x status is allowed */
    it[0].action_status = "4.4.7";
    compose(DSN_FAILURE, 1, msg1, sizeof msg1 - 1, 1000000, &mm);
    assert_field(mm.part[1].b, mm.part[1].blen, "Status: ", "4.4.7");
}
END_TEST

START_TEST(test_success_actions)
{
    /* RFC 3464 2.3.3: a success report's recipient may be "relayed" (to a
     * next hop without DSN) or "expanded" (an alias); only there */
    struct mime mm;
    it[0].action_status = it[1].action_status = "2.0.0";
    it[0].diagnostic = it[1].diagnostic = NULL;
    it[0].action = "relayed";
    it[1].action = "expanded";
    compose(DSN_SUCCESS, 2, msg1, sizeof msg1 - 1, 1000000, &mm);
    const char *b = mm.part[1].b;
    size_t n = mm.part[1].blen;
    ck_assert(contains(b, n, "Original-Recipient: rfc822;Bob+x@example.com\nFinal-Recipient: rfc822; bob@example.com\n"
                             "Action: relayed\n"));
    ck_assert(contains(b, n, "Final-Recipient: rfc822; carol@example.net\nAction: expanded\n"));
    ck_assert(contains(mm.part[0].b, mm.part[0].blen, "<bob@example.com>: 2.0.0 (relayed)\n"));
    /* a failure or delay report keeps its own word */
    compose(DSN_FAILURE, 1, msg1, sizeof msg1 - 1, 1000000, &mm);
    assert_field(mm.part[1].b, mm.part[1].blen, "Action: ", "failed");
    it[0].action = "bogus";
    compose(DSN_SUCCESS, 1, msg1, sizeof msg1 - 1, 1000000, &mm);
    assert_field(mm.part[1].b, mm.part[1].blen, "Action: ", "delivered");
}
END_TEST

START_TEST(test_ret_hdrs_and_no_envid)
{
    struct mime mm;
    env.ret_hdrs = 1;
    env.envid[0] = 0;
    compose(DSN_FAILURE, 2, msg1, sizeof msg1 - 1, 1000000, &mm);
    assert_field(mm.part[2].h, mm.part[2].hlen, "Content-Type: ", "text/rfc822-headers");
    ck_assert(!contains(out.s, out.len, "BODY-MARKER"));
    ck_assert(!field(mm.part[1].b, mm.part[1].blen, "Original-Envelope-Id: "));
    ck_assert(contains(mm.part[0].b, mm.part[0].blen, "RET=HDRS"));
}
END_TEST

START_TEST(test_double_bounce_and_args)
{
    struct mime mm;
    env.sender[0] = 0;
    compose(DSN_FAILURE, 1, msg1, sizeof msg1 - 1, 1000000, &mm);
    assert_field(mm.h, mm.hlen, "To: ", "<postmaster@" HOST ">");
    /* refusals leave out as it was */
    ck_assert(buf_copys(&out, "keep"));
    errno = 0;
    ck_assert(!dsn_compose(DSN_FAILURE, &env, it, 0, msg1, sizeof msg1 - 1, 100, HOST, NOW, &out));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert(!dsn_compose(DSN_FAILURE, &env, it, 1, msg1, sizeof msg1 - 1, 100, "", NOW, &out));
    ck_assert(!dsn_compose(DSN_FAILURE, &env, it, 1, msg1, sizeof msg1 - 1, 100, NULL, NOW, &out));
    ck_assert(!dsn_compose((enum dsn_kind)7, &env, it, 1, msg1, sizeof msg1 - 1, 100, HOST, NOW, &out));
    ck_assert(!dsn_compose(DSN_FAILURE, &env, it, 1, NULL, 5, 100, HOST, NOW, &out));
    it[1].rcpt = NULL;
    ck_assert(!dsn_compose(DSN_FAILURE, &env, it, 2, msg1, sizeof msg1 - 1, 100, HOST, NOW, &out));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_uint_eq(out.len, 4);
    ck_assert_str_eq(out.s, "keep");
    /* appended, not replaced */
    ck_assert(dsn_compose(DSN_FAILURE, &env, it, 1, msg1, sizeof msg1 - 1, 100, HOST, NOW, &out));
    ck_assert(!strncmp(out.s, "keepFrom: ", 10));
}
END_TEST

START_TEST(test_utf8_addresses)
{
    struct mime mm;
    SET(rc[0].addr, "j\xc3\xb6ran@ex\xc3\xa4mple.example");
    rc[0].orcpt = NULL;
    it[0].diagnostic = "550 unknown \xc3\xb6 \xff";
    compose(DSN_FAILURE, 1, msg1, sizeof msg1 - 1, 1000000, &mm);
    assert_field(mm.h, mm.hlen, "Content-Transfer-Encoding: ", "8bit");
    /* RFC 6522 3: report-type names the second part's subtype */
    assert_field(mm.h, mm.hlen, "Content-Type: ", "multipart/report; report-type=global-delivery-status;");
    assert_field(mm.part[1].h, mm.part[1].hlen, "Content-Type: ", "message/global-delivery-status");
    assert_field(mm.part[1].b, mm.part[1].blen, "Final-Recipient: ", "utf-8; j\xc3\xb6ran@ex\xc3\xa4mple.example");
    /* the remote's text stays ASCII */
    assert_field(mm.part[1].b, mm.part[1].blen, "Diagnostic-Code: ", "smtp; 550 unknown ? ?");
    assert_field(mm.part[2].h, mm.part[2].hlen, "Content-Type: ", "message/global");
}
END_TEST

/* Python's email package, when present, must read the report as a clean
 * multipart/report with the three expected parts and no defects. */
START_TEST(test_python_email_parses)
{
    if (access("/usr/bin/python3", X_OK) != 0) return;
    struct mime mm;
    compose(DSN_FAILURE, 2, msg1, sizeof msg1 - 1, 1000000, &mm);
    char path[] = "/tmp/check_dsn.XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, out.s, out.len), (ssize_t)out.len);
    close(fd);
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -c 'import email,sys\n"
             "m=email.message_from_binary_file(open(sys.argv[1],\"rb\"))\n"
             "t=[p.get_content_type() for p in m.get_payload()]\n"
             "ok=m.get_content_type()==\"multipart/report\" and m.get_param(\"report-type\")==\"delivery-status\" "
             "and t==[\"text/plain\",\"message/delivery-status\",\"message/rfc822\"] and not m.defects "
             "and m[\"To\"]==\"<alice@example.org>\"\n"
             "sys.exit(0 if ok else 1)' %s", path);
    int rc2 = system(cmd);
    unlink(path);
    ck_assert_msg(WIFEXITED(rc2) && WEXITSTATUS(rc2) == 0, "python's email package disagrees");
}
END_TEST

/* ---- limits ---- */

START_TEST(test_full_limit)
{
    struct mime mm;
    size_t n = sizeof msg1 - 1;
    compose(DSN_FAILURE, 1, msg1, n, n, &mm);          /* exactly the limit: whole */
    assert_field(mm.part[2].h, mm.part[2].hlen, "Content-Type: ", "message/rfc822");
    ck_assert(contains(out.s, out.len, "BODY-MARKER"));
    compose(DSN_FAILURE, 1, msg1, n, n - 1, &mm);      /* one over: headers */
    assert_field(mm.part[2].h, mm.part[2].hlen, "Content-Type: ", "text/rfc822-headers");
    ck_assert(!contains(out.s, out.len, "BODY-MARKER"));
    ck_assert_uint_eq(mm.part[2].blen, (size_t)(strstr(msg1, "\n\n") - msg1) + 1);
    ck_assert(contains(mm.part[0].b, mm.part[0].blen, "larger than"));
    /* only the header section of a 9 MB message at hand: never "whole",
     * and the size said is the message's */
    size_t h = (size_t)(strstr(msg1, "\n\n") - msg1) + 1;
    out.len = 0;
    ck_assert(dsn_compose_sized(DSN_FAILURE, &env, it, 1, msg1, h, 9000000, 1 << 20, HOST, NOW, &out));
    mime_parse(out.s, out.len, &mm);
    ck_assert_uint_eq(mm.nparts, 3);
    assert_field(mm.part[2].h, mm.part[2].hlen, "Content-Type: ", "text/rfc822-headers");
    ck_assert(contains(mm.part[0].b, mm.part[0].blen, "larger than 1048576 octets (it had 9000000)"));
    ck_assert(contains(mm.part[2].b, mm.part[2].blen, "Subject: lunch\n"));
    /* a size below what is at hand is nonsense */
    ck_assert(!dsn_compose_sized(DSN_FAILURE, &env, it, 1, msg1, h, h - 1, 1 << 20, HOST, NOW, &out));
}
END_TEST

START_TEST(test_huge_message)
{
    /* 30 MB message with a 25 MB limit: only the header section comes back */
    size_t n = 30u << 20;
    char *m = malloc(n);
    ck_assert_ptr_nonnull(m);
    memcpy(m, msg1, sizeof msg1 - 1);
    memset(m + sizeof msg1 - 1, 'x', n - (sizeof msg1 - 1));
    for (size_t i = sizeof msg1 - 1 + 70; i < n; i += 71) m[i] = '\n';
    struct mime mm;
    compose(DSN_FAILURE, 2, m, n, 25u << 20, &mm);
    ck_assert_uint_lt(out.len, 10000);
    assert_field(mm.part[2].h, mm.part[2].hlen, "Content-Type: ", "text/rfc822-headers");
    /* a message that is all header (no empty line) is cut at a line end */
    memset(m, 'h', n);
    for (size_t i = 50; i < n; i += 51) m[i] = '\n';
    compose(DSN_FAILURE, 1, m, n, 25u << 20, &mm);
    ck_assert_uint_le(mm.part[2].blen, DSN_HEADERS_MAX);
    ck_assert_uint_gt(mm.part[2].blen, DSN_HEADERS_MAX - 52);
    ck_assert(mm.part[2].b[mm.part[2].blen - 1] == '\n');
    /* an empty message and one without a final newline still make 3 parts */
    compose(DSN_FAILURE, 1, "", 0, 100, &mm);
    ck_assert_uint_eq(mm.part[2].blen, 0);
    compose(DSN_FAILURE, 1, "Subject: x\n\nno newline", 22, 100, &mm);
    ck_assert_uint_eq(mm.part[2].blen, 22);
    compose(DSN_FAILURE, 1, "\nbody only", 10, 5, &mm);
    ck_assert_uint_eq(mm.part[2].blen, 0);
    free(m);
}
END_TEST

START_TEST(test_boundary_collision)
{
    struct mime mm;
    compose(DSN_FAILURE, 1, msg1, sizeof msg1 - 1, 1000000, &mm);
    char first[256];
    SET(first, mm.bnd);
    /* an attacker who predicts the boundary puts it in the message */
    char evil[4096];
    int n = snprintf(evil, sizeof evil,
                     "Subject: gotcha\n\nbefore\n--%s\nContent-Type: text/html\n\n<script>\n--%s--\n"
                     "and %s again, with the next guesses: %s_0 %s1\n", first, first, first, first, first);
    ck_assert_int_gt(n, 0);
    compose(DSN_FAILURE, 1, evil, (size_t)n, 1000000, &mm);
    ck_assert_str_ne(mm.bnd, first);
    ck_assert(!memmem(evil, (size_t)n, mm.bnd, strlen(mm.bnd)));
    ck_assert_uint_eq(mm.part[2].blen, (size_t)n);
    ck_assert(!memcmp(mm.part[2].b, evil, (size_t)n));
    /* the same when only the headers are returned */
    compose(DSN_DELAY, 1, evil, (size_t)n, 1000000, &mm);
    ck_assert_uint_eq(mm.nparts, 3);
    /* and when the diagnostic carries it */
    char diag[300];
    snprintf(diag, sizeof diag, "550 --%s--", first);
    it[0].diagnostic = diag;
    compose(DSN_FAILURE, 1, msg1, sizeof msg1 - 1, 1000000, &mm);
    ck_assert_str_ne(mm.bnd, first);
}
END_TEST

START_TEST(test_no_header_injection)
{
    struct mime mm;
    SET(env.sender, "evil@x.example\r\nBcc: victim@y.example");
    SET(env.envid, "id+0D+0AInjected-Env:+20yes");
    SET(env.id, "AB\r\nX-Id: 1");
    SET(rc[0].addr, "bob@example.com\nX-Injected-Rcpt: 1");
    SET(orcpt0, "rfc822;a+0A+0DInjected-Orcpt: 1");
    memcpy(rc[1].addr, "carol@example.net\0\nX-After-Nul: 1", 34);
    it[0].diagnostic = "550 no\r\nContent-Type: text/html\r\n\r\n<b>";
    it[0].action_status = "5.1.1";
    out.len = 0;
    ck_assert(dsn_compose(DSN_FAILURE, &env, it, 2, msg1, sizeof msg1 - 1, 1000000,
                          "mx.example.test\r\nEvil-Host: 1", NOW, &out));
    assert_lines_sane(&out);
    const char *bad[] = { "Bcc:", "Injected-Env:", "X-Injected-Rcpt:", "Injected-Orcpt:",
                          "X-Id:", "X-After-Nul:", "Content-Type: text/html", "Evil-Host:", "<b>" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(count_lines_starting(out.s, out.len, bad[i]) == 0, "injected %s", bad[i]);
    mime_parse(out.s, out.len, &mm);
    ck_assert_uint_eq(mm.nparts, 3);
    ck_assert(mm.closed);
    assert_field(mm.h, mm.hlen, "To: ", "<evil@x.example??Bcc: victim@y.example>");
    assert_field(mm.part[1].b, mm.part[1].blen, "Original-Envelope-Id: ", "id??Injected-Env: yes");
    assert_field(mm.part[1].b, mm.part[1].blen, "Reporting-MTA: ", "dns; mx.example.test--Evil-Host--1");
    assert_field(mm.part[1].b, mm.part[1].blen, "Final-Recipient: ", "rfc822; bob@example.com?X-Injected-Rcpt: 1");
    /* the message's own fields are not rewritten */
    ck_assert(memmem(mm.part[2].b, mm.part[2].blen, msg1, sizeof msg1 - 1));
}
END_TEST

START_TEST(test_long_values)
{
    struct mime mm;
    static char diag[5000];
    memset(diag, 'd', sizeof diag - 1);
    it[0].diagnostic = diag;
    memset(env.envid, 'e', ENV_FIELD_MAX);
    env.envid[ENV_FIELD_MAX] = 0;
    memcpy(orcpt0, "rfc822;", 7);
    memset(orcpt0 + 7, 'o', ENV_FIELD_MAX - 7);
    orcpt0[ENV_FIELD_MAX] = 0;
    memset(rc[0].addr, 'a', ENV_ADDR_MAX);
    rc[0].addr[ENV_ADDR_MAX] = 0;
    compose(DSN_FAILURE, 1, msg1, sizeof msg1 - 1, 1000000, &mm);   /* asserts lines <= 998 */
    const char *v = field(mm.part[1].b, mm.part[1].blen, "Diagnostic-Code: X-Postern; ");
    ck_assert_ptr_nonnull(v);
    ck_assert_uint_eq(strlen(v), 900);
    /* many recipients */
    static struct env_rcpt many[500];
    static struct dsn_item mi[500];
    for (size_t i = 0; i < 500; i++) {
        snprintf(many[i].addr, sizeof many[i].addr, "user%zu@example.com", i);
        mi[i] = (struct dsn_item){ &many[i], "5.1.1", "no", NULL, 0 };
    }
    out.len = 0;
    ck_assert(dsn_compose(DSN_FAILURE, &env, mi, 500, msg1, sizeof msg1 - 1, 1000000, HOST, NOW, &out));
    mime_parse(out.s, out.len, &mm);
    ck_assert_int_eq(count_lines_starting(mm.part[1].b, mm.part[1].blen, "Final-Recipient: "), 500);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("dsn");
    TCase *core = tcase_create("core");
    tcase_add_checked_fixture(core, setup, teardown);
    tcase_add_test(core, test_failure_report);
    tcase_add_test(core, test_delay_and_success);
    tcase_add_test(core, test_success_actions);
    tcase_add_test(core, test_remote_mta);
    tcase_add_test(core, test_ret_hdrs_and_no_envid);
    tcase_add_test(core, test_double_bounce_and_args);
    tcase_add_test(core, test_utf8_addresses);
    tcase_add_test(core, test_python_email_parses);
    suite_add_tcase(s, core);
    TCase *limits = tcase_create("limits");
    tcase_add_checked_fixture(limits, setup, teardown);
    tcase_add_test(limits, test_full_limit);
    tcase_add_test(limits, test_huge_message);
    tcase_add_test(limits, test_boundary_collision);
    tcase_add_test(limits, test_no_header_injection);
    tcase_add_test(limits, test_long_values);
    suite_add_tcase(s, limits);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
