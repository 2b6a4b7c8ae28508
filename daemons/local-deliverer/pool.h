/* pool.h - local-deliverer's mailbox workers: long-lived children of the
 * root process, each running as one mailbox's uid:gid, that take the common
 * job (one mailbox, no forward) one at a time instead of a fork per
 * delivery (docs/ARCHITECTURE.md "local-deliverer's mailbox workers").
 *
 * A worker is forked for a (uid, gid), drops to it with privdrop before it
 * reads anything, keeps only its end of a SOCK_SEQPACKET pair (fd 3),
 * /dev/null (fd 0, 1) and stderr, and then answers dp_mbox records (message
 * fd attached) with result records, refusing any record for another uid or
 * gid. Several workers may serve one uid when its deliveries overlap. The
 * root process retires a worker (closes its socket: it exits at end of file)
 * after POOL_IDLE_MS idle, after POOL_JOBS_MAX jobs, and on reload or end
 * of the job stream (busy ones after their job); POOL_MAX caps the live
 * workers, and a job that finds none free takes the fork-per-job path. */
#ifndef POSTERN_POOL_H
#define POSTERN_POOL_H

#include <poll.h>
#include <sys/types.h>

#include "deliver_proto.h"

#define POOL_MAX 64               /* live workers */
#define POOL_SLOTS (2 * POOL_MAX) /* live + retired not yet reaped */
#define POOL_IDLE_MS 5000
#define POOL_JOBS_MAX 1000
#define POOL_REAP_MS 5000         /* a retired worker not gone by then is killed */

enum pool_state { POOL_IDLE, POOL_BUSY, POOL_GONE };

struct pool_worker {
    pid_t pid;
    int fd;                       /* our end of its socket; -1 once retired */
    uid_t uid;
    gid_t gid;
    enum pool_state state;
    const char *retire;           /* busy: retire after this job, and why */
    int killed;
    unsigned jobs;                /* jobs handed to it */
    long long since;              /* ms (monotonic): job started / idle since / retired */
    unsigned long long job;       /* the job in flight */
    char id[DP_ID_LEN + 1];
};

struct pool {
    size_t n;
    struct pool_worker w[POOL_SLOTS];
};

void pool_init(struct pool *p);

/* Hand m (msgfd attached) to an idle worker of (m->uid, m->gid), or to a
 * new one. 1, or 0 with errno (EAGAIN: POOL_MAX busy workers; others: the
 * worker could not be started): the caller then runs the job itself. */
int pool_submit(struct pool *p, const struct dp_mbox *m, int msgfd);

/* The workers' sockets to watch: fills fds[0..return) (at most POOL_SLOTS). */
size_t pool_pollfds(const struct pool *p, struct pollfd *fds);

/* fd (one of pool_pollfds) is ready. 1 if a job ended: *r holds its result
 * (a worker that died or answered nonsense gives "4.3.0 delivery process
 * died"); 0 if nothing is to be sent. */
int pool_input(struct pool *p, int fd, struct dp_result *r);

/* Timers: kill jobs older than LOCAL_JOB_TIME_MAX, retire idle workers,
 * reap retired ones. Returns the poll timeout (ms) until the next timer, -1
 * for none. */
int pool_tick(struct pool *p);

/* Retire every worker: idle ones now, busy ones after their job (reload:
 * conf/mailboxes may now map a name to another uid; end of the job stream). */
size_t pool_retire_all(struct pool *p, const char *why);

size_t pool_busy(const struct pool *p);

/* In a child forked for another purpose: close our ends of the workers'
 * sockets, so that a retired worker sees end of file. */
void pool_close_inherited(struct pool *p);

#endif
