/* check_smtp_session.c - the SMTP state machine driven from byte scripts
 * over a socketpair, with an injector that plays queue-inject in a child
 * process (reads the message pipe and the envelope socket like the real one,
 * answers with an ID, exits with the code the test chose). */
#include <arpa/inet.h>
#include <check.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "buf.h"
#include "io.h"
#include "log.h"
#include "smtp_net.h"
#include "smtp_session.h"

static struct config cf;
static struct smtp_rcptmap map;
static char tmpdir[] = "/tmp/check_smtp_session.XXXXXX";
static char path_msg[128], path_env[128], path_trig[128];
static int inject_exit;          /* what the fake queue-inject exits with */
static pid_t inject_pid;

/* ---- the fake queue-inject ---- */

static size_t slurp_fd(int fd, struct buf *b)
{
    char chunk[4096];
    for (;;) {
        ssize_t r = read(fd, chunk, sizeof chunk);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        buf_append(b, chunk, (size_t)r);
    }
    return b->len;
}

static void save(const char *path, const struct buf *b)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) _exit(99);
    if (b->len && write(fd, b->s, b->len) != (ssize_t)b->len) _exit(99);
    close(fd);
}

static int fake_start(void *ctx, int msg_fd, int env_fd)
{
    inject_pid = fork();
    if (inject_pid < 0) return 0;
    if (inject_pid) return 1;
    /* keep only our two fds (like the monitor's exec child does) */
    int m = fcntl(msg_fd, F_DUPFD, 100), e = fcntl(env_fd, F_DUPFD, 101);
    for (int fd = 3; fd < 100; fd++) close(fd);
    struct buf msg = BUF_ZERO, env = BUF_ZERO;
    slurp_fd(m, &msg);
    slurp_fd(e, &env);
    int ended = env.len >= 2 && env.s[env.len - 1] == 0 && env.s[env.len - 2] == 0;
    if (!ended) _exit(55);
    save(path_msg, &msg);
    save(path_env, &env);
    if (inject_exit == 0 && write(e, "0123456789ABCDEF\n", 17) != 17) _exit(54);
    _exit(inject_exit);
}

static int fake_finish(void *ctx, int *status)
{
    int st;
    *status = -1;
    if (waitpid(inject_pid, &st, 0) != inject_pid) return 0;
    *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return 1;
}

static int fake_trigger(void *ctx)
{
    int fd = open(path_trig, O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (fd < 0) return 0;
    int ok = write(fd, "t", 1) == 1;
    close(fd);
    return ok;
}

static const struct smtp_injector fake = { NULL, fake_start, fake_finish, fake_trigger, NULL, NULL };

/* ---- a fake tls-proxy: says "TLS ..." and relays plaintext both ways ---- */

static int tls_fail;             /* the fake handshake fails: EOF at once */

static void relay(int a, int b)
{
    int open_a = 1, open_b = 1;
    char chunk[4096];
    while (open_a || open_b) {
        struct pollfd p[2] = { { a, open_a ? POLLIN : 0, 0 }, { b, open_b ? POLLIN : 0, 0 } };
        if (poll(p, 2, 10000) <= 0) break;
        for (int i = 0; i < 2; i++) {
            if (!p[i].revents) continue;
            int from = i ? b : a, to = i ? a : b;
            ssize_t r = read(from, chunk, sizeof chunk);
            if (r <= 0) {
                shutdown(to, SHUT_WR);
                if (i) open_b = 0; else open_a = 0;
            } else if (!fd_write_all(to, chunk, (size_t)r, 5000)) {
                return;
            }
        }
    }
}

static int fake_starttls(void *ctx, int client_fd, const char *id, int *plain_fd)
{
    int sp[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) < 0) return 0;
    pid_t pid = fork();
    if (pid < 0) return 0;
    if (pid == 0) {
        close(sp[0]);
        int fl = fcntl(client_fd, F_GETFL);
        fcntl(client_fd, F_SETFL, fl & ~O_NONBLOCK);
        if (!tls_fail && write(sp[1], "TLS TLSv1.3 TLS_FAKE_SHA256 -\n", 30) == 30)
            relay(client_fd, sp[1]);
        _exit(0);
    }
    close(sp[1]);
    *plain_fd = sp[0];
    return 1;
}

static int fake_auth(void *ctx, const char *user, size_t ulen, const char *pass, size_t plen,
                     char *name, size_t namelen)
{
    if (ulen == 5 && !memcmp(user, "alice", 5) && plen == 6 && !memcmp(pass, "secret", 6)) {
        snprintf(name, namelen, "alice");
        return SMTP_AUTH_OK;
    }
    if (ulen == 4 && !memcmp(user, "temp", 4)) return SMTP_AUTH_TEMP;
    return SMTP_AUTH_BAD;
}

static const struct smtp_injector fake_tls = { NULL, fake_start, fake_finish, fake_trigger,
                                               fake_starttls, fake_auth };

/* ---- running a session ---- */

static const char *peer_ip = "127.0.0.1";
static const char *local_ip = NULL;   /* our address on the connection; NULL: a socketpair's */

/* Run a session in a child on a socketpair (a port of the given kind,
 * with the given injector), send script, and if script2 then, once "220
 * 2.0.0 Ready to start TLS" came, script2 (then close our write side
 * unless keep_open); return everything the server wrote. */
static char *run_session_ex(const struct smtp_injector *inj, int port, const char *script, size_t len,
                            const char *script2, int keep_open);
static char *run_session(const char *script, size_t len, int keep_open)
{
    return run_session_ex(&fake, 0, script, len, NULL, keep_open);
}

static char *run_session_ex(const struct smtp_injector *inj, int port, const char *script, size_t len,
                            const char *script2, int keep_open)
{
    int sp[2];
    if (len == (size_t)-1) len = strlen(script);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sp), 0);
    unlink(path_msg);
    unlink(path_env);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(sp[0]);
        struct sockaddr_in sin;
        memset(&sin, 0, sizeof sin);
        sin.sin_family = AF_INET;
        sin.sin_port = htons(40000);
        inet_pton(AF_INET, peer_ip, &sin.sin_addr);
        static struct smtp_session s;
        smtp_session_init(&s, &cf, &map, inj, sp[1], (struct sockaddr *)&sin, port, NULL);
        if (local_ip) {
            struct sockaddr_in me = { .sin_family = AF_INET, .sin_port = htons(25) };
            inet_pton(AF_INET, local_ip, &me.sin_addr);
            smtp_session_set_local(&s, (struct sockaddr *)&me, sizeof me);
        }
        int ok = smtp_session_run(&s);
        smtp_session_free(&s);
        _exit(ok ? 0 : 1);
    }
    close(sp[1]);
    ck_assert(fd_write_all(sp[0], script, len, 5000));
    if (!keep_open && !script2) shutdown(sp[0], SHUT_WR);
    struct buf out = BUF_ZERO;
    char chunk[4096];
    for (;;) {
        struct pollfd p = { .fd = sp[0], .events = POLLIN, .revents = 0 };
        ck_assert_int_gt(poll(&p, 1, 10000), 0);
        ssize_t r = read(sp[0], chunk, sizeof chunk);
        if (r <= 0) break;
        buf_append(&out, chunk, (size_t)r);
        if (script2 && buf_appends(&out, "") && strstr(out.s, "220 2.0.0 Ready to start TLS\r\n")) {
            usleep(50000);
            if (!fd_write_all(sp[0], script2, strlen(script2), 5000)) { /* the session may be gone */ }
            if (!keep_open) shutdown(sp[0], SHUT_WR);
            script2 = NULL;
        }
    }
    close(sp[0]);
    int st;
    waitpid(pid, &st, 0);
    buf_appends(&out, "");
    return out.s ? out.s : strdup("");
}

#define RUN(lit) run_session((lit), sizeof(lit) - 1, 0)

/* the reply lines' codes, e.g. "220 250 250 354 250 221" (only final lines) */
static void codes(const char *out, char *dst, size_t dstlen)
{
    size_t o = 0;
    dst[0] = 0;
    for (const char *p = out; *p; ) {
        const char *e = strstr(p, "\r\n");
        if (!e) break;
        if (e - p >= 4 && p[3] == ' ' && o + 5 < dstlen) {
            if (o) dst[o++] = ' ';
            memcpy(dst + o, p, 3);
            o += 3;
            dst[o] = 0;
        }
        p = e + 2;
    }
}

static char *file_text(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0) return NULL;
    struct buf b = BUF_ZERO;
    slurp_fd(fd, &b);
    close(fd);
    buf_appends(&b, "");
    *len = b.len;
    return b.s ? b.s : strdup("");
}

/* does the saved envelope hold this record (type + value)? */
static int env_has(const char *rec)
{
    size_t len;
    char *e = file_text(path_env, &len);
    if (!e) return 0;
    int found = 0;
    for (size_t i = 0; i < len; i += strlen(e + i) + 1)
        if (!strcmp(e + i, rec)) { found = 1; break; }
    free(e);
    return found;
}

#define ASSERT_CODES(out, want) do { char c_[8192]; codes((out), c_, sizeof c_); \
    ck_assert_msg(!strcmp(c_, (want)), "codes \"%s\", want \"%s\"; output:\n%s", c_, (want), (out)); } while (0)

/* set one setting of cf, as the conf file would */
static void set(const char *name, const char *value)
{
    char why[256];
    ck_assert_msg(config_set(&cf, name, value, why, sizeof why), "%s: %s", name, why);
}

static void setup(void)
{
    ck_assert(mkdtemp(tmpdir) != NULL || errno == EEXIST);
    snprintf(path_msg, sizeof path_msg, "%s/msg", tmpdir);
    snprintf(path_env, sizeof path_env, "%s/env", tmpdir);
    snprintf(path_trig, sizeof path_trig, "%s/trigger", tmpdir);
    unlink(path_trig);
    config_defaults(&cf);
    set("hostname", "mx.example.test");
    set("local_domains", "example.test");
    set("session_timeout", "5");
    smtp_rcptmap_init(&map);
    ck_assert(smtp_rcptmap_add(&map, "alice", 5));
    ck_assert(smtp_rcptmap_add(&map, "postmaster", 10));
    inject_exit = 0;
    peer_ip = "127.0.0.1";
    log_init("check_smtp_session");
}

static void teardown(void)
{
    smtp_rcptmap_free(&map);
    unlink(path_msg);
    unlink(path_env);
    unlink(path_trig);
    rmdir(tmpdir);
    memcpy(tmpdir + strlen(tmpdir) - 6, "XXXXXX", 6);
}

/* ---- core ---- */

START_TEST(test_seed_000_helo_session)
{
    /* the operators' guide 000, verbatim */
    char *out = RUN("HELO my.server.com\r\n"
                    "MAIL FROM: <danny@mydomain.com>\r\n"
                    "RCPT TO: <sarah@yourdomain.com>\r\n"
                    "DATA\r\n"
                    "From: Danny Dolittle <danny@mydomain.com>\r\n"
                    "To: Sarah Smith <sarah@yourdomain.com>\r\n"
                    "Subject: Email sample\r\n"
                    "Mime-Version: 1.0\r\n"
                    "Content-Type: text/plain; charset=us-ascii\r\n"
                    "\r\n"
                    "This is a test email for you to read.\r\n"
                    ".\r\n"
                    "QUIT\r\n");
    ASSERT_CODES(out, "220 250 250 250 354 250 221");
    ck_assert(strstr(out, "220 mx.example.test ESMTP postern\r\n") == out);
    ck_assert(strstr(out, "250 2.0.0 Ok: queued as 0123456789ABCDEF\r\n"));
    ck_assert(strstr(out, "221 2.0.0 mx.example.test closing connection\r\n"));
    size_t len;
    char *msg = file_text(path_msg, &len);
    ck_assert(msg);
    ck_assert_str_eq(msg, "From: Danny Dolittle <danny@mydomain.com>\n"
                          "To: Sarah Smith <sarah@yourdomain.com>\n"
                          "Subject: Email sample\n"
                          "Mime-Version: 1.0\n"
                          "Content-Type: text/plain; charset=us-ascii\n"
                          "\n"
                          "This is a test email for you to read.\n");
    ck_assert(env_has("Fdanny@mydomain.com"));
    ck_assert(env_has("Tsarah@yourdomain.com\t\t"));
    ck_assert(env_has("Csmtp 127.0.0.1"));
    free(msg);
    free(out);
}
END_TEST

START_TEST(test_seed_001_bracketless)
{
    char *out = RUN("HELO local.domain.name\r\n"
                    "MAIL FROM: mail@domain.ext\r\n"
                    "RCPT TO: mail@otherdomain.ext\r\n"
                    "DATA\r\n"
                    "Subject: hello\r\n\r\nhello mail@otherdomain.ext from mail@domain.ext\r\n.\r\n"
                    "QUIT\r\n");
    ASSERT_CODES(out, "220 250 250 250 354 250 221");
    ck_assert(env_has("Fmail@domain.ext"));
    ck_assert(env_has("Tmail@otherdomain.ext\t\t"));
    free(out);
}
END_TEST

START_TEST(test_seed_004_ehlo_notify)
{
    char *out = RUN("EHLO client.example.com\r\n"
                    "MAIL FROM:<sender@example.com>\r\n"
                    "RCPT TO: <alice@example.test> NOTIFY=success,failure\r\n"
                    "DATA\r\n"
                    "Subject: Test email\r\n"
                    "Body of the email\r\n"
                    ".\r\n"
                    "QUIT\r\n"
                    "QUIT\r\n");
    ASSERT_CODES(out, "220 250 250 250 354 250 221");
    ck_assert(strstr(out, "250-mx.example.test\r\n250-PIPELINING\r\n250-SIZE 26214400\r\n"));
    ck_assert(strstr(out, "250-8BITMIME\r\n"));
    ck_assert(strstr(out, "250-ENHANCEDSTATUSCODES\r\n"));
    ck_assert(strstr(out, "250-DSN\r\n"));
    ck_assert(strstr(out, "250-SMTPUTF8\r\n"));
    ck_assert(strstr(out, "250-CHUNKING\r\n"));
    ck_assert(strstr(out, "250 HELP\r\n"));
    ck_assert(!strstr(out, "STARTTLS"));
    ck_assert(!strstr(out, "AUTH"));
    ck_assert(env_has("Talice@example.test\tSUCCESS,FAILURE\t"));
    size_t len;
    char *msg = file_text(path_msg, &len);
    /* its second line is no field: a blank line ends the header before it */
    ck_assert_str_eq(msg, "Subject: Test email\n\nBody of the email\n");
    free(msg);
    /* the H record: one Received: field for the one recipient */
    char *env = file_text(path_env, &len);
    const char *h = NULL;
    for (size_t i = 0; i < len; i += strlen(env + i) + 1)
        if (env[i] == 'H') h = env + i + 1;
    ck_assert(h);
    const char *want = "Received: from client.example.com ([127.0.0.1])\n\tby mx.example.test (postern) with ESMTP id ";
    ck_assert_msg(!strncmp(h, want, strlen(want)), "H record: %s", h);
    /* the id is an Atom (RFC 5321 4.4: ID = "ID" FWS ( Atom / msg-id )),
     * atext only: no "." */
    const char *id = h + strlen(want);
    size_t idlen = strcspn(id, "\n\t ;");
    ck_assert_uint_gt(idlen, 0);
    for (size_t i = 0; i < idlen; i++)
        ck_assert_msg(isalnum((unsigned char)id[i]) || strchr("!#$%&'*+-/=?^_`{|}~", id[i]),
                      "Received id %.*s is no Atom", (int)idlen, id);
    ck_assert(strstr(h, "\n\tfor <alice@example.test>; "));
    ck_assert(strstr(h, " +0000"));
    free(env);
    free(out);
}
END_TEST

START_TEST(test_recipient_policy)
{
    peer_ip = "192.0.2.7";    /* not in relay_networks */
    char *out = RUN("EHLO x\r\nMAIL FROM:<a@b.example>\r\n"
                    "RCPT TO:<sarah@yourdomain.com>\r\n"        /* 554 relay */
                    "RCPT TO:<bob@example.test>\r\n"            /* 550 unknown */
                    "RCPT TO:<Alice+news@EXAMPLE.TEST>\r\n"     /* 250 */
                    "RCPT TO:<postmaster>\r\n"                  /* 250 */
                    "RCPT TO:<abuse@example.test>\r\n"          /* 550: not in this map */
                    "RCPT TO:<alice%other.example@example.test>\r\n" /* 550 */
                    "RCPT TO:<\"alice\"@example.test>\r\n"      /* 250: alice */
                    "RCPT TO:<\"ali ce\"@example.test>\r\n"     /* 550 */
                    "RCPT TO:<@relay.example:alice@other.example>\r\n" /* 554 */
                    "RCPT TO:<alice@[192.0.2.1]>\r\n"           /* 554 */
                    "RCPT TO:<alice@mx.example.test>\r\n"       /* 250: the hostname is local */
                    "QUIT\r\n");
    ASSERT_CODES(out, "220 250 250 554 550 250 250 550 550 250 550 554 554 250 221");
    ck_assert(strstr(out, "554 5.7.1 <sarah@yourdomain.com>: Relay access denied\r\n"));
    ck_assert(strstr(out, "550 5.1.1 <bob@example.test>: Recipient address rejected: User unknown\r\n"));
    free(out);
}
END_TEST

/* an alias whose name holds a '+' (postern-aliases(5) allows it) is a
 * recipient as a whole, as Postfix looks up "list+x" before "list"; any
 * other "+detail" still goes to the name before it */
START_TEST(test_rcpt_alias_name_with_plus)
{
    ck_assert(smtp_rcptmap_add(&map, "list+x", 6));
    char *out = RUN("EHLO x\r\nMAIL FROM:<a@b.example>\r\n"
                    "RCPT TO:<List+X@example.test>\r\n"       /* 250: the alias */
                    "RCPT TO:<list+y@example.test>\r\n"       /* 550: no list, no list+y */
                    "RCPT TO:<alice+x@example.test>\r\n"      /* 250: alice */
                    "QUIT\r\n");
    ASSERT_CODES(out, "220 250 250 250 550 250 221");
    free(out);
}
END_TEST

/* a recipient of ours is queued lower-cased, with no ORCPT made up for the
 * case change, so that queue-inject takes <Alice@Example.Test> and
 * <alice@example.test> as one recipient (one copy, as with Postfix); a
 * relayed address keeps its case (RFC 5321 2.4: the local part is the
 * destination's to interpret) */
START_TEST(test_local_recipient_case_folded)
{
    char *out = RUN("EHLO x\r\nMAIL FROM:<a@b.example>\r\n"
                    "RCPT TO:<Alice@Example.TEST>\r\n"
                    "RCPT TO:<ALICE+Box@example.test> NOTIFY=SUCCESS\r\n"
                    "RCPT TO:<Bob.Smith@Elsewhere.Example>\r\n"
                    "DATA\r\nSubject: x\r\n\r\nb\r\n.\r\nQUIT\r\n");
    ASSERT_CODES(out, "220 250 250 250 250 250 354 250 221");
    ck_assert(env_has("Talice@example.test\t\t"));
    ck_assert(env_has("Talice+box@example.test\tSUCCESS\t"));
    ck_assert(env_has("TBob.Smith@Elsewhere.Example\t\t"));
    free(out);
}
END_TEST

/* RFC 1123 5.2.17: mail to our own address literal is local (delivered as
 * user@hostname); another address literal is a relay destination */
START_TEST(test_own_address_literal)
{
    peer_ip = "192.0.2.7";    /* not in relay_networks */
    local_ip = "192.0.2.1";
    char *out = RUN("EHLO x\r\nMAIL FROM:<a@b.example>\r\n"
                    "RCPT TO:<Alice+x@[192.0.2.1]>\r\n"           /* 250: alice */
                    "RCPT TO:<bob@[192.0.2.1]>\r\n"               /* 550 unknown */
                    "RCPT TO:<alice@[192.0.2.2]>\r\n"             /* 554: not us */
                    "RCPT TO:<alice@[IPv6:::ffff:192.0.2.1]>\r\n" /* 250: us, mapped */
                    "RCPT TO:<alice@[IPv6:2001:db8::1]>\r\n"      /* 554 */
                    "DATA\r\nSubject: x\r\n\r\nb\r\n.\r\nQUIT\r\n");
    ASSERT_CODES(out, "220 250 250 250 550 554 250 554 354 250 221");
    ck_assert(strstr(out, "550 5.1.1 <bob@[192.0.2.1]>: Recipient address rejected: User unknown\r\n"));
    /* queued under the host name, lower-cased, the address given kept as
     * the original recipient (xtext: '+' is +2B) */
    ck_assert(env_has("Talice+x@mx.example.test\t\trfc822;Alice+2Bx@[192.0.2.1]"));
    ck_assert(env_has("Talice@mx.example.test\t\trfc822;alice@[IPv6:::ffff:192.0.2.1]"));
    free(out);

    struct sockaddr_in v4 = { .sin_family = AF_INET };
    struct sockaddr_in6 v6 = { .sin6_family = AF_INET6 }, m6 = { .sin6_family = AF_INET6 };
    struct sockaddr_un un = { .sun_family = AF_UNIX };
    inet_pton(AF_INET, "127.0.0.1", &v4.sin_addr);
    inet_pton(AF_INET6, "2001:db8::1", &v6.sin6_addr);
    inet_pton(AF_INET6, "::ffff:127.0.0.1", &m6.sin6_addr);
#define LIT(s, a) smtp_net_literal_is((s), sizeof(s) - 1, (const struct sockaddr *)(a))
    ck_assert(LIT("[127.0.0.1]", &v4));
    ck_assert(LIT("[IPv6:::ffff:127.0.0.1]", &v4));
    ck_assert(LIT("[127.0.0.1]", &m6));
    ck_assert(LIT("[ipv6:2001:DB8:0::1]", &v6));
    ck_assert(!LIT("[127.0.0.2]", &v4));
    ck_assert(!LIT("[127.0.0.1]", &v6));
    ck_assert(!LIT("[IPv6:2001:db8::1]", &v4));
    ck_assert(!LIT("[127.0.0.1]", &un));
    ck_assert(!LIT("127.0.0.1", &v4));
    ck_assert(!LIT("[127.0.0.1", &v4));
    ck_assert(!LIT("[]", &v4));
    ck_assert(!LIT("[IPv6:127.0.0.1]", &v4));
#undef LIT
}
END_TEST

START_TEST(test_sequence_errors)
{
    char *out = RUN("MAIL FROM:<a@b.example>\r\n"
                    "RCPT TO:<alice@example.test>\r\n"
                    "HELO x\r\n"
                    "RCPT TO:<alice@example.test>\r\n"
                    "DATA\r\n"
                    "MAIL FROM:<a@b.example>\r\n"
                    "DATA\r\n"
                    "MAIL FROM:<a@b.example>\r\n"
                    "RSET\r\n"
                    "RCPT TO:<alice@example.test>\r\n"
                    "QUIT\r\n");
    ASSERT_CODES(out, "220 503 503 250 503 503 250 503 503 250 503 221");
    ck_assert(strstr(out, "503 5.5.1 Error: send HELO/EHLO first\r\n"));
    ck_assert(strstr(out, "503 5.5.1 Error: need MAIL command\r\n"));
    ck_assert(strstr(out, "503 5.5.1 Error: need RCPT command\r\n"));
    ck_assert(strstr(out, "503 5.5.1 Error: nested MAIL command\r\n"));
    free(out);
}
END_TEST

START_TEST(test_etrn_rset_utf8_and_long_lines)
{
    /* ETRN (RFC 1985): syntax 501, named queues 458, local domains 459 */
    char *out = RUN("EHLO x\r\nETRN\r\nETRN !!!bad\r\nETRN a b\r\nETRN .x\r\nETRN #queue\r\n"
                    "ETRN example.test\r\nETRN @EXAMPLE.TEST\r\nETRN @far.example\r\nQUIT\r\n");
    ASSERT_CODES(out, "220 250 501 501 501 501 458 459 459 250 221");
    ck_assert(strstr(out, "458 4.3.0 Unable to queue messages for node #queue\r\n"));
    ck_assert(strstr(out, "459 4.3.0 Node example.test not allowed: "));
    free(out);
    /* RSET takes no argument (RFC 5321 4.1.1.5); the transaction survives a bad one */
    out = RUN("EHLO x\r\nMAIL FROM:<a@b.example>\r\nRSET foo\r\nRCPT TO:<alice@example.test>\r\n"
              "RSET\r\nRCPT TO:<alice@example.test>\r\nQUIT\r\n");
    ASSERT_CODES(out, "220 250 250 501 250 250 503 221");
    ck_assert(strstr(out, "501 5.5.4 Syntax: RSET\r\n"));
    free(out);
    /* invalid UTF-8 in a command: 500; valid UTF-8 in EHLO is a name */
    out = RUN("EHLO h\xe9llo.test\r\nNOOP \xff\xfe\r\nEHLO h\xc3\xa9llo.test\r\nNOOP \xc3\xa9\r\nQUIT\r\n");
    ASSERT_CODES(out, "220 500 500 250 250 221");
    ck_assert(strstr(out, "500 5.5.2 Error: bad UTF-8 syntax\r\n"));
    free(out);
    /* MAIL and RCPT may be longer than 512 by what DSN, SIZE, AUTH= and
     * SMTPUTF8 add (1148 and 1012 with CRLF); other commands may not */
    struct buf sc = BUF_ZERO;
    char orcpt[420], envid[101], auth[451], detail[59], noop[600];
    memset(orcpt, 'o', sizeof orcpt - 1); orcpt[sizeof orcpt - 1] = 0;
    memset(envid, 'E', sizeof envid - 1); envid[sizeof envid - 1] = 0;
    memset(auth, 'u', sizeof auth - 1); auth[sizeof auth - 1] = 0;
    memset(detail, 'd', sizeof detail - 1); detail[sizeof detail - 1] = 0;
    memset(noop, 'n', sizeof noop - 1); noop[sizeof noop - 1] = 0;
    buf_appendf(&sc, "EHLO x\r\nMAIL FROM:<a@b.example> SIZE=1000 BODY=8BITMIME RET=HDRS ENVID=%s AUTH=%s\r\n",
                envid, auth);
    ck_assert_uint_gt(sc.len - 8, 600);
    size_t mark = sc.len;
    buf_appendf(&sc, "RCPT TO:<alice+%s@example.test> NOTIFY=SUCCESS,FAILURE,DELAY ORCPT=rfc822;%s@x.example\r\n",
                detail, orcpt);
    ck_assert_uint_gt(sc.len - mark, 550);
    buf_appendf(&sc, "NOOP %s\r\n", noop);
    buf_appends(&sc, "RCPT TO:<alice@example.test> ORCPT=rfc822;");
    for (int i = 0; i < 1100; i++) buf_appends(&sc, "p");
    buf_appends(&sc, "\r\nQUIT\r\n");
    out = run_session(sc.s, sc.len, 0);
    ASSERT_CODES(out, "220 250 250 250 500 500 221");
    free(out);
    buf_free(&sc);
}
END_TEST

START_TEST(test_other_commands)
{
    char *out = RUN("NOOP\r\nHELP\r\nEHLO x\r\nVRFY alice\r\nEXPN staff\r\nETRN relayed.example\r\n"
                    "TURN\r\nATRN\r\nSAML FROM:<a@b>\r\nSEND FROM:<a@b>\r\nSOML FROM:<a@b>\r\n"
                    "BURL x\r\nONEX\r\nVERB\r\nSUBMITTER x\r\nSTARTTLS\r\nAUTH PLAIN\r\n"
                    "XYZZY\r\nnoop\r\nQUIT\r\n");
    ASSERT_CODES(out, "220 250 214 250 252 502 250 502 502 502 502 502 502 502 502 502 454 503 500 250 221");
    ck_assert(strstr(out, "252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery\r\n"));
    ck_assert(strstr(out, "502 5.5.1 EXPN not available\r\n"));
    ck_assert(strstr(out, "250 2.0.0 Queuing started\r\n"));
    ck_assert(strstr(out, "502 5.5.1 Command not implemented\r\n"));
    ck_assert(strstr(out, "500 5.5.2 Error: command not recognized\r\n"));
    ck_assert_int_eq(access(path_trig, F_OK), 0);   /* ETRN pulled the trigger */
    free(out);
}
END_TEST

START_TEST(test_dot_unstuff_and_bdat)
{
    char *out = RUN("EHLO x\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n"
                    "a\r\n..\r\n..b\r\n.\r\n"
                    "MAIL FROM:<s@x.example> BODY=8BITMIME\r\nRCPT TO:<alice@example.test>\r\n"
                    "BDAT 9\r\nline one\r"
                    "BDAT 12\r\n\n.line two\r\n"
                    "BDAT 0 LAST\r\nQUIT\r\n");
    ASSERT_CODES(out, "220 250 250 250 354 250 250 250 250 250 250 221");
    ck_assert(strstr(out, "250 2.0.0 Ok: 9 octets received\r\n"));
    size_t len;
    char *msg = file_text(path_msg, &len);
    /* BDAT: no unstuffing, CRLF split over chunks ("line one" is no
     * header field: a blank line goes before it) */
    ck_assert_str_eq(msg, "\nline one\n.line two\n");
    ck_assert(env_has("B8BITMIME"));
    free(msg);
    free(out);
}
END_TEST

START_TEST(test_bdat_bad_syntax_skips_chunk)
{
    /* "BDAT 18 LASTX": the count is known, so the 18 octets after the line
     * are the chunk and must not run as commands; a tab separates like a
     * space (as for every other command) */
    char *out = RUN("EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<alice@example.test>\r\n"
                    "BDAT 18 LASTX\r\nNOOP\r\nNOOP\r\nNOOP\r\n"
                    "BDAT 3\tLAST\r\nhi\nQUIT\r\n");
    ASSERT_CODES(out, "220 250 250 250 501 250 221");
    ck_assert(strstr(out, "501 5.5.4 Syntax: BDAT count [LAST]\r\n"));
    size_t len;
    char *msg = file_text(path_msg, &len);
    ck_assert(msg);
    ck_assert_str_eq(msg, "\nhi\n");        /* the blank line before a line that is no field */
    free(msg);
    free(out);
    /* the same inside a transaction: its chunk is skipped and the
     * transaction, now missing a chunk, ends (nothing is queued) */
    out = RUN("EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<alice@example.test>\r\n"
              "BDAT 4\r\nabcd"
              "BDAT 6 X\r\nNOOP\r\n"
              "BDAT 0 LAST\r\nQUIT\r\n");
    ASSERT_CODES(out, "220 250 250 250 250 501 503 221");
    ck_assert(strstr(out, "501 5.5.4 Syntax: BDAT count [LAST]\r\n503 5.5.1 Error: need MAIL command\r\n"));
    ck_assert(file_text(path_msg, &len) == NULL);
    free(out);
    /* a count that cannot be read: where its chunk ends is unknown, so
     * nothing after it may run as a command (the smuggled MAIL here); the
     * session ends after the 501 */
    static const char *const bad[] = { "BDAT x\r\n", "BDAT\r\n", "BDAT -1 LAST\r\n",
                                       "BDAT 99999999999999999999999 LAST\r\n", "BDAT 0x10\r\n" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char in[512];
        snprintf(in, sizeof in, "EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<alice@example.test>\r\n%s"
                 "MAIL FROM:<evil@b.example>\r\nRCPT TO:<alice@example.test>\r\nBDAT 3 LAST\r\nhi\nQUIT\r\n", bad[i]);
        out = run_session(in, (size_t)-1, 0);
        ASSERT_CODES(out, "220 250 250 250 501");
        ck_assert(file_text(path_msg, &len) == NULL);
        free(out);
    }
}
END_TEST

START_TEST(test_pipelining_order)
{
    char *out = RUN("EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<alice@example.test>\r\n"
                    "RCPT TO:<nobody@example.test>\r\nRCPT TO:<postmaster@example.test>\r\nDATA\r\n"
                    "x\r\n.\r\nRSET\r\nNOOP\r\nQUIT\r\n");
    ASSERT_CODES(out, "220 250 250 250 550 250 354 250 250 250 221");
    ck_assert(env_has("Talice@example.test\t\t"));
    ck_assert(env_has("Tpostmaster@example.test\t\t"));
    free(out);
}
END_TEST

START_TEST(test_inject_failures)
{
    inject_exit = 53;
    char *out = RUN("HELO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n");
    ck_assert(strstr(out, "452 4.3.1 Insufficient system storage\r\n"));
    free(out);
    inject_exit = 54;
    out = RUN("HELO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n");
    ck_assert(strstr(out, "451 4.3.0 "));
    ASSERT_CODES(out, "220 250 250 250 354 451 221");
    free(out);
}
END_TEST

/* ---- limits ---- */

static char *line_of(const char *verb, size_t total)   /* total octets incl. CRLF */
{
    char *s = malloc(total + 1);
    size_t v = strlen(verb);
    memcpy(s, verb, v);
    memset(s + v, 'a', total - 2 - v);
    memcpy(s + total - 2, "\r\n", 3);
    return s;
}

START_TEST(test_line_512_513)
{
    char *l512 = line_of("NOOP ", 512), *l513 = line_of("NOOP ", 513);
    struct buf sc = BUF_ZERO;
    buf_appends(&sc, l512);
    buf_appends(&sc, l513);
    buf_appends(&sc, "QUIT\r\n");
    char *out = run_session(sc.s, sc.len, 0);
    ASSERT_CODES(out, "220 250 500 221");
    ck_assert(strstr(out, "500 5.5.2 Error: line too long\r\n"));
    free(out);
    free(l512);
    free(l513);
    buf_free(&sc);
}
END_TEST

/* a session in a child process on a socketpair: its pid, and our end in
 * *peer (for tests that must watch it time out or go away) */
static pid_t fork_session(int *peer)
{
    int sp[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sp), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(sp[0]);
        struct sockaddr_in sin = { .sin_family = AF_INET };
        static struct smtp_session s;
        smtp_session_init(&s, &cf, &map, &fake, sp[1], (struct sockaddr *)&sin, 0, NULL);
        smtp_session_run(&s);
        smtp_session_free(&s);
        _exit(0);
    }
    close(sp[1]);
    *peer = sp[0];
    return pid;
}

START_TEST(test_bare_cr_lf_nul_in_commands)
{
    const char sc[] = "NOOP\nNOOP\rQUIT\r\nNO\0OP\r\nQUIT\r\n";
    char *out = run_session(sc, sizeof sc - 1, 0);
    /* bare LF ends a command; bare CR does not (and is refused); NUL refused */
    ASSERT_CODES(out, "220 250 500 500 221");
    ck_assert(strstr(out, "500 5.5.2 Error: bare <CR> received\r\n"));
    ck_assert(strstr(out, "500 5.5.2 Error: NUL character in command\r\n"));
    free(out);
}
END_TEST

/* a session on a socketpair fed head, then nfill copies of fill, then EOF
 * (the session may close before it has read them all) */
static char *run_flood(const char *head, char fill, size_t nfill)
{
    int peer;
    pid_t pid = fork_session(&peer);
    void (*old)(int) = signal(SIGPIPE, SIG_IGN);
    char chunk[4096];
    memset(chunk, fill, sizeof chunk);
    int ok = fd_write_all(peer, head, strlen(head), 5000);
    while (ok && nfill) {
        size_t k = nfill < sizeof chunk ? nfill : sizeof chunk;
        ok = fd_write_all(peer, chunk, k, 5000);
        nfill -= k;
    }
    shutdown(peer, SHUT_WR);
    struct buf out = BUF_ZERO;
    for (;;) {
        struct pollfd p = { .fd = peer, .events = POLLIN, .revents = 0 };
        ck_assert_int_gt(poll(&p, 1, 10000), 0);
        ssize_t r = read(peer, chunk, sizeof chunk);
        if (r <= 0) break;
        buf_append(&out, chunk, (size_t)r);
    }
    close(peer);
    signal(SIGPIPE, old);
    int st;
    waitpid(pid, &st, 0);
    buf_appends(&out, "");
    return out.s;
}

START_TEST(test_endless_bare_cr_line)
{
    /* a command line of bare CRs stores nothing, but is as endless as any
     * other: closed past SMTP_DISCARD_MAX octets, like a long line */
    char *out = run_flood("EHLO x\r\nNOOP", '\r', SMTP_DISCARD_MAX + 65536);
    ASSERT_CODES(out, "220 250 421");
    ck_assert(strstr(out, "421 4.7.0 mx.example.test Error: line too long\r\n"));
    free(out);
}
END_TEST

START_TEST(test_dribbled_bare_cr_line)
{
    /* a line must be whole within the timeout, bare CRs and all: one CR
     * every 300 ms does not hold the session past it */
    set("session_timeout", "1");
    int peer;
    pid_t pid = fork_session(&peer);
    void (*old)(int) = signal(SIGPIPE, SIG_IGN);
    int st = 0;
    pid_t w = 0;
    ck_assert(fd_write_all(peer, "NOOP", 4, 5000));
    for (int i = 0; i < 20 && w == 0; i++) {      /* up to 6 s */
        if (write(peer, "\r", 1) < 0) break;
        usleep(300000);
        w = waitpid(pid, &st, WNOHANG);
    }
    signal(SIGPIPE, old);
    if (w == 0) { kill(pid, SIGKILL); waitpid(pid, &st, 0); }
    char buf[4096];
    ssize_t r = read(peer, buf, sizeof buf - 1);
    buf[r > 0 ? r : 0] = 0;
    close(peer);
    ck_assert_msg(w == pid, "the session was still reading a dribbled line after 6 s");
    ck_assert(strstr(buf, "421 4.4.2 mx.example.test Error: timeout exceeded\r\n"));
}
END_TEST

START_TEST(test_smuggling_variants)
{
    static const char *const seps[] = {
        "\n.\n", "\r.\r", "\n.\r\n", "\r\n.\n", "\r\n.\r", "\r.\r\n", "\n..\r\n",
    };
    for (size_t i = 0; i < sizeof seps / sizeof seps[0]; i++) {
        struct buf sc = BUF_ZERO;
        buf_appends(&sc, "EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n"
                         "Subject: one\r\n\r\nbody");
        buf_appends(&sc, seps[i]);
        buf_appends(&sc, "MAIL FROM:<evil@b.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n"
                         "Subject: smuggled\r\n\r\nx\r\n.\r\nQUIT\r\n");
        char *out = run_session(sc.s, sc.len, 0);
        /* one message: the smuggled commands are data. With a bare CR in
         * it, it is refused as a whole; with only bare LFs (line ends, as
         * Postfix's "normalize" takes them) it is taken, holding the
         * smuggled text */
        if (strchr(seps[i], '\r') && strcmp(seps[i], "\n.\r\n") && strcmp(seps[i], "\r\n.\n") &&
            strcmp(seps[i], "\n..\r\n")) {
            ASSERT_CODES(out, "220 250 250 250 354 550 221");
            ck_assert(strstr(out, "550 5.5.2 Error: bare <CR> in message data"));
            ck_assert_int_ne(access(path_env, F_OK), 0);   /* nothing committed */
        } else {
            ASSERT_CODES(out, "220 250 250 250 354 250 221");
            size_t n;
            char *m = file_text(path_msg, &n);
            ck_assert_msg(strstr(m, "evil@b.example") && strstr(m, "Subject: smuggled"), "%s", seps[i]);
            free(m);
            unlink(path_env);
            unlink(path_msg);
        }
        free(out);
        buf_free(&sc);
    }
}

START_TEST(test_data_bare_lf)
{
    /* a bare LF in the data is a line end (stored as LF, dot-unstuffing
     * after it), and "." after or before one is data, not the end */
    struct buf sc = BUF_ZERO;
    buf_appends(&sc, "EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n"
                     "Subject: lf\r\n\r\nline1\nline2\r\n..dot\n..dot2\r\n.\nafter\r\n.\r\nQUIT\r\n");
    char *out = run_session(sc.s, sc.len, 0);
    ASSERT_CODES(out, "220 250 250 250 354 250 221");
    size_t n;
    char *m = file_text(path_msg, &n);
    ck_assert_msg(strstr(m, "Subject: lf\n\nline1\nline2\n.dot\n.dot2\n.\nafter\n") != NULL, "%s", m);
    free(m);
    free(out);
    buf_free(&sc);
    unlink(path_env);
    unlink(path_msg);
    /* a client that ends DATA itself with a bare LF (nc, a hand-typed
     * session: every line LF) ends its data with "." and LF */
    struct buf nc = BUF_ZERO;
    buf_appends(&nc, "EHLO x\nMAIL FROM:<a@b.example>\nRCPT TO:<alice@example.test>\nDATA\n"
                     "Subject: nc\n\nhello\n.\nQUIT\n");
    out = run_session(nc.s, nc.len, 0);
    ASSERT_CODES(out, "220 250 250 250 354 250 221");
    m = file_text(path_msg, &n);
    ck_assert_msg(strstr(m, "Subject: nc\n\nhello\n") != NULL, "%s", m);
    free(m);
    free(out);
    buf_free(&nc);
}
END_TEST
END_TEST

START_TEST(test_size_limits)
{
    set("max_message_size", "100");
    struct buf sc = BUF_ZERO;
    buf_appends(&sc, "EHLO x\r\nMAIL FROM:<a@b.example> SIZE=101\r\n"
                     "MAIL FROM:<a@b.example> SIZE=99999999999999999999999\r\n"
                     "MAIL FROM:<a@b.example> SIZE=100\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n");
    for (int i = 0; i < 20; i++) buf_appends(&sc, "0123456789\r\n");
    buf_appends(&sc, ".\r\nNOOP\r\nQUIT\r\n");
    char *out = run_session(sc.s, sc.len, 0);
    ASSERT_CODES(out, "220 250 552 552 250 250 354 552 250 221");   /* past 64 bits: too big too */
    ck_assert(strstr(out, "552 5.3.4 Message size exceeds fixed limit\r\n"));
    ck_assert(strstr(out, "250-SIZE 100\r\n"));
    free(out);
    buf_free(&sc);
}
END_TEST

START_TEST(test_hop_limit)
{
    set("max_received", "2");
    char *out = RUN("HELO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n"
                    "Received: from a\r\nReceived: from b\r\nreceived: from c\r\n\r\nloop\r\n.\r\n"
                    "MAIL FROM:<a@b.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n"
                    "Received: from a\r\nReceived: from b\r\n\r\nReceived: in the body is fine\r\n.\r\nQUIT\r\n");
    ASSERT_CODES(out, "220 250 250 250 354 554 250 250 354 250 221");
    ck_assert(strstr(out, "554 5.4.6 Too many hops\r\n"));
    free(out);
}
END_TEST

START_TEST(test_too_many_recipients)
{
    struct buf sc = BUF_ZERO;
    buf_appends(&sc, "EHLO x\r\nMAIL FROM:<a@b.example>\r\n");
    for (int i = 0; i < 101; i++) buf_appendf(&sc, "RCPT TO:<user%d@remote.example>\r\n", i);
    buf_appends(&sc, "QUIT\r\n");
    set("max_errors", "5");
    char *out = run_session(sc.s, sc.len, 0);
    struct buf want = BUF_ZERO;
    buf_appends(&want, "220 250 250");
    for (int i = 0; i < 100; i++) buf_appends(&want, " 250");
    buf_appends(&want, " 452 221");
    ASSERT_CODES(out, want.s);
    buf_free(&want);
    ck_assert(strstr(out, "452 4.5.3 Too many recipients\r\n"));
    free(out);
    buf_free(&sc);
}
END_TEST

START_TEST(test_recipients_past_limit_are_no_errors)
{
    /* a client that sends its whole list (smtplib does) gets 452 for each
     * recipient past max_recipients and sends those later (RFC 5321
     * 4.5.3.1.10): the 452s must not reach max_errors (20) and end the
     * session, losing the transaction */
    struct buf sc = BUF_ZERO;
    buf_appends(&sc, "EHLO x\r\nMAIL FROM:<a@b.example>\r\n");
    for (int i = 0; i < 125; i++) buf_appendf(&sc, "RCPT TO:<user%d@remote.example>\r\n", i);
    buf_appends(&sc, "DATA\r\nSubject: list\r\n\r\nx\r\n.\r\nQUIT\r\n");
    char *out = run_session(sc.s, sc.len, 0);
    struct buf want = BUF_ZERO;
    buf_appends(&want, "220 250 250");
    for (int i = 0; i < 100; i++) buf_appends(&want, " 250");
    for (int i = 0; i < 25; i++) buf_appends(&want, " 452");
    buf_appends(&want, " 354 250 221");
    ASSERT_CODES(out, want.s);
    buf_free(&want);
    free(out);
    buf_free(&sc);
    /* a flood is still bounded: past max_recipients (here 2) the first
     * SMTP_RCPT_OVERSHOOT_MIN 452s do not count, each further one does,
     * and max_errors (here 3) ends the session */
    set("max_recipients", "2");
    set("max_errors", "3");
    sc = (struct buf)BUF_ZERO;
    buf_appends(&sc, "EHLO x\r\nMAIL FROM:<a@b.example>\r\n");
    for (int i = 0; i < 2 + SMTP_RCPT_OVERSHOOT_MIN + 5; i++)
        buf_appendf(&sc, "RCPT TO:<user%d@remote.example>\r\n", i);
    buf_appends(&sc, "QUIT\r\n");
    out = run_session(sc.s, sc.len, 0);
    struct buf flood = BUF_ZERO;
    buf_appends(&flood, "220 250 250 250 250");
    for (int i = 0; i < SMTP_RCPT_OVERSHOOT_MIN + 3; i++) buf_appends(&flood, " 452");
    buf_appends(&flood, " 421");
    ASSERT_CODES(out, flood.s);
    free(out);
    buf_free(&flood);
    buf_free(&sc);
}
END_TEST

START_TEST(test_error_limit)
{
    set("max_errors", "3");
    char *out = RUN("FOO\r\nBAR\r\nBAZ\r\nNOOP\r\n");
    ASSERT_CODES(out, "220 500 500 500 421");
    ck_assert(strstr(out, "421 4.7.0 mx.example.test Error: too many errors\r\n"));
    free(out);
    /* a message queued starts the count again (a relay's long connection
     * with an unknown recipient now and then is not cut off) */
    static const char sc[] = "FOO\r\nBAR\r\nEHLO x\r\nMAIL FROM:<a@b.example>\r\n"
                             "RCPT TO:<user1@remote.example>\r\nDATA\r\nSubject: s\r\n\r\nx\r\n.\r\n"
                             "FOO\r\nBAR\r\nBAZ\r\nNOOP\r\n";
    out = run_session(sc, sizeof sc - 1, 0);
    ASSERT_CODES(out, "220 500 500 250 250 250 354 250 500 500 500 421");
    free(out);
}
END_TEST

START_TEST(test_timeout)
{
    set("session_timeout", "1");
    const char sc[] = "HELO x\r\n";
    char *out = run_session(sc, sizeof sc - 1, 1);
    ASSERT_CODES(out, "220 250 421");
    ck_assert(strstr(out, "421 4.4.2 mx.example.test Error: timeout exceeded\r\n"));
    free(out);
}
END_TEST

START_TEST(test_client_never_reads)
{
    /* a client that pipelines without end and never reads its replies:
     * the session's writes time out too, and it goes away */
    set("session_timeout", "1");
    int peer;
    pid_t pid = fork_session(&peer);
    fcntl(peer, F_SETFL, O_NONBLOCK);
    static const char help[] = "HELP\r\n";
    for (int i = 0; i < 200000; i++)
        if (write(peer, help, sizeof help - 1) < 0) break;
    int st = 0;
    pid_t w = 0;
    for (int i = 0; i < 60 && w == 0; i++) {      /* up to 6 s, never reading */
        usleep(100000);
        w = waitpid(pid, &st, WNOHANG);
    }
    if (w == 0) { kill(pid, SIGKILL); waitpid(pid, &st, 0); }
    ck_assert_msg(w == pid, "the session still blocks on a client that never reads");
    close(peer);
}
END_TEST

START_TEST(test_http_and_tls_hello)
{
    char *out = RUN("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    ASSERT_CODES(out, "220 554");
    ck_assert(strstr(out, "554 5.7.0 "));
    free(out);
    out = RUN("POST /x HTTP/1.0\r\nNOOP\r\n");
    ASSERT_CODES(out, "220 554");
    free(out);
    const char hello[] = "\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\nNOOP\r\n";
    out = run_session(hello, sizeof hello - 1, 0);
    ASSERT_CODES(out, "220 554");
    ck_assert(strstr(out, "554 5.7.0 Error: TLS handshake on a plaintext port\r\n"));
    free(out);
}
END_TEST

START_TEST(test_starttls)
{
    /* port 25: offered, pipelined bytes after STARTTLS are dropped, state reset */
    tls_fail = 0;
    char *out = run_session_ex(&fake_tls, SMTP_PORT_SMTP,
                               "EHLO x\r\nMAIL FROM:<b@client.test>\r\nSTARTTLS x\r\nRSET\r\nSTARTTLS\r\nNOOP\r\n", (size_t)-1,
                               "MAIL FROM:<b@client.test>\r\nEHLO y\r\nSTARTTLS\r\nAUTH PLAIN\r\n"
                               "MAIL FROM:<b@client.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n", 0);
    ASSERT_CODES(out, "220 250 250 503 250 220 503 250 554 503 250 250 354 250 221");
    ck_assert(strstr(out, "250-STARTTLS\r\n"));
    ck_assert(strstr(out, "503 5.5.1 Error: MAIL transaction in progress\r\n"));
    ck_assert(strstr(out, "220 2.0.0 Ready to start TLS\r\n503 5.5.1 Error: send HELO/EHLO first\r\n"));
    ck_assert(strstr(out, "554 5.5.1 Error: TLS already active\r\n"));
    ck_assert(strstr(out, "503 5.5.1 Error: authentication not enabled\r\n"));   /* never on 25 */
    const char *second = strstr(out, "220 2.0.0 Ready");
    ck_assert(!strstr(second, "250-STARTTLS"));          /* not offered again */
    ck_assert(!strstr(out, "AUTH PLAIN LOGIN"));
    size_t len;
    char *msg = file_text(path_msg, &len);
    ck_assert(msg);
    free(msg);
    ck_assert(env_has("Fb@client.test"));
    char *env = file_text(path_env, &len);
    ck_assert(memmem(env, len, "(using TLSv1.3 with cipher TLS_FAKE_SHA256)", 43));
    ck_assert(memmem(env, len, "with ESMTPS id", 14));
    free(env);
    free(out);
    /* the argument error */
    out = run_session_ex(&fake_tls, SMTP_PORT_SMTP, "EHLO x\r\nSTARTTLS now\r\nQUIT\r\n", (size_t)-1, NULL, 0);
    ASSERT_CODES(out, "220 250 501 221");
    ck_assert(strstr(out, "501 5.5.4 Syntax error (no parameters allowed)\r\n"));
    free(out);
    /* a failed handshake ends the session without another word */
    tls_fail = 1;
    out = run_session_ex(&fake_tls, SMTP_PORT_SMTP, "EHLO x\r\nSTARTTLS\r\n", (size_t)-1, "NOOP\r\n", 0);
    ASSERT_CODES(out, "220 250 220");
    free(out);
    /* implicit TLS (465): the "TLS" line comes before the greeting */
    tls_fail = 0;
    int sp[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sp), 0);
    static const char implicit[] = "TLS TLSv1.3 X -\nEHLO x\r\nQUIT\r\n";
    ck_assert_int_eq(write(sp[0], implicit, sizeof implicit - 1), (ssize_t)sizeof implicit - 1);
    shutdown(sp[0], SHUT_WR);
    pid_t pid = fork();
    if (pid == 0) {
        struct sockaddr_in sin;
        memset(&sin, 0, sizeof sin);
        sin.sin_family = AF_INET;
        static struct smtp_session ss;
        smtp_session_init(&ss, &cf, &map, &fake_tls, sp[1], (struct sockaddr *)&sin, SMTP_PORT_SMTPS, NULL);
        _exit(smtp_session_run(&ss) ? 0 : 1);
    }
    close(sp[1]);
    struct buf b = BUF_ZERO;
    slurp_fd(sp[0], &b);
    buf_appends(&b, "");
    close(sp[0]);
    int st;
    waitpid(pid, &st, 0);
    ASSERT_CODES(b.s, "220 250 221");
    ck_assert(strstr(b.s, "250-AUTH PLAIN LOGIN\r\n"));
    ck_assert(!strstr(b.s, "STARTTLS"));
    buf_free(&b);
}
END_TEST

START_TEST(test_submission_auth)
{
    tls_fail = 0;
    /* base64: "\0alice\0secret" AGFsaWNlAHNlY3JldA==, "bob\0alice\0secret"
     * Ym9iAGFsaWNlAHNlY3JldA==, alice YWxpY2U=, secret c2VjcmV0 */
    char *out = run_session_ex(&fake_tls, SMTP_PORT_SUBMISSION,
                               "EHLO x\r\nMAIL FROM:<alice@example.test>\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n"
                               "STARTTLS\r\n", (size_t)-1,
                               "EHLO x\r\nMAIL FROM:<alice@example.test>\r\n"
                               "AUTH PLAIN !!!!\r\n"
                               "AUTH PLAIN Ym9iAGFsaWNlAHNlY3JldA==\r\n"
                               "AUTH PLAIN AGFsaWNlAHdyb25n\r\n"
                               "AUTH LOGIN\r\n*\r\n"
                               "AUTH CRAM-MD5\r\n"
                               "AUTH PLAIN\r\nAGFsaWNlAHNlY3JldA==\r\n"
                               "AUTH LOGIN YWxpY2U=\r\n"
                               "MAIL FROM:<bob@example.test>\r\n"
                               "MAIL FROM:<alice@elsewhere.test>\r\n"
                               "MAIL FROM:<Alice+box@example.test>\r\n"
                               "AUTH LOGIN\r\n"
                               "RCPT TO:<someone@remote.test>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n", 0);
    ASSERT_CODES(out, "220 250 530 530 220 250 530 501 535 535 334 501 504 334 235 503 553 553 250 503 250 354 250 221");
    ck_assert(strstr(out, "530 5.7.0 Must issue a STARTTLS command first\r\n"));
    ck_assert(strstr(out, "530 5.7.0 Authentication required\r\n"));
    ck_assert(strstr(out, "535 5.7.8 Error: authentication failed\r\n"));
    ck_assert(strstr(out, "501 5.0.0 Error: authentication aborted\r\n"));
    ck_assert(strstr(out, "235 2.7.0 Authentication successful\r\n"));
    ck_assert(strstr(out, "553 5.7.1 <bob@example.test>: Sender address rejected: not owned by user alice\r\n"));
    ck_assert(strstr(out, "250-AUTH PLAIN LOGIN\r\n"));
    const char *first_ehlo_end = strstr(out, "530");
    ck_assert(!memmem(out, (size_t)(first_ehlo_end - out), "AUTH", 4));   /* not offered before TLS */
    size_t len;
    char *env = file_text(path_env, &len);
    ck_assert(env);
    ck_assert(memmem(env, len, "with ESMTPSA id", 15));
    ck_assert(memmem(env, len, "Tsomeone@remote.test", 20));       /* relayed */
    free(env);
    free(out);
    /* LOGIN in steps, a temporary failure, and a bad password */
    out = run_session_ex(&fake_tls, SMTP_PORT_SUBMISSION, "EHLO x\r\nSTARTTLS\r\n", (size_t)-1,
                         "EHLO x\r\nAUTH LOGIN\r\ndGVtcA==\r\nc2VjcmV0\r\n"
                         "AUTH LOGIN\r\nYWxpY2U=\r\nd3Jvbmc=\r\n"
                         "AUTH LOGIN\r\nYWxpY2U=\r\nc2VjcmV0\r\nQUIT\r\n", 0);
    ASSERT_CODES(out, "220 250 220 250 334 334 454 334 334 535 334 334 235 221");
    ck_assert(strstr(out, "334 VXNlcm5hbWU6\r\n"));
    ck_assert(strstr(out, "334 UGFzc3dvcmQ6\r\n"));
    free(out);
}
END_TEST

START_TEST(test_received_field)
{
    char dst[1024];
    ck_assert(smtp_received(dst, sizeof dst, "h.example", "192.0.2.1", "mx.example.test", "ESMTP",
                            "abc.1", "u@example.test", NULL, 0));
    ck_assert_str_eq(dst, "Received: from h.example ([192.0.2.1])\n\tby mx.example.test (postern) with ESMTP id abc.1\n"
                          "\tfor <u@example.test>; Thu, 01 Jan 1970 00:00:00 +0000");
    /* an IPv6 client is an IPv6 address literal (RFC 5321 4.1.3) */
    ck_assert(smtp_received(dst, sizeof dst, "h.example", "2001:db8::1", "m", "ESMTP", "i", NULL, NULL, 0));
    ck_assert_str_eq(dst, "Received: from h.example ([IPv6:2001:db8::1])\n\tby m (postern) with ESMTP id i;\n"
                          "\tThu, 01 Jan 1970 00:00:00 +0000");
    ck_assert(!smtp_received(dst, 40, "h", "c", "m", "SMTP", "i", NULL, NULL, 0));
    ck_assert(smtp_received(dst, sizeof dst, "h", "c", "m", "SMTP", "i", NULL, NULL, 1795683885));
    ck_assert(strstr(dst, ";\n\tThu, 26 Nov 2026 09:04:45 +0000"));
    ck_assert(smtp_received(dst, sizeof dst, "h", "192.0.2.1", "m", "ESMTPSA", "i", NULL,
                            "TLSv1.3 with cipher TLS_AES_128_GCM_SHA256", 0));
    ck_assert_str_eq(dst, "Received: from h ([192.0.2.1])\n\t(using TLSv1.3 with cipher TLS_AES_128_GCM_SHA256)\n"
                          "\tby m (postern) with ESMTPSA id i;\n\tThu, 01 Jan 1970 00:00:00 +0000");
    ck_assert_str_eq(smtp_with_proto(1, 0, 0, 0), "ESMTP");
    ck_assert_str_eq(smtp_with_proto(1, 0, 1, 0), "ESMTPS");
    ck_assert_str_eq(smtp_with_proto(1, 0, 0, 1), "ESMTPA");
    ck_assert_str_eq(smtp_with_proto(1, 0, 1, 1), "ESMTPSA");
    ck_assert_str_eq(smtp_with_proto(1, 1, 1, 1), "UTF8SMTPSA");
    ck_assert_str_eq(smtp_with_proto(0, 0, 1, 0), "SMTP");
    char v[16], c[64];
    ck_assert(smtp_tls_line("TLS TLSv1.2 ECDHE-RSA-AES128-GCM-SHA256 mail.example", 50, v, sizeof v, c, sizeof c));
    ck_assert_str_eq(v, "TLSv1.2");
    ck_assert_str_eq(c, "ECDHE-RSA-AES128-GCM-SHA256");
    ck_assert(!smtp_tls_line("TLS", 3, v, sizeof v, c, sizeof c));
    ck_assert(!smtp_tls_line("SSL x y -", 9, v, sizeof v, c, sizeof c));
    ck_assert(!smtp_tls_line("TLS a\x01 y -", 11, v, sizeof v, c, sizeof c));
    ck_assert(!smtp_tls_line("TLS TLSv1.2345678901234567 y -", 30, v, sizeof v, c, sizeof c));
    ck_assert_str_eq(smtp_inject_reply(53), "452 4.3.1 Insufficient system storage");
    ck_assert(!strncmp(smtp_inject_reply(-1), "451 4.3.0", 9));
}
END_TEST

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    Suite *s = suite_create("smtp_session");
    TCase *core = tcase_create("core");
    tcase_add_checked_fixture(core, setup, teardown);
    tcase_set_timeout(core, 30);
    tcase_add_test(core, test_seed_000_helo_session);
    tcase_add_test(core, test_seed_001_bracketless);
    tcase_add_test(core, test_seed_004_ehlo_notify);
    tcase_add_test(core, test_recipient_policy);
    tcase_add_test(core, test_own_address_literal);
    tcase_add_test(core, test_local_recipient_case_folded);
    tcase_add_test(core, test_rcpt_alias_name_with_plus);
    tcase_add_test(core, test_sequence_errors);
    tcase_add_test(core, test_other_commands);
    tcase_add_test(core, test_dot_unstuff_and_bdat);
    tcase_add_test(core, test_bdat_bad_syntax_skips_chunk);
    tcase_add_test(core, test_pipelining_order);
    tcase_add_test(core, test_inject_failures);
    tcase_add_test(core, test_received_field);
    tcase_add_test(core, test_starttls);
    tcase_add_test(core, test_submission_auth);
    suite_add_tcase(s, core);
    TCase *limits = tcase_create("limits");
    tcase_add_checked_fixture(limits, setup, teardown);
    tcase_set_timeout(limits, 30);
    tcase_add_test(limits, test_line_512_513);
    tcase_add_test(limits, test_bare_cr_lf_nul_in_commands);
    tcase_add_test(limits, test_data_bare_lf);
    tcase_add_test(limits, test_etrn_rset_utf8_and_long_lines);
    tcase_add_test(limits, test_endless_bare_cr_line);
    tcase_add_test(limits, test_dribbled_bare_cr_line);
    tcase_add_test(limits, test_smuggling_variants);
    tcase_add_test(limits, test_size_limits);
    tcase_add_test(limits, test_hop_limit);
    tcase_add_test(limits, test_too_many_recipients);
    tcase_add_test(limits, test_recipients_past_limit_are_no_errors);
    tcase_add_test(limits, test_error_limit);
    tcase_add_test(limits, test_timeout);
    tcase_add_test(limits, test_http_and_tls_hello);
    tcase_add_test(limits, test_client_never_reads);
    suite_add_tcase(s, limits);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
