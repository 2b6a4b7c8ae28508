/* userdb.c - conf/users, conf/mailboxes, conf/recipients: parse, check, render, write. */
#include "userdb.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int userdb_name_canon(const char *s, size_t len, char *out, const char **why)
{
    errno = EINVAL;
    if (len == 0) { *why = "user name is empty"; return 0; }
    if (len > USERDB_NAME_MAX) { *why = "user name is longer than 64 characters"; return 0; }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 'A' && c <= 'Z') c = (unsigned char)(c - 'A' + 'a');
        if (c == 0) { *why = "user name contains a NUL byte"; return 0; }
        if (c < 0x20 || c == 0x7f) { *why = "user name contains a control character"; return 0; }
        if (c == '/') { *why = "user name contains '/'"; return 0; }
        if (c == '@') { *why = "user name contains '@'"; return 0; }
        if (c == ':') { *why = "user name contains ':'"; return 0; }
        if (c == ' ' || c == '\t') { *why = "user name contains a space"; return 0; }
        if (c == '+') { *why = "user name contains '+' (the address detail separator)"; return 0; }
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-')) {
            *why = "user name may hold only letters, digits, '.', '_' and '-'";
            return 0;
        }
        if (c == '.' && i > 0 && out[i - 1] == '.') { *why = "user name contains '..'"; return 0; }
        out[i] = (char)c;
    }
    if (!((out[0] >= 'a' && out[0] <= 'z') || (out[0] >= '0' && out[0] <= '9'))) {
        *why = "user name must start with a letter or a digit";
        return 0;
    }
    out[len] = 0;
    errno = 0;
    return 1;
}

/* strict decimal id, 1..UINT_MAX-1 (never 0, never (uid_t)-1) */
static int parse_id(const char *s, size_t len, unsigned *out)
{
    unsigned long long v = 0;
    if (len == 0 || len > 10) return 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') return 0;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (len > 1 && s[0] == '0') return 0;
    if (v == 0 || v >= UINT_MAX) return 0;
    *out = (unsigned)v;
    return 1;
}

int userdb_parse_line(const char *line, size_t len, int with_hash,
                      struct userdb_entry *e, const char **why)
{
    const char *f[5];
    size_t fl[5];
    size_t nf = 0, want = with_hash ? 5 : 4;
    const char *p = line, *end = line + len;
    memset(e, 0, sizeof *e);
    errno = EINVAL;
    if (memchr(line, 0, len) || memchr(line, '\r', len)) { *why = "NUL or CR in line"; return 0; }
    while (nf < want) {
        const char *c = (nf + 1 < want) ? memchr(p, ':', (size_t)(end - p)) : end;
        if (!c) { *why = with_hash ? "expected name:uid:gid:maildir:hash" : "expected name:uid:gid:maildir"; return 0; }
        f[nf] = p;
        fl[nf] = (size_t)(c - p);
        nf++;
        p = c + 1;
    }
    if (!userdb_name_canon(f[0], fl[0], e->name, why)) return 0;
    if (fl[0] != strlen(e->name) || memcmp(f[0], e->name, fl[0])) { *why = "user name not in lower case"; errno = EINVAL; return 0; }
    unsigned id;
    if (!parse_id(f[1], fl[1], &id)) { *why = "bad uid (a decimal number, not 0)"; errno = EINVAL; return 0; }
    e->uid = (uid_t)id;
    if (!parse_id(f[2], fl[2], &id)) { *why = "bad gid (a decimal number, not 0)"; errno = EINVAL; return 0; }
    e->gid = (gid_t)id;
    if (fl[3] == 0 || f[3][0] != '/') { *why = "maildir is not an absolute path"; errno = EINVAL; return 0; }
    if (fl[3] > USERDB_PATH_MAX) { *why = "maildir path too long"; errno = EINVAL; return 0; }
    if (memchr(f[3], ':', fl[3])) { *why = "maildir path contains ':'"; errno = EINVAL; return 0; }
    for (size_t i = 0; i < fl[3]; i++)
        if ((unsigned char)f[3][i] < 0x20 || f[3][i] == 0x7f) { *why = "control character in maildir path"; errno = EINVAL; return 0; }
    memcpy(e->maildir, f[3], fl[3]);
    if (with_hash) {
        if (fl[4] < 10 || fl[4] > USERDB_HASH_MAX || memcmp(f[4], "$argon2id$", 10)) {
            *why = "password hash is not an argon2id string";
            errno = EINVAL;
            return 0;
        }
        for (size_t i = 0; i < fl[4]; i++)
            if ((unsigned char)f[4][i] <= 0x20 || (unsigned char)f[4][i] >= 0x7f || f[4][i] == ':') {
                *why = "bad character in password hash";
                errno = EINVAL;
                return 0;
            }
        memcpy(e->hash, f[4], fl[4]);
    }
    errno = 0;
    return 1;
}

void userdb_free(struct userdb *db)
{
    if (db->v) {
        volatile char *p = (volatile char *)db->v;
        for (size_t i = 0; i < db->cap * sizeof *db->v; i++) p[i] = 0;
        free(db->v);
    }
    db->v = 0;
    db->n = db->cap = 0;
}

struct userdb_entry *userdb_find(const struct userdb *db, const char *name)
{
    for (size_t i = 0; i < db->n; i++)
        if (!strcmp(db->v[i].name, name)) return &db->v[i];
    return 0;
}

int userdb_uid_used(const struct userdb *db, uid_t uid)
{
    for (size_t i = 0; i < db->n; i++)
        if (db->v[i].uid == uid) return 1;
    return 0;
}

int userdb_add(struct userdb *db, const struct userdb_entry *e)
{
    if (userdb_find(db, e->name)) { errno = EEXIST; return 0; }
    if (db->n >= USERDB_USERS_MAX) { errno = E2BIG; return 0; }
    if (db->n == db->cap) {
        size_t ncap = db->cap ? db->cap * 2 : 16, bytes;
        if (!size_mul(ncap, sizeof *db->v, &bytes)) return 0;
        struct userdb_entry *nv = calloc(ncap, sizeof *nv);
        if (!nv) return 0;
        if (db->n) memcpy(nv, db->v, db->n * sizeof *nv);
        struct userdb old = *db;   /* zero and free the old array */
        userdb_free(&old);
        db->v = nv;
        db->cap = ncap;
    }
    db->v[db->n++] = *e;
    return 1;
}

int userdb_del(struct userdb *db, const char *name)
{
    struct userdb_entry *e = userdb_find(db, name);
    if (!e) { errno = ENOENT; return 0; }
    size_t i = (size_t)(e - db->v);
    memmove(&db->v[i], &db->v[i + 1], (db->n - i - 1) * sizeof *db->v);
    db->n--;
    memset(&db->v[db->n], 0, sizeof *db->v);
    return 1;
}

int userdb_parse(struct userdb *db, const char *name, const char *text, size_t len,
                 int with_hash, char *err, size_t errlen)
{
    size_t lineno = 0;
    const char *p = text, *end = text + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t ll = nl ? (size_t)(nl - p) : (size_t)(end - p);
        lineno++;
        const char *why = 0;
        struct userdb_entry e;
        if (ll > USERDB_LINE_MAX) why = "line too long";
        else if (ll == 0 || p[0] == '#') { p += ll + (nl ? 1 : 0); continue; }
        else if (!userdb_parse_line(p, ll, with_hash, &e, &why)) { /* why set */ }
        else if (!userdb_add(db, &e)) why = errno == EEXIST ? "duplicate user name" : "too many users";
        memset(&e, 0, sizeof e);
        if (why) {
            snprintf(err, errlen, "%s:%zu: %s", name, lineno, why);
            errno = EINVAL;
            return 0;
        }
        p += ll + (nl ? 1 : 0);
    }
    return 1;
}

int userdb_read_file(const char *path, size_t max, struct buf *out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return 0;
    for (;;) {
        if (!buf_reserve(out, 4096)) { close(fd); return 0; }
        ssize_t r = read(fd, out->s + out->len, out->cap - out->len - 1);
        if (r < 0) { if (errno == EINTR) continue; int e = errno; close(fd); errno = e; return 0; }
        if (r == 0) break;
        out->len += (size_t)r;
        if (out->len > max) { close(fd); errno = E2BIG; return 0; }
    }
    out->s[out->len] = 0;
    close(fd);
    return 1;
}

int userdb_load(struct userdb *db, const char *path, int with_hash, int missing_ok,
                char *err, size_t errlen)
{
    struct buf b = BUF_ZERO;
    if (!userdb_read_file(path, (size_t)64 << 20, &b)) {
        int e = errno;
        buf_free(&b);
        if (e == ENOENT && missing_ok) return 1;
        snprintf(err, errlen, "%s: %s", path, strerror(e));
        errno = e;
        return 0;
    }
    int ok = userdb_parse(db, path, b.s ? b.s : "", b.len, with_hash, err, errlen);
    if (b.s) { volatile char *p = b.s; for (size_t i = 0; i < b.cap; i++) p[i] = 0; }
    buf_free(&b);
    return ok;
}

int userdb_format(const struct userdb *db, int with_hash, struct buf *out)
{
    for (size_t i = 0; i < db->n; i++) {
        const struct userdb_entry *e = &db->v[i];
        if (!buf_appendf(out, "%s:%u:%u:%s", e->name, (unsigned)e->uid, (unsigned)e->gid, e->maildir)) return 0;
        if (with_hash && (!buf_appendc(out, ':') || !buf_appends(out, e->hash))) return 0;
        if (!buf_appendc(out, '\n')) return 0;
    }
    return 1;
}

int userdb_format_recipients(const struct userdb *db, const char *const *aliases,
                             size_t naliases, struct buf *out)
{
    if (!buf_appends(out, "# written by postern-user: local user and alias names\n")) return 0;
    for (size_t i = 0; i < db->n; i++)
        if (!buf_appends(out, db->v[i].name) || !buf_appendc(out, '\n')) return 0;
    for (size_t i = 0; i < naliases; i++) {
        int dup = userdb_find(db, aliases[i]) != 0;
        for (size_t j = 0; j < i && !dup; j++) dup = !strcmp(aliases[i], aliases[j]);
        if (dup) continue;
        if (!buf_appends(out, aliases[i]) || !buf_appendc(out, '\n')) return 0;
    }
    return 1;
}

void userdb_alias_names_free(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
}

int userdb_alias_names(const char *text, size_t len, char ***names, size_t *n)
{
    char **v = 0;
    size_t cnt = 0, cap = 0;
    const char *p = text, *end = text + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t ll = nl ? (size_t)(nl - p) : (size_t)(end - p);
        const char *colon = memchr(p, ':', ll);
        if (ll && p[0] != '#' && colon) {
            const char *a = p, *b = colon;
            while (a < b && (*a == ' ' || *a == '\t')) a++;
            while (b > a && (b[-1] == ' ' || b[-1] == '\t')) b--;
            char canon[USERDB_NAME_MAX + 1];
            const char *why;
            if (userdb_name_canon(a, (size_t)(b - a), canon, &why)) {
                if (cnt == cap) {
                    size_t nc = cap ? cap * 2 : 8;
                    char **nv = realloc(v, nc * sizeof *nv);
                    if (!nv) { userdb_alias_names_free(v, cnt); return 0; }
                    v = nv;
                    cap = nc;
                }
                if (!(v[cnt] = strdup(canon))) { userdb_alias_names_free(v, cnt); return 0; }
                cnt++;
            }
        }
        p += ll + (nl ? 1 : 0);
    }
    *names = v;
    *n = cnt;
    return 1;
}

int userdb_write_file(const char *path, const void *data, size_t len, mode_t mode,
                      uid_t owner, gid_t group)
{
    char tmp[USERDB_PATH_MAX + 64], dir[USERDB_PATH_MAX + 1];
    int n = snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    if (n < 0 || (size_t)n >= sizeof tmp || strlen(path) >= sizeof dir) { errno = ENAMETOOLONG; return 0; }
    memcpy(dir, path, strlen(path) + 1);
    char *slash = strrchr(dir, '/');
    if (!slash) { dir[0] = '.'; dir[1] = 0; }
    else if (slash == dir) dir[1] = 0;
    else *slash = 0;
    unlink(tmp); /* a stale one of a crashed run with our pid */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) return 0;
    const char *p = data;
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, p + off, len - off);
        if (w < 0) { if (errno == EINTR) continue; goto fail; }
        off += (size_t)w;
    }
    if (fchmod(fd, mode) < 0) goto fail;
    if ((owner != (uid_t)-1 || group != (gid_t)-1) && fchown(fd, owner, group) < 0) goto fail;
    if (fsync(fd) < 0) goto fail;
    if (close(fd) < 0) { fd = -1; goto fail; }
    fd = -1;
    if (rename(tmp, path) < 0) goto fail;
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) return 0;
    int r = fsync(dfd);
    int e = errno;
    close(dfd);
    errno = e;
    return r == 0;
fail:;
    int saved = errno;
    if (fd >= 0) close(fd);
    unlink(tmp);
    errno = saved;
    return 0;
}
