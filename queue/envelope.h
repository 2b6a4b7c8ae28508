/* envelope.h - the queue's envelope file (queue/env/<h>/ID): reading,
 * writing and validating it. Plain text, one field per line, so an operator
 * can read it with cat (format in docs/QUEUE.md). No field may contain CR,
 * LF or NUL; every field is bounded. */
#ifndef POSTERN_ENVELOPE_H
#define POSTERN_ENVELOPE_H

#include <stddef.h>
#include <time.h>

#include "buf.h"

#define ENV_ID_LEN 16          /* queue IDs: 16 upper-case hex digits */
#define ENV_ADDR_MAX 256       /* sender / recipient address, no brackets */
#define ENV_FIELD_MAX 1024     /* any other field (client, error text, orcpt) */
#define ENV_RCPT_MAX 100000    /* recipients one envelope may hold */

/* A state that says a report is due keeps saying so until queue-manager
 * has queued that report, so a crash in between loses no report. */
enum env_rcpt_state {
    ENV_RCPT_PENDING = 0,  /* not yet delivered (maybe tried: see attempts) */
    ENV_RCPT_DONE,         /* delivered; nothing left to report */
    ENV_RCPT_FAILED,       /* failed permanently; a bounce is due */
    ENV_RCPT_BOUNCED,      /* failed and its DSN is queued (or not wanted) */
    ENV_RCPT_DELAYED,      /* not yet delivered; a delay report (NOTIFY=DELAY) is due */
    ENV_RCPT_DELIVERED,    /* delivered; a success report (NOTIFY=SUCCESS) is due */
    ENV_RCPT_RELAYED,      /* passed to a next hop without DSN; a success report is due */
    ENV_RCPT_EXPANDED      /* an alias, sent on to its targets; a success report is due */
};
#define ENV_RCPT_NSTATES 8

/* the state's name in the file ("pending", "done", ...) */
const char *envelope_state_name(enum env_rcpt_state s);
/* still to be delivered: pending or delayed */
int env_rcpt_pending(enum env_rcpt_state s);
/* delivered, with a success report due: delivered, relayed or expanded */
int env_rcpt_success_due(enum env_rcpt_state s);

struct env_rcpt {
    enum env_rcpt_state state;
    unsigned attempts;
    time_t next_try;                 /* 0 = as soon as possible */
    unsigned notify;                 /* SMTP_NOTIFY_* bits of smtp_addr.h, 0 = default */
    char addr[ENV_ADDR_MAX + 1];
    /* malloc'd, NULL if none (read them through env_text()): most
     * recipients have neither, and an envelope may hold ENV_RCPT_MAX
     * recipients, so they are not fixed-size fields */
    char *orcpt;
    char *last_error;                /* RFC 3463 code first */
};

/* s, or "" for NULL: an env_rcpt's orcpt or last_error as a string */
const char *env_text(const char *s);
/* Set r's last_error to text (NULL or "": none), cut to ENV_FIELD_MAX
 * octets, control characters replaced (envelope_text_clean). 0 with errno
 * ENOMEM, the old text kept. */
int env_rcpt_set_error(struct env_rcpt *r, const char *text);

struct envelope {
    char id[ENV_ID_LEN + 1];
    time_t birth;
    char sender[ENV_ADDR_MAX + 1];   /* "" for the null path */
    char client[ENV_FIELD_MAX + 1];  /* informational, "" if none */
    char envid[ENV_FIELD_MAX + 1];   /* DSN ENVID, "" if none */
    int ret_hdrs;                    /* DSN RET=HDRS (else FULL/default) */
    int ret_given;                   /* RET was given (FULL or HDRS): the "ret" line */
    int body_8bit;                   /* BODY=8BITMIME */
    int smtputf8;
    int is_bounce;                   /* this message is a DSN we generated */
    size_t nrcpt;
    struct env_rcpt *rcpt;           /* malloc'd array of nrcpt */
    size_t rcpt_cap;                 /* slots allocated, kept by envelope_add_rcpt; whoever
                                        sets rcpt to an array of its own sets this to 0 */
};

void envelope_init(struct envelope *e);
/* frees the recipients (and their strings) */
void envelope_free(struct envelope *e);
/* append one recipient (copied); 0 with errno E2BIG / ENOMEM / EINVAL */
int envelope_add_rcpt(struct envelope *e, const char *addr, unsigned notify, const char *orcpt);

/* Render as text into out (appended). 0 with errno EINVAL if a field holds
 * CR, LF, NUL (or any other control character, TAB included: the rcpt line
 * is tab-separated) or is too long, the id is invalid, or there is no
 * recipient. Format: docs/QUEUE.md. */
int envelope_format(const struct envelope *e, struct buf *out);
/* Parse text. 0 with errno EINVAL and why[] naming the line and what is wrong
 * ("line N: what"). e is overwritten (initialised first, not freed): pass a
 * fresh or freed envelope; on failure nothing stays allocated. */
int envelope_parse(struct envelope *e, const char *text, size_t len, char *why, size_t whylen);

/* Additions (queue-inject's author): */
/* 1 if s is at most max bytes and holds no control character (CR, LF, NUL,
 * TAB, DEL ...): what every envelope field must satisfy */
int envelope_text_ok(const char *s, size_t max);
/* 1 if s[0..n) holds no control character: the same test on bytes that are
 * not a C string (queue-inject's records) */
int envelope_bytes_ok(const char *s, size_t n);
/* replace each control character of s by '?' (e.g. a remote server's reply
 * before it goes into last_error) */
void envelope_text_clean(char *s);
/* DSN NOTIFY bits <-> "SUCCESS,FAILURE,DELAY" / "NEVER" / "" (0 = default).
 * parse: case-insensitive, no duplicates, NEVER alone; 0 with errno EINVAL */
int envelope_notify_format(unsigned notify, char *dst, size_t dstlen);
int envelope_notify_parse(const char *s, size_t len, unsigned *notify);

/* a valid queue ID (16 upper-case hex digits) */
int envelope_id_valid(const char *id);
/* the subdirectory name ("0".."F") for an ID: its last hex digit */
char envelope_id_hash(const char *id);

#endif
