/* maildir.h - delivery into a Maildir (tmp/ new/ cur/), safely: the Maildir
 * and its three parts must be real directories (never symlinks: checked with
 * O_DIRECTORY|O_NOFOLLOW), the file is created O_CREAT|O_EXCL|O_NOFOLLOW in
 * tmp/, fsync'ed, linked into new/ and new/ is fsync'ed before success.
 * Runs as the mailbox's user: it creates nothing it would not own. */
#ifndef POSTERN_MAILDIR_H
#define POSTERN_MAILDIR_H

#include <stddef.h>
#include <sys/types.h>

#define MAILDIR_NAME_MAX 255
#define MAILDIR_HEADER_SCAN_MAX (256u * 1024)  /* header bytes looked at */

/* Create dir (0700) and tmp/ new/ cur/ where missing; refuse symlinks
 * (errno ELOOP), non-directories (ENOTDIR), and a Maildir or part that is
 * not owned by our effective uid or is world-writable (EPERM). What it
 * made is durable on return: dir is fsynced if a part was made, and the
 * directory above dir if dir was made. 1 or 0 with errno. */
int maildir_make(const char *dir);

/* fsync the directory dir (opened read-only), so that the names it holds
 * survive a power cut; EINVAL from fsync (a file system that cannot sync a
 * directory) counts as done. 1, or 0 with errno. */
int maildir_fsync_dir(const char *dir);
/* the same for a directory already open as fd */
int maildir_fsync_fd(int fd);

/* maildir_make as u, in a child that drops to u first (privdrop): a
 * Maildir lies in a directory its user owns, where root making it could be
 * handed a swapped symlink. For a root caller. 1, or 0 with errno (EIO if
 * the child failed without saying why). */
struct privuser;
int maildir_make_as(const char *dir, const struct privuser *u);

/* A unique file name "<sec>.M<usec>P<pid>R<hex>.<host>" ('/' and ':' of
 * host escaped as \057 and \072). 1, or 0 with errno ENAMETOOLONG. */
int maildir_unique_name(const char *host, char *dst, size_t dstlen);

/* Deliver: prefix[0..prefixlen) (e.g. Return-Path and Delivered-To lines)
 * followed by all of msgfd (read with pread from offset 0). name (if not
 * NULL) gets the file's name in new/: the Maildir++ form
 * "<unique>,S=<octets>,W=<octets counted with CRLF line ends>", so that
 * POP3 learns sizes without reading messages. 1, or 0 with errno
 * (EDQUOT/ENOSPC for a full disk; ELOOP, ENOTDIR, EPERM as maildir_make
 * for the Maildir, tmp/ and new/). Nothing is left in tmp/ on failure. */
int maildir_deliver(const char *dir, const char *host, const char *prefix, size_t prefixlen,
                    int msgfd, char *name, size_t namelen);

/* Bytes held in new/ and cur/ of dir (the sizes of regular files; the
 * Maildir++ ",S=<size>" of a name is trusted when present), the sum
 * saturating at ULLONG_MAX. 1, or 0 with errno. */
int maildir_usage(const char *dir, unsigned long long *bytes);

/* 1 if the message's header section (read from msgfd at offset 0, at most
 * MAILDIR_HEADER_SCAN_MAX bytes) holds a "Delivered-To:" field (the name in
 * any case, white space allowed before the colon) whose value (unfolded,
 * spaces trimmed, "<>" around it taken off) is addr, case-insensitively; 0
 * if not; -1 with errno on a read error. */
int maildir_has_delivered_to(int msgfd, const char *addr);

#endif
