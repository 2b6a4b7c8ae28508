/* io.c - buffered fd I/O with bounded waits and a CR/LF-aware line reader. */
#include "io.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <limits.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

void io_init(struct io *io, int fd, void *mem, size_t cap, int timeout_ms)
{
    io->fd = fd;
    io->timeout_ms = timeout_ms;
    io->b = mem;
    io->cap = cap;
    io->pos = io->len = 0;
    io->quickack = 0;
    io->wait_mask = NULL;
    io->flush_first = NULL;
}

void io_quickack(struct io *in, int on) { in->quickack = on; }

void fd_push_ack(int fd)
{
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one) < 0) { /* not TCP */ }
}

int fd_unread(int fd)
{
    int n = 0;
    return ioctl(fd, FIONREAD, &n) == 0 && n > 0;
}

/* mask: NULL, or the signal mask to wait under; then an interrupted wait
 * fails with EINTR instead of going on (struct io's wait_mask) */
static int fd_wait_masked(int fd, short events, int timeout_ms, const sigset_t *mask)
{
    struct pollfd p = { .fd = fd, .events = events, .revents = 0 };
    for (;;) {
        int r;
        if (mask) {
            struct timespec t = { timeout_ms / 1000, (long)(timeout_ms % 1000) * 1000000 };
            r = ppoll(&p, 1, timeout_ms < 0 ? NULL : &t, mask);
        } else {
            r = poll(&p, 1, timeout_ms);
        }
        if (r > 0) return 1;
        if (r == 0) { errno = ETIMEDOUT; return 0; }
        if (errno != EINTR || mask) return 0;
    }
}

static int fd_wait(int fd, short events, int timeout_ms)
{
    return fd_wait_masked(fd, events, timeout_ms, NULL);
}

void fd_close_lingering(int fd, int max_ms, size_t max_bytes)
{
    char junk[4096];
    size_t got = 0;
    long long deadline = io_now_ms() + max_ms;
    if (shutdown(fd, SHUT_WR) == 0) {
        for (;;) {
            long long left = deadline - io_now_ms();
            if (left <= 0 || got >= max_bytes || !fd_wait(fd, POLLIN, (int)left)) break;
            ssize_t n = read(fd, junk, sizeof junk);
            if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
            if (n <= 0) break;
            got += (size_t)n;
        }
    }
    close(fd);
}

/* Deadlines (CLOCK_MONOTONIC ms; -1 = none): a line must be complete
 * within timeout_ms of the first wait for it, so that a client dribbling one
 * byte at a time (slowloris) cannot hold a session forever. */
long long io_now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static long long deadline_of(const struct io *in)
{
    return in->timeout_ms < 0 ? -1 : io_now_ms() + in->timeout_ms;
}

static int left_ms(long long deadline)
{
    if (deadline < 0) return -1;
    long long l = deadline - io_now_ms();
    return l <= 0 ? 0 : l > INT_MAX ? INT_MAX : (int)l;
}

static int fill_by(struct io *in, long long deadline);

int io_fill(struct io *in)
{
    return fill_by(in, deadline_of(in));
}

static int fill_by(struct io *in, long long deadline)
{
    if (in->pos == in->len) in->pos = in->len = 0;
    else if (in->len == in->cap && in->pos > 0) {
        memmove(in->b, in->b + in->pos, in->len - in->pos);
        in->len -= in->pos;
        in->pos = 0;
    }
    if (in->len == in->cap) { errno = ENOBUFS; return 0; }
    for (;;) {
        if (in->flush_first && in->flush_first->len && !io_flush(in->flush_first)) {
            errno = EPIPE;
            return 0;
        }
        if (in->quickack) fd_push_ack(in->fd);
        if (!fd_wait_masked(in->fd, POLLIN, left_ms(deadline), in->wait_mask)) return 0;
        ssize_t r = read(in->fd, in->b + in->len, in->cap - in->len);
        if (r > 0) { in->len += (size_t)r; return 1; }
        if (r == 0) { errno = EPIPE; return 0; }
        if (errno != EINTR && errno != EAGAIN) return 0;
    }
}

size_t io_buffered(const struct io *in) { return in->len - in->pos; }

void io_discard_buffered(struct io *in) { in->pos = in->len = 0; }

void io_wipe_spent(struct io *in)
{
    explicit_bzero(in->b, in->pos);
    explicit_bzero(in->b + in->len, in->cap - in->len);
}

/* At a CR: decide CRLF or bare CR, reading one more byte if needed. */
static int io_take_cr(struct io *in, enum io_eol *eol, long long deadline)
{
    if (in->pos + 1 >= in->len) {
        if (!fill_by(in, deadline)) {
            if (errno != EPIPE) return 0;
            in->pos++;              /* CR then EOF: a bare CR */
            *eol = IO_EOL_CR;
            return 1;
        }
    }
    if (in->b[in->pos + 1] == '\n') { in->pos += 2; *eol = IO_EOL_CRLF; }
    else { in->pos += 1; *eol = IO_EOL_CR; }
    return 1;
}

int io_getline(struct io *in, char *dst, size_t max, size_t *len, enum io_eol *eol)
{
    size_t n = 0;
    long long deadline = deadline_of(in);
    *eol = IO_EOL_NONE;
    for (;;) {
        while (in->pos < in->len) {
            unsigned char c = in->b[in->pos];
            if (c == '\n') { in->pos++; *eol = IO_EOL_LF; *len = n; return 1; }
            if (c == '\r') {
                if (!io_take_cr(in, eol, deadline)) { *len = n; return 0; }
                *len = n;
                return 1;
            }
            if (n == max) { *len = n; return 1; }
            dst[n++] = (char)c;
            in->pos++;
        }
        if (!fill_by(in, deadline)) {
            *len = n;
            if (errno == EPIPE && n > 0) return 1;
            return 0;
        }
    }
}

int io_skipline(struct io *in, size_t limit)
{
    size_t n = 0;
    long long deadline = deadline_of(in);
    for (;;) {
        while (in->pos < in->len) {
            unsigned char c = in->b[in->pos];
            if (c == '\n') { in->pos++; return 1; }
            if (c == '\r') { enum io_eol e; return io_take_cr(in, &e, deadline); }
            if (n++ >= limit) { errno = E2BIG; return 0; }
            in->pos++;
        }
        if (!fill_by(in, deadline)) return 0;
    }
}

int io_skip_to_lf(struct io *in, size_t limit)
{
    size_t n = 0;
    long long deadline = deadline_of(in);
    for (;;) {
        while (in->pos < in->len) {
            if (in->b[in->pos++] == '\n') return 1;
            if (n++ >= limit) { errno = E2BIG; return 0; }
        }
        if (!fill_by(in, deadline)) return 0;
    }
}

int io_read(struct io *in, void *dst, size_t n, size_t *got)
{
    if (!n) { *got = 0; return 1; }
    if (in->pos == in->len && !io_fill(in)) return 0;
    size_t k = in->len - in->pos;
    if (k > n) k = n;
    memcpy(dst, in->b + in->pos, k);
    in->pos += k;
    *got = k;
    return 1;
}

int io_read_full(struct io *in, void *dst, size_t n)
{
    long long deadline = deadline_of(in);
    char *d = dst;
    while (n) {
        if (in->pos == in->len && !fill_by(in, deadline)) return 0;
        size_t k = in->len - in->pos;
        if (k > n) k = n;
        memcpy(d, in->b + in->pos, k);
        in->pos += k;
        d += k;
        n -= k;
    }
    return 1;
}

int fd_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl >= 0 && (fl & O_NONBLOCK || fcntl(fd, F_SETFL, fl | O_NONBLOCK) == 0);
}

int fd_write_all(int fd, const void *p, size_t n, int timeout_ms)
{
    const char *s = p;
    while (n) {
        ssize_t w = write(fd, s, n);
        if (w > 0) { s += w; n -= (size_t)w; continue; }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && errno == EAGAIN) {
            if (!fd_wait(fd, POLLOUT, timeout_ms)) return 0;
            continue;
        }
        if (w == 0) errno = EIO;
        return 0;
    }
    return 1;
}

int fd_read_all(int fd, void *p, size_t n, int timeout_ms)
{
    char *s = p;
    while (n) {
        if (!fd_wait(fd, POLLIN, timeout_ms)) return 0;
        ssize_t r = read(fd, s, n);
        if (r > 0) { s += r; n -= (size_t)r; continue; }
        if (r == 0) { errno = EPIPE; return 0; }
        if (errno != EINTR && errno != EAGAIN) return 0;
    }
    return 1;
}

int io_flush(struct io *out)
{
    if (!out->len) return 1;
    int ok = fd_write_all(out->fd, out->b, out->len, out->timeout_ms);
    out->len = 0;
    return ok;
}

int io_put(struct io *out, const void *p, size_t n)
{
    if (n > out->cap - out->len && !io_flush(out)) return 0;
    if (n > out->cap) return fd_write_all(out->fd, p, n, out->timeout_ms);
    memcpy(out->b + out->len, p, n);
    out->len += n;
    return 1;
}

int io_puts(struct io *out, const char *s) { return io_put(out, s, strlen(s)); }
