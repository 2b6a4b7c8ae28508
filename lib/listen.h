/* listen.h - listening sockets for "addr:port" specs: "0.0.0.0:25",
 * "[::]:25", "127.0.0.1:2525", "[::1]:2110", "*:25" (both families).
 * IPv6 sockets are IPV6_V6ONLY so v4 and v6 binds never collide. */
#ifndef POSTERN_LISTEN_H
#define POSTERN_LISTEN_H

#include <stddef.h>
#include <sys/socket.h>
#include <time.h>

#define LISTEN_MAX 16

struct listen_set {
    size_t n;
    int fd[LISTEN_MAX];
};

/* parse a spec into a sockaddr; 0 with errno EINVAL on a bad spec */
int listen_parse(const char *spec, struct sockaddr_storage *ss, socklen_t *sslen);
/* bind+listen every spec (non-blocking, close-on-exec); 0 and errno on the
 * first failure, with *bad set to the index of the spec that failed */
int listen_open(struct listen_set *ls, const char *const *specs, size_t nspecs, size_t *bad);
void listen_close(struct listen_set *ls);

/* When accept4() fails because this process or the system is out of
 * descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM), the connection
 * stays queued and the socket stays readable: accepting again at once
 * would spin, and log a line each time. A listener stops accepting for
 * LISTEN_PAUSE_MS instead (its clients wait in the backlog) and logs once
 * per pause. */
#define LISTEN_PAUSE_MS 1000

struct listen_pause {
    int on;
    struct timespec until;      /* CLOCK_MONOTONIC */
};

/* after accept4() failed with errno e: 1 if e is such a failure, and the
 * pause starts, logged "event=accept error=... paused_ms=..."; 0 (nothing
 * logged, errno as it was) for any other error */
int listen_pause_start(struct listen_pause *p, int e);
/* milliseconds the pause has left (at least 1), or 0: accepting */
int listen_pause_left(struct listen_pause *p);

/* render a peer address as text ("192.0.2.1", "2001:db8::1"; v4-mapped v6
 * shown as v4); dst at least 64 bytes. Returns dst. */
char *sockaddr_text(const struct sockaddr *sa, char *dst, size_t dstlen);
/* port of a sockaddr (host order), 0 if unknown */
unsigned sockaddr_port(const struct sockaddr *sa);

#endif
