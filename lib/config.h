/* config.h - postern.conf, the instance's main settings, with their defaults
 * (DESIGN.md section 5). One struct read by every daemon; each uses the
 * fields it needs. Unknown keys are errors. */
#ifndef POSTERN_CONFIG_H
#define POSTERN_CONFIG_H

#include <stddef.h>

#define CONFIG_LIST_MAX 16     /* entries in a list setting */
#define CONFIG_NAME_MAX 256    /* one hostname / domain / address / user name */
#define CONFIG_DOMAIN_MAX 253  /* a local domain: the longest name DNS carries */
#define CONFIG_HOSTNAME_MAX 243 /* so that <postmaster@hostname> fits RFC 5321's 256-octet path */

struct config_list {
    size_t n;
    char v[CONFIG_LIST_MAX][CONFIG_NAME_MAX];
};

struct config {
    char root[CONFIG_NAME_MAX];     /* the instance ROOT (not a file setting) */
    char hostname[CONFIG_NAME_MAX];           /* hostname = mail.example.test */
    struct config_list local_domains;         /* local_domains = localhost example.test */
    struct config_list relay_networks;        /* relay_networks = 127.0.0.0/8 ::1/128 */
    struct config_list smtp_listen;           /* smtp_listen = 0.0.0.0:25 [::]:25 */
    struct config_list submission_listen;     /* 587 */
    struct config_list smtps_listen;          /* 465 */
    struct config_list pop3_listen;           /* 110 */
    struct config_list pop3s_listen;          /* 995 */
    unsigned long long max_message_size;      /* bytes, default 25 MB */
    unsigned long long max_recipients;        /* 100 */
    unsigned long long max_sessions;          /* per listener, 100 */
    unsigned long long max_sessions_per_client; /* 50 */
    unsigned long long session_timeout;       /* seconds, 300 */
    unsigned long long max_errors;            /* 20 */
    unsigned long long max_received;          /* hop limit, 100 */
    unsigned long long queue_lifetime;        /* seconds, 5 days */
    unsigned long long auth_concurrency;      /* argon2id verifications at once, 2 */
    unsigned long long local_concurrency;     /* queue-manager: local deliveries at once, 10 */
    unsigned long long local_per_recipient;   /* queue-manager: of those, for one recipient address, 2 */
    unsigned long long remote_concurrency;    /* queue-manager: remote deliveries at once, 20 */
    unsigned long long mailbox_quota;         /* local-deliverer: bytes per Maildir, 0 = no limit */
    unsigned long long remote_per_domain;     /* remote-deliverer: connections per destination domain, 5 */
    unsigned long long remote_timeout;        /* remote-deliverer: seconds per SMTP reply/write, 300 */
    unsigned long long remote_connect_timeout; /* remote-deliverer: seconds per connect, 30 */
    unsigned long long remote_reuse_time;     /* remote-deliverer: seconds a connection waits idle for the next message, 2; 0 = QUIT after each */
    unsigned long long remote_port;           /* remote-deliverer: SMTP port of MX hosts, 25 */
    char dns_server[CONFIG_NAME_MAX];         /* remote-deliverer: "" = /etc/resolv.conf, else IPv4:PORT */
    char pwhash_level[CONFIG_NAME_MAX];       /* argon2id cost: interactive|moderate|sensitive */
    /* system users each program runs as (created by postern-setup) */
    char user_smtp[CONFIG_NAME_MAX];          /* postern-smtp */
    char user_queue[CONFIG_NAME_MAX];         /* postern-queue */
    char user_auth[CONFIG_NAME_MAX];          /* postern-auth */
    char user_pop3[CONFIG_NAME_MAX];          /* postern-pop3 */
    char user_tls[CONFIG_NAME_MAX];           /* postern-tls */
    char user_remote[CONFIG_NAME_MAX];        /* postern-remote */
    /* TLS (tls-proxy): PEM files; "" means ROOT/conf/tls/cert.pem and key.pem */
    char tls_cert[CONFIG_NAME_MAX];
    char tls_key[CONFIG_NAME_MAX];
    char pop3_plaintext_auth[CONFIG_NAME_MAX]; /* USER/PASS/AUTH without TLS: loopback|always|never */
};

void config_defaults(struct config *c);
/* Read ROOT/conf/postern.conf over the defaults. 0 with err "file:line: what". */
int config_load(struct config *c, const char *root, char *err, size_t errlen);
/* Parse one setting (used by config_load; exposed for tests). */
int config_set(struct config *c, const char *key, const char *value, char *why, size_t whylen);

/* ROOT from argv/env: the argument if given, else $POSTERN_ROOT, else NULL */
const char *config_root(const char *arg);

/* ROOT for an operator's tool: config_root(arg), else the instance this
 * program belongs to (ROOT/bin/PROG, as postern-setup installs it) if
 * ROOT/conf/postern.conf is there, written into buf; NULL if none */
const char *config_root_tool(const char *arg, char *buf, size_t len);

/* 1 if domain (case-insensitive) is one of local_domains or hostname */
int config_is_local_domain(const struct config *c, const char *domain, size_t len);

#endif
