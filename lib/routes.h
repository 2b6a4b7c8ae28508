/* routes.h - static destinations for remote delivery (conf/routes) and the
 * smarthost credentials (conf/relay-auth), see docs/REMOTE.md.
 *
 * conf/routes, one route a line, '#' comments:
 *     domain  host[:port]  [tls=none|may|require-verify] [auth=NAME] [ca=FILE]
 * domain is a domain ("example.net"), ".example.net" (any subdomain of it)
 * or "*" (everything else: the smarthost). host is a host name (looked up
 * as A/AAAA, no MX) or an address literal "[192.0.2.1]" / "[IPv6:2001:db8::1]"
 * / "[2001:db8::1]". tls defaults to "may".
 *
 * conf/relay-auth (mode 0600, owner postern-remote), one entry a line:
 *     NAME  user  password       (the password is the rest of the line)
 */
#ifndef POSTERN_ROUTES_H
#define POSTERN_ROUTES_H

#include <stddef.h>

#define ROUTES_MAX 256
#define ROUTE_NAME_MAX 256       /* domain, host, ca path */
#define ROUTE_AUTH_NAME_MAX 64
#define RELAY_AUTH_MAX 64
#define RELAY_AUTH_FIELD_MAX 256

enum route_tls { ROUTE_TLS_MAY = 0, ROUTE_TLS_NONE, ROUTE_TLS_VERIFY };

struct route {
    char domain[ROUTE_NAME_MAX];   /* lower case */
    char host[ROUTE_NAME_MAX];     /* name, or the address of a literal */
    int literal;                   /* host is an IP address */
    unsigned port;                 /* 0: the default (remote_port) */
    enum route_tls tls;
    char auth[ROUTE_AUTH_NAME_MAX];/* "" or a relay-auth NAME */
    char ca[ROUTE_NAME_MAX];       /* "" or a CA file for require-verify */
    unsigned line;                 /* where it was written, for messages */
};

struct routes {
    size_t n;
    struct route r[ROUTES_MAX];
};

/* Parse routes text (name used in errors). 1, or 0 with err "name:line: what". */
int routes_parse_text(struct routes *rs, const char *name, const char *text, size_t len,
                      char *err, size_t errlen);
/* Load a file; a missing file means no routes (1). */
int routes_load(struct routes *rs, const char *path, char *err, size_t errlen);
/* The route for domain: exact match, else the longest ".suffix" match,
 * else "*", else NULL (deliver by MX). */
const struct route *routes_find(const struct routes *rs, const char *domain);

/* Parse "host", "host:port", "[literal]", "[literal]:port" into r->host,
 * r->literal, r->port. 1, or 0 with why filled. */
int route_parse_host(struct route *r, const char *s, char *why, size_t whylen);

struct relay_cred {
    char name[ROUTE_AUTH_NAME_MAX];
    char user[RELAY_AUTH_FIELD_MAX];
    char pass[RELAY_AUTH_FIELD_MAX];
};
struct relay_auth {
    size_t n;
    struct relay_cred c[RELAY_AUTH_MAX];
};

int relay_auth_parse_text(struct relay_auth *a, const char *name, const char *text, size_t len,
                          char *err, size_t errlen);
/* Load conf/relay-auth; a missing file means no credentials. The file must
 * not be readable by group or others (error otherwise). */
int relay_auth_load(struct relay_auth *a, const char *path, char *err, size_t errlen);
const struct relay_cred *relay_auth_find(const struct relay_auth *a, const char *name);

/* 1 if every route's auth= names an entry of a; else 0 with err. */
int routes_check_auth(const struct routes *rs, const struct relay_auth *a, const char *name,
                      char *err, size_t errlen);

#endif
