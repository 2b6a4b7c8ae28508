/* pop3-listener - POP3 on pop3_listen (INTERFACES.md "Sessions and their
 * privileged parts"; processes in pop3d.h).
 *
 *   pop3-listener [-d FD] ROOT
 *
 * The listener stays root to bind and to let each connection's monitor
 * start the mailbox process as the mail user; it never reads client bytes.
 * Past max_sessions in total or max_sessions_per_client from one address a
 * new connection gets "-ERR [SYS/TEMP] ..." and is closed. SIGHUP reloads
 * postern.conf (listening addresses keep until restart); SIGTERM stops
 * accepting (sessions in progress finish). */
#include "pop3d.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <sodium.h>

#include "conf.h"
#include "err.h"
#include "listen.h"
#include "log.h"
#include "pop3_session.h"
#include "privdrop.h"
#include "tls_spawn.h"

#define CHILDREN_MAX 100000

struct child { pid_t pid; char addr[64]; };
static struct child *children;
static size_t nchildren;
static volatile sig_atomic_t got_hup, got_term;
static struct tls_server_slot tls_slot;   /* tls-proxy -z, for the monitors' TLS */
static char tls_proxy_path[CONFIG_NAME_MAX + 32];
static struct listen_pause accept_pause;   /* out of descriptors: accept nothing for a while */

static void on_signal(int sig) { if (sig == SIGHUP) got_hup = 1; else got_term = 1; }
static void on_child(int sig) { (void)sig; }

static void reap(void)
{
    pid_t pid;
    int st;
    while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
        if (tls_server_slot_reaped(&tls_slot, pid, st)) continue;
        for (size_t i = 0; i < nchildren; i++)
            if (children[i].pid == pid) { children[i] = children[--nchildren]; break; }
    }
}

static size_t count_addr(const char *addr)
{
    size_t n = 0;
    for (size_t i = 0; i < nchildren; i++) n += !strcmp(children[i].addr, addr);
    return n;
}

static void accept_one(const struct config *c, int lfd, const struct listen_set *ls, int implicit)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char addr[64], sid[32];
    int fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC);
    if (fd < 0) {
        listen_pause_start(&accept_pause, errno);
        return;
    }
    sockaddr_text((struct sockaddr *)&ss, addr, sizeof addr);
    if (nchildren >= c->max_sessions || nchildren >= CHILDREN_MAX || count_addr(addr) >= c->max_sessions_per_client) {
        static const char busy[] = "-ERR [SYS/TEMP] Too many connections, try again later\r\n";
        log_warn(NULL, "event=refused addr=%s reason=\"too many sessions\"", addr);
        if (send(fd, busy, sizeof busy - 1, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {}
        close(fd);
        return;
    }
    tls_server_slot_keep(&tls_slot, tls_proxy_path, c->root);
    /* unusable TLS files: CAPA lists no STLS, which is refused */
    int stls = !tls_server_slot_unusable(&tls_slot);
    pid_t pid = fork();
    if (pid < 0) { log_error(NULL, "event=fork error=\"%s\"", strerror(errno)); close(fd); return; }
    if (pid == 0) {
        struct listen_set mine = *ls;
        privdrop_name("pop3-monitor");
        listen_close(&mine);
        signal(SIGHUP, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, 0);
        snprintf(sid, sizeof sid, "p%ld", (long)getpid());
        log_info(sid, "event=connect addr=%s port=%u tls=%d", addr, sockaddr_port((struct sockaddr *)&ss), implicit);
        _exit(monitor_run(c, fd, addr, sid, implicit, stls));
    }
    close(fd);
    children[nchildren].pid = pid;
    memcpy(children[nchildren].addr, addr, sizeof addr);
    nchildren++;
}

static void serve(struct config *c, struct listen_set *ls, const char *root, size_t nplain)
{
    struct pollfd p[LISTEN_MAX];
    sigset_t block, empty;
    sigemptyset(&block);
    sigaddset(&block, SIGHUP);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGCHLD);
    sigprocmask(SIG_BLOCK, &block, 0);
    sigemptyset(&empty);
    snprintf(tls_proxy_path, sizeof tls_proxy_path, "%s/bin/tls-proxy", root);
    tls_server_slot_init(&tls_slot);
    /* TLS connections idle as long as plaintext ones (RFC 1939's 10 min) */
    tls_proxy_set_timeout((unsigned long)pop3d_timeout_ms(c) / 1000);
    tls_server_slot_keep(&tls_slot, tls_proxy_path, root);
    while (!got_term) {
        if (got_hup) {
            static struct config nc;
            char err[CONF_ERR_MAX + 64];
            got_hup = 0;
            if (config_load(&nc, root, err, sizeof err) && pop3_plain_policy(nc.pop3_plaintext_auth, "") >= 0) {
                *c = nc;
                tls_proxy_set_timeout((unsigned long)pop3d_timeout_ms(c) / 1000);
                tls_server_slot_restart(&tls_slot, tls_proxy_path, root);
                log_info(NULL, "event=reload");
            }
            else log_error(NULL, "event=reload error=\"%s\" kept=previous", err);
        }
        /* out of descriptors: the listening sockets wait (poll ignores fd -1) */
        int paused = listen_pause_left(&accept_pause);
        struct timespec ts = { paused / 1000, (long)(paused % 1000) * 1000000L };
        for (size_t i = 0; i < ls->n; i++)
            p[i] = (struct pollfd){ .fd = paused ? -1 : ls->fd[i], .events = POLLIN };
        int r = ppoll(p, ls->n, paused ? &ts : 0, &empty);
        reap();
        if (r <= 0) continue;
        for (size_t i = 0; i < ls->n && !listen_pause_left(&accept_pause); i++)
            if (p[i].revents & POLLIN) accept_one(c, ls->fd[i], ls, i >= nplain);
    }
}

int main(int argc, char **argv)
{
    static struct config c;
    struct listen_set ls;
    char err[CONF_ERR_MAX + 64], path[CONFIG_NAME_MAX + 16];
    int notify = -1;
    size_t bad;
    log_init("pop3-listener");
    int fd_ok = 1;
    if (argc >= 3 && !strcmp(argv[1], "-d")) { fd_ok = conf_fd(argv[2], &notify); argv += 2; argc -= 2; }
    const char *root = config_root(argc > 1 ? argv[1] : 0);
    if (!root || argc > 2 || !fd_ok) die_perm("usage: pop3-listener [-d FD] ROOT");
    if (sodium_init() < 0) die_temp("libsodium initialisation failed");
    if (!config_load(&c, root, err, sizeof err)) die_perm("%s", err);
    if (c.pop3_listen.n == 0 && c.pop3s_listen.n == 0)
        die_perm("%s/conf/postern.conf: pop3_listen, pop3s_listen: no address to listen on", root);
    if (pop3_plain_policy(c.pop3_plaintext_auth, "") < 0)
        die_perm("%s/conf/postern.conf: pop3_plaintext_auth: use loopback, always or never", root);
    snprintf(path, sizeof path, "%s/empty", root);
    if (mkdir(path, 0555) < 0 && errno != EEXIST) die_temp_sys("mkdir %s", path);
    const char *specs[2 * CONFIG_LIST_MAX];
    size_t nspec = 0, nplain = 0;
    for (size_t i = 0; i < c.pop3_listen.n; i++) specs[nspec++] = c.pop3_listen.v[i];
    for (size_t i = 0; i < c.pop3s_listen.n; i++) specs[nspec++] = c.pop3s_listen.v[i];
    if (!listen_open(&ls, specs, nspec, &bad)) die_temp_sys("listen on %s", specs[bad]);
    /* listen_open may open two sockets for "*:port": count the plain ones */
    for (size_t i = 0; i < c.pop3_listen.n; i++) nplain += (specs[i][0] == '*' && specs[i][1] == ':') ? 2 : 1;
    if (!(children = calloc(CHILDREN_MAX, sizeof *children))) die_temp("out of memory");
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGHUP, &sa, 0);
    sigaction(SIGTERM, &sa, 0);
    sigaction(SIGINT, &sa, 0);
    sa.sa_handler = on_child;     /* so that ppoll wakes up to reap */
    sigaction(SIGCHLD, &sa, 0);
    signal(SIGPIPE, SIG_IGN);
    log_info(NULL, "event=start listen=%s", specs[0]);
    if (notify >= 0) { if (write(notify, "\n", 1) != 1) {} close(notify); }
    serve(&c, &ls, root, nplain);
    log_info(NULL, "event=stop");
    return EXIT_OK;
}
