/* smtp_rcptmap.h - the names RCPT accepts for the local domains: the
 * secret-free ROOT/conf/recipients (one name a line, '#' comments) plus the
 * alias names of ROOT/conf/aliases, plus postmaster and abuse. Loaded before
 * the session's chroot; looked up without touching the file system. */
#ifndef POSTERN_SMTP_RCPTMAP_H
#define POSTERN_SMTP_RCPTMAP_H

#include <stddef.h>

#define SMTP_RCPTMAP_NAME_MAX 64
#define SMTP_RCPTMAP_FILE_MAX (16u << 20)

struct smtp_rcptmap {
    size_t n;
    char **name;      /* sorted, lower case, no duplicates */
};

void smtp_rcptmap_init(struct smtp_rcptmap *m);
void smtp_rcptmap_free(struct smtp_rcptmap *m);
/* Parse a recipients text (name used in messages) into m (added to what it
 * holds). 0 with errno EINVAL and err "name:line: what", or ENOMEM. */
int smtp_rcptmap_parse(struct smtp_rcptmap *m, const char *fname, const char *text, size_t len,
                       char *err, size_t errlen);
/* add one name (lower-cased); 0 with EINVAL if it is not a valid name */
int smtp_rcptmap_add(struct smtp_rcptmap *m, const char *name, size_t len);
/* Load ROOT/conf/recipients and the alias names of ROOT/conf/aliases into a
 * fresh map (a missing file counts as empty). 0 with err naming file:line. */
int smtp_rcptmap_load(struct smtp_rcptmap *m, const char *root, char *err, size_t errlen);
/* 1 if name (already lower case, without +detail) is accepted */
int smtp_rcptmap_has(const struct smtp_rcptmap *m, const char *name);

#endif
