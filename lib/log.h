/* log.h - one line per event on stderr: "program: level: id key=value ...".
 * Control characters in the formatted text are replaced by '?', so nothing a
 * client sends can forge a log line; lines are cut at LOG_LINE_MAX. */
#ifndef POSTERN_LOG_H
#define POSTERN_LOG_H

#include <stddef.h>

#define LOG_LINE_MAX 1024

void log_init(const char *program); /* program name used as prefix */
const char *log_program(void);

/* level is "info", "warn", "error", "fatal", "debug"; id may be NULL or ""
 * (then "-" is printed). fmt should produce key=value pairs. */
void log_event(const char *level, const char *id, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#define log_info(id, ...) log_event("info", (id), __VA_ARGS__)
#define log_warn(id, ...) log_event("warn", (id), __VA_ARGS__)
#define log_error(id, ...) log_event("error", (id), __VA_ARGS__)

/* Copy at most srclen bytes of src into dst (dstlen > 0) as a log-safe
 * token: printable ASCII except space, '"', '\\' and '=' kept, others as
 * \xHH; output truncated (with a trailing "...") to fit, always NUL-ended.
 * Returns dst. Use it for any client-supplied value. */
char *log_safe(char *dst, size_t dstlen, const char *src, size_t srclen);

/* Copy at most srclen bytes of src into dst (dstlen > 0) as the inside of a
 * quoted value (key="..."): '"' and '\\' get a backslash before them,
 * control characters become '?', the rest is kept; output truncated (with
 * a trailing "...") to fit, always NUL-ended. Returns dst. Use it for text
 * from outside that is logged whole (a remote server's reply). */
char *log_quote(char *dst, size_t dstlen, const char *src, size_t srclen);

#endif
