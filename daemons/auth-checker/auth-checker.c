/* auth-checker - the only reader of conf/users: verifies passwords for the
 * listeners over ROOT/run/auth/socket (INTERFACES.md "auth-checker protocol").
 *
 *   auth-checker [-d FD] ROOT
 *   auth-checker --checkpassword ROOT prog...   (see checkpassword.c)
 *
 * Binds the socket as root (directory run/auth 0750 root:postern), then
 * drops to user_auth and serves. SIGHUP (or a rewritten users file) reloads
 * the users. Unknown users are verified against a dummy hash of the cost
 * most users' hashes have and get Rbad. Throttling numbers: lib/auth_throttle.h. */
#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <sodium.h>

#include "conf.h"
#include "err.h"
#include "log.h"
#include "privdrop.h"
#include "server.h"

static int bind_socket(const char *root)
{
    char dir[CONFIG_NAME_MAX + 16];
    struct sockaddr_un sa;
    snprintf(dir, sizeof dir, "%s/run", root);
    if (mkdir(dir, 0755) < 0 && errno != EEXIST) return -1;
    snprintf(dir, sizeof dir, "%s/run/auth", root);
    if (mkdir(dir, 0750) < 0 && errno != EEXIST) return -1;
    struct group *g = privdrop_is_root() ? getgrnam("postern") : 0;
    if (g && (chown(dir, 0, g->gr_gid) < 0 || chmod(dir, 0750) < 0)) return -1;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    int n = snprintf(sa.sun_path, sizeof sa.sun_path, "%s/%s", root, AUTH_SOCKET);
    if (n < 0 || (size_t)n >= sizeof sa.sun_path) { errno = ENAMETOOLONG; return -1; }
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return -1;
    unlink(sa.sun_path);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || chmod(sa.sun_path, 0666) < 0 || listen(fd, 128) < 0) {
        int e = errno; close(fd); errno = e; return -1;
    }
    return fd;
}

static void allow_peer(struct server *s, const char *user)
{
    struct privuser u;
    if (privuser_lookup(user, &u)) s->allowed[s->nallowed++] = u.uid;
    else log_warn(NULL, "event=start warning=\"no system user %s: it cannot reach the socket\"", user);
}

int main(int argc, char **argv)
{
    static struct config conf;
    static struct server s;
    char err[CONF_ERR_MAX + 64];
    int notify = -1;
    log_init("auth-checker");
    if (argc >= 3 && !strcmp(argv[1], "--checkpassword")) return checkpassword_main(argv[2], argv + 3);
    int fd_ok = 1;
    if (argc >= 3 && !strcmp(argv[1], "-d")) { fd_ok = conf_fd(argv[2], &notify); argv += 2; argc -= 2; }
    const char *root = config_root(argc > 1 ? argv[1] : 0);
    if (!root || argc > 2 || !fd_ok) die_perm("usage: auth-checker [-d FD] ROOT | --checkpassword ROOT prog...");
    if (sodium_init() < 0) die_temp("libsodium initialisation failed");
    if (!config_load(&conf, root, err, sizeof err)) die_perm("%s", err);
    enum userdb_pwlevel lvl;
    if (!userdb_pwlevel_parse(conf.pwhash_level, &lvl))
        die_perm("%s/conf/postern.conf: pwhash_level: not interactive, moderate or sensitive", root);
    s.conf = &conf;
    s.root = root;
    snprintf(s.users_path, sizeof s.users_path, "%s/conf/users", root);
    if (!server_users_load(&s, err, sizeof err)) die_perm("%s", err);
    struct privuser me;
    if (!privuser_lookup(conf.user_auth, &me)) die_perm("no system user %s (user_auth)", conf.user_auth);
    s.allowed[s.nallowed++] = 0;
    allow_peer(&s, conf.user_smtp);
    allow_peer(&s, conf.user_pop3);
    if (!privdrop_is_root()) s.allowed[s.nallowed++] = getuid();
    if ((s.listen_fd = bind_socket(root)) < 0) die_temp_sys("bind %s/%s", root, AUTH_SOCKET);
    if (!privdrop(NULL, &me)) die_temp_sys("dropping privileges to %s", conf.user_auth);
    /* the dummy hash for unknown users: same algorithm and cost as the users' */
    s.pwlevel = lvl;
    if (!server_dummy_refresh(&s)) die_temp_sys("making the dummy hash");
    log_info(NULL, "event=start users=%zu concurrency=%llu", s.users.n, conf.auth_concurrency);
    if (notify >= 0) { if (write(notify, "\n", 1) != 1) {} close(notify); }
    return server_run(&s) ? EXIT_OK : EXIT_TEMP;
}
