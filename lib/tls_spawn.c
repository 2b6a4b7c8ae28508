/* tls_spawn.c - start tls-proxy on a client socket; parse its first line. */
#include "tls_spawn.h"
#include "fdpass.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int tls_proxy_spawn(const char *proxy, const char *root, const char *id, int client_fd,
                    int *plain_fd, pid_t *pidp)
{
    int sp[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0) return 0;
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(sp[0]); close(sp[1]);
        errno = e;
        return 0;
    }
    if (pid == 0) {
        char *argv[5];
        int k = 0;
        char *const envp[] = { (char *)"PATH=/usr/bin:/bin", NULL };
        argv[k++] = (char *)"tls-proxy";
        if (id && *id) { argv[k++] = (char *)"-i"; argv[k++] = (char *)id; }
        argv[k++] = (char *)root;
        argv[k] = NULL;
        signal(SIGPIPE, SIG_DFL);
        int c = fcntl(client_fd, F_DUPFD_CLOEXEC, 3), p = fcntl(sp[1], F_DUPFD_CLOEXEC, 3);
        if (c < 0 || p < 0 || dup2(c, 0) < 0 || dup2(p, 1) < 0) _exit(111);
        /* blocking: tls-proxy polls itself */
        int fl = fcntl(0, F_GETFL);
        if (fl >= 0) fcntl(0, F_SETFL, fl & ~O_NONBLOCK);
        closefrom(3);
        execve(proxy, argv, envp);
        _exit(111);
    }
    close(sp[1]);
    *plain_fd = sp[0];
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
