/* authproto.h - the auth-checker request and reply records (one
 * SOCK_SEQPACKET datagram each, fields "<letter><value>\0", INTERFACES.md
 * "auth-checker protocol"), and a small client for the listeners.
 *
 *   request: Q<smtp|pop3> U<user> P<password> A<client address>
 *   reply:   R<ok|bad|temp>, with ok also N<name> u<uid> g<gid> m<maildir>
 *
 * The reader checks it got one whole record, every field it needs exactly
 * once, no unknown letter, every value within its bound. */
#ifndef POSTERN_AUTHPROTO_H
#define POSTERN_AUTHPROTO_H

#include <stddef.h>
#include <sys/types.h>

#define AUTH_RECORD_MAX 2048
#define AUTH_USER_MAX 255
#define AUTH_PASS_MAX 1024
#define AUTH_ADDR_MAX 64
#define AUTH_MAILDIR_MAX 1024
#define AUTH_SOCKET "run/auth/socket"    /* relative to ROOT */

enum auth_service { AUTH_SVC_SMTP = 1, AUTH_SVC_POP3 };
enum auth_result { AUTH_OK = 1, AUTH_BAD, AUTH_TEMP };

struct auth_request {
    enum auth_service service;
    size_t userlen, passlen;
    char user[AUTH_USER_MAX + 1];     /* NUL-terminated too */
    char pass[AUTH_PASS_MAX + 1];
    char addr[AUTH_ADDR_MAX + 1];
};

struct auth_reply {
    enum auth_result result;
    char name[AUTH_USER_MAX + 1];
    uid_t uid;
    gid_t gid;
    char maildir[AUTH_MAILDIR_MAX + 1];
};

/* Build a record into dst[0..cap): 1 and *len, or 0 with EINVAL (a value
 * holds NUL, is empty where it may not be, or is too long) / EMSGSIZE. */
int authproto_request_format(const struct auth_request *r, char *dst, size_t cap, size_t *len);
int authproto_request_parse(const char *rec, size_t len, struct auth_request *r);
int authproto_reply_format(const struct auth_reply *r, char *dst, size_t cap, size_t *len);
int authproto_reply_parse(const char *rec, size_t len, struct auth_reply *r);

/* fill a request; 0 with EINVAL if user/pass/addr too long or hold NUL */
int authproto_request_set(struct auth_request *r, enum auth_service svc,
                          const char *user, size_t userlen,
                          const char *pass, size_t passlen, const char *addr);
void authproto_request_wipe(struct auth_request *r);   /* zeroes the password */

/* Client: connect to ROOT/run/auth/socket (-1 on failure), and ask one
 * question, waiting at most timeout_ms for the reply. 0 with errno on
 * trouble (then treat as AUTH_TEMP). */
int authproto_connect(const char *root);
int authproto_ask(int fd, const struct auth_request *q, struct auth_reply *r, int timeout_ms);

#endif
