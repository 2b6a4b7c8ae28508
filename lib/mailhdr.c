/* mailhdr.c - header field recognition and address-list extraction. */
#include "mailhdr.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

int mailhdr_is_field(const char *s, size_t len, size_t *namelen)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == ':') {
            if (i == 0) return 0;
            *namelen = i;
            return 1;
        }
        if (c <= 0x20 || c >= 0x7f) return 0;
    }
    return 0;
}

int mailhdr_is_continuation(const char *s, size_t len)
{
    return len > 0 && (s[0] == ' ' || s[0] == '\t');
}

int mailhdr_name_is(const char *s, size_t namelen, const char *name)
{
    return namelen == strlen(name) && !strncasecmp(s, name, namelen);
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

/* one list entry s[0..len): the address inside <>, else the text without
 * comments and whitespace */
static int one_entry(const char *s, size_t len, int (*fn)(void *, const char *), void *ctx)
{
    char addr[MAILHDR_ADDR_MAX + 1];
    size_t n = 0;
    const char *lt = NULL, *gt = NULL;
    int quoted = 0, depth = 0;
    if (memchr(s, 0, len)) { errno = EINVAL; return 0; }   /* would cut the address short */
    for (size_t i = 0; i < len; i++) {  /* find <...> outside quotes and comments */
        char c = s[i];
        if (c == '\\' && i + 1 < len) { i++; continue; }
        if (quoted) { if (c == '"') quoted = 0; continue; }
        if (depth) { if (c == '(') depth++; else if (c == ')') depth--; continue; }
        if (c == '"') quoted = 1;
        else if (c == '(') depth = 1;
        else if (c == '<' && !lt) lt = s + i;
        else if (c == '>' && lt && !gt) gt = s + i;
    }
    if (quoted || depth || (lt && !gt)) { errno = EINVAL; return 0; }
    if (lt) { s = lt + 1; len = (size_t)(gt - lt - 1); }
    quoted = depth = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!quoted && c == '(') { depth++; continue; }
        if (depth) { if (c == ')') depth--; continue; }
        if (c == '"') quoted = !quoted;
        if (!quoted && is_space(c)) continue;
        if (n >= MAILHDR_ADDR_MAX) { errno = EINVAL; return 0; }
        addr[n++] = c;
        if (c == '\\' && i + 1 < len) {
            if (n >= MAILHDR_ADDR_MAX) { errno = EINVAL; return 0; }
            addr[n++] = s[++i];
        }
    }
    addr[n] = 0;
    if (n == 0) return 1;   /* empty entry, or "<>" */
    return fn(ctx, addr);
}

int mailhdr_addresses(const char *s, size_t len, int (*fn)(void *ctx, const char *addr), void *ctx)
{
    size_t start = 0;
    int quoted = 0, depth = 0, angle = 0;
    for (size_t i = 0; i <= len; i++) {
        char c = i < len ? s[i] : ',';
        if (i < len && c == '\\' && i + 1 < len) { i++; continue; }
        if (quoted) { if (c == '"') quoted = 0; if (i < len) continue; }
        if (depth) { if (c == '(') depth++; else if (c == ')') depth--; if (i < len) continue; }
        if (quoted || depth) { errno = EINVAL; return 0; }
        if (c == '"') { quoted = 1; continue; }
        if (c == '(') { depth = 1; continue; }
        if (c == '<') angle = 1;
        else if (c == '>') angle = 0;
        else if (c == ':' && !angle) start = i + 1;   /* group name */
        else if ((c == ',' || c == ';') && !angle) {
            if (!one_entry(s + start, i - start, fn, ctx)) return 0;
            start = i + 1;
        }
    }
    if (angle) { errno = EINVAL; return 0; }
    return 1;
}

int mailhdr_date_utc(time_t t, char *dst, size_t cap)
{
    static const char days[7][4] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
    static const char months[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
    struct tm tm;
    if (!gmtime_r(&t, &tm) || tm.tm_wday < 0 || tm.tm_wday > 6 || tm.tm_mon < 0 || tm.tm_mon > 11
        || tm.tm_year < -1900 + 1 || tm.tm_year > 9999 - 1900) {
        errno = EINVAL;
        return 0;
    }
    int n = snprintf(dst, cap, "%s, %02d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday], tm.tm_mday,
                     months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
    if (n < 0 || (size_t)n >= cap) { errno = ENOSPC; return 0; }
    return 1;
}
