/* smtp_body.c - stream a message body to queue-inject, CRLF -> LF. */
#include "smtp_body.h"

#include <string.h>
#include <strings.h>

void smtp_body_init(struct smtp_msgbody *b, int fd, unsigned long long max_size, int timeout_ms)
{
    memset(b, 0, sizeof *b);
    b->fd = fd;
    b->max_size = max_size;
    b->timeout_ms = timeout_ms;
    b->in_headers = 1;
}

static void body_flush(struct smtp_msgbody *b)
{
    if (b->len && b->fd >= 0 && !b->write_failed &&
        !fd_write_all(b->fd, b->buf, b->len, b->timeout_ms))
        b->write_failed = 1;
    b->len = 0;
}

static void body_put(struct smtp_msgbody *b, unsigned char c)
{
    b->size++;
    if (b->size > b->max_size) { b->too_big = 1; return; }
    if (b->len == sizeof b->buf) body_flush(b);
    b->buf[b->len++] = c;
}

/* octets of one line (no line end) */
static void body_text(struct smtp_msgbody *b, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (b->in_headers && b->prefix_len < sizeof b->prefix) {
            b->prefix[b->prefix_len++] = p[i];
            if (b->prefix_len == sizeof b->prefix && !strncasecmp(b->prefix, "received:", 9))
                b->hops++;
        }
        body_put(b, (unsigned char)p[i]);
    }
    b->line_len += n;
}

static void body_eol(struct smtp_msgbody *b)
{
    if (b->in_headers && b->line_len == 0) b->in_headers = 0;
    body_put(b, '\n');
    b->line_len = 0;
    b->prefix_len = 0;
}

void smtp_body_line(struct smtp_msgbody *b, const char *p, size_t n, enum io_eol eol)
{
    body_text(b, p, n);
    if (eol == IO_EOL_NONE) return;
    if (eol == IO_EOL_LF) b->bare_lf = 1;
    else if (eol == IO_EOL_CR) b->bare_cr = 1;
    body_eol(b);
}

void smtp_body_octets(struct smtp_msgbody *b, const char *p, size_t n)
{
    size_t i = 0;
    if (b->pending_cr && n) {
        b->pending_cr = 0;
        if (p[0] == '\n') { body_eol(b); i = 1; }
        else { b->bare_cr = 1; body_eol(b); }
    }
    while (i < n) {
        size_t s = i;
        while (i < n && p[i] != '\r' && p[i] != '\n') i++;
        body_text(b, p + s, i - s);
        if (i == n) break;
        if (p[i] == '\n') { b->bare_lf = 1; body_eol(b); i++; continue; }
        /* CR: a line end only with LF right after it */
        if (i + 1 == n) { b->pending_cr = 1; i++; break; }
        if (p[i + 1] == '\n') { body_eol(b); i += 2; }
        else { b->bare_cr = 1; body_eol(b); i++; }
    }
}

int smtp_body_finish(struct smtp_msgbody *b)
{
    if (b->pending_cr) { b->pending_cr = 0; b->bare_cr = 1; body_eol(b); }
    if (b->line_len) body_eol(b);
    body_flush(b);
    return !b->write_failed;
}
