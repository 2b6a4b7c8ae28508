/* err.h - the one error convention of postern.
 *
 * Functions return 1 on success and 0 on failure with errno set
 * (predicates may return -1/0/1). Only main() exits, and only with:
 *   EXIT_OK    0    done
 *   EXIT_PERM  100  permanent failure (bad usage, bad configuration)
 *   EXIT_TEMP  111  temporary failure (out of memory, I/O, try again)
 * die_perm()/die_temp() log one line "program: fatal: ..." and exit. */
#ifndef POSTERN_ERR_H
#define POSTERN_ERR_H

#define EXIT_OK 0
#define EXIT_PERM 100
#define EXIT_TEMP 111

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

_Noreturn void die_perm(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
_Noreturn void die_temp(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* like die_temp but appends ": <strerror(errno)>" */
_Noreturn void die_temp_sys(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
_Noreturn void die_perm_sys(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
