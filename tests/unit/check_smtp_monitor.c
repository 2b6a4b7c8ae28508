/* check_smtp_monitor.c - the session <-> monitor channel and the monitor
 * loop, with a stand-in queue-inject (a shell script) that the real monitor
 * forks and execs. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "authproto.h"
#include "io.h"
#include "smtp_monitor.h"

static char dir[] = "/tmp/check_smtp_monitor.XXXXXX";
static char script[256], proxy[256];
static int chan[2];
static pid_t mon;

static void setup(void)
{
    ck_assert(mkdtemp(dir));
    snprintf(script, sizeof script, "%s/queue-inject", dir);
    FILE *f = fopen(script, "w");
    ck_assert(f);
    fprintf(f, "#!/bin/sh\ncat > %s/msg\ncat <&1 > %s/env\nprintf 'ABCDEF0123456789\\n'\nexit 7\n", dir, dir);
    fclose(f);
    chmod(script, 0755);
    /* a stand-in tls-proxy: notes its arguments, says its line, relays one way */
    snprintf(proxy, sizeof proxy, "%s/tls-proxy", dir);
    f = fopen(proxy, "w");
    ck_assert(f);
    fprintf(f, "#!/bin/sh\necho \"$@\" > %s/args\nprintf 'TLS TLSv1.3 FAKE -\\n'\nexec cat\n", dir);
    fclose(f);
    chmod(proxy, 0755);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, chan), 0);
    mon = fork();
    ck_assert_int_ge(mon, 0);
    if (mon == 0) {
        close(chan[0]);
        struct smtp_mon_conf mc = { .root = dir, .inject_path = script, .inject_user = NULL,
                                    .tls_proxy = proxy, .client = "192.0.2.9", .auth_timeout_ms = 1000 };
        _exit(smtp_monitor_serve(chan[1], &mc) ? 0 : 1);
    }
    close(chan[1]);
}

static int monitor_exit(void)
{
    int st;
    ck_assert_int_eq(waitpid(mon, &st, 0), mon);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void teardown(void)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
    memcpy(dir + strlen(dir) - 6, "XXXXXX", 6);
}

static char *slurp(const char *name)
{
    static char out[4096];
    char path[300];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_RDONLY);
    ck_assert_int_ge(fd, 0);
    ssize_t n = read(fd, out, sizeof out - 1);
    close(fd);
    out[n > 0 ? n : 0] = 0;
    return out;
}

START_TEST(test_inject_and_trigger)
{
    struct smtp_mon_client mc = { chan[0], 5000 };
    struct smtp_injector inj;
    smtp_mon_injector(&inj, &mc);
    int p[2], e[2];
    ck_assert_int_eq(pipe(p), 0);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, e), 0);
    ck_assert(inj.start(inj.ctx, p[0], e[1]));
    close(p[0]);
    close(e[1]);
    ck_assert(fd_write_all(p[1], "Subject: x\n\nhi\n", 15, 1000));
    close(p[1]);
    ck_assert(fd_write_all(e[0], "Fa@b\0Tc@d\t\t\0\0", 14, 1000));
    shutdown(e[0], SHUT_WR);
    char id[32] = "";
    ck_assert(fd_read_all(e[0], id, 17, 5000));
    ck_assert(!memcmp(id, "ABCDEF0123456789\n", 17));
    close(e[0]);
    int status;
    ck_assert(inj.finish(inj.ctx, &status));
    ck_assert_int_eq(status, 7);
    ck_assert_str_eq(slurp("msg"), "Subject: x\n\nhi\n");
    ck_assert(!memcmp(slurp("env"), "Fa@b\0Tc@d\t\t\0", 13));
    /* the trigger: no FIFO yet -> refused; with a reader -> one byte */
    ck_assert(!inj.trigger(inj.ctx));
    char fifo[300];
    snprintf(fifo, sizeof fifo, "%s/queue", dir);
    mkdir(fifo, 0700);
    snprintf(fifo, sizeof fifo, "%s/queue/lock", dir);
    mkdir(fifo, 0700);
    snprintf(fifo, sizeof fifo, "%s/queue/lock/trigger", dir);
    ck_assert_int_eq(mkfifo(fifo, 0600), 0);
    int rd = open(fifo, O_RDONLY | O_NONBLOCK);
    ck_assert_int_ge(rd, 0);
    ck_assert(inj.trigger(inj.ctx));
    char c;
    ck_assert_int_eq(read(rd, &c, 1), 1);
    close(rd);
    close(chan[0]);                       /* the session hangs up */
    ck_assert_int_eq(monitor_exit(), 0);
}
END_TEST

START_TEST(test_starttls)
{
    struct smtp_mon_client mc = { chan[0], 5000 };
    struct smtp_injector inj;
    smtp_mon_injector(&inj, &mc);
    int client[2], plain;
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, client), 0);
    ck_assert(inj.starttls(inj.ctx, client[1], "abc123;rm", &plain));
    close(client[1]);
    ck_assert(fd_write_all(client[0], "hello", 5, 1000));
    close(client[0]);
    char got[64] = "";
    ck_assert(fd_read_all(plain, got, 24, 5000));
    ck_assert(!memcmp(got, "TLS TLSv1.3 FAKE -\nhello", 24));
    close(plain);
    close(chan[0]);
    ck_assert_int_eq(monitor_exit(), 0);
    /* the id reached tls-proxy cleaned: only [0-9A-Za-z.-] */
    char want[300];
    snprintf(want, sizeof want, "-i abc123rm %s\n", dir);
    ck_assert_str_eq(slurp("args"), want);
}
END_TEST

/* ROOT/run/auth/socket, listening, where the monitor looks for auth-checker */
static int auth_socket(void)
{
    char path[300];
    snprintf(path, sizeof path, "%s/run", dir);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/run/auth", dir);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/run/auth/socket", dir);
    int l = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    ck_assert_uint_lt(strlen(path), sizeof sun.sun_path);
    memcpy(sun.sun_path, path, strlen(path) + 1);
    ck_assert_int_eq(bind(l, (struct sockaddr *)&sun, sizeof sun), 0);
    ck_assert_int_eq(listen(l, 4), 0);
    return l;
}

/* a stand-in auth-checker on ROOT/run/auth/socket answering n requests */
static pid_t fake_auth_checker(int n)
{
    int l = auth_socket();
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid) { close(l); return pid; }
    for (int i = 0; i < n; i++) {
        int c = accept(l, NULL, NULL);    /* the monitor connects for each request */
        char rec[AUTH_RECORD_MAX];
        struct auth_request q;
        struct auth_reply r;
        memset(&r, 0, sizeof r);
        ssize_t k = recv(c, rec, sizeof rec, 0);
        if (k <= 0 || !authproto_request_parse(rec, (size_t)k, &q)) _exit(2);
        if (strcmp(q.addr, "192.0.2.9") || q.service != AUTH_SVC_SMTP) _exit(3);
        int ok = !strcmp(q.user, "Alice@example.test") && !strcmp(q.pass, "secret");
        r.result = ok ? AUTH_OK : !strcmp(q.user, "busy") ? AUTH_TEMP : AUTH_BAD;
        if (ok) { snprintf(r.name, sizeof r.name, "alice"); r.uid = 1000; r.gid = 1000; snprintf(r.maildir, sizeof r.maildir, "/m"); }
        size_t len;
        if (!authproto_reply_format(&r, rec, sizeof rec, &len) || send(c, rec, len, 0) != (ssize_t)len) _exit(4);
        /* and hangs up after the answer: nothing more comes on it */
        if (recv(c, rec, sizeof rec, 0) != 0) _exit(5);
        close(c);
    }
    _exit(0);
}

START_TEST(test_auth)
{
    struct smtp_mon_client mc = { chan[0], 5000 };
    struct smtp_injector inj;
    smtp_mon_injector(&inj, &mc);
    pid_t ac = fake_auth_checker(3);
    char name[256] = "";
    ck_assert_int_eq(inj.auth(inj.ctx, "Alice@example.test", 18, "secret", 6, name, sizeof name), SMTP_AUTH_OK);
    ck_assert_str_eq(name, "alice");
    ck_assert_int_eq(inj.auth(inj.ctx, "Alice@example.test", 18, "wrong", 5, name, sizeof name), SMTP_AUTH_BAD);
    ck_assert_int_eq(inj.auth(inj.ctx, "busy", 4, "x", 1, name, sizeof name), SMTP_AUTH_TEMP);
    int st;
    ck_assert_int_eq(waitpid(ac, &st, 0), ac);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    /* auth-checker gone: temporary */
    ck_assert_int_eq(inj.auth(inj.ctx, "Alice@example.test", 18, "secret", 6, name, sizeof name), SMTP_AUTH_TEMP);
    /* a user with NUL (no NUL separator where the length says) is refused */
    struct smtp_mon_msg m = { SMTP_MON_AUTH, 3 }, r;
    int fds[2], n;
    ck_assert(smtp_mon_sendp(chan[0], &m, "abcdef", 6, NULL, 0));
    ck_assert(smtp_mon_recv(chan[0], &r, fds, &n, 5000));
    ck_assert_int_eq(r.value, SMTP_AUTH_BAD);
    close(chan[0]);
    ck_assert_int_eq(monitor_exit(), 0);
}
END_TEST

/* auth-checker takes the request and never answers: TEMP once the
 * monitor's bound has passed, and the channel goes on serving */
START_TEST(test_auth_unanswered)
{
    struct smtp_mon_client mc = { chan[0], 5000 };
    struct smtp_injector inj;
    smtp_mon_injector(&inj, &mc);
    int l = auth_socket();      /* connected by the kernel, never accepted */
    char name[256] = "";
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    ck_assert_int_eq(inj.auth(inj.ctx, "Alice@example.test", 18, "secret", 6, name, sizeof name), SMTP_AUTH_TEMP);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    ck_assert_int_ge(ms, 900);
    ck_assert_int_lt(ms, 4000);
    ck_assert(!inj.trigger(inj.ctx));        /* still served: no FIFO, refused */
    close(l);
    close(chan[0]);
    ck_assert_int_eq(monitor_exit(), 0);
}
END_TEST

START_TEST(test_payload_limits)
{
    int sp[2];
    char big[SMTP_MON_PAYLOAD_MAX + 1], got[SMTP_MON_PAYLOAD_MAX];
    memset(big, 'x', sizeof big);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sp), 0);
    struct smtp_mon_msg m = { SMTP_MON_STATUS, 1 }, r;
    int fds[2], n;
    size_t plen;
    ck_assert(!smtp_mon_sendp(sp[0], &m, big, sizeof big, NULL, 0));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert(smtp_mon_sendp(sp[0], &m, big, SMTP_MON_PAYLOAD_MAX, NULL, 0));
    ck_assert(smtp_mon_recvp(sp[1], &r, got, &plen, fds, &n, 1000));
    ck_assert_uint_eq(plen, SMTP_MON_PAYLOAD_MAX);
    /* a payload where none may be */
    ck_assert(smtp_mon_sendp(sp[0], &m, "x", 1, NULL, 0));
    ck_assert(!smtp_mon_recv(sp[1], &r, fds, &n, 1000));
    ck_assert_int_eq(errno, EPROTO);
    /* an oversized datagram is truncated: refused */
    char huge[SMTP_MON_PAYLOAD_MAX + 64];
    memset(huge, 0, sizeof huge);
    ck_assert_int_eq(send(sp[0], huge, sizeof huge, 0), (ssize_t)sizeof huge);
    ck_assert(!smtp_mon_recvp(sp[1], &r, got, &plen, fds, &n, 1000));
    ck_assert_int_eq(errno, EPROTO);
    close(sp[0]);
    close(sp[1]);
    close(chan[0]);
    monitor_exit();
}
END_TEST

START_TEST(test_protocol_errors)
{
    /* a record of the wrong size ends the monitor */
    ck_assert_int_eq(send(chan[0], "abc", 3, 0), 3);
    ck_assert_int_eq(monitor_exit(), 1);
    close(chan[0]);
}
END_TEST

START_TEST(test_inject_without_fds)
{
    struct smtp_mon_msg m = { SMTP_MON_INJECT, 0 };
    ck_assert(smtp_mon_send(chan[0], &m, NULL, 0));
    ck_assert_int_eq(monitor_exit(), 1);
    close(chan[0]);
}
END_TEST

START_TEST(test_recv_refuses_extra_fds)
{
    int sp[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sp), 0);
    struct smtp_mon_msg m = { SMTP_MON_STATUS, 3 }, got;
    int fds[2] = { 0, 1 }, rfds[2], n;
    ck_assert(!smtp_mon_send(sp[0], &m, fds, 3));    /* at most 2 */
    ck_assert(smtp_mon_send(sp[0], &m, fds, 2));
    ck_assert(smtp_mon_recv(sp[1], &got, rfds, &n, 1000));
    ck_assert_int_eq(n, 2);
    ck_assert_int_eq(got.value, 3);
    close(rfds[0]);
    close(rfds[1]);
    ck_assert(!smtp_mon_recv(sp[1], &got, rfds, &n, 100));
    ck_assert_int_eq(errno, ETIMEDOUT);
    close(sp[0]);
    ck_assert(!smtp_mon_recv(sp[1], &got, rfds, &n, 100));
    ck_assert_int_eq(errno, EPIPE);
    close(sp[1]);
    close(chan[0]);
    monitor_exit();
}
END_TEST

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    Suite *s = suite_create("smtp_monitor");
    TCase *core = tcase_create("core");
    tcase_add_checked_fixture(core, setup, teardown);
    tcase_add_test(core, test_inject_and_trigger);
    tcase_add_test(core, test_starttls);
    tcase_add_test(core, test_auth);
    tcase_add_test(core, test_auth_unanswered);
    suite_add_tcase(s, core);
    TCase *limits = tcase_create("limits");
    tcase_add_checked_fixture(limits, setup, teardown);
    tcase_add_test(limits, test_protocol_errors);
    tcase_add_test(limits, test_inject_without_fds);
    tcase_add_test(limits, test_recv_refuses_extra_fds);
    tcase_add_test(limits, test_payload_limits);
    suite_add_tcase(s, limits);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
