/* pop3_session.c - the POP3 state machine: a command table over one state enum. */
#include "pop3_session.h"
#include "err.h"
#include "sasl.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <sodium.h>

#define ST_AUTH (1u << POP3_AUTHORIZATION)
#define ST_TRANS (1u << POP3_TRANSACTION)

struct pop3_cmd {
    const char *name;
    unsigned states;               /* where it is valid */
    int noargs;                    /* takes no arguments: one is a syntax error */
    int (*fn)(struct pop3_session *s, const char *arg, size_t len, enum pop3_action *act);
};

static int say(struct pop3_session *s, const char *line)
{
    return io_puts(s->out, line) && io_put(s->out, "\r\n", 2);
}

static int sayf(struct pop3_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int sayf(struct pop3_session *s, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0) return 0;
    return say(s, line);
}

/* a counted error reply; past max_errors the connection is closed */
static int bad(struct pop3_session *s, const char *line, enum pop3_action *act)
{
    if (++s->errors >= s->max_errors) {
        *act = POP3_CLOSE;
        s->state = POP3_DONE;
        return say(s, "-ERR Too many errors, closing connection");
    }
    return say(s, line);
}

void pop3_init(struct pop3_session *s, struct io *out, unsigned max_errors)
{
    memset(s, 0, sizeof *s);
    s->out = out;
    s->max_errors = max_errors ? max_errors : 20;
    s->state = POP3_AUTHORIZATION;
    s->plain_ok = 1;               /* until pop3_set_security says otherwise */
}

void pop3_wipe(struct pop3_session *s)
{
    sodium_memzero(s->pass, sizeof s->pass);
    s->passlen = 0;
}

int pop3_greeting(struct pop3_session *s, const char *hostname)
{
    return sayf(s, "+OK POP3 server ready %s", hostname);
}

void pop3_set_security(struct pop3_session *s, int tls, int stls, int plain_ok)
{
    s->tls = tls;
    s->stls = stls;
    s->plain_ok = plain_ok;
}

void pop3_tls_started(struct pop3_session *s)
{
    s->tls = 1;
    s->have_user = 0;
    pop3_wipe(s);
}

int pop3_plain_policy(const char *policy, const char *addr)
{
    if (!strcmp(policy, "always")) return 1;
    if (!strcmp(policy, "never")) return 0;
    if (strcmp(policy, "loopback")) return -1;
    return !strncmp(addr, "127.", 4) || !strcmp(addr, "::1") || !strncmp(addr, "::ffff:127.", 11);
}

static enum pop3_line_end line_end(enum io_eol eol)
{
    return eol == IO_EOL_NONE ? POP3_LINE_LONG : eol == IO_EOL_CR ? POP3_LINE_BARE_CR : POP3_LINE_WHOLE;
}

int pop3_line_take(struct io *in, enum io_eol eol, size_t len, size_t max, enum pop3_line_end *end)
{
    *end = line_end(eol);
    if (*end == POP3_LINE_LONG && len < max) return 0;      /* no LF before the end */
    return *end == POP3_LINE_WHOLE || io_skip_to_lf(in, 1 << 20);
}

/* may credentials be sent now? */
static int login_allowed(const struct pop3_session *s) { return s->tls || s->plain_ok; }
static const char R_NEED_TLS[] = "-ERR [AUTH] Plaintext authentication disallowed without TLS";

void pop3_begin_transaction(struct pop3_session *s, struct maildrop *md)
{
    s->md = md;
    s->state = POP3_TRANSACTION;
}

/* split "a b" into two words; trailing/leading spaces tolerated */
static size_t words(const char *arg, size_t len, const char *w[2], size_t wl[2])
{
    size_t n = 0, i = 0;
    while (i < len) {
        while (i < len && arg[i] == ' ') i++;
        if (i == len) break;
        size_t st = i;
        while (i < len && arg[i] != ' ') i++;
        if (n < 2) { w[n] = arg + st; wl[n] = i - st; }
        n++;
    }
    return n;
}

/* the message a number argument names: 1 and *idx, or 0 after an -ERR */
static int pick(struct pop3_session *s, const char *w, size_t wl, size_t *idx, int *ok)
{
    unsigned long long n;
    *ok = 1;
    if (!maildrop_parse_number(w, wl, &n)) { *ok = say(s, "-ERR Invalid message number."); return 0; }
    if (n == 0 || n > s->md->n) { *ok = sayf(s, "-ERR There's no message %llu.", n); return 0; }
    if (s->md->msg[n - 1].deleted) { *ok = say(s, "-ERR Message is deleted."); return 0; }
    *idx = (size_t)(n - 1);
    return 1;
}

/* RFC 2449 5: "Capabilities available in the AUTHORIZATION state MUST be
 * announced in both states", USER, SASL and STLS too, though their commands
 * are valid there only: after login the list is the one of the moment of
 * the login (which was allowed then), given by pop3_set_security. It may
 * change at STLS (RFC 2595 4), not at login */
static int c_capa(struct pop3_session *s, const char *a, size_t l, enum pop3_action *act)
{
    int login = s->state != POP3_AUTHORIZATION || login_allowed(s);
    return say(s, "+OK Capability list follows") && say(s, "TOP") && say(s, "UIDL") &&
           (!login || say(s, "USER")) && say(s, "RESP-CODES") && say(s, "AUTH-RESP-CODE") &&
           say(s, "PIPELINING") && (!login || say(s, "SASL PLAIN")) &&
           (s->tls || !s->stls || say(s, "STLS")) &&
           say(s, "IMPLEMENTATION postern") && say(s, ".");
}

static int c_stls(struct pop3_session *s, const char *a, size_t l, enum pop3_action *act)
{
    if (s->tls) return bad(s, "-ERR Command not permitted when TLS active", act);
    if (!s->stls) return bad(s, "-ERR [SYS/TEMP] TLS not available due to local problem", act);
    *act = POP3_STLS;
    return say(s, "+OK Begin TLS negotiation");
}

static int c_user(struct pop3_session *s, const char *a, size_t l, enum pop3_action *act)
{
    if (!login_allowed(s)) return bad(s, R_NEED_TLS, act);
    if (l == 0) return bad(s, "-ERR Missing user name", act);
    if (l > POP3_USER_MAX || memchr(a, 0, l)) return bad(s, "-ERR Invalid user name", act);
    memcpy(s->user, a, l);
    s->user[l] = 0;
    s->userlen = l;
    s->have_user = 1;
    return say(s, "+OK");
}

static int c_pass(struct pop3_session *s, const char *a, size_t l, enum pop3_action *act)
{
    if (!login_allowed(s)) return bad(s, R_NEED_TLS, act);
    if (!s->have_user) return bad(s, "-ERR USER first", act);
    if (l > POP3_PASS_MAX || memchr(a, 0, l)) {
        s->have_user = 0;
        return say(s, "-ERR [AUTH] Invalid user name or password.");
    }
    memcpy(s->pass, a, l);
    s->pass[l] = 0;
    s->passlen = l;
    *act = POP3_LOGIN;
    return 1;
}

/* authzid \0 authcid \0 password, base64: lib/sasl's PLAIN parser, the
 * one SMTP AUTH uses too */
static int auth_plain(struct pop3_session *s, const char *b64, size_t len, enum pop3_action *act)
{
    struct sasl_cred c;
    s->state = POP3_AUTHORIZATION;
    if (len == 1 && b64[0] == '=') len = 0;   /* RFC 5034: "=" is an empty initial response */
    enum sasl_result r = sasl_plain(b64, len, &c);
    int ok = r == SASL_OK && c.userlen <= POP3_USER_MAX && c.passlen <= POP3_PASS_MAX;
    if (ok) {
        memcpy(s->user, c.user, c.userlen); s->user[c.userlen] = 0; s->userlen = c.userlen;
        memcpy(s->pass, c.pass, c.passlen); s->pass[c.passlen] = 0; s->passlen = c.passlen;
        s->have_user = 1;
    }
    sasl_wipe(&c);
    if (r == SASL_BAD_BASE64) return bad(s, "-ERR Invalid base64 data", act);
    if (!ok) return bad(s, "-ERR [AUTH] Invalid user name or password.", act);
    *act = POP3_LOGIN;
    return 1;
}

static int c_auth(struct pop3_session *s, const char *a, size_t l, enum pop3_action *act)
{
    const char *w[2];
    size_t wl[2];
    size_t n = words(a, l, w, wl);
    if (!login_allowed(s)) return bad(s, R_NEED_TLS, act);
    if (n == 0) return say(s, "+OK") && say(s, "PLAIN") && say(s, ".");
    if (n > 2) return bad(s, "-ERR Syntax: AUTH PLAIN [initial-response]", act);
    if (wl[0] != 5 || strncasecmp(w[0], "PLAIN", 5)) return bad(s, "-ERR Unsupported authentication mechanism", act);
    if (n == 2) return auth_plain(s, w[1], wl[1], act);
    s->state = POP3_AUTH_PLAIN;
    return say(s, "+ ");
}

static int c_quit(struct pop3_session *s, const char *a, size_t l, enum pop3_action *act)
{
    *act = POP3_CLOSE;
    if (s->state != POP3_TRANSACTION) { s->state = POP3_DONE; return say(s, "+OK Logging out."); }
    size_t failed;
    s->state = POP3_DONE;
    if (!maildrop_update(s->md, &failed)) {
        if (failed) return sayf(s, "-ERR [SYS/TEMP] %zu deleted messages could not be removed.", failed);
        return say(s, "-ERR [SYS/TEMP] The changes to the mailbox could not be made durable.");
    }
    return say(s, "+OK Logging out.");
}

int pop3_enters_update(const struct pop3_session *s, const char *line, size_t len, enum pop3_line_end end)
{
    if (s->state != POP3_TRANSACTION || end != POP3_LINE_WHOLE || len < 4 || strncasecmp(line, "QUIT", 4)) return 0;
    for (size_t i = 4; i < len; i++)
        if (line[i] != ' ') return 0;   /* "QUIT x" is refused (pop3_line) */
    return 1;
}

static int c_noop(struct pop3_session *s, const char *a, size_t l, enum pop3_action *act)
{
    return say(s, "+OK");
}

static int c_stat(struct pop3_session *s, const char *a, size_t l, enum pop3_action *act)
{
    size_t n;
    unsigned long long o;
    maildrop_stat(s->md, &n, &o);
    return sayf(s, "+OK %zu %llu", n, o);
}

static int c_list_uidl(struct pop3_session *s, const char *a, size_t l, enum pop3_action *act, int uidl)
{
    const char *w[2];
    size_t wl[2], i;
    size_t nw = words(a, l, w, wl);
    if (nw > 1) return bad(s, uidl ? "-ERR Syntax: UIDL [msg]" : "-ERR Syntax: LIST [msg]", act);
    if (nw == 1) {
        int ok;
        if (!pick(s, w[0], wl[0], &i, &ok)) return ok;
        if (uidl) return sayf(s, "+OK %zu %s", i + 1, s->md->msg[i].uidl);
        return sayf(s, "+OK %zu %llu", i + 1, s->md->msg[i].size);
    }
    size_t n;
    unsigned long long o;
    maildrop_stat(s->md, &n, &o);
    if (!(uidl ? say(s, "+OK") : sayf(s, "+OK %zu messages (%llu octets)", n, o))) return 0;
    for (i = 0; i < s->md->n; i++) {
        const struct maildrop_msg *m = &s->md->msg[i];
        if (m->deleted) continue;
        if (!(uidl ? sayf(s, "%zu %s", i + 1, m->uidl) : sayf(s, "%zu %llu", i + 1, m->size))) return 0;
    }
    return say(s, ".");
}

static int c_list(struct pop3_session *s, const char *a, size_t l, enum pop3_action *act) { return c_list_uidl(s, a, l, act, 0); }
static int c_uidl(struct pop3_session *s, const char *a, size_t l, enum pop3_action *act) { return c_list_uidl(s, a, l, act, 1); }

static int send_msg(struct pop3_session *s, size_t i, long long top, enum pop3_action *act)
{
    int fd = maildrop_open_msg(s->md, i);
    if (fd < 0) return say(s, "-ERR [SYS/TEMP] Message is no longer available.");
    int ok = (top < 0 ? sayf(s, "+OK %llu octets", s->md->msg[i].size) : say(s, "+OK")) &&
             maildrop_send_fd(fd, top, s->out);
    int e = errno;
    close(fd);
    errno = e;
    if (!ok) { *act = POP3_CLOSE; s->state = POP3_DONE; return 0; }  /* cannot -ERR mid-message */
    if (top < 0) s->md->msg[i].retrieved = 1;
    return 1;
}

static int c_retr(struct pop3_session *s, const char *a, size_t l, enum pop3_action *act)
{
    const char *w[2];
    size_t wl[2], i;
    int ok;
    if (words(a, l, w, wl) != 1) return bad(s, "-ERR Syntax: RETR msg", act);
    if (!pick(s, w[0], wl[0], &i, &ok)) return ok;
    return send_msg(s, i, -1, act);
}

static int c_top(struct pop3_session *s, const char *a, size_t l, enum pop3_action *act)
{
    const char *w[2];
    size_t wl[2], i;
    int ok;
    unsigned long long lines = 0;
    size_t nw = words(a, l, w, wl);
    if (nw < 1 || nw > 2) return bad(s, "-ERR Syntax: TOP msg [lines]", act);
    if (nw == 2 && !maildrop_parse_number(w[1], wl[1], &lines)) return bad(s, "-ERR Invalid number of lines", act);
    if (!pick(s, w[0], wl[0], &i, &ok)) return ok;
    return send_msg(s, i, lines > LLONG_MAX ? LLONG_MAX : (long long)lines, act);
}

static int c_dele(struct pop3_session *s, const char *a, size_t l, enum pop3_action *act)
{
    const char *w[2];
    size_t wl[2], i;
    int ok;
    if (words(a, l, w, wl) != 1) return bad(s, "-ERR Syntax: DELE msg", act);
    if (!pick(s, w[0], wl[0], &i, &ok)) return ok;
    s->md->msg[i].deleted = 1;
    return say(s, "+OK Marked to be deleted.");
}

static int c_rset(struct pop3_session *s, const char *a, size_t l, enum pop3_action *act)
{
    for (size_t i = 0; i < s->md->n; i++) s->md->msg[i].deleted = 0;
    return say(s, "+OK");
}

static int c_http(struct pop3_session *s, const char *a, size_t l, enum pop3_action *act)
{
    *act = POP3_CLOSE;
    s->state = POP3_DONE;
    return say(s, "-ERR This is a POP3 server");
}

/* noargs: RFC 1939 3, "Servers MUST respond to an ... syntactically
 * invalid command with a negative status indicator" (trailing spaces are
 * let pass) */
static const struct pop3_cmd pop3_cmds[] = {
    { "CAPA", ST_AUTH | ST_TRANS, 1, c_capa },
    { "STLS", ST_AUTH, 1, c_stls },
    { "USER", ST_AUTH, 0, c_user },
    { "PASS", ST_AUTH, 0, c_pass },
    { "AUTH", ST_AUTH, 0, c_auth },
    { "QUIT", ST_AUTH | ST_TRANS, 1, c_quit },
    { "NOOP", ST_TRANS, 1, c_noop },
    { "STAT", ST_TRANS, 1, c_stat },
    { "LIST", ST_TRANS, 0, c_list },
    { "UIDL", ST_TRANS, 0, c_uidl },
    { "RETR", ST_TRANS, 0, c_retr },
    { "TOP", ST_TRANS, 0, c_top },
    { "DELE", ST_TRANS, 0, c_dele },
    { "RSET", ST_TRANS, 1, c_rset },
    { "GET", ST_AUTH | ST_TRANS, 0, c_http },
    { "POST", ST_AUTH | ST_TRANS, 0, c_http },
    { "HEAD", ST_AUTH | ST_TRANS, 0, c_http },
    { "PUT", ST_AUTH | ST_TRANS, 0, c_http },
    { "CONNECT", ST_AUTH | ST_TRANS, 0, c_http },
    { "OPTIONS", ST_AUTH | ST_TRANS, 0, c_http },
};

/* RFC 2449's 255 octets for a command line, with CRLF; but PASS may carry
 * a whole password and AUTH an initial response as long as a response
 * line (the caller's buffer bounds it): clients send them whatever their
 * length, and a password postern-user took would otherwise not get in */
static size_t line_limit(const char *line, size_t len)
{
    if (len >= 5 && !strncasecmp(line, "PASS ", 5)) return 5 + POP3_PASS_MAX + 2;
    if (len >= 5 && !strncasecmp(line, "AUTH ", 5)) return POP3_SASL_LINE_MAX;
    return POP3_LINE_MAX;
}

int pop3_line(struct pop3_session *s, const char *line, size_t len, enum pop3_line_end end,
              enum pop3_action *act)
{
    int truncated = end == POP3_LINE_LONG;
    *act = POP3_CONTINUE;
    if (s->state == POP3_DONE) { *act = POP3_CLOSE; return 1; }
    /* "CAPA\rQUIT": one line to a client (and to Dovecot), so neither
     * command is run (as smtp-listener refuses a bare CR) */
    if (end == POP3_LINE_BARE_CR) {
        if (s->state == POP3_AUTH_PLAIN) s->state = POP3_AUTHORIZATION;
        return bad(s, "-ERR Bare CR in command line", act);
    }
    if (s->state == POP3_AUTH_PLAIN) {
        if (truncated) { s->state = POP3_AUTHORIZATION; return bad(s, "-ERR Response too long", act); }
        if (len == 1 && line[0] == '*') { s->state = POP3_AUTHORIZATION; return say(s, "-ERR Authentication cancelled"); }
        return auth_plain(s, line, len, act);
    }
    if (truncated || len > line_limit(line, len) - 2) return bad(s, "-ERR Command line too long", act);
    if (memchr(line, 0, len)) return bad(s, "-ERR Unknown command", act);
    size_t kl = 0;
    while (kl < len && line[kl] != ' ') kl++;
    const char *arg = kl < len ? line + kl + 1 : line + len;
    size_t al = kl < len ? len - kl - 1 : 0;
    for (size_t i = 0; i < ARRAY_LEN(pop3_cmds); i++) {
        const struct pop3_cmd *c = &pop3_cmds[i];
        if (strlen(c->name) != kl || strncasecmp(c->name, line, kl)) continue;
        if (!(c->states & (1u << s->state))) return bad(s, "-ERR Command not valid in this state", act);
        if (c->fn != c_pass) {   /* the password is taken verbatim; others lose edge spaces */
            while (al && arg[al - 1] == ' ') al--;
        }
        if (c->noargs && al) {
            char m[64];
            snprintf(m, sizeof m, "-ERR Syntax: %s (no arguments)", c->name);
            return bad(s, m, act);
        }
        return c->fn(s, arg, al, act);
    }
    return bad(s, "-ERR Unknown command", act);
}

int pop3_login_result(struct pop3_session *s, enum pop3_login r)
{
    pop3_wipe(s);
    s->state = POP3_AUTHORIZATION;
    if (r == POP3_LOGIN_OK) return 1;
    s->have_user = 0;
    if (r == POP3_LOGIN_BAD) {
        if (++s->login_failures >= POP3_LOGIN_FAILURES_MAX) s->state = POP3_DONE;
        return say(s, "-ERR [AUTH] Invalid user name or password.");
    }
    return say(s, "-ERR [SYS/TEMP] Authentication service unavailable, try again later.");
}

static void put16(char *p, size_t v) { p[0] = (char)(v >> 8); p[1] = (char)(v & 0xff); }
static size_t get16(const char *p) { return ((size_t)(unsigned char)p[0] << 8) | (unsigned char)p[1]; }

int pop3_mon_request_format(const char *user, size_t userlen, const char *pass, size_t passlen,
                            const void *left, size_t leftlen, char *dst, size_t cap, size_t *len)
{
    if (userlen > POP3_USER_MAX || passlen > POP3_PASS_MAX || leftlen > POP3_MON_LEFT_MAX) { errno = EINVAL; return 0; }
    size_t n = 7 + userlen + passlen + leftlen;
    if (n > cap) { errno = EMSGSIZE; return 0; }
    dst[0] = 'L';
    put16(dst + 1, userlen);
    put16(dst + 3, passlen);
    put16(dst + 5, leftlen);
    memcpy(dst + 7, user, userlen);
    memcpy(dst + 7 + userlen, pass, passlen);
    if (leftlen) memcpy(dst + 7 + userlen + passlen, left, leftlen);
    *len = n;
    return 1;
}

int pop3_mon_request_parse(const char *rec, size_t len, struct pop3_mon_request *r)
{
    memset(r, 0, sizeof *r);
    if (len < 7 || rec[0] != 'L') { errno = EPROTO; return 0; }
    r->userlen = get16(rec + 1);
    r->passlen = get16(rec + 3);
    r->leftlen = get16(rec + 5);
    if (r->userlen > POP3_USER_MAX || r->passlen > POP3_PASS_MAX || r->leftlen > POP3_MON_LEFT_MAX ||
        7 + r->userlen + r->passlen + r->leftlen != len) {
        memset(r, 0, sizeof *r);
        errno = EPROTO;
        return 0;
    }
    memcpy(r->user, rec + 7, r->userlen);
    memcpy(r->pass, rec + 7 + r->userlen, r->passlen);
    memcpy(r->left, rec + 7 + r->userlen + r->passlen, r->leftlen);
    return 1;
}
