/* local.h - one local delivery job of local-deliverer: resolve the recipient
 * through conf/aliases and conf/mailboxes, deliver into each Maildir as its
 * owner (never root), forward non-local alias targets through queue-inject. */
#ifndef POSTERN_LOCAL_H
#define POSTERN_LOCAL_H

#include "config.h"
#include "deliver_proto.h"

/* Run one job (in a child of the spawner, still root). msgfd is the queue
 * message. Fills r->status and r->text; never exits. A job for exactly one
 * mailbox is delivered in this process, which then runs as the mailbox
 * user: the caller must need no root privilege afterwards. */
void local_deliver(const struct config *c, const struct dp_job *j, int msgfd, struct dp_result *r);

#endif
