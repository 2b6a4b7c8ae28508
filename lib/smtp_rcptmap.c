/* smtp_rcptmap.c - the recipient names SMTP accepts for local domains. */
#include "smtp_rcptmap.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "aliases.h"
#include "buf.h"

void smtp_rcptmap_init(struct smtp_rcptmap *m) { m->n = 0; m->name = NULL; }

void smtp_rcptmap_free(struct smtp_rcptmap *m)
{
    for (size_t i = 0; i < m->n; i++) free(m->name[i]);
    free(m->name);
    smtp_rcptmap_init(m);
}

static int name_char_ok(unsigned char c)
{
    return c > ' ' && c < 0x7f && c != '@' && c != ':' && c != '"' && c != '\\' &&
           c != '<' && c != '>' && c != ',' && c != '/' && c != '%' && c != '!';
}

/* index of the first entry >= name */
static size_t map_find(const struct smtp_rcptmap *m, const char *name, int *found)
{
    size_t lo = 0, hi = m->n;
    *found = 0;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(m->name[mid], name);
        if (!c) { *found = 1; return mid; }
        if (c < 0) lo = mid + 1; else hi = mid;
    }
    return lo;
}

int smtp_rcptmap_add(struct smtp_rcptmap *m, const char *name, size_t len)
{
    char low[SMTP_RCPTMAP_NAME_MAX + 1];
    if (!len || len > SMTP_RCPTMAP_NAME_MAX) { errno = EINVAL; return 0; }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (!name_char_ok(c)) { errno = EINVAL; return 0; }
        low[i] = (char)((c >= 'A' && c <= 'Z') ? c + 32 : c);
    }
    low[len] = 0;
    int found;
    size_t at = map_find(m, low, &found);
    if (found) return 1;
    if (m->n == (size_t)-1 / sizeof *m->name - 1) { errno = ENOMEM; return 0; }
    char **v = realloc(m->name, (m->n + 1) * sizeof *v);
    if (!v) return 0;
    m->name = v;
    char *copy = strdup(low);
    if (!copy) return 0;
    memmove(v + at + 1, v + at, (m->n - at) * sizeof *v);
    v[at] = copy;
    m->n++;
    return 1;
}

int smtp_rcptmap_parse(struct smtp_rcptmap *m, const char *fname, const char *text, size_t len,
                       char *err, size_t errlen)
{
    size_t i = 0;
    unsigned long line = 0;
    while (i < len) {
        size_t s = i, e;
        line++;
        while (i < len && text[i] != '\n') i++;
        e = i;
        if (i < len) i++;
        size_t h = s;
        while (h < e && text[h] != '#') h++;
        e = h;
        while (s < e && (text[s] == ' ' || text[s] == '\t' || text[s] == '\r')) s++;
        while (e > s && (text[e - 1] == ' ' || text[e - 1] == '\t' || text[e - 1] == '\r')) e--;
        if (s == e) continue;
        if (!smtp_rcptmap_add(m, text + s, e - s)) {
            if (errno == EINVAL)
                snprintf(err, errlen, "%s:%lu: not a valid recipient name (1-%d characters, no spaces, '@' or ':')",
                         fname, line, SMTP_RCPTMAP_NAME_MAX);
            else
                snprintf(err, errlen, "%s: %s", fname, strerror(errno));
            return 0;
        }
    }
    return 1;
}

/* read a whole (bounded) file; a missing one is empty */
static int file_read(const char *path, struct buf *b, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        if (errno == ENOENT) return 1;
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return 0;
    }
    for (;;) {
        if (!buf_reserve(b, 65536)) goto fail;
        ssize_t r = read(fd, b->s + b->len, 65536);
        if (r < 0) { if (errno == EINTR) continue; goto fail; }
        if (r == 0) break;
        b->len += (size_t)r;
        if (b->len > SMTP_RCPTMAP_FILE_MAX) { errno = EFBIG; goto fail; }
    }
    close(fd);
    return 1;
fail:
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    close(fd);
    return 0;
}

int smtp_rcptmap_load(struct smtp_rcptmap *m, const char *root, char *err, size_t errlen)
{
    char path[4096];
    struct buf text = BUF_ZERO;
    struct aliases al;
    smtp_rcptmap_init(m);
    aliases_init(&al);
    snprintf(path, sizeof path, "%s/conf/recipients", root);
    if (!file_read(path, &text, err, errlen)) goto fail;
    if (!smtp_rcptmap_parse(m, path, text.s ? text.s : "", text.len, err, errlen)) goto fail;
    snprintf(path, sizeof path, "%s/conf/aliases", root);
    if (!aliases_load(&al, path, err, errlen)) goto fail;
    for (size_t i = 0; i < al.n; i++)
        if (!smtp_rcptmap_add(m, al.v[i].name, strlen(al.v[i].name))) {
            snprintf(err, errlen, "%s: alias name %s: not usable as a recipient", path, al.v[i].name);
            goto fail;
        }
    if (!smtp_rcptmap_add(m, "postmaster", 10) || !smtp_rcptmap_add(m, "abuse", 5)) {
        snprintf(err, errlen, "recipient map: %s", strerror(errno));
        goto fail;
    }
    aliases_free(&al);
    buf_free(&text);
    return 1;
fail:
    aliases_free(&al);
    buf_free(&text);
    smtp_rcptmap_free(m);
    if (!errno) errno = EINVAL;
    return 0;
}

int smtp_rcptmap_has(const struct smtp_rcptmap *m, const char *name)
{
    int found;
    map_find(m, name, &found);
    return found;
}
