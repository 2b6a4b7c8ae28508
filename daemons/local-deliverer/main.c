/* local-deliverer - queue-manager's local delivery spawner (root). Reads job
 * records from fd 0 (a SOCK_SEQPACKET socket, docs/INTERFACES.md), resolves
 * each job here (local_plan: aliases, mailboxes, never uid 0), hands the
 * common one (one mailbox, no forward) to a long-lived worker running as the
 * mailbox's uid (pool.c), runs any other in a child of its own (local_run),
 * and sends one result record per job. It never waits on a delivery:
 * workers answer on their sockets and children through pipes, all watched by
 * poll.
 *
 * postern.conf, conf/aliases and conf/mailboxes are parsed once and stat()ed
 * before every job; one that changed is read again, so edits apply to the
 * next job without a reload (local.h, struct local_tables). A reload (SIGHUP
 * or queue-manager's reload record) reads all three again at the next job
 * and retires the workers, busy ones after their job. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "deliver_proto.h"
#include "err.h"
#include "log.h"
#include "local.h"
#include "pool.h"

#define MAX_CHILDREN 256

struct child {
    pid_t pid;
    int fd;                       /* read end of its result pipe */
    unsigned long long job;
    time_t started;
    int killed;
    int expanded;                 /* an alias's members: a success is "expanded" */
    char id[DP_ID_LEN + 1];
    size_t got;
    char b[DP_FIELD_MAX + 2];
};

static struct local_tables tab;
static struct child kids[MAX_CHILDREN];
static size_t nkids;
static struct pool pool;
static volatile sig_atomic_t got_hup, got_term;

/* SIGTERM is noted and otherwise ignored, by this process and (inherited
 * across fork) by its workers and children: a stop that signals every
 * process at once (systemd's KillMode=control-group) would otherwise kill
 * deliveries half done, leaving their files in Maildir/tmp, the jobs
 * deferred for their retry interval and some delivered twice.
 * queue-manager, signalled too, stops dispatching and waits for the
 * results in flight; its exit is our end of file on fd 0, after which we
 * finish the deliveries in flight and leave, as at any end of file. */
static void on_signal(int sig) { if (sig == SIGHUP) got_hup = 1; else got_term = 1; }

static void send_result(unsigned long long job, enum dp_status s, const char *text)
{
    if (!dp_send_result(0, job, s, text))
        log_error(NULL, "job=%llu error=\"cannot send result: %s\"", job, strerror(errno));
}

/* the job in a child of its own, which reports through a pipe */
static void fork_job(const struct dp_job *j, const struct local_job *lj, int msgfd)
{
    int p[2];
    if (nkids >= MAX_CHILDREN) { send_result(j->job, DP_TEMPORARY, "4.3.2 too many deliveries at once"); return; }
    if (pipe2(p, O_CLOEXEC) < 0) { send_result(j->job, DP_TEMPORARY, "4.3.0 pipe failed"); return; }
    pid_t pid = fork();
    if (pid < 0) {
        close(p[0]); close(p[1]);
        send_result(j->job, DP_TEMPORARY, "4.3.0 fork failed");
        return;
    }
    if (!pid) {
        struct dp_result r;
        setpgid(0, 0);            /* so a stuck job is killed with its helpers */
        close(p[0]);
        pool_close_inherited(&pool);   /* or a retired worker would never see end of file */
        int null = open("/dev/null", O_RDWR | O_CLOEXEC);   /* the job socket is not the child's */
        if (null < 0 || dup2(null, 0) < 0) _exit(EXIT_TEMP);
        signal(SIGHUP, SIG_DFL);
        /* the queue-inject an alias or a forward execs keeps this mask
         * (its handler it would not): one killed by a stop's SIGTERM
         * failed the job ("forwarding failed", deferred) */
        sigset_t term;
        sigemptyset(&term);
        sigaddset(&term, SIGTERM);
        sigprocmask(SIG_BLOCK, &term, NULL);
        memset(&r, 0, sizeof r);
        local_run(&tab, j, lj, msgfd, &r);
        char b[DP_FIELD_MAX + 2];
        size_t n = strlen(r.text);
        b[0] = (char)r.status;
        memcpy(b + 1, r.text, n);
        _exit(write(p[1], b, n + 1) == (ssize_t)(n + 1) ? 0 : 111);
    }
    close(p[1]);
    struct child *k = &kids[nkids++];
    memset(k, 0, sizeof *k);
    k->pid = pid;
    k->fd = p[0];
    k->job = j->job;
    k->started = time(NULL);
    k->expanded = lj->kind == LOCAL_MANY;
    memcpy(k->id, j->id, sizeof k->id);
}

static void start_job(const char *rec, size_t len, int msgfd)
{
    struct dp_job j;
    struct dp_result r;
    struct local_job lj;
    if (!dp_job_decode(&j, rec, len)) {
        log_error(NULL, "error=\"refused malformed job record\"");
        return;
    }
    if (msgfd < 0) { send_result(j.job, DP_TEMPORARY, "4.3.0 job without message"); return; }
    local_tables_refresh(&tab, j.id);
    memset(&r, 0, sizeof r);
    enum local_kind k = local_plan(&tab, &j, msgfd, &lj, &r);
    if (k == LOCAL_DONE) { send_result(j.job, r.status, r.text); return; }
    if (k == LOCAL_ONE) {
        struct dp_mbox m;
        local_mbox_job(&tab.cfg, &j, &lj.mb, &m);
        if (pool_submit(&pool, &m, msgfd)) return;
        log_warn(j.id, "event=no_worker error=\"%s\" fallback=fork", strerror(errno));
    }
    fork_job(&j, &lj, msgfd);
    local_job_free(&lj);
}

static void kill_stuck(void)
{
    time_t now = time(NULL);
    for (size_t i = 0; i < nkids; i++)
        if (!kids[i].killed && now - kids[i].started > LOCAL_JOB_TIME_MAX) {
            log_error(kids[i].id, "job=%llu error=\"killed after %ds\"", kids[i].job, LOCAL_JOB_TIME_MAX);
            kill(-kids[i].pid, SIGKILL);
            kill(kids[i].pid, SIGKILL);
            kids[i].killed = 1;
        }
}

/* the child's pipe is readable: collect; at EOF reap it and answer */
static void child_input(size_t i)
{
    struct child *k = &kids[i];
    ssize_t n = read(k->fd, k->b + k->got, sizeof k->b - 1 - k->got);
    if (n < 0 && errno == EINTR) return;
    if (n > 0) { k->got += (size_t)n; if (k->got < sizeof k->b - 1) return; }
    int ws = 0;
    while (waitpid(k->pid, &ws, 0) < 0 && errno == EINTR) {}
    close(k->fd);
    k->b[k->got] = 0;
    if (k->got >= 2 && k->b[0] == DP_SUCCESS && k->expanded) {
        if (!dp_send_result_action(0, k->job, DP_SUCCESS, DP_ACTION_EXPANDED, k->b + 1))
            log_error(NULL, "job=%llu error=\"cannot send result: %s\"", k->job, strerror(errno));
    } else if (k->got >= 2 && (k->b[0] == DP_SUCCESS || k->b[0] == DP_TEMPORARY || k->b[0] == DP_PERMANENT))
        send_result(k->job, (enum dp_status)k->b[0], k->b + 1);
    else
        send_result(k->job, DP_TEMPORARY, "4.3.0 delivery process died");
    kids[i] = kids[--nkids];
}

/* a worker's socket is readable: its result (or its death), which the
 * worker has logged if it was a failure */
static void worker_input(int fd)
{
    struct dp_result r;
    if (pool_input(&pool, fd, &r)) send_result(r.job, r.status, r.text);
}

/* SIGHUP or queue-manager's reload record. Jobs see changed files anyway
 * (local_tables_refresh); a reload reads all three again regardless, and
 * retires the workers, since conf/mailboxes may now give a name another
 * uid. */
static void reload(const char *root, const char *from)
{
    static struct config nc;
    char err[512];
    size_t n = pool_retire_all(&pool, "reload");
    local_tables_forget(&tab);
    if (config_load(&nc, root, err, sizeof err)) {
        tab.cfg = nc;
        log_info(NULL, "event=reload from=%s files=on-change workers_retired=%zu", from, n);
    } else {
        log_error(NULL, "event=reload_refused from=%s keeping=old why=\"%s\"", from, err);
    }
}

/* one record from queue-manager; 0 at end of file */
static int job_input(const char *root)
{
    char rec[DP_RECORD_MAX + 1];
    size_t len;
    int fd;
    if (dp_recv(0, rec, sizeof rec, &len, &fd)) {
        if (fd < 0 && dp_reload_decode(rec, len)) reload(root, "queue-manager");
        else start_job(rec, len, fd);   /* anything else: a job, or refused as before */
        if (fd >= 0) close(fd);
    } else if (errno == EPIPE) {
        pool_retire_all(&pool, "eof");
        return 0;
    } else if (errno == EMSGSIZE || errno == EPROTO) {
        log_error(NULL, "error=\"refused record: %s\"", strerror(errno));
    } else if (errno != EINTR && errno != EAGAIN) {
        /* the job socket itself is unusable (not a socket, closed): no
         * record will ever come, so stop as at end of file */
        log_error(NULL, "event=stop reason=error error=\"%s\"", strerror(errno));
        pool_retire_all(&pool, "eof");
        return 0;
    }
    return 1;
}

/* one round of poll over the job socket, the children and the workers */
static void serve_once(const char *root, int *eof)
{
    struct pollfd p[1 + MAX_CHILDREN + POOL_SLOTS];
    size_t np = 0;
    int timeout = pool_tick(&pool);
    if (nkids && (timeout < 0 || timeout > 10000)) timeout = 10000;
    /* with every child slot taken, no job is read: queue-manager's
     * socket fills and it waits (its sends end the pass at a full
     * socket), where a job read now could only be deferred with "4.3.2
     * too many deliveries at once" for its retry interval (seen with
     * local_concurrency 1000: 124 of 1000 recipients deferred, all of one
     * user, when the 64 workers and 256 children were busy) */
    if (!*eof) p[np++] = (struct pollfd){ 0, nkids < MAX_CHILDREN ? POLLIN : 0, 0 };
    size_t kbase = np;
    for (size_t i = 0; i < nkids; i++) p[np++] = (struct pollfd){ kids[i].fd, POLLIN, 0 };
    size_t wbase = np;
    np += pool_pollfds(&pool, p + np);
    int r = poll(p, np, timeout);
    kill_stuck();
    if (got_hup) { got_hup = 0; reload(root, "signal"); }
    if (got_term == 1) {
        got_term = 2;
        log_info(NULL, "event=sigterm in_flight=%zu action=finish-at-eof", nkids + pool_busy(&pool));
    }
    if (r < 0) { if (errno == EINTR) return; die_temp_sys("poll"); }
    for (size_t i = np; i-- > wbase;)
        if (p[i].revents) worker_input(p[i].fd);
    for (size_t i = wbase; i-- > kbase;)   /* backwards: child_input moves the last one */
        if (p[i].revents) child_input(i - kbase);
    if (!*eof && p[0].revents && !job_input(root)) *eof = 1;
}

int main(int argc, char **argv)
{
    char err[512];
    log_init("local-deliverer");
    const char *root = config_root(argc > 1 ? argv[1] : NULL);
    if (!root || argc > 2) die_perm("usage: local-deliverer ROOT (job socket on fd 0)");
    static struct config cfg;
    if (!config_load(&cfg, root, err, sizeof err)) die_perm("%s", err);
    local_tables_init(&tab, &cfg);
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGHUP, &sa, NULL);
    sa.sa_flags = SA_RESTART;     /* a child's read, write or waitpid goes on */
    sigaction(SIGTERM, &sa, NULL);
    pool_init(&pool);
    int eof = 0;
    while (!eof || nkids || pool_busy(&pool)) serve_once(root, &eof);
    return EXIT_OK;
}
