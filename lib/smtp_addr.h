/* smtp_addr.h - RFC 5321 paths and ESMTP parameters of MAIL and RCPT.
 *
 * Accepts "<local@domain>", the bracket-less form people type in telnet
 * ("MAIL FROM: me@mydomain.com", with or without space after the colon),
 * quoted local parts, the null path "<>", address literals ("[192.0.2.1]",
 * "[IPv6:...]"); enforces domain <= 255 and path <= 256 octets. RFC 5321's
 * 64-octet local part is the least a server must take (4.5.3.1); longer
 * ones (VERP and SRS return paths, X.400 addresses) are taken as far as the
 * 256-octet path leaves room, as Postfix, Exim and OpenSMTPD take them.
 * Source routes ("<@a,@b:u@d>"), '%' and '!' in the local part are accepted
 * syntactically but exposed in flags, so that relay decisions can refuse to
 * treat them as local. No function here allocates. */
#ifndef POSTERN_SMTP_ADDR_H
#define POSTERN_SMTP_ADDR_H

#include <stddef.h>

#define SMTP_LOCAL_MAX 252  /* what a 256-octet path leaves: "<" L "@" d ">" */
#define SMTP_DOMAIN_MAX 255
#define SMTP_PATH_MAX 256   /* the whole reverse/forward path incl. '<' '>' */

struct smtp_path {
    int is_null;         /* "<>" */
    int bracketed;       /* was written with < > */
    int source_route;    /* "@a,@b:" seen (and dropped) */
    int has_percent;     /* '%' in the local part */
    int has_bang;        /* '!' in the local part */
    int quoted;          /* local part was a quoted string */
    int literal;         /* domain is an address literal [..] */
    int utf8;            /* non-ASCII octets present (needs SMTPUTF8) */
    size_t local_len;    /* local part as written (quotes kept, unless the
                          * content is a plain dot-string: "u1" -> u1) */
    size_t domain_len;   /* domain as written, literal brackets kept */
    size_t addr_len;     /* local@domain, or 0 for the null path */
    char local[SMTP_LOCAL_MAX + 1];
    char domain[SMTP_DOMAIN_MAX + 1];
    char addr[SMTP_PATH_MAX + 1];  /* "local@domain", NUL-terminated */
};

/* Parse a path at s[0..len) (leading spaces skipped). On success returns 1,
 * *used = bytes consumed (the parameters, if any, start after it).
 * On failure returns 0 and *reply is a full SMTP reply line without CRLF,
 * e.g. "501 5.1.3 Bad recipient address syntax" or "501 5.1.7 ...".
 * p->utf8 set means the client must have given SMTPUTF8 (else the caller
 * should refuse with "553 5.6.7"). 
 * is_rcpt selects the 5.1.3 (rcpt) vs 5.1.7 (sender) wording; the null
 * path is accepted only when !is_rcpt. */
int smtp_path_parse(const char *s, size_t len, int is_rcpt, struct smtp_path *p,
                    size_t *used, const char **reply);

/* "RCPT TO:<postmaster>" (no domain) is allowed: the parser returns local
 * "postmaster" with domain_len 0 only for that name. */

enum smtp_body { SMTP_BODY_NONE = 0, SMTP_BODY_7BIT, SMTP_BODY_8BITMIME };
enum smtp_ret { SMTP_RET_NONE = 0, SMTP_RET_FULL, SMTP_RET_HDRS };

#define SMTP_NOTIFY_SUCCESS 1u
#define SMTP_NOTIFY_FAILURE 2u
#define SMTP_NOTIFY_DELAY 4u
#define SMTP_NOTIFY_NEVER 8u
#define SMTP_XTEXT_MAX 100   /* ENVID: RFC 3461 says 100 chars */
#define SMTP_ORCPT_MAX 500

struct smtp_mail_params {
    int has_size;
    unsigned long long size;     /* overflow-checked */
    enum smtp_body body;
    int smtputf8;
    enum smtp_ret ret;
    char envid[SMTP_XTEXT_MAX + 1]; /* xtext as received, "" if none */
};

struct smtp_rcpt_params {
    unsigned notify;             /* SMTP_NOTIFY_* bits, 0 = not given */
    char orcpt[SMTP_ORCPT_MAX + 1]; /* "type;addr" as received ("rfc822;" xtext
                                     * decoding to UTF-8 as "utf-8;" unitext), "" if none */
};

/* Parse the parameters after the path (s[0..len), leading spaces skipped).
 * Keywords case-insensitive; duplicates and unknown ones refused. On failure
 * returns 0 with *reply e.g. "555 5.5.4 Unsupported parameter FOO" or
 * "501 5.5.4 Bad SIZE value". Every *reply of this module is a string
 * literal: valid forever, nothing shared between calls or threads.
 * MAIL also accepts AUTH=<> / AUTH=xtext (RFC 4954), checks and ignores it. */
int smtp_mail_params_parse(const char *s, size_t len, struct smtp_mail_params *mp,
                           const char **reply);
int smtp_rcpt_params_parse(const char *s, size_t len, struct smtp_rcpt_params *rp,
                           const char **reply);

/* xtext (RFC 3461) of s into dst (NUL-terminated), as ORCPT and ENVID carry
 * it: 1, or 0 with E2BIG */
int smtp_xtext(const char *s, char *dst, size_t cap);

/* The ASCII letters of s lower-cased, in place (a domain, or an address
 * of ours, whose case means nothing; other octets stay). */
void smtp_lower(char *s);

/* Overflow-safe decimal: 1 and *out, or 0 (not a number / > max). */
int smtp_parse_ull(const char *s, size_t len, unsigned long long max, unsigned long long *out);

/* Split a recipient for local delivery: "user+detail@dom" -> user "user"
 * (lower-cased into dst). 0 if the local part has % or ! or needs its
 * quotes. A source route ("@a,@b:u@dom") was dropped and counts for nothing. */
int smtp_path_local_user(const struct smtp_path *p, char *dst, size_t dstlen);

/* 1 if s[0..n) is an ASCII dot-atom-text (RFC 5322 3.2.3; RFC 5321's
 * Dot-string): atext atoms joined by single dots */
int smtp_dot_atom(const char *s, size_t n);

#endif
