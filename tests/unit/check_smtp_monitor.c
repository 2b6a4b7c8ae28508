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
#include <sys/wait.h>
#include <unistd.h>

#include "io.h"
#include "smtp_monitor.h"

static char dir[] = "/tmp/check_smtp_monitor.XXXXXX";
static char script[256];
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
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, chan), 0);
    mon = fork();
    ck_assert_int_ge(mon, 0);
    if (mon == 0) {
        close(chan[0]);
        _exit(smtp_monitor_serve(chan[1], dir, script, NULL) ? 0 : 1);
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
    suite_add_tcase(s, core);
    TCase *limits = tcase_create("limits");
    tcase_add_checked_fixture(limits, setup, teardown);
    tcase_add_test(limits, test_protocol_errors);
    tcase_add_test(limits, test_inject_without_fds);
    tcase_add_test(limits, test_recv_refuses_extra_fds);
    suite_add_tcase(s, limits);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
