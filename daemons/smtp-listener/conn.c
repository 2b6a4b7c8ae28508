/* conn.c - one connection: the monitor (root, no chroot) forks the session,
 * which drops to the smtp user chrooted in ROOT/empty before it reads a
 * byte; the monitor then only serves the session's fixed-size requests. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "err.h"
#include "io.h"
#include "listener.h"
#include "log.h"
#include "smtp_monitor.h"
#include "smtp_session.h"

static struct smtp_session session;   /* large buffers: not on the stack */

static _Noreturn void session_main(const struct listener *l, int fd, int chan,
                                   const struct sockaddr *peer, int submission)
{
    char dir[CONFIG_NAME_MAX + 16];
    snprintf(dir, sizeof dir, "%s/empty", l->root);
    if (!privdrop(dir, &l->smtp_user)) {
        log_error(NULL, "event=privdrop dir=%s error=%s", dir, strerror(errno));
        char line[300];
        int n = snprintf(line, sizeof line, "421 4.3.0 %s Error: service unavailable\r\n", l->cf.hostname);
        if (n > 0) fd_write_all(fd, line, (size_t)n, 1000);
        _exit(EXIT_TEMP);
    }
    struct smtp_mon_client mc = { chan, -1 };
    struct smtp_injector inj;
    mc.timeout_ms = l->cf.session_timeout > INT_MAX / 1000 ? INT_MAX : (int)(l->cf.session_timeout * 1000);
    smtp_mon_injector(&inj, &mc);
    smtp_session_init(&session, &l->cf, &l->map, &inj, fd, peer, submission);
    smtp_session_run(&session);
    smtp_session_free(&session);
    _exit(EXIT_OK);
}

void conn_serve(const struct listener *l, int fd, const struct sockaddr *peer, int submission)
{
    int sp[2];
    char inject[CONFIG_NAME_MAX + 32];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) < 0) {
        log_error(NULL, "event=socketpair error=%s", strerror(errno));
        _exit(EXIT_TEMP);
    }
    pid_t pid = fork();
    if (pid < 0) { log_error(NULL, "event=fork error=%s", strerror(errno)); _exit(EXIT_TEMP); }
    if (pid == 0) {
        close(sp[0]);
        session_main(l, fd, sp[1], peer, submission);
    }
    close(fd);       /* the monitor never touches the client connection */
    close(sp[1]);
    snprintf(inject, sizeof inject, "%s/bin/queue-inject", l->root);
    smtp_monitor_serve(sp[0], l->root, inject, &l->smtp_user);
    close(sp[0]);
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    _exit(EXIT_OK);
}
