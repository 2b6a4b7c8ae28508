/* fuzz_smtp_client.c - libFuzzer target: remote-deliverer's side of SMTP.
 * The input (after one flag byte) is what a hostile server sends: it is
 * split into lines for smtp_reply_feed / smtp_ext_parse / summary / status,
 * then played from a socketpair to a whole smtp_transaction (greeting, EHLO,
 * STARTTLS through a stub hook, AUTH, MAIL, RCPT, DATA, QUIT) sending a
 * small message from an anonymous memory file. Checks: bounds of every
 * reply, status texts NUL-terminated and starting with an RFC 3463 class
 * that matches the outcome. With the flag byte's top bit: the same with
 * three recipients (smtp_transaction_multi), each result checked. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "smtp_client.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct smtp_reply r;
static struct smtp_conn c;

/* The scripted server's replies come a line per read, as from a server
 * that answers each command when it comes: the whole script in one read
 * would be a server speaking out of turn, which smtp_client refuses before
 * its first command. (The script is written and shut down before the
 * transaction starts, so a read never waits.) */
static ssize_t line_read(void *ctx, void *p, size_t n, int timeout_ms)
{
    int fd = *(int *)ctx;
    (void)timeout_ms;
    ssize_t k = recv(fd, p, n, MSG_PEEK | MSG_DONTWAIT);
    if (k <= 0) return k;
    const char *nl = memchr(p, '\n', (size_t)k);
    return recv(fd, p, nl ? (size_t)(nl - (const char *)p) + 1 : (size_t)k, MSG_DONTWAIT);
}

static int tls_stub(void *ctx, struct smtp_conn *cn, char *why, size_t whylen)
{
    (void)cn;
    int ok = *(int *)ctx;
    if (!ok) { strncpy(why, "handshake failed (stub)", whylen - 1); why[whylen - 1] = 0; }
    return ok;   /* "TLS" that keeps the plain transport */
}

static void check_reply(const struct smtp_reply *rp)
{
    if (rp->code < 200 || rp->code > 559 || rp->nlines == 0 || rp->nlines > SMTP_REPLY_LINES_MAX
        || rp->len > SMTP_REPLY_TOTAL_MAX || rp->text[rp->len] != 0)
        __builtin_trap();
    char sum[SMTP_SUMMARY_MAX], small[6], st[16];
    smtp_reply_summary(rp, sum, sizeof sum);
    if (!memchr(sum, 0, sizeof sum)) __builtin_trap();
    for (const char *q = sum; *q; q++) if (*q < 0x20 || *q > 0x7e) __builtin_trap();
    smtp_reply_summary(rp, small, sizeof small);
    if (!memchr(small, 0, sizeof small)) __builtin_trap();
    smtp_reply_status(rp, st, sizeof st);
    if (!memchr(st, 0, sizeof st) || st[0] != '0' + rp->code / 100 || st[1] != '.') __builtin_trap();
    if (rp->code == 250) {
        struct smtp_ext e;
        smtp_ext_parse(&e, rp);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int init;
    if (!init) { signal(SIGPIPE, SIG_IGN); init = 1; }
    if (size < 1 || size > 16384) return 0;
    unsigned flags = data[0];
    const char *s = (const char *)data + 1;
    size_t n = size - 1;

    /* 1. the reply assembler on LF-split lines (CR before LF dropped) */
    smtp_reply_init(&r);
    for (size_t st = 0; st < n;) {
        const char *nl = memchr(s + st, '\n', n - st);
        size_t l = nl ? (size_t)(nl - (s + st)) : n - st;
        size_t ll = l && s[st + l - 1] == '\r' ? l - 1 : l;
        int k = smtp_reply_feed(&r, s + st, ll > 998 ? 998 : ll);
        if (k < 0) smtp_reply_init(&r);
        else if (k > 0) { check_reply(&r); smtp_reply_init(&r); }
        st += l + 1;
    }

    /* 2. a whole transaction against the scripted server */
    int sp[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) < 0) abort();
    int big = 1 << 20;
    setsockopt(sp[0], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    setsockopt(sp[1], SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    setsockopt(sp[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    setsockopt(sp[0], SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    if (n && write(sp[0], s, n) != (ssize_t)n) abort();
    shutdown(sp[0], SHUT_WR);
    int m = memfd_create("msg", 0);
    static const char msg[] = "Subject: hi\n\n.leading dot\nbody\r\nlast";
    if (m < 0 || write(m, msg, sizeof msg - 1) != (ssize_t)(sizeof msg - 1)) abort();
    struct smtp_job j;
    memset(&j, 0, sizeof j);
    j.helo = "mx.example.test";
    j.sender = flags & 1 ? "" : "alice@example.test";
    j.rcpt = "bob@example.net";
    j.orcpt = flags & 2 ? "rfc822;bob@example.net" : "";
    j.notify = flags & 2 ? "SUCCESS,FAILURE" : "";
    j.envid = flags & 2 ? "QQ+2Bxyz" : "";
    j.body8bit = (flags >> 2) & 1;
    j.msgfd = m;
    j.size = sizeof msg - 1;
    j.tls = ((flags >> 3) & 3) == 2 ? SMTP_TLS_REQUIRE : ((flags >> 3) & 3) == 1 ? SMTP_TLS_MAY : SMTP_TLS_NONE;
    if (flags & 0x20) { j.auth_user = "user"; j.auth_pass = "pass word"; }
    int tls_ok = (flags >> 6) & 1;
    char status[512];
    smtp_conn_init(&c, sp[1], 1000);
    c.tr.read = line_read;
    enum smtp_outcome o;
    if (flags & 0x80) {   /* three recipients in one transaction */
        static char rst[3][512];
        struct smtp_rcpt rc[3] = {
            { .addr = "bob@example.net", .orcpt = j.orcpt, .notify = j.notify, .status = rst[0], .cap = sizeof rst[0] },
            { .addr = "carol@example.net", .orcpt = "", .notify = "NEVER", .status = rst[1], .cap = sizeof rst[1] },
            { .addr = "dave@example.net", .orcpt = "", .notify = "", .status = rst[2], .cap = sizeof rst[2] },
        };
        o = smtp_transaction_multi(&c, &j, rc, 3, tls_stub, &tls_ok, "mx.example.net[192.0.2.1]", status, sizeof status);
        if (o == SMTP_DELIVERED) {
            for (int i = 0; i < 3; i++) {
                char k = rst[i][0];
                if (!memchr(rst[i], 0, sizeof rst[i]) ||
                    (rc[i].outcome == SMTP_DELIVERED && k != '2') || (rc[i].outcome == SMTP_PERMFAIL && k != '5') ||
                    (rc[i].outcome == SMTP_TEMPFAIL && k != '4' && k != '5') ||
                    (rc[i].outcome != SMTP_DELIVERED && rc[i].outcome != SMTP_PERMFAIL && rc[i].outcome != SMTP_TEMPFAIL))
                    __builtin_trap();
                if (rc[i].outcome == SMTP_DELIVERED && j.tls == SMTP_TLS_REQUIRE && !tls_ok) __builtin_trap();
            }
            snprintf(status, sizeof status, "2.0.0 (per recipient)");
        }
    } else {
        o = smtp_transaction(&c, &j, tls_stub, &tls_ok, "mx.example.net[192.0.2.1]", status, sizeof status);
    }
    if (!memchr(status, 0, sizeof status) || !status[0]) __builtin_trap();
    char cls = status[0];
    if ((o == SMTP_DELIVERED && cls != '2') || ((o == SMTP_PERMFAIL || o == SMTP_LOOP) && cls != '5')
        || ((o == SMTP_TEMPFAIL || o == SMTP_NEXT_HOST || o == SMTP_RETRY_PLAIN) && cls != '4' && cls != '5'))
        __builtin_trap();
    if (o == SMTP_DELIVERED && j.tls == SMTP_TLS_REQUIRE && !tls_ok) __builtin_trap();   /* require-TLS without TLS */
    close(sp[0]);
    close(sp[1]);
    close(m);
    return 0;
}
