/* smtp_addr.c - RFC 5321 paths and the ESMTP parameters of MAIL and RCPT
 * (RFC 1870 SIZE, 6152 BODY, 6531 SMTPUTF8, 3461 DSN). Every reply is a
 * string literal, so results stay valid and the code is reentrant. */
#include "smtp_addr.h"
#include "utf8.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

/* ---- character classes (ASCII only, no locale) ---- */

static int is_alpha(unsigned char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
static int is_alnum(unsigned char c) { return is_alpha(c) || is_digit(c); }
static unsigned char lower(unsigned char c) { return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c; }

void smtp_lower(char *s)
{
    for (; *s; s++) *s = (char)lower((unsigned char)*s);
}

static int is_atext(unsigned char c)
{
    return is_alnum(c) || (c && strchr("!#$%&'*+-/=?^_`{|}~", c));
}

int smtp_dot_atom(const char *s, size_t n)
{
    if (!n || s[0] == '.' || s[n - 1] == '.') return 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] == '.' ? s[i + 1] == '.' : !is_atext((unsigned char)s[i])) return 0;
    return 1;
}

static int ieq(const char *a, size_t alen, const char *b)
{
    size_t blen = strlen(b);
    if (alen != blen) return 0;
    for (size_t i = 0; i < alen; i++)
        if (lower((unsigned char)a[i]) != lower((unsigned char)b[i])) return 0;
    return 1;
}

int smtp_parse_ull(const char *s, size_t len, unsigned long long max, unsigned long long *out)
{
    unsigned long long v = 0;
    if (!len) { errno = EINVAL; return 0; }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!is_digit(c)) { errno = EINVAL; return 0; }
        unsigned d = c - '0';
        if (d > max || v > (max - d) / 10) { errno = ERANGE; return 0; }
        v = v * 10 + d;
    }
    *out = v;
    return 1;
}

/* ---- paths ---- */

enum perr {
    PE_SYNTAX, PE_EMPTY, PE_CHAR, PE_LOCAL_LONG, PE_DOMAIN_LONG, PE_PATH_LONG,
    PE_DOMAIN, PE_LITERAL, PE_NULL, PE_NODOMAIN, PE_COUNT
};

static const char *const sender_reply[PE_COUNT] = {
    [PE_SYNTAX] = "501 5.1.7 Bad sender address syntax",
    [PE_EMPTY] = "501 5.1.7 Missing sender address",
    [PE_CHAR] = "501 5.1.7 Invalid character in sender address",
    [PE_LOCAL_LONG] = "501 5.1.7 Sender local part too long (252 octets max)",
    [PE_DOMAIN_LONG] = "501 5.1.7 Sender domain too long (255 octets max)",
    [PE_PATH_LONG] = "501 5.1.7 Sender address too long (256 octets max)",
    [PE_DOMAIN] = "501 5.1.7 Bad sender domain syntax",
    [PE_LITERAL] = "501 5.1.7 Bad sender address literal",
    [PE_NULL] = "501 5.1.7 Bad sender address syntax",
    [PE_NODOMAIN] = "501 5.1.7 Sender address must have a domain",
};
static const char *const rcpt_reply[PE_COUNT] = {
    [PE_SYNTAX] = "501 5.1.3 Bad recipient address syntax",
    [PE_EMPTY] = "501 5.1.3 Missing recipient address",
    [PE_CHAR] = "501 5.1.3 Invalid character in recipient address",
    [PE_LOCAL_LONG] = "501 5.1.3 Recipient local part too long (252 octets max)",
    [PE_DOMAIN_LONG] = "501 5.1.3 Recipient domain too long (255 octets max)",
    [PE_PATH_LONG] = "501 5.1.3 Recipient address too long (256 octets max)",
    [PE_DOMAIN] = "501 5.1.3 Bad recipient domain syntax",
    [PE_LITERAL] = "501 5.1.3 Bad recipient address literal",
    [PE_NULL] = "501 5.1.3 Null recipient <> not allowed",
    [PE_NODOMAIN] = "501 5.1.3 Recipient address must have a domain",
};

struct cur {
    const unsigned char *s;
    size_t len, i;
    enum perr err;
};

/* fail at the current octet: control characters, NUL, tab, DEL and invalid
 * 8-bit octets say so; anything else is plain bad syntax */
static int fail(struct cur *c, enum perr e)
{
    if (c->i < c->len) {
        unsigned char ch = c->s[c->i];
        if (ch < 0x20 || ch == 0x7f || (ch >= 0x80 && !utf8_char(c->s + c->i, c->len - c->i)))
            e = PE_CHAR;
    }
    c->err = e;
    return 0;
}

static int at(const struct cur *c, unsigned char ch) { return c->i < c->len && c->s[c->i] == ch; }

/* the cursor is at the end of input or on one of the octets in set */
static int at_end_or(const struct cur *c, const char *set)
{
    return c->i >= c->len || (c->s[c->i] && strchr(set, c->s[c->i]));
}

/* one non-ASCII UTF-8 character at the cursor: advance, flag, 1 */
static int take_utf8(struct cur *c, struct smtp_path *p)
{
    size_t k = utf8_char(c->s + c->i, c->len - c->i);
    if (!k) return 0;
    c->i += k;
    p->utf8 = 1;
    return 1;
}

static int parse_quoted(struct cur *c, struct smtp_path *p)
{
    size_t start = c->i;
    c->i++;   /* the opening quote */
    for (;;) {
        if (c->i >= c->len) return fail(c, PE_SYNTAX);
        unsigned char ch = c->s[c->i];
        if (ch == '"') { c->i++; break; }
        if (ch == '\\') {
            if (c->i + 1 >= c->len) { c->i++; return fail(c, PE_SYNTAX); }
            unsigned char q = c->s[c->i + 1];
            if (q < 32 || q > 126) { c->i++; return fail(c, PE_CHAR); }
            c->i += 2;
        } else if (ch >= 32 && ch <= 126) {
            c->i++;
        } else if (ch < 0x80 || !take_utf8(c, p)) {
            return fail(c, PE_CHAR);
        }
    }
    if (c->i - start == 2) { c->i = start; return fail(c, PE_SYNTAX); }  /* "" is empty */
    p->quoted = 1;
    return 1;
}

static int parse_dotstring(struct cur *c, struct smtp_path *p)
{
    for (;;) {
        size_t atom = c->i;
        while (c->i < c->len) {
            unsigned char ch = c->s[c->i];
            if (is_atext(ch)) c->i++;
            else if (ch < 0x80 || !take_utf8(c, p)) break;
        }
        if (c->i == atom) return fail(c, PE_SYNTAX);   /* empty atom: "", ".a", "a..b", "a." */
        if (!at(c, '.')) return 1;
        c->i++;
    }
}

static int parse_local(struct cur *c, struct smtp_path *p)
{
    size_t start = c->i;
    if (at(c, '"') ? !parse_quoted(c, p) : !parse_dotstring(c, p)) return 0;
    size_t n = c->i - start;
    if (n > SMTP_LOCAL_MAX) { c->i = start; return fail(c, PE_LOCAL_LONG); }
    memcpy(p->local, c->s + start, n);
    p->local[n] = 0;
    p->local_len = n;
    if (memchr(p->local, '%', n)) p->has_percent = 1;
    if (memchr(p->local, '!', n)) p->has_bang = 1;
    return 1;
}

static int parse_ipv4(const unsigned char *s, size_t n)
{
    size_t i = 0;
    for (int part = 0; part < 4; part++) {
        if (part) { if (i >= n || s[i] != '.') return 0; i++; }
        size_t d = 0;
        unsigned v = 0;
        while (i < n && is_digit(s[i]) && d < 3) { v = v * 10 + (s[i] - '0'); i++; d++; }
        if (!d || v > 255) return 0;
    }
    return i == n;
}

/* "[1.2.3.4]" or "[IPv6:...]" at the cursor */
static int parse_literal(struct cur *c)
{
    size_t start = ++c->i;
    while (c->i < c->len && c->s[c->i] != ']') {
        unsigned char ch = c->s[c->i];
        if (ch < 33 || ch > 126 || ch == '[' || ch == '\\') return fail(c, PE_LITERAL);
        c->i++;
    }
    if (c->i >= c->len) return fail(c, PE_LITERAL);
    const unsigned char *v = c->s + start;
    size_t n = c->i - start;
    c->i++;   /* ']' */
    if (n > 5 && ieq((const char *)v, 5, "IPv6:")) {
        char tmp[INET6_ADDRSTRLEN + 1];
        unsigned char bin[16];
        if (n - 5 >= sizeof tmp) return fail(c, PE_LITERAL);
        memcpy(tmp, v + 5, n - 5);
        tmp[n - 5] = 0;
        if (inet_pton(AF_INET6, tmp, bin) != 1) { c->i = start; return fail(c, PE_LITERAL); }
        return 1;
    }
    if (!parse_ipv4(v, n)) { c->i = start; return fail(c, PE_LITERAL); }
    return 1;
}

/* a domain name or address literal; what may follow it is in ends
 * ("" allows the end of input and nothing else). A name whose last label
 * is all digits (u@192.0.2.1, u@123) is none: a top-level label is never
 * numeric (RFC 1123 2.1, RFC 3696 2), and an address goes in brackets
 * (RFC 5321 4.1.3), as Postfix refuses it too. */
static int parse_domain(struct cur *c, struct smtp_path *p, const char *ends, int *literal)
{
    size_t start = c->i;
    *literal = 0;
    if (at(c, '[')) {
        if (!parse_literal(c)) return 0;
        *literal = 1;
    } else {
        for (;;) {
            size_t label = c->i, octets, digits = 0;
            while (c->i < c->len) {
                unsigned char ch = c->s[c->i];
                if (is_alnum(ch) || ch == '-') { digits += is_digit(ch); c->i++; }
                else if (ch < 0x80 || !take_utf8(c, p)) break;
            }
            octets = c->i - label;
            if (!octets) return fail(c, PE_DOMAIN);
            if (octets > 63 || c->s[label] == '-' || c->s[c->i - 1] == '-') {
                c->i = label;
                return fail(c, PE_DOMAIN);
            }
            if (!at(c, '.')) {
                if (digits == octets) { c->i = start; return fail(c, PE_DOMAIN); }
                break;
            }
            c->i++;
        }
    }
    if (c->i - start > SMTP_DOMAIN_MAX) { c->i = start; return fail(c, PE_DOMAIN_LONG); }
    if (!at_end_or(c, ends))
        return fail(c, at(c, '@') || at(c, '>') || at(c, ' ') ? PE_SYNTAX : PE_DOMAIN);
    return 1;
}

/* "@a,@b:" before the mailbox; the cursor is on the first '@' */
static int parse_route(struct cur *c, struct smtp_path *p)
{
    for (;;) {
        int lit;
        c->i++;   /* '@' */
        if (!parse_domain(c, p, ",:", &lit)) return 0;
        if (lit || c->i >= c->len) return fail(c, PE_SYNTAX);
        if (c->s[c->i++] == ':') break;
        if (!at(c, '@')) return fail(c, PE_SYNTAX);
    }
    p->source_route = 1;
    return 1;
}

/* "u1" and u1 name the same mailbox (RFC 5321 4.1.2, RFC 5322 3.2.4): a
 * quoted local part whose content is a plain dot-string loses its quotes
 * (and backslashes), so that lookups, the envelope and the logs see one
 * form. Content that needs the quotes ("john doe", "a@b") keeps them. */
static void unquote_local(struct smtp_path *p)
{
    char v[SMTP_LOCAL_MAX + 1];
    size_t n = 0;
    for (size_t i = 1; i + 1 < p->local_len; i++) {
        unsigned char ch = (unsigned char)p->local[i];
        if (ch == '\\') ch = (unsigned char)p->local[++i];
        if (!is_atext(ch) && ch != '.' && ch < 0x80) return;
        v[n++] = (char)ch;
    }
    if (!n || v[0] == '.' || v[n - 1] == '.') return;
    for (size_t i = 1; i < n; i++)
        if (v[i] == '.' && v[i - 1] == '.') return;
    memcpy(p->local, v, n);
    p->local[n] = 0;
    p->local_len = n;
    p->quoted = 0;
}

static int parse_mailbox(struct cur *c, struct smtp_path *p, int is_rcpt, const char *ends)
{
    if (!parse_local(c, p)) return 0;
    if (p->quoted && at(c, '@')) unquote_local(p);
    if (!at(c, '@')) {
        if (is_rcpt && !p->quoted && !p->source_route && ieq(p->local, p->local_len, "postmaster")
            && at_end_or(c, ends)) {
            memcpy(p->local, "postmaster", 11);
            return 1;
        }
        if (at_end_or(c, ends)) return fail(c, PE_NODOMAIN);
        return fail(c, PE_SYNTAX);
    }
    c->i++;
    size_t start = c->i;
    if (!parse_domain(c, p, ends, &p->literal)) return 0;
    p->domain_len = c->i - start;
    memcpy(p->domain, c->s + start, p->domain_len);
    p->domain[p->domain_len] = 0;
    return 1;
}

static int path_parse(struct cur *c, int is_rcpt, struct smtp_path *p)
{
    while (at(c, ' ')) c->i++;
    if (c->i >= c->len) return fail(c, PE_EMPTY);
    size_t start = c->i;
    if (at(c, '<')) {
        p->bracketed = 1;
        c->i++;
        if (at(c, '>')) {
            if (is_rcpt) return fail(c, PE_NULL);
            c->i++;
            p->is_null = 1;
        } else {
            if (at(c, '@') && !parse_route(c, p)) return 0;
            if (!parse_mailbox(c, p, is_rcpt, ">")) return 0;
            if (!at(c, '>')) return fail(c, PE_SYNTAX);
            c->i++;
        }
    } else if (!parse_mailbox(c, p, is_rcpt, " ")) {
        return 0;
    }
    if (c->i < c->len && c->s[c->i] != ' ') return fail(c, PE_SYNTAX);
    if (p->is_null) return 1;
    size_t addr = p->local_len + (p->domain_len ? 1 + p->domain_len : 0);
    size_t path = p->bracketed ? c->i - start : addr + 2;
    if (path > SMTP_PATH_MAX) { c->i = start; return fail(c, PE_PATH_LONG); }
    memcpy(p->addr, p->local, p->local_len);
    if (p->domain_len) {
        p->addr[p->local_len] = '@';
        memcpy(p->addr + p->local_len + 1, p->domain, p->domain_len);
    }
    p->addr[addr] = 0;
    p->addr_len = addr;
    return 1;
}

int smtp_path_parse(const char *s, size_t len, int is_rcpt, struct smtp_path *p,
                    size_t *used, const char **reply)
{
    struct cur c = { (const unsigned char *)s, len, 0, PE_SYNTAX };
    memset(p, 0, sizeof *p);
    if (!path_parse(&c, is_rcpt, p)) {
        *reply = (is_rcpt ? rcpt_reply : sender_reply)[c.err];
        memset(p, 0, sizeof *p);
        errno = EINVAL;
        return 0;
    }
    *used = c.i;
    return 1;
}

int smtp_path_local_user(const struct smtp_path *p, char *dst, size_t dstlen)
{
    if (p->is_null || p->has_percent || p->has_bang || p->quoted) {
        errno = EINVAL;
        return 0;
    }
    size_t n = 0;
    while (n < p->local_len && p->local[n] != '+') n++;
    if (!n) { errno = EINVAL; return 0; }
    if (n >= dstlen) { errno = ENAMETOOLONG; return 0; }
    for (size_t i = 0; i < n; i++) dst[i] = (char)lower((unsigned char)p->local[i]);
    dst[n] = 0;
    return 1;
}

/* ---- ESMTP parameters ---- */

#define R_SYNTAX "501 5.5.4 Bad parameter syntax"
#define R_UNKNOWN "555 5.5.4 Unsupported parameter"
#define R_DUP "501 5.5.4 Duplicate parameter"

struct param {
    const char *kw, *val;
    size_t kwlen, vlen;
    int has_val;
};

/* the next "KEYWORD[=value]" at s[*i..len): 1 got one, 0 none left, -1 bad */
static int next_param(const char *s, size_t len, size_t *i, struct param *pp)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t j = *i;
    while (j < len && u[j] == ' ') j++;
    if (j >= len) { *i = j; return 0; }
    pp->kw = s + j;
    if (!is_alnum(u[j])) return -1;
    while (j < len && (is_alnum(u[j]) || u[j] == '-')) j++;
    pp->kwlen = (size_t)(s + j - pp->kw);
    pp->has_val = 0;
    pp->val = s + j;
    pp->vlen = 0;
    if (j < len && u[j] == '=') {
        pp->has_val = 1;
        pp->val = s + ++j;
        while (j < len && u[j] != ' ') {
            size_t k;
            if (u[j] > 32 && u[j] < 127 && u[j] != '=') j++;
            else if (u[j] >= 0x80 && (k = utf8_char(u + j, len - j))) j += k;
            else return -1;
        }
        pp->vlen = (size_t)(s + j - pp->val);
    }
    if (j < len && u[j] != ' ') return -1;
    *i = j;
    return 1;
}

static int is_hex_upper(unsigned char c) { return is_digit(c) || (c >= 'A' && c <= 'F'); }

/* RFC 3461 xtext: printable ASCII but '+' and '=', or "+XX" (upper-case hex) */
static int xtext_valid(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n; i++) {
        if (u[i] == '+') {
            if (n - i < 3 || !is_hex_upper(u[i + 1]) || !is_hex_upper(u[i + 2])) return 0;
            i += 2;
        } else if (u[i] < 33 || u[i] > 126 || u[i] == '=') {
            return 0;
        }
    }
    return 1;
}

static unsigned hex_upper_val(unsigned char c) { return is_digit(c) ? (unsigned)(c - '0') : (unsigned)(c - 'A' + 10); }

/* ENVID and ORCPT (RFC 3461 4.2, 4.4): xtext whose decoded value is
 * printable US-ASCII, space included, since a DSN can carry nothing else */
static int xtext_printable(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    if (!xtext_valid(s, n)) return 0;
    for (size_t i = 0; i < n; i++) {
        if (u[i] != '+') continue;
        unsigned v = hex_upper_val(u[i + 1]) * 16 + hex_upper_val(u[i + 2]);
        if (v < 0x20 || v > 0x7e) return 0;
        i += 2;
    }
    return 1;
}

/* RFC 6533 utf-8-addr-xtext, loosely: printable ASCII but '+' and '=', or UTF-8 */
static int utf8_xtext_valid(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t k;
        if (u[i] > 32 && u[i] < 127 && u[i] != '+' && u[i] != '=') i++;
        else if (u[i] >= 0x80 && (k = utf8_char(u + i, n - i))) i += k;
        else return 0;
    }
    return 1;
}

static int has_8bit(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] >= 0x80) return 1;
    return 0;
}

enum { MP_SIZE = 1, MP_BODY = 2, MP_UTF8 = 4, MP_RET = 8, MP_ENVID = 16, MP_AUTH = 32 };

static const char *mail_param(const struct param *pp, struct smtp_mail_params *mp, unsigned *seen)
{
    unsigned bit;
    const char *bad;
    if (ieq(pp->kw, pp->kwlen, "SIZE")) { bit = MP_SIZE; bad = "501 5.5.4 Bad SIZE value"; }
    else if (ieq(pp->kw, pp->kwlen, "BODY")) { bit = MP_BODY; bad = "501 5.5.4 Bad BODY value (7BIT or 8BITMIME)"; }
    else if (ieq(pp->kw, pp->kwlen, "SMTPUTF8")) { bit = MP_UTF8; bad = "501 5.5.4 SMTPUTF8 takes no value"; }
    else if (ieq(pp->kw, pp->kwlen, "RET")) { bit = MP_RET; bad = "501 5.5.4 Bad RET value (FULL or HDRS)"; }
    else if (ieq(pp->kw, pp->kwlen, "ENVID")) { bit = MP_ENVID; bad = "501 5.5.4 Bad ENVID value"; }
    else if (ieq(pp->kw, pp->kwlen, "AUTH")) { bit = MP_AUTH; bad = "501 5.5.4 Bad AUTH value"; }
    else return R_UNKNOWN;
    if (*seen & bit) return R_DUP;
    *seen |= bit;
    if (bit == MP_UTF8) { mp->smtputf8 = 1; return pp->has_val ? bad : NULL; }
    if (!pp->has_val || !pp->vlen || has_8bit(pp->val, pp->vlen)) return bad;
    switch (bit) {
    case MP_SIZE:
        if (!smtp_parse_ull(pp->val, pp->vlen, ULLONG_MAX, &mp->size)) {
            /* digits beyond what 64 bits hold: a size, only too big
             * (the session answers 552 5.3.4), not a malformed one */
            for (size_t k = 0; k < pp->vlen; k++)
                if (pp->val[k] < '0' || pp->val[k] > '9') return bad;
            mp->size = ULLONG_MAX;
        }
        mp->has_size = 1;
        return NULL;
    case MP_BODY:
        if (ieq(pp->val, pp->vlen, "7BIT")) mp->body = SMTP_BODY_7BIT;
        else if (ieq(pp->val, pp->vlen, "8BITMIME")) mp->body = SMTP_BODY_8BITMIME;
        else return "555 5.5.4 Unsupported BODY value (7BIT or 8BITMIME)";   /* BINARYMIME: not offered */
        return NULL;
    case MP_RET:
        if (ieq(pp->val, pp->vlen, "FULL")) mp->ret = SMTP_RET_FULL;
        else if (ieq(pp->val, pp->vlen, "HDRS")) mp->ret = SMTP_RET_HDRS;
        else return bad;
        return NULL;
    case MP_ENVID:
        if (pp->vlen > SMTP_XTEXT_MAX || !xtext_printable(pp->val, pp->vlen)) return bad;
        memcpy(mp->envid, pp->val, pp->vlen);
        mp->envid[pp->vlen] = 0;
        return NULL;
    default:   /* AUTH=<> or AUTH=xtext (RFC 4954): checked, then ignored */
        if (pp->vlen > SMTP_ORCPT_MAX) return bad;
        if (!(pp->vlen == 2 && !memcmp(pp->val, "<>", 2)) && !xtext_valid(pp->val, pp->vlen)) return bad;
        return NULL;
    }
}

int smtp_mail_params_parse(const char *s, size_t len, struct smtp_mail_params *mp,
                           const char **reply)
{
    struct param pp;
    size_t i = 0;
    unsigned seen = 0;
    int r;
    memset(mp, 0, sizeof *mp);
    while ((r = next_param(s, len, &i, &pp)) > 0) {
        const char *bad = mail_param(&pp, mp, &seen);
        if (bad) { *reply = bad; memset(mp, 0, sizeof *mp); errno = EINVAL; return 0; }
    }
    if (r < 0) { *reply = R_SYNTAX; memset(mp, 0, sizeof *mp); errno = EINVAL; return 0; }
    return 1;
}

static int notify_parse(const char *v, size_t n, unsigned *out)
{
    unsigned bits = 0;
    size_t i = 0;
    if (!n) return 0;
    for (;;) {
        size_t j = i;
        while (j < n && v[j] != ',') j++;
        unsigned bit;
        if (ieq(v + i, j - i, "SUCCESS")) bit = SMTP_NOTIFY_SUCCESS;
        else if (ieq(v + i, j - i, "FAILURE")) bit = SMTP_NOTIFY_FAILURE;
        else if (ieq(v + i, j - i, "DELAY")) bit = SMTP_NOTIFY_DELAY;
        else if (ieq(v + i, j - i, "NEVER")) bit = SMTP_NOTIFY_NEVER;
        else return 0;   /* also the empty item of ",," or a trailing ',' */
        /* an item again counts once: RFC 3461 4.1's 1#notify-list-element
         * allows it (Postfix takes it); the envelope gets each bit once */
        bits |= bit;
        if (j >= n) break;
        i = j + 1;
    }
    if ((bits & SMTP_NOTIFY_NEVER) && bits != SMTP_NOTIFY_NEVER) return 0;
    *out = bits;
    return 1;
}

static int orcpt_valid(const char *v, size_t n)
{
    size_t t = 0;
    while (t < n && (is_alnum((unsigned char)v[t]) || v[t] == '-')) t++;
    if (!t || t >= n || v[t] != ';' || t + 1 >= n) return 0;
    if (ieq(v, t, "utf-8")) return utf8_xtext_valid(v + t + 1, n - t - 1);
    return xtext_printable(v + t + 1, n - t - 1);
}

/* An rfc822 ORCPT whose xtext decodes to UTF-8: Postfix's smtp client
 * sends the original recipient of an SMTPUTF8 message for a non-ASCII
 * address so ("rfc822;j+C3+BCrgen@example.test"), and its smtpd takes it.
 * RFC 3461 4.2 wants printable US-ASCII there; what is meant is RFC 6533's
 * utf-8 ORCPT, which is what goes into out (cap octets): "utf-8;" and
 * utf-8-addr-unitext, UTF-8 and printable ASCII as they are, but space,
 * '+', '=' and '\\' as \x{HEX}. 1, or 0: another type, no xtext, nothing
 * outside ASCII, a control character, octets that are no UTF-8, or more
 * than SMTP_ORCPT_MAX octets. */
static int orcpt_rfc822_utf8(const char *v, size_t n, char *out, size_t cap)
{
    static const char type[] = "rfc822;", utype[] = "utf-8;";
    unsigned char dec[SMTP_ORCPT_MAX];
    size_t d = 0, o = sizeof utype - 1;
    int eight = 0;
    if (n > SMTP_ORCPT_MAX || n < sizeof type || !ieq(v, sizeof type - 2, "rfc822")
        || v[sizeof type - 2] != ';')
        return 0;
    v += sizeof type - 1;
    n -= sizeof type - 1;
    if (!xtext_valid(v, n)) return 0;
    for (size_t i = 0; i < n; i++) {   /* d <= i < n <= SMTP_ORCPT_MAX */
        unsigned char c = (unsigned char)v[i];
        if (c == '+') {
            c = (unsigned char)(hex_upper_val((unsigned char)v[i + 1]) * 16
                                + hex_upper_val((unsigned char)v[i + 2]));
            i += 2;
        }
        dec[d++] = c;
    }
    if (cap > SMTP_ORCPT_MAX + 1) cap = SMTP_ORCPT_MAX + 1;
    if (cap < sizeof utype) return 0;
    memcpy(out, utype, sizeof utype - 1);
    for (size_t i = 0; i < d;) {
        char esc[16];
        const char *src = (const char *)dec + i;
        size_t k = 1, len = 1;
        if (dec[i] >= 0x80) {
            if (!(k = utf8_char(dec + i, d - i))) return 0;
            len = k;
            eight = 1;
        } else if (dec[i] < 0x20 || dec[i] == 0x7f) {
            return 0;
        } else if (dec[i] == ' ' || dec[i] == '+' || dec[i] == '=' || dec[i] == '\\') {
            int w = snprintf(esc, sizeof esc, "\\x{%X}", (unsigned)dec[i]);
            if (w < 0 || (size_t)w >= sizeof esc) return 0;
            len = (size_t)w;
            src = esc;
        }
        if (len >= cap - o) return 0;   /* and room for the NUL */
        memcpy(out + o, src, len);
        o += len;
        i += k;
    }
    if (!eight) return 0;
    out[o] = 0;
    return 1;
}

int smtp_rcpt_params_parse(const char *s, size_t len, struct smtp_rcpt_params *rp,
                           const char **reply)
{
    struct param pp;
    size_t i = 0;
    int r = 0, seen_notify = 0, seen_orcpt = 0;
    const char *bad = NULL;
    memset(rp, 0, sizeof *rp);
    while (!bad && (r = next_param(s, len, &i, &pp)) > 0) {
        if (ieq(pp.kw, pp.kwlen, "NOTIFY")) {
            if (seen_notify++) bad = R_DUP;
            else if (!pp.has_val || has_8bit(pp.val, pp.vlen) || !notify_parse(pp.val, pp.vlen, &rp->notify))
                bad = "501 5.5.4 Bad NOTIFY value (NEVER, or SUCCESS,FAILURE,DELAY)";
        } else if (ieq(pp.kw, pp.kwlen, "ORCPT")) {
            if (seen_orcpt++) bad = R_DUP;
            else if (!pp.has_val || pp.vlen > SMTP_ORCPT_MAX)
                bad = "501 5.5.4 Bad ORCPT value";
            else if (orcpt_valid(pp.val, pp.vlen)) {
                memcpy(rp->orcpt, pp.val, pp.vlen);
                rp->orcpt[pp.vlen] = 0;
            } else if (!orcpt_rfc822_utf8(pp.val, pp.vlen, rp->orcpt, sizeof rp->orcpt)) {
                bad = "501 5.5.4 Bad ORCPT value";
            }
        } else {
            bad = R_UNKNOWN;
        }
    }
    if (!bad && r < 0) bad = R_SYNTAX;
    if (bad) { *reply = bad; memset(rp, 0, sizeof *rp); errno = EINVAL; return 0; }
    return 1;
}

int smtp_xtext(const char *s, char *dst, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch >= 33 && ch <= 126 && ch != '+' && ch != '=') {
            if (o + 1 >= cap) { errno = E2BIG; return 0; }
            dst[o++] = (char)ch;
        } else {
            if (o + 3 >= cap) { errno = E2BIG; return 0; }
            dst[o++] = '+';
            dst[o++] = hex[ch >> 4];
            dst[o++] = hex[ch & 15];
        }
    }
    if (!cap) { errno = E2BIG; return 0; }
    dst[o] = 0;
    return 1;
}
