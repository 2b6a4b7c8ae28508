/* pop3d.h - pop3-listener's processes (INTERFACES.md "Sessions and their
 * privileged parts"):
 *   listener  (root)  binds pop3_listen, accepts, counts sessions, forks:
 *   monitor   (root, no chroot, never reads client bytes) forks the
 *   pre-login session (user_pop3, chrooted in ROOT/empty): AUTHORIZATION;
 *             credentials go to the monitor, which asks auth-checker and on
 *             success forks the
 *   mailbox process (the user's uid/gid, chrooted in the Maildir):
 *             lock, TRANSACTION, UPDATE. */
#ifndef POSTERN_POP3D_H
#define POSTERN_POP3D_H

#include "authproto.h"
#include "config.h"
#include "io.h"
#include "pop3_session.h"

#define POP3D_INBUF 4096    /* input buffer: bounds what PIPELINING may pass on */

/* session timeout in ms: session_timeout, but never under RFC 1939's 10 minutes */
int pop3d_timeout_ms(const struct config *c);

/* the monitor for one accepted connection; returns the exit code. With
 * implicit (pop3s_listen) it starts tls-proxy on fd first. It also serves
 * the session's STLS record: 'S' -> 's' + the plaintext fd of a fresh
 * tls-proxy on the client socket (which then is the connection the mailbox
 * process gets), or 't'. stls: STLS may be offered (0 while the TLS
 * server's key or certificate is unusable). */
int monitor_run(const struct config *c, int fd, const char *addr, const char *sid, int implicit, int stls);
/* the pre-login session (already dropped); mon is its socket to the
 * monitor; tls: fd is tls-proxy's plaintext end (its "TLS" line comes first);
 * offer_stls: STLS offered */
int prelogin_run(const struct config *c, int fd, int mon, const char *sid, const char *addr, int tls, int offer_stls);
/* the mailbox process (still root: it drops to r's uid/gid itself); tls:
 * the connection is TLS (pop3s, or STLS done), stls: the pre-login session
 * offered STLS; its CAPA lists what the pre-login session's did */
int mailbox_run(const struct config *c, int fd, const struct auth_reply *r,
                const char *left, size_t leftlen, const char *sid, int tls, int stls);

#endif
