/* config.c - postern.conf: defaults, settings table, validation. */
#include "config.h"
#include "conf.h"
#include "queue_path.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

enum config_kind { CK_NAME, CK_LIST, CK_UINT, CK_SIZE, CK_DURATION, CK_WORD, CK_ADDR4 };

struct config_setting {
    const char *key;
    enum config_kind kind;
    size_t offset;
    unsigned long long min, max;
    const char *words;  /* CK_WORD: the values allowed, space-separated */
};

#define NAME(k) { #k, CK_NAME, offsetof(struct config, k), 0, 0, NULL }
#define LIST(k) { #k, CK_LIST, offsetof(struct config, k), 0, 0, NULL }
#define UINT(k, lo, hi) { #k, CK_UINT, offsetof(struct config, k), lo, hi, NULL }
#define SIZE(k, lo, hi) { #k, CK_SIZE, offsetof(struct config, k), lo, hi, NULL }
#define DURATION(k, lo, hi) { #k, CK_DURATION, offsetof(struct config, k), lo, hi, NULL }
/* a NAME / LIST whose values must be domain names of at most hi characters */
#define DOMAIN(k, hi) { #k, CK_NAME, offsetof(struct config, k), 0, hi, NULL }
#define DOMAINS(k, hi) { #k, CK_LIST, offsetof(struct config, k), 0, hi, NULL }
/* a NAME that must be one of the words, as the daemon reading it requires */
#define WORD(k, w) { #k, CK_WORD, offsetof(struct config, k), 0, 0, w }
/* a NAME that must be IPv4[:port], as remote-deliverer's resolver takes it */
#define ADDR4(k) { #k, CK_ADDR4, offsetof(struct config, k), 0, 0, NULL }

static const struct config_setting config_settings[] = {
    DOMAIN(hostname, CONFIG_HOSTNAME_MAX),
    DOMAINS(local_domains, CONFIG_DOMAIN_MAX),
    LIST(relay_networks),
    LIST(smtp_listen),
    LIST(submission_listen),
    LIST(smtps_listen),
    LIST(pop3_listen),
    LIST(pop3s_listen),
    SIZE(max_message_size, 1, 1ULL << 40),
    UINT(max_recipients, 1, 100000),
    UINT(max_sessions, 1, 100000),
    UINT(max_sessions_per_client, 1, 100000),
    DURATION(session_timeout, 1, 86400),
    UINT(max_errors, 1, 1000),
    UINT(max_received, 1, 1000),
    DURATION(queue_lifetime, 60, 365ULL * 86400),
    UINT(auth_concurrency, 1, 64),
    UINT(local_concurrency, 1, 1000),
    UINT(local_per_recipient, 1, 1000),
    UINT(remote_concurrency, 1, 1000),
    SIZE(mailbox_quota, 0, 1ULL << 50),
    UINT(remote_per_domain, 1, 1000),
    DURATION(remote_timeout, 1, 3600),
    DURATION(remote_connect_timeout, 1, 3600),
    DURATION(remote_reuse_time, 0, 300),
    UINT(remote_port, 1, 65535),
    ADDR4(dns_server),
    WORD(pwhash_level, "interactive moderate sensitive"),
    NAME(user_smtp),
    NAME(user_queue),
    NAME(user_auth),
    NAME(user_pop3),
    NAME(user_tls),
    NAME(user_remote),
    NAME(tls_cert),
    NAME(tls_key),
    WORD(pop3_plaintext_auth, "loopback always never"),
};

static void name_set(char *dst, const char *s)
{
    snprintf(dst, CONFIG_NAME_MAX, "%s", s);
}

void config_defaults(struct config *c)
{
    memset(c, 0, sizeof *c);
    name_set(c->hostname, "localhost");
    c->local_domains.n = 1;
    name_set(c->local_domains.v[0], "localhost");
    c->relay_networks.n = 2;
    name_set(c->relay_networks.v[0], "127.0.0.0/8");
    name_set(c->relay_networks.v[1], "::1/128");
    c->smtp_listen.n = 2;
    name_set(c->smtp_listen.v[0], "0.0.0.0:25");
    name_set(c->smtp_listen.v[1], "[::]:25");
    c->max_message_size = 25ULL * 1024 * 1024;
    c->max_recipients = 100;
    c->max_sessions = 100;
    c->max_sessions_per_client = 50;
    c->session_timeout = 300;
    c->max_errors = 20;
    c->max_received = 100;
    c->queue_lifetime = 5ULL * 86400;
    c->auth_concurrency = 2;
    c->local_concurrency = 10;
    c->local_per_recipient = 2;
    c->remote_concurrency = 20;
    c->remote_per_domain = 5;
    c->remote_timeout = 300;
    c->remote_connect_timeout = 30;
    c->remote_reuse_time = 2;
    c->remote_port = 25;
    name_set(c->pwhash_level, "interactive");
    name_set(c->user_smtp, "postern-smtp");
    name_set(c->user_queue, "postern-queue");
    name_set(c->user_auth, "postern-auth");
    name_set(c->user_pop3, "postern-pop3");
    name_set(c->user_tls, "postern-tls");
    name_set(c->user_remote, "postern-remote");
    name_set(c->pop3_plaintext_auth, "loopback");
}

static int name_ok(const char *v, char *why, size_t whylen)
{
    size_t n = strlen(v);
    if (!n) { snprintf(why, whylen, "empty value"); return 0; }
    if (n >= CONFIG_NAME_MAX) { snprintf(why, whylen, "too long (at most %d characters)", CONFIG_NAME_MAX - 1); return 0; }
    for (const char *p = v; *p; p++)
        if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f) {
            snprintf(why, whylen, "invalid character (no spaces or control characters)");
            return 0;
        }
    return 1;
}

/* A host or domain name as DNS and SMTP use it (RFC 1035 2.3.1, RFC 5321
 * 4.1.2): dot-separated labels of letters, digits and hyphens, each 1-63
 * long and not starting or ending with a hyphen, at most max in all. */
static int domain_ok(const char *v, size_t max, char *why, size_t whylen)
{
    size_t n = strlen(v), label = 0;
    if (n > max) { snprintf(why, whylen, "too long for a domain name (at most %zu characters)", max); return 0; }
    for (size_t i = 0; i <= n; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c == '.' || c == 0) {
            if (label == 0 || label > 63 || v[i - 1] == '-' || v[i - label] == '-') {
                snprintf(why, whylen, "not a domain name (labels of 1-63 letters, digits or hyphens, "
                         "not starting or ending with a hyphen, separated by dots)");
                return 0;
            }
            label = 0;
        } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-') {
            label++;
        } else {
            snprintf(why, whylen, "not a domain name (character '%c'; letters, digits, hyphens and dots only)", c);
            return 0;
        }
    }
    return 1;
}

/* v is one of the space-separated words */
static int word_ok(const char *v, const char *words, char *why, size_t whylen)
{
    size_t n = strlen(v);
    for (const char *w = words; *w; ) {
        size_t wl = strcspn(w, " ");
        if (wl == n && !strncmp(w, v, n)) return 1;
        w += wl;
        while (*w == ' ') w++;
    }
    snprintf(why, whylen, "not one of: %s", words);
    return 0;
}

/* IPv4 address, optionally :port (1-65535) */
static int addr4_ok(const char *v, char *why, size_t whylen)
{
    char addr[INET_ADDRSTRLEN];
    struct in_addr a;
    const char *colon = strchr(v, ':');
    size_t n = colon ? (size_t)(colon - v) : strlen(v);
    unsigned long long port;
    if (n >= sizeof addr) goto bad;
    memcpy(addr, v, n);
    addr[n] = 0;
    if (inet_pton(AF_INET, addr, &a) != 1) goto bad;
    if (colon && !conf_uint(colon + 1, 1, 65535, &port, why, whylen)) goto bad;
    return 1;
bad:
    snprintf(why, whylen, "not an IPv4 address with an optional :port (1-65535)");
    return 0;
}

/* domain_max: 0, or each entry must be a domain name of at most that */
static int list_set(struct config_list *l, const char *v, size_t domain_max, char *why, size_t whylen)
{
    struct config_list out;
    out.n = 0;
    const char *p = v;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == ',') p++;
        if (!*p) break;
        const char *e = p;
        while (*e && *e != ' ' && *e != '\t' && *e != ',') e++;
        size_t n = (size_t)(e - p);
        if (out.n == CONFIG_LIST_MAX) { snprintf(why, whylen, "too many entries (at most %d)", CONFIG_LIST_MAX); return 0; }
        if (n >= CONFIG_NAME_MAX) { snprintf(why, whylen, "entry too long"); return 0; }
        memcpy(out.v[out.n], p, n);
        out.v[out.n][n] = 0;
        if (!name_ok(out.v[out.n], why, whylen)) return 0;
        if (domain_max && !domain_ok(out.v[out.n], domain_max, why, whylen)) return 0;
        out.n++;
        p = e;
    }
    *l = out;
    return 1;
}

int config_set(struct config *c, const char *key, const char *value, char *why, size_t whylen)
{
    for (size_t i = 0; i < sizeof config_settings / sizeof config_settings[0]; i++) {
        const struct config_setting *s = &config_settings[i];
        if (strcmp(s->key, key)) continue;
        char *field = (char *)c + s->offset;
        unsigned long long *u = (unsigned long long *)(void *)field;
        switch (s->kind) {
        case CK_NAME:
            if (!name_ok(value, why, whylen)) return 0;
            if (s->max && !domain_ok(value, s->max, why, whylen)) return 0;
            name_set(field, value);
            return 1;
        case CK_WORD:
        case CK_ADDR4:
            if (!name_ok(value, why, whylen)) return 0;
            if (s->kind == CK_WORD ? !word_ok(value, s->words, why, whylen) : !addr4_ok(value, why, whylen))
                return 0;
            name_set(field, value);
            return 1;
        case CK_LIST: return list_set((struct config_list *)(void *)field, value, s->max, why, whylen);
        case CK_UINT: return conf_uint(value, s->min, s->max, u, why, whylen);
        case CK_SIZE:
            if (!conf_size(value, s->max, u, why, whylen)) return 0;
            if (*u < s->min) { snprintf(why, whylen, "too small (at least %llu)", s->min); return 0; }
            return 1;
        case CK_DURATION:
            if (!conf_duration(value, s->max, u, why, whylen)) return 0;
            if (*u < s->min) { snprintf(why, whylen, "too short (at least %llu seconds)", s->min); return 0; }
            return 1;
        }
    }
    snprintf(why, whylen, "unknown setting");
    return 0;
}

static int config_setting_cb(void *ctx, const char *key, const char *value, char *why, size_t whylen)
{
    return config_set(ctx, key, value, why, whylen);
}

int config_load(struct config *c, const char *root, char *err, size_t errlen)
{
    char path[CONFIG_NAME_MAX + 32];
    config_defaults(c);
    if (strlen(root) >= CONFIG_NAME_MAX) {
        snprintf(err, errlen, "%s: ROOT path too long", root);
        errno = ENAMETOOLONG;
        return 0;
    }
    name_set(c->root, root);
    snprintf(path, sizeof path, "%s/conf/postern.conf", root);
    return conf_parse_file(path, config_setting_cb, c, err, errlen);
}

const char *config_root(const char *arg)
{
    if (arg && *arg) return arg;
    const char *e = getenv("POSTERN_ROOT");
    return (e && *e) ? e : NULL;
}

const char *config_root_tool(const char *arg, char *buf, size_t len)
{
    const char *r = config_root(arg);
    if (r) return r;
    char conf[PATH_MAX];
    struct stat st;
    if (!queue_root_from_exe(buf, len)) return NULL;
    if (snprintf(conf, sizeof conf, "%s/conf/postern.conf", buf) >= (int)sizeof conf) return NULL;
    return stat(conf, &st) == 0 && S_ISREG(st.st_mode) ? buf : NULL;
}

int config_is_local_domain(const struct config *c, const char *domain, size_t len)
{
    if (len == strlen(c->hostname) && !strncasecmp(domain, c->hostname, len)) return 1;
    for (size_t i = 0; i < c->local_domains.n; i++)
        if (len == strlen(c->local_domains.v[i]) && !strncasecmp(domain, c->local_domains.v[i], len))
            return 1;
    return 0;
}
