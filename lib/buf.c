/* buf.c - growable byte buffers with checked sizes. */
#include "buf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int size_add(size_t a, size_t b, size_t *out)
{
    if (a > SIZE_MAX - b) { errno = EOVERFLOW; return 0; }
    *out = a + b;
    return 1;
}

int size_mul(size_t a, size_t b, size_t *out)
{
    if (b && a > SIZE_MAX / b) { errno = EOVERFLOW; return 0; }
    *out = a * b;
    return 1;
}

int buf_reserve(struct buf *b, size_t extra)
{
    size_t need;
    if (!size_add(b->len, extra, &need) || !size_add(need, 1, &need)) return 0;
    if (need <= b->cap) return 1;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) {
        if (cap > SIZE_MAX / 2) { cap = need; break; }
        cap *= 2;
    }
    char *s = realloc(b->s, cap);
    if (!s) { errno = ENOMEM; return 0; }
    b->s = s;
    b->cap = cap;
    return 1;
}

int buf_append(struct buf *b, const void *p, size_t n)
{
    if (!buf_reserve(b, n)) return 0;
    if (n) memcpy(b->s + b->len, p, n);
    b->len += n;
    b->s[b->len] = 0;
    return 1;
}

int buf_appends(struct buf *b, const char *s) { return buf_append(b, s, strlen(s)); }
int buf_appendc(struct buf *b, char c) { return buf_append(b, &c, 1); }

int buf_copys(struct buf *b, const char *s)
{
    b->len = 0;
    return buf_appends(b, s);
}

int buf_appendf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) { errno = EINVAL; return 0; }
    if (!buf_reserve(b, (size_t)n)) return 0;
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 1;
}

void buf_free(struct buf *b)
{
    free(b->s);
    b->s = NULL;
    b->len = b->cap = 0;
}
