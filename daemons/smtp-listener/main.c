/* smtp-listener - accept SMTP connections; each gets a root monitor and a
 * session chrooted in ROOT/empty as the smtp user (DESIGN.md 1 and 3,
 * docs/INTERFACES.md "Sessions and their privileged parts").
 * Usage: smtp-listener [-d FD] ROOT */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "conf.h"
#include "err.h"
#include "log.h"
#include "listener.h"

static struct listener l;

int main(int argc, char **argv)
{
    int ready_fd = -1, opt;
    char err[1024];
    log_init("smtp-listener");
    while ((opt = getopt(argc, argv, "d:")) != -1) {
        if (opt != 'd' || !conf_fd(optarg, &ready_fd)) die_perm("usage: smtp-listener [-d FD] ROOT");
    }
    const char *root = config_root(optind < argc ? argv[optind] : NULL);
    if (!root) die_perm("usage: smtp-listener [-d FD] ROOT (or $POSTERN_ROOT)");
    if (!listener_load(&l, root, err, sizeof err)) die_perm("%s", err);
    if (!listener_bind(&l, err, sizeof err)) die_temp("%s", err);
    /* libc reads the time zone once, at the first time conversion; doing it
     * here means no session looks for /etc/localtime inside its chroot */
    tzset();
    log_info(NULL, "event=start listeners=%zu hostname=%s", l.ls.n, l.cf.hostname);
    if (ready_fd >= 0) {
        if (write(ready_fd, "\n", 1) != 1) log_warn(NULL, "event=readiness error=write");
        close(ready_fd);
    }
    return listener_run(&l);
}
