/* smtp_monitor.c - one connection's privileged helper and its channel. */
#include "smtp_monitor.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "queue_path.h"

int smtp_mon_send(int fd, const struct smtp_mon_msg *m, const int *fds, int nfd)
{
    struct iovec iov = { .iov_base = (void *)m, .iov_len = sizeof *m };
    union { char buf[CMSG_SPACE(2 * sizeof(int))]; struct cmsghdr align; } u;
    struct msghdr mh;
    memset(&mh, 0, sizeof mh);
    memset(&u, 0, sizeof u);
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    if (nfd < 0 || nfd > 2) { errno = EINVAL; return 0; }
    if (nfd) {
        mh.msg_control = u.buf;
        mh.msg_controllen = CMSG_SPACE((size_t)nfd * sizeof(int));
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN((size_t)nfd * sizeof(int));
        memcpy(CMSG_DATA(c), fds, (size_t)nfd * sizeof(int));
    }
    for (;;) {
        ssize_t w = sendmsg(fd, &mh, MSG_NOSIGNAL);
        if (w == (ssize_t)sizeof *m) return 1;
        if (w < 0 && errno == EINTR) continue;
        if (w >= 0) errno = EPROTO;
        return 0;
    }
}

int smtp_mon_recv(int fd, struct smtp_mon_msg *m, int *fds, int *nfd, int timeout_ms)
{
    union { char buf[CMSG_SPACE(4 * sizeof(int))]; struct cmsghdr align; } u;
    struct iovec iov = { .iov_base = m, .iov_len = sizeof *m };
    struct msghdr mh;
    ssize_t r;
    *nfd = 0;
    for (;;) {
        struct pollfd p = { .fd = fd, .events = POLLIN, .revents = 0 };
        int k = poll(&p, 1, timeout_ms);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) return 0;
        if (k == 0) { errno = ETIMEDOUT; return 0; }
        memset(&mh, 0, sizeof mh);
        mh.msg_iov = &iov;
        mh.msg_iovlen = 1;
        mh.msg_control = u.buf;
        mh.msg_controllen = sizeof u.buf;
        r = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
        if (r < 0 && errno == EINTR) continue;
        break;
    }
    if (r < 0) return 0;
    if (r == 0) { errno = EPIPE; return 0; }
    int got[8], n = 0, bad = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) { bad = 1; continue; }
        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k; i++) {
            int f;
            memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof f);
            if (n < 8) got[n++] = f; else { close(f); bad = 1; }
        }
    }
    if (r != (ssize_t)sizeof *m || (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || n > 2) bad = 1;
    if (bad) {
        for (int i = 0; i < n; i++) close(got[i]);
        errno = EPROTO;
        return 0;
    }
    for (int i = 0; i < n; i++) fds[i] = got[i];
    *nfd = n;
    return 1;
}

/* ---- the session's side ---- */

static int await_status(struct smtp_mon_client *c, int *value)
{
    struct smtp_mon_msg m;
    int fds[2], n;
    if (!smtp_mon_recv(c->fd, &m, fds, &n, c->timeout_ms)) return 0;
    if (n || m.type != SMTP_MON_STATUS) {
        for (int i = 0; i < n; i++) close(fds[i]);
        errno = EPROTO;
        return 0;
    }
    *value = m.value;
    return 1;
}

static int mon_start(void *ctx, int msg_fd, int env_fd)
{
    struct smtp_mon_client *c = ctx;
    struct smtp_mon_msg m = { SMTP_MON_INJECT, 0 };
    int fds[2] = { msg_fd, env_fd };
    return smtp_mon_send(c->fd, &m, fds, 2);
}

static int mon_finish(void *ctx, int *status)
{
    *status = -1;
    return await_status(ctx, status);
}

static int mon_trigger(void *ctx)
{
    struct smtp_mon_client *c = ctx;
    struct smtp_mon_msg m = { SMTP_MON_TRIGGER, 0 };
    int v;
    return smtp_mon_send(c->fd, &m, NULL, 0) && await_status(c, &v) && v == 1;
}

void smtp_mon_injector(struct smtp_injector *inj, struct smtp_mon_client *c)
{
    inj->ctx = c;
    inj->start = mon_start;
    inj->finish = mon_finish;
    inj->trigger = mon_trigger;
}

/* ---- the monitor ---- */

static int run_inject(int msg_fd, int env_fd, const char *path, const struct privuser *u)
{
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        char *const argv[] = { (char *)"queue-inject", NULL };
        char *const envp[] = { (char *)"PATH=/usr/bin:/bin", NULL };
        signal(SIGPIPE, SIG_DFL);
        /* move the fds out of the way of 0 and 1 first */
        int m = fcntl(msg_fd, F_DUPFD_CLOEXEC, 3), e = fcntl(env_fd, F_DUPFD_CLOEXEC, 3);
        if (m < 0 || e < 0 || dup2(m, 0) < 0 || dup2(e, 1) < 0) _exit(111);
        closefrom(3);
        if (u && !privdrop(NULL, u)) _exit(111);
        execve(path, argv, envp);
        _exit(111);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int smtp_monitor_serve(int fd, const char *root, const char *inject_path, const struct privuser *u)
{
    for (;;) {
        struct smtp_mon_msg m, r = { SMTP_MON_STATUS, -1 };
        int fds[2], n;
        if (!smtp_mon_recv(fd, &m, fds, &n, -1)) return errno == EPIPE;
        if (m.type == SMTP_MON_INJECT && n == 2) {
            r.value = run_inject(fds[0], fds[1], inject_path, u);
            close(fds[0]);
            close(fds[1]);
        } else if (m.type == SMTP_MON_TRIGGER && n == 0) {
            r.value = queue_trigger(root) ? 1 : 0;
        } else {
            for (int i = 0; i < n; i++) close(fds[i]);
            log_warn(NULL, "event=monitor_protocol type=%u nfd=%d", m.type, n);
            return 0;
        }
        if (!smtp_mon_send(fd, &r, NULL, 0)) return errno == EPIPE;
    }
}
