/* proxy.h - tls-proxy's two ways to run: once for the connection on fds 0
 * and 1 (exec'd per connection), or as a server (-z) that loads the
 * certificates once and forks a child per connection it is handed. */
#ifndef POSTERN_TLS_PROXY_H
#define POSTERN_TLS_PROXY_H

#include "config.h"
#include "privdrop.h"
#include "tls_relay.h"

struct proxy_setup {
    struct config c;
    char cert[4096], key[4096], sni[4096], empty[4096];
    struct privuser u;             /* user_tls */
    unsigned long timeout;         /* seconds a relay may idle */
};

/* The connection on fd 0 (client) and fd 1 (session): drop to user_tls
 * chrooted in ROOT/empty (when root), handshake, the "TLS ..." line, relay.
 * Returns the exit code. */
int proxy_connection(struct tls_server *ts, const struct proxy_setup *ps, const char *id);

/* -z: requests (tls_spawn.h) on fd 0 until end of file or SIGTERM, a child
 * per request running proxy_connection. Before each it reloads the
 * certificates if their files changed (keeping the old ones, with an error
 * logged, if the new ones do not load). A child that crashes (killed by a
 * signal other than a stop signal, or exiting with a status tls-proxy never
 * uses, as a sanitizer does) ends the server (111), so that the listener
 * starts a fresh one: a crash never meets the same address layout twice. */
int proxy_serve(struct tls_server *ts, const struct proxy_setup *ps);

#endif
