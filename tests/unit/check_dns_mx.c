/* check_dns_mx.c - MX and address answers parsed from wire-format DNS
 * messages built here, preference ordering, resolver settings. */
#include <check.h>
#include <arpa/inet.h>
#include <errno.h>
#include <string.h>

#include "dns_mx.h"

/* a DNS response under construction */
struct msg {
    unsigned char b[8192];
    size_t n;
    unsigned ancount;
};

static void put16(struct msg *m, unsigned v) { m->b[m->n++] = (unsigned char)(v >> 8); m->b[m->n++] = (unsigned char)v; }
static void put32(struct msg *m, unsigned long v) { put16(m, (unsigned)(v >> 16)); put16(m, (unsigned)(v & 0xffff)); }
static void putname(struct msg *m, const char *name)
{
    while (*name) {
        const char *dot = strchr(name, '.');
        size_t l = dot ? (size_t)(dot - name) : strlen(name);
        m->b[m->n++] = (unsigned char)l;
        memcpy(m->b + m->n, name, l);
        m->n += l;
        name += l + (dot ? 1 : 0);
    }
    m->b[m->n++] = 0;
}

/* header + question for qname/qtype with rcode */
static void begin(struct msg *m, const char *qname, unsigned qtype, unsigned rcode)
{
    memset(m, 0, sizeof *m);
    put16(m, 0x1234);
    put16(m, 0x8180 | rcode);
    put16(m, 1);
    put16(m, 0);   /* ancount, fixed by end() */
    put16(m, 0);
    put16(m, 0);
    putname(m, qname);
    put16(m, qtype);
    put16(m, 1);
}
static void end(struct msg *m) { m->b[6] = (unsigned char)(m->ancount >> 8); m->b[7] = (unsigned char)m->ancount; }

/* an answer owned by the question name (compression pointer to offset 12) */
static void rr_head(struct msg *m, unsigned type, unsigned rdlen)
{
    put16(m, 0xc00c);
    put16(m, type);
    put16(m, 1);
    put32(m, 300);
    put16(m, rdlen);
    m->ancount++;
}
static void add_mx(struct msg *m, unsigned pref, const char *host)
{
    struct msg tmp;
    tmp.n = 0;
    putname(&tmp, host);
    rr_head(m, ns_t_mx, (unsigned)tmp.n + 2);
    put16(m, pref);
    memcpy(m->b + m->n, tmp.b, tmp.n);
    m->n += tmp.n;
}
static void add_a(struct msg *m, const char *ip)
{
    rr_head(m, ns_t_a, 4);
    inet_pton(AF_INET, ip, m->b + m->n);
    m->n += 4;
}
static void add_aaaa(struct msg *m, const char *ip)
{
    rr_head(m, ns_t_aaaa, 16);
    inet_pton(AF_INET6, ip, m->b + m->n);
    m->n += 16;
}

static struct msg m;
static struct dns_mx_list l;
static struct dns_targets t;

START_TEST(test_mx_two_preferences)
{
    begin(&m, "example.net", ns_t_mx, 0);
    add_mx(&m, 20, "mx2.example.net");
    add_mx(&m, 10, "mx1.example.net");
    end(&m);
    ck_assert_int_eq(dns_parse_mx(m.b, m.n, &l), DNS_OK);
    ck_assert_uint_eq(l.n, 2);
    ck_assert_str_eq(l.mx[0].host, "mx2.example.net");
    ck_assert_uint_eq(l.mx[0].pref, 20);
}
END_TEST

START_TEST(test_mx_compressed_target)
{
    /* MX target "mail" + pointer to the question name: mail.example.net */
    begin(&m, "example.net", ns_t_mx, 0);
    rr_head(&m, ns_t_mx, 2 + 5 + 2);
    put16(&m, 5);
    m.b[m.n++] = 4;
    memcpy(m.b + m.n, "mail", 4);
    m.n += 4;
    put16(&m, 0xc00c);
    end(&m);
    ck_assert_int_eq(dns_parse_mx(m.b, m.n, &l), DNS_OK);
    ck_assert_str_eq(l.mx[0].host, "mail.example.net");
}
END_TEST

START_TEST(test_mx_null_nodata_rcodes)
{
    begin(&m, "nomail.example", ns_t_mx, 0);
    add_mx(&m, 0, "");
    end(&m);
    ck_assert_int_eq(dns_parse_mx(m.b, m.n, &l), DNS_NULLMX);
    /* "." next to real MX records is ignored (RFC 7505 says do not mix) */
    begin(&m, "mixed.example", ns_t_mx, 0);
    add_mx(&m, 0, "");
    add_mx(&m, 10, "mx.mixed.example");
    end(&m);
    ck_assert_int_eq(dns_parse_mx(m.b, m.n, &l), DNS_OK);
    ck_assert_uint_eq(l.n, 1);
    begin(&m, "plain.example", ns_t_mx, 0);
    end(&m);
    ck_assert_int_eq(dns_parse_mx(m.b, m.n, &l), DNS_NODATA);
    begin(&m, "gone.example", ns_t_mx, 3);
    end(&m);
    ck_assert_int_eq(dns_parse_mx(m.b, m.n, &l), DNS_NXDOMAIN);
    begin(&m, "broken.example", ns_t_mx, 2);
    end(&m);
    ck_assert_int_eq(dns_parse_mx(m.b, m.n, &l), DNS_TEMPFAIL);
    /* answers of another type only (e.g. a CNAME): no MX */
    begin(&m, "alias.example", ns_t_mx, 0);
    add_a(&m, "192.0.2.1");
    end(&m);
    ck_assert_int_eq(dns_parse_mx(m.b, m.n, &l), DNS_NODATA);
}
END_TEST

START_TEST(test_addresses)
{
    t.n = 0;
    begin(&m, "mx1.example.net", ns_t_a, 0);
    add_a(&m, "192.0.2.1");
    add_a(&m, "192.0.2.2");
    end(&m);
    ck_assert_int_eq(dns_parse_addrs(m.b, m.n, ns_t_a, "mx1.example.net", 25, &t), DNS_OK);
    begin(&m, "mx1.example.net", ns_t_aaaa, 0);
    add_aaaa(&m, "2001:db8::25");
    end(&m);
    ck_assert_int_eq(dns_parse_addrs(m.b, m.n, ns_t_aaaa, "mx1.example.net", 2525, &t), DNS_OK);
    ck_assert_uint_eq(t.n, 3);
    const struct sockaddr_in *s4 = (const struct sockaddr_in *)&t.t[1].sa;
    ck_assert_int_eq(s4->sin_family, AF_INET);
    ck_assert_uint_eq(ntohs(s4->sin_port), 25);
    ck_assert_uint_eq(ntohl(s4->sin_addr.s_addr), 0xc0000202);
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&t.t[2].sa;
    ck_assert_int_eq(s6->sin6_family, AF_INET6);
    ck_assert_uint_eq(ntohs(s6->sin6_port), 2525);
    ck_assert_uint_eq(s6->sin6_addr.s6_addr[15], 0x25);
    ck_assert_str_eq(t.t[2].host, "mx1.example.net");
    begin(&m, "v6only.example", ns_t_a, 0);
    end(&m);
    ck_assert_int_eq(dns_parse_addrs(m.b, m.n, ns_t_a, "v6only.example", 25, &t), DNS_NODATA);
}
END_TEST

static unsigned seq[64];
static size_t seqpos;
static unsigned fake_rnd(unsigned n) { return seq[seqpos++ % 64] % n; }

START_TEST(test_sort_random_among_equals)
{
    int first_b = 0, first_c = 0;
    for (unsigned round = 0; round < 16; round++) {
        l.n = 4;
        l.mx[0] = (struct dns_mx){ 20, "b" };
        l.mx[1] = (struct dns_mx){ 10, "a" };
        l.mx[2] = (struct dns_mx){ 20, "c" };
        l.mx[3] = (struct dns_mx){ 30, "d" };
        for (size_t i = 0; i < 64; i++) seq[i] = round * 7 + (unsigned)i * 3;
        seqpos = 0;
        dns_mx_sort(&l, fake_rnd);
        ck_assert_str_eq(l.mx[0].host, "a");
        ck_assert_str_eq(l.mx[3].host, "d");
        ck_assert(!strcmp(l.mx[1].host, "b") || !strcmp(l.mx[1].host, "c"));
        if (!strcmp(l.mx[1].host, "b")) first_b++; else first_c++;
    }
    ck_assert_int_gt(first_b, 0);   /* both orders happen */
    ck_assert_int_gt(first_c, 0);
}
END_TEST

START_TEST(test_resolver_setting)
{
    struct __res_state res;
    char why[128];
    ck_assert(dns_resolver_init(&res, "127.0.0.1:5353", 2, why, sizeof why));
    ck_assert_int_eq(res.nscount, 1);
    ck_assert_uint_eq(ntohs(res.nsaddr_list[0].sin_port), 5353);
    ck_assert_int_eq(res.retrans, 2);
    res_nclose(&res);
    ck_assert(dns_resolver_init(&res, "127.0.0.2", 2, why, sizeof why));
    ck_assert_uint_eq(ntohs(res.nsaddr_list[0].sin_port), 53);
    res_nclose(&res);
    ck_assert(!dns_resolver_init(&res, "127.0.0.1:0", 2, why, sizeof why));
    ck_assert(!dns_resolver_init(&res, "localhost:53", 2, why, sizeof why));
    ck_assert(strstr(why, "not an IPv4 address"));
}
END_TEST

/* ---- limits ---- */

START_TEST(test_truncated_and_malformed)
{
    begin(&m, "example.net", ns_t_mx, 0);
    add_mx(&m, 10, "mx1.example.net");
    end(&m);
    for (size_t cut = 0; cut < m.n; cut++)
        ck_assert_msg(dns_parse_mx(m.b, cut, &l) == DNS_TEMPFAIL, "cut at %zu accepted", cut);
    /* rdlength larger than the name it holds */
    begin(&m, "example.net", ns_t_mx, 0);
    rr_head(&m, ns_t_mx, 2 + 5 + 3);
    put16(&m, 1);
    putname(&m, "mx");
    m.b[m.n++] = 0;
    m.b[m.n++] = 0;
    m.b[m.n++] = 0;
    end(&m);
    ck_assert_int_eq(dns_parse_mx(m.b, m.n, &l), DNS_TEMPFAIL);
    /* a compression pointer that points at itself */
    begin(&m, "example.net", ns_t_mx, 0);
    rr_head(&m, ns_t_mx, 4);
    put16(&m, 1);
    put16(&m, (unsigned)(0xc000 | m.n));
    end(&m);
    ck_assert_int_eq(dns_parse_mx(m.b, m.n, &l), DNS_TEMPFAIL);
    /* an A record of the wrong size */
    begin(&m, "h.example", ns_t_a, 0);
    rr_head(&m, ns_t_a, 3);
    m.n += 3;
    end(&m);
    t.n = 0;
    ck_assert_int_eq(dns_parse_addrs(m.b, m.n, ns_t_a, "h.example", 25, &t), DNS_TEMPFAIL);
    /* rdata too short for an MX */
    begin(&m, "example.net", ns_t_mx, 0);
    rr_head(&m, ns_t_mx, 2);
    put16(&m, 1);
    end(&m);
    ck_assert_int_eq(dns_parse_mx(m.b, m.n, &l), DNS_TEMPFAIL);
}
END_TEST

START_TEST(test_many_records_capped)
{
    char host[32];
    begin(&m, "big.example", ns_t_mx, 0);
    for (int i = 0; i < 40; i++) {
        snprintf(host, sizeof host, "mx%d.big.example", i);
        add_mx(&m, (unsigned)i, host);
    }
    end(&m);
    ck_assert_int_eq(dns_parse_mx(m.b, m.n, &l), DNS_OK);
    ck_assert_uint_eq(l.n, DNS_MX_MAX);
    t.n = 0;
    begin(&m, "many.example", ns_t_a, 0);
    for (int i = 0; i < 50; i++) add_a(&m, "192.0.2.1");
    end(&m);
    ck_assert_int_eq(dns_parse_addrs(m.b, m.n, ns_t_a, "many.example", 25, &t), DNS_OK);
    ck_assert_uint_eq(t.n, DNS_TARGETS_MAX);
    /* full: nothing more is added, and that is not an error */
    ck_assert_int_eq(dns_parse_addrs(m.b, m.n, ns_t_a, "many.example", 25, &t), DNS_NODATA);
    ck_assert_uint_eq(t.n, DNS_TARGETS_MAX);
}
END_TEST

/* more MX records than DNS_MX_MAX: the ones kept are the most preferred,
 * wherever they stand in the answer (RFC 5321 5.1: lowest preference first) */
START_TEST(test_many_records_keep_the_best)
{
    char host[32];
    begin(&m, "big.example", ns_t_mx, 0);
    for (int i = 40; i > 0; i--) {   /* the best ones last */
        snprintf(host, sizeof host, "mx%d.big.example", i);
        add_mx(&m, (unsigned)i, host);
    }
    end(&m);
    ck_assert_int_eq(dns_parse_mx(m.b, m.n, &l), DNS_OK);
    ck_assert_uint_eq(l.n, DNS_MX_MAX);
    unsigned seen = 0;
    for (size_t i = 0; i < l.n; i++) {
        ck_assert_uint_ge(l.mx[i].pref, 1);
        ck_assert_uint_le(l.mx[i].pref, DNS_MX_MAX);
        snprintf(host, sizeof host, "mx%u.big.example", l.mx[i].pref);
        ck_assert_str_eq(l.mx[i].host, host);
        seen |= 1u << (l.mx[i].pref - 1);
    }
    ck_assert_uint_eq(seen, (1u << DNS_MX_MAX) - 1);   /* each of 1..16 once */
}
END_TEST

START_TEST(test_long_name)
{
    /* a 250-octet MX target is kept; the limit is the DNS's own (255) */
    char host[260];
    size_t o = 0;
    while (o + 10 < 250) { memcpy(host + o, "abcdefghi.", 10); o += 10; }
    memcpy(host + o, "x", 2);
    begin(&m, "long.example", ns_t_mx, 0);
    add_mx(&m, 1, host);
    end(&m);
    ck_assert_int_eq(dns_parse_mx(m.b, m.n, &l), DNS_OK);
    ck_assert_str_eq(l.mx[0].host, host);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("dns_mx");
    TCase *core = tcase_create("core");
    tcase_add_test(core, test_mx_two_preferences);
    tcase_add_test(core, test_mx_compressed_target);
    tcase_add_test(core, test_mx_null_nodata_rcodes);
    tcase_add_test(core, test_addresses);
    tcase_add_test(core, test_sort_random_among_equals);
    tcase_add_test(core, test_resolver_setting);
    suite_add_tcase(s, core);
    TCase *lim = tcase_create("limits");
    tcase_add_test(lim, test_truncated_and_malformed);
    tcase_add_test(lim, test_many_records_capped);
    tcase_add_test(lim, test_many_records_keep_the_best);
    tcase_add_test(lim, test_long_name);
    suite_add_tcase(s, lim);
    return s;
}

int main(void)
{
    SRunner *r = srunner_create(suite());
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? 1 : 0;
}
