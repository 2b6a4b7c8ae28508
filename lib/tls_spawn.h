/* tls_spawn.h - starting tls-proxy for one connection, from a listener's
 * root monitor (smtp-listener, pop3-listener), and reading its first line.
 *
 * tls-proxy (tls-proxy(8)) gets fd 0 = the client socket and fd 1 = one end
 * of a fresh socketpair; it is exec'd as root (it loads the key and drops to
 * user_tls chrooted in ROOT/empty itself). After the handshake it writes
 * "TLS <version> <cipher> <sni|->\n" to the plaintext end, then relays; a
 * failed handshake closes the plaintext end without a word. */
#ifndef POSTERN_TLS_SPAWN_H
#define POSTERN_TLS_SPAWN_H

#include <stddef.h>
#include <sys/types.h>
#include <time.h>

/* Start tls-proxy on client_fd: hand it to the TLS server that
 * tls_proxy_server_use() named, if any (*pidp = 0: not our child), else
 * fork and exec proxy (argv: tls-proxy [-i id] root; *pidp = its pid). 1
 * with *plain_fd (close-on-exec, our end), or 0 with errno. client_fd stays
 * open in the caller. A server that is gone is forgotten and the connection
 * gets an exec'd tls-proxy instead. */
int tls_proxy_spawn(const char *proxy, const char *root, const char *id, int client_fd,
                    int *plain_fd, pid_t *pidp);

/* The TLS server (tls-proxy -z ROOT, tls-proxy(8)): started as root by a
 * listener, it loads the certificates once and forks a child per
 * connection, which drops to user_tls chrooted as an exec'd tls-proxy does.
 * Requests reach it over a SOCK_SEQPACKET pair: "T" and the id (at most
 * TLS_ID_MAX printable characters), with the client socket and the
 * session's plaintext end attached. */
#define TLS_ID_MAX 63

/* fork and exec "proxy -z root" with the server's end of a new pair on fd
 * 0: 1 with *zfd (our end, close-on-exec) and *pid, or 0 with errno */
int tls_proxy_server_start(const char *proxy, const char *root, int *zfd, pid_t *pid);
/* the idle bound (tls-proxy -t) of the proxies started from now on, by
 * tls_proxy_server_start and tls_proxy_spawn's exec: 0 (the default) for
 * none given, so session_timeout; pop3-listener's is its own longer one
 * (RFC 1939's 10 minutes) */
void tls_proxy_set_timeout(unsigned long seconds);
/* tls_proxy_spawn hands connections to zfd from now on (-1: to none) */
void tls_proxy_server_use(int zfd);
/* close our end in a process that must not reach the server (a session) */
void tls_proxy_server_forget(void);
/* A listener's TLS server, kept running: started when due (at start, and
 * after it ended: at once if it had run a second, else 10 s later), and
 * stopped and started again on a reload. The listener's monitors inherit
 * fd (tls_proxy_server_use). */
struct tls_server_slot {
    pid_t pid;                 /* 0: not running */
    int fd;                    /* -1: not running */
    time_t started, next_try;
    int unusable;              /* tls_server_slot_unusable() */
};
void tls_server_slot_init(struct tls_server_slot *s);
/* start the server if it is down and due; proxy is ROOT/bin/tls-proxy */
void tls_server_slot_keep(struct tls_server_slot *s, const char *proxy, const char *root);
/* pid was reaped with wait status st: 1 if it was the server (now down;
 * logged "event=tls_server_ended status=N"), else 0 */
int tls_server_slot_reaped(struct tls_server_slot *s, pid_t pid, int st);
/* 1 while the listener should offer no STARTTLS/STLS: its server ended
 * with 100 (the key or certificate cannot be used) and none started since
 * has run two seconds. Logged "event=tls_unusable" and "event=tls_usable"
 * as it changes; asked before each connection is forked. */
int tls_server_slot_unusable(struct tls_server_slot *s);
/* configuration reloaded: stop the server (SIGTERM) and start a new one */
void tls_server_slot_restart(struct tls_server_slot *s, const char *proxy, const char *root);

/* one request; 1, or 0 with errno (EPROTO: id too long or not printable) */
int tls_proxy_request_send(int zfd, const char *id, int client_fd, int plain_fd);
/* one request: 1 with id (NUL-terminated, idcap > TLS_ID_MAX) and both
 * descriptors, or 0 with errno: EPIPE at end of file, EPROTO for anything
 * else than one well-formed request (what came with it is closed) */
int tls_proxy_request_recv(int zfd, char *id, size_t idcap, int *client_fd, int *plain_fd);

/* Parse the line (without LF): 1 and version / cipher (printable ASCII,
 * NUL-terminated, within vlen / clen), or 0. */
int tls_proxy_line(const char *line, size_t len, char *version, size_t vlen,
                   char *cipher, size_t clen);

/* One tag byte with at most one descriptor over a SOCK_SEQPACKET socket
 * (fd < 0: none). fd_recv: 1 with *tag and *fd (-1 if none came), or 0 with
 * errno (EPIPE at EOF, ETIMEDOUT, EPROTO for a malformed record: anything
 * received is closed). */
int fd_send(int sock, char tag, int fd);
int fd_recv(int sock, char *tag, int *fd, int timeout_ms);

#endif
