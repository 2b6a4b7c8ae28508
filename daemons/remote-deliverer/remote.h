/* remote.h - remote-deliverer's modules: the job scheduler (sched.c), one
 * delivery in a child (deliver.c) and the OpenSSL client side of STARTTLS
 * (tls_client.c). See docs/REMOTE.md. */
#ifndef POSTERN_REMOTE_H
#define POSTERN_REMOTE_H

#include <stddef.h>

#include "config.h"
#include "deliver_proto.h"
#include "routes.h"
#include "smtp_client.h"

struct remote_conf {
    struct config cfg;
    struct routes routes;
    struct relay_auth auth;
};

/* Load postern.conf, conf/routes and conf/relay-auth of root into rc (all
 * or nothing). 1, or 0 with err "file:line: what". */
int remote_conf_load(struct remote_conf *rc, const char *root, char *err, size_t errlen);

/* The destination key the per-destination limit counts: the route's host
 * ("route:host:port") or the recipient's domain, lower case. 1, or 0 when
 * the recipient has no domain. */
int remote_destination(const struct remote_conf *rc, const char *rcpt, char *dst, size_t cap);

/* Recipients of one message for one destination delivered in one SMTP
 * transaction (see sched.c for how jobs are grouped). */
#define REMOTE_BATCH_MAX 50
struct remote_result {
    enum dp_status s;
    const char *action;              /* with DP_SUCCESS: DP_ACTION_RELAYED or _PASSED, else NULL */
    char text[DP_FIELD_MAX + 1];     /* the RFC 3463 status text */
};

/* Deliver n (1..REMOTE_BATCH_MAX) jobs of the same message, sender, envid,
 * body and destination (in a child process): resolve, connect, one SMTP
 * transaction with a RCPT per job. res[i] gets job i's status and text.
 * With keep, a connection whose transaction ended in 2xx stays open without
 * QUIT (remote_link_fd() >= 0), and the next call for the same route entry
 * (or, without a route, the same domain) sends its MAIL on it; a kept
 * connection that turns out closed is replaced by a new one. */
void remote_deliver(const struct remote_conf *rc, const struct dp_job *j, size_t n, int msgfd,
                    struct remote_result *res, int keep);
/* the kept connection's socket, or -1 */
int remote_link_fd(void);
/* close it (after QUIT if say_quit) */
void remote_link_close(int say_quit);
/* at most this many batches go over one connection */
#define REMOTE_REUSE_MAX 100

/* The scheduler loop: jobs from fd 0, children, signals. Returns at EOF or
 * SIGTERM once in-flight jobs finished (or the grace time ran out). */
void sched_run(struct remote_conf *rc, const char *root);

/* STARTTLS client (OpenSSL) */
struct tls_client {
    void *ssl;               /* SSL * */
    void *ctx;               /* SSL_CTX * */
    int fd;
    int verify;              /* verify the chain and the name */
    const char *ca;          /* "" = the system store */
    const char *name;        /* the name to verify / send as SNI */
};
void tls_client_global_init(void);
/* Make the TLS contexts rs's routes need (and the opportunistic one) once,
 * in this process, dropping those of the last call: delivery children
 * forked afterwards share them instead of each loading the CA store. Call
 * after every (re)load. A context that cannot be made is left to each
 * delivery, which then says why. */
void tls_client_prepare(const struct routes *rs);
/* smtp_starttls_fn: handshake on c->fd, then switch c to TLS */
int tls_client_starttls(void *tls_client, struct smtp_conn *c, char *why, size_t whylen);
void tls_client_end(struct tls_client *t);
/* 1 if TLS holds bytes the connection has not read yet */
int tls_client_pending(const struct tls_client *t);

#endif
