/* check_smtp_client.c - the SMTP client: reply parser and its bounds, EHLO
 * keywords, DATA streaming, and a whole transaction against a scripted
 * server on a socketpair. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "io.h"
#include "smtp_client.h"

static int sp[2];
static struct smtp_conn conn;
static struct smtp_reply rep;

static void setup(void)
{
    /* a packet socket: each packet is one write of the server's, as one
     * read takes it (smtp_client knows a reply that came with another,
     * unasked, by what the read brought beyond it) */
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sp), 0);
    smtp_conn_init(&conn, sp[0], 500);
}
static void teardown(void) { close(sp[0]); close(sp[1]); }

/* the server's lines, each written on its own, as a server that answers
 * each command when it comes writes them */
static void feed(const char *s)
{
    while (*s) {
        const char *nl = strchr(s, '\n');
        size_t n = nl ? (size_t)(nl - s) + 1 : strlen(s);
        ck_assert(fd_write_all(sp[1], s, n, 1000));
        s += n;
    }
}

/* s written at once: a server that says more than it was asked */
static void feed_together(const char *s) { ck_assert(fd_write_all(sp[1], s, strlen(s), 1000)); }

static int feed_lines(struct smtp_reply *r, const char *const *lines)
{
    int k = 0;
    smtp_reply_init(r);
    for (; *lines; lines++) {
        k = smtp_reply_feed(r, *lines, strlen(*lines));
        if (k != 0) break;
    }
    return k;
}

/* a file holding s; returns its fd */
static int tmpfile_with(const char *s, size_t n)
{
    char path[] = "/tmp/check_smtp_client.XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    unlink(path);
    ck_assert(fd_write_all(fd, s, n, 1000));
    return fd;
}

/* everything the client wrote so far (peer side, non-blocking) */
static size_t drain(char *dst, size_t cap)
{
    size_t n = 0;
    for (;;) {
        ssize_t r = recv(sp[1], dst + n, cap - 1 - n, MSG_DONTWAIT);
        if (r <= 0) break;
        n += (size_t)r;
    }
    dst[n] = 0;
    return n;
}

START_TEST(test_reply_single_and_multiline)
{
    const char *one[] = { "250 2.1.0 ok", NULL };
    ck_assert_int_eq(feed_lines(&rep, one), 1);
    ck_assert_int_eq(rep.code, 250);
    ck_assert_str_eq(rep.text, "2.1.0 ok");
    const char *multi[] = { "250-mx.example greets you", "250-PIPELINING", "250 SIZE 1000", NULL };
    ck_assert_int_eq(feed_lines(&rep, multi), 1);
    ck_assert_uint_eq(rep.nlines, 3);
    ck_assert_str_eq(rep.text, "mx.example greets you\nPIPELINING\nSIZE 1000");
    const char *bare[] = { "221", NULL };           /* code alone is a last line */
    ck_assert_int_eq(feed_lines(&rep, bare), 1);
    ck_assert_int_eq(rep.code, 221);
    ck_assert_uint_eq(rep.len, 0);
}
END_TEST

START_TEST(test_reply_garbage_codes)
{
    const char *bad[][3] = {
        { "2x0 what", NULL, NULL }, { "25", NULL, NULL }, { "", NULL, NULL },
        { "650 six", NULL, NULL }, { "190 one", NULL, NULL }, { "260 second digit", NULL, NULL },
        { "250_under", NULL, NULL }, { "250-a", "251 b", NULL }, { "abc", NULL, NULL },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_msg(feed_lines(&rep, bad[i]) == -1, "case %zu accepted", i);
        ck_assert_int_eq(errno, EPROTO);
    }
}
END_TEST

START_TEST(test_reply_status_and_summary)
{
    char st[16], sum[64];
    const char *a[] = { "550-5.1.1 no such", "550 5.1.1 user here", NULL };
    feed_lines(&rep, a);
    smtp_reply_status(&rep, st, sizeof st);
    ck_assert_str_eq(st, "5.1.1");
    ck_assert_str_eq(smtp_reply_summary(&rep, sum, sizeof sum), "550 5.1.1 no such 5.1.1 user here");
    const char *b[] = { "451 4.7.1x greylisted", NULL };   /* not a code: default */
    feed_lines(&rep, b);
    smtp_reply_status(&rep, st, sizeof st);
    ck_assert_str_eq(st, "4.0.0");
    const char *c[] = { "550 4.1.1 class differs", NULL };
    feed_lines(&rep, c);
    smtp_reply_status(&rep, st, sizeof st);
    ck_assert_str_eq(st, "5.0.0");
    const char *d[] = { "554 bad\x01\x7f\xff bytes", NULL };
    feed_lines(&rep, d);
    ck_assert_str_eq(smtp_reply_summary(&rep, sum, sizeof sum), "554 bad??? bytes");
    const char *e[] = { "550 0123456789012345678901234567890123456789", NULL };
    feed_lines(&rep, e);
    smtp_reply_summary(&rep, sum, 20);
    ck_assert_str_eq(sum, "550 012345678901...");
}
END_TEST

START_TEST(test_read_reply_from_socket)
{
    feed("220-first\r\n220 second\r\n250 next\r\n");
    ck_assert(smtp_read_reply(&conn, &rep, 500));
    ck_assert_int_eq(rep.code, 220);
    ck_assert_str_eq(rep.text, "first\nsecond");
    ck_assert(smtp_read_reply(&conn, &rep, 500));
    ck_assert_int_eq(rep.code, 250);
    ck_assert_uint_eq(smtp_buffered(&conn), 0);
}
END_TEST

START_TEST(test_read_reply_bare_lf_and_cr)
{
    feed("220 hello\n");
    ck_assert(!smtp_read_reply(&conn, &rep, 500));
    ck_assert_int_eq(errno, EPROTO);
    teardown();
    setup();
    feed("220 hel\rlo\r\n");
    ck_assert(!smtp_read_reply(&conn, &rep, 500));
    ck_assert_int_eq(errno, EPROTO);
}
END_TEST

START_TEST(test_read_reply_eof)
{
    feed("220 partial");
    shutdown(sp[1], SHUT_WR);
    ck_assert(!smtp_read_reply(&conn, &rep, 500));
    ck_assert_int_eq(errno, EPIPE);
}
END_TEST

START_TEST(test_ehlo_keywords)
{
    struct smtp_ext e;
    const char *l[] = { "250-mx greets STARTTLS", "250-PIPELINING", "250-SIZE 52428800", "250-8BITMIME",
                        "250-dsn", "250-AUTH LOGIN PLAIN", "250-ENHANCEDSTATUSCODES", "250 STARTTLS", NULL };
    feed_lines(&rep, l);
    smtp_ext_parse(&e, &rep);
    ck_assert(e.esmtp && e.starttls && e.pipelining && e.eightbitmime && e.dsn && e.auth_plain && e.enhanced);
    ck_assert(e.size);
    ck_assert_uint_eq(e.size_max, 52428800ULL);
    ck_assert(!e.smtputf8);
    const char *g[] = { "250-mx STARTTLS PIPELINING", "250 SIZE 99999999999999999999999", NULL };
    feed_lines(&rep, g);
    smtp_ext_parse(&e, &rep);
    ck_assert(!e.starttls && !e.pipelining);      /* words of the greeting line are no keywords */
    ck_assert(e.size);
    ck_assert_uint_eq(e.size_max, 0);             /* overflow: treated as "no limit given" */
}
END_TEST

START_TEST(test_base64_xtext)
{
    char b[64];
    ck_assert(smtp_base64((const unsigned char *)"\0user\0pass", 10, b, sizeof b));
    ck_assert_str_eq(b, "AHVzZXIAcGFzcw==");
    ck_assert(smtp_base64((const unsigned char *)"ab", 2, b, sizeof b));
    ck_assert_str_eq(b, "YWI=");
    ck_assert(!smtp_base64((const unsigned char *)"abcdef", 6, b, 8));
    ck_assert(smtp_xtext("a+b=c d", b, sizeof b));
    ck_assert_str_eq(b, "a+2Bb+3Dc+20d");
    ck_assert(!smtp_xtext("a+b", b, 4));
}
END_TEST

static void check_stream(const char *in, size_t n, const char *want)
{
    char out[4096];
    unsigned long long sent = 0;
    int fd = tmpfile_with(in, n);
    ck_assert(lseek(fd, 3, SEEK_SET) == 3);      /* a shared offset must not matter */
    ck_assert(smtp_send_message(&conn, fd, &sent));
    close(fd);
    size_t got = drain(out, sizeof out);
    ck_assert_uint_eq(got, strlen(want));
    ck_assert_uint_eq(sent, strlen(want));
    ck_assert_str_eq(out, want);
}

START_TEST(test_data_stream)
{
    check_stream("a\n.b\n..c\n.\nd", 12, "a\r\n..b\r\n...c\r\n..\r\nd\r\n.\r\n");
    check_stream("", 0, ".\r\n");
    check_stream("x\r\ny\rz\n", 7, "x\r\ny\r\nz\r\n.\r\n");  /* CRLF kept, bare CR a line end */
    check_stream(".\n", 2, "..\r\n.\r\n");
    check_stream("end\r", 4, "end\r\n.\r\n");
}
END_TEST

/* lines longer than RFC 5321's 998 octets are broken with CRLF SPACE */
START_TEST(test_data_stream_long_lines)
{
    char in[3000], want[3100];
    size_t n = 0, w = 0;
    memset(in, 'a', 2500);                       /* 998 + 997 + 505 */
    n = 2500;
    memset(want, 'a', 998); w = 998;
    memcpy(want + w, "\r\n ", 3); w += 3;
    memset(want + w, 'a', 997); w += 997;
    memcpy(want + w, "\r\n ", 3); w += 3;
    memset(want + w, 'a', 505); w += 505;
    memcpy(want + w, "\r\n.\r\n", 5); w += 5;
    want[w] = 0;
    check_stream(in, n, want);

    memset(in, 'a', 998);                        /* exactly the limit: kept */
    in[998] = '\n';
    memset(want, 'a', 998);
    memcpy(want + 998, "\r\n.\r\n", 6);   /* with the NUL */
    check_stream(in, 999, want);

    memset(in, 'a', 999);                        /* one over */
    memset(want, 'a', 998);
    memcpy(want + 998, "\r\n a\r\n.\r\n", 10);
    check_stream(in, 999, want);

    in[0] = '.';                                 /* the stuffed dot counts */
    memset(in + 1, 'b', 997);
    in[998] = '\n';
    memcpy(want, "..", 2);
    memset(want + 2, 'b', 996);
    memcpy(want + 998, "\r\n b\r\n.\r\n", 10);
    check_stream(in, 999, want);
}
END_TEST

START_TEST(test_data_stream_large)
{
    /* lines crossing the 16 KB read boundary, a dot at the boundary */
    size_t n = 40000;
    char *m = malloc(n);
    ck_assert_ptr_nonnull(m);
    for (size_t i = 0; i < n; i++) m[i] = (i % 100 == 99) ? '\n' : (i % 100 == 0 ? '.' : 'q');
    m[16383] = '\n';
    m[16384] = '.';
    int fd = tmpfile_with(m, n);
    int rfd[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, rfd), 0);
    close(sp[1]);
    sp[1] = rfd[1];
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (!pid) {   /* a reader so the writer never blocks */
        close(rfd[0]);
        free(m);  /* the parent's copy (valgrind counts the child's heap too) */
        char b[65536];
        size_t tot = 0, dots = 0;
        ssize_t r;
        int bol = 1;
        while ((r = read(rfd[1], b, sizeof b)) > 0)
            for (ssize_t i = 0; i < r; i++, tot++) {
                if (bol && b[i] == '.') dots++;
                bol = b[i] == '\n';
            }
        /* 401 lines (one more LF at 16383), 401 of them starting with a dot
         * (doubled), + the final ".\r\n" */
        _exit(tot == n + 401 + 401 + 3 && dots == 402 ? 0 : 1);
    }
    smtp_conn_init(&conn, rfd[0], 2000);
    /* each original '.' at a line start counts once in "dots", the stuffed
     * one adds no new line start */
    ck_assert(smtp_send_message(&conn, fd, NULL));
    close(rfd[0]);
    int ws;
    waitpid(pid, &ws, 0);
    ck_assert(WIFEXITED(ws));
    ck_assert_int_eq(WEXITSTATUS(ws), 0);
    close(fd);
    free(m);
}
END_TEST

static const char *script_ok =
    "220 mx.test ESMTP\r\n"
    "250-mx.test\r\n250-SIZE 100000\r\n250-DSN\r\n250 8BITMIME\r\n"
    "250 2.1.0 ok\r\n"
    "250 2.1.5 ok\r\n"
    "354 go\r\n"
    "250 2.0.0 queued\r\n"
    "221 bye\r\n";

START_TEST(test_transaction_success)
{
    char status[1024], out[4096];
    int fd = tmpfile_with("Subject: x\n\n.hi\n", 16);
    struct smtp_job j = { .helo = "me.test", .sender = "a@b.test", .rcpt = "c@d.test", .orcpt = "",
                          .notify = "FAILURE", .envid = "E1", .body8bit = 1, .msgfd = fd, .size = 16,
                          .tls = SMTP_TLS_MAY };
    feed(script_ok);
    ck_assert_int_eq(smtp_transaction(&conn, &j, NULL, NULL, "mx.test[192.0.2.1]", status, sizeof status),
                     SMTP_DELIVERED);
    ck_assert_str_eq(status, "2.0.0 host mx.test[192.0.2.1] said: 250 2.0.0 queued");
    drain(out, sizeof out);
    ck_assert_str_eq(out,
        "EHLO me.test\r\n"
        "MAIL FROM:<a@b.test> SIZE=16 BODY=8BITMIME ENVID=E1\r\n"
        "RCPT TO:<c@d.test> NOTIFY=FAILURE ORCPT=rfc822;c@d.test\r\n"
        "DATA\r\n"
        "Subject: x\r\n\r\n..hi\r\n.\r\n"
        "QUIT\r\n");
    close(fd);
}
END_TEST

/* a kept session: no QUIT after the first transaction, the second goes
 * straight to MAIL with the first session's keywords, and a reused session
 * that closed (no reply to MAIL) or says 421 asks for a new connection */
START_TEST(test_transaction_reuse)
{
    char status[1024], out[4096];
    int fd = tmpfile_with("x\n", 2);
    struct smtp_reuse ru = { .keep = 1 };
    struct smtp_job j = { .helo = "me.test", .sender = "a@b.test", .rcpt = "c@d.test", .orcpt = "",
                          .notify = "", .envid = "", .msgfd = fd, .size = 2, .tls = SMTP_TLS_MAY,
                          .reuse = &ru };
    feed("220 mx.test ESMTP\r\n250-mx.test\r\n250-PIPELINING\r\n250 SIZE 100\r\n"
         "250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go\r\n250 2.0.0 one\r\n");
    ck_assert_int_eq(smtp_transaction(&conn, &j, NULL, NULL, "mx", status, sizeof status), SMTP_DELIVERED);
    ck_assert(ru.open);
    ck_assert(ru.ext.pipelining && ru.ext.size && ru.ext.size_max == 100);
    drain(out, sizeof out);
    ck_assert_str_eq(out, "EHLO me.test\r\nMAIL FROM:<a@b.test> SIZE=2\r\nRCPT TO:<c@d.test>\r\n"
                          "DATA\r\nx\r\n.\r\n");               /* no QUIT */
    /* the next one on the same session: MAIL first, pipelined as before */
    ru.established = 1;
    ru.keep = 0;
    j.sender = "";
    j.rcpt = "e@d.test";
    feed("250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go\r\n250 2.0.0 two\r\n221 bye\r\n");
    ck_assert_int_eq(smtp_transaction(&conn, &j, NULL, NULL, "mx", status, sizeof status), SMTP_DELIVERED);
    ck_assert_str_eq(status, "2.0.0 host mx said: 250 2.0.0 two");
    ck_assert(!ru.open);
    drain(out, sizeof out);
    ck_assert_str_eq(out, "MAIL FROM:<> SIZE=2\r\nRCPT TO:<e@d.test>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n");
    /* 421 to MAIL on a reused session: start over, nothing was sent past MAIL/RCPT */
    ru.keep = 1;
    feed("421 4.4.2 mx idle too long\r\n");
    ck_assert_int_eq(smtp_transaction(&conn, &j, NULL, NULL, "mx", status, sizeof status), SMTP_RECONNECT);
    ck_assert(!ru.open);
    drain(out, sizeof out);
    ck_assert_str_eq(out, "MAIL FROM:<> SIZE=2\r\nRCPT TO:<e@d.test>\r\n");
    /* the same 421 on a fresh session is the server's answer, not a reason
     * to reconnect to it: the next address, as after a 421 greeting */
    ru.established = 0;
    feed("220 mx\r\n250 mx\r\n421 4.3.2 going down\r\n221 bye\r\n");
    ck_assert_int_eq(smtp_transaction(&conn, &j, NULL, NULL, "mx", status, sizeof status), SMTP_NEXT_HOST);
    ck_assert_str_eq(status, "4.3.2 host mx said: 421 4.3.2 going down (in reply to MAIL FROM)");
    drain(out, sizeof out);
    /* a reused session closed by the server: no reply to MAIL */
    ru.established = 1;
    close(sp[1]);
    sp[1] = -1;
    ck_assert_int_eq(smtp_transaction(&conn, &j, NULL, NULL, "mx", status, sizeof status), SMTP_RECONNECT);
    ck_assert(!ru.open);
    close(fd);
}
END_TEST

/* a 421 to the first RCPT (MAIL accepted, nothing else) is the server
 * closing before it took anything, as a 421 to MAIL: the next address,
 * whatever the other pipelined RCPTs' replies would have been */
START_TEST(test_transaction_421_at_rcpt)
{
    char status[1024], out[4096], status2[2][512];
    int fd = tmpfile_with("x\n", 2);
    struct smtp_job j = { .helo = "me.test", .sender = "", .rcpt = "e@d.test", .orcpt = "",
                          .notify = "", .envid = "", .msgfd = fd, .size = 2, .tls = SMTP_TLS_MAY };
    struct smtp_rcpt two[2] = {
        { .addr = "e@d.test", .orcpt = "", .notify = "", .status = status2[0], .cap = sizeof status2[0] },
        { .addr = "f@d.test", .orcpt = "", .notify = "", .status = status2[1], .cap = sizeof status2[1] },
    };
    feed("220 mx\r\n250-mx\r\n250 PIPELINING\r\n250 2.1.0 ok\r\n421 4.7.0 too fast, closing\r\n");
    ck_assert_int_eq(smtp_transaction_multi(&conn, &j, two, 2, NULL, NULL, "mx", status, sizeof status),
                     SMTP_NEXT_HOST);
    ck_assert_str_eq(status, "4.7.0 host mx said: 421 4.7.0 too fast, closing (in reply to RCPT TO)");
    drain(out, sizeof out);
    ck_assert_str_eq(out, "EHLO me.test\r\nMAIL FROM:<>\r\nRCPT TO:<e@d.test>\r\nRCPT TO:<f@d.test>\r\n");
    close(fd);
}
END_TEST

START_TEST(test_transaction_rcpt_refused)
{
    char status[1024];
    int fd = tmpfile_with("x\n", 2);
    struct smtp_job j = { .helo = "me.test", .sender = "", .rcpt = "c@d.test", .orcpt = "", .notify = "",
                          .envid = "", .msgfd = fd, .size = 2, .tls = SMTP_TLS_MAY };
    feed("220 mx\r\n250 mx\r\n250 ok\r\n550-5.1.1 no\r\n550 5.1.1 such user\r\n221 bye\r\n");
    ck_assert_int_eq(smtp_transaction(&conn, &j, NULL, NULL, "mx[192.0.2.1]", status, sizeof status),
                     SMTP_PERMFAIL);
    ck_assert_str_eq(status, "5.1.1 host mx[192.0.2.1] said: 550 5.1.1 no 5.1.1 such user (in reply to RCPT TO)");
    close(fd);
}
END_TEST

START_TEST(test_transaction_reply_out_of_turn)
{
    /* a reply the server sent unasked, with the one before it: read on, it
     * would answer the next command (RCPT's refusal taken for DATA's; a
     * 250 behind the 354 taken for the end of data while the server reads
     * the message as commands). Temporary, and nothing more is sent. */
    char status[1024], out[4096];
    int fd = tmpfile_with("x\n", 2);
    struct smtp_job j = { .helo = "me.test", .sender = "", .rcpt = "c@d.test", .orcpt = "", .notify = "",
                          .envid = "", .msgfd = fd, .size = 2, .tls = SMTP_TLS_MAY };
    feed("220 mx\r\n250 mx\r\n");
    feed_together("250 2.1.0 ok\r\n250 2.1.0 extra\r\n");
    feed("550 5.1.1 no such user\r\n");
    ck_assert_int_eq(smtp_transaction(&conn, &j, NULL, NULL, "mx", status, sizeof status), SMTP_TEMPFAIL);
    ck_assert_str_eq(status, "4.4.2 bad reply from server mx (reply out of turn, before RCPT TO)");
    drain(out, sizeof out);
    ck_assert_str_eq(out, "EHLO me.test\r\nMAIL FROM:<>\r\n");
    teardown();
    setup();
    feed("220 mx\r\n250 mx\r\n250 ok\r\n250 ok\r\n");
    feed_together("354 go\r\n250 2.0.0 queued before the data\r\n");
    ck_assert_int_eq(smtp_transaction(&conn, &j, NULL, NULL, "mx", status, sizeof status), SMTP_TEMPFAIL);
    ck_assert_str_eq(status, "4.4.2 bad reply from server mx (reply out of turn, before message content)");
    drain(out, sizeof out);
    ck_assert_str_eq(out, "EHLO me.test\r\nMAIL FROM:<>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n");
    teardown();
    setup();
    feed_together("220 mx\r\n220 mx again\r\n");
    ck_assert_int_eq(smtp_transaction(&conn, &j, NULL, NULL, "mx", status, sizeof status), SMTP_NEXT_HOST);
    ck_assert_str_eq(status, "4.4.2 bad reply from server mx (reply out of turn, before EHLO)");
    close(fd);
}
END_TEST

START_TEST(test_transaction_unexpected_success_code)
{
    /* found by fuzz_smtp_client: a 2xx that is not the expected one must
     * not produce a "2.x.x" text for a failure */
    char status[1024];
    struct smtp_job j = { .helo = "me.test", .sender = "", .rcpt = "c@d.test", .orcpt = "", .notify = "",
                          .envid = "", .msgfd = -1, .tls = SMTP_TLS_NONE };
    /* (MAIL, RCPT and the end of data take any 2xx as success, RFC 5321
     * 4.2.1; HELO wants its 250) */
    feed("220 mx\r\n502 no\r\n221 bye\r\n");
    ck_assert_int_eq(smtp_transaction(&conn, &j, NULL, NULL, "mx", status, sizeof status), SMTP_NEXT_HOST);
    ck_assert_str_eq(status, "4.5.0 host mx said: 221 bye (in reply to HELO)");
    teardown();
    setup();
    feed("250 not a greeting\r\n");
    ck_assert_int_eq(smtp_transaction(&conn, &j, NULL, NULL, "mx", status, sizeof status), SMTP_NEXT_HOST);
    ck_assert(!strncmp(status, "4.5.0 ", 6));
    /* a server that greets with our own name is this host: SMTP_LOOP, so
     * that no further (less preferred) address is tried */
    teardown();
    setup();
    feed("220 ME.test. ESMTP\r\n221 bye\r\n");
    ck_assert_int_eq(smtp_transaction(&conn, &j, NULL, NULL, "mx", status, sizeof status), SMTP_LOOP);
    ck_assert(!strncmp(status, "5.4.6 mail loops back to myself: host mx greeted me with", 56));
}
END_TEST

START_TEST(test_transaction_tls_required)
{
    char status[1024];
    struct smtp_job j = { .helo = "me.test", .sender = "", .rcpt = "c@d.test", .orcpt = "", .notify = "",
                          .envid = "", .msgfd = -1, .tls = SMTP_TLS_REQUIRE };
    feed("220 mx\r\n250 mx\r\n221 bye\r\n");
    ck_assert_int_eq(smtp_transaction(&conn, &j, NULL, NULL, "mx", status, sizeof status), SMTP_NEXT_HOST);
    ck_assert(!strncmp(status, "4.7.5 ", 6));
}
END_TEST

START_TEST(test_transaction_too_big_and_bad_address)
{
    char status[1024];
    struct smtp_job j = { .helo = "me.test", .sender = "", .rcpt = "c@d.test", .orcpt = "", .notify = "",
                          .envid = "", .msgfd = -1, .size = 2000, .tls = SMTP_TLS_NONE };
    feed("220 mx\r\n250-mx\r\n250 SIZE 1000\r\n221 bye\r\n");
    ck_assert_int_eq(smtp_transaction(&conn, &j, NULL, NULL, "mx", status, sizeof status), SMTP_PERMFAIL);
    ck_assert(!strncmp(status, "5.3.4 ", 6));
    j.rcpt = "c@d.test>\r\nRCPT TO:<x@y";
    ck_assert_int_eq(smtp_transaction(&conn, &j, NULL, NULL, "mx", status, sizeof status), SMTP_PERMFAIL);
    ck_assert(!strncmp(status, "5.1.3 ", 6));
    j.rcpt = "a b@d.test";
    ck_assert_int_eq(smtp_transaction(&conn, &j, NULL, NULL, "mx", status, sizeof status), SMTP_PERMFAIL);
    ck_assert(!strncmp(status, "5.1.3 ", 6));
    j.rcpt = "\"a b@d.test";   /* unbalanced quote */
    ck_assert_int_eq(smtp_transaction(&conn, &j, NULL, NULL, "mx", status, sizeof status), SMTP_PERMFAIL);
}
END_TEST

START_TEST(test_transaction_quoted_and_utf8)
{
    char status[1024], out[2048];
    int fd = tmpfile_with("x\n", 2);
    struct smtp_job j = { .helo = "me.test", .sender = "\"j doe\"@b.test", .rcpt = "J\xc3\xb6rg@d.test", .orcpt = "",
                          .notify = "", .envid = "", .msgfd = fd, .size = 2, .tls = SMTP_TLS_NONE };
    feed("220 mx\r\n250-mx\r\n250 SMTPUTF8\r\n250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n221 bye\r\n");
    ck_assert_int_eq(smtp_transaction(&conn, &j, NULL, NULL, "mx", status, sizeof status), SMTP_DELIVERED);
    drain(out, sizeof out);
    ck_assert(!strncmp(out, "EHLO me.test\r\nMAIL FROM:<\"j doe\"@b.test> SMTPUTF8\r\nRCPT TO:<J\xc3\xb6rg@d.test>\r\n", 70));
    teardown();
    setup();
    feed("220 mx\r\n250 mx\r\n221 bye\r\n");   /* no SMTPUTF8: cannot be sent */
    ck_assert_int_eq(smtp_transaction(&conn, &j, NULL, NULL, "mx", status, sizeof status), SMTP_PERMFAIL);
    ck_assert(!strncmp(status, "5.6.7 ", 6));
    /* with DSN, the ORCPT made from a non-ASCII address is RFC 6533's
     * utf-8 type ('+', '=' and '\\' as \x{..}): an rfc822 ORCPT must
     * decode to printable ASCII (RFC 3461 4.2), which a strict server
     * refuses with 501 */
    teardown();
    setup();
    j.rcpt = "J\xc3\xb6rg+a=b@d.test";
    feed("220 mx\r\n250-mx\r\n250-DSN\r\n250 SMTPUTF8\r\n250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n221 bye\r\n");
    ck_assert_int_eq(smtp_transaction(&conn, &j, NULL, NULL, "mx", status, sizeof status), SMTP_DELIVERED);
    drain(out, sizeof out);
    ck_assert_ptr_nonnull(strstr(out, "RCPT TO:<J\xc3\xb6rg+a=b@d.test> ORCPT=utf-8;J\xc3\xb6rg\\x{2B}a\\x{3D}b@d.test\r\n"));
    close(fd);
}
END_TEST

/* a client's own UTF-8 ORCPT (RFC 6533 unitext, as smtp-listener takes it)
 * is kept: as it came when the transaction has SMTPUTF8, else in its
 * utf-8-addr-xtext form (\x{code point}); it used to be replaced by one
 * made from the current recipient, losing the original address */
/* one transaction of j against the server replies in script, on a fresh
 * connection; what the client sent into out */
static void transaction_sent(struct smtp_job *j, const char *script, char *out, size_t cap)
{
    char status[1024];
    teardown();
    setup();
    feed(script);
    ck_assert_int_eq(smtp_transaction(&conn, j, NULL, NULL, "mx", status, sizeof status), SMTP_DELIVERED);
    drain(out, cap);
}

START_TEST(test_utf8_orcpt_kept)
{
    static const char dsn[] = "220 mx\r\n250-mx\r\n250 DSN\r\n250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n221 bye\r\n";
    char out[2048];
    int fd = tmpfile_with("x\n", 2);
    struct smtp_job j = { .helo = "me.test", .sender = "a@b.test", .rcpt = "fwd@d.test",
                          .orcpt = "utf-8;J\xc3\xb6rg\\x{2B}a\xe2\x82\xac\xf0\x9f\x98\x80@c.test",
                          .notify = "", .envid = "", .msgfd = fd, .size = 2, .tls = SMTP_TLS_NONE };
    transaction_sent(&j, dsn, out, sizeof out);
    ck_assert_msg(strstr(out, "RCPT TO:<fwd@d.test> ORCPT=utf-8;J\\x{F6}rg\\x{2B}a\\x{20AC}\\x{1F600}@c.test\r\n") != NULL,
                  "%s", out);
    j.smtputf8 = 1;
    transaction_sent(&j, "220 mx\r\n250-mx\r\n250-DSN\r\n250 SMTPUTF8\r\n250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n221 bye\r\n",
                     out, sizeof out);
    ck_assert_msg(strstr(out, " SMTPUTF8\r\nRCPT TO:<fwd@d.test> ORCPT=utf-8;J\xc3\xb6rg\\x{2B}a\xe2\x82\xac\xf0\x9f\x98\x80@c.test\r\n") != NULL,
                  "%s", out);
    /* not valid UTF-8: made from the recipient, as before */
    j.smtputf8 = 0;
    j.orcpt = "utf-8;J\xc3rg@c.test";
    transaction_sent(&j, dsn, out, sizeof out);
    ck_assert_msg(strstr(out, "RCPT TO:<fwd@d.test> ORCPT=rfc822;fwd@d.test\r\n") != NULL, "%s", out);
    close(fd);
}
END_TEST

static int hook_calls;
static int fake_starttls(void *ctx, struct smtp_conn *c, char *why, size_t whylen)
{
    (void)ctx; (void)c;
    hook_calls++;
    snprintf(why, whylen, "refused by the test");
    return 0;
}

START_TEST(test_starttls_injection_and_failure)
{
    char status[1024];
    struct smtp_job j = { .helo = "me.test", .sender = "", .rcpt = "c@d.test", .orcpt = "", .notify = "",
                          .envid = "", .msgfd = -1, .tls = SMTP_TLS_MAY };
    /* bytes after the 220 to STARTTLS: the handshake is never attempted */
    hook_calls = 0;
    feed("220 mx\r\n250-mx\r\n250 STARTTLS\r\n");
    feed_together("220 go\r\n250 injected\r\n");
    ck_assert_int_eq(smtp_transaction(&conn, &j, fake_starttls, NULL, "mx", status, sizeof status),
                     SMTP_RETRY_PLAIN);
    ck_assert_int_eq(hook_calls, 0);
    ck_assert(strstr(status, "sent data after its STARTTLS reply"));
    teardown();
    setup();
    j.tls = SMTP_TLS_REQUIRE;
    feed("220 mx\r\n250-mx\r\n250 STARTTLS\r\n220 go\r\n");
    ck_assert_int_eq(smtp_transaction(&conn, &j, fake_starttls, NULL, "mx", status, sizeof status),
                     SMTP_NEXT_HOST);
    ck_assert_int_eq(hook_calls, 1);
    ck_assert_str_eq(status, "4.7.5 TLS with host mx failed: refused by the test");
}
END_TEST

/* ---- several recipients in one transaction ---- */

static char mst[3][512];
static struct smtp_rcpt mr[3];

static void multi_setup(void)
{
    static const char *addrs[3] = { "r1@d.test", "r2@d.test", "r3@d.test" };
    static const char *notify[3] = { "FAILURE", "", "SUCCESS,FAILURE" };
    static const char *orcpt[3] = { "", "rfc822;orig2@x.test", "" };
    for (int i = 0; i < 3; i++) {
        mr[i] = (struct smtp_rcpt){ .addr = addrs[i], .orcpt = orcpt[i], .notify = notify[i],
                                    .outcome = SMTP_NEXT_HOST, .status = mst[i], .cap = sizeof mst[i] };
        snprintf(mst[i], sizeof mst[i], "unset");
    }
}

/* smtp_transaction_multi with multi_setup()'s three recipients returns
 * want and leaves them with the outcomes o0, o1 and o2 */
static void multi_outcomes(const struct smtp_job *j, char *status, size_t len, enum smtp_outcome want,
                           enum smtp_outcome o0, enum smtp_outcome o1, enum smtp_outcome o2)
{
    ck_assert_int_eq(smtp_transaction_multi(&conn, j, mr, 3, NULL, NULL, "mx", status, len), want);
    ck_assert_int_eq(mr[0].outcome, o0);
    ck_assert_int_eq(mr[1].outcome, o1);
    ck_assert_int_eq(mr[2].outcome, o2);
}

START_TEST(test_multi_one_refused)
{
    char status[1024], out[4096];
    int fd = tmpfile_with("x\n", 2);
    struct smtp_job j = { .helo = "me.test", .sender = "a@b.test", .envid = "", .msgfd = fd, .size = 2,
                          .tls = SMTP_TLS_NONE };
    multi_setup();
    feed("220 mx\r\n250-mx\r\n250 DSN\r\n250 ok\r\n250 ok\r\n550 5.1.1 no such user\r\n250 ok\r\n"
         "354 go\r\n250 2.0.0 queued\r\n221 bye\r\n");
    multi_outcomes(&j, status, sizeof status, SMTP_DELIVERED, SMTP_DELIVERED, SMTP_PERMFAIL, SMTP_DELIVERED);
    ck_assert_str_eq(mst[0], "2.0.0 host mx said: 250 2.0.0 queued");
    ck_assert_str_eq(mst[1], "5.1.1 host mx said: 550 5.1.1 no such user (in reply to RCPT TO)");
    ck_assert_str_eq(mst[2], "2.0.0 host mx said: 250 2.0.0 queued");
    drain(out, sizeof out);
    ck_assert_str_eq(out,
        "EHLO me.test\r\n"
        "MAIL FROM:<a@b.test>\r\n"
        "RCPT TO:<r1@d.test> NOTIFY=FAILURE ORCPT=rfc822;r1@d.test\r\n"
        "RCPT TO:<r2@d.test> ORCPT=rfc822;orig2@x.test\r\n"
        "RCPT TO:<r3@d.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;r3@d.test\r\n"
        "DATA\r\nx\r\n.\r\nQUIT\r\n");
    close(fd);
}
END_TEST

START_TEST(test_multi_all_refused_no_data)
{
    char status[1024], out[4096];
    int fd = tmpfile_with("x\n", 2);
    struct smtp_job j = { .helo = "me.test", .sender = "", .envid = "", .msgfd = fd, .size = 2,
                          .tls = SMTP_TLS_NONE };
    multi_setup();
    feed("220 mx\r\n250-mx\r\n250 PIPELINING\r\n250 ok\r\n550 5.1.1 no\r\n451 4.3.0 later\r\n553 bad\r\n221 bye\r\n");
    multi_outcomes(&j, status, sizeof status, SMTP_DELIVERED, SMTP_PERMFAIL, SMTP_TEMPFAIL, SMTP_PERMFAIL);
    ck_assert_str_eq(mst[1], "4.3.0 host mx said: 451 4.3.0 later (in reply to RCPT TO)");
    ck_assert_str_eq(mst[2], "5.0.0 host mx said: 553 bad (in reply to RCPT TO)");
    drain(out, sizeof out);
    ck_assert_str_eq(out,   /* pipelined, no DSN offered: no NOTIFY/ORCPT; no DATA */
        "EHLO me.test\r\nMAIL FROM:<>\r\nRCPT TO:<r1@d.test>\r\nRCPT TO:<r2@d.test>\r\n"
        "RCPT TO:<r3@d.test>\r\nQUIT\r\n");
    close(fd);
}
END_TEST

START_TEST(test_multi_mail_refused_applies_to_all)
{
    char status[1024];
    struct smtp_job j = { .helo = "me.test", .sender = "", .envid = "", .msgfd = -1, .tls = SMTP_TLS_NONE };
    multi_setup();
    feed("220 mx\r\n250-mx\r\n250 PIPELINING\r\n550 5.7.1 go away\r\n503 a\r\n503 b\r\n503 c\r\n221 bye\r\n");
    ck_assert_int_eq(smtp_transaction_multi(&conn, &j, mr, 3, NULL, NULL, "mx", status, sizeof status),
                     SMTP_PERMFAIL);
    ck_assert_str_eq(status, "5.7.1 host mx said: 550 5.7.1 go away (in reply to MAIL FROM)");
    teardown();
    setup();
    feed("421 busy\r\n");
    ck_assert_int_eq(smtp_transaction_multi(&conn, &j, mr, 3, NULL, NULL, "mx", status, sizeof status),
                     SMTP_NEXT_HOST);
}
END_TEST

START_TEST(test_multi_too_many_recipients)
{
    char status[1024], out[4096];
    int fd = tmpfile_with("x\n", 2);
    struct smtp_job j = { .helo = "me.test", .sender = "", .envid = "", .msgfd = fd, .size = 2,
                          .tls = SMTP_TLS_NONE };
    /* lock-step: after the 452 the third RCPT is not sent, it waits too */
    multi_setup();
    feed("220 mx\r\n250 mx\r\n250 ok\r\n250 ok\r\n452 4.5.3 too many recipients\r\n354 go\r\n250 ok\r\n221 bye\r\n");
    multi_outcomes(&j, status, sizeof status, SMTP_DELIVERED, SMTP_DELIVERED, SMTP_TEMPFAIL, SMTP_TEMPFAIL);
    ck_assert_str_eq(mst[1], "4.5.3 host mx said: 452 4.5.3 too many recipients (in reply to RCPT TO)");
    ck_assert_str_eq(mst[2], mst[1]);
    drain(out, sizeof out);
    ck_assert_str_eq(out, "EHLO me.test\r\nMAIL FROM:<>\r\nRCPT TO:<r1@d.test>\r\nRCPT TO:<r2@d.test>\r\n"
                          "DATA\r\nx\r\n.\r\nQUIT\r\n");
    teardown();
    setup();
    /* pipelined: each RCPT has its reply */
    multi_setup();
    feed("220 mx\r\n250-mx\r\n250 PIPELINING\r\n250 ok\r\n250 ok\r\n452 4.5.3 too many\r\n452 4.5.3 too many\r\n"
         "354 go\r\n250 ok\r\n221 bye\r\n");
    multi_outcomes(&j, status, sizeof status, SMTP_DELIVERED, SMTP_DELIVERED, SMTP_TEMPFAIL, SMTP_TEMPFAIL);
    /* the connection lost after the RCPTs: the accepted one is temporary,
     * the refused ones keep their replies */
    teardown();
    setup();
    multi_setup();
    feed("220 mx\r\n250 mx\r\n250 ok\r\n250 ok\r\n550 5.1.1 no\r\n250 ok\r\n");
    shutdown(sp[1], SHUT_WR);   /* the server hangs up after the RCPT replies */
    multi_outcomes(&j, status, sizeof status, SMTP_DELIVERED, SMTP_TEMPFAIL, SMTP_PERMFAIL, SMTP_TEMPFAIL);
    ck_assert(!strncmp(mst[0], "4.4.2 ", 6));
    /* bounds: no recipient, too many */
    ck_assert_int_eq(smtp_transaction_multi(&conn, &j, mr, 0, NULL, NULL, "mx", status, sizeof status),
                     SMTP_TEMPFAIL);
    ck_assert_int_eq(smtp_transaction_multi(&conn, &j, mr, SMTP_RCPT_MAX + 1, NULL, NULL, "mx", status,
                                            sizeof status), SMTP_TEMPFAIL);
    close(fd);
}
END_TEST

/* ---- limits ---- */

START_TEST(test_line_length_bound)
{
    char line[1200];
    memcpy(line, "250 ", 4);
    memset(line + 4, 'a', sizeof line - 4);
    memcpy(line + 998, "\r\n", 2);   /* 998 octets + CRLF = 1000: accepted */
    ck_assert(fd_write_all(sp[1], line, 1000, 1000));
    ck_assert(smtp_read_reply(&conn, &rep, 500));
    ck_assert_uint_eq(rep.len, 994);
    memset(line + 4, 'a', sizeof line - 4);
    memcpy(line + 999, "\r\n", 2);   /* 1001 octets: refused */
    ck_assert(fd_write_all(sp[1], line, 1001, 1000));
    ck_assert(!smtp_read_reply(&conn, &rep, 500));
    ck_assert_int_eq(errno, EPROTO);
}
END_TEST

START_TEST(test_line_count_bound)
{
    smtp_reply_init(&rep);
    for (int i = 0; i < SMTP_REPLY_LINES_MAX - 1; i++) ck_assert_int_eq(smtp_reply_feed(&rep, "250-x", 5), 0);
    ck_assert_int_eq(smtp_reply_feed(&rep, "250 x", 5), 1);   /* line 100: fine */
    smtp_reply_init(&rep);
    for (int i = 0; i < SMTP_REPLY_LINES_MAX; i++) ck_assert_int_eq(smtp_reply_feed(&rep, "250-x", 5), 0);
    ck_assert_int_eq(smtp_reply_feed(&rep, "250 x", 5), -1);  /* line 101 */
}
END_TEST

START_TEST(test_total_size_bound)
{
    char line[1000];
    memcpy(line, "250-", 4);
    memset(line + 4, 'b', sizeof line - 4);
    smtp_reply_init(&rep);
    int k = 0, i;
    for (i = 0; i < 40 && k == 0; i++) k = smtp_reply_feed(&rep, line, 998);
    ck_assert_int_eq(k, -1);
    ck_assert_int_eq(i, 17);              /* 16 lines of 994 (+\n) fit in 16 KB, the 17th does not */
    ck_assert_uint_le(rep.len, SMTP_REPLY_TOTAL_MAX);
}
END_TEST

START_TEST(test_endless_continuation_from_socket)
{
    char c[7 * 200];
    for (size_t i = 0; i < 200; i++) memcpy(c + 7 * i, "250-x\r\n", 7);
    ck_assert(fd_write_all(sp[1], c, sizeof c, 1000));
    ck_assert(!smtp_read_reply(&conn, &rep, 500));
    ck_assert_int_eq(errno, EPROTO);
    ck_assert_uint_eq(rep.nlines, SMTP_REPLY_LINES_MAX);
}
END_TEST

START_TEST(test_reply_timeout_total)
{
    /* a server that trickles: the bound is for the whole reply */
    feed("250-a\r\n");
    ck_assert(!smtp_read_reply(&conn, &rep, 200));
    ck_assert_int_eq(errno, ETIMEDOUT);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("smtp_client");
    TCase *core = tcase_create("core");
    tcase_add_checked_fixture(core, setup, teardown);
    tcase_add_test(core, test_reply_single_and_multiline);
    tcase_add_test(core, test_reply_garbage_codes);
    tcase_add_test(core, test_reply_status_and_summary);
    tcase_add_test(core, test_read_reply_from_socket);
    tcase_add_test(core, test_read_reply_bare_lf_and_cr);
    tcase_add_test(core, test_read_reply_eof);
    tcase_add_test(core, test_ehlo_keywords);
    tcase_add_test(core, test_base64_xtext);
    tcase_add_test(core, test_data_stream);
    tcase_add_test(core, test_data_stream_long_lines);
    tcase_add_test(core, test_data_stream_large);
    tcase_add_test(core, test_transaction_success);
    tcase_add_test(core, test_transaction_reuse);
    tcase_add_test(core, test_transaction_421_at_rcpt);
    tcase_add_test(core, test_transaction_rcpt_refused);
    tcase_add_test(core, test_transaction_tls_required);
    tcase_add_test(core, test_transaction_unexpected_success_code);
    tcase_add_test(core, test_transaction_too_big_and_bad_address);
    tcase_add_test(core, test_starttls_injection_and_failure);
    tcase_add_test(core, test_transaction_reply_out_of_turn);
    tcase_add_test(core, test_transaction_quoted_and_utf8);
    tcase_add_test(core, test_utf8_orcpt_kept);
    tcase_add_test(core, test_multi_one_refused);
    tcase_add_test(core, test_multi_all_refused_no_data);
    tcase_add_test(core, test_multi_mail_refused_applies_to_all);
    suite_add_tcase(s, core);
    TCase *lim = tcase_create("limits");
    tcase_add_checked_fixture(lim, setup, teardown);
    tcase_add_test(lim, test_line_length_bound);
    tcase_add_test(lim, test_line_count_bound);
    tcase_add_test(lim, test_total_size_bound);
    tcase_add_test(lim, test_endless_continuation_from_socket);
    tcase_add_test(lim, test_reply_timeout_total);
    tcase_add_test(lim, test_multi_too_many_recipients);
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
