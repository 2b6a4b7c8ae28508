/* check_envelope.c - the envelope file: round trip, refusals, limits. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envelope.h"
#include "smtp_addr.h"

#define SET(dst, src) snprintf((dst), sizeof(dst), "%s", (src))

/* a recipient's string field set as is (env_rcpt_set_error would clean it) */
static void set_raw(char **dst, const char *src)
{
    free(*dst);
    *dst = strdup(src);
    ck_assert_ptr_nonnull(*dst);
}

static void sample(struct envelope *e)
{
    envelope_init(e);
    memcpy(e->id, "6926A1C0F00DBA5E", 17);
    e->birth = 1764120000;
    SET(e->sender, "alice@example.test");
    SET(e->client, "smtp 192.0.2.1 (uid 105)");
    SET(e->envid, "QQ+2Bxyz");
    e->ret_hdrs = 1;
    e->body_8bit = 1;
    ck_assert(envelope_add_rcpt(e, "bob@example.test", 0, ""));
    ck_assert(envelope_add_rcpt(e, "carol@example.test", SMTP_NOTIFY_SUCCESS | SMTP_NOTIFY_DELAY,
                                "rfc822;carol@example.test"));
    e->rcpt[1].state = ENV_RCPT_FAILED;
    e->rcpt[1].attempts = 3;
    e->rcpt[1].next_try = 1764123600;
    ck_assert(env_rcpt_set_error(&e->rcpt[1], "5.1.1 no such user: carol"));
}

static int parse_str(struct envelope *e, const char *s, char *why)
{
    return envelope_parse(e, s, strlen(s), why, 128);
}

START_TEST(test_round_trip)
{
    struct envelope e, f;
    struct buf b = BUF_ZERO, b2 = BUF_ZERO;
    char why[128];
    sample(&e);
    ck_assert(envelope_format(&e, &b));
    ck_assert_msg(!strncmp(b.s, "postern-envelope 1\n", 19), "version first");
    ck_assert_ptr_nonnull(strstr(b.s, "\nsender alice@example.test\n"));
    ck_assert_ptr_nonnull(strstr(b.s, "\nrcpt\tfailed\t3\t1764123600\tSUCCESS,DELAY\trfc822;carol@example.test\tcarol@example.test\t5.1.1 no such user: carol\n"));
    ck_assert_msg(envelope_parse(&f, b.s, b.len, why, sizeof why), "%s", why);
    ck_assert_str_eq(f.id, e.id);
    ck_assert_int_eq(f.birth, e.birth);
    ck_assert_str_eq(f.sender, e.sender);
    ck_assert_str_eq(f.client, e.client);
    ck_assert_str_eq(f.envid, e.envid);
    ck_assert_int_eq(f.ret_hdrs, 1);
    ck_assert_int_eq(f.body_8bit, 1);
    ck_assert_int_eq(f.smtputf8, 0);
    ck_assert_uint_eq(f.nrcpt, 2);
    ck_assert_str_eq(f.rcpt[0].addr, "bob@example.test");
    ck_assert_int_eq(f.rcpt[0].state, ENV_RCPT_PENDING);
    ck_assert_uint_eq(f.rcpt[1].notify, SMTP_NOTIFY_SUCCESS | SMTP_NOTIFY_DELAY);
    ck_assert_int_eq(f.rcpt[1].state, ENV_RCPT_FAILED);
    ck_assert_uint_eq(f.rcpt[1].attempts, 3);
    ck_assert_int_eq(f.rcpt[1].next_try, 1764123600);
    ck_assert_str_eq(f.rcpt[1].last_error, e.rcpt[1].last_error);
    ck_assert(envelope_format(&f, &b2));
    ck_assert_uint_eq(b.len, b2.len);
    ck_assert(!memcmp(b.s, b2.s, b.len));
    /* RET: the line is there only if the sender gave one (FULL is passed
     * on when relaying, none is not) */
    ck_assert_ptr_nonnull(strstr(b.s, "\nret hdrs\n"));
    envelope_free(&f);
    e.ret_hdrs = 0;
    b.len = 0;
    ck_assert(envelope_format(&e, &b));
    ck_assert_ptr_null(strstr(b.s, "\nret "));
    ck_assert_msg(envelope_parse(&f, b.s, b.len, why, sizeof why), "%s", why);
    ck_assert_int_eq(f.ret_given, 0);
    envelope_free(&f);
    e.ret_given = 1;
    b.len = 0;
    ck_assert(envelope_format(&e, &b));
    ck_assert_ptr_nonnull(strstr(b.s, "\nret full\n"));
    ck_assert_msg(envelope_parse(&f, b.s, b.len, why, sizeof why), "%s", why);
    ck_assert_int_eq(f.ret_given, 1);
    ck_assert_int_eq(f.ret_hdrs, 0);
    envelope_free(&e);
    envelope_free(&f);
    buf_free(&b);
    buf_free(&b2);
}
END_TEST

/* every state is written by its name and read back; the three that say a
 * success report is due, and delayed, are what keep a report across a crash */
START_TEST(test_states)
{
    static const struct { enum env_rcpt_state st; const char *name; int pending, success_due; } t[] = {
        { ENV_RCPT_PENDING, "pending", 1, 0 },   { ENV_RCPT_DONE, "done", 0, 0 },
        { ENV_RCPT_FAILED, "failed", 0, 0 },     { ENV_RCPT_BOUNCED, "bounced", 0, 0 },
        { ENV_RCPT_DELAYED, "delayed", 1, 0 },   { ENV_RCPT_DELIVERED, "delivered", 0, 1 },
        { ENV_RCPT_RELAYED, "relayed", 0, 1 },   { ENV_RCPT_EXPANDED, "expanded", 0, 1 },
    };
    ck_assert_uint_eq(sizeof t / sizeof t[0], ENV_RCPT_NSTATES);
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        struct envelope e, f;
        struct buf b = BUF_ZERO;
        char why[128], want[64];
        sample(&e);
        e.rcpt[1].state = t[i].st;
        ck_assert_str_eq(envelope_state_name(t[i].st), t[i].name);
        ck_assert_int_eq(env_rcpt_pending(t[i].st), t[i].pending);
        ck_assert_int_eq(env_rcpt_success_due(t[i].st), t[i].success_due);
        ck_assert(envelope_format(&e, &b));
        snprintf(want, sizeof want, "\nrcpt\t%s\t3\t", t[i].name);
        ck_assert_msg(strstr(b.s, want) != NULL, "%s", b.s);
        ck_assert_msg(envelope_parse(&f, b.s, b.len, why, sizeof why), "%s", why);
        ck_assert_int_eq(f.rcpt[1].state, t[i].st);
        envelope_free(&e);
        envelope_free(&f);
        buf_free(&b);
    }
    /* a state out of range is not written; an unknown name not read */
    struct envelope e, f;
    struct buf b = BUF_ZERO;
    char why[128];
    sample(&e);
    e.rcpt[1].state = (enum env_rcpt_state)ENV_RCPT_NSTATES;
    ck_assert(!envelope_format(&e, &b));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_str_eq(envelope_state_name((enum env_rcpt_state)ENV_RCPT_NSTATES), "?");
    e.rcpt[1].state = ENV_RCPT_DONE;
    ck_assert(envelope_format(&e, &b));
    char *p = strstr(b.s, "\nrcpt\tdone\t");
    ck_assert_ptr_nonnull(p);
    memcpy(p + strlen("\nrcpt\t"), "dune", 4);
    ck_assert(!envelope_parse(&f, b.s, b.len, why, sizeof why));
    ck_assert_ptr_nonnull(strstr(why, "rcpt: bad state"));
    envelope_free(&e);
    buf_free(&b);
}
END_TEST

START_TEST(test_null_sender)
{
    struct envelope e, f;
    struct buf b = BUF_ZERO;
    char why[128];
    sample(&e);
    e.sender[0] = 0;
    e.is_bounce = 1;
    ck_assert(envelope_format(&e, &b));
    ck_assert_ptr_nonnull(strstr(b.s, "\nsender <>\n"));
    ck_assert(envelope_parse(&f, b.s, b.len, why, sizeof why));
    ck_assert_str_eq(f.sender, "");
    ck_assert_int_eq(f.is_bounce, 1);
    envelope_free(&e);
    envelope_free(&f);
    buf_free(&b);
}
END_TEST

START_TEST(test_control_chars_refused)
{
    static const char *bad[] = { "a\rb@x", "a\nb@x", "a\tb@x", "a\x7f@x" };
    struct envelope e;
    struct buf b = BUF_ZERO;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        envelope_init(&e);
        errno = 0;
        ck_assert(!envelope_add_rcpt(&e, bad[i], 0, ""));
        ck_assert_int_eq(errno, EINVAL);
        envelope_free(&e);
        sample(&e);
        SET(e.sender, bad[i]);
        ck_assert(!envelope_format(&e, &b));
        ck_assert_int_eq(errno, EINVAL);
        envelope_free(&e);
        sample(&e);
        set_raw(&e.rcpt[0].last_error, bad[i]);
        ck_assert(!envelope_format(&e, &b));
        envelope_free(&e);
    }
    /* a NUL inside the text ends the line early: the parser refuses it */
    char why[128];
    static const char text[] = "postern-envelope 1\nid 6926A1C0F00DBA5E\nbirth 1\nsender a\0b\n"
                               "rcpt\tpending\t0\t0\t\t\tb@x\t\n";
    ck_assert(!envelope_parse(&e, text, sizeof text - 1, why, sizeof why));
    ck_assert_str_eq(why, "line 4: bad value for sender");
    /* CR before LF is a control character too */
    ck_assert(!parse_str(&e, "postern-envelope 1\r\n", why));
    ck_assert_str_eq(why, "line 1: not a postern-envelope 1 file");
    ck_assert_uint_eq(b.len, 0);
    buf_free(&b);
    char s[] = "x\ty\rz";
    envelope_text_clean(s);
    ck_assert_str_eq(s, "x?y?z");
    /* the same test on bytes that are not a C string */
    ck_assert(envelope_bytes_ok("ab\tc", 2));
    ck_assert(!envelope_bytes_ok("ab\tc", 3));
    ck_assert(!envelope_bytes_ok("a\0b", 3));
    ck_assert(!envelope_bytes_ok("\x7f", 1));
    ck_assert(envelope_bytes_ok("\xc3\xa9", 2));   /* 8-bit is not control */
}
END_TEST

START_TEST(test_garbage_lines)
{
    static const struct { const char *text, *why; } cases[] = {
        { "", "line 1: empty file" },
        { "hello\n", "line 1: not a postern-envelope 1 file" },
        { "postern-envelope 2\n", "line 1: not a postern-envelope 1 file" },
        { "postern-envelope 1\nid 6926A1C0F00DBA5E", "line 2: no final newline" },
        { "postern-envelope 1\nid 6926a1c0f00dba5e\n", "line 2: bad value for id" },
        { "postern-envelope 1\nfrobnicate 1\n", "line 2: unknown field" },
        { "postern-envelope 1\nbirth 1\nbirth 2\n", "line 3: duplicate field" },
        { "postern-envelope 1\nbirth -1\n", "line 2: bad value for birth" },
        { "postern-envelope 1\nbirth 99999999999999999999999\n", "line 2: bad value for birth" },
        { "postern-envelope 1\nsender\n", "line 2: no value" },
        { "postern-envelope 1\nret maybe\n", "line 2: bad value for ret" },
        { "postern-envelope 1\nrcpt\tpending\t0\t0\t\t\tb@x\n", "line 2: rcpt: 6 fields, want 7" },
        { "postern-envelope 1\nrcpt\tpending\t0\t0\t\t\tb@x\t\t\n", "line 2: rcpt: too many fields" },
        { "postern-envelope 1\nrcpt\tlost\t0\t0\t\t\tb@x\t\n", "line 2: rcpt: bad state" },
        { "postern-envelope 1\nrcpt\tpending\tx\t0\t\t\tb@x\t\n", "line 2: rcpt: bad attempts" },
        { "postern-envelope 1\nrcpt\tpending\t0\t0\tSOMETIMES\t\tb@x\t\n", "line 2: rcpt: bad notify" },
        { "postern-envelope 1\nrcpt\tpending\t0\t0\tNEVER,DELAY\t\tb@x\t\n", "line 2: rcpt: bad notify" },
        { "postern-envelope 1\nrcpt\tpending\t0\t0\t\t\t\t\n", "line 2: rcpt: bad address" },
        { "postern-envelope 1\nid 6926A1C0F00DBA5E\nbirth 1\nsender a@b\n", "line 4: missing rcpt" },
        { "postern-envelope 1\nbirth 1\nsender a@b\nrcpt\tpending\t0\t0\t\t\tb@x\t\n", "line 4: missing id" },
    };
    struct envelope e;
    char why[128];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        errno = 0;
        ck_assert_msg(!parse_str(&e, cases[i].text, why), "case %zu parsed", i);
        ck_assert_int_eq(errno, EINVAL);
        ck_assert_msg(!strcmp(why, cases[i].why), "case %zu: got '%s' want '%s'", i, why, cases[i].why);
        ck_assert_ptr_null(e.rcpt);
    }
}
END_TEST

START_TEST(test_ids)
{
    ck_assert(envelope_id_valid("0123456789ABCDEF"));
    ck_assert(!envelope_id_valid("0123456789abcdef"));
    ck_assert(!envelope_id_valid("0123456789ABCDE"));
    ck_assert(!envelope_id_valid("0123456789ABCDEF0"));
    ck_assert(!envelope_id_valid("0123456789ABCDEG"));
    ck_assert_int_eq(envelope_id_hash("0123456789ABCDEF"), 'F');
    unsigned n;
    char s[40];
    ck_assert(envelope_notify_parse("failure,Success", 15, &n));
    ck_assert_uint_eq(n, SMTP_NOTIFY_SUCCESS | SMTP_NOTIFY_FAILURE);
    ck_assert(envelope_notify_format(n, s, sizeof s));
    ck_assert_str_eq(s, "SUCCESS,FAILURE");
    ck_assert(!envelope_notify_parse("SUCCESS,SUCCESS", 15, &n));
    ck_assert(!envelope_notify_parse("SUCCESS,", 8, &n));
    ck_assert(!envelope_notify_format(SMTP_NOTIFY_SUCCESS | SMTP_NOTIFY_FAILURE, s, 10));
}
END_TEST

START_TEST(test_max_lengths)
{
    struct envelope e, f;
    struct buf b = BUF_ZERO;
    char why[128], addr[ENV_ADDR_MAX + 2], field[ENV_FIELD_MAX + 2];
    memset(addr, 'a', sizeof addr);
    addr[ENV_ADDR_MAX] = 0;                 /* exactly the maximum */
    memset(field, 'f', sizeof field);
    field[ENV_FIELD_MAX] = 0;
    sample(&e);
    ck_assert(envelope_add_rcpt(&e, addr, 0, field));
    memcpy(e.sender, addr, sizeof e.sender);
    memcpy(e.client, field, sizeof e.client);
    set_raw(&e.rcpt[0].last_error, field);
    ck_assert(envelope_format(&e, &b));
    ck_assert_msg(envelope_parse(&f, b.s, b.len, why, sizeof why), "%s", why);
    ck_assert_str_eq(f.rcpt[2].addr, addr);
    ck_assert_str_eq(f.rcpt[2].orcpt, field);
    ck_assert_str_eq(f.client, field);
    envelope_free(&f);
    /* one byte over: refused by add_rcpt and by the parser */
    addr[ENV_ADDR_MAX] = 'a';
    addr[ENV_ADDR_MAX + 1] = 0;
    ck_assert(!envelope_add_rcpt(&e, addr, 0, ""));
    ck_assert_int_eq(errno, EINVAL);
    struct buf t = BUF_ZERO;
    ck_assert(buf_appendf(&t, "postern-envelope 1\nsender %s\n", addr));
    ck_assert(!envelope_parse(&f, t.s, t.len, why, sizeof why));
    ck_assert_str_eq(why, "line 2: bad value for sender");
    envelope_free(&e);
    buf_free(&b);
    buf_free(&t);
}
END_TEST

START_TEST(test_rcpt_limit)
{
    struct envelope e, f;
    struct buf b = BUF_ZERO;
    char why[128], a[32];
    sample(&e);
    envelope_free(&e);
    for (int i = 0; i < ENV_RCPT_MAX; i++) {
        snprintf(a, sizeof a, "u%d@x", i);
        ck_assert(envelope_add_rcpt(&e, a, 0, ""));
    }
    ck_assert(!envelope_add_rcpt(&e, "one@more", 0, ""));
    ck_assert_int_eq(errno, E2BIG);
    /* what a full envelope costs queue-inject and queue-manager: its array
     * (the strings only for recipients that have them). With fixed 1 KB
     * orcpt and last_error fields it was 2.3 KB a recipient, 226 MB for a
     * full one from any local user's sendmail */
    ck_assert_uint_le(sizeof *e.rcpt, 320);
    ck_assert_uint_le(e.rcpt_cap * sizeof *e.rcpt, 32u << 20);
    ck_assert(envelope_format(&e, &b));
    ck_assert_msg(envelope_parse(&f, b.s, b.len, why, sizeof why), "%s", why);
    ck_assert_uint_eq(f.nrcpt, ENV_RCPT_MAX);
    ck_assert_str_eq(f.rcpt[ENV_RCPT_MAX - 1].addr, "u99999@x");
    envelope_free(&f);
    /* one recipient line more than the limit: refused with its line number */
    ck_assert(buf_appends(&b, "rcpt\tpending\t0\t0\t\t\textra@x\t\n"));
    ck_assert(!envelope_parse(&f, b.s, b.len, why, sizeof why));
    snprintf(a, sizeof a, "line %d: more", 10 + ENV_RCPT_MAX + 1);
    ck_assert_msg(!strncmp(why, a, strlen(a)), "%s", why);
    envelope_free(&e);
    buf_free(&b);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("envelope");
    TCase *core = tcase_create("core");
    tcase_add_test(core, test_round_trip);
    tcase_add_test(core, test_null_sender);
    tcase_add_test(core, test_states);
    tcase_add_test(core, test_ids);
    suite_add_tcase(s, core);
    TCase *limits = tcase_create("limits");
    tcase_set_timeout(limits, 60);
    tcase_add_test(limits, test_control_chars_refused);
    tcase_add_test(limits, test_garbage_lines);
    tcase_add_test(limits, test_max_lengths);
    tcase_add_test(limits, test_rcpt_limit);
    suite_add_tcase(s, limits);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
