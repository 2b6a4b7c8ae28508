/* prelogin.c - the pre-login POP3 session: greeting, CAPA, USER/PASS,
 * AUTH PLAIN, QUIT. Runs as user_pop3 chrooted in ROOT/empty; passwords go
 * to the monitor, never anywhere else. */
#include "pop3d.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <sodium.h>

#include "err.h"
#include "io.h"
#include "log.h"
#include "pop3_session.h"
#include "tls_spawn.h"

int pop3d_timeout_ms(const struct config *c)
{
    unsigned long long t = c->session_timeout < POP3_TIMEOUT_MIN ? POP3_TIMEOUT_MIN : c->session_timeout;
    if (t > 86400) t = 86400;
    return (int)t * 1000;
}

/* ask the monitor; returns the login result */
static enum pop3_login ask_monitor(int mon, struct pop3_session *s, struct io *in)
{
    static char rec[POP3_MON_REC_MAX];
    size_t len;
    char r = 't';
    size_t left = io_buffered(in);
    if (left > POP3_MON_LEFT_MAX) left = POP3_MON_LEFT_MAX;   /* cannot happen: POP3D_INBUF */
    if (!pop3_mon_request_format(s->user, s->userlen, s->pass, s->passlen, in->b + in->pos, left, rec, sizeof rec, &len))
        return POP3_LOGIN_BAD;
    ssize_t w = send(mon, rec, len, MSG_NOSIGNAL);
    sodium_memzero(rec, sizeof rec);
    if (w != (ssize_t)len) return POP3_LOGIN_TEMP;
    struct pollfd p = { .fd = mon, .events = POLLIN, .revents = 0 };
    if (poll(&p, 1, 120000) != 1 || recv(mon, &r, 1, 0) != 1) return POP3_LOGIN_TEMP;
    return r == 'o' ? POP3_LOGIN_OK : r == 'b' ? POP3_LOGIN_BAD : POP3_LOGIN_TEMP;
}

/* tls-proxy's "TLS <version> <cipher> <sni>" line; 0 if the handshake failed */
static int tls_wait(struct io *in, const char *sid)
{
    char line[256], version[32], cipher[64];
    size_t len;
    enum io_eol eol;
    if (!io_getline(in, line, sizeof line, &len, &eol) || eol != IO_EOL_LF ||
        !tls_proxy_line(line, len, version, sizeof version, cipher, sizeof cipher)) {
        log_info(sid, "event=tls status=failed");
        return 0;
    }
    log_info(sid, "event=tls version=%s cipher=%s", version, cipher);
    return 1;
}

/* STLS (RFC 2595): the "+OK" is out; whatever the client sent with or after
 * STLS is dropped (what we buffered here; what is still in the kernel goes
 * to tls-proxy as handshake data and fails the handshake). The monitor
 * starts tls-proxy and hands us its plaintext end. */
static int stls(int *fd, int mon, struct io *in, struct io *out, const char *sid, int ms)
{
    char tag;
    int plain;
    io_discard_buffered(in);
    if (!fd_send(mon, 'S', -1) || !fd_recv(mon, &tag, &plain, 30000)) return 0;
    if (tag != 's' || plain < 0) {
        if (plain >= 0) close(plain);
        log_error(sid, "event=tls status=unavailable");
        return 0;
    }
    close(*fd);
    *fd = plain;
    fd_nonblock(plain);
    io_init(in, plain, in->b, in->cap, ms);
    io_init(out, plain, out->b, out->cap, ms);
    return tls_wait(in, sid);
}

int prelogin_run(const struct config *c, int fd, int mon, const char *sid, const char *addr, int tls, int offer_stls)
{
    static unsigned char ibuf[POP3D_INBUF], obuf[8192];
    static char line[POP3_SASL_LINE_MAX];
    struct io in, out;
    struct pop3_session s;
    int ms = pop3d_timeout_ms(c);
    fd_nonblock(fd);              /* every write bounded by the timeout too */
    io_init(&in, fd, ibuf, sizeof ibuf, ms);
    io_init(&out, fd, obuf, sizeof obuf, ms);
    pop3_init(&s, &out, (unsigned)c->max_errors);
    pop3_set_security(&s, tls, offer_stls, pop3_plain_policy(c->pop3_plaintext_auth, addr) == 1);
    if (tls && !tls_wait(&in, sid)) return EXIT_OK;
    if (!pop3_greeting(&s, c->hostname) || !io_flush(&out)) return EXIT_TEMP;
    for (;;) {
        size_t len;
        enum io_eol eol;
        enum pop3_action act;
        /* the end, or the timeout: RFC 1939 3, the connection is closed
         * without a response (which a client that sent a command just
         * then would take for its reply) */
        if (!io_getline(&in, line, sizeof line, &len, &eol)) {
            io_flush(&out);
            return EXIT_OK;
        }
        enum pop3_line_end end;
        /* EOF inside a line (not run), or in the rest of a long one or of
         * one with a bare CR: the replies to the whole lines before it
         * still go out */
        if (!pop3_line_take(&in, eol, len, sizeof line, &end)) {
            io_flush(&out);
            return EXIT_OK;
        }
        if (!pop3_line(&s, line, len, end, &act)) return EXIT_TEMP;
        sodium_memzero(line, sizeof line);
        if (act == POP3_LOGIN) {
            if (!io_flush(&out)) return EXIT_TEMP;
            enum pop3_login r = ask_monitor(mon, &s, &in);
            pop3_login_result(&s, r);
            if (r == POP3_LOGIN_OK) return EXIT_OK;   /* the mailbox process has the connection */
            if (s.state == POP3_DONE) act = POP3_CLOSE; /* too many failed logins */
        }
        if (act == POP3_CLOSE) {
            io_flush(&out);
            /* its monitor still holds the socket: the FIN and the drain
             * keep its later close from sending RST over our last reply */
            if (fd_unread(fd)) fd_close_lingering(fd, 2000, 1 << 20);
            return EXIT_OK;
        }
        if (act == POP3_STLS) {
            if (!io_flush(&out) || !stls(&fd, mon, &in, &out, sid, ms)) return EXIT_OK;
            pop3_tls_started(&s);
            continue;
        }
        if (io_buffered(&in) == 0 && !io_flush(&out)) return EXIT_OK;
    }
}
