/* checkpassword.c - auth-checker's checkpassword-compatible mode, for
 * programs written to the qmail-popup / checkpassword interface:
 *
 *   auth-checker --checkpassword ROOT prog [args...]
 *
 * Reads "user\0password\0timestamp\0" (at most 512 bytes) from fd 3. On a
 * match: sets USER, HOME (= the maildir) and MAILDIR, drops to the user's
 * uid/gid when run as root, chdirs to the maildir and execs prog.
 * Exit codes (checkpassword's): 1 bad user or password, 2 misuse, 111
 * temporary trouble (e.g. users file unreadable). An unknown user's
 * password is hashed once at the configured cost, the work a known
 * user's verification takes. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sodium.h>

#include "log.h"
#include "privdrop.h"
#include "server.h"

int checkpassword_main(const char *root, char **prog)
{
    static struct config conf;
    static struct userdb db;
    char in[513], err[1200], path[CONFIG_NAME_MAX + 32], name[USERDB_NAME_MAX + 1], dummy[USERDB_HASH_MAX + 1];
    size_t len = 0;
    if (!prog[0]) { log_error(NULL, "event=checkpassword error=\"usage: auth-checker --checkpassword ROOT prog...\""); return 2; }
    if (sodium_init() < 0) return 111;
    while (len < sizeof in) {
        ssize_t r = read(3, in + len, sizeof in - len);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) { log_error(NULL, "event=checkpassword error=\"fd 3: %s\"", strerror(errno)); return 2; }
        if (r == 0) break;
        len += (size_t)r;
    }
    close(3);
    const char *user = in, *z1 = len <= 512 ? memchr(in, 0, len) : 0;
    const char *pass = z1 ? z1 + 1 : 0;
    const char *z2 = pass ? memchr(pass, 0, len - (size_t)(pass - in)) : 0;
    if (!z2) { sodium_memzero(in, sizeof in); log_error(NULL, "event=checkpassword error=\"malformed input on fd 3\""); return 2; }
    if (!config_load(&conf, root, err, sizeof err)) { log_error(NULL, "event=checkpassword error=\"%s\"", err); return 111; }
    snprintf(path, sizeof path, "%s/conf/users", root);
    if (!userdb_load(&db, path, 1, 1, err, sizeof err)) { log_error(NULL, "event=checkpassword error=\"%s\"", err); return 111; }
    const char *why;
    const struct userdb_entry *e = userdb_name_canon(user, (size_t)(z1 - user), name, &why) ? userdb_find(&db, name) : 0;
    enum userdb_pwlevel lvl = USERDB_PW_INTERACTIVE;
    userdb_pwlevel_parse(conf.pwhash_level, &lvl);
    /* an unknown name costs one argon2id computation, as a verification
     * does: the password is hashed (and the result thrown away) at the
     * cost most users' hashes have */
    int ok = 0;
    unsigned long long ops;
    size_t mem;
    users_cost(&db, lvl, &ops, &mem);
    if (e) ok = userdb_pwverify(e->hash, pass, (size_t)(z2 - pass)) == 1;
    else if (!userdb_pwhash_cost(dummy, pass, (size_t)(z2 - pass), ops, mem)) { sodium_memzero(in, sizeof in); return 111; }
    sodium_memzero(dummy, sizeof dummy);
    char u[100];
    log_safe(u, sizeof u, user, (size_t)(z1 - user));
    sodium_memzero(in, sizeof in);
    log_info(NULL, "service=checkpassword user=%s result=%s", u, ok ? "ok" : "bad");
    if (!ok) return 1;
    struct privuser pu = { e->uid, e->gid };
    if (privdrop_is_root() && !privdrop(NULL, &pu)) { log_error(NULL, "event=privdrop error=\"%s\"", strerror(errno)); return 111; }
    if (chdir(e->maildir) < 0) { log_error(NULL, "event=chdir error=\"%s\"", strerror(errno)); return 111; }
    if (setenv("USER", e->name, 1) < 0 || setenv("HOME", e->maildir, 1) < 0 || setenv("MAILDIR", e->maildir, 1) < 0) return 111;
    userdb_free(&db);
    execvp(prog[0], prog);
    log_error(NULL, "event=exec prog=%s error=\"%s\"", prog[0], strerror(errno));
    return 111;
}
