/* tls_client.c - the client side of STARTTLS for remote-deliverer: TLS 1.2
 * or later; no verification (opportunistic) unless the route says
 * tls=require-verify, then the chain against the system store or the
 * route's CA file, and the host name (or IP address) of the route. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "filesig.h"
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

/* decrypted application bytes not yet handed to the reader */
static int tls_app_pending(void *ctx)
{
    struct tls_client *t = ctx;
    return t->ssl && SSL_pending(t->ssl) > 0;
}

static void ssl_why(char *why, size_t whylen, const char *what)
{
    unsigned long e = ERR_get_error();
    char b[256];
    if (e) ERR_error_string_n(e, b, sizeof b);
    else snprintf(b, sizeof b, "%s", errno ? strerror(errno) : "connection closed");
    snprintf(why, whylen, "%s: %s", what, b);
}

/* a client context: verifying against ca ("" = the system store), or not */
static SSL_CTX *ctx_make(int verify, const char *ca, char *why, size_t whylen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) { ssl_why(why, whylen, "SSL_CTX_new"); return NULL; }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (verify) {
        int ok = ca && *ca ? SSL_CTX_load_verify_locations(ctx, ca, NULL)
                           : SSL_CTX_set_default_verify_paths(ctx);
        if (!ok) { ssl_why(why, whylen, "loading CA certificates"); SSL_CTX_free(ctx); return NULL; }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    return ctx;
}

/* Contexts made in the parent (tls_client_prepare) and shared, copy on
 * write, by every delivery child it forks: loading the system CA store
 * costs about 23 ms of CPU here (140 certificates parsed), and a context
 * 0.17 ms, which each verified connection paid in its own child. A CA file
 * changed since (filesig.h: one stat a connection) is read afresh by each
 * child, as before, until a reload makes its context again. */
#define CTX_CACHE_MAX 32
static struct {
    int verify;
    char ca[ROUTE_NAME_MAX];
    SSL_CTX *ctx;
    struct filesig_cache sig;   /* of the CA file (verify only) */
} cache[CTX_CACHE_MAX];
static size_t ncache;

/* the file a verifying context reads its CA certificates from: the route's,
 * else the system store's bundle (the hashed directory beside it is read
 * at each verification anyway) */
static const char *ca_file(const char *ca)
{
    if (ca && *ca) return ca;
    const char *env = getenv(X509_get_default_cert_file_env());
    return env && *env ? env : X509_get_default_cert_file();
}

static int ctx_slot(int verify, const char *ca)
{
    for (size_t i = 0; i < ncache; i++)
        if (cache[i].verify == verify && (!verify || !strcmp(cache[i].ca, ca ? ca : ""))) return (int)i;
    return -1;
}

static SSL_CTX *ctx_cached(int verify, const char *ca)
{
    int i = ctx_slot(verify, ca);
    struct filesig now;
    if (i < 0) return NULL;
    if (verify && filesig_cache_stale(&cache[i].sig, ca_file(ca), &now)) return NULL;
    return cache[i].ctx;
}

static void ctx_cache_add(int verify, const char *ca)
{
    char why[256];
    struct filesig sig;
    if (ncache == CTX_CACHE_MAX || ctx_slot(verify, ca) >= 0) return;
    if (verify) filesig_read(ca_file(ca), &sig);   /* the file as it is before reading */
    SSL_CTX *ctx = ctx_make(verify, ca, why, sizeof why);
    if (!ctx) { ERR_clear_error(); return; }   /* each delivery tries, and says why */
    memset(&cache[ncache], 0, sizeof cache[ncache]);
    cache[ncache].verify = verify;
    snprintf(cache[ncache].ca, sizeof cache[ncache].ca, "%s", verify && ca ? ca : "");
    cache[ncache].ctx = ctx;
    if (verify) filesig_cache_loaded(&cache[ncache].sig, &sig);
    ncache++;
}

void tls_client_prepare(const struct routes *rs)
{
    for (size_t i = 0; i < ncache; i++) SSL_CTX_free(cache[i].ctx);
    ncache = 0;
    ctx_cache_add(0, "");                      /* opportunistic: MX and tls=may routes */
    for (size_t i = 0; i < rs->n; i++)
        if (rs->r[i].tls == ROUTE_TLS_VERIFY) ctx_cache_add(1, rs->r[i].ca);
}

int tls_client_starttls(void *tls_client, struct smtp_conn *c, char *why, size_t whylen)
{
    struct tls_client *t = tls_client;
    unsigned char ip[16];
    int is_ip = t->name && (inet_pton(AF_INET, t->name, ip) == 1 || inet_pton(AF_INET6, t->name, ip) == 1);
    SSL_CTX *ctx = ctx_cached(t->verify, t->ca);
    if (ctx) SSL_CTX_up_ref(ctx);
    else if (!(ctx = ctx_make(t->verify, t->ca, why, whylen))) return 0;
    t->ctx = ctx;
    t->fd = c->fd;
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
    c->tr.pending = tls_app_pending;
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
