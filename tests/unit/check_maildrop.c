/* check_maildrop.c - a Maildir as a POP3 maildrop: sizes, UIDLs, RETR/TOP
 * output, locking, UPDATE. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "maildrop.h"

/* fsync, failing with EIO while fsync_fails (this program's own, which
 * maildrop.c's calls reach: a disk that lost a write) */
static int fsync_fails;
int fsync(int fd)
{
    if (fsync_fails) { errno = EIO; return -1; }
    return (int)syscall(SYS_fsync, fd);
}

static char dir[64];
static int dirfd_;

static void put(const char *sub, const char *name, const char *text, size_t len)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s/%s", dir, sub, name);
    FILE *f = fopen(p, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(text, 1, len, f), len);
    fclose(f);
}
#define PUT(sub, name, lit) put(sub, name, lit, sizeof lit - 1)

static void setup(void)
{
    char p[128];
    snprintf(dir, sizeof dir, "/tmp/check_maildrop.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    const char *subs[] = { "tmp", "new", "cur" };
    for (int i = 0; i < 3; i++) { snprintf(p, sizeof p, "%s/%s", dir, subs[i]); ck_assert_int_eq(mkdir(p, 0700), 0); }
    dirfd_ = open(dir, O_RDONLY | O_DIRECTORY);
    ck_assert_int_ge(dirfd_, 0);
}

static void teardown(void)
{
    char cmd[128];
    close(dirfd_);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
}

/* what maildrop_send_fd writes for text, as a string */
static char *render(const char *text, size_t len, long long top)
{
    static char out[8192];
    FILE *in = tmpfile(), *o = tmpfile();
    fwrite(text, 1, len, in);
    fflush(in);
    lseek(fileno(in), 0, SEEK_SET);
    unsigned char mem[16];   /* a tiny output buffer: many flushes */
    struct io io;
    io_init(&io, fileno(o), mem, sizeof mem, 1000);
    ck_assert(maildrop_send_fd(fileno(in), top, &io));
    ck_assert(io_flush(&io));
    lseek(fileno(o), 0, SEEK_SET);
    ssize_t n = read(fileno(o), out, sizeof out - 1);
    ck_assert_int_ge(n, 0);
    out[n] = 0;
    fclose(in);
    fclose(o);
    return out;
}

static unsigned long long size_of(const char *text, size_t len)
{
    FILE *in = tmpfile();
    fwrite(text, 1, len, in);
    fflush(in);
    lseek(fileno(in), 0, SEEK_SET);
    unsigned long long s;
    ck_assert(maildrop_size_fd(fileno(in), &s));
    fclose(in);
    return s;
}
#define SIZE(lit) size_of(lit, sizeof lit - 1)
#define RENDER(lit, top) render(lit, sizeof lit - 1, top)

START_TEST(test_sizes_and_rendering)
{
    ck_assert_uint_eq(SIZE("a\nb\n"), 6);
    ck_assert_uint_eq(SIZE("a\r\nb\r\n"), 6);
    ck_assert_uint_eq(SIZE("a\nb"), 6);             /* a final CRLF is added */
    ck_assert_uint_eq(SIZE(""), 0);
    ck_assert_str_eq(RENDER("a\nb\n", -1), "a\r\nb\r\n.\r\n");
    ck_assert_str_eq(RENDER("a\r\nb", -1), "a\r\nb\r\n.\r\n");
    ck_assert_str_eq(RENDER(".\n..x\nx.\n", -1), "..\r\n...x\r\nx.\r\n.\r\n");
    ck_assert_str_eq(RENDER("", -1), ".\r\n");
    /* every rendering is size + stuffing + ".\r\n" */
    const char *t = "H: 1\n\n.a\nb\r\nc";
    ck_assert_uint_eq(strlen(render(t, strlen(t), -1)), size_of(t, strlen(t)) + 1 + 3);
}
END_TEST

START_TEST(test_top)
{
    const char m[] = "A: 1\nB: 2\n\nl1\n.l2\nl3\n";
    ck_assert_str_eq(RENDER(m, 0), "A: 1\r\nB: 2\r\n\r\n.\r\n");
    ck_assert_str_eq(RENDER(m, 2), "A: 1\r\nB: 2\r\n\r\nl1\r\n..l2\r\n.\r\n");
    ck_assert_str_eq(RENDER(m, 99), "A: 1\r\nB: 2\r\n\r\nl1\r\n..l2\r\nl3\r\n.\r\n");
    ck_assert_str_eq(RENDER("A: 1\r\n\r\nbody\r\n", 0), "A: 1\r\n\r\n.\r\n");
    ck_assert_str_eq(RENDER("A: 1\nno body", 0), "A: 1\r\nno body\r\n.\r\n");
}
END_TEST

START_TEST(test_scan_uidl_update)
{
    PUT("new", "200.b", "B\n");
    PUT("cur", "100.a:2,S", "A\n");
    PUT("new", ".hidden", "x\n");
    char weird[300];
    memset(weird, 'w', 100);
    weird[100] = 0;
    PUT("new", "3\x7f", "odd\n");
    put("new", weird, "long\n", 5);
    struct maildrop md;
    ck_assert(maildrop_open(&md, dirfd_));
    ck_assert_uint_eq(md.n, 4);
    /* delivery order: the leading times as numbers (3 < 100 < 200), names
     * without one last */
    ck_assert_str_eq(md.msg[0].name, "3\x7f");
    ck_assert_str_eq(md.msg[1].uidl, "100.a");
    ck_assert_str_eq(md.msg[2].uidl, "200.b");
    ck_assert_uint_eq(md.msg[2].size, 3);
    ck_assert_str_eq(md.msg[3].name, weird);
    for (size_t i = 0; i < 4; i += 3) {                   /* bad names get a hash UIDL */
        ck_assert_uint_eq(strlen(md.msg[i].uidl), 17);
        ck_assert_int_eq(md.msg[i].uidl[0], 'h');
    }
    size_t n;
    unsigned long long o;
    md.msg[1].deleted = 1;
    maildrop_stat(&md, &n, &o);
    ck_assert_uint_eq(n, 3);
    md.msg[2].retrieved = 1;
    size_t failed;
    ck_assert(maildrop_update(&md, &failed));
    maildrop_close(&md);
    char p[512];
    snprintf(p, sizeof p, "%s/cur/100.a:2,S", dir);
    ck_assert_int_ne(access(p, F_OK), 0);                  /* deleted */
    snprintf(p, sizeof p, "%s/cur/200.b:2,S", dir);
    ck_assert_int_eq(access(p, F_OK), 0);                  /* moved, seen */
    ck_assert(maildrop_open(&md, dirfd_));
    ck_assert_uint_eq(md.n, 3);
    ck_assert_str_eq(md.msg[1].uidl, "200.b");             /* same UIDL after the move */
    maildrop_close(&md);
    /* a Maildir++ ",W=" size is taken from the name (7: not what counting
     * gives, 5, but one a 4-octet file could have); ",W=" after ':' is not */
    PUT("new", "300.c,S=4,W=7", "xyz\n");
    PUT("new", "301.d:2,W=99", "xyz\n");
    PUT("new", "302.e,W=x", "xyz\n");
    ck_assert(maildrop_open(&md, dirfd_));
    ck_assert_uint_eq(md.n, 6);
    ck_assert_str_eq(md.msg[2].uidl, "300.c,S=4,W=7");
    ck_assert_uint_eq(md.msg[2].size, 7);
    ck_assert_uint_eq(md.msg[3].size, 5);
    ck_assert_uint_eq(md.msg[4].size, 5);
    maildrop_close(&md);
}
END_TEST

/* 1 if dir/sub/name exists */
static int exists(const char *sub, const char *name)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s/%s", dir, sub, name);
    return access(p, F_OK) == 0;
}

START_TEST(test_retrieved_marked_seen_in_cur)
{
    /* RETR marks a message seen (S) on QUIT wherever it is, as Dovecot
     * does: one already in cur/ (listed by an earlier session, or read by
     * a local mail program) as well as one moved from new/. Its other
     * flags stay, in ASCII order; TOP alone marks nothing */
    struct maildrop md;
    size_t failed;
    PUT("cur", "100.a:2,", "A\n");          /* listed before, never read */
    PUT("cur", "200.b:2,FR", "B\n");        /* flagged, replied */
    PUT("cur", "300.c:2,Fa", "C\n");        /* a Dovecot keyword (a) */
    PUT("cur", "400.d:2,RS", "D\n");        /* seen already */
    PUT("cur", "500.e:2,", "E\n");          /* only TOP'd */
    PUT("new", "600.f:2,F", "F\n");         /* in new/ with flags */
    PUT("cur", "700.g", "G\n");             /* in cur/ without an info part */
    PUT("new", "800.h", "H\n");             /* moved to cur/ by mutt after RETR */
    ck_assert(maildrop_open(&md, dirfd_));
    ck_assert_uint_eq(md.n, 8);
    for (size_t i = 0; i < 8; i++) if (i != 4) md.msg[i].retrieved = 1;
    char a[512], b[512];
    snprintf(a, sizeof a, "%s/new/800.h", dir);
    snprintf(b, sizeof b, "%s/cur/800.h:2,R", dir);
    ck_assert_int_eq(rename(a, b), 0);
    ck_assert(maildrop_update(&md, &failed));
    maildrop_close(&md);
    ck_assert(exists("cur", "100.a:2,S"));
    ck_assert(exists("cur", "200.b:2,FRS"));
    ck_assert(exists("cur", "300.c:2,FSa"));
    ck_assert(exists("cur", "400.d:2,RS"));
    ck_assert(exists("cur", "500.e:2,"));
    ck_assert(exists("cur", "600.f:2,FS"));
    ck_assert(exists("cur", "700.g:2,S"));
    ck_assert(exists("cur", "800.h:2,RS"));
    ck_assert(maildrop_open(&md, dirfd_));
    ck_assert_uint_eq(md.n, 8);                            /* nothing lost or doubled */
    ck_assert_str_eq(md.msg[0].uidl, "100.a");             /* the UIDLs stay */
    ck_assert_str_eq(md.msg[7].uidl, "800.h");
    maildrop_close(&md);
}
END_TEST

START_TEST(test_impossible_name_size_counted)
{
    /* a ",W=" that no file of its length can have (fewer octets than the
     * file, more than twice them and a line end; anything but 0 for an
     * empty file) is a name made by hand or put on other content: the
     * file is counted, so that LIST and RETR announce what RETR sends
     * (Dovecot, side by side, sent a 43-octet message as "+OK 5 octets"
     * and a blank line) */
    struct maildrop md;
    PUT("new", "100.a,S=5,W=5", "Subject: wrong W\n\nthis is longer than five\n");
    PUT("new", "101.b,W=900", "Subject: W too big\n\nshort\n");
    PUT("new", "102.c,W=2", "");
    PUT("new", "103.d,W=0", "");
    PUT("new", "104.e,W=3", "x");                      /* 1 octet: 1..3 possible */
    PUT("new", "105.f,W=4", "x");                      /* not */
    ck_assert(maildrop_open(&md, dirfd_));
    ck_assert_uint_eq(md.n, 6);
    ck_assert_uint_eq(md.msg[0].size, 46);
    ck_assert_uint_eq(md.msg[1].size, 29);
    ck_assert_uint_eq(md.msg[2].size, 0);
    ck_assert_uint_eq(md.msg[3].size, 0);
    ck_assert_uint_eq(md.msg[4].size, 3);
    ck_assert_uint_eq(md.msg[5].size, 3);
    ck_assert_str_eq(md.msg[0].uidl, "100.a,S=5,W=5");   /* the UIDL is the name's still */
    maildrop_close(&md);
}
END_TEST

START_TEST(test_skips_what_is_not_a_message)
{
    /* only regular files count: a symlink (even to a message), a FIFO (which
     * must not block the scan) and a directory are passed over */
    char p[512], t[512];
    struct maildrop md;
    PUT("new", "100.a", "A\r\nB\n");                 /* no size in the name: counted with CRLF, 6 */
    PUT("cur", "101.b,S=1,W=2:2,S", "x");              /* the name's W= is believed (counted: 3) */
    snprintf(t, sizeof t, "%s/new/100.a", dir);
    snprintf(p, sizeof p, "%s/new/102.link", dir);
    ck_assert_int_eq(symlink(t, p), 0);
    snprintf(p, sizeof p, "%s/new/103.fifo", dir);
    ck_assert_int_eq(mkfifo(p, 0600), 0);
    snprintf(p, sizeof p, "%s/cur/104.dir", dir);
    ck_assert_int_eq(mkdir(p, 0700), 0);
    ck_assert(maildrop_open(&md, dirfd_));
    ck_assert_uint_eq(md.n, 2);
    ck_assert_str_eq(md.msg[0].name, "100.a");
    ck_assert_uint_eq(md.msg[0].size, 6);
    ck_assert_str_eq(md.msg[1].uidl, "101.b,S=1,W=2");
    ck_assert_uint_eq(md.msg[1].size, 2);
    maildrop_close(&md);
}
END_TEST

/* the contents of dir/sub/name ("" if it is not there) */
static const char *slurp(const char *sub, const char *name)
{
    static char b[256];
    char p[512];
    snprintf(p, sizeof p, "%s/%s/%s", dir, sub, name);
    b[0] = 0;
    FILE *f = fopen(p, "rb");
    if (!f) return b;
    size_t n = fread(b, 1, sizeof b - 1, f);
    b[n] = 0;
    fclose(f);
    return b;
}

START_TEST(test_same_base_name_twice)
{
    /* new/100.a and cur/100.a:2, (a restore, a copy, a crash between link
     * and unlink): two messages, two UIDLs (RFC 1939: unique), kept in the
     * next session; the UPDATE's move of the one in new/ to cur/ overwrites
     * nothing */
    struct maildrop md;
    size_t failed;
    char uidl[2][MAILDROP_UIDL_MAX + 1];
    PUT("new", "100.a", "A\n");
    PUT("cur", "100.a:2,", "B\n");
    PUT("cur", "200.b:2,S", "C\n");
    ck_assert(maildrop_open(&md, dirfd_));
    ck_assert_uint_eq(md.n, 3);
    ck_assert_str_ne(md.msg[0].uidl, md.msg[1].uidl);
    ck_assert_str_eq(md.msg[2].uidl, "200.b");
    memcpy(uidl[0], md.msg[0].uidl, sizeof uidl[0]);
    memcpy(uidl[1], md.msg[1].uidl, sizeof uidl[1]);
    ck_assert(maildrop_update(&md, &failed));
    maildrop_close(&md);
    ck_assert(maildrop_open(&md, dirfd_));
    ck_assert_uint_eq(md.n, 3);
    ck_assert_str_eq(md.msg[0].uidl, uidl[0]);
    ck_assert_str_eq(md.msg[1].uidl, uidl[1]);
    int a = 0, b = 0;
    for (size_t i = 0; i < 2; i++) {
        const char *t = slurp(md.msg[i].in_new ? "new" : "cur", md.msg[i].name);
        a += !strcmp(t, "A\n");
        b += !strcmp(t, "B\n");
    }
    ck_assert_int_eq(a, 1);
    ck_assert_int_eq(b, 1);
    maildrop_close(&md);
}
END_TEST

START_TEST(test_update_overwrites_nothing)
{
    /* a file that appears in cur/ under the name the UPDATE would give a
     * message stays; the message keeps its place instead */
    struct maildrop md;
    size_t failed;
    PUT("new", "100.a", "A\n");
    PUT("cur", "200.b:2,", "B\n");
    ck_assert(maildrop_open(&md, dirfd_));
    ck_assert_uint_eq(md.n, 2);
    md.msg[1].retrieved = 1;
    PUT("cur", "100.a:2,", "other\n");
    PUT("cur", "200.b:2,S", "other too\n");
    ck_assert(maildrop_update(&md, &failed));
    maildrop_close(&md);
    ck_assert_str_eq(slurp("new", "100.a"), "A\n");
    ck_assert_str_eq(slurp("cur", "100.a:2,"), "other\n");
    ck_assert_str_eq(slurp("cur", "200.b:2,"), "B\n");
    ck_assert_str_eq(slurp("cur", "200.b:2,S"), "other too\n");
}
END_TEST

START_TEST(test_two_names_of_one_file)
{
    /* new/100.a and cur/100.a:2,S, one file: an UPDATE's move (link into
     * cur/, fsync, unlink from new/) cut by a crash or kill -9 between its
     * link and its unlink. One message, the name in new/ removed */
    struct maildrop md;
    char a[512], b[512];
    PUT("cur", "100.a:2,S", "A\n");
    PUT("new", "200.b", "B\n");
    snprintf(a, sizeof a, "%s/cur/100.a:2,S", dir);
    snprintf(b, sizeof b, "%s/new/100.a", dir);
    ck_assert_int_eq(link(a, b), 0);
    ck_assert(maildrop_open(&md, dirfd_));
    ck_assert_uint_eq(md.n, 2);
    ck_assert_str_eq(md.msg[0].name, "100.a:2,S");
    ck_assert_int_eq(md.msg[0].in_new, 0);
    ck_assert_str_eq(md.msg[0].uidl, "100.a");
    ck_assert_str_eq(md.msg[1].uidl, "200.b");
    ck_assert_int_ne(access(b, F_OK), 0);
    ck_assert_int_eq(access(a, F_OK), 0);
    maildrop_close(&md);
}
END_TEST

START_TEST(test_update_not_durable)
{
    /* an fsync fails (EIO): the UPDATE says so (0, no deletion failed), and
     * a message it was moving keeps its name in new/ beside the new one
     * in cur/, as the link was not known durable; the next open sees one
     * message */
    struct maildrop md;
    size_t failed;
    PUT("new", "100.a", "A\n");
    PUT("new", "200.b", "B\n");
    PUT("cur", "300.c:2,", "C\n");
    ck_assert(maildrop_open(&md, dirfd_));
    md.msg[1].deleted = 1;
    md.msg[2].retrieved = 1;
    fsync_fails = 1;
    ck_assert(!maildrop_update(&md, &failed));
    fsync_fails = 0;
    ck_assert_uint_eq(failed, 0);
    maildrop_close(&md);
    ck_assert(exists("new", "100.a"));
    ck_assert(exists("cur", "100.a:2,"));
    ck_assert(!exists("new", "200.b"));                   /* the deletion is done, if not durable */
    ck_assert(exists("cur", "300.c:2,S"));
    ck_assert(maildrop_open(&md, dirfd_));
    ck_assert_uint_eq(md.n, 2);
    ck_assert(!exists("new", "100.a"));
    ck_assert(maildrop_update(&md, &failed));
    maildrop_close(&md);
    ck_assert(exists("cur", "100.a:2,"));
}
END_TEST

START_TEST(test_moved_by_another_program)
{
    /* a local mail program moves a message while the session is open: RETR
     * and DELE still reach it, by its base name */
    char a[512], b[512];
    struct maildrop md;
    size_t failed;
    PUT("new", "100.a", "A\n");
    PUT("new", "200.b", "B\n");
    PUT("new", "300.c", "C\n");
    ck_assert(maildrop_open(&md, dirfd_));
    ck_assert_uint_eq(md.n, 3);
    snprintf(a, sizeof a, "%s/new/100.a", dir);
    snprintf(b, sizeof b, "%s/cur/100.a:2,S", dir);
    ck_assert_int_eq(rename(a, b), 0);
    int fd = maildrop_open_msg(&md, 0);
    ck_assert_int_ge(fd, 0);
    close(fd);
    ck_assert_str_eq(md.msg[0].name, "100.a:2,S");
    ck_assert_int_eq(md.msg[0].in_new, 0);
    ck_assert_str_eq(md.msg[0].uidl, "100.a");
    /* flags changed again, then DELE and QUIT: the file goes */
    snprintf(a, sizeof a, "%s/cur/100.a:2,RS", dir);
    ck_assert_int_eq(rename(b, a), 0);
    md.msg[0].deleted = 1;
    /* 200.b moved to cur/ and DELE'd without a RETR first */
    snprintf(b, sizeof b, "%s/new/200.b", dir);
    char c[512];
    snprintf(c, sizeof c, "%s/cur/200.b:2,", dir);
    ck_assert_int_eq(rename(b, c), 0);
    md.msg[1].deleted = 1;
    /* 300.c really gone: RETR says so, and it is no failure of the update */
    snprintf(b, sizeof b, "%s/new/300.c", dir);
    ck_assert_int_eq(unlink(b), 0);
    ck_assert_int_lt(maildrop_open_msg(&md, 2), 0);
    ck_assert_int_eq(errno, ENOENT);
    /* a name that only starts like a message's is not that message */
    PUT("cur", "100.ab:2,", "X\n");
    ck_assert(maildrop_update(&md, &failed));
    ck_assert_uint_eq(failed, 0);
    ck_assert_int_ne(access(a, F_OK), 0);
    ck_assert_int_ne(access(c, F_OK), 0);
    snprintf(b, sizeof b, "%s/cur/100.ab:2,", dir);
    ck_assert_int_eq(access(b, F_OK), 0);
    maildrop_close(&md);
}
END_TEST

START_TEST(test_missing_parts)
{
    /* a Maildir whose cur/ (or new/) was removed: opened as empty, the part
     * made again, and messages in new/ still seen and moved to cur/ */
    char p[512];
    struct maildrop md;
    snprintf(p, sizeof p, "%s/cur", dir);
    ck_assert_int_eq(rmdir(p), 0);
    PUT("new", "100.a", "A\n");
    ck_assert(maildrop_open(&md, dirfd_));
    ck_assert_uint_eq(md.n, 1);
    struct stat st;
    ck_assert_int_eq(stat(p, &st), 0);
    ck_assert(S_ISDIR(st.st_mode));
    ck_assert_uint_eq(st.st_mode & 0777, 0700);
    maildrop_close(&md);
    snprintf(p, sizeof p, "%s/new/100.a", dir);
    ck_assert_int_eq(unlink(p), 0);
    snprintf(p, sizeof p, "%s/new", dir);
    ck_assert_int_eq(rmdir(p), 0);
    ck_assert(maildrop_open(&md, dirfd_));
    ck_assert_uint_eq(md.n, 0);
    ck_assert_int_eq(access(p, F_OK), 0);
    maildrop_close(&md);
    /* a part that is a symlink is still refused, not replaced */
    ck_assert_int_eq(rmdir(p), 0);
    ck_assert_int_eq(symlink("/tmp", p), 0);
    ck_assert(!maildrop_open(&md, dirfd_));
    ck_assert_int_eq(unlink(p), 0);
}
END_TEST

START_TEST(test_delivery_order)
{
    /* RETR 1 is the oldest message: one second's deliveries by their
     * microseconds as numbers (M99 before M100000; as strings it would be
     * the other way round), the same microsecond by the whole name, and
     * new/ and cur/ merged */
    PUT("new", "1795682202.M100000P7R1.host,S=2,W=3", "3\n");
    PUT("cur", "1795682202.M99P9R1.host,S=2,W=3:2,S", "2\n");
    PUT("new", "1795682202.M99P10R1.host", "1\n");
    PUT("new", "1795682201.M999999P1R1.host", "0\n");
    PUT("new", "1795682202.x", "4\n");
    PUT("new", "99999999999.M1P1", "5\n");
    PUT("new", "notime", "6\n");
    struct maildrop md;
    ck_assert(maildrop_open(&md, dirfd_));
    ck_assert_uint_eq(md.n, 7);
    const char *want[] = { "1795682201.M999999P1R1.host", "1795682202.M99P10R1.host",
                           "1795682202.M99P9R1.host,S=2,W=3:2,S", "1795682202.M100000P7R1.host,S=2,W=3",
                           "1795682202.x", "99999999999.M1P1", "notime" };
    for (size_t i = 0; i < 7; i++) ck_assert_str_eq(md.msg[i].name, want[i]);
    maildrop_close(&md);
}
END_TEST

START_TEST(test_lock)
{
    int a = maildrop_lock(dirfd_);
    ck_assert_int_ge(a, 0);
    ck_assert_int_eq(maildrop_lock(dirfd_), -1);
    ck_assert_int_eq(errno, EWOULDBLOCK);
    close(a);
    a = maildrop_lock(dirfd_);
    ck_assert_int_ge(a, 0);
    close(a);
}
END_TEST

START_TEST(test_numbers)
{
    unsigned long long v;
    ck_assert(maildrop_parse_number("1", 1, &v));
    ck_assert_uint_eq(v, 1);
    ck_assert(maildrop_parse_number("18446744073709551615", 20, &v));
    ck_assert_uint_eq(v, ULLONG_MAX);
    ck_assert(!maildrop_parse_number("18446744073709551616", 20, &v));
    ck_assert(!maildrop_parse_number("100000000000000000000", 21, &v));
    ck_assert(!maildrop_parse_number("-1", 2, &v));
    ck_assert(!maildrop_parse_number("+1", 2, &v));
    ck_assert(!maildrop_parse_number("1abc", 4, &v));
    ck_assert(!maildrop_parse_number("", 0, &v));
    ck_assert(!maildrop_parse_number(" 1", 2, &v));
}
END_TEST

START_TEST(test_large_message_bounded)
{
    /* 3 MB with long lines and dots at chunk edges: sizes agree with output */
    size_t len = 3u << 20;
    char *m = malloc(len);
    ck_assert_ptr_nonnull(m);
    for (size_t i = 0; i < len; i++) m[i] = (i % 997 == 0) ? '\n' : (i % 997 == 1 ? '.' : 'x');
    m[65535] = '\r';
    m[65536] = '\n';
    FILE *in = tmpfile(), *o = tmpfile();
    fwrite(m, 1, len, in);
    fflush(in);
    lseek(fileno(in), 0, SEEK_SET);
    unsigned long long sz;
    ck_assert(maildrop_size_fd(fileno(in), &sz));
    lseek(fileno(in), 0, SEEK_SET);
    unsigned char mem[4096];
    struct io io;
    io_init(&io, fileno(o), mem, sizeof mem, 1000);
    ck_assert(maildrop_send_fd(fileno(in), -1, &io));
    ck_assert(io_flush(&io));
    struct stat st;
    fstat(fileno(o), &st);
    size_t dots = 0;   /* lines starting with '.' get one more */
    for (size_t i = 0; i + 1 < len; i++) if (m[i] == '\n' && m[i + 1] == '.') dots++;
    ck_assert_uint_eq((unsigned long long)st.st_size, sz + dots + 3);
    free(m);
    fclose(in);
    fclose(o);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("maildrop");
    TCase *core = tcase_create("core");
    tcase_add_checked_fixture(core, setup, teardown);
    tcase_add_test(core, test_sizes_and_rendering);
    tcase_add_test(core, test_top);
    tcase_add_test(core, test_scan_uidl_update);
    tcase_add_test(core, test_delivery_order);
    tcase_add_test(core, test_missing_parts);
    tcase_add_test(core, test_moved_by_another_program);
    tcase_add_test(core, test_retrieved_marked_seen_in_cur);
    tcase_add_test(core, test_skips_what_is_not_a_message);
    tcase_add_test(core, test_impossible_name_size_counted);
    tcase_add_test(core, test_same_base_name_twice);
    tcase_add_test(core, test_update_overwrites_nothing);
    tcase_add_test(core, test_two_names_of_one_file);
    tcase_add_test(core, test_update_not_durable);
    tcase_add_test(core, test_lock);
    suite_add_tcase(s, core);
    TCase *limits = tcase_create("limits");
    tcase_add_checked_fixture(limits, setup, teardown);
    tcase_add_test(limits, test_numbers);
    tcase_add_test(limits, test_large_message_bounded);
    suite_add_tcase(s, limits);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
