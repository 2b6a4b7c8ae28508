/* aliases.h - local recipients: ROOT/conf/aliases ("name: addr, addr, ...")
 * and ROOT/conf/mailboxes ("name:uid:gid:maildir"), and the expansion of a
 * local name through the aliases into mailbox names and remote addresses.
 *
 * aliases: '#' comments, blank lines ignored (also between an entry's
 * lines), a line starting with white space continues the previous entry. Names are case-insensitive (stored
 * lower-case). A target is "name" or "local@domain"; program ("|cmd"), file
 * ("/path") and ":include:" targets are refused with file:line:what. */
#ifndef POSTERN_ALIASES_H
#define POSTERN_ALIASES_H

#include <stddef.h>
#include <sys/types.h>

#define ALIAS_NAME_MAX 64        /* a local part */
#define ALIAS_TARGET_MAX 256     /* one target address */
#define ALIAS_TARGETS_MAX 1000   /* addresses one expansion may produce */
#define ALIAS_DEPTH_MAX 10       /* alias -> alias -> ... */
#define ALIAS_FILE_MAX (4u << 20)

struct alias {
    char name[ALIAS_NAME_MAX + 1];
    size_t ntarget;
    char **target;
    size_t line;               /* where it starts in the file */
};

struct aliases {
    size_t n, cap;
    struct alias *v;           /* sorted by name once parsed */
};

void aliases_init(struct aliases *a);
void aliases_free(struct aliases *a);
/* 1, or 0 with errno (EINVAL: err holds "name:line: what") */
int aliases_parse(struct aliases *a, const char *fname, const char *text, size_t len,
                  char *err, size_t errlen);
/* a missing file is an empty table */
int aliases_load(struct aliases *a, const char *path, char *err, size_t errlen);
const struct alias *aliases_find(const struct aliases *a, const char *name);

/* is domain[0..len) one of ours? */
typedef int alias_is_local_fn(void *ctx, const char *domain, size_t len);

/* The local user name of an address: lower-cased local part without its
 * "+detail". Returns 1 (local: dst filled), 0 (remote), -1 (malformed:
 * empty, quoted, too long, or holding '%', '!', '/', or control bytes).
 * An address without '@' is local. */
int alias_local_name(const char *addr, alias_is_local_fn *is_local, void *ctx,
                     char *dst, size_t dstlen);

/* The name an address is delivered to, for a table of aliases: its whole
 * local part, lower-cased, if that holds a "+detail" and is an alias name
 * itself (Postfix's order: "list+x" before "list"), else the name without
 * the detail, as alias_local_name gives it (the same returns). */
int aliases_local_name(const struct aliases *a, const char *addr, alias_is_local_fn *is_local, void *ctx,
                       char *dst, size_t dstlen);

struct alias_expansion {
    size_t nlocal, nremote;
    char (*local)[ALIAS_NAME_MAX + 1];      /* mailbox names, no duplicates */
    char (*remote)[ALIAS_TARGET_MAX + 1];   /* addresses, no duplicates */
};

/* Expand a local name (already normalised). A name that is no alias expands
 * to itself. An alias naming itself among its targets means the mailbox of
 * that name. 1, or 0 with errno ELOOP (a cycle, or deeper than
 * ALIAS_DEPTH_MAX), E2BIG (too many addresses), EINVAL (a malformed target),
 * ENOMEM. */
int aliases_expand(const struct aliases *a, const char *name, alias_is_local_fn *is_local,
                   void *ctx, struct alias_expansion *out);
void alias_expansion_free(struct alias_expansion *x);

#define MAILBOX_PATH_MAX 4096
#define MAILBOXES_FILE_MAX (64u << 20)

struct mailbox {
    char name[ALIAS_NAME_MAX + 1];
    uid_t uid;
    gid_t gid;
    char maildir[MAILBOX_PATH_MAX];
};

/* ROOT/conf/mailboxes ("name:uid:gid:/maildir" a line, '#' comments),
 * parsed once into a table sorted by name. A malformed line fails only the
 * lookups of its own name (with file:line), not the whole table; if a name
 * appears twice, its first line counts (the later ones are dropped). */
struct mailboxes_entry {
    char *name, *maildir;      /* maildir NULL if bad */
    uid_t uid;
    gid_t gid;
    size_t line;
    int bad;
};

struct mailboxes {
    size_t n;
    struct mailboxes_entry *v;
    char *fname;               /* for error messages */
};

void mailboxes_init(struct mailboxes *t);
void mailboxes_free(struct mailboxes *t);
/* 1, or 0 with errno (ENOMEM) */
int mailboxes_parse(struct mailboxes *t, const char *fname, const char *text, size_t len);
/* 1, or 0 with errno and err naming the file; a missing file is trouble
 * (ENOENT), not an empty table: deliveries wait rather than bounce */
int mailboxes_load(struct mailboxes *t, const char *path, char *err, size_t errlen);
/* 1 found (m filled); 0 with errno ENOENT (no such mailbox) or EINVAL (its
 * line is malformed: err says file:line) */
int mailboxes_find(const struct mailboxes *t, const char *name, struct mailbox *m, char *err, size_t errlen);

#endif
