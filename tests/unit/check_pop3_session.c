/* check_pop3_session.c - the POP3 state machine driven from byte scripts:
 * every input line in, the whole output compared. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "pop3_session.h"
#include "sasl.h"

/* fsync, failing with EIO while fsync_fails (this program's own, which
 * the UPDATE's calls reach) */
static int fsync_fails;
int fsync(int fd)
{
    if (fsync_fails) { errno = EIO; return -1; }
    return (int)syscall(SYS_fsync, fd);
}

static char dir[64];
static int dirfd_;
static struct maildrop md;
static FILE *outf;
static unsigned char mem[256];
static struct io out;
static struct pop3_session s;

static void put(const char *sub, const char *name, const char *text)
{
    char p[256];
    snprintf(p, sizeof p, "%s/%s/%s", dir, sub, name);
    FILE *f = fopen(p, "wb");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

static void setup(void)
{
    char p[128];
    snprintf(dir, sizeof dir, "/tmp/check_pop3.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    const char *subs[] = { "tmp", "new", "cur" };
    for (int i = 0; i < 3; i++) { snprintf(p, sizeof p, "%s/%s", dir, subs[i]); ck_assert_int_eq(mkdir(p, 0700), 0); }
    dirfd_ = open(dir, O_RDONLY | O_DIRECTORY);
    put("new", "1.a", "Subject: a\n\n.dot\nbody\n");
    put("cur", "2.b:2,S", "Subject: b\n\nb1\nb2\nb3\n");
    ck_assert(maildrop_open(&md, dirfd_));
    outf = tmpfile();
    io_init(&out, fileno(outf), mem, sizeof mem, 1000);
    pop3_init(&s, &out, 5);
}

static void teardown(void)
{
    char cmd[128];
    maildrop_close(&md);
    close(dirfd_);
    fclose(outf);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
}

/* output so far, then cleared */
static const char *said(void)
{
    static char got[16384];
    ck_assert(io_flush(&out));
    lseek(fileno(outf), 0, SEEK_SET);
    ssize_t n = read(fileno(outf), got, sizeof got - 1);
    ck_assert_int_ge(n, 0);
    got[n] = 0;
    ck_assert_int_eq(ftruncate(fileno(outf), 0), 0);
    lseek(fileno(outf), 0, SEEK_SET);
    return got;
}

/* Feed script (lines ended by "\r\n"; a line longer than max is given as
 * truncated), return everything written. *last gets the last action. */
static const char *run(const char *script, size_t max, enum pop3_action *last)
{
    const char *p = script;
    enum pop3_action act = POP3_CONTINUE;
    while (*p) {
        const char *e = strstr(p, "\r\n");
        ck_assert_ptr_nonnull(e);
        size_t len = (size_t)(e - p);
        int trunc = len > max;
        ck_assert(pop3_line(&s, p, trunc ? max : len, trunc ? POP3_LINE_LONG : POP3_LINE_WHOLE, &act));
        if (act == POP3_LOGIN) {
            /* the "checker": alice/secret only */
            int ok = s.userlen == 5 && !memcmp(s.user, "alice", 5) && s.passlen == 6 && !memcmp(s.pass, "secret", 6);
            ck_assert(pop3_login_result(&s, ok ? POP3_LOGIN_OK : POP3_LOGIN_BAD));
            if (ok) { ck_assert(io_puts(&out, "+OK Logged in.\r\n")); pop3_begin_transaction(&s, &md); }
        }
        p = e + 2;
        if (act == POP3_CLOSE) break;
    }
    if (last) *last = act;
    return said();
}

START_TEST(test_login_and_transaction)
{
    enum pop3_action act;
    ck_assert_str_eq(run("user alice\r\npass wrong\r\npass secret\r\nUSER alice\r\nPASS secret\r\n", 253, &act),
                     "+OK\r\n-ERR [AUTH] Invalid user name or password.\r\n-ERR USER first\r\n+OK\r\n+OK Logged in.\r\n");
    ck_assert_int_eq(s.state, POP3_TRANSACTION);
    ck_assert_str_eq(run("stat\r\nLIST\r\nuidl\r\nlist 2\r\nuidl 1\r\n", 253, &act),
                     "+OK 2 52\r\n"
                     "+OK 2 messages (52 octets)\r\n1 26\r\n2 26\r\n.\r\n"
                     "+OK\r\n1 1.a\r\n2 2.b\r\n.\r\n"
                     "+OK 2 26\r\n+OK 1 1.a\r\n");
    ck_assert_str_eq(run("RETR 1\r\nTOP 2 1\r\ntop 2\r\n", 253, &act),
                     "+OK 26 octets\r\nSubject: a\r\n\r\n..dot\r\nbody\r\n.\r\n"
                     "+OK\r\nSubject: b\r\n\r\nb1\r\n.\r\n"
                     "+OK\r\nSubject: b\r\n\r\n.\r\n");
    ck_assert_str_eq(run("DELE 1\r\nDELE 1\r\nRETR 1\r\nSTAT\r\nLIST\r\nRSET\r\nSTAT\r\nDELE 2\r\nNOOP\r\nQUIT\r\n", 253, &act),
                     "+OK Marked to be deleted.\r\n-ERR Message is deleted.\r\n-ERR Message is deleted.\r\n+OK 1 26\r\n"
                     "+OK 1 messages (26 octets)\r\n2 26\r\n.\r\n+OK\r\n+OK 2 52\r\n+OK Marked to be deleted.\r\n+OK\r\n"
                     "+OK Logging out.\r\n");
    ck_assert_int_eq(act, POP3_CLOSE);
    ck_assert_int_eq(s.state, POP3_DONE);
    char p[128];
    snprintf(p, sizeof p, "%s/cur/2.b:2,S", dir);
    ck_assert_int_ne(access(p, F_OK), 0);                     /* UPDATE removed it */
    snprintf(p, sizeof p, "%s/cur/1.a:2,S", dir);
    ck_assert_int_eq(access(p, F_OK), 0);                     /* retrieved: moved, seen */
}
END_TEST

START_TEST(test_bare_cr_refused)
{
    /* a line that held a bare CR ("CAPA\rQUIT", "DELE 1\rNOOP") is one
     * line, refused whole and counted as an error, in every state; in the
     * SASL exchange it ends the exchange */
    enum pop3_action act;
    ck_assert(pop3_line(&s, "CAPA", 4, POP3_LINE_BARE_CR, &act));
    ck_assert_str_eq(said(), "-ERR Bare CR in command line\r\n");
    ck_assert_int_eq(act, POP3_CONTINUE);
    ck_assert_int_eq(s.state, POP3_AUTHORIZATION);
    ck_assert_uint_eq(s.errors, 1);
    ck_assert_str_eq(run("AUTH PLAIN\r\n", 253, &act), "+ \r\n");
    ck_assert(pop3_line(&s, "AGFsaWNl", 8, POP3_LINE_BARE_CR, &act));
    ck_assert_str_eq(said(), "-ERR Bare CR in command line\r\n");
    ck_assert_int_eq(s.state, POP3_AUTHORIZATION);
    ck_assert_str_eq(run("USER alice\r\nPASS secret\r\n", 253, &act), "+OK\r\n+OK Logged in.\r\n");
    ck_assert(pop3_line(&s, "DELE 1", 6, POP3_LINE_BARE_CR, &act));
    ck_assert_str_eq(said(), "-ERR Bare CR in command line\r\n");
    ck_assert_str_eq(run("STAT\r\n", 253, &act), "+OK 2 52\r\n");   /* nothing deleted */
}
END_TEST

START_TEST(test_quit_not_durable)
{
    /* an fsync of the UPDATE fails: no "+OK" (RFC 1939: -ERR when some
     * change was not made) */
    enum pop3_action act;
    run("USER alice\r\nPASS secret\r\n", 253, &act);
    fsync_fails = 1;
    const char *r = run("RETR 1\r\nQUIT\r\n", 253, &act);
    fsync_fails = 0;
    ck_assert_ptr_nonnull(strstr(r, "\r\n.\r\n-ERR [SYS/TEMP] The changes to the mailbox could not be made durable.\r\n"));
    ck_assert_int_eq(act, POP3_CLOSE);
}
END_TEST

START_TEST(test_enters_update)
{
    /* QUIT in TRANSACTION, and only that, enters UPDATE */
    enum pop3_action act;
    ck_assert(!pop3_enters_update(&s, "QUIT", 4, POP3_LINE_WHOLE));      /* AUTHORIZATION */
    run("USER alice\r\nPASS secret\r\n", 253, &act);
    ck_assert(pop3_enters_update(&s, "QUIT", 4, POP3_LINE_WHOLE));
    ck_assert(pop3_enters_update(&s, "quit ", 5, POP3_LINE_WHOLE));
    ck_assert(!pop3_enters_update(&s, "QUITX", 5, POP3_LINE_WHOLE));
    ck_assert(!pop3_enters_update(&s, "QUIT x", 6, POP3_LINE_WHOLE));   /* refused: no UPDATE */
    ck_assert(pop3_enters_update(&s, "QUIT  ", 6, POP3_LINE_WHOLE));
    ck_assert(!pop3_enters_update(&s, "QUIT", 4, POP3_LINE_BARE_CR));
    ck_assert(!pop3_enters_update(&s, "NOOP", 4, POP3_LINE_WHOLE));
    ck_assert(!pop3_enters_update(&s, "QUI", 3, POP3_LINE_WHOLE));
}
END_TEST

START_TEST(test_authorization_state)
{
    enum pop3_action act;
    ck_assert_str_eq(run("STAT\r\nCAPA\r\n", 253, &act),
                     "-ERR Command not valid in this state\r\n"
                     "+OK Capability list follows\r\nTOP\r\nUIDL\r\nUSER\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n"
                     "PIPELINING\r\nSASL PLAIN\r\nIMPLEMENTATION postern\r\n.\r\n");
    /* AUTH PLAIN: initial response, continuation, cancel, authzid mismatch */
    ck_assert_str_eq(run("AUTH\r\nAUTH PLAIN\r\n*\r\nAUTH PLAIN eABhbGljZQBzZWNyZXQ=\r\n", 253, &act),
                     "+OK\r\nPLAIN\r\n.\r\n+ \r\n-ERR Authentication cancelled\r\n"
                     "-ERR [AUTH] Invalid user name or password.\r\n");
    ck_assert_str_eq(run("AUTH plain\r\nAGFsaWNlAHNlY3JldA==\r\n", 253, &act), "+ \r\n+OK Logged in.\r\n");
    ck_assert_int_eq(s.state, POP3_TRANSACTION);
    ck_assert_str_eq(run("USER bob\r\nCAPA\r\n", 253, &act),
                     "-ERR Command not valid in this state\r\n+OK Capability list follows\r\nTOP\r\nUIDL\r\n"
                     "USER\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\nSASL PLAIN\r\n"
                     "IMPLEMENTATION postern\r\n.\r\n");
}
END_TEST

START_TEST(test_stls_and_plaintext_policy)
{
    enum pop3_action act;
    /* not TLS, logins not allowed in plaintext: STLS offered, USER/SASL not */
    pop3_init(&s, &out, 20);
    pop3_set_security(&s, 0, 1, 0);
    ck_assert_str_eq(run("CAPA\r\nUSER alice\r\nPASS secret\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nAUTH\r\n", 253, &act),
                     "+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n"
                     "PIPELINING\r\nSTLS\r\nIMPLEMENTATION postern\r\n.\r\n"
                     "-ERR [AUTH] Plaintext authentication disallowed without TLS\r\n"
                     "-ERR [AUTH] Plaintext authentication disallowed without TLS\r\n"
                     "-ERR [AUTH] Plaintext authentication disallowed without TLS\r\n"
                     "-ERR [AUTH] Plaintext authentication disallowed without TLS\r\n");
    ck_assert_int_eq(s.state, POP3_AUTHORIZATION);
    /* STLS with an argument, then STLS: the caller is told to start TLS */
    ck_assert_str_eq(run("STLS now\r\nSTLS\r\n", 253, &act),
                     "-ERR Syntax: STLS (no arguments)\r\n+OK Begin TLS negotiation\r\n");
    ck_assert_int_eq(act, POP3_STLS);
    pop3_tls_started(&s);
    ck_assert_str_eq(run("CAPA\r\nSTLS\r\n", 253, &act),
                     "+OK Capability list follows\r\nTOP\r\nUIDL\r\nUSER\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n"
                     "PIPELINING\r\nSASL PLAIN\r\nIMPLEMENTATION postern\r\n.\r\n"
                     "-ERR Command not permitted when TLS active\r\n");
    ck_assert_str_eq(run("USER alice\r\nPASS secret\r\nSTLS\r\n", 253, &act),
                     "+OK\r\n+OK Logged in.\r\n-ERR Command not valid in this state\r\n");
    /* RFC 2449 5: after login CAPA lists what it did before (here under
     * TLS: no STLS); without TLS, STLS offered, it lists STLS too */
    ck_assert_str_eq(run("CAPA\r\n", 253, &act),
                     "+OK Capability list follows\r\nTOP\r\nUIDL\r\nUSER\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n"
                     "PIPELINING\r\nSASL PLAIN\r\nIMPLEMENTATION postern\r\n.\r\n");
    pop3_set_security(&s, 0, 1, 1);
    ck_assert_str_eq(run("CAPA\r\n", 253, &act),
                     "+OK Capability list follows\r\nTOP\r\nUIDL\r\nUSER\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n"
                     "PIPELINING\r\nSASL PLAIN\r\nSTLS\r\nIMPLEMENTATION postern\r\n.\r\n");
    /* the policy */
    ck_assert_int_eq(pop3_plain_policy("loopback", "127.0.0.1"), 1);
    ck_assert_int_eq(pop3_plain_policy("loopback", "::1"), 1);
    ck_assert_int_eq(pop3_plain_policy("loopback", "::ffff:127.0.0.2"), 1);
    ck_assert_int_eq(pop3_plain_policy("loopback", "192.0.2.1"), 0);
    ck_assert_int_eq(pop3_plain_policy("loopback", "1270::1"), 0);
    ck_assert_int_eq(pop3_plain_policy("always", "192.0.2.1"), 1);
    ck_assert_int_eq(pop3_plain_policy("never", "127.0.0.1"), 0);
    ck_assert_int_eq(pop3_plain_policy("sometimes", "127.0.0.1"), -1);
}
END_TEST

START_TEST(test_stls_unavailable)
{
    enum pop3_action act;
    pop3_set_security(&s, 0, 0, 1);   /* no tls-proxy: never offered, refused */
    ck_assert_str_eq(run("STLS\r\n", 253, &act), "-ERR [SYS/TEMP] TLS not available due to local problem\r\n");
    ck_assert_int_eq(act, POP3_CONTINUE);
}
END_TEST

START_TEST(test_quit_before_login_and_http)
{
    enum pop3_action act;
    ck_assert_str_eq(run("QUIT\r\nNOOP\r\n", 253, &act), "+OK Logging out.\r\n");
    ck_assert_int_eq(act, POP3_CLOSE);
    pop3_init(&s, &out, 5);
    ck_assert_str_eq(run("GET / HTTP/1.1\r\n", 253, &act), "-ERR This is a POP3 server\r\n");
    ck_assert_int_eq(act, POP3_CLOSE);
}
END_TEST

START_TEST(test_hostile_numbers)
{
    enum pop3_action act;
    run("USER alice\r\nPASS secret\r\n", 253, &act);
    ck_assert_str_eq(run("RETR 0\r\nRETR -1\r\nLIST 4294967297\r\nDELE 100000000000000000000\r\nUIDL 1abc\r\nTOP 3 1\r\n"
                         "TOP 1 x\r\nRETR\r\nRETR 1 2\r\n", 253, &act),
                     "-ERR There's no message 0.\r\n-ERR Invalid message number.\r\n-ERR There's no message 4294967297.\r\n"
                     "-ERR Invalid message number.\r\n-ERR Invalid message number.\r\n-ERR There's no message 3.\r\n"
                     "-ERR Invalid number of lines\r\n-ERR Syntax: RETR msg\r\n-ERR Syntax: RETR msg\r\n");
    ck_assert_int_eq(act, POP3_CONTINUE);
    ck_assert_uint_eq(s.errors, 3);
}
END_TEST

START_TEST(test_login_failure_limit)
{
    enum pop3_action act;
    ck_assert_str_eq(run("USER a\r\nPASS x\r\nUSER a\r\nPASS x\r\n", 253, &act),
                     "+OK\r\n-ERR [AUTH] Invalid user name or password.\r\n"
                     "+OK\r\n-ERR [AUTH] Invalid user name or password.\r\n");
    ck_assert_int_eq(s.state, POP3_AUTHORIZATION);
    ck_assert_str_eq(run("AUTH PLAIN AGEAeA==\r\nNOOP\r\n", 253, &act),
                     "-ERR [AUTH] Invalid user name or password.\r\n");   /* the 3rd: closed */
    ck_assert_int_eq(s.state, POP3_DONE);
    ck_assert_int_eq(act, POP3_CLOSE);
}
END_TEST

START_TEST(test_line_limits_and_error_limit)
{
    enum pop3_action act;
    char script[2000];
    memset(script, 'U', 300);
    memcpy(script + 300, "\r\n", 3);
    ck_assert_str_eq(run(script, 253, &act), "-ERR Command line too long\r\n");
    memset(script, 'U', 254);
    memcpy(script + 254, "\r\n", 3);
    ck_assert_str_eq(run(script, 1000, &act), "-ERR Command line too long\r\n");
    pop3_init(&s, &out, 5);   /* a fresh count: the two above were errors too */
    ck_assert_str_eq(run("NOPE\r\nNOPE\r\nNOPE\r\nNOPE\r\nNOOP\r\n", 253, &act),
                     "-ERR Unknown command\r\n-ERR Unknown command\r\n-ERR Unknown command\r\n"
                     "-ERR Unknown command\r\n-ERR Too many errors, closing connection\r\n");   /* the 5th closes */
    ck_assert_int_eq(act, POP3_CLOSE);
}
END_TEST

/* pop3_line_take: a whole line is run as it is; a long line or one with
 * a bare CR is run as such and its rest skipped to LF; input that ends
 * inside a short line is not run at all */
START_TEST(test_line_take)
{
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    static const char text[] = "NOOP\r\nxx\rDELE 1\r\nSTAT\r\n";
    ck_assert_int_eq(write(p[1], text, sizeof text - 1), (ssize_t)(sizeof text - 1));
    ck_assert_int_eq(write(p[1], "QUI", 3), 3);
    close(p[1]);
    unsigned char inbuf[64];
    char line[16];
    struct io in;
    io_init(&in, p[0], inbuf, sizeof inbuf, 1000);
    size_t len;
    enum io_eol eol;
    enum pop3_line_end end;
    ck_assert(io_getline(&in, line, sizeof line, &len, &eol));
    ck_assert(pop3_line_take(&in, eol, len, sizeof line, &end));
    ck_assert_int_eq(end, POP3_LINE_WHOLE);
    ck_assert(io_getline(&in, line, sizeof line, &len, &eol));      /* "xx" and a bare CR */
    ck_assert(pop3_line_take(&in, eol, len, sizeof line, &end));
    ck_assert_int_eq(end, POP3_LINE_BARE_CR);
    ck_assert(io_getline(&in, line, sizeof line, &len, &eol));      /* "DELE 1" was skipped */
    ck_assert_int_eq(len, 4);
    ck_assert(!memcmp(line, "STAT", 4));
    ck_assert(pop3_line_take(&in, eol, len, sizeof line, &end));
    ck_assert_int_eq(end, POP3_LINE_WHOLE);
    ck_assert(io_getline(&in, line, sizeof line, &len, &eol));      /* "QUI" and then EOF */
    ck_assert(!pop3_line_take(&in, eol, len, sizeof line, &end));
    ck_assert_int_eq(end, POP3_LINE_LONG);
    close(p[0]);
}
END_TEST

START_TEST(test_base64_and_monitor_records)
{
    char dec[64];
    size_t n;
    ck_assert(sasl_base64_decode("AGFsaWNlAHNlY3JldA==", 20, (unsigned char *)dec, sizeof dec, &n));
    ck_assert_uint_eq(n, 13);
    ck_assert(!memcmp(dec, "\0alice\0secret", 13));
    ck_assert(sasl_base64_decode("", 0, (unsigned char *)dec, sizeof dec, &n));
    ck_assert_uint_eq(n, 0);
    ck_assert(!sasl_base64_decode("abc", 3, (unsigned char *)dec, sizeof dec, &n));
    ck_assert(!sasl_base64_decode("ab=c", 4, (unsigned char *)dec, sizeof dec, &n));
    ck_assert(!sasl_base64_decode("a===", 4, (unsigned char *)dec, sizeof dec, &n));
    ck_assert(!sasl_base64_decode("AA==AA==", 8, (unsigned char *)dec, sizeof dec, &n));
    ck_assert(!sasl_base64_decode("AAAAAAAA", 8, (unsigned char *)dec, 5, &n));   /* no room */
    static char rec[POP3_MON_REC_MAX];
    static struct pop3_mon_request r;
    size_t len;
    ck_assert(pop3_mon_request_format("alice", 5, "p\0w", 3, "STAT\r\n", 6, rec, sizeof rec, &len));
    ck_assert_uint_eq(len, 7 + 5 + 3 + 6);
    ck_assert(pop3_mon_request_parse(rec, len, &r));
    ck_assert_uint_eq(r.passlen, 3);
    ck_assert(!memcmp(r.left, "STAT\r\n", 6));
    ck_assert(!pop3_mon_request_parse(rec, len - 1, &r));       /* short */
    rec[1] = 0x7f;                                               /* user length too big */
    ck_assert(!pop3_mon_request_parse(rec, len, &r));
    static char big[POP3_MON_LEFT_MAX + 1];
    ck_assert(!pop3_mon_request_format("a", 1, "p", 1, big, sizeof big, rec, sizeof rec, &len));
}
END_TEST

int main(void)
{
    Suite *su = suite_create("pop3_session");
    TCase *core = tcase_create("core");
    tcase_add_checked_fixture(core, setup, teardown);
    tcase_add_test(core, test_login_and_transaction);
    tcase_add_test(core, test_authorization_state);
    tcase_add_test(core, test_quit_not_durable);
    tcase_add_test(core, test_enters_update);
    tcase_add_test(core, test_bare_cr_refused);
    tcase_add_test(core, test_quit_before_login_and_http);
    tcase_add_test(core, test_stls_and_plaintext_policy);
    suite_add_tcase(su, core);
    TCase *limits = tcase_create("limits");
    tcase_add_checked_fixture(limits, setup, teardown);
    tcase_add_test(limits, test_hostile_numbers);
    tcase_add_test(limits, test_stls_unavailable);
    tcase_add_test(limits, test_line_limits_and_error_limit);
    tcase_add_test(limits, test_login_failure_limit);
    tcase_add_test(limits, test_base64_and_monitor_records);
    tcase_add_test(limits, test_line_take);
    suite_add_tcase(su, limits);
    SRunner *sr = srunner_create(su);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
