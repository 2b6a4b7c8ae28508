/* dns_mx.c - MX and address lookups for remote delivery. See dns_mx.h. */
#include "dns_mx.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define ANSWER_MAX 65536

static enum dns_status rcode_status(ns_msg *h)
{
    switch (ns_msg_getflag(*h, ns_f_rcode)) {
    case ns_r_noerror: return DNS_OK;
    case ns_r_nxdomain: return DNS_NXDOMAIN;
    default: return DNS_TEMPFAIL;
    }
}

enum dns_status dns_parse_mx(const unsigned char *msg, size_t len, struct dns_mx_list *l)
{
    ns_msg h;
    ns_rr rr;
    int nullmx = 0, seen = 0;
    l->n = 0;
    if (len > ANSWER_MAX || ns_initparse(msg, (int)len, &h) < 0) return DNS_TEMPFAIL;
    enum dns_status st = rcode_status(&h);
    if (st != DNS_OK) return st;
    int n = ns_msg_count(h, ns_s_an);
    for (int i = 0; i < n; i++) {
        if (ns_parserr(&h, ns_s_an, i, &rr) < 0) return DNS_TEMPFAIL;
        if (ns_rr_type(rr) != ns_t_mx || ns_rr_class(rr) != ns_c_in) continue;
        if (ns_rr_rdlen(rr) < 3) return DNS_TEMPFAIL;
        char name[NS_MAXDNAME];
        const unsigned char *rd = ns_rr_rdata(rr);
        unsigned pref = ns_get16(rd);
        int k = dn_expand(ns_msg_base(h), ns_msg_end(h), rd + 2, name, sizeof name);
        if (k < 0 || k != ns_rr_rdlen(rr) - 2) return DNS_TEMPFAIL;
        seen++;
        if (!name[0] || !strcmp(name, ".")) { nullmx++; continue; }
        size_t nl = strlen(name);
        if (nl && name[nl - 1] == '.') name[--nl] = 0;
        if (nl >= DNS_HOST_MAX) continue;
        size_t at = l->n;
        if (l->n >= DNS_MX_MAX) {
            /* full: this one replaces the least preferred, if it is better
             * (the answer's order says nothing: keep the best DNS_MX_MAX) */
            at = 0;
            for (size_t w = 1; w < l->n; w++)
                if (l->mx[w].pref > l->mx[at].pref) at = w;
            if (pref >= l->mx[at].pref) continue;
        } else {
            l->n++;
        }
        l->mx[at].pref = pref;
        memcpy(l->mx[at].host, name, nl + 1);
    }
    if (nullmx && seen == nullmx) return DNS_NULLMX;
    if (!l->n) return seen ? DNS_TEMPFAIL : DNS_NODATA;
    return DNS_OK;
}

enum dns_status dns_parse_addrs(const unsigned char *msg, size_t len, int type,
                                const char *host, unsigned port, struct dns_targets *t)
{
    ns_msg h;
    ns_rr rr;
    int added = 0;
    size_t hl = strlen(host);
    if (hl >= DNS_HOST_MAX) return DNS_TEMPFAIL;
    if (len > ANSWER_MAX || ns_initparse(msg, (int)len, &h) < 0) return DNS_TEMPFAIL;
    enum dns_status st = rcode_status(&h);
    if (st != DNS_OK) return st;
    int n = ns_msg_count(h, ns_s_an);
    for (int i = 0; i < n; i++) {
        if (ns_parserr(&h, ns_s_an, i, &rr) < 0) return DNS_TEMPFAIL;
        if ((int)ns_rr_type(rr) != type || ns_rr_class(rr) != ns_c_in) continue;
        if (t->n >= DNS_TARGETS_MAX) break;
        struct dns_target *d = &t->t[t->n];
        memset(d, 0, sizeof *d);
        if (type == ns_t_a) {
            if (ns_rr_rdlen(rr) != 4) return DNS_TEMPFAIL;
            struct sockaddr_in *s = (struct sockaddr_in *)&d->sa;
            s->sin_family = AF_INET;
            s->sin_port = htons((unsigned short)port);
            memcpy(&s->sin_addr, ns_rr_rdata(rr), 4);
            d->salen = sizeof *s;
        } else if (type == ns_t_aaaa) {
            if (ns_rr_rdlen(rr) != 16) return DNS_TEMPFAIL;
            struct sockaddr_in6 *s = (struct sockaddr_in6 *)&d->sa;
            s->sin6_family = AF_INET6;
            s->sin6_port = htons((unsigned short)port);
            memcpy(&s->sin6_addr, ns_rr_rdata(rr), 16);
            d->salen = sizeof *s;
        } else {
            return DNS_TEMPFAIL;
        }
        memcpy(d->host, host, hl + 1);
        t->n++;
        added++;
    }
    return added ? DNS_OK : DNS_NODATA;
}

void dns_mx_sort(struct dns_mx_list *l, unsigned (*rnd)(unsigned n))
{
    /* shuffle first (Fisher-Yates), then a stable sort by preference keeps
     * the random order among equals */
    for (size_t i = l->n; i > 1; i--) {
        size_t j = rnd((unsigned)i);
        if (j >= i) j = i - 1;
        struct dns_mx tmp = l->mx[i - 1];
        l->mx[i - 1] = l->mx[j];
        l->mx[j] = tmp;
    }
    for (size_t i = 1; i < l->n; i++) {
        struct dns_mx x = l->mx[i];
        size_t j = i;
        while (j > 0 && l->mx[j - 1].pref > x.pref) { l->mx[j] = l->mx[j - 1]; j--; }
        l->mx[j] = x;
    }
}

int dns_resolver_init(res_state res, const char *server, int timeout_s, char *why, size_t whylen)
{
    memset(res, 0, sizeof *res);
    if (res_ninit(res) < 0) { snprintf(why, whylen, "resolver initialisation failed"); return 0; }
    res->retrans = timeout_s < 1 ? 1 : timeout_s;
    res->retry = 2;
    if (!server || !*server) return 1;
    char addr[64];
    unsigned long port = 53;
    const char *colon = strchr(server, ':');
    size_t n = colon ? (size_t)(colon - server) : strlen(server);
    if (n >= sizeof addr) { snprintf(why, whylen, "dns_server: bad address"); goto refused; }
    memcpy(addr, server, n);
    addr[n] = 0;
    if (colon) {
        char *e;
        errno = 0;
        port = strtoul(colon + 1, &e, 10);
        if (errno || *e || !colon[1] || port < 1 || port > 65535) {
            snprintf(why, whylen, "dns_server: bad port");
            goto refused;
        }
    }
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons((unsigned short)port);
    if (inet_pton(AF_INET, addr, &sin.sin_addr) != 1) {
        snprintf(why, whylen, "dns_server: not an IPv4 address: %.64s", addr);
        goto refused;
    }
    res->nsaddr_list[0] = sin;
    res->nscount = 1;
    return 1;
refused:
    res_nclose(res);   /* res_ninit's allocations go with it */
    return 0;
}

static unsigned dns_random(unsigned n)
{
    unsigned v = 0;
    if (n <= 1) return 0;
    if (getrandom(&v, sizeof v, GRND_NONBLOCK) != (ssize_t)sizeof v) v = (unsigned)rand();
    return v % n;
}

static unsigned char answer[ANSWER_MAX];

/* one query: DNS_OK with *len, or the failure */
static enum dns_status query(res_state res, const char *name, int type, size_t *len)
{
    res->res_h_errno = 0;
    int n = res_nquery(res, name, ns_c_in, type, answer, sizeof answer);
    if (n < 0) {
        switch (res->res_h_errno) {
        case HOST_NOT_FOUND: return DNS_NXDOMAIN;
        case NO_DATA: return DNS_NODATA;
        default: return DNS_TEMPFAIL;
        }
    }
    *len = (size_t)n > sizeof answer ? sizeof answer : (size_t)n;
    return DNS_OK;
}

enum dns_status dns_lookup_host(res_state res, const char *host, unsigned port, struct dns_targets *t)
{
    size_t len;
    int temp = 0, found = 0, nx = 0;
    static const int types[2] = { ns_t_a, ns_t_aaaa };
    for (int i = 0; i < 2; i++) {
        enum dns_status st = query(res, host, types[i], &len);
        if (st == DNS_OK) st = dns_parse_addrs(answer, len, types[i], host, port, t);
        if (st == DNS_OK) found = 1;
        else if (st == DNS_TEMPFAIL) temp = 1;
        else if (st == DNS_NXDOMAIN) nx = 1;
    }
    if (found) return DNS_OK;
    if (temp) return DNS_TEMPFAIL;
    return nx ? DNS_NXDOMAIN : DNS_NODATA;
}

enum dns_status dns_mail_targets(res_state res, const char *domain, unsigned port,
                                 struct dns_targets *t, char *why, size_t whylen)
{
    static struct dns_mx_list l;
    size_t len;
    t->n = 0;
    t->first_temp = DNS_TARGETS_NONE;
    enum dns_status st = query(res, domain, ns_t_mx, &len);
    if (st == DNS_OK) st = dns_parse_mx(answer, len, &l);
    switch (st) {
    case DNS_NXDOMAIN:
        snprintf(why, whylen, "5.1.2 domain %.200s does not exist (DNS: NXDOMAIN)", domain);
        return st;
    case DNS_NULLMX:
        snprintf(why, whylen, "5.1.10 domain %.200s accepts no mail (null MX)", domain);
        return st;
    case DNS_TEMPFAIL:
        snprintf(why, whylen, "4.4.3 DNS lookup of MX for %.200s failed temporarily", domain);
        return st;
    case DNS_NODATA:   /* implicit MX: the domain itself */
        st = dns_lookup_host(res, domain, port, t);
        if (st == DNS_OK) return st;
        if (st == DNS_TEMPFAIL)
            snprintf(why, whylen, "4.4.3 DNS lookup of address for %.200s failed temporarily", domain);
        else if (st == DNS_NXDOMAIN)
            snprintf(why, whylen, "5.1.2 domain %.200s does not exist (DNS: NXDOMAIN)", domain);
        else
            snprintf(why, whylen, "5.4.4 domain %.200s has neither MX nor address records", domain);
        return st;
    case DNS_OK:
        break;
    }
    dns_mx_sort(&l, dns_random);
    int temp = 0;
    for (size_t i = 0; i < l.n && t->n < DNS_TARGETS_MAX; i++)
        if (dns_lookup_host(res, l.mx[i].host, port, t) == DNS_TEMPFAIL) {
            if (!temp) t->first_temp = t->n;
            temp = 1;
        }
    if (t->n) return DNS_OK;
    if (temp) {
        snprintf(why, whylen, "4.4.3 DNS lookup of the MX hosts of %.200s failed temporarily", domain);
        return DNS_TEMPFAIL;
    }
    snprintf(why, whylen, "4.4.4 no MX host of %.200s has an address", domain);
    return DNS_TEMPFAIL;
}
