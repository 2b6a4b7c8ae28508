/* check_tls_spawn.c - starting (a stand-in for) tls-proxy on a socket, its
 * first line, and the one-byte records with a descriptor. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "io.h"
#include "tls_spawn.h"

static char dir[] = "/tmp/check_tls_spawn.XXXXXX";
static char proxy[300];

static void setup(void)
{
    ck_assert(mkdtemp(dir));
    snprintf(proxy, sizeof proxy, "%s/tls-proxy", dir);
    FILE *f = fopen(proxy, "w");
    ck_assert(f);
    /* like tls-proxy: arguments noted, the line, then relay (one way here) */
    fprintf(f, "#!/bin/sh\necho \"$@\" > %s/args\nprintf 'TLS TLSv1.2 ECDHE-RSA-AES128-GCM-SHA256 -\\n'\nexec cat\n", dir);
    fclose(f);
    chmod(proxy, 0755);
}

static void teardown(void)
{
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
    memcpy(dir + strlen(dir) - 6, "XXXXXX", 6);
}

START_TEST(test_spawn_and_line)
{
    int client[2], plain;
    pid_t pid;
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, client), 0);
    ck_assert(tls_proxy_spawn(proxy, "/some/root", "id42", client[1], &plain, &pid));
    close(client[1]);
    ck_assert(fcntl(plain, F_GETFD) & FD_CLOEXEC);
    ck_assert(fd_write_all(client[0], "EHLO x\r\n", 8, 1000));
    close(client[0]);
    char got[128] = "";
    ck_assert(fd_read_all(plain, got, 49, 5000));
    ck_assert(!memcmp(got, "TLS TLSv1.2 ECDHE-RSA-AES128-GCM-SHA256 -\nEHLO x\r\n", 49));
    char v[16], c[64];
    ck_assert(tls_proxy_line(got, 40, v, sizeof v, c, sizeof c));
    ck_assert_str_eq(v, "TLSv1.2");
    ck_assert_str_eq(c, "ECDHE-RSA-AES128-GCM-SHA256");
    close(plain);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    char path[400], args[128] = "";
    snprintf(path, sizeof path, "%s/args", dir);
    FILE *f = fopen(path, "r");
    ck_assert(f && fgets(args, sizeof args, f));
    fclose(f);
    ck_assert_str_eq(args, "-i id42 /some/root\n");

    /* an idle bound of its own (pop3-listener's): -t, until unset */
    tls_proxy_set_timeout(600);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, client), 0);
    ck_assert(tls_proxy_spawn(proxy, "/some/root", "id44", client[1], &plain, &pid));
    tls_proxy_set_timeout(0);
    close(client[1]);
    close(client[0]);
    ck_assert(fd_read_all(plain, got, 4, 5000));
    close(plain);
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    f = fopen(path, "r");
    ck_assert(f && fgets(args, sizeof args, f));
    fclose(f);
    ck_assert_str_eq(args, "-i id44 -t 600 /some/root\n");
}
END_TEST

/* with a TLS server named, a connection is handed to it: one request with
 * the id and two descriptors, the client socket and the plaintext end */
START_TEST(test_spawn_by_server)
{
    int z[2], client[2], plain, c, p;
    pid_t pid = 1;
    char id[TLS_ID_MAX + 1];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, z), 0);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, client), 0);
    tls_proxy_server_use(z[0]);
    ck_assert(tls_proxy_spawn(proxy, "/some/root", "id42", client[1], &plain, &pid));
    ck_assert_int_eq(pid, 0);                       /* not our child */
    ck_assert(tls_proxy_request_recv(z[1], id, sizeof id, &c, &p));
    ck_assert_str_eq(id, "id42");
    /* c is the client socket, p the peer of our plaintext end */
    ck_assert(fd_write_all(client[0], "hi", 2, 1000));
    char got[8] = "";
    ck_assert(fd_read_all(c, got, 2, 1000));
    ck_assert(!memcmp(got, "hi", 2));
    ck_assert(fd_write_all(p, "TLS x y -\n", 10, 1000));
    ck_assert(fd_read_all(plain, got, 4, 1000));
    ck_assert(!memcmp(got, "TLS ", 4));
    close(c); close(p); close(plain);
    /* the server gone: forgotten, and the connection gets an exec'd proxy */
    close(z[1]);
    ck_assert(tls_proxy_spawn(proxy, "/some/root", "id43", client[1], &plain, &pid));
    ck_assert_int_gt(pid, 0);
    close(client[1]);
    close(client[0]);
    ck_assert(fd_read_all(plain, got, 4, 5000));
    ck_assert(!memcmp(got, "TLS ", 4));
    close(plain);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    tls_proxy_server_use(-1);
}
END_TEST

START_TEST(test_fd_records)
{
    int sp[2], p[2], fd;
    char tag;
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sp), 0);
    ck_assert_int_eq(pipe(p), 0);
    ck_assert(fd_send(sp[0], 's', p[1]));
    ck_assert(fd_recv(sp[1], &tag, &fd, 1000));
    ck_assert_int_eq(tag, 's');
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, "x", 1), 1);      /* it is the pipe's write end */
    char c;
    ck_assert_int_eq(read(p[0], &c, 1), 1);
    close(fd);
    ck_assert(fd_send(sp[0], 'S', -1));
    ck_assert(fd_recv(sp[1], &tag, &fd, 1000));
    ck_assert_int_eq(tag, 'S');
    ck_assert_int_eq(fd, -1);
    close(p[0]);
    close(p[1]);
    close(sp[0]);
    close(sp[1]);
}
END_TEST

/* the server reads only well-formed requests: "T", a printable id of at
 * most TLS_ID_MAX, exactly two descriptors; anything else is closed */
START_TEST(test_bad_requests)
{
    int z[2], s[2], c, p;
    char id[TLS_ID_MAX + 1], longid[TLS_ID_MAX + 2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, z), 0);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, s), 0);
    memset(longid, 'a', sizeof longid - 1);
    longid[sizeof longid - 1] = 0;
    errno = 0;
    ck_assert(!tls_proxy_request_send(z[0], longid, s[0], s[1]));
    ck_assert_int_eq(errno, EPROTO);
    ck_assert(!tls_proxy_request_send(z[0], "a b", s[0], s[1]));
    longid[TLS_ID_MAX] = 0;
    ck_assert(tls_proxy_request_send(z[0], longid, s[0], s[1]));  /* TLS_ID_MAX: fine */
    ck_assert(tls_proxy_request_recv(z[1], id, sizeof id, &c, &p));
    ck_assert_str_eq(id, longid);
    close(c); close(p);
    ck_assert(tls_proxy_request_send(z[0], NULL, s[0], s[1]));     /* no id */
    ck_assert(tls_proxy_request_recv(z[1], id, sizeof id, &c, &p));
    ck_assert_str_eq(id, "");
    close(c); close(p);
    /* one descriptor only; a wrong tag */
    ck_assert(fd_send(z[0], 'T', s[0]));
    ck_assert(!tls_proxy_request_recv(z[1], id, sizeof id, &c, &p));
    ck_assert_int_eq(errno, EPROTO);
    ck_assert(fd_send(z[0], 'X', -1));
    ck_assert(!tls_proxy_request_recv(z[1], id, sizeof id, &c, &p));
    ck_assert_int_eq(errno, EPROTO);
    /* end of file */
    close(z[0]);
    ck_assert(!tls_proxy_request_recv(z[1], id, sizeof id, &c, &p));
    ck_assert_int_eq(errno, EPIPE);
    close(z[1]); close(s[0]); close(s[1]);
}
END_TEST

START_TEST(test_bad_records_and_lines)
{
    int sp[2], fd;
    char tag, v[8], c[8];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sp), 0);
    ck_assert(!fd_recv(sp[1], &tag, &fd, 50));
    ck_assert_int_eq(errno, ETIMEDOUT);
    ck_assert_int_eq(send(sp[0], "SS", 2, 0), 2);       /* two bytes: not a record */
    ck_assert(!fd_recv(sp[1], &tag, &fd, 1000));
    ck_assert_int_eq(errno, EPROTO);
    close(sp[0]);
    ck_assert(!fd_recv(sp[1], &tag, &fd, 1000));
    ck_assert_int_eq(errno, EPIPE);
    close(sp[1]);
    /* lines: bounded, printable, both fields present */
    ck_assert(!tls_proxy_line("TLS TLSv1.3", 11, v, sizeof v, c, sizeof c));
    ck_assert(!tls_proxy_line("TLS TLSv1.3 AVERYLONGCIPHER -", 29, v, sizeof v, c, sizeof c));
    ck_assert(!tls_proxy_line("TLS TLSv1.3\t X -", 16, v, sizeof v, c, sizeof c));
    ck_assert(!tls_proxy_line("tls a b -", 9, v, sizeof v, c, sizeof c));
    ck_assert(tls_proxy_line("TLS a b", 7, v, sizeof v, c, sizeof c));
    /* a proxy that cannot be executed: the plaintext end just sees EOF */
    int client[2], plain;
    pid_t pid;
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, client), 0);
    ck_assert(tls_proxy_spawn("/nonexistent/tls-proxy", "/r", NULL, client[1], &plain, &pid));
    char buf[8];
    ck_assert_int_eq(read(plain, buf, sizeof buf), 0);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 111);
    close(plain);
    close(client[0]);
    close(client[1]);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tls_spawn");
    TCase *core = tcase_create("core");
    tcase_add_checked_fixture(core, setup, teardown);
    tcase_add_test(core, test_spawn_and_line);
    tcase_add_test(core, test_fd_records);
    tcase_add_test(core, test_spawn_by_server);
    suite_add_tcase(s, core);
    TCase *limits = tcase_create("limits");
    tcase_add_checked_fixture(limits, setup, teardown);
    tcase_add_test(limits, test_bad_records_and_lines);
    tcase_add_test(limits, test_bad_requests);
    suite_add_tcase(s, limits);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
