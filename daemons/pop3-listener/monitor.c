/* monitor.c - the per-connection monitor (root, no chroot): forks the
 * pre-login session, takes its credentials, asks auth-checker, and on
 * success forks the mailbox process with the connection. It never reads a
 * byte from the client. */
#include "pop3d.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <sodium.h>

#include "err.h"
#include "log.h"
#include "sandbox.h"
#include "pop3_session.h"
#include "privdrop.h"
#include "tls_spawn.h"

#define AUTH_WAIT_MS 60000   /* auth-checker's throttling delays stay well below */

static enum auth_result check(const struct config *c, const struct pop3_mon_request *q,
                              const char *addr, struct auth_reply *r, const char *sid)
{
    struct auth_request ar;
    int fd = authproto_connect(c->root);
    if (fd < 0) {
        log_error(sid, "event=auth error=\"auth-checker unreachable: %s\"", strerror(errno));
        return AUTH_TEMP;
    }
    int ok = authproto_request_set(&ar, AUTH_SVC_POP3, q->user, q->userlen, q->pass, q->passlen, addr) &&
             authproto_ask(fd, &ar, r, AUTH_WAIT_MS);
    int e = errno;
    authproto_request_wipe(&ar);
    close(fd);
    if (!ok) {
        if (e == EINVAL) return AUTH_BAD;   /* a NUL byte in the name or password */
        log_error(sid, "event=auth error=\"%s\"", strerror(e));
        return AUTH_TEMP;
    }
    return r->result;
}

static pid_t start_mailbox(const struct config *c, int fd, int sock, const struct auth_reply *r,
                           const struct pop3_mon_request *q, const char *sid, int tls, int stls)
{
    pid_t pid = fork();
    if (pid != 0) return pid;
    close(sock);                 /* the pre-login session's pair is not the user's */
    tls_proxy_server_forget();
    privdrop_name("pop3-mailbox");
    _exit(mailbox_run(c, fd, r, q->left, q->leftlen, sid, tls, stls));
}

/* STLS: tls-proxy on the client socket; *fd becomes its plaintext end (for
 * the mailbox process later), a copy goes to the session, and *tls is 1 */
static int start_tls(const struct config *c, int *fd, const char *sid, int sock, int *tls)
{
    char proxy[CONFIG_NAME_MAX + 32];
    int plain;
    snprintf(proxy, sizeof proxy, "%s/bin/tls-proxy", c->root);
    if (!tls_proxy_spawn(proxy, c->root, sid, *fd, &plain, NULL)) {
        log_error(sid, "event=tls_spawn error=\"%s\"", strerror(errno));
        return fd_send(sock, 't', -1);
    }
    close(*fd);
    *fd = plain;
    *tls = 1;
    return fd_send(sock, 's', plain);
}

int monitor_run(const struct config *c, int fd, const char *addr, const char *sid, int implicit, int stls)
{
    static char rec[POP3_MON_REC_MAX + 1];
    static struct pop3_mon_request q;
    char path[CONFIG_NAME_MAX + 16], proxy[CONFIG_NAME_MAX + 32];
    struct privuser pu;
    int sp[2];
    if (!privuser_lookup(c->user_pop3, &pu)) { log_error(sid, "error=\"no system user %s\"", c->user_pop3); return EXIT_PERM; }
    snprintf(path, sizeof path, "%s/empty", c->root);
    if (implicit) {
        /* pop3s (RFC 8314): the session and the mailbox only see plaintext */
        int plain;
        snprintf(proxy, sizeof proxy, "%s/bin/tls-proxy", c->root);
        if (!tls_proxy_spawn(proxy, c->root, sid, fd, &plain, NULL)) {
            log_error(sid, "event=tls_spawn error=\"%s\"", strerror(errno));
            return EXIT_TEMP;
        }
        close(fd);
        fd = plain;
    }
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) < 0) return EXIT_TEMP;
    pid_t session = fork();
    if (session < 0) return EXIT_TEMP;
    if (session == 0) {
        close(sp[0]);
        tls_proxy_server_forget();   /* STLS is the monitor's to start */
        privdrop_name("pop3-session");
        if (!privdrop(path, &pu)) { log_error(sid, "event=privdrop error=\"%s\"", strerror(errno)); _exit(EXIT_TEMP); }
        if (!sandbox_enter(SANDBOX_NO_FILES))
            log_error(sid, "event=sandbox error=\"%s\"", strerror(errno));
        _exit(prelogin_run(c, fd, sp[1], sid, addr, implicit, stls));
    }
    close(sp[1]);
    pid_t mailbox = -1;
    int tls = implicit;
    for (;;) {
        ssize_t n;
        do n = recv(sp[0], rec, sizeof rec, 0); while (n < 0 && errno == EINTR);
        if (n <= 0) break;                        /* the session is gone */
        if (n == 1 && rec[0] == 'S') {            /* STLS */
            if (!start_tls(c, &fd, sid, sp[0], &tls)) break;
            continue;
        }
        struct auth_reply r;
        enum auth_result res = AUTH_BAD;
        if (pop3_mon_request_parse(rec, (size_t)n, &q)) res = check(c, &q, addr, &r, sid);
        else log_warn(sid, "event=monitor error=\"malformed request\"");
        sodium_memzero(rec, sizeof rec);
        sodium_memzero(q.pass, sizeof q.pass);
        char a = res == AUTH_OK ? 'o' : res == AUTH_BAD ? 'b' : 't';
        if (res == AUTH_OK && (mailbox = start_mailbox(c, fd, sp[0], &r, &q, sid, tls, stls)) < 0) {
            log_error(sid, "event=fork error=\"%s\"", strerror(errno));
            a = 't';
        }
        if (res != AUTH_OK) {
            char u[100];
            log_info(sid, "event=login user=%s result=%s", log_safe(u, sizeof u, q.user, q.userlen), res == AUTH_BAD ? "bad" : "temp");
        }
        if (send(sp[0], &a, 1, MSG_NOSIGNAL) != 1) break;
        if (a == 'o') break;
    }
    close(sp[0]);
    close(fd);
    while (waitpid(session, 0, 0) < 0 && errno == EINTR) {}
    if (mailbox > 0) while (waitpid(mailbox, 0, 0) < 0 && errno == EINTR) {}
    /* and an exec'd tls-proxy, which ends when the session or mailbox process has */
    while (wait(0) > 0 || errno == EINTR) {}
    return EXIT_OK;
}
