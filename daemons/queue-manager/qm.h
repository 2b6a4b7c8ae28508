/* qm.h - queue-manager's state: the messages it knows, the deliverer
 * channels, the jobs in flight; and the modules that work on them:
 * store.c (queue files: scan, load, durable rewrite, removal, sweep),
 * sched.c (dispatch, results, retries, rounds), notify.c (DSNs). */
#ifndef POSTERN_QM_H
#define POSTERN_QM_H

#include <stddef.h>
#include <sys/types.h>
#include <time.h>

#include "config.h"
#include "envelope.h"

#define QM_SCAN_TODO_EVERY 30          /* seconds between looks at todo/ */
#define QM_SCAN_ALL_EVERY (15 * 60)    /* seconds between full scans of env/ */
#define QM_STALE_AGE (36 * 3600)       /* tmp/ and half-messages older than this are garbage (docs/QUEUE.md) */
#define QM_BOUNCE_RETRY 300            /* seconds before retrying a failed bounce injection */
#define QM_DSN_FULL_LIMIT (1u << 20)   /* bounces quote whole messages up to this size */
#define QM_DSN_READ_MAX (4u << 20)     /* read at most this much of a message for a DSN */
#define QM_RM_BATCH 128               /* removals made durable together (qm_remove_flush) */
#define QM_RM_DELAY_MS 100            /* ... at most this long after the first of them */
#define QM_SAVE_DELAY_MS 100          /* results of a message with jobs in flight: one rewrite at most this late */
#define QM_DOUBLE_BOUNCE "queue-manager double-bounce"
#define QM_BOUNCE "queue-manager bounce"

enum qm_chan { QM_LOCAL = 0, QM_REMOTE = 1, QM_NCHAN = 2 };

struct qm_channel {
    const char *name;
    int sock;               /* -1: none */
    pid_t pid;
    unsigned inflight;
    unsigned max;
    /* at most this many messages with jobs in flight for one key (0: no
     * limit): local, the recipient address, local_per_recipient; remote, the recipient's domain, remote_per_domain (what
     * remote-deliverer runs at once for it; the other recipients of a
     * message already under way to it go along, for its batch). A mailbox
     * whose file system hangs (an NFS server gone) holds each of its jobs
     * until local-deliverer kills it (LOCAL_JOB_TIME_MAX, 15 minutes), a
     * server that accepts and never answers each of its for remote_timeout
     * (jobs past remote_per_domain waited in remote-deliverer, counted in
     * flight here): without the limit, one such user's or domain's backlog
     * took every slot and nobody else got mail meanwhile */
    unsigned per_key;
    int full;               /* a send found the socket full: no job until a result comes back */
    int reload_due;         /* a reload record still to send (the socket was full) */
};

/* One per queued message, loaded or not: kept small (the envelope is
 * allocated only while loaded) and with what qm_dispatch/qm_next_wake look
 * at on every pass first, since they walk every message. */
struct qm_msg {
    time_t wake;            /* earliest time anything is due; 0 = now */
    struct qm_msg *next;
    int delete_req;
    int flush;
    int waiting;            /* recipients due but their deliverer was busy */
    unsigned long long held; /* waiting only for the jobs of one key (qm_channel.per_key) to end; 0: not so */
    enum qm_chan held_chan;
    unsigned inflight;
    struct qm_msg *prev;    /* q->msgs is doubly linked: forgetting is O(1) */
    struct qm_msg *hnext;   /* chain in q->hash */
    char id[ENV_ID_LEN + 1];
    int loaded;
    int announced;          /* its event=new line is logged */
    int unsaved;            /* results in env not yet durable: keep it loaded */
    long long dirty_ms;     /* io_now_ms() of its first result not yet written; 0 = none */
    struct envelope *env;   /* while loaded (msg_load), else NULL */
    unsigned char *busy;    /* per recipient: a job is in flight */
};

struct qm_job {
    unsigned long long id;
    struct qm_msg *m;
    size_t rcpt;
    enum qm_chan chan;
    unsigned long long key;    /* its key (qm_channel.per_key) */
    int first;                 /* the first of its message's jobs in flight with that key */
    struct qm_job *next;
};

struct qm {
    struct config cfg;
    const char *root;
    struct qm_msg *msgs;
    struct qm_msg *msgs_tail;   /* new messages go last: dispatch is oldest first */
    size_t nmsgs;
    struct qm_msg **hash;   /* by id, hsize (a power of two) chains: qm_find is O(1) */
    size_t hsize;
    struct qm_job *jobs;
    unsigned long long next_job;
    struct qm_channel chan[QM_NCHAN];
    char rm[QM_RM_BATCH][ENV_ID_LEN + 1];   /* envelopes unlinked, bodies not yet */
    size_t nrm;
    long long rm_due;       /* io_now_ms() by which qm_remove_flush must run */
    size_t ndirty;          /* messages with dirty_ms set */
    int stopping;           /* SIGTERM: dispatch nothing new */
    int dead;               /* a deliverer went away: exit 111 when bookkeeping is done */
};

/* store.c */
int qm_env_load(const struct qm *q, const char *id, struct envelope *e);
int qm_env_save(const struct qm *q, const struct envelope *e);
int qm_msg_remove(struct qm *q, const char *id);
void qm_remove_flush(struct qm *q);
int qm_msg_open(const struct qm *q, const char *id);
/* the message for a DSN: all of it, or only its header section when it is
 * over QM_DSN_READ_MAX; *size is the whole message's size either way */
int qm_msg_read(const struct qm *q, const char *id, char **text, size_t *len, size_t *size);
void qm_sweep(struct qm *q, time_t now);
void qm_scan_todo(struct qm *q);
void qm_scan_all(struct qm *q);

/* sched.c */
struct qm_msg *qm_find(struct qm *q, const char *id);
struct qm_msg *qm_add(struct qm *q, const char *id);
void qm_dispatch(struct qm *q, time_t now);
void qm_result(struct qm *q, enum qm_chan ch, const char *rec, size_t len, time_t now);
void qm_channel_dead(struct qm *q, enum qm_chan ch, time_t now);
void qm_delete(struct qm *q, const char *id, time_t now);
void qm_flush(struct qm *q);
time_t qm_next_wake(const struct qm *q);
/* rewrite the envelopes whose results have waited QM_SAVE_DELAY_MS (all
 * of them if all); returns the io_now_ms() when the next is due, or -1 */
long long qm_save_due(struct qm *q, int all);
unsigned qm_inflight(const struct qm *q);

/* notify.c: queue the reports due in one message's recipient states;
 * each recipient whose report is queued (or not wanted) moves on: failed
 * to bounced, delivered/relayed/expanded to done, delayed to pending.
 * Returns 1 if the envelope changed. */
int qm_notify(struct qm *q, struct qm_msg *m, time_t now);

#endif
