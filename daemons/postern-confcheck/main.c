/* postern-confcheck - validate an instance's configuration with the daemons'
 * own parsers, for postern-setup --check and operators: ROOT/conf/postern.conf
 * (config_load), conf/aliases (aliases_load, as local-deliverer and
 * smtp-listener read it) and conf/routes (routes_load, as remote-deliverer
 * reads it); a missing aliases or routes file is an empty one, as for them.
 *
 *   postern-confcheck [--root DIR | DIR]   prints nothing and exits 0 if
 *                               every file is valid; otherwise prints one
 *                               "file:line: what" a bad file and exits 100
 *                               (111 if a file cannot be read). */
#include "aliases.h"
#include "config.h"
#include "routes.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

static const char usage[] =
    "usage: postern-confcheck [--root DIR | DIR]\n"
    "ROOT is DIR, else $POSTERN_ROOT, else the instance of ROOT/bin/postern-confcheck.\n"
    "Checks ROOT/conf/postern.conf, conf/aliases and conf/routes with the daemons'\n"
    "parsers: prints nothing and exits 0 if they are valid, else prints\n"
    "\"file:line: what\" for each bad file and exits 100 (111 if one cannot be read).\n";

/* the exit code a failed load means: 100 the file is wrong, 111 unreadable */
static int failed(const char *err, int e)
{
    fprintf(stderr, "%s\n", err);
    return e == ENOENT || e == EACCES || e == EIO || e == ENOMEM ? 111 : 100;
}

int main(int argc, char **argv)
{
    static struct config c;
    static struct aliases a;
    static struct routes rs;
    char err[1024], path[PATH_MAX];
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
    int code = 0, r;
    errno = 0;
    if (!config_load(&c, root, err, sizeof err)) return failed(err, errno);
    if (snprintf(path, sizeof path, "%s/conf/aliases", root) >= (int)sizeof path) {
        fprintf(stderr, "%s/conf/aliases: path too long\n", root);
        return 100;
    }
    aliases_init(&a);
    errno = 0;
    if (!aliases_load(&a, path, err, sizeof err)) code = failed(err, errno);
    aliases_free(&a);
    if (snprintf(path, sizeof path, "%s/conf/routes", root) >= (int)sizeof path) {
        fprintf(stderr, "%s/conf/routes: path too long\n", root);
        return 100;
    }
    errno = 0;
    if (!routes_load(&rs, path, err, sizeof err) && (r = failed(err, errno)) > code) code = r;
    return code;
}
