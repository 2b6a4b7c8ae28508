/* local.h - one local delivery job of local-deliverer: resolve the recipient
 * through conf/aliases and conf/mailboxes, deliver into each Maildir as its
 * owner (never root), forward non-local alias targets through queue-inject.
 *
 * The job is split where the privileges change. local_plan runs in the root
 * process and does everything that needs no user's uid; the common case (one
 * mailbox, no forward) then goes to a worker of the mailbox's uid (pool.h)
 * that runs local_mbox_deliver; everything else runs local_run in a forked
 * child, as before the pool existed. */
#ifndef POSTERN_LOCAL_H
#define POSTERN_LOCAL_H

#include "aliases.h"
#include "config.h"
#include "deliver_proto.h"
#include "filesig.h"

#define LOCAL_JOB_TIME_MAX 900    /* seconds: a delivery still running then is killed */

enum local_kind {
    LOCAL_DONE,    /* answered already (no such user, loop, alias error...) */
    LOCAL_ONE,     /* exactly one mailbox and no forward: mb */
    LOCAL_MANY,    /* several mailboxes and/or forwards: x */
};

struct local_job {
    enum local_kind kind;
    struct mailbox mb;            /* LOCAL_ONE: looked up, uid and gid != 0, home made */
    struct alias_expansion x;     /* LOCAL_MANY */
};

/* What jobs are resolved with: postern.conf, conf/aliases and
 * conf/mailboxes, each parsed once and read again only when its file
 * changes (filesig.h: one stat() per file per job, instead of reading and
 * parsing all three for every job, which grew with the number of users). */
struct local_tables {
    struct config cfg;
    struct aliases aliases;
    struct mailboxes mailboxes;
    struct filesig_cache conf_c, aliases_c, mailboxes_c;
    int aliases_ok, mailboxes_ok;   /* 0: the file could not be used (logged) */
    char aliases_err[512], mailboxes_err[512];
};

/* cfg is postern.conf as read at start */
void local_tables_init(struct local_tables *t, const struct config *cfg);
/* Before each job: read again whichever file changed. A bad postern.conf
 * keeps the last good settings; a bad aliases or mailboxes file leaves that
 * table unusable, and local_plan defers jobs until it is mended. */
void local_tables_refresh(struct local_tables *t, const char *id);
/* SIGHUP or queue-manager's reload record: read all three at the next job */
void local_tables_forget(struct local_tables *t);

/* In the root process: the recipient's local name, the Delivered-To loop
 * check, the aliases, and for a single mailbox its entry in conf/mailboxes,
 * the refusal of uid/gid 0 and ROOT/mail/<name>. Returns lj->kind; r is
 * filled for LOCAL_DONE. Free with local_job_free. */
enum local_kind local_plan(const struct local_tables *t, const struct dp_job *j, int msgfd,
                           struct local_job *lj, struct dp_result *r);
void local_job_free(struct local_job *lj);

/* In a forked child of the root process (still root): LOCAL_ONE drops to
 * the mailbox user in this process and delivers; LOCAL_MANY delivers each
 * mailbox in a child of its own and forwards through queue-inject. */
void local_run(const struct local_tables *t, const struct dp_job *j, const struct local_job *lj,
               int msgfd, struct dp_result *r);

/* The record of one mailbox delivery (a worker's job). */
void local_mbox_job(const struct config *c, const struct dp_job *j, const struct mailbox *mb,
                    struct dp_mbox *m);
/* Drop to uid:gid (privdrop): 1, or 0 with r set to the temporary failure. */
int local_mbox_become(uid_t uid, gid_t gid, struct dp_result *r);
/* Deliver m into its Maildir (maildir_make, quota, maildir_deliver), already
 * running as m->uid:m->gid. Fills r->status and r->text. */
void local_mbox_deliver(const struct dp_mbox *m, int msgfd, struct dp_result *r);

/* Log a target that did not succeed (as the combined result is made). */
void local_target_log(const char *id, const struct dp_result *one);

#endif
