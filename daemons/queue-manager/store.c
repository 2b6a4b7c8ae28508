/* store.c - queue-manager's work on queue files: read and durably rewrite
 * envelopes, remove finished messages, sweep leftovers, scan for messages.
 *
 * Rewriting an envelope: the new text goes to queue/tmp/qm.<ID> (created
 * O_TRUNC|O_NOFOLLOW, mode 0600; only queue-manager makes "qm." names),
 * fsync, rename over queue/env/<h>/ID, fsync queue/env/<h>. A crash before
 * the rename leaves the old envelope (the result is not recorded: the
 * recipient is tried again, maybe delivered twice, never lost).
 *
 * Removing a message: the envelope first (fsync env/<h>), then the body.
 * A crash between leaves a body without envelope: garbage that qm_sweep
 * removes once it is older than QM_STALE_AGE (an injection in progress
 * also has its body in place before its envelope). Removals are batched:
 * qm_msg_remove unlinks todo/ID and env/<h>/ID at once and notes ID;
 * qm_remove_flush, at most QM_RM_DELAY_MS later or after QM_RM_BATCH of
 * them, fsyncs each env/<h> that lost an envelope, once, and only then
 * unlinks the bodies. One directory fsync per finished message was
 * queue-manager's largest cost (it waits for the disk, and dispatches
 * nothing meanwhile). Until the flush, a crash of the machine can bring an
 * envelope back: the message is delivered again (the qmail trade-off,
 * docs/QUEUE.md), never lost, and never left without its body. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "io.h"
#include "log.h"
#include "qm.h"
#include "queue_path.h"

#define QM_ENV_FILE_MAX (64u << 20)

static int read_file(const char *path, struct buf *b, size_t max)
{
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return 0;
    for (;;) {
        if (b->len >= max) { close(fd); errno = EFBIG; return 0; }
        if (!buf_reserve(b, 65536)) { close(fd); return 0; }
        ssize_t n = read(fd, b->s + b->len, b->cap - b->len - 1);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) { int e = errno; close(fd); errno = e; return 0; }
        if (!n) break;
        b->len += (size_t)n;
    }
    close(fd);
    b->s[b->len] = 0;
    return 1;
}

int qm_env_load(const struct qm *q, const char *id, struct envelope *e)
{
    char path[QUEUE_PATH_MAX], why[256];
    struct buf b = BUF_ZERO;
    if (!queue_path(path, sizeof path, q->root, QUEUE_ENV, id)) return 0;
    if (!read_file(path, &b, QM_ENV_FILE_MAX)) { int er = errno; buf_free(&b); errno = er; return 0; }
    envelope_init(e);
    if (!envelope_parse(e, b.s, b.len, why, sizeof why)) {
        log_error(id, "envelope=unreadable why=\"%s\"", why);
        envelope_free(e);
        buf_free(&b);
        errno = EINVAL;
        return 0;
    }
    buf_free(&b);
    if (strcmp(e->id, id)) {
        log_error(id, "envelope=unreadable why=\"id field %s\"", e->id);
        envelope_free(e);
        errno = EINVAL;
        return 0;
    }
    return 1;
}

static int fsync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return 0;
    int ok = fsync(fd) == 0;
    int e = errno;
    close(fd);
    errno = e;
    return ok;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) { if (!w) errno = EIO; return 0; }
        p += w;
        n -= (size_t)w;
    }
    return 1;
}

int qm_env_save(const struct qm *q, const struct envelope *e)
{
    char tmp[QUEUE_PATH_MAX], path[QUEUE_PATH_MAX], dir[QUEUE_PATH_MAX], sub[8];
    struct buf b = BUF_ZERO;
    int fd = -1;
    if (!queue_path(path, sizeof path, q->root, QUEUE_ENV, e->id)) return 0;
    snprintf(sub, sizeof sub, "env/%c", envelope_id_hash(e->id));
    if (!queue_dir(dir, sizeof dir, q->root, sub)) return 0;
    if (snprintf(tmp, sizeof tmp, "%s/queue/tmp/qm.%s", q->root, e->id) >= (int)sizeof tmp) { errno = ENAMETOOLONG; return 0; }
    if (!envelope_format(e, &b)) goto fail;
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) goto fail;
    if (!write_all(fd, b.s, b.len) || fsync(fd) < 0) goto fail;
    if (close(fd) < 0) { fd = -1; goto fail; }
    fd = -1;
    if (rename(tmp, path) < 0) goto fail;
    if (!fsync_dir(dir)) goto fail;
    buf_free(&b);
    return 1;
fail:;
    int er = errno;
    if (fd >= 0) close(fd);
    unlink(tmp);
    buf_free(&b);
    errno = er;
    return 0;
}

int qm_msg_remove(struct qm *q, const char *id)
{
    char path[QUEUE_PATH_MAX];
    if (strlen(id) != ENV_ID_LEN) { errno = EINVAL; return 0; }
    if (q->nrm == QM_RM_BATCH) qm_remove_flush(q);
    if (queue_path(path, sizeof path, q->root, QUEUE_TODO, id)) unlink(path);
    if (!queue_path(path, sizeof path, q->root, QUEUE_ENV, id)) return 0;
    if (unlink(path) < 0 && errno != ENOENT) return 0;
    if (!q->nrm) q->rm_due = io_now_ms() + QM_RM_DELAY_MS;
    memcpy(q->rm[q->nrm++], id, ENV_ID_LEN + 1);
    return 1;
}

/* the batch's env/<h> directories made durable, each once; then the bodies.
 * A directory whose fsync fails keeps its bodies (qm_sweep removes them
 * after QM_STALE_AGE): its envelopes may come back after a crash. */
void qm_remove_flush(struct qm *q)
{
    char path[QUEUE_PATH_MAX], dir[QUEUE_PATH_MAX], sub[8];
    int state[256] = { 0 };         /* per hash character: 0 not yet, 1 durable, -1 failed */
    for (size_t i = 0; i < q->nrm; i++) {
        unsigned char h = (unsigned char)envelope_id_hash(q->rm[i]);
        if (!state[h]) {
            snprintf(sub, sizeof sub, "env/%c", h);
            state[h] = queue_dir(dir, sizeof dir, q->root, sub) && fsync_dir(dir) ? 1 : -1;
            if (state[h] < 0) log_error(NULL, "fsync=%s error=\"%s\" bodies=kept", sub, strerror(errno));
        }
        if (state[h] < 0 || !queue_path(path, sizeof path, q->root, QUEUE_MESS, q->rm[i])) continue;
        if (unlink(path) < 0 && errno != ENOENT)
            log_error(q->rm[i], "unlink=mess error=\"%s\"", strerror(errno));
    }
    q->nrm = 0;
}

int qm_msg_open(const struct qm *q, const char *id)
{
    char path[QUEUE_PATH_MAX];
    if (!queue_path(path, sizeof path, q->root, QUEUE_MESS, id)) return -1;
    return open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
}

/* the whole message if it is at most QM_DSN_READ_MAX bytes, else its header */
int qm_msg_read(const struct qm *q, const char *id, char **text, size_t *len, size_t *size)
{
    char path[QUEUE_PATH_MAX];
    struct buf b = BUF_ZERO;
    struct stat st;
    *text = NULL;
    *len = *size = 0;
    if (!queue_path(path, sizeof path, q->root, QUEUE_MESS, id)) return 0;
    if (!read_file(path, &b, QM_DSN_READ_MAX)) {
        if (errno != EFBIG) { int e = errno; buf_free(&b); errno = e; return 0; }
        char *end = memmem(b.s, b.len, "\n\n", 2);
        b.len = end ? (size_t)(end - b.s) + 1 : 0;
        /* only the header section is kept: the report needs the real size */
        *size = stat(path, &st) == 0 && st.st_size > 0 ? (size_t)st.st_size : QM_DSN_READ_MAX + 1;
        if (*size <= b.len) *size = QM_DSN_READ_MAX + 1;
    } else {
        *size = b.len;
    }
    *text = b.s ? b.s : calloc(1, 1);
    *len = b.len;
    return *text != NULL;
}

static time_t file_mtime(int dfd, const char *name)
{
    struct stat st;
    if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) return -1;
    return st.st_mtime;
}

/* tmp/ and tmp/<h>/: qm.* (only in tmp/) are ours (a rewrite cut short by
 * a crash: the old envelope is still in place); any other file older than
 * QM_STALE_AGE is a dead injection.
 * mess/<h>/ID without env/<h>/ID older than QM_STALE_AGE: garbage. */
static void sweep_tmp(const struct qm *q, const char *sub, time_t now)
{
    char dir[QUEUE_PATH_MAX];
    struct stat st;
    if (!queue_dir(dir, sizeof dir, q->root, sub)) return;
    DIR *d = opendir(dir);
    struct dirent *de;
    if (!d && errno != ENOENT) log_error(NULL, "sweep=%s error=\"%s\"", sub, strerror(errno));
    while (d && (de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || S_ISDIR(st.st_mode)) continue;
        if (strncmp(de->d_name, "qm.", 3) && now - st.st_mtime < QM_STALE_AGE) continue;
        if (unlinkat(dirfd(d), de->d_name, 0) == 0) log_info(NULL, "swept=%s/%s", sub, de->d_name);
    }
    if (d) closedir(d);
}

void qm_sweep(struct qm *q, time_t now)
{
    char dir[QUEUE_PATH_MAX], path[QUEUE_PATH_MAX];
    qm_remove_flush(q);
    sweep_tmp(q, "tmp", now);
    for (int h = 0; h < 16; h++) {
        char sub[16];
        snprintf(sub, sizeof sub, "tmp/%X", h);
        sweep_tmp(q, sub, now);
    }
    for (int h = 0; h < 16; h++) {
        char sub[16];
        snprintf(sub, sizeof sub, "mess/%X", h);
        if (!queue_dir(dir, sizeof dir, q->root, sub)) continue;
        DIR *d = opendir(dir);
        struct dirent *de;
        if (!d && errno != ENOENT) log_error(NULL, "sweep=%s error=\"%s\"", sub, strerror(errno));
        while (d && (de = readdir(d))) {
            if (!envelope_id_valid(de->d_name)) continue;
            if (!queue_path(path, sizeof path, q->root, QUEUE_ENV, de->d_name)) continue;
            if (access(path, F_OK) == 0 || errno != ENOENT) continue;
            time_t mt = file_mtime(dirfd(d), de->d_name);
            if (mt < 0 || now - mt < QM_STALE_AGE) continue;
            if (unlinkat(dirfd(d), de->d_name, 0) == 0) log_info(de->d_name, "swept=mess-without-envelope");
        }
        if (d) closedir(d);
    }
}

/* a message seen in todo/ or env/: known from now on; its todo/ marker
 * goes (the envelope in env/ is the truth, the marker only says "new") */
static void take(struct qm *q, const char *id, int from_todo)
{
    char path[QUEUE_PATH_MAX];
    if (!qm_find(q, id)) {
        if (!queue_path(path, sizeof path, q->root, QUEUE_ENV, id)) return;
        if (access(path, F_OK) < 0) {
            if (from_todo && errno == ENOENT && queue_path(path, sizeof path, q->root, QUEUE_TODO, id))
                unlink(path);       /* a marker without envelope: the message is gone */
            return;
        }
        if (!queue_path(path, sizeof path, q->root, QUEUE_MESS, id)) return;
        if (access(path, F_OK) < 0 && errno == ENOENT) {
            /* an envelope without its body cannot be delivered: never acknowledged */
            if (qm_msg_remove(q, id)) log_warn(id, "removed=envelope-without-message");
            else log_error(id, "remove=failed why=envelope-without-message error=\"%s\"", strerror(errno));
            return;
        }
        if (!qm_add(q, id)) { log_error(id, "error=\"cannot track message: %s\"", strerror(errno)); return; }
    }
    if (from_todo && queue_path(path, sizeof path, q->root, QUEUE_TODO, id)) unlink(path);
}

/* h: the env/<h> being scanned, 0 for todo/. An envelope in another
 * env/<h> than its id's (put back by hand into the wrong one) is found
 * there by nothing that looks it up by id: it is named at each full scan,
 * not silently passed over */
static void scan_dir(struct qm *q, const char *sub, int from_todo, char h)
{
    char dir[QUEUE_PATH_MAX];
    if (!queue_dir(dir, sizeof dir, q->root, sub)) return;
    DIR *d = opendir(dir);
    if (!d) { log_error(NULL, "scan=%s error=\"%s\"", sub, strerror(errno)); return; }
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!envelope_id_valid(de->d_name)) continue;
        if (h && envelope_id_hash(de->d_name) != h)
            log_error(de->d_name, "envelope=misplaced dir=%s want=env/%c action=skipped", sub,
                      envelope_id_hash(de->d_name));
        else take(q, de->d_name, from_todo);
    }
    closedir(d);
}

void qm_scan_todo(struct qm *q) { scan_dir(q, "todo", 1, 0); }

void qm_scan_all(struct qm *q)
{
    scan_dir(q, "todo", 1, 0);
    for (int h = 0; h < 16; h++) {
        char sub[16];
        snprintf(sub, sizeof sub, "env/%X", h);
        scan_dir(q, sub, 0, sub[4]);
    }
}
