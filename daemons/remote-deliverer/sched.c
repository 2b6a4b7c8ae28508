/* sched.c - remote-deliverer's loop: read jobs from fd 0, run each in its own
 * child (so one slow destination never blocks the others), at most
 * remote_per_domain at once per destination; a job beyond the limit waits
 * in memory (holding its message fd) until a slot frees. Children report
 * "<s|t|p><text>" through a pipe; a child that dies without a report counts
 * as a temporary failure. At EOF on fd 0 or SIGTERM: no new jobs, waiting
 * ones are answered "temporary", in-flight ones get a bounded grace time.
 * SIGHUP, or queue-manager's reload record on fd 0, re-reads the config. */
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

#include "err.h"
#include "log.h"
#include "remote.h"

#define MAX_CHILDREN 512        /* in flight at once, all destinations */
#define MAX_WAITING 10000       /* jobs held waiting for a slot */
#define DEST_MAX 300
#define GRACE_MAX 30            /* seconds for in-flight jobs at shutdown */

struct waiting {
    struct dp_job j;
    int fd;
    char dest[DEST_MAX];
    struct waiting *next;
};

struct child {
    pid_t pid;
    int fd;                      /* read end of its result pipe */
    unsigned long long job;
    char id[DP_ID_LEN + 1];
    char dest[DEST_MAX];
    char to[DP_ADDR_MAX + 1];
    size_t got;
    char b[DP_FIELD_MAX + 2];
};

static struct child kids[MAX_CHILDREN];
static size_t nkids;
static struct waiting *whead, *wtail;
static size_t nwaiting;
static int sigpipe_fds[2] = { -1, -1 };
static volatile sig_atomic_t got_hup, got_term;

static void on_signal(int sig)
{
    int e = errno;
    if (sig == SIGHUP) got_hup = 1;
    else got_term = 1;
    if (write(sigpipe_fds[1], "x", 1) < 0) {}
    errno = e;
}

static void send_result(unsigned long long job, const char *id, const char *to, enum dp_status s,
                        const char *text)
{
    char safe[DP_ADDR_MAX * 4 + 8];
    char shown[DP_FIELD_MAX + 1];
    snprintf(shown, sizeof shown, "%s", text);      /* what the record carries */
    log_info(id, "job=%llu to=%s result=%c text=%s", job, log_safe(safe, sizeof safe, to, strlen(to)),
             (char)s, shown);
    if (!dp_send_result(0, job, s, text))
        log_error(id, "job=%llu cannot send result: %s", job, strerror(errno));
}

static size_t dest_count(const char *dest)
{
    size_t n = 0;
    for (size_t i = 0; i < nkids; i++)
        if (!strcmp(kids[i].dest, dest)) n++;
    return n;
}

static void start_child(struct remote_conf *rc, const struct dp_job *j, int msgfd, const char *dest)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) {
        send_result(j->job, j->id, j->rcpt, DP_TEMPORARY, "4.3.0 pipe failed");
        close(msgfd);
        return;
    }
    pid_t pid = fork();
    if (pid < 0) {
        close(p[0]); close(p[1]); close(msgfd);
        send_result(j->job, j->id, j->rcpt, DP_TEMPORARY, "4.3.0 fork failed");
        return;
    }
    if (!pid) {
        char b[DP_FIELD_MAX + 2];
        close(p[0]);
        close(0);
        for (size_t i = 0; i < nkids; i++) close(kids[i].fd);
        for (struct waiting *w = whead; w; w = w->next) close(w->fd);
        signal(SIGHUP, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        /* every wait is bounded; this bounds the sum (a server that reads 1 byte a minute) */
        alarm((unsigned)(rc->cfg.remote_timeout * 20 + rc->cfg.remote_connect_timeout * 4));
        enum dp_status s = remote_deliver(rc, j, msgfd, b + 1, sizeof b - 1);
        b[0] = (char)s;
        size_t n = strlen(b);
        _exit(write(p[1], b, n) == (ssize_t)n ? 0 : 111);
    }
    close(p[1]);
    close(msgfd);
    struct child *k = &kids[nkids++];
    memset(k, 0, sizeof *k);
    k->pid = pid;
    k->fd = p[0];
    k->job = j->job;
    memcpy(k->id, j->id, sizeof k->id);
    snprintf(k->dest, sizeof k->dest, "%s", dest);
    memcpy(k->to, j->rcpt, sizeof k->to);
}

/* start waiting jobs whose destination has a free slot, oldest first */
static void start_waiting(struct remote_conf *rc)
{
    struct waiting **pp = &whead, *prev = NULL;
    while (*pp && nkids < MAX_CHILDREN) {
        struct waiting *w = *pp;
        if (dest_count(w->dest) >= rc->cfg.remote_per_domain) { prev = w; pp = &w->next; continue; }
        *pp = w->next;
        if (wtail == w) wtail = prev;
        nwaiting--;
        start_child(rc, &w->j, w->fd, w->dest);
        free(w);
    }
}

static void new_job(struct remote_conf *rc, const char *rec, size_t len, int msgfd)
{
    static struct dp_job j;
    char dest[DEST_MAX];
    if (!dp_job_decode(&j, rec, len)) {
        log_error(NULL, "refused malformed job record");
        if (msgfd >= 0) close(msgfd);
        return;
    }
    if (msgfd < 0) { send_result(j.job, j.id, j.rcpt, DP_TEMPORARY, "4.3.0 job without message"); return; }
    if (!remote_destination(rc, j.rcpt, dest, sizeof dest)) {
        send_result(j.job, j.id, j.rcpt, DP_PERMANENT, "5.1.3 recipient address has no domain");
        close(msgfd);
        return;
    }
    if (!whead && nkids < MAX_CHILDREN && dest_count(dest) < rc->cfg.remote_per_domain) {
        start_child(rc, &j, msgfd, dest);
        return;
    }
    struct waiting *w = nwaiting < MAX_WAITING ? malloc(sizeof *w) : NULL;
    if (!w) {
        send_result(j.job, j.id, j.rcpt, DP_TEMPORARY, "4.3.2 too many remote deliveries waiting");
        close(msgfd);
        return;
    }
    w->j = j;
    w->fd = msgfd;
    memcpy(w->dest, dest, sizeof w->dest);
    w->next = NULL;
    if (wtail) wtail->next = w; else whead = w;
    wtail = w;
    nwaiting++;
    start_waiting(rc);   /* others may be startable */
}

/* the child's pipe is readable: collect; at EOF reap it and answer */
static void child_input(size_t i)
{
    struct child *k = &kids[i];
    ssize_t n = read(k->fd, k->b + k->got, sizeof k->b - 1 - k->got);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
    if (n > 0) { k->got += (size_t)n; if (k->got < sizeof k->b - 1) return; }
    int ws = 0;
    while (waitpid(k->pid, &ws, 0) < 0 && errno == EINTR) {}
    close(k->fd);
    k->b[k->got] = 0;
    if (k->got >= 2 && (k->b[0] == DP_SUCCESS || k->b[0] == DP_TEMPORARY || k->b[0] == DP_PERMANENT))
        send_result(k->job, k->id, k->to, (enum dp_status)k->b[0], k->b + 1);
    else if (WIFSIGNALED(ws) && WTERMSIG(ws) == SIGALRM)
        send_result(k->job, k->id, k->to, DP_TEMPORARY, "4.4.2 delivery took too long");
    else
        send_result(k->job, k->id, k->to, DP_TEMPORARY, "4.3.0 delivery process died");
    kids[i] = kids[--nkids];
}

static void drop_waiting(void)
{
    while (whead) {
        struct waiting *w = whead;
        whead = w->next;
        send_result(w->j.job, w->j.id, w->j.rcpt, DP_TEMPORARY, "4.3.2 remote-deliverer stopping");
        close(w->fd);
        free(w);
    }
    wtail = NULL;
    nwaiting = 0;
}

static void kill_children(void)
{
    for (size_t i = 0; i < nkids; i++) kill(kids[i].pid, SIGKILL);
    while (nkids) {
        struct child *k = &kids[nkids - 1];
        while (waitpid(k->pid, NULL, 0) < 0 && errno == EINTR) {}
        close(k->fd);
        send_result(k->job, k->id, k->to, DP_TEMPORARY, "4.3.2 remote-deliverer stopped during delivery");
        nkids--;
    }
}

static void setup_signals(void)
{
    struct sigaction sa;
    if (pipe2(sigpipe_fds, O_CLOEXEC | O_NONBLOCK) < 0) die_temp_sys("pipe");
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

/* SIGHUP or queue-manager's reload record: postern.conf, conf/routes and
 * conf/relay-auth, all or nothing. Bad files keep the old configuration (the
 * error names file:line). Children already running keep the copy they were
 * forked with; jobs started from now on, waiting ones included, use the new. */
static void reload(struct remote_conf *rc, const char *root, const char *from)
{
    static struct remote_conf nc;
    char err[512];
    if (remote_conf_load(&nc, root, err, sizeof err)) {
        *rc = nc;
        log_info(NULL, "event=reload from=%s routes=%zu per_domain=%llu", from, rc->routes.n,
                 rc->cfg.remote_per_domain);
    } else {
        log_error(NULL, "event=reload_refused from=%s keeping=old why=%s", from, err);
    }
    explicit_bzero(&nc.auth, sizeof nc.auth);
}

void sched_run(struct remote_conf *rc, const char *root)
{
    static struct pollfd p[MAX_CHILDREN + 2];
    int stopping = 0;
    time_t deadline = 0;
    setup_signals();
    for (;;) {
        if (got_term && !stopping) { stopping = 1; log_info(NULL, "event=stop reason=SIGTERM in_flight=%zu", nkids); }
        if (stopping && !deadline) {
            unsigned long long g = rc->cfg.remote_timeout < GRACE_MAX ? rc->cfg.remote_timeout : GRACE_MAX;
            deadline = time(NULL) + (time_t)g;
            drop_waiting();
        }
        if (stopping && !nkids) return;
        if (stopping && time(NULL) >= deadline) { kill_children(); return; }
        size_t np = 0;
        p[np++] = (struct pollfd){ sigpipe_fds[0], POLLIN, 0 };
        p[np++] = (struct pollfd){ stopping ? -1 : 0, POLLIN, 0 };
        for (size_t i = 0; i < nkids; i++) p[np++] = (struct pollfd){ kids[i].fd, POLLIN, 0 };
        int r = poll(p, np, stopping ? 1000 : -1);
        if (r < 0) { if (errno == EINTR) continue; die_temp_sys("poll"); }
        if (p[0].revents) { char b[64]; while (read(sigpipe_fds[0], b, sizeof b) > 0) {} }
        if (got_hup) { got_hup = 0; reload(rc, root, "signal"); }
        for (size_t i = np; i-- > 2;)   /* backwards: child_input moves the last one */
            if (p[i].revents) child_input(i - 2);
        if (!stopping && p[1].revents) {
            char rec[DP_RECORD_MAX + 1];
            size_t len;
            int fd = -1;
            if (dp_recv(0, rec, sizeof rec, &len, &fd)) {
                if (fd < 0 && dp_reload_decode(rec, len)) reload(rc, root, "queue-manager");
                else new_job(rc, rec, len, fd);   /* anything else: a job, or refused as before */
            }
            else if (errno == EMSGSIZE || errno == EPROTO) log_error(NULL, "bad job record: %s", strerror(errno));
            else if (errno != EAGAIN && errno != EINTR) {
                stopping = 1;
                log_info(NULL, "event=stop reason=%s in_flight=%zu", errno == EPIPE ? "eof" : strerror(errno), nkids);
            }
        }
        if (!stopping) start_waiting(rc);
    }
}
