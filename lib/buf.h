/* buf.h - a growable byte buffer that always carries its length.
 * s is NUL-terminated when len < cap (buf_append keeps one spare byte). */
#ifndef POSTERN_BUF_H
#define POSTERN_BUF_H

#include <stddef.h>

struct buf {
    char *s;
    size_t len;
    size_t cap;
};
#define BUF_ZERO { 0, 0, 0 }

int buf_reserve(struct buf *b, size_t extra); /* room for len+extra+1; 0/ENOMEM or EOVERFLOW */
int buf_append(struct buf *b, const void *p, size_t n);
int buf_appends(struct buf *b, const char *s);
int buf_appendc(struct buf *b, char c);
int buf_appendf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_copys(struct buf *b, const char *s); /* len = 0 then append */
void buf_free(struct buf *b);

/* checked size arithmetic: 1 and *out = a+b / a*b, or 0 with errno EOVERFLOW */
int size_add(size_t a, size_t b, size_t *out);
int size_mul(size_t a, size_t b, size_t *out);

#endif
