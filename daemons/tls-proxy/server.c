/* server.c - tls-proxy -z: the certificates loaded once, a forked child per
 * connection a monitor hands over (proxy.h, tls_spawn.h). */
#include "proxy.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "filesig.h"
#include "io.h"
#include "log.h"
#include "tls_spawn.h"

/* how long one server's session ticket keys are used (Postfix rotates
 * its own every hour as well) */
#define TICKET_KEY_LIFE_MS (3600LL * 1000)

static volatile sig_atomic_t got_term;

static void on_signal(int sig)
{
    if (sig == SIGTERM || sig == SIGINT) got_term = 1;
}

/* what the loaded certificates were read from: the default pair, the SNI
 * directory (a name added or removed) and each name's pair */
struct tls_files {
    struct filesig cert, key, sni;
    size_t nsni;
    struct filesig sni_cert[TLS_SNI_MAX], sni_key[TLS_SNI_MAX];
};

static void files_read(const struct tls_server *ts, const struct proxy_setup *ps, struct tls_files *f)
{
    char path[4096 + 300];
    memset(f, 0, sizeof *f);
    filesig_read(ps->cert, &f->cert);
    filesig_read(ps->key, &f->key);
    filesig_read(ps->sni, &f->sni);
    f->nsni = ts->nsni;
    for (size_t i = 0; i < ts->nsni; i++) {
        snprintf(path, sizeof path, "%s/%s/cert.pem", ps->sni, ts->sni_name[i]);
        filesig_read(path, &f->sni_cert[i]);
        snprintf(path, sizeof path, "%s/%s/key.pem", ps->sni, ts->sni_name[i]);
        filesig_read(path, &f->sni_key[i]);
    }
}

static int files_same(const struct tls_files *a, const struct tls_files *b)
{
    if (!filesig_same(&a->cert, &b->cert) || !filesig_same(&a->key, &b->key) ||
        !filesig_same(&a->sni, &b->sni) || a->nsni != b->nsni)
        return 0;
    for (size_t i = 0; i < a->nsni; i++)
        if (!filesig_same(&a->sni_cert[i], &b->sni_cert[i]) || !filesig_same(&a->sni_key[i], &b->sni_key[i]))
            return 0;
    return 1;
}

/* a certificate in use that has expired, is not valid yet or expires soon:
 * a warning at start and after each reload (so at least hourly: the
 * server is restarted for its ticket keys) */
static void log_dates(void *arg, const char *file, enum tls_validity v, time_t nb, time_t na)
{
    char date[64];
    (void)arg;
    tls_date(v == TLS_NOT_YET_VALID ? nb : na, date, sizeof date);
    log_warn(NULL, "event=certificate file=%s problem=%s date=\"%s\"", file,
             v == TLS_EXPIRED ? "expired" : v == TLS_NOT_YET_VALID ? "not_yet_valid" : "expires_soon", date);
}

/* a certificate replaced since it was loaded is used from the next
 * connection on, as with a tls-proxy exec'd per connection. Files that do
 * not load leave the old certificates in use; they are tried again once
 * they change again. */
static void refresh(struct tls_server *ts, const struct proxy_setup *ps, struct tls_files *loaded)
{
    struct tls_files now;
    files_read(ts, ps, &now);
    if (files_same(&now, loaded)) return;
    struct tls_server fresh;
    char why[512];
    if (!tls_server_load(&fresh, ps->cert, ps->key, ps->sni, 1, why, sizeof why)) {
        tls_server_free(&fresh);
        log_error(NULL, "event=reload status=failed error=\"%s\" kept=previous", why);
        *loaded = now;
        return;
    }
    tls_server_free(ts);
    *ts = fresh;
    files_read(ts, ps, loaded);
    log_info(NULL, "event=reload what=certificates status=ok names=%zu", ts->nsni);
    tls_server_dates(ts, ps->cert, ps->sni, time(NULL), log_dates, NULL);
}

/* reap children; 0 if one crashed: died of a signal that is not a stop, or
 * exited with a status tls-proxy never uses (a sanitizer's report) */
static int reap(void)
{
    int st, ok = 1;
    pid_t pid;
    while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
        if (WIFEXITED(st)) {
            int code = WEXITSTATUS(st);
            if (code == EXIT_OK || code == EXIT_PERM || code == EXIT_TEMP) continue;
            log_error(NULL, "event=child_crashed pid=%ld status=%d action=restart", (long)pid, code);
        } else {
            int sig = WTERMSIG(st);
            if (sig == SIGTERM || sig == SIGKILL || sig == SIGINT || sig == SIGHUP || sig == SIGPIPE) continue;
            log_error(NULL, "event=child_crashed pid=%ld signal=%d action=restart", (long)pid, sig);
        }
        ok = 0;
    }
    return ok;
}

static _Noreturn void child(struct tls_server *ts, const struct proxy_setup *ps, const char *id, int client, int plain)
{
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGCHLD, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (dup2(client, 0) < 0 || dup2(plain, 1) < 0) _exit(EXIT_TEMP);
    int fl = fcntl(0, F_GETFL);
    if (fl >= 0) fcntl(0, F_SETFL, fl & ~O_NONBLOCK);
    closefrom(3);
    privdrop_name("tls-proxy");
    _exit(proxy_connection(ts, ps, id[0] ? id : NULL));
}

int proxy_serve(struct tls_server *ts, const struct proxy_setup *ps)
{
    struct tls_files loaded;
    struct sigaction sa;
    sigset_t block, none;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGCHLD, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGCHLD);
    sigprocmask(SIG_BLOCK, &block, NULL);
    sigemptyset(&none);
    privdrop_name("tls-server");
    files_read(ts, ps, &loaded);
    log_info(NULL, "event=start mode=server names=%zu", ts->nsni);
    tls_server_dates(ts, ps->cert, ps->sni, time(NULL), log_dates, NULL);
    long long rotate_at = io_now_ms() + TICKET_KEY_LIFE_MS;
    for (;;) {
        struct pollfd p = { .fd = 0, .events = POLLIN, .revents = 0 };
        long long left = rotate_at - io_now_ms();
        struct timespec ts_left = { .tv_sec = left > 0 ? left / 1000 : 0,
                                    .tv_nsec = left > 0 ? (left % 1000) * 1000000 : 0 };
        int r = ppoll(&p, 1, &ts_left, &none), e = errno;
        if (!reap()) return EXIT_TEMP;
        if (got_term) { log_info(NULL, "event=stop"); return EXIT_OK; }
        if (io_now_ms() >= rotate_at) {
            /* the session ticket keys are this process's: its listener
             * starts a new server, with new ones, for the next connection */
            log_info(NULL, "event=stop reason=ticket_key_rotation");
            return EXIT_OK;
        }
        if (r < 0 && e != EINTR) { errno = e; die_temp_sys("poll"); }
        if (r <= 0) continue;
        char id[TLS_ID_MAX + 1];
        int client, plain;
        if (!tls_proxy_request_recv(0, id, sizeof id, &client, &plain)) {
            if (errno == EPIPE) { log_info(NULL, "event=stop reason=listener_gone"); return EXIT_OK; }
            if (errno == EPROTO) { log_warn(NULL, "event=request error=malformed"); continue; }
            die_temp_sys("recvmsg");
        }
        refresh(ts, ps, &loaded);
        pid_t pid = fork();
        if (pid == 0) child(ts, ps, id, client, plain);
        if (pid < 0) log_error(id[0] ? id : NULL, "event=fork error=\"%s\"", strerror(errno));
        close(client);
        close(plain);
    }
}
