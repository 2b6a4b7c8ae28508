/* io.h - buffered input and output on a file descriptor, every wait bounded
 * by a timeout, and a line reader that tells CRLF, bare LF and bare CR apart
 * and never stores more than the caller's limit. */
#ifndef POSTERN_IO_H
#define POSTERN_IO_H

#include <signal.h>
#include <stddef.h>
#include <sys/types.h>

struct io {
    int fd;
    int timeout_ms; /* per wait, and per line for io_getline/io_skipline; <0: forever */
    unsigned char *b;
    size_t cap;
    size_t pos; /* input: next unread byte */
    size_t len; /* input: bytes valid; output: bytes pending */
    int quickack; /* input from a TCP peer sending in bulk: see io_quickack */
    /* input: NULL, or the signal mask to wait under (ppoll). A signal that
     * this mask lets through and whose handler runs during a wait ends the
     * read: it fails with EINTR. The caller keeps that signal blocked
     * otherwise, so that it is noticed only while waiting (no race between
     * a check of its flag and the wait) */
    const sigset_t *wait_mask;
    /* input: NULL, or the output whose pending bytes are sent before each
     * wait for input, so that a peer is never left without the replies
     * to what it sent (RFC 2920 3.2). If that send fails, the read fails
     * with EPIPE: a peer that does not take its replies is gone. */
    struct io *flush_first;
};

enum io_eol {
    IO_EOL_NONE = 0, /* limit reached (or EOF) before any line end */
    IO_EOL_CRLF,
    IO_EOL_LF,       /* bare LF */
    IO_EOL_CR        /* bare CR: CR followed by anything but LF */
};

void io_init(struct io *io, int fd, void *mem, size_t cap, int timeout_ms);
/* CLOCK_MONOTONIC in milliseconds: the clock every deadline here (and in
 * the programs' own waits) is measured on */
long long io_now_ms(void);

/* Input. All return 1 on success, 0 on failure with errno:
 * ETIMEDOUT (no byte within timeout), EPIPE (end of file), or the read error. */
int io_fill(struct io *in);                 /* read more (only if buffer empty or to extend) */
/* While on, every wait for input first sends the ACK the kernel holds back
 * (TCP_QUICKACK): for a message body, where we send nothing back, so the
 * kernel's ACK-delaying interactive mode would make a client with Nagle's
 * algorithm on wait up to 40 ms for each ACK before its next piece (a
 * Python smtplib client over TLS: 25 ms a 100 KB message against 4).
 * Harmless on what is not TCP. */
void io_quickack(struct io *in, int on);
/* send now the ACK the kernel holds back on TCP socket fd (TCP_QUICKACK);
 * nothing on what is not TCP. What io_quickack does before each wait, for
 * callers with a poll loop of their own (tls-proxy). */
void fd_push_ack(int fd);
size_t io_buffered(const struct io *in);    /* bytes read but not consumed */
void io_discard_buffered(struct io *in);    /* drop them (e.g. before TLS) */
/* Zero every byte of the buffer that is not waiting to be read: those
 * already consumed and what earlier reads left past the end, which may still
 * hold a line read before. For after a line that carried a secret (SMTP
 * AUTH); the unread bytes stay. explicit_bzero: not a store the compiler
 * may drop. */
void io_wipe_spent(struct io *in);

/* Read one line into dst (at most max bytes, not NUL-terminated; NUL bytes
 * kept). *len gets the byte count, *eol how it ended; the terminator is
 * consumed and not stored. If max bytes arrive with no terminator, returns 1
 * with *eol = IO_EOL_NONE (the rest of the line is still unread). The whole
 * line must arrive within timeout_ms (ETIMEDOUT otherwise, even if bytes keep
 * trickling in: the slowloris defence). At EOF with
 * a partial line, returns that part with IO_EOL_NONE; at EOF with nothing
 * read, returns 0 with errno EPIPE. */
int io_getline(struct io *in, char *dst, size_t max, size_t *len, enum io_eol *eol);

/* Consume input up to and including the next line end (CRLF, LF or CR),
 * giving up with errno E2BIG after limit bytes. */
int io_skipline(struct io *in, size_t limit);

/* Consume input up to and including the next LF, CRs included (for
 * protocols where only CRLF ends a line: the rest of a line that held a
 * bare CR), giving up with errno E2BIG after limit bytes. */
int io_skip_to_lf(struct io *in, size_t limit);

/* Read up to n bytes (at least 1): 1 with *got set, or 0 (errno as above). */
int io_read(struct io *in, void *dst, size_t n, size_t *got);

/* Read exactly n bytes, all of them within timeout_ms (like a line): 1, or
 * 0 with errno ETIMEDOUT, EPIPE (end of file first) or the read error. */
int io_read_full(struct io *in, void *dst, size_t n);

/* Output: buffered; io_flush writes everything or fails (ETIMEDOUT, EPIPE...). */
int io_put(struct io *out, const void *p, size_t n);
int io_puts(struct io *out, const char *s);
int io_flush(struct io *out);

/* fd made non-blocking, so that io's and fd_write_all's waits are all
 * bounded by their timeout: a peer that sends but never reads cannot hold a
 * writer in write() for good. 1, or 0 with errno */
int fd_nonblock(int fd);
/* write all of p to fd (handles EINTR, short writes, EAGAIN with poll;
 * without O_NONBLOCK, a write that blocks waits without the timeout) */
int fd_write_all(int fd, const void *p, size_t n, int timeout_ms);
/* read exactly n bytes; EPIPE on early EOF */
int fd_read_all(int fd, void *p, size_t n, int timeout_ms);

/* End a connection so that our last reply is not lost: half-close (a FIN
 * after what was written), then read and drop what the peer still sends
 * until it closes, for at most max_ms and max_bytes, then close. A close()
 * with unread input sends RST instead of FIN, which throws away data not
 * yet sent and may make the peer drop what it had not read: a client that
 * pipelined past our "421 ... too many errors" would never see the 421. */
void fd_close_lingering(int fd, int max_ms, size_t max_bytes);
/* 1 if bytes have arrived on fd that nobody has read yet (FIONREAD) */
int fd_unread(int fd);

#endif
