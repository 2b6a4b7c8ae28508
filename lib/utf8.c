/* utf8.c - UTF-8, validated: one character, or a whole string. */
#include "utf8.h"

size_t utf8_char(const unsigned char *s, size_t n)
{
    unsigned c = s[0], cp, min;
    size_t k;
    if (c >= 0xc2 && c <= 0xdf) { k = 2; cp = c & 0x1f; min = 0xa0; }
    else if (c >= 0xe0 && c <= 0xef) { k = 3; cp = c & 0x0f; min = 0x800; }
    else if (c >= 0xf0 && c <= 0xf4) { k = 4; cp = c & 0x07; min = 0x10000; }
    else return 0;
    if (n < k) return 0;
    for (size_t j = 1; j < k; j++) {
        if ((s[j] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (s[j] & 0x3fu);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    return k;
}

int utf8_valid(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t k;
        if (u[i] < 0x80) i++;
        else if ((k = utf8_char(u + i, n - i))) i += k;
        else return 0;
    }
    return 1;
}
