/* fuzz_routes.c - libFuzzer target: conf/routes, conf/relay-auth and the
 * host[:port] syntax of a route. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "routes.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct routes rs;
static struct relay_auth ra;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 65536) return 0;
    const char *s = (const char *)data;
    char err[256];
    err[0] = 0;
    memset(&rs, 0, sizeof rs);
    int rok = routes_parse_text(&rs, "routes", s, size, err, sizeof err);
    if (rok) {
        if (rs.n > ROUTES_MAX) __builtin_trap();
        for (size_t i = 0; i < rs.n; i++) {
            const struct route *r = &rs.r[i];
            if (!memchr(r->domain, 0, sizeof r->domain) || !memchr(r->host, 0, sizeof r->host)
                || !memchr(r->auth, 0, sizeof r->auth) || !memchr(r->ca, 0, sizeof r->ca)
                || !r->domain[0] || !r->host[0] || r->port > 65535)
                __builtin_trap();
            if (strcmp(r->domain, "*") && r->domain[0] != '.' && routes_find(&rs, r->domain) == NULL)
                __builtin_trap();
        }
        (void)routes_find(&rs, "a.example.net");
    } else if (!err[0] || !memchr(err, 0, sizeof err)) {
        __builtin_trap();
    }
    err[0] = 0;
    memset(&ra, 0, sizeof ra);
    if (relay_auth_parse_text(&ra, "relay-auth", s, size, err, sizeof err)) {
        if (ra.n > RELAY_AUTH_MAX) __builtin_trap();
        for (size_t i = 0; i < ra.n; i++)
            if (relay_auth_find(&ra, ra.c[i].name) == NULL || !memchr(ra.c[i].pass, 0, sizeof ra.c[i].pass))
                __builtin_trap();
        if (rok) (void)routes_check_auth(&rs, &ra, "routes", err, sizeof err);
    } else if (!err[0] || !memchr(err, 0, sizeof err)) {
        __builtin_trap();
    }
    /* the first line as a host */
    char host[600];
    size_t l = 0;
    while (l < size && l < sizeof host - 1 && data[l] != '\n' && data[l]) { host[l] = (char)data[l]; l++; }
    host[l] = 0;
    struct route r;
    memset(&r, 0, sizeof r);
    char why[200];
    if (route_parse_host(&r, host, why, sizeof why)) {
        if (!r.host[0] || !memchr(r.host, 0, sizeof r.host) || r.port > 65535) __builtin_trap();
    }
    return 0;
}
