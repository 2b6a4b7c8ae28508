/* aliases.c - aliases, mailboxes and alias expansion (see aliases.h). */
#include "aliases.h"
#include "privdrop.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"

void aliases_init(struct aliases *a) { a->n = a->cap = 0; a->v = NULL; }

void aliases_free(struct aliases *a)
{
    for (size_t i = 0; i < a->n; i++) {
        for (size_t k = 0; k < a->v[i].ntarget; k++) free(a->v[i].target[k]);
        free(a->v[i].target);
    }
    free(a->v);
    aliases_init(a);
}

static int name_char(unsigned char c)
{
    return isalnum(c) || c == '.' || c == '_' || c == '-' || c == '+';
}

static int target_char(unsigned char c)
{
    return c > 0x20 && c < 0x7f && c != ',' && c != '"' && c != '\\' && c != '/' && c != '|';
}

static int add_target(struct alias *al, const char *t, size_t n)
{
    if (al->ntarget >= ALIAS_TARGETS_MAX) { errno = E2BIG; return 0; }
    char **nt = realloc(al->target, (al->ntarget + 1) * sizeof *nt);
    if (!nt) return 0;
    al->target = nt;
    char *s = malloc(n + 1);
    if (!s) return 0;
    memcpy(s, t, n);
    s[n] = 0;
    al->target[al->ntarget++] = s;
    return 1;
}

/* parse the targets part of one line into al; why on error */
static int parse_targets(struct alias *al, const char *p, const char *end, const char **why)
{
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ',')) p++;
        if (p == end) break;
        const char *s = p;
        while (p < end && *p != ' ' && *p != '\t' && *p != ',') p++;
        size_t n = (size_t)(p - s);
        if (*s == '|') { *why = "program targets are not supported"; return 0; }
        if (*s == '/') { *why = "file targets are not supported"; return 0; }
        if (n >= 9 && !strncasecmp(s, ":include:", 9)) { *why = ":include: is not supported"; return 0; }
        if (n > ALIAS_TARGET_MAX) { *why = "target too long"; return 0; }
        for (size_t i = 0; i < n; i++)
            if (!target_char((unsigned char)s[i])) { *why = "invalid character in target"; return 0; }
        if (s[0] == '@' || s[n - 1] == '@' || memchr(s, '@', n) != memrchr(s, '@', n)) {
            *why = "malformed target address";
            return 0;
        }
        if (!add_target(al, s, n)) { *why = errno == E2BIG ? "too many targets" : "out of memory"; return 0; }
    }
    return 1;
}

static int alias_cmp(const void *x, const void *y)
{
    const struct alias *a = x, *b = y;
    int c = strcmp(a->name, b->name);
    return c ? c : (a->line > b->line) - (a->line < b->line);
}

int aliases_parse(struct aliases *a, const char *fname, const char *text, size_t len,
                  char *err, size_t errlen)
{
    size_t off = 0, lineno = 0;
    struct alias *cur = NULL;
    const char *why = NULL;
    aliases_free(a);
    while (off < len) {
        const char *line = text + off;
        const char *nl = memchr(line, '\n', len - off);
        size_t n = nl ? (size_t)(nl - line) : len - off;
        off += n + (nl ? 1 : 0);
        lineno++;
        if (n && line[n - 1] == '\r') n--;
        const char *end = line + n;
        if (memchr(line, 0, n)) { why = "NUL byte"; goto bad; }
        const char *p = line;
        while (p < end && (*p == ' ' || *p == '\t')) p++;
        if (p == end || *p == '#') continue;   /* ignored, also inside an entry */
        if (p != line) {                       /* continuation */
            if (!cur) { why = "continuation line without an alias"; goto bad; }
            if (!parse_targets(cur, p, end, &why)) goto bad;
            continue;
        }
        const char *colon = memchr(line, ':', n);
        if (!colon) { why = "expected \"name: address, ...\""; goto bad; }
        const char *ne = colon;
        while (ne > line && (ne[-1] == ' ' || ne[-1] == '\t')) ne--;
        size_t nl2 = (size_t)(ne - line);
        if (!nl2 || nl2 > ALIAS_NAME_MAX) { why = "bad alias name length"; goto bad; }
        char name[ALIAS_NAME_MAX + 1];
        for (size_t i = 0; i < nl2; i++) {
            if (!name_char((unsigned char)line[i])) { why = "invalid character in alias name"; goto bad; }
            name[i] = (char)tolower((unsigned char)line[i]);
        }
        name[nl2] = 0;
        if (a->n == a->cap) {
            size_t nc = a->cap ? 2 * a->cap : 16;
            struct alias *nv = nc < ((size_t)-1) / sizeof *nv ? realloc(a->v, nc * sizeof *nv) : NULL;
            if (!nv) { why = "out of memory"; goto bad; }
            a->v = nv;
            a->cap = nc;
        }
        cur = &a->v[a->n++];
        memset(cur, 0, sizeof *cur);
        memcpy(cur->name, name, nl2 + 1);
        cur->line = lineno;
        if (!parse_targets(cur, colon + 1, end, &why)) goto bad;
    }
    for (size_t i = 0; i < a->n; i++)
        if (!a->v[i].ntarget) {
            snprintf(err, errlen, "%s: alias %s: no targets", fname, a->v[i].name);
            aliases_free(a);
            errno = EINVAL;
            return 0;
        }
    /* sorted by name for aliases_find; a name twice is an error at its second line */
    if (a->n) qsort(a->v, a->n, sizeof *a->v, alias_cmp);
    for (size_t i = 1; i < a->n; i++)
        if (!strcmp(a->v[i - 1].name, a->v[i].name)) {
            lineno = a->v[i - 1].line > a->v[i].line ? a->v[i - 1].line : a->v[i].line;
            why = "duplicate alias";
            goto bad;
        }
    return 1;
bad:
    snprintf(err, errlen, "%s:%zu: %s", fname, lineno, why);
    aliases_free(a);
    errno = EINVAL;
    return 0;
}

static int slurp(const char *path, struct buf *b, size_t max)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) return 0;
    for (;;) {
        if (b->len >= max) { close(fd); errno = EFBIG; return 0; }
        if (!buf_reserve(b, 4096)) { close(fd); return 0; }
        ssize_t r = read(fd, b->s + b->len, b->cap - b->len - 1);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) { int e = errno; close(fd); errno = e; return 0; }
        if (!r) break;
        b->len += (size_t)r;
    }
    close(fd);
    b->s[b->len] = 0;
    return 1;
}

int aliases_load(struct aliases *a, const char *path, char *err, size_t errlen)
{
    struct buf b = BUF_ZERO;
    aliases_free(a);
    if (!slurp(path, &b, ALIAS_FILE_MAX)) {
        int e = errno;
        buf_free(&b);
        if (e == ENOENT) return 1;
        snprintf(err, errlen, "%s: %s", path, strerror(e));
        errno = e;
        return 0;
    }
    int ok = aliases_parse(a, path, b.s ? b.s : "", b.len, err, errlen);
    buf_free(&b);
    return ok;
}

static int alias_key_cmp(const void *key, const void *elem)
{
    return strcmp(key, ((const struct alias *)elem)->name);
}

const struct alias *aliases_find(const struct aliases *a, const char *name)
{
    return a->n ? bsearch(name, a->v, a->n, sizeof *a->v, alias_key_cmp) : NULL;
}

int alias_local_name(const char *addr, alias_is_local_fn *is_local, void *ctx,
                     char *dst, size_t dstlen)
{
    const char *at = strrchr(addr, '@');
    size_t ll = at ? (size_t)(at - addr) : strlen(addr);
    if (!ll || addr[0] == '"') return -1;
    const char *plus = memchr(addr + 1, '+', ll - 1);
    size_t nl = plus ? (size_t)(plus - addr) : ll;
    /* the name is at most ALIAS_NAME_MAX; a "+detail" (a VERP tag, say)
     * may take the local part past it */
    if (nl > ALIAS_NAME_MAX) return -1;
    for (size_t i = 0; i < ll; i++) {
        unsigned char c = (unsigned char)addr[i];
        if (c <= 0x20 || c == 0x7f || c == '%' || c == '!' || c == '@' || c == '"') return -1;
        /* the name is a file and table key: ASCII, no '/'; the detail after
         * '+' is dropped, and may be UTF-8 (SMTPUTF8) as smtp-listener takes it */
        if (i < nl && (c >= 0x80 || c == '/')) return -1;
    }
    if (at) {
        size_t dl = strlen(at + 1);
        if (!dl) return -1;
        if (!is_local || !is_local(ctx, at + 1, dl)) return 0;
    }
    ll = nl;
    if (ll + 1 > dstlen) return -1;
    for (size_t i = 0; i < ll; i++) dst[i] = (char)tolower((unsigned char)addr[i]);
    dst[ll] = 0;
    return 1;
}

int aliases_local_name(const struct aliases *a, const char *addr, alias_is_local_fn *is_local, void *ctx,
                       char *dst, size_t dstlen)
{
    int r = alias_local_name(addr, is_local, ctx, dst, dstlen);
    if (r != 1) return r;
    const char *at = strrchr(addr, '@');
    size_t ll = at ? (size_t)(at - addr) : strlen(addr);
    char whole[ALIAS_NAME_MAX + 1];
    /* no detail, or too long to be an alias name as a whole */
    if (ll == strlen(dst) || ll >= dstlen || ll > ALIAS_NAME_MAX) return 1;
    for (size_t i = 0; i < ll; i++) {
        if (!name_char((unsigned char)addr[i])) return 1;  /* no alias name then */
        whole[i] = (char)tolower((unsigned char)addr[i]);
    }
    whole[ll] = 0;
    if (aliases_find(a, whole)) memcpy(dst, whole, ll + 1);
    return 1;
}

struct expand_state {
    const struct aliases *a;
    alias_is_local_fn *is_local;
    void *ctx;
    struct alias_expansion *out;
    const char *path[ALIAS_DEPTH_MAX + 1];
    size_t depth;
};

static int push_local(struct alias_expansion *x, const char *name)
{
    for (size_t i = 0; i < x->nlocal; i++)
        if (!strcmp(x->local[i], name)) return 1;
    if (x->nlocal + x->nremote >= ALIAS_TARGETS_MAX) { errno = E2BIG; return 0; }
    void *nv = realloc(x->local, (x->nlocal + 1) * sizeof *x->local);
    if (!nv) return 0;
    x->local = nv;
    snprintf(x->local[x->nlocal++], ALIAS_NAME_MAX + 1, "%s", name);
    return 1;
}

static int push_remote(struct alias_expansion *x, const char *addr)
{
    for (size_t i = 0; i < x->nremote; i++)
        if (!strcasecmp(x->remote[i], addr)) return 1;
    if (x->nlocal + x->nremote >= ALIAS_TARGETS_MAX) { errno = E2BIG; return 0; }
    void *nv = realloc(x->remote, (x->nremote + 1) * sizeof *x->remote);
    if (!nv) return 0;
    x->remote = nv;
    snprintf(x->remote[x->nremote++], ALIAS_TARGET_MAX + 1, "%s", addr);
    return 1;
}

static int expand_name(struct expand_state *st, const char *name)
{
    const struct alias *al = aliases_find(st->a, name);
    if (!al) return push_local(st->out, name);
    for (size_t i = 0; i < st->depth; i++)
        if (!strcmp(st->path[i], name)) { errno = ELOOP; return 0; }
    if (st->depth >= ALIAS_DEPTH_MAX) { errno = ELOOP; return 0; }
    st->path[st->depth++] = al->name;
    for (size_t k = 0; k < al->ntarget; k++) {
        char local[ALIAS_NAME_MAX + 1];
        int r = aliases_local_name(st->a, al->target[k], st->is_local, st->ctx, local, sizeof local);
        if (r < 0) { errno = EINVAL; return 0; }
        if (!r) { if (!push_remote(st->out, al->target[k])) return 0; continue; }
        if (!strcmp(local, al->name)) { if (!push_local(st->out, local)) return 0; continue; }
        if (!expand_name(st, local)) return 0;
    }
    st->depth--;
    return 1;
}

int aliases_expand(const struct aliases *a, const char *name, alias_is_local_fn *is_local,
                   void *ctx, struct alias_expansion *out)
{
    struct expand_state st;
    memset(out, 0, sizeof *out);
    memset(&st, 0, sizeof st);
    st.a = a;
    st.is_local = is_local;
    st.ctx = ctx;
    st.out = out;
    if (!expand_name(&st, name)) {
        int e = errno;
        alias_expansion_free(out);
        errno = e;
        return 0;
    }
    return 1;
}

void alias_expansion_free(struct alias_expansion *x)
{
    free(x->local);
    free(x->remote);
    memset(x, 0, sizeof *x);
}

void mailboxes_init(struct mailboxes *t) { memset(t, 0, sizeof *t); }

void mailboxes_free(struct mailboxes *t)
{
    for (size_t i = 0; i < t->n; i++) {
        free(t->v[i].name);
        free(t->v[i].maildir);
    }
    free(t->v);
    free(t->fname);
    mailboxes_init(t);
}

static char *dup_n(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) { memcpy(d, s, n); d[n] = 0; }
    return d;
}

/* one line "name:uid:gid:/maildir" into e; a line that is not of that form
 * still gives its name (what precedes the first ':') with e->bad set, so
 * that only that name's deliveries fail; 0 if it gives no name at all */
static int mailbox_line(const char *line, size_t n, struct mailboxes_entry *e)
{
    const char *f[4], *p = line, *end = line + n;
    size_t fl[4], k = 0;
    while (k < 3) {
        const char *c = memchr(p, ':', (size_t)(end - p));
        if (!c) break;
        f[k] = p; fl[k] = (size_t)(c - p); k++;
        p = c + 1;
    }
    f[3] = p; fl[3] = (size_t)(end - p);
    size_t nl = k ? fl[0] : n;
    if (!nl || nl > ALIAS_NAME_MAX || memchr(line, 0, nl)) return 0;
    unsigned long uid = 0, gid = 0;
    /* ids as userdb writes them (0 is refused later, by local-deliverer,
     * with its own message) */
    e->bad = k != 3 || !privuser_parse_id(f[1], fl[1], &uid) ||
             !privuser_parse_id(f[2], fl[2], &gid) || !fl[3] || f[3][0] != '/' || fl[3] >= MAILBOX_PATH_MAX || memchr(f[3], 0, fl[3]);
    e->uid = (uid_t)uid;
    e->gid = (gid_t)gid;
    e->name = dup_n(line, nl);
    e->maildir = e->bad ? NULL : dup_n(f[3], fl[3]);
    if (!e->name || (!e->bad && !e->maildir)) {
        free(e->name);
        free(e->maildir);
        errno = ENOMEM;
        return -1;
    }
    return 1;
}

static int mailbox_cmp(const void *x, const void *y)
{
    const struct mailboxes_entry *a = x, *b = y;
    int c = strcmp(a->name, b->name);
    return c ? c : (a->line > b->line) - (a->line < b->line);
}

int mailboxes_parse(struct mailboxes *t, const char *fname, const char *text, size_t len)
{
    size_t off = 0, lineno = 0, cap = 0;
    mailboxes_free(t);
    if (!(t->fname = dup_n(fname, strlen(fname)))) return 0;
    while (off < len) {
        const char *line = text + off;
        const char *nl = memchr(line, '\n', len - off);
        size_t n = nl ? (size_t)(nl - line) : len - off;
        off += n + (nl ? 1 : 0);
        lineno++;
        if (!n || line[0] == '#') continue;
        if (t->n == cap) {
            size_t nc = cap ? 2 * cap : 64;
            struct mailboxes_entry *nv = nc < ((size_t)-1) / sizeof *nv ? realloc(t->v, nc * sizeof *nv) : NULL;
            if (!nv) goto fail;
            t->v = nv;
            cap = nc;
        }
        struct mailboxes_entry *e = &t->v[t->n];
        memset(e, 0, sizeof *e);
        e->line = lineno;
        int r = mailbox_line(line, n, e);
        if (r < 0) goto fail;
        if (r) t->n++;
    }
    /* sorted by name, the first line of a name first: the one that counts,
     * so the later ones go */
    if (t->n) qsort(t->v, t->n, sizeof *t->v, mailbox_cmp);
    size_t k = 0;
    for (size_t i = 0; i < t->n; i++) {
        if (k && !strcmp(t->v[k - 1].name, t->v[i].name)) {
            free(t->v[i].name);
            free(t->v[i].maildir);
            continue;
        }
        t->v[k++] = t->v[i];
    }
    t->n = k;
    return 1;
fail:;
    int e = errno;
    mailboxes_free(t);
    errno = e;
    return 0;
}

int mailboxes_load(struct mailboxes *t, const char *path, char *err, size_t errlen)
{
    struct buf b = BUF_ZERO;
    if (!slurp(path, &b, MAILBOXES_FILE_MAX)) {
        int e = errno;
        snprintf(err, errlen, "%s: %s", path, strerror(e));
        buf_free(&b);
        errno = e;
        return 0;
    }
    int ok = mailboxes_parse(t, path, b.s ? b.s : "", b.len);
    if (!ok) snprintf(err, errlen, "%s: %s", path, strerror(errno));
    buf_free(&b);
    return ok;
}

static int mailbox_key_cmp(const void *key, const void *elem)
{
    return strcmp(key, ((const struct mailboxes_entry *)elem)->name);
}

int mailboxes_find(const struct mailboxes *t, const char *name, struct mailbox *m, char *err, size_t errlen)
{
    const struct mailboxes_entry *e = t->n ? bsearch(name, t->v, t->n, sizeof *t->v, mailbox_key_cmp) : NULL;
    if (!e) { errno = ENOENT; return 0; }
    size_t nlen = strlen(name);            /* <= ALIAS_NAME_MAX: the entry's name, which mailbox_line bounds */
    if (e->bad) {
        snprintf(err, errlen, "%s:%zu: expected name:uid:gid:/maildir", t->fname ? t->fname : "mailboxes", e->line);
        errno = EINVAL;
        return 0;
    }
    memcpy(m->name, name, nlen + 1);
    m->uid = e->uid;
    m->gid = e->gid;
    size_t ml = strlen(e->maildir);
    memcpy(m->maildir, e->maildir, ml + 1);
    return 1;
}
