/* inject_client.c - run queue-inject (see inject_client.h). */
#include "inject_client.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "buf.h"
#include "privdrop.h"
#include "io.h"

static int fill_memfd(int fd, const struct inject_req *r)
{
    if (r->prefixlen && !fd_write_all(fd, r->prefix, r->prefixlen, -1)) return 0;
    if (r->msgfd < 0) return !r->msglen || fd_write_all(fd, r->msg, r->msglen, -1);
    char b[65536];
    off_t off = 0;
    for (;;) {
        ssize_t n = pread(r->msgfd, b, sizeof b, off);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return 0;
        if (!n) break;
        if (!fd_write_all(fd, b, (size_t)n, -1)) return 0;
        off += n;
    }
    return 1;
}

static int envelope_records(struct buf *b, const struct inject_req *r)
{
    if (!buf_appendc(b, 'F') || !buf_append(b, r->sender, strlen(r->sender) + 1)) return 0;
    if (r->client && r->client[0] &&
        (!buf_appendc(b, 'C') || !buf_append(b, r->client, strlen(r->client) + 1)))
        return 0;
    if (r->body8bit && !buf_append(b, "B8BITMIME", 10)) return 0;
    if (r->smtputf8 && !buf_append(b, "U", 2)) return 0;
    if (r->envid && r->envid[0] && (!buf_appendc(b, 'E') || !buf_append(b, r->envid, strlen(r->envid) + 1)))
        return 0;
    if (r->ret && (!strcmp(r->ret, "FULL") || !strcmp(r->ret, "HDRS"))
        && (!buf_appendc(b, 'N') || !buf_append(b, r->ret, 5)))
        return 0;
    const char *notify = r->notify ? r->notify : "", *orcpt = r->orcpt ? r->orcpt : "";
    for (size_t i = 0; i < r->nrcpt; i++)
        if (!buf_appendf(b, "T%s\t%s\t%s", r->rcpt[i], notify, orcpt) || !buf_appendc(b, 0)) return 0;
    return buf_appendc(b, 0);
}

int inject_run(const char *root, const struct inject_req *r, char *id, int *status)
{
    char path[4096];
    struct buf env = BUF_ZERO;
    int mfd = -1, sp[2] = { -1, -1 }, e = EIO;
    pid_t pid = -1;
    *status = -1;
    id[0] = 0;
    if (snprintf(path, sizeof path, "%s/bin/queue-inject", root) >= (int)sizeof path) { errno = ENAMETOOLONG; return 0; }
    if (!r->nrcpt || !envelope_records(&env, r)) { e = errno ? errno : EINVAL; goto out; }
    if ((mfd = memfd_create("postern-inject", MFD_CLOEXEC)) < 0) { e = errno; goto out; }
    if (!fill_memfd(mfd, r) || lseek(mfd, 0, SEEK_SET) < 0) { e = errno; goto out; }
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0) { e = errno; goto out; }
    pid = fork();
    if (pid < 0) { e = errno; goto out; }
    if (!pid) {
        /* move both above 2 first: either may already sit on fd 0 or 1
         * (dup2 onto itself would keep close-on-exec) */
        int m = fcntl(mfd, F_DUPFD_CLOEXEC, 3), s = fcntl(sp[1], F_DUPFD_CLOEXEC, 3);
        if (m < 0 || s < 0 || dup2(m, 0) < 0 || dup2(s, 1) < 0) _exit(111);
        signal(SIGPIPE, SIG_DFL);
        execl(path, "queue-inject", (char *)NULL);
        _exit(111);
    }
    close(sp[1]);
    sp[1] = -1;
    close(mfd);
    mfd = -1;
    if (!fd_write_all(sp[0], env.s, env.len, INJECT_TIMEOUT_MS)) e = errno;
    shutdown(sp[0], SHUT_WR);
    /* the id line, then EOF when queue-inject exits */
    size_t got = 0;
    char line[64];
    for (;;) {
        struct pollfd p = { sp[0], POLLIN, 0 };
        int pr = poll(&p, 1, INJECT_TIMEOUT_MS);
        if (pr < 0 && errno == EINTR) continue;
        if (pr <= 0) { kill(pid, SIGKILL); e = ETIMEDOUT; break; }
        ssize_t n = read(sp[0], line + got, sizeof line - 1 - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        got += (size_t)n;
        if (got >= sizeof line - 1) break;
    }
    line[got] = 0;
    int ws;
    while (waitpid(pid, &ws, 0) < 0) if (errno != EINTR) { ws = -1; break; }
    pid = -1;
    if (ws != -1 && WIFEXITED(ws)) *status = WEXITSTATUS(ws);
    if (*status == 0) {
        size_t n = strcspn(line, "\n");
        if (n > 16) n = 16;
        memcpy(id, line, n);
        id[n] = 0;
        buf_free(&env);
        close(sp[0]);
        return 1;
    }
    e = *status == 53 ? ENOSPC : EIO;
out:
    buf_free(&env);
    if (mfd >= 0) close(mfd);
    if (sp[0] >= 0) close(sp[0]);
    if (sp[1] >= 0) close(sp[1]);
    if (pid > 0) { kill(pid, SIGKILL); waitpid(pid, NULL, 0); }
    errno = e;
    return 0;
}

/* vfork, not fork: this runs once per message, and copying the monitor's
 * page tables only for exec to throw them away (then COW faults in the
 * monitor) cost about 0.18 ms of CPU a message here (spawn + wait 0.26-0.31
 * ms with fork, 0.09-0.11 ms with vfork; bench/README.md). Safe
 * here: the child only makes system calls (no malloc, no stdio) before
 * execve or _exit; the callers are single-threaded and have no signal
 * handlers (conn_serve's parent reset them; sendmail only ignores SIGPIPE),
 * and vfork shares neither the fd table, the handlers nor the cwd, so dup2,
 * signal, chdir and the uid change in privdrop touch the child alone. */
pid_t inject_spawn(int msg_fd, int env_fd, const char *path, const struct privuser *u)
{
    pid_t pid = vfork();
    if (pid != 0) return pid;
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

int inject_wait(pid_t pid)
{
    int st;
    if (pid < 0) return -1;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}
