/* check_userdb.c - user names, the users/mailboxes/recipients files, hashing. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "userdb.h"

static const char *canon(const char *s, size_t len, char *out)
{
    const char *why = 0;
    return userdb_name_canon(s, len, out, &why) ? 0 : why;
}

START_TEST(test_names)
{
    char out[USERDB_NAME_MAX + 1];
    ck_assert_ptr_null(canon("alice", 5, out));
    ck_assert_str_eq(out, "alice");
    ck_assert_ptr_null(canon("Alice.B_c-9", 11, out));
    ck_assert_str_eq(out, "alice.b_c-9");
    ck_assert_ptr_nonnull(canon("../x", 4, out));
    ck_assert_str_eq(canon("a/b", 3, out), "user name contains '/'");
    ck_assert_str_eq(canon("a..b", 4, out), "user name contains '..'");
    ck_assert_str_eq(canon("a@b", 3, out), "user name contains '@'");
    ck_assert_str_eq(canon("a:b", 3, out), "user name contains ':'");
    ck_assert_str_eq(canon("a b", 3, out), "user name contains a space");
    ck_assert_str_eq(canon("a\nb", 3, out), "user name contains a control character");
    ck_assert_str_eq(canon("a\0b", 3, out), "user name contains a NUL byte");
    ck_assert_str_eq(canon(".a", 2, out), "user name must start with a letter or a digit");
    ck_assert_ptr_nonnull(canon("a+b", 3, out));
    ck_assert_ptr_nonnull(canon("\xc3\xa9", 2, out));
    ck_assert_str_eq(canon("", 0, out), "user name is empty");
}
END_TEST

START_TEST(test_parse_and_format)
{
    struct userdb db = USERDB_ZERO;
    char err[256];
    const char *text = "# users\n\nalice:20000:20000:/r/mail/alice/Maildir:$argon2id$v=19$m=65536,t=2,p=1$c2FsdA$aGFzaA\n"
                       "bob:20001:20001:/home/bob/Maildir:$argon2id$x\n";
    ck_assert(userdb_parse(&db, "users", text, strlen(text), 1, err, sizeof err));
    ck_assert_uint_eq(db.n, 2);
    struct userdb_entry *e = userdb_find(&db, "bob");
    ck_assert_ptr_nonnull(e);
    ck_assert_uint_eq(e->uid, 20001);
    ck_assert_str_eq(e->maildir, "/home/bob/Maildir");
    struct buf b = BUF_ZERO;
    ck_assert(userdb_format(&db, 0, &b));
    ck_assert_str_eq(b.s, "alice:20000:20000:/r/mail/alice/Maildir\nbob:20001:20001:/home/bob/Maildir\n");
    b.len = 0;
    const char *aliases[] = { "postmaster", "bob", "abuse", "postmaster" };
    ck_assert(userdb_format_recipients(&db, aliases, 4, &b));
    ck_assert(strstr(b.s, "\nalice\nbob\npostmaster\nabuse\n"));
    ck_assert(!strstr(strstr(b.s, "postmaster") + 1, "postmaster"));
    ck_assert(userdb_del(&db, "alice"));
    ck_assert(!userdb_del(&db, "alice"));
    ck_assert_int_eq(errno, ENOENT);
    struct userdb_entry copy = *userdb_find(&db, "bob");
    ck_assert_int_eq(userdb_add(&db, &copy), 0);   /* bob again */
    ck_assert_int_eq(errno, EEXIST);
    buf_free(&b);
    userdb_free(&db);
}
END_TEST

START_TEST(test_bad_lines)
{
    struct userdb db = USERDB_ZERO;
    char err[256];
    static const struct { const char *line; const char *msg; } cases[] = {
        { "alice:0:1:/m:$argon2id$x\n", "users:1: bad uid" },
        { "alice:1:1:m:$argon2id$x\n", "users:1: maildir is not an absolute path" },
        { "Alice:1:1:/m:$argon2id$x\n", "users:1: user name not in lower case" },
        { "alice:1:1:/m:$2y$bcrypt\n", "users:1: password hash is not an argon2id string" },
        { "alice:1:1:/m\n", "users:1: expected name:uid:gid:maildir:hash" },
        { "#\na:1:1:/m:$argon2id$x\na:2:2:/n:$argon2id$y\n", "users:3: duplicate user name" },
        { "alice:1:-1:/m:$argon2id$x\n", "users:1: bad gid" },
        { "alice:4294967296:1:/m:$argon2id$x\n", "users:1: bad uid" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ck_assert(!userdb_parse(&db, "users", cases[i].line, strlen(cases[i].line), 1, err, sizeof err));
        ck_assert_msg(!strncmp(err, cases[i].msg, strlen(cases[i].msg)), "%s", err);
        userdb_free(&db);
    }
    const char *mb = "alice:1:1:/m\n";
    ck_assert(userdb_parse(&db, "mailboxes", mb, strlen(mb), 0, err, sizeof err));
    userdb_free(&db);
}
END_TEST

START_TEST(test_write_and_hash)
{
    char dir[] = "/tmp/check_userdb.XXXXXX", path[64];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/users", dir);
    ck_assert(userdb_write_file(path, "x\n", 2, 0600, (uid_t)-1, (gid_t)-1));
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_uint_eq(st.st_mode & 0777, 0600);
    ck_assert(userdb_write_file(path, "yy\n", 3, 0644, (uid_t)-1, (gid_t)-1));
    struct buf b = BUF_ZERO;
    ck_assert(userdb_read_file(path, 100, &b));
    ck_assert_str_eq(b.s, "yy\n");
    buf_free(&b);
    unlink(path);
    rmdir(dir);
    char h[USERDB_HASH_MAX + 1];
    enum userdb_pwlevel lvl;
    ck_assert(userdb_pwlevel_parse("interactive", &lvl));
    ck_assert(!userdb_pwlevel_parse("fast", &lvl));
    ck_assert(userdb_pwhash(h, "pw", 2, USERDB_PW_INTERACTIVE));
    ck_assert(!strncmp(h, "$argon2id$", 10));
    ck_assert_int_eq(userdb_pwverify(h, "pw", 2), 1);
    ck_assert_int_eq(userdb_pwverify(h, "pW", 2), 0);
    ck_assert_int_eq(userdb_pwverify("$2y$x", "pw", 2), -1);
    struct userdb_entry e;
    const char *why;
    char line[300];
    snprintf(line, sizeof line, "a:20000:20000:/m:%s", h);
    ck_assert(userdb_parse_line(line, strlen(line), 1, &e, &why));
}
END_TEST

START_TEST(test_hash_cost)
{
    unsigned long long ops;
    size_t mem;
    char h[USERDB_HASH_MAX + 1];
    ck_assert(userdb_pwhash_cost_of(NULL, USERDB_PW_MODERATE, &ops, &mem));
    ck_assert_uint_eq(mem, 256u << 20);
    ck_assert(userdb_pwhash(h, "pw", 2, USERDB_PW_INTERACTIVE));
    ck_assert(userdb_pwhash_cost_of(h, USERDB_PW_MODERATE, &ops, &mem));   /* the string's, not the level's */
    ck_assert_uint_eq(mem, 64u << 20);
    ck_assert_uint_eq(ops, 2);
    ck_assert(userdb_pwhash_cost_of("$argon2id$v=19$m=65536,t=3,p=1$c2FsdA$aGFzaA", USERDB_PW_INTERACTIVE, &ops, &mem));
    ck_assert_uint_eq(ops, 3);
    ck_assert(userdb_pwhash_cost_of("$argon2id$m=4096,t=1,p=1$c2FsdA$aGFzaA", USERDB_PW_INTERACTIVE, &ops, &mem));
    ck_assert_uint_eq(mem, 4096u * 1024);
    /* what does not say, or says past libsodium's bounds */
    ck_assert(!userdb_pwhash_cost_of("$argon2i$v=19$m=65536,t=2,p=1$x$y", USERDB_PW_INTERACTIVE, &ops, &mem));
    ck_assert(!userdb_pwhash_cost_of("$argon2id$v=19$m=65536,t=2$x$y", USERDB_PW_INTERACTIVE, &ops, &mem));
    ck_assert(!userdb_pwhash_cost_of("$argon2id$v=19$m=,t=2,p=1$x$y", USERDB_PW_INTERACTIVE, &ops, &mem));
    ck_assert(!userdb_pwhash_cost_of("$argon2id$v=19$m=9999999999999,t=2,p=1$x$y", USERDB_PW_INTERACTIVE, &ops, &mem));
    ck_assert(!userdb_pwhash_cost_of("$argon2id$v=19$m=65536,t=0,p=1$x$y", USERDB_PW_INTERACTIVE, &ops, &mem));
    ck_assert(!userdb_pwhash_cost_of("$argon2id$v=19$m=1,t=2,p=1$x$y", USERDB_PW_INTERACTIVE, &ops, &mem));
    ck_assert(userdb_pwhash_cost(h, "pw", 2, 1, 8u << 20));
    ck_assert_int_eq(userdb_pwverify(h, "pw", 2), 1);
    ck_assert(userdb_pwhash_cost_of(h, USERDB_PW_INTERACTIVE, &ops, &mem));
    ck_assert_uint_eq(mem, 8u << 20);
}
END_TEST

START_TEST(test_name_limits)
{
    char in[200], out[USERDB_NAME_MAX + 1];
    memset(in, 'a', sizeof in);
    ck_assert_ptr_null(canon(in, 64, out));
    ck_assert_uint_eq(strlen(out), 64);
    ck_assert_str_eq(canon(in, 65, out), "user name is longer than 64 characters");
    ck_assert_ptr_nonnull(canon(in, sizeof in, out));
    char big[USERDB_LINE_MAX + 10];
    memset(big, 'a', sizeof big);
    big[sizeof big - 1] = '\n';
    struct userdb db = USERDB_ZERO;
    char err[256];
    ck_assert(!userdb_parse(&db, "users", big, sizeof big, 1, err, sizeof err));
    ck_assert_str_eq(err, "users:1: line too long");
    /* maildir at the limit and over */
    char line[USERDB_PATH_MAX + 100];
    int n = snprintf(line, sizeof line, "a:1:1:/");
    memset(line + n, 'm', USERDB_PATH_MAX - 1);
    struct userdb_entry e;
    const char *why;
    ck_assert(userdb_parse_line(line, (size_t)n + USERDB_PATH_MAX - 1, 0, &e, &why));
    line[n + USERDB_PATH_MAX - 1] = 'm';
    ck_assert(!userdb_parse_line(line, (size_t)n + USERDB_PATH_MAX, 0, &e, &why));
    /* alias names: bad ones skipped */
    const char *al = "postmaster: root\n# c\nBad Name: x\nabuse : root\nno colon\n../x: y\n";
    char **names;
    size_t nn;
    ck_assert(userdb_alias_names(al, strlen(al), &names, &nn));
    ck_assert_uint_eq(nn, 2);
    ck_assert_str_eq(names[0], "postmaster");
    ck_assert_str_eq(names[1], "abuse");
    userdb_alias_names_free(names, nn);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("userdb");
    TCase *core = tcase_create("core");
    tcase_add_test(core, test_names);
    tcase_add_test(core, test_parse_and_format);
    tcase_add_test(core, test_bad_lines);
    tcase_add_test(core, test_write_and_hash);
    suite_add_tcase(s, core);
    TCase *limits = tcase_create("limits");
    tcase_add_test(limits, test_name_limits);
    tcase_add_test(limits, test_hash_cost);
    suite_add_tcase(s, limits);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
