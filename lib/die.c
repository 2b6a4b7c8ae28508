/* die.c - main()'s way out: one fatal log line, then exit 100 or 111. */
#include "err.h"
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Noreturn void die_v(int code, int with_errno, const char *fmt, va_list ap)
{
    char msg[LOG_LINE_MAX];
    int e = errno;
    vsnprintf(msg, sizeof msg, fmt, ap);
    if (with_errno)
        log_event("fatal", NULL, "%s: %s", msg, strerror(e));
    else
        log_event("fatal", NULL, "%s", msg);
    exit(code);
}

void die_perm(const char *fmt, ...)
{ va_list ap; va_start(ap, fmt); die_v(EXIT_PERM, 0, fmt, ap); }
void die_temp(const char *fmt, ...)
{ va_list ap; va_start(ap, fmt); die_v(EXIT_TEMP, 0, fmt, ap); }
void die_temp_sys(const char *fmt, ...)
{ va_list ap; va_start(ap, fmt); die_v(EXIT_TEMP, 1, fmt, ap); }
void die_perm_sys(const char *fmt, ...)
{ va_list ap; va_start(ap, fmt); die_v(EXIT_PERM, 1, fmt, ap); }
