/* maildrop.h - a Maildir seen as a POP3 maildrop (RFC 1939): the messages of
 * new/ and cur/ numbered 1..n in delivery order (the time at the head of each
 * unique name, seconds then microseconds as numbers, then the name), their sizes
 * in octets as POP3 sends them (LF line ends counted as CRLF, no dot-stuffing),
 * stable UIDLs (the file's base name, before any ':'), RETR/TOP streaming
 * with CRLF line ends and dot-stuffing, and the UPDATE state: unlink the
 * deleted messages, move the rest from new/ to cur/, mark the retrieved
 * ones seen.
 *
 * Everything is relative to a directory fd (the Maildir), so the mailbox
 * process may be chrooted into the Maildir itself. */
#ifndef POSTERN_MAILDROP_H
#define POSTERN_MAILDROP_H

#include <stddef.h>
#include <sys/types.h>

#include "io.h"

#define MAILDROP_NAME_MAX 255      /* a file name */
#define MAILDROP_UIDL_MAX 70       /* RFC 1939: 1..70 chars 0x21..0x7e */
#define MAILDROP_MSGS_MAX 1000000  /* messages in one maildrop */
#define MAILDROP_LOCK ".postern-pop3.lock"

struct maildrop_msg {
    char *name;                    /* file name within new/ or cur/ */
    unsigned char in_new;          /* 1: new/, 0: cur/ */
    unsigned char deleted;         /* DELE'd in this session */
    unsigned char retrieved;       /* RETR'd in this session (-> seen flag) */
    unsigned char linked;          /* UPDATE: linked into cur/, its new/ name to go */
    unsigned long long size;       /* octets with CRLF line ends */
    char uidl[MAILDROP_UIDL_MAX + 1];
};

struct maildrop {
    int dirfd;
    size_t n;
    struct maildrop_msg *msg;
};

/* Lock the maildrop: flock(LOCK_EX|LOCK_NB) on MAILDROP_LOCK inside it.
 * Returns the lock fd (held until closed or the process dies), or -1 with
 * errno EWOULDBLOCK when another session holds it. */
int maildrop_lock(int dirfd);

/* Scan dirfd's new/ and cur/; sizes are computed by reading each file,
 * unless its name carries a Maildir++ ",W=<octets>" (before any ':') that
 * a file of its length can have (len <= W <= 2 * len + 1; 0 if empty).
 * Two names of one file with one base name (new/X and cur/X:2,... left by
 * an UPDATE cut between its link and its unlink) are one message: the
 * name in new/ is removed. Other files that share a base name would share
 * a UIDL: all but the first in delivery order are renamed in place to a
 * base name of their own ("-dup<k>" appended; never over a file), so UIDLs
 * are unique and stay so. 0 with errno on trouble (ENOENT: not a Maildir). */
int maildrop_open(struct maildrop *md, int dirfd);
void maildrop_close(struct maildrop *md);

/* Parse a message number as POP3 sends it: strict decimal, no sign, no
 * spaces, 0..ULLONG_MAX (0 is no message: the caller refuses it; TOP may
 * ask for 0 lines). 1 and *out, or 0 (not a number / overflow). */
int maildrop_parse_number(const char *s, size_t len, unsigned long long *out);

/* count and total size of the messages not marked deleted */
void maildrop_stat(const struct maildrop *md, size_t *count, unsigned long long *octets);

/* Open message i (0-based) for reading: an fd, or -1 with errno (ENOENT
 * when the file vanished), so the caller can still answer -ERR. A file that
 * another program moved meanwhile (new/ to cur/, or other flags after the
 * ':') is found again by its base name, and the record follows it. */
int maildrop_open_msg(struct maildrop *md, size_t i);
/* Stream an open message to out with CRLF line ends and dot-stuffing,
 * followed by ".\r\n". With top >= 0: the header, the blank line and at most
 * top lines of the body only. Reads in 64 KiB pieces: a message is never
 * held in memory whole. Returns 1, or 0 with errno (read or output error). */
int maildrop_send_fd(int fd, long long top, struct io *out);

/* POP3 size of a file's contents (the octets maildrop_send_fd sends before
 * the final ".\r\n", less the dot-stuffing) */
int maildrop_size_fd(int fd, unsigned long long *size);

/* UPDATE: unlink deleted messages (found again by base name if another
 * program moved them), move the others that are in new/ to cur/ (":2,"
 * and the flags they had), add the S (seen) flag to every retrieved one,
 * in new/ or cur/, keeping its other flags in ASCII order (a move never
 * replaces a file: a message whose new name is taken stays). A move from
 * new/ is a link into cur/, cur/ fsynced, then the unlink from new/ and
 * new/ fsynced, so that a power cut at any point leaves each kept message
 * under one name at least (two at worst, one file: maildrop_open makes
 * them one again); at most these two fsyncs, none for a directory that did
 * not change. Returns 1 when all is done and durable; 0 if any deletion
 * failed (*failed counts them) or an fsync did (*failed 0). */
int maildrop_update(struct maildrop *md, size_t *failed);

#endif
