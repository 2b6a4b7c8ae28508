/* maildir.c - safe Maildir delivery (see maildir.h). */
#include "maildir.h"
#include "privdrop.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/time.h>
#include <unistd.h>

static const char *const maildir_parts[3] = { "tmp", "new", "cur" };

static int open_dir_at(int at, const char *path)
{
    int fd = openat(at, path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == ENOTDIR) {
        struct stat st;     /* a symlink to a directory gives ENOTDIR on some kernels */
        if (!fstatat(at, path, &st, AT_SYMLINK_NOFOLLOW) && S_ISLNK(st.st_mode)) errno = ELOOP;
        else errno = ENOTDIR;
    }
    return fd;
}

/* a directory the mailbox's user (our effective uid) owns and no one else
 * may write: else its owner, or anyone, could take or plant messages */
static int dir_ours(int fd)
{
    struct stat st;
    if (fstat(fd, &st) < 0) return 0;
    if (st.st_uid != geteuid() || (st.st_mode & S_IWOTH)) { errno = EPERM; return 0; }
    return 1;
}

int maildir_fsync_fd(int fd) { return fsync(fd) == 0 || errno == EINVAL; }

/* fsync the directory name, relative to at */
static int fsync_dir_at(int at, const char *name)
{
    int fd = openat(at, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return 0;
    int ok = maildir_fsync_fd(fd);
    int e = errno;
    close(fd);
    errno = e;
    return ok;
}

int maildir_fsync_dir(const char *dir) { return fsync_dir_at(AT_FDCWD, dir); }

int maildir_make(const char *dir)
{
    int made_dir = mkdir(dir, 0700) == 0;
    if (!made_dir && errno != EEXIST) return 0;
    int dfd = open_dir_at(AT_FDCWD, dir);
    if (dfd < 0) return 0;
    if (!dir_ours(dfd)) goto fail;
    int made = 0;
    for (size_t i = 0; i < 3; i++) {
        if (mkdirat(dfd, maildir_parts[i], 0700) == 0) made = 1;
        else if (errno != EEXIST) goto fail;
        int fd = open_dir_at(dfd, maildir_parts[i]);
        if (fd < 0) goto fail;
        int ours = dir_ours(fd);
        close(fd);
        if (!ours) goto fail;
    }
    /* fsync only what changed: an existing Maildir costs no fsync per
     * delivery. A new Maildir's own name is in the directory above it:
     * without that fsync a power cut could take the Maildir, and the mail
     * delivered into it since, away (test_crashmodel) */
    if (made && !maildir_fsync_fd(dfd)) goto fail;
    if (made_dir && !fsync_dir_at(dfd, "..")) goto fail;     /* the directory above it */
    close(dfd);
    return 1;
fail:;
    int e = errno;
    close(dfd);
    errno = e;
    return 0;
}

int maildir_make_as(const char *dir, const struct privuser *u)
{
    pid_t pid = fork();
    if (pid < 0) return 0;
    if (pid == 0) _exit(privdrop(NULL, u) && maildir_make(dir) ? 0 : errno > 1 && errno < 256 ? errno : 1);
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) return 0;
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) return 1;
    errno = WIFEXITED(st) && WEXITSTATUS(st) > 1 ? WEXITSTATUS(st) : EIO;
    return 0;
}

int maildir_unique_name(const char *host, char *dst, size_t dstlen)
{
    struct timeval tv;
    unsigned long long rnd = 0;
    char h[MAILDIR_NAME_MAX + 1];
    size_t o = 0;
    gettimeofday(&tv, NULL);
    if (getrandom(&rnd, sizeof rnd, GRND_NONBLOCK) != (ssize_t)sizeof rnd)
        rnd ^= ((unsigned long long)tv.tv_usec << 20) ^ (unsigned long long)getpid() ^ (unsigned long long)(size_t)&rnd;
    for (const char *p = host; *p && o + 5 < sizeof h; p++) {
        if (*p == '/' || *p == ':') {
            memcpy(h + o, *p == '/' ? "\\057" : "\\072", 4);
            o += 4;
        } else if ((unsigned char)*p > 0x20 && (unsigned char)*p < 0x7f) {
            h[o++] = *p;
        }
    }
    h[o] = 0;
    if (!o) memcpy(h, "localhost", 10);
    int n = snprintf(dst, dstlen, "%lld.M%ldP%ldR%016llx.%s", (long long)tv.tv_sec,
                     (long)tv.tv_usec, (long)getpid(), rnd, h);
    if (n < 0 || (size_t)n >= dstlen || (size_t)n > MAILDIR_NAME_MAX) { errno = ENAMETOOLONG; return 0; }
    return 1;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return 0;
        if (!w) { errno = EIO; return 0; }
        p += w;
        n -= (size_t)w;
    }
    return 1;
}

/* octets written, and octets with CRLF line ends (what POP3 announces),
 * counted while copying so that a POP3 login need not read the message:
 * the same count as maildrop_size_fd() */
struct vsize {
    unsigned long long size, crlf;
    char prev;
};

static void vsize_add(struct vsize *v, const char *p, size_t n)
{
    v->size += n;
    v->crlf += n;
    for (const char *e = p + n, *q = p; q < e; q++) {
        q = memchr(q, '\n', (size_t)(e - q));
        if (!q) break;
        if ((q == p ? v->prev : q[-1]) != '\r') v->crlf++;
    }
    if (n) v->prev = p[n - 1];
}

static int copy_fd(int out, int in, struct vsize *v)
{
    char b[65536];
    off_t off = 0;
    for (;;) {
        ssize_t r = pread(in, b, sizeof b, off);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return 0;
        if (!r) return 1;
        if (!write_all(out, b, (size_t)r)) return 0;
        vsize_add(v, b, (size_t)r);
        off += r;
    }
}

int maildir_deliver(const char *dir, const char *host, const char *prefix, size_t prefixlen,
                    int msgfd, char *name, size_t namelen)
{
    char fname[MAILDIR_NAME_MAX + 1], nname[MAILDIR_NAME_MAX + 1];
    struct vsize v = { 0, 0, 0 };
    int dfd = -1, tfd = -1, nfd = -1, fd = -1, created = 0, e;
    if ((dfd = open_dir_at(AT_FDCWD, dir)) < 0 || !dir_ours(dfd)) goto fail;
    if ((tfd = open_dir_at(dfd, "tmp")) < 0 || !dir_ours(tfd)) goto fail;
    if ((nfd = open_dir_at(dfd, "new")) < 0 || !dir_ours(nfd)) goto fail;
    for (int tries = 0; fd < 0; tries++) {
        if (!maildir_unique_name(host, fname, sizeof fname)) goto fail;
        fd = openat(tfd, fname, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0 && (errno != EEXIST || tries >= 3)) goto fail;
    }
    created = 1;
    if (!write_all(fd, prefix, prefixlen)) goto fail;
    vsize_add(&v, prefix, prefixlen);
    if (!copy_fd(fd, msgfd, &v)) goto fail;
    if (fsync(fd) < 0) goto fail;
    if (close(fd) < 0) { fd = -1; goto fail; }
    fd = -1;
    /* new/ gets the Maildir++ name "<unique>,S=<octets>,W=<octets with CRLF>" */
    if (v.crlf && v.prev != '\n') v.crlf += 2;
    int nl = snprintf(nname, sizeof nname, "%s,S=%llu,W=%llu", fname, v.size, v.crlf);
    if (nl < 0 || (size_t)nl >= sizeof nname) memcpy(nname, fname, sizeof nname);
    if (linkat(tfd, fname, nfd, nname, 0) < 0) goto fail;
    unlinkat(tfd, fname, 0);
    created = 0;
    if (fsync(nfd) < 0) {
        e = errno;
        unlinkat(nfd, nname, 0);
        errno = e;
        goto fail;
    }
    if (name) snprintf(name, namelen, "%s", nname);
    close(nfd);
    close(tfd);
    close(dfd);
    return 1;
fail:
    e = errno;
    if (fd >= 0) close(fd);
    if (created) unlinkat(tfd, fname, 0);
    if (nfd >= 0) close(nfd);
    if (tfd >= 0) close(tfd);
    if (dfd >= 0) close(dfd);
    errno = e;
    return 0;
}

int maildir_usage(const char *dir, unsigned long long *bytes)
{
    int dfd = open_dir_at(AT_FDCWD, dir);
    *bytes = 0;
    if (dfd < 0) return 0;
    for (size_t i = 1; i < 3; i++) {      /* new, cur */
        int fd = open_dir_at(dfd, maildir_parts[i]);
        DIR *d = fd < 0 ? NULL : fdopendir(fd);
        if (!d) {
            int e = errno;
            if (fd >= 0) close(fd);
            close(dfd);
            errno = e;
            return 0;
        }
        struct dirent *de;
        while ((de = readdir(d))) {
            if (de->d_name[0] == '.') continue;
            const char *sz = strstr(de->d_name, ",S=");
            unsigned long long v = 0;
            int have = 0;
            if (sz) {
                const char *p = sz + 3;
                for (; *p >= '0' && *p <= '9' && v < (1ULL << 50); p++) { v = v * 10 + (unsigned)(*p - '0'); have = 1; }
                if (*p && *p != ',' && *p != ':') have = 0;
            }
            if (!have) {
                struct stat st;
                if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode)) continue;
                v = (unsigned long long)st.st_size;
            }
            /* names are the mailbox owner's to choose: the sum saturates
             * rather than wrap to a small number under the quota */
            *bytes = v > ~0ULL - *bytes ? ~0ULL : *bytes + v;
        }
        closedir(d);
    }
    close(dfd);
    return 1;
}

static int value_is(const char *v, size_t n, const char *addr)
{
    while (n && (*v == ' ' || *v == '\t')) { v++; n--; }
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t' || v[n - 1] == '\r')) n--;
    if (n >= 2 && v[0] == '<' && v[n - 1] == '>') { v++; n -= 2; }
    return n == strlen(addr) && !strncasecmp(v, addr, n);
}

/* line[0..n) starts a "Delivered-To" field, white space allowed before the
 * colon (RFC 5322 4.5.3, obsolete syntax): the offset after the colon, or 0 */
static size_t delivered_to_name(const char *line, size_t n)
{
    static const char key[] = "delivered-to";
    size_t k = sizeof key - 1;
    if (n <= k || strncasecmp(line, key, k)) return 0;
    while (k < n && (line[k] == ' ' || line[k] == '\t')) k++;
    return k < n && line[k] == ':' ? k + 1 : 0;
}

/* the value of a Delivered-To field, unfolded (its continuation lines
 * joined): longer than this it cannot be an address */
#define DELIVERED_TO_VALUE_MAX 1024

int maildir_has_delivered_to(int msgfd, const char *addr)
{
    char *b = malloc(MAILDIR_HEADER_SCAN_MAX);
    char val[DELIVERED_TO_VALUE_MAX];
    size_t len = 0, vl = 0;
    int eof = 0, in_field = 0, over = 0;
    if (!b) return -1;
    while (len < MAILDIR_HEADER_SCAN_MAX) {
        ssize_t r = pread(msgfd, b + len, MAILDIR_HEADER_SCAN_MAX - len, (off_t)len);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) { int e = errno; free(b); errno = e; return -1; }
        if (!r) { eof = 1; break; }
        len += (size_t)r;
    }
    size_t off = 0;
    int found = 0;
    while (off < len && !found) {
        const char *line = b + off;
        const char *nl = memchr(line, '\n', len - off);
        if (!nl && !eof) break;                      /* cut line: stop looking */
        if (!nl) nl = b + len;                       /* the message's last line, unended */
        size_t n = (size_t)(nl - line);
        off += n + 1;
        if (n && line[n - 1] == '\r') n--;
        if (in_field && n && (line[0] == ' ' || line[0] == '\t')) {
            /* a continuation line: the value unfolded */
            if (n > sizeof val - vl) over = 1;
            else { memcpy(val + vl, line, n); vl += n; }
            continue;
        }
        if (in_field && !over && value_is(val, vl, addr)) found = 1;
        in_field = 0;
        if (!n) break;                               /* end of the header */
        size_t k = delivered_to_name(line, n);
        if (k) {
            in_field = 1;
            over = n - k > sizeof val;
            vl = over ? 0 : n - k;
            if (vl) memcpy(val, line + k, vl);
        }
    }
    /* a field on the message's last lines (not one the scan cut) */
    if (in_field && eof && off >= len && !over && value_is(val, vl, addr)) found = 1;
    free(b);
    return found;
}
