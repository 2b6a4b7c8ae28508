/* smtp_session.c - the SMTP server state machine: one state, one table. */
#include "smtp_session.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "err.h"
#include "listen.h"
#include "log.h"
#include "mailhdr.h"
#include "sasl.h"
#include "smtp_body.h"
#include "utf8.h"
#include "smtp_net.h"
#include "tls_spawn.h"

/* an action returns 1 to read the next command, 0 to end the session */
typedef int smtp_action(struct smtp_session *s, const char *arg, size_t len);
/* a check returns NULL if the command may run now, else the reply */
typedef const char *smtp_check(const struct smtp_session *s);

struct smtp_cmd {
    const char *verb;
    smtp_check *check;
    smtp_action *action;
    int junk;            /* moves no mail: counted towards SMTP_JUNK_MAX */
};

#define ENV_RECORD_MAX 1024

static const char R_HELO_FIRST[] = "503 5.5.1 Error: send HELO/EHLO first";
static const char R_NEED_MAIL[] = "503 5.5.1 Error: need MAIL command";
static const char R_NEED_RCPT[] = "503 5.5.1 Error: need RCPT command";
static const char R_NO_RCPT_OK[] = "503 5.5.1 Error: no valid recipients";
static const char R_NESTED[] = "503 5.5.1 Error: nested MAIL command";
static const char R_IN_BDAT[] = "503 5.5.1 Error: BDAT in progress, send BDAT or RSET";
static const char R_IN_TXN[] = "503 5.5.1 Error: MAIL transaction in progress";
static const char R_NOT_IMPL[] = "502 5.5.1 Command not implemented";
static const char R_QUEUE_FAIL[] = "451 4.3.0 Error: queue file write error";
static const char R_NEED_TLS[] = "530 5.7.0 Must issue a STARTTLS command first";
static const char R_NEED_AUTH[] = "530 5.7.0 Authentication required";

/* ---- replies and logging ---- */

/* a 4xx/5xx line counts as one of the client's errors (max_errors) unless
 * !is_error: a refusal that is no fault of the client's */
static void reply_counted(struct smtp_session *s, const char *line, int is_error)
{
    if (line[0] == '4' || line[0] == '5') {
        char code[4] = { line[0], line[1], line[2], 0 };
        char status[16] = "";
        const char *sp = strchr(line, ' ');
        if (sp && sp[1] >= '2' && sp[1] <= '5' && sp[2] == '.') {
            size_t k = strcspn(sp + 1, " ");
            if (k < sizeof status) { memcpy(status, sp + 1, k); status[k] = 0; }
        }
        if (is_error) { s->errors++; s->errors_run++; }
        if (line[0] == '5' || strncmp(line, "421", 3)) s->rejected++;
        log_info(s->id, "event=reject cmd=%s code=%s status=%s%s%s", s->verb, code,
                 status[0] ? status : "-", s->logarg[0] ? " arg=" : "", s->logarg);
    }
    if (!io_puts(&s->out, line) || !io_put(&s->out, "\r\n", 2)) s->write_failed = 1;
}

static void reply(struct smtp_session *s, const char *line) { reply_counted(s, line, 1); }

static void replyf(struct smtp_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void replyf(struct smtp_session *s, const char *fmt, ...)
{
    char line[SMTP_CMD_MAX + 128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    reply(s, line);
}

static void set_logarg(struct smtp_session *s, const char *p, size_t n)
{
    log_safe(s->logarg, sizeof s->logarg, p, n);
}

/* ---- the transaction ---- */

static void txn_abort_bdat(struct smtp_session *s)
{
    if (!s->body) return;
    /* closing the envelope socket unended aborts queue-inject (exit 55) */
    close(s->msg_fd);
    close(s->env_fd);
    int st;
    s->inj->finish(s->inj->ctx, &st);
    free(s->body);
    s->body = NULL;
    s->msg_fd = s->env_fd = -1;
}

static void txn_reset(struct smtp_session *s)
{
    txn_abort_bdat(s);
    memset(&s->sender, 0, sizeof s->sender);
    memset(&s->mp, 0, sizeof s->mp);
    s->nrcpt = 0;
    s->rcpt_overshoot = 0;
    s->rcpt_tried = 0;
    s->bdat_total = 0;
    s->state = s->helo[0] ? SMTP_S_READY : SMTP_S_START;
}

/* ---- checks ---- */

static const char *chk_none(const struct smtp_session *s) { (void)s; return NULL; }

static const char *chk_nobdat(const struct smtp_session *s)
{
    return s->state == SMTP_S_BDAT ? R_IN_BDAT : NULL;
}

static const char *chk_mail(const struct smtp_session *s)
{
    switch (s->state) {
    case SMTP_S_START: return R_HELO_FIRST;
    case SMTP_S_READY: return NULL;
    case SMTP_S_BDAT: return R_IN_BDAT;
    default: return R_NESTED;
    }
}

static const char *chk_rcpt(const struct smtp_session *s)
{
    switch (s->state) {
    case SMTP_S_MAIL: case SMTP_S_RCPT: return NULL;
    case SMTP_S_BDAT: return R_IN_BDAT;
    default: return R_NEED_MAIL;
    }
}

/* MAIL given, no RCPT taken: none sent, or every one refused (RFC 5321
 * 4.1.4 lets the reply be 503 either way; the text says which) */
static const char *no_rcpt(const struct smtp_session *s)
{
    return s->rcpt_tried ? R_NO_RCPT_OK : R_NEED_RCPT;
}

static const char *chk_data(const struct smtp_session *s)
{
    switch (s->state) {
    case SMTP_S_RCPT: return NULL;
    case SMTP_S_MAIL: return no_rcpt(s);
    case SMTP_S_BDAT: return R_IN_BDAT;
    default: return R_NEED_MAIL;
    }
}

static const char *chk_notxn(const struct smtp_session *s)
{
    if (s->state == SMTP_S_START) return R_HELO_FIRST;
    if (s->state != SMTP_S_READY) return R_IN_TXN;
    return NULL;
}

/* ---- HELO / EHLO ---- */

/* The EHLO name as Received: shows it: a token (RFC 5322 3.6.7), any
 * other octet '?'; "[", "]" and ":" only in a whole address literal ("["
 * first, "]" last and nowhere else, not cut short), so that "x:y" or
 * "[1.2.3.4" cannot break the field's syntax (RFC 5321 4.4) */
static void helo_store(struct smtp_session *s, const char *arg, size_t len)
{
    size_t o = 0;
    int literal = len >= 2 && len < sizeof s->helo && arg[0] == '[' && arg[len - 1] == ']' &&
                  !memchr(arg + 1, '[', len - 2) && !memchr(arg + 1, ']', len - 2);
    for (size_t i = 0; i < len && o + 1 < sizeof s->helo; i++) {
        unsigned char c = (unsigned char)arg[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '.' || c == '-' || c == '_' || (literal && (c == '[' || c == ']' || c == ':'));
        s->helo[o++] = ok ? (char)c : '?';
    }
    s->helo[o] = 0;
}

static int hello(struct smtp_session *s, const char *arg, size_t len, int esmtp)
{
    if (!len) {
        reply(s, esmtp ? "501 5.5.4 Syntax: EHLO hostname" : "501 5.5.4 Syntax: HELO hostname");
        return 1;
    }
    helo_store(s, arg, len);
    s->esmtp = esmtp;
    txn_reset(s);
    s->state = SMTP_S_READY;
    log_info(s->id, "event=helo verb=%s helo=%s", esmtp ? "EHLO" : "HELO", s->helo);
    if (!esmtp) { replyf(s, "250 %s", s->cf->hostname); return 1; }
    replyf(s, "250-%s", s->cf->hostname);
    reply(s, "250-PIPELINING");
    replyf(s, "250-SIZE %llu", s->cf->max_message_size);
    reply(s, "250-ETRN");
    reply(s, "250-ENHANCEDSTATUSCODES");
    reply(s, "250-8BITMIME");
    reply(s, "250-DSN");
    reply(s, "250-SMTPUTF8");
    reply(s, "250-CHUNKING");
    if (!s->tls && s->inj->starttls) reply(s, "250-STARTTLS");
    if (s->submission && s->tls && s->inj->auth) reply(s, "250-AUTH PLAIN LOGIN");
    reply(s, "250 HELP");
    return 1;
}

static int act_helo(struct smtp_session *s, const char *a, size_t n) { return hello(s, a, n, 0); }
static int act_ehlo(struct smtp_session *s, const char *a, size_t n) { return hello(s, a, n, 1); }

/* ---- MAIL / RCPT ---- */

/* "FROM:" / "TO:" then the rest; 0 if the keyword is missing */
static int keyword(const char *arg, size_t len, const char *kw, size_t *skip)
{
    size_t k = strlen(kw);
    if (len < k || strncasecmp(arg, kw, k)) return 0;
    *skip = k;
    return 1;
}

/* an authenticated user may send as user[+detail]@<any local domain>, or <> */
static int sender_owned(const struct smtp_session *s, const struct smtp_path *p)
{
    char user[SMTP_LOCAL_MAX + 1];
    if (p->is_null) return 1;
    if (p->literal || !p->domain_len || !config_is_local_domain(s->cf, p->domain, p->domain_len))
        return 0;
    if (!smtp_path_local_user(p, user, sizeof user)) return 0;
    return !strcasecmp(user, s->auth_user);
}

static int act_mail(struct smtp_session *s, const char *arg, size_t len)
{
    size_t skip, used;
    const char *why;
    struct smtp_path p;
    struct smtp_mail_params mp;
    set_logarg(s, arg, len);
    if (s->submission && !s->tls) { reply(s, R_NEED_TLS); return 1; }
    if (s->submission && !s->auth_user[0]) { reply(s, R_NEED_AUTH); return 1; }
    if (!keyword(arg, len, "FROM:", &skip)) { reply(s, "501 5.5.4 Syntax: MAIL FROM:<address>"); return 1; }
    if (!smtp_path_parse(arg + skip, len - skip, 0, &p, &used, &why)) { reply(s, why); return 1; }
    if (s->auth_user[0] && !sender_owned(s, &p)) {
        set_logarg(s, p.addr, p.addr_len);
        replyf(s, "553 5.7.1 <%s>: Sender address rejected: not owned by user %s", p.addr, s->auth_user);
        return 1;
    }
    skip += used;
    if (!smtp_mail_params_parse(arg + skip, len - skip, &mp, &why)) { reply(s, why); return 1; }
    if (mp.has_size && mp.size > s->cf->max_message_size) {
        reply(s, "552 5.3.4 Message size exceeds fixed limit");
        return 1;
    }
    if (p.utf8 && !mp.smtputf8) {
        /* RFC 6531 3.5: a sender that needs SMTPUTF8 gets 550 (RCPT 553) */
        reply(s, "550 5.6.7 Error: SMTPUTF8 is required for this address");
        return 1;
    }
    set_logarg(s, p.addr, p.addr_len);
    s->sender = p;
    s->mp = mp;
    s->nrcpt = 0;
    s->state = SMTP_S_MAIL;
    log_info(s->id, "event=mail from=%s size=%llu", p.is_null ? "<>" : s->logarg, mp.has_size ? mp.size : 0ULL);
    reply(s, "250 2.1.0 Ok");
    return 1;
}

static int rcpt_store(struct smtp_session *s, const char *addr, const struct smtp_rcpt_params *rp)
{
    if (s->nrcpt == s->rcpt_cap) {
        size_t cap = s->rcpt_cap ? s->rcpt_cap * 2 : 8;
        struct smtp_rcpt *v = realloc(s->rcpt, cap * sizeof *v);
        if (!v) return 0;
        s->rcpt = v;
        s->rcpt_cap = cap;
    }
    struct smtp_rcpt *r = &s->rcpt[s->nrcpt];
    snprintf(r->addr, sizeof r->addr, "%s", addr);
    snprintf(r->orcpt, sizeof r->orcpt, "%s", rp->orcpt);
    r->notify = rp->notify;
    s->nrcpt++;
    return 1;
}

/* the whole local part, lower-cased, is a name of the map: an alias whose
 * name holds a '+' (postern-aliases(5)), which local-deliverer finds before
 * it cuts a "+detail" (as Postfix looks up "list+x" before "list") */
static int rcpt_whole_known(const struct smtp_rcptmap *m, const struct smtp_path *p)
{
    char low[SMTP_RCPTMAP_NAME_MAX + 1];
    if (p->local_len > SMTP_RCPTMAP_NAME_MAX || !memchr(p->local, '+', p->local_len)) return 0;
    memcpy(low, p->local, p->local_len);
    low[p->local_len] = 0;
    smtp_lower(low);
    return smtp_rcptmap_has(m, low);
}

static int act_rcpt(struct smtp_session *s, const char *arg, size_t len)
{
    size_t skip, used;
    const char *why;
    struct smtp_path p;
    struct smtp_rcpt_params rp;
    char addr[SMTP_PATH_MAX + 1];
    set_logarg(s, arg, len);
    s->rcpt_tried++;
    if (!keyword(arg, len, "TO:", &skip)) { reply(s, "501 5.5.4 Syntax: RCPT TO:<address>"); return 1; }
    if (!smtp_path_parse(arg + skip, len - skip, 1, &p, &used, &why)) { reply(s, why); return 1; }
    skip += used;
    if (!smtp_rcpt_params_parse(arg + skip, len - skip, &rp, &why)) { reply(s, why); return 1; }
    set_logarg(s, p.addr, p.addr_len);
    if (p.utf8 && !s->mp.smtputf8) {
        reply(s, "553 5.6.7 Error: SMTPUTF8 is required for this address");
        return 1;
    }
    if (s->nrcpt >= s->cf->max_recipients) {
        /* RFC 5321 4.5.3.1.10: the client is to send these recipients in a
         * later transaction, after DATA for the ones taken; not its error,
         * or a long recipient list would end the session (max_errors) and
         * lose the transaction. Only a flood past SMTP_RCPT_OVERSHOOT_MIN,
         * or as many again where that is more, counts. */
        unsigned long long allowed = s->cf->max_recipients > SMTP_RCPT_OVERSHOOT_MIN ? s->cf->max_recipients
                                                                                       : SMTP_RCPT_OVERSHOOT_MIN;
        reply_counted(s, "452 4.5.3 Too many recipients", s->rcpt_overshoot++ >= allowed);
        return 1;
    }
    snprintf(addr, sizeof addr, "%s", p.addr);
    if (p.domain_len == 0) {
        /* "<postmaster>" without a domain (RFC 5321 4.5.1): ours */
        size_t h = strlen(s->cf->hostname);
        if (h + 11 < sizeof addr) {
            memcpy(addr, "postmaster@", 11);
            memcpy(addr + 11, s->cf->hostname, h + 1);
        }
    } else if (p.literal ? smtp_net_literal_is(p.domain, p.domain_len, (const struct sockaddr *)&s->local)
                         : config_is_local_domain(s->cf, p.domain, p.domain_len)) {
        char user[SMTP_LOCAL_MAX + 1];
        if (!smtp_path_local_user(&p, user, sizeof user) ||
            (!smtp_rcptmap_has(s->map, user) && !rcpt_whole_known(s->map, &p))) {
            replyf(s, "550 5.1.1 <%s>: Recipient address rejected: User unknown", p.addr);
            return 1;
        }
        /* our own address literal (RFC 1123 5.2.17: it must be accepted)
         * is delivered as user@hostname, a name queue-manager knows as local */
        if (p.literal && snprintf(addr, sizeof addr, "%s@%s", p.local, s->cf->hostname) >= (int)sizeof addr) {
            replyf(s, "501 5.1.3 <%s>: Recipient address too long", p.addr);
            return 1;
        }
        /* ours, so its case means nothing (our lookups ignore it): queued
         * lower-cased, <Bob@Example.Test> and <bob@example.test> in one
         * transaction are one recipient and one copy, as with Postfix */
        smtp_lower(addr);
    } else if (!s->relay_ok && !s->auth_user[0]) {
        replyf(s, "554 5.7.1 <%s>: Relay access denied", p.addr);
        return 1;
    }
    /* a recipient queued under another name (<postmaster>, our own address
     * literal) keeps the one the client gave as its original recipient for
     * DSNs (RFC 3461 4.2), unless the client gave an ORCPT itself; a name
     * only lower-cased is the same name */
    if (!rp.orcpt[0] && strcasecmp(addr, p.addr)) {
        memcpy(rp.orcpt, "rfc822;", 7);
        if (!smtp_xtext(p.addr, rp.orcpt + 7, sizeof rp.orcpt - 7)) rp.orcpt[0] = 0;
    }
    if (!rcpt_store(s, addr, &rp)) { reply(s, "452 4.3.0 Error: out of memory"); return 1; }
    s->state = SMTP_S_RCPT;
    log_info(s->id, "event=rcpt to=%s", s->logarg);
    reply(s, "250 2.1.5 Ok");
    return 1;
}

/* ---- injection ---- */

const char *smtp_with_proto(int esmtp, int utf8, int tls, int auth)
{
    static const char *const names[2][4] = {
        { "ESMTP", "ESMTPA", "ESMTPS", "ESMTPSA" },
        { "UTF8SMTP", "UTF8SMTPA", "UTF8SMTPS", "UTF8SMTPSA" },
    };
    if (!esmtp && !utf8) return "SMTP";    /* HELO: no extensions, no AUTH */
    return names[utf8 ? 1 : 0][(tls ? 2 : 0) + (auth ? 1 : 0)];
}

int smtp_tls_line(const char *line, size_t len, char *version, size_t vlen,
                  char *cipher, size_t clen)
{
    return tls_proxy_line(line, len, version, vlen, cipher, clen);
}

int smtp_received(char *dst, size_t dstlen, const char *helo, const char *client,
                  const char *hostname, const char *proto, const char *id,
                  const char *rcpt, const char *tls, long long now)
{
    char using[160] = "";
    if (tls && *tls) snprintf(using, sizeof using, "\n\t(using %s)", tls);
    char date[64];
    if (!mailhdr_date_utc((time_t)now, date, sizeof date))
        snprintf(date, sizeof date, "Thu, 01 Jan 1970 00:00:00 +0000");
    /* an address literal (RFC 5321 4.4 TCP-info, 4.1.3): "[IPv6:...]" for IPv6 */
    const char *v6 = strchr(client, ':') ? "IPv6:" : "";
    int n;
    if (rcpt)
        n = snprintf(dst, dstlen, "Received: from %s ([%s%s])%s\n\tby %s (postern) with %s id %s\n\tfor <%s>; %s",
                     helo, v6, client, using, hostname, proto, id, rcpt, date);
    else
        n = snprintf(dst, dstlen, "Received: from %s ([%s%s])%s\n\tby %s (postern) with %s id %s;\n\t%s",
                     helo, v6, client, using, hostname, proto, id, date);
    if (n < 0 || (size_t)n >= dstlen) { errno = ENOSPC; return 0; }
    return 1;
}

const char *smtp_inject_reply(int status)
{
    switch (status) {
    case 0: return "";
    case 53: return "452 4.3.1 Insufficient system storage";
    case 31: return "554 5.5.0 Error: malformed envelope";
    default: return R_QUEUE_FAIL;
    }
}

static int printable(const char *p)
{
    for (; *p; p++) if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e) return 0;
    return 1;
}

/* one envelope record; v must hold no CR, LF (except H) or NUL */
static int env_rec(struct buf *b, char type, const char *v)
{
    size_t n = strlen(v);
    if (n + 1 > ENV_RECORD_MAX) { errno = EINVAL; return 0; }
    for (size_t i = 0; i < n; i++)
        if (v[i] == '\r' || (v[i] == '\n' && type != 'H')) { errno = EINVAL; return 0; }
    return buf_appendc(b, type) && buf_append(b, v, n) && buf_appendc(b, 0);
}

static void notify_text(char *dst, size_t dstlen, unsigned notify)
{
    dst[0] = 0;
    if (notify & SMTP_NOTIFY_NEVER) { snprintf(dst, dstlen, "NEVER"); return; }
    static const struct { unsigned bit; const char *name; } names[] = {
        { SMTP_NOTIFY_SUCCESS, "SUCCESS" }, { SMTP_NOTIFY_FAILURE, "FAILURE" }, { SMTP_NOTIFY_DELAY, "DELAY" },
    };
    size_t o = 0;
    for (size_t i = 0; i < ARRAY_LEN(names); i++) {
        if (!(notify & names[i].bit)) continue;
        int k = snprintf(dst + o, dstlen - o, "%s%s", o ? "," : "", names[i].name);
        if (k < 0 || (size_t)k >= dstlen - o) return;
        o += (size_t)k;
    }
}

/* A submission (an authenticated client on 587/465, or a local user's
 * sendmail -bs) gets the Date:, Message-ID: and From: fields its message
 * lacks, as RFC 6409 8 lets an MSA add them (and sendmail does): mail
 * without them is refused or marked as spam by large receivers. The
 * Message-ID is the Received: id at the hostname; From is the sender.
 * Mail on port 25 is left as it came (RFC 5321 6.4). */
static void submission_fields(const struct smtp_session *s, struct smtp_msgbody *b)
{
    char d[48], date[64], msgid[SMTP_BODY_ADD_MAX], from[SMTP_BODY_ADD_MAX];
    if (!((s->submission && s->auth_user[0]) || s->local_submission)) return;
    if (!mailhdr_date_utc(time(NULL), d, sizeof d)) return;
    snprintf(date, sizeof date, "Date: %s", d);
    int k = snprintf(msgid, sizeof msgid, "Message-ID: <%s-%lu@%s>", s->id, s->msg_seq, s->cf->hostname);
    int f = snprintf(from, sizeof from, "From: <%s>", s->sender.addr);
    if (!smtp_body_add_missing(b, date, k > 0 && (size_t)k < sizeof msgid ? msgid : NULL,
                               !s->sender.is_null && f > 0 && (size_t)f < sizeof from ? from : NULL))
        log_warn(s->id, "event=add_missing error=%s", strerror(errno));
}

static int envelope_build(struct smtp_session *s, struct buf *b)
{
    char rec[ENV_RECORD_MAX], msgid[48], tls[128] = "";
    const char *proto = smtp_with_proto(s->esmtp, s->mp.smtputf8, s->tls, s->auth_user[0] != 0);
    if (s->tls) snprintf(tls, sizeof tls, "%s with cipher %s", s->tls_version, s->tls_cipher);
    const char *for_rcpt = (s->nrcpt == 1 && printable(s->rcpt[0].addr)) ? s->rcpt[0].addr : NULL;
    /* session id and message number: an Atom (RFC 5321 4.4), so no "." */
    snprintf(msgid, sizeof msgid, "%s-%lu", s->id, s->msg_seq);
    if (!env_rec(b, 'F', s->sender.is_null ? "" : s->sender.addr)) return 0;
    /* the whole EHLO name (255 octets), the hostname and a long recipient
     * can outgrow one record: then the field goes without its "for" clause */
    if ((smtp_received(rec, sizeof rec, s->helo, s->client, s->cf->hostname, proto, msgid,
                       for_rcpt, tls, (long long)time(NULL))
         || smtp_received(rec, sizeof rec, s->helo, s->client, s->cf->hostname, proto, msgid,
                          NULL, tls, (long long)time(NULL)))
        && !env_rec(b, 'H', rec))
        return 0;
    if (s->mp.envid[0] && !env_rec(b, 'E', s->mp.envid)) return 0;
    if (s->mp.ret && !env_rec(b, 'N', s->mp.ret == SMTP_RET_HDRS ? "HDRS" : "FULL")) return 0;
    if (s->mp.body && !env_rec(b, 'B', s->mp.body == SMTP_BODY_8BITMIME ? "8BITMIME" : "7BIT")) return 0;
    if (s->mp.smtputf8 && !env_rec(b, 'U', "")) return 0;
    snprintf(rec, sizeof rec, "%s %s", s->submission ? "submission" : "smtp", s->client);
    if (!env_rec(b, 'C', rec)) return 0;
    for (size_t i = 0; i < s->nrcpt; i++) {
        char notify[40];
        const struct smtp_rcpt *r = &s->rcpt[i];
        notify_text(notify, sizeof notify, r->notify);
        if (strchr(r->addr, '\t') || strchr(r->orcpt, '\t')) { errno = EINVAL; return 0; }
        int k = snprintf(rec, sizeof rec, "%s\t%s\t%s", r->addr, notify, r->orcpt);
        if (k < 0 || (size_t)k >= sizeof rec) { errno = EINVAL; return 0; }
        if (!env_rec(b, 'T', rec)) return 0;
    }
    return buf_appendc(b, 0);
}

/* "<ID>\n" from queue-inject after its commit */
static void read_queue_id(int fd, char *id, size_t idlen, int timeout_ms)
{
    size_t n = 0;
    id[0] = 0;
    while (n + 1 < idlen) {
        struct pollfd pf = { .fd = fd, .events = POLLIN, .revents = 0 };
        int r = poll(&pf, 1, timeout_ms);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        ssize_t k = read(fd, id + n, idlen - 1 - n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) break;
        n += (size_t)k;
        if (memchr(id, '\n', n)) break;
    }
    id[n] = 0;
    id[strcspn(id, "\n")] = 0;
    for (size_t i = 0; id[i]; i++)
        if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'A' && id[i] <= 'F'))) { id[0] = 0; break; }
}

static int inject_begin(struct smtp_session *s, int *msg_w, int *env_s)
{
    int p[2], e[2];
    if (pipe2(p, O_CLOEXEC) < 0) return 0;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, e) < 0) {
        close(p[0]); close(p[1]);
        return 0;
    }
    int ok = s->inj->start(s->inj->ctx, p[0], e[1]);
    int saved = errno;
    close(p[0]);
    close(e[1]);
    if (!ok) {
        close(p[1]); close(e[0]);
        errno = saved;
        return 0;
    }
    fcntl(p[1], F_SETFL, O_NONBLOCK);   /* every wait bounded by the timeout */
    fcntl(e[0], F_SETFL, O_NONBLOCK);
    *msg_w = p[1];
    *env_s = e[0];
    s->msg_seq++;
    return 1;
}

/* The message has been read to its end: decide, commit or abort, reply,
 * and end the transaction. Takes ownership of msg_fd and env_fd. */
static void message_end(struct smtp_session *s, struct smtp_msgbody *b, int msg_fd, int env_fd)
{
    const char *refuse = NULL;
    int sent = smtp_body_finish(b);
    if (b->too_big) refuse = "552 5.3.4 Message size exceeds fixed limit";
    else if (b->hops > s->cf->max_received) refuse = "554 5.4.6 Too many hops";
    else if (b->bare_cr) refuse = "550 5.5.2 Error: bare <CR> in message data";
    close(msg_fd);
    int st = -1;
    char qid[64] = "";
    if (refuse || !sent) {
        close(env_fd);                    /* unended envelope: queue-inject aborts */
        s->inj->finish(s->inj->ctx, &st);
        if (!refuse) refuse = smtp_inject_reply(st == 0 ? -1 : st);
    } else {
        struct buf env = BUF_ZERO;
        int ok = envelope_build(s, &env) && fd_write_all(env_fd, env.s, env.len, s->out.timeout_ms);
        buf_free(&env);
        if (ok) {
            shutdown(env_fd, SHUT_WR);
            read_queue_id(env_fd, qid, sizeof qid, s->out.timeout_ms);
        }
        close(env_fd);
        if (!s->inj->finish(s->inj->ctx, &st)) st = -1;
        if (!ok && st == 0) st = -1;   /* cannot happen: an unended envelope is never committed */
        refuse = st == 0 ? NULL : smtp_inject_reply(st);
    }
    s->logarg[0] = 0;
    if (refuse) {
        reply(s, refuse);
        log_info(s->id, "event=refused size=%llu hops=%lu bare_cr=%d inject=%d", b->size, b->hops, b->bare_cr, st);
    } else {
        s->messages++;
        /* a client that gets its mail through is not the one max_errors
         * is for: a relay's long-lived connection with an unknown
         * recipient now and then is not cut off (Postfix forgives its
         * errors after each message as well) */
        s->errors_run = 0;
        s->junk = 0;
        log_info(s->id, "event=queued id=%s size=%llu rcpts=%zu%s%s%s", qid[0] ? qid : "?", b->size, s->nrcpt,
                 b->msgid[0] ? " msgid=" : "", b->msgid, b->bare_lf ? " bare_lf=1" : "");
        if (qid[0]) replyf(s, "250 2.0.0 Ok: queued as %s", qid);
        else reply(s, "250 2.0.0 Ok: queued");
    }
    s->state = SMTP_S_READY;
    txn_reset(s);
}

static int read_failed(struct smtp_session *s)
{
    if (errno == ETIMEDOUT) {
        replyf(s, "421 4.4.2 %s Error: timeout exceeded", s->cf->hostname);
        s->end_reason = "timeout";
    } else {
        s->end_reason = "lost_connection";
    }
    s->state = SMTP_S_QUIT;
    return 0;
}

static int act_data(struct smtp_session *s, const char *arg, size_t len)
{
    int msg_fd, env_fd;
    if (len) { reply(s, "501 5.5.4 Syntax: DATA"); return 1; }
    struct smtp_msgbody *b = malloc(sizeof *b);
    if (!b || !inject_begin(s, &msg_fd, &env_fd)) {
        log_error(s->id, "event=inject_start error=\"%s\"", strerror(errno));
        free(b);
        reply(s, R_QUEUE_FAIL);
        txn_reset(s);
        return 1;
    }
    reply(s, "354 End data with <CR><LF>.<CR><LF>");
    if (!io_flush(&s->out)) { s->end_reason = "write_error"; free(b); goto lost; }
    smtp_body_init(b, msg_fd, s->cf->max_message_size, s->out.timeout_ms);
    submission_fields(s, b);
    char line[SMTP_TEXT_MAX];
    /* End of data is CRLF . CRLF (RFC 5321 4.1.1.4), and a "." line after
     * a bare LF, or ended by one, is data: a server behind us or ahead of
     * us that took it for the end would see a second, smuggled message
     * (CVE-2023-51764). A bare LF inside the data is otherwise a line end,
     * as Postfix's "normalize" has it. The one exception is a client that
     * ended DATA itself with a bare LF (nc, a hand-typed session): its
     * "." line ends the data however it ends, since only that client's
     * own command lines, never a message's content, can put it in that
     * mode. */
    int bol = 1, prev_crlf = 1, lf_client = s->cmd_eol == IO_EOL_LF;
    io_quickack(&s->in, 1);          /* bulk input, nothing sent back (io.h) */
    for (;;) {
        size_t n;
        enum io_eol eol;
        int got = io_getline(&s->in, line, sizeof line, &n, &eol);
        if (!got || (eol == IO_EOL_NONE && n < sizeof line)) {
            if (got) errno = EPIPE;             /* end of input inside a line */
            io_quickack(&s->in, 0);
            free(b);
            close(msg_fd); close(env_fd);
            int st;
            s->inj->finish(s->inj->ctx, &st);
            return read_failed(s);
        }
        const char *p = line;
        if (bol && n && p[0] == '.') {
            if (n == 1 && ((eol == IO_EOL_CRLF && prev_crlf) ||
                           (lf_client && (eol == IO_EOL_LF || eol == IO_EOL_CRLF))))
                break;                                   /* CRLF . CRLF */
            if (n > 1) { p++; n--; }                     /* a lone "." that ends nothing stays */
        }
        smtp_body_line(b, p, n, eol);
        bol = eol == IO_EOL_CRLF || eol == IO_EOL_LF;
        prev_crlf = eol == IO_EOL_CRLF;
    }
    io_quickack(&s->in, 0);
    message_end(s, b, msg_fd, env_fd);
    free(b);
    return 1;
lost:
    close(msg_fd); close(env_fd);
    { int st; s->inj->finish(s->inj->ctx, &st); }
    s->state = SMTP_S_QUIT;
    return 0;
}

/* ---- BDAT (RFC 3030) ---- */

/* read count octets of a chunk, to b (if any) or nowhere */
static int bdat_read(struct smtp_session *s, unsigned long long count, struct smtp_msgbody *b)
{
    char chunk[4096];
    io_quickack(&s->in, 1);          /* bulk input, nothing sent back (io.h) */
    while (count) {
        size_t want = count < sizeof chunk ? (size_t)count : sizeof chunk;
        /* each 4 KiB within the timeout: a dribbled chunk is dropped */
        if (!io_read_full(&s->in, chunk, want)) { io_quickack(&s->in, 0); return 0; }
        if (b) smtp_body_octets(b, chunk, want);
        count -= want;
    }
    io_quickack(&s->in, 0);
    return 1;
}

static int act_bdat(struct smtp_session *s, const char *arg, size_t len)
{
    static const char R_BDAT_SYNTAX[] = "501 5.5.4 Syntax: BDAT count [LAST]";
    unsigned long long count;
    size_t k = 0;
    int last = 0;
    while (k < len && arg[k] != ' ' && arg[k] != '\t') k++;   /* blanks as dispatch() has them */
    if (!k || !smtp_parse_ull(arg, k, ULLONG_MAX, &count)) {
        /* a chunk of unknown size may follow: its octets cannot be told
         * from commands, and reading them as commands is how a front end
         * that counted differently would smuggle some past it. The
         * session ends here (so does Postfix's). */
        reply(s, R_BDAT_SYNTAX);
        s->end_reason = "bad_bdat_count";
        s->state = SMTP_S_QUIT;
        return 0;
    }
    while (k < len && (arg[k] == ' ' || arg[k] == '\t')) k++;
    if (k < len) {
        if (len - k == 4 && !strncasecmp(arg + k, "LAST", 4)) {
            last = 1;
        } else {
            /* the count is known, so its octets follow: they are the
             * chunk, never commands (RFC 3030 2). A transaction missing a
             * chunk cannot be committed: it ends here. */
            if (!bdat_read(s, count, NULL)) return read_failed(s);
            if (s->state == SMTP_S_BDAT) txn_reset(s);
            reply(s, R_BDAT_SYNTAX);
            return 1;
        }
    }
    const char *seq = s->state == SMTP_S_START ? R_HELO_FIRST :
                      s->state == SMTP_S_READY ? R_NEED_MAIL :
                      s->state == SMTP_S_MAIL ? no_rcpt(s) : NULL;
    if (seq) {
        if (!bdat_read(s, count, NULL)) return read_failed(s);
        reply(s, seq);
        return 1;
    }
    if (s->state == SMTP_S_RCPT) {
        int msg_fd, env_fd;
        struct smtp_msgbody *b = malloc(sizeof *b);
        if (!b || !inject_begin(s, &msg_fd, &env_fd)) {
            log_error(s->id, "event=inject_start error=\"%s\"", strerror(errno));
            free(b);
            if (!bdat_read(s, count, NULL)) return read_failed(s);
            reply(s, R_QUEUE_FAIL);
            txn_reset(s);
            return 1;
        }
        s->body = b;
        smtp_body_init(s->body, msg_fd, s->cf->max_message_size, s->out.timeout_ms);
        submission_fields(s, s->body);
        s->msg_fd = msg_fd;
        s->env_fd = env_fd;
        s->state = SMTP_S_BDAT;
    }
    if (!bdat_read(s, count, s->body)) {
        txn_abort_bdat(s);
        return read_failed(s);
    }
    s->bdat_total += count;
    if (last) {
        struct smtp_msgbody *b = s->body;
        int msg_fd = s->msg_fd, env_fd = s->env_fd;
        s->body = NULL;
        s->msg_fd = s->env_fd = -1;
        message_end(s, b, msg_fd, env_fd);
        free(b);
        return 1;
    }
    if (s->body->too_big) {
        txn_reset(s);
        reply(s, "552 5.3.4 Message size exceeds fixed limit");
        return 1;
    }
    replyf(s, "250 2.0.0 Ok: %llu octets received", count);
    return 1;
}

/* ---- the rest ---- */

static int act_rset(struct smtp_session *s, const char *a, size_t n)
{
    if (n) { reply(s, "501 5.5.4 Syntax: RSET"); return 1; }   /* RFC 5321 4.1.1.5: no argument */
    txn_reset(s);
    reply(s, "250 2.0.0 Ok");
    return 1;
}

static int act_noop(struct smtp_session *s, const char *a, size_t n) { reply(s, "250 2.0.0 Ok"); return 1; }

static int act_quit(struct smtp_session *s, const char *a, size_t n)
{
    replyf(s, "221 2.0.0 %s closing connection", s->cf->hostname);
    s->end_reason = "quit";
    s->state = SMTP_S_QUIT;
    return 1;
}

static int act_help(struct smtp_session *s, const char *a, size_t n)
{
    reply(s, "214-2.0.0 Commands supported:");
    reply(s, "214-2.0.0   HELO EHLO MAIL RCPT DATA BDAT RSET");
    /* STARTTLS when EHLO offers it; AUTH on the submission ports only */
    replyf(s, "214 2.0.0   NOOP QUIT HELP VRFY ETRN%s%s",
           !s->tls && s->inj->starttls ? " STARTTLS" : "",
           s->submission && s->inj->auth ? " AUTH" : "");
    return 1;
}

static int act_vrfy(struct smtp_session *s, const char *a, size_t n)
{
    if (!n) reply(s, "501 5.5.4 Syntax: VRFY address");
    else reply(s, "252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery");
    return 1;
}

static int act_expn(struct smtp_session *s, const char *a, size_t n) { reply(s, "502 5.5.1 EXPN not available"); return 1; }

/* RFC 1985: "ETRN" SP ["@" / "#"] name; 1 if a[0..n) is such a node name */
static int etrn_node_valid(const char *a, size_t n)
{
    size_t start = (n && (a[0] == '@' || a[0] == '#')) ? 1 : 0;
    if (start == n || n > 255 || a[start] == '.' || a[n - 1] == '.') return 0;
    for (size_t i = start; i < n; i++) {
        unsigned char c = (unsigned char)a[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '-' || c == '_'))
            return 0;
    }
    return 1;
}

static int act_etrn(struct smtp_session *s, const char *a, size_t n)
{
    if (!n || !etrn_node_valid(a, n)) { reply(s, "501 5.5.4 Syntax: ETRN domain"); return 1; }
    set_logarg(s, a, n);
    if (a[0] == '#') {        /* named queues (RFC 1985 "#queue") are not kept */
        replyf(s, "458 4.3.0 Unable to queue messages for node %s", s->logarg);
        return 1;
    }
    const char *dom = a[0] == '@' ? a + 1 : a;
    size_t dl = a[0] == '@' ? n - 1 : n;
    if (config_is_local_domain(s->cf, dom, dl)) {
        replyf(s, "459 4.3.0 Node %s not allowed: mail for a local domain is delivered, not held", s->logarg);
        return 1;
    }
    if (!s->inj->trigger || !s->inj->trigger(s->inj->ctx)) {
        reply(s, "458 4.0.0 Unable to queue messages");
        return 1;
    }
    log_info(s->id, "event=etrn arg=%s", s->logarg);
    reply(s, "250 2.0.0 Queuing started");
    return 1;
}

static int act_notimpl(struct smtp_session *s, const char *a, size_t n) { reply(s, R_NOT_IMPL); return 1; }

/* ---- STARTTLS (RFC 3207) ---- */

/* switch the session to fd (a fresh connection: nothing buffered) */
static void session_use_fd(struct smtp_session *s, int fd)
{
    fd_nonblock(fd);
    io_init(&s->in, fd, s->inbuf, sizeof s->inbuf, s->in.timeout_ms);
    io_init(&s->out, fd, s->outbuf, sizeof s->outbuf, s->out.timeout_ms);
    s->in.flush_first = &s->out;
}

/* tls-proxy's first line; 0 (end_reason set) if the handshake failed */
static int tls_established(struct smtp_session *s)
{
    char line[256];
    size_t n;
    enum io_eol eol;
    if (!io_getline(&s->in, line, sizeof line, &n, &eol) || eol != IO_EOL_LF ||
        !smtp_tls_line(line, n, s->tls_version, sizeof s->tls_version, s->tls_cipher, sizeof s->tls_cipher)) {
        s->end_reason = "tls_handshake_failed";
        s->state = SMTP_S_QUIT;
        log_info(s->id, "event=tls status=failed");
        return 0;
    }
    s->tls = 1;
    s->tls_pending = 0;
    log_info(s->id, "event=tls version=%s cipher=%s", s->tls_version, s->tls_cipher);
    return 1;
}

static int act_starttls(struct smtp_session *s, const char *a, size_t n)
{
    int plain;
    if (n) { reply(s, "501 5.5.4 Syntax error (no parameters allowed)"); return 1; }
    if (s->tls) { reply(s, "554 5.5.1 Error: TLS already active"); return 1; }
    if (!s->inj->starttls) { reply(s, "454 4.7.0 TLS not available due to local problem"); return 1; }
    reply(s, "220 2.0.0 Ready to start TLS");
    if (!io_flush(&s->out)) { s->end_reason = "write_error"; s->state = SMTP_S_QUIT; return 0; }
    /* everything the client sent before the handshake is discarded (RFC 3207
     * 6, CVE-2011-0411): what we buffered here, and what is still in the
     * kernel goes to tls-proxy as (bad) handshake data */
    io_discard_buffered(&s->in);
    if (!s->inj->starttls(s->inj->ctx, s->in.fd, s->id, &plain)) {
        log_error(s->id, "event=tls status=unavailable error=\"%s\"", strerror(errno));
        s->end_reason = "tls_unavailable";
        s->state = SMTP_S_QUIT;
        return 0;
    }
    close(s->in.fd);
    session_use_fd(s, plain);
    if (!tls_established(s)) return 0;
    /* RFC 3207 4.2: forget everything learnt before, EHLO again */
    s->helo[0] = 0;
    s->esmtp = 0;
    txn_reset(s);
    s->state = SMTP_S_START;
    return 1;
}

/* ---- AUTH (RFC 4954: PLAIN, LOGIN) ---- */

static const char R_AUTH_FAILED[] = "535 5.7.8 Error: authentication failed";
/* RFC 4954 4: a line longer than the server takes fails the exchange with 500 5.5.6 */
static const char R_AUTH_TOO_LONG[] = "500 5.5.6 Error: authentication exchange line is too long";

/* a client response line: 1 and line[0..*n), 0 on a read error, -1 when it
 * was too long (answered) */
static int auth_response(struct smtp_session *s, const char *prompt, char *line, size_t cap, size_t *n)
{
    enum io_eol eol;
    reply(s, prompt);
    if (!io_flush(&s->out)) { s->end_reason = "write_error"; s->state = SMTP_S_QUIT; return 0; }
    if (!io_getline(&s->in, line, cap, n, &eol)) { read_failed(s); return 0; }
    if (eol == IO_EOL_NONE) {
        if (*n < cap) { errno = EPIPE; read_failed(s); return 0; }
        if (!io_skipline(&s->in, SMTP_DISCARD_MAX)) { read_failed(s); return 0; }
        reply(s, R_AUTH_TOO_LONG);
        return -1;
    }
    if (eol == IO_EOL_CR) {
        reply(s, "500 5.5.2 Error: bare <CR> received");
        return -1;
    }
    return 1;
}

static int auth_cancelled(struct smtp_session *s, const char *line, size_t n)
{
    if (n == 1 && line[0] == '*') { reply(s, "501 5.0.0 Error: authentication aborted"); return 1; }
    return 0;
}

static int sasl_refuse(struct smtp_session *s, enum sasl_result r)
{
    switch (r) {
    case SASL_OK: return 0;
    case SASL_AUTHZID: reply(s, "535 5.7.8 Error: authentication failed: authorization identity not allowed"); break;
    case SASL_TOO_LONG: reply(s, R_AUTH_TOO_LONG); break;
    case SASL_BAD_FORMAT: reply(s, "501 5.5.2 Error: invalid authentication response"); break;
    default: reply(s, "501 5.5.2 Error: cannot decode response"); break;
    }
    return 1;
}

static void auth_check(struct smtp_session *s, struct sasl_cred *c, const char *mech)
{
    char name[sizeof s->auth_user];
    log_safe(s->logarg, sizeof s->logarg, c->user, c->userlen);
    int r = s->inj->auth(s->inj->ctx, c->user, c->userlen, c->pass, c->passlen, name, sizeof name);
    sasl_wipe(c);
    if (r == SMTP_AUTH_OK) {
        snprintf(s->auth_user, sizeof s->auth_user, "%s", name);
        log_info(s->id, "event=auth status=ok mech=%s user=%s", mech, name);
        reply(s, "235 2.7.0 Authentication successful");
        return;
    }
    s->auth_failures++;
    log_info(s->id, "event=auth status=%s mech=%s user=%s", r == SMTP_AUTH_BAD ? "bad" : "temp", mech, s->logarg);
    if (r == SMTP_AUTH_BAD) reply(s, R_AUTH_FAILED);
    else reply(s, "454 4.7.0 Temporary authentication failure");
}

/* AUTH's exchange: line (cap octets) holds the client's responses */
static int auth_exchange(struct smtp_session *s, const char *a, size_t n, char *line, size_t cap)
{
    static struct sasl_cred c;      /* not on the stack: wiped after use */
    size_t k = 0, rn;
    int got;
    if (!s->submission || !s->inj->auth) { reply(s, "503 5.5.1 Error: authentication not enabled"); return 1; }
    if (!s->tls) { reply(s, R_NEED_TLS); return 1; }
    if (s->auth_user[0]) { reply(s, "503 5.5.1 Error: already authenticated"); return 1; }
    while (k < n && a[k] != ' ') k++;
    const char *ir = k < n ? a + k + 1 : NULL;
    size_t irlen = ir ? n - k - 1 : 0;
    while (ir && irlen && *ir == ' ') { ir++; irlen--; }
    if (ir && !irlen) ir = NULL;
    if (!k) { reply(s, "501 5.5.4 Syntax: AUTH mechanism"); return 1; }
    if (k == 5 && !strncasecmp(a, "PLAIN", 5)) {
        const char *resp = ir;
        size_t rl = irlen;
        if (!resp) {
            got = auth_response(s, "334 ", line, cap - 1, &rn);
            if (got <= 0) return got == 0 ? 0 : 1;
            resp = line;
            rl = rn;
        }
        if (auth_cancelled(s, resp, rl)) return 1;
        if (rl == 1 && resp[0] == '=') rl = 0;
        if (sasl_refuse(s, sasl_plain(resp, rl, &c))) { sasl_wipe(&c); return 1; }
        auth_check(s, &c, "PLAIN");
        return 1;
    }
    if (k == 5 && !strncasecmp(a, "LOGIN", 5)) {
        enum sasl_result r;
        if (ir) {
            if (auth_cancelled(s, ir, irlen)) return 1;
            r = sasl_login_field(ir, irlen, c.user, sizeof c.user, &c.userlen);
        } else {
            got = auth_response(s, "334 VXNlcm5hbWU6", line, cap - 1, &rn);
            if (got <= 0) return got == 0 ? 0 : 1;
            if (auth_cancelled(s, line, rn)) return 1;
            r = sasl_login_field(line, rn, c.user, sizeof c.user, &c.userlen);
        }
        if (sasl_refuse(s, r)) { sasl_wipe(&c); return 1; }
        got = auth_response(s, "334 UGFzc3dvcmQ6", line, cap - 1, &rn);
        if (got <= 0) { sasl_wipe(&c); return got == 0 ? 0 : 1; }
        if (auth_cancelled(s, line, rn)) { sasl_wipe(&c); return 1; }
        r = sasl_login_field(line, rn, c.pass, sizeof c.pass, &c.passlen);
        if (sasl_refuse(s, r)) { sasl_wipe(&c); return 1; }
        auth_check(s, &c, "LOGIN");
        return 1;
    }
    reply(s, "504 5.5.4 Error: unsupported authentication mechanism");
    return 1;
}

/* the client's base64 responses are wiped on every way out (a memset of a
 * dead array before return would be left out by the compiler); the command
 * line with an initial response and the input buffer they passed through
 * are the run loop's, wiped there (dispatch sets wipe_input) */
static int act_auth(struct smtp_session *s, const char *a, size_t n)
{
    char line[SASL_LINE_MAX + 1];
    int r = auth_exchange(s, a, n, line, sizeof line);
    explicit_bzero(line, sizeof line);
    return r;
}

static const struct smtp_cmd smtp_cmds[] = {
    { "HELO", chk_none, act_helo, 0 },
    { "EHLO", chk_none, act_ehlo, 0 },
    { "MAIL", chk_mail, act_mail, 0 },
    { "RCPT", chk_rcpt, act_rcpt, 0 },
    { "DATA", chk_data, act_data, 0 },
    { "BDAT", chk_none, act_bdat, 0 },      /* checks itself: it must read its chunk first */
    { "RSET", chk_none, act_rset, 1 },
    { "NOOP", chk_none, act_noop, 1 },
    { "QUIT", chk_none, act_quit, 0 },
    { "HELP", chk_none, act_help, 1 },
    /* RFC 5321 4.1.4: NOOP, HELP, EXPN, VRFY and RSET at any time, a
     * BDAT transaction's chunks included, never a 503 */
    { "VRFY", chk_none, act_vrfy, 1 },
    { "EXPN", chk_none, act_expn, 1 },
    { "ETRN", chk_notxn, act_etrn, 1 },
    { "STARTTLS", chk_notxn, act_starttls, 0 },
    { "AUTH", chk_notxn, act_auth, 0 },
    /* named in the operators' guides, deliberately not offered */
    { "TURN", chk_nobdat, act_notimpl, 0 },
    { "ATRN", chk_nobdat, act_notimpl, 0 },
    { "SAML", chk_nobdat, act_notimpl, 0 },
    { "SEND", chk_nobdat, act_notimpl, 0 },
    { "SOML", chk_nobdat, act_notimpl, 0 },
    { "BURL", chk_nobdat, act_notimpl, 0 },
    { "ONEX", chk_nobdat, act_notimpl, 0 },
    { "VERB", chk_nobdat, act_notimpl, 0 },
    { "SUBMITTER", chk_nobdat, act_notimpl, 0 },
    { "XEXCH50", chk_nobdat, act_notimpl, 0 },
};

/* what browsers and proxies send: answered once, then the connection closes */
static const char *const smtp_forbidden[] = {
    "GET", "POST", "HEAD", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
};

/* ---- the loop ---- */

enum cmdline { CL_OK, CL_TOO_LONG, CL_BARE_CR };

/* The longest a command line may be, with its CRLF: 512 (RFC 5321
 * 4.5.3.1.4), more for MAIL and RCPT by what the extensions we offer add:
 * RFC 3461 (DSN) 100 to MAIL and 500 to RCPT, RFC 1870 (SIZE) 26, RFC 4954
 * (AUTH=) 500 and RFC 6531 (SMTPUTF8) 10 to MAIL. AUTH may carry an initial
 * response as long as a SASL response line: clients send one whatever its
 * length, and a long password would otherwise not get through. */
_Static_assert(SMTP_AUTH_LINE_MAX == 11 + SASL_LINE_MAX + 2, "AUTH line: room for a whole response line");

static size_t line_limit(const char *line, size_t n)
{
    if (n >= 5 && !strncasecmp(line, "MAIL", 4) && (line[4] == ' ' || line[4] == '\t')) return SMTP_MAIL_LINE_MAX;
    if (n >= 5 && !strncasecmp(line, "RCPT", 4) && (line[4] == ' ' || line[4] == '\t')) return SMTP_RCPT_LINE_MAX;
    if (n >= 5 && !strncasecmp(line, "AUTH", 4) && (line[4] == ' ' || line[4] == '\t')) return SMTP_AUTH_LINE_MAX;
    return SMTP_CMD_MAX;
}

static volatile sig_atomic_t stop_asked;
static sigset_t stop_wait_mask;

static void on_stop(int sig)
{
    (void)sig;
    stop_asked = 1;
}

int smtp_session_stop_on(struct smtp_session *s, int sig)
{
    struct sigaction sa;
    sigset_t block;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigemptyset(&sa.sa_mask);
    sigemptyset(&block);
    sigaddset(&block, sig);
    if (sigprocmask(SIG_BLOCK, &block, &stop_wait_mask) < 0) return 0;
    sigdelset(&stop_wait_mask, sig);
    if (sigaction(sig, &sa, NULL) < 0) return 0;
    s->stop_mask = &stop_wait_mask;
    return 1;
}

/* Nothing buffered: wait for the client's next command, the one wait the
 * stop signal may end (0 with ECANCELED; smtp_session_stop_on) */
static int wait_command(struct smtp_session *s)
{
    if (stop_asked) { errno = ECANCELED; return 0; }
    s->in.wait_mask = s->stop_mask;
    int r = io_fill(&s->in);
    s->in.wait_mask = NULL;
    if (!r && errno == EINTR && stop_asked) errno = ECANCELED;
    return r;
}

/* Read one command line into line[0..*len). 1 with *kind, or 0 (errno:
 * EPIPE end of input, ETIMEDOUT, E2BIG an endless line). */
static int read_command(struct smtp_session *s, char *line, size_t *len, enum cmdline *kind)
{
    const size_t max = SMTP_LINE_READ_MAX - 2;   /* the longest any command may be */
    char scratch[512];
    size_t n = 0, got, discarded = 0, crs = 0;
    enum io_eol eol;
    int toolong = 0, bare = 0;
    long long start = io_now_ms();
    for (;;) {
        if (!toolong) {
            if (!io_getline(&s->in, line + n, max - n, &got, &eol)) return 0;
            n += got;
        } else {
            if (!io_getline(&s->in, scratch, sizeof scratch, &got, &eol)) return 0;
            discarded += got;
        }
        if (eol == IO_EOL_CRLF || eol == IO_EOL_LF) { s->cmd_eol = eol; break; }
        if (eol == IO_EOL_CR) { bare = 1; crs++; }
        /* each io_getline above has a deadline of its own: the line as a
         * whole, bare CRs (which store nothing) included, is bounded here,
         * in octets and in time */
        if (n + discarded + crs > SMTP_DISCARD_MAX) { errno = E2BIG; return 0; }
        if (s->in.timeout_ms >= 0 && io_now_ms() - start > s->in.timeout_ms) { errno = ETIMEDOUT; return 0; }
        if (eol == IO_EOL_CR) continue;
        if (!toolong && n == max) { toolong = 1; continue; }
        if (toolong && got == sizeof scratch) continue;
        errno = EPIPE;                      /* end of input inside a line */
        return 0;
    }
    *len = n;
    if (!toolong && n + 2 > line_limit(line, n)) toolong = 1;
    *kind = toolong ? CL_TOO_LONG : bare ? CL_BARE_CR : CL_OK;
    return 1;
}

static int dispatch(struct smtp_session *s, const char *line, size_t n)
{
    char verb[16];
    size_t v = 0, a;
    s->verb = "-";
    s->logarg[0] = 0;
    if (memchr(line, 0, n)) { reply(s, "500 5.5.2 Error: NUL character in command"); return 1; }
    if (!utf8_valid(line, n)) { reply(s, "500 5.5.2 Error: bad UTF-8 syntax"); return 1; }
    while (v < n && line[v] != ' ' && line[v] != '\t') v++;
    a = v;
    while (a < n && (line[a] == ' ' || line[a] == '\t')) a++;
    while (n > a && (line[n - 1] == ' ' || line[n - 1] == '\t')) n--;
    if (!v) { reply(s, "500 5.5.2 Error: bad syntax"); return 1; }
    if (v >= 2 && line[v - 1] == ':') {
        /* "Subject: ...", "Host: ...": a header line sent as a command means
         * a confused or hostile client (HTTP, or a message sent without
         * DATA): nothing it sends next is to be executed */
        s->verb = "header";
        reply(s, "554 5.7.0 Error: header line instead of an SMTP command");
        s->end_reason = "header_line";
        s->state = SMTP_S_QUIT;
        return 0;
    }
    if (v >= sizeof verb) { reply(s, "500 5.5.2 Error: command not recognized"); return 1; }
    for (size_t i = 0; i < v; i++) {
        unsigned char c = (unsigned char)line[i];
        verb[i] = (char)((c >= 'a' && c <= 'z') ? c - 32 : c);
    }
    verb[v] = 0;
    for (size_t i = 0; i < ARRAY_LEN(smtp_forbidden); i++)
        if (!strcmp(verb, smtp_forbidden[i])) {
            s->verb = smtp_forbidden[i];
            reply(s, "554 5.7.0 Error: HTTP or proxy request on an SMTP port");
            s->end_reason = "http_request";
            s->state = SMTP_S_QUIT;
            return 0;
        }
    for (size_t i = 0; i < ARRAY_LEN(smtp_cmds); i++) {
        const struct smtp_cmd *c = &smtp_cmds[i];
        if (strcmp(verb, c->verb)) continue;
        s->verb = c->verb;
        /* an AUTH line may hold credentials even when it is refused
         * (in a transaction, before STARTTLS): wiped after it either way */
        if (c->action == act_auth) s->wipe_input = 1;
        if (c->junk && ++s->junk > SMTP_JUNK_MAX) { s->errors++; s->errors_run++; }
        const char *refuse = c->check(s);
        if (refuse) { reply(s, refuse); return 1; }
        return c->action(s, line + a, n - a);
    }
    reply(s, "500 5.5.2 Error: command not recognized");
    return 1;
}

void smtp_session_make_id(char *dst, size_t dstlen)
{
    snprintf(dst, dstlen, "%08llx%06x", (unsigned long long)time(NULL), (unsigned)getpid() & 0xffffffu);
}

void smtp_session_init(struct smtp_session *s, const struct config *cf,
                       const struct smtp_rcptmap *map, const struct smtp_injector *inj,
                       int fd, const struct sockaddr *peer, int port, const char *id)
{
    memset(s, 0, sizeof *s);
    s->cf = cf;
    s->map = map;
    s->inj = inj;
    s->state = SMTP_S_START;
    s->first = 1;
    s->port = port == SMTP_PORT_SMTPS ? SMTP_PORT_SMTPS : port ? SMTP_PORT_SUBMISSION : SMTP_PORT_SMTP;
    s->submission = s->port != SMTP_PORT_SMTP;
    s->tls_pending = s->port == SMTP_PORT_SMTPS;
    s->msg_fd = s->env_fd = -1;
    s->end_reason = "lost_connection";
    s->verb = "-";
    /* non-blocking, so that every write waits at most the timeout too: a
     * client that sends but never reads cannot hold the session forever */
    fd_nonblock(fd);
    int ms = cf->session_timeout > INT_MAX / 1000 ? INT_MAX : (int)(cf->session_timeout * 1000);
    io_init(&s->in, fd, s->inbuf, sizeof s->inbuf, ms);
    io_init(&s->out, fd, s->outbuf, sizeof s->outbuf, ms);
    /* RFC 2920 3.2: the replies pending go out whenever the input runs
     * dry, inside a command line or a BDAT chunk too */
    s->in.flush_first = &s->out;
    sockaddr_text(peer, s->client, sizeof s->client);
    s->relay_ok = smtp_net_match(&cf->relay_networks, peer);
    if (id && *id) snprintf(s->id, sizeof s->id, "%s", id);
    else smtp_session_make_id(s->id, sizeof s->id);
    log_info(s->id, "event=connect client=%s port=%u submission=%d tls=%d relay=%d", s->client,
             sockaddr_port(peer), s->submission, s->tls_pending, s->relay_ok);
}

void smtp_session_set_local(struct smtp_session *s, const struct sockaddr *local, socklen_t len)
{
    memset(&s->local, 0, sizeof s->local);
    if (len <= sizeof s->local) memcpy(&s->local, local, len);
    else s->local.ss_family = AF_UNSPEC;
}

/* first octet 0x16: a TLS ClientHello on the plaintext port */
static int tls_hello_seen(struct smtp_session *s)
{
    if (!io_buffered(&s->in) && !io_fill(&s->in)) return -1;
    return s->in.b[s->in.pos] == 0x16;
}

/* after AUTH: its command line and every byte of the input buffer but
 * those not read yet (pipelined commands) */
static void wipe_input(struct smtp_session *s, char *line, size_t cap)
{
    if (!s->wipe_input) return;
    s->wipe_input = 0;
    explicit_bzero(line, cap);
    io_wipe_spent(&s->in);
}

int smtp_session_run(struct smtp_session *s)
{
    char line[SMTP_LINE_READ_MAX];
    signal(SIGPIPE, SIG_IGN);
    if (s->tls_pending && !tls_established(s)) s->first = 0;
    else replyf(s, "220 %s ESMTP postern", s->cf->hostname);
    while (s->state != SMTP_S_QUIT) {
        size_t n;
        enum cmdline kind;
        if (!io_buffered(&s->in)) {
            if (!io_flush(&s->out)) { s->end_reason = "write_error"; break; }
            if (!wait_command(s)) {
                if (errno == ECANCELED) {
                    s->verb = "-";
                    replyf(s, "421 4.3.2 %s Service shutting down, closing transmission channel",
                           s->cf->hostname);
                    s->end_reason = "shutdown";
                } else {
                    read_failed(s);
                }
                break;
            }
        }
        if (s->first) {
            s->first = 0;
            int t = tls_hello_seen(s);
            if (t < 0) { read_failed(s); break; }
            if (t) {
                reply(s, "554 5.7.0 Error: TLS handshake on a plaintext port");
                s->end_reason = "tls_on_plaintext_port";
                break;
            }
        }
        if (!read_command(s, line, &n, &kind)) {
            if (errno == E2BIG) {
                replyf(s, "421 4.7.0 %s Error: line too long", s->cf->hostname);
                s->end_reason = "endless_line";
                break;
            }
            read_failed(s);
            break;
        }
        s->commands++;
        s->verb = "-";
        s->logarg[0] = 0;
        int more = 1;
        if (kind == CL_TOO_LONG) reply(s, "500 5.5.2 Error: line too long");
        else if (kind == CL_BARE_CR) reply(s, "500 5.5.2 Error: bare <CR> received");
        else more = dispatch(s, line, n);
        wipe_input(s, line, sizeof line);
        if (!more) break;
        if (s->write_failed) {
            /* a client that does not read its replies (their buffer full
             * for a whole timeout) gets no more of our time */
            s->end_reason = "write_error";
            break;
        }
        if (s->state != SMTP_S_QUIT && s->errors_run >= s->cf->max_errors) {
            replyf(s, "421 4.7.0 %s Error: too many errors", s->cf->hostname);
            s->end_reason = "too_many_errors";
            break;
        }
    }
    io_flush(&s->out);
    txn_abort_bdat(s);
    log_info(s->id, "event=disconnect reason=%s commands=%lu messages=%lu rejected=%lu errors=%lu",
             s->end_reason, s->commands, s->messages, s->rejected, s->errors);
    s->state = SMTP_S_QUIT;
    return !strcmp(s->end_reason, "quit");
}

void smtp_session_free(struct smtp_session *s)
{
    txn_abort_bdat(s);
    free(s->rcpt);
    s->rcpt = NULL;
    s->nrcpt = s->rcpt_cap = 0;
}
