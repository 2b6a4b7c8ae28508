/* tls_relay.h - tls-proxy's parts: the server context (certificates, SNI,
 * protocol policy), the handshake, and the relay loop between the TLS
 * socket and the plaintext socket of the session. */
#ifndef POSTERN_TLS_RELAY_H
#define POSTERN_TLS_RELAY_H

#include <stddef.h>
#include <time.h>
#include <openssl/ssl.h>

#define TLS_SNI_MAX 32          /* per-name certificates loaded at start */

struct tls_server {
    SSL_CTX *ctx;                       /* the default certificate */
    size_t nsni;
    char sni_name[TLS_SNI_MAX][256];    /* lower case */
    SSL_CTX *sni_ctx[TLS_SNI_MAX];
};

/* Build the default context from cert/key files (PEM; the cert file may hold
 * the chain), then every ROOT/conf/tls/sni/<name>/{cert,key}.pem found in
 * sni_dir (NULL: none). tickets: issue session tickets (RFC 5077, TLS 1.3
 * resumption) under the contexts' own random keys, which only processes
 * forked after the load share (tls-proxy -z); 0 for none. 0 with why[]
 * saying which file and what is wrong. */
int tls_server_load(struct tls_server *ts, const char *cert, const char *key,
                    const char *sni_dir, int tickets, char *why, size_t whylen);

/* A loaded certificate's validity period against a time. */
enum tls_validity { TLS_VALID, TLS_EXPIRING, TLS_EXPIRED, TLS_NOT_YET_VALID };
#define TLS_EXPIRY_WARN_DAYS 14     /* TLS_EXPIRING: at most this many days left */

/* Call fn for every certificate ts holds (the default one, then each SNI
 * name's) whose validity at now is not TLS_VALID, with the file it was
 * read from (cert, or sni_dir/<name>/cert.pem) and its notBefore and
 * notAfter. Returns how many calls were made. */
typedef void tls_dates_fn(void *arg, const char *file, enum tls_validity v, time_t not_before,
                          time_t not_after);
size_t tls_server_dates(const struct tls_server *ts, const char *cert, const char *sni_dir,
                        time_t now, tls_dates_fn *fn, void *arg);

/* t as "YYYY-MM-DD HH:MM:SS UTC" */
void tls_date(time_t t, char *out, size_t outlen);

/* free what tls_server_load made (also after it failed part way) */
void tls_server_free(struct tls_server *ts);

struct tls_stats {
    unsigned long long net_in;   /* plaintext bytes from the client */
    unsigned long long net_out;  /* plaintext bytes to the client */
    const char *end;             /* how the relay ended: "close_notify", "eof", "timeout", "error" */
};

/* Handshake on net_fd within timeout_ms. 1 with *ssl set, or 0 (why set). */
int tls_accept(struct tls_server *ts, int net_fd, int timeout_ms, SSL **ssl,
               char *why, size_t whylen);

/* Relay until both sides are done: plaintext from the session (plain_fd)
 * goes out encrypted, decrypted client data goes to the session. Once the
 * client's TLS has ended (close_notify, EOF or error) nothing more is read
 * from net_fd. idle_ms bounds any wait without progress. */
int tls_relay(SSL *ssl, int net_fd, int plain_fd, int idle_ms, struct tls_stats *st);

#endif
