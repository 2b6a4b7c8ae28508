/* local.c - one local delivery job (see local.h). */
#include "local.h"

#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "aliases.h"
#include "buf.h"
#include "inject_client.h"
#include "log.h"
#include "maildir.h"
#include "privdrop.h"

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

struct mbox_ctx {
    const struct config *c;
    const struct dp_job *j;
    const struct mailbox *mb;
    int msgfd;
};

/* ROOT/mail/<name>/Maildir: make ROOT/mail/<name> for the user, as root. */
static void make_home(const struct config *c, const struct mailbox *mb)
{
    char home[PATH_MAX], want[PATH_MAX];
    int n = snprintf(home, sizeof home, "%s/mail/%s", c->root, mb->name);
    if (n < 0 || (size_t)n >= sizeof home) return;
    if (snprintf(want, sizeof want, "%s/Maildir", home) >= (int)sizeof want || strcmp(want, mb->maildir)) return;
    if (mkdir(home, 0700) < 0) return;     /* exists already (or cannot): leave it alone */
    int fd = open(home, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return;
    if (fchown(fd, mb->uid, mb->gid) < 0) log_warn(NULL, "home=%s chown: %s", home, strerror(errno));
    close(fd);
}

static void mbox_child(const void *vctx, struct dp_result *r)
{
    const struct mbox_ctx *x = vctx;
    struct privuser u = { x->mb->uid, x->mb->gid };
    struct buf pre = BUF_ZERO;
    char name[MAILDIR_NAME_MAX + 1];
    if (!privdrop(NULL, &u)) { result_set(r, DP_TEMPORARY, "4.3.0 cannot become the mailbox user: %s", strerror(errno)); return; }
    if (!buf_appendf(&pre, "Return-Path: <%s>\nDelivered-To: %s\n", x->j->sender, x->j->rcpt)) {
        result_set(r, DP_TEMPORARY, "4.3.0 out of memory");
        return;
    }
    if (!maildir_make(x->mb->maildir)) {
        int e = errno;
        if (e == ELOOP) result_set(r, DP_TEMPORARY, "4.2.0 Maildir or a part of it is a symlink: refused");
        else result_set(r, DP_TEMPORARY, "4.2.0 cannot create the Maildir: %s", strerror(e));
        buf_free(&pre);
        return;
    }
    if (x->c->mailbox_quota) {
        unsigned long long used;
        struct stat st;
        if (!maildir_usage(x->mb->maildir, &used) || fstat(x->msgfd, &st) < 0) {
            result_set(r, DP_TEMPORARY, "4.2.0 cannot measure the mailbox: %s", strerror(errno));
            buf_free(&pre);
            return;
        }
        if (used + (unsigned long long)st.st_size + pre.len > x->c->mailbox_quota) {
            result_set(r, DP_TEMPORARY, "4.2.2 mailbox full");
            buf_free(&pre);
            return;
        }
    }
    if (!maildir_deliver(x->mb->maildir, x->c->hostname, pre.s, pre.len, x->msgfd, name, sizeof name)) {
        int e = errno;
        if (e == EDQUOT) result_set(r, DP_TEMPORARY, "4.2.2 mailbox full");
        else if (e == ENOSPC) result_set(r, DP_TEMPORARY, "4.3.1 no space left for the mailbox");
        else if (e == ELOOP) result_set(r, DP_TEMPORARY, "4.2.0 Maildir or a part of it is a symlink: refused");
        else result_set(r, DP_TEMPORARY, "4.2.0 Maildir delivery failed: %s", strerror(e));
        buf_free(&pre);
        return;
    }
    buf_free(&pre);
    result_set(r, DP_SUCCESS, "2.0.0 delivered to maildir as %s", name);
}

/* in_place: this is the job process's last delivery (one mailbox, no
 * forward), so it drops to the user itself instead of forking once more:
 * one fork per delivery, not two */
static void deliver_mailbox(const struct config *c, const struct dp_job *j, const char *name,
                            int msgfd, int in_place, struct dp_result *r)
{
    char path[PATH_MAX], err[512];
    struct mailbox mb;
    snprintf(path, sizeof path, "%s/conf/mailboxes", c->root);
    if (!mailbox_lookup(path, name, &mb, err, sizeof err)) {
        if (errno == ENOENT) { result_set(r, DP_PERMANENT, "5.1.1 no such user"); return; }
        log_error(j->id, "mailboxes: %s", err);
        result_set(r, DP_TEMPORARY, "4.3.0 mailbox table unreadable");
        return;
    }
    if (mb.uid == 0 || mb.gid == 0) { result_set(r, DP_TEMPORARY, "4.3.0 refusing to deliver as root"); return; }
    make_home(c, &mb);
    struct mbox_ctx x = { c, j, &mb, msgfd };
    if (in_place) mbox_child(&x, r);
    else in_child(mbox_child, &x, r);
}

struct fwd_ctx {
    const struct config *c;
    const struct dp_job *j;
    const struct alias_expansion *x;
    int msgfd;
};

static void forward_child(const void *vctx, struct dp_result *r)
{
    const struct fwd_ctx *f = vctx;
    struct privuser u;
    struct buf pre = BUF_ZERO;
    char id[DP_ID_LEN + 1];
    int status;
    const char **rc = calloc(f->x->nremote, sizeof *rc);
    if (!rc || !buf_appendf(&pre, "Delivered-To: %s\n", f->j->rcpt)) {
        result_set(r, DP_TEMPORARY, "4.3.0 out of memory");
        return;
    }
    if (!privuser_lookup(f->c->user_queue, &u) || !privdrop(NULL, &u)) {
        result_set(r, DP_TEMPORARY, "4.3.0 cannot drop privileges to forward: %s", strerror(errno));
        return;
    }
    for (size_t i = 0; i < f->x->nremote; i++) rc[i] = f->x->remote[i];
    struct inject_req q = { f->j->sender, "local-deliverer forward", !strcmp(f->j->body, "8BITMIME"), rc, f->x->nremote,
                            pre.s, pre.len, NULL, 0, f->msgfd };
    if (!inject_run(f->c->root, &q, id, &status)) {
        result_set(r, DP_TEMPORARY, "4.3.0 forwarding failed: queue-inject exit %d", status);
        return;
    }
    result_set(r, DP_SUCCESS, "2.0.0 forwarded as %s", id);
}

/* worst wins: temporary > permanent > success, except that one success
 * among permanent failures counts as delivered (the failures are logged) */
static void combine(struct dp_result *acc, int *have, const struct dp_result *one, const char *id)
{
    if (one->status != DP_SUCCESS) log_warn(id, "target result=%c status=\"%s\"", (char)one->status, one->text);
    if (!*have) { *acc = *one; *have = 1; return; }
    if (acc->status == DP_TEMPORARY) return;
    if (one->status == DP_TEMPORARY || (one->status == DP_SUCCESS && acc->status == DP_PERMANENT))
        *acc = *one;
}

void local_deliver(const struct config *c, const struct dp_job *j, int msgfd, struct dp_result *r)
{
    char name[ALIAS_NAME_MAX + 1], path[PATH_MAX], err[512];
    struct aliases al;
    struct alias_expansion x;
    r->job = j->job;
    int lr = alias_local_name(j->rcpt, is_local_cb, (void *)c, name, sizeof name);
    if (lr <= 0) { result_set(r, DP_PERMANENT, "5.1.1 not a local mailbox address"); return; }
    int loop = maildir_has_delivered_to(msgfd, j->rcpt);
    if (loop < 0) { result_set(r, DP_TEMPORARY, "4.3.0 cannot read the message: %s", strerror(errno)); return; }
    if (loop) { result_set(r, DP_PERMANENT, "5.4.6 mail forwarding loop"); return; }
    aliases_init(&al);
    snprintf(path, sizeof path, "%s/conf/aliases", c->root);
    if (!aliases_load(&al, path, err, sizeof err)) {
        log_error(j->id, "aliases: %s", err);
        result_set(r, DP_TEMPORARY, "4.3.5 aliases file unusable");
        return;
    }
    if (!aliases_expand(&al, name, is_local_cb, (void *)c, &x)) {
        int e = errno;
        aliases_free(&al);
        if (e == ELOOP) result_set(r, DP_PERMANENT, "5.4.6 alias loop");
        else if (e == E2BIG) result_set(r, DP_PERMANENT, "5.3.4 alias expands to too many addresses");
        else result_set(r, DP_TEMPORARY, "4.3.5 alias expansion failed: %s", strerror(e));
        return;
    }
    aliases_free(&al);
    int have = 0;
    struct dp_result one;
    for (size_t i = 0; i < x.nlocal; i++) {
        memset(&one, 0, sizeof one);
        deliver_mailbox(c, j, x.local[i], msgfd, x.nlocal == 1 && !x.nremote, &one);
        combine(r, &have, &one, j->id);
    }
    if (x.nremote) {
        struct fwd_ctx f = { c, j, &x, msgfd };
        memset(&one, 0, sizeof one);
        in_child(forward_child, &f, &one);
        combine(r, &have, &one, j->id);
    }
    alias_expansion_free(&x);
    r->job = j->job;
    if (!have) result_set(r, DP_PERMANENT, "5.1.1 no such user");
}
