/* smtp_client.h - the client side of SMTP, for remote-deliverer: a reply
 * reader bounded everywhere (the lesson of CVE-2020-8794: a line is at most
 * 1000 octets with its CRLF, a reply at most 100 lines and 16 KB, only CRLF
 * ends a line), EHLO keyword parsing, and one mail transaction per
 * connection (EHLO/HELO, STARTTLS through a hook, AUTH PLAIN, MAIL, RCPT,
 * DATA streamed from the queue file with LF -> CRLF and dot-stuffing, QUIT).
 *
 * The byte transport is pluggable: the plain socket one lives here; the
 * daemon swaps in its OpenSSL one after STARTTLS, so no TLS library is
 * linked into anything else that uses lib/. */
#ifndef POSTERN_SMTP_CLIENT_H
#define POSTERN_SMTP_CLIENT_H

#include <stddef.h>
#include <sys/types.h>

#include "smtp_addr.h"

#define SMTP_REPLY_LINE_MAX 1000     /* octets, CRLF included (RFC 5321 4.5.3.1.5) */
#define SMTP_REPLY_LINES_MAX 100     /* lines in one reply */
#define SMTP_REPLY_TOTAL_MAX 16384   /* text octets in one reply */
#define SMTP_SUMMARY_MAX 400         /* a reply quoted in a status text */

/* ---- replies ---- */

struct smtp_reply {
    int code;                /* 200..559 */
    size_t nlines;
    size_t len;              /* bytes in text */
    /* each line's text after "250-"/"250 ", lines joined by '\n' */
    char text[SMTP_REPLY_TOTAL_MAX + 1];
};

void smtp_reply_init(struct smtp_reply *r);
/* Feed one reply line (its CRLF already removed). 1: the reply is complete;
 * 0: more lines follow; -1 with errno EPROTO: not a valid reply line (no
 * 3-digit code in 2xx..5xx, a code differing from the previous lines, a bad
 * separator) or a bound passed (lines, total size). */
int smtp_reply_feed(struct smtp_reply *r, const char *line, size_t len);

/* The reply as one printable line for a status text: "550 5.1.1 no such
 * user", lines joined by a space, bytes outside printable ASCII as '?',
 * cut to fit dst (NUL-terminated, cap > 0). Returns dst. */
char *smtp_reply_summary(const struct smtp_reply *r, char *dst, size_t cap);
/* The RFC 3463 status for the reply into dst[cap >= 16]: the enhanced code
 * the text starts with if it is well formed and of the reply's class, else
 * "4.0.0" / "5.0.0" (or "2.0.0"). */
void smtp_reply_status(const struct smtp_reply *r, char *dst, size_t cap);

/* ---- connection ---- */

struct smtp_transport {
    void *ctx;
    /* >0: bytes moved; 0: end of stream (read only); -1: errno (ETIMEDOUT) */
    ssize_t (*read)(void *ctx, void *p, size_t n, int timeout_ms);
    ssize_t (*write)(void *ctx, const void *p, size_t n, int timeout_ms);
    /* NULL, or 1 if the transport holds bytes read but not yet returned
     * (TLS: a decrypted record) */
    int (*pending)(void *ctx);
};

struct smtp_conn {
    int fd;                  /* the socket (non-blocking) */
    int timeout_ms;          /* bound for one reply / one flush */
    struct smtp_transport tr;
    unsigned char in[4096];
    size_t inpos, inlen;
    unsigned char out[8192];
    size_t outlen;
};

/* Make fd non-blocking and use the plain transport. */
void smtp_conn_init(struct smtp_conn *c, int fd, int timeout_ms);
/* The plain transport's functions (ctx is a pointer to the int fd). */
ssize_t smtp_plain_read(void *ctx, void *p, size_t n, int timeout_ms);
ssize_t smtp_plain_write(void *ctx, const void *p, size_t n, int timeout_ms);

/* Read one whole reply within timeout_ms (in total, however slowly it
 * trickles). 1, or 0 with errno: ETIMEDOUT, EPIPE (closed), EPROTO (bad
 * reply: over a bound, bare LF or CR, no valid code), or a read error. */
int smtp_read_reply(struct smtp_conn *c, struct smtp_reply *r, int timeout_ms);
/* Buffered output; smtp_flush writes everything within c->timeout_ms. */
int smtp_put(struct smtp_conn *c, const void *p, size_t n);
int smtp_flush(struct smtp_conn *c);
/* Bytes received but not yet consumed (must be 0 when STARTTLS begins). */
size_t smtp_buffered(const struct smtp_conn *c);

/* the longest line sent, without its CRLF (RFC 5321 4.5.3.1.6) */
#define SMTP_SEND_LINE_MAX 998

/* Stream the message in file fd (read with pread from offset 0, so a shared
 * file offset does not matter) as DATA content: LF or CRLF -> CRLF, a bare
 * CR -> CRLF, a leading '.' doubled, a line longer than SMTP_SEND_LINE_MAX
 * broken with CRLF SPACE, a missing final line end added, then ".\r\n".
 * *sent gets the octets written. 1, or 0 with errno. */
int smtp_send_message(struct smtp_conn *c, int fd, unsigned long long *sent);

/* ---- EHLO keywords ---- */

struct smtp_ext {
    int esmtp;               /* EHLO was accepted */
    int starttls, pipelining, eightbitmime, dsn, smtputf8, enhanced;
    int size;                /* SIZE offered; size_max 0 = no limit given */
    unsigned long long size_max;
    int auth_plain;
};
void smtp_ext_parse(struct smtp_ext *e, const struct smtp_reply *ehlo);

/* base64 of src[0..n) into dst (NUL-terminated): 1, or 0 with E2BIG */
int smtp_base64(const unsigned char *src, size_t n, char *dst, size_t cap);
/* (smtp_xtext, for ORCPT and ENVID, is in smtp_addr.h) */

/* ---- one transaction ---- */

enum smtp_tls_policy { SMTP_TLS_NONE, SMTP_TLS_MAY, SMTP_TLS_REQUIRE };

struct smtp_job {
    const char *helo;        /* our host name */
    const char *sender;      /* "" for <> */
    const char *rcpt;
    const char *orcpt;       /* "" or "rfc822;addr" (xtext) */
    const char *notify;      /* "" or "SUCCESS,FAILURE" ... */
    const char *envid;       /* "" or xtext */
    const char *ret;         /* NULL, "", "FULL" or "HDRS": RET= to a DSN server */
    int body8bit;            /* BODY=8BITMIME */
    int smtputf8;            /* the sender gave SMTPUTF8: passed on to a server that
                              * offers it; one that does not gets the message only
                              * if its header is ASCII, else 5.6.7 (RFC 6531 3.4) */
    int msgfd;
    unsigned long long size; /* for SIZE= */
    enum smtp_tls_policy tls;
    const char *auth_user;   /* NULL: no AUTH */
    const char *auth_pass;
    struct smtp_reuse *reuse;   /* NULL: one transaction, then QUIT */
};

/* Keeping a connection for the next transaction (smtp_transaction_multi).
 * established (in): c already carries a session past the greeting, EHLO,
 * STARTTLS and AUTH, whose EHLO keywords are in ext: go straight to MAIL.
 * Otherwise the session is opened and ext (out) gets its keywords.
 * keep (in): after a transaction that ended in 2yz to the data, send no
 * QUIT and set open (out): c is at a transaction boundary and may carry
 * the next MAIL. On an established session whose MAIL gets no reply (the
 * server closed it while it sat idle) or gets 421, nothing was accepted:
 * the result is SMTP_RECONNECT and the caller starts over on a new
 * connection. */
struct smtp_reuse {
    int established;
    int keep;
    struct smtp_ext ext;
    int open;
};

/* Called after "220" to STARTTLS: start TLS on c (replace c->tr).
 * 1, or 0 with why filled. */
typedef int smtp_starttls_fn(void *ctx, struct smtp_conn *c, char *why, size_t whylen);

enum smtp_outcome {
    SMTP_DELIVERED,          /* 2yz after DATA */
    SMTP_TEMPFAIL,           /* final for this job: temporary */
    SMTP_PERMFAIL,           /* final: permanent */
    SMTP_NEXT_HOST,          /* failed before MAIL, or 421 to it or to RCPT before any
                                recipient was accepted: try the next address */
    SMTP_RETRY_PLAIN,        /* opportunistic TLS handshake failed: retry this host without TLS */
    SMTP_RECONNECT,          /* a reused session was gone before MAIL was answered (smtp_reuse) */
    SMTP_LOOP                /* the server is this host ("5.4.6 mail loops back to myself"):
                              * it and the addresses after it are not tried (RFC 5321 5.1) */
};

/* Run one transaction on the connected c (greeting not yet read). peer
 * names the server in texts ("mx.example.net[192.0.2.1]"). status gets the
 * RFC 3463 text for the result ("5.1.1 host ... said: 550 5.1.1 ...").
 * Every wait is bounded by c->timeout_ms (the final reply to DATA by twice
 * that). */
enum smtp_outcome smtp_transaction(struct smtp_conn *c, const struct smtp_job *j,
                                   smtp_starttls_fn *starttls, void *tlsctx,
                                   const char *peer, char *status, size_t cap);

/* QUIT on a kept session (its reply awaited at most 5 s); the caller closes. */
void smtp_quit(struct smtp_conn *c);

/* ---- one transaction, several recipients ---- */

#define SMTP_RCPT_MAX 100        /* recipients in one transaction */

struct smtp_rcpt {
    const char *addr;
    const char *orcpt;       /* "" or "rfc822;addr" (xtext) */
    const char *notify;      /* "" or "SUCCESS,FAILURE" ... */
    enum smtp_outcome outcome;   /* out: SMTP_DELIVERED, SMTP_TEMPFAIL or SMTP_PERMFAIL */
    int dsn;                 /* out, with SMTP_DELIVERED: the server offered DSN, so
                              * it had this recipient's NOTIFY (and reports) */
    char *status;            /* out: the RFC 3463 text, status[cap] */
    size_t cap;
};

/* One transaction for n (1..SMTP_RCPT_MAX) recipients of the same message:
 * MAIL once, a RCPT for each (its own NOTIFY=/ORCPT=; j->rcpt, j->orcpt and
 * j->notify are ignored), DATA only if a RCPT was accepted. A failure that
 * concerns the whole transaction (before MAIL, MAIL refused, connection lost
 * before any RCPT is answered, bad sender) is returned, with status, and
 * applies to every recipient. SMTP_DELIVERED means: each r[i] has its own
 * outcome and status (a refused RCPT its reply; a "452" to a RCPT makes it
 * and, without PIPELINING, the ones not yet sent temporary; the accepted
 * ones the outcome of DATA). */
enum smtp_outcome smtp_transaction_multi(struct smtp_conn *c, const struct smtp_job *j,
                                         struct smtp_rcpt *r, size_t n,
                                         smtp_starttls_fn *starttls, void *tlsctx,
                                         const char *peer, char *status, size_t cap);

#endif
