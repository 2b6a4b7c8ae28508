/* listener.h - smtp-listener's root process: the listening sockets, the
 * table of live connections (for max_sessions and max_sessions_per_client),
 * and one connection's processes (monitor + chrooted session). */
#ifndef SMTP_LISTENER_H
#define SMTP_LISTENER_H

#include <sys/socket.h>
#include <sys/types.h>

#include "config.h"
#include "filesig.h"
#include "listen.h"
#include "privdrop.h"
#include "smtp_rcptmap.h"

struct conn {
    pid_t pid;                 /* the monitor; its process group holds the session */
    char client[64];
};

struct listener {
    const char *root;
    struct config cf;
    struct smtp_rcptmap map;
    struct filesig_cache map_c[2];  /* conf/recipients, conf/aliases */
    struct privuser smtp_user;
    struct listen_set ls;
    size_t nsmtp;              /* ls.fd[0..nsmtp) are SMTP (25), */
    size_t nsub;               /* [nsmtp..nsub) submission (587), the rest smtps (465) */
    struct conn *conn;
    size_t nconn, conncap;
    /* tls_server_slot_unusable(): sessions offer no STARTTLS and answer it
     * 454, so that senders go on in plaintext instead of failing a handshake */
    int tls_unusable;
};

/* read postern.conf, the recipient map and the smtp user; 0 with err */
int listener_load(struct listener *l, const char *root, char *err, size_t errlen);
/* bind every smtp_listen, submission_listen and smtps_listen address; 0 with err */
int listener_bind(struct listener *l, char *err, size_t errlen);
/* accept and serve until SIGTERM; returns the exit code */
int listener_run(struct listener *l);

/* one connection (port: enum smtp_port): for smtps start tls-proxy first;
 * fork the session, serve it as monitor; never returns */
_Noreturn void conn_serve(const struct listener *l, int fd, const struct sockaddr *peer, int port);

#endif
