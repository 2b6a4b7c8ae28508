/* bs.c - sendmail -bs: an SMTP dialogue on standard input and output, for
 * programs that submit mail that way (PHP's Symfony Mailer and Laravel use
 * "sendmail -bs" by default). It is smtp-listener's own session code, run
 * as the caller: a local submission, as Postfix's sendmail -bs is, so any
 * recipient is taken (local names are still checked against
 * conf/recipients) and each message goes to ROOT/bin/queue-inject, which
 * records the caller's uid as it does for plain sendmail. No STARTTLS, no
 * AUTH: the caller is known already.
 *
 * The session wants one socket for both directions; standard input and
 * output are usually two pipes. So the session runs on one end of a
 * socketpair and a forked child copies stdin to it and it to stdout. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "conf.h"
#include "config.h"
#include "inject_client.h"
#include "io.h"
#include "log.h"
#include "queue_path.h"
#include "sendmail.h"
#include "smtp_rcptmap.h"
#include "smtp_session.h"

struct bs_injector {
    char path[PATH_MAX];    /* ROOT/bin/queue-inject */
    const char *root;
    pid_t pid;
};

/* queue-inject as smtp-listener's monitor runs it (inject_client.h), but
 * waited for only at finish: the session writes the message in between */
static int bs_start(void *ctx, int msg_fd, int env_fd)
{
    struct bs_injector *b = ctx;
    b->pid = inject_spawn(msg_fd, env_fd, b->path, NULL);
    return b->pid > 0;
}

static int bs_finish(void *ctx, int *status)
{
    struct bs_injector *b = ctx;
    *status = inject_wait(b->pid);
    int waited = b->pid > 0;
    b->pid = -1;
    return waited;
}

static int bs_trigger(void *ctx)
{
    const struct bs_injector *b = ctx;
    return queue_trigger(b->root);
}

/* copy stdin to s and s to stdout until s is closed; stdin's end of file
 * becomes a half close of s. Never returns. */
static _Noreturn void bs_relay(int s)
{
    char buf[16384];
    int in_open = 1;
    for (;;) {
        struct pollfd p[2] = { { .fd = s, .events = POLLIN }, { .fd = in_open ? 0 : -1, .events = POLLIN } };
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR) continue;
            _exit(SM_EX_TEMPFAIL);
        }
        if (p[0].revents) {
            ssize_t n = read(s, buf, sizeof buf);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) _exit(0);                       /* the session is over */
            if (!fd_write_all(1, buf, (size_t)n, -1)) _exit(SM_EX_TEMPFAIL);
        }
        if (in_open && p[1].revents) {
            ssize_t n = read(0, buf, sizeof buf);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) { in_open = 0; shutdown(s, SHUT_WR); continue; }
            if (!fd_write_all(s, buf, (size_t)n, -1)) in_open = 0;
        }
    }
}

int sm_smtp(const char *root)
{
    static struct config cf;
    static struct smtp_rcptmap map;
    static struct smtp_session s;
    static struct bs_injector b;
    char err[CONF_ERR_MAX + 64];
    int sp[2];
    if (!config_load(&cf, root, err, sizeof err) || !smtp_rcptmap_load(&map, root, err, sizeof err)) {
        fprintf(stdout, "421 4.3.0 mail system configuration error\r\n");
        fprintf(stderr, "sendmail: %s\n", err);
        return SM_EX_TEMPFAIL;
    }
    if (snprintf(b.path, sizeof b.path, "%s/bin/queue-inject", root) >= (int)sizeof b.path) {
        fprintf(stderr, "sendmail: ROOT too long\n");
        return SM_EX_USAGE;
    }
    b.root = root;
    b.pid = -1;
    fflush(stdout);
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0) {
        fprintf(stderr, "sendmail: socketpair: %s\n", strerror(errno));
        return SM_EX_TEMPFAIL;
    }
    pid_t relay = fork();
    if (relay < 0) {
        fprintf(stderr, "sendmail: fork: %s\n", strerror(errno));
        return SM_EX_TEMPFAIL;
    }
    if (relay == 0) {
        close(sp[0]);
        bs_relay(sp[1]);
    }
    close(sp[1]);
    /* the session's log lines (one per command) are for a daemon's log,
     * not for the program that runs sendmail: its replies say it all */
    int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (null >= 0) { dup2(null, 2); close(null); }
    struct smtp_injector inj = { .ctx = &b, .start = bs_start, .finish = bs_finish, .trigger = bs_trigger };
    struct sockaddr_in local = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    smtp_session_init(&s, &cf, &map, &inj, sp[0], (struct sockaddr *)&local, SMTP_PORT_SMTP, NULL);
    s.relay_ok = 1;        /* a local submission, like sendmail's own: any */
    s.local_submission = 1;  /* recipient, and the missing Date: etc. added */
    smtp_session_run(&s);          /* what was queued was acknowledged, QUIT or not */
    smtp_session_free(&s);
    close(sp[0]);
    int st;
    while (waitpid(relay, &st, 0) < 0 && errno == EINTR) {}
    return 0;
}
