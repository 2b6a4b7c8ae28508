/* maildrop.c - a Maildir as a POP3 maildrop: scan, sizes, UIDLs, RETR/TOP, UPDATE. */
#include "maildrop.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "maildir.h"

#define CHUNK 65536
/* a Maildir file larger than this is not offered: counting its line ends
 * at login would take minutes (a 10 GB sparse file hangs the login) */
#define MAILDROP_FILE_MAX (1ULL << 30)

int maildrop_lock(int dirfd)
{
    int fd = openat(dirfd, MAILDROP_LOCK, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) return -1;
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) { int e = errno; close(fd); errno = e; return -1; }
    return fd;
}

int maildrop_parse_number(const char *s, size_t len, unsigned long long *out)
{
    unsigned long long v = 0;
    if (len == 0) return 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') return 0;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (ULLONG_MAX - d) / 10) return 0;
        v = v * 10 + d;
    }
    *out = v;
    return 1;
}

int maildrop_size_fd(int fd, unsigned long long *size)
{
    static char b[CHUNK];
    unsigned long long n = 0;
    char prev = 0;
    for (;;) {
        ssize_t r = read(fd, b, sizeof b);
        if (r < 0) { if (errno == EINTR) continue; return 0; }
        if (r == 0) break;
        for (ssize_t i = 0; i < r; i++) {
            if (b[i] == '\n' && prev != '\r') n++;
            prev = b[i];
        }
        n += (unsigned long long)r;
    }
    if (n && prev != '\n') n += 2;
    *size = n;
    return 1;
}

/* the UIDL of a file name: its base name before ':' if that is 1..70
 * printable characters, else "h" + 16 hex digits of a hash of it */
static void make_uidl(const char *name, char *out)
{
    size_t len = strcspn(name, ":");
    int ok = len >= 1 && len <= MAILDROP_UIDL_MAX;
    for (size_t i = 0; ok && i < len; i++)
        if ((unsigned char)name[i] < 0x21 || (unsigned char)name[i] > 0x7e) ok = 0;
    if (ok) { memcpy(out, name, len); out[len] = 0; return; }
    unsigned long long h = 1469598103934665603ULL;   /* FNV-1a 64 */
    for (size_t i = 0; i < len; i++) { h ^= (unsigned char)name[i]; h *= 1099511628211ULL; }
    snprintf(out, MAILDROP_UIDL_MAX + 1, "h%016llx", h);
}

/* the ",W=<octets>" of a Maildir++ name (the size with CRLF line ends,
 * written by the deliverer), so that a login need not read every message */
static int name_vsize(const char *name, unsigned long long *size)
{
    size_t base = strcspn(name, ":");
    for (const char *p = name; (p = strstr(p, ",W=")) && (size_t)(p - name) < base; p += 3) {
        size_t n = strspn(p + 3, "0123456789");
        if (n && (size_t)(p + 3 + n - name) <= base && maildrop_parse_number(p + 3, n, size)) return 1;
    }
    return 0;
}

/* could a file of len octets have vsize octets as sent? Each LF may
 * gain a CR and a missing final line end counts as two, so len <= vsize
 * <= 2 * len + 1; an empty file is 0 */
static int vsize_possible(unsigned long long vsize, unsigned long long len)
{
    if (len == 0) return vsize == 0;
    return vsize >= len && vsize <= 2 * len + 1;
}

/* the decimal number at *p (at most 19 digits, no sign): 1 and *v, *p past
 * it; 0 if there is none */
static int lead_number(const char **p, unsigned long long *v)
{
    size_t n = strspn(*p, "0123456789");
    if (!n || n > 19) return 0;
    *v = 0;
    for (size_t i = 0; i < n; i++) *v = *v * 10 + (unsigned)((*p)[i] - '0');
    *p += n;
    return 1;
}

/* the sort key of a unique name: its leading time ("SECS.MUSEC...", qmail's
 * and Maildir++'s form) as numbers; a name without one sorts after all
 * that have one, a name without ".M<digits>" after the same second's that
 * have it */
struct order_key { int untimed; unsigned long long secs, usec; };

static struct order_key order_key(const char *name)
{
    struct order_key k = { 1, 0, ULLONG_MAX };
    if (!lead_number(&name, &k.secs)) return k;
    k.untimed = 0;
    unsigned long long u;
    if (name[0] == '.' && name[1] == 'M' && (name += 2, lead_number(&name, &u))) k.usec = u;
    return k;
}

static size_t base_len(const char *name) { return strcspn(name, ":"); }

/* delivery order: (untimed, seconds, microseconds, base name, whole name),
 * compared field by field, a total order (M99 comes before M100000, which
 * as strings it would not). The base name before the whole one: the order
 * stays when the UPDATE moves a message from new/ to cur/ and gives it an
 * info part */
static int msg_cmp(const void *a, const void *b)
{
    const struct maildrop_msg *x = a, *y = b;
    struct order_key kx = order_key(x->name), ky = order_key(y->name);
    if (kx.untimed != ky.untimed) return kx.untimed - ky.untimed;
    if (kx.secs != ky.secs) return kx.secs < ky.secs ? -1 : 1;
    if (kx.usec != ky.usec) return kx.usec < ky.usec ? -1 : 1;
    size_t lx = base_len(x->name), ly = base_len(y->name);
    int c = memcmp(x->name, y->name, lx < ly ? lx : ly);
    if (c) return c;
    if (lx != ly) return lx < ly ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int scan_dir(struct maildrop *md, const char *sub, int in_new, size_t *cap)
{
    int dfd = openat(md->dirfd, sub, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0 && errno == ENOENT) {
        /* a Maildir without new/ or cur/ (removed by hand, or made by a
         * program that left it out): as its user, make the part, empty */
        if (mkdirat(md->dirfd, sub, 0700) < 0 && errno != EEXIST) return 0;
        dfd = openat(md->dirfd, sub, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    }
    if (dfd < 0) return 0;
    DIR *d = fdopendir(dfd);
    if (!d) { int e = errno; close(dfd); errno = e; return 0; }
    struct dirent *de;
    int ok = 1;
    while ((errno = 0, de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        /* skipped: vanished, a symlink, not a regular file, too big. A name
         * that carries the size costs one fstatat; only a file whose size
         * must be counted is opened (a login to a large mailbox cost three
         * system calls a message when every file was opened) */
        struct stat st;
        unsigned long long size;
        int named = name_vsize(de->d_name, &size);
        if (named) {
            if (fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode) ||
                (unsigned long long)st.st_size > MAILDROP_FILE_MAX)
                continue;
            /* a W= no file of this length can have (a name made by
             * hand, or copied onto other content) is not believed: LIST
             * and RETR would announce a size other than what is sent */
            named = vsize_possible(size, (unsigned long long)st.st_size);
        }
        if (!named) {
            int fd = openat(dfd, de->d_name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
            if (fd < 0) continue;
            int sized = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
                        (unsigned long long)st.st_size <= MAILDROP_FILE_MAX && maildrop_size_fd(fd, &size);
            close(fd);
            if (!sized) continue;
        }
        if (md->n == MAILDROP_MSGS_MAX) { errno = E2BIG; ok = 0; break; }
        if (md->n == *cap) {
            size_t nc = *cap ? *cap * 2 : 64;
            struct maildrop_msg *nm = realloc(md->msg, nc * sizeof *nm);
            if (!nm) { ok = 0; break; }
            md->msg = nm;
            *cap = nc;
        }
        struct maildrop_msg *m = &md->msg[md->n];
        memset(m, 0, sizeof *m);
        if (!(m->name = strdup(de->d_name))) { ok = 0; break; }
        m->in_new = (unsigned char)in_new;
        m->size = size;
        make_uidl(m->name, m->uidl);
        md->n++;
    }
    if (ok && errno) ok = 0;
    int e = errno;
    closedir(d);
    errno = e;
    return ok;
}

/* move a file without ever replacing one: renameat2 RENAME_NOREPLACE, or
 * where the file system has no such rename, link and unlink (the Maildir
 * way). 1, or 0 with errno (EEXIST: the target is there) */
static int move_noreplace(int fromfd, const char *from, int tofd, const char *to)
{
    if (renameat2(fromfd, from, tofd, to, RENAME_NOREPLACE) == 0) return 1;
    if (errno != EINVAL && errno != ENOSYS) return 0;
    if (linkat(fromfd, from, tofd, to, 0) < 0) return 0;
    if (unlinkat(fromfd, from, 0) == 0) return 1;
    int e = errno;
    unlinkat(tofd, to, 0);         /* one message, one name */
    errno = e;
    return 0;
}

/* a message, its name as scanned (which a rename leaves as it was) and
 * the length of that name's base */
struct named { const char *name; size_t base; struct maildrop_msg *m; };

/* in the order of base names; among equal ones, delivery order (the
 * messages' array's) */
static int base_cmp(const void *a, const void *b)
{
    const struct named *x = a, *y = b;
    size_t lx = x->base, ly = y->base;
    int c = memcmp(x->name, y->name, lx < ly ? lx : ly);
    if (c) return c;
    if (lx != ly) return lx < ly ? -1 : 1;
    return x->m < y->m ? -1 : x->m > y->m;
}

/* is base (len bytes) the base name of a message as scanned? by: sorted
 * by base_cmp */
static int base_taken(const struct named *by, size_t n, const char *base, size_t len)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        size_t l = by[mid].base;
        int c = memcmp(by[mid].name, base, l < len ? l : len);
        if (!c && l != len) c = l < len ? -1 : 1;
        if (!c) return 1;
        if (c < 0) lo = mid + 1; else hi = mid;
    }
    return 0;
}

/* m shares its base name with an earlier message: rename it in place to
 * its base name with "-dup<k>" appended (k from *k up: the first that no
 * scanned message has and no file takes), keeping its info part. 1
 * renamed (m->name is a new string; the old one is the caller's to free),
 * 0 not (a name too long, the rename refused: errno) */
static int rename_dup(struct maildrop *md, const struct named *by, size_t n,
                      struct maildrop_msg *m, unsigned *k)
{
    size_t base = base_len(m->name);
    const char *sub = m->in_new ? "new/" : "cur/";
    char from[MAILDROP_NAME_MAX + 8], to[MAILDROP_NAME_MAX + 8];
    int fl = snprintf(from, sizeof from, "%s%s", sub, m->name);
    if (fl < 0 || (size_t)fl >= sizeof from) { errno = ENAMETOOLONG; return 0; }
    for (unsigned tries = 0; tries < 100; tries++, (*k)++) {
        int tl = snprintf(to, sizeof to, "%s%.*s-dup%u%s", sub, (int)base, m->name, *k, m->name + base);
        if (tl < 0 || (size_t)tl >= sizeof to || (size_t)tl - 4 > MAILDROP_NAME_MAX) { errno = ENAMETOOLONG; return 0; }
        const char *nm = to + 4;
        if (base_taken(by, n, nm, base_len(nm))) continue;
        char *nn = strdup(nm);
        if (!nn) return 0;
        if (!move_noreplace(md->dirfd, from, md->dirfd, to)) {
            int e = errno;
            free(nn);
            errno = e;
            if (e == EEXIST) continue;
            return 0;
        }
        m->name = nn;
        make_uidl(m->name, m->uidl);
        (*k)++;
        return 1;
    }
    errno = EEXIST;
    return 0;
}

/* the UIDL of a message left with a base name another one has (its
 * rename failed): "h" and a hash of its whole name and directory, unique
 * in this session at least */
static void uidl_of_whole_name(struct maildrop_msg *m)
{
    unsigned long long h = 1469598103934665603ULL;   /* FNV-1a 64 */
    h ^= m->in_new ? 'n' : 'c';
    h *= 1099511628211ULL;
    for (const char *p = m->name; *p; p++) { h ^= (unsigned char)*p; h *= 1099511628211ULL; }
    snprintf(m->uidl, sizeof m->uidl, "h%016llx", h);
}

#define MSG_PATH_MAX (MAILDROP_NAME_MAX + 8)

/* "new/NAME" or "cur/NAME", where m was last seen: 1, or 0 with errno
 * ENAMETOOLONG (path has MSG_PATH_MAX bytes) */
static int msg_path(const struct maildrop_msg *m, char *path)
{
    int n = snprintf(path, MSG_PATH_MAX, "%s/%s", m->in_new ? "new" : "cur", m->name);
    if (n > 0 && n < MSG_PATH_MAX) return 1;
    errno = ENAMETOOLONG;
    return 0;
}

/* the file of m, as scanned: 1 and *st, or 0 */
static int stat_msg(const struct maildrop *md, const struct maildrop_msg *m, struct stat *st)
{
    char path[MSG_PATH_MAX];
    return msg_path(m, path) && fstatat(md->dirfd, path, st, AT_SYMLINK_NOFOLLOW) == 0;
}

/* a and b share a base name: are they one file under two names (an
 * UPDATE's link into cur/ whose new/ name a crash or kill -9 left)? Then
 * the extra name is removed (the one in new/, else b's) and 1 returned with
 * *gone the message that had it; else 0 */
static int one_file(struct maildrop *md, struct maildrop_msg *a, struct maildrop_msg *b, struct maildrop_msg **gone)
{
    struct stat sa, sb;
    if (!stat_msg(md, a, &sa) || !stat_msg(md, b, &sb) || sa.st_dev != sb.st_dev || sa.st_ino != sb.st_ino)
        return 0;
    struct maildrop_msg *x = a->in_new && !b->in_new ? a : b;
    char path[MSG_PATH_MAX];
    if (!msg_path(x, path) || unlinkat(md->dirfd, path, 0) < 0) return 0;
    *gone = x;
    return 1;
}

/* Two names of one file (new/X and cur/X:2,: an UPDATE's move cut between
 * its link and its unlink) are one message: the extra name goes (one_file).
 * Two files with one base name (a restore from a backup, a copy by a mail
 * program) would be two messages with one UIDL, which RFC 1939 forbids, and
 * the UPDATE could not move the one in new/ to the other's name. All but
 * the first in delivery order get a base name of their own (rename_dup), so
 * their UIDLs differ and stay so in later sessions; then the order is made
 * again. 0 with errno only when out of memory. */
static int dedupe(struct maildrop *md)
{
    if (md->n < 2) return 1;
    struct named *by = calloc(md->n, sizeof *by);
    if (!by) return 0;
    for (size_t i = 0; i < md->n; i++) {
        by[i].name = md->msg[i].name;
        by[i].base = base_len(by[i].name);
        by[i].m = &md->msg[i];
    }
    qsort(by, md->n, sizeof *by, base_cmp);
    unsigned char *drop = calloc(md->n, 1);
    if (!drop) { free(by); return 0; }
    int renamed = 0;
    unsigned k = 1;
    for (size_t i = 1, first = 0; i < md->n; i++) {
        if (by[i].base != by[first].base || memcmp(by[i].name, by[first].name, by[i].base)) {
            first = i;
            k = 1;
            continue;
        }
        struct maildrop_msg *gone;
        if (one_file(md, by[first].m, by[i].m, &gone)) {
            drop[gone - md->msg] = 1;
            if (gone == by[first].m) first = i;
            continue;
        }
        if (rename_dup(md, by, md->n, by[i].m, &k)) renamed = 1;
        else uidl_of_whole_name(by[i].m);
    }
    /* the names as scanned of the renamed ones were kept for base_taken */
    for (size_t i = 0; i < md->n; i++)
        if (by[i].m->name != by[i].name) free((char *)by[i].name);
    free(by);
    size_t kept = 0;
    for (size_t i = 0; i < md->n; i++) {
        if (drop[i]) { free(md->msg[i].name); continue; }
        md->msg[kept++] = md->msg[i];
    }
    md->n = kept;
    free(drop);
    if (renamed) qsort(md->msg, md->n, sizeof *md->msg, msg_cmp);
    return 1;
}

int maildrop_open(struct maildrop *md, int dirfd)
{
    size_t cap = 0;
    md->dirfd = dirfd;
    md->n = 0;
    md->msg = 0;
    if (!scan_dir(md, "new", 1, &cap) || !scan_dir(md, "cur", 0, &cap)) {
        int e = errno;
        maildrop_close(md);
        errno = e;
        return 0;
    }
    if (md->n) qsort(md->msg, md->n, sizeof *md->msg, msg_cmp);
    if (!dedupe(md)) {
        int e = errno;
        maildrop_close(md);
        errno = e;
        return 0;
    }
    return 1;
}

void maildrop_close(struct maildrop *md)
{
    for (size_t i = 0; i < md->n; i++) free(md->msg[i].name);
    free(md->msg);
    md->msg = 0;
    md->n = 0;
}

void maildrop_stat(const struct maildrop *md, size_t *count, unsigned long long *octets)
{
    *count = 0;
    *octets = 0;
    for (size_t i = 0; i < md->n; i++)
        if (!md->msg[i].deleted) { (*count)++; *octets += md->msg[i].size; }
}

int maildrop_send_fd(int fd, long long top, struct io *out)
{
    static char b[CHUNK];
    int bol = 1, pending_cr = 0, in_body = 0, done = 0;
    size_t linelen = 0;
    long long body_lines = 0;
    while (!done) {
        ssize_t r = read(fd, b, sizeof b);
        if (r < 0) { if (errno == EINTR) continue; return 0; }
        if (r == 0) break;
        size_t p = 0, n = (size_t)r;
        while (p < n && !done) {
            const char *nl = memchr(b + p, '\n', n - p);
            size_t k = nl ? (size_t)(nl - (b + p)) : n - p;
            if (k) {
                if (pending_cr && !io_put(out, "\r", 1)) return 0;
                pending_cr = 0;
                if (bol && b[p] == '.' && !io_put(out, ".", 1)) return 0;
                bol = 0;
                size_t emit = k;
                if (b[p + k - 1] == '\r') { emit--; pending_cr = 1; }
                if (emit && !io_put(out, b + p, emit)) return 0;
                linelen += k;
            }
            p += k;
            if (!nl) break;
            /* a line end */
            int empty = linelen == 0 || (linelen == 1 && pending_cr);
            if (!io_put(out, "\r\n", 2)) return 0;
            pending_cr = 0;
            bol = 1;
            linelen = 0;
            p++;
            if (top >= 0) {
                if (in_body) { if (++body_lines >= top) done = 1; }
                else if (empty) { in_body = 1; if (top == 0) done = 1; }
            }
        }
    }
    if (pending_cr && !io_put(out, "\r", 1)) return 0;
    if (!bol && !io_put(out, "\r\n", 2)) return 0;
    return io_put(out, ".\r\n", 3);
}

/* m's file is gone from where the scan saw it: another reader of the
 * Maildir (a local mail program) moved it from new/ to cur/ or changed its
 * flags after the ':'. Look for its base name in new/ and cur/ and, if it is
 * there, remember where: 1, or 0 with errno ENOENT (really gone) */
static int refind(struct maildrop *md, struct maildrop_msg *m)
{
    size_t base = strcspn(m->name, ":");
    for (int in_new = 1; in_new >= 0; in_new--) {
        int dfd = openat(md->dirfd, in_new ? "new" : "cur", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        DIR *d = dfd < 0 ? NULL : fdopendir(dfd);
        if (!d) { if (dfd >= 0) close(dfd); continue; }
        struct dirent *de;
        while ((de = readdir(d))) {
            if (strncmp(de->d_name, m->name, base) || (de->d_name[base] && de->d_name[base] != ':')) continue;
            struct stat st;
            char *nn;
            if (fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode) ||
                !(nn = strdup(de->d_name)))
                continue;
            free(m->name);
            m->name = nn;
            m->in_new = (unsigned char)in_new;
            closedir(d);
            return 1;
        }
        closedir(d);
    }
    errno = ENOENT;
    return 0;
}

static int open_where(const struct maildrop *md, const struct maildrop_msg *m)
{
    char path[MSG_PATH_MAX];
    if (!msg_path(m, path)) return -1;
    return openat(md->dirfd, path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
}

int maildrop_open_msg(struct maildrop *md, size_t i)
{
    if (i >= md->n) { errno = EINVAL; return -1; }
    struct maildrop_msg *m = &md->msg[i];
    int fd = open_where(md, m);
    if (fd < 0 && errno == ENOENT && refind(md, m)) fd = open_where(md, m);
    return fd;
}

/* m's name in cur/ after UPDATE: its base name, ":2," and the flags it
 * had after ":2," (in new/ or cur/), with S added if it was retrieved, in
 * the ASCII order the Maildir specification asks for. 1 and to, or 0 if the
 * name stays as it is (in cur/ with nothing to add, an info part other than
 * ":2,", or too long) */
static int cur_name(const struct maildrop_msg *m, char *to, size_t cap)
{
    size_t base = strcspn(m->name, ":");
    const char *info = m->name + base;
    int v2 = !strncmp(info, ":2,", 3);
    const char *flags = v2 ? info + 3 : "";
    int seen = m->retrieved && !strchr(flags, 'S');
    if (!m->in_new && (!seen || (*info && !v2))) return 0;
    size_t at = 0, nf = strlen(flags);
    while (at < nf && (unsigned char)flags[at] < 'S') at++;
    int n = snprintf(to, cap, "%.*s:2,%.*s%s%s", (int)base, m->name, (int)at, flags, seen ? "S" : "", flags + at);
    return n > 0 && (size_t)n < cap;
}

/* unlink a deleted message (found again by its base name if another
 * program moved it): 1 gone (or was already), 0 with errno; *changed
 * gets the directory it left (1 new/, 2 cur/) */
static int unlink_msg(struct maildrop *md, struct maildrop_msg *m, int newfd, int curfd, int *changed)
{
    int from = m->in_new ? newfd : curfd;
    if (from < 0) return 0;
    int r = unlinkat(from, m->name, 0);
    if (r < 0 && errno == ENOENT && refind(md, m)) {      /* moved meanwhile: delete it there */
        from = m->in_new ? newfd : curfd;
        if (from < 0) return 0;
        r = unlinkat(from, m->name, 0);
    }
    if (r == 0) *changed |= m->in_new ? 1 : 2;
    return r == 0 || errno == ENOENT;
}

/* a kept message in new/ linked into cur/ under its cur/ name (never over
 * a file: one whose name is taken stays in new/); its new/ name stays
 * until the link is durable. Where the file system has no hard links, a
 * rename. 1 linked (m->linked) or renamed, 0 not */
static int link_to_cur(struct maildrop *md, struct maildrop_msg *m, int newfd, int curfd, int *changed)
{
    char to[MAILDROP_NAME_MAX + 8];
    if (!cur_name(m, to, sizeof to)) return 0;
    if (linkat(newfd, m->name, curfd, to, 0) == 0) { m->linked = 1; *changed |= 2; return 1; }
    if (errno == EPERM || errno == EOPNOTSUPP || errno == ENOSYS || errno == EMLINK) {
        if (!move_noreplace(newfd, m->name, curfd, to)) return 0;
        *changed |= 3;
        return 1;
    }
    return 0;
}

/* a kept message in cur/ renamed there for its S (or for an info part it
 * lacked): one directory, one change. Best effort: 1 renamed, 0 not
 * (errno), -1 nothing to do */
static int rename_in_cur(struct maildrop_msg *m, int curfd, int *changed)
{
    char to[MAILDROP_NAME_MAX + 8];
    if (!cur_name(m, to, sizeof to)) return -1;
    if (!move_noreplace(curfd, m->name, curfd, to)) return 0;
    *changed |= 2;
    return 1;
}

/* a kept message to its place: from new/ linked into cur/, in cur/
 * renamed for its S. One that a mail program moved meanwhile is where it
 * should be; only a retrieved one is looked for, for its S */
static void keep(struct maildrop *md, struct maildrop_msg *m, int newfd, int curfd, int *changed)
{
    if (newfd < 0 || curfd < 0) return;
    int r = m->in_new ? link_to_cur(md, m, newfd, curfd, changed) : rename_in_cur(m, curfd, changed);
    if (r != 0 || errno != ENOENT || !m->retrieved || !refind(md, m)) return;
    if (m->in_new) link_to_cur(md, m, newfd, curfd, changed);
    else rename_in_cur(m, curfd, changed);
}

/* fsync a directory that changed (bit of *changed): 1, or 0 */
static int sync_dir(int fd, int bit, int *changed)
{
    if (!(*changed & bit)) return 1;
    *changed &= ~bit;
    return maildir_fsync_fd(fd);
}

/* The UPDATE, in an order that leaves every kept message under at least
 * one name whatever a power cut keeps: a rename from new/ to cur/ is two
 * directory changes, each durable only with its directory's fsync and
 * either of which may reach the disk without the other. So: 1. the
 * deleted messages are unlinked, each kept one in new/ linked into cur/,
 * those in cur/ renamed for their S (one directory, one change); 2. cur/
 * is fsynced; 3. the new/ names of the linked ones are removed; 4. new/ is
 * fsynced. Only then is it done (the caller's +OK). A power cut or kill -9
 * between 2 and 4 may leave a message under both names, one file, which
 * maildrop_open makes one message again. A directory that did not change
 * is not fsynced. */
int maildrop_update(struct maildrop *md, size_t *failed)
{
    int newfd = openat(md->dirfd, "new", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    int curfd = openat(md->dirfd, "cur", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    int changed = 0, durable = 1;
    *failed = 0;
    for (size_t i = 0; i < md->n; i++) {        /* 1 */
        struct maildrop_msg *m = &md->msg[i];
        m->linked = 0;
        if (!m->deleted) keep(md, m, newfd, curfd, &changed);
        else if (!unlink_msg(md, m, newfd, curfd, &changed)) (*failed)++;
    }
    if (curfd >= 0 && !sync_dir(curfd, 2, &changed)) {     /* 2 */
        durable = 0;
        for (size_t i = 0; i < md->n; i++) md->msg[i].linked = 0;   /* both names stay */
    }
    for (size_t i = 0; i < md->n; i++)          /* 3 */
        if (md->msg[i].linked && unlinkat(newfd, md->msg[i].name, 0) == 0) changed |= 1;
    if (newfd >= 0 && !sync_dir(newfd, 1, &changed)) durable = 0;   /* 4 */
    if (newfd >= 0) close(newfd);
    if (curfd >= 0) close(curfd);
    return *failed == 0 && durable;
}
