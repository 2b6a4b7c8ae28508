/* inject_client.h - hand a message to ROOT/bin/queue-inject (the only way
 * into the queue): the message on its fd 0 (a memfd holding prefix + the
 * message), the NUL-framed envelope records on its fd 1 (a socket, so the new
 * queue id comes back). Used by queue-manager for bounces and by
 * local-deliverer for forwarding; its spawn half by smtp-listener's monitor
 * and sendmail -bs. */
#ifndef POSTERN_INJECT_CLIENT_H
#define POSTERN_INJECT_CLIENT_H

#include <stddef.h>
#include <sys/types.h>

#define INJECT_TIMEOUT_MS 60000

struct privuser;

struct inject_req {
    const char *sender;             /* "" for <> */
    const char *client;             /* C record, "" for none */
    int body8bit;                   /* send B8BITMIME */
    const char *const *rcpt;        /* recipients (each "T<addr>\t<notify>\t<orcpt>") */
    size_t nrcpt;
    const char *prefix;             /* bytes before the message (may be NULL) */
    size_t prefixlen;
    const char *msg;                /* the message from memory ... */
    size_t msglen;
    int msgfd;                      /* ... or from this fd (pread from 0) if >= 0 */
    /* DSN parameters (RFC 3461) a forwarded copy keeps; NULL/"" or 0: none */
    const char *envid;              /* E record: ENVID, xtext as received */
    const char *ret;                /* N record: RET, "FULL" or "HDRS" */
    const char *notify;             /* every recipient's NOTIFY ("SUCCESS,FAILURE", "NEVER") */
    const char *orcpt;              /* every recipient's ORCPT ("rfc822;xtext") */
    int smtputf8;                   /* send U: the message needs SMTPUTF8 (RFC 6531) */
};

/* Run queue-inject. 1 with id[] (17 bytes) set when it exited 0; else 0
 * with errno and *status = its exit code (or -1 if it did not exit). */
int inject_run(const char *root, const struct inject_req *r, char *id, int *status);

/* queue-inject (path) as smtp-listener's monitor runs it for a session:
 * the message on fd 0, the envelope socket on fd 1, no other descriptor,
 * only PATH in the environment, as u (NULL: as is); vfork, so only for
 * single-threaded callers without signal handlers (inject_run forks, for
 * daemons with handlers). Its pid, or -1 (errno). inject_wait: its exit
 * code, or -1 (killed, or pid -1). sendmail -bs uses the two apart: its
 * session, in the same process, writes the message in between. */
pid_t inject_spawn(int msg_fd, int env_fd, const char *path, const struct privuser *u);
int inject_wait(pid_t pid);

#endif
