/* tls_relay.c - server TLS context, handshake and the relay loop. */
#include "tls_relay.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509.h>

#include "io.h"

/* TLS 1.2 suites: forward secret AEAD only (TLS 1.3 suites are OpenSSL's). */
static const char tls12_ciphers[] =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

static void ssl_why(char *why, size_t whylen, const char *what, const char *file)
{
    unsigned long e = ERR_get_error();
    char es[256] = "unknown error";
    if (e) ERR_error_string_n(e, es, sizeof es);
    snprintf(why, whylen, "%s%s%s: %s", file ? file : "", file ? ": " : "", what, es);
    ERR_clear_error();
}

static SSL_CTX *ctx_new(const char *cert, const char *key, int tickets, char *why, size_t whylen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) { ssl_why(why, whylen, "cannot create TLS context", NULL); return NULL; }
    if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION)
        || !SSL_CTX_set_cipher_list(ctx, tls12_ciphers)) {
        ssl_why(why, whylen, "cannot set protocol policy", NULL);
        SSL_CTX_free(ctx);
        return NULL;
    }
    /* A TCP end without close_notify is an end of the client's stream
     * like any other, not an error that stops the replies still to go
     * (tls_relay: that half-close is still told apart in the log) */
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION
                                 | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_IGNORE_UNEXPECTED_EOF
                                 | (tickets ? 0 : SSL_OP_NO_TICKET));
#ifdef SSL_OP_CLEANSE_PLAINTEXT
    /* OpenSSL 3: a record's decrypted bytes are zeroed once SSL_read has
     * copied them out, not left in its buffer until the next record
     * (the client's AUTH and PASS lines; the relay wipes its own copy) */
    SSL_CTX_set_options(ctx, SSL_OP_CLEANSE_PLAINTEXT);
#endif
    /* no server-side cache: with tickets the client keeps the session, the
     * children of one server share the key (their parent's memory) */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    if (!tickets) SSL_CTX_set_num_tickets(ctx, 0);
    static const unsigned char sid_ctx[] = "postern";
    SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof sid_ctx - 1);
    SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_ENABLE_PARTIAL_WRITE);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        ssl_why(why, whylen, "cannot load certificate", cert);
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        ssl_why(why, whylen, "cannot load private key", key);
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        /* OpenSSL's own text here ("no certificate assigned") misleads */
        ERR_clear_error();
        snprintf(why, whylen, "%s: the private key does not match the certificate in %s", key, cert);
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

static int sni_callback(SSL *ssl, int *alert, void *arg)
{
    struct tls_server *ts = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    (void)alert;
    if (!name) return SSL_TLSEXT_ERR_OK;
    for (size_t i = 0; i < ts->nsni; i++)
        if (!strcasecmp(name, ts->sni_name[i])) {
            SSL_set_SSL_CTX(ssl, ts->sni_ctx[i]);
            break;
        }
    return SSL_TLSEXT_ERR_OK;   /* unknown names get the default certificate */
}

static int sni_name_ok(const char *n)
{
    size_t len = strlen(n);
    if (!len || len > 253 || n[0] == '.') return 0;
    for (const char *p = n; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '.') return 0;
    return 1;
}

static int sni_load(struct tls_server *ts, const char *sni_dir, int tickets, char *why, size_t whylen)
{
    DIR *d = opendir(sni_dir);
    if (!d) return errno == ENOENT ? 1 : (snprintf(why, whylen, "%s: %s", sni_dir, strerror(errno)), 0);
    struct dirent *de;
    int ok = 1;
    while (ok && (de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        if (!sni_name_ok(de->d_name)) {
            snprintf(why, whylen, "%s/%s: not a host name", sni_dir, de->d_name);
            ok = 0;
            break;
        }
        if (ts->nsni == TLS_SNI_MAX) {
            snprintf(why, whylen, "%s: more than %d names", sni_dir, TLS_SNI_MAX);
            ok = 0;
            break;
        }
        char cert[4096], key[4096];
        int n1 = snprintf(cert, sizeof cert, "%s/%s/cert.pem", sni_dir, de->d_name);
        int n2 = snprintf(key, sizeof key, "%s/%s/key.pem", sni_dir, de->d_name);
        if (n1 < 0 || (size_t)n1 >= sizeof cert || n2 < 0 || (size_t)n2 >= sizeof key) {
            snprintf(why, whylen, "%s: path too long", sni_dir);
            ok = 0;
            break;
        }
        SSL_CTX *c = ctx_new(cert, key, tickets, why, whylen);
        if (!c) { ok = 0; break; }
        size_t i = ts->nsni++;
        ts->sni_ctx[i] = c;
        size_t j = 0;
        for (; de->d_name[j] && j + 1 < sizeof ts->sni_name[i]; j++)
            ts->sni_name[i][j] = (char)tolower((unsigned char)de->d_name[j]);
        ts->sni_name[i][j] = 0;
    }
    closedir(d);
    return ok;
}

int tls_server_load(struct tls_server *ts, const char *cert, const char *key,
                    const char *sni_dir, int tickets, char *why, size_t whylen)
{
    memset(ts, 0, sizeof *ts);
    ts->ctx = ctx_new(cert, key, tickets, why, whylen);
    if (!ts->ctx) return 0;
    if (sni_dir && !sni_load(ts, sni_dir, tickets, why, whylen)) return 0;
    if (ts->nsni) {
        SSL_CTX_set_tlsext_servername_callback(ts->ctx, sni_callback);
        SSL_CTX_set_tlsext_servername_arg(ts->ctx, ts);
    }
    return 1;
}

/* an ASN1 time as seconds since the epoch (UTC); 0 if it has none */
static int asn1_seconds(const ASN1_TIME *t, time_t *out)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    if (!t || ASN1_TIME_to_tm(t, &tm) != 1) return 0;
    *out = timegm(&tm);
    return 1;
}

static enum tls_validity validity(SSL_CTX *ctx, time_t now, time_t *nb, time_t *na)
{
    X509 *x = SSL_CTX_get0_certificate(ctx);
    if (!x || !asn1_seconds(X509_get0_notBefore(x), nb) || !asn1_seconds(X509_get0_notAfter(x), na))
        return TLS_VALID;   /* loaded, so it has both; nothing to say otherwise */
    if (now < *nb) return TLS_NOT_YET_VALID;
    if (now > *na) return TLS_EXPIRED;
    if (*na - now <= (time_t)TLS_EXPIRY_WARN_DAYS * 86400) return TLS_EXPIRING;
    return TLS_VALID;
}

size_t tls_server_dates(const struct tls_server *ts, const char *cert, const char *sni_dir,
                        time_t now, tls_dates_fn *fn, void *arg)
{
    size_t n = 0;
    time_t nb, na;
    enum tls_validity v = validity(ts->ctx, now, &nb, &na);
    if (v != TLS_VALID) { fn(arg, cert, v, nb, na); n++; }
    for (size_t i = 0; i < ts->nsni; i++) {
        if ((v = validity(ts->sni_ctx[i], now, &nb, &na)) == TLS_VALID) continue;
        char path[4096 + 300];
        snprintf(path, sizeof path, "%s/%s/cert.pem", sni_dir ? sni_dir : ".", ts->sni_name[i]);
        fn(arg, path, v, nb, na);
        n++;
    }
    return n;
}

void tls_date(time_t t, char *out, size_t outlen)
{
    struct tm tm;
    if (!gmtime_r(&t, &tm) || !strftime(out, outlen, "%Y-%m-%d %H:%M:%S UTC", &tm))
        snprintf(out, outlen, "%lld", (long long)t);
}

void tls_server_free(struct tls_server *ts)
{
    SSL_CTX_free(ts->ctx);
    for (size_t i = 0; i < ts->nsni; i++) SSL_CTX_free(ts->sni_ctx[i]);
    memset(ts, 0, sizeof *ts);
}

int tls_accept(struct tls_server *ts, int net_fd, int timeout_ms, SSL **out, char *why, size_t whylen)
{
    if (!fd_nonblock(net_fd)) { snprintf(why, whylen, "fcntl: %s", strerror(errno)); return 0; }
    /* each TLS record goes out at once: with Nagle a record written while
     * the previous one is unacknowledged waits for the client's delayed
     * ACK. Not a TCP socket (tests): no matter. */
    int one = 1;
    if (setsockopt(net_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0) { /* not TCP */ }
    SSL *ssl = SSL_new(ts->ctx);
    if (!ssl || SSL_set_fd(ssl, net_fd) != 1) {
        ssl_why(why, whylen, "cannot set up the connection", NULL);
        SSL_free(ssl);
        return 0;
    }
    long long deadline = io_now_ms() + timeout_ms;
    for (;;) {
        int r = SSL_accept(ssl);
        if (r == 1) break;
        int err = SSL_get_error(ssl, r);
        short ev;
        if (err == SSL_ERROR_WANT_READ) ev = POLLIN;
        else if (err == SSL_ERROR_WANT_WRITE) ev = POLLOUT;
        else {
            /* a TCP end: ZERO_RETURN since SSL_OP_IGNORE_UNEXPECTED_EOF */
            if ((err == SSL_ERROR_SYSCALL || err == SSL_ERROR_ZERO_RETURN) && !ERR_peek_error())
                snprintf(why, whylen, "handshake: connection closed");
            else
                ssl_why(why, whylen, "handshake failed", NULL);
            SSL_free(ssl);
            return 0;
        }
        long long left = deadline - io_now_ms();
        struct pollfd p = { .fd = net_fd, .events = ev, .revents = 0 };
        int pr = left > 0 ? poll(&p, 1, (int)left) : 0;
        if (pr < 0 && errno == EINTR) continue;
        if (pr <= 0) {
            snprintf(why, whylen, "handshake: %s", pr == 0 ? "timeout" : strerror(errno));
            SSL_free(ssl);
            return 0;
        }
    }
    *out = ssl;
    return 1;
}

#define RELAY_BUF 16384

struct relay {
    SSL *ssl;
    int net_fd, plain_fd;
    unsigned char to_plain[RELAY_BUF];   /* decrypted, not yet given to the session;
                                            zeroed once given (it may hold a password) */
    size_t tp_off, tp_len;
    unsigned char to_net[RELAY_BUF];     /* from the session, not yet encrypted */
    size_t tn_off, tn_len;
    int net_done;      /* the client's TLS stream has ended: never read it again */
    int plain_done;    /* the session closed its side */
    int shut_sent;     /* our close_notify is out (or cannot be sent) */
    int notify_seen;   /* the client's close_notify came (not just a TCP end) */
    int plain_eof_sent; /* the session has been told the client is done */
    short net_ev, plain_ev;  /* what the blocked operations wait for */
};

/* an alert from the client: its close_notify (SSL_OP_IGNORE_UNEXPECTED_EOF
 * makes a bare TCP end look the same to SSL_read) */
static void relay_alert(const SSL *ssl, int where, int value)
{
    struct relay *r = SSL_get_app_data(ssl);
    if (r && (where & SSL_CB_READ_ALERT) && (value & 0xff) == SSL_AD_CLOSE_NOTIFY) r->notify_seen = 1;
}

/* SSL_read into to_plain when it is empty. Returns 1 on progress. */
static int relay_from_net(struct relay *r, struct tls_stats *st)
{
    if (r->net_done || r->tp_len) return 0;
    int n = SSL_read(r->ssl, r->to_plain, sizeof r->to_plain);
    if (n > 0) {
        r->tp_off = 0;
        r->tp_len = (size_t)n;
        st->net_in += (unsigned long long)n;
        return 1;
    }
    switch (SSL_get_error(r->ssl, n)) {
    case SSL_ERROR_WANT_READ: r->net_ev |= POLLIN; return 0;
    case SSL_ERROR_WANT_WRITE: r->net_ev |= POLLOUT; return 0;
    case SSL_ERROR_ZERO_RETURN:
        /* close_notify, or a TCP end without it: most clients close so
         * right after QUIT, some half-close after their last commands and
         * wait for the replies, which still go out */
        st->end = r->notify_seen ? "close_notify" : "eof";
        break;
    case SSL_ERROR_SYSCALL: st->end = ERR_peek_error() ? "error" : "eof"; r->shut_sent = 1; break;
    default: st->end = "error"; r->shut_sent = 1; break;
    }
    ERR_clear_error();
    r->net_done = 1;
    return 1;
}

static int relay_to_plain(struct relay *r)
{
    if (!r->tp_len) {
        if (r->net_done && !r->plain_done && !r->plain_eof_sent) {
            shutdown(r->plain_fd, SHUT_WR);   /* the session sees end of input */
            r->plain_eof_sent = 1;
            return 1;
        }
        return 0;
    }
    ssize_t w = write(r->plain_fd, r->to_plain + r->tp_off, r->tp_len);
    if (w > 0) {
        r->tp_off += (size_t)w;
        r->tp_len -= (size_t)w;
        if (!r->tp_len) explicit_bzero(r->to_plain, r->tp_off);
        return 1;
    }
    if (w < 0 && (errno == EAGAIN || errno == EINTR)) { r->plain_ev |= POLLOUT; return 0; }
    /* the session is gone: stop relaying in both directions (what it
     * never took is wiped when tls_relay ends) */
    r->tp_len = 0;
    r->plain_done = 1;
    r->net_done = 1;
    return 1;
}

static int relay_from_plain(struct relay *r)
{
    if (r->plain_done || r->tn_len) return 0;
    ssize_t n = read(r->plain_fd, r->to_net, sizeof r->to_net);
    if (n > 0) { r->tn_off = 0; r->tn_len = (size_t)n; return 1; }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) { r->plain_ev |= POLLIN; return 0; }
    r->plain_done = 1;
    return 1;
}

static int relay_to_net(struct relay *r, struct tls_stats *st)
{
    if (!r->tn_len || r->shut_sent) { if (r->shut_sent) r->tn_len = 0; return 0; }
    int n = SSL_write(r->ssl, r->to_net + r->tn_off, (int)r->tn_len);
    if (n > 0) {
        r->tn_off += (size_t)n;
        r->tn_len -= (size_t)n;
        st->net_out += (unsigned long long)n;
        return 1;
    }
    switch (SSL_get_error(r->ssl, n)) {
    case SSL_ERROR_WANT_READ: r->net_ev |= POLLIN; return 0;
    case SSL_ERROR_WANT_WRITE: r->net_ev |= POLLOUT; return 0;
    default:
        ERR_clear_error();
        r->tn_len = 0;
        r->shut_sent = 1;
        r->net_done = 1;
        if (!st->end) st->end = "error";
        return 1;
    }
}

/* When the session is done and everything is sent, say close_notify once. */
static int relay_shutdown(struct relay *r)
{
    if (!r->plain_done || r->tn_len || r->shut_sent) return 0;
    int n = SSL_shutdown(r->ssl);
    if (n >= 0) { r->shut_sent = 1; return 1; }
    switch (SSL_get_error(r->ssl, n)) {
    case SSL_ERROR_WANT_READ: r->net_ev |= POLLIN; return 0;
    case SSL_ERROR_WANT_WRITE: r->net_ev |= POLLOUT; return 0;
    default: ERR_clear_error(); r->shut_sent = 1; return 1;
    }
}

int tls_relay(SSL *ssl, int net_fd, int plain_fd, int idle_ms, struct tls_stats *st)
{
    static struct relay r;
    memset(&r, 0, sizeof r);
    r.ssl = ssl;
    r.net_fd = net_fd;
    r.plain_fd = plain_fd;
    SSL_set_app_data(ssl, &r);
    SSL_set_info_callback(ssl, relay_alert);
    st->net_in = st->net_out = 0;
    st->end = NULL;
    if (!fd_nonblock(plain_fd)) return 0;
    long long last = io_now_ms();
    for (;;) {
        r.net_ev = r.plain_ev = 0;
        int progress = 0;
        progress |= relay_from_net(&r, st);
        progress |= relay_to_plain(&r);
        progress |= relay_from_plain(&r);
        progress |= relay_to_net(&r, st);
        progress |= relay_shutdown(&r);
        /* done: the session has closed and everything it wrote is out,
         * followed by our close_notify (or the client is gone) */
        if (r.plain_done && r.shut_sent && !r.tn_len) break;
        if (progress) { last = io_now_ms(); continue; }
        struct pollfd p[2];
        nfds_t np = 0;
        /* about to wait for the client: send the ACK the kernel may be
         * holding back, or a client with Nagle's algorithm on waits up to
         * 40 ms for it before each piece of a message it sends in records
         * (a Python smtplib client: 25 ms a 100 KB message against 4) */
        if (r.net_ev & POLLIN) fd_push_ack(net_fd);
        if (r.net_ev) { p[np].fd = net_fd; p[np].events = r.net_ev; p[np].revents = 0; np++; }
        if (r.plain_ev) { p[np].fd = plain_fd; p[np].events = r.plain_ev; p[np].revents = 0; np++; }
        if (!np) break;   /* nothing can move any more */
        long long left = last + idle_ms - io_now_ms();
        if (left <= 0) { st->end = "timeout"; break; }
        int pr = poll(p, np, (int)left);
        if (pr < 0 && errno != EINTR) { st->end = "error"; break; }
        if (pr == 0) { st->end = "timeout"; break; }
    }
    if (!st->end) st->end = r.net_done ? "close_notify" : "session_closed";
    explicit_bzero(r.to_plain, sizeof r.to_plain);   /* what the session never took */
    return 1;
}
