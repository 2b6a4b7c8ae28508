/* sandbox.c - no_new_privs and a seccomp deny list (sandbox.h). */
#include "sandbox.h"

#include <errno.h>
#include <stddef.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__)
#define SANDBOX_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define SANDBOX_ARCH AUDIT_ARCH_AARCH64
#endif

#ifdef __SANITIZE_ADDRESS__
#define DENY (SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA))
#else
#define DENY SECCOMP_RET_KILL_PROCESS
#endif
#define NO_FILE (SECCOMP_RET_ERRNO | (EACCES & SECCOMP_RET_DATA))

#ifdef SANDBOX_ARCH
/* killed: no session, tls-proxy child or pre-login process makes these */
static const int denied[] = {
    __NR_execve, __NR_execveat, __NR_clone, __NR_ptrace, __NR_process_vm_readv,
    __NR_process_vm_writev, __NR_kcmp,
#ifdef __NR_fork
    __NR_fork, __NR_vfork,
#endif
#ifdef __NR_clone3
    __NR_clone3,
#endif
    __NR_socket, __NR_connect, __NR_bind, __NR_listen, __NR_accept4,
#ifdef __NR_accept
    __NR_accept,
#endif
    __NR_kill, __NR_tkill, __NR_rt_sigqueueinfo, __NR_rt_tgsigqueueinfo,
#ifdef __NR_pidfd_open
    __NR_pidfd_open, __NR_pidfd_send_signal, __NR_pidfd_getfd,
#endif
    __NR_mount, __NR_umount2, __NR_pivot_root, __NR_chroot, __NR_setns, __NR_unshare,
#ifdef __NR_fsopen
    __NR_fsopen, __NR_fsconfig, __NR_fsmount, __NR_fspick, __NR_move_mount, __NR_open_tree,
#endif
    __NR_setuid, __NR_setgid, __NR_setreuid, __NR_setregid, __NR_setresuid, __NR_setresgid,
    __NR_setgroups, __NR_setfsuid, __NR_setfsgid, __NR_capset,
    __NR_init_module, __NR_finit_module, __NR_delete_module, __NR_kexec_load,
#ifdef __NR_kexec_file_load
    __NR_kexec_file_load,
#endif
    __NR_reboot, __NR_swapon, __NR_swapoff, __NR_acct, __NR_quotactl,
    __NR_bpf, __NR_userfaultfd, __NR_perf_event_open, __NR_keyctl, __NR_add_key, __NR_request_key,
#ifdef __NR_io_uring_setup
    __NR_io_uring_setup, __NR_io_uring_enter, __NR_io_uring_register,
#endif
    __NR_personality, __NR_name_to_handle_at, __NR_open_by_handle_at, __NR_syslog,
    __NR_settimeofday, __NR_clock_settime, __NR_clock_adjtime, __NR_adjtimex,
    __NR_sethostname, __NR_setdomainname, __NR_vhangup,
#ifdef __x86_64__
    __NR_iopl, __NR_ioperm, __NR_modify_ldt, __NR_uselib, __NR_sysfs, __NR_ustat,
#endif
};

/* EACCES with SANDBOX_NO_FILES: the file system, by path or by descriptor */
static const int file_calls[] = {
    __NR_openat, __NR_mkdirat, __NR_unlinkat, __NR_renameat2, __NR_linkat, __NR_symlinkat,
    __NR_fchmodat, __NR_fchownat, __NR_mknodat, __NR_fchmod, __NR_fchown, __NR_truncate,
#ifdef __NR_openat2
    __NR_openat2,
#endif
#ifdef __x86_64__
    __NR_open, __NR_creat, __NR_mkdir, __NR_rmdir, __NR_unlink, __NR_rename, __NR_renameat,
    __NR_link, __NR_symlink, __NR_chmod, __NR_chown, __NR_lchown, __NR_mknod,
#endif
};

#define NDENIED (sizeof denied / sizeof denied[0])
#define NFILE (sizeof file_calls / sizeof file_calls[0])
/* arch check 4, x32 check 1, tgkill 3, each call 1, returns 3; every
 * jump must reach the returns in at most 255 instructions */
#define PROG_MAX (4 + 1 + 3 + NDENIED + NFILE + 3)
_Static_assert(PROG_MAX < 250, "seccomp filter too long for 8-bit jumps");

int sandbox_enter(unsigned flags)
{
    struct sock_filter f[PROG_MAX];
    size_t n = 0, nfile = (flags & SANDBOX_NO_FILES) ? NFILE : 0;
    /* the jump targets, counted from the end: [ALLOW] [DENY] [NO_FILE] */
    size_t end = 4 + 1 + 3 + NDENIED + nfile;   /* index of RET ALLOW */
#define AT(i) ((unsigned char)((end + (i)) - (n + 1)))   /* jump offset from f[n] to end+i */
    f[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
    f[n] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SANDBOX_ARCH, 1, 0);
    n++;
    f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS);
    f[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
#ifdef __x86_64__
    f[n] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000u, AT(1), 0);  /* x32 */
    n++;
#else
    f[n] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JA, 0, 0, 0);
    n++;
#endif
    /* tgkill: only to this process (abort(), raise()) */
    f[n] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_tgkill, 0, 2);
    n++;
    f[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0]));
    f[n] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)getpid(), AT(0), AT(1));
    n++;
    for (size_t i = 0; i < NDENIED; i++) {
        f[n] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)denied[i], AT(1), 0);
        n++;
    }
    for (size_t i = 0; i < nfile; i++) {
        f[n] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)file_calls[i], AT(2), 0);
        n++;
    }
#undef AT
    f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, DENY);
    f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, NO_FILE);
    struct sock_fprog prog = { .len = (unsigned short)n, .filter = f };
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) return 0;
    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) == 0;
}
#else
int sandbox_enter(unsigned flags)
{
    (void)flags;
    /* no filter for this architecture: no_new_privs only */
    return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0;
}
#endif
