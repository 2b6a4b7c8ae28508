/* smtp_monitor.h - the privileged half of one SMTP connection and the
 * session's side of its channel. The monitor (root, not chrooted) serves
 * requests from the chrooted postern-smtp session over a SOCK_SEQPACKET
 * pair, one fixed-size record per datagram:
 *   session -> monitor: INJECT  (+ 2 fds by SCM_RIGHTS: message pipe read
 *                                end, envelope socket) -> STATUS <exit code>
 *                       TRIGGER                        -> STATUS 1|0
 * For INJECT the monitor forks, drops to the smtp user (no chroot) and execs
 * ROOT/bin/queue-inject with the message on fd 0 and the envelope socket on
 * fd 1; STATUS carries its exit code (-1: killed or not started). The reader
 * checks it got exactly one whole record, and the fds only where expected. */
#ifndef POSTERN_SMTP_MONITOR_H
#define POSTERN_SMTP_MONITOR_H

#include <stdint.h>

#include "privdrop.h"
#include "smtp_session.h"

enum smtp_mon_type {
    SMTP_MON_INJECT = 1,
    SMTP_MON_TRIGGER = 2,
    SMTP_MON_STATUS = 3
};

struct smtp_mon_msg {
    uint32_t type;
    int32_t value;
};

/* send one record with nfd (0 or 2) descriptors attached */
int smtp_mon_send(int fd, const struct smtp_mon_msg *m, const int *fds, int nfd);
/* receive one record; fds[0..*nfd) get what came with it (at most 2; more
 * or a truncated record: all closed, 0 with EPROTO). 0 with EPIPE at EOF,
 * ETIMEDOUT after timeout_ms (<0: wait forever). */
int smtp_mon_recv(int fd, struct smtp_mon_msg *m, int *fds, int *nfd, int timeout_ms);

/* The session's injector over the channel fd. */
struct smtp_mon_client {
    int fd;
    int timeout_ms;
};
void smtp_mon_injector(struct smtp_injector *inj, struct smtp_mon_client *c);

/* The monitor loop: serve the session on fd until it hangs up. The queue-
 * inject child runs as u (NULL: stays as is, for tests) with argv
 * {inject_path} and a minimal environment. root is used for the trigger.
 * Returns 1 when the session closed the channel, 0 on a protocol error. */
int smtp_monitor_serve(int fd, const char *root, const char *inject_path, const struct privuser *u);

#endif
