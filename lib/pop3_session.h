/* pop3_session.h - the POP3 protocol (RFC 1939, 2449 CAPA and response
 * codes, 3206, 5034 SASL PLAIN) as one state enum and a command table.
 *
 * The same machine serves both halves of a connection: the pre-login
 * session (AUTHORIZATION: USER/PASS, AUTH PLAIN, CAPA, QUIT), which hands
 * credentials out as POP3_LOGIN; and the mailbox process (TRANSACTION, then
 * UPDATE on QUIT) over a struct maildrop. The caller reads lines (io_getline)
 * and feeds them here; replies go to an io; the caller flushes when no more
 * input is buffered (so PIPELINING batches replies).
 *
 * Also here: the small fixed records between the pre-login session and its
 * root monitor (pop3_mon_*). */
#ifndef POSTERN_POP3_SESSION_H
#define POSTERN_POP3_SESSION_H

#include <stddef.h>
#include <stdint.h>

#include "io.h"
#include "maildrop.h"

#define POP3_LINE_MAX 255          /* a command line, CRLF included (RFC 2449) */
#define POP3_SASL_LINE_MAX 2048    /* a SASL response line (base64) */
#define POP3_USER_MAX 255
#define POP3_PASS_MAX 1024
#define POP3_TIMEOUT_MIN 600       /* RFC 1939: the autologout timer >= 10 min */
#define POP3_LOGIN_FAILURES_MAX 3  /* failed logins before the connection is closed */

enum pop3_state {
    POP3_AUTHORIZATION = 0,        /* before login */
    POP3_AUTH_PLAIN,               /* AUTH PLAIN sent "+ ", waiting for the response line */
    POP3_TRANSACTION,              /* logged in, maildrop open */
    POP3_DONE                      /* QUIT handled (UPDATE done) or closing */
};

enum pop3_action {
    POP3_CONTINUE = 0,
    POP3_LOGIN,                    /* user/pass filled: check them, then pop3_login_result */
    POP3_CLOSE,                    /* close the connection */
    POP3_STLS                      /* "+OK Begin TLS negotiation" said: discard the input
                                    * buffered, start TLS, then pop3_tls_started */
};

enum pop3_login { POP3_LOGIN_OK = 1, POP3_LOGIN_BAD, POP3_LOGIN_TEMP };

struct pop3_session {
    enum pop3_state state;
    struct io *out;
    struct maildrop *md;           /* TRANSACTION only */
    unsigned errors, max_errors;
    unsigned login_failures;
    int have_user;
    int tls;                       /* the connection is TLS (STLS done, or pop3s) */
    int stls;                      /* STLS may be offered (tls-proxy available) */
    int plain_ok;                  /* USER/PASS/AUTH allowed without TLS (policy) */
    size_t userlen, passlen;
    char user[POP3_USER_MAX + 1];
    char pass[POP3_PASS_MAX + 1];
};

void pop3_init(struct pop3_session *s, struct io *out, unsigned max_errors);
/* "+OK POP3 server ready <hostname>" */
int pop3_greeting(struct pop3_session *s, const char *hostname);
/* Security of the connection: tls (already TLS), stls (STLS offered while
 * not TLS), plain_ok (logins allowed without TLS: pop3_plaintext_auth is
 * "always", or "loopback" and the client is on loopback). Without TLS and
 * plain_ok, CAPA lists neither USER nor SASL, and USER, PASS and AUTH get
 * "-ERR [AUTH] Plaintext authentication disallowed without TLS" (RFC 2595).
 * pop3_init allows plaintext logins and offers no STLS; pop3_tls_started
 * after STLS: TLS on, USER forgotten. In TRANSACTION, CAPA lists what it
 * listed at the login (RFC 2449 5): USER and SASL, STLS if not TLS and
 * offered; the mailbox process sets tls and stls as the session had them. */
void pop3_set_security(struct pop3_session *s, int tls, int stls, int plain_ok);
void pop3_tls_started(struct pop3_session *s);
/* pop3_plaintext_auth ("loopback", "always", "never") for a client address
 * (text): 1 allowed, 0 not; -1 for an unknown policy */
int pop3_plain_policy(const char *policy, const char *addr);

/* enter TRANSACTION over md (the mailbox process, after its "+OK Logged in.") */
void pop3_begin_transaction(struct pop3_session *s, struct maildrop *md);

/* how a line given to pop3_line ended */
enum pop3_line_end {
    POP3_LINE_WHOLE = 0,           /* at CRLF (or a bare LF) */
    POP3_LINE_LONG,                /* the reader hit its limit first (the caller
                                    * skips the rest of the line, to LF) */
    POP3_LINE_BARE_CR              /* at a CR without LF, which ends no line in
                                    * POP3 (RFC 1939: CRLF): the caller skips the
                                    * rest, to LF; the whole line is refused */
};

/* One line as read (terminator not included), ended as end says.
 * Returns 1, or 0 on an output error (errno); *act says what next. */
int pop3_line(struct pop3_session *s, const char *line, size_t len, enum pop3_line_end end,
              enum pop3_action *act);
/* Would pop3_line(s, line, len, end) enter the UPDATE state (QUIT in
 * TRANSACTION)? 1 or 0: the mailbox process holds its stop signals
 * through an UPDATE, so that a stop never leaves one half done */
int pop3_enters_update(const struct pop3_session *s, const char *line, size_t len, enum pop3_line_end end);
/* how a line of len octets read into a buffer of max ended (its io_eol):
 * the pop3_line_end to hand pop3_line, its rest skipped to LF where it
 * has one (a long line, one with a bare CR); 0 at the end of input inside
 * the line, which is not run (the caller flushes the replies so far and
 * ends) */
int pop3_line_take(struct io *in, enum io_eol eol, size_t len, size_t max, enum pop3_line_end *end);
/* Answer a POP3_LOGIN: OK writes nothing (the mailbox process will speak);
 * BAD and TEMP write the -ERR and return to AUTHORIZATION, except that the
 * POP3_LOGIN_FAILURES_MAX-th BAD leaves the state POP3_DONE: the caller
 * then closes the connection. Wipes the password. */
int pop3_login_result(struct pop3_session *s, enum pop3_login r);
void pop3_wipe(struct pop3_session *s);

/* --- session <-> monitor records (one SOCK_SEQPACKET datagram each) ---
 * request: 'L' u16 userlen u16 passlen u16 leftlen (big-endian), then the
 *          bytes of user, password and the client bytes read past the
 *          login line (PIPELINING), for the mailbox process to serve first.
 * reply:   one byte: 'o' (logged in: the session exits silently),
 *          'b' (bad credentials), 't' (temporary failure). */
#define POP3_MON_LEFT_MAX 4096
#define POP3_MON_REC_MAX (7 + POP3_USER_MAX + POP3_PASS_MAX + POP3_MON_LEFT_MAX)

struct pop3_mon_request {
    size_t userlen, passlen, leftlen;
    char user[POP3_USER_MAX + 1];
    char pass[POP3_PASS_MAX + 1];
    char left[POP3_MON_LEFT_MAX];
};

int pop3_mon_request_format(const char *user, size_t userlen, const char *pass, size_t passlen,
                            const void *left, size_t leftlen, char *dst, size_t cap, size_t *len);
int pop3_mon_request_parse(const char *rec, size_t len, struct pop3_mon_request *r);

#endif
