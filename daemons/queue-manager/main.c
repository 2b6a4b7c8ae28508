/* queue-manager - postern's scheduler (DESIGN.md section 2, docs/INTERFACES.md).
 * Started as root: spawns ROOT/bin/local-deliverer (and remote-deliverer if
 * it exists) on SOCK_SEQPACKET pairs, drops to user_queue, then loops:
 * woken by the trigger FIFO (one byte = look at todo/, "F" = flush,
 * "D<ID>\n" = delete a message), by deliverer results and by its timers.
 * SIGHUP reloads postern.conf and passes a reload record on to the
 * deliverers; SIGTERM stops dispatching, waits up to
 * QM_STOP_WAIT seconds for results in flight and exits 0. If a deliverer goes
 * away it finishes its bookkeeping and exits 111 so s6 restarts the trio. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "conf.h"
#include "deliver_proto.h"
#include "err.h"
#include "filesig.h"
#include "io.h"
#include "log.h"
#include "privdrop.h"
#include "qm.h"
#include "queue_path.h"

#define QM_STOP_WAIT 10

static volatile sig_atomic_t got_hup, got_term;
static sigset_t old_mask;

static void on_signal(int sig) { if (sig == SIGHUP) got_hup = 1; else got_term = 1; }

static void signals(void)
{
    struct sigaction sa;
    sigset_t block;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&block);
    sigaddset(&block, SIGHUP);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigprocmask(SIG_BLOCK, &block, &old_mask);
}

static void spawn(struct qm *q, enum qm_chan ch, const char *prog)
{
    char path[4096];
    int sv[2];
    q->chan[ch].name = prog;
    q->chan[ch].sock = -1;
    snprintf(path, sizeof path, "%s/bin/%s", q->root, prog);
    if (access(path, X_OK) < 0) {
        if (ch == QM_LOCAL) die_temp_sys("%s", path);
        log_warn(NULL, "deliverer=%s status=absent note=\"remote recipients stay queued\"", prog);
        return;
    }
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) die_temp_sys("socketpair");
    pid_t pid = fork();
    if (pid < 0) die_temp_sys("fork");
    if (!pid) {
        sigprocmask(SIG_SETMASK, &old_mask, NULL);
        signal(SIGPIPE, SIG_DFL);
        if (dup2(sv[1], 0) < 0) _exit(EXIT_TEMP);
        execl(path, prog, q->root, (char *)NULL);
        _exit(EXIT_TEMP);
    }
    close(sv[1]);
    /* never block writing a job: the deliverer may be blocked writing a
     * result we would not read meanwhile (both wait for ever). A full
     * socket ends the pass instead (qm_channel.full) */
    if (fcntl(sv[0], F_SETFL, O_NONBLOCK) < 0) die_temp_sys("socket");
    q->chan[ch].sock = sv[0];
    q->chan[ch].pid = pid;
}

static void limits(struct qm *q)
{
    q->chan[QM_LOCAL].max = (unsigned)q->cfg.local_concurrency;
    q->chan[QM_LOCAL].per_key = (unsigned)q->cfg.local_per_recipient;
    q->chan[QM_REMOTE].per_key = (unsigned)q->cfg.remote_per_domain;
    q->chan[QM_REMOTE].max = (unsigned)q->cfg.remote_concurrency;
}

static void drop(struct qm *q)
{
    struct privuser u;
    if (!privuser_lookup(q->cfg.user_queue, &u)) die_perm_sys("user %s", q->cfg.user_queue);
    if (!privdrop_is_root() && getuid() != u.uid) {
        log_warn(NULL, "event=start warning=\"not root: running as uid %lu, privileges not dropped\"", (unsigned long)getuid());
        return;
    }
    if (!privdrop(NULL, &u)) die_temp_sys("privdrop to %s", q->cfg.user_queue);
}

/* the trigger FIFO: 'F' flush, "D<ID>\n" delete, any other byte: look at todo/ */
static void trigger_input(struct qm *q, int fd, time_t now)
{
    static char rec[ENV_ID_LEN + 2];
    static size_t rlen;
    static int in_rec;
    char b[512];
    ssize_t n = read(fd, b, sizeof b);
    int scan = 0;
    for (ssize_t i = 0; i < n; i++) {
        if (in_rec) {
            if (b[i] != '\n') { if (rlen < sizeof rec - 1) rec[rlen++] = b[i]; else in_rec = 0; continue; }
            rec[rlen] = 0;
            in_rec = 0;
            if (envelope_id_valid(rec)) { qm_scan_todo(q); qm_delete(q, rec, now); }
            else log_warn(NULL, "event=trigger error=\"bad delete request\" action=ignored");
        } else if (b[i] == 'D') {
            in_rec = 1;
            rlen = 0;
        } else if (b[i] == 'F') {
            log_info(NULL, "flush=requested");
            qm_scan_all(q);
            qm_flush(q);
        } else {
            scan = 1;
        }
    }
    if (scan) qm_scan_todo(q);
}

static void channel_input(struct qm *q, enum qm_chan ch, time_t now)
{
    char rec[DP_RECORD_MAX + 1];
    size_t len;
    int fd;
    if (dp_recv(q->chan[ch].sock, rec, sizeof rec, &len, &fd)) {
        if (fd >= 0) close(fd);
        q->chan[ch].full = 0;       /* it reads again: room for a job */
        qm_result(q, ch, rec, len, now);
    } else if (errno == EPIPE || errno == ECONNRESET) {
        log_error(NULL, "deliverer=%s error=\"went away\"", q->chan[ch].name);
        qm_channel_dead(q, ch, now);
    } else if (errno != EINTR && errno != EAGAIN) {
        log_error(NULL, "deliverer=%s error=\"bad record: %s\"", q->chan[ch].name, strerror(errno));
        qm_channel_dead(q, ch, now);
    }
}

/* SIGHUP: our own postern.conf, then (only if that worked) a reload record
 * to each live deliverer, which we cannot signal once we are user_queue.
 * A send failure is logged (a full socket: sent once the deliverer reads
 * again); a dead channel shows up as EOF on its socket. */
static void reload_send(struct qm *q, int c)
{
    char rec[DP_RELOAD_LEN];
    size_t len;
    struct qm_channel *ch = &q->chan[c];
    if (ch->sock < 0 || !dp_reload_encode(rec, sizeof rec, &len)) return;
    ch->reload_due = 0;
    if (dp_send(ch->sock, rec, len, -1)) log_info(NULL, "deliverer=%s reload=sent", ch->name);
    else if (errno == EAGAIN || errno == EWOULDBLOCK) {
        ch->reload_due = 1;         /* sent once it reads again */
        ch->full = 1;
    } else log_error(NULL, "deliverer=%s reload=failed error=\"%s\"", ch->name, strerror(errno));
}

/* postern.conf as it was when last read (or tried): a change is taken in
 * without a signal, checked once a second (and read once the file has
 * settled), so that a domain added to
 * local_domains is local here as soon as smtp-listener, reloaded, takes
 * mail for it (sent to the domain's MX meanwhile, it bounced) */
static struct filesig conf_sig;
static char conf_path[4096];
static time_t conf_checked;

static void reload(struct qm *q, const char *why)
{
    struct config nc;
    char err[512];
    got_hup = 0;
    filesig_read(conf_path, &conf_sig);
    if (!config_load(&nc, q->root, err, sizeof err)) {
        log_error(NULL, "event=reload status=refused error=\"%s\" kept=previous trigger=%s", err, why);
        return;
    }
    q->cfg = nc;
    limits(q);
    log_info(NULL, "event=reload status=ok trigger=%s", why);
    for (int c = 0; c < QM_NCHAN; c++) reload_send(q, c);
}

/* once a second: has postern.conf changed since it was read, and been
 * left alone for FILESIG_SETTLE seconds since (an editor that rewrites it
 * in place must not be read half way: an empty postern.conf is a valid
 * one, all defaults)? */
static int conf_changed(time_t now)
{
    if (now == conf_checked) return 0;
    conf_checked = now;
    struct filesig cur;
    filesig_read(conf_path, &cur);
    if (filesig_same(&cur, &conf_sig)) return 0;
    return !cur.found || now - cur.mtime.tv_sec >= FILESIG_SETTLE;
}

static int loop(struct qm *q, int trig)
{
    time_t now = time(NULL), stop_at = 0;
    time_t next_todo = now + QM_SCAN_TODO_EVERY, next_all = now + QM_SCAN_ALL_EVERY;
    for (;;) {
        now = time(NULL);
        while (waitpid(-1, NULL, WNOHANG) > 0) {}
        if (got_hup) reload(q, "signal");
        else if (conf_changed(now)) reload(q, "file_changed");
        if (got_term && !q->stopping) {
            q->stopping = 1;
            stop_at = now + QM_STOP_WAIT;
            log_info(NULL, "stopping=1 inflight=%u", qm_inflight(q));
        }
        if (q->dead && !stop_at) stop_at = now + QM_STOP_WAIT;
        if (q->nrm && io_now_ms() >= q->rm_due) qm_remove_flush(q);
        long long save_at = qm_save_due(q, 0);
        if ((q->stopping || q->dead) && (!qm_inflight(q) || now >= stop_at)) {
            qm_save_due(q, 1);
            qm_remove_flush(q);
            return q->dead ? EXIT_TEMP : EXIT_OK;
        }
        if (now >= next_todo) { qm_scan_todo(q); next_todo = now + QM_SCAN_TODO_EVERY; }
        if (now >= next_all) { qm_sweep(q, now); qm_scan_all(q); next_all = now + QM_SCAN_ALL_EVERY; }
        for (int c = 0; c < QM_NCHAN; c++)
            if (q->chan[c].reload_due && !q->chan[c].full) reload_send(q, c);
        qm_dispatch(q, now);
        time_t wake = next_todo < next_all ? next_todo : next_all, w = qm_next_wake(q);
        if (w != (time_t)-1 && w < wake && !q->stopping) wake = w;
        if (stop_at && stop_at < wake) wake = stop_at;
        if (wake > now + 1) wake = now + 1;         /* conf_changed's second */
        struct timespec ts = { wake > now ? wake - now : 0, 0 };
        long long due = q->nrm ? q->rm_due : -1;   /* removals waiting for their flush */
        if (save_at >= 0 && (due < 0 || save_at < due)) due = save_at;   /* results waiting for their rewrite */
        if (due >= 0) {
            long long ms = due - io_now_ms();
            if (ms < 0) ms = 0;
            if (ms < (long long)ts.tv_sec * 1000) ts = (struct timespec){ ms / 1000, (ms % 1000) * 1000000 };
        }
        struct pollfd p[3] = { { trig, POLLIN, 0 }, { q->chan[QM_LOCAL].sock, POLLIN, 0 },
                               { q->chan[QM_REMOTE].sock, POLLIN, 0 } };
        int r = ppoll(p, 3, &ts, &old_mask);
        if (r < 0 && errno != EINTR) die_temp_sys("poll");
        if (r <= 0) continue;
        now = time(NULL);
        if (p[0].revents & POLLIN) trigger_input(q, trig, now);
        for (int c = 0; c < QM_NCHAN; c++)
            if (p[1 + c].revents && q->chan[c].sock >= 0) channel_input(q, (enum qm_chan)c, now);
    }
}

int main(int argc, char **argv)
{
    static struct qm q;
    char err[512], path[QUEUE_PATH_MAX];
    int ready = -1, opt;
    log_init("queue-manager");
    while ((opt = getopt(argc, argv, "d:")) != -1) {
        if (opt != 'd' || !conf_fd(optarg, &ready)) die_perm("usage: queue-manager [-d FD] ROOT");
    }
    /* the deliverers are started before readiness: s6's notification
     * pipe is not theirs to inherit */
    if (ready >= 0 && fcntl(ready, F_SETFD, FD_CLOEXEC) < 0) ready = -1;   /* not open: no one to tell */
    q.root = config_root(optind < argc ? argv[optind] : NULL);
    if (!q.root) die_perm("usage: queue-manager [-d FD] ROOT");
    snprintf(conf_path, sizeof conf_path, "%s/conf/postern.conf", q.root);
    filesig_read(conf_path, &conf_sig);
    if (!config_load(&q.cfg, q.root, err, sizeof err)) die_perm("%s", err);
    limits(&q);
    signals();
    spawn(&q, QM_LOCAL, "local-deliverer");
    spawn(&q, QM_REMOTE, "remote-deliverer");
    drop(&q);
    if (!queue_dir(path, sizeof path, q.root, "lock/trigger")) die_temp_sys("trigger path");
    int trig = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW);
    if (trig < 0) die_temp_sys("%s", path);
    /* a regular file there is always readable: poll would spin */
    struct stat st;
    if (fstat(trig, &st) < 0) die_temp_sys("%s", path);
    if (!S_ISFIFO(st.st_mode)) die_temp("%s: not a FIFO (postern-setup makes it)", path);
    /* one queue-manager a queue (qmail-send's lock/sendmutex): a second
     * one would deliver the same recipients and rewrite the same
     * envelopes through the same tmp/qm.ID. The lock goes with the
     * process (the deliverers, started before, never had this fd) */
    if (flock(trig, LOCK_EX | LOCK_NB) < 0) {
        if (errno == EWOULDBLOCK) die_temp("another queue-manager is running on %s", path);
        die_temp_sys("lock %s", path);
    }
    qm_sweep(&q, time(NULL));
    qm_scan_all(&q);
    log_info(NULL, "event=start messages=%zu remote=%s", q.nmsgs, q.chan[QM_REMOTE].sock >= 0 ? "yes" : "no");
    if (ready >= 0) { if (write(ready, "\n", 1) < 0) {} close(ready); }
    int code = loop(&q, trig);
    log_info(NULL, "event=exit code=%d", code);
    return code;
}
