/* postern-confcheck - validate ROOT/conf/postern.conf with the daemons' own
 * parser (config_load), for postern-setup --check and operators.
 *
 *   postern-confcheck [ROOT]    prints nothing and exits 0 if the file is
 *                               valid; otherwise prints "file:line: what"
 *                               and exits 100 (111 if it cannot be read). */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>

int main(int argc, char **argv)
{
    static struct config c;
    char err[1024];
    char rootbuf[PATH_MAX];
    const char *root = config_root_tool(argc == 2 ? argv[1] : NULL, rootbuf, sizeof rootbuf);
    if (!root || argc > 2) {
        fputs("usage: postern-confcheck [ROOT] (ROOT: else $POSTERN_ROOT, else the instance of ROOT/bin/postern-confcheck)\n", stderr);
        return 100;
    }
    errno = 0;
    if (!config_load(&c, root, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return errno == ENOENT || errno == EACCES || errno == EIO ? 111 : 100;
    }
    return 0;
}
