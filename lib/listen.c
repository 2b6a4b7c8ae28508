/* listen.c - listening sockets from "addr:port" specs, v4 and v6. */
#include "listen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

static int port_parse(const char *s, unsigned *port)
{
    unsigned long n = 0;
    if (!*s) return 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return 0;
        n = n * 10 + (unsigned)(*s - '0');
        if (n > 65535) return 0;
    }
    *port = (unsigned)n;
    return 1;
}

int listen_parse(const char *spec, struct sockaddr_storage *ss, socklen_t *sslen)
{
    char host[INET6_ADDRSTRLEN + 1];
    const char *colon;
    size_t hlen;
    unsigned port;
    memset(ss, 0, sizeof *ss);
    if (spec[0] == '[') {
        const char *close = strchr(spec, ']');
        if (!close || close[1] != ':') { errno = EINVAL; return 0; }
        hlen = (size_t)(close - spec - 1);
        if (hlen >= sizeof host) { errno = EINVAL; return 0; }
        memcpy(host, spec + 1, hlen);
        host[hlen] = 0;
        if (!port_parse(close + 2, &port)) { errno = EINVAL; return 0; }
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((unsigned short)port);
        if (inet_pton(AF_INET6, host, &s6->sin6_addr) != 1) { errno = EINVAL; return 0; }
        *sslen = sizeof *s6;
        return 1;
    }
    colon = strrchr(spec, ':');
    if (!colon) { errno = EINVAL; return 0; }
    hlen = (size_t)(colon - spec);
    if (hlen >= sizeof host) { errno = EINVAL; return 0; }
    memcpy(host, spec, hlen);
    host[hlen] = 0;
    if (!port_parse(colon + 1, &port)) { errno = EINVAL; return 0; }
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    s4->sin_family = AF_INET;
    s4->sin_port = htons((unsigned short)port);
    if (!strcmp(host, "*")) s4->sin_addr.s_addr = htonl(INADDR_ANY);
    else if (inet_pton(AF_INET, host, &s4->sin_addr) != 1) { errno = EINVAL; return 0; }
    *sslen = sizeof *s4;
    return 1;
}

static int listen_one(const struct sockaddr_storage *ss, socklen_t len)
{
    int one = 1;
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0) goto fail;
    if (ss->ss_family == AF_INET6 &&
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) < 0) goto fail;
    if (bind(fd, (const struct sockaddr *)ss, len) < 0) goto fail;
    if (listen(fd, 128) < 0) goto fail;
    return fd;
fail:;
    int e = errno;
    close(fd);
    errno = e;
    return -1;
}

int listen_open(struct listen_set *ls, const char *const *specs, size_t nspecs, size_t *bad)
{
    ls->n = 0;
    for (size_t i = 0; i < nspecs; i++) {
        struct sockaddr_storage ss;
        socklen_t len;
        *bad = i;
        /* "*:port" means both families */
        int both = specs[i][0] == '*' && specs[i][1] == ':';
        if (!listen_parse(specs[i], &ss, &len)) goto fail;
        if (ls->n + (both ? 2u : 1u) > LISTEN_MAX) { errno = EMFILE; goto fail; }
        int fd = listen_one(&ss, len);
        if (fd < 0) goto fail;
        ls->fd[ls->n++] = fd;
        if (both) {
            char v6[32];
            snprintf(v6, sizeof v6, "[::]:%s", specs[i] + 2);
            if (!listen_parse(v6, &ss, &len)) goto fail;
            fd = listen_one(&ss, len);
            if (fd < 0) goto fail;
            ls->fd[ls->n++] = fd;
        }
    }
    return 1;
fail:;
    int e = errno;
    listen_close(ls);
    errno = e;
    return 0;
}

void listen_close(struct listen_set *ls)
{
    for (size_t i = 0; i < ls->n; i++) close(ls->fd[i]);
    ls->n = 0;
}

char *sockaddr_text(const struct sockaddr *sa, char *dst, size_t dstlen)
{
    dst[0] = 0;
    if (sa->sa_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, dst, (socklen_t)dstlen);
    } else if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a)) inet_ntop(AF_INET, &a->s6_addr[12], dst, (socklen_t)dstlen);
        else inet_ntop(AF_INET6, a, dst, (socklen_t)dstlen);
    } else {
        snprintf(dst, dstlen, "unknown");
    }
    return dst;
}

unsigned sockaddr_port(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) return ntohs(((const struct sockaddr_in *)(const void *)sa)->sin_port);
    if (sa->sa_family == AF_INET6) return ntohs(((const struct sockaddr_in6 *)(const void *)sa)->sin6_port);
    return 0;
}

int listen_pause_start(struct listen_pause *p, int e)
{
    if (e != EMFILE && e != ENFILE && e != ENOBUFS && e != ENOMEM) return 0;
    log_error(NULL, "event=accept error=\"%s\" paused_ms=%d", strerror(e), LISTEN_PAUSE_MS);
    clock_gettime(CLOCK_MONOTONIC, &p->until);
    p->until.tv_sec += LISTEN_PAUSE_MS / 1000;
    p->until.tv_nsec += (long)(LISTEN_PAUSE_MS % 1000) * 1000000L;
    if (p->until.tv_nsec >= 1000000000L) { p->until.tv_sec++; p->until.tv_nsec -= 1000000000L; }
    p->on = 1;
    return 1;
}

int listen_pause_left(struct listen_pause *p)
{
    struct timespec now;
    if (!p->on) return 0;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long long ns = (long long)(p->until.tv_sec - now.tv_sec) * 1000000000LL + (p->until.tv_nsec - now.tv_nsec);
    if (ns <= 0) { p->on = 0; return 0; }
    long long ms = (ns + 999999) / 1000000;   /* rounded up: a poll that long ends after the pause */
    return ms > LISTEN_PAUSE_MS ? LISTEN_PAUSE_MS : (int)ms;
}
