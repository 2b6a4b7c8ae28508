/* fdpass.c - datagrams with descriptors attached. */
#include "fdpass.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int fdpass_send(int sock, const struct iovec *iov, size_t niov, const int *fds, size_t nfd,
                size_t *sent)
{
    union { char buf[CMSG_SPACE(FDPASS_MAX * sizeof(int))]; struct cmsghdr align; } u;
    struct msghdr mh;
    if (nfd > FDPASS_MAX) { errno = EINVAL; return 0; }
    memset(&mh, 0, sizeof mh);
    memset(&u, 0, sizeof u);
    mh.msg_iov = (struct iovec *)iov;
    mh.msg_iovlen = niov;
    if (nfd) {
        mh.msg_control = u.buf;
        mh.msg_controllen = CMSG_SPACE(nfd * sizeof(int));
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(nfd * sizeof(int));
        memcpy(CMSG_DATA(c), fds, nfd * sizeof(int));
    }
    for (;;) {
        ssize_t w = sendmsg(sock, &mh, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return 0;
        *sent = (size_t)w;
        return 1;
    }
}

int fdpass_wait(int sock, int timeout_ms)
{
    for (;;) {
        struct pollfd p = { .fd = sock, .events = POLLIN, .revents = 0 };
        int k = poll(&p, 1, timeout_ms);
        if (k > 0) return 1;
        if (k == 0) { errno = ETIMEDOUT; return 0; }
        if (errno != EINTR) return 0;
    }
}

int fdpass_recv(int sock, void *buf, size_t cap, struct fdpass_in *in)
{
    union { char buf[CMSG_SPACE(FDPASS_MAX * sizeof(int))]; struct cmsghdr align; } u;
    struct iovec iov = { .iov_base = buf, .iov_len = cap };
    struct msghdr mh;
    memset(in, 0, sizeof *in);
    memset(&mh, 0, sizeof mh);
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = u.buf;
    mh.msg_controllen = sizeof u.buf;
    ssize_t r = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
    if (r < 0) return 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) { in->foreign = 1; continue; }
        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k; i++) {
            int f;
            memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof f);
            if (in->nfd < FDPASS_MAX) in->fd[in->nfd++] = f;
            else { close(f); in->too_many = 1; }
        }
    }
    in->len = (size_t)r;
    in->truncated = (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0;
    return 1;
}

void fdpass_close(struct fdpass_in *in)
{
    for (size_t i = 0; i < in->nfd; i++) close(in->fd[i]);
    in->nfd = 0;
}
