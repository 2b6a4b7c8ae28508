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

/* delivery order: (untimed, seconds, microseconds, whole name), compared
 * field by field, a total order (M99 comes before M100000, which as
 * strings it would not) */
static int msg_cmp(const void *a, const void *b)
{
    const struct maildrop_msg *x = a, *y = b;
    struct order_key kx = order_key(x->name), ky = order_key(y->name);
    if (kx.untimed != ky.untimed) return kx.untimed - ky.untimed;
    if (kx.secs != ky.secs) return kx.secs < ky.secs ? -1 : 1;
    if (kx.usec != ky.usec) return kx.usec < ky.usec ? -1 : 1;
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
        if (name_vsize(de->d_name, &size)) {
            if (fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode) ||
                (unsigned long long)st.st_size > MAILDROP_FILE_MAX)
                continue;
        } else {
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
    char path[MAILDROP_NAME_MAX + 8];
    int n = snprintf(path, sizeof path, "%s/%s", m->in_new ? "new" : "cur", m->name);
    if (n < 0 || (size_t)n >= sizeof path) { errno = ENAMETOOLONG; return -1; }
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

int maildrop_update(struct maildrop *md, size_t *failed)
{
    int newfd = openat(md->dirfd, "new", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    int curfd = openat(md->dirfd, "cur", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    *failed = 0;
    for (size_t i = 0; i < md->n; i++) {
        struct maildrop_msg *m = &md->msg[i];
        int from = m->in_new ? newfd : curfd;
        if (from < 0) { if (m->deleted) (*failed)++; continue; }
        if (m->deleted) {
            int r = unlinkat(from, m->name, 0);
            if (r < 0 && errno == ENOENT && refind(md, m)) {      /* moved meanwhile: delete it there */
                from = m->in_new ? newfd : curfd;
                r = from < 0 ? -1 : unlinkat(from, m->name, 0);
            }
            if (r < 0 && errno != ENOENT) (*failed)++;
        } else if (curfd >= 0) {
            /* to cur/, and seen if retrieved (best effort). One that a
             * mail program moved meanwhile is where it should be; only a
             * retrieved one is looked for, for its S */
            char to[MAILDROP_NAME_MAX + 8];
            if (!cur_name(m, to, sizeof to)) continue;
            if (renameat(from, m->name, curfd, to) < 0 && errno == ENOENT && m->retrieved &&
                refind(md, m) && cur_name(m, to, sizeof to)) {
                from = m->in_new ? newfd : curfd;
                if (from >= 0) renameat(from, m->name, curfd, to);
            }
        }
    }
    if (newfd >= 0) { fsync(newfd); close(newfd); }
    if (curfd >= 0) { fsync(curfd); close(curfd); }
    return *failed == 0;
}
