/* die.c - main()'s way out: one fatal log line (error="what"), then exit
 * 100 or 111. */
#include "err.h"
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Noreturn void die_v(int code, int with_errno, const char *fmt, va_list ap)
{
    char msg[LOG_LINE_MAX], q[2 * LOG_LINE_MAX];
    int e = errno;
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    size_t len = n < 0 ? 0 : (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1;
    if (with_errno && len < sizeof msg - 1) {
        n = snprintf(msg + len, sizeof msg - len, ": %s", strerror(e));
        if (n > 0) len += (size_t)n < sizeof msg - len ? (size_t)n : sizeof msg - len - 1;
    }
    /* one key=value field like every log line: error="what" */
    log_event("fatal", NULL, "error=\"%s\"", log_quote(q, sizeof q, msg, len));
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
