/* check_smtp_body.c - the message body stream: CRLF -> LF, bare CR/LF,
 * size and hop counting, BDAT octets split anywhere. */
#include <check.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "smtp_body.h"

static int pp[2];
static struct smtp_msgbody b;

static void setup(void)
{
    ck_assert_int_eq(pipe(pp), 0);
    fcntl(pp[1], F_SETFL, O_NONBLOCK);
    fcntl(pp[0], F_SETFL, O_NONBLOCK);
    fcntl(pp[1], F_SETPIPE_SZ, 1 << 20);
}

static void teardown(void) { close(pp[0]); if (pp[1] >= 0) close(pp[1]); }

static char *drain(size_t *n)
{
    static char out[1 << 20];
    ssize_t r = read(pp[0], out, sizeof out - 1);
    *n = r > 0 ? (size_t)r : 0;
    out[*n] = 0;
    return out;
}

START_TEST(test_lines)
{
    smtp_body_init(&b, pp[1], 1000, 1000);
    smtp_body_line(&b, "Received: x", 11, IO_EOL_CRLF);
    smtp_body_line(&b, "Subject: s", 10, IO_EOL_CRLF);
    smtp_body_line(&b, "", 0, IO_EOL_CRLF);
    smtp_body_line(&b, "Received: in body", 17, IO_EOL_CRLF);
    smtp_body_line(&b, "long ", 5, IO_EOL_NONE);
    smtp_body_line(&b, "line", 4, IO_EOL_CRLF);
    ck_assert(smtp_body_finish(&b));
    size_t n;
    char *out = drain(&n);
    ck_assert_str_eq(out, "Received: x\nSubject: s\n\nReceived: in body\nlong line\n");
    ck_assert_uint_eq(b.size, n);
    ck_assert_uint_eq(b.hops, 1);
    ck_assert(!b.bare_cr && !b.bare_lf && !b.too_big);
}
END_TEST

START_TEST(test_octets_any_split)
{
    const char msg[] = "A: 1\r\nreceived: 2\r\n\r\nbody\r\nend\r\n";
    for (size_t cut = 0; cut <= sizeof msg - 1; cut++) {
        smtp_body_init(&b, pp[1], 1000, 1000);
        smtp_body_octets(&b, msg, cut);
        smtp_body_octets(&b, msg + cut, sizeof msg - 1 - cut);
        ck_assert(smtp_body_finish(&b));
        size_t n;
        char *out = drain(&n);
        ck_assert_str_eq(out, "A: 1\nreceived: 2\n\nbody\nend\n");
        ck_assert_uint_eq(b.hops, 1);
        ck_assert_msg(!b.bare_cr && !b.bare_lf, "cut %zu", cut);
    }
}
END_TEST

START_TEST(test_bare_and_size)
{
    smtp_body_init(&b, pp[1], 1000, 1000);
    smtp_body_octets(&b, "a\nb", 3);
    smtp_body_finish(&b);
    ck_assert(b.bare_lf && !b.bare_cr);
    size_t n;
    ck_assert_str_eq(drain(&n), "\na\nb\n");   /* a bare LF is a line end ("a" is no field:
                                                  the blank line before it is added) */
    smtp_body_init(&b, pp[1], 1000, 1000);
    smtp_body_octets(&b, "a\rb\r\n", 5);
    smtp_body_finish(&b);
    ck_assert(b.bare_cr && !b.bare_lf);
    drain(&n);
    smtp_body_init(&b, pp[1], 1000, 1000);
    smtp_body_octets(&b, "a\r", 2);          /* CR at the very end */
    smtp_body_finish(&b);
    ck_assert(b.bare_cr);
    drain(&n);
    smtp_body_init(&b, pp[1], 1000, 1000);
    smtp_body_line(&b, "x", 1, IO_EOL_LF);
    ck_assert(b.bare_lf && !b.bare_cr);
    smtp_body_line(&b, "y", 1, IO_EOL_CR);
    ck_assert(b.bare_cr);
    smtp_body_finish(&b);
    drain(&n);
    /* size: stops writing past the limit but keeps counting */
    char big[3000];
    memset(big, 'x', sizeof big);
    big[1] = ':';                            /* a field: stored as it came */
    smtp_body_init(&b, pp[1], 1000, 1000);
    smtp_body_line(&b, big, sizeof big, IO_EOL_CRLF);
    ck_assert(smtp_body_finish(&b));
    ck_assert(b.too_big);
    ck_assert_uint_eq(b.size, 3001);
    drain(&n);
    ck_assert_uint_eq(n, 1000);
    /* a reader that went away */
    smtp_body_init(&b, pp[1], 100000, 1000);
    close(pp[0]);
    pp[0] = open("/dev/null", O_RDONLY);
    smtp_body_line(&b, big, sizeof big, IO_EOL_CRLF);
    ck_assert(!smtp_body_finish(&b));
    ck_assert(b.write_failed);
}
END_TEST

/* the message given as SMTP octets, every split of it, with Date,
 * Message-ID and From to add if missing: each split stores want */
static void added_as(const char *msg, const char *want)
{
    size_t len = strlen(msg);
    for (size_t cut = 0; cut <= len; cut++) {
        smtp_body_init(&b, pp[1], 100000, 1000);
        ck_assert(smtp_body_add_missing(&b, "Date: D", "Message-ID: <m@h>", "From: <f@h>"));
        smtp_body_octets(&b, msg, cut);
        smtp_body_octets(&b, msg + cut, len - cut);
        ck_assert(smtp_body_finish(&b));
        size_t n;
        char *out = drain(&n);
        ck_assert_msg(!strcmp(out, want), "cut %zu of %s: got\n%s", cut, msg, out);
        ck_assert_uint_eq(b.size, n);
    }
}

/* the message given as SMTP octets, every split of it (or only the
 * splits at multiples of step), nothing to add: each stores want */
static void stored_as(const char *msg, const char *want, size_t step)
{
    size_t len = strlen(msg);
    for (size_t cut = 0; cut <= len; cut += step) {
        smtp_body_init(&b, pp[1], 100000, 1000);
        smtp_body_octets(&b, msg, cut);
        smtp_body_octets(&b, msg + cut, len - cut);
        ck_assert(smtp_body_finish(&b));
        size_t n;
        char *out = drain(&n);
        ck_assert_msg(n == strlen(want) && !strcmp(out, want), "cut %zu of %.60s: got\n%.200s", cut, msg, out);
        ck_assert_uint_eq(b.size, n);
    }
}

/* the message as SMTP octets, every split: the Message-ID kept for the log */
static void msgid_is(const char *msg, const char *want)
{
    size_t len = strlen(msg), n;
    for (size_t cut = 0; cut <= len; cut++) {
        smtp_body_init(&b, pp[1], 100000, 1000);
        smtp_body_octets(&b, msg, cut);
        smtp_body_octets(&b, msg + cut, len - cut);
        ck_assert(smtp_body_finish(&b));
        drain(&n);
        ck_assert_msg(!strcmp(b.msgid, want), "cut %zu of %s: got \"%s\"", cut, msg, b.msgid);
        ck_assert_uint_eq(b.msgid_len, strlen(want));
    }
}

/* the first Message-ID field of the header section, for the log line
 * (Postfix's message-id=): any case, folded, without white space, quotes
 * or backslashes; not one in the body, not a second one */
START_TEST(test_message_id_for_the_log)
{
    msgid_is("Subject: s\r\nMessage-ID: <a.1@h.test>\r\n\r\nbody\r\n", "<a.1@h.test>");
    msgid_is("message-id:<x@y>\r\nMessage-ID: <second@y>\r\n\r\n", "<x@y>");
    msgid_is("Message-Id:\r\n <folded@h>\r\nSubject: s\r\n\r\n", "<folded@h>");
    msgid_is("Message-ID: <\"q\\ z\"@h>\r\n\r\n", "<qz@h>");
    msgid_is("Subject: s\r\n\r\nMessage-ID: <in-body@h>\r\n", "");
    msgid_is("Subject: s\r\nnot a field\r\nMessage-ID: <after@h>\r\n", "");
    msgid_is("X-Message-ID: <no@h>\r\nSubject: s\r\n\r\n", "");
    msgid_is("Message-ID: <m@h>\r\n continued\r\nnext: x\r\n <not-it>\r\n\r\n", "<m@h>continued");
    char big[600];
    memcpy(big, "Message-ID: <", 13);
    memset(big + 13, 'a', 400);
    memcpy(big + 413, "@h>\r\n\r\n", 8);
    smtp_body_init(&b, pp[1], 100000, 1000);
    smtp_body_octets(&b, big, 421);
    ck_assert(smtp_body_finish(&b));
    size_t n;
    drain(&n);
    ck_assert_uint_eq(b.msgid_len, SMTP_BODY_MSGID_MAX);
    ck_assert_uint_eq(strlen(b.msgid), SMTP_BODY_MSGID_MAX);
}
END_TEST

/* a line of the header section that is not a field ends it, with a blank
 * line put before it (as Postfix's cleanup does): the guides' session
 * "Subject: Test email" then "Body of the email" without a blank line, or
 * a message that is all text, is then read as a header and a body, not as
 * a header with the body's text in it (or, for a first line starting with
 * white space, as a continuation of the Received: field in front) */
START_TEST(test_non_field_line_ends_header)
{
    stored_as("Subject: Test email\r\nBody of the email\r\n", "Subject: Test email\n\nBody of the email\n", 1);
    stored_as("just a body line\r\nsecond\r\n", "\njust a body line\nsecond\n", 1);
    stored_as("oneword\r\nX: y\r\n", "\noneword\nX: y\n", 1);
    stored_as("X: y\r\nnocolon  \r\n\r\nb\r\n", "X: y\n\nnocolon  \n\nb\n", 1);
    stored_as(" indented\r\nx\r\n", "\n indented\nx\n", 1);
    /* a first line that is an mbox "From " line is kept as a field, as
     * Postfix's cleanup keeps it: the fields after it stay fields */
    stored_as("From alice Thu Nov 26\r\nSubject: s\r\n\r\nb\r\n",
              "X-Mailbox-Line: From alice Thu Nov 26\nSubject: s\n\nb\n", 1);
    stored_as("From \r\nX: y\r\n", "X-Mailbox-Line: From \nX: y\n", 1);
    /* only the first line, and only "From " */
    stored_as("X: y\r\nFrom alice\r\n", "X: y\n\nFrom alice\n", 1);
    stored_as("From: alice\r\nFrom alice\r\n", "From: alice\n\nFrom alice\n", 1);
    stored_as("Fromage x\r\nX: y\r\n", "\nFromage x\nX: y\n", 1);
    stored_as("from alice\r\nX: y\r\n", "\nfrom alice\nX: y\n", 1);
    stored_as(": no name\r\n", "\n: no name\n", 1);
    stored_as("X: y\r\nlast", "X: y\n\nlast\n", 1);
    /* fields, folded fields, the obsolete "name :" and an empty body stay as they came */
    stored_as("Subject : obs\r\nX:\r\n\tfolded\r\n y\r\n\r\nb\r\n", "Subject : obs\nX:\n\tfolded\n y\n\nb\n", 1);
    stored_as("Subject: s\r\n", "Subject: s\n", 1);
    stored_as("\r\nno header\r\n", "\nno header\n", 1);
    /* a field name may be long, but its colon is among the first
     * SMTP_BODY_NAME_MAX octets */
    static char msg[16384], want[16384];
    static char a_run[SMTP_BODY_NAME_MAX + 1];
    memset(a_run, 'A', SMTP_BODY_NAME_MAX);
    snprintf(msg, sizeof msg, "%.*s: v\r\n", SMTP_BODY_NAME_MAX - 1, a_run);
    snprintf(want, sizeof want, "%.*s: v\n", SMTP_BODY_NAME_MAX - 1, a_run);
    stored_as(msg, want, 97);
    snprintf(msg, sizeof msg, "%.*s: v\r\n", SMTP_BODY_NAME_MAX, a_run);
    snprintf(want, sizeof want, "\n%.*s: v\n", SMTP_BODY_NAME_MAX, a_run);
    stored_as(msg, want, 97);
    /* the line held back across the buffer's end */
    static char xs[8001], bs[901];
    memset(xs, 'x', 8000);
    memset(bs, 'b', 900);
    snprintf(msg, sizeof msg, "X: %s\r\n%s\r\nend\r\n", xs, bs);
    snprintf(want, sizeof want, "X: %s\n\n%s\nend\n", xs, bs);
    stored_as(msg, want, 101);
    /* past max_size: what is stored stops at the octet that passes it,
     * the blank line before the line it is in costs nothing */
    smtp_body_init(&b, pp[1], 5, 1000);
    smtp_body_octets(&b, "abcdefgh\r\n", 10);
    ck_assert(smtp_body_finish(&b));
    ck_assert(b.too_big);
    ck_assert_uint_eq(b.size, 10);
    size_t n;
    ck_assert_str_eq(drain(&n), "\nabcde");
}
END_TEST

/* submission: the fields a message lacks are added where its header
 * section ends, and only those */
START_TEST(test_add_missing)
{
    added_as("Subject: s\r\n\r\nbody\r\n",
             "Subject: s\nDate: D\nMessage-ID: <m@h>\nFrom: <f@h>\n\nbody\n");
    /* present under any case, or folded: not added again */
    added_as("DATE: x\r\nmessage-id:\r\n <a@b>\r\nSubject: s\r\n\r\nb\r\n",
             "DATE: x\nmessage-id:\n <a@b>\nSubject: s\nFrom: <f@h>\n\nb\n");
    /* names that only start like them, and fields in the body, do not count */
    added_as("Date-X: 1\r\nFromage: 2\r\nResent-Date: 3\r\n\r\nDate: 4\r\nFrom: 5\r\n",
             "Date-X: 1\nFromage: 2\nResent-Date: 3\nDate: D\nMessage-ID: <m@h>\nFrom: <f@h>\n\nDate: 4\nFrom: 5\n");
    /* all header, the last line unfinished: added at the end */
    added_as("Subject: s\r\nX: y", "Subject: s\nX: y\nDate: D\nMessage-ID: <m@h>\nFrom: <f@h>\n");
    /* no header at all: added before the blank line */
    added_as("\r\nbody\r\n", "Date: D\nMessage-ID: <m@h>\nFrom: <f@h>\n\nbody\n");
    /* a header line that is not a field (text with no colon) ends the
     * header section: the fields go before the blank line put in front of
     * it; a first mbox "From " line is a field (X-Mailbox-Line:) */
    added_as("From alice Thu Nov 26\r\nSubject: s\r\n\r\nb\r\n",
             "X-Mailbox-Line: From alice Thu Nov 26\nSubject: s\nDate: D\nMessage-ID: <m@h>\nFrom: <f@h>\n\nb\n");
    added_as("Subject: s\r\njust text\r\n", "Subject: s\nDate: D\nMessage-ID: <m@h>\nFrom: <f@h>\n\njust text\n");
    added_as("From: x\r\n: no name\r\n\r\nb\r\n", "From: x\nDate: D\nMessage-ID: <m@h>\n\n: no name\n\nb\n");
    /* the hop count is still kept */
    smtp_body_init(&b, pp[1], 100000, 1000);
    ck_assert(smtp_body_add_missing(&b, "Date: D", NULL, NULL));
    smtp_body_line(&b, "Received: a", 11, IO_EOL_CRLF);
    smtp_body_line(&b, "received: b", 11, IO_EOL_CRLF);
    smtp_body_line(&b, "", 0, IO_EOL_CRLF);
    ck_assert(smtp_body_finish(&b));
    size_t n;
    ck_assert_str_eq(drain(&n), "Received: a\nreceived: b\nDate: D\n\n");
    ck_assert_uint_eq(b.hops, 2);
    /* without smtp_body_add_missing nothing is added */
    smtp_body_init(&b, pp[1], 100000, 1000);
    smtp_body_line(&b, "Subject: s", 10, IO_EOL_CRLF);
    ck_assert(smtp_body_finish(&b));
    ck_assert_str_eq(drain(&n), "Subject: s\n");
}
END_TEST

START_TEST(test_add_missing_limits)
{
    char big[SMTP_BODY_ADD_MAX + 1];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    smtp_body_init(&b, pp[1], 100000, 1000);
    ck_assert(!smtp_body_add_missing(&b, big, NULL, NULL));
    ck_assert(!smtp_body_add_missing(&b, "Date: a\r\nX: injected", NULL, NULL));
    ck_assert(!smtp_body_add_missing(&b, NULL, NULL, "From: <a\n@b>"));
    big[sizeof big - 2] = 0;
    ck_assert(smtp_body_add_missing(&b, NULL, big, NULL));
    /* the added octets do not count against the client's limit (14:
     * "Subject: s" CRLF CRLF as sent) */
    smtp_body_init(&b, pp[1], 14, 1000);
    ck_assert(smtp_body_add_missing(&b, "Date: D", NULL, NULL));
    smtp_body_line(&b, "Subject: s", 10, IO_EOL_CRLF);
    smtp_body_line(&b, "", 0, IO_EOL_CRLF);
    ck_assert(smtp_body_finish(&b));
    ck_assert(!b.too_big);
    size_t n;
    ck_assert_str_eq(drain(&n), "Subject: s\nDate: D\n\n");
}
END_TEST

/* the limit is on the message as RFC 1870 counts it, the SIZE of EHLO:
 * each line end as the client sent it (CRLF 2, a bare LF 1), whatever the
 * stored form (LF) or the split of BDAT chunks */
START_TEST(test_size_counts_octets_as_sent)
{
    size_t n;
    smtp_body_init(&b, pp[1], 10, 1000);
    smtp_body_line(&b, "abcdefgh", 8, IO_EOL_CRLF);
    ck_assert(smtp_body_finish(&b));
    ck_assert(!b.too_big);
    ck_assert_uint_eq(b.octets, 10);
    ck_assert_uint_eq(b.size, 10);          /* and the blank line before a line that is no field */
    drain(&n);
    smtp_body_init(&b, pp[1], 10, 1000);
    smtp_body_line(&b, "abcd", 4, IO_EOL_CRLF);
    smtp_body_line(&b, "ef", 2, IO_EOL_CRLF);
    smtp_body_line(&b, "", 0, IO_EOL_LF);
    ck_assert(smtp_body_finish(&b));
    ck_assert(b.too_big);                    /* 11 as sent, 9 stored */
    drain(&n);
    for (size_t cut = 0; cut <= 10; cut++) {
        const char *m = "abcd\r\nef\r\n\n";
        smtp_body_init(&b, pp[1], 10, 1000);
        smtp_body_octets(&b, m, cut);
        smtp_body_octets(&b, m + cut, 11 - cut);
        ck_assert(smtp_body_finish(&b));
        ck_assert_msg(b.too_big && b.octets == 11, "cut %zu: %llu", cut, b.octets);
        drain(&n);
        smtp_body_init(&b, pp[1], 10, 1000);
        smtp_body_octets(&b, m, cut < 10 ? cut : 10);
        smtp_body_octets(&b, m + (cut < 10 ? cut : 10), 10 - (cut < 10 ? cut : 10));
        ck_assert(smtp_body_finish(&b));
        ck_assert_msg(!b.too_big && b.octets == 10, "cut %zu: %llu", cut, b.octets);
        ck_assert_str_eq(drain(&n), "\nabcd\nef\n");
    }
    /* a last line without its line end: the LF it gets is not counted */
    smtp_body_init(&b, pp[1], 10, 1000);
    smtp_body_octets(&b, "0123456789", 10);
    ck_assert(smtp_body_finish(&b));
    ck_assert(!b.too_big);
    ck_assert_str_eq(drain(&n), "\n0123456789\n");
}
END_TEST

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    Suite *s = suite_create("smtp_body");
    TCase *core = tcase_create("core");
    tcase_add_checked_fixture(core, setup, teardown);
    tcase_add_test(core, test_lines);
    tcase_add_test(core, test_octets_any_split);
    tcase_add_test(core, test_add_missing);
    tcase_add_test(core, test_non_field_line_ends_header);
    tcase_add_test(core, test_message_id_for_the_log);
    suite_add_tcase(s, core);
    TCase *limits = tcase_create("limits");
    tcase_add_checked_fixture(limits, setup, teardown);
    tcase_add_test(limits, test_bare_and_size);
    tcase_add_test(limits, test_add_missing_limits);
    tcase_add_test(limits, test_size_counts_octets_as_sent);
    suite_add_tcase(s, limits);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
