/* server.h - auth-checker's state and its serving loop. */
#ifndef POSTERN_AUTH_SERVER_H
#define POSTERN_AUTH_SERVER_H

#include <sys/types.h>
#include <time.h>

#include "authproto.h"
#include "config.h"
#include "filesig.h"
#include "userdb.h"

struct server {
    const struct config *conf;
    const char *root;             /* to reload ROOT/conf/postern.conf on SIGHUP */
    int listen_fd;
    char users_path[CONFIG_NAME_MAX + 32];
    struct userdb users;
    struct filesig_cache users_c; /* to notice a changed users file */
    char dummy_hash[USERDB_HASH_MAX + 1];   /* verified for unknown users */
    enum userdb_pwlevel pwlevel;  /* pwhash_level: the dummy's cost without users */
    unsigned long long dummy_ops; /* the dummy's cost: the users' most common one */
    size_t dummy_mem;
    uid_t allowed[4];             /* peers: root, user_smtp, user_pop3 (+ self) */
    size_t nallowed;
};

/* load users_path into s->users (a missing file is an empty db) */
int server_users_load(struct server *s, char *err, size_t errlen);
/* the argon2id cost most of db's hashes have; lvl's when none says */
void users_cost(const struct userdb *db, enum userdb_pwlevel lvl, unsigned long long *ops, size_t *mem);
/* (re)make the dummy hash at the cost most of the users' hashes have
 * (pwhash_level's without users), if that is not its cost already */
int server_dummy_refresh(struct server *s);
/* serve until SIGTERM; 0 on a fatal error */
int server_run(struct server *s);

/* checkpassword.c: the checkpassword interface (see there); returns exit code */
int checkpassword_main(const char *root, char **prog);

#endif
