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

/* Start proxy (argv: tls-proxy [-i id] root) on client_fd: 1 with the
 * child's pid (if pidp) and *plain_fd (close-on-exec, our end), or 0 with
 * errno. client_fd stays open in the caller. */
int tls_proxy_spawn(const char *proxy, const char *root, const char *id, int client_fd,
                    int *plain_fd, pid_t *pidp);

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
