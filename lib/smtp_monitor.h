/* smtp_monitor.h - the privileged half of one SMTP connection and the
 * session's side of its channel. The monitor (root, not chrooted) serves
 * requests from the chrooted postern-smtp session over a SOCK_SEQPACKET
 * pair, one record per datagram: a fixed header {u32 type, i32 value},
 * optionally followed by a payload of at most SMTP_MON_PAYLOAD_MAX bytes.
 *   session -> monitor: INJECT  (+ 2 fds by SCM_RIGHTS: message pipe read
 *                                end, envelope socket) -> STATUS <exit code>
 *                       TRIGGER                        -> STATUS 1|0
 *                       STARTTLS (+ 1 fd: the client socket; payload: the
 *                                session id for the log)
 *                                -> STATUS 1 + 1 fd (the session's new,
 *                                   plaintext end of tls-proxy) | STATUS 0
 *                       AUTH    (payload "user NUL password", value = the
 *                                user's length) -> STATUS <enum auth_result>
 *                                with payload the canonical name when OK
 * For INJECT the monitor forks, drops to the smtp user (no chroot) and execs
 * ROOT/bin/queue-inject with the message on fd 0 and the envelope socket on
 * fd 1; STATUS carries its exit code (-1: killed or not started). For
 * STARTTLS it makes a socketpair and forks+execs ROOT/bin/tls-proxy (as
 * root: tls-proxy loads the key and drops itself) with fd 0 = the client
 * socket and fd 1 = one end; the other end goes back to the session. For
 * AUTH it asks auth-checker (ROOT/run/auth/socket, which the chrooted
 * session cannot reach) with the client address it knows itself. The
 * reader checks it got exactly one whole record, and the fds only where
 * expected. */
#ifndef POSTERN_SMTP_MONITOR_H
#define POSTERN_SMTP_MONITOR_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "privdrop.h"
#include "smtp_session.h"

enum smtp_mon_type {
    SMTP_MON_INJECT = 1,
    SMTP_MON_TRIGGER = 2,
    SMTP_MON_STATUS = 3,
    SMTP_MON_STARTTLS = 4,
    SMTP_MON_AUTH = 5
};

#define SMTP_MON_PAYLOAD_MAX 1400

struct smtp_mon_msg {
    uint32_t type;
    int32_t value;
};

/* send one record with nfd (0..2) descriptors attached */
int smtp_mon_send(int fd, const struct smtp_mon_msg *m, const int *fds, int nfd);
/* the same with a payload p[0..plen) (plen <= SMTP_MON_PAYLOAD_MAX) */
int smtp_mon_sendp(int fd, const struct smtp_mon_msg *m, const void *p, size_t plen,
                   const int *fds, int nfd);
/* receive one record; fds[0..*nfd) get what came with it (at most 2; more
 * or a truncated record: all closed, 0 with EPROTO). 0 with EPIPE at EOF,
 * ETIMEDOUT after timeout_ms (<0: wait forever). smtp_mon_recv refuses a
 * payload (EPROTO); smtp_mon_recvp stores it in p[0..*plen) (p has room for
 * SMTP_MON_PAYLOAD_MAX bytes). */
int smtp_mon_recv(int fd, struct smtp_mon_msg *m, int *fds, int *nfd, int timeout_ms);
int smtp_mon_recvp(int fd, struct smtp_mon_msg *m, void *p, size_t *plen, int *fds, int *nfd,
                   int timeout_ms);

/* The session's injector over the channel fd (also STARTTLS and AUTH). */
struct smtp_mon_client {
    int fd;
    int timeout_ms;
};
void smtp_mon_injector(struct smtp_injector *inj, struct smtp_mon_client *c);

/* What the monitor needs to know. */
struct smtp_mon_conf {
    const char *root;
    const char *inject_path;           /* ROOT/bin/queue-inject */
    const struct privuser *inject_user; /* NULL: stays as is, for tests */
    const char *tls_proxy;             /* ROOT/bin/tls-proxy; NULL: STARTTLS refused */
    const char *client;                /* the peer's address, for auth-checker */
    int auth_timeout_ms;
};

/* The monitor loop: serve the session on fd until it hangs up. Children
 * (queue-inject, tls-proxy) are reaped; tls-proxy may outlive the loop.
 * Returns 1 when the session closed the channel, 0 on a protocol error. */
int smtp_monitor_serve(int fd, const struct smtp_mon_conf *mc);

#endif
