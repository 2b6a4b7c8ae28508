/* smtp_net.c - is a client address inside one of the relay networks. */
#include "smtp_net.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

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

int smtp_net_match(const struct config_list *list, const struct sockaddr *sa)
{
    unsigned char peer[16];
    int pfam;
    memset(peer, 0, sizeof peer);
    if (sa->sa_family == AF_INET) {
        memcpy(peer, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
        pfam = AF_INET;
    } else if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a6 = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a6)) { memcpy(peer, &a6->s6_addr[12], 4); pfam = AF_INET; }
        else { memcpy(peer, a6->s6_addr, 16); pfam = AF_INET6; }
    } else {
        return 0;
    }
    for (size_t i = 0; i < list->n; i++) {
        int fam;
        unsigned char net[16];
        unsigned bits;
        if (!net_parse(list->v[i], &fam, net, &bits) || fam != pfam) continue;
        if (prefix_eq(peer, net, bits)) return 1;
    }
    return 0;
}
