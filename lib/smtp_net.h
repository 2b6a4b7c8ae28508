/* smtp_net.h - client address matching against relay_networks: a list of
 * "address/prefix" (or plain address) entries, IPv4 and IPv6. A v4-mapped
 * IPv6 peer (::ffff:a.b.c.d) is matched as the IPv4 address it carries. */
#ifndef POSTERN_SMTP_NET_H
#define POSTERN_SMTP_NET_H

#include <sys/socket.h>

#include "config.h"

/* 1 if entry ("127.0.0.0/8", "::1/128", "192.0.2.7") is well formed */
int smtp_net_valid(const char *entry);
/* 1 if sa lies in one of the networks of list, 0 if not (bad entries never match) */
int smtp_net_match(const struct config_list *list, const struct sockaddr *sa);
/* 1 if the address literal lit[0..len) ("[192.0.2.1]", "[IPv6:2001:db8::1]")
 * is the address of sa (v4-mapped IPv6 on either side counts as its IPv4
 * address); 0 if not, or if either is not an IP address */
int smtp_net_literal_is(const char *lit, size_t len, const struct sockaddr *sa);

#endif
