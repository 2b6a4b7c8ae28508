/* authproto.c - auth-checker records: build, parse strictly, and a client. */
#include "authproto.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <sodium.h>

struct rec { char *p; size_t len, cap; };

static int put(struct rec *r, char letter, const char *v, size_t n)
{
    if (memchr(v, 0, n)) { errno = EINVAL; return 0; }
    if (r->cap - r->len < n + 2) { errno = EMSGSIZE; return 0; }
    r->p[r->len++] = letter;
    memcpy(r->p + r->len, v, n);
    r->len += n;
    r->p[r->len++] = 0;
    return 1;
}

static int puts_(struct rec *r, char letter, const char *v) { return put(r, letter, v, strlen(v)); }

static const char *svc_name(enum auth_service s) { return s == AUTH_SVC_SMTP ? "smtp" : s == AUTH_SVC_POP3 ? "pop3" : 0; }

int authproto_request_format(const struct auth_request *q, char *dst, size_t cap, size_t *len)
{
    struct rec r = { dst, 0, cap };
    const char *svc = svc_name(q->service);
    if (!svc || q->userlen > AUTH_USER_MAX || q->passlen > AUTH_PASS_MAX || strlen(q->addr) > AUTH_ADDR_MAX) { errno = EINVAL; return 0; }
    if (!puts_(&r, 'Q', svc) || !put(&r, 'U', q->user, q->userlen) ||
        !put(&r, 'P', q->pass, q->passlen) || !puts_(&r, 'A', q->addr)) {
        sodium_memzero(dst, cap);
        return 0;
    }
    *len = r.len;
    return 1;
}

/* Walk the fields of a record: calls fn(letter, value, len) for each.
 * The record must end exactly with a field's NUL. */
typedef int field_fn(void *ctx, char letter, const char *v, size_t n);

static int walk(const char *rec, size_t len, field_fn *fn, void *ctx)
{
    size_t i = 0;
    if (len == 0 || len > AUTH_RECORD_MAX || rec[len - 1] != 0) { errno = EPROTO; return 0; }
    while (i < len) {
        const char *z = memchr(rec + i, 0, len - i);   /* exists: rec ends with NUL */
        size_t n = (size_t)(z - (rec + i));
        if (n == 0) { errno = EPROTO; return 0; }       /* empty field: no letter */
        if (!fn(ctx, rec[i], rec + i + 1, n - 1)) { errno = EPROTO; return 0; }
        i += n + 1;
    }
    return 1;
}

static int once(unsigned *seen, unsigned bit)
{
    if (*seen & bit) return 0;
    *seen |= bit;
    return 1;
}

struct reqctx { struct auth_request *r; unsigned seen; };

static int req_field(void *ctx, char letter, const char *v, size_t n)
{
    struct reqctx *c = ctx;
    struct auth_request *r = c->r;
    switch (letter) {
    case 'Q':
        if (!once(&c->seen, 1)) return 0;
        if (n == 4 && !memcmp(v, "smtp", 4)) r->service = AUTH_SVC_SMTP;
        else if (n == 4 && !memcmp(v, "pop3", 4)) r->service = AUTH_SVC_POP3;
        else return 0;
        return 1;
    case 'U':
        if (!once(&c->seen, 2) || n > AUTH_USER_MAX) return 0;
        memcpy(r->user, v, n); r->user[n] = 0; r->userlen = n;
        return 1;
    case 'P':
        if (!once(&c->seen, 4) || n > AUTH_PASS_MAX) return 0;
        memcpy(r->pass, v, n); r->pass[n] = 0; r->passlen = n;
        return 1;
    case 'A':
        if (!once(&c->seen, 8) || n > AUTH_ADDR_MAX) return 0;
        memcpy(r->addr, v, n); r->addr[n] = 0;
        return 1;
    default:
        return 0;
    }
}

int authproto_request_parse(const char *rec, size_t len, struct auth_request *r)
{
    struct reqctx c = { r, 0 };
    memset(r, 0, sizeof *r);
    if (!walk(rec, len, req_field, &c) || c.seen != 15) {
        authproto_request_wipe(r);
        errno = EPROTO;
        return 0;
    }
    return 1;
}

static int parse_uint(const char *v, size_t n, unsigned *out)
{
    unsigned long long x = 0;
    if (n == 0 || n > 10 || (n > 1 && v[0] == '0')) return 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9') return 0;
        x = x * 10 + (unsigned)(v[i] - '0');
    }
    if (x >= 0xffffffffULL) return 0;
    *out = (unsigned)x;
    return 1;
}

struct repctx { struct auth_reply *r; unsigned seen; };

static int rep_field(void *ctx, char letter, const char *v, size_t n)
{
    struct repctx *c = ctx;
    struct auth_reply *r = c->r;
    unsigned x;
    switch (letter) {
    case 'R':
        if (!once(&c->seen, 1)) return 0;
        if (n == 2 && !memcmp(v, "ok", 2)) r->result = AUTH_OK;
        else if (n == 3 && !memcmp(v, "bad", 3)) r->result = AUTH_BAD;
        else if (n == 4 && !memcmp(v, "temp", 4)) r->result = AUTH_TEMP;
        else return 0;
        return 1;
    case 'N':
        if (!once(&c->seen, 2) || n == 0 || n > AUTH_USER_MAX) return 0;
        memcpy(r->name, v, n); r->name[n] = 0;
        return 1;
    case 'u':
        if (!once(&c->seen, 4) || !parse_uint(v, n, &x)) return 0;
        r->uid = (uid_t)x;
        return 1;
    case 'g':
        if (!once(&c->seen, 8) || !parse_uint(v, n, &x)) return 0;
        r->gid = (gid_t)x;
        return 1;
    case 'm':
        if (!once(&c->seen, 16) || n == 0 || n > AUTH_MAILDIR_MAX || v[0] != '/') return 0;
        memcpy(r->maildir, v, n); r->maildir[n] = 0;
        return 1;
    default:
        return 0;
    }
}

int authproto_reply_parse(const char *rec, size_t len, struct auth_reply *r)
{
    struct repctx c = { r, 0 };
    memset(r, 0, sizeof *r);
    if (!walk(rec, len, rep_field, &c)) return 0;
    /* ok needs all five fields; bad/temp only R */
    if (!(c.seen & 1) || (r->result == AUTH_OK ? c.seen != 31 : c.seen != 1)) {
        memset(r, 0, sizeof *r);
        errno = EPROTO;
        return 0;
    }
    return 1;
}

int authproto_reply_format(const struct auth_reply *r, char *dst, size_t cap, size_t *len)
{
    struct rec o = { dst, 0, cap };
    const char *res = r->result == AUTH_OK ? "ok" : r->result == AUTH_BAD ? "bad" : r->result == AUTH_TEMP ? "temp" : 0;
    if (!res) { errno = EINVAL; return 0; }
    if (!puts_(&o, 'R', res)) return 0;
    if (r->result == AUTH_OK) {
        char u[16], g[16];
        if (!r->name[0] || r->maildir[0] != '/' || strlen(r->name) > AUTH_USER_MAX ||
            strlen(r->maildir) > AUTH_MAILDIR_MAX) { errno = EINVAL; return 0; }
        snprintf(u, sizeof u, "%u", (unsigned)r->uid);
        snprintf(g, sizeof g, "%u", (unsigned)r->gid);
        if (!puts_(&o, 'N', r->name) || !puts_(&o, 'u', u) || !puts_(&o, 'g', g) || !puts_(&o, 'm', r->maildir))
            return 0;
    }
    *len = o.len;
    return 1;
}

int authproto_request_set(struct auth_request *r, enum auth_service svc,
                          const char *user, size_t userlen,
                          const char *pass, size_t passlen, const char *addr)
{
    memset(r, 0, sizeof *r);
    if (userlen > AUTH_USER_MAX || passlen > AUTH_PASS_MAX || strlen(addr) > AUTH_ADDR_MAX ||
        memchr(user, 0, userlen) || memchr(pass, 0, passlen)) { errno = EINVAL; return 0; }
    r->service = svc;
    memcpy(r->user, user, userlen); r->userlen = userlen;
    memcpy(r->pass, pass, passlen); r->passlen = passlen;
    memcpy(r->addr, addr, strlen(addr) + 1);
    return 1;
}

void authproto_request_wipe(struct auth_request *r) { sodium_memzero(r->pass, sizeof r->pass); r->passlen = 0; }

int authproto_connect(const char *root)
{
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    int n = snprintf(sa.sun_path, sizeof sa.sun_path, "%s/%s", root, AUTH_SOCKET);
    if (n < 0 || (size_t)n >= sizeof sa.sun_path) { errno = ENAMETOOLONG; return -1; }
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) { int e = errno; close(fd); errno = e; return -1; }
    return fd;
}

int authproto_ask(int fd, const struct auth_request *q, struct auth_reply *r, int timeout_ms)
{
    char rec[AUTH_RECORD_MAX];
    size_t len;
    if (!authproto_request_format(q, rec, sizeof rec, &len)) return 0;
    ssize_t w;
    do w = send(fd, rec, len, MSG_NOSIGNAL); while (w < 0 && errno == EINTR);
    sodium_memzero(rec, sizeof rec);
    if (w < 0) return 0;
    if ((size_t)w != len) { errno = EPROTO; return 0; }
    struct pollfd p = { .fd = fd, .events = POLLIN, .revents = 0 };
    for (;;) {
        int k = poll(&p, 1, timeout_ms);
        if (k > 0) break;
        if (k == 0) { errno = ETIMEDOUT; return 0; }
        if (errno != EINTR) return 0;
    }
    ssize_t got;
    do got = recv(fd, rec, sizeof rec, MSG_TRUNC); while (got < 0 && errno == EINTR);
    if (got < 0) return 0;
    if (got == 0) { errno = EPIPE; return 0; }
    if ((size_t)got > sizeof rec) { errno = EMSGSIZE; return 0; }
    return authproto_reply_parse(rec, (size_t)got, r);
}
