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

/* a decimal number of at most 12 digits at *p, then the character end */
static int cost_field(const char **p, char end, unsigned long long *v)
{
    size_t n = 0;
    *v = 0;
    while (**p >= '0' && **p <= '9' && n < 12) { *v = *v * 10 + (unsigned)(**p - '0'); (*p)++; n++; }
    if (!n || **p != end) return 0;
    (*p)++;
    return 1;
}

int userdb_pwhash_cost_of(const char *hash, enum userdb_pwlevel lvl, unsigned long long *ops, size_t *mem)
{
    unsigned long long m, t, par;
    if (!hash) {
        *ops = crypto_pwhash_OPSLIMIT_INTERACTIVE;
        *mem = crypto_pwhash_MEMLIMIT_INTERACTIVE;
        if (lvl == USERDB_PW_MODERATE) { *ops = crypto_pwhash_OPSLIMIT_MODERATE; *mem = crypto_pwhash_MEMLIMIT_MODERATE; }
        if (lvl == USERDB_PW_SENSITIVE) { *ops = crypto_pwhash_OPSLIMIT_SENSITIVE; *mem = crypto_pwhash_MEMLIMIT_SENSITIVE; }
        return 1;
    }
    const char *p = hash;
    if (strncmp(p, "$argon2id$", 10)) { errno = EINVAL; return 0; }
    p += 10;
    if (!strncmp(p, "v=", 2)) { p += 2; if (!cost_field(&p, '$', &m)) { errno = EINVAL; return 0; } }
    if (strncmp(p, "m=", 2)) { errno = EINVAL; return 0; }
    p += 2;
    if (!cost_field(&p, ',', &m) || strncmp(p, "t=", 2)) { errno = EINVAL; return 0; }
    p += 2;
    if (!cost_field(&p, ',', &t) || strncmp(p, "p=", 2)) { errno = EINVAL; return 0; }
    p += 2;
    if (!cost_field(&p, '$', &par)) { errno = EINVAL; return 0; }
    /* libsodium's own bounds; memlimit in bytes */
    if (t < crypto_pwhash_OPSLIMIT_MIN || t > crypto_pwhash_OPSLIMIT_MAX ||
        m > crypto_pwhash_MEMLIMIT_MAX / 1024 || m * 1024 < crypto_pwhash_MEMLIMIT_MIN) { errno = EINVAL; return 0; }
    *ops = t;
    *mem = (size_t)m * 1024;
    return 1;
}

int userdb_pwhash(char *out, const char *pass, size_t len, enum userdb_pwlevel lvl)
{
    unsigned long long ops;
    size_t mem;
    userdb_pwhash_cost_of(NULL, lvl, &ops, &mem);
    return userdb_pwhash_cost(out, pass, len, ops, mem);
}

int userdb_pwhash_cost(char *out, const char *pass, size_t len, unsigned long long ops, size_t mem)
{
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
