/* fuzz_userdb.c - libFuzzer target: conf/users and conf/mailboxes (the
 * first input byte picks which), user name canonicalisation and the alias
 * names of conf/aliases. An accepted file formats back to text that parses
 * to the same entries. An accepted mailboxes file, as postern-user writes it
 * (userdb_format), must read the same in local-deliverer's own reader
 * (mailboxes_parse / mailboxes_find in lib/aliases.c): every entry found,
 * with its uid, gid and maildir. The conf/recipients postern-user writes
 * from the entries and the input's alias names must load in smtp-listener's
 * reader (smtp_rcptmap_parse) with every name in it. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "aliases.h"
#include "buf.h"
#include "smtp_rcptmap.h"
#include "userdb.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_name(const char *n)
{
    size_t l = strlen(n);
    if (!l || l > USERDB_NAME_MAX || strstr(n, "..")) __builtin_trap();
    for (size_t i = 0; i < l; i++)
        if (!((n[i] >= 'a' && n[i] <= 'z') || (n[i] >= '0' && n[i] <= '9') || n[i] == '.' || n[i] == '_' || n[i] == '-'))
            __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    int with_hash = data[0] & 1;
    const char *s = (const char *)data + 1;
    size_t n = size - 1;
    char err[256];
    struct userdb db = USERDB_ZERO, db2 = USERDB_ZERO;
    err[0] = 0;
    if (userdb_parse(&db, "users", s, n, with_hash, err, sizeof err)) {
        struct buf b = BUF_ZERO, b2 = BUF_ZERO;
        for (size_t i = 0; i < db.n; i++) {
            check_name(db.v[i].name);
            if (userdb_find(&db, db.v[i].name) != &db.v[i]) __builtin_trap();
        }
        if (!userdb_format(&db, with_hash, &b)) __builtin_trap();
        if (!userdb_parse(&db2, "users", b.s ? b.s : "", b.len, with_hash, err, sizeof err)) __builtin_trap();
        if (!userdb_format(&db2, with_hash, &b2) || b.len != b2.len || (b.len && memcmp(b.s, b2.s, b.len)))
            __builtin_trap();
        if (!with_hash) {
            static struct mailboxes t;
            static struct mailbox m;
            char merr[256];
            if (!mailboxes_parse(&t, "mailboxes", b.s ? b.s : "", b.len)) __builtin_trap();
            for (size_t i = 0; i < db.n; i++) {
                const struct userdb_entry *e = &db.v[i];
                if (!mailboxes_find(&t, e->name, &m, merr, sizeof merr) || strcmp(m.name, e->name)
                    || m.uid != e->uid || m.gid != e->gid || strcmp(m.maildir, e->maildir))
                    __builtin_trap();
            }
            mailboxes_free(&t);
        }
        char **an = NULL;
        size_t nan = 0;
        struct buf r = BUF_ZERO;
        struct smtp_rcptmap map;
        smtp_rcptmap_init(&map);
        if (!userdb_alias_names(s, n, &an, &nan) || !userdb_format_recipients(&db, (const char *const *)an, nan, &r)
            || !smtp_rcptmap_parse(&map, "recipients", r.s ? r.s : "", r.len, err, sizeof err))
            __builtin_trap();
        for (size_t i = 0; i < db.n; i++) if (!smtp_rcptmap_has(&map, db.v[i].name)) __builtin_trap();
        for (size_t i = 0; i < nan; i++) if (!smtp_rcptmap_has(&map, an[i])) __builtin_trap();
        smtp_rcptmap_free(&map);
        buf_free(&r);
        userdb_alias_names_free(an, nan);
        if (db.n && !userdb_del(&db, db.v[0].name)) __builtin_trap();
        buf_free(&b);
        buf_free(&b2);
    } else if (!err[0] || !memchr(err, 0, sizeof err)) {
        __builtin_trap();
    }
    userdb_free(&db);
    userdb_free(&db2);

    /* the whole input as a typed user name */
    char canon[USERDB_NAME_MAX + 1];
    const char *why = NULL;
    if (userdb_name_canon(s, n, canon, &why)) check_name(canon);
    else if (!why) __builtin_trap();

    /* and as an aliases file */
    char **names = NULL;
    size_t nn = 0;
    if (userdb_alias_names(s, n, &names, &nn)) {
        for (size_t i = 0; i < nn; i++) if (!names[i]) __builtin_trap();
        userdb_alias_names_free(names, nn);
    }
    return 0;
}
