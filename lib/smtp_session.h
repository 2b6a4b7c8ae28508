/* smtp_session.h - the SMTP server session (RFC 5321 with PIPELINING, SIZE,
 * 8BITMIME, ENHANCEDSTATUSCODES, DSN, SMTPUTF8, CHUNKING/BDAT, ETRN,
 * STARTTLS (RFC 3207), and AUTH PLAIN/LOGIN (RFC 4954) on submission) as one
 * explicit state machine: a state enum and a table of {verb, states it is
 * allowed in, reply when it is not, action}. The session only talks to the
 * client's file descriptor and to an injector (how a message reaches
 * queue-inject, and how a queue run is asked for), so a unit test can drive
 * it from a socketpair with an injector of its own.
 *
 * Line ends (documented choice, compare Postfix >= 3.9's default
 * smtpd_forbid_bare_newline = normalize):
 *  - a command line ends at CRLF; a bare LF is accepted as its end too (what
 *    people typing into netcat send); a bare CR is no line end: the line is
 *    answered "500 5.5.2 Error: bare <CR> received";
 *  - message data ends only at CRLF "." CRLF, where the line before also
 *    ended in CRLF. "\n.\n", "\r.\r", "\n.\r\n", "\r\n.\n", "\r\n.\r" are
 *    never the end (the one exception: a client that ended DATA itself
 *    with a bare LF ends its data with a "." line however it ends). A bare
 *    LF inside the data is a line end (Postfix's "normalize"); a message
 *    holding a bare CR is read to its real end and refused: "550 5.5.2
 *    Error: bare <CR> in message data" (the session goes on).
 *  - a command line holds at most 512 octets with its CRLF, MAIL 1148 and
 *    RCPT 1012 (line_limit) ("500 5.5.2 Error: line too long"); past
 *    SMTP_DISCARD_MAX octets, bare CRs included, or the timeout, the
 *    session ends with 421; NUL in a command is refused.
 *
 * Sessions must start with HELO or EHLO (as the operators' guides show):
 * MAIL before it gets "503 5.5.1 Error: send HELO/EHLO first". */
#ifndef POSTERN_SMTP_SESSION_H
#define POSTERN_SMTP_SESSION_H

#include <stddef.h>
#include <sys/socket.h>

#include "config.h"
#include "io.h"
#include "smtp_addr.h"
#include "smtp_rcptmap.h"

#define SMTP_CMD_MAX 512          /* octets of a command line with its CRLF */
#define SMTP_MAIL_LINE_MAX (512 + 100 + 26 + 500 + 10)  /* MAIL with its parameters (line_limit) */
#define SMTP_RCPT_LINE_MAX (512 + 500)                  /* RCPT with NOTIFY and ORCPT */
/* AUTH with an initial response as long as a response line (sasl.h
 * SASL_LINE_MAX): "AUTH PLAIN " or "AUTH LOGIN ", 2048 octets of base64, CRLF */
#define SMTP_AUTH_LINE_MAX (11 + 2048 + 2)
#define SMTP_LINE_READ_MAX SMTP_AUTH_LINE_MAX             /* the longest of them all */
#define SMTP_TEXT_MAX 1000        /* DATA is read in pieces of this size */
#define SMTP_DISCARD_MAX (1u << 20) /* an overlong command line: close past this */

enum smtp_state {
    SMTP_S_START = 0,   /* greeted, no HELO/EHLO yet */
    SMTP_S_READY,       /* HELO/EHLO done, no transaction */
    SMTP_S_MAIL,        /* MAIL accepted */
    SMTP_S_RCPT,        /* at least one RCPT accepted */
    SMTP_S_BDAT,        /* BDAT chunks arriving (not yet LAST) */
    SMTP_S_QUIT,        /* the session is over */
    SMTP_S_COUNT
};

/* How a message reaches queue-inject. start() hands over the read end of the
 * message pipe and the envelope socket (the session closes its own copies
 * right after); finish() waits for queue-inject and gives its exit code
 * (-1 if it was killed). trigger() asks for a queue run (ETRN). */
struct smtp_injector {
    void *ctx;
    int (*start)(void *ctx, int msg_fd, int env_fd);
    int (*finish)(void *ctx, int *status);
    int (*trigger)(void *ctx);
    /* STARTTLS: hand over the client socket (the caller closes its copy
     * afterwards); 1 and *plain_fd, the new connection through tls-proxy,
     * or 0. NULL: TLS is not available (454). */
    int (*starttls)(void *ctx, int client_fd, const char *id, int *plain_fd);
    /* AUTH: check a password; SMTP_AUTH_OK (name[0..namelen) gets the
     * canonical user name), SMTP_AUTH_BAD or SMTP_AUTH_TEMP. NULL: AUTH is
     * not available. */
    int (*auth)(void *ctx, const char *user, size_t ulen, const char *pass, size_t plen,
                char *name, size_t namelen);
};

/* results of injector.auth (the values of enum auth_result, authproto.h) */
enum { SMTP_AUTH_OK = 1, SMTP_AUTH_BAD = 2, SMTP_AUTH_TEMP = 3 };

/* which kind of listening address the connection came in on */
enum smtp_port {
    SMTP_PORT_SMTP = 0,        /* 25: MX service; STARTTLS offered, AUTH never */
    SMTP_PORT_SUBMISSION = 1,  /* 587: STARTTLS, then AUTH; MAIL needs both */
    SMTP_PORT_SMTPS = 2        /* 465: implicit TLS (RFC 8314), then AUTH */
};

struct smtp_rcpt {
    char addr[SMTP_PATH_MAX + 1];
    unsigned notify;
    char orcpt[SMTP_ORCPT_MAX + 1];
};

struct smtp_msgbody;

/* Commands that move no mail (NOOP, RSET, VRFY, HELP, EXPN, ETRN) a session
 * may send between two messages before each further one counts as an error
 * towards max_errors: otherwise a client could hold one of max_sessions
 * forever with a NOOP every few minutes. Postfix's smtpd_junk_command_limit
 * is the same rule with the same 100. */
#define SMTP_JUNK_MAX 100

/* RCPTs past max_recipients get 452 (RFC 5321 4.5.3.1.10: the client
 * sends them in a later transaction) without counting towards max_errors:
 * this many, or max_recipients where that is more. A list of several
 * hundred sent in one transaction (smtplib does; so does any client that
 * pipelines its RCPTs) then keeps the recipients taken. Postfix's
 * smtpd_recipient_overshoot_limit is the same rule with the same 1000. */
#define SMTP_RCPT_OVERSHOOT_MIN 1000

struct smtp_session {
    const struct config *cf;
    const struct smtp_rcptmap *map;
    const struct smtp_injector *inj;
    enum smtp_state state;
    struct io in, out;
    enum io_eol cmd_eol;             /* how the last command line ended (CRLF or LF) */
    char id[32];                     /* session id, first field of log lines */
    char client[64];                 /* peer address as text */
    int relay_ok;                    /* client inside relay_networks */
    struct sockaddr_storage local;   /* our address on this connection (AF_UNSPEC: unknown) */
    int submission;                  /* came in on a submission port (587, 465) */
    int local_submission;            /* sendmail -bs: a local user's dialogue on stdin */
    enum smtp_port port;
    int tls;                         /* the connection is TLS (through tls-proxy) */
    int tls_pending;                 /* implicit TLS: the "TLS ..." line is still to come */
    char tls_version[16];            /* "TLSv1.3" */
    char tls_cipher[64];             /* "TLS_AES_256_GCM_SHA384" */
    char auth_user[256];             /* authenticated as (canonical name), "" if not */
    unsigned long auth_failures;
    int esmtp;                       /* EHLO (not HELO) was used */
    char helo[256];                  /* sanitised HELO/EHLO name, a domain's 255 octets */
    int first;                       /* no command read yet */
    /* the transaction */
    struct smtp_path sender;
    struct smtp_mail_params mp;
    struct smtp_rcpt *rcpt;
    size_t nrcpt, rcpt_cap;
    size_t rcpt_overshoot;           /* RCPTs refused past max_recipients */
    size_t rcpt_tried;               /* RCPT commands in this transaction */
    struct smtp_msgbody *body;          /* BDAT in progress */
    int msg_fd, env_fd;              /* BDAT in progress: our ends */
    unsigned long long bdat_total;
    /* counters for the log */
    unsigned long commands, errors, messages, rejected, msg_seq;
    unsigned long errors_run;   /* errors since the last message queued: max_errors */
    unsigned long junk;         /* NOOP, RSET, VRFY, HELP, EXPN, ETRN since then: SMTP_JUNK_MAX */
    const char *end_reason;
    const sigset_t *stop_mask;       /* smtp_session_stop_on(): waits for a command run under it */
    int write_failed;                /* a reply could not be written: end */
    int wipe_input;                  /* the command just run read a secret (AUTH) */
    const char *verb;                /* the command being answered (log) */
    char logarg[300];                /* its log-safe argument, "" if none */
    unsigned char inbuf[8192];
    unsigned char outbuf[4096];
};

/* Set up a session on fd (read and write) for a peer that came in on a port
 * of the given kind (enum smtp_port). Everything the session needs is
 * passed in: it opens no file. For SMTP_PORT_SMTPS, fd is already the
 * plaintext end of tls-proxy: the session first reads its "TLS ..." line
 * (EOF: the handshake failed, the session ends without a word). id is the
 * session id its log lines start with (smtp_session_make_id(); the caller
 * makes it first when another process logs for the same session, as
 * tls-proxy on port 465 does), or NULL for a new one. */
void smtp_session_init(struct smtp_session *s, const struct config *cf,
                       const struct smtp_rcptmap *map, const struct smtp_injector *inj,
                       int fd, const struct sockaddr *peer, int port, const char *id);
/* a new session id into dst (the time and this process's pid in hex) */
void smtp_session_make_id(char *dst, size_t dstlen);
/* Our own address on this connection (getsockname of the TCP socket, taken
 * by the caller before tls-proxy stands in between), for the address
 * literal that names this host (RFC 1123 5.2.17); unset, no literal is ours. */
void smtp_session_set_local(struct smtp_session *s, const struct sockaddr *local, socklen_t len);
/* From now on, sig asks the session to stop: it is blocked, except while
 * the session waits for the client's next command; a sig that arrives
 * then, or came earlier, ends the session with "421 4.3.2 ... shutting
 * down" at that point (end reason "shutdown"). A transaction in progress
 * (DATA, BDAT, a command being answered) is finished first, and pipelined
 * commands already read are answered. 1, or 0 with errno. */
int smtp_session_stop_on(struct smtp_session *s, int sig);
/* Greet and serve until QUIT, EOF, timeout or a fatal error; logs the
 * disconnect line. 1 after QUIT, 0 otherwise (s->end_reason says why). */
int smtp_session_run(struct smtp_session *s);
void smtp_session_free(struct smtp_session *s);

/* The Received: field (without final LF, folded with "\n\t") into dst.
 * rcpt may be NULL; tls (e.g. "TLSv1.3 with cipher TLS_AES_128_GCM_SHA256")
 * may be NULL. Exposed for tests. 0 with ENOSPC if it does not fit. */
int smtp_received(char *dst, size_t dstlen, const char *helo, const char *client,
                  const char *hostname, const char *proto, const char *id,
                  const char *rcpt, const char *tls, long long now);

/* The RFC 3848 / RFC 6531 "with" keyword: (UTF8)SMTP, (UTF8)ESMTP plus S
 * for TLS and A for an authenticated client (ESMTPS, ESMTPA, ESMTPSA...). */
const char *smtp_with_proto(int esmtp, int utf8, int tls, int auth);

/* Parse tls-proxy's line "TLS <version> <cipher> <sni|->" (without LF):
 * 1 and the version / cipher (printable, bounded), or 0. */
int smtp_tls_line(const char *line, size_t len, char *version, size_t vlen,
                  char *cipher, size_t clen);

/* Map queue-inject's exit code to the reply line (no CRLF); "" for 0. */
const char *smtp_inject_reply(int status);

#endif
