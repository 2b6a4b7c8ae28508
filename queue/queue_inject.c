/* queue_inject.c - read a message and its envelope records, commit them to
 * the queue so that a crash at any point leaves nothing or a whole message. */
#include "queue_inject.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

enum { REC_F = 1, REC_H = 2, REC_E = 4, REC_N = 8, REC_B = 16, REC_U = 32, REC_C = 64 };

static int bad(char *why, size_t whylen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int bad(char *why, size_t whylen, const char *fmt, ...)
{
    if (why && whylen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, whylen, fmt, ap);
        va_end(ap);
    }
    errno = EPROTO;
    return 0;
}

void inject_env_init(struct inject_env *ie, uid_t caller)
{
    envelope_init(&ie->env);
    ie->received = (struct buf)BUF_ZERO;
    ie->seen = 0;
    ie->caller = caller;
    ie->dup_slot = NULL;
    ie->dup_cap = 0;
}

void inject_env_free(struct inject_env *ie)
{
    free(ie->dup_slot);
    ie->dup_slot = NULL;
    ie->dup_cap = 0;
    envelope_free(&ie->env);
    buf_free(&ie->received);
}

/* H: printable ASCII and space; LF only as folding ("\n\t" or "\n ") */
static int received_ok(const char *s, size_t n)
{
    if (n == 0) return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n') {
            if (i + 1 >= n || (s[i + 1] != '\t' && s[i + 1] != ' ')) return 0;
            i++;   /* the folding whitespace */
            continue;
        }
        if (c < 0x20 || c > 0x7e) return 0;
    }
    return 1;
}

/* FNV-1a over the address, NOTIFY and ORCPT */
static size_t rcpt_hash(const char *addr, unsigned notify, const char *orcpt)
{
    uint32_t h = 2166136261u;
    for (const char *p = addr; *p; p++) h = (h ^ (unsigned char)*p) * 16777619u;
    h = (h ^ (notify + 1)) * 16777619u;
    for (const char *p = orcpt; *p; p++) h = (h ^ (unsigned char)*p) * 16777619u;
    return h;
}

/* The slot of the recipient equal to (addr, notify, orcpt), or of the
 * empty slot where it would go. */
static size_t *dup_find(const struct inject_env *ie, const char *addr, unsigned notify, const char *orcpt)
{
    size_t mask = ie->dup_cap - 1, i = rcpt_hash(addr, notify, orcpt) & mask;
    for (;; i = (i + 1) & mask) {
        size_t k = ie->dup_slot[i];
        if (!k) return &ie->dup_slot[i];
        const struct env_rcpt *r = &ie->env.rcpt[k - 1];
        if (r->notify == notify && !strcmp(r->addr, addr) && !strcmp(env_text(r->orcpt), orcpt))
            return &ie->dup_slot[i];
    }
}

/* room for one more recipient in the table (kept at most half full) */
static int dup_grow(struct inject_env *ie)
{
    if (ie->dup_cap && (ie->env.nrcpt + 1) * 2 <= ie->dup_cap) return 1;
    size_t cap = ie->dup_cap ? ie->dup_cap * 2 : 64;
    size_t *slot = calloc(cap, sizeof *slot);
    if (!slot) { errno = ENOMEM; return 0; }
    free(ie->dup_slot);
    ie->dup_slot = slot;
    ie->dup_cap = cap;
    for (size_t k = 0; k < ie->env.nrcpt; k++) {
        const struct env_rcpt *r = &ie->env.rcpt[k];
        *dup_find(ie, r->addr, r->notify, env_text(r->orcpt)) = k + 1;
    }
    return 1;
}

static int rcpt_record(struct inject_env *ie, const char *v, size_t n, char *why, size_t whylen)
{
    const char *t1 = memchr(v, '\t', n);
    const char *t2 = t1 ? memchr(t1 + 1, '\t', n - (size_t)(t1 + 1 - v)) : NULL;
    if (!t2 || memchr(t2 + 1, '\t', n - (size_t)(t2 + 1 - v)))
        return bad(why, whylen, "T: want recipient<TAB>notify<TAB>orcpt");
    size_t al = (size_t)(t1 - v), nl = (size_t)(t2 - t1 - 1), ol = n - (size_t)(t2 + 1 - v);
    char addr[ENV_ADDR_MAX + 1], orcpt[ENV_FIELD_MAX + 1];
    unsigned notify;
    if (al == 0 || al > ENV_ADDR_MAX || !envelope_bytes_ok(v, al)) return bad(why, whylen, "T: bad recipient");
    if (!envelope_notify_parse(t1 + 1, nl, &notify)) return bad(why, whylen, "T: bad notify");
    if (ol > ENV_FIELD_MAX || !envelope_bytes_ok(t2 + 1, ol)) return bad(why, whylen, "T: bad orcpt");
    memcpy(addr, v, al);
    addr[al] = 0;
    memcpy(orcpt, t2 + 1, ol);
    orcpt[ol] = 0;
    if (!dup_grow(ie)) return 0;
    size_t *slot = dup_find(ie, addr, notify, orcpt);
    if (*slot) return 1;                        /* given before: once is enough */
    if (!envelope_add_rcpt(&ie->env, addr, notify, orcpt)) {
        if (errno == E2BIG) return bad(why, whylen, "T: more than %d recipients", ENV_RCPT_MAX);
        if (errno == ENOMEM) return 0;
        return bad(why, whylen, "T: refused");
    }
    *slot = ie->env.nrcpt;
    return 1;
}

int inject_env_record(struct inject_env *ie, const char *rec, size_t len, char *why, size_t whylen)
{
    if (len == 0 || len > INJECT_RECORD_MAX) return bad(why, whylen, "record length %zu", len);
    char letter = rec[0];
    const char *v = rec + 1;
    size_t n = len - 1;
    if (!(ie->seen & REC_F) && letter != 'F') return bad(why, whylen, "first record is not F");
    unsigned bit = 0;
    switch (letter) {
    case 'F': bit = REC_F; break;
    case 'H': bit = REC_H; break;
    case 'E': bit = REC_E; break;
    case 'N': bit = REC_N; break;
    case 'B': bit = REC_B; break;
    case 'U': bit = REC_U; break;
    case 'C': bit = REC_C; break;
    case 'T': return rcpt_record(ie, v, n, why, whylen);
    default: return bad(why, whylen, "unknown record %c", envelope_bytes_ok(rec, 1) ? letter : '?');
    }
    if (ie->seen & bit) return bad(why, whylen, "record %c twice", letter);
    ie->seen |= bit;
    switch (letter) {
    case 'F':
        if (n > ENV_ADDR_MAX || !envelope_bytes_ok(v, n) || (n == 2 && !memcmp(v, "<>", 2)))
            return bad(why, whylen, "F: bad sender");
        memcpy(ie->env.sender, v, n);
        ie->env.sender[n] = 0;
        return 1;
    case 'H':
        if (!received_ok(v, n)) return bad(why, whylen, "H: bad Received field");
        ie->received.len = 0;
        if (!(n >= 9 && !strncasecmp(v, "Received:", 9)) && !buf_appends(&ie->received, "Received: "))
            return 0;
        return buf_append(&ie->received, v, n);
    case 'E':
        if (n == 0 || n > ENV_FIELD_MAX || !envelope_bytes_ok(v, n)) return bad(why, whylen, "E: bad envid");
        memcpy(ie->env.envid, v, n);
        ie->env.envid[n] = 0;
        return 1;
    case 'N':
        if (n == 4 && !strncasecmp(v, "FULL", 4)) ie->env.ret_hdrs = 0;
        else if (n == 4 && !strncasecmp(v, "HDRS", 4)) ie->env.ret_hdrs = 1;
        else return bad(why, whylen, "N: want FULL or HDRS");
        ie->env.ret_given = 1;
        return 1;
    case 'B':
        if (n == 4 && !strncasecmp(v, "7BIT", 4)) ie->env.body_8bit = 0;
        else if (n == 8 && !strncasecmp(v, "8BITMIME", 8)) ie->env.body_8bit = 1;
        else return bad(why, whylen, "B: want 7BIT or 8BITMIME");
        return 1;
    case 'U':
        if (n) return bad(why, whylen, "U: takes no value");
        ie->env.smtputf8 = 1;
        return 1;
    default: /* 'C' */
        if (!envelope_bytes_ok(v, n)) return bad(why, whylen, "C: bad client");
        memcpy(ie->env.client, v, n); /* n < INJECT_RECORD_MAX <= ENV_FIELD_MAX */
        ie->env.client[n] = 0;
        return 1;
    }
}

int inject_env_finish(struct inject_env *ie, char *why, size_t whylen)
{
    if (!(ie->seen & REC_F)) return bad(why, whylen, "no F record");
    if (ie->env.nrcpt == 0) return bad(why, whylen, "no T record");
    /* the caller's claim, then the kernel's word on who the caller is */
    char tail[40];
    int tl = snprintf(tail, sizeof tail, "%s(uid %lu)", ie->env.client[0] ? " " : "local ",
                      (unsigned long)ie->caller);
    size_t cl = strlen(ie->env.client);
    if (tl < 0 || (size_t)tl >= sizeof tail) return bad(why, whylen, "uid");
    if (cl + (size_t)tl > ENV_FIELD_MAX) cl = ENV_FIELD_MAX - (size_t)tl;
    memcpy(ie->env.client + cl, tail, (size_t)tl + 1);
    return 1;
}

int inject_env_local_trace(struct inject_env *ie, time_t now)
{
    struct tm tm;
    char date[64];
    struct buf b = BUF_ZERO;
    if (!gmtime_r(&now, &tm) || !strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm)) {
        errno = EOVERFLOW;
        return 0;
    }
    if (!buf_appendf(&b, "Received: (postern queue-inject invoked by uid %lu);\n\t%s",
                     (unsigned long)ie->caller, date)
        || (ie->received.len && (!buf_appendc(&b, '\n') || !buf_append(&b, ie->received.s, ie->received.len)))) {
        buf_free(&b);
        return 0;
    }
    buf_free(&ie->received);
    ie->received = b;
    return 1;
}

int inject_env_read(struct inject_env *ie, int fd, char *why, size_t whylen)
{
    char b[4 * INJECT_RECORD_MAX];
    size_t pos = 0, len = 0;
    for (;;) {
        char *nul = memchr(b + pos, 0, len - pos);
        if (nul) {
            size_t rl = (size_t)(nul - (b + pos));
            if (rl == 0) return inject_env_finish(ie, why, whylen);
            if (!inject_env_record(ie, b + pos, rl, why, whylen)) return 0;
            pos += rl + 1;
            continue;
        }
        if (len - pos > INJECT_RECORD_MAX) return bad(why, whylen, "record longer than %d", INJECT_RECORD_MAX);
        memmove(b, b + pos, len - pos);
        len -= pos;
        pos = 0;
        /* read no further than needed is impossible with a stream; what
         * follows the end record is never looked at */
        ssize_t r = read(fd, b + len, sizeof b - len);
        if (r < 0) {
            if (errno == EINTR) continue;
            return 0;
        }
        if (r == 0) { errno = EPIPE; return 0; }
        len += (size_t)r;
    }
}

/* ---- the message ---- */

void inject_msg_init(struct inject_msg *m, int qfd)
{
    m->mem = (struct buf)BUF_ZERO;
    m->spill_fd = -1;
    m->qfd = qfd;
    m->spill_name[0] = 0;
    m->len = 0;
}

void inject_msg_free(struct inject_msg *m)
{
    buf_free(&m->mem);
    if (m->spill_fd >= 0) {
        close(m->spill_fd);
        unlinkat(m->qfd, m->spill_name, 0);
        m->spill_fd = -1;
    }
}

static int write_all(int fd, const void *p, size_t n)
{
    const char *s = p;
    while (n) {
        ssize_t w = write(fd, s, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return 0;
        }
        s += w;
        n -= (size_t)w;
    }
    return 1;
}

/* a new file tmp/<h>/<id><suffix> (tmp/<id><suffix> in a tree made before
 * tmp/<h> existed), O_EXCL; on EEXIST a fresh id is tried */
static int tmp_create(int qfd, char *id, const char *suffix, char *name, size_t namelen, int new_id)
{
    for (int tries = 0; tries < 8; tries++) {
        if (new_id && !queue_id_new(id)) return -1;
        snprintf(name, namelen, "tmp/%c/%s%s", envelope_id_hash(id), id, suffix);
        int fd = openat(qfd, name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0 && errno == ENOENT) {
            snprintf(name, namelen, "tmp/%s%s", id, suffix);
            fd = openat(qfd, name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        }
        if (fd >= 0 || errno != EEXIST || !new_id) return fd;
    }
    errno = EEXIST;
    return -1;
}

/* The read and copy buffer. Static, not on the stack: a 64 KiB frame is
 * probed page by page (-fstack-clash-protection), 16 page faults on every
 * exec of queue-inject although a short message fills one page of it. */
static char io_buf[65536];

int inject_msg_read(struct inject_msg *m, int fd, size_t mem_max)
{
    char *b = io_buf;
    for (;;) {
        ssize_t r = read(fd, b, sizeof io_buf);
        if (r < 0) {
            if (errno == EINTR) continue;
            return 0;
        }
        if (r == 0) return 1;
        m->len += (unsigned long long)r;
        if (m->spill_fd < 0 && m->mem.len + (size_t)r <= mem_max) {
            if (!buf_append(&m->mem, b, (size_t)r)) return 0;
            continue;
        }
        if (m->spill_fd < 0) {
            char id[ENV_ID_LEN + 1];
            m->spill_fd = tmp_create(m->qfd, id, ".s", m->spill_name, sizeof m->spill_name, 1);
            if (m->spill_fd < 0) return 0;
            if (!write_all(m->spill_fd, m->mem.s, m->mem.len)) return 0;
            buf_free(&m->mem);
        }
        if (!write_all(m->spill_fd, b, (size_t)r)) return 0;
    }
}

/* copy the spill file's whole content to out */
static int copy_spill(int in, int out)
{
    if (lseek(in, 0, SEEK_SET) < 0) return 0;
    for (;;) {
        ssize_t n = copy_file_range(in, NULL, out, NULL, 1 << 30, 0);
        if (n > 0) continue;
        if (n == 0) return 1;
        if (errno == EINTR) continue;
        if (errno != EXDEV && errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP) return 0;
        break;
    }
    /* fallback: read/write (offsets: out is at its end, in wherever it got) */
    char *b = io_buf;
    for (;;) {
        ssize_t r = read(in, b, sizeof io_buf);
        if (r < 0) {
            if (errno == EINTR) continue;
            return 0;
        }
        if (r == 0) return 1;
        if (!write_all(out, b, (size_t)r)) return 0;
    }
}

static int fsync_counted(int fd, struct commit_stats *st)
{
    st->fsyncs++;
    return fsync(fd) == 0;
}

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE 1  /* linux/fs.h; musl 1.2.3 has no renameat2() */
#endif

/* rename without replacing; falls back to link+unlink where unsupported.
 * The raw system call, because queue-inject is also built against musl,
 * whose headers (1.2.3) declare no renameat2(). */
static int move_noreplace(int qfd, const char *from, const char *to)
{
    if (syscall(SYS_renameat2, qfd, from, qfd, to, RENAME_NOREPLACE) == 0) return 1;
    if (errno != EINVAL && errno != ENOSYS) return 0;
    if (linkat(qfd, from, qfd, to, 0) < 0) return 0;
    unlinkat(qfd, from, 0);
    return 1;
}

static int open_dir(int qfd, const char *sub)
{
    return openat(qfd, sub, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
}

int queue_commit(int qfd, const char *root, struct inject_env *ie, struct inject_msg *m,
                 char *id, struct commit_stats *st)
{
    char mtmp[64], etmp[64], mess[64], env[64], todo[64], sub[16];
    struct buf text = BUF_ZERO;
    int mfd = -1, efd = -1, dfd = -1, placed = 0, ok = 0;
    memset(st, 0, sizeof *st);
    mtmp[0] = etmp[0] = 0;  /* set only once we created the file */

    /* 1. the message: tmp/<h>/ID.m, Received line first */
    mfd = tmp_create(qfd, id, ".m", mtmp, sizeof mtmp, 1);
    if (mfd < 0) { mtmp[0] = 0; goto out; }
    if (ie->received.len && (!write_all(mfd, ie->received.s, ie->received.len) || !write_all(mfd, "\n", 1)))
        goto out;
    if (m->spill_fd >= 0 ? !copy_spill(m->spill_fd, mfd) : !write_all(mfd, m->mem.s, m->mem.len))
        goto out;

    /* 2. the envelope: tmp/<h>/ID.e */
    memcpy(ie->env.id, id, ENV_ID_LEN + 1);
    ie->env.birth = queue_id_time(id);
    if (!envelope_format(&ie->env, &text)) goto out;
    efd = tmp_create(qfd, id, ".e", etmp, sizeof etmp, 0);
    if (efd < 0) { etmp[0] = 0; goto out; }
    if (!write_all(efd, text.s, text.len)) goto out;

    /* both made, then both fsynced: a new file's fsync also writes its
     * directory (ext4 without a journal), and tmp/<h> then holds both
     * names, so the second fsync finds that block clean: one directory
     * write per message, not two */
    if (!fsync_counted(mfd, st)) goto out;
    if (close(mfd) < 0) { mfd = -1; goto out; }
    mfd = -1;
    if (!fsync_counted(efd, st)) goto out;
    if (close(efd) < 0) { efd = -1; goto out; }
    efd = -1;

    /* 3. mess/<h>/ID into place, made durable before the envelope appears,
     * so that an envelope never exists without its message */
    char h = envelope_id_hash(id);
    snprintf(mess, sizeof mess, "mess/%c/%s", h, id);
    snprintf(env, sizeof env, "env/%c/%s", h, id);
    snprintf(todo, sizeof todo, "todo/%s", id);
    if (!move_noreplace(qfd, mtmp, mess)) goto out;
    placed = 1;
    snprintf(sub, sizeof sub, "mess/%c", h);
    if ((dfd = open_dir(qfd, sub)) < 0 || !fsync_counted(dfd, st)) goto out;
    close(dfd);
    dfd = -1;

    /* 4. env/<h>/ID into place; fsync env/<h>: the commit point */
    if (!move_noreplace(qfd, etmp, env)) goto out;
    etmp[0] = 0;
    placed = 2;
    snprintf(sub, sizeof sub, "env/%c", h);
    if ((dfd = open_dir(qfd, sub)) < 0 || !fsync_counted(dfd, st)) goto out;
    close(dfd);
    dfd = -1;
    ok = 1;

    /* 5. after the commit: the todo/ marker and the trigger. Failing here
     * loses nothing (queue-manager's scan of env/ finds the message), so it
     * is reported, not undone: undoing would make the client send it twice. */
    if (linkat(qfd, env, qfd, todo, 0) < 0) {
        st->todo_failed = 1;
        st->todo_errno = errno;
    }
    queue_trigger(root);

out:;
    int saved = errno;
    if (!ok) {
        if (mfd >= 0) close(mfd);
        if (efd >= 0) close(efd);
        if (dfd >= 0) close(dfd);
        /* undo in reverse: the envelope first, so no envelope is left without its message */
        if (placed == 2) unlinkat(qfd, env, 0);
        if (placed >= 1) unlinkat(qfd, mess, 0);
        else if (mtmp[0]) unlinkat(qfd, mtmp, 0);
        if (etmp[0]) unlinkat(qfd, etmp, 0);
        if (saved == 0) saved = EIO;
    }
    buf_free(&text);
    errno = saved;
    return ok;
}

int inject_exit_code(int err)
{
    switch (err) {
    case ENOSPC:
    case EDQUOT: return INJECT_EXIT_NOSPACE;
    case EPROTO: return INJECT_EXIT_MALFORMED;
    case EPIPE: return INJECT_EXIT_UNENDED;
    default: return INJECT_EXIT_TEMP;
    }
}
