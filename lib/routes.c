/* routes.c - conf/routes and conf/relay-auth. See routes.h. */
#include "routes.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define FILE_MAX (1024 * 1024)
#define LINE_MAX_LEN 1024

/* read a whole (small) file; 1 with *text malloc'd, 0 with errno (ENOENT...) */
static int slurp(const char *path, char **text, size_t *len, struct stat *st)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return 0;
    if (fstat(fd, st) < 0) { int e = errno; close(fd); errno = e; return 0; }
    if (!S_ISREG(st->st_mode) || st->st_size > FILE_MAX) { close(fd); errno = EFBIG; return 0; }
    char *b = malloc((size_t)st->st_size + 1);
    if (!b) { close(fd); errno = ENOMEM; return 0; }
    size_t n = 0;
    while (n < (size_t)st->st_size) {
        ssize_t r = read(fd, b + n, (size_t)st->st_size - n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        n += (size_t)r;
    }
    close(fd);
    b[n] = 0;
    *text = b;
    *len = n;
    return 1;
}

/* split text into lines; call fn(ctx, line, lineno) on each with '#'
 * comments and surrounding blanks removed (skipping empty ones) */
typedef int line_fn(void *ctx, char *line, unsigned lineno, char *why, size_t whylen);

static int each_line(const char *name, const char *text, size_t len, line_fn *fn, void *ctx,
                     char *err, size_t errlen)
{
    char line[LINE_MAX_LEN + 1], why[256];
    unsigned lineno = 0;
    size_t p = 0;
    while (p < len) {
        const char *nl = memchr(text + p, '\n', len - p);
        size_t e = nl ? (size_t)(nl - text) : len;
        size_t n = e - p;
        lineno++;
        if (n > LINE_MAX_LEN) { snprintf(err, errlen, "%s:%u: line too long", name, lineno); errno = EINVAL; return 0; }
        memcpy(line, text + p, n);
        line[n] = 0;
        p = e + 1;
        if (memchr(line, 0, n)) { snprintf(err, errlen, "%s:%u: NUL byte", name, lineno); errno = EINVAL; return 0; }
        char *h = strchr(line, '#');
        if (h) *h = 0;
        size_t k = strlen(line);
        while (k && (line[k - 1] == ' ' || line[k - 1] == '\t' || line[k - 1] == '\r')) line[--k] = 0;
        char *s = line;
        while (*s == ' ' || *s == '\t') s++;
        if (!*s) continue;
        why[0] = 0;
        if (!fn(ctx, s, lineno, why, sizeof why)) {
            snprintf(err, errlen, "%s:%u: %s", name, lineno, why);
            errno = EINVAL;
            return 0;
        }
    }
    return 1;
}

/* next blank-separated word of *s (modified in place) or NULL */
static char *word(char **s)
{
    char *p = *s;
    while (*p == ' ' || *p == '\t') p++;
    if (!*p) { *s = p; return NULL; }
    char *w = p;
    while (*p && *p != ' ' && *p != '\t') p++;
    if (*p) *p++ = 0;
    *s = p;
    return w;
}

static int hostname_ok(const char *h)
{
    size_t n = strlen(h);
    if (!n || n >= ROUTE_NAME_MAX - 1 || h[0] == '.' || h[0] == '-') return 0;
    for (; *h; h++)
        if (!((*h >= 'a' && *h <= 'z') || (*h >= 'A' && *h <= 'Z') || (*h >= '0' && *h <= '9') ||
              *h == '-' || *h == '.' || *h == '_'))
            return 0;
    return 1;
}

static int port_parse(const char *s, unsigned *port)
{
    unsigned long v = 0;
    if (!*s || strlen(s) > 5) return 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return 0;
        v = v * 10 + (unsigned long)(*s - '0');
    }
    if (v < 1 || v > 65535) return 0;
    *port = (unsigned)v;
    return 1;
}

int route_parse_host(struct route *r, const char *s, char *why, size_t whylen)
{
    char tmp[ROUTE_NAME_MAX];
    const char *portstr = NULL;
    r->port = 0;
    r->literal = 0;
    if (*s == '[') {
        const char *e = strchr(s, ']');
        if (!e) { snprintf(why, whylen, "address literal without ']'"); return 0; }
        size_t n = (size_t)(e - s - 1);
        const char *a = s + 1;
        if (n >= 5 && !strncasecmp(a, "IPv6:", 5)) { a += 5; n -= 5; }
        if (!n || n >= sizeof tmp) { snprintf(why, whylen, "bad address literal"); return 0; }
        memcpy(tmp, a, n);
        tmp[n] = 0;
        unsigned char bin[16];
        if (inet_pton(AF_INET, tmp, bin) != 1 && inet_pton(AF_INET6, tmp, bin) != 1) {
            snprintf(why, whylen, "bad address literal '%.64s'", tmp);
            return 0;
        }
        r->literal = 1;
        if (e[1] == ':') portstr = e + 2;
        else if (e[1]) { snprintf(why, whylen, "junk after address literal"); return 0; }
    } else {
        const char *colon = strchr(s, ':');
        size_t n = colon ? (size_t)(colon - s) : strlen(s);
        if (colon && strchr(colon + 1, ':')) {
            snprintf(why, whylen, "an IPv6 address must be written as a literal: [2001:db8::1]");
            return 0;
        }
        if (n >= sizeof tmp) { snprintf(why, whylen, "host name too long"); return 0; }
        memcpy(tmp, s, n);
        tmp[n] = 0;
        unsigned char bin[4];
        if (inet_pton(AF_INET, tmp, bin) == 1) r->literal = 1;
        else if (!hostname_ok(tmp)) { snprintf(why, whylen, "bad host name '%.64s'", tmp); return 0; }
        if (colon) portstr = colon + 1;
    }
    if (portstr && !port_parse(portstr, &r->port)) {
        snprintf(why, whylen, "bad port '%.16s'", portstr);
        return 0;
    }
    memcpy(r->host, tmp, strlen(tmp) + 1);
    return 1;
}

static int route_line(void *ctx, char *line, unsigned lineno, char *why, size_t whylen)
{
    struct routes *rs = ctx;
    struct route r;
    memset(&r, 0, sizeof r);
    r.line = lineno;
    char *dom = word(&line), *host = word(&line), *opt;
    if (!host) { snprintf(why, whylen, "expected: domain host[:port] [tls=...] [auth=NAME] [ca=FILE]"); return 0; }
    if (strcmp(dom, "*")) {
        const char *d = dom[0] == '.' ? dom + 1 : dom;
        if (!hostname_ok(d) || strchr(d, '_')) { snprintf(why, whylen, "bad domain '%.64s'", dom); return 0; }
    }
    size_t dl = strlen(dom);
    for (size_t i = 0; i <= dl; i++) r.domain[i] = (char)((dom[i] >= 'A' && dom[i] <= 'Z') ? dom[i] + 32 : dom[i]);
    if (r.domain[dl - 1] == '.' && dl > 1) r.domain[dl - 1] = 0;  /* trailing root dot */
    if (!route_parse_host(&r, host, why, whylen)) return 0;
    while ((opt = word(&line))) {
        if (!strncmp(opt, "tls=", 4)) {
            const char *v = opt + 4;
            if (!strcmp(v, "none")) r.tls = ROUTE_TLS_NONE;
            else if (!strcmp(v, "may")) r.tls = ROUTE_TLS_MAY;
            else if (!strcmp(v, "require-verify")) r.tls = ROUTE_TLS_VERIFY;
            else { snprintf(why, whylen, "tls= must be none, may or require-verify"); return 0; }
        } else if (!strncmp(opt, "auth=", 5)) {
            size_t n = strlen(opt + 5);
            if (!n || n >= sizeof r.auth) { snprintf(why, whylen, "bad auth= name"); return 0; }
            memcpy(r.auth, opt + 5, n + 1);
        } else if (!strncmp(opt, "ca=", 3)) {
            size_t n = strlen(opt + 3);
            if (!n || n >= sizeof r.ca || opt[3] != '/') { snprintf(why, whylen, "ca= needs an absolute file name"); return 0; }
            memcpy(r.ca, opt + 3, n + 1);
        } else {
            snprintf(why, whylen, "unknown option '%.32s'", opt);
            return 0;
        }
    }
    if (r.auth[0] && r.tls == ROUTE_TLS_NONE) {
        snprintf(why, whylen, "auth= needs TLS (tls=may or tls=require-verify): credentials are never sent in clear");
        return 0;
    }
    if (r.ca[0] && r.tls != ROUTE_TLS_VERIFY) { snprintf(why, whylen, "ca= only makes sense with tls=require-verify"); return 0; }
    for (size_t i = 0; i < rs->n; i++)
        if (!strcmp(rs->r[i].domain, r.domain)) {
            snprintf(why, whylen, "duplicate route for '%.64s' (first on line %u)", r.domain, rs->r[i].line);
            return 0;
        }
    if (rs->n >= ROUTES_MAX) { snprintf(why, whylen, "too many routes (at most %d)", ROUTES_MAX); return 0; }
    rs->r[rs->n++] = r;
    return 1;
}

int routes_parse_text(struct routes *rs, const char *name, const char *text, size_t len,
                      char *err, size_t errlen)
{
    rs->n = 0;
    if (!each_line(name, text, len, route_line, rs, err, errlen)) { rs->n = 0; return 0; }
    return 1;
}

int routes_load(struct routes *rs, const char *path, char *err, size_t errlen)
{
    char *text;
    size_t len;
    struct stat st;
    rs->n = 0;
    if (!slurp(path, &text, &len, &st)) {
        if (errno == ENOENT) return 1;
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return 0;
    }
    int ok = routes_parse_text(rs, path, text, len, err, errlen);
    free(text);
    return ok;
}

const struct route *routes_find(const struct routes *rs, const char *domain)
{
    const struct route *best = NULL, *star = NULL;
    size_t bestlen = 0, dl = strlen(domain);
    for (size_t i = 0; i < rs->n; i++) {
        const struct route *r = &rs->r[i];
        size_t rl = strlen(r->domain);
        if (!strcmp(r->domain, "*")) { star = r; continue; }
        if (r->domain[0] != '.') {
            if (rl == dl && !strcasecmp(r->domain, domain)) return r;
            continue;
        }
        if (dl > rl && !strcasecmp(domain + dl - rl, r->domain) && rl > bestlen) {
            best = r;
            bestlen = rl;
        }
    }
    return best ? best : star;
}

static int auth_line(void *ctx, char *line, unsigned lineno, char *why, size_t whylen)
{
    struct relay_auth *a = ctx;
    char *name = word(&line), *user = word(&line);
    while (*line == ' ' || *line == '\t') line++;
    char *pass = line;
    (void)lineno;
    if (!user || !*pass) { snprintf(why, whylen, "expected: NAME user password"); return 0; }
    if (strlen(name) >= ROUTE_AUTH_NAME_MAX || strlen(user) >= RELAY_AUTH_FIELD_MAX ||
        strlen(pass) >= RELAY_AUTH_FIELD_MAX) {
        snprintf(why, whylen, "field too long");
        return 0;
    }
    if (relay_auth_find(a, name)) { snprintf(why, whylen, "duplicate name '%.32s'", name); return 0; }
    if (a->n >= RELAY_AUTH_MAX) { snprintf(why, whylen, "too many entries"); return 0; }
    struct relay_cred *c = &a->c[a->n++];
    memcpy(c->name, name, strlen(name) + 1);
    memcpy(c->user, user, strlen(user) + 1);
    memcpy(c->pass, pass, strlen(pass) + 1);
    return 1;
}

int relay_auth_parse_text(struct relay_auth *a, const char *name, const char *text, size_t len,
                          char *err, size_t errlen)
{
    a->n = 0;
    if (!each_line(name, text, len, auth_line, a, err, errlen)) { a->n = 0; return 0; }
    return 1;
}

int relay_auth_load(struct relay_auth *a, const char *path, char *err, size_t errlen)
{
    char *text;
    size_t len;
    struct stat st;
    a->n = 0;
    if (!slurp(path, &text, &len, &st)) {
        if (errno == ENOENT) return 1;
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return 0;
    }
    int ok;
    if (st.st_mode & 077) {
        snprintf(err, errlen, "%s: readable by group or others (mode %03o): chmod 600 it", path,
                 (unsigned)(st.st_mode & 0777));
        errno = EPERM;
        ok = 0;
    } else {
        ok = relay_auth_parse_text(a, path, text, len, err, errlen);
    }
    explicit_bzero(text, len);
    free(text);
    return ok;
}

const struct relay_cred *relay_auth_find(const struct relay_auth *a, const char *name)
{
    for (size_t i = 0; i < a->n; i++)
        if (!strcmp(a->c[i].name, name)) return &a->c[i];
    return NULL;
}

int routes_check_auth(const struct routes *rs, const struct relay_auth *a, const char *name,
                      char *err, size_t errlen)
{
    for (size_t i = 0; i < rs->n; i++)
        if (rs->r[i].auth[0] && !relay_auth_find(a, rs->r[i].auth)) {
            snprintf(err, errlen, "%s:%u: auth=%s: no such entry in conf/relay-auth", name,
                     rs->r[i].line, rs->r[i].auth);
            errno = EINVAL;
            return 0;
        }
    return 1;
}
