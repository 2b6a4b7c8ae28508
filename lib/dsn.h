/* dsn.h - RFC 3464 delivery status notifications (bounces). */
#ifndef POSTERN_DSN_H
#define POSTERN_DSN_H

#include <stddef.h>
#include <time.h>

#include "envelope.h"   /* struct envelope, struct env_rcpt (queue/envelope.h) */
#include "buf.h"

enum dsn_kind { DSN_FAILURE, DSN_DELAY, DSN_SUCCESS };

struct dsn_item {
    const struct env_rcpt *rcpt;
    const char *action_status;   /* e.g. "5.1.1" */
    const char *diagnostic;      /* text, may be "" */
    const char *action;          /* NULL: the kind's (failed, delayed, delivered); or
                                  * "relayed" / "expanded" in a success report */
    time_t retry_until;          /* a delay report's Will-Retry-Until; 0: none */
};

/* At most this much of the original header section is returned. */
#define DSN_HEADERS_MAX 65536

/* Compose the whole DSN message (headers + multipart/report body, LF line
 * ends) into out: From: MAILER-DAEMON@reporting_host, To: the envelope
 * sender, Subject, Date, Message-ID, Auto-Submitted: auto-replied,
 * MIME multipart/report; report-type=delivery-status (global-delivery-status
 * for a global report, RFC 6533) with three parts:
 * a human-readable text, message/delivery-status (in RFC 3464's order:
 * Original-Envelope-Id if any, Reporting-MTA: dns;host, Arrival-Date,
 * X-Postern-Queue-ID, then per recipient Original-Recipient if ORCPT,
 * Final-Recipient (rfc822;addr), Action: failed|delayed|delivered,
 * Status, Diagnostic-Code: smtp; ... when given, Last-Attempt-Date, and in a delay
 * report Will-Retry-Until when the item has one), and the original
 * [a diagnostic "host H said: NNN text" (remote-deliverer's) gives Remote-MTA: dns; H
 * (the name, or the [literal]) and Diagnostic-Code: smtp; NNN text]
 * message's headers only (text/rfc822-headers) when e->ret_hdrs, or when
 * the message is larger than full_limit, else the whole message (message/rfc822).
 * msg/msglen: the original message as stored in the queue (LF line ends).
 * The MIME boundary must not occur in the message. Header values built from
 * envelope fields must be safe (no CR/LF injection). Returns 1, or 0 with errno.
 *
 * Details of this implementation:
 * - out is appended to; on failure it is left as it was (errno ENOMEM,
 *   EOVERFLOW, or EINVAL for no items, a NULL rcpt, a NULL/empty host).
 * - Only a failure report returns the whole message; delay and success
 *   reports return the header section (RFC 3461 section 4.3).
 * - Every envelope-derived value has control characters (CR, LF, NUL, TAB,
 *   DEL ...) and invalid 8-bit octets replaced by '?', and is shortened so no
 *   line passes 998 octets; ENVID and ORCPT are xtext-decoded first.
 * - An empty sender (the double-bounce case) addresses the report to
 *   postmaster@reporting_host; the caller picks the envelope recipient.
 * - If the envelope is SMTPUTF8 or an address is not ASCII, the report uses
 *   message/global-delivery-status and the "utf-8" address type (RFC 6533).
 * - If the result holds 8-bit octets (an 8-bit original, UTF-8 addresses) it
 *   says Content-Transfer-Encoding: 8bit; inject it with BODY=8BITMIME. */
int dsn_compose(enum dsn_kind kind, const struct envelope *e, const struct dsn_item *items, size_t nitems,
                const char *msg, size_t msglen, size_t full_limit, const char *reporting_host, time_t now, struct buf *out);

/* The same for a message of msgsize octets of which msg/msglen holds only
 * the beginning (at least its header section) when msglen < msgsize: it is
 * then never returned whole, and the text gives msgsize. dsn_compose() is
 * this with msgsize = msglen. */
int dsn_compose_sized(enum dsn_kind kind, const struct envelope *e, const struct dsn_item *items, size_t nitems,
                      const char *msg, size_t msglen, size_t msgsize, size_t full_limit, const char *reporting_host,
                      time_t now, struct buf *out);

#endif
