/* filesig.h - has a file changed since a table was read from it? A file's
 * signature is what stat() says of it: device, inode, size and modification
 * time (a missing file has the signature "absent"). A daemon that keeps a
 * table parsed from a file (users, aliases, mailboxes, postern.conf) stats
 * the file before it uses the table and reads it again only if the
 * signature moved: one stat() instead of open, read and parse.
 *
 * A change within one tick of the file system's clock that keeps the size
 * would keep the signature too. So a table counts as current only if its
 * file had been left alone for FILESIG_SETTLE seconds when it was read;
 * until then it is read again each time it is used. */
#ifndef POSTERN_FILESIG_H
#define POSTERN_FILESIG_H

#include <sys/types.h>
#include <time.h>

#define FILESIG_SETTLE 2

struct filesig {
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
    int found;                 /* 0: stat() failed (absent); the rest is 0 */
};

/* stat(path) into s: 1, or 0 with errno (ENOENT: absent) and s "absent" */
int filesig_read(const char *path, struct filesig *s);
/* 1 if a and b are the same signature */
int filesig_same(const struct filesig *a, const struct filesig *b);

/* A table read from a file, and what the file looked like then. */
struct filesig_cache {
    struct filesig sig;        /* the file just before it was read */
    time_t read_at;            /* when (CLOCK_REALTIME seconds) */
    int loaded;                /* 0: nothing read yet */
};

/* Does the table need reading (again)? now gets the file's signature (which
 * filesig_cache_loaded takes once the table is read). 1: read it; 0: the
 * table is current. */
int filesig_cache_stale(const struct filesig_cache *c, const char *path, struct filesig *now);
/* the table was read from a file whose signature, taken before reading,
 * was sig */
void filesig_cache_loaded(struct filesig_cache *c, const struct filesig *sig);

#endif
