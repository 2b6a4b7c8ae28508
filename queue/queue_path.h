/* queue_path.h - the queue's names: new queue IDs, the path of each queue
 * file, the directory tree, and the trigger FIFO (docs/QUEUE.md).
 *
 *   ROOT/queue/tmp/<h>/        injections in progress (ID.m, ID.e, ID.s)
 *   ROOT/queue/tmp/            queue-manager's envelope rewrites (qm.ID);
 *                              injections too where tmp/<h> is missing
 *   ROOT/queue/mess/<h>/ID     message bodies        h = last hex digit of ID
 *   ROOT/queue/env/<h>/ID      envelopes (queue/envelope.h)
 *   ROOT/queue/todo/ID         "new message" marker (a hard link of env/<h>/ID)
 *   ROOT/queue/bounce/         queue-manager's bounce work
 *   ROOT/queue/lock/trigger    FIFO: one byte written = "look at todo/"
 *
 * Paths are built into caller buffers of QUEUE_PATH_MAX bytes; a ROOT too
 * long to fit is refused with ENAMETOOLONG. */
#ifndef POSTERN_QUEUE_PATH_H
#define POSTERN_QUEUE_PATH_H

#include <stddef.h>
#include <sys/types.h>
#include <time.h>

#include "envelope.h"

#define QUEUE_PATH_MAX 4096

enum queue_kind {
    QUEUE_MESS,   /* queue/mess/<h>/ID */
    QUEUE_ENV,    /* queue/env/<h>/ID */
    QUEUE_TODO,   /* queue/todo/ID */
    QUEUE_TMP,    /* queue/tmp/ID (callers add a suffix of their own) */
    QUEUE_BOUNCE  /* queue/bounce/ID */
};

/* A new ID into id[ENV_ID_LEN + 1]: 8 hex digits of now (time(NULL), wraps
 * in 2106) and 8 from getrandom(). 0 with errno if no randomness. */
int queue_id_new(char *id);
/* the same with the time given (tests) */
int queue_id_make(char *id, time_t now);
/* the birth time encoded in a valid ID */
time_t queue_id_time(const char *id);

/* ROOT/queue/<kind>/[<h>/]ID into dst[dstlen]. id must be valid. */
int queue_path(char *dst, size_t dstlen, const char *root, enum queue_kind kind, const char *id);
/* ROOT/queue/<sub> (sub e.g. "tmp", "mess/A", "lock/trigger") */
int queue_dir(char *dst, size_t dstlen, const char *root, const char *sub);

/* Create ROOT/queue and everything in it that is missing (directories
 * 0750, tmp/ and tmp/<h> 0700, the FIFO lock/trigger 0600), owned by uid:gid when
 * uid != (uid_t)-1 (needs root), else by the caller. Existing entries get
 * their owner and mode fixed too. Idempotent. ROOT itself must exist.
 * Used by postern-setup and by tests.
 *
 * tmp/ is marked "top of a directory hierarchy" (FS_TOPDIR_FL, chattr +T;
 * best effort, ext4 honours it) before tmp/<h> are made, so that ext4's
 * Orlov allocator spreads them over block groups: a new file's inode comes
 * from its directory's group, and ext4 without a journal scans past every
 * inode of that group freed in the last 5 s (up to 305 s) on each
 * allocation. With one tmp/ in the group that the whole queue (and any
 * other churn near ROOT) frees into, that scan cost 0.3 ms per file here
 * (docs/QUEUE.md). */
int queue_tree_create(const char *root, uid_t uid, gid_t gid);

/* ROOT of the program that is running: dirname(dirname(/proc/self/exe)),
 * i.e. ROOT/bin/<program> -> ROOT. For queue-inject and sendmail, which must
 * not take ROOT from the environment of an untrusted caller. 1, or 0 (no
 * /proc, or the path does not fit root[0..len)). */
int queue_root_from_exe(char *root, size_t len);

/* Open ROOT/queue/lock/trigger (its path into path[0..pathlen)) for
 * writing, O_NONBLOCK: the fd, or -1 with errno (ENXIO: nobody reads it,
 * queue-manager is not running; EINVAL: it is not a FIFO; path "" when
 * the path itself could not be made). */
int queue_trigger_open(const char *root, char *path, size_t pathlen);

/* Pull the trigger: open ROOT/queue/lock/trigger O_WRONLY|O_NONBLOCK and
 * write one byte. Returns 1 also when nobody listens (ENXIO) or the FIFO
 * is full (EAGAIN): queue-manager rescans anyway. 0 only on other errors
 * (EINVAL: lock/trigger is not a FIFO; nothing is written). */
int queue_trigger(const char *root);

#endif
