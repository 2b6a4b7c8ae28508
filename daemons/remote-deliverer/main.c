/* remote-deliverer - queue-manager's outbound SMTP deliverer. Started as
 * root by queue-manager with a SOCK_SEQPACKET socket on fd 0 (docs/
 * INTERFACES.md); reads its configuration (postern.conf, conf/routes,
 * conf/relay-auth), drops to user_remote without a chroot (it needs
 * /etc/resolv.conf, the CA store and its conf/ files for SIGHUP reloads;
 * docs/REMOTE.md says why), then delivers each job in its own child. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "conf.h"
#include "err.h"
#include "log.h"
#include "privdrop.h"
#include "remote.h"

static struct remote_conf rc;

int main(int argc, char **argv)
{
    char err[512];
    int notify_fd = -1;
    log_init("remote-deliverer");
    int fd_ok = 1;
    if (argc > 2 && !strcmp(argv[1], "-d")) {
        fd_ok = conf_fd(argv[2], &notify_fd);
        argv += 2;
        argc -= 2;
    }
    const char *root = config_root(argc > 1 ? argv[1] : NULL);
    if (!root || argc > 2 || !fd_ok) die_perm("usage: remote-deliverer [-d FD] ROOT (job socket on fd 0)");
    if (!remote_conf_load(&rc, root, err, sizeof err)) die_perm("%s", err);

    struct privuser u;
    if (!privuser_lookup(rc.cfg.user_remote, &u)) die_perm("user %s: no such user", rc.cfg.user_remote);
    if (!privdrop(NULL, &u)) die_temp_sys("cannot drop privileges to %s", rc.cfg.user_remote);
    tls_client_global_init();
    tls_client_prepare(&rc.routes);     /* as user_remote: the CA files it can read */
    /* waiting jobs hold their message fds: allow as many as the hard limit */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
    log_info(NULL, "event=start user=%s routes=%zu per_domain=%llu", rc.cfg.user_remote,
             rc.routes.n, rc.cfg.remote_per_domain);
    if (notify_fd >= 0) {
        if (write(notify_fd, "\n", 1) < 0) {}
        close(notify_fd);
    }
    sched_run(&rc, root);
    log_info(NULL, "event=exit");
    return EXIT_OK;
}
