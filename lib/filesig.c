/* filesig.c - stat() signatures of files that tables are read from. */
#include "filesig.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>

int filesig_read(const char *path, struct filesig *s)
{
    struct stat st;
    memset(s, 0, sizeof *s);
    if (stat(path, &st) < 0) return 0;
    s->dev = st.st_dev;
    s->ino = st.st_ino;
    s->size = st.st_size;
    s->mtime = st.st_mtim;
    s->found = 1;
    return 1;
}

int filesig_same(const struct filesig *a, const struct filesig *b)
{
    return a->found == b->found && a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec;
}

int filesig_cache_stale(const struct filesig_cache *c, const char *path, struct filesig *now)
{
    int e = errno;
    filesig_read(path, now);
    errno = e;
    if (!c->loaded || !filesig_same(&c->sig, now)) return 1;
    /* modified shortly before it was read: a same-size change in the same
     * clock tick would not show, so it is read again until it settles */
    return c->sig.found && c->sig.mtime.tv_sec + FILESIG_SETTLE > c->read_at;
}

void filesig_cache_loaded(struct filesig_cache *c, const struct filesig *sig)
{
    struct timespec t;
    c->sig = *sig;
    c->read_at = clock_gettime(CLOCK_REALTIME, &t) == 0 ? t.tv_sec : 0;
    c->loaded = 1;
}
