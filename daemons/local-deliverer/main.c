/* local-deliverer - queue-manager's local delivery spawner (root). Reads job
 * records from fd 0 (a SOCK_SEQPACKET socket, docs/INTERFACES.md), runs each
 * job in its own child (local.c), and sends one result record per job. It
 * never waits on a child: children report through pipes watched by poll. */
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

#define MAX_CHILDREN 256
#define JOB_TIME_MAX 900          /* seconds: a delivery still running then is killed */

struct child {
    pid_t pid;
    int fd;                       /* read end of its result pipe */
    unsigned long long job;
    time_t started;
    int killed;
    char id[DP_ID_LEN + 1];
    size_t got;
    char b[DP_FIELD_MAX + 2];
};

static struct config cfg;
static struct child kids[MAX_CHILDREN];
static size_t nkids;
static volatile sig_atomic_t got_hup;

static void on_hup(int sig) { (void)sig; got_hup = 1; }

static void send_result(unsigned long long job, enum dp_status s, const char *text)
{
    if (!dp_send_result(0, job, s, text))
        log_error(NULL, "job=%llu cannot send result: %s", job, strerror(errno));
}

static void start_job(const char *rec, size_t len, int msgfd)
{
    struct dp_job j;
    int p[2];
    if (!dp_job_decode(&j, rec, len)) {
        log_error(NULL, "refused malformed job record");
        return;
    }
    if (msgfd < 0) { send_result(j.job, DP_TEMPORARY, "4.3.0 job without message"); return; }
    if (nkids >= MAX_CHILDREN) { send_result(j.job, DP_TEMPORARY, "4.3.2 too many deliveries at once"); return; }
    if (pipe2(p, O_CLOEXEC) < 0) { send_result(j.job, DP_TEMPORARY, "4.3.0 pipe failed"); return; }
    pid_t pid = fork();
    if (pid < 0) {
        close(p[0]); close(p[1]);
        send_result(j.job, DP_TEMPORARY, "4.3.0 fork failed");
        return;
    }
    if (!pid) {
        struct dp_result r;
        setpgid(0, 0);            /* so a stuck job is killed with its helpers */
        close(p[0]);
        int null = open("/dev/null", O_RDWR | O_CLOEXEC);   /* the job socket is not the child's */
        if (null < 0 || dup2(null, 0) < 0) _exit(EXIT_TEMP);
        signal(SIGHUP, SIG_DFL);
        memset(&r, 0, sizeof r);
        /* postern.conf is read afresh for every job (as aliases and
         * mailboxes are), so its reload record needs no work here */
        struct config now;
        char err[512];
        if (config_load(&now, cfg.root, err, sizeof err)) cfg = now;
        else log_error(j.id, "config: %s (using the one from start)", err);
        local_deliver(&cfg, &j, msgfd, &r);
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
    k->job = j.job;
    k->started = time(NULL);
    memcpy(k->id, j.id, sizeof k->id);
}

static void kill_stuck(void)
{
    time_t now = time(NULL);
    for (size_t i = 0; i < nkids; i++)
        if (!kids[i].killed && now - kids[i].started > JOB_TIME_MAX) {
            log_error(kids[i].id, "job=%llu killed after %ds", kids[i].job, JOB_TIME_MAX);
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
    if (k->got >= 2 && (k->b[0] == DP_SUCCESS || k->b[0] == DP_TEMPORARY || k->b[0] == DP_PERMANENT))
        send_result(k->job, (enum dp_status)k->b[0], k->b + 1);
    else
        send_result(k->job, DP_TEMPORARY, "4.3.0 delivery process died");
    kids[i] = kids[--nkids];
}

/* SIGHUP or queue-manager's reload record. Every job's child reads
 * postern.conf, conf/aliases and conf/mailboxes afresh, so this only
 * refreshes the copy a child falls back on and says so in the log. */
static void reload(const char *root, const char *from)
{
    struct config nc;
    char err[512];
    if (config_load(&nc, root, err, sizeof err)) {
        cfg = nc;
        log_info(NULL, "event=reload from=%s files=per-job", from);
    } else {
        log_error(NULL, "event=reload_refused from=%s keeping=old why=%s", from, err);
    }
}

int main(int argc, char **argv)
{
    char err[512];
    log_init("local-deliverer");
    const char *root = config_root(argc > 1 ? argv[argc - 1] : NULL);
    if (!root) die_perm("usage: local-deliverer ROOT (job socket on fd 0)");
    if (!config_load(&cfg, root, err, sizeof err)) die_perm("%s", err);
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_hup;
    sigaction(SIGHUP, &sa, NULL);
    int eof = 0;
    while (!eof || nkids) {
        struct pollfd p[MAX_CHILDREN + 1];
        size_t np = 0;
        if (!eof) p[np++] = (struct pollfd){ 0, POLLIN, 0 };
        for (size_t i = 0; i < nkids; i++) p[np++] = (struct pollfd){ kids[i].fd, POLLIN, 0 };
        int r = poll(p, np, nkids ? 10000 : -1);
        kill_stuck();
        if (got_hup) { got_hup = 0; reload(root, "signal"); }
        if (r < 0) { if (errno == EINTR) continue; die_temp_sys("poll"); }
        size_t base = eof ? 0 : 1;
        for (size_t i = np; i-- > base;)   /* backwards: child_input moves the last one */
            if (p[i].revents) child_input(i - base);
        if (!eof && p[0].revents) {
            char rec[DP_RECORD_MAX + 1];
            size_t len;
            int fd;
            if (dp_recv(0, rec, sizeof rec, &len, &fd)) {
                if (fd < 0 && dp_reload_decode(rec, len)) reload(root, "queue-manager");
                else start_job(rec, len, fd);   /* anything else: a job, or refused as before */
                if (fd >= 0) close(fd);
            } else if (errno == EPIPE) {
                eof = 1;
            } else if (errno != EINTR && errno != EAGAIN) {
                log_error(NULL, "refused record: %s", strerror(errno));
            }
        }
    }
    return EXIT_OK;
}
