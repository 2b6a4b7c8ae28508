/* privdrop.h - the one place privileges are dropped, in the one order of
 * DESIGN.md: chroot (if asked), chdir("/"), setgroups, setgid, setuid, then
 * verify that root cannot be regained.
 *
 * When the process is not root (a developer running the tests as an ordinary
 * user) and the target uid is its own, nothing can be dropped: privdrop()
 * then only does chdir (to the chroot dir if given) and returns 1; callers can
 * ask privdrop_is_root() to say what was skipped. */
#ifndef POSTERN_PRIVDROP_H
#define POSTERN_PRIVDROP_H

#include <sys/types.h>

struct privuser {
    uid_t uid;
    gid_t gid;
};

/* look up a system user by name in /etc/passwd (not NSS: lib/privuser.c);
 * 0 with errno ENOENT if absent, EINVAL if its line is malformed */
int privuser_lookup(const char *name, struct privuser *u);
/* the same in another file in passwd(5) format */
int privuser_lookup_file(const char *path, const char *name, struct privuser *u);
/* a uid or gid in decimal, as /etc/passwd and conf/mailboxes hold it:
 * 0 to UINT_MAX - 1 ((uid_t)-1 means "no change" to setuid); 0 on anything
 * else, such as a sign, a blank or more than 10 digits */
int privuser_parse_id(const char *s, size_t n, unsigned long *out);

/* drop to u, chrooting to dir first unless dir is NULL. uid 0 is refused. */
int privdrop(const char *chroot_dir, const struct privuser *u);

int privdrop_is_root(void); /* 1 if euid is 0 */

/* Name this process's role (prctl PR_SET_NAME: ps -o comm, top, pgrep),
 * e.g. "smtp-session" for a per-connection process forked from
 * smtp-listener, so an operator tells roles apart; cut at 15 bytes. */
void privdrop_name(const char *role);

#endif
