/* listener.c - bind, accept, count, fork; reload on SIGHUP, drain on SIGTERM.
 * The listener never reads a byte from a client. */
#include "listener.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "io.h"
#include "log.h"
#include "smtp_net.h"
#include "smtp_session.h"
#include "tls_spawn.h"

#define DRAIN_GRACE_SEC 10

static int sig_pipe[2] = { -1, -1 };
static struct tls_server_slot tls_slot;   /* tls-proxy -z, for the monitors' TLS */
static char tls_proxy_path[CONFIG_NAME_MAX + 32];
static struct listen_pause accept_pause;   /* out of descriptors: accept nothing for a while */
static volatile sig_atomic_t got_term, got_hup;

static void on_signal(int sig)
{
    int e = errno;
    if (sig == SIGTERM || sig == SIGINT) got_term = 1;
    if (sig == SIGHUP) got_hup = 1;
    if (write(sig_pipe[1], "", 1) < 0) { /* pipe full: a wakeup is pending anyway */ }
    errno = e;
}

static int load_into(const char *root, struct config *cf, struct smtp_rcptmap *map,
                     struct privuser *u, char *err, size_t errlen)
{
    if (!config_load(cf, root, err, errlen)) return 0;
    for (size_t i = 0; i < cf->relay_networks.n; i++)
        if (!smtp_net_valid(cf->relay_networks.v[i])) {
            snprintf(err, errlen, "%s/conf/postern.conf: relay_networks: bad network %s", root,
                     cf->relay_networks.v[i]);
            return 0;
        }
    if (!privuser_lookup(cf->user_smtp, u)) {
        snprintf(err, errlen, "%s/conf/postern.conf: user_smtp: no such user %s", root, cf->user_smtp);
        return 0;
    }
    return smtp_rcptmap_load(map, root, err, errlen);
}

static const char *const map_files[2] = { "conf/recipients", "conf/aliases" };

/* 1 if either file of the map changed since it was read (filesig.h); now
 * gets their signatures, taken before any reading */
static int maps_stale(struct listener *l, struct filesig now[2])
{
    char path[4096];
    int stale = 0;
    for (size_t i = 0; i < 2; i++) {
        int n = snprintf(path, sizeof path, "%s/%s", l->root, map_files[i]);
        if (n < 0 || (size_t)n >= sizeof path) { memset(&now[i], 0, sizeof now[i]); continue; }
        if (filesig_cache_stale(&l->map_c[i], path, &now[i])) stale = 1;
    }
    return stale;
}

static void maps_loaded(struct listener *l, const struct filesig now[2])
{
    for (size_t i = 0; i < 2; i++) filesig_cache_loaded(&l->map_c[i], &now[i]);
}

int listener_load(struct listener *l, const char *root, char *err, size_t errlen)
{
    struct filesig now[2];
    memset(l, 0, sizeof *l);
    l->root = root;
    maps_stale(l, now);
    maps_loaded(l, now);
    return load_into(root, &l->cf, &l->map, &l->smtp_user, err, errlen);
}

/* Before accepting: if postern-user (or the operator) changed the recipient
 * map or the aliases since they were read, read them again, so a new user
 * is accepted at once without a SIGHUP. Two stat() calls per accept. A file
 * that failed to load is tried again only once it changes; one changed
 * just before it was read is read again (quietly) until it settles. */
static void maps_refresh(struct listener *l)
{
    struct filesig now[2];
    if (!maps_stale(l, now)) return;
    int quiet = filesig_same(&l->map_c[0].sig, &now[0]) && filesig_same(&l->map_c[1].sig, &now[1]);
    struct smtp_rcptmap map;
    char err[1024];
    maps_loaded(l, now);
    if (!smtp_rcptmap_load(&map, l->root, err, sizeof err)) {
        if (!quiet)
            log_error(NULL, "event=reload what=recipients status=failed error=\"%s\" kept=previous", err);
        return;
    }
    smtp_rcptmap_free(&l->map);
    l->map = map;
    if (!quiet) log_info(NULL, "event=reload what=recipients status=ok recipients=%zu", l->map.n);
}

int listener_bind(struct listener *l, char *err, size_t errlen)
{
    const char *specs[3 * CONFIG_LIST_MAX];
    size_t n = 0, bad = 0;
    for (size_t i = 0; i < l->cf.smtp_listen.n; i++) specs[n++] = l->cf.smtp_listen.v[i];
    size_t nsmtp = n;
    for (size_t i = 0; i < l->cf.submission_listen.n; i++) specs[n++] = l->cf.submission_listen.v[i];
    size_t nsub = n;
    for (size_t i = 0; i < l->cf.smtps_listen.n; i++) specs[n++] = l->cf.smtps_listen.v[i];
    if (!listen_open(&l->ls, specs, n, &bad)) {
        snprintf(err, errlen, "cannot listen on %s: %s", specs[bad], strerror(errno));
        return 0;
    }
    /* listen_open may open two sockets for "*:port": count SMTP ones again */
    l->nsmtp = l->nsub = 0;
    for (size_t i = 0; i < nsub; i++) {
        size_t k = (specs[i][0] == '*' && specs[i][1] == ':') ? 2 : 1;
        if (i < nsmtp) l->nsmtp += k;
        l->nsub += k;
    }
    return 1;
}

static int same_list(const struct config_list *a, const struct config_list *b)
{
    if (a->n != b->n) return 0;
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->v[i], b->v[i])) return 0;
    return 1;
}

static void reload(struct listener *l)
{
    struct config cf;
    struct smtp_rcptmap map;
    struct privuser u;
    char err[1024];
    struct filesig sig[2];
    maps_stale(l, sig);
    if (!load_into(l->root, &cf, &map, &u, err, sizeof err)) {
        log_error(NULL, "event=reload status=failed error=\"%s\" kept=previous", err);
        return;
    }
    if (!same_list(&cf.smtp_listen, &l->cf.smtp_listen) ||
        !same_list(&cf.submission_listen, &l->cf.submission_listen) ||
        !same_list(&cf.smtps_listen, &l->cf.smtps_listen))
        log_warn(NULL, "event=reload note=listen_addresses_change_needs_restart");
    smtp_rcptmap_free(&l->map);
    maps_loaded(l, sig);
    l->cf = cf;
    l->map = map;
    l->smtp_user = u;
    tls_server_slot_restart(&tls_slot, tls_proxy_path, l->root);
    log_info(NULL, "event=reload status=ok recipients=%zu", l->map.n);
}

static void reap(struct listener *l)
{
    int st;
    pid_t pid;
    while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
        if (tls_server_slot_reaped(&tls_slot, pid, st)) continue;
        for (size_t i = 0; i < l->nconn; i++)
            if (l->conn[i].pid == pid) {
                l->conn[i] = l->conn[--l->nconn];
                break;
            }
    }
}

static size_t count_client(const struct listener *l, const char *client)
{
    size_t n = 0;
    for (size_t i = 0; i < l->nconn; i++) n += !strcmp(l->conn[i].client, client);
    return n;
}

/* refuse a connection past a limit: one line, never read, close */
static void refuse(const struct listener *l, int fd, const char *client, const char *what)
{
    char line[512];
    int n = snprintf(line, sizeof line, "421 4.7.0 %s Error: too many connections%s%s\r\n",
                     l->cf.hostname, *what ? " from " : "", what);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    if (n > 0 && send(fd, line, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) { /* gone already */ }
    close(fd);
    log_info(NULL, "event=refused client=%s reason=%s", client, *what ? "per_client_limit" : "session_limit");
}

static void accept_one(struct listener *l, int lfd, int port)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    char client[64];
    int fd = accept4(lfd, (struct sockaddr *)&ss, &len, SOCK_CLOEXEC);
    if (fd < 0) {
        if (!listen_pause_start(&accept_pause, errno) && errno != EAGAIN && errno != EINTR
            && errno != ECONNABORTED)
            log_warn(NULL, "event=accept error=\"%s\"", strerror(errno));
        return;
    }
    sockaddr_text((struct sockaddr *)&ss, client, sizeof client);
    if (l->nconn >= l->cf.max_sessions) { refuse(l, fd, client, ""); return; }
    /* the per-address limit is for strangers: relay_networks (our own
     * hosts, loopback by default) are held only to max_sessions, as
     * Postfix exempts $mynetworks */
    if (count_client(l, client) >= l->cf.max_sessions_per_client &&
        !smtp_net_match(&l->cf.relay_networks, (struct sockaddr *)&ss)) {
        refuse(l, fd, client, client);
        return;
    }
    if (l->nconn == l->conncap) {
        size_t cap = l->conncap ? l->conncap * 2 : 64;
        struct conn *v = realloc(l->conn, cap * sizeof *v);
        if (!v) { refuse(l, fd, client, ""); return; }
        l->conn = v;
        l->conncap = cap;
    }
    tls_server_slot_keep(&tls_slot, tls_proxy_path, l->root);
    l->tls_unusable = tls_server_slot_unusable(&tls_slot);     /* for conn_serve */
    /* the connection's processes keep SIGTERM blocked from the start: it
     * is the session's to take, while it waits for a command (conn.c) */
    sigset_t term, old;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    sigprocmask(SIG_BLOCK, &term, &old);
    pid_t pid = fork();
    if (pid < 0) {
        sigprocmask(SIG_SETMASK, &old, NULL);
        log_error(NULL, "event=fork error=\"%s\"", strerror(errno));
        close(fd);
        return;
    }
    if (pid == 0) {
        listen_close(&l->ls);
        close(sig_pipe[0]);
        close(sig_pipe[1]);
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        signal(SIGHUP, SIG_DFL);
        signal(SIGCHLD, SIG_DFL);
        setpgid(0, 0);
        conn_serve(l, fd, (struct sockaddr *)&ss, port);
    }
    sigprocmask(SIG_SETMASK, &old, NULL);
    setpgid(pid, pid);   /* either side may win the race; both ask the same */
    close(fd);
    l->conn[l->nconn].pid = pid;
    snprintf(l->conn[l->nconn].client, sizeof l->conn[l->nconn].client, "%s", client);
    l->nconn++;
}

static void set_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGCHLD, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

int listener_run(struct listener *l)
{
    struct pollfd pfd[LISTEN_MAX + 1];
    time_t deadline = 0;
    if (pipe2(sig_pipe, O_CLOEXEC | O_NONBLOCK) < 0) die_temp_sys("pipe");
    set_signals();
    snprintf(tls_proxy_path, sizeof tls_proxy_path, "%s/bin/tls-proxy", l->root);
    tls_server_slot_init(&tls_slot);
    tls_server_slot_keep(&tls_slot, tls_proxy_path, l->root);
    for (;;) {
        size_t n = 0;
        pfd[n++] = (struct pollfd){ .fd = sig_pipe[0], .events = POLLIN, .revents = 0 };
        for (size_t i = 0; i < l->ls.n; i++)
            pfd[n++] = (struct pollfd){ .fd = l->ls.fd[i], .events = POLLIN, .revents = 0 };
        int timeout = deadline ? 500 : -1, paused = listen_pause_left(&accept_pause);
        if (paused) {       /* out of descriptors: the listening sockets wait */
            for (size_t i = 1; i < n; i++) pfd[i].fd = -1;
            if (timeout < 0 || paused < timeout) timeout = paused;
        }
        int r = poll(pfd, n, timeout);
        if (r < 0 && errno != EINTR) die_temp_sys("poll");
        if (r > 0 && (pfd[0].revents & POLLIN)) {
            char junk[64];
            while (read(sig_pipe[0], junk, sizeof junk) > 0) {}
        }
        reap(l);
        if (got_hup) { got_hup = 0; reload(l); }
        if (got_term && !deadline) {
            listen_close(&l->ls);
            deadline = time(NULL) + DRAIN_GRACE_SEC;
            log_info(NULL, "event=stopping sessions=%zu", l->nconn);
            /* each session finishes what it is doing, answers the client's
             * next command wait with 421 and ends (smtp_session_stop_on) */
            for (size_t i = 0; i < l->nconn; i++) kill(-l->conn[i].pid, SIGTERM);
        }
        if (deadline) {
            if (!l->nconn) { log_info(NULL, "event=stop"); return EXIT_OK; }
            if (time(NULL) >= deadline) {
                for (size_t i = 0; i < l->nconn; i++) kill(-l->conn[i].pid, SIGKILL);
                log_info(NULL, "event=stop killed=%zu", l->nconn);
                return EXIT_OK;
            }
            continue;
        }
        if (r <= 0) continue;
        maps_refresh(l);
        for (size_t i = 1; i < n && !listen_pause_left(&accept_pause); i++)
            if (pfd[i].revents & POLLIN)
                accept_one(l, pfd[i].fd, i - 1 < l->nsmtp ? SMTP_PORT_SMTP :
                                         i - 1 < l->nsub ? SMTP_PORT_SUBMISSION : SMTP_PORT_SMTPS);
    }
}
