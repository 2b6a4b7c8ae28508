/* queue_path.c - queue IDs, queue file paths, the queue tree, the trigger. */
#include "queue_path.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

static const char hexdig[] = "0123456789ABCDEF";

static void hex8(char *dst, unsigned long v)
{
    for (int i = 7; i >= 0; i--) {
        dst[i] = hexdig[v & 15];
        v >>= 4;
    }
}

int queue_id_make(char *id, time_t now)
{
    unsigned char r[4];
    size_t got = 0;
    while (got < sizeof r) {
        ssize_t n = getrandom(r + got, sizeof r - got, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            return 0;
        }
        got += (size_t)n;
    }
    hex8(id, (unsigned long)now & 0xffffffffUL);
    hex8(id + 8, (unsigned long)r[0] << 24 | (unsigned long)r[1] << 16
                 | (unsigned long)r[2] << 8 | r[3]);
    id[ENV_ID_LEN] = 0;
    return 1;
}

int queue_id_new(char *id) { return queue_id_make(id, time(NULL)); }

time_t queue_id_time(const char *id)
{
    unsigned long v = 0;
    for (int i = 0; i < 8; i++) {
        const char *p = strchr(hexdig, id[i]);
        v = v << 4 | (unsigned long)(p ? p - hexdig : 0);
    }
    return (time_t)v;
}

static int fmt(char *dst, size_t dstlen, int n)
{
    if (n < 0) { errno = EINVAL; return 0; }
    if ((size_t)n >= dstlen) { errno = ENAMETOOLONG; return 0; }
    return 1;
}

int queue_dir(char *dst, size_t dstlen, const char *root, const char *sub)
{
    return fmt(dst, dstlen, snprintf(dst, dstlen, "%s/queue/%s", root, sub));
}

int queue_path(char *dst, size_t dstlen, const char *root, enum queue_kind kind, const char *id)
{
    if (!envelope_id_valid(id)) { errno = EINVAL; return 0; }
    char h = envelope_id_hash(id);
    int n;
    switch (kind) {
    case QUEUE_MESS: n = snprintf(dst, dstlen, "%s/queue/mess/%c/%s", root, h, id); break;
    case QUEUE_ENV: n = snprintf(dst, dstlen, "%s/queue/env/%c/%s", root, h, id); break;
    case QUEUE_TODO: n = snprintf(dst, dstlen, "%s/queue/todo/%s", root, id); break;
    case QUEUE_TMP: n = snprintf(dst, dstlen, "%s/queue/tmp/%s", root, id); break;
    case QUEUE_BOUNCE: n = snprintf(dst, dstlen, "%s/queue/bounce/%s", root, id); break;
    default: errno = EINVAL; return 0;
    }
    return fmt(dst, dstlen, n);
}

/* make path (a directory, or a FIFO if fifo) if missing; then fix owner/mode */
static int make_one(const char *path, mode_t mode, int fifo, uid_t uid, gid_t gid)
{
    int r = fifo ? mkfifo(path, mode) : mkdir(path, mode);
    if (r < 0 && errno != EEXIST) return 0;
    struct stat st;
    if (lstat(path, &st) < 0) return 0;
    if (fifo ? !S_ISFIFO(st.st_mode) : !S_ISDIR(st.st_mode)) { errno = ENOTDIR; return 0; }
    if (uid != (uid_t)-1 && (st.st_uid != uid || st.st_gid != gid) && lchown(path, uid, gid) < 0)
        return 0;
    if ((st.st_mode & 07777) != mode && chmod(path, mode) < 0) return 0;
    return 1;
}

/* linux/fs.h, which musl's headers (queue-inject's build) do not carry */
#ifndef FS_IOC_GETFLAGS
#define FS_IOC_GETFLAGS _IOR('f', 1, long)
#define FS_IOC_SETFLAGS _IOW('f', 2, long)
#endif
#ifndef FS_TOPDIR_FL
#define FS_TOPDIR_FL 0x00020000
#endif

/* chattr +T: best effort (other filesystems refuse; nothing depends on it) */
static void mark_topdir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC), flags = 0;
    if (fd < 0) return;
    if (ioctl(fd, FS_IOC_GETFLAGS, &flags) == 0 && !(flags & FS_TOPDIR_FL)) {
        flags |= FS_TOPDIR_FL;
        if (ioctl(fd, FS_IOC_SETFLAGS, &flags) < 0) {}
    }
    close(fd);
}

int queue_tree_create(const char *root, uid_t uid, gid_t gid)
{
    static const struct { const char *sub; mode_t mode; int fifo; } top[] = {
        { "", 0750, 0 }, { "tmp", 0700, 0 }, { "mess", 0750, 0 }, { "env", 0750, 0 },
        { "todo", 0750, 0 }, { "bounce", 0750, 0 }, { "lock", 0750, 0 },
        { "lock/trigger", 0600, 1 },
    };
    char path[QUEUE_PATH_MAX];
    mode_t old = umask(0);
    int ok = 1;
    for (size_t i = 0; ok && i < sizeof top / sizeof top[0]; i++)
        ok = queue_dir(path, sizeof path, root, top[i].sub)
             && make_one(path, top[i].mode, top[i].fifo, uid, gid);
    if (ok && queue_dir(path, sizeof path, root, "tmp")) mark_topdir(path);
    for (int kind = 0; ok && kind < 3; kind++)
        for (int h = 0; ok && h < 16; h++) {
            static const char *const top_of[] = { "mess", "env", "tmp" };
            char sub[16];
            snprintf(sub, sizeof sub, "%s/%c", top_of[kind], hexdig[h]);
            ok = queue_dir(path, sizeof path, root, sub)
                 && make_one(path, kind == 2 ? 0700 : 0750, 0, uid, gid);
        }
    int saved = errno;
    umask(old);
    errno = saved;
    return ok;
}

int queue_trigger_open(const char *root, char *path, size_t pathlen)
{
    if (!queue_dir(path, pathlen, root, "lock/trigger")) {
        if (pathlen) path[0] = 0;           /* no path: the caller can tell */
        return -1;
    }
    int fd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return -1;
    struct stat st;     /* a regular file there: nobody reads it, and it would grow */
    int bad = fstat(fd, &st) < 0 ? errno : S_ISFIFO(st.st_mode) ? 0 : EINVAL;
    if (bad) {
        close(fd);
        errno = bad;
        return -1;
    }
    return fd;
}

int queue_trigger(const char *root)
{
    char path[QUEUE_PATH_MAX];
    int fd = queue_trigger_open(root, path, sizeof path);
    if (fd < 0) return errno == ENXIO ? 1 : 0;
    ssize_t n;
    do n = write(fd, "", 1); while (n < 0 && errno == EINTR);
    int saved = errno;
    close(fd);
    if (n < 0 && saved != EAGAIN) { errno = saved; return 0; }
    return 1;
}

int queue_root_from_exe(char *root, size_t len)
{
    ssize_t n = readlink("/proc/self/exe", root, len - 1);
    if (n <= 0 || (size_t)n >= len - 1) return 0;
    root[n] = 0;
    for (int i = 0; i < 2; i++) {
        char *slash = strrchr(root, '/');
        if (!slash) return 0;
        *slash = 0;
    }
    if (!root[0]) { root[0] = '/'; root[1] = 0; }
    return 1;
}
