/* conn.c - one connection: the monitor (root, no chroot) forks the session,
 * which drops to the smtp user chrooted in ROOT/empty before it reads a
 * byte; the monitor then only serves the session's fixed-size requests. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "err.h"
#include "io.h"
#include "listen.h"
#include "listener.h"
#include "log.h"
#include "sandbox.h"
#include "smtp_monitor.h"
#include "smtp_session.h"
#include "tls_spawn.h"

static struct smtp_session session;   /* large buffers: not on the stack */

static _Noreturn void session_main(const struct listener *l, int fd, int chan,
                                   const struct sockaddr *peer, int port,
                                   const struct sockaddr_storage *local, socklen_t llen,
                                   const char *sid)
{
    char dir[CONFIG_NAME_MAX + 16];
    privdrop_name("smtp-session");
    snprintf(dir, sizeof dir, "%s/empty", l->root);
    if (!privdrop(dir, &l->smtp_user)) {
        log_error(NULL, "event=privdrop dir=%s error=\"%s\"", dir, strerror(errno));
        char line[300];
        int n = snprintf(line, sizeof line, "421 4.3.0 %s Error: service unavailable\r\n", l->cf.hostname);
        if (n > 0) fd_write_all(fd, line, (size_t)n, 1000);
        _exit(EXIT_TEMP);
    }
    struct smtp_mon_client mc = { chan, -1 };
    struct smtp_injector inj;
    mc.timeout_ms = l->cf.session_timeout > INT_MAX / 1000 ? INT_MAX : (int)(l->cf.session_timeout * 1000);
    smtp_mon_injector(&inj, &mc);
    if (l->tls_unusable) inj.starttls = NULL;     /* EHLO offers none, STARTTLS gets 454 */
    smtp_session_init(&session, &l->cf, &l->map, &inj, fd, peer, port, sid);
    if (llen) smtp_session_set_local(&session, (const struct sockaddr *)local, llen);
    /* the listener's SIGTERM (blocked since the fork; a pending one is
     * taken at the first wait for a command): 421 at the next command */
    if (!smtp_session_stop_on(&session, SIGTERM))
        log_error(sid, "event=sigaction error=\"%s\"", strerror(errno));
    if (!sandbox_enter(SANDBOX_NO_FILES))
        log_error(sid, "event=sandbox error=\"%s\"", strerror(errno));
    int quit = smtp_session_run(&session);
    smtp_session_free(&session);
    /* after 421 (or 554) with the client's pipelined commands unread, a
     * plain close would send RST and lose the reply */
    if (!quit || fd_unread(session.in.fd)) fd_close_lingering(session.in.fd, 2000, 1 << 20);
    _exit(EXIT_OK);
}

void conn_serve(const struct listener *l, int fd, const struct sockaddr *peer, int port)
{
    int sp[2];
    char inject[CONFIG_NAME_MAX + 32], proxy[CONFIG_NAME_MAX + 32], client[64], sid[32];
    privdrop_name("smtp-monitor");
    /* the session's id, made here so that tls-proxy on 465 logs it too */
    smtp_session_make_id(sid, sizeof sid);
    snprintf(proxy, sizeof proxy, "%s/bin/tls-proxy", l->root);
    /* our address on the TCP connection, before tls-proxy stands in between */
    struct sockaddr_storage local;
    socklen_t llen = sizeof local;
    if (getsockname(fd, (struct sockaddr *)&local, &llen) < 0) llen = 0;
    if (port == SMTP_PORT_SMTPS) {
        /* implicit TLS (RFC 8314): the session only ever sees plaintext */
        int plain;
        if (!tls_proxy_spawn(proxy, l->root, sid, fd, &plain, NULL)) {
            log_error(sid, "event=tls_spawn error=\"%s\"", strerror(errno));
            _exit(EXIT_TEMP);
        }
        close(fd);
        fd = plain;
    }
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) < 0) {
        log_error(NULL, "event=socketpair error=\"%s\"", strerror(errno));
        _exit(EXIT_TEMP);
    }
    pid_t pid = fork();
    if (pid < 0) { log_error(NULL, "event=fork error=\"%s\"", strerror(errno)); _exit(EXIT_TEMP); }
    if (pid == 0) {
        close(sp[0]);
        tls_proxy_server_forget();   /* TLS is its monitor's to start */
        session_main(l, fd, sp[1], peer, port, &local, llen, sid);
    }
    close(fd);       /* the monitor never touches the client connection */
    close(sp[1]);
    /* SIGTERM stays blocked here (and in queue-inject, which must finish a
     * commit it has begun); one sent to the group before the session was
     * forked is pending here only: pass it on */
    sigset_t pending;
    if (sigpending(&pending) == 0 && sigismember(&pending, SIGTERM)) kill(pid, SIGTERM);
    snprintf(inject, sizeof inject, "%s/bin/queue-inject", l->root);
    sockaddr_text(peer, client, sizeof client);
    struct smtp_mon_conf mc = {
        .root = l->root, .inject_path = inject, .inject_user = &l->smtp_user,
        .tls_proxy = proxy, .client = client, .auth_timeout_ms = 30000,
    };
    smtp_monitor_serve(sp[0], &mc);
    close(sp[0]);
    /* the session, and an exec'd tls-proxy (which ends once the session is gone) */
    for (;;) {
        int st;
        if (wait(&st) < 0 && errno != EINTR) break;
    }
    _exit(EXIT_OK);
}
