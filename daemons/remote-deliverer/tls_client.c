/* tls_client.c - the client side of STARTTLS for remote-deliverer: TLS 1.2
 * or later; no verification (opportunistic) unless the route says
 * tls=require-verify, then the chain against the system store or the
 * route's CA file, and the host name (or IP address) of the route. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <arpa/inet.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "io.h"
#include "remote.h"

void tls_client_global_init(void)
{
    OPENSSL_init_ssl(OPENSSL_INIT_LOAD_SSL_STRINGS | OPENSSL_INIT_LOAD_CRYPTO_STRINGS, NULL);
}

/* wait for what SSL asked, within ms; 1, or 0 with errno */
static int ssl_wait(SSL *ssl, int fd, int rc, int ms)
{
    int e = SSL_get_error(ssl, rc);
    short ev;
    if (e == SSL_ERROR_WANT_READ) ev = POLLIN;
    else if (e == SSL_ERROR_WANT_WRITE) ev = POLLOUT;
    else if (e == SSL_ERROR_ZERO_RETURN) { errno = EPIPE; return 0; }
    else if (e == SSL_ERROR_SYSCALL && !errno) { errno = EPIPE; return 0; }
    else { if (e != SSL_ERROR_SYSCALL) errno = EPROTO; return 0; }
    if (ms <= 0) { errno = ETIMEDOUT; return 0; }
    struct pollfd p = { .fd = fd, .events = ev, .revents = 0 };
    int r;
    while ((r = poll(&p, 1, ms)) < 0 && errno == EINTR) {}
    if (r == 0) { errno = ETIMEDOUT; return 0; }
    return r > 0;
}

static ssize_t tls_read(void *ctx, void *p, size_t n, int timeout_ms)
{
    struct tls_client *t = ctx;
    long long deadline = io_now_ms() + timeout_ms;
    for (;;) {
        ERR_clear_error();
        errno = 0;
        int r = SSL_read(t->ssl, p, n > 0x7fffffff ? 0x7fffffff : (int)n);
        if (r > 0) return r;
        if (!ssl_wait(t->ssl, t->fd, r, (int)(deadline - io_now_ms())))
            return errno == EPIPE ? 0 : -1;
    }
}

static ssize_t tls_write(void *ctx, const void *p, size_t n, int timeout_ms)
{
    struct tls_client *t = ctx;
    long long deadline = io_now_ms() + timeout_ms;
    for (;;) {
        ERR_clear_error();
        errno = 0;
        int r = SSL_write(t->ssl, p, n > 0x7fffffff ? 0x7fffffff : (int)n);
        if (r > 0) return r;
        if (!ssl_wait(t->ssl, t->fd, r, (int)(deadline - io_now_ms()))) return -1;
    }
}

static void ssl_why(char *why, size_t whylen, const char *what)
{
    unsigned long e = ERR_get_error();
    char b[256];
    if (e) ERR_error_string_n(e, b, sizeof b);
    else snprintf(b, sizeof b, "%s", errno ? strerror(errno) : "connection closed");
    snprintf(why, whylen, "%s: %s", what, b);
}

int tls_client_starttls(void *tls_client, struct smtp_conn *c, char *why, size_t whylen)
{
    struct tls_client *t = tls_client;
    unsigned char ip[16];
    int is_ip = t->name && (inet_pton(AF_INET, t->name, ip) == 1 || inet_pton(AF_INET6, t->name, ip) == 1);
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) { ssl_why(why, whylen, "SSL_CTX_new"); return 0; }
    t->ctx = ctx;
    t->fd = c->fd;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (t->verify) {
        int ok = t->ca && *t->ca ? SSL_CTX_load_verify_locations(ctx, t->ca, NULL)
                                 : SSL_CTX_set_default_verify_paths(ctx);
        if (!ok) { ssl_why(why, whylen, "loading CA certificates"); return 0; }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    SSL *ssl = SSL_new(ctx);
    if (!ssl) { ssl_why(why, whylen, "SSL_new"); return 0; }
    t->ssl = ssl;
    if (!SSL_set_fd(ssl, c->fd)) { ssl_why(why, whylen, "SSL_set_fd"); return 0; }
    if (t->name && *t->name && !is_ip) SSL_set_tlsext_host_name(ssl, t->name);
    if (t->verify && t->name && *t->name) {
        int ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), t->name)
                       : SSL_set1_host(ssl, t->name);
        if (!ok) { ssl_why(why, whylen, "setting the name to verify"); return 0; }
    }
    long long deadline = io_now_ms() + c->timeout_ms;
    for (;;) {
        ERR_clear_error();
        errno = 0;
        int r = SSL_connect(ssl);
        if (r == 1) break;
        int saved = errno;
        if (SSL_get_error(ssl, r) == SSL_ERROR_SSL && SSL_get_verify_result(ssl) != X509_V_OK) {
            snprintf(why, whylen, "certificate verification failed: %s",
                     X509_verify_cert_error_string(SSL_get_verify_result(ssl)));
            return 0;
        }
        errno = saved;
        if (!ssl_wait(ssl, c->fd, r, (int)(deadline - io_now_ms()))) {
            ssl_why(why, whylen, errno == ETIMEDOUT ? "handshake timeout" : "handshake");
            return 0;
        }
    }
    c->tr.ctx = t;
    c->tr.read = tls_read;
    c->tr.write = tls_write;
    c->inpos = c->inlen = 0;
    return 1;
}

int tls_client_pending(const struct tls_client *t)
{
    return t->ssl && SSL_has_pending(t->ssl);
}

void tls_client_end(struct tls_client *t)
{
    if (t->ssl) SSL_free(t->ssl);
    if (t->ctx) SSL_CTX_free(t->ctx);
    t->ssl = t->ctx = NULL;
}
