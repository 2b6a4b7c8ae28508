/* deliver.c - one remote delivery (one message, one or more recipients of
 * the same destination), run in its own child: find where the
 * recipient's domain goes (conf/routes, else DNS MX), try each address in
 * order until one answers, run the SMTP transaction, map the outcome to
 * s/t/p with an RFC 3463 text. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dns_mx.h"
#include "remote.h"
#include "smtp_addr.h"

int remote_conf_load(struct remote_conf *rc, const char *root, char *err, size_t errlen)
{
    static struct remote_conf n;   /* large: not on the stack */
    char path[CONFIG_NAME_MAX + 32];
    if (!config_load(&n.cfg, root, err, errlen)) return 0;
    snprintf(path, sizeof path, "%s/conf/routes", root);
    if (!routes_load(&n.routes, path, err, errlen)) return 0;
    snprintf(path, sizeof path, "%s/conf/relay-auth", root);
    if (!relay_auth_load(&n.auth, path, err, errlen)) return 0;
    snprintf(path, sizeof path, "%s/conf/routes", root);
    if (!routes_check_auth(&n.routes, &n.auth, path, err, errlen)) return 0;
    if (n.cfg.dns_server[0]) {
        struct __res_state res;
        char why[128];
        if (!dns_resolver_init(&res, n.cfg.dns_server, 1, why, sizeof why)) {
            snprintf(err, errlen, "%s/conf/postern.conf: %s", root, why);
            return 0;
        }
        res_nclose(&res);
    }
    *rc = n;
    explicit_bzero(&n.auth, sizeof n.auth);
    return 1;
}

static const char *rcpt_domain(const char *rcpt)
{
    const char *at = strrchr(rcpt, '@');
    return at && at[1] ? at + 1 : NULL;
}

int remote_destination(const struct remote_conf *rc, const char *rcpt, char *dst, size_t cap)
{
    const char *d = rcpt_domain(rcpt);
    if (!d) return 0;
    const struct route *r = routes_find(&rc->routes, d);
    int n = r ? snprintf(dst, cap, "route:%s:%u", r->host, r->port)
              : snprintf(dst, cap, "%s", d);
    if (n < 0 || (size_t)n >= cap) return 0;
    smtp_lower(dst);
    return 1;
}

/* an address given literally (route host or "[addr]" domain) */
static int literal_target(const char *s, unsigned port, struct dns_targets *t)
{
    char a[DNS_HOST_MAX];
    size_t n = strlen(s);
    if (s[0] == '[') {
        if (n < 3 || s[n - 1] != ']') return 0;
        s++;
        n -= 2;
        if (n > 5 && !strncasecmp(s, "IPv6:", 5)) { s += 5; n -= 5; }
    }
    if (n >= sizeof a) return 0;
    memcpy(a, s, n);
    a[n] = 0;
    struct dns_target *d = &t->t[0];
    memset(d, 0, sizeof *d);
    memcpy(d->host, a, n + 1);
    struct sockaddr_in *s4 = (struct sockaddr_in *)&d->sa;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&d->sa;
    if (inet_pton(AF_INET, a, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((unsigned short)port);
        d->salen = sizeof *s4;
    } else if (inet_pton(AF_INET6, a, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((unsigned short)port);
        d->salen = sizeof *s6;
    } else {
        return 0;
    }
    t->n = 1;
    return 1;
}

/* connect within ms: the socket, or -1 with errno */
static int connect_to(const struct dns_target *d, int ms)
{
    int fd = socket(d->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;   /* we write whole commands ourselves: no Nagle delay on the last bytes */
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (const struct sockaddr *)&d->sa, d->salen) == 0) return fd;
    if (errno != EINPROGRESS) { int e = errno; close(fd); errno = e; return -1; }
    struct pollfd p = { .fd = fd, .events = POLLOUT, .revents = 0 };
    int r;
    while ((r = poll(&p, 1, ms)) < 0 && errno == EINTR) {}
    if (r == 0) { close(fd); errno = ETIMEDOUT; return -1; }
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    if (r < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr) {
        int e = r < 0 ? errno : soerr ? soerr : EIO;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static void peer_name(const struct dns_target *d, char *dst, size_t cap)
{
    char a[INET6_ADDRSTRLEN] = "?";
    const void *p = d->sa.ss_family == AF_INET ? (const void *)&((const struct sockaddr_in *)&d->sa)->sin_addr
                                               : (const void *)&((const struct sockaddr_in6 *)&d->sa)->sin6_addr;
    inet_ntop(d->sa.ss_family, p, a, sizeof a);
    unsigned port = ntohs(d->sa.ss_family == AF_INET ? ((const struct sockaddr_in *)&d->sa)->sin_port
                                                     : ((const struct sockaddr_in6 *)&d->sa)->sin6_port);
    const char *h = strcmp(d->host, a) ? d->host : "";   /* a literal: just [addr] */
    if (port == 25) snprintf(dst, cap, "%.200s[%s]", h, a);
    else snprintf(dst, cap, "%.200s[%s]:%u", h, a, port);
}

static enum dp_status status_of(const char *text)
{
    return text[0] == '5' ? DP_PERMANENT : text[0] == '2' ? DP_SUCCESS : DP_TEMPORARY;
}

/* find the addresses to try; DP_SUCCESS means "t filled" */
static enum dp_status targets_for(const struct remote_conf *rc, const struct route *r, const char *domain,
                                  struct dns_targets *t, char *text, size_t cap)
{
    const struct config *cfg = &rc->cfg;
    unsigned port = r && r->port ? r->port : (unsigned)cfg->remote_port;
    int dns_to = cfg->remote_timeout < 5 ? (int)cfg->remote_timeout : 5;
    static struct __res_state res;
    char why[300];
    t->n = 0;
    t->first_temp = DNS_TARGETS_NONE;
    if (r && r->literal) return literal_target(r->host, port, t) ? DP_SUCCESS : DP_TEMPORARY;
    if (!r && domain[0] == '[') {
        if (literal_target(domain, port, t)) return DP_SUCCESS;
        snprintf(text, cap, "5.1.2 bad address literal %.200s", domain);
        return DP_PERMANENT;
    }
    if (!dns_resolver_init(&res, cfg->dns_server, dns_to, why, sizeof why)) {
        snprintf(text, cap, "4.4.3 %s", why);
        return DP_TEMPORARY;
    }
    if (r) {
        enum dns_status st = dns_lookup_host(&res, r->host, port, t);
        res_nclose(&res);
        if (st == DNS_OK) return DP_SUCCESS;
        snprintf(text, cap, "4.4.%c route host %.200s: %s", st == DNS_TEMPFAIL ? '3' : '4', r->host,
                 st == DNS_TEMPFAIL ? "DNS lookup failed temporarily" : "no address");
        return DP_TEMPORARY;
    }
    enum dns_status st = dns_mail_targets(&res, domain, port, t, text, cap);
    res_nclose(&res);
    return st == DNS_OK ? DP_SUCCESS : status_of(text);
}

static void all_results(struct remote_result *res, size_t n, enum dp_status s, const char *text)
{
    for (size_t i = 0; i < n; i++) {
        res[i].s = s;
        res[i].action = NULL;
        snprintf(res[i].text, sizeof res[i].text, "%s", text);
    }
}

static enum dp_status status_from(enum smtp_outcome o)
{
    return o == SMTP_DELIVERED ? DP_SUCCESS : o == SMTP_PERMFAIL ? DP_PERMANENT : DP_TEMPORARY;
}

/* the connection this child keeps between batches (remote_reuse_time) */
static struct {
    int fd;                      /* -1: none */
    struct smtp_conn conn;
    struct tls_client tc;
    struct smtp_reuse reuse;
    const struct route *route;   /* the route entry it was opened for, or NULL (MX) */
    char domain[DNS_HOST_MAX];   /* and, without a route, the domain */
    char peer[300];
} kept = { .fd = -1 };

int remote_link_fd(void) { return kept.fd; }

void remote_link_close(int say_quit)
{
    if (kept.fd < 0) return;
    if (say_quit) smtp_quit(&kept.conn);
    tls_client_end(&kept.tc);
    close(kept.fd);
    kept.fd = -1;
}

/* after a transaction that left c open (open): 1 if it may carry the next
 * MAIL. Bytes after the last reply (a server out of step with us) would be
 * taken for the next MAIL's answer: such a connection gets its QUIT. */
static int still_reusable(struct smtp_conn *c, const struct tls_client *tc, int open)
{
    if (open && (smtp_buffered(c) || tls_client_pending(tc))) {
        smtp_quit(c);
        return 0;
    }
    return open;
}

/* keep the connection of a transaction that left it open, else close it */
static void link_keep(int fd, const struct tls_client *tc, struct smtp_conn *c, const struct route *r,
                      const char *domain, const char *peer, const struct smtp_reuse *ru, int open)
{
    if (!still_reusable(c, tc, open)) {
        struct tls_client t = *tc;
        tls_client_end(&t);
        close(fd);
        return;
    }
    kept.fd = fd;
    kept.tc = *tc;
    kept.conn = *c;
    /* the transport's context points into what was copied: the tls_client,
     * or for plain text the connection's own fd field */
    if (kept.conn.tr.ctx == (const void *)tc) kept.conn.tr.ctx = &kept.tc;
    else kept.conn.tr.ctx = &kept.conn.fd;
    kept.reuse = *ru;            /* the session's EHLO keywords */
    kept.route = r;
    snprintf(kept.domain, sizeof kept.domain, "%s", domain);
    snprintf(kept.peer, sizeof kept.peer, "%s", peer);
}

/* a transaction's final outcome as the jobs' results: SMTP_DELIVERED, each
 * recipient its own; otherwise text, for all */
static void results_of(enum smtp_outcome o, const struct smtp_rcpt *sr, size_t n, const char *text,
                       struct remote_result *res)
{
    if (o != SMTP_DELIVERED) {
        all_results(res, n, o == SMTP_PERMFAIL ? DP_PERMANENT : DP_TEMPORARY, text);
        return;
    }
    for (size_t k = 0; k < n; k++) {
        res[k].s = status_from(sr[k].outcome);
        /* RFC 3461 5.2: a next hop with DSN reports the success
         * NOTIFY asks for; without DSN, this host reports "relayed" */
        res[k].action = res[k].s != DP_SUCCESS ? NULL : sr[k].dsn ? DP_ACTION_PASSED : DP_ACTION_RELAYED;
    }
}

/* The batch over the connection kept from the last one, if it is for the
 * same route entry (its TLS policy and credentials), or without one the
 * same domain: 1 when that gave the results, 0 when there is none or it
 * was gone while idle (nothing accepted: start over on a new one). */
static int on_kept_link(const struct route *r, const char *domain, struct smtp_job *sj, struct smtp_rcpt *sr,
                        size_t n, int keep, char *text, size_t cap, struct remote_result *res)
{
    if (kept.fd >= 0 && (kept.route != r || (!r && strcasecmp(kept.domain, domain)))) remote_link_close(1);
    if (kept.fd < 0) return 0;
    kept.reuse.established = 1;
    kept.reuse.keep = keep;
    sj->reuse = &kept.reuse;
    enum smtp_outcome o = smtp_transaction_multi(&kept.conn, sj, sr, n, tls_client_starttls, &kept.tc,
                                                 kept.peer, text, cap);
    if (o != SMTP_RECONNECT) {
        results_of(o, sr, n, text, res);
        if (!still_reusable(&kept.conn, &kept.tc, kept.reuse.open)) remote_link_close(0);
        return 1;
    }
    remote_link_close(0);
    for (size_t k = 0; k < n; k++) { sr[k].outcome = SMTP_TEMPFAIL; res[k].text[0] = 0; }
    return 0;
}

void remote_deliver(const struct remote_conf *rc, const struct dp_job *j, size_t n, int msgfd,
                    struct remote_result *res, int keep)
{
    static struct dns_targets t;
    static struct smtp_conn conn;
    static struct smtp_rcpt sr[REMOTE_BATCH_MAX];
    static char text[DP_FIELD_MAX + 1];
    const size_t cap = sizeof text;
    const struct config *cfg = &rc->cfg;
    for (size_t k = 0; k < n && k < REMOTE_BATCH_MAX; k++) res[k].action = NULL;
    if (!n || n > REMOTE_BATCH_MAX) { all_results(res, n > REMOTE_BATCH_MAX ? REMOTE_BATCH_MAX : n, DP_TEMPORARY, "4.3.0 bad batch"); return; }
    const char *domain = rcpt_domain(j[0].rcpt);
    if (!domain) { all_results(res, n, DP_PERMANENT, "5.1.3 recipient address has no domain"); return; }
    const struct route *r = routes_find(&rc->routes, domain);

    struct stat sb;
    if (fstat(msgfd, &sb) < 0) { all_results(res, n, DP_TEMPORARY, "4.3.0 cannot stat the queued message"); return; }
    const struct relay_cred *cred = r && r->auth[0] ? relay_auth_find(&rc->auth, r->auth) : NULL;
    struct smtp_reuse reuse = { .keep = keep };
    struct smtp_job sj = {
        .helo = cfg->hostname, .sender = j[0].sender, .rcpt = "", .orcpt = "",
        .notify = "", .envid = j[0].envid, .ret = j[0].ret, .body8bit = !strcasecmp(j[0].body, "8BITMIME"),
        .smtputf8 = j[0].smtputf8,
        .msgfd = msgfd, .size = (unsigned long long)sb.st_size,
        .tls = !r || r->tls == ROUTE_TLS_MAY ? SMTP_TLS_MAY : r->tls == ROUTE_TLS_NONE ? SMTP_TLS_NONE : SMTP_TLS_REQUIRE,
        .auth_user = cred ? cred->user : NULL, .auth_pass = cred ? cred->pass : NULL,
        .reuse = &reuse,
    };
    for (size_t k = 0; k < n; k++)
        sr[k] = (struct smtp_rcpt){ .addr = j[k].rcpt, .orcpt = j[k].orcpt, .notify = j[k].notify,
                                    .outcome = SMTP_TEMPFAIL, .status = res[k].text, .cap = sizeof res[k].text };

    if (on_kept_link(r, domain, &sj, sr, n, keep, text, cap, res)) return;
    sj.reuse = &reuse;

    enum dp_status st = targets_for(rc, r, domain, &t, text, cap);
    if (st != DP_SUCCESS) { all_results(res, n, st, text); return; }
    int connect_ms = (int)(cfg->remote_connect_timeout * 1000);
    int reply_ms = (int)(cfg->remote_timeout * 1000);
    static char before[sizeof text];   /* the result of the addresses tried so far */
    snprintf(text, cap, "4.4.1 no address to try");
    for (size_t i = 0; i < t.n; i++) {
        char peer[300];
        snprintf(before, sizeof before, "%s", text);
        peer_name(&t.t[i], peer, sizeof peer);
        enum smtp_tls_policy tls = sj.tls;
        for (int attempt = 0; attempt < 2; attempt++) {
            int fd = connect_to(&t.t[i], connect_ms);
            if (fd < 0) {
                snprintf(text, cap, "4.4.1 connection to %s failed: %s", peer,
                         errno == ETIMEDOUT ? "timed out" : strerror(errno));
                break;
            }
            struct tls_client tc = { .verify = tls == SMTP_TLS_REQUIRE, .ca = r ? r->ca : "",
                                     .name = r ? r->host : t.t[i].host };
            smtp_conn_init(&conn, fd, reply_ms);
            sj.tls = tls;
            reuse = (struct smtp_reuse){ .keep = keep };
            enum smtp_outcome o = smtp_transaction_multi(&conn, &sj, sr, n, tls_client_starttls, &tc, peer,
                                                         text, cap);
            link_keep(fd, &tc, &conn, r, domain, peer, &reuse, o == SMTP_DELIVERED && reuse.open);
            if (o == SMTP_RETRY_PLAIN) { tls = SMTP_TLS_NONE; continue; }
            if (o == SMTP_LOOP) {
                /* this host: it and every address after it (the same or a
                 * less preferred MX) are discarded, RFC 5321 5.1. The first
                 * one: nowhere to go, 5.4.6; else the result of the better
                 * ones, as if the list had ended before it. A better MX
                 * whose address could not be looked up is a better one
                 * that failed, temporarily: this host as a backup MX must
                 * not bounce the mail because the primary's DNS hiccups */
                if (i > 0) snprintf(text, cap, "%s", before);
                else if (t.first_temp != DNS_TARGETS_NONE && t.first_temp <= i)
                    snprintf(text, cap, "4.4.3 DNS lookup of a better MX host of %.200s failed temporarily"
                             " (%s is this host)", domain, peer);
                all_results(res, n, status_of(text) == DP_PERMANENT ? DP_PERMANENT : DP_TEMPORARY, text);
                return;
            }
            if (o != SMTP_NEXT_HOST) { results_of(o, sr, n, text, res); return; }
            break;
        }
    }
    all_results(res, n, status_of(text) == DP_PERMANENT ? DP_PERMANENT : DP_TEMPORARY, text);
}
