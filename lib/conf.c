/* conf.c - "key = value" configuration files; errors name file:line:what. */
#include "conf.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CONF_FILE_MAX (1024 * 1024)

static int is_space(char c) { return c == ' ' || c == '\t'; }

static int conf_fail(char *err, size_t errlen, const char *name, size_t line, const char *what)
{
    if (line) snprintf(err, errlen, "%s:%zu: %s", name, line, what);
    else snprintf(err, errlen, "%s: %s", name, what);
    errno = EINVAL;
    return 0;
}

int conf_parse_text(const char *name, const char *text, size_t len,
                    conf_setting_fn *fn, void *ctx, char *err, size_t errlen)
{
    char line[CONF_LINE_MAX + 1];
    size_t lineno = 0, off = 0;
    while (off < len) {
        const char *nl = memchr(text + off, '\n', len - off);
        size_t n = nl ? (size_t)(nl - (text + off)) : len - off;
        lineno++;
        if (n > CONF_LINE_MAX) return conf_fail(err, errlen, name, lineno, "line too long");
        if (memchr(text + off, '\0', n)) return conf_fail(err, errlen, name, lineno, "NUL byte in line");
        memcpy(line, text + off, n);
        line[n] = 0;
        off += n + (nl ? 1 : 0);
        if (n && line[n - 1] == '\r') line[--n] = 0;
        char *s = line;
        while (is_space(*s)) s++;
        if (!*s || *s == '#') continue;
        char *eq = strchr(s, '=');
        if (!eq) return conf_fail(err, errlen, name, lineno, "expected \"key = value\"");
        char *kend = eq;
        while (kend > s && is_space(kend[-1])) kend--;
        if (kend == s) return conf_fail(err, errlen, name, lineno, "missing key before '='");
        *kend = 0;
        for (char *k = s; *k; k++)
            if (!((*k >= 'a' && *k <= 'z') || (*k >= '0' && *k <= '9') || *k == '_'))
                return conf_fail(err, errlen, name, lineno, "bad key (use lower-case letters, digits, '_')");
        char *v = eq + 1;
        while (is_space(*v)) v++;
        char *vend = v + strlen(v);
        while (vend > v && is_space(vend[-1])) vend--;
        *vend = 0;
        char why[CONF_ERR_MAX];
        why[0] = 0;
        if (!fn(ctx, s, v, why, sizeof why)) {
            char what[CONF_ERR_MAX + 64];
            snprintf(what, sizeof what, "%.64s: %.400s", s, why[0] ? why : "invalid value");
            return conf_fail(err, errlen, name, lineno, what);
        }
    }
    return 1;
}

int conf_parse_file(const char *path, conf_setting_fn *fn, void *ctx, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) { int e = errno; conf_fail(err, errlen, path, 0, strerror(e)); errno = e; return 0; }
    struct stat st;
    if (fstat(fd, &st) < 0) { int e = errno; close(fd); conf_fail(err, errlen, path, 0, strerror(e)); errno = e; return 0; }
    if (!S_ISREG(st.st_mode)) { close(fd); return conf_fail(err, errlen, path, 0, "not a regular file"); }
    if (st.st_size > CONF_FILE_MAX) { close(fd); return conf_fail(err, errlen, path, 0, "file too large"); }
    size_t cap = (size_t)st.st_size + 1, len = 0;
    char *text = malloc(cap);
    if (!text) { close(fd); conf_fail(err, errlen, path, 0, "out of memory"); errno = ENOMEM; return 0; }
    for (;;) {
        if (len == cap) break;
        ssize_t r = read(fd, text + len, cap - len);
        if (r < 0) { if (errno == EINTR) continue; int e = errno; free(text); close(fd); conf_fail(err, errlen, path, 0, strerror(e)); errno = e; return 0; }
        if (r == 0) break;
        len += (size_t)r;
    }
    close(fd);
    if (len == cap) { free(text); return conf_fail(err, errlen, path, 0, "file changed while reading"); }
    int ok = conf_parse_text(path, text, len, fn, ctx, err, errlen);
    free(text);
    return ok;
}

static int conf_why(char *why, size_t whylen, const char *what)
{
    snprintf(why, whylen, "%s", what);
    return 0;
}

/* digits only, overflow-checked; *end_out points after them */
static int conf_digits(const char *v, unsigned long long *out, const char **end_out)
{
    unsigned long long n = 0;
    const char *p = v;
    if (*p < '0' || *p > '9') return 0;
    for (; *p >= '0' && *p <= '9'; p++) {
        unsigned d = (unsigned)(*p - '0');
        if (n > (ULLONG_MAX - d) / 10) return -1;
        n = n * 10 + d;
    }
    *out = n;
    *end_out = p;
    return 1;
}

int conf_uint(const char *value, unsigned long long min, unsigned long long max,
              unsigned long long *out, char *why, size_t whylen)
{
    unsigned long long n = 0;
    const char *end = value;
    int r = conf_digits(value, &n, &end);
    if (r == 0 || *end) return conf_why(why, whylen, "not a number");
    if (r < 0 || n > max || n < min) {
        snprintf(why, whylen, "out of range (%llu..%llu)", min, max);
        return 0;
    }
    *out = n;
    return 1;
}

static int conf_scaled(const char *value, unsigned long long max, unsigned long long *out,
                       char *why, size_t whylen, const char *units, const unsigned long long *mult,
                       const char *what)
{
    unsigned long long n = 0;
    const char *end = value;
    int r = conf_digits(value, &n, &end);
    if (r == 0) return conf_why(why, whylen, what);
    if (r < 0) return conf_why(why, whylen, "number too large");
    unsigned long long m = 1;
    if (*end) {
        const char *u = strchr(units, *end);
        if (!u || end[1]) return conf_why(why, whylen, what);
        m = mult[u - units];
    }
    if (n > ULLONG_MAX / m || n * m > max) {
        snprintf(why, whylen, "too large (at most %llu)", max);
        return 0;
    }
    *out = n * m;
    return 1;
}

int conf_size(const char *value, unsigned long long max, unsigned long long *out, char *why, size_t whylen)
{
    static const unsigned long long mult[] = { 1024ULL, 1024ULL, 1048576ULL, 1073741824ULL };
    return conf_scaled(value, max, out, why, whylen, "kKMG", mult, "not a size (digits with optional k, M or G)");
}

int conf_duration(const char *value, unsigned long long max, unsigned long long *out, char *why, size_t whylen)
{
    static const unsigned long long mult[] = { 1, 60, 3600, 86400 };
    return conf_scaled(value, max, out, why, whylen, "smhd", mult, "not a duration (digits with optional s, m, h or d)");
}

int conf_fd(const char *value, int *fd)
{
    unsigned long long n;
    char why[64];
    if (!conf_uint(value, 0, INT_MAX, &n, why, sizeof why)) return 0;
    *fd = (int)n;
    return 1;
}

int conf_bool(const char *value, int *out, char *why, size_t whylen)
{
    if (!strcmp(value, "yes") || !strcmp(value, "true") || !strcmp(value, "1")) { *out = 1; return 1; }
    if (!strcmp(value, "no") || !strcmp(value, "false") || !strcmp(value, "0")) { *out = 0; return 1; }
    return conf_why(why, whylen, "expected yes or no");
}
