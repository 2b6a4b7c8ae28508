/* connection.c - one TLS connection: drop privileges, handshake, relay. */
#include "proxy.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "err.h"
#include "io.h"
#include "log.h"
#include "sandbox.h"

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

int proxy_connection(struct tls_server *ts, const struct proxy_setup *ps, const char *id)
{
    int was_root = privdrop_is_root();
    if (!privdrop(was_root ? ps->empty : NULL, &ps->u)) die_temp_sys("cannot drop privileges to %s", ps->c.user_tls);
    if (was_root) SANITIZER_DROPPED();
    signal(SIGPIPE, SIG_IGN);
    if (!sandbox_enter(SANDBOX_NO_FILES))
        log_error(id, "event=sandbox error=\"%s\"", strerror(errno));

    SSL *ssl;
    char why[512];
    /* at most a minute, and never longer than the session waits for it */
    int handshake_ms = ps->timeout < 60 ? (int)ps->timeout * 1000 : 60000;
    if (!tls_accept(ts, 0, handshake_ms, &ssl, why, sizeof why)) {
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
    unsigned long idle = ps->timeout > 2000000 ? 2000000 : ps->timeout;
    tls_relay(ssl, 0, 1, (int)(idle * 1000), &st);
    log_info(id, "proto=%s cipher=%s sni=%s in=%llu out=%llu end=%s", SSL_get_version(ssl),
             SSL_CIPHER_get_name(SSL_get_current_cipher(ssl)), sni_safe, st.net_in, st.net_out, st.end);
    SSL_free(ssl);
    return EXIT_OK;
}
