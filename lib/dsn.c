/* dsn.c - compose RFC 3464 delivery status notifications. Uses only the
 * struct definitions of envelope.h, none of envelope.c's functions. */
#include "dsn.h"
#include "mailhdr.h"
#include "smtp_addr.h"
#include "utf8.h"

#include <errno.h>
#include <string.h>
#include <strings.h>

#define HOST_MAX 255
#define VALUE_MAX 900        /* one header value: keeps lines under 998 octets */
#define BOUNDARY_MAX 128

static int has_8bit(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] >= 0x80) return 1;
    return 0;
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* Append s[0..n) as a safe header value: optionally xtext-decoded first,
 * control characters and invalid 8-bit octets (and, unless utf8, every
 * 8-bit octet) become '?', at most max octets, never cutting a character. */
static int append_clean(struct buf *b, const char *s, size_t n, size_t max, int xtext, int utf8)
{
    unsigned char tmp[4 * VALUE_MAX];
    size_t t = 0;
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n && t < sizeof tmp; i++) {
        int h1, h2;
        if (xtext && u[i] == '+' && i + 2 < n && (h1 = hexval(u[i + 1])) >= 0 && (h2 = hexval(u[i + 2])) >= 0) {
            tmp[t++] = (unsigned char)(h1 * 16 + h2);
            i += 2;
        } else {
            tmp[t++] = u[i];
        }
    }
    size_t start = b->len;
    for (size_t i = 0; i < t;) {
        unsigned char c = tmp[i];
        size_t k = 1;
        int keep = 1;
        if (c >= 0x80) {
            k = utf8_char(tmp + i, t - i);
            if (!k) { k = 1; keep = 0; }
            else if (!utf8) keep = 0;
        } else if (c < 0x20 || c == 0x7f) {
            keep = 0;
        }
        if (b->len - start + (keep ? k : 1) > max) break;
        if (!(keep ? buf_append(b, tmp + i, k) : buf_appendc(b, '?'))) return 0;
        i += k;
    }
    return 1;
}

/* the queue id, letters and digits only (it goes into a boundary and a Message-ID) */
static int append_id(struct buf *b, const char *id)
{
    size_t n = 0;
    for (size_t i = 0; id[i] && i < ENV_ID_LEN; i++) {
        char ch = id[i];
        if ((ch >= '0' && ch <= '9') || (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z')) {
            if (!buf_appendc(b, ch)) return 0;
            n++;
        }
    }
    return n ? 1 : buf_appendc(b, '0');
}

static int appends_clean(struct buf *b, const char *s, size_t max, int xtext, int utf8)
{
    return append_clean(b, s, strnlen(s, 4 * VALUE_MAX), max, xtext, utf8);
}

/* RFC 5322 date in UTC, locale-independent */
static int append_date(struct buf *b, time_t t)
{
    char date[64];
    return mailhdr_date_utc(t, date, sizeof date) && buf_appends(b, date);
}

/* "d.ddd.ddd" with class 2, 4 or 5 */
static int status_valid(const char *s)
{
    if (!s || (s[0] != '2' && s[0] != '4' && s[0] != '5') || s[1] != '.') return 0;
    size_t i = 2;
    for (int part = 0; part < 2; part++) {
        size_t d = 0;
        while (s[i] >= '0' && s[i] <= '9' && d < 3) { i++; d++; }
        if (!d) return 0;
        if (part == 0 && s[i++] != '.') return 0;
    }
    return s[i] == 0;
}

static int str_8bit(const char *s) { return has_8bit(s, strnlen(s, 4 * VALUE_MAX)); }

/* the original header section: up to and including the LF before the first
 * empty line (the whole message if it has none), at most DSN_HEADERS_MAX
 * octets, cut after a whole line */
static size_t header_section(const char *msg, size_t len)
{
    size_t n = len;
    if (len && msg[0] == '\n') return 0;
    for (size_t i = 0; i + 1 < len; i++)
        if (msg[i] == '\n' && msg[i + 1] == '\n') { n = i + 1; break; }
    if (n > DSN_HEADERS_MAX) {
        n = DSN_HEADERS_MAX;
        while (n && msg[n - 1] != '\n') n--;
    }
    return n;
}

/* s[0..n) is a msg-id (RFC 5322 3.6.4): "<" dot-atom-text "@"
 * (dot-atom-text / "[" *dtext "]") ">" */
static int msg_id_ok(const char *s, size_t n)
{
    if (n < 5 || s[0] != '<' || s[n - 1] != '>') return 0;
    const char *at = memchr(s, '@', n);
    if (!at) return 0;
    size_t left = (size_t)(at - s) - 1, rs = (size_t)(at - s) + 1, rn = n - 1 - rs;
    if (!smtp_dot_atom(s + 1, left)) return 0;
    if (rn >= 2 && s[rs] == '[' && s[rs + rn - 1] == ']') {
        for (size_t i = rs + 1; i < rs + rn - 1; i++) {
            unsigned char c = (unsigned char)s[i];
            if (c < 33 || c > 126 || c == '[' || c == ']' || c == '\\') return 0;
        }
        return 1;
    }
    return smtp_dot_atom(s + rs, rn);
}

/* the original's Message-ID, if it is a msg-id alone on one line */
static int find_message_id(const char *h, size_t n, const char **id, size_t *idlen)
{
    static const char name[] = "message-id:";
    for (size_t i = 0; i < n; i++) {
        if ((i == 0 || h[i - 1] == '\n') && n - i > sizeof name - 1 && !strncasecmp(h + i, name, sizeof name - 1)) {
            size_t a = i + sizeof name - 1, z;
            while (a < n && (h[a] == ' ' || h[a] == '\t')) a++;
            for (z = a; z < n && h[z] != '\n'; z++) ;
            while (z > a && (h[z - 1] == ' ' || h[z - 1] == '\t' || h[z - 1] == '\r')) z--;
            if (z - a < 3 || z - a > 250 || h[a] != '<' || h[z - 1] != '>') return 0;
            if (!msg_id_ok(h + a, z - a)) return 0;
            *id = h + a;
            *idlen = z - a;
            return 1;
        }
    }
    return 0;
}

struct dsn_ctx {
    enum dsn_kind kind;
    const struct envelope *e;
    const struct dsn_item *items;
    size_t nitems;
    char host[HOST_MAX + 1];
    int global;        /* non-ASCII addresses: RFC 6533 types */
    int full;          /* return the whole message */
};

static const char *action_word(enum dsn_kind k)
{
    return k == DSN_FAILURE ? "failed" : k == DSN_DELAY ? "delayed" : "delivered";
}

/* RFC 3464 2.3.3: a success report's item may be "relayed" or "expanded" */
static const char *item_action(enum dsn_kind k, const struct dsn_item *it)
{
    if (k == DSN_SUCCESS && it->action && (!strcmp(it->action, "relayed") || !strcmp(it->action, "expanded")))
        return it->action;
    return action_word(k);
}

static const char *default_status(enum dsn_kind k)
{
    return k == DSN_FAILURE ? "5.0.0" : k == DSN_DELAY ? "4.0.0" : "2.0.0";
}

/* an SMTP reply ("NNN text" or "NNN") starts at r */
static int is_reply(const char *r)
{
    return r[0] >= '2' && r[0] <= '5' && r[1] >= '0' && r[1] <= '9' && r[2] >= '0' && r[2] <= '9'
           && (r[3] == ' ' || r[3] == '\0');
}

/* remote-deliverer's "host H said: NNN text": *host and *hostlen the name (or
 * "[literal]") of H, returns "NNN text"; else NULL */
static const char *remote_said(const char *d, const char **host, size_t *hostlen)
{
    size_t n = strnlen(d, 4 * VALUE_MAX);
    const char *said = n > 5 && !strncmp(d, "host ", 5) ? memmem(d + 5, n - 5, " said: ", 7) : NULL;
    if (!said || said == d + 5) return NULL;
    const char *r = said + 7;
    if (!is_reply(r)) return NULL;
    *host = d + 5;
    const char *br = memchr(*host, '[', (size_t)(said - *host));
    const char *end = !br ? said : br > *host ? br : memchr(br, ']', (size_t)(said - br));
    if (!end) end = said;
    else if (end != said && *end == ']') end++;
    *hostlen = (size_t)(end - *host);
    return r;
}

static int append_addr_typed(struct buf *b, const char *addr, int global)
{
    int u8 = str_8bit(addr);
    if (!buf_appends(b, u8 && global ? "utf-8; " : "rfc822; ")) return 0;
    return appends_clean(b, addr, ENV_ADDR_MAX, 0, global);
}

static int compose_text(const struct dsn_ctx *c, struct buf *b, size_t msglen, size_t full_limit)
{
    static const char *const intro[] = {
        [DSN_FAILURE] = "Your message could not be delivered to the recipients listed below.\n"
                        "The mail system has given up on them; the reasons are given with\n"
                        "each address.\n",
        [DSN_DELAY] = "Your message has not yet been delivered to the recipients listed below.\n"
                      "The mail system will keep trying for a while and will tell you if it\n"
                      "gives up. You do not need to send the message again.\n",
        [DSN_SUCCESS] = "Your message was delivered to the recipients listed below, as you\n"
                        "asked to be told. Where it says \"relayed\" it went on to a system\n"
                        "that does not report deliveries; \"expanded\" means an alias that\n"
                        "sent it on to several addresses, which may still report on it.\n",
    };
    if (!buf_appends(b, "This is the mail system at host ") || !buf_appends(b, c->host)
        || !buf_appends(b, ".\n\n") || !buf_appends(b, intro[c->kind])
        || !buf_appends(b, "\nIf you need help, write to postmaster@") || !buf_appends(b, c->host)
        || !buf_appends(b, " and include this report.\n\n"))
        return 0;
    for (size_t i = 0; i < c->nitems; i++) {
        const struct dsn_item *it = &c->items[i];
        const char *st = status_valid(it->action_status) ? it->action_status : default_status(c->kind);
        const char *act = item_action(c->kind, it);
        if (!buf_appends(b, "<") || !appends_clean(b, it->rcpt->addr, ENV_ADDR_MAX, 0, c->global)
            || !buf_appends(b, ">: ") || !buf_appends(b, st))
            return 0;
        if (act != action_word(c->kind) && (!buf_appends(b, " (") || !buf_appends(b, act) || !buf_appends(b, ")")))
            return 0;
        if (it->diagnostic && it->diagnostic[0]
            && (!buf_appends(b, "\n    ") || !appends_clean(b, it->diagnostic, VALUE_MAX, 0, 0)))
            return 0;
        if (!buf_appends(b, "\n")) return 0;
    }
    if (!c->full) {
        const char *why = c->kind != DSN_FAILURE ? "the message's header is attached"
                          : c->e->ret_hdrs ? "as you asked (RET=HDRS), only the message's header is attached"
                          : NULL;
        if (!why && !buf_appendf(b, "\nThe message was larger than %zu octets (it had %zu), so only\n"
                                    "its header is attached.\n", full_limit, msglen))
            return 0;
        if (why && (!buf_appends(b, "\nFor reference, ") || !buf_appends(b, why) || !buf_appends(b, ".\n")))
            return 0;
    }
    return 1;
}

/* the fields in the order of RFC 3464 2.1's grammar: per message
 * [Original-Envelope-Id] Reporting-MTA [Arrival-Date] and then extension
 * fields; per recipient [Original-Recipient] Final-Recipient Action Status
 * [Remote-MTA] [Diagnostic-Code] [Last-Attempt-Date] [Will-Retry-Until] */
static int compose_status(const struct dsn_ctx *c, struct buf *b, time_t now)
{
    const struct envelope *e = c->e;
    if (e->envid[0] && (!buf_appends(b, "Original-Envelope-Id: ")
                        || !appends_clean(b, e->envid, VALUE_MAX, 1, 0) || !buf_appends(b, "\n")))
        return 0;
    if (!buf_appends(b, "Reporting-MTA: dns; ") || !buf_appends(b, c->host) || !buf_appends(b, "\n"))
        return 0;
    if (e->birth > 0 && (!buf_appends(b, "Arrival-Date: ") || !append_date(b, e->birth) || !buf_appends(b, "\n")))
        return 0;
    if (e->id[0] && (!buf_appends(b, "X-Postern-Queue-ID: ") || !append_id(b, e->id)
                     || !buf_appends(b, "\n")))
        return 0;
    for (size_t i = 0; i < c->nitems; i++) {
        const struct dsn_item *it = &c->items[i];
        const struct env_rcpt *r = it->rcpt;
        const char *st = status_valid(it->action_status) ? it->action_status : default_status(c->kind);
        if (!buf_appends(b, "\n"))
            return 0;
        if (env_text(r->orcpt)[0]) {
            /* "type;xtext": the utf-8 type is already in its DSN form */
            const char *semi = strchr(r->orcpt, ';');
            int u8type = semi && semi - r->orcpt == 5 && !strncasecmp(r->orcpt, "utf-8", 5);
            if (!buf_appends(b, "Original-Recipient: ")
                || !appends_clean(b, r->orcpt, VALUE_MAX, !u8type, c->global) || !buf_appends(b, "\n"))
                return 0;
        }
        if (!buf_appends(b, "Final-Recipient: ") || !append_addr_typed(b, r->addr, c->global)
            || !buf_appends(b, "\n"))
            return 0;
        if (!buf_appends(b, "Action: ") || !buf_appends(b, item_action(c->kind, it))
            || !buf_appends(b, "\nStatus: ") || !buf_appends(b, st) || !buf_appends(b, "\n"))
            return 0;
        const char *mta = NULL, *diag = it->diagnostic;
        size_t mtalen = 0;
        const char *reply = diag ? remote_said(diag, &mta, &mtalen) : NULL;
        if (reply) {
            /* RFC 3464 2.3.5/2.3.6: the host in Remote-MTA, its reply as the diagnostic */
            if (!buf_appends(b, "Remote-MTA: dns; ") || !append_clean(b, mta, mtalen, VALUE_MAX, 0, 0)
                || !buf_appends(b, "\n"))
                return 0;
            diag = reply;
        }
        /* RFC 3464 2.3.6: "smtp" only for an SMTP reply; postern's own
         * reasons (no such user, DNS, quota) get a type of their own */
        if (diag && diag[0]
            && (!buf_appends(b, is_reply(diag) ? "Diagnostic-Code: smtp; " : "Diagnostic-Code: X-Postern; ")
                || !appends_clean(b, diag, VALUE_MAX, 0, 0) || !buf_appends(b, "\n")))
            return 0;
        if (!buf_appends(b, "Last-Attempt-Date: ") || !append_date(b, now) || !buf_appends(b, "\n"))
            return 0;
        /* RFC 3464 2.3.9: when a delayed recipient will be given up */
        if (c->kind == DSN_DELAY && it->retry_until > 0
            && (!buf_appends(b, "Will-Retry-Until: ") || !append_date(b, it->retry_until) || !buf_appends(b, "\n")))
            return 0;
    }
    return 1;
}

struct view { const char *s; size_t len; };

/* a boundary that occurs in none of the parts */
static int pick_boundary(const struct dsn_ctx *c, time_t now, const struct view *parts, size_t nparts,
                         char *bnd, size_t bndlen)
{
    for (unsigned long n = 0; n < 1000000; n++) {
        struct buf t = BUF_ZERO;
        if (!buf_appends(&t, "=_postern_") || !append_id(&t, c->e->id)
            || !buf_appendf(&t, "_%llx_%lu", (unsigned long long)now, n)) {
            buf_free(&t);
            return 0;
        }
        int clash = 0;
        for (size_t i = 0; i < nparts && !clash; i++)
            if (parts[i].len && memmem(parts[i].s, parts[i].len, t.s, t.len)) clash = 1;
        if (!clash && t.len < bndlen) {
            memcpy(bnd, t.s, t.len + 1);
            buf_free(&t);
            return 1;
        }
        buf_free(&t);
    }
    errno = EOVERFLOW;
    return 0;
}

static int compose_headers(const struct dsn_ctx *c, struct buf *b, time_t now, const char *bnd,
                           const char *orig, size_t origlen, int eightbit)
{
    static const char *const subject[] = {
        [DSN_FAILURE] = "Undelivered Mail Returned to Sender",
        [DSN_DELAY] = "Delayed Mail (still being retried)",
        [DSN_SUCCESS] = "Successful Mail Delivery Report",
    };
    static const char *const kindname[] = { [DSN_FAILURE] = "failure", [DSN_DELAY] = "delay",
                                            [DSN_SUCCESS] = "success" };
    const char *mid;
    size_t midlen;
    if (!buf_appends(b, "From: Mail Delivery System <MAILER-DAEMON@") || !buf_appends(b, c->host)
        || !buf_appends(b, ">\nTo: <"))
        return 0;
    if (c->e->sender[0] ? !appends_clean(b, c->e->sender, ENV_ADDR_MAX, 0, c->global)
                        : (!buf_appends(b, "postmaster@") || !buf_appends(b, c->host)))
        return 0;
    if (!buf_appends(b, ">\nSubject: ") || !buf_appends(b, subject[c->kind])
        || !buf_appends(b, "\nDate: ") || !append_date(b, now)
        || !buf_appendf(b, "\nMessage-ID: <%lld.", (long long)now)
        || !append_id(b, c->e->id)
        || !buf_appendf(b, ".%s@%s>\n", kindname[c->kind], c->host))
        return 0;
    if (find_message_id(orig, origlen, &mid, &midlen)) {
        if (!buf_appends(b, "In-Reply-To: ") || !buf_append(b, mid, midlen)
            || !buf_appends(b, "\nReferences: ") || !buf_append(b, mid, midlen) || !buf_appends(b, "\n"))
            return 0;
    }
    /* RFC 6522 3: report-type is the subtype of the second part, so a
     * global report (RFC 6533) is report-type=global-delivery-status */
    if (!buf_appends(b, "Auto-Submitted: auto-replied\nMIME-Version: 1.0\n"
                        "Content-Type: multipart/report; report-type=")
        || !buf_appends(b, c->global ? "global-delivery-status" : "delivery-status")
        || !buf_appends(b, ";\n\tboundary=\"") || !buf_appends(b, bnd) || !buf_appends(b, "\"\n"))
        return 0;
    if (eightbit && !buf_appends(b, "Content-Transfer-Encoding: 8bit\n")) return 0;
    return buf_appends(b, "\nThis is a MIME-encapsulated message.\n");
}

static int compose(struct dsn_ctx *c, const char *msg, size_t msglen, size_t msgsize, size_t full_limit,
                   time_t now, struct buf *out)
{
    struct buf parts[2] = { BUF_ZERO, BUF_ZERO };
    char bnd[BOUNDARY_MAX];
    int ok = 0;
    size_t hlen = header_section(msg, msglen);
    const char *ret = msg;
    size_t retlen = c->full ? msglen : hlen;
    if (!compose_text(c, &parts[0], msgsize, full_limit) || !compose_status(c, &parts[1], now)) goto done;
    struct view views[3] = { { parts[0].s, parts[0].len }, { parts[1].s, parts[1].len }, { ret, retlen } };
    if (!pick_boundary(c, now, views, 3, bnd, sizeof bnd)) goto done;
    int text8 = has_8bit(parts[0].s, parts[0].len), status8 = has_8bit(parts[1].s, parts[1].len);
    int ret8 = has_8bit(ret, retlen);
    if (!compose_headers(c, out, now, bnd, msg, hlen, text8 || status8 || ret8)) goto done;
    /* part 1: for the human */
    if (!buf_appendf(out, "\n--%s\nContent-Description: Notification\n"
                          "Content-Type: text/plain; charset=%s\n", bnd, text8 ? "utf-8" : "us-ascii")
        || (text8 && !buf_appends(out, "Content-Transfer-Encoding: 8bit\n"))
        || !buf_appends(out, "\n") || !buf_append(out, parts[0].s, parts[0].len))
        goto done;
    /* part 2: for the machine */
    if (!buf_appendf(out, "\n--%s\nContent-Description: Delivery report\nContent-Type: message/%sdelivery-status\n",
                     bnd, c->global ? "global-" : "")
        || (status8 && !buf_appends(out, "Content-Transfer-Encoding: 8bit\n"))
        || !buf_appends(out, "\n") || !buf_append(out, parts[1].s, parts[1].len))
        goto done;
    /* part 3: what was sent */
    const char *type = c->full ? (c->global ? "message/global" : "message/rfc822")
                               : (c->global ? "message/global-headers" : "text/rfc822-headers");
    if (!buf_appendf(out, "\n--%s\nContent-Description: %s\nContent-Type: %s\n", bnd,
                     c->full ? "Undelivered Message" : "Message Headers", type)
        || (ret8 && !buf_appends(out, "Content-Transfer-Encoding: 8bit\n"))
        || !buf_appends(out, "\n") || (retlen && !buf_append(out, ret, retlen)))
        goto done;
    if (!buf_appendf(out, "\n--%s--\n", bnd)) goto done;
    ok = 1;
done:
    for (size_t i = 0; i < 2; i++) buf_free(&parts[i]);
    return ok;
}

int dsn_compose(enum dsn_kind kind, const struct envelope *e, const struct dsn_item *items, size_t nitems,
                const char *msg, size_t msglen, size_t full_limit, const char *reporting_host, time_t now,
                struct buf *out)
{
    return dsn_compose_sized(kind, e, items, nitems, msg, msglen, msglen, full_limit, reporting_host, now, out);
}

int dsn_compose_sized(enum dsn_kind kind, const struct envelope *e, const struct dsn_item *items, size_t nitems,
                      const char *msg, size_t msglen, size_t msgsize, size_t full_limit, const char *reporting_host,
                      time_t now, struct buf *out)
{
    struct dsn_ctx c;
    if (!e || !items || !nitems || !out || (!msg && msglen) || msgsize < msglen || !reporting_host || !reporting_host[0]
        || (kind != DSN_FAILURE && kind != DSN_DELAY && kind != DSN_SUCCESS)) {
        errno = EINVAL;
        return 0;
    }
    memset(&c, 0, sizeof c);
    c.kind = kind;
    c.e = e;
    c.items = items;
    c.nitems = nitems;
    /* the host goes into addresses and a Message-ID: letters, digits, '.', '-' */
    size_t h = 0;
    for (; reporting_host[h] && h < HOST_MAX; h++) {
        char ch = reporting_host[h];
        int okc = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9')
                  || ch == '.' || ch == '-';
        c.host[h] = okc ? ch : '-';
    }
    c.host[h] = 0;
    c.global = e->smtputf8 || str_8bit(e->sender);
    for (size_t i = 0; i < nitems; i++) {
        if (!items[i].rcpt) { errno = EINVAL; return 0; }
        if (str_8bit(items[i].rcpt->addr) || str_8bit(env_text(items[i].rcpt->orcpt))) c.global = 1;
    }
    /* the whole message, if it is all here and small enough */
    c.full = kind == DSN_FAILURE && !e->ret_hdrs && msgsize <= full_limit && msglen == msgsize;
    size_t mark = out->len;
    if (!compose(&c, msg ? msg : "", msglen, msgsize, full_limit, now, out)) {
        int saved = errno;
        out->len = mark;
        if (out->s) out->s[mark] = 0;
        errno = saved;
        return 0;
    }
    return 1;
}
