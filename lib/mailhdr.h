/* mailhdr.h - small pieces of RFC 5322 message headers that sendmail needs:
 * is a line a header field (or its continuation), which field is it, and
 * the addresses of an address list (To/Cc/Bcc), comments, display names,
 * groups and quoted strings handled; and the date-time postern writes in
 * Received: and DSNs. No allocation; every copy bounded. */
#ifndef POSTERN_MAILHDR_H
#define POSTERN_MAILHDR_H

#include <stddef.h>
#include <time.h>

/* t as an RFC 5322 date-time in UTC ("Thu, 26 Nov 2026 09:04:45 +0000"),
 * locale-independent and without the time zone files (so the same in a
 * chroot): 1, or 0 (EINVAL: t out of range; ENOSPC: cap too small). */
int mailhdr_date_utc(time_t t, char *dst, size_t cap);

/* s[0..len) without its line end: 1 if it is "name:" (printable ASCII
 * other than ':' and space, at least one) with *namelen set; 0 if not. */
int mailhdr_is_field(const char *s, size_t len, size_t *namelen);
/* 1 if a continuation line (starts with space or tab) */
int mailhdr_is_continuation(const char *s, size_t len);
/* 1 if the field name s[0..namelen) equals name, case-insensitively */
int mailhdr_name_is(const char *s, size_t namelen, const char *name);

#define MAILHDR_ADDR_MAX 256

/* Call fn(ctx, addr) for each address in an address-list value (the text
 * after "To:", continuation lines included; CR/LF/TAB count as space).
 * "Name <a@b>" gives a@b; "a@b (comment)" gives a@b; "group: a@b, c@d;"
 * gives both; empty entries are skipped. Returns 0 with errno EINVAL (bad
 * syntax: unbalanced <>, quotes or parentheses; address too long; a NUL
 * byte in an entry) or what
 * fn returned 0 with. */
int mailhdr_addresses(const char *s, size_t len, int (*fn)(void *ctx, const char *addr), void *ctx);

#endif
