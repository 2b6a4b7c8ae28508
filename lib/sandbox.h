/* sandbox.h - what a network-facing process may still ask of the kernel
 * once it has dropped its privileges (privdrop()): no_new_privs, and a
 * seccomp filter that refuses the system calls such a process never makes.
 *
 * A session that an attacker took over could otherwise still, as its
 * unprivileged user, start programs, open network connections, signal the
 * other sessions of its user, or reach the kernel's larger attack surface
 * (bpf, io_uring, user namespaces, keyrings, ...). The filter is a deny
 * list: everything the session's own code, libc and OpenSSL do (read,
 * write, poll, sendmsg of descriptors to its monitor, memory management,
 * time, signals to itself, pipes and socket pairs for the message it
 * passes on) stays allowed, so a libc or OpenSSL update that
 * uses another call for the same job does not break the session.
 *
 * Refused, and the process is killed (SIGSYS): program execution, process
 * creation, tracing, new sockets and connections, signals to any other
 * process, mounts, namespaces, credential changes, modules, bpf, io_uring,
 * userfaultfd, perf events, keyrings, and any call of another system call
 * ABI (x32, i386). Refused with EACCES instead, so that code which merely
 * looks for a file (glibc's time zone lookup, say) goes on: opening,
 * creating, renaming, linking and removing files, and changing their modes
 * and owners (SANDBOX_NO_FILES only).
 *
 * Built with a sanitizer, every refusal is EPERM instead of a kill, so the
 * sanitizer can still try to report. */
#ifndef POSTERN_SANDBOX_H
#define POSTERN_SANDBOX_H

#define SANDBOX_NO_FILES 1   /* the process opens no file: the session, tls-proxy's children */

/* Enter the sandbox (for good: it is inherited and cannot be left). 1, or
 * 0 with errno (a kernel without seccomp filters: EINVAL). */
int sandbox_enter(unsigned flags);

#endif
