/* privuser.c - look up the system user a program runs as, in /etc/passwd.
 *
 * The users postern's programs run as (postern-smtp, postern-queue, ...) are
 * local system accounts that postern-setup creates with useradd, so this
 * reads the passwd file itself rather than going through getpwnam() and
 * NSS. That keeps statically linked programs (queue-inject; smtp-listener,
 * which forks twice per connection and is cheaper to fork without shared
 * libraries) free of glibc's dlopen()ed NSS modules. Mail users that map to
 * existing Unix accounts are resolved elsewhere (postern-user), through NSS. */
#include "privdrop.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int privuser_parse_id(const char *s, size_t n, unsigned long *out)
{
    if (n == 0 || n > 10) return 0;
    unsigned long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return 0;
        v = v * 10 + (unsigned long)(s[i] - '0');
    }
    if (v >= UINT_MAX) return 0;   /* (uid_t)-1 means "no change" to setuid */
    *out = v;
    return 1;
}

/* one passwd line "name:pw:uid:gid:..." without its newline; 1 if it names
 * name (and then u is filled), 0 if not, -1 if it names it but is malformed */
static int passwd_line(const char *line, size_t len, const char *name, struct privuser *u)
{
    size_t nl = strlen(name);
    if (len <= nl || memcmp(line, name, nl) != 0 || line[nl] != ':') return 0;
    const char *f[4];
    size_t flen[4];
    const char *p = line, *end = line + len;
    for (int i = 0; i < 4; i++) {
        const char *c = memchr(p, ':', (size_t)(end - p));
        f[i] = p;
        flen[i] = (size_t)((c ? c : end) - p);
        if (!c && i < 3) return -1;
        p = c ? c + 1 : end;
    }
    unsigned long uid, gid;
    if (!privuser_parse_id(f[2], flen[2], &uid) || !privuser_parse_id(f[3], flen[3], &gid)) return -1;
    u->uid = (uid_t)uid;
    u->gid = (gid_t)gid;
    return 1;
}

int privuser_lookup_file(const char *path, const char *name, struct privuser *u)
{
    if (!name[0] || strchr(name, ':') || strchr(name, '\n')) { errno = ENOENT; return 0; }
    FILE *f = fopen(path, "re");
    if (!f) return 0;
    char line[1024];
    int found = 0, skipping = 0;
    while (fgets(line, sizeof line, f)) {
        size_t len = strlen(line);
        int whole = len > 0 && line[len - 1] == '\n';
        if (skipping) { skipping = !whole; continue; }   /* rest of an over-long line */
        if (whole) len--;
        else if (!feof(f)) skipping = 1;                 /* over-long: no user of ours */
        if (skipping) continue;
        int r = passwd_line(line, len, name, u);
        if (r != 0) { found = r; break; }
    }
    int err = ferror(f);
    fclose(f);
    if (found == 1) return 1;
    errno = err ? EIO : found < 0 ? EINVAL : ENOENT;
    return 0;
}

int privuser_lookup(const char *name, struct privuser *u)
{
    return privuser_lookup_file("/etc/passwd", name, u);
}
