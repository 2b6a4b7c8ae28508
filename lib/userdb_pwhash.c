/* userdb_pwhash.c - password hashing for the user database (argon2id, libsodium). */
#include "userdb.h"

#include <errno.h>
#include <string.h>
#include <sodium.h>

int userdb_pwlevel_parse(const char *s, enum userdb_pwlevel *lvl)
{
    if (!strcmp(s, "interactive")) *lvl = USERDB_PW_INTERACTIVE;
    else if (!strcmp(s, "moderate")) *lvl = USERDB_PW_MODERATE;
    else if (!strcmp(s, "sensitive")) *lvl = USERDB_PW_SENSITIVE;
    else { errno = EINVAL; return 0; }
    return 1;
}

int userdb_pwhash(char *out, const char *pass, size_t len, enum userdb_pwlevel lvl)
{
    unsigned long long ops = crypto_pwhash_OPSLIMIT_INTERACTIVE;
    size_t mem = crypto_pwhash_MEMLIMIT_INTERACTIVE;
    if (lvl == USERDB_PW_MODERATE) { ops = crypto_pwhash_OPSLIMIT_MODERATE; mem = crypto_pwhash_MEMLIMIT_MODERATE; }
    if (lvl == USERDB_PW_SENSITIVE) { ops = crypto_pwhash_OPSLIMIT_SENSITIVE; mem = crypto_pwhash_MEMLIMIT_SENSITIVE; }
    if (sodium_init() < 0) { errno = EIO; return 0; }
    char h[crypto_pwhash_STRBYTES];
    _Static_assert(crypto_pwhash_STRBYTES <= USERDB_HASH_MAX + 1, "hash buffer");
    if (crypto_pwhash_str_alg(h, pass, len, ops, mem, crypto_pwhash_ALG_ARGON2ID13) != 0) {
        errno = ENOMEM;
        return 0;
    }
    memcpy(out, h, sizeof h);
    out[sizeof h - 1] = 0;
    return 1;
}

int userdb_pwverify(const char *hash, const char *pass, size_t len)
{
    if (sodium_init() < 0) { errno = EIO; return -1; }
    if (strncmp(hash, "$argon2id$", 10)) { errno = EINVAL; return -1; }
    return crypto_pwhash_str_verify(hash, pass, len) == 0 ? 1 : 0;
}
