/* fuzz_dns_mx.c - libFuzzer target: parsing DNS answers to MX, A and AAAA
 * queries (what a hostile resolver or spoofed packet can send). */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "dns_mx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static unsigned rnd(unsigned n) { return n ? 7 % n : 0; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 65535) return 0;
    struct dns_mx_list l;
    memset(&l, 0, sizeof l);
    if (dns_parse_mx(data, size, &l) == DNS_OK) {
        if (l.n > DNS_MX_MAX) __builtin_trap();
        for (size_t i = 0; i < l.n; i++)
            if (!memchr(l.mx[i].host, 0, sizeof l.mx[i].host) || l.mx[i].pref > 65535) __builtin_trap();
        dns_mx_sort(&l, rnd);
        for (size_t i = 1; i < l.n; i++) if (l.mx[i - 1].pref > l.mx[i].pref) __builtin_trap();
    }
    struct dns_targets t;
    memset(&t, 0, sizeof t);
    (void)dns_parse_addrs(data, size, ns_t_a, "mx.example.test", 25, &t);
    (void)dns_parse_addrs(data, size, ns_t_aaaa, "mx.example.test", 25, &t);
    if (t.n > DNS_TARGETS_MAX) __builtin_trap();
    for (size_t i = 0; i < t.n; i++)
        if ((t.t[i].sa.ss_family != AF_INET && t.t[i].sa.ss_family != AF_INET6) || !t.t[i].salen
            || t.t[i].salen > sizeof t.t[i].sa)
            __builtin_trap();
    return 0;
}
