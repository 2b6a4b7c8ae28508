/* userdb.h - the mail user database: conf/users (with password hashes),
 * conf/mailboxes (the same without hashes) and conf/recipients (names only),
 * user name validation, and atomic rewriting of these files.
 *
 *   users:      name:uid:gid:maildir:$argon2id$...   (0600 postern-auth)
 *   mailboxes:  name:uid:gid:maildir                 (0644)
 *   recipients: name                                 (0644, users + aliases)
 *
 * Lines starting with '#' and blank lines are ignored. Every line is checked;
 * an error names the file, the line and what is wrong.
 * userdb_pwhash*.c (the only parts that need libsodium) hash and verify. */
#ifndef POSTERN_USERDB_H
#define POSTERN_USERDB_H

#include <stddef.h>
#include <sys/types.h>

#include "buf.h"

#define USERDB_NAME_MAX 64       /* a user name, octets */
#define USERDB_PATH_MAX 1024     /* a maildir path */
#define USERDB_HASH_MAX 128      /* crypto_pwhash_STRBYTES */
#define USERDB_PASS_MAX 1024     /* a password, octets */
#define USERDB_LINE_MAX 2048     /* one line of any of the files */
#define USERDB_USERS_MAX 100000  /* entries in one file */
#define USERDB_UID_FIRST 20000   /* the dedicated uid range starts here */

struct userdb_entry {
    char name[USERDB_NAME_MAX + 1];
    uid_t uid;
    gid_t gid;
    char maildir[USERDB_PATH_MAX + 1];
    char hash[USERDB_HASH_MAX + 1];   /* "" in mailboxes entries */
};

struct userdb {
    size_t n;
    size_t cap;
    struct userdb_entry *v;
};
#define USERDB_ZERO { 0, 0, 0 }

/* Check a user name as typed (s[0..len), may hold NUL bytes) and write its
 * canonical form (lower-cased) into out (at least USERDB_NAME_MAX+1 bytes).
 * Allowed: 1..64 of [a-z0-9._-] after lower-casing, first character a letter
 * or digit, no "..". Returns 1, or 0 with errno EINVAL and *why saying what
 * is wrong (static text). */
int userdb_name_canon(const char *s, size_t len, char *out, const char **why);

/* Parse one line (without LF) of users (with_hash) or mailboxes into e.
 * 0 with errno EINVAL and *why set. */
int userdb_parse_line(const char *line, size_t len, int with_hash,
                      struct userdb_entry *e, const char **why);

/* Load a file (users if with_hash, else mailboxes). A missing file gives an
 * empty db when missing_ok. 0 with err "path:line: what" or "path: strerror". */
int userdb_load(struct userdb *db, const char *path, int with_hash, int missing_ok,
                char *err, size_t errlen);
/* Same on an in-memory text (name used in messages). */
int userdb_parse(struct userdb *db, const char *name, const char *text, size_t len,
                 int with_hash, char *err, size_t errlen);
void userdb_free(struct userdb *db);   /* zeroes the hashes */

struct userdb_entry *userdb_find(const struct userdb *db, const char *name);
int userdb_add(struct userdb *db, const struct userdb_entry *e);   /* EEXIST if present */
int userdb_del(struct userdb *db, const char *name);               /* ENOENT if absent */
int userdb_uid_used(const struct userdb *db, uid_t uid);

/* Render as users (with_hash) or mailboxes text, appended to out. */
int userdb_format(const struct userdb *db, int with_hash, struct buf *out);
/* recipients: every user name, then the alias names (each once), one a line */
int userdb_format_recipients(const struct userdb *db, const char *const *aliases,
                             size_t naliases, struct buf *out);
/* The alias names of a conf/aliases text ("name: addr, addr"), canonical,
 * into a malloc'd array of malloc'd strings. Lines that do not parse are
 * skipped (local-deliverer validates that file). */
int userdb_alias_names(const char *text, size_t len, char ***names, size_t *n);
void userdb_alias_names_free(char **names, size_t n);

/* Write data to path atomically: path.tmp.PID (O_EXCL|O_NOFOLLOW), fchmod
 * mode, fchown owner/group unless (uid_t)-1, fsync, rename, fsync the dir. */
int userdb_write_file(const char *path, const void *data, size_t len, mode_t mode,
                      uid_t owner, gid_t group);

/* Read a whole (small) file into out; at most max bytes (E2BIG past it). */
int userdb_read_file(const char *path, size_t max, struct buf *out);

/* --- userdb_pwhash.c (links libsodium) --- */
enum userdb_pwlevel { USERDB_PW_INTERACTIVE = 0, USERDB_PW_MODERATE, USERDB_PW_SENSITIVE };
/* "interactive" | "moderate" | "sensitive" -> level; 0 with EINVAL otherwise */
int userdb_pwlevel_parse(const char *s, enum userdb_pwlevel *lvl);
/* hash pass[0..len) into out (USERDB_HASH_MAX+1 bytes) */
int userdb_pwhash(char *out, const char *pass, size_t len, enum userdb_pwlevel lvl);
/* the same at an explicit cost (opslimit, memlimit in bytes) */
int userdb_pwhash_cost(char *out, const char *pass, size_t len, unsigned long long ops, size_t mem);
/* the cost an argon2id string was made with ("$argon2id$v=19$m=KiB,t=ops,p=1$"),
 * or of a level when hash is NULL; 0 with EINVAL if the string does not say */
int userdb_pwhash_cost_of(const char *hash, enum userdb_pwlevel lvl, unsigned long long *ops, size_t *mem);
/* 1 if pass matches hash, 0 if not, -1 if the hash is malformed (EINVAL) */
int userdb_pwverify(const char *hash, const char *pass, size_t len);

#endif
