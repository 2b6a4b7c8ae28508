/* check_sandbox.c - the seccomp deny list of lib/sandbox.h, tried from a
 * child process (the filter is for good) for each call. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sandbox.h"

#define REFUSED_EXIT 42   /* a refused call that returned EPERM (sanitizer builds) */
#define VALGRIND_EXIT 43  /* execve refused under valgrind (run_program) */

/* Run fn in a child inside the sandbox; its wait status. fn _exits 0 when
 * what it tried went as a sandboxed process should see it. */
static int sandboxed(void (*fn)(void))
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        if (!sandbox_enter(SANDBOX_NO_FILES)) _exit(99);
        fn();
        _exit(0);
    }
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    return st;
}

/* killed by SIGSYS; built with a sanitizer, the call failed with EPERM */
static void assert_refused(int st, size_t which)
{
#ifdef __SANITIZE_ADDRESS__
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == REFUSED_EXIT, "call %zu: status %#x", which, st);
#else
    if (WIFEXITED(st) && WEXITSTATUS(st) == VALGRIND_EXIT) return;
    ck_assert_msg(WIFSIGNALED(st) && WTERMSIG(st) == SIGSYS, "call %zu: status %#x", which, st);
#endif
}

static void refused_if(int r)
{
    _exit(r < 0 && errno == EPERM ? REFUSED_EXIT : 1);
}

static volatile sig_atomic_t got_usr1;
static void on_usr1(int sig) { (void)sig; got_usr1 = 1; }

static void allowed_calls(void)
{
    int p[2], sp[2];
    char c = 'x';
    if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1) _exit(2);
    if (prctl(PR_GET_SECCOMP, 0, 0, 0, 0) != 2) _exit(3);
    if (pipe(p) < 0 || write(p[1], &c, 1) != 1 || read(p[0], &c, 1) != 1) _exit(4);
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) < 0) _exit(5);     /* the message to queue-inject */
    signal(SIGUSR1, on_usr1);
    if (raise(SIGUSR1) != 0 || !got_usr1) _exit(6);                /* tgkill to itself */
    void *big = malloc(64 << 20);                                  /* mmap */
    if (!big) _exit(7);
    memset(big, 1, 64 << 20);
    free(big);
}

static void open_file(void)
{
    int fd = open("/etc/hostname", O_RDONLY);
    _exit(fd < 0 && errno == EACCES ? 0 : 1);
}
static void make_socket(void) { refused_if(socket(AF_INET, SOCK_STREAM, 0)); }
static void signal_parent(void) { refused_if(kill(getppid(), 0)); }
static void signal_other_by_tgkill(void) { refused_if(tgkill(getppid(), getppid(), 0)); }
static void run_program(void)
{
    char *argv[] = { "true", NULL }, *envp[] = { NULL };
    int r = execve("/bin/true", argv, envp);
    /* valgrind runs execve itself: its own look at the file (open, EACCES
     * here) fails first, and the program is not run either */
    const char *preload = getenv("LD_PRELOAD");
    if (r < 0 && errno == EACCES && preload && strstr(preload, "vgpreload")) _exit(VALGRIND_EXIT);
    refused_if(r);
}
static void start_process(void)
{
    pid_t pid = fork();
    if (pid == 0) _exit(0);
    refused_if(pid);
}
static void new_namespace(void) { refused_if(unshare(0)); }

START_TEST(test_allowed)
{
    int st = sandboxed(allowed_calls);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %#x", st);
}
END_TEST

START_TEST(test_files_refused_with_eacces)
{
    int st = sandboxed(open_file);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %#x", st);
}
END_TEST

START_TEST(test_refused)
{
    static void (*const calls[])(void) = { make_socket, signal_parent, signal_other_by_tgkill,
                                            run_program, start_process, new_namespace };
    for (size_t i = 0; i < sizeof calls / sizeof calls[0]; i++)
        assert_refused(sandboxed(calls[i]), i);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sandbox");
    TCase *core = tcase_create("core");
    tcase_add_test(core, test_allowed);
    tcase_add_test(core, test_files_refused_with_eacces);
    tcase_add_test(core, test_refused);
    suite_add_tcase(s, core);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
