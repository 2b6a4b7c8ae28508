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

#endif
