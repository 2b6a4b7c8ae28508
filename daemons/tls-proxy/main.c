/* tls-proxy - terminate TLS for one connection and relay plaintext.
 *
 *   tls-proxy [-i ID] [-t SECONDS] ROOT
 *   tls-proxy -z [-t SECONDS] ROOT
 *   tls-proxy -c ROOT
 *
 * fd 0 is the client's socket, fd 1 the session's plaintext socket. Started
 * as root by a listener's monitor: it loads the certificate and the private
 * key (readable only by postern-tls and root), drops to user_tls chrooted in
 * ROOT/empty, does the handshake, writes one line "TLS <version> <cipher>
 * <sni|->\n" to the session, then relays until both sides are done. On a
 * failed handshake it writes nothing and closes: the session just sees EOF.
 *
 * With -z it is a listener's TLS server instead: fd 0 is the listener's
 * request socket (tls_spawn.h), and each connection it is handed gets a
 * forked child doing the above (proxy.h).
 *
 * With -c it only checks: it loads the certificates and keys as a server
 * would (as root: the key is readable only by root and postern-tls),
 * prints one "file: what" line a problem on stdout (one that does not load,
 * a key that does not match its certificate, a certificate expired or not
 * yet valid) and one "file: warning: ..." line a certificate that expires
 * within TLS_EXPIRY_WARN_DAYS days, and exits 100 if there was a problem,
 * else 0. postern-setup --check runs it. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "conf.h"
#include "err.h"
#include "log.h"
#include "proxy.h"

static void usage(void)
{
    die_perm("usage: tls-proxy [-i ID] [-t SECONDS] ROOT | tls-proxy -z [-t SECONDS] ROOT | tls-proxy -c ROOT");
}

static void tls_paths(struct proxy_setup *ps)
{
    const struct config *c = &ps->c;
    size_t n = sizeof ps->cert;
    int a = c->tls_cert[0] ? snprintf(ps->cert, n, "%s", c->tls_cert)
                           : snprintf(ps->cert, n, "%s/conf/tls/cert.pem", c->root);
    int b = c->tls_key[0] ? snprintf(ps->key, n, "%s", c->tls_key)
                          : snprintf(ps->key, n, "%s/conf/tls/key.pem", c->root);
    int s = snprintf(ps->sni, n, "%s/conf/tls/sni", c->root);
    int e = snprintf(ps->empty, n, "%s/empty", c->root);
    if (a < 0 || b < 0 || s < 0 || e < 0 || (size_t)a >= n || (size_t)b >= n || (size_t)s >= n ||
        (size_t)e >= n)
        die_perm("TLS file paths too long");
}

/* -c: one line a certificate that is not plainly valid */
static void check_dates(void *arg, const char *file, enum tls_validity v, time_t nb, time_t na)
{
    int *problems = arg;
    char date[64];
    tls_date(v == TLS_NOT_YET_VALID ? nb : na, date, sizeof date);
    if (v == TLS_EXPIRING) {
        long days = (long)((na - time(NULL)) / 86400);
        printf("%s: warning: the certificate expires on %s, in %ld day%s\n", file, date, days,
               days == 1 ? "" : "s");
        return;
    }
    printf("%s: the certificate %s %s\n", file, v == TLS_EXPIRED ? "expired on" : "is not valid before",
           date);
    ++*problems;
}

static int check(struct proxy_setup *ps)
{
    static struct tls_server ts;
    char why[512];
    int problems = 0;
    if (!tls_server_load(&ts, ps->cert, ps->key, ps->sni, 0, why, sizeof why)) {
        printf("%s\n", why);
        return EXIT_PERM;
    }
    tls_server_dates(&ts, ps->cert, ps->sni, time(NULL), check_dates, &problems);
    tls_server_free(&ts);
    return problems ? EXIT_PERM : EXIT_OK;
}

int main(int argc, char **argv)
{
    const char *id = NULL;
    int opt, server = 0, check_only = 0;
    static struct proxy_setup ps;
    log_init("tls-proxy");
    while ((opt = getopt(argc, argv, "ci:t:z")) != -1) {
        if (opt == 'i') id = optarg;
        else if (opt == 't') {
            unsigned long long t;
            char why[64];
            if (!conf_uint(optarg, 1, 86400, &t, why, sizeof why)) usage();
            ps.timeout = (unsigned long)t;
        }
        else if (opt == 'z') server = 1;
        else if (opt == 'c') check_only = 1;
        else usage();
    }
    const char *root = config_root(optind < argc ? argv[optind] : NULL);
    if (!root) usage();

    char err[CONF_ERR_MAX];
    if (!config_load(&ps.c, root, err, sizeof err)) die_perm("%s", err);
    if (!ps.timeout) ps.timeout = ps.c.session_timeout;
    tls_paths(&ps);
    if (check_only) return check(&ps);
    static struct tls_server ts;
    char why[512];
    if (!tls_server_load(&ts, ps.cert, ps.key, ps.sni, server, why, sizeof why)) die_perm("%s", why);
    if (!privuser_lookup(ps.c.user_tls, &ps.u)) die_perm_sys("user %s", ps.c.user_tls);
    return server ? proxy_serve(&ts, &ps) : proxy_connection(&ts, &ps, id);
}
