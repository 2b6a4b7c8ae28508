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

#include "authproto.h"
#include "inject_client.h"
#include "fdpass.h"
#include "log.h"
#include "queue_path.h"
#include "tls_spawn.h"

int smtp_mon_sendp(int fd, const struct smtp_mon_msg *m, const void *p, size_t plen,
                   const int *fds, int nfd)
{
    struct iovec iov[2] = { { .iov_base = (void *)m, .iov_len = sizeof *m },
                            { .iov_base = (void *)p, .iov_len = plen } };
    size_t sent;
    if (nfd < 0 || nfd > 2 || plen > SMTP_MON_PAYLOAD_MAX || (plen && !p)) { errno = EINVAL; return 0; }
    if (!fdpass_send(fd, iov, plen ? 2 : 1, fds, (size_t)nfd, &sent)) return 0;
    if (sent == sizeof *m + plen) return 1;
    errno = EPROTO;
    return 0;
}

int smtp_mon_send(int fd, const struct smtp_mon_msg *m, const int *fds, int nfd)
{
    return smtp_mon_sendp(fd, m, NULL, 0, fds, nfd);
}

int smtp_mon_recvp(int fd, struct smtp_mon_msg *m, void *p, size_t *plen, int *fds, int *nfd,
                   int timeout_ms)
{
    unsigned char rec[sizeof *m + SMTP_MON_PAYLOAD_MAX];
    struct fdpass_in in;
    *nfd = 0;
    *plen = 0;
    for (;;) {
        if (!fdpass_wait(fd, timeout_ms)) return 0;
        if (fdpass_recv(fd, rec, sizeof rec, &in)) break;
        if (errno != EINTR) return 0;
    }
    if (in.len == 0) { fdpass_close(&in); errno = EPIPE; return 0; }
    if (in.foreign || in.too_many || in.truncated || in.len < sizeof *m || in.nfd > 2) {
        fdpass_close(&in);
        explicit_bzero(rec, sizeof rec);
        errno = EPROTO;
        return 0;
    }
    memcpy(m, rec, sizeof *m);
    *plen = in.len - sizeof *m;
    if (*plen) memcpy(p, rec + sizeof *m, *plen);
    explicit_bzero(rec, sizeof rec);  /* it may have held a password (memset: a dead store) */
    for (size_t i = 0; i < in.nfd; i++) fds[i] = in.fd[i];
    *nfd = (int)in.nfd;
    return 1;
}

int smtp_mon_recv(int fd, struct smtp_mon_msg *m, int *fds, int *nfd, int timeout_ms)
{
    unsigned char p[SMTP_MON_PAYLOAD_MAX];
    size_t plen;
    if (!smtp_mon_recvp(fd, m, p, &plen, fds, nfd, timeout_ms)) return 0;
    if (plen) {
        for (int i = 0; i < *nfd; i++) close(fds[i]);
        *nfd = 0;
        errno = EPROTO;
        return 0;
    }
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

static int mon_starttls(void *ctx, int client_fd, const char *id, int *plain_fd)
{
    struct smtp_mon_client *c = ctx;
    struct smtp_mon_msg m = { SMTP_MON_STARTTLS, 0 };
    int fds[2], n;
    size_t idlen = id ? strnlen(id, 64) : 0;
    if (!smtp_mon_sendp(c->fd, &m, id, idlen, &client_fd, 1)) return 0;
    if (!smtp_mon_recv(c->fd, &m, fds, &n, c->timeout_ms)) return 0;
    if (m.type != SMTP_MON_STATUS || m.value != (n == 1)) {
        for (int i = 0; i < n; i++) close(fds[i]);
        errno = EPROTO;
        return 0;
    }
    if (!n) { errno = EAGAIN; return 0; }
    *plain_fd = fds[0];
    return 1;
}

static int mon_auth(void *ctx, const char *user, size_t ulen, const char *pass, size_t plen,
                    char *name, size_t namelen)
{
    struct smtp_mon_client *c = ctx;
    unsigned char rec[SMTP_MON_PAYLOAD_MAX];
    struct smtp_mon_msg m = { SMTP_MON_AUTH, (int32_t)ulen };
    int fds[2], n, ok;
    size_t rlen;
    if (ulen > AUTH_USER_MAX || plen > AUTH_PASS_MAX || ulen + 1 + plen > sizeof rec)
        return SMTP_AUTH_BAD;
    memcpy(rec, user, ulen);
    rec[ulen] = 0;
    memcpy(rec + ulen + 1, pass, plen);
    ok = smtp_mon_sendp(c->fd, &m, rec, ulen + 1 + plen, NULL, 0);
    explicit_bzero(rec, sizeof rec);
    if (!ok || !smtp_mon_recvp(c->fd, &m, rec, &rlen, fds, &n, c->timeout_ms)) return SMTP_AUTH_TEMP;
    for (int i = 0; i < n; i++) close(fds[i]);
    if (n || m.type != SMTP_MON_STATUS) return SMTP_AUTH_TEMP;
    if (m.value == SMTP_AUTH_OK) {
        if (!rlen || rlen >= namelen || memchr(rec, 0, rlen)) return SMTP_AUTH_TEMP;
        memcpy(name, rec, rlen);
        name[rlen] = 0;
        return SMTP_AUTH_OK;
    }
    return m.value == SMTP_AUTH_BAD ? SMTP_AUTH_BAD : SMTP_AUTH_TEMP;
}

void smtp_mon_injector(struct smtp_injector *inj, struct smtp_mon_client *c)
{
    inj->ctx = c;
    inj->start = mon_start;
    inj->finish = mon_finish;
    inj->trigger = mon_trigger;
    inj->starttls = mon_starttls;
    inj->auth = mon_auth;
}

/* ---- the monitor ---- */

static void reap_children(void)
{
    int st;
    while (waitpid(-1, &st, WNOHANG) > 0) {}
}

/* only hex digits and a few more: the id goes on tls-proxy's command line */
static void safe_id(char *dst, size_t cap, const unsigned char *p, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 1 < cap; i++) {
        unsigned char c = p[i];
        if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '.' || c == '-')
            dst[o++] = (char)c;
    }
    dst[o] = 0;
}

/* One question to auth-checker, on a connection of its own that is closed
 * with the answer: an idle session that once tried AUTH holds none of
 * auth-checker's client places (CLIENTS_MAX), as pop3-listener's monitor
 * holds none after a login. */
static int do_auth(const struct smtp_mon_conf *mc, const unsigned char *p, size_t plen,
                   int32_t ulen, struct auth_reply *rep)
{
    struct auth_request q;
    int res = SMTP_AUTH_TEMP;
    if (ulen < 1 || (size_t)ulen >= plen || p[ulen] != 0) return SMTP_AUTH_BAD;
    if (!authproto_request_set(&q, AUTH_SVC_SMTP, (const char *)p, (size_t)ulen,
                               (const char *)p + ulen + 1, plen - (size_t)ulen - 1,
                               mc->client ? mc->client : "unknown")) {
        authproto_request_wipe(&q);
        return SMTP_AUTH_BAD;
    }
    for (int attempt = 0; attempt < 2; attempt++) {
        int afd = authproto_connect(mc->root);
        if (afd < 0) { log_warn(NULL, "event=auth_connect error=\"%s\"", strerror(errno)); break; }
        int ok = authproto_ask(afd, &q, rep, mc->auth_timeout_ms), e = errno;
        close(afd);
        if (ok) {
            res = rep->result == AUTH_OK ? SMTP_AUTH_OK : rep->result == AUTH_BAD ? SMTP_AUTH_BAD : SMTP_AUTH_TEMP;
            break;
        }
        /* auth-checker restarted under us: one new connection, then give up */
        if (e == ETIMEDOUT) break;
    }
    authproto_request_wipe(&q);
    return res;
}

int smtp_monitor_serve(int fd, const struct smtp_mon_conf *mc)
{
    int ret;
    unsigned char p[SMTP_MON_PAYLOAD_MAX];
    for (;;) {
        struct smtp_mon_msg m, r = { SMTP_MON_STATUS, -1 };
        int fds[2], n, give = -1;
        size_t plen;
        const void *rp = NULL;
        size_t rplen = 0;
        struct auth_reply rep;
        if (!smtp_mon_recvp(fd, &m, p, &plen, fds, &n, -1)) { ret = errno == EPIPE; break; }
        reap_children();
        if (m.type == SMTP_MON_INJECT && n == 2 && !plen) {
            r.value = inject_wait(inject_spawn(fds[0], fds[1], mc->inject_path, mc->inject_user));
            close(fds[0]);
            close(fds[1]);
        } else if (m.type == SMTP_MON_TRIGGER && n == 0 && !plen) {
            r.value = queue_trigger(mc->root) ? 1 : 0;
        } else if (m.type == SMTP_MON_STARTTLS && n == 1 && plen < 64) {
            char id[64];
            pid_t pid;
            safe_id(id, sizeof id, p, plen);
            r.value = 0;
            if (!mc->tls_proxy) log_warn(NULL, "event=starttls error=not_configured");
            else if (!tls_proxy_spawn(mc->tls_proxy, mc->root, id, fds[0], &give, &pid))
                log_error(NULL, "event=tls_spawn error=\"%s\"", strerror(errno));
            else r.value = 1;
            close(fds[0]);
        } else if (m.type == SMTP_MON_AUTH && n == 0 && plen) {
            memset(&rep, 0, sizeof rep);
            r.value = do_auth(mc, p, plen, m.value, &rep);
            explicit_bzero(p, sizeof p);
            if (r.value == SMTP_AUTH_OK) { rp = rep.name; rplen = strnlen(rep.name, sizeof rep.name); }
        } else {
            for (int i = 0; i < n; i++) close(fds[i]);
            log_warn(NULL, "event=monitor_protocol type=%u nfd=%d len=%zu", m.type, n, plen);
            ret = 0;
            break;
        }
        int ok = smtp_mon_sendp(fd, &r, rp, rplen, give >= 0 ? &give : NULL, give >= 0 ? 1 : 0);
        if (give >= 0) close(give);
        if (!ok) { ret = errno == EPIPE; break; }
    }
    explicit_bzero(p, sizeof p);
    return ret;
}
