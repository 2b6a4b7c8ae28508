/* local.c - one local delivery job (see local.h). */
#include "local.h"

#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "aliases.h"
#include "envelope.h"
#include "smtp_addr.h"
#include "buf.h"
#include "inject_client.h"
#include "io.h"
#include "log.h"
#include "maildir.h"
#include "privdrop.h"

/* The homes this process has seen exist (make_home), by a 64-bit FNV-1a
 * of the name: it looks at each at most once (until the mailboxes file
 * changes), and then from a child it waits for at most HOME_WAIT_MS.
 * ROOT/mail on an NFS server that stopped answering held this process, the
 * one that reads every job, in mkdir() for good, and nobody got local mail
 * any more, not even users with a Maildir elsewhere; now only a user's own
 * deliveries wait, deferred, or in a worker or child that is killed after
 * LOCAL_JOB_TIME_MAX. Full: looked at each time, as before. Forgotten
 * on a reload (SIGHUP, queue-manager's reload record): a home removed by
 * hand is made again after one. */
#define HOMES_SEEN_MAX 4096
static unsigned long long homes_seen[HOMES_SEEN_MAX];   /* 0: a free slot */

static unsigned long long home_key(const char *name)
{
    unsigned long long h = 14695981039346656037ULL;
    for (; *name; name++) h = (h ^ (unsigned char)*name) * 1099511628211ULL;
    return h ? h : 1;
}

/* 1 if seen; else 0, remembered if remember and there is room */
static int home_seen(unsigned long long key, int remember)
{
    for (size_t i = 0, k = (size_t)(key % HOMES_SEEN_MAX); i < HOMES_SEEN_MAX; i++, k = (k + 1) % HOMES_SEEN_MAX) {
        if (homes_seen[k] == key) return 1;
        if (!homes_seen[k]) {
            if (remember) homes_seen[k] = key;
            return 0;
        }
    }
    return 0;
}

void local_tables_init(struct local_tables *t, const struct config *cfg)
{
    memset(t, 0, sizeof *t);
    t->cfg = *cfg;
    aliases_init(&t->aliases);
    mailboxes_init(&t->mailboxes);
}

void local_tables_forget(struct local_tables *t)
{
    memset(homes_seen, 0, sizeof homes_seen);
    t->conf_c.loaded = t->aliases_c.loaded = t->mailboxes_c.loaded = 0;
}

/* ROOT/conf/<name> */
static const char *conf_path(const struct local_tables *t, const char *name, char *path, size_t len)
{
    int n = snprintf(path, len, "%s/conf/%s", t->cfg.root, name);
    return n > 0 && (size_t)n < len ? path : NULL;
}

void local_tables_refresh(struct local_tables *t, const char *id)
{
    char path[PATH_MAX], err[512];
    struct filesig now;
    if (conf_path(t, "postern.conf", path, sizeof path) && filesig_cache_stale(&t->conf_c, path, &now)) {
        static struct config nc;
        if (config_load(&nc, t->cfg.root, err, sizeof err)) {
            t->cfg = nc;
            filesig_cache_loaded(&t->conf_c, &now);
        } else {
            log_error(id, "event=reload error=\"%s\" kept=previous", err);
        }
    }
    if (conf_path(t, "aliases", path, sizeof path) && filesig_cache_stale(&t->aliases_c, path, &now)) {
        struct aliases a;
        aliases_init(&a);
        t->aliases_c.loaded = 0;
        if (aliases_load(&a, path, t->aliases_err, sizeof t->aliases_err)) {
            aliases_free(&t->aliases);
            t->aliases = a;
            t->aliases_ok = 1;
            filesig_cache_loaded(&t->aliases_c, &now);
        } else {
            t->aliases_ok = 0;    /* logged by each job it defers */
        }
    }
    if (conf_path(t, "mailboxes", path, sizeof path) && filesig_cache_stale(&t->mailboxes_c, path, &now)) {
        struct mailboxes m;
        mailboxes_init(&m);
        t->mailboxes_c.loaded = 0;
        if (mailboxes_load(&m, path, t->mailboxes_err, sizeof t->mailboxes_err)) {
            mailboxes_free(&t->mailboxes);
            t->mailboxes = m;
            t->mailboxes_ok = 1;
            filesig_cache_loaded(&t->mailboxes_c, &now);
        } else {
            t->mailboxes_ok = 0;
        }
    }
}

static int is_local_cb(void *ctx, const char *domain, size_t len)
{
    return config_is_local_domain(ctx, domain, len);
}

static void result_set(struct dp_result *r, enum dp_status s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void result_set(struct dp_result *r, enum dp_status s, const char *fmt, ...)
{
    va_list ap;
    r->status = s;
    va_start(ap, fmt);
    vsnprintf(r->text, sizeof r->text, fmt, ap);
    va_end(ap);
}

/* Run fn in a child that reports "<s|t|p><text>" through a pipe. */
typedef void child_fn(const void *ctx, struct dp_result *r);

static void in_child(child_fn *fn, const void *ctx, struct dp_result *r)
{
    int p[2];
    char b[DP_FIELD_MAX + 2];
    if (pipe2(p, O_CLOEXEC) < 0) { result_set(r, DP_TEMPORARY, "4.3.0 pipe: %s", strerror(errno)); return; }
    pid_t pid = fork();
    if (pid < 0) {
        close(p[0]); close(p[1]);
        result_set(r, DP_TEMPORARY, "4.3.0 fork: %s", strerror(errno));
        return;
    }
    if (!pid) {
        struct dp_result cr;
        close(p[0]);
        memset(&cr, 0, sizeof cr);
        fn(ctx, &cr);
        b[0] = (char)cr.status;
        size_t n = strlen(cr.text);
        memcpy(b + 1, cr.text, n);
        ssize_t w = write(p[1], b, n + 1);
        _exit(w == (ssize_t)(n + 1) ? 0 : 111);
    }
    close(p[1]);
    size_t got = 0;
    for (;;) {
        ssize_t n = read(p[0], b + got, sizeof b - 1 - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        got += (size_t)n;
        if (got >= sizeof b - 1) break;
    }
    close(p[0]);
    int ws = 0;
    while (waitpid(pid, &ws, 0) < 0 && errno == EINTR) {}
    b[got] = 0;
    if (got < 2 || (b[0] != DP_SUCCESS && b[0] != DP_TEMPORARY && b[0] != DP_PERMANENT)) {
        result_set(r, DP_TEMPORARY, "4.3.0 delivery process died");
        return;
    }
    r->status = (enum dp_status)b[0];
    snprintf(r->text, sizeof r->text, "%s", b + 1);
}

/* ROOT/mail/<name>/Maildir: make ROOT/mail/<name> for the user, as root,
 * and fsync ROOT/mail, which holds its name (else a power cut could take
 * the home, and the mail delivered into it, away). In the child: 0 done
 * (or there already), 1 the fsync failed, 2 it could not be made. */
static int home_make_now(const char *home, size_t rootlen, uid_t uid, gid_t gid)
{
    if (mkdir(home, 0700) < 0) return errno == EEXIST ? 0 : 2;   /* there: leave it alone */
    int fd = open(home, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return 2;
    if (fchown(fd, uid, gid) < 0) log_warn(NULL, "home=%s error=\"chown: %s\"", home, strerror(errno));
    close(fd);
    char mail[PATH_MAX];
    snprintf(mail, sizeof mail, "%.*s", (int)rootlen, home);     /* ROOT/mail */
    return maildir_fsync_dir(mail) ? 0 : 1;
}

/* A home's making still under way after HOME_WAIT_MS (its file system does
 * not answer): the child is killed and remembered, and that mailbox's jobs
 * are deferred, without another child, until it is gone. */
#define HOME_WAIT_MS 5000
#define HOMES_PENDING_MAX 64
static struct { unsigned long long key; pid_t pid; } homes_pending[HOMES_PENDING_MAX];

/* 1 while the home of key is being made by a child that has not ended */
static int home_pending(unsigned long long key)
{
    for (size_t i = 0; i < HOMES_PENDING_MAX; i++) {
        if (homes_pending[i].key != key || !homes_pending[i].pid) continue;
        if (waitpid(homes_pending[i].pid, NULL, WNOHANG) == 0) return 1;
        homes_pending[i].key = 0;           /* ended at last: try again */
        homes_pending[i].pid = 0;
    }
    return 0;
}

/* The home is made in a child, and this process (which reads every job)
 * waits for it at most HOME_WAIT_MS (why: the comment on home_seen's
 * table above). 1 made (or not ours to make), 0 the fsync failed (errno
 * EIO), -1 not answering (deferred). */
static int make_home(const struct config *c, const struct mailbox *mb)
{
    char home[PATH_MAX], want[PATH_MAX];
    int n = snprintf(home, sizeof home, "%s/mail/%s", c->root, mb->name);
    if (n < 0 || (size_t)n >= sizeof home) return 1;
    if (snprintf(want, sizeof want, "%s/Maildir", home) >= (int)sizeof want || strcmp(want, mb->maildir)) return 1;
    unsigned long long key = home_key(mb->name);
    if (home_seen(key, 0)) return 1;
    if (home_pending(key)) return -1;
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) return 1;       /* as if there: the delivery will say */
    pid_t pid = fork();
    if (pid < 0) { close(p[0]); close(p[1]); return 1; }
    if (!pid) {
        /* nothing of ours but stderr and the pipe, whose end of file says
         * it is done: a child hung here must not keep queue-manager's job
         * socket (fd 0) or a worker's open */
        int null = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 || dup2(p[1], 3) < 0) _exit(2);
        closefrom(4);
        _exit(home_make_now(home, (size_t)n - strlen(mb->name) - 1, mb->uid, mb->gid));
    }
    close(p[1]);
    struct pollfd w = { .fd = p[0], .events = POLLIN, .revents = 0 };
    long long until = io_now_ms() + HOME_WAIT_MS;
    int r = 0;
    for (long long left; (left = until - io_now_ms()) > 0;) {   /* a signal does not start it over */
        r = poll(&w, 1, (int)left);
        if (r >= 0 || errno != EINTR) break;
    }
    close(p[0]);
    if (r <= 0) {
        kill(pid, SIGKILL);
        for (size_t i = 0; i < HOMES_PENDING_MAX; i++)
            if (!homes_pending[i].pid) { homes_pending[i].key = key; homes_pending[i].pid = pid; break; }
        /* past 64 hung homes at once it is not remembered: a zombie once
         * it ends, and the next job for the home forks again */
        return -1;
    }
    int ws = 0;
    while (waitpid(pid, &ws, 0) < 0 && errno == EINTR) {}
    int code = WIFEXITED(ws) ? WEXITSTATUS(ws) : 2;
    if (code == 1) { errno = EIO; return 0; }
    if (code == 0) home_seen(key, 1);
    return 1;
}

void local_mbox_job(const struct config *c, const struct dp_job *j, const struct mailbox *mb,
                    struct dp_mbox *m)
{
    memset(m, 0, sizeof *m);
    m->job = j->job;
    snprintf(m->id, sizeof m->id, "%s", j->id);
    snprintf(m->sender, sizeof m->sender, "%s", j->sender);
    snprintf(m->rcpt, sizeof m->rcpt, "%s", j->rcpt);
    m->uid = mb->uid;
    m->gid = mb->gid;
    snprintf(m->maildir, sizeof m->maildir, "%s", mb->maildir);
    snprintf(m->host, sizeof m->host, "%s", c->hostname);
    m->quota = c->mailbox_quota;
}

int local_mbox_become(uid_t uid, gid_t gid, struct dp_result *r)
{
    struct privuser u = { uid, gid };
    if (privdrop(NULL, &u)) return 1;
    result_set(r, DP_TEMPORARY, "4.3.0 cannot become the mailbox user: %s", strerror(errno));
    return 0;
}

#define MBOX_NOT_OURS "4.2.0 Maildir or a part of it is not the mailbox user's own, or others may write it: refused"

/* create what is missing of the Maildir: 1, or 0 with r set */
static int mbox_make(const char *maildir, struct dp_result *r)
{
    if (maildir_make(maildir)) return 1;
    int e = errno;
    if (e == ELOOP) result_set(r, DP_TEMPORARY, "4.2.0 Maildir or a part of it is a symlink: refused");
    else if (e == EPERM) result_set(r, DP_TEMPORARY, MBOX_NOT_OURS);
    else result_set(r, DP_TEMPORARY, "4.2.0 cannot create the Maildir: %s", strerror(e));
    return 0;
}

/* the one Maildir delivery: a pool worker's job, and of a job for one
 * mailbox run in a child of its own (mbox_in_place) */
void local_mbox_deliver(const struct dp_mbox *m, int msgfd, struct dp_result *r)
{
    struct buf pre = BUF_ZERO;
    char name[MAILDIR_NAME_MAX + 1];
    r->job = m->job;
    if (!buf_appendf(&pre, "Return-Path: <%s>\nDelivered-To: %s\n", m->sender, m->rcpt)) {
        result_set(r, DP_TEMPORARY, "4.3.0 out of memory");
        return;
    }
    /* the Maildir is made (maildir_make) only when a part is missing: for an
     * existing one that costs nothing, where making sure first cost eleven
     * system calls per delivery */
    int made = 0;
    if (m->quota) {
        unsigned long long used;
        struct stat st;
        int ok = maildir_usage(m->maildir, &used);
        if (!ok && errno == ENOENT) {
            if (!mbox_make(m->maildir, r)) { buf_free(&pre); return; }
            made = 1;
            ok = maildir_usage(m->maildir, &used);
        }
        if (!ok || fstat(msgfd, &st) < 0) {
            result_set(r, DP_TEMPORARY, "4.2.0 cannot measure the mailbox: %s", strerror(errno));
            buf_free(&pre);
            return;
        }
        unsigned long long size = (unsigned long long)st.st_size + pre.len;
        if (used > m->quota || size > m->quota - used) {
            result_set(r, DP_TEMPORARY, "4.2.2 mailbox full");
            buf_free(&pre);
            return;
        }
    }
    int ok = maildir_deliver(m->maildir, m->host, pre.s, pre.len, msgfd, name, sizeof name);
    if (!ok && errno == ENOENT && !made) {
        if (!mbox_make(m->maildir, r)) { buf_free(&pre); return; }
        ok = maildir_deliver(m->maildir, m->host, pre.s, pre.len, msgfd, name, sizeof name);
    }
    if (!ok) {
        int e = errno;
        if (e == EDQUOT) result_set(r, DP_TEMPORARY, "4.2.2 mailbox full");
        else if (e == ENOSPC) result_set(r, DP_TEMPORARY, "4.3.1 no space left for the mailbox");
        else if (e == ELOOP) result_set(r, DP_TEMPORARY, "4.2.0 Maildir or a part of it is a symlink: refused");
        else if (e == EPERM) result_set(r, DP_TEMPORARY, MBOX_NOT_OURS);
        else result_set(r, DP_TEMPORARY, "4.2.0 Maildir delivery failed: %s", strerror(e));
        buf_free(&pre);
        return;
    }
    buf_free(&pre);
    result_set(r, DP_SUCCESS, "2.0.0 delivered to maildir as %s", name);
}

/* drop to the mailbox's user in this process, then deliver */
static void mbox_in_place(const struct config *c, const struct dp_job *j, const struct mailbox *mb,
                          int msgfd, struct dp_result *r)
{
    struct dp_mbox m;
    local_mbox_job(c, j, mb, &m);
    if (local_mbox_become(m.uid, m.gid, r)) local_mbox_deliver(&m, msgfd, r);
}

struct mbox_ctx {
    const struct config *c;
    const struct dp_job *j;
    const struct mailbox *mb;
    int msgfd;
};

static void mbox_child(const void *vctx, struct dp_result *r)
{
    const struct mbox_ctx *x = vctx;
    mbox_in_place(x->c, x->j, x->mb, x->msgfd, r);
}

/* name's entry in conf/mailboxes, refused for uid/gid 0, its home made: 1,
 * or 0 with r set */
static int find_mailbox(const struct local_tables *t, const struct dp_job *j, const char *name,
                        struct mailbox *mb, struct dp_result *r)
{
    char err[512];
    if (!t->mailboxes_ok) {
        log_error(j->id, "error=\"mailboxes: %s\"", t->mailboxes_err);
        result_set(r, DP_TEMPORARY, "4.3.0 mailbox table unreadable");
        return 0;
    }
    if (!mailboxes_find(&t->mailboxes, name, mb, err, sizeof err)) {
        if (errno == ENOENT) { result_set(r, DP_PERMANENT, "5.1.1 no such user"); return 0; }
        log_error(j->id, "error=\"mailboxes: %s\"", err);
        result_set(r, DP_TEMPORARY, "4.3.0 mailbox table unreadable");
        return 0;
    }
    if (mb->uid == 0 || mb->gid == 0) { result_set(r, DP_TEMPORARY, "4.3.0 refusing to deliver as root"); return 0; }
    int home = make_home(&t->cfg, mb);
    if (home < 0) {
        log_error(j->id, "home=%s/mail/%s error=\"not answering after %d ms\"", t->cfg.root, mb->name, HOME_WAIT_MS);
        result_set(r, DP_TEMPORARY, "4.3.0 the mailbox's home does not answer (its file system is hung?)");
        return 0;
    }
    if (!home) {
        log_error(j->id, "home=%s/mail/%s error=\"fsync: %s\"", t->cfg.root, mb->name, strerror(errno));
        result_set(r, DP_TEMPORARY, "4.3.0 cannot make the mailbox's home durable: %s", strerror(errno));
        return 0;
    }
    return 1;
}

/* one of an alias's targets delivered in the alias's own job: its own
 * child drops to the user */
static void deliver_mailbox(const struct local_tables *t, const struct dp_job *j, const char *name,
                            int msgfd, struct dp_result *r)
{
    struct mailbox mb;
    if (!find_mailbox(t, j, name, &mb, r)) return;
    struct mbox_ctx x = { &t->cfg, j, &mb, msgfd };
    in_child(mbox_child, &x, r);
}

struct fwd_ctx {
    const struct config *c;
    const struct dp_job *j;
    const char *const *rcpt;    /* the new message's recipients */
    size_t nrcpt;
    int msgfd;
};

/* The DSN parameters of a forwarded copy (RFC 3461 on aliases, as Postfix's
 * local(8) does it): ENVID and RET as they came (the caller), NOTIFY without
 * SUCCESS (the success of reaching the alias is reported here; NEVER when
 * nothing is left), and the recipient the sender named as ORCPT: the one the
 * client gave, else this alias address (if it is ASCII, as rfc822 needs). */
static void forward_dsn(const struct dp_job *j, char *notify, size_t nlen, char *orcpt, size_t olen)
{
    unsigned bits = 0;
    notify[0] = 0;
    if (j->notify[0] && envelope_notify_parse(j->notify, strlen(j->notify), &bits)) {
        bits &= ~SMTP_NOTIFY_SUCCESS;
        if (!envelope_notify_format(bits ? bits : SMTP_NOTIFY_NEVER, notify, nlen)) notify[0] = 0;
    }
    orcpt[0] = 0;
    if (j->orcpt[0]) {
        snprintf(orcpt, olen, "%s", j->orcpt);
        return;
    }
    for (const char *p = j->rcpt; *p; p++)      /* an rfc822 ORCPT is ASCII (RFC 3461 4.2) */
        if ((unsigned char)*p >= 0x80) return;
    if (olen < 8 || !smtp_xtext(j->rcpt, orcpt + 7, olen - 7)) { orcpt[0] = 0; return; }
    memcpy(orcpt, "rfc822;", 7);
}

static void forward_child(const void *vctx, struct dp_result *r)
{
    const struct fwd_ctx *f = vctx;
    struct privuser u;
    struct buf pre = BUF_ZERO;
    char id[DP_ID_LEN + 1];
    int status;
    if (!buf_appendf(&pre, "Delivered-To: %s\n", f->j->rcpt)) {
        result_set(r, DP_TEMPORARY, "4.3.0 out of memory");
        return;
    }
    if (!privuser_lookup(f->c->user_queue, &u) || !privdrop(NULL, &u)) {
        result_set(r, DP_TEMPORARY, "4.3.0 cannot drop privileges to forward: %s", strerror(errno));
        return;
    }
    char notify[40], orcpt[DP_FIELD_MAX + 1];
    forward_dsn(f->j, notify, sizeof notify, orcpt, sizeof orcpt);
    struct inject_req q = { .sender = f->j->sender, .client = "local-deliverer forward",
                            .body8bit = !strcmp(f->j->body, "8BITMIME"), .smtputf8 = f->j->smtputf8,
                            .rcpt = f->rcpt, .nrcpt = f->nrcpt,
                            .prefix = pre.s, .prefixlen = pre.len, .msgfd = f->msgfd,
                            .envid = f->j->envid, .ret = f->j->ret,
                            .notify = notify, .orcpt = orcpt };
    if (!inject_run(f->c->root, &q, id, &status)) {
        result_set(r, DP_TEMPORARY, "4.3.0 forwarding failed: queue-inject exit %d", status);
        return;
    }
    result_set(r, DP_SUCCESS, "2.0.0 alias expanded to %zu address%s, queued as %s", f->nrcpt,
               f->nrcpt == 1 ? "" : "es", id);
}

void local_target_log(const char *id, const struct dp_result *one)
{
    char t[DP_FIELD_MAX * 2 + 8];
    if (one->status != DP_SUCCESS)
        log_warn(id, "event=target result=%c status=\"%s\"", (char)one->status,
                 log_quote(t, sizeof t, one->text, strlen(one->text)));
}

/* worst wins: temporary > permanent > success; the first of equals stays.
 * A member that fails for good fails the alias's delivery although the
 * others got the message, so that the sender hears of it (the report names
 * the member), as Postfix's local(8) bounces such a member; a temporary
 * failure retries every member. */
static void combine(struct dp_result *acc, int *have, const struct dp_result *one, const char *id)
{
    local_target_log(id, one);
    if (!*have) { *acc = *one; *have = 1; return; }
    if (acc->status == DP_TEMPORARY) return;
    if (one->status == DP_TEMPORARY || (one->status == DP_PERMANENT && acc->status == DP_SUCCESS))
        *acc = *one;
}

/* "5.1.1 no such user" of member bob of team@example.test becomes
 * "5.1.1 bob (expanded from team@example.test): no such user", Postfix's
 * wording, so that the report says which member failed */
static void name_member(struct dp_result *r, const char *member, const char *rcpt)
{
    char text[sizeof r->text];
    const char *sp = strchr(r->text, ' ');
    size_t codelen = sp ? (size_t)(sp - r->text) : strlen(r->text);
    snprintf(text, sizeof text, "%.*s %s (expanded from %s): %s", (int)codelen, r->text, member, rcpt,
             sp ? sp + 1 : "failed");
    memcpy(r->text, text, sizeof text);
}

enum local_kind local_plan(const struct local_tables *t, const struct dp_job *j, int msgfd,
                           struct local_job *lj, struct dp_result *r)
{
    char name[ALIAS_NAME_MAX + 1];
    struct alias_expansion x;
    const struct config *c = &t->cfg;
    lj->kind = LOCAL_DONE;
    memset(&lj->x, 0, sizeof lj->x);
    r->job = j->job;
    int lr = aliases_local_name(&t->aliases, j->rcpt, is_local_cb, (void *)c, name, sizeof name);
    if (lr <= 0) { result_set(r, DP_PERMANENT, "5.1.1 not a local mailbox address"); return LOCAL_DONE; }
    int loop = maildir_has_delivered_to(msgfd, j->rcpt);
    if (loop < 0) { result_set(r, DP_TEMPORARY, "4.3.0 cannot read the message: %s", strerror(errno)); return LOCAL_DONE; }
    if (loop) { result_set(r, DP_PERMANENT, "5.4.6 mail forwarding loop"); return LOCAL_DONE; }
    if (!t->aliases_ok) {
        log_error(j->id, "error=\"aliases: %s\"", t->aliases_err);
        result_set(r, DP_TEMPORARY, "4.3.5 aliases file unusable");
        return LOCAL_DONE;
    }
    if (!aliases_expand(&t->aliases, name, is_local_cb, (void *)c, &x)) {
        int e = errno;
        if (e == ELOOP) result_set(r, DP_PERMANENT, "5.4.6 alias loop");
        else if (e == E2BIG) result_set(r, DP_PERMANENT, "5.2.4 alias expands to too many addresses");
        else result_set(r, DP_TEMPORARY, "4.3.5 alias expansion failed: %s", strerror(e));
        return LOCAL_DONE;
    }
    if (!x.nlocal && !x.nremote) {
        alias_expansion_free(&x);
        result_set(r, DP_PERMANENT, "5.1.1 no such user");
        return LOCAL_DONE;
    }
    if (x.nlocal == 1 && !x.nremote) {
        int ok = find_mailbox(t, j, x.local[0], &lj->mb, r);
        if (!ok && strcmp(x.local[0], name)) name_member(r, x.local[0], j->rcpt);
        alias_expansion_free(&x);
        if (!ok) { local_target_log(j->id, r); return LOCAL_DONE; }
        return lj->kind = LOCAL_ONE;
    }
    lj->x = x;
    return lj->kind = LOCAL_MANY;
}

void local_job_free(struct local_job *lj)
{
    if (lj->kind == LOCAL_MANY) alias_expansion_free(&lj->x);
    lj->kind = LOCAL_DONE;
}

/* An alias of several targets, or of any outside the local domains, goes
 * on as one new message to all of them (as qmail's forwards do): each is
 * then a recipient of its own, retried and reported alone, and this job
 * either queued that message or changed nothing. Delivered here, a
 * temporary failure of one member (a full mailbox) deferred the job, and
 * each retry gave every other member the message again. A member known to
 * have no mailbox is left out and fails the job for good, named
 * ("5.1.1 ghost (expanded from team@...): no such user"); the others still
 * get the message. A member that is an alias's own name ("bob: bob,
 * bob@elsewhere": keep a copy) would be that alias again in the new
 * message, and a loop: it is delivered here, before the new message is
 * queued, so that its temporary failure defers the job with nothing else
 * done. */
static void expand(const struct local_tables *t, const struct dp_job *j, const struct alias_expansion *x,
                   int msgfd, struct dp_result *r, int *have)
{
    const char *at = strrchr(j->rcpt, '@');
    const char *domain = at ? at + 1 : t->cfg.hostname;
    size_t n = 0, cap = x->nlocal + x->nremote;
    const char **rcpt = calloc(cap ? cap : 1, sizeof *rcpt);
    char (*addr)[ENV_ADDR_MAX + 1] = calloc(x->nlocal ? x->nlocal : 1, sizeof *addr);
    struct dp_result one;
    if (!rcpt || !addr) {
        result_set(r, DP_TEMPORARY, "4.3.0 out of memory");
        *have = 1;
        goto out;
    }
    for (size_t i = 0; i < x->nlocal; i++) {
        struct mailbox mb;
        char err[512];
        if (aliases_find(&t->aliases, x->local[i])) {   /* the alias's own name */
            memset(&one, 0, sizeof one);
            deliver_mailbox(t, j, x->local[i], msgfd, &one);
            if (one.status != DP_SUCCESS) name_member(&one, x->local[i], j->rcpt);
            combine(r, have, &one, j->id);
            if (one.status == DP_TEMPORARY) goto out;
            continue;
        }
        if (t->mailboxes_ok && !mailboxes_find(&t->mailboxes, x->local[i], &mb, err, sizeof err)
            && errno == ENOENT) {
            memset(&one, 0, sizeof one);
            result_set(&one, DP_PERMANENT, "5.1.1 no such user");
            name_member(&one, x->local[i], j->rcpt);
            combine(r, have, &one, j->id);
            continue;
        }
        /* anything else (found, or the table unreadable) is the new
         * message's recipient's own business */
        int w = snprintf(addr[i], sizeof addr[i], "%s@%s", x->local[i], domain);
        if (w < 0 || (size_t)w >= sizeof addr[i]) {
            memset(&one, 0, sizeof one);
            result_set(&one, DP_PERMANENT, "5.1.3 address too long");
            name_member(&one, x->local[i], j->rcpt);
            combine(r, have, &one, j->id);
            continue;
        }
        rcpt[n++] = addr[i];
    }
    for (size_t i = 0; i < x->nremote; i++) rcpt[n++] = x->remote[i];
    if (n) {
        struct fwd_ctx f = { &t->cfg, j, rcpt, n, msgfd };
        memset(&one, 0, sizeof one);
        in_child(forward_child, &f, &one);
        combine(r, have, &one, j->id);     /* not queued: temporary wins, a retry is due */
    }
out:
    free(rcpt);
    free(addr);
}

void local_run(const struct local_tables *t, const struct dp_job *j, const struct local_job *lj,
               int msgfd, struct dp_result *r)
{
    const struct config *c = &t->cfg;
    int have = 0;
    struct dp_result one;
    r->job = j->job;
    if (lj->kind == LOCAL_ONE) {
        memset(&one, 0, sizeof one);
        mbox_in_place(c, j, &lj->mb, msgfd, &one);
        combine(r, &have, &one, j->id);
    }
    if (lj->kind == LOCAL_MANY) expand(t, j, &lj->x, msgfd, r, &have);
    r->job = j->job;
    if (!have) result_set(r, DP_PERMANENT, "5.1.1 no such user");
}
