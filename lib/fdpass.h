/* fdpass.h - one datagram with descriptors attached (SCM_RIGHTS) over a
 * SOCK_SEQPACKET socket: the mechanics that the deliverer records
 * (deliver_proto), the SMTP monitor channel (smtp_monitor) and the tag+fd
 * records of tls_spawn share. Each caller keeps its own record rules; this
 * module only sends, waits, receives and reports what arrived. */
#ifndef POSTERN_FDPASS_H
#define POSTERN_FDPASS_H

#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

#define FDPASS_MAX 8     /* descriptors one datagram may bring in */

/* Send iov[0..niov) as one datagram with fds[0..nfd) attached (nfd <=
 * FDPASS_MAX; 0 for none), retrying on EINTR. 1 with *sent = bytes sent
 * (the caller decides what a short send means), or 0 with errno. */
int fdpass_send(int sock, const struct iovec *iov, size_t niov, const int *fds, size_t nfd,
                size_t *sent);

/* Wait until sock is readable: at most timeout_ms (< 0: forever), retrying
 * on EINTR. 1, or 0 with errno ETIMEDOUT or poll's. */
int fdpass_wait(int sock, int timeout_ms);

struct fdpass_in {
    size_t len;              /* data bytes received */
    size_t nfd;              /* descriptors received (close-on-exec), in fd[] */
    int fd[FDPASS_MAX];
    int truncated;           /* data or control was cut short (MSG_TRUNC, MSG_CTRUNC) */
    int too_many;            /* more than FDPASS_MAX descriptors: the rest were closed */
    int foreign;             /* a control message other than SCM_RIGHTS came too */
};

/* One recvmsg into buf[0..cap) (EINTR and EAGAIN are the caller's). 1 with
 * *in filled (len 0 with no descriptor means the peer has closed), or 0 with
 * recvmsg's errno. */
int fdpass_recv(int sock, void *buf, size_t cap, struct fdpass_in *in);
/* close every descriptor in *in (a record refused) */
void fdpass_close(struct fdpass_in *in);

#endif
