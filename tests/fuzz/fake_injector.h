/* fake_injector.h - the in-memory injector of the SMTP session fuzz
 * targets (fuzz_smtp_data, fuzz_smtp_bdat, fuzz_smtp_submission): it keeps
 * the message pipe and the envelope socket (no process, no file), and at
 * finish() reads both, parses the envelope with queue-inject's own reader
 * (a malformed record is a crash) and answers 0 (queued) or 55. Included
 * once per target (static definitions); each target builds its struct
 * smtp_injector from these. */
#ifndef POSTERN_FUZZ_FAKE_INJECTOR_H
#define POSTERN_FUZZ_FAKE_INJECTOR_H

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
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

#endif
