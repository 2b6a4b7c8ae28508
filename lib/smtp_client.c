/* smtp_client.c - SMTP client: bounded replies, EHLO keywords, one
 * transaction streamed from the queue file. See smtp_client.h. */
#include "smtp_client.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "io.h"
#include "utf8.h"

/* ---------------------------------------------------------------- replies */

void smtp_reply_init(struct smtp_reply *r)
{
    r->code = 0;
    r->nlines = 0;
    r->len = 0;
    r->text[0] = 0;
}

static int bad(void) { errno = EPROTO; return -1; }

int smtp_reply_feed(struct smtp_reply *r, const char *line, size_t len)
{
    if (len < 3) return bad();
    if (line[0] < '2' || line[0] > '5' || line[1] < '0' || line[1] > '5' ||
        line[2] < '0' || line[2] > '9')
        return bad();
    int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
    char sep = len > 3 ? line[3] : ' ';
    if (sep != ' ' && sep != '-') return bad();
    if (r->nlines && code != r->code) return bad();
    if (r->nlines >= SMTP_REPLY_LINES_MAX) return bad();
    size_t tl = len > 4 ? len - 4 : 0;
    size_t need = tl + (r->nlines ? 1 : 0);
    if (need > SMTP_REPLY_TOTAL_MAX - r->len) return bad();
    if (r->nlines) r->text[r->len++] = '\n';
    if (tl) memcpy(r->text + r->len, line + 4, tl);
    r->len += tl;
    r->text[r->len] = 0;
    r->code = code;
    r->nlines++;
    return sep == ' ' ? 1 : 0;
}

char *smtp_reply_summary(const struct smtp_reply *r, char *dst, size_t cap)
{
    size_t o = 0;
    int n = snprintf(dst, cap, "%03d", r->code);
    if (n < 0 || (size_t)n >= cap) { dst[0] = 0; return dst; }
    o = (size_t)n;
    if (r->len && o + 1 < cap) dst[o++] = ' ';
    size_t i;
    for (i = 0; i < r->len && o + 1 < cap; i++) {
        unsigned char ch = (unsigned char)r->text[i];
        if (ch == '\n') ch = ' ';
        else if (ch < 0x20 || ch > 0x7e) ch = '?';
        dst[o++] = (char)ch;
    }
    if (i < r->len && o >= 3) memcpy(dst + o - 3, "...", 3);   /* cut: say so */
    dst[o] = 0;
    return dst;
}

/* a well-formed enhanced status code "c.sss.ddd" at the start of s */
static size_t enhanced_len(const char *s, size_t len, char cls)
{
    size_t i = 0, k;
    if (len < 5 || s[0] != cls || s[1] != '.') return 0;
    i = 2;
    for (k = 0; i < len && k < 3 && s[i] >= '0' && s[i] <= '9'; i++, k++) ;
    if (!k || k > 3 || i >= len || s[i] != '.') return 0;
    i++;
    for (k = 0; i < len && k < 3 && s[i] >= '0' && s[i] <= '9'; i++, k++) ;
    if (!k) return 0;
    if (i < len && s[i] != ' ' && s[i] != '\n') return 0;
    return i;
}

void smtp_reply_status(const struct smtp_reply *r, char *dst, size_t cap)
{
    char cls = (char)('0' + r->code / 100);
    size_t n = enhanced_len(r->text, r->len, cls);
    if (n && n < cap) {
        memcpy(dst, r->text, n);
        dst[n] = 0;
        return;
    }
    snprintf(dst, cap, "%c.0.0", cls);
}

/* ------------------------------------------------------------- transport */

static int wait_fd(int fd, short ev, int timeout_ms)
{
    struct pollfd p = { .fd = fd, .events = ev, .revents = 0 };
    for (;;) {
        int r = poll(&p, 1, timeout_ms);
        if (r > 0) return 1;
        if (r == 0) { errno = ETIMEDOUT; return 0; }
        if (errno != EINTR) return 0;
    }
}

ssize_t smtp_plain_read(void *ctx, void *p, size_t n, int timeout_ms)
{
    int fd = *(int *)ctx;
    for (;;) {
        ssize_t r = read(fd, p, n);
        if (r >= 0) return r;
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) return -1;
        if (!wait_fd(fd, POLLIN, timeout_ms)) return -1;
    }
}

ssize_t smtp_plain_write(void *ctx, const void *p, size_t n, int timeout_ms)
{
    int fd = *(int *)ctx;
    for (;;) {
        ssize_t r = send(fd, p, n, MSG_NOSIGNAL);
        if (r >= 0) return r;
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) return -1;
        if (!wait_fd(fd, POLLOUT, timeout_ms)) return -1;
    }
}

void smtp_conn_init(struct smtp_conn *c, int fd, int timeout_ms)
{
    memset(c, 0, sizeof *c);
    c->fd = fd;
    c->timeout_ms = timeout_ms;
    (void)fd_nonblock(fd);
    c->tr.ctx = &c->fd;
    c->tr.read = smtp_plain_read;
    c->tr.write = smtp_plain_write;
}

size_t smtp_buffered(const struct smtp_conn *c) { return c->inlen - c->inpos; }

static int remaining(long long deadline)
{
    long long left = deadline - io_now_ms();
    if (left <= 0) { errno = ETIMEDOUT; return -1; }
    return left > 0x7fffffff ? 0x7fffffff : (int)left;
}

static int fill(struct smtp_conn *c, long long deadline)
{
    int t = remaining(deadline);
    if (t < 0) return 0;
    c->inpos = c->inlen = 0;
    ssize_t r = c->tr.read(c->tr.ctx, c->in, sizeof c->in, t);
    if (r < 0) return 0;
    if (r == 0) { errno = EPIPE; return 0; }
    c->inlen = (size_t)r;
    return 1;
}

/* one CRLF-ended line, at most SMTP_REPLY_LINE_MAX octets with the CRLF */
static int get_line(struct smtp_conn *c, char *line, size_t *len, long long deadline)
{
    size_t n = 0;
    int cr = 0;
    for (;;) {
        if (c->inpos == c->inlen && !fill(c, deadline)) return 0;
        unsigned char ch = c->in[c->inpos++];
        if (cr) {
            if (ch != '\n') { errno = EPROTO; return 0; }  /* bare CR */
            *len = n;
            return 1;
        }
        if (ch == '\r') { cr = 1; continue; }
        if (ch == '\n') { errno = EPROTO; return 0; }       /* bare LF */
        if (n + 2 >= SMTP_REPLY_LINE_MAX) { errno = EPROTO; return 0; }
        line[n++] = (char)ch;
    }
}

int smtp_read_reply(struct smtp_conn *c, struct smtp_reply *r, int timeout_ms)
{
    char line[SMTP_REPLY_LINE_MAX];
    size_t len;
    long long deadline = io_now_ms() + (timeout_ms < 0 ? 0 : timeout_ms);
    smtp_reply_init(r);
    for (;;) {
        if (!get_line(c, line, &len, deadline)) return 0;
        int k = smtp_reply_feed(r, line, len);
        if (k < 0) return 0;
        if (k > 0) return 1;
    }
}

int smtp_flush(struct smtp_conn *c)
{
    long long deadline = io_now_ms() + c->timeout_ms;
    size_t off = 0;
    while (off < c->outlen) {
        int t = remaining(deadline);
        if (t < 0) return 0;
        ssize_t w = c->tr.write(c->tr.ctx, c->out + off, c->outlen - off, t);
        if (w <= 0) { if (w == 0) errno = EPIPE; return 0; }
        off += (size_t)w;
    }
    c->outlen = 0;
    return 1;
}

int smtp_put(struct smtp_conn *c, const void *p, size_t n)
{
    const unsigned char *s = p;
    while (n) {
        if (c->outlen == sizeof c->out && !smtp_flush(c)) return 0;
        size_t k = sizeof c->out - c->outlen;
        if (k > n) k = n;
        memcpy(c->out + c->outlen, s, k);
        c->outlen += k;
        s += k;
        n -= k;
    }
    return 1;
}

int smtp_send_message(struct smtp_conn *c, int fd, unsigned long long *sent)
{
    unsigned char b[16384];
    off_t off = 0;
    int bol = 1, pending_cr = 0;
    size_t col = 0;         /* octets sent on the current line */
    unsigned long long total = 0;
    for (;;) {
        ssize_t r = pread(fd, b, sizeof b, off);
        if (r < 0) { if (errno == EINTR) continue; return 0; }
        if (r == 0) break;
        off += r;
        size_t start = 0;   /* bytes [start, i) are plain text to copy */
        for (size_t i = 0; i < (size_t)r; i++) {
            unsigned char ch = b[i];
            if (pending_cr) {
                pending_cr = 0;
                if (!smtp_put(c, "\r\n", 2)) return 0;
                total += 2;
                bol = 1;
                col = 0;
                if (ch == '\n') { start = i + 1; continue; }
            }
            if (ch == '\r' || ch == '\n' || (bol && ch == '.')) {
                if (i > start && !smtp_put(c, b + start, i - start)) return 0;
                total += i - start;
                start = i + 1;
                if (ch == '\r') { pending_cr = 1; continue; }
                if (ch == '\n') {
                    if (!smtp_put(c, "\r\n", 2)) return 0;
                    total += 2;
                    bol = 1;
                    col = 0;
                    continue;
                }
                if (!smtp_put(c, "..", 2)) return 0;   /* dot-stuffing */
                total += 2;
                bol = 0;
                col = 2;
                continue;
            }
            if (col == SMTP_SEND_LINE_MAX) {
                /* a line longer than RFC 5321 lets us send (4.5.3.1.6):
                 * broken with CRLF SPACE, folding in a header and the
                 * least damage in a body, as Postfix's
                 * smtp_line_length_limit does */
                if (i > start && !smtp_put(c, b + start, i - start)) return 0;
                total += i - start;
                start = i;
                if (!smtp_put(c, "\r\n ", 3)) return 0;
                total += 3;
                col = 1;
            }
            col++;
            bol = 0;
        }
        if ((size_t)r > start && !smtp_put(c, b + start, (size_t)r - start)) return 0;
        total += (size_t)r - start;
    }
    if (pending_cr) bol = 0;   /* the CR becomes the line end below */
    if (!bol) {
        if (!smtp_put(c, "\r\n", 2)) return 0;
        total += 2;
    }
    if (!smtp_put(c, ".\r\n", 3) || !smtp_flush(c)) return 0;
    if (sent) *sent = total + 3;
    return 1;
}

/* ---------------------------------------------------------------- EHLO */

void smtp_ext_parse(struct smtp_ext *e, const struct smtp_reply *r)
{
    memset(e, 0, sizeof *e);
    e->esmtp = 1;
    const char *p = r->text, *end = r->text + r->len;
    int first = 1;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        if (!first) {   /* the first line is the greeting, not a keyword */
            char kw[32];
            size_t k = 0;
            const char *q = p;
            while (q < le && *q != ' ' && *q != '=' && k + 1 < sizeof kw) kw[k++] = *q++;
            kw[k] = 0;
            const char *arg = q < le ? q + 1 : le;
            if (!strcasecmp(kw, "STARTTLS")) e->starttls = 1;
            else if (!strcasecmp(kw, "PIPELINING")) e->pipelining = 1;
            else if (!strcasecmp(kw, "8BITMIME")) e->eightbitmime = 1;
            else if (!strcasecmp(kw, "DSN")) e->dsn = 1;
            else if (!strcasecmp(kw, "SMTPUTF8")) e->smtputf8 = 1;
            else if (!strcasecmp(kw, "ENHANCEDSTATUSCODES")) e->enhanced = 1;
            else if (!strcasecmp(kw, "SIZE")) {
                unsigned long long v = 0;
                int ok = 1;
                e->size = 1;
                for (const char *d = arg; d < le && *d != ' '; d++) {
                    if (*d < '0' || *d > '9' || v > (~0ULL - 9) / 10) { ok = 0; break; }
                    v = v * 10 + (unsigned)(*d - '0');
                }
                e->size_max = ok ? v : 0;
            } else if (!strcasecmp(kw, "AUTH")) {
                for (const char *w = arg; w < le;) {
                    const char *we = w;
                    while (we < le && *we != ' ') we++;
                    if (we - w == 5 && !strncasecmp(w, "PLAIN", 5)) e->auth_plain = 1;
                    w = we < le ? we + 1 : le;
                }
            }
        }
        first = 0;
        p = nl ? nl + 1 : end;
    }
}

int smtp_base64(const unsigned char *src, size_t n, char *dst, size_t cap)
{
    static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t need = (n + 2) / 3 * 4 + 1;
    if (n > (size_t)-1 / 2 || need > cap) { errno = E2BIG; return 0; }
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)src[i] << 16;
        if (i + 1 < n) v |= (unsigned)src[i + 1] << 8;
        if (i + 2 < n) v |= src[i + 2];
        dst[o++] = al[(v >> 18) & 63];
        dst[o++] = al[(v >> 12) & 63];
        dst[o++] = i + 1 < n ? al[(v >> 6) & 63] : '=';
        dst[o++] = i + 2 < n ? al[v & 63] : '=';
    }
    dst[o] = 0;
    return 1;
}

/* --------------------------------------------------------- transaction */

/* Within the transaction a reply counts by its first digit (RFC 5321
 * 4.2.1, as Postfix's smtp(8) does): any 2yz to MAIL, RCPT and the end of
 * data is a success, any 3yz to DATA the go-ahead. Taking only 250 would
 * turn a "251" to the data into a temporary failure and a second copy. */

struct txn {
    struct smtp_conn *c;
    const char *peer;
    char *status;
    size_t cap;
    struct smtp_reply r;
};

static int cmd(struct txn *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int cmd(struct txn *t, const char *fmt, ...)
{
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 2, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof line - 2) { errno = E2BIG; return 0; }
    line[n++] = '\r';
    line[n++] = '\n';
    return smtp_put(t->c, line, (size_t)n);
}

/* status for a transport/protocol error while waiting for what */
static void io_status(struct txn *t, const char *what)
{
    const char *why = errno == ETIMEDOUT ? "timeout" :
                      errno == EPROTO ? "bad reply" :
                      errno == EPIPE ? "connection closed" : strerror(errno);
    if (errno == EPROTO)
        snprintf(t->status, t->cap, "4.4.2 bad reply from server %s (%s)", t->peer, what);
    else
        snprintf(t->status, t->cap, "4.4.2 host %s: %s (%s)", t->peer, why, what);
}

/* status quoting the server's reply */
static void reply_status(struct txn *t, const char *what)
{
    char st[16], sum[SMTP_SUMMARY_MAX];
    smtp_reply_status(&t->r, st, sizeof st);
    if (t->r.code < 400) snprintf(st, sizeof st, "4.5.0");   /* a 2xx/3xx where it makes no sense */
    smtp_reply_summary(&t->r, sum, sizeof sum);
    snprintf(t->status, t->cap, "%s host %s said: %s (in reply to %s)", st, t->peer, sum, what);
}

/* 1 with the status set if the server spoke out of turn: bytes are in
 * after the reply we waited for, before our next command went out. Read
 * on, they would be taken for that command's reply: a refusal of RCPT
 * for DATA's, and a "250" sent along with the 354 for the end of data,
 * the message then going to a server that reads it as commands. */
static int out_of_turn(struct txn *t, const char *what)
{
    struct smtp_conn *c = t->c;
    if (!smtp_buffered(c) && !(c->tr.pending && c->tr.pending(c->tr.ctx))) return 0;
    snprintf(t->status, t->cap, "4.4.2 bad reply from server %s (reply out of turn, before %s)", t->peer, what);
    return 1;
}

static int read_reply(struct txn *t, const char *what, int timeout_ms)
{
    if (smtp_read_reply(t->c, &t->r, timeout_ms)) return 1;
    io_status(t, what);
    return 0;
}

static enum smtp_outcome fail_reply(struct txn *t, const char *what)
{
    reply_status(t, what);
    return t->r.code >= 500 ? SMTP_PERMFAIL : SMTP_TEMPFAIL;
}

static void quit(struct txn *t)
{
    /* best effort, bounded by a short wait: the result is already known */
    int saved = t->c->timeout_ms;
    t->c->timeout_ms = saved < 5000 ? saved : 5000;
    if (cmd(t, "QUIT") && smtp_flush(t->c)) {
        struct smtp_reply r;
        (void)smtp_read_reply(t->c, &r, t->c->timeout_ms);
    }
    t->c->timeout_ms = saved;
}

void smtp_quit(struct smtp_conn *c)
{
    static struct txn tq;
    char st[16];
    tq.c = c;
    tq.peer = "";
    tq.status = st;
    tq.cap = sizeof st;
    quit(&tq);
}

static int ehlo(struct txn *t, const struct smtp_job *j, struct smtp_ext *ext)
{
    if (out_of_turn(t, "EHLO")) return 0;
    if (!cmd(t, "EHLO %s", j->helo) || !smtp_flush(t->c)) { io_status(t, "EHLO"); return 0; }
    if (!read_reply(t, "EHLO", t->c->timeout_ms)) return 0;
    if (t->r.code == 250) { smtp_ext_parse(ext, &t->r); return 1; }
    if (t->r.code < 500) { reply_status(t, "EHLO"); return 0; }
    if (!cmd(t, "HELO %s", j->helo) || !smtp_flush(t->c)) { io_status(t, "HELO"); return 0; }
    if (!read_reply(t, "HELO", t->c->timeout_ms)) return 0;
    if (t->r.code != 250) { reply_status(t, "HELO"); return 0; }
    memset(ext, 0, sizeof *ext);
    return 1;
}

/* 1 if the reply's first line names our own host (its first word, case
 * aside, a trailing dot aside): the server is this host, e.g. an MX or a
 * route that points back here for a domain that is not local */
static int names_us(const struct smtp_reply *r, const char *me)
{
    size_t n = strcspn(r->text, " \n"), m = strlen(me);
    if (n && r->text[n - 1] == '.') n--;
    if (m && me[m - 1] == '.') m--;
    return m && n == m && !strncasecmp(r->text, me, m);
}

/* RFC 5321 5.1 and Postfix's "loops back to myself": relaying to ourselves
 * would only pile up Received: lines until the hop limit. The caller tries
 * no further address: those have the same or a less preferred MX, which
 * RFC 5321 5.1 discards along with this host's own */
static int loops_back(struct txn *t, const struct smtp_job *j, const char *how)
{
    if (!names_us(&t->r, j->helo)) return 0;
    snprintf(t->status, t->cap, "5.4.6 mail loops back to myself: host %s %s my own host name %s",
             t->peer, how, j->helo);
    quit(t);
    return 1;
}

/* the part before MAIL: greeting, EHLO, STARTTLS, AUTH */
static enum smtp_outcome open_session(struct txn *t, const struct smtp_job *j,
                                      smtp_starttls_fn *starttls, void *tlsctx,
                                      struct smtp_ext *ext)
{
    if (!read_reply(t, "initial greeting", t->c->timeout_ms)) return SMTP_NEXT_HOST;
    if (t->r.code != 220) { reply_status(t, "initial greeting"); quit(t); return SMTP_NEXT_HOST; }
    if (loops_back(t, j, "greeted me with")) return SMTP_LOOP;
    if (!ehlo(t, j, ext)) { quit(t); return SMTP_NEXT_HOST; }
    if (loops_back(t, j, "answered EHLO with")) return SMTP_LOOP;
    int tls = 0;
    if (j->tls != SMTP_TLS_NONE && ext->starttls && starttls) {
        if (!cmd(t, "STARTTLS") || !smtp_flush(t->c)) { io_status(t, "STARTTLS"); return SMTP_NEXT_HOST; }
        if (!read_reply(t, "STARTTLS", t->c->timeout_ms)) return SMTP_NEXT_HOST;
        if (t->r.code == 220) {
            char why[256];
            if (smtp_buffered(t->c)) {   /* bytes injected before the handshake */
                snprintf(t->status, t->cap, "4.7.5 host %s sent data after its STARTTLS reply", t->peer);
                return j->tls == SMTP_TLS_MAY ? SMTP_RETRY_PLAIN : SMTP_NEXT_HOST;
            }
            if (!starttls(tlsctx, t->c, why, sizeof why)) {
                snprintf(t->status, t->cap, "4.7.5 TLS with host %s failed: %s", t->peer, why);
                return j->tls == SMTP_TLS_MAY ? SMTP_RETRY_PLAIN : SMTP_NEXT_HOST;
            }
            tls = 1;
            if (!ehlo(t, j, ext)) { quit(t); return SMTP_NEXT_HOST; }
        } else if (j->tls == SMTP_TLS_REQUIRE) {
            reply_status(t, "STARTTLS");
            snprintf(t->status, t->cap, "4.7.5 host %s refused STARTTLS, which this route requires", t->peer);
            quit(t);
            return SMTP_NEXT_HOST;
        }
    }
    if (!tls && j->tls == SMTP_TLS_REQUIRE) {
        snprintf(t->status, t->cap, "4.7.5 host %s does not offer STARTTLS, which this route requires", t->peer);
        quit(t);
        return SMTP_NEXT_HOST;
    }
    if (j->auth_user) {
        char plain[600], b64[820];
        size_t ul = strlen(j->auth_user), pl = strlen(j->auth_pass);
        if (!tls) {
            snprintf(t->status, t->cap, "4.7.5 no TLS with host %s: credentials not sent", t->peer);
            quit(t);
            return SMTP_NEXT_HOST;
        }
        if (!ext->auth_plain) {
            snprintf(t->status, t->cap, "4.7.0 host %s does not offer AUTH PLAIN", t->peer);
            quit(t);
            return SMTP_NEXT_HOST;
        }
        if (ul + pl + 2 > sizeof plain) { snprintf(t->status, t->cap, "4.3.5 credentials too long"); return SMTP_TEMPFAIL; }
        plain[0] = 0;
        memcpy(plain + 1, j->auth_user, ul);
        plain[1 + ul] = 0;
        memcpy(plain + 2 + ul, j->auth_pass, pl);
        int ok = smtp_base64((unsigned char *)plain, ul + pl + 2, b64, sizeof b64);
        explicit_bzero(plain, sizeof plain);
        int turn = out_of_turn(t, "AUTH");
        ok = ok && !turn && cmd(t, "AUTH PLAIN %s", b64) && smtp_flush(t->c);
        explicit_bzero(b64, sizeof b64);
        explicit_bzero(t->c->out, sizeof t->c->out);
        if (!ok) { if (!turn) io_status(t, "AUTH"); return SMTP_NEXT_HOST; }
        if (!read_reply(t, "AUTH", t->c->timeout_ms)) return SMTP_NEXT_HOST;
        if (t->r.code != 235) {
            reply_status(t, "AUTH");
            quit(t);
            /* a rejected login is the operator's to fix: keep the mail */
            if (t->status[0] == '5') t->status[0] = '4';
            return SMTP_TEMPFAIL;
        }
    }
    return SMTP_DELIVERED;   /* i.e. ready for MAIL */
}

/* an address we can put between < and >: no controls, no <>, spaces only
 * inside a quoted local part. 1 ok (*utf8 set if it has 8-bit bytes), 0 bad */
static int addr_ok(const char *a, int *utf8)
{
    int q = 0;
    for (; *a; a++) {
        unsigned char ch = (unsigned char)*a;
        if (ch < ' ' || ch == 0x7f || ch == '<' || ch == '>') return 0;
        if (ch >= 0x80) *utf8 = 1;
        if (ch == '"') q = !q;
        else if (ch == '\\' && q && a[1]) a++;
        else if (ch == ' ' && !q) return 0;
    }
    return !q;
}

static int xtext_ok(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (!n || n > max) return 0;
    for (; *s; s++)
        if ((unsigned char)*s < 33 || (unsigned char)*s > 126 || *s == '=') return 0;
    return 1;
}

static int has_8bit(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80) return 1;
    return 0;
}

/* RFC 6533 utf-8-addr-unitext of a non-ASCII address (it goes out only with
 * SMTPUTF8, which such an address needs anyway): UTF-8 and printable ASCII
 * as they are, but '+', '=', '\\' and controls as \x{HEX}. An rfc822 ORCPT
 * is xtext of printable ASCII only (RFC 3461 4.2). 1, or 0 if cap is short. */
static int utf8_orcpt(const char *addr, char *dst, size_t cap)
{
    size_t o = 0;
    for (const unsigned char *u = (const unsigned char *)addr; *u; u++) {
        char esc[12];
        int plain = *u >= 0x80 || (*u > 0x20 && *u < 0x7f && *u != '+' && *u != '=' && *u != '\\');
        int n = plain ? 1 : snprintf(esc, sizeof esc, "\\x{%X}", *u);
        if (n < 0 || (size_t)n + 1 > cap - o) return 0;
        if (plain) dst[o] = (char)*u;
        else memcpy(dst + o, esc, (size_t)n);
        o += (size_t)n;
    }
    if (!cap) return 0;
    dst[o] = 0;
    return 1;
}

/* 1 if the message's header (up to its first empty line) has a byte
 * outside ASCII, 0 if not, -1 with errno if it cannot be read: what needs
 * SMTPUTF8 (RFC 6532 UTF-8 header values) once the addresses are ASCII */
static int header_8bit(int fd)
{
    unsigned char b[4096];
    off_t off = 0;
    int bol = 1;
    for (;;) {
        ssize_t r = pread(fd, b, sizeof b, off);
        if (r < 0) { if (errno == EINTR) continue; return -1; }
        if (r == 0) return 0;
        off += r;
        for (ssize_t i = 0; i < r; i++) {
            if (b[i] >= 0x80) return 1;
            if (b[i] == '\n') { if (bol) return 0; bol = 1; }
            else if (b[i] != '\r') bol = 0;
        }
    }
}

/* A client's ORCPT "utf-8;" with raw UTF-8 in it (RFC 6533
 * utf-8-addr-unitext, which smtp-listener takes under SMTPUTF8), for a
 * transaction without SMTPUTF8: its utf-8-addr-xtext form, each non-ASCII
 * character as \x{HEX} of its code point; what is ASCII is already in
 * that form. 1, or 0 (not such a value, or cap short). */
static int orcpt_utf8_xtext(const char *orcpt, char *dst, size_t cap)
{
    if (strncasecmp(orcpt, "utf-8;", 6) || !orcpt[6] || cap < 7) return 0;
    const unsigned char *u = (const unsigned char *)orcpt + 6;
    size_t n = strlen((const char *)u), o = 6;
    memcpy(dst, orcpt, 6);
    for (size_t i = 0; i < n;) {
        char esc[16];
        const char *src = (const char *)u + i;
        size_t k = 1, len = 1;
        if (u[i] >= 0x80) {
            if (!(k = utf8_char(u + i, n - i))) return 0;
            unsigned long cp = u[i] & (k == 2 ? 0x1f : k == 3 ? 0x0f : 0x07);
            for (size_t m = 1; m < k; m++) cp = cp << 6 | (u[i + m] & 0x3f);
            len = (size_t)snprintf(esc, sizeof esc, "\\x{%lX}", cp);
            src = esc;
        } else if (u[i] <= ' ' || u[i] == 0x7f || u[i] == '+' || u[i] == '=') {
            return 0;
        }
        if (len + 1 > cap - o) return 0;
        memcpy(dst + o, src, len);
        o += len;
        i += k;
    }
    dst[o] = 0;
    return 1;
}

/* the RCPT parameters for one recipient into rparam; utf8: the
 * transaction has SMTPUTF8, so a UTF-8 ORCPT may go as it came */
static void rcpt_params(const struct smtp_ext *ext, const struct smtp_rcpt *rc, int utf8, char *rparam, size_t cap)
{
    size_t rl = 0;
    char x[600];
    rparam[0] = 0;
    if (!ext->dsn) return;
    if (rc->notify && *rc->notify)
        rl += (size_t)snprintf(rparam + rl, cap - rl, " NOTIFY=%s", rc->notify);
    if (rl >= cap) { rparam[0] = 0; return; }
    if (rc->orcpt && *rc->orcpt && xtext_ok(rc->orcpt, 500) && strchr(rc->orcpt, ';')) {
        snprintf(rparam + rl, cap - rl, " ORCPT=%s", rc->orcpt);
    } else if (rc->orcpt && *rc->orcpt && orcpt_utf8_xtext(rc->orcpt, x, sizeof x) && strlen(x) <= 500) {
        /* the client's own original recipient, kept (RFC 3461 5.2) */
        snprintf(rparam + rl, cap - rl, " ORCPT=%s", utf8 ? rc->orcpt : x);
    } else {
        if (has_8bit(rc->addr) ? utf8_orcpt(rc->addr, x, sizeof x) : smtp_xtext(rc->addr, x, sizeof x))
            snprintf(rparam + rl, cap - rl, " ORCPT=%s;%s", has_8bit(rc->addr) ? "utf-8" : "rfc822", x);
    }
}

/* every recipient still open (accepted) gets outcome o with the txn status */
static void settle(struct smtp_rcpt *r, size_t n, const int *open, enum smtp_outcome o, const char *status)
{
    for (size_t i = 0; i < n; i++)
        if (open[i]) {
            r[i].outcome = o;
            snprintf(r[i].status, r[i].cap, "%s", status);
        }
}

/* flush what is queued (flushing names it in the status) and read MAIL's
 * reply into t->r: 1, or 0 with *o set. On a reused session a lost
 * connection, or 421, means it was closed while idle: SMTP_RECONNECT. On a
 * new one a 421 is the server closing (RFC 5321 3.8) before it accepted
 * anything, as a 421 greeting is: SMTP_NEXT_HOST (Postfix does the same). */
static int mail_reply(struct txn *t, int reused, const char *flushing, enum smtp_outcome *o)
{
    *o = reused ? SMTP_RECONNECT : SMTP_TEMPFAIL;
    if (!reused && out_of_turn(t, "MAIL FROM")) return 0;
    if (!smtp_flush(t->c)) { io_status(t, flushing); return 0; }
    if (!read_reply(t, "MAIL FROM", t->c->timeout_ms)) return 0;
    if (t->r.code == 421) {
        reply_status(t, "MAIL FROM");
        if (!reused) *o = SMTP_NEXT_HOST;
        return 0;
    }
    return 1;
}

/* "Too many recipients": 452, or a 552 whose enhanced code says so
 * (X.5.3). RFC 821 gave that condition 552 and servers still send it;
 * RFC 5321 4.5.3.1.10 says a client SHOULD take a 552 "in this case" as
 * temporary, so that the recipients past the limit go in a later
 * transaction rather than bounce. Only the enhanced code tells this case
 * from the 552s that are permanent (mailbox full, message too big), which
 * is why Postfix's smtp(8) keeps every 552 permanent. */
static int rcpt_too_many(const struct smtp_reply *r)
{
    char st[16];
    if (r->code == 452) return 1;
    if (r->code != 552) return 0;
    smtp_reply_status(r, st, sizeof st);
    return !strcmp(st, "5.5.3");
}

/* RCPT reply i: 1 accepted (any 2yz, RFC 5321 4.2.1), else r[i] settled
 * with the reply */
static int rcpt_reply(struct txn *t, struct smtp_rcpt *rc)
{
    if (t->r.code / 100 == 2) return 1;
    char *save = t->status;
    size_t savecap = t->cap;
    t->status = rc->status;
    t->cap = rc->cap;
    rc->outcome = fail_reply(t, "RCPT TO");
    if (t->r.code == 552 && rcpt_too_many(&t->r)) {
        rc->outcome = SMTP_TEMPFAIL;
        rc->status[0] = '4';
    }
    t->status = save;
    t->cap = savecap;
    return 0;
}

/* What fails the whole message on this host before MAIL: an address or a
 * header that needs SMTPUTF8 where the host has none, a size past its
 * SIZE. SMTP_DELIVERED when it may go; else the session is closed. */
static enum smtp_outcome host_takes(struct txn *t, const struct smtp_job *j, const struct smtp_ext *ext, int utf8)
{
    if (utf8 && !ext->smtputf8) {
        snprintf(t->status, t->cap, "5.6.7 host %s does not offer SMTPUTF8, needed for a non-ASCII address", t->peer);
        quit(t);
        return SMTP_PERMFAIL;
    }
    if (j->smtputf8 && !utf8 && !ext->smtputf8) {
        /* RFC 6531 3.4: a message that needs SMTPUTF8 is not relayed to a
         * server without it; one whose addresses and header are ASCII does
         * not need it and goes without (as Postfix does) */
        int h = header_8bit(j->msgfd);
        if (h != 0) {
            if (h < 0) snprintf(t->status, t->cap, "4.3.0 cannot read the queued message: %s", strerror(errno));
            else snprintf(t->status, t->cap, "5.6.7 host %s does not offer SMTPUTF8, needed for a non-ASCII header", t->peer);
            quit(t);
            return h < 0 ? SMTP_TEMPFAIL : SMTP_PERMFAIL;
        }
    }
    if (ext->size && ext->size_max && j->size > ext->size_max) {
        snprintf(t->status, t->cap, "5.3.4 message too big for host %s (%llu > %llu)", t->peer, j->size, ext->size_max);
        quit(t);
        return SMTP_PERMFAIL;
    }
    return SMTP_DELIVERED;
}

/* MAIL's parameters, each only where the host offers its extension */
static void mail_params(const struct smtp_ext *ext, const struct smtp_job *j, int utf8, char *param, size_t cap)
{
    size_t pl = 0;
    param[0] = 0;
    if (ext->size) pl += (size_t)snprintf(param + pl, cap - pl, " SIZE=%llu", j->size);
    if (j->body8bit && ext->eightbitmime) pl += (size_t)snprintf(param + pl, cap - pl, " BODY=8BITMIME");
    if (utf8) pl += (size_t)snprintf(param + pl, cap - pl, " SMTPUTF8");
    if (ext->dsn && j->ret && (!strcmp(j->ret, "FULL") || !strcmp(j->ret, "HDRS")))
        pl += (size_t)snprintf(param + pl, cap - pl, " RET=%s", j->ret);
    if (ext->dsn && j->envid && xtext_ok(j->envid, 100))
        (void)snprintf(param + pl, cap - pl, " ENVID=%s", j->envid);
}

/* The recipients a transaction carries and what became of them. */
struct envelope_out {
    const struct smtp_ext *ext;
    int reused;         /* on a session kept from an earlier message */
    int utf8;           /* SMTPUTF8 on MAIL, and UTF-8 ORCPTs */
    struct smtp_rcpt *r;
    size_t n;
    int *open;          /* in: the recipients to send; out: those accepted */
};

/* MAIL and every RCPT: one write when the server pipelines. On a reused
 * session, no answer to MAIL (or 421) means it was closed while idle:
 * nothing was accepted, the caller starts over on a new connection.
 * Returns 1 when DATA may follow (a recipient accepted), else 0 with *o the
 * transaction's outcome (each recipient's own is set where it has one). */
static int send_envelope(struct txn *t, const struct smtp_job *j, struct envelope_out *e, enum smtp_outcome *o)
{
    struct smtp_conn *c = t->c;
    const struct smtp_ext *ext = e->ext;
    char param[1400], rparam[1400];
    mail_params(ext, j, e->utf8, param, sizeof param);
    if (!cmd(t, "MAIL FROM:<%s>%s", j->sender, param)) { io_status(t, "MAIL FROM"); *o = SMTP_TEMPFAIL; return 0; }
    if (!ext->pipelining) {
        if (!mail_reply(t, e->reused, "MAIL FROM", o)) return 0;
        if (t->r.code / 100 != 2) { *o = fail_reply(t, "MAIL FROM"); quit(t); return 0; }
    }
    size_t sent = 0;   /* RCPTs written (pipelining: all of them) */
    if (ext->pipelining) {
        for (size_t i = 0; i < e->n; i++) {
            if (!e->open[i]) continue;
            rcpt_params(ext, &e->r[i], e->utf8, rparam, sizeof rparam);
            if (!cmd(t, "RCPT TO:<%s>%s", e->r[i].addr, rparam)) {
                io_status(t, "RCPT TO");
                *o = SMTP_TEMPFAIL;
                return 0;
            }
            sent++;
        }
        if (!mail_reply(t, e->reused, "RCPT TO", o)) return 0;
        if (t->r.code / 100 != 2) {
            *o = fail_reply(t, "MAIL FROM");
            size_t k;
            for (k = 0; k < sent; k++)   /* the RCPTs' replies */
                if (!smtp_read_reply(c, &t->r, c->timeout_ms)) break;
            if (k == sent) quit(t);
            return 0;
        }
    }
    size_t answered = 0, accepted = 0;
    *o = SMTP_DELIVERED;   /* from here on, each recipient has its own result */
    for (size_t i = 0; i < e->n; i++) {
        if (!e->open[i]) continue;
        if (!ext->pipelining) {
            rcpt_params(ext, &e->r[i], e->utf8, rparam, sizeof rparam);
            int turn = out_of_turn(t, "RCPT TO");
            if (turn || !cmd(t, "RCPT TO:<%s>%s", e->r[i].addr, rparam) || !smtp_flush(c)) {
                if (!turn) io_status(t, "RCPT TO");
                goto lost;
            }
        }
        if (!read_reply(t, "RCPT TO", c->timeout_ms)) goto lost;
        answered++;
        if (rcpt_reply(t, &e->r[i])) { accepted++; continue; }
        if (t->r.code == 421 && !accepted) {
            /* the server closing before it accepted a recipient (a rate
             * limit at RCPT, say): as a 421 to MAIL, the next address (on a
             * reused session, a new connection); the recipients' later
             * replies, if pipelined, never come */
            reply_status(t, "RCPT TO");
            *o = e->reused ? SMTP_RECONNECT : SMTP_NEXT_HOST;
            return 0;
        }
        e->open[i] = 0;
        if (rcpt_too_many(&t->r) && !ext->pipelining) {
            /* too many recipients: the rest wait for a later attempt */
            for (size_t k = i + 1; k < e->n; k++)
                if (e->open[k]) {
                    e->open[k] = 0;
                    e->r[k].outcome = SMTP_TEMPFAIL;
                    snprintf(e->r[k].status, e->r[k].cap, "%s", e->r[i].status);
                }
            break;
        }
    }
    if (!accepted) { quit(t); return 0; }
    return 1;
lost:   /* no reply to a RCPT: the whole message, or the recipients not yet answered */
    if (!answered) *o = SMTP_TEMPFAIL;
    else settle(e->r, e->n, e->open, SMTP_TEMPFAIL, t->status);
    return 0;
}

/* DATA, the message and the reply to its end, for the accepted recipients
 * (e->open): each gets the outcome, with the server's words in t->status */
static void send_content(struct txn *t, const struct smtp_job *j, struct envelope_out *e)
{
    struct smtp_conn *c = t->c;
    enum smtp_outcome o = SMTP_TEMPFAIL;
    if (out_of_turn(t, "DATA")) goto settle;
    if (!cmd(t, "DATA") || !smtp_flush(c)) { io_status(t, "DATA"); goto settle; }
    if (!read_reply(t, "DATA", c->timeout_ms)) goto settle;
    if (t->r.code / 100 != 3) { o = fail_reply(t, "DATA"); quit(t); goto settle; }
    if (out_of_turn(t, "message content")) goto settle;
    if (!smtp_send_message(c, j->msgfd, NULL)) {
        if (errno == EIO || errno == EBADF)
            snprintf(t->status, t->cap, "4.3.0 cannot read the queued message: %s", strerror(errno));
        else io_status(t, "message content");
        goto settle;
    }
    int tmo = c->timeout_ms > 0x3fffffff ? 0x7fffffff : c->timeout_ms * 2;
    if (!read_reply(t, "end of data", tmo)) goto settle;
    if (t->r.code / 100 != 2) { o = fail_reply(t, "end of data"); quit(t); goto settle; }
    char sum[SMTP_SUMMARY_MAX];
    smtp_reply_summary(&t->r, sum, sizeof sum);
    snprintf(t->status, t->cap, "2.0.0 host %s said: %s", t->peer, sum);
    struct smtp_reuse *ru = j->reuse;
    if (ru && ru->keep) ru->open = 1;   /* the next MAIL may follow */
    else quit(t);
    o = SMTP_DELIVERED;
    for (size_t i = 0; i < e->n; i++) e->r[i].dsn = e->open[i] && e->ext->dsn;
settle:
    settle(e->r, e->n, e->open, o, t->status);
}

enum smtp_outcome smtp_transaction_multi(struct smtp_conn *c, const struct smtp_job *j,
                                         struct smtp_rcpt *r, size_t n,
                                         smtp_starttls_fn *starttls, void *tlsctx,
                                         const char *peer, char *status, size_t cap)
{
    static struct txn tx;   /* the reply buffer is large: keep it off the stack */
    struct txn *t = &tx;
    struct smtp_ext ext;
    int open[SMTP_RCPT_MAX];

    t->c = c;
    t->peer = peer;
    t->status = status;
    t->cap = cap;
    status[0] = 0;
    if (!n || n > SMTP_RCPT_MAX) { snprintf(status, cap, "4.3.0 bad recipient count"); return SMTP_TEMPFAIL; }
    int utf8 = 0;
    size_t nok = 0;
    if (!addr_ok(j->sender, &utf8)) { snprintf(status, cap, "5.1.3 bad address syntax"); return SMTP_PERMFAIL; }
    for (size_t i = 0; i < n; i++) {
        r[i].status[0] = 0;
        r[i].dsn = 0;
        open[i] = addr_ok(r[i].addr, &utf8) && *r[i].addr;
        if (!open[i]) { r[i].outcome = SMTP_PERMFAIL; snprintf(r[i].status, r[i].cap, "5.1.3 bad address syntax"); }
        else nok++;
    }
    if (!nok) return SMTP_DELIVERED;   /* each has its result */
    struct smtp_reuse *ru = j->reuse;
    int reused = ru && ru->established;
    enum smtp_outcome o;
    if (ru) ru->open = 0;
    if (reused) {
        ext = ru->ext;
    } else {
        o = open_session(t, j, starttls, tlsctx, &ext);
        if (o != SMTP_DELIVERED) return o;
        if (ru) ru->ext = ext;
    }
    o = host_takes(t, j, &ext, utf8);
    if (o != SMTP_DELIVERED) return o;
    struct envelope_out e = { &ext, reused, utf8 || (j->smtputf8 && ext.smtputf8), r, n, open };
    if (!send_envelope(t, j, &e, &o)) return o;
    send_content(t, j, &e);
    return SMTP_DELIVERED;
}

enum smtp_outcome smtp_transaction(struct smtp_conn *c, const struct smtp_job *j,
                                   smtp_starttls_fn *starttls, void *tlsctx,
                                   const char *peer, char *status, size_t cap)
{
    struct smtp_rcpt r = { .addr = j->rcpt, .orcpt = j->orcpt, .notify = j->notify,
                           .outcome = SMTP_TEMPFAIL, .status = status, .cap = cap };
    static char tstatus[SMTP_SUMMARY_MAX + 1200];
    enum smtp_outcome o = smtp_transaction_multi(c, j, &r, 1, starttls, tlsctx, peer, tstatus, sizeof tstatus);
    if (o != SMTP_DELIVERED) {
        snprintf(status, cap, "%s", tstatus);
        return o;
    }
    return r.outcome;
}
