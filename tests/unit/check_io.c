/* check_io.c - buffered I/O and the line reader. */
#include <check.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "io.h"

static int sp[2];
static unsigned char mem[64];
static struct io in;

static void setup(void)
{
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sp), 0);
    io_init(&in, sp[0], mem, sizeof mem, 200);
}
static void teardown(void) { close(sp[0]); if (sp[1] >= 0) close(sp[1]); }

static void feed(const char *s, size_t n) { ck_assert(fd_write_all(sp[1], s, n, 1000)); }

/* the deadline clock: monotonic milliseconds */
START_TEST(test_now_ms)
{
    long long a = io_now_ms();
    ck_assert_int_gt(a, 0);
    ck_assert_int_eq(usleep(20000), 0);
    long long b = io_now_ms();
    ck_assert_int_ge(b - a, 19);
    ck_assert_int_lt(b - a, 60000);
}
END_TEST

/* io_quickack: on a TCP connection whose ACKs the kernel delays (its
 * interactive mode, TCP_QUICKACK 0), a wait for input with it on leaves the
 * socket acknowledging at once; off, it stays as it was. On a socket that
 * is not TCP it changes nothing and input still arrives. */
/* a TCP connection over loopback: *l listening, *c the client, *a accepted */
static void tcp_pair(int *l, int *c, int *a)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t sl = sizeof sa;
    *l = socket(AF_INET, SOCK_STREAM, 0);
    *c = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_eq(bind(*l, (struct sockaddr *)&sa, sizeof sa), 0);
    ck_assert_int_eq(listen(*l, 1), 0);
    ck_assert_int_eq(getsockname(*l, (struct sockaddr *)&sa, &sl), 0);
    ck_assert_int_eq(connect(*c, (struct sockaddr *)&sa, sizeof sa), 0);
    ck_assert_int_ge(*a = accept(*l, NULL, NULL), 0);
}

static int quickack_after_fill(int on)
{
    int l, c, a, v = 0, zero = 0;
    tcp_pair(&l, &c, &a);
    ck_assert_int_eq(setsockopt(a, IPPROTO_TCP, TCP_QUICKACK, &zero, sizeof zero), 0);
    unsigned char b[16];
    struct io t;
    io_init(&t, a, b, sizeof b, 1000);
    io_quickack(&t, on);
    ck_assert(fd_write_all(c, "x", 1, 1000));
    ck_assert(io_fill(&t));
    ck_assert_uint_eq(io_buffered(&t), 1);
    socklen_t vl = sizeof v;
    ck_assert_int_eq(getsockopt(a, IPPROTO_TCP, TCP_QUICKACK, &v, &vl), 0);
    close(a); close(c); close(l);
    return v;
}

START_TEST(test_quickack)
{
    ck_assert_int_eq(quickack_after_fill(1), 1);
    ck_assert_int_eq(quickack_after_fill(0), 0);
    io_quickack(&in, 1);                    /* a unix socket: no TCP option */
    feed("ok\r\n", 4);
    ck_assert(io_fill(&in));
    ck_assert_uint_eq(io_buffered(&in), 4);
}
END_TEST

/* A server that ends a connection with the client's input unread and its
 * own reply not all sent yet: close() sends RST, which throws the unsent
 * part away and leaves the client ECONNRESET; fd_close_lingering sends
 * everything, then FIN, and the client reads it all and a clean end. The
 * client (a child) pipelines 16 KB the server never reads and starts
 * reading only when told: after a plain close, or as the server starts to
 * linger (which waits for the client). Returns the bytes the client
 * read; *reset is 1 if its reading ended in ECONNRESET. */
static size_t reply_after_close(int linger, size_t *written, int *reset)
{
    int l, c, a, pp[2], go[2];
    tcp_pair(&l, &c, &a);
    ck_assert_int_eq(pipe(pp), 0);
    ck_assert_int_eq(pipe(go), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        static char b[65536];
        char x;
        close(a);
        close(l);
        close(go[1]);
        memset(b, 'C', 16384);
        size_t got = 0;
        long r[2] = { 0, 0 };
        if (!fd_write_all(c, b, 16384, 2000)) _exit(1);
        if (read(go[0], &x, 1) != 1) _exit(1);      /* the server is done: now read */
        for (;;) {
            ssize_t n = read(c, b, sizeof b);
            if (n > 0) { got += (size_t)n; continue; }
            r[1] = n < 0 && errno == ECONNRESET;
            break;
        }
        r[0] = (long)got;
        if (write(pp[1], r, sizeof r) != sizeof r) _exit(1);
        close(c);
        _exit(0);
    }
    close(c);
    close(go[0]);
    /* the client's bytes are in, unread */
    int inq = 0;
    for (int i = 0; i < 10000 && inq < 16384; i++) {
        ck_assert_int_eq(ioctl(a, FIONREAD, &inq), 0);
        if (inq < 16384) usleep(1000);
    }
    ck_assert_int_eq(inq, 16384);
    ck_assert_int_eq(fcntl(a, F_SETFL, O_NONBLOCK), 0);
    static char reply[1 << 16];
    memset(reply, 'S', sizeof reply);
    *written = 0;
    for (;;) {                              /* until the send queue is full */
        ssize_t n = write(a, reply, sizeof reply);
        if (n <= 0) break;
        *written += (size_t)n;
    }
    ck_assert_uint_gt(*written, 0);
    /* lingering waits for the client's end, so the client reads meanwhile;
     * a plain close has sent its RST before the client reads a byte */
    if (linger) {
        ck_assert_int_eq(write(go[1], "g", 1), 1);
        fd_close_lingering(a, 5000, 1 << 20);
    } else {
        close(a);
        ck_assert_int_eq(write(go[1], "g", 1), 1);
    }
    close(go[1]);
    long r[2];
    ck_assert(fd_read_all(pp[0], r, sizeof r, 10000));
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    close(pp[0]); close(pp[1]); close(l);
    *reset = (int)r[1];
    return (size_t)r[0];
}

START_TEST(test_close_lingering)
{
    size_t written;
    int reset;
    size_t got = reply_after_close(1, &written, &reset);
    ck_assert_uint_eq(got, written);
    ck_assert_int_eq(reset, 0);
    /* what it prevents */
    got = reply_after_close(0, &written, &reset);
    ck_assert_uint_lt(got, written);
    ck_assert_int_eq(reset, 1);
}
END_TEST

START_TEST(test_line_ends)
{
    char line[32];
    size_t len;
    enum io_eol eol;
    feed("HELO a\r\nMAIL\nx\ry\r\r\n", 19);
    shutdown(sp[1], SHUT_WR);
    ck_assert(io_getline(&in, line, sizeof line, &len, &eol));
    ck_assert_int_eq(eol, IO_EOL_CRLF);
    ck_assert_uint_eq(len, 6);
    ck_assert(!memcmp(line, "HELO a", 6));
    ck_assert(io_getline(&in, line, sizeof line, &len, &eol));
    ck_assert_int_eq(eol, IO_EOL_LF);
    ck_assert(!memcmp(line, "MAIL", 4));
    ck_assert(io_getline(&in, line, sizeof line, &len, &eol));
    ck_assert_int_eq(eol, IO_EOL_CR);
    ck_assert_uint_eq(len, 1);
    ck_assert(io_getline(&in, line, sizeof line, &len, &eol));
    ck_assert_int_eq(eol, IO_EOL_CR);   /* "y\r" then "\r\n" */
    ck_assert(io_getline(&in, line, sizeof line, &len, &eol));
    ck_assert_int_eq(eol, IO_EOL_CRLF);
    ck_assert_uint_eq(len, 0);
    ck_assert(!io_getline(&in, line, sizeof line, &len, &eol));
    ck_assert_int_eq(errno, EPIPE);
}
END_TEST

/* io_wipe_spent: after a line with a secret, the buffer keeps only the
 * bytes not yet read; a line read before the buffer was reused (pos and
 * len back to 0) and left past the new end is zeroed too */
static int mem_has(const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= sizeof mem; i++)
        if (!memcmp(mem + i, needle, n)) return 1;
    return 0;
}

START_TEST(test_wipe_spent)
{
    char line[64];
    size_t len;
    enum io_eol eol;
    feed("AUTH PLAIN c2VjcmV0c2VjcmV0\r\n", 29);
    ck_assert(io_getline(&in, line, sizeof line, &len, &eol));
    feed("NOOP\r\nQUIT\r\n", 12);       /* the buffer starts again at 0 */
    ck_assert(io_getline(&in, line, sizeof line, &len, &eol));
    ck_assert(!memcmp(line, "NOOP", 4));
    ck_assert(mem_has("c2VjcmV0"));          /* past the new end: stale */
    io_wipe_spent(&in);
    ck_assert(!mem_has("c2VjcmV0"));
    ck_assert(!mem_has("NOOP"));             /* consumed */
    ck_assert_uint_eq(io_buffered(&in), 6);  /* QUIT\r\n still to read */
    ck_assert(io_getline(&in, line, sizeof line, &len, &eol));
    ck_assert_uint_eq(len, 4);
    ck_assert(!memcmp(line, "QUIT", 4));
}
END_TEST

START_TEST(test_cr_split_across_reads)
{
    char line[32];
    size_t len;
    enum io_eol eol;
    feed("abc\r", 4);
    /* the reader must wait for the next byte to tell CRLF from bare CR */
    feed("\n", 1);
    ck_assert(io_getline(&in, line, sizeof line, &len, &eol));
    ck_assert_int_eq(eol, IO_EOL_CRLF);
    ck_assert_uint_eq(len, 3);
    feed("z\r", 2);
    shutdown(sp[1], SHUT_WR);
    ck_assert(io_getline(&in, line, sizeof line, &len, &eol));
    ck_assert_int_eq(eol, IO_EOL_CR);
}
END_TEST

START_TEST(test_nul_kept_and_output)
{
    char line[32];
    size_t len;
    enum io_eol eol;
    feed("a\0b\r\n", 5);
    ck_assert(io_getline(&in, line, sizeof line, &len, &eol));
    ck_assert_uint_eq(len, 3);
    ck_assert(line[1] == 0);
    unsigned char omem[8];
    struct io out;
    io_init(&out, sp[1], omem, sizeof omem, 1000);
    ck_assert(io_puts(&out, "250 ok\r\n"));
    ck_assert(io_puts(&out, "a longer line than the buffer\r\n"));
    ck_assert(io_flush(&out));
    char got[64];
    ck_assert(fd_read_all(sp[0], got, 39, 1000));
    ck_assert(!memcmp(got, "250 ok\r\na longer line than the buffer\r\n", 39));
}
END_TEST

/* flush_first: what is pending on the output goes out before the input
 * waits (RFC 2920 3.2), also in the middle of a line; a peer that has
 * gone makes the read fail with EPIPE */
START_TEST(test_flush_before_wait)
{
    char line[32], got[16];
    size_t len;
    enum io_eol eol;
    unsigned char omem[32];
    struct io out;
    io_init(&out, sp[0], omem, sizeof omem, 1000);
    in.flush_first = &out;
    feed("NOOP\r\nNO", 8);
    ck_assert(io_getline(&in, line, sizeof line, &len, &eol));
    ck_assert(io_puts(&out, "250 ok\r\n"));
    /* the rest of the line is not there: the reply goes out, then the wait
     * times out (200 ms) with the reply already at the peer */
    ck_assert(!io_getline(&in, line, sizeof line, &len, &eol));
    ck_assert_int_eq(errno, ETIMEDOUT);
    ck_assert_uint_eq(out.len, 0);
    ck_assert(fd_read_all(sp[1], got, 8, 1000));
    ck_assert(!memcmp(got, "250 ok\r\n", 8));
    /* nothing pending: no write, the read goes on as before */
    feed("OP\r\n", 4);
    ck_assert(io_getline(&in, line, sizeof line, &len, &eol));
    ck_assert(!memcmp(line, "OP", 2));
    signal(SIGPIPE, SIG_IGN);
    ck_assert(io_puts(&out, "250 ok\r\n"));
    close(sp[1]);
    sp[1] = -1;
    ck_assert(!io_getline(&in, line, sizeof line, &len, &eol));
    ck_assert_int_eq(errno, EPIPE);
}
END_TEST

START_TEST(test_limit)
{
    char line[8];
    size_t len;
    enum io_eol eol;
    feed("0123456789\r\nabcdefgh\r\nX\r\n", 25);
    ck_assert(io_getline(&in, line, sizeof line, &len, &eol));
    ck_assert_int_eq(eol, IO_EOL_NONE);     /* 8 bytes, no line end yet */
    ck_assert_uint_eq(len, 8);
    ck_assert(io_skipline(&in, 100));
    /* exactly the limit followed by CRLF is a whole line */
    ck_assert(io_getline(&in, line, sizeof line, &len, &eol));
    ck_assert_int_eq(eol, IO_EOL_CRLF);
    ck_assert_uint_eq(len, 8);
    ck_assert(io_getline(&in, line, sizeof line, &len, &eol));
    ck_assert(line[0] == 'X');
}
END_TEST

START_TEST(test_skip_to_lf)
{
    /* only LF ends what io_skip_to_lf skips: a bare CR does not */
    char line[16];
    size_t len;
    enum io_eol eol;
    feed("CAPA\rQUIT\rNOOP\r\nSTAT\r\n", 22);
    ck_assert(io_getline(&in, line, sizeof line, &len, &eol));
    ck_assert_int_eq(eol, IO_EOL_CR);
    ck_assert_uint_eq(len, 4);
    ck_assert(io_skip_to_lf(&in, 100));
    ck_assert(io_getline(&in, line, sizeof line, &len, &eol));
    ck_assert_int_eq(eol, IO_EOL_CRLF);
    ck_assert_uint_eq(len, 4);
    ck_assert(!memcmp(line, "STAT", 4));
    char big[200];
    memset(big, '\r', sizeof big);
    feed(big, sizeof big);
    ck_assert(!io_skip_to_lf(&in, 100));
    ck_assert_int_eq(errno, E2BIG);
}
END_TEST

START_TEST(test_skipline_limit_and_timeout)
{
    char big[200];
    memset(big, 'a', sizeof big);
    feed(big, sizeof big);
    ck_assert(!io_skipline(&in, 100));
    ck_assert_int_eq(errno, E2BIG);
    /* nothing more arrives: a bounded wait */
    char line[8];
    size_t len;
    enum io_eol eol;
    io_discard_buffered(&in);
    while (io_fill(&in)) io_discard_buffered(&in);
    ck_assert_int_eq(errno, ETIMEDOUT);
    ck_assert(!io_getline(&in, line, sizeof line, &len, &eol));
    ck_assert_int_eq(errno, ETIMEDOUT);
}
END_TEST

/* slowloris: one byte every 40 ms, never a line end; each wait is short,
 * but the line as a whole must arrive within the timeout */
START_TEST(test_dribbled_line_times_out)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        for (int i = 0; i < 100; i++) {
            if (write(sp[1], "x", 1) != 1) _exit(0);
            usleep(40000);
        }
        _exit(0);
    }
    char line[512];
    size_t len;
    enum io_eol eol;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    ck_assert(!io_getline(&in, line, sizeof line, &len, &eol));
    ck_assert_int_eq(errno, ETIMEDOUT);
    clock_gettime(CLOCK_MONOTONIC, &b);
    long ms = (b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
    ck_assert_int_lt(ms, 1500);             /* not 100 x 40 ms */
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}
END_TEST

START_TEST(test_read_full)
{
    char got[10];
    feed("0123456789abc", 13);
    ck_assert(io_read_full(&in, got, 10));
    ck_assert(!memcmp(got, "0123456789", 10));
    /* 3 buffered, then nothing: a bounded wait, not a short read */
    ck_assert(!io_read_full(&in, got, 4));
    ck_assert_int_eq(errno, ETIMEDOUT);
    feed("x", 1);
    close(sp[1]);
    sp[1] = -1;
    ck_assert(!io_read_full(&in, got, 2));
    ck_assert_int_eq(errno, EPIPE);
}
END_TEST

START_TEST(test_long_input_bounded_buffer)
{
    /* 10 KiB line through a 64-byte buffer: getline never stores past max */
    char chunk[1024];
    memset(chunk, 'x', sizeof chunk);
    for (int i = 0; i < 10; i++) feed(chunk, sizeof chunk);
    feed("\r\n", 2);
    char line[100];
    size_t len, total = 0;
    enum io_eol eol;
    do {
        ck_assert(io_getline(&in, line, sizeof line, &len, &eol));
        ck_assert_uint_le(len, sizeof line);
        total += len;
    } while (eol == IO_EOL_NONE);
    ck_assert_int_eq(eol, IO_EOL_CRLF);
    ck_assert_uint_eq(total, 10240);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("io");
    TCase *core = tcase_create("core");
    tcase_add_checked_fixture(core, setup, teardown);
    tcase_add_test(core, test_now_ms);
    tcase_add_test(core, test_line_ends);
    tcase_add_test(core, test_wipe_spent);
    tcase_add_test(core, test_cr_split_across_reads);
    tcase_add_test(core, test_nul_kept_and_output);
    tcase_add_test(core, test_flush_before_wait);
    tcase_add_test(core, test_quickack);
    tcase_add_test(core, test_close_lingering);
    suite_add_tcase(s, core);
    TCase *limits = tcase_create("limits");
    tcase_add_checked_fixture(limits, setup, teardown);
    tcase_add_test(limits, test_limit);
    tcase_add_test(limits, test_skipline_limit_and_timeout);
    tcase_add_test(limits, test_skip_to_lf);
    tcase_add_test(limits, test_long_input_bounded_buffer);
    tcase_add_test(limits, test_dribbled_line_times_out);
    tcase_add_test(limits, test_read_full);
    suite_add_tcase(s, limits);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
