/* pool.c - local-deliverer's mailbox workers (see pool.h). */
#include "pool.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "err.h"
#include "io.h"
#include "local.h"
#include "log.h"

#define WORKER_SOCK 3             /* the worker's end of its socket */

/* ---- the worker (a child, as the mailbox's uid:gid) ---- */

static void worker_serve(int sock, uid_t uid, gid_t gid)
{
    for (;;) {
        char rec[DP_RECORD_MAX + 1];
        struct dp_mbox m;
        struct dp_result r;
        size_t len;
        int msgfd;
        if (!dp_recv(sock, rec, sizeof rec, &len, &msgfd)) {
            if (errno == EINTR || errno == EAGAIN) continue;
            _exit(errno == EPIPE ? EXIT_OK : EXIT_TEMP);      /* end of file: retired */
        }
        if (msgfd < 0 || !dp_mbox_decode(&m, rec, len)) {
            log_error(NULL, "event=worker_refused uid=%lu why=malformed-record", (unsigned long)uid);
            _exit(EXIT_TEMP);           /* the root process reports the job as died */
        }
        memset(&r, 0, sizeof r);
        int foreign = m.uid != uid || m.gid != gid;
        if (foreign) {
            log_error(m.id, "event=worker_refused uid=%lu gid=%lu job_uid=%lu job_gid=%lu", (unsigned long)uid,
                      (unsigned long)gid, (unsigned long)m.uid, (unsigned long)m.gid);
            r.status = DP_TEMPORARY;
            snprintf(r.text, sizeof r.text, "4.3.0 mailbox worker of another user");
        } else {
            local_mbox_deliver(&m, msgfd, &r);
            local_target_log(m.id, &r);
        }
        close(msgfd);
        if (!dp_send_result(sock, m.job, r.status, r.text) || foreign) _exit(EXIT_TEMP);
    }
}

/* Drop to uid:gid before reading anything, then keep only our socket (as
 * WORKER_SOCK), stderr and /dev/null on 0 and 1: no descriptor of the root
 * process (its job socket, the other workers' sockets, message files). */
static void __attribute__((noreturn)) worker_main(int sock, uid_t uid, gid_t gid, unsigned long long first)
{
    struct dp_result r;
    memset(&r, 0, sizeof r);
    signal(SIGHUP, SIG_IGN);      /* reloads are the root process's business */
    if (!local_mbox_become(uid, gid, &r)) {
        log_error(NULL, "event=worker_failed uid=%lu gid=%lu why=\"%s\"", (unsigned long)uid, (unsigned long)gid,
                  r.text);
        dp_send_result(sock, first, r.status, r.text);
        _exit(EXIT_TEMP);
    }
    int s = fcntl(sock, F_DUPFD_CLOEXEC, 10);
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (s < 0 || null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 || dup2(s, WORKER_SOCK) < 0) {
        log_error(NULL, "event=worker_failed uid=%lu why=\"descriptors: %s\"", (unsigned long)uid, strerror(errno));
        _exit(EXIT_TEMP);
    }
    closefrom(WORKER_SOCK + 1);   /* as smtp_monitor and tls_spawn do before exec */
    worker_serve(WORKER_SOCK, uid, gid);
    _exit(EXIT_TEMP);
}

/* ---- the root process's side ---- */

void pool_init(struct pool *p) { memset(p, 0, sizeof *p); }

static size_t live(const struct pool *p)
{
    size_t n = 0;
    for (size_t i = 0; i < p->n; i++) n += p->w[i].state != POOL_GONE;
    return n;
}

size_t pool_busy(const struct pool *p)
{
    size_t n = 0;
    for (size_t i = 0; i < p->n; i++) n += p->w[i].state == POOL_BUSY;
    return n;
}

/* Close our end: the worker reads end of file and exits; reaped in
 * pool_tick. Logged, except the death of a busy worker: its job's result
 * ("4.3.0 delivery process died", in queue-manager's log) says it, and the
 * root process writes nothing on a delivery's path (test_faults counts the
 * Maildir writer's write calls). */
static void retire(struct pool_worker *w, const char *why)
{
    if (w->fd >= 0) close(w->fd);
    w->fd = -1;
    w->state = POOL_GONE;
    w->since = io_now_ms();
    if (why)
        log_info(NULL, "event=worker_retired pid=%ld uid=%lu gid=%lu jobs=%u why=%s", (long)w->pid,
                 (unsigned long)w->uid, (unsigned long)w->gid, w->jobs, why);
}

static struct pool_worker *spawn(struct pool *p, uid_t uid, gid_t gid, unsigned long long job)
{
    int sv[2];
    if (p->n >= POOL_SLOTS || live(p) >= POOL_MAX) { errno = EAGAIN; return NULL; }
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) return NULL;
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(sv[0]);
        close(sv[1]);
        errno = e;
        return NULL;
    }
    if (!pid) worker_main(sv[1], uid, gid, job);
    close(sv[1]);
    struct pool_worker *w = &p->w[p->n++];
    memset(w, 0, sizeof *w);
    w->pid = pid;
    w->fd = sv[0];
    w->uid = uid;
    w->gid = gid;
    w->state = POOL_IDLE;
    w->since = io_now_ms();
    return w;
}

/* an idle worker of (uid, gid), or a new one; at POOL_MAX the worker idle
 * longest (of another user: there is none of this one) makes room */
static struct pool_worker *worker_for(struct pool *p, uid_t uid, gid_t gid, unsigned long long job)
{
    struct pool_worker *oldest = NULL;
    for (size_t i = 0; i < p->n; i++) {
        struct pool_worker *w = &p->w[i];
        if (w->state != POOL_IDLE) continue;
        if (w->uid == uid && w->gid == gid) return w;
        if (!oldest || w->since < oldest->since) oldest = w;
    }
    if (live(p) >= POOL_MAX && oldest) retire(oldest, "room");
    return spawn(p, uid, gid, job);
}

int pool_submit(struct pool *p, const struct dp_mbox *m, int msgfd)
{
    char rec[DP_RECORD_MAX];
    size_t len;
    if (m->uid == 0 || m->gid == 0) { errno = EPERM; return 0; }   /* never a worker as root */
    if (!dp_mbox_encode(m, rec, sizeof rec, &len)) return 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        struct pool_worker *w = worker_for(p, m->uid, m->gid, m->job);
        if (!w) return 0;
        if (w->uid != m->uid || w->gid != m->gid) { errno = EPERM; return 0; }   /* cannot happen */
        if (dp_send(w->fd, rec, len, msgfd)) {
            w->state = POOL_BUSY;
            w->job = m->job;
            memcpy(w->id, m->id, sizeof w->id);
            w->since = io_now_ms();
            w->jobs++;
            return 1;
        }
        log_warn(m->id, "event=worker_unreachable pid=%ld error=\"%s\"", (long)w->pid, strerror(errno));
        kill(w->pid, SIGKILL);
        retire(w, "unreachable");
    }
    return 0;
}

size_t pool_pollfds(const struct pool *p, struct pollfd *fds)
{
    size_t n = 0;
    for (size_t i = 0; i < p->n; i++)
        if (p->w[i].fd >= 0) fds[n++] = (struct pollfd){ p->w[i].fd, POLLIN, 0 };
    return n;
}

int pool_input(struct pool *p, int fd, struct dp_result *r)
{
    struct pool_worker *w = NULL;
    for (size_t i = 0; i < p->n && !w; i++)
        if (p->w[i].fd == fd) w = &p->w[i];
    if (!w) return 0;
    char rec[DP_RECORD_MAX + 1];
    size_t len;
    int extra;
    if (dp_recv(fd, rec, sizeof rec, &len, &extra)) {
        struct dp_result got;
        if (extra >= 0) close(extra);
        else if (w->state == POOL_BUSY && dp_result_decode(&got, rec, len) && got.job == w->job) {
            *r = got;
            w->state = POOL_IDLE;
            w->since = io_now_ms();
            if (w->retire) retire(w, w->retire);
            else if (w->jobs >= POOL_JOBS_MAX) retire(w, "jobs");
            return 1;
        }
        log_error(w->state == POOL_BUSY ? w->id : NULL, "event=worker_nonsense pid=%ld", (long)w->pid);
    } else if (errno == EINTR || errno == EAGAIN) {
        return 0;
    }
    /* end of file, an error or nonsense: this worker is done for */
    int busy = w->state == POOL_BUSY;
    kill(w->pid, SIGKILL);        /* not reaped yet: the pid is still ours */
    retire(w, busy ? NULL : "died");
    if (!busy) return 0;
    r->job = w->job;
    r->status = DP_TEMPORARY;
    snprintf(r->text, sizeof r->text, "4.3.0 delivery process died");
    return 1;
}

int pool_tick(struct pool *p)
{
    long long now = io_now_ms(), next = -1;
    for (size_t i = 0; i < p->n;) {
        struct pool_worker *w = &p->w[i];
        long long due = -1;
        if (w->state == POOL_BUSY && !w->killed) {
            if (now - w->since > LOCAL_JOB_TIME_MAX * 1000LL) {
                log_error(w->id, "job=%llu error=\"killed after %ds\"", w->job, LOCAL_JOB_TIME_MAX);
                kill(w->pid, SIGKILL);   /* its end of file reports the job */
                w->killed = 1;
            } else {
                due = w->since + LOCAL_JOB_TIME_MAX * 1000LL + 1;
            }
        } else if (w->state == POOL_IDLE) {
            if (now - w->since >= POOL_IDLE_MS) retire(w, "idle");
            else due = w->since + POOL_IDLE_MS;
        }
        if (w->state == POOL_GONE) {
            int ws;
            pid_t r = waitpid(w->pid, &ws, WNOHANG);
            if (r == w->pid || (r < 0 && errno == ECHILD)) {
                p->w[i] = p->w[--p->n];
                continue;
            }
            if (!w->killed && now - w->since > POOL_REAP_MS) {
                kill(w->pid, SIGKILL);
                w->killed = 1;
            }
            due = now + 50;
        }
        if (due >= 0 && (next < 0 || due < next)) next = due;
        i++;
    }
    if (next < 0) return -1;
    if (next <= now) return 0;
    return next - now > 60000 ? 60000 : (int)(next - now);
}

size_t pool_retire_all(struct pool *p, const char *why)
{
    size_t n = 0;
    for (size_t i = 0; i < p->n; i++) {
        struct pool_worker *w = &p->w[i];
        if (w->state == POOL_IDLE) { retire(w, why); n++; }
        else if (w->state == POOL_BUSY && !w->retire) { w->retire = why; n++; }
    }
    return n;
}

void pool_close_inherited(struct pool *p)
{
    for (size_t i = 0; i < p->n; i++)
        if (p->w[i].fd >= 0) {
            close(p->w[i].fd);
            p->w[i].fd = -1;
        }
}
