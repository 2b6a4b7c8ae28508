/* tls_spawn.c - start tls-proxy on a client socket; parse its first line. */
#include "tls_spawn.h"
#include "err.h"
#include "fdpass.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static int server_fd = -1;   /* tls_proxy_server_use() */
static char timeout_arg[24]; /* tls_proxy_set_timeout(): "" for none */

void tls_proxy_set_timeout(unsigned long seconds)
{
    if (seconds) snprintf(timeout_arg, sizeof timeout_arg, "%lu", seconds);
    else timeout_arg[0] = 0;
}

void tls_proxy_server_use(int zfd) { server_fd = zfd; }

void tls_proxy_server_forget(void)
{
    if (server_fd >= 0) close(server_fd);
    server_fd = -1;
}

static int id_ok(const char *id, size_t n)
{
    if (n > TLS_ID_MAX) return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)id[i] <= ' ' || (unsigned char)id[i] > '~') return 0;
    return 1;
}

int tls_proxy_request_send(int zfd, const char *id, int client_fd, int plain_fd)
{
    size_t n = id ? strlen(id) : 0, sent;
    if (!id_ok(id, n)) { errno = EPROTO; return 0; }
    char tag = 'T';
    struct iovec iov[2] = { { .iov_base = &tag, .iov_len = 1 }, { .iov_base = (void *)id, .iov_len = n } };
    int fds[2] = { client_fd, plain_fd };
    if (!fdpass_send(zfd, iov, n ? 2 : 1, fds, 2, &sent)) return 0;
    if (sent == n + 1) return 1;
    errno = EPROTO;
    return 0;
}

int tls_proxy_request_recv(int zfd, char *id, size_t idcap, int *client_fd, int *plain_fd)
{
    char rec[TLS_ID_MAX + 2];
    struct fdpass_in in;
    for (;;) {
        if (fdpass_recv(zfd, rec, sizeof rec, &in)) break;
        if (errno != EINTR) return 0;
    }
    if (in.len == 0 && in.nfd == 0) { errno = EPIPE; return 0; }
    if (in.foreign || in.too_many || in.truncated || in.len < 1 || rec[0] != 'T' || in.nfd != 2 ||
        in.len - 1 >= idcap || !id_ok(rec + 1, in.len - 1)) {
        fdpass_close(&in);
        errno = EPROTO;
        return 0;
    }
    memcpy(id, rec + 1, in.len - 1);
    id[in.len - 1] = 0;
    *client_fd = in.fd[0];
    *plain_fd = in.fd[1];
    return 1;
}

/* fork and exec proxy with argv and a fresh socket pair of type: in the
 * child fd 0 is client_fd (made blocking: tls-proxy polls itself) and fd 1
 * the pair's other end, or, with client_fd < 0, fd 0 is the pair's other
 * end and fd 1 /dev/null. 1 with *mine (our end, close-on-exec) and *pidp,
 * or 0 with errno. */
static int exec_on_pair(const char *proxy, char *const argv[], int type, int client_fd, int *mine,
                        pid_t *pidp)
{
    int sp[2];
    if (socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, sp) < 0) return 0;
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(sp[0]); close(sp[1]);
        errno = e;
        return 0;
    }
    if (pid == 0) {
        char *const envp[] = { (char *)"PATH=/usr/bin:/bin", NULL };
        signal(SIGPIPE, SIG_DFL);
        /* both above 2 first, so that neither dup2 undoes the other */
        int n = client_fd >= 0 ? client_fd : open("/dev/null", O_RDWR | O_CLOEXEC);
        int pair = fcntl(sp[1], F_DUPFD_CLOEXEC, 3), other = n >= 0 ? fcntl(n, F_DUPFD_CLOEXEC, 3) : -1;
        if (pair < 0 || other < 0 || dup2(client_fd >= 0 ? other : pair, 0) < 0 ||
            dup2(client_fd >= 0 ? pair : other, 1) < 0)
            _exit(111);
        int fl = fcntl(0, F_GETFL);
        if (client_fd >= 0 && fl >= 0) fcntl(0, F_SETFL, fl & ~O_NONBLOCK);
        closefrom(3);
        execve(proxy, argv, envp);
        _exit(111);
    }
    close(sp[1]);
    *mine = sp[0];
    *pidp = pid;
    return 1;
}

int tls_proxy_server_start(const char *proxy, const char *root, int *zfd, pid_t *pidp)
{
    /* named as its role in ps(1); its children are called tls-proxy */
    char *argv[6];
    int k = 0;
    argv[k++] = (char *)"tls-server";
    argv[k++] = (char *)"-z";
    if (timeout_arg[0]) { argv[k++] = (char *)"-t"; argv[k++] = timeout_arg; }
    argv[k++] = (char *)root;
    argv[k] = NULL;
    return exec_on_pair(proxy, argv, SOCK_SEQPACKET, -1, zfd, pidp);
}

void tls_server_slot_init(struct tls_server_slot *s)
{
    s->pid = 0;
    s->fd = -1;
    s->started = s->next_try = 0;
    s->unusable = 0;
}

void tls_server_slot_keep(struct tls_server_slot *s, const char *proxy, const char *root)
{
    time_t now = time(NULL);
    if (s->pid > 0 || now < s->next_try) return;
    if (access(proxy, X_OK) < 0) { s->next_try = now + 10; return; }
    if (!tls_proxy_server_start(proxy, root, &s->fd, &s->pid)) {
        log_error(NULL, "event=tls_server error=\"%s\" (each TLS connection execs tls-proxy)", strerror(errno));
        s->next_try = now + 10;
        return;
    }
    s->started = now;
    tls_proxy_server_use(s->fd);
}

/* the server is gone (or going): connections exec tls-proxy until the
 * next one starts; s->fd is the one tls_proxy_server_use() was given */
static void slot_down(struct tls_server_slot *s)
{
    tls_proxy_server_forget();
    s->fd = -1;
    s->pid = 0;
}

int tls_server_slot_reaped(struct tls_server_slot *s, pid_t pid, int st)
{
    if (pid != s->pid || pid <= 0) return 0;
    time_t now = time(NULL);
    int code = WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
    log_warn(NULL, "event=tls_server_ended status=%d", code);
    slot_down(s);
    s->next_try = now - s->started >= 1 ? now : now + 10;
    if (code == EXIT_PERM && !s->unusable) {
        s->unusable = 1;
        log_error(NULL, "event=tls_unusable starttls=off hint=\"fix the key or certificate, then reload\"");
    }
    return 1;
}

int tls_server_slot_unusable(struct tls_server_slot *s)
{
    if (s->unusable && s->pid > 0 && time(NULL) - s->started >= 2) {
        s->unusable = 0;       /* a server has lasted: its files load again */
        log_info(NULL, "event=tls_usable starttls=on");
    }
    return s->unusable;
}

void tls_server_slot_restart(struct tls_server_slot *s, const char *proxy, const char *root)
{
    if (s->pid > 0) {
        kill(s->pid, SIGTERM);
        slot_down(s);     /* reaped later as any child */
    }
    s->next_try = 0;
    tls_server_slot_keep(s, proxy, root);
}

/* hand the connection to the server: 1, or 0 (gone: forgotten) */
static int spawn_by_server(const char *id, int client_fd, int *plain_fd, pid_t *pidp)
{
    int sp[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0) return 0;
    if (!tls_proxy_request_send(server_fd, id, client_fd, sp[1])) {
        close(sp[0]); close(sp[1]);
        tls_proxy_server_forget();
        return 0;
    }
    close(sp[1]);
    *plain_fd = sp[0];
    if (pidp) *pidp = 0;
    return 1;
}

int tls_proxy_spawn(const char *proxy, const char *root, const char *id, int client_fd,
                    int *plain_fd, pid_t *pidp)
{
    if (server_fd >= 0 && spawn_by_server(id, client_fd, plain_fd, pidp)) return 1;
    char *argv[7];
    int k = 0;
    pid_t pid;
    argv[k++] = (char *)"tls-proxy";
    if (id && *id) { argv[k++] = (char *)"-i"; argv[k++] = (char *)id; }
    if (timeout_arg[0]) { argv[k++] = (char *)"-t"; argv[k++] = timeout_arg; }
    argv[k++] = (char *)root;
    argv[k] = NULL;
    if (!exec_on_pair(proxy, argv, SOCK_STREAM, client_fd, plain_fd, &pid)) return 0;
    if (pidp) *pidp = pid;
    return 1;
}

int tls_proxy_line(const char *line, size_t len, char *version, size_t vlen,
                   char *cipher, size_t clen)
{
    size_t i = 4, v0, v1, c0, c1;
    if (len < 4 || memcmp(line, "TLS ", 4)) return 0;
    for (size_t k = 0; k < len; k++)
        if ((unsigned char)line[k] < 0x20 || (unsigned char)line[k] > 0x7e) return 0;
    v0 = i;
    while (i < len && line[i] != ' ') i++;
    v1 = i;
    if (i < len) i++;
    c0 = i;
    while (i < len && line[i] != ' ') i++;
    c1 = i;
    if (v1 == v0 || c1 == c0 || v1 - v0 >= vlen || c1 - c0 >= clen) return 0;
    memcpy(version, line + v0, v1 - v0);
    version[v1 - v0] = 0;
    memcpy(cipher, line + c0, c1 - c0);
    cipher[c1 - c0] = 0;
    return 1;
}

int fd_send(int sock, char tag, int fd)
{
    struct iovec iov = { .iov_base = &tag, .iov_len = 1 };
    size_t sent;
    if (!fdpass_send(sock, &iov, 1, &fd, fd >= 0 ? 1 : 0, &sent)) return 0;
    if (sent == 1) return 1;
    errno = EPROTO;
    return 0;
}

int fd_recv(int sock, char *tag, int *fd, int timeout_ms)
{
    char rec[16];
    struct fdpass_in in;
    *fd = -1;
    for (;;) {
        if (!fdpass_wait(sock, timeout_ms)) return 0;
        if (fdpass_recv(sock, rec, sizeof rec, &in)) break;
        if (errno != EINTR) return 0;
    }
    if (in.len == 0) { fdpass_close(&in); errno = EPIPE; return 0; }
    if (in.foreign || in.too_many || in.truncated || in.len != 1 || in.nfd > 1) {
        fdpass_close(&in);
        errno = EPROTO;
        return 0;
    }
    *tag = rec[0];
    if (in.nfd) *fd = in.fd[0];
    return 1;
}
