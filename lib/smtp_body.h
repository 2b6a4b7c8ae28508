/* smtp_body.h - the message body on its way from the SMTP client to
 * queue-inject: takes DATA lines (already dot-unstuffed, with how each line
 * ended) or BDAT octets, turns CRLF into LF, streams the result to a file
 * descriptor through a small buffer, and on the way counts the size, counts
 * the Received: fields of the header section (hop limit) and notes any bare
 * CR (which the session refuses) or bare LF (which it takes as a line end,
 * as Postfix's "normalize" does). The size limit is on the client's octets
 * as RFC 1870 counts a message, the SIZE that EHLO advertises: line ends
 * as sent (CRLF is 2), without DATA's dot-stuffing. The header section
 * ends at its blank line or at its first line that is neither a field nor
 * a continuation, before which a blank line is put (as Postfix's cleanup
 * does), so that text without a header is not read as one; a first line
 * that is an mbox "From " line is no such line: it is kept as the field
 * "X-Mailbox-Line: From ..." (as Postfix's cleanup keeps it). For a
 * submission it can also add the Date:, Message-ID: and From: fields a
 * message lacks (RFC 6409 8), at the end of its header section. It keeps
 * the first Message-ID field's value for the log (as Postfix logs
 * message-id=). Nothing else is kept in memory beyond the buffer. */
#ifndef POSTERN_SMTP_BODY_H
#define POSTERN_SMTP_BODY_H

#include <stddef.h>

#include "io.h"

#define SMTP_BODY_BUF 8192
#define SMTP_BODY_ADD_MAX 300    /* one added field, "From: <256-octet address>" */
#define SMTP_BODY_NAME_MAX 998   /* a field's colon is among the first so many octets of its line */
#define SMTP_BODY_MBOX_TAG "X-Mailbox-Line: "  /* put before a first line "From ..." */
#define SMTP_BODY_MSGID_MAX 250  /* the Message-ID kept for the log, at most */

enum { SMTP_BODY_DATE, SMTP_BODY_MSGID, SMTP_BODY_FROM, SMTP_BODY_NADD };

struct smtp_msgbody {
    int fd;                      /* where the message goes; -1 = discard */
    int timeout_ms;
    unsigned long long size;     /* octets of the stored form (LF line ends, added fields) */
    unsigned long long octets;   /* the client's octets as RFC 1870 counts them (CRLF 2,
                                    no dot-stuffing, nothing added): what max_size limits */
    unsigned long long max_size;
    unsigned long hops;          /* Received: fields in the header section */
    int too_big;                 /* octets went past max_size: stopped writing */
    int bare_cr;                 /* a CR not followed by LF was seen */
    int bare_lf;                 /* an LF without its CR was seen (stored as a line end) */
    int write_failed;            /* the reader went away or a write failed */
    int in_headers;
    int pending_cr;              /* BDAT: chunk ended in CR, LF may follow */
    size_t line_len;             /* octets on the current line so far */
    size_t prefix_len;
    char prefix[11];             /* the line's first octets: "Received:", "Message-ID:" ... */
    int line_kind;               /* header section: the line is 0 or 3 not yet known (3: white
                                    space after its name), 1 a field (or its continuation),
                                    2 not a field */
    int fields;                  /* the header section has had a field */
    size_t line_start;           /* where the current line starts in buf */
    int line_cut;                /* the current line started past max_size: none of it is stored */
    char add[SMTP_BODY_NADD][SMTP_BODY_ADD_MAX];   /* fields to add if missing, "" = none */
    char msgid[SMTP_BODY_MSGID_MAX + 1];   /* the first Message-ID field's value, its printable
                                              octets only (no white space, '"' or '\\'), for the
                                              log; "" if none, cut at SMTP_BODY_MSGID_MAX */
    size_t msgid_len;
    int msgid_state;             /* 0 none yet, 1 in its value, 2 after its line (a
                                    continuation may follow), 3 done */
    size_t len;
    unsigned char buf[SMTP_BODY_BUF];
};

void smtp_body_init(struct smtp_msgbody *b, int fd, unsigned long long max_size, int timeout_ms);
/* Add these fields (each "Name: value", no line end; NULL = not this one)
 * where the header section ends if it has no field of that name: before
 * its blank line (the one put in before a line that is not a field too),
 * or at the end of a message that is all header. Call after
 * smtp_body_init, before the first line. 0 with EINVAL if a field is too
 * long or holds a control character. */
int smtp_body_add_missing(struct smtp_msgbody *b, const char *date, const char *msgid, const char *from);
/* content of a DATA line (no line end) then how it ended: CRLF is a line
 * end, bare LF or CR are stored as LF but set b->bare_lf or b->bare_cr,
 * NONE adds nothing */
void smtp_body_line(struct smtp_msgbody *b, const char *p, size_t n, enum io_eol eol);
/* raw BDAT octets in SMTP form (CRLF line ends), any chunking */
void smtp_body_octets(struct smtp_msgbody *b, const char *p, size_t n);
/* end of the message: a CR still pending is bare; an unfinished last line
 * gets its LF; flush. 1 if everything reached fd, 0 if not. */
int smtp_body_finish(struct smtp_msgbody *b);

#endif
