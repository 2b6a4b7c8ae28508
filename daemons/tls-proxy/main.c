/* tls-proxy - terminate TLS for one connection and relay plaintext.
 *
 *   tls-proxy [-i ID] [-t SECONDS] ROOT
 *
 * fd 0 is the client's socket, fd 1 the session's plaintext socket. Started
 * as root by a listener's monitor: it loads the certificate and the private
 * key (readable only by postern-tls and root), drops to user_tls chrooted in
 * ROOT/empty, does the handshake, writes one line "TLS <version> <cipher>
 * <sni|->\n" to the session, then relays until both sides are done. On a
 * failed handshake it writes nothing and closes: the session just sees EOF. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "conf.h"
#include "config.h"
#include "err.h"
#include "io.h"
#include "log.h"
#include "privdrop.h"
#include "tls_relay.h"

#ifdef __SANITIZE_ADDRESS__
/* make sanitize: LeakSanitizer's exit-time check needs /proc and ptrace,
 * which a process dropped to user_tls and chrooted in ROOT/empty has not
 * (it would fail and turn exit 0 into 1). Before the drop it still runs. */
static int dropped;
int __lsan_is_turned_off(void);
int __lsan_is_turned_off(void) { return dropped; }
#define SANITIZER_DROPPED() (dropped = 1)
#else
#define SANITIZER_DROPPED() ((void)0)
#endif

static void usage(void) { die_perm("usage: tls-proxy [-i ID] [-t SECONDS] ROOT"); }

static void tls_paths(const struct config *c, char *cert, char *key, char *sni, size_t n)
{
    int a = c->tls_cert[0] ? snprintf(cert, n, "%s", c->tls_cert)
                           : snprintf(cert, n, "%s/conf/tls/cert.pem", c->root);
    int b = c->tls_key[0] ? snprintf(key, n, "%s", c->tls_key)
                          : snprintf(key, n, "%s/conf/tls/key.pem", c->root);
    int s = snprintf(sni, n, "%s/conf/tls/sni", c->root);
    if (a < 0 || b < 0 || s < 0 || (size_t)a >= n || (size_t)b >= n || (size_t)s >= n)
        die_perm("TLS file paths too long");
}

int main(int argc, char **argv)
{
    const char *id = NULL;
    unsigned long timeout = 0;
    int opt;
    log_init("tls-proxy");
    while ((opt = getopt(argc, argv, "i:t:")) != -1) {
        if (opt == 'i') id = optarg;
        else if (opt == 't') timeout = strtoul(optarg, NULL, 10);
        else usage();
    }
    const char *root = config_root(optind < argc ? argv[optind] : NULL);
    if (!root) usage();

    static struct config c;
    char err[CONF_ERR_MAX];
    if (!config_load(&c, root, err, sizeof err)) die_perm("%s", err);
    if (!timeout) timeout = c.session_timeout;

    static char cert[4096], key[4096], sni[4096], empty[4096];
    tls_paths(&c, cert, key, sni, sizeof cert);
    static struct tls_server ts;
    char why[512];
    if (!tls_server_load(&ts, cert, key, sni, why, sizeof why)) die_perm("%s", why);

    struct privuser u;
    if (!privuser_lookup(c.user_tls, &u)) die_perm_sys("user %s", c.user_tls);
    if (snprintf(empty, sizeof empty, "%s/empty", root) >= (int)sizeof empty) die_perm("ROOT too long");
    int was_root = privdrop_is_root();
    if (!privdrop(was_root ? empty : NULL, &u)) die_temp_sys("cannot drop privileges to %s", c.user_tls);
    if (was_root) SANITIZER_DROPPED();
    signal(SIGPIPE, SIG_IGN);

    SSL *ssl;
    if (!tls_accept(&ts, 0, 60000, &ssl, why, sizeof why)) {
        log_info(id, "result=handshake_failed why=\"%s\"", why);
        return EXIT_OK;
    }
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    char sni_safe[128];
    log_safe(sni_safe, sizeof sni_safe, name ? name : "-", name ? strlen(name) : 1);
    char hello[512];
    int n = snprintf(hello, sizeof hello, "TLS %s %s %s\n", SSL_get_version(ssl),
                     SSL_CIPHER_get_name(SSL_get_current_cipher(ssl)), sni_safe);
    if (n < 0 || (size_t)n >= sizeof hello || !fd_write_all(1, hello, (size_t)n, 10000))
        die_temp_sys("cannot reach the session");

    struct tls_stats st;
    tls_relay(ssl, 0, 1, (int)(timeout * 1000), &st);
    log_info(id, "proto=%s cipher=%s sni=%s in=%llu out=%llu end=%s", SSL_get_version(ssl),
             SSL_CIPHER_get_name(SSL_get_current_cipher(ssl)), sni_safe, st.net_in, st.net_out, st.end);
    SSL_free(ssl);
    return EXIT_OK;
}
