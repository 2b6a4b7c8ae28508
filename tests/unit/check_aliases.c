/* check_aliases.c - aliases, mailboxes and alias expansion. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "aliases.h"
#include "userdb.h"

static int is_local(void *ctx, const char *d, size_t n)
{
    (void)ctx;
    return (n == 12 && !strncasecmp(d, "example.test", n)) || (n == 9 && !strncasecmp(d, "localhost", n));
}

static struct aliases al;
static char err[256];

static void parse_ok(const char *text)
{
    aliases_init(&al);
    ck_assert_msg(aliases_parse(&al, "aliases", text, strlen(text), err, sizeof err), "%s", err);
}

static void parse_bad(const char *text, const char *want)
{
    aliases_init(&al);
    ck_assert(!aliases_parse(&al, "aliases", text, strlen(text), err, sizeof err));
    ck_assert_msg(strstr(err, want) != NULL, "got %s, want %s", err, want);
    ck_assert_uint_eq(al.n, 0);
}

START_TEST(test_parse)
{
    parse_ok("# comment\n\nPostmaster: root\nabuse:root, Alice@Example.test\n"
             "team: alice,\n  bob carol@other.test\nroot: alice\n");
    ck_assert_uint_eq(al.n, 4);
    const struct alias *a = aliases_find(&al, "postmaster");
    ck_assert_ptr_nonnull(a);
    ck_assert_uint_eq(a->ntarget, 1);
    ck_assert_str_eq(a->target[0], "root");
    a = aliases_find(&al, "team");
    ck_assert_uint_eq(a->ntarget, 3);
    ck_assert_str_eq(a->target[2], "carol@other.test");
    ck_assert_ptr_null(aliases_find(&al, "nobody"));
    aliases_free(&al);
}
END_TEST

/* blank and comment lines are ignored, also inside an entry that goes on
 * over continuation lines (as Postfix's aliases(5) reads them): a member
 * commented out does not end the entry */
START_TEST(test_parse_comment_inside_entry)
{
    parse_ok("staff: alice,\n# bob left\n  carol,\n\n\tdave\n   # erin too\n  frank\nx: y\n");
    const struct alias *a = aliases_find(&al, "staff");
    ck_assert_ptr_nonnull(a);
    ck_assert_uint_eq(a->ntarget, 4);
    ck_assert_str_eq(a->target[0], "alice");
    ck_assert_str_eq(a->target[1], "carol");
    ck_assert_str_eq(a->target[2], "dave");
    ck_assert_str_eq(a->target[3], "frank");
    ck_assert_uint_eq(aliases_find(&al, "x")->ntarget, 1);
    aliases_free(&al);
    parse_bad("# only a comment\n  b\n", "aliases:2: continuation");
}
END_TEST

START_TEST(test_parse_errors)
{
    parse_bad("a: b\nx: |/bin/sh\n", "aliases:2: program");
    parse_bad("x: /etc/passwd\n", "aliases:1: file");
    parse_bad("x: :include:/etc/list\n", ":include:");
    parse_bad("  b\n", "aliases:1: continuation");
    parse_bad("no colon here\n", "aliases:1:");
    parse_bad("a: b\na: c\n", "aliases:2: duplicate");
    parse_bad("z: b\na: c\nb: d\nA: e\n", "aliases:4: duplicate");
    parse_bad("a b: c\n", "aliases:1: invalid character");
    parse_bad("a:\n", "no targets");
    parse_bad("a: @x\n", "malformed");
}
END_TEST

START_TEST(test_local_name)
{
    char n[ALIAS_NAME_MAX + 1];
    ck_assert_int_eq(alias_local_name("Alice+Lists@EXAMPLE.test", is_local, NULL, n, sizeof n), 1);
    ck_assert_str_eq(n, "alice");
    ck_assert_int_eq(alias_local_name("postmaster", is_local, NULL, n, sizeof n), 1);
    ck_assert_str_eq(n, "postmaster");
    ck_assert_int_eq(alias_local_name("bob@remote.test", is_local, NULL, n, sizeof n), 0);
    ck_assert_int_eq(alias_local_name("a%b@example.test", is_local, NULL, n, sizeof n), -1);
    ck_assert_int_eq(alias_local_name("../x@example.test", is_local, NULL, n, sizeof n), -1);
    ck_assert_int_eq(alias_local_name("\"q\"@example.test", is_local, NULL, n, sizeof n), -1);
    ck_assert_int_eq(alias_local_name("@example.test", is_local, NULL, n, sizeof n), -1);
    ck_assert_int_eq(alias_local_name("a@", is_local, NULL, n, sizeof n), -1);
    /* a UTF-8 detail (SMTPUTF8) is dropped like any other; the name stays ASCII */
    ck_assert_int_eq(alias_local_name("alice+\xc3\xa9t\xc3\xa9@example.test", is_local, NULL, n, sizeof n), 1);
    ck_assert_str_eq(n, "alice");
    ck_assert_int_eq(alias_local_name("alice+a/b@example.test", is_local, NULL, n, sizeof n), 1);
    ck_assert_int_eq(alias_local_name("al\xc3\xa9@example.test", is_local, NULL, n, sizeof n), -1);
    ck_assert_int_eq(alias_local_name("a/b+c@example.test", is_local, NULL, n, sizeof n), -1);
    ck_assert_int_eq(alias_local_name("alice+a%b@example.test", is_local, NULL, n, sizeof n), -1);
    ck_assert_int_eq(alias_local_name("alice+\x7f@example.test", is_local, NULL, n, sizeof n), -1);
    ck_assert_int_eq(alias_local_name("+x@example.test", is_local, NULL, n, sizeof n), 1);
    ck_assert_str_eq(n, "+x");
    /* a detail may take the local part past ALIAS_NAME_MAX (VERP tags); the
     * name itself may not */
    char a[300];
    memset(a, 'x', sizeof a);
    memcpy(a, "alice+", 6);
    memcpy(a + 200, "@example.test", 14);
    ck_assert_int_eq(alias_local_name(a, is_local, NULL, n, sizeof n), 1);
    ck_assert_str_eq(n, "alice");
    memset(a, 'n', ALIAS_NAME_MAX + 1);
    memcpy(a + ALIAS_NAME_MAX + 1, "+d@example.test", 16);
    ck_assert_int_eq(alias_local_name(a, is_local, NULL, n, sizeof n), -1);
    a[ALIAS_NAME_MAX] = '+';
    ck_assert_int_eq(alias_local_name(a, is_local, NULL, n, sizeof n), 1);
    ck_assert_uint_eq(strlen(n), ALIAS_NAME_MAX);
}
END_TEST

/* an alias name with a '+' is found as a whole before the detail is cut */
START_TEST(test_local_name_whole_alias)
{
    char n[ALIAS_NAME_MAX + 1];
    struct alias_expansion x;
    parse_ok("bob+lists: alice\nall: Bob+Lists, bob+other\n");
    ck_assert_int_eq(aliases_local_name(&al, "BOB+Lists@example.test", is_local, NULL, n, sizeof n), 1);
    ck_assert_str_eq(n, "bob+lists");
    ck_assert_int_eq(aliases_local_name(&al, "bob+x@example.test", is_local, NULL, n, sizeof n), 1);
    ck_assert_str_eq(n, "bob");
    ck_assert_int_eq(aliases_local_name(&al, "bob+l\xc3\xa9@example.test", is_local, NULL, n, sizeof n), 1);
    ck_assert_str_eq(n, "bob");
    ck_assert_int_eq(aliases_local_name(&al, "bob+lists@far.test", is_local, NULL, n, sizeof n), 0);
    char big[200];                  /* too long for an alias name as a whole */
    memset(big, 'l', sizeof big);
    memcpy(big, "bob+lists", 9);
    memcpy(big + 150, "@example.test", 14);
    char wide[300];                 /* a caller's buffer wider than a name */
    ck_assert_int_eq(aliases_local_name(&al, big, is_local, NULL, wide, sizeof wide), 1);
    ck_assert_str_eq(wide, "bob");
    ck_assert(aliases_expand(&al, "all", is_local, NULL, &x));
    ck_assert_uint_eq(x.nlocal, 2);
    ck_assert_str_eq(x.local[0], "alice");
    ck_assert_str_eq(x.local[1], "bob");
    alias_expansion_free(&x);
    aliases_free(&al);
}
END_TEST

START_TEST(test_expand)
{
    struct alias_expansion x;
    parse_ok("postmaster: root\nroot: alice\nteam: alice, bob@example.test, carol@other.test, alice\n"
             "keep: keep, keep@far.test\n");
    ck_assert(aliases_expand(&al, "postmaster", is_local, NULL, &x));
    ck_assert_uint_eq(x.nlocal, 1);
    ck_assert_str_eq(x.local[0], "alice");
    ck_assert_uint_eq(x.nremote, 0);
    alias_expansion_free(&x);
    ck_assert(aliases_expand(&al, "team", is_local, NULL, &x));
    ck_assert_uint_eq(x.nlocal, 2);           /* alice once */
    ck_assert_str_eq(x.local[1], "bob");
    ck_assert_uint_eq(x.nremote, 1);
    ck_assert_str_eq(x.remote[0], "carol@other.test");
    alias_expansion_free(&x);
    /* not an alias: itself */
    ck_assert(aliases_expand(&al, "dave", is_local, NULL, &x));
    ck_assert_uint_eq(x.nlocal, 1);
    ck_assert_str_eq(x.local[0], "dave");
    alias_expansion_free(&x);
    /* an alias naming itself: its own mailbox plus the rest */
    ck_assert(aliases_expand(&al, "keep", is_local, NULL, &x));
    ck_assert_uint_eq(x.nlocal, 1);
    ck_assert_str_eq(x.local[0], "keep");
    ck_assert_uint_eq(x.nremote, 1);
    alias_expansion_free(&x);
    aliases_free(&al);
}
END_TEST

START_TEST(test_expand_loop)
{
    struct alias_expansion x;
    parse_ok("a: b\nb: c@example.test\nc: a\n");
    ck_assert(!aliases_expand(&al, "a", is_local, NULL, &x));
    ck_assert_int_eq(errno, ELOOP);
    ck_assert_ptr_null(x.local);
    aliases_free(&al);
}
END_TEST

/* conf/aliases of the source tree (the documented example, installed to
 * PREFIX/share/postern): the real parser takes it, and it has the two names
 * every ROOT needs.  The tests run from the top of the source tree (make unit). */
START_TEST(test_example_file)
{
    ck_assert_msg(access("conf/aliases", R_OK) == 0, "conf/aliases: %s (run from the source tree: make unit)",
                  strerror(errno));
    aliases_init(&al);
    ck_assert_msg(aliases_load(&al, "conf/aliases", err, sizeof err), "%s", err);
    ck_assert_ptr_nonnull(aliases_find(&al, "postmaster"));
    ck_assert_ptr_nonnull(aliases_find(&al, "abuse"));
    aliases_free(&al);
}
END_TEST

START_TEST(test_mailboxes)
{
    char path[] = "/tmp/check_mbox_XXXXXX";
    struct mailboxes t;
    struct mailbox m;
    int fd = mkstemp(path);
    static const char text[] = "# users\nzed:20009:20009:/m/zed\nalice:20000:20001:/srv/mail/alice/Maildir\n"
                               "bob:20002:20002:/m/bob\ncarl:x:1:/m/carl\nbob:20003:20003:/m/bob2\n"
                               "dan:1:1\n";
    ck_assert_int_eq(write(fd, text, sizeof text - 1), (ssize_t)sizeof text - 1);
    close(fd);
    mailboxes_init(&t);
    ck_assert_msg(mailboxes_load(&t, path, err, sizeof err), "%s", err);
    ck_assert(mailboxes_find(&t, "alice", &m, err, sizeof err));
    ck_assert_uint_eq(m.uid, 20000);
    ck_assert_uint_eq(m.gid, 20001);
    ck_assert_str_eq(m.maildir, "/srv/mail/alice/Maildir");
    ck_assert_str_eq(m.name, "alice");
    ck_assert(mailboxes_find(&t, "zed", &m, err, sizeof err));     /* sorted, not file order */
    ck_assert_str_eq(m.maildir, "/m/zed");
    ck_assert(mailboxes_find(&t, "bob", &m, err, sizeof err));     /* a name twice: its first line */
    ck_assert_uint_eq(m.uid, 20002);
    ck_assert(!mailboxes_find(&t, "carol", &m, err, sizeof err));
    ck_assert_int_eq(errno, ENOENT);
    ck_assert(!mailboxes_find(&t, "ali", &m, err, sizeof err));   /* no prefix match */
    ck_assert_int_eq(errno, ENOENT);
    ck_assert(!mailboxes_find(&t, "", &m, err, sizeof err));
    ck_assert_int_eq(errno, ENOENT);
    /* a malformed line fails its own name, with file:line, and nobody else */
    ck_assert(!mailboxes_find(&t, "carl", &m, err, sizeof err));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_msg(strstr(err, ":5: expected name:uid:gid:/maildir") != NULL, "%s", err);
    ck_assert(!mailboxes_find(&t, "dan", &m, err, sizeof err));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_msg(strstr(err, ":7: ") != NULL, "%s", err);
    mailboxes_free(&t);
    unlink(path);
    ck_assert(!mailboxes_load(&t, path, err, sizeof err));
    ck_assert_int_eq(errno, ENOENT);        /* the caller defers: a missing table is trouble, not "no user" */
    ck_assert_uint_eq(t.n, 0);
}
END_TEST

/* what postern-user writes (userdb_format) local-deliverer reads: uids and
 * gids from 2^31 up too (--unix-account takes any account's), to the last
 * valid one; (uid_t)-1 is none */
START_TEST(test_mailboxes_large_ids)
{
    struct userdb db = USERDB_ZERO;
    struct buf b = BUF_ZERO;
    struct mailboxes t;
    struct mailbox m;
    static const char text[] = "big:4000020001:4000020002:/m/big\nmax:4294967294:2147483648:/m/max\n";
    ck_assert_msg(userdb_parse(&db, "mailboxes", text, sizeof text - 1, 0, err, sizeof err), "%s", err);
    ck_assert(userdb_format(&db, 0, &b));
    mailboxes_init(&t);
    ck_assert(mailboxes_parse(&t, "mailboxes", b.s, b.len));
    ck_assert_msg(mailboxes_find(&t, "big", &m, err, sizeof err), "%s", err);
    ck_assert_uint_eq(m.uid, 4000020001u);
    ck_assert_uint_eq(m.gid, 4000020002u);
    ck_assert_msg(mailboxes_find(&t, "max", &m, err, sizeof err), "%s", err);
    ck_assert_uint_eq(m.uid, 4294967294u);
    ck_assert_uint_eq(m.gid, 2147483648u);
    static const char bad[] = "neg:4294967295:1:/m/neg\nneg2:1:4294967295:/m/neg2\n";
    ck_assert(mailboxes_parse(&t, "mailboxes", bad, sizeof bad - 1));
    ck_assert(!mailboxes_find(&t, "neg", &m, err, sizeof err));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert(!mailboxes_find(&t, "neg2", &m, err, sizeof err));
    ck_assert_int_eq(errno, EINVAL);
    mailboxes_free(&t);
    buf_free(&b);
    userdb_free(&db);
}
END_TEST

START_TEST(test_limits_mailboxes)
{
    /* many users: each found, in a file far from sorted */
    enum { N = 20000 };
    struct mailboxes t;
    struct mailbox m;
    char *text = malloc((size_t)N * 48);
    size_t n = 0;
    ck_assert_ptr_nonnull(text);
    for (int i = N - 1; i >= 0; i--)
        n += (size_t)snprintf(text + n, 48, "u%d:%d:%d:/m/u%d\n", (i * 7919) % N, 30000 + i, 30000 + i, i);
    mailboxes_init(&t);
    ck_assert(mailboxes_parse(&t, "mailboxes", text, n));
    ck_assert_uint_eq(t.n, N);
    for (int i = 0; i < N; i++) {
        char name[16];
        snprintf(name, sizeof name, "u%d", (i * 7919) % N);
        ck_assert_msg(mailboxes_find(&t, name, &m, err, sizeof err), "%s", name);
        ck_assert_uint_eq(m.uid, 30000 + i);
    }
    mailboxes_free(&t);
    /* a name longer than ALIAS_NAME_MAX is no entry; a maildir too long is a bad one */
    char line[MAILBOX_PATH_MAX + 200];
    memset(line, 'n', ALIAS_NAME_MAX + 1);
    n = ALIAS_NAME_MAX + 1;
    n += (size_t)snprintf(line + n, sizeof line - n, ":1:1:/m\nlong:1:1:/");
    memset(line + n, 'd', MAILBOX_PATH_MAX);
    n += MAILBOX_PATH_MAX;
    line[n++] = '\n';
    ck_assert(mailboxes_parse(&t, "mailboxes", line, n));
    ck_assert_uint_eq(t.n, 1);
    ck_assert(!mailboxes_find(&t, "long", &m, err, sizeof err));
    ck_assert_int_eq(errno, EINVAL);
    mailboxes_free(&t);
    free(text);
}
END_TEST

START_TEST(test_limits_depth_and_size)
{
    struct alias_expansion x;
    struct buf { char s[8192]; size_t n; } b = { "", 0 };
    /* a chain of ALIAS_DEPTH_MAX aliases expands; one more is refused */
    for (int i = 0; i < ALIAS_DEPTH_MAX; i++)
        b.n += (size_t)snprintf(b.s + b.n, sizeof b.s - b.n, "a%d: a%d\n", i, i + 1);
    parse_ok(b.s);
    ck_assert(aliases_expand(&al, "a0", is_local, NULL, &x));
    ck_assert_str_eq(x.local[0], "a10");
    alias_expansion_free(&x);
    aliases_free(&al);
    b.n += (size_t)snprintf(b.s + b.n, sizeof b.s - b.n, "a%d: a%d\n", ALIAS_DEPTH_MAX, ALIAS_DEPTH_MAX + 1);
    parse_ok(b.s);
    ck_assert(!aliases_expand(&al, "a0", is_local, NULL, &x));
    ck_assert_int_eq(errno, ELOOP);
    aliases_free(&al);
    /* names and targets are bounded */
    char line[600];
    memset(line, 'n', ALIAS_NAME_MAX + 1);
    snprintf(line + ALIAS_NAME_MAX + 1, sizeof line - ALIAS_NAME_MAX - 1, ": x\n");
    parse_bad(line, "length");
    memcpy(line, "x: ", 3);
    memset(line + 3, 't', ALIAS_TARGET_MAX + 1);
    snprintf(line + 3 + ALIAS_TARGET_MAX + 1, 8, "\n");
    parse_bad(line, "too long");
    /* too many addresses in one expansion */
    char *big = malloc(2 * 1024 * 1024);
    size_t n = (size_t)snprintf(big, 64, "big:");
    for (int i = 0; i <= ALIAS_TARGETS_MAX; i++) n += (size_t)snprintf(big + n, 64, " u%d@far.test", i);
    snprintf(big + n, 4, "\n");
    aliases_init(&al);
    ck_assert(!aliases_parse(&al, "aliases", big, strlen(big), err, sizeof err));
    ck_assert_ptr_nonnull(strstr(err, "too many"));
    free(big);
    /* NUL in the file */
    aliases_init(&al);
    ck_assert(!aliases_parse(&al, "aliases", "a: b\0c\n", 7, err, sizeof err));
}
END_TEST

START_TEST(test_limits_many_aliases)
{
    /* many aliases in reverse order: each found, each expands to its target */
    enum { N = 20000 };
    struct alias_expansion x;
    char *text = malloc((size_t)N * 32);
    size_t n = 0;
    ck_assert_ptr_nonnull(text);
    for (int i = N - 1; i >= 0; i--) n += (size_t)snprintf(text + n, 32, "a%d: u%d\n", i, i);
    aliases_init(&al);
    ck_assert_msg(aliases_parse(&al, "aliases", text, n, err, sizeof err), "%s", err);
    ck_assert_uint_eq(al.n, N);
    for (int i = 0; i < N; i += 997) {
        char name[16], want[16];
        snprintf(name, sizeof name, "a%d", i);
        snprintf(want, sizeof want, "u%d", i);
        ck_assert(aliases_expand(&al, name, is_local, NULL, &x));
        ck_assert_uint_eq(x.nlocal, 1);
        ck_assert_str_eq(x.local[0], want);
        alias_expansion_free(&x);
    }
    aliases_free(&al);
    free(text);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("aliases");
    TCase *core = tcase_create("core");
    tcase_add_test(core, test_parse);
    tcase_add_test(core, test_parse_comment_inside_entry);
    tcase_add_test(core, test_parse_errors);
    tcase_add_test(core, test_local_name);
    tcase_add_test(core, test_local_name_whole_alias);
    tcase_add_test(core, test_expand);
    tcase_add_test(core, test_expand_loop);
    tcase_add_test(core, test_mailboxes);
    tcase_add_test(core, test_mailboxes_large_ids);
    tcase_add_test(core, test_example_file);
    suite_add_tcase(s, core);
    TCase *limits = tcase_create("limits");
    tcase_add_test(limits, test_limits_depth_and_size);
    tcase_add_test(limits, test_limits_mailboxes);
    tcase_add_test(limits, test_limits_many_aliases);
    suite_add_tcase(s, limits);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
