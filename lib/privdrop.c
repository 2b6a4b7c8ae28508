/* privdrop.c - drop privileges in the one order DESIGN.md gives, and verify. */
#include "privdrop.h"

#include <errno.h>
#include <grp.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

int privdrop_is_root(void) { return geteuid() == 0; }

void privdrop_name(const char *role)
{
    char name[16];
    size_t n = strnlen(role, sizeof name - 1);
    memcpy(name, role, n);
    name[n] = 0;
    if (prctl(PR_SET_NAME, name, 0, 0, 0) < 0) { /* only ps and top see it */ }
}

int privdrop(const char *chroot_dir, const struct privuser *u)
{
    if (u->uid == 0 || u->gid == 0) { errno = EPERM; return 0; }
    if (!privdrop_is_root()) {
        /* nothing to drop: only allowed when we already are that user */
        if (getuid() != u->uid || geteuid() != u->uid) { errno = EPERM; return 0; }
        if (chroot_dir && chdir(chroot_dir) < 0) return 0;
        return 1;
    }
    if (chroot_dir) {
        if (chroot(chroot_dir) < 0) return 0;
    }
    if (chdir("/") < 0) return 0;
    if (setgroups(1, &u->gid) < 0) return 0;
    if (setgid(u->gid) < 0) return 0;
    if (setuid(u->uid) < 0) return 0;
    /* verify: ids are what we asked for, and root cannot be regained */
    if (getuid() != u->uid || geteuid() != u->uid || getgid() != u->gid || getegid() != u->gid) {
        errno = EPERM;
        return 0;
    }
    if (setuid(0) == 0 || seteuid(0) == 0 || setgid(0) == 0) { errno = EPERM; return 0; }
    errno = 0;
    return 1;
}
