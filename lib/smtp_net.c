/* smtp_net.c - is a client address inside one of the relay networks; is an
 * address literal this connection's own address. */
#include "smtp_net.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* parse "addr[/bits]" into family, 16 address bytes and prefix bits */
static int net_parse(const char *entry, int *family, unsigned char addr[16], unsigned *bits)
{
    char host[INET6_ADDRSTRLEN + 1];
    const char *slash = strchr(entry, '/');
    size_t hlen = slash ? (size_t)(slash - entry) : strlen(entry);
    if (!hlen || hlen >= sizeof host) return 0;
    memcpy(host, entry, hlen);
    host[hlen] = 0;
    memset(addr, 0, 16);
    unsigned max;
    if (inet_pton(AF_INET, host, addr) == 1) { *family = AF_INET; max = 32; }
    else if (inet_pton(AF_INET6, host, addr) == 1) { *family = AF_INET6; max = 128; }
    else return 0;
    *bits = max;
    if (slash) {
        const char *p = slash + 1;
        unsigned n = 0;
        if (!*p) return 0;
        for (; *p; p++) {
            if (*p < '0' || *p > '9') return 0;
            n = n * 10 + (unsigned)(*p - '0');
            if (n > max) return 0;
        }
        *bits = n;
    }
    return 1;
}

int smtp_net_valid(const char *entry)
{
    int fam;
    unsigned char a[16];
    unsigned bits;
    return net_parse(entry, &fam, a, &bits);
}

static int prefix_eq(const unsigned char *a, const unsigned char *b, unsigned bits)
{
    unsigned whole = bits / 8, rest = bits % 8;
    if (memcmp(a, b, whole)) return 0;
    if (!rest) return 1;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (a[whole] & mask) == (b[whole] & mask);
}

/* a v4-mapped IPv6 address (::ffff:a.b.c.d) as the IPv4 address it carries */
static void unmap(int *fam, unsigned char a[16])
{
    static const unsigned char mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
    if (*fam != AF_INET6 || memcmp(a, mapped, 12)) return;
    memmove(a, a + 12, 4);
    memset(a + 4, 0, 12);
    *fam = AF_INET;
}

/* the address of sa as family and 16 bytes (IPv4 in the first 4), unmapped */
static int sa_bytes(const struct sockaddr *sa, int *fam, unsigned char a[16])
{
    memset(a, 0, 16);
    if (sa->sa_family == AF_INET) {
        memcpy(a, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
        *fam = AF_INET;
    } else if (sa->sa_family == AF_INET6) {
        memcpy(a, ((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr.s6_addr, 16);
        *fam = AF_INET6;
        unmap(fam, a);
    } else {
        return 0;
    }
    return 1;
}

int smtp_net_match(const struct config_list *list, const struct sockaddr *sa)
{
    unsigned char peer[16];
    int pfam;
    if (!sa_bytes(sa, &pfam, peer)) return 0;
    for (size_t i = 0; i < list->n; i++) {
        int fam;
        unsigned char net[16];
        unsigned bits;
        if (!net_parse(list->v[i], &fam, net, &bits) || fam != pfam) continue;
        if (prefix_eq(peer, net, bits)) return 1;
    }
    return 0;
}

int smtp_net_literal_is(const char *lit, size_t len, const struct sockaddr *sa)
{
    char text[INET6_ADDRSTRLEN + 8];
    if (len < 3 || lit[0] != '[' || lit[len - 1] != ']' || len - 2 >= sizeof text) return 0;
    memcpy(text, lit + 1, len - 2);
    text[len - 2] = 0;
    /* "[IPv6:...]" must hold an IPv6 address, a bare "[...]" an IPv4 one */
    int v6 = !strncasecmp(text, "IPv6:", 5);
    const char *host = v6 ? text + 5 : text;
    if ((strchr(host, ':') != NULL) != v6 || strchr(host, '/')) return 0;
    int fam, lfam;
    unsigned char want[16], have[16];
    unsigned bits;
    if (!net_parse(host, &fam, want, &bits) || !sa_bytes(sa, &lfam, have)) return 0;
    unmap(&fam, want);
    return fam == lfam && !memcmp(want, have, 16);
}
