/* queue_inject.h - queue-inject's work, where Check tests reach it: read the
 * message (fd 0), read and check the NUL-framed envelope records (fd 1,
 * docs/INTERFACES.md), and commit both into the queue crash-safely
 * (docs/QUEUE.md "commit protocol"). */
#ifndef POSTERN_QUEUE_INJECT_H
#define POSTERN_QUEUE_INJECT_H

#include <stddef.h>
#include <sys/types.h>

#include "buf.h"
#include "envelope.h"
#include "queue_path.h"

#define INJECT_RECORD_MAX 1024      /* one envelope record, letter included */
#define INJECT_MEM_MAX (1u << 20)   /* message bytes kept in memory before spilling to tmp/ */

/* exit codes of queue-inject (docs/INTERFACES.md) */
#define INJECT_EXIT_OK 0
#define INJECT_EXIT_NOSPACE 53
#define INJECT_EXIT_TEMP 54
#define INJECT_EXIT_UNENDED 55
#define INJECT_EXIT_MALFORMED 31

/* the system user smtp-listener runs queue-inject as (user_smtp's default) */
#define INJECT_SMTP_USER "postern-smtp"

/* the envelope as received: the queue envelope plus the Received: field */
struct inject_env {
    struct envelope env;
    struct buf received;   /* "Received: ..." without final LF, or empty */
    unsigned seen;         /* records seen (internal) */
    uid_t caller;          /* real uid of the caller, recorded in client */
    /* the recipients so far, hashed (internal): a T record that repeats
     * one (same address, NOTIFY and ORCPT) adds nothing, so the message is
     * delivered once to an address given twice (a RCPT repeated, the same
     * address in To: and Cc: of sendmail -t), as Postfix's cleanup does */
    size_t *dup_slot;      /* 0 empty, else recipient index + 1 */
    size_t dup_cap;        /* slots: a power of two, at least twice nrcpt */
};

void inject_env_init(struct inject_env *ie, uid_t caller);
void inject_env_free(struct inject_env *ie);
/* One record (letter + value, no NUL, len <= INJECT_RECORD_MAX). 0 with
 * errno EPROTO and why[] if malformed (ENOMEM possible). */
int inject_env_record(struct inject_env *ie, const char *rec, size_t len, char *why, size_t whylen);
/* After the empty record: checks that F and a T came. 0/EPROTO + why. */
int inject_env_finish(struct inject_env *ie, char *why, size_t whylen);
/* For a caller that is not part of postern (an ordinary local user): put
 * queue-inject's own trace line, "Received: (postern queue-inject invoked
 * by uid N);" and the date (UTC), above the caller's H field (or alone), so
 * that the caller's line can never pass for this host's topmost one.
 * 0 with errno (ENOMEM). */
int inject_env_local_trace(struct inject_env *ie, time_t now);
/* Read records from fd up to the empty record (nothing after it is read).
 * 0 with errno: EPROTO malformed (why set), EPIPE input ended before the
 * empty record (the caller aborted), or the read error. */
int inject_env_read(struct inject_env *ie, int fd, char *why, size_t whylen);

/* The message: in memory up to INJECT_MEM_MAX bytes, the rest spilled to
 * ROOT/queue/tmp/<spill_name> (unlinked by inject_msg_free). */
struct inject_msg {
    struct buf mem;
    int spill_fd;                 /* -1 if everything is in mem */
    int qfd;                      /* ROOT/queue directory */
    char spill_name[ENV_ID_LEN + 16];   /* tmp/<h>/ID.s */
    unsigned long long len;       /* total bytes */
};

/* qfd: an open ROOT/queue directory (kept, not closed by us). */
void inject_msg_init(struct inject_msg *m, int qfd);
void inject_msg_free(struct inject_msg *m);
/* read fd to EOF; 0 with errno (read error, ENOSPC...) */
int inject_msg_read(struct inject_msg *m, int fd, size_t mem_max);

struct commit_stats {
    unsigned fsyncs;    /* fsync calls made */
    int todo_failed;    /* committed, but todo/ID could not be made (errno logged by caller) */
    int todo_errno;
};

/* Commit: write tmp/ID.m (Received line + message) and tmp/ID.e, fsync
 * both, rename mess/<h>/ID (no replace), fsync mess/<h>, rename env/<h>/ID,
 * fsync env/<h> (the commit point), link todo/ID, pull the trigger.
 * Fills ie->env.id/birth/client and id[ENV_ID_LEN + 1]. 1 = committed.
 * 0 with errno = not committed and nothing visible (tmp files removed).
 * root is used only for the trigger; qfd is ROOT/queue. */
int queue_commit(int qfd, const char *root, struct inject_env *ie, struct inject_msg *m,
                 char *id, struct commit_stats *st);

/* exit code for a failure errno: ENOSPC/EDQUOT 53, EPROTO 31, EPIPE 55, else 54 */
int inject_exit_code(int err);

#endif
