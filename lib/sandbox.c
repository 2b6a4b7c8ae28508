/* sandbox.c - no_new_privs and a seccomp deny list (sandbox.h). */
#include "sandbox.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
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

/* What a span of system call numbers gets. */
enum act { ACT_ALLOW, ACT_DENY, ACT_NO_FILE, ACT_TGKILL };

/* A run of numbers with one action, from lo to the next span's lo - 1. */
struct span {
    unsigned lo;
    enum act act;
};

/* at most: a span for each listed call and one for the gap before it,
 * tgkill, the allowed rest and the x32 range */
#define SPANS_MAX (2 * (NDENIED + NFILE + 1) + 2)
/* a binary search over the spans: a JGE for each but the first, and the
 * leaves (tgkill's checks its argument: 4) */
#define PROG_MAX (4 + SPANS_MAX + SPANS_MAX + 3)

struct prog {
    struct sock_filter f[PROG_MAX];
    size_t n;
    int too_far;      /* a jump longer than 255 instructions was needed */
};

static int by_number(const void *a, const void *b)
{
    const struct span *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

static void span_add(struct span *sp, size_t *n, unsigned lo, enum act act)
{
    if (*n && sp[*n - 1].act == act) return;     /* the run goes on */
    sp[(*n)++] = (struct span){ lo, act };
}

/* the sorted, merged spans of the whole number space */
static size_t spans_make(struct span *sp, unsigned flags)
{
    struct span one[NDENIED + NFILE + 1];
    size_t k = 0, n = 0;
    for (size_t i = 0; i < NDENIED; i++) one[k++] = (struct span){ (unsigned)denied[i], ACT_DENY };
    for (size_t i = 0; (flags & SANDBOX_NO_FILES) && i < NFILE; i++)
        one[k++] = (struct span){ (unsigned)file_calls[i], ACT_NO_FILE };
    one[k++] = (struct span){ (unsigned)__NR_tgkill, ACT_TGKILL };
    qsort(one, k, sizeof one[0], by_number);
    unsigned next = 0;                            /* the first number not yet covered */
    for (size_t i = 0; i < k; i++) {
        if (i && one[i].lo == one[i - 1].lo) continue;
        if (one[i].lo > next) span_add(sp, &n, next, ACT_ALLOW);
        span_add(sp, &n, one[i].lo, one[i].act);
        next = one[i].lo + 1;
    }
    span_add(sp, &n, next, ACT_ALLOW);
#ifdef __x86_64__
    span_add(sp, &n, 0x40000000u, ACT_DENY);      /* the x32 ABI */
#endif
    return n;
}

static size_t leaf_len(enum act act) { return act == ACT_TGKILL ? 4 : 1; }

static size_t tree_len(const struct span *sp, size_t a, size_t b)
{
    if (b - a == 1) return leaf_len(sp[a].act);
    size_t mid = a + (b - a) / 2;
    return 1 + tree_len(sp, a, mid) + tree_len(sp, mid, b);
}

static void emit(struct prog *p, struct sock_filter ins)
{
    if (p->n < PROG_MAX) p->f[p->n] = ins;
    p->n++;
}

/* The search for the number in A among spans [a, b): a JGE on the middle
 * span's first number, the lower half, then the upper half. */
static void tree_emit(struct prog *p, const struct span *sp, size_t a, size_t b)
{
    if (b - a > 1) {
        size_t mid = a + (b - a) / 2, left = tree_len(sp, a, mid);
        if (left > 255) p->too_far = 1;
        emit(p, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, sp[mid].lo, (unsigned char)left, 0));
        tree_emit(p, sp, a, mid);
        tree_emit(p, sp, mid, b);
        return;
    }
    switch (sp[a].act) {
    case ACT_ALLOW: emit(p, (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)); break;
    case ACT_DENY: emit(p, (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, DENY)); break;
    case ACT_NO_FILE: emit(p, (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, NO_FILE)); break;
    case ACT_TGKILL:      /* only to this process (abort(), raise()) */
        emit(p, (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])));
        emit(p, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)getpid(), 0, 1));
        emit(p, (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
        emit(p, (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, DENY));
        break;
    }
}

/* The filter is a binary search, not a list of comparisons: the kernel
 * runs it once per system call number when it is attached (to find the
 * calls it may allow without running it), so its cost grows with the
 * length of the path a number takes. As a list of ~110 comparisons it
 * cost each session 0.17 ms of CPU, more than the rest of the session's
 * start; as a search, about 8 steps a number. */
int sandbox_enter(unsigned flags)
{
    static struct prog p;
    struct span sp[SPANS_MAX];
    size_t nsp = spans_make(sp, flags);
    p.n = 0;
    p.too_far = 0;
    emit(&p, (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)));
    emit(&p, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SANDBOX_ARCH, 1, 0));
    emit(&p, (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS));
    emit(&p, (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)));
    tree_emit(&p, sp, 0, nsp);
    if (p.n > PROG_MAX || p.too_far) { errno = E2BIG; return 0; }
    struct sock_filter *f = p.f;
    size_t n = p.n;
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
