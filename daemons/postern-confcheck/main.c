/* postern-confcheck - validate ROOT/conf/postern.conf with the daemons' own
 * parser (config_load), for postern-setup --check and operators.
 *
 *   postern-confcheck [--root DIR | DIR]   prints nothing and exits 0 if the
 *                               file is valid; otherwise prints
 *                               "file:line: what" and exits 100 (111 if it
 *                               cannot be read). */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

static const char usage[] =
    "usage: postern-confcheck [--root DIR | DIR]\n"
    "ROOT is DIR, else $POSTERN_ROOT, else the instance of ROOT/bin/postern-confcheck.\n"
    "Prints nothing and exits 0 if ROOT/conf/postern.conf is valid, else prints\n"
    "\"file:line: what\" and exits 100 (111 if the file cannot be read).\n";

int main(int argc, char **argv)
{
    static struct config c;
    char err[1024];
    char rootbuf[PATH_MAX];
    const char *arg = NULL;
    if (argc == 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        fputs(usage, stdout);
        return 0;
    }
    if (argc == 3 && !strcmp(argv[1], "--root")) arg = argv[2];
    else if (argc == 2 && argv[1][0] != '-') arg = argv[1];
    else if (argc != 1) { fputs(usage, stderr); return 100; }
    const char *root = config_root_tool(arg, rootbuf, sizeof rootbuf);
    if (!root) { fputs(usage, stderr); return 100; }
    errno = 0;
    if (!config_load(&c, root, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return errno == ENOENT || errno == EACCES || errno == EIO ? 111 : 100;
    }
    return 0;
}
