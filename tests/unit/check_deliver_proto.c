/* check_deliver_proto.c - queue-manager <-> deliverer records. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "deliver_proto.h"

static int sp[2];
static void setup(void) { ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sp), 0); }
static void teardown(void) { close(sp[0]); close(sp[1]); }

static void sample_job(struct dp_job *j)
{
    memset(j, 0, sizeof *j);
    j->job = 42;
    memcpy(j->id, "6926A1C0F00DBA5E", 17);
    snprintf(j->sender, sizeof j->sender, "%s", "bob@example.test");
    snprintf(j->rcpt, sizeof j->rcpt, "%s", "alice@example.test");
    j->birth = 1764120000;
    snprintf(j->notify, sizeof j->notify, "%s", "SUCCESS,FAILURE");
    snprintf(j->body, sizeof j->body, "%s", "8BITMIME");
}

START_TEST(test_job_roundtrip)
{
    struct dp_job j, k;
    char rec[DP_RECORD_MAX];
    size_t len;
    sample_job(&j);
    ck_assert(dp_job_encode(&j, rec, sizeof rec, &len));
    ck_assert_int_eq(rec[len - 1], 0);
    ck_assert(dp_job_decode(&k, rec, len));
    ck_assert_uint_eq(k.job, 42);
    ck_assert_str_eq(k.id, j.id);
    ck_assert_str_eq(k.sender, "bob@example.test");
    ck_assert_str_eq(k.rcpt, "alice@example.test");
    ck_assert_int_eq(k.birth, 1764120000);
    ck_assert_str_eq(k.notify, "SUCCESS,FAILURE");
    ck_assert_str_eq(k.orcpt, "");
    ck_assert_str_eq(k.body, "8BITMIME");
    ck_assert_str_eq(k.ret, "");
    /* DSN RET travels as E (remote-deliverer passes it on) */
    snprintf(j.ret, sizeof j.ret, "%s", "HDRS");
    ck_assert(dp_job_encode(&j, rec, sizeof rec, &len));
    ck_assert(dp_job_decode(&k, rec, len));
    ck_assert_str_eq(k.ret, "HDRS");
    ck_assert_int_eq(k.smtputf8, 0);
    ck_assert(!memmem(rec, len, "\0U", 2));   /* absent when not given */
    /* the sender's SMTPUTF8 travels as U1 (RFC 6531, for remote-deliverer) */
    j.smtputf8 = 1;
    ck_assert(dp_job_encode(&j, rec, sizeof rec, &len));
    ck_assert(memmem(rec, len, "\0U1\0", 4));
    ck_assert(dp_job_decode(&k, rec, len));
    ck_assert_int_eq(k.smtputf8, 1);
    j.smtputf8 = 0;
    /* the null sender travels as an empty F field */
    j.sender[0] = 0;
    ck_assert(dp_job_encode(&j, rec, sizeof rec, &len));
    ck_assert(dp_job_decode(&k, rec, len));
    ck_assert_str_eq(k.sender, "");
}
END_TEST

START_TEST(test_result_roundtrip_and_exact)
{
    struct dp_result r = { 7, DP_PERMANENT, "5.1.1 no such user", "" }, s;
    char rec[DP_RECORD_MAX];
    size_t len;
    ck_assert(dp_result_encode(&r, rec, sizeof rec, &len));
    ck_assert(dp_result_decode(&s, rec, len));
    ck_assert_uint_eq(s.job, 7);
    ck_assert_int_eq(s.status, DP_PERMANENT);
    ck_assert_str_eq(s.text, "5.1.1 no such user");
    /* exactly one record: a byte more or less is refused */
    ck_assert(!dp_result_decode(&s, rec, len - 1));
    ck_assert_int_eq(errno, EPROTO);
    rec[len] = 'Z';
    ck_assert(!dp_result_decode(&s, rec, len + 1));
    /* two records glued together: a repeated letter */
    memcpy(rec + len, rec, len);
    ck_assert(!dp_result_decode(&s, rec, 2 * len));
}
END_TEST

START_TEST(test_send_result)
{
    char rec[DP_RECORD_MAX], big[DP_FIELD_MAX + 100];
    size_t len;
    int fd;
    struct dp_result r;
    ck_assert(dp_send_result(sp[0], 42, DP_PERMANENT, "5.1.1 no such user"));
    ck_assert(dp_recv(sp[1], rec, sizeof rec, &len, &fd));
    ck_assert_int_eq(fd, -1);
    ck_assert(dp_result_decode(&r, rec, len));
    ck_assert_uint_eq(r.job, 42);
    ck_assert_int_eq(r.status, DP_PERMANENT);
    ck_assert_str_eq(r.text, "5.1.1 no such user");
    /* an over-long text is cut to the field's bound, never refused */
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    ck_assert(dp_send_result(sp[0], 43, DP_TEMPORARY, big));
    ck_assert(dp_recv(sp[1], rec, sizeof rec, &len, &fd));
    ck_assert(dp_result_decode(&r, rec, len));
    ck_assert_uint_eq(strlen(r.text), DP_FIELD_MAX);
    /* a text with a line end cannot be framed */
    ck_assert(!dp_send_result(sp[0], 44, DP_TEMPORARY, "4.0.0 a\r\nb"));
    /* a success's action (A) goes with it; nothing else takes one */
    ck_assert(dp_send_result_action(sp[0], 45, DP_SUCCESS, DP_ACTION_RELAYED, "2.0.0 ok"));
    ck_assert(dp_recv(sp[1], rec, sizeof rec, &len, &fd));
    ck_assert(dp_result_decode(&r, rec, len));
    ck_assert_str_eq(r.action, "relayed");
    ck_assert(dp_send_result(sp[0], 46, DP_SUCCESS, "2.0.0 ok"));
    ck_assert(dp_recv(sp[1], rec, sizeof rec, &len, &fd));
    ck_assert(dp_result_decode(&r, rec, len));
    ck_assert_str_eq(r.action, "");
    ck_assert(!dp_send_result_action(sp[0], 47, DP_PERMANENT, DP_ACTION_RELAYED, "5.0.0 no"));
    ck_assert(!dp_send_result_action(sp[0], 48, DP_SUCCESS, "delivered", "2.0.0 ok"));
    static const char bad_action[] = "J1\0Ss\0X2.0.0 ok\0Abogus\0";
    static const char action_on_failure[] = "J1\0Sp\0X5.0.0 no\0Aexpanded\0";
    ck_assert(!dp_result_decode(&r, bad_action, sizeof bad_action - 1));
    ck_assert(!dp_result_decode(&r, action_on_failure, sizeof action_on_failure - 1));
}
END_TEST

START_TEST(test_send_recv_with_fd)
{
    struct dp_job j, k;
    char rec[DP_RECORD_MAX], got[DP_RECORD_MAX + 1], tmpl[] = "/tmp/check_dp_XXXXXX";
    size_t len, glen;
    int fd = mkstemp(tmpl), rfd;
    ck_assert_int_ge(fd, 0);
    unlink(tmpl);
    ck_assert_int_eq(write(fd, "hello", 5), 5);
    sample_job(&j);
    ck_assert(dp_job_encode(&j, rec, sizeof rec, &len));
    ck_assert(dp_send(sp[0], rec, len, fd));
    close(fd);
    ck_assert(dp_recv(sp[1], got, sizeof got, &glen, &rfd));
    ck_assert_uint_eq(glen, len);
    ck_assert_int_ge(rfd, 0);
    ck_assert(dp_job_decode(&k, got, glen));
    char b[8];
    ck_assert_int_eq(pread(rfd, b, sizeof b, 0), 5);
    ck_assert(!memcmp(b, "hello", 5));
    ck_assert_int_eq(fcntl(rfd, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
    close(rfd);
    /* without an fd */
    ck_assert(dp_send(sp[0], rec, len, -1));
    ck_assert(dp_recv(sp[1], got, sizeof got, &glen, &rfd));
    ck_assert_int_eq(rfd, -1);
    /* end of stream */
    close(sp[0]);
    sp[0] = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    ck_assert(!dp_recv(sp[1], got, sizeof got, &glen, &rfd));
    ck_assert_int_eq(errno, EPIPE);
}
END_TEST

START_TEST(test_refused_records)
{
    struct dp_job k;
    struct dp_result r;
    static const char unknown[] = "J1\0M6926A1C0F00DBA5E\0F\0Ra@b\0T5\0Qx";
    static const char missing[] = "J1\0M6926A1C0F00DBA5E\0F\0Ra@b";       /* no T */
    static const char badid[] = "J1\0M6926a1c0f00dba5e\0F\0Ra@b\0T5";
    static const char twice[] = "J1\0J2\0M6926A1C0F00DBA5E\0F\0Ra@b\0T5";
    static const char badnum[] = "J1x\0M6926A1C0F00DBA5E\0F\0Ra@b\0T5";
    static const char lead0[] = "J01\0M6926A1C0F00DBA5E\0F\0Ra@b\0T5";
    static const char emptyr[] = "J1\0M6926A1C0F00DBA5E\0F\0R\0T5";
    static const char nl[] = "J1\0M6926A1C0F00DBA5E\0F\0Ra@b\nX\0T5";
    static const char good[] = "J1\0M6926A1C0F00DBA5E\0F\0Ra@b\0T5";
    ck_assert(dp_job_decode(&k, good, sizeof good));
    ck_assert(!dp_job_decode(&k, unknown, sizeof unknown));
    ck_assert(!dp_job_decode(&k, missing, sizeof missing));
    ck_assert(!dp_job_decode(&k, badid, sizeof badid));
    ck_assert(!dp_job_decode(&k, twice, sizeof twice));
    ck_assert(!dp_job_decode(&k, badnum, sizeof badnum));
    ck_assert(!dp_job_decode(&k, lead0, sizeof lead0));
    ck_assert(!dp_job_decode(&k, emptyr, sizeof emptyr));
    ck_assert(!dp_job_decode(&k, nl, sizeof nl));
    ck_assert(!dp_job_decode(&k, good, sizeof good - 1));   /* not NUL-ended: truncated */
    static const char u0[] = "J1\0M6926A1C0F00DBA5E\0F\0Ra@b\0T5\0U0";
    static const char uempty[] = "J1\0M6926A1C0F00DBA5E\0F\0Ra@b\0T5\0U";
    ck_assert(!dp_job_decode(&k, u0, sizeof u0));
    ck_assert(!dp_job_decode(&k, uempty, sizeof uempty));
    static const char badst[] = "J1\0Sq\0X4.0.0 x";
    static const char nox[] = "J1\0St";
    ck_assert(!dp_result_decode(&r, badst, sizeof badst));
    ck_assert(!dp_result_decode(&r, nox, sizeof nox));
    ck_assert(!dp_result_decode(&r, "", 0));
}
END_TEST

START_TEST(test_limits_oversized)
{
    char big[DP_RECORD_MAX + 100], got[DP_RECORD_MAX + 1];
    size_t glen;
    int rfd;
    struct dp_job j;
    size_t len;
    /* the sender refuses to send more than DP_RECORD_MAX */
    memset(big, 'A', sizeof big);
    ck_assert(!dp_send(sp[0], big, sizeof big, -1));
    ck_assert_int_eq(errno, EMSGSIZE);
    /* a peer that sends more anyway: the receiver refuses it */
    ck_assert_int_eq(send(sp[0], big, sizeof big, 0), (ssize_t)sizeof big);
    ck_assert(!dp_recv(sp[1], got, sizeof got, &glen, &rfd));
    ck_assert_int_eq(errno, EMSGSIZE);
    /* the next record is read cleanly: datagram boundaries hold */
    ck_assert_int_eq(send(sp[0], "J1\0St\0X4.0.0 a", 15, 0), 15);
    ck_assert(dp_recv(sp[1], got, sizeof got, &glen, &rfd));
    ck_assert_uint_eq(glen, 15);
    /* field bounds */
    sample_job(&j);
    memset(j.rcpt, 'r', DP_ADDR_MAX);
    j.rcpt[DP_ADDR_MAX] = 0;
    ck_assert(dp_job_encode(&j, got, sizeof got, &len));
    struct dp_job k;
    ck_assert(dp_job_decode(&k, got, len));
    ck_assert_uint_eq(strlen(k.rcpt), DP_ADDR_MAX);
    /* a recipient one byte too long in a hand-made record */
    char rec[600];
    size_t o = 0;
    memcpy(rec, "J1\0M6926A1C0F00DBA5E\0F\0R", 24);
    o = 24;
    memset(rec + o, 'r', DP_ADDR_MAX + 1);
    o += DP_ADDR_MAX + 1;
    memcpy(rec + o, "\0T5\0", 4);
    o += 4;
    ck_assert(!dp_job_decode(&k, rec, o));
    /* encoder: CR/LF refused, too small a buffer refused */
    sample_job(&j);
    snprintf(j.rcpt, sizeof j.rcpt, "%s", "a\r\nb@c");
    ck_assert(!dp_job_encode(&j, got, sizeof got, &len));
    ck_assert_int_eq(errno, EINVAL);
    sample_job(&j);
    ck_assert(!dp_job_encode(&j, got, 20, &len));
    ck_assert_int_eq(errno, EMSGSIZE);
    /* the encoder sends only what the decoder takes: a birth over 9e18
     * (an envelope holds up to 2^63-1) went out, the deliverer refused the
     * record and never answered, and its job stayed in flight for ever */
    sample_job(&j);
    j.birth = 9000000000000000000LL;
    ck_assert(dp_job_encode(&j, got, sizeof got, &len));
    ck_assert(dp_job_decode(&k, got, len));
    ck_assert_int_eq(k.birth, 9000000000000000000LL);
    j.birth = 9000000000000000001LL;
    ck_assert(!dp_job_encode(&j, got, sizeof got, &len));
    ck_assert_int_eq(errno, EINVAL);
    j.birth = 9223372036854775807LL;
    ck_assert(!dp_job_encode(&j, got, sizeof got, &len));
    ck_assert_int_eq(errno, EINVAL);
}
END_TEST

START_TEST(test_limits_many_fds)
{
    /* two descriptors in one record: refused, and both closed */
    union { struct cmsghdr h; char b[CMSG_SPACE(2 * sizeof(int))]; } cm;
    int fds[2] = { dup(0), dup(0) };
    struct iovec iov = { (void *)"J1\0St\0X4.0.0 a", 15 };
    struct msghdr mh;
    memset(&mh, 0, sizeof mh);
    memset(&cm, 0, sizeof cm);
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = cm.b;
    mh.msg_controllen = sizeof cm.b;
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(2 * sizeof(int));
    memcpy(CMSG_DATA(c), fds, sizeof fds);
    ck_assert_int_eq(sendmsg(sp[0], &mh, 0), 15);
    close(fds[0]);
    close(fds[1]);
    int probe = dup(0);      /* the lowest free number */
    close(probe);
    char got[DP_RECORD_MAX + 1];
    size_t glen;
    int rfd;
    ck_assert(!dp_recv(sp[1], got, sizeof got, &glen, &rfd));
    ck_assert_int_eq(errno, EPROTO);
    int after = dup(0);       /* the received ones were closed: same lowest number */
    ck_assert_int_eq(after, probe);
    close(after);
}
END_TEST

START_TEST(test_reload_roundtrip)
{
    char rec[DP_RECORD_MAX], got[DP_RECORD_MAX + 1];
    size_t len, glen;
    int rfd = 7;
    struct dp_job j;
    struct dp_result r;
    ck_assert(dp_reload_encode(rec, sizeof rec, &len));
    ck_assert_uint_eq(len, DP_RELOAD_LEN);
    ck_assert_int_eq(memcmp(rec, "H\0", 2), 0);
    ck_assert(dp_reload_decode(rec, len));
    /* through the real socket, no fd */
    ck_assert(dp_send(sp[0], rec, len, -1));
    ck_assert(dp_recv(sp[1], got, sizeof got, &glen, &rfd));
    ck_assert_int_eq(rfd, -1);
    ck_assert(dp_reload_decode(got, glen));
    /* it is neither a job nor a result: old deliverers refuse it as before */
    errno = 0;
    ck_assert(!dp_job_decode(&j, got, glen));
    ck_assert_int_eq(errno, EPROTO);
    ck_assert(!dp_result_decode(&r, got, glen));
    /* and a job or a result is not a reload */
    sample_job(&j);
    ck_assert(dp_job_encode(&j, rec, sizeof rec, &len));
    errno = 0;
    ck_assert(!dp_reload_decode(rec, len));
    ck_assert_int_eq(errno, EPROTO);
    memset(&r, 0, sizeof r);
    r.job = 1;
    r.status = DP_SUCCESS;
    snprintf(r.text, sizeof r.text, "%s", "2.0.0 ok");
    ck_assert(dp_result_encode(&r, rec, sizeof rec, &len));
    ck_assert(!dp_reload_decode(rec, len));
}
END_TEST

START_TEST(test_limits_reload_exact)
{
    static const struct { const char *rec; size_t len; } bad[] = {
        { "", 0 },                  /* nothing */
        { "H", 1 },                 /* not NUL-terminated */
        { "\0", 1 },                /* empty field */
        { "H\0\0", 3 },             /* trailing empty field */
        { "Hx\0", 3 },              /* a value */
        { "Hreload\0", 8 },
        { "h\0", 2 },               /* letters are case-sensitive */
        { "H\0H\0", 4 },            /* repeated */
        { "H\0J1\0", 5 },           /* another field after */
        { "J1\0H\0", 5 },           /* another field before */
        { "H\rx\0", 4 },
    };
    char rec[DP_RECORD_MAX];
    size_t len = 99;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        errno = 0;
        ck_assert_msg(!dp_reload_decode(bad[i].rec, bad[i].len), "case %zu accepted", i);
        ck_assert_int_eq(errno, EPROTO);
    }
    /* exactly one field: a prefix of a longer buffer is judged by len alone */
    ck_assert(dp_reload_decode("H\0J1\0", 2));
    /* a too-small buffer */
    errno = 0;
    ck_assert(!dp_reload_encode(rec, 1, &len));
    ck_assert_int_eq(errno, EMSGSIZE);
    ck_assert(dp_reload_encode(rec, 2, &len));
    ck_assert_uint_eq(len, 2);
}
END_TEST

static void sample_mbox(struct dp_mbox *m)
{
    memset(m, 0, sizeof *m);
    m->job = 9;
    memcpy(m->id, "6926A1C0F00DBA5E", 17);
    snprintf(m->sender, sizeof m->sender, "%s", "bob@example.test");
    snprintf(m->rcpt, sizeof m->rcpt, "%s", "Alice+x@Example.Test");
    m->uid = 20001;
    m->gid = 20002;
    snprintf(m->maildir, sizeof m->maildir, "%s", "/srv/postern/mail/alice/Maildir");
    snprintf(m->host, sizeof m->host, "%s", "mail.example.test");
    m->quota = 1000000;
}

START_TEST(test_mbox_roundtrip_with_fd)
{
    struct dp_mbox m, k;
    char rec[DP_RECORD_MAX + 1];
    size_t len;
    int fd, p[2];
    sample_mbox(&m);
    ck_assert(dp_mbox_encode(&m, rec, sizeof rec, &len));
    ck_assert(dp_mbox_decode(&k, rec, len));
    ck_assert_uint_eq(k.job, 9);
    ck_assert_str_eq(k.id, m.id);
    ck_assert_str_eq(k.sender, "bob@example.test");
    ck_assert_str_eq(k.rcpt, "Alice+x@Example.Test");
    ck_assert_uint_eq(k.uid, 20001);
    ck_assert_uint_eq(k.gid, 20002);
    ck_assert_str_eq(k.maildir, m.maildir);
    ck_assert_str_eq(k.host, "mail.example.test");
    ck_assert_uint_eq(k.quota, 1000000);
    /* the null sender, no quota; through a socket with the message fd */
    m.sender[0] = 0;
    m.quota = 0;
    ck_assert_int_eq(pipe(p), 0);
    ck_assert(dp_mbox_encode(&m, rec, sizeof rec, &len));
    ck_assert(dp_send(sp[0], rec, len, p[0]));
    ck_assert(dp_recv(sp[1], rec, sizeof rec, &len, &fd));
    ck_assert_int_ge(fd, 0);
    ck_assert(dp_mbox_decode(&k, rec, len));
    ck_assert_str_eq(k.sender, "");
    ck_assert_uint_eq(k.quota, 0);
    ck_assert_int_eq(write(p[1], "x", 1), 1);
    char c = 0;
    ck_assert_int_eq(read(fd, &c, 1), 1);      /* the same pipe */
    ck_assert_int_eq(c, 'x');
    close(fd); close(p[0]); close(p[1]);
    /* a job record is not a mailbox record, nor the other way round */
    struct dp_job j;
    ck_assert(!dp_job_decode(&j, rec, len));
    sample_job(&j);
    ck_assert(dp_job_encode(&j, rec, sizeof rec, &len));
    ck_assert(!dp_mbox_decode(&k, rec, len));
}
END_TEST

START_TEST(test_limits_mbox)
{
    struct dp_mbox m, k;
    char rec[DP_RECORD_MAX + 1];
    size_t len;
    /* never root: uid or gid 0 refused by the encoder and the decoder */
    sample_mbox(&m);
    m.uid = 0;
    errno = 0;
    ck_assert(!dp_mbox_encode(&m, rec, sizeof rec, &len));
    ck_assert_int_eq(errno, EINVAL);
    sample_mbox(&m);
    m.gid = 0;
    ck_assert(!dp_mbox_encode(&m, rec, sizeof rec, &len));
    static const char root_uid[] = "J1\0M6926A1C0F00DBA5E\0F\0Ra\0U0\0G5\0D/m\0Lh\0Q0\0";
    static const char root_gid[] = "J1\0M6926A1C0F00DBA5E\0F\0Ra\0U5\0G0\0D/m\0Lh\0Q0\0";
    static const char ok[] = "J1\0M6926A1C0F00DBA5E\0F\0Ra\0U5\0G5\0D/m\0Lh\0Q0\0";
    static const char big_uid[] = "J1\0M6926A1C0F00DBA5E\0F\0Ra\0U4294967295\0G5\0D/m\0Lh\0Q0\0";
    static const char no_quota[] = "J1\0M6926A1C0F00DBA5E\0F\0Ra\0U5\0G5\0D/m\0Lh\0";
    static const char twice[] = "J1\0M6926A1C0F00DBA5E\0F\0Ra\0U5\0U6\0G5\0D/m\0Lh\0Q0\0";
    static const char cr[] = "J1\0M6926A1C0F00DBA5E\0F\0Ra\0U5\0G5\0D/m\r\0Lh\0Q0\0";
    static const char nodir[] = "J1\0M6926A1C0F00DBA5E\0F\0Ra\0U5\0G5\0D\0Lh\0Q0\0";
    ck_assert(dp_mbox_decode(&k, ok, sizeof ok - 1));
    ck_assert_uint_eq(k.uid, 5);
    const char *bad[] = { root_uid, root_gid, big_uid, no_quota, twice, cr, nodir };
    const size_t badlen[] = { sizeof root_uid, sizeof root_gid, sizeof big_uid, sizeof no_quota, sizeof twice,
                              sizeof cr, sizeof nodir };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        errno = 0;
        ck_assert_msg(!dp_mbox_decode(&k, bad[i], badlen[i] - 1), "case %zu accepted", i);
        ck_assert_int_eq(errno, EPROTO);
        ck_assert_uint_eq(k.uid, 0);            /* nothing half-filled */
    }
    /* the longest Maildir path fits one record; one byte more is refused */
    sample_mbox(&m);
    memset(m.maildir, 'd', DP_PATH_MAX);
    m.maildir[0] = '/';
    m.maildir[DP_PATH_MAX] = 0;
    memset(m.sender, 's', DP_ADDR_MAX);
    m.sender[DP_ADDR_MAX] = 0;
    memset(m.rcpt, 'r', DP_ADDR_MAX);
    m.rcpt[DP_ADDR_MAX] = 0;
    memset(m.host, 'h', DP_HOST_MAX);
    m.host[DP_HOST_MAX] = 0;
    ck_assert(dp_mbox_encode(&m, rec, sizeof rec, &len));
    ck_assert_uint_le(len, DP_RECORD_MAX);
    ck_assert(dp_mbox_decode(&k, rec, len));
    ck_assert_uint_eq(strlen(k.maildir), DP_PATH_MAX);
    /* a value with a line break cannot be encoded */
    sample_mbox(&m);
    snprintf(m.maildir, sizeof m.maildir, "%s", "/m\nD/etc");
    errno = 0;
    ck_assert(!dp_mbox_encode(&m, rec, sizeof rec, &len));
    ck_assert_int_eq(errno, EINVAL);
    /* a too-small buffer */
    sample_mbox(&m);
    errno = 0;
    ck_assert(!dp_mbox_encode(&m, rec, 20, &len));
    ck_assert_int_eq(errno, EMSGSIZE);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("deliver_proto");
    TCase *core = tcase_create("core");
    tcase_add_checked_fixture(core, setup, teardown);
    tcase_add_test(core, test_job_roundtrip);
    tcase_add_test(core, test_result_roundtrip_and_exact);
    tcase_add_test(core, test_send_result);
    tcase_add_test(core, test_send_recv_with_fd);
    tcase_add_test(core, test_refused_records);
    tcase_add_test(core, test_reload_roundtrip);
    tcase_add_test(core, test_mbox_roundtrip_with_fd);
    suite_add_tcase(s, core);
    TCase *limits = tcase_create("limits");
    tcase_add_checked_fixture(limits, setup, teardown);
    tcase_add_test(limits, test_limits_oversized);
    tcase_add_test(limits, test_limits_many_fds);
    tcase_add_test(limits, test_limits_reload_exact);
    tcase_add_test(limits, test_limits_mbox);
    suite_add_tcase(s, limits);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
