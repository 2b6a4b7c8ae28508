/* dns_mx.h - where mail for a domain goes (RFC 5321 section 5): MX records
 * by preference (random order among equal ones), then the A and AAAA
 * records of each MX host; no MX means the domain itself (implicit MX); a
 * lone "." MX is RFC 7505's null MX. Queries go through the system resolver
 * (libresolv: res_nquery, answers parsed with ns_initparse/ns_parserr), or a
 * resolver named in postern.conf (dns_server = 127.0.0.1:5353, for tests
 * and split-horizon setups). Link with -lresolv. */
#ifndef POSTERN_DNS_MX_H
#define POSTERN_DNS_MX_H

#include <stddef.h>
#include <netinet/in.h>
#include <arpa/nameser.h>
#include <resolv.h>
#include <sys/socket.h>

#define DNS_MX_MAX 16          /* MX hosts considered */
#define DNS_TARGETS_MAX 32     /* addresses tried, in total */
#define DNS_HOST_MAX 256

enum dns_status {
    DNS_OK = 0,
    DNS_NODATA,                /* the name exists but has no such record */
    DNS_NXDOMAIN,              /* the name does not exist */
    DNS_TEMPFAIL,              /* SERVFAIL, timeout, malformed answer */
    DNS_NULLMX                 /* RFC 7505: the domain accepts no mail */
};

struct dns_mx {
    unsigned pref;
    char host[DNS_HOST_MAX];   /* without the trailing dot */
};
struct dns_mx_list {
    size_t n;
    struct dns_mx mx[DNS_MX_MAX];
};

struct dns_target {
    char host[DNS_HOST_MAX];   /* the name it came from (for texts and TLS) */
    struct sockaddr_storage sa;
    socklen_t salen;
};
struct dns_targets {
    size_t n;
    struct dns_target t[DNS_TARGETS_MAX];
    size_t first_temp;          /* dns_mail_targets: n when the address lookup of an MX
                                   host first failed temporarily (its addresses would
                                   have come next), or DNS_TARGETS_NONE */
};
#define DNS_TARGETS_NONE ((size_t)-1)

/* Parse a whole DNS response to an MX query. DNS_OK with l filled (not yet
 * sorted), DNS_NODATA (no MX in the answer), DNS_NULLMX (the only MX is
 * "."), DNS_NXDOMAIN / DNS_TEMPFAIL from the response code, DNS_TEMPFAIL
 * for a malformed message. Of more than DNS_MX_MAX MX records, the
 * DNS_MX_MAX most preferred are kept, wherever they are in the answer. */
enum dns_status dns_parse_mx(const unsigned char *msg, size_t len, struct dns_mx_list *l);

/* Parse a response to an A (ns_t_a) or AAAA (ns_t_aaaa) query and append
 * each address with port to t, named host. DNS_OK if at least one was
 * added, else as dns_parse_mx. */
enum dns_status dns_parse_addrs(const unsigned char *msg, size_t len, int type,
                                const char *host, unsigned port, struct dns_targets *t);

/* Sort by preference; equal preferences in an order drawn with rnd(n),
 * which returns a number in [0, n). */
void dns_mx_sort(struct dns_mx_list *l, unsigned (*rnd)(unsigned n));

/* res_ninit, then, if server is not empty, use only that IPv4 "addr[:port]"
 * resolver. timeout_s bounds each try (two tries). 1 (res_nclose when done),
 * or 0 with why and nothing to close. */
int dns_resolver_init(res_state res, const char *server, int timeout_s, char *why, size_t whylen);

/* Addresses (A, then AAAA) of one host. */
enum dns_status dns_lookup_host(res_state res, const char *host, unsigned port, struct dns_targets *t);

/* The whole procedure for a mail domain: MX (sorted), then addresses; no MX
 * -> the domain's own addresses. DNS_OK with t filled, else the status, with
 * an RFC 3463 text in why ("5.1.2 ..." / "4.4.3 ..." / "5.1.10 ..."). */
enum dns_status dns_mail_targets(res_state res, const char *domain, unsigned port,
                                 struct dns_targets *t, char *why, size_t whylen);

#endif
