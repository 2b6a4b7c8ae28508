/* log.c - one line per event on stderr. */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const char *log_prog = "postern";

void log_init(const char *program)
{
    if (program && *program) {
        const char *slash = strrchr(program, '/');
        log_prog = slash ? slash + 1 : program;
    }
}

const char *log_program(void) { return log_prog; }

static size_t log_clean(char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f) s[i] = '?';
    }
    return n;
}

void log_event(const char *level, const char *id, const char *fmt, ...)
{
    char line[LOG_LINE_MAX];
    int saved = errno;
    int n = snprintf(line, sizeof line, "%s: %s: %s ", log_prog, level,
                     (id && *id) ? id : "-");
    if (n < 0) { errno = saved; return; }
    size_t used = (size_t)n < sizeof line ? (size_t)n : sizeof line - 1;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + used, sizeof line - used, fmt, ap);
    va_end(ap);
    if (m > 0) used += ((size_t)m < sizeof line - used) ? (size_t)m : sizeof line - used - 1;
    if (used + 1 >= sizeof line) { /* cut: mark it */
        used = sizeof line - 5;
        memcpy(line + used, "...", 3);
        used += 3;
    }
    log_clean(line, used);
    line[used++] = '\n';
    size_t off = 0;
    while (off < used) {
        ssize_t w = write(2, line + off, used - off);
        if (w < 0) { if (errno == EINTR) continue; break; }
        off += (size_t)w;
    }
    errno = saved;
}

char *log_safe(char *dst, size_t dstlen, const char *src, size_t srclen)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    if (!dstlen) return dst;
    for (size_t i = 0; i < srclen; i++) {
        unsigned char c = (unsigned char)src[i];
        int plain = c > 0x20 && c < 0x7f && c != '"' && c != '\\' && c != '=';
        size_t need = plain ? 1 : 4;
        if (o + need + 4 > dstlen) { /* room for "..." and NUL */
            if (o + 4 <= dstlen) { memcpy(dst + o, "...", 3); o += 3; }
            break;
        }
        if (plain) dst[o++] = (char)c;
        else {
            dst[o++] = '\\'; dst[o++] = 'x';
            dst[o++] = hex[c >> 4]; dst[o++] = hex[c & 15];
        }
    }
    dst[o] = 0;
    return dst;
}

char *log_quote(char *dst, size_t dstlen, const char *src, size_t srclen)
{
    size_t o = 0;
    if (!dstlen) return dst;
    for (size_t i = 0; i < srclen; i++) {
        unsigned char c = (unsigned char)src[i];
        size_t need = (c == '"' || c == '\\') ? 2 : 1;
        if (o + need + 4 > dstlen) { /* room for "..." and NUL */
            if (o + 4 <= dstlen) { memcpy(dst + o, "...", 3); o += 3; }
            break;
        }
        if (need == 2) dst[o++] = '\\';
        dst[o++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    dst[o] = 0;
    return dst;
}
