/* privuser.c - look up the system user a program runs as. Kept apart from
 * privdrop.c so that statically linked programs (queue-inject) that only
 * drop privileges do not pull in getpwnam and the NSS machinery. */
#include "privdrop.h"

#include <errno.h>
#include <pwd.h>

int privuser_lookup(const char *name, struct privuser *u)
{
    errno = 0;
    struct passwd *pw = getpwnam(name);
    if (!pw) { if (!errno) errno = ENOENT; return 0; }
    u->uid = pw->pw_uid;
    u->gid = pw->pw_gid;
    return 1;
}
