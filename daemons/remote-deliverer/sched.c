/* sched.c - remote-deliverer's loop: read jobs from fd 0, run them in
 * children (so one slow destination never blocks the others), at most
 * remote_per_domain children at once per destination; work beyond the limit
 * waits in memory (holding its message fd) until a slot frees.
 *
 * Batches: queue-manager sends the recipients of a message back to back, one
 * job record each. When fd 0 is readable we read every record already there
 * (at most READ_MAX, polling with timeout 0 between them) and group the jobs
 * of the same message id, destination key, route, sender, envid, RET and
 * BODY into batches of at most REMOTE_BATCH_MAX: one child, one connection,
 * one SMTP transaction with a RCPT per job. Each job still gets its own
 * result record. The child reports one line per job, "<index> <s|t|p>
 * <text>\n"; a job without a well-formed line counts as a temporary failure
 * ("4.3.0 delivery process died").
 *
 * Connection reuse (remote_reuse_time, default 2 s): the child talks to us
 * over a SOCK_SEQPACKET pair, one record per result line, then "." (done,
 * exiting) or "+" (done, and its connection is still open: it waits for
 * more). A child that said "+" is idle: the next batch for the same
 * destination is handed to it ("B<n>" with the message fd, then n job
 * records), and it answers "A" before it starts; it sends MAIL on the open
 * connection, or on a new one if the server closed it meanwhile. An idle
 * child is retired (we shut our end down; it sends QUIT and exits) after
 * remote_reuse_time, on a reload, at shutdown, or when the child slots run
 * out; one that exits before its "A" never started, and its batch goes to
 * another child. At EOF on fd 0: no new jobs,
 * waiting ones are answered "temporary", in-flight ones get a bounded grace
 * time. SIGTERM is noted and otherwise ignored, here and in the children:
 * it comes from a stop that signals every process at once (systemd's
 * KillMode=control-group), whose SIGTERM to queue-manager makes it stop
 * dispatching, wait for the results in flight (waiting jobs started
 * meanwhile included) and exit, our EOF; the grace time then counts from
 * the SIGTERM. Leaving on the SIGTERM itself deferred the waiting jobs for
 * their retry interval, and queue-manager took our exit for a crash.
 * SIGHUP, or queue-manager's reload record on fd 0, re-reads the
 * config. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "io.h"
#include "log.h"
#include "remote.h"

#define MAX_CHILDREN 512        /* in flight at once, all destinations */
#define MAX_WAITING 10000       /* jobs held waiting for a slot */
#define DEST_MAX 300
#define GRACE_MAX 30            /* seconds for in-flight jobs at shutdown */
#define READ_MAX 100            /* job records read in one go */
#define RESULT_LINE_MAX (DP_FIELD_MAX + 32)   /* "<index> <s> <text>\n" */

struct batch {                   /* jobs delivered by one child */
    int fd;                      /* the message (the first job's descriptor) */
    char dest[DEST_MAX];
    size_t n;
    struct batch *next;          /* in the waiting list */
    struct dp_job j[];           /* n jobs */
};

struct child {
    pid_t pid;
    int fd;                      /* our end of its socket pair */
    struct batch *b;             /* NULL: between batches */
    char dest[DEST_MAX];         /* the destination it delivers to */
    size_t got, cap;
    char *out;                   /* the result lines of b, cap bytes */
    int acked;                   /* it has b (forked with it, or said "A") */
    int idle;                    /* said "+": may be handed the next batch */
    int retiring;                /* told to QUIT and exit */
    unsigned gen;                /* the configuration it was forked with */
    long long idle_since;        /* ms */
};

static struct child kids[MAX_CHILDREN];
static size_t nkids;
static struct batch *whead, *wtail;
static size_t nwaiting;          /* jobs in the waiting batches */
static int sigpipe_fds[2] = { -1, -1 };
static volatile sig_atomic_t got_hup, got_term;
static unsigned conf_gen;        /* bumped on every reload */

static void on_signal(int sig)
{
    int e = errno;
    if (sig == SIGHUP) got_hup = 1;
    else got_term = 1;
    if (write(sigpipe_fds[1], "x", 1) < 0) {}
    errno = e;
}

/* action: NULL, or with DP_SUCCESS what the next hop made of NOTIFY (DP_ACTION_*) */
static void send_result_action(unsigned long long job, const char *id, const char *to, enum dp_status s,
                               const char *action, const char *text)
{
    char safe[DP_ADDR_MAX * 4 + 8];
    char shown[DP_FIELD_MAX * 2 + 8];
    log_quote(shown, sizeof shown, text, strnlen(text, DP_FIELD_MAX));   /* what the record carries */
    log_info(id, "job=%llu to=%s result=%c%s%s text=\"%s\"", job, log_safe(safe, sizeof safe, to, strlen(to)),
             (char)s, action ? " action=" : "", action ? action : "", shown);
    if (!dp_send_result_action(0, job, s, action, text))
        log_error(id, "job=%llu error=\"cannot send result: %s\"", job, strerror(errno));
}

static void send_result(unsigned long long job, const char *id, const char *to, enum dp_status s,
                        const char *text)
{
    send_result_action(job, id, to, s, NULL, text);
}

static void batch_results(struct batch *b, enum dp_status s, const char *text)
{
    for (size_t i = 0; i < b->n; i++) send_result(b->j[i].job, b->j[i].id, b->j[i].rcpt, s, text);
}

/* children delivering to dest, busy or idle (each holds a connection) */
static size_t dest_count(const char *dest)
{
    size_t n = 0;
    for (size_t i = 0; i < nkids; i++)
        if (!strcmp(kids[i].dest, dest)) n++;
    return n;
}

/* in the child: one record per job's line, then "+" (the connection is
 * kept: send more) or "." (exiting) */
static int report(int sock, const struct remote_result *res, size_t n, int kept)
{
    char line[RESULT_LINE_MAX];
    for (size_t i = 0; i < n; i++) {
        const char *a = res[i].action ? res[i].action : "";
        int k = snprintf(line, sizeof line, "%zu %c%s%s %.*s", i, (char)res[i].s, a[0] ? ":" : "", a, DP_FIELD_MAX,
                         res[i].text);
        if (k < 0 || (size_t)k >= sizeof line - 1) return 0;
        for (int c = 0; c < k; c++)
            if (line[c] == '\n' || line[c] == '\r') line[c] = ' ';
        line[k++] = '\n';
        if (send(sock, line, (size_t)k, MSG_NOSIGNAL) != k) return 0;
    }
    return send(sock, kept ? "+" : ".", 1, MSG_NOSIGNAL) == 1;
}

/* in an idle child: the next batch, "B<n>" with the message fd then n job
 * records; 1 (and "A" sent back), or 0 at end of stream or on anything
 * malformed */
static int next_batch(int sock, struct dp_job *jobs, size_t *n, int *msgfd)
{
    static char rec[DP_RECORD_MAX + 1];
    size_t len, want = 0;
    int fd = -1, extra = -1;
    if (!dp_recv(sock, rec, sizeof rec, &len, &fd)) return 0;
    if (len < 2 || len > 4 || rec[0] != 'B' || fd < 0) goto bad;
    for (size_t i = 1; i < len; i++) {
        if (rec[i] < '0' || rec[i] > '9') goto bad;
        want = want * 10 + (size_t)(rec[i] - '0');
    }
    if (!want || want > REMOTE_BATCH_MAX) goto bad;
    for (size_t i = 0; i < want; i++) {
        if (!dp_recv(sock, rec, sizeof rec, &len, &extra) || extra >= 0 || !dp_job_decode(&jobs[i], rec, len))
            goto bad;
    }
    if (send(sock, "A", 1, MSG_NOSIGNAL) != 1) goto bad;
    *n = want;
    *msgfd = fd;
    return 1;
bad:
    if (fd >= 0) close(fd);
    if (extra >= 0) close(extra);
    return 0;
}

/* the child: deliver b, then, while the connection stays open and the
 * parent sends more for it, the next batches; never returns */
static _Noreturn void child_main(struct remote_conf *rc, int sock, struct batch *b)
{
    static struct remote_result res[REMOTE_BATCH_MAX];
    static struct dp_job jobs[REMOTE_BATCH_MAX];
    size_t n = b->n;
    int fd = b->fd;
    memcpy(jobs, b->j, n * sizeof jobs[0]);
    int reuse = rc->cfg.remote_reuse_time > 0;
    for (unsigned done = 1;; done++) {
        /* every wait is bounded; this bounds the sum (a server that reads 1 byte a minute) */
        alarm((unsigned)(rc->cfg.remote_timeout * 20 + rc->cfg.remote_connect_timeout * 4));
        remote_deliver(rc, jobs, n, fd, res, reuse && done < REMOTE_REUSE_MAX);
        alarm(0);
        close(fd);
        int kept = remote_link_fd() >= 0;
        if (!report(sock, res, n, kept)) _exit(EXIT_TEMP);
        if (!kept) _exit(EXIT_OK);
        /* idle: the parent's next batch, or the server giving up on us */
        struct pollfd p[2] = { { sock, POLLIN, 0 }, { remote_link_fd(), POLLIN, 0 } };
        int r;
        while ((r = poll(p, 2, (int)(rc->cfg.remote_reuse_time * 1000) + 60000)) < 0 && errno == EINTR) {}
        if (r <= 0 || p[1].revents) { remote_link_close(r <= 0); _exit(EXIT_OK); }   /* 421, EOF or stray bytes */
        if (!next_batch(sock, jobs, &n, &fd)) { remote_link_close(1); _exit(EXIT_OK); }
    }
}

static void start_child(struct remote_conf *rc, struct batch *b)
{
    int p[2];
    size_t cap = b->n * RESULT_LINE_MAX;
    char *out = malloc(cap);
    if (!out || socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, p) < 0) {
        batch_results(b, DP_TEMPORARY, "4.3.0 socketpair failed");
        free(out); close(b->fd); free(b);
        return;
    }
    pid_t pid = fork();
    if (pid < 0) {
        close(p[0]); close(p[1]);
        batch_results(b, DP_TEMPORARY, "4.3.0 fork failed");
        free(out); close(b->fd); free(b);
        return;
    }
    if (!pid) {
        free(out);        /* the parent's buffer for this child's report */
        close(p[0]);
        close(0);
        for (size_t i = 0; i < nkids; i++) {
            close(kids[i].fd);
            if (kids[i].b && kids[i].b->fd >= 0) close(kids[i].b->fd);
        }
        for (struct batch *w = whead; w; w = w->next) close(w->fd);
        signal(SIGHUP, SIG_DFL);
        /* a stop that signals every process at once (systemd's
         * KillMode=control-group) must not cut a delivery in the middle:
         * the server may have the message while we report it died, and it
         * goes again. We give it the grace time (GRACE_MAX) after our EOF,
         * and SIGKILL */
        signal(SIGTERM, SIG_IGN);
        child_main(rc, p[1], b);
    }
    close(p[1]);
    /* ours never blocks: a handed batch that does not fit goes to a new child */
    (void)fcntl(p[0], F_SETFL, O_NONBLOCK);
    close(b->fd);
    b->fd = -1;
    struct child *k = &kids[nkids++];
    memset(k, 0, sizeof *k);
    k->pid = pid;
    k->fd = p[0];
    k->b = b;
    memcpy(k->dest, b->dest, sizeof k->dest);
    k->out = out;
    k->cap = cap;
    k->acked = 1;
    k->gen = conf_gen;
}

/* tell an idle child to QUIT and exit (it goes once it has read the end) */
static void retire(struct child *k)
{
    if (k->retiring) return;
    k->retiring = 1;
    k->idle = 0;
    shutdown(k->fd, SHUT_WR);
}

/* hand batch b to the idle child for its destination, if there is one:
 * 1 if it took it. b->fd stays ours until the child says "A". */
static int hand_to_idle(struct batch *b)
{
    struct child *k = NULL;
    for (size_t i = 0; i < nkids && !k; i++)
        if (kids[i].idle && !kids[i].retiring && !strcmp(kids[i].dest, b->dest)) k = &kids[i];
    if (!k) return 0;
    static char rec[DP_RECORD_MAX];
    size_t cap = b->n * RESULT_LINE_MAX, len;
    char *out = realloc(k->out, cap);
    if (!out) return 0;
    k->out = out;
    int hl = snprintf(rec, sizeof rec, "B%zu", b->n);
    int ok = dp_send(k->fd, rec, (size_t)hl, b->fd);
    for (size_t m = 0; ok && m < b->n; m++)
        ok = dp_job_encode(&b->j[m], rec, sizeof rec, &len) && dp_send(k->fd, rec, len, -1);
    if (!ok) { retire(k); return 0; }   /* it is gone; whatever it got, it never says "A" */
    k->b = b;
    k->cap = cap;
    k->got = 0;
    k->acked = 0;
    k->idle = 0;
    log_info(b->j[0].id, "event=reuse dest=%s pid=%ld", b->dest, (long)k->pid);
    return 1;
}

/* start waiting batches whose destination has a free slot (or an idle
 * connection), oldest first */
static void start_waiting(struct remote_conf *rc)
{
    struct batch **pp = &whead, *prev = NULL;
    while (*pp) {
        struct batch *w = *pp;
        int handed = hand_to_idle(w);
        if (!handed && (nkids >= MAX_CHILDREN || dest_count(w->dest) >= rc->cfg.remote_per_domain)) {
            prev = w;
            pp = &w->next;
            continue;
        }
        *pp = w->next;
        if (wtail == w) wtail = prev;
        nwaiting -= w->n;
        if (!handed) start_child(rc, w);
    }
    if (whead && nkids >= MAX_CHILDREN)   /* free a slot: the first idle connection goes */
        for (size_t i = 0; i < nkids; i++)
            if (kids[i].idle && !kids[i].retiring) { retire(&kids[i]); break; }
}

/* one batch formed: start it or queue it */
static void new_batch(struct remote_conf *rc, struct batch *b)
{
    if (!whead && hand_to_idle(b)) return;
    if (!whead && nkids < MAX_CHILDREN && dest_count(b->dest) < rc->cfg.remote_per_domain) {
        start_child(rc, b);
        return;
    }
    if (nwaiting + b->n > MAX_WAITING) {
        batch_results(b, DP_TEMPORARY, "4.3.2 too many remote deliveries waiting");
        close(b->fd);
        free(b);
        return;
    }
    b->next = NULL;
    if (wtail) wtail->next = b; else whead = b;
    wtail = b;
    nwaiting += b->n;
    start_waiting(rc);   /* others may be startable */
}

/* the jobs read in one go, before they are grouped */
static struct dp_job in_job[READ_MAX];
static int in_fd[READ_MAX];
static char in_dest[READ_MAX][DEST_MAX];
static size_t nin;

/* a decoded job record: check it and keep it for grouping */
static void new_job(struct remote_conf *rc, const char *rec, size_t len, int msgfd)
{
    struct dp_job *j = &in_job[nin];
    if (!dp_job_decode(j, rec, len)) {
        log_error(NULL, "error=\"refused malformed job record\"");
        if (msgfd >= 0) close(msgfd);
        return;
    }
    if (msgfd < 0) { send_result(j->job, j->id, j->rcpt, DP_TEMPORARY, "4.3.0 job without message"); return; }
    if (!remote_destination(rc, j->rcpt, in_dest[nin], sizeof in_dest[nin])) {
        send_result(j->job, j->id, j->rcpt, DP_PERMANENT, "5.1.3 recipient address has no domain");
        close(msgfd);
        return;
    }
    in_fd[nin++] = msgfd;
}

static const struct route *route_of(const struct remote_conf *rc, const char *rcpt)
{
    const char *at = strrchr(rcpt, '@');
    return at ? routes_find(&rc->routes, at + 1) : NULL;
}

/* can jobs a and b share one transaction? */
static int same_batch(const struct remote_conf *rc, size_t a, size_t b)
{
    const struct dp_job *x = &in_job[a], *y = &in_job[b];
    return !strcmp(x->id, y->id) && !strcmp(in_dest[a], in_dest[b]) && !strcmp(x->sender, y->sender) &&
           !strcmp(x->envid, y->envid) && !strcmp(x->body, y->body) && !strcmp(x->ret, y->ret) &&
           x->smtputf8 == y->smtputf8 && route_of(rc, x->rcpt) == route_of(rc, y->rcpt);
}

/* group the jobs read into batches, in arrival order, and start or queue them */
static void dispatch_jobs(struct remote_conf *rc)
{
    static int done[READ_MAX];
    static size_t members[REMOTE_BATCH_MAX];
    for (size_t i = 0; i < nin; i++) done[i] = 0;
    for (size_t i = 0; i < nin; i++) {
        if (done[i]) continue;
        size_t n = 0;
        for (size_t k = i; k < nin && n < REMOTE_BATCH_MAX; k++)
            if (!done[k] && (k == i || same_batch(rc, i, k))) { members[n++] = k; done[k] = 1; }
        struct batch *b = malloc(sizeof *b + n * sizeof b->j[0]);
        if (!b) {
            for (size_t m = 0; m < n; m++) {
                const struct dp_job *j = &in_job[members[m]];
                send_result(j->job, j->id, j->rcpt, DP_TEMPORARY, "4.3.0 out of memory");
                close(in_fd[members[m]]);
            }
            continue;
        }
        b->n = n;
        b->fd = in_fd[members[0]];
        b->next = NULL;
        memcpy(b->dest, in_dest[i], sizeof b->dest);
        for (size_t m = 0; m < n; m++) {
            b->j[m] = in_job[members[m]];
            if (m) close(in_fd[members[m]]);   /* the same message: one descriptor is enough */
        }
        if (n > 1) log_info(b->j[0].id, "batch=%zu dest=%s", n, b->dest);
        new_batch(rc, b);
    }
    nin = 0;
}

/* the child's lines: "<index> <s|t|p>[:<action>] <text>\n"; st, action and
 * text filled for a good one */
static void parse_report(struct child *k, enum dp_status *st, const char **action, const char **text)
{
    char *p = k->out, *end = k->out + k->got;
    while (p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) break;
        *nl = 0;
        size_t idx = 0, digits = 0;
        char *q = p;
        while (q < nl && *q >= '0' && *q <= '9' && digits < 3) { idx = idx * 10 + (size_t)(*q - '0'); q++; digits++; }
        if (digits && idx < k->b->n && !st[idx] && nl - q >= 2 && q[0] == ' ') {
            char s = q[1];
            const char *act = NULL;
            char *r = q + 2;
            if (s == DP_SUCCESS && r < nl && *r == ':') {
                char *sp = memchr(r, ' ', (size_t)(nl - r));
                size_t alen = sp ? (size_t)(sp - r - 1) : 0;
                if (alen == strlen(DP_ACTION_RELAYED) && !memcmp(r + 1, DP_ACTION_RELAYED, alen))
                    act = DP_ACTION_RELAYED;
                else if (alen == strlen(DP_ACTION_PASSED) && !memcmp(r + 1, DP_ACTION_PASSED, alen))
                    act = DP_ACTION_PASSED;
                r = act ? sp : nl;      /* an unknown action: not a good line */
            }
            if ((s == DP_SUCCESS || s == DP_TEMPORARY || s == DP_PERMANENT) && nl - r >= 2 && *r == ' ' &&
                nl - (r + 1) <= DP_FIELD_MAX) {
                st[idx] = (enum dp_status)s;
                action[idx] = act;
                text[idx] = r + 1;
            }
        }
        p = nl + 1;
    }
}

/* answer every job of k's batch: its line, or why it has none */
static void batch_done(struct child *k, int ws)
{
    static enum dp_status st[REMOTE_BATCH_MAX];
    static const char *text[REMOTE_BATCH_MAX], *action[REMOTE_BATCH_MAX];
    memset(st, 0, sizeof st);
    parse_report(k, st, action, text);
    int alarmed = WIFSIGNALED(ws) && WTERMSIG(ws) == SIGALRM;
    for (size_t m = 0; m < k->b->n; m++) {
        const struct dp_job *j = &k->b->j[m];
        if (st[m]) send_result_action(j->job, j->id, j->rcpt, st[m], action[m], text[m]);
        else if (alarmed) send_result(j->job, j->id, j->rcpt, DP_TEMPORARY, "4.4.2 delivery took too long");
        else send_result(j->job, j->id, j->rcpt, DP_TEMPORARY, "4.3.0 delivery process died");
    }
    if (k->b->fd >= 0) close(k->b->fd);
    free(k->b);
    k->b = NULL;
    k->got = 0;
}

/* one record from child k: a result line, "A", "+" or "."; 1 if it was
 * one of those, -1 if nothing more is there for now, 0 at end of stream,
 * on an error or on anything else (then the child is killed) */
static int child_record(struct child *k, int stopping)
{
    char rec[RESULT_LINE_MAX + 2];
    ssize_t n;
    while ((n = recv(k->fd, rec, sizeof rec, MSG_DONTWAIT)) < 0 && errno == EINTR) {}
    if (n < 0 && errno == EAGAIN) return -1;
    if (n == 1 && rec[0] == 'A' && k->b && !k->acked) {
        k->acked = 1;            /* it has the batch: the message fd is its to read */
        close(k->b->fd);
        k->b->fd = -1;
        return 1;
    }
    if (n == 1 && (rec[0] == '+' || rec[0] == '.') && k->b && k->acked) {
        batch_done(k, 0);
        k->idle = rec[0] == '+';
        k->idle_since = io_now_ms();
        if (k->idle && (stopping || k->gen != conf_gen)) retire(k);
        return 1;
    }
    if (n > 0 && (size_t)n < sizeof rec && k->b && k->acked && k->got + (size_t)n <= k->cap && rec[n - 1] == '\n') {
        memcpy(k->out + k->got, rec, (size_t)n);
        k->got += (size_t)n;
        return 1;
    }
    if (n > 0) kill(k->pid, SIGKILL);   /* out of protocol: stop reading it */
    return 0;
}

/* the child's socket is readable: every record there; at end of stream
 * reap it and answer what it did not */
static void child_input(struct remote_conf *rc, size_t i, int stopping)
{
    struct child *k = &kids[i];
    int r;
    while ((r = child_record(k, stopping)) == 1) {}
    if (r < 0) return;                 /* nothing more for now */
    int ws = 0;
    while (waitpid(k->pid, &ws, 0) < 0 && errno == EINTR) {}
    close(k->fd);
    struct batch *b = k->b;
    int unstarted = b && !k->acked;
    if (b && !unstarted) batch_done(k, ws);
    free(k->out);
    kids[i] = kids[--nkids];
    if (unstarted) {             /* it went before taking it: another child will */
        log_info(b->j[0].id, "event=reuse_missed dest=%s", b->dest);
        if (stopping) { batch_results(b, DP_TEMPORARY, "4.3.2 remote-deliverer stopping"); close(b->fd); free(b); }
        else new_batch(rc, b);
    }
}

/* idle children past remote_reuse_time go; ms until the next one would, or -1 */
static int expire_idle(const struct remote_conf *rc)
{
    long long now = io_now_ms(), limit = (long long)rc->cfg.remote_reuse_time * 1000, next = -1;
    for (size_t i = 0; i < nkids; i++) {
        struct child *k = &kids[i];
        if (!k->idle || k->retiring) continue;
        long long left = k->idle_since + limit - now;
        if (left <= 0) { retire(k); continue; }
        if (next < 0 || left < next) next = left;
    }
    return next < 0 ? -1 : next > 0x7fffffff ? 0x7fffffff : (int)next;
}

static void drop_waiting(void)
{
    while (whead) {
        struct batch *w = whead;
        whead = w->next;
        batch_results(w, DP_TEMPORARY, "4.3.2 remote-deliverer stopping");
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
        if (k->b) {
            batch_results(k->b, DP_TEMPORARY, "4.3.2 remote-deliverer stopped during delivery");
            if (k->b->fd >= 0) close(k->b->fd);
            free(k->b);
        }
        free(k->out);
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
        tls_client_prepare(&rc->routes);   /* CA files read again */
        conf_gen++;              /* kept connections were opened under the old one */
        for (size_t i = 0; i < nkids; i++)
            if (kids[i].idle) retire(&kids[i]);
        log_info(NULL, "event=reload from=%s routes=%zu per_domain=%llu", from, rc->routes.n,
                 rc->cfg.remote_per_domain);
    } else {
        log_error(NULL, "event=reload_refused from=%s keeping=old why=\"%s\"", from, err);
    }
    explicit_bzero(&nc.auth, sizeof nc.auth);
}

void sched_run(struct remote_conf *rc, const char *root)
{
    static struct pollfd p[MAX_CHILDREN + 2];
    int stopping = 0;
    time_t deadline = 0, term_at = 0;
    setup_signals();
    for (;;) {
        if (got_term && !term_at) {
            term_at = time(NULL);
            log_info(NULL, "event=sigterm in_flight=%zu waiting=%zu action=finish-at-eof", nkids, nwaiting);
        }
        if (stopping && !deadline) {
            unsigned long long g = rc->cfg.remote_timeout < GRACE_MAX ? rc->cfg.remote_timeout : GRACE_MAX;
            deadline = (term_at ? term_at : time(NULL)) + (time_t)g;
            drop_waiting();
            for (size_t i = 0; i < nkids; i++)
                if (kids[i].idle) retire(&kids[i]);
        }
        if (stopping && !nkids) return;
        if (stopping && time(NULL) >= deadline) { kill_children(); return; }
        size_t np = 0;
        p[np++] = (struct pollfd){ sigpipe_fds[0], POLLIN, 0 };
        p[np++] = (struct pollfd){ stopping ? -1 : 0, POLLIN, 0 };
        for (size_t i = 0; i < nkids; i++) p[np++] = (struct pollfd){ kids[i].fd, POLLIN, 0 };
        int idle_ms = expire_idle(rc);
        int r = poll(p, np, stopping ? 1000 : idle_ms);
        if (r < 0) { if (errno == EINTR) continue; die_temp_sys("poll"); }
        if (p[0].revents) { char b[64]; while (read(sigpipe_fds[0], b, sizeof b) > 0) {} }
        if (got_hup) { got_hup = 0; reload(rc, root, "signal"); }
        for (size_t i = np; i-- > 2;)   /* backwards: child_input moves the last one */
            if (p[i].revents) child_input(rc, i - 2, stopping);
        if (!stopping && p[1].revents) {
            /* every record already there (a message's recipients come back to back) */
            for (size_t nread = 0; nread < READ_MAX && !stopping; nread++) {
                static char rec[DP_RECORD_MAX + 1];
                size_t len;
                int fd = -1;
                if (nread) {
                    struct pollfd q = { 0, POLLIN, 0 };
                    if (poll(&q, 1, 0) <= 0) break;
                }
                if (dp_recv(0, rec, sizeof rec, &len, &fd)) {
                    if (fd < 0 && dp_reload_decode(rec, len)) { dispatch_jobs(rc); reload(rc, root, "queue-manager"); }
                    else new_job(rc, rec, len, fd);   /* anything else: a job, or refused as before */
                }
                else if (errno == EMSGSIZE || errno == EPROTO) log_error(NULL, "error=\"bad job record: %s\"", strerror(errno));
                else if (errno == EAGAIN || errno == EINTR) break;
                else {
                    stopping = 1;
                    if (errno == EPIPE) log_info(NULL, "event=stop reason=eof in_flight=%zu", nkids);
                    else log_info(NULL, "event=stop reason=error error=\"%s\" in_flight=%zu", strerror(errno), nkids);
                }
            }
            dispatch_jobs(rc);
        }
        if (!stopping) start_waiting(rc);
    }
}
