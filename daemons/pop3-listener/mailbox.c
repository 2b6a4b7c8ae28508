/* mailbox.c - the post-login POP3 process: runs as the mail user's uid/gid
 * (never 0), chrooted into the user's Maildir; holds the maildrop lock for
 * its whole life; TRANSACTION, then UPDATE on QUIT. A connection that drops
 * without QUIT deletes nothing. */
#include "pop3d.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"
#include "io.h"
#include "log.h"
#include "maildir.h"
#include "maildrop.h"
#include "pop3_session.h"
#include "privdrop.h"
#include "sandbox.h"

/* the last reply; lingering, as a client that pipelined past PASS would
 * otherwise get RST and perhaps never see the reply */
static int reply_close(int fd, const char *line)
{
    fd_write_all(fd, line, strlen(line), 10000);
    fd_close_lingering(fd, 2000, 1 << 20);
    return EXIT_OK;
}

/* a stop signal (SIGTERM, SIGINT, SIGHUP: the tree's stop signals every
 * process) held while an UPDATE ran is waiting */
static int stop_pending(const sigset_t *stops)
{
    sigset_t p;
    if (sigpending(&p) < 0) return 0;
    for (int sig = 1; sig < NSIG; sig++)
        if (sigismember(stops, sig) == 1 && sigismember(&p, sig) == 1) return 1;
    return 0;
}

/* the client could not be written to (gone, or not reading within the
 * timeout): logged, and the session ends */
static int write_failed(const char *sid, const char *user, int update)
{
    log_info(sid, "event=drop user=%s update=%s error=\"%s\"", user, update ? "yes" : "no", strerror(errno));
    return EXIT_OK;
}

/* TRANSACTION and UPDATE on the open maildrop md, locked by *lock;
 * returns the exit code. A stop signal kills the process at once in
 * TRANSACTION (nothing is deleted); during an UPDATE it is held until the
 * UPDATE is done and its reply sent (within a second then), so that no
 * stop leaves an UPDATE half done. The lock is released before that
 * reply: a client that read "+OK" may log in again at once. */
static int transaction(const struct config *c, int fd, struct maildrop *md, int *lock, const struct auth_reply *r,
                       const char *left, size_t leftlen, const char *sid, int tls, int stls)
{
    static unsigned char ibuf[POP3D_INBUF], obuf[65536];
    static char line[POP3_LINE_MAX + 1];
    struct io in, out;
    struct pop3_session s;
    fd_nonblock(fd);              /* a client that stops reading meets the timeout too */
    io_init(&in, fd, ibuf, sizeof ibuf, pop3d_timeout_ms(c));
    io_init(&out, fd, obuf, sizeof obuf, pop3d_timeout_ms(c));
    memcpy(ibuf, left, leftlen);      /* what the pre-login session read past PASS */
    in.len = leftlen;
    sigset_t stops, mask;
    sigemptyset(&stops);
    sigaddset(&stops, SIGTERM);
    sigaddset(&stops, SIGINT);
    sigaddset(&stops, SIGHUP);
    pop3_init(&s, &out, (unsigned)c->max_errors);
    pop3_set_security(&s, tls, stls, 1);      /* the login was allowed */
    pop3_begin_transaction(&s, md);
    size_t n;
    unsigned long long oct;
    maildrop_stat(md, &n, &oct);
    log_info(sid, "event=login user=%s messages=%zu octets=%llu", r->name, n, oct);
    if (!io_puts(&out, "+OK Logged in.\r\n")) return EXIT_TEMP;
    if (io_buffered(&in) == 0 && !io_flush(&out)) return EXIT_OK;
    for (;;) {
        size_t len;
        enum io_eol eol;
        enum pop3_action act;
        int got = io_getline(&in, line, sizeof line, &len, &eol);
        int timedout = !got && errno == ETIMEDOUT;
        enum pop3_line_end end;
        /* the end, perhaps inside a line (not run: no QUIT) or in the rest
         * of a long one or of one with a bare CR: the replies to the whole
         * lines before it still go out. The timeout (RFC 1939 3): no
         * UPDATE, and no response either */
        if (!got || !pop3_line_take(&in, eol, len, sizeof line, &end)) {
            io_flush(&out);
            log_info(sid, "event=drop user=%s update=no%s", r->name, timedout ? " error=timeout" : "");
            return EXIT_OK;
        }
        int update = pop3_enters_update(&s, line, len, end);
        if (update) sigprocmask(SIG_BLOCK, &stops, &mask);
        if (!pop3_line(&s, line, len, end, &act)) return write_failed(sid, r->name, update);
        if (act == POP3_CLOSE) {
            close(*lock);
            *lock = -1;
            if (update && stop_pending(&stops)) out.timeout_ms = 1000;   /* the reply, then the stop */
            io_flush(&out);
            size_t left_n;
            maildrop_stat(md, &left_n, &oct);
            log_info(sid, "event=logout user=%s deleted=%zu", r->name, n > left_n ? n - left_n : 0);
            return EXIT_OK;             /* a held stop signal ends with the process */
        }
        if (update) sigprocmask(SIG_SETMASK, &mask, 0);
        if (io_buffered(&in) == 0 && !io_flush(&out)) return write_failed(sid, r->name, 0);
    }
}

/* A Maildir that is not there (removed, or never made for an account) is
 * made as the user, as local-deliverer makes it at the next delivery and
 * Dovecot at login: the user then sees an empty mailbox instead of
 * "-ERR [SYS/TEMP] Cannot open the mailbox" until a message comes. Only
 * the Maildir and its parts: a missing parent stays an error. 1 if it is
 * there (now), else 0 with errno. */
static int maildir_present(const char *maildir, const struct privuser *u)
{
    struct stat st;
    if (lstat(maildir, &st) == 0 || errno != ENOENT) return 1;   /* there, or not ours to fix */
    return maildir_make_as(maildir, u);
}

int mailbox_run(const struct config *c, int fd, const struct auth_reply *r,
                const char *left, size_t leftlen, const char *sid, int tls, int stls)
{
    struct privuser u = { r->uid, r->gid };
    struct maildrop md;
    if (r->uid == 0 || r->gid == 0) {
        log_error(sid, "event=login user=%s error=\"uid or gid 0 refused\"", r->name);
        return reply_close(fd, "-ERR [SYS/PERM] Mailbox misconfigured\r\n");
    }
    if (!maildir_present(r->maildir, &u))
        log_warn(sid, "event=maildir_make user=%s maildir=%s error=\"%s\"", r->name, r->maildir, strerror(errno));
    if (!privdrop(r->maildir, &u)) {
        log_error(sid, "event=login user=%s maildir=%s error=\"%s\"", r->name, r->maildir, strerror(errno));
        return reply_close(fd, "-ERR [SYS/TEMP] Cannot open the mailbox\r\n");
    }
    /* it reads the client's commands: the sandbox, with its files allowed
     * (it opens, renames and removes the messages of its Maildir) */
    if (!sandbox_enter(0))
        log_error(sid, "event=sandbox error=\"%s\"", strerror(errno));
    int dirfd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int lock = dirfd >= 0 ? maildrop_lock(dirfd) : -1;
    if (lock < 0) {
        if (errno == EWOULDBLOCK) {
            log_info(sid, "event=login user=%s result=in-use", r->name);
            return reply_close(fd, "-ERR [IN-USE] Mailbox is locked by another session\r\n");
        }
        log_error(sid, "event=lock user=%s error=\"%s\"", r->name, strerror(errno));
        return reply_close(fd, "-ERR [SYS/TEMP] Cannot lock the mailbox\r\n");
    }
    if (!maildrop_open(&md, dirfd)) {
        log_error(sid, "event=scan user=%s error=\"%s\"", r->name, strerror(errno));
        close(lock);    /* RFC 1939 4: the lock is released before the -ERR */
        return reply_close(fd, "-ERR [SYS/TEMP] Cannot read the mailbox\r\n");
    }
    int code = transaction(c, fd, &md, &lock, r, left, leftlen, sid, tls, stls);
    maildrop_close(&md);
    if (lock >= 0) close(lock);          /* the mailbox is free before any lingering */
    if (fd_unread(fd)) fd_close_lingering(fd, 2000, 1 << 20);
    return code;
}
