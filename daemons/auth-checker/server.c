/* server.c - auth-checker's poll loop: many clients on a SEQPACKET socket,
 * one request at a time per client, at most auth_concurrency argon2id
 * verifications at once (each in a forked worker), a FIFO of pending
 * requests, throttling delays, SIGHUP / users-file-change reloads. */
#include "server.h"
#include "auth_throttle.h"
#include "conf.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <sodium.h>

#include "listen.h"
#include "log.h"

#define CLIENTS_MAX 512

enum cstate { C_FREE = 0, C_IDLE, C_WAITING, C_RUNNING, C_ORPHAN };

struct client {
    enum cstate state;
    int fd;
    int pipe;             /* worker's result pipe (C_RUNNING, C_ORPHAN) */
    pid_t worker;
    unsigned long seq;    /* FIFO order of pending requests */
    time_t not_before;    /* throttling delay */
    struct auth_request req;
    char name[USERDB_NAME_MAX + 1]; /* canonical name, "" if invalid */
};

static struct client clients[CLIENTS_MAX];
static volatile sig_atomic_t got_hup, got_term;
static unsigned long next_seq;
static unsigned running;
static struct listen_pause accept_pause;   /* out of descriptors: accept nothing for a while */

static void on_signal(int sig)
{
    if (sig == SIGHUP) got_hup = 1;
    else if (sig == SIGTERM || sig == SIGINT) got_term = 1;
}

void users_cost(const struct userdb *db, enum userdb_pwlevel lvl, unsigned long long *ops, size_t *mem)
{
    struct cost { unsigned long long ops; size_t mem; size_t n; } seen[8];
    size_t nseen = 0, best = 0;
    for (size_t i = 0; i < db->n; i++) {
        if (!userdb_pwhash_cost_of(db->v[i].hash, lvl, ops, mem)) continue;
        size_t k = 0;
        while (k < nseen && (seen[k].ops != *ops || seen[k].mem != *mem)) k++;
        if (k == nseen) {
            if (nseen == sizeof seen / sizeof seen[0]) continue;   /* a rare ninth cost */
            seen[nseen++] = (struct cost){ *ops, *mem, 0 };
        }
        seen[k].n++;
    }
    for (size_t k = 1; k < nseen; k++)
        if (seen[k].n > seen[best].n) best = k;
    if (nseen) { *ops = seen[best].ops; *mem = seen[best].mem; }
    else userdb_pwhash_cost_of(NULL, lvl, ops, mem);
}

int server_dummy_refresh(struct server *s)
{
    unsigned long long ops;
    size_t mem;
    users_cost(&s->users, s->pwlevel, &ops, &mem);
    if (s->dummy_hash[0] && ops == s->dummy_ops && mem == s->dummy_mem) return 1;
    unsigned char rnd[32];
    randombytes_buf(rnd, sizeof rnd);
    int ok = userdb_pwhash_cost(s->dummy_hash, (const char *)rnd, sizeof rnd, ops, mem);
    sodium_memzero(rnd, sizeof rnd);
    if (!ok) return 0;
    s->dummy_ops = ops;
    s->dummy_mem = mem;
    log_info(NULL, "event=dummy_hash ops=%llu mem_kib=%zu", ops, mem / 1024);
    return 1;
}

static void users_reload(struct server *s, int force)
{
    struct filesig now;
    if (!filesig_cache_stale(&s->users_c, s->users_path, &now) && !force) return;
    if (!now.found) {
        /* kept: a users file that vanished is trouble, not "no users" */
        if (force || s->users_c.sig.found)
            log_error(NULL, "event=reload file=%s error=\"%s\" kept=previous", s->users_path, strerror(ENOENT));
        s->users_c.sig = now;
        return;
    }
    struct userdb db = USERDB_ZERO;
    char err[1200];
    if (!userdb_load(&db, s->users_path, 1, 0, err, sizeof err)) {
        log_error(NULL, "event=reload error=\"%s\" kept=previous", err);
        userdb_free(&db);
        return;
    }
    int quiet = filesig_same(&s->users_c.sig, &now) && !force;   /* a recent file read again */
    userdb_free(&s->users);
    s->users = db;
    filesig_cache_loaded(&s->users_c, &now);
    if (!quiet) log_info(NULL, "event=reload users=%zu", db.n);
    if (!server_dummy_refresh(s)) log_error(NULL, "event=dummy_hash error=\"%s\" kept=previous", strerror(errno));
}

/* SIGHUP: re-read postern.conf (auth_concurrency takes effect); a broken
 * conf is refused with its file:line and the old one kept */
static void conf_reload(struct server *s)
{
    static struct config nc, live;
    char err[CONF_ERR_MAX + 64];
    enum userdb_pwlevel lvl;
    if (!config_load(&nc, s->root, err, sizeof err)) {
        log_error(NULL, "event=reload error=\"%s\" kept=previous", err);
        return;
    }
    if (!userdb_pwlevel_parse(nc.pwhash_level, &lvl)) {
        log_error(NULL, "event=reload error=\"%s/conf/postern.conf: pwhash_level: not interactive, moderate or sensitive\" kept=previous", s->root);
        return;
    }
    live = nc;
    s->conf = &live;
    s->pwlevel = lvl;
    log_info(NULL, "event=reload conf=ok concurrency=%llu", live.auth_concurrency);
}

int server_users_load(struct server *s, char *err, size_t errlen)
{
    struct filesig now;
    filesig_read(s->users_path, &now);
    if (!userdb_load(&s->users, s->users_path, 1, 1, err, errlen)) return 0;
    filesig_cache_loaded(&s->users_c, &now);
    return 1;
}

/* the canonical local name of a requested user: "alice", "Alice",
 * "alice@<local domain>" -> "alice"; "" if it is not a valid name */
static void canon_user(const struct server *s, const struct auth_request *r, char *out)
{
    const char *why;
    size_t len = r->userlen;
    const char *at = memchr(r->user, '@', r->userlen);
    out[0] = 0;
    if (at) {
        size_t dl = r->userlen - (size_t)(at - r->user) - 1;
        if (!config_is_local_domain(s->conf, at + 1, dl)) return;
        len = (size_t)(at - r->user);
    }
    if (!userdb_name_canon(r->user, len, out, &why)) out[0] = 0;
}

static void reply(struct client *c, enum auth_result res, const struct userdb_entry *e)
{
    struct auth_reply r;
    char rec[AUTH_RECORD_MAX];
    size_t len;
    memset(&r, 0, sizeof r);
    r.result = res;
    if (res == AUTH_OK) {
        memcpy(r.name, e->name, strlen(e->name) + 1);
        r.uid = e->uid;
        r.gid = e->gid;
        memcpy(r.maildir, e->maildir, strlen(e->maildir) + 1);
    }
    if (!authproto_reply_format(&r, rec, sizeof rec, &len)) {
        r.result = AUTH_TEMP;
        authproto_reply_format(&r, rec, sizeof rec, &len);
    }
    if (send(c->fd, rec, len, MSG_NOSIGNAL | MSG_DONTWAIT) != (ssize_t)len)
        log_warn(NULL, "event=reply error=\"%s\"", strerror(errno));
}

static void log_result(const struct client *c, const char *result)
{
    char u[100], a[100];
    log_safe(u, sizeof u, c->req.user, c->req.userlen);
    log_safe(a, sizeof a, c->req.addr, strlen(c->req.addr));
    log_info(NULL, "service=%s user=%s addr=%s result=%s",
             c->req.service == AUTH_SVC_SMTP ? "smtp" : "pop3", u, a, result);
}

static void client_close(struct client *c)
{
    close(c->fd);
    authproto_request_wipe(&c->req);
    if (c->state == C_RUNNING) { c->state = C_ORPHAN; return; }  /* worker still owns a slot */
    c->state = C_FREE;
}

static void client_request(struct server *s, struct client *c)
{
    char rec[AUTH_RECORD_MAX + 1];
    ssize_t n = recv(c->fd, rec, sizeof rec, MSG_DONTWAIT | MSG_TRUNC);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (n <= 0) { client_close(c); return; }
    int ok = (size_t)n <= AUTH_RECORD_MAX && authproto_request_parse(rec, (size_t)n, &c->req);
    sodium_memzero(rec, sizeof rec);
    if (!ok) {
        log_warn(NULL, "event=request error=malformed");
        client_close(c);
        return;
    }
    users_reload(s, 0);
    canon_user(s, &c->req, c->name);
    time_t now = time(0);
    int d = throttle_delay(c->name[0] ? c->name : "-", c->req.addr, now);
    if (d < 0) {
        log_result(c, "throttled");
        reply(c, AUTH_TEMP, 0);
        authproto_request_wipe(&c->req);
        return;
    }
    c->not_before = now + d;
    c->seq = next_seq++;
    c->state = C_WAITING;
}

static void worker_start(struct server *s, struct client *c)
{
    const struct userdb_entry *e = c->name[0] ? userdb_find(&s->users, c->name) : 0;
    const char *hash = e ? e->hash : s->dummy_hash;
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) goto temp;
    pid_t pid = fork();
    if (pid < 0) { close(p[0]); close(p[1]); goto temp; }
    if (pid == 0) {
        close(p[0]);
        int ok = userdb_pwverify(hash, c->req.pass, c->req.passlen);
        char r = (ok == 1 && e) ? '1' : ok < 0 ? 'e' : '0';
        authproto_request_wipe(&c->req);
        if (write(p[1], &r, 1) != 1) _exit(1);
        _exit(0);
    }
    close(p[1]);
    authproto_request_wipe(&c->req);   /* the worker has its copy */
    c->pipe = p[0];
    c->worker = pid;
    c->state = C_RUNNING;
    running++;
    return;
temp:
    log_error(NULL, "event=worker error=\"%s\"", strerror(errno));
    log_result(c, "temp");
    reply(c, AUTH_TEMP, 0);
    c->state = C_IDLE;
}

static void worker_done(struct server *s, struct client *c)
{
    char r = 0;
    ssize_t n;
    do n = read(c->pipe, &r, 1); while (n < 0 && errno == EINTR);
    close(c->pipe);
    c->pipe = -1;
    /* it has written its byte and is exiting (or is dead): reap it now,
     * or it stays a zombie until something next wakes the loop; ECHILD if
     * the loop's waitpid(-1) took it already */
    while (waitpid(c->worker, 0, 0) < 0 && errno == EINTR) {}
    running--;
    if (c->state == C_ORPHAN) { c->state = C_FREE; return; }
    c->state = C_IDLE;
    time_t now = time(0);
    const struct userdb_entry *e = c->name[0] ? userdb_find(&s->users, c->name) : 0;
    if (n == 1 && r == '1' && e) {
        throttle_clear(THROTTLE_USER, c->name);
        log_result(c, "ok");
        reply(c, AUTH_OK, e);
    } else if (n == 1 && r == '0') {
        throttle_fail(THROTTLE_USER, c->name[0] ? c->name : "-", now);
        if (c->req.addr[0]) throttle_fail(THROTTLE_ADDR, c->req.addr, now);
        log_result(c, "bad");
        reply(c, AUTH_BAD, 0);
    } else {
        log_result(c, "temp");
        if (r == 'e') log_error(NULL, "event=verify error=\"malformed hash\" user=%s", c->name);
        reply(c, AUTH_TEMP, 0);
    }
}

static int peer_allowed(const struct server *s, int fd)
{
    struct ucred cr;
    socklen_t l = sizeof cr;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &l) < 0) return 0;
    for (size_t i = 0; i < s->nallowed; i++)
        if (cr.uid == s->allowed[i]) return 1;
    log_warn(NULL, "event=refused peer_uid=%u", (unsigned)cr.uid);
    return 0;
}

static void accept_clients(struct server *s)
{
    for (;;) {
        int fd = accept4(s->listen_fd, 0, 0, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
            listen_pause_start(&accept_pause, errno);
            return;
        }
        if (!peer_allowed(s, fd)) { close(fd); continue; }
        struct client *c = 0;
        for (size_t i = 0; i < CLIENTS_MAX && !c; i++)
            if (clients[i].state == C_FREE) c = &clients[i];
        if (!c) { log_warn(NULL, "event=refused reason=\"too many clients\""); close(fd); continue; }
        memset(c, 0, sizeof *c);
        c->fd = fd;
        c->pipe = -1;
        c->state = C_IDLE;
    }
}

/* start workers for the oldest ready requests; returns ms until the next
 * delayed one becomes ready, or -1 */
static int dispatch(struct server *s)
{
    time_t now = time(0);
    int wait = -1;
    while (running < s->conf->auth_concurrency) {
        struct client *best = 0;
        for (size_t i = 0; i < CLIENTS_MAX; i++) {
            struct client *c = &clients[i];
            if (c->state != C_WAITING || c->not_before > now) continue;
            if (!best || c->seq < best->seq) best = c;
        }
        if (!best) break;
        worker_start(s, best);
    }
    for (size_t i = 0; i < CLIENTS_MAX; i++)
        if (clients[i].state == C_WAITING && clients[i].not_before > now) {
            int ms = (int)(clients[i].not_before - now) * 1000;
            if (wait < 0 || ms < wait) wait = ms;
        }
    return wait;
}

int server_run(struct server *s)
{
    static struct pollfd pfd[1 + CLIENTS_MAX];
    static struct client *owner[1 + CLIENTS_MAX];
    sigset_t block, empty;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGHUP, &sa, 0);
    sigaction(SIGTERM, &sa, 0);
    sigaction(SIGINT, &sa, 0);
    signal(SIGCHLD, SIG_DFL);
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&block);
    sigaddset(&block, SIGHUP);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigprocmask(SIG_BLOCK, &block, 0);
    sigemptyset(&empty);
    while (!got_term) {
        if (got_hup) { got_hup = 0; if (s->root) conf_reload(s); users_reload(s, 1); }
        int wait = dispatch(s);
        /* out of descriptors: the listening socket waits (poll ignores fd -1) */
        int paused = listen_pause_left(&accept_pause);
        if (paused && (wait < 0 || paused < wait)) wait = paused;
        size_t n = 0;
        pfd[n] = (struct pollfd){ .fd = paused ? -1 : s->listen_fd, .events = POLLIN };
        owner[n++] = 0;
        for (size_t i = 0; i < CLIENTS_MAX; i++) {
            struct client *c = &clients[i];
            if (c->state == C_IDLE) pfd[n] = (struct pollfd){ .fd = c->fd, .events = POLLIN };
            else if (c->state == C_RUNNING || c->state == C_ORPHAN) pfd[n] = (struct pollfd){ .fd = c->pipe, .events = POLLIN };
            else continue;
            owner[n++] = c;
        }
        struct timespec ts = { wait / 1000, (long)(wait % 1000) * 1000000L };
        int r = ppoll(pfd, n, wait < 0 ? 0 : &ts, &empty);
        if (r < 0 && errno != EINTR) { log_error(NULL, "event=poll error=\"%s\"", strerror(errno)); return 0; }
        while (waitpid(-1, 0, WNOHANG) > 0) {}
        if (r <= 0) continue;
        for (size_t i = 1; i < n; i++) {
            struct client *c = owner[i];
            if (!pfd[i].revents) continue;
            if (c->state == C_IDLE) client_request(s, c);
            else worker_done(s, c);
        }
        if (pfd[0].revents) accept_clients(s);
    }
    log_info(NULL, "event=stop");
    return 1;
}
