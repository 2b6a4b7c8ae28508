/* fake_injector.h - the in-memory injector of the SMTP session fuzz
 * targets (fuzz_smtp_data, fuzz_smtp_bdat, fuzz_smtp_submission): it keeps
 * the message pipe and the envelope socket (no process, no file), and at
 * finish() reads both, parses the envelope with queue-inject's own reader
 * (a malformed record is a crash) and answers 0 (queued) or 55. Included
 * once per target (static definitions); each target builds its struct
 * smtp_injector from these. fuzz_conf() and fuzz_session() are the
 * targets' shared set-up and run: one whole session over a socketpair. */
#ifndef POSTERN_FUZZ_FAKE_INJECTOR_H
#define POSTERN_FUZZ_FAKE_INJECTOR_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "queue_inject.h"
#include "smtp_session.h"

struct fake {
    int msg, env;                 /* our copies, -1 when none */
    int calls, queued;
    int auth_ok;                  /* times the checker said yes (submission) */
    size_t msglen;
    char msgbuf[1 << 16];         /* the first message */
};
static struct fake fk;
static struct inject_env ie;

static int inj_start(void *ctx, int msg_fd, int env_fd)
{
    struct fake *f = ctx;
    f->msg = fcntl(msg_fd, F_DUPFD_CLOEXEC, 3);
    f->env = fcntl(env_fd, F_DUPFD_CLOEXEC, 3);
    if (f->msg < 0 || f->env < 0) abort();
    fcntl(f->msg, F_SETPIPE_SZ, 1 << 17);
    /* the queue id queue-inject would print once the envelope has ended */
    if (write(f->env, "0123456789ABCDEF\n", 17) != 17) abort();
    return 1;
}

static int inj_finish(void *ctx, int *status)
{
    struct fake *f = ctx;
    static char scratch[1 << 16];
    char why[256], *dst = f->calls ? scratch : f->msgbuf;   /* keep the first message */
    size_t len = 0;
    fcntl(f->msg, F_SETFL, O_NONBLOCK);
    for (;;) {
        ssize_t r = read(f->msg, dst + len, sizeof scratch - len);
        if (r <= 0) break;
        len += (size_t)r;
    }
    fcntl(f->env, F_SETFL, O_NONBLOCK);   /* the session has shut down or closed its end */
    inject_env_init(&ie, 0);
    int ok = inject_env_read(&ie, f->env, why, sizeof why);
    if (!ok && errno == EPROTO) __builtin_trap();   /* the session wrote a malformed record */
    inject_env_free(&ie);
    close(f->msg);
    close(f->env);
    f->msg = f->env = -1;
    *status = ok ? 0 : 55;
    if (!f->calls) { f->msglen = len; f->queued = ok; }
    f->calls++;
    return 1;
}

static int inj_trigger(void *ctx) { (void)ctx; return 1; }

/* the targets' configuration: example.test local, alice known */
static void fuzz_conf(struct config *cf, struct smtp_rcptmap *map, const char *max_message_size)
{
    char why[128];
    signal(SIGPIPE, SIG_IGN);
    config_defaults(cf);
    config_set(cf, "local_domains", "example.test", why, sizeof why);
    config_set(cf, "max_message_size", max_message_size, why, sizeof why);
    config_set(cf, "session_timeout", "1", why, sizeof why);
    smtp_rcptmap_init(map);
    smtp_rcptmap_add(map, "alice", 5);
}

/* One session on port (enum smtp_port) from 192.0.2.1 that reads
 * in[0..inlen) and then end of file; its replies into out[0..cap-1).
 * Returns their length. A session that started an injection and never
 * finished it is a crash. */
static size_t fuzz_session(struct smtp_session *s, const struct config *cf, const struct smtp_rcptmap *map,
                           const struct smtp_injector *inj, int port, const char *in, size_t inlen,
                           char *out, size_t cap)
{
    int sp[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) < 0) abort();
    int big = 1 << 20;
    setsockopt(sp[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    setsockopt(sp[0], SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    setsockopt(sp[0], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    setsockopt(sp[1], SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    if (inlen && write(sp[0], in, inlen) != (ssize_t)inlen) abort();
    shutdown(sp[0], SHUT_WR);
    struct sockaddr_in peer;
    memset(&peer, 0, sizeof peer);
    peer.sin_family = AF_INET;
    peer.sin_addr.s_addr = htonl(0xc0000201);
    fk.msg = fk.env = -1;
    fk.calls = fk.queued = fk.auth_ok = 0;
    smtp_session_init(s, cf, map, inj, sp[1], (struct sockaddr *)&peer, port, NULL);
    smtp_session_run(s);
    smtp_session_free(s);
    close(sp[1]);
    if (fk.msg >= 0 || fk.env >= 0) __builtin_trap();   /* started, never finished */
    size_t n = 0;
    for (;;) {
        ssize_t r = read(sp[0], out + n, cap - 1 - n);
        if (r <= 0) break;
        n += (size_t)r;
    }
    close(sp[0]);
    return n;
}

#endif
